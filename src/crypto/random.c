/*
 * Where the crypto module's random bytes come from.
 *
 * The default is GnuTLS's DRBG (gnutls_rnd, GNUTLS_RND_KEY), so kf_crypto
 * links and works on its own. The rng module, which health-tests the raw
 * entropy source, installs kf_rng_bytes here with kf_crypto_set_random at
 * start-up; that keeps the dependency pointing from rng to crypto only and
 * needs no weak symbols. Tests install fixed bytes to reproduce published
 * vectors (OAEP seeds). Set the source before starting threads.
 */
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "crypto/crypto_internal.h"
#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

static int gnutls_key_random(void *ctx, uint8_t *out, size_t len)
{
    (void)ctx;
    return gnutls_rnd(GNUTLS_RND_KEY, out, len) == 0 ? KF_OK : KF_ERR_RNG_SOURCE;
}

struct random_source {
    kf_crypto_random_fn fn;
    void *ctx;
};

static struct random_source current = {gnutls_key_random, NULL};

void kf_crypto_set_random(kf_crypto_random_fn fn, void *ctx)
{
    current.fn = fn ? fn : gnutls_key_random;
    current.ctx = fn ? ctx : NULL;
}

int kf_crypto_random(uint8_t *out, size_t len)
{
    KF_ENSURE(out || len == 0, KF_ERR_ARG);
    if (len == 0)
        return KF_OK;
    struct random_source src = current;
    int rc = src.fn(src.ctx, out, len);
    if (rc < 0) {
        kf_wipe(out, len);
        return rc;
    }
    return KF_OK;
}

void kf_nettle_random(void *ctx, size_t len, uint8_t *out)
{
    struct kf_random_ctx *rnd = ctx;
    if (kf_crypto_random(out, len) == KF_OK)
        return;
    /*
     * nettle cannot be told the source failed, and it loops until the bytes
     * give an acceptable value (a non-zero scalar below the group order,
     * two distinct primes). Feed it a public xorshift stream so it
     * terminates; the caller sees the flag and discards the result.
     */
    rnd->failed = 1;
    if (rnd->filler == 0)
        rnd->filler = 0x9e3779b9u;
    for (size_t i = 0; i < len; i++) {
        rnd->filler ^= rnd->filler << 13;
        rnd->filler ^= rnd->filler >> 17;
        rnd->filler ^= rnd->filler << 5;
        out[i] = (uint8_t)(rnd->filler >> 24);
    }
}
