/*
 * Keys sealed to a role (X25519 + HKDF-SHA256 + AES-256-GCM) and under a
 * Brass archive key (AES-256-GCM), docs/manufacturing.md "Cryptography".
 *
 * The known-answer tests fix the random source, seal, and recompute the
 * expected bytes here by composing the primitives as the document describes.
 * The ephemeral and recipient keys are the X25519 key pairs of RFC 7748
 * section 6.1, so the shared secret is the RFC's published one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "keyfleet/crypto.h"
#include "keyfleet/error.h"
#include "keyfleet/mfg.h"

#define DOMAIN "VENDOR"
#define KEY_ID 0x0102030405060708ull
#define STEEL_ID "S00000042"
#define BRASS_ID "B00000003"

/* RFC 7748 section 6.1 */
static const uint8_t alice_priv[32] = {
    0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2, 0x66, 0x45,
    0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a};
static const uint8_t alice_pub[32] = {
    0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e, 0xf7, 0x5a,
    0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e, 0xaa, 0x9b, 0x4e, 0x6a};
static const uint8_t bob_priv[32] = {
    0x5d, 0xab, 0x08, 0x7e, 0x62, 0x4a, 0x8a, 0x4b, 0x79, 0xe1, 0x7f, 0x8b, 0x83, 0x80, 0x0e, 0xe6,
    0x6f, 0x3b, 0xb1, 0x29, 0x26, 0x18, 0xb6, 0xfd, 0x1c, 0x2f, 0x8b, 0x27, 0xff, 0x88, 0xe0, 0xeb};
static const uint8_t bob_pub[32] = {
    0xde, 0x9e, 0xdb, 0x7d, 0x7b, 0x7d, 0xc1, 0xb4, 0xd3, 0x5b, 0x61, 0xc2, 0xec, 0xe4, 0x35, 0x37,
    0x3f, 0x83, 0x43, 0xc8, 0x5b, 0x78, 0x67, 0x4d, 0xad, 0xfc, 0x7e, 0x14, 0x6f, 0x88, 0x2b, 0x4f};
static const uint8_t rfc_shared[32] = {
    0x4a, 0x5d, 0x9d, 0x5b, 0xa4, 0xce, 0x2d, 0xe1, 0x72, 0x8e, 0x3b, 0xf4, 0x80, 0x35, 0x0f, 0x25,
    0xe0, 0x7e, 0x21, 0xc9, 0x47, 0xd1, 0x9e, 0x33, 0x76, 0xf0, 0x9b, 0x3c, 0x1e, 0x16, 0x17, 0x42};

static void the_key(uint8_t k[KF_MFG_KEY_LEN])
{
    for (int i = 0; i < KF_MFG_KEY_LEN; i++)
        k[i] = (uint8_t)(0xC0 + i);
}

/* A random source that hands out fixed bytes, in order; counts the bytes asked for. */
struct fixed_random {
    const uint8_t *p;
    size_t len, used;
    int fail;
};

static int fixed_random(void *ctx, uint8_t *out, size_t len)
{
    struct fixed_random *f = ctx;
    if (f->fail)
        return f->fail;
    if (len > f->len - f->used)
        return KF_ERR_INTERNAL;
    memcpy(out, f->p + f->used, len);
    f->used += len;
    return KF_OK;
}

static int restore_random(void **state)
{
    (void)state;
    kf_crypto_set_random(NULL, NULL);
    return 0;
}

/* context = domain || 0x00 || [key id]_64 || recipient ID, per the document */
static size_t context(const char *domain, uint64_t key_id, const char *recipient, uint8_t *out)
{
    size_t n = 0, d = strlen(domain);
    memcpy(out, domain, d);
    n += d;
    out[n++] = 0;
    for (int i = 7; i >= 0; i--)
        out[n++] = (uint8_t)(key_id >> (8 * i));
    memcpy(out + n, recipient, 9);
    return n + 9;
}

static void seal_known_answer(void **state)
{
    (void)state;
    uint8_t key[32], sealed[KF_MFG_SEALED_LEN], opened[32];
    the_key(key);
    struct fixed_random fr = {alice_priv, 32, 0, 0};
    kf_crypto_set_random(fixed_random, &fr);
    assert_int_equal(kf_mfg_seal_key(bob_pub, DOMAIN, KEY_ID, STEEL_ID, key, sealed), KF_OK);
    kf_crypto_set_random(NULL, NULL);
    assert_int_equal(fr.used, 32); /* one ephemeral key, nothing else drawn */

    /* the ephemeral public key is Alice's (RFC 7748), the shared secret the RFC's */
    assert_memory_equal(sealed, alice_pub, 32);
    uint8_t shared[32];
    assert_int_equal(kf_x25519(alice_priv, bob_pub, shared), KF_OK);
    assert_memory_equal(shared, rfc_shared, 32);

    uint8_t ctx[128], info[160], salt[64], okm[44], want[KF_MFG_SEALED_LEN];
    size_t ctx_len = context(DOMAIN, KEY_ID, STEEL_ID, ctx);
    assert_int_equal(ctx_len, 6 + 1 + 8 + 9);
    memcpy(info, "keyfleet-mfg-seal-v1", 20);
    info[20] = 0;
    memcpy(info + 21, ctx, ctx_len);
    memcpy(salt, alice_pub, 32);
    memcpy(salt + 32, bob_pub, 32);
    assert_int_equal(kf_hkdf_sha256(salt, 64, rfc_shared, 32, info, 21 + ctx_len, okm, 44), KF_OK);
    memcpy(want, alice_pub, 32);
    assert_int_equal(
        kf_aes_gcm_seal(okm, 32, okm + 32, 12, ctx, ctx_len, key, 32, want + 32, want + 64), KF_OK);
    assert_memory_equal(sealed, want, sizeof(want));

    /* Bob opens it */
    assert_int_equal(kf_mfg_open_key(bob_priv, DOMAIN, KEY_ID, STEEL_ID, sealed, opened), KF_OK);
    assert_memory_equal(opened, key, 32);
}

static void archive_known_answer(void **state)
{
    (void)state;
    static const uint8_t nonce[12] = {0xca, 0xfe, 0xba, 0xbe, 0xfa, 0xce,
                                      0xdb, 0xad, 0xde, 0xca, 0xf8, 0x88};
    uint8_t archive_key[32], key[32], sealed[KF_MFG_ARCHIVE_LEN], opened[32];
    for (int i = 0; i < 32; i++)
        archive_key[i] = (uint8_t)(0x50 + i);
    the_key(key);
    struct fixed_random fr = {nonce, 12, 0, 0};
    kf_crypto_set_random(fixed_random, &fr);
    assert_int_equal(kf_mfg_archive_seal(archive_key, DOMAIN, KEY_ID, BRASS_ID, key, sealed),
                     KF_OK);
    kf_crypto_set_random(NULL, NULL);
    assert_int_equal(fr.used, 12);

    uint8_t ctx[128], want[KF_MFG_ARCHIVE_LEN];
    size_t ctx_len = context(DOMAIN, KEY_ID, BRASS_ID, ctx);
    memcpy(want, nonce, 12);
    assert_int_equal(
        kf_aes_gcm_seal(archive_key, 32, nonce, 12, ctx, ctx_len, key, 32, want + 12, want + 44),
        KF_OK);
    assert_memory_equal(sealed, want, sizeof(want));
    assert_int_equal(kf_mfg_archive_open(archive_key, DOMAIN, KEY_ID, BRASS_ID, sealed, opened),
                     KF_OK);
    assert_memory_equal(opened, key, 32);
}

/* Each run draws a fresh ephemeral key (or nonce): two seals of one key differ. */
static void seals_are_randomised(void **state)
{
    (void)state;
    uint8_t key[32], a[KF_MFG_SEALED_LEN], b[KF_MFG_SEALED_LEN], k[32];
    uint8_t x[KF_MFG_ARCHIVE_LEN], y[KF_MFG_ARCHIVE_LEN];
    the_key(key);
    assert_int_equal(kf_mfg_seal_key(bob_pub, DOMAIN, 1, STEEL_ID, key, a), KF_OK);
    assert_int_equal(kf_mfg_seal_key(bob_pub, DOMAIN, 1, STEEL_ID, key, b), KF_OK);
    assert_memory_not_equal(a, b, 32);
    assert_int_equal(kf_mfg_open_key(bob_priv, DOMAIN, 1, STEEL_ID, a, k), KF_OK);
    assert_memory_equal(k, key, 32);
    assert_int_equal(kf_mfg_open_key(bob_priv, DOMAIN, 1, STEEL_ID, b, k), KF_OK);
    assert_memory_equal(k, key, 32);
    assert_int_equal(kf_mfg_archive_seal(alice_priv, DOMAIN, 1, BRASS_ID, key, x), KF_OK);
    assert_int_equal(kf_mfg_archive_seal(alice_priv, DOMAIN, 1, BRASS_ID, key, y), KF_OK);
    assert_memory_not_equal(x, y, 12);
    /* a token key's context domain "<domain>/<period>" is a context like any other */
    assert_int_equal(kf_mfg_seal_key(bob_pub, "VENDOR/202611", 9, "T00000007", key, a), KF_OK);
    assert_int_equal(kf_mfg_open_key(bob_priv, "VENDOR/202611", 9, "T00000007", a, k), KF_OK);
    assert_memory_equal(k, key, 32);
    assert_int_equal(kf_mfg_open_key(bob_priv, "VENDOR/202612", 9, "T00000007", a, k), KF_ERR_AUTH);
}

/* A failed open leaves the output zeroed, whatever was there. */
static void assert_open_refused(int rc, const uint8_t k[32])
{
    static const uint8_t zero[32];
    assert_int_equal(rc, KF_ERR_AUTH);
    assert_memory_equal(k, zero, 32);
}

static void open_refuses_another_context_or_key(void **state)
{
    (void)state;
    uint8_t key[32], sealed[KF_MFG_SEALED_LEN], k[32];
    the_key(key);
    assert_int_equal(kf_mfg_seal_key(bob_pub, DOMAIN, KEY_ID, STEEL_ID, key, sealed), KF_OK);
#define OPEN(priv, dom, id, rcpt)                                                                  \
    (memset(k, 0xAA, 32), kf_mfg_open_key(priv, dom, id, rcpt, sealed, k))
    assert_int_equal(OPEN(bob_priv, DOMAIN, KEY_ID, STEEL_ID), KF_OK);
    assert_open_refused(OPEN(bob_priv, "DE", KEY_ID, STEEL_ID), k);
    assert_open_refused(OPEN(bob_priv, "VENDO", KEY_ID, STEEL_ID), k);
    assert_open_refused(OPEN(bob_priv, "VENDORS", KEY_ID, STEEL_ID), k);
    assert_open_refused(OPEN(bob_priv, DOMAIN, KEY_ID + 1, STEEL_ID), k);
    assert_open_refused(OPEN(bob_priv, DOMAIN, KEY_ID ^ (1ull << 63), STEEL_ID), k);
    assert_open_refused(OPEN(bob_priv, DOMAIN, KEY_ID, "S00000043"), k);
    assert_open_refused(OPEN(bob_priv, DOMAIN, KEY_ID, "T00000042"), k);
    assert_open_refused(OPEN(alice_priv, DOMAIN, KEY_ID, STEEL_ID), k);
    /* malformed context arguments are refusals too, not another error */
    assert_open_refused(OPEN(bob_priv, "", KEY_ID, STEEL_ID), k);
    assert_open_refused(OPEN(bob_priv, DOMAIN, KEY_ID, "S0000004"), k);
    assert_open_refused(OPEN(bob_priv, NULL, KEY_ID, STEEL_ID), k);
    assert_open_refused(OPEN(bob_priv, DOMAIN, KEY_ID, NULL), k);
#undef OPEN
    /* every byte changed, one bit or all of them */
    for (size_t i = 0; i < sizeof(sealed); i++) {
        for (int m = 0; m < 2; m++) {
            sealed[i] ^= m ? 0xFF : 0x01;
            memset(k, 0xAA, 32);
            assert_open_refused(kf_mfg_open_key(bob_priv, DOMAIN, KEY_ID, STEEL_ID, sealed, k), k);
            sealed[i] ^= m ? 0xFF : 0x01;
        }
    }
    /* a low-order ephemeral point (all zeros) gives no shared secret */
    uint8_t low[KF_MFG_SEALED_LEN];
    memcpy(low, sealed, sizeof(low));
    memset(low, 0, 32);
    memset(k, 0xAA, 32);
    assert_open_refused(kf_mfg_open_key(bob_priv, DOMAIN, KEY_ID, STEEL_ID, low, k), k);
    assert_int_equal(kf_mfg_open_key(bob_priv, DOMAIN, KEY_ID, STEEL_ID, sealed, k), KF_OK);
    assert_memory_equal(k, key, 32);
}

static void archive_open_refuses_another_context_or_key(void **state)
{
    (void)state;
    uint8_t akey[32], other[32], key[32], sealed[KF_MFG_ARCHIVE_LEN], k[32];
    memset(akey, 0x11, 32);
    memset(other, 0x12, 32);
    the_key(key);
    assert_int_equal(kf_mfg_archive_seal(akey, DOMAIN, KEY_ID, BRASS_ID, key, sealed), KF_OK);
#define AOPEN(ak, dom, id, rcpt)                                                                   \
    (memset(k, 0xAA, 32), kf_mfg_archive_open(ak, dom, id, rcpt, sealed, k))
    assert_int_equal(AOPEN(akey, DOMAIN, KEY_ID, BRASS_ID), KF_OK);
    assert_memory_equal(k, key, 32);
    assert_open_refused(AOPEN(other, DOMAIN, KEY_ID, BRASS_ID), k);
    assert_open_refused(AOPEN(akey, "earth", KEY_ID, BRASS_ID), k);
    assert_open_refused(AOPEN(akey, DOMAIN, KEY_ID - 1, BRASS_ID), k);
    assert_open_refused(AOPEN(akey, DOMAIN, KEY_ID, "B00000004"), k);
    assert_open_refused(AOPEN(akey, DOMAIN, KEY_ID, "x"), k);
#undef AOPEN
    for (size_t i = 0; i < sizeof(sealed); i++) {
        for (int m = 0; m < 2; m++) {
            sealed[i] ^= m ? 0xFF : 0x01;
            memset(k, 0xAA, 32);
            assert_open_refused(kf_mfg_archive_open(akey, DOMAIN, KEY_ID, BRASS_ID, sealed, k), k);
            sealed[i] ^= m ? 0xFF : 0x01;
        }
    }
}

static void seal_refuses_bad_arguments(void **state)
{
    (void)state;
    uint8_t key[32], out[KF_MFG_SEALED_LEN], aout[KF_MFG_ARCHIVE_LEN], zero_pub[32] = {0};
    uint8_t before[KF_MFG_SEALED_LEN];
    the_key(key);
    memset(out, 0x77, sizeof(out));
    memcpy(before, out, sizeof(out));
    /* a low-order recipient key would make the shared secret public */
    assert_int_equal(kf_mfg_seal_key(zero_pub, DOMAIN, 1, STEEL_ID, key, out), KF_ERR_CRYPTO);
    assert_int_equal(kf_mfg_seal_key(bob_pub, "", 1, STEEL_ID, key, out), KF_ERR_ARG);
    assert_int_equal(kf_mfg_seal_key(bob_pub, NULL, 1, STEEL_ID, key, out), KF_ERR_ARG);
    assert_int_equal(kf_mfg_seal_key(bob_pub, DOMAIN, 1, "S0000004", key, out), KF_ERR_ARG);
    assert_int_equal(kf_mfg_seal_key(bob_pub, DOMAIN, 1, NULL, key, out), KF_ERR_ARG);
    assert_int_equal(kf_mfg_seal_key(NULL, DOMAIN, 1, STEEL_ID, key, out), KF_ERR_ARG);
    char long_domain[200];
    memset(long_domain, 'A', sizeof(long_domain) - 1);
    long_domain[sizeof(long_domain) - 1] = '\0';
    assert_int_equal(kf_mfg_seal_key(bob_pub, long_domain, 1, STEEL_ID, key, out), KF_ERR_ARG);
    assert_int_equal(kf_mfg_archive_seal(key, DOMAIN, 1, "B0000000", key, aout), KF_ERR_ARG);
    /* a failing random source is reported, and nothing is written */
    struct fixed_random fr = {NULL, 0, 0, KF_ERR_RNG_HEALTH};
    kf_crypto_set_random(fixed_random, &fr);
    assert_int_equal(kf_mfg_seal_key(bob_pub, DOMAIN, 1, STEEL_ID, key, out), KF_ERR_RNG_HEALTH);
    assert_int_equal(kf_mfg_archive_seal(key, DOMAIN, 1, BRASS_ID, key, aout), KF_ERR_RNG_HEALTH);
    kf_crypto_set_random(NULL, NULL);
    assert_memory_equal(out, before, sizeof(out));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(seal_known_answer, restore_random),
        cmocka_unit_test_teardown(archive_known_answer, restore_random),
        cmocka_unit_test(seals_are_randomised),
        cmocka_unit_test(open_refuses_another_context_or_key),
        cmocka_unit_test(archive_open_refuses_another_context_or_key),
        cmocka_unit_test_teardown(seal_refuses_bad_arguments, restore_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
