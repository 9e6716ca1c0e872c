/*
 * KMIP Locate: the Unique Identifiers of the objects whose attributes match
 * every attribute of the request, searched in the domains the caller may use
 * (KF_ROLE_USE), domain by domain in the store's order, inside a domain in key
 * ID order (oldest first), so Offset Items pages through a stable list.
 *
 * Matching: an attribute in the request matches if the object has an
 * instance with the same value; Name compares the Name Value only; the
 * Cryptographic Usage Mask matches when the object has every bit asked for;
 * two instances of a date attribute give an inclusive range (KMIP 1.4 §4.9).
 * Storage Status Mask: live objects are on-line storage, Destroyed ones are
 * "Destroyed Storage" (KMIP 2.x) and only found when the mask asks for them;
 * without a mask, on-line only (so a destroyed key is not located, SKFF-M-5-14).
 * keyfleet archives nothing. Object Group Member is accepted and ignored.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "attributes.h"
#include "kmip_internal.h"

#define LOCATE_MAX_DOMAINS 1024

struct locate {
    struct kmip_call *c;
    kf_ttlv *filters; /* 2.x form */
    kf_ttlv *found;   /* detached: Unique Identifiers to return */
    kf_arena *scratch;
    const char *domain;
    uint64_t offset, max; /* max 0 = no limit */
    uint32_t storage;     /* Storage Status Mask */
    uint64_t matched;
    uint64_t returned;
};

struct domain_names {
    char (*names)[KF_DOMAIN_NAME_MAX + 1];
    size_t n, cap;
};

static int collect_domain(void *ctx, const struct kf_domain *d)
{
    struct domain_names *dn = ctx;
    if (dn->n == dn->cap)
        return 1; /* stop: LOCATE_MAX_DOMAINS reached */
    snprintf(dn->names[dn->n++], KF_DOMAIN_NAME_MAX + 1, "%s", d->name);
    return KF_OK;
}

static bool is_date(const kf_ttlv *n)
{
    return n->type == KF_TTLV_DATETIME;
}

/* Request attributes in the 2.x form, whatever the protocol version. */
static int parse_filters(struct locate *l)
{
    struct kmip_call *c = l->c;
    l->filters = kf_ttlv_struct(c->arena, NULL, KMIP_TAG_ATTRIBUTES);
    KF_ENSURE(l->filters != NULL, KF_ERR_NOMEM);
    for (const kf_ttlv *a = kf_ttlv_find(c->req, KMIP_TAG_ATTRIBUTE); a;
         a = kf_ttlv_find_next(a, KMIP_TAG_ATTRIBUTE)) {
        kf_ttlv *node;
        int32_t index;
        KF_GUARD(attr_from_v1(c->arena, a, &node, &index));
        KF_GUARD(kf_ttlv_append(l->filters, node));
    }
    const kf_ttlv *attrs = kf_ttlv_find(c->req, KMIP_TAG_ATTRIBUTES);
    for (const kf_ttlv *a = attrs ? attrs->child : NULL; a; a = a->next) {
        kf_ttlv *node = attr_clone(c->arena, l->filters, a, a->tag);
        KF_ENSURE(node != NULL, KF_ERR_NOMEM);
        KF_GUARD(attr_check_type(node));
    }
    return KF_OK;
}

static int parse_paging(struct locate *l)
{
    int32_t v;
    const kf_ttlv *n;
    l->storage = KMIP_STORAGE_ON_LINE_STORAGE;
    if ((n = kf_ttlv_find(l->c->req, KMIP_TAG_STORAGE_STATUS_MASK))) {
        KF_GUARD(kf_ttlv_get_int(n, &v));
        l->storage = (uint32_t)v;
    }
    if ((n = kf_ttlv_find(l->c->req, KMIP_TAG_MAXIMUM_ITEMS))) {
        KF_GUARD(kf_ttlv_get_int(n, &v));
        KF_ENSURE(v >= 0, KF_ERR_ATTRIBUTE);
        l->max = (uint64_t)v;
    }
    if ((n = kf_ttlv_find(l->c->req, KMIP_TAG_OFFSET_ITEMS))) {
        KF_GUARD(kf_ttlv_get_int(n, &v));
        KF_ENSURE(v >= 0, KF_ERR_ATTRIBUTE);
        l->offset = (uint64_t)v;
    }
    return KF_OK;
}

static bool name_matches(const kf_ttlv *set, const kf_ttlv *want)
{
    const kf_ttlv *wv = kf_ttlv_find(want, KMIP_TAG_NAME_VALUE);
    for (const kf_ttlv *n = kf_ttlv_find(set, KMIP_TAG_NAME); n;
         n = kf_ttlv_find_next(n, KMIP_TAG_NAME))
        if (attr_equal(kf_ttlv_find(n, KMIP_TAG_NAME_VALUE), wv))
            return true;
    return false;
}

static bool mask_matches(const kf_ttlv *set, const kf_ttlv *want)
{
    int32_t have = 0;
    if (kf_ttlv_get_int(kf_ttlv_find(set, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK), &have) < 0)
        return false;
    return ((uint32_t)have & (uint32_t)want->v.i32) == (uint32_t)want->v.i32;
}

/* A date attribute given twice is a range [low, high]; once, an exact value. */
static bool date_matches(const kf_ttlv *filters, const kf_ttlv *set, const kf_ttlv *want)
{
    int64_t low = want->v.i64, high = want->v.i64, have;
    for (const kf_ttlv *f = kf_ttlv_find(filters, want->tag); f;
         f = kf_ttlv_find_next(f, want->tag)) {
        low = f->v.i64 < low ? f->v.i64 : low;
        high = f->v.i64 > high ? f->v.i64 : high;
    }
    if (kf_ttlv_get_datetime(kf_ttlv_find(set, want->tag), &have) < 0)
        return false;
    return have >= low && have <= high;
}

static bool matches(const kf_ttlv *filters, const kf_ttlv *set)
{
    for (const kf_ttlv *f = filters->child; f; f = f->next) {
        bool ok = false;
        if (f->tag == KMIP_TAG_NAME)
            ok = name_matches(set, f);
        else if (f->tag == KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK)
            ok = mask_matches(set, f);
        else if (is_date(f))
            ok = date_matches(filters, set, f);
        else
            for (const kf_ttlv *n = set->child; n && !ok; n = n->next)
                ok = attr_equal(n, f);
        if (!ok)
            return false;
    }
    return true;
}

/* Runs under the service lock: only reads obj, never calls the service. */
static int consider(void *ctx, const struct kf_object *stored)
{
    struct locate *l = ctx;
    char uid[KF_UID_MAX];
    KF_GUARD(kf_object_uid_format(l->domain, stored->key_id, uid, sizeof(uid)));
    struct kf_object obj = *stored; /* shallow: attrs_load only reads */
    obj.state = kf_lifecycle_effective_state(obj.state, obj.activation_date,
                                             obj.deactivation_date, (int64_t)time(NULL));
    bool destroyed = obj.state == KF_STATE_DESTROYED ||
                     obj.state == KF_STATE_DESTROYED_COMPROMISED;
    uint32_t where = destroyed ? KMIP_STORAGE_DESTROYED_STORAGE : KMIP_STORAGE_ON_LINE_STORAGE;
    if (!(l->storage & where))
        return KF_OK;
    kf_arena_reset(l->scratch);
    kf_ttlv *set;
    KF_GUARD(attrs_load(l->scratch, &obj, uid, &set));
    if (!matches(l->filters, set))
        return KF_OK;
    l->matched++;
    if (l->matched <= l->offset || (l->max && l->returned >= l->max))
        return KF_OK;
    l->returned++;
    return kf_ttlv_add_text(l->c->arena, l->found, KMIP_TAG_UNIQUE_IDENTIFIER, uid) ? KF_OK
                                                                                   : KF_ERR_NOMEM;
}

static int search_domains(struct locate *l)
{
    struct domain_names dn = {.cap = LOCATE_MAX_DOMAINS};
    dn.names = calloc(dn.cap, sizeof(*dn.names));
    KF_ENSURE(dn.names != NULL, KF_ERR_NOMEM);
    int rc = kf_kms_domain_list(l->c->kms, collect_domain, &dn);
    struct kf_object_filter f = {0};
    uint32_t type;
    if (kf_ttlv_get_enum(kf_ttlv_find(l->filters, KMIP_TAG_OBJECT_TYPE), &type) == KF_OK)
        f.object_type = type; /* the store can narrow by type; the rest is matched here */
    for (size_t i = 0; rc == KF_OK && i < dn.n; i++) {
        if (!kf_principal_allows(l->c->who, KF_ROLE_USE, dn.names[i]))
            continue;
        l->domain = dn.names[i];
        rc = kf_kms_list(l->c->kms, l->c->actor, dn.names[i], &f, consider, l);
    }
    free(dn.names);
    return rc;
}

/* Located Items (1.3+) is only sent when the client pages (Offset/Maximum Items),
 * which is when the total count is of use; the 1.4 test cases expect it absent otherwise. */
static bool wants_count(const struct kmip_call *c)
{
    bool paging = kf_ttlv_find(c->req, KMIP_TAG_MAXIMUM_ITEMS) ||
                  kf_ttlv_find(c->req, KMIP_TAG_OFFSET_ITEMS);
    return paging && (c->major >= 2 || c->minor >= 3);
}

int kmip_locate(struct kmip_call *c)
{
    struct locate l = {.c = c};
    KF_GUARD(parse_filters(&l));
    KF_GUARD(parse_paging(&l));
    KF_ENSURE((l.found = kf_ttlv_struct(c->arena, NULL, KMIP_TAG_RESPONSE_PAYLOAD)), KF_ERR_NOMEM);
    KF_GUARD(kf_arena_new(&l.scratch, 0));
    int rc = search_domains(&l);
    kf_arena_free(l.scratch);
    KF_GUARD(rc);
    if (wants_count(c))
        KF_ENSURE(kf_ttlv_add_int(c->arena, c->resp, KMIP_TAG_LOCATED_ITEMS,
                                  l.matched > INT32_MAX ? INT32_MAX : (int32_t)l.matched),
                  KF_ERR_NOMEM);
    kf_ttlv *n = l.found->child;
    while (n) {
        kf_ttlv *next = n->next;
        n->next = NULL;
        KF_GUARD(kf_ttlv_append(c->resp, n));
        n = next;
    }
    return KF_OK;
}
