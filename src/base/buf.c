/*
 * The bounded cursor. Every check lives here so callers never index wire data.
 * This file allocates nothing: owned (growable) buffers come from
 * src/core/buf_owned.c, which installs the grower. The device library links
 * this module without core, so it has the same cursor and no allocator.
 */
#include "keyfleet/buf.h"

#include <stdlib.h>
#include <string.h>

#include "keyfleet/buf_grow.h"

int (*kf_buf_grower)(kf_buf *b, size_t want);

void kf_buf_reader(kf_buf *b, const uint8_t *data, size_t len)
{
    /* Read-only views never write through data; the cast is contained here. */
    b->data = (uint8_t *)(uintptr_t)data;
    b->len = len;
    b->off = 0;
    b->cap = len;
    b->max = len;
    b->flags = KF_BUF_READONLY;
}

void kf_buf_fixed(kf_buf *b, uint8_t *mem, size_t cap)
{
    b->data = mem;
    b->len = 0;
    b->off = 0;
    b->cap = cap;
    b->max = cap;
    b->flags = 0;
}

void kf_buf_reset(kf_buf *b)
{
    if ((b->flags & KF_BUF_SECRET) && b->data && b->len)
        explicit_bzero(b->data, b->len);
    b->len = 0;
    b->off = 0;
}

int kf_buf_get_bytes(kf_buf *b, uint8_t *out, size_t n)
{
    KF_ENSURE(kf_buf_remaining(b) >= n, KF_ERR_SHORT);
    if (n)
        memcpy(out, b->data + b->off, n);
    b->off += n;
    return KF_OK;
}

int kf_buf_get_ptr(kf_buf *b, size_t n, const uint8_t **p)
{
    KF_ENSURE(kf_buf_remaining(b) >= n, KF_ERR_SHORT);
    *p = b->data + b->off;
    b->off += n;
    return KF_OK;
}

int kf_buf_skip(kf_buf *b, size_t n)
{
    KF_ENSURE(kf_buf_remaining(b) >= n, KF_ERR_SHORT);
    b->off += n;
    return KF_OK;
}

static uint64_t load_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static void store_be(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = n; i > 0; i--) {
        p[i - 1] = (uint8_t)v;
        v >>= 8;
    }
}

/* Fixed widths are the hot path of every decoder: one load and a byte swap. */
static inline uint16_t load_be16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return __builtin_bswap16(v);
}
static inline uint32_t load_be32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return __builtin_bswap32(v);
}
static inline uint64_t load_be64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}

int kf_buf_get_u8(kf_buf *b, uint8_t *v)
{
    KF_ENSURE(kf_buf_remaining(b) >= 1, KF_ERR_SHORT);
    *v = b->data[b->off++];
    return KF_OK;
}

int kf_buf_get_u16(kf_buf *b, uint16_t *v)
{
    KF_ENSURE(kf_buf_remaining(b) >= 2, KF_ERR_SHORT);
    *v = load_be16(b->data + b->off);
    b->off += 2;
    return KF_OK;
}

int kf_buf_get_u24(kf_buf *b, uint32_t *v)
{
    KF_ENSURE(kf_buf_remaining(b) >= 3, KF_ERR_SHORT);
    *v = (uint32_t)load_be(b->data + b->off, 3);
    b->off += 3;
    return KF_OK;
}

int kf_buf_get_u32(kf_buf *b, uint32_t *v)
{
    KF_ENSURE(kf_buf_remaining(b) >= 4, KF_ERR_SHORT);
    *v = load_be32(b->data + b->off);
    b->off += 4;
    return KF_OK;
}

int kf_buf_get_u64(kf_buf *b, uint64_t *v)
{
    KF_ENSURE(kf_buf_remaining(b) >= 8, KF_ERR_SHORT);
    *v = load_be64(b->data + b->off);
    b->off += 8;
    return KF_OK;
}

int kf_buf_peek_u32(const kf_buf *b, size_t at, uint32_t *v)
{
    KF_ENSURE(at <= kf_buf_remaining(b) && kf_buf_remaining(b) - at >= 4, KF_ERR_SHORT);
    *v = load_be32(b->data + b->off + at);
    return KF_OK;
}

int kf_buf_sub(kf_buf *b, size_t n, kf_buf *child)
{
    KF_ENSURE(kf_buf_remaining(b) >= n, KF_ERR_SHORT);
    kf_buf_reader(child, b->data + b->off, n);
    b->off += n;
    return KF_OK;
}

int kf_buf_reserve(kf_buf *b, size_t n)
{
    KF_ENSURE(!(b->flags & KF_BUF_READONLY), KF_ERR_ARG);
    KF_ENSURE(b->cap >= b->len, KF_ERR_INTERNAL);
    if (b->cap - b->len >= n)
        return KF_OK;
    KF_ENSURE(b->flags & KF_BUF_OWNED, KF_ERR_NOSPACE);
    KF_ENSURE(n <= b->max - b->len, KF_ERR_LIMIT);
    KF_ENSURE(kf_buf_grower != NULL, KF_ERR_INTERNAL);
    return kf_buf_grower(b, b->len + n);
}

int kf_buf_put_space(kf_buf *b, size_t n, uint8_t **p)
{
    KF_GUARD(kf_buf_reserve(b, n));
    *p = b->data + b->len;
    b->len += n;
    return KF_OK;
}

int kf_buf_put_bytes(kf_buf *b, const void *p, size_t n)
{
    uint8_t *dst;
    KF_GUARD(kf_buf_put_space(b, n, &dst));
    if (n)
        memcpy(dst, p, n);
    return KF_OK;
}

int kf_buf_put_str16(kf_buf *b, const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    KF_ENSURE(n <= max && n <= UINT16_MAX, KF_ERR_LIMIT);
    KF_GUARD(kf_buf_put_u16(b, (uint16_t)n));
    return kf_buf_put_bytes(b, s, n);
}

int kf_buf_get_str16(kf_buf *b, char *dst, size_t cap, size_t max)
{
    uint16_t n;
    const uint8_t *p;
    KF_GUARD(kf_buf_get_u16(b, &n));
    KF_ENSURE(n <= max && n < cap, KF_ERR_LIMIT);
    KF_GUARD(kf_buf_get_ptr(b, n, &p));
    KF_ENSURE(memchr(p, 0, n) == NULL, KF_ERR_FORMAT);
    memcpy(dst, p, n);
    dst[n] = 0;
    return KF_OK;
}

int kf_buf_put_zeros(kf_buf *b, size_t n)
{
    uint8_t *dst;
    KF_GUARD(kf_buf_put_space(b, n, &dst));
    if (n)
        memset(dst, 0, n);
    return KF_OK;
}

static int put_be(kf_buf *b, uint64_t v, size_t n)
{
    uint8_t *dst;
    KF_GUARD(kf_buf_put_space(b, n, &dst));
    store_be(dst, v, n);
    return KF_OK;
}

int kf_buf_put_u8(kf_buf *b, uint8_t v)
{
    uint8_t *dst;
    KF_GUARD(kf_buf_put_space(b, 1, &dst));
    *dst = v;
    return KF_OK;
}
int kf_buf_put_u16(kf_buf *b, uint16_t v)
{
    uint8_t *dst;
    KF_GUARD(kf_buf_put_space(b, 2, &dst));
    v = __builtin_bswap16(v);
    memcpy(dst, &v, 2);
    return KF_OK;
}
int kf_buf_put_u24(kf_buf *b, uint32_t v)
{
    KF_ENSURE(v <= 0xffffffu, KF_ERR_ARG);
    return put_be(b, v, 3);
}
int kf_buf_put_u32(kf_buf *b, uint32_t v)
{
    uint8_t *dst;
    KF_GUARD(kf_buf_put_space(b, 4, &dst));
    v = __builtin_bswap32(v);
    memcpy(dst, &v, 4);
    return KF_OK;
}
int kf_buf_put_u64(kf_buf *b, uint64_t v)
{
    uint8_t *dst;
    KF_GUARD(kf_buf_put_space(b, 8, &dst));
    v = __builtin_bswap64(v);
    memcpy(dst, &v, 8);
    return KF_OK;
}

int kf_buf_patch_u32(kf_buf *b, size_t at, uint32_t v)
{
    KF_ENSURE(!(b->flags & KF_BUF_READONLY), KF_ERR_ARG);
    KF_ENSURE(at <= b->len && b->len - at >= 4, KF_ERR_ARG);
    store_be(b->data + at, v, 4);
    return KF_OK;
}
