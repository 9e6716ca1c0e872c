/* X25519 (RFC 7748) over nettle's curve25519; nettle clamps the scalar. */
#include <nettle/curve25519.h>

#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

int kf_x25519_public(const uint8_t priv[32], uint8_t pub[32])
{
    KF_ENSURE(priv && pub, KF_ERR_ARG);
    curve25519_mul_g(pub, priv);
    return KF_OK;
}

int kf_x25519(const uint8_t priv[32], const uint8_t peer_pub[32], uint8_t shared[32])
{
    KF_ENSURE(priv && peer_pub && shared, KF_ERR_ARG);
    curve25519_mul(shared, priv, peer_pub);
    /* RFC 7748 section 6.1: a low-order peer point gives all zeros; refuse it. */
    if (kf_ct_is_zero(shared, CURVE25519_SIZE)) {
        kf_wipe(shared, CURVE25519_SIZE);
        return KF_ERR_CRYPTO;
    }
    return KF_OK;
}
