/*
 * KMIP request handling: decode a Request Message, run each batch item
 * through its handler, encode the Response Message. Malformed requests get
 * a KMIP failure response, never a crash or a silent close.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/log.h"
#include "kmip_internal.h"

#define KMIP_MAX_BATCH_ITEMS 64

static const struct {
    uint32_t op;
    kmip_handler fn;
} handlers[] = {
    {KMIP_OP_CREATE, kmip_create},
    {KMIP_OP_GET, kmip_get},
    {KMIP_OP_GET_ATTRIBUTES, kmip_get_attributes},
    {KMIP_OP_ACTIVATE, kmip_activate},
    {KMIP_OP_REVOKE, kmip_revoke},
    {KMIP_OP_DESTROY, kmip_destroy},
    {KMIP_OP_DISCOVER_VERSIONS, kmip_discover_versions},
    {KMIP_OP_QUERY, kmip_query},
    {KMIP_OP_KEYFLEET_INIT, kmip_kf_init},
    {KMIP_OP_KEYFLEET_UNSEAL, kmip_kf_unseal},
    {KMIP_OP_KEYFLEET_SEAL, kmip_kf_seal},
    {KMIP_OP_KEYFLEET_STATUS, kmip_kf_status},
    {KMIP_OP_KEYFLEET_DOMAIN_CREATE, kmip_kf_domain_create},
    {KMIP_OP_KEYFLEET_DOMAIN_LIST, kmip_kf_domain_list},
    {KMIP_OP_KEYFLEET_KEY_LIST, kmip_kf_key_list},
    {KMIP_OP_KEYFLEET_AUDIT_SHOW, kmip_kf_audit_show},
    {KMIP_OP_KEYFLEET_AUDIT_VERIFY, kmip_kf_audit_verify},
};

uint32_t kf_kms_result_reason(int err, int kmip_major)
{
    switch (err) {
    case KF_ERR_OBJECT:
    case KF_ERR_DOMAIN:
    case KF_ERR_NOT_FOUND:
        return KMIP_REASON_ITEM_NOT_FOUND;
    case KF_ERR_STATE:
    case KF_ERR_TRANSITION:
        return kmip_major >= 2 ? KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE
                               : KMIP_REASON_PERMISSION_DENIED;
    case KF_ERR_PERM:
    case KF_ERR_PEER:
    case KF_ERR_DOMAIN_CROSS:
        return KMIP_REASON_PERMISSION_DENIED;
    case KF_ERR_OPERATION:
        return KMIP_REASON_OPERATION_NOT_SUPPORTED;
    case KF_ERR_UNSUPPORTED:
    case KF_ERR_KEY_SIZE:
        return KMIP_REASON_FEATURE_NOT_SUPPORTED;
    case KF_ERR_REQUEST:
    case KF_ERR_TTLV_MISSING:
        return KMIP_REASON_MISSING_DATA;
    case KF_ERR_ATTRIBUTE:
    case KF_ERR_NAME:
    case KF_ERR_THRESHOLD:
    case KF_ERR_TTLV_TYPE:
    case KF_ERR_SHARE:
        return KMIP_REASON_INVALID_FIELD;
    case KF_ERR_EXISTS:
        return kmip_major >= 2 ? KMIP_REASON_OBJECT_ALREADY_EXISTS : KMIP_REASON_INVALID_FIELD;
    case KF_ERR_AUTH:
    case KF_ERR_CRYPTO:
    case KF_ERR_BAD_SIGNATURE:
        return KMIP_REASON_CRYPTOGRAPHIC_FAILURE;
    case KF_ERR_EXPORT:
        return kmip_major >= 2 ? KMIP_REASON_NOT_EXTRACTABLE : KMIP_REASON_PERMISSION_DENIED;
    case KF_ERR_LIMIT:
        return KMIP_REASON_RESPONSE_TOO_LARGE;
    default:
        return KMIP_REASON_GENERAL_FAILURE;
    }
}

const char *kmip_text(struct kmip_call *c, const kf_ttlv *parent, uint32_t tag)
{
    const char *s;
    size_t len;
    if (kf_ttlv_get_text(kf_ttlv_find(parent, tag), &s, &len) < 0)
        return NULL;
    (void)c;
    /* Arena text is NUL-terminated; refuse embedded NULs so C strings are whole. */
    return strlen(s) == len ? s : NULL;
}

int kmip_authorize(struct kmip_call *c, unsigned roles, const char *domain, const char *op)
{
    if (kf_principal_allows(c->who, roles, domain))
        return KF_OK;
    snprintf(c->message, sizeof(c->message), "%.120s may not %.40s%s%.64s", c->who->name, op,
             domain ? " in domain " : "", domain ? domain : "");
    pthread_mutex_lock(&c->kms->lock);
    kms_audit_refusal(c->kms, c->actor, op, domain && kf_domain_name_valid(domain) ? domain : "",
                      "", KF_ERR_PERM, "not authorised");
    pthread_mutex_unlock(&c->kms->lock);
    return KF_ERR_PERM;
}

int kmip_authorize_uid(struct kmip_call *c, unsigned roles, const char *uid, const char *op)
{
    char domain[65];
    if (kf_kms_uid_domain(uid, domain) < 0)
        return KF_OK; /* the service answers Item Not Found */
    return kmip_authorize(c, roles, domain, op);
}

static kmip_handler find_handler(uint32_t op)
{
    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
        if (handlers[i].op == op)
            return handlers[i].fn;
    return NULL;
}

static bool version_supported(int major, int minor)
{
    return (major == 1 && minor >= 0 && minor <= 4) || (major == 2 && minor >= 0 && minor <= 1);
}

static int put_failure(kf_arena *a, kf_ttlv *item, int err, int major, const char *extra)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "%s: %s%s%s", kf_errname(err), kf_strerror(err),
             extra && *extra ? " - " : "", extra ? extra : "");
    if (!kf_ttlv_add_enum(a, item, KMIP_TAG_RESULT_STATUS, KMIP_RESULT_STATUS_OPERATION_FAILED) ||
        !kf_ttlv_add_enum(a, item, KMIP_TAG_RESULT_REASON, kf_kms_result_reason(err, major)) ||
        !kf_ttlv_add_text(a, item, KMIP_TAG_RESULT_MESSAGE, msg))
        return KF_ERR_NOMEM;
    return KF_OK;
}

/* Run one batch item; always produces a response batch item. */
static int run_item(kf_kms *kms, const struct kf_principal *who, int major, int minor,
                    const kf_ttlv *bi,
                    kf_arena *a, kf_ttlv *resp_msg)
{
    kf_ttlv *item = kf_ttlv_struct(a, resp_msg, KMIP_TAG_BATCH_ITEM);
    KF_ENSURE(item != NULL, KF_ERR_NOMEM);
    uint32_t op = 0;
    int rc = kf_ttlv_get_enum(kf_ttlv_find(bi, KMIP_TAG_OPERATION), &op);
    if (rc == KF_OK && !kf_ttlv_add_enum(a, item, KMIP_TAG_OPERATION, op))
        return KF_ERR_NOMEM;
    const kf_ttlv *ubi = kf_ttlv_find(bi, KMIP_TAG_UNIQUE_BATCH_ITEM_ID);
    const uint8_t *id;
    size_t idlen;
    if (kf_ttlv_get_bytes(ubi, &id, &idlen) == KF_OK &&
        !kf_ttlv_add_bytes(a, item, KMIP_TAG_UNIQUE_BATCH_ITEM_ID, id, idlen))
        return KF_ERR_NOMEM;
    if (rc < 0)
        return put_failure(a, item, KF_ERR_REQUEST, major, "the batch item has no Operation");
    kmip_handler fn = find_handler(op);
    if (!fn)
        return put_failure(a, item, KF_ERR_OPERATION, major, NULL);

    kf_ttlv *payload = kf_ttlv_struct(a, NULL, KMIP_TAG_RESPONSE_PAYLOAD);
    KF_ENSURE(payload != NULL, KF_ERR_NOMEM);
    struct kmip_call call = {
        .kms = kms,
        .who = who,
        .actor = who->name,
        .major = major,
        .minor = minor,
        .req = kf_ttlv_find(bi, KMIP_TAG_REQUEST_PAYLOAD),
        .resp = payload,
        .arena = a,
    };
    rc = fn(&call);
    if (rc < 0)
        return put_failure(a, item, rc, major, call.message);
    if (!kf_ttlv_add_enum(a, item, KMIP_TAG_RESULT_STATUS, KMIP_RESULT_STATUS_SUCCESS))
        return KF_ERR_NOMEM;
    return kf_ttlv_append(item, payload);
}

static int put_header(kf_arena *a, kf_ttlv *msg, int major, int minor, int32_t count)
{
    kf_ttlv *h = kf_ttlv_struct(a, msg, KMIP_TAG_RESPONSE_HEADER);
    kf_ttlv *pv = h ? kf_ttlv_struct(a, h, KMIP_TAG_PROTOCOL_VERSION) : NULL;
    if (!pv || !kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR, major) ||
        !kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MINOR, minor) ||
        !kf_ttlv_add_datetime(a, h, KMIP_TAG_TIME_STAMP, (int64_t)time(NULL)) ||
        !kf_ttlv_add_int(a, h, KMIP_TAG_BATCH_COUNT, count))
        return KF_ERR_NOMEM;
    return KF_OK;
}

/* A whole-message failure: one batch item carrying the reason. */
static int message_failure(kf_arena *a, kf_buf *resp, int major, int minor, int err,
                           const char *why)
{
    kf_ttlv *msg = kf_ttlv_struct(a, NULL, KMIP_TAG_RESPONSE_MESSAGE);
    KF_ENSURE(msg != NULL, KF_ERR_NOMEM);
    KF_GUARD(put_header(a, msg, major, minor, 1));
    kf_ttlv *item = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
    KF_ENSURE(item != NULL, KF_ERR_NOMEM);
    KF_GUARD(put_failure(a, item, err, major, why));
    return kf_ttlv_encode(msg, resp);
}

static int handle(kf_kms *kms, const struct kf_principal *who, const uint8_t *req, size_t len,
                  kf_arena *a, kf_buf *resp)
{
    kf_ttlv *msg;
    int rc = kf_ttlv_decode(req, len, NULL, a, &msg);
    if (rc < 0) {
        kf_info("refused a KMIP message from %s: %s", who->name, kf_strerror(rc));
        kf_arena_reset(a);
        return message_failure(a, resp, 1, 4, KF_ERR_FORMAT, kf_strerror(rc));
    }
    if (msg->tag != KMIP_TAG_REQUEST_MESSAGE)
        return message_failure(a, resp, 1, 4, KF_ERR_REQUEST, "expected a Request Message");
    const kf_ttlv *hdr = kf_ttlv_find(msg, KMIP_TAG_REQUEST_HEADER);
    int32_t major = 0, minor = 0;
    const kf_ttlv *pv = kf_ttlv_find(hdr, KMIP_TAG_PROTOCOL_VERSION);
    if (kf_ttlv_get_int(kf_ttlv_find(pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR), &major) < 0 ||
        kf_ttlv_get_int(kf_ttlv_find(pv, KMIP_TAG_PROTOCOL_VERSION_MINOR), &minor) < 0)
        return message_failure(a, resp, 1, 4, KF_ERR_REQUEST,
                               "the Request Header has no Protocol Version");
    if (!version_supported(major, minor))
        return message_failure(a, resp, 1, 4, KF_ERR_UNSUPPORTED,
                               "protocol version not supported (1.0-1.4, 2.0-2.1 are)");
    size_t items = kf_ttlv_count(msg, KMIP_TAG_BATCH_ITEM);
    if (items == 0 || items > KMIP_MAX_BATCH_ITEMS)
        return message_failure(a, resp, major, minor, KF_ERR_REQUEST,
                               "a request carries 1 to 64 batch items");
    kf_ttlv *out = kf_ttlv_struct(a, NULL, KMIP_TAG_RESPONSE_MESSAGE);
    KF_ENSURE(out != NULL, KF_ERR_NOMEM);
    KF_GUARD(put_header(a, out, major, minor, (int32_t)items));
    for (const kf_ttlv *bi = kf_ttlv_find(msg, KMIP_TAG_BATCH_ITEM); bi;
         bi = kf_ttlv_find_next(bi, KMIP_TAG_BATCH_ITEM))
        KF_GUARD(run_item(kms, who, major, minor, bi, a, out));
    return kf_ttlv_encode(out, resp);
}

int kf_kms_handle_kmip(kf_kms *kms, const struct kf_principal *who, const uint8_t *req,
                       size_t len, kf_buf *resp)
{
    KF_ENSURE(kms && who && resp, KF_ERR_ARG);
    kf_arena *a;
    KF_GUARD(kf_arena_new(&a, 0));
    int rc = handle(kms, who, req, len, a, resp);
    if (rc < 0) {
        /* Out of arena or buffer space: answer with the reason if at all possible. */
        kf_buf_reset(resp);
        kf_arena_reset(a);
        rc = message_failure(a, resp, 1, 4, rc, "the response could not be built");
    }
    kf_arena_free(a); /* wipes: payloads may have held key material */
    return rc;
}
