/*
 * KMIP attribute operations in both protocol forms: Get Attributes, Get
 * Attribute List, Add / Modify / Delete Attribute and (2.x) Set Attribute.
 * KMIP 1.x names attributes by text (Attribute Name + Attribute Index), 2.x by
 * tag (Attribute Reference, Current/New Attribute); both are converted to the
 * one model of attributes.h so the rules (read-only, single-valued, state
 * conditions) are applied once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "attributes.h"
#include "kmip_internal.h"

static bool v1(const struct kmip_call *c)
{
    return c->major < 2;
}

static const char *call_uid(struct kmip_call *c)
{
    const char *uid = kmip_text(c, c->req, KMIP_TAG_UNIQUE_IDENTIFIER);
    if (!uid && c->id_placeholder && c->id_placeholder[0])
        uid = c->id_placeholder;
    if (!uid)
        snprintf(c->message, sizeof(c->message), "the request needs a Unique Identifier");
    return uid;
}

static int answer_uid(struct kmip_call *c, const char *uid)
{
    return kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER, uid) ? KF_OK
                                                                                 : KF_ERR_NOMEM;
}

/* Load the object's attribute set for reading (audited as Get Attributes). */
static int read_set(struct kmip_call *c, const char *uid, const char *op, kf_ttlv **set)
{
    struct kf_object obj = {0};
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_USE, uid, op));
    KF_GUARD(kf_kms_get(c->kms, c->actor, uid, &obj, NULL));
    int rc = attrs_load(c->arena, &obj, uid, set);
    kf_object_clear(&obj);
    return rc;
}

/* Every instance of kind in set, in the request's form, appended to out. */
static int put_instances(struct kmip_call *c, kf_ttlv *out, const kf_ttlv *set,
                         const kf_ttlv *kind)
{
    for (const kf_ttlv *n = set->child; n; n = n->next) {
        if (kind && !attr_same_kind(n, kind))
            continue;
        if (v1(c))
            KF_GUARD(attr_to_v1(c->arena, out, n, attr_index_in(set, n)));
        else
            KF_ENSURE(attr_clone(c->arena, out, n, n->tag), KF_ERR_NOMEM);
    }
    return KF_OK;
}

int kmip_attrs_get_attributes(struct kmip_call *c)
{
    const char *uid = call_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    kf_ttlv *set;
    KF_GUARD(read_set(c, uid, "Get Attributes", &set));
    KF_GUARD(answer_uid(c, uid));
    kf_ttlv *out = c->resp;
    if (!v1(c))
        KF_ENSURE((out = kf_ttlv_struct(c->arena, c->resp, KMIP_TAG_ATTRIBUTES)), KF_ERR_NOMEM);
    uint32_t selector = v1(c) ? KMIP_TAG_ATTRIBUTE_NAME : KMIP_TAG_ATTRIBUTE_REFERENCE;
    if (!kf_ttlv_find(c->req, selector))
        return put_instances(c, out, set, NULL);
    for (const kf_ttlv *s = kf_ttlv_find(c->req, selector); s; s = kf_ttlv_find_next(s, selector)) {
        kf_ttlv *kind;
        const char *name;
        size_t len;
        int rc = v1(c) ? kf_ttlv_get_text(s, &name, &len) : KF_OK;
        if (rc == KF_OK)
            rc = v1(c) ? attr_kind_from_name(c->arena, name, len, &kind)
                       : attr_kind_from_reference(c->arena, s, &kind);
        if (rc == KF_ERR_ATTRIBUTE)
            continue; /* an attribute keyfleet does not know: the object has none */
        KF_GUARD(rc);
        KF_GUARD(put_instances(c, out, set, kind));
    }
    return KF_OK;
}

int kmip_get_attribute_list(struct kmip_call *c)
{
    const char *uid = call_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    kf_ttlv *set;
    KF_GUARD(read_set(c, uid, "Get Attribute List", &set));
    KF_GUARD(answer_uid(c, uid));
    for (const kf_ttlv *n = set->child; n; n = n->next) {
        if (attr_index_in(set, n) != 0)
            continue; /* one entry per attribute, not per instance */
        if (!v1(c)) {
            KF_GUARD(attr_put_reference(c->arena, c->resp, n));
            continue;
        }
        char name[256];
        KF_GUARD(attr_name(n, name, sizeof(name)));
        KF_ENSURE(kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_ATTRIBUTE_NAME, name),
                  KF_ERR_NOMEM);
    }
    return KF_OK;
}

/* ---- changes ---- */

enum edit_kind { EDIT_ADD, EDIT_MODIFY, EDIT_DELETE, EDIT_SET };

struct edit {
    struct kmip_call *c;
    enum edit_kind kind;
    kf_ttlv *node;    /* new value (add, modify, set) */
    kf_ttlv *current; /* 2.x Current Attribute, or NULL */
    kf_ttlv *which;   /* delete: kind to delete */
    bool all;         /* delete every instance (2.x by Attribute Reference) */
    int32_t index;    /* 1.x Attribute Index */
    bool by_index;    /* 1.x: instance chosen by index */
};

/* The client rules of KMIP 1.4 §3 / 2.1 §4 for changing one attribute now. */
static int check_changeable(const kf_ttlv *node, const struct kf_object *obj, bool deleting)
{
    unsigned fl = attr_flags(node);
    KF_ENSURE(!(fl & AF_READ_ONLY), KF_ERR_ATTR_READ_ONLY);
    KF_ENSURE(!deleting || !(fl & AF_NO_DELETE), KF_ERR_ATTR_READ_ONLY);
    if (fl & AF_PRE_ACTIVE)
        KF_ENSURE(obj->state == KF_STATE_PRE_ACTIVE, KF_ERR_STATE);
    if (fl & AF_LIVE)
        KF_ENSURE(obj->state == KF_STATE_PRE_ACTIVE || obj->state == KF_STATE_ACTIVE,
                  KF_ERR_STATE);
    return KF_OK;
}

/* A new Usage Limits keeps what was already used (the client may change Total/Unit only). */
static int carry_usage_count(struct edit *e, const kf_ttlv *old)
{
    int64_t count, total;
    if (e->node->tag != KMIP_TAG_USAGE_LIMITS || !old ||
        kf_ttlv_find(e->node, KMIP_TAG_USAGE_LIMITS_COUNT) ||
        kf_ttlv_get_long(kf_ttlv_find(old, KMIP_TAG_USAGE_LIMITS_COUNT), &count) < 0 ||
        kf_ttlv_get_long(kf_ttlv_find(e->node, KMIP_TAG_USAGE_LIMITS_TOTAL), &total) < 0)
        return KF_OK;
    KF_ENSURE(kf_ttlv_add_long(e->c->arena, e->node, KMIP_TAG_USAGE_LIMITS_COUNT,
                               count < total ? count : total),
              KF_ERR_NOMEM);
    return KF_OK;
}

/* 1.x answers with the attribute as it now is (deleted: as it was). */
static int echo_v1(struct edit *e, const kf_ttlv *set, const kf_ttlv *node, int32_t index)
{
    if (!v1(e->c))
        return KF_OK;
    return attr_to_v1(e->c->arena, e->c->resp, node, set ? attr_index_in(set, node) : index);
}

/* The instance a Modify/Delete/Set acts on; NULL with *rc set when there is none. */
static kf_ttlv *target_instance(struct edit *e, kf_ttlv *set, const kf_ttlv *kind, int *rc)
{
    *rc = KF_OK;
    if (e->by_index) {
        kf_ttlv *t = attr_find_instance(set, kind, e->index);
        if (!t)
            *rc = KF_ERR_ATTR_NOT_FOUND;
        return t;
    }
    if (e->current) {
        for (kf_ttlv *n = set->child; n; n = n->next)
            if (attr_equal(n, e->current))
                return n;
        *rc = KF_ERR_ATTR_NOT_FOUND;
        return NULL;
    }
    size_t count = attr_count_kind(set, kind);
    *rc = count == 0 ? KF_ERR_ATTR_NOT_FOUND : count > 1 ? KF_ERR_ATTR_MULTI : KF_OK;
    return count == 1 ? attr_find_instance(set, kind, 0) : NULL;
}

static int do_add(struct edit *e, kf_arena *a, kf_ttlv *set, const struct kf_object *obj)
{
    KF_GUARD(check_changeable(e->node, obj, false));
    KF_ENSURE((attr_flags(e->node) & AF_MULTI) || attr_count_kind(set, e->node) == 0,
              KF_ERR_ATTR_SINGLE);
    KF_GUARD(attr_normalize(a, e->node));
    KF_GUARD(kf_ttlv_append(set, e->node));
    return echo_v1(e, set, e->node, 0);
}

static int do_replace(struct edit *e, kf_arena *a, kf_ttlv *set, const struct kf_object *obj,
                      kf_ttlv *old)
{
    KF_GUARD(check_changeable(e->node, obj, false));
    KF_GUARD(carry_usage_count(e, old));
    KF_GUARD(attr_normalize(a, e->node));
    attr_replace(set, old, e->node);
    return echo_v1(e, set, e->node, 0);
}

static int do_delete(struct edit *e, kf_ttlv *set, const struct kf_object *obj)
{
    int rc;
    if (e->all) {
        KF_ENSURE(attr_count_kind(set, e->which) > 0, KF_ERR_ATTR_NOT_FOUND);
        KF_GUARD(check_changeable(e->which, obj, true));
        kf_ttlv *n;
        while ((n = attr_find_instance(set, e->which, 0)))
            attr_remove(set, n);
        return KF_OK;
    }
    kf_ttlv *t = target_instance(e, set, e->which, &rc);
    KF_GUARD(rc);
    KF_GUARD(check_changeable(t, obj, true));
    int32_t index = attr_index_in(set, t);
    attr_remove(set, t);
    return echo_v1(e, NULL, t, index);
}

static int apply_edit(void *ctx, kf_arena *a, kf_ttlv *set, const struct kf_object *obj)
{
    struct edit *e = ctx;
    int rc;
    kf_ttlv *old;
    switch (e->kind) {
    case EDIT_ADD:
        return do_add(e, a, set, obj);
    case EDIT_MODIFY:
        old = target_instance(e, set, e->node, &rc);
        KF_GUARD(rc == KF_ERR_ATTR_NOT_FOUND ? check_changeable(e->node, obj, false) : KF_OK);
        KF_GUARD(rc);
        return do_replace(e, a, set, obj, old);
    case EDIT_SET:
        if (attr_count_kind(set, e->node) == 0)
            return do_add(e, a, set, obj);
        old = target_instance(e, set, e->node, &rc);
        KF_GUARD(rc);
        return do_replace(e, a, set, obj, old);
    case EDIT_DELETE:
        return do_delete(e, set, obj);
    }
    return KF_ERR_INTERNAL;
}

/* The attribute a request carries: 1.x Attribute, or 2.x New Attribute {attribute}. */
static int request_attribute(struct kmip_call *c, struct edit *e)
{
    if (v1(c)) {
        const kf_ttlv *at = kf_ttlv_find(c->req, KMIP_TAG_ATTRIBUTE);
        KF_ENSURE(at != NULL, KF_ERR_REQUEST);
        KF_GUARD(attr_from_v1(c->arena, at, &e->node, &e->index));
        e->by_index = kf_ttlv_find(at, KMIP_TAG_ATTRIBUTE_INDEX) != NULL;
        return KF_OK;
    }
    const kf_ttlv *na = kf_ttlv_find(c->req, KMIP_TAG_NEW_ATTRIBUTE);
    KF_ENSURE(na && na->child, KF_ERR_REQUEST);
    KF_ENSURE((e->node = attr_clone(c->arena, NULL, na->child, na->child->tag)), KF_ERR_NOMEM);
    KF_GUARD(attr_check_type(e->node));
    const kf_ttlv *ca = kf_ttlv_find(c->req, KMIP_TAG_CURRENT_ATTRIBUTE);
    if (ca) {
        KF_ENSURE(ca->child && ca->child->tag == e->node->tag, KF_ERR_REQUEST);
        e->current = ca->child;
    }
    return KF_OK;
}

static int run_edit(struct kmip_call *c, struct edit *e, const char *op)
{
    const char *uid = call_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_MANAGE, uid, op));
    KF_GUARD(answer_uid(c, uid));
    e->c = c;
    return kms_attrs_edit(c->kms, c->actor, op, uid, apply_edit, e);
}

int kmip_add_attribute(struct kmip_call *c)
{
    struct edit e = {.kind = EDIT_ADD};
    KF_GUARD(request_attribute(c, &e));
    return run_edit(c, &e, "Add Attribute");
}

int kmip_modify_attribute(struct kmip_call *c)
{
    struct edit e = {.kind = EDIT_MODIFY};
    KF_GUARD(request_attribute(c, &e));
    /* 1.x without an index: the first instance (KMIP 1.4 §4.16, index 0 may be omitted). */
    e.by_index = v1(c);
    return run_edit(c, &e, "Modify Attribute");
}

int kmip_set_attribute(struct kmip_call *c)
{
    KF_ENSURE(!v1(c), KF_ERR_OPERATION); /* Set Attribute is KMIP 2.0+ */
    struct edit e = {.kind = EDIT_SET};
    KF_GUARD(request_attribute(c, &e));
    KF_ENSURE(e.current == NULL, KF_ERR_REQUEST);
    return run_edit(c, &e, "Set Attribute");
}

int kmip_delete_attribute(struct kmip_call *c)
{
    struct edit e = {.kind = EDIT_DELETE};
    KF_ENSURE(c->req, KF_ERR_REQUEST);
    if (v1(c)) {
        const char *name;
        size_t len;
        KF_ENSURE(kf_ttlv_get_text(kf_ttlv_find(c->req, KMIP_TAG_ATTRIBUTE_NAME), &name, &len) ==
                      KF_OK,
                  KF_ERR_REQUEST);
        KF_GUARD(attr_kind_from_name(c->arena, name, len, &e.which));
        const kf_ttlv *ix = kf_ttlv_find(c->req, KMIP_TAG_ATTRIBUTE_INDEX);
        if (ix)
            KF_GUARD(kf_ttlv_get_int(ix, &e.index));
        KF_ENSURE(e.index >= 0, KF_ERR_ATTRIBUTE);
        e.by_index = true;
    } else {
        const kf_ttlv *ca = kf_ttlv_find(c->req, KMIP_TAG_CURRENT_ATTRIBUTE);
        const kf_ttlv *ref = kf_ttlv_find(c->req, KMIP_TAG_ATTRIBUTE_REFERENCE);
        KF_ENSURE((ca && ca->child) || ref, KF_ERR_REQUEST);
        if (ca && ca->child) {
            e.current = ca->child;
            KF_ENSURE((e.which = attr_clone(c->arena, NULL, ca->child, ca->child->tag)),
                      KF_ERR_NOMEM);
            KF_GUARD(attr_check_type(e.which));
        } else {
            KF_GUARD(attr_kind_from_reference(c->arena, ref, &e.which));
            e.all = true;
        }
    }
    return run_edit(c, &e, "Delete Attribute");
}

/* ---- Create ---- */

int kmip_create_attrs_check(struct kmip_call *c, struct create_attrs_out *out)
{
    int rc = create_attrs_from_request(c->arena, c->req, out);
    if (rc == KF_ERR_ATTR_READ_ONLY)
        snprintf(c->message, sizeof(c->message),
                 "a read-only attribute cannot be given to Create");
    return rc;
}

struct after_create {
    struct create_attrs_out *at;
};

/* Add what kf_kms_create did not store: the blob and the dates. */
static int put_created_attrs(void *ctx, kf_arena *a, kf_ttlv *set, const struct kf_object *obj)
{
    struct create_attrs_out *at = ((struct after_create *)ctx)->at;
    (void)obj;
    kf_ttlv *blob = NULL;
    if (at->blob) {
        KF_GUARD(kf_ttlv_decode(at->blob, at->blob_len, NULL, a, &blob));
        /* The blob's Names replace the one kf_kms_create mirrored. */
        if (kf_ttlv_find(blob, KMIP_TAG_NAME)) {
            kf_ttlv *n;
            while ((n = (kf_ttlv *)(uintptr_t)kf_ttlv_find(set, KMIP_TAG_NAME)))
                attr_remove(set, n);
        }
    }
    kf_ttlv *c = blob ? blob->child : NULL;
    while (c) {
        kf_ttlv *next = c->next;
        c->next = NULL;
        /* A single-valued attribute the client gave (Original Creation Date)
         * replaces the default the server set at creation. */
        kf_ttlv *old = (attr_flags(c) & AF_MULTI) ? NULL : attr_find_instance(set, c, 0);
        if (old)
            attr_replace(set, old, c);
        else
            KF_GUARD(kf_ttlv_append(set, c));
        c = next;
    }
    if (at->activation_date)
        KF_ENSURE(kf_ttlv_add_datetime(a, set, KMIP_TAG_ACTIVATION_DATE, at->activation_date),
                  KF_ERR_NOMEM);
    if (at->deactivation_date)
        KF_ENSURE(
            kf_ttlv_add_datetime(a, set, KMIP_TAG_DEACTIVATION_DATE, at->deactivation_date),
            KF_ERR_NOMEM);
    return KF_OK;
}

int kmip_create_attrs_apply(struct kmip_call *c, const char *uid, struct create_attrs_out *out)
{
    int rc = KF_OK;
    if (out->blob || out->activation_date || out->deactivation_date) {
        struct after_create ac = {.at = out};
        rc = kms_attrs_edit(c->kms, c->actor, "Create (attributes)", uid, put_created_attrs, &ac);
    }
    free(out->blob);
    out->blob = NULL;
    return rc;
}

/* Create with every attribute: kmip_create makes the object from what the
 * service takes (type, algorithm, length, usage mask, name, domain); the rest
 * (Object Group, Contact Information, custom attributes, dates...) is stored
 * right after in an audited edit. Read-only attributes are refused before
 * anything is created. */
int kmip_attrs_create(struct kmip_call *c)
{
    struct create_attrs_out extra;
    KF_GUARD(kmip_create_attrs_check(c, &extra));
    int rc = kmip_create(c);
    const char *uid = rc == KF_OK ? kmip_text(c, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER) : NULL;
    if (uid)
        return kmip_create_attrs_apply(c, uid, &extra);
    free(extra.blob);
    return rc;
}

/* Register honours the same template attributes as Create (Activation Date,
 * Object Group, Names, custom attributes...). */
int kmip_attrs_register(struct kmip_call *c)
{
    struct create_attrs_out extra;
    KF_GUARD(kmip_create_attrs_check(c, &extra));
    int rc = kmip_register(c);
    const char *uid = rc == KF_OK ? kmip_text(c, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER) : NULL;
    if (uid)
        return kmip_create_attrs_apply(c, uid, &extra);
    free(extra.blob);
    return rc;
}
