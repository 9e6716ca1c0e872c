/*
 * The line engine (src/station/line.c) against a fake keyfleetd made here:
 * an Oak that draws keys and seals them to the Steel they are asked for, an
 * archive with "one open key per (domain, Steel)" (LOST), and a Brass that
 * refuses a report on a key that is not New and compares the device's test
 * tokens. Eight devices, every fault kind once, in both domains: the exact
 * outcome lines, the archive's statuses and reasons, the devices' slots (no
 * key in two devices), the counts, the last key IDs stored, and a refused
 * request stopping the line. Also the fault syntax.
 */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "keyfleet/crypto.h"
#include "keyfleet/error.h"
#include "keyfleet/meter.h"
#include "keyfleet/mfg.h"
#include "keyfleet/secmem.h"
#include "keyfleet/station.h"
#include "station/line.h"

#include "station_fixture.h"

#define T0 1767225600
#define MAX_KEYS 64
#define MAX_LINES 128
#define DEVICES 8

struct key_row {
    char domain[16];
    uint64_t key_id;
    char steel[KF_MFG_ROLE_ID_LEN + 1];
    uint32_t status;
    int reason;
    char msn[KF_MFG_MSN_MAX + 1];
    uint8_t k[32];
};

struct fake {
    uint8_t m_priv[32], m_pub[32], o_priv[32], o_pub[32], b_priv[32], b_pub[32];
    uint8_t st_sign[32], st_enc[32]; /* S00000001, the station under test */
    uint8_t s2_enc[32];              /* S00000002 */
    struct key_row keys[MAX_KEYS];
    size_t nkeys;
    uint64_t next_id[2];
    int refuse_requests; /* a kf code: every RequestKey refused */
    char lines[MAX_LINES][96];
    size_t nlines;
};

struct fixture {
    char root[64], dir[128];
    kf_station *st;
    struct fake fake;
    struct steel_line ln;
    struct kfd_meter meters[DEVICES + 1];
    struct steel_device dev[DEVICES + 1];
    unsigned writes[DEVICES + 1];
    size_t secmem_before;
};

static const char *const domains[2] = {"VE", "USPS"};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int domain_index(const char *d)
{
    return strcmp(d, "VE") == 0 ? 0 : strcmp(d, "USPS") == 0 ? 1 : -1;
}

static struct key_row *find_key(struct fake *fk, const char *domain, uint64_t id)
{
    for (size_t i = 0; i < fk->nkeys; i++)
        if (strcmp(fk->keys[i].domain, domain) == 0 && fk->keys[i].key_id == id)
            return &fk->keys[i];
    return NULL;
}

/* ---- the fake keyfleetd ---- */
static int fake_request(void *ctx, const char *domain, const char *steel_id, kf_buf *out,
                        bool *refused)
{
    struct fake *fk = ctx;
    *refused = false;
    if (fk->refuse_requests) {
        *refused = true;
        return fk->refuse_requests;
    }
    int w = domain_index(domain);
    assert_true(w >= 0);
    for (size_t i = 0; i < fk->nkeys; i++) /* one open key per (domain, Steel) */
        if (strcmp(fk->keys[i].domain, domain) == 0 && strcmp(fk->keys[i].steel, steel_id) == 0 &&
            fk->keys[i].status == KF_MFG_NEW) {
            fk->keys[i].status = KF_MFG_BAD;
            fk->keys[i].reason = KF_ERR_MFG_LOST;
        }
    assert_true(fk->nkeys < MAX_KEYS);
    struct key_row *k = &fk->keys[fk->nkeys++];
    memset(k, 0, sizeof(*k));
    strcpy(k->domain, domain);
    k->key_id = ++fk->next_id[w] * 10 + (uint64_t)w; /* distinct across domains, increasing */
    strcpy(k->steel, steel_id);
    k->status = KF_MFG_NEW;
    assert_int_equal(kf_crypto_random(k->k, 32), KF_OK);
    struct kf_mfg_record r = {0};
    r.type = KF_MFG_REC_DISTRIBUTE;
    r.fields = KF_MFG_F_STATUS | KF_MFG_F_ROLE_ID | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID |
               KF_MFG_F_KEY_ID | KF_MFG_F_SEALED_KEY | KF_MFG_F_TEST_TOKENS | KF_MFG_F_EVENT_TIME;
    r.status = KF_MFG_NEW;
    strcpy(r.role_id, "O00000002");
    strcpy(r.domain, domain);
    strcpy(r.steel_id, steel_id);
    r.key_id = k->key_id;
    const uint8_t *to = strcmp(steel_id, "S00000001") == 0 ? fk->st_enc : fk->s2_enc;
    assert_int_equal(kf_mfg_seal_key(to, domain, k->key_id, steel_id, k->k, r.sealed_key), KF_OK);
    assert_int_equal(kfd_test_tokens(k->k, r.test_tokens), KF_OK);
    r.event_time = T0;
    return kf_mfg_record_sign(&r, "O00000002", fk->o_priv, out);
}

static int fake_report(void *ctx, const char *domain, const uint8_t *report, size_t len,
                       kf_buf *out, bool *refused)
{
    struct fake *fk = ctx;
    struct kf_mfg_record r;
    *refused = true;
    KF_GUARD(kf_mfg_record_open(report, len, fk->st_sign, 0, &r));
    if (r.type != KF_MFG_REC_INSTALLED && r.type != KF_MFG_REC_INSTALL_FAILED)
        return KF_ERR_MFG_COMMAND;
    struct key_row *k = find_key(fk, domain, r.key_id);
    if (!k || strcmp(r.domain, domain) != 0)
        return KF_ERR_MFG_UNKNOWN;
    if (k->status != KF_MFG_NEW)
        return KF_ERR_MFG_STATUS;
    *refused = false;
    if (r.type == KF_MFG_REC_INSTALLED) {
        uint8_t tokens[8];
        assert_int_equal(kfd_test_tokens(k->k, tokens), KF_OK);
        bool good = memcmp(tokens, r.test_tokens, 8) == 0;
        k->status = good ? KF_MFG_INSTALLED : KF_MFG_BAD;
        k->reason = good ? 0 : KF_ERR_MFG_TOKENS;
        strcpy(k->msn, r.msn);
    } else {
        k->status = KF_MFG_BAD;
        k->reason = r.reason;
        strcpy(k->msn, (r.fields & KF_MFG_F_MSN) ? r.msn : "-");
    }
    struct kf_mfg_record c = {0};
    c.type = KF_MFG_REC_CONFIRM_INSTALLED;
    c.fields =
        KF_MFG_F_STATUS | KF_MFG_F_DOMAIN | KF_MFG_F_KEY_ID | KF_MFG_F_MSN | KF_MFG_F_EVENT_TIME;
    c.status = k->status;
    strcpy(c.domain, domain);
    c.key_id = k->key_id;
    strcpy(c.msn, k->msn);
    if (k->status == KF_MFG_BAD) {
        c.fields |= KF_MFG_F_REASON;
        c.reason = k->reason;
    }
    c.event_time = T0 + 1;
    return kf_mfg_record_sign(&c, "B00000003", fk->b_priv, out);
}

static void fake_result(void *ctx, const char *msn, const char *domain, uint64_t key_id,
                        const char *status, int reason)
{
    struct fake *fk = ctx;
    assert_true(fk->nlines < MAX_LINES);
    snprintf(fk->lines[fk->nlines++], sizeof(fk->lines[0]), "%s %s %llu %s %s", msn, domain,
             (unsigned long long)key_id, status, reason ? kf_errname(reason) : "-");
}

/* ---- the devices' storage: in memory, failing on request ---- */
static struct fixture *the_fixture;
static int store(void *ctx, const uint8_t *state, size_t len)
{
    struct steel_device *d = ctx;
    (void)state;
    (void)len;
    if (d->fail_writes)
        return -1;
    the_fixture->writes[d - the_fixture->dev]++;
    return 0;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    the_fixture = f;
    f->secmem_before = kf_secmem_live();
    strcpy(f->root, "/tmp/kf-line-XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    snprintf(f->dir, sizeof(f->dir), "%s/steel", f->root);
    if (kf_station_create(f->dir, NULL, "S00000001") != KF_OK ||
        kf_station_open(f->dir, NULL, &f->st) != KF_OK)
        return -1;
    struct fake *fk = &f->fake;
    kf_station_public(f->st, fk->st_sign, fk->st_enc);
    uint8_t x[32], bx[32], b_enc[32];
    assert_int_equal(kf_crypto_random(fk->m_priv, 32), KF_OK);
    assert_int_equal(kf_crypto_random(fk->o_priv, 32), KF_OK);
    assert_int_equal(kf_crypto_random(fk->b_priv, 32), KF_OK);
    assert_int_equal(kf_crypto_random(x, 32), KF_OK);
    assert_int_equal(kf_crypto_random(bx, 32), KF_OK);
    assert_int_equal(kf_ed25519_public(fk->m_priv, fk->m_pub), KF_OK);
    assert_int_equal(kf_ed25519_public(fk->o_priv, fk->o_pub), KF_OK);
    assert_int_equal(kf_ed25519_public(fk->b_priv, fk->b_pub), KF_OK);
    assert_int_equal(kf_x25519_public(x, fk->s2_enc), KF_OK);
    assert_int_equal(kf_x25519_public(bx, b_enc), KF_OK);
    for (int w = 0; w < 2; w++) {
        kf_buf rec;
        assert_int_equal(kf_buf_alloc(&rec, 1024, 65536, 0), KF_OK);
        add_m_cert(&rec, domains[w], "S00000001", KF_MFG_ROLE_STEEL, fk->st_sign, fk->st_enc,
                   fk->m_priv);
        add_m_cert(&rec, domains[w], "M00000001", KF_MFG_ROLE_AUTHORITY, fk->m_pub, NULL,
                   fk->m_priv);
        add_m_cert(&rec, domains[w], "O00000002", KF_MFG_ROLE_OAK, fk->o_pub, NULL, fk->m_priv);
        add_m_cert(&rec, domains[w], "B00000003", KF_MFG_ROLE_BRASS, fk->b_pub, b_enc, fk->m_priv);
        assert_int_equal(kf_station_save_certs(f->st, domains[w], rec.data, rec.len), KF_OK);
        kf_buf_free(&rec);
    }
    struct steel_line *ln = &f->ln;
    if (steel_line_init(ln) != KF_OK)
        return -1;
    ln->st = f->st;
    ln->domain[0] = "VE";
    ln->domain[1] = "USPS";
    ln->other_steel = "S00000002";
    ln->io = (struct steel_line_io){
        .ctx = fk, .request_key = fake_request, .report = fake_report, .result = fake_result};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    steel_line_free(&f->ln);
    kf_station_close(f->st);
    kf_wipe(f->meters, sizeof(f->meters));
    nftw(f->root, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    size_t live = kf_secmem_live(), before = f->secmem_before;
    free(f);
    return live == before ? 0 : -1;
}

static void run_devices(struct fixture *f, unsigned count)
{
    for (unsigned n = 1; n <= count; n++) {
        char msn[16];
        snprintf(msn, sizeof(msn), "SN%08u", n);
        f->dev[n].m = &f->meters[n];
        assert_int_equal(kfd_meter_init(&f->meters[n], msn, store, &f->dev[n]), KF_OK);
        assert_int_equal(steel_line_device(&f->ln, &f->dev[n], n), KF_OK);
    }
}

static void add_fault(struct steel_line *ln, const char *spec)
{
    assert_int_equal(steel_fault_parse(spec, &ln->faults[ln->nfaults]), KF_OK);
    ln->nfaults++;
}

/* "SN0000000n DOMAIN" + the rest, with key IDs written as the fake assigns them. */
static void expect_lines(const struct fake *fk, const char *const *want, size_t n)
{
    for (size_t i = 0; i < n && i < fk->nlines; i++)
        if (strcmp(fk->lines[i], want[i]) != 0)
            fail_msg("line %zu: got '%s', want '%s'", i, fk->lines[i], want[i]);
    if (fk->nlines != n) {
        for (size_t i = 0; i < fk->nlines; i++)
            print_message("%s\n", fk->lines[i]);
        fail_msg("%zu lines, want %zu", fk->nlines, n);
    }
}

static void expect_key(struct fake *fk, const char *domain, uint64_t id, uint32_t status,
                       int reason, const char *msn)
{
    struct key_row *k = find_key(fk, domain, id);
    assert_non_null(k);
    assert_int_equal(k->status, status);
    assert_int_equal(k->reason, reason);
    assert_string_equal(k->msn, msn);
}

static void test_clean_line(void **state)
{
    struct fixture *f = *state;
    run_devices(f, 3);
    const char *const want[] = {"SN00000001 VE 10 Installed -", "SN00000001 USPS 11 Installed -",
                                "SN00000002 VE 20 Installed -", "SN00000002 USPS 21 Installed -",
                                "SN00000003 VE 30 Installed -", "SN00000003 USPS 31 Installed -"};
    expect_lines(&f->fake, want, 6);
    assert_int_equal(f->ln.n.complete, 3);
    assert_int_equal(f->ln.n.incomplete, 0);
    assert_int_equal(f->ln.n.installed, 6);
    /* The device holds what the archive says, and checks its own evidence. */
    for (unsigned n = 1; n <= 3; n++) {
        assert_int_equal(f->meters[n].slot[0].key_id, n * 10);
        assert_int_equal(f->meters[n].slot[1].key_id, n * 10 + 1);
        assert_memory_equal(f->meters[n].slot[0].key, find_key(&f->fake, "VE", n * 10)->k, 32);
        assert_int_equal(f->writes[n], 2);
    }
    uint64_t last;
    assert_int_equal(kf_station_last_key_id(f->st, "VE", &last), KF_OK);
    assert_int_equal(last, 30);
    assert_int_equal(kf_station_last_key_id(f->st, "USPS", &last), KF_OK);
    assert_int_equal(last, 31);
}

static void test_every_fault(void **state)
{
    struct fixture *f = *state;
    struct steel_line *ln = &f->ln;
    add_fault(ln, "drop-mi4@2");
    add_fault(ln, "bad-token@3");
    add_fault(ln, "bad-token-unchecked@4:postal");
    add_fault(ln, "replay-mi4@5");
    add_fault(ln, "wrong-steel@6:postal");
    add_fault(ln, "second-install@7");
    add_fault(ln, "write-error@8:postal");
    run_devices(f, DEVICES);
    /* Key IDs: VE 10, 20, ...; USPS 11, 21, ... in the order asked for. */
    const char *const want[] = {
        "SN00000001 VE 10 Installed -",
        "SN00000001 USPS 11 Installed -",
        "SN00000002 VE 20 Lost -",
        "SN00000002 VE 30 Installed -",
        "SN00000002 USPS 21 Installed -",
        "SN00000003 VE 40 Bad KF_ERR_MFG_TOKENS",
        "SN00000003 USPS 31 Installed -",
        "SN00000004 VE 50 Installed -",
        "SN00000004 USPS 41 Bad KF_ERR_MFG_TOKENS",
        "SN00000005 VE 50 SteelRefused KF_ERR_MFG_KEY_ID",
        "SN00000005 VE 50 ServerRefused KF_ERR_MFG_STATUS",
        "SN00000005 VE 60 Installed -",
        "SN00000005 USPS 51 Installed -",
        "SN00000006 VE 70 Installed -",
        "SN00000006 USPS 61 SteelRefused KF_ERR_MFG_STEEL_ID",
        "SN00000006 USPS 61 Bad KF_ERR_MFG_STEEL_ID",
        "SN00000006 USPS 71 Installed -",
        "SN00000007 VE 80 Installed -",
        "SN00000007 VE 70 SteelRefused KF_ERR_MFG_KEY_ID",
        "SN00000007 VE 70 ServerRefused KF_ERR_MFG_STATUS",
        "SN00000007 VE 70 DeviceRefused KF_ERR_METER_INSTALLED",
        "SN00000007 VE 70 ServerRefused KF_ERR_MFG_STATUS",
        "SN00000007 USPS 81 Installed -",
        "SN00000008 VE 90 Installed -",
        "SN00000008 USPS 91 Bad KF_ERR_MFG_WRITE",
    };
    expect_lines(&f->fake, want, sizeof(want) / sizeof(want[0]));
    struct fake *fk = &f->fake;
    expect_key(fk, "VE", 20, KF_MFG_BAD, KF_ERR_MFG_LOST, "");
    expect_key(fk, "VE", 40, KF_MFG_BAD, KF_ERR_MFG_TOKENS, "SN00000003");
    expect_key(fk, "USPS", 41, KF_MFG_BAD, KF_ERR_MFG_TOKENS, "SN00000004");
    expect_key(fk, "VE", 50, KF_MFG_INSTALLED, 0, "SN00000004");
    expect_key(fk, "USPS", 61, KF_MFG_BAD, KF_ERR_MFG_STEEL_ID, "-");
    assert_string_equal(find_key(fk, "USPS", 61)->steel, "S00000002");
    expect_key(fk, "VE", 70, KF_MFG_INSTALLED, 0, "SN00000006");
    expect_key(fk, "USPS", 91, KF_MFG_BAD, KF_ERR_MFG_WRITE, "SN00000008");
    /* No key in two devices; every Installed key in exactly its device. */
    for (size_t i = 0; i < fk->nkeys; i++) {
        const struct key_row *k = &fk->keys[i];
        unsigned holders = 0;
        for (unsigned n = 1; n <= DEVICES; n++)
            for (size_t s = 0; s < KFD_METER_DOMAINS; s++)
                if (f->meters[n].slot[s].used && f->meters[n].slot[s].key_id == k->key_id &&
                    strcmp(f->meters[n].slot[s].domain, k->domain) == 0) {
                    holders++;
                    if (k->status == KF_MFG_INSTALLED)
                        assert_string_equal(f->meters[n].msn, k->msn);
                }
        assert_true(holders <= 1);
        if (k->status == KF_MFG_INSTALLED)
            assert_int_equal(holders, 1);
    }
    /* The write-error device holds no USPS key. */
    assert_false(f->meters[8].slot[1].used);
    assert_int_equal(ln->n.complete, 5);
    assert_int_equal(ln->n.incomplete, 3);
    assert_int_equal(ln->n.lost, 1);
    assert_int_equal(ln->n.bad, 4);
    assert_int_equal(ln->n.steel_refused, 3);
    assert_int_equal(ln->n.device_refused, 1);
    assert_int_equal(ln->n.server_refused, 3);
    assert_int_equal(ln->n.anomalies, 0);
}

static void test_refused_request_stops(void **state)
{
    struct fixture *f = *state;
    f->fake.refuse_requests = KF_ERR_MFG_COMMAND;
    f->dev[1].m = &f->meters[1];
    assert_int_equal(kfd_meter_init(&f->meters[1], "SN00000001", store, &f->dev[1]), KF_OK);
    assert_int_equal(steel_line_device(&f->ln, &f->dev[1], 1), KF_ERR_MFG_COMMAND);
    assert_non_null(strstr(f->ln.why, "refused by keyfleetd"));
    assert_int_equal(f->fake.nlines, 0);
}

static void test_fault_parse(void **state)
{
    (void)state;
    struct steel_fault ft;
    assert_int_equal(steel_fault_parse("drop-mi4@12", &ft), KF_OK);
    assert_int_equal(ft.kind, STEEL_FAULT_DROP_MI4);
    assert_int_equal(ft.device, 12);
    assert_int_equal(ft.which, 0);
    assert_int_equal(steel_fault_parse("write-error@99999999:postal", &ft), KF_OK);
    assert_int_equal(ft.kind, STEEL_FAULT_WRITE_ERROR);
    assert_int_equal(ft.which, 1);
    assert_int_equal(steel_fault_parse("bad-token-unchecked@3:vendor", &ft), KF_OK);
    assert_int_equal(ft.kind, STEEL_FAULT_BAD_TOKEN_UNCHECKED);
    const char *bad[] = {"",           "drop-mi4",     "drop-mi4@",
                         "drop-mi4@0", "drop-mi4@x",   "drop-mi4@123456789",
                         "drop@1",     "bad-token@1:", "bad-token@1:earth",
                         "Drop-mi4@1", "drop-mi4@-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(steel_fault_parse(bad[i], &ft), KF_ERR_USAGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_clean_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_fault, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_request_stops, setup, teardown),
        cmocka_unit_test(test_fault_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
