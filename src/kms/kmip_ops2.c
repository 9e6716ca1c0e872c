/*
 * KMIP operations that look at or mark an object without making key
 * material: Check, Archive / Recover, Export (2.x), Interop and Log (2.x).
 *
 * Archive keeps the object where it is (keyfleet has no offline tier) and
 * marks it with a server-owned custom attribute "y-keyfleet-archived" plus
 * the Archive Date; every operation that would use or return the object
 * answers Object Archived (KF_ERR_OBJECT_ARCHIVED) until Recover removes the
 * mark. The mark lives in the attribute blob, so it is covered by the same
 * audited transactions as every other attribute change.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "attributes.h"
#include "kmip_internal.h"

#define ARCHIVED_VENDOR "y"
#define ARCHIVED_NAME "keyfleet-archived"
#define LOG_MESSAGE_MAX 512

const char *kmip_call_uid(struct kmip_call *c)
{
    const char *uid = kmip_text(c, c->req, KMIP_TAG_UNIQUE_IDENTIFIER);
    if (!uid && c->id_placeholder && c->id_placeholder[0])
        uid = c->id_placeholder;
    if (!uid)
        snprintf(c->message, sizeof(c->message), "the request needs a Unique Identifier");
    return uid;
}

static bool is_archive_mark(const kf_ttlv *n)
{
    return n->tag == KMIP_TAG_ATTRIBUTE &&
           kf_ttlv_text_equals(kf_ttlv_find(n, KMIP_TAG_VENDOR_IDENTIFICATION), ARCHIVED_VENDOR) &&
           kf_ttlv_text_equals(kf_ttlv_find(n, KMIP_TAG_ATTRIBUTE_NAME), ARCHIVED_NAME);
}

bool kms_object_archived(const struct kf_object *obj)
{
    kf_arena *a;
    kf_ttlv *root;
    bool archived = false;
    if (!obj || !obj->attributes || obj->attributes_len == 0 || kf_arena_new(&a, 0) < 0)
        return false;
    if (kf_ttlv_decode(obj->attributes, obj->attributes_len, NULL, a, &root) == KF_OK)
        for (const kf_ttlv *n = root->child; n && !archived; n = n->next)
            archived = is_archive_mark(n);
    kf_arena_free(a);
    return archived;
}

int kmip_refuse_archived(struct kmip_call *c, const struct kf_object *obj, const char *uid)
{
    if (!kms_object_archived(obj))
        return KF_OK;
    snprintf(c->message, sizeof(c->message), "%.90s is archived; Recover it first", uid);
    return KF_ERR_OBJECT_ARCHIVED;
}

/* Metadata of uid (no material, not audited as an export). */
static int load_meta(struct kmip_call *c, const char *uid, struct kf_object *obj)
{
    return kf_kms_get(c->kms, c->actor, uid, obj, NULL);
}

static int answer_uid(struct kmip_call *c, const char *uid)
{
    return kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER, uid) ? KF_OK
                                                                                 : KF_ERR_NOMEM;
}

/* ---- Check (KMIP 1.4 §4.10, 2.1 §6.1.5) ---- */

struct check_request {
    bool has_count, has_mask, has_lease;
    int64_t count;
    uint32_t mask;
    uint32_t lease;
};

static int read_check(struct kmip_call *c, struct check_request *q)
{
    const kf_ttlv *n;
    int32_t mask;
    if ((n = kf_ttlv_find(c->req, KMIP_TAG_USAGE_LIMITS_COUNT))) {
        KF_GUARD(kf_ttlv_get_long(n, &q->count));
        KF_ENSURE(q->count >= 0, KF_ERR_ATTRIBUTE);
        q->has_count = true;
    }
    if ((n = kf_ttlv_find(c->req, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK))) {
        KF_GUARD(kf_ttlv_get_int(n, &mask));
        q->mask = (uint32_t)mask;
        q->has_mask = true;
    }
    if ((n = kf_ttlv_find(c->req, KMIP_TAG_LEASE_TIME))) {
        KF_GUARD(kf_ttlv_get_interval(n, &q->lease));
        q->has_lease = true;
    }
    return KF_OK;
}

/* The failed attributes go into c->message: a failed item carries no payload here. */
static int check_against(struct kmip_call *c, const struct check_request *q, const kf_ttlv *set,
                         const struct kf_object *obj)
{
    const kf_ttlv *ul = kf_ttlv_find(set, KMIP_TAG_USAGE_LIMITS);
    int64_t left;
    if (q->has_count && ul &&
        kf_ttlv_get_long(kf_ttlv_find(ul, KMIP_TAG_USAGE_LIMITS_COUNT), &left) == KF_OK &&
        left < q->count) {
        snprintf(c->message, sizeof(c->message),
                 "Usage Limits Count: %lld asked, %lld left", (long long)q->count,
                 (long long)left);
        return KF_ERR_USAGE_LIMIT;
    }
    if (q->has_mask && (q->mask & ~obj->usage_mask) != 0) {
        snprintf(c->message, sizeof(c->message),
                 "Cryptographic Usage Mask: 0x%x asked, the object allows 0x%x", q->mask,
                 obj->usage_mask);
        return KF_ERR_PERM;
    }
    /* keyfleet grants leases without limit unless the object carries a Lease Time. */
    uint32_t lease;
    if (q->has_lease &&
        kf_ttlv_get_interval(kf_ttlv_find(set, KMIP_TAG_LEASE_TIME), &lease) == KF_OK &&
        q->lease > lease) {
        snprintf(c->message, sizeof(c->message), "Lease Time: %u s asked, at most %u s granted",
                 q->lease, lease);
        return KF_ERR_PERM;
    }
    if (!kf_lifecycle_allows_use(obj->state, KF_USE_GET) && (q->has_mask || q->has_count)) {
        snprintf(c->message, sizeof(c->message), "the object's state allows no use");
        return KF_ERR_STATE;
    }
    return KF_OK;
}

int kmip_check(struct kmip_call *c)
{
    const char *uid = kmip_call_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_USE, uid, "Check"));
    struct check_request q = {0};
    KF_GUARD(read_check(c, &q));
    struct kf_object obj = {0};
    KF_GUARD(load_meta(c, uid, &obj));
    kf_ttlv *set = NULL;
    int rc = kmip_refuse_archived(c, &obj, uid);
    if (rc == KF_OK)
        rc = attrs_load(c->arena, &obj, uid, &set);
    if (rc == KF_OK)
        rc = check_against(c, &q, set, &obj);
    kf_object_clear(&obj);
    KF_GUARD(rc);
    return answer_uid(c, uid);
}

/* ---- Archive / Recover ---- */

static void remove_archive_marks(kf_ttlv *set)
{
    kf_ttlv *n = set->child;
    while (n) {
        kf_ttlv *next = n->next;
        if (is_archive_mark(n) || n->tag == KMIP_TAG_ARCHIVE_DATE)
            attr_remove(set, n);
        n = next;
    }
}

static int mark_archived(void *ctx, kf_arena *a, kf_ttlv *set, const struct kf_object *obj)
{
    (void)ctx;
    (void)obj;
    remove_archive_marks(set); /* archiving twice keeps one mark, with the new date */
    kf_ttlv *va = kf_ttlv_struct(a, set, KMIP_TAG_ATTRIBUTE);
    KF_ENSURE(va && kf_ttlv_add_text(a, va, KMIP_TAG_VENDOR_IDENTIFICATION, ARCHIVED_VENDOR) &&
                  kf_ttlv_add_text(a, va, KMIP_TAG_ATTRIBUTE_NAME, ARCHIVED_NAME) &&
                  kf_ttlv_add_bool(a, va, KMIP_TAG_ATTRIBUTE_VALUE, true) &&
                  kf_ttlv_add_datetime(a, set, KMIP_TAG_ARCHIVE_DATE, (int64_t)time(NULL)),
              KF_ERR_NOMEM);
    return KF_OK;
}

static int unmark_archived(void *ctx, kf_arena *a, kf_ttlv *set, const struct kf_object *obj)
{
    (void)ctx;
    (void)a;
    (void)obj;
    remove_archive_marks(set);
    return KF_OK;
}

int kmip_archive(struct kmip_call *c)
{
    const char *uid = kmip_call_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_MANAGE, uid, "Archive"));
    KF_GUARD(kms_attrs_edit(c->kms, c->actor, "Archive", uid, mark_archived, NULL));
    return answer_uid(c, uid);
}

int kmip_recover(struct kmip_call *c)
{
    const char *uid = kmip_call_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_MANAGE, uid, "Recover"));
    KF_GUARD(kms_attrs_edit(c->kms, c->actor, "Recover", uid, unmark_archived, NULL));
    return answer_uid(c, uid);
}

/* ---- Export (2.x): Get plus every attribute ---- */

/* Put node right after the Unique Identifier: the 2.1 §6.1.20 response order. */
static int insert_after_uid(kf_ttlv *payload, kf_ttlv *node)
{
    for (kf_ttlv *n = payload->child; n; n = n->next)
        if (n->tag == KMIP_TAG_UNIQUE_IDENTIFIER) {
            node->next = n->next;
            n->next = node;
            if (payload->last_child == n)
                payload->last_child = node;
            payload->nchildren++;
            return KF_OK;
        }
    return kf_ttlv_append(payload, node);
}

int kmip_export(struct kmip_call *c)
{
    if (c->major < 2) {
        snprintf(c->message, sizeof(c->message), "Export is a KMIP 2.x operation: use Get");
        return KF_ERR_OPERATION;
    }
    const char *uid = kmip_call_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_EXPORT, uid, "Export"));
    struct kf_object obj = {0};
    KF_GUARD(load_meta(c, uid, &obj));
    kf_ttlv *set = NULL;
    int rc = kmip_refuse_archived(c, &obj, uid);
    if (rc == KF_OK)
        rc = attrs_load(c->arena, &obj, uid, &set);
    kf_object_clear(&obj);
    KF_GUARD(rc);
    KF_GUARD(kmip_get(c));
    return insert_after_uid(c->resp, set);
}

/* ---- Interop (2.x §6.1.27) and Log (2.x §6.1.31) ---- */

int kmip_interop(struct kmip_call *c)
{
    uint32_t fn;
    if (kf_ttlv_get_enum(kf_ttlv_find(c->req, KMIP_TAG_INTEROP_FUNCTION), &fn) < 0) {
        snprintf(c->message, sizeof(c->message), "Interop needs an Interop Function");
        return KF_ERR_REQUEST;
    }
    if (fn < KMIP_INTEROP_FUNCTION_BEGIN || fn > KMIP_INTEROP_FUNCTION_RESET) {
        snprintf(c->message, sizeof(c->message), "Interop Function must be Begin, End or Reset");
        return KF_ERR_ATTRIBUTE;
    }
    /* keyfleet keeps no per-test state: Begin, End and Reset all succeed. */
    return KF_OK;
}

/* Text that can sit in an audit record: no control characters. */
static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

int kmip_log(struct kmip_call *c)
{
    const char *msg = kmip_text(c, c->req, KMIP_TAG_LOG_MESSAGE);
    if (!msg || !*msg) {
        snprintf(c->message, sizeof(c->message), "Log needs a Log Message");
        return KF_ERR_REQUEST;
    }
    if (strlen(msg) > LOG_MESSAGE_MAX || !printable(msg)) {
        snprintf(c->message, sizeof(c->message),
                 "a Log Message is 1-%d characters without control characters", LOG_MESSAGE_MAX);
        return KF_ERR_ATTRIBUTE;
    }
    const char *domain = c->who->default_domain[0] ? c->who->default_domain : "default";
    KF_GUARD(kmip_authorize(c, KF_ROLE_USE, domain, "Log"));
    struct kf_audit_event ev = {
        .actor = c->actor,
        .operation = "Log",
        .domain = domain,
        .object = "",
        .result = "ok",
        .detail = msg,
    };
    return kms_audit_group(c->kms, &ev);
}
