/*
 * The fixed device of the libkeyfleet-device pairing and session fuzz targets
 * (fuzz_device_part.c, fuzz_device_session.c): "meter-1" in "plant-7" with
 * MKEK 00 01 .. 1f and no KEK yet, whose storage always succeeds, whose clock
 * stands at FUZZ_DEVICE_NOW and whose random source gives 0x5A bytes.
 */
#ifndef FUZZ_DEVICE_ENV_H
#define FUZZ_DEVICE_ENV_H

#include <stdint.h>
#include <string.h>

#include "keyfleet/device.h"

#define FUZZ_DEVICE_NOW 1700000000

static int save_ok(void *ctx, const uint8_t *state, size_t len)
{
    (void)ctx, (void)state, (void)len;
    return 0;
}

static int64_t fixed_now(void *ctx)
{
    (void)ctx;
    return FUZZ_DEVICE_NOW;
}

static int fixed_random(void *ctx, uint8_t *out, size_t n)
{
    (void)ctx;
    memset(out, 0x5A, n);
    return 0;
}

/* The device without KEKs; the target adds the ones it needs. */
static void fuzz_device_base(struct kfd_device *d)
{
    memset(d, 0, sizeof(*d));
    strcpy(d->st.id, "meter-1");
    strcpy(d->st.domain, "plant-7");
    for (int i = 0; i < 32; i++)
        d->st.mkek[i] = (uint8_t)i;
    d->env = (struct kfd_env){NULL, save_ok, fixed_now, fixed_random};
}

#endif
