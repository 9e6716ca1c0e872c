/*
 * Manufacturing domains and their roles (docs/manufacturing.md "Roles, IDs
 * and their keys", "Domains"): setup makes a domain's M, O and B with fresh
 * keys, stored as marked, wrapped objects of the domain, and M's role
 * certificates; stations (Steel, Tin) enrol with their public keys; the
 * certificates are read back. See mfg.c for the rest of the service.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "keyfleet/ttlv.h"
#include "mfg_service.h"
#include "oak/oak.h"

#define ROLE_MARK_VENDOR "y"
#define ROLE_MARK_NAME "keyfleet-device" /* the mark objects.c refuses to serve or use */

/* Append a stored certificate (an envelope) to records. */
static int put_cert(kf_store *st, uint64_t domain_id, const char *role_id, kf_buf *records)
{
    struct kf_mfg_role_row *r = malloc(sizeof(*r));
    KF_ENSURE(r != NULL, KF_ERR_NOMEM);
    int rc = kf_store_mfg_role_get(st, domain_id, role_id, r);
    if (rc == KF_OK)
        rc = kf_buf_put_bytes(records, r->cert, r->cert_len);
    free(r);
    return rc;
}

static int put_domain_certs(kf_store *st, const struct mfg_roles *p, kf_buf *records)
{
    KF_GUARD(put_cert(st, p->domain_id, p->m_id, records));
    KF_GUARD(put_cert(st, p->domain_id, p->o_id, records));
    return put_cert(st, p->domain_id, p->b_id, records);
}

/* ---- Setup ---- */

struct setup_ctx {
    const char *actor, *domain, *country;
    uint32_t kind;
    kf_buf *records;
    struct mfg_secrets *s;
    struct mfg_roles p;
};

/* Attributes of a role key object: the server-owned mark plus Sensitive and
 * not Extractable, which say the same in KMIP's words. */
static int role_key_attributes(const char *name, kf_buf *out)
{
    kf_arena *a;
    KF_GUARD(kf_arena_new(&a, 0));
    kf_ttlv *set = kf_ttlv_struct(a, NULL, KMIP_TAG_ATTRIBUTES);
    kf_ttlv *mark = set ? kf_ttlv_struct(a, set, KMIP_TAG_ATTRIBUTE) : NULL;
    int rc = mark && kf_ttlv_add_text(a, mark, KMIP_TAG_VENDOR_IDENTIFICATION, ROLE_MARK_VENDOR) &&
                     kf_ttlv_add_text(a, mark, KMIP_TAG_ATTRIBUTE_NAME, ROLE_MARK_NAME) &&
                     kf_ttlv_add_text(a, mark, KMIP_TAG_ATTRIBUTE_VALUE, name) &&
                     kf_ttlv_add_bool(a, set, KMIP_TAG_SENSITIVE, true) &&
                     kf_ttlv_add_bool(a, set, KMIP_TAG_EXTRACTABLE, false)
                 ? KF_OK
                 : KF_ERR_NOMEM;
    if (rc == KF_OK)
        rc = kf_ttlv_encode(set, out);
    kf_arena_free(a);
    return rc;
}

/* Store one role private key as a marked object of the domain; its key ID in *key_id. */
static int store_role_key(kf_kms *kms, const struct setup_ctx *x, const char *role_id,
                          const char *use, const uint8_t key[32], uint64_t *key_id)
{
    char name[48], uid[KF_UID_MAX], dname[KF_DOMAIN_NAME_MAX + 1];
    kf_buf attrs = {0};
    snprintf(name, sizeof(name), "mfg:%s:%s", role_id, use);
    bool sign = strcmp(use, "sign") == 0, enc = strcmp(use, "enc") == 0;
    int rc = kf_buf_alloc(&attrs, 0, 4096, 0);
    if (rc == KF_OK)
        rc = role_key_attributes(name, &attrs);
    struct kf_register_spec spec = {
        .domain = x->domain,
        .object_type = sign || enc ? KF_OBJ_PRIVATE_KEY : KF_OBJ_SYMMETRIC_KEY,
        .crypto_alg = sign  ? KMIP_ALG_ED25519
                      : enc ? KMIP_ALG_EC
                            : KMIP_ALG_AES,
        .crypto_length = 256,
        .usage_mask = sign  ? KMIP_USAGE_SIGN
                      : enc ? KMIP_USAGE_KEY_AGREEMENT
                            : KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT,
        .key_format = KMIP_KEYFMT_RAW,
        .name = name,
        .attributes = attrs.data,
        .attributes_len = attrs.len,
        .state = KF_STATE_ACTIVE,
        .server_generated = true,
    };
    if (rc == KF_OK)
        rc = kms_register_in_tx(kms, x->actor, "MfgSetup (role key)", &spec, key, 32, uid);
    if (rc == KF_OK)
        rc = kf_object_uid_parse(uid, dname, key_id);
    kf_buf_free(&attrs);
    return rc;
}

/* One vendor, one earth, one postal domain per country: an earth device's
 * key moves to *the* postal domain of its country. */
struct unique_ctx {
    uint32_t kind;
    const char *country;
};

static int refuse_duplicate(void *ctx, const struct kf_mfg_domain_row *d)
{
    const struct unique_ctx *u = ctx;
    if (d->kind != u->kind)
        return KF_OK;
    if (u->kind != KF_MFG_POSTAL || strcmp(d->country, u->country) == 0)
        return KF_ERR_MFG_PARAM;
    return KF_OK;
}

static int make_domain(kf_kms *kms, const char *actor, const char *domain, struct kf_domain *d)
{
    int rc = kf_store_domain_get(kms->store, domain, d);
    if (rc != KF_ERR_DOMAIN)
        return rc;
    kf_buf wrapped = {0};
    uint64_t id;
    rc = kf_buf_alloc(&wrapped, 128, 4096, 0);
    if (rc == KF_OK)
        rc = kf_store_domain_create(kms->store, domain, NULL, NULL, 0, &id);
    if (rc == KF_OK)
        rc = kf_secmod_domain_key_new(kms->secmod, id, &wrapped);
    if (rc == KF_OK)
        rc = kf_store_domain_set_key(kms->store, id, wrapped.data, wrapped.len);
    if (rc == KF_OK)
        rc = kms_audit(kms, actor, "domain-create", domain, "", KF_OK,
                       "top-level, for manufacturing setup");
    kf_buf_free(&wrapped);
    if (rc == KF_OK)
        rc = kf_store_domain_get(kms->store, domain, d);
    return rc;
}

/* Keys of the three roles: Ed25519 seeds and X25519 scalars straight from
 * the health-tested RNG; the public halves into p. */
static int draw_role_keys(struct mfg_secrets *s, struct mfg_roles *p)
{
    KF_GUARD(kf_rng_bytes((uint8_t *)s, sizeof(*s)));
    KF_GUARD(kf_ed25519_public(s->m_sign, p->m_pub));
    KF_GUARD(kf_ed25519_public(s->o_sign, p->o_pub));
    KF_GUARD(kf_ed25519_public(s->b_sign, p->b_pub));
    return kf_x25519_public(s->b_enc, p->b_enc_pub);
}

static int insert_role(kf_kms *kms, const struct mfg_roles *p, const char *id,
                       enum kf_mfg_role_type type, const uint8_t sign_pub[32],
                       const uint8_t *enc_pub, const uint64_t key_ids[3], kf_buf *cert)
{
    struct kf_mfg_role_row *r = calloc(1, sizeof(*r));
    KF_ENSURE(r != NULL, KF_ERR_NOMEM);
    size_t at = cert->len;
    int rc = p->sec ? kf_authority_certify(p->domain, p->m_id, p->sec->m_sign, id, sign_pub,
                                           enc_pub, mfg_now(), cert)
                    : KF_ERR_INTERNAL;
    if (rc == KF_OK && cert->len - at > sizeof(r->cert))
        rc = KF_ERR_LIMIT;
    if (rc == KF_OK) {
        mfg_copy_text(r->role_id, sizeof(r->role_id), id);
        r->domain_id = p->domain_id;
        r->role_type = (uint32_t)type;
        memcpy(r->sign_pub, sign_pub, 32);
        r->has_enc = enc_pub != NULL;
        if (enc_pub)
            memcpy(r->enc_pub, enc_pub, 32);
        memcpy(r->cert, cert->data + at, cert->len - at);
        r->cert_len = cert->len - at;
        r->sign_key_id = key_ids[0];
        r->enc_key_id = key_ids[1];
        r->archive_key_id = key_ids[2];
        r->created = mfg_now();
        rc = kf_store_mfg_role_insert(kms->store, r);
    }
    free(r);
    return rc;
}

static int setup_body(kf_kms *kms, void *ctx)
{
    struct setup_ctx *x = ctx;
    struct mfg_roles *p = &x->p;
    struct kf_domain d = {0};
    struct kf_mfg_domain_row row = {0};
    struct unique_ctx u = {.kind = x->kind, .country = x->country ? x->country : ""};
    int rc = make_domain(kms, x->actor, x->domain, &d);
    if (rc == KF_OK && d.id > 99999999u)
        rc = KF_ERR_LIMIT; /* role IDs carry the domain ID in 8 digits */
    if (rc == KF_OK) {
        rc = kf_store_mfg_domain_get(kms->store, d.id, &row);
        rc = rc == KF_OK ? KF_ERR_EXISTS : rc == KF_ERR_MFG_SETUP ? KF_OK : rc;
    }
    if (rc == KF_OK)
        rc = kf_store_mfg_domain_list(kms->store, refuse_duplicate, &u);
    p->domain_id = d.id;
    mfg_copy_text(p->domain, sizeof(p->domain), x->domain);
    /* Role IDs of a domain's own roles carry its domain ID: unique server-wide. */
    if (rc == KF_OK)
        rc = kf_mfg_role_id_format(KF_MFG_ROLE_AUTHORITY, (uint32_t)d.id, p->m_id);
    if (rc == KF_OK)
        rc = kf_mfg_role_id_format(KF_MFG_ROLE_OAK, (uint32_t)d.id, p->o_id);
    if (rc == KF_OK)
        rc = kf_mfg_role_id_format(KF_MFG_ROLE_BRASS, (uint32_t)d.id, p->b_id);
    if (rc == KF_OK)
        rc = draw_role_keys(x->s, p);
    const uint8_t *keys[5] = {x->s->m_sign, x->s->o_sign, x->s->b_sign, x->s->b_enc,
                              x->s->b_archive};
    const char *ids[5] = {p->m_id, p->o_id, p->b_id, p->b_id, p->b_id};
    static const char *const uses[5] = {"sign", "sign", "sign", "enc", "archive"};
    for (int i = 0; i < 5 && rc == KF_OK; i++)
        rc = store_role_key(kms, x, ids[i], uses[i], keys[i], &p->key_ids[i]);
    if (rc == KF_OK) {
        row.domain_id = d.id;
        row.kind = x->kind;
        mfg_copy_text(row.country, sizeof(row.country), u.country);
        mfg_copy_text(row.authority_id, sizeof(row.authority_id), p->m_id);
        mfg_copy_text(row.oak_id, sizeof(row.oak_id), p->o_id);
        mfg_copy_text(row.brass_id, sizeof(row.brass_id), p->b_id);
        row.created = mfg_now();
        rc = kf_store_mfg_domain_insert(kms->store, &row);
    }
    p->sec = x->s; /* for M's signature on the certificates below */
    const uint64_t m_keys[3] = {p->key_ids[0], 0, 0}, o_keys[3] = {p->key_ids[1], 0, 0},
                   b_keys[3] = {p->key_ids[2], p->key_ids[3], p->key_ids[4]};
    if (rc == KF_OK)
        rc =
            insert_role(kms, p, p->m_id, KF_MFG_ROLE_AUTHORITY, p->m_pub, NULL, m_keys, x->records);
    if (rc == KF_OK)
        rc = insert_role(kms, p, p->o_id, KF_MFG_ROLE_OAK, p->o_pub, NULL, o_keys, x->records);
    if (rc == KF_OK)
        rc = insert_role(kms, p, p->b_id, KF_MFG_ROLE_BRASS, p->b_pub, p->b_enc_pub, b_keys,
                         x->records);
    p->sec = NULL;
    if (rc == KF_OK) {
        static const char *const kinds[] = {"?", "vendor", "postal", "earth"};
        char detail[160];
        snprintf(detail, sizeof(detail), "kind %s%s%s, M %s O %s B %s", kinds[x->kind],
                 u.country[0] ? " country " : "", u.country, p->m_id, p->o_id, p->b_id);
        rc = kms_audit(kms, x->actor, "MfgSetup", x->domain, p->m_id, KF_OK, detail);
    }
    kf_domain_clear(&d);
    return rc;
}

int kf_kms_mfg_setup(kf_kms *kms, const char *actor, const char *domain, uint32_t kind,
                     const char *country, kf_buf *records)
{
    KF_ENSURE(kms && actor && records, KF_ERR_ARG);
    struct setup_ctx x = {
        .actor = actor, .domain = domain, .kind = kind, .country = country, .records = records};
    size_t at = records->len;
    int rc = domain && kf_domain_name_valid(domain) ? KF_OK : KF_ERR_MFG_PARAM;
    if (rc == KF_OK && (kind < KF_MFG_VENDOR || kind > KF_MFG_EARTH))
        rc = KF_ERR_MFG_PARAM;
    if (rc == KF_OK && kind == KF_MFG_POSTAL && !(country && kf_mfg_country_valid(country)))
        rc = KF_ERR_MFG_COUNTRY;
    if (rc == KF_OK && kind != KF_MFG_POSTAL && country && country[0])
        rc = KF_ERR_MFG_COUNTRY; /* vendor and earth domains have no country */
    if (rc == KF_OK && !(x.s = kf_secmem_alloc(sizeof(*x.s))))
        rc = KF_ERR_NOMEM;
    mfg_lock(kms);
    if (rc == KF_OK)
        rc = mfg_in_tx(kms, setup_body, &x);
    if (rc < 0) {
        records->len = at;
        kms_audit_refusal(kms, actor, "MfgSetup", mfg_shown_domain(domain), "", rc, NULL);
    }
    mfg_unlock(kms);
    kf_secmem_free(x.s); /* the keys are in the store, wrapped; loaded again on first use */
    return rc;
}

/* ---- Role certificates and enrolment ---- */

struct certs_ctx {
    kf_buf *records;
    int rc;
};

static int put_station_cert(void *ctx, const struct kf_mfg_role_row *r)
{
    struct certs_ctx *c = ctx;
    if (r->role_type != KF_MFG_ROLE_STEEL && r->role_type != KF_MFG_ROLE_TIN)
        return KF_OK;
    return kf_buf_put_bytes(c->records, r->cert, r->cert_len);
}

int kf_kms_mfg_role_certs(kf_kms *kms, const char *actor, const char *domain, kf_buf *records)
{
    KF_ENSURE(kms && actor && records, KF_ERR_ARG);
    struct kf_domain d = {0};
    struct mfg_roles p;
    struct kms_read r;
    struct certs_ctx c = {.records = records};
    size_t at = records->len;
    kms_read_begin(kms, &r);
    int rc = mfg_domain_public(r.st, domain, &d, &p);
    if (rc == KF_OK)
        rc = put_domain_certs(r.st, &p, records);
    if (rc == KF_OK)
        rc = kf_store_mfg_role_list(r.st, d.id, put_station_cert, &c);
    kms_read_end(kms, &r);
    kf_domain_clear(&d);
    if (rc < 0)
        records->len = at;
    int arc = mfg_audit_read(kms, actor, "MfgRoleCerts", domain, "", rc, NULL);
    if (rc == KF_OK && arc < 0) {
        records->len = at; /* never release an unaudited answer */
        rc = arc;
    }
    return rc;
}

struct enroll_ctx {
    const char *actor, *domain, *role_id;
    const uint8_t *sign_pub, *enc_pub;
    kf_buf *records;
};

static int enroll_body(kf_kms *kms, void *ctx)
{
    struct enroll_ctx *x = ctx;
    struct kf_domain d = {0};
    struct mfg_roles *p;
    enum kf_mfg_role_type t;
    int rc = mfg_domain_loaded(kms, x->domain, &d, &p);
    kf_domain_clear(&d);
    KF_GUARD(rc);
    (void)kf_mfg_role_id_parse(x->role_id, &t);
    const uint64_t none[3] = {0, 0, 0};
    KF_GUARD(insert_role(kms, p, x->role_id, t, x->sign_pub, x->enc_pub, none, x->records));
    KF_GUARD(put_domain_certs(kms->store, p, x->records));
    return kms_audit(kms, x->actor, "MfgRoleEnroll", x->domain, x->role_id, KF_OK,
                     t == KF_MFG_ROLE_STEEL ? "installation station (Steel)"
                                            : "remote verifier (Tin)");
}

int kf_kms_mfg_enroll(kf_kms *kms, const char *actor, const char *domain, const char *role_id,
                      const uint8_t sign_pub[32], const uint8_t enc_pub[32], kf_buf *records)
{
    KF_ENSURE(kms && actor && records, KF_ERR_ARG);
    struct enroll_ctx x = {.actor = actor,
                           .domain = domain,
                           .role_id = role_id,
                           .sign_pub = sign_pub,
                           .enc_pub = enc_pub,
                           .records = records};
    enum kf_mfg_role_type t;
    size_t at = records->len;
    int rc = domain && kf_domain_name_valid(domain) ? KF_OK : KF_ERR_MFG_PARAM;
    /* Only stations enrol; M, O and B are made by setup. */
    if (rc == KF_OK && !(role_id && kf_mfg_role_id_parse(role_id, &t) &&
                         (t == KF_MFG_ROLE_STEEL || t == KF_MFG_ROLE_TIN)))
        rc = KF_ERR_MFG_ROLE;
    if (rc == KF_OK && (!sign_pub || !enc_pub))
        rc = KF_ERR_MFG_PARAM;
    mfg_lock(kms);
    if (rc == KF_OK)
        rc = mfg_in_tx(kms, enroll_body, &x);
    if (rc < 0) {
        records->len = at;
        kms_audit_refusal(kms, actor, "MfgRoleEnroll", mfg_shown_domain(domain),
                          mfg_shown_role(role_id), rc, NULL);
    }
    mfg_unlock(kms);
    return rc;
}
