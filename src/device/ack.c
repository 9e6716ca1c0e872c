/*
 * PairAck (N_X): what a device says about a part, MAC'd under
 * AK_X = KDF(MKEK_X, "keyfleet ack v1", ID-X) so the server can trust the
 * device counter it carries (resynchronisation, docs/pairing.md).
 */
#include <string.h>

#include "device/internal.h"

static const int status_error[] = {
    [KFD_ACK_ACCEPTED] = KF_OK,
    [KFD_ACK_STALE] = KF_ERR_PAIR_STALE,
    [KFD_ACK_INTEGRITY] = KF_ERR_PAIR_INTEGRITY,
    [KFD_ACK_WRONG_DEVICE] = KF_ERR_PAIR_WRONG_DEVICE,
    [KFD_ACK_MALFORMED] = KF_ERR_PAIR_MALFORMED,
    [KFD_ACK_EXPIRED] = KF_ERR_KEK_EXPIRED,
    [KFD_ACK_STORAGE] = KF_ERR_DEVICE_STORAGE,
    /* Only A says it, of its own part (kfd_pair_conclude); from a partner, about the part it
     * was given, it is no answer to that part. */
    [KFD_ACK_PARTNER] = KF_ERR_PAIR_MALFORMED,
};
#define STATUS_LAST KFD_ACK_PARTNER

int kfd_ack_status_error(uint32_t status)
{
    if (status < KFD_ACK_ACCEPTED || status > STATUS_LAST)
        return KF_ERR_PAIR_MALFORMED;
    return status_error[status];
}

uint32_t kfd_error_ack_status(int err)
{
    for (uint32_t s = KFD_ACK_ACCEPTED; s <= STATUS_LAST; s++)
        if (status_error[s] == err)
            return s;
    /* No slot free, or any other local failure: nothing was stored. */
    return KFD_ACK_STORAGE;
}

static int put_ack(const uint8_t ak[KFD_KEY_LEN], const char *id, const struct kfd_ack_fields *f,
                   kf_buf *ack)
{
    size_t outer, body;
    uint8_t *mac;
    KF_GUARD(kfd_put_open(ack, KMIP_TAG_KEYFLEET_PAIR_ACK, &outer));
    KF_GUARD(kfd_put_open(ack, KMIP_TAG_KEYFLEET_ACK_BODY, &body));
    KF_GUARD(kfd_put_u32(ack, KMIP_TAG_KEYFLEET_PROTO_VERSION, KFD_PROTO_VERSION));
    KF_GUARD(kfd_put_text(ack, KMIP_TAG_KEYFLEET_DEVICE_ID, id));
    KF_GUARD(kfd_put_u64(ack, KMIP_TAG_KEYFLEET_KEK_ID, f->kek_id));
    KF_GUARD(kfd_put_u64(ack, KMIP_TAG_KEYFLEET_COUNTER, f->part_counter));
    KF_GUARD(kfd_put_u64(ack, KMIP_TAG_KEYFLEET_DEVICE_COUNTER, f->device_counter));
    KF_GUARD(kfd_put_u32(ack, KMIP_TAG_KEYFLEET_ACK_STATUS, f->status));
    KF_GUARD(kfd_put_close(ack, body));
    size_t body_len = ack->len - body;
    KF_GUARD(kfd_put_bytes_space(ack, KMIP_TAG_KEYFLEET_MAC, KFD_MAC_LEN, &mac));
    kfd_mac(ak, ack->data + body, body_len, mac);
    return kfd_put_close(ack, outer);
}

int kfd_ack_write(const uint8_t mkek[KFD_KEY_LEN], const char *id, const struct kfd_ack_fields *f,
                  kf_buf *ack)
{
    uint8_t ak[KFD_KEY_LEN];
    KF_GUARD(kfd_ak(mkek, id, ak));
    size_t start = ack->len;
    int rc = put_ack(ak, id, f, ack);
    kfd_wipe(ak, sizeof(ak));
    if (rc != KF_OK)
        ack->len = start;
    return rc;
}

static int get_ack(kf_buf *in, struct kfd_ack *out)
{
    kf_buf ack, body;
    uint32_t version;
    KF_GUARD(kfd_get_open(in, KMIP_TAG_KEYFLEET_PAIR_ACK, &ack, NULL));
    KF_GUARD(kfd_get_open(&ack, KMIP_TAG_KEYFLEET_ACK_BODY, &body, &out->body));
    KF_GUARD(kfd_get_u32(&body, KMIP_TAG_KEYFLEET_PROTO_VERSION, &version));
    KF_ENSURE(version == KFD_PROTO_VERSION, KF_ERR_PAIR_MALFORMED);
    KF_GUARD(kfd_get_id(&body, KMIP_TAG_KEYFLEET_DEVICE_ID, out->device));
    KF_GUARD(kfd_get_u64(&body, KMIP_TAG_KEYFLEET_KEK_ID, &out->kek_id));
    KF_GUARD(kfd_get_u64(&body, KMIP_TAG_KEYFLEET_COUNTER, &out->part_counter));
    KF_GUARD(kfd_get_u64(&body, KMIP_TAG_KEYFLEET_DEVICE_COUNTER, &out->device_counter));
    KF_GUARD(kfd_get_u32(&body, KMIP_TAG_KEYFLEET_ACK_STATUS, &out->status));
    KF_ENSURE(out->status >= KFD_ACK_ACCEPTED && out->status <= STATUS_LAST, KF_ERR_PAIR_MALFORMED);
    KF_GUARD(kfd_get_end(&body));
    KF_GUARD(kfd_get_key(&ack, KMIP_TAG_KEYFLEET_MAC, out->mac, KFD_MAC_LEN));
    return kfd_get_end(&ack);
}

int kfd_ack_decode(const uint8_t *ack, size_t len, struct kfd_ack *out)
{
    KF_ENSURE(ack && out, KF_ERR_ARG);
    KF_ENSURE(len <= KFD_MSG_MAX, KF_ERR_PAIR_MALFORMED);
    kf_buf in;
    kf_buf_reader(&in, ack, len);
    memset(out, 0, sizeof(*out));
    int rc = get_ack(&in, out);
    if (rc == KF_OK)
        rc = kfd_get_end(&in);
    if (rc != KF_OK)
        memset(out, 0, sizeof(*out));
    return rc;
}

int kfd_ack_report(const struct kfd_span *acks, size_t n, kf_buf *payload)
{
    KF_ENSURE(acks && payload && (n == 1 || n == 2), KF_ERR_ARG);
    size_t start = payload->len;
    for (size_t i = 0; i < n; i++) {
        struct kfd_ack check;
        /* Only well-formed acks go to the server; their MACs are its to check. */
        int rc = kfd_ack_decode(acks[i].p, acks[i].len, &check);
        if (rc == KF_OK)
            rc = kf_buf_put_bytes(payload, acks[i].p, acks[i].len);
        if (rc != KF_OK) {
            payload->len = start;
            return rc;
        }
    }
    return KF_OK;
}
