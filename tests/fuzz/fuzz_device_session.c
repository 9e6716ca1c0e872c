/*
 * libFuzzer target: one input as a SessionKey (kfd_session_accept), as a
 * SessionAck (kfd_session_confirm for KEK 77, seq 1, a fixed SK) and as a
 * SessionRecord (kfd_record_open under that SK), on a fixed device
 * ("meter-1" holding KEK 77 = 80 81 .. 9f with partner "base-1", window
 * [1700000000, +1 day), 1000 uses). A refusal must change nothing and hand
 * out no key. The record is opened as the partner's (the direction of the
 * device that accepted the fixed SK) and as our own: no record opens in both
 * directions.
 * Seeds: tests/fuzz/corpus/fuzz_device_session/ (see fuzz_device_part.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "device/keys.h"
#include "keyfleet/device.h"

#include "fuzz_device_env.h"

static void make_template(struct kfd_device *d)
{
    fuzz_device_base(d);
    struct kfd_kek *k = &d->st.keks[0];
    k->in_use = true, k->role = KFD_ROLE_A, k->kek_id = 77;
    strcpy(k->partner, "base-1");
    k->not_before = 1700000000, k->not_after = 1700000000 + 86400, k->max_uses = 1000;
    for (int i = 0; i < 32; i++)
        k->key[i] = (uint8_t)(0x80 + i);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct kfd_device template;
    static int ready;
    if (!ready) {
        make_template(&template);
        ready = 1;
    }
    struct kfd_device d = template;
    uint8_t sk[KFD_KEY_LEN], ack[512], fixed_sk[KFD_KEY_LEN], out[KFD_DATA_MAX];
    kf_buf ack_out;
    kf_buf_fixed(&ack_out, ack, sizeof(ack));
    int rc = kfd_session_accept(&d, data, size, sk, &ack_out);
    if (rc != KF_OK) {
        static const uint8_t zero[KFD_KEY_LEN];
        if (memcmp(&d.st, &template.st, sizeof(d.st)) != 0 || memcmp(sk, zero, sizeof(sk)) != 0 ||
            ack_out.len != 0)
            abort();
    }
    for (int i = 0; i < KFD_KEY_LEN; i++)
        fixed_sk[i] = (uint8_t)(0x40 + i);
    (void)kfd_session_confirm(&template, "base-1", 77, 1, fixed_sk, data, size);
    struct kfd_channel ch, own;
    size_t n;
    if (kfd_channel_init(&ch, fixed_sk, KFD_DIR_ACCEPTER) != KF_OK ||
        kfd_channel_init(&own, fixed_sk, KFD_DIR_OFFERER) != KF_OK)
        abort();
    rc = kfd_record_open(&ch, data, size, out, sizeof(out), &n);
    if ((rc == KF_OK) != (ch.seq != 0) || (rc == KF_OK && n > sizeof(out)))
        abort();
    int rc_own = kfd_record_open(&own, data, size, out, sizeof(out), &n);
    if ((rc_own == KF_OK) != (own.seq != 0) || (rc == KF_OK && rc_own == KF_OK))
        abort();
    kfd_wipe(&ch, sizeof(ch));
    kfd_wipe(&own, sizeof(own));
    kfd_close(&d);
    return 0;
}
