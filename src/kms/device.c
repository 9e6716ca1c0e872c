/*
 * Devices and pairwise KEKs (seed EP 0 948 158, DESIGN §4.1, wire format and
 * rules in docs/pairing.md): registration, the one-time export of a device's
 * installation package, device metadata. Pair key requests and their
 * acknowledgements: device_pair.c.
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

int kms_mkek_usable(struct kf_object *obj, enum kf_use_purpose purpose)
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

const char *kms_device_shown_id(const char *id)
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
                          kms_device_shown_id(id), rc,
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
        rc = kms_mkek_usable(&obj, KF_USE_GET);
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
        kms_audit_refusal(kms, actor, "DeviceExport", d.name, kms_device_shown_id(id), rc,
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
        .object = kms_device_shown_id(id),
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
