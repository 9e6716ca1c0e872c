/*
 * The KeyfleetMfgRecord body codec (docs/manufacturing.md, "Signed envelope
 * and records").
 *
 * A body is one TTLV structure: KeyfleetRecordType first, then the fields of
 * its type in the order the document's table lists them. The encoding is
 * canonical and the decoder holds every body to it: a field out of order, a
 * second copy, a field the type does not allow, a missing required field, a
 * wrong TTLV type or length, or a value outside its syntax is refused with
 * KF_ERR_MFG_FRAMING, so one record has exactly one body and its signature
 * covers exactly one meaning. The encoder refuses what the decoder would
 * (KF_ERR_ARG): both run record_valid.
 */
#include <stdint.h>
#include <string.h>

#include "keyfleet/mfg.h"
#include "keyfleet/ttlv.h"
#include "mfg/internal.h"

/* ---- the fields ---- */

enum field_id {
    FD_STATUS,
    FD_ROLE_ID,
    FD_ROLE_TYPE,
    FD_DOMAIN,
    FD_STEEL_ID,
    FD_KEY_ID,
    FD_SIGN_PUB,
    FD_ENC_PUB,
    FD_SEALED_KEY,
    FD_ARCHIVE_KEY,
    FD_TEST_TOKENS,
    FD_MSN,
    FD_INDICIA,
    FD_COUNTRY,
    FD_REASON,
    FD_EVENT_TIME,
    FD_PERIOD_FIRST,
    FD_PERIOD_LAST,
    FD_TABLE,
    FD_COUNT
};

static const struct field_desc {
    uint32_t tag;
    uint8_t type; /* enum kf_ttlv_type */
    uint32_t bit; /* enum kf_mfg_field */
} field_descs[FD_COUNT] = {
    [FD_STATUS] = {KMIP_TAG_KEYFLEET_KEY_STATUS, KF_TTLV_ENUM, KF_MFG_F_STATUS},
    [FD_ROLE_ID] = {KMIP_TAG_KEYFLEET_ROLE_ID, KF_TTLV_TEXT, KF_MFG_F_ROLE_ID},
    [FD_ROLE_TYPE] = {KMIP_TAG_KEYFLEET_ROLE_TYPE, KF_TTLV_ENUM, KF_MFG_F_ROLE_TYPE},
    [FD_DOMAIN] = {KMIP_TAG_KEYFLEET_DOMAIN, KF_TTLV_TEXT, KF_MFG_F_DOMAIN},
    [FD_STEEL_ID] = {KMIP_TAG_KEYFLEET_STEEL_ID, KF_TTLV_TEXT, KF_MFG_F_STEEL_ID},
    [FD_KEY_ID] = {KMIP_TAG_KEYFLEET_KEY_ID, KF_TTLV_LONG, KF_MFG_F_KEY_ID},
    [FD_SIGN_PUB] = {KMIP_TAG_KEYFLEET_SIGN_PUB, KF_TTLV_BYTES, KF_MFG_F_SIGN_PUB},
    [FD_ENC_PUB] = {KMIP_TAG_KEYFLEET_ENC_PUB, KF_TTLV_BYTES, KF_MFG_F_ENC_PUB},
    [FD_SEALED_KEY] = {KMIP_TAG_KEYFLEET_SEALED_KEY, KF_TTLV_BYTES, KF_MFG_F_SEALED_KEY},
    [FD_ARCHIVE_KEY] = {KMIP_TAG_KEYFLEET_ARCHIVE_KEY, KF_TTLV_BYTES, KF_MFG_F_ARCHIVE_KEY},
    [FD_TEST_TOKENS] = {KMIP_TAG_KEYFLEET_TEST_TOKENS, KF_TTLV_BYTES, KF_MFG_F_TEST_TOKENS},
    [FD_MSN] = {KMIP_TAG_KEYFLEET_MSN, KF_TTLV_TEXT, KF_MFG_F_MSN},
    [FD_INDICIA] = {KMIP_TAG_KEYFLEET_INDICIA, KF_TTLV_TEXT, KF_MFG_F_INDICIA},
    [FD_COUNTRY] = {KMIP_TAG_KEYFLEET_COUNTRY, KF_TTLV_TEXT, KF_MFG_F_COUNTRY},
    [FD_REASON] = {KMIP_TAG_KEYFLEET_REASON, KF_TTLV_INTEGER, KF_MFG_F_REASON},
    [FD_EVENT_TIME] = {KMIP_TAG_KEYFLEET_EVENT_TIME, KF_TTLV_DATETIME, KF_MFG_F_EVENT_TIME},
    [FD_PERIOD_FIRST] = {KMIP_TAG_KEYFLEET_PERIOD_FIRST, KF_TTLV_INTEGER, KF_MFG_F_PERIODS},
    [FD_PERIOD_LAST] = {KMIP_TAG_KEYFLEET_PERIOD_LAST, KF_TTLV_INTEGER, KF_MFG_F_PERIODS},
    [FD_TABLE] = {KMIP_TAG_KEYFLEET_TOKEN_KEY_TABLE, KF_TTLV_BYTES, KF_MFG_F_TABLE},
};

/* ---- the record types: the document's table, row by row ---- */

#define MAX_SLOTS 10
struct slot {
    uint8_t field; /* enum field_id */
    bool optional;
};
#define REQ(f)                                                                                     \
    {                                                                                              \
        f, false                                                                                   \
    }
#define OPT(f)                                                                                     \
    {                                                                                              \
        f, true                                                                                    \
    }
#define STATUS_BIT(s) (1u << (s))

static const struct layout {
    uint32_t statuses; /* STATUS_BIT of each KeyStatus the type allows */
    char role_letter;  /* the role RoleId must name; 0: none fixed (RoleCert: RoleType's) */
    uint8_t nslots;
    struct slot slots[MAX_SLOTS]; /* in wire order */
} layouts[KF_MFG_REC_MAX + 1] = {
    [KF_MFG_REC_ROLE_CERT] = {0,
                              0,
                              6,
                              {REQ(FD_ROLE_ID), REQ(FD_ROLE_TYPE), REQ(FD_DOMAIN), REQ(FD_SIGN_PUB),
                               OPT(FD_ENC_PUB), REQ(FD_EVENT_TIME)}},
    [KF_MFG_REC_ARCHIVE_NEW] = {STATUS_BIT(KF_MFG_NEW),
                                'O',
                                7,
                                {REQ(FD_STATUS), REQ(FD_ROLE_ID), REQ(FD_DOMAIN), REQ(FD_STEEL_ID),
                                 REQ(FD_KEY_ID), REQ(FD_SEALED_KEY), REQ(FD_EVENT_TIME)}},
    [KF_MFG_REC_DISTRIBUTE] = {STATUS_BIT(KF_MFG_NEW),
                               'O',
                               8,
                               {REQ(FD_STATUS), REQ(FD_ROLE_ID), REQ(FD_DOMAIN), REQ(FD_STEEL_ID),
                                REQ(FD_KEY_ID), REQ(FD_SEALED_KEY), REQ(FD_TEST_TOKENS),
                                REQ(FD_EVENT_TIME)}},
    [KF_MFG_REC_INSTALLED] = {STATUS_BIT(KF_MFG_INSTALLED),
                              'O',
                              8,
                              {REQ(FD_STATUS), REQ(FD_ROLE_ID), REQ(FD_DOMAIN), REQ(FD_STEEL_ID),
                               REQ(FD_KEY_ID), REQ(FD_MSN), REQ(FD_TEST_TOKENS),
                               REQ(FD_EVENT_TIME)}},
    [KF_MFG_REC_INSTALL_FAILED] = {STATUS_BIT(KF_MFG_BAD),
                                   0,
                                   7,
                                   {REQ(FD_STATUS), REQ(FD_DOMAIN), REQ(FD_STEEL_ID),
                                    REQ(FD_KEY_ID), OPT(FD_MSN), REQ(FD_REASON),
                                    REQ(FD_EVENT_TIME)}},
    [KF_MFG_REC_ARCHIVE_INSTALLED] = {STATUS_BIT(KF_MFG_INSTALLED),
                                      'O',
                                      8,
                                      {REQ(FD_STATUS), REQ(FD_ROLE_ID), REQ(FD_DOMAIN),
                                       REQ(FD_STEEL_ID), REQ(FD_KEY_ID), REQ(FD_MSN),
                                       REQ(FD_ARCHIVE_KEY), REQ(FD_EVENT_TIME)}},
    [KF_MFG_REC_CONFIRM_INSTALLED] = {STATUS_BIT(KF_MFG_INSTALLED) | STATUS_BIT(KF_MFG_BAD),
                                      0,
                                      6,
                                      {REQ(FD_STATUS), REQ(FD_DOMAIN), REQ(FD_KEY_ID), REQ(FD_MSN),
                                       OPT(FD_REASON), REQ(FD_EVENT_TIME)}},
    [KF_MFG_REC_ARCHIVE_REGISTERED] = {STATUS_BIT(KF_MFG_ACTIVE),
                                       0,
                                       8,
                                       {REQ(FD_STATUS), REQ(FD_DOMAIN), REQ(FD_KEY_ID), REQ(FD_MSN),
                                        REQ(FD_INDICIA), REQ(FD_COUNTRY), REQ(FD_ARCHIVE_KEY),
                                        REQ(FD_EVENT_TIME)}},
    [KF_MFG_REC_CONFIRM_REGISTERED] = {STATUS_BIT(KF_MFG_ACTIVE),
                                       0,
                                       7,
                                       {REQ(FD_STATUS), REQ(FD_DOMAIN), REQ(FD_KEY_ID), REQ(FD_MSN),
                                        REQ(FD_INDICIA), REQ(FD_COUNTRY), REQ(FD_EVENT_TIME)}},
    [KF_MFG_REC_TRANSFER] = {0,
                             0,
                             6,
                             {REQ(FD_DOMAIN), REQ(FD_KEY_ID), REQ(FD_MSN), REQ(FD_COUNTRY),
                              REQ(FD_SEALED_KEY), REQ(FD_EVENT_TIME)}},
    [KF_MFG_REC_TOKEN_KEYS] = {0,
                               'T',
                               5,
                               {REQ(FD_DOMAIN), REQ(FD_ROLE_ID), REQ(FD_PERIOD_FIRST),
                                REQ(FD_PERIOD_LAST), REQ(FD_TABLE)}},
};

static bool type_known(uint32_t type)
{
    return type >= 1 && type <= KF_MFG_REC_MAX;
}

size_t mfg_body_limit(uint32_t type)
{
    return type == KF_MFG_REC_TOKEN_KEYS ? KF_MFG_TOKEN_KEYS_MAX : KF_MFG_BODY_MAX;
}

static void layout_bits(const struct layout *l, uint32_t *required, uint32_t *allowed)
{
    *required = *allowed = 0;
    for (unsigned i = 0; i < l->nslots; i++) {
        uint32_t bit = field_descs[l->slots[i].field].bit;
        *allowed |= bit;
        if (!l->slots[i].optional)
            *required |= bit;
    }
}

/* ---- validity: shared by encode (KF_ERR_ARG) and decode (KF_ERR_MFG_FRAMING) ---- */

static bool role_id_of(const char *id, size_t cap, enum kf_mfg_role_type *t)
{
    return mfg_text_fits(id, cap) && kf_mfg_role_id_parse(id, t);
}

static bool table_valid(const struct kf_mfg_record *rec)
{
    if (rec->table_len % KF_MFG_TOKEN_KEY_ENTRY_LEN != 0 ||
        rec->table_len > KF_MFG_TOKEN_KEYS_MAX || (rec->table_len && !rec->table))
        return false;
    kf_buf in;
    kf_buf_reader(&in, rec->table, rec->table_len);
    while (kf_buf_remaining(&in) > 0) {
        const uint8_t *entry;
        struct kf_mfg_token_key_entry e;
        if (kf_buf_get_ptr(&in, KF_MFG_TOKEN_KEY_ENTRY_LEN, &entry) != KF_OK ||
            kf_mfg_token_key_entry_get(entry, &e) != KF_OK || e.period < rec->period_first ||
            e.period > rec->period_last)
            return false;
    }
    return true;
}

static bool fields_valid(const struct kf_mfg_record *rec, const struct layout *l)
{
    uint32_t f = rec->fields;
    enum kf_mfg_role_type t;
    if ((f & KF_MFG_F_STATUS) && (rec->status >= 32 || !(l->statuses & STATUS_BIT(rec->status))))
        return false;
    if (f & KF_MFG_F_ROLE_ID) {
        if (!role_id_of(rec->role_id, sizeof(rec->role_id), &t))
            return false;
        if (l->role_letter && kf_mfg_role_letter(t) != l->role_letter)
            return false;
        if (rec->type == KF_MFG_REC_ROLE_CERT && (uint32_t)t != rec->role_type)
            return false;
    }
    if ((f & KF_MFG_F_ROLE_TYPE) && kf_mfg_role_letter((enum kf_mfg_role_type)rec->role_type) == 0)
        return false;
    if ((f & KF_MFG_F_DOMAIN) &&
        !(mfg_text_fits(rec->domain, sizeof(rec->domain)) && mfg_domain_valid(rec->domain)))
        return false;
    if ((f & KF_MFG_F_STEEL_ID) &&
        !(role_id_of(rec->steel_id, sizeof(rec->steel_id), &t) && t == KF_MFG_ROLE_STEEL))
        return false;
    if ((f & KF_MFG_F_KEY_ID) && (rec->key_id < 1 || rec->key_id > (uint64_t)INT64_MAX))
        return false;
    if ((f & KF_MFG_F_MSN) &&
        !(mfg_text_fits(rec->msn, sizeof(rec->msn)) && kf_mfg_msn_valid(rec->msn)))
        return false;
    if ((f & KF_MFG_F_INDICIA) &&
        !(mfg_text_fits(rec->indicia, sizeof(rec->indicia)) && kf_mfg_indicia_valid(rec->indicia)))
        return false;
    if ((f & KF_MFG_F_COUNTRY) &&
        !(mfg_text_fits(rec->country, sizeof(rec->country)) && kf_mfg_country_valid(rec->country)))
        return false;
    if ((f & KF_MFG_F_REASON) && rec->reason >= 0) /* a kf error code */
        return false;
    /* ConfirmInstalled carries a reason exactly when the key went Bad */
    if (rec->type == KF_MFG_REC_CONFIRM_INSTALLED &&
        ((f & KF_MFG_F_REASON) != 0) != (rec->status == KF_MFG_BAD))
        return false;
    if ((f & KF_MFG_F_PERIODS) &&
        !(mfg_period_valid(rec->period_first) && mfg_period_valid(rec->period_last) &&
          rec->period_first <= rec->period_last))
        return false;
    if ((f & KF_MFG_F_TABLE) && !table_valid(rec))
        return false;
    return true;
}

static bool record_valid(const struct kf_mfg_record *rec)
{
    if (!type_known(rec->type))
        return false;
    const struct layout *l = &layouts[rec->type];
    uint32_t required, allowed;
    layout_bits(l, &required, &allowed);
    if ((rec->fields & required) != required || (rec->fields & ~allowed) != 0)
        return false;
    return fields_valid(rec, l);
}

/* ---- encoding ---- */

static kf_ttlv *add_field(kf_arena *a, kf_ttlv *root, const struct kf_mfg_record *rec,
                          enum field_id fd)
{
    uint32_t tag = field_descs[fd].tag;
    switch (fd) {
    case FD_STATUS:
        return kf_ttlv_add_enum(a, root, tag, rec->status);
    case FD_ROLE_ID:
        return kf_ttlv_add_text(a, root, tag, rec->role_id);
    case FD_ROLE_TYPE:
        return kf_ttlv_add_enum(a, root, tag, rec->role_type);
    case FD_DOMAIN:
        return kf_ttlv_add_text(a, root, tag, rec->domain);
    case FD_STEEL_ID:
        return kf_ttlv_add_text(a, root, tag, rec->steel_id);
    case FD_KEY_ID:
        return kf_ttlv_add_long(a, root, tag, (int64_t)rec->key_id);
    case FD_SIGN_PUB:
        return kf_ttlv_add_bytes(a, root, tag, rec->sign_pub, sizeof(rec->sign_pub));
    case FD_ENC_PUB:
        return kf_ttlv_add_bytes(a, root, tag, rec->enc_pub, sizeof(rec->enc_pub));
    case FD_SEALED_KEY:
        return kf_ttlv_add_bytes(a, root, tag, rec->sealed_key, sizeof(rec->sealed_key));
    case FD_ARCHIVE_KEY:
        return kf_ttlv_add_bytes(a, root, tag, rec->archive_key, sizeof(rec->archive_key));
    case FD_TEST_TOKENS:
        return kf_ttlv_add_bytes(a, root, tag, rec->test_tokens, sizeof(rec->test_tokens));
    case FD_MSN:
        return kf_ttlv_add_text(a, root, tag, rec->msn);
    case FD_INDICIA:
        return kf_ttlv_add_text(a, root, tag, rec->indicia);
    case FD_COUNTRY:
        return kf_ttlv_add_text(a, root, tag, rec->country);
    case FD_REASON:
        return kf_ttlv_add_int(a, root, tag, rec->reason);
    case FD_EVENT_TIME:
        return kf_ttlv_add_datetime(a, root, tag, rec->event_time);
    case FD_PERIOD_FIRST:
        return kf_ttlv_add_int(a, root, tag, (int32_t)rec->period_first);
    case FD_PERIOD_LAST:
        return kf_ttlv_add_int(a, root, tag, (int32_t)rec->period_last);
    case FD_TABLE:
        return kf_ttlv_add_bytes(a, root, tag, rec->table, rec->table_len);
    case FD_COUNT:
        break;
    }
    return NULL;
}

static int build_body(kf_arena *a, const struct kf_mfg_record *rec, kf_buf *out)
{
    kf_ttlv *root = kf_ttlv_struct(a, NULL, KMIP_TAG_KEYFLEET_MFG_RECORD);
    KF_ENSURE(root && kf_ttlv_add_enum(a, root, KMIP_TAG_KEYFLEET_RECORD_TYPE, rec->type),
              KF_ERR_NOMEM);
    const struct layout *l = &layouts[rec->type];
    for (unsigned i = 0; i < l->nslots; i++) {
        enum field_id fd = l->slots[i].field;
        if (rec->fields & field_descs[fd].bit)
            KF_ENSURE(add_field(a, root, rec, fd) != NULL, KF_ERR_NOMEM);
    }
    size_t start = out->len;
    KF_GUARD(kf_ttlv_encode(root, out));
    KF_ENSURE(out->len - start <= mfg_body_limit(rec->type), KF_ERR_ARG);
    return KF_OK;
}

int mfg_body_encode(const struct kf_mfg_record *rec, kf_buf *out)
{
    KF_ENSURE(rec && out, KF_ERR_ARG);
    KF_ENSURE(record_valid(rec), KF_ERR_ARG);
    kf_arena *a;
    KF_GUARD(kf_arena_new(&a, rec->table_len + 64 * 1024));
    int rc = build_body(a, rec, out);
    kf_arena_free(a);
    return rc;
}

int kf_mfg_record_encode(const struct kf_mfg_record *rec, kf_buf *out)
{
    KF_ENSURE(rec && out, KF_ERR_ARG);
    /* via a scratch buffer, so a refusal leaves out as it was */
    kf_buf body;
    KF_GUARD(kf_buf_alloc(&body, 0, KF_MFG_TOKEN_KEYS_MAX + 4096, 0));
    int rc = mfg_body_encode(rec, &body);
    if (rc == KF_OK)
        rc = kf_buf_put_bytes(out, body.data, body.len);
    kf_buf_free(&body);
    return rc;
}

/* ---- decoding ---- */

static const struct kf_ttlv_limits body_limits = {
    .max_depth = 2, /* the record and its fields: nothing nests */
    .max_items = 1 + 1 + FD_COUNT,
    .max_total = KF_MFG_TOKEN_KEYS_MAX,
    .max_item_len = KF_MFG_TOKEN_KEYS_MAX,
};

static bool get_text(const kf_ttlv *n, char *dst, size_t cap)
{
    const char *s;
    size_t len;
    if (kf_ttlv_get_text(n, &s, &len) != KF_OK || len >= cap || memchr(s, '\0', len))
        return false;
    memcpy(dst, s, len);
    dst[len] = '\0';
    return true;
}

static bool get_fixed(const kf_ttlv *n, uint8_t *dst, size_t want)
{
    const uint8_t *p;
    size_t len;
    if (kf_ttlv_get_bytes(n, &p, &len) != KF_OK || len != want)
        return false;
    memcpy(dst, p, len);
    return true;
}

static bool get_u32(const kf_ttlv *n, uint32_t *dst)
{
    int32_t v;
    if (kf_ttlv_get_int(n, &v) != KF_OK || v < 0)
        return false;
    *dst = (uint32_t)v;
    return true;
}

static size_t pad8(size_t n)
{
    return (8 - n % 8) % 8;
}

/*
 * The table is the last field of a TokenKeys body, so its value ends at the
 * body's end less its padding: point rec->table there (the header promises a
 * pointer into the body, not into a decode arena).
 */
static bool get_table(const kf_ttlv *n, const uint8_t *body, size_t body_len,
                      struct kf_mfg_record *rec)
{
    const uint8_t *p, *in_body;
    size_t len;
    if (n->next != NULL || kf_ttlv_get_bytes(n, &p, &len) != KF_OK)
        return false;
    kf_buf b;
    kf_buf_reader(&b, body, body_len);
    if (body_len < len + pad8(len) || kf_buf_skip(&b, body_len - len - pad8(len)) != KF_OK ||
        kf_buf_get_ptr(&b, len, &in_body) != KF_OK || (len && memcmp(in_body, p, len) != 0))
        return false;
    rec->table = in_body;
    rec->table_len = len;
    return true;
}

static bool get_field(const kf_ttlv *n, enum field_id fd, const uint8_t *body, size_t body_len,
                      struct kf_mfg_record *rec)
{
    if (n->type != field_descs[fd].type)
        return false;
    int64_t key_id;
    switch (fd) {
    case FD_STATUS:
        return kf_ttlv_get_enum(n, &rec->status) == KF_OK;
    case FD_ROLE_ID:
        return get_text(n, rec->role_id, sizeof(rec->role_id));
    case FD_ROLE_TYPE:
        return kf_ttlv_get_enum(n, &rec->role_type) == KF_OK;
    case FD_DOMAIN:
        return get_text(n, rec->domain, sizeof(rec->domain));
    case FD_STEEL_ID:
        return get_text(n, rec->steel_id, sizeof(rec->steel_id));
    case FD_KEY_ID:
        if (kf_ttlv_get_long(n, &key_id) != KF_OK || key_id < 1)
            return false;
        rec->key_id = (uint64_t)key_id;
        return true;
    case FD_SIGN_PUB:
        return get_fixed(n, rec->sign_pub, sizeof(rec->sign_pub));
    case FD_ENC_PUB:
        return get_fixed(n, rec->enc_pub, sizeof(rec->enc_pub));
    case FD_SEALED_KEY:
        return get_fixed(n, rec->sealed_key, sizeof(rec->sealed_key));
    case FD_ARCHIVE_KEY:
        return get_fixed(n, rec->archive_key, sizeof(rec->archive_key));
    case FD_TEST_TOKENS:
        return get_fixed(n, rec->test_tokens, sizeof(rec->test_tokens));
    case FD_MSN:
        return get_text(n, rec->msn, sizeof(rec->msn));
    case FD_INDICIA:
        return get_text(n, rec->indicia, sizeof(rec->indicia));
    case FD_COUNTRY:
        return get_text(n, rec->country, sizeof(rec->country));
    case FD_REASON:
        return kf_ttlv_get_int(n, &rec->reason) == KF_OK;
    case FD_EVENT_TIME:
        return kf_ttlv_get_datetime(n, &rec->event_time) == KF_OK;
    case FD_PERIOD_FIRST:
        return get_u32(n, &rec->period_first);
    case FD_PERIOD_LAST:
        return get_u32(n, &rec->period_last);
    case FD_TABLE:
        return get_table(n, body, body_len, rec);
    case FD_COUNT:
        break;
    }
    return false;
}

/*
 * Walk the fields against the type's slots: each field must match the next
 * slot, skipping only optional ones. So a field out of order, a repeat, a
 * foreign tag or a missing required field all run off the slot list.
 */
static bool fields_decode(const kf_ttlv *first, const struct layout *l, const uint8_t *body,
                          size_t body_len, struct kf_mfg_record *rec)
{
    unsigned s = 0;
    for (const kf_ttlv *n = first; n; n = n->next) {
        while (s < l->nslots && field_descs[l->slots[s].field].tag != n->tag) {
            if (!l->slots[s].optional)
                return false;
            s++;
        }
        if (s == l->nslots)
            return false;
        enum field_id fd = l->slots[s].field;
        if (!get_field(n, fd, body, body_len, rec))
            return false;
        rec->fields |= field_descs[fd].bit;
        s++;
    }
    for (; s < l->nslots; s++)
        if (!l->slots[s].optional)
            return false;
    return true;
}

static bool body_decode(const kf_ttlv *root, const uint8_t *body, size_t len, uint32_t expect_type,
                        struct kf_mfg_record *rec)
{
    if (root->tag != KMIP_TAG_KEYFLEET_MFG_RECORD || root->type != KF_TTLV_STRUCTURE)
        return false;
    const kf_ttlv *t = root->child;
    if (!t || t->tag != KMIP_TAG_KEYFLEET_RECORD_TYPE || t->type != KF_TTLV_ENUM ||
        kf_ttlv_get_enum(t, &rec->type) != KF_OK || !type_known(rec->type) ||
        (expect_type != 0 && rec->type != expect_type) || len > mfg_body_limit(rec->type))
        return false;
    return fields_decode(t->next, &layouts[rec->type], body, len, rec) && record_valid(rec);
}

int kf_mfg_record_decode(const uint8_t *body, size_t len, uint32_t expect_type,
                         struct kf_mfg_record *rec)
{
    KF_ENSURE(rec && (body || len == 0), KF_ERR_ARG);
    memset(rec, 0, sizeof(*rec));
    KF_ENSURE(len >= KF_TTLV_HEADER_LEN && len <= KF_MFG_TOKEN_KEYS_MAX, KF_ERR_MFG_FRAMING);
    kf_arena *a;
    KF_GUARD(kf_arena_new(&a, len + 64 * 1024));
    kf_ttlv *root;
    bool ok = kf_ttlv_decode(body, len, &body_limits, a, &root) == KF_OK &&
              body_decode(root, body, len, expect_type, rec);
    kf_arena_free(a);
    if (!ok) {
        memset(rec, 0, sizeof(*rec));
        return KF_ERR_MFG_FRAMING;
    }
    return KF_OK;
}
