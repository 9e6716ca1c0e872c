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
    {KMIP_OP_CREATE, kmip_attrs_create},
    {KMIP_OP_GET, kmip_get},
    {KMIP_OP_GET_ATTRIBUTES, kmip_attrs_get_attributes},
    {KMIP_OP_GET_ATTRIBUTE_LIST, kmip_get_attribute_list},
    {KMIP_OP_ADD_ATTRIBUTE, kmip_add_attribute},
    {KMIP_OP_MODIFY_ATTRIBUTE, kmip_modify_attribute},
    {KMIP_OP_DELETE_ATTRIBUTE, kmip_delete_attribute},
    {KMIP_OP_SET_ATTRIBUTE, kmip_set_attribute},
    {KMIP_OP_LOCATE, kmip_locate},
    {KMIP_OP_ACTIVATE, kmip_activate},
    {KMIP_OP_REVOKE, kmip_revoke},
    {KMIP_OP_DESTROY, kmip_destroy},
    {KMIP_OP_DISCOVER_VERSIONS, kmip_discover_versions},
    {KMIP_OP_QUERY, kmip_query},
    {KMIP_OP_ENCRYPT, kmip_encrypt},
    {KMIP_OP_DECRYPT, kmip_decrypt},
    {KMIP_OP_SIGN, kmip_sign},
    {KMIP_OP_SIGNATURE_VERIFY, kmip_signature_verify},
    {KMIP_OP_MAC, kmip_mac},
    {KMIP_OP_MAC_VERIFY, kmip_mac_verify},
    {KMIP_OP_RNG_RETRIEVE, kmip_rng_retrieve},
    {KMIP_OP_HASH, kmip_hash},
    {KMIP_OP_REGISTER, kmip_attrs_register},
    {KMIP_OP_CREATE_KEY_PAIR, kmip_create_key_pair},
    {KMIP_OP_RE_KEY, kmip_re_key},
    {KMIP_OP_RE_KEY_KEY_PAIR, kmip_re_key_key_pair},
    {KMIP_OP_DERIVE_KEY, kmip_derive_key},
    {KMIP_OP_CHECK, kmip_check},
    {KMIP_OP_ARCHIVE, kmip_archive},
    {KMIP_OP_RECOVER, kmip_recover},
    {KMIP_OP_EXPORT, kmip_export},
    {KMIP_OP_IMPORT, kmip_import},
    {KMIP_OP_INTEROP, kmip_interop},
    {KMIP_OP_LOG, kmip_log},
    {KMIP_OP_CERTIFY, kmip_certify},
    {KMIP_OP_KEYFLEET_INIT, kmip_kf_init},
    {KMIP_OP_KEYFLEET_UNSEAL, kmip_kf_unseal},
    {KMIP_OP_KEYFLEET_SEAL, kmip_kf_seal},
    {KMIP_OP_KEYFLEET_STATUS, kmip_kf_status},
    {KMIP_OP_KEYFLEET_DOMAIN_CREATE, kmip_kf_domain_create},
    {KMIP_OP_KEYFLEET_DOMAIN_LIST, kmip_kf_domain_list},
    {KMIP_OP_KEYFLEET_KEY_LIST, kmip_kf_key_list},
    {KMIP_OP_KEYFLEET_AUDIT_SHOW, kmip_kf_audit_show},
    {KMIP_OP_KEYFLEET_AUDIT_VERIFY, kmip_kf_audit_verify},
    {KMIP_OP_KEYFLEET_DEVICE_REGISTER, kmip_kf_device_register},
    {KMIP_OP_KEYFLEET_DEVICE_EXPORT, kmip_kf_device_export},
    {KMIP_OP_KEYFLEET_DEVICE_GET, kmip_kf_device_get},
    {KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, kmip_kf_pair_key_request},
    {KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, kmip_kf_pair_ack_report},
    {KMIP_OP_KEYFLEET_MFG_SETUP, kmip_kf_mfg_setup},
    {KMIP_OP_KEYFLEET_MFG_ROLE_ENROLL, kmip_kf_mfg_role_enroll},
    {KMIP_OP_KEYFLEET_MFG_ROLE_CERTS, kmip_kf_mfg_role_certs},
    {KMIP_OP_KEYFLEET_MFG_REQUEST_KEY, kmip_kf_mfg_request_key},
    {KMIP_OP_KEYFLEET_MFG_REPORT_INSTALL, kmip_kf_mfg_report_install},
    {KMIP_OP_KEYFLEET_MFG_REGISTER, kmip_kf_mfg_register},
    {KMIP_OP_KEYFLEET_MFG_RETIRE, kmip_kf_mfg_retire},
    {KMIP_OP_KEYFLEET_MFG_STATUS, kmip_kf_mfg_status},
    {KMIP_OP_KEYFLEET_TOKEN_VERIFY, kmip_kf_token_verify},
    {KMIP_OP_KEYFLEET_TOKEN_KEY_EXPORT, kmip_kf_token_key_export},
};

/* The standard operations this server answers, from the handler table itself. */
size_t kmip_supported_operations(uint32_t *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]) && n < max; i++)
        if (handlers[i].op < 0x80000000u)
            out[n++] = handlers[i].op;
    return n;
}

uint32_t kf_kms_result_reason(int err, int kmip_major)
{
    switch (err) {
    case KF_ERR_OBJECT_ARCHIVED:
        return KMIP_REASON_OBJECT_ARCHIVED;
    case KF_ERR_OBJECT:
    case KF_ERR_DOMAIN:
    case KF_ERR_NOT_FOUND:
    case KF_ERR_DEVICE_UNKNOWN:
    case KF_ERR_ACK_UNKNOWN:
    case KF_ERR_MFG_UNKNOWN:
    case KF_ERR_MFG_ROLE:
        return KMIP_REASON_ITEM_NOT_FOUND;
    /* Manufacturing (docs/manufacturing.md): framing, command, parameters. */
    case KF_ERR_MFG_FRAMING:
        return KMIP_REASON_INVALID_MESSAGE;
    case KF_ERR_MFG_COMMAND:
        return KMIP_REASON_PERMISSION_DENIED;
    case KF_ERR_MFG_PARAM:
    case KF_ERR_MFG_COUNTRY:
    case KF_ERR_MFG_STEEL_ID:
        return KMIP_REASON_INVALID_FIELD;
    case KF_ERR_MFG_KEY_ID:
    case KF_ERR_MFG_STATUS:
    case KF_ERR_MFG_TIME:
    case KF_ERR_MFG_SETUP:
    case KF_ERR_MFG_NOT_ACTIVE:
        return kmip_major >= 2 ? KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE
                               : KMIP_REASON_PERMISSION_DENIED;
    case KF_ERR_MFG_REG_MAC:
    case KF_ERR_MFG_TOKENS:
    case KF_ERR_MFG_ARCHIVE:
        return KMIP_REASON_CRYPTOGRAPHIC_FAILURE;
    case KF_ERR_STATE:
    case KF_ERR_TRANSITION:
        return kmip_major >= 2 ? KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE
                               : KMIP_REASON_PERMISSION_DENIED;
    case KF_ERR_PERM:
    case KF_ERR_PEER:
    case KF_ERR_DOMAIN_CROSS:
    case KF_ERR_DEVICE_EXPORTED:
    case KF_ERR_ACK_REPLAY:
        return KMIP_REASON_PERMISSION_DENIED;
    case KF_ERR_OPERATION:
        return KMIP_REASON_OPERATION_NOT_SUPPORTED;
    case KF_ERR_UNSUPPORTED:
    case KF_ERR_KEY_SIZE:
        return KMIP_REASON_FEATURE_NOT_SUPPORTED;
    case KF_ERR_REQUEST:
    case KF_ERR_TTLV_MISSING:
        return KMIP_REASON_MISSING_DATA;
    case KF_ERR_INVALID_MESSAGE:
        return KMIP_REASON_INVALID_MESSAGE;
    case KF_ERR_ATTRIBUTE:
    case KF_ERR_NAME:
    case KF_ERR_DEVICE_ID:
    case KF_ERR_PAIR_SAME:
    case KF_ERR_PAIR_POLICY:
    case KF_ERR_THRESHOLD:
    case KF_ERR_TTLV_TYPE:
    case KF_ERR_SHARE:
        return KMIP_REASON_INVALID_FIELD;
    case KF_ERR_PAIR_MALFORMED:
        return KMIP_REASON_INVALID_MESSAGE;
    case KF_ERR_ACK_MAC:
        return KMIP_REASON_CRYPTOGRAPHIC_FAILURE;
    case KF_ERR_EXISTS:
    case KF_ERR_DEVICE_EXISTS:
        return kmip_major >= 2 ? KMIP_REASON_OBJECT_ALREADY_EXISTS : KMIP_REASON_INVALID_FIELD;
    case KF_ERR_AUTH:
    case KF_ERR_CRYPTO:
    case KF_ERR_BAD_SIGNATURE:
        return KMIP_REASON_CRYPTOGRAPHIC_FAILURE;
    case KF_ERR_EXPORT:
        return kmip_major >= 2 ? KMIP_REASON_NOT_EXTRACTABLE : KMIP_REASON_PERMISSION_DENIED;
    case KF_ERR_KEY_FORMAT:
        return KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED;
    case KF_ERR_LIMIT:
        return KMIP_REASON_RESPONSE_TOO_LARGE;
    case KF_ERR_ATTR_READ_ONLY:
        return kmip_major >= 2 ? KMIP_REASON_READ_ONLY_ATTRIBUTE : KMIP_REASON_PERMISSION_DENIED;
    case KF_ERR_ATTR_NOT_FOUND:
        return kmip_major >= 2 ? KMIP_REASON_ATTRIBUTE_NOT_FOUND : KMIP_REASON_ITEM_NOT_FOUND;
    case KF_ERR_ATTR_SINGLE:
        return kmip_major >= 2 ? KMIP_REASON_ATTRIBUTE_SINGLE_VALUED : KMIP_REASON_INVALID_FIELD;
    case KF_ERR_ATTR_MULTI:
        return kmip_major >= 2 ? KMIP_REASON_MULTI_VALUED_ATTRIBUTE : KMIP_REASON_INVALID_FIELD;
    case KF_ERR_USAGE_LIMIT:
        return kmip_major >= 2 ? KMIP_REASON_USAGE_LIMIT_EXCEEDED : KMIP_REASON_PERMISSION_DENIED;
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

/*
 * One Request Message's batch: what later items need from earlier ones.
 * ID Placeholder (KMIP 1.4 §6.x, 2.1 §7): the Unique Identifier a creating
 * operation or Locate returned stands in for an omitted one in later items.
 */
struct batch {
    kf_kms *kms;
    const struct kf_principal *who;
    int major, minor;
    kf_arena *a;
    kf_ttlv *out;                     /* Response Message */
    char id_placeholder[KF_UID_MAX];  /* "" until an item sets it */
};

/* Operations whose request takes the object's Unique Identifier (or the placeholder). */
static bool takes_uid(uint32_t op)
{
    static const uint32_t ops[] = {
        KMIP_OP_GET,           KMIP_OP_GET_ATTRIBUTES,   KMIP_OP_GET_ATTRIBUTE_LIST,
        KMIP_OP_ADD_ATTRIBUTE, KMIP_OP_MODIFY_ATTRIBUTE, KMIP_OP_DELETE_ATTRIBUTE,
        KMIP_OP_SET_ATTRIBUTE, KMIP_OP_ADJUST_ATTRIBUTE, KMIP_OP_OBTAIN_LEASE,
        KMIP_OP_GET_USAGE_ALLOCATION, KMIP_OP_ACTIVATE, KMIP_OP_REVOKE,
        KMIP_OP_DESTROY,       KMIP_OP_ARCHIVE,          KMIP_OP_RECOVER,
        KMIP_OP_CHECK,         KMIP_OP_RE_KEY,           KMIP_OP_RE_KEY_KEY_PAIR,
        KMIP_OP_CERTIFY,       KMIP_OP_RE_CERTIFY,       KMIP_OP_ENCRYPT,
        KMIP_OP_DECRYPT,       KMIP_OP_SIGN,             KMIP_OP_SIGNATURE_VERIFY,
        KMIP_OP_MAC,           KMIP_OP_MAC_VERIFY,       KMIP_OP_EXPORT,
    };
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (ops[i] == op)
            return true;
    return false;
}

/* Operations that set the ID Placeholder from their answer. */
static uint32_t placeholder_source(uint32_t op)
{
    switch (op) {
    case KMIP_OP_CREATE:
    case KMIP_OP_REGISTER:
    case KMIP_OP_LOCATE:
    case KMIP_OP_DERIVE_KEY:
    case KMIP_OP_CERTIFY:
    case KMIP_OP_RE_CERTIFY:
    case KMIP_OP_RE_KEY:
    case KMIP_OP_JOIN_SPLIT_KEY:
    case KMIP_OP_IMPORT:
        return KMIP_TAG_UNIQUE_IDENTIFIER;
    case KMIP_OP_CREATE_KEY_PAIR:
    case KMIP_OP_RE_KEY_KEY_PAIR:
        return KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER;
    default:
        return 0;
    }
}

/* The request payload, with the ID Placeholder put in when the item omits the
 * Unique Identifier: a new payload node whose first child is the identifier and
 * whose rest is the request's own children (shared, not copied or changed). */
static const kf_ttlv *payload_for(struct batch *b, uint32_t op, const kf_ttlv *req)
{
    if (!b->id_placeholder[0] || !takes_uid(op) || kf_ttlv_find(req, KMIP_TAG_UNIQUE_IDENTIFIER))
        return req;
    kf_ttlv *p = kf_ttlv_struct(b->a, NULL, KMIP_TAG_REQUEST_PAYLOAD);
    kf_ttlv *uid = p ? kf_ttlv_add_text(b->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, b->id_placeholder)
                     : NULL;
    if (!uid)
        return req; /* out of arena: the handler reports the missing identifier */
    if (req && req->child) {
        uid->next = req->child;
        p->last_child = req->last_child;
        p->nchildren += req->nchildren;
    }
    return p;
}

static void remember_placeholder(struct batch *b, uint32_t op, const kf_ttlv *payload)
{
    uint32_t tag = placeholder_source(op);
    const char *uid;
    size_t len;
    if (tag && kf_ttlv_get_text(kf_ttlv_find(payload, tag), &uid, &len) == KF_OK &&
        len < sizeof(b->id_placeholder) && strlen(uid) == len)
        memcpy(b->id_placeholder, uid, len + 1);
}

/* The response batch item for bi: Operation and Unique Batch Item ID echoed.
 * *op is 0 with *rc < 0 when bi has no Operation. */
static kf_ttlv *item_start(struct batch *b, const kf_ttlv *bi, uint32_t *op, int *rc)
{
    kf_arena *a = b->a;
    kf_ttlv *item = kf_ttlv_struct(a, b->out, KMIP_TAG_BATCH_ITEM);
    if (!item)
        return NULL;
    *op = 0;
    *rc = kf_ttlv_get_enum(kf_ttlv_find(bi, KMIP_TAG_OPERATION), op);
    if (*rc == KF_OK && !kf_ttlv_add_enum(a, item, KMIP_TAG_OPERATION, *op))
        return NULL;
    const kf_ttlv *ubi = kf_ttlv_find(bi, KMIP_TAG_UNIQUE_BATCH_ITEM_ID);
    const uint8_t *id;
    size_t idlen;
    if (kf_ttlv_get_bytes(ubi, &id, &idlen) == KF_OK &&
        !kf_ttlv_add_bytes(a, item, KMIP_TAG_UNIQUE_BATCH_ITEM_ID, id, idlen))
        return NULL;
    return item;
}

/* The call for one item of operation op: its request payload, a response payload. */
static int call_init(struct batch *b, uint32_t op, const kf_ttlv *bi, struct kmip_call *call)
{
    kf_ttlv *payload = kf_ttlv_struct(b->a, NULL, KMIP_TAG_RESPONSE_PAYLOAD);
    KF_ENSURE(payload != NULL, KF_ERR_NOMEM);
    *call = (struct kmip_call){
        .kms = b->kms,
        .who = b->who,
        .actor = b->who->name,
        .major = b->major,
        .minor = b->minor,
        .req = payload_for(b, op, kf_ttlv_find(bi, KMIP_TAG_REQUEST_PAYLOAD)),
        .resp = payload,
        .arena = b->a,
        .id_placeholder = b->id_placeholder,
    };
    return KF_OK;
}

/* The item's result: Success with its payload, or the failure. */
static int item_finish(struct batch *b, kf_ttlv *item, uint32_t op, int rc, struct kmip_call *call,
                       bool *failed)
{
    kf_arena *a = b->a;
    *failed = true;
    if (rc < 0) {
        KF_GUARD(put_failure(a, item, rc, b->major, call->message));
        return kmip_mfg_error_payload(a, item, op, rc); /* KeyfleetErrorCode */
    }
    *failed = false;
    remember_placeholder(b, op, call->resp);
    if (!kf_ttlv_add_enum(a, item, KMIP_TAG_RESULT_STATUS, KMIP_RESULT_STATUS_SUCCESS))
        return KF_ERR_NOMEM;
    return kf_ttlv_append(item, call->resp);
}

/* Run one batch item; always produces a response batch item. *failed tells
 * whether it failed, for the Batch Error Continuation Option. */
static int run_item(struct batch *b, const kf_ttlv *bi, bool *failed)
{
    uint32_t op;
    int rc;
    *failed = true;
    kf_ttlv *item = item_start(b, bi, &op, &rc);
    KF_ENSURE(item != NULL, KF_ERR_NOMEM);
    if (rc < 0)
        return put_failure(b->a, item, KF_ERR_REQUEST, b->major, "the batch item has no Operation");
    kmip_handler fn = find_handler(op);
    if (!fn)
        return put_failure(b->a, item, KF_ERR_OPERATION, b->major, NULL);
    struct kmip_call call;
    KF_GUARD(call_init(b, op, bi, &call));
    rc = fn(&call);
    return item_finish(b, item, op, rc, &call, failed);
}

static uint32_t item_op(const kf_ttlv *bi)
{
    uint32_t op = 0;
    return kf_ttlv_get_enum(kf_ttlv_find(bi, KMIP_TAG_OPERATION), &op) == KF_OK ? op : 0;
}

/*
 * Pair key requests (or ack reports) in a row share one transaction and one
 * fdatasync (kmip_device_run_*, docs/pairing.md "Batched requests"): a
 * gateway asking for many pairs' keys pays one durable commit per message
 * instead of one per item. From bi on, take the items of bi's operation that
 * nothing but the service can refuse, run them together, and answer them in
 * order. *taken: the items answered or passed over (0: bi was not taken, run
 * it on its own); *answered of them got a response item; *failed: one did.
 * A run stops at the first item it cannot take, which then runs on its own:
 * so every refusal made outside the service, and its audit record, happens
 * exactly as if the items ran one by one.
 */
static int run_device_items(struct batch *b, const kf_ttlv *bi, bool stop, size_t *taken,
                            int32_t *answered, bool *failed)
{
    *taken = 0;
    *answered = 0;
    *failed = false;
    uint32_t op = item_op(bi);
    if (!kmip_device_batch_op(op) || item_op(kf_ttlv_find_next(bi, KMIP_TAG_BATCH_ITEM)) != op)
        return KF_OK; /* a lone item: today's path */
    struct kmip_device_run *r;
    KF_GUARD(kmip_device_run_new(b->kms, b->who->name, op, stop, &r));
    const kf_ttlv *items[KMS_DEVICE_ITEMS_MAX];
    struct kmip_call *calls[KMS_DEVICE_ITEMS_MAX];
    int rc = KF_OK;
    for (const kf_ttlv *it = bi; it && item_op(it) == op && rc == KF_OK;
         it = kf_ttlv_find_next(it, KMIP_TAG_BATCH_ITEM)) {
        size_t n = kmip_device_run_items(r);
        if (n == KMS_DEVICE_ITEMS_MAX)
            break;
        struct kmip_call *call = kf_arena_alloc(b->a, sizeof(*call));
        if (!call || (rc = call_init(b, op, it, call)) < 0) {
            rc = KF_ERR_NOMEM;
            break;
        }
        if (kmip_device_run_add(r, call) < 0)
            break; /* this one runs on its own, after the run */
        items[n] = it;
        calls[n] = call;
    }
    size_t n = kmip_device_run_items(r);
    if (rc == KF_OK && n >= 2)
        rc = kmip_device_run_exec(r);
    for (size_t i = 0; rc == KF_OK && n >= 2 && i < n; i++) {
        bool ran, item_failed;
        int arc = kmip_device_run_answer(r, i, &ran);
        if (!ran)
            break; /* stopped before it: no response item (nor for the rest) */
        uint32_t iop;
        int orc;
        kf_ttlv *item = item_start(b, items[i], &iop, &orc);
        if (!item) {
            rc = KF_ERR_NOMEM;
            break;
        }
        rc = item_finish(b, item, op, arc, calls[i], &item_failed);
        (*answered)++;
        *failed = *failed || item_failed;
    }
    *taken = n >= 2 ? n : 0;
    kmip_device_run_free(r);
    return rc;
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

/* Batch Count of the response: the items answered (fewer than asked after a Stop). */
static void set_batch_count(kf_ttlv *out, int32_t count)
{
    kf_ttlv *h = out->child; /* the Response Header, made first */
    for (kf_ttlv *n = h ? h->child : NULL; n; n = n->next)
        if (n->tag == KMIP_TAG_BATCH_COUNT)
            n->v.i32 = count;
}

/* Every answered item replaced by Response Too Large (the operations did run). */
static int too_large(struct batch *b, kf_buf *resp)
{
    kf_ttlv *msg = kf_ttlv_struct(b->a, NULL, KMIP_TAG_RESPONSE_MESSAGE);
    KF_ENSURE(msg != NULL, KF_ERR_NOMEM);
    int32_t n = (int32_t)kf_ttlv_count(b->out, KMIP_TAG_BATCH_ITEM);
    KF_GUARD(put_header(b->a, msg, b->major, b->minor, n));
    for (const kf_ttlv *it = kf_ttlv_find(b->out, KMIP_TAG_BATCH_ITEM); it;
         it = kf_ttlv_find_next(it, KMIP_TAG_BATCH_ITEM)) {
        kf_ttlv *item = kf_ttlv_struct(b->a, msg, KMIP_TAG_BATCH_ITEM);
        KF_ENSURE(item != NULL, KF_ERR_NOMEM);
        const kf_ttlv *op = kf_ttlv_find(it, KMIP_TAG_OPERATION);
        const kf_ttlv *ubi = kf_ttlv_find(it, KMIP_TAG_UNIQUE_BATCH_ITEM_ID);
        if (op)
            KF_ENSURE(kf_ttlv_add_enum(b->a, item, KMIP_TAG_OPERATION, op->v.u32), KF_ERR_NOMEM);
        if (ubi)
            KF_ENSURE(kf_ttlv_add_bytes(b->a, item, KMIP_TAG_UNIQUE_BATCH_ITEM_ID,
                                        ubi->v.bytes.p, ubi->v.bytes.len),
                      KF_ERR_NOMEM);
        KF_GUARD(put_failure(b->a, item, KF_ERR_LIMIT, b->major,
                             "the response is larger than the request's Maximum Response Size"));
    }
    return kf_ttlv_encode(msg, resp);
}

/* Maximum Response Size: encode aside (secure memory: a Get answer holds key
 * material), then send it or Response Too Large. */
static int encode_capped(struct batch *b, kf_buf *resp, size_t max)
{
    kf_buf whole;
    KF_GUARD(kf_buf_alloc(&whole, 0, KF_TTLV_DEFAULT_MAX_TOTAL, KF_BUF_SECRET));
    int rc = kf_ttlv_encode(b->out, &whole);
    if (rc == KF_OK && whole.len <= max)
        rc = kf_buf_put_bytes(resp, whole.data, whole.len);
    else if (rc == KF_OK)
        rc = too_large(b, resp);
    kf_buf_free(&whole);
    return rc;
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
    uint32_t on_error = KMIP_BATCH_ERR_STOP;
    const kf_ttlv *opt = kf_ttlv_find(hdr, KMIP_TAG_BATCH_ERROR_CONTINUATION_OPTION);
    if (opt && (kf_ttlv_get_enum(opt, &on_error) < 0 || on_error < KMIP_BATCH_ERR_CONTINUE ||
                on_error > KMIP_BATCH_ERR_UNDO))
        return message_failure(a, resp, major, minor, KF_ERR_REQUEST,
                               "Batch Error Continuation Option must be Continue, Stop or Undo");
    int32_t max_size = 0;
    const kf_ttlv *mrs = kf_ttlv_find(hdr, KMIP_TAG_MAXIMUM_RESPONSE_SIZE);
    if (mrs && (kf_ttlv_get_int(mrs, &max_size) < 0 || max_size <= 0))
        return message_failure(a, resp, major, minor, KF_ERR_REQUEST,
                               "Maximum Response Size must be a positive Integer");
    /* Asynchronous Indicator only says the client could take an asynchronous
     * answer; keyfleet always answers synchronously, which the spec allows.
     * Batch Order Option: items always run in order, which satisfies both values. */
    struct batch b = {.kms = kms, .who = who, .major = major, .minor = minor, .a = a};
    b.out = kf_ttlv_struct(a, NULL, KMIP_TAG_RESPONSE_MESSAGE);
    KF_ENSURE(b.out != NULL, KF_ERR_NOMEM);
    KF_GUARD(put_header(a, b.out, major, minor, (int32_t)items));
    int32_t ran = 0;
    bool stop = on_error != KMIP_BATCH_ERR_CONTINUE;
    for (const kf_ttlv *bi = kf_ttlv_find(msg, KMIP_TAG_BATCH_ITEM); bi;) {
        bool failed;
        size_t taken;
        int32_t answered;
        KF_GUARD(run_device_items(&b, bi, stop, &taken, &answered, &failed));
        if (taken == 0) {
            KF_GUARD(run_item(&b, bi, &failed));
            taken = 1;
            answered = 1;
        }
        ran += answered;
        /* Stop, and Undo (keyfleet cannot roll back finished items, so it stops
         * there too and reports those items as done, never as Undone). */
        if (failed && stop)
            break;
        while (taken-- > 0 && bi)
            bi = kf_ttlv_find_next(bi, KMIP_TAG_BATCH_ITEM);
    }
    set_batch_count(b.out, ran);
    if (max_size > 0)
        return encode_capped(&b, resp, (size_t)max_size);
    return kf_ttlv_encode(b.out, resp);
}

static bool op_read_only(uint32_t op)
{
    switch (op) {
    case KMIP_OP_GET:
    case KMIP_OP_GET_ATTRIBUTES:
    case KMIP_OP_GET_ATTRIBUTE_LIST:
    case KMIP_OP_LOCATE:
    case KMIP_OP_CHECK:
    case KMIP_OP_QUERY:
    case KMIP_OP_DISCOVER_VERSIONS:
    case KMIP_OP_ENCRYPT:
    case KMIP_OP_DECRYPT:
    case KMIP_OP_SIGN:
    case KMIP_OP_SIGNATURE_VERIFY:
    case KMIP_OP_MAC:
    case KMIP_OP_MAC_VERIFY:
    case KMIP_OP_HASH:
    case KMIP_OP_RNG_RETRIEVE:
        return true;
    default:
        return false;
    }
}

#define TTLV_TYPE_STRUCTURE 0x01
#define TTLV_TYPE_ENUMERATION 0x05

/* Every item of b (one structure's content); *ops counts the Operations seen. */
static bool scan_read_only(kf_buf *b, int depth, unsigned *ops)
{
    while (kf_buf_remaining(b) > 0) {
        uint32_t tag, len;
        uint8_t type;
        if (kf_buf_get_u24(b, &tag) < 0 || kf_buf_get_u8(b, &type) < 0 || kf_buf_get_u32(b, &len) < 0)
            return false;
        if (type == TTLV_TYPE_STRUCTURE) {
            kf_buf child;
            if (depth >= 8 || kf_buf_sub(b, len, &child) < 0 || !scan_read_only(&child, depth + 1, ops))
                return false;
            continue;
        }
        if (tag == KMIP_TAG_OPERATION) {
            uint32_t op;
            if (type != TTLV_TYPE_ENUMERATION || len != 4 || kf_buf_get_u32(b, &op) < 0 ||
                kf_buf_skip(b, 4) < 0 || !op_read_only(op))
                return false;
            (*ops)++;
            continue;
        }
        if (len > kf_buf_remaining(b) || kf_buf_skip(b, ((size_t)len + 7) & ~(size_t)7) < 0)
            return false;
    }
    return true;
}

bool kf_kms_kmip_read_only(const uint8_t *req, size_t len)
{
    kf_buf b;
    unsigned ops = 0;
    if (!req)
        return false;
    kf_buf_reader(&b, req, len);
    return scan_read_only(&b, 0, &ops) && ops > 0;
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
