/*
 * Inside the security module: the state shared by the common code
 * (secmod.c: state checks, domain key table, stored-secret wrap) and the
 * backends (soft.c, pkcs11.c). Nothing outside src/secmod includes this.
 */
#ifndef KEYFLEET_SECMOD_INTERNAL_H
#define KEYFLEET_SECMOD_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "keyfleet/crypto.h"
#include "keyfleet/secmod.h"

#define SECMOD_KEY_LEN 32
#define SECMOD_KCV_LEN 16
#define SECMOD_DOMAIN_SLOTS 4096 /* loaded domain keys; handles index this table */
#define SECMOD_SLOT_BITS 12      /* 2^12 = SECMOD_DOMAIN_SLOTS */

/* Blob formats: the first byte says how a blob was made. */
#define DOMAIN_BLOB_SOFT_GCM 0x01   /* AES-256-GCM under HKDF(root, "keyfleet domain-key wrap") */
#define DOMAIN_BLOB_TOKEN_GCM 0x02  /* AES-256-GCM inside the PKCS#11 token under the root key */
#define OBJECT_BLOB_GCM 0x01        /* AES-256-GCM under the domain key */
#define DOMAIN_BLOB_LEN (1 + KF_GCM_IV_LEN + SECMOD_KEY_LEN + KF_GCM_TAG_LEN)
#define DOMAIN_WRAP_AD "kf-domain-v1"
#define OBJECT_WRAP_AD "kf-object-v1"

/* Keys derived from the soft root key while unsealed, in secure memory. */
struct soft_keys {
    uint8_t root[SECMOD_KEY_LEN];
    uint8_t domain_wrap[SECMOD_KEY_LEN];
    uint8_t audit[SECMOD_KEY_LEN];
};

/* Shares received so far while unsealing, in secure memory. */
struct pending_shares {
    unsigned count;
    uint8_t xs[255];
    uint8_t ys[255][SECMOD_KEY_LEN];
};

struct domain_slot {
    uint8_t key[SECMOD_KEY_LEN];
    uint64_t domain_id;
    bool used;
};

struct p11_state; /* pkcs11.c */

struct kf_secmod {
    /* Writers: open/close, init, unseal, seal, domain key load.
     * Readers: everything that only uses loaded keys. */
    pthread_rwlock_t lock;
    int backend;
    char *dir;
    char *module_path;
    char *token_label;
    char *key_label;

    bool initialised;
    bool sealed;
    bool dev;
    unsigned m, n;
    uint8_t kcv[SECMOD_KCV_LEN];

    struct soft_keys *soft;         /* soft, unsealed */
    struct pending_shares *pending; /* soft, while collecting shares */
    struct p11_state *p11;          /* pkcs11 */

    struct domain_slot *slots; /* secure memory, allocated on first load */
    uint32_t epoch;            /* changes at every seal so old handles die */
};

/* Common (secmod.c). */
int secmod_usable(const kf_secmod *sm); /* KF_OK, KF_ERR_NOT_INIT or KF_ERR_SEALED */
void secmod_wipe_live_keys(kf_secmod *sm);
void domain_wrap_ad(uint64_t domain_id, uint8_t ad[sizeof(DOMAIN_WRAP_AD) - 1 + 8]);

/* Files (files.c). */
struct secmod_meta {
    int backend;
    bool dev;
    unsigned m, n;
    uint8_t kcv[SECMOD_KCV_LEN];
};
#define SECMOD_META_FILE "secmod.meta"
#define SECMOD_DEV_KEY_FILE "dev-root.key"
/* KF_ERR_NOT_FOUND if absent. */
int secmod_meta_read(const char *dir, struct secmod_meta *meta);
/* Atomic, 0600, never replaces an existing file (KF_ERR_ALREADY_INIT). */
int secmod_meta_write(const char *dir, const struct secmod_meta *meta);
/* Create dir/name with mode 0600 atomically; KF_ERR_EXISTS if present. */
int secmod_file_create(const char *dir, const char *name, const uint8_t *data, size_t len);
/* Read a small secret file that must be a regular 0600 file owned by us. */
int secmod_secret_file_read(const char *dir, const char *name, uint8_t *out, size_t cap,
                            size_t *len);

/* Soft backend (soft.c). */
int soft_init(kf_secmod *sm, unsigned m, unsigned n, bool dev, char shares[][KF_SHARE_MAX]);
int soft_unseal_share(kf_secmod *sm, const char *share, size_t share_len, bool *done);
void soft_seal(kf_secmod *sm);
int soft_domain_wrap(kf_secmod *sm, uint64_t domain_id, const uint8_t key[SECMOD_KEY_LEN],
                     kf_buf *out);
int soft_domain_unwrap(kf_secmod *sm, uint64_t domain_id, const uint8_t *blob, size_t len,
                       uint8_t key[SECMOD_KEY_LEN]);
int soft_audit_mac(kf_secmod *sm, const uint8_t *data, size_t len, uint8_t out[32]);

/* PKCS#11 backend (pkcs11.c). */
int p11_open(kf_secmod *sm);
void p11_close(kf_secmod *sm);
int p11_init(kf_secmod *sm, const char *pin);
int p11_unseal(kf_secmod *sm, const char *pin);
void p11_seal(kf_secmod *sm);
int p11_domain_wrap(kf_secmod *sm, uint64_t domain_id, const uint8_t key[SECMOD_KEY_LEN],
                    kf_buf *out);
int p11_domain_unwrap(kf_secmod *sm, uint64_t domain_id, const uint8_t *blob, size_t len,
                      uint8_t key[SECMOD_KEY_LEN]);
int p11_audit_mac(kf_secmod *sm, const uint8_t *data, size_t len, uint8_t out[32]);

#endif
