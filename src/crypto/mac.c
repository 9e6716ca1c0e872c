/* Hashes (FIPS 180-4), HMAC (RFC 2104) and AES-CMAC (RFC 4493 / SP 800-38B) over nettle. */
#include <nettle/cmac.h>
#include <nettle/hmac.h>
#include <nettle/sha1.h>
#include <nettle/sha2.h>

#include "crypto/crypto_internal.h"
#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

const struct nettle_hash *kf_nettle_hash(enum kf_hash h)
{
    switch (h) {
    case KF_HASH_SHA1:
        return &nettle_sha1;
    case KF_HASH_SHA224:
        return &nettle_sha224;
    case KF_HASH_SHA256:
        return &nettle_sha256;
    case KF_HASH_SHA384:
        return &nettle_sha384;
    case KF_HASH_SHA512:
        return &nettle_sha512;
    }
    return NULL;
}

size_t kf_hash_len(enum kf_hash h)
{
    const struct nettle_hash *hash = kf_nettle_hash(h);
    return hash ? hash->digest_size : 0;
}




int kf_hash(enum kf_hash h, const uint8_t *msg, size_t len, uint8_t *out)
{
    const struct nettle_hash *hash = kf_nettle_hash(h);
    KF_ENSURE(hash, KF_ERR_UNSUPPORTED);
    KF_ENSURE(out && (msg || len == 0), KF_ERR_ARG);
    kf_any_hash_state state;
    hash->init(&state);
    if (len)
        hash->update(&state, len, msg);
    hash->digest(&state, hash->digest_size, out);
    kf_wipe(&state, sizeof(state)); /* the message may be secret */
    return KF_OK;
}

int kf_sha256(const uint8_t *msg, size_t len, uint8_t out[KF_SHA256_LEN])
{
    return kf_hash(KF_HASH_SHA256, msg, len, out);
}

int kf_hmac(enum kf_hash h, const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
            uint8_t *out)
{
    const struct nettle_hash *hash = kf_nettle_hash(h);
    KF_ENSURE(hash, KF_ERR_UNSUPPORTED);
    KF_ENSURE(out && (key || key_len == 0) && (msg || len == 0), KF_ERR_ARG);
    /* Generic nettle HMAC: outer, inner and state each sized for the largest hash. */
    struct hmac_sha512_ctx mac;
    hmac_set_key(&mac.outer, &mac.inner, &mac.state, hash, key_len, key);
    if (len)
        hmac_update(&mac.state, hash, len, msg);
    hmac_digest(&mac.outer, &mac.inner, &mac.state, hash, hash->digest_size, out);
    kf_wipe(&mac, sizeof(mac));
    return KF_OK;
}

int kf_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                   uint8_t out[KF_SHA256_LEN])
{
    return kf_hmac(KF_HASH_SHA256, key, key_len, msg, len, out);
}

int kf_aes_cmac(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                uint8_t out[KF_CMAC_LEN])
{
    KF_ENSURE(key && out && (msg || len == 0), KF_ERR_ARG);
    switch (key_len) {
    case AES128_KEY_SIZE: {
        struct cmac_aes128_ctx mac;
        cmac_aes128_set_key(&mac, key);
        if (len)
            cmac_aes128_update(&mac, len, msg);
        cmac_aes128_digest(&mac, KF_CMAC_LEN, out);
        kf_wipe(&mac, sizeof(mac));
        return KF_OK;
    }
    case AES256_KEY_SIZE: {
        struct cmac_aes256_ctx mac;
        cmac_aes256_set_key(&mac, key);
        if (len)
            cmac_aes256_update(&mac, len, msg);
        cmac_aes256_digest(&mac, KF_CMAC_LEN, out);
        kf_wipe(&mac, sizeof(mac));
        return KF_OK;
    }
    default:
        return KF_ERR_KEY_SIZE;
    }
}
