/*
 * The device protocol's keys and its three primitives, all through nettle:
 * the SP 800-108 KDF (counter mode, AES-256-CMAC), AES-256-CCM and
 * AES-256-CMAC. Every function wipes what it derived on the stack.
 */
#ifndef KFD_KEYS_H
#define KFD_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/device.h"

#define KFD_LABEL_PAIR "keyfleet pair v1"
#define KFD_LABEL_ACK "keyfleet ack v1"
#define KFD_LABEL_SESSION "keyfleet session v1"
#define KFD_LABEL_CONFIRM "keyfleet confirm v1"

/* Wipe n bytes at p in a way the compiler keeps (nettle has no wipe). */
void kfd_wipe(void *p, size_t n);
/* Constant-time equality of two n-byte strings. */
bool kfd_equal(const void *a, const void *b, size_t n);
void kfd_be64(uint8_t out[8], uint64_t v);

/* SP 800-108 counter mode, PRF AES-256-CMAC, r = 32, counter before the
 * fixed input: out = K(1) || K(2) || ... truncated to out_len. */
KF_RESULT int kfd_kdf_ctr(const uint8_t key[KFD_KEY_LEN], const uint8_t *fixed, size_t fixed_len,
                          uint8_t *out, size_t out_len);

/* The protocol's derived keys (docs/pairing.md, "Parties and keys"). */
KF_RESULT int kfd_msk(const uint8_t mkek[KFD_KEY_LEN], const char *id, uint64_t counter,
                      uint8_t msk[KFD_KEY_LEN]);
KF_RESULT int kfd_ak(const uint8_t mkek[KFD_KEY_LEN], const char *id, uint8_t ak[KFD_KEY_LEN]);
KF_RESULT int kfd_skek(const uint8_t kek[KFD_KEY_LEN], uint64_t kek_id, const char *sender,
                       uint8_t skek[KFD_KEY_LEN]);
KF_RESULT int kfd_ck(const uint8_t sk[KFD_KEY_LEN], uint64_t kek_id, uint64_t seq,
                     uint8_t ck[KFD_KEY_LEN]);

/* AES-256-CCM (SP 800-38C), 12-byte nonce, 16-byte tag: sealed = ciphertext ||
 * tag (len + KFD_TAG_LEN bytes). len is at most 2^24 - 1 (L = 3). */
void kfd_aead_seal(const uint8_t key[KFD_KEY_LEN], const uint8_t nonce[KFD_NONCE_LEN],
                   const uint8_t *aad, size_t aad_len, const uint8_t *plain, size_t len,
                   uint8_t *sealed);
/* Opens sealed (sealed_len >= KFD_TAG_LEN) into plain; on a bad tag returns
 * KF_ERR_AUTH with plain wiped. */
KF_RESULT int kfd_aead_open(const uint8_t key[KFD_KEY_LEN], const uint8_t nonce[KFD_NONCE_LEN],
                            const uint8_t *aad, size_t aad_len, const uint8_t *sealed,
                            size_t sealed_len, uint8_t *plain);
/* AES-256-CMAC. */
void kfd_mac(const uint8_t key[KFD_KEY_LEN], const uint8_t *data, size_t len,
             uint8_t mac[KFD_MAC_LEN]);

#endif
