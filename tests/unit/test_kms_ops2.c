/*
 * KMIP Re-key, Re-key Key Pair, Derive Key, Check, Archive / Recover, Export,
 * Interop and Log end to end (request -> kf_kms_handle_kmip -> response).
 * Known answers: PBKDF2-HMAC-SHA-256 from RFC 7914 §11, PBKDF2-HMAC-SHA-1 from
 * RFC 6070 §2, HMAC-SHA-256 from RFC 4231 test case 2, SHA-256("abc") from
 * FIPS 180-2 B.1, SP 800-108 counter mode with AES-CMAC from NIST CAVP
 * KDFCTR_gen.rsp (CMAC_AES128 and HMAC_SHA256, BEFORE_FIXED, RLEN=32, COUNT=0).
 * Every refusal path has a test. Certify is in test_kms_certify.c.
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

#define KF_TEST_NAME "kmso"
#include "kms_ops_fixture.h"

static uint32_t uid_op_fails(struct fixture *f, int major, uint32_t op, const char *uid,
                             const char **message)
{
    kf_ttlv *p, *msg = request(f, major, op, &p);
    if (uid)
        kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    return expect_failure(f, msg, message);
}

/* Register (2.x form) a Symmetric Key or Secret Data holding value; activate if asked. */
static void register_value(struct fixture *f, uint32_t type, uint32_t alg, const uint8_t *value,
                           size_t len, uint32_t usage, const char *name, bool activate,
                           char uid[KF_UID_MAX])
{
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, type);
    kf_ttlv *at = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
    if (alg)
        kf_ttlv_add_enum(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, alg);
    kf_ttlv_add_int(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, (int32_t)usage);
    if (name) {
        kf_ttlv *n = kf_ttlv_struct(f->a, at, KMIP_TAG_NAME);
        kf_ttlv_add_text(f->a, n, KMIP_TAG_NAME_VALUE, name);
        kf_ttlv_add_enum(f->a, n, KMIP_TAG_NAME_TYPE, KMIP_NAME_TYPE_UNINTERPRETED_TEXT_STRING);
    }
    kf_ttlv *o = kf_ttlv_struct(f->a, p, type == KMIP_OBJ_SECRET_DATA ? KMIP_TAG_SECRET_DATA
                                                                        : KMIP_TAG_SYMMETRIC_KEY);
    if (type == KMIP_OBJ_SECRET_DATA)
        kf_ttlv_add_enum(f->a, o, KMIP_TAG_SECRET_DATA_TYPE, KMIP_SECRET_PASSWORD);
    kf_ttlv *kb = kf_ttlv_struct(f->a, o, KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE,
                     type == KMIP_OBJ_SECRET_DATA ? KMIP_KEYFMT_OPAQUE : KMIP_KEYFMT_RAW);
    kf_ttlv *kv = kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE);
    kf_ttlv_add_bytes(f->a, kv, KMIP_TAG_KEY_MATERIAL, value, len);
    if (alg)
        kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, alg);
    copy_uid(expect_success(f, msg), KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    if (activate)
        uid_op(f, 2, KMIP_OP_ACTIVATE, uid);
}

static void create_aes(struct fixture *f, int bits, uint32_t usage, const char *name,
                       char uid[KF_UID_MAX])
{
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_CREATE, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
    kf_ttlv *at = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
    kf_ttlv_add_enum(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
    kf_ttlv_add_int(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, bits);
    kf_ttlv_add_int(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, (int32_t)usage);
    kf_ttlv_add_text(f->a, at, KMIP_TAG_OBJECT_GROUP, "payments");
    if (name) {
        kf_ttlv *n = kf_ttlv_struct(f->a, at, KMIP_TAG_NAME);
        kf_ttlv_add_text(f->a, n, KMIP_TAG_NAME_VALUE, name);
        kf_ttlv_add_enum(f->a, n, KMIP_TAG_NAME_TYPE, KMIP_NAME_TYPE_UNINTERPRETED_TEXT_STRING);
    }
    copy_uid(expect_success(f, msg), KMIP_TAG_UNIQUE_IDENTIFIER, uid);
}

static bool has_name(const kf_ttlv *set, const char *name)
{
    for (const kf_ttlv *n = kf_ttlv_find(set, KMIP_TAG_NAME); n;
         n = kf_ttlv_find_next(n, KMIP_TAG_NAME))
        if (kf_ttlv_text_equals(kf_ttlv_find(n, KMIP_TAG_NAME_VALUE), name))
            return true;
    return false;
}

/* The value of a Symmetric Key or Secret Data through Get. */
static void value_of(struct fixture *f, const char *uid, const uint8_t **v, size_t *len)
{
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_GET, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    const kf_ttlv *r = expect_success(f, msg);
    const kf_ttlv *o = kf_ttlv_find(r, KMIP_TAG_SYMMETRIC_KEY);
    if (!o)
        o = kf_ttlv_find(r, KMIP_TAG_SECRET_DATA);
    assert_non_null(o);
    const kf_ttlv *kv = KF_TTLV_PATH(o, KMIP_TAG_KEY_BLOCK, KMIP_TAG_KEY_VALUE);
    const kf_ttlv *km = kf_ttlv_find(kv, KMIP_TAG_KEY_MATERIAL);
    if (km && km->type == KF_TTLV_STRUCTURE)
        km = kf_ttlv_find(km, KMIP_TAG_KEY);
    assert_int_equal(kf_ttlv_get_bytes(km, v, len), KF_OK);
}

/* ---- Re-key ---- */

static void rekey_copies_attributes_and_links_both_keys(void **state)
{
    struct fixture *f = *state;
    char old[KF_UID_MAX], repl[KF_UID_MAX];
    uint32_t usage = KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT;
    create_aes(f, 192, usage, "rk-payments", old);
    uid_op(f, 1, KMIP_OP_ACTIVATE, old);
    for (int major = 1; major <= 2; major++) {
        kf_ttlv *p, *msg = request(f, major, KMIP_OP_RE_KEY, &p);
        kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, old);
        const kf_ttlv *r = expect_success(f, msg);
        copy_uid(r, KMIP_TAG_UNIQUE_IDENTIFIER, repl);
        assert_string_not_equal(old, repl);
        const kf_ttlv *n = attributes_of(f, repl);
        assert_int_equal(enum_attr(n, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM), KMIP_ALG_AES);
        int32_t len = 0, mask = 0;
        assert_int_equal(kf_ttlv_get_int(kf_ttlv_find(n, KMIP_TAG_CRYPTOGRAPHIC_LENGTH), &len),
                         KF_OK);
        assert_int_equal(len, 192);
        assert_int_equal(
            kf_ttlv_get_int(kf_ttlv_find(n, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK), &mask), KF_OK);
        assert_int_equal((uint32_t)mask, usage);
        assert_true(kf_ttlv_text_equals(kf_ttlv_find(n, KMIP_TAG_OBJECT_GROUP), "payments"));
        assert_true(has_link(n, KMIP_LINK_REPLACED_OBJECT_LINK, old));
        /* No Offset: the Activation Date is copied, so the replacement is Active. */
        assert_int_equal(enum_attr(n, KMIP_TAG_STATE), KF_STATE_ACTIVE);
        const kf_ttlv *o = attributes_of(f, old);
        assert_true(has_link(o, KMIP_LINK_REPLACEMENT_OBJECT_LINK, repl));
        if (major == 1) { /* the first re-key moves the Name over */
            assert_true(has_name(n, "rk-payments"));
            assert_false(has_name(o, "rk-payments"));
        }
    }
    /* The replacement's material differs from the existing key's. */
    const uint8_t *v1, *v2;
    size_t l1, l2;
    value_of(f, old, &v1, &l1);
    value_of(f, repl, &v2, &l2);
    assert_int_equal(l1, 24);
    assert_int_equal(l2, 24);
    assert_memory_not_equal(v1, v2, 24);
}

static void rekey_with_offset_sets_future_activation(void **state)
{
    struct fixture *f = *state;
    char old[KF_UID_MAX], repl[KF_UID_MAX];
    create_aes(f, 128, KMIP_USAGE_ENCRYPT, "rk-offset", old);
    uid_op(f, 2, KMIP_OP_ACTIVATE, old);
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_RE_KEY, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, old);
    kf_ttlv_add_interval(f->a, p, KMIP_TAG_OFFSET, 3600);
    kf_ttlv *asked = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
    kf_ttlv_add_int(f->a, asked, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 256);
    kf_ttlv_add_text(f->a, asked, KMIP_TAG_DESCRIPTION, "rotated yearly");
    int64_t before = (int64_t)time(NULL);
    copy_uid(expect_success(f, msg), KMIP_TAG_UNIQUE_IDENTIFIER, repl);
    const kf_ttlv *n = attributes_of(f, repl);
    int64_t at = 0;
    assert_int_equal(kf_ttlv_get_datetime(kf_ttlv_find(n, KMIP_TAG_ACTIVATION_DATE), &at), KF_OK);
    assert_true(at >= before + 3600 && at <= (int64_t)time(NULL) + 3600);
    assert_int_equal(enum_attr(n, KMIP_TAG_STATE), KF_STATE_PRE_ACTIVE);
    /* The request's attributes apply to the replacement. */
    int32_t len = 0;
    assert_int_equal(kf_ttlv_get_int(kf_ttlv_find(n, KMIP_TAG_CRYPTOGRAPHIC_LENGTH), &len), KF_OK);
    assert_int_equal(len, 256);
    assert_true(kf_ttlv_text_equals(kf_ttlv_find(n, KMIP_TAG_DESCRIPTION), "rotated yearly"));
    assert_true(kf_ttlv_text_equals(kf_ttlv_find(n, KMIP_TAG_OBJECT_GROUP), "payments"));
    /* A read-only attribute in the request is refused before anything is made. */
    const char *m;
    msg = request(f, 2, KMIP_OP_RE_KEY, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, old);
    asked = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
    kf_ttlv_add_enum(f->a, asked, KMIP_TAG_STATE, KF_STATE_ACTIVE);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_READ_ONLY_ATTRIBUTE);
}

static void rekey_refusals(void **state)
{
    struct fixture *f = *state;
    char secret[KF_UID_MAX], key[KF_UID_MAX];
    const char *m;
    register_value(f, KMIP_OBJ_SECRET_DATA, 0, (const uint8_t *)"pw", 2, KMIP_USAGE_DERIVE_KEY,
                   NULL, false, secret);
    assert_int_equal(uid_op_fails(f, 2, KMIP_OP_RE_KEY, secret, &m), KMIP_REASON_INVALID_FIELD);
    assert_non_null(strstr(m, "Symmetric Key"));
    assert_int_equal(uid_op_fails(f, 2, KMIP_OP_RE_KEY, "VENDOR/999", &m),
                     KMIP_REASON_ITEM_NOT_FOUND);
    assert_int_equal(uid_op_fails(f, 2, KMIP_OP_RE_KEY, NULL, &m), KMIP_REASON_MISSING_DATA);
    create_aes(f, 128, KMIP_USAGE_ENCRYPT, NULL, key);
    uid_op(f, 2, KMIP_OP_DESTROY, key);
    assert_int_equal(uid_op_fails(f, 2, KMIP_OP_RE_KEY, key, &m),
                     KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE);
    /* A Re-key Key Pair of a symmetric key is refused too. */
    char sym[KF_UID_MAX];
    create_aes(f, 128, KMIP_USAGE_ENCRYPT, NULL, sym);
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_RE_KEY_KEY_PAIR, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER, sym);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_INVALID_FIELD);
}

static void rekey_key_pair_makes_a_linked_pair(void **state)
{
    struct fixture *f = *state;
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_CREATE_KEY_PAIR, &p);
    kf_ttlv *common = kf_ttlv_struct(f->a, p, KMIP_TAG_COMMON_ATTRIBUTES);
    kf_ttlv_add_enum(f->a, common, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_ED25519);
    kf_ttlv *pa = kf_ttlv_struct(f->a, p, KMIP_TAG_PRIVATE_KEY_ATTRIBUTES);
    kf_ttlv *n = kf_ttlv_struct(f->a, pa, KMIP_TAG_NAME);
    kf_ttlv_add_text(f->a, n, KMIP_TAG_NAME_VALUE, "signer");
    kf_ttlv_add_enum(f->a, n, KMIP_TAG_NAME_TYPE, KMIP_NAME_TYPE_UNINTERPRETED_TEXT_STRING);
    char priv[KF_UID_MAX], npriv[KF_UID_MAX], npub[KF_UID_MAX];
    copy_uid(expect_success(f, msg), KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER, priv);

    msg = request(f, 2, KMIP_OP_RE_KEY_KEY_PAIR, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER, priv);
    const kf_ttlv *r = expect_success(f, msg);
    copy_uid(r, KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER, npriv);
    copy_uid(r, KMIP_TAG_PUBLIC_KEY_UNIQUE_IDENTIFIER, npub);
    assert_string_not_equal(priv, npriv);
    const kf_ttlv *na = attributes_of(f, npriv);
    assert_int_equal(enum_attr(na, KMIP_TAG_OBJECT_TYPE), KMIP_OBJ_PRIVATE_KEY);
    assert_int_equal(enum_attr(na, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM), KMIP_ALG_ED25519);
    assert_true(has_name(na, "signer"));
    assert_true(has_link(na, KMIP_LINK_REPLACED_OBJECT_LINK, priv));
    assert_true(has_link(na, KMIP_LINK_PUBLIC_KEY_LINK, npub));
    assert_true(has_link(attributes_of(f, npub), KMIP_LINK_PRIVATE_KEY_LINK, npriv));
    const kf_ttlv *oa = attributes_of(f, priv);
    assert_true(has_link(oa, KMIP_LINK_REPLACEMENT_OBJECT_LINK, npriv));
    assert_false(has_name(oa, "signer"));
}

/* ---- Derive Key ---- */

static kf_ttlv *derive_request(struct fixture *f, int major, const char *base, uint32_t method,
                               uint32_t out_type, uint32_t out_alg, int32_t bits, kf_ttlv **dp)
{
    kf_ttlv *p, *msg = request(f, major, KMIP_OP_DERIVE_KEY, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, out_type);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, base);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_DERIVATION_METHOD, method);
    *dp = kf_ttlv_struct(f->a, p, KMIP_TAG_DERIVATION_PARAMETERS);
    if (major >= 2) {
        kf_ttlv *at = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
        if (out_alg)
            kf_ttlv_add_enum(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, out_alg);
        if (bits)
            kf_ttlv_add_int(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, bits);
    } else {
        kf_ttlv *ta = kf_ttlv_struct(f->a, p, KMIP_TAG_TEMPLATE_ATTRIBUTE);
        if (out_alg) {
            kf_ttlv *a = kf_ttlv_struct(f->a, ta, KMIP_TAG_ATTRIBUTE);
            kf_ttlv_add_text(f->a, a, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Algorithm");
            kf_ttlv_add_enum(f->a, a, KMIP_TAG_ATTRIBUTE_VALUE, out_alg);
        }
        if (bits) {
            kf_ttlv *a = kf_ttlv_struct(f->a, ta, KMIP_TAG_ATTRIBUTE);
            kf_ttlv_add_text(f->a, a, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Length");
            kf_ttlv_add_int(f->a, a, KMIP_TAG_ATTRIBUTE_VALUE, bits);
        }
    }
    return msg;
}

static void hashing(struct fixture *f, kf_ttlv *dp, uint32_t hash)
{
    kf_ttlv *cp = kf_ttlv_struct(f->a, dp, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_HASHING_ALGORITHM, hash);
}

static void derive_and_compare(struct fixture *f, kf_ttlv *msg, const char *base,
                               const char *want_hex)
{
    char uid[KF_UID_MAX];
    copy_uid(expect_success(f, msg), KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    size_t wl, gl;
    const uint8_t *want = unhex(f, want_hex, &wl), *got;
    value_of(f, uid, &got, &gl);
    assert_int_equal(gl, wl);
    assert_memory_equal(got, want, wl);
    assert_true(has_link(attributes_of(f, uid), KMIP_LINK_DERIVATION_BASE_OBJECT_LINK, base));
}

static void derive_pbkdf2_rfc7914_and_rfc6070(void **state)
{
    struct fixture *f = *state;
    char pw[KF_UID_MAX], pw2[KF_UID_MAX];
    register_value(f, KMIP_OBJ_SECRET_DATA, 0, (const uint8_t *)"passwd", 6,
                   KMIP_USAGE_DERIVE_KEY, NULL, true, pw);
    kf_ttlv *dp, *msg = derive_request(f, 1, pw, KMIP_DERIVATION_METHOD_PBKDF2,
                                       KMIP_OBJ_SECRET_DATA, 0, 512, &dp);
    hashing(f, dp, KMIP_HASH_SHA_256);
    kf_ttlv_add_bytes(f->a, dp, KMIP_TAG_SALT, (const uint8_t *)"salt", 4);
    kf_ttlv_add_int(f->a, dp, KMIP_TAG_ITERATION_COUNT, 1);
    /* RFC 7914 §11: PBKDF2-HMAC-SHA-256 (P="passwd", S="salt", c=1, dkLen=64). */
    derive_and_compare(f, msg, pw,
                       "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
                       "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783");

    register_value(f, KMIP_OBJ_SECRET_DATA, 0, (const uint8_t *)"password", 8,
                   KMIP_USAGE_DERIVE_KEY, NULL, true, pw2);
    msg = derive_request(f, 2, pw2, KMIP_DERIVATION_METHOD_PBKDF2, KMIP_OBJ_SECRET_DATA, 0, 160,
                         &dp);
    kf_ttlv_add_bytes(f->a, dp, KMIP_TAG_SALT, (const uint8_t *)"salt", 4);
    kf_ttlv_add_int(f->a, dp, KMIP_TAG_ITERATION_COUNT, 2);
    /* RFC 6070 §2, c=2: the default PRF is HMAC-SHA-1. */
    derive_and_compare(f, msg, pw2, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957");
}

static void derive_hmac_rfc4231_case2(void **state)
{
    struct fixture *f = *state;
    char base[KF_UID_MAX];
    register_value(f, KMIP_OBJ_SYMMETRIC_KEY, KMIP_ALG_HMAC_SHA256, (const uint8_t *)"Jefe", 4,
                   KMIP_USAGE_DERIVE_KEY, NULL, true, base);
    kf_ttlv *dp, *msg = derive_request(f, 2, base, KMIP_DERIVATION_METHOD_HMAC,
                                       KMIP_OBJ_SYMMETRIC_KEY, KMIP_ALG_AES, 256, &dp);
    const char *data = "what do ya want for nothing?";
    kf_ttlv_add_bytes(f->a, dp, KMIP_TAG_DERIVATION_DATA, (const uint8_t *)data, strlen(data));
    derive_and_compare(f, msg, base,
                       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

static void derive_hash_fips180_abc(void **state)
{
    struct fixture *f = *state;
    char base[KF_UID_MAX];
    register_value(f, KMIP_OBJ_SECRET_DATA, 0, (const uint8_t *)"ab", 2, KMIP_USAGE_DERIVE_KEY,
                   NULL, true, base);
    kf_ttlv *dp, *msg = derive_request(f, 1, base, KMIP_DERIVATION_METHOD_HASH,
                                       KMIP_OBJ_SYMMETRIC_KEY, KMIP_ALG_AES, 256, &dp);
    hashing(f, dp, KMIP_HASH_SHA_256);
    kf_ttlv_add_bytes(f->a, dp, KMIP_TAG_DERIVATION_DATA, (const uint8_t *)"c", 1);
    /* SHA-256("abc"): the base value followed by the Derivation Data. */
    derive_and_compare(f, msg, base,
                       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void derive_sp800_108_counter_cavp(void **state)
{
    struct fixture *f = *state;
    char base[KF_UID_MAX];
    size_t kl, fl;
    const uint8_t *ki = unhex(f, "c10b152e8c97b77e18704e0f0bd38305", &kl);
    const uint8_t *fixed = unhex(f,
                                 "98cd4cbbbebe15d17dc86e6dbad800a2dcbd64f7c7ad0e78e9cf94ffdba89d03"
                                 "e97eadf6c4f7b806caf52aa38f09d0eb71d71f497bcc6906b48d36c4",
                                 &fl);
    register_value(f, KMIP_OBJ_SYMMETRIC_KEY, KMIP_ALG_AES, ki, kl, KMIP_USAGE_DERIVE_KEY, NULL,
                   true, base);
    kf_ttlv *dp, *msg = derive_request(f, 2, base, KMIP_DERIVATION_METHOD_NIST800_108_C,
                                       KMIP_OBJ_SYMMETRIC_KEY, KMIP_ALG_AES, 128, &dp);
    kf_ttlv_add_bytes(f->a, dp, KMIP_TAG_DERIVATION_DATA, fixed, fl);
    /* KDFCTR_gen.rsp [PRF=CMAC_AES128] [CTRLOCATION=BEFORE_FIXED] [RLEN=32_BITS] COUNT=0. */
    derive_and_compare(f, msg, base, "26faf61908ad9ee881b8305c221db53f");

    /* [PRF=HMAC_SHA256] [CTRLOCATION=BEFORE_FIXED] [RLEN=32_BITS] COUNT=0: an HMAC base key. */
    char hbase[KF_UID_MAX];
    ki = unhex(f, "dd1d91b7d90b2bd3138533ce92b272fbf8a369316aefe242e659cc0ae238afe0", &kl);
    fixed = unhex(f,
                  "01322b96b30acd197979444e468e1c5c6859bf1b1cf951b7e725303e237e46b8"
                  "64a145fab25e517b08f8683d0315bb2911d80a0e8aba17f3b413faac",
                  &fl);
    register_value(f, KMIP_OBJ_SYMMETRIC_KEY, KMIP_ALG_HMAC_SHA256, ki, kl, KMIP_USAGE_DERIVE_KEY,
                   NULL, true, hbase);
    msg = derive_request(f, 1, hbase, KMIP_DERIVATION_METHOD_NIST800_108_C, KMIP_OBJ_SECRET_DATA,
                         0, 128, &dp);
    kf_ttlv_add_bytes(f->a, dp, KMIP_TAG_DERIVATION_DATA, fixed, fl);
    derive_and_compare(f, msg, hbase, "10621342bfb0fd40046c0e29f2cfdbf0");
    /* Counter mode needs its fixed input. */
    msg = derive_request(f, 2, hbase, KMIP_DERIVATION_METHOD_NIST800_108_C, KMIP_OBJ_SECRET_DATA,
                         0, 128, &dp);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_MISSING_DATA);
}

static void derive_refusals(void **state)
{
    struct fixture *f = *state;
    char no_derive[KF_UID_MAX], pre[KF_UID_MAX], ok[KF_UID_MAX];
    const char *m;
    kf_ttlv *dp, *msg;
    register_value(f, KMIP_OBJ_SYMMETRIC_KEY, KMIP_ALG_HMAC_SHA256, (const uint8_t *)"Jefe", 4,
                   KMIP_USAGE_MAC_GENERATE, NULL, true, no_derive);
    register_value(f, KMIP_OBJ_SYMMETRIC_KEY, KMIP_ALG_HMAC_SHA256, (const uint8_t *)"Jefe", 4,
                   KMIP_USAGE_DERIVE_KEY, NULL, false, pre);
    register_value(f, KMIP_OBJ_SYMMETRIC_KEY, KMIP_ALG_HMAC_SHA256, (const uint8_t *)"Jefe", 4,
                   KMIP_USAGE_DERIVE_KEY, NULL, true, ok);

    /* Usage mask without Derive Key. */
    msg = derive_request(f, 2, no_derive, KMIP_DERIVATION_METHOD_HMAC, KMIP_OBJ_SYMMETRIC_KEY,
                         KMIP_ALG_AES, 128, &dp);
    kf_ttlv_add_bytes(f->a, dp, KMIP_TAG_DERIVATION_DATA, (const uint8_t *)"x", 1);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_PERMISSION_DENIED);
    /* Pre-Active base. */
    msg = derive_request(f, 2, pre, KMIP_DERIVATION_METHOD_HMAC, KMIP_OBJ_SYMMETRIC_KEY,
                         KMIP_ALG_AES, 128, &dp);
    kf_ttlv_add_bytes(f->a, dp, KMIP_TAG_DERIVATION_DATA, (const uint8_t *)"x", 1);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE);
    /* A method keyfleet does not offer. */
    msg = derive_request(f, 2, ok, KMIP_DERIVATION_METHOD_ENCRYPT, KMIP_OBJ_SYMMETRIC_KEY,
                         KMIP_ALG_AES, 128, &dp);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_FEATURE_NOT_SUPPORTED);
    /* PBKDF2 without Salt / Iteration Count. */
    msg = derive_request(f, 2, ok, KMIP_DERIVATION_METHOD_PBKDF2, KMIP_OBJ_SYMMETRIC_KEY,
                         KMIP_ALG_AES, 128, &dp);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_MISSING_DATA);
    assert_non_null(strstr(m, "Salt"));
    /* No length; a length that is not whole bytes; no algorithm for a key. */
    msg = derive_request(f, 2, ok, KMIP_DERIVATION_METHOD_HMAC, KMIP_OBJ_SYMMETRIC_KEY,
                         KMIP_ALG_AES, 0, &dp);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_MISSING_DATA);
    msg = derive_request(f, 2, ok, KMIP_DERIVATION_METHOD_HMAC, KMIP_OBJ_SECRET_DATA, 0, 100, &dp);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_MISSING_DATA);
    msg = derive_request(f, 2, ok, KMIP_DERIVATION_METHOD_HMAC, KMIP_OBJ_SYMMETRIC_KEY, 0, 128,
                         &dp);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_MISSING_DATA);
    /* HMAC gives at most one hash output. */
    msg = derive_request(f, 2, ok, KMIP_DERIVATION_METHOD_HMAC, KMIP_OBJ_SECRET_DATA, 0, 512, &dp);
    kf_ttlv_add_bytes(f->a, dp, KMIP_TAG_DERIVATION_DATA, (const uint8_t *)"x", 1);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_FEATURE_NOT_SUPPORTED);
    /* An output object type Derive Key does not make. */
    msg = derive_request(f, 2, ok, KMIP_DERIVATION_METHOD_HMAC, KMIP_OBJ_PRIVATE_KEY, 0, 128, &dp);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_MISSING_DATA);
    /* Another domain for the output. */
    msg = derive_request(f, 2, ok, KMIP_DERIVATION_METHOD_HMAC, KMIP_OBJ_SECRET_DATA, 0, 128, &dp);
    kf_ttlv_add_bytes(f->a, dp, KMIP_TAG_DERIVATION_DATA, (const uint8_t *)"x", 1);
    kf_ttlv *payload = (kf_ttlv *)KF_TTLV_PATH(msg, KMIP_TAG_BATCH_ITEM, KMIP_TAG_REQUEST_PAYLOAD);
    kf_ttlv_add_text(f->a, (kf_ttlv *)kf_ttlv_find(payload, KMIP_TAG_ATTRIBUTES),
                     KMIP_TAG_KEYFLEET_DOMAIN, "OTHER");
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_PERMISSION_DENIED);
    /* Two base objects. */
    msg = derive_request(f, 2, ok, KMIP_DERIVATION_METHOD_HMAC, KMIP_OBJ_SECRET_DATA, 0, 128, &dp);
    payload = (kf_ttlv *)KF_TTLV_PATH(msg, KMIP_TAG_BATCH_ITEM, KMIP_TAG_REQUEST_PAYLOAD);
    kf_ttlv_add_text(f->a, payload, KMIP_TAG_UNIQUE_IDENTIFIER, ok);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_MISSING_DATA);
}

/* ---- Check ---- */

static void check_usage_mask_and_limits(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    const char *m;
    create_aes(f, 128, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, NULL, uid);
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_SET_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv *ul = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_NEW_ATTRIBUTE),
                                 KMIP_TAG_USAGE_LIMITS);
    kf_ttlv_add_long(f->a, ul, KMIP_TAG_USAGE_LIMITS_TOTAL, 5);
    kf_ttlv_add_enum(f->a, ul, KMIP_TAG_USAGE_LIMITS_UNIT, KMIP_USAGE_LIMITS_UNIT_OBJECT);
    expect_success(f, msg);

    /* The lease the server grants (no Lease Time attribute: no limit). */
    uint32_t lease = 86400;
    const kf_ttlv *lt = kf_ttlv_find(attributes_of(f, uid), KMIP_TAG_LEASE_TIME);
    if (lt)
        assert_int_equal(kf_ttlv_get_interval(lt, &lease), KF_OK);
    for (int major = 1; major <= 2; major++) {
        msg = request(f, major, KMIP_OP_CHECK, &p);
        kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
        kf_ttlv_add_int(f->a, p, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, KMIP_USAGE_ENCRYPT);
        kf_ttlv_add_long(f->a, p, KMIP_TAG_USAGE_LIMITS_COUNT, 5);
        kf_ttlv_add_interval(f->a, p, KMIP_TAG_LEASE_TIME, lease);
        const kf_ttlv *r = expect_success(f, msg);
        assert_true(kf_ttlv_text_equals(kf_ttlv_find(r, KMIP_TAG_UNIQUE_IDENTIFIER), uid));
    }
    msg = request(f, 2, KMIP_OP_CHECK, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_int(f->a, p, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK,
                    KMIP_USAGE_ENCRYPT | KMIP_USAGE_SIGN);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_PERMISSION_DENIED);
    assert_non_null(strstr(m, "Cryptographic Usage Mask"));

    msg = request(f, 2, KMIP_OP_CHECK, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_long(f->a, p, KMIP_TAG_USAGE_LIMITS_COUNT, 6);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_USAGE_LIMIT_EXCEEDED);
    assert_non_null(strstr(m, "Usage Limits Count"));

    if (lt) { /* a longer lease than the object's Lease Time is refused */
        msg = request(f, 2, KMIP_OP_CHECK, &p);
        kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
        kf_ttlv_add_interval(f->a, p, KMIP_TAG_LEASE_TIME, lease + 1);
        assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_PERMISSION_DENIED);
        assert_non_null(strstr(m, "Lease Time"));
    }
    msg = request(f, 2, KMIP_OP_CHECK, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_long(f->a, p, KMIP_TAG_USAGE_LIMITS_COUNT, -1);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_INVALID_FIELD);
    assert_int_equal(uid_op_fails(f, 2, KMIP_OP_CHECK, "VENDOR/999", &m),
                     KMIP_REASON_ITEM_NOT_FOUND);
    assert_int_equal(uid_op_fails(f, 2, KMIP_OP_CHECK, NULL, &m), KMIP_REASON_MISSING_DATA);
}

/* ---- Archive / Recover ---- */

static void archive_blocks_use_until_recover(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    const char *m;
    create_aes(f, 128, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DERIVE_KEY, NULL, uid);
    uid_op(f, 1, KMIP_OP_ARCHIVE, uid);
    const kf_ttlv *at = attributes_of(f, uid);
    assert_non_null(kf_ttlv_find(at, KMIP_TAG_ARCHIVE_DATE));
    (void)uid_op_fails(f, 2, KMIP_OP_CHECK, uid, &m);
    assert_non_null(strstr(m, "archived"));
    (void)uid_op_fails(f, 2, KMIP_OP_EXPORT, uid, &m);
    assert_non_null(strstr(m, "archived"));
    (void)uid_op_fails(f, 2, KMIP_OP_RE_KEY, uid, &m);
    assert_non_null(strstr(m, "archived"));
    /* The mark is the server's: a client cannot delete it. */
    kf_ttlv *p, *msg = request(f, 1, KMIP_OP_DELETE_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_ATTRIBUTE_NAME, "y-keyfleet-archived");
    (void)expect_failure(f, msg, &m);

    uid_op(f, 2, KMIP_OP_RECOVER, uid);
    at = attributes_of(f, uid);
    assert_null(kf_ttlv_find(at, KMIP_TAG_ARCHIVE_DATE));
    uid_op(f, 2, KMIP_OP_CHECK, uid);
    assert_int_equal(uid_op_fails(f, 2, KMIP_OP_ARCHIVE, "VENDOR/999", &m),
                     KMIP_REASON_ITEM_NOT_FOUND);
    assert_int_equal(uid_op_fails(f, 2, KMIP_OP_RECOVER, NULL, &m), KMIP_REASON_MISSING_DATA);
}

/* ---- Export ---- */

static void export_returns_value_and_attributes(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    const char *m;
    size_t kl;
    const uint8_t *key = unhex(f, "000102030405060708090a0b0c0d0e0f", &kl);
    register_value(f, KMIP_OBJ_SYMMETRIC_KEY, KMIP_ALG_AES, key, kl, KMIP_USAGE_ENCRYPT,
                   "exported", false, uid);
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_EXPORT, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    const kf_ttlv *r = expect_success(f, msg);
    assert_int_equal(enum_attr(r, KMIP_TAG_OBJECT_TYPE), KMIP_OBJ_SYMMETRIC_KEY);
    const kf_ttlv *at = kf_ttlv_find(r, KMIP_TAG_ATTRIBUTES);
    assert_non_null(at);
    assert_int_equal(enum_attr(at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM), KMIP_ALG_AES);
    assert_true(has_name(at, "exported"));
    /* Response order (2.1 §6.1.20): Object Type, Unique Identifier, Attributes, object. */
    const kf_ttlv *uidn = kf_ttlv_find(r, KMIP_TAG_UNIQUE_IDENTIFIER);
    assert_ptr_equal(uidn->next, at);
    const uint8_t *v;
    size_t vl;
    assert_int_equal(kf_ttlv_get_bytes(KF_TTLV_PATH(r, KMIP_TAG_SYMMETRIC_KEY, KMIP_TAG_KEY_BLOCK,
                                                    KMIP_TAG_KEY_VALUE, KMIP_TAG_KEY_MATERIAL),
                                       &v, &vl),
                     KF_OK);
    assert_int_equal(vl, kl);
    assert_memory_equal(v, key, kl);
    /* Export is 2.x only; unknown objects are not found. */
    assert_int_equal(uid_op_fails(f, 1, KMIP_OP_EXPORT, uid, &m),
                     KMIP_REASON_OPERATION_NOT_SUPPORTED);
    assert_int_equal(uid_op_fails(f, 2, KMIP_OP_EXPORT, "VENDOR/999", &m),
                     KMIP_REASON_ITEM_NOT_FOUND);
}

/* ---- Interop and Log ---- */

static void interop_functions(void **state)
{
    struct fixture *f = *state;
    const char *m;
    for (uint32_t fn = KMIP_INTEROP_FUNCTION_BEGIN; fn <= KMIP_INTEROP_FUNCTION_RESET; fn++) {
        kf_ttlv *p, *msg = request(f, 2, KMIP_OP_INTEROP, &p);
        kf_ttlv_add_enum(f->a, p, KMIP_TAG_INTEROP_FUNCTION, fn);
        kf_ttlv_add_text(f->a, p, KMIP_TAG_INTEROP_IDENTIFIER, "TC-OFFSET-1-21");
        expect_success(f, msg);
    }
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_INTEROP, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_INTEROP_FUNCTION, 9);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_INVALID_FIELD);
    msg = request(f, 2, KMIP_OP_INTEROP, &p);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_MISSING_DATA);
}

struct find_log {
    const char *want;
    bool found;
};

static int look_for_log(void *ctx, const struct kf_audit_record *r)
{
    struct find_log *fl = ctx;
    if (strcmp(r->operation, "Log") == 0 && strcmp(r->detail, fl->want) == 0)
        fl->found = true;
    return KF_OK;
}

static void log_appends_to_the_audit_trail(void **state)
{
    struct fixture *f = *state;
    const char *m;
    const char *text = "client 7 rotated its session keys";
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_LOG, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_LOG_MESSAGE, text);
    expect_success(f, msg);
    struct find_log fl = {.want = text};
    assert_int_equal(kf_kms_audit_list(f->kms, 1, 100000, look_for_log, &fl), KF_OK);
    assert_true(fl.found);
    struct kf_audit_report rep;
    assert_int_equal(kf_kms_audit_verify(f->kms, &rep), KF_OK);

    msg = request(f, 2, KMIP_OP_LOG, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_LOG_MESSAGE, "line one\nforged: line two");
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_INVALID_FIELD);
    char big[600];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    msg = request(f, 2, KMIP_OP_LOG, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_LOG_MESSAGE, big);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_INVALID_FIELD);
    msg = request(f, 2, KMIP_OP_LOG, &p);
    assert_int_equal(expect_failure(f, msg, &m), KMIP_REASON_MISSING_DATA);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(rekey_copies_attributes_and_links_both_keys, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(rekey_with_offset_sets_future_activation, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(rekey_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(rekey_key_pair_makes_a_linked_pair, setup, teardown),
        cmocka_unit_test_setup_teardown(derive_pbkdf2_rfc7914_and_rfc6070, setup, teardown),
        cmocka_unit_test_setup_teardown(derive_hmac_rfc4231_case2, setup, teardown),
        cmocka_unit_test_setup_teardown(derive_hash_fips180_abc, setup, teardown),
        cmocka_unit_test_setup_teardown(derive_sp800_108_counter_cavp, setup, teardown),
        cmocka_unit_test_setup_teardown(derive_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(check_usage_mask_and_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(archive_blocks_use_until_recover, setup, teardown),
        cmocka_unit_test_setup_teardown(export_returns_value_and_attributes, setup, teardown),
        cmocka_unit_test_setup_teardown(interop_functions, setup, teardown),
        cmocka_unit_test_setup_teardown(log_appends_to_the_audit_trail, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
