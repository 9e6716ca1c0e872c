/*
 * Triple DES (TDEA, SP 800-67 / FIPS 46-3 EDE) over nettle's des3, in ECB
 * and CBC (SP 800-38A). Kept for interoperability with legacy KMIP clients;
 * keyfleet never chooses it itself.
 */
#include <string.h>

#include <nettle/cbc.h>
#include <nettle/des.h>

#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

void kf_des3_fix_parity(uint8_t *key, size_t len)
{
    if (key && len)
        des_fix_parity(len, key, key);
}

/* nettle refuses (returns 0 for) keys with bad parity or weak DES subkeys; parity is fixed
 * on a copy first, as KMIP keys may carry arbitrary low bits. */
static int des3_schedule(struct des3_ctx *ctx, const uint8_t *key, size_t key_len)
{
    KF_ENSURE(key && key_len == KF_DES3_KEY_LEN, KF_ERR_KEY_SIZE);
    uint8_t k[KF_DES3_KEY_LEN];
    des_fix_parity(sizeof(k), k, key);
    int ok = des3_set_key(ctx, k);
    kf_wipe(k, sizeof(k));
    return ok ? KF_OK : KF_ERR_KEY_SIZE;
}

static int des3_run(bool decrypt, const uint8_t *key, size_t key_len, const uint8_t *iv,
                    const uint8_t *in, size_t len, uint8_t *out)
{
    KF_ENSURE((in && out) || len == 0, KF_ERR_ARG);
    KF_ENSURE(len % KF_DES3_BLOCK == 0, KF_ERR_ARG);
    struct des3_ctx ctx;
    int rc = des3_schedule(&ctx, key, key_len);
    if (rc == KF_OK && len) {
        nettle_cipher_func *f = decrypt ? (nettle_cipher_func *)des3_decrypt
                                        : (nettle_cipher_func *)des3_encrypt;
        if (!iv) {
            f(&ctx, len, out, in);
        } else {
            uint8_t chain[KF_DES3_BLOCK]; /* nettle advances the IV in place */
            memcpy(chain, iv, sizeof(chain));
            if (decrypt)
                cbc_decrypt(&ctx, f, KF_DES3_BLOCK, chain, len, out, in);
            else
                cbc_encrypt(&ctx, f, KF_DES3_BLOCK, chain, len, out, in);
            kf_wipe(chain, sizeof(chain));
        }
    }
    kf_wipe(&ctx, sizeof(ctx));
    return rc;
}

int kf_des3_encrypt(const uint8_t *key, size_t key_len, const uint8_t *iv, const uint8_t *in,
                    size_t len, uint8_t *out)
{
    return des3_run(false, key, key_len, iv, in, len, out);
}

int kf_des3_decrypt(const uint8_t *key, size_t key_len, const uint8_t *iv, const uint8_t *in,
                    size_t len, uint8_t *out)
{
    return des3_run(true, key, key_len, iv, in, len, out);
}
