/* Ed25519 (RFC 8032, pure) over nettle's ed25519_sha512. */
#include <nettle/eddsa.h>

#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

int kf_ed25519_public(const uint8_t priv[32], uint8_t pub[32])
{
    KF_ENSURE(priv && pub, KF_ERR_ARG);
    ed25519_sha512_public_key(pub, priv);
    return KF_OK;
}

int kf_ed25519_sign(const uint8_t priv[32], const uint8_t *msg, size_t len, uint8_t sig[64])
{
    KF_ENSURE(priv && sig && (msg || len == 0), KF_ERR_ARG);
    /* nettle wants the public key alongside; derive it rather than trust a caller's copy. */
    uint8_t pub[ED25519_KEY_SIZE];
    ed25519_sha512_public_key(pub, priv);
    ed25519_sha512_sign(pub, priv, len, msg, sig);
    kf_wipe(pub, sizeof(pub));
    return KF_OK;
}

int kf_ed25519_verify(const uint8_t pub[32], const uint8_t *msg, size_t len, const uint8_t sig[64])
{
    KF_ENSURE(pub && sig && (msg || len == 0), KF_ERR_ARG);
    return ed25519_sha512_verify(pub, len, msg, sig) ? KF_OK : KF_ERR_BAD_SIGNATURE;
}
