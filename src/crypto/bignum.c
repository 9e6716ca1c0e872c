/* Wiping of GMP integers that held secrets. */
#include "crypto/crypto_internal.h"
#include "keyfleet/secmem.h"

void kf_mpz_clear_secret(mpz_t x)
{
    /* _mp_alloc counts every limb GMP allocated, including ones above the current size. */
    kf_wipe(x->_mp_d, (size_t)x->_mp_alloc * sizeof(mp_limb_t));
    mpz_clear(x);
}
