/*
 * Manufacturing records (seed EP 0 735 720, DESIGN §4.2, docs/manufacturing.md):
 * role IDs, the signed record envelope, the record body codec, keys sealed to a
 * role (X25519 + HKDF + AES-GCM) and under a Brass archive key (AES-GCM).
 *
 * Shared by every role: Oak and Brass in keyfleetd (src/oak, src/brass),
 * Steel in keyfleet-install and Tin in keyfleet-verify. Pure functions over
 * caller-owned memory; nothing here touches the store or a socket.
 * Every decoder has limits (below), refuses a missing, repeated or foreign
 * field with KF_ERR_MFG_FRAMING, and has a fuzz target (tests/fuzz/fuzz_mfg_*.c).
 */
#ifndef KEYFLEET_MFG_H
#define KEYFLEET_MFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/error.h"

#define KF_MFG_ROLE_ID_LEN 9          /* letter + 8 digits */
#define KF_MFG_MSN_MAX 16             /* manufacturing serial: 1..16 of A-Z 0-9 - */
#define KF_MFG_INDICIA_MAX 16
#define KF_MFG_DOMAIN_MAX 64
#define KF_MFG_KEY_LEN 32             /* device master keys: AES-256 */
#define KF_MFG_SEALED_LEN 80          /* eph_pub(32) || ct(32) || tag(16) */
#define KF_MFG_ARCHIVE_LEN 60         /* nonce(12) || ct(32) || tag(16) */
#define KF_MFG_TEST_TOKENS_LEN 8
#define KF_MFG_SIG_LEN 64
#define KF_MFG_BODY_MAX (64u * 1024u)            /* any record body but TokenKeys */
#define KF_MFG_TOKEN_KEYS_MAX (8u * 1024u * 1024u) /* TokenKeys body */
#define KF_MFG_TOKEN_KEY_ENTRY_LEN 116 /* msn(16, space padded) || [key id]_64 || [period]_32 ||
                                          [registered at]_64 (Unix s) || sealed TK (80) */

enum kf_mfg_role_type {
    KF_MFG_ROLE_AUTHORITY = 1, /* 'M': certifies the domain's roles */
    KF_MFG_ROLE_OAK = 2,       /* 'O': generation */
    KF_MFG_ROLE_BRASS = 3,     /* 'B': verification, one per domain */
    KF_MFG_ROLE_STEEL = 4,     /* 'S': installation station */
    KF_MFG_ROLE_TIN = 5,       /* 'T': remote verifier */
};

enum kf_mfg_record_type {
    KF_MFG_REC_ROLE_CERT = 1,
    KF_MFG_REC_ARCHIVE_NEW = 2,        /* MI3 */
    KF_MFG_REC_DISTRIBUTE = 3,         /* MI4 */
    KF_MFG_REC_INSTALLED = 4,          /* MI7 */
    KF_MFG_REC_INSTALL_FAILED = 5,     /* Steel's Bad report */
    KF_MFG_REC_ARCHIVE_INSTALLED = 6,  /* MI9 */
    KF_MFG_REC_CONFIRM_INSTALLED = 7,  /* MI10 */
    KF_MFG_REC_ARCHIVE_REGISTERED = 8, /* MR3 */
    KF_MFG_REC_CONFIRM_REGISTERED = 9, /* MR4 */
    KF_MFG_REC_TRANSFER = 10,          /* earth Brass -> country Brass */
    KF_MFG_REC_TOKEN_KEYS = 11,        /* Brass -> Tin */
};
#define KF_MFG_REC_MAX 11

enum kf_mfg_status {
    KF_MFG_NEW = 1,
    KF_MFG_INSTALLED = 2,
    KF_MFG_BAD = 3,
    KF_MFG_ACTIVE = 4,
    KF_MFG_OBSOLETE = 5,
    KF_MFG_TRANSFERRED = 6,
};

enum kf_mfg_domain_kind { KF_MFG_VENDOR = 1, KF_MFG_POSTAL = 2, KF_MFG_EARTH = 3 };

/* Which fields a record carries (kf_mfg_record.fields). */
enum kf_mfg_field {
    KF_MFG_F_STATUS = 1u << 0,
    KF_MFG_F_ROLE_ID = 1u << 1,
    KF_MFG_F_ROLE_TYPE = 1u << 2,
    KF_MFG_F_DOMAIN = 1u << 3,
    KF_MFG_F_STEEL_ID = 1u << 4,
    KF_MFG_F_KEY_ID = 1u << 5,
    KF_MFG_F_SIGN_PUB = 1u << 6,
    KF_MFG_F_ENC_PUB = 1u << 7,
    KF_MFG_F_SEALED_KEY = 1u << 8,
    KF_MFG_F_ARCHIVE_KEY = 1u << 9,
    KF_MFG_F_TEST_TOKENS = 1u << 10,
    KF_MFG_F_MSN = 1u << 11,
    KF_MFG_F_INDICIA = 1u << 12,
    KF_MFG_F_COUNTRY = 1u << 13,
    KF_MFG_F_REASON = 1u << 14,
    KF_MFG_F_EVENT_TIME = 1u << 15,
    KF_MFG_F_PERIODS = 1u << 16,    /* PeriodFirst and PeriodLast */
    KF_MFG_F_TABLE = 1u << 17,      /* TokenKeyTable */
};

/*
 * One record body, decoded. The table in docs/manufacturing.md says which
 * fields each type requires and allows; encode refuses a record that does not
 * fit it (KF_ERR_ARG) and decode one that does not (KF_ERR_MFG_FRAMING).
 * table points into the decoded body (valid while that buffer lives).
 */
struct kf_mfg_record {
    uint32_t type;   /* enum kf_mfg_record_type */
    uint32_t fields; /* enum kf_mfg_field bits present */
    uint32_t status; /* enum kf_mfg_status */
    char role_id[KF_MFG_ROLE_ID_LEN + 1];
    uint32_t role_type;
    char domain[KF_MFG_DOMAIN_MAX + 1];
    char steel_id[KF_MFG_ROLE_ID_LEN + 1];
    uint64_t key_id;
    uint8_t sign_pub[32];
    uint8_t enc_pub[32];
    uint8_t sealed_key[KF_MFG_SEALED_LEN];
    uint8_t archive_key[KF_MFG_ARCHIVE_LEN];
    uint8_t test_tokens[KF_MFG_TEST_TOKENS_LEN];
    char msn[KF_MFG_MSN_MAX + 1];
    char indicia[KF_MFG_INDICIA_MAX + 1];
    char country[3];
    int32_t reason;     /* a kf error code */
    int64_t event_time; /* Unix seconds */
    uint32_t period_first, period_last; /* YYYYMM */
    const uint8_t *table;
    size_t table_len;   /* a multiple of KF_MFG_TOKEN_KEY_ENTRY_LEN */
};

/* ---- role IDs ---- */
/* 'M','O','B','S','T' for a role type; 0 if unknown. */
char kf_mfg_role_letter(enum kf_mfg_role_type t);
/* "O00000001": letter + n (1..99,999,999) as 8 digits. */
KF_RESULT int kf_mfg_role_id_format(enum kf_mfg_role_type t, uint32_t n,
                                    char out[KF_MFG_ROLE_ID_LEN + 1]);
/* True if id is a well-formed role ID; *type (may be NULL) receives its type. */
bool kf_mfg_role_id_parse(const char *id, enum kf_mfg_role_type *type);
/* Field syntax checks shared by every decoder and tool. */
bool kf_mfg_msn_valid(const char *msn);       /* 1..16 of A-Z 0-9 - */
bool kf_mfg_indicia_valid(const char *s);     /* same */
bool kf_mfg_country_valid(const char *cc);    /* exactly two of A-Z */

/* ---- record bodies ---- */
/* Append the TTLV bytes of a KeyfleetMfgRecord for rec to out. */
KF_RESULT int kf_mfg_record_encode(const struct kf_mfg_record *rec, kf_buf *out);
/* Decode one body; expect_type 0 = any. */
KF_RESULT int kf_mfg_record_decode(const uint8_t *body, size_t len, uint32_t expect_type,
                                   struct kf_mfg_record *rec);

/* ---- the signed envelope (KeyfleetSignedRecord) ---- */
struct kf_mfg_envelope {
    uint32_t type;
    char signer[KF_MFG_ROLE_ID_LEN + 1];
    const uint8_t *body; /* into the parsed message */
    size_t body_len;
    uint8_t sig[KF_MFG_SIG_LEN];
};
/* Encode rec as a body, sign it with signer's Ed25519 private key, and append
 * the KeyfleetSignedRecord TTLV to out. */
KF_RESULT int kf_mfg_record_sign(const struct kf_mfg_record *rec, const char *signer_id,
                                 const uint8_t sign_priv[32], kf_buf *out);
/* Parse an envelope (no verification). *used receives its length, so several
 * envelopes may follow each other in one buffer (used may be NULL). */
KF_RESULT int kf_mfg_envelope_parse(const uint8_t *msg, size_t len, struct kf_mfg_envelope *env,
                                    size_t *used);
/* KF_ERR_BAD_SIGNATURE unless env's signature verifies under sign_pub. */
KF_RESULT int kf_mfg_envelope_verify(const struct kf_mfg_envelope *env, const uint8_t sign_pub[32]);
/* parse + verify + decode, and the body's type must be the envelope's
 * (and expect_type unless 0). */
KF_RESULT int kf_mfg_record_open(const uint8_t *msg, size_t len, const uint8_t signer_pub[32],
                                 uint32_t expect_type, struct kf_mfg_record *rec);

/* ---- role certificates (RoleCert records signed by the domain's M) ---- */
/* Check cert (an envelope) against the authority's public key: signature,
 * type RoleCert, domain equals domain, role type equals want (0 = any). */
KF_RESULT int kf_mfg_cert_check(const uint8_t *cert, size_t len, const uint8_t authority_pub[32],
                                const char *domain, enum kf_mfg_role_type want,
                                struct kf_mfg_record *rec);

/* ---- keys sealed to a role, and under Brass's archive key ---- */
/* context = domain || 0x00 || [key_id]_64 || recipient_id (docs/manufacturing.md) */
KF_RESULT int kf_mfg_seal_key(const uint8_t recipient_pub[32], const char *domain,
                              uint64_t key_id, const char *recipient_id,
                              const uint8_t key[KF_MFG_KEY_LEN], uint8_t out[KF_MFG_SEALED_LEN]);
/* KF_ERR_AUTH if it was modified or made for another context or recipient. */
KF_RESULT int kf_mfg_open_key(const uint8_t recipient_priv[32], const char *domain,
                              uint64_t key_id, const char *recipient_id,
                              const uint8_t in[KF_MFG_SEALED_LEN], uint8_t key[KF_MFG_KEY_LEN]);
KF_RESULT int kf_mfg_archive_seal(const uint8_t archive_key[32], const char *domain,
                                  uint64_t key_id, const char *brass_id,
                                  const uint8_t key[KF_MFG_KEY_LEN],
                                  uint8_t out[KF_MFG_ARCHIVE_LEN]);
KF_RESULT int kf_mfg_archive_open(const uint8_t archive_key[32], const char *domain,
                                  uint64_t key_id, const char *brass_id,
                                  const uint8_t in[KF_MFG_ARCHIVE_LEN],
                                  uint8_t key[KF_MFG_KEY_LEN]);

/* ---- token key table entries (TokenKeys record) ---- */
struct kf_mfg_token_key_entry {
    char msn[KF_MFG_MSN_MAX + 1];
    uint64_t key_id;
    uint32_t period;        /* YYYYMM */
    int64_t registered_at;  /* Unix seconds: pieces dated before it are refused */
    uint8_t sealed[KF_MFG_SEALED_LEN]; /* TK sealed to the Tin, context key_id = key_id,
                                          domain = "<domain>/<period>" */
};
void kf_mfg_token_key_entry_put(const struct kf_mfg_token_key_entry *e,
                                uint8_t out[KF_MFG_TOKEN_KEY_ENTRY_LEN]);
KF_RESULT int kf_mfg_token_key_entry_get(const uint8_t in[KF_MFG_TOKEN_KEY_ENTRY_LEN],
                                         struct kf_mfg_token_key_entry *e);

#endif
