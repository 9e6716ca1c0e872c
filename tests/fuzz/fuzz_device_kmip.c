/*
 * libFuzzer target: kfd_kmip_unwrap of a Response Message (the payload it
 * returns must lie inside the input, the result message must be terminated)
 * and kfd_pair_split, of the input itself and of an unwrapped payload.
 * Seeds: tests/fuzz/corpus/fuzz_device_kmip/ (see fuzz_device_part.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/device.h"
#include "keyfleet/kmip_tags.h"

static void split(const uint8_t *m, size_t len)
{
    struct kfd_span a, b;
    if (kfd_pair_split(m, len, &a, &b) != KF_OK)
        return;
    if (a.p != m || a.len + b.len != len || b.p != m + a.len)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kfd_span payload;
    uint32_t reason;
    char msg[64];
    int rc = kfd_kmip_unwrap(data, size, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, &payload, &reason, msg,
                             sizeof(msg));
    if (memchr(msg, '\0', sizeof(msg)) == NULL)
        abort();
    if (rc == KF_OK) {
        if (payload.p < data || payload.p + payload.len > data + size)
            abort();
        split(payload.p, payload.len);
    }
    split(data, size);
    return 0;
}
