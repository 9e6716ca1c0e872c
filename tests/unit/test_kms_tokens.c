/*
 * Token verification in keyfleetd and the token key export to a Tin
 * (docs/manufacturing.md "Tokens"), over a kms in a temporary directory with
 * the whole manufacturing service: domains VE (vendor) and USPS (postal, US)
 * set up, a Steel and a Tin enrolled, devices made the way the protocol makes
 * them (RequestKey, the Distribute record opened with the Steel's key,
 * kfd_meter_install, an Installed report signed by the Steel, registration
 * with the device's own MR1), pieces printed by the device library.
 *
 * Expected tokens are the device library's (kfd_meter_print) and, for the
 * pieces a device would not print (dated before its registration), computed
 * here from the master key opened out of the Distribute record.
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
#include <pthread.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/kms_mfg.h"
#include "keyfleet/meter.h"
#include "keyfleet/mfg.h"
#include "keyfleet/secmem.h"
#include "keyfleet/store.h"
#include "keyfleet/ttlv.h"
#include "kms/mfg_internal.h"

#include "kms_fixture.h"

#define ACTOR "test"
#define STEEL "S00000001"
#define TIN "T00000001"
#define RECORDS_MAX (KF_MFG_TOKEN_KEYS_MAX + 65536)

struct device {
    struct kfd_meter m;
    uint8_t vendor_key[32], postal_key[32]; /* as installed (the test opened them) */
    uint64_t vendor_id, postal_id;
    int64_t registered_at;
};

struct fixture {
    char dir[64];
    kf_kms *kms;
    struct role_keys steel, tin;
    uint32_t today; /* YYYYMMDD, UTC */
};

static uint32_t yyyymmdd(int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    return (uint32_t)(tm.tm_year + 1900) * 10000u + (uint32_t)(tm.tm_mon + 1) * 100u +
           (uint32_t)tm.tm_mday;
}

static void records_new(kf_buf *b)
{
    assert_int_equal(kf_buf_alloc(b, 4096, RECORDS_MAX, 0), KF_OK);
}

/* The n-th record of a records buffer (0-based). */
static void record_at(const kf_buf *b, size_t n, const uint8_t **p, size_t *len)
{
    size_t off = 0, used = 0;
    struct kf_mfg_envelope env;
    for (size_t i = 0;; i++) {
        assert_true(off < b->len);
        assert_int_equal(kf_mfg_envelope_parse(b->data + off, b->len - off, &env, &used), KF_OK);
        if (i == n)
            break;
        off += used;
    }
    *p = b->data + off;
    *len = used;
}

static void kms_open(struct fixture *f)
{
    struct kf_kms_config cfg = {.dir = f->dir, .dev = true};
    assert_int_equal(kf_kms_open(&cfg, &f->kms), KF_OK);
}

static void reopen(struct fixture *f)
{
    kf_kms_close(f->kms);
    kms_open(f);
}

static void enroll(struct fixture *f, const char *domain, const char *id, const struct role_keys *k)
{
    kf_buf r;
    records_new(&r);
    assert_int_equal(kf_kms_mfg_enroll(f->kms, ACTOR, domain, id, k->sign_pub, k->enc_pub, &r),
                     KF_OK);
    kf_buf_free(&r);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || kms_dir_open(f->dir, sizeof(f->dir), "tokens", &f->kms) < 0)
        return -1;
    kf_buf r;
    records_new(&r);
    assert_int_equal(kf_kms_mfg_setup(f->kms, ACTOR, "VE", KF_MFG_VENDOR, NULL, &r), KF_OK);
    kf_buf_reset(&r);
    assert_int_equal(kf_kms_mfg_setup(f->kms, ACTOR, "USPS", KF_MFG_POSTAL, "US", &r), KF_OK);
    kf_buf_free(&r);
    role_keys_make(&f->steel);
    role_keys_make(&f->tin);
    enroll(f, "VE", STEEL, &f->steel);
    enroll(f, "USPS", STEEL, &f->steel);
    enroll(f, "VE", TIN, &f->tin);
    f->today = yyyymmdd((int64_t)time(NULL));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (kms_dir_remove(f->kms, f->dir) < 0)
        return -1;
    kf_wipe(f, sizeof(*f));
    free(f);
    return 0;
}

/* MI0..MI10 for one domain: the key the device now holds in *key, its ID in *key_id. */
static void install(struct fixture *f, struct device *d, const char *domain, uint8_t key[32],
                    uint64_t *key_id)
{
    kf_buf r, report, confirm;
    records_new(&r);
    records_new(&report);
    records_new(&confirm);
    assert_int_equal(kf_kms_mfg_request_key(f->kms, ACTOR, domain, STEEL, &r), KF_OK);
    struct kf_mfg_envelope env;
    struct kf_mfg_record mi4, mi7;
    assert_int_equal(kf_mfg_envelope_parse(r.data, r.len, &env, NULL), KF_OK);
    assert_int_equal(kf_mfg_record_decode(env.body, env.body_len, KF_MFG_REC_DISTRIBUTE, &mi4),
                     KF_OK);
    assert_int_equal(kf_mfg_open_key(f->steel.enc_priv, domain, mi4.key_id, STEEL, mi4.sealed_key,
                                     key),
                     KF_OK);
    uint8_t tt[KFD_TEST_TOKENS_LEN];
    assert_int_equal(kfd_meter_install(&d->m, domain, mi4.key_id, key, tt), KF_OK);
    memset(&mi7, 0, sizeof(mi7));
    mi7.type = KF_MFG_REC_INSTALLED;
    mi7.fields = KF_MFG_F_STATUS | KF_MFG_F_ROLE_ID | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID |
                 KF_MFG_F_KEY_ID | KF_MFG_F_MSN | KF_MFG_F_TEST_TOKENS | KF_MFG_F_EVENT_TIME;
    mi7.status = KF_MFG_INSTALLED;
    memcpy(mi7.role_id, mi4.role_id, sizeof(mi7.role_id));
    snprintf(mi7.domain, sizeof(mi7.domain), "%s", domain);
    snprintf(mi7.steel_id, sizeof(mi7.steel_id), "%s", STEEL);
    mi7.key_id = mi4.key_id;
    snprintf(mi7.msn, sizeof(mi7.msn), "%s", d->m.msn);
    memcpy(mi7.test_tokens, tt, sizeof(tt));
    mi7.event_time = (int64_t)time(NULL);
    assert_int_equal(kf_mfg_record_sign(&mi7, STEEL, f->steel.sign_priv, &report), KF_OK);
    /* The domain named, as KMIP's ReportInstall does: this Steel is enrolled in two. */
    assert_int_equal(
        kms_mfg_report_install_in(f->kms, ACTOR, domain, report.data, report.len, &confirm),
        KF_OK);
    *key_id = mi4.key_id;
    kf_buf_free(&r);
    kf_buf_free(&report);
    kf_buf_free(&confirm);
}

/* A device with keys in VE and USPS; registered to US unless !reg. */
static void make_device(struct fixture *f, struct device *d, const char *msn, bool reg)
{
    memset(d, 0, sizeof(*d));
    assert_int_equal(kfd_meter_init(&d->m, msn, store_nothing, NULL), KF_OK);
    install(f, d, "VE", d->vendor_key, &d->vendor_id);
    install(f, d, "USPS", d->postal_key, &d->postal_id);
    if (!reg)
        return;
    kf_buf mr1, mr4;
    assert_int_equal(kf_buf_alloc(&mr1, 1024, KFD_REGISTRATION_MAX, 0), KF_OK);
    records_new(&mr4);
    d->registered_at = (int64_t)time(NULL);
    assert_int_equal(kfd_meter_register(&d->m, "US", "IND-1", d->registered_at, NULL, NULL, &mr1),
                     KF_OK);
    assert_int_equal(kf_kms_mfg_register(f->kms, ACTOR, mr1.data, mr1.len, &mr4), KF_OK);
    kf_buf_free(&mr1);
    kf_buf_free(&mr4);
}

/* Print one piece and put its KeyfleetPieces entry (vendor token) at out. */
static void print_piece(struct fixture *f, struct device *d, uint32_t value, uint8_t out[46])
{
    struct kfd_piece p;
    assert_int_equal(kfd_meter_print(&d->m, "VE", "USPS", f->today, value, "10001", &p), KF_OK);
    assert_int_equal(kfd_txdata_encode(&p.tx, out), KF_OK);
    memcpy(out + KFD_TXDATA_LEN, p.vendor_token, KFD_TOKEN_LEN);
}

/* A piece made here with the vendor key (for data a device would not print). */
static void craft_piece(const struct device *d, const struct kfd_txdata *tx, uint8_t out[46])
{
    uint8_t tk[32];
    assert_int_equal(kfd_txdata_encode(tx, out), KF_OK);
    assert_int_equal(kfd_token_key(d->vendor_key, "VE", tx->date / 100, tk), KF_OK);
    assert_int_equal(kfd_token_compute(tk, out, out + KFD_TXDATA_LEN), KF_OK);
    kf_wipe(tk, sizeof(tk));
}

static void verify(struct fixture *f, const uint8_t *pieces, size_t n, const uint8_t *want)
{
    uint8_t *got = calloc(n, 1);
    assert_int_equal(kf_kms_mfg_verify_tokens(f->kms, ACTOR, "VE", pieces, n, got), KF_OK);
    assert_memory_equal(got, want, n);
    free(got);
}

static void verify_one(struct fixture *f, const uint8_t piece[46], uint8_t want)
{
    verify(f, piece, 1, &want);
}

/* ---- good, bad ---- */

static void good_pieces_and_every_alteration_is_bad(void **state)
{
    struct fixture *f = *state;
    struct device *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    make_device(f, a, "M-GOOD-1", true);
    make_device(f, b, "M-GOOD-2", true);
    uint8_t pieces[6][46], want[6];
    for (int i = 0; i < 6; i++) {
        print_piece(f, i % 2 ? b : a, 100 + (uint32_t)i, pieces[i]);
        want[i] = KF_TOKEN_GOOD;
    }
    verify(f, &pieces[0][0], 6, want);

    /* Each alteration of a fresh good piece: its token no longer matches. */
    uint8_t p[46], x[46];
    struct kfd_txdata tx;
    print_piece(f, a, 250, p);
    assert_int_equal(kfd_txdata_decode(p, &tx), KF_OK);
    struct kfd_txdata alt[4] = {tx, tx, tx, tx};
    alt[0].value += 1;
    alt[1].piece_count += 1000;
    alt[2].date = tx.date % 100 == 1 ? tx.date + 1 : tx.date - 1; /* same period, another day */
    snprintf(alt[3].postal_code, sizeof(alt[3].postal_code), "20002");
    for (int i = 0; i < 4; i++) {
        if (alt[i].date < yyyymmdd(a->registered_at))
            continue; /* registered today, on the 1st: that one would be refused instead */
        assert_int_equal(kfd_txdata_encode(&alt[i], x), KF_OK);
        memcpy(x + KFD_TXDATA_LEN, p + KFD_TXDATA_LEN, KFD_TOKEN_LEN);
        verify_one(f, x, KF_TOKEN_BAD);
    }
    /* Another registered device's MSN: its key does not make this token. */
    memcpy(x, p, 46);
    snprintf(tx.msn, sizeof(tx.msn), "M-GOOD-2");
    assert_int_equal(kfd_txdata_encode(&tx, x), KF_OK);
    verify_one(f, x, KF_TOKEN_BAD);
    /* Each bit of the token. */
    for (int bit = 0; bit < KFD_TOKEN_LEN * 8; bit += 7) {
        memcpy(x, p, 46);
        x[KFD_TXDATA_LEN + bit / 8] ^= (uint8_t)(1u << (bit % 8));
        verify_one(f, x, KF_TOKEN_BAD);
    }
    /* A bad piece is not recorded: the untouched one is still good. */
    verify_one(f, p, KF_TOKEN_GOOD);
    /* The postal token is not the vendor's. */
    struct kfd_piece q;
    assert_int_equal(kfd_meter_print(&a->m, "VE", "USPS", f->today, 5, "10001", &q), KF_OK);
    assert_int_equal(kfd_txdata_encode(&q.tx, x), KF_OK);
    memcpy(x + KFD_TXDATA_LEN, q.postal_token, KFD_TOKEN_LEN);
    verify_one(f, x, KF_TOKEN_BAD);
    free(a);
    free(b);
}

/* ---- duplicates ---- */

static void duplicates_in_batch_across_batches_and_restart(void **state)
{
    struct fixture *f = *state;
    struct device *a = calloc(1, sizeof(*a));
    make_device(f, a, "M-DUP-1", true);
    uint8_t p[3][46];
    for (int i = 0; i < 3; i++)
        print_piece(f, a, 10, p[i]);
    uint8_t batch[4][46];
    memcpy(batch[0], p[0], 46);
    memcpy(batch[1], p[1], 46);
    memcpy(batch[2], p[0], 46); /* the same piece twice in one batch */
    memcpy(batch[3], p[1], 46);
    uint8_t want[4] = {KF_TOKEN_GOOD, KF_TOKEN_GOOD, KF_TOKEN_DUPLICATE, KF_TOKEN_DUPLICATE};
    verify(f, &batch[0][0], 4, want);
    verify_one(f, p[0], KF_TOKEN_DUPLICATE); /* another batch */
    verify_one(f, p[2], KF_TOKEN_GOOD);
    /* A duplicate with a wrong token is bad, not duplicate. */
    uint8_t x[46];
    memcpy(x, p[2], 46);
    x[45] ^= 1;
    verify_one(f, x, KF_TOKEN_BAD);
    reopen(f);
    verify_one(f, p[0], KF_TOKEN_DUPLICATE); /* loaded from mfg_piece */
    verify_one(f, p[1], KF_TOKEN_DUPLICATE);
    verify_one(f, p[2], KF_TOKEN_DUPLICATE);
    uint8_t fresh[46];
    print_piece(f, a, 11, fresh);
    verify_one(f, fresh, KF_TOKEN_GOOD);
    reopen(f);
    verify_one(f, fresh, KF_TOKEN_DUPLICATE);
    free(a);
}

/* ---- refused ---- */

static void refused_unless_active_registered_and_well_formed(void **state)
{
    struct fixture *f = *state;
    struct device *inst = calloc(1, sizeof(*inst)), *act = calloc(1, sizeof(*act));
    make_device(f, inst, "M-INSTALLED", false);
    make_device(f, act, "M-ACTIVE", true);

    /* Installed only: the device cannot print yet, so the piece is made here. */
    struct kfd_txdata tx = {.date = f->today, .value = 7, .piece_count = 1};
    snprintf(tx.postal_code, sizeof(tx.postal_code), "10001");
    snprintf(tx.msn, sizeof(tx.msn), "M-INSTALLED");
    uint8_t x[46];
    craft_piece(inst, &tx, x);
    verify_one(f, x, KF_TOKEN_REFUSED);

    /* Unknown device. */
    snprintf(tx.msn, sizeof(tx.msn), "M-NOBODY");
    craft_piece(inst, &tx, x);
    verify_one(f, x, KF_TOKEN_REFUSED);

    /* Dated before the registration (the day before), with the right token. */
    tx.date = yyyymmdd(act->registered_at - 86400);
    snprintf(tx.msn, sizeof(tx.msn), "M-ACTIVE");
    craft_piece(act, &tx, x);
    verify_one(f, x, KF_TOKEN_REFUSED);

    /* Malformed canonical data: version, padding, alphabet, date, trailer. */
    uint8_t good[46];
    print_piece(f, act, 1, good);
    const struct {
        size_t at;
        uint8_t v;
    } breaks[] = {{0, 2}, {4, 0x99}, {13, ' '}, {20, 'a'}, {38, 0}, {39, 1}};
    for (size_t i = 0; i < sizeof(breaks) / sizeof(breaks[0]); i++) {
        memcpy(x, good, 46);
        x[breaks[i].at] = breaks[i].v;
        verify_one(f, x, KF_TOKEN_REFUSED);
    }
    verify_one(f, good, KF_TOKEN_GOOD);

    /* Obsolete: retired after a piece verified good (the cache must forget it). */
    uint8_t later[46];
    print_piece(f, act, 2, later);
    assert_int_equal(kf_kms_mfg_retire(f->kms, ACTOR, "VE", act->vendor_id), KF_OK);
    verify_one(f, later, KF_TOKEN_REFUSED);
    reopen(f);
    verify_one(f, later, KF_TOKEN_REFUSED);
    free(inst);
    free(act);
}

static void whole_batch_refusals(void **state)
{
    struct fixture *f = *state;
    uint8_t piece[46] = {1}, v[2] = {0};
    assert_int_equal(kf_kms_mfg_verify_tokens(f->kms, ACTOR, "NOPE", piece, 1, v), KF_ERR_DOMAIN);
    assert_int_equal(kf_kms_mfg_verify_tokens(f->kms, ACTOR, "default", piece, 1, v),
                     KF_ERR_MFG_SETUP);
    assert_int_equal(kf_kms_mfg_verify_tokens(f->kms, ACTOR, "VE", piece, 0, v), KF_ERR_ARG);
    assert_int_equal(kf_kms_mfg_verify_tokens(f->kms, ACTOR, "VE", piece,
                                              KF_TOKEN_BATCH_MAX + 1, v),
                     KF_ERR_ARG);
    assert_int_equal(kf_kms_mfg_verify_tokens(f->kms, ACTOR, "../VE", piece, 1, v), KF_ERR_DOMAIN);
    /* Sealed: nothing is verified. */
    assert_int_equal(kf_kms_seal(f->kms, ACTOR), KF_OK);
    assert_int_equal(kf_kms_mfg_verify_tokens(f->kms, ACTOR, "VE", piece, 1, v), KF_ERR_SEALED);
    reopen(f); /* dev mode unseals itself */
    assert_int_equal(kf_kms_mfg_verify_tokens(f->kms, ACTOR, "VE", piece, 1, v), KF_OK);
    assert_int_equal(v[0], KF_TOKEN_REFUSED);
}

/* ---- the audit record of a batch ---- */

struct audit_find {
    const char *op;
    char detail[256];
    const uint8_t *token; /* must not appear */
    int found;
};

static int audit_cb(void *ctx, const struct kf_audit_record *r)
{
    struct audit_find *a = ctx;
    if (strcmp(r->operation, a->op) == 0) {
        a->found++;
        snprintf(a->detail, sizeof(a->detail), "%s", r->detail);
    }
    char hex[13];
    for (int i = 0; a->token && i < 6; i++)
        snprintf(hex + 2 * i, 3, "%02x", a->token[i]);
    if (a->token)
        assert_null(strstr(r->detail, hex));
    return KF_OK;
}

static void batch_audited_with_counts_only(void **state)
{
    struct fixture *f = *state;
    struct device *a = calloc(1, sizeof(*a));
    make_device(f, a, "M-AUDIT", true);
    uint8_t p[3][46];
    print_piece(f, a, 1, p[0]);
    print_piece(f, a, 2, p[1]);
    memcpy(p[2], p[0], 46);
    p[1][45] ^= 0x80;
    uint8_t want[3] = {KF_TOKEN_GOOD, KF_TOKEN_BAD, KF_TOKEN_DUPLICATE};
    verify(f, &p[0][0], 3, want);
    struct audit_find af = {.op = "TokenVerify", .token = p[0] + KFD_TXDATA_LEN};
    assert_int_equal(kf_kms_audit_list(f->kms, 1, 0, audit_cb, &af), KF_OK);
    assert_int_equal(af.found, 1);
    assert_string_equal(af.detail, "pieces=3 good=1 bad=1 duplicate=1 refused=0");
    free(a);
}

/* ---- token key export ---- */

static void brass_pub(struct fixture *f, const char *domain, uint8_t pub[32], char id[10])
{
    kf_buf r;
    records_new(&r);
    assert_int_equal(kf_kms_mfg_role_certs(f->kms, ACTOR, domain, &r), KF_OK);
    for (size_t i = 0;; i++) {
        const uint8_t *p;
        size_t len;
        struct kf_mfg_envelope env;
        struct kf_mfg_record rec;
        record_at(&r, i, &p, &len);
        assert_int_equal(kf_mfg_envelope_parse(p, len, &env, NULL), KF_OK);
        assert_int_equal(kf_mfg_record_decode(env.body, env.body_len, KF_MFG_REC_ROLE_CERT, &rec),
                         KF_OK);
        if (rec.role_type == KF_MFG_ROLE_BRASS) {
            memcpy(pub, rec.sign_pub, 32);
            memcpy(id, rec.role_id, 10);
            break;
        }
    }
    kf_buf_free(&r);
}

static void export_refusals(void **state)
{
    struct fixture *f = *state;
    kf_buf r;
    records_new(&r);
    uint32_t p = f->today / 100;
    /* Not enrolled in this domain, not a Tin at all, no such domain. */
    assert_int_equal(kf_kms_mfg_token_keys(f->kms, ACTOR, "VE", "T00000002", p, p, &r),
                     KF_ERR_MFG_ROLE);
    assert_int_equal(kf_kms_mfg_token_keys(f->kms, ACTOR, "USPS", TIN, p, p, &r),
                     KF_ERR_MFG_ROLE);
    assert_int_equal(kf_kms_mfg_token_keys(f->kms, ACTOR, "VE", STEEL, p, p, &r), KF_ERR_MFG_ROLE);
    assert_int_equal(kf_kms_mfg_token_keys(f->kms, ACTOR, "NOPE", TIN, p, p, &r), KF_ERR_DOMAIN);
    /* 25 periods; a reversed range; months that are not months. */
    assert_int_equal(kf_kms_mfg_token_keys(f->kms, ACTOR, "VE", TIN, 202601, 202801, &r),
                     KF_ERR_MFG_PERIOD);
    assert_int_equal(kf_kms_mfg_token_keys(f->kms, ACTOR, "VE", TIN, 202612, 202611, &r),
                     KF_ERR_MFG_PERIOD);
    assert_int_equal(kf_kms_mfg_token_keys(f->kms, ACTOR, "VE", TIN, 202600, 202601, &r),
                     KF_ERR_MFG_PERIOD);
    assert_int_equal(kf_kms_mfg_token_keys(f->kms, ACTOR, "VE", TIN, 202612, 202613, &r),
                     KF_ERR_MFG_PERIOD);
    assert_int_equal(kf_kms_mfg_token_keys(f->kms, ACTOR, "VE", TIN, 199912, 200001, &r),
                     KF_ERR_MFG_PERIOD);
    assert_int_equal(r.len, 0); /* nothing leaves on a refusal */
    /* 24 periods across a year end are fine. */
    assert_int_equal(kf_kms_mfg_token_keys(f->kms, ACTOR, "VE", TIN, 202601, 202712, &r), KF_OK);
    kf_buf_free(&r);
}

static bool contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return true;
    return false;
}

static void export_is_signed_sealed_and_holds_no_master_key(void **state)
{
    struct fixture *f = *state;
    struct device *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b)),
                  *c = calloc(1, sizeof(*c));
    make_device(f, a, "M-EXP-1", true);
    make_device(f, b, "M-EXP-2", true);
    make_device(f, c, "M-EXP-3", false); /* Installed only: not exported */
    uint32_t first = f->today / 100, last = first % 100 == 12 ? first + 89 : first + 1;
    kf_buf r;
    records_new(&r);
    assert_int_equal(kf_kms_mfg_token_keys(f->kms, ACTOR, "VE", TIN, first, last, &r), KF_OK);

    uint8_t bpub[32];
    char bid[10];
    brass_pub(f, "VE", bpub, bid);
    struct kf_mfg_envelope env;
    struct kf_mfg_record rec;
    size_t used;
    assert_int_equal(kf_mfg_envelope_parse(r.data, r.len, &env, &used), KF_OK);
    assert_int_equal(used, r.len);
    assert_string_equal(env.signer, bid);
    assert_int_equal(kf_mfg_record_open(r.data, r.len, bpub, KF_MFG_REC_TOKEN_KEYS, &rec), KF_OK);
    assert_string_equal(rec.domain, "VE");
    assert_string_equal(rec.role_id, TIN);
    assert_int_equal(rec.period_first, first);
    assert_int_equal(rec.period_last, last);
    assert_int_equal(rec.table_len, 2 * 2 * KF_MFG_TOKEN_KEY_ENTRY_LEN);
    /* Every entry opens with the Tin's key to the device's TK of that period. */
    for (size_t i = 0; i < rec.table_len / KF_MFG_TOKEN_KEY_ENTRY_LEN; i++) {
        struct kf_mfg_token_key_entry e;
        assert_int_equal(kf_mfg_token_key_entry_get(rec.table + i * KF_MFG_TOKEN_KEY_ENTRY_LEN, &e),
                         KF_OK);
        const struct device *d = strcmp(e.msn, "M-EXP-1") == 0 ? a : b;
        assert_string_equal(e.msn, d->m.msn);
        assert_int_equal(e.key_id, d->vendor_id);
        assert_int_equal(e.registered_at, d->registered_at);
        char ctx[80];
        snprintf(ctx, sizeof(ctx), "VE/%06u", (unsigned)e.period);
        uint8_t tk[32], want[32];
        assert_int_equal(kf_mfg_open_key(f->tin.enc_priv, ctx, e.key_id, TIN, e.sealed, tk), KF_OK);
        assert_int_equal(kfd_token_key(d->vendor_key, "VE", e.period, want), KF_OK);
        assert_memory_equal(tk, want, 32);
        /* ... and to nobody else, nor for another period */
        assert_int_equal(kf_mfg_open_key(f->steel.enc_priv, ctx, e.key_id, TIN, e.sealed, tk),
                         KF_ERR_AUTH);
        snprintf(ctx, sizeof(ctx), "VE/%06u", (unsigned)e.period + 1);
        assert_int_equal(kf_mfg_open_key(f->tin.enc_priv, ctx, e.key_id, TIN, e.sealed, tk),
                         KF_ERR_AUTH);
    }
    /* No master key, of any device, anywhere in the record. */
    const struct device *all[] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        assert_false(contains(r.data, r.len, all[i]->vendor_key, 32));
        assert_false(contains(r.data, r.len, all[i]->vendor_key, 8));
        assert_false(contains(r.data, r.len, all[i]->postal_key, 8));
    }
    /* A modified record does not verify. */
    r.data[r.len / 2] ^= 1;
    assert_int_not_equal(kf_mfg_record_open(r.data, r.len, bpub, KF_MFG_REC_TOKEN_KEYS, &rec),
                         KF_OK);
    /* Audited without keys. */
    struct audit_find af = {.op = "TokenKeyExport"};
    assert_int_equal(kf_kms_audit_list(f->kms, 1, 0, audit_cb, &af), KF_OK);
    assert_int_equal(af.found, 1);
    assert_non_null(strstr(af.detail, "devices=2"));
    kf_buf_free(&r);
    free(a);
    free(b);
    free(c);
}

/* ---- through KMIP ---- */

static kf_ttlv *kmip_request(kf_arena *a, uint32_t op, kf_ttlv **payload)
{
    return kf_ttlv_request(a, 2, 1, op, payload);
}

/* Run msg as who; the batch item's result status, its payload in *out. */
static uint32_t kmip_run(struct fixture *f, const struct kf_principal *who, kf_ttlv *msg,
                         kf_arena *a, const kf_ttlv **out, int32_t *kf_code)
{
    kf_buf req, resp;
    assert_int_equal(kf_buf_alloc(&req, 4096, 4u << 20, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&resp, 4096, 4u << 20, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(msg, &req), KF_OK);
    assert_int_equal(kf_kms_handle_kmip(f->kms, who, req.data, req.len, &resp), KF_OK);
    kf_ttlv *m;
    struct kf_ttlv_limits lim = {.max_total = 4u << 20};
    assert_int_equal(kf_ttlv_decode(resp.data, resp.len, &lim, a, &m), KF_OK);
    const kf_ttlv *bi = kf_ttlv_find(m, KMIP_TAG_BATCH_ITEM);
    uint32_t status = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(bi, KMIP_TAG_RESULT_STATUS), &status), KF_OK);
    *out = kf_ttlv_find(bi, KMIP_TAG_RESPONSE_PAYLOAD);
    *kf_code = 0;
    if (kf_code && *out)
        (void)!kf_ttlv_get_int(kf_ttlv_find(*out, KMIP_TAG_KEYFLEET_ERROR_CODE), kf_code);
    kf_buf_free(&req);
    kf_buf_free(&resp);
    return status;
}

static void principal(struct kf_principal *who, unsigned roles, const char *domain)
{
    memset(who, 0, sizeof(*who));
    snprintf(who->name, sizeof(who->name), "cert:CN=tester");
    who->roles = roles;
    snprintf(who->domains[0], sizeof(who->domains[0]), "%s", domain);
    who->ndomains = 1;
}

static void kmip_verify_and_export(void **state)
{
    struct fixture *f = *state;
    struct device *a = calloc(1, sizeof(*a));
    make_device(f, a, "M-KMIP", true);
    uint8_t p[3][46];
    for (int i = 0; i < 3; i++)
        print_piece(f, a, 40, p[i]);
    p[1][44] ^= 4;
    struct kf_principal verifier, user, other, steel;
    principal(&verifier, KF_ROLE_VERIFIER, "VE");
    principal(&user, KF_ROLE_USE, "VE");
    principal(&other, KF_ROLE_VERIFIER, "USPS");
    principal(&steel, KF_ROLE_STEEL, "VE");
    kf_arena *ar;
    assert_int_equal(kf_arena_new(&ar, 0), KF_OK);
    const kf_ttlv *out;
    int32_t code;

    /* Verdicts per piece, for a verifier and for a user of the domain. */
    kf_ttlv *pl, *msg = kmip_request(ar, KMIP_OP_KEYFLEET_TOKEN_VERIFY, &pl);
    kf_ttlv_add_text(ar, pl, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    kf_ttlv_add_bytes(ar, pl, KMIP_TAG_KEYFLEET_PIECES, &p[0][0], 2 * 46);
    assert_int_equal(kmip_run(f, &verifier, msg, ar, &out, &code), KMIP_RESULT_STATUS_SUCCESS);
    const uint8_t *v;
    size_t vlen;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(out, KMIP_TAG_KEYFLEET_VERDICTS), &v, &vlen),
                     KF_OK);
    assert_int_equal(vlen, 2);
    assert_int_equal(v[0], KF_TOKEN_GOOD);
    assert_int_equal(v[1], KF_TOKEN_BAD);
    msg = kmip_request(ar, KMIP_OP_KEYFLEET_TOKEN_VERIFY, &pl);
    kf_ttlv_add_text(ar, pl, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    kf_ttlv_add_bytes(ar, pl, KMIP_TAG_KEYFLEET_PIECES, &p[0][0], 46);
    assert_int_equal(kmip_run(f, &user, msg, ar, &out, &code), KMIP_RESULT_STATUS_SUCCESS);
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(out, KMIP_TAG_KEYFLEET_VERDICTS), &v, &vlen),
                     KF_OK);
    assert_int_equal(v[0], KF_TOKEN_DUPLICATE);

    /* Refusals: another domain's verifier, a Steel (command table), a length
     * that is not a multiple of 46, no pieces, a missing domain, extra items. */
    const struct {
        const struct kf_principal *who;
        size_t len;
        bool domain, extra;
    } bad[] = {{&other, 46, true, false}, {&steel, 46, true, false}, {&verifier, 45, true, false},
               {&verifier, 0, true, false}, {&verifier, 46, false, false},
               {&verifier, 46, true, true}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        msg = kmip_request(ar, KMIP_OP_KEYFLEET_TOKEN_VERIFY, &pl);
        if (bad[i].domain)
            kf_ttlv_add_text(ar, pl, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
        kf_ttlv_add_bytes(ar, pl, KMIP_TAG_KEYFLEET_PIECES, &p[2][0], bad[i].len);
        if (bad[i].extra)
            kf_ttlv_add_int(ar, pl, KMIP_TAG_KEYFLEET_PERIOD_FIRST, 202601);
        assert_int_equal(kmip_run(f, bad[i].who, msg, ar, &out, &code),
                         KMIP_RESULT_STATUS_OPERATION_FAILED);
        if (bad[i].who == &steel)
            assert_int_equal(code, KF_ERR_MFG_COMMAND);
    }
    /* p[2] was never verified: still good. */
    msg = kmip_request(ar, KMIP_OP_KEYFLEET_TOKEN_VERIFY, &pl);
    kf_ttlv_add_text(ar, pl, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    kf_ttlv_add_bytes(ar, pl, KMIP_TAG_KEYFLEET_PIECES, &p[2][0], 46);
    assert_int_equal(kmip_run(f, &verifier, msg, ar, &out, &code), KMIP_RESULT_STATUS_SUCCESS);
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(out, KMIP_TAG_KEYFLEET_VERDICTS), &v, &vlen),
                     KF_OK);
    assert_int_equal(v[0], KF_TOKEN_GOOD);

    /* Export: one signed record for a verifier; a user may not; a 25-month range. */
    uint32_t per = f->today / 100;
    msg = kmip_request(ar, KMIP_OP_KEYFLEET_TOKEN_KEY_EXPORT, &pl);
    kf_ttlv_add_text(ar, pl, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    kf_ttlv_add_text(ar, pl, KMIP_TAG_KEYFLEET_ROLE_ID, TIN);
    kf_ttlv_add_int(ar, pl, KMIP_TAG_KEYFLEET_PERIOD_FIRST, (int32_t)per);
    kf_ttlv_add_int(ar, pl, KMIP_TAG_KEYFLEET_PERIOD_LAST, (int32_t)per);
    assert_int_equal(kmip_run(f, &verifier, msg, ar, &out, &code), KMIP_RESULT_STATUS_SUCCESS);
    assert_int_equal(kf_ttlv_count(out, KMIP_TAG_KEYFLEET_SIGNED_RECORD), 1);
    assert_int_equal(kmip_run(f, &user, msg, ar, &out, &code), KMIP_RESULT_STATUS_OPERATION_FAILED);
    assert_int_equal(code, KF_ERR_MFG_COMMAND);
    msg = kmip_request(ar, KMIP_OP_KEYFLEET_TOKEN_KEY_EXPORT, &pl);
    kf_ttlv_add_text(ar, pl, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
    kf_ttlv_add_text(ar, pl, KMIP_TAG_KEYFLEET_ROLE_ID, TIN);
    kf_ttlv_add_int(ar, pl, KMIP_TAG_KEYFLEET_PERIOD_FIRST, 202601);
    kf_ttlv_add_int(ar, pl, KMIP_TAG_KEYFLEET_PERIOD_LAST, 202801);
    assert_int_equal(kmip_run(f, &verifier, msg, ar, &out, &code),
                     KMIP_RESULT_STATUS_OPERATION_FAILED);
    assert_int_equal(code, KF_ERR_MFG_PERIOD);
    kf_arena_free(ar);
    free(a);
}

/* ---- concurrency: two callers, one piece, one good ---- */

struct racer {
    struct fixture *f;
    const uint8_t *pieces;
    size_t n;
    uint8_t *verdicts;
    int rc;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    r->rc = kf_kms_mfg_verify_tokens(r->f->kms, ACTOR, "VE", r->pieces, r->n, r->verdicts);
    return NULL;
}

static void concurrent_batches_count_each_piece_once(void **state)
{
    struct fixture *f = *state;
    struct device *a = calloc(1, sizeof(*a));
    make_device(f, a, "M-RACE", true);
    enum { N = 2000 };
    uint8_t *pieces = malloc(N * 46);
    for (size_t i = 0; i < N; i++)
        print_piece(f, a, 1, pieces + i * 46);
    struct racer r[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct racer){.f = f, .pieces = pieces, .n = N, .verdicts = calloc(N, 1)};
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    size_t good[N] = {0};
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].rc, KF_OK);
        for (size_t j = 0; j < N; j++) {
            assert_true(r[i].verdicts[j] == KF_TOKEN_GOOD ||
                        r[i].verdicts[j] == KF_TOKEN_DUPLICATE);
            good[j] += r[i].verdicts[j] == KF_TOKEN_GOOD;
        }
        free(r[i].verdicts);
    }
    for (size_t j = 0; j < N; j++)
        assert_int_equal(good[j], 1);
    free(pieces);
    free(a);
}

/* ---- the table's own writer (src/store/pieces.c) ---- */

struct list_ctx {
    size_t n;
    uint64_t sum;
};

static int list_cb(void *ctx, const char *msn, uint32_t count)
{
    struct list_ctx *l = ctx;
    assert_true(strncmp(msn, "P-", 2) == 0);
    l->n++;
    l->sum += count;
    return KF_OK;
}

static int stop_cb(void *ctx, const char *msn, uint32_t count)
{
    (void)ctx, (void)msn, (void)count;
    return KF_ERR_LIMIT;
}

static void store_pieces_chunks_duplicates_and_refusals(void **state)
{
    (void)state;
    char dir[] = "/tmp/kf-test-pieces.XXXXXX";
    assert_non_null(mkdtemp(dir));
    kf_store *st;
    kf_store_pieces *p;
    uint64_t id, id2, n;
    assert_int_equal(kf_store_open(dir, &st), KF_OK);
    assert_int_equal(kf_store_begin(st), KF_OK);
    assert_int_equal(kf_store_domain_create(st, "VE", NULL, NULL, 0, &id), KF_OK);
    assert_int_equal(kf_store_domain_create(st, "USPS", NULL, NULL, 0, &id2), KF_OK);
    assert_int_equal(kf_store_commit(st), KF_OK);
    assert_int_equal(kf_store_pieces_open(st, &p), KF_OK);
    /* 0, 1, 63, 64, 65 and 130 rows: the single-row and the 64-row statements. */
    static const size_t sizes[] = {0, 1, 63, 64, 65, 130};
    struct kf_store_piece rows[130];
    uint32_t next = 1;
    size_t total = 0;
    uint64_t sum = 0;
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        for (size_t i = 0; i < sizes[k]; i++) {
            snprintf(rows[i].msn, sizeof(rows[i].msn), "P-%zu", i % 7);
            rows[i].piece_count = next++;
            sum += rows[i].piece_count;
        }
        total += sizes[k];
        assert_int_equal(kf_store_begin(st), KF_OK);
        assert_int_equal(kf_store_pieces_insert(p, id, 1, rows, sizes[k]), KF_OK);
        assert_int_equal(kf_store_commit(st), KF_OK);
    }
    struct list_ctx l = {0};
    assert_int_equal(kf_store_pieces_list(p, id, list_cb, &l), KF_OK);
    assert_int_equal(l.n, total);
    assert_int_equal(l.sum, sum);
    assert_int_equal(kf_store_pieces_count(p, id, &n), KF_OK);
    assert_int_equal(n, total);
    assert_int_equal(kf_store_pieces_count(p, id2, &n), KF_OK);
    assert_int_equal(n, 0);
    assert_int_equal(kf_store_pieces_list(p, id, stop_cb, NULL), KF_ERR_LIMIT);
    /* Outside a transaction; a piece that is there; a bad MSN; no such domain. */
    assert_int_equal(kf_store_pieces_insert(p, id, 1, rows, 1), KF_ERR_STATE);
    assert_int_equal(kf_store_begin(st), KF_OK);
    rows[0].piece_count = 1; /* P-0 count 1 is stored */
    snprintf(rows[0].msn, sizeof(rows[0].msn), "P-0");
    assert_int_equal(kf_store_pieces_insert(p, id, 1, rows, 1), KF_ERR_EXISTS);
    kf_store_rollback(st);
    assert_int_equal(kf_store_begin(st), KF_OK);
    rows[0].msn[0] = '\0';
    assert_int_equal(kf_store_pieces_insert(p, id, 1, rows, 1), KF_ERR_ARG);
    assert_int_equal(kf_store_pieces_insert(p, 0, 1, rows, 1), KF_ERR_DOMAIN);
    kf_store_rollback(st);
    /* The same piece in another domain is another piece. */
    snprintf(rows[0].msn, sizeof(rows[0].msn), "P-0");
    assert_int_equal(kf_store_begin(st), KF_OK);
    assert_int_equal(kf_store_pieces_insert(p, id2, 1, rows, 1), KF_OK);
    assert_int_equal(kf_store_commit(st), KF_OK);
    kf_store_pieces_close(p);
    kf_store_close(st);
    /* Reopened: all there. */
    assert_int_equal(kf_store_open(dir, &st), KF_OK);
    assert_int_equal(kf_store_pieces_open(st, &p), KF_OK);
    assert_int_equal(kf_store_pieces_count(p, id, &n), KF_OK);
    assert_int_equal(n, total);
    kf_store_pieces_close(p);
    kf_store_close(st);
    char cmd[80];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(good_pieces_and_every_alteration_is_bad, setup, teardown),
        cmocka_unit_test_setup_teardown(duplicates_in_batch_across_batches_and_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(refused_unless_active_registered_and_well_formed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(whole_batch_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(batch_audited_with_counts_only, setup, teardown),
        cmocka_unit_test_setup_teardown(export_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(export_is_signed_sealed_and_holds_no_master_key, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(kmip_verify_and_export, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_batches_count_each_piece_once, setup,
                                        teardown),
        cmocka_unit_test(store_pieces_chunks_duplicates_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
