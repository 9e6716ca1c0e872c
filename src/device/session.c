/*
 * Session keys between two paired devices (seed steps 6-9) and the records
 * that carry application data under them. Each session key sent or accepted
 * is one use of the KEK; the state is saved before anything is answered.
 */
#include <string.h>

#include "device/internal.h"

/* Largest SessionKey and SessionAck, every item at its limit. */
#define KFD_M3_MAX (3 * KFD_ITEM_HEAD + 16 + 16 + KFD_ITEM_HEAD + KFD_ID_MAX + 16 + 24 + 48)
#define KFD_SESSION_ACK_MAX (3 * KFD_ITEM_HEAD + 16 + 16 + KFD_ITEM_HEAD + KFD_ID_MAX + 16 + 16)

/* A SessionHeader as read: of M3 (with a nonce) or of a SessionAck (without). */
struct session_header {
    uint64_t kek_id, seq;
    char device[KFD_ID_MAX + 1];
    uint8_t nonce[KFD_NONCE_LEN];
    struct kfd_span bytes;
};

static int put_header(kf_buf *out, uint64_t kek_id, const char *device, uint64_t seq,
                      const uint8_t *nonce)
{
    size_t header;
    KF_GUARD(kfd_put_open(out, KMIP_TAG_KEYFLEET_SESSION_HEADER, &header));
    KF_GUARD(kfd_put_u32(out, KMIP_TAG_KEYFLEET_PROTO_VERSION, KFD_PROTO_VERSION));
    KF_GUARD(kfd_put_u64(out, KMIP_TAG_KEYFLEET_KEK_ID, kek_id));
    KF_GUARD(kfd_put_text(out, KMIP_TAG_KEYFLEET_DEVICE_ID, device));
    KF_GUARD(kfd_put_u64(out, KMIP_TAG_KEYFLEET_SEQ, seq));
    if (nonce)
        KF_GUARD(kfd_put_bytes(out, KMIP_TAG_KEYFLEET_NONCE, nonce, KFD_NONCE_LEN));
    return kfd_put_close(out, header);
}

static int get_header(kf_buf *in, bool with_nonce, struct session_header *h)
{
    kf_buf header;
    uint32_t version;
    KF_GUARD(kfd_get_open(in, KMIP_TAG_KEYFLEET_SESSION_HEADER, &header, &h->bytes));
    KF_GUARD(kfd_get_u32(&header, KMIP_TAG_KEYFLEET_PROTO_VERSION, &version));
    KF_ENSURE(version == KFD_PROTO_VERSION, KF_ERR_PAIR_MALFORMED);
    KF_GUARD(kfd_get_u64(&header, KMIP_TAG_KEYFLEET_KEK_ID, &h->kek_id));
    KF_GUARD(kfd_get_id(&header, KMIP_TAG_KEYFLEET_DEVICE_ID, h->device));
    KF_GUARD(kfd_get_u64(&header, KMIP_TAG_KEYFLEET_SEQ, &h->seq));
    if (with_nonce)
        KF_GUARD(kfd_get_key(&header, KMIP_TAG_KEYFLEET_NONCE, h->nonce, KFD_NONCE_LEN));
    return kfd_get_end(&header);
}

/* M3 = SessionKey {SessionHeader, SealedData = CCM_SKEK(SK), AAD = the header's bytes}. */
static int put_session_key(kf_buf *m3, const struct kfd_kek *k, const char *sender, uint64_t seq,
                           const uint8_t nonce[KFD_NONCE_LEN], const uint8_t sk[KFD_KEY_LEN])
{
    size_t outer;
    uint8_t *sealed, skek[KFD_KEY_LEN];
    KF_GUARD(kfd_put_open(m3, KMIP_TAG_KEYFLEET_SESSION_KEY, &outer));
    size_t header = m3->len;
    KF_GUARD(put_header(m3, k->kek_id, sender, seq, nonce));
    size_t header_len = m3->len - header;
    KF_GUARD(
        kfd_put_bytes_space(m3, KMIP_TAG_KEYFLEET_SEALED_DATA, KFD_KEY_LEN + KFD_TAG_LEN, &sealed));
    KF_GUARD(kfd_skek(k->key, k->kek_id, sender, skek));
    kfd_aead_seal(skek, nonce, m3->data + header, header_len, sk, KFD_KEY_LEN, sealed);
    kfd_wipe(skek, sizeof(skek));
    return kfd_put_close(m3, outer);
}

static int draw_session_key(const struct kfd_env *env, uint8_t sk[KFD_KEY_LEN],
                            uint8_t nonce[KFD_NONCE_LEN])
{
    KF_ENSURE(env->random(env->ctx, sk, KFD_KEY_LEN) == 0, KF_ERR_RNG_SOURCE);
    KF_ENSURE(env->random(env->ctx, nonce, KFD_NONCE_LEN) == 0, KF_ERR_RNG_SOURCE);
    return KF_OK;
}

/* Count one send under k, build M3 and save; on any failure k and m3 are as before. */
static int offer_under(struct kfd_device *d, struct kfd_kek *k, uint8_t sk[KFD_KEY_LEN], kf_buf *m3)
{
    uint8_t nonce[KFD_NONCE_LEN];
    KF_ENSURE(k->send_seq < UINT64_MAX, KF_ERR_KEK_EXHAUSTED);
    KF_GUARD(draw_session_key(&d->env, sk, nonce));
    size_t start = m3->len;
    int rc = put_session_key(m3, k, d->st.id, k->send_seq + 1, nonce, sk);
    if (rc == KF_OK) {
        k->uses++, k->send_seq++;
        rc = kfd_save(&d->env, &d->st);
        if (rc != KF_OK)
            k->uses--, k->send_seq--;
    }
    if (rc != KF_OK)
        m3->len = start;
    return rc;
}

int kfd_session_offer(struct kfd_device *d, const char *partner, uint8_t sk[KFD_KEY_LEN],
                      kf_buf *m3)
{
    KF_ENSURE(d && partner && sk && m3 && d->env.random && d->env.save, KF_ERR_ARG);
    KF_GUARD(kf_buf_reserve(m3, KFD_M3_MAX));
    size_t slot;
    KF_GUARD(kfd_kek_current(d, partner, &slot));
    int rc = offer_under(d, &d->st.keks[slot], sk, m3);
    if (rc != KF_OK)
        kfd_wipe(sk, KFD_KEY_LEN);
    return rc;
}

struct session_key {
    struct session_header h;
    struct kfd_span sealed;
};

static int session_key_decode(const uint8_t *m3, size_t len, struct session_key *s)
{
    KF_ENSURE(m3 && len <= KFD_MSG_MAX, KF_ERR_PAIR_MALFORMED);
    kf_buf in, outer;
    kf_buf_reader(&in, m3, len);
    KF_GUARD(kfd_get_open(&in, KMIP_TAG_KEYFLEET_SESSION_KEY, &outer, NULL));
    KF_GUARD(kfd_get_end(&in));
    KF_GUARD(get_header(&outer, true, &s->h));
    KF_GUARD(kfd_get_bytes(&outer, KMIP_TAG_KEYFLEET_SEALED_DATA, &s->sealed));
    KF_ENSURE(s->sealed.len == KFD_KEY_LEN + KFD_TAG_LEN, KF_ERR_PAIR_MALFORMED);
    return kfd_get_end(&outer);
}

static int find_kek(struct kfd_device *d, uint64_t kek_id, const char *partner, struct kfd_kek **k)
{
    for (size_t i = 0; i < KFD_MAX_KEKS; i++) {
        struct kfd_kek *slot = &d->st.keks[i];
        if (slot->in_use && slot->kek_id == kek_id && strcmp(slot->partner, partner) == 0)
            return *k = slot, KF_OK;
    }
    return KF_ERR_KEK_UNKNOWN;
}

/* SessionAck {SessionHeader' (receiver, no nonce), Mac = CMAC_CK(header' bytes)}. */
static int put_session_ack(kf_buf *ack, uint64_t kek_id, const char *receiver, uint64_t seq,
                           const uint8_t sk[KFD_KEY_LEN])
{
    size_t outer;
    uint8_t *mac, ck[KFD_KEY_LEN];
    KF_GUARD(kfd_put_open(ack, KMIP_TAG_KEYFLEET_SESSION_ACK, &outer));
    size_t header = ack->len;
    KF_GUARD(put_header(ack, kek_id, receiver, seq, NULL));
    size_t header_len = ack->len - header;
    KF_GUARD(kfd_put_bytes_space(ack, KMIP_TAG_KEYFLEET_MAC, KFD_MAC_LEN, &mac));
    KF_GUARD(kfd_ck(sk, kek_id, seq, ck));
    kfd_mac(ck, ack->data + header, header_len, mac);
    kfd_wipe(ck, sizeof(ck));
    return kfd_put_close(ack, outer);
}

/* The receiver's checks in the order of docs/pairing.md, then one use and a save. */
static int accept_session_key(struct kfd_device *d, const struct session_key *s,
                              uint8_t sk[KFD_KEY_LEN])
{
    struct kfd_kek *k;
    uint8_t skek[KFD_KEY_LEN];
    KF_GUARD(find_kek(d, s->h.kek_id, s->h.device, &k));
    KF_GUARD(kfd_kek_usable(k, d->env.now(d->env.ctx)));
    KF_ENSURE(s->h.seq > k->recv_seq, KF_ERR_SESSION_REPLAY);
    KF_GUARD(kfd_skek(k->key, k->kek_id, s->h.device, skek));
    int rc = kfd_aead_open(skek, s->h.nonce, s->h.bytes.p, s->h.bytes.len, s->sealed.p,
                           s->sealed.len, sk);
    kfd_wipe(skek, sizeof(skek));
    KF_ENSURE(rc == KF_OK, KF_ERR_SESSION_INTEGRITY);
    uint64_t recv_seq = k->recv_seq;
    k->uses++, k->recv_seq = s->h.seq;
    rc = kfd_save(&d->env, &d->st);
    if (rc != KF_OK)
        k->uses--, k->recv_seq = recv_seq;
    return rc;
}

int kfd_session_accept(struct kfd_device *d, const uint8_t *m3, size_t len, uint8_t sk[KFD_KEY_LEN],
                       kf_buf *ack)
{
    KF_ENSURE(d && sk && ack && d->env.now && d->env.save, KF_ERR_ARG);
    KF_GUARD(kf_buf_reserve(ack, KFD_SESSION_ACK_MAX));
    struct session_key s;
    int rc = session_key_decode(m3, len, &s);
    if (rc == KF_OK)
        rc = accept_session_key(d, &s, sk);
    if (rc == KF_OK) {
        size_t start = ack->len;
        rc = put_session_ack(ack, s.h.kek_id, d->st.id, s.h.seq, sk);
        if (rc != KF_OK)
            ack->len = start;
    }
    if (rc != KF_OK)
        kfd_wipe(sk, KFD_KEY_LEN);
    return rc;
}

static int session_ack_decode(const uint8_t *ack, size_t len, struct session_header *h,
                              uint8_t mac[KFD_MAC_LEN])
{
    KF_ENSURE(ack && len <= KFD_MSG_MAX, KF_ERR_PAIR_MALFORMED);
    kf_buf in, outer;
    kf_buf_reader(&in, ack, len);
    KF_GUARD(kfd_get_open(&in, KMIP_TAG_KEYFLEET_SESSION_ACK, &outer, NULL));
    KF_GUARD(kfd_get_end(&in));
    KF_GUARD(get_header(&outer, false, h));
    KF_GUARD(kfd_get_key(&outer, KMIP_TAG_KEYFLEET_MAC, mac, KFD_MAC_LEN));
    return kfd_get_end(&outer);
}

int kfd_session_confirm(const struct kfd_device *d, const char *partner, uint64_t kek_id,
                        uint64_t seq, const uint8_t sk[KFD_KEY_LEN], const uint8_t *ack, size_t len)
{
    KF_ENSURE(d && partner && sk, KF_ERR_ARG);
    struct session_header h;
    uint8_t mac[KFD_MAC_LEN], expected[KFD_MAC_LEN], ck[KFD_KEY_LEN];
    KF_GUARD(session_ack_decode(ack, len, &h, mac));
    /* An ack for another offer proves nothing about this one. */
    KF_ENSURE(h.kek_id == kek_id && h.seq == seq && strcmp(h.device, partner) == 0,
              KF_ERR_SESSION_INTEGRITY);
    KF_GUARD(kfd_ck(sk, kek_id, seq, ck));
    kfd_mac(ck, h.bytes.p, h.bytes.len, expected);
    kfd_wipe(ck, sizeof(ck));
    return kfd_equal(mac, expected, KFD_MAC_LEN) ? KF_OK : KF_ERR_SESSION_INTEGRITY;
}

/* ---- records ---- */

/* [direction]_32 || [seq]_64: the two devices seal under one SK, each in its own direction. */
static void record_nonce(uint32_t direction, uint64_t seq, uint8_t nonce[KFD_NONCE_LEN])
{
    nonce[0] = (uint8_t)(direction >> 24), nonce[1] = (uint8_t)(direction >> 16);
    nonce[2] = (uint8_t)(direction >> 8), nonce[3] = (uint8_t)direction;
    kfd_be64(nonce + 4, seq);
}

static bool direction_valid(uint32_t direction)
{
    return direction == KFD_DIR_OFFERER || direction == KFD_DIR_ACCEPTER;
}

int kfd_channel_init(struct kfd_channel *ch, const uint8_t sk[KFD_KEY_LEN],
                     enum kfd_direction direction)
{
    KF_ENSURE(ch && sk && direction_valid(direction), KF_ERR_ARG);
    memcpy(ch->sk, sk, KFD_KEY_LEN);
    ch->seq = 0;
    ch->direction = direction;
    return KF_OK;
}

static int put_record(kf_buf *record, const struct kfd_channel *ch, uint64_t seq,
                      const uint8_t *data, size_t len)
{
    size_t outer;
    uint8_t *sealed, nonce[KFD_NONCE_LEN];
    KF_GUARD(kfd_put_open(record, KMIP_TAG_KEYFLEET_SESSION_RECORD, &outer));
    size_t seq_item = record->len;
    KF_GUARD(kfd_put_u64(record, KMIP_TAG_KEYFLEET_SEQ, seq));
    size_t seq_len = record->len - seq_item;
    KF_GUARD(
        kfd_put_bytes_space(record, KMIP_TAG_KEYFLEET_SEALED_DATA, len + KFD_TAG_LEN, &sealed));
    record_nonce(ch->direction, seq, nonce);
    kfd_aead_seal(ch->sk, nonce, record->data + seq_item, seq_len, data, len, sealed);
    return kfd_put_close(record, outer);
}

int kfd_record_seal(struct kfd_channel *ch, const uint8_t *data, size_t len, kf_buf *record)
{
    KF_ENSURE(ch && record && (data || len == 0) && direction_valid(ch->direction), KF_ERR_ARG);
    KF_ENSURE(len <= KFD_DATA_MAX, KF_ERR_LIMIT);
    /* The nonce is the sequence number: it must never come round again. */
    KF_ENSURE(ch->seq < UINT64_MAX, KF_ERR_SESSION_REPLAY);
    size_t start = record->len;
    int rc = put_record(record, ch, ch->seq + 1, data, len);
    if (rc != KF_OK) {
        record->len = start;
        return rc;
    }
    ch->seq++;
    return KF_OK;
}

int kfd_record_open(struct kfd_channel *ch, const uint8_t *record, size_t len, uint8_t *data,
                    size_t cap, size_t *data_len)
{
    KF_ENSURE(ch && record && data_len && (data || cap == 0) && direction_valid(ch->direction),
              KF_ERR_ARG);
    KF_ENSURE(len <= KFD_MSG_MAX, KF_ERR_PAIR_MALFORMED);
    kf_buf in, outer;
    struct kfd_span sealed;
    uint64_t seq;
    uint8_t nonce[KFD_NONCE_LEN];
    kf_buf_reader(&in, record, len);
    KF_GUARD(kfd_get_open(&in, KMIP_TAG_KEYFLEET_SESSION_RECORD, &outer, NULL));
    KF_GUARD(kfd_get_end(&in));
    const uint8_t *seq_item = kf_buf_read_ptr(&outer);
    KF_GUARD(kfd_get_u64(&outer, KMIP_TAG_KEYFLEET_SEQ, &seq));
    size_t seq_len = (size_t)(kf_buf_read_ptr(&outer) - seq_item);
    KF_GUARD(kfd_get_bytes(&outer, KMIP_TAG_KEYFLEET_SEALED_DATA, &sealed));
    KF_GUARD(kfd_get_end(&outer));
    KF_ENSURE(seq > ch->seq, KF_ERR_SESSION_REPLAY);
    KF_ENSURE(sealed.len - KFD_TAG_LEN <= cap, KF_ERR_NOSPACE);
    /* The peer's direction: a record sealed in ours (reflected back) does not open. */
    record_nonce(ch->direction, seq, nonce);
    KF_ENSURE(kfd_aead_open(ch->sk, nonce, seq_item, seq_len, sealed.p, sealed.len, data) == KF_OK,
              KF_ERR_SESSION_INTEGRITY);
    ch->seq = seq;
    *data_len = sealed.len - KFD_TAG_LEN;
    return KF_OK;
}
