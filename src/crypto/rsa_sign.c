/*
 * RSA signatures (RFC 8017): PKCS#1 v1.5 (section 8.2) through nettle's
 * rsa_pkcs1_sign_tr / rsa_pkcs1_verify with the DigestInfo prefixes of
 * section 9.2, and PSS (section 8.1) through nettle's pss_encode_mgf1 /
 * pss_verify_mgf1, so every hash in enum kf_hash works for both.
 */
#include <string.h>

#include <nettle/bignum.h>
#include <nettle/pss.h>

#include "crypto/crypto_internal.h"
#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

#define DIGEST_INFO_MAX (19 + 64)

/* RFC 8017 section 9.2, note 1: DER of DigestInfo up to the digest octets. */
static int digest_info_prefix(enum kf_hash h, const uint8_t **prefix, size_t *len)
{
    static const uint8_t sha1[] = {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e,
                                   0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14};
#define SHA2_PREFIX(total, oid_last, dlen)                                                        \
    {0x30, total, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,                                 \
     0x65, 0x03,  0x04, 0x02, oid_last, 0x05, 0x00, 0x04, dlen}
    static const uint8_t sha224[] = SHA2_PREFIX(0x2d, 0x04, 0x1c);
    static const uint8_t sha256[] = SHA2_PREFIX(0x31, 0x01, 0x20);
    static const uint8_t sha384[] = SHA2_PREFIX(0x41, 0x02, 0x30);
    static const uint8_t sha512[] = SHA2_PREFIX(0x51, 0x03, 0x40);
#undef SHA2_PREFIX
    switch (h) {
    case KF_HASH_SHA1:
        *prefix = sha1, *len = sizeof(sha1);
        return KF_OK;
    case KF_HASH_SHA224:
        *prefix = sha224, *len = sizeof(sha224);
        return KF_OK;
    case KF_HASH_SHA256:
        *prefix = sha256, *len = sizeof(sha256);
        return KF_OK;
    case KF_HASH_SHA384:
        *prefix = sha384, *len = sizeof(sha384);
        return KF_OK;
    case KF_HASH_SHA512:
        *prefix = sha512, *len = sizeof(sha512);
        return KF_OK;
    }
    return KF_ERR_UNSUPPORTED;
}

/* DigestInfo = prefix || Hash(msg). */
static int digest_info(enum kf_hash h, const uint8_t *msg, size_t len,
                       uint8_t out[DIGEST_INFO_MAX], size_t *out_len)
{
    const uint8_t *prefix;
    size_t prefix_len;
    KF_GUARD(digest_info_prefix(h, &prefix, &prefix_len));
    memcpy(out, prefix, prefix_len);
    KF_GUARD(kf_hash(h, msg, len, out + prefix_len));
    *out_len = prefix_len + kf_hash_len(h);
    return KF_OK;
}

/* s as an integer, refusing a wrong length or s >= n (RFC 8017 5.2.2 step 1). */
static int signature_representative(const kf_rsa_key *k, const uint8_t *sig, size_t sig_len,
                                    mpz_t s)
{
    KF_ENSURE(sig_len == k->pub.size, KF_ERR_BAD_SIGNATURE);
    nettle_mpz_set_str_256_u(s, sig_len, sig);
    KF_ENSURE(mpz_cmp(s, k->pub.n) < 0, KF_ERR_BAD_SIGNATURE);
    return KF_OK;
}

int kf_rsa_pkcs1_sign(const kf_rsa_key *k, enum kf_hash h, const uint8_t *msg, size_t len,
                      uint8_t *sig)
{
    KF_ENSURE(k && sig && (msg || len == 0), KF_ERR_ARG);
    KF_ENSURE(k->has_private, KF_ERR_ARG);
    uint8_t info[DIGEST_INFO_MAX];
    size_t info_len;
    KF_GUARD(digest_info(h, msg, len, info, &info_len));
    mpz_t s;
    mpz_init(s);
    struct kf_random_ctx rnd = {0};
    int ok = rsa_pkcs1_sign_tr(&k->pub, &k->priv, &rnd, kf_nettle_random, info_len, info, s);
    int rc = !ok ? KF_ERR_CRYPTO : rnd.failed ? KF_ERR_RNG_SOURCE : KF_OK;
    if (rc == KF_OK)
        nettle_mpz_get_str_256(k->pub.size, sig, s);
    mpz_clear(s);
    kf_wipe(info, sizeof(info));
    return rc;
}

int kf_rsa_pkcs1_verify(const kf_rsa_key *k, enum kf_hash h, const uint8_t *msg, size_t len,
                        const uint8_t *sig, size_t sig_len)
{
    KF_ENSURE(k && sig && (msg || len == 0), KF_ERR_ARG);
    uint8_t info[DIGEST_INFO_MAX];
    size_t info_len;
    KF_GUARD(digest_info(h, msg, len, info, &info_len));
    mpz_t s;
    mpz_init(s);
    int rc = signature_representative(k, sig, sig_len, s);
    if (rc == KF_OK && !rsa_pkcs1_verify(&k->pub, info_len, info, s))
        rc = KF_ERR_BAD_SIGNATURE;
    mpz_clear(s);
    return rc;
}

/* PSS with emBits = modBits - 1 and salt length = hash length (RFC 8017 9.1). */
static size_t pss_em_bits(const kf_rsa_key *k)
{
    return mpz_sizeinbase(k->pub.n, 2) - 1;
}

int kf_rsa_pss_sign(const kf_rsa_key *k, enum kf_hash h, const uint8_t *msg, size_t len,
                    uint8_t *sig)
{
    KF_ENSURE(k && sig && (msg || len == 0), KF_ERR_ARG);
    KF_ENSURE(k->has_private, KF_ERR_ARG);
    const struct nettle_hash *hash = kf_nettle_hash(h);
    KF_ENSURE(hash, KF_ERR_UNSUPPORTED);
    uint8_t digest[KF_MAX_DIGEST_SIZE];
    uint8_t salt[KF_MAX_DIGEST_SIZE];
    KF_GUARD(kf_hash(h, msg, len, digest));
    KF_GUARD(kf_crypto_random(salt, hash->digest_size));

    mpz_t em, s;
    mpz_init(em);
    mpz_init(s);
    struct kf_random_ctx rnd = {0};
    int rc = KF_OK;
    if (!pss_encode_mgf1(em, pss_em_bits(k), hash, hash->digest_size, salt, digest))
        rc = KF_ERR_KEY_SIZE; /* modulus too small for this hash */
    else if (!rsa_compute_root_tr(&k->pub, &k->priv, &rnd, kf_nettle_random, s, em))
        rc = KF_ERR_CRYPTO;
    else if (rnd.failed)
        rc = KF_ERR_RNG_SOURCE;
    if (rc == KF_OK)
        nettle_mpz_get_str_256(k->pub.size, sig, s);
    mpz_clear(em);
    mpz_clear(s);
    kf_wipe(salt, sizeof(salt));
    kf_wipe(digest, sizeof(digest));
    return rc;
}

int kf_rsa_pss_verify(const kf_rsa_key *k, enum kf_hash h, const uint8_t *msg, size_t len,
                      const uint8_t *sig, size_t sig_len)
{
    KF_ENSURE(kf_hash_len(h) > 0, KF_ERR_UNSUPPORTED);
    return kf_rsa_pss_verify_ex(k, h, kf_hash_len(h), msg, len, sig, sig_len);
}

size_t kf_rsa_pss_max_salt_len(const kf_rsa_key *k, enum kf_hash h)
{
    if (!k)
        return 0;
    size_t em_len = (pss_em_bits(k) + 7) / 8, hlen = kf_hash_len(h);
    return hlen && em_len >= hlen + 2 ? em_len - hlen - 2 : 0;
}

int kf_rsa_pss_verify_ex(const kf_rsa_key *k, enum kf_hash h, size_t salt_len,
                         const uint8_t *msg, size_t len, const uint8_t *sig, size_t sig_len)
{
    KF_ENSURE(k && sig && (msg || len == 0), KF_ERR_ARG);
    const struct nettle_hash *hash = kf_nettle_hash(h);
    KF_ENSURE(hash, KF_ERR_UNSUPPORTED);
    uint8_t digest[KF_MAX_DIGEST_SIZE];
    KF_GUARD(kf_hash(h, msg, len, digest));
    mpz_t s, em;
    mpz_init(s);
    mpz_init(em);
    int rc = signature_representative(k, sig, sig_len, s);
    if (rc == KF_OK) {
        mpz_powm(em, s, k->pub.e, k->pub.n); /* RSAVP1: public, no secrets involved */
        if (!pss_verify_mgf1(em, pss_em_bits(k), hash, salt_len, digest))
            rc = KF_ERR_BAD_SIGNATURE;
    }
    mpz_clear(s);
    mpz_clear(em);
    return rc;
}
