/*
 * Soft backend: the root key exists only while unsealed, in secure memory,
 * rebuilt from M operator shares (Shamir over GF(2^8)). At rest there is
 * only public metadata: M, N and a key check value that tells a right set
 * of shares from a wrong one without revealing anything about the key.
 */
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/log.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "secmod/secmod_internal.h"

#define KCV_LABEL "keyfleet root check"
#define DOMAIN_WRAP_INFO "keyfleet domain-key wrap"
#define AUDIT_MAC_INFO "keyfleet audit mac"

/* KCV = HMAC-SHA-256(root, "keyfleet root check") truncated to 16 bytes. */
static int key_check_value(const uint8_t root[SECMOD_KEY_LEN], uint8_t kcv[SECMOD_KCV_LEN])
{
    uint8_t mac[KF_SHA256_LEN];
    int rc = kf_hmac_sha256(root, SECMOD_KEY_LEN, (const uint8_t *)KCV_LABEL,
                            sizeof(KCV_LABEL) - 1, mac);
    memcpy(kcv, mac, SECMOD_KCV_LEN);
    kf_wipe(mac, sizeof(mac));
    return rc;
}

static bool threshold_allowed(unsigned m, unsigned n, bool dev)
{
    if (dev)
        return m == 1 && n == 1; /* the key file is the whole key: no sharing */
    return m >= 2 && m <= n && n <= 255;
}

static void wipe_share_texts(char shares[][KF_SHARE_MAX], unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        kf_wipe(shares[i], KF_SHARE_MAX);
}

/* Split root into n shares and encode each as operator text. */
static int make_share_texts(const uint8_t *root, unsigned m, unsigned n,
                            char shares[][KF_SHARE_MAX])
{
    uint8_t *ys = kf_secmem_alloc((size_t)n * SECMOD_KEY_LEN);
    struct kf_share *share = kf_secmem_alloc(sizeof(*share));
    int rc = ys && share ? KF_OK : KF_ERR_SECMEM;
    if (rc == KF_OK)
        rc = kf_shamir_split(root, SECMOD_KEY_LEN, m, n, ys);
    for (unsigned i = 0; rc == KF_OK && i < n; i++) {
        share->m = m;
        share->x = (uint8_t)(i + 1);
        share->len = SECMOD_KEY_LEN;
        memcpy(share->y, ys + (size_t)i * SECMOD_KEY_LEN, SECMOD_KEY_LEN);
        rc = kf_share_encode(share, shares[i]);
    }
    kf_secmem_free(share);
    kf_secmem_free(ys);
    return rc;
}

static int write_init_files(kf_secmod *sm, const struct secmod_meta *meta, bool dev,
                            const char *dev_share)
{
    if (dev) {
        int rc = secmod_file_create(sm->dir, SECMOD_DEV_KEY_FILE, (const uint8_t *)dev_share,
                                    strlen(dev_share));
        if (rc == KF_ERR_EXISTS)
            kf_error("secmod: %s/%s exists without metadata; remove it to initialise again",
                     sm->dir, SECMOD_DEV_KEY_FILE);
        KF_GUARD(rc);
    }
    /* The metadata goes last: its presence is what "initialised" means. */
    return secmod_meta_write(sm->dir, meta);
}

int soft_init(kf_secmod *sm, unsigned m, unsigned n, bool dev, char shares[][KF_SHARE_MAX])
{
    KF_ENSURE(!sm->initialised, KF_ERR_ALREADY_INIT);
    KF_ENSURE(threshold_allowed(m, n, dev), KF_ERR_THRESHOLD);
    uint8_t *root = kf_secmem_alloc(SECMOD_KEY_LEN);
    KF_ENSURE(root != NULL, KF_ERR_SECMEM);
    struct secmod_meta meta = {.backend = KF_SECMOD_SOFT, .dev = dev, .m = m, .n = n};
    int rc = kf_rng_bytes(root, SECMOD_KEY_LEN);
    if (rc == KF_OK)
        rc = key_check_value(root, meta.kcv);
    if (rc == KF_OK)
        rc = make_share_texts(root, m, n, shares);
    kf_secmem_free(root); /* the module stays sealed after init */
    if (rc == KF_OK)
        rc = write_init_files(sm, &meta, dev, shares[0]);
    if (rc < 0) {
        wipe_share_texts(shares, n);
        return rc;
    }
    sm->initialised = true;
    sm->dev = dev;
    sm->m = m;
    sm->n = n;
    memcpy(sm->kcv, meta.kcv, SECMOD_KCV_LEN);
    kf_info("secmod: soft root key created, %u of %u shares%s", m, n, dev ? " (dev mode)" : "");
    return KF_OK;
}

static void discard_pending(kf_secmod *sm)
{
    kf_secmem_free(sm->pending);
    sm->pending = NULL;
}

/* With the root key rebuilt and checked: derive the working keys. */
static int install_root(kf_secmod *sm, const uint8_t *root)
{
    struct soft_keys *keys = kf_secmem_alloc(sizeof(*keys));
    KF_ENSURE(keys != NULL, KF_ERR_SECMEM);
    memcpy(keys->root, root, SECMOD_KEY_LEN);
    int rc = kf_hkdf_sha256(NULL, 0, root, SECMOD_KEY_LEN, (const uint8_t *)DOMAIN_WRAP_INFO,
                            sizeof(DOMAIN_WRAP_INFO) - 1, keys->domain_wrap, SECMOD_KEY_LEN);
    if (rc == KF_OK)
        rc = kf_hkdf_sha256(NULL, 0, root, SECMOD_KEY_LEN, (const uint8_t *)AUDIT_MAC_INFO,
                            sizeof(AUDIT_MAC_INFO) - 1, keys->audit, SECMOD_KEY_LEN);
    if (rc < 0) {
        kf_secmem_free(keys);
        return rc;
    }
    sm->soft = keys;
    sm->sealed = false;
    return KF_OK;
}

/* All M shares are in: rebuild, compare with the key check value. */
static int combine_pending(kf_secmod *sm)
{
    struct pending_shares *p = sm->pending;
    uint8_t *root = kf_secmem_alloc(SECMOD_KEY_LEN);
    KF_ENSURE(root != NULL, KF_ERR_SECMEM);
    uint8_t kcv[SECMOD_KCV_LEN];
    int rc = kf_shamir_combine(p->xs, &p->ys[0][0], p->count, SECMOD_KEY_LEN, root);
    if (rc == KF_OK)
        rc = key_check_value(root, kcv);
    if (rc == KF_OK && !kf_ct_equal(kcv, sm->kcv, SECMOD_KCV_LEN)) {
        kf_warn("secmod: %u shares were given but they do not rebuild the root key", p->count);
        rc = KF_ERR_SHARES_WRONG;
    }
    if (rc == KF_OK)
        rc = install_root(sm, root);
    kf_secmem_free(root);
    discard_pending(sm); /* right or wrong, a complete set is not kept */
    return rc;
}

/* Checks one decoded share against this module and the shares so far. */
static int accept_share(kf_secmod *sm, const struct kf_share *share)
{
    KF_ENSURE(share->m == sm->m && share->len == SECMOD_KEY_LEN, KF_ERR_SHARE);
    KF_ENSURE(share->x >= 1 && share->x <= sm->n, KF_ERR_SHARE);
    if (!sm->pending) {
        sm->pending = kf_secmem_alloc(sizeof(*sm->pending));
        KF_ENSURE(sm->pending != NULL, KF_ERR_SECMEM);
    }
    struct pending_shares *p = sm->pending;
    for (unsigned i = 0; i < p->count; i++)
        KF_ENSURE(p->xs[i] != share->x, KF_ERR_SHARE); /* the same custodian twice */
    p->xs[p->count] = share->x;
    memcpy(p->ys[p->count], share->y, SECMOD_KEY_LEN);
    p->count++;
    return KF_OK;
}

int soft_unseal_share(kf_secmod *sm, const char *text, size_t text_len, bool *done)
{
    *done = false;
    KF_ENSURE(sm->initialised, KF_ERR_NOT_INIT);
    KF_ENSURE(sm->sealed, KF_ERR_ALREADY_UNSEALED);
    struct kf_share *share = kf_secmem_alloc(sizeof(*share));
    KF_ENSURE(share != NULL, KF_ERR_SECMEM);
    int rc = kf_share_decode(text, text_len, share);
    if (rc == KF_OK)
        rc = accept_share(sm, share);
    kf_secmem_free(share);
    KF_GUARD(rc);
    if (sm->pending->count < sm->m)
        return KF_OK;
    KF_GUARD(combine_pending(sm));
    *done = true;
    kf_info("secmod: unsealed");
    return KF_OK;
}

void soft_seal(kf_secmod *sm)
{
    kf_secmem_free(sm->soft);
    sm->soft = NULL;
    discard_pending(sm);
}

/* blob = format || IV || ciphertext || tag, AD = "kf-domain-v1" || domain_id */
int soft_domain_wrap(kf_secmod *sm, uint64_t domain_id, const uint8_t key[SECMOD_KEY_LEN],
                     kf_buf *out)
{
    uint8_t ad[sizeof(DOMAIN_WRAP_AD) - 1 + 8];
    uint8_t iv[KF_GCM_IV_LEN];
    uint8_t *ct, *tag;
    domain_wrap_ad(domain_id, ad);
    KF_GUARD(kf_rng_bytes(iv, sizeof(iv)));
    KF_GUARD(kf_buf_reserve(out, DOMAIN_BLOB_LEN));
    KF_GUARD(kf_buf_put_u8(out, DOMAIN_BLOB_SOFT_GCM));
    KF_GUARD(kf_buf_put_bytes(out, iv, sizeof(iv)));
    KF_GUARD(kf_buf_put_space(out, SECMOD_KEY_LEN, &ct));
    KF_GUARD(kf_buf_put_space(out, KF_GCM_TAG_LEN, &tag));
    return kf_aes_gcm_seal(sm->soft->domain_wrap, SECMOD_KEY_LEN, iv, sizeof(iv), ad, sizeof(ad),
                           key, SECMOD_KEY_LEN, ct, tag);
}

int soft_domain_unwrap(kf_secmod *sm, uint64_t domain_id, const uint8_t *blob, size_t len,
                       uint8_t key[SECMOD_KEY_LEN])
{
    uint8_t ad[sizeof(DOMAIN_WRAP_AD) - 1 + 8];
    domain_wrap_ad(domain_id, ad);
    kf_buf b;
    kf_buf_reader(&b, blob, len);
    uint8_t format;
    const uint8_t *iv, *ct, *tag;
    KF_ENSURE(len == DOMAIN_BLOB_LEN, KF_ERR_FORMAT);
    KF_GUARD(kf_buf_get_u8(&b, &format));
    KF_ENSURE(format == DOMAIN_BLOB_SOFT_GCM, KF_ERR_FORMAT);
    KF_GUARD(kf_buf_get_ptr(&b, KF_GCM_IV_LEN, &iv));
    KF_GUARD(kf_buf_get_ptr(&b, SECMOD_KEY_LEN, &ct));
    KF_GUARD(kf_buf_get_ptr(&b, KF_GCM_TAG_LEN, &tag));
    return kf_aes_gcm_open(sm->soft->domain_wrap, SECMOD_KEY_LEN, iv, KF_GCM_IV_LEN, ad,
                           sizeof(ad), ct, SECMOD_KEY_LEN, tag, key);
}

int soft_audit_mac(kf_secmod *sm, const uint8_t *data, size_t len, uint8_t out[32])
{
    return kf_hmac_sha256(sm->soft->audit, SECMOD_KEY_LEN, data, len, out);
}
