/*
 * KMIP Certify end to end: a managed P-256 public key certified by a managed
 * Ed25519 CA key (the RFC 8032 §7.1 TEST 1 key). The certificate is checked
 * with GnuTLS against a CA certificate made here from the same published key
 * (and must fail against one made from TEST 2's key), its subject key against
 * the managed public key, and its links; a refusal test for every refusal path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/ttlv.h"

#define KF_TEST_NAME "kmscert"
#include "kms_ops_fixture.h"

/* Every attribute of uid (2.x Get Attributes without references). */
static const kf_ttlv *attributes_of(struct fixture *f, const char *uid)
{
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_GET_ATTRIBUTES, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    const kf_ttlv *at = kf_ttlv_find(expect_success(f, msg), KMIP_TAG_ATTRIBUTES);
    assert_non_null(at);
    return at;
}

static uint32_t enum_attr(const kf_ttlv *set, uint32_t tag)
{
    uint32_t v = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(set, tag), &v), KF_OK);
    return v;
}

/* The Linked Object Identifier of the first Link of type, or NULL. */
static bool has_link(const kf_ttlv *set, uint32_t type, const char *target)
{
    for (const kf_ttlv *l = kf_ttlv_find(set, KMIP_TAG_LINK); l;
         l = kf_ttlv_find_next(l, KMIP_TAG_LINK)) {
        uint32_t t = 0;
        if (kf_ttlv_get_enum(kf_ttlv_find(l, KMIP_TAG_LINK_TYPE), &t) == KF_OK && t == type &&
            kf_ttlv_text_equals(kf_ttlv_find(l, KMIP_TAG_LINKED_OBJECT_IDENTIFIER), target))
            return true;
    }
    return false;
}

/* RFC 8032 §7.1 TEST 1 and TEST 2 Ed25519 keys. */
static const char *const ed_seed1 = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
static const char *const ed_pub1 = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
static const char *const ed_seed2 = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
static const char *const ed_pub2 = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

static void register_ed25519_private(struct fixture *f, const char *seed_hex, uint32_t usage,
                                     const char *domain, char uid[KF_UID_MAX])
{
    size_t len;
    const uint8_t *seed = unhex(f, seed_hex, &len);
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_PRIVATE_KEY);
    kf_ttlv *at = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
    kf_ttlv_add_enum(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_ED25519);
    kf_ttlv_add_int(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, (int32_t)usage);
    kf_ttlv_add_text(f->a, at, KMIP_TAG_KEYFLEET_DOMAIN, domain);
    kf_ttlv *o = kf_ttlv_struct(f->a, p, KMIP_TAG_PRIVATE_KEY);
    kf_ttlv *kb = kf_ttlv_struct(f->a, o, KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_RAW);
    kf_ttlv *kv = kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE);
    kf_ttlv_add_bytes(f->a, kv, KMIP_TAG_KEY_MATERIAL, seed, len);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_ED25519);
    copy_uid(expect_success(f, msg), KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    uid_op(f, 2, KMIP_OP_ACTIVATE, uid);
}

/* A P-256 pair whose public key is named pub_name; returns both UIDs. */
static void make_subject_pair(struct fixture *f, const char *pub_name, char priv[KF_UID_MAX],
                              char pub[KF_UID_MAX])
{
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_CREATE_KEY_PAIR, &p);
    kf_ttlv *common = kf_ttlv_struct(f->a, p, KMIP_TAG_COMMON_ATTRIBUTES);
    kf_ttlv_add_enum(f->a, common, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_ECDSA);
    kf_ttlv_add_int(f->a, common, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 256);
    kf_ttlv *qa = kf_ttlv_struct(f->a, p, KMIP_TAG_PUBLIC_KEY_ATTRIBUTES);
    kf_ttlv *n = kf_ttlv_struct(f->a, qa, KMIP_TAG_NAME);
    kf_ttlv_add_text(f->a, n, KMIP_TAG_NAME_VALUE, pub_name);
    kf_ttlv_add_enum(f->a, n, KMIP_TAG_NAME_TYPE, KMIP_NAME_TYPE_UNINTERPRETED_TEXT_STRING);
    const kf_ttlv *r = expect_success(f, msg);
    copy_uid(r, KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER, priv);
    copy_uid(r, KMIP_TAG_PUBLIC_KEY_UNIQUE_IDENTIFIER, pub);
}

static kf_ttlv *certify_request(struct fixture *f, const char *pub, const char *ca)
{
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_CERTIFY, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, pub);
    if (ca) {
        kf_ttlv *at = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
        kf_ttlv *va = kf_ttlv_struct(f->a, at, KMIP_TAG_ATTRIBUTE);
        kf_ttlv_add_text(f->a, va, KMIP_TAG_VENDOR_IDENTIFICATION, "x");
        kf_ttlv_add_text(f->a, va, KMIP_TAG_ATTRIBUTE_NAME, "keyfleet-ca");
        kf_ttlv_add_text(f->a, va, KMIP_TAG_ATTRIBUTE_VALUE, ca);
    }
    return msg;
}

/* A self-signed CA certificate named like keyfleet names the issuer, from an Ed25519 key. */
static gnutls_x509_crt_t test_ca(struct fixture *f, const char *seed_hex, const char *pub_hex,
                                 const char *ca_uid)
{
    size_t sl, pl;
    uint8_t *seed = unhex(f, seed_hex, &sl), *pub = unhex(f, pub_hex, &pl);
    gnutls_datum_t k = {seed, (unsigned)sl}, x = {pub, (unsigned)pl};
    gnutls_privkey_t key;
    gnutls_pubkey_t pk;
    gnutls_x509_crt_t ca;
    assert_true(gnutls_privkey_init(&key) >= 0);
    assert_true(gnutls_privkey_import_ecc_raw(key, GNUTLS_ECC_CURVE_ED25519, &x, NULL, &k) >= 0);
    assert_true(gnutls_pubkey_init(&pk) >= 0);
    assert_true(gnutls_pubkey_import_privkey(pk, key, 0, 0) >= 0);
    assert_true(gnutls_x509_crt_init(&ca) >= 0);
    char cn[160];
    snprintf(cn, sizeof(cn), "keyfleet CA %s", ca_uid);
    unsigned char serial[1] = {1};
    time_t now = time(NULL);
    assert_true(gnutls_x509_crt_set_version(ca, 3) >= 0);
    assert_true(gnutls_x509_crt_set_serial(ca, serial, 1) >= 0);
    assert_true(gnutls_x509_crt_set_activation_time(ca, now - 3600) >= 0);
    assert_true(gnutls_x509_crt_set_expiration_time(ca, now + 86400 * 400) >= 0);
    assert_true(gnutls_x509_crt_set_dn_by_oid(ca, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
                                              (unsigned)strlen(cn)) >= 0);
    assert_true(gnutls_x509_crt_set_pubkey(ca, pk) >= 0);
    assert_true(gnutls_x509_crt_set_basic_constraints(ca, 1, -1) >= 0);
    assert_true(gnutls_x509_crt_set_key_usage(ca, GNUTLS_KEY_KEY_CERT_SIGN) >= 0);
    assert_true(gnutls_x509_crt_privkey_sign(ca, ca, key, GNUTLS_DIG_SHA512, 0) >= 0);
    gnutls_pubkey_deinit(pk);
    gnutls_privkey_deinit(key);
    /* Through DER and back: GnuTLS compares the encoded names, which a certificate
     * built in memory only has once it is parsed. */
    gnutls_datum_t der;
    gnutls_x509_crt_t parsed;
    assert_true(gnutls_x509_crt_export2(ca, GNUTLS_X509_FMT_DER, &der) >= 0);
    assert_true(gnutls_x509_crt_init(&parsed) >= 0);
    assert_true(gnutls_x509_crt_import(parsed, &der, GNUTLS_X509_FMT_DER) >= 0);
    gnutls_free(der.data);
    gnutls_x509_crt_deinit(ca);
    return parsed;
}

static unsigned verify_with(gnutls_x509_crt_t leaf, gnutls_x509_crt_t ca)
{
    unsigned status = 0;
    assert_true(gnutls_x509_crt_verify(leaf, &ca, 1, 0, &status) >= 0);
    return status;
}

static void certify_issues_a_verifiable_certificate(void **state)
{
    struct fixture *f = *state;
    char ca[KF_UID_MAX], priv[KF_UID_MAX], pub[KF_UID_MAX], cert[KF_UID_MAX];
    register_ed25519_private(f, ed_seed1, KMIP_USAGE_CERTIFICATE_SIGN, "VENDOR", ca);
    make_subject_pair(f, "device-17", priv, pub);
    copy_uid(expect_success(f, certify_request(f, pub, ca)), KMIP_TAG_UNIQUE_IDENTIFIER, cert);

    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_GET, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, cert);
    const kf_ttlv *r = expect_success(f, msg);
    assert_int_equal(enum_attr(r, KMIP_TAG_OBJECT_TYPE), KMIP_OBJ_CERTIFICATE);
    const uint8_t *der;
    size_t len;
    assert_int_equal(
        kf_ttlv_get_bytes(KF_TTLV_PATH(r, KMIP_TAG_CERTIFICATE, KMIP_TAG_CERTIFICATE_VALUE), &der,
                          &len),
        KF_OK);
    gnutls_x509_crt_t leaf;
    gnutls_datum_t d = {(unsigned char *)(uintptr_t)der, (unsigned)len};
    assert_true(gnutls_x509_crt_init(&leaf) >= 0);
    assert_true(gnutls_x509_crt_import(leaf, &d, GNUTLS_X509_FMT_DER) >= 0);

    gnutls_x509_crt_t right = test_ca(f, ed_seed1, ed_pub1, ca);
    gnutls_x509_crt_t wrong = test_ca(f, ed_seed2, ed_pub2, ca);
    assert_int_equal(verify_with(leaf, right), 0);
    assert_int_not_equal(verify_with(leaf, wrong), 0);

    char cn[128];
    size_t cnl = sizeof(cn);
    assert_true(gnutls_x509_crt_get_dn_by_oid(leaf, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &cnl) >=
                0);
    assert_string_equal(cn, "device-17");

    /* The certified key is the managed public key (SubjectPublicKeyInfo compared). */
    msg = request(f, 2, KMIP_OP_GET, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, pub);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_X_509);
    const uint8_t *spki;
    size_t spki_len;
    assert_int_equal(kf_ttlv_get_bytes(KF_TTLV_PATH(expect_success(f, msg), KMIP_TAG_PUBLIC_KEY,
                                                    KMIP_TAG_KEY_BLOCK, KMIP_TAG_KEY_VALUE,
                                                    KMIP_TAG_KEY_MATERIAL),
                                       &spki, &spki_len),
                     KF_OK);
    gnutls_pubkey_t pk;
    gnutls_datum_t got = {0};
    assert_true(gnutls_pubkey_init(&pk) >= 0);
    assert_true(gnutls_pubkey_import_x509(pk, leaf, 0) >= 0);
    assert_true(gnutls_pubkey_export2(pk, GNUTLS_X509_FMT_DER, &got) >= 0);
    assert_int_equal(got.size, spki_len);
    assert_memory_equal(got.data, spki, spki_len);
    gnutls_free(got.data);
    gnutls_pubkey_deinit(pk);
    gnutls_x509_crt_deinit(leaf);
    gnutls_x509_crt_deinit(right);
    gnutls_x509_crt_deinit(wrong);

    assert_true(has_link(attributes_of(f, cert), KMIP_LINK_PUBLIC_KEY_LINK, pub));
    assert_true(has_link(attributes_of(f, pub), KMIP_LINK_CERTIFICATE_LINK, cert));
}

static void certify_refusals(void **state)
{
    struct fixture *f = *state;
    char ca[KF_UID_MAX], weak_ca[KF_UID_MAX], other_ca[KF_UID_MAX], priv[KF_UID_MAX],
        pub[KF_UID_MAX];
    const char *m;
    register_ed25519_private(f, ed_seed1, KMIP_USAGE_CERTIFICATE_SIGN, "VENDOR", ca);
    register_ed25519_private(f, ed_seed2, KMIP_USAGE_SIGN, "VENDOR", weak_ca);
    register_ed25519_private(f, ed_seed2, KMIP_USAGE_CERTIFICATE_SIGN, "OTHER", other_ca);
    make_subject_pair(f, "device-18", priv, pub);
    assert_int_equal(expect_failure(f, certify_request(f, pub, NULL), &m),
                     KMIP_REASON_MISSING_DATA);
    assert_non_null(strstr(m, "x-keyfleet-ca"));
    assert_int_equal(expect_failure(f, certify_request(f, pub, weak_ca), &m),
                     KMIP_REASON_PERMISSION_DENIED);
    assert_int_equal(expect_failure(f, certify_request(f, pub, other_ca), &m),
                     KMIP_REASON_PERMISSION_DENIED);
    assert_int_equal(expect_failure(f, certify_request(f, priv, ca), &m),
                     KMIP_REASON_INVALID_FIELD);
    assert_int_equal(expect_failure(f, certify_request(f, "VENDOR/999", ca), &m),
                     KMIP_REASON_ITEM_NOT_FOUND);
    kf_ttlv *msg = certify_request(f, pub, ca);
    kf_ttlv *payload = (kf_ttlv *)KF_TTLV_PATH(msg, KMIP_TAG_BATCH_ITEM, KMIP_TAG_REQUEST_PAYLOAD);
    kf_ttlv_add_enum(f->a, payload, KMIP_TAG_CERTIFICATE_REQUEST_TYPE,
                     KMIP_CERTIFICATE_REQUEST_TYPE_PKCS_10);
    kf_ttlv_add_bytes(f->a, payload, KMIP_TAG_CERTIFICATE_REQUEST_VALUE, (const uint8_t *)"x", 1);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_FEATURE_NOT_SUPPORTED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(certify_issues_a_verifiable_certificate, setup, teardown),
        cmocka_unit_test_setup_teardown(certify_refusals, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
