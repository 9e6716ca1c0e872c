/*
 * libkeyfleet-device, part 4: the drivers. kfd_pair_with runs against an
 * in-test transport whose "server" does what docs/pairing.md says keyfleetd
 * does (counters, kfd_issue_part, ack MACs, resynchronisation) and whose
 * "partner" is a second device answering with kfd_partner_answer; then
 * 1,000 session keys go from A to B and are confirmed. Also: the stale retry,
 * a partner that refuses, a server that refuses. With KFD_CORPUS_DIR set,
 * the fuzz seeds test writes the fuzz targets' seed corpora there.
 */
#include <errno.h>
#include <sys/stat.h>

#include "test_device_fixture.h"

/* The fuzz harnesses' fixed identity (tests/fuzz/fuzz_device_*.c use the same). */
#define FUZZ_ID "meter-1"
#define FUZZ_PARTNER "base-1"
#define FUZZ_KEK_ID 77
static void fuzz_mkek(uint8_t k[32])
{
    for (int i = 0; i < 32; i++)
        k[i] = (uint8_t)i;
}
static void fuzz_kek(uint8_t k[32])
{
    for (int i = 0; i < 32; i++)
        k[i] = (uint8_t)(0x80 + i);
}

static void fuzz_sk(uint8_t k[32])
{
    for (int i = 0; i < 32; i++)
        k[i] = (uint8_t)(0x40 + i);
}

/* The session harness's device: id, holding KEK 77 with partner, [T0, T0 + 1 day), 1000 uses. */
static void holding_kek77(struct kfd_device *d, struct fake_env *f, const char *id,
                          const char *partner)
{
    struct kfd_env env = fake_env_of(f, 9);
    memset(d, 0, sizeof(*d));
    strcpy(d->st.id, id);
    strcpy(d->st.domain, "plant-7");
    fuzz_mkek(d->st.mkek);
    struct kfd_kek *k = &d->st.keks[0];
    k->in_use = true, k->role = KFD_ROLE_A, k->kek_id = FUZZ_KEK_ID;
    strcpy(k->partner, partner);
    k->not_before = T0, k->not_after = T0 + DAY, k->max_uses = 1000;
    fuzz_kek(k->key);
    d->env = env;
}

/* SessionAck {SessionHeader {1, 77, partner, seq 1}, Mac = CMAC_CK(header)} under the fixed SK. */
static size_t fixed_session_ack(uint8_t *out, size_t cap)
{
    kf_buf b;
    size_t outer, header;
    uint8_t sk[32], ck[32], mac[16];
    kf_buf_fixed(&b, out, cap);
    assert_int_equal(kfd_put_open(&b, KMIP_TAG_KEYFLEET_SESSION_ACK, &outer), KF_OK);
    size_t start = b.len;
    assert_int_equal(kfd_put_open(&b, KMIP_TAG_KEYFLEET_SESSION_HEADER, &header), KF_OK);
    assert_int_equal(kfd_put_u32(&b, KMIP_TAG_KEYFLEET_PROTO_VERSION, 1), KF_OK);
    assert_int_equal(kfd_put_u64(&b, KMIP_TAG_KEYFLEET_KEK_ID, FUZZ_KEK_ID), KF_OK);
    assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_DEVICE_ID, FUZZ_PARTNER), KF_OK);
    assert_int_equal(kfd_put_u64(&b, KMIP_TAG_KEYFLEET_SEQ, 1), KF_OK);
    assert_int_equal(kfd_put_close(&b, header), KF_OK);
    fuzz_sk(sk);
    assert_int_equal(kfd_ck(sk, FUZZ_KEK_ID, 1, ck), KF_OK);
    kfd_mac(ck, out + start, b.len - start, mac);
    assert_int_equal(kfd_put_bytes(&b, KMIP_TAG_KEYFLEET_MAC, mac, 16), KF_OK);
    assert_int_equal(kfd_put_close(&b, outer), KF_OK);
    return b.len;
}

struct world {
    /* the server */
    const char *id_a; /* the requester; anyone else is B */
    uint8_t mkek_a[32], mkek_b[32];
    uint64_t c_a, c_b, next_kek_id;
    int64_t *clock;
    unsigned requests, reports, acks_verified, reports_refused;
    uint32_t last_status[2];
    bool refuse, corrupt_a, ignore_resync;
    const char *refuse_message; /* NULL: "permission denied" */
    /* acks recorded, as keyfleetd keeps them: a second ack of a KEK by a device is refused */
    struct {
        uint64_t kek_id;
        bool by_a;
        uint32_t status;
    } acked[64];
    unsigned n_acked;
    /* an attacker on the way: the first M is kept, and the next replay_m answers to a request
     * are that old M instead of the new one (the server has issued the new one all the same) */
    uint8_t old_m[KFD_KMIP_MAX], last_m[KFD_KMIP_MAX];
    size_t old_m_len, last_m_len;
    unsigned replay_m;
    /* the partner, and the link to it: SM_B lost on the way, or B's answer lost on the way back */
    struct kfd_device *b;
    uint8_t sk_b[32];
    bool b_got_sk, drop_sm_b, drop_ack_b;
};

static uint64_t *server_counter(struct world *w, const char *id)
{
    return strcmp(id, w->id_a) == 0 ? &w->c_a : &w->c_b;
}

static size_t serve_pair_request(struct world *w, struct kfd_span payload, uint8_t *resp,
                                 size_t cap)
{
    kf_buf in;
    char id_a[KFD_ID_MAX + 1], id_b[KFD_ID_MAX + 1];
    uint32_t count = 1, lifetime = DAY, max_uses = 10000;
    kf_buf_reader(&in, payload.p, payload.len);
    assert_int_equal(kfd_get_id(&in, KMIP_TAG_KEYFLEET_DEVICE_ID_A, id_a), KF_OK);
    assert_int_equal(kfd_get_id(&in, KMIP_TAG_KEYFLEET_DEVICE_ID_B, id_b), KF_OK);
    if (kfd_next_is(&in, KMIP_TAG_KEYFLEET_KEK_COUNT))
        assert_int_equal(kfd_get_u32(&in, KMIP_TAG_KEYFLEET_KEK_COUNT, &count), KF_OK);
    if (kfd_next_is(&in, KMIP_TAG_KEYFLEET_LIFETIME))
        assert_int_equal(kfd_get_u32(&in, KMIP_TAG_KEYFLEET_LIFETIME, &lifetime), KF_OK);
    if (kfd_next_is(&in, KMIP_TAG_KEYFLEET_MAX_USES))
        assert_int_equal(kfd_get_u32(&in, KMIP_TAG_KEYFLEET_MAX_USES, &max_uses), KF_OK);
    assert_int_equal(kfd_get_end(&in), KF_OK);
    /* Counters move and the KEK IDs are taken before anything is built. */
    w->c_a++, w->c_b++;
    uint64_t first = w->next_kek_id;
    w->next_kek_id += count;
    static struct issued m;
    issue(&m, w->mkek_a, w->mkek_b, id_a, id_b, w->c_a, w->c_b, first, count, *w->clock, lifetime,
          max_uses);
    uint8_t both[2 * KFD_MSG_MAX];
    memcpy(both, m.sm_a, m.a_len);
    memcpy(both + m.a_len, m.sm_b, m.b_len);
    if (w->corrupt_a)
        both[m.a_len - 1] ^= 1; /* the last byte of A's AEAD tag, on the way */
    struct response_spec r = {
        KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, 0, 0, NULL, both, m.a_len + m.b_len, 0, false};
    size_t n = build_response(resp, cap, &r);
    memcpy(w->last_m, resp, n);
    w->last_m_len = n;
    if (w->old_m_len == 0) {
        memcpy(w->old_m, resp, n);
        w->old_m_len = n;
    } else if (w->replay_m) {
        w->replay_m--;
        memcpy(resp, w->old_m, w->old_m_len);
        n = w->old_m_len;
    }
    return n;
}

/* The server restored from a backup: its counters and its KEK id mark go back, and the acks
 * it recorded for the KEK ids it will now hand out again are gone with them. */
static void restore_server(struct world *w, uint64_t c_a, uint64_t c_b, uint64_t next_kek_id)
{
    unsigned kept = 0;
    w->c_a = c_a, w->c_b = c_b, w->next_kek_id = next_kek_id;
    for (unsigned i = 0; i < w->n_acked; i++)
        if (w->acked[i].kek_id < next_kek_id)
            w->acked[kept++] = w->acked[i];
    w->n_acked = kept;
}

/* The status a device's ack of a KEK was recorded with, 0 if none. */
static uint32_t acked_status(const struct world *w, uint64_t kek_id, bool by_a)
{
    for (unsigned i = 0; i < w->n_acked; i++)
        if (w->acked[i].kek_id == kek_id && w->acked[i].by_a == by_a)
            return w->acked[i].status;
    return 0;
}

static size_t serve_ack_report(struct world *w, struct kfd_span payload, uint8_t *resp, size_t cap)
{
    kf_buf in;
    kf_buf_reader(&in, payload.p, payload.len);
    for (unsigned i = 0; kf_buf_remaining(&in); i++) {
        struct kfd_ack ack;
        struct kfd_span one;
        kf_buf item;
        assert_true(i < 2);
        assert_int_equal(kfd_get_open(&in, KMIP_TAG_KEYFLEET_PAIR_ACK, &item, &one), KF_OK);
        assert_int_equal(kfd_ack_decode(one.p, one.len, &ack), KF_OK);
        const uint8_t *mkek = strcmp(ack.device, w->id_a) == 0 ? w->mkek_a : w->mkek_b;
        assert_int_equal(kfd_ack_verify(&ack, mkek), KF_OK);
        w->acks_verified++;
        w->last_status[i] = ack.status;
        bool by_a = strcmp(ack.device, w->id_a) == 0;
        /* keyfleetd records each ack once, in its own transaction, before it resynchronises:
         * a second ack of a KEK by the same device refuses the report from there on. */
        if (ack.kek_id != 0 && acked_status(w, ack.kek_id, by_a) != 0) {
            w->reports++;
            w->reports_refused++;
            struct response_spec r = {KMIP_OP_KEYFLEET_PAIR_ACK_REPORT,
                                      1,
                                      0x0E,
                                      "KF_ERR_ACK_REPLAY: this KEK was already acknowledged",
                                      NULL,
                                      0,
                                      0,
                                      false};
            return build_response(resp, cap, &r);
        }
        if (ack.kek_id != 0) {
            assert_true(w->n_acked < sizeof(w->acked) / sizeof(w->acked[0]));
            w->acked[w->n_acked].kek_id = ack.kek_id;
            w->acked[w->n_acked].by_a = by_a;
            w->acked[w->n_acked++].status = ack.status;
        }
        uint64_t *c = server_counter(w, ack.device);
        if (ack.device_counter > *c && !w->ignore_resync)
            *c = ack.device_counter; /* resynchronisation: only ever forward */
    }
    w->reports++;
    struct response_spec r = {KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, 0, 0, NULL, NULL, 0, 0, false};
    return build_response(resp, cap, &r);
}

static int world_exchange(void *ctx, enum kfd_peer peer, const uint8_t *req, size_t len,
                          uint8_t *resp, size_t cap, size_t *resp_len)
{
    struct world *w = ctx;
    if (peer == KFD_PEER_PARTNER) {
        kf_buf answer;
        if (w->drop_sm_b)
            return KF_ERR_TIMEOUT;
        kf_buf_fixed(&answer, resp, cap);
        int rc = kfd_partner_answer(w->b, req, len, &answer, w->sk_b, &w->b_got_sk);
        *resp_len = answer.len;
        if (w->drop_ack_b) {
            *resp_len = 0;
            return KF_ERR_TIMEOUT;
        }
        return answer.len ? 0 : rc;
    }
    uint32_t op;
    struct kfd_span payload;
    parse_request(req, len, &op, &payload);
    if (w->refuse) {
        struct response_spec r = {op,   1, 0x0E, w->refuse_message ? w->refuse_message : "permission denied",
                                  NULL, 0, 0,    false};
        *resp_len = build_response(resp, cap, &r);
        return 0;
    }
    w->requests++;
    if (op == KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST)
        *resp_len = serve_pair_request(w, payload, resp, cap);
    else if (op == KMIP_OP_KEYFLEET_PAIR_ACK_REPORT)
        *resp_len = serve_ack_report(w, payload, resp, cap);
    else
        fail_msg("unexpected operation %x", op);
    return 0;
}

struct driver_fixture {
    struct fake_env fa, fb;
    struct kfd_device a, b;
    struct world w;
    struct kfd_transport t;
};

static int setup(void **state)
{
    struct driver_fixture *f = calloc(1, sizeof(*f));
    fill_key(f->w.mkek_a, 1);
    fill_key(f->w.mkek_b, 2);
    make_device(&f->a, &f->fa, "meter-1", f->w.mkek_a, 3);
    make_device(&f->b, &f->fb, "base-1", f->w.mkek_b, 4);
    f->w.id_a = "meter-1";
    f->w.b = &f->b;
    f->w.next_kek_id = 1000;
    f->w.clock = &f->fa.now;
    f->t = (struct kfd_transport){&f->w, world_exchange};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct driver_fixture *f = *state;
    kfd_close(&f->a);
    kfd_close(&f->b);
    free(f);
    return 0;
}

/* A offers a session key to B over the transport and checks B's confirmation. */
static void session_with(struct driver_fixture *f, const char *partner, uint8_t sk[32])
{
    uint8_t m3[512], ack[512];
    size_t slot, ack_len;
    kf_buf out;
    kf_buf_fixed(&out, m3, sizeof(m3));
    assert_int_equal(kfd_kek_current(&f->a, partner, &slot), KF_OK);
    assert_int_equal(kfd_session_offer(&f->a, partner, sk, &out), KF_OK);
    const struct kfd_kek *k = &f->a.st.keks[slot];
    assert_int_equal(
        f->t.exchange(f->t.ctx, KFD_PEER_PARTNER, m3, out.len, ack, sizeof(ack), &ack_len), 0);
    assert_true(f->w.b_got_sk);
    assert_memory_equal(sk, f->w.sk_b, 32);
    assert_int_equal(kfd_session_confirm(&f->a, partner, k->kek_id, k->send_seq, sk, ack, ack_len),
                     KF_OK);
}

static void session_over_transport(struct driver_fixture *f, uint8_t sk[32])
{
    session_with(f, "base-1", sk);
}

static void pair_with_then_1000_sessions(void **state)
{
    struct driver_fixture *f = *state;
    struct kfd_pair_result r;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_OK);
    assert_true(r.kek_id == 1000 && r.kek_count == 1 && r.own == KF_OK && r.partner == KF_OK);
    assert_int_equal(f->w.reports, 1);
    assert_int_equal(f->w.acks_verified, 2);
    assert_true(f->w.last_status[0] == KFD_ACK_ACCEPTED && f->w.last_status[1] == KFD_ACK_ACCEPTED);
    assert_true(f->a.st.last_counter == 1 && f->b.st.last_counter == 1);

    uint8_t sk[32], prev[32] = {0};
    for (int i = 0; i < 1000; i++) {
        session_over_transport(f, sk);
        assert_memory_not_equal(sk, prev, 32);
        memcpy(prev, sk, 32);
    }
    size_t slot;
    assert_int_equal(kfd_kek_current(&f->a, "base-1", &slot), KF_OK);
    assert_int_equal(f->a.st.keks[slot].uses, 1000);
    assert_int_equal(f->a.st.keks[slot].send_seq, 1000);
    assert_int_equal(kfd_kek_current(&f->b, "meter-1", &slot), KF_OK);
    assert_int_equal(f->b.st.keks[slot].recv_seq, 1000);
    /* Data under the last session key, both ways round: A offered it, B accepted it. */
    struct kfd_channel a_tx, a_rx, b_tx, b_rx;
    assert_int_equal(kfd_channel_init(&a_tx, sk, KFD_DIR_OFFERER), KF_OK);
    assert_int_equal(kfd_channel_init(&a_rx, sk, KFD_DIR_ACCEPTER), KF_OK);
    assert_int_equal(kfd_channel_init(&b_tx, f->w.sk_b, KFD_DIR_ACCEPTER), KF_OK);
    assert_int_equal(kfd_channel_init(&b_rx, f->w.sk_b, KFD_DIR_OFFERER), KF_OK);
    uint8_t rec[256], echo[256], data[64];
    size_t n;
    kf_buf out;
    kf_buf_fixed(&out, rec, sizeof(rec));
    assert_int_equal(kfd_record_seal(&a_tx, (const uint8_t *)"reading 42.7 kWh", 16, &out), KF_OK);
    size_t rec_len = out.len;
    assert_int_equal(kfd_record_open(&b_rx, rec, rec_len, data, sizeof(data), &n), KF_OK);
    assert_int_equal(n, 16);
    assert_memory_equal(data, "reading 42.7 kWh", 16);
    kf_buf_fixed(&out, echo, sizeof(echo));
    assert_int_equal(kfd_record_seal(&b_tx, data, n, &out), KF_OK);
    assert_true(out.len == rec_len && memcmp(echo, rec, rec_len) != 0); /* seq 1 both ways */
    assert_int_equal(kfd_record_open(&a_rx, echo, out.len, data, sizeof(data), &n), KF_OK);
    assert_memory_equal(data, "reading 42.7 kWh", 16);
    /* A second pairing with a list: it supersedes KEK 1000 on both devices at once. */
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 3, 3600, 5, &f->t, &r), KF_OK);
    assert_true(r.kek_id == 1001 && r.kek_count == 3);
    for (int dev = 0; dev < 2; dev++) {
        const struct kfd_device *d = dev ? &f->b : &f->a;
        unsigned held = 0;
        for (size_t i = 0; i < KFD_MAX_KEKS; i++)
            if (d->st.keks[i].in_use) {
                held++;
                assert_true(d->st.keks[i].kek_id >= 1001 && d->st.keks[i].kek_id <= 1003);
            }
        assert_int_equal(held, 3);
        assert_int_equal(kfd_kek_current(d, dev ? "meter-1" : "base-1", &slot), KF_OK);
        assert_int_equal(d->st.keks[slot].kek_id, 1001);
    }
}

/* How many KEKs d holds, and whether one of them is kek_id. */
static unsigned held(const struct kfd_device *d, uint64_t kek_id, bool *has)
{
    unsigned n = 0;
    *has = false;
    for (size_t i = 0; i < KFD_MAX_KEKS; i++)
        if (d->st.keks[i].in_use) {
            n++;
            *has |= d->st.keks[i].kek_id == kek_id;
        }
    return n;
}

/* d holds exactly one KEK, kek_id, and it is current with partner. */
static void holds_only(const struct kfd_device *d, const char *partner, uint64_t kek_id)
{
    bool has;
    size_t slot;
    assert_int_equal(held(d, kek_id, &has), 1);
    assert_true(has);
    assert_int_equal(kfd_kek_current(d, partner, &slot), KF_OK);
    assert_int_equal(d->st.keks[slot].kek_id, kek_id);
}

/* What was saved last opens to the device in memory. */
static void saved_is(const struct kfd_device *d, const struct fake_env *fe)
{
    struct kfd_device again;
    assert_int_equal(kfd_open(&again, &d->env, fe->saved, fe->saved_len), KF_OK);
    assert_memory_equal(&again.st, &d->st, sizeof(again.st));
    kfd_close(&again);
}

/* A renewal takes effect at once on both devices, however often it is done: the KEKs of the
 * earlier message are superseded and freed, never left to fill the slots. */
static void pair_with_renewal_takes_effect_at_once(void **state)
{
    struct driver_fixture *f = *state;
    struct kfd_pair_result r;
    uint8_t sk[32];
    for (uint64_t i = 0; i < 3 * KFD_MAX_KEKS; i++) {
        assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_OK);
        assert_int_equal(r.kek_id, 1000 + i);
        holds_only(&f->a, "base-1", r.kek_id);
        holds_only(&f->b, "meter-1", r.kek_id);
        saved_is(&f->a, &f->fa);
        saved_is(&f->b, &f->fb);
        session_over_transport(f, sk);
        size_t slot;
        assert_int_equal(kfd_kek_current(&f->a, "base-1", &slot), KF_OK);
        assert_true(f->a.st.keks[slot].kek_id == r.kek_id && f->a.st.keks[slot].send_seq == 1);
    }
    assert_true(f->a.st.last_counter == 3 * KFD_MAX_KEKS && f->b.st.last_counter == 3 * KFD_MAX_KEKS);
}

/* SM_B lost on the way: A takes nothing new (it keeps the KEK it had, which B still has too),
 * but its counter moves, and its ack tells the server it took nothing. */
static void pair_with_lost_sm_b_keeps_previous_keks(void **state)
{
    struct driver_fixture *f = *state;
    struct kfd_pair_result r;
    uint8_t sk[32];
    bool has;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_OK);
    f->w.drop_sm_b = true;
    unsigned reports = f->w.reports;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 2, 0, 0, &f->t, &r), KF_ERR_TIMEOUT);
    assert_true(r.own == KF_OK && r.partner == KF_ERR_TIMEOUT && r.kek_id == 1001);
    assert_int_equal(f->w.reports - reports, 1);
    assert_int_equal(acked_status(&f->w, 1001, true), KFD_ACK_PARTNER);
    assert_int_equal(acked_status(&f->w, 1001, false), 0);
    holds_only(&f->a, "base-1", 1000);
    assert_true(held(&f->a, 1001, &has) == 1 && !has);
    assert_true(f->a.st.last_counter == 2 && f->b.st.last_counter == 1);
    saved_is(&f->a, &f->fa);
    f->w.drop_sm_b = false;
    session_over_transport(f, sk); /* both still hold KEK 1000 */
    /* The part can never be taken later: the counter moved past it. */
    struct kfd_span m, sm_a, sm_b;
    uint32_t reason;
    assert_int_equal(kfd_kmip_unwrap(f->w.last_m, f->w.last_m_len,
                                     KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, &m, &reason, NULL, 0),
                     KF_OK);
    assert_int_equal(kfd_pair_split(m.p, m.len, &sm_a, &sm_b), KF_OK);
    assert_int_equal(kfd_pair_check(&f->a, sm_a.p, sm_a.len), KF_ERR_PAIR_STALE);

    /* B's answer lost on the way back: B took KEK 1003 (superseding 1000), A did not. */
    f->w.drop_ack_b = true;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_ERR_TIMEOUT);
    assert_true(r.own == KF_OK && r.partner == KF_ERR_TIMEOUT && r.kek_id == 1003);
    holds_only(&f->a, "base-1", 1000);
    holds_only(&f->b, "meter-1", 1003);
    assert_int_equal(acked_status(&f->w, 1003, true), KFD_ACK_PARTNER);
    /* The next pairing puts them together again. */
    f->w.drop_ack_b = false;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_OK);
    holds_only(&f->a, "base-1", 1004);
    holds_only(&f->b, "meter-1", 1004);
    assert_int_equal(acked_status(&f->w, 1004, true), KFD_ACK_ACCEPTED);
    assert_int_equal(acked_status(&f->w, 1004, false), KFD_ACK_ACCEPTED);
    session_over_transport(f, sk);
}

/* The server is restored from a backup: its counters AND its KEK id mark go back, so it hands
 * out KEK ids the devices already hold. The counters resynchronise; each device ends up with
 * one KEK per (partner, id), the new message's, and a saved state it opens again. */
static void pair_with_server_restored_reissues_kek_ids(void **state)
{
    struct driver_fixture *f = *state;
    struct kfd_pair_result r;
    uint8_t sk[32];
    bool has;
    size_t slot;
    for (int i = 0; i < 3; i++)
        assert_int_equal(kfd_pair_with(&f->a, "base-1", 2, 0, 0, &f->t, &r), KF_OK);
    assert_int_equal(r.kek_id, 1004); /* 1004 current, 1005 the next day's */
    restore_server(&f->w, 1, 1, 1002);
    unsigned requests = f->w.requests;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 2, 0, 0, &f->t, &r), KF_OK);
    /* Try 1 (1002, 1003; counters 2, 2): A stale. Try 2 (1004, 1005 again; 4, 3): A good, B
     * stale, so A takes nothing and keeps its own 1004, 1005. Try 3 (1006, 1007; 5, 4). */
    assert_int_equal(f->w.requests - requests, 6);
    assert_int_equal(r.kek_id, 1006);
    assert_true(f->a.st.last_counter == 5 && f->b.st.last_counter == 4);
    for (int dev = 0; dev < 2; dev++) {
        const struct kfd_device *d = dev ? &f->b : &f->a;
        assert_true(held(d, 1007, &has) == 2 && has);
        assert_int_equal(kfd_kek_current(d, dev ? "meter-1" : "base-1", &slot), KF_OK);
        assert_int_equal(d->st.keks[slot].kek_id, 1006);
    }
    saved_is(&f->a, &f->fa);
    saved_is(&f->b, &f->fb);
    session_over_transport(f, sk);
    /* Restored again, in step with the devices but with the mark before the current list: the
     * same IDs come back, for a new message. They replace the old ones (whose use shows). */
    assert_int_equal(kfd_kek_current(&f->a, "base-1", &slot), KF_OK);
    assert_int_equal(f->a.st.keks[slot].uses, 1);
    restore_server(&f->w, f->a.st.last_counter, f->b.st.last_counter, 1006);
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 2, 0, 0, &f->t, &r), KF_OK);
    assert_int_equal(r.kek_id, 1006);
    for (int dev = 0; dev < 2; dev++) {
        const struct kfd_device *d = dev ? &f->b : &f->a;
        assert_true(held(d, 1007, &has) == 2 && has);
        assert_int_equal(kfd_kek_current(d, dev ? "meter-1" : "base-1", &slot), KF_OK);
        assert_true(d->st.keks[slot].kek_id == 1006 && d->st.keks[slot].uses == 0);
    }
    saved_is(&f->a, &f->fa);
    saved_is(&f->b, &f->fb);
    session_over_transport(f, sk);
}

/* An attacker answers A's request with an old M it recorded: A's ack says stale, and keyfleetd
 * refuses that ack (and the whole report) as a replay, since A acknowledged that KEK long ago.
 * The stale verdict still gets its retry, and the retry gets the new M. */
static void pair_with_retries_stale_when_report_refused(void **state)
{
    struct driver_fixture *f = *state;
    struct kfd_pair_result r;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_OK); /* M recorded */
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_OK);
    f->w.replay_m = 1;
    unsigned requests = f->w.requests, refused = f->w.reports_refused;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_OK);
    assert_int_equal(f->w.requests - requests, 4); /* request, refused report, request, report */
    assert_int_equal(f->w.reports_refused - refused, 1);
    assert_true(r.own == KF_OK && r.partner == KF_OK && r.kek_id == 1003);
    assert_true(r.server_operation == 0 && r.server_reason == 0 && r.server_message[0] == '\0');
    holds_only(&f->a, "base-1", 1003);
    holds_only(&f->b, "meter-1", 1003);
    /* An attacker who always answers with the old M: one retry, then the stale verdict, with the
     * server's refusal of the last report in r. Nothing changes on either device. */
    struct kfd_state a_before = f->a.st, b_before = f->b.st;
    f->w.replay_m = 100;
    requests = f->w.requests;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_ERR_PAIR_STALE);
    assert_int_equal(f->w.requests - requests, 4);
    assert_true(r.own == KF_ERR_PAIR_STALE && r.partner == KF_ERR_PAIR_NOT_FORWARDED);
    assert_int_equal(r.kek_id, 1000);
    assert_int_equal(r.server_operation, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT);
    assert_int_equal(r.server_reason, 0x0E);
    assert_string_equal(r.server_message, "KF_ERR_ACK_REPLAY: this KEK was already acknowledged");
    assert_memory_equal(&a_before, &f->a.st, sizeof(a_before));
    assert_memory_equal(&b_before, &f->b.st, sizeof(b_before));
    f->w.replay_m = 0;
}

static void pair_with_resynchronises_stale_server(void **state)
{
    struct driver_fixture *f = *state;
    struct kfd_pair_result r;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_OK);
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_OK);
    /* The server is restored from a backup: both its counters go back. */
    f->w.c_a = 0, f->w.c_b = 0;
    unsigned reports = f->w.reports;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_OK);
    assert_true(r.own == KF_OK && r.partner == KF_OK);
    /* Try 1: A stale (B not asked), A's ack moves C_A on. Try 2: A accepts, B stale, B's
     * ack moves C_B on. Try 3: both accept. Each device's counter resynchronises once. */
    assert_int_equal(f->w.reports - reports, 3);
    assert_int_equal(f->a.st.last_counter, 4);
    assert_int_equal(f->b.st.last_counter, 3);
    assert_true(f->w.c_a == 4 && f->w.c_b == 3);
    /* A never took the KEK B refused on try 2: A and B hold the same current KEK. */
    size_t sa, sb;
    assert_int_equal(kfd_kek_current(&f->a, "base-1", &sa), KF_OK);
    assert_int_equal(kfd_kek_current(&f->b, "meter-1", &sb), KF_OK);
    assert_int_equal(f->a.st.keks[sa].kek_id, f->b.st.keks[sb].kek_id);
    uint8_t sk[32];
    session_over_transport(f, sk);
}

static void pair_with_stale_twice_gives_up(void **state)
{
    struct driver_fixture *f = *state;
    struct kfd_pair_result r;
    for (int i = 0; i < 3; i++)
        assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_OK);
    /* A server that never learns (it ignores the device counter) is not retried forever. */
    f->w.c_a = 0;
    f->w.ignore_resync = true;
    unsigned requests = f->w.requests;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_ERR_PAIR_STALE);
    assert_int_equal(r.own, KF_ERR_PAIR_STALE);
    assert_int_equal(f->w.requests - requests, 4); /* two requests, two reports */
    assert_int_equal(f->a.st.last_counter, 3);
}

/* B refuses its part (its storage fails): A takes nothing either, keeps the KEK it had, moves
 * its counter, and says so in its ack (PARTNER). */
static void pair_with_partner_refusal_keeps_previous_keks(void **state)
{
    struct driver_fixture *f = *state;
    struct kfd_pair_result r;
    uint8_t sk[32];
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_OK);
    f->fb.fail_save = true;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 2, 0, 0, &f->t, &r), KF_ERR_DEVICE_STORAGE);
    assert_true(r.own == KF_OK && r.partner == KF_ERR_DEVICE_STORAGE && r.kek_id == 1001);
    assert_true(f->w.last_status[0] == KFD_ACK_PARTNER && f->w.last_status[1] == KFD_ACK_STORAGE);
    /* A keeps the KEK B has too, and saved that, with its counter moved. */
    holds_only(&f->a, "base-1", 1000);
    holds_only(&f->b, "meter-1", 1000);
    assert_true(f->a.st.last_counter == 2 && f->b.st.last_counter == 1);
    saved_is(&f->a, &f->fa);
    f->fb.fail_save = false;
    session_over_transport(f, sk);
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_OK);
    holds_only(&f->a, "base-1", 1003);
    holds_only(&f->b, "meter-1", 1003);
    session_over_transport(f, sk);
}

static void pair_with_own_refusal_does_not_forward(void **state)
{
    struct driver_fixture *f = *state;
    struct kfd_pair_result r;
    /* A's part is damaged on the way: A refuses, reports, and B never sees its part. */
    f->w.corrupt_a = true;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_ERR_PAIR_INTEGRITY);
    assert_true(r.own == KF_ERR_PAIR_INTEGRITY && r.partner == KF_ERR_PAIR_NOT_FORWARDED);
    assert_int_equal(f->w.last_status[0], KFD_ACK_INTEGRITY);
    assert_int_equal(f->b.st.last_counter, 0);
    f->w.corrupt_a = false;
    /* The server refusing outright. */
    f->w.refuse = true;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_ERR_DEVICE_SERVER);
    /* ... and what it said is in the result: the operation, the Result Reason and Message. */
    assert_int_equal(r.server_operation, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST);
    assert_int_equal(r.server_reason, 0x0E);
    assert_string_equal(r.server_message, "permission denied");
    assert_true(r.own == KF_ERR_PAIR_NOT_FORWARDED && r.kek_id == 0);
    /* A message longer than the result holds is cut, and still terminated. */
    char longer[300];
    memset(longer, 'x', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    f->w.refuse_message = longer;
    assert_int_equal(kfd_pair_with(&f->a, "base-1", 1, 0, 0, &f->t, &r), KF_ERR_DEVICE_SERVER);
    assert_int_equal(strlen(r.server_message), KFD_SERVER_MSG_MAX - 1);
    assert_memory_equal(r.server_message, longer, KFD_SERVER_MSG_MAX - 1);
    f->w.refuse_message = NULL;
}

/* The largest messages and a full state: 64-character IDs, lists of 8 KEKs. M (1,984 bytes)
 * fills the driver's work buffer the most, and the state encoding (2,152 bytes) has to fit in
 * front of the acks and SM_B there, both when KEKs are stored and when B's refusal frees them. */
static void pair_with_largest_messages_full_state(void **state)
{
    struct driver_fixture *f = *state;
    char id_a[KFD_ID_MAX + 1], id_b[KFD_ID_MAX + 1];
    memset(id_a, 'm', KFD_ID_MAX), memset(id_b, 'b', KFD_ID_MAX);
    id_a[KFD_ID_MAX] = id_b[KFD_ID_MAX] = '\0';
    kfd_close(&f->a);
    kfd_close(&f->b);
    make_device(&f->a, &f->fa, id_a, f->w.mkek_a, 3);
    make_device(&f->b, &f->fb, id_b, f->w.mkek_b, 4);
    f->w.id_a = id_a;
    struct kfd_pair_result r;
    for (uint64_t list = 0; list < 2; list++) {
        assert_int_equal(kfd_pair_with(&f->a, id_b, KFD_MAX_KEKS, 0, 0, &f->t, &r), KF_OK);
        assert_true(r.own == KF_OK && r.partner == KF_OK && r.kek_count == KFD_MAX_KEKS);
        assert_int_equal(r.kek_id, 1000 + list * KFD_MAX_KEKS);
        for (size_t s = 0; s < KFD_MAX_KEKS; s++) {
            assert_int_equal(f->a.st.keks[s].kek_id / KFD_MAX_KEKS, r.kek_id / KFD_MAX_KEKS);
            assert_string_equal(f->a.st.keks[s].partner, id_b);
        }
        struct kfd_state saved;
        assert_true(f->fa.saved_len > 2100); /* full: 8 slots, 64-character IDs (2,152 bytes) */
        assert_int_equal(kfd_state_decode(&saved, f->fa.saved, f->fa.saved_len), KF_OK);
        assert_memory_equal(&saved, &f->a.st, sizeof(saved));
    }
    assert_int_equal(f->w.acks_verified, 4);
    uint8_t sk[32];
    session_with(f, id_b, sk);
    /* B refuses the third list: A takes none of it and keeps the second, saving its counter
     * with the full state encoded in front of the acks. */
    f->fb.fail_save = true;
    assert_int_equal(kfd_pair_with(&f->a, id_b, KFD_MAX_KEKS, 0, 0, &f->t, &r),
                     KF_ERR_DEVICE_STORAGE);
    assert_true(r.own == KF_OK && r.partner == KF_ERR_DEVICE_STORAGE);
    assert_int_equal(f->a.st.last_counter, 3);
    assert_true(f->fa.saved_len > 2100);
    size_t slot;
    assert_int_equal(kfd_kek_current(&f->a, id_b, &slot), KF_OK);
    assert_int_equal(f->a.st.keks[slot].kek_id, 1000 + KFD_MAX_KEKS);
    for (size_t s = 0; s < KFD_MAX_KEKS; s++)
        assert_int_equal(f->a.st.keks[s].kek_id / KFD_MAX_KEKS, (1000 + KFD_MAX_KEKS) / KFD_MAX_KEKS);
    struct kfd_state saved;
    assert_int_equal(kfd_state_decode(&saved, f->fa.saved, f->fa.saved_len), KF_OK);
    assert_memory_equal(&saved, &f->a.st, sizeof(saved));
    f->fb.fail_save = false;
}

static void partner_answer_kinds(void **state)
{
    struct driver_fixture *f = *state;
    uint8_t ans[512], sk[32];
    bool got;
    kf_buf out;
    kf_buf_fixed(&out, ans, sizeof(ans));
    /* Garbage still gets an authenticated MALFORMED ack. */
    assert_int_equal(
        kfd_partner_answer(&f->b, (const uint8_t *)"hello world 1234", 16, &out, sk, &got),
        KF_ERR_PAIR_MALFORMED);
    assert_false(got);
    assert_int_equal(ack_status(ans, out.len, f->w.mkek_b, NULL), KFD_ACK_MALFORMED);
}

/* ---- seed corpora for the fuzz targets ---- */

static void write_seed(const char *dir, const char *target, const char *name, const uint8_t *p,
                       size_t n)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, target);
    if (mkdir(path, 0755) != 0)
        assert_int_equal(errno, EEXIST);
    snprintf(path, sizeof(path), "%s/%s/%s", dir, target, name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    fclose(fp);
}

/* Valid messages for the harnesses' fixed device; written only when asked. */
static void fuzz_seeds(void **state)
{
    (void)state;
    const char *dir = getenv("KFD_CORPUS_DIR");
    uint8_t mkek[32], kek[32], buf[KFD_KMIP_MAX], sk[32];
    struct issued m;
    struct fake_env fa, fb;
    struct kfd_device a, b;
    kf_buf out;
    fuzz_mkek(mkek);
    fuzz_kek(kek);
    make_device(&a, &fa, FUZZ_ID, mkek, 5);
    make_device(&b, &fb, FUZZ_PARTNER, mkek, 6);
    /* parts for role A and B, single and list */
    issue(&m, mkek, mkek, FUZZ_ID, FUZZ_PARTNER, 1, 1, 40, 1, T0, DAY, 10);
    kf_buf_fixed(&out, buf, sizeof(buf));
    assert_int_equal(kfd_pair_accept(&a, KFD_ROLE_A, m.sm_a, m.a_len, &out), KF_OK);
    if (dir) {
        write_seed(dir, "fuzz_device_part", "part_a", m.sm_a, m.a_len);
        write_seed(dir, "fuzz_device_ack", "ack_accepted", buf, out.len);
    }
    /* from another partner: the first list (base-1's) stays, the state holds 4 KEKs */
    issue(&m, mkek, mkek, "base-2", FUZZ_ID, 2, 2, 50, 3, T0, DAY, 10);
    kf_buf_fixed(&out, buf, sizeof(buf));
    assert_int_equal(kfd_pair_accept(&a, KFD_ROLE_B, m.sm_b, m.b_len, &out), KF_OK);
    uint8_t both[2 * KFD_MSG_MAX];
    memcpy(both, m.sm_a, m.a_len);
    memcpy(both + m.a_len, m.sm_b, m.b_len);
    if (dir) {
        write_seed(dir, "fuzz_device_part", "part_b_list3", m.sm_b, m.b_len);
        write_seed(dir, "fuzz_device_kmip", "m_split", both, m.a_len + m.b_len);
    }
    kf_buf_fixed(&out, buf, sizeof(buf));
    assert_int_equal(kfd_pair_accept(&a, KFD_ROLE_B, m.sm_b, m.b_len, &out), KF_ERR_PAIR_STALE);
    if (dir)
        write_seed(dir, "fuzz_device_ack", "ack_stale", buf, out.len);
    /* B's answers to the SM_A fuzz_device_part concludes with (KEK 900), and A's PARTNER ack */
    struct kfd_ack_fields fields = {900, 1, 1, KFD_ACK_ACCEPTED};
    kf_buf_fixed(&out, buf, sizeof(buf));
    assert_int_equal(kfd_ack_write(mkek, FUZZ_PARTNER, &fields, &out), KF_OK);
    if (dir)
        write_seed(dir, "fuzz_device_part", "ack_b_900_accepted", buf, out.len);
    fields.status = KFD_ACK_STALE;
    kf_buf_fixed(&out, buf, sizeof(buf));
    assert_int_equal(kfd_ack_write(mkek, FUZZ_PARTNER, &fields, &out), KF_OK);
    if (dir)
        write_seed(dir, "fuzz_device_part", "ack_b_900_stale", buf, out.len);
    fields.status = KFD_ACK_PARTNER;
    kf_buf_fixed(&out, buf, sizeof(buf));
    assert_int_equal(kfd_ack_write(mkek, FUZZ_ID, &fields, &out), KF_OK);
    if (dir)
        write_seed(dir, "fuzz_device_ack", "ack_partner", buf, out.len);
    /* KMIP responses: success with M, failure with a message */
    struct response_spec r = {
        KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, 0, 0, NULL, both, m.a_len + m.b_len, 0, false};
    size_t n = build_response(buf, sizeof(buf), &r);
    if (dir)
        write_seed(dir, "fuzz_device_kmip", "response_m", buf, n);
    struct response_spec fail = {
        KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, 1, 0x0D, "no such device", NULL, 0, 0, false};
    n = build_response(buf, sizeof(buf), &fail);
    if (dir)
        write_seed(dir, "fuzz_device_kmip", "response_failure", buf, n);
    /* state and package */
    kf_buf_fixed(&out, buf, sizeof(buf));
    assert_int_equal(kfd_state_encode(&a.st, &out), KF_OK);
    if (dir)
        write_seed(dir, "fuzz_device_state", "state_4_keks", buf, out.len);
    n = make_package(buf, sizeof(buf), FUZZ_ID, "plant-7", mkek);
    if (dir)
        write_seed(dir, "fuzz_device_state", "package", buf, n);
    /* session: an M3 from the partner under KEK 77, an ack for seq 1 under the fixed SK,
     * and a record under it */
    struct fake_env fc;
    struct kfd_device c;
    holding_kek77(&c, &fc, FUZZ_PARTNER, FUZZ_ID);
    kf_buf_fixed(&out, buf, sizeof(buf));
    assert_int_equal(kfd_session_offer(&c, FUZZ_ID, sk, &out), KF_OK);
    size_t m3_len = out.len;
    struct fake_env fd;
    struct kfd_device d;
    holding_kek77(&d, &fd, FUZZ_ID, FUZZ_PARTNER);
    uint8_t ack[256], got[32];
    kf_buf ack_out;
    kf_buf_fixed(&ack_out, ack, sizeof(ack));
    assert_int_equal(kfd_session_accept(&d, buf, m3_len, got, &ack_out), KF_OK);
    if (dir)
        write_seed(dir, "fuzz_device_session", "m3", buf, m3_len);
    n = fixed_session_ack(buf, sizeof(buf));
    uint8_t fixed_sk[32];
    fuzz_sk(fixed_sk);
    assert_int_equal(kfd_session_confirm(&d, FUZZ_PARTNER, FUZZ_KEK_ID, 1, fixed_sk, buf, n),
                     KF_OK);
    if (dir)
        write_seed(dir, "fuzz_device_session", "session_ack", buf, n);
    /* a record from the partner, which accepted the fixed SK: the harness opens it as that */
    struct kfd_channel tx, rx;
    assert_int_equal(kfd_channel_init(&tx, fixed_sk, KFD_DIR_ACCEPTER), KF_OK);
    assert_int_equal(kfd_channel_init(&rx, fixed_sk, KFD_DIR_ACCEPTER), KF_OK);
    kf_buf_fixed(&out, buf, sizeof(buf));
    assert_int_equal(kfd_record_seal(&tx, (const uint8_t *)"meter reading", 13, &out), KF_OK);
    size_t data_len;
    assert_int_equal(kfd_record_open(&rx, buf, out.len, got, sizeof(got), &data_len), KF_OK);
    if (dir)
        write_seed(dir, "fuzz_device_session", "record", buf, out.len);
    kfd_close(&a);
    kfd_close(&b);
    kfd_close(&c);
    kfd_close(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(pair_with_then_1000_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(pair_with_resynchronises_stale_server, setup, teardown),
        cmocka_unit_test_setup_teardown(pair_with_stale_twice_gives_up, setup, teardown),
        cmocka_unit_test_setup_teardown(pair_with_partner_refusal_keeps_previous_keks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(pair_with_renewal_takes_effect_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(pair_with_lost_sm_b_keeps_previous_keks, setup, teardown),
        cmocka_unit_test_setup_teardown(pair_with_server_restored_reissues_kek_ids, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(pair_with_retries_stale_when_report_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(pair_with_own_refusal_does_not_forward, setup, teardown),
        cmocka_unit_test_setup_teardown(pair_with_largest_messages_full_state, setup, teardown),
        cmocka_unit_test_setup_teardown(partner_answer_kinds, setup, teardown),
        cmocka_unit_test(fuzz_seeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
