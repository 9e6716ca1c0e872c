/* Shared between the service's source files; not a public interface. */
#ifndef KF_KMS_INTERNAL_H
#define KF_KMS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "keyfleet/kms.h"

#define KF_KMS_MAX_DOMAIN_HANDLES 4096
#define KF_KMS_READERS 8

/* A read-only connection of the pool: reads (Get, key use) never take kms->lock. */
struct kms_reader {
    pthread_mutex_t lock;
    kf_store *store;
};

struct create_wait;
struct dev_job;

/* One audit record waiting for a group commit. */
struct kms_audit_wait {
    struct kf_audit_event ev;
    int result;            /* of the append and commit */
    bool done;
    struct kms_audit_wait *next;
};

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
    /* Group commit of audit records for reads and key uses. */
    pthread_mutex_t audit_queue_lock;
    pthread_cond_t audit_queue_done;
    struct kms_audit_wait *audit_pending;
    bool audit_flushing;
    /* Group commit of creates (objects.c), under audit_queue_lock too. */
    struct create_wait *create_pending;
    bool create_flushing;
    /* Group commit of pair key requests and acks (device.c), under audit_queue_lock too. */
    struct dev_job *device_pending;
    bool device_flushing;
    /* Read/use audit records commit without fsync; the flusher fdatasyncs the WAL
     * within KMS_AUDIT_SYNC_MS (see service.c). -1: off (in-memory store). */
    int wal_fd;
    atomic_bool wal_dirty;
    atomic_bool flusher_stop;
    pthread_t flusher;
    bool flusher_running;
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
/* Handle for a domain's key, loading it into the security module if needed. */
int kms_domain_handle(kf_kms *kms, const struct kf_domain *d, kf_domain_handle *h);
/* Archived by KMIP Archive (kmip_ops2.c): no Get of material, no cryptographic use. */
bool kms_object_archived(const struct kf_object *obj);
/* Forget all loaded handles (on seal). */
void kms_forget_handles(kf_kms *kms);
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
