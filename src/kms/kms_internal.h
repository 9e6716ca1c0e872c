/* Shared between the service's source files; not a public interface. */
#ifndef KF_KMS_INTERNAL_H
#define KF_KMS_INTERNAL_H

#include <pthread.h>

#include "keyfleet/kms.h"

#define KF_KMS_MAX_DOMAIN_HANDLES 4096

struct kf_kms {
    char dir[4096];
    bool dev;
    bool pkcs11;
    kf_secmod *secmod;
    kf_store *store;
    kf_audit *audit;
    /* One writer at a time: the store connection and the audit head are shared. */
    pthread_mutex_t lock;
    /* Domain keys loaded into the security module since the last unseal. */
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
/* Handle for a domain's key, loading it into the security module if needed. */
int kms_domain_handle(kf_kms *kms, const struct kf_domain *d, kf_domain_handle *h);
/* Forget all loaded handles (on seal). */
void kms_forget_handles(kf_kms *kms);

#endif
