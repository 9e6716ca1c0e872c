/*
 * Hex decoding for test vectors, shared by the unit tests (the crypto tests,
 * test_device_fixture.h). Characters that are not hex digits (spaces, line
 * breaks) are skipped; an odd number of digits fails the test.
 */
#ifndef TEST_HEX_H
#define TEST_HEX_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static inline int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Hex into out (at most cap bytes); returns the byte count. */
static inline size_t unhex_into(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    int half = -1;
    for (const char *p = hex; *p; p++) {
        int v = hexval(*p);
        if (v < 0)
            continue;
        if (half < 0) {
            half = v;
        } else {
            assert_true(n < cap);
            out[n++] = (uint8_t)(half << 4 | v);
            half = -1;
        }
    }
    assert_int_equal(half, -1);
    return n;
}

/* Hex into a fresh buffer (free it); *len (if len) gets its length. */
static inline uint8_t *unhex_alloc(const char *hex, size_t *len)
{
    size_t cap = strlen(hex) / 2 + 1;
    uint8_t *out = calloc(cap, 1);
    assert_non_null(out);
    size_t n = unhex_into(hex, out, cap);
    if (len)
        *len = n;
    return out;
}

#endif
