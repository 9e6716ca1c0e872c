/*
 * AES key wrap: RFC 3394 (KW) straight from nettle's nist_keywrap16, and
 * RFC 5649 (KWP) composed on top of it. KWP differs from KW only in the
 * initial value (A65959A6 || 32-bit message length indicator), the zero
 * padding to a multiple of 8 bytes, and the one-block case for inputs of up
 * to 8 bytes, which is a single AES encryption of AIV || P.
 */
#include <string.h>

#include <nettle/nist-keywrap.h>

#include "crypto/crypto_internal.h"
#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

#define SEMIBLOCK 8

static const uint8_t kw_default_iv[SEMIBLOCK] = {0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6};
static const uint8_t kwp_iv_prefix[4] = {0xA6, 0x59, 0x59, 0xA6};

/* ---- RFC 3394 ---- */

int kf_aes_kw_wrap(const uint8_t *kek, size_t kek_len, const uint8_t *in, size_t in_len,
                   uint8_t *out)
{
    KF_ENSURE(in && out, KF_ERR_ARG);
    KF_ENSURE(in_len >= 2 * SEMIBLOCK && in_len % SEMIBLOCK == 0, KF_ERR_ARG);
    struct kf_aes_key aes;
    KF_GUARD(kf_aes_key_set_encrypt(&aes, kek, kek_len));
    nist_keywrap16(&aes.ctx, aes.encrypt, kw_default_iv, in_len + SEMIBLOCK, out, in);
    kf_aes_key_clear(&aes);
    return KF_OK;
}

int kf_aes_kw_unwrap(const uint8_t *kek, size_t kek_len, const uint8_t *in, size_t in_len,
                     uint8_t *out)
{
    KF_ENSURE(in && out, KF_ERR_ARG);
    KF_ENSURE(in_len >= 3 * SEMIBLOCK && in_len % SEMIBLOCK == 0, KF_ERR_ARG);
    struct kf_aes_key aes;
    KF_GUARD(kf_aes_key_set_decrypt(&aes, kek, kek_len));
    int ok = nist_keyunwrap16(&aes.ctx, aes.decrypt, kw_default_iv, in_len - SEMIBLOCK, out, in);
    kf_aes_key_clear(&aes);
    if (!ok) {
        kf_wipe(out, in_len - SEMIBLOCK);
        return KF_ERR_AUTH;
    }
    return KF_OK;
}

/* ---- RFC 5649 ---- */

size_t kf_aes_kwp_wrapped_len(size_t in_len)
{
    return (in_len + SEMIBLOCK - 1) / SEMIBLOCK * SEMIBLOCK + SEMIBLOCK;
}

static void kwp_initial_value(uint8_t aiv[SEMIBLOCK], uint32_t mli)
{
    memcpy(aiv, kwp_iv_prefix, sizeof(kwp_iv_prefix));
    aiv[4] = (uint8_t)(mli >> 24);
    aiv[5] = (uint8_t)(mli >> 16);
    aiv[6] = (uint8_t)(mli >> 8);
    aiv[7] = (uint8_t)mli;
}

int kf_aes_kwp_wrap(const uint8_t *kek, size_t kek_len, const uint8_t *in, size_t in_len,
                    uint8_t *out)
{
    KF_ENSURE(in && out, KF_ERR_ARG);
    /* The length indicator is 32 bits wide (RFC 5649 section 3). */
    KF_ENSURE(in_len >= 1 && in_len <= UINT32_MAX - SEMIBLOCK, KF_ERR_ARG);
    size_t padded_len = kf_aes_kwp_wrapped_len(in_len) - SEMIBLOCK;
    uint8_t aiv[SEMIBLOCK];
    kwp_initial_value(aiv, (uint32_t)in_len);

    struct kf_aes_key aes;
    KF_GUARD(kf_aes_key_set_encrypt(&aes, kek, kek_len));
    int rc = KF_OK;
    if (padded_len == SEMIBLOCK) {
        /* Section 4.1: one block, C = AES(K, AIV || P). */
        uint8_t block[2 * SEMIBLOCK] = {0};
        memcpy(block, aiv, SEMIBLOCK);
        memcpy(block + SEMIBLOCK, in, in_len);
        aes.encrypt(&aes.ctx, sizeof(block), out, block);
        kf_wipe(block, sizeof(block));
    } else {
        uint8_t *padded = kf_secmem_alloc(padded_len);
        if (!padded) {
            rc = KF_ERR_SECMEM;
        } else {
            memcpy(padded, in, in_len); /* secmem is zeroed: the padding is in place */
            nist_keywrap16(&aes.ctx, aes.encrypt, aiv, padded_len + SEMIBLOCK, out, padded);
            kf_secmem_free(padded);
        }
    }
    kf_aes_key_clear(&aes);
    return rc;
}

/*
 * nist_keyunwrap16 only reports whether the recovered A equals a fixed IV,
 * but KWP must inspect A (the length indicator is unknown in advance). The
 * last block decryption of the unwrap yields A in its first half, so the
 * cipher function is wrapped to keep a copy of its latest output.
 */
struct unwrap_observer {
    const struct kf_aes_key *aes;
    uint8_t last_block[2 * SEMIBLOCK];
};

static void decrypt_and_observe(const void *ctx, size_t len, uint8_t *dst, const uint8_t *src)
{
    struct unwrap_observer *obs = (struct unwrap_observer *)ctx; /* ours, not const in truth */
    obs->aes->decrypt(&obs->aes->ctx, len, dst, src);
    memcpy(obs->last_block, dst + len - sizeof(obs->last_block), sizeof(obs->last_block));
}

/* CT: all-ones if a < b else 0, for a, b < 2^32. */
static uint32_t ct_mask_less(uint64_t a, uint64_t b)
{
    return (uint32_t)0 - (uint32_t)((a - b) >> 63);
}

/*
 * CT: KF_OK if A carries the KWP prefix, 8*(n-1) < MLI <= 8*n and every
 * padding byte is zero; otherwise KF_ERR_AUTH. Time depends on padded_len only.
 */
static int kwp_check(const uint8_t a[SEMIBLOCK], const uint8_t *padded, size_t padded_len,
                     size_t *mli_out)
{
    uint32_t mli = (uint32_t)a[4] << 24 | (uint32_t)a[5] << 16 | (uint32_t)a[6] << 8 | a[7];
    uint32_t bad = kf_ct_equal(a, kwp_iv_prefix, sizeof(kwp_iv_prefix)) ? 0 : 1;
    bad |= ct_mask_less(mli, (uint64_t)padded_len - SEMIBLOCK + 1); /* mli <= 8(n-1) */
    bad |= ct_mask_less((uint64_t)padded_len, mli);                 /* mli > 8n */
    uint8_t pad_bits = 0;
    for (size_t i = padded_len - SEMIBLOCK; i < padded_len; i++)
        pad_bits |= (uint8_t)(padded[i] & ~ct_mask_less(i, mli)); /* bytes at i >= mli */
    bad |= pad_bits;
    *mli_out = mli;
    return bad ? KF_ERR_AUTH : KF_OK;
}

int kf_aes_kwp_unwrap(const uint8_t *kek, size_t kek_len, const uint8_t *in, size_t in_len,
                      uint8_t *out, size_t *out_len)
{
    KF_ENSURE(in && out && out_len, KF_ERR_ARG);
    KF_ENSURE(in_len >= 2 * SEMIBLOCK && in_len % SEMIBLOCK == 0, KF_ERR_ARG);
    KF_ENSURE(in_len <= (size_t)UINT32_MAX, KF_ERR_ARG);
    size_t padded_len = in_len - SEMIBLOCK;
    struct kf_aes_key aes;
    KF_GUARD(kf_aes_key_set_decrypt(&aes, kek, kek_len));

    struct unwrap_observer obs = {.aes = &aes};
    if (padded_len == SEMIBLOCK) {
        aes.decrypt(&aes.ctx, sizeof(obs.last_block), obs.last_block, in);
        memcpy(out, obs.last_block + SEMIBLOCK, SEMIBLOCK);
    } else {
        /* The IV compared inside nettle is irrelevant: A is checked below. */
        (void)nist_keyunwrap16(&obs, decrypt_and_observe, kw_default_iv, padded_len, out, in);
    }
    size_t mli = 0;
    int rc = kwp_check(obs.last_block, out, padded_len, &mli);
    kf_wipe(&obs, sizeof(obs));
    kf_aes_key_clear(&aes);
    if (rc != KF_OK) {
        kf_wipe(out, padded_len);
        return rc;
    }
    *out_len = mli;
    return KF_OK;
}
