/* Key derivation: HKDF (RFC 5869) via nettle, SP 800-108 counter mode with AES-CMAC. */
#include <string.h>

#include <nettle/cmac.h>
#include <nettle/hkdf.h>
#include <nettle/hmac.h>

#include "crypto/crypto_internal.h"
#include "keyfleet/buf.h"
#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

int kf_hkdf_sha256(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
                   const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len)
{
    KF_ENSURE(out && (ikm || ikm_len == 0) && (info || info_len == 0), KF_ERR_ARG);
    KF_ENSURE(salt || salt_len == 0, KF_ERR_ARG);
    KF_ENSURE(out_len >= 1 && out_len <= 255 * SHA256_DIGEST_SIZE, KF_ERR_ARG);
    /* An absent salt is HashLen zeros; HMAC pads a short key with zeros, so an empty key is the same. */
    static const uint8_t no_salt[1] = {0};
    struct hmac_sha256_ctx mac;
    uint8_t prk[SHA256_DIGEST_SIZE];
    hmac_sha256_set_key(&mac, salt_len, salt ? salt : no_salt);
    hkdf_extract(&mac, (nettle_hash_update_func *)hmac_sha256_update,
                 (nettle_hash_digest_func *)hmac_sha256_digest, SHA256_DIGEST_SIZE, ikm_len,
                 ikm, prk);
    hmac_sha256_set_key(&mac, sizeof(prk), prk);
    hkdf_expand(&mac, (nettle_hash_update_func *)hmac_sha256_update,
                (nettle_hash_digest_func *)hmac_sha256_digest, SHA256_DIGEST_SIZE, info_len,
                info, out_len, out);
    kf_wipe(prk, sizeof(prk));
    kf_wipe(&mac, sizeof(mac));
    return KF_OK;
}

/* One PRF block K(i) = CMAC(key, [i]_32 || fixed_input). */
static void kdf108_block(const uint8_t *key, size_t key_len, uint32_t counter,
                         const uint8_t *fixed_input, size_t fixed_len, uint8_t out[KF_CMAC_LEN])
{
    uint8_t counter_be[4] = {(uint8_t)(counter >> 24), (uint8_t)(counter >> 16),
                             (uint8_t)(counter >> 8), (uint8_t)counter};
    if (key_len == AES128_KEY_SIZE) {
        struct cmac_aes128_ctx mac;
        cmac_aes128_set_key(&mac, key);
        cmac_aes128_update(&mac, sizeof(counter_be), counter_be);
        if (fixed_len)
            cmac_aes128_update(&mac, fixed_len, fixed_input);
        cmac_aes128_digest(&mac, KF_CMAC_LEN, out);
        kf_wipe(&mac, sizeof(mac));
    } else {
        struct cmac_aes256_ctx mac;
        cmac_aes256_set_key(&mac, key);
        cmac_aes256_update(&mac, sizeof(counter_be), counter_be);
        if (fixed_len)
            cmac_aes256_update(&mac, fixed_len, fixed_input);
        cmac_aes256_digest(&mac, KF_CMAC_LEN, out);
        kf_wipe(&mac, sizeof(mac));
    }
}

int kf_kdf108_ctr_cmac(const uint8_t *key, size_t key_len, const uint8_t *fixed_input,
                       size_t fixed_len, uint8_t *out, size_t out_len)
{
    KF_ENSURE(key && out && (fixed_input || fixed_len == 0), KF_ERR_ARG);
    KF_ENSURE(key_len == AES128_KEY_SIZE || key_len == AES256_KEY_SIZE, KF_ERR_KEY_SIZE);
    /* L is encoded in 32 bits by kf_kdf108_derive; keep the output within that. */
    KF_ENSURE(out_len >= 1 && out_len <= UINT32_MAX / 8, KF_ERR_ARG);
    uint8_t block[KF_CMAC_LEN];
    size_t done = 0;
    for (uint32_t i = 1; done < out_len; i++) {
        kdf108_block(key, key_len, i, fixed_input, fixed_len, block);
        size_t take = out_len - done < sizeof(block) ? out_len - done : sizeof(block);
        memcpy(out + done, block, take);
        done += take;
    }
    kf_wipe(block, sizeof(block));
    return KF_OK;
}

int kf_kdf108_derive(const uint8_t *key, size_t key_len, const char *label,
                     const uint8_t *context, size_t context_len, uint8_t *out, size_t out_len)
{
    KF_ENSURE(label && (context || context_len == 0), KF_ERR_ARG);
    KF_ENSURE(out_len >= 1 && out_len <= UINT32_MAX / 8, KF_ERR_ARG);
    size_t label_len = strlen(label);
    kf_buf fixed;
    KF_GUARD(kf_buf_alloc(&fixed, label_len + 1 + context_len + 4,
                          label_len + 1 + context_len + 4, KF_BUF_SECRET));
    int rc = kf_buf_put_bytes(&fixed, label, label_len);
    if (rc == KF_OK)
        rc = kf_buf_put_u8(&fixed, 0x00);
    if (rc == KF_OK && context_len)
        rc = kf_buf_put_bytes(&fixed, context, context_len);
    if (rc == KF_OK)
        rc = kf_buf_put_u32(&fixed, (uint32_t)(out_len * 8));
    if (rc == KF_OK)
        rc = kf_kdf108_ctr_cmac(key, key_len, fixed.data, fixed.len, out, out_len);
    kf_buf_free(&fixed);
    return rc;
}
