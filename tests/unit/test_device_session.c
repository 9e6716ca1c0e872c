/*
 * libkeyfleet-device, part 2: session keys between paired devices (offer,
 * accept, confirm), their refusals (replay, use limit on either side, the
 * KEK's window on a fake clock, unknown KEK or sender, integrity, storage),
 * session records, and the device state and installation package.
 */
#include <nettle/ccm.h>

#include "test_device_fixture.h"

static const uint8_t MKEK_A[KFD_KEY_LEN] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                            12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                            23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t MKEK_B[KFD_KEY_LEN] = {99, 98, 97, 96, 95, 94, 93, 92, 91, 90, 89,
                                            88, 87, 86, 85, 84, 83, 82, 81, 80, 79, 78,
                                            77, 76, 75, 74, 73, 72, 71, 70, 69, 68};

struct paired {
    struct fake_env fa, fb;
    struct kfd_device a, b;
    uint8_t m3[KFD_MSG_MAX], ack[KFD_MSG_MAX];
    kf_buf m3_out, ack_out;
};

/* Two devices holding one KEK (ID 77, [T0, T0 + 1 day), max_uses uses). */
static struct paired *pair_up(uint32_t max_uses)
{
    struct paired *p = calloc(1, sizeof(*p));
    struct issued m;
    uint8_t ack[512];
    kf_buf out;
    make_device(&p->a, &p->fa, "meter-1", MKEK_A, 11);
    make_device(&p->b, &p->fb, "base-1", MKEK_B, 22);
    issue(&m, MKEK_A, MKEK_B, "meter-1", "base-1", 1, 1, 77, 1, T0, DAY, max_uses);
    kf_buf_fixed(&out, ack, sizeof(ack));
    assert_int_equal(kfd_pair_accept(&p->a, KFD_ROLE_A, m.sm_a, m.a_len, &out), KF_OK);
    kf_buf_fixed(&out, ack, sizeof(ack));
    assert_int_equal(kfd_pair_accept(&p->b, KFD_ROLE_B, m.sm_b, m.b_len, &out), KF_OK);
    return p;
}

static int setup(void **state)
{
    *state = pair_up(1000);
    return 0;
}

static int teardown(void **state)
{
    struct paired *p = *state;
    kfd_close(&p->a);
    kfd_close(&p->b);
    free(p);
    return 0;
}

static int offer(struct paired *p, struct kfd_device *from, const char *to, uint8_t sk[KFD_KEY_LEN])
{
    kf_buf_fixed(&p->m3_out, p->m3, sizeof(p->m3));
    return kfd_session_offer(from, to, sk, &p->m3_out);
}

static int accept_m3(struct paired *p, struct kfd_device *at, uint8_t sk[KFD_KEY_LEN])
{
    kf_buf_fixed(&p->ack_out, p->ack, sizeof(p->ack));
    return kfd_session_accept(at, p->m3, p->m3_out.len, sk, &p->ack_out);
}

static const struct kfd_kek *kek_of(const struct kfd_device *d, uint64_t kek_id)
{
    for (size_t i = 0; i < KFD_MAX_KEKS; i++)
        if (d->st.keks[i].in_use && d->st.keks[i].kek_id == kek_id)
            return &d->st.keks[i];
    fail_msg("no KEK %llu", (unsigned long long)kek_id);
    return NULL;
}

static void offer_accept_confirm(void **state)
{
    struct paired *p = *state;
    uint8_t sk_a[32], sk_b[32];
    assert_int_equal(offer(p, &p->a, "base-1", sk_a), KF_OK);
    assert_int_equal(kek_of(&p->a, 77)->uses, 1);
    assert_int_equal(kek_of(&p->a, 77)->send_seq, 1);
    assert_int_equal(accept_m3(p, &p->b, sk_b), KF_OK);
    assert_memory_equal(sk_a, sk_b, 32);
    assert_int_equal(kek_of(&p->b, 77)->uses, 1);
    assert_int_equal(kek_of(&p->b, 77)->recv_seq, 1);
    assert_int_equal(kfd_session_confirm(&p->a, "base-1", 77, 1, sk_a, p->ack, p->ack_out.len),
                     KF_OK);
    /* The confirmation is for that offer only: another seq, KEK, partner or key fails. */
    assert_int_equal(kfd_session_confirm(&p->a, "base-1", 77, 2, sk_a, p->ack, p->ack_out.len),
                     KF_ERR_SESSION_INTEGRITY);
    assert_int_equal(kfd_session_confirm(&p->a, "base-1", 78, 1, sk_a, p->ack, p->ack_out.len),
                     KF_ERR_SESSION_INTEGRITY);
    assert_int_equal(kfd_session_confirm(&p->a, "base-2", 77, 1, sk_a, p->ack, p->ack_out.len),
                     KF_ERR_SESSION_INTEGRITY);
    sk_a[0] ^= 1;
    assert_int_equal(kfd_session_confirm(&p->a, "base-1", 77, 1, sk_a, p->ack, p->ack_out.len),
                     KF_ERR_SESSION_INTEGRITY);
    sk_a[0] ^= 1;
    uint8_t copy[KFD_MSG_MAX];
    for (size_t i = 0; i < p->ack_out.len; i++) {
        memcpy(copy, p->ack, p->ack_out.len);
        copy[i] ^= 0x04;
        int rc = kfd_session_confirm(&p->a, "base-1", 77, 1, sk_a, copy, p->ack_out.len);
        assert_true(rc == KF_ERR_SESSION_INTEGRITY || rc == KF_ERR_PAIR_MALFORMED);
    }
    /* The other direction uses the same KEK and its own sequence and key. */
    assert_int_equal(offer(p, &p->b, "meter-1", sk_b), KF_OK);
    assert_int_equal(accept_m3(p, &p->a, sk_a), KF_OK);
    assert_memory_equal(sk_a, sk_b, 32);
    assert_int_equal(kek_of(&p->a, 77)->uses, 2);
    assert_int_equal(kek_of(&p->a, 77)->recv_seq, 1);
    assert_int_equal(kek_of(&p->b, 77)->send_seq, 1);
    /* Both saved what they counted. */
    struct kfd_state saved;
    assert_int_equal(kfd_state_decode(&saved, p->fa.saved, p->fa.saved_len), KF_OK);
    assert_memory_equal(&saved, &p->a.st, sizeof(saved));
}

static void refuses_replayed_m3(void **state)
{
    struct paired *p = *state;
    uint8_t sk[32], got[32];
    assert_int_equal(offer(p, &p->a, "base-1", sk), KF_OK);
    uint8_t first[KFD_MSG_MAX];
    size_t first_len = p->m3_out.len;
    memcpy(first, p->m3, first_len);
    assert_int_equal(accept_m3(p, &p->b, got), KF_OK);
    struct kfd_state before = p->b.st;
    assert_int_equal(accept_m3(p, &p->b, got), KF_ERR_SESSION_REPLAY);
    assert_memory_equal(&before, &p->b.st, sizeof(before));
    assert_int_equal(p->ack_out.len, 0);
    /* An older M3 after a newer one is a replay too. */
    assert_int_equal(offer(p, &p->a, "base-1", sk), KF_OK);
    assert_int_equal(accept_m3(p, &p->b, got), KF_OK);
    memcpy(p->m3, first, first_len);
    p->m3_out.len = first_len;
    assert_int_equal(accept_m3(p, &p->b, got), KF_ERR_SESSION_REPLAY);
    for (size_t i = 0; i < 32; i++)
        assert_int_equal(got[i], 0); /* no key is handed out with a refusal */
}

static void refuses_after_max_uses(void **state)
{
    struct paired *p = pair_up(3);
    *state = p;
    uint8_t sk[32], got[32];
    /* Three uses on each side: A sends two, receives one. */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(offer(p, &p->a, "base-1", sk), KF_OK);
        assert_int_equal(accept_m3(p, &p->b, got), KF_OK);
    }
    assert_int_equal(offer(p, &p->b, "meter-1", sk), KF_OK);
    assert_int_equal(accept_m3(p, &p->a, got), KF_OK);
    /* Sender side: A's KEK is used up. */
    assert_int_equal(offer(p, &p->a, "base-1", sk), KF_ERR_KEK_EXHAUSTED);
    size_t slot;
    assert_int_equal(kfd_kek_current(&p->a, "base-1", &slot), KF_ERR_KEK_EXHAUSTED);
    /* Receiver side: B has used 3 too (2 accepted + 1 sent); one more M3 from A's
     * state before the limit is refused by B. */
    struct kfd_kek *ka = NULL;
    for (size_t i = 0; i < KFD_MAX_KEKS; i++)
        if (p->a.st.keks[i].in_use)
            ka = &p->a.st.keks[i];
    ka->uses = 0; /* pretend A still had uses left */
    assert_int_equal(offer(p, &p->a, "base-1", sk), KF_OK);
    struct kfd_state before = p->b.st;
    assert_int_equal(accept_m3(p, &p->b, got), KF_ERR_KEK_EXHAUSTED);
    assert_memory_equal(&before, &p->b.st, sizeof(before));
}

static void refuses_outside_window(void **state)
{
    struct paired *p = *state;
    uint8_t sk[32], got[32];
    assert_int_equal(offer(p, &p->a, "base-1", sk), KF_OK);
    /* B's clock passes not_after before the M3 arrives. */
    p->fb.now = T0 + DAY;
    assert_int_equal(accept_m3(p, &p->b, got), KF_ERR_KEK_EXPIRED);
    p->fb.now = T0 + DAY - 1;
    assert_int_equal(accept_m3(p, &p->b, got), KF_OK);
    /* A cannot send once its clock is past the window, nor before it starts. */
    p->fa.now = T0 + DAY;
    assert_int_equal(offer(p, &p->a, "base-1", sk), KF_ERR_KEK_EXPIRED);
    p->fa.now = T0 - 1;
    assert_int_equal(offer(p, &p->a, "base-1", sk), KF_ERR_KEK_EXPIRED);
    p->fb.now = T0 - 1;
    p->fa.now = T0;
    assert_int_equal(offer(p, &p->a, "base-1", sk), KF_OK);
    assert_int_equal(accept_m3(p, &p->b, got), KF_ERR_KEK_EXPIRED);
}

static void refuses_unknown_and_tampered(void **state)
{
    struct paired *p = *state;
    uint8_t sk[32], got[32];
    assert_int_equal(offer(p, &p->a, "base-2", sk), KF_ERR_KEK_UNKNOWN);
    assert_int_equal(offer(p, &p->a, "base-1", sk), KF_OK);
    /* A device that is not the partner does not know the KEK. */
    struct fake_env fc;
    struct kfd_device c;
    make_device(&c, &fc, "base-1x", MKEK_B, 33);
    assert_int_equal(accept_m3(p, &c, got), KF_ERR_KEK_UNKNOWN);
    kfd_close(&c);
    /* A sends an M3 to itself: the sender is not A's partner under that KEK. */
    assert_int_equal(accept_m3(p, &p->a, got), KF_ERR_KEK_UNKNOWN);
    /* Every byte flipped: refused with a code of the receiver's checks, state unchanged. */
    uint8_t good[KFD_MSG_MAX];
    size_t len = p->m3_out.len;
    memcpy(good, p->m3, len);
    struct kfd_state before = p->b.st;
    unsigned integrity = 0;
    for (size_t i = 0; i < len; i++) {
        memcpy(p->m3, good, len);
        p->m3[i] ^= 0xFF;
        int rc = accept_m3(p, &p->b, got);
        assert_true(rc == KF_ERR_SESSION_INTEGRITY || rc == KF_ERR_PAIR_MALFORMED ||
                    rc == KF_ERR_KEK_UNKNOWN);
        integrity += rc == KF_ERR_SESSION_INTEGRITY;
        assert_memory_equal(&before, &p->b.st, sizeof(before));
    }
    assert_true(integrity >= 12 + 48 + 8); /* nonce, sealed key and tag, seq */
    memcpy(p->m3, good, len);
    assert_int_equal(accept_m3(p, &p->b, got), KF_OK);
    assert_memory_equal(sk, got, 32);
}

static void storage_failure_counts_nothing(void **state)
{
    struct paired *p = *state;
    uint8_t sk[32], got[32];
    struct kfd_state before = p->a.st;
    p->fa.fail_save = true;
    assert_int_equal(offer(p, &p->a, "base-1", sk), KF_ERR_DEVICE_STORAGE);
    assert_memory_equal(&before, &p->a.st, sizeof(before));
    assert_int_equal(p->m3_out.len, 0);
    p->fa.fail_save = false;
    assert_int_equal(offer(p, &p->a, "base-1", sk), KF_OK);
    before = p->b.st;
    p->fb.fail_save = true;
    assert_int_equal(accept_m3(p, &p->b, got), KF_ERR_DEVICE_STORAGE);
    assert_memory_equal(&before, &p->b.st, sizeof(before));
    assert_int_equal(p->ack_out.len, 0);
    p->fb.fail_save = false;
    assert_int_equal(accept_m3(p, &p->b, got), KF_OK);
}

/* ---- records ---- */

static void records_seal_open(void **state)
{
    (void)state;
    struct kfd_channel tx, rx;
    uint8_t sk[KFD_KEY_LEN];
    fill_key(sk, 5);
    assert_int_equal(kfd_channel_init(&tx, sk, KFD_DIR_OFFERER), KF_OK);
    assert_int_equal(kfd_channel_init(&rx, sk, KFD_DIR_OFFERER), KF_OK);
    uint8_t rec[KFD_MSG_MAX], data[KFD_DATA_MAX], msg[KFD_DATA_MAX + 1];
    size_t n;
    kf_buf out;
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)i;
    for (size_t len = 0; len <= KFD_DATA_MAX; len += 341) {
        kf_buf_fixed(&out, rec, sizeof(rec));
        assert_int_equal(kfd_record_seal(&tx, msg, len, &out), KF_OK);
        assert_int_equal(kfd_record_open(&rx, rec, out.len, data, sizeof(data), &n), KF_OK);
        assert_int_equal(n, len);
        assert_memory_equal(data, msg, len);
    }
    assert_int_equal(tx.seq, 4);
    assert_int_equal(rx.seq, 4);
    /* Replay of the last record. */
    assert_int_equal(kfd_record_open(&rx, rec, out.len, data, sizeof(data), &n),
                     KF_ERR_SESSION_REPLAY);
    /* Every byte flipped. */
    kf_buf_fixed(&out, rec, sizeof(rec));
    assert_int_equal(kfd_record_seal(&tx, msg, 20, &out), KF_OK);
    uint8_t copy[KFD_MSG_MAX];
    for (size_t i = 0; i < out.len; i++) {
        memcpy(copy, rec, out.len);
        copy[i] ^= 0x01;
        struct kfd_channel probe = rx;
        int rc = kfd_record_open(&probe, copy, out.len, data, sizeof(data), &n);
        assert_true(rc == KF_ERR_SESSION_INTEGRITY || rc == KF_ERR_PAIR_MALFORMED ||
                    rc == KF_ERR_SESSION_REPLAY);
        assert_int_equal(probe.seq, rx.seq);
    }
    /* The wrong key, a buffer too small, data too large. */
    struct kfd_channel other = rx;
    other.sk[0] ^= 1;
    assert_int_equal(kfd_record_open(&other, rec, out.len, data, sizeof(data), &n),
                     KF_ERR_SESSION_INTEGRITY);
    assert_int_equal(kfd_record_open(&rx, rec, out.len, data, 19, &n), KF_ERR_NOSPACE);
    assert_int_equal(kfd_record_open(&rx, rec, out.len, data, 20, &n), KF_OK);
    kf_buf_fixed(&out, rec, sizeof(rec));
    assert_int_equal(kfd_record_seal(&tx, msg, KFD_DATA_MAX + 1, &out), KF_ERR_LIMIT);
    tx.seq = UINT64_MAX;
    assert_int_equal(kfd_record_seal(&tx, msg, 1, &out), KF_ERR_SESSION_REPLAY);
}

/* The record as SP 800-38C CCM makes it with nettle directly: nonce [direction]_32 || [seq]_64,
 * AAD = the Seq item's TTLV bytes, tag 16 bytes. */
static size_t expected_record(uint8_t *out, size_t cap, const uint8_t sk[KFD_KEY_LEN],
                              uint32_t direction, uint64_t seq, const uint8_t *data, size_t len)
{
    struct ccm_aes256_ctx ccm;
    uint8_t nonce[KFD_NONCE_LEN] = {(uint8_t)(direction >> 24), (uint8_t)(direction >> 16),
                                    (uint8_t)(direction >> 8), (uint8_t)direction};
    for (int i = 0; i < 8; i++)
        nonce[4 + i] = (uint8_t)(seq >> (56 - 8 * i));
    kf_buf b;
    size_t outer;
    uint8_t *sealed;
    kf_buf_fixed(&b, out, cap);
    assert_int_equal(kfd_put_open(&b, KMIP_TAG_KEYFLEET_SESSION_RECORD, &outer), KF_OK);
    size_t seq_at = b.len;
    assert_int_equal(kfd_put_u64(&b, KMIP_TAG_KEYFLEET_SEQ, seq), KF_OK);
    size_t seq_len = b.len - seq_at;
    assert_int_equal(seq_len, 16);
    assert_int_equal(
        kfd_put_bytes_space(&b, KMIP_TAG_KEYFLEET_SEALED_DATA, len + KFD_TAG_LEN, &sealed), KF_OK);
    ccm_aes256_set_key(&ccm, sk);
    ccm_aes256_encrypt_message(&ccm, sizeof(nonce), nonce, seq_len, out + seq_at, KFD_TAG_LEN,
                               len + KFD_TAG_LEN, sealed, data);
    assert_int_equal(kfd_put_close(&b, outer), KF_OK);
    return b.len;
}

/* Both devices seal under the same SK: the direction in the nonce keeps their nonces apart (the
 * first record each way would otherwise share nonce 1: CCM's keystream, and so the XOR of the
 * two plaintexts, would show), and a record reflected back to its sender does not open. */
static void records_carry_their_direction(void **state)
{
    (void)state;
    uint8_t sk[KFD_KEY_LEN], rec_a[256], rec_b[256], want[256], data[64];
    const uint8_t msg[16] = "reading 42.7 kWh";
    struct kfd_channel a_tx, a_rx, b_tx, b_rx, probe;
    size_t n;
    kf_buf out;
    fill_key(sk, 9);
    /* A offered SK: it seals as the offerer and opens the accepter's records; B the reverse. */
    assert_int_equal(kfd_channel_init(&a_tx, sk, KFD_DIR_OFFERER), KF_OK);
    assert_int_equal(kfd_channel_init(&a_rx, sk, KFD_DIR_ACCEPTER), KF_OK);
    assert_int_equal(kfd_channel_init(&b_tx, sk, KFD_DIR_ACCEPTER), KF_OK);
    assert_int_equal(kfd_channel_init(&b_rx, sk, KFD_DIR_OFFERER), KF_OK);
    assert_true(a_tx.seq == 0 && a_tx.direction == 1 && b_tx.direction == 2);
    assert_memory_equal(a_tx.sk, sk, KFD_KEY_LEN);
    kf_buf_fixed(&out, rec_a, sizeof(rec_a));
    assert_int_equal(kfd_record_seal(&a_tx, msg, sizeof(msg), &out), KF_OK);
    size_t len_a = out.len;
    kf_buf_fixed(&out, rec_b, sizeof(rec_b));
    assert_int_equal(kfd_record_seal(&b_tx, msg, sizeof(msg), &out), KF_OK);
    size_t len_b = out.len;
    /* Same SK, same seq (1), same data: the records still differ. */
    assert_int_equal(len_a, len_b);
    assert_memory_not_equal(rec_a, rec_b, len_a);
    assert_int_equal(expected_record(want, sizeof(want), sk, 1, 1, msg, sizeof(msg)), len_a);
    assert_memory_equal(rec_a, want, len_a);
    assert_int_equal(expected_record(want, sizeof(want), sk, 2, 1, msg, sizeof(msg)), len_b);
    assert_memory_equal(rec_b, want, len_b);
    /* Each opens the other's ... */
    assert_int_equal(kfd_record_open(&b_rx, rec_a, len_a, data, sizeof(data), &n), KF_OK);
    assert_true(n == sizeof(msg) && memcmp(data, msg, n) == 0 && b_rx.seq == 1);
    assert_int_equal(kfd_record_open(&a_rx, rec_b, len_b, data, sizeof(data), &n), KF_OK);
    assert_true(n == sizeof(msg) && memcmp(data, msg, n) == 0 && a_rx.seq == 1);
    /* ... but not its own, reflected back: it was sealed in the other direction. */
    assert_int_equal(kfd_channel_init(&probe, sk, KFD_DIR_ACCEPTER), KF_OK);
    assert_int_equal(kfd_record_open(&probe, rec_a, len_a, data, sizeof(data), &n),
                     KF_ERR_SESSION_INTEGRITY);
    assert_int_equal(probe.seq, 0);
    assert_int_equal(kfd_channel_init(&probe, sk, KFD_DIR_OFFERER), KF_OK);
    assert_int_equal(kfd_record_open(&probe, rec_b, len_b, data, sizeof(data), &n),
                     KF_ERR_SESSION_INTEGRITY);
    /* A channel without a direction of the two is refused before anything is sealed or read. */
    assert_int_equal(kfd_channel_init(&probe, sk, (enum kfd_direction)0), KF_ERR_ARG);
    assert_int_equal(kfd_channel_init(&probe, sk, (enum kfd_direction)3), KF_ERR_ARG);
    assert_int_equal(kfd_channel_init(NULL, sk, KFD_DIR_OFFERER), KF_ERR_ARG);
    struct kfd_channel none = {{0}, 0, 0};
    memcpy(none.sk, sk, KFD_KEY_LEN);
    kf_buf_fixed(&out, want, sizeof(want));
    assert_int_equal(kfd_record_seal(&none, msg, sizeof(msg), &out), KF_ERR_ARG);
    assert_int_equal(out.len, 0);
    assert_int_equal(kfd_record_open(&none, rec_a, len_a, data, sizeof(data), &n), KF_ERR_ARG);
    none.direction = 3;
    assert_int_equal(kfd_record_open(&none, rec_a, len_a, data, sizeof(data), &n), KF_ERR_ARG);
    assert_int_equal(none.seq, 0);
}

/* ---- state and package ---- */

static void state_round_trip(void **state)
{
    struct paired *p = *state;
    uint8_t sk[32], blob[KFD_STATE_MAX];
    kf_buf out;
    assert_int_equal(offer(p, &p->a, "base-1", sk), KF_OK);
    kf_buf_fixed(&out, blob, sizeof(blob));
    assert_int_equal(kfd_state_encode(&p->a.st, &out), KF_OK);
    struct kfd_state back;
    assert_int_equal(kfd_state_decode(&back, blob, out.len), KF_OK);
    assert_memory_equal(&back, &p->a.st, sizeof(back));
    /* The largest state (8 slots, 64-character IDs) fits KFD_STATE_MAX. */
    struct kfd_state big;
    memset(&big, 0, sizeof(big));
    memset(big.id, 'i', KFD_ID_MAX);
    memset(big.domain, 'd', KFD_ID_MAX);
    for (size_t i = 0; i < KFD_MAX_KEKS; i++) {
        struct kfd_kek *k = &big.keks[i];
        k->in_use = true, k->role = KFD_ROLE_B, k->kek_id = i + 1;
        memset(k->partner, 'p', KFD_ID_MAX);
        k->not_before = -5, k->not_after = INT64_MAX, k->max_uses = UINT32_MAX;
        k->uses = 7, k->send_seq = UINT64_MAX, k->recv_seq = 3;
    }
    kf_buf_fixed(&out, blob, sizeof(blob));
    assert_int_equal(kfd_state_encode(&big, &out), KF_OK);
    print_message("largest state: %zu bytes\n", out.len);
    assert_int_equal(kfd_state_decode(&back, blob, out.len), KF_OK);
    assert_memory_equal(&back, &big, sizeof(back));
    kf_buf_fixed(&out, blob, out.len - 1);
    assert_int_equal(kfd_state_encode(&big, &out), KF_ERR_NOSPACE);
    assert_int_equal(out.len, 0);
}

/* Encode st, let edit change it, and expect decode to refuse it. */
static void expect_bad_state(const struct kfd_state *st, void (*edit)(struct kfd_state *))
{
    struct kfd_state bad = *st, back;
    uint8_t blob[KFD_STATE_MAX];
    kf_buf out;
    edit(&bad);
    kf_buf_fixed(&out, blob, sizeof(blob));
    assert_int_equal(kfd_state_encode(&bad, &out), KF_OK);
    assert_int_equal(kfd_state_decode(&back, blob, out.len), KF_ERR_DEVICE_STATE);
    for (size_t i = 0; i < sizeof(back.mkek); i++)
        assert_int_equal(back.mkek[i], 0);
}

static void edit_uses(struct kfd_state *st)
{
    st->keks[0].uses = st->keks[0].max_uses + 1;
}
static void edit_role(struct kfd_state *st)
{
    st->keks[0].role = 3;
}
static void edit_window(struct kfd_state *st)
{
    st->keks[0].not_after = st->keks[0].not_before;
}
static void edit_kek_id(struct kfd_state *st)
{
    st->keks[0].kek_id = 0;
}
static void edit_partner(struct kfd_state *st)
{
    strcpy(st->keks[0].partner, st->id);
}
/* A KEK is (partner, KEK ID): the same pair twice is a corrupt state. */
static void edit_duplicate(struct kfd_state *st)
{
    st->keks[1] = st->keks[0];
    st->keks[1].key[0] ^= 1;
}

static void state_refusals(void **state)
{
    struct paired *p = *state;
    struct kfd_state st = p->a.st, back;
    expect_bad_state(&st, edit_uses);
    expect_bad_state(&st, edit_role);
    expect_bad_state(&st, edit_window);
    expect_bad_state(&st, edit_kek_id);
    expect_bad_state(&st, edit_partner);
    expect_bad_state(&st, edit_duplicate);
    uint8_t blob[KFD_STATE_MAX + 16];
    kf_buf out;
    /* The same KEK ID from another partner's message is another KEK (a restored server may
     * hand an ID out again): such a state is good. */
    struct kfd_state shared = st;
    shared.keks[1] = shared.keks[0];
    strcpy(shared.keks[1].partner, "other");
    kf_buf_fixed(&out, blob, sizeof(blob));
    assert_int_equal(kfd_state_encode(&shared, &out), KF_OK);
    assert_int_equal(kfd_state_decode(&back, blob, out.len), KF_OK);
    assert_memory_equal(&back, &shared, sizeof(back));
    kf_buf_fixed(&out, blob, sizeof(blob));
    assert_int_equal(kfd_state_encode(&st, &out), KF_OK);
    size_t len = out.len;
    /* Truncated, trailing bytes, over the limit, another structure. */
    assert_int_equal(kfd_state_decode(&back, blob, len - 8), KF_ERR_DEVICE_STATE);
    memset(blob + len, 0, 8);
    assert_int_equal(kfd_state_decode(&back, blob, len + 8), KF_ERR_DEVICE_STATE);
    assert_int_equal(kfd_state_decode(&back, blob, KFD_STATE_MAX + 1), KF_ERR_DEVICE_STATE);
    blob[2] = 0x1C; /* DeviceState -> DevicePackage */
    assert_int_equal(kfd_state_decode(&back, blob, len), KF_ERR_DEVICE_STATE);
    blob[2] = 0x1E;
    /* A version other than 1. */
    blob[8 + 11] = 2;
    assert_int_equal(kfd_state_decode(&back, blob, len), KF_ERR_DEVICE_STATE);
    blob[8 + 11] = 1;
    assert_int_equal(kfd_state_decode(&back, blob, len), KF_OK);
    /* Nine slots: the encoder writes at most eight, so append a ninth by hand. */
    struct kfd_state nine = st;
    for (size_t i = 0; i < KFD_MAX_KEKS; i++) {
        nine.keks[i] = st.keks[0];
        nine.keks[i].kek_id = 100 + i;
    }
    struct kfd_state one = nine;
    for (size_t i = 1; i < KFD_MAX_KEKS; i++)
        one.keks[i].in_use = false;
    kf_buf_fixed(&out, blob, sizeof(blob));
    assert_int_equal(kfd_state_encode(&one, &out), KF_OK);
    size_t one_len = out.len;
    kf_buf_fixed(&out, blob, sizeof(blob));
    assert_int_equal(kfd_state_encode(&nine, &out), KF_OK);
    size_t slot_len = (out.len - one_len) / (KFD_MAX_KEKS - 1);
    assert_int_equal(kfd_state_decode(&back, blob, out.len), KF_OK);
    uint8_t big[KFD_STATE_MAX + 512];
    memcpy(big, blob, out.len);
    memcpy(big + out.len, blob + out.len - slot_len, slot_len);
    big[out.len + 8 + 8 + 7] = 99; /* the copy's KekId value, last byte: a new ID */
    uint32_t outer = (uint32_t)(out.len + slot_len - 8);
    big[4] = (uint8_t)(outer >> 24), big[5] = (uint8_t)(outer >> 16);
    big[6] = (uint8_t)(outer >> 8), big[7] = (uint8_t)outer;
    assert_int_equal(kfd_state_decode(&back, big, out.len + slot_len), KF_ERR_DEVICE_STATE);
    /* The same nine slots with the first one cut out decode: it was the count. */
    memmove(big + one_len - slot_len, big + one_len, out.len + slot_len - one_len);
    outer = (uint32_t)(out.len - 8);
    big[4] = (uint8_t)(outer >> 24), big[5] = (uint8_t)(outer >> 16);
    big[6] = (uint8_t)(outer >> 8), big[7] = (uint8_t)outer;
    assert_int_equal(kfd_state_decode(&back, big, out.len), KF_OK);
    assert_int_equal(back.keks[7].kek_id, 99);
    /* Opening from a bad state leaves the device wiped; a missing callback is refused. */
    struct kfd_device d;
    memset(&d, 0x5A, sizeof(d));
    assert_int_equal(kfd_open(&d, &p->a.env, blob, 16), KF_ERR_DEVICE_STATE);
    assert_int_equal(d.st.mkek[0], 0);
    struct kfd_env no_rng = p->a.env;
    no_rng.random = NULL;
    assert_int_equal(kfd_open(&d, &no_rng, p->fa.saved, p->fa.saved_len), KF_ERR_ARG);
}

static void install_refusals(void **state)
{
    (void)state;
    struct fake_env f;
    struct kfd_env env = fake_env_of(&f, 1);
    struct kfd_device d;
    uint8_t pkg[256];
    size_t len = make_package(pkg, sizeof(pkg), "meter-5", "plant-7", MKEK_A);
    /* Storage refuses: not installed. */
    f.fail_save = true;
    assert_int_equal(kfd_install(&d, &env, pkg, len), KF_ERR_DEVICE_STORAGE);
    assert_int_equal(d.st.mkek[0], 0);
    f.fail_save = false;
    /* Truncated, trailing bytes, wrong version. */
    assert_int_equal(kfd_install(&d, &env, pkg, len - 8), KF_ERR_PAIR_MALFORMED);
    assert_int_equal(kfd_install(&d, &env, pkg, len + 8), KF_ERR_PAIR_MALFORMED);
    pkg[8 + 11] = 2;
    assert_int_equal(kfd_install(&d, &env, pkg, len), KF_ERR_PAIR_MALFORMED);
    pkg[8 + 11] = 1;
    assert_int_equal(kfd_install(&d, &env, pkg, len), KF_OK);
    assert_string_equal(d.st.id, "meter-5");
    assert_string_equal(d.st.domain, "plant-7");
    assert_memory_equal(d.st.mkek, MKEK_A, 32);
    assert_int_equal(d.st.last_counter, 0);
    assert_int_equal(f.saves, 1);
    kfd_close(&d);
    assert_int_equal(d.st.mkek[0], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(offer_accept_confirm, setup, teardown),
        cmocka_unit_test_setup_teardown(refuses_replayed_m3, setup, teardown),
        cmocka_unit_test_teardown(refuses_after_max_uses, teardown),
        cmocka_unit_test_setup_teardown(refuses_outside_window, setup, teardown),
        cmocka_unit_test_setup_teardown(refuses_unknown_and_tampered, setup, teardown),
        cmocka_unit_test_setup_teardown(storage_failure_counts_nothing, setup, teardown),
        cmocka_unit_test(records_seal_open),
        cmocka_unit_test(records_carry_their_direction),
        cmocka_unit_test_setup_teardown(state_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(state_refusals, setup, teardown),
        cmocka_unit_test(install_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
