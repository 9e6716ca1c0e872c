/*
 * libkeyfleet-device, postage device side (seed EP 0 735 720, DESIGN §4.2,
 * docs/manufacturing.md): holding one master key per domain (vendor and
 * postal), answering the installation check (MI5/MI6), making the
 * registration record (MR1), printing tokens, and the token arithmetic that
 * keyfleetd, keyfleet-install and keyfleet-verify reuse so that there is one
 * definition of it.
 *
 * Same rules as include/keyfleet/device.h: nettle and src/base only, no
 * allocation, storage through a caller callback, KF_OK or a negative kf error.
 */
#ifndef KEYFLEET_METER_H
#define KEYFLEET_METER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/error.h"

#define KFD_METER_KEY_LEN 32
#define KFD_METER_DOMAINS 4          /* master key slots: vendor + postal, room for two more */
#define KFD_METER_MSN_MAX 16
#define KFD_METER_INDICIA_MAX 16
#define KFD_METER_DOMAIN_MAX 64
#define KFD_METER_STATE_MAX 1024     /* largest encoded KeyfleetMeterState */
#define KFD_REGISTRATION_MAX 1024    /* largest encoded KeyfleetRegistration */
#define KFD_TEST_TOKENS_LEN 8
#define KFD_TXDATA_LEN 40            /* canonical transaction data */
#define KFD_TOKEN_LEN 6              /* 48-bit token */
#define KFD_PIECE_LEN 46             /* canonical data || token: one KeyfleetPieces entry */
#define KFD_PIECE_TEXT_MAX 128       /* printed indicium line, NUL included */

/* ---- the arithmetic (stateless) ---- */
/* CMAC(K, "KF-TEST-PATTERN1")[0..4) || CMAC(K, "KF-TEST-PATTERN2")[0..4) */
KF_RESULT int kfd_test_tokens(const uint8_t key[KFD_METER_KEY_LEN],
                              uint8_t out[KFD_TEST_TOKENS_LEN]);
/* TK_period = KDF(K, "keyfleet token v1", domain || 0x00 || [period]_32), period YYYYMM. */
KF_RESULT int kfd_token_key(const uint8_t key[KFD_METER_KEY_LEN], const char *domain,
                            uint32_t period, uint8_t tk[KFD_METER_KEY_LEN]);
/* The registration MAC key: KDF(K, "keyfleet register v1", domain). */
KF_RESULT int kfd_registration_key(const uint8_t key[KFD_METER_KEY_LEN], const char *domain,
                                   uint8_t rk[KFD_METER_KEY_LEN]);

struct kfd_txdata {
    uint32_t date;           /* YYYYMMDD, a real calendar date 2000-01-01..2099-12-31 */
    uint32_t value;          /* postage in the smallest currency unit */
    uint32_t piece_count;
    char postal_code[11];    /* 1..10 of A-Z 0-9 - (space padded on the wire) */
    char msn[KFD_METER_MSN_MAX + 1];
};
/* Validates (KF_ERR_METER_FIELD) and writes the 40-byte canonical form. */
KF_RESULT int kfd_txdata_encode(const struct kfd_txdata *tx, uint8_t out[KFD_TXDATA_LEN]);
/* The inverse: version, padding, alphabet and date all checked (KF_ERR_METER_FIELD). */
KF_RESULT int kfd_txdata_decode(const uint8_t in[KFD_TXDATA_LEN], struct kfd_txdata *tx);
/* token = CMAC(tk, canonical)[0..6) */
KF_RESULT int kfd_token_compute(const uint8_t tk[KFD_METER_KEY_LEN],
                                const uint8_t canonical[KFD_TXDATA_LEN],
                                uint8_t token[KFD_TOKEN_LEN]);
/* A printed piece: the data plus one token per domain (vendor, postal). */
struct kfd_piece {
    struct kfd_txdata tx;
    uint8_t vendor_token[KFD_TOKEN_LEN];
    uint8_t postal_token[KFD_TOKEN_LEN];
};
/* "KF1 <msn> <YYYYMMDD> <value> <count> <postal code> <vendor token> <postal token>",
 * tokens as 10 Crockford base-32 digits + a mod-37 check symbol. */
KF_RESULT int kfd_piece_format(const struct kfd_piece *p, char out[KFD_PIECE_TEXT_MAX]);
/* KF_ERR_TOKEN_TEXT on any syntax or check-symbol error, KF_ERR_METER_FIELD on a bad field. */
KF_RESULT int kfd_piece_parse(const char *line, struct kfd_piece *p);

/* ---- the device ---- */
struct kfd_meter_slot {
    bool used;
    char domain[KFD_METER_DOMAIN_MAX + 1];
    uint64_t key_id;
    uint8_t key[KFD_METER_KEY_LEN];
};
/* Persist the encoded state (KeyfleetMeterState TTLV, holds keys: secure storage). */
typedef int (*kfd_meter_store_fn)(void *ctx, const uint8_t *state, size_t len);
struct kfd_meter {
    char msn[KFD_METER_MSN_MAX + 1];
    char country[3];                     /* "" until registered */
    char indicia[KFD_METER_INDICIA_MAX + 1];
    int64_t registered_at;               /* the registration date (Unix s), 0 = not registered */
    uint64_t piece_count;                /* last piece printed; never goes back */
    struct kfd_meter_slot slot[KFD_METER_DOMAINS];
    kfd_meter_store_fn store;
    void *store_ctx;
};
/* A fresh device with its manufacturing serial number (from its label). */
KF_RESULT int kfd_meter_init(struct kfd_meter *m, const char *msn, kfd_meter_store_fn store,
                             void *store_ctx);
/* Load a saved state (KF_ERR_DEVICE_STATE if malformed); store callback as in init. */
KF_RESULT int kfd_meter_load(struct kfd_meter *m, const uint8_t *state, size_t len,
                             kfd_meter_store_fn store, void *store_ctx);
KF_RESULT int kfd_meter_encode(const struct kfd_meter *m, kf_buf *out); /* out KF_BUF_SECRET */
/* Wipe every key in m. */
void kfd_meter_wipe(struct kfd_meter *m);

/*
 * MI5/MI6: install the domain's master key and persist; then answer the
 * evidence: the MSN (m->msn) and test tokens computed from the stored key.
 * KF_ERR_METER_INSTALLED if the domain already has a key (once only),
 * KF_ERR_DEVICE_STORAGE if persisting fails (nothing installed).
 */
KF_RESULT int kfd_meter_install(struct kfd_meter *m, const char *domain, uint64_t key_id,
                                const uint8_t key[KFD_METER_KEY_LEN],
                                uint8_t test_tokens[KFD_TEST_TOKENS_LEN]);
/*
 * MR1: set country (once: KF_ERR_METER_COUNTRY if another is already set),
 * indicia number and registration date, and append the KeyfleetRegistration
 * TTLV with one RegistrationMac per held domain key (each MAC names the slot's
 * domain and key ID as they were). An earth device (earth_domain names one of
 * its slots) then renames that slot to country_domain: its postal key now
 * belongs to the country (docs/manufacturing.md); both may be NULL otherwise.
 * Persisted before mr1 is written.
 */
KF_RESULT int kfd_meter_register(struct kfd_meter *m, const char *country, const char *indicia,
                                 int64_t date, const char *earth_domain,
                                 const char *country_domain, kf_buf *mr1);
/* Decoded MR1 (for keyfleetd): the fields and one MAC per domain. */
struct kfd_registration {
    char msn[KFD_METER_MSN_MAX + 1];
    char indicia[KFD_METER_INDICIA_MAX + 1];
    char country[3];
    int64_t date;
    size_t nmacs;
    struct {
        char domain[KFD_METER_DOMAIN_MAX + 1];
        uint64_t key_id;
        uint8_t mac[16];
    } mac[KFD_METER_DOMAINS];
};
KF_RESULT int kfd_registration_decode(const uint8_t *mr1, size_t len, struct kfd_registration *r);
/* The MAC keyfleetd checks: CMAC(registration key, canonical) (docs/manufacturing.md). */
KF_RESULT int kfd_registration_mac(const uint8_t key[KFD_METER_KEY_LEN],
                                   const struct kfd_registration *r, const char *domain,
                                   uint64_t key_id, uint8_t mac[16]);
/*
 * Print one piece: next piece count (persisted before the tokens are made),
 * the tokens of vendor_domain and postal_domain for the date's period.
 * KF_ERR_METER_NOT_REGISTERED before registration; KF_ERR_METER_NO_KEY.
 */
KF_RESULT int kfd_meter_print(struct kfd_meter *m, const char *vendor_domain,
                              const char *postal_domain, uint32_t date, uint32_t value,
                              const char *postal_code, struct kfd_piece *out);

#endif
