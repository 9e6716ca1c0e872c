/*
 * Shared by the manufacturing service's files (mfg.c: the role key cache,
 * the archive check, installation, retirement, status; mfg_setup.c: setup,
 * enrolment, certificates; mfg_register.c: registration and the earth
 * transfer). Not an interface: see include/keyfleet/kms_mfg.h and
 * mfg_internal.h.
 */
#ifndef KF_KMS_MFG_SERVICE_H
#define KF_KMS_MFG_SERVICE_H

#include <pthread.h>

#include "brass/brass.h"
#include "mfg_internal.h"

/* A domain's role private keys, in secure memory once loaded. */
struct mfg_secrets {
    uint8_t m_sign[32], o_sign[32], b_sign[32], b_enc[32], b_archive[32];
};

/* One domain's M, O and B: identity and public keys (from the store), and
 * the private keys (secure memory) once loaded. */
struct mfg_roles {
    uint64_t domain_id;
    char domain[KF_DOMAIN_NAME_MAX + 1];
    uint32_t kind;
    char country[3];
    char m_id[KF_MFG_ROLE_ID_LEN + 1], o_id[KF_MFG_ROLE_ID_LEN + 1], b_id[KF_MFG_ROLE_ID_LEN + 1];
    uint8_t m_pub[32], o_pub[32], b_pub[32], b_enc_pub[32];
    uint64_t key_ids[5]; /* objects: M sign, O sign, B sign, B enc, B archive */
    struct mfg_secrets *sec;
};

/* kms->mfg: the loaded domains. Locks: kms->lock (if taken) before lock. */
struct kms_mfg {
    pthread_mutex_t lock;
    struct mfg_roles *entry;
    size_t n, cap;
};

int64_t mfg_now(void);
void mfg_copy_text(char *dst, size_t cap, const char *src);
/* An audit-safe domain name or role ID ("" if not well formed). */
const char *mfg_shown_domain(const char *domain);
const char *mfg_shown_role(const char *id);

/* The domain's roles with their private keys, loading them on first use
 * (st: the connection to read on). Under kms->mfg->lock; the entry is valid
 * until that lock is released (loading another domain may move it).
 * KF_ERR_SEALED, KF_ERR_MFG_SETUP. */
int mfg_roles_loaded(kf_kms *kms, kf_store *st, const struct kf_domain *d, struct mfg_roles **out);
/* The domain row and its roles' public half (no secrets), on st. */
int mfg_domain_public(kf_store *st, const char *domain, struct kf_domain *d, struct mfg_roles *p);
/* The domain row and its roles with private keys, on the writer (both locks held). */
int mfg_domain_loaded(kf_kms *kms, const char *domain, struct kf_domain *d, struct mfg_roles **p);
void mfg_brass_of(const struct mfg_roles *p, struct kf_brass *b);
/* The row's current record checked: signed by the domain's Oak or Brass, of
 * this domain and key ID, agreeing with the row. KF_ERR_MFG_ARCHIVE. */
int mfg_archive_check(const struct mfg_roles *p, const struct kf_mfg_key_row *k,
                      struct kf_mfg_record *rec);
/* The latest event time of a key so far. */
int64_t mfg_last_event(const struct kf_mfg_key_row *k);

/* kms->lock, then kms->mfg->lock; and back. */
void mfg_lock(kf_kms *kms);
void mfg_unlock(kf_kms *kms);
/* body in a transaction (KF_ERR_SEALED while sealed); commit if it succeeds. */
int mfg_in_tx(kf_kms *kms, int (*body)(kf_kms *kms, void *ctx), void *ctx);
/* Audit a read (group-committed). */
int mfg_audit_read(kf_kms *kms, const char *actor, const char *op, const char *domain,
                   const char *object, int rc, const char *detail);

#endif
