/*
 * The security module (DESIGN §2): the only component that holds unwrapped
 * root and domain keys. Callers get opaque handles and wrapped blobs.
 *
 *   root key  --wraps-->  domain keys  --wrap-->  every stored secret
 *
 * Backends:
 *   soft   : root key made at init and split by Shamir M-of-N over GF(2^8);
 *            the module starts sealed and is unsealed by any M shares.
 *            Dev mode keeps the whole root key in <dir>/dev-root.key (0600)
 *            and unseals itself.
 *   pkcs11 : root key is a non-extractable, sensitive AES-256 key inside a
 *            PKCS#11 token; unsealing is the token login (user PIN).
 *
 * Blob formats are versioned and self-describing (first byte = format), so a
 * stored blob says how it was made. Stored-secret blobs are AEAD with the
 * associated data binding (object id, domain id, version): a blob moved to
 * another object, domain or version fails to unwrap with KF_ERR_AUTH.
 */
#ifndef KEYFLEET_SECMOD_H
#define KEYFLEET_SECMOD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/error.h"

typedef struct kf_secmod kf_secmod;

/* Bytes for one encoded operator share with its NUL: "kfs1-255-255-" + 64 hex
 * + "-" + 8 hex is 87 characters, so 64 (the first draft) was too small. */
#define KF_SHARE_MAX 128
#define KF_SHARE_BYTES_MAX 32 /* share value bytes (= secret length) */

struct kf_secmod_config {
    enum { KF_SECMOD_SOFT, KF_SECMOD_PKCS11 } backend;
    const char *dir;           /* data directory (soft: holds secmod.meta, dev-root.key) */
    /* pkcs11 only */
    const char *module_path;   /* e.g. /usr/lib/softhsm/libsofthsm2.so */
    const char *token_label;   /* token to use */
    const char *key_label;     /* label of the root key object, default "keyfleet-root" */
};

KF_RESULT int kf_secmod_open(const struct kf_secmod_config *cfg, kf_secmod **out);
void kf_secmod_close(kf_secmod *sm); /* seals and wipes */

/* True if a root key exists (soft: metadata file present; pkcs11: key object found). */
bool kf_secmod_initialised(const kf_secmod *sm);
bool kf_secmod_sealed(const kf_secmod *sm);
/* For status: threshold M, shares N, shares received so far. */
void kf_secmod_progress(const kf_secmod *sm, unsigned *m, unsigned *n, unsigned *received);

/*
 * Soft backend: create the root key, split into n shares with threshold m,
 * write the public metadata (m, n, a key check value) to dir. Shares are
 * returned as printable text (NUL-terminated, < KF_SHARE_MAX) in caller memory
 * shares[i] (i < n), and must be wiped by the caller after handing them out.
 * The module stays sealed after init.
 * dev: m = n = 1 and the single share is also stored as dir/dev-root.key.
 */
KF_RESULT int kf_secmod_init_soft(kf_secmod *sm, unsigned m, unsigned n, bool dev,
                                  char shares[][KF_SHARE_MAX]);
/* Feed one share. Returns KF_OK while more are needed (*done = false), and
 * KF_OK with *done = true once M valid shares rebuilt the root key (checked
 * against the key check value; KF_ERR_SHARES_WRONG otherwise, and the pending
 * shares are discarded). Duplicate share index: KF_ERR_SHARE. */
KF_RESULT int kf_secmod_unseal_share(kf_secmod *sm, const char *share, bool *done);
/* Dev mode: unseal from dir/dev-root.key if it exists. KF_ERR_UNSUPPORTED if
 * the module was not initialised in dev mode, KF_ERR_NOT_FOUND without the
 * file, KF_ERR_PERM if it is a symlink, not ours, or readable by others. */
KF_RESULT int kf_secmod_unseal_dev(kf_secmod *sm);

/* PKCS#11 backend: generate the root key in the token (fails if one exists). */
KF_RESULT int kf_secmod_init_pkcs11(kf_secmod *sm, const char *user_pin);
/* PKCS#11 backend: log in and find the root key. The audit key is the token
 * key named after it: "<key_label minus -root>-audit", by default
 * "keyfleet-audit". Wrong PIN: KF_ERR_PIN. No keys in the token: KF_ERR_NOT_INIT.
 * With cfg->dir set, init also writes secmod.meta there, so "not initialised"
 * can be told from "sealed" before login. */
KF_RESULT int kf_secmod_unseal_pin(kf_secmod *sm, const char *user_pin);

/* Wipe the root key and every loaded domain key. */
void kf_secmod_seal(kf_secmod *sm);

/* ---- Domain keys ---- */
typedef uint32_t kf_domain_handle;
/* Make a fresh 256-bit domain key; return it wrapped under the root key
 * (associated data binds domain_id) into wrapped (owned buffer or fixed). */
KF_RESULT int kf_secmod_domain_key_new(kf_secmod *sm, uint64_t domain_id, kf_buf *wrapped);
/* Load a wrapped domain key; the handle stays valid until seal/close. Loading
 * the same key again returns the same handle. KF_ERR_AUTH if the blob was made
 * for another domain or modified; KF_ERR_LIMIT if the 4096-key table is full.
 * wrap/unwrap refuse a stale or unknown handle (KF_ERR_ARG) and a handle of
 * another domain than domain_id (KF_ERR_DOMAIN_CROSS). */
KF_RESULT int kf_secmod_domain_key_load(kf_secmod *sm, uint64_t domain_id, const uint8_t *wrapped,
                                        size_t wrapped_len, kf_domain_handle *h);

/* ---- Stored secrets ---- */
/* Wrap secret key material for storage; AD = (object_id, domain_id, version). */
KF_RESULT int kf_secmod_wrap(kf_secmod *sm, kf_domain_handle h, uint64_t object_id,
                             uint64_t domain_id, uint32_t version, const uint8_t *secret,
                             size_t secret_len, kf_buf *wrapped);
/* Unwrap into secret (callers pass a KF_BUF_SECRET buffer). KF_ERR_AUTH if moved or modified. */
KF_RESULT int kf_secmod_unwrap(kf_secmod *sm, kf_domain_handle h, uint64_t object_id,
                               uint64_t domain_id, uint32_t version, const uint8_t *wrapped,
                               size_t wrapped_len, kf_buf *secret);

/* ---- Audit checkpoints ---- */
/* HMAC-SHA-256 under the audit key, which never leaves the module: soft
 * derives it from the root key (HKDF, info "keyfleet audit mac"); pkcs11 keeps
 * it as a non-extractable generic secret "keyfleet-audit" in the token and
 * signs with CKM_SHA256_HMAC there. out receives 32 bytes. */
KF_RESULT int kf_secmod_audit_mac(kf_secmod *sm, const uint8_t *data, size_t len,
                                  uint8_t out[32]);

/* ---- Shamir over GF(2^8), exposed for tests and tools ---- */
/* Split secret (len bytes) into n shares of len bytes each with x = 1..n. */
KF_RESULT int kf_shamir_split(const uint8_t *secret, size_t len, unsigned m, unsigned n,
                              uint8_t *shares /* n * len */);
/* Rebuild from k shares with distinct nonzero x values (else KF_ERR_SHARE). */
KF_RESULT int kf_shamir_combine(const uint8_t *xs, const uint8_t *shares /* k * len */, unsigned k,
                                size_t len, uint8_t *secret);
/* GF(2^8) arithmetic (AES field), constant time; inv(0) = 0. */
uint8_t kf_gf256_mul(uint8_t a, uint8_t b);
uint8_t kf_gf256_inv(uint8_t a);

/* ---- Operator share text ----
 * "kfs1-<m>-<x>-<hex share bytes>-<check>", m and x in decimal without
 * leading zeros, hex lowercase (upper case accepted), check = 8 hex digits of
 * the first 4 bytes of SHA-256 over everything before the last '-', so a
 * mistyped share is refused (KF_ERR_SHARE) before it is combined. The CLI can
 * check a share locally with kf_share_decode. y is secret: wipe the struct. */
struct kf_share {
    unsigned m;    /* threshold the share was made for */
    uint8_t x;     /* share index, 1..255 */
    size_t len;    /* bytes in y, 1..KF_SHARE_BYTES_MAX */
    uint8_t y[KF_SHARE_BYTES_MAX];
};
KF_RESULT int kf_share_encode(const struct kf_share *share, char out[KF_SHARE_MAX]);
/* text need not be NUL-terminated; text_len excludes any NUL. */
KF_RESULT int kf_share_decode(const char *text, size_t text_len, struct kf_share *share);

#endif
