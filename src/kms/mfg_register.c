/*
 * Registration (docs/manufacturing.md "Registration", seed Fig. 31 MR1-MR4):
 * each domain key a device's MR1 names is registered by its domain's Brass,
 * all of them or none in one transaction; an earth device's key moves to its
 * country's postal domain under a new key ID there (seed Fig. 13) and never
 * returns. See mfg.c for the rest of the service.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/secmem.h"
#include "mfg_service.h"

/* ---- MR1 -> MR2..MR4: register a device ---- */

struct country_ctx {
    const char *country;
    uint64_t domain_id;
};

static int match_country(void *ctx, const struct kf_mfg_domain_row *d)
{
    struct country_ctx *c = ctx;
    if (d->kind != KF_MFG_POSTAL || strcmp(d->country, c->country) != 0)
        return KF_OK;
    c->domain_id = d->domain_id;
    return 1;
}

static int country_domain(kf_store *st, const char *country, struct kf_domain *d)
{
    struct country_ctx c = {.country = country};
    KF_ENSURE(country && kf_mfg_country_valid(country), KF_ERR_MFG_COUNTRY);
    KF_GUARD(kf_store_mfg_domain_list(st, match_country, &c));
    KF_ENSURE(c.domain_id != 0, KF_ERR_MFG_COUNTRY);
    return kf_store_domain_get_by_id(st, c.domain_id, d);
}

int kms_mfg_country_domain(kf_kms *kms, const char *country, char domain[KF_MFG_DOMAIN_MAX + 1])
{
    KF_ENSURE(kms && domain, KF_ERR_ARG);
    struct kf_domain d = {0};
    struct kms_read r;
    kms_read_begin(kms, &r);
    int rc = country_domain(r.st, country, &d);
    kms_read_end(kms, &r);
    if (rc == KF_OK)
        mfg_copy_text(domain, KF_MFG_DOMAIN_MAX + 1, d.name);
    kf_domain_clear(&d);
    return rc;
}

struct register_ctx {
    const char *actor;
    struct kfd_registration r;
    kf_buf *records;
    size_t mac; /* the MAC being handled (for the refusal's audit) */
    int64_t now;
    struct kf_mfg_key_row k, moved;
    struct kf_mfg_role_row cert;
    /* Domains whose token caches forget the device after the commit. */
    char touched[2 * KFD_METER_DOMAINS][KF_DOMAIN_NAME_MAX + 1];
    size_t ntouched;
};

static void touch(struct register_ctx *x, const char *domain)
{
    if (x->ntouched < sizeof(x->touched) / sizeof(x->touched[0]))
        mfg_copy_text(x->touched[x->ntouched++], KF_DOMAIN_NAME_MAX + 1, domain);
}

/* May this key be registered now, to this country? */
static int registrable(const struct register_ctx *x, const struct mfg_roles *p,
                       const struct kf_mfg_key_row *k)
{
    const struct kfd_registration *r = &x->r;
    KF_ENSURE(strcmp(k->msn, r->msn) == 0, KF_ERR_MFG_UNKNOWN);
    /* Registered once; never to another country. */
    if (k->status == KF_MFG_ACTIVE || k->status == KF_MFG_TRANSFERRED)
        return strcmp(k->country, r->country) != 0 ? KF_ERR_MFG_COUNTRY : KF_ERR_MFG_STATUS;
    KF_ENSURE(k->status == KF_MFG_INSTALLED, KF_ERR_MFG_STATUS);
    KF_ENSURE(p->kind != KF_MFG_POSTAL || strcmp(p->country, r->country) == 0, KF_ERR_MFG_COUNTRY);
    KF_ENSURE(r->date >= mfg_last_event(k), KF_ERR_MFG_TIME);
    return KF_OK;
}

static int audit_registered(kf_kms *kms, const struct register_ctx *x, const char *domain,
                            uint64_t key_id, const char *how)
{
    char detail[192];
    snprintf(detail, sizeof(detail), "key %llu Active, indicia %s country %s%s",
             (unsigned long long)key_id, x->r.indicia, x->r.country, how);
    return kms_audit(kms, x->actor, "MfgRegister", domain, x->r.msn, KF_OK, detail);
}

/* Vendor or postal domain: its own Brass registers the key. */
static int register_here(kf_kms *kms, struct register_ctx *x, const struct mfg_roles *p)
{
    struct kf_mfg_key_row *k = &x->k;
    struct kf_brass b;
    kf_buf mr3;
    mfg_brass_of(p, &b);
    /* MR3 is made in the spare record buffer, then replaces MI9. */
    kf_buf_fixed(&mr3, x->moved.record, sizeof(x->moved.record));
    KF_GUARD(
        kf_brass_register(&b, k->record, k->record_len, &x->r, x->mac, x->now, &mr3, x->records));
    memcpy(k->record, x->moved.record, mr3.len);
    k->record_len = mr3.len;
    k->status = KF_MFG_ACTIVE;
    mfg_copy_text(k->indicia, sizeof(k->indicia), x->r.indicia);
    mfg_copy_text(k->country, sizeof(k->country), x->r.country);
    k->t_register = x->r.date;
    k->t_register_verify = x->now;
    KF_GUARD(kf_store_mfg_key_update(kms->store, k));
    touch(x, p->domain);
    return audit_registered(kms, x, p->domain, k->key_id, "");
}

/* The cached entry of a domain already loaded (under mfg->lock). */
static struct mfg_roles *roles_cached(kf_kms *kms, uint64_t domain_id)
{
    for (size_t i = 0; i < kms->mfg->n; i++)
        if (kms->mfg->entry[i].domain_id == domain_id)
            return &kms->mfg->entry[i];
    return NULL;
}

/* The earth record moves: a new Active row in the country's domain (n), and
 * earth's row (k) Transferred with the Transfer as its record. */
static int store_moved(kf_kms *kms, struct register_ctx *x, uint64_t country_id)
{
    struct kf_mfg_key_row *k = &x->k, *n = &x->moved;
    n->domain_id = country_id;
    mfg_copy_text(n->steel_id, sizeof(n->steel_id), k->steel_id);
    n->status = KF_MFG_ACTIVE;
    mfg_copy_text(n->msn, sizeof(n->msn), x->r.msn);
    mfg_copy_text(n->indicia, sizeof(n->indicia), x->r.indicia);
    mfg_copy_text(n->country, sizeof(n->country), x->r.country);
    n->t_request = k->t_request;
    n->t_install = k->t_install;
    n->t_install_verify = k->t_install_verify;
    n->t_register = x->r.date;
    n->t_register_verify = x->now;
    KF_GUARD(kf_store_mfg_key_insert(kms->store, n));
    memcpy(k->record, n->mi3, n->mi3_len);
    k->record_len = n->mi3_len;
    k->status = KF_MFG_TRANSFERRED;
    mfg_copy_text(k->indicia, sizeof(k->indicia), x->r.indicia);
    mfg_copy_text(k->country, sizeof(k->country), x->r.country);
    k->t_register = x->r.date;
    k->t_register_verify = x->now;
    k->moved_domain_id = country_id;
    k->moved_key_id = n->key_id;
    return kf_store_mfg_key_update(kms->store, k);
}

/* Earth domain: earth's Brass hands the key to the country's Brass, which
 * registers it under a new key ID of its domain; earth's copy is final. */
static int register_moved(kf_kms *kms, struct register_ctx *x, uint64_t earth_id)
{
    struct kf_domain cd = {0};
    struct mfg_roles *c, *earth;
    struct kf_mfg_key_row *k = &x->k, *n = &x->moved;
    struct kf_brass eb, cb;
    kf_buf transfer, mr3;
    int rc = country_domain(kms->store, x->r.country, &cd);
    /* Loading the country's roles may move the cache's entries: look earth up after. */
    if (rc == KF_OK)
        rc = mfg_roles_loaded(kms, kms->store, &cd, &c);
    kf_domain_clear(&cd);
    KF_GUARD(rc);
    earth = roles_cached(kms, earth_id);
    KF_ENSURE(earth != NULL, KF_ERR_INTERNAL);
    mfg_brass_of(earth, &eb);
    mfg_brass_of(c, &cb);
    memset(n, 0, sizeof(*n));
    kf_buf_fixed(&transfer, n->mi3, sizeof(n->mi3));
    KF_GUARD(kf_brass_transfer_out(&eb, k->record, k->record_len, &x->r, x->mac, c->b_id,
                                   c->b_enc_pub, x->now, &transfer));
    n->mi3_len = transfer.len;
    /* The country checks earth's record against earth's certificates only. */
    KF_GUARD(kf_store_mfg_role_get(kms->store, earth_id, earth->b_id, &x->cert));
    KF_GUARD(kf_store_mfg_next_key_id(kms->store, c->domain_id, &n->key_id));
    kf_buf_fixed(&mr3, n->record, sizeof(n->record));
    KF_GUARD(kf_brass_transfer_in(&cb, n->mi3, n->mi3_len, earth->m_pub,
                                  (struct kf_brass_cert){x->cert.cert, x->cert.cert_len}, &x->r,
                                  x->mac, n->key_id, x->now, &mr3, x->records));
    n->record_len = mr3.len;
    KF_GUARD(store_moved(kms, x, c->domain_id));
    touch(x, earth->domain);
    touch(x, c->domain);
    char how[128];
    snprintf(how, sizeof(how), ", moved from %s key %llu", earth->domain,
             (unsigned long long)k->key_id);
    KF_GUARD(audit_registered(kms, x, c->domain, n->key_id, how));
    char detail[160];
    snprintf(detail, sizeof(detail), "key %llu Transferred to %s key %llu",
             (unsigned long long)k->key_id, c->domain, (unsigned long long)n->key_id);
    return kms_audit(kms, x->actor, "MfgTransfer", earth->domain, x->r.msn, KF_OK, detail);
}

static int register_one(kf_kms *kms, struct register_ctx *x)
{
    struct kf_domain d = {0};
    struct mfg_roles *p;
    struct kf_mfg_record rec;
    const char *domain = x->r.mac[x->mac].domain;
    int rc = mfg_domain_loaded(kms, domain, &d, &p);
    kf_domain_clear(&d);
    KF_GUARD(rc);
    KF_GUARD(kf_store_mfg_key_get(kms->store, p->domain_id, x->r.mac[x->mac].key_id, &x->k));
    KF_GUARD(mfg_archive_check(p, &x->k, &rec));
    KF_GUARD(registrable(x, p, &x->k));
    return p->kind == KF_MFG_EARTH ? register_moved(kms, x, p->domain_id)
                                   : register_here(kms, x, p);
}

static int register_body(kf_kms *kms, void *ctx)
{
    struct register_ctx *x = ctx;
    x->ntouched = 0;
    /* All the device's domains or none: one transaction. */
    for (x->mac = 0; x->mac < x->r.nmacs; x->mac++)
        KF_GUARD(register_one(kms, x));
    return KF_OK;
}

int kf_kms_mfg_register(kf_kms *kms, const char *actor, const uint8_t *mr1, size_t len,
                        kf_buf *records)
{
    KF_ENSURE(kms && actor && records, KF_ERR_ARG);
    struct register_ctx *x = calloc(1, sizeof(*x));
    KF_ENSURE(x != NULL, KF_ERR_NOMEM);
    x->actor = actor;
    x->records = records;
    x->now = mfg_now();
    size_t at = records->len;
    int rc = mr1 && len ? kfd_registration_decode(mr1, len, &x->r) : KF_ERR_MFG_FRAMING;
    if (rc < 0) {
        memset(&x->r, 0, sizeof(x->r));
        rc = rc == KF_ERR_NOMEM ? rc : KF_ERR_MFG_FRAMING;
    }
    if (rc == KF_OK && (x->r.nmacs == 0 || x->r.nmacs > KFD_METER_DOMAINS ||
                        !kf_mfg_msn_valid(x->r.msn) || !kf_mfg_indicia_valid(x->r.indicia)))
        rc = KF_ERR_MFG_FRAMING;
    if (rc == KF_OK && !kf_mfg_country_valid(x->r.country))
        rc = KF_ERR_MFG_COUNTRY;
    mfg_lock(kms);
    if (rc == KF_OK)
        rc = mfg_in_tx(kms, register_body, x);
    if (rc < 0) {
        records->len = at;
        const char *domain = x->mac < x->r.nmacs ? x->r.mac[x->mac].domain : "";
        char detail[96];
        snprintf(detail, sizeof(detail), "country %s, %zu domain MAC(s)",
                 kf_mfg_country_valid(x->r.country) ? x->r.country : "-", x->r.nmacs);
        kms_audit_refusal(kms, actor, "MfgRegister", mfg_shown_domain(domain),
                          kf_mfg_msn_valid(x->r.msn) ? x->r.msn : "", rc, detail);
    }
    mfg_unlock(kms);
    if (rc == KF_OK)
        for (size_t i = 0; i < x->ntouched; i++)
            kms_tokens_forget(kms, x->touched[i], x->r.msn);
    free(x);
    return rc;
}
