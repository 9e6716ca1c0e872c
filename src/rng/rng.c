/*
 * The generator (seed 003, "two combined random sources"): each output byte
 * is a raw kernel byte XOR a GnuTLS DRBG byte. Either source alone being
 * predictable does not make the output predictable; the raw bytes are
 * health-tested before use, and a failure latches until an operator resets.
 */
#include "keyfleet/rng.h"

#include <errno.h>
#include <pthread.h>
#include <sys/random.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "keyfleet/log.h"
#include "keyfleet/secmem.h"

#define RNG_CHUNK 256 /* bytes drawn from each source per step */

static int getrandom_source(void *ctx, uint8_t *out, size_t len);

static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static kf_rng_source_fn raw_source = getrandom_source;
static void *raw_source_ctx;
static struct kf_rng_health health;
static bool health_failed;

/* The kernel CSPRNG, blocking until it is seeded (flags 0). */
static int getrandom_source(void *ctx, uint8_t *out, size_t len)
{
    (void)ctx;
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(out + got, len - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            kf_error("rng: getrandom failed: errno %d", errno);
            return KF_ERR_RNG_SOURCE;
        }
        got += (size_t)n;
    }
    return KF_OK;
}

void kf_rng_set_source(kf_rng_source_fn fn, void *ctx)
{
    pthread_mutex_lock(&rng_lock);
    raw_source = fn ? fn : getrandom_source;
    raw_source_ctx = fn ? ctx : NULL;
    pthread_mutex_unlock(&rng_lock);
}

bool kf_rng_failed(void)
{
    pthread_mutex_lock(&rng_lock);
    bool failed = health_failed;
    pthread_mutex_unlock(&rng_lock);
    return failed;
}

void kf_rng_reset_health(void)
{
    pthread_mutex_lock(&rng_lock);
    kf_rng_health_init(&health);
    health_failed = false;
    pthread_mutex_unlock(&rng_lock);
}

/* Runs every raw byte through the tests; latches on the first failure. */
static int check_raw_chunk(const uint8_t *raw, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (kf_rng_health_feed(&health, raw[i]) < 0) {
            health_failed = true;
            kf_error("rng: raw source failed an SP 800-90B health test; "
                     "random output is refused until the health state is reset");
            return KF_ERR_RNG_HEALTH;
        }
    }
    return KF_OK;
}

/* One chunk: raw (tested) XOR DRBG. Caller holds rng_lock. */
static int fill_chunk(uint8_t *out, size_t len)
{
    uint8_t raw[RNG_CHUNK];
    uint8_t drbg[RNG_CHUNK];
    int rc = raw_source(raw_source_ctx, raw, len);
    if (rc < 0) {
        rc = KF_ERR_RNG_SOURCE;
        goto out;
    }
    rc = check_raw_chunk(raw, len);
    if (rc < 0)
        goto out;
    if (gnutls_rnd(GNUTLS_RND_KEY, drbg, len) != 0) {
        rc = KF_ERR_CRYPTO;
        goto out;
    }
    for (size_t i = 0; i < len; i++)
        out[i] = raw[i] ^ drbg[i];
out:
    kf_wipe(raw, sizeof(raw));
    kf_wipe(drbg, sizeof(drbg));
    return rc;
}

int kf_rng_bytes(uint8_t *out, size_t len)
{
    KF_ENSURE(out != NULL || len == 0, KF_ERR_ARG);
    int rc = KF_OK;
    pthread_mutex_lock(&rng_lock);
    if (health_failed) {
        rc = KF_ERR_RNG_HEALTH;
        goto out;
    }
    for (size_t done = 0; done < len;) {
        size_t n = len - done < RNG_CHUNK ? len - done : RNG_CHUNK;
        rc = fill_chunk(out + done, n);
        if (rc < 0)
            break;
        done += n;
    }
out:
    pthread_mutex_unlock(&rng_lock);
    if (rc < 0)
        kf_wipe(out, len); /* never hand out a partial buffer as if it were random */
    return rc;
}
