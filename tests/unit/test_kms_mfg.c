/*
 * The manufacturing service of keyfleetd (src/kms/mfg.c, kmip_mfg.c;
 * docs/manufacturing.md) over a kms in a temporary directory in dev mode:
 * domains VE (vendor), USPS (postal, US) and EARTH (earth) set up, a Steel
 * whose keys the test makes enrolled, devices made the way the protocol
 * makes them (RequestKey, the Distribute record opened with the Steel's key,
 * kfd_meter_install, an Installed record signed by the Steel, registration
 * with the device's own MR1).
 *
 * Every refusal the document names has its case: wrong device tokens (Bad),
 * a second report, a lost key, InstallFailed, an unenrolled signer, times out
 * of order, a modified archive record, a wrong MAC, a foreign country, the
 * earth transfer and the second country, registration before installation,
 * retirement; the command table over kf_kms_handle_kmip with principals of
 * each role; role private keys never served; the audit trail verified and
 * free of key bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/kms_mfg.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/meter.h"
#include "keyfleet/mfg.h"
#include "keyfleet/secmem.h"
#include "keyfleet/ttlv.h"
#include "kms/mfg_internal.h"

#include "kms_fixture.h"

#define ACTOR "test"
#define STEEL "S00000001"
#define STEEL2 "S00000002"
#define REC_MAX (1024 * 1024)

/* What a domain's certificates say. */
struct domain_certs {
    char m_id[10], o_id[10], b_id[10];
    uint8_t m_pub[32], o_pub[32], b_pub[32];
};

struct fixture {
    char dir[64];
    kf_kms *kms;
    struct role_keys steel, steel2;
};

static void buf_new(kf_buf *b)
{
    assert_int_equal(kf_buf_alloc(b, 0, REC_MAX, 0), KF_OK);
}

/* The n-th record of a records buffer (0-based), into env and its bytes. */
static void nth_record(const kf_buf *records, size_t n, const uint8_t **p, size_t *len)
{
    size_t off = 0, used = 0;
    struct kf_mfg_envelope env;
    for (size_t i = 0; i <= n; i++) {
        off += used;
        assert_true(off < records->len);
        assert_int_equal(
            kf_mfg_envelope_parse(records->data + off, records->len - off, &env, &used), KF_OK);
    }
    *p = records->data + off;
    *len = used;
}

static size_t count_records(const kf_buf *records)
{
    size_t off = 0, used, n = 0;
    struct kf_mfg_envelope env;
    while (off < records->len) {
        assert_int_equal(
            kf_mfg_envelope_parse(records->data + off, records->len - off, &env, &used), KF_OK);
        off += used;
        n++;
    }
    return n;
}

/* The domain's M, O, B from its certificates: M's self-signed, the others under M. */
static void read_certs(kf_kms *kms, const char *domain, struct domain_certs *c)
{
    kf_buf recs;
    struct kf_mfg_record r;
    const uint8_t *p;
    size_t len;
    buf_new(&recs);
    assert_int_equal(kf_kms_mfg_role_certs(kms, ACTOR, domain, &recs), KF_OK);
    nth_record(&recs, 0, &p, &len);
    /* M's certificate verifies under the key it certifies. */
    struct kf_mfg_envelope env;
    size_t used;
    assert_int_equal(kf_mfg_envelope_parse(p, len, &env, &used), KF_OK);
    assert_int_equal(kf_mfg_record_decode(env.body, env.body_len, KF_MFG_REC_ROLE_CERT, &r), KF_OK);
    assert_int_equal(r.role_type, KF_MFG_ROLE_AUTHORITY);
    memcpy(c->m_pub, r.sign_pub, 32);
    assert_int_equal(kf_mfg_cert_check(p, len, c->m_pub, domain, KF_MFG_ROLE_AUTHORITY, &r), KF_OK);
    snprintf(c->m_id, sizeof(c->m_id), "%s", r.role_id);
    nth_record(&recs, 1, &p, &len);
    assert_int_equal(kf_mfg_cert_check(p, len, c->m_pub, domain, KF_MFG_ROLE_OAK, &r), KF_OK);
    memcpy(c->o_pub, r.sign_pub, 32);
    snprintf(c->o_id, sizeof(c->o_id), "%s", r.role_id);
    nth_record(&recs, 2, &p, &len);
    assert_int_equal(kf_mfg_cert_check(p, len, c->m_pub, domain, KF_MFG_ROLE_BRASS, &r), KF_OK);
    memcpy(c->b_pub, r.sign_pub, 32);
    snprintf(c->b_id, sizeof(c->b_id), "%s", r.role_id);
    kf_buf_free(&recs);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || kms_dir_open(f->dir, sizeof(f->dir), "mfg", &f->kms) < 0)
        return -1;
    kf_buf recs;
    if (kf_buf_alloc(&recs, 0, REC_MAX, 0) < 0)
        return -1;
    role_keys_make(&f->steel);
    role_keys_make(&f->steel2);
    if (kf_kms_mfg_setup(f->kms, ACTOR, "VE", KF_MFG_VENDOR, NULL, &recs) < 0 ||
        kf_kms_mfg_setup(f->kms, ACTOR, "USPS", KF_MFG_POSTAL, "US", &recs) < 0 ||
        kf_kms_mfg_setup(f->kms, ACTOR, "EARTH", KF_MFG_EARTH, NULL, &recs) < 0)
        return -1;
    const char *domains[] = {"VE", "USPS", "EARTH"};
    for (int i = 0; i < 3; i++)
        if (kf_kms_mfg_enroll(f->kms, ACTOR, domains[i], STEEL, f->steel.sign_pub, f->steel.enc_pub,
                              &recs) < 0 ||
            kf_kms_mfg_enroll(f->kms, ACTOR, domains[i], STEEL2, f->steel2.sign_pub,
                              f->steel2.enc_pub, &recs) < 0)
            return -1;
    kf_buf_free(&recs);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (kms_dir_remove(f->kms, f->dir) < 0)
        return -1;
    free(f);
    return 0;
}

/* ---- The line: request, open, install, report ---- */

struct issued {
    char domain[16];
    uint64_t key_id;
    uint8_t k[32];     /* as the Steel opened it from MI4 */
    uint8_t tokens[8]; /* MI4's */
    int64_t t_request;
};

/* MI0..MI4 for the Steel `who` (0 or 1), as the Steel checks and opens MI4. */
static void request_key(struct fixture *f, const char *domain, int who, struct issued *out)
{
    const struct role_keys *sk = who ? &f->steel2 : &f->steel;
    const char *sid = who ? STEEL2 : STEEL;
    struct domain_certs c;
    kf_buf recs;
    struct kf_mfg_record d;
    const uint8_t *p;
    size_t len;
    read_certs(f->kms, domain, &c);
    buf_new(&recs);
    out->t_request = (int64_t)time(NULL);
    assert_int_equal(kf_kms_mfg_request_key(f->kms, ACTOR, domain, sid, &recs), KF_OK);
    assert_int_equal(count_records(&recs), 1);
    nth_record(&recs, 0, &p, &len);
    assert_int_equal(kf_mfg_record_open(p, len, c.o_pub, KF_MFG_REC_DISTRIBUTE, &d), KF_OK);
    assert_string_equal(d.steel_id, sid);
    assert_string_equal(d.domain, domain);
    snprintf(out->domain, sizeof(out->domain), "%s", domain);
    out->key_id = d.key_id;
    assert_int_equal(kf_mfg_open_key(sk->enc_priv, domain, d.key_id, sid, d.sealed_key, out->k),
                     KF_OK);
    memcpy(out->tokens, d.test_tokens, 8);
    kf_buf_free(&recs);
}

/* MI7 or InstallFailed signed with sign_priv as signer. */
static void make_report(const struct issued *is, const char *signer, const uint8_t *sign_priv,
                        const char *msn, const uint8_t tokens[8], int64_t when, int32_t reason,
                        const char *oak_id, kf_buf *out)
{
    struct kf_mfg_record m;
    memset(&m, 0, sizeof(m));
    if (reason) {
        m.type = KF_MFG_REC_INSTALL_FAILED;
        m.fields = KF_MFG_F_STATUS | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID | KF_MFG_F_KEY_ID |
                   KF_MFG_F_REASON | KF_MFG_F_EVENT_TIME | (msn ? KF_MFG_F_MSN : 0);
        m.status = KF_MFG_BAD;
        m.reason = reason;
    } else {
        m.type = KF_MFG_REC_INSTALLED;
        m.fields = KF_MFG_F_STATUS | KF_MFG_F_ROLE_ID | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID |
                   KF_MFG_F_KEY_ID | KF_MFG_F_MSN | KF_MFG_F_TEST_TOKENS | KF_MFG_F_EVENT_TIME;
        m.status = KF_MFG_INSTALLED;
        snprintf(m.role_id, sizeof(m.role_id), "%s", oak_id);
        memcpy(m.test_tokens, tokens, 8);
    }
    if (msn)
        snprintf(m.msn, sizeof(m.msn), "%s", msn);
    snprintf(m.domain, sizeof(m.domain), "%s", is->domain);
    snprintf(m.steel_id, sizeof(m.steel_id), "%s", signer);
    m.key_id = is->key_id;
    m.event_time = when;
    kf_buf_reset(out);
    assert_int_equal(kf_mfg_record_sign(&m, signer, sign_priv, out), KF_OK);
}

/* Install is into the device and report it; the MI10 status and reason. */
static int install(struct fixture *f, struct kfd_meter *m, const struct issued *is,
                   struct kf_mfg_record *mi10)
{
    struct domain_certs c;
    uint8_t tokens[8];
    kf_buf rep, recs;
    read_certs(f->kms, is->domain, &c);
    assert_int_equal(kfd_meter_install(m, is->domain, is->key_id, is->k, tokens), KF_OK);
    assert_memory_equal(tokens, is->tokens, 8); /* MI7: the Steel compares */
    buf_new(&rep);
    buf_new(&recs);
    make_report(is, STEEL, f->steel.sign_priv, m->msn, tokens, (int64_t)time(NULL), 0, c.o_id,
                &rep);
    int rc = kf_kms_mfg_report_install(f->kms, ACTOR, rep.data, rep.len, &recs);
    if (rc == KF_OK) {
        const uint8_t *p;
        size_t len;
        assert_int_equal(count_records(&recs), 1);
        nth_record(&recs, 0, &p, &len);
        assert_int_equal(kf_mfg_record_open(p, len, c.b_pub, KF_MFG_REC_CONFIRM_INSTALLED, mi10),
                         KF_OK);
    }
    kf_buf_free(&rep);
    kf_buf_free(&recs);
    return rc;
}

static void status_of(struct fixture *f, const char *domain, uint64_t key_id,
                      struct kf_mfg_key_info *info)
{
    assert_int_equal(kf_kms_mfg_status(f->kms, ACTOR, domain, key_id, NULL, info), KF_OK);
}

/* A device with a vendor and a postal (or earth) key, both installed. */
static void device_make(struct fixture *f, const char *msn, const char *postal, struct kfd_meter *m,
                        struct issued *ve, struct issued *po)
{
    struct kf_mfg_record mi10;
    assert_int_equal(kfd_meter_init(m, msn, store_nothing, NULL), KF_OK);
    request_key(f, "VE", 0, ve);
    assert_int_equal(install(f, m, ve, &mi10), KF_OK);
    assert_int_equal(mi10.status, KF_MFG_INSTALLED);
    request_key(f, postal, 0, po);
    assert_int_equal(install(f, m, po, &mi10), KF_OK);
    assert_int_equal(mi10.status, KF_MFG_INSTALLED);
}

static int mr1_make(struct kfd_meter *m, const char *country, int64_t date, const char *earth,
                    const char *country_domain, kf_buf *mr1)
{
    kf_buf_reset(mr1);
    return kfd_meter_register(m, country, "IND-1", date, earth, country_domain, mr1);
}

/* ---- Setup, certificates, enrolment ---- */

static void test_setup(void **state)
{
    struct fixture *f = *state;
    kf_buf recs;
    buf_new(&recs);
    struct domain_certs ve, us;
    read_certs(f->kms, "VE", &ve);
    read_certs(f->kms, "USPS", &us);
    assert_memory_not_equal(ve.m_pub, us.m_pub, 32); /* nothing shared across domains */
    assert_string_not_equal(ve.b_id, us.b_id);
    /* RoleCerts: M, O, B, then both Steels. */
    assert_int_equal(kf_kms_mfg_role_certs(f->kms, ACTOR, "VE", &recs), KF_OK);
    assert_int_equal(count_records(&recs), 5);
    const uint8_t *p;
    size_t len;
    struct kf_mfg_record r;
    nth_record(&recs, 3, &p, &len);
    assert_int_equal(kf_mfg_cert_check(p, len, ve.m_pub, "VE", KF_MFG_ROLE_STEEL, &r), KF_OK);
    assert_string_equal(r.role_id, STEEL);
    assert_memory_equal(r.enc_pub, f->steel.enc_pub, 32);
    /* A VE certificate certifies nothing in USPS. */
    assert_int_not_equal(kf_mfg_cert_check(p, len, us.m_pub, "USPS", 0, &r), KF_OK);

    /* Setup refusals. */
    kf_buf_reset(&recs);
    assert_int_equal(kf_kms_mfg_setup(f->kms, ACTOR, "VE", KF_MFG_VENDOR, NULL, &recs),
                     KF_ERR_EXISTS);
    assert_int_equal(kf_kms_mfg_setup(f->kms, ACTOR, "VE2", KF_MFG_VENDOR, NULL, &recs),
                     KF_ERR_MFG_PARAM); /* one vendor */
    assert_int_equal(kf_kms_mfg_setup(f->kms, ACTOR, "USPS2", KF_MFG_POSTAL, "US", &recs),
                     KF_ERR_MFG_PARAM); /* one postal domain per country */
    assert_int_equal(kf_kms_mfg_setup(f->kms, ACTOR, "UKRM", KF_MFG_POSTAL, NULL, &recs),
                     KF_ERR_MFG_COUNTRY);
    assert_int_equal(kf_kms_mfg_setup(f->kms, ACTOR, "UKRM", KF_MFG_POSTAL, "gb", &recs),
                     KF_ERR_MFG_COUNTRY);
    assert_int_equal(kf_kms_mfg_setup(f->kms, ACTOR, "MARS", KF_MFG_EARTH, "US", &recs),
                     KF_ERR_MFG_COUNTRY);
    assert_int_equal(kf_kms_mfg_setup(f->kms, ACTOR, "X", 4, NULL, &recs), KF_ERR_MFG_PARAM);
    assert_int_equal(kf_kms_mfg_setup(f->kms, ACTOR, "bad name", KF_MFG_VENDOR, NULL, &recs),
                     KF_ERR_MFG_PARAM);
    assert_int_equal(recs.len, 0);
    /* A second postal domain of another country is fine. */
    assert_int_equal(kf_kms_mfg_setup(f->kms, ACTOR, "UKRM", KF_MFG_POSTAL, "GB", &recs), KF_OK);
    assert_int_equal(count_records(&recs), 3);

    /* Enrolment refusals. */
    kf_buf_reset(&recs);
    assert_int_equal(
        kf_kms_mfg_enroll(f->kms, ACTOR, "VE", STEEL, f->steel.sign_pub, f->steel.enc_pub, &recs),
        KF_ERR_EXISTS);
    assert_int_equal(kf_kms_mfg_enroll(f->kms, ACTOR, "VE", "O00000077", f->steel.sign_pub,
                                       f->steel.enc_pub, &recs),
                     KF_ERR_MFG_ROLE);
    assert_int_equal(kf_kms_mfg_enroll(f->kms, ACTOR, "VE", "S0000001", f->steel.sign_pub,
                                       f->steel.enc_pub, &recs),
                     KF_ERR_MFG_ROLE);
    assert_int_equal(kf_kms_mfg_enroll(f->kms, ACTOR, "NOWHERE", "S00000003", f->steel.sign_pub,
                                       f->steel.enc_pub, &recs),
                     KF_ERR_MFG_SETUP);
    assert_int_equal(kf_kms_domain_create(f->kms, ACTOR, "PLAIN", NULL), KF_OK);
    assert_int_equal(kf_kms_mfg_enroll(f->kms, ACTOR, "PLAIN", "S00000003", f->steel.sign_pub,
                                       f->steel.enc_pub, &recs),
                     KF_ERR_MFG_SETUP);
    assert_int_equal(kf_kms_mfg_role_certs(f->kms, ACTOR, "PLAIN", &recs), KF_ERR_MFG_SETUP);
    assert_int_equal(kf_kms_mfg_request_key(f->kms, ACTOR, "PLAIN", STEEL, &recs),
                     KF_ERR_MFG_SETUP);
    assert_int_equal(recs.len, 0);
    /* A Tin enrols too; it receives no keys. */
    assert_int_equal(kf_kms_mfg_enroll(f->kms, ACTOR, "VE", "T00000001", f->steel2.sign_pub,
                                       f->steel2.enc_pub, &recs),
                     KF_OK);
    assert_int_equal(count_records(&recs), 4);
    kf_buf_reset(&recs);
    assert_int_equal(kf_kms_mfg_request_key(f->kms, ACTOR, "VE", "T00000001", &recs),
                     KF_ERR_MFG_ROLE);
    assert_int_equal(kf_kms_mfg_request_key(f->kms, ACTOR, "VE", "S00000099", &recs),
                     KF_ERR_MFG_ROLE);
    kf_buf_free(&recs);
}

/* ---- Installation ---- */

static void test_install(void **state)
{
    struct fixture *f = *state;
    struct kfd_meter m;
    struct issued is;
    struct kf_mfg_record mi10;
    struct kf_mfg_key_info info;
    assert_int_equal(kfd_meter_init(&m, "M-0001", store_nothing, NULL), KF_OK);
    request_key(f, "VE", 0, &is);
    status_of(f, "VE", is.key_id, &info);
    assert_int_equal(info.status, KF_MFG_NEW);
    assert_string_equal(info.steel_id, STEEL);
    assert_true(info.t_request >= is.t_request && info.t_install == 0);

    assert_int_equal(install(f, &m, &is, &mi10), KF_OK);
    assert_int_equal(mi10.status, KF_MFG_INSTALLED);
    assert_string_equal(mi10.msn, "M-0001");
    assert_int_equal(mi10.key_id, is.key_id);
    status_of(f, "VE", is.key_id, &info);
    assert_int_equal(info.status, KF_MFG_INSTALLED);
    assert_string_equal(info.msn, "M-0001");
    assert_true(info.t_install >= info.t_request && info.t_install_verify >= info.t_install);
    /* By MSN as well. */
    struct kf_mfg_key_info by_msn;
    assert_int_equal(kf_kms_mfg_status(f->kms, ACTOR, "VE", 0, "M-0001", &by_msn), KF_OK);
    assert_int_equal(by_msn.key_id, is.key_id);
    assert_int_equal(kf_kms_mfg_status(f->kms, ACTOR, "VE", 0, "NOBODY", &by_msn),
                     KF_ERR_MFG_UNKNOWN);
    assert_int_equal(kf_kms_mfg_status(f->kms, ACTOR, "VE", 999, NULL, &by_msn),
                     KF_ERR_MFG_UNKNOWN);

    /* A second report for the same key: installed, or attempted, once. */
    struct domain_certs c;
    read_certs(f->kms, "VE", &c);
    kf_buf rep, recs;
    buf_new(&rep);
    buf_new(&recs);
    make_report(&is, STEEL, f->steel.sign_priv, "M-0001", is.tokens, (int64_t)time(NULL), 0, c.o_id,
                &rep);
    assert_int_equal(kf_kms_mfg_report_install(f->kms, ACTOR, rep.data, rep.len, &recs),
                     KF_ERR_MFG_STATUS);
    assert_int_equal(recs.len, 0);
    /* A key is sealed to the Steel it was made for: another Steel cannot report it. */
    struct issued other;
    struct kfd_meter m2;
    assert_int_equal(kfd_meter_init(&m2, "M-0002", store_nothing, NULL), KF_OK);
    request_key(f, "VE", 0, &other);
    make_report(&other, STEEL2, f->steel2.sign_priv, "M-0002", other.tokens, (int64_t)time(NULL), 0,
                c.o_id, &rep);
    assert_int_equal(kf_kms_mfg_report_install(f->kms, ACTOR, rep.data, rep.len, &recs),
                     KF_ERR_MFG_STEEL_ID);
    status_of(f, "VE", other.key_id, &info);
    assert_int_equal(info.status, KF_MFG_NEW);
    kf_buf_free(&rep);
    kf_buf_free(&recs);
    kfd_meter_wipe(&m);
    kfd_meter_wipe(&m2);
}

static void test_install_faults(void **state)
{
    struct fixture *f = *state;
    struct domain_certs c;
    struct issued is, is2;
    struct kf_mfg_key_info info;
    const uint8_t *p;
    size_t len;
    struct kf_mfg_record mi10;
    kf_buf rep, recs;
    buf_new(&rep);
    buf_new(&recs);
    read_certs(f->kms, "VE", &c);

    /* Device tokens wrong: the key is burnt (Bad), not refused. */
    request_key(f, "VE", 0, &is);
    uint8_t wrong[8];
    memcpy(wrong, is.tokens, 8);
    wrong[0] ^= 0xFF;
    make_report(&is, STEEL, f->steel.sign_priv, "M-0100", wrong, (int64_t)time(NULL), 0, c.o_id,
                &rep);
    assert_int_equal(kf_kms_mfg_report_install(f->kms, ACTOR, rep.data, rep.len, &recs), KF_OK);
    nth_record(&recs, 0, &p, &len);
    assert_int_equal(kf_mfg_record_open(p, len, c.b_pub, KF_MFG_REC_CONFIRM_INSTALLED, &mi10),
                     KF_OK);
    assert_int_equal(mi10.status, KF_MFG_BAD);
    assert_int_equal(mi10.reason, KF_ERR_MFG_TOKENS);
    status_of(f, "VE", is.key_id, &info);
    assert_int_equal(info.status, KF_MFG_BAD);
    assert_int_equal(info.reason, KF_ERR_MFG_TOKENS);

    /* RequestKey while the Steel's earlier key is New: that one was lost. */
    request_key(f, "VE", 0, &is);
    request_key(f, "VE", 0, &is2);
    assert_true(is2.key_id > is.key_id);
    status_of(f, "VE", is.key_id, &info);
    assert_int_equal(info.status, KF_MFG_BAD);
    assert_int_equal(info.reason, KF_ERR_MFG_LOST);
    status_of(f, "VE", is2.key_id, &info);
    assert_int_equal(info.status, KF_MFG_NEW);
    /* The other Steel's open key is its own business. */
    struct issued s2;
    request_key(f, "VE", 1, &s2);
    status_of(f, "VE", is2.key_id, &info);
    assert_int_equal(info.status, KF_MFG_NEW);

    /* MI7 signed by a key that is not the enrolled one, or by an unenrolled role. */
    struct role_keys rogue;
    role_keys_make(&rogue);
    make_report(&is2, STEEL, rogue.sign_priv, "M-0101", is2.tokens, (int64_t)time(NULL), 0, c.o_id,
                &rep);
    kf_buf_reset(&recs);
    assert_int_equal(kf_kms_mfg_report_install(f->kms, ACTOR, rep.data, rep.len, &recs),
                     KF_ERR_BAD_SIGNATURE); /* not under the Steel's certificate of the named domain */
    assert_int_equal(kms_mfg_report_install_in(f->kms, ACTOR, "VE", rep.data, rep.len, &recs),
                     KF_ERR_BAD_SIGNATURE);
    make_report(&is2, "S00000077", rogue.sign_priv, "M-0101", is2.tokens, (int64_t)time(NULL), 0,
                c.o_id, &rep);
    assert_int_equal(kms_mfg_report_install_in(f->kms, ACTOR, "VE", rep.data, rep.len, &recs),
                     KF_ERR_MFG_ROLE);
    /* A report of one domain presented for another. */
    make_report(&is2, STEEL, f->steel.sign_priv, "M-0101", is2.tokens, (int64_t)time(NULL), 0,
                c.o_id, &rep);
    assert_int_equal(kms_mfg_report_install_in(f->kms, ACTOR, "USPS", rep.data, rep.len, &recs),
                     KF_ERR_MFG_PARAM);
    /* MI7 with an EventTime before the request. */
    make_report(&is2, STEEL, f->steel.sign_priv, "M-0101", is2.tokens, is2.t_request - 3600, 0,
                c.o_id, &rep);
    assert_int_equal(kf_kms_mfg_report_install(f->kms, ACTOR, rep.data, rep.len, &recs),
                     KF_ERR_MFG_TIME);
    /* A record that is not a report. */
    kf_buf_reset(&recs);
    assert_int_equal(kf_kms_mfg_role_certs(f->kms, ACTOR, "VE", &recs), KF_OK);
    nth_record(&recs, 0, &p, &len);
    kf_buf_reset(&rep);
    assert_int_equal(kf_buf_put_bytes(&rep, p, len), KF_OK);
    kf_buf_reset(&recs);
    assert_int_equal(kf_kms_mfg_report_install(f->kms, ACTOR, rep.data, rep.len, &recs),
                     KF_ERR_MFG_COMMAND);
    uint8_t junk[40] = {0x54, 0x02, 0x01, 0x01, 0, 0, 0, 32};
    assert_int_equal(kf_kms_mfg_report_install(f->kms, ACTOR, junk, sizeof(junk), &recs),
                     KF_ERR_MFG_FRAMING);
    assert_int_equal(recs.len, 0);
    status_of(f, "VE", is2.key_id, &info);
    assert_int_equal(info.status, KF_MFG_NEW); /* none of that touched it */

    /* InstallFailed (from any enrolled Steel): Bad with its reason. */
    make_report(&is2, STEEL2, f->steel2.sign_priv, NULL, NULL, (int64_t)time(NULL),
                KF_ERR_MFG_STEEL_ID, NULL, &rep);
    assert_int_equal(kf_kms_mfg_report_install(f->kms, ACTOR, rep.data, rep.len, &recs), KF_OK);
    nth_record(&recs, 0, &p, &len);
    assert_int_equal(kf_mfg_record_open(p, len, c.b_pub, KF_MFG_REC_CONFIRM_INSTALLED, &mi10),
                     KF_OK);
    assert_int_equal(mi10.status, KF_MFG_BAD);
    assert_int_equal(mi10.reason, KF_ERR_MFG_STEEL_ID);
    status_of(f, "VE", is2.key_id, &info);
    assert_int_equal(info.status, KF_MFG_BAD);
    assert_int_equal(info.reason, KF_ERR_MFG_STEEL_ID);
    /* ... once. */
    kf_buf_reset(&recs);
    assert_int_equal(kf_kms_mfg_report_install(f->kms, ACTOR, rep.data, rep.len, &recs),
                     KF_ERR_MFG_STATUS);
    kf_buf_free(&rep);
    kf_buf_free(&recs);
}

/* Flip one byte of a stored archive record behind the server's back. */
static void tamper(struct fixture *f, const char *domain, uint64_t key_id)
{
    char path[128];
    sqlite3 *db;
    snprintf(path, sizeof(path), "%s/keyfleet.db", f->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char sql[256];
    /* As a blob: read, flip, write. */
    sqlite3_stmt *s;
    snprintf(sql, sizeof(sql),
             "SELECT record FROM mfg_key WHERE key_id = %llu AND domain_id = "
             "(SELECT id FROM domain WHERE name = '%s')",
             (unsigned long long)key_id, domain);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int n = sqlite3_column_bytes(s, 0);
    uint8_t *rec = malloc((size_t)n);
    memcpy(rec, sqlite3_column_blob(s, 0), (size_t)n);
    sqlite3_finalize(s);
    rec[n / 2] ^= 0x20;
    snprintf(sql, sizeof(sql),
             "UPDATE mfg_key SET record = ?1 WHERE key_id = %llu AND domain_id = "
             "(SELECT id FROM domain WHERE name = '%s')",
             (unsigned long long)key_id, domain);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    sqlite3_bind_blob(s, 1, rec, n, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(s), SQLITE_DONE);
    assert_int_equal(sqlite3_changes(db), 1);
    sqlite3_finalize(s);
    sqlite3_close(db);
    free(rec);
}

static void test_archive_tampered(void **state)
{
    struct fixture *f = *state;
    struct kfd_meter m;
    struct issued ve, us;
    struct kf_mfg_key_info info;
    device_make(f, "M-0200", "USPS", &m, &ve, &us);
    tamper(f, "USPS", us.key_id);
    assert_int_equal(kf_kms_mfg_status(f->kms, ACTOR, "USPS", us.key_id, NULL, &info),
                     KF_ERR_MFG_ARCHIVE);
    assert_int_equal(kf_kms_mfg_status(f->kms, ACTOR, "USPS", 0, "M-0200", &info),
                     KF_ERR_MFG_ARCHIVE);
    kf_buf mr1, recs;
    buf_new(&mr1);
    buf_new(&recs);
    assert_int_equal(mr1_make(&m, "US", (int64_t)time(NULL), NULL, NULL, &mr1), KF_OK);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs),
                     KF_ERR_MFG_ARCHIVE);
    assert_int_equal(recs.len, 0);
    struct kms_mfg_device_key dk;
    assert_int_equal(kms_mfg_device_key(f->kms, "USPS", "M-0200", &dk), KF_ERR_MFG_ARCHIVE);
    assert_int_equal(kf_kms_mfg_retire(f->kms, ACTOR, "USPS", us.key_id), KF_ERR_MFG_ARCHIVE);
    /* The vendor key of the same device is untouched, and was not registered alone. */
    status_of(f, "VE", ve.key_id, &info);
    assert_int_equal(info.status, KF_MFG_INSTALLED);
    kf_buf_free(&mr1);
    kf_buf_free(&recs);
    kfd_meter_wipe(&m);
}

/* ---- Registration ---- */

static void verify_mr4s(struct fixture *f, const kf_buf *recs, const char *const domains[],
                        size_t n, const char *msn)
{
    assert_int_equal(count_records(recs), n);
    for (size_t i = 0; i < n; i++) {
        struct domain_certs c;
        struct kf_mfg_record r;
        const uint8_t *p;
        size_t len;
        read_certs(f->kms, domains[i], &c);
        nth_record(recs, i, &p, &len);
        assert_int_equal(kf_mfg_record_open(p, len, c.b_pub, KF_MFG_REC_CONFIRM_REGISTERED, &r),
                         KF_OK);
        assert_string_equal(r.domain, domains[i]);
        assert_string_equal(r.msn, msn);
        assert_string_equal(r.country, "US");
        assert_int_equal(r.status, KF_MFG_ACTIVE);
    }
}

static void test_register(void **state)
{
    struct fixture *f = *state;
    struct kfd_meter m, copy;
    struct issued ve, us;
    struct kf_mfg_key_info info;
    kf_buf mr1, recs;
    buf_new(&mr1);
    buf_new(&recs);
    device_make(f, "M-0300", "USPS", &m, &ve, &us);
    status_of(f, "USPS", us.key_id, &info);
    int64_t installed = info.t_install_verify;

    /* Refusals first, each leaving both keys Installed (all or nothing). */
    copy = m;
    assert_int_equal(mr1_make(&copy, "US", installed - 100, NULL, NULL, &mr1), KF_OK);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs), KF_ERR_MFG_TIME);
    copy = m;
    assert_int_equal(mr1_make(&copy, "GB", (int64_t)time(NULL), NULL, NULL, &mr1), KF_OK);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs),
                     KF_ERR_MFG_COUNTRY); /* USPS is the US's */
    copy = m;
    assert_int_equal(mr1_make(&copy, "US", (int64_t)time(NULL), NULL, NULL, &mr1), KF_OK);
    mr1.data[mr1.len - 1] ^= 1; /* the last MAC's last byte */
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs),
                     KF_ERR_MFG_REG_MAC);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len / 2, &recs),
                     KF_ERR_MFG_FRAMING);
    assert_int_equal(recs.len, 0);
    status_of(f, "VE", ve.key_id, &info);
    assert_int_equal(info.status, KF_MFG_INSTALLED);
    struct kms_mfg_device_key dk;
    assert_int_equal(kms_mfg_device_key(f->kms, "VE", "M-0300", &dk), KF_OK);
    assert_int_equal(dk.status, KF_MFG_INSTALLED);
    assert_true(kf_ct_is_zero(dk.key, 32)); /* no key until Active */

    /* The device's own MR1: both domains Active, one MR4 each. */
    assert_int_equal(mr1_make(&m, "US", (int64_t)time(NULL), NULL, NULL, &mr1), KF_OK);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs), KF_OK);
    const char *const both[] = {"VE", "USPS"};
    verify_mr4s(f, &recs, both, 2, "M-0300");
    status_of(f, "VE", ve.key_id, &info);
    assert_int_equal(info.status, KF_MFG_ACTIVE);
    assert_string_equal(info.indicia, "IND-1");
    assert_string_equal(info.country, "US");
    assert_true(info.t_register >= installed && info.t_register_verify >= info.t_register);
    status_of(f, "USPS", us.key_id, &info);
    assert_int_equal(info.status, KF_MFG_ACTIVE);
    /* The verifier's view: the master key, opened by Brass. */
    assert_int_equal(kms_mfg_device_key(f->kms, "USPS", "M-0300", &dk), KF_OK);
    assert_int_equal(dk.status, KF_MFG_ACTIVE);
    assert_int_equal(dk.key_id, us.key_id);
    assert_memory_equal(dk.key, us.k, 32);
    assert_int_equal(dk.registered_at, info.t_register);
    kf_wipe(&dk, sizeof(dk));
    assert_int_equal(kms_mfg_device_key(f->kms, "USPS", "NOBODY", &dk), KF_ERR_MFG_UNKNOWN);

    /* Registered once. */
    kf_buf_reset(&recs);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs),
                     KF_ERR_MFG_STATUS);

    /* Registration before installation is confirmed. */
    struct kfd_meter m2;
    struct issued pending;
    uint8_t tokens[8];
    assert_int_equal(kfd_meter_init(&m2, "M-0301", store_nothing, NULL), KF_OK);
    request_key(f, "VE", 0, &pending);
    assert_int_equal(kfd_meter_install(&m2, "VE", pending.key_id, pending.k, tokens), KF_OK);
    assert_int_equal(mr1_make(&m2, "US", (int64_t)time(NULL), NULL, NULL, &mr1), KF_OK);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs),
                     KF_ERR_MFG_UNKNOWN); /* the archive knows no device M-0301 yet */
    status_of(f, "VE", pending.key_id, &info);
    assert_int_equal(info.status, KF_MFG_NEW);
    /* A key the archive knows for this device but that went Bad: not registrable. */
    struct kfd_meter m3;
    struct issued burnt;
    struct domain_certs c;
    kf_buf rep;
    buf_new(&rep);
    read_certs(f->kms, "VE", &c);
    assert_int_equal(kfd_meter_init(&m3, "M-0302", store_nothing, NULL), KF_OK);
    request_key(f, "VE", 0, &burnt);
    assert_int_equal(kfd_meter_install(&m3, "VE", burnt.key_id, burnt.k, tokens), KF_OK);
    tokens[3] ^= 0x10;
    make_report(&burnt, STEEL, f->steel.sign_priv, "M-0302", tokens, (int64_t)time(NULL), 0,
                c.o_id, &rep);
    kf_buf_reset(&recs);
    assert_int_equal(kf_kms_mfg_report_install(f->kms, ACTOR, rep.data, rep.len, &recs), KF_OK);
    status_of(f, "VE", burnt.key_id, &info);
    assert_int_equal(info.status, KF_MFG_BAD);
    assert_int_equal(mr1_make(&m3, "US", (int64_t)time(NULL), NULL, NULL, &mr1), KF_OK);
    kf_buf_reset(&recs);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs),
                     KF_ERR_MFG_STATUS);
    kf_buf_free(&rep);
    kfd_meter_wipe(&m3);
    kf_buf_free(&mr1);
    kf_buf_free(&recs);
    kfd_meter_wipe(&m);
    kfd_meter_wipe(&m2);
}

static void test_register_earth(void **state)
{
    struct fixture *f = *state;
    struct kfd_meter m, before;
    struct issued ve, earth;
    struct kf_mfg_key_info info;
    kf_buf mr1, recs;
    buf_new(&mr1);
    buf_new(&recs);
    device_make(f, "M-0400", "EARTH", &m, &ve, &earth);
    before = m;
    /* To a country without a postal domain: refused. */
    struct kfd_meter nowhere = m;
    assert_int_equal(mr1_make(&nowhere, "FR", (int64_t)time(NULL), "EARTH", "LAPOSTE", &mr1),
                     KF_OK);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs),
                     KF_ERR_MFG_COUNTRY);

    assert_int_equal(mr1_make(&m, "US", (int64_t)time(NULL), "EARTH", "USPS", &mr1), KF_OK);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs), KF_OK);
    const char *const both[] = {"VE", "USPS"};
    verify_mr4s(f, &recs, both, 2, "M-0400");
    /* EARTH's record: Transferred, pointing at its new home. */
    status_of(f, "EARTH", earth.key_id, &info);
    assert_int_equal(info.status, KF_MFG_TRANSFERRED);
    assert_string_equal(info.moved_domain, "USPS");
    assert_true(info.moved_key_id > 0);
    uint64_t moved = info.moved_key_id;
    /* USPS's: Active under its own new key ID, the same K the device holds. */
    status_of(f, "USPS", moved, &info);
    assert_int_equal(info.status, KF_MFG_ACTIVE);
    assert_string_equal(info.msn, "M-0400");
    assert_string_equal(info.steel_id, STEEL);
    struct kms_mfg_device_key dk;
    assert_int_equal(kms_mfg_device_key(f->kms, "USPS", "M-0400", &dk), KF_OK);
    assert_int_equal(dk.key_id, moved);
    assert_memory_equal(dk.key, earth.k, 32);
    kf_wipe(&dk, sizeof(dk));
    assert_int_equal(kms_mfg_device_key(f->kms, "EARTH", "M-0400", &dk), KF_OK);
    assert_int_equal(dk.status, KF_MFG_TRANSFERRED);
    assert_true(kf_ct_is_zero(dk.key, 32));

    /* A second registration, to GB (the device itself would refuse: made
     * from its state as it was before): refused, nothing moves. */
    assert_int_equal(kf_kms_mfg_setup(f->kms, ACTOR, "UKRM", KF_MFG_POSTAL, "GB", &recs), KF_OK);
    kf_buf_reset(&recs);
    assert_int_equal(mr1_make(&before, "GB", (int64_t)time(NULL), "EARTH", "UKRM", &mr1), KF_OK);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs),
                     KF_ERR_MFG_COUNTRY);
    assert_int_equal(recs.len, 0);
    /* The earth key never returns: the transfer cannot be repeated either. */
    kf_buf_reset(&mr1);
    assert_int_equal(mr1_make(&before, "GB", (int64_t)time(NULL), NULL, NULL, &mr1), KF_OK);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs),
                     KF_ERR_MFG_COUNTRY);
    status_of(f, "EARTH", earth.key_id, &info);
    assert_int_equal(info.status, KF_MFG_TRANSFERRED);
    kf_buf_free(&mr1);
    kf_buf_free(&recs);
    kfd_meter_wipe(&m);
    kfd_meter_wipe(&before);
    kfd_meter_wipe(&nowhere);
}

static void test_retire(void **state)
{
    struct fixture *f = *state;
    struct kfd_meter m;
    struct issued ve, us;
    struct kf_mfg_key_info info;
    kf_buf mr1, recs;
    buf_new(&mr1);
    buf_new(&recs);
    device_make(f, "M-0500", "USPS", &m, &ve, &us);
    assert_int_equal(mr1_make(&m, "US", (int64_t)time(NULL), NULL, NULL, &mr1), KF_OK);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs), KF_OK);
    assert_int_equal(kf_kms_mfg_retire(f->kms, ACTOR, "USPS", us.key_id), KF_OK);
    status_of(f, "USPS", us.key_id, &info);
    assert_int_equal(info.status, KF_MFG_OBSOLETE);
    struct kms_mfg_device_key dk;
    assert_int_equal(kms_mfg_device_key(f->kms, "USPS", "M-0500", &dk), KF_OK);
    assert_int_equal(dk.status, KF_MFG_OBSOLETE); /* not Active: no key */
    assert_true(kf_ct_is_zero(dk.key, 32));
    assert_int_equal(kf_kms_mfg_retire(f->kms, ACTOR, "USPS", us.key_id), KF_ERR_MFG_STATUS);
    assert_int_equal(kf_kms_mfg_retire(f->kms, ACTOR, "USPS", 9999), KF_ERR_MFG_UNKNOWN);
    /* A New key cannot be retired; a Bad one neither. */
    struct issued fresh;
    request_key(f, "VE", 0, &fresh);
    assert_int_equal(kf_kms_mfg_retire(f->kms, ACTOR, "VE", fresh.key_id), KF_ERR_MFG_STATUS);
    kf_buf_free(&mr1);
    kf_buf_free(&recs);
    kfd_meter_wipe(&m);
}

/* ---- The KMIP layer: payloads, the command table, principals ---- */

static kf_ttlv *request(kf_arena *a, uint32_t op, kf_ttlv **payload)
{
    return kf_ttlv_request(a, 2, 1, op, payload);
}

/* Run msg as who: the answer's payload, and the kf error code (0 on success). */
static const kf_ttlv *run_kmip(kf_kms *kms, const struct kf_principal *who, kf_arena *a,
                               const kf_ttlv *msg, int *code)
{
    const kf_ttlv *r = kms_kmip_exchange(kms, who, a, msg);
    const kf_ttlv *item = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
    uint32_t st = 99;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_STATUS), &st), KF_OK);
    const kf_ttlv *payload = kf_ttlv_find(item, KMIP_TAG_RESPONSE_PAYLOAD);
    *code = 0;
    if (st != KMIP_RESULT_STATUS_SUCCESS) {
        int32_t v = 0;
        assert_non_null(kf_ttlv_find(item, KMIP_TAG_RESULT_MESSAGE));
        assert_int_equal(kf_ttlv_get_int(kf_ttlv_find(payload, KMIP_TAG_KEYFLEET_ERROR_CODE), &v),
                         KF_OK);
        assert_true(v < 0);
        *code = v;
    }
    return payload;
}

static struct kf_principal principal(const char *name, unsigned roles, const char *domain)
{
    struct kf_principal p = {.roles = roles, .ndomains = 1};
    snprintf(p.name, sizeof(p.name), "%s", name);
    snprintf(p.domains[0], sizeof(p.domains[0]), "%s", domain);
    return p;
}

static size_t count_items(const kf_ttlv *payload, uint32_t tag)
{
    return kf_ttlv_count(payload, tag);
}

static void test_kmip_command_table(void **state)
{
    struct fixture *f = *state;
    struct kf_principal admin, steel, verifier, registrar, steel_us;
    kf_principal_local_admin(&admin, "test-admin");
    steel = principal("cert:CN=line-1", KF_ROLE_STEEL, "VE");
    steel_us = principal("cert:CN=line-us", KF_ROLE_STEEL, "USPS");
    verifier = principal("cert:CN=verifier", KF_ROLE_VERIFIER, "VE");
    registrar = principal("cert:CN=registrar", KF_ROLE_REGISTRAR, "VE");
    snprintf(registrar.domains[1], sizeof(registrar.domains[1]), "USPS");
    registrar.ndomains = 2;
    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    int code;
    kf_ttlv *p, *msg;
    const kf_ttlv *out;

    /* RequestKey: a Steel in its domain; not in another; a verifier never. */
    msg = request(a, KMIP_OP_KEYFLEET_MFG_REQUEST_KEY, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_STEEL_ID, STEEL);
    out = run_kmip(f->kms, &steel, a, msg, &code);
    assert_int_equal(code, 0);
    assert_int_equal(count_items(out, KMIP_TAG_KEYFLEET_SIGNED_RECORD), 1);
    run_kmip(f->kms, &verifier, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_COMMAND);
    run_kmip(f->kms, &steel_us, a, msg, &code);
    assert_int_equal(code, KF_ERR_PERM);
    run_kmip(f->kms, &registrar, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_COMMAND);
    /* A station whose certificate is named after another Steel ID may not ask in STEEL's
     * name; one named after STEEL may (and burns the open key of the first request). */
    struct kf_principal other_station = principal("cert:CN=S00000009,O=line", KF_ROLE_STEEL, "VE");
    run_kmip(f->kms, &other_station, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_STEEL_ID);
    struct kf_principal this_station = principal("cert:CN=" STEEL ",O=line", KF_ROLE_STEEL, "VE");
    out = run_kmip(f->kms, &this_station, a, msg, &code);
    assert_int_equal(code, 0);
    assert_int_equal(count_items(out, KMIP_TAG_KEYFLEET_SIGNED_RECORD), 1);

    /* The Distribute it answered, opened as the Steel does, installed, reported over KMIP. */
    kf_buf bytes;
    buf_new(&bytes);
    assert_int_equal(kf_ttlv_encode(kf_ttlv_find(out, KMIP_TAG_KEYFLEET_SIGNED_RECORD), &bytes),
                     KF_OK);
    struct domain_certs c;
    struct kf_mfg_record d;
    read_certs(f->kms, "VE", &c);
    assert_int_equal(kf_mfg_record_open(bytes.data, bytes.len, c.o_pub, KF_MFG_REC_DISTRIBUTE, &d),
                     KF_OK);
    struct issued is = {.domain = "VE", .key_id = d.key_id};
    assert_int_equal(kf_mfg_open_key(f->steel.enc_priv, "VE", d.key_id, STEEL, d.sealed_key, is.k),
                     KF_OK);
    struct kfd_meter m;
    uint8_t tokens[8];
    assert_int_equal(kfd_meter_init(&m, "M-0600", store_nothing, NULL), KF_OK);
    assert_int_equal(kfd_meter_install(&m, "VE", is.key_id, is.k, tokens), KF_OK);
    make_report(&is, STEEL, f->steel.sign_priv, "M-0600", tokens, (int64_t)time(NULL), 0, c.o_id,
                &bytes);
    kf_ttlv *rec;
    assert_int_equal(kf_ttlv_decode(bytes.data, bytes.len, NULL, a, &rec), KF_OK);
    /* A Distribute is not a record a Steel sends. */
    {
        kf_buf dist;
        buf_new(&dist);
        assert_int_equal(kf_ttlv_encode(kf_ttlv_find(out, KMIP_TAG_KEYFLEET_SIGNED_RECORD), &dist),
                         KF_OK);
        kf_ttlv *drec;
        assert_int_equal(kf_ttlv_decode(dist.data, dist.len, NULL, a, &drec), KF_OK);
        msg = request(a, KMIP_OP_KEYFLEET_MFG_REPORT_INSTALL, &p);
        kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
        assert_int_equal(kf_ttlv_append(p, drec), KF_OK);
        run_kmip(f->kms, &steel, a, msg, &code);
        assert_int_equal(code, KF_ERR_MFG_COMMAND);
        kf_buf_free(&dist);
    }
    msg = request(a, KMIP_OP_KEYFLEET_MFG_REPORT_INSTALL, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    assert_int_equal(kf_ttlv_append(p, rec), KF_OK);
    run_kmip(f->kms, &verifier, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_COMMAND);
    out = run_kmip(f->kms, &steel, a, msg, &code);
    assert_int_equal(code, 0);
    assert_int_equal(count_items(out, KMIP_TAG_KEYFLEET_SIGNED_RECORD), 1);
    run_kmip(f->kms, &steel, a, msg, &code); /* again */
    assert_int_equal(code, KF_ERR_MFG_STATUS);

    /* Status: admin, registrar, Steel; not a verifier. */
    msg = request(a, KMIP_OP_KEYFLEET_MFG_STATUS, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_MSN, "M-0600");
    out = run_kmip(f->kms, &registrar, a, msg, &code);
    assert_int_equal(code, 0);
    const kf_ttlv *info = kf_ttlv_find(out, KMIP_TAG_KEYFLEET_MFG_KEY_INFO);
    uint32_t status = 0;
    int64_t key_id = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(info, KMIP_TAG_KEYFLEET_KEY_STATUS), &status),
                     KF_OK);
    assert_int_equal(status, KF_MFG_INSTALLED);
    assert_int_equal(kf_ttlv_get_long(kf_ttlv_find(info, KMIP_TAG_KEYFLEET_KEY_ID), &key_id),
                     KF_OK);
    assert_int_equal((uint64_t)key_id, is.key_id);
    assert_true(kf_ttlv_text_equals(kf_ttlv_find(info, KMIP_TAG_KEYFLEET_STEEL_ID), STEEL));
    assert_non_null(kf_ttlv_find(info, KMIP_TAG_KEYFLEET_INSTALL_TIME));
    assert_null(kf_ttlv_find(info, KMIP_TAG_KEYFLEET_REGISTER_TIME));
    run_kmip(f->kms, &verifier, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_COMMAND);

    /* Register: a registrar of every domain named; a Steel never. */
    kf_buf mr1;
    buf_new(&mr1);
    assert_int_equal(mr1_make(&m, "US", (int64_t)time(NULL), NULL, NULL, &mr1), KF_OK);
    kf_ttlv *reg;
    assert_int_equal(kf_ttlv_decode(mr1.data, mr1.len, NULL, a, &reg), KF_OK);
    msg = request(a, KMIP_OP_KEYFLEET_MFG_REGISTER, &p);
    assert_int_equal(kf_ttlv_append(p, reg), KF_OK);
    run_kmip(f->kms, &steel, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_COMMAND);
    struct kf_principal registrar_us = principal("cert:CN=reg-us", KF_ROLE_REGISTRAR, "USPS");
    run_kmip(f->kms, &registrar_us, a, msg, &code);
    assert_int_equal(code, KF_ERR_PERM);
    out = run_kmip(f->kms, &registrar, a, msg, &code);
    assert_int_equal(code, 0);
    assert_int_equal(count_items(out, KMIP_TAG_KEYFLEET_SIGNED_RECORD), 1);

    /* RoleCerts: admin, Steel, verifier; not a registrar. */
    msg = request(a, KMIP_OP_KEYFLEET_MFG_ROLE_CERTS, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    out = run_kmip(f->kms, &verifier, a, msg, &code);
    assert_int_equal(code, 0);
    assert_true(count_items(out, KMIP_TAG_KEYFLEET_SIGNED_RECORD) >= 5);
    run_kmip(f->kms, &registrar, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_COMMAND);

    /* Setup, enrol, retire: admin only. */
    msg = request(a, KMIP_OP_KEYFLEET_MFG_RETIRE, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    kf_ttlv_add_long(a, p, KMIP_TAG_KEYFLEET_KEY_ID, (int64_t)is.key_id);
    run_kmip(f->kms, &registrar, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_COMMAND);
    out = run_kmip(f->kms, &admin, a, msg, &code);
    assert_int_equal(code, 0);
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(out, KMIP_TAG_KEYFLEET_KEY_STATUS), &status),
                     KF_OK);
    assert_int_equal(status, KF_MFG_OBSOLETE);
    msg = request(a, KMIP_OP_KEYFLEET_MFG_ROLE_ENROLL, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_ROLE_ID, "S00000009");
    kf_ttlv_add_bytes(a, p, KMIP_TAG_KEYFLEET_SIGN_PUB, f->steel.sign_pub, 32);
    kf_ttlv_add_bytes(a, p, KMIP_TAG_KEYFLEET_ENC_PUB, f->steel.enc_pub, 32);
    run_kmip(f->kms, &steel, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_COMMAND);
    out = run_kmip(f->kms, &admin, a, msg, &code);
    assert_int_equal(code, 0);
    assert_int_equal(count_items(out, KMIP_TAG_KEYFLEET_SIGNED_RECORD), 4);
    msg = request(a, KMIP_OP_KEYFLEET_MFG_SETUP, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "LAPOSTE");
    kf_ttlv_add_enum(a, p, KMIP_TAG_KEYFLEET_DOMAIN_KIND, KF_MFG_POSTAL);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_COUNTRY, "FR");
    run_kmip(f->kms, &registrar, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_COMMAND);
    out = run_kmip(f->kms, &admin, a, msg, &code);
    assert_int_equal(code, 0);
    assert_int_equal(count_items(out, KMIP_TAG_KEYFLEET_SIGNED_RECORD), 3);

    /* Token operations are in the same table (their handlers are tokens'). */
    msg = request(a, KMIP_OP_KEYFLEET_TOKEN_KEY_EXPORT, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_ROLE_ID, "T00000001");
    kf_ttlv_add_int(a, p, KMIP_TAG_KEYFLEET_PERIOD_FIRST, 202601);
    kf_ttlv_add_int(a, p, KMIP_TAG_KEYFLEET_PERIOD_LAST, 202601);
    run_kmip(f->kms, &steel, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_COMMAND);

    /* Level 1: items out of order, missing, extra, of the wrong type. */
    msg = request(a, KMIP_OP_KEYFLEET_MFG_REQUEST_KEY, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_STEEL_ID, STEEL);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    run_kmip(f->kms, &steel, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_FRAMING);
    msg = request(a, KMIP_OP_KEYFLEET_MFG_STATUS, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    run_kmip(f->kms, &admin, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_FRAMING);
    msg = request(a, KMIP_OP_KEYFLEET_MFG_STATUS, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    kf_ttlv_add_int(a, p, KMIP_TAG_KEYFLEET_KEY_ID, 1);
    run_kmip(f->kms, &admin, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_FRAMING);
    msg = request(a, KMIP_OP_KEYFLEET_MFG_ROLE_ENROLL, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_ROLE_ID, "S00000010");
    kf_ttlv_add_bytes(a, p, KMIP_TAG_KEYFLEET_SIGN_PUB, f->steel.sign_pub, 31);
    kf_ttlv_add_bytes(a, p, KMIP_TAG_KEYFLEET_ENC_PUB, f->steel.enc_pub, 32);
    run_kmip(f->kms, &admin, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_FRAMING);
    msg = request(a, KMIP_OP_KEYFLEET_MFG_ROLE_CERTS, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "USPS");
    run_kmip(f->kms, &admin, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_FRAMING);
    /* Level 3 from the service, through KMIP: unknown domain. */
    msg = request(a, KMIP_OP_KEYFLEET_MFG_ROLE_CERTS, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "NOWHERE");
    run_kmip(f->kms, &admin, a, msg, &code);
    assert_int_equal(code, KF_ERR_MFG_SETUP);

    kf_arena_free(a);
    kf_buf_free(&bytes);
    kf_buf_free(&mr1);
    kfd_meter_wipe(&m);
}

/* ---- The role private keys are never served ---- */

struct role_objects {
    char uid[16][KF_UID_MAX];
    size_t n;
};

static int collect_role_objects(void *ctx, const struct kf_object *obj)
{
    struct role_objects *r = ctx;
    if (strncmp(obj->name, "mfg:", 4) == 0 && r->n < 16)
        assert_int_equal(kf_object_uid_format("VE", obj->key_id, r->uid[r->n++], KF_UID_MAX),
                         KF_OK);
    return KF_OK;
}

static int use_fn(void *ctx, const struct kf_object *obj, const uint8_t *m, size_t n)
{
    (void)ctx, (void)obj, (void)m, (void)n;
    return KF_OK;
}

static void test_role_keys_not_served(void **state)
{
    struct fixture *f = *state;
    struct role_objects r = {.n = 0};
    assert_int_equal(kf_kms_list(f->kms, ACTOR, "VE", NULL, collect_role_objects, &r), KF_OK);
    assert_int_equal(r.n, 5); /* M sign, O sign, B sign, enc, archive */
    struct kf_principal admin;
    kf_principal_local_admin(&admin, "test-admin");
    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    for (size_t i = 0; i < r.n; i++) {
        struct kf_object obj = {0};
        kf_buf m;
        assert_int_equal(kf_buf_alloc(&m, 64, 4096, KF_BUF_SECRET), KF_OK);
        assert_int_equal(kf_kms_get(f->kms, ACTOR, r.uid[i], &obj, &m), KF_ERR_EXPORT);
        assert_int_equal(m.len, 0);
        kf_object_clear(&obj);
        kf_buf_free(&m);
        assert_int_equal(
            kf_kms_use_key(f->kms, ACTOR, "Sign", r.uid[i], KF_USE_DECRYPT, 0, use_fn, NULL),
            KF_ERR_PERM); /* an Active key of any kind: refused for the mark alone */
        /* KMIP Get, and Locate by name then Get (through the ID Placeholder). */
        int code;
        kf_ttlv *p, *msg = request(a, KMIP_OP_GET, &p);
        kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, r.uid[i]);
        const kf_ttlv *rr = kms_kmip_exchange(f->kms, &admin, a, msg);
        uint32_t st = 0, reason = 0;
        const kf_ttlv *item = kf_ttlv_find(rr, KMIP_TAG_BATCH_ITEM);
        assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_STATUS), &st), KF_OK);
        assert_int_equal(st, KMIP_RESULT_STATUS_OPERATION_FAILED);
        assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_REASON), &reason),
                         KF_OK);
        assert_int_equal(reason, KMIP_REASON_NOT_EXTRACTABLE);
        (void)code;
    }
    /* Locate + Get in one batch. */
    kf_ttlv *msg = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    kf_ttlv *hdr = kf_ttlv_struct(a, msg, KMIP_TAG_REQUEST_HEADER);
    kf_ttlv *pv = kf_ttlv_struct(a, hdr, KMIP_TAG_PROTOCOL_VERSION);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MINOR, 4);
    kf_ttlv_add_int(a, hdr, KMIP_TAG_BATCH_COUNT, 2);
    kf_ttlv *bi = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, KMIP_OP_LOCATE);
    kf_ttlv *lp = kf_ttlv_struct(a, bi, KMIP_TAG_REQUEST_PAYLOAD);
    kf_ttlv *attr = kf_ttlv_struct(a, lp, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(a, attr, KMIP_TAG_ATTRIBUTE_NAME, "Name");
    kf_ttlv *nv = kf_ttlv_struct(a, attr, KMIP_TAG_ATTRIBUTE_VALUE);
    kf_ttlv_add_text(a, nv, KMIP_TAG_NAME_VALUE, "mfg:O00000001:sign");
    kf_ttlv_add_enum(a, nv, KMIP_TAG_NAME_TYPE, 1);
    bi = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, KMIP_OP_GET);
    kf_ttlv_struct(a, bi, KMIP_TAG_REQUEST_PAYLOAD);
    const kf_ttlv *rr = kms_kmip_exchange(f->kms, &admin, a, msg);
    /* Whatever Locate found, no item of the answer carries key material. */
    assert_null(
        KF_TTLV_PATH(rr, KMIP_TAG_BATCH_ITEM, KMIP_TAG_RESPONSE_PAYLOAD, KMIP_TAG_PRIVATE_KEY));
    for (const kf_ttlv *it = kf_ttlv_find(rr, KMIP_TAG_BATCH_ITEM); it;
         it = kf_ttlv_find_next(it, KMIP_TAG_BATCH_ITEM))
        assert_null(
            kf_ttlv_find(kf_ttlv_find(it, KMIP_TAG_RESPONSE_PAYLOAD), KMIP_TAG_PRIVATE_KEY));
    kf_arena_free(a);
}

/* ---- Seal wipes the cached role keys; the audit trail ---- */

static void test_seal_wipes(void **state)
{
    struct fixture *f = *state;
    struct issued is;
    request_key(f, "VE", 0, &is); /* loads VE's role keys into secure memory */
    size_t live = kf_secmem_live();
    assert_int_equal(kf_kms_seal(f->kms, ACTOR), KF_OK);
    assert_true(kf_secmem_live() < live);
    kf_buf recs;
    buf_new(&recs);
    assert_int_equal(kf_kms_mfg_request_key(f->kms, ACTOR, "VE", STEEL, &recs), KF_ERR_SEALED);
    struct kms_mfg_device_key dk;
    assert_int_equal(kms_mfg_device_key(f->kms, "VE", "NOBODY", &dk), KF_ERR_MFG_UNKNOWN);
    kf_buf_free(&recs);
    /* Reopened (dev mode unseals itself): the keys load again from the store. */
    kf_kms_close(f->kms);
    struct kf_kms_config cfg = {.dir = f->dir, .dev = true};
    assert_int_equal(kf_kms_open(&cfg, &f->kms), KF_OK);
    request_key(f, "VE", 0, &is);
}

struct audit_scan {
    uint8_t key[32];
    char hex[65], HEX[65];
    size_t records, hits, refusals, mfg;
};

static bool contains_key(const struct audit_scan *s, const char *text)
{
    if (!text)
        return false;
    size_t n = strlen(text);
    if (strstr(text, s->hex) || strstr(text, s->HEX))
        return true;
    for (size_t i = 0; i + 8 <= n; i++)
        if (memcmp(text + i, s->key, 8) == 0)
            return true;
    return false;
}

static int scan_audit(void *ctx, const struct kf_audit_record *r)
{
    struct audit_scan *s = ctx;
    s->records++;
    if (strncmp(r->operation, "Mfg", 3) == 0)
        s->mfg++;
    if (strncmp(r->operation, "Mfg", 3) == 0 && strcmp(r->result, "ok") != 0)
        s->refusals++;
    if (contains_key(s, r->detail) || contains_key(s, r->object) || contains_key(s, r->actor))
        s->hits++;
    return KF_OK;
}

static void test_audit(void **state)
{
    struct fixture *f = *state;
    struct kfd_meter m;
    struct issued ve, us;
    kf_buf mr1, recs;
    buf_new(&mr1);
    buf_new(&recs);
    device_make(f, "M-0700", "USPS", &m, &ve, &us);
    assert_int_equal(mr1_make(&m, "US", (int64_t)time(NULL), NULL, NULL, &mr1), KF_OK);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs), KF_OK);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &recs),
                     KF_ERR_MFG_STATUS);
    struct audit_scan s = {.records = 0};
    memcpy(s.key, us.k, 32);
    for (int i = 0; i < 32; i++) {
        snprintf(s.hex + 2 * i, 3, "%02x", us.k[i]);
        snprintf(s.HEX + 2 * i, 3, "%02X", us.k[i]);
    }
    assert_int_equal(kf_kms_audit_list(f->kms, 0, 0, scan_audit, &s), KF_OK);
    assert_true(s.records > 10);
    assert_true(s.mfg >= 8);      /* setup x3, enrol x6, requests, reports, register */
    assert_true(s.refusals >= 1); /* the second registration */
    assert_int_equal(s.hits, 0);
    memcpy(s.key, ve.k, 32);
    for (int i = 0; i < 32; i++) {
        snprintf(s.hex + 2 * i, 3, "%02x", ve.k[i]);
        snprintf(s.HEX + 2 * i, 3, "%02X", ve.k[i]);
    }
    s.hits = 0;
    assert_int_equal(kf_kms_audit_list(f->kms, 0, 0, scan_audit, &s), KF_OK);
    assert_int_equal(s.hits, 0);
    struct kf_audit_report rep;
    assert_int_equal(kf_kms_audit_verify(f->kms, &rep), KF_OK);
    assert_int_equal(rep.first_bad_seq, 0);
    kf_buf_free(&mr1);
    kf_buf_free(&recs);
    kfd_meter_wipe(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_setup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_tampered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_earth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kmip_command_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_role_keys_not_served, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seal_wipes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
