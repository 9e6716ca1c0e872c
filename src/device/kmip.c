/*
 * The smallest KMIP a device needs to talk to keyfleetd: a KMIP 1.4 Request
 * Message with one batch item around a protocol payload, and the Response
 * Message that comes back. Header fields the device has no use for (Time
 * Stamp, and anything else a server adds) are skipped item by item.
 */
#include <string.h>

#include "device/internal.h"

int kfd_kmip_wrap(uint32_t operation, const uint8_t *payload, size_t len, kf_buf *msg)
{
    KF_ENSURE(msg && (payload || len == 0), KF_ERR_ARG);
    /* The payload is whole TTLV items, so a multiple of 8 bytes. */
    KF_ENSURE(len <= KFD_MSG_MAX && len % 8 == 0, KF_ERR_ARG);
    size_t start = msg->len, message, header, version, item, body;
    int rc = kfd_put_open(msg, KMIP_TAG_REQUEST_MESSAGE, &message);
    if (rc == KF_OK)
        rc = kfd_put_open(msg, KMIP_TAG_REQUEST_HEADER, &header);
    if (rc == KF_OK)
        rc = kfd_put_open(msg, KMIP_TAG_PROTOCOL_VERSION, &version);
    if (rc == KF_OK)
        rc = kfd_put_u32(msg, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
    if (rc == KF_OK)
        rc = kfd_put_u32(msg, KMIP_TAG_PROTOCOL_VERSION_MINOR, 4);
    if (rc == KF_OK)
        rc = kfd_put_close(msg, version);
    if (rc == KF_OK)
        rc = kfd_put_u32(msg, KMIP_TAG_BATCH_COUNT, 1);
    if (rc == KF_OK)
        rc = kfd_put_close(msg, header);
    if (rc == KF_OK)
        rc = kfd_put_open(msg, KMIP_TAG_BATCH_ITEM, &item);
    if (rc == KF_OK)
        rc = kfd_put_u32(msg, KMIP_TAG_OPERATION, operation);
    if (rc == KF_OK)
        rc = kfd_put_open(msg, KMIP_TAG_REQUEST_PAYLOAD, &body);
    if (rc == KF_OK)
        rc = kf_buf_put_bytes(msg, payload, len);
    if (rc == KF_OK)
        rc = kfd_put_close(msg, body);
    if (rc == KF_OK)
        rc = kfd_put_close(msg, item);
    if (rc == KF_OK)
        rc = kfd_put_close(msg, message);
    if (rc != KF_OK)
        msg->len = start;
    return rc;
}

/* Response Header: Protocol Version first, Batch Count (1) last, anything between skipped. */
static int get_response_header(kf_buf *message)
{
    kf_buf header, version;
    uint32_t count;
    KF_GUARD(kfd_get_open(message, KMIP_TAG_RESPONSE_HEADER, &header, NULL));
    KF_GUARD(kfd_get_open(&header, KMIP_TAG_PROTOCOL_VERSION, &version, NULL));
    while (kf_buf_remaining(&header) && !kfd_next_is(&header, KMIP_TAG_BATCH_COUNT))
        KF_GUARD(kfd_skip_item(&header));
    KF_GUARD(kfd_get_u32(&header, KMIP_TAG_BATCH_COUNT, &count));
    KF_ENSURE(count == 1, KF_ERR_PAIR_MALFORMED);
    return kfd_get_end(&header);
}

static void copy_message(const struct kfd_span *text, char *msg, size_t msg_cap)
{
    if (!msg || msg_cap == 0)
        return;
    size_t n = text->len < msg_cap - 1 ? text->len : msg_cap - 1;
    if (n)
        memcpy(msg, text->p, n);
    msg[n] = '\0';
}

struct batch_result {
    uint32_t status, reason;
    struct kfd_span message, payload;
};

/* Batch Item: [Operation], [Unique Batch Item ID], Result Status, [Result
 * Reason], [Result Message], [Response Payload]. */
static int get_batch_item(kf_buf *message, uint32_t operation, struct batch_result *res)
{
    kf_buf item, payload;
    KF_GUARD(kfd_get_open(message, KMIP_TAG_BATCH_ITEM, &item, NULL));
    if (kfd_next_is(&item, KMIP_TAG_OPERATION)) {
        uint32_t op;
        KF_GUARD(kfd_get_u32(&item, KMIP_TAG_OPERATION, &op));
        KF_ENSURE(op == operation, KF_ERR_PAIR_MALFORMED);
    }
    if (kfd_next_is(&item, KMIP_TAG_UNIQUE_BATCH_ITEM_ID))
        KF_GUARD(kfd_skip_item(&item));
    KF_GUARD(kfd_get_u32(&item, KMIP_TAG_RESULT_STATUS, &res->status));
    if (kfd_next_is(&item, KMIP_TAG_RESULT_REASON))
        KF_GUARD(kfd_get_u32(&item, KMIP_TAG_RESULT_REASON, &res->reason));
    if (kfd_next_is(&item, KMIP_TAG_RESULT_MESSAGE))
        KF_GUARD(kfd_get_text(&item, KMIP_TAG_RESULT_MESSAGE, &res->message));
    if (kfd_next_is(&item, KMIP_TAG_RESPONSE_PAYLOAD)) {
        KF_GUARD(kfd_get_open(&item, KMIP_TAG_RESPONSE_PAYLOAD, &payload, NULL));
        res->payload.p = kf_buf_read_ptr(&payload);
        res->payload.len = kf_buf_remaining(&payload);
    }
    return kfd_get_end(&item);
}

int kfd_kmip_unwrap(const uint8_t *resp, size_t len, uint32_t operation, struct kfd_span *payload,
                    uint32_t *reason, char *msg, size_t msg_cap)
{
    KF_ENSURE(resp && payload, KF_ERR_ARG);
    struct batch_result res = {0, 0, {NULL, 0}, {resp, 0}};
    payload->p = NULL;
    payload->len = 0;
    if (reason)
        *reason = 0;
    copy_message(&res.message, msg, msg_cap);
    KF_ENSURE(len <= KFD_KMIP_MAX, KF_ERR_PAIR_MALFORMED);
    kf_buf in, message;
    kf_buf_reader(&in, resp, len);
    KF_GUARD(kfd_get_open(&in, KMIP_TAG_RESPONSE_MESSAGE, &message, NULL));
    KF_GUARD(kfd_get_end(&in));
    KF_GUARD(get_response_header(&message));
    KF_GUARD(get_batch_item(&message, operation, &res));
    KF_GUARD(kfd_get_end(&message));
    if (res.status != KMIP_RESULT_STATUS_SUCCESS) {
        if (reason)
            *reason = res.reason;
        copy_message(&res.message, msg, msg_cap);
        return KF_ERR_DEVICE_SERVER;
    }
    *payload = res.payload;
    return KF_OK;
}
