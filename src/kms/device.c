/*
 * Devices and pairwise KEKs (seed EP 0 948 158, DESIGN §4.1, wire format and
 * rules in docs/pairing.md): registration, the one-time export of a device's
 * installation package, device metadata, pair key requests and their
 * acknowledgements.
 *
 * What is stored: the device row (domain, MKEK object, counter C_X, export
 * mark) and, per KEK, only metadata (IDs, devices, counters, window, uses,
 * acks). The MKEK is an ordinary managed object of the device's domain,
 * wrapped under the domain key like every other; a server-owned custom
 * attribute y-keyfleet-device marks it, and objects.c refuses Get, Export,
 * every KMIP key use and Import-replace of a marked object, so its plaintext
 * leaves the server only in the installation package. A KEK exists only in
 * secure memory between the RNG and kfd_issue_part, and is wiped after. The
 * unwrapped MKEKs of devices being served are cached in secure memory
 * (device_cache.c), wiped on seal.
 *
 * Order of a pair request (the replayed-M defence of seed [0039]-[0041]
 * depends on it): ONE transaction advances C_A and C_B, reserves the KEK IDs,
 * records their metadata and the audit record, and commits durably; only then
 * are the KEKs drawn and M built. A crash after commit loses nothing that
 * matters: the counters only went up, and the unused KEK IDs are simply never
 * acknowledged. Pair requests and acknowledgements are group-committed like
 * creates (groupcommit.c): concurrent callers share one transaction and one
 * fdatasync of the WAL, each in its own savepoint, and each is answered only
 * once that fdatasync, begun after the commit, has completed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyfleet/device.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/log.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "keyfleet/ttlv.h"
#include "kms_internal.h"

#define DEVICE_MARK_VENDOR "y"
#define DEVICE_MARK_NAME "keyfleet-device"
#define DEVICE_OBJECT_PREFIX "device:"

static int64_t now_seconds(void)
{
    return (int64_t)time(NULL);
}

/* ---- The MKEK's mark ---- */

static bool is_device_mark(const kf_ttlv *n)
{
    return n->tag == KMIP_TAG_ATTRIBUTE &&
           kf_ttlv_text_equals(kf_ttlv_find(n, KMIP_TAG_VENDOR_IDENTIFICATION),
                               DEVICE_MARK_VENDOR) &&
           kf_ttlv_text_equals(kf_ttlv_find(n, KMIP_TAG_ATTRIBUTE_NAME), DEVICE_MARK_NAME);
}

bool kms_object_device_bound(const struct kf_object *obj)
{
    static const char name[] = DEVICE_MARK_NAME;
    if (!obj || !obj->attributes || obj->attributes_len == 0)
        return false;
    /* Fast path for the common object: the mark's name is not in the blob at all. */
    if (!memmem(obj->attributes, obj->attributes_len, name, sizeof(name) - 1))
        return false;
    kf_arena *a;
    kf_ttlv *root;
    if (kf_arena_new(&a, 0) < 0)
        return true; /* cannot tell: refuse rather than serve a device key */
    bool bound = kf_ttlv_decode(obj->attributes, obj->attributes_len, NULL, a, &root) != KF_OK;
    for (const kf_ttlv *n = bound ? NULL : root->child; n && !bound; n = n->next)
        bound = is_device_mark(n);
    kf_arena_free(a);
    return bound;
}

/* Attributes of a new MKEK: the mark (read-only for clients, as every "y"
 * attribute) plus Sensitive and not Extractable, which say the same in KMIP's
 * own words to a client that looks. */
static int mkek_attributes(const char *id, kf_buf *out)
{
    kf_arena *a;
    KF_GUARD(kf_arena_new(&a, 0));
    kf_ttlv *set = kf_ttlv_struct(a, NULL, KMIP_TAG_ATTRIBUTES);
    kf_ttlv *mark = set ? kf_ttlv_struct(a, set, KMIP_TAG_ATTRIBUTE) : NULL;
    int rc =
        mark && kf_ttlv_add_text(a, mark, KMIP_TAG_VENDOR_IDENTIFICATION, DEVICE_MARK_VENDOR) &&
                kf_ttlv_add_text(a, mark, KMIP_TAG_ATTRIBUTE_NAME, DEVICE_MARK_NAME) &&
                kf_ttlv_add_text(a, mark, KMIP_TAG_ATTRIBUTE_VALUE, id) &&
                kf_ttlv_add_bool(a, set, KMIP_TAG_SENSITIVE, true) &&
                kf_ttlv_add_bool(a, set, KMIP_TAG_EXTRACTABLE, false)
            ? KF_OK
            : KF_ERR_NOMEM;
    if (rc == KF_OK)
        rc = kf_ttlv_encode(set, out);
    kf_arena_free(a);
    return rc;
}

/* The MKEK object may serve purpose now (lifecycle, archive, material, mark). */
static int mkek_usable(struct kf_object *obj, enum kf_use_purpose purpose)
{
    obj->state = kf_lifecycle_effective_state(obj->state, obj->activation_date,
                                              obj->deactivation_date, now_seconds());
    KF_ENSURE(kms_object_device_bound(obj), KF_ERR_INTERNAL);
    KF_ENSURE(!kms_object_archived(obj), KF_ERR_OBJECT_ARCHIVED);
    KF_ENSURE(kf_lifecycle_allows_use(obj->state, purpose) && obj->material, KF_ERR_STATE);
    return KF_OK;
}

/* Unwrap the MKEK into mkek (KF_BUF_SECRET, exactly KFD_KEY_LEN bytes). */
static int mkek_unwrap(kf_kms *kms, const struct kf_domain *d, const struct kf_object *obj,
                       kf_buf *mkek)
{
    kf_domain_handle h;
    KF_ENSURE(!kf_secmod_sealed(kms->secmod), KF_ERR_SEALED);
    KF_GUARD(kms_domain_handle(kms, d, &h));
    KF_GUARD(kf_secmod_unwrap(kms->secmod, h, obj->key_id, d->id, obj->version, obj->material,
                              obj->material_len, mkek));
    KF_ENSURE(mkek->len == KFD_KEY_LEN, KF_ERR_INTERNAL);
    return KF_OK;
}

/* A device ID fit to echo into an audit record, else "". */
static const char *shown_id(const char *id)
{
    return id && kfd_id_valid(id) == KF_OK ? id : "";
}

/* Device row, its domain and (optionally) its MKEK object on connection st. */
static int load_device(kf_store *st, const char *id, struct kf_device *dev, struct kf_domain *d,
                       struct kf_object *mkek)
{
    KF_GUARD(kf_store_device_get(st, id, dev));
    KF_GUARD(kf_store_domain_get_by_id(st, dev->domain_id, d));
    if (mkek)
        KF_GUARD(kf_store_object_get(st, dev->domain_id, dev->mkek_key_id, mkek));
    return KF_OK;
}

static int fill_info(kf_store *st, const struct kf_device *dev, const struct kf_domain *d,
                     struct kf_device_info *out)
{
    struct kf_device_stats stats;
    KF_GUARD(kf_store_device_stats(st, dev->id, &stats));
    memset(out, 0, sizeof(*out));
    memcpy(out->id, dev->id, sizeof(out->id));
    memcpy(out->domain, d->name, sizeof(out->domain));
    KF_GUARD(kf_object_uid_format(d->name, dev->mkek_key_id, out->mkek_uid, sizeof(out->mkek_uid)));
    out->counter = dev->counter;
    out->exported = dev->exported_at != 0;
    out->exported_at = dev->exported_at;
    out->created_at = dev->created_at;
    out->last_kek_id = stats.last_kek_id;
    out->acks_pending = stats.acks_pending;
    return KF_OK;
}

/* ---- Register ---- */

static int register_in_tx(kf_kms *kms, const char *actor, const char *id, const char *domain,
                          const uint8_t *mkek, struct kf_device_info *out)
{
    struct kf_device dev = {0};
    struct kf_domain d = {0};
    kf_buf attrs = {0};
    char uid[KF_UID_MAX], name[sizeof(DEVICE_OBJECT_PREFIX) + KF_DEVICE_ID_MAX];
    char dname[KF_DOMAIN_NAME_MAX + 1];
    int rc = kf_store_device_get(kms->store, id, &dev);
    if (rc == KF_OK)
        return KF_ERR_DEVICE_EXISTS; /* device IDs are never reused */
    if (rc != KF_ERR_DEVICE_UNKNOWN)
        return rc;
    snprintf(name, sizeof(name), DEVICE_OBJECT_PREFIX "%s", id);
    if ((rc = kf_buf_alloc(&attrs, 0, 4096, 0)) < 0 || (rc = mkek_attributes(id, &attrs)) < 0)
        goto out;
    struct kf_register_spec spec = {
        .domain = domain,
        .object_type = KF_OBJ_SYMMETRIC_KEY,
        .crypto_alg = KMIP_ALG_AES,
        .crypto_length = KFD_KEY_LEN * 8,
        /* What the server does with it: derive MSK_X and AK_X, wrap KEKs. */
        .usage_mask = KMIP_USAGE_DERIVE_KEY | KMIP_USAGE_WRAP_KEY,
        .key_format = KMIP_KEYFMT_RAW,
        .name = name,
        .attributes = attrs.data,
        .attributes_len = attrs.len,
        .state = KF_STATE_ACTIVE,
        .server_generated = true,
    };
    /* The service's own Register path: wrapped under the domain key, audited. */
    if ((rc = kms_register_in_tx(kms, actor, "DeviceRegister (MKEK)", &spec, mkek, KFD_KEY_LEN,
                                 uid)) < 0)
        goto out;
    if ((rc = kf_store_domain_get(kms->store, domain, &d)) < 0 ||
        (rc = kf_object_uid_parse(uid, dname, &dev.mkek_key_id)) < 0)
        goto out;
    memset(dev.id, 0, sizeof(dev.id));
    memcpy(dev.id, id, strlen(id));
    dev.domain_id = d.id;
    dev.counter = 0;
    dev.exported_at = 0;
    dev.created_at = now_seconds();
    if ((rc = kf_store_device_insert(kms->store, &dev)) < 0)
        goto out;
    char detail[160];
    snprintf(detail, sizeof(detail), "master key %s, counter 0", uid);
    if ((rc = kms_audit(kms, actor, "DeviceRegister", domain, id, KF_OK, detail)) < 0)
        goto out;
    if (out)
        rc = fill_info(kms->store, &dev, &d, out);
out:
    kf_buf_free(&attrs);
    kf_domain_clear(&d);
    return rc;
}

int kf_kms_device_register(kf_kms *kms, const char *actor, const char *id, const char *domain,
                           struct kf_device_info *out)
{
    KF_ENSURE(kms && actor, KF_ERR_ARG);
    kf_buf mkek = {0};
    uint8_t *p;
    int rc = kfd_id_valid(id);
    if (rc == KF_OK && !kf_domain_name_valid(domain))
        rc = KF_ERR_DOMAIN;
    if (rc == KF_OK &&
        (rc = kf_buf_alloc(&mkek, KFD_KEY_LEN, KFD_KEY_LEN, KF_BUF_SECRET)) == KF_OK &&
        (rc = kf_buf_put_space(&mkek, KFD_KEY_LEN, &p)) == KF_OK)
        rc = kf_rng_bytes(p, KFD_KEY_LEN);
    pthread_mutex_lock(&kms->lock);
    if (rc == KF_OK && kf_secmod_sealed(kms->secmod))
        rc = KF_ERR_SEALED;
    if (rc == KF_OK && (rc = kf_store_begin(kms->store)) == KF_OK) {
        rc = register_in_tx(kms, actor, id, domain, mkek.data, out);
        if (rc == KF_OK)
            rc = kf_store_commit(kms->store);
        if (rc < 0)
            kf_store_rollback(kms->store);
    }
    if (rc < 0)
        kms_audit_refusal(kms, actor, "DeviceRegister", kf_domain_name_valid(domain) ? domain : "",
                          shown_id(id), rc,
                          rc == KF_ERR_RNG_HEALTH ? "random source failed its health test" : NULL);
    pthread_mutex_unlock(&kms->lock);
    kf_buf_free(&mkek);
    return rc;
}

/* ---- Export (once) ---- */

/* TTLV by hand, straight into the caller's secure buffer, so the MKEK is
 * never copied into ordinary memory on the way. */
static int put_item(kf_buf *b, uint32_t tag, uint8_t type, const void *v, size_t n)
{
    static const uint8_t zeros[8];
    KF_ENSURE(n <= UINT32_MAX, KF_ERR_LIMIT);
    KF_GUARD(kf_buf_put_u24(b, tag));
    KF_GUARD(kf_buf_put_u8(b, type));
    KF_GUARD(kf_buf_put_u32(b, (uint32_t)n));
    if (n)
        KF_GUARD(kf_buf_put_bytes(b, v, n));
    return kf_buf_put_bytes(b, zeros, (8 - n % 8) % 8);
}

static size_t item_size(size_t n)
{
    return 8 + (n + 7) / 8 * 8;
}

static int encode_package(const char *id, const char *domain, const uint8_t *mkek, kf_buf *out)
{
    uint8_t version[4] = {0, 0, 0, KFD_PROTO_VERSION};
    size_t inner =
        item_size(4) + item_size(strlen(id)) + item_size(strlen(domain)) + item_size(KFD_KEY_LEN);
    KF_GUARD(kf_buf_put_u24(out, KMIP_TAG_KEYFLEET_DEVICE_PACKAGE));
    KF_GUARD(kf_buf_put_u8(out, KF_TTLV_STRUCTURE));
    KF_GUARD(kf_buf_put_u32(out, (uint32_t)inner));
    KF_GUARD(put_item(out, KMIP_TAG_KEYFLEET_PROTO_VERSION, KF_TTLV_INTEGER, version, 4));
    KF_GUARD(put_item(out, KMIP_TAG_KEYFLEET_DEVICE_ID, KF_TTLV_TEXT, id, strlen(id)));
    KF_GUARD(put_item(out, KMIP_TAG_KEYFLEET_DOMAIN, KF_TTLV_TEXT, domain, strlen(domain)));
    return put_item(out, KMIP_TAG_KEYFLEET_MASTER_KEY, KF_TTLV_BYTES, mkek, KFD_KEY_LEN);
}

static int export_in_tx(kf_kms *kms, const char *actor, const char *id, kf_buf *package,
                        struct kf_domain *d)
{
    struct kf_device dev;
    struct kf_object obj = {0};
    kf_buf mkek = {0};
    int rc = load_device(kms->store, id, &dev, d, &obj);
    if (rc == KF_OK && dev.exported_at != 0)
        rc = KF_ERR_DEVICE_EXPORTED;
    if (rc == KF_OK)
        rc = mkek_usable(&obj, KF_USE_GET);
    if (rc == KF_OK)
        rc = kf_buf_alloc(&mkek, KFD_KEY_LEN, 64, KF_BUF_SECRET);
    if (rc == KF_OK)
        rc = mkek_unwrap(kms, d, &obj, &mkek);
    if (rc == KF_OK)
        rc = encode_package(id, d->name, mkek.data, package);
    kf_buf_free(&mkek); /* wipes */
    /* The mark commits with the audit record before anyone sees the package. */
    if (rc == KF_OK)
        rc = kf_store_device_set_exported(kms->store, id, now_seconds());
    if (rc == KF_OK) {
        char detail[160];
        snprintf(detail, sizeof(detail), "installation package with master key %s/%llu", d->name,
                 (unsigned long long)dev.mkek_key_id);
        rc = kms_audit(kms, actor, "DeviceExport", d->name, id, KF_OK, detail);
    }
    kf_object_clear(&obj);
    return rc;
}

int kf_kms_device_export(kf_kms *kms, const char *actor, const char *id, kf_buf *package)
{
    KF_ENSURE(kms && actor && package && (package->flags & KF_BUF_SECRET), KF_ERR_ARG);
    struct kf_domain d = {0};
    int rc = kfd_id_valid(id);
    pthread_mutex_lock(&kms->lock);
    if (rc == KF_OK && kf_secmod_sealed(kms->secmod))
        rc = KF_ERR_SEALED;
    if (rc == KF_OK && (rc = kf_store_begin(kms->store)) == KF_OK) {
        rc = export_in_tx(kms, actor, id, package, &d);
        if (rc == KF_OK)
            rc = kf_store_commit(kms->store);
        if (rc < 0)
            kf_store_rollback(kms->store);
    }
    if (rc < 0) {
        kf_buf_reset(package); /* wipes whatever was written */
        kms_audit_refusal(kms, actor, "DeviceExport", d.name, shown_id(id), rc,
                          rc == KF_ERR_DEVICE_EXPORTED ? "second export refused" : NULL);
    }
    pthread_mutex_unlock(&kms->lock);
    kf_domain_clear(&d);
    return rc;
}

/* ---- Get ---- */

static int audit_read(kf_kms *kms, const char *actor, const char *op, const char *domain,
                      const char *id, int rc)
{
    struct kf_audit_event ev = {
        .actor = actor,
        .operation = op,
        .domain = domain ? domain : "",
        .object = shown_id(id),
        .result = rc == KF_OK ? "ok" : kf_errname(rc),
        .detail = "",
    };
    return kms_audit_group(kms, &ev);
}

int kf_kms_device_get(kf_kms *kms, const char *actor, const char *id, struct kf_device_info *out)
{
    KF_ENSURE(kms && actor && out, KF_ERR_ARG);
    struct kf_device dev;
    struct kf_domain d = {0};
    struct kms_read r;
    int rc = kfd_id_valid(id);
    if (rc == KF_OK) {
        kms_read_begin(kms, &r);
        rc = load_device(r.st, id, &dev, &d, NULL);
        if (rc == KF_OK)
            rc = fill_info(r.st, &dev, &d, out);
        kms_read_end(kms, &r);
    }
    int arc = audit_read(kms, actor, "DeviceGet", d.name, id, rc);
    if (rc == KF_OK && arc < 0)
        rc = KF_ERR_AUDIT_WRITE;
    kf_domain_clear(&d);
    return rc;
}

int kf_kms_device_domain(kf_kms *kms, const char *id, char domain[KF_DOMAIN_NAME_MAX + 1])
{
    KF_ENSURE(kms && domain, KF_ERR_ARG);
    KF_GUARD(kfd_id_valid(id));
    struct kms_device_view v;
    struct kms_read r;
    int rc = kms_device_identity(kms, NULL, id, &v); /* cached after the first time */
    if (rc == KF_ERR_NOT_FOUND) {
        kms_read_begin(kms, &r);
        rc = kms_device_identity(kms, r.st, id, &v);
        kms_read_end(kms, &r);
    }
    if (rc == KF_OK)
        memcpy(domain, v.domain, KF_DOMAIN_NAME_MAX + 1);
    return rc;
}

/* ---- Group commit of pair requests and acknowledgements ----
 * groupcommit.c: the leader runs every queued job in its own savepoint inside
 * one transaction, commits once, audits the refusals, and the jobs are
 * answered only once the commit is fsync'ed (kf_store_sync). A job's result
 * is final only then. */
struct dev_job {
    struct kms_gc_job gc;                            /* first: the queue holds &gc */
    int (*run)(kf_kms *kms, struct dev_job *j);      /* in the open transaction */
    void (*refused)(kf_kms *kms, struct dev_job *j); /* audit gc.rc, under kms->lock */
};

static int run_in_savepoint(kf_kms *kms, struct dev_job *j)
{
    KF_GUARD(kf_store_savepoint(kms->store));
    int rc = j->run(kms, j);
    kf_store_savepoint_end(kms->store, rc == KF_OK);
    return rc;
}

static uint64_t run_device_batch(kf_kms *kms, struct kms_gc_job *batch)
{
    uint64_t ticket = 0;
    bool deferred;
    pthread_mutex_lock(&kms->lock);
    int trc = kf_secmod_sealed(kms->secmod) ? KF_ERR_SEALED
                                            : kf_store_begin_deferred(kms->store, &deferred);
    for (struct kms_gc_job *j = batch; j; j = j->next)
        j->rc = trc == KF_OK ? run_in_savepoint(kms, (struct dev_job *)j) : trc;
    if (trc == KF_OK && (trc = kf_store_commit_deferred(kms->store, &ticket)) < 0) {
        kf_store_rollback(kms->store);
        for (struct kms_gc_job *j = batch; j; j = j->next)
            if (j->rc == KF_OK)
                j->rc = trc; /* nothing of the batch persisted */
    }
    for (struct kms_gc_job *j = batch; j; j = j->next)
        if (j->rc < 0)
            ((struct dev_job *)j)->refused(kms, (struct dev_job *)j);
    pthread_mutex_unlock(&kms->lock);
    return ticket;
}

static int device_batch_submit(kf_kms *kms, struct dev_job *me)
{
    return kms_gc_submit(kms, &kms->device_q, &me->gc, run_device_batch);
}

/* ---- Pair key request ---- */

struct pair_job {
    struct dev_job job; /* first */
    const char *actor, *id_a, *id_b;
    uint32_t count, lifetime, max_uses;
    /* Captured in the transaction for building M after the commit. */
    char domain[KF_DOMAIN_NAME_MAX + 1];
    struct kms_device_view dev[2];
    uint64_t counter[2];
    uint64_t first_kek_id;
    int64_t not_before;
};

/* The MKEK may wrap KEKs now: its mark, archive, material and (from its
 * dates, now) its state, as of this transaction. */
static int device_usable(const struct kms_device_view *v, enum kf_use_purpose purpose)
{
    uint32_t state = kf_lifecycle_effective_state(v->state, v->activation_date,
                                                  v->deactivation_date, now_seconds());
    KF_ENSURE(v->bound, KF_ERR_INTERNAL);
    KF_ENSURE(!v->archived, KF_ERR_OBJECT_ARCHIVED);
    KF_ENSURE(kf_lifecycle_allows_use(state, purpose) && v->has_material, KF_ERR_STATE);
    return KF_OK;
}

static int pair_run(kf_kms *kms, struct dev_job *j)
{
    struct pair_job *p = (struct pair_job *)j;
    const char *ids[2] = {p->id_a, p->id_b};
    kf_store *st = kms->store;
    for (int i = 0; i < 2; i++)
        KF_GUARD(kms_device_view_tx(kms, ids[i], &p->dev[i]));
    KF_ENSURE(p->dev[0].domain_id == p->dev[1].domain_id, KF_ERR_DOMAIN_CROSS);
    memcpy(p->domain, p->dev[0].domain, sizeof(p->domain));
    for (int i = 0; i < 2; i++)
        KF_GUARD(device_usable(&p->dev[i], KF_USE_WRAP));
    /* C_A + 1, C_B + 1: in the database (authoritative) and in this job. */
    KF_GUARD(kf_store_device_next_counters(st, ids, p->counter));
    KF_GUARD(kf_store_kek_ids_next(st, p->count, &p->first_kek_id));
    p->not_before = now_seconds();
    struct kf_pair_kek k = {
        .domain_id = p->dev[0].domain_id,
        .counter_a = p->counter[0],
        .counter_b = p->counter[1],
        .max_uses = p->max_uses,
        .issued_at = p->not_before,
    };
    memcpy(k.id_a, p->dev[0].id, sizeof(k.id_a));
    memcpy(k.id_b, p->dev[1].id, sizeof(k.id_b));
    for (uint32_t i = 0; i < p->count; i++) {
        k.kek_id = p->first_kek_id + i;
        k.kek_index = i;
        k.not_before = p->not_before + (int64_t)i * p->lifetime;
        k.not_after = k.not_before + p->lifetime;
        KF_GUARD(kf_store_pair_kek_insert(st, &k));
    }
    /* IDs, KEK IDs and counters: never a key. */
    char detail[320];
    snprintf(detail, sizeof(detail),
             "A %s B %s kek %llu..%llu count %u counter A %llu B %llu lifetime %u max uses %u",
             p->id_a, p->id_b, (unsigned long long)p->first_kek_id,
             (unsigned long long)(p->first_kek_id + p->count - 1), p->count,
             (unsigned long long)p->counter[0], (unsigned long long)p->counter[1], p->lifetime,
             p->max_uses);
    return kms_audit(kms, p->actor, "PairKeyRequest", p->domain, p->id_a, KF_OK, detail);
}

static void pair_audit_refusal(kf_kms *kms, const struct pair_job *p, int rc, const char *why)
{
    char detail[256];
    const char *b = shown_id(p->id_b);
    if (why)
        snprintf(detail, sizeof(detail), "B %s: %s", *b ? b : "-", why);
    else
        snprintf(detail, sizeof(detail), "B %s", *b ? b : "-");
    kms_audit_refusal(kms, p->actor, "PairKeyRequest", p->domain, shown_id(p->id_a), rc, detail);
}

static void pair_refused(kf_kms *kms, struct dev_job *j)
{
    struct pair_job *p = (struct pair_job *)j;
    pair_audit_refusal(kms, p, j->gc.rc,
                       j->gc.rc == KF_ERR_RNG_HEALTH ? "random source failed its health test"
                                                     : NULL);
}

/* One part of M, built with the MKEK of its device (kms_device_with_mkek). */
struct part_build {
    const struct pair_job *p;
    enum kfd_role role;
    uint64_t counter;
    const struct kfd_issue_kek *meta;
    const uint8_t (*keks)[KFD_KEY_LEN];
    const uint8_t *nonce;
    kf_buf *m;
};

static int build_part(void *ctx, const uint8_t *mkek)
{
    const struct part_build *b = ctx;
    return kfd_issue_part(mkek, b->role, b->p->id_a, b->p->id_b, b->counter, b->meta, b->keks,
                          b->p->count, b->nonce, b->m);
}

/* After the commit: draw the KEKs, build SM_A || SM_B into m, wipe. */
static int build_message(kf_kms *kms, struct pair_job *p, kf_buf *m)
{
    kf_buf keks = {0};
    struct kfd_issue_kek meta[KF_PAIR_MAX_KEKS];
    static const enum kfd_role roles[2] = {KFD_ROLE_A, KFD_ROLE_B};
    uint8_t *kp;
    /* One draw for the KEKs and both nonces (the nonces follow the KEKs). */
    size_t n = (size_t)p->count * KFD_KEY_LEN, all = n + 2 * KFD_NONCE_LEN;
    int rc = kf_buf_alloc(&keks, all, all, KF_BUF_SECRET);
    if (rc == KF_OK && (rc = kf_buf_put_space(&keks, all, &kp)) == KF_OK)
        rc = kf_rng_bytes(kp, all);
    const uint8_t *nonce[2] = {NULL, NULL};
    if (rc == KF_OK) {
        nonce[0] = kp + n;
        nonce[1] = kp + n + KFD_NONCE_LEN;
    }
    for (uint32_t i = 0; i < p->count; i++)
        meta[i] = (struct kfd_issue_kek){
            .kek_id = p->first_kek_id + i,
            .not_before = p->not_before + (int64_t)i * p->lifetime,
            .not_after = p->not_before + (int64_t)(i + 1) * p->lifetime,
            .max_uses = p->max_uses,
        };
    /* Each part is appended to m: M = SM_A || SM_B. */
    for (int i = 0; i < 2 && rc == KF_OK; i++) {
        struct part_build b = {
            .p = p,
            .role = roles[i],
            .counter = p->counter[i],
            .meta = meta,
            .keks = (const uint8_t(*)[KFD_KEY_LEN])keks.data,
            .nonce = nonce[i],
            .m = m,
        };
        rc = kms_device_with_mkek(kms, &p->dev[i], build_part, &b);
    }
    kf_buf_free(&keks); /* wipes the KEKs: nothing of them remains but M */
    if (rc < 0)
        kf_buf_reset(m);
    return rc;
}

static int pair_policy(uint32_t count, uint32_t lifetime, uint32_t max_uses)
{
    KF_ENSURE(count >= 1 && count <= KF_PAIR_MAX_KEKS, KF_ERR_PAIR_POLICY);
    KF_ENSURE(lifetime >= 1 && lifetime <= KF_PAIR_MAX_LIFETIME, KF_ERR_PAIR_POLICY);
    KF_ENSURE(max_uses >= 1 && max_uses <= KF_PAIR_MAX_MAX_USES, KF_ERR_PAIR_POLICY);
    return KF_OK;
}

int kf_kms_pair_issue(kf_kms *kms, const char *actor, const char *id_a, const char *id_b,
                      uint32_t count, uint32_t lifetime_s, uint32_t max_uses, kf_buf *m)
{
    KF_ENSURE(kms && actor && m, KF_ERR_ARG);
    struct pair_job p = {
        .job = {.run = pair_run, .refused = pair_refused},
        .actor = actor,
        .id_a = id_a,
        .id_b = id_b,
        .count = count,
        .lifetime = lifetime_s ? lifetime_s : KF_PAIR_DEFAULT_LIFETIME,
        .max_uses = max_uses ? max_uses : KF_PAIR_DEFAULT_MAX_USES,
    };
    int rc = kfd_id_valid(id_a);
    if (rc == KF_OK)
        rc = kfd_id_valid(id_b);
    if (rc == KF_OK && strcmp(id_a, id_b) == 0)
        rc = KF_ERR_PAIR_SAME;
    if (rc == KF_OK)
        rc = pair_policy(p.count, p.lifetime, p.max_uses);
    if (rc == KF_OK && kf_rng_failed())
        rc = KF_ERR_RNG_HEALTH; /* before any counter moves for a message that cannot be made */
    if (rc < 0) {
        pthread_mutex_lock(&kms->lock);
        p.job.gc.rc = rc;
        pair_refused(kms, &p.job);
        pthread_mutex_unlock(&kms->lock);
        return rc;
    }
    rc = device_batch_submit(kms, &p.job);
    if (rc == KF_OK && (rc = build_message(kms, &p, m)) < 0) {
        pthread_mutex_lock(&kms->lock);
        pair_audit_refusal(kms, &p, rc, "committed, but the message could not be built");
        pthread_mutex_unlock(&kms->lock);
    }
    return rc;
}

/* ---- Acknowledgements ---- */

struct ack_job {
    struct dev_job job; /* first */
    const char *actor;
    struct kfd_ack ack;
    char domain[KF_DOMAIN_NAME_MAX + 1];
    struct kf_pair_ack_result res;
};

static const char *ack_status_name(uint32_t s)
{
    static const char *const names[] = {
        "-",         "accepted", "stale",   "integrity", "wrong device",
        "malformed", "expired",  "storage", "partner"};
    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

/* Record the ack against its KEKs: issued to this device, in this part, once. */
static int ack_record(kf_kms *kms, struct ack_job *q)
{
    struct kf_pair_kek k;
    const struct kfd_ack *a = &q->ack;
    int rc = kf_store_pair_kek_get(kms->store, a->kek_id, &k);
    KF_ENSURE(rc != KF_ERR_NOT_FOUND, KF_ERR_ACK_UNKNOWN);
    KF_GUARD(rc);
    /* The ack names the first KEK of the part it answers. */
    KF_ENSURE(k.kek_index == 0, KF_ERR_ACK_UNKNOWN);
    int role = strcmp(k.id_a, a->device) == 0 ? 1 : strcmp(k.id_b, a->device) == 0 ? 2 : 0;
    KF_ENSURE(role != 0, KF_ERR_ACK_UNKNOWN);
    uint64_t sent = role == 1 ? k.counter_a : k.counter_b;
    /* "Accepted" is only true of the part we sent, with the counter we sent. */
    KF_ENSURE(a->status != KFD_ACK_ACCEPTED || a->part_counter == sent, KF_ERR_ACK_UNKNOWN);
    KF_ENSURE((role == 1 ? k.ack_a_status : k.ack_b_status) == 0, KF_ERR_ACK_REPLAY);
    return kf_store_pair_kek_ack(kms->store, a->kek_id, a->device, role, a->status, now_seconds());
}

static int ack_run(kf_kms *kms, struct dev_job *j)
{
    struct ack_job *q = (struct ack_job *)j;
    const struct kfd_ack *a = &q->ack;
    struct kf_device dev;
    KF_GUARD(kf_store_device_get(kms->store, a->device, &dev));
    if (a->kek_id != 0)
        KF_GUARD(ack_record(kms, q));
    char detail[256];
    snprintf(detail, sizeof(detail),
             "kek %llu status %s part counter %llu device counter %llu server counter %llu",
             (unsigned long long)a->kek_id, ack_status_name(a->status),
             (unsigned long long)a->part_counter, (unsigned long long)a->device_counter,
             (unsigned long long)dev.counter);
    KF_GUARD(kms_audit(kms, q->actor, "PairAck", q->domain, a->device, KF_OK, detail));
    q->res.counter = dev.counter;
    /* Resynchronisation: a device ahead of the server (restored from a backup)
     * pulls C_X forward to its own counter; C_X never goes back. */
    if (a->device_counter > dev.counter) {
        KF_ENSURE(a->device_counter < (uint64_t)INT64_MAX, KF_ERR_DEVICE_COUNTER);
        KF_GUARD(kf_store_device_set_counter(kms->store, a->device, a->device_counter));
        snprintf(detail, sizeof(detail), "counter %llu -> %llu (the device's counter, kek %llu)",
                 (unsigned long long)dev.counter, (unsigned long long)a->device_counter,
                 (unsigned long long)a->kek_id);
        KF_GUARD(kms_audit(kms, q->actor, "PairResync", q->domain, a->device, KF_OK, detail));
        q->res.counter = a->device_counter;
        q->res.resynced = true;
    }
    return KF_OK;
}

static void ack_audit_refusal(kf_kms *kms, const char *actor, const char *domain,
                              const struct kfd_ack *a, int rc)
{
    char detail[128] = "";
    if (a && a->device[0])
        snprintf(detail, sizeof(detail), "kek %llu status %s", (unsigned long long)a->kek_id,
                 ack_status_name(a->status));
    kms_audit_refusal(kms, actor, "PairAck", domain ? domain : "", a ? shown_id(a->device) : "", rc,
                      detail);
}

static void ack_refused(kf_kms *kms, struct dev_job *j)
{
    struct ack_job *q = (struct ack_job *)j;
    ack_audit_refusal(kms, q->actor, q->domain, &q->ack, j->gc.rc);
}

static int ack_mac_check(void *ctx, const uint8_t *mkek)
{
    const struct ack_job *q = ctx;
    return kfd_ack_verify(&q->ack, mkek) == KF_OK ? KF_OK : KF_ERR_ACK_MAC;
}

/* Check the ack's MAC under the device's MKEK, on a read connection. */
static int ack_verify(kf_kms *kms, struct ack_job *q)
{
    struct kms_device_view v;
    struct kf_object obj = {0};
    struct kms_read r;
    KF_ENSURE(!kf_secmod_sealed(kms->secmod), KF_ERR_SEALED);
    /* The device as its last pair request saw it, if no object changed since. */
    int rc = kms_device_view_cached(kms, q->ack.device, &v);
    if (rc == KF_OK) {
        memcpy(q->domain, v.domain, sizeof(q->domain));
        rc = device_usable(&v, KF_USE_MAC_VERIFY);
    } else {
        kms_read_begin(kms, &r);
        rc = kms_device_identity(kms, r.st, q->ack.device, &v);
        if (rc == KF_OK)
            rc = kf_store_object_get(r.st, v.domain_id, v.mkek_key_id, &obj);
        kms_read_end(kms, &r);
        if (rc == KF_OK) {
            memcpy(q->domain, v.domain, sizeof(q->domain));
            rc = mkek_usable(&obj, KF_USE_MAC_VERIFY);
            v.version = obj.version;
            v.facts_valid = true; /* for the key's version only */
        }
    }
    if (rc == KF_OK)
        rc = kms_device_with_mkek(kms, &v, ack_mac_check, q);
    kf_object_clear(&obj);
    return rc;
}

int kf_kms_pair_ack(kf_kms *kms, const char *actor, const uint8_t *ack, size_t len,
                    struct kf_pair_ack_result *out)
{
    KF_ENSURE(kms && actor, KF_ERR_ARG);
    struct ack_job q = {.job = {.run = ack_run, .refused = ack_refused}, .actor = actor};
    int rc = ack && len ? kfd_ack_decode(ack, len, &q.ack) : KF_ERR_PAIR_MALFORMED;
    if (rc < 0) {
        memset(&q.ack, 0, sizeof(q.ack));
        rc = KF_ERR_PAIR_MALFORMED;
    }
    if (rc == KF_OK)
        rc = ack_verify(kms, &q);
    if (rc < 0) {
        pthread_mutex_lock(&kms->lock);
        ack_audit_refusal(kms, actor, q.domain, &q.ack, rc);
        pthread_mutex_unlock(&kms->lock);
        return rc;
    }
    rc = device_batch_submit(kms, &q.job);
    if (rc == KF_OK && out) {
        q.res.kek_id = q.ack.kek_id;
        q.res.status = q.ack.status;
        memcpy(q.res.device, q.ack.device, sizeof(q.res.device));
        *out = q.res;
    }
    return rc;
}
