/*
 * libFuzzer target: kfd_ack_decode, then kfd_ack_verify under a fixed MKEK
 * (00 01 .. 1f). A decoded ack must have a valid device ID, a status in
 * 1..8 (KFD_ACK_ACCEPTED..KFD_ACK_PARTNER) and a body inside the input.
 * Seeds: tests/fuzz/corpus/fuzz_device_ack/ (see fuzz_device_part.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/device.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t mkek[KFD_KEY_LEN];
    struct kfd_ack a;
    for (int i = 0; i < KFD_KEY_LEN; i++)
        mkek[i] = (uint8_t)i;
    if (kfd_ack_decode(data, size, &a) != KF_OK)
        return 0;
    if (kfd_id_valid(a.device) != KF_OK || a.status < KFD_ACK_ACCEPTED || a.status > KFD_ACK_PARTNER)
        abort();
    if (a.body.p < data || a.body.p + a.body.len > data + size)
        abort();
    int rc = kfd_ack_verify(&a, mkek);
    if (rc != KF_OK && rc != KF_ERR_PAIR_INTEGRITY)
        abort();
    return 0;
}
