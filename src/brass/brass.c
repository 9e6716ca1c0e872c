/*
 * Brass, the verification role (docs/manufacturing.md "Installation",
 * "Registration"; seed Fig. 29-31). See brass.h for what each step checks.
 *
 * Order inside every step: certificates under the domain's authority, then
 * the records' signatures under those certificates, then the decoded fields,
 * and only then K. A device master key K is opened into secure memory, used,
 * and wiped before the function returns; only sealed copies leave.
 */
#include <string.h>

#include "keyfleet/secmem.h"
#include "brass.h"

static void copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static bool brass_ok(const struct kf_brass *b)
{
    enum kf_mfg_role_type t;
    return b && b->domain && b->domain[0] && strlen(b->domain) <= KF_MFG_DOMAIN_MAX && b->id &&
           kf_mfg_role_id_parse(b->id, &t) && t == KF_MFG_ROLE_BRASS && b->sign_priv &&
           b->sign_pub && b->enc_priv && b->archive_key && b->authority_pub;
}

/* A certificate of the domain for a role of type want, checked under the
 * authority's key: its decoded RoleCert in cert_rec. */
static int check_cert(const uint8_t authority_pub[32], const char *domain,
                      struct kf_brass_cert cert, enum kf_mfg_role_type want,
                      struct kf_mfg_record *cert_rec)
{
    KF_ENSURE(cert.p && cert.len, KF_ERR_MFG_ROLE);
    int rc = kf_mfg_cert_check(cert.p, cert.len, authority_pub, domain, want, cert_rec);
    return rc == KF_OK ? KF_OK : KF_ERR_MFG_ROLE;
}

/* Open a record signed by the role of cert_rec: the envelope's signer must be
 * that role, and its signature verify under the certificate's key. */
static int open_signed_by(const uint8_t *msg, size_t len, const struct kf_mfg_record *cert_rec,
                          uint32_t type, struct kf_mfg_record *rec)
{
    struct kf_mfg_envelope env;
    size_t used;
    KF_ENSURE(msg && len, KF_ERR_MFG_FRAMING);
    KF_GUARD(kf_mfg_envelope_parse(msg, len, &env, &used));
    KF_ENSURE(used == len, KF_ERR_MFG_FRAMING);
    KF_ENSURE(strcmp(env.signer, cert_rec->role_id) == 0, KF_ERR_BAD_SIGNATURE);
    return kf_mfg_record_open(msg, len, cert_rec->sign_pub, type, rec);
}

/* One of this Brass's own archive records (MI9, MR3, Transfer): anything
 * wrong with it means the archive was modified. */
static int open_own(const struct kf_brass *b, const uint8_t *msg, size_t len, uint32_t type,
                    struct kf_mfg_record *rec)
{
    struct kf_mfg_envelope env;
    size_t used;
    if (!msg || !len || kf_mfg_envelope_parse(msg, len, &env, &used) != KF_OK || used != len ||
        strcmp(env.signer, b->id) != 0 ||
        kf_mfg_record_open(msg, len, b->sign_pub, type, rec) != KF_OK ||
        strcmp(rec->domain, b->domain) != 0)
        return KF_ERR_MFG_ARCHIVE;
    return KF_OK;
}

/* MI3 from the archive, under Oak's certificate. */
static int open_mi3(const struct kf_brass *b, const uint8_t *mi3, size_t mi3_len,
                    struct kf_brass_cert oak, struct kf_mfg_record *oak_cert,
                    struct kf_mfg_record *a)
{
    KF_GUARD(check_cert(b->authority_pub, b->domain, oak, KF_MFG_ROLE_OAK, oak_cert));
    if (open_signed_by(mi3, mi3_len, oak_cert, KF_MFG_REC_ARCHIVE_NEW, a) != KF_OK ||
        strcmp(a->domain, b->domain) != 0 || strcmp(a->role_id, oak_cert->role_id) != 0 ||
        a->status != KF_MFG_NEW)
        return KF_ERR_MFG_ARCHIVE;
    return KF_OK;
}

/* The Steel's report under its certificate: domain and key ID of MI3. */
static int open_report(const struct kf_brass *b, const uint8_t *msg, size_t len, uint32_t type,
                       struct kf_brass_cert steel, const struct kf_mfg_record *a,
                       struct kf_mfg_record *steel_cert, struct kf_mfg_record *m)
{
    KF_GUARD(check_cert(b->authority_pub, b->domain, steel, KF_MFG_ROLE_STEEL, steel_cert));
    KF_GUARD(open_signed_by(msg, len, steel_cert, type, m));
    KF_ENSURE(strcmp(m->domain, b->domain) == 0 && m->key_id == a->key_id, KF_ERR_MFG_PARAM);
    /* Nothing happens to a key before it was made. */
    KF_ENSURE(m->event_time >= a->event_time, KF_ERR_MFG_TIME);
    return KF_OK;
}

/* MI10: Brass's answer to the station, Installed or Bad. */
static int confirm_installed(const struct kf_brass *b, uint64_t key_id, const char *msn,
                             uint32_t status, int32_t reason, int64_t now, kf_buf *mi10)
{
    struct kf_mfg_record c;
    memset(&c, 0, sizeof(c));
    c.type = KF_MFG_REC_CONFIRM_INSTALLED;
    c.fields = KF_MFG_F_STATUS | KF_MFG_F_DOMAIN | KF_MFG_F_KEY_ID | KF_MFG_F_MSN |
               KF_MFG_F_EVENT_TIME | (status == KF_MFG_BAD ? KF_MFG_F_REASON : 0);
    c.status = status;
    copy_text(c.domain, sizeof(c.domain), b->domain);
    c.key_id = key_id;
    /* MI10 always names a device; "-" when an InstallFailed named none
     * (the Steel gave up before any device answered). */
    copy_text(c.msn, sizeof(c.msn), msn[0] ? msn : "-");
    c.reason = status == KF_MFG_BAD ? reason : 0;
    c.event_time = now;
    return kf_mfg_record_sign(&c, b->id, b->sign_priv, mi10);
}

/* Undo what a failed step appended to out. */
static void truncate_to(kf_buf *out, size_t len)
{
    if (out && out->len > len)
        out->len = len;
}

static int installed_records(const struct kf_brass *b, const struct kf_mfg_record *a,
                             const struct kf_mfg_record *m, const uint8_t *k, int64_t now,
                             kf_buf *mi9, kf_buf *mi10)
{
    struct kf_mfg_record r;
    memset(&r, 0, sizeof(r));
    r.type = KF_MFG_REC_ARCHIVE_INSTALLED;
    r.fields = KF_MFG_F_STATUS | KF_MFG_F_ROLE_ID | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID |
               KF_MFG_F_KEY_ID | KF_MFG_F_MSN | KF_MFG_F_ARCHIVE_KEY | KF_MFG_F_EVENT_TIME;
    r.status = KF_MFG_INSTALLED;
    copy_text(r.role_id, sizeof(r.role_id), a->role_id);
    copy_text(r.domain, sizeof(r.domain), b->domain);
    copy_text(r.steel_id, sizeof(r.steel_id), a->steel_id);
    r.key_id = a->key_id;
    copy_text(r.msn, sizeof(r.msn), m->msn);
    r.event_time = now;
    KF_GUARD(kf_mfg_archive_seal(b->archive_key, b->domain, a->key_id, b->id, k, r.archive_key));
    KF_GUARD(kf_mfg_record_sign(&r, b->id, b->sign_priv, mi9));
    return confirm_installed(b, a->key_id, m->msn, KF_MFG_INSTALLED, 0, now, mi10);
}

/* MI9: K from MI3, the device's tokens against K's, then the records. */
static int verify_and_archive(const struct kf_brass *b, const struct kf_mfg_record *a,
                              const struct kf_mfg_record *m, int64_t now, kf_buf *mi9, kf_buf *mi10,
                              struct kf_brass_install *out)
{
    uint8_t *k = kf_secmem_alloc(KF_MFG_KEY_LEN);
    KF_ENSURE(k != NULL, KF_ERR_NOMEM);
    uint8_t tokens[KF_MFG_TEST_TOKENS_LEN];
    int rc = kf_mfg_open_key(b->enc_priv, b->domain, a->key_id, b->id, a->sealed_key, k);
    if (rc < 0)
        rc = KF_ERR_MFG_ARCHIVE; /* Oak's signature held, so the sealed key was swapped */
    if (rc == KF_OK)
        rc = kfd_test_tokens(k, tokens);
    if (rc == KF_OK && kf_ct_equal(tokens, m->test_tokens, sizeof(tokens))) {
        out->status = KF_MFG_INSTALLED;
        rc = installed_records(b, a, m, k, now, mi9, mi10);
    } else if (rc == KF_OK) {
        /* The device holds some other key (or none): the key is burnt. */
        out->status = KF_MFG_BAD;
        out->reason = KF_ERR_MFG_TOKENS;
        rc = confirm_installed(b, a->key_id, m->msn, KF_MFG_BAD, KF_ERR_MFG_TOKENS, now, mi10);
    }
    kf_wipe(tokens, sizeof(tokens));
    kf_secmem_free(k);
    return rc;
}

int kf_brass_install_check(const struct kf_brass *b, const uint8_t *mi3, size_t mi3_len,
                           struct kf_brass_cert oak, const uint8_t *mi7, size_t mi7_len,
                           struct kf_brass_cert steel, int64_t now, kf_buf *mi9, kf_buf *mi10,
                           struct kf_brass_install *out)
{
    KF_ENSURE(brass_ok(b) && mi9 && mi10 && out && mi9 != mi10, KF_ERR_ARG);
    struct kf_mfg_record oak_cert, steel_cert, a, m;
    memset(out, 0, sizeof(*out));
    KF_GUARD(open_mi3(b, mi3, mi3_len, oak, &oak_cert, &a));
    KF_GUARD(open_report(b, mi7, mi7_len, KF_MFG_REC_INSTALLED, steel, &a, &steel_cert, &m));
    KF_ENSURE(m.status == KF_MFG_INSTALLED && strcmp(m.role_id, a.role_id) == 0, KF_ERR_MFG_PARAM);
    /* Only the Steel the key was sealed to can have installed it. */
    KF_ENSURE(strcmp(m.steel_id, a.steel_id) == 0 && strcmp(steel_cert.role_id, a.steel_id) == 0,
              KF_ERR_MFG_STEEL_ID);
    copy_text(out->msn, sizeof(out->msn), m.msn);
    copy_text(out->signer, sizeof(out->signer), steel_cert.role_id);
    out->t_install = m.event_time;
    size_t l9 = mi9->len, l10 = mi10->len;
    int rc = verify_and_archive(b, &a, &m, now, mi9, mi10, out);
    if (rc < 0) {
        truncate_to(mi9, l9);
        truncate_to(mi10, l10);
        memset(out, 0, sizeof(*out));
    }
    return rc;
}

int kf_brass_install_failed(const struct kf_brass *b, const uint8_t *mi3, size_t mi3_len,
                            struct kf_brass_cert oak, const uint8_t *report, size_t report_len,
                            struct kf_brass_cert steel, int64_t now, kf_buf *mi10,
                            struct kf_brass_install *out)
{
    KF_ENSURE(brass_ok(b) && mi10 && out, KF_ERR_ARG);
    struct kf_mfg_record oak_cert, steel_cert, a, m;
    memset(out, 0, sizeof(*out));
    KF_GUARD(open_mi3(b, mi3, mi3_len, oak, &oak_cert, &a));
    KF_GUARD(
        open_report(b, report, report_len, KF_MFG_REC_INSTALL_FAILED, steel, &a, &steel_cert, &m));
    KF_ENSURE(m.status == KF_MFG_BAD, KF_ERR_MFG_PARAM);
    /* The reporter speaks for itself, or names the Steel the key was made for. */
    KF_ENSURE(strcmp(m.steel_id, steel_cert.role_id) == 0 || strcmp(m.steel_id, a.steel_id) == 0,
              KF_ERR_MFG_STEEL_ID);
    /* A reason is a kf error code; 0 or a positive number says nothing. */
    KF_ENSURE(m.reason < 0, KF_ERR_MFG_FRAMING);
    out->status = KF_MFG_BAD;
    out->reason = m.reason;
    copy_text(out->msn, sizeof(out->msn), (m.fields & KF_MFG_F_MSN) ? m.msn : "");
    copy_text(out->signer, sizeof(out->signer), steel_cert.role_id);
    out->t_install = m.event_time;
    size_t l10 = mi10->len;
    int rc = confirm_installed(b, a.key_id, out->msn, KF_MFG_BAD, m.reason, now, mi10);
    if (rc < 0) {
        truncate_to(mi10, l10);
        memset(out, 0, sizeof(*out));
    }
    return rc;
}

/* ---- Registration ---- */

static bool mac_ok(const struct kfd_registration *r, size_t mac)
{
    return r && mac < r->nmacs && mac < KFD_METER_DOMAINS;
}

/* The device's MAC under K: its canonical form names domain and key_id as the
 * device had them. */
static int check_mac(const uint8_t *k, const struct kfd_registration *r, size_t mac)
{
    uint8_t want[16];
    int rc = kfd_registration_mac(k, r, r->mac[mac].domain, r->mac[mac].key_id, want);
    if (rc == KF_OK && !kf_ct_equal(want, r->mac[mac].mac, sizeof(want)))
        rc = KF_ERR_MFG_REG_MAC;
    kf_wipe(want, sizeof(want));
    return rc;
}

/* MR3 (K under this Brass's archive key, status Active) and MR4. */
static int registered_records(const struct kf_brass *b, uint64_t key_id,
                              const struct kfd_registration *r, const uint8_t *k, int64_t now,
                              kf_buf *mr3, kf_buf *mr4)
{
    struct kf_mfg_record rec;
    memset(&rec, 0, sizeof(rec));
    rec.type = KF_MFG_REC_CONFIRM_REGISTERED;
    rec.fields = KF_MFG_F_STATUS | KF_MFG_F_DOMAIN | KF_MFG_F_KEY_ID | KF_MFG_F_MSN |
                 KF_MFG_F_INDICIA | KF_MFG_F_COUNTRY | KF_MFG_F_EVENT_TIME;
    rec.status = KF_MFG_ACTIVE;
    copy_text(rec.domain, sizeof(rec.domain), b->domain);
    rec.key_id = key_id;
    copy_text(rec.msn, sizeof(rec.msn), r->msn);
    copy_text(rec.indicia, sizeof(rec.indicia), r->indicia);
    copy_text(rec.country, sizeof(rec.country), r->country);
    rec.event_time = now;
    size_t l4 = mr4->len;
    KF_GUARD(kf_mfg_record_sign(&rec, b->id, b->sign_priv, mr4));
    rec.type = KF_MFG_REC_ARCHIVE_REGISTERED;
    rec.fields |= KF_MFG_F_ARCHIVE_KEY;
    int rc = kf_mfg_archive_seal(b->archive_key, b->domain, key_id, b->id, k, rec.archive_key);
    if (rc == KF_OK)
        rc = kf_mfg_record_sign(&rec, b->id, b->sign_priv, mr3);
    if (rc < 0)
        truncate_to(mr4, l4);
    return rc;
}

/* This Brass's MI9 of the device r names in MAC mac, and K from it. */
static int open_installed(const struct kf_brass *b, const uint8_t *record, size_t len,
                          const struct kfd_registration *r, size_t mac, struct kf_mfg_record *rec,
                          uint8_t *k)
{
    KF_GUARD(open_own(b, record, len, KF_MFG_REC_ARCHIVE_INSTALLED, rec));
    KF_ENSURE(rec->status == KF_MFG_INSTALLED, KF_ERR_MFG_ARCHIVE);
    KF_ENSURE(rec->key_id == r->mac[mac].key_id && strcmp(rec->msn, r->msn) == 0, KF_ERR_MFG_PARAM);
    /* The device cannot register before its key was confirmed installed. */
    KF_ENSURE(r->date >= rec->event_time, KF_ERR_MFG_TIME);
    if (kf_mfg_archive_open(b->archive_key, b->domain, rec->key_id, b->id, rec->archive_key, k) !=
        KF_OK)
        return KF_ERR_MFG_ARCHIVE;
    return KF_OK;
}

int kf_brass_register(const struct kf_brass *b, const uint8_t *record, size_t len,
                      const struct kfd_registration *r, size_t mac, int64_t now, kf_buf *mr3,
                      kf_buf *mr4)
{
    KF_ENSURE(brass_ok(b) && mac_ok(r, mac) && mr3 && mr4 && mr3 != mr4, KF_ERR_ARG);
    KF_ENSURE(strcmp(r->mac[mac].domain, b->domain) == 0, KF_ERR_MFG_PARAM);
    struct kf_mfg_record rec;
    uint8_t *k = kf_secmem_alloc(KF_MFG_KEY_LEN);
    KF_ENSURE(k != NULL, KF_ERR_NOMEM);
    int rc = open_installed(b, record, len, r, mac, &rec, k);
    if (rc == KF_OK)
        rc = check_mac(k, r, mac);
    if (rc == KF_OK)
        rc = registered_records(b, rec.key_id, r, k, now, mr3, mr4);
    kf_secmem_free(k);
    return rc;
}

int kf_brass_transfer_out(const struct kf_brass *earth, const uint8_t *record, size_t len,
                          const struct kfd_registration *r, size_t mac,
                          const char *country_brass_id, const uint8_t country_enc_pub[32],
                          int64_t now, kf_buf *transfer)
{
    enum kf_mfg_role_type t;
    KF_ENSURE(brass_ok(earth) && mac_ok(r, mac) && transfer && country_enc_pub, KF_ERR_ARG);
    KF_ENSURE(country_brass_id && kf_mfg_role_id_parse(country_brass_id, &t) &&
                  t == KF_MFG_ROLE_BRASS,
              KF_ERR_MFG_PARAM);
    KF_ENSURE(strcmp(r->mac[mac].domain, earth->domain) == 0 && kf_mfg_country_valid(r->country),
              KF_ERR_MFG_PARAM);
    struct kf_mfg_record rec, x;
    uint8_t *k = kf_secmem_alloc(KF_MFG_KEY_LEN);
    KF_ENSURE(k != NULL, KF_ERR_NOMEM);
    int rc = open_installed(earth, record, len, r, mac, &rec, k);
    if (rc == KF_OK) {
        memset(&x, 0, sizeof(x));
        x.type = KF_MFG_REC_TRANSFER;
        x.fields = KF_MFG_F_DOMAIN | KF_MFG_F_KEY_ID | KF_MFG_F_MSN | KF_MFG_F_COUNTRY |
                   KF_MFG_F_SEALED_KEY | KF_MFG_F_EVENT_TIME;
        copy_text(x.domain, sizeof(x.domain), earth->domain);
        x.key_id = rec.key_id;
        copy_text(x.msn, sizeof(x.msn), r->msn);
        copy_text(x.country, sizeof(x.country), r->country);
        x.event_time = now;
        /* Bound to earth's record and to the country's Brass: it opens nowhere else. */
        rc = kf_mfg_seal_key(country_enc_pub, earth->domain, rec.key_id, country_brass_id, k,
                             x.sealed_key);
    }
    if (rc == KF_OK)
        rc = kf_mfg_record_sign(&x, earth->id, earth->sign_priv, transfer);
    kf_secmem_free(k);
    return rc;
}

int kf_brass_transfer_in(const struct kf_brass *country, const uint8_t *transfer, size_t len,
                         const uint8_t earth_authority_pub[32], struct kf_brass_cert earth_brass,
                         const struct kfd_registration *r, size_t mac, uint64_t new_key_id,
                         int64_t now, kf_buf *mr3, kf_buf *mr4)
{
    KF_ENSURE(brass_ok(country) && earth_authority_pub && mac_ok(r, mac) && mr3 && mr4 &&
                  mr3 != mr4 && new_key_id > 0,
              KF_ERR_ARG);
    const char *earth = r->mac[mac].domain;
    struct kf_mfg_record cert, x;
    /* Earth's records are checked against earth's certificates only. */
    KF_GUARD(check_cert(earth_authority_pub, earth, earth_brass, KF_MFG_ROLE_BRASS, &cert));
    KF_GUARD(open_signed_by(transfer, len, &cert, KF_MFG_REC_TRANSFER, &x));
    KF_ENSURE(strcmp(x.domain, earth) == 0 && x.key_id == r->mac[mac].key_id &&
                  strcmp(x.msn, r->msn) == 0,
              KF_ERR_MFG_PARAM);
    KF_ENSURE(strcmp(x.country, r->country) == 0, KF_ERR_MFG_COUNTRY);
    uint8_t *k = kf_secmem_alloc(KF_MFG_KEY_LEN);
    KF_ENSURE(k != NULL, KF_ERR_NOMEM);
    int rc = kf_mfg_open_key(country->enc_priv, earth, x.key_id, country->id, x.sealed_key, k);
    if (rc < 0)
        rc = KF_ERR_AUTH;
    if (rc == KF_OK)
        rc = check_mac(k, r, mac);
    if (rc == KF_OK)
        rc = registered_records(country, new_key_id, r, k, now, mr3, mr4);
    kf_secmem_free(k);
    return rc;
}

int kf_brass_open(const struct kf_brass *b, const uint8_t *record, size_t len,
                  const uint8_t *oak_pub, struct kf_mfg_record *rec, uint8_t key[KF_MFG_KEY_LEN])
{
    KF_ENSURE(brass_ok(b) && key, KF_ERR_ARG);
    struct kf_mfg_record local;
    struct kf_mfg_envelope env;
    size_t used;
    if (!rec)
        rec = &local;
    KF_ENSURE(record && len && kf_mfg_envelope_parse(record, len, &env, &used) == KF_OK &&
                  used == len,
              KF_ERR_MFG_ARCHIVE);
    int rc = KF_ERR_MFG_ARCHIVE;
    if (env.type == KF_MFG_REC_ARCHIVE_NEW) {
        if (oak_pub && kf_mfg_record_open(record, len, oak_pub, env.type, rec) == KF_OK &&
            strcmp(rec->domain, b->domain) == 0 &&
            kf_mfg_open_key(b->enc_priv, b->domain, rec->key_id, b->id, rec->sealed_key, key) ==
                KF_OK)
            rc = KF_OK;
    } else if (env.type == KF_MFG_REC_ARCHIVE_INSTALLED ||
               env.type == KF_MFG_REC_ARCHIVE_REGISTERED) {
        if (open_own(b, record, len, env.type, rec) == KF_OK &&
            kf_mfg_archive_open(b->archive_key, b->domain, rec->key_id, b->id, rec->archive_key,
                                key) == KF_OK)
            rc = KF_OK;
    }
    if (rc < 0)
        kf_wipe(key, KF_MFG_KEY_LEN);
    return rc;
}
