/*
 * keyfleet's device extension operations (docs/pairing.md "Server
 * operations"): KeyfleetDeviceRegister, -Export, -Get, KeyfleetPairKeyRequest
 * and KeyfleetPairAckReport. Each decodes its payload strictly (the items in
 * the documented order, nothing else), authorises the caller for the
 * device's domain, and calls the service (device.c, device_pair.c).
 *
 * Roles: register = manage, export = export, get = use, pair request and ack
 * report = device. A device the server does not know passes authorisation to
 * the service, which refuses it (audited) as KF_ERR_DEVICE_UNKNOWN.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/device.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/secmem.h"
#include "kmip_internal.h"

/* ---- Strict payload reading: one cursor over the payload's items ---- */

struct items {
    struct kmip_call *c;
    const kf_ttlv *next;
};

static void items_start(struct items *it, struct kmip_call *c)
{
    it->c = c;
    it->next = c->req ? c->req->child : NULL;
}

static bool items_at(const struct items *it, uint32_t tag)
{
    return it->next && it->next->tag == tag;
}

static int malformed(struct kmip_call *c, const char *what)
{
    snprintf(c->message, sizeof(c->message), "%s", what);
    return KF_ERR_REQUEST;
}

/* The next item must be tag of type; advances past it. */
static int take(struct items *it, uint32_t tag, uint8_t type, const kf_ttlv **out, const char *what)
{
    if (!items_at(it, tag) || it->next->type != type)
        return malformed(it->c, what);
    *out = it->next;
    it->next = it->next->next;
    return KF_OK;
}

static int take_id(struct items *it, uint32_t tag, const char **id, const char *what)
{
    const kf_ttlv *n;
    KF_GUARD(take(it, tag, KF_TTLV_TEXT, &n, what));
    const char *s;
    size_t len;
    KF_GUARD(kf_ttlv_get_text(n, &s, &len));
    /* Arena text is NUL-terminated; an embedded NUL would cut the C string short. */
    if (strlen(s) != len || len > KFD_ID_MAX)
        return malformed(it->c, "a device ID or domain must be 1-64 characters, no NUL");
    *id = s;
    return KF_OK;
}

static int items_end(struct items *it)
{
    return it->next ? malformed(it->c, "the payload has items after the last one it may have")
                    : KF_OK;
}

/* The domain to authorise against; "" when the device is unknown (the service refuses). */
static int device_domain(struct kmip_call *c, const char *id, char domain[KF_DOMAIN_NAME_MAX + 1])
{
    domain[0] = '\0';
    int rc = kf_kms_device_domain(c->kms, id, domain);
    return rc == KF_ERR_DEVICE_UNKNOWN || rc == KF_ERR_DEVICE_ID ? KF_OK : rc;
}

static int authorize_device(struct kmip_call *c, unsigned role, const char *id, const char *op)
{
    char domain[KF_DOMAIN_NAME_MAX + 1];
    KF_GUARD(device_domain(c, id, domain));
    return domain[0] ? kmip_authorize(c, role, domain, op) : KF_OK;
}

static int add_text(struct kmip_call *c, kf_ttlv *parent, uint32_t tag, const char *s)
{
    return kf_ttlv_add_text(c->arena, parent, tag, s) ? KF_OK : KF_ERR_NOMEM;
}

static int add_long(struct kmip_call *c, kf_ttlv *parent, uint32_t tag, uint64_t v)
{
    KF_ENSURE(v <= (uint64_t)INT64_MAX, KF_ERR_INTERNAL);
    return kf_ttlv_add_long(c->arena, parent, tag, (int64_t)v) ? KF_OK : KF_ERR_NOMEM;
}

/* Append the TTLV items in bytes[0..len) (one or more, back to back) to c->resp,
 * byte for byte: decoding then encoding reproduces them exactly. */
static int append_raw_items(struct kmip_call *c, const uint8_t *bytes, size_t len)
{
    while (len > 0) {
        size_t total;
        kf_ttlv *node;
        KF_ENSURE(len >= KF_TTLV_HEADER_LEN, KF_ERR_INTERNAL);
        KF_GUARD(kf_ttlv_message_length(bytes, NULL, &total));
        KF_ENSURE(total <= len, KF_ERR_INTERNAL);
        KF_GUARD(kf_ttlv_decode(bytes, total, NULL, c->arena, &node));
        KF_GUARD(kf_ttlv_append(c->resp, node));
        bytes += total;
        len -= total;
    }
    return KF_OK;
}

/* ---- KeyfleetDeviceRegister {DeviceId, KeyfleetDomain} ---- */

int kmip_kf_device_register(struct kmip_call *c)
{
    struct items it;
    const char *id, *domain;
    items_start(&it, c);
    KF_GUARD(take_id(&it, KMIP_TAG_KEYFLEET_DEVICE_ID, &id, "device register needs a DeviceId"));
    KF_GUARD(take_id(&it, KMIP_TAG_KEYFLEET_DOMAIN, &domain,
                     "device register needs a KeyfleetDomain after the DeviceId"));
    KF_GUARD(items_end(&it));
    KF_GUARD(kmip_authorize(c, KF_ROLE_MANAGE, domain, "DeviceRegister"));
    struct kf_device_info info;
    KF_GUARD(kf_kms_device_register(c->kms, c->actor, id, domain, &info));
    KF_GUARD(add_text(c, c->resp, KMIP_TAG_KEYFLEET_DEVICE_ID, info.id));
    KF_GUARD(add_text(c, c->resp, KMIP_TAG_KEYFLEET_DOMAIN, info.domain));
    return add_text(c, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER, info.mkek_uid);
}

/* ---- KeyfleetDeviceExport {DeviceId} -> KeyfleetDevicePackage ---- */

int kmip_kf_device_export(struct kmip_call *c)
{
    struct items it;
    const char *id;
    items_start(&it, c);
    KF_GUARD(take_id(&it, KMIP_TAG_KEYFLEET_DEVICE_ID, &id, "device export needs a DeviceId"));
    KF_GUARD(items_end(&it));
    KF_GUARD(authorize_device(c, KF_ROLE_EXPORT, id, "DeviceExport"));
    kf_buf package;
    KF_GUARD(kf_buf_alloc(&package, 256, KFD_MSG_MAX, KF_BUF_SECRET));
    int rc = kf_kms_device_export(c->kms, c->actor, id, &package);
    if (rc == KF_OK)
        rc = append_raw_items(c, package.data, package.len); /* the arena is wiped when freed */
    kf_buf_free(&package);
    return rc;
}

/* ---- KeyfleetDeviceGet {DeviceId} -> KeyfleetDeviceInfo ---- */

int kmip_kf_device_get(struct kmip_call *c)
{
    struct items it;
    const char *id;
    items_start(&it, c);
    KF_GUARD(take_id(&it, KMIP_TAG_KEYFLEET_DEVICE_ID, &id, "device get needs a DeviceId"));
    KF_GUARD(items_end(&it));
    KF_GUARD(authorize_device(c, KF_ROLE_USE, id, "DeviceGet"));
    struct kf_device_info info;
    KF_GUARD(kf_kms_device_get(c->kms, c->actor, id, &info));
    kf_ttlv *di = kf_ttlv_struct(c->arena, c->resp, KMIP_TAG_KEYFLEET_DEVICE_INFO);
    KF_ENSURE(di, KF_ERR_NOMEM);
    KF_GUARD(add_text(c, di, KMIP_TAG_KEYFLEET_DEVICE_ID, info.id));
    KF_GUARD(add_text(c, di, KMIP_TAG_KEYFLEET_DOMAIN, info.domain));
    KF_GUARD(add_long(c, di, KMIP_TAG_KEYFLEET_COUNTER, info.counter));
    KF_ENSURE(kf_ttlv_add_bool(c->arena, di, KMIP_TAG_KEYFLEET_EXPORTED, info.exported),
              KF_ERR_NOMEM);
    KF_GUARD(add_long(c, di, KMIP_TAG_KEYFLEET_KEK_ID, info.last_kek_id));
    KF_ENSURE(
        kf_ttlv_add_int(c->arena, di, KMIP_TAG_KEYFLEET_ACKS_PENDING,
                        info.acks_pending > INT32_MAX ? INT32_MAX : (int32_t)info.acks_pending),
        KF_ERR_NOMEM);
    return add_text(c, di, KMIP_TAG_UNIQUE_IDENTIFIER, info.mkek_uid);
}

/* ---- KeyfleetPairKeyRequest {DeviceIdA, DeviceIdB, [KekCount], [Lifetime], [MaxUses]} ---- */

/* Optional Integer item: absent leaves *v; negative values are out of policy. */
static int take_opt_int(struct items *it, uint32_t tag, uint32_t *v, const char *what)
{
    const kf_ttlv *n;
    if (!items_at(it, tag))
        return KF_OK;
    KF_GUARD(take(it, tag, KF_TTLV_INTEGER, &n, what));
    if (n->v.i32 < 0) {
        snprintf(it->c->message, sizeof(it->c->message), "%s", what);
        return KF_ERR_PAIR_POLICY;
    }
    *v = (uint32_t)n->v.i32;
    return KF_OK;
}

struct pair_args {
    const char *id_a, *id_b;
    uint32_t count, lifetime, max_uses;
};

static int parse_pair_request(struct kmip_call *c, struct pair_args *p)
{
    struct items it;
    const kf_ttlv *n;
    *p = (struct pair_args){.count = 1};
    items_start(&it, c);
    KF_GUARD(take_id(&it, KMIP_TAG_KEYFLEET_DEVICE_ID_A, &p->id_a,
                     "pair key request needs DeviceIdA first"));
    KF_GUARD(take_id(&it, KMIP_TAG_KEYFLEET_DEVICE_ID_B, &p->id_b,
                     "pair key request needs DeviceIdB after DeviceIdA"));
    KF_GUARD(take_opt_int(&it, KMIP_TAG_KEYFLEET_KEK_COUNT, &p->count, "KekCount must be 1-8"));
    if (items_at(&it, KMIP_TAG_KEYFLEET_LIFETIME)) {
        KF_GUARD(take(&it, KMIP_TAG_KEYFLEET_LIFETIME, KF_TTLV_INTERVAL, &n,
                      "Lifetime must be an Interval"));
        p->lifetime = n->v.u32;
    }
    KF_GUARD(
        take_opt_int(&it, KMIP_TAG_KEYFLEET_MAX_USES, &p->max_uses, "MaxUses must be 1-1000000"));
    return items_end(&it);
}

int kmip_kf_pair_key_request(struct kmip_call *c)
{
    struct pair_args p;
    KF_GUARD(parse_pair_request(c, &p));
    /* The requester's domain; the service refuses a partner in another one. */
    KF_GUARD(authorize_device(c, KF_ROLE_DEVICE, p.id_a, "PairKeyRequest"));
    kf_buf m;
    KF_GUARD(kf_buf_alloc(&m, 1024, 2 * KFD_MSG_MAX, 0));
    int rc =
        kf_kms_pair_issue(c->kms, c->actor, p.id_a, p.id_b, p.count, p.lifetime, p.max_uses, &m);
    if (rc == KF_OK)
        rc = append_raw_items(c, m.data, m.len); /* PairPart A, then PairPart B */
    kf_buf_free(&m);
    return rc;
}

/* ---- KeyfleetPairAckReport {PairAck, [PairAck]} ---- */

static int parse_ack_report(struct kmip_call *c, const kf_ttlv *acks[2], size_t *n)
{
    struct items it;
    items_start(&it, c);
    KF_GUARD(take(&it, KMIP_TAG_KEYFLEET_PAIR_ACK, KF_TTLV_STRUCTURE, &acks[0],
                  "ack report needs one or two PairAck"));
    *n = 1;
    if (items_at(&it, KMIP_TAG_KEYFLEET_PAIR_ACK))
        KF_GUARD(take(&it, KMIP_TAG_KEYFLEET_PAIR_ACK, KF_TTLV_STRUCTURE, &acks[(*n)++],
                      "ack report needs one or two PairAck"));
    return items_end(&it);
}

/* The ack's exact bytes: the MAC covers the AckBody's exact bytes, and
 * re-encoding the decoded item reproduces them (the codec is byte-exact both
 * ways). Too long to be an ack: empty (the service refuses it, audited). */
static int ack_bytes(const kf_ttlv *ack_node, kf_buf *bytes)
{
    int rc = kf_ttlv_encode(ack_node, bytes);
    if (rc == KF_ERR_LIMIT || rc == KF_ERR_NOSPACE) {
        kf_buf_reset(bytes);
        rc = KF_OK;
    }
    return rc;
}

static int put_ack_result(struct kmip_call *c, const struct kf_pair_ack_result *res)
{
    KF_GUARD(add_text(c, c->resp, KMIP_TAG_KEYFLEET_DEVICE_ID, res->device));
    KF_GUARD(add_long(c, c->resp, KMIP_TAG_KEYFLEET_KEK_ID, res->kek_id));
    KF_ENSURE(kf_ttlv_add_enum(c->arena, c->resp, KMIP_TAG_KEYFLEET_ACK_STATUS, res->status),
              KF_ERR_NOMEM);
    return add_long(c, c->resp, KMIP_TAG_KEYFLEET_COUNTER, res->counter);
}

static int report_one(struct kmip_call *c, const kf_ttlv *ack_node)
{
    kf_buf bytes;
    struct kfd_ack peek;
    struct kf_pair_ack_result res;
    KF_GUARD(kf_buf_alloc(&bytes, 256, KFD_MSG_MAX, 0));
    int rc = ack_bytes(ack_node, &bytes);
    /* Authorise for the named device's domain; a malformed ack goes to the
     * service, which refuses and audits it. */
    if (rc == KF_OK && bytes.len && kfd_ack_decode(bytes.data, bytes.len, &peek) == KF_OK)
        rc = authorize_device(c, KF_ROLE_DEVICE, peek.device, "PairAck");
    if (rc == KF_OK)
        rc = kf_kms_pair_ack(c->kms, c->actor, bytes.data, bytes.len, &res);
    kf_buf_free(&bytes);
    KF_GUARD(rc);
    return put_ack_result(c, &res);
}

int kmip_kf_pair_ack_report(struct kmip_call *c)
{
    const kf_ttlv *acks[2];
    size_t n;
    KF_GUARD(parse_ack_report(c, acks, &n));
    /* One at a time: each ack is its own durable record (an earlier good ack
     * stays recorded when a later one is refused). */
    for (size_t i = 0; i < n; i++)
        KF_GUARD(report_one(c, acks[i]));
    return KF_OK;
}

/* ---- Runs of device items in one transaction (kmip_dispatch.c) ---- */

struct kmip_device_run {
    kf_kms *kms;
    const char *actor;
    uint32_t op;
    bool stop;
    size_t n;                                     /* items */
    struct kmip_call *call[KMS_DEVICE_ITEMS_MAX]; /* the dispatcher's, one per item */
    /* KeyfleetPairKeyRequest: one request per item, M into one buffer each. */
    struct kms_pair_item pair[KMS_DEVICE_ITEMS_MAX];
    kf_buf m[KMS_DEVICE_ITEMS_MAX];
    /* KeyfleetPairAckReport: one or two acks per item, their bytes in one buffer. */
    struct kms_ack_item ack[2 * KMS_DEVICE_ITEMS_MAX];
    size_t nacks, first_ack[KMS_DEVICE_ITEMS_MAX], acks_of[KMS_DEVICE_ITEMS_MAX];
    size_t ack_at[2 * KMS_DEVICE_ITEMS_MAX]; /* offset of each ack's bytes in ack_mem */
    kf_buf ack_mem;
};

bool kmip_device_batch_op(uint32_t op)
{
    return op == KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST || op == KMIP_OP_KEYFLEET_PAIR_ACK_REPORT;
}

int kmip_device_run_new(kf_kms *kms, const char *actor, uint32_t op, bool stop,
                        struct kmip_device_run **out)
{
    KF_ENSURE(kmip_device_batch_op(op), KF_ERR_ARG);
    struct kmip_device_run *r = calloc(1, sizeof(*r));
    KF_ENSURE(r, KF_ERR_NOMEM);
    r->kms = kms;
    r->actor = actor;
    r->op = op;
    r->stop = stop;
    *out = r;
    return KF_OK;
}

void kmip_device_run_free(struct kmip_device_run *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        kf_buf_free(&r->m[i]);
    kf_buf_free(&r->ack_mem);
    free(r);
}

size_t kmip_device_run_items(const struct kmip_device_run *r)
{
    return r->n;
}

/* Authorised for the device's domain, decided without a refusal being
 * audited: false for an unknown device as well (the lone path answers it). */
static bool device_allowed(struct kmip_call *c, const char *id)
{
    char domain[KF_DOMAIN_NAME_MAX + 1];
    return kf_kms_device_domain(c->kms, id, domain) == KF_OK && domain[0] &&
           kf_principal_allows(c->who, KF_ROLE_DEVICE, domain);
}

static int run_add_pair(struct kmip_device_run *r, struct kmip_call *c)
{
    struct pair_args p;
    KF_GUARD(parse_pair_request(c, &p));
    KF_ENSURE(device_allowed(c, p.id_a), KF_ERR_PERM);
    KF_GUARD(kms_pair_precheck(p.id_a, p.id_b, p.count, p.lifetime, p.max_uses));
    kf_buf *m = &r->m[r->n];
    KF_GUARD(kf_buf_alloc(m, 1024, 2 * KFD_MSG_MAX, 0));
    r->pair[r->n] = (struct kms_pair_item){
        .id_a = p.id_a,
        .id_b = p.id_b,
        .count = p.count,
        .lifetime = p.lifetime,
        .max_uses = p.max_uses,
        .chained = r->stop,
        .m = m,
    };
    return KF_OK;
}

static int run_add_report(struct kmip_device_run *r, struct kmip_call *c)
{
    const kf_ttlv *acks[2];
    size_t n;
    KF_GUARD(parse_ack_report(c, acks, &n));
    if (!r->ack_mem.data)
        KF_GUARD(kf_buf_alloc(&r->ack_mem, 4096, 2 * KMS_DEVICE_ITEMS_MAX * KFD_MSG_MAX, 0));
    size_t at[2], len[2];
    for (size_t i = 0; i < n; i++) {
        struct kfd_ack peek;
        kf_buf one;
        KF_GUARD(kf_buf_alloc(&one, 256, KFD_MSG_MAX, 0));
        int rc = ack_bytes(acks[i], &one);
        if (rc == KF_OK && (!one.len || kfd_ack_decode(one.data, one.len, &peek) < 0 ||
                            !device_allowed(c, peek.device)))
            rc = KF_ERR_PERM; /* malformed, unknown or not authorised: the lone path */
        at[i] = r->ack_mem.len;
        len[i] = one.len;
        if (rc == KF_OK)
            rc = kf_buf_put_bytes(&r->ack_mem, one.data, one.len);
        kf_buf_free(&one);
        KF_GUARD(rc);
    }
    r->first_ack[r->n] = r->nacks;
    r->acks_of[r->n] = n;
    for (size_t i = 0; i < n; i++) {
        r->ack_at[r->nacks] = at[i]; /* ack_mem may still move: pointers at exec */
        r->ack[r->nacks++] = (struct kms_ack_item){
            .len = len[i],
            .chained = i > 0 || r->stop, /* the lone report stops at its first refusal */
        };
    }
    return KF_OK;
}

int kmip_device_run_add(struct kmip_device_run *r, struct kmip_call *c)
{
    KF_ENSURE(r->n < KMS_DEVICE_ITEMS_MAX, KF_ERR_LIMIT);
    size_t ack_mark = r->ack_mem.len;
    int rc = r->op == KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST ? run_add_pair(r, c) : run_add_report(r, c);
    if (rc < 0) {
        r->ack_mem.len = ack_mark;
        return rc;
    }
    r->call[r->n++] = c;
    return KF_OK;
}

int kmip_device_run_exec(struct kmip_device_run *r)
{
    KF_ENSURE(r->n >= 1, KF_ERR_ARG);
    if (r->op == KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST)
        return kms_pair_issue_items(r->kms, r->actor, r->pair, r->n);
    for (size_t i = 0; i < r->nacks; i++)
        r->ack[i].ack = r->ack_mem.data + r->ack_at[i];
    return kms_pair_ack_items(r->kms, r->actor, r->ack, r->nacks);
}

int kmip_device_run_answer(struct kmip_device_run *r, size_t i, bool *ran)
{
    KF_ENSURE(i < r->n, KF_ERR_ARG);
    struct kmip_call *c = r->call[i];
    if (r->op == KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST) {
        *ran = r->pair[i].ran;
        if (!*ran)
            return KF_OK;
        KF_GUARD(r->pair[i].rc);
        return append_raw_items(c, r->m[i].data, r->m[i].len); /* PairPart A, then B */
    }
    const struct kms_ack_item *a = &r->ack[r->first_ack[i]];
    *ran = a[0].ran;
    if (!*ran)
        return KF_OK;
    /* As the lone report: the first refusal fails the item; a good first ack
     * stays recorded when the second is refused. */
    for (size_t k = 0; k < r->acks_of[i]; k++)
        KF_GUARD(a[k].rc);
    for (size_t k = 0; k < r->acks_of[i]; k++)
        KF_GUARD(put_ack_result(c, &a[k].res));
    return KF_OK;
}
