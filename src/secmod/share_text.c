/*
 * Operator shares as text a custodian can copy, print or type:
 *   kfs1-<m>-<x>-<hex share bytes>-<check>
 * The check (first 4 bytes of SHA-256 over the text before the last '-')
 * catches a typo before the share is combined, where it would only show as
 * "the shares do not rebuild the root key".
 *
 * CT: the share bytes are secret, so their hex is encoded and decoded with
 * arithmetic masks, never a table lookup or a branch on the digit; only the
 * public fields (version, m, x, length) are parsed with branches.
 */
#include "keyfleet/secmod.h"

#include <stdio.h>
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

#define SHARE_PREFIX "kfs1-"
#define SHARE_CHECK_BYTES 4
#define SHARE_CHECK_HEX (2 * SHARE_CHECK_BYTES)

/* CT: nibble 0..15 -> '0'..'9', 'a'..'f'. (9 - n) >> 8 is all ones iff n > 9. */
static char hex_digit(unsigned nibble)
{
    int n = (int)nibble;
    int above_nine = (9 - n) >> 8; /* -1 or 0 */
    return (char)(n + '0' + (above_nine & ('a' - '0' - 10)));
}

/* CT: hex character -> 0..15, or *invalid |= 1 without branching on c. */
static uint8_t hex_value(uint8_t c, unsigned *invalid)
{
    int digit = c ^ '0';                       /* 0..9 for '0'..'9' */
    int is_digit = ((digit - 10) >> 8) & 1;    /* digit < 10 (digit >= 0 always) */
    int letter = (c | 0x20) - 'a' + 10;        /* 10..15 for a..f and A..F */
    int is_letter = (((letter - 10) >> 8) ^ 1) & ((letter - 16) >> 8) & 1;
    *invalid |= (unsigned)(1 ^ (is_digit | is_letter));
    return (uint8_t)(((0 - is_digit) & digit) | ((0 - is_letter) & letter));
}

static void hex_encode(const uint8_t *in, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hex_digit(in[i] >> 4);
        out[2 * i + 1] = hex_digit(in[i] & 0x0f);
    }
}

static int share_check(const char *body, size_t body_len, uint8_t check[SHARE_CHECK_BYTES])
{
    uint8_t digest[KF_SHA256_LEN];
    int rc = kf_sha256((const uint8_t *)body, body_len, digest);
    memcpy(check, digest, SHARE_CHECK_BYTES);
    kf_wipe(digest, sizeof(digest));
    return rc;
}

/* The canonical text before the check: "kfs1-<m>-<x>-<hex>". Returns its length. */
static int encode_body(const struct kf_share *share, char *out, size_t cap, size_t *body_len)
{
    int head = snprintf(out, cap, SHARE_PREFIX "%u-%u-", share->m, (unsigned)share->x);
    KF_ENSURE(head > 0 && (size_t)head + 2 * share->len < cap, KF_ERR_NOSPACE);
    hex_encode(share->y, share->len, out + head);
    *body_len = (size_t)head + 2 * share->len;
    return KF_OK;
}

int kf_share_encode(const struct kf_share *share, char out[KF_SHARE_MAX])
{
    KF_ENSURE(share && out, KF_ERR_ARG);
    KF_ENSURE(share->m >= 1 && share->m <= 255 && share->x >= 1, KF_ERR_ARG);
    KF_ENSURE(share->len >= 1 && share->len <= KF_SHARE_BYTES_MAX, KF_ERR_ARG);
    size_t body_len;
    KF_GUARD(encode_body(share, out, KF_SHARE_MAX, &body_len));
    KF_ENSURE(body_len + 1 + SHARE_CHECK_HEX < KF_SHARE_MAX, KF_ERR_NOSPACE);
    uint8_t check[SHARE_CHECK_BYTES];
    int rc = share_check(out, body_len, check);
    if (rc < 0) {
        kf_wipe(out, KF_SHARE_MAX);
        return rc;
    }
    out[body_len] = '-';
    hex_encode(check, sizeof(check), out + body_len + 1);
    out[body_len + 1 + SHARE_CHECK_HEX] = '\0';
    return KF_OK;
}

/* A decimal field 1..255 without leading zeros, ended by '-'. Public data. */
static int get_small_decimal(kf_buf *text, unsigned *value)
{
    unsigned v = 0, digits = 0;
    for (;;) {
        uint8_t c;
        KF_GUARD(kf_buf_get_u8(text, &c));
        if (c == '-')
            break;
        KF_ENSURE(c >= '0' && c <= '9', KF_ERR_SHARE);
        KF_ENSURE(!(digits == 1 && v == 0), KF_ERR_SHARE); /* no leading zero */
        v = v * 10 + (unsigned)(c - '0');
        KF_ENSURE(++digits <= 3 && v <= 255, KF_ERR_SHARE);
    }
    KF_ENSURE(digits > 0 && v >= 1, KF_ERR_SHARE);
    *value = v;
    return KF_OK;
}

/* n bytes of hex from the cursor. CT in the digits' values. */
static int get_hex(kf_buf *text, uint8_t *out, size_t n)
{
    const uint8_t *digits;
    KF_GUARD(kf_buf_get_ptr(text, 2 * n, &digits));
    unsigned invalid = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t hi = hex_value(digits[2 * i], &invalid);
        uint8_t lo = hex_value(digits[2 * i + 1], &invalid);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return invalid ? KF_ERR_SHARE : KF_OK;
}

static int parse_share(kf_buf *text, struct kf_share *share, uint8_t check[SHARE_CHECK_BYTES])
{
    uint8_t prefix[sizeof(SHARE_PREFIX) - 1];
    KF_GUARD(kf_buf_get_bytes(text, prefix, sizeof(prefix)));
    KF_ENSURE(memcmp(prefix, SHARE_PREFIX, sizeof(prefix)) == 0, KF_ERR_SHARE);
    unsigned m, x;
    KF_GUARD(get_small_decimal(text, &m));
    KF_GUARD(get_small_decimal(text, &x));
    /* The share length follows from the text length: hex, '-', check. */
    size_t rest = kf_buf_remaining(text);
    KF_ENSURE(rest > 1 + SHARE_CHECK_HEX && (rest - 1 - SHARE_CHECK_HEX) % 2 == 0, KF_ERR_SHARE);
    size_t len = (rest - 1 - SHARE_CHECK_HEX) / 2;
    KF_ENSURE(len <= KF_SHARE_BYTES_MAX, KF_ERR_SHARE);
    share->m = m;
    share->x = (uint8_t)x;
    share->len = len;
    KF_GUARD(get_hex(text, share->y, len));
    uint8_t dash;
    KF_GUARD(kf_buf_get_u8(text, &dash));
    KF_ENSURE(dash == '-', KF_ERR_SHARE);
    KF_GUARD(get_hex(text, check, SHARE_CHECK_BYTES));
    KF_ENSURE(kf_buf_remaining(text) == 0, KF_ERR_SHARE);
    return KF_OK;
}

/* The check covers the canonical (lower-case) body, so a share typed in
 * upper case still verifies while any changed digit does not. */
static int verify_check(const struct kf_share *share, const uint8_t given[SHARE_CHECK_BYTES])
{
    char body[KF_SHARE_MAX];
    size_t body_len;
    uint8_t expected[SHARE_CHECK_BYTES];
    int rc = encode_body(share, body, sizeof(body), &body_len);
    if (rc == KF_OK)
        rc = share_check(body, body_len, expected);
    if (rc == KF_OK && !kf_ct_equal(expected, given, SHARE_CHECK_BYTES))
        rc = KF_ERR_SHARE;
    kf_wipe(body, sizeof(body));
    return rc;
}

int kf_share_decode(const char *text, size_t text_len, struct kf_share *share)
{
    KF_ENSURE(text && share, KF_ERR_ARG);
    KF_ENSURE(text_len < KF_SHARE_MAX, KF_ERR_SHARE);
    kf_buf cursor;
    kf_buf_reader(&cursor, (const uint8_t *)text, text_len);
    uint8_t check[SHARE_CHECK_BYTES];
    int rc = parse_share(&cursor, share, check);
    if (rc == KF_OK)
        rc = verify_check(share, check);
    if (rc < 0) {
        kf_wipe(share, sizeof(*share));
        /* Every way a share can be unreadable is the same refusal for the operator. */
        return rc == KF_ERR_SECMEM || rc == KF_ERR_CRYPTO ? rc : KF_ERR_SHARE;
    }
    return KF_OK;
}
