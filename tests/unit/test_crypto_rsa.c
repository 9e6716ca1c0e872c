/*
 * RSA tests. Known answers come from the RSA Laboratories PKCS #1 v2.1 test
 * vectors (pkcs-1v2-1-vec: oaep-int.txt, pss-vect.txt, pkcs1v15sign-vectors):
 * OAEP (SHA-1) decryption and, with the published seed injected through
 * kf_crypto_set_random, encryption; PSS (SHA-1) verification and, with the
 * published salt injected, signing; PKCS#1 v1.5 signing and verification;
 * and DER import/export against the DER keys printed in oaep-int.txt.
 * Generated 2048-bit keys cover the SHA-2 variants by round trip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

#include "vectors_rsa.h"


/*
 * A random source that replays fixed bytes for the first request of their
 * length (the published seed or salt) and counts otherwise (RSA blinding,
 * which does not change the result). With no bytes it refuses everything.
 */
struct replay {
    const uint8_t *bytes;
    size_t len;
    int used;
    uint8_t counter;
};

static int replay_source(void *ctx, uint8_t *out, size_t len)
{
    struct replay *r = ctx;
    if (!r->bytes)
        return KF_ERR_RNG_SOURCE;
    if (!r->used && len == r->len) {
        memcpy(out, r->bytes, len);
        r->used = 1;
        return KF_OK;
    }
    for (size_t i = 0; i < len; i++)
        out[i] = (uint8_t)(++r->counter * 37 + 11);
    return KF_OK;
}

#define INT(a) {a, sizeof(a)}

static kf_rsa_key *example1_key(void)
{
    const struct kf_rsa_parts parts = {
        .n = INT(ex1_n), .e = INT(ex1_e), .d = INT(ex1_d), .p = INT(ex1_p),
        .q = INT(ex1_q), .dp = INT(ex1_dp), .dq = INT(ex1_dq), .qinv = INT(ex1_qinv),
    };
    kf_rsa_key *k = NULL;
    assert_int_equal(kf_rsa_import_parts(&parts, &k), KF_OK);
    assert_true(kf_rsa_has_private(k));
    assert_int_equal(kf_rsa_modulus_len(k), 128);
    return k;
}

/* ---- OAEP ---- */

static void oaep_int_published_vector(void **state)
{
    (void)state;
    kf_rsa_key *priv = NULL, *pub = NULL;
    assert_int_equal(kf_rsa_import_private(oaep_priv_der, sizeof(oaep_priv_der), &priv), KF_OK);
    assert_int_equal(kf_rsa_import_public(oaep_pub_der, sizeof(oaep_pub_der), &pub), KF_OK);
    assert_false(kf_rsa_has_private(pub));

    uint8_t out[128];
    size_t out_len = 0;
    assert_int_equal(kf_rsa_oaep_decrypt(priv, KF_HASH_SHA1, NULL, 0, oaep_ct, sizeof(oaep_ct),
                                         out, &out_len),
                     KF_OK);
    assert_int_equal(out_len, sizeof(oaep_msg));
    assert_memory_equal(out, oaep_msg, sizeof(oaep_msg));

    /* With the published seed, encryption reproduces the published ciphertext. */
    struct replay seed = {oaep_seed, sizeof(oaep_seed), 0, 0};
    kf_crypto_set_random(replay_source, &seed);
    assert_int_equal(kf_rsa_oaep_encrypt(pub, KF_HASH_SHA1, NULL, 0, oaep_msg, sizeof(oaep_msg),
                                         out),
                     KF_OK);
    kf_crypto_set_random(NULL, NULL);
    assert_memory_equal(out, oaep_ct, sizeof(oaep_ct));
    kf_rsa_free(priv);
    kf_rsa_free(pub);
}

static void oaep_refuses_wrong_label_and_tampering(void **state)
{
    (void)state;
    kf_rsa_key *priv = NULL;
    assert_int_equal(kf_rsa_import_private(oaep_priv_der, sizeof(oaep_priv_der), &priv), KF_OK);
    uint8_t ct[128], out[128];
    size_t out_len = 0;
    const uint8_t label[] = "label";
    memcpy(ct, oaep_ct, sizeof(ct));
    /* The vector has an empty label: any other label is refused. */
    assert_int_equal(kf_rsa_oaep_decrypt(priv, KF_HASH_SHA1, label, 5, ct, 128, out, &out_len),
                     KF_ERR_AUTH);
    /* The wrong hash. */
    assert_int_equal(kf_rsa_oaep_decrypt(priv, KF_HASH_SHA256, NULL, 0, ct, 128, out, &out_len),
                     KF_ERR_AUTH);
    /* A modified ciphertext, a short one, and one >= n. */
    ct[100] ^= 0x01;
    assert_int_equal(kf_rsa_oaep_decrypt(priv, KF_HASH_SHA1, NULL, 0, ct, 128, out, &out_len),
                     KF_ERR_AUTH);
    assert_int_equal(kf_rsa_oaep_decrypt(priv, KF_HASH_SHA1, NULL, 0, oaep_ct, 127, out,
                                         &out_len),
                     KF_ERR_AUTH);
    memset(ct, 0xff, sizeof(ct));
    assert_int_equal(kf_rsa_oaep_decrypt(priv, KF_HASH_SHA1, NULL, 0, ct, 128, out, &out_len),
                     KF_ERR_AUTH);
    /* Labelled round trip, then the label must match. */
    uint8_t msg[16] = "sixteen byte key";
    assert_int_equal(kf_rsa_oaep_encrypt(priv, KF_HASH_SHA1, label, 5, msg, 16, ct), KF_OK);
    assert_int_equal(kf_rsa_oaep_decrypt(priv, KF_HASH_SHA1, label, 5, ct, 128, out, &out_len),
                     KF_OK);
    assert_int_equal(out_len, 16);
    assert_memory_equal(out, msg, 16);
    assert_int_equal(kf_rsa_oaep_decrypt(priv, KF_HASH_SHA1, label, 4, ct, 128, out, &out_len),
                     KF_ERR_AUTH);
    assert_int_equal(kf_rsa_oaep_decrypt(priv, KF_HASH_SHA1, NULL, 0, ct, 128, out, &out_len),
                     KF_ERR_AUTH);
    /* Message too long for the key: k - 2*hLen - 2 = 86 bytes with SHA-1. */
    uint8_t long_msg[87] = {0};
    assert_int_equal(kf_rsa_oaep_encrypt(priv, KF_HASH_SHA1, NULL, 0, long_msg, 87, ct),
                     KF_ERR_LIMIT);
    assert_int_equal(kf_rsa_oaep_encrypt(priv, KF_HASH_SHA1, NULL, 0, long_msg, 86, ct), KF_OK);
    /* SHA-512 needs k >= 130: a 1024-bit key is too small. */
    assert_int_equal(kf_rsa_oaep_encrypt(priv, KF_HASH_SHA512, NULL, 0, msg, 1, ct),
                     KF_ERR_KEY_SIZE);
    kf_rsa_free(priv);
}

/* ---- DER ---- */

static void der_export_reproduces_published_encoding(void **state)
{
    (void)state;
    kf_rsa_key *k = NULL;
    assert_int_equal(kf_rsa_import_private(oaep_priv_der, sizeof(oaep_priv_der), &k), KF_OK);
    uint8_t *der = NULL;
    size_t len = 0;
    assert_int_equal(kf_rsa_export_private(k, &der, &len), KF_OK);
    assert_int_equal(len, sizeof(oaep_priv_der));
    assert_memory_equal(der, oaep_priv_der, len);
    kf_secmem_free(der);
    assert_int_equal(kf_rsa_export_public(k, &der, &len), KF_OK);
    assert_int_equal(len, sizeof(oaep_pub_der));
    assert_memory_equal(der, oaep_pub_der, len);
    free(der);
    kf_rsa_free(k);
}

static void der_import_refuses_malformed(void **state)
{
    (void)state;
    kf_rsa_key *k = (kf_rsa_key *)1;
    uint8_t buf[sizeof(oaep_priv_der) + 1];
    /* Trailing byte. */
    memcpy(buf, oaep_priv_der, sizeof(oaep_priv_der));
    buf[sizeof(oaep_priv_der)] = 0;
    assert_int_equal(kf_rsa_import_private(buf, sizeof(buf), &k), KF_ERR_FORMAT);
    assert_null(k);
    /* Truncated. */
    assert_int_equal(kf_rsa_import_private(oaep_priv_der, sizeof(oaep_priv_der) - 1, &k),
                     KF_ERR_FORMAT);
    /* A public key is not a private key, and the other way round. */
    assert_int_equal(kf_rsa_import_private(oaep_pub_der, sizeof(oaep_pub_der), &k),
                     KF_ERR_FORMAT);
    assert_int_equal(kf_rsa_import_public(oaep_priv_der, sizeof(oaep_priv_der), &k),
                     KF_ERR_FORMAT);
    /* A changed prime: n != p * q. */
    memcpy(buf, oaep_priv_der, sizeof(oaep_priv_der));
    buf[sizeof(oaep_priv_der) - 300] ^= 0x02;
    assert_int_equal(kf_rsa_import_private(buf, sizeof(oaep_priv_der), &k), KF_ERR_FORMAT);
    /* Empty input. */
    assert_int_equal(kf_rsa_import_public(oaep_pub_der, 0, &k), KF_ERR_FORMAT);
    /* Too small a modulus (e = 17, n = 0x00ff..). */
    const uint8_t tiny[] = {0x30, 0x07, 0x02, 0x02, 0x00, 0xff, 0x02, 0x01, 0x11};
    assert_int_equal(kf_rsa_import_public(tiny, sizeof(tiny), &k), KF_ERR_FORMAT);
    /* Parts: an even exponent, and a missing integer. */
    const uint8_t two[1] = {2};
    struct kf_rsa_parts parts = {.n = INT(ex1_n), .e = INT(two)};
    assert_int_equal(kf_rsa_import_parts(&parts, &k), KF_ERR_FORMAT);
    parts.e.data = NULL;
    assert_int_equal(kf_rsa_import_parts(&parts, &k), KF_ERR_FORMAT);
}

/* ---- PSS ---- */

static void pss_published_vectors(void **state)
{
    (void)state;
    kf_rsa_key *k = example1_key();
    uint8_t sig[128];
    assert_int_equal(kf_rsa_pss_verify(k, KF_HASH_SHA1, ex11_msg, sizeof(ex11_msg), ex11_pss_sig,
                                       128),
                     KF_OK);
    assert_int_equal(kf_rsa_pss_verify(k, KF_HASH_SHA1, ex14_msg, sizeof(ex14_msg), ex14_pss_sig,
                                       128),
                     KF_OK);
    /* Signing with the published salt reproduces the published signature. */
    struct replay salt = {ex11_pss_salt, sizeof(ex11_pss_salt), 0, 0};
    kf_crypto_set_random(replay_source, &salt);
    int rc = kf_rsa_pss_sign(k, KF_HASH_SHA1, ex11_msg, sizeof(ex11_msg), sig);
    kf_crypto_set_random(NULL, NULL);
    assert_int_equal(rc, KF_OK);
    assert_memory_equal(sig, ex11_pss_sig, 128);
    salt = (struct replay){ex14_pss_salt, sizeof(ex14_pss_salt), 0, 0};
    kf_crypto_set_random(replay_source, &salt);
    rc = kf_rsa_pss_sign(k, KF_HASH_SHA1, ex14_msg, sizeof(ex14_msg), sig);
    kf_crypto_set_random(NULL, NULL);
    assert_int_equal(rc, KF_OK);
    assert_memory_equal(sig, ex14_pss_sig, 128);

    /* Negative: flipped bit, other message, other hash, wrong length. */
    memcpy(sig, ex11_pss_sig, 128);
    sig[77] ^= 0x10;
    assert_int_equal(kf_rsa_pss_verify(k, KF_HASH_SHA1, ex11_msg, sizeof(ex11_msg), sig, 128),
                     KF_ERR_BAD_SIGNATURE);
    assert_int_equal(kf_rsa_pss_verify(k, KF_HASH_SHA1, ex14_msg, sizeof(ex14_msg), ex11_pss_sig,
                                       128),
                     KF_ERR_BAD_SIGNATURE);
    assert_int_equal(kf_rsa_pss_verify(k, KF_HASH_SHA256, ex11_msg, sizeof(ex11_msg),
                                       ex11_pss_sig, 128),
                     KF_ERR_BAD_SIGNATURE);
    assert_int_equal(kf_rsa_pss_verify(k, KF_HASH_SHA1, ex11_msg, sizeof(ex11_msg), ex11_pss_sig,
                                       127),
                     KF_ERR_BAD_SIGNATURE);
    kf_rsa_free(k);

    /* Example 2.1: a 1025-bit modulus, where emLen is one octet shorter than k. */
    const struct kf_rsa_parts pub2 = {.n = INT(ex2_n), .e = INT(ex_e)};
    kf_rsa_key *k2 = NULL;
    assert_int_equal(kf_rsa_import_parts(&pub2, &k2), KF_OK);
    assert_int_equal(kf_rsa_modulus_len(k2), 129);
    assert_int_equal(kf_rsa_pss_verify(k2, KF_HASH_SHA1, ex21_msg, sizeof(ex21_msg),
                                       ex21_pss_sig, sizeof(ex21_pss_sig)),
                     KF_OK);
    uint8_t sig2[129];
    memcpy(sig2, ex21_pss_sig, sizeof(sig2));
    sig2[128] ^= 0x01;
    assert_int_equal(kf_rsa_pss_verify(k2, KF_HASH_SHA1, ex21_msg, sizeof(ex21_msg), sig2, 129),
                     KF_ERR_BAD_SIGNATURE);
    /* A public key cannot sign. */
    assert_int_equal(kf_rsa_pss_sign(k2, KF_HASH_SHA1, ex21_msg, sizeof(ex21_msg), sig2),
                     KF_ERR_ARG);
    kf_rsa_free(k2);
}

/* ---- PKCS#1 v1.5 ---- */

static void pkcs1_v15_published_vectors(void **state)
{
    (void)state;
    kf_rsa_key *k = example1_key();
    uint8_t sig[128];
    /* Deterministic: signing must give exactly the published signature. */
    assert_int_equal(kf_rsa_pkcs1_sign(k, KF_HASH_SHA1, ex11_msg, sizeof(ex11_msg), sig), KF_OK);
    assert_memory_equal(sig, ex11_v15_sig, 128);
    assert_int_equal(kf_rsa_pkcs1_sign(k, KF_HASH_SHA1, ex14_msg, sizeof(ex14_msg), sig), KF_OK);
    assert_memory_equal(sig, ex14_v15_sig, 128);
    assert_int_equal(kf_rsa_pkcs1_verify(k, KF_HASH_SHA1, ex11_msg, sizeof(ex11_msg),
                                         ex11_v15_sig, 128),
                     KF_OK);
    assert_int_equal(kf_rsa_pkcs1_verify(k, KF_HASH_SHA1, ex14_msg, sizeof(ex14_msg),
                                         ex14_v15_sig, 128),
                     KF_OK);
    memcpy(sig, ex14_v15_sig, 128);
    sig[0] ^= 0x01;
    assert_int_equal(kf_rsa_pkcs1_verify(k, KF_HASH_SHA1, ex14_msg, sizeof(ex14_msg), sig, 128),
                     KF_ERR_BAD_SIGNATURE);
    assert_int_equal(kf_rsa_pkcs1_verify(k, KF_HASH_SHA256, ex14_msg, sizeof(ex14_msg),
                                         ex14_v15_sig, 128),
                     KF_ERR_BAD_SIGNATURE);
    assert_int_equal(kf_rsa_pkcs1_verify(k, KF_HASH_SHA1, ex11_msg, sizeof(ex11_msg),
                                         ex14_v15_sig, 128),
                     KF_ERR_BAD_SIGNATURE);
    assert_int_equal(kf_rsa_pkcs1_verify(k, (enum kf_hash)42, ex11_msg, 1, ex14_v15_sig, 128),
                     KF_ERR_UNSUPPORTED);
    /* A PSS signature is not a PKCS#1 v1.5 signature. */
    assert_int_equal(kf_rsa_pkcs1_verify(k, KF_HASH_SHA1, ex11_msg, sizeof(ex11_msg),
                                         ex11_pss_sig, 128),
                     KF_ERR_BAD_SIGNATURE);
    kf_rsa_free(k);
}

/* ---- generated keys ---- */

static void generated_2048_round_trips(void **state)
{
    (void)state;
    kf_rsa_key *k = NULL;
    assert_int_equal(kf_rsa_generate(2048, &k), KF_OK);
    assert_int_equal(kf_rsa_modulus_len(k), 256);
    const uint8_t msg[] = "key management";
    uint8_t sig[256], sig2[256], ct[256], pt[256];
    size_t pt_len = 0;
    const enum kf_hash hashes[] = {KF_HASH_SHA1, KF_HASH_SHA224, KF_HASH_SHA256, KF_HASH_SHA384,
                                   KF_HASH_SHA512};
    for (size_t i = 0; i < 5; i++) {
        enum kf_hash h = hashes[i];
        assert_int_equal(kf_rsa_pkcs1_sign(k, h, msg, sizeof(msg), sig), KF_OK);
        assert_int_equal(kf_rsa_pkcs1_verify(k, h, msg, sizeof(msg), sig, 256), KF_OK);
        assert_int_equal(kf_rsa_pss_sign(k, h, msg, sizeof(msg), sig), KF_OK);
        assert_int_equal(kf_rsa_pss_verify(k, h, msg, sizeof(msg), sig, 256), KF_OK);
        /* PSS is randomised: a second signature differs and verifies too. */
        assert_int_equal(kf_rsa_pss_sign(k, h, msg, sizeof(msg), sig2), KF_OK);
        assert_memory_not_equal(sig, sig2, 256);
        sig[200] ^= 0x08;
        assert_int_equal(kf_rsa_pss_verify(k, h, msg, sizeof(msg), sig, 256),
                         KF_ERR_BAD_SIGNATURE);
        assert_int_equal(kf_rsa_oaep_encrypt(k, h, msg, 3, msg, sizeof(msg), ct), KF_OK);
        assert_int_equal(kf_rsa_oaep_decrypt(k, h, msg, 3, ct, 256, pt, &pt_len), KF_OK);
        assert_int_equal(pt_len, sizeof(msg));
        assert_memory_equal(pt, msg, sizeof(msg));
        assert_int_equal(kf_rsa_oaep_decrypt(k, h, msg, 2, ct, 256, pt, &pt_len), KF_ERR_AUTH);
    }

    /* DER round trip: the re-imported keys interoperate with the original. */
    uint8_t *priv_der = NULL, *pub_der = NULL;
    size_t priv_len = 0, pub_len = 0;
    assert_int_equal(kf_rsa_export_private(k, &priv_der, &priv_len), KF_OK);
    assert_int_equal(kf_rsa_export_public(k, &pub_der, &pub_len), KF_OK);
    kf_rsa_key *k_priv = NULL, *k_pub = NULL;
    assert_int_equal(kf_rsa_import_private(priv_der, priv_len, &k_priv), KF_OK);
    assert_int_equal(kf_rsa_import_public(pub_der, pub_len, &k_pub), KF_OK);
    assert_int_equal(kf_rsa_pkcs1_sign(k_priv, KF_HASH_SHA256, msg, sizeof(msg), sig), KF_OK);
    assert_int_equal(kf_rsa_pkcs1_sign(k, KF_HASH_SHA256, msg, sizeof(msg), sig2), KF_OK);
    assert_memory_equal(sig, sig2, 256); /* same key, deterministic scheme */
    assert_int_equal(kf_rsa_pkcs1_verify(k_pub, KF_HASH_SHA256, msg, sizeof(msg), sig, 256),
                     KF_OK);
    assert_int_equal(kf_rsa_oaep_encrypt(k_pub, KF_HASH_SHA256, NULL, 0, msg, 5, ct), KF_OK);
    assert_int_equal(kf_rsa_oaep_decrypt(k, KF_HASH_SHA256, NULL, 0, ct, 256, pt, &pt_len),
                     KF_OK);
    assert_int_equal(kf_rsa_export_private(k_pub, &priv_der, &priv_len), KF_ERR_ARG);
    kf_secmem_free(priv_der);
    free(pub_der);
    kf_rsa_free(k_priv);
    kf_rsa_free(k_pub);
    kf_rsa_free(k);
}

static void generation_refuses_bad_sizes_and_broken_random(void **state)
{
    (void)state;
    kf_rsa_key *k = (kf_rsa_key *)1;
    assert_int_equal(kf_rsa_generate(1024, &k), KF_ERR_KEY_SIZE);
    assert_null(k);
    assert_int_equal(kf_rsa_generate(8192, &k), KF_ERR_KEY_SIZE);
    struct replay none = {NULL, 0, 0, 0}; /* refuses every request */
    kf_crypto_set_random(replay_source, &none);
    assert_int_equal(kf_rsa_generate(2048, &k), KF_ERR_RNG_SOURCE);
    assert_null(k);
    kf_crypto_set_random(NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(oaep_int_published_vector),
        cmocka_unit_test(oaep_refuses_wrong_label_and_tampering),
        cmocka_unit_test(der_export_reproduces_published_encoding),
        cmocka_unit_test(der_import_refuses_malformed),
        cmocka_unit_test(pss_published_vectors),
        cmocka_unit_test(pkcs1_v15_published_vectors),
        cmocka_unit_test(generated_2048_round_trips),
        cmocka_unit_test(generation_refuses_bad_sizes_and_broken_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
