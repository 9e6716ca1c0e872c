/*
 * Helpers shared by the files of the crypto module; not part of the public API.
 */
#ifndef KF_CRYPTO_INTERNAL_H
#define KF_CRYPTO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <gmp.h>
#include <nettle/aes.h>
#include <nettle/nettle-meta.h>
#include <nettle/nettle-types.h>
#include <nettle/rsa.h>
#include <nettle/sha2.h>

#include "keyfleet/crypto.h"

/*
 * One AES key schedule of any of the three sizes, with the matching nettle
 * block functions, so CBC, CTR and key wrap can be written once for all sizes.
 * Wipe with kf_aes_key_clear.
 */
struct kf_aes_key {
    union {
        struct aes128_ctx k128;
        struct aes192_ctx k192;
        struct aes256_ctx k256;
    } ctx;
    nettle_cipher_func *encrypt;
    nettle_cipher_func *decrypt;
};

/* KF_ERR_KEY_SIZE unless key_len is 16, 24 or 32. */
KF_RESULT int kf_aes_key_set_encrypt(struct kf_aes_key *k, const uint8_t *key, size_t key_len);
KF_RESULT int kf_aes_key_set_decrypt(struct kf_aes_key *k, const uint8_t *key, size_t key_len);
void kf_aes_key_clear(struct kf_aes_key *k);

/* The nettle descriptor for a hash, or NULL if unknown. */
const struct nettle_hash *kf_nettle_hash(enum kf_hash h);

/*
 * nettle wants a void-returning random function; this one draws from
 * kf_crypto_random and records a failure in the context so the caller can
 * discard whatever nettle computed from the (then filler) bytes.
 */
struct kf_random_ctx {
    int failed;
    uint32_t filler; /* see kf_nettle_random */
};
void kf_nettle_random(void *ctx, size_t len, uint8_t *out);

/*
 * GMP frees limbs without wiping them; every mpz that held a secret goes
 * through this instead of mpz_clear.
 */
void kf_mpz_clear_secret(mpz_t x);

/* A parsed RSA key; the private half is set only when has_private. */
struct kf_rsa_key {
    struct rsa_public_key pub;
    struct rsa_private_key priv;
    bool has_private;
};

/* SHA-512's state is the largest of the hashes offered, so it holds any of them. */
typedef struct sha512_ctx kf_any_hash_state;
#define KF_MAX_DIGEST_SIZE SHA512_DIGEST_SIZE

#endif
