/*
 * Known-answer tests for the elliptic-curve primitives: Ed25519 (RFC 8032
 * section 7.1), X25519 (RFC 7748 sections 5.2 and 6.1) and ECDSA P-256 with
 * SHA-256 (RFC 6979 A.2.5, the published signatures of "sample" and "test";
 * ECDSA signing is randomised here, so signing is checked by round trip).
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
#include "test_hex.h"

/* ---- Ed25519 ---- */

#define SHA512_ABC \
    "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"

static const struct {
    const char *name, *sk, *pk, *msg, *sig;
} ed25519_vectors[] = {
    {"TEST 1", "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
    {"TEST 2", "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
    {"TEST 3", "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"},
    {"TEST SHA(abc)", "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf", SHA512_ABC,
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"},
};

static void ed25519_rfc8032(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(ed25519_vectors) / sizeof(ed25519_vectors[0]); i++) {
        size_t msg_len;
        uint8_t *sk = unhex_alloc(ed25519_vectors[i].sk, NULL),
                *pk = unhex_alloc(ed25519_vectors[i].pk, NULL);
        uint8_t *msg = unhex_alloc(ed25519_vectors[i].msg, &msg_len);
        uint8_t *sig = unhex_alloc(ed25519_vectors[i].sig, NULL);
        uint8_t got_pk[32], got_sig[64];
        print_message("Ed25519 %s\n", ed25519_vectors[i].name);
        assert_int_equal(kf_ed25519_public(sk, got_pk), KF_OK);
        assert_memory_equal(got_pk, pk, 32);
        assert_int_equal(kf_ed25519_sign(sk, msg, msg_len, got_sig), KF_OK);
        assert_memory_equal(got_sig, sig, 64);
        assert_int_equal(kf_ed25519_verify(pk, msg, msg_len, sig), KF_OK);
        /* Negative: a flipped bit in R, in S, or in the message. */
        sig[0] ^= 0x01;
        assert_int_equal(kf_ed25519_verify(pk, msg, msg_len, sig), KF_ERR_BAD_SIGNATURE);
        sig[0] ^= 0x01;
        sig[40] ^= 0x20;
        assert_int_equal(kf_ed25519_verify(pk, msg, msg_len, sig), KF_ERR_BAD_SIGNATURE);
        sig[40] ^= 0x20;
        uint8_t other[1] = {0x73};
        assert_int_equal(kf_ed25519_verify(pk, other, 1, sig), KF_ERR_BAD_SIGNATURE);
        free(sk), free(pk), free(msg), free(sig);
    }
}

/* ---- X25519 ---- */

static void x25519_rfc7748_section_5_2(void **state)
{
    (void)state;
    static const struct {
        const char *scalar, *u, *out;
    } v[] = {
        {"a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
         "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
         "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"},
        {"4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
         "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
         "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"},
    };
    for (size_t i = 0; i < 2; i++) {
        uint8_t *k = unhex_alloc(v[i].scalar, NULL), *u = unhex_alloc(v[i].u, NULL);
        uint8_t *want = unhex_alloc(v[i].out, NULL), out[32];
        assert_int_equal(kf_x25519(k, u, out), KF_OK);
        assert_memory_equal(out, want, 32);
        free(k), free(u), free(want);
    }
    /* Iterated form: k = u = 9, then (k, u) <- (X25519(k, u), k), once and 1000 times. */
    uint8_t k[32] = {9}, u[32] = {9}, r[32];
    uint8_t *once =
        unhex_alloc("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079", NULL);
    uint8_t *thousand =
        unhex_alloc("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51", NULL);
    for (int i = 1; i <= 1000; i++) {
        assert_int_equal(kf_x25519(k, u, r), KF_OK);
        memcpy(u, k, 32);
        memcpy(k, r, 32);
        if (i == 1)
            assert_memory_equal(k, once, 32);
    }
    assert_memory_equal(k, thousand, 32);
    free(once), free(thousand);
}

static void x25519_rfc7748_section_6_1(void **state)
{
    (void)state;
    uint8_t *a =
        unhex_alloc("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", NULL);
    uint8_t *a_pub =
        unhex_alloc("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", NULL);
    uint8_t *b =
        unhex_alloc("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb", NULL);
    uint8_t *b_pub =
        unhex_alloc("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f", NULL);
    uint8_t *k =
        unhex_alloc("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742", NULL);
    uint8_t out[32];
    assert_int_equal(kf_x25519_public(a, out), KF_OK);
    assert_memory_equal(out, a_pub, 32);
    assert_int_equal(kf_x25519_public(b, out), KF_OK);
    assert_memory_equal(out, b_pub, 32);
    assert_int_equal(kf_x25519(a, b_pub, out), KF_OK);
    assert_memory_equal(out, k, 32);
    assert_int_equal(kf_x25519(b, a_pub, out), KF_OK);
    assert_memory_equal(out, k, 32);
    /* Low-order peer points (u = 0 and u = 1) give an all-zero secret: refused. */
    uint8_t zero[32] = {0}, one[32] = {1};
    assert_int_equal(kf_x25519(a, zero, out), KF_ERR_CRYPTO);
    assert_true(kf_ct_is_zero(out, 32));
    assert_int_equal(kf_x25519(a, one, out), KF_ERR_CRYPTO);
    free(a), free(a_pub), free(b), free(b_pub), free(k);
}

/* ---- ECDSA P-256 ---- */

#define RFC6979_X "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721"
#define RFC6979_PUB                                                                                \
    "04"                                                                                           \
    "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"                             \
    "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299"

static void p256_rfc6979_signatures_verify(void **state)
{
    (void)state;
    static const struct {
        const char *msg, *sig;
    } v[] = {
        {"sample", "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
                   "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"},
        {"test", "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367"
                 "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083"},
    };
    uint8_t *x = unhex_alloc(RFC6979_X, NULL), *pub = unhex_alloc(RFC6979_PUB, NULL), got_pub[65];
    assert_int_equal(kf_p256_public(x, got_pub), KF_OK);
    assert_memory_equal(got_pub, pub, 65);
    for (size_t i = 0; i < 2; i++) {
        const uint8_t *msg = (const uint8_t *)v[i].msg;
        size_t len = strlen(v[i].msg);
        uint8_t *sig = unhex_alloc(v[i].sig, NULL), digest[32];
        assert_int_equal(kf_p256_verify(pub, msg, len, sig), KF_OK);
        assert_int_equal(kf_sha256(msg, len, digest), KF_OK);
        assert_int_equal(kf_p256_verify_digest(pub, digest, 32, sig), KF_OK);
        /* Negative: one flipped bit in r, in s, or the message. */
        sig[5] ^= 0x04;
        assert_int_equal(kf_p256_verify(pub, msg, len, sig), KF_ERR_BAD_SIGNATURE);
        sig[5] ^= 0x04;
        sig[63] ^= 0x01;
        assert_int_equal(kf_p256_verify(pub, msg, len, sig), KF_ERR_BAD_SIGNATURE);
        sig[63] ^= 0x01;
        assert_int_equal(kf_p256_verify(pub, msg, len - 1, sig), KF_ERR_BAD_SIGNATURE);
        free(sig);
    }
    free(x), free(pub);
}

static void p256_sign_verify_round_trip(void **state)
{
    (void)state;
    uint8_t *x = unhex_alloc(RFC6979_X, NULL), *pub = unhex_alloc(RFC6979_PUB, NULL), sig[64];
    const uint8_t msg[] = "sample";
    assert_int_equal(kf_p256_sign(x, msg, 6, sig), KF_OK);
    assert_int_equal(kf_p256_verify(pub, msg, 6, sig), KF_OK);
    sig[10] ^= 0x80;
    assert_int_equal(kf_p256_verify(pub, msg, 6, sig), KF_ERR_BAD_SIGNATURE);

    uint8_t priv[32], gen_pub[65], derived[65];
    assert_int_equal(kf_p256_generate(priv, gen_pub), KF_OK);
    assert_int_equal(kf_p256_public(priv, derived), KF_OK);
    assert_memory_equal(derived, gen_pub, 65);
    assert_int_equal(kf_p256_sign(priv, msg, 6, sig), KF_OK);
    assert_int_equal(kf_p256_verify(gen_pub, msg, 6, sig), KF_OK);
    assert_int_equal(kf_p256_verify(pub, msg, 6, sig), KF_ERR_BAD_SIGNATURE); /* other key */
    kf_wipe(priv, sizeof(priv));
    free(x), free(pub);
}

static int zero_source(void *ctx, uint8_t *out, size_t len)
{
    (void)ctx, (void)out, (void)len;
    return KF_ERR_RNG_SOURCE;
}

static void p256_refuses_bad_inputs(void **state)
{
    (void)state;
    uint8_t *pub = unhex_alloc(RFC6979_PUB, NULL), sig[64] = {0}, out[65];
    uint8_t *good = unhex_alloc("EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
                                "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8",
                                NULL);
    const uint8_t msg[] = "sample";
    /* r = s = 0 is out of range. */
    assert_int_equal(kf_p256_verify(pub, msg, 6, sig), KF_ERR_BAD_SIGNATURE);
    /* A point off the curve, and a compressed-point prefix. */
    pub[64] ^= 0x01;
    assert_int_equal(kf_p256_verify(pub, msg, 6, good), KF_ERR_FORMAT);
    pub[64] ^= 0x01;
    pub[0] = 0x02;
    assert_int_equal(kf_p256_verify(pub, msg, 6, good), KF_ERR_FORMAT);
    /* Private scalars 0 and >= n are refused. */
    uint8_t zero[32] = {0}, big[32];
    memset(big, 0xff, sizeof(big));
    assert_int_equal(kf_p256_public(zero, out), KF_ERR_KEY_SIZE);
    assert_int_equal(kf_p256_public(big, out), KF_ERR_KEY_SIZE);
    assert_int_equal(kf_p256_sign(big, msg, 6, sig), KF_ERR_KEY_SIZE);
    /* A broken random source refuses to sign (a predictable nonce leaks the key). */
    uint8_t *x = unhex_alloc(RFC6979_X, NULL);
    kf_crypto_set_random(zero_source, NULL);
    assert_int_equal(kf_p256_sign(x, msg, 6, sig), KF_ERR_RNG_SOURCE);
    uint8_t priv[32];
    assert_int_equal(kf_p256_generate(priv, out), KF_ERR_RNG_SOURCE);
    kf_crypto_set_random(NULL, NULL);
    free(pub), free(good), free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ed25519_rfc8032),
        cmocka_unit_test(x25519_rfc7748_section_5_2),
        cmocka_unit_test(x25519_rfc7748_section_6_1),
        cmocka_unit_test(p256_rfc6979_signatures_verify),
        cmocka_unit_test(p256_sign_verify_round_trip),
        cmocka_unit_test(p256_refuses_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
