/*
 * What the pairing service remembers of the devices it has served, so that a
 * pair request costs two counter updates, a KEK reservation, its metadata row
 * and its audit record, and not eight more reads and two unwraps:
 *
 *  - identity: the device row's domain and MKEK object, and the domain's name.
 *    All immutable once registered (schema triggers: device rows are never
 *    deleted, their identity columns never change; domains are never renamed
 *    or deleted), so an entry never goes stale. The counter C_X is NOT
 *    cached: it stays authoritative in the database (kf_store_device_next_counter).
 *  - the MKEK object's facts (mark, archive, material, state, dates,
 *    version): valid while the writer's object generation has not moved
 *    (kf_store_object_generation: every object write and every rollback
 *    moves it), checked under kms->lock in the transaction that uses them.
 *    The effective state is still computed at each use, from the dates.
 *  - the unwrapped MKEK, in one secure (mlock'ed, undumpable) allocation,
 *    wiped on seal and on unseal (kms_forget_handles), on eviction and on
 *    close. A key is only cached if no wipe happened while it was being
 *    unwrapped (the epoch), and never used once the module is sealed.
 *
 * Fixed size, open addressing over a short probe window; a full window
 * evicts (wiping the evicted key). Reads under a read lock; fills and wipes
 * under the write lock.
 */
#include <stdlib.h>
#include <string.h>

#include "keyfleet/device.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "kms_internal.h"

#define CACHE_SLOTS 1024u /* power of two */
#define CACHE_PROBE 8u

struct cache_entry {
    struct kms_device_view v; /* v.id[0] == 0: empty */
    uint64_t facts_gen;       /* object generation + 1 when the facts were read; 0: none */
    bool key_valid;
    uint32_t key_version; /* MKEK wrap version the cached key was unwrapped from */
};

struct kms_device_cache {
    pthread_rwlock_t lock;
    uint8_t (*keys)[KFD_KEY_LEN]; /* secure memory, one per slot; NULL: keys are not cached */
    uint64_t epoch;               /* moves on every wipe */
    unsigned evict_next;
    struct cache_entry e[CACHE_SLOTS];
};

int kms_device_cache_open(kf_kms *kms)
{
    struct kms_device_cache *c = calloc(1, sizeof(*c));
    KF_ENSURE(c, KF_ERR_NOMEM);
    pthread_rwlock_init(&c->lock, NULL);
    c->keys = kf_secmem_alloc((size_t)CACHE_SLOTS * KFD_KEY_LEN);
    if (!c->keys)
        kf_warn("device cache: no secure memory for MKEKs (RLIMIT_MEMLOCK?); "
                "each pair request unwraps its keys");
    kms->devices = c;
    return KF_OK;
}

void kms_device_cache_close(kf_kms *kms)
{
    struct kms_device_cache *c = kms->devices;
    if (!c)
        return;
    kf_secmem_free(c->keys); /* wipes */
    pthread_rwlock_destroy(&c->lock);
    free(c);
    kms->devices = NULL;
}

void kms_device_cache_wipe(kf_kms *kms)
{
    struct kms_device_cache *c = kms->devices;
    if (!c)
        return;
    pthread_rwlock_wrlock(&c->lock);
    c->epoch++;
    if (c->keys)
        kf_wipe(c->keys, (size_t)CACHE_SLOTS * KFD_KEY_LEN);
    for (unsigned i = 0; i < CACHE_SLOTS; i++)
        c->e[i].key_valid = false;
    pthread_rwlock_unlock(&c->lock);
}

size_t kms_device_cache_keys(kf_kms *kms)
{
    struct kms_device_cache *c = kms->devices;
    size_t n = 0;
    if (!c)
        return 0;
    pthread_rwlock_rdlock(&c->lock);
    for (unsigned i = 0; i < CACHE_SLOTS; i++)
        n += c->e[i].key_valid;
    pthread_rwlock_unlock(&c->lock);
    return n;
}

/* FNV-1a: spreads IDs that differ in their last characters (meter-1, meter-2). */
static unsigned slot_of(const char *id)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h & (CACHE_SLOTS - 1);
}

/* Under the lock (either). */
static struct cache_entry *find(struct kms_device_cache *c, const char *id)
{
    unsigned s = slot_of(id);
    for (unsigned i = 0; i < CACHE_PROBE; i++) {
        struct cache_entry *e = &c->e[(s + i) & (CACHE_SLOTS - 1)];
        if (e->v.id[0] && strcmp(e->v.id, id) == 0)
            return e;
    }
    return NULL;
}

/* Under the write lock: the entry for v's device, filling a free or evicted slot. */
static struct cache_entry *put(struct kms_device_cache *c, const struct kms_device_view *v)
{
    struct cache_entry *e = find(c, v->id);
    if (e)
        return e;
    unsigned s = slot_of(v->id);
    for (unsigned i = 0; i < CACHE_PROBE && !e; i++)
        if (!c->e[(s + i) & (CACHE_SLOTS - 1)].v.id[0])
            e = &c->e[(s + i) & (CACHE_SLOTS - 1)];
    if (!e)
        e = &c->e[(s + c->evict_next++ % CACHE_PROBE) & (CACHE_SLOTS - 1)];
    size_t idx = (size_t)(e - c->e);
    if (c->keys)
        kf_wipe(c->keys[idx], KFD_KEY_LEN);
    memset(e, 0, sizeof(*e));
    memcpy(e->v.id, v->id, sizeof(e->v.id));
    e->v.domain_id = v->domain_id;
    e->v.mkek_key_id = v->mkek_key_id;
    memcpy(e->v.domain, v->domain, sizeof(e->v.domain));
    return e;
}

/* Identity from the database on connection st. */
static int load_identity(kf_store *st, const char *id, struct kms_device_view *v)
{
    struct kf_device dev;
    struct kf_domain d = {0};
    KF_GUARD(kf_store_device_get(st, id, &dev));
    int rc = kf_store_domain_get_by_id(st, dev.domain_id, &d);
    if (rc == KF_OK) {
        memset(v, 0, sizeof(*v));
        memcpy(v->id, dev.id, sizeof(v->id));
        v->domain_id = dev.domain_id;
        v->mkek_key_id = dev.mkek_key_id;
        memcpy(v->domain, d.name, sizeof(v->domain));
    }
    kf_domain_clear(&d);
    return rc;
}

int kms_device_identity(kf_kms *kms, kf_store *st, const char *id, struct kms_device_view *out)
{
    struct kms_device_cache *c = kms->devices;
    KF_ENSURE(id && strlen(id) <= KF_DEVICE_ID_MAX && id[0], KF_ERR_DEVICE_UNKNOWN);
    if (c) {
        pthread_rwlock_rdlock(&c->lock);
        const struct cache_entry *e = find(c, id);
        if (e)
            *out = e->v;
        pthread_rwlock_unlock(&c->lock);
        if (e) {
            out->facts_valid = false; /* identity only */
            return KF_OK;
        }
    }
    if (!st)
        return KF_ERR_NOT_FOUND; /* not cached: the caller reads it on a connection */
    KF_GUARD(load_identity(st, id, out));
    out->facts_valid = false;
    if (c) {
        pthread_rwlock_wrlock(&c->lock);
        (void)put(c, out);
        pthread_rwlock_unlock(&c->lock);
    }
    return KF_OK;
}

static void facts_of(const struct kf_object *obj, struct kms_device_view *v)
{
    v->bound = kms_object_device_bound(obj);
    v->archived = kms_object_archived(obj);
    v->has_material = obj->material != NULL;
    v->state = obj->state;
    v->activation_date = obj->activation_date;
    v->deactivation_date = obj->deactivation_date;
    v->version = obj->version;
    v->facts_valid = true;
}

int kms_device_view_tx(kf_kms *kms, const char *id, struct kms_device_view *out)
{
    struct kms_device_cache *c = kms->devices;
    uint64_t gen = kf_store_object_generation(kms->store) + 1;
    KF_GUARD(kms_device_identity(kms, kms->store, id, out));
    if (c) {
        pthread_rwlock_rdlock(&c->lock);
        const struct cache_entry *e = find(c, id);
        bool fresh = e && e->facts_gen == gen;
        if (fresh)
            *out = e->v;
        pthread_rwlock_unlock(&c->lock);
        if (fresh)
            return KF_OK;
    }
    struct kf_object obj = {0};
    KF_GUARD(kf_store_object_get(kms->store, out->domain_id, out->mkek_key_id, &obj));
    facts_of(&obj, out);
    kf_object_clear(&obj);
    if (c) {
        pthread_rwlock_wrlock(&c->lock);
        struct cache_entry *e = put(c, out);
        if (e->key_valid && e->key_version != out->version) {
            kf_wipe(c->keys[e - c->e], KFD_KEY_LEN);
            e->key_valid = false;
        }
        e->v = *out;
        e->facts_gen = gen;
        pthread_rwlock_unlock(&c->lock);
    }
    return KF_OK;
}

int kms_device_view_cached(kf_kms *kms, const char *id, struct kms_device_view *out)
{
    struct kms_device_cache *c = kms->devices;
    if (!c || !id)
        return KF_ERR_NOT_FOUND;
    uint64_t gen = kf_store_object_generation(kms->store) + 1;
    pthread_rwlock_rdlock(&c->lock);
    const struct cache_entry *e = find(c, id);
    bool fresh = e && e->facts_gen == gen;
    if (fresh)
        *out = e->v;
    pthread_rwlock_unlock(&c->lock);
    return fresh ? KF_OK : KF_ERR_NOT_FOUND;
}

/* The MKEK from the database (a pooled read connection), unwrapped into key. */
static int unwrap_from_store(kf_kms *kms, const struct kms_device_view *v, kf_buf *key,
                             uint32_t *version)
{
    struct kf_domain d = {0};
    struct kf_object obj = {0};
    struct kms_reader *r = kms_reader_acquire(kms);
    kf_store *st = r ? r->store : kms->store;
    if (!r)
        pthread_mutex_lock(&kms->lock);
    int rc = kf_store_domain_get_by_id(st, v->domain_id, &d);
    if (rc == KF_OK)
        rc = kf_store_object_get(st, v->domain_id, v->mkek_key_id, &obj);
    if (r)
        kms_reader_release(r);
    else
        pthread_mutex_unlock(&kms->lock);
    if (rc == KF_OK && !obj.material)
        rc = KF_ERR_STATE; /* destroyed since the request committed */
    kf_domain_handle h;
    if (rc == KF_OK && kf_secmod_sealed(kms->secmod))
        rc = KF_ERR_SEALED;
    if (rc == KF_OK)
        rc = kms_domain_handle(kms, &d, &h);
    if (rc == KF_OK)
        rc = kf_secmod_unwrap(kms->secmod, h, obj.key_id, d.id, obj.version, obj.material,
                              obj.material_len, key);
    if (rc == KF_OK && key->len != KFD_KEY_LEN)
        rc = KF_ERR_INTERNAL;
    *version = obj.version;
    kf_object_clear(&obj);
    kf_domain_clear(&d);
    return rc;
}

int kms_device_with_mkek(kf_kms *kms, const struct kms_device_view *v,
                         int (*fn)(void *ctx, const uint8_t *mkek), void *ctx)
{
    struct kms_device_cache *c = kms->devices;
    KF_ENSURE(!kf_secmod_sealed(kms->secmod), KF_ERR_SEALED);
    uint64_t epoch = 0;
    if (c && c->keys) {
        pthread_rwlock_rdlock(&c->lock);
        const struct cache_entry *e = find(c, v->id);
        epoch = c->epoch;
        if (e && e->key_valid && (!v->facts_valid || e->key_version == v->version)) {
            /* Under the read lock: a wipe (seal) waits until fn is done. */
            int rc = fn(ctx, c->keys[e - c->e]);
            pthread_rwlock_unlock(&c->lock);
            return rc;
        }
        pthread_rwlock_unlock(&c->lock);
    }
    kf_buf key = {0};
    uint32_t version = 0;
    int rc = kf_buf_alloc(&key, KFD_KEY_LEN, 64, KF_BUF_SECRET);
    if (rc == KF_OK)
        rc = unwrap_from_store(kms, v, &key, &version);
    if (rc == KF_OK && c && c->keys) {
        pthread_rwlock_wrlock(&c->lock);
        struct cache_entry *e = find(c, v->id);
        /* Not if a wipe came in between: that key must not outlive the seal. */
        if (e && c->epoch == epoch && !kf_secmod_sealed(kms->secmod)) {
            memcpy(c->keys[e - c->e], key.data, KFD_KEY_LEN);
            e->key_valid = true;
            e->key_version = version;
        }
        pthread_rwlock_unlock(&c->lock);
    }
    if (rc == KF_OK)
        rc = fn(ctx, key.data);
    kf_buf_free(&key); /* wipes */
    return rc;
}
