/*
 * ECDSA over P-256 (FIPS 186-4) with nettle. Keys and signatures travel as
 * fixed-width big-endian byte strings; this file converts them to and from
 * nettle's ecc_scalar / ecc_point / dsa_signature and wipes every copy of the
 * private scalar.
 */
#include <string.h>

#include <nettle/bignum.h>
#include <nettle/ecc-curve.h>
#include <nettle/ecc.h>
#include <nettle/ecdsa.h>

#include "crypto/crypto_internal.h"
#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

#define P256_BYTES 32
#define P256_POINT_PREFIX 0x04 /* SEC 1 uncompressed point */

static const struct ecc_curve *p256(void)
{
    return nettle_get_secp_256r1();
}

static void scalar_clear_secret(struct ecc_scalar *s)
{
    kf_wipe(s->p, ecc_size(p256()) * sizeof(mp_limb_t));
    ecc_scalar_clear(s);
}

/* KF_ERR_KEY_SIZE unless 0 < priv < n. The caller clears *s on success. */
static int scalar_from_bytes(struct ecc_scalar *s, const uint8_t priv[P256_BYTES])
{
    mpz_t z;
    mpz_init(z);
    nettle_mpz_set_str_256_u(z, P256_BYTES, priv);
    ecc_scalar_init(s, p256());
    int ok = ecc_scalar_set(s, z);
    kf_mpz_clear_secret(z);
    if (!ok) {
        scalar_clear_secret(s);
        return KF_ERR_KEY_SIZE;
    }
    return KF_OK;
}

static void scalar_to_bytes(const struct ecc_scalar *s, uint8_t priv[P256_BYTES])
{
    mpz_t z;
    mpz_init(z);
    ecc_scalar_get(s, z);
    nettle_mpz_get_str_256(P256_BYTES, priv, z);
    kf_mpz_clear_secret(z);
}

/* KF_ERR_FORMAT unless pub is 04||X||Y with (X, Y) on the curve. The caller clears *p on success. */
static int point_from_bytes(struct ecc_point *p, const uint8_t pub[65])
{
    KF_ENSURE(pub[0] == P256_POINT_PREFIX, KF_ERR_FORMAT);
    mpz_t x, y;
    mpz_init(x);
    mpz_init(y);
    nettle_mpz_set_str_256_u(x, P256_BYTES, pub + 1);
    nettle_mpz_set_str_256_u(y, P256_BYTES, pub + 1 + P256_BYTES);
    ecc_point_init(p, p256());
    int ok = ecc_point_set(p, x, y); /* checks the curve equation and the coordinate range */
    mpz_clear(x);
    mpz_clear(y);
    if (!ok) {
        ecc_point_clear(p);
        return KF_ERR_FORMAT;
    }
    return KF_OK;
}

static void point_to_bytes(const struct ecc_point *p, uint8_t pub[65])
{
    mpz_t x, y;
    mpz_init(x);
    mpz_init(y);
    ecc_point_get(p, x, y);
    pub[0] = P256_POINT_PREFIX;
    nettle_mpz_get_str_256(P256_BYTES, pub + 1, x);
    nettle_mpz_get_str_256(P256_BYTES, pub + 1 + P256_BYTES, y);
    mpz_clear(x);
    mpz_clear(y);
}

int kf_p256_generate(uint8_t priv[32], uint8_t pub[65])
{
    KF_ENSURE(priv && pub, KF_ERR_ARG);
    struct ecc_point point;
    struct ecc_scalar scalar;
    struct kf_random_ctx rnd = {0};
    ecc_point_init(&point, p256());
    ecc_scalar_init(&scalar, p256());
    ecdsa_generate_keypair(&point, &scalar, &rnd, kf_nettle_random);
    int rc = rnd.failed ? KF_ERR_RNG_SOURCE : KF_OK;
    if (rc == KF_OK) {
        scalar_to_bytes(&scalar, priv);
        point_to_bytes(&point, pub);
    }
    scalar_clear_secret(&scalar);
    ecc_point_clear(&point);
    return rc;
}

int kf_p256_public(const uint8_t priv[32], uint8_t pub[65])
{
    KF_ENSURE(priv && pub, KF_ERR_ARG);
    struct ecc_scalar scalar;
    KF_GUARD(scalar_from_bytes(&scalar, priv));
    struct ecc_point point;
    ecc_point_init(&point, p256());
    ecc_point_mul_g(&point, &scalar);
    point_to_bytes(&point, pub);
    ecc_point_clear(&point);
    scalar_clear_secret(&scalar);
    return KF_OK;
}

int kf_p256_sign_digest(const uint8_t priv[32], const uint8_t *digest, size_t dlen,
                        uint8_t sig[64])
{
    KF_ENSURE(priv && digest && sig && dlen >= 1, KF_ERR_ARG);
    struct ecc_scalar scalar;
    KF_GUARD(scalar_from_bytes(&scalar, priv));
    struct dsa_signature rs;
    struct kf_random_ctx rnd = {0};
    dsa_signature_init(&rs);
    ecdsa_sign(&scalar, &rnd, kf_nettle_random, dlen, digest, &rs);
    /* A failed random source would mean a predictable nonce, which leaks the key. */
    int rc = rnd.failed ? KF_ERR_RNG_SOURCE : KF_OK;
    if (rc == KF_OK) {
        nettle_mpz_get_str_256(P256_BYTES, sig, rs.r);
        nettle_mpz_get_str_256(P256_BYTES, sig + P256_BYTES, rs.s);
    }
    dsa_signature_clear(&rs);
    scalar_clear_secret(&scalar);
    return rc;
}

int kf_p256_verify_digest(const uint8_t pub[65], const uint8_t *digest, size_t dlen,
                          const uint8_t sig[64])
{
    KF_ENSURE(pub && digest && sig && dlen >= 1, KF_ERR_ARG);
    struct ecc_point point;
    KF_GUARD(point_from_bytes(&point, pub));
    struct dsa_signature rs;
    dsa_signature_init(&rs);
    nettle_mpz_set_str_256_u(rs.r, P256_BYTES, sig);
    nettle_mpz_set_str_256_u(rs.s, P256_BYTES, sig + P256_BYTES);
    int ok = ecdsa_verify(&point, dlen, digest, &rs); /* rejects r, s outside [1, n-1] */
    dsa_signature_clear(&rs);
    ecc_point_clear(&point);
    return ok ? KF_OK : KF_ERR_BAD_SIGNATURE;
}

int kf_p256_sign(const uint8_t priv[32], const uint8_t *msg, size_t len, uint8_t sig[64])
{
    uint8_t digest[KF_SHA256_LEN];
    KF_GUARD(kf_sha256(msg, len, digest));
    int rc = kf_p256_sign_digest(priv, digest, sizeof(digest), sig);
    kf_wipe(digest, sizeof(digest));
    return rc;
}

int kf_p256_verify(const uint8_t pub[65], const uint8_t *msg, size_t len, const uint8_t sig[64])
{
    uint8_t digest[KF_SHA256_LEN];
    KF_GUARD(kf_sha256(msg, len, digest));
    return kf_p256_verify_digest(pub, digest, sizeof(digest), sig);
}
