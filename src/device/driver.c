/*
 * The whole pairing over the caller's transport. A (the requester) asks
 * keyfleetd for KEKs, accepts SM_A, forwards SM_B to B and reports both
 * acknowledgements; B answers whatever A forwards.
 *
 * One work buffer carries everything, laid out step by step so that nothing
 * still needed is overwritten and the transport never gets a request and an
 * answer buffer that overlap:
 *
 *   asking the server   [payload | wrapped request | answer (M in its envelope) ...... ]
 *   M has arrived       [.............. SM_A somewhere .......... | acks A, B | SM_B ]
 *   A saves its state   [state encoding for save() .............. | acks A, B | SM_B ]
 *
 * SM_B moves to the end of the buffer as soon as M is split. SM_A stays where
 * it arrived and is read only until its KEKs are decrypted; after that its
 * bytes, and everything else before the acks, take the state encoding that
 * save() receives (kfd_pair_accept_in). So the encoding (up to
 * KFD_STATE_MAX) shares this buffer instead of needing its own on the stack.
 * The ack report's payload is then built at the front again.
 */
#include <string.h>

#include "device/internal.h"

#define KFD_PAYLOAD_MAX (2 * KFD_ACK_MAX) /* a PairKeyRequest payload (<= 192) or two acks */
/* kfd_kmip_wrap's envelope: five structure headers and four 4-byte items. */
#define KFD_REQUEST_MAX (KFD_PAYLOAD_MAX + 5 * KFD_ITEM_HEAD + 4 * 16)
#define KFD_WORK_LEN (KFD_STATE_MAX + 2 * KFD_ACK_MAX + KFD_PART_MAX)
#define KFD_ANSWER_AT (KFD_PAYLOAD_MAX + KFD_REQUEST_MAX)

_Static_assert(KFD_WORK_LEN - KFD_ANSWER_AT >= KFD_KMIP_MAX,
               "the answer region takes the largest M in its KMIP envelope");
_Static_assert(KFD_PAYLOAD_MAX <= KFD_STATE_MAX,
               "the report payload is built in front of the acks");

struct pair_work {
    uint8_t b[KFD_WORK_LEN];
};

static int exchange(const struct kfd_transport *t, enum kfd_peer peer, const uint8_t *req,
                    size_t len, uint8_t *resp, size_t cap, size_t *resp_len)
{
    *resp_len = 0;
    int rc = t->exchange(t->ctx, peer, req, len, resp, cap, resp_len);
    KF_ENSURE(rc <= 0, KF_ERR_IO);
    KF_GUARD(rc);
    KF_ENSURE(*resp_len <= cap, KF_ERR_IO);
    return KF_OK;
}

/* The payload at the front of w goes out wrapped right behind it; the answer lands behind
 * that, and its payload comes back spanning w. */
static int ask_server(const struct kfd_transport *t, uint8_t *w, uint32_t operation,
                      size_t payload_len, struct kfd_span *answer)
{
    kf_buf req;
    size_t resp_len;
    uint32_t reason;
    kf_buf_fixed(&req, w + KFD_PAYLOAD_MAX, KFD_REQUEST_MAX);
    KF_GUARD(kfd_kmip_wrap(operation, w, payload_len, &req));
    KF_GUARD(exchange(t, KFD_PEER_SERVER, req.data, req.len, w + KFD_ANSWER_AT,
                      KFD_WORK_LEN - KFD_ANSWER_AT, &resp_len));
    return kfd_kmip_unwrap(w + KFD_ANSWER_AT, resp_len, operation, answer, &reason, NULL, 0);
}

/* Step 1: KeyfleetPairKeyRequest, answered by M = SM_A || SM_B. SM_B then moves to the end of
 * w: it only ever moves towards the end, and SM_A lies before it, so neither is damaged. */
static int request_keks(struct kfd_device *d, const char *partner, const uint32_t ask[3],
                        const struct kfd_transport *t, uint8_t *w, struct kfd_span *sm_a,
                        struct kfd_span *sm_b)
{
    kf_buf payload;
    struct kfd_span m;
    kf_buf_fixed(&payload, w, KFD_PAYLOAD_MAX);
    KF_GUARD(kfd_pair_request(d, partner, ask[0], ask[1], ask[2], &payload));
    KF_GUARD(ask_server(t, w, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, payload.len, &m));
    KF_GUARD(kfd_pair_split(m.p, m.len, sm_a, sm_b)); /* each part <= KFD_PART_MAX */
    uint8_t *end = w + KFD_WORK_LEN - sm_b->len;
    memmove(end, sm_b->p, sm_b->len);
    sm_b->p = end;
    return KF_OK;
}

/* Step 3: B's verdict on SM_B, from its ack (whose MAC only the server can
 * check). *reportable says whether the ack is well formed enough to report. */
static int partner_verdict(const struct kfd_span *ack_b, const char *partner, uint64_t kek_id,
                           bool *reportable)
{
    struct kfd_ack ack;
    *reportable = false;
    KF_GUARD(kfd_ack_decode(ack_b->p, ack_b->len, &ack));
    *reportable = true;
    KF_ENSURE(strcmp(ack.device, partner) == 0, KF_ERR_PAIR_WRONG_DEVICE);
    KF_ENSURE(ack.kek_id == kek_id || ack.kek_id == 0, KF_ERR_PAIR_MALFORMED);
    return kfd_ack_status_error(ack.status);
}

/* Step 4: KeyfleetPairAckReport, its payload built at the front of w (the acks lie behind). */
static int report_acks(const struct kfd_transport *t, uint8_t *w, const struct kfd_span *acks,
                       size_t n)
{
    kf_buf payload;
    struct kfd_span answer;
    kf_buf_fixed(&payload, w, KFD_PAYLOAD_MAX);
    KF_GUARD(kfd_ack_report(acks, n, &payload));
    return ask_server(t, w, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, payload.len, &answer);
}

/* Steps 2-3 for B: forward SM_B, read B's ack into acks[1] (right after ours in ack_out); free
 * our KEKs if B refused them, with the state encoding in front of the acks. Returns a
 * transport error, else KF_OK with r->partner set. */
static int forward_part(struct kfd_device *d, const char *partner, const struct kfd_span *sm_b,
                        const struct kfd_transport *t, uint8_t *w, kf_buf *ack_out,
                        struct kfd_span *acks, size_t *n, struct kfd_pair_result *r)
{
    size_t b_len;
    bool reportable;
    uint8_t *ack_b = ack_out->data + ack_out->len;
    r->partner = exchange(t, KFD_PEER_PARTNER, sm_b->p, sm_b->len, ack_b,
                          ack_out->cap - ack_out->len, &b_len);
    KF_GUARD(r->partner);
    acks[1] = (struct kfd_span){ack_b, b_len};
    r->partner = partner_verdict(&acks[1], partner, r->kek_id, &reportable);
    if (reportable)
        *n = 2;
    /* KEKs B refused would never pair with anything: free their slots. */
    if (r->partner != KF_OK)
        return kfd_kek_release(d, partner, r->kek_id, r->kek_count, w, (size_t)(ack_out->data - w));
    return KF_OK;
}

static int pair_once(struct kfd_device *d, const char *partner, const uint32_t ask[3],
                     const struct kfd_transport *t, uint8_t *w, struct kfd_pair_result *r)
{
    struct kfd_span sm_a, sm_b, acks[2];
    kf_buf ack_out;
    size_t n = 1;
    r->own = r->partner = KF_ERR_PAIR_NOT_FORWARDED;
    KF_GUARD(request_keks(d, partner, ask, t, w, &sm_a, &sm_b));
    if (kfd_part_ids(sm_a.p, sm_a.len, &r->kek_id, &r->kek_count) != KF_OK)
        r->kek_id = 0, r->kek_count = 0;
    /* The two acks go right before SM_B; all of w in front of them (at least KFD_STATE_MAX,
     * SM_A included) takes the state encoding once SM_A is decrypted. */
    uint8_t *ack_at = w + KFD_WORK_LEN - sm_b.len - 2 * KFD_ACK_MAX;
    kf_buf_fixed(&ack_out, ack_at, 2 * KFD_ACK_MAX);
    r->own = kfd_pair_accept_in(d, KFD_ROLE_A, sm_a.p, sm_a.len, &ack_out, w, (size_t)(ack_at - w));
    if (ack_out.len == 0)
        return r->own; /* no ack could be written: an argument or buffer error */
    acks[0] = (struct kfd_span){ack_out.data, ack_out.len};
    /* SM_B goes to B only if we hold the KEKs it would pair B with. */
    int rc = r->own == KF_OK ? forward_part(d, partner, &sm_b, t, w, &ack_out, acks, &n, r) : KF_OK;
    int reported = report_acks(t, w, acks, n);
    KF_GUARD(rc);
    KF_GUARD(reported);
    return r->own != KF_OK ? r->own : r->partner;
}

int kfd_pair_with(struct kfd_device *d, const char *partner, uint32_t kek_count,
                  uint32_t lifetime_s, uint32_t max_uses, const struct kfd_transport *t,
                  struct kfd_pair_result *r)
{
    KF_ENSURE(d && partner && t && t->exchange && r, KF_ERR_ARG);
    const uint32_t ask[3] = {kek_count, lifetime_s, max_uses};
    struct pair_work work;
    int rc = KF_OK;
    bool own_resynced = false, partner_resynced = false;
    memset(r, 0, sizeof(*r));
    /* A stale verdict means the server was behind and the acks just moved it on: ask again,
     * once per device, since a restored server is usually behind on both. */
    for (;;) {
        rc = pair_once(d, partner, ask, t, work.b, r);
        bool own_stale = r->own == KF_ERR_PAIR_STALE,
             partner_stale = r->partner == KF_ERR_PAIR_STALE;
        if (rc != KF_ERR_PAIR_STALE || (own_stale && own_resynced) ||
            (partner_stale && partner_resynced))
            break;
        own_resynced |= own_stale;
        partner_resynced |= partner_stale;
    }
    kfd_wipe(&work, sizeof(work));
    return rc;
}

int kfd_partner_answer(struct kfd_device *d, const uint8_t *msg, size_t len, kf_buf *answer,
                       uint8_t sk[KFD_KEY_LEN], bool *got_sk)
{
    KF_ENSURE(d && msg && answer && sk && got_sk, KF_ERR_ARG);
    kf_buf in;
    kf_buf_reader(&in, msg, len);
    *got_sk = false;
    if (kfd_next_is(&in, KMIP_TAG_KEYFLEET_SESSION_KEY)) {
        int rc = kfd_session_accept(d, msg, len, sk, answer);
        *got_sk = rc == KF_OK;
        return rc;
    }
    /* Anything else is taken as a part: even garbage gets a MALFORMED ack. */
    return kfd_pair_accept(d, KFD_ROLE_B, msg, len, answer);
}
