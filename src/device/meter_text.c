/*
 * The printed indicium (docs/manufacturing.md, "Tokens"): one line
 *   KF1 <msn> <YYYYMMDD> <value> <count> <postal code> <vendor token> <postal token>
 * with single spaces, decimal numbers without sign or leading zeros, and each
 * 48-bit token as 10 Crockford base-32 digits (most significant first) and a
 * check symbol, the token's value mod 37 in Crockford's check alphabet. As 37
 * is prime and above 32, the check symbol catches every single-symbol
 * substitution. The parser is strict: upper case only, no Crockford aliases
 * (I, L, O), no hyphens, nothing before or after the line.
 */
#include <string.h>

#include "device/meter_internal.h"
#include "keyfleet/device.h"

/* Crockford base 32, then the five check-only symbols. */
static const char symbols[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ*~$=U";
#define DIGIT_SYMBOLS 32u
#define CHECK_SYMBOLS 37u
#define TOKEN_DIGITS 10u
#define TOKEN_TEXT_LEN (TOKEN_DIGITS + 1u)
#define FIELDS 8u
#define MAGIC "KF1"

_Static_assert(sizeof(symbols) - 1 == CHECK_SYMBOLS, "37 check symbols");
_Static_assert(KFD_TOKEN_LEN == 6, "a token is 48 bits: 10 base-32 digits");

static uint64_t token_value(const uint8_t token[KFD_TOKEN_LEN])
{
    uint64_t v = 0;
    for (size_t i = 0; i < KFD_TOKEN_LEN; i++)
        v = v << 8 | token[i];
    return v;
}

/* symbols[] inverted: the value of each symbol plus one, 0 for any other byte
 * (a verifier parses millions of lines: one load instead of a search). */
static const uint8_t symbol_plus1[256] = {
    ['0'] = 1,   ['1'] = 2,   ['2'] = 3,   ['3'] = 4,   ['4'] = 5,   ['5'] = 6,   ['6'] = 7,
    ['7'] = 8,   ['8'] = 9,   ['9'] = 10,  ['A'] = 11,  ['B'] = 12,  ['C'] = 13,  ['D'] = 14,
    ['E'] = 15,  ['F'] = 16,  ['G'] = 17,  ['H'] = 18,  ['J'] = 19,  ['K'] = 20,  ['M'] = 21,
    ['N'] = 22,  ['P'] = 23,  ['Q'] = 24,  ['R'] = 25,  ['S'] = 26,  ['T'] = 27,  ['V'] = 28,
    ['W'] = 29,  ['X'] = 30,  ['Y'] = 31,  ['Z'] = 32,  ['*'] = 33,  ['~'] = 34,  ['$'] = 35,
    ['='] = 36,  ['U'] = 37,
};

/* The value of symbol c among the first n symbols, or -1. */
static int symbol_value(uint8_t c, unsigned n)
{
    int v = (int)symbol_plus1[c] - 1;
    return v >= 0 && (unsigned)v < n ? v : -1;
}

/* ---- writing ---- */

static int put_token(kf_buf *b, const uint8_t token[KFD_TOKEN_LEN])
{
    uint64_t v = token_value(token);
    char text[TOKEN_TEXT_LEN];
    uint64_t rest = v;
    for (unsigned i = TOKEN_DIGITS; i-- > 0; rest >>= 5)
        text[i] = symbols[rest & 31u];
    text[TOKEN_DIGITS] = symbols[v % CHECK_SYMBOLS];
    return kf_buf_put_bytes(b, text, sizeof(text));
}

static int put_decimal(kf_buf *b, uint32_t v)
{
    char digits[10];
    size_t n = 0;
    do {
        digits[sizeof(digits) - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return kf_buf_put_bytes(b, digits + sizeof(digits) - n, n);
}

static int put_line(kf_buf *b, const struct kfd_piece *p)
{
    KF_GUARD(kf_buf_put_bytes(b, MAGIC " ", 4));
    KF_GUARD(kf_buf_put_bytes(b, p->tx.msn, strlen(p->tx.msn)));
    KF_GUARD(kf_buf_put_u8(b, ' '));
    KF_GUARD(put_decimal(b, p->tx.date)); /* a valid date has 8 digits */
    KF_GUARD(kf_buf_put_u8(b, ' '));
    KF_GUARD(put_decimal(b, p->tx.value));
    KF_GUARD(kf_buf_put_u8(b, ' '));
    KF_GUARD(put_decimal(b, p->tx.piece_count));
    KF_GUARD(kf_buf_put_u8(b, ' '));
    KF_GUARD(kf_buf_put_bytes(b, p->tx.postal_code, strlen(p->tx.postal_code)));
    KF_GUARD(kf_buf_put_u8(b, ' '));
    KF_GUARD(put_token(b, p->vendor_token));
    KF_GUARD(kf_buf_put_u8(b, ' '));
    return put_token(b, p->postal_token);
}

int kfd_piece_format(const struct kfd_piece *p, char out[KFD_PIECE_TEXT_MAX])
{
    KF_ENSURE(p && out, KF_ERR_ARG);
    out[0] = '\0';
    uint8_t canonical[KFD_TXDATA_LEN];
    KF_GUARD(kfd_txdata_encode(&p->tx, canonical)); /* every field checked */
    kf_buf b;
    kf_buf_fixed(&b, (uint8_t *)out, KFD_PIECE_TEXT_MAX - 1);
    int rc = put_line(&b, p);
    if (rc != KF_OK) {
        out[0] = '\0';
        return KF_ERR_INTERNAL; /* the longest line has 86 characters */
    }
    out[b.len] = '\0';
    return KF_OK;
}

/* ---- reading ---- */

/* The next field: 1 or more bytes up to a single space (not the last field) or the end of the
 * line (the last field). */
static int next_field(kf_buf *r, bool last, struct kfd_span *f)
{
    f->p = kf_buf_read_ptr(r);
    f->len = 0;
    uint8_t c;
    while (kf_buf_get_u8(r, &c) == KF_OK) {
        if (c == ' ') {
            KF_ENSURE(!last && f->len >= 1, KF_ERR_TOKEN_TEXT);
            return KF_OK;
        }
        f->len++;
    }
    KF_ENSURE(last && f->len >= 1, KF_ERR_TOKEN_TEXT);
    return KF_OK;
}

/* A decimal number: digits only, no leading zero (but "0"). KF_ERR_METER_FIELD if it does not
 * fit 32 bits; more than 10 digits is a syntax error. */
static int get_decimal(const struct kfd_span *f, uint32_t *v)
{
    KF_ENSURE(f->len >= 1 && f->len <= 10, KF_ERR_TOKEN_TEXT);
    KF_ENSURE(f->p[0] != '0' || f->len == 1, KF_ERR_TOKEN_TEXT);
    uint64_t n = 0;
    for (size_t i = 0; i < f->len; i++) {
        KF_ENSURE(f->p[i] >= '0' && f->p[i] <= '9', KF_ERR_TOKEN_TEXT);
        n = n * 10 + (uint64_t)(f->p[i] - '0');
    }
    KF_ENSURE(n <= UINT32_MAX, KF_ERR_METER_FIELD);
    *v = (uint32_t)n;
    return KF_OK;
}

/* 10 base-32 digits of a value below 2^48, and its check symbol. */
static int get_token(const struct kfd_span *f, uint8_t token[KFD_TOKEN_LEN])
{
    KF_ENSURE(f->len == TOKEN_TEXT_LEN, KF_ERR_TOKEN_TEXT);
    uint64_t v = 0;
    for (size_t i = 0; i < TOKEN_DIGITS; i++) {
        int d = symbol_value(f->p[i], DIGIT_SYMBOLS);
        KF_ENSURE(d >= 0, KF_ERR_TOKEN_TEXT);
        v = v << 5 | (uint64_t)d;
    }
    KF_ENSURE(v >> 48 == 0, KF_ERR_TOKEN_TEXT);
    KF_ENSURE(symbol_value(f->p[TOKEN_DIGITS], CHECK_SYMBOLS) == (int)(v % CHECK_SYMBOLS),
              KF_ERR_TOKEN_TEXT);
    for (size_t i = KFD_TOKEN_LEN; i-- > 0; v >>= 8)
        token[i] = (uint8_t)v;
    return KF_OK;
}

static int get_text(const struct kfd_span *f, char *out, size_t max)
{
    KF_ENSURE(f->len <= max, KF_ERR_METER_FIELD);
    memcpy(out, f->p, f->len);
    out[f->len] = '\0';
    return KF_OK;
}

static int get_line(kf_buf *r, struct kfd_piece *p)
{
    struct kfd_span f[FIELDS];
    for (unsigned i = 0; i < FIELDS; i++)
        KF_GUARD(next_field(r, i == FIELDS - 1, &f[i]));
    /* Syntax first: every field, check symbols included. */
    KF_ENSURE(f[0].len == 3 && memcmp(f[0].p, MAGIC, 3) == 0, KF_ERR_TOKEN_TEXT);
    KF_ENSURE(f[2].len == 8, KF_ERR_TOKEN_TEXT);
    KF_GUARD(get_decimal(&f[2], &p->tx.date));
    KF_GUARD(get_decimal(&f[3], &p->tx.value));
    KF_GUARD(get_decimal(&f[4], &p->tx.piece_count));
    KF_GUARD(get_token(&f[6], p->vendor_token));
    KF_GUARD(get_token(&f[7], p->postal_token));
    /* Then the fields' contents. */
    KF_GUARD(get_text(&f[1], p->tx.msn, KFD_METER_MSN_MAX));
    KF_GUARD(get_text(&f[5], p->tx.postal_code, KFD_POSTAL_CODE_MAX));
    uint8_t canonical[KFD_TXDATA_LEN];
    return kfd_txdata_encode(&p->tx, canonical);
}

int kfd_piece_parse(const char *line, struct kfd_piece *p)
{
    KF_ENSURE(line && p, KF_ERR_ARG);
    memset(p, 0, sizeof(*p));
    size_t n = strnlen(line, KFD_PIECE_TEXT_MAX);
    KF_ENSURE(n < KFD_PIECE_TEXT_MAX, KF_ERR_TOKEN_TEXT);
    kf_buf r;
    kf_buf_reader(&r, (const uint8_t *)line, n);
    int rc = get_line(&r, p);
    if (rc != KF_OK)
        memset(p, 0, sizeof(*p));
    return rc;
}
