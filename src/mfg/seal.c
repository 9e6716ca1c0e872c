/*
 * Keys sealed to a role and under Brass's archive key (docs/manufacturing.md,
 * "Cryptography"):
 *
 *   sealed (80) = eph_pub(32) || ct(32) || tag(16)
 *     shared = X25519(eph, recipient_pub)
 *     okm    = HKDF-SHA256(salt = eph_pub || recipient_pub, ikm = shared,
 *                          info = "keyfleet-mfg-seal-v1" || 0x00 || context, 44)
 *     AES-256-GCM, key okm[0..32), nonce okm[32..44), AD = context
 *   archive (60) = nonce(12) || ct(32) || tag(16), AES-256-GCM under the
 *     archive key, random nonce, AD = context
 *   context = domain || 0x00 || [key id]_64 || recipient role ID
 *
 * Every secret intermediate (ephemeral private key, shared secret, okm) lives
 * on the stack and is wiped before return. Opening answers KF_ERR_AUTH for any
 * failure, whatever its cause, and leaves the output key zeroed.
 * CT: no branch or index depends on key material here; the primitives are nettle's.
 */
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/mfg.h"
#include "keyfleet/secmem.h"
#include "mfg/internal.h"

#define SEAL_INFO_LABEL "keyfleet-mfg-seal-v1"
/* a domain, or "<domain>/<period>" for a token key (docs: TokenKeys) */
#define CONTEXT_DOMAIN_MAX (KF_MFG_DOMAIN_MAX + 16)
#define CONTEXT_MAX (CONTEXT_DOMAIN_MAX + 1 + 8 + KF_MFG_ROLE_ID_LEN)
#define OKM_LEN (KF_MFG_KEY_LEN + KF_GCM_IV_LEN)

/* domain || 0x00 || [key_id]_64 || recipient_id into ctx[CONTEXT_MAX]. */
static int make_context(const char *domain, uint64_t key_id, const char *recipient_id,
                        uint8_t ctx[CONTEXT_MAX], size_t *ctx_len)
{
    KF_ENSURE(domain && recipient_id, KF_ERR_ARG);
    size_t dlen = strnlen(domain, CONTEXT_DOMAIN_MAX + 1);
    KF_ENSURE(dlen >= 1 && dlen <= CONTEXT_DOMAIN_MAX, KF_ERR_ARG);
    KF_ENSURE(kf_mfg_role_id_parse(recipient_id, NULL), KF_ERR_ARG);
    kf_buf b;
    kf_buf_fixed(&b, ctx, CONTEXT_MAX);
    KF_GUARD(kf_buf_put_bytes(&b, domain, dlen));
    KF_GUARD(kf_buf_put_u8(&b, 0));
    KF_GUARD(kf_buf_put_u64(&b, key_id));
    KF_GUARD(kf_buf_put_bytes(&b, recipient_id, KF_MFG_ROLE_ID_LEN));
    *ctx_len = b.len;
    return KF_OK;
}

/* okm = HKDF-SHA256(eph_pub || recipient_pub, shared, label || 0x00 || context, 44) */
static int seal_okm(const uint8_t eph_pub[32], const uint8_t recipient_pub[32],
                    const uint8_t shared[32], const uint8_t *ctx, size_t ctx_len,
                    uint8_t okm[OKM_LEN])
{
    uint8_t salt[64], info[sizeof(SEAL_INFO_LABEL) + CONTEXT_MAX];
    kf_buf s, i;
    kf_buf_fixed(&s, salt, sizeof(salt));
    kf_buf_fixed(&i, info, sizeof(info));
    KF_GUARD(kf_buf_put_bytes(&s, eph_pub, 32));
    KF_GUARD(kf_buf_put_bytes(&s, recipient_pub, 32));
    KF_GUARD(kf_buf_put_bytes(&i, SEAL_INFO_LABEL, sizeof(SEAL_INFO_LABEL))); /* with its NUL */
    KF_GUARD(kf_buf_put_bytes(&i, ctx, ctx_len));
    return kf_hkdf_sha256(salt, s.len, shared, 32, info, i.len, okm, OKM_LEN);
}

int kf_mfg_seal_key(const uint8_t recipient_pub[32], const char *domain, uint64_t key_id,
                    const char *recipient_id, const uint8_t key[KF_MFG_KEY_LEN],
                    uint8_t out[KF_MFG_SEALED_LEN])
{
    KF_ENSURE(recipient_pub && key && out, KF_ERR_ARG);
    uint8_t ctx[CONTEXT_MAX];
    size_t ctx_len;
    KF_GUARD(make_context(domain, key_id, recipient_id, ctx, &ctx_len));

    uint8_t eph[32], eph_pub[32], shared[32], okm[OKM_LEN], sealed[KF_MFG_SEALED_LEN];
    uint8_t *ct, *tag;
    kf_buf w;
    kf_buf_fixed(&w, sealed, sizeof(sealed));
    int rc = kf_crypto_random(eph, sizeof(eph));
    if (rc == KF_OK)
        rc = kf_x25519_public(eph, eph_pub);
    if (rc == KF_OK) /* refuses a low-order recipient key (all-zero shared secret) */
        rc = kf_x25519(eph, recipient_pub, shared);
    if (rc == KF_OK)
        rc = seal_okm(eph_pub, recipient_pub, shared, ctx, ctx_len, okm);
    if (rc == KF_OK)
        rc = kf_buf_put_bytes(&w, eph_pub, sizeof(eph_pub));
    if (rc == KF_OK)
        rc = kf_buf_put_space(&w, KF_MFG_KEY_LEN, &ct);
    if (rc == KF_OK)
        rc = kf_buf_put_space(&w, KF_GCM_TAG_LEN, &tag);
    if (rc == KF_OK)
        rc = kf_aes_gcm_seal(okm, KF_MFG_KEY_LEN, okm + KF_MFG_KEY_LEN, KF_GCM_IV_LEN, ctx, ctx_len,
                             key, KF_MFG_KEY_LEN, ct, tag);
    if (rc == KF_OK)
        memcpy(out, sealed, sizeof(sealed));
    kf_wipe(eph, sizeof(eph));
    kf_wipe(shared, sizeof(shared));
    kf_wipe(okm, sizeof(okm));
    return rc;
}

int kf_mfg_open_key(const uint8_t recipient_priv[32], const char *domain, uint64_t key_id,
                    const char *recipient_id, const uint8_t in[KF_MFG_SEALED_LEN],
                    uint8_t key[KF_MFG_KEY_LEN])
{
    KF_ENSURE(key != NULL, KF_ERR_ARG);
    memset(key, 0, KF_MFG_KEY_LEN);
    KF_ENSURE(recipient_priv && in, KF_ERR_ARG);
    uint8_t ctx[CONTEXT_MAX];
    size_t ctx_len;
    if (make_context(domain, key_id, recipient_id, ctx, &ctx_len) != KF_OK)
        return KF_ERR_AUTH;

    uint8_t recipient_pub[32], shared[32], okm[OKM_LEN];
    const uint8_t *eph_pub, *ct, *tag;
    kf_buf r;
    kf_buf_reader(&r, in, KF_MFG_SEALED_LEN);
    bool ok = kf_buf_get_ptr(&r, 32, &eph_pub) == KF_OK &&
              kf_buf_get_ptr(&r, KF_MFG_KEY_LEN, &ct) == KF_OK &&
              kf_buf_get_ptr(&r, KF_GCM_TAG_LEN, &tag) == KF_OK &&
              kf_x25519_public(recipient_priv, recipient_pub) == KF_OK &&
              kf_x25519(recipient_priv, eph_pub, shared) == KF_OK &&
              seal_okm(eph_pub, recipient_pub, shared, ctx, ctx_len, okm) == KF_OK &&
              kf_aes_gcm_open(okm, KF_MFG_KEY_LEN, okm + KF_MFG_KEY_LEN, KF_GCM_IV_LEN, ctx,
                              ctx_len, ct, KF_MFG_KEY_LEN, tag, key) == KF_OK;
    kf_wipe(shared, sizeof(shared));
    kf_wipe(okm, sizeof(okm));
    if (!ok) {
        kf_wipe(key, KF_MFG_KEY_LEN);
        return KF_ERR_AUTH;
    }
    return KF_OK;
}

int kf_mfg_archive_seal(const uint8_t archive_key[32], const char *domain, uint64_t key_id,
                        const char *brass_id, const uint8_t key[KF_MFG_KEY_LEN],
                        uint8_t out[KF_MFG_ARCHIVE_LEN])
{
    KF_ENSURE(archive_key && key && out, KF_ERR_ARG);
    uint8_t ctx[CONTEXT_MAX];
    size_t ctx_len;
    KF_GUARD(make_context(domain, key_id, brass_id, ctx, &ctx_len));
    uint8_t sealed[KF_MFG_ARCHIVE_LEN], *nonce, *ct, *tag;
    kf_buf w;
    kf_buf_fixed(&w, sealed, sizeof(sealed));
    KF_GUARD(kf_buf_put_space(&w, KF_GCM_IV_LEN, &nonce));
    KF_GUARD(kf_buf_put_space(&w, KF_MFG_KEY_LEN, &ct));
    KF_GUARD(kf_buf_put_space(&w, KF_GCM_TAG_LEN, &tag));
    KF_GUARD(kf_crypto_random(nonce, KF_GCM_IV_LEN));
    KF_GUARD(kf_aes_gcm_seal(archive_key, 32, nonce, KF_GCM_IV_LEN, ctx, ctx_len, key,
                             KF_MFG_KEY_LEN, ct, tag));
    memcpy(out, sealed, sizeof(sealed));
    return KF_OK;
}

int kf_mfg_archive_open(const uint8_t archive_key[32], const char *domain, uint64_t key_id,
                        const char *brass_id, const uint8_t in[KF_MFG_ARCHIVE_LEN],
                        uint8_t key[KF_MFG_KEY_LEN])
{
    KF_ENSURE(key != NULL, KF_ERR_ARG);
    memset(key, 0, KF_MFG_KEY_LEN);
    KF_ENSURE(archive_key && in, KF_ERR_ARG);
    uint8_t ctx[CONTEXT_MAX];
    size_t ctx_len;
    const uint8_t *nonce, *ct, *tag;
    kf_buf r;
    kf_buf_reader(&r, in, KF_MFG_ARCHIVE_LEN);
    if (make_context(domain, key_id, brass_id, ctx, &ctx_len) != KF_OK ||
        kf_buf_get_ptr(&r, KF_GCM_IV_LEN, &nonce) != KF_OK ||
        kf_buf_get_ptr(&r, KF_MFG_KEY_LEN, &ct) != KF_OK ||
        kf_buf_get_ptr(&r, KF_GCM_TAG_LEN, &tag) != KF_OK ||
        kf_aes_gcm_open(archive_key, 32, nonce, KF_GCM_IV_LEN, ctx, ctx_len, ct, KF_MFG_KEY_LEN,
                        tag, key) != KF_OK) {
        kf_wipe(key, KF_MFG_KEY_LEN);
        return KF_ERR_AUTH;
    }
    return KF_OK;
}
