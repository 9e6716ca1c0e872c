/*
 * The Steel's checks and reports (src/station/steel.c, docs/manufacturing.md
 * MI5, MI7, MI10, MR4), against a fake domain whose M, Oak and Brass are made
 * here: a good MI4 and every refusal (not Oak's signature, signer renamed,
 * modified, another Steel, another domain, replayed key ID, not enrolled,
 * malformed, wrong record type); the Installed and InstallFailed
 * reports verify under the station's key with the right fields; Brass's
 * confirmations checked (signer, key ID, domain, status).
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
#include "station/steel.h"

#include "station_fixture.h"

#define T0 1767225600 /* 2026-01-01 */

struct fixture {
    char root[64], dir[128];
    kf_station *st;
    uint8_t st_sign[32], st_enc[32];
    struct domain ve;
    uint8_t key[32];
    kf_buf buf;
    size_t secmem_before;
};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void enrol(struct fixture *f, const struct domain *d)
{
    kf_buf rec;
    assert_int_equal(kf_buf_alloc(&rec, 1024, 65536, 0), KF_OK);
    add_m_cert(&rec, d->name, "S00000001", KF_MFG_ROLE_STEEL, f->st_sign, f->st_enc, d->m_priv);
    add_m_cert(&rec, d->name, "M00000001", KF_MFG_ROLE_AUTHORITY, d->m_pub, NULL, d->m_priv);
    add_m_cert(&rec, d->name, "O00000002", KF_MFG_ROLE_OAK, d->o_pub, NULL, d->m_priv);
    add_m_cert(&rec, d->name, "B00000003", KF_MFG_ROLE_BRASS, d->b_pub, d->b_enc_pub, d->m_priv);
    assert_int_equal(kf_station_save_certs(f->st, d->name, rec.data, rec.len), KF_OK);
    kf_buf_free(&rec);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->secmem_before = kf_secmem_live();
    strcpy(f->root, "/tmp/kf-steel-XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    snprintf(f->dir, sizeof(f->dir), "%s/steel", f->root);
    if (kf_station_create(f->dir, NULL, "S00000001") != KF_OK ||
        kf_station_open(f->dir, NULL, &f->st) != KF_OK)
        return -1;
    kf_station_public(f->st, f->st_sign, f->st_enc);
    domain_init(&f->ve, "VE");
    enrol(f, &f->ve);
    if (kf_crypto_random(f->key, sizeof(f->key)) != KF_OK ||
        kf_buf_alloc(&f->buf, 1024, 65536, 0) != KF_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kf_station_close(f->st);
    kf_buf_free(&f->buf);
    nftw(f->root, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    size_t live = kf_secmem_live(), before = f->secmem_before;
    free(f);
    return live == before ? 0 : -1;
}

/* An MI4 as Oak makes it: K sealed to steel_id's key (the station's). */
static void distribute(struct fixture *f, const char *domain, const char *steel_id, uint64_t key_id,
                       uint32_t status, const uint8_t signer_priv[32], const char *signer,
                       kf_buf *out)
{
    struct kf_mfg_record r = {0};
    r.type = KF_MFG_REC_DISTRIBUTE;
    r.fields = KF_MFG_F_STATUS | KF_MFG_F_ROLE_ID | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID |
               KF_MFG_F_KEY_ID | KF_MFG_F_SEALED_KEY | KF_MFG_F_TEST_TOKENS | KF_MFG_F_EVENT_TIME;
    r.status = status;
    strcpy(r.role_id, "O00000002");
    snprintf(r.domain, sizeof(r.domain), "%s", domain);
    snprintf(r.steel_id, sizeof(r.steel_id), "%s", steel_id);
    r.key_id = key_id;
    assert_int_equal(kf_mfg_seal_key(f->st_enc, domain, key_id, steel_id, f->key, r.sealed_key),
                     KF_OK);
    assert_int_equal(kfd_test_tokens(f->key, r.test_tokens), KF_OK);
    r.event_time = T0;
    kf_buf_reset(out);
    assert_int_equal(kf_mfg_record_sign(&r, signer, signer_priv, out), KF_OK);
}

static void test_mi4_good_then_replayed(void **state)
{
    struct fixture *f = *state;
    struct kf_mfg_record rec;
    bool decoded;
    distribute(f, "VE", "S00000001", 7, KF_MFG_NEW, f->ve.o_priv, "O00000002", &f->buf);
    assert_int_equal(steel_check_mi4(f->st, "VE", f->buf.data, f->buf.len, &rec, &decoded), KF_OK);
    assert_true(decoded);
    assert_int_equal(rec.key_id, 7);
    /* The key opens, and its test tokens are the device's evidence. */
    uint8_t k[32], tokens[8];
    assert_int_equal(kf_station_open_key(f->st, "VE", rec.key_id, NULL, rec.sealed_key, k), KF_OK);
    assert_memory_equal(k, f->key, 32);
    assert_int_equal(kfd_test_tokens(k, tokens), KF_OK);
    assert_memory_equal(tokens, rec.test_tokens, 8);
    /* Accepted once: after the key ID is stored, the same MI4 is a replay. */
    assert_int_equal(kf_station_set_last_key_id(f->st, "VE", rec.key_id), KF_OK);
    assert_int_equal(steel_check_mi4(f->st, "VE", f->buf.data, f->buf.len, &rec, &decoded),
                     KF_ERR_MFG_KEY_ID);
    assert_true(decoded);
    assert_int_equal(rec.key_id, 7);
    /* So is any lower key ID, and a higher one is fine. */
    distribute(f, "VE", "S00000001", 6, KF_MFG_NEW, f->ve.o_priv, "O00000002", &f->buf);
    assert_int_equal(steel_check_mi4(f->st, "VE", f->buf.data, f->buf.len, &rec, &decoded),
                     KF_ERR_MFG_KEY_ID);
    distribute(f, "VE", "S00000001", 8, KF_MFG_NEW, f->ve.o_priv, "O00000002", &f->buf);
    assert_int_equal(steel_check_mi4(f->st, "VE", f->buf.data, f->buf.len, &rec, &decoded), KF_OK);
}

static void test_mi4_refused(void **state)
{
    struct fixture *f = *state;
    struct kf_mfg_record rec;
    bool decoded;
    /* Signed by Brass (a key of the domain, but not Oak's) under Oak's name. */
    distribute(f, "VE", "S00000001", 7, KF_MFG_NEW, f->ve.b_priv, "O00000002", &f->buf);
    assert_int_equal(steel_check_mi4(f->st, "VE", f->buf.data, f->buf.len, &rec, &decoded),
                     KF_ERR_BAD_SIGNATURE);
    assert_true(decoded); /* the key it names can still be reported */
    assert_int_equal(rec.key_id, 7);
    /* Oak's signature, but the envelope names another signer. */
    distribute(f, "VE", "S00000001", 7, KF_MFG_NEW, f->ve.o_priv, "O00000009", &f->buf);
    assert_int_equal(steel_check_mi4(f->st, "VE", f->buf.data, f->buf.len, &rec, &decoded),
                     KF_ERR_BAD_SIGNATURE);
    /* A byte of the body changed. */
    distribute(f, "VE", "S00000001", 7, KF_MFG_NEW, f->ve.o_priv, "O00000002", &f->buf);
    f->buf.data[60] ^= 0x01;
    assert_int_not_equal(steel_check_mi4(f->st, "VE", f->buf.data, f->buf.len, &rec, &decoded),
                         KF_OK);
    /* Another Steel's key. */
    distribute(f, "VE", "S00000002", 7, KF_MFG_NEW, f->ve.o_priv, "O00000002", &f->buf);
    assert_int_equal(steel_check_mi4(f->st, "VE", f->buf.data, f->buf.len, &rec, &decoded),
                     KF_ERR_MFG_STEEL_ID);
    assert_string_equal(rec.steel_id, "S00000002");
    /* A record of another domain, signed by this domain's Oak. */
    distribute(f, "USPS", "S00000001", 7, KF_MFG_NEW, f->ve.o_priv, "O00000002", &f->buf);
    assert_int_equal(steel_check_mi4(f->st, "VE", f->buf.data, f->buf.len, &rec, &decoded),
                     KF_ERR_MFG_PARAM);
    /* ... and for a domain this station is not enrolled in. */
    assert_int_equal(steel_check_mi4(f->st, "USPS", f->buf.data, f->buf.len, &rec, &decoded),
                     KF_ERR_MFG_ROLE);
    /* Malformed, truncated, or with bytes after it. */
    const uint8_t junk[16] = {0x42, 0x00, 0x01};
    assert_int_equal(steel_check_mi4(f->st, "VE", junk, sizeof(junk), &rec, &decoded),
                     KF_ERR_MFG_FRAMING);
    assert_false(decoded);
    distribute(f, "VE", "S00000001", 7, KF_MFG_NEW, f->ve.o_priv, "O00000002", &f->buf);
    assert_int_equal(steel_check_mi4(f->st, "VE", f->buf.data, f->buf.len - 8, &rec, &decoded),
                     KF_ERR_MFG_FRAMING);
    assert_int_equal(kf_buf_put_zeros(&f->buf, 8), KF_OK);
    assert_int_equal(steel_check_mi4(f->st, "VE", f->buf.data, f->buf.len, &rec, &decoded),
                     KF_ERR_MFG_FRAMING);
    /* Nothing moved the last key ID. */
    uint64_t last = 1;
    assert_int_equal(kf_station_last_key_id(f->st, "VE", &last), KF_OK);
    assert_int_equal(last, 0);
}

static void test_reports(void **state)
{
    struct fixture *f = *state;
    struct kf_mfg_record mi4, back;
    bool decoded;
    distribute(f, "VE", "S00000001", 9, KF_MFG_NEW, f->ve.o_priv, "O00000002", &f->buf);
    assert_int_equal(steel_check_mi4(f->st, "VE", f->buf.data, f->buf.len, &mi4, &decoded), KF_OK);
    kf_buf out;
    assert_int_equal(kf_buf_alloc(&out, 512, 65536, 0), KF_OK);
    assert_int_equal(steel_installed(f->st, &mi4, "SN00000001", mi4.test_tokens, T0 + 5, &out),
                     KF_OK);
    assert_int_equal(kf_mfg_record_open(out.data, out.len, f->st_sign, KF_MFG_REC_INSTALLED, &back),
                     KF_OK);
    assert_int_equal(back.status, KF_MFG_INSTALLED);
    assert_string_equal(back.role_id, "O00000002");
    assert_string_equal(back.steel_id, "S00000001");
    assert_string_equal(back.msn, "SN00000001");
    assert_int_equal(back.key_id, 9);
    assert_int_equal(back.event_time, T0 + 5);
    assert_memory_equal(back.test_tokens, mi4.test_tokens, 8);
    /* Not under another key. */
    assert_int_equal(kf_mfg_record_open(out.data, out.len, f->ve.o_pub, 0, &back),
                     KF_ERR_BAD_SIGNATURE);
    assert_int_equal(steel_installed(f->st, &mi4, "sn-lower", mi4.test_tokens, T0, &out),
                     KF_ERR_METER_FIELD);

    kf_buf_reset(&out);
    assert_int_equal(
        steel_install_failed(f->st, "VE", "S00000002", 9, NULL, KF_ERR_MFG_STEEL_ID, T0 + 6, &out),
        KF_OK);
    assert_int_equal(
        kf_mfg_record_open(out.data, out.len, f->st_sign, KF_MFG_REC_INSTALL_FAILED, &back), KF_OK);
    assert_int_equal(back.status, KF_MFG_BAD);
    assert_int_equal(back.reason, KF_ERR_MFG_STEEL_ID);
    assert_string_equal(back.steel_id, "S00000002");
    assert_false(back.fields & KF_MFG_F_MSN);
    kf_buf_reset(&out);
    assert_int_equal(steel_install_failed(f->st, "VE", "S00000001", 9, "SN00000002",
                                          KF_ERR_MFG_WRITE, T0 + 6, &out),
                     KF_OK);
    assert_int_equal(
        kf_mfg_record_open(out.data, out.len, f->st_sign, KF_MFG_REC_INSTALL_FAILED, &back), KF_OK);
    assert_string_equal(back.msn, "SN00000002");
    /* A reason must be an error code. */
    assert_int_equal(steel_install_failed(f->st, "VE", "S00000001", 9, NULL, 0, T0, &out),
                     KF_ERR_ARG);
    assert_int_equal(steel_install_failed(f->st, "VE", "X1", 9, NULL, KF_ERR_MFG_WRITE, T0, &out),
                     KF_ERR_ARG);
    kf_buf_free(&out);
}

static void brass_record(struct fixture *f, uint32_t type, const char *domain, uint64_t key_id,
                         uint32_t status, const uint8_t priv[32], const char *signer, kf_buf *out)
{
    struct kf_mfg_record r = {0};
    r.type = type;
    r.status = status;
    snprintf(r.domain, sizeof(r.domain), "%s", domain);
    r.key_id = key_id;
    strcpy(r.msn, "SN00000001");
    r.event_time = T0;
    r.fields =
        KF_MFG_F_STATUS | KF_MFG_F_DOMAIN | KF_MFG_F_KEY_ID | KF_MFG_F_MSN | KF_MFG_F_EVENT_TIME;
    if (type == KF_MFG_REC_CONFIRM_INSTALLED && status == KF_MFG_BAD) {
        r.fields |= KF_MFG_F_REASON;
        r.reason = KF_ERR_MFG_TOKENS;
    }
    if (type == KF_MFG_REC_CONFIRM_REGISTERED) {
        r.fields |= KF_MFG_F_INDICIA | KF_MFG_F_COUNTRY;
        strcpy(r.indicia, "IN00000001");
        strcpy(r.country, "US");
    }
    kf_buf_reset(out);
    assert_int_equal(kf_mfg_record_sign(&r, signer, priv, out), KF_OK);
    (void)f;
}

static void test_confirmations(void **state)
{
    struct fixture *f = *state;
    struct kf_mfg_record rec;
    kf_buf *b = &f->buf;
    brass_record(f, KF_MFG_REC_CONFIRM_INSTALLED, "VE", 9, KF_MFG_INSTALLED, f->ve.b_priv,
                 "B00000003", b);
    assert_int_equal(steel_check_confirm(f->st, "VE", 9, b->data, b->len, &rec), KF_OK);
    assert_int_equal(rec.status, KF_MFG_INSTALLED);
    assert_int_equal(steel_check_confirm(f->st, "VE", 10, b->data, b->len, &rec), KF_ERR_MFG_PARAM);
    brass_record(f, KF_MFG_REC_CONFIRM_INSTALLED, "VE", 9, KF_MFG_BAD, f->ve.b_priv, "B00000003",
                 b);
    assert_int_equal(steel_check_confirm(f->st, "VE", 9, b->data, b->len, &rec), KF_OK);
    assert_int_equal(rec.status, KF_MFG_BAD);
    assert_int_equal(rec.reason, KF_ERR_MFG_TOKENS);
    /* Signed by Oak, or by Brass under another name. */
    brass_record(f, KF_MFG_REC_CONFIRM_INSTALLED, "VE", 9, KF_MFG_INSTALLED, f->ve.o_priv,
                 "B00000003", b);
    assert_int_equal(steel_check_confirm(f->st, "VE", 9, b->data, b->len, &rec),
                     KF_ERR_BAD_SIGNATURE);
    brass_record(f, KF_MFG_REC_CONFIRM_INSTALLED, "VE", 9, KF_MFG_INSTALLED, f->ve.b_priv,
                 "O00000002", b);
    assert_int_equal(steel_check_confirm(f->st, "VE", 9, b->data, b->len, &rec),
                     KF_ERR_BAD_SIGNATURE);
    /* Another domain's record; a registration where an installation is expected. */
    brass_record(f, KF_MFG_REC_CONFIRM_INSTALLED, "USPS", 9, KF_MFG_INSTALLED, f->ve.b_priv,
                 "B00000003", b);
    assert_int_equal(steel_check_confirm(f->st, "VE", 9, b->data, b->len, &rec), KF_ERR_MFG_PARAM);
    brass_record(f, KF_MFG_REC_CONFIRM_REGISTERED, "VE", 9, KF_MFG_ACTIVE, f->ve.b_priv,
                 "B00000003", b);
    assert_int_not_equal(steel_check_confirm(f->st, "VE", 9, b->data, b->len, &rec), KF_OK);
    /* MR4. */
    assert_int_equal(steel_check_registered(f->st, "VE", b->data, b->len, &rec), KF_OK);
    assert_string_equal(rec.country, "US");
    assert_int_equal(steel_check_registered(f->st, "USPS", b->data, b->len, &rec), KF_ERR_MFG_ROLE);
    brass_record(f, KF_MFG_REC_CONFIRM_REGISTERED, "VE", 9, KF_MFG_ACTIVE, f->ve.m_priv,
                 "B00000003", b);
    assert_int_equal(steel_check_registered(f->st, "VE", b->data, b->len, &rec),
                     KF_ERR_BAD_SIGNATURE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mi4_good_then_replayed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mi4_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reports, setup, teardown),
        cmocka_unit_test_setup_teardown(test_confirmations, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
