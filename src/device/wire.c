/*
 * TTLV items for the device protocol, one at a time, checked against a
 * table of every tag the library knows (its type and its length bounds).
 */
#include "device/wire.h"

#include <string.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/meter.h"

/* What the schema says about a tag: its type and the bounds of its value's length. */
struct tag_rule {
    uint32_t tag;
    uint8_t type;
    bool is_id; /* a TextString holding a device ID or domain name */
    uint16_t min, max;
};

#define STRUCT(t)                                                                                  \
    {                                                                                              \
        t, KFD_STRUCTURE, false, 0, KFD_KMIP_MAX                                                   \
    }
#define INT32(t, ty)                                                                               \
    {                                                                                              \
        t, ty, false, 4, 4                                                                         \
    }
#define INT64(t, ty)                                                                               \
    {                                                                                              \
        t, ty, false, 8, 8                                                                         \
    }
#define ID(t)                                                                                      \
    {                                                                                              \
        t, KFD_TEXT_STRING, true, 1, KFD_ID_MAX                                                    \
    }
#define BYTES(t, lo, hi)                                                                           \
    {                                                                                              \
        t, KFD_BYTE_STRING, false, lo, hi                                                          \
    }

static const struct tag_rule schema[] = {
    /* device protocol (docs/pairing.md) */
    ID(KMIP_TAG_KEYFLEET_DEVICE_ID),
    ID(KMIP_TAG_KEYFLEET_DEVICE_ID_A),
    ID(KMIP_TAG_KEYFLEET_DEVICE_ID_B),
    ID(KMIP_TAG_KEYFLEET_DOMAIN),
    INT32(KMIP_TAG_KEYFLEET_PROTO_VERSION, KFD_INTEGER),
    INT64(KMIP_TAG_KEYFLEET_KEK_ID, KFD_LONG_INTEGER),
    INT32(KMIP_TAG_KEYFLEET_KEK_COUNT, KFD_INTEGER),
    INT32(KMIP_TAG_KEYFLEET_PAIR_ROLE, KFD_ENUMERATION),
    INT64(KMIP_TAG_KEYFLEET_COUNTER, KFD_LONG_INTEGER),
    BYTES(KMIP_TAG_KEYFLEET_NONCE, KFD_NONCE_LEN, KFD_NONCE_LEN),
    STRUCT(KMIP_TAG_KEYFLEET_KEK_VALIDITY),
    INT64(KMIP_TAG_KEYFLEET_NOT_BEFORE, KFD_DATE_TIME),
    INT64(KMIP_TAG_KEYFLEET_NOT_AFTER, KFD_DATE_TIME),
    INT32(KMIP_TAG_KEYFLEET_MAX_USES, KFD_INTEGER),
    BYTES(KMIP_TAG_KEYFLEET_SEALED_DATA, KFD_TAG_LEN, KFD_DATA_MAX + KFD_TAG_LEN),
    STRUCT(KMIP_TAG_KEYFLEET_PAIR_HEADER),
    STRUCT(KMIP_TAG_KEYFLEET_PAIR_PART),
    INT32(KMIP_TAG_KEYFLEET_LIFETIME, KFD_INTERVAL),
    STRUCT(KMIP_TAG_KEYFLEET_ACK_BODY),
    STRUCT(KMIP_TAG_KEYFLEET_PAIR_ACK),
    INT32(KMIP_TAG_KEYFLEET_ACK_STATUS, KFD_ENUMERATION),
    INT64(KMIP_TAG_KEYFLEET_DEVICE_COUNTER, KFD_LONG_INTEGER),
    BYTES(KMIP_TAG_KEYFLEET_MAC, KFD_MAC_LEN, KFD_MAC_LEN),
    STRUCT(KMIP_TAG_KEYFLEET_SESSION_HEADER),
    STRUCT(KMIP_TAG_KEYFLEET_SESSION_KEY),
    STRUCT(KMIP_TAG_KEYFLEET_SESSION_ACK),
    INT64(KMIP_TAG_KEYFLEET_SEQ, KFD_LONG_INTEGER),
    STRUCT(KMIP_TAG_KEYFLEET_SESSION_RECORD),
    STRUCT(KMIP_TAG_KEYFLEET_DEVICE_PACKAGE),
    BYTES(KMIP_TAG_KEYFLEET_MASTER_KEY, KFD_KEY_LEN, KFD_KEY_LEN),
    STRUCT(KMIP_TAG_KEYFLEET_DEVICE_STATE),
    STRUCT(KMIP_TAG_KEYFLEET_KEK_SLOT),
    INT32(KMIP_TAG_KEYFLEET_USES, KFD_INTEGER),
    INT64(KMIP_TAG_KEYFLEET_SEND_SEQ, KFD_LONG_INTEGER),
    INT64(KMIP_TAG_KEYFLEET_RECV_SEQ, KFD_LONG_INTEGER),
    BYTES(KMIP_TAG_KEYFLEET_KEY_BYTES, KFD_KEY_LEN, KFD_KEY_LEN),
    /* postage device (docs/manufacturing.md; meter*.c check the alphabets) */
    STRUCT(KMIP_TAG_KEYFLEET_METER_STATE),
    STRUCT(KMIP_TAG_KEYFLEET_METER_SLOT),
    STRUCT(KMIP_TAG_KEYFLEET_REGISTRATION),
    STRUCT(KMIP_TAG_KEYFLEET_REGISTRATION_MAC),
    {KMIP_TAG_KEYFLEET_MSN, KFD_TEXT_STRING, false, 1, KFD_METER_MSN_MAX},
    {KMIP_TAG_KEYFLEET_INDICIA, KFD_TEXT_STRING, false, 1, KFD_METER_INDICIA_MAX},
    {KMIP_TAG_KEYFLEET_COUNTRY, KFD_TEXT_STRING, false, 2, 2},
    INT64(KMIP_TAG_KEYFLEET_DATE, KFD_DATE_TIME),
    INT64(KMIP_TAG_KEYFLEET_PIECE_COUNT, KFD_LONG_INTEGER),
    INT64(KMIP_TAG_KEYFLEET_KEY_ID, KFD_LONG_INTEGER),
    /* the KMIP envelope (KMIP 1.4 section 7) */
    STRUCT(KMIP_TAG_REQUEST_MESSAGE),
    STRUCT(KMIP_TAG_REQUEST_HEADER),
    STRUCT(KMIP_TAG_RESPONSE_MESSAGE),
    STRUCT(KMIP_TAG_RESPONSE_HEADER),
    STRUCT(KMIP_TAG_PROTOCOL_VERSION),
    INT32(KMIP_TAG_PROTOCOL_VERSION_MAJOR, KFD_INTEGER),
    INT32(KMIP_TAG_PROTOCOL_VERSION_MINOR, KFD_INTEGER),
    INT32(KMIP_TAG_BATCH_COUNT, KFD_INTEGER),
    STRUCT(KMIP_TAG_BATCH_ITEM),
    INT32(KMIP_TAG_OPERATION, KFD_ENUMERATION),
    STRUCT(KMIP_TAG_REQUEST_PAYLOAD),
    STRUCT(KMIP_TAG_RESPONSE_PAYLOAD),
    INT64(KMIP_TAG_TIME_STAMP, KFD_DATE_TIME),
    INT32(KMIP_TAG_RESULT_STATUS, KFD_ENUMERATION),
    INT32(KMIP_TAG_RESULT_REASON, KFD_ENUMERATION),
    {KMIP_TAG_RESULT_MESSAGE, KFD_TEXT_STRING, false, 0, KFD_MSG_MAX},
};

static const struct tag_rule *rule_of(uint32_t tag)
{
    for (size_t i = 0; i < sizeof(schema) / sizeof(schema[0]); i++)
        if (schema[i].tag == tag)
            return &schema[i];
    return NULL;
}

static size_t padded(size_t n)
{
    return (n + 7u) & ~(size_t)7u;
}

int kfd_id_valid(const char *id)
{
    KF_ENSURE(id != NULL, KF_ERR_DEVICE_ID);
    size_t n = 0;
    for (; id[n]; n++) {
        char c = id[n];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        KF_ENSURE(ok && n < KFD_ID_MAX, KF_ERR_DEVICE_ID);
    }
    KF_ENSURE(n >= 1, KF_ERR_DEVICE_ID);
    return KF_OK;
}

/* ---- writer ---- */

static int put_head(kf_buf *b, uint32_t tag, uint8_t type, size_t len)
{
    KF_ENSURE(len <= UINT32_MAX, KF_ERR_ARG);
    KF_GUARD(kf_buf_put_u24(b, tag));
    KF_GUARD(kf_buf_put_u8(b, type));
    return kf_buf_put_u32(b, (uint32_t)len);
}

/* The writer refuses to emit what the reader would refuse: the schema binds both. */
static int put_checked_head(kf_buf *b, uint32_t tag, uint8_t type, size_t len)
{
    const struct tag_rule *rule = rule_of(tag);
    KF_ENSURE(rule && rule->type == type, KF_ERR_INTERNAL);
    KF_ENSURE(type == KFD_STRUCTURE || (len >= rule->min && len <= rule->max), KF_ERR_ARG);
    return put_head(b, tag, type, len);
}

int kfd_put_open(kf_buf *b, uint32_t tag, size_t *mark)
{
    *mark = b->len;
    return put_checked_head(b, tag, KFD_STRUCTURE, 0);
}

int kfd_put_close(kf_buf *b, size_t mark)
{
    KF_ENSURE(mark <= b->len && b->len - mark >= KFD_ITEM_HEAD, KF_ERR_INTERNAL);
    size_t len = b->len - mark - KFD_ITEM_HEAD;
    KF_ENSURE(len <= UINT32_MAX, KF_ERR_LIMIT);
    return kf_buf_patch_u32(b, mark + 4, (uint32_t)len);
}

int kfd_put_u32(kf_buf *b, uint32_t tag, uint32_t v)
{
    const struct tag_rule *rule = rule_of(tag);
    KF_ENSURE(rule && rule->min == 4 && rule->max == 4, KF_ERR_INTERNAL);
    KF_GUARD(put_head(b, tag, rule->type, 4));
    KF_GUARD(kf_buf_put_u32(b, v));
    return kf_buf_put_zeros(b, 4);
}

int kfd_put_u64(kf_buf *b, uint32_t tag, uint64_t v)
{
    const struct tag_rule *rule = rule_of(tag);
    KF_ENSURE(rule && rule->type != KFD_BYTE_STRING && rule->min == 8 && rule->max == 8,
              KF_ERR_INTERNAL);
    KF_GUARD(put_head(b, tag, rule->type, 8));
    return kf_buf_put_u64(b, v);
}

static int put_string(kf_buf *b, uint32_t tag, uint8_t type, const void *p, size_t n)
{
    KF_GUARD(put_checked_head(b, tag, type, n));
    KF_GUARD(kf_buf_put_bytes(b, p, n));
    return kf_buf_put_zeros(b, padded(n) - n);
}

int kfd_put_text(kf_buf *b, uint32_t tag, const char *s)
{
    const struct tag_rule *rule = rule_of(tag);
    KF_ENSURE(rule != NULL, KF_ERR_INTERNAL);
    if (rule->is_id)
        KF_GUARD(kfd_id_valid(s));
    return put_string(b, tag, KFD_TEXT_STRING, s, strlen(s));
}

int kfd_put_bytes(kf_buf *b, uint32_t tag, const uint8_t *p, size_t n)
{
    return put_string(b, tag, KFD_BYTE_STRING, p, n);
}

int kfd_put_bytes_space(kf_buf *b, uint32_t tag, size_t n, uint8_t **value)
{
    KF_GUARD(put_checked_head(b, tag, KFD_BYTE_STRING, n));
    /* Reserve value and padding at once: *value stays valid after the padding is put. */
    KF_GUARD(kf_buf_reserve(b, padded(n)));
    KF_GUARD(kf_buf_put_space(b, n, value));
    return kf_buf_put_zeros(b, padded(n) - n);
}

/* ---- reader ---- */

/* One item as it stands in the input. */
struct item {
    uint32_t tag;
    uint8_t type;
    uint32_t len;
    const uint8_t *value;
    size_t whole_len; /* head + padded value */
};

/* Read the head of the next item and bound it by what is left of r. */
static int peek_item(const kf_buf *r, struct item *it)
{
    kf_buf look = *r;
    KF_ENSURE(kf_buf_get_u24(&look, &it->tag) == KF_OK, KF_ERR_PAIR_MALFORMED);
    KF_ENSURE(kf_buf_get_u8(&look, &it->type) == KF_OK, KF_ERR_PAIR_MALFORMED);
    KF_ENSURE(kf_buf_get_u32(&look, &it->len) == KF_OK, KF_ERR_PAIR_MALFORMED);
    KF_ENSURE(it->len <= KFD_KMIP_MAX, KF_ERR_PAIR_MALFORMED);
    size_t value_room = padded(it->len);
    KF_ENSURE(kf_buf_remaining(&look) >= value_room, KF_ERR_PAIR_MALFORMED);
    it->value = kf_buf_read_ptr(&look);
    it->whole_len = KFD_ITEM_HEAD + value_room;
    for (size_t i = it->len; i < value_room; i++)
        KF_ENSURE(it->value[i] == 0, KF_ERR_PAIR_MALFORMED);
    return KF_OK;
}

/* Take the next item, which must be tag with the schema's type and length. */
static int take_item(kf_buf *r, uint32_t tag, struct item *it)
{
    const struct tag_rule *rule = rule_of(tag);
    KF_ENSURE(rule != NULL, KF_ERR_INTERNAL);
    KF_GUARD(peek_item(r, it));
    KF_ENSURE(it->tag == tag && it->type == rule->type, KF_ERR_PAIR_MALFORMED);
    KF_ENSURE(it->len >= rule->min && it->len <= rule->max, KF_ERR_PAIR_MALFORMED);
    /* A Structure holds whole items, each a multiple of 8 bytes. */
    KF_ENSURE(rule->type != KFD_STRUCTURE || it->len % 8 == 0, KF_ERR_PAIR_MALFORMED);
    return kf_buf_skip(r, it->whole_len) == KF_OK ? KF_OK : KF_ERR_PAIR_MALFORMED;
}

int kfd_get_open(kf_buf *r, uint32_t tag, kf_buf *inner, struct kfd_span *whole)
{
    struct item it;
    KF_GUARD(take_item(r, tag, &it));
    kf_buf_reader(inner, it.value, it.len);
    if (whole) {
        whole->p = it.value - KFD_ITEM_HEAD;
        whole->len = it.whole_len;
    }
    return KF_OK;
}

static uint64_t load_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

int kfd_get_u32(kf_buf *r, uint32_t tag, uint32_t *v)
{
    struct item it;
    KF_GUARD(take_item(r, tag, &it));
    KF_ENSURE(it.len == 4, KF_ERR_INTERNAL);
    *v = (uint32_t)load_be(it.value, 4);
    return KF_OK;
}

int kfd_get_u64(kf_buf *r, uint32_t tag, uint64_t *v)
{
    struct item it;
    KF_GUARD(take_item(r, tag, &it));
    KF_ENSURE(it.len == 8 && it.type != KFD_BYTE_STRING, KF_ERR_INTERNAL);
    *v = load_be(it.value, 8);
    return KF_OK;
}

int kfd_get_i64(kf_buf *r, uint32_t tag, int64_t *v)
{
    uint64_t u;
    KF_GUARD(kfd_get_u64(r, tag, &u));
    memcpy(v, &u, sizeof(*v)); /* two's complement, as TTLV defines it */
    return KF_OK;
}

int kfd_get_bytes(kf_buf *r, uint32_t tag, struct kfd_span *v)
{
    struct item it;
    KF_GUARD(take_item(r, tag, &it));
    KF_ENSURE(it.type == KFD_BYTE_STRING, KF_ERR_INTERNAL);
    v->p = it.value;
    v->len = it.len;
    return KF_OK;
}

int kfd_get_key(kf_buf *r, uint32_t tag, uint8_t *out, size_t n)
{
    kf_buf look = *r;
    struct kfd_span v;
    KF_GUARD(kfd_get_bytes(&look, tag, &v));
    KF_ENSURE(v.len == n, KF_ERR_PAIR_MALFORMED);
    memcpy(out, v.p, n);
    *r = look;
    return KF_OK;
}

int kfd_get_text(kf_buf *r, uint32_t tag, struct kfd_span *v)
{
    struct item it;
    KF_GUARD(take_item(r, tag, &it));
    KF_ENSURE(it.type == KFD_TEXT_STRING, KF_ERR_INTERNAL);
    v->p = it.value;
    v->len = it.len;
    return KF_OK;
}

int kfd_get_id(kf_buf *r, uint32_t tag, char out[KFD_ID_MAX + 1])
{
    kf_buf look = *r;
    struct kfd_span v;
    KF_GUARD(kfd_get_text(&look, tag, &v));
    KF_ENSURE(v.len >= 1 && v.len <= KFD_ID_MAX, KF_ERR_PAIR_MALFORMED);
    char id[KFD_ID_MAX + 1];
    memcpy(id, v.p, v.len);
    id[v.len] = '\0';
    /* strlen catches an embedded NUL, which would cut the ID short. */
    KF_ENSURE(strlen(id) == v.len && kfd_id_valid(id) == KF_OK, KF_ERR_PAIR_MALFORMED);
    memcpy(out, id, v.len + 1);
    *r = look;
    return KF_OK;
}

int kfd_skip_item(kf_buf *r)
{
    struct item it;
    KF_GUARD(peek_item(r, &it));
    return kf_buf_skip(r, it.whole_len) == KF_OK ? KF_OK : KF_ERR_PAIR_MALFORMED;
}

bool kfd_next_is(const kf_buf *r, uint32_t tag)
{
    uint32_t head;
    if (kf_buf_peek_u32(r, 0, &head) != KF_OK)
        return false;
    return (head >> 8) == tag;
}

int kfd_get_end(const kf_buf *r)
{
    KF_ENSURE(kf_buf_remaining(r) == 0, KF_ERR_PAIR_MALFORMED);
    return KF_OK;
}
