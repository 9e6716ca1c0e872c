/*
 * The key management service: the one place that composes the security
 * module, the store and the audit trail into operations. Transports (the
 * local admin socket now, KMIP over TLS later) decode a request, call these,
 * and encode the answer; they never touch keys or the database directly.
 *
 * Every operation that changes state or uses a key runs as
 *   lock; begin; <store changes>; audit append; commit; unlock
 * so the change and its audit record persist together or not at all, and a
 * refusal is itself audited (in its own transaction) with its error name.
 * Plaintext key material exists only in secure memory (kf_buf KF_BUF_SECRET)
 * and only between unwrap and the caller's encoding of it.
 */
#ifndef KEYFLEET_KMS_H
#define KEYFLEET_KMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/audit.h"
#include "keyfleet/buf.h"
#include "keyfleet/error.h"
#include "keyfleet/secmod.h"
#include "keyfleet/store.h"

typedef struct kf_kms kf_kms;

struct kf_kms_config {
    const char *dir;          /* data directory (created 0700 if missing) */
    bool dev;                 /* soft backend, 1-of-1 key file, unseals itself */
    /* PKCS#11 backend when module_path is set */
    const char *pkcs11_module;
    const char *token_label;
    const char *pin;          /* optional: log in at start (from a PIN file) */
    uint32_t audit_checkpoint_interval; /* 0 = default */
};

KF_RESULT int kf_kms_open(const struct kf_kms_config *cfg, kf_kms **out);
void kf_kms_close(kf_kms *kms);

/* ---- Administration ---- */
struct kf_kms_status {
    bool initialised;
    bool sealed;
    bool dev;
    const char *backend; /* "soft" or "pkcs11" */
    unsigned threshold, shares, shares_received;
    uint64_t audit_records;
    uint64_t domains;
    int schema_version;
};
KF_RESULT int kf_kms_status(kf_kms *kms, struct kf_kms_status *st);
/* Soft backend: make the root key and its n shares (threshold m). */
KF_RESULT int kf_kms_init(kf_kms *kms, const char *actor, unsigned m, unsigned n,
                          char shares[][KF_SHARE_MAX]);
/* PKCS#11 backend: make the root key in the token. */
KF_RESULT int kf_kms_init_pkcs11(kf_kms *kms, const char *actor, const char *pin);
/* Soft: one share; PKCS#11: the user PIN. *done once unsealed. */
KF_RESULT int kf_kms_unseal(kf_kms *kms, const char *actor, const char *share_or_pin,
                            bool *done, unsigned *received);
KF_RESULT int kf_kms_seal(kf_kms *kms, const char *actor);

KF_RESULT int kf_kms_domain_create(kf_kms *kms, const char *actor, const char *name,
                                   const char *parent);
KF_RESULT int kf_kms_domain_list(kf_kms *kms, kf_store_domain_cb cb, void *ctx);

/* ---- Managed objects ---- */
struct kf_key_spec {
    const char *domain;
    uint32_t object_type;  /* KF_OBJ_SYMMETRIC_KEY or KF_OBJ_SECRET_DATA */
    uint32_t crypto_alg;   /* KMIP algorithm (AES, HMAC-SHA256, ...) */
    int32_t crypto_length; /* bits */
    uint32_t usage_mask;
    const char *name;      /* optional */
};
/* uid receives "<domain>/<key_id>". */
KF_RESULT int kf_kms_create(kf_kms *kms, const char *actor, const struct kf_key_spec *spec,
                            char uid[KF_UID_MAX]);
/* Metadata into obj (material left NULL). With material != NULL (a
 * KF_BUF_SECRET buffer), also the plaintext key: audited as an export. */
KF_RESULT int kf_kms_get(kf_kms *kms, const char *actor, const char *uid, struct kf_object *obj,
                         kf_buf *material);
KF_RESULT int kf_kms_list(kf_kms *kms, const char *actor, const char *domain,
                          const struct kf_object_filter *f, kf_store_object_cb cb, void *ctx);
KF_RESULT int kf_kms_activate(kf_kms *kms, const char *actor, const char *uid);
/* reason: KMIP Revocation Reason Code; compromise_time used for compromise reasons. */
KF_RESULT int kf_kms_revoke(kf_kms *kms, const char *actor, const char *uid, uint32_t reason,
                            int64_t compromise_time, const char *message);
KF_RESULT int kf_kms_destroy(kf_kms *kms, const char *actor, const char *uid);

/* ---- Audit ---- */
KF_RESULT int kf_kms_audit_list(kf_kms *kms, uint64_t from, uint64_t max, kf_audit_record_cb cb,
                                void *ctx);
KF_RESULT int kf_kms_audit_verify(kf_kms *kms, struct kf_audit_report *r);

/* ---- KMIP front door ---- */
/*
 * Decode one KMIP Request Message (TTLV), run its batch items as actor, and
 * append the Response Message to resp. Never fails for a bad request: that
 * gets a KMIP error response. Returns < 0 only if no response can be made.
 */
KF_RESULT int kf_kms_handle_kmip(kf_kms *kms, const char *actor, const uint8_t *req, size_t len,
                                 kf_buf *resp);
/* KMIP Result Reason for a kf error (protocol major version matters). */
uint32_t kf_kms_result_reason(int err, int kmip_major);

#endif
