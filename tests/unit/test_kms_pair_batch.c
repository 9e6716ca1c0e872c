/*
 * Batched pair requests and acknowledgements (docs/pairing.md "Batched
 * requests"): a KMIP Request Message with several KeyfleetPairKeyRequest (or
 * KeyfleetPairAckReport) items runs them in ONE group-commit transaction and
 * one fdatasync, with the KMIP semantics of a message whose items ran one
 * after the other:
 *  - every item answered in request order, its parts opened in that order by
 *    real libkeyfleet-device states (consecutive counters, KEK IDs in order);
 *  - one batch of the device queue and one fdatasync for the whole message
 *    (the old path made one per item: these counts would be 10, not 1);
 *  - Batch Error Continuation Option Stop (the default) and Undo: nothing
 *    after a failed item runs, persists or is answered (counters and KEK IDs
 *    in the store say so); Continue: everything runs;
 *  - authorisation per item: an item for a pair the device principal may not
 *    use is refused (and audited) while the others succeed;
 *  - acknowledgements likewise, including a replayed report and a bad MAC in
 *    the middle of one;
 *  - the transaction's device counters (several issuances to one device in
 *    one transaction write its row once): an item failing half-way puts back
 *    what it moved, and an ack in the same transaction reads the row as the
 *    issuances before it left it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <pthread.h>
#include <sqlite3.h>
#include <unistd.h>

#include "keyfleet/device.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/log.h"
#include "keyfleet/rng.h"
#include "keyfleet/ttlv.h"
#include "kms/kms_internal.h"

#include "kms_device_fixture.h"
#include "kms_fixture.h"

struct fixture {
    char dir[64];
    kf_kms *kms;
    struct kf_principal device; /* role device in VENDOR only */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || kms_pairing_open(f->dir, sizeof(f->dir), "pairbatch", &f->kms) < 0)
        return -1;
    f->device =
        (struct kf_principal){.name = "cert:CN=gateway-1", .roles = KF_ROLE_DEVICE, .ndomains = 1};
    snprintf(f->device.domains[0], sizeof(f->device.domains[0]), "VENDOR");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (kms_dir_remove(f->kms, f->dir) < 0)
        return -1;
    free(f);
    return 0;
}

/* ---- Devices in memory, installed from their exported packages (kms_device_fixture.h) ---- */

/* The server's view of a device: counter C_X and the last KEK ID issued to it. */
static void server_counter(kf_kms *kms, const char *id, uint64_t counter, uint64_t last_kek)
{
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_get(kms, "test", id, &info), KF_OK);
    assert_int_equal(info.counter, counter);
    assert_int_equal(info.last_kek_id, last_kek);
}

/* ---- Messages ---- */

static kf_ttlv *message(kf_arena *a, int32_t items, uint32_t on_error)
{
    kf_ttlv *msg = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    kf_ttlv *hdr = kf_ttlv_struct(a, msg, KMIP_TAG_REQUEST_HEADER);
    kf_ttlv *pv = kf_ttlv_struct(a, hdr, KMIP_TAG_PROTOCOL_VERSION);
    assert_non_null(kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 2));
    assert_non_null(kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MINOR, 1));
    if (on_error)
        assert_non_null(
            kf_ttlv_add_enum(a, hdr, KMIP_TAG_BATCH_ERROR_CONTINUATION_OPTION, on_error));
    assert_non_null(kf_ttlv_add_int(a, hdr, KMIP_TAG_BATCH_COUNT, items));
    return msg;
}

static kf_ttlv *item(kf_arena *a, kf_ttlv *msg, uint32_t op, uint8_t ubi)
{
    kf_ttlv *bi = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
    assert_non_null(kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, op));
    assert_non_null(kf_ttlv_add_bytes(a, bi, KMIP_TAG_UNIQUE_BATCH_ITEM_ID, &ubi, 1));
    kf_ttlv *p = kf_ttlv_struct(a, bi, KMIP_TAG_REQUEST_PAYLOAD);
    assert_non_null(p);
    return p;
}

static void pair_item(kf_arena *a, kf_ttlv *msg, uint8_t ubi, const char *id_a, const char *id_b,
                      int32_t kek_count)
{
    kf_ttlv *p = item(a, msg, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, ubi);
    assert_non_null(kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DEVICE_ID_A, id_a));
    assert_non_null(kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DEVICE_ID_B, id_b));
    if (kek_count)
        assert_non_null(kf_ttlv_add_int(a, p, KMIP_TAG_KEYFLEET_KEK_COUNT, kek_count));
}

/* An ack report item carrying the given acks (each the full TTLV bytes of a PairAck). */
static void ack_item(kf_arena *a, kf_ttlv *msg, uint8_t ubi, const kf_buf *acks, size_t n)
{
    kf_ttlv *p = item(a, msg, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, ubi);
    for (size_t i = 0; i < n; i++) {
        kf_ttlv *node;
        assert_int_equal(kf_ttlv_decode(acks[i].data, acks[i].len, NULL, a, &node), KF_OK);
        assert_int_equal(kf_ttlv_append(p, node), KF_OK);
    }
}

/* Run msg as who; the Response Message (in a). */
static const kf_ttlv *run(kf_kms *kms, const struct kf_principal *who, kf_arena *a,
                          const kf_ttlv *msg)
{
    return kms_kmip_exchange(kms, who, a, msg);
}

static int32_t batch_count(const kf_ttlv *resp)
{
    int32_t n = -1;
    const kf_ttlv *hdr = kf_ttlv_find(resp, KMIP_TAG_RESPONSE_HEADER);
    assert_int_equal(kf_ttlv_get_int(kf_ttlv_find(hdr, KMIP_TAG_BATCH_COUNT), &n), KF_OK);
    assert_int_equal((size_t)n, kf_ttlv_count(resp, KMIP_TAG_BATCH_ITEM));
    return n;
}

/* The i-th response item: its Unique Batch Item ID must be ubi; returns its
 * status (and reason when failed). */
static const kf_ttlv *answer(const kf_ttlv *resp, size_t i, uint8_t ubi, uint32_t *status,
                             uint32_t *reason)
{
    const kf_ttlv *it = kf_ttlv_find(resp, KMIP_TAG_BATCH_ITEM);
    for (size_t k = 0; k < i && it; k++)
        it = kf_ttlv_find_next(it, KMIP_TAG_BATCH_ITEM);
    assert_non_null(it);
    const uint8_t *id;
    size_t idlen;
    assert_int_equal(
        kf_ttlv_get_bytes(kf_ttlv_find(it, KMIP_TAG_UNIQUE_BATCH_ITEM_ID), &id, &idlen), KF_OK);
    assert_int_equal(idlen, 1);
    assert_int_equal(id[0], ubi);
    *reason = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(it, KMIP_TAG_RESULT_STATUS), status), KF_OK);
    if (*status != KMIP_RESULT_STATUS_SUCCESS)
        assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(it, KMIP_TAG_RESULT_REASON), reason), KF_OK);
    return it;
}

static void expect_success(const kf_ttlv *resp, size_t i, uint8_t ubi)
{
    uint32_t st, reason;
    answer(resp, i, ubi, &st, &reason);
    assert_int_equal(st, KMIP_RESULT_STATUS_SUCCESS);
}

static void expect_failure(const kf_ttlv *resp, size_t i, uint8_t ubi, uint32_t want_reason)
{
    uint32_t st, reason;
    answer(resp, i, ubi, &st, &reason);
    assert_int_equal(st, KMIP_RESULT_STATUS_OPERATION_FAILED);
    assert_int_equal(reason, want_reason);
}

/* Open item i's parts with the real devices (A's then B's, in the order the
 * caller goes through the items); acks into ack[0], ack[1] if given. Returns
 * the first KEK ID of the parts. */
static uint64_t accept_item(const kf_ttlv *resp, size_t i, uint8_t ubi, struct tdev *a,
                            struct tdev *b, kf_buf ack[2])
{
    const kf_ttlv *it = answer(resp, i, ubi, &(uint32_t){0}, &(uint32_t){0});
    const kf_ttlv *payload = kf_ttlv_find(it, KMIP_TAG_RESPONSE_PAYLOAD);
    assert_int_equal(kf_ttlv_count(payload, KMIP_TAG_KEYFLEET_PAIR_PART), 2);
    const kf_ttlv *part = kf_ttlv_find(payload, KMIP_TAG_KEYFLEET_PAIR_PART);
    struct tdev *dev[2] = {a, b};
    static const enum kfd_role roles[2] = {KFD_ROLE_A, KFD_ROLE_B};
    uint64_t before[2] = {a->d.st.last_counter, b->d.st.last_counter};
    for (int k = 0; k < 2; k++, part = kf_ttlv_find_next(part, KMIP_TAG_KEYFLEET_PAIR_PART)) {
        kf_buf bytes, own;
        assert_int_equal(kf_buf_alloc(&bytes, 0, 4096, 0), KF_OK);
        assert_int_equal(kf_ttlv_encode(part, &bytes), KF_OK); /* byte-exact */
        if (!ack)
            assert_int_equal(kf_buf_alloc(&own, 0, 4096, 0), KF_OK);
        else
            assert_int_equal(kf_buf_alloc(&ack[k], 0, 4096, 0), KF_OK);
        assert_int_equal(
            kfd_pair_accept(&dev[k]->d, roles[k], bytes.data, bytes.len, ack ? &ack[k] : &own),
            KF_OK);
        if (!ack)
            kf_buf_free(&own);
        kf_buf_free(&bytes);
        assert_true(dev[k]->d.st.last_counter > before[k]);
    }
    /* Both devices hold the same first KEK. */
    uint64_t kek_id = 0;
    for (int s = 0; s < KFD_MAX_KEKS; s++)
        if (a->d.st.keks[s].in_use && a->d.st.keks[s].kek_id > kek_id)
            kek_id = a->d.st.keks[s].kek_id;
    return kek_id;
}

/* ---- Counting what was committed ---- */

struct commits {
    uint64_t batches, syncs;
};

static struct commits commits_now(kf_kms *kms)
{
    return (struct commits){atomic_load(&kms->device_q.batches),
                            kf_store_sync_count(kms->store, NULL)};
}

/* meter-1 and base-1 (VENDOR) installed, and an arena for the messages;
 * meter_base_close() closes the two devices and frees the arena. */
static kf_arena *meter_base_open(kf_kms *kms, struct tdev *a, struct tdev *b)
{
    tdev_install(kms, "meter-1", "VENDOR", a);
    tdev_install(kms, "base-1", "VENDOR", b);
    kf_arena *ar;
    assert_int_equal(kf_arena_new(&ar, 0), KF_OK);
    return ar;
}

static void meter_base_close(struct tdev *a, struct tdev *b, kf_arena *ar)
{
    kfd_close(&a->d);
    kfd_close(&b->d);
    kf_arena_free(ar);
}

/* ---- Tests ---- */

static void ten_requests_in_one_commit(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b;
    kf_arena *ar = meter_base_open(f->kms, &a, &b);
    kf_ttlv *msg = message(ar, 10, 0);
    for (uint8_t i = 0; i < 10; i++)
        pair_item(ar, msg, i, "meter-1", "base-1", 0);
    struct commits c0 = commits_now(f->kms);
    const kf_ttlv *resp = run(f->kms, &f->device, ar, msg);
    struct commits c1 = commits_now(f->kms);
    /* One transaction and one fdatasync for the ten (the lone path: ten each). */
    assert_int_equal(c1.batches - c0.batches, 1);
    assert_int_equal(c1.syncs - c0.syncs, 1);
    assert_int_equal(batch_count(resp), 10);
    kf_buf acks[10][2];
    for (uint8_t i = 0; i < 10; i++) {
        expect_success(resp, i, i);
        /* Consecutive counters and KEK IDs: the devices take them in order. */
        assert_int_equal(accept_item(resp, i, i, &a, &b, acks[i]), (uint64_t)i + 1);
        assert_int_equal(a.d.st.last_counter, (uint64_t)i + 1);
        assert_int_equal(b.d.st.last_counter, (uint64_t)i + 1);
    }
    server_counter(f->kms, "meter-1", 10, 10);
    server_counter(f->kms, "base-1", 10, 10);
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "ok", NULL, 0), 10);
    /* The twenty acks: ten report items of two, one transaction. */
    msg = message(ar, 10, 0);
    for (uint8_t i = 0; i < 10; i++)
        ack_item(ar, msg, i, acks[i], 2);
    c0 = commits_now(f->kms);
    resp = run(f->kms, &f->device, ar, msg);
    c1 = commits_now(f->kms);
    assert_int_equal(c1.batches - c0.batches, 1);
    assert_int_equal(c1.syncs - c0.syncs, 1);
    assert_int_equal(batch_count(resp), 10);
    for (uint8_t i = 0; i < 10; i++) {
        const kf_ttlv *it = answer(resp, i, i, &(uint32_t){0}, &(uint32_t){0});
        expect_success(resp, i, i);
        const kf_ttlv *p = kf_ttlv_find(it, KMIP_TAG_RESPONSE_PAYLOAD);
        assert_int_equal(kf_ttlv_count(p, KMIP_TAG_KEYFLEET_DEVICE_ID), 2);
        assert_true(kf_ttlv_text_equals(kf_ttlv_find(p, KMIP_TAG_KEYFLEET_DEVICE_ID), "meter-1"));
        int64_t kek;
        assert_int_equal(kf_ttlv_get_long(kf_ttlv_find(p, KMIP_TAG_KEYFLEET_KEK_ID), &kek), KF_OK);
        assert_int_equal(kek, i + 1);
        kf_buf_free(&acks[i][0]);
        kf_buf_free(&acks[i][1]);
    }
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_get(f->kms, "test", "base-1", &info), KF_OK);
    assert_int_equal(info.acks_pending, 0);
    assert_int_equal(count_audit(f->kms, "PairAck", "ok", NULL, 0), 20);
    struct kf_audit_report r;
    assert_int_equal(kf_kms_audit_verify(f->kms, &r), KF_OK);
    meter_base_close(&a, &b, ar);
}

static void two_pairs_interleaved(void **state)
{
    struct fixture *f = *state;
    struct tdev a1, b1, a2, b2;
    kf_arena *ar = meter_base_open(f->kms, &a1, &b1);
    tdev_install(f->kms, "meter-2", "VENDOR", &a2);
    tdev_install(f->kms, "base-2", "VENDOR", &b2);
    /* m1, m2 (3 KEKs), m1, m2 (3 KEKs), m1: KEK IDs 1, 2-4, 5, 6-8, 9. */
    kf_ttlv *msg = message(ar, 5, KMIP_BATCH_ERR_STOP);
    for (uint8_t i = 0; i < 5; i++)
        pair_item(ar, msg, i, i % 2 ? "meter-2" : "meter-1", i % 2 ? "base-2" : "base-1",
                  i % 2 ? 3 : 0);
    const kf_ttlv *resp = run(f->kms, &f->device, ar, msg);
    assert_int_equal(batch_count(resp), 5);
    static const uint64_t first_kek[5] = {1, 2, 5, 6, 9};
    for (uint8_t i = 0; i < 5; i++) {
        expect_success(resp, i, i);
        uint64_t kek = i % 2 ? accept_item(resp, i, i, &a2, &b2, NULL)
                             : accept_item(resp, i, i, &a1, &b1, NULL);
        assert_int_equal(kek, first_kek[i] + (i % 2 ? 2 : 0)); /* the highest of the part */
    }
    assert_int_equal(a1.d.st.last_counter, 3);
    assert_int_equal(a2.d.st.last_counter, 2);
    server_counter(f->kms, "meter-1", 3, 9);
    server_counter(f->kms, "base-2", 2, 8);
    kfd_close(&a2.d);
    kfd_close(&b2.d);
    meter_base_close(&a1, &b1, ar);
}

/* A full message (64 items, the limit) still runs as one. */
static void sixty_four_items(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b;
    kf_arena *ar = meter_base_open(f->kms, &a, &b);
    kf_ttlv *msg = message(ar, 64, KMIP_BATCH_ERR_CONTINUE);
    for (int i = 0; i < 64; i++)
        pair_item(ar, msg, (uint8_t)i, "meter-1", "base-1", 0);
    struct commits c0 = commits_now(f->kms);
    const kf_ttlv *resp = run(f->kms, &f->device, ar, msg);
    assert_int_equal(commits_now(f->kms).batches - c0.batches, 1);
    assert_int_equal(batch_count(resp), 64);
    for (int i = 0; i < 64; i++)
        assert_int_equal(accept_item(resp, (size_t)i, (uint8_t)i, &a, &b, NULL), (uint64_t)i + 1);
    server_counter(f->kms, "meter-1", 64, 64);
    meter_base_close(&a, &b, ar);
}

/*
 * Items ok, ok, FAILING, ok, ok. The failing item is refused inside the
 * transaction (unknown partner) or before it (unknown requester: the lone
 * path answers it). Stop and Undo: three answers, the last two items never
 * ran (counters and KEK IDs in the store). Continue: five answers, four
 * issuances.
 */
static void failing_item_in_the_middle(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b;
    kf_arena *ar = meter_base_open(f->kms, &a, &b);
    static const uint32_t options[] = {0, KMIP_BATCH_ERR_STOP, KMIP_BATCH_ERR_UNDO,
                                       KMIP_BATCH_ERR_CONTINUE};
    uint64_t counter = 0, kek = 0, refusals = 0;
    for (int variant = 0; variant < 2; variant++) {
        for (size_t o = 0; o < sizeof(options) / sizeof(options[0]); o++) {
            bool cont = options[o] == KMIP_BATCH_ERR_CONTINUE;
            kf_ttlv *msg = message(ar, 5, options[o]);
            for (uint8_t i = 0; i < 5; i++) {
                if (i != 2)
                    pair_item(ar, msg, i, "meter-1", "base-1", 0);
                else if (variant == 0)
                    pair_item(ar, msg, i, "meter-1", "ghost", 0); /* refused in the transaction */
                else
                    pair_item(ar, msg, i, "ghost", "base-1", 0); /* refused before it */
            }
            const kf_ttlv *resp = run(f->kms, &f->device, ar, msg);
            assert_int_equal(batch_count(resp), cont ? 5 : 3);
            for (uint8_t i = 0; i < (cont ? 5 : 3); i++) {
                if (i == 2) {
                    expect_failure(resp, i, i, KMIP_REASON_ITEM_NOT_FOUND);
                    continue;
                }
                expect_success(resp, i, i);
                counter++;
                kek++;
                assert_int_equal(accept_item(resp, i, i, &a, &b, NULL), kek);
                assert_int_equal(a.d.st.last_counter, counter);
            }
            refusals++;
            /* Nothing of the items after the failure moved under Stop/Undo. */
            server_counter(f->kms, "meter-1", counter, kek);
            server_counter(f->kms, "base-1", counter, kek);
            assert_int_equal(count_audit(f->kms, "PairKeyRequest", "ok", NULL, 0), counter);
            assert_int_equal(
                count_audit(f->kms, "PairKeyRequest", "KF_ERR_DEVICE_UNKNOWN", NULL, 0), refusals);
        }
    }
    assert_int_equal(counter, 2 * (2 + 2 + 2 + 4));
    meter_base_close(&a, &b, ar);
}

/* The gateway may pair VENDOR devices only: a USPS pair in the middle is
 * refused and audited, the others run (Continue) or stop there (Stop). */
static void unauthorised_item_refused(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b, ua, ub;
    kf_arena *ar = meter_base_open(f->kms, &a, &b);
    tdev_install(f->kms, "usps-m", "USPS", &ua);
    tdev_install(f->kms, "usps-b", "USPS", &ub);
    kf_ttlv *msg = message(ar, 4, KMIP_BATCH_ERR_CONTINUE);
    pair_item(ar, msg, 0, "meter-1", "base-1", 0);
    pair_item(ar, msg, 1, "usps-m", "usps-b", 0);
    pair_item(ar, msg, 2, "meter-1", "base-1", 0);
    pair_item(ar, msg, 3, "meter-1", "base-1", 0);
    const kf_ttlv *resp = run(f->kms, &f->device, ar, msg);
    assert_int_equal(batch_count(resp), 4);
    expect_success(resp, 0, 0);
    expect_failure(resp, 1, 1, KMIP_REASON_PERMISSION_DENIED);
    expect_success(resp, 2, 2);
    expect_success(resp, 3, 3);
    for (uint8_t i = 0; i < 4; i++)
        if (i != 1)
            accept_item(resp, i, i, &a, &b, NULL);
    server_counter(f->kms, "meter-1", 3, 3);
    server_counter(f->kms, "usps-m", 0, 0);
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "KF_ERR_PERM", NULL, 0), 1);
    /* Stop: the item after the refusal is not run. */
    msg = message(ar, 3, 0);
    pair_item(ar, msg, 0, "meter-1", "base-1", 0);
    pair_item(ar, msg, 1, "usps-m", "usps-b", 0);
    pair_item(ar, msg, 2, "meter-1", "base-1", 0);
    resp = run(f->kms, &f->device, ar, msg);
    assert_int_equal(batch_count(resp), 2);
    expect_success(resp, 0, 0);
    expect_failure(resp, 1, 1, KMIP_REASON_PERMISSION_DENIED);
    accept_item(resp, 0, 0, &a, &b, NULL);
    server_counter(f->kms, "meter-1", 4, 4);
    server_counter(f->kms, "usps-m", 0, 0);
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "KF_ERR_PERM", NULL, 0), 2);
    /* A policy refusal (KekCount 9) in a run: refused, the rest as before. */
    msg = message(ar, 3, KMIP_BATCH_ERR_CONTINUE);
    pair_item(ar, msg, 0, "meter-1", "base-1", 0);
    pair_item(ar, msg, 1, "meter-1", "base-1", 9);
    pair_item(ar, msg, 2, "meter-1", "base-1", 0);
    resp = run(f->kms, &f->device, ar, msg);
    assert_int_equal(batch_count(resp), 3);
    expect_failure(resp, 1, 1, KMIP_REASON_INVALID_FIELD);
    accept_item(resp, 0, 0, &a, &b, NULL);
    accept_item(resp, 2, 2, &a, &b, NULL);
    server_counter(f->kms, "meter-1", 6, 6);
    kfd_close(&ua.d);
    kfd_close(&ub.d);
    meter_base_close(&a, &b, ar);
}

/* Acks batched: replayed report (Stop: the first refusal ends it; Continue:
 * every item refused), a forged MAC in the middle (Continue: the others are
 * recorded; Stop: nothing after it is). */
static void acks_batched(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b;
    kf_arena *ar = meter_base_open(f->kms, &a, &b);
    enum { N = 6 };
    kf_ttlv *msg = message(ar, N, 0);
    for (uint8_t i = 0; i < N; i++)
        pair_item(ar, msg, i, "meter-1", "base-1", 0);
    const kf_ttlv *resp = run(f->kms, &f->device, ar, msg);
    kf_buf acks[N][2];
    for (uint8_t i = 0; i < N; i++)
        accept_item(resp, i, i, &a, &b, acks[i]);
    /* Items 0-2 reported, with Stop. */
    msg = message(ar, 3, KMIP_BATCH_ERR_STOP);
    for (uint8_t i = 0; i < 3; i++)
        ack_item(ar, msg, i, acks[i], 2);
    resp = run(f->kms, &f->device, ar, msg);
    assert_int_equal(batch_count(resp), 3);
    for (uint8_t i = 0; i < 3; i++)
        expect_success(resp, i, i);
    assert_int_equal(count_audit(f->kms, "PairAck", "ok", NULL, 0), 6);
    /* Replayed: Stop answers the first refusal only; Continue refuses all three. */
    resp = run(f->kms, &f->device, ar, msg);
    assert_int_equal(batch_count(resp), 1);
    expect_failure(resp, 0, 0, KMIP_REASON_PERMISSION_DENIED);
    msg = message(ar, 3, KMIP_BATCH_ERR_CONTINUE);
    for (uint8_t i = 0; i < 3; i++)
        ack_item(ar, msg, i, acks[i], 2);
    resp = run(f->kms, &f->device, ar, msg);
    assert_int_equal(batch_count(resp), 3);
    for (uint8_t i = 0; i < 3; i++)
        expect_failure(resp, i, i, KMIP_REASON_PERMISSION_DENIED);
    assert_int_equal(count_audit(f->kms, "PairAck", "KF_ERR_ACK_REPLAY", NULL, 0), 1 + 3);
    /* Item 4's B ack forged (last MAC byte flipped): its A ack stays recorded
     * (as in a lone report), item 5 is recorded under Continue. */
    kf_buf forged;
    assert_int_equal(kf_buf_alloc(&forged, 0, 4096, 0), KF_OK);
    assert_int_equal(kf_buf_put_bytes(&forged, acks[4][1].data, acks[4][1].len), KF_OK);
    /* The Mac item is last: 16 bytes of value, no padding; flip its last byte. */
    forged.data[forged.len - 1] ^= 0x01;
    kf_buf item4[2] = {acks[4][0], forged};
    msg = message(ar, 3, KMIP_BATCH_ERR_CONTINUE);
    ack_item(ar, msg, 0, acks[3], 2);
    ack_item(ar, msg, 1, item4, 2);
    ack_item(ar, msg, 2, acks[5], 2);
    resp = run(f->kms, &f->device, ar, msg);
    assert_int_equal(batch_count(resp), 3);
    expect_success(resp, 0, 0);
    expect_failure(resp, 1, 1, KMIP_REASON_CRYPTOGRAPHIC_FAILURE);
    expect_success(resp, 2, 2);
    assert_int_equal(count_audit(f->kms, "PairAck", "ok", NULL, 0), 6 + 2 + 1 + 2);
    assert_int_equal(count_audit(f->kms, "PairAck", "KF_ERR_ACK_MAC", NULL, 0), 1);
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_get(f->kms, "test", "base-1", &info), KF_OK);
    assert_int_equal(info.acks_pending, 1); /* item 4's, forged */
    assert_int_equal(kf_kms_device_get(f->kms, "test", "meter-1", &info), KF_OK);
    assert_int_equal(info.acks_pending, 0);
    kf_buf_free(&forged);
    for (int i = 0; i < N; i++) {
        kf_buf_free(&acks[i][0]);
        kf_buf_free(&acks[i][1]);
    }
    meter_base_close(&a, &b, ar);
}

/* Stop in an ack run: a forged ack ends the message; the item after it is
 * not recorded (its KEKs stay pending on the server). */
static void ack_stop_records_nothing_after(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b;
    kf_arena *ar = meter_base_open(f->kms, &a, &b);
    kf_ttlv *msg = message(ar, 3, 0);
    for (uint8_t i = 0; i < 3; i++)
        pair_item(ar, msg, i, "meter-1", "base-1", 0);
    const kf_ttlv *resp = run(f->kms, &f->device, ar, msg);
    kf_buf acks[3][2];
    for (uint8_t i = 0; i < 3; i++)
        accept_item(resp, i, i, &a, &b, acks[i]);
    acks[1][0].data[acks[1][0].len - 1] ^= 0x01; /* A's ack of item 1: bad MAC */
    msg = message(ar, 3, KMIP_BATCH_ERR_UNDO);
    for (uint8_t i = 0; i < 3; i++)
        ack_item(ar, msg, i, acks[i], 2);
    resp = run(f->kms, &f->device, ar, msg);
    assert_int_equal(batch_count(resp), 2);
    expect_success(resp, 0, 0);
    expect_failure(resp, 1, 1, KMIP_REASON_CRYPTOGRAPHIC_FAILURE);
    /* Item 1's B ack (after its refused A ack) and item 2 were not recorded. */
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_get(f->kms, "test", "base-1", &info), KF_OK);
    assert_int_equal(info.acks_pending, 2);
    assert_int_equal(kf_kms_device_get(f->kms, "test", "meter-1", &info), KF_OK);
    assert_int_equal(info.acks_pending, 2);
    assert_int_equal(count_audit(f->kms, "PairAck", "ok", NULL, 0), 2);
    for (int i = 0; i < 3; i++) {
        kf_buf_free(&acks[i][0]);
        kf_buf_free(&acks[i][1]);
    }
    meter_base_close(&a, &b, ar);
}

/* A run next to other operations: items of other operations run on their
 * own, in order, between the runs. */
static void runs_between_other_items(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b;
    kf_arena *ar = meter_base_open(f->kms, &a, &b);
    kf_ttlv *msg = message(ar, 6, KMIP_BATCH_ERR_CONTINUE);
    pair_item(ar, msg, 0, "meter-1", "base-1", 0);
    pair_item(ar, msg, 1, "meter-1", "base-1", 0);
    kf_ttlv *p = item(ar, msg, KMIP_OP_KEYFLEET_DEVICE_GET, 2); /* role use: refused */
    assert_non_null(kf_ttlv_add_text(ar, p, KMIP_TAG_KEYFLEET_DEVICE_ID, "meter-1"));
    pair_item(ar, msg, 3, "meter-1", "base-1", 0);
    pair_item(ar, msg, 4, "meter-1", "base-1", 0);
    pair_item(ar, msg, 5, "meter-1", "base-1", 0);
    struct commits c0 = commits_now(f->kms);
    const kf_ttlv *resp = run(f->kms, &f->device, ar, msg);
    assert_int_equal(commits_now(f->kms).batches - c0.batches, 2);
    assert_int_equal(batch_count(resp), 6);
    expect_failure(resp, 2, 2, KMIP_REASON_PERMISSION_DENIED);
    for (uint8_t i = 0; i < 6; i++)
        if (i != 2)
            accept_item(resp, i, i, &a, &b, NULL);
    server_counter(f->kms, "meter-1", 5, 5);
    meter_base_close(&a, &b, ar);
}

/* ---- The transaction's device counters ---- */

static void raw_sql(struct fixture *f, const char *sql)
{
    sqlite3 *db = kms_db_open(f->dir);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* base-1 one below the counter's end: the second item moves meter-1's counter
 * in the transaction, then fails on base-1's; meter-1's next issuance in the
 * same transaction must get the counter the failed item had taken. */
static void failed_item_puts_its_counters_back(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b, b2;
    kf_arena *ar = meter_base_open(f->kms, &a, &b);
    tdev_install(f->kms, "base-2", "VENDOR", &b2);
    raw_sql(f, "UPDATE device SET counter = 9223372036854775806 WHERE id = 'base-1'");
    kf_ttlv *msg = message(ar, 4, KMIP_BATCH_ERR_CONTINUE);
    pair_item(ar, msg, 0, "meter-1", "base-1", 0); /* base-1 at its end */
    pair_item(ar, msg, 1, "meter-1", "base-1", 0); /* base-1 would pass it */
    pair_item(ar, msg, 2, "meter-1", "base-2", 0);
    pair_item(ar, msg, 3, "meter-1", "base-2", 0);
    struct commits c0 = commits_now(f->kms);
    const kf_ttlv *resp = run(f->kms, &f->device, ar, msg);
    assert_int_equal(commits_now(f->kms).batches - c0.batches, 1);
    assert_int_equal(batch_count(resp), 4);
    expect_success(resp, 0, 0);
    expect_failure(resp, 1, 1, kf_kms_result_reason(KF_ERR_DEVICE_COUNTER, 2));
    expect_success(resp, 2, 2);
    expect_success(resp, 3, 3);
    accept_item(resp, 0, 0, &a, &b, NULL);
    assert_int_equal(a.d.st.last_counter, 1);
    assert_int_equal(b.d.st.last_counter, (uint64_t)INT64_MAX);
    accept_item(resp, 2, 2, &a, &b2, NULL);
    assert_int_equal(a.d.st.last_counter, 2); /* not 3: item 1's counter was put back */
    accept_item(resp, 3, 3, &a, &b2, NULL);
    assert_int_equal(a.d.st.last_counter, 3);
    server_counter(f->kms, "meter-1", 3, 3);
    server_counter(f->kms, "base-1", (uint64_t)INT64_MAX, 1);
    server_counter(f->kms, "base-2", 2, 3);
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "KF_ERR_DEVICE_COUNTER", NULL, 0), 1);
    kfd_close(&b2.d);
    meter_base_close(&a, &b, ar);
}

struct sender {
    kf_kms *kms;
    const struct kf_principal *who;
    kf_buf req, resp;
};

static void *send_thread(void *arg)
{
    struct sender *s = arg;
    if (kf_kms_handle_kmip(s->kms, s->who, s->req.data, s->req.len, &s->resp) < 0)
        kf_buf_reset(&s->resp);
    return NULL;
}

static void sender_start(struct sender *s, struct fixture *f, const kf_ttlv *msg, pthread_t *th)
{
    s->kms = f->kms;
    s->who = &f->device;
    assert_int_equal(kf_buf_alloc(&s->req, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&s->resp, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(msg, &s->req), KF_OK);
    assert_int_equal(pthread_create(th, NULL, send_thread, s), 0);
}

static const kf_ttlv *sender_answer(struct sender *s, kf_arena *ar)
{
    kf_ttlv *r;
    assert_int_equal(kf_ttlv_decode(s->resp.data, s->resp.len, NULL, ar, &r), KF_OK);
    kf_buf_free(&s->req);
    kf_buf_free(&s->resp);
    return r;
}

/*
 * Three issuances to meter-1 and, in the SAME transaction after them, an ack
 * of meter-1 saying its counter is 2: the ack must see the row at 3 (written
 * out before it runs), answer 3 and not "resynchronise" anything. Read from
 * a row the table had not written, it would see 0, pull the counter to 2 and
 * answer 2. The test holds kms->lock while a first message leads, so the
 * next two queue and run as one batch (checked).
 */
static void ack_sees_the_counters_issued_before_it(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b, a2, b2;
    kf_arena *ar = meter_base_open(f->kms, &a, &b);
    tdev_install(f->kms, "meter-2", "VENDOR", &a2);
    tdev_install(f->kms, "base-2", "VENDOR", &b2);
    kf_ttlv *first = message(ar, 1, 0);
    pair_item(ar, first, 0, "meter-2", "base-2", 0);
    kf_ttlv *pairs = message(ar, 3, 0);
    for (uint8_t i = 0; i < 3; i++)
        pair_item(ar, pairs, i, "meter-1", "base-1", 0);
    kf_buf ack;
    craft_ack("meter-1", a.d.st.mkek, 0, 0, 2, KFD_ACK_MALFORMED, &ack);
    kf_ttlv *report = message(ar, 1, 0);
    ack_item(ar, report, 0, &ack, 1);
    struct sender s[3];
    pthread_t th[3];
    struct commits c0 = commits_now(f->kms);
    pthread_mutex_lock(&f->kms->lock);
    sender_start(&s[0], f, first, &th[0]); /* leads, then waits for kms->lock */
    usleep(200 * 1000);
    sender_start(&s[1], f, pairs, &th[1]); /* queue behind it, in this order */
    usleep(200 * 1000);
    sender_start(&s[2], f, report, &th[2]);
    usleep(200 * 1000);
    pthread_mutex_unlock(&f->kms->lock);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(commits_now(f->kms).batches - c0.batches, 2);
    sender_answer(&s[0], ar);
    const kf_ttlv *resp = sender_answer(&s[1], ar);
    for (uint8_t i = 0; i < 3; i++)
        accept_item(resp, i, i, &a, &b, NULL);
    assert_int_equal(a.d.st.last_counter, 3);
    resp = sender_answer(&s[2], ar);
    const kf_ttlv *it = answer(resp, 0, 0, &(uint32_t){0}, &(uint32_t){0});
    expect_success(resp, 0, 0);
    int64_t counter;
    assert_int_equal(
        kf_ttlv_get_long(KF_TTLV_PATH(it, KMIP_TAG_RESPONSE_PAYLOAD, KMIP_TAG_KEYFLEET_COUNTER),
                         &counter),
        KF_OK);
    assert_int_equal(counter, 3);
    assert_int_equal(count_audit(f->kms, "PairResync", NULL, NULL, 0), 0);
    server_counter(f->kms, "meter-1", 3, 4);
    kf_buf_free(&ack);
    kfd_close(&a2.d);
    kfd_close(&b2.d);
    meter_base_close(&a, &b, ar);
}

/* ---- Concurrency: messages of many items from many connections ---- */

struct gateway {
    kf_kms *kms;
    const struct kf_principal *who;
    struct tdev a, b;
    int messages, failures;
    uint64_t kek_ids[8 * 16];
};

static void *gateway_thread(void *arg)
{
    struct gateway *g = arg;
    kf_arena *ar;
    if (kf_arena_new(&ar, 0) < 0) {
        g->failures++;
        return NULL;
    }
    for (int k = 0; k < g->messages; k++) {
        kf_ttlv *msg = message(ar, 16, 0);
        for (uint8_t i = 0; i < 16; i++)
            pair_item(ar, msg, i, g->a.d.st.id, g->b.d.st.id, 0);
        uint64_t synced = kf_store_sync_count(g->kms->store, NULL);
        kf_buf req, resp;
        kf_ttlv *r = NULL;
        if (kf_buf_alloc(&req, 0, 1 << 20, 0) < 0 || kf_buf_alloc(&resp, 0, 1 << 20, 0) < 0 ||
            kf_ttlv_encode(msg, &req) < 0 ||
            kf_kms_handle_kmip(g->kms, g->who, req.data, req.len, &resp) < 0 ||
            kf_ttlv_decode(resp.data, resp.len, NULL, ar, &r) < 0)
            g->failures++;
        /* Answered only after an fdatasync that ended after the call began. */
        if (kf_store_sync_count(g->kms->store, NULL) <= synced)
            g->failures++;
        kf_buf_free(&req);
        kf_buf_free(&resp);
        const kf_ttlv *it = r ? kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM) : NULL;
        for (int i = 0; i < 16; i++, it = it ? kf_ttlv_find_next(it, KMIP_TAG_BATCH_ITEM) : NULL) {
            const kf_ttlv *p = kf_ttlv_find(it, KMIP_TAG_RESPONSE_PAYLOAD);
            const kf_ttlv *part = kf_ttlv_find(p, KMIP_TAG_KEYFLEET_PAIR_PART);
            kf_buf bytes, ack;
            if (!part || kf_buf_alloc(&bytes, 0, 4096, 0) < 0) {
                g->failures++;
                continue;
            }
            if (kf_buf_alloc(&ack, 0, 4096, 0) < 0 || kf_ttlv_encode(part, &bytes) < 0 ||
                kfd_pair_accept(&g->a.d, KFD_ROLE_A, bytes.data, bytes.len, &ack) < 0)
                g->failures++;
            for (int s = 0; s < KFD_MAX_KEKS; s++)
                if (g->a.d.st.keks[s].in_use)
                    g->kek_ids[k * 16 + i] = g->a.d.st.keks[s].kek_id;
            kf_buf_free(&bytes);
            kf_buf_free(&ack);
        }
        kf_arena_reset(ar);
    }
    kf_arena_free(ar);
    return NULL;
}

/* Eight gateways, eight messages of sixteen requests each, at once: batches
 * share transactions (and hand over their lead early), yet every counter
 * runs 1..128 on its devices, KEK IDs are unique and without gaps, and every
 * answer came after an fdatasync. */
static void concurrent_messages(void **state)
{
    struct fixture *f = *state;
    enum { T = 8, M = 8 };
    static struct gateway g[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        memset(&g[i], 0, sizeof(g[i]));
        g[i].kms = f->kms;
        g[i].who = &f->device;
        g[i].messages = M;
        tdev_numbered_pair(f->kms, i, &g[i].a, &g[i].b, tdev_install);
    }
    struct commits c0 = commits_now(f->kms);
    for (int i = 0; i < T; i++)
        assert_int_equal(pthread_create(&th[i], NULL, gateway_thread, &g[i]), 0);
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    struct commits c1 = commits_now(f->kms);
    print_message("      %d messages of 16 in %llu batches, %llu fdatasyncs, %llu leads handed "
                  "over early\n",
                  T * M, (unsigned long long)(c1.batches - c0.batches),
                  (unsigned long long)(c1.syncs - c0.syncs),
                  (unsigned long long)atomic_load(&f->kms->device_q.early));
    assert_true(c1.batches - c0.batches <= (uint64_t)(T * M));
    static uint64_t all[T * M * 16];
    size_t n = 0;
    for (int i = 0; i < T; i++) {
        assert_int_equal(g[i].failures, 0);
        assert_int_equal(g[i].a.d.st.last_counter, M * 16);
        server_counter(f->kms, g[i].a.d.st.id, M * 16, g[i].kek_ids[M * 16 - 1]);
        for (int k = 0; k < M * 16; k++)
            all[n++] = g[i].kek_ids[k];
        kfd_close(&g[i].a.d);
        kfd_close(&g[i].b.d);
    }
    qsort(all, n, sizeof(all[0]), cmp_u64);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(all[i], i + 1); /* unique, and no ID left unused */
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "ok", NULL, 0), n);
    struct kf_audit_report r;
    assert_int_equal(kf_kms_audit_verify(f->kms, &r), KF_OK);
}

int main(void)
{
    kf_log_open(NULL, KF_LOG_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(ten_requests_in_one_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(two_pairs_interleaved, setup, teardown),
        cmocka_unit_test_setup_teardown(sixty_four_items, setup, teardown),
        cmocka_unit_test_setup_teardown(failing_item_in_the_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(unauthorised_item_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(acks_batched, setup, teardown),
        cmocka_unit_test_setup_teardown(ack_stop_records_nothing_after, setup, teardown),
        cmocka_unit_test_setup_teardown(runs_between_other_items, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_item_puts_its_counters_back, setup, teardown),
        cmocka_unit_test_setup_teardown(ack_sees_the_counters_issued_before_it, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_messages, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
