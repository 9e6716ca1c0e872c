/*
 * Brass, the verification role of a domain (seed EP 0 735 720 Fig. 29-31,
 * MI8-MI10 and MR2-MR4; docs/manufacturing.md). One per domain, inside
 * keyfleetd. Brass holds an Ed25519 signing key, an X25519 key that Oak
 * seals new keys to, and an AES-256 archive key; it checks what the Steel
 * reports against what Oak made, re-encrypts a device master key under its
 * archive key once the key is proven installed, checks a device's
 * registration MAC, and moves an earth device's key to its country's Brass.
 *
 * Pure functions over caller-owned memory: the kms hands in the keys (from
 * secure memory), the records from the archive and the role certificates,
 * and stores what comes out. Nothing here touches the store, a socket or the
 * log. Every record is opened only after its signature verifies under a
 * certificate the authority M of the record's domain signed. A device master
 * key K exists in secure memory only inside one call and is wiped.
 */
#ifndef KF_BRASS_H
#define KF_BRASS_H

#include <stddef.h>
#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/error.h"
#include "keyfleet/meter.h"
#include "keyfleet/mfg.h"

struct kf_brass {
    const char *domain;
    const char *id;               /* "B........" */
    const uint8_t *sign_priv;     /* Ed25519, 32 bytes */
    const uint8_t *sign_pub;      /* its public half: Brass's own records verify under it */
    const uint8_t *enc_priv;      /* X25519, 32 bytes */
    const uint8_t *archive_key;   /* AES-256, 32 bytes */
    const uint8_t *authority_pub; /* the domain's M: the anchor of every certificate passed */
};

/* A RoleCert envelope as stored (mfg_role.cert). */
struct kf_brass_cert {
    const uint8_t *p;
    size_t len;
};

/* What an installation check found, for the archive row. */
struct kf_brass_install {
    uint32_t status;                     /* KF_MFG_INSTALLED or KF_MFG_BAD */
    int32_t reason;                      /* Bad: why (KF_ERR_MFG_TOKENS, or the Steel's reason) */
    char msn[KF_MFG_MSN_MAX + 1];        /* the device's ("" if an InstallFailed named none) */
    char signer[KF_MFG_ROLE_ID_LEN + 1]; /* the reporting Steel */
    int64_t t_install;                   /* the Steel's EventTime */
};

/*
 * MI8 -> MI9 + MI10. mi3: the key's ArchiveNew (Oak's, from the archive);
 * oak: Oak's certificate; mi7: the Steel's Installed record; steel: the
 * certificate of the Steel that signed it. Refusals (negative, nothing
 * appended): a certificate or signature that does not verify
 * (KF_ERR_BAD_SIGNATURE; a bad MI3 is KF_ERR_MFG_ARCHIVE), framing
 * (KF_ERR_MFG_FRAMING), another domain, key ID or Oak (KF_ERR_MFG_PARAM),
 * another Steel than the key was made for (KF_ERR_MFG_STEEL_ID), an
 * EventTime before MI3's (KF_ERR_MFG_TIME). Otherwise KF_OK and either
 * status Installed with ArchiveInstalled (MI9) appended to mi9 and
 * ConfirmInstalled (MI10) to mi10, or, when the device's test tokens are not
 * those of K, status Bad reason KF_ERR_MFG_TOKENS with only MI10 (Bad).
 */
KF_RESULT int kf_brass_install_check(const struct kf_brass *b, const uint8_t *mi3, size_t mi3_len,
                                     struct kf_brass_cert oak, const uint8_t *mi7, size_t mi7_len,
                                     struct kf_brass_cert steel, int64_t now, kf_buf *mi9,
                                     kf_buf *mi10, struct kf_brass_install *out);

/*
 * A Steel's InstallFailed for the key of mi3: any Steel enrolled in the
 * domain may burn a key that is still New (the caller checks the status).
 * report's SteelId is the reporter's own ID (the signer) or the Steel the key
 * was made for. Refusals as for kf_brass_install_check, and a Reason that is
 * not a kf error code (KF_ERR_MFG_FRAMING). KF_OK: status Bad with the
 * Steel's reason, ConfirmInstalled (Bad) appended to mi10.
 */
KF_RESULT int kf_brass_install_failed(const struct kf_brass *b, const uint8_t *mi3, size_t mi3_len,
                                      struct kf_brass_cert oak, const uint8_t *report,
                                      size_t report_len, struct kf_brass_cert steel, int64_t now,
                                      kf_buf *mi10, struct kf_brass_install *out);

/*
 * MR2 -> MR3 + MR4 for the MAC r->mac[mac] of a device whose key is in this
 * Brass's domain. record: the key's ArchiveInstalled (MI9). Refusals: a
 * record that is not Brass's own or was modified (KF_ERR_MFG_ARCHIVE), of
 * another device or key ID (KF_ERR_MFG_PARAM), a MAC that does not verify
 * under K (KF_ERR_MFG_REG_MAC), a Date before MI9's EventTime
 * (KF_ERR_MFG_TIME). KF_OK: ArchiveRegistered (MR3, status Active) appended
 * to mr3 and ConfirmRegistered (MR4) to mr4.
 */
KF_RESULT int kf_brass_register(const struct kf_brass *b, const uint8_t *record, size_t len,
                                const struct kfd_registration *r, size_t mac, int64_t now,
                                kf_buf *mr3, kf_buf *mr4);

/*
 * Earth's half of an earth device's registration (Fig. 13): open earth's own
 * archive copy (record: the key's MI9, checked as for kf_brass_register),
 * check MSN and key ID, and append a Transfer, K sealed to the country's
 * Brass (country_brass_id, country_enc_pub from that domain's certificate),
 * signed by earth's Brass. The MAC is the country Brass's to check.
 */
KF_RESULT int kf_brass_transfer_out(const struct kf_brass *earth, const uint8_t *record, size_t len,
                                    const struct kfd_registration *r, size_t mac,
                                    const char *country_brass_id, const uint8_t country_enc_pub[32],
                                    int64_t now, kf_buf *transfer);

/*
 * The country's half: verify earth's Brass certificate under earth's
 * authority (earth_authority_pub) and the Transfer under it, check that it
 * names this device, earth domain and key ID and this country, open K, check
 * the device's MAC r->mac[mac] (it names earth's domain and key ID), and
 * append MR3 (status Active) and MR4 under new_key_id of this Brass's domain.
 * Refusals as for kf_brass_register, plus KF_ERR_MFG_COUNTRY for a Transfer
 * made for another country.
 */
KF_RESULT int kf_brass_transfer_in(const struct kf_brass *country, const uint8_t *transfer,
                                   size_t len, const uint8_t earth_authority_pub[32],
                                   struct kf_brass_cert earth_brass,
                                   const struct kfd_registration *r, size_t mac,
                                   uint64_t new_key_id, int64_t now, kf_buf *mr3, kf_buf *mr4);

/*
 * Open one of the domain's archive records and take K out: ArchiveNew
 * (signed by Oak, oak_pub; K sealed to Brass) or ArchiveInstalled /
 * ArchiveRegistered (signed by this Brass; K under its archive key).
 * KF_ERR_MFG_ARCHIVE if the record was modified, is of another domain or is
 * not one of these. rec (may be NULL) receives the decoded record; key is
 * the caller's secure memory, wiped on failure.
 */
KF_RESULT int kf_brass_open(const struct kf_brass *b, const uint8_t *record, size_t len,
                            const uint8_t *oak_pub, struct kf_mfg_record *rec,
                            uint8_t key[KF_MFG_KEY_LEN]);

#endif
