/*
 * The token operations over KMIP (docs/manufacturing.md "Tokens" and
 * "KMIP operations"):
 *   KeyfleetTokenVerify    {KeyfleetDomain, KeyfleetPieces} -> KeyfleetVerdicts
 *   KeyfleetTokenKeyExport {KeyfleetDomain, KeyfleetRoleId, KeyfleetPeriodFirst,
 *                           KeyfleetPeriodLast} -> one KeyfleetSignedRecord (TokenKeys)
 * Each payload is read strictly: exactly these items, in this order (error
 * level 1, KF_ERR_MFG_FRAMING, audited here); then the command table (level
 * 2) and the principal's domain (kmip_mfg_command); the service (tokens.c)
 * checks the rest and audits its own refusals, which are logged here once
 * with their level (kmip_mfg_log).
 */
#include <stdio.h>
#include <string.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/log.h"
#include "keyfleet/meter.h"
#include "kmip_internal.h"
#include "mfg_internal.h"

/* What a Response Message needs around the record (header, batch item). */
#define TOKEN_KEYS_MESSAGE_ROOM 1024u

struct items {
    struct kmip_call *c;
    const char *op; /* its audit name */
    const kf_ttlv *next;
};

/* Level 1: the service never saw the request, so the refusal is audited here. */
static int malformed_op(struct kmip_call *c, const char *op, const char *what)
{
    snprintf(c->message, sizeof(c->message), "error level 1: %s", what);
    pthread_mutex_lock(&c->kms->lock);
    kms_audit_refusal(c->kms, c->actor, op, "", "", KF_ERR_MFG_FRAMING, "error level 1");
    pthread_mutex_unlock(&c->kms->lock);
    kf_warn("manufacturing: %s from %.120s refused (error level 1): %s", op, c->actor,
            kf_errname(KF_ERR_MFG_FRAMING));
    return KF_ERR_MFG_FRAMING;
}

static int malformed(struct items *it, const char *what)
{
    return malformed_op(it->c, it->op, what);
}

static int take(struct items *it, uint32_t tag, uint8_t type, const kf_ttlv **out,
                const char *what)
{
    if (!it->next || it->next->tag != tag || it->next->type != type)
        return malformed(it, what);
    *out = it->next;
    it->next = it->next->next;
    return KF_OK;
}

static int take_text(struct items *it, uint32_t tag, size_t max, const char **s, const char *what)
{
    const kf_ttlv *n = NULL;
    size_t len;
    KF_GUARD(take(it, tag, KF_TTLV_TEXT, &n, what));
    KF_GUARD(kf_ttlv_get_text(n, s, &len));
    /* Arena text is NUL-terminated; an embedded NUL would cut the C string short. */
    if (len == 0 || len > max || strlen(*s) != len)
        return malformed(it, what);
    return KF_OK;
}

static int take_period(struct items *it, uint32_t tag, uint32_t *period, const char *what)
{
    const kf_ttlv *n = NULL;
    int32_t v;
    KF_GUARD(take(it, tag, KF_TTLV_INTEGER, &n, what));
    KF_GUARD(kf_ttlv_get_int(n, &v));
    if (v < 0)
        return malformed(it, what);
    *period = (uint32_t)v; /* its range is the service's to check (KF_ERR_MFG_PERIOD) */
    return KF_OK;
}

static int items_end(struct items *it)
{
    return it->next ? malformed(it, "the payload has items after the last one it may have")
                    : KF_OK;
}

/* ---- KeyfleetTokenVerify {Domain, Pieces} -> Verdicts ---- */

int kmip_kf_token_verify(struct kmip_call *c)
{
    const uint32_t op = KMIP_OP_KEYFLEET_TOKEN_VERIFY;
    struct items it = {.c = c, .op = "KeyfleetTokenVerify", .next = c->req ? c->req->child : NULL};
    const char *domain = NULL;
    const kf_ttlv *pieces = NULL;
    KF_GUARD(take_text(&it, KMIP_TAG_KEYFLEET_DOMAIN, KF_DOMAIN_NAME_MAX, &domain,
                       "token verify needs a KeyfleetDomain first"));
    KF_GUARD(take(&it, KMIP_TAG_KEYFLEET_PIECES, KF_TTLV_BYTES, &pieces,
                  "token verify needs KeyfleetPieces after the KeyfleetDomain"));
    KF_GUARD(items_end(&it));
    size_t len = pieces->v.bytes.len, n = len / KFD_PIECE_LEN;
    if (len % KFD_PIECE_LEN != 0 || n < 1 || n > KF_TOKEN_BATCH_MAX)
        return malformed(&it, "KeyfleetPieces holds 1 to 20,000 pieces of 46 bytes each");
    KF_GUARD(kmip_mfg_command(c, op, 0, domain));
    uint8_t *verdicts = kf_arena_alloc(c->arena, n);
    KF_ENSURE(verdicts != NULL, KF_ERR_NOMEM);
    KF_GUARD(kmip_mfg_log(c, op,
                          kf_kms_mfg_verify_tokens(c->kms, c->actor, domain, pieces->v.bytes.p, n,
                                                   verdicts)));
    return kf_ttlv_add_bytes(c->arena, c->resp, KMIP_TAG_KEYFLEET_VERDICTS, verdicts, n)
               ? KF_OK
               : KF_ERR_NOMEM;
}

/* ---- KeyfleetTokenKeyExport {Domain, RoleId, PeriodFirst, PeriodLast} -> TokenKeys ---- */

int kmip_kf_token_key_export(struct kmip_call *c)
{
    const uint32_t op = KMIP_OP_KEYFLEET_TOKEN_KEY_EXPORT;
    struct items it = {.c = c, .op = "KeyfleetTokenKeyExport",
                       .next = c->req ? c->req->child : NULL};
    const char *domain = NULL, *tin = NULL;
    uint32_t first, last;
    KF_GUARD(take_text(&it, KMIP_TAG_KEYFLEET_DOMAIN, KF_DOMAIN_NAME_MAX, &domain,
                       "token key export needs a KeyfleetDomain first"));
    KF_GUARD(take_text(&it, KMIP_TAG_KEYFLEET_ROLE_ID, KF_MFG_ROLE_ID_LEN, &tin,
                       "token key export needs the Tin's KeyfleetRoleId after the domain"));
    KF_GUARD(take_period(&it, KMIP_TAG_KEYFLEET_PERIOD_FIRST, &first,
                         "token key export needs KeyfleetPeriodFirst (YYYYMM) after the role"));
    KF_GUARD(take_period(&it, KMIP_TAG_KEYFLEET_PERIOD_LAST, &last,
                         "token key export needs KeyfleetPeriodLast (YYYYMM) last"));
    KF_GUARD(items_end(&it));
    KF_GUARD(kmip_mfg_command(c, op, 0, domain));
    kf_buf record;
    KF_GUARD(kf_buf_alloc(&record, 4096, KF_MFG_TOKEN_KEYS_MAX + 4096, 0));
    int rc = kf_kms_mfg_token_keys(c->kms, c->actor, domain, tin, first, last, &record);
    /* The answer travels in one KMIP message (KF_TTLV_DEFAULT_MAX_TOTAL on
     * every transport); a larger record was audited but cannot be sent. */
    if (rc == KF_OK && record.len > KF_TTLV_DEFAULT_MAX_TOTAL - TOKEN_KEYS_MESSAGE_ROOM) {
        snprintf(c->message, sizeof(c->message),
                 "the token keys of this domain and range (%zu bytes) are too large for one "
                 "answer: ask for fewer periods at a time",
                 record.len);
        rc = KF_ERR_LIMIT;
    }
    kf_ttlv *node = NULL;
    struct kf_ttlv_limits lim = {.max_total = record.len, .max_item_len = record.len};
    if (rc == KF_OK)
        rc = kf_ttlv_decode(record.data, record.len, &lim, c->arena, &node);
    if (rc == KF_OK)
        rc = kf_ttlv_append(c->resp, node);
    kf_buf_free(&record);
    return kmip_mfg_log(c, op, rc);
}
