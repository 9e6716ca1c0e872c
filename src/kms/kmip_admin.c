/* keyfleet's extension operations (kmip_ext.h): administration over KMIP TTLV. */
#include <stdio.h>
#include <string.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/secmem.h"
#include "attributes.h"
#include "kmip_internal.h"

#define KF_LIST_DEFAULT_LIMIT 500

static int add_bool(struct kmip_call *c, uint32_t tag, bool v)
{
    return kf_ttlv_add_bool(c->arena, c->resp, tag, v) ? KF_OK : KF_ERR_NOMEM;
}
static int add_int(struct kmip_call *c, uint32_t tag, int64_t v)
{
    return kf_ttlv_add_int(c->arena, c->resp, tag, (int32_t)v) ? KF_OK : KF_ERR_NOMEM;
}

static int32_t get_int_or(const kf_ttlv *parent, uint32_t tag, int32_t dflt)
{
    int32_t v;
    return kf_ttlv_get_int(kf_ttlv_find(parent, tag), &v) == KF_OK ? v : dflt;
}

static int64_t get_long_or(const kf_ttlv *parent, uint32_t tag, int64_t dflt)
{
    int64_t v;
    return kf_ttlv_get_long(kf_ttlv_find(parent, tag), &v) == KF_OK ? v : dflt;
}

int kmip_kf_init(struct kmip_call *c)
{
    KF_GUARD(kmip_authorize(c, KF_ROLE_ADMIN, NULL, "init"));
    const char *pin = kmip_text(c, c->req, KMIP_TAG_KEYFLEET_PIN);
    if (pin)
        return kf_kms_init_pkcs11(c->kms, c->actor, pin);
    int32_t m = get_int_or(c->req, KMIP_TAG_KEYFLEET_THRESHOLD, 3);
    int32_t n = get_int_or(c->req, KMIP_TAG_KEYFLEET_SHARE_COUNT, 5);
    KF_ENSURE(m >= 1 && n >= m && n <= 255, KF_ERR_THRESHOLD);
    char(*shares)[KF_SHARE_MAX] = kf_secmem_alloc((size_t)n * KF_SHARE_MAX);
    KF_ENSURE(shares != NULL, KF_ERR_SECMEM);
    int rc = kf_kms_init(c->kms, c->actor, (unsigned)m, (unsigned)n, shares);
    for (int32_t i = 0; rc == KF_OK && i < n; i++)
        if (!kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_KEYFLEET_SHARE, shares[i]))
            rc = KF_ERR_NOMEM;
    kf_secmem_free(shares); /* wipes; the arena copy is wiped when the response is sent */
    if (rc == KF_OK)
        rc = add_int(c, KMIP_TAG_KEYFLEET_THRESHOLD, m);
    return rc;
}

int kmip_kf_unseal(struct kmip_call *c)
{
    KF_GUARD(kmip_authorize(c, KF_ROLE_ADMIN, NULL, "unseal"));
    const char *secret = kmip_text(c, c->req, KMIP_TAG_KEYFLEET_SHARE);
    if (!secret)
        secret = kmip_text(c, c->req, KMIP_TAG_KEYFLEET_PIN);
    if (!secret) {
        snprintf(c->message, sizeof(c->message), "unseal needs a share or a PIN");
        return KF_ERR_REQUEST;
    }
    bool done = false;
    unsigned received = 0;
    KF_GUARD(kf_kms_unseal(c->kms, c->actor, secret, &done, &received));
    struct kf_kms_status st;
    KF_GUARD(kf_kms_status(c->kms, &st));
    KF_GUARD(add_bool(c, KMIP_TAG_KEYFLEET_SEALED, !done));
    KF_GUARD(add_int(c, KMIP_TAG_KEYFLEET_SHARES_RECEIVED, done ? st.threshold : received));
    return add_int(c, KMIP_TAG_KEYFLEET_THRESHOLD, st.threshold);
}

int kmip_kf_seal(struct kmip_call *c)
{
    KF_GUARD(kmip_authorize(c, KF_ROLE_ADMIN, NULL, "seal"));
    return kf_kms_seal(c->kms, c->actor);
}

int kmip_kf_status(struct kmip_call *c)
{
    struct kf_kms_status st;
    KF_GUARD(kf_kms_status(c->kms, &st));
    KF_GUARD(add_bool(c, KMIP_TAG_KEYFLEET_INITIALISED, st.initialised));
    KF_GUARD(add_bool(c, KMIP_TAG_KEYFLEET_SEALED, st.sealed));
    KF_GUARD(add_bool(c, KMIP_TAG_KEYFLEET_DEV_MODE, st.dev));
    KF_ENSURE(kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_KEYFLEET_BACKEND, st.backend),
              KF_ERR_NOMEM);
    KF_GUARD(add_int(c, KMIP_TAG_KEYFLEET_THRESHOLD, st.threshold));
    KF_GUARD(add_int(c, KMIP_TAG_KEYFLEET_SHARE_COUNT, st.shares));
    KF_GUARD(add_int(c, KMIP_TAG_KEYFLEET_SHARES_RECEIVED, st.shares_received));
    KF_GUARD(add_int(c, KMIP_TAG_KEYFLEET_OBJECT_COUNT, (int64_t)st.domains));
    return kf_ttlv_add_long(c->arena, c->resp, KMIP_TAG_KEYFLEET_AUDIT_RECORDS,
                            (int64_t)st.audit_records)
               ? KF_OK
               : KF_ERR_NOMEM;
}

int kmip_kf_domain_create(struct kmip_call *c)
{
    const char *name = kmip_text(c, c->req, KMIP_TAG_KEYFLEET_DOMAIN);
    const char *parent = kmip_text(c, c->req, KMIP_TAG_KEYFLEET_PARENT_DOMAIN);
    if (!name) {
        snprintf(c->message, sizeof(c->message), "domain create needs a domain name");
        return KF_ERR_REQUEST;
    }
    KF_GUARD(kmip_authorize(c, KF_ROLE_ADMIN, NULL, "domain-create"));
    KF_GUARD(kf_kms_domain_create(c->kms, c->actor, name, parent));
    return kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_KEYFLEET_DOMAIN, name) ? KF_OK
                                                                              : KF_ERR_NOMEM;
}

struct domain_list_ctx {
    struct kmip_call *c;
    kf_kms *kms;
};

static int put_domain(void *ctx, const struct kf_domain *d)
{
    struct kmip_call *c = ctx;
    kf_ttlv *di = kf_ttlv_struct(c->arena, c->resp, KMIP_TAG_KEYFLEET_DOMAIN_INFO);
    bool ok = di && kf_ttlv_add_text(c->arena, di, KMIP_TAG_KEYFLEET_DOMAIN, d->name) &&
              kf_ttlv_add_long(c->arena, di, KMIP_TAG_KEYFLEET_KEY_ID, (int64_t)d->last_key_id) &&
              kf_ttlv_add_datetime(c->arena, di, KMIP_TAG_INITIAL_DATE, d->created);
    /* The parent's name is resolved by the client from the list itself. */
    if (ok && d->parent_id)
        ok = kf_ttlv_add_long(c->arena, di, KMIP_TAG_KEYFLEET_FROM, (int64_t)d->parent_id);
    if (ok)
        ok = kf_ttlv_add_long(c->arena, di, KMIP_TAG_KEYFLEET_AUDIT_SEQ, (int64_t)d->id);
    return ok ? KF_OK : KF_ERR_NOMEM;
}

int kmip_kf_domain_list(struct kmip_call *c)
{
    KF_GUARD(kmip_authorize(c, KF_ROLE_ADMIN, NULL, "domain-list"));
    return kf_kms_domain_list(c->kms, put_domain, c);
}

struct key_list_ctx {
    struct kmip_call *c;
    const char *domain;
};

static int put_object(void *ctx, const struct kf_object *obj)
{
    struct key_list_ctx *k = ctx;
    char uid[KF_UID_MAX];
    KF_GUARD(kf_object_uid_format(k->domain, obj->key_id, uid, sizeof(uid)));
    /* The same attribute set Get Attributes answers with (one model, attributes.c). */
    kf_ttlv *set;
    KF_GUARD(attrs_load(k->c->arena, obj, uid, &set));
    return kf_ttlv_append(k->c->resp, set);
}

int kmip_kf_key_list(struct kmip_call *c)
{
    const char *domain = kmip_text(c, c->req, KMIP_TAG_KEYFLEET_DOMAIN);
    if (!domain) {
        snprintf(c->message, sizeof(c->message), "key list needs a domain");
        return KF_ERR_REQUEST;
    }
    KF_GUARD(kmip_authorize(c, KF_ROLE_USE, domain, "key-list"));
    struct kf_object_filter f = {0};
    uint32_t v;
    if (kf_ttlv_get_enum(kf_ttlv_find(c->req, KMIP_TAG_STATE), &v) == KF_OK)
        f.state = v;
    if (kf_ttlv_get_enum(kf_ttlv_find(c->req, KMIP_TAG_OBJECT_TYPE), &v) == KF_OK)
        f.object_type = v;
    f.offset = (uint64_t)get_long_or(c->req, KMIP_TAG_KEYFLEET_FROM, 0);
    int32_t limit = get_int_or(c->req, KMIP_TAG_KEYFLEET_LIMIT, KF_LIST_DEFAULT_LIMIT);
    f.max = limit > 0 && limit <= KF_LIST_DEFAULT_LIMIT ? (uint64_t)limit : KF_LIST_DEFAULT_LIMIT;
    struct key_list_ctx k = {.c = c, .domain = domain};
    return kf_kms_list(c->kms, c->actor, domain, &f, put_object, &k);
}

static int put_audit_record(void *ctx, const struct kf_audit_record *r)
{
    struct kmip_call *c = ctx;
    kf_arena *a = c->arena;
    kf_ttlv *rec = kf_ttlv_struct(a, c->resp, KMIP_TAG_KEYFLEET_AUDIT_RECORD);
    bool ok = rec && kf_ttlv_add_long(a, rec, KMIP_TAG_KEYFLEET_AUDIT_SEQ, (int64_t)r->seq) &&
              kf_ttlv_add_dtx(a, rec, KMIP_TAG_KEYFLEET_AUDIT_TIME, (int64_t)(r->time_ns / 1000)) &&
              kf_ttlv_add_text(a, rec, KMIP_TAG_KEYFLEET_AUDIT_ACTOR, r->actor) &&
              kf_ttlv_add_text(a, rec, KMIP_TAG_KEYFLEET_AUDIT_OPERATION, r->operation) &&
              kf_ttlv_add_text(a, rec, KMIP_TAG_KEYFLEET_DOMAIN, r->domain) &&
              kf_ttlv_add_text(a, rec, KMIP_TAG_KEYFLEET_AUDIT_OBJECT, r->object) &&
              kf_ttlv_add_text(a, rec, KMIP_TAG_KEYFLEET_AUDIT_RESULT, r->result) &&
              kf_ttlv_add_text(a, rec, KMIP_TAG_KEYFLEET_AUDIT_DETAIL, r->detail);
    return ok ? KF_OK : KF_ERR_NOMEM;
}

int kmip_kf_audit_show(struct kmip_call *c)
{
    KF_GUARD(kmip_authorize(c, KF_ROLE_ADMIN, NULL, "audit-show"));
    uint64_t from = (uint64_t)get_long_or(c->req, KMIP_TAG_KEYFLEET_FROM, 1);
    int32_t limit = get_int_or(c->req, KMIP_TAG_KEYFLEET_LIMIT, KF_LIST_DEFAULT_LIMIT);
    if (limit <= 0 || limit > KF_LIST_DEFAULT_LIMIT)
        limit = KF_LIST_DEFAULT_LIMIT;
    return kf_kms_audit_list(c->kms, from, (uint64_t)limit, put_audit_record, c);
}

int kmip_kf_audit_verify(struct kmip_call *c)
{
    KF_GUARD(kmip_authorize(c, KF_ROLE_ADMIN, NULL, "audit-verify"));
    struct kf_audit_report r;
    memset(&r, 0, sizeof(r));
    int rc = kf_kms_audit_verify(c->kms, &r);
    kf_ttlv *v = kf_ttlv_struct(c->arena, c->resp, KMIP_TAG_KEYFLEET_AUDIT_VERDICT);
    bool ok = v &&
              kf_ttlv_add_long(c->arena, v, KMIP_TAG_KEYFLEET_AUDIT_RECORDS, (int64_t)r.records) &&
              kf_ttlv_add_long(c->arena, v, KMIP_TAG_KEYFLEET_AUDIT_FIRST_BAD,
                               (int64_t)r.first_bad_seq) &&
              kf_ttlv_add_long(c->arena, v, KMIP_TAG_KEYFLEET_AUDIT_SEQ,
                               (int64_t)r.unauthenticated_from) &&
              kf_ttlv_add_bool(c->arena, v, KMIP_TAG_KEYFLEET_SEALED, !r.macs_checked) &&
              kf_ttlv_add_text(c->arena, v, KMIP_TAG_RESULT_MESSAGE, r.reason);
    KF_ENSURE(ok, KF_ERR_NOMEM);
    if (rc < 0)
        snprintf(c->message, sizeof(c->message), "first bad record %llu: %.200s",
                 (unsigned long long)r.first_bad_seq, r.reason);
    return rc;
}
