/*
 * Shamir secret sharing over GF(2^8) and the operator share text.
 * Field arithmetic is checked against FIPS 197 section 4.2 examples; the
 * combiner against a split worked by hand; the share text against checks
 * computed with an independent SHA-256 (python3 hashlib).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "keyfleet/error.h"
#include "keyfleet/secmod.h"

/* ---- GF(2^8) ---- */

static void field_multiply_matches_fips197(void **state)
{
    (void)state;
    /* FIPS 197 section 4.2: {57} . {83} = {c1}. */
    assert_int_equal(kf_gf256_mul(0x57, 0x83), 0xc1);
    /* FIPS 197 section 4.2.1: {57} . {13} = {fe}, via xtime:
     * {57}.{02} = {ae}, .{04} = {47}, .{08} = {8e}, .{10} = {07}. */
    assert_int_equal(kf_gf256_mul(0x57, 0x13), 0xfe);
    assert_int_equal(kf_gf256_mul(0x57, 0x02), 0xae);
    assert_int_equal(kf_gf256_mul(0x57, 0x04), 0x47);
    assert_int_equal(kf_gf256_mul(0x57, 0x08), 0x8e);
    assert_int_equal(kf_gf256_mul(0x57, 0x10), 0x07);
    /* {53} and {ca} are inverses in the AES field (the standard example). */
    assert_int_equal(kf_gf256_mul(0x53, 0xca), 0x01);
    assert_int_equal(kf_gf256_mul(0xca, 0x53), 0x01);
}

static void field_inverse_is_correct_everywhere(void **state)
{
    (void)state;
    assert_int_equal(kf_gf256_inv(0x53), 0xca);
    assert_int_equal(kf_gf256_inv(0xca), 0x53);
    assert_int_equal(kf_gf256_inv(0x03), 0xf6); /* from the AES S-box construction */
    assert_int_equal(kf_gf256_inv(0x01), 0x01);
    assert_int_equal(kf_gf256_inv(0x00), 0x00); /* by convention, as in the S-box */
    for (unsigned a = 1; a < 256; a++)
        assert_int_equal(kf_gf256_mul((uint8_t)a, kf_gf256_inv((uint8_t)a)), 1);
}

/* ---- combine, by hand ---- */

/*
 * m = 2, secret 0x53, f(x) = 0x53 + 0xca x in GF(2^8) (addition is XOR):
 *   f(1) = 0x53 ^ 0xca                       = 0x99
 *   f(2) = 0x53 ^ {ca}.{02}; 0xca << 1 = 0x194, drop bit 8, ^ 0x1b -> 0x8f
 *        = 0x53 ^ 0x8f                       = 0xdc
 *   f(3) = 0x53 ^ {ca}.{03} = 0x53 ^ (0xca ^ 0x8f) = 0x53 ^ 0x45 = 0x16
 * Lagrange at 0 from x = 1, 2: f(0) = f(1).2/3 + f(2).1/3, with 1/3 = {f6}.
 */
static void combine_rebuilds_the_hand_worked_example(void **state)
{
    (void)state;
    uint8_t secret;
    const uint8_t xs12[] = {1, 2}, ys12[] = {0x99, 0xdc};
    assert_int_equal(kf_shamir_combine(xs12, ys12, 2, 1, &secret), KF_OK);
    assert_int_equal(secret, 0x53);
    const uint8_t xs31[] = {3, 1}, ys31[] = {0x16, 0x99};
    assert_int_equal(kf_shamir_combine(xs31, ys31, 2, 1, &secret), KF_OK);
    assert_int_equal(secret, 0x53);
    const uint8_t xs23[] = {2, 3}, ys23[] = {0xdc, 0x16};
    assert_int_equal(kf_shamir_combine(xs23, ys23, 2, 1, &secret), KF_OK);
    assert_int_equal(secret, 0x53);
    /* One share alone is f(1), not the secret. */
    assert_int_equal(kf_shamir_combine(xs12, ys12, 1, 1, &secret), KF_OK);
    assert_int_equal(secret, 0x99);
}

static void combine_refuses_zero_and_duplicate_x(void **state)
{
    (void)state;
    uint8_t secret[2];
    const uint8_t ys[] = {1, 2, 3, 4};
    const uint8_t zero_x[] = {0, 1}, dup_x[] = {2, 2};
    assert_int_equal(kf_shamir_combine(zero_x, ys, 2, 2, secret), KF_ERR_SHARE);
    assert_int_equal(kf_shamir_combine(dup_x, ys, 2, 2, secret), KF_ERR_SHARE);
    assert_int_equal(kf_shamir_combine(dup_x, ys, 0, 2, secret), KF_ERR_THRESHOLD);
}

/* ---- split then combine, every subset ---- */

static const uint8_t secret32[32] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0xff};

/* Combine the shares whose bit is set in mask; true if that gives the secret. */
static bool subset_rebuilds(const uint8_t *shares, unsigned mask, unsigned n)
{
    uint8_t xs[8], ys[8 * 32], out[32];
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++) {
        if (mask & (1u << i)) {
            xs[k] = (uint8_t)(i + 1);
            memcpy(ys + k * 32, shares + i * 32, 32);
            k++;
        }
    }
    assert_int_equal(kf_shamir_combine(xs, ys, k, 32, out), KF_OK);
    return memcmp(out, secret32, 32) == 0;
}

static void check_threshold(unsigned m, unsigned n)
{
    uint8_t shares[8 * 32];
    assert_int_equal(kf_shamir_split(secret32, 32, m, n, shares), KF_OK);
    unsigned with_m = 0, with_m_minus_1 = 0;
    for (unsigned mask = 1; mask < (1u << n); mask++) {
        unsigned k = (unsigned)__builtin_popcount(mask);
        if (k == m) {
            assert_true(subset_rebuilds(shares, mask, n));
            with_m++;
        } else if (k == m - 1) {
            /* m - 1 shares give a random value: equal to a 32-byte secret
             * with probability 2^-256. */
            assert_false(subset_rebuilds(shares, mask, n));
            with_m_minus_1++;
        } else if (k > m) {
            assert_true(subset_rebuilds(shares, mask, n));
        }
    }
    assert_true(with_m > 0);
    assert_true(m == 1 || with_m_minus_1 > 0);
}

static void every_m_subset_rebuilds_and_no_smaller_one_does(void **state)
{
    (void)state;
    check_threshold(2, 3);
    check_threshold(3, 5);
    check_threshold(2, 2);
    check_threshold(5, 5);
    check_threshold(4, 7);
}

/* 1-of-1 is the dev mode degenerate case: the one share is the secret. */
static void one_of_one_share_is_the_secret(void **state)
{
    (void)state;
    uint8_t share[32];
    assert_int_equal(kf_shamir_split(secret32, 32, 1, 1, share), KF_OK);
    assert_memory_equal(share, secret32, 32);
}

/* For m = 2 every byte lies on a line f(x) = s + c.x, so with x = 1, 2, 3:
 * f(1) ^ f(2) ^ f(3) = s ^ c.(1 ^ 2 ^ 3) ^ s ^ s = s. Checks split's
 * evaluation without knowing its random coefficients. */
static void two_of_three_shares_lie_on_a_line(void **state)
{
    (void)state;
    uint8_t shares[3 * 32];
    assert_int_equal(kf_shamir_split(secret32, 32, 2, 3, shares), KF_OK);
    for (size_t b = 0; b < 32; b++)
        assert_int_equal(shares[b] ^ shares[32 + b] ^ shares[64 + b], secret32[b]);
    /* and the shares are not the secret itself */
    assert_memory_not_equal(shares, secret32, 32);
}

static void split_refuses_bad_thresholds(void **state)
{
    (void)state;
    uint8_t shares[300 * 32];
    assert_int_equal(kf_shamir_split(secret32, 32, 1, 3, shares), KF_ERR_THRESHOLD);
    assert_int_equal(kf_shamir_split(secret32, 32, 0, 0, shares), KF_ERR_THRESHOLD);
    assert_int_equal(kf_shamir_split(secret32, 32, 4, 3, shares), KF_ERR_THRESHOLD);
    assert_int_equal(kf_shamir_split(secret32, 32, 2, 256, shares), KF_ERR_THRESHOLD);
    assert_int_equal(kf_shamir_split(secret32, 0, 2, 3, shares), KF_ERR_ARG);
    assert_int_equal(kf_shamir_split(secret32, 1, 255, 255, shares), KF_OK);
}

/* ---- share text ---- */

/* Checks computed independently: python3 -c "import hashlib;
 * print(hashlib.sha256(b'kfs1-2-1-99').hexdigest()[:8])" -> 51711961. */
static void share_text_decodes_a_known_share(void **state)
{
    (void)state;
    struct kf_share s;
    const char *t1 = "kfs1-2-1-99-51711961";
    assert_int_equal(kf_share_decode(t1, strlen(t1), &s), KF_OK);
    assert_int_equal(s.m, 2);
    assert_int_equal(s.x, 1);
    assert_int_equal(s.len, 1);
    assert_int_equal(s.y[0], 0x99);
    const char *t2 = "kfs1-3-200-00ff10-3a59c3b0";
    assert_int_equal(kf_share_decode(t2, strlen(t2), &s), KF_OK);
    assert_int_equal(s.m, 3);
    assert_int_equal(s.x, 200);
    assert_int_equal(s.len, 3);
    assert_memory_equal(s.y, "\x00\xff\x10", 3);
    /* Upper case is the same share: the check covers the canonical text. */
    const char *t3 = "KFS1-2-2-DC-473E19E9";
    assert_int_equal(kf_share_decode(t3, strlen(t3), &s), KF_ERR_SHARE); /* prefix is exact */
    const char *t4 = "kfs1-2-2-DC-473E19E9";
    assert_int_equal(kf_share_decode(t4, strlen(t4), &s), KF_OK);
    assert_int_equal(s.y[0], 0xdc);
    /* The two hand-made shares combine to the hand-worked secret. */
    struct kf_share a;
    assert_int_equal(kf_share_decode(t1, strlen(t1), &a), KF_OK);
    uint8_t xs[] = {a.x, s.x}, ys[] = {a.y[0], s.y[0]}, secret;
    assert_int_equal(kf_shamir_combine(xs, ys, 2, 1, &secret), KF_OK);
    assert_int_equal(secret, 0x53);
}

static void share_text_round_trips(void **state)
{
    (void)state;
    struct kf_share in = {.m = 3, .x = 255, .len = 32}, out;
    memcpy(in.y, secret32, 32);
    char text[KF_SHARE_MAX];
    assert_int_equal(kf_share_encode(&in, text), KF_OK);
    assert_true(strlen(text) < KF_SHARE_MAX);
    assert_int_equal(strncmp(text, "kfs1-3-255-000102", 17), 0);
    assert_int_equal(kf_share_decode(text, strlen(text), &out), KF_OK);
    assert_int_equal(out.m, 3);
    assert_int_equal(out.x, 255);
    assert_int_equal(out.len, 32);
    assert_memory_equal(out.y, secret32, 32);
}

static void expect_refused(const char *text)
{
    struct kf_share s;
    assert_int_equal(kf_share_decode(text, strlen(text), &s), KF_ERR_SHARE);
}

static void share_text_refuses_typos_and_malformed_text(void **state)
{
    (void)state;
    struct kf_share in = {.m = 2, .x = 7, .len = 32};
    memcpy(in.y, secret32, 32);
    char text[KF_SHARE_MAX];
    assert_int_equal(kf_share_encode(&in, text), KF_OK);
    /* Every single-character change anywhere is caught. */
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i++) {
        char typo[KF_SHARE_MAX];
        memcpy(typo, text, n + 1);
        typo[i] = typo[i] == '1' ? '2' : '1';
        expect_refused(typo);
    }
    /* Truncated, extended, trailing space. */
    for (size_t cut = 0; cut < n; cut++) {
        struct kf_share s;
        assert_int_equal(kf_share_decode(text, cut, &s), KF_ERR_SHARE);
    }
    char longer[KF_SHARE_MAX + 8];
    snprintf(longer, sizeof(longer), "%s0", text);
    expect_refused(longer);
    snprintf(longer, sizeof(longer), "%s ", text);
    expect_refused(longer);

    expect_refused("kfs2-2-1-99-51711961");        /* unknown version */
    expect_refused("kfs1-02-1-99-51711961");       /* leading zero */
    expect_refused("kfs1-2-0-99-e0c2a8d5");        /* x = 0 would be the secret */
    expect_refused("kfs1-0-1-99-51711961");        /* m = 0 */
    expect_refused("kfs1-256-1-99-51711961");      /* m > 255 */
    expect_refused("kfs1-2-1-9-51711961");         /* odd hex */
    expect_refused("kfs1-2-1-9g-51711961");        /* not hex */
    expect_refused("kfs1-2-1--51711961");          /* no share bytes */
    expect_refused("kfs1-2-1-99-5171196");         /* short check */
    expect_refused("kfs1-2-1-99_51711961");        /* wrong separator */
    expect_refused("");
    /* 33 share bytes is longer than any key we split. */
    expect_refused("kfs1-2-1-"
                   "000000000000000000000000000000000000000000000000000000000000000000-00000000");
}

static void share_text_encode_refuses_bad_fields(void **state)
{
    (void)state;
    char text[KF_SHARE_MAX];
    struct kf_share s = {.m = 2, .x = 0, .len = 1};
    assert_int_equal(kf_share_encode(&s, text), KF_ERR_ARG);
    s.x = 1;
    s.len = 0;
    assert_int_equal(kf_share_encode(&s, text), KF_ERR_ARG);
    s.len = KF_SHARE_BYTES_MAX + 1;
    assert_int_equal(kf_share_encode(&s, text), KF_ERR_ARG);
    s.len = 1;
    s.m = 0;
    assert_int_equal(kf_share_encode(&s, text), KF_ERR_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(field_multiply_matches_fips197),
        cmocka_unit_test(field_inverse_is_correct_everywhere),
        cmocka_unit_test(combine_rebuilds_the_hand_worked_example),
        cmocka_unit_test(combine_refuses_zero_and_duplicate_x),
        cmocka_unit_test(every_m_subset_rebuilds_and_no_smaller_one_does),
        cmocka_unit_test(one_of_one_share_is_the_secret),
        cmocka_unit_test(two_of_three_shares_lie_on_a_line),
        cmocka_unit_test(split_refuses_bad_thresholds),
        cmocka_unit_test(share_text_decodes_a_known_share),
        cmocka_unit_test(share_text_round_trips),
        cmocka_unit_test(share_text_refuses_typos_and_malformed_text),
        cmocka_unit_test(share_text_encode_refuses_bad_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
