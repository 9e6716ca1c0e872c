/*
 * The manufacturing service of keyfleetd (seed EP 0 735 720, DESIGN §4.2,
 * docs/manufacturing.md): domain roles (M, Oak, Brass) kept as wrapped
 * objects of their domain, the archive of device master key records, key
 * installation (MI0-MI10), registration (MR1-MR4), retirement, status, and
 * token verification. Authorisation and the command table (error level 2)
 * are the KMIP layer's (src/kms/kmip_mfg.c); everything here is audited,
 * refusals included, and nothing secret reaches an audit detail or the log.
 *
 * Buffers named "records" receive one or more KeyfleetSignedRecord TTLVs
 * back to back (kf_mfg_envelope_parse with *used walks them).
 */
#ifndef KEYFLEET_KMS_MFG_H
#define KEYFLEET_KMS_MFG_H

#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/error.h"
#include "keyfleet/kms.h"
#include "keyfleet/mfg.h"

/* Set up a domain for manufacturing: the keyfleet domain is created if
 * missing; M, Oak and Brass get fresh keys and M-signed role certificates.
 * kind: enum kf_mfg_domain_kind; country: two letters for postal, NULL else.
 * KF_ERR_EXISTS if already set up. Appends the M, O, B certificates. */
KF_RESULT int kf_kms_mfg_setup(kf_kms *kms, const char *actor, const char *domain,
                               uint32_t kind, const char *country, kf_buf *records);
/* The domain's M, O and B certificates (M's is self-signed), then every
 * enrolled station's. */
KF_RESULT int kf_kms_mfg_role_certs(kf_kms *kms, const char *actor, const char *domain,
                                    kf_buf *records);
/* Enrol a Steel or Tin station (role_id's letter says which) into domain with
 * its public keys: appends the station's certificate, then the domain's M, O, B
 * certificates. KF_ERR_EXISTS if that role ID is already enrolled there. */
KF_RESULT int kf_kms_mfg_enroll(kf_kms *kms, const char *actor, const char *domain,
                                const char *role_id, const uint8_t sign_pub[32],
                                const uint8_t enc_pub[32], kf_buf *records);
/* MI0..MI4: appends the signed Distribute record (MI4) for steel_id. */
KF_RESULT int kf_kms_mfg_request_key(kf_kms *kms, const char *actor, const char *domain,
                                     const char *steel_id, kf_buf *records);
/* MI7 (Installed) or InstallFailed, signed by the Steel: MI8/MI9; appends MI10. */
KF_RESULT int kf_kms_mfg_report_install(kf_kms *kms, const char *actor, const uint8_t *report,
                                        size_t len, kf_buf *records);
/* MR1 (KeyfleetRegistration TTLV bytes): MR2/MR3; appends one MR4 per domain. */
KF_RESULT int kf_kms_mfg_register(kf_kms *kms, const char *actor, const uint8_t *mr1,
                                  size_t len, kf_buf *records);
KF_RESULT int kf_kms_mfg_retire(kf_kms *kms, const char *actor, const char *domain,
                                uint64_t key_id);

struct kf_mfg_key_info {
    char domain[KF_MFG_DOMAIN_MAX + 1];
    uint64_t key_id;
    char steel_id[KF_MFG_ROLE_ID_LEN + 1];
    uint32_t status;   /* enum kf_mfg_status */
    int32_t reason;    /* kf error code of a Bad status, else 0 */
    char msn[KF_MFG_MSN_MAX + 1], indicia[KF_MFG_INDICIA_MAX + 1], country[3];
    int64_t t_request, t_install, t_install_verify, t_register, t_register_verify;
    char moved_domain[KF_MFG_DOMAIN_MAX + 1]; /* Transferred: where it went */
    uint64_t moved_key_id;
};
/* By key ID (msn NULL) or by MSN (key_id 0; the newest record of that MSN).
 * Checks the stored record's signature (KF_ERR_MFG_ARCHIVE if modified). */
KF_RESULT int kf_kms_mfg_status(kf_kms *kms, const char *actor, const char *domain,
                                uint64_t key_id, const char *msn, struct kf_mfg_key_info *out);

/* Verdicts of token verification (one byte per piece). */
enum kf_token_verdict {
    KF_TOKEN_GOOD = 1,
    KF_TOKEN_BAD = 2,
    KF_TOKEN_DUPLICATE = 3,
    KF_TOKEN_REFUSED = 4,
};
#define KF_TOKEN_BATCH_MAX 20000u /* 920,000 bytes of pieces: a request stays under the 1 MiB message limit */
/* pieces: n x KFD_PIECE_LEN bytes (canonical data || this domain's token).
 * verdicts: n bytes. Good pieces are recorded (durably, before returning) for
 * duplicate detection. Audited once per batch with the counts. */
KF_RESULT int kf_kms_mfg_verify_tokens(kf_kms *kms, const char *actor, const char *domain,
                                       const uint8_t *pieces, size_t n, uint8_t *verdicts);
/* A signed TokenKeys record for the Tin tin_id (enrolled in domain): every
 * Active device's TK for each period first..last (YYYYMM, at most 24 periods),
 * sealed to the Tin. Never a master key. */
KF_RESULT int kf_kms_mfg_token_keys(kf_kms *kms, const char *actor, const char *domain,
                                    const char *tin_id, uint32_t first, uint32_t last,
                                    kf_buf *records);

#endif
