/*
 * keyfleet's manufacturing extension operations (docs/manufacturing.md
 * "KMIP operations"): KeyfleetMfgSetup .. KeyfleetMfgStatus. The three
 * levels of error handling of the seed's Fig. 21, in this order:
 *
 *  1. framing: the payload's items exactly as documented (types, order,
 *     nothing else), a record's envelope, MR1's structure
 *     (KF_ERR_MFG_FRAMING); signatures and MACs are checked by the service
 *     and count as level 1 too;
 *  2. the command table below: which roles may send an operation and which
 *     record types it takes (KF_ERR_MFG_COMMAND);
 *  3. parameters against the configuration: the principal's domains here
 *     (KF_ERR_PERM), the rest in the service (domain set up, kind, country,
 *     role enrolled, key ID, status, times).
 *
 * Every refusal answers the sentence as Result Message plus KeyfleetErrorCode
 * (kmip_mfg_error_payload), is logged once with its level, and is audited:
 * levels 1 and 2 here, level 3 by the service (which audits every refusal of
 * its own).
 */
#include <stdio.h>
#include <string.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms_mfg.h"
#include "keyfleet/log.h"
#include "keyfleet/meter.h"
#include "kmip_internal.h"
#include "mfg_internal.h"

#define RT(t) (1u << (t))
#define MFG_RECORDS_MAX (256u * 1024u) /* certificates of a domain, or MR4s: far less */

/* ---- Level 2: the command table ---- */

static const struct mfg_command {
    uint32_t op;
    const char *name;
    unsigned roles;        /* any one of these (enum kf_role bits) */
    uint32_t record_types; /* RT() of each record type the request may carry */
} commands[] = {
    {KMIP_OP_KEYFLEET_MFG_SETUP, "KeyfleetMfgSetup", KF_ROLE_ADMIN, 0},
    {KMIP_OP_KEYFLEET_MFG_ROLE_ENROLL, "KeyfleetMfgRoleEnroll", KF_ROLE_ADMIN, 0},
    {KMIP_OP_KEYFLEET_MFG_ROLE_CERTS, "KeyfleetMfgRoleCerts",
     KF_ROLE_ADMIN | KF_ROLE_STEEL | KF_ROLE_VERIFIER, 0},
    {KMIP_OP_KEYFLEET_MFG_REQUEST_KEY, "KeyfleetMfgRequestKey", KF_ROLE_STEEL | KF_ROLE_ADMIN, 0},
    {KMIP_OP_KEYFLEET_MFG_REPORT_INSTALL, "KeyfleetMfgReportInstall", KF_ROLE_STEEL | KF_ROLE_ADMIN,
     RT(KF_MFG_REC_INSTALLED) | RT(KF_MFG_REC_INSTALL_FAILED)},
    {KMIP_OP_KEYFLEET_MFG_REGISTER, "KeyfleetMfgRegister", KF_ROLE_REGISTRAR | KF_ROLE_ADMIN, 0},
    {KMIP_OP_KEYFLEET_MFG_RETIRE, "KeyfleetMfgRetire", KF_ROLE_ADMIN, 0},
    {KMIP_OP_KEYFLEET_MFG_STATUS, "KeyfleetMfgStatus",
     KF_ROLE_ADMIN | KF_ROLE_REGISTRAR | KF_ROLE_STEEL, 0},
    {KMIP_OP_KEYFLEET_TOKEN_VERIFY, "KeyfleetTokenVerify", KF_ROLE_VERIFIER | KF_ROLE_USE, 0},
    {KMIP_OP_KEYFLEET_TOKEN_KEY_EXPORT, "KeyfleetTokenKeyExport", KF_ROLE_VERIFIER, 0},
};

static const struct mfg_command *command_of(uint32_t op)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (commands[i].op == op)
            return &commands[i];
    return NULL;
}

static bool is_mfg_op(uint32_t op)
{
    return op >= KMIP_OP_KEYFLEET_MFG_SETUP && op <= KMIP_OP_KEYFLEET_MFG_SETUP + 0xF;
}

int kmip_mfg_level(int rc)
{
    switch (rc) {
    case KF_ERR_MFG_FRAMING:
    case KF_ERR_REQUEST:
    case KF_ERR_BAD_SIGNATURE:
    case KF_ERR_AUTH:
    case KF_ERR_MFG_REG_MAC:
    case KF_ERR_MFG_ARCHIVE:
        return 1;
    case KF_ERR_MFG_COMMAND:
        return 2;
    default:
        return 3;
    }
}

static const char *op_name(uint32_t op)
{
    const struct mfg_command *cmd = command_of(op);
    return cmd ? cmd->name : "manufacturing operation";
}

int kmip_mfg_log(struct kmip_call *c, uint32_t op, int rc)
{
    if (rc < 0) {
        int level = kmip_mfg_level(rc);
        kf_warn("manufacturing: %s from %.120s refused (error level %d): %s", op_name(op), c->actor,
                level, kf_errname(rc));
        if (!c->message[0])
            snprintf(c->message, sizeof(c->message), "error level %d", level);
    }
    return rc;
}

/* A refusal of levels 1 and 2 (and the principal's domains): the service
 * never saw the request, so it is audited here. */
static int refuse(struct kmip_call *c, uint32_t op, int rc, const char *domain, const char *why)
{
    int level = kmip_mfg_level(rc);
    snprintf(c->message, sizeof(c->message), "error level %d: %.200s", level, why);
    char detail[64];
    snprintf(detail, sizeof(detail), "error level %d", level);
    pthread_mutex_lock(&c->kms->lock);
    kms_audit_refusal(c->kms, c->actor, op_name(op),
                      domain && kf_domain_name_valid(domain) ? domain : "", "", rc, detail);
    pthread_mutex_unlock(&c->kms->lock);
    kf_warn("manufacturing: %s from %.120s refused (error level %d): %s", op_name(op), c->actor,
            level, kf_errname(rc));
    return rc;
}

int kmip_mfg_command(struct kmip_call *c, uint32_t op, uint32_t record_type, const char *domain)
{
    const struct mfg_command *cmd = command_of(op);
    char why[200];
    if (!cmd)
        return refuse(c, op, KF_ERR_MFG_COMMAND, domain, "not a manufacturing command");
    if (!(c->who->roles & cmd->roles)) {
        snprintf(why, sizeof(why), "%.100s holds no role that may send %s", c->who->name,
                 cmd->name);
        return refuse(c, op, KF_ERR_MFG_COMMAND, domain, why);
    }
    if (record_type && (record_type > 31 || !(cmd->record_types & RT(record_type)))) {
        snprintf(why, sizeof(why), "%s does not take a record of type %u", cmd->name, record_type);
        return refuse(c, op, KF_ERR_MFG_COMMAND, domain, why);
    }
    if (!domain)
        return KF_OK;
    /* Level 3, the principal's part: one of the roles in this very domain. */
    for (unsigned bit = 1; bit && bit <= cmd->roles; bit <<= 1)
        if ((cmd->roles & bit) && kf_principal_allows(c->who, bit, domain))
            return KF_OK;
    snprintf(why, sizeof(why), "%.100s may not send %s in domain %.64s", c->who->name, cmd->name,
             domain);
    return refuse(c, op, KF_ERR_PERM, domain, why);
}

int kmip_mfg_error_payload(kf_arena *a, kf_ttlv *item, uint32_t op, int err)
{
    if (!is_mfg_op(op))
        return KF_OK;
    kf_ttlv *p = kf_ttlv_struct(a, item, KMIP_TAG_RESPONSE_PAYLOAD);
    return p && kf_ttlv_add_int(a, p, KMIP_TAG_KEYFLEET_ERROR_CODE, err) ? KF_OK : KF_ERR_NOMEM;
}

/* ---- Level 1: strict payload reading, one cursor over the payload's items ---- */

struct items {
    struct kmip_call *c;
    uint32_t op;
    const kf_ttlv *next;
};

static void items_start(struct items *it, struct kmip_call *c, uint32_t op)
{
    it->c = c;
    it->op = op;
    it->next = c->req ? c->req->child : NULL;
}

static bool items_at(const struct items *it, uint32_t tag)
{
    return it->next && it->next->tag == tag;
}

static int malformed(struct items *it, const char *what)
{
    return refuse(it->c, it->op, KF_ERR_MFG_FRAMING, NULL, what);
}

static int take(struct items *it, uint32_t tag, uint8_t type, const kf_ttlv **out, const char *what)
{
    *out = NULL;
    if (!items_at(it, tag) || it->next->type != type)
        return malformed(it, what);
    *out = it->next;
    it->next = it->next->next;
    return KF_OK;
}

static int take_text(struct items *it, uint32_t tag, size_t max, const char **s, const char *what)
{
    const kf_ttlv *n = NULL;
    KF_GUARD(take(it, tag, KF_TTLV_TEXT, &n, what));
    /* Arena text is NUL-terminated; an embedded NUL would cut the C string short. */
    if (n->v.bytes.len == 0 || n->v.bytes.len > max ||
        strlen((const char *)n->v.bytes.p) != n->v.bytes.len)
        return malformed(it, what);
    *s = (const char *)n->v.bytes.p;
    return KF_OK;
}

static int take_key32(struct items *it, uint32_t tag, const uint8_t **p, const char *what)
{
    const kf_ttlv *n = NULL;
    KF_GUARD(take(it, tag, KF_TTLV_BYTES, &n, what));
    if (n->v.bytes.len != 32)
        return malformed(it, what);
    *p = n->v.bytes.p;
    return KF_OK;
}

static int take_key_id(struct items *it, uint64_t *key_id, const char *what)
{
    const kf_ttlv *n = NULL;
    KF_GUARD(take(it, KMIP_TAG_KEYFLEET_KEY_ID, KF_TTLV_LONG, &n, what));
    if (n->v.i64 < 1)
        return malformed(it, what);
    *key_id = (uint64_t)n->v.i64;
    return KF_OK;
}

static int take_domain(struct items *it, const char **domain)
{
    return take_text(it, KMIP_TAG_KEYFLEET_DOMAIN, KF_MFG_DOMAIN_MAX, domain,
                     "the payload starts with KeyfleetDomain (1-64 characters)");
}

static int items_end(struct items *it)
{
    return it->next ? malformed(it, "the payload has items after the last one it may have") : KF_OK;
}

/* The TTLV bytes of one item of the request (byte-exact: the codec
 * reproduces its input). */
static int item_bytes(struct items *it, const kf_ttlv *n, size_t max, kf_buf *out)
{
    KF_GUARD(kf_buf_alloc(out, 256, max, 0));
    int rc = kf_ttlv_encode(n, out);
    if (rc == KF_ERR_LIMIT || rc == KF_ERR_NOSPACE) {
        kf_buf_free(out);
        return malformed(it, "the record is larger than a manufacturing record may be");
    }
    if (rc < 0)
        kf_buf_free(out);
    return rc;
}

/* ---- Answers ---- */

/* Append the TTLV items in bytes[0..len) (records back to back) to c->resp. */
static int append_records(struct kmip_call *c, const kf_buf *records)
{
    const uint8_t *p = records->data;
    size_t len = records->len;
    while (len > 0) {
        size_t total;
        kf_ttlv *node;
        KF_ENSURE(len >= KF_TTLV_HEADER_LEN, KF_ERR_INTERNAL);
        KF_GUARD(kf_ttlv_message_length(p, NULL, &total));
        KF_ENSURE(total <= len, KF_ERR_INTERNAL);
        KF_GUARD(kf_ttlv_decode(p, total, NULL, c->arena, &node));
        KF_GUARD(kf_ttlv_append(c->resp, node));
        p += total;
        len -= total;
    }
    return KF_OK;
}

/* Run the service call's answer into the response, logging a refusal once. */
static int answer_records(struct kmip_call *c, uint32_t op, int rc, kf_buf *records)
{
    if (rc == KF_OK)
        rc = append_records(c, records);
    kf_buf_free(records);
    return kmip_mfg_log(c, op, rc);
}

static int add_text(struct kmip_call *c, kf_ttlv *parent, uint32_t tag, const char *s)
{
    return kf_ttlv_add_text(c->arena, parent, tag, s) ? KF_OK : KF_ERR_NOMEM;
}

static int add_key_id(struct kmip_call *c, kf_ttlv *parent, uint64_t v)
{
    KF_ENSURE(v <= (uint64_t)INT64_MAX, KF_ERR_INTERNAL);
    return kf_ttlv_add_long(c->arena, parent, KMIP_TAG_KEYFLEET_KEY_ID, (int64_t)v) ? KF_OK
                                                                                    : KF_ERR_NOMEM;
}

static int add_time(struct kmip_call *c, kf_ttlv *parent, uint32_t tag, int64_t t, bool always)
{
    if (!t && !always)
        return KF_OK;
    return kf_ttlv_add_datetime(c->arena, parent, tag, t) ? KF_OK : KF_ERR_NOMEM;
}

/* ---- KeyfleetMfgSetup {Domain, DomainKind, [Country]} -> M, O, B certificates ---- */

int kmip_kf_mfg_setup(struct kmip_call *c)
{
    const uint32_t op = KMIP_OP_KEYFLEET_MFG_SETUP;
    struct items it;
    const char *domain = NULL, *country = NULL;
    const kf_ttlv *kind = NULL;
    items_start(&it, c, op);
    KF_GUARD(take_domain(&it, &domain));
    KF_GUARD(take(&it, KMIP_TAG_KEYFLEET_DOMAIN_KIND, KF_TTLV_ENUM, &kind,
                  "setup needs KeyfleetDomainKind (1 vendor, 2 postal, 3 earth) after the domain"));
    if (items_at(&it, KMIP_TAG_KEYFLEET_COUNTRY))
        KF_GUARD(take_text(&it, KMIP_TAG_KEYFLEET_COUNTRY, 2, &country,
                           "KeyfleetCountry is two letters"));
    KF_GUARD(items_end(&it));
    KF_GUARD(kmip_mfg_command(c, op, 0, domain));
    kf_buf records;
    KF_GUARD(kf_buf_alloc(&records, 1024, MFG_RECORDS_MAX, 0));
    int rc = kf_kms_mfg_setup(c->kms, c->actor, domain, kind->v.u32, country, &records);
    return answer_records(c, op, rc, &records);
}

/* ---- KeyfleetMfgRoleEnroll {Domain, RoleId, SignPub, EncPub} -> station, M, O, B ---- */

int kmip_kf_mfg_role_enroll(struct kmip_call *c)
{
    const uint32_t op = KMIP_OP_KEYFLEET_MFG_ROLE_ENROLL;
    struct items it;
    const char *domain = NULL, *role_id = NULL;
    const uint8_t *sign_pub = NULL, *enc_pub = NULL;
    items_start(&it, c, op);
    KF_GUARD(take_domain(&it, &domain));
    KF_GUARD(take_text(&it, KMIP_TAG_KEYFLEET_ROLE_ID, KF_MFG_ROLE_ID_LEN, &role_id,
                       "enrol needs KeyfleetRoleId (S or T and 8 digits) after the domain"));
    KF_GUARD(take_key32(&it, KMIP_TAG_KEYFLEET_SIGN_PUB, &sign_pub,
                        "enrol needs KeyfleetSignPub (32 bytes) after the role ID"));
    KF_GUARD(take_key32(&it, KMIP_TAG_KEYFLEET_ENC_PUB, &enc_pub,
                        "enrol needs KeyfleetEncPub (32 bytes) after KeyfleetSignPub"));
    KF_GUARD(items_end(&it));
    KF_GUARD(kmip_mfg_command(c, op, 0, domain));
    kf_buf records;
    KF_GUARD(kf_buf_alloc(&records, 2048, MFG_RECORDS_MAX, 0));
    int rc = kf_kms_mfg_enroll(c->kms, c->actor, domain, role_id, sign_pub, enc_pub, &records);
    return answer_records(c, op, rc, &records);
}

/* ---- KeyfleetMfgRoleCerts {Domain} -> M, O, B, stations ---- */

int kmip_kf_mfg_role_certs(struct kmip_call *c)
{
    const uint32_t op = KMIP_OP_KEYFLEET_MFG_ROLE_CERTS;
    struct items it;
    const char *domain = NULL;
    items_start(&it, c, op);
    KF_GUARD(take_domain(&it, &domain));
    KF_GUARD(items_end(&it));
    KF_GUARD(kmip_mfg_command(c, op, 0, domain));
    kf_buf records;
    /* A domain's certificates, every station's included, within the KMIP message limit. */
    KF_GUARD(kf_buf_alloc(&records, 2048, KF_TTLV_DEFAULT_MAX_TOTAL / 2, 0));
    int rc = kf_kms_mfg_role_certs(c->kms, c->actor, domain, &records);
    return answer_records(c, op, rc, &records);
}

/* ---- KeyfleetMfgRequestKey {Domain, SteelId} -> Distribute (MI4) ---- */

/*
 * A Steel's TLS identity bound to its role: when the client certificate's
 * CN is itself a Steel role ID ("cert:CN=S00000001,..."), that station may
 * act only as itself (level 3, KF_ERR_MFG_STEEL_ID). Administrators, and
 * certificates named otherwise, are not bound (docs/manufacturing.md).
 */
static int steel_bound(struct kmip_call *c, uint32_t op, const char *domain, const char *steel_id)
{
    static const char prefix[] = "cert:CN=";
    if ((c->who->roles & KF_ROLE_ADMIN) || strncmp(c->actor, prefix, sizeof(prefix) - 1) != 0)
        return KF_OK;
    const char *cn = c->actor + sizeof(prefix) - 1;
    size_t n = strcspn(cn, ",");
    char id[KF_MFG_ROLE_ID_LEN + 1];
    enum kf_mfg_role_type type;
    if (n != KF_MFG_ROLE_ID_LEN)
        return KF_OK;
    memcpy(id, cn, n);
    id[n] = 0;
    if (!kf_mfg_role_id_parse(id, &type) || type != KF_MFG_ROLE_STEEL || strcmp(id, steel_id) == 0)
        return KF_OK;
    return refuse(c, op, KF_ERR_MFG_STEEL_ID, domain,
                  "this station's certificate names another Steel ID");
}

int kmip_kf_mfg_request_key(struct kmip_call *c)
{
    const uint32_t op = KMIP_OP_KEYFLEET_MFG_REQUEST_KEY;
    struct items it;
    const char *domain = NULL, *steel_id = NULL;
    items_start(&it, c, op);
    KF_GUARD(take_domain(&it, &domain));
    KF_GUARD(take_text(&it, KMIP_TAG_KEYFLEET_STEEL_ID, KF_MFG_ROLE_ID_LEN, &steel_id,
                       "request key needs KeyfleetSteelId after the domain"));
    KF_GUARD(items_end(&it));
    KF_GUARD(kmip_mfg_command(c, op, 0, domain));
    KF_GUARD(steel_bound(c, op, domain, steel_id));
    kf_buf records;
    KF_GUARD(kf_buf_alloc(&records, 1024, MFG_RECORDS_MAX, 0));
    int rc = kf_kms_mfg_request_key(c->kms, c->actor, domain, steel_id, &records);
    return answer_records(c, op, rc, &records);
}

/* ---- KeyfleetMfgReportInstall {Domain, SignedRecord} -> ConfirmInstalled (MI10) ---- */

int kmip_kf_mfg_report_install(struct kmip_call *c)
{
    const uint32_t op = KMIP_OP_KEYFLEET_MFG_REPORT_INSTALL;
    struct items it;
    const char *domain = NULL;
    const kf_ttlv *rec = NULL;
    struct kf_mfg_envelope env;
    kf_buf report;
    size_t used;
    items_start(&it, c, op);
    KF_GUARD(take_domain(&it, &domain));
    KF_GUARD(take(&it, KMIP_TAG_KEYFLEET_SIGNED_RECORD, KF_TTLV_STRUCTURE, &rec,
                  "report install needs one KeyfleetSignedRecord after the domain"));
    KF_GUARD(items_end(&it));
    KF_GUARD(item_bytes(&it, rec, KF_MFG_BODY_MAX + 1024, &report));
    int rc = kf_mfg_envelope_parse(report.data, report.len, &env, &used);
    if (rc < 0 || used != report.len) {
        kf_buf_free(&report);
        return malformed(&it, "the KeyfleetSignedRecord is not a well-formed envelope");
    }
    rc = kmip_mfg_command(c, op, env.type, domain);
    if (rc == KF_OK)
        rc = steel_bound(c, op, domain, env.signer);
    kf_buf records;
    if (rc == KF_OK)
        rc = kf_buf_alloc(&records, 512, MFG_RECORDS_MAX, 0);
    if (rc < 0) {
        kf_buf_free(&report);
        return rc;
    }
    rc = kms_mfg_report_install_in(c->kms, c->actor, domain, report.data, report.len, &records);
    kf_buf_free(&report);
    return answer_records(c, op, rc, &records);
}

/* ---- KeyfleetMfgRegister {Registration} -> one ConfirmRegistered (MR4) per MAC ---- */

/* The registrar must act in every domain MR1 names, and in the postal
 * domain of its country, where an earth device's key goes. */
static int authorize_registration(struct kmip_call *c, uint32_t op,
                                  const struct kfd_registration *r)
{
    char country_domain[KF_MFG_DOMAIN_MAX + 1];
    KF_GUARD(kmip_mfg_command(c, op, 0, NULL));
    for (size_t i = 0; i < r->nmacs && i < KFD_METER_DOMAINS; i++)
        KF_GUARD(kmip_mfg_command(c, op, 0, r->mac[i].domain));
    if (kms_mfg_country_domain(c->kms, r->country, country_domain) == KF_OK)
        KF_GUARD(kmip_mfg_command(c, op, 0, country_domain));
    return KF_OK;
}

int kmip_kf_mfg_register(struct kmip_call *c)
{
    const uint32_t op = KMIP_OP_KEYFLEET_MFG_REGISTER;
    struct items it;
    const kf_ttlv *node = NULL;
    kf_buf mr1;
    struct kfd_registration r;
    items_start(&it, c, op);
    KF_GUARD(take(&it, KMIP_TAG_KEYFLEET_REGISTRATION, KF_TTLV_STRUCTURE, &node,
                  "register needs one KeyfleetRegistration"));
    KF_GUARD(items_end(&it));
    KF_GUARD(item_bytes(&it, node, KFD_REGISTRATION_MAX, &mr1));
    if (kfd_registration_decode(mr1.data, mr1.len, &r) != KF_OK) {
        kf_buf_free(&mr1);
        return malformed(&it, "the KeyfleetRegistration is malformed");
    }
    int rc = authorize_registration(c, op, &r);
    kf_buf records;
    if (rc == KF_OK)
        rc = kf_buf_alloc(&records, 1024, MFG_RECORDS_MAX, 0);
    if (rc < 0) {
        kf_buf_free(&mr1);
        return rc;
    }
    rc = kf_kms_mfg_register(c->kms, c->actor, mr1.data, mr1.len, &records);
    kf_buf_free(&mr1);
    return answer_records(c, op, rc, &records);
}

/* ---- KeyfleetMfgRetire {Domain, KeyId} -> Domain, KeyId, KeyStatus ---- */

int kmip_kf_mfg_retire(struct kmip_call *c)
{
    const uint32_t op = KMIP_OP_KEYFLEET_MFG_RETIRE;
    struct items it;
    const char *domain = NULL;
    uint64_t key_id = 0;
    items_start(&it, c, op);
    KF_GUARD(take_domain(&it, &domain));
    KF_GUARD(take_key_id(&it, &key_id, "retire needs KeyfleetKeyId (1 or more) after the domain"));
    KF_GUARD(items_end(&it));
    KF_GUARD(kmip_mfg_command(c, op, 0, domain));
    KF_GUARD(kmip_mfg_log(c, op, kf_kms_mfg_retire(c->kms, c->actor, domain, key_id)));
    KF_GUARD(add_text(c, c->resp, KMIP_TAG_KEYFLEET_DOMAIN, domain));
    KF_GUARD(add_key_id(c, c->resp, key_id));
    return kf_ttlv_add_enum(c->arena, c->resp, KMIP_TAG_KEYFLEET_KEY_STATUS, KF_MFG_OBSOLETE)
               ? KF_OK
               : KF_ERR_NOMEM;
}

/* ---- KeyfleetMfgStatus {Domain, KeyId | Msn} -> MfgKeyInfo ---- */

static int put_info(struct kmip_call *c, const struct kf_mfg_key_info *k)
{
    kf_ttlv *s = kf_ttlv_struct(c->arena, c->resp, KMIP_TAG_KEYFLEET_MFG_KEY_INFO);
    KF_ENSURE(s != NULL, KF_ERR_NOMEM);
    KF_GUARD(add_text(c, s, KMIP_TAG_KEYFLEET_DOMAIN, k->domain));
    KF_GUARD(add_key_id(c, s, k->key_id));
    KF_ENSURE(kf_ttlv_add_enum(c->arena, s, KMIP_TAG_KEYFLEET_KEY_STATUS, k->status) &&
                  kf_ttlv_add_int(c->arena, s, KMIP_TAG_KEYFLEET_REASON, k->reason),
              KF_ERR_NOMEM);
    KF_GUARD(add_text(c, s, KMIP_TAG_KEYFLEET_STEEL_ID, k->steel_id));
    if (k->msn[0])
        KF_GUARD(add_text(c, s, KMIP_TAG_KEYFLEET_MSN, k->msn));
    if (k->indicia[0])
        KF_GUARD(add_text(c, s, KMIP_TAG_KEYFLEET_INDICIA, k->indicia));
    if (k->country[0])
        KF_GUARD(add_text(c, s, KMIP_TAG_KEYFLEET_COUNTRY, k->country));
    KF_GUARD(add_time(c, s, KMIP_TAG_KEYFLEET_REQUEST_TIME, k->t_request, true));
    KF_GUARD(add_time(c, s, KMIP_TAG_KEYFLEET_INSTALL_TIME, k->t_install, false));
    KF_GUARD(add_time(c, s, KMIP_TAG_KEYFLEET_INSTALL_VERIFY_TIME, k->t_install_verify, false));
    KF_GUARD(add_time(c, s, KMIP_TAG_KEYFLEET_REGISTER_TIME, k->t_register, false));
    KF_GUARD(add_time(c, s, KMIP_TAG_KEYFLEET_REGISTER_VERIFY_TIME, k->t_register_verify, false));
    if (k->status == KF_MFG_TRANSFERRED && k->moved_domain[0]) {
        KF_GUARD(add_text(c, s, KMIP_TAG_KEYFLEET_DOMAIN, k->moved_domain));
        KF_GUARD(add_key_id(c, s, k->moved_key_id));
    }
    return KF_OK;
}

int kmip_kf_mfg_status(struct kmip_call *c)
{
    const uint32_t op = KMIP_OP_KEYFLEET_MFG_STATUS;
    struct items it;
    const char *domain = NULL, *msn = NULL;
    uint64_t key_id = 0;
    items_start(&it, c, op);
    KF_GUARD(take_domain(&it, &domain));
    if (items_at(&it, KMIP_TAG_KEYFLEET_MSN))
        KF_GUARD(take_text(&it, KMIP_TAG_KEYFLEET_MSN, KF_MFG_MSN_MAX, &msn,
                           "KeyfleetMsn is 1-16 characters"));
    else
        KF_GUARD(take_key_id(&it, &key_id,
                             "status needs KeyfleetKeyId or KeyfleetMsn after the domain"));
    KF_GUARD(items_end(&it));
    KF_GUARD(kmip_mfg_command(c, op, 0, domain));
    struct kf_mfg_key_info info;
    KF_GUARD(kmip_mfg_log(c, op, kf_kms_mfg_status(c->kms, c->actor, domain, key_id, msn, &info)));
    return put_info(c, &info);
}
