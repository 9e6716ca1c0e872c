/*
 * Symmetric ciphers of KMIP Encrypt / Decrypt: AES in GCM, CBC, CTR, ECB and
 * the NIST key wraps, and Triple DES in ECB and CBC (legacy interoperability).
 * The caller (kmip_crypto.c) has checked the key's state and usage mask and
 * merged the Cryptographic Parameters; this file only runs the mode.
 */
#include <stdio.h>
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "kmip_crypto_internal.h"

#define AES_BLOCK 16

/* The request's IV, or a fresh random one of n bytes (returned to the client). */
static int iv_for(struct cipher_job *j, size_t n, const uint8_t **iv)
{
    if (j->iv) {
        KF_ENSURE(j->iv_len == n, KF_ERR_ATTRIBUTE);
        *iv = j->iv;
        return KF_OK;
    }
    if (j->decrypt) {
        /* KMIP 1.4 profiles: a Decrypt that lacks the IV its mode needs is an Invalid Message. */
        snprintf(j->c->message, sizeof(j->c->message),
                 "Decrypt needs the IV/Counter/Nonce the encryption used");
        return KF_ERR_INVALID_MESSAGE;
    }
    KF_ENSURE(n <= sizeof(j->iv_out), KF_ERR_REQUEST);
    KF_GUARD(kf_rng_bytes(j->iv_out, n));
    j->iv_out_len = n;
    *iv = j->iv_out;
    return KF_OK;
}

static int aes_gcm(struct cipher_job *j, const struct crypto_params *p, const uint8_t *key,
                   size_t klen)
{
    const uint8_t *iv;
    /* A client's IV may have any length GCM takes; one the server makes is 1-16 bytes. */
    size_t iv_len = j->iv ? j->iv_len : p->iv_len > 0 ? (size_t)p->iv_len / 8 : KF_GCM_IV_LEN;
    KF_ENSURE(iv_len >= 1 && (j->iv || iv_len <= KMIP_CIPHER_IV_MAX), KF_ERR_ATTRIBUTE);
    /* Tag Length is in bytes; a Decrypt's tag says its own length when the parameters do not. */
    size_t tag_len = p->tag_len > 0 ? (size_t)p->tag_len
                     : j->decrypt && j->tag ? j->tag_len
                                            : KF_GCM_TAG_LEN;
    if (!(tag_len == 4 || tag_len == 8 || (tag_len >= 12 && tag_len <= KF_GCM_TAG_LEN))) {
        /* SP 800-38D 5.2.1.2; the profiles' reference answers General Failure here. */
        snprintf(j->c->message, sizeof(j->c->message), "GCM Tag Length must be 4, 8 or 12-16 bytes");
        return KF_ERR_ARG;
    }
    KF_GUARD(iv_for(j, iv_len, &iv));
    uint8_t *dst;
    KF_GUARD(kf_buf_put_space(&j->out, j->len, &dst));
    if (!j->decrypt) {
        j->tag_out_len = tag_len;
        return kf_aes_gcm_seal_ex(key, klen, iv, iv_len, j->aad, j->aad_len, j->data, j->len, dst,
                                  j->tag_out, tag_len);
    }
    KF_ENSURE(j->tag, KF_ERR_REQUEST);
    KF_ENSURE(j->tag_len == tag_len, KF_ERR_ATTRIBUTE);
    return kf_aes_gcm_open_ex(key, klen, iv, iv_len, j->aad, j->aad_len, j->data, j->len, j->tag,
                              tag_len, dst);
}

/* PKCS#5 padding removal for block size bs. CT: the check does not branch on the pad bytes. */
static int pkcs5_unpad(kf_buf *out, size_t bs)
{
    KF_ENSURE(out->len >= bs, KF_ERR_CRYPTO);
    uint8_t n = out->data[out->len - 1];
    unsigned bad = (unsigned)(n == 0) | (unsigned)(n > bs);
    for (size_t i = 1; i <= bs; i++) {
        unsigned in_pad = (unsigned)(i <= n);
        bad |= in_pad & (unsigned)(out->data[out->len - i] != n);
    }
    KF_ENSURE(!bad, KF_ERR_CRYPTO);
    kf_wipe(out->data + out->len - n, n);
    out->len -= n;
    return KF_OK;
}

/* A block cipher in ECB or CBC: one call over whole blocks, in and out may alias. */
typedef int (*block_fn)(const uint8_t *key, size_t klen, const uint8_t *iv, const uint8_t *in,
                        size_t len, uint8_t *out);

static int aes_ecb_enc(const uint8_t *key, size_t klen, const uint8_t *iv, const uint8_t *in,
                       size_t len, uint8_t *out)
{
    return iv ? kf_aes_cbc_encrypt(key, klen, iv, in, len, out)
              : kf_aes_ecb_encrypt(key, klen, in, len, out);
}

static int aes_ecb_dec(const uint8_t *key, size_t klen, const uint8_t *iv, const uint8_t *in,
                       size_t len, uint8_t *out)
{
    return iv ? kf_aes_cbc_decrypt(key, klen, iv, in, len, out)
              : kf_aes_ecb_decrypt(key, klen, in, len, out);
}

struct block_cipher {
    size_t bs;
    block_fn enc, dec;
};

static const struct block_cipher AES_CIPHER = {AES_BLOCK, aes_ecb_enc, aes_ecb_dec};
static const struct block_cipher DES3_CIPHER = {KF_DES3_BLOCK, kf_des3_encrypt, kf_des3_decrypt};

/*
 * ECB (no IV) or CBC with PKCS#5 or no padding. CBC pads by default (the
 * usual client expectation); ECB does not, as the OASIS cases show.
 */
static int block_mode(struct cipher_job *j, const struct crypto_params *p,
                      const struct block_cipher *bc, bool cbc, const uint8_t *key, size_t klen)
{
    uint32_t pad = p->padding ? p->padding : cbc ? KMIP_PAD_PKCS5 : KMIP_PAD_NONE;
    KF_ENSURE(pad == KMIP_PAD_PKCS5 || pad == KMIP_PAD_NONE, KF_ERR_UNSUPPORTED);
    const uint8_t *iv = NULL;
    if (cbc)
        KF_GUARD(iv_for(j, bc->bs, &iv));
    else
        KF_ENSURE(!j->iv, KF_ERR_ATTRIBUTE); /* ECB takes no IV */
    uint8_t *dst;
    if (j->decrypt) {
        KF_ENSURE(j->len > 0 && j->len % bc->bs == 0, KF_ERR_ATTRIBUTE);
        KF_GUARD(kf_buf_put_space(&j->out, j->len, &dst));
        KF_GUARD(bc->dec(key, klen, iv, j->data, j->len, dst));
        return pad == KMIP_PAD_PKCS5 ? pkcs5_unpad(&j->out, bc->bs) : KF_OK;
    }
    size_t npad = pad == KMIP_PAD_PKCS5 ? bc->bs - j->len % bc->bs : 0;
    KF_ENSURE((j->len + npad) % bc->bs == 0 && j->len + npad > 0, KF_ERR_ATTRIBUTE);
    KF_GUARD(kf_buf_put_bytes(&j->out, j->data, j->len));
    for (size_t i = 0; i < npad; i++)
        KF_GUARD(kf_buf_put_u8(&j->out, (uint8_t)npad));
    /* In place: ECB and CBC encryption read each block before writing it. */
    return bc->enc(key, klen, iv, j->out.data, j->out.len, j->out.data);
}

static int aes_ctr(struct cipher_job *j, const uint8_t *key, size_t klen)
{
    const uint8_t *ctr;
    KF_GUARD(iv_for(j, AES_BLOCK, &ctr));
    uint8_t *dst;
    KF_GUARD(kf_buf_put_space(&j->out, j->len, &dst));
    return kf_aes_ctr(key, klen, ctr, j->data, j->len, dst);
}

/* NIST key wrap: RFC 3394 (KW) and RFC 5649 (KWP); no IV. */
static int aes_key_wrap(struct cipher_job *j, bool padded, const uint8_t *key, size_t klen)
{
    uint8_t *dst;
    KF_ENSURE(!j->iv, KF_ERR_ATTRIBUTE);
    if (!j->decrypt) {
        size_t n = padded ? kf_aes_kwp_wrapped_len(j->len) : j->len + 8;
        KF_ENSURE(j->len > 0 && (padded || (j->len % 8 == 0 && j->len >= 16)), KF_ERR_ATTRIBUTE);
        KF_GUARD(kf_buf_put_space(&j->out, n, &dst));
        return padded ? kf_aes_kwp_wrap(key, klen, j->data, j->len, dst)
                      : kf_aes_kw_wrap(key, klen, j->data, j->len, dst);
    }
    KF_ENSURE(j->len >= 16 && j->len % 8 == 0, KF_ERR_ATTRIBUTE);
    KF_GUARD(kf_buf_put_space(&j->out, j->len - 8, &dst));
    if (!padded)
        return kf_aes_kw_unwrap(key, klen, j->data, j->len, dst);
    size_t n;
    KF_GUARD(kf_aes_kwp_unwrap(key, klen, j->data, j->len, dst, &n));
    j->out.len -= (j->len - 8) - n;
    return KF_OK;
}

static int no_mode(struct cipher_job *j)
{
    snprintf(j->c->message, sizeof(j->c->message),
             "a Block Cipher Mode is needed in the Cryptographic Parameters");
    return KF_ERR_REQUEST;
}

static int aes_cipher(struct cipher_job *j, const struct crypto_params *p, const uint8_t *key,
                      size_t klen)
{
    KF_ENSURE(klen == 16 || klen == 24 || klen == 32, KF_ERR_KEY_SIZE);
    switch (p->mode) {
    case KMIP_MODE_GCM: return aes_gcm(j, p, key, klen);
    case KMIP_MODE_CBC: return block_mode(j, p, &AES_CIPHER, true, key, klen);
    case KMIP_MODE_ECB: return block_mode(j, p, &AES_CIPHER, false, key, klen);
    case KMIP_MODE_CTR: return aes_ctr(j, key, klen);
    case KMIP_MODE_NIST_KEY_WRAP: return aes_key_wrap(j, false, key, klen);
    case KMIP_MODE_AES_KEY_WRAP_PADDING: return aes_key_wrap(j, true, key, klen);
    case 0: return no_mode(j);
    default:
        snprintf(j->c->message, sizeof(j->c->message),
                 "AES modes offered: GCM, CBC, ECB, CTR, NIST Key Wrap, AES Key Wrap Padding");
        return KF_ERR_UNSUPPORTED;
    }
}

static int des3_cipher(struct cipher_job *j, const struct crypto_params *p, const uint8_t *key,
                       size_t klen)
{
    KF_ENSURE(klen == KF_DES3_KEY_LEN, KF_ERR_KEY_SIZE);
    switch (p->mode) {
    case KMIP_MODE_CBC: return block_mode(j, p, &DES3_CIPHER, true, key, klen);
    case KMIP_MODE_ECB: return block_mode(j, p, &DES3_CIPHER, false, key, klen);
    case 0: return no_mode(j);
    default:
        snprintf(j->c->message, sizeof(j->c->message), "Triple DES modes offered: CBC, ECB");
        return KF_ERR_UNSUPPORTED;
    }
}

int kmip_symmetric_cipher(struct cipher_job *j, const struct crypto_params *p, uint32_t alg,
                          const uint8_t *key, size_t klen)
{
    if (alg == KMIP_ALG_AES)
        return aes_cipher(j, p, key, klen);
    if (alg == KMIP_ALG_DES3)
        return des3_cipher(j, p, key, klen);
    snprintf(j->c->message, sizeof(j->c->message),
             "Encrypt and Decrypt take AES and Triple DES symmetric keys and RSA key pairs");
    return KF_ERR_UNSUPPORTED;
}
