/*
 * The domain's authority M and its generation role Oak (seed EP 0 735 720
 * Fig. 29/30, docs/manufacturing.md). Both run inside keyfleetd and are pure
 * functions over caller-owned memory: the kms hands them their private keys
 * (from secure memory) and stores what they make; nothing here touches the
 * store, a socket or the log.
 *
 * M's signing key signs role certificates and nothing else. Oak's signing
 * key signs ArchiveNew (MI3) and Distribute (MI4) and nothing else; Oak
 * holds no other key, and the device master key K it draws exists only
 * inside kf_oak_generate.
 */
#ifndef KF_OAK_H
#define KF_OAK_H

#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/error.h"
#include "keyfleet/mfg.h"

/* ---- M: role certificates ---- */
/* A RoleCert for role_id (its letter says the role type) in domain, with its
 * Ed25519 sign_pub and X25519 enc_pub (NULL for roles without one: M, O),
 * signed by the authority authority_id with authority_priv; appended to cert.
 * M's own certificate is the one with role_id == authority_id (self-signed).
 * KF_ERR_MFG_PARAM for a malformed role ID or domain, KF_ERR_MFG_ROLE for a
 * role type that needs an enc key and has none (B, S, T) or has one it must
 * not (M, O). */
KF_RESULT int kf_authority_certify(const char *domain, const char *authority_id,
                                   const uint8_t authority_priv[32], const char *role_id,
                                   const uint8_t sign_pub[32], const uint8_t *enc_pub, int64_t now,
                                   kf_buf *cert);

/* ---- Oak: MI1 -> MI2 (MI3 + MI4) ---- */
struct kf_oak_request {
    const char *domain;
    const char *oak_id;
    const uint8_t *sign_priv; /* Oak's Ed25519 private key (32 bytes) */
    const char *steel_id;
    const uint8_t *steel_enc_pub; /* the Steel's X25519 key, from its certificate */
    const char *brass_id;
    const uint8_t *brass_enc_pub; /* the domain's Brass X25519 key */
    uint64_t key_id;              /* assigned by the archive (MI0') */
    uint64_t last_seen;           /* the highest key ID Oak accepted for the domain */
    int64_t now;
};
/*
 * Refuse key_id <= last_seen (KF_ERR_MFG_KEY_ID: a replayed or repeated MI1);
 * draw K; append ArchiveNew (MI3: K sealed to Brass) to mi3 and Distribute
 * (MI4: K sealed to the Steel, test tokens of K) to mi4, both signed by Oak;
 * wipe K. The caller persists key_id as Oak's new last seen with MI3.
 * On failure nothing is appended (mi3 and mi4 are reset to where they were).
 */
KF_RESULT int kf_oak_generate(const struct kf_oak_request *r, kf_buf *mi3, kf_buf *mi4);

#endif
