/*
 * libFuzzer target: kfd_state_decode (a decoded state must encode back to
 * exactly the input: the encoding is canonical) and kfd_install (an
 * installation package).
 * Seeds: tests/fuzz/corpus/fuzz_device_state/ (see fuzz_device_part.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/device.h"

static int save_ok(void *ctx, const uint8_t *state, size_t len)
{
    (void)ctx, (void)state, (void)len;
    return 0;
}

static int64_t fixed_now(void *ctx)
{
    (void)ctx;
    return 1700000000;
}

static int fixed_random(void *ctx, uint8_t *out, size_t n)
{
    (void)ctx;
    memset(out, 0x5A, n);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kfd_state st;
    if (kfd_state_decode(&st, data, size) == KF_OK) {
        uint8_t again[KFD_STATE_MAX];
        kf_buf out;
        kf_buf_fixed(&out, again, sizeof(again));
        if (kfd_state_encode(&st, &out) != KF_OK || out.len != size ||
            memcmp(again, data, size) != 0)
            abort();
    }
    const struct kfd_env env = {NULL, save_ok, fixed_now, fixed_random};
    struct kfd_device d;
    if (kfd_install(&d, &env, data, size) == KF_OK &&
        (kfd_id_valid(d.st.id) != KF_OK || kfd_id_valid(d.st.domain) != KF_OK))
        abort();
    kfd_close(&d);
    return 0;
}
