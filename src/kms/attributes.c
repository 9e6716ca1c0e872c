/*
 * The attribute model (attributes.h): the table of known attributes and
 * their client rules, conversion between the KMIP 1.x and 2.x forms, the
 * stored blob, and the audited service function that edits an object's
 * attributes and persists date-driven state changes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "attributes.h"

#define RO AF_READ_ONLY
#define OBJ AF_OBJECT

/* Rules from the "Attribute Rules" tables of KMIP 1.4 §3 and 2.1 §4. */
static const struct attr_def attr_defs[] = {
    {"Unique Identifier", KMIP_TAG_UNIQUE_IDENTIFIER, RO | OBJ},
    {"Name", KMIP_TAG_NAME, AF_MULTI},
    {"Object Type", KMIP_TAG_OBJECT_TYPE, RO | OBJ | AF_AT_CREATE},
    {"Cryptographic Algorithm", KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, RO | OBJ | AF_AT_CREATE},
    {"Cryptographic Length", KMIP_TAG_CRYPTOGRAPHIC_LENGTH, RO | OBJ | AF_AT_CREATE},
    {"Cryptographic Usage Mask", KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, RO | OBJ | AF_AT_CREATE},
    {"Cryptographic Parameters", KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS, AF_MULTI},
    {"Cryptographic Domain Parameters", KMIP_TAG_CRYPTOGRAPHIC_DOMAIN_PARAMETERS,
     RO | AF_AT_CREATE},
    {"Digest", KMIP_TAG_DIGEST, RO | AF_MULTI},
    {"State", KMIP_TAG_STATE, RO | OBJ},
    {"Initial Date", KMIP_TAG_INITIAL_DATE, RO | OBJ},
    {"Activation Date", KMIP_TAG_ACTIVATION_DATE, OBJ | AF_PRE_ACTIVE | AF_NO_DELETE},
    {"Process Start Date", KMIP_TAG_PROCESS_START_DATE, AF_LIVE | AF_NO_DELETE},
    {"Protect Stop Date", KMIP_TAG_PROTECT_STOP_DATE, AF_LIVE | AF_NO_DELETE},
    {"Deactivation Date", KMIP_TAG_DEACTIVATION_DATE, OBJ | AF_LIVE | AF_NO_DELETE},
    {"Destroy Date", KMIP_TAG_DESTROY_DATE, RO | OBJ},
    {"Compromise Occurrence Date", KMIP_TAG_COMPROMISE_OCCURRENCE_DATE, RO | OBJ},
    {"Compromise Date", KMIP_TAG_COMPROMISE_DATE, RO | OBJ},
    {"Revocation Reason", KMIP_TAG_REVOCATION_REASON, RO | OBJ},
    {"Archive Date", KMIP_TAG_ARCHIVE_DATE, RO},
    {"Object Group", KMIP_TAG_OBJECT_GROUP, AF_MULTI},
    {"Fresh", KMIP_TAG_FRESH, RO | AF_AT_CREATE},
    {"Link", KMIP_TAG_LINK, AF_MULTI},
    {"Application Specific Information", KMIP_TAG_APPLICATION_SPECIFIC_INFORMATION, AF_MULTI},
    {"Contact Information", KMIP_TAG_CONTACT_INFORMATION, 0},
    {"Last Change Date", KMIP_TAG_LAST_CHANGE_DATE, RO | OBJ},
    {"Alternative Name", KMIP_TAG_ALTERNATIVE_NAME, AF_MULTI},
    {"Key Value Location", KMIP_TAG_KEY_VALUE_LOCATION, AF_MULTI},
    {"Original Creation Date", KMIP_TAG_ORIGINAL_CREATION_DATE, RO | AF_AT_CREATE},
    {"Description", KMIP_TAG_DESCRIPTION, 0},
    {"Comment", KMIP_TAG_COMMENT, 0},
    {"Sensitive", KMIP_TAG_SENSITIVE, AF_NO_DELETE},
    {"Extractable", KMIP_TAG_EXTRACTABLE, AF_NO_DELETE},
    {"Always Sensitive", KMIP_TAG_ALWAYS_SENSITIVE, RO},
    {"Never Extractable", KMIP_TAG_NEVER_EXTRACTABLE, RO},
    {"Usage Limits", KMIP_TAG_USAGE_LIMITS, 0},
    {"Lease Time", KMIP_TAG_LEASE_TIME, RO},
    {"Digital Signature Algorithm", KMIP_TAG_DIGITAL_SIGNATURE_ALGORITHM,
     RO | AF_MULTI | AF_AT_CREATE},
    {"Certificate Type", KMIP_TAG_CERTIFICATE_TYPE, RO},
    {"Certificate Length", KMIP_TAG_CERTIFICATE_LENGTH, RO},
    {"Key Value Present", KMIP_TAG_KEY_VALUE_PRESENT, RO},
    {"Random Number Generator", KMIP_TAG_RANDOM_NUMBER_GENERATOR, RO},
    {"Key Format Type", KMIP_TAG_KEY_FORMAT_TYPE, RO | AF_AT_CREATE}, /* 2.x attribute */
    /* keyfleet: the per-domain key ID (the CLI shows it). */
    {"x-keyfleet-key-id", KMIP_TAG_KEYFLEET_KEY_ID, RO | OBJ},
};
#define N_ATTR_DEFS (sizeof(attr_defs) / sizeof(attr_defs[0]))

static int64_t now_seconds(void)
{
    return (int64_t)time(NULL);
}

const struct attr_def *attr_def_by_name(const char *name, size_t len)
{
    for (size_t i = 0; i < N_ATTR_DEFS; i++)
        if (strlen(attr_defs[i].name) == len && memcmp(attr_defs[i].name, name, len) == 0)
            return &attr_defs[i];
    return NULL;
}

const struct attr_def *attr_def_by_tag(uint32_t tag)
{
    for (size_t i = 0; i < N_ATTR_DEFS; i++)
        if (attr_defs[i].tag == tag)
            return &attr_defs[i];
    return NULL;
}

static bool is_vendor(const kf_ttlv *n)
{
    return n->tag == KMIP_TAG_ATTRIBUTE && kf_ttlv_find(n, KMIP_TAG_VENDOR_IDENTIFICATION);
}

unsigned attr_flags(const kf_ttlv *node)
{
    if (is_vendor(node)) {
        /* "y" custom attributes belong to the server (KMIP 2.1 §4.60, 1.4 §3.39). */
        const kf_ttlv *vi = kf_ttlv_find(node, KMIP_TAG_VENDOR_IDENTIFICATION);
        return AF_MULTI | (kf_ttlv_text_equals(vi, "y") ? AF_READ_ONLY : 0);
    }
    const struct attr_def *d = attr_def_by_tag(node->tag);
    return d ? d->flags : AF_READ_ONLY;
}

kf_ttlv *attr_clone(kf_arena *a, kf_ttlv *parent, const kf_ttlv *src, uint32_t tag)
{
    switch (src->type) {
    case KF_TTLV_STRUCTURE: {
        kf_ttlv *n = kf_ttlv_struct(a, parent, tag);
        for (const kf_ttlv *c = src->child; n && c; c = c->next)
            if (!attr_clone(a, n, c, c->tag))
                return NULL;
        return n;
    }
    case KF_TTLV_INTEGER:
        return kf_ttlv_add_int(a, parent, tag, src->v.i32);
    case KF_TTLV_LONG:
        return kf_ttlv_add_long(a, parent, tag, src->v.i64);
    case KF_TTLV_BIGINT:
        return kf_ttlv_add_bigint(a, parent, tag, src->v.bytes.p, src->v.bytes.len);
    case KF_TTLV_ENUM:
        return kf_ttlv_add_enum(a, parent, tag, src->v.u32);
    case KF_TTLV_BOOL:
        return kf_ttlv_add_bool(a, parent, tag, src->v.b);
    case KF_TTLV_TEXT:
        return kf_ttlv_add_text_n(a, parent, tag, (const char *)src->v.bytes.p, src->v.bytes.len);
    case KF_TTLV_BYTES:
        return kf_ttlv_add_bytes(a, parent, tag, src->v.bytes.p, src->v.bytes.len);
    case KF_TTLV_DATETIME:
        return kf_ttlv_add_datetime(a, parent, tag, src->v.i64);
    case KF_TTLV_INTERVAL:
        return kf_ttlv_add_interval(a, parent, tag, src->v.u32);
    case KF_TTLV_DTX:
        return kf_ttlv_add_dtx(a, parent, tag, src->v.i64);
    default:
        return NULL;
    }
}

static bool text_same(const kf_ttlv *x, const kf_ttlv *y)
{
    const char *s, *t;
    size_t ls, lt;
    if (kf_ttlv_get_text(x, &s, &ls) < 0 || kf_ttlv_get_text(y, &t, &lt) < 0)
        return false;
    return ls == lt && memcmp(s, t, ls) == 0;
}

bool attr_same_kind(const kf_ttlv *x, const kf_ttlv *y)
{
    if (x->tag != y->tag)
        return false;
    if (!is_vendor(x) && !is_vendor(y))
        return true;
    return text_same(kf_ttlv_find(x, KMIP_TAG_VENDOR_IDENTIFICATION),
                     kf_ttlv_find(y, KMIP_TAG_VENDOR_IDENTIFICATION)) &&
           text_same(kf_ttlv_find(x, KMIP_TAG_ATTRIBUTE_NAME),
                     kf_ttlv_find(y, KMIP_TAG_ATTRIBUTE_NAME));
}

bool attr_equal(const kf_ttlv *x, const kf_ttlv *y)
{
    kf_buf bx = {0}, by = {0};
    bool same = false;
    if (!x || !y) /* a filter or attribute without the field matches nothing (fuzz_kms) */
        return false;
    if (x->tag == y->tag && kf_buf_alloc(&bx, 0, KF_TTLV_DEFAULT_MAX_TOTAL, 0) == KF_OK &&
        kf_buf_alloc(&by, 0, KF_TTLV_DEFAULT_MAX_TOTAL, 0) == KF_OK &&
        kf_ttlv_encode(x, &bx) == KF_OK && kf_ttlv_encode(y, &by) == KF_OK)
        /* Attribute values are not secret: a plain comparison is fine. */
        same = bx.len == by.len && memcmp(bx.data, by.data, bx.len) == 0;
    kf_buf_free(&bx);
    kf_buf_free(&by);
    return same;
}

/* A custom attribute name "x-Foo"/"y-Foo" as a 2.x Vendor Attribute skeleton. */
static kf_ttlv *vendor_kind(kf_arena *a, const char *name, size_t len)
{
    if (len < 3 || (name[0] != 'x' && name[0] != 'y') || name[1] != '-')
        return NULL;
    kf_ttlv *n = kf_ttlv_struct(a, NULL, KMIP_TAG_ATTRIBUTE);
    if (!n || !kf_ttlv_add_text_n(a, n, KMIP_TAG_VENDOR_IDENTIFICATION, name, 1) ||
        !kf_ttlv_add_text_n(a, n, KMIP_TAG_ATTRIBUTE_NAME, name + 2, len - 2))
        return NULL;
    return n;
}

/* The value has the type the spec gives the tag (structures and unknown tags pass). */
int attr_check_type(const kf_ttlv *node)
{
    if (is_vendor(node))
        return kf_ttlv_find(node, KMIP_TAG_ATTRIBUTE_NAME) &&
                       kf_ttlv_find(node, KMIP_TAG_ATTRIBUTE_VALUE)
                   ? KF_OK
                   : KF_ERR_ATTRIBUTE;
    KF_ENSURE(attr_def_by_tag(node->tag) != NULL, KF_ERR_ATTRIBUTE);
    uint8_t want = kf_ttlv_tag_type(node->tag);
    KF_ENSURE(want == 0 || want == node->type, KF_ERR_ATTRIBUTE);
    return KF_OK;
}

int attr_kind_from_name(kf_arena *a, const char *name, size_t len, kf_ttlv **kind)
{
    const struct attr_def *d = attr_def_by_name(name, len);
    if (d)
        *kind = kf_ttlv_struct(a, NULL, d->tag);
    else
        *kind = vendor_kind(a, name, len);
    KF_ENSURE(*kind != NULL, KF_ERR_ATTRIBUTE);
    return KF_OK;
}

int attr_kind_from_reference(kf_arena *a, const kf_ttlv *ref, kf_ttlv **kind)
{
    uint32_t tag;
    if (kf_ttlv_get_enum(ref, &tag) == KF_OK) {
        KF_ENSURE(attr_def_by_tag(tag) != NULL, KF_ERR_ATTRIBUTE);
        *kind = kf_ttlv_struct(a, NULL, tag);
        KF_ENSURE(*kind != NULL, KF_ERR_NOMEM);
        return KF_OK;
    }
    const char *vi, *an;
    size_t vil, anl;
    KF_GUARD(kf_ttlv_get_text(kf_ttlv_find(ref, KMIP_TAG_VENDOR_IDENTIFICATION), &vi, &vil));
    KF_GUARD(kf_ttlv_get_text(kf_ttlv_find(ref, KMIP_TAG_ATTRIBUTE_NAME), &an, &anl));
    kf_ttlv *n = kf_ttlv_struct(a, NULL, KMIP_TAG_ATTRIBUTE);
    KF_ENSURE(n && kf_ttlv_add_text_n(a, n, KMIP_TAG_VENDOR_IDENTIFICATION, vi, vil) &&
                  kf_ttlv_add_text_n(a, n, KMIP_TAG_ATTRIBUTE_NAME, an, anl),
              KF_ERR_NOMEM);
    *kind = n;
    return KF_OK;
}

int attr_from_v1(kf_arena *a, const kf_ttlv *attribute, kf_ttlv **node, int32_t *index)
{
    const char *name;
    size_t len;
    KF_ENSURE(kf_ttlv_get_text(kf_ttlv_find(attribute, KMIP_TAG_ATTRIBUTE_NAME), &name, &len) ==
                  KF_OK,
              KF_ERR_REQUEST);
    const kf_ttlv *value = kf_ttlv_find(attribute, KMIP_TAG_ATTRIBUTE_VALUE);
    *index = 0;
    const kf_ttlv *ix = kf_ttlv_find(attribute, KMIP_TAG_ATTRIBUTE_INDEX);
    if (ix) {
        KF_GUARD(kf_ttlv_get_int(ix, index));
        KF_ENSURE(*index >= 0, KF_ERR_ATTRIBUTE);
    }
    KF_ENSURE(value != NULL, KF_ERR_REQUEST);
    const struct attr_def *d = attr_def_by_name(name, len);
    if (d) {
        *node = attr_clone(a, NULL, value, d->tag);
    } else {
        *node = vendor_kind(a, name, len);
        KF_ENSURE(*node != NULL, KF_ERR_ATTRIBUTE);
        KF_ENSURE(attr_clone(a, *node, value, KMIP_TAG_ATTRIBUTE_VALUE), KF_ERR_NOMEM);
    }
    KF_ENSURE(*node != NULL, KF_ERR_NOMEM);
    return attr_check_type(*node);
}

int attr_name(const kf_ttlv *node, char *out, size_t outlen)
{
    if (is_vendor(node)) {
        const char *vi, *an;
        size_t vil, anl;
        KF_GUARD(kf_ttlv_get_text(kf_ttlv_find(node, KMIP_TAG_VENDOR_IDENTIFICATION), &vi, &vil));
        KF_GUARD(kf_ttlv_get_text(kf_ttlv_find(node, KMIP_TAG_ATTRIBUTE_NAME), &an, &anl));
        int n = snprintf(out, outlen, "%.*s-%.*s", (int)vil, vi, (int)anl, an);
        KF_ENSURE(n > 0 && (size_t)n < outlen, KF_ERR_NOSPACE);
        return KF_OK;
    }
    const struct attr_def *d = attr_def_by_tag(node->tag);
    KF_ENSURE(d != NULL, KF_ERR_ATTRIBUTE);
    snprintf(out, outlen, "%s", d->name);
    return KF_OK;
}

int attr_to_v1(kf_arena *a, kf_ttlv *parent, const kf_ttlv *node, int32_t index)
{
    char name[256];
    KF_GUARD(attr_name(node, name, sizeof(name)));
    kf_ttlv *at = kf_ttlv_struct(a, parent, KMIP_TAG_ATTRIBUTE);
    KF_ENSURE(at && kf_ttlv_add_text(a, at, KMIP_TAG_ATTRIBUTE_NAME, name), KF_ERR_NOMEM);
    if (index > 0)
        KF_ENSURE(kf_ttlv_add_int(a, at, KMIP_TAG_ATTRIBUTE_INDEX, index), KF_ERR_NOMEM);
    const kf_ttlv *value = is_vendor(node) ? kf_ttlv_find(node, KMIP_TAG_ATTRIBUTE_VALUE) : node;
    KF_ENSURE(value != NULL, KF_ERR_ATTRIBUTE);
    KF_ENSURE(attr_clone(a, at, value, KMIP_TAG_ATTRIBUTE_VALUE), KF_ERR_NOMEM);
    return KF_OK;
}

int attr_put_reference(kf_arena *a, kf_ttlv *parent, const kf_ttlv *node)
{
    /* keyfleet's own extension tags (0x54xxxx) are referenced in the vendor form
     * {Vendor Identification "x", Attribute Name}, which every 2.x client can decode;
     * a bare extension tag as an enumeration is not (PyKMIP refuses it). */
    if (!is_vendor(node) && node->tag >= 0x540000u && node->tag <= 0x54FFFFu) {
        char name[96];
        KF_GUARD(attr_name(node, name, sizeof(name))); /* "x-keyfleet-..." */
        kf_ttlv *r = kf_ttlv_struct(a, parent, KMIP_TAG_ATTRIBUTE_REFERENCE);
        const char *bare = strncmp(name, "x-", 2) == 0 ? name + 2 : name;
        KF_ENSURE(r && kf_ttlv_add_text(a, r, KMIP_TAG_VENDOR_IDENTIFICATION, "x") &&
                      kf_ttlv_add_text(a, r, KMIP_TAG_ATTRIBUTE_NAME, bare),
                  KF_ERR_NOMEM);
        return KF_OK;
    }
    if (!is_vendor(node))
        return kf_ttlv_add_enum(a, parent, KMIP_TAG_ATTRIBUTE_REFERENCE, node->tag) ? KF_OK
                                                                                   : KF_ERR_NOMEM;
    kf_ttlv *r = kf_ttlv_struct(a, parent, KMIP_TAG_ATTRIBUTE_REFERENCE);
    KF_ENSURE(r && attr_clone(a, r, kf_ttlv_find(node, KMIP_TAG_VENDOR_IDENTIFICATION),
                              KMIP_TAG_VENDOR_IDENTIFICATION) &&
                  attr_clone(a, r, kf_ttlv_find(node, KMIP_TAG_ATTRIBUTE_NAME),
                             KMIP_TAG_ATTRIBUTE_NAME),
              KF_ERR_NOMEM);
    return KF_OK;
}

/* ---- the set: children of one Attributes structure ---- */

int32_t attr_index_in(const kf_ttlv *set, const kf_ttlv *node)
{
    int32_t i = 0;
    for (const kf_ttlv *c = set->child; c && c != node; c = c->next)
        i += attr_same_kind(c, node);
    return i;
}

kf_ttlv *attr_find_instance(kf_ttlv *set, const kf_ttlv *kind, int32_t index)
{
    for (kf_ttlv *c = set->child; c; c = c->next)
        if (attr_same_kind(c, kind) && index-- == 0)
            return c;
    return NULL;
}

size_t attr_count_kind(const kf_ttlv *set, const kf_ttlv *kind)
{
    size_t n = 0;
    for (const kf_ttlv *c = set->child; c; c = c->next)
        n += attr_same_kind(c, kind);
    return n;
}

void attr_remove(kf_ttlv *set, kf_ttlv *node)
{
    kf_ttlv *prev = NULL;
    for (kf_ttlv *c = set->child; c; prev = c, c = c->next) {
        if (c != node)
            continue;
        if (prev)
            prev->next = c->next;
        else
            set->child = c->next;
        if (set->last_child == c)
            set->last_child = prev;
        set->nchildren--;
        c->next = NULL;
        return;
    }
}

void attr_replace(kf_ttlv *set, kf_ttlv *old, kf_ttlv *replacement)
{
    kf_ttlv *prev = NULL;
    for (kf_ttlv *c = set->child; c; prev = c, c = c->next) {
        if (c != old)
            continue;
        replacement->next = c->next;
        if (prev)
            prev->next = replacement;
        else
            set->child = replacement;
        if (set->last_child == c)
            set->last_child = replacement;
        c->next = NULL;
        return;
    }
}

/* ---- object <-> set ---- */

static bool put_object_fields(kf_arena *a, kf_ttlv *at, const struct kf_object *obj,
                              const char *uid)
{
    bool ok = kf_ttlv_add_text(a, at, KMIP_TAG_UNIQUE_IDENTIFIER, uid) &&
              kf_ttlv_add_enum(a, at, KMIP_TAG_OBJECT_TYPE, obj->object_type) &&
              kf_ttlv_add_enum(a, at, KMIP_TAG_STATE, obj->state) &&
              kf_ttlv_add_long(a, at, KMIP_TAG_KEYFLEET_KEY_ID, (int64_t)obj->key_id);
    if (ok && obj->crypto_alg)
        ok = kf_ttlv_add_enum(a, at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, obj->crypto_alg);
    if (ok && obj->crypto_length)
        ok = kf_ttlv_add_int(a, at, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, obj->crypto_length);
    if (ok)
        ok = kf_ttlv_add_int(a, at, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, (int32_t)obj->usage_mask);
    const struct {
        uint32_t tag;
        int64_t when;
    } dates[] = {
        {KMIP_TAG_INITIAL_DATE, obj->initial_date},
        {KMIP_TAG_ACTIVATION_DATE, obj->activation_date},
        {KMIP_TAG_DEACTIVATION_DATE, obj->deactivation_date},
        {KMIP_TAG_COMPROMISE_OCCURRENCE_DATE, obj->compromise_occurrence_date},
        {KMIP_TAG_COMPROMISE_DATE, obj->compromise_date},
        {KMIP_TAG_DESTROY_DATE, obj->destroy_date},
        {KMIP_TAG_LAST_CHANGE_DATE, obj->last_change_date},
    };
    for (size_t i = 0; ok && i < sizeof(dates) / sizeof(dates[0]); i++)
        if (dates[i].when)
            ok = kf_ttlv_add_datetime(a, at, dates[i].tag, dates[i].when) != NULL;
    if (ok && obj->revocation_reason) {
        kf_ttlv *r = kf_ttlv_struct(a, at, KMIP_TAG_REVOCATION_REASON);
        ok = r && kf_ttlv_add_enum(a, r, KMIP_TAG_REVOCATION_REASON_CODE, obj->revocation_reason);
        if (ok && obj->revocation_message[0])
            ok = kf_ttlv_add_text(a, r, KMIP_TAG_REVOCATION_MESSAGE, obj->revocation_message);
    }
    return ok;
}

static int decode_blob(kf_arena *a, const struct kf_object *obj, kf_ttlv **blob)
{
    *blob = NULL;
    if (!obj->attributes || obj->attributes_len == 0)
        return KF_OK;
    KF_GUARD(kf_ttlv_decode(obj->attributes, obj->attributes_len, NULL, a, blob));
    KF_ENSURE((*blob)->tag == KMIP_TAG_ATTRIBUTES, KF_ERR_FORMAT);
    return KF_OK;
}

int attrs_load(kf_arena *a, const struct kf_object *obj, const char *uid, kf_ttlv **set)
{
    kf_ttlv *blob;
    KF_GUARD(decode_blob(a, obj, &blob));
    kf_ttlv *at = kf_ttlv_struct(a, NULL, KMIP_TAG_ATTRIBUTES);
    KF_ENSURE(at && put_object_fields(a, at, obj, uid), KF_ERR_NOMEM);
    if (obj->name[0] && !kf_ttlv_find(blob, KMIP_TAG_NAME)) {
        kf_ttlv *n = kf_ttlv_struct(a, at, KMIP_TAG_NAME);
        KF_ENSURE(n && kf_ttlv_add_text(a, n, KMIP_TAG_NAME_VALUE, obj->name) &&
                      kf_ttlv_add_enum(a, n, KMIP_TAG_NAME_TYPE,
                                       KMIP_NAME_TYPE_UNINTERPRETED_TEXT_STRING),
                  KF_ERR_NOMEM);
    }
    kf_ttlv *c = blob ? blob->child : NULL;
    while (c) {
        kf_ttlv *next = c->next;
        c->next = NULL; /* move the decoded node over: same arena */
        KF_GUARD(kf_ttlv_append(at, c));
        c = next;
    }
    *set = at;
    return KF_OK;
}

static int64_t date_of(const kf_ttlv *set, uint32_t tag)
{
    int64_t t = 0;
    if (kf_ttlv_get_datetime(kf_ttlv_find(set, tag), &t) < 0)
        t = 0;
    return t;
}

/* Encode the blob-kind children of set as one Attributes structure (malloc'd). */
static int encode_blob(const kf_ttlv *set, uint8_t **blob, size_t *blob_len)
{
    kf_arena *ta;
    kf_buf out = {0};
    *blob = NULL;
    *blob_len = 0;
    KF_GUARD(kf_arena_new(&ta, 0));
    kf_ttlv *b = kf_ttlv_struct(ta, NULL, KMIP_TAG_ATTRIBUTES);
    int rc = b ? KF_OK : KF_ERR_NOMEM;
    for (const kf_ttlv *c = set->child; rc == KF_OK && c; c = c->next)
        if (!(attr_flags(c) & AF_OBJECT) && c->tag != KMIP_TAG_KEYFLEET_DOMAIN &&
            !attr_clone(ta, b, c, c->tag))
            rc = KF_ERR_NOMEM;
    if (rc == KF_OK && b->nchildren > 0) {
        rc = kf_buf_alloc(&out, 0, KF_TTLV_DEFAULT_MAX_TOTAL, 0);
        if (rc == KF_OK)
            rc = kf_ttlv_encode(b, &out);
        if (rc == KF_OK) {
            *blob = malloc(out.len);
            if (*blob) {
                memcpy(*blob, out.data, out.len);
                *blob_len = out.len;
            } else {
                rc = KF_ERR_NOMEM;
            }
        }
        kf_buf_free(&out);
    }
    kf_arena_free(ta);
    return rc;
}

static int first_name(const kf_ttlv *set, char name[KF_OBJECT_NAME_MAX + 1])
{
    name[0] = 0;
    const kf_ttlv *n = kf_ttlv_find(set, KMIP_TAG_NAME);
    if (!n)
        return KF_OK;
    const char *s;
    size_t len;
    KF_ENSURE(kf_ttlv_get_text(kf_ttlv_find(n, KMIP_TAG_NAME_VALUE), &s, &len) == KF_OK,
              KF_ERR_ATTRIBUTE);
    KF_ENSURE(len <= KF_OBJECT_NAME_MAX && strlen(s) == len, KF_ERR_ATTRIBUTE);
    memcpy(name, s, len + 1);
    return KF_OK;
}

int attrs_store(const kf_ttlv *set, struct kf_object *obj)
{
    uint8_t *blob;
    size_t blob_len;
    char name[KF_OBJECT_NAME_MAX + 1];
    KF_GUARD(first_name(set, name));
    KF_GUARD(encode_blob(set, &blob, &blob_len));
    memcpy(obj->name, name, sizeof(obj->name));
    obj->activation_date = date_of(set, KMIP_TAG_ACTIVATION_DATE);
    obj->deactivation_date = date_of(set, KMIP_TAG_DEACTIVATION_DATE);
    free(obj->attributes);
    obj->attributes = blob;
    obj->attributes_len = blob_len;
    return KF_OK;
}

/* Usage Limits Count starts at the Total (KMIP 1.4 §3.21: set by the server). */
int attr_normalize(kf_arena *a, kf_ttlv *node)
{
    if (node->tag != KMIP_TAG_USAGE_LIMITS)
        return KF_OK;
    int64_t total, count;
    uint32_t unit;
    KF_ENSURE(kf_ttlv_get_long(kf_ttlv_find(node, KMIP_TAG_USAGE_LIMITS_TOTAL), &total) ==
                      KF_OK &&
                  total >= 0,
              KF_ERR_ATTRIBUTE);
    KF_ENSURE(kf_ttlv_get_enum(kf_ttlv_find(node, KMIP_TAG_USAGE_LIMITS_UNIT), &unit) == KF_OK &&
                  (unit == KMIP_USAGE_LIMITS_UNIT_BYTE || unit == KMIP_USAGE_LIMITS_UNIT_OBJECT),
              KF_ERR_ATTRIBUTE);
    const kf_ttlv *cn = kf_ttlv_find(node, KMIP_TAG_USAGE_LIMITS_COUNT);
    if (!cn)
        KF_ENSURE(kf_ttlv_add_long(a, node, KMIP_TAG_USAGE_LIMITS_COUNT, total), KF_ERR_NOMEM);
    else
        KF_ENSURE(kf_ttlv_get_long(cn, &count) == KF_OK && count >= 0 && count <= total,
                  KF_ERR_ATTRIBUTE);
    return KF_OK;
}

/* ---- Create / Register ---- */

static bool is_template(uint32_t tag)
{
    return tag == KMIP_TAG_TEMPLATE_ATTRIBUTE || tag == KMIP_TAG_COMMON_TEMPLATE_ATTRIBUTE ||
           tag == KMIP_TAG_PRIVATE_KEY_TEMPLATE_ATTRIBUTE ||
           tag == KMIP_TAG_PUBLIC_KEY_TEMPLATE_ATTRIBUTE;
}

static int take_domain(const kf_ttlv *value, struct create_attrs_out *out)
{
    const char *s;
    size_t len;
    KF_ENSURE(kf_ttlv_get_text(value, &s, &len) == KF_OK && len <= KF_DOMAIN_NAME_MAX &&
                  strlen(s) == len,
              KF_ERR_ATTRIBUTE);
    memcpy(out->domain, s, len + 1);
    return KF_OK;
}

/* One attribute for a new object: into out's fields, or into set (the blob). */
static int take_create_attr(kf_arena *a, kf_ttlv *set, kf_ttlv *node,
                            struct create_attrs_out *out)
{
    if (is_vendor(node)) {
        const kf_ttlv *an = kf_ttlv_find(node, KMIP_TAG_ATTRIBUTE_NAME);
        if (kf_ttlv_text_equals(kf_ttlv_find(node, KMIP_TAG_VENDOR_IDENTIFICATION), "x") &&
            kf_ttlv_text_equals(an, "keyfleet-domain"))
            return take_domain(kf_ttlv_find(node, KMIP_TAG_ATTRIBUTE_VALUE), out);
    }
    if (node->tag == KMIP_TAG_KEYFLEET_DOMAIN)
        return take_domain(node, out);
    KF_GUARD(attr_check_type(node));
    unsigned fl = attr_flags(node);
    KF_ENSURE(!(fl & AF_READ_ONLY) || (fl & AF_AT_CREATE), KF_ERR_ATTR_READ_ONLY);
    KF_ENSURE((fl & AF_MULTI) || attr_count_kind(set, node) == 0, KF_ERR_ATTR_SINGLE);
    KF_GUARD(attr_normalize(a, node));
    int32_t m;
    switch (node->tag) {
    case KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM:
        return kf_ttlv_get_enum(node, &out->alg);
    case KMIP_TAG_CRYPTOGRAPHIC_LENGTH:
        return kf_ttlv_get_int(node, &out->length);
    case KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK:
        KF_GUARD(kf_ttlv_get_int(node, &m));
        out->usage = (uint32_t)m;
        out->have_usage = true;
        return KF_OK;
    case KMIP_TAG_OBJECT_TYPE:
        return KF_OK; /* the payload's Object Type decides */
    default:
        break;
    }
    /* Kept in the set: dates go to the object fields through attrs_store, the rest to the blob. */
    return kf_ttlv_append(set, node);
}

/* Children of a Template-Attribute (1.x items) or an Attributes structure (2.x). */
static int take_create_list(kf_arena *a, kf_ttlv *set, const kf_ttlv *list,
                            struct create_attrs_out *out)
{
    for (const kf_ttlv *c = list ? list->child : NULL; c; c = c->next) {
        kf_ttlv *node;
        if (c->tag == KMIP_TAG_ATTRIBUTE && kf_ttlv_find(c, KMIP_TAG_ATTRIBUTE_NAME) &&
            !kf_ttlv_find(c, KMIP_TAG_VENDOR_IDENTIFICATION)) {
            int32_t index;
            KF_GUARD(attr_from_v1(a, c, &node, &index));
        } else if (is_template(list->tag) && c->tag == KMIP_TAG_NAME) {
            continue; /* 1.x: a Name here names a Template, which keyfleet does not keep */
        } else {
            node = attr_clone(a, NULL, c, c->tag);
            KF_ENSURE(node != NULL, KF_ERR_NOMEM);
        }
        KF_GUARD(take_create_attr(a, set, node, out));
    }
    return KF_OK;
}

int create_attrs_from_request(kf_arena *a, const kf_ttlv *req_payload,
                              struct create_attrs_out *out)
{
    memset(out, 0, sizeof(*out));
    kf_ttlv *set = kf_ttlv_struct(a, NULL, KMIP_TAG_ATTRIBUTES);
    KF_ENSURE(set != NULL, KF_ERR_NOMEM);
    for (const kf_ttlv *c = req_payload ? req_payload->child : NULL; c; c = c->next)
        if (is_template(c->tag) || c->tag == KMIP_TAG_ATTRIBUTES ||
            c->tag == KMIP_TAG_COMMON_ATTRIBUTES || c->tag == KMIP_TAG_PRIVATE_KEY_ATTRIBUTES ||
            c->tag == KMIP_TAG_PUBLIC_KEY_ATTRIBUTES)
            KF_GUARD(take_create_list(a, set, c, out));
    KF_GUARD(first_name(set, out->name));
    out->activation_date = date_of(set, KMIP_TAG_ACTIVATION_DATE);
    out->deactivation_date = date_of(set, KMIP_TAG_DEACTIVATION_DATE);
    return encode_blob(set, &out->blob, &out->blob_len);
}

/* ---- the audited edit ---- */

static int load_for_edit(kf_kms *kms, const char *uid, struct kf_domain *d,
                         struct kf_object *obj)
{
    char dname[KF_DOMAIN_NAME_MAX + 1];
    uint64_t key_id;
    KF_ENSURE(uid && kf_object_uid_parse(uid, dname, &key_id) == KF_OK, KF_ERR_OBJECT);
    int rc = kf_store_domain_get(kms->store, dname, d);
    KF_ENSURE(rc != KF_ERR_DOMAIN, KF_ERR_OBJECT);
    KF_GUARD(rc);
    KF_GUARD(kf_store_object_get(kms->store, d->id, key_id, obj));
    obj->state = kf_lifecycle_effective_state(obj->state, obj->activation_date,
                                              obj->deactivation_date, now_seconds());
    free(obj->material); /* kf_store_object_update leaves material alone when NULL */
    obj->material = NULL;
    obj->material_len = 0;
    return KF_OK;
}

/* A reached date is a lifecycle event: persist it (KMIP 1.4 §3.22 transitions 4 and 6). */
static int apply_reached_dates(struct kf_object *obj, int64_t now)
{
    uint32_t to;
    if (obj->state == KF_STATE_PRE_ACTIVE && obj->activation_date &&
        obj->activation_date <= now) {
        KF_GUARD(kf_lifecycle_transition(obj->state, KF_EV_ACTIVATION_DATE_REACHED, &to));
        obj->state = to;
    }
    if (obj->state == KF_STATE_ACTIVE && obj->deactivation_date &&
        obj->deactivation_date <= now) {
        KF_GUARD(kf_lifecycle_transition(obj->state, KF_EV_DEACTIVATION_DATE_REACHED, &to));
        obj->state = to;
    }
    return KF_OK;
}

static int edit_locked(kf_kms *kms, const char *actor, const char *op, const char *uid,
                       kms_attrs_edit_fn fn, void *ctx, struct kf_domain *d)
{
    struct kf_object obj = {0};
    kf_arena *a;
    kf_ttlv *set;
    int64_t now = now_seconds();
    KF_GUARD(kf_arena_new(&a, 0));
    int rc = kf_store_begin(kms->store);
    if (rc == KF_OK)
        rc = load_for_edit(kms, uid, d, &obj);
    uint32_t before = obj.state;
    if (rc == KF_OK)
        rc = attrs_load(a, &obj, uid, &set);
    if (rc == KF_OK)
        rc = fn(ctx, a, set, &obj);
    if (rc == KF_OK)
        rc = attrs_store(set, &obj);
    if (rc == KF_OK)
        rc = apply_reached_dates(&obj, now);
    if (rc == KF_OK) {
        obj.last_change_date = now;
        rc = kf_store_object_update(kms->store, &obj);
    }
    char detail[96] = "";
    if (rc == KF_OK && before != obj.state)
        snprintf(detail, sizeof(detail), "%s -> %s", kf_lifecycle_state_name(before),
                 kf_lifecycle_state_name(obj.state));
    if (rc == KF_OK)
        rc = kms_audit(kms, actor, op, d->name, uid, KF_OK, detail[0] ? detail : NULL);
    if (rc == KF_OK)
        rc = kf_store_commit(kms->store);
    if (rc < 0)
        kf_store_rollback(kms->store);
    kf_object_clear(&obj);
    kf_arena_free(a);
    return rc;
}

int kms_attrs_edit(kf_kms *kms, const char *actor, const char *op, const char *uid,
                   kms_attrs_edit_fn fn, void *ctx)
{
    struct kf_domain d = {0};
    pthread_mutex_lock(&kms->lock);
    int rc = edit_locked(kms, actor, op, uid, fn, ctx, &d);
    if (rc < 0)
        kms_audit_refusal(kms, actor, op, d.name, rc == KF_ERR_OBJECT ? "" : uid, rc, NULL);
    pthread_mutex_unlock(&kms->lock);
    kf_domain_clear(&d);
    return rc;
}

/* ---- Usage Limits ---- */

static int consume_in_set(kf_ttlv *ul, uint64_t bytes)
{
    uint32_t unit = KMIP_USAGE_LIMITS_UNIT_OBJECT;
    int64_t total = 0;
    KF_GUARD(kf_ttlv_get_enum(kf_ttlv_find(ul, KMIP_TAG_USAGE_LIMITS_UNIT), &unit));
    KF_GUARD(kf_ttlv_get_long(kf_ttlv_find(ul, KMIP_TAG_USAGE_LIMITS_TOTAL), &total));
    kf_ttlv *count = NULL;
    for (kf_ttlv *c = ul->child; c; c = c->next)
        if (c->tag == KMIP_TAG_USAGE_LIMITS_COUNT && c->type == KF_TTLV_LONG)
            count = c;
    KF_ENSURE(count != NULL, KF_ERR_ATTRIBUTE);
    uint64_t need = unit == KMIP_USAGE_LIMITS_UNIT_BYTE ? bytes : 1;
    KF_ENSURE(count->v.i64 >= 0 && (uint64_t)count->v.i64 >= need, KF_ERR_USAGE_LIMIT);
    count->v.i64 -= (int64_t)need;
    return KF_OK;
}

int kms_usage_limit_consume(kf_kms *kms, struct kf_object *obj, uint64_t bytes)
{
    kf_arena *a;
    kf_ttlv *blob;
    KF_GUARD(kf_arena_new(&a, 0));
    int rc = decode_blob(a, obj, &blob);
    kf_ttlv *ul = NULL;
    for (kf_ttlv *c = blob ? blob->child : NULL; rc == KF_OK && c; c = c->next)
        if (c->tag == KMIP_TAG_USAGE_LIMITS)
            ul = c;
    if (rc == KF_OK && ul) {
        uint8_t *nb;
        size_t nlen;
        rc = consume_in_set(ul, bytes);
        if (rc == KF_OK)
            rc = encode_blob(blob, &nb, &nlen);
        if (rc == KF_OK) {
            free(obj->attributes);
            obj->attributes = nb;
            obj->attributes_len = nlen;
            rc = kf_store_object_update(kms->store, obj);
        }
    }
    kf_arena_free(a);
    return rc;
}
