/*
 * The manufacturing service (seed EP 0 735 720, DESIGN §4.2,
 * docs/manufacturing.md), over the roles in src/oak and src/brass and the
 * archive in src/store/mfg.c. This file: the role key cache, the archive
 * check, key installation (MI0-MI10), retirement, status and what the token
 * verifier needs; mfg_setup.c: domain setup, enrolment and certificates;
 * mfg_register.c: registration (MR1-MR4) with the earth transfer.
 *
 * Keys. The private keys of a domain's M, O and B are ordinary managed
 * objects of the domain (names mfg:<role id>:sign|enc|archive), wrapped
 * under the domain key and carrying the server-owned mark that objects.c
 * refuses every KMIP Get, Export, use and replacement of (the same mark a
 * device MKEK carries, kms_object_device_bound). They are unwrapped once
 * into secure memory (struct kms_mfg, one entry per domain) and wiped on
 * seal. A device master key K never exists here outside Oak's and Brass's
 * calls.
 *
 * Every state change is one transaction with its audit record; every
 * refusal is audited in its own. Every archive record is signature-checked
 * when read, before anything is decided on it (KF_ERR_MFG_ARCHIVE).
 * Locks: kms->lock (the writer) before mfg->lock (the key cache), never the
 * other way round.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "keyfleet/ttlv.h"
#include "mfg_service.h"
#include "oak/oak.h"

int64_t mfg_now(void)
{
    return (int64_t)time(NULL);
}

void mfg_copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- The role key cache ---- */

int kms_mfg_open(kf_kms *kms)
{
    struct kms_mfg *m = calloc(1, sizeof(*m));
    KF_ENSURE(m != NULL, KF_ERR_NOMEM);
    pthread_mutex_init(&m->lock, NULL);
    kms->mfg = m;
    return KF_OK;
}

void kms_mfg_wipe(kf_kms *kms)
{
    struct kms_mfg *m = kms ? kms->mfg : NULL;
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n; i++)
        kf_secmem_free(m->entry[i].sec); /* wipes */
    m->n = 0;
    pthread_mutex_unlock(&m->lock);
}

void kms_mfg_close(kf_kms *kms)
{
    if (!kms || !kms->mfg)
        return;
    kms_mfg_wipe(kms);
    pthread_mutex_destroy(&kms->mfg->lock);
    free(kms->mfg->entry);
    free(kms->mfg);
    kms->mfg = NULL;
}

/* The public half of a domain's roles, from the store (no secrets). */
static int load_public(kf_store *st, const struct kf_domain *d, struct mfg_roles *p)
{
    struct kf_mfg_domain_row row;
    struct kf_mfg_role_row *r = malloc(sizeof(*r));
    KF_ENSURE(r != NULL, KF_ERR_NOMEM);
    memset(p, 0, sizeof(*p));
    int rc = kf_store_mfg_domain_get(st, d->id, &row);
    if (rc == KF_OK) {
        p->domain_id = d->id;
        mfg_copy_text(p->domain, sizeof(p->domain), d->name);
        p->kind = row.kind;
        mfg_copy_text(p->country, sizeof(p->country), row.country);
        mfg_copy_text(p->m_id, sizeof(p->m_id), row.authority_id);
        mfg_copy_text(p->o_id, sizeof(p->o_id), row.oak_id);
        mfg_copy_text(p->b_id, sizeof(p->b_id), row.brass_id);
        rc = kf_store_mfg_role_get(st, d->id, row.authority_id, r);
    }
    if (rc == KF_OK) {
        memcpy(p->m_pub, r->sign_pub, 32);
        p->key_ids[0] = r->sign_key_id;
        rc = kf_store_mfg_role_get(st, d->id, row.oak_id, r);
    }
    if (rc == KF_OK) {
        memcpy(p->o_pub, r->sign_pub, 32);
        p->key_ids[1] = r->sign_key_id;
        rc = kf_store_mfg_role_get(st, d->id, row.brass_id, r);
    }
    if (rc == KF_OK) {
        memcpy(p->b_pub, r->sign_pub, 32);
        memcpy(p->b_enc_pub, r->enc_pub, 32);
        p->key_ids[2] = r->sign_key_id;
        p->key_ids[3] = r->enc_key_id;
        p->key_ids[4] = r->archive_key_id;
        if (!r->has_enc)
            rc = KF_ERR_MFG_ROLE;
    }
    free(r);
    /* A role of the domain's own three missing means the setup is broken. */
    return rc == KF_ERR_MFG_ROLE ? KF_ERR_MFG_SETUP : rc;
}

/* Unwrap one role key object (name and mark checked) into out. */
static int unwrap_role_key(kf_kms *kms, kf_store *st, const struct kf_domain *d, uint64_t key_id,
                           const char *name, uint8_t out[32])
{
    struct kf_object obj = {0};
    kf_buf secret = {0};
    kf_domain_handle h;
    int rc = kf_store_object_get(st, d->id, key_id, &obj);
    if (rc == KF_OK && (strcmp(obj.name, name) != 0 || !kms_object_device_bound(&obj)))
        rc = KF_ERR_MFG_SETUP;
    if (rc == KF_OK && (!obj.material || obj.state == KF_STATE_DESTROYED ||
                        obj.state == KF_STATE_DESTROYED_COMPROMISED))
        rc = KF_ERR_STATE;
    if (rc == KF_OK)
        rc = kms_domain_handle(kms, d, &h);
    if (rc == KF_OK)
        rc = kf_buf_alloc(&secret, 32, 64, KF_BUF_SECRET);
    if (rc == KF_OK)
        rc = kf_secmod_unwrap(kms->secmod, h, obj.key_id, d->id, obj.version, obj.material,
                              obj.material_len, &secret);
    if (rc == KF_OK && secret.len != 32)
        rc = KF_ERR_INTERNAL;
    if (rc == KF_OK)
        memcpy(out, secret.data, 32);
    kf_buf_free(&secret);
    kf_object_clear(&obj);
    return rc;
}

/* The private keys must be the halves of the certified public keys. */
static int check_pairs(const struct mfg_roles *p, const struct mfg_secrets *s)
{
    uint8_t pub[32];
    int rc = kf_ed25519_public(s->m_sign, pub);
    bool ok = rc == KF_OK && kf_ct_equal(pub, p->m_pub, 32);
    ok = ok && kf_ed25519_public(s->o_sign, pub) == KF_OK && kf_ct_equal(pub, p->o_pub, 32);
    ok = ok && kf_ed25519_public(s->b_sign, pub) == KF_OK && kf_ct_equal(pub, p->b_pub, 32);
    ok = ok && kf_x25519_public(s->b_enc, pub) == KF_OK && kf_ct_equal(pub, p->b_enc_pub, 32);
    return ok ? KF_OK : KF_ERR_MFG_SETUP;
}

static int load_secrets(kf_kms *kms, kf_store *st, const struct kf_domain *d, struct mfg_roles *p)
{
    struct mfg_secrets *s = kf_secmem_alloc(sizeof(*s));
    KF_ENSURE(s != NULL, KF_ERR_NOMEM);
    uint8_t *keys[5] = {s->m_sign, s->o_sign, s->b_sign, s->b_enc, s->b_archive};
    const char *ids[5] = {p->m_id, p->o_id, p->b_id, p->b_id, p->b_id};
    static const char *const uses[5] = {"sign", "sign", "sign", "enc", "archive"};
    int rc = KF_OK;
    for (int i = 0; i < 5 && rc == KF_OK; i++) {
        char name[48];
        snprintf(name, sizeof(name), "mfg:%s:%s", ids[i], uses[i]);
        rc = unwrap_role_key(kms, st, d, p->key_ids[i], name, keys[i]);
    }
    if (rc == KF_OK)
        rc = check_pairs(p, s);
    if (rc < 0) {
        kf_secmem_free(s);
        return rc;
    }
    p->sec = s;
    return KF_OK;
}

/* The domain's roles with their private keys, loading them on first use.
 * Under mfg->lock; the entry is valid until it is released. */
int mfg_roles_loaded(kf_kms *kms, kf_store *st, const struct kf_domain *d, struct mfg_roles **out)
{
    struct kms_mfg *m = kms->mfg;
    KF_ENSURE(m != NULL, KF_ERR_STATE);
    KF_ENSURE(!kf_secmod_sealed(kms->secmod), KF_ERR_SEALED);
    for (size_t i = 0; i < m->n; i++)
        if (m->entry[i].domain_id == d->id) {
            *out = &m->entry[i];
            return KF_OK;
        }
    struct mfg_roles p;
    KF_GUARD(load_public(st, d, &p));
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        struct mfg_roles *e = realloc(m->entry, cap * sizeof(*e));
        KF_ENSURE(e != NULL, KF_ERR_NOMEM);
        m->entry = e;
        m->cap = cap;
    }
    KF_GUARD(load_secrets(kms, st, d, &p));
    m->entry[m->n] = p;
    *out = &m->entry[m->n++];
    return KF_OK;
}

void mfg_brass_of(const struct mfg_roles *p, struct kf_brass *b)
{
    b->domain = p->domain;
    b->id = p->b_id;
    b->sign_priv = p->sec->b_sign;
    b->sign_pub = p->b_pub;
    b->enc_priv = p->sec->b_enc;
    b->archive_key = p->sec->b_archive;
    b->authority_pub = p->m_pub;
}

/* ---- Archive records ---- */

/* Does a record of this type fit a row of this status? */
static bool type_fits_status(uint32_t type, uint32_t status)
{
    switch (type) {
    case KF_MFG_REC_ARCHIVE_NEW:
        return status == KF_MFG_NEW || status == KF_MFG_BAD;
    case KF_MFG_REC_ARCHIVE_INSTALLED:
        return status == KF_MFG_INSTALLED || status == KF_MFG_BAD || status == KF_MFG_OBSOLETE;
    case KF_MFG_REC_ARCHIVE_REGISTERED:
        return status == KF_MFG_ACTIVE || status == KF_MFG_OBSOLETE;
    case KF_MFG_REC_TRANSFER:
        return status == KF_MFG_TRANSFERRED;
    default:
        return false;
    }
}

/* The row's current record: signed by the domain's Oak (ArchiveNew) or Brass
 * (the others), of this domain and key ID, and agreeing with the row's
 * status, Steel and MSN. Anything else: the archive was modified. */
int mfg_archive_check(const struct mfg_roles *p, const struct kf_mfg_key_row *k,
                      struct kf_mfg_record *rec)
{
    struct kf_mfg_envelope env;
    size_t used;
    if (kf_mfg_envelope_parse(k->record, k->record_len, &env, &used) != KF_OK ||
        used != k->record_len)
        return KF_ERR_MFG_ARCHIVE;
    bool by_oak = env.type == KF_MFG_REC_ARCHIVE_NEW;
    if (strcmp(env.signer, by_oak ? p->o_id : p->b_id) != 0 ||
        kf_mfg_record_open(k->record, k->record_len, by_oak ? p->o_pub : p->b_pub, env.type, rec) !=
            KF_OK)
        return KF_ERR_MFG_ARCHIVE;
    if (strcmp(rec->domain, p->domain) != 0 || rec->key_id != k->key_id ||
        !type_fits_status(env.type, k->status))
        return KF_ERR_MFG_ARCHIVE;
    if ((rec->fields & KF_MFG_F_STEEL_ID) && strcmp(rec->steel_id, k->steel_id) != 0)
        return KF_ERR_MFG_ARCHIVE;
    if ((rec->fields & KF_MFG_F_MSN) && strcmp(rec->msn, k->msn) != 0)
        return KF_ERR_MFG_ARCHIVE;
    return KF_OK;
}

/* ---- Helpers shared by the operations ---- */

/* Domain row and the public half of its roles, on connection st. */
int mfg_domain_public(kf_store *st, const char *domain, struct kf_domain *d, struct mfg_roles *p)
{
    KF_ENSURE(domain && kf_domain_name_valid(domain), KF_ERR_MFG_PARAM);
    int rc = kf_store_domain_get(st, domain, d);
    KF_ENSURE(rc != KF_ERR_DOMAIN, KF_ERR_MFG_SETUP);
    KF_GUARD(rc);
    return load_public(st, d, p);
}

/* Domain row and its roles with private keys: writer, under both locks. */
int mfg_domain_loaded(kf_kms *kms, const char *domain, struct kf_domain *d, struct mfg_roles **p)
{
    KF_ENSURE(domain && kf_domain_name_valid(domain), KF_ERR_MFG_PARAM);
    int rc = kf_store_domain_get(kms->store, domain, d);
    KF_ENSURE(rc != KF_ERR_DOMAIN, KF_ERR_MFG_SETUP);
    KF_GUARD(rc);
    return mfg_roles_loaded(kms, kms->store, d, p);
}

void mfg_lock(kf_kms *kms)
{
    pthread_mutex_lock(&kms->lock);
    pthread_mutex_lock(&kms->mfg->lock);
}

void mfg_unlock(kf_kms *kms)
{
    pthread_mutex_unlock(&kms->mfg->lock);
    pthread_mutex_unlock(&kms->lock);
}

/* Run body in a transaction under both locks; commit if it succeeds. */
int mfg_in_tx(kf_kms *kms, int (*body)(kf_kms *kms, void *ctx), void *ctx)
{
    KF_ENSURE(!kf_secmod_sealed(kms->secmod), KF_ERR_SEALED);
    KF_GUARD(kf_store_begin(kms->store));
    int rc = body(kms, ctx);
    if (rc == KF_OK)
        rc = kf_store_commit(kms->store);
    if (rc < 0)
        kf_store_rollback(kms->store);
    return rc;
}

const char *mfg_shown_domain(const char *domain)
{
    return domain && kf_domain_name_valid(domain) ? domain : "";
}

const char *mfg_shown_role(const char *id)
{
    return id && kf_mfg_role_id_parse(id, NULL) ? id : "";
}

static const char *status_name(uint32_t s)
{
    static const char *const names[] = {"?",      "New",      "Installed",  "Bad",
                                        "Active", "Obsolete", "Transferred"};
    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

static void key_object(char out[32], uint64_t key_id)
{
    snprintf(out, 32, "mfg:%llu", (unsigned long long)key_id);
}

int mfg_audit_read(kf_kms *kms, const char *actor, const char *op, const char *domain,
                   const char *object, int rc, const char *detail)
{
    struct kf_audit_event ev = {
        .actor = actor,
        .operation = op,
        .domain = mfg_shown_domain(domain),
        .object = object ? object : "",
        .result = rc == KF_OK ? "ok" : kf_errname(rc),
        .detail = detail ? detail : "",
    };
    return kms_audit_group(kms, &ev);
}

/* ---- MI0..MI4: request a key ---- */

/* A station of type want enrolled in the domain, or KF_ERR_MFG_ROLE. */
static int station(kf_store *st, uint64_t domain_id, const char *id, enum kf_mfg_role_type want,
                   struct kf_mfg_role_row *out)
{
    enum kf_mfg_role_type t;
    KF_ENSURE(id && kf_mfg_role_id_parse(id, &t) && t == want, KF_ERR_MFG_ROLE);
    KF_GUARD(kf_store_mfg_role_get(st, domain_id, id, out));
    KF_ENSURE(out->role_type == (uint32_t)want && out->has_enc, KF_ERR_MFG_ROLE);
    return KF_OK;
}

struct request_ctx {
    const char *actor, *domain, *steel_id;
    kf_buf *records;
    struct kf_mfg_role_row steel;
    struct kf_mfg_key_row k;
};

/* One open key per (domain, Steel): an earlier key still New was lost. */
static int burn_lost(kf_kms *kms, struct request_ctx *x, const struct mfg_roles *p)
{
    struct kf_mfg_key_row *old = &x->k;
    struct kf_mfg_record rec;
    int rc = kf_store_mfg_key_open_for_steel(kms->store, p->domain_id, x->steel_id, old);
    if (rc == KF_ERR_NOT_FOUND)
        return KF_OK;
    KF_GUARD(rc);
    KF_GUARD(mfg_archive_check(p, old, &rec));
    old->status = KF_MFG_BAD;
    old->reason = KF_ERR_MFG_LOST;
    KF_GUARD(kf_store_mfg_key_update(kms->store, old));
    char object[32];
    key_object(object, old->key_id);
    return kms_audit(kms, x->actor, "MfgKeyLost", x->domain, object, KF_OK,
                     "status Bad reason KF_ERR_MFG_LOST: the Steel asked for another key");
}

static int request_body(kf_kms *kms, void *ctx)
{
    struct request_ctx *x = ctx;
    struct kf_domain d = {0};
    struct kf_mfg_domain_row row;
    struct mfg_roles *p;
    int rc = mfg_domain_loaded(kms, x->domain, &d, &p);
    kf_domain_clear(&d);
    KF_GUARD(rc);
    KF_GUARD(station(kms->store, p->domain_id, x->steel_id, KF_MFG_ROLE_STEEL, &x->steel));
    KF_GUARD(burn_lost(kms, x, p));
    /* MI0': the archive assigns the key ID; MI1: Oak refuses one it saw before. */
    uint64_t key_id;
    KF_GUARD(kf_store_mfg_next_key_id(kms->store, p->domain_id, &key_id));
    KF_GUARD(kf_store_mfg_domain_get(kms->store, p->domain_id, &row));
    struct kf_mfg_key_row *k = &x->k;
    kf_buf mi3;
    int64_t now = mfg_now();
    struct kf_oak_request req = {
        .domain = p->domain,
        .oak_id = p->o_id,
        .sign_priv = p->sec->o_sign,
        .steel_id = x->steel_id,
        .steel_enc_pub = x->steel.enc_pub,
        .brass_id = p->b_id,
        .brass_enc_pub = p->b_enc_pub,
        .key_id = key_id,
        .last_seen = row.oak_last_key_id,
        .now = now,
    };
    memset(k, 0, sizeof(*k));
    kf_buf_fixed(&mi3, k->mi3, sizeof(k->mi3));
    KF_GUARD(kf_oak_generate(&req, &mi3, x->records));
    KF_GUARD(kf_store_mfg_oak_seen(kms->store, p->domain_id, key_id));
    k->domain_id = p->domain_id;
    k->key_id = key_id;
    mfg_copy_text(k->steel_id, sizeof(k->steel_id), x->steel_id);
    k->status = KF_MFG_NEW;
    k->mi3_len = mi3.len;
    memcpy(k->record, k->mi3, mi3.len);
    k->record_len = mi3.len;
    k->t_request = now;
    KF_GUARD(kf_store_mfg_key_insert(kms->store, k));
    char object[32], detail[96];
    key_object(object, key_id);
    snprintf(detail, sizeof(detail), "key %llu for Steel %s: ArchiveNew stored, Distribute sent",
             (unsigned long long)key_id, x->steel_id);
    return kms_audit(kms, x->actor, "MfgRequestKey", x->domain, object, KF_OK, detail);
}

int kf_kms_mfg_request_key(kf_kms *kms, const char *actor, const char *domain, const char *steel_id,
                           kf_buf *records)
{
    KF_ENSURE(kms && actor && records, KF_ERR_ARG);
    struct request_ctx *x = calloc(1, sizeof(*x));
    KF_ENSURE(x != NULL, KF_ERR_NOMEM);
    *x = (struct request_ctx){
        .actor = actor, .domain = domain, .steel_id = steel_id, .records = records};
    size_t at = records->len;
    int rc = kf_rng_failed() ? KF_ERR_RNG_HEALTH : KF_OK;
    mfg_lock(kms);
    if (rc == KF_OK)
        rc = mfg_in_tx(kms, request_body, x);
    if (rc < 0) {
        records->len = at; /* MI4 leaves only with its committed archive record */
        kms_audit_refusal(kms, actor, "MfgRequestKey", mfg_shown_domain(domain),
                          mfg_shown_role(steel_id), rc, NULL);
    }
    mfg_unlock(kms);
    free(x);
    return rc;
}

/* ---- MI7 -> MI8..MI10: report an installation ---- */

struct report_ctx {
    const char *actor, *domain;
    const uint8_t *report;
    size_t len;
    kf_buf *records;
    uint32_t type;
    char signer[KF_MFG_ROLE_ID_LEN + 1];
    uint64_t key_id;
    struct kf_mfg_role_row steel, oak;
    struct kf_mfg_key_row k;
};

/* The latest of the key's events so far (a new one may not be before it). */
int64_t mfg_last_event(const struct kf_mfg_key_row *k)
{
    int64_t t = k->t_request;
    const int64_t later[] = {k->t_install, k->t_install_verify, k->t_register,
                             k->t_register_verify};
    for (size_t i = 0; i < sizeof(later) / sizeof(later[0]); i++)
        if (later[i] > t)
            t = later[i];
    return t;
}

/* Another key of the same device still in use in this domain? A device
 * holds one key per domain (it refuses a second itself). */
static int device_free(kf_store *st, uint64_t domain_id, const char *msn, uint64_t key_id)
{
    struct kf_mfg_key_row *k = malloc(sizeof(*k));
    KF_ENSURE(k != NULL, KF_ERR_NOMEM);
    int rc = msn[0] ? kf_store_mfg_key_by_msn(st, domain_id, msn, k) : KF_ERR_MFG_UNKNOWN;
    if (rc == KF_OK)
        rc = k->key_id != key_id && (k->status == KF_MFG_INSTALLED || k->status == KF_MFG_ACTIVE)
                 ? KF_ERR_MFG_STATUS
                 : KF_OK;
    free(k);
    return rc == KF_ERR_MFG_UNKNOWN ? KF_OK : rc;
}

static int report_apply(kf_kms *kms, struct report_ctx *x, const struct mfg_roles *p)
{
    struct kf_mfg_key_row *k = &x->k;
    struct kf_brass b;
    struct kf_brass_install res;
    struct kf_brass_cert oak = {x->oak.cert, x->oak.cert_len},
                         steel = {x->steel.cert, x->steel.cert_len};
    kf_buf mi9;
    int64_t now = mfg_now();
    mfg_brass_of(p, &b);
    kf_buf_fixed(&mi9, k->record, sizeof(k->record));
    if (x->type == KF_MFG_REC_INSTALLED)
        KF_GUARD(kf_brass_install_check(&b, k->mi3, k->mi3_len, oak, x->report, x->len, steel, now,
                                        &mi9, x->records, &res));
    else
        KF_GUARD(kf_brass_install_failed(&b, k->mi3, k->mi3_len, oak, x->report, x->len, steel, now,
                                         x->records, &res));
    if (res.status == KF_MFG_INSTALLED) {
        KF_GUARD(device_free(kms->store, p->domain_id, res.msn, k->key_id));
        k->record_len = mi9.len; /* MI9 replaces MI3 as the current record */
    }
    k->status = res.status;
    k->reason = res.status == KF_MFG_BAD ? res.reason : 0;
    mfg_copy_text(k->msn, sizeof(k->msn), res.msn);
    k->t_install = res.t_install;
    k->t_install_verify = now;
    KF_GUARD(kf_store_mfg_key_update(kms->store, k));
    char object[32], detail[160];
    key_object(object, k->key_id);
    snprintf(detail, sizeof(detail), "%s by %s, device %s: status %s%s%s",
             x->type == KF_MFG_REC_INSTALLED ? "Installed" : "InstallFailed", res.signer,
             res.msn[0] ? res.msn : "-", status_name(res.status),
             res.status == KF_MFG_BAD ? " reason " : "",
             res.status == KF_MFG_BAD ? kf_errname(res.reason) : "");
    return kms_audit(kms, x->actor, "MfgReportInstall", x->domain, object, KF_OK, detail);
}

static int report_body(kf_kms *kms, void *ctx)
{
    struct report_ctx *x = ctx;
    struct kf_domain d = {0};
    struct mfg_roles *p;
    struct kf_mfg_record m, rec;
    int rc = mfg_domain_loaded(kms, x->domain, &d, &p);
    kf_domain_clear(&d);
    KF_GUARD(rc);
    /* The signer first: a record is decoded only under its certificate's key. */
    KF_GUARD(station(kms->store, p->domain_id, x->signer, KF_MFG_ROLE_STEEL, &x->steel));
    KF_GUARD(kf_mfg_record_open(x->report, x->len, x->steel.sign_pub, x->type, &m));
    KF_ENSURE(strcmp(m.domain, p->domain) == 0, KF_ERR_MFG_PARAM);
    x->key_id = m.key_id;
    KF_GUARD(kf_store_mfg_key_get(kms->store, p->domain_id, m.key_id, &x->k));
    KF_GUARD(mfg_archive_check(p, &x->k, &rec));
    /* A key is installed, or attempted, once. */
    KF_ENSURE(x->k.status == KF_MFG_NEW, KF_ERR_MFG_STATUS);
    KF_ENSURE(m.event_time >= mfg_last_event(&x->k), KF_ERR_MFG_TIME);
    KF_GUARD(kf_store_mfg_role_get(kms->store, p->domain_id, p->o_id, &x->oak));
    return report_apply(kms, x, p);
}

/* The domain a report is for: the one its (signed) body names. The body is
 * only read here; report_body checks the signature with that domain's
 * certificate of the signer before anything is believed. */
static int report_domain(const struct kf_mfg_envelope *env, char domain[KF_DOMAIN_NAME_MAX + 1])
{
    struct kf_mfg_record *rec = malloc(sizeof(*rec));
    KF_ENSURE(rec != NULL, KF_ERR_NOMEM);
    int rc = kf_mfg_record_decode(env->body, env->body_len, env->type, rec);
    if (rc == KF_OK)
        mfg_copy_text(domain, KF_DOMAIN_NAME_MAX + 1, rec->domain);
    free(rec);
    return rc;
}

int kms_mfg_report_install_in(kf_kms *kms, const char *actor, const char *domain,
                              const uint8_t *report, size_t len, kf_buf *records)
{
    KF_ENSURE(kms && actor && records, KF_ERR_ARG);
    struct kf_mfg_envelope env;
    struct report_ctx *x = calloc(1, sizeof(*x));
    KF_ENSURE(x != NULL, KF_ERR_NOMEM);
    char found[KF_DOMAIN_NAME_MAX + 1] = "";
    size_t used, at = records->len;
    *x = (struct report_ctx){
        .actor = actor, .domain = domain, .report = report, .len = len, .records = records};
    int rc = report && len ? kf_mfg_envelope_parse(report, len, &env, &used) : KF_ERR_MFG_FRAMING;
    if (rc == KF_OK && used != len)
        rc = KF_ERR_MFG_FRAMING;
    if (rc < 0 && rc != KF_ERR_NOMEM)
        rc = KF_ERR_MFG_FRAMING;
    if (rc == KF_OK) {
        x->type = env.type;
        mfg_copy_text(x->signer, sizeof(x->signer), env.signer);
        if (env.type != KF_MFG_REC_INSTALLED && env.type != KF_MFG_REC_INSTALL_FAILED)
            rc = KF_ERR_MFG_COMMAND;
    }
    mfg_lock(kms);
    if (rc == KF_OK && !domain && (rc = report_domain(&env, found)) == KF_OK)
        x->domain = found;
    if (rc == KF_OK)
        rc = mfg_in_tx(kms, report_body, x);
    if (rc < 0) {
        char object[32] = "";
        if (x->key_id)
            key_object(object, x->key_id);
        char detail[64];
        snprintf(detail, sizeof(detail), "signer %s",
                 x->signer[0] ? mfg_shown_role(x->signer) : "-");
        records->len = at;
        kms_audit_refusal(kms, actor, "MfgReportInstall", mfg_shown_domain(x->domain), object, rc,
                          detail);
    }
    mfg_unlock(kms);
    free(x);
    return rc;
}

int kf_kms_mfg_report_install(kf_kms *kms, const char *actor, const uint8_t *report, size_t len,
                              kf_buf *records)
{
    return kms_mfg_report_install_in(kms, actor, NULL, report, len, records);
}

/* ---- Retire ---- */

struct retire_ctx {
    const char *actor, *domain;
    uint64_t key_id;
    struct kf_mfg_key_row k;
};

static int retire_body(kf_kms *kms, void *ctx)
{
    struct retire_ctx *x = ctx;
    struct kf_domain d = {0};
    struct mfg_roles p;
    struct kf_mfg_record rec;
    int rc = mfg_domain_public(kms->store, x->domain, &d, &p);
    kf_domain_clear(&d);
    KF_GUARD(rc);
    KF_GUARD(kf_store_mfg_key_get(kms->store, p.domain_id, x->key_id, &x->k));
    KF_GUARD(mfg_archive_check(&p, &x->k, &rec));
    KF_ENSURE(x->k.status == KF_MFG_INSTALLED || x->k.status == KF_MFG_ACTIVE, KF_ERR_MFG_STATUS);
    uint32_t was = x->k.status;
    x->k.status = KF_MFG_OBSOLETE;
    KF_GUARD(kf_store_mfg_key_update(kms->store, &x->k));
    char object[32], detail[96];
    key_object(object, x->key_id);
    snprintf(detail, sizeof(detail), "device %s: %s -> Obsolete", x->k.msn[0] ? x->k.msn : "-",
             status_name(was));
    return kms_audit(kms, x->actor, "MfgRetire", x->domain, object, KF_OK, detail);
}

int kf_kms_mfg_retire(kf_kms *kms, const char *actor, const char *domain, uint64_t key_id)
{
    KF_ENSURE(kms && actor, KF_ERR_ARG);
    struct retire_ctx *x = calloc(1, sizeof(*x));
    KF_ENSURE(x != NULL, KF_ERR_NOMEM);
    *x = (struct retire_ctx){.actor = actor, .domain = domain, .key_id = key_id};
    int rc = key_id > 0 && key_id <= (uint64_t)INT64_MAX ? KF_OK : KF_ERR_MFG_UNKNOWN;
    pthread_mutex_lock(&kms->lock);
    if (rc == KF_OK)
        rc = mfg_in_tx(kms, retire_body, x);
    if (rc < 0) {
        char object[32];
        key_object(object, key_id);
        kms_audit_refusal(kms, actor, "MfgRetire", mfg_shown_domain(domain), object, rc, NULL);
    }
    pthread_mutex_unlock(&kms->lock);
    if (rc == KF_OK && x->k.msn[0])
        kms_tokens_forget(kms, domain, x->k.msn);
    free(x);
    return rc;
}

/* ---- Status ---- */

static int fill_info(kf_store *st, const struct mfg_roles *p, const struct kf_mfg_key_row *k,
                     struct kf_mfg_key_info *out)
{
    memset(out, 0, sizeof(*out));
    mfg_copy_text(out->domain, sizeof(out->domain), p->domain);
    out->key_id = k->key_id;
    mfg_copy_text(out->steel_id, sizeof(out->steel_id), k->steel_id);
    out->status = k->status;
    out->reason = k->status == KF_MFG_BAD ? k->reason : 0;
    mfg_copy_text(out->msn, sizeof(out->msn), k->msn);
    mfg_copy_text(out->indicia, sizeof(out->indicia), k->indicia);
    mfg_copy_text(out->country, sizeof(out->country), k->country);
    out->t_request = k->t_request;
    out->t_install = k->t_install;
    out->t_install_verify = k->t_install_verify;
    out->t_register = k->t_register;
    out->t_register_verify = k->t_register_verify;
    if (k->status == KF_MFG_TRANSFERRED && k->moved_domain_id) {
        struct kf_domain d = {0};
        KF_GUARD(kf_store_domain_get_by_id(st, k->moved_domain_id, &d));
        mfg_copy_text(out->moved_domain, sizeof(out->moved_domain), d.name);
        out->moved_key_id = k->moved_key_id;
        kf_domain_clear(&d);
    }
    return KF_OK;
}

/* The key (by ID, or the newest of msn) with its record checked, on st. */
static int read_key(kf_store *st, const char *domain, uint64_t key_id, const char *msn,
                    struct mfg_roles *p, struct kf_mfg_key_row *k)
{
    struct kf_domain d = {0};
    struct kf_mfg_record rec;
    int rc = mfg_domain_public(st, domain, &d, p);
    kf_domain_clear(&d);
    KF_GUARD(rc);
    if (msn)
        KF_GUARD(kf_store_mfg_key_by_msn(st, p->domain_id, msn, k));
    else
        KF_GUARD(kf_store_mfg_key_get(st, p->domain_id, key_id, k));
    return mfg_archive_check(p, k, &rec);
}

int kf_kms_mfg_status(kf_kms *kms, const char *actor, const char *domain, uint64_t key_id,
                      const char *msn, struct kf_mfg_key_info *out)
{
    KF_ENSURE(kms && actor && out, KF_ERR_ARG);
    struct kf_mfg_key_row *k = malloc(sizeof(*k));
    KF_ENSURE(k != NULL, KF_ERR_NOMEM);
    struct mfg_roles p;
    struct kms_read r;
    char object[32] = "";
    int rc = KF_OK;
    if (msn && !kf_mfg_msn_valid(msn))
        rc = KF_ERR_MFG_PARAM;
    else if (!msn && (key_id == 0 || key_id > (uint64_t)INT64_MAX))
        rc = KF_ERR_MFG_UNKNOWN;
    if (rc == KF_OK) {
        kms_read_begin(kms, &r);
        rc = read_key(r.st, domain, key_id, msn, &p, k);
        if (rc == KF_OK)
            rc = fill_info(r.st, &p, k, out);
        kms_read_end(kms, &r);
    }
    if (msn && kf_mfg_msn_valid(msn))
        mfg_copy_text(object, sizeof(object), msn);
    else if (!msn)
        key_object(object, key_id);
    char detail[64] = "";
    if (rc == KF_OK)
        snprintf(detail, sizeof(detail), "key %llu %s", (unsigned long long)out->key_id,
                 status_name(out->status));
    free(k);
    int arc = mfg_audit_read(kms, actor, "MfgStatus", domain, object, rc, detail);
    if (rc == KF_OK && arc < 0)
        rc = arc;
    if (rc < 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

/* ---- For the token verifier (tokens.c) ---- */

int kms_mfg_device_key(kf_kms *kms, const char *domain, const char *msn,
                       struct kms_mfg_device_key *out)
{
    KF_ENSURE(kms && out, KF_ERR_ARG);
    KF_ENSURE(msn && kf_mfg_msn_valid(msn), KF_ERR_MFG_UNKNOWN);
    struct kf_mfg_key_row *k = malloc(sizeof(*k));
    KF_ENSURE(k != NULL, KF_ERR_NOMEM);
    struct mfg_roles p, *loaded;
    struct kf_domain d = {0};
    struct kms_read r;
    memset(out, 0, sizeof(*out));
    kms_read_begin(kms, &r);
    int rc = read_key(r.st, domain, 0, msn, &p, k);
    if (rc == KF_OK) {
        out->key_id = k->key_id;
        out->status = k->status;
        out->registered_at =
            k->status == KF_MFG_ACTIVE || k->status == KF_MFG_OBSOLETE ? k->t_register : 0;
    }
    if (rc == KF_OK && k->status == KF_MFG_ACTIVE) {
        rc = kf_store_domain_get(r.st, domain, &d);
        pthread_mutex_lock(&kms->mfg->lock);
        if (rc == KF_OK)
            rc = mfg_roles_loaded(kms, r.st, &d, &loaded);
        if (rc == KF_OK) {
            struct kf_brass b;
            mfg_brass_of(loaded, &b);
            rc = kf_brass_open(&b, k->record, k->record_len, NULL, NULL, out->key);
        }
        pthread_mutex_unlock(&kms->mfg->lock);
        kf_domain_clear(&d);
    }
    kms_read_end(kms, &r);
    free(k);
    if (rc < 0)
        kf_wipe(out, sizeof(*out));
    return rc;
}

int kms_mfg_brass_sign(kf_kms *kms, const char *domain, const struct kf_mfg_record *rec,
                       kf_buf *out)
{
    KF_ENSURE(kms && rec && out, KF_ERR_ARG);
    KF_ENSURE(domain && kf_domain_name_valid(domain), KF_ERR_MFG_PARAM);
    struct kf_domain d = {0};
    struct mfg_roles *p;
    struct kms_read r;
    kms_read_begin(kms, &r);
    int rc = kf_store_domain_get(r.st, domain, &d);
    if (rc == KF_ERR_DOMAIN)
        rc = KF_ERR_MFG_SETUP;
    pthread_mutex_lock(&kms->mfg->lock);
    if (rc == KF_OK)
        rc = mfg_roles_loaded(kms, r.st, &d, &p);
    if (rc == KF_OK)
        rc = kf_mfg_record_sign(rec, p->b_id, p->sec->b_sign, out);
    pthread_mutex_unlock(&kms->mfg->lock);
    kms_read_end(kms, &r);
    kf_domain_clear(&d);
    return rc;
}
