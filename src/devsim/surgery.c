/*
 * What the attacker relay does to a message: find an item by tag, flip a
 * byte, swap the two parts of a pairing message, and name a message for the
 * log. The walk reads item headers only (through the kf_buf cursor) and
 * stops at the first malformed one: the relay also handles messages it has
 * already damaged.
 */
#include <stdlib.h>
#include <string.h>

#include "devsim/devsim.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/ttlv.h"

#define WALK_MAX_DEPTH 32

struct walk {
    uint32_t tag;
    unsigned nth, seen;
    struct ds_item_pos *pos;
    bool found;
};

static size_t pad8(uint32_t len)
{
    return (8 - len % 8) % 8;
}

/* Preorder over the items in msg[start, end); stops when the nth match is found. */
static int walk_items(const uint8_t *msg, size_t start, size_t end, unsigned depth, struct walk *w)
{
    kf_buf b;
    KF_ENSURE(depth <= WALK_MAX_DEPTH, KF_ERR_FORMAT);
    kf_buf_reader(&b, msg, end);
    KF_GUARD(kf_buf_skip(&b, start));
    while (kf_buf_remaining(&b) > 0) {
        size_t item_off = b.off;
        uint32_t tag, len;
        uint8_t type;
        if (kf_buf_get_u24(&b, &tag) < 0 || kf_buf_get_u8(&b, &type) < 0 ||
            kf_buf_get_u32(&b, &len) < 0)
            return KF_ERR_FORMAT;
        size_t value_off = b.off;
        KF_ENSURE((size_t)len + pad8(len) <= kf_buf_remaining(&b), KF_ERR_FORMAT);
        if (tag == w->tag && ++w->seen == w->nth) {
            *w->pos = (struct ds_item_pos){.item_off = item_off,
                                           .value_off = value_off,
                                           .value_len = len,
                                           .total = DS_TTLV_HEADER + len + pad8(len),
                                           .type = type};
            w->found = true;
            return KF_OK;
        }
        if (type == KF_TTLV_STRUCTURE) {
            KF_GUARD(walk_items(msg, value_off, value_off + len, depth + 1, w));
            if (w->found)
                return KF_OK;
        }
        KF_GUARD(kf_buf_skip(&b, (size_t)len + pad8(len)));
    }
    return KF_OK;
}

int ds_find_item(const uint8_t *msg, size_t len, uint32_t tag, unsigned nth,
                 struct ds_item_pos *pos)
{
    KF_ENSURE(msg && pos && nth >= 1, KF_ERR_ARG);
    struct walk w = {.tag = tag, .nth = nth, .pos = pos};
    int rc = walk_items(msg, 0, len, 1, &w);
    if (w.found)
        return KF_OK;
    return rc < 0 ? rc : KF_ERR_NOT_FOUND;
}

int ds_locate(const uint8_t *msg, size_t len, const struct ds_locator *loc, size_t *at)
{
    KF_ENSURE(msg && loc && at, KF_ERR_ARG);
    size_t base = 0, span = len;
    if (loc->by_tag) {
        struct ds_item_pos pos;
        KF_GUARD(ds_find_item(msg, len, loc->tag, loc->nth, &pos));
        base = pos.value_off;
        span = pos.value_len;
    }
    int64_t off = loc->offset;
    if (off < 0) {
        KF_ENSURE((uint64_t)(-(off + 1)) < span, KF_ERR_LIMIT);
        off += (int64_t)span;
    }
    KF_ENSURE((uint64_t)off < span, KF_ERR_LIMIT);
    *at = base + (size_t)off;
    return KF_OK;
}

int ds_swap_parts(uint8_t *msg, size_t len)
{
    struct ds_item_pos a, b;
    KF_GUARD(ds_find_item(msg, len, KMIP_TAG_KEYFLEET_PAIR_PART, 1, &a));
    size_t next = a.item_off + a.total;
    KF_ENSURE(next < len, KF_ERR_NOT_FOUND);
    /* the item right after the first part, found as the first PairPart from there */
    KF_GUARD(ds_find_item(msg + next, len - next, KMIP_TAG_KEYFLEET_PAIR_PART, 1, &b));
    KF_ENSURE(b.item_off == 0, KF_ERR_NOT_FOUND);
    size_t n = a.total + b.total;
    uint8_t *tmp = malloc(n);
    KF_ENSURE(tmp, KF_ERR_NOMEM);
    memcpy(tmp, msg + next, b.total);
    memcpy(tmp + b.total, msg + a.item_off, a.total);
    memcpy(msg + a.item_off, tmp, n);
    free(tmp);
    return KF_OK;
}

static bool value_u32(const uint8_t *msg, size_t len, uint32_t tag, uint32_t *v)
{
    struct ds_item_pos pos;
    kf_buf b;
    if (ds_find_item(msg, len, tag, 1, &pos) < 0 || pos.value_len != 4)
        return false;
    kf_buf_reader(&b, msg + pos.value_off, 4);
    return kf_buf_get_u32(&b, v) == KF_OK;
}

bool ds_item_u64(const uint8_t *msg, size_t len, uint32_t tag, uint64_t *v)
{
    struct ds_item_pos pos;
    kf_buf b;
    if (!msg || !v || ds_find_item(msg, len, tag, 1, &pos) < 0 || pos.value_len != 8 ||
        (pos.type != KF_TTLV_LONG && pos.type != KF_TTLV_DATETIME))
        return false;
    kf_buf_reader(&b, msg + pos.value_off, 8);
    return kf_buf_get_u64(&b, v) == KF_OK;
}

bool ds_item_text(const uint8_t *msg, size_t len, uint32_t tag, char *out, size_t cap)
{
    struct ds_item_pos pos;
    if (!msg || !out || !cap || ds_find_item(msg, len, tag, 1, &pos) < 0 ||
        pos.type != KF_TTLV_TEXT || pos.value_len >= cap ||
        memchr(msg + pos.value_off, 0, pos.value_len))
        return false;
    memcpy(out, msg + pos.value_off, pos.value_len);
    out[pos.value_len] = 0;
    return true;
}

/* Append to out at *used; never overflows, truncates silently. */
static void advance(size_t cap, size_t *used, int n)
{
    if (n > 0)
        *used = *used + (size_t)n < cap ? *used + (size_t)n : cap;
}

static void append_text(char *out, size_t cap, size_t *used, const char *prefix, const char *s)
{
    if (*used < cap)
        advance(cap, used, snprintf(out + *used, cap - *used, "%s%s", prefix, s));
}

static void append_num(char *out, size_t cap, size_t *used, const char *prefix, uint64_t v)
{
    if (*used < cap)
        advance(cap, used,
                snprintf(out + *used, cap - *used, "%s%llu", prefix, (unsigned long long)v));
}

static void append_hex(char *out, size_t cap, size_t *used, const char *prefix, uint32_t v)
{
    if (*used < cap)
        advance(cap, used, snprintf(out + *used, cap - *used, "%s0x%06x", prefix, (unsigned)v));
}

void ds_describe(const uint8_t *msg, size_t len, char *out, size_t cap)
{
    size_t used = 0;
    kf_buf b;
    uint32_t tag, v;
    uint64_t v64;
    if (!cap)
        return;
    out[0] = 0;
    kf_buf_reader(&b, msg, len);
    if (!msg || kf_buf_get_u24(&b, &tag) < 0) {
        append_text(out, cap, &used, "", "malformed");
        return;
    }
    const char *name = kf_ttlv_tag_name(tag);
    if (name)
        append_text(out, cap, &used, "", name);
    else
        append_hex(out, cap, &used, "", tag);
    if (tag == KMIP_TAG_REQUEST_MESSAGE || tag == KMIP_TAG_RESPONSE_MESSAGE) {
        if (value_u32(msg, len, KMIP_TAG_OPERATION, &v)) {
            const char *op = kf_ttlv_enum_name(KMIP_TAG_OPERATION, v);
            if (op)
                append_text(out, cap, &used, " ", op);
            else
                append_hex(out, cap, &used, " op=", v);
        }
        if (value_u32(msg, len, KMIP_TAG_RESULT_STATUS, &v)) {
            const char *st = kf_ttlv_enum_name(KMIP_TAG_RESULT_STATUS, v);
            if (st)
                append_text(out, cap, &used, " ", st);
        }
    }
    if (ds_item_u64(msg, len, KMIP_TAG_KEYFLEET_KEK_ID, &v64))
        append_num(out, cap, &used, " kek=", v64);
    if (ds_item_u64(msg, len, KMIP_TAG_KEYFLEET_COUNTER, &v64))
        append_num(out, cap, &used, " counter=", v64);
    if (ds_item_u64(msg, len, KMIP_TAG_KEYFLEET_SEQ, &v64))
        append_num(out, cap, &used, " seq=", v64);
}
