/*
 * TTLV binary codec. Decoding checks every rule of KMIP 1.4/2.1 section
 * 9.1.1 (lengths per type, zero padding, Boolean 0/1) and the caller's
 * limits before it trusts a declared length, so a hostile peer can make it
 * neither read out of bounds nor allocate without bound. All reads and
 * writes go through kf_buf.
 */
#include <string.h>

#include "ttlv/internal.h"

struct decoder {
    struct kf_ttlv_limits lim;
    size_t items;
    kf_arena *arena;
};

struct kf_ttlv_limits kf_ttlv_limits_resolve(const struct kf_ttlv_limits *lim)
{
    struct kf_ttlv_limits r = {KF_TTLV_DEFAULT_MAX_DEPTH, KF_TTLV_DEFAULT_MAX_ITEMS,
                               KF_TTLV_DEFAULT_MAX_TOTAL, KF_TTLV_DEFAULT_MAX_ITEM_LEN};
    if (lim) {
        if (lim->max_depth)
            r.max_depth = lim->max_depth;
        if (lim->max_items)
            r.max_items = lim->max_items;
        if (lim->max_total)
            r.max_total = lim->max_total;
        if (lim->max_item_len)
            r.max_item_len = lim->max_item_len;
    }
    if (r.max_depth > KF_TTLV_HARD_MAX_DEPTH)
        r.max_depth = KF_TTLV_HARD_MAX_DEPTH;
    return r;
}

bool kf_ttlv_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t extra;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            extra = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i <= extra)
            return false;
        for (size_t k = 1; k <= extra; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += extra + 1;
    }
    return true;
}

/* Length rule of each type (section 9.1.1.4). */
static int check_length(uint8_t type, uint32_t len)
{
    switch (type) {
    case KF_TTLV_INTEGER:
    case KF_TTLV_ENUM:
    case KF_TTLV_INTERVAL:
        KF_ENSURE(len == 4, KF_ERR_TTLV_LENGTH);
        return KF_OK;
    case KF_TTLV_LONG:
    case KF_TTLV_BOOL:
    case KF_TTLV_DATETIME:
    case KF_TTLV_DTX:
        KF_ENSURE(len == 8, KF_ERR_TTLV_LENGTH);
        return KF_OK;
    case KF_TTLV_BIGINT:
    case KF_TTLV_STRUCTURE:
        /* Structures hold whole padded items, so their length is a multiple of 8 too. */
        KF_ENSURE(len % 8 == 0 && (len > 0 || type == KF_TTLV_STRUCTURE), KF_ERR_TTLV_LENGTH);
        return KF_OK;
    case KF_TTLV_TEXT:
    case KF_TTLV_BYTES:
        return KF_OK;
    default:
        return KF_ERR_TTLV_TYPE;
    }
}

static int check_padding(kf_buf *in, size_t n)
{
    const uint8_t *pad;
    KF_GUARD(kf_buf_get_ptr(in, n, &pad));
    for (size_t i = 0; i < n; i++)
        KF_ENSURE(pad[i] == 0, KF_ERR_TTLV_PADDING);
    return KF_OK;
}

static int decode_item(struct decoder *d, kf_buf *in, unsigned depth, kf_ttlv **out);

static int decode_children(struct decoder *d, kf_buf *body, unsigned depth, kf_ttlv *parent)
{
    while (kf_buf_remaining(body) > 0) {
        kf_ttlv *child;
        int rc = decode_item(d, body, depth + 1, &child);
        /* Inside a structure, running out means the child overruns its parent. */
        KF_ENSURE(rc != KF_ERR_SHORT, KF_ERR_TTLV_LENGTH);
        KF_GUARD(rc);
        kf_ttlv_link(parent, child);
    }
    return KF_OK;
}

static int decode_scalar(struct decoder *d, kf_buf *in, kf_ttlv *n, uint32_t len)
{
    uint32_t u32;
    uint64_t u64;
    const uint8_t *p;
    switch (n->type) {
    case KF_TTLV_INTEGER:
    case KF_TTLV_ENUM:
    case KF_TTLV_INTERVAL:
        KF_GUARD(kf_buf_get_u32(in, &u32));
        n->v.u32 = u32;
        return check_padding(in, 4);
    case KF_TTLV_LONG:
    case KF_TTLV_DATETIME:
    case KF_TTLV_DTX:
        KF_GUARD(kf_buf_get_u64(in, &u64));
        n->v.i64 = (int64_t)u64;
        return KF_OK;
    case KF_TTLV_BOOL:
        KF_GUARD(kf_buf_get_u64(in, &u64));
        KF_ENSURE(u64 <= 1, KF_ERR_TTLV_VALUE);
        n->v.b = u64 == 1;
        return KF_OK;
    default: /* Text, Bytes, Big Integer */
        KF_GUARD(kf_buf_get_ptr(in, len, &p));
        KF_ENSURE(n->type != KF_TTLV_TEXT || kf_ttlv_utf8_valid(p, len), KF_ERR_TTLV_UTF8);
        n->v.bytes.p = kf_arena_memdup(d->arena, p, len);
        KF_ENSURE(n->v.bytes.p != NULL, KF_ERR_NOMEM);
        n->v.bytes.len = len;
        return check_padding(in, kf_ttlv_pad(len));
    }
}

static int decode_item(struct decoder *d, kf_buf *in, unsigned depth, kf_ttlv **out)
{
    uint32_t tag, len;
    uint8_t type;
    KF_GUARD(kf_buf_get_u24(in, &tag));
    KF_GUARD(kf_buf_get_u8(in, &type));
    KF_GUARD(kf_buf_get_u32(in, &len));
    KF_ENSURE(depth <= d->lim.max_depth, KF_ERR_TTLV_DEPTH);
    KF_ENSURE(++d->items <= d->lim.max_items, KF_ERR_TTLV_COUNT);
    KF_ENSURE(len <= d->lim.max_item_len, KF_ERR_TTLV_ITEM_LEN);
    KF_GUARD(check_length(type, len));
    KF_ENSURE((size_t)len + kf_ttlv_pad(len) <= kf_buf_remaining(in), KF_ERR_SHORT);

    kf_ttlv *n = kf_ttlv_node_new(d->arena, tag, type);
    KF_ENSURE(n != NULL, KF_ERR_NOMEM);
    if (type == KF_TTLV_STRUCTURE) {
        kf_buf body;
        KF_GUARD(kf_buf_sub(in, len, &body));
        KF_GUARD(decode_children(d, &body, depth, n));
    } else {
        KF_GUARD(decode_scalar(d, in, n, len));
    }
    *out = n;
    return KF_OK;
}

int kf_ttlv_decode(const uint8_t *msg, size_t len, const struct kf_ttlv_limits *lim, kf_arena *a,
                   kf_ttlv **root)
{
    KF_ENSURE(root != NULL && a != NULL && (msg != NULL || len == 0), KF_ERR_ARG);
    *root = NULL;
    struct decoder d = {kf_ttlv_limits_resolve(lim), 0, a};
    KF_ENSURE(len <= d.lim.max_total, KF_ERR_TTLV_TOTAL);
    kf_buf in;
    kf_buf_reader(&in, msg, len);
    kf_ttlv *n;
    KF_GUARD(decode_item(&d, &in, 1, &n));
    KF_ENSURE(kf_buf_remaining(&in) == 0, KF_ERR_TTLV_TRAILING);
    *root = n;
    return KF_OK;
}

int kf_ttlv_message_length(const uint8_t hdr[KF_TTLV_HEADER_LEN], const struct kf_ttlv_limits *lim,
                           size_t *total)
{
    KF_ENSURE(hdr != NULL && total != NULL, KF_ERR_ARG);
    struct kf_ttlv_limits l = kf_ttlv_limits_resolve(lim);
    kf_buf in;
    uint32_t tag, len;
    uint8_t type;
    kf_buf_reader(&in, hdr, KF_TTLV_HEADER_LEN);
    KF_GUARD(kf_buf_get_u24(&in, &tag));
    KF_GUARD(kf_buf_get_u8(&in, &type));
    KF_GUARD(kf_buf_get_u32(&in, &len));
    KF_GUARD(check_length(type, len));
    size_t t = KF_TTLV_HEADER_LEN + (size_t)len + kf_ttlv_pad(len);
    KF_ENSURE(t <= l.max_total, KF_ERR_TTLV_TOTAL);
    *total = t;
    return KF_OK;
}

/* ---- encoding ---- */

static int encode_item(const kf_ttlv *n, kf_buf *out, unsigned depth);

static int encode_structure(const kf_ttlv *n, kf_buf *out, unsigned depth)
{
    size_t len_at = out->len;
    KF_GUARD(kf_buf_put_u32(out, 0)); /* patched below */
    size_t start = out->len;
    for (const kf_ttlv *c = n->child; c; c = c->next)
        KF_GUARD(encode_item(c, out, depth + 1));
    size_t len = out->len - start;
    KF_ENSURE(len <= UINT32_MAX, KF_ERR_TTLV_LENGTH);
    return kf_buf_patch_u32(out, len_at, (uint32_t)len);
}

static int encode_value(const kf_ttlv *n, kf_buf *out)
{
    switch (n->type) {
    case KF_TTLV_INTEGER:
    case KF_TTLV_ENUM:
    case KF_TTLV_INTERVAL:
        KF_GUARD(kf_buf_put_u32(out, 4));
        KF_GUARD(kf_buf_put_u32(out, n->v.u32));
        return kf_buf_put_zeros(out, 4);
    case KF_TTLV_LONG:
    case KF_TTLV_DATETIME:
    case KF_TTLV_DTX:
        KF_GUARD(kf_buf_put_u32(out, 8));
        return kf_buf_put_u64(out, (uint64_t)n->v.i64);
    case KF_TTLV_BOOL:
        KF_GUARD(kf_buf_put_u32(out, 8));
        return kf_buf_put_u64(out, n->v.b ? 1 : 0);
    case KF_TTLV_BIGINT:
        KF_ENSURE(n->v.bytes.len > 0 && n->v.bytes.len % 8 == 0, KF_ERR_TTLV_LENGTH);
        /* fall through */
    case KF_TTLV_TEXT:
    case KF_TTLV_BYTES:
        KF_ENSURE(n->v.bytes.len <= UINT32_MAX - 8, KF_ERR_TTLV_LENGTH);
        KF_ENSURE(n->v.bytes.p != NULL || n->v.bytes.len == 0, KF_ERR_ARG);
        KF_GUARD(kf_buf_put_u32(out, (uint32_t)n->v.bytes.len));
        KF_GUARD(kf_buf_put_bytes(out, n->v.bytes.p, n->v.bytes.len));
        return kf_buf_put_zeros(out, kf_ttlv_pad(n->v.bytes.len));
    default:
        return KF_ERR_TTLV_TYPE;
    }
}

static int encode_item(const kf_ttlv *n, kf_buf *out, unsigned depth)
{
    KF_ENSURE(depth <= KF_TTLV_HARD_MAX_DEPTH, KF_ERR_TTLV_DEPTH);
    KF_ENSURE(n->tag <= 0xFFFFFF, KF_ERR_ARG);
    KF_GUARD(kf_buf_put_u24(out, n->tag));
    KF_GUARD(kf_buf_put_u8(out, n->type));
    if (n->type == KF_TTLV_STRUCTURE)
        return encode_structure(n, out, depth);
    return encode_value(n, out);
}

int kf_ttlv_encode(const kf_ttlv *root, kf_buf *out)
{
    KF_ENSURE(root != NULL && out != NULL, KF_ERR_ARG);
    size_t mark = out->len;
    int rc = encode_item(root, out, 1);
    if (rc < 0)
        out->len = mark; /* leave no half-written item behind */
    return rc;
}
