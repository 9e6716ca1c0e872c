/*
 * Route the crypto module's internal randomness (signature nonces, key
 * generation, OAEP seeds) through the health-tested generator. Kept in its
 * own object so a program that never installs it does not pull in kf_crypto.
 */
#include "keyfleet/crypto.h"
#include "keyfleet/rng.h"

static int health_tested_random(void *ctx, uint8_t *out, size_t len)
{
    (void)ctx;
    return kf_rng_bytes(out, len);
}

void kf_rng_install(void)
{
    kf_crypto_set_random(health_tested_random, NULL);
}
