/*
 * Random numbers (seed 003 "Key Generation"): every output is the XOR of the
 * raw entropy source (the kernel's getrandom) and a DRBG (GnuTLS's
 * gnutls_rnd, GNUTLS_RND_KEY). The raw source is health-tested continuously
 * with the SP 800-90B section 4.4 tests on bytes: the Repetition Count Test
 * and the Adaptive Proportion Test (window 512), with cut-offs for
 * alpha = 2^-40 at an assessed min-entropy H per byte.
 * Once a test fails the generator latches into failure: every request is
 * refused with KF_ERR_RNG_HEALTH until kf_rng_reset_health() after the
 * source recovers (the caller audits the failure).
 */
#ifndef KEYFLEET_RNG_H
#define KEYFLEET_RNG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/error.h"

/* Raw source: fill out with len bytes or return a negative kf error. */
typedef int (*kf_rng_source_fn)(void *ctx, uint8_t *out, size_t len);

/* Replace the raw source (tests inject a stuck one); NULL restores getrandom. */
void kf_rng_set_source(kf_rng_source_fn fn, void *ctx);
/* Health-tested random bytes. Thread-safe. */
KF_RESULT int kf_rng_bytes(uint8_t *out, size_t len);
/* True once a health test has failed (latched). */
bool kf_rng_failed(void);
/* Clear the latch and the test state (after an operator has looked). */
void kf_rng_reset_health(void);
/* Route kf_crypto_random (nonces, key generation inside src/crypto) through
 * kf_rng_bytes so all crypto randomness is health-tested. Call once at start. */
void kf_rng_install(void);

/* The tests themselves, exposed for unit testing with crafted sample streams. */
struct kf_rng_health {
    uint8_t last;
    uint32_t repeat;       /* RCT run length */
    uint8_t apt_first;     /* APT reference sample */
    uint32_t apt_seen;     /* samples in the current window */
    uint32_t apt_matches;  /* occurrences of apt_first in it */
    bool started;
};
#define KF_RNG_RCT_CUTOFF 6   /* 90B 4.4.1: 1 + ceil(-log2(alpha) / H) = 1 + ceil(40 / 8), H = 8 bits per byte from getrandom */
#define KF_RNG_APT_WINDOW 512
/*
 * APT cutoff, SP 800-90B 4.4.2: C = 1 + CRITBINOM(W, 2^-H, 1 - alpha), i.e.
 * 1 + the smallest k with P(Binom(512, 2^-8) <= k) >= 1 - 2^-40, which is the
 * smallest c with P(Binom(512, 2^-8) >= c) <= 2^-40. Computed exactly with
 * fractions.Fraction and math.comb in python3: k = 18, so C = 19. (The same
 * computation with alpha = 2^-20 gives 13, the value in 90B Table 2 for
 * H = 8, W = 512, which checks the method.) Recompute if H or alpha change.
 */
#define KF_RNG_APT_CUTOFF 19
void kf_rng_health_init(struct kf_rng_health *h);
/* KF_OK, or KF_ERR_RNG_HEALTH if the sample makes a test fail. */
KF_RESULT int kf_rng_health_feed(struct kf_rng_health *h, uint8_t sample);

#endif
