/*
 * Shared between the KMIP cryptographic services (kmip_crypto.c) and their
 * symmetric ciphers (kmip_symcipher.c). Internal to the kms module.
 */
#ifndef KF_KMIP_CRYPTO_INTERNAL_H
#define KF_KMIP_CRYPTO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/crypto.h"
#include "kmip_internal.h"

/* Cryptographic Parameters (KMIP 1.4 §2.1.2); 0 = not given. */
struct crypto_params {
    uint32_t alg, mode, padding, hash, mgf_hash, sigalg;
    int32_t tag_len, iv_len; /* bytes, bits (as on the wire) */
    const uint8_t *p_source;
    size_t p_source_len;
};

#define KMIP_CIPHER_IV_MAX 16
#define KMIP_CORRELATION_LEN 16

/* One Encrypt or Decrypt: the request's fields, and what goes back. */
struct cipher_job {
    struct kmip_call *c;
    bool decrypt;
    const kf_ttlv *cp;
    const uint8_t *data, *iv, *aad, *tag;
    size_t len, iv_len, aad_len, tag_len;
    kf_buf out;
    uint8_t iv_out[KMIP_CIPHER_IV_MAX];
    size_t iv_out_len; /* > 0 when the server chose the IV */
    uint8_t tag_out[KF_GCM_TAG_LEN];
    size_t tag_out_len;
    /* Streamed Encrypt (Init / Final Indicator, Correlation Value), kmip_stream.c */
    const char *uid;
    bool stream_start, stream_final;
    const uint8_t *corr; /* the request's Correlation Value, NULL when starting */
    size_t corr_len;
    uint8_t corr_out[KMIP_CORRELATION_LEN];
    size_t corr_out_len; /* > 0 when the stream goes on */
};

/* AES (GCM, CBC, CTR, ECB, key wrap) and Triple DES (ECB, CBC) with a symmetric key. */
int kmip_symmetric_cipher(struct cipher_job *j, const struct crypto_params *p, uint32_t alg,
                          const uint8_t *key, size_t klen);

/*
 * One part of a streamed AES-GCM Encrypt: starts a stream (j->stream_start),
 * or continues the one j->corr names, ending it when j->stream_final.
 */
int kmip_gcm_stream(struct cipher_job *j, const struct crypto_params *p, uint32_t alg,
                    const uint8_t *key, size_t klen);

#endif
