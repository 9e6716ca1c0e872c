/*
 * The security module's common half: lifecycle and state checks, the table
 * of loaded domain keys (handles), and the stored-secret wrap that is the
 * same for every backend because domain keys always live in our secure
 * memory. Backend-specific work (root key, domain key wrap, audit MAC) is in
 * soft.c and pkcs11.c.
 */
#include <stdlib.h>
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/log.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "secmod/secmod_internal.h"

#define OBJECT_AD_LEN (sizeof(OBJECT_WRAP_AD) - 1 + 8 + 8 + 4)
#define SECRET_MAX (1u << 20) /* a stored secret is a key, never this big */

/* The lock is state of the object even in const accessors. */
static pthread_rwlock_t *lock_of(const kf_secmod *sm)
{
    return (pthread_rwlock_t *)&sm->lock;
}

static char *dup_or_null(const char *s, bool *failed)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *failed = true;
    return d;
}

static void free_config(kf_secmod *sm)
{
    free(sm->dir);
    free(sm->module_path);
    free(sm->token_label);
    free(sm->key_label);
}

static int load_metadata(kf_secmod *sm)
{
    if (!sm->dir)
        return KF_OK;
    struct secmod_meta meta;
    int rc = secmod_meta_read(sm->dir, &meta);
    if (rc == KF_ERR_NOT_FOUND)
        return KF_OK;
    KF_GUARD(rc);
    if (meta.backend != sm->backend) {
        kf_error("secmod: %s was initialised for the other backend", sm->dir);
        return KF_ERR_ARG;
    }
    sm->initialised = true;
    sm->dev = meta.dev;
    sm->m = meta.m;
    sm->n = meta.n;
    memcpy(sm->kcv, meta.kcv, SECMOD_KCV_LEN);
    return KF_OK;
}

int kf_secmod_open(const struct kf_secmod_config *cfg, kf_secmod **out)
{
    KF_ENSURE(cfg && out, KF_ERR_ARG);
    KF_ENSURE(cfg->backend == KF_SECMOD_SOFT || cfg->backend == KF_SECMOD_PKCS11, KF_ERR_ARG);
    KF_ENSURE(cfg->backend != KF_SECMOD_SOFT || cfg->dir, KF_ERR_ARG);
    KF_ENSURE(cfg->backend != KF_SECMOD_PKCS11 || (cfg->module_path && cfg->token_label),
              KF_ERR_ARG);
    *out = NULL;
    kf_secmod *sm = calloc(1, sizeof(*sm));
    KF_ENSURE(sm != NULL, KF_ERR_NOMEM);
    bool failed = false;
    sm->backend = (int)cfg->backend;
    sm->dir = dup_or_null(cfg->dir, &failed);
    sm->module_path = dup_or_null(cfg->module_path, &failed);
    sm->token_label = dup_or_null(cfg->token_label, &failed);
    sm->key_label = dup_or_null(cfg->key_label ? cfg->key_label : "keyfleet-root", &failed);
    sm->sealed = true;
    sm->epoch = 1;
    int rc = failed ? KF_ERR_NOMEM : KF_OK;
    /* Writers first: an operator's seal must not wait behind a stream of
     * wrap/unwrap readers. */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    if (rc == KF_OK && pthread_rwlock_init(&sm->lock, &attr) != 0)
        rc = KF_ERR_NOMEM;
    else if (rc == KF_OK) {
        rc = load_metadata(sm);
        if (rc == KF_OK && sm->backend == KF_SECMOD_PKCS11)
            rc = p11_open(sm);
        if (rc < 0)
            pthread_rwlock_destroy(&sm->lock);
    }
    pthread_rwlockattr_destroy(&attr);
    if (rc < 0) {
        free_config(sm);
        free(sm);
        return rc;
    }
    *out = sm;
    return KF_OK;
}

/* Caller holds the write lock. */
void secmod_wipe_live_keys(kf_secmod *sm)
{
    kf_secmem_free(sm->slots);
    sm->slots = NULL;
    /* Handles carry the epoch, so none issued before this seal is accepted. */
    sm->epoch = (sm->epoch + 1) & ((1u << (32 - SECMOD_SLOT_BITS)) - 1);
    if (sm->epoch == 0)
        sm->epoch = 1;
}

static void seal_locked(kf_secmod *sm)
{
    secmod_wipe_live_keys(sm);
    if (sm->backend == KF_SECMOD_SOFT)
        soft_seal(sm);
    else
        p11_seal(sm);
    sm->sealed = true;
}

void kf_secmod_seal(kf_secmod *sm)
{
    if (!sm)
        return;
    pthread_rwlock_wrlock(&sm->lock);
    seal_locked(sm);
    pthread_rwlock_unlock(&sm->lock);
}

void kf_secmod_close(kf_secmod *sm)
{
    if (!sm)
        return;
    pthread_rwlock_wrlock(&sm->lock);
    seal_locked(sm);
    if (sm->backend == KF_SECMOD_PKCS11)
        p11_close(sm);
    pthread_rwlock_unlock(&sm->lock);
    pthread_rwlock_destroy(&sm->lock);
    free_config(sm);
    kf_wipe(sm, sizeof(*sm));
    free(sm);
}

bool kf_secmod_initialised(const kf_secmod *sm)
{
    if (!sm)
        return false;
    pthread_rwlock_rdlock(lock_of(sm));
    bool v = sm->initialised;
    pthread_rwlock_unlock(lock_of(sm));
    return v;
}

bool kf_secmod_sealed(const kf_secmod *sm)
{
    if (!sm)
        return true;
    pthread_rwlock_rdlock(lock_of(sm));
    bool v = sm->sealed;
    pthread_rwlock_unlock(lock_of(sm));
    return v;
}

void kf_secmod_progress(const kf_secmod *sm, unsigned *m, unsigned *n, unsigned *received)
{
    unsigned vm = 0, vn = 0, vr = 0;
    if (sm) {
        pthread_rwlock_rdlock(lock_of(sm));
        vm = sm->m;
        vn = sm->n;
        vr = sm->pending ? sm->pending->count : 0;
        pthread_rwlock_unlock(lock_of(sm));
    }
    if (m)
        *m = vm;
    if (n)
        *n = vn;
    if (received)
        *received = vr;
}

/* Caller holds the lock (either kind). */
int secmod_usable(const kf_secmod *sm)
{
    /* A token without a metadata directory cannot say before login whether it
     * holds a root key, so it answers "sealed" rather than guess. */
    bool unknown = sm->backend == KF_SECMOD_PKCS11 && !sm->dir;
    KF_ENSURE(sm->initialised || !sm->sealed || unknown, KF_ERR_NOT_INIT);
    KF_ENSURE(!sm->sealed, KF_ERR_SEALED);
    return KF_OK;
}

/* ---- lifecycle entry points: take the write lock, hand to the backend ---- */

int kf_secmod_init_soft(kf_secmod *sm, unsigned m, unsigned n, bool dev,
                        char shares[][KF_SHARE_MAX])
{
    KF_ENSURE(sm && shares, KF_ERR_ARG);
    KF_ENSURE(sm->backend == KF_SECMOD_SOFT, KF_ERR_UNSUPPORTED);
    pthread_rwlock_wrlock(&sm->lock);
    int rc = soft_init(sm, m, n, dev, shares);
    pthread_rwlock_unlock(&sm->lock);
    return rc;
}

int kf_secmod_unseal_share(kf_secmod *sm, const char *share, bool *done)
{
    KF_ENSURE(sm && share && done, KF_ERR_ARG);
    KF_ENSURE(sm->backend == KF_SECMOD_SOFT, KF_ERR_UNSUPPORTED);
    *done = false;
    pthread_rwlock_wrlock(&sm->lock);
    int rc = soft_unseal_share(sm, share, strnlen(share, KF_SHARE_MAX), done);
    pthread_rwlock_unlock(&sm->lock);
    return rc;
}

int kf_secmod_unseal_dev(kf_secmod *sm)
{
    KF_ENSURE(sm, KF_ERR_ARG);
    KF_ENSURE(sm->backend == KF_SECMOD_SOFT, KF_ERR_UNSUPPORTED);
    pthread_rwlock_wrlock(&sm->lock);
    int rc = KF_OK;
    if (!sm->initialised)
        rc = KF_ERR_NOT_INIT;
    else if (!sm->dev)
        rc = KF_ERR_UNSUPPORTED; /* a production module has no key file to read */
    else if (!sm->sealed)
        rc = KF_ERR_ALREADY_UNSEALED;
    char text[KF_SHARE_MAX];
    size_t len = 0;
    if (rc == KF_OK)
        rc = secmod_secret_file_read(sm->dir, SECMOD_DEV_KEY_FILE, (uint8_t *)text,
                                     sizeof(text), &len);
    if (rc == KF_OK && len > 0 && text[len - 1] == '\n')
        len--; /* tolerate an editor's final newline */
    bool done = false;
    if (rc == KF_OK)
        rc = soft_unseal_share(sm, text, len, &done);
    if (rc == KF_OK && !done)
        rc = KF_ERR_INTERNAL; /* m = 1: one share always completes */
    kf_wipe(text, sizeof(text));
    pthread_rwlock_unlock(&sm->lock);
    return rc;
}

int kf_secmod_init_pkcs11(kf_secmod *sm, const char *user_pin)
{
    KF_ENSURE(sm && user_pin, KF_ERR_ARG);
    KF_ENSURE(sm->backend == KF_SECMOD_PKCS11, KF_ERR_UNSUPPORTED);
    pthread_rwlock_wrlock(&sm->lock);
    int rc = p11_init(sm, user_pin);
    pthread_rwlock_unlock(&sm->lock);
    return rc;
}

int kf_secmod_unseal_pin(kf_secmod *sm, const char *user_pin)
{
    KF_ENSURE(sm && user_pin, KF_ERR_ARG);
    KF_ENSURE(sm->backend == KF_SECMOD_PKCS11, KF_ERR_UNSUPPORTED);
    pthread_rwlock_wrlock(&sm->lock);
    int rc = sm->sealed ? p11_unseal(sm, user_pin) : KF_ERR_ALREADY_UNSEALED;
    pthread_rwlock_unlock(&sm->lock);
    return rc;
}

/* ---- domain keys ---- */

void domain_wrap_ad(uint64_t domain_id, uint8_t ad[sizeof(DOMAIN_WRAP_AD) - 1 + 8])
{
    kf_buf b;
    kf_buf_fixed(&b, ad, sizeof(DOMAIN_WRAP_AD) - 1 + 8);
    /* Cannot fail: the buffer is exactly the size written. */
    (void)!kf_buf_put_bytes(&b, DOMAIN_WRAP_AD, sizeof(DOMAIN_WRAP_AD) - 1);
    (void)!kf_buf_put_u64(&b, domain_id);
}

static int domain_wrap(kf_secmod *sm, uint64_t domain_id, const uint8_t *key, kf_buf *out)
{
    if (sm->backend == KF_SECMOD_SOFT)
        return soft_domain_wrap(sm, domain_id, key, out);
    return p11_domain_wrap(sm, domain_id, key, out);
}

static int domain_unwrap(kf_secmod *sm, uint64_t domain_id, const uint8_t *blob, size_t len,
                         uint8_t *key)
{
    if (sm->backend == KF_SECMOD_SOFT)
        return soft_domain_unwrap(sm, domain_id, blob, len, key);
    return p11_domain_unwrap(sm, domain_id, blob, len, key);
}

int kf_secmod_domain_key_new(kf_secmod *sm, uint64_t domain_id, kf_buf *wrapped)
{
    KF_ENSURE(sm && wrapped, KF_ERR_ARG);
    uint8_t *key = kf_secmem_alloc(SECMOD_KEY_LEN);
    KF_ENSURE(key != NULL, KF_ERR_SECMEM);
    size_t start = wrapped->len;
    pthread_rwlock_rdlock(&sm->lock);
    int rc = secmod_usable(sm);
    if (rc == KF_OK)
        rc = kf_rng_bytes(key, SECMOD_KEY_LEN);
    if (rc == KF_OK)
        rc = domain_wrap(sm, domain_id, key, wrapped);
    pthread_rwlock_unlock(&sm->lock);
    kf_secmem_free(key);
    if (rc < 0 && wrapped->len > start) {
        kf_wipe(wrapped->data + start, wrapped->len - start);
        wrapped->len = start;
    }
    return rc;
}

static kf_domain_handle handle_of(const kf_secmod *sm, uint32_t slot)
{
    return (sm->epoch << SECMOD_SLOT_BITS) | slot;
}

/* Caller holds the write lock. The same key loaded again gets the same handle,
 * so a server that reloads a domain does not fill the table. */
static int install_domain_key(kf_secmod *sm, uint64_t domain_id, const uint8_t *key,
                              kf_domain_handle *h)
{
    if (!sm->slots) {
        sm->slots = kf_secmem_alloc(SECMOD_DOMAIN_SLOTS * sizeof(struct domain_slot));
        KF_ENSURE(sm->slots != NULL, KF_ERR_SECMEM);
    }
    uint32_t free_slot = SECMOD_DOMAIN_SLOTS;
    for (uint32_t i = 0; i < SECMOD_DOMAIN_SLOTS; i++) {
        struct domain_slot *s = &sm->slots[i];
        if (!s->used) {
            if (free_slot == SECMOD_DOMAIN_SLOTS)
                free_slot = i;
        } else if (s->domain_id == domain_id && kf_ct_equal(s->key, key, SECMOD_KEY_LEN)) {
            *h = handle_of(sm, i);
            return KF_OK;
        }
    }
    KF_ENSURE(free_slot < SECMOD_DOMAIN_SLOTS, KF_ERR_LIMIT);
    struct domain_slot *s = &sm->slots[free_slot];
    memcpy(s->key, key, SECMOD_KEY_LEN);
    s->domain_id = domain_id;
    s->used = true;
    *h = handle_of(sm, free_slot);
    return KF_OK;
}

int kf_secmod_domain_key_load(kf_secmod *sm, uint64_t domain_id, const uint8_t *wrapped,
                              size_t wrapped_len, kf_domain_handle *h)
{
    KF_ENSURE(sm && wrapped && h, KF_ERR_ARG);
    uint8_t *key = kf_secmem_alloc(SECMOD_KEY_LEN);
    KF_ENSURE(key != NULL, KF_ERR_SECMEM);
    pthread_rwlock_wrlock(&sm->lock);
    int rc = secmod_usable(sm);
    if (rc == KF_OK)
        rc = domain_unwrap(sm, domain_id, wrapped, wrapped_len, key);
    if (rc == KF_OK)
        rc = install_domain_key(sm, domain_id, key, h);
    pthread_rwlock_unlock(&sm->lock);
    kf_secmem_free(key);
    return rc;
}

/* Caller holds the lock. A handle from before the last seal, for another
 * domain, or never issued is refused: no operation crosses domains. */
static int domain_key_of(const kf_secmod *sm, kf_domain_handle h, uint64_t domain_id,
                         const uint8_t **key)
{
    uint32_t slot = h & (SECMOD_DOMAIN_SLOTS - 1);
    KF_ENSURE(sm->slots && (h >> SECMOD_SLOT_BITS) == sm->epoch, KF_ERR_ARG);
    const struct domain_slot *s = &sm->slots[slot];
    KF_ENSURE(s->used, KF_ERR_ARG);
    KF_ENSURE(s->domain_id == domain_id, KF_ERR_DOMAIN_CROSS);
    *key = s->key;
    return KF_OK;
}

/* ---- stored secrets ---- */

static void object_ad(uint64_t object_id, uint64_t domain_id, uint32_t version,
                      uint8_t ad[OBJECT_AD_LEN])
{
    kf_buf b;
    kf_buf_fixed(&b, ad, OBJECT_AD_LEN);
    (void)!kf_buf_put_bytes(&b, OBJECT_WRAP_AD, sizeof(OBJECT_WRAP_AD) - 1);
    (void)!kf_buf_put_u64(&b, object_id);
    (void)!kf_buf_put_u64(&b, domain_id);
    (void)!kf_buf_put_u32(&b, version);
}

/* blob = format || IV || ciphertext || tag */
static int seal_object(const uint8_t *key, const uint8_t ad[OBJECT_AD_LEN],
                       const uint8_t *secret, size_t secret_len, kf_buf *out)
{
    uint8_t iv[KF_GCM_IV_LEN];
    uint8_t *ct, *tag;
    KF_GUARD(kf_rng_bytes(iv, sizeof(iv)));
    /* Reserve it all first so no later put moves the data under ct. */
    KF_GUARD(kf_buf_reserve(out, 1 + sizeof(iv) + secret_len + KF_GCM_TAG_LEN));
    KF_GUARD(kf_buf_put_u8(out, OBJECT_BLOB_GCM));
    KF_GUARD(kf_buf_put_bytes(out, iv, sizeof(iv)));
    KF_GUARD(kf_buf_put_space(out, secret_len, &ct));
    KF_GUARD(kf_buf_put_space(out, KF_GCM_TAG_LEN, &tag));
    return kf_aes_gcm_seal(key, SECMOD_KEY_LEN, iv, sizeof(iv), ad, OBJECT_AD_LEN, secret,
                           secret_len, ct, tag);
}

int kf_secmod_wrap(kf_secmod *sm, kf_domain_handle h, uint64_t object_id, uint64_t domain_id,
                   uint32_t version, const uint8_t *secret, size_t secret_len, kf_buf *wrapped)
{
    KF_ENSURE(sm && wrapped && (secret || secret_len == 0), KF_ERR_ARG);
    KF_ENSURE(secret_len <= SECRET_MAX, KF_ERR_LIMIT);
    uint8_t ad[OBJECT_AD_LEN];
    object_ad(object_id, domain_id, version, ad);
    size_t start = wrapped->len;
    pthread_rwlock_rdlock(&sm->lock);
    const uint8_t *key = NULL;
    int rc = secmod_usable(sm);
    if (rc == KF_OK)
        rc = domain_key_of(sm, h, domain_id, &key);
    if (rc == KF_OK)
        rc = seal_object(key, ad, secret, secret_len, wrapped);
    pthread_rwlock_unlock(&sm->lock);
    if (rc < 0 && wrapped->len > start) {
        kf_wipe(wrapped->data + start, wrapped->len - start);
        wrapped->len = start; /* leave the caller's buffer as it was */
    }
    return rc;
}

static int open_object(const uint8_t *key, const uint8_t ad[OBJECT_AD_LEN], kf_buf *blob,
                       kf_buf *secret)
{
    uint8_t format;
    const uint8_t *iv, *ct, *tag;
    KF_GUARD(kf_buf_get_u8(blob, &format));
    KF_ENSURE(format == OBJECT_BLOB_GCM, KF_ERR_FORMAT);
    KF_ENSURE(kf_buf_remaining(blob) >= KF_GCM_IV_LEN + KF_GCM_TAG_LEN, KF_ERR_FORMAT);
    size_t ct_len = kf_buf_remaining(blob) - KF_GCM_IV_LEN - KF_GCM_TAG_LEN;
    KF_GUARD(kf_buf_get_ptr(blob, KF_GCM_IV_LEN, &iv));
    KF_GUARD(kf_buf_get_ptr(blob, ct_len, &ct));
    KF_GUARD(kf_buf_get_ptr(blob, KF_GCM_TAG_LEN, &tag));
    uint8_t *pt;
    KF_GUARD(kf_buf_put_space(secret, ct_len, &pt));
    return kf_aes_gcm_open(key, SECMOD_KEY_LEN, iv, KF_GCM_IV_LEN, ad, OBJECT_AD_LEN, ct, ct_len,
                           tag, pt);
}

int kf_secmod_unwrap(kf_secmod *sm, kf_domain_handle h, uint64_t object_id, uint64_t domain_id,
                     uint32_t version, const uint8_t *wrapped, size_t wrapped_len, kf_buf *secret)
{
    KF_ENSURE(sm && wrapped && secret, KF_ERR_ARG);
    uint8_t ad[OBJECT_AD_LEN];
    object_ad(object_id, domain_id, version, ad);
    kf_buf blob;
    kf_buf_reader(&blob, wrapped, wrapped_len);
    size_t start = secret->len;
    pthread_rwlock_rdlock(&sm->lock);
    const uint8_t *key = NULL;
    int rc = secmod_usable(sm);
    if (rc == KF_OK)
        rc = domain_key_of(sm, h, domain_id, &key);
    if (rc == KF_OK)
        rc = open_object(key, ad, &blob, secret);
    pthread_rwlock_unlock(&sm->lock);
    if (rc < 0 && secret->len > start) {
        kf_wipe(secret->data + start, secret->len - start);
        secret->len = start; /* no unauthenticated plaintext is left behind */
    }
    return rc == KF_ERR_SHORT ? KF_ERR_FORMAT : rc;
}

/* ---- audit ---- */

int kf_secmod_audit_mac(kf_secmod *sm, const uint8_t *data, size_t len, uint8_t out[32])
{
    KF_ENSURE(sm && out && (data || len == 0), KF_ERR_ARG);
    pthread_rwlock_rdlock(&sm->lock);
    int rc = secmod_usable(sm);
    if (rc == KF_OK)
        rc = sm->backend == KF_SECMOD_SOFT ? soft_audit_mac(sm, data, len, out)
                                           : p11_audit_mac(sm, data, len, out);
    pthread_rwlock_unlock(&sm->lock);
    return rc;
}
