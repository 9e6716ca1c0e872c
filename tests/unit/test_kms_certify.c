/*
 * KMIP Certify end to end: a managed P-256 public key certified by a managed
 * Ed25519 CA key (the RFC 8032 §7.1 TEST 1 key). The certificate is checked
 * with GnuTLS against a CA certificate made here from the same published key
 * (and must fail against one made from TEST 2's key), its subject key against
 * the managed public key, and its links; a refusal test for every refusal path.
 * Certify from a PKCS#10 request: requests built here with GnuTLS for fresh
 * P-256 keys, the certificate checked the same way (signature under the CA,
 * subject key and Common Name those of the request), and refusals for a bad
 * self-signature, damaged bytes, a missing issuer and a key that is not the
 * named Public Key.
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
#define CSR_BIG 16385 /* one byte over keyfleet's Certificate Request limit */
#include "kms_ops_fixture.h"

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
    if (pub)
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

/* The stored certificate uid, parsed. */
static gnutls_x509_crt_t get_certificate(struct fixture *f, const char *uid)
{
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_GET, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
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
    return leaf;
}

static void certify_issues_a_verifiable_certificate(void **state)
{
    struct fixture *f = *state;
    char ca[KF_UID_MAX], priv[KF_UID_MAX], pub[KF_UID_MAX], cert[KF_UID_MAX];
    register_ed25519_private(f, ed_seed1, KMIP_USAGE_CERTIFICATE_SIGN, "VENDOR", ca);
    make_subject_pair(f, "device-17", priv, pub);
    copy_uid(expect_success(f, certify_request(f, pub, ca)), KMIP_TAG_UNIQUE_IDENTIFIER, cert);

    gnutls_x509_crt_t leaf = get_certificate(f, cert);

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
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_GET, &p);
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
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_INVALID_FIELD);
}

/* ---- Certify from a PKCS#10 Certificate Request ---- */

/* A fresh P-256 key (freed by the caller). */
static gnutls_x509_privkey_t fresh_key(void)
{
    gnutls_x509_privkey_t k;
    assert_true(gnutls_x509_privkey_init(&k) >= 0);
    assert_true(gnutls_x509_privkey_generate(
                    k, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) >= 0);
    return k;
}

/* The SubjectPublicKeyInfo DER of key (gnutls_free the data). */
static gnutls_datum_t spki_of(gnutls_x509_privkey_t key)
{
    gnutls_privkey_t pk;
    gnutls_pubkey_t pub;
    gnutls_datum_t d = {0};
    assert_true(gnutls_privkey_init(&pk) >= 0);
    assert_true(gnutls_privkey_import_x509(pk, key, 0) >= 0);
    assert_true(gnutls_pubkey_init(&pub) >= 0);
    assert_true(gnutls_pubkey_import_privkey(pub, pk, 0, 0) >= 0);
    assert_true(gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &d) >= 0);
    gnutls_pubkey_deinit(pub);
    gnutls_privkey_deinit(pk);
    return d;
}

/* A PKCS#10 request for key with subject CN=cn (no CN if NULL), signed by key. */
static gnutls_datum_t make_csr(gnutls_x509_privkey_t key, const char *cn, gnutls_x509_crt_fmt_t fmt)
{
    gnutls_x509_crq_t crq;
    gnutls_datum_t d = {0};
    assert_true(gnutls_x509_crq_init(&crq) >= 0);
    assert_true(gnutls_x509_crq_set_version(crq, 1) >= 0);
    if (cn)
        assert_true(gnutls_x509_crq_set_dn_by_oid(crq, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
                                                  (unsigned)strlen(cn)) >= 0);
    else
        assert_true(gnutls_x509_crq_set_dn_by_oid(crq, GNUTLS_OID_X520_ORGANIZATION_NAME, 0,
                                                  "acme", 4) >= 0);
    assert_true(gnutls_x509_crq_set_key(crq, key) >= 0);
    assert_true(gnutls_x509_crq_sign2(crq, key, GNUTLS_DIG_SHA256, 0) >= 0);
    assert_true(gnutls_x509_crq_export2(crq, fmt, &d) >= 0);
    gnutls_x509_crq_deinit(crq);
    return d;
}

static kf_ttlv *csr_request(struct fixture *f, const char *pub, const char *ca, uint32_t tag,
                            uint32_t type, const uint8_t *csr, size_t len)
{
    kf_ttlv *msg = certify_request(f, pub, ca);
    kf_ttlv *payload = (kf_ttlv *)KF_TTLV_PATH(msg, KMIP_TAG_BATCH_ITEM, KMIP_TAG_REQUEST_PAYLOAD);
    if (type)
        kf_ttlv_add_enum(f->a, payload, KMIP_TAG_CERTIFICATE_REQUEST_TYPE, type);
    kf_ttlv_add_bytes(f->a, payload, tag, csr, len);
    return msg;
}

static kf_ttlv *pkcs10_request(struct fixture *f, const char *pub, const char *ca,
                               const gnutls_datum_t *csr)
{
    return csr_request(f, pub, ca, KMIP_TAG_CERTIFICATE_REQUEST_VALUE,
                       KMIP_CERTIFICATE_REQUEST_TYPE_PKCS_10, csr->data, csr->size);
}

/* leaf verifies under the CA key (TEST 1) and not under TEST 2's, certifies key, names cn. */
static void check_leaf(struct fixture *f, gnutls_x509_crt_t leaf, const char *ca,
                       gnutls_x509_privkey_t key, const char *cn)
{
    gnutls_x509_crt_t right = test_ca(f, ed_seed1, ed_pub1, ca);
    gnutls_x509_crt_t wrong = test_ca(f, ed_seed2, ed_pub2, ca);
    assert_int_equal(verify_with(leaf, right), 0);
    assert_int_not_equal(verify_with(leaf, wrong), 0);
    gnutls_x509_crt_deinit(right);
    gnutls_x509_crt_deinit(wrong);

    char got_cn[128];
    size_t cnl = sizeof(got_cn);
    assert_true(gnutls_x509_crt_get_dn_by_oid(leaf, GNUTLS_OID_X520_COMMON_NAME, 0, 0, got_cn,
                                              &cnl) >= 0);
    assert_string_equal(got_cn, cn);

    gnutls_pubkey_t pk;
    gnutls_datum_t got = {0}, want = spki_of(key);
    assert_true(gnutls_pubkey_init(&pk) >= 0);
    assert_true(gnutls_pubkey_import_x509(pk, leaf, 0) >= 0);
    assert_true(gnutls_pubkey_export2(pk, GNUTLS_X509_FMT_DER, &got) >= 0);
    assert_int_equal(got.size, want.size);
    assert_memory_equal(got.data, want.data, want.size);
    gnutls_free(got.data);
    gnutls_free(want.data);
    gnutls_pubkey_deinit(pk);
}

static void certify_pkcs10_issues_a_verifiable_certificate(void **state)
{
    struct fixture *f = *state;
    char ca[KF_UID_MAX], cert[KF_UID_MAX], cert_pem[KF_UID_MAX];
    register_ed25519_private(f, ed_seed1, KMIP_USAGE_CERTIFICATE_SIGN, "VENDOR", ca);
    gnutls_x509_privkey_t key = fresh_key();
    gnutls_datum_t csr = make_csr(key, "sensor-42.example", GNUTLS_X509_FMT_DER);
    copy_uid(expect_success(f, pkcs10_request(f, NULL, ca, &csr)), KMIP_TAG_UNIQUE_IDENTIFIER,
             cert);
    assert_memory_equal(cert, "VENDOR/", 7); /* registered in the CA's domain */
    gnutls_x509_crt_t leaf = get_certificate(f, cert);
    check_leaf(f, leaf, ca, key, "sensor-42.example");
    gnutls_x509_crt_deinit(leaf);
    /* No public key was named: the certificate links to none. */
    assert_null(kf_ttlv_find(attributes_of(f, cert), KMIP_TAG_LINK));

    /* The same request as PEM, and in the 1.x Certificate Request Byte String. */
    gnutls_datum_t pem = make_csr(key, "sensor-43", GNUTLS_X509_FMT_PEM);
    copy_uid(expect_success(f, csr_request(f, NULL, ca, KMIP_TAG_CERTIFICATE_REQUEST_VALUE,
                                           KMIP_CERTIFICATE_REQUEST_TYPE_PEM, pem.data, pem.size)),
             KMIP_TAG_UNIQUE_IDENTIFIER, cert_pem);
    leaf = get_certificate(f, cert_pem);
    check_leaf(f, leaf, ca, key, "sensor-43");
    gnutls_x509_crt_deinit(leaf);
    copy_uid(expect_success(f, csr_request(f, NULL, ca, KMIP_TAG_CERTIFICATE_REQUEST,
                                           KMIP_CERTIFICATE_REQUEST_TYPE_PKCS_10, csr.data,
                                           csr.size)),
             KMIP_TAG_UNIQUE_IDENTIFIER, cert_pem);
    leaf = get_certificate(f, cert_pem);
    check_leaf(f, leaf, ca, key, "sensor-42.example");
    gnutls_x509_crt_deinit(leaf);
    gnutls_free(pem.data);
    gnutls_free(csr.data);
    gnutls_x509_privkey_deinit(key);
}

/* Register key's public half (SubjectPublicKeyInfo) as a managed Public Key. */
static void register_public(struct fixture *f, gnutls_x509_privkey_t key, char uid[KF_UID_MAX])
{
    gnutls_datum_t spki = spki_of(key);
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_PUBLIC_KEY);
    kf_ttlv *at = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
    kf_ttlv_add_int(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, KMIP_USAGE_VERIFY);
    kf_ttlv_add_text(f->a, at, KMIP_TAG_KEYFLEET_DOMAIN, "VENDOR");
    kf_ttlv *kb = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_PUBLIC_KEY),
                                 KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_X_509);
    kf_ttlv_add_bytes(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL,
                      spki.data, spki.size);
    copy_uid(expect_success(f, msg), KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    gnutls_free(spki.data);
}

static void certify_pkcs10_for_a_named_public_key(void **state)
{
    struct fixture *f = *state;
    char ca[KF_UID_MAX], other_ca[KF_UID_MAX], pub[KF_UID_MAX], cert[KF_UID_MAX];
    const char *m;
    register_ed25519_private(f, ed_seed1, KMIP_USAGE_CERTIFICATE_SIGN, "VENDOR", ca);
    register_ed25519_private(f, ed_seed2, KMIP_USAGE_CERTIFICATE_SIGN, "OTHER", other_ca);
    gnutls_x509_privkey_t key = fresh_key(), stranger = fresh_key();
    register_public(f, key, pub);
    gnutls_datum_t csr = make_csr(key, "gateway-1", GNUTLS_X509_FMT_DER);
    gnutls_datum_t wrong = make_csr(stranger, "gateway-1", GNUTLS_X509_FMT_DER);

    /* Another key than the named one: refused, nothing issued. */
    assert_int_equal(expect_failure(f, pkcs10_request(f, pub, ca, &wrong), &m),
                     KMIP_REASON_INVALID_MESSAGE);
    assert_non_null(strstr(m, "not the Public Key"));
    assert_null(kf_ttlv_find(attributes_of(f, pub), KMIP_TAG_LINK));
    /* A CA in another domain than the named key. */
    assert_int_equal(expect_failure(f, pkcs10_request(f, pub, other_ca, &csr), &m),
                     KMIP_REASON_PERMISSION_DENIED);

    copy_uid(expect_success(f, pkcs10_request(f, pub, ca, &csr)), KMIP_TAG_UNIQUE_IDENTIFIER,
             cert);
    gnutls_x509_crt_t leaf = get_certificate(f, cert);
    check_leaf(f, leaf, ca, key, "gateway-1");
    gnutls_x509_crt_deinit(leaf);
    assert_true(has_link(attributes_of(f, cert), KMIP_LINK_PUBLIC_KEY_LINK, pub));
    assert_true(has_link(attributes_of(f, pub), KMIP_LINK_CERTIFICATE_LINK, cert));
    gnutls_free(csr.data);
    gnutls_free(wrong.data);
    gnutls_x509_privkey_deinit(key);
    gnutls_x509_privkey_deinit(stranger);
}

static void certify_pkcs10_refusals(void **state)
{
    struct fixture *f = *state;
    char ca[KF_UID_MAX], weak_ca[KF_UID_MAX];
    const char *m;
    register_ed25519_private(f, ed_seed1, KMIP_USAGE_CERTIFICATE_SIGN, "VENDOR", ca);
    register_ed25519_private(f, ed_seed2, KMIP_USAGE_SIGN, "VENDOR", weak_ca);
    gnutls_x509_privkey_t key = fresh_key();
    gnutls_datum_t csr = make_csr(key, "sensor-9", GNUTLS_X509_FMT_DER);
    gnutls_datum_t no_cn = make_csr(key, NULL, GNUTLS_X509_FMT_DER);
    uint8_t *bytes = malloc(CSR_BIG);
    assert_non_null(bytes);

    /* The request is good: each refusal below is for what was changed. */
    expect_success(f, pkcs10_request(f, NULL, ca, &csr));

    /* A flipped byte of the signature (the request's last byte). */
    memcpy(bytes, csr.data, csr.size);
    bytes[csr.size - 1] ^= 0x01;
    gnutls_datum_t bad = {bytes, csr.size};
    assert_int_equal(expect_failure(f, pkcs10_request(f, NULL, ca, &bad), &m),
                     KMIP_REASON_CRYPTOGRAPHIC_FAILURE);
    assert_non_null(strstr(m, "self-signature does not verify"));
    /* A flipped byte of the signed subject name. */
    memcpy(bytes, csr.data, csr.size);
    const uint8_t *cn = memmem(bytes, csr.size, "sensor-9", 8);
    assert_non_null(cn);
    bytes[cn - bytes] = 'S';
    assert_int_equal(expect_failure(f, pkcs10_request(f, NULL, ca, &bad), &m),
                     KMIP_REASON_CRYPTOGRAPHIC_FAILURE);

    /* No issuer. */
    assert_int_equal(expect_failure(f, pkcs10_request(f, NULL, NULL, &csr), &m),
                     KMIP_REASON_MISSING_DATA);
    assert_non_null(strstr(m, "x-keyfleet-ca"));
    /* An issuer without usage Certificate Sign; one that does not exist. */
    assert_int_equal(expect_failure(f, pkcs10_request(f, NULL, weak_ca, &csr), &m),
                     KMIP_REASON_PERMISSION_DENIED);
    assert_int_equal(expect_failure(f, pkcs10_request(f, NULL, "VENDOR/999", &csr), &m),
                     KMIP_REASON_ITEM_NOT_FOUND);

    /* Damaged bytes: truncated, garbage, empty, too long; PEM text given as DER. */
    gnutls_datum_t cut = {csr.data, csr.size - 10};
    assert_int_equal(expect_failure(f, pkcs10_request(f, NULL, ca, &cut), &m),
                     KMIP_REASON_INVALID_FIELD);
    assert_non_null(strstr(m, "not a DER PKCS#10 request"));
    cut.size = 1;
    assert_int_equal(expect_failure(f, pkcs10_request(f, NULL, ca, &cut), &m),
                     KMIP_REASON_INVALID_FIELD);
    for (size_t i = 0; i < 300; i++)
        bytes[i] = (uint8_t)(i * 37u + 11u);
    gnutls_datum_t garbage = {bytes, 300};
    assert_int_equal(expect_failure(f, pkcs10_request(f, NULL, ca, &garbage), &m),
                     KMIP_REASON_INVALID_FIELD);
    garbage.size = 0;
    assert_int_equal(expect_failure(f, pkcs10_request(f, NULL, ca, &garbage), &m),
                     KMIP_REASON_INVALID_FIELD);
    memset(bytes, 0, CSR_BIG);
    memcpy(bytes, csr.data, csr.size); /* a good request followed by zeros, over the limit */
    garbage.size = CSR_BIG;
    assert_int_equal(expect_failure(f, pkcs10_request(f, NULL, ca, &garbage), &m),
                     KMIP_REASON_INVALID_FIELD);
    assert_non_null(strstr(m, "16384"));
    gnutls_datum_t pem = make_csr(key, "sensor-9", GNUTLS_X509_FMT_PEM);
    assert_int_equal(expect_failure(f, pkcs10_request(f, NULL, ca, &pem), &m),
                     KMIP_REASON_INVALID_FIELD);

    /* No Common Name; no or an unsupported Certificate Request Type. */
    assert_int_equal(expect_failure(f, pkcs10_request(f, NULL, ca, &no_cn), &m),
                     KMIP_REASON_INVALID_FIELD);
    assert_non_null(strstr(m, "Common Name"));
    assert_int_equal(expect_failure(f, csr_request(f, NULL, ca, KMIP_TAG_CERTIFICATE_REQUEST_VALUE,
                                                   0, csr.data, csr.size),
                                    &m),
                     KMIP_REASON_MISSING_DATA);
    assert_int_equal(expect_failure(f, csr_request(f, NULL, ca, KMIP_TAG_CERTIFICATE_REQUEST_VALUE,
                                                   KMIP_CERTIFICATE_REQUEST_TYPE_CRMF, csr.data,
                                                   csr.size),
                                    &m),
                     KMIP_REASON_FEATURE_NOT_SUPPORTED);
    free(bytes);
    gnutls_free(pem.data);
    gnutls_free(no_cn.data);
    gnutls_free(csr.data);
    gnutls_x509_privkey_deinit(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(certify_issues_a_verifiable_certificate, setup, teardown),
        cmocka_unit_test_setup_teardown(certify_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(certify_pkcs10_issues_a_verifiable_certificate, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(certify_pkcs10_for_a_named_public_key, setup, teardown),
        cmocka_unit_test_setup_teardown(certify_pkcs10_refusals, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
