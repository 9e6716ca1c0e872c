/* Shared between the service's source files; not a public interface. */
#ifndef KF_KMS_INTERNAL_H
#define KF_KMS_INTERNAL_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>

#include "keyfleet/kms.h"
#include "keyfleet/lifecycle.h"

#define KF_KMS_MAX_DOMAIN_HANDLES 4096
#define KF_KMS_READERS 8

/* A read-only connection of the pool: reads (Get, key use) never take kms->lock. */
struct kms_reader {
    pthread_mutex_t lock;
    kf_store *store;
};

/* One caller of a group commit (groupcommit.c). Embed it first in the job. */
struct kms_gc_job {
    struct kms_gc_job *next;
    int rc;                   /* the job's result, set by the batch */
    unsigned weight; /* items this caller carries (a KMIP message's); 0: one, not counted */
    sem_t wake;               /* posted once: done, or lead */
    atomic_int role;
    struct kms_gc_job *batch; /* handed to a new leader */
};

struct kms_gc_queue {
    pthread_mutex_t lock;
    struct kms_gc_job *pending; /* LIFO */
    size_t pending_weight;      /* items of the pending jobs that carry several (weight) */
    bool busy;                  /* a leader owns the queue */
    bool durable;               /* batches are fsync'ed before their jobs are answered */
    atomic_uint_fast64_t batches, jobs; /* for tests and benchmarks */
    atomic_uint_fast64_t early;         /* leads handed over before the fdatasync (same) */
};

/* Run a batch (in arrival order) under kms->lock: set each job's rc, commit
 * with kf_store_commit_deferred, audit refusals. Returns the commit's ticket
 * for kf_store_sync (0: nothing to wait for). */
typedef uint64_t (*kms_gc_run_fn)(kf_kms *kms, struct kms_gc_job *batch);

void kms_gc_queue_init(struct kms_gc_queue *q, bool durable);
void kms_gc_queue_destroy(struct kms_gc_queue *q);
/* Queue me and return its rc once the batch that carried it is durable.
 * Must be called WITHOUT kms->lock held. */
int kms_gc_submit(kf_kms *kms, struct kms_gc_queue *q, struct kms_gc_job *me, kms_gc_run_fn run);

/* Devices the service has seen (device_cache.c): identity, validated MKEK
 * facts and, in secure memory, the unwrapped MKEK. */
struct kms_device_cache;

/* What the pairing service needs of one device. */
struct kms_device_view {
    char id[KF_DEVICE_ID_MAX + 1];
    uint64_t domain_id;
    uint64_t mkek_key_id;
    char domain[KF_DOMAIN_NAME_MAX + 1];
    /* The MKEK object's facts (kms_device_view_tx only). */
    bool facts_valid;
    bool bound, archived, has_material;
    uint32_t state, version;
    int64_t activation_date, deactivation_date;
};

int kms_device_cache_open(kf_kms *kms);
void kms_device_cache_close(kf_kms *kms);
/* Forget every cached MKEK (seal, unseal). */
void kms_device_cache_wipe(kf_kms *kms);
/* How many MKEKs the cache holds (tests). */
size_t kms_device_cache_keys(kf_kms *kms);
/* The device's identity (domain, MKEK object, domain name), read on st when
 * not cached. KF_ERR_DEVICE_UNKNOWN; KF_ERR_NOT_FOUND if not cached and st is NULL. */
int kms_device_identity(kf_kms *kms, kf_store *st, const char *id, struct kms_device_view *out);
/* Identity and MKEK facts as of the writer's open transaction: under
 * kms->lock, inside the transaction that relies on them. */
int kms_device_view_tx(kf_kms *kms, const char *id, struct kms_device_view *out);
/* Identity and MKEK facts from the cache, if the facts were read at the
 * current object generation (no object written since, no rollback): then
 * they are what a read would return now. Any thread. KF_ERR_NOT_FOUND: read
 * them from the store instead. */
int kms_device_view_cached(kf_kms *kms, const char *id, struct kms_device_view *out);
/* Call fn with the device's unwrapped MKEK (cached in secure memory, or
 * unwrapped from the store and then cached). KF_ERR_SEALED when sealed. */
int kms_device_with_mkek(kf_kms *kms, const struct kms_device_view *v,
                         int (*fn)(void *ctx, const uint8_t *mkek), void *ctx);

/* ---- Pair requests and acks of one KMIP Request Message (device_pair.c) ----
 * The items run in order in ONE group-commit transaction, each in its own
 * savepoint, with one fdatasync for all of them (and for whatever else the
 * leader's batch carries); each answer still follows that durable commit, and
 * every M is built only after it. Refusals are audited as for a lone request.
 * An item with chained set is not run, and not answered (ran false), when the
 * item before it failed or was not run: KMIP's Stop (and Undo, which keyfleet
 * treats as Stop); under Continue only the second ack of a report is chained
 * to the first. Returns KF_ERR_ARG or KF_ERR_NOMEM (then nothing ran), else
 * KF_OK with each item's rc and ran set. */
#define KMS_DEVICE_ITEMS_MAX 64

struct kms_pair_item {
    const char *id_a, *id_b; /* as kf_kms_pair_issue */
    uint32_t count, lifetime, max_uses;
    bool chained;
    kf_buf *m; /* M = PairPart(A) || PairPart(B) is appended here */
    int rc;    /* out (KF_OK when not run) */
    bool ran;  /* out */
};
int kms_pair_issue_items(kf_kms *kms, const char *actor, struct kms_pair_item *items, size_t n);

struct kms_ack_item {
    const uint8_t *ack; /* as kf_kms_pair_ack */
    size_t len;
    bool chained;
    struct kf_pair_ack_result res; /* out, when rc is KF_OK and ran */
    int rc;                        /* out (KF_OK when not run) */
    bool ran;                      /* out */
};
/* n: at most 2 * KMS_DEVICE_ITEMS_MAX (two acks per report). */
int kms_pair_ack_items(kf_kms *kms, const char *actor, struct kms_ack_item *items, size_t n);
/* The checks kf_kms_pair_issue makes before anything moves (IDs, not the same
 * device, policy, RNG health), without auditing anything. */
int kms_pair_precheck(const char *id_a, const char *id_b, uint32_t count, uint32_t lifetime_s,
                      uint32_t max_uses);

struct kf_kms {
    char dir[4096];
    bool dev;
    bool pkcs11;
    kf_secmod *secmod;
    kf_store *store;
    kf_audit *audit;
    /* One writer at a time: the store connection and the audit head are shared. */
    pthread_mutex_t lock;
    /* Readers: NULL stores when the store is in memory (then reads use the writer). */
    struct kms_reader readers[KF_KMS_READERS];
    /* Group commits (groupcommit.c): audit records of reads and key uses,
     * creates (objects.c), pair requests and acks (device_pair.c). */
    struct kms_gc_queue audit_q, create_q, device_q;
    /* Read/use audit records commit without fsync; the flusher fdatasyncs the WAL
     * within KMS_AUDIT_SYNC_MS (see service.c). audit_ticket: the newest such
     * commit (0: nothing to sync). */
    atomic_uint_fast64_t audit_ticket;
    atomic_bool flusher_stop;
    pthread_t flusher;
    bool flusher_running;
    struct kms_device_cache *devices;
    /* Manufacturing (mfg.c: role keys in secure memory) and the token verifier
     * (tokens.c: token keys and the duplicate set); see mfg_internal.h. */
    struct kms_mfg *mfg;
    struct kms_tokens *tokens;
    /* Domain keys loaded into the security module since the last unseal. */
    pthread_rwlock_t handles_lock;
    struct {
        uint64_t domain_id;
        kf_domain_handle handle;
    } loaded[KF_KMS_MAX_DOMAIN_HANDLES];
    size_t nloaded;
};

/* Audit one event inside the open transaction. */
int kms_audit(kf_kms *kms, const char *actor, const char *op, const char *domain,
              const char *object, int result, const char *detail);
/* Audit a refusal in a transaction of its own (the action's was rolled back). */
void kms_audit_refusal(kf_kms *kms, const char *actor, const char *op, const char *domain,
                       const char *object, int err, const char *detail);
/* Append ev durably, sharing the transaction and fsync with concurrent callers.
 * Must be called WITHOUT kms->lock held. */
int kms_audit_group(kf_kms *kms, const struct kf_audit_event *ev);
/* A pooled read connection (locked); release when done. NULL: use kms->store under kms->lock. */
struct kms_reader *kms_reader_acquire(kf_kms *kms);
void kms_reader_release(struct kms_reader *r);
/* A read on a pooled connection (no kms->lock), or on the writer under kms->lock
 * when there is no pool (in-memory store): st is the connection to use. */
struct kms_read {
    struct kms_reader *reader;
    kf_store *st;
};
void kms_read_begin(kf_kms *kms, struct kms_read *r);
void kms_read_end(kf_kms *kms, struct kms_read *r);
/* Handle for a domain's key, loading it into the security module if needed. */
int kms_domain_handle(kf_kms *kms, const struct kf_domain *d, kf_domain_handle *h);
/* Archived by KMIP Archive (kmip_ops2.c): no Get of material, no cryptographic use. */
bool kms_object_archived(const struct kf_object *obj);
/* Forget all loaded handles (on seal). */
void kms_forget_handles(kf_kms *kms);
/* The MKEK object may serve purpose now: lifecycle (from its dates, now),
 * archive, material, mark (device.c). Sets obj->state to the effective one. */
int kms_mkek_usable(struct kf_object *obj, enum kf_use_purpose purpose);
/* A device ID fit to echo into an audit record, else "". */
const char *kms_device_shown_id(const char *id);
/* A device's MKEK (server-owned mark y-keyfleet-device, device.c): its
 * material is never served by Get/Export nor used by a KMIP operation, and
 * never replaced; only the pairing service unwraps it. */
bool kms_object_device_bound(const struct kf_object *obj);
/* KMIP Register's body inside the caller's open transaction (objects.c):
 * wrap, store, audit as op; the caller commits or rolls back. */
int kms_register_in_tx(kf_kms *kms, const char *actor, const char *op,
                       const struct kf_register_spec *spec, const uint8_t *material,
                       size_t material_len, char uid[KF_UID_MAX]);

#endif
