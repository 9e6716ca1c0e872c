/*
 * kf_buf: the one cursor type for all parsing and encoding.
 *
 * A buffer is a byte array with a write end (len) and a read cursor (off),
 * 0 <= off <= len <= cap <= max. Every get checks that enough bytes remain
 * and every put checks the capacity (growing up to max for owned buffers),
 * so no code outside this file does pointer arithmetic on wire data.
 * A buffer marked KF_BUF_SECRET lives in secure memory and is wiped when
 * freed or grown.
 *
 * Three ways to make one:
 *   kf_buf_reader(&b, data, n)      read-only view of existing bytes
 *   kf_buf_fixed(&b, mem, cap)      write into caller memory, never grows
 *   kf_buf_alloc(&b, initial, max, flags)  owned, grows up to max
 */
#ifndef KEYFLEET_BUF_H
#define KEYFLEET_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/error.h"

enum {
    KF_BUF_OWNED = 1u << 0,    /* data was allocated by kf_buf_alloc */
    KF_BUF_SECRET = 1u << 1,   /* data lives in secure memory; wiped on free */
    KF_BUF_READONLY = 1u << 2, /* puts are refused */
};

typedef struct kf_buf {
    uint8_t *data;
    size_t len; /* bytes written */
    size_t off; /* read cursor */
    size_t cap; /* bytes allocated */
    size_t max; /* hard ceiling for growth */
    unsigned flags;
} kf_buf;

void kf_buf_reader(kf_buf *b, const uint8_t *data, size_t len);
void kf_buf_fixed(kf_buf *b, uint8_t *mem, size_t cap);
KF_RESULT int kf_buf_alloc(kf_buf *b, size_t initial, size_t max, unsigned flags);
/* Wipes (if secret) and frees owned memory; leaves b empty. Safe on a zeroed buf. */
void kf_buf_free(kf_buf *b);
/* Forget contents (wiping if secret), keep the allocation. */
void kf_buf_reset(kf_buf *b);

static inline size_t kf_buf_remaining(const kf_buf *b)
{
    return b->len - b->off;
}
static inline const uint8_t *kf_buf_read_ptr(const kf_buf *b)
{
    return b->data + b->off;
}

/* Reads: big-endian integers, as on every keyfleet wire. */
KF_RESULT int kf_buf_get_u8(kf_buf *b, uint8_t *v);
KF_RESULT int kf_buf_get_u16(kf_buf *b, uint16_t *v);
KF_RESULT int kf_buf_get_u24(kf_buf *b, uint32_t *v);
KF_RESULT int kf_buf_get_u32(kf_buf *b, uint32_t *v);
KF_RESULT int kf_buf_get_u64(kf_buf *b, uint64_t *v);
KF_RESULT int kf_buf_get_bytes(kf_buf *b, uint8_t *out, size_t n);
/* Borrow n bytes in place (valid while b's data lives) and advance. */
KF_RESULT int kf_buf_get_ptr(kf_buf *b, size_t n, const uint8_t **p);
KF_RESULT int kf_buf_skip(kf_buf *b, size_t n);
KF_RESULT int kf_buf_peek_u32(const kf_buf *b, size_t at, uint32_t *v);
/* Carve the next n bytes into a read-only child cursor and advance past them. */
KF_RESULT int kf_buf_sub(kf_buf *b, size_t n, kf_buf *child);
/* A string field (u16 length, the bytes, no NUL inside) into dst with a NUL:
 * at most max bytes and fewer than cap (KF_ERR_LIMIT), KF_ERR_FORMAT for a NUL. */
KF_RESULT int kf_buf_get_str16(kf_buf *b, char *dst, size_t cap, size_t max);

/* Writes. */
KF_RESULT int kf_buf_reserve(kf_buf *b, size_t n);
KF_RESULT int kf_buf_put_u8(kf_buf *b, uint8_t v);
KF_RESULT int kf_buf_put_u16(kf_buf *b, uint16_t v);
KF_RESULT int kf_buf_put_u24(kf_buf *b, uint32_t v);
KF_RESULT int kf_buf_put_u32(kf_buf *b, uint32_t v);
KF_RESULT int kf_buf_put_u64(kf_buf *b, uint64_t v);
KF_RESULT int kf_buf_put_bytes(kf_buf *b, const void *p, size_t n);
KF_RESULT int kf_buf_put_zeros(kf_buf *b, size_t n);
/* A string field (u16 length, the bytes) of at most max bytes (KF_ERR_LIMIT). */
KF_RESULT int kf_buf_put_str16(kf_buf *b, const char *s, size_t max);
/* Reserve n bytes at the write end, return where they are, advance len. */
KF_RESULT int kf_buf_put_space(kf_buf *b, size_t n, uint8_t **p);
/* Overwrite 4 bytes already written at position at (for back-patched lengths). */
KF_RESULT int kf_buf_patch_u32(kf_buf *b, size_t at, uint32_t v);

#endif
