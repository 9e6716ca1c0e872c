/*
 * Dictionary lookups over the generated tables (dict_gen.c) plus keyfleet's
 * extension tags and operations, which come straight from kmip_ext.h so a
 * new extension needs no regeneration.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttlv/dict.h"
#include "ttlv/internal.h"

#define KF_XT_Structure KF_TTLV_STRUCTURE
#define KF_XT_Integer KF_TTLV_INTEGER
#define KF_XT_LongInteger KF_TTLV_LONG
#define KF_XT_BigInteger KF_TTLV_BIGINT
#define KF_XT_Enumeration KF_TTLV_ENUM
#define KF_XT_Boolean KF_TTLV_BOOL
#define KF_XT_TextString KF_TTLV_TEXT
#define KF_XT_ByteString KF_TTLV_BYTES
#define KF_XT_DateTime KF_TTLV_DATETIME
#define KF_XT_Interval KF_TTLV_INTERVAL
#define KF_XT_DateTimeExtended KF_TTLV_DTX

static const struct kf_dict_tag ext_tags[] = {
#define KF_EXT_TAG(name, value, type) {(value), KF_XT_##type, -1, #name, 1},
#define KF_EXT_OP(name, value)
#include "keyfleet/kmip_ext.h"
#undef KF_EXT_TAG
#undef KF_EXT_OP
};

static const struct kf_dict_value ext_ops[] = {
#define KF_EXT_TAG(name, value, type)
#define KF_EXT_OP(name, value) {(value), #name, 1},
#include "keyfleet/kmip_ext.h"
#undef KF_EXT_TAG
#undef KF_EXT_OP
};

static const char *const type_names[] = {
    NULL,          "Structure", "Integer", "LongInteger", "BigInteger",       "Enumeration",
    "Boolean",     "TextString", "ByteString", "DateTime", "Interval", "DateTimeExtended",
};

const char *kf_ttlv_type_name(uint8_t type)
{
    return type < sizeof(type_names) / sizeof(type_names[0]) ? type_names[type] : NULL;
}

int kf_ttlv_type_by_name(const char *name, uint8_t *type)
{
    KF_ENSURE(name != NULL && type != NULL, KF_ERR_ARG);
    for (uint8_t t = 1; t < sizeof(type_names) / sizeof(type_names[0]); t++) {
        if (strcmp(type_names[t], name) == 0) {
            *type = t;
            return KF_OK;
        }
    }
    return KF_ERR_TTLV_TYPE;
}

/* First (primary) entry for tag, or NULL. */
static const struct kf_dict_tag *tag_entry(uint32_t tag)
{
    size_t lo = 0, hi = kf_dict_tag_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (kf_dict_tags[mid].tag < tag)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < kf_dict_tag_count && kf_dict_tags[lo].tag == tag)
        return &kf_dict_tags[lo];
    for (size_t i = 0; i < sizeof(ext_tags) / sizeof(ext_tags[0]); i++)
        if (ext_tags[i].tag == tag)
            return &ext_tags[i];
    return NULL;
}

const char *kf_ttlv_tag_name(uint32_t tag)
{
    const struct kf_dict_tag *e = tag_entry(tag);
    return e ? e->name : NULL;
}

uint8_t kf_ttlv_tag_type(uint32_t tag)
{
    const struct kf_dict_tag *e = tag_entry(tag);
    return e ? e->type : 0;
}

/* "0x" followed by 1..8 hex digits and nothing else. */
static bool parse_hex_u32(const char *s, uint32_t *v)
{
    if (s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
        return false;
    size_t n = strlen(s + 2);
    if (n < 1 || n > 8 || strspn(s + 2, "0123456789abcdefABCDEF") != n)
        return false;
    *v = (uint32_t)strtoul(s + 2, NULL, 16);
    return true;
}

int kf_ttlv_tag_by_name(const char *name, uint32_t *tag)
{
    KF_ENSURE(name != NULL && tag != NULL, KF_ERR_ARG);
    uint32_t v;
    if (parse_hex_u32(name, &v)) {
        KF_ENSURE(v <= 0xFFFFFF, KF_ERR_TTLV_TAG);
        *tag = v;
        return KF_OK;
    }
    for (size_t i = 0; i < kf_dict_tag_count; i++) {
        if (strcmp(kf_dict_tags[i].name, name) == 0) {
            *tag = kf_dict_tags[i].tag;
            return KF_OK;
        }
    }
    for (size_t i = 0; i < sizeof(ext_tags) / sizeof(ext_tags[0]); i++) {
        if (strcmp(ext_tags[i].name, name) == 0) {
            *tag = ext_tags[i].tag;
            return KF_OK;
        }
    }
    return KF_ERR_TTLV_TAG;
}

int kf_dict_enum_of_tag(uint32_t tag)
{
    const struct kf_dict_tag *e = tag_entry(tag);
    return e ? e->enum_id : -1;
}

bool kf_dict_enum_is_mask(int enum_id)
{
    return enum_id >= 0 && (size_t)enum_id < kf_dict_enum_count && kf_dict_enums[enum_id].is_mask;
}

static bool is_operation(int enum_id)
{
    return enum_id >= 0 && strcmp(kf_dict_enums[enum_id].title, "Operation") == 0;
}

const char *kf_dict_enum_value_name(int enum_id, uint32_t value)
{
    if (enum_id < 0 || (size_t)enum_id >= kf_dict_enum_count)
        return NULL;
    for (const struct kf_dict_value *v = kf_dict_enums[enum_id].values; v->name; v++)
        if (v->value == value && v->primary)
            return v->name;
    if (is_operation(enum_id))
        for (size_t i = 0; i < sizeof(ext_ops) / sizeof(ext_ops[0]); i++)
            if (ext_ops[i].value == value)
                return ext_ops[i].name;
    return NULL;
}

int kf_dict_enum_value_by_name(int enum_id, const char *name, uint32_t *value)
{
    KF_ENSURE(enum_id >= 0 && (size_t)enum_id < kf_dict_enum_count, KF_ERR_TTLV_TAG);
    for (const struct kf_dict_value *v = kf_dict_enums[enum_id].values; v->name; v++) {
        if (strcmp(v->name, name) == 0) {
            *value = v->value;
            return KF_OK;
        }
    }
    if (is_operation(enum_id)) {
        for (size_t i = 0; i < sizeof(ext_ops) / sizeof(ext_ops[0]); i++) {
            if (strcmp(ext_ops[i].name, name) == 0) {
                *value = ext_ops[i].value;
                return KF_OK;
            }
        }
    }
    return KF_ERR_TTLV_ENUM;
}

const char *kf_ttlv_enum_name(uint32_t tag, uint32_t value)
{
    int id = kf_dict_enum_of_tag(tag);
    return kf_dict_enum_is_mask(id) ? NULL : kf_dict_enum_value_name(id, value);
}

int kf_ttlv_enum_by_name(uint32_t tag, const char *name, uint32_t *value)
{
    KF_ENSURE(name != NULL && value != NULL, KF_ERR_ARG);
    int id = kf_dict_enum_of_tag(tag);
    KF_ENSURE(id >= 0 && !kf_dict_enum_is_mask(id), KF_ERR_TTLV_TAG);
    uint32_t v;
    if (parse_hex_u32(name, &v)) {
        *value = v;
        return KF_OK;
    }
    return kf_dict_enum_value_by_name(id, name, value);
}

const char *kf_ttlv_mask_name(uint32_t tag, uint32_t bit)
{
    int id = kf_dict_enum_of_tag(tag);
    return kf_dict_enum_is_mask(id) ? kf_dict_enum_value_name(id, bit) : NULL;
}

int kf_ttlv_mask_by_name(uint32_t tag, const char *name, uint32_t *bit)
{
    KF_ENSURE(name != NULL && bit != NULL, KF_ERR_ARG);
    int id = kf_dict_enum_of_tag(tag);
    KF_ENSURE(kf_dict_enum_is_mask(id), KF_ERR_TTLV_TAG);
    return kf_dict_enum_value_by_name(id, name, bit);
}
