/*
 * The whole pairing over the caller's transport. A (the requester) asks
 * keyfleetd for KEKs, checks SM_A, forwards SM_B to B, takes its KEKs only
 * if B's ack says B took its own (seed [0048]: else A moves its counter only),
 * and reports both acknowledgements; B answers whatever A forwards.
 *
 * One work buffer carries everything, laid out step by step so that nothing
 * still needed is overwritten and the transport never gets a request and an
 * answer buffer that overlap:
 *
 *   asking the server   [payload | wrapped request | answer (M in its envelope) ...... ]
 *   M has arrived       [SM_A | ......................... | ack A . | ack B . | SM_B ]
 *   A saves its state   [state encoding for save() ...... | ack A . | ack B . | SM_B ]
 *
 * As soon as M is split, SM_B moves to the end of the buffer and SM_A to its
 * front. SM_A is read (checked before SM_B goes out, checked again and
 * decrypted once B answered) until its KEKs are decrypted for the save; after
 * that its bytes, and everything else before the acks, take the state
 * encoding that save() receives (kfd_pair_conclude_in). So the encoding (up
 * to KFD_STATE_MAX) shares this buffer instead of needing its own on the
 * stack. B's answer lands in its ack slot; A's ack is written once A has
 * saved. The ack report's payload is then built at the front again.
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
_Static_assert(KFD_PART_MAX <= KFD_STATE_MAX, "SM_A fits in front of the acks");

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
 * that, and its payload comes back spanning w. A refusal's reason and message go to r. */
static int ask_server(const struct kfd_transport *t, uint8_t *w, uint32_t operation,
                      size_t payload_len, struct kfd_span *answer, struct kfd_pair_result *r)
{
    kf_buf req;
    size_t resp_len;
    kf_buf_fixed(&req, w + KFD_PAYLOAD_MAX, KFD_REQUEST_MAX);
    KF_GUARD(kfd_kmip_wrap(operation, w, payload_len, &req));
    KF_GUARD(exchange(t, KFD_PEER_SERVER, req.data, req.len, w + KFD_ANSWER_AT,
                      KFD_WORK_LEN - KFD_ANSWER_AT, &resp_len));
    /* Reason and message are 0 and "" unless the server refused: the report comes last, so a
     * refusal is never overwritten within an attempt. */
    int rc = kfd_kmip_unwrap(w + KFD_ANSWER_AT, resp_len, operation, answer, &r->server_reason,
                             r->server_message, sizeof(r->server_message));
    if (rc == KF_ERR_DEVICE_SERVER)
        r->server_operation = operation;
    return rc;
}

/* Step 1: KeyfleetPairKeyRequest, answered by M = SM_A || SM_B. SM_B then moves to the end of
 * w and SM_A to its front: SM_B only ever moves towards the end and SM_A, which lies before it,
 * towards the front, so neither is damaged. */
static int request_keks(struct kfd_device *d, const char *partner, const uint32_t ask[3],
                        const struct kfd_transport *t, uint8_t *w, struct kfd_span *sm_a,
                        struct kfd_span *sm_b, struct kfd_pair_result *r)
{
    kf_buf payload;
    struct kfd_span m;
    kf_buf_fixed(&payload, w, KFD_PAYLOAD_MAX);
    KF_GUARD(kfd_pair_request(d, partner, ask[0], ask[1], ask[2], &payload));
    KF_GUARD(ask_server(t, w, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, payload.len, &m, r));
    KF_GUARD(kfd_pair_split(m.p, m.len, sm_a, sm_b)); /* each part <= KFD_PART_MAX */
    uint8_t *end = w + KFD_WORK_LEN - sm_b->len;
    memmove(end, sm_b->p, sm_b->len);
    sm_b->p = end;
    memmove(w, sm_a->p, sm_a->len);
    sm_a->p = w;
    return KF_OK;
}

/* Step 4: KeyfleetPairAckReport, its payload built at the front of w (the acks lie behind). */
static int report_acks(const struct kfd_transport *t, uint8_t *w, const struct kfd_span *acks,
                       size_t n, struct kfd_pair_result *r)
{
    kf_buf payload;
    struct kfd_span answer;
    kf_buf_fixed(&payload, w, KFD_PAYLOAD_MAX);
    KF_GUARD(kfd_ack_report(acks, n, &payload));
    return ask_server(t, w, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, payload.len, &answer, r);
}

/* Step 2 for B: forward SM_B and read B's answer into its ack slot. A transport error goes to
 * r->partner and comes back; KF_OK with *b_ack spanning the answer otherwise. */
static int forward_part(const struct kfd_span *sm_b, const struct kfd_transport *t, uint8_t *slot,
                        struct kfd_span *b_ack, struct kfd_pair_result *r)
{
    size_t b_len;
    r->partner = exchange(t, KFD_PEER_PARTNER, sm_b->p, sm_b->len, slot, KFD_ACK_MAX, &b_len);
    KF_GUARD(r->partner);
    *b_ack = (struct kfd_span){slot, b_len};
    return KF_OK;
}

/* One attempt. Returns a transport error, else the first of: a stale verdict, the report's
 * refusal, A's verdict, B's verdict. */
static int pair_once(struct kfd_device *d, const char *partner, const uint32_t ask[3],
                     const struct kfd_transport *t, uint8_t *w, struct kfd_pair_result *r)
{
    struct kfd_span sm_a, sm_b, acks[2], b_ack = {NULL, 0};
    kf_buf ack_out;
    size_t n = 1;
    r->own = r->partner = KF_ERR_PAIR_NOT_FORWARDED;
    r->server_operation = r->server_reason = 0;
    r->server_message[0] = '\0';
    KF_GUARD(request_keks(d, partner, ask, t, w, &sm_a, &sm_b, r));
    if (kfd_part_ids(sm_a.p, sm_a.len, &r->kek_id, &r->kek_count) != KF_OK)
        r->kek_id = 0, r->kek_count = 0;
    /* A's ack and B's go right before SM_B; all of w in front of them (at least KFD_STATE_MAX,
     * SM_A included) takes the state encoding once SM_A is decrypted. */
    uint8_t *ack_at = w + KFD_WORK_LEN - sm_b.len - 2 * KFD_ACK_MAX;
    int forwarded = KF_OK;
    /* SM_B goes to B only if SM_A is good: B would otherwise hold KEKs A can never take. */
    if (kfd_pair_check(d, sm_a.p, sm_a.len) == KF_OK)
        forwarded = forward_part(&sm_b, t, ack_at + KFD_ACK_MAX, &b_ack, r);
    /* Then A's own verdict and, only if B's ack says B took its KEKs, A's KEKs (one save,
     * counter included); and A's ack. */
    int partner_verdict;
    kf_buf_fixed(&ack_out, ack_at, KFD_ACK_MAX);
    r->own = kfd_pair_conclude_in(d, sm_a.p, sm_a.len, b_ack.p, b_ack.len, &partner_verdict,
                                  &ack_out, w, (size_t)(ack_at - w));
    if (ack_out.len == 0)
        return r->own; /* no ack could be written: an argument or buffer error */
    acks[0] = (struct kfd_span){ack_out.data, ack_out.len};
    if (b_ack.p) {
        struct kfd_ack check;
        r->partner = partner_verdict;
        /* B's answer goes to the server if it is an ack at all: its MAC is the server's to
         * check, and its DeviceCounter resynchronises B's counter. */
        if (kfd_ack_decode(b_ack.p, b_ack.len, &check) == KF_OK)
            acks[n++] = b_ack;
    }
    int reported = report_acks(t, w, acks, n, r);
    KF_GUARD(forwarded);
    if (r->own == KF_ERR_PAIR_STALE || r->partner == KF_ERR_PAIR_STALE)
        return KF_ERR_PAIR_STALE; /* the acks resynchronised the server, whatever it answered */
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
    /* A stale verdict means the server was behind and the acks moved it on (or, if it refused
     * the report, that it sent an old M): ask again, once per device, since a restored server
     * is usually behind on both. */
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
