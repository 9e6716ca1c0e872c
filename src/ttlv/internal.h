/* Internal helpers shared by the TTLV codec, tree, XML and dump code. */
#ifndef KF_TTLV_INTERNAL_H
#define KF_TTLV_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/ttlv.h"

/* Hard ceiling on nesting whatever the caller asks, to bound recursion. */
#define KF_TTLV_HARD_MAX_DEPTH 256u

/* Caller limits with zero fields replaced by the defaults. */
struct kf_ttlv_limits kf_ttlv_limits_resolve(const struct kf_ttlv_limits *lim);

/* Bytes of padding after a value of n bytes. */
static inline size_t kf_ttlv_pad(size_t n)
{
    return (8 - (n & 7)) & 7;
}

/* True if p[0..n) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
bool kf_ttlv_utf8_valid(const uint8_t *p, size_t n);

/* A detached node of the given type (zeroed value); NULL when the arena is full. */
kf_ttlv *kf_ttlv_node_new(kf_arena *a, uint32_t tag, uint8_t type);
/* Link node as parent's last child (parent must be a structure). */
void kf_ttlv_link(kf_ttlv *parent, kf_ttlv *node);

/* Date-Time helpers: seconds since the epoch <-> civil time (UTC). */
struct kf_civil {
    int64_t year;
    unsigned month, day, hour, min, sec;
};
void kf_civil_from_seconds(int64_t t, struct kf_civil *c);
/* false when the fields are out of range or the result overflows int64. */
bool kf_seconds_from_civil(const struct kf_civil *c, int64_t *t);

/* Dictionary: the enumeration index a tag carries (-1 none) and whether it is a mask. */
int kf_dict_enum_of_tag(uint32_t tag);
const char *kf_dict_enum_value_name(int enum_id, uint32_t value);
int kf_dict_enum_value_by_name(int enum_id, const char *name, uint32_t *value);
bool kf_dict_enum_is_mask(int enum_id);

/* The tag whose enumeration or mask names node's value: an Attribute Value
 * takes its meaning from the Attribute Name before it (KMIP 1.x attributes). */
uint32_t kf_ttlv_value_context(const kf_ttlv *node, const kf_ttlv *prev);

#endif
