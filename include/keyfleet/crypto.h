/*
 * Cryptographic primitives, all delegated to nettle (and GnuTLS where nettle
 * 3.8 lacks something). No primitive is written here; RFC 5649 padding and
 * RSA-OAEP encoding are thin compositions of nettle calls, documented where
 * they stand. Every function returns KF_OK or a negative kf error.
 * Key lengths for AES: 16, 24 or 32 bytes.
 */
#ifndef KEYFLEET_CRYPTO_H
#define KEYFLEET_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/error.h"

#define KF_GCM_TAG_LEN 16
#define KF_GCM_IV_LEN 12
#define KF_SHA256_LEN 32
#define KF_CMAC_LEN 16

/* ---- AES-GCM (NIST SP 800-38D) ---- */
/* ct has pt_len bytes; tag has KF_GCM_TAG_LEN bytes. iv_len >= 1 (12 recommended). */
KF_RESULT int kf_aes_gcm_seal(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                              const uint8_t *ad, size_t ad_len, const uint8_t *pt, size_t pt_len,
                              uint8_t *ct, uint8_t tag[KF_GCM_TAG_LEN]);
/* Returns KF_ERR_AUTH (and wipes pt) if the tag does not verify. */
KF_RESULT int kf_aes_gcm_open(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                              const uint8_t *ad, size_t ad_len, const uint8_t *ct, size_t ct_len,
                              const uint8_t tag[KF_GCM_TAG_LEN], uint8_t *pt);

/* ---- AES key wrap, RFC 3394 (input a multiple of 8, >= 16; out = in + 8) ---- */
KF_RESULT int kf_aes_kw_wrap(const uint8_t *kek, size_t kek_len, const uint8_t *in, size_t in_len,
                             uint8_t *out);
KF_RESULT int kf_aes_kw_unwrap(const uint8_t *kek, size_t kek_len, const uint8_t *in,
                               size_t in_len, uint8_t *out);
/* ---- AES key wrap with padding, RFC 5649 (any in_len >= 1) ---- */
/* out needs kf_aes_kwp_wrapped_len(in_len) bytes. */
size_t kf_aes_kwp_wrapped_len(size_t in_len);
KF_RESULT int kf_aes_kwp_wrap(const uint8_t *kek, size_t kek_len, const uint8_t *in, size_t in_len,
                              uint8_t *out);
/* out needs in_len - 8 bytes; *out_len receives the unpadded length. */
KF_RESULT int kf_aes_kwp_unwrap(const uint8_t *kek, size_t kek_len, const uint8_t *in,
                                size_t in_len, uint8_t *out, size_t *out_len);

/* ---- AES-CBC (PKCS#7 padding is the caller's) and AES-CTR, for KMIP Encrypt ---- */
KF_RESULT int kf_aes_cbc_encrypt(const uint8_t *key, size_t key_len, const uint8_t iv[16],
                                 const uint8_t *in, size_t len, uint8_t *out);
KF_RESULT int kf_aes_cbc_decrypt(const uint8_t *key, size_t key_len, const uint8_t iv[16],
                                 const uint8_t *in, size_t len, uint8_t *out);
KF_RESULT int kf_aes_ctr(const uint8_t *key, size_t key_len, const uint8_t ctr[16],
                         const uint8_t *in, size_t len, uint8_t *out);

/* ---- AES-ECB (SP 800-38A; no IV; len a multiple of 16, padding is the caller's) ---- */
KF_RESULT int kf_aes_ecb_encrypt(const uint8_t *key, size_t key_len, const uint8_t *in, size_t len,
                                 uint8_t *out);
KF_RESULT int kf_aes_ecb_decrypt(const uint8_t *key, size_t key_len, const uint8_t *in, size_t len,
                                 uint8_t *out);

/* ---- AES-GCM with a truncated tag (SP 800-38D 5.2.1.2): tag_len 4, 8 or 12-16 bytes ---- */
KF_RESULT int kf_aes_gcm_seal_ex(const uint8_t *key, size_t key_len, const uint8_t *iv,
                                 size_t iv_len, const uint8_t *ad, size_t ad_len,
                                 const uint8_t *pt, size_t pt_len, uint8_t *ct, uint8_t *tag,
                                 size_t tag_len);
KF_RESULT int kf_aes_gcm_open_ex(const uint8_t *key, size_t key_len, const uint8_t *iv,
                                 size_t iv_len, const uint8_t *ad, size_t ad_len,
                                 const uint8_t *ct, size_t ct_len, const uint8_t *tag,
                                 size_t tag_len, uint8_t *pt);

/*
 * AES-GCM encryption in parts (KMIP streamed Encrypt). Every part but the
 * last must be a multiple of 16 bytes (KF_ERR_ARG otherwise); the tag ends
 * the stream. Free with kf_aes_gcm_stream_free (wipes the key schedule).
 */
typedef struct kf_aes_gcm_stream kf_aes_gcm_stream;
KF_RESULT int kf_aes_gcm_stream_start(const uint8_t *key, size_t key_len, const uint8_t *iv,
                                      size_t iv_len, const uint8_t *ad, size_t ad_len,
                                      kf_aes_gcm_stream **out);
KF_RESULT int kf_aes_gcm_stream_encrypt(kf_aes_gcm_stream *s, const uint8_t *in, size_t len,
                                        uint8_t *out);
KF_RESULT int kf_aes_gcm_stream_tag(kf_aes_gcm_stream *s, uint8_t *tag, size_t tag_len);
void kf_aes_gcm_stream_free(kf_aes_gcm_stream *s);

/* ---- Triple DES (TDEA, SP 800-67), 24-byte keys (K1||K2||K3), 8-byte blocks ---- */
#define KF_DES3_KEY_LEN 24
#define KF_DES3_BLOCK 8
/* Sets the odd parity bit of each key byte (key generation). */
void kf_des3_fix_parity(uint8_t *key, size_t len);
/* ECB when iv is NULL, else CBC; len a multiple of 8. Weak keys give KF_ERR_KEY_SIZE. */
KF_RESULT int kf_des3_encrypt(const uint8_t *key, size_t key_len, const uint8_t *iv,
                              const uint8_t *in, size_t len, uint8_t *out);
KF_RESULT int kf_des3_decrypt(const uint8_t *key, size_t key_len, const uint8_t *iv,
                              const uint8_t *in, size_t len, uint8_t *out);

/* ---- Hashes and MACs ---- */
enum kf_hash { KF_HASH_SHA1 = 1, KF_HASH_SHA224, KF_HASH_SHA256, KF_HASH_SHA384, KF_HASH_SHA512 };
size_t kf_hash_len(enum kf_hash h); /* 0 if unknown */
KF_RESULT int kf_hash(enum kf_hash h, const uint8_t *msg, size_t len, uint8_t *out);
KF_RESULT int kf_sha256(const uint8_t *msg, size_t len, uint8_t out[KF_SHA256_LEN]);
KF_RESULT int kf_hmac(enum kf_hash h, const uint8_t *key, size_t key_len, const uint8_t *msg,
                      size_t len, uint8_t *out);
KF_RESULT int kf_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                             uint8_t out[KF_SHA256_LEN]);
/* AES-CMAC, RFC 4493 / SP 800-38B; key 16 or 32 bytes. */
KF_RESULT int kf_aes_cmac(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                          uint8_t out[KF_CMAC_LEN]);

/* ---- Key derivation ---- */
/* HKDF, RFC 5869, with HMAC-SHA-256. salt may be NULL (then zeros). out_len <= 255*32. */
KF_RESULT int kf_hkdf_sha256(const uint8_t *salt, size_t salt_len, const uint8_t *ikm,
                             size_t ikm_len, const uint8_t *info, size_t info_len, uint8_t *out,
                             size_t out_len);
/*
 * SP 800-108 KDF in counter mode with AES-CMAC as the PRF, the counter a
 * 32-bit big-endian integer placed before the fixed input data:
 *   K(i) = CMAC(key, [i]_32 || fixed_input), i = 1.., out = K(1) || K(2) ... truncated.
 * This is the CAVP "CTRLOCATION=BEFORE_FIXED, RLEN=32_BITS" form.
 */
KF_RESULT int kf_kdf108_ctr_cmac(const uint8_t *key, size_t key_len, const uint8_t *fixed_input,
                                 size_t fixed_len, uint8_t *out, size_t out_len);
/* The SP 800-108 fixed input Label || 0x00 || Context || [L]_32 (L = out_len*8), then the KDF. */
KF_RESULT int kf_kdf108_derive(const uint8_t *key, size_t key_len, const char *label,
                               const uint8_t *context, size_t context_len, uint8_t *out,
                               size_t out_len);

/* ---- Ed25519, RFC 8032 ---- */
KF_RESULT int kf_ed25519_public(const uint8_t priv[32], uint8_t pub[32]);
KF_RESULT int kf_ed25519_sign(const uint8_t priv[32], const uint8_t *msg, size_t len,
                              uint8_t sig[64]);
/* KF_ERR_BAD_SIGNATURE if it does not verify. */
KF_RESULT int kf_ed25519_verify(const uint8_t pub[32], const uint8_t *msg, size_t len,
                                const uint8_t sig[64]);

/* ---- X25519, RFC 7748 ---- */
KF_RESULT int kf_x25519_public(const uint8_t priv[32], uint8_t pub[32]);
/* Refuses an all-zero shared secret (low-order peer point) with KF_ERR_CRYPTO. */
KF_RESULT int kf_x25519(const uint8_t priv[32], const uint8_t peer_pub[32], uint8_t shared[32]);

/* ---- ECDSA P-256 (FIPS 186-4) ---- */
/* priv: 32-byte big-endian scalar; pub: 65-byte uncompressed point 04||X||Y; sig: r||s, 64 bytes. */
KF_RESULT int kf_p256_generate(uint8_t priv[32], uint8_t pub[65]);
KF_RESULT int kf_p256_public(const uint8_t priv[32], uint8_t pub[65]);
/* Hashes msg with SHA-256, then signs/verifies. */
KF_RESULT int kf_p256_sign(const uint8_t priv[32], const uint8_t *msg, size_t len, uint8_t sig[64]);
KF_RESULT int kf_p256_verify(const uint8_t pub[65], const uint8_t *msg, size_t len,
                             const uint8_t sig[64]);
/* Same on a precomputed digest (any length; FIPS 186-4 truncation). */
KF_RESULT int kf_p256_sign_digest(const uint8_t priv[32], const uint8_t *digest, size_t dlen,
                                  uint8_t sig[64]);
KF_RESULT int kf_p256_verify_digest(const uint8_t pub[65], const uint8_t *digest, size_t dlen,
                                    const uint8_t sig[64]);

/* ---- RSA 2048-4096 (RFC 8017) ---- */
/*
 * Keys travel as DER: private keys as PKCS#1 RSAPrivateKey, public keys as
 * PKCS#1 RSAPublicKey (the KMIP "PKCS#1" key format). A kf_rsa_key holds the
 * parsed key; free it with kf_rsa_free (wipes private parts).
 */
typedef struct kf_rsa_key kf_rsa_key;
KF_RESULT int kf_rsa_generate(unsigned bits, kf_rsa_key **out);
KF_RESULT int kf_rsa_import_private(const uint8_t *der, size_t len, kf_rsa_key **out);
KF_RESULT int kf_rsa_import_public(const uint8_t *der, size_t len, kf_rsa_key **out);
/* *der is malloc'ed (private: in secure memory, free with kf_secmem_free); caller frees. */
KF_RESULT int kf_rsa_export_private(const kf_rsa_key *k, uint8_t **der, size_t *len);
KF_RESULT int kf_rsa_export_public(const kf_rsa_key *k, uint8_t **der, size_t *len);
/*
 * Import from separate big-endian unsigned integers (KMIP Transparent RSA
 * keys, published test vectors). A private key needs d, p, q, dp, dq and
 * qinv = q^-1 mod p; leave d.data NULL for a public key.
 * Imported moduli may be 1024-8192 bits (legacy keys and vectors); generation
 * accepts 2048-4096.
 */
struct kf_rsa_integer {
    const uint8_t *data;
    size_t len;
};
struct kf_rsa_parts {
    struct kf_rsa_integer n, e, d, p, q, dp, dq, qinv;
};
KF_RESULT int kf_rsa_import_parts(const struct kf_rsa_parts *parts, kf_rsa_key **out);
bool kf_rsa_has_private(const kf_rsa_key *k);
size_t kf_rsa_modulus_len(const kf_rsa_key *k); /* bytes */
void kf_rsa_free(kf_rsa_key *k);
/* Signatures over msg hashed with h; sig has kf_rsa_modulus_len bytes. */
KF_RESULT int kf_rsa_pkcs1_sign(const kf_rsa_key *k, enum kf_hash h, const uint8_t *msg,
                                size_t len, uint8_t *sig);
KF_RESULT int kf_rsa_pkcs1_verify(const kf_rsa_key *k, enum kf_hash h, const uint8_t *msg,
                                  size_t len, const uint8_t *sig, size_t sig_len);
/* PSS with MGF1 over the same hash and salt length = hash length. */
KF_RESULT int kf_rsa_pss_sign(const kf_rsa_key *k, enum kf_hash h, const uint8_t *msg, size_t len,
                              uint8_t *sig);
KF_RESULT int kf_rsa_pss_verify(const kf_rsa_key *k, enum kf_hash h, const uint8_t *msg,
                                size_t len, const uint8_t *sig, size_t sig_len);
/* PSS verification with a given salt length (RFC 8017 9.1.2); kf_rsa_pss_max_salt_len is
 * the largest the key allows (emLen - hLen - 2), which some signers use. */
KF_RESULT int kf_rsa_pss_verify_ex(const kf_rsa_key *k, enum kf_hash h, size_t salt_len,
                                   const uint8_t *msg, size_t len, const uint8_t *sig,
                                   size_t sig_len);
size_t kf_rsa_pss_max_salt_len(const kf_rsa_key *k, enum kf_hash h); /* 0 if none fits */
/* OAEP with the label hash h and MGF1 over mgf_h (RFC 8017 A.2.1 lets them differ). */
KF_RESULT int kf_rsa_oaep_encrypt_ex(const kf_rsa_key *k, enum kf_hash h, enum kf_hash mgf_h,
                                     const uint8_t *label, size_t label_len, const uint8_t *msg,
                                     size_t len, uint8_t *out);
KF_RESULT int kf_rsa_oaep_decrypt_ex(const kf_rsa_key *k, enum kf_hash h, enum kf_hash mgf_h,
                                     const uint8_t *label, size_t label_len, const uint8_t *in,
                                     size_t in_len, uint8_t *out, size_t *out_len);
/* OAEP with MGF1 over h, empty label unless given. out has kf_rsa_modulus_len bytes. */
KF_RESULT int kf_rsa_oaep_encrypt(const kf_rsa_key *k, enum kf_hash h, const uint8_t *label,
                                  size_t label_len, const uint8_t *msg, size_t len, uint8_t *out);
/* *out_len receives the message length; out needs kf_rsa_modulus_len bytes. */
KF_RESULT int kf_rsa_oaep_decrypt(const kf_rsa_key *k, enum kf_hash h, const uint8_t *label,
                                  size_t label_len, const uint8_t *in, size_t in_len,
                                  uint8_t *out, size_t *out_len);

/* ---- Randomness for crypto internals ---- */
/*
 * Signatures, key generation and OAEP need random bytes. The built-in default
 * is GnuTLS's DRBG (gnutls_rnd with GNUTLS_RND_KEY), so kf_crypto links on its
 * own. The rng module installs its health-tested kf_rng_bytes (see rng.h) by
 * calling kf_crypto_set_random(adapter, NULL) at start-up: no weak symbols,
 * and the dependency points from rng to crypto only. Tests may install a
 * fixed source to reproduce published vectors. fn == NULL restores the
 * default. Set the source before starting threads; it is not locked.
 */
typedef int (*kf_crypto_random_fn)(void *ctx, uint8_t *out, size_t len);
void kf_crypto_set_random(kf_crypto_random_fn fn, void *ctx);
KF_RESULT int kf_crypto_random(uint8_t *out, size_t len);

#endif
