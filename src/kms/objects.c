/*
 * Managed objects: create, get (with optional export), list, and the
 * lifecycle operations activate, revoke and destroy. Each is one transaction
 * with its audit record; each refusal is audited with its error name.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyfleet/crypto.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/log.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "keyfleet/kmip_tags.h"
#include "attributes.h"
#include "kms_internal.h"

#define KF_MATERIAL_MAX_BYTES 512

static int64_t now_seconds(void)
{
    return (int64_t)time(NULL);
}

/* Algorithm and length a client may ask for, in bits. */
static int check_spec(const struct kf_key_spec *s)
{
    KF_ENSURE(s->domain && kf_domain_name_valid(s->domain), KF_ERR_DOMAIN);
    KF_ENSURE(!s->name || strlen(s->name) <= KF_OBJECT_NAME_MAX, KF_ERR_ATTRIBUTE);
    KF_ENSURE(s->crypto_length > 0 && s->crypto_length % 8 == 0 &&
                  s->crypto_length <= KF_MATERIAL_MAX_BYTES * 8,
              KF_ERR_ATTRIBUTE);
    if (s->object_type == KF_OBJ_SECRET_DATA)
        return KF_OK;
    KF_ENSURE(s->object_type == KF_OBJ_SYMMETRIC_KEY, KF_ERR_UNSUPPORTED);
    switch (s->crypto_alg) {
    case KMIP_ALG_AES:
        KF_ENSURE(s->crypto_length == 128 || s->crypto_length == 192 || s->crypto_length == 256,
                  KF_ERR_KEY_SIZE);
        return KF_OK;
    case KMIP_ALG_DES3:
        /* Three-key Triple DES: 168 key bits (KMIP's usual count) or 192 with parity. */
        KF_ENSURE(s->crypto_length == 168 || s->crypto_length == 192, KF_ERR_KEY_SIZE);
        return KF_OK;
    case KMIP_ALG_HMAC_SHA1:
    case KMIP_ALG_HMAC_SHA224:
    case KMIP_ALG_HMAC_SHA256:
    case KMIP_ALG_HMAC_SHA384:
    case KMIP_ALG_HMAC_SHA512:
        KF_ENSURE(s->crypto_length >= 128, KF_ERR_KEY_SIZE);
        return KF_OK;
    default:
        return KF_ERR_UNSUPPORTED;
    }
}

/* One create inside the batch's open transaction, in a savepoint of its own so
 * that a failure takes back only this create. */
static int create_in_tx(kf_kms *kms, const struct kf_key_spec *spec, const char *actor,
                        char uid[KF_UID_MAX])
{
    struct kf_domain d = {0};
    struct kf_object obj = {0};
    kf_buf material = {0}, wrapped = {0};
    kf_domain_handle h;
    bool des3 = spec->object_type == KF_OBJ_SYMMETRIC_KEY && spec->crypto_alg == KMIP_ALG_DES3;
    size_t nbytes = des3 ? KF_DES3_KEY_LEN : (size_t)spec->crypto_length / 8;
    uint8_t *p;
    int rc;

    KF_GUARD(kf_store_savepoint(kms->store));
    if ((rc = kf_store_domain_get(kms->store, spec->domain, &d)) < 0 ||
        (rc = kms_domain_handle(kms, &d, &h)) < 0 ||
        (rc = kf_store_next_key_id(kms->store, d.id, &obj.key_id)) < 0 ||
        (rc = kf_buf_alloc(&material, nbytes, nbytes, KF_BUF_SECRET)) < 0 ||
        (rc = kf_buf_put_space(&material, nbytes, &p)) < 0 ||
        (rc = kf_rng_bytes(p, nbytes)) < 0 || (rc = kf_buf_alloc(&wrapped, 0, 4096, 0)) < 0)
        goto out;
    if (des3)
        kf_des3_fix_parity(p, nbytes); /* DES keys carry odd parity in each byte's low bit */
    obj.domain_id = d.id;
    obj.object_type = spec->object_type;
    obj.state = KF_STATE_PRE_ACTIVE;
    obj.crypto_alg = spec->object_type == KF_OBJ_SYMMETRIC_KEY ? spec->crypto_alg : 0;
    obj.crypto_length = spec->crypto_length;
    obj.usage_mask = spec->usage_mask;
    obj.key_format = KMIP_KEYFMT_RAW;
    obj.version = 1;
    obj.initial_date = obj.last_change_date = now_seconds();
    if (spec->name)
        snprintf(obj.name, sizeof(obj.name), "%s", spec->name);
    struct kms_new_object fresh = {.key_format = obj.key_format,
                                   .material = material.data,
                                   .material_len = material.len,
                                   .generated = true,
                                   .now = obj.initial_date};
    if ((rc = kms_server_attrs(NULL, 0, &fresh, &obj.attributes, &obj.attributes_len)) < 0)
        goto out;
    if ((rc = kf_secmod_wrap(kms->secmod, h, obj.key_id, d.id, obj.version, material.data,
                             material.len, &wrapped)) < 0)
        goto out;
    obj.material = wrapped.data;
    obj.material_len = wrapped.len;
    if ((rc = kf_store_object_insert(kms->store, &obj)) < 0 ||
        (rc = kf_object_uid_format(d.name, obj.key_id, uid, KF_UID_MAX)) < 0)
        goto out;
    char detail[96];
    snprintf(detail, sizeof(detail), "type %u alg %u length %d", obj.object_type, obj.crypto_alg,
             obj.crypto_length);
    rc = kms_audit(kms, actor, "Create", d.name, uid, KF_OK, detail);
out:
    kf_store_savepoint_end(kms->store, rc == KF_OK);
    free(obj.attributes);
    kf_buf_free(&material);
    kf_buf_free(&wrapped);
    kf_domain_clear(&d);
    return rc;
}

/*
 * Group commit of creates (groupcommit.c): concurrent creates share one
 * transaction and one fdatasync of the WAL; each is acknowledged only after
 * that sync, as with synchronous=FULL. Each create runs in its own savepoint,
 * so a failure takes back only that create.
 */
struct create_wait {
    struct kms_gc_job gc; /* first */
    const struct kf_key_spec *spec;
    const char *actor;
    char *uid;
};

static void audit_create_refusal(kf_kms *kms, const struct create_wait *w)
{
    const char *dom =
        w->spec->domain && kf_domain_name_valid(w->spec->domain) ? w->spec->domain : "";
    kms_audit_refusal(kms, w->actor, "Create", dom, "", w->gc.rc,
                      w->gc.rc == KF_ERR_RNG_HEALTH ? "random source failed its health test"
                                                    : NULL);
}

static uint64_t run_create_batch(kf_kms *kms, struct kms_gc_job *batch)
{
    uint64_t ticket = 0;
    bool deferred;
    pthread_mutex_lock(&kms->lock);
    int trc = kf_secmod_sealed(kms->secmod) ? KF_ERR_SEALED
                                            : kf_store_begin_deferred(kms->store, &deferred);
    for (struct kms_gc_job *j = batch; j; j = j->next) {
        struct create_wait *w = (struct create_wait *)j;
        j->rc = trc == KF_OK ? create_in_tx(kms, w->spec, w->actor, w->uid) : trc;
    }
    if (trc == KF_OK && (trc = kf_store_commit_deferred(kms->store, &ticket)) < 0) {
        kf_store_rollback(kms->store);
        for (struct kms_gc_job *j = batch; j; j = j->next)
            if (j->rc == KF_OK)
                j->rc = trc; /* nothing of the batch persisted */
    }
    for (struct kms_gc_job *j = batch; j; j = j->next)
        if (j->rc < 0)
            audit_create_refusal(kms, (struct create_wait *)j);
    pthread_mutex_unlock(&kms->lock);
    return ticket;
}

int kf_kms_create(kf_kms *kms, const char *actor, const struct kf_key_spec *spec,
                  char uid[KF_UID_MAX])
{
    struct create_wait me = {.spec = spec, .actor = actor, .uid = uid};
    me.gc.rc = check_spec(spec);
    if (me.gc.rc < 0) {
        pthread_mutex_lock(&kms->lock);
        audit_create_refusal(kms, &me);
        pthread_mutex_unlock(&kms->lock);
        return me.gc.rc;
    }
    return kms_gc_submit(kms, &kms->create_q, &me.gc, run_create_batch);
}

/* Resolve a UID to its domain and object on connection st. */
static int load_object_from(kf_store *st, const char *uid, struct kf_domain *d,
                            struct kf_object *obj)
{
    char dname[KF_DOMAIN_NAME_MAX + 1];
    uint64_t key_id;
    KF_ENSURE(uid != NULL, KF_ERR_OBJECT);
    KF_ENSURE(kf_object_uid_parse(uid, dname, &key_id) == KF_OK, KF_ERR_OBJECT);
    int rc = kf_store_domain_get(st, dname, d);
    KF_ENSURE(rc != KF_ERR_DOMAIN, KF_ERR_OBJECT);
    KF_GUARD(rc);
    KF_GUARD(kf_store_object_get(st, d->id, key_id, obj));
    /* Date-driven transitions take effect when the object is next touched. */
    obj->state = kf_lifecycle_effective_state(obj->state, obj->activation_date,
                                              obj->deactivation_date, now_seconds());
    return KF_OK;
}

/* Inside the writer's open transaction. */
static int load_object(kf_kms *kms, const char *uid, struct kf_domain *d, struct kf_object *obj)
{
    return load_object_from(kms->store, uid, d, obj);
}

/* Audit a read or key use (group commit); refusals name no object that does not exist. */
static int audit_use(kf_kms *kms, const char *actor, const char *op, const char *domain,
                     const char *uid, int rc, const char *detail)
{
    struct kf_audit_event ev = {
        .actor = actor,
        .operation = op,
        .domain = domain ? domain : "",
        .object = rc == KF_ERR_OBJECT || !uid ? "" : uid,
        .result = rc == KF_OK ? "ok" : kf_errname(rc),
        .detail = detail ? detail : "",
    };
    return kms_audit_group(kms, &ev);
}

static int unwrap_material(kf_kms *kms, const struct kf_domain *d, const struct kf_object *obj,
                           kf_buf *material)
{
    kf_domain_handle h;
    KF_ENSURE(obj->material != NULL, KF_ERR_STATE);
    KF_GUARD(kms_domain_handle(kms, d, &h));
    return kf_secmod_unwrap(kms->secmod, h, obj->key_id, d->id, obj->version, obj->material,
                            obj->material_len, material);
}

int kf_kms_get(kf_kms *kms, const char *actor, const char *uid, struct kf_object *out,
               kf_buf *material)
{
    struct kf_domain d = {0};
    struct kf_object obj = {0};
    struct kms_read r;
    const char *op = material ? "Get (export)" : "Get Attributes";
    kms_read_begin(kms, &r);
    int rc = load_object_from(r.st, uid, &d, &obj);
    if (rc == KF_OK && material) {
        if (!kf_lifecycle_allows_use(obj.state, KF_USE_GET))
            rc = KF_ERR_STATE;
        else if (kms_object_archived(&obj))
            rc = KF_ERR_OBJECT_ARCHIVED;
        else if (kms_object_device_bound(&obj))
            rc = KF_ERR_EXPORT; /* a device MKEK leaves only in its installation package */
        else if (kf_secmod_sealed(kms->secmod))
            rc = KF_ERR_SEALED;
        else
            rc = unwrap_material(kms, &d, &obj, material);
    }
    kms_read_end(kms, &r);
    int arc = audit_use(kms, actor, op, d.name, uid, rc, NULL);
    if (rc == KF_OK && arc < 0)
        rc = arc; /* never release what could not be audited */
    if (rc < 0) {
        if (material)
            kf_buf_reset(material);
        kf_object_clear(&obj);
    } else {
        free(obj.material);
        obj.material = NULL;
        obj.material_len = 0;
        *out = obj;
    }
    kf_domain_clear(&d);
    return rc;
}

int kf_kms_list(kf_kms *kms, const char *actor, const char *domain,
                const struct kf_object_filter *f, kf_store_object_cb cb, void *ctx)
{
    (void)actor;
    struct kf_domain d = {0};
    pthread_mutex_lock(&kms->lock);
    int rc = kf_store_domain_get(kms->store, domain, &d);
    if (rc == KF_OK)
        rc = kf_store_object_list(kms->store, d.id, f, cb, ctx);
    kf_domain_clear(&d);
    pthread_mutex_unlock(&kms->lock);
    return rc;
}

/* One lifecycle event on one object: load, transition, save, audit, commit. */
struct lifecycle_change {
    const char *op;
    enum kf_lifecycle_event ev;
    uint32_t reason;
    int64_t compromise_time;
    const char *message;
};

static void apply_dates(struct kf_object *obj, const struct lifecycle_change *c, int64_t now)
{
    switch (c->ev) {
    case KF_EV_ACTIVATE:
        obj->activation_date = now;
        break;
    case KF_EV_REVOKE_COMPROMISED:
        obj->compromise_date = now;
        obj->compromise_occurrence_date = c->compromise_time ? c->compromise_time : now;
        obj->revocation_reason = c->reason;
        break;
    case KF_EV_REVOKE_OTHER:
        obj->deactivation_date = now;
        obj->revocation_reason = c->reason;
        break;
    case KF_EV_DESTROY:
        obj->destroy_date = now;
        break;
    default:
        break;
    }
    if (c->message)
        snprintf(obj->revocation_message, sizeof(obj->revocation_message), "%s", c->message);
    obj->last_change_date = now;
}

static int change_locked(kf_kms *kms, const char *actor, const char *uid,
                         const struct lifecycle_change *c, struct kf_domain *d)
{
    struct kf_object obj = {0};
    uint32_t to;
    int64_t now = now_seconds();
    int rc = kf_store_begin(kms->store);
    if (rc < 0)
        return rc;
    if ((rc = load_object(kms, uid, d, &obj)) < 0 ||
        (rc = kf_lifecycle_transition(obj.state, c->ev, &to)) < 0)
        goto out;
    char detail[80];
    snprintf(detail, sizeof(detail), "%s -> %s", kf_lifecycle_state_name(obj.state),
             kf_lifecycle_state_name(to));
    obj.state = to;
    apply_dates(&obj, c, now);
    free(obj.material); /* update leaves material alone when NULL */
    obj.material = NULL;
    if ((rc = kf_store_object_update(kms->store, &obj)) < 0)
        goto out;
    if (c->ev == KF_EV_DESTROY &&
        (rc = kf_store_object_destroy_material(kms->store, d->id, obj.key_id)) < 0)
        goto out;
    if ((rc = kms_audit(kms, actor, c->op, d->name, uid, KF_OK, detail)) < 0)
        goto out;
    rc = kf_store_commit(kms->store);
out:
    if (rc < 0)
        kf_store_rollback(kms->store);
    kf_object_clear(&obj);
    return rc;
}

static int lifecycle_op(kf_kms *kms, const char *actor, const char *uid,
                        const struct lifecycle_change *c)
{
    struct kf_domain d = {0};
    pthread_mutex_lock(&kms->lock);
    int rc = kf_secmod_sealed(kms->secmod) ? KF_ERR_SEALED : KF_OK;
    if (rc == KF_OK)
        rc = change_locked(kms, actor, uid, c, &d);
    if (rc < 0)
        kms_audit_refusal(kms, actor, c->op, d.name, rc == KF_ERR_OBJECT ? "" : uid, rc, NULL);
    else if (c->ev == KF_EV_DESTROY && kf_store_checkpoint(kms->store) < 0)
        kf_warn("WAL checkpoint after destroy did not complete; it will at the next one");
    kf_domain_clear(&d);
    pthread_mutex_unlock(&kms->lock);
    return rc;
}

int kf_kms_activate(kf_kms *kms, const char *actor, const char *uid)
{
    struct lifecycle_change c = {.op = "Activate", .ev = KF_EV_ACTIVATE};
    return lifecycle_op(kms, actor, uid, &c);
}

int kf_kms_revoke(kf_kms *kms, const char *actor, const char *uid, uint32_t reason,
                  int64_t compromise_time, const char *message)
{
    bool compromised = reason == KMIP_REVOKE_KEY_COMPROMISE || reason == KMIP_REVOKE_CA_COMPROMISE;
    struct lifecycle_change c = {
        .op = "Revoke",
        .ev = compromised ? KF_EV_REVOKE_COMPROMISED : KF_EV_REVOKE_OTHER,
        .reason = reason ? reason : KMIP_REVOKE_UNSPECIFIED,
        .compromise_time = compromise_time,
        .message = message,
    };
    if (reason > KMIP_REVOKE_PRIVILEGE_WITHDRAWN)
        return KF_ERR_ATTRIBUTE;
    return lifecycle_op(kms, actor, uid, &c);
}

int kf_kms_destroy(kf_kms *kms, const char *actor, const char *uid)
{
    struct lifecycle_change c = {.op = "Destroy", .ev = KF_EV_DESTROY};
    return lifecycle_op(kms, actor, uid, &c);
}

int kf_kms_uid_domain(const char *uid, char domain[65])
{
    uint64_t key_id;
    KF_ENSURE(uid && kf_object_uid_parse(uid, domain, &key_id) == KF_OK, KF_ERR_OBJECT);
    return KF_OK;
}

/* Load and unwrap on a read connection; the caller's crypto runs after. */
static int fetch_for_use(kf_kms *kms, kf_store *st, const char *uid, int purpose,
                         uint32_t usage_bit, struct kf_domain *d, struct kf_object *obj,
                         kf_buf *material)
{
    KF_ENSURE(!kf_secmod_sealed(kms->secmod), KF_ERR_SEALED);
    int rc = load_object_from(st, uid, d, obj);
    if (rc == KF_OK && !kf_lifecycle_allows_use(obj->state, (enum kf_use_purpose)purpose))
        rc = KF_ERR_STATE;
    if (rc == KF_OK && usage_bit && !(obj->usage_mask & usage_bit))
        rc = KF_ERR_PERM;
    if (rc == KF_OK && kms_object_archived(obj))
        rc = KF_ERR_OBJECT_ARCHIVED;
    if (rc == KF_OK && kms_object_device_bound(obj))
        rc = KF_ERR_PERM; /* a device MKEK serves only the pairing service */
    if (rc == KF_OK)
        rc = unwrap_material(kms, d, obj, material);
    return rc;
}

/* Does the object carry a Usage Limits attribute (KMIP: counted per use)? */
static bool has_usage_limits(const struct kf_object *obj)
{
    if (!obj->attributes || !obj->attributes_len)
        return false;
    kf_arena *a;
    kf_ttlv *set;
    if (kf_arena_new(&a, 0) < 0)
        return true; /* cannot tell: take the counting path, which decides */
    bool found = kf_ttlv_decode(obj->attributes, obj->attributes_len, NULL, a, &set) != KF_OK ||
                 kf_ttlv_find(set, KMIP_TAG_USAGE_LIMITS) != NULL;
    kf_arena_free(a);
    return found;
}

/* Count one use (or bytes) against the object's Usage Limits, durably, before the use. */
static int consume_usage(kf_kms *kms, const char *uid, uint64_t bytes)
{
    struct kf_domain d = {0};
    struct kf_object obj = {0};
    pthread_mutex_lock(&kms->lock);
    int rc = kf_store_begin(kms->store);
    if (rc == KF_OK) {
        rc = load_object(kms, uid, &d, &obj);
        if (rc == KF_OK)
            rc = kms_usage_limit_consume(kms, &obj, bytes);
        if (rc == KF_OK)
            rc = kf_store_commit(kms->store);
        else
            kf_store_rollback(kms->store);
    }
    pthread_mutex_unlock(&kms->lock);
    kf_object_clear(&obj);
    kf_domain_clear(&d);
    return rc;
}

int kf_kms_use_key(kf_kms *kms, const char *actor, const char *op, const char *uid, int purpose,
                   uint32_t usage_bit, kf_kms_key_fn fn, void *ctx)
{
    return kf_kms_use_key_bytes(kms, actor, op, uid, purpose, usage_bit, 0, fn, ctx);
}

int kf_kms_use_key_bytes(kf_kms *kms, const char *actor, const char *op, const char *uid,
                         int purpose, uint32_t usage_bit, uint64_t bytes, kf_kms_key_fn fn,
                         void *ctx)
{
    struct kf_domain d = {0};
    struct kf_object obj = {0};
    struct kms_read r;
    kf_buf material;
    KF_GUARD(kf_buf_alloc(&material, 64, 16384, KF_BUF_SECRET));
    kms_read_begin(kms, &r);
    int rc = fetch_for_use(kms, r.st, uid, purpose, usage_bit, &d, &obj, &material);
    kms_read_end(kms, &r);
    if (rc == KF_OK && has_usage_limits(&obj))
        rc = consume_usage(kms, uid, bytes);
    if (rc == KF_OK)
        rc = fn(ctx, &obj, material.data, material.len);
    kf_buf_free(&material);
    int arc = audit_use(kms, actor, op, d.name, uid, rc, NULL);
    if (rc == KF_OK && arc < 0)
        rc = KF_ERR_AUDIT_WRITE; /* the caller must not release the result */
    kf_object_clear(&obj);
    kf_domain_clear(&d);
    return rc;
}

int kms_register_in_tx(kf_kms *kms, const char *actor, const char *op,
                       const struct kf_register_spec *spec, const uint8_t *material,
                       size_t material_len, char uid[KF_UID_MAX])
{
    struct kf_domain d = {0};
    struct kf_object obj = {0};
    kf_buf wrapped = {0};
    kf_domain_handle h;
    int rc;
    if ((rc = kf_store_domain_get(kms->store, spec->domain, &d)) < 0 ||
        (rc = kms_domain_handle(kms, &d, &h)) < 0 ||
        (rc = kf_store_next_key_id(kms->store, d.id, &obj.key_id)) < 0 ||
        (rc = kf_buf_alloc(&wrapped, 0, 65536, 0)) < 0)
        goto out;
    if (spec->key_id && spec->key_id != obj.key_id) {
        rc = KF_ERR_EXISTS; /* the named ID is not the next one: never reuse or skip */
        goto out;
    }
    obj.domain_id = d.id;
    obj.object_type = spec->object_type;
    obj.state = spec->state ? spec->state : KF_STATE_PRE_ACTIVE;
    obj.crypto_alg = spec->crypto_alg;
    obj.crypto_length = spec->crypto_length;
    obj.usage_mask = spec->usage_mask;
    obj.key_format = spec->key_format;
    obj.version = 1;
    obj.initial_date = obj.last_change_date = now_seconds();
    if (obj.state == KF_STATE_ACTIVE)
        obj.activation_date = obj.initial_date;
    if (spec->name)
        snprintf(obj.name, sizeof(obj.name), "%s", spec->name);
    /* The client's attributes plus the server-set ones (Digest over the material). */
    struct kms_new_object given = {.key_format = spec->key_format,
                                   .material = material,
                                   .material_len = material_len,
                                   .generated = spec->server_generated,
                                   .now = obj.initial_date};
    if ((rc = kms_server_attrs(spec->attributes, spec->attributes_len, &given, &obj.attributes,
                               &obj.attributes_len)) < 0)
        goto out;
    if ((rc = kf_secmod_wrap(kms->secmod, h, obj.key_id, d.id, obj.version, material,
                             material_len, &wrapped)) < 0)
        goto out;
    obj.material = wrapped.data;
    obj.material_len = wrapped.len;
    if ((rc = kf_store_object_insert(kms->store, &obj)) < 0 ||
        (rc = kf_object_uid_format(d.name, obj.key_id, uid, KF_UID_MAX)) < 0)
        goto out;
    char detail[96];
    snprintf(detail, sizeof(detail), "type %u alg %u length %d", obj.object_type, obj.crypto_alg,
             obj.crypto_length);
    rc = kms_audit(kms, actor, op, d.name, uid, KF_OK, detail);
out:
    free(obj.attributes);
    kf_buf_free(&wrapped);
    kf_domain_clear(&d);
    return rc;
}

static int register_locked(kf_kms *kms, const char *actor, const char *op,
                           const struct kf_register_spec *spec, const uint8_t *material,
                           size_t material_len, char uid[KF_UID_MAX])
{
    KF_GUARD(kf_store_begin(kms->store));
    int rc = kms_register_in_tx(kms, actor, op, spec, material, material_len, uid);
    if (rc == KF_OK)
        rc = kf_store_commit(kms->store);
    if (rc < 0)
        kf_store_rollback(kms->store);
    return rc;
}

int kf_kms_register(kf_kms *kms, const char *actor, const char *op,
                    const struct kf_register_spec *spec, const uint8_t *material,
                    size_t material_len, char uid[KF_UID_MAX])
{
    KF_ENSURE(spec && spec->domain && material && material_len > 0 && material_len <= 16384,
              KF_ERR_ARG);
    KF_ENSURE(!spec->name || strlen(spec->name) <= KF_OBJECT_NAME_MAX, KF_ERR_ATTRIBUTE);
    pthread_mutex_lock(&kms->lock);
    int rc = kf_secmod_sealed(kms->secmod) ? KF_ERR_SEALED : KF_OK;
    if (rc == KF_OK)
        rc = register_locked(kms, actor, op, spec, material, material_len, uid);
    if (rc < 0)
        kms_audit_refusal(kms, actor, op, kf_domain_name_valid(spec->domain) ? spec->domain : "",
                          "", rc, NULL);
    pthread_mutex_unlock(&kms->lock);
    return rc;
}

/* Why an object cannot take new material (KF_OK if it can). */
static int replace_refusal(const struct kf_object *obj, const struct kf_register_spec *spec)
{
    if (obj->object_type != spec->object_type)
        return KF_ERR_ATTRIBUTE;
    if (obj->state == KF_STATE_DESTROYED || obj->state == KF_STATE_DESTROYED_COMPROMISED ||
        !obj->material)
        return KF_ERR_STATE;
    if (kms_object_device_bound(obj))
        return KF_ERR_PERM; /* new material would be a key the device does not hold */
    return kms_object_archived(obj) ? KF_ERR_OBJECT_ARCHIVED : KF_OK;
}

static int replace_locked(kf_kms *kms, const char *actor, const char *op, const char *uid,
                          const struct kf_register_spec *spec, const uint8_t *material,
                          size_t material_len, struct kf_domain *d)
{
    struct kf_object obj = {0};
    kf_buf wrapped = {0};
    kf_domain_handle h;
    uint8_t *attrs = NULL;
    size_t attrs_len = 0;
    KF_GUARD(kf_store_begin(kms->store));
    int rc = load_object(kms, uid, d, &obj);
    if (rc == KF_OK)
        rc = replace_refusal(&obj, spec);
    struct kms_new_object given = {.key_format = spec->key_format,
                                   .material = material,
                                   .material_len = material_len,
                                   .generated = false,
                                   .now = now_seconds()};
    if (rc == KF_OK)
        rc = kms_server_attrs(spec->attributes, spec->attributes_len, &given, &attrs, &attrs_len);
    if (rc == KF_OK && (rc = kms_domain_handle(kms, d, &h)) == KF_OK &&
        (rc = kf_buf_alloc(&wrapped, 0, 65536, 0)) == KF_OK)
        rc = kf_secmod_wrap(kms->secmod, h, obj.key_id, d->id, obj.version + 1, material,
                            material_len, &wrapped);
    if (rc == KF_OK) {
        free(obj.material);
        free(obj.attributes);
        obj.material = wrapped.data; /* still owned by wrapped */
        obj.material_len = wrapped.len;
        obj.attributes = attrs;
        obj.attributes_len = attrs_len;
        attrs = NULL;
        obj.version++;
        obj.crypto_alg = spec->crypto_alg;
        obj.crypto_length = spec->crypto_length;
        obj.key_format = spec->key_format;
        if (spec->usage_mask)
            obj.usage_mask = spec->usage_mask;
        if (spec->name)
            snprintf(obj.name, sizeof(obj.name), "%s", spec->name);
        obj.last_change_date = given.now;
        rc = kf_store_object_update(kms->store, &obj);
        obj.material = NULL; /* wrapped frees it */
    }
    char detail[64];
    snprintf(detail, sizeof(detail), "material replaced, version %u", obj.version);
    if (rc == KF_OK)
        rc = kms_audit(kms, actor, op, d->name, uid, KF_OK, detail);
    if (rc == KF_OK)
        rc = kf_store_commit(kms->store);
    if (rc < 0)
        kf_store_rollback(kms->store);
    free(attrs);
    kf_buf_free(&wrapped);
    kf_object_clear(&obj);
    return rc;
}

int kf_kms_replace_material(kf_kms *kms, const char *actor, const char *op, const char *uid,
                            const struct kf_register_spec *spec, const uint8_t *material,
                            size_t material_len)
{
    KF_ENSURE(spec && uid && material && material_len > 0 && material_len <= 16384, KF_ERR_ARG);
    KF_ENSURE(!spec->name || strlen(spec->name) <= KF_OBJECT_NAME_MAX, KF_ERR_ATTRIBUTE);
    struct kf_domain d = {0};
    pthread_mutex_lock(&kms->lock);
    int rc = kf_secmod_sealed(kms->secmod) ? KF_ERR_SEALED : KF_OK;
    if (rc == KF_OK)
        rc = replace_locked(kms, actor, op, uid, spec, material, material_len, &d);
    if (rc < 0)
        kms_audit_refusal(kms, actor, op, d.name, rc == KF_ERR_OBJECT ? "" : uid, rc, NULL);
    pthread_mutex_unlock(&kms->lock);
    kf_domain_clear(&d);
    return rc;
}

static int update_locked(kf_kms *kms, const char *actor, const char *op, const char *uid,
                         kf_kms_update_fn fn, void *ctx, struct kf_domain *d)
{
    struct kf_object obj = {0};
    KF_GUARD(kf_store_begin(kms->store));
    int rc = load_object(kms, uid, d, &obj);
    if (rc == KF_OK) {
        struct kf_object before = obj;
        free(obj.material);
        obj.material = NULL; /* update leaves material alone when NULL */
        before.material = NULL;
        rc = fn(ctx, &obj);
        /* Identity, state and wrapping are not fn's to change. */
        if (rc == KF_OK && (obj.domain_id != before.domain_id || obj.key_id != before.key_id ||
                            obj.state != before.state || obj.version != before.version))
            rc = KF_ERR_INTERNAL;
        if (rc == KF_OK) {
            obj.last_change_date = now_seconds();
            rc = kf_store_object_update(kms->store, &obj);
        }
    }
    if (rc == KF_OK)
        rc = kms_audit(kms, actor, op, d->name, uid, KF_OK, NULL);
    if (rc == KF_OK)
        rc = kf_store_commit(kms->store);
    if (rc < 0)
        kf_store_rollback(kms->store);
    kf_object_clear(&obj);
    return rc;
}

int kf_kms_update(kf_kms *kms, const char *actor, const char *op, const char *uid,
                  kf_kms_update_fn fn, void *ctx)
{
    struct kf_domain d = {0};
    pthread_mutex_lock(&kms->lock);
    int rc = update_locked(kms, actor, op, uid, fn, ctx, &d);
    if (rc < 0)
        kms_audit_refusal(kms, actor, op, d.name, rc == KF_ERR_OBJECT ? "" : uid, rc, NULL);
    pthread_mutex_unlock(&kms->lock);
    kf_domain_clear(&d);
    return rc;
}
