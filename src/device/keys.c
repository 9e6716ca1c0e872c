/*
 * KDF, AEAD and MAC of the device protocol, through nettle only. Every
 * derived key and cipher context on the stack is wiped before returning.
 */
#include "device/keys.h"

#include <string.h>

#include <nettle/cmac.h>
#include <nettle/ccm.h>
#include <nettle/memops.h>

void kfd_wipe(void *p, size_t n)
{
    volatile uint8_t *v = p;
    while (n--)
        *v++ = 0;
}

bool kfd_equal(const void *a, const void *b, size_t n)
{
    return memeql_sec(a, b, n) != 0;
}

void kfd_be64(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)v;
}

static void be32(uint8_t out[4], uint32_t v)
{
    out[0] = (uint8_t)(v >> 24), out[1] = (uint8_t)(v >> 16);
    out[2] = (uint8_t)(v >> 8), out[3] = (uint8_t)v;
}

/* The fixed input of the KDF as pieces, so it is never copied together. */
struct piece {
    const uint8_t *p;
    size_t len;
};

/* K(1) || K(2) || ..., K(i) = CMAC(key, [i]_32 || pieces), truncated to out_len. */
static int kdf_counter_mode(const uint8_t key[KFD_KEY_LEN], const struct piece *fixed,
                            size_t pieces, uint8_t *out, size_t out_len)
{
    KF_ENSURE(out_len >= 1 && out_len <= 255 * KFD_MAC_LEN, KF_ERR_ARG);
    struct cmac_aes256_ctx prf;
    uint8_t block[KFD_MAC_LEN], counter[4];
    cmac_aes256_set_key(&prf, key);
    for (uint32_t i = 1, done = 0; done < out_len; i++) {
        be32(counter, i);
        cmac_aes256_update(&prf, sizeof(counter), counter);
        for (size_t k = 0; k < pieces; k++)
            if (fixed[k].len)
                cmac_aes256_update(&prf, fixed[k].len, fixed[k].p);
        cmac_aes256_digest(&prf, sizeof(block), block); /* resets prf for the next block */
        size_t take = out_len - done < sizeof(block) ? out_len - done : sizeof(block);
        memcpy(out + done, block, take);
        done += (uint32_t)take;
    }
    kfd_wipe(block, sizeof(block));
    kfd_wipe(&prf, sizeof(prf));
    return KF_OK;
}

int kfd_kdf_ctr(const uint8_t key[KFD_KEY_LEN], const uint8_t *fixed, size_t fixed_len,
                uint8_t *out, size_t out_len)
{
    KF_ENSURE(key && out && (fixed || fixed_len == 0), KF_ERR_ARG);
    struct piece whole = {fixed, fixed_len};
    return kdf_counter_mode(key, &whole, 1, out, out_len);
}

int kfd_kdf(const uint8_t key[KFD_KEY_LEN], const char *label, const uint8_t *context,
            size_t context_len, uint8_t out[KFD_KEY_LEN])
{
    KF_ENSURE(key && label && out && (context || context_len == 0), KF_ERR_ARG);
    static const uint8_t separator = 0x00;
    uint8_t length_bits[4];
    be32(length_bits, KFD_KEY_LEN * 8);
    const struct piece fixed[] = {
        {(const uint8_t *)label, strlen(label)},
        {&separator, 1},
        {context, context_len},
        {length_bits, sizeof(length_bits)},
    };
    return kdf_counter_mode(key, fixed, 4, out, KFD_KEY_LEN);
}

/* KDF whose context is an ID followed by one 64-bit number, or the reverse. */
static int kdf_id_number(const uint8_t key[KFD_KEY_LEN], const char *label, const char *id,
                         bool number_first, uint64_t number, uint8_t out[KFD_KEY_LEN])
{
    KF_GUARD(kfd_id_valid(id));
    size_t id_len = strlen(id);
    uint8_t context[KFD_ID_MAX + 8];
    if (number_first) {
        kfd_be64(context, number);
        memcpy(context + 8, id, id_len);
    } else {
        memcpy(context, id, id_len);
        kfd_be64(context + id_len, number);
    }
    return kfd_kdf(key, label, context, id_len + 8, out);
}

int kfd_msk(const uint8_t mkek[KFD_KEY_LEN], const char *id, uint64_t counter,
            uint8_t msk[KFD_KEY_LEN])
{
    return kdf_id_number(mkek, KFD_LABEL_PAIR, id, false, counter, msk);
}

int kfd_ak(const uint8_t mkek[KFD_KEY_LEN], const char *id, uint8_t ak[KFD_KEY_LEN])
{
    KF_GUARD(kfd_id_valid(id));
    return kfd_kdf(mkek, KFD_LABEL_ACK, (const uint8_t *)id, strlen(id), ak);
}

int kfd_skek(const uint8_t kek[KFD_KEY_LEN], uint64_t kek_id, const char *sender,
             uint8_t skek[KFD_KEY_LEN])
{
    return kdf_id_number(kek, KFD_LABEL_SESSION, sender, true, kek_id, skek);
}

int kfd_ck(const uint8_t sk[KFD_KEY_LEN], uint64_t kek_id, uint64_t seq, uint8_t ck[KFD_KEY_LEN])
{
    uint8_t context[16];
    kfd_be64(context, kek_id);
    kfd_be64(context + 8, seq);
    return kfd_kdf(sk, KFD_LABEL_CONFIRM, context, sizeof(context), ck);
}

/*
 * AES-256-CCM (NIST SP 800-38C) with a 12-byte nonce and a 16-byte tag: the
 * length field is L = 15 - 12 = 3 bytes, so a message may have up to 2^24 - 1
 * bytes (ours have at most KFD_MSG_MAX). CCM needs only the AES key schedule
 * (struct ccm_aes256_ctx is under 300 bytes), where nettle's GCM context
 * carries a 4 KiB GHASH table: RAM is what a device is short of.
 */
#define KFD_CCM_MAX_LEN CCM_MAX_MSG_SIZE(KFD_NONCE_LEN)
_Static_assert(KFD_NONCE_LEN >= CCM_MIN_NONCE_SIZE && KFD_NONCE_LEN <= 13,
               "CCM nonces are 7 to 13 bytes");
_Static_assert(KFD_TAG_LEN == CCM_DIGEST_SIZE, "a full 16-byte CCM tag");

void kfd_aead_seal(const uint8_t key[KFD_KEY_LEN], const uint8_t nonce[KFD_NONCE_LEN],
                   const uint8_t *aad, size_t aad_len, const uint8_t *plain, size_t len,
                   uint8_t *sealed)
{
    struct ccm_aes256_ctx ccm;
    ccm_aes256_set_key(&ccm, key);
    /* clength counts the tag: sealed = ciphertext || tag. */
    ccm_aes256_encrypt_message(&ccm, KFD_NONCE_LEN, nonce, aad_len, aad, KFD_TAG_LEN,
                               len + KFD_TAG_LEN, sealed, plain);
    kfd_wipe(&ccm, sizeof(ccm));
}

int kfd_aead_open(const uint8_t key[KFD_KEY_LEN], const uint8_t nonce[KFD_NONCE_LEN],
                  const uint8_t *aad, size_t aad_len, const uint8_t *sealed, size_t sealed_len,
                  uint8_t *plain)
{
    KF_ENSURE(sealed_len >= KFD_TAG_LEN, KF_ERR_AUTH);
    size_t len = sealed_len - KFD_TAG_LEN;
    KF_ENSURE(len <= KFD_CCM_MAX_LEN, KF_ERR_AUTH);
    struct ccm_aes256_ctx ccm;
    ccm_aes256_set_key(&ccm, key);
    /* nettle decrypts into plain, then compares the tag in constant time (memeql_sec). */
    int good = ccm_aes256_decrypt_message(&ccm, KFD_NONCE_LEN, nonce, aad_len, aad, KFD_TAG_LEN,
                                          len, plain, sealed);
    kfd_wipe(&ccm, sizeof(ccm));
    if (!good && len)
        kfd_wipe(plain, len);
    return good ? KF_OK : KF_ERR_AUTH;
}

void kfd_mac(const uint8_t key[KFD_KEY_LEN], const uint8_t *data, size_t len,
             uint8_t mac[KFD_MAC_LEN])
{
    struct cmac_aes256_ctx cmac;
    cmac_aes256_set_key(&cmac, key);
    if (len)
        cmac_aes256_update(&cmac, len, data);
    cmac_aes256_digest(&cmac, KFD_MAC_LEN, mac);
    kfd_wipe(&cmac, sizeof(cmac));
}
