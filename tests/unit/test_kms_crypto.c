/*
 * KMIP cryptographic operations end to end (request -> kf_kms_handle_kmip ->
 * response), in KMIP 1.4 and 2.1 forms. Known answers from the standards:
 * McGrew-Viega GCM test case 4, SP 800-38A F.2.5 / F.5.1, RFC 3394 4.1,
 * RFC 4231 case 2, RFC 4493 example 2, FIPS 180-2 SHA-256("abc"), RFC 8032
 * TEST 2, RFC 6979 A.2.5 (ECDSA verify), and the RSA Laboratories PKCS #1 v2.1 vectors (pkcs1v15sign
 * Example 1.1, oaep-int.txt). Round trips where the algorithm is randomised
 * (PSS, OAEP encryption, ECDSA); a refusal test for every refusal path.
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

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "keyfleet/ttlv.h"

#include "kms_crypto_fixture.h"

/* A keyed request: Unique Identifier and Cryptographic Parameters; *cp receives the latter. */
static kf_ttlv *keyed(struct fixture *f, int major, uint32_t op, const char *uid, kf_ttlv **p,
                      kf_ttlv **cp)
{
    kf_ttlv *msg = request(f, major, op, p);
    kf_ttlv_add_text(f->a, *p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    *cp = kf_ttlv_struct(f->a, *p, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    return msg;
}

#define GCM_KEY "feffe9928665731c6d6a8f9467308308"
#define GCM_IV "cafebabefacedbaddecaf888"
#define GCM_PT_60 \
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
#define GCM_AD_20 "feedfacedeadbeeffeedfacedeadbeefabaddad2"
#define GCM_CT_60 \
    "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
#define GCM_TAG "5bc94fbc3221a5db94fae95ae7121a47"

/* McGrew & Viega, "The Galois/Counter Mode of Operation", Test Case 4 (AES-128, 60 bytes, AAD),
 * decoded, and its key registered (Encrypt, Decrypt) and activated in protocol major. */
struct gcm_tc4 {
    char uid[KF_UID_MAX];
    uint8_t *key, *iv, *pt, *ad, *ct, *tag;
    size_t klen, ivlen, ptlen, adlen, ctlen, taglen;
};

static void gcm_tc4_setup(struct fixture *f, int major, struct gcm_tc4 *v)
{
    v->key = unhex(f, GCM_KEY, &v->klen);
    v->iv = unhex(f, GCM_IV, &v->ivlen);
    v->pt = unhex(f, GCM_PT_60, &v->ptlen);
    v->ad = unhex(f, GCM_AD_20, &v->adlen);
    v->ct = unhex(f, GCM_CT_60, &v->ctlen);
    v->tag = unhex(f, GCM_TAG, &v->taglen);
    register_key(f, major, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, v->key, v->klen, KMIP_ALG_AES,
                 KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, true, v->uid);
}

/* op (Encrypt or Decrypt) under uid in GCM mode, with Tag Length tag_length (0: none), data,
 * and the IV, additional data and tag where given (NULL: left out), in that order. */
static kf_ttlv *gcm_request(struct fixture *f, int major, uint32_t op, const char *uid,
                            int32_t tag_length, const uint8_t *data, size_t dlen, const uint8_t *iv,
                            size_t ivlen, const uint8_t *ad, size_t adlen, const uint8_t *tag,
                            size_t taglen)
{
    kf_ttlv *p, *cp, *msg = keyed(f, major, op, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_GCM);
    if (tag_length)
        kf_ttlv_add_int(f->a, cp, KMIP_TAG_TAG_LENGTH, tag_length);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, data, dlen);
    if (iv)
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_IV_COUNTER_NONCE, iv, ivlen);
    if (ad)
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, ad, adlen);
    if (tag)
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, tag, taglen);
    return msg;
}

/* Test Case 4: encrypt, decrypt, and a flipped tag bit. */
static void gcm_encrypt_decrypt_known_answer(void **state)
{
    struct fixture *f = *state;
    struct gcm_tc4 v;
    gcm_tc4_setup(f, 2, &v);

    kf_ttlv *msg = gcm_request(f, 2, KMIP_OP_ENCRYPT, v.uid, 0, v.pt, v.ptlen, v.iv, v.ivlen, v.ad,
                               v.adlen, NULL, 0);
    const kf_ttlv *r = expect_success(f, msg);
    assert_bytes(r, KMIP_TAG_DATA, v.ct, v.ctlen);
    assert_bytes(r, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, v.tag, v.taglen);
    assert_null(kf_ttlv_find(r, KMIP_TAG_IV_COUNTER_NONCE)); /* the client chose it */

    msg = gcm_request(f, 2, KMIP_OP_DECRYPT, v.uid, 0, v.ct, v.ctlen, v.iv, v.ivlen, v.ad, v.adlen,
                      v.tag, v.taglen);
    assert_bytes(expect_success(f, msg), KMIP_TAG_DATA, v.pt, v.ptlen);

    /* A tag with one bit changed: Cryptographic Failure, and no plaintext. */
    v.tag[15] ^= 0x80;
    msg = gcm_request(f, 1, KMIP_OP_DECRYPT, v.uid, 0, v.ct, v.ctlen, v.iv, v.ivlen, v.ad, v.adlen,
                      v.tag, v.taglen);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_CRYPTOGRAPHIC_FAILURE);
}

/* Without an IV the server makes a 12-byte one and returns it; it decrypts back. */
static void gcm_server_generated_iv_round_trip(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    size_t klen;
    uint8_t *key = unhex(f, GCM_KEY, &klen);
    static const uint8_t pt[] = "attack at dawn";
    register_key(f, 1, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, key, klen, KMIP_ALG_AES,
                 KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, true, uid);
    kf_ttlv *p, *cp, *msg = keyed(f, 1, KMIP_OP_ENCRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_GCM);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, pt, sizeof(pt));
    const kf_ttlv *r = expect_success(f, msg);
    const uint8_t *iv, *ct, *tag;
    size_t ivlen, ctlen, taglen;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(r, KMIP_TAG_IV_COUNTER_NONCE), &iv, &ivlen), KF_OK);
    assert_int_equal(ivlen, 12);
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(r, KMIP_TAG_DATA), &ct, &ctlen), KF_OK);
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(r, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG), &tag,
                                       &taglen),
                     KF_OK);
    msg = keyed(f, 1, KMIP_OP_DECRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_GCM);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, ct, ctlen);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_IV_COUNTER_NONCE, iv, ivlen);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, tag, taglen);
    assert_bytes(expect_success(f, msg), KMIP_TAG_DATA, pt, sizeof(pt));
    /* Decrypt without the tag: Missing Data. */
    msg = keyed(f, 1, KMIP_OP_DECRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_GCM);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, ct, ctlen);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_IV_COUNTER_NONCE, iv, ivlen);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_MISSING_DATA);
}

#define SP800_38A_PT \
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"

/* One cipher request with a mode, optional padding and IV; returns the response payload. */
static const kf_ttlv *cipher(struct fixture *f, int major, uint32_t op, const char *uid,
                             uint32_t mode, uint32_t pad, const uint8_t *iv, size_t ivlen,
                             const uint8_t *data, size_t len)
{
    kf_ttlv *p, *cp, *msg = keyed(f, major, op, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, mode);
    if (pad)
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, pad);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, data, len);
    if (iv)
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_IV_COUNTER_NONCE, iv, ivlen);
    return expect_success(f, msg);
}

/* NIST SP 800-38A F.2.5 (CBC-AES256) and F.5.1 (CTR-AES128), KMIP 1.4 form. */
static void cbc_and_ctr_sp800_38a(void **state)
{
    struct fixture *f = *state;
    char cbc_uid[KF_UID_MAX], ctr_uid[KF_UID_MAX];
    size_t n, klen, ivlen, ptlen, ctlen;
    uint8_t *k256 = unhex(f, "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", &klen);
    uint8_t *pt = unhex(f, SP800_38A_PT, &ptlen);
    uint8_t *iv = unhex(f, "000102030405060708090a0b0c0d0e0f", &ivlen);
    uint8_t *ct = unhex(f, "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b", &ctlen);
    register_key(f, 1, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, k256, klen, KMIP_ALG_AES,
                 KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, true, cbc_uid);
    assert_bytes(cipher(f, 1, KMIP_OP_ENCRYPT, cbc_uid, KMIP_MODE_CBC, KMIP_PAD_NONE, iv, ivlen, pt,
                        ptlen),
                 KMIP_TAG_DATA, ct, ctlen);
    assert_bytes(cipher(f, 1, KMIP_OP_DECRYPT, cbc_uid, KMIP_MODE_CBC, KMIP_PAD_NONE, iv, ivlen, ct,
                        ctlen),
                 KMIP_TAG_DATA, pt, ptlen);
    /* PKCS#5: 64 bytes of plaintext gain a whole block of 0x10, which F.2.5's first 4 blocks prefix. */
    const uint8_t *padded;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(cipher(f, 1, KMIP_OP_ENCRYPT, cbc_uid,
                                                           KMIP_MODE_CBC, KMIP_PAD_PKCS5, iv, ivlen,
                                                           pt, ptlen),
                                                    KMIP_TAG_DATA),
                                       &padded, &n),
                     KF_OK);
    assert_int_equal(n, 80);
    assert_memory_equal(padded, ct, 64);
    assert_bytes(cipher(f, 1, KMIP_OP_DECRYPT, cbc_uid, KMIP_MODE_CBC, KMIP_PAD_PKCS5, iv, ivlen,
                        padded, n),
                 KMIP_TAG_DATA, pt, ptlen);

    uint8_t *k128 = unhex(f, "2b7e151628aed2a6abf7158809cf4f3c", &klen);
    uint8_t *ctr = unhex(f, "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", &ivlen);
    uint8_t *ctr_ct = unhex(f, "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee", &ctlen);
    register_key(f, 1, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, k128, klen, KMIP_ALG_AES,
                 KMIP_USAGE_ENCRYPT, true, ctr_uid);
    assert_bytes(cipher(f, 1, KMIP_OP_ENCRYPT, ctr_uid, KMIP_MODE_CTR, 0, ctr, ivlen, pt, ptlen),
                 KMIP_TAG_DATA, ctr_ct, ctlen);
    /* That key may encrypt only: Decrypt is refused by its usage mask. */
    kf_ttlv *p, *cp, *msg = keyed(f, 1, KMIP_OP_DECRYPT, ctr_uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_CTR);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, ctr_ct, ctlen);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_IV_COUNTER_NONCE, ctr, ivlen);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_PERMISSION_DENIED);
}

/* RFC 3394 4.1 (128-bit KEK wraps 128-bit key data) as Block Cipher Mode NIST Key Wrap. */
static void nist_key_wrap_rfc3394(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    size_t klen, dlen, wlen;
    uint8_t *kek = unhex(f, "000102030405060708090a0b0c0d0e0f", &klen);
    uint8_t *data = unhex(f, "00112233445566778899aabbccddeeff", &dlen);
    uint8_t *wrapped = unhex(f, "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5", &wlen);
    register_key(f, 2, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, kek, klen, KMIP_ALG_AES,
                 KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, true, uid);
    assert_bytes(cipher(f, 2, KMIP_OP_ENCRYPT, uid, KMIP_MODE_NIST_KEY_WRAP, 0, NULL, 0, data, dlen),
                 KMIP_TAG_DATA, wrapped, wlen);
    assert_bytes(cipher(f, 2, KMIP_OP_DECRYPT, uid, KMIP_MODE_NIST_KEY_WRAP, 0, NULL, 0, wrapped,
                        wlen),
                 KMIP_TAG_DATA, data, dlen);
    wrapped[3] ^= 1;
    kf_ttlv *p, *cp, *msg = keyed(f, 2, KMIP_OP_DECRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_NIST_KEY_WRAP);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, wrapped, wlen);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_CRYPTOGRAPHIC_FAILURE);
    /* OFB is not offered: Feature Not Supported. */
    msg = keyed(f, 2, KMIP_OP_ENCRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_OFB);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, data, dlen);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_FEATURE_NOT_SUPPORTED);
}

/* MAC or MAC Verify; returns the payload. */
static kf_ttlv *mac_request(struct fixture *f, int major, uint32_t op, const char *uid,
                            uint32_t alg, const uint8_t *data, size_t len, const uint8_t *mac,
                            size_t mac_len)
{
    kf_ttlv *p, *cp, *msg = keyed(f, major, op, uid, &p, &cp);
    if (alg)
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, alg);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, data, len);
    if (mac)
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_MAC_DATA, mac, mac_len);
    return msg;
}

static uint32_t validity(const kf_ttlv *payload)
{
    uint32_t v = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(payload, KMIP_TAG_VALIDITY_INDICATOR), &v), KF_OK);
    return v;
}

/* RFC 4231 test case 2 (HMAC-SHA-256, key "Jefe") and RFC 4493 example 2 (AES-CMAC). */
static void hmac_rfc4231_and_cmac_rfc4493(void **state)
{
    struct fixture *f = *state;
    char hmac_uid[KF_UID_MAX], cmac_uid[KF_UID_MAX];
    size_t klen, dlen, mlen;
    uint8_t *key = unhex(f, "4a656665", &klen);
    uint8_t *data = unhex(f, "7768617420646f2079612077616e7420666f72206e6f7468696e673f", &dlen);
    uint8_t *mac = unhex(f, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", &mlen);
    register_key(f, 2, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, key, klen, KMIP_ALG_HMAC_SHA256,
                 KMIP_USAGE_MAC_GENERATE | KMIP_USAGE_MAC_VERIFY, true, hmac_uid);
    assert_bytes(expect_success(f, mac_request(f, 2, KMIP_OP_MAC, hmac_uid, 0, data, dlen, NULL, 0)),
                 KMIP_TAG_MAC_DATA, mac, mlen);
    assert_int_equal(validity(expect_success(f, mac_request(f, 1, KMIP_OP_MAC_VERIFY, hmac_uid, 0,
                                                            data, dlen, mac, mlen))),
                     KMIP_VALIDITY_INDICATOR_VALID);
    mac[31] ^= 1;
    assert_int_equal(validity(expect_success(f, mac_request(f, 2, KMIP_OP_MAC_VERIFY, hmac_uid, 0,
                                                            data, dlen, mac, mlen))),
                     KMIP_VALIDITY_INDICATOR_INVALID);
    /* A truncated MAC is not accepted as valid. */
    mac[31] ^= 1;
    assert_int_equal(validity(expect_success(f, mac_request(f, 2, KMIP_OP_MAC_VERIFY, hmac_uid, 0,
                                                            data, dlen, mac, 16))),
                     KMIP_VALIDITY_INDICATOR_INVALID);

    uint8_t *k128 = unhex(f, "2b7e151628aed2a6abf7158809cf4f3c", &klen);
    uint8_t *m16 = unhex(f, "6bc1bee22e409f96e93d7e117393172a", &dlen);
    uint8_t *cmac = unhex(f, "070a16b46b4d4144f79bdd9dd04a287c", &mlen);
    register_key(f, 1, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, k128, klen, KMIP_ALG_AES,
                 KMIP_USAGE_MAC_GENERATE, true, cmac_uid);
    assert_bytes(expect_success(f, mac_request(f, 1, KMIP_OP_MAC, cmac_uid, KMIP_ALG_AES, m16, dlen,
                                               NULL, 0)),
                 KMIP_TAG_MAC_DATA, cmac, mlen);
    /* An HMAC key asked for CMAC: Feature Not Supported. */
    assert_int_equal(
        expect_failure(
            f, mac_request(f, 2, KMIP_OP_MAC, hmac_uid, KMIP_ALG_AES, m16, dlen, NULL, 0), NULL),
        KMIP_REASON_FEATURE_NOT_SUPPORTED);
    /* No MAC Verify in its usage mask. */
    assert_int_equal(
        expect_failure(f, mac_request(f, 2, KMIP_OP_MAC_VERIFY, cmac_uid, 0, m16, dlen, cmac, mlen),
                       NULL),
        KMIP_REASON_PERMISSION_DENIED);
}

/* FIPS 180-2 B.1 SHA-256("abc"); RNG Retrieve lengths and limits. */
static void hash_and_rng_retrieve(void **state)
{
    struct fixture *f = *state;
    size_t dlen;
    uint8_t *digest = unhex(f, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", &dlen);
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_HASH, &p);
    kf_ttlv *cp = kf_ttlv_struct(f->a, p, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_HASHING_ALGORITHM, KMIP_HASH_SHA_256);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, (const uint8_t *)"abc", 3);
    assert_bytes(expect_success(f, msg), KMIP_TAG_DATA, digest, dlen);
    msg = request(f, 1, KMIP_OP_HASH, &p);
    cp = kf_ttlv_struct(f->a, p, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_HASHING_ALGORITHM, KMIP_HASH_MD5);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, (const uint8_t *)"abc", 3);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_FEATURE_NOT_SUPPORTED);
    msg = request(f, 1, KMIP_OP_HASH, &p);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, (const uint8_t *)"abc", 3);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_MISSING_DATA);

    msg = request(f, 2, KMIP_OP_RNG_RETRIEVE, &p);
    kf_ttlv_add_int(f->a, p, KMIP_TAG_DATA_LENGTH, 48);
    const uint8_t *rnd;
    size_t n;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(expect_success(f, msg), KMIP_TAG_DATA), &rnd, &n),
                     KF_OK);
    assert_int_equal(n, 48);
    assert_false(kf_ct_is_zero(rnd, n));
    msg = request(f, 2, KMIP_OP_RNG_RETRIEVE, &p);
    kf_ttlv_add_int(f->a, p, KMIP_TAG_DATA_LENGTH, 65537);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_INVALID_FIELD);
    msg = request(f, 2, KMIP_OP_RNG_RETRIEVE, &p);
    kf_ttlv_add_int(f->a, p, KMIP_TAG_DATA_LENGTH, 0);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_INVALID_FIELD);
}

/* Sign (sigalg or padding/hash via Cryptographic Parameters); returns the payload. */
static const kf_ttlv *sign(struct fixture *f, int major, const char *uid, uint32_t sigalg,
                           uint32_t pad, uint32_t hash, const uint8_t *data, size_t len)
{
    kf_ttlv *p, *cp, *msg = keyed(f, major, KMIP_OP_SIGN, uid, &p, &cp);
    if (sigalg)
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_DIGITAL_SIGNATURE_ALGORITHM, sigalg);
    if (pad)
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, pad);
    if (hash)
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_HASHING_ALGORITHM, hash);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, data, len);
    return expect_success(f, msg);
}

static uint32_t verify(struct fixture *f, int major, const char *uid, uint32_t sigalg,
                       uint32_t pad, uint32_t hash, const uint8_t *data, size_t len,
                       const uint8_t *sig, size_t sig_len)
{
    kf_ttlv *p, *cp, *msg = keyed(f, major, KMIP_OP_SIGNATURE_VERIFY, uid, &p, &cp);
    if (sigalg)
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_DIGITAL_SIGNATURE_ALGORITHM, sigalg);
    if (pad)
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, pad);
    if (hash)
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_HASHING_ALGORITHM, hash);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, data, len);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_SIGNATURE_DATA, sig, sig_len);
    return validity(expect_success(f, msg));
}

/* RFC 8032 7.1 TEST 2: the registered seed signs 0x72 into the published signature. */
static void ed25519_rfc8032_sign_and_verify(void **state)
{
    struct fixture *f = *state;
    char priv_uid[KF_UID_MAX], pub_uid[KF_UID_MAX];
    size_t sklen, pklen, siglen;
    uint8_t *sk = unhex(f, "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb", &sklen);
    uint8_t *pk = unhex(f, "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", &pklen);
    uint8_t *sig = unhex(f, "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00", &siglen);
    const uint8_t msg[] = {0x72};
    register_key(f, 2, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_RAW, sk, sklen, KMIP_ALG_ED25519,
                 KMIP_USAGE_SIGN, true, priv_uid);
    register_key(f, 2, KMIP_OBJ_PUBLIC_KEY, KMIP_KEYFMT_RAW, pk, pklen, KMIP_ALG_ED25519,
                 KMIP_USAGE_VERIFY, true, pub_uid);
    assert_bytes(sign(f, 2, priv_uid, 0, 0, 0, msg, sizeof(msg)), KMIP_TAG_SIGNATURE_DATA, sig,
                 siglen);
    assert_int_equal(verify(f, 2, pub_uid, 0, 0, 0, msg, sizeof(msg), sig, siglen),
                     KMIP_VALIDITY_INDICATOR_VALID);
    sig[10] ^= 0x04;
    assert_int_equal(verify(f, 1, pub_uid, 0, 0, 0, msg, sizeof(msg), sig, siglen),
                     KMIP_VALIDITY_INDICATOR_INVALID);
    /* The public key cannot sign (its usage mask has Verify only). */
    kf_ttlv *p, *cp, *m = keyed(f, 2, KMIP_OP_SIGN, pub_uid, &p, &cp);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, msg, sizeof(msg));
    assert_int_equal(expect_failure(f, m, NULL), KMIP_REASON_PERMISSION_DENIED);
}

/* PKCS#1 v1.5 Example 1.1 key (pkcs1v15sign-vectors.txt) as PKCS#1 DER, in secure memory. */
static uint8_t *example1_der(size_t *len)
{
    struct kf_rsa_parts parts = {
        .n = {ex1_n, sizeof(ex1_n)},       .e = {ex1_e, sizeof(ex1_e)},
        .d = {ex1_d, sizeof(ex1_d)},       .p = {ex1_p, sizeof(ex1_p)},
        .q = {ex1_q, sizeof(ex1_q)},       .dp = {ex1_dp, sizeof(ex1_dp)},
        .dq = {ex1_dq, sizeof(ex1_dq)},    .qinv = {ex1_qinv, sizeof(ex1_qinv)},
    };
    kf_rsa_key *k;
    uint8_t *der;
    assert_int_equal(kf_rsa_import_parts(&parts, &k), KF_OK);
    assert_int_equal(kf_rsa_export_private(k, &der, len), KF_OK);
    kf_rsa_free(k);
    return der;
}

/* PKCS#1 v1.5 signature Example 1.1 (SHA-1) through KMIP Sign, then Signature Verify. */
static void rsa_pkcs1_v15_published_signature(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    size_t len;
    uint8_t *der = example1_der(&len);
    register_key(f, 1, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_PKCS_1, der, len, KMIP_ALG_RSA,
                 KMIP_USAGE_SIGN | KMIP_USAGE_VERIFY, true, uid);
    kf_secmem_free(der);
    assert_bytes(sign(f, 1, uid, KMIP_SIGALG_SHA_1_WITH_RSA_ENCRYPTION, 0, 0, ex11_msg,
                      sizeof(ex11_msg)),
                 KMIP_TAG_SIGNATURE_DATA, ex11_v15_sig, sizeof(ex11_v15_sig));
    /* The same through Padding Method + Hashing Algorithm. */
    assert_bytes(sign(f, 2, uid, 0, KMIP_PAD_PKCS1_V1_5, KMIP_HASH_SHA_1, ex11_msg,
                      sizeof(ex11_msg)),
                 KMIP_TAG_SIGNATURE_DATA, ex11_v15_sig, sizeof(ex11_v15_sig));
    assert_int_equal(verify(f, 2, uid, KMIP_SIGALG_SHA_1_WITH_RSA_ENCRYPTION, 0, 0, ex11_msg,
                            sizeof(ex11_msg), ex11_v15_sig, sizeof(ex11_v15_sig)),
                     KMIP_VALIDITY_INDICATOR_VALID);
    uint8_t bad[sizeof(ex11_v15_sig)];
    memcpy(bad, ex11_v15_sig, sizeof(bad));
    bad[100] ^= 0x01;
    assert_int_equal(verify(f, 1, uid, KMIP_SIGALG_SHA_1_WITH_RSA_ENCRYPTION, 0, 0, ex11_msg,
                            sizeof(ex11_msg), bad, sizeof(bad)),
                     KMIP_VALIDITY_INDICATOR_INVALID);
    /* Right signature, wrong hash named: Invalid too. */
    assert_int_equal(verify(f, 1, uid, KMIP_SIGALG_SHA_256_WITH_RSA_ENCRYPTION, 0, 0, ex11_msg,
                            sizeof(ex11_msg), ex11_v15_sig, sizeof(ex11_v15_sig)),
                     KMIP_VALIDITY_INDICATOR_INVALID);
    /* DSA is not offered. */
    kf_ttlv *p, *cp, *msg = keyed(f, 2, KMIP_OP_SIGN, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_DIGITAL_SIGNATURE_ALGORITHM, KMIP_SIGALG_DSA_WITH_SHA256);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, ex11_msg, sizeof(ex11_msg));
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_FEATURE_NOT_SUPPORTED);
}

/* oaep-int.txt: the published ciphertext decrypts (SHA-1 OAEP) to the published message. */
static void rsa_oaep_published_decrypt_and_sha256_round_trip(void **state)
{
    struct fixture *f = *state;
    char priv_uid[KF_UID_MAX], pub_uid[KF_UID_MAX];
    register_key(f, 2, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_PKCS_1, oaep_priv_der,
                 sizeof(oaep_priv_der), KMIP_ALG_RSA, KMIP_USAGE_DECRYPT, true, priv_uid);
    register_key(f, 1, KMIP_OBJ_PUBLIC_KEY, KMIP_KEYFMT_PKCS_1, oaep_pub_der, sizeof(oaep_pub_der),
                 KMIP_ALG_RSA, KMIP_USAGE_ENCRYPT, true, pub_uid);
    kf_ttlv *p, *cp, *msg = keyed(f, 2, KMIP_OP_DECRYPT, priv_uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, KMIP_PAD_OAEP);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, oaep_ct, sizeof(oaep_ct));
    assert_bytes(expect_success(f, msg), KMIP_TAG_DATA, oaep_msg, sizeof(oaep_msg));

    msg = keyed(f, 1, KMIP_OP_ENCRYPT, pub_uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, KMIP_PAD_OAEP);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_HASHING_ALGORITHM, KMIP_HASH_SHA_256);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, oaep_msg, sizeof(oaep_msg));
    const uint8_t *ct;
    size_t n;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(expect_success(f, msg), KMIP_TAG_DATA), &ct, &n),
                     KF_OK);
    assert_int_equal(n, 128);
    msg = keyed(f, 2, KMIP_OP_DECRYPT, priv_uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, KMIP_PAD_OAEP);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_HASHING_ALGORITHM, KMIP_HASH_SHA_256);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, ct, n);
    assert_bytes(expect_success(f, msg), KMIP_TAG_DATA, oaep_msg, sizeof(oaep_msg));
    /* Decrypted with the default SHA-1: Cryptographic Failure. */
    msg = keyed(f, 2, KMIP_OP_DECRYPT, priv_uid, &p, &cp);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, ct, n);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_CRYPTOGRAPHIC_FAILURE);
    /* PKCS#1 v1.5 encryption is not offered. */
    msg = keyed(f, 1, KMIP_OP_ENCRYPT, pub_uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, KMIP_PAD_PKCS1_V1_5);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, oaep_msg, sizeof(oaep_msg));
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_FEATURE_NOT_SUPPORTED);
}

/* Create Key Pair; returns the two UIDs. Attributes per half carry algorithm and usage. */
static void create_pair(struct fixture *f, int major, uint32_t alg, int32_t bits, uint32_t curve,
                        uint32_t priv_usage, uint32_t pub_usage, char priv_uid[KF_UID_MAX],
                        char pub_uid[KF_UID_MAX])
{
    kf_ttlv *p, *msg = request(f, major, KMIP_OP_CREATE_KEY_PAIR, &p);
    kf_ttlv *common = attr_group(f, p, major, KMIP_TAG_COMMON_TEMPLATE_ATTRIBUTE,
                                 KMIP_TAG_COMMON_ATTRIBUTES);
    add_attr_enum(f, common, major, "Cryptographic Algorithm", KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, alg);
    if (bits)
        add_attr_int(f, common, major, "Cryptographic Length", KMIP_TAG_CRYPTOGRAPHIC_LENGTH, bits);
    if (curve && major >= 2) {
        kf_ttlv *dp = kf_ttlv_struct(f->a, common, KMIP_TAG_CRYPTOGRAPHIC_DOMAIN_PARAMETERS);
        kf_ttlv_add_enum(f->a, dp, KMIP_TAG_RECOMMENDED_CURVE, curve);
    }
    kf_ttlv *pa = attr_group(f, p, major, KMIP_TAG_PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
                             KMIP_TAG_PRIVATE_KEY_ATTRIBUTES);
    add_attr_int(f, pa, major, "Cryptographic Usage Mask", KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK,
                 (int32_t)priv_usage);
    kf_ttlv *qa = attr_group(f, p, major, KMIP_TAG_PUBLIC_KEY_TEMPLATE_ATTRIBUTE,
                             KMIP_TAG_PUBLIC_KEY_ATTRIBUTES);
    add_attr_int(f, qa, major, "Cryptographic Usage Mask", KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK,
                 (int32_t)pub_usage);
    const kf_ttlv *r = expect_success(f, msg);
    const char *s;
    size_t n;
    assert_int_equal(kf_ttlv_get_text(kf_ttlv_find(r, KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER), &s, &n), KF_OK);
    memcpy(priv_uid, s, n + 1);
    assert_int_equal(kf_ttlv_get_text(kf_ttlv_find(r, KMIP_TAG_PUBLIC_KEY_UNIQUE_IDENTIFIER), &s, &n), KF_OK);
    memcpy(pub_uid, s, n + 1);
    assert_string_not_equal(priv_uid, pub_uid);
}

static const uint8_t message[] = "keyfleet signs this";

/* One 2048-bit pair: PSS and OAEP round trips; the fresh keys are Pre-Active at first. */
static void rsa_pair_pss_and_oaep_round_trips(void **state)
{
    struct fixture *f = *state;
    char priv[KF_UID_MAX], pub[KF_UID_MAX];
    create_pair(f, 2, KMIP_ALG_RSA, 2048, 0, KMIP_USAGE_SIGN | KMIP_USAGE_DECRYPT,
                KMIP_USAGE_VERIFY | KMIP_USAGE_ENCRYPT, priv, pub);
    /* Not yet active: Wrong Key Lifecycle State in 2.x, Permission Denied in 1.x. */
    kf_ttlv *p, *cp, *msg = keyed(f, 2, KMIP_OP_SIGN, priv, &p, &cp);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, message, sizeof(message));
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE);
    msg = keyed(f, 1, KMIP_OP_SIGN, priv, &p, &cp);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, message, sizeof(message));
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_PERMISSION_DENIED);
    uid_op(f, 2, KMIP_OP_ACTIVATE, priv);
    uid_op(f, 2, KMIP_OP_ACTIVATE, pub);

    const uint8_t *sig;
    size_t n;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(sign(f, 2, priv, KMIP_SIGALG_RSASSA_PSS, 0,
                                                         KMIP_HASH_SHA_256, message,
                                                         sizeof(message)),
                                                    KMIP_TAG_SIGNATURE_DATA),
                                       &sig, &n),
                     KF_OK);
    assert_int_equal(n, 256);
    assert_int_equal(verify(f, 2, pub, 0, KMIP_PAD_PSS, KMIP_HASH_SHA_256, message,
                            sizeof(message), sig, n),
                     KMIP_VALIDITY_INDICATOR_VALID);
    /* A PSS signature is not a PKCS#1 v1.5 one. */
    assert_int_equal(verify(f, 2, pub, 0, KMIP_PAD_PKCS1_V1_5, KMIP_HASH_SHA_256, message,
                            sizeof(message), sig, n),
                     KMIP_VALIDITY_INDICATOR_INVALID);
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(sign(f, 1, priv,
                                                         KMIP_SIGALG_SHA_384_WITH_RSA_ENCRYPTION,
                                                         0, 0, message, sizeof(message)),
                                                    KMIP_TAG_SIGNATURE_DATA),
                                       &sig, &n),
                     KF_OK);
    assert_int_equal(verify(f, 1, pub, KMIP_SIGALG_SHA_384_WITH_RSA_ENCRYPTION, 0, 0, message,
                            sizeof(message), sig, n),
                     KMIP_VALIDITY_INDICATOR_VALID);

    msg = keyed(f, 2, KMIP_OP_ENCRYPT, pub, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, KMIP_PAD_OAEP);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, message, sizeof(message));
    const uint8_t *ct;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(expect_success(f, msg), KMIP_TAG_DATA), &ct, &n),
                     KF_OK);
    msg = keyed(f, 2, KMIP_OP_DECRYPT, priv, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, KMIP_PAD_OAEP);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, ct, n);
    assert_bytes(expect_success(f, msg), KMIP_TAG_DATA, message, sizeof(message));
    /* The public key cannot decrypt. */
    msg = keyed(f, 2, KMIP_OP_DECRYPT, pub, &p, &cp);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, ct, n);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_PERMISSION_DENIED);
}

/* ECDSA P-256 (1.4 and 2.1 forms) and Ed25519 pairs: sign, verify, tamper. */
static void ecdsa_and_ed25519_pairs_round_trip(void **state)
{
    struct fixture *f = *state;
    char priv[KF_UID_MAX], pub[KF_UID_MAX];
    const uint8_t *sig;
    size_t n;
    static const struct {
        int major;
        uint32_t alg, curve;
        int32_t bits;
    } cases[] = {
        {1, KMIP_ALG_ECDSA, 0, 256},
        {2, KMIP_ALG_EC, KMIP_CURVE_P_256, 0},
        {2, KMIP_ALG_ED25519, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        create_pair(f, cases[i].major, cases[i].alg, cases[i].bits, cases[i].curve,
                    KMIP_USAGE_SIGN, KMIP_USAGE_VERIFY, priv, pub);
        uid_op(f, 2, KMIP_OP_ACTIVATE, priv);
        uid_op(f, 2, KMIP_OP_ACTIVATE, pub);
        assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(sign(f, cases[i].major, priv, 0, 0, 0,
                                                             message, sizeof(message)),
                                                        KMIP_TAG_SIGNATURE_DATA),
                                           &sig, &n),
                         KF_OK);
        uint8_t copy[128];
        assert_true(n <= sizeof(copy));
        memcpy(copy, sig, n);
        assert_int_equal(verify(f, 2, pub, 0, 0, 0, message, sizeof(message), copy, n),
                         KMIP_VALIDITY_INDICATOR_VALID);
        assert_int_equal(verify(f, 2, pub, 0, 0, 0, message,
                                sizeof(message) - 1, copy, n),
                         KMIP_VALIDITY_INDICATOR_INVALID);
        copy[n - 3] ^= 0x10;
        assert_int_equal(verify(f, 1, pub, 0, 0, 0, message, sizeof(message), copy, n),
                         KMIP_VALIDITY_INDICATOR_INVALID);
    }
    /* P-384 is not offered. */
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_CREATE_KEY_PAIR, &p);
    kf_ttlv *common = kf_ttlv_struct(f->a, p, KMIP_TAG_COMMON_ATTRIBUTES);
    kf_ttlv_add_enum(f->a, common, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_ECDSA);
    kf_ttlv_add_int(f->a, common, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 384);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_FEATURE_NOT_SUPPORTED);
    /* Nor DSA. */
    msg = request(f, 1, KMIP_OP_CREATE_KEY_PAIR, &p);
    common = kf_ttlv_struct(f->a, p, KMIP_TAG_COMMON_TEMPLATE_ATTRIBUTE);
    add_attr_enum(f, common, 1, "Cryptographic Algorithm", 0, KMIP_ALG_DSA);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_FEATURE_NOT_SUPPORTED);
}

/* RFC 6979 A.2.5: the published ECDSA P-256/SHA-256 signature of "sample", as DER and as r||s. */
static void ecdsa_rfc6979_signature_verifies(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    size_t qlen, rslen, dlen;
    uint8_t *q = unhex(f, "0460fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6"
                          "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299", &qlen);
    uint8_t *rs = unhex(f, "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716"
                           "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8", &rslen);
    /* Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }: both have the top bit set, so 33 bytes. */
    uint8_t *der = unhex(f, "3046022100efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716"
                            "022100f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8", &dlen);
    const uint8_t msg[] = {'s', 'a', 'm', 'p', 'l', 'e'};
    register_key(f, 2, KMIP_OBJ_PUBLIC_KEY, KMIP_KEYFMT_RAW, q, qlen, KMIP_ALG_ECDSA,
                 KMIP_USAGE_VERIFY, true, uid);
    assert_int_equal(verify(f, 2, uid, KMIP_SIGALG_ECDSA_WITH_SHA256, 0, 0, msg, sizeof(msg), der,
                            dlen),
                     KMIP_VALIDITY_INDICATOR_VALID);
    assert_int_equal(verify(f, 1, uid, 0, 0, KMIP_HASH_SHA_256, msg, sizeof(msg), rs, rslen),
                     KMIP_VALIDITY_INDICATOR_VALID);
    /* The same signature over SHA-384 of the message, or with s changed: Invalid. */
    assert_int_equal(verify(f, 2, uid, KMIP_SIGALG_ECDSA_WITH_SHA384, 0, 0, msg, sizeof(msg), der,
                            dlen),
                     KMIP_VALIDITY_INDICATOR_INVALID);
    der[dlen - 1] ^= 0x01;
    assert_int_equal(verify(f, 2, uid, 0, 0, 0, msg, sizeof(msg), der, dlen),
                     KMIP_VALIDITY_INDICATOR_INVALID);
    /* Garbage that is neither DER nor 64 bytes: Invalid, not an error. */
    assert_int_equal(verify(f, 2, uid, 0, 0, 0, msg, sizeof(msg), der, 10),
                     KMIP_VALIDITY_INDICATOR_INVALID);
}

/* Refusals common to every keyed operation. */
static void keyed_operation_refusals(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    size_t klen;
    uint8_t *key = unhex(f, GCM_KEY, &klen);
    register_key(f, 2, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, key, klen, KMIP_ALG_AES,
                 KMIP_USAGE_ENCRYPT, false, uid);
    /* Pre-Active key. */
    kf_ttlv *p, *cp, *msg = keyed(f, 2, KMIP_OP_ENCRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_GCM);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, message, sizeof(message));
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE);
    uid_op(f, 2, KMIP_OP_ACTIVATE, uid);
    /* No Data. */
    msg = keyed(f, 2, KMIP_OP_ENCRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_GCM);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_MISSING_DATA);
    /* No Unique Identifier. */
    msg = request(f, 2, KMIP_OP_ENCRYPT, &p);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, message, sizeof(message));
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_MISSING_DATA);
    /* Unknown key. */
    msg = keyed(f, 2, KMIP_OP_ENCRYPT, "VENDOR/999", &p, &cp);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, message, sizeof(message));
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_ITEM_NOT_FOUND);
    /* Parameters may not re-type the key. */
    msg = keyed(f, 2, KMIP_OP_ENCRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_DES3);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_CBC);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, message, sizeof(message));
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_INVALID_FIELD);
    /* Streaming is offered for GCM only. */
    msg = keyed(f, 2, KMIP_OP_ENCRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_CBC);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, message, sizeof(message));
    kf_ttlv_add_bool(f->a, p, KMIP_TAG_INIT_INDICATOR, true);
    kf_ttlv_add_bool(f->a, p, KMIP_TAG_FINAL_INDICATOR, false);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_FEATURE_NOT_SUPPORTED);
    /* A principal without the Use role in this domain. */
    struct kf_principal user = {.name = "cert:CN=other", .roles = KF_ROLE_USE, .ndomains = 1};
    snprintf(user.domains[0], sizeof(user.domains[0]), "USPS");
    msg = keyed(f, 2, KMIP_OP_ENCRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_GCM);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, message, sizeof(message));
    kf_buf req, resp;
    kf_ttlv *r;
    assert_int_equal(kf_buf_alloc(&req, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&resp, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(msg, &req), KF_OK);
    assert_int_equal(kf_kms_handle_kmip(f->kms, &user, req.data, req.len, &resp), KF_OK);
    assert_int_equal(kf_ttlv_decode(resp.data, resp.len, NULL, f->a, &r), KF_OK);
    uint32_t reason = 0;
    assert_int_equal(kf_ttlv_get_enum(KF_TTLV_PATH(r, KMIP_TAG_BATCH_ITEM, KMIP_TAG_RESULT_REASON),
                                      &reason),
                     KF_OK);
    assert_int_equal(reason, KMIP_REASON_PERMISSION_DENIED);
    kf_buf_free(&req);
    kf_buf_free(&resp);
}

/* ---- KMIP 1.4 profile additions: ECB, Triple DES, GCM tag lengths, dates, IV, HMAC ---- */

#define PROFILE_KEY "0123456789abcdef0123456789abcdef"
#define PROFILE_PT "01020304050607080910111213141516"

/* ECB without padding by default (FIPS-197 C.1), PKCS#5 when asked (the CS-BC-M-8 answer). */
static void aes_ecb_fips197_and_pkcs5(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX], puid[KF_UID_MAX];
    size_t klen, plen, clen;
    uint8_t *key = unhex(f, "000102030405060708090a0b0c0d0e0f", &klen);
    uint8_t *pt = unhex(f, "00112233445566778899aabbccddeeff", &plen);
    uint8_t *ct = unhex(f, "69c4e0d86a7b0430d8cdb78070b4c55a", &clen);
    register_key(f, 1, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, key, klen, KMIP_ALG_AES,
                 KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, true, uid);
    assert_bytes(cipher(f, 1, KMIP_OP_ENCRYPT, uid, KMIP_MODE_ECB, 0, NULL, 0, pt, plen),
                 KMIP_TAG_DATA, ct, clen);
    assert_bytes(cipher(f, 1, KMIP_OP_DECRYPT, uid, KMIP_MODE_ECB, 0, NULL, 0, ct, clen),
                 KMIP_TAG_DATA, pt, plen);
    /* PKCS#5: the pad block 16 x 0x10 encrypts on its own (checked against OpenSSL too). */
    uint8_t *pkey = unhex(f, PROFILE_KEY, &klen), *ppt = unhex(f, PROFILE_PT, &plen);
    uint8_t *pct = unhex(f, "d9bcce11b0b437b90239552df3a360c90efb6bfed93b4d1ea2123ba4db075ff6", &clen);
    register_key(f, 1, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, pkey, klen, KMIP_ALG_AES,
                 KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, true, puid);
    assert_bytes(cipher(f, 1, KMIP_OP_ENCRYPT, puid, KMIP_MODE_ECB, KMIP_PAD_PKCS5, NULL, 0, ppt,
                        plen),
                 KMIP_TAG_DATA, pct, clen);
    assert_bytes(cipher(f, 1, KMIP_OP_DECRYPT, puid, KMIP_MODE_ECB, KMIP_PAD_PKCS5, NULL, 0, pct,
                        clen),
                 KMIP_TAG_DATA, ppt, plen);
    /* Refusals: an IV with ECB; a partial block without padding; bad padding on decrypt. */
    kf_ttlv *p, *cp, *msg = keyed(f, 1, KMIP_OP_ENCRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_ECB);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, pt, plen);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_IV_COUNTER_NONCE, pt, plen);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_INVALID_FIELD);
    msg = keyed(f, 1, KMIP_OP_ENCRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_ECB);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, pt, plen - 1);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_INVALID_FIELD);
    msg = keyed(f, 1, KMIP_OP_DECRYPT, puid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_ECB);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, KMIP_PAD_PKCS5);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, pct, 16); /* last byte decrypts to 0x16 > 16 */
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_CRYPTOGRAPHIC_FAILURE);
}

/* A Decrypt in CBC without the IV: Invalid Message (CS-BC-M-11..13). */
static void cbc_decrypt_without_iv_is_invalid_message(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    size_t klen, plen;
    uint8_t *key = unhex(f, PROFILE_KEY, &klen), *pt = unhex(f, PROFILE_PT, &plen);
    register_key(f, 1, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, key, klen, KMIP_ALG_AES,
                 KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, true, uid);
    kf_ttlv *p, *cp, *msg = keyed(f, 1, KMIP_OP_DECRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_CBC);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, pt, plen);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_INVALID_MESSAGE);
}

/* McGrew & Viega Test Case 4 with Tag Length 12: the tag is the first 12 bytes (SP 800-38D). */
static void gcm_truncated_tag_and_bad_tag_length(void **state)
{
    struct fixture *f = *state;
    struct gcm_tc4 v;
    gcm_tc4_setup(f, 1, &v);
    kf_ttlv *msg = gcm_request(f, 1, KMIP_OP_ENCRYPT, v.uid, 12, v.pt, v.ptlen, v.iv, v.ivlen, v.ad,
                               v.adlen, NULL, 0);
    const kf_ttlv *r = expect_success(f, msg);
    assert_bytes(r, KMIP_TAG_DATA, v.ct, v.ctlen);
    assert_bytes(r, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, v.tag, 12);
    /* Decrypt takes the tag's own length when the parameters give none. */
    msg = gcm_request(f, 1, KMIP_OP_DECRYPT, v.uid, 0, v.ct, v.ctlen, v.iv, v.ivlen, v.ad, v.adlen,
                      v.tag, 12);
    assert_bytes(expect_success(f, msg), KMIP_TAG_DATA, v.pt, v.ptlen);
    /* Tag Length 1 and 17: General Failure, as the profiles' reference server answers. */
    int32_t bad[] = {1, 17};
    for (size_t i = 0; i < 2; i++) {
        msg = gcm_request(f, 1, KMIP_OP_ENCRYPT, v.uid, bad[i], v.pt, v.ptlen, v.iv, v.ivlen, NULL,
                          0, NULL, 0);
        assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_GENERAL_FAILURE);
    }
    /* A tag of another length than Tag Length says: Invalid Field. */
    msg = gcm_request(f, 1, KMIP_OP_DECRYPT, v.uid, 16, v.ct, v.ctlen, v.iv, v.ivlen, NULL, 0,
                      v.tag, 12);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_INVALID_FIELD);
}

/* Triple DES: SP 800-67 Rev. 2 example through Encrypt/Decrypt (ECB, no padding). */
static void des3_sp800_67_through_kmip(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    size_t klen, clen;
    uint8_t *key = unhex(f, "0123456789abcdef23456789abcdef01456789abcdef0123", &klen);
    uint8_t *ct = unhex(f, "a826fd8ce53b855fcce21c8112256fe668d5c05dd9b6b900", &clen);
    static const uint8_t pt[] = "The qufck brown fox jump";
    register_key(f, 1, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, key, klen, KMIP_ALG_DES3,
                 KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, true, uid);
    assert_bytes(cipher(f, 1, KMIP_OP_ENCRYPT, uid, KMIP_MODE_ECB, 0, NULL, 0, pt, 24),
                 KMIP_TAG_DATA, ct, clen);
    assert_bytes(cipher(f, 1, KMIP_OP_DECRYPT, uid, KMIP_MODE_ECB, 0, NULL, 0, ct, clen),
                 KMIP_TAG_DATA, pt, 24);
    /* CBC with PKCS#5 round-trips and pads to the 8-byte block. */
    static const uint8_t iv[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const uint8_t *c;
    size_t n;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(cipher(f, 1, KMIP_OP_ENCRYPT, uid,
                                                           KMIP_MODE_CBC, 0, iv, 8, pt, 20),
                                                    KMIP_TAG_DATA),
                                       &c, &n),
                     KF_OK);
    assert_int_equal(n, 24);
    assert_bytes(cipher(f, 1, KMIP_OP_DECRYPT, uid, KMIP_MODE_CBC, 0, iv, 8, c, n), KMIP_TAG_DATA,
                 pt, 20);
    /* GCM is an AES mode only. */
    kf_ttlv *p, *cp, *msg = keyed(f, 1, KMIP_OP_ENCRYPT, uid, &p, &cp);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_GCM);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, pt, 24);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_FEATURE_NOT_SUPPORTED);
}

/* HMAC named by the parameters on an AES key (CS-AC-M-4; checked against Python's hmac). */
static void hmac_named_by_parameters_on_aes_key(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    size_t klen, dlen, mlen;
    uint8_t *key = unhex(f, PROFILE_KEY, &klen), *data = unhex(f, PROFILE_PT, &dlen);
    uint8_t *mac = unhex(f, "c911e78196d64c30f631bb079ea37b97a95936d4da764d6a171df030c895ecf9", &mlen);
    register_key(f, 1, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, key, klen, KMIP_ALG_AES,
                 KMIP_USAGE_MAC_GENERATE | KMIP_USAGE_MAC_VERIFY, true, uid);
    assert_bytes(expect_success(f, mac_request(f, 1, KMIP_OP_MAC, uid, KMIP_ALG_HMAC_SHA256, data,
                                               dlen, NULL, 0)),
                 KMIP_TAG_MAC_DATA, mac, mlen);
    assert_int_equal(validity(expect_success(f, mac_request(f, 1, KMIP_OP_MAC_VERIFY, uid,
                                                            KMIP_ALG_HMAC_SHA256, data, dlen, mac,
                                                            mlen))),
                     KMIP_VALIDITY_INDICATOR_VALID);
    /* An algorithm that is no MAC: Feature Not Supported. */
    assert_int_equal(
        expect_failure(f, mac_request(f, 1, KMIP_OP_MAC, uid, KMIP_ALG_RSA, data, dlen, NULL, 0),
                       NULL),
        KMIP_REASON_FEATURE_NOT_SUPPORTED);
}

/* Protect Stop Date passed: no Encrypt; Process Start Date to come: no Decrypt (CS-BC-M-14). */
static void process_and_protect_dates_refuse(void **state)
{
    struct fixture *f = *state;
    size_t klen, plen;
    uint8_t *key = unhex(f, PROFILE_KEY, &klen), *pt = unhex(f, PROFILE_PT, &plen);
    int64_t now = (int64_t)time(NULL);
    struct {
        uint32_t tag;
        const char *name;
        int64_t when;
        uint32_t op;
    } cases[] = {
        {KMIP_TAG_PROTECT_STOP_DATE, "Protect Stop Date", now - 3600, KMIP_OP_ENCRYPT},
        {KMIP_TAG_PROCESS_START_DATE, "Process Start Date", now + 3600, KMIP_OP_DECRYPT},
    };
    for (size_t i = 0; i < 2; i++) {
        kf_ttlv *p, *msg = request(f, 1, KMIP_OP_REGISTER, &p);
        kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
        kf_ttlv *g = kf_ttlv_struct(f->a, p, KMIP_TAG_TEMPLATE_ATTRIBUTE);
        add_attr_int(f, g, 1, "Cryptographic Usage Mask", KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK,
                     (int32_t)(KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT));
        kf_ttlv *at = kf_ttlv_struct(f->a, g, KMIP_TAG_ATTRIBUTE);
        kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_NAME, cases[i].name);
        kf_ttlv_add_datetime(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE, cases[i].when);
        kf_ttlv *kb = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_SYMMETRIC_KEY),
                                     KMIP_TAG_KEY_BLOCK);
        kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_RAW);
        kf_ttlv_add_bytes(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL,
                          key, klen);
        kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
        kf_ttlv_add_int(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 128);
        const char *s;
        size_t n;
        assert_int_equal(kf_ttlv_get_text(kf_ttlv_find(expect_success(f, msg),
                                                       KMIP_TAG_UNIQUE_IDENTIFIER),
                                          &s, &n),
                         KF_OK);
        char uid[KF_UID_MAX];
        assert_true(n < sizeof(uid));
        memcpy(uid, s, n + 1);
        uid_op(f, 1, KMIP_OP_ACTIVATE, uid);
        kf_ttlv *cp;
        msg = keyed(f, 1, cases[i].op, uid, &p, &cp);
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_ECB);
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, pt, plen);
        assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_PERMISSION_DENIED);
        /* The other direction is still allowed. */
        assert_non_null(cipher(f, 1, cases[i].op == KMIP_OP_ENCRYPT ? KMIP_OP_DECRYPT
                                                                    : KMIP_OP_ENCRYPT,
                               uid, KMIP_MODE_ECB, 0, NULL, 0, pt, plen));
    }
}

/* One part of a streamed GCM Encrypt (Tag Length 16); corr NULL starts the stream. */
static kf_ttlv *stream_part_p(struct fixture *f, const char *uid, uint32_t op,
                              const uint8_t *data, size_t len, const uint8_t *corr,
                              size_t corr_len, bool init, bool final, kf_ttlv **payload)
{
    kf_ttlv *p, *cp, *msg = keyed(f, 1, op, uid, &p, &cp);
    *payload = p;
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_GCM);
    kf_ttlv_add_int(f->a, cp, KMIP_TAG_TAG_LENGTH, 16);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, data, len);
    if (corr)
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_CORRELATION_VALUE, corr, corr_len);
    if (init)
        kf_ttlv_add_bool(f->a, p, KMIP_TAG_INIT_INDICATOR, true);
    if (final)
        kf_ttlv_add_bool(f->a, p, KMIP_TAG_FINAL_INDICATOR, true);
    return msg;
}

static kf_ttlv *stream_part(struct fixture *f, const char *uid, uint32_t op, const uint8_t *data,
                            size_t len, const uint8_t *corr, size_t corr_len, bool init, bool final)
{
    kf_ttlv *p;
    return stream_part_p(f, uid, op, data, len, corr, corr_len, init, final, &p);
}

/*
 * McGrew & Viega Test Case 5 (64-bit IV) encrypted in two parts, as
 * CS-BC-M-GCM-3 does: 32 bytes with Init Indicator, then 28 with Final.
 */
static void gcm_streamed_encrypt_test_case_5(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    size_t klen, ivlen, ptlen, adlen, ctlen, taglen;
    uint8_t *key = unhex(f, GCM_KEY, &klen), *iv = unhex(f, "cafebabefacedbad", &ivlen);
    uint8_t *pt = unhex(f, GCM_PT_60, &ptlen), *ad = unhex(f, GCM_AD_20, &adlen);
    uint8_t *ct = unhex(f, "61353b4c2806934a777ff51fa22a4755699b2a714fcdc6f83766e5f97b6c742373806900e49f24b22b097544d4896b424989b5e1ebac0f07c23f4598", &ctlen);
    uint8_t *tag = unhex(f, "3612d2e79e3b0785561be14aaca2fccb", &taglen);
    register_key(f, 1, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, key, klen, KMIP_ALG_AES,
                 KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT, true, uid);
    kf_ttlv *p, *msg = stream_part_p(f, uid, KMIP_OP_ENCRYPT, pt, 32, NULL, 0, true, false, &p);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_IV_COUNTER_NONCE, iv, ivlen);
    kf_ttlv_add_bytes(f->a, p, KMIP_TAG_AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, ad, adlen);
    const kf_ttlv *r = expect_success(f, msg);
    assert_bytes(r, KMIP_TAG_DATA, ct, 32);
    assert_null(kf_ttlv_find(r, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG));
    const uint8_t *corr;
    size_t corr_len;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(r, KMIP_TAG_CORRELATION_VALUE), &corr,
                                       &corr_len),
                     KF_OK);
    uint8_t saved[64];
    assert_true(corr_len <= sizeof(saved));
    memcpy(saved, corr, corr_len);
    r = expect_success(f, stream_part(f, uid, KMIP_OP_ENCRYPT, pt + 32, ptlen - 32, saved,
                                      corr_len, false, true));
    assert_bytes(r, KMIP_TAG_DATA, ct + 32, ctlen - 32);
    assert_bytes(r, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, tag, taglen);
    assert_null(kf_ttlv_find(r, KMIP_TAG_CORRELATION_VALUE));
    /* The stream is over: its Correlation Value no longer works (Invalid Message). */
    assert_int_equal(
        expect_failure(
            f, stream_part(f, uid, KMIP_OP_ENCRYPT, pt, 16, saved, corr_len, false, true), NULL),
        KMIP_REASON_INVALID_MESSAGE);
    /* A part before the last that is not whole blocks: Invalid Field. */
    assert_int_equal(
        expect_failure(f, stream_part(f, uid, KMIP_OP_ENCRYPT, pt, 20, NULL, 0, true, false), NULL),
        KMIP_REASON_INVALID_FIELD);
    /* A streamed Decrypt would release unauthenticated plaintext: not offered. */
    assert_int_equal(
        expect_failure(f, stream_part(f, uid, KMIP_OP_DECRYPT, ct, 32, NULL, 0, true, false), NULL),
        KMIP_REASON_FEATURE_NOT_SUPPORTED);
    /* Init Indicator with a Correlation Value: Invalid Message. */
    assert_int_equal(
        expect_failure(
            f, stream_part(f, uid, KMIP_OP_ENCRYPT, pt, 16, saved, corr_len, true, false), NULL),
        KMIP_REASON_INVALID_MESSAGE);
    /* Another key cannot continue this key's stream. */
    char other[KF_UID_MAX];
    register_key(f, 1, KMIP_OBJ_SYMMETRIC_KEY, KMIP_KEYFMT_RAW, key, klen, KMIP_ALG_AES,
                 KMIP_USAGE_ENCRYPT, true, other);
    r = expect_success(f, stream_part(f, uid, KMIP_OP_ENCRYPT, pt, 16, NULL, 0, true, false));
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(r, KMIP_TAG_CORRELATION_VALUE), &corr,
                                       &corr_len),
                     KF_OK);
    memcpy(saved, corr, corr_len);
    assert_int_equal(
        expect_failure(
            f, stream_part(f, other, KMIP_OP_ENCRYPT, pt, 16, saved, corr_len, false, true), NULL),
        KMIP_REASON_INVALID_MESSAGE);
    expect_success(f, stream_part(f, uid, KMIP_OP_ENCRYPT, pt, 16, saved, corr_len, false, true));
}

int main(void)
{
    kf_log_open(NULL, KF_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(gcm_encrypt_decrypt_known_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(gcm_server_generated_iv_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(cbc_and_ctr_sp800_38a, setup, teardown),
        cmocka_unit_test_setup_teardown(nist_key_wrap_rfc3394, setup, teardown),
        cmocka_unit_test_setup_teardown(hmac_rfc4231_and_cmac_rfc4493, setup, teardown),
        cmocka_unit_test_setup_teardown(hash_and_rng_retrieve, setup, teardown),
        cmocka_unit_test_setup_teardown(ed25519_rfc8032_sign_and_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(rsa_pkcs1_v15_published_signature, setup, teardown),
        cmocka_unit_test_setup_teardown(rsa_oaep_published_decrypt_and_sha256_round_trip, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(rsa_pair_pss_and_oaep_round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(ecdsa_and_ed25519_pairs_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(ecdsa_rfc6979_signature_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(keyed_operation_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(aes_ecb_fips197_and_pkcs5, setup, teardown),
        cmocka_unit_test_setup_teardown(cbc_decrypt_without_iv_is_invalid_message, setup, teardown),
        cmocka_unit_test_setup_teardown(gcm_truncated_tag_and_bad_tag_length, setup, teardown),
        cmocka_unit_test_setup_teardown(des3_sp800_67_through_kmip, setup, teardown),
        cmocka_unit_test_setup_teardown(hmac_named_by_parameters_on_aes_key, setup, teardown),
        cmocka_unit_test_setup_teardown(process_and_protect_dates_refuse, setup, teardown),
        cmocka_unit_test_setup_teardown(gcm_streamed_encrypt_test_case_5, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
