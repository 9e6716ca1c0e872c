/* The TTLV tree: arena-allocated nodes, builders, lookup and typed getters. */
#include <string.h>

#include "ttlv/internal.h"

kf_ttlv *kf_ttlv_node_new(kf_arena *a, uint32_t tag, uint8_t type)
{
    kf_ttlv *n = kf_arena_alloc(a, sizeof(*n));
    if (n) {
        n->tag = tag;
        n->type = type;
    }
    return n;
}

void kf_ttlv_link(kf_ttlv *parent, kf_ttlv *node)
{
    if (parent->last_child)
        parent->last_child->next = node;
    else
        parent->child = node;
    parent->last_child = node;
    parent->nchildren++;
}

int kf_ttlv_append(kf_ttlv *parent, kf_ttlv *node)
{
    KF_ENSURE(parent != NULL && node != NULL && node->next == NULL && parent != node, KF_ERR_ARG);
    KF_ENSURE(parent->type == KF_TTLV_STRUCTURE, KF_ERR_TTLV_TYPE);
    kf_ttlv_link(parent, node);
    return KF_OK;
}

kf_ttlv *kf_ttlv_request(kf_arena *a, int32_t major, int32_t minor, uint32_t op, kf_ttlv **payload)
{
    *payload = NULL;
    kf_ttlv *msg = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    kf_ttlv *hdr = msg ? kf_ttlv_struct(a, msg, KMIP_TAG_REQUEST_HEADER) : NULL;
    kf_ttlv *pv = hdr ? kf_ttlv_struct(a, hdr, KMIP_TAG_PROTOCOL_VERSION) : NULL;
    kf_ttlv *bi = NULL;
    if (pv && kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR, major) &&
        kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MINOR, minor) &&
        kf_ttlv_add_int(a, hdr, KMIP_TAG_BATCH_COUNT, 1))
        bi = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
    if (!bi || !kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, op))
        return NULL;
    *payload = kf_ttlv_struct(a, bi, KMIP_TAG_REQUEST_PAYLOAD);
    return *payload ? msg : NULL;
}

/* New node linked under parent (if any); NULL on exhaustion or a non-structure parent. */
static kf_ttlv *add(kf_arena *a, kf_ttlv *parent, uint32_t tag, uint8_t type)
{
    if (parent && parent->type != KF_TTLV_STRUCTURE)
        return NULL;
    if (tag > 0xFFFFFF)
        return NULL;
    kf_ttlv *n = kf_ttlv_node_new(a, tag, type);
    if (n && parent)
        kf_ttlv_link(parent, n);
    return n;
}

kf_ttlv *kf_ttlv_struct(kf_arena *a, kf_ttlv *parent, uint32_t tag)
{
    return add(a, parent, tag, KF_TTLV_STRUCTURE);
}

kf_ttlv *kf_ttlv_add_int(kf_arena *a, kf_ttlv *parent, uint32_t tag, int32_t v)
{
    kf_ttlv *n = add(a, parent, tag, KF_TTLV_INTEGER);
    if (n)
        n->v.i32 = v;
    return n;
}

kf_ttlv *kf_ttlv_add_enum(kf_arena *a, kf_ttlv *parent, uint32_t tag, uint32_t v)
{
    kf_ttlv *n = add(a, parent, tag, KF_TTLV_ENUM);
    if (n)
        n->v.u32 = v;
    return n;
}

static kf_ttlv *add_i64(kf_arena *a, kf_ttlv *parent, uint32_t tag, uint8_t type, int64_t v)
{
    kf_ttlv *n = add(a, parent, tag, type);
    if (n)
        n->v.i64 = v;
    return n;
}

kf_ttlv *kf_ttlv_add_long(kf_arena *a, kf_ttlv *parent, uint32_t tag, int64_t v)
{
    return add_i64(a, parent, tag, KF_TTLV_LONG, v);
}

kf_ttlv *kf_ttlv_add_datetime(kf_arena *a, kf_ttlv *parent, uint32_t tag, int64_t seconds)
{
    return add_i64(a, parent, tag, KF_TTLV_DATETIME, seconds);
}

kf_ttlv *kf_ttlv_add_dtx(kf_arena *a, kf_ttlv *parent, uint32_t tag, int64_t microseconds)
{
    return add_i64(a, parent, tag, KF_TTLV_DTX, microseconds);
}

kf_ttlv *kf_ttlv_add_interval(kf_arena *a, kf_ttlv *parent, uint32_t tag, uint32_t seconds)
{
    kf_ttlv *n = add(a, parent, tag, KF_TTLV_INTERVAL);
    if (n)
        n->v.u32 = seconds;
    return n;
}

kf_ttlv *kf_ttlv_add_bool(kf_arena *a, kf_ttlv *parent, uint32_t tag, bool v)
{
    kf_ttlv *n = add(a, parent, tag, KF_TTLV_BOOL);
    if (n)
        n->v.b = v;
    return n;
}

static kf_ttlv *add_blob(kf_arena *a, kf_ttlv *parent, uint32_t tag, uint8_t type, const void *p,
                         size_t len)
{
    if (!p && len)
        return NULL;
    /* Copy first so a failed copy leaves no half-built node in the parent. */
    const uint8_t *copy = kf_arena_memdup(a, p, len);
    if (!copy)
        return NULL;
    kf_ttlv *n = add(a, parent, tag, type);
    if (n) {
        n->v.bytes.p = copy;
        n->v.bytes.len = len;
    }
    return n;
}

kf_ttlv *kf_ttlv_add_text(kf_arena *a, kf_ttlv *parent, uint32_t tag, const char *s)
{
    if (!s)
        return NULL;
    return add_blob(a, parent, tag, KF_TTLV_TEXT, s, strlen(s));
}

kf_ttlv *kf_ttlv_add_text_n(kf_arena *a, kf_ttlv *parent, uint32_t tag, const char *s, size_t n)
{
    return add_blob(a, parent, tag, KF_TTLV_TEXT, s, n);
}

kf_ttlv *kf_ttlv_add_bytes(kf_arena *a, kf_ttlv *parent, uint32_t tag, const uint8_t *p, size_t n)
{
    return add_blob(a, parent, tag, KF_TTLV_BYTES, p, n);
}

kf_ttlv *kf_ttlv_add_bigint(kf_arena *a, kf_ttlv *parent, uint32_t tag, const uint8_t *p, size_t n)
{
    if ((!p && n) || n > SIZE_MAX - 16)
        return NULL;
    size_t padded = n == 0 ? 8 : n + kf_ttlv_pad(n);
    uint8_t *v = kf_arena_alloc(a, padded);
    if (!v)
        return NULL;
    /* Sign-extend on the left, as KMIP requires for Big Integers. */
    uint8_t fill = (n > 0 && (p[0] & 0x80)) ? 0xFF : 0x00;
    memset(v, fill, padded - n);
    if (n)
        memcpy(v + (padded - n), p, n);
    kf_ttlv *node = add(a, parent, tag, KF_TTLV_BIGINT);
    if (node) {
        node->v.bytes.p = v;
        node->v.bytes.len = padded;
    }
    return node;
}

/* ---- lookup ---- */

const kf_ttlv *kf_ttlv_find(const kf_ttlv *parent, uint32_t tag)
{
    if (!parent || parent->type != KF_TTLV_STRUCTURE)
        return NULL;
    for (const kf_ttlv *c = parent->child; c; c = c->next)
        if (c->tag == tag)
            return c;
    return NULL;
}

const kf_ttlv *kf_ttlv_find_next(const kf_ttlv *after, uint32_t tag)
{
    if (!after)
        return NULL;
    for (const kf_ttlv *c = after->next; c; c = c->next)
        if (c->tag == tag)
            return c;
    return NULL;
}

const kf_ttlv *kf_ttlv_find_path(const kf_ttlv *root, const uint32_t *path)
{
    const kf_ttlv *n = root;
    for (; n && path && *path; path++)
        n = kf_ttlv_find(n, *path);
    return n;
}

size_t kf_ttlv_count(const kf_ttlv *parent, uint32_t tag)
{
    size_t count = 0;
    for (const kf_ttlv *c = kf_ttlv_find(parent, tag); c; c = kf_ttlv_find_next(c, tag))
        count++;
    return count;
}

/* ---- typed getters ---- */

static int expect(const kf_ttlv *n, uint8_t type)
{
    KF_ENSURE(n != NULL, KF_ERR_TTLV_MISSING);
    KF_ENSURE(n->type == type, KF_ERR_TTLV_TYPE);
    return KF_OK;
}

int kf_ttlv_get_int(const kf_ttlv *n, int32_t *v)
{
    KF_GUARD(expect(n, KF_TTLV_INTEGER));
    *v = n->v.i32;
    return KF_OK;
}

int kf_ttlv_get_enum(const kf_ttlv *n, uint32_t *v)
{
    KF_GUARD(expect(n, KF_TTLV_ENUM));
    *v = n->v.u32;
    return KF_OK;
}

int kf_ttlv_get_interval(const kf_ttlv *n, uint32_t *seconds)
{
    KF_GUARD(expect(n, KF_TTLV_INTERVAL));
    *seconds = n->v.u32;
    return KF_OK;
}

int kf_ttlv_get_long(const kf_ttlv *n, int64_t *v)
{
    KF_GUARD(expect(n, KF_TTLV_LONG));
    *v = n->v.i64;
    return KF_OK;
}

int kf_ttlv_get_datetime(const kf_ttlv *n, int64_t *seconds)
{
    KF_GUARD(expect(n, KF_TTLV_DATETIME));
    *seconds = n->v.i64;
    return KF_OK;
}

int kf_ttlv_get_dtx(const kf_ttlv *n, int64_t *microseconds)
{
    KF_GUARD(expect(n, KF_TTLV_DTX));
    *microseconds = n->v.i64;
    return KF_OK;
}

int kf_ttlv_get_bool(const kf_ttlv *n, bool *v)
{
    KF_GUARD(expect(n, KF_TTLV_BOOL));
    *v = n->v.b;
    return KF_OK;
}

int kf_ttlv_get_text(const kf_ttlv *n, const char **s, size_t *len)
{
    KF_GUARD(expect(n, KF_TTLV_TEXT));
    *s = (const char *)n->v.bytes.p;
    if (len)
        *len = n->v.bytes.len;
    return KF_OK;
}

int kf_ttlv_get_bytes(const kf_ttlv *n, const uint8_t **p, size_t *len)
{
    KF_GUARD(expect(n, KF_TTLV_BYTES));
    *p = n->v.bytes.p;
    *len = n->v.bytes.len;
    return KF_OK;
}

int kf_ttlv_get_bigint(const kf_ttlv *n, const uint8_t **p, size_t *len)
{
    KF_GUARD(expect(n, KF_TTLV_BIGINT));
    *p = n->v.bytes.p;
    *len = n->v.bytes.len;
    return KF_OK;
}

bool kf_ttlv_text_equals(const kf_ttlv *n, const char *s)
{
    if (!n || !s || n->type != KF_TTLV_TEXT)
        return false;
    size_t len = strlen(s);
    return len == n->v.bytes.len && memcmp(n->v.bytes.p, s, len) == 0;
}
