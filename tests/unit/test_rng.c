/*
 * Random generator: SP 800-90B 4.4 health tests at their exact cut-offs,
 * the failure latch, source errors, and that output is not the raw source.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "keyfleet/crypto.h"
#include "keyfleet/error.h"
#include "keyfleet/rng.h"

/* ---- crafted raw sources ---- */

/* xorshift32: a deterministic stream with no long runs, standing in for a
 * healthy source so tests are reproducible. */
struct xorshift {
    uint32_t s;
};
static uint8_t xorshift_next(struct xorshift *x)
{
    x->s ^= x->s << 13;
    x->s ^= x->s >> 17;
    x->s ^= x->s << 5;
    return (uint8_t)(x->s >> 24);
}
static int xorshift_source(void *ctx, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < len; i++)
        out[i] = xorshift_next(ctx);
    return KF_OK;
}

static int stuck_source(void *ctx, uint8_t *out, size_t len)
{
    (void)ctx;
    memset(out, 0x5a, len);
    return KF_OK;
}

static int broken_source(void *ctx, uint8_t *out, size_t len)
{
    (void)ctx;
    (void)out;
    (void)len;
    return KF_ERR_IO;
}

/* Every 10th byte is 0xab (10%, against 1/256 expected), the rest varied and
 * never 0xab, so no run ever reaches the RCT cut-off: only the APT can see it. */
struct biased {
    struct xorshift x;
    uint64_t pos;
};
static int biased_source(void *ctx, uint8_t *out, size_t len)
{
    struct biased *b = ctx;
    for (size_t i = 0; i < len; i++, b->pos++) {
        uint8_t v;
        if (b->pos % 10 == 0)
            v = 0xab;
        else
            do
                v = xorshift_next(&b->x);
            while (v == 0xab);
        out[i] = v;
    }
    return KF_OK;
}

static int reset_generator(void **state)
{
    (void)state;
    kf_rng_set_source(NULL, NULL);
    kf_rng_reset_health();
    return 0;
}

/* ---- the tests on crafted sample streams ---- */

static void cutoffs_match_sp800_90b_for_alpha_2_pow_minus_40(void **state)
{
    (void)state;
    /* RCT: 1 + ceil(40 / 8). APT: exact binomial critical value, see rng.h. */
    assert_int_equal(KF_RNG_RCT_CUTOFF, 6);
    assert_int_equal(KF_RNG_APT_WINDOW, 512);
    assert_int_equal(KF_RNG_APT_CUTOFF, 19);
}

static void rct_allows_five_repeats_and_refuses_the_sixth(void **state)
{
    (void)state;
    struct kf_rng_health h;
    kf_rng_health_init(&h);
    assert_int_equal(kf_rng_health_feed(&h, 1), KF_OK);
    for (int i = 0; i < 5; i++) /* runs of 5 (cut-off - 1) pass */
        assert_int_equal(kf_rng_health_feed(&h, 7), KF_OK);
    assert_int_equal(kf_rng_health_feed(&h, 8), KF_OK);
    for (int i = 0; i < 5; i++)
        assert_int_equal(kf_rng_health_feed(&h, 9), KF_OK);
    assert_int_equal(kf_rng_health_feed(&h, 9), KF_ERR_RNG_HEALTH);
}

/* Feed one APT window whose first sample is ref and which holds ref `matches`
 * times in all, spaced so no run forms. Returns the first failure or KF_OK. */
static int feed_window(struct kf_rng_health *h, uint8_t ref, unsigned matches)
{
    uint8_t filler = 0;
    int rc = KF_OK;
    for (unsigned i = 0; i < KF_RNG_APT_WINDOW && rc == KF_OK; i++) {
        if (i % 2 == 0 && i / 2 < matches) {
            rc = kf_rng_health_feed(h, ref);
        } else {
            do
                filler++;
            while (filler == ref);
            rc = kf_rng_health_feed(h, filler);
        }
    }
    return rc;
}

static void apt_allows_eighteen_matches_and_refuses_nineteen(void **state)
{
    (void)state;
    struct kf_rng_health h;
    kf_rng_health_init(&h);
    /* Several windows at cut-off - 1 pass: the count restarts per window. */
    for (int w = 0; w < 4; w++)
        assert_int_equal(feed_window(&h, 0x42, KF_RNG_APT_CUTOFF - 1), KF_OK);
    assert_int_equal(feed_window(&h, 0x42, KF_RNG_APT_CUTOFF), KF_ERR_RNG_HEALTH);
    assert_int_equal(h.apt_matches, KF_RNG_APT_CUTOFF);
}

static void apt_counts_only_the_window_reference(void **state)
{
    (void)state;
    struct kf_rng_health h;
    kf_rng_health_init(&h);
    /* 0x42 is frequent but the window opens with 0x01, so 0x42 is not counted;
     * the APT samples a reference per window by design. */
    assert_int_equal(kf_rng_health_feed(&h, 0x01), KF_OK);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(kf_rng_health_feed(&h, 0x42), KF_OK);
        assert_int_equal(kf_rng_health_feed(&h, (uint8_t)(0x50 + i % 100)), KF_OK);
    }
}

/* ---- the generator ---- */

static void stuck_source_is_refused_and_the_failure_latches(void **state)
{
    (void)state;
    uint8_t out[64];
    kf_rng_set_source(stuck_source, NULL);
    memset(out, 0xee, sizeof(out));
    assert_int_equal(kf_rng_bytes(out, sizeof(out)), KF_ERR_RNG_HEALTH);
    assert_true(kf_rng_failed());
    /* A refused request hands back nothing that looks random. */
    for (size_t i = 0; i < sizeof(out); i++)
        assert_int_equal(out[i], 0);

    /* The source recovering is not enough: the latch holds until reset. */
    struct xorshift x = {0x12345678};
    kf_rng_set_source(xorshift_source, &x);
    assert_int_equal(kf_rng_bytes(out, sizeof(out)), KF_ERR_RNG_HEALTH);
    assert_int_equal(kf_rng_bytes(out, 1), KF_ERR_RNG_HEALTH);
    assert_true(kf_rng_failed());

    kf_rng_reset_health();
    assert_false(kf_rng_failed());
    assert_int_equal(kf_rng_bytes(out, sizeof(out)), KF_OK);
}

static void biased_source_is_refused_by_the_apt(void **state)
{
    (void)state;
    struct biased b = {.x = {0xdeadbeef}, .pos = 0};
    /* Same stream through the bare tests: the failure is the APT's. */
    struct kf_rng_health h;
    kf_rng_health_init(&h);
    int rc = KF_OK;
    uint64_t fed = 0;
    while (rc == KF_OK && fed < 1000000) {
        uint8_t s;
        assert_int_equal(biased_source(&b, &s, 1), KF_OK);
        rc = kf_rng_health_feed(&h, s);
        fed++;
    }
    assert_int_equal(rc, KF_ERR_RNG_HEALTH);
    assert_int_equal(h.apt_first, 0xab);
    assert_int_equal(h.apt_matches, KF_RNG_APT_CUTOFF);
    assert_true(h.repeat < KF_RNG_RCT_CUTOFF);

    struct biased b2 = {.x = {0xdeadbeef}, .pos = 0};
    kf_rng_set_source(biased_source, &b2);
    uint8_t out[4096];
    int got = KF_OK;
    for (int i = 0; i < 256 && got == KF_OK; i++)
        got = kf_rng_bytes(out, sizeof(out));
    assert_int_equal(got, KF_ERR_RNG_HEALTH);
    assert_true(kf_rng_failed());
}

static void healthy_kernel_source_passes_ten_megabytes(void **state)
{
    (void)state;
    uint8_t *out = malloc(1 << 20);
    assert_non_null(out);
    for (int i = 0; i < 10; i++)
        assert_int_equal(kf_rng_bytes(out, 1 << 20), KF_OK);
    assert_false(kf_rng_failed());
    free(out);
}

static void source_read_error_is_reported_and_does_not_latch(void **state)
{
    (void)state;
    uint8_t out[16];
    kf_rng_set_source(broken_source, NULL);
    assert_int_equal(kf_rng_bytes(out, sizeof(out)), KF_ERR_RNG_SOURCE);
    assert_false(kf_rng_failed());
    kf_rng_set_source(NULL, NULL);
    assert_int_equal(kf_rng_bytes(out, sizeof(out)), KF_OK);
}

static void output_is_not_the_raw_source(void **state)
{
    (void)state;
    enum { N = 4096 };
    static uint8_t raw[N], out[N];
    struct xorshift a = {0xcafef00d}, b = {0xcafef00d};
    assert_int_equal(xorshift_source(&a, raw, N), KF_OK);
    kf_rng_set_source(xorshift_source, &b);
    assert_int_equal(kf_rng_bytes(out, N), KF_OK);
    /* Raw XOR DRBG agrees with raw where the DRBG byte is 0: ~N/256 = 16
     * places. Far more would mean the DRBG is not mixed in. */
    unsigned same = 0;
    for (size_t i = 0; i < N; i++)
        same += raw[i] == out[i];
    assert_true(same < 64);
    /* The same raw stream twice still gives different output. */
    struct xorshift c = {0xcafef00d};
    static uint8_t out2[N];
    kf_rng_set_source(xorshift_source, &c);
    assert_int_equal(kf_rng_bytes(out2, N), KF_OK);
    assert_memory_not_equal(out, out2, N);
}

static void zero_length_and_null_arguments(void **state)
{
    (void)state;
    assert_int_equal(kf_rng_bytes(NULL, 0), KF_OK);
    assert_int_equal(kf_rng_bytes(NULL, 1), KF_ERR_ARG);
}

static void installed_generator_health_tests_crypto_randomness(void **state)
{
    (void)state;
    uint8_t out[32];
    kf_rng_install();
    assert_int_equal(kf_crypto_random(out, sizeof(out)), KF_OK);
    /* With a stuck raw source the crypto module's randomness is refused too. */
    kf_rng_set_source(stuck_source, NULL);
    assert_int_equal(kf_crypto_random(out, sizeof(out)), KF_ERR_RNG_HEALTH);
    assert_true(kf_rng_failed());
    kf_crypto_set_random(NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cutoffs_match_sp800_90b_for_alpha_2_pow_minus_40),
        cmocka_unit_test(rct_allows_five_repeats_and_refuses_the_sixth),
        cmocka_unit_test(apt_allows_eighteen_matches_and_refuses_nineteen),
        cmocka_unit_test(apt_counts_only_the_window_reference),
        cmocka_unit_test_setup_teardown(stuck_source_is_refused_and_the_failure_latches,
                                        reset_generator, reset_generator),
        cmocka_unit_test_setup_teardown(biased_source_is_refused_by_the_apt, reset_generator,
                                        reset_generator),
        cmocka_unit_test_setup_teardown(healthy_kernel_source_passes_ten_megabytes,
                                        reset_generator, reset_generator),
        cmocka_unit_test_setup_teardown(source_read_error_is_reported_and_does_not_latch,
                                        reset_generator, reset_generator),
        cmocka_unit_test_setup_teardown(output_is_not_the_raw_source, reset_generator,
                                        reset_generator),
        cmocka_unit_test_setup_teardown(zero_length_and_null_arguments, reset_generator,
                                        reset_generator),
        cmocka_unit_test_setup_teardown(installed_generator_health_tests_crypto_randomness,
                                        reset_generator, reset_generator),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
