/*
 * A manufacturing station's own state (docs/manufacturing.md): the Steel
 * (keyfleet-install) and the Tin (keyfleet-verify) each keep a state
 * directory (0700) with
 *   role          its role ID ("S00000001")
 *   keys          its Ed25519 signing and X25519 confidentiality private keys,
 *                 wrapped (AES-256-KWP, RFC 5649) under the station key file
 *   certs/<domain> the records keyfleetd returned at enrolment: the station's
 *                 certificate and the domain's M, O, B certificates
 *   last/<domain> the last key ID seen for the domain (Steel's one-time
 *                 installation check), written durably (temp file, fsync,
 *                 rename, fsync of the directory) before a key is installed
 * The station key file (32 random bytes, 0600) is made by kf_station_create
 * when missing. Private keys live in secure memory (kf_secmem) while open.
 * Module src/station (links kf_mfg, kf_crypto, kf_core).
 */
#ifndef KEYFLEET_STATION_H
#define KEYFLEET_STATION_H

#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/error.h"
#include "keyfleet/mfg.h"

typedef struct kf_station kf_station;

/* New state in dir (must not hold a station yet: KF_ERR_EXISTS) for role_id. */
KF_RESULT int kf_station_create(const char *dir, const char *key_file, const char *role_id);
KF_RESULT int kf_station_open(const char *dir, const char *key_file, kf_station **out);
void kf_station_close(kf_station *st);

const char *kf_station_role_id(const kf_station *st);
void kf_station_public(const kf_station *st, uint8_t sign_pub[32], uint8_t enc_pub[32]);
/* Sign rec as this station (kf_mfg_record_sign with its key). */
KF_RESULT int kf_station_sign(const kf_station *st, const struct kf_mfg_record *rec, kf_buf *out);
/* Open a key sealed to this station (kf_mfg_open_key with its X25519 key). */
KF_RESULT int kf_station_open_key(const kf_station *st, const char *domain, uint64_t key_id,
                                  const char *context_recipient, const uint8_t in[KF_MFG_SEALED_LEN],
                                  uint8_t key[KF_MFG_KEY_LEN]);

/* Keep the enrolment records of domain (kf_kms_mfg_enroll's answer), after
 * checking that they are M-signed and the first one certifies this station. */
KF_RESULT int kf_station_save_certs(kf_station *st, const char *domain, const uint8_t *records,
                                    size_t len);
/* A role of domain by type (M, O, B) from the saved certificates: its role ID
 * and public keys (enc_pub may be NULL). KF_ERR_MFG_ROLE if not enrolled. */
KF_RESULT int kf_station_domain_role(const kf_station *st, const char *domain,
                                     enum kf_mfg_role_type type, char id[KF_MFG_ROLE_ID_LEN + 1],
                                     uint8_t sign_pub[32], uint8_t enc_pub[32]);

KF_RESULT int kf_station_last_key_id(const kf_station *st, const char *domain, uint64_t *last);
/* Durable; refuses to go back (KF_ERR_MFG_KEY_ID). */
KF_RESULT int kf_station_set_last_key_id(kf_station *st, const char *domain, uint64_t id);

/* File helpers for the station tools (device state files of keyfleet-install):
 * write path atomically and durably with mode 0600 (a temporary file in the
 * same directory, fsync, rename over path, fsync of the directory), and read
 * a regular file (no symlink followed) of at most max bytes into out
 * (allocated here with flags, e.g. KF_BUF_SECRET). KF_ERR_NOT_FOUND, KF_ERR_LIMIT. */
KF_RESULT int kf_station_write_file(const char *path, const uint8_t *data, size_t len);
KF_RESULT int kf_station_read_file(const char *path, size_t max, unsigned flags, kf_buf *out);

#endif
