/*
 * AES modes over nettle: GCM (SP 800-38D), CBC and CTR (SP 800-38A), and the
 * size-generic key schedule the other AES users in this module share.
 */
#include <string.h>

#include <nettle/cbc.h>
#include <nettle/ctr.h>
#include <nettle/gcm.h>

#include "crypto/crypto_internal.h"
#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

/* SP 800-38D 5.2.1.1: at most 2^39 - 256 bits of plaintext per invocation. */
#define GCM_MAX_PLAINTEXT ((UINT64_C(1) << 36) - 32)

int kf_aes_key_set_encrypt(struct kf_aes_key *k, const uint8_t *key, size_t key_len)
{
    KF_ENSURE(k && key, KF_ERR_ARG);
    switch (key_len) {
    case AES128_KEY_SIZE:
        aes128_set_encrypt_key(&k->ctx.k128, key);
        k->encrypt = (nettle_cipher_func *)aes128_encrypt;
        k->decrypt = (nettle_cipher_func *)aes128_decrypt;
        return KF_OK;
    case AES192_KEY_SIZE:
        aes192_set_encrypt_key(&k->ctx.k192, key);
        k->encrypt = (nettle_cipher_func *)aes192_encrypt;
        k->decrypt = (nettle_cipher_func *)aes192_decrypt;
        return KF_OK;
    case AES256_KEY_SIZE:
        aes256_set_encrypt_key(&k->ctx.k256, key);
        k->encrypt = (nettle_cipher_func *)aes256_encrypt;
        k->decrypt = (nettle_cipher_func *)aes256_decrypt;
        return KF_OK;
    default:
        return KF_ERR_KEY_SIZE;
    }
}

int kf_aes_key_set_decrypt(struct kf_aes_key *k, const uint8_t *key, size_t key_len)
{
    KF_ENSURE(k && key, KF_ERR_ARG);
    switch (key_len) {
    case AES128_KEY_SIZE:
        aes128_set_decrypt_key(&k->ctx.k128, key);
        break;
    case AES192_KEY_SIZE:
        aes192_set_decrypt_key(&k->ctx.k192, key);
        break;
    case AES256_KEY_SIZE:
        aes256_set_decrypt_key(&k->ctx.k256, key);
        break;
    default:
        return KF_ERR_KEY_SIZE;
    }
    /* Only decrypt is valid on an inverted schedule; leave no encrypt to misuse. */
    k->encrypt = NULL;
    k->decrypt = key_len == AES128_KEY_SIZE   ? (nettle_cipher_func *)aes128_decrypt
                 : key_len == AES192_KEY_SIZE ? (nettle_cipher_func *)aes192_decrypt
                                              : (nettle_cipher_func *)aes256_decrypt;
    return KF_OK;
}

void kf_aes_key_clear(struct kf_aes_key *k)
{
    kf_wipe(k, sizeof(*k));
}

/* ---- GCM ---- */

/* The GCM state for one message: hash subkey, counter state, cipher. */
struct gcm_run {
    struct kf_aes_key aes;
    struct gcm_key hkey;
    struct gcm_ctx state;
};

static int gcm_start(struct gcm_run *run, const uint8_t *key, size_t key_len, const uint8_t *iv,
                     size_t iv_len, const uint8_t *ad, size_t ad_len)
{
    KF_ENSURE(iv && iv_len >= 1, KF_ERR_ARG);
    KF_ENSURE(ad || ad_len == 0, KF_ERR_ARG);
    KF_GUARD(kf_aes_key_set_encrypt(&run->aes, key, key_len));
    gcm_set_key(&run->hkey, &run->aes.ctx, run->aes.encrypt);
    gcm_set_iv(&run->state, &run->hkey, iv_len, iv);
    if (ad_len)
        gcm_update(&run->state, &run->hkey, ad_len, ad);
    return KF_OK;
}

static void gcm_end(struct gcm_run *run)
{
    kf_wipe(run, sizeof(*run));
}

int kf_aes_gcm_seal(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                    const uint8_t *ad, size_t ad_len, const uint8_t *pt, size_t pt_len,
                    uint8_t *ct, uint8_t tag[KF_GCM_TAG_LEN])
{
    return kf_aes_gcm_seal_ex(key, key_len, iv, iv_len, ad, ad_len, pt, pt_len, ct, tag,
                              KF_GCM_TAG_LEN);
}

/* SP 800-38D 5.2.1.2: 128, 120, 112, 104, 96 bits, or 64 and 32 for some applications. */
static bool gcm_tag_len_ok(size_t n)
{
    return n == 4 || n == 8 || (n >= 12 && n <= KF_GCM_TAG_LEN);
}

int kf_aes_gcm_seal_ex(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                       const uint8_t *ad, size_t ad_len, const uint8_t *pt, size_t pt_len,
                       uint8_t *ct, uint8_t *tag, size_t tag_len)
{
    KF_ENSURE(tag && ((pt && ct) || pt_len == 0), KF_ERR_ARG);
    KF_ENSURE(gcm_tag_len_ok(tag_len), KF_ERR_ARG);
    KF_ENSURE((uint64_t)pt_len <= GCM_MAX_PLAINTEXT, KF_ERR_LIMIT);
    struct gcm_run run;
    int rc = gcm_start(&run, key, key_len, iv, iv_len, ad, ad_len);
    if (rc == KF_OK) {
        if (pt_len)
            gcm_encrypt(&run.state, &run.hkey, &run.aes.ctx, run.aes.encrypt, pt_len, ct, pt);
        gcm_digest(&run.state, &run.hkey, &run.aes.ctx, run.aes.encrypt, tag_len, tag);
    }
    gcm_end(&run);
    return rc;
}

int kf_aes_gcm_open(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                    const uint8_t *ad, size_t ad_len, const uint8_t *ct, size_t ct_len,
                    const uint8_t tag[KF_GCM_TAG_LEN], uint8_t *pt)
{
    return kf_aes_gcm_open_ex(key, key_len, iv, iv_len, ad, ad_len, ct, ct_len, tag,
                              KF_GCM_TAG_LEN, pt);
}

int kf_aes_gcm_open_ex(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                       const uint8_t *ad, size_t ad_len, const uint8_t *ct, size_t ct_len,
                       const uint8_t *tag, size_t tag_len, uint8_t *pt)
{
    KF_ENSURE(tag && ((pt && ct) || ct_len == 0), KF_ERR_ARG);
    KF_ENSURE(gcm_tag_len_ok(tag_len), KF_ERR_ARG);
    KF_ENSURE((uint64_t)ct_len <= GCM_MAX_PLAINTEXT, KF_ERR_LIMIT);
    struct gcm_run run;
    uint8_t expected[KF_GCM_TAG_LEN];
    int rc = gcm_start(&run, key, key_len, iv, iv_len, ad, ad_len);
    if (rc == KF_OK) {
        if (ct_len)
            gcm_decrypt(&run.state, &run.hkey, &run.aes.ctx, run.aes.encrypt, ct_len, pt, ct);
        gcm_digest(&run.state, &run.hkey, &run.aes.ctx, run.aes.encrypt, tag_len, expected);
        if (!kf_ct_equal(expected, tag, tag_len)) {
            /* Unauthenticated plaintext must never reach the caller. */
            kf_wipe(pt, ct_len);
            rc = KF_ERR_AUTH;
        }
    }
    kf_wipe(expected, sizeof(expected));
    gcm_end(&run);
    return rc;
}

/* ---- CBC and CTR ---- */

int kf_aes_cbc_encrypt(const uint8_t *key, size_t key_len, const uint8_t iv[16],
                       const uint8_t *in, size_t len, uint8_t *out)
{
    KF_ENSURE(iv && ((in && out) || len == 0), KF_ERR_ARG);
    KF_ENSURE(len % AES_BLOCK_SIZE == 0, KF_ERR_ARG);
    struct kf_aes_key aes;
    KF_GUARD(kf_aes_key_set_encrypt(&aes, key, key_len));
    uint8_t chain[AES_BLOCK_SIZE]; /* nettle advances the IV in place */
    memcpy(chain, iv, sizeof(chain));
    if (len)
        cbc_encrypt(&aes.ctx, aes.encrypt, AES_BLOCK_SIZE, chain, len, out, in);
    kf_wipe(chain, sizeof(chain));
    kf_aes_key_clear(&aes);
    return KF_OK;
}

int kf_aes_cbc_decrypt(const uint8_t *key, size_t key_len, const uint8_t iv[16],
                       const uint8_t *in, size_t len, uint8_t *out)
{
    KF_ENSURE(iv && ((in && out) || len == 0), KF_ERR_ARG);
    KF_ENSURE(len % AES_BLOCK_SIZE == 0, KF_ERR_ARG);
    struct kf_aes_key aes;
    KF_GUARD(kf_aes_key_set_decrypt(&aes, key, key_len));
    uint8_t chain[AES_BLOCK_SIZE];
    memcpy(chain, iv, sizeof(chain));
    if (len)
        cbc_decrypt(&aes.ctx, aes.decrypt, AES_BLOCK_SIZE, chain, len, out, in);
    kf_wipe(chain, sizeof(chain));
    kf_aes_key_clear(&aes);
    return KF_OK;
}

int kf_aes_ctr(const uint8_t *key, size_t key_len, const uint8_t ctr[16], const uint8_t *in,
               size_t len, uint8_t *out)
{
    KF_ENSURE(ctr && ((in && out) || len == 0), KF_ERR_ARG);
    struct kf_aes_key aes;
    KF_GUARD(kf_aes_key_set_encrypt(&aes, key, key_len));
    uint8_t counter[AES_BLOCK_SIZE];
    memcpy(counter, ctr, sizeof(counter));
    if (len)
        ctr_crypt(&aes.ctx, aes.encrypt, AES_BLOCK_SIZE, counter, len, out, in);
    kf_wipe(counter, sizeof(counter));
    kf_aes_key_clear(&aes);
    return KF_OK;
}

/* ---- ECB ---- */

int kf_aes_ecb_encrypt(const uint8_t *key, size_t key_len, const uint8_t *in, size_t len,
                       uint8_t *out)
{
    KF_ENSURE((in && out) || len == 0, KF_ERR_ARG);
    KF_ENSURE(len % AES_BLOCK_SIZE == 0, KF_ERR_ARG);
    struct kf_aes_key aes;
    KF_GUARD(kf_aes_key_set_encrypt(&aes, key, key_len));
    if (len)
        aes.encrypt(&aes.ctx, len, out, in); /* nettle's cipher functions are ECB over len */
    kf_aes_key_clear(&aes);
    return KF_OK;
}

int kf_aes_ecb_decrypt(const uint8_t *key, size_t key_len, const uint8_t *in, size_t len,
                       uint8_t *out)
{
    KF_ENSURE((in && out) || len == 0, KF_ERR_ARG);
    KF_ENSURE(len % AES_BLOCK_SIZE == 0, KF_ERR_ARG);
    struct kf_aes_key aes;
    KF_GUARD(kf_aes_key_set_decrypt(&aes, key, key_len));
    if (len)
        aes.decrypt(&aes.ctx, len, out, in);
    kf_aes_key_clear(&aes);
    return KF_OK;
}

/* ---- GCM in parts ---- */

struct kf_aes_gcm_stream {
    struct gcm_run run;
    uint64_t total;
    bool ended_partial; /* a part that was not whole blocks: only the tag may follow */
};

int kf_aes_gcm_stream_start(const uint8_t *key, size_t key_len, const uint8_t *iv, size_t iv_len,
                            const uint8_t *ad, size_t ad_len, kf_aes_gcm_stream **out)
{
    KF_ENSURE(out, KF_ERR_ARG);
    kf_aes_gcm_stream *s = kf_secmem_alloc(sizeof(*s)); /* holds the key schedule */
    KF_ENSURE(s, KF_ERR_SECMEM);
    memset(s, 0, sizeof(*s));
    int rc = gcm_start(&s->run, key, key_len, iv, iv_len, ad, ad_len);
    if (rc < 0) {
        kf_aes_gcm_stream_free(s);
        return rc;
    }
    *out = s;
    return KF_OK;
}

int kf_aes_gcm_stream_encrypt(kf_aes_gcm_stream *s, const uint8_t *in, size_t len, uint8_t *out)
{
    KF_ENSURE(s && ((in && out) || len == 0), KF_ERR_ARG);
    KF_ENSURE(!s->ended_partial, KF_ERR_ARG);
    KF_ENSURE((uint64_t)len <= GCM_MAX_PLAINTEXT - s->total, KF_ERR_LIMIT);
    if (len % AES_BLOCK_SIZE)
        s->ended_partial = true; /* nettle's gcm_encrypt: only the last call may be partial */
    if (len)
        gcm_encrypt(&s->run.state, &s->run.hkey, &s->run.aes.ctx, s->run.aes.encrypt, len, out,
                    in);
    s->total += len;
    return KF_OK;
}

int kf_aes_gcm_stream_tag(kf_aes_gcm_stream *s, uint8_t *tag, size_t tag_len)
{
    KF_ENSURE(s && tag && gcm_tag_len_ok(tag_len), KF_ERR_ARG);
    gcm_digest(&s->run.state, &s->run.hkey, &s->run.aes.ctx, s->run.aes.encrypt, tag_len, tag);
    s->ended_partial = true; /* nothing may follow the tag */
    return KF_OK;
}

void kf_aes_gcm_stream_free(kf_aes_gcm_stream *s)
{
    if (!s)
        return;
    kf_wipe(s, sizeof(*s));
    kf_secmem_free(s);
}
