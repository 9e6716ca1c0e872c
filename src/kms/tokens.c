/*
 * Token verification (docs/manufacturing.md "Tokens"; seed EP 0 735 720):
 * batches of printed pieces checked against each device's token key, and the
 * export of token keys to a remote verifier (Tin).
 *
 * A batch runs in three steps:
 *  1. no lock of the service: decode every piece's canonical data, look up
 *     the device's key facts and its token key for the piece's period in the
 *     cache (filled from the archive through kms_mfg_device_key on a miss),
 *     compute and compare the token: REFUSED, BAD, or good so far;
 *  2. under kms->lock: the duplicate check of the good ones against the
 *     domain's set of pieces ever verified good (a piece repeated inside the
 *     batch included), and in ONE transaction their rows in mfg_piece plus the
 *     batch's audit record (counts only), committed with the fsync deferred;
 *  3. no lock: wait for that fsync. Verdicts leave only after it.
 * Step 1 of one batch runs while another batch is in step 2 or 3.
 *
 * The cache: per (domain, MSN) the key's status, key ID and registration
 * date, and per period the token key TK (never the master key, which is wiped
 * as soon as the TKs it was needed for are derived). TKs live in secure
 * memory slabs; kms_tokens_wipe (seal) and kms_tokens_forget (a status
 * change, from mfg.c) drop them. A fill that raced with a forget is used for
 * its own batch but not kept (the cache's generation moved).
 *
 * The duplicate set of a domain is loaded from mfg_piece on the domain's
 * first batch and then kept in step with it: a piece enters the set in the
 * same critical section as its row enters the transaction, and if that
 * transaction fails the whole set is dropped and reloaded next time.
 * Entries are 8 bytes: (index of the MSN in the domain, piece count).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyfleet/log.h"
#include "keyfleet/meter.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "mfg_internal.h"

#define TOK_PERIODS 4           /* token keys kept per device: its most recent periods */
#define TOK_SLAB_KEYS 2048u     /* TKs per secure-memory slab (64 KiB) */
#define TOK_SLABS_MAX 64u       /* at most 4 MiB of cached TKs (131,072) */
#define TOK_DOMAINS_MAX 1024u   /* domains with token traffic since open */

/* ---- small hash helpers (the seed makes chains unpredictable to a sender) ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t hash_msn(uint64_t seed, uint32_t domain, const char *msn)
{
    uint64_t h = mix64(seed ^ domain);
    for (const unsigned char *p = (const unsigned char *)msn; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return mix64(h);
}

/* ---- the duplicate set: open addressing over nonzero 64-bit keys ---- */

struct u64set {
    uint64_t *slot;
    size_t cap, n; /* cap a power of two; n <= cap / 2 */
};

static void u64set_free(struct u64set *s)
{
    free(s->slot);
    memset(s, 0, sizeof(*s));
}

static int u64set_grow(struct u64set *s, uint64_t seed)
{
    size_t cap = s->cap ? s->cap * 2 : 1024;
    uint64_t *slot = calloc(cap, sizeof(*slot));
    KF_ENSURE(slot != NULL, KF_ERR_NOMEM);
    for (size_t i = 0; i < s->cap; i++) {
        uint64_t k = s->slot[i];
        if (!k)
            continue;
        size_t j = (size_t)mix64(k ^ seed) & (cap - 1);
        while (slot[j])
            j = (j + 1) & (cap - 1);
        slot[j] = k;
    }
    free(s->slot);
    s->slot = slot;
    s->cap = cap;
    return KF_OK;
}

/* Adds k; *added false if it was there. */
static int u64set_add(struct u64set *s, uint64_t seed, uint64_t k, bool *added)
{
    if ((s->n + 1) * 2 > s->cap)
        KF_GUARD(u64set_grow(s, seed));
    size_t j = (size_t)mix64(k ^ seed) & (s->cap - 1);
    while (s->slot[j]) {
        if (s->slot[j] == k) {
            *added = false;
            return KF_OK;
        }
        j = (j + 1) & (s->cap - 1);
    }
    s->slot[j] = k;
    s->n++;
    *added = true;
    return KF_OK;
}

/* ---- per domain: its store ID and duplicate set ---- */

struct msn_index {
    struct msn_index *next;
    char msn[KF_MFG_MSN_MAX + 1];
    uint32_t index; /* 1.. */
};

struct tok_domain {
    char name[KF_DOMAIN_NAME_MAX + 1];
    uint64_t id;
    /* Under kms->lock. */
    bool loaded;
    struct u64set seen;         /* (msn index << 32) | piece count */
    struct msn_index **msns;    /* chained hash, msn_cap buckets */
    size_t msn_cap, msn_n;
};

/* ---- the key cache ---- */

struct tok_dev {
    struct tok_dev *next;
    uint32_t domain; /* index into t->domains */
    char msn[KF_MFG_MSN_MAX + 1];
    uint32_t status;
    uint64_t key_id;
    uint32_t reg_date;              /* YYYYMMDD (UTC) of the registration; 0 = none */
    uint32_t period[TOK_PERIODS];   /* YYYYMM; 0 = free */
    uint32_t slot[TOK_PERIODS];     /* its TK in the slabs */
    unsigned victim;                /* which period goes next when all are used */
};

struct kms_tokens {
    uint64_t seed;
    kf_store_pieces *pieces; /* on kms->store, under kms->lock */

    pthread_mutex_t domains_lock; /* the list; each entry's dup set is under kms->lock */
    struct tok_domain *domains[TOK_DOMAINS_MAX];
    size_t ndomains;

    /* The cache: the read side for lookups and token computation, the write
     * side for fills, forget and wipe. generation moves (under the write side)
     * on every forget and wipe. */
    pthread_rwlock_t lock;
    atomic_uint_fast64_t generation;
    struct tok_dev **buckets;
    size_t nbuckets, ndevs;
    uint8_t *slab[TOK_SLABS_MAX]; /* kf_secmem, TOK_SLAB_KEYS x 32 bytes each */
    size_t nslabs;
    uint32_t *free_slots;         /* stack of released slots */
    size_t nfree, used_slots;     /* slots handed out of the slabs so far (never free'd) */
};

static uint8_t *tk_at(struct kms_tokens *t, uint32_t slot)
{
    return t->slab[slot / TOK_SLAB_KEYS] + (size_t)(slot % TOK_SLAB_KEYS) * KFD_METER_KEY_LEN;
}

static void release_slot(struct kms_tokens *t, uint32_t slot)
{
    kf_wipe(tk_at(t, slot), KFD_METER_KEY_LEN);
    t->free_slots[t->nfree++] = slot;
}

static void dev_release(struct kms_tokens *t, struct tok_dev *d)
{
    for (unsigned i = 0; i < TOK_PERIODS; i++)
        if (d->period[i])
            release_slot(t, d->slot[i]);
    free(d);
    t->ndevs--;
}

/* Drop every cached device and TK. Under the write side. */
static void cache_clear(struct kms_tokens *t)
{
    for (size_t b = 0; b < t->nbuckets; b++) {
        while (t->buckets[b]) {
            struct tok_dev *d = t->buckets[b];
            t->buckets[b] = d->next;
            dev_release(t, d);
        }
    }
    atomic_fetch_add(&t->generation, 1);
}

/* A free TK slot; the whole cache is dropped when 4 MiB of TKs are in use
 * (crude, bounded, and rare: more devices than that verify in one run).
 * Under the write side. */
static int take_slot(struct kms_tokens *t, uint32_t *slot)
{
    if (!t->nfree && t->used_slots == t->nslabs * TOK_SLAB_KEYS) {
        if (t->nslabs < TOK_SLABS_MAX) {
            uint8_t *s = kf_secmem_alloc((size_t)TOK_SLAB_KEYS * KFD_METER_KEY_LEN);
            if (s)
                t->slab[t->nslabs++] = s;
        }
        if (t->used_slots == t->nslabs * TOK_SLAB_KEYS) {
            kf_info("token verification: key cache full, starting it afresh");
            cache_clear(t);
        }
        KF_ENSURE(t->nfree || t->used_slots < t->nslabs * TOK_SLAB_KEYS, KF_ERR_NOMEM);
    }
    *slot = t->nfree ? t->free_slots[--t->nfree] : (uint32_t)t->used_slots++;
    return KF_OK;
}

static struct tok_dev *cache_find(struct kms_tokens *t, uint32_t domain, const char *msn,
                                  struct tok_dev ***link)
{
    if (!t->nbuckets)
        return NULL;
    struct tok_dev **p = &t->buckets[hash_msn(t->seed, domain, msn) & (t->nbuckets - 1)];
    for (; *p; p = &(*p)->next)
        if ((*p)->domain == domain && strcmp((*p)->msn, msn) == 0)
            break;
    if (link)
        *link = p;
    return *p;
}

static int cache_grow(struct kms_tokens *t)
{
    size_t n = t->nbuckets ? t->nbuckets * 2 : 1024;
    struct tok_dev **b = calloc(n, sizeof(*b));
    KF_ENSURE(b != NULL, KF_ERR_NOMEM);
    for (size_t i = 0; i < t->nbuckets; i++) {
        while (t->buckets[i]) {
            struct tok_dev *d = t->buckets[i];
            t->buckets[i] = d->next;
            size_t j = hash_msn(t->seed, d->domain, d->msn) & (n - 1);
            d->next = b[j];
            b[j] = d;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return KF_OK;
}

/* ---- lifecycle ---- */

int kms_tokens_open(kf_kms *kms)
{
    struct kms_tokens *t = calloc(1, sizeof(*t));
    KF_ENSURE(t != NULL, KF_ERR_NOMEM);
    t->free_slots = calloc((size_t)TOK_SLABS_MAX * TOK_SLAB_KEYS, sizeof(*t->free_slots));
    int rc = t->free_slots ? KF_OK : KF_ERR_NOMEM;
    if (rc == KF_OK)
        rc = kf_rng_bytes((uint8_t *)&t->seed, sizeof(t->seed));
    if (rc == KF_OK)
        rc = kf_store_pieces_open(kms->store, &t->pieces);
    if (rc < 0) {
        free(t->free_slots);
        free(t);
        return rc;
    }
    pthread_mutex_init(&t->domains_lock, NULL);
    pthread_rwlock_init(&t->lock, NULL);
    atomic_store(&t->generation, 1);
    kms->tokens = t;
    return KF_OK;
}

void kms_tokens_wipe(kf_kms *kms)
{
    struct kms_tokens *t = kms ? kms->tokens : NULL;
    if (!t)
        return;
    pthread_rwlock_wrlock(&t->lock);
    cache_clear(t);
    pthread_rwlock_unlock(&t->lock);
}

static void domain_drop_set(struct tok_domain *d)
{
    u64set_free(&d->seen);
    for (size_t i = 0; i < d->msn_cap; i++) {
        while (d->msns[i]) {
            struct msn_index *m = d->msns[i];
            d->msns[i] = m->next;
            free(m);
        }
    }
    free(d->msns);
    d->msns = NULL;
    d->msn_cap = d->msn_n = 0;
    d->loaded = false;
}

void kms_tokens_close(kf_kms *kms)
{
    struct kms_tokens *t = kms ? kms->tokens : NULL;
    if (!t)
        return;
    kms_tokens_wipe(kms);
    for (size_t i = 0; i < t->nslabs; i++)
        kf_secmem_free(t->slab[i]);
    free(t->buckets);
    free(t->free_slots);
    for (size_t i = 0; i < t->ndomains; i++) {
        domain_drop_set(t->domains[i]);
        free(t->domains[i]);
    }
    kf_store_pieces_close(t->pieces);
    pthread_rwlock_destroy(&t->lock);
    pthread_mutex_destroy(&t->domains_lock);
    free(t);
    kms->tokens = NULL;
}

/* The domain's entry (made on first use), by name; NULL if not known yet and
 * id == 0. */
static struct tok_domain *domain_entry(struct kms_tokens *t, const char *name, uint64_t id,
                                       uint32_t *index)
{
    struct tok_domain *d = NULL;
    pthread_mutex_lock(&t->domains_lock);
    for (size_t i = 0; i < t->ndomains && !d; i++)
        if (strcmp(t->domains[i]->name, name) == 0) {
            d = t->domains[i];
            *index = (uint32_t)i;
        }
    if (!d && id && t->ndomains < TOK_DOMAINS_MAX && (d = calloc(1, sizeof(*d)))) {
        snprintf(d->name, sizeof(d->name), "%s", name);
        d->id = id;
        *index = (uint32_t)t->ndomains;
        t->domains[t->ndomains++] = d;
    }
    pthread_mutex_unlock(&t->domains_lock);
    return d;
}

void kms_tokens_forget(kf_kms *kms, const char *domain, const char *msn)
{
    struct kms_tokens *t = kms ? kms->tokens : NULL;
    uint32_t index;
    if (!t || !domain || !msn || !domain_entry(t, domain, 0, &index))
        return;
    pthread_rwlock_wrlock(&t->lock);
    struct tok_dev **link;
    struct tok_dev *d = cache_find(t, index, msn, &link);
    if (d) {
        *link = d->next;
        dev_release(t, d);
    }
    atomic_fetch_add(&t->generation, 1);
    pthread_rwlock_unlock(&t->lock);
}

/* ---- step 1: the token check ---- */

/* YYYYMMDD (UTC) of a Unix time; 0 for 0. */
static uint32_t day_of(int64_t when)
{
    if (when <= 0)
        return 0;
    time_t tt = (time_t)when;
    struct tm tm;
    if (!gmtime_r(&tt, &tm))
        return 0;
    return (uint32_t)(tm.tm_year + 1900) * 10000u + (uint32_t)(tm.tm_mon + 1) * 100u +
           (uint32_t)tm.tm_mday;
}

/* What one piece needs of its device, when it is not (yet) in the cache. */
struct dev_fill {
    uint32_t status;
    uint64_t key_id;
    uint32_t reg_date;
    uint32_t period;
    uint8_t tk[KFD_METER_KEY_LEN]; /* valid when status is Active */
};

/* Verdict of a piece whose device facts and TK are known. tk NULL: not Active. */
static uint8_t judge(const uint8_t *piece, const struct kfd_txdata *tx, uint32_t status,
                     uint32_t reg_date, const uint8_t *tk)
{
    if (status != KF_MFG_ACTIVE || !tk)
        return KF_TOKEN_REFUSED;
    if (reg_date && tx->date < reg_date)
        return KF_TOKEN_REFUSED; /* dated before the device was registered */
    uint8_t token[KFD_TOKEN_LEN];
    if (kfd_token_compute(tk, piece, token) < 0)
        return KF_TOKEN_REFUSED;
    bool same = kf_ct_equal(token, piece + KFD_TXDATA_LEN, KFD_TOKEN_LEN);
    return same ? KF_TOKEN_GOOD : KF_TOKEN_BAD;
}

/* The piece's verdict from the cache: 0 on a miss (device or period not there). */
static uint8_t judge_cached(struct kms_tokens *t, uint32_t domain, const uint8_t *piece,
                            const struct kfd_txdata *tx)
{
    struct tok_dev *d = cache_find(t, domain, tx->msn, NULL);
    if (!d)
        return 0;
    if (d->status != KF_MFG_ACTIVE)
        return KF_TOKEN_REFUSED;
    uint32_t period = tx->date / 100;
    for (unsigned i = 0; i < TOK_PERIODS; i++)
        if (d->period[i] == period)
            return judge(piece, tx, d->status, d->reg_date, tk_at(t, d->slot[i]));
    return 0;
}

/* Read the device's key facts from the archive and derive the period's TK
 * (the master key is wiped here). KF_ERR_MFG_UNKNOWN: no such device. */
static int fetch_device(kf_kms *kms, const char *domain, const char *msn, uint32_t period,
                        struct dev_fill *f)
{
    struct kms_mfg_device_key k;
    memset(&k, 0, sizeof(k));
    int rc = kms_mfg_device_key(kms, domain, msn, &k);
    if (rc == KF_OK) {
        f->status = k.status;
        f->key_id = k.key_id;
        f->reg_date = day_of(k.registered_at);
        f->period = period;
        if (k.status == KF_MFG_ACTIVE)
            rc = kfd_token_key(k.key, domain, period, f->tk);
    }
    kf_wipe(&k, sizeof(k));
    return rc;
}

/* Keep a fill in the cache unless a forget or wipe came between (generation). */
static int cache_keep(struct kms_tokens *t, uint32_t domain, const char *msn,
                      const struct dev_fill *f, uint64_t generation)
{
    int rc = KF_OK;
    pthread_rwlock_wrlock(&t->lock);
    if (atomic_load(&t->generation) != generation)
        goto out;
    struct tok_dev *d = cache_find(t, domain, msn, NULL);
    if (!d) {
        if (t->ndevs >= t->nbuckets && (rc = cache_grow(t)) < 0)
            goto out;
        if (!(d = calloc(1, sizeof(*d)))) {
            rc = KF_ERR_NOMEM;
            goto out;
        }
        d->domain = domain;
        memcpy(d->msn, msn, strlen(msn) + 1);
        size_t b = hash_msn(t->seed, domain, msn) & (t->nbuckets - 1);
        d->next = t->buckets[b];
        t->buckets[b] = d;
        t->ndevs++;
    }
    d->status = f->status;
    d->key_id = f->key_id;
    d->reg_date = f->reg_date;
    if (f->status != KF_MFG_ACTIVE)
        goto out;
    unsigned i = 0;
    while (i < TOK_PERIODS && d->period[i] && d->period[i] != f->period)
        i++;
    if (i < TOK_PERIODS && d->period[i] == f->period)
        goto out; /* another batch filled it meanwhile */
    if (i == TOK_PERIODS) { /* all used: replace the oldest */
        i = d->victim;
        d->victim = (d->victim + 1) % TOK_PERIODS;
        release_slot(t, d->slot[i]);
        d->period[i] = 0;
    }
    uint32_t slot;
    if ((rc = take_slot(t, &slot)) < 0)
        goto out;
    /* take_slot may have cleared the cache (and d with it): find it again. */
    if (cache_find(t, domain, msn, NULL) != d) {
        release_slot(t, slot);
        goto out;
    }
    memcpy(tk_at(t, slot), f->tk, KFD_METER_KEY_LEN);
    d->slot[i] = slot;
    d->period[i] = f->period;
out:
    pthread_rwlock_unlock(&t->lock);
    return rc;
}

/*
 * Step 1 for every piece: verdicts[i] becomes REFUSED, BAD or GOOD (good so
 * far: the duplicate check is step 2). Errors other than an unknown device or
 * an archive record that fails its check end the batch.
 */
static int check_tokens(kf_kms *kms, const char *domain, uint32_t dindex, const uint8_t *pieces,
                        size_t n, uint8_t *verdicts, struct kfd_txdata *txs)
{
    struct kms_tokens *t = kms->tokens;
    struct dev_fill f;
    int rc = KF_OK;
    pthread_rwlock_rdlock(&t->lock);
    for (size_t i = 0; i < n && rc == KF_OK; i++) {
        const uint8_t *piece = pieces + i * KFD_PIECE_LEN;
        struct kfd_txdata *tx = &txs[i];
        if (kfd_txdata_decode(piece, tx) < 0) {
            verdicts[i] = KF_TOKEN_REFUSED; /* malformed canonical data */
            tx->msn[0] = '\0';
            continue;
        }
        if ((verdicts[i] = judge_cached(t, dindex, piece, tx)) != 0)
            continue;
        /* A miss: fill outside the cache lock (the archive read takes its own). */
        uint64_t generation = atomic_load(&t->generation);
        pthread_rwlock_unlock(&t->lock);
        rc = fetch_device(kms, domain, tx->msn, tx->date / 100, &f);
        if (rc == KF_OK) {
            verdicts[i] = judge(piece, tx, f.status, f.reg_date,
                                f.status == KF_MFG_ACTIVE ? f.tk : NULL);
            rc = cache_keep(t, dindex, tx->msn, &f, generation);
        } else if (rc == KF_ERR_MFG_UNKNOWN || rc == KF_ERR_MFG_ARCHIVE) {
            if (rc == KF_ERR_MFG_ARCHIVE)
                kf_warn("token verification: the archive record of a device in %s fails its "
                        "check; its pieces are refused",
                        domain);
            verdicts[i] = KF_TOKEN_REFUSED;
            rc = KF_OK;
        }
        kf_wipe(&f, sizeof(f));
        pthread_rwlock_rdlock(&t->lock);
    }
    pthread_rwlock_unlock(&t->lock);
    return rc;
}

/* ---- step 2: duplicates, rows and audit ---- */

static int msn_index_of(struct kms_tokens *t, struct tok_domain *d, const char *msn,
                        uint32_t *index)
{
    if (d->msn_n >= d->msn_cap) {
        size_t cap = d->msn_cap ? d->msn_cap * 2 : 256;
        struct msn_index **b = calloc(cap, sizeof(*b));
        KF_ENSURE(b != NULL, KF_ERR_NOMEM);
        for (size_t i = 0; i < d->msn_cap; i++) {
            while (d->msns[i]) {
                struct msn_index *m = d->msns[i];
                d->msns[i] = m->next;
                size_t j = hash_msn(t->seed, 0, m->msn) & (cap - 1);
                m->next = b[j];
                b[j] = m;
            }
        }
        free(d->msns);
        d->msns = b;
        d->msn_cap = cap;
    }
    size_t j = hash_msn(t->seed, 0, msn) & (d->msn_cap - 1);
    for (struct msn_index *m = d->msns[j]; m; m = m->next)
        if (strcmp(m->msn, msn) == 0) {
            *index = m->index;
            return KF_OK;
        }
    KF_ENSURE(d->msn_n < UINT32_MAX - 1, KF_ERR_LIMIT);
    struct msn_index *m = calloc(1, sizeof(*m));
    KF_ENSURE(m != NULL, KF_ERR_NOMEM);
    snprintf(m->msn, sizeof(m->msn), "%s", msn);
    m->index = (uint32_t)++d->msn_n;
    m->next = d->msns[j];
    d->msns[j] = m;
    *index = m->index;
    return KF_OK;
}

/* Adds the piece to the domain's set; *fresh false if it was there. */
static int seen_add(struct kms_tokens *t, struct tok_domain *d, const char *msn, uint32_t count,
                    bool *fresh)
{
    uint32_t index;
    KF_GUARD(msn_index_of(t, d, msn, &index));
    return u64set_add(&d->seen, t->seed, ((uint64_t)index << 32) | count, fresh);
}

struct load_ctx {
    struct kms_tokens *t;
    struct tok_domain *d;
};

static int load_one(void *ctx, const char *msn, uint32_t count)
{
    struct load_ctx *l = ctx;
    bool fresh;
    KF_GUARD(seen_add(l->t, l->d, msn, count, &fresh));
    return fresh ? KF_OK : KF_ERR_DB; /* the table's primary key forbids it */
}

/* The domain's set from mfg_piece, once. Under kms->lock. */
static int domain_load(kf_kms *kms, struct tok_domain *d)
{
    if (d->loaded)
        return KF_OK;
    struct load_ctx l = {.t = kms->tokens, .d = d};
    int rc = kf_store_pieces_list(kms->tokens->pieces, d->id, load_one, &l);
    if (rc < 0) {
        domain_drop_set(d);
        return rc;
    }
    d->loaded = true;
    if (d->seen.n)
        kf_info("token verification: %zu pieces of %s verified before", d->seen.n, d->name);
    return KF_OK;
}

struct batch_counts {
    size_t good, bad, duplicate, refused;
};

/* Step 2, under kms->lock: the good pieces' duplicate check, their rows and
 * the batch's audit record in one transaction, committed (fsync deferred). */
static int record_batch(kf_kms *kms, const char *actor, struct tok_domain *d,
                        const struct kfd_txdata *txs, size_t n, uint8_t *verdicts,
                        struct kf_store_piece *rows, uint64_t *ticket)
{
    struct kms_tokens *t = kms->tokens;
    struct batch_counts c = {0};
    size_t nrows = 0;
    bool deferred = false;
    int rc = domain_load(kms, d);
    if (rc == KF_OK)
        rc = kf_store_begin_deferred(kms->store, &deferred);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n && rc == KF_OK; i++) {
        if (verdicts[i] == KF_TOKEN_GOOD) {
            bool fresh;
            rc = seen_add(t, d, txs[i].msn, txs[i].piece_count, &fresh);
            if (rc == KF_OK && !fresh)
                verdicts[i] = KF_TOKEN_DUPLICATE;
            if (rc == KF_OK && fresh) {
                memcpy(rows[nrows].msn, txs[i].msn, sizeof(rows[nrows].msn));
                rows[nrows++].piece_count = txs[i].piece_count;
            }
        }
        c.good += verdicts[i] == KF_TOKEN_GOOD;
        c.bad += verdicts[i] == KF_TOKEN_BAD;
        c.duplicate += verdicts[i] == KF_TOKEN_DUPLICATE;
        c.refused += verdicts[i] == KF_TOKEN_REFUSED;
    }
    if (rc == KF_OK)
        rc = kf_store_pieces_insert(t->pieces, d->id, (int64_t)time(NULL), rows, nrows);
    char detail[160];
    snprintf(detail, sizeof(detail), "pieces=%zu good=%zu bad=%zu duplicate=%zu refused=%zu", n,
             c.good, c.bad, c.duplicate, c.refused);
    if (rc == KF_OK)
        rc = kms_audit(kms, actor, "TokenVerify", d->name, "", KF_OK, detail);
    if (rc == KF_OK)
        rc = kf_store_commit_deferred(kms->store, ticket);
    if (rc < 0) {
        kf_store_rollback(kms->store);
        domain_drop_set(d); /* it holds pieces that are not stored: reload next time */
    }
    return rc;
}

int kf_kms_mfg_verify_tokens(kf_kms *kms, const char *actor, const char *domain,
                             const uint8_t *pieces, size_t n, uint8_t *verdicts)
{
    KF_ENSURE(kms && kms->tokens && actor && domain, KF_ERR_ARG);
    KF_ENSURE(n >= 1 && n <= KF_TOKEN_BATCH_MAX && pieces && verdicts, KF_ERR_ARG);
    const char *shown = kf_domain_name_valid(domain) ? domain : "";
    struct kms_tokens *t = kms->tokens;
    struct kfd_txdata *txs = NULL;
    struct kf_store_piece *rows = NULL;
    uint64_t ticket = 0;
    uint32_t dindex = 0;
    int rc = shown[0] ? KF_OK : KF_ERR_DOMAIN;
    struct tok_domain *d = rc == KF_OK ? domain_entry(t, domain, 0, &dindex) : NULL;
    if (rc == KF_OK && !d) {
        /* First batch of this domain: its store ID (domain IDs are never reused). */
        struct kms_read r;
        struct kf_domain dom = {0};
        struct kf_mfg_domain_row md;
        kms_read_begin(kms, &r);
        rc = kf_store_domain_get(r.st, domain, &dom);
        if (rc == KF_OK)
            rc = kf_store_mfg_domain_get(r.st, dom.id, &md); /* KF_ERR_MFG_SETUP */
        kms_read_end(kms, &r);
        if (rc == KF_OK && !(d = domain_entry(t, domain, dom.id, &dindex)))
            rc = KF_ERR_LIMIT;
        kf_domain_clear(&dom);
    }
    if (rc == KF_OK && kf_secmod_sealed(kms->secmod))
        rc = KF_ERR_SEALED;
    if (rc == KF_OK) {
        txs = malloc(n * sizeof(*txs));
        rows = malloc(n * sizeof(*rows));
        rc = txs && rows ? KF_OK : KF_ERR_NOMEM;
    }
    if (rc == KF_OK)
        rc = check_tokens(kms, domain, dindex, pieces, n, verdicts, txs);
    pthread_mutex_lock(&kms->lock);
    if (rc == KF_OK)
        rc = record_batch(kms, actor, d, txs, n, verdicts, rows, &ticket);
    if (rc < 0)
        kms_audit_refusal(kms, actor, "TokenVerify", shown, "", rc, NULL);
    pthread_mutex_unlock(&kms->lock);
    if (rc == KF_OK)
        rc = kf_store_sync(kms->store, ticket); /* verdicts leave once the pieces are durable */
    free(txs);
    free(rows);
    if (rc < 0)
        memset(verdicts, 0, n);
    return rc;
}

/* ---- token key export to a Tin ---- */

#define TOK_EXPORT_PERIODS 24
/* Room in a TokenKeys body for everything but the table. */
#define TOK_RECORD_OVERHEAD 1024u

/* YYYYMM with a year 2000..2099 (the canonical data's dates) and month 1..12. */
static bool period_valid(uint32_t p)
{
    uint32_t y = p / 100, m = p % 100;
    return y >= 2000 && y <= 2099 && m >= 1 && m <= 12;
}

static uint32_t period_next(uint32_t p)
{
    return p % 100 == 12 ? (p / 100 + 1) * 100 + 1 : p + 1;
}

/* How many periods first..last holds; 0 if the range is not valid. */
static unsigned period_count(uint32_t first, uint32_t last)
{
    if (!period_valid(first) || !period_valid(last) || first > last)
        return 0;
    unsigned n = (last / 100 - first / 100) * 12 + last % 100 - first % 100 + 1;
    return n;
}

struct export_dev {
    char msn[KF_MFG_MSN_MAX + 1];
    uint64_t key_id;
};

struct export_list {
    struct export_dev *dev;
    size_t n, cap, max;
};

static int collect_active(void *ctx, const struct kf_mfg_key_row *k)
{
    struct export_list *l = ctx;
    KF_ENSURE(l->n < l->max, KF_ERR_LIMIT);
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        struct export_dev *d = realloc(l->dev, cap * sizeof(*d));
        KF_ENSURE(d != NULL, KF_ERR_NOMEM);
        l->dev = d;
        l->cap = cap;
    }
    snprintf(l->dev[l->n].msn, sizeof(l->dev[l->n].msn), "%s", k->msn);
    l->dev[l->n++].key_id = k->key_id;
    return KF_OK;
}

/* The Tin's confidentiality key and the domain's Active devices. */
static int export_read(kf_kms *kms, const char *domain, const char *tin_id, uint8_t tin_pub[32],
                       struct export_list *l)
{
    struct kms_read r;
    struct kf_domain d = {0};
    struct kf_mfg_domain_row md;
    struct kf_mfg_role_row *role = malloc(sizeof(*role));
    KF_ENSURE(role != NULL, KF_ERR_NOMEM);
    kms_read_begin(kms, &r);
    int rc = kf_store_domain_get(r.st, domain, &d);
    if (rc == KF_OK)
        rc = kf_store_mfg_domain_get(r.st, d.id, &md);
    if (rc == KF_OK)
        rc = kf_store_mfg_role_get(r.st, d.id, tin_id, role);
    if (rc == KF_OK && (role->role_type != KF_MFG_ROLE_TIN || !role->has_enc))
        rc = KF_ERR_MFG_ROLE;
    if (rc == KF_OK) {
        memcpy(tin_pub, role->enc_pub, 32);
        rc = kf_store_mfg_key_list(r.st, d.id, KF_MFG_ACTIVE, collect_active, l);
    }
    kms_read_end(kms, &r);
    kf_domain_clear(&d);
    free(role);
    return rc;
}

/* One entry per period of one device, appended to table. */
static int export_device(kf_kms *kms, const char *domain, const char *tin_id,
                         const uint8_t tin_pub[32], const struct export_dev *dev, uint32_t first,
                         unsigned nperiods, kf_buf *table, bool *exported)
{
    struct kms_mfg_device_key k;
    struct kf_mfg_token_key_entry e;
    uint8_t tk[KFD_METER_KEY_LEN], entry[KF_MFG_TOKEN_KEY_ENTRY_LEN];
    char context[KF_DOMAIN_NAME_MAX + 16];
    memset(&k, 0, sizeof(k));
    *exported = false;
    int rc = kms_mfg_device_key(kms, domain, dev->msn, &k);
    /* Retired or replaced since the listing: not exported. */
    if (rc == KF_ERR_MFG_UNKNOWN || (rc == KF_OK && (k.status != KF_MFG_ACTIVE ||
                                                     k.key_id != dev->key_id))) {
        kf_wipe(&k, sizeof(k));
        return KF_OK;
    }
    uint32_t period = first;
    for (unsigned i = 0; i < nperiods && rc == KF_OK; i++, period = period_next(period)) {
        memset(&e, 0, sizeof(e));
        snprintf(e.msn, sizeof(e.msn), "%s", dev->msn);
        e.key_id = k.key_id;
        e.period = period;
        e.registered_at = k.registered_at;
        snprintf(context, sizeof(context), "%s/%06u", domain, (unsigned)period);
        rc = kfd_token_key(k.key, domain, period, tk);
        if (rc == KF_OK)
            rc = kf_mfg_seal_key(tin_pub, context, k.key_id, tin_id, tk, e.sealed);
        if (rc == KF_OK) {
            kf_mfg_token_key_entry_put(&e, entry);
            rc = kf_buf_put_bytes(table, entry, sizeof(entry));
        }
    }
    kf_wipe(tk, sizeof(tk));
    kf_wipe(&k, sizeof(k));
    *exported = rc == KF_OK;
    return rc;
}

static int export_table(kf_kms *kms, const char *domain, const char *tin_id, uint32_t first,
                        uint32_t last, kf_buf *records, size_t *ndevices)
{
    struct export_list l = {0};
    unsigned nperiods = period_count(first, last);
    uint8_t tin_pub[32];
    kf_buf table = {0};
    size_t max_table = KF_MFG_TOKEN_KEYS_MAX - TOK_RECORD_OVERHEAD;
    l.max = max_table / ((size_t)nperiods * KF_MFG_TOKEN_KEY_ENTRY_LEN);
    int rc = export_read(kms, domain, tin_id, tin_pub, &l);
    if (rc == KF_OK)
        rc = kf_buf_alloc(&table, l.n * nperiods * KF_MFG_TOKEN_KEY_ENTRY_LEN + 1, max_table, 0);
    *ndevices = 0;
    for (size_t i = 0; i < l.n && rc == KF_OK; i++) {
        bool exported;
        rc = export_device(kms, domain, tin_id, tin_pub, &l.dev[i], first, nperiods, &table,
                           &exported);
        *ndevices += exported;
    }
    if (rc == KF_OK) {
        struct kf_mfg_record rec;
        memset(&rec, 0, sizeof(rec));
        rec.type = KF_MFG_REC_TOKEN_KEYS;
        rec.fields = KF_MFG_F_DOMAIN | KF_MFG_F_ROLE_ID | KF_MFG_F_PERIODS | KF_MFG_F_TABLE;
        snprintf(rec.domain, sizeof(rec.domain), "%s", domain);
        snprintf(rec.role_id, sizeof(rec.role_id), "%s", tin_id);
        rec.period_first = first;
        rec.period_last = last;
        rec.table = table.data;
        rec.table_len = table.len;
        rc = kms_mfg_brass_sign(kms, domain, &rec, records);
    }
    free(l.dev);
    kf_buf_free(&table);
    return rc;
}

int kf_kms_mfg_token_keys(kf_kms *kms, const char *actor, const char *domain, const char *tin_id,
                          uint32_t first, uint32_t last, kf_buf *records)
{
    KF_ENSURE(kms && actor && domain && tin_id && records, KF_ERR_ARG);
    const char *shown = kf_domain_name_valid(domain) ? domain : "";
    enum kf_mfg_role_type type = 0;
    bool tin_ok = kf_mfg_role_id_parse(tin_id, &type) && type == KF_MFG_ROLE_TIN;
    unsigned nperiods = period_count(first, last);
    size_t before = records->len, ndevices = 0;
    int rc = !shown[0] ? KF_ERR_DOMAIN : !tin_ok ? KF_ERR_MFG_ROLE : KF_OK;
    if (rc == KF_OK && (nperiods == 0 || nperiods > TOK_EXPORT_PERIODS))
        rc = KF_ERR_MFG_PERIOD;
    if (rc == KF_OK && kf_secmod_sealed(kms->secmod))
        rc = KF_ERR_SEALED;
    if (rc == KF_OK)
        rc = export_table(kms, domain, tin_id, first, last, records, &ndevices);
    /* Never a key in the detail: who, how many devices, which periods. */
    char detail[160];
    snprintf(detail, sizeof(detail), "tin=%s devices=%zu periods=%06u-%06u (%u)",
             tin_ok ? tin_id : "?", ndevices, (unsigned)(first % 1000000u),
             (unsigned)(last % 1000000u), nperiods);
    pthread_mutex_lock(&kms->lock);
    if (rc == KF_OK) {
        rc = kf_store_begin(kms->store);
        if (rc == KF_OK && (rc = kms_audit(kms, actor, "TokenKeyExport", shown, "", KF_OK,
                                           detail)) == KF_OK)
            rc = kf_store_commit(kms->store);
        if (rc < 0)
            kf_store_rollback(kms->store);
    } else {
        kms_audit_refusal(kms, actor, "TokenKeyExport", shown, "", rc, detail);
    }
    pthread_mutex_unlock(&kms->lock);
    if (rc < 0 && records->len > before)
        records->len = before; /* nothing unaudited leaves */
    return rc;
}
