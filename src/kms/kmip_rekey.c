/*
 * KMIP Re-key (1.4 §4.4, 2.1 §6.1.42) and Re-key Key Pair (1.4 §4.5).
 *
 * The replacement is made through the ordinary creation paths (kf_kms_create
 * for a symmetric key, kmip_create_key_pair for a pair), then one audited
 * attribute edit gives it the existing object's attributes (Table 173: Names
 * moved over, Usage Limits Count back at its Total, dates shifted by Offset,
 * a Replaced Object link) and a second one gives the existing object its
 * Replacement Object link and takes its Names away. Server-owned marks
 * (archive) and Links are not inherited.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "attributes.h"
#include "kmip_internal.h"

struct replacement {
    const struct kf_object *old;
    const char *old_uid;
    const char *new_uid;
    bool has_offset;
    uint32_t offset;  /* seconds */
    int64_t shift;    /* new Activation Date - old Activation Date, when both exist */
    bool asked_activation, asked_deactivation; /* the request sets these itself */
};

static int add_link(kf_arena *a, kf_ttlv *set, uint32_t type, const char *uid)
{
    kf_ttlv *l = kf_ttlv_struct(a, set, KMIP_TAG_LINK);
    KF_ENSURE(l && kf_ttlv_add_enum(a, l, KMIP_TAG_LINK_TYPE, type) &&
                  kf_ttlv_add_text(a, l, KMIP_TAG_LINKED_OBJECT_IDENTIFIER, uid),
              KF_ERR_NOMEM);
    return KF_OK;
}

static void remove_tag(kf_ttlv *set, uint32_t tag)
{
    kf_ttlv *n;
    while ((n = (kf_ttlv *)(uintptr_t)kf_ttlv_find(set, tag)))
        attr_remove(set, n);
}

static bool server_mark(const kf_ttlv *n)
{
    return n->tag == KMIP_TAG_ATTRIBUTE &&
           kf_ttlv_text_equals(kf_ttlv_find(n, KMIP_TAG_VENDOR_IDENTIFICATION), "y") &&
           kf_ttlv_text_equals(kf_ttlv_find(n, KMIP_TAG_ATTRIBUTE_NAME), "keyfleet-archived");
}

/* Usage Limits with the Count back at the Total. */
static int reset_usage_limits(kf_arena *a, kf_ttlv *ul)
{
    kf_ttlv *cnt = (kf_ttlv *)(uintptr_t)kf_ttlv_find(ul, KMIP_TAG_USAGE_LIMITS_COUNT);
    if (cnt)
        attr_remove(ul, cnt);
    return attr_normalize(a, ul);
}

/* Process Start / Protect Stop Date: shifted like the Activation Date (Table 172). */
static int shift_date(const struct replacement *r, kf_ttlv *n)
{
    if (!r->has_offset || !r->shift ||
        (n->tag != KMIP_TAG_PROCESS_START_DATE && n->tag != KMIP_TAG_PROTECT_STOP_DATE))
        return KF_OK;
    int64_t t;
    KF_GUARD(kf_ttlv_get_datetime(n, &t));
    n->v.i64 = t + r->shift;
    return KF_OK;
}

/* The existing object's blob attributes onto the new object's set. */
static int inherit_blob(const struct replacement *r, kf_arena *a, kf_ttlv *set)
{
    kf_ttlv *blob = NULL;
    if (r->old->attributes && r->old->attributes_len)
        KF_GUARD(kf_ttlv_decode(r->old->attributes, r->old->attributes_len, NULL, a, &blob));
    if (blob && kf_ttlv_find(blob, KMIP_TAG_NAME))
        remove_tag(set, KMIP_TAG_NAME); /* the old Names replace the mirrored one */
    kf_ttlv *n = blob ? blob->child : NULL;
    while (n) {
        kf_ttlv *next = n->next;
        n->next = NULL;
        /* Links and server marks are not inherited; single-valued ones the new set has stay. */
        bool skip = n->tag == KMIP_TAG_LINK || n->tag == KMIP_TAG_ARCHIVE_DATE || server_mark(n) ||
                    (!(attr_flags(n) & AF_MULTI) && kf_ttlv_find(set, n->tag) != NULL);
        if (!skip) {
            if (n->tag == KMIP_TAG_USAGE_LIMITS)
                KF_GUARD(reset_usage_limits(a, n));
            KF_GUARD(shift_date(r, n));
            KF_GUARD(kf_ttlv_append(set, n));
        }
        n = next;
    }
    return KF_OK;
}

/* Activation and Deactivation Date of the replacement (Table 172). */
static int replacement_dates(struct replacement *r, kf_arena *a, kf_ttlv *set)
{
    int64_t at1 = r->old->activation_date, dt1 = r->old->deactivation_date;
    int64_t at2 = at1, dt2 = dt1;
    if (r->has_offset) {
        at2 = (int64_t)time(NULL) + (int64_t)r->offset;
        r->shift = at1 ? at2 - at1 : 0;
        dt2 = dt1 && at1 ? dt1 + r->shift : 0;
    }
    if (r->asked_activation)
        at2 = 0;
    if (r->asked_deactivation)
        dt2 = 0;
    remove_tag(set, KMIP_TAG_ACTIVATION_DATE);
    remove_tag(set, KMIP_TAG_DEACTIVATION_DATE);
    if (at2)
        KF_ENSURE(kf_ttlv_add_datetime(a, set, KMIP_TAG_ACTIVATION_DATE, at2), KF_ERR_NOMEM);
    if (dt2)
        KF_ENSURE(kf_ttlv_add_datetime(a, set, KMIP_TAG_DEACTIVATION_DATE, dt2), KF_ERR_NOMEM);
    return KF_OK;
}

static int fill_replacement(void *ctx, kf_arena *a, kf_ttlv *set, const struct kf_object *obj)
{
    struct replacement *r = ctx;
    (void)obj;
    KF_GUARD(replacement_dates(r, a, set));
    KF_GUARD(inherit_blob(r, a, set));
    return add_link(a, set, KMIP_LINK_REPLACED_OBJECT_LINK, r->old_uid);
}

static int mark_replaced(void *ctx, kf_arena *a, kf_ttlv *set, const struct kf_object *obj)
{
    struct replacement *r = ctx;
    (void)obj;
    remove_tag(set, KMIP_TAG_NAME); /* Table 173: the Names move to the replacement */
    return add_link(a, set, KMIP_LINK_REPLACEMENT_OBJECT_LINK, r->new_uid);
}

static int read_offset(struct kmip_call *c, struct replacement *r)
{
    const kf_ttlv *o = kf_ttlv_find(c->req, KMIP_TAG_OFFSET);
    if (!o)
        return KF_OK;
    r->has_offset = true;
    return kf_ttlv_get_interval(o, &r->offset);
}

/* Load the object to replace and refuse what cannot be re-keyed. */
static int load_existing(struct kmip_call *c, const char *uid, uint32_t want_type, const char *op,
                         struct kf_object *obj)
{
    KF_GUARD(kf_kms_get(c->kms, c->actor, uid, obj, NULL));
    int rc = kmip_refuse_archived(c, obj, uid);
    if (rc == KF_OK && obj->object_type != want_type) {
        snprintf(c->message, sizeof(c->message), "%s takes a %s", op,
                 want_type == KF_OBJ_SYMMETRIC_KEY ? "Symmetric Key" : "Private Key");
        rc = KF_ERR_ATTRIBUTE;
    }
    if (rc == KF_OK && (obj->state == KF_STATE_DESTROYED ||
                        obj->state == KF_STATE_DESTROYED_COMPROMISED)) {
        snprintf(c->message, sizeof(c->message), "a destroyed key cannot be re-keyed");
        rc = KF_ERR_STATE;
    }
    if (rc < 0)
        kf_object_clear(obj);
    return rc;
}

/* Both halves of the link, once the replacement exists. */
static int link_replacement(struct kmip_call *c, struct replacement *r, const char *op)
{
    KF_GUARD(kms_attrs_edit(c->kms, c->actor, op, r->new_uid, fill_replacement, r));
    return kms_attrs_edit(c->kms, c->actor, op, r->old_uid, mark_replaced, r);
}

int kmip_re_key(struct kmip_call *c)
{
    const char *uid = kmip_call_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_MANAGE, uid, "Re-key"));
    struct replacement r = {.old_uid = uid};
    KF_GUARD(read_offset(c, &r));
    /* Attributes the request asks for the replacement (checked like Create's). */
    struct create_attrs_out asked;
    KF_GUARD(kmip_create_attrs_check(c, &asked));
    struct kf_object old = {0};
    int rc = load_existing(c, uid, KF_OBJ_SYMMETRIC_KEY, "Re-key", &old);
    if (rc < 0) {
        free(asked.blob);
        return rc;
    }
    char domain[65], new_uid[KF_UID_MAX];
    struct kf_key_spec spec = {
        .domain = domain,
        .object_type = KF_OBJ_SYMMETRIC_KEY,
        .crypto_alg = asked.alg ? asked.alg : old.crypto_alg,
        .crypto_length = asked.length ? asked.length : old.crypto_length,
        .usage_mask = asked.have_usage ? asked.usage : old.usage_mask,
        .name = old.name[0] ? old.name : NULL,
    };
    rc = kf_kms_uid_domain(uid, domain);
    if (rc == KF_OK)
        rc = kf_kms_create(c->kms, c->actor, &spec, new_uid);
    r.old = &old;
    r.new_uid = new_uid;
    r.asked_activation = asked.activation_date != 0;
    r.asked_deactivation = asked.deactivation_date != 0;
    if (rc == KF_OK)
        rc = link_replacement(c, &r, "Re-key");
    kf_object_clear(&old);
    if (rc == KF_OK) /* the request's own attributes win over the inherited ones */
        rc = kmip_create_attrs_apply(c, new_uid, &asked);
    else
        free(asked.blob);
    KF_GUARD(rc);
    return kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER, new_uid)
               ? KF_OK
               : KF_ERR_NOMEM;
}

/* ---- Re-key Key Pair: a Create Key Pair request for the same kind of pair ---- */

static kf_ttlv *pair_request(struct kmip_call *c, const struct kf_object *old, const char *domain)
{
    kf_arena *a = c->arena;
    kf_ttlv *p = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_PAYLOAD);
    kf_ttlv *common = p ? kf_ttlv_struct(a, p, KMIP_TAG_COMMON_ATTRIBUTES) : NULL;
    kf_ttlv *priv = common ? kf_ttlv_struct(a, p, KMIP_TAG_PRIVATE_KEY_ATTRIBUTES) : NULL;
    if (!priv || !kf_ttlv_add_enum(a, common, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, old->crypto_alg) ||
        !kf_ttlv_add_int(a, common, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, old->crypto_length) ||
        !kf_ttlv_add_text(a, common, KMIP_TAG_KEYFLEET_DOMAIN, domain) ||
        !kf_ttlv_add_int(a, priv, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, (int32_t)old->usage_mask))
        return NULL;
    kf_ttlv *name = old->name[0] ? kf_ttlv_struct(a, priv, KMIP_TAG_NAME) : NULL;
    if (name && (!kf_ttlv_add_text(a, name, KMIP_TAG_NAME_VALUE, old->name) ||
                 !kf_ttlv_add_enum(a, name, KMIP_TAG_NAME_TYPE,
                                   KMIP_NAME_TYPE_UNINTERPRETED_TEXT_STRING)))
        return NULL;
    /* The public half: whatever the client asks for it, else Create Key Pair's default. */
    const kf_ttlv *pub = kf_ttlv_find(c->req, KMIP_TAG_PUBLIC_KEY_ATTRIBUTES);
    if (pub && !attr_clone(a, p, pub, KMIP_TAG_PUBLIC_KEY_ATTRIBUTES))
        return NULL;
    return p;
}

/* Run Create Key Pair on a request of our making; *priv_uid/pub_uid point into the arena. */
static int create_pair_like(struct kmip_call *c, const struct kf_object *old, const char *domain,
                            const char **priv_uid, const char **pub_uid)
{
    kf_ttlv *req = pair_request(c, old, domain);
    KF_ENSURE(req != NULL, KF_ERR_NOMEM);
    const kf_ttlv *saved = c->req;
    c->req = req;
    int rc = kmip_create_key_pair(c);
    c->req = saved;
    KF_GUARD(rc);
    *priv_uid = kmip_text(c, c->resp, KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER);
    *pub_uid = kmip_text(c, c->resp, KMIP_TAG_PUBLIC_KEY_UNIQUE_IDENTIFIER);
    KF_ENSURE(*priv_uid && *pub_uid, KF_ERR_INTERNAL);
    return KF_OK;
}

struct one_link {
    uint32_t type;
    const char *target;
};

static int put_one_link(void *ctx, kf_arena *a, kf_ttlv *set, const struct kf_object *obj)
{
    const struct one_link *l = ctx;
    (void)obj;
    return add_link(a, set, l->type, l->target);
}

static int link_to(struct kmip_call *c, const char *uid, uint32_t type, const char *target)
{
    struct one_link l = {.type = type, .target = target};
    return kms_attrs_edit(c->kms, c->actor, "Add Attribute (Link)", uid, put_one_link, &l);
}

int kmip_re_key_key_pair(struct kmip_call *c)
{
    const char *uid = kmip_text(c, c->req, KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER);
    if (!uid)
        uid = kmip_call_uid(c); /* the ID Placeholder of the batch */
    KF_ENSURE(uid, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_MANAGE, uid, "Re-key Key Pair"));
    struct replacement r = {.old_uid = uid};
    KF_GUARD(read_offset(c, &r));
    struct kf_object old = {0};
    KF_GUARD(load_existing(c, uid, KF_OBJ_PRIVATE_KEY, "Re-key Key Pair", &old));
    char domain[65];
    const char *priv_uid = NULL, *pub_uid = NULL;
    int rc = kf_kms_uid_domain(uid, domain);
    if (rc == KF_OK)
        rc = create_pair_like(c, &old, domain, &priv_uid, &pub_uid);
    r.old = &old;
    r.new_uid = priv_uid;
    if (rc == KF_OK)
        rc = link_replacement(c, &r, "Re-key Key Pair");
    if (rc == KF_OK) /* the new halves name each other */
        rc = link_to(c, priv_uid, KMIP_LINK_PUBLIC_KEY_LINK, pub_uid);
    if (rc == KF_OK)
        rc = link_to(c, pub_uid, KMIP_LINK_PRIVATE_KEY_LINK, priv_uid);
    kf_object_clear(&old);
    return rc;
}

