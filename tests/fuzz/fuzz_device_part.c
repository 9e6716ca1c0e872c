/*
 * libFuzzer target: a KeyfleetPairPart into kfd_pair_accept, as role A and
 * as role B, on a fixed device ("meter-1", MKEK = 00 01 .. 1f, two KEKs
 * held, clock at 1700000000). Whatever the input, the device must write an
 * ack that decodes and verifies under its own key, and a refused part must
 * leave the device as it was; the same part inside the work buffer that takes
 * the state encoding (as the driver passes it) must give the same verdict,
 * state and ack.
 * kfd_pair_check must reach kfd_pair_accept's verdict for role A (but never
 * store, so a part refused only for want of a slot passes it).
 * The same input is also B's answer to a good SM_A the device checks and then
 * concludes (kfd_pair_conclude, SM_A: KEKs 900 and 901 with base-1, counter
 * 1): that always succeeds and moves the counter to 1; the device takes the
 * two KEKs (superseding its KEK 6 with base-1, keeping KEK 5 with base-2)
 * and acks ACCEPTED exactly when B's verdict is KF_OK, and otherwise keeps
 * its KEKs as they were and acks PARTNER.
 * Seeds: tests/fuzz/corpus/fuzz_device_part/, written by the fuzz_seeds test
 * in tests/unit/test_device_driver.c (KFD_CORPUS_DIR=<dir> ./test_device_driver).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "device/internal.h"
#include "keyfleet/device.h"

#include "fuzz_device_env.h"

static void make_template(struct kfd_device *d)
{
    fuzz_device_base(d);
    for (int s = 0; s < 2; s++) {
        struct kfd_kek *k = &d->st.keks[s];
        k->in_use = true, k->role = KFD_ROLE_A, k->kek_id = 5 + (uint64_t)s;
        strcpy(k->partner, s ? "base-1" : "base-2");
        k->not_before = 1700000000 - 10, k->not_after = 1700000000 + 10, k->max_uses = 3;
    }
}

/* The driver's way (kfd_pair_accept_in): the part lies inside the work buffer that takes the
 * state encoding. It must come to the same verdict, state and ack as kfd_pair_accept. */
static void same_in_work_buffer(const struct kfd_device *template, enum kfd_role role,
                                const uint8_t *data, size_t size, int rc,
                                const struct kfd_device *d, const kf_buf *ack)
{
    static uint8_t work[KFD_STATE_MAX + KFD_MSG_MAX + 64];
    const size_t at = 24;
    if (size > sizeof(work) - at)
        return;
    struct kfd_device d2 = *template;
    uint8_t ack2[512];
    kf_buf out;
    kf_buf_fixed(&out, ack2, sizeof(ack2));
    memcpy(work + at, data, size);
    int rc2 = kfd_pair_accept_in(&d2, role, work + at, size, &out, work, sizeof(work));
    if (rc2 != rc || memcmp(&d2.st, &d->st, sizeof(d2.st)) != 0 || out.len != ack->len ||
        memcmp(ack2, ack->data, out.len) != 0)
        abort();
    kfd_close(&d2);
}

/* The good SM_A the device concludes with (the same as fuzz_seeds' ack_b_900 answers). */
static uint8_t sm_a[1024];
static size_t sm_a_len;

static void make_sm_a(void)
{
    uint8_t mkek[KFD_KEY_LEN], keks[2][KFD_KEY_LEN], nonce[KFD_NONCE_LEN];
    const struct kfd_issue_kek meta[2] = {{900, 1700000000 - 5, 1700000000 + 100, 10},
                                          {901, 1700000000 + 100, 1700000000 + 200, 10}};
    kf_buf out;
    for (int i = 0; i < KFD_KEY_LEN; i++)
        mkek[i] = (uint8_t)i, keks[0][i] = (uint8_t)(0xC0 + i), keks[1][i] = (uint8_t)(0xE0 - i);
    memset(nonce, 0x33, sizeof(nonce));
    kf_buf_fixed(&out, sm_a, sizeof(sm_a));
    if (kfd_issue_part(mkek, KFD_ROLE_A, "meter-1", "base-1", 1, meta,
                       (const uint8_t(*)[KFD_KEY_LEN])keks, 2, nonce, &out) != KF_OK)
        abort();
    sm_a_len = out.len;
}

static bool holds(const struct kfd_device *d, const char *partner, uint64_t kek_id)
{
    for (size_t i = 0; i < KFD_MAX_KEKS; i++)
        if (d->st.keks[i].in_use && d->st.keks[i].kek_id == kek_id &&
            strcmp(d->st.keks[i].partner, partner) == 0)
            return true;
    return false;
}

static void conclude_with(const struct kfd_device *template, const uint8_t *data, size_t size)
{
    struct kfd_device d = *template;
    uint8_t ack[512];
    kf_buf out;
    struct kfd_ack a;
    int pv = 1;
    if (kfd_pair_check(&d, sm_a, sm_a_len) != KF_OK)
        abort();
    kf_buf_fixed(&out, ack, sizeof(ack));
    if (kfd_pair_conclude(&d, sm_a, sm_a_len, data, size, &pv, &out) != KF_OK || pv > 0)
        abort();
    if (kfd_ack_decode(ack, out.len, &a) != KF_OK || kfd_ack_verify(&a, d.st.mkek) != KF_OK ||
        a.kek_id != 900 || a.part_counter != 1 || a.device_counter != 1 ||
        d.st.last_counter != 1)
        abort();
    if (pv == KF_OK) {
        if (a.status != KFD_ACK_ACCEPTED || !holds(&d, "base-1", 900) ||
            !holds(&d, "base-1", 901) || holds(&d, "base-1", 6) || !holds(&d, "base-2", 5))
            abort();
    } else if (a.status != KFD_ACK_PARTNER ||
               memcmp(d.st.keks, template->st.keks, sizeof(d.st.keks)) != 0) {
        abort();
    }
    kfd_close(&d);
}

static void accept_as(const struct kfd_device *template, enum kfd_role role, const uint8_t *data,
                      size_t size)
{
    struct kfd_device d = *template;
    uint8_t ack[512];
    kf_buf out;
    struct kfd_ack a;
    kf_buf_fixed(&out, ack, sizeof(ack));
    int rc = kfd_pair_accept(&d, role, data, size, &out);
    if (kfd_ack_decode(ack, out.len, &a) != KF_OK || kfd_ack_verify(&a, d.st.mkek) != KF_OK)
        abort();
    if (rc != KF_OK && memcmp(&d.st, &template->st, sizeof(d.st)) != 0)
        abort();
    if (role == KFD_ROLE_A) {
        int checked = kfd_pair_check(template, data, size);
        if (checked != (rc == KF_ERR_KEK_SLOTS ? KF_OK : rc))
            abort();
    }
    same_in_work_buffer(template, role, data, size, rc, &d, &out);
    kfd_close(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct kfd_device template;
    static int ready;
    if (!ready) {
        make_template(&template);
        make_sm_a();
        ready = 1;
    }
    accept_as(&template, KFD_ROLE_A, data, size);
    accept_as(&template, KFD_ROLE_B, data, size);
    conclude_with(&template, data, size);
    return 0;
}
