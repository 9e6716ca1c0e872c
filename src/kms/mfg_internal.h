/*
 * Inside the kms: what the manufacturing service (mfg.c, with the roles in
 * src/oak and src/brass and the archive in src/store/mfg.c) gives the token
 * verifier (tokens.c), and back. See include/keyfleet/kms_mfg.h.
 */
#ifndef KF_KMS_MFG_INTERNAL_H
#define KF_KMS_MFG_INTERNAL_H

#include <stdint.h>

#include "keyfleet/kms_mfg.h"
#include "kms_internal.h"

/* What the verifier needs about a device's key in a domain. */
struct kms_mfg_device_key {
    uint64_t key_id;
    uint32_t status;        /* enum kf_mfg_status */
    int64_t registered_at;  /* the registration date (MR1 Date), Unix s; 0 = not registered */
    uint8_t key[32];        /* the master key, only when status is Active; wipe after use */
};
/* The newest archive record of msn in domain, its signature checked
 * (KF_ERR_MFG_ARCHIVE), and for an Active key the master key opened by the
 * domain's Brass. KF_ERR_MFG_UNKNOWN if there is none. No audit (the caller
 * audits its batch). Takes what locks it needs; call without kms->lock. */
int kms_mfg_device_key(kf_kms *kms, const char *domain, const char *msn,
                       struct kms_mfg_device_key *out);
/* Sign rec as the domain's Brass (its RoleId is the signer) and append the
 * KeyfleetSignedRecord to out: the token key export's TokenKeys record
 * (tokens.c). KF_ERR_MFG_SETUP if the domain has no Brass; KF_ERR_SEALED.
 * Takes what locks it needs; call without kms->lock. */
int kms_mfg_brass_sign(kf_kms *kms, const char *domain, const struct kf_mfg_record *rec,
                       kf_buf *out);
/* The postal domain of country (two letters): KF_ERR_MFG_COUNTRY if no
 * domain is set up for it. For authorising an earth device's registration
 * in the domain its key moves to (kmip_mfg.c). */
int kms_mfg_country_domain(kf_kms *kms, const char *country, char domain[KF_MFG_DOMAIN_MAX + 1]);
/* kf_kms_mfg_report_install for a report that must be of domain (the one
 * the caller was authorised for): a record of any other domain is refused
 * (KF_ERR_MFG_PARAM). domain NULL: the domain the signing Steel is enrolled
 * in whose certificate the signature verifies under. */
int kms_mfg_report_install_in(kf_kms *kms, const char *actor, const char *domain,
                              const uint8_t *report, size_t len, kf_buf *records);
/* mfg.c calls this whenever a device's status changes in domain (register,
 * retire, transfer), so tokens.c drops what it cached for it. */
void kms_tokens_forget(kf_kms *kms, const char *domain, const char *msn);
/* Lifecycle of each half's state in struct kf_kms (service.c calls these):
 * open after the store is open, wipe on seal (cached key material), close. */
int kms_mfg_open(kf_kms *kms);
void kms_mfg_wipe(kf_kms *kms);
void kms_mfg_close(kf_kms *kms);
int kms_tokens_open(kf_kms *kms);
void kms_tokens_wipe(kf_kms *kms);
void kms_tokens_close(kf_kms *kms);

#endif
