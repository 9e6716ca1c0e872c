/*
 * SP 800-90B section 4.4 continuous health tests on the raw source, one byte
 * per sample. Pure functions over caller-owned state, so tests can feed them
 * crafted streams; rng.c runs them on every raw byte.
 */
#include "keyfleet/rng.h"

#include <string.h>

void kf_rng_health_init(struct kf_rng_health *h)
{
    memset(h, 0, sizeof(*h));
}

/*
 * 4.4.1 Repetition Count Test: a run of KF_RNG_RCT_CUTOFF identical samples
 * (counting the first) fails. A stuck source is caught within six bytes.
 */
static int repetition_count_test(struct kf_rng_health *h, uint8_t sample)
{
    if (h->started && sample == h->last) {
        h->repeat++;
        if (h->repeat >= KF_RNG_RCT_CUTOFF)
            return KF_ERR_RNG_HEALTH;
    } else {
        h->last = sample;
        h->repeat = 1;
    }
    return KF_OK;
}

/*
 * 4.4.2 Adaptive Proportion Test: the first sample of each window of
 * KF_RNG_APT_WINDOW samples is the reference; if it occurs
 * KF_RNG_APT_CUTOFF times in the window (counting itself) the test fails.
 * Catches a source that has lost entropy without getting stuck.
 */
static int adaptive_proportion_test(struct kf_rng_health *h, uint8_t sample)
{
    if (h->apt_seen == 0) {
        h->apt_first = sample;
        h->apt_matches = 1;
        h->apt_seen = 1;
        return KF_OK;
    }
    if (sample == h->apt_first) {
        h->apt_matches++;
        if (h->apt_matches >= KF_RNG_APT_CUTOFF)
            return KF_ERR_RNG_HEALTH;
    }
    h->apt_seen++;
    if (h->apt_seen >= KF_RNG_APT_WINDOW)
        h->apt_seen = 0; /* the next sample opens a new window */
    return KF_OK;
}

int kf_rng_health_feed(struct kf_rng_health *h, uint8_t sample)
{
    int rct = repetition_count_test(h, sample);
    int apt = adaptive_proportion_test(h, sample);
    h->started = true;
    return (rct < 0 || apt < 0) ? KF_ERR_RNG_HEALTH : KF_OK;
}
