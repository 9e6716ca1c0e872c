/*
 * RSA-OAEP key wrapping in Get (KMIP Key Wrapping Specification with Padding
 * Method OAEP under a managed RSA Public Key) and KMIP 2.x Import, end to end
 * (request -> kf_kms_handle_kmip -> response). The wrapped value is checked by
 * decrypting it with the private key (RFC 8017 §7.1.2 through nettle) and
 * comparing with a plain Get; every refusal path has a test.
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

#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/ttlv.h"

#include "keyfleet/crypto.h"

#define KF_TEST_NAME "kmso"
#include "kms_ops_fixture.h"

/* A Symmetric Key object structure holding value (Raw). */
static void add_symmetric_key(struct fixture *f, kf_ttlv *p, const uint8_t *value, size_t len)
{
    kf_ttlv *o = kf_ttlv_struct(f->a, p, KMIP_TAG_SYMMETRIC_KEY);
    kf_ttlv *kb = kf_ttlv_struct(f->a, o, KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_RAW);
    kf_ttlv *kv = kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE);
    kf_ttlv_add_bytes(f->a, kv, KMIP_TAG_KEY_MATERIAL, value, len);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
}

/* Register (2.x) an AES key holding value; activate if asked. */
static void register_aes(struct fixture *f, const uint8_t *value, size_t len, uint32_t usage,
                         bool activate, char uid[KF_UID_MAX])
{
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
    kf_ttlv *at = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
    kf_ttlv_add_enum(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
    kf_ttlv_add_int(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, (int32_t)usage);
    add_symmetric_key(f, p, value, len);
    copy_uid(expect_success(f, msg), KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    if (activate)
        uid_op(f, 2, KMIP_OP_ACTIVATE, uid);
}

/* The value of a Symmetric Key through a plain Get. */
static void value_of(struct fixture *f, const char *uid, const uint8_t **v, size_t *len)
{
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_GET, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    const kf_ttlv *r = expect_success(f, msg);
    assert_int_equal(kf_ttlv_get_bytes(KF_TTLV_PATH(r, KMIP_TAG_SYMMETRIC_KEY, KMIP_TAG_KEY_BLOCK,
                                                    KMIP_TAG_KEY_VALUE, KMIP_TAG_KEY_MATERIAL),
                                       v, len),
                     KF_OK);
}

/* ---- RSA-OAEP key wrapping in Get ---- */

/* An active managed RSA Public Key (PKCS#1) of priv with the given usage. */
static void register_rsa_public(struct fixture *f, const kf_rsa_key *priv, uint32_t usage,
                                char uid[KF_UID_MAX])
{
    uint8_t *der;
    size_t len;
    assert_int_equal(kf_rsa_export_public(priv, &der, &len), KF_OK);
    struct kf_register_spec spec = {
        .domain = "VENDOR",
        .object_type = KF_OBJ_PUBLIC_KEY,
        .crypto_alg = KMIP_ALG_RSA,
        .crypto_length = 2048,
        .usage_mask = usage,
        .key_format = KMIP_KEYFMT_PKCS_1,
        .state = KF_STATE_ACTIVE,
    };
    assert_int_equal(kf_kms_register(f->kms, "test", "Register", &spec, der, len, uid), KF_OK);
    free(der);
}

/* Get uid wrapped under kek_uid with the given OAEP hashes (0: leave out). */
static kf_ttlv *wrapped_get(struct fixture *f, const char *uid, const char *kek_uid,
                            uint32_t padding, uint32_t hash, uint32_t mgf_hash, bool no_encoding)
{
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_GET, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv *kws = kf_ttlv_struct(f->a, p, KMIP_TAG_KEY_WRAPPING_SPECIFICATION);
    kf_ttlv_add_enum(f->a, kws, KMIP_TAG_WRAPPING_METHOD, KMIP_WRAPPING_METHOD_ENCRYPT);
    kf_ttlv *eki = kf_ttlv_struct(f->a, kws, KMIP_TAG_ENCRYPTION_KEY_INFORMATION);
    kf_ttlv_add_text(f->a, eki, KMIP_TAG_UNIQUE_IDENTIFIER, kek_uid);
    kf_ttlv *cp = kf_ttlv_struct(f->a, eki, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    if (padding)
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, padding);
    if (hash)
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_HASHING_ALGORITHM, hash);
    if (mgf_hash)
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_MASK_GENERATOR_HASHING_ALGORITHM, mgf_hash);
    if (no_encoding)
        kf_ttlv_add_enum(f->a, kws, KMIP_TAG_ENCODING_OPTION, KMIP_ENCODING_OPTION_NO_ENCODING);
    return msg;
}

static void wrapped_value(const kf_ttlv *r, const uint8_t **v, size_t *len)
{
    const kf_ttlv *kb = KF_TTLV_PATH(r, KMIP_TAG_SYMMETRIC_KEY, KMIP_TAG_KEY_BLOCK);
    uint32_t method = 0;
    assert_int_equal(kf_ttlv_get_enum(KF_TTLV_PATH(kb, KMIP_TAG_KEY_WRAPPING_DATA,
                                                   KMIP_TAG_WRAPPING_METHOD),
                                      &method),
                     KF_OK);
    assert_int_equal(method, KMIP_WRAPPING_METHOD_ENCRYPT);
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(kb, KMIP_TAG_KEY_VALUE), v, len), KF_OK);
}

static void oaep_wrap_decrypts_to_the_key(void **state)
{
    struct fixture *f = *state;
    kf_rsa_key *priv;
    char kek[KF_UID_MAX], uid[KF_UID_MAX];
    size_t kl;
    const uint8_t *key = unhex(f, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                               &kl);
    assert_int_equal(kf_rsa_generate(2048, &priv), KF_OK);
    register_rsa_public(f, priv, KMIP_USAGE_WRAP_KEY | KMIP_USAGE_ENCRYPT, kek);
    register_aes(f, key, kl, KMIP_USAGE_ENCRYPT, true, uid);
    const uint8_t *plain;
    size_t plain_len;
    value_of(f, uid, &plain, &plain_len);
    assert_int_equal(plain_len, kl);

    /* SHA-256 label hash, SHA-1 MGF1, the Key Material bytes only. */
    const uint8_t *w;
    size_t wl, ml = 0;
    uint8_t m[256];
    wrapped_value(expect_success(f, wrapped_get(f, uid, kek, KMIP_PAD_OAEP, KMIP_HASH_SHA_256,
                                                KMIP_HASH_SHA_1, true)),
                  &w, &wl);
    assert_int_equal(wl, 256);
    assert_int_equal(kf_rsa_oaep_decrypt_ex(priv, KF_HASH_SHA256, KF_HASH_SHA1, NULL, 0, w, wl, m,
                                            &ml),
                     KF_OK);
    assert_int_equal(ml, plain_len);
    assert_memory_equal(m, plain, plain_len);
    /* The hashes matter: the same blob does not open as SHA-1/SHA-1. */
    assert_int_not_equal(kf_rsa_oaep_decrypt_ex(priv, KF_HASH_SHA1, KF_HASH_SHA1, NULL, 0, w, wl,
                                                m, &ml),
                         KF_OK);

    /* KMIP defaults (SHA-1 for both) and the TTLV-encoded Key Value. */
    wrapped_value(expect_success(f, wrapped_get(f, uid, kek, KMIP_PAD_OAEP, 0, 0, false)), &w,
                  &wl);
    assert_int_equal(kf_rsa_oaep_decrypt(priv, KF_HASH_SHA1, NULL, 0, w, wl, m, &ml), KF_OK);
    kf_ttlv *kv;
    assert_int_equal(kf_ttlv_decode(m, ml, NULL, f->a, &kv), KF_OK);
    assert_int_equal(kv->tag, KMIP_TAG_KEY_VALUE);
    const uint8_t *km;
    size_t kml;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(kv, KMIP_TAG_KEY_MATERIAL), &km, &kml), KF_OK);
    assert_int_equal(kml, plain_len);
    assert_memory_equal(km, plain, plain_len);
    kf_rsa_free(priv);
}

static void oaep_wrap_refusals(void **state)
{
    struct fixture *f = *state;
    kf_rsa_key *priv;
    char verify_only[KF_UID_MAX], kek[KF_UID_MAX], aes_kek[KF_UID_MAX], uid[KF_UID_MAX];
    const char *msg;
    size_t kl;
    const uint8_t *key = unhex(f, "00112233445566778899aabbccddeeff", &kl);
    assert_int_equal(kf_rsa_generate(2048, &priv), KF_OK);
    register_rsa_public(f, priv, KMIP_USAGE_VERIFY, verify_only);
    register_rsa_public(f, priv, KMIP_USAGE_WRAP_KEY, kek);
    register_aes(f, key, kl, KMIP_USAGE_WRAP_KEY, true, aes_kek);
    register_aes(f, key, kl, KMIP_USAGE_ENCRYPT, true, uid);
    /* A public key without Wrap Key usage (Create Key Pair's default is Verify). */
    assert_int_equal(expect_failure(f, wrapped_get(f, uid, verify_only, KMIP_PAD_OAEP, 0, 0, true),
                                    &msg),
                     kf_kms_result_reason(KF_ERR_PERM, 2));
    assert_int_equal(kf_kms_result_reason(KF_ERR_PERM, 2), KMIP_REASON_PERMISSION_DENIED);
    /* Unknown wrapping key. */
    assert_int_equal(expect_failure(f, wrapped_get(f, uid, "VENDOR/999", KMIP_PAD_OAEP, 0, 0, true),
                                    &msg),
                     KMIP_REASON_ITEM_NOT_FOUND);
    /* OAEP under a non-RSA (AES) key, and AES key wrap under the RSA key. */
    uint32_t unsupported = kf_kms_result_reason(KF_ERR_UNSUPPORTED, 2);
    assert_int_equal(expect_failure(f, wrapped_get(f, uid, aes_kek, KMIP_PAD_OAEP, 0, 0, true),
                                    &msg),
                     unsupported);
    assert_int_equal(expect_failure(f, wrapped_get(f, uid, kek, 0, 0, 0, true), &msg), unsupported);
    /* A hash not offered, a mask generator other than MGF1. */
    assert_int_equal(expect_failure(f, wrapped_get(f, uid, kek, KMIP_PAD_OAEP, KMIP_HASH_MD5, 0,
                                                    true),
                                    &msg),
                     unsupported);
    assert_non_null(strstr(msg, "SHA-256"));
    kf_ttlv *m2 = wrapped_get(f, uid, kek, KMIP_PAD_OAEP, 0, 0, true);
    kf_ttlv *cp = (kf_ttlv *)(uintptr_t)KF_TTLV_PATH(
        kf_ttlv_find(m2, KMIP_TAG_BATCH_ITEM), KMIP_TAG_REQUEST_PAYLOAD,
        KMIP_TAG_KEY_WRAPPING_SPECIFICATION, KMIP_TAG_ENCRYPTION_KEY_INFORMATION,
        KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    assert_non_null(cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_MASK_GENERATOR, 2);
    assert_int_equal(expect_failure(f, m2, &msg), unsupported);
    assert_non_null(strstr(msg, "MGF1"));
    kf_rsa_free(priv);
}

/* ---- Import ---- */

static kf_ttlv *import_request(struct fixture *f, int major, const char *uid, int replace,
                               const uint8_t *value, size_t len)
{
    kf_ttlv *p, *msg = request(f, major, KMIP_OP_IMPORT, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
    if (replace >= 0)
        kf_ttlv_add_bool(f->a, p, KMIP_TAG_REPLACE_EXISTING, replace != 0);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_KEY_WRAP_TYPE, KMIP_KEY_WRAP_TYPE_NOT_WRAPPED);
    kf_ttlv *at = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
    kf_ttlv_add_enum(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
    kf_ttlv_add_int(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK,
                    (int32_t)(KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT));
    add_symmetric_key(f, p, value, len);
    return msg;
}

static uint32_t version_of(struct fixture *f, const char *uid)
{
    struct kf_object obj = {0};
    assert_int_equal(kf_kms_get(f->kms, "test", uid, &obj, NULL), KF_OK);
    uint32_t v = obj.version;
    kf_object_clear(&obj);
    return v;
}

static void import_replaces_existing_material(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX], got[KF_UID_MAX];
    size_t ol, nl;
    const uint8_t *old = unhex(f, "000102030405060708090a0b0c0d0e0f", &ol);
    const uint8_t *fresh =
        unhex(f, "f0e0d0c0b0a090807060504030201000f1e1d1c1b1a191817161514131211101", &nl);
    register_aes(f, old, ol, KMIP_USAGE_ENCRYPT, false, uid);
    assert_int_equal(version_of(f, uid), 1);
    copy_uid(expect_success(f, import_request(f, 2, uid, 1, fresh, nl)),
             KMIP_TAG_UNIQUE_IDENTIFIER, got);
    assert_string_equal(got, uid);
    const uint8_t *v;
    size_t vl;
    value_of(f, uid, &v, &vl);
    assert_int_equal(vl, nl);
    assert_memory_equal(v, fresh, nl);
    assert_int_equal(version_of(f, uid), 2);
    struct kf_object obj = {0};
    assert_int_equal(kf_kms_get(f->kms, "test", uid, &obj, NULL), KF_OK);
    assert_int_equal(obj.crypto_length, 256);
    assert_int_equal(obj.usage_mask, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT);
    kf_object_clear(&obj);
    /* An existing object without Replace Existing (absent or false) is refused. */
    const char *msg;
    assert_int_equal(expect_failure(f, import_request(f, 2, uid, -1, old, ol), &msg),
                     KMIP_REASON_OBJECT_ALREADY_EXISTS);
    assert_non_null(strstr(msg, "Replace Existing"));
    assert_int_equal(expect_failure(f, import_request(f, 2, uid, 0, old, ol), &msg),
                     KMIP_REASON_OBJECT_ALREADY_EXISTS);
    value_of(f, uid, &v, &vl);
    assert_memory_equal(v, fresh, nl);
    assert_int_equal(version_of(f, uid), 2);
}

static void import_new_object_only_at_the_next_id(void **state)
{
    struct fixture *f = *state;
    char got[KF_UID_MAX];
    const char *msg;
    size_t kl;
    const uint8_t *key = unhex(f, "00112233445566778899aabbccddeeff", &kl);
    /* OTHER is empty: its next key ID is 1. Past the next one is refused, nothing stored. */
    assert_int_equal(expect_failure(f, import_request(f, 2, "OTHER/5", 0, key, kl), &msg),
                     KMIP_REASON_OBJECT_ALREADY_EXISTS);
    assert_non_null(strstr(msg, "keyfleet assigns identifiers; use Register"));
    copy_uid(expect_success(f, import_request(f, 2, "OTHER/1", 0, key, kl)),
             KMIP_TAG_UNIQUE_IDENTIFIER, got);
    assert_string_equal(got, "OTHER/1");
    const uint8_t *v;
    size_t vl;
    value_of(f, "OTHER/1", &v, &vl);
    assert_int_equal(vl, kl);
    assert_memory_equal(v, key, kl);
    /* A malformed identifier and an unknown domain. */
    assert_int_equal(expect_failure(f, import_request(f, 2, "no-slash", 0, key, kl), &msg),
                     kf_kms_result_reason(KF_ERR_ATTRIBUTE, 2));
    assert_int_equal(expect_failure(f, import_request(f, 2, "OTHER/0", 0, key, kl), &msg),
                     kf_kms_result_reason(KF_ERR_ATTRIBUTE, 2));
    const kf_ttlv *item;
    assert_int_equal(send_request(f, import_request(f, 2, "NOSUCH/1", 0, key, kl), &item),
                     KMIP_RESULT_STATUS_OPERATION_FAILED);
}

static void import_of_a_destroyed_id_is_refused(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    const char *msg;
    size_t kl;
    const uint8_t *key = unhex(f, "00112233445566778899aabbccddeeff", &kl);
    register_aes(f, key, kl, KMIP_USAGE_ENCRYPT, false, uid);
    uid_op(f, 2, KMIP_OP_DESTROY, uid);
    assert_int_equal(expect_failure(f, import_request(f, 2, uid, 1, key, kl), &msg),
                     KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE);
    assert_non_null(strstr(msg, "retired"));
    assert_int_equal(expect_failure(f, import_request(f, 2, uid, 0, key, kl), &msg),
                     KMIP_REASON_OBJECT_ALREADY_EXISTS);
    /* Nothing was replaced. */
    assert_int_equal(version_of(f, uid), 1);
}

static void import_refused_in_a_foreign_domain_and_in_1x(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    const char *msg;
    size_t kl;
    const uint8_t *key = unhex(f, "00112233445566778899aabbccddeeff", &kl);
    register_aes(f, key, kl, KMIP_USAGE_ENCRYPT, false, uid);
    struct kf_principal vendor_only = {
        .roles = KF_ROLE_MANAGE | KF_ROLE_USE | KF_ROLE_EXPORT,
        .ndomains = 1,
    };
    snprintf(vendor_only.name, sizeof(vendor_only.name), "cert:CN=vendor");
    snprintf(vendor_only.domains[0], sizeof(vendor_only.domains[0]), "VENDOR");
    snprintf(vendor_only.default_domain, sizeof(vendor_only.default_domain), "VENDOR");
    const kf_ttlv *item;
    assert_int_equal(send_request_as(f, &vendor_only, import_request(f, 2, "OTHER/1", 0, key, kl),
                                     &item),
                     KMIP_RESULT_STATUS_OPERATION_FAILED);
    assert_int_equal(reason_of(item, &msg), KMIP_REASON_PERMISSION_DENIED);
    /* Nothing was created there: OTHER/1 is still free for its domain's managers. */
    struct kf_object obj = {0};
    assert_int_equal(kf_kms_get(f->kms, "test", "OTHER/1", &obj, NULL), KF_ERR_OBJECT);
    /* The same principal may import into its own domain. */
    assert_int_equal(send_request_as(f, &vendor_only, import_request(f, 2, uid, 1, key, kl), &item),
                     KMIP_RESULT_STATUS_SUCCESS);
    /* KMIP 1.x has no Import. */
    assert_int_equal(expect_failure(f, import_request(f, 1, uid, 1, key, kl), &msg),
                     KMIP_REASON_OPERATION_NOT_SUPPORTED);
    assert_non_null(strstr(msg, "2.x"));
}

static void query_lists_import(void **state)
{
    struct fixture *f = *state;
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_QUERY, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_QUERY_FUNCTION, KMIP_QUERY_QUERY_OPERATIONS);
    const kf_ttlv *r = expect_success(f, msg);
    bool import = false, get = false;
    for (const kf_ttlv *o = kf_ttlv_find(r, KMIP_TAG_OPERATION); o;
         o = kf_ttlv_find_next(o, KMIP_TAG_OPERATION)) {
        uint32_t op = 0;
        assert_int_equal(kf_ttlv_get_enum(o, &op), KF_OK);
        import |= op == KMIP_OP_IMPORT;
        get |= op == KMIP_OP_GET;
    }
    assert_true(import);
    assert_true(get);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(oaep_wrap_decrypts_to_the_key, setup, teardown),
        cmocka_unit_test_setup_teardown(oaep_wrap_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(import_replaces_existing_material, setup, teardown),
        cmocka_unit_test_setup_teardown(import_new_object_only_at_the_next_id, setup, teardown),
        cmocka_unit_test_setup_teardown(import_of_a_destroyed_id_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(import_refused_in_a_foreign_domain_and_in_1x, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(query_lists_import, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
