/*
 * Devices and pairwise KEKs through the service and the KMIP layer, checked
 * against the real device library (libkeyfleet-device): registration and
 * its refusals, the one-time export, the MKEK never served by Get or used by
 * KMIP, pair issuance decoded by both devices (the same KEK on each side),
 * counters that only go up (across requests and a close/reopen), every
 * refusal of a pair request and of an acknowledgement, resynchronisation
 * that only moves forward, the transaction committed before the message is
 * built, and scans of the database files and the audit trail for key bytes.
 *
 * Acknowledgements for the negative cases are made here from the spec
 * (docs/pairing.md: AK = KDF(MKEK, "keyfleet ack v1", ID), MAC = AES-256-CMAC
 * over the AckBody's bytes), so the server is checked against the document
 * as well as against the device library's own acks.
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
#include <dirent.h>
#include <pthread.h>
#include <sqlite3.h>

#include "keyfleet/device.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/log.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "keyfleet/ttlv.h"

#include "kms_device_fixture.h"
#include "kms_fixture.h"

struct fixture {
    char dir[64];
    kf_kms *kms;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || kms_pairing_open(f->dir, sizeof(f->dir), "device", &f->kms) < 0)
        return -1;
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

static void reopen(struct fixture *f)
{
    kf_kms_close(f->kms);
    struct kf_kms_config cfg = {.dir = f->dir, .dev = true};
    assert_int_equal(kf_kms_open(&cfg, &f->kms), KF_OK);
}

/* ---- A device in memory (kms_device_fixture.h), reopened from its saved state ---- */

/* Register, export once, install from the package, reopen from the saved state. */
static void make_device(kf_kms *kms, const char *id, const char *domain, struct tdev *t)
{
    tdev_install(kms, id, domain, t);
    struct kfd_device reopened;
    assert_int_equal(kfd_open(&reopened, &t->env, t->saved, t->saved_len), KF_OK);
    assert_string_equal(reopened.st.id, id);
    assert_string_equal(reopened.st.domain, domain);
    assert_memory_equal(reopened.st.mkek, t->d.st.mkek, KFD_KEY_LEN);
    assert_int_equal(reopened.st.last_counter, 0);
    t->d = reopened;
}

static int find_slot(const struct kfd_device *d, uint64_t kek_id)
{
    for (int i = 0; i < KFD_MAX_KEKS; i++)
        if (d->st.keks[i].in_use && d->st.keks[i].kek_id == kek_id)
            return i;
    return -1;
}

/* Issue for A and B and let both devices accept their parts; acks in ack_a/ack_b. */
static int pair_and_accept(kf_kms *kms, struct tdev *a, struct tdev *b, uint32_t count,
                           uint32_t lifetime, uint32_t max_uses, kf_buf *ack_a, kf_buf *ack_b,
                           int *verdict_a, int *verdict_b)
{
    kf_buf m;
    struct kfd_span pa, pb;
    assert_int_equal(kf_buf_alloc(&m, 0, 8192, 0), KF_OK);
    int rc = kf_kms_pair_issue(kms, "test", a->d.st.id, b->d.st.id, count, lifetime, max_uses, &m);
    if (rc == KF_OK) {
        assert_int_equal(kfd_pair_split(m.data, m.len, &pa, &pb), KF_OK);
        assert_int_equal(kf_buf_alloc(ack_a, 0, 4096, 0), KF_OK);
        assert_int_equal(kf_buf_alloc(ack_b, 0, 4096, 0), KF_OK);
        *verdict_a = kfd_pair_accept(&a->d, KFD_ROLE_A, pa.p, pa.len, ack_a);
        *verdict_b = kfd_pair_accept(&b->d, KFD_ROLE_B, pb.p, pb.len, ack_b);
    }
    kf_buf_free(&m);
    return rc;
}

/* ---- Registration ---- */

static void register_refusals(void **state)
{
    struct fixture *f = *state;
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_register(f->kms, "test", "meter-1", "VENDOR", &info), KF_OK);
    assert_string_equal(info.id, "meter-1");
    assert_string_equal(info.domain, "VENDOR");
    assert_string_equal(info.mkek_uid, "VENDOR/1");
    assert_int_equal(info.counter, 0);
    assert_false(info.exported);
    assert_int_equal(info.last_kek_id, 0);
    /* The same ID again, in the same or another domain. */
    assert_int_equal(kf_kms_device_register(f->kms, "test", "meter-1", "VENDOR", NULL),
                     KF_ERR_DEVICE_EXISTS);
    assert_int_equal(kf_kms_device_register(f->kms, "test", "meter-1", "USPS", NULL),
                     KF_ERR_DEVICE_EXISTS);
    assert_int_equal(count_audit(f->kms, "DeviceRegister", "KF_ERR_DEVICE_EXISTS", NULL, 0), 2);
    /* Invalid IDs and domains. */
    char longid[70];
    memset(longid, 'x', 65);
    longid[65] = 0;
    const char *bad[] = {"", "bad/id", "sp ace", longid, "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kf_kms_device_register(f->kms, "test", bad[i], "VENDOR", NULL),
                         KF_ERR_DEVICE_ID);
    assert_int_equal(kf_kms_device_register(f->kms, "test", NULL, "VENDOR", NULL),
                     KF_ERR_DEVICE_ID);
    assert_int_equal(kf_kms_device_register(f->kms, "test", "meter-2", "NOWHERE", NULL),
                     KF_ERR_DOMAIN);
    assert_int_equal(kf_kms_device_register(f->kms, "test", "meter-2", "bad/dom", NULL),
                     KF_ERR_DOMAIN);
    assert_int_equal(count_audit(f->kms, "DeviceRegister", "KF_ERR_DEVICE_ID", NULL, 0), 6);
    /* A 64-character ID is fine; the refused attempts left no object behind. */
    memset(longid, 'y', 64);
    longid[64] = 0;
    assert_int_equal(kf_kms_device_register(f->kms, "test", longid, "VENDOR", &info), KF_OK);
    assert_string_equal(info.mkek_uid, "VENDOR/2");
    assert_int_equal(kf_kms_device_get(f->kms, "test", "meter-2", &info), KF_ERR_DEVICE_UNKNOWN);
    /* The MKEK is an ordinary object of the domain: name, type, state. */
    struct kf_object obj = {0};
    assert_int_equal(kf_kms_get(f->kms, "test", "VENDOR/1", &obj, NULL), KF_OK);
    assert_string_equal(obj.name, "device:meter-1");
    assert_int_equal(obj.object_type, KF_OBJ_SYMMETRIC_KEY);
    assert_int_equal(obj.crypto_alg, KMIP_ALG_AES);
    assert_int_equal(obj.crypto_length, 256);
    assert_int_equal(obj.state, KF_STATE_ACTIVE);
    kf_object_clear(&obj);
    /* Device rows are never deleted, so IDs are never reused. */
    sqlite3 *db = kms_db_open(f->dir);
    assert_int_not_equal(
        sqlite3_exec(db, "DELETE FROM device WHERE id = 'meter-1'", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* ---- Export once ---- */

static void export_once_then_refused(void **state)
{
    struct fixture *f = *state;
    struct kf_device_info info;
    kf_buf pkg, again, plain;
    assert_int_equal(kf_kms_device_register(f->kms, "test", "meter-1", "VENDOR", NULL), KF_OK);
    /* The package must go to secure memory. */
    assert_int_equal(kf_buf_alloc(&plain, 0, 4096, 0), KF_OK);
    assert_int_equal(kf_kms_device_export(f->kms, "test", "meter-1", &plain), KF_ERR_ARG);
    kf_buf_free(&plain);
    assert_int_equal(kf_kms_device_get(f->kms, "test", "meter-1", &info), KF_OK);
    assert_false(info.exported);
    export_package(f->kms, "meter-1", &pkg);
    /* Decoded by the device library: ID, domain, a 32-byte key. */
    struct tdev t;
    tdev_init(&t);
    assert_int_equal(kfd_install(&t.d, &t.env, pkg.data, pkg.len), KF_OK);
    assert_string_equal(t.d.st.id, "meter-1");
    assert_string_equal(t.d.st.domain, "VENDOR");
    assert_false(kf_ct_is_zero(t.d.st.mkek, KFD_KEY_LEN));
    /* Second export: refused, nothing written, refusal audited. */
    assert_int_equal(kf_buf_alloc(&again, 0, 4096, KF_BUF_SECRET), KF_OK);
    assert_int_equal(kf_kms_device_export(f->kms, "test", "meter-1", &again),
                     KF_ERR_DEVICE_EXPORTED);
    assert_int_equal(again.len, 0);
    assert_int_equal(count_audit(f->kms, "DeviceExport", "KF_ERR_DEVICE_EXPORTED", NULL, 0), 1);
    assert_int_equal(count_audit(f->kms, "DeviceExport", "ok", NULL, 0), 1);
    /* Also after a restart: the mark is durable. */
    reopen(f);
    assert_int_equal(kf_kms_device_export(f->kms, "test", "meter-1", &again),
                     KF_ERR_DEVICE_EXPORTED);
    assert_int_equal(kf_kms_device_get(f->kms, "test", "meter-1", &info), KF_OK);
    assert_true(info.exported);
    assert_true(info.exported_at > 0);
    assert_int_equal(kf_kms_device_export(f->kms, "test", "ghost", &again), KF_ERR_DEVICE_UNKNOWN);
    /* The database refuses taking the mark back. */
    sqlite3 *db = kms_db_open(f->dir);
    assert_int_not_equal(sqlite3_exec(db, "UPDATE device SET exported_at = 0", NULL, NULL, NULL),
                         SQLITE_OK);
    sqlite3_close(db);
    kf_buf_free(&pkg);
    kf_buf_free(&again);
    kfd_close(&t.d);
}

/* ---- The MKEK is never served or used through KMIP ---- */

static int use_fn(void *ctx, const struct kf_object *obj, const uint8_t *m, size_t n)
{
    (void)ctx, (void)obj, (void)m, (void)n;
    return KF_OK;
}

/* Run msg as who; returns the batch item of the answer (in a). */
static const kf_ttlv *run_kmip(kf_kms *kms, const struct kf_principal *who, kf_arena *a,
                               const kf_ttlv *msg, uint32_t *status, uint32_t *reason)
{
    const kf_ttlv *r = kms_kmip_exchange(kms, who, a, msg);
    const kf_ttlv *item = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
    *status = 99;
    *reason = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_STATUS), status), KF_OK);
    if (*status != KMIP_RESULT_STATUS_SUCCESS)
        assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_REASON), reason),
                         KF_OK);
    return item;
}

static void mkek_never_served_nor_used(void **state)
{
    struct fixture *f = *state;
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_register(f->kms, "test", "meter-1", "VENDOR", &info), KF_OK);
    struct kf_object obj = {0};
    kf_buf m;
    assert_int_equal(kf_buf_alloc(&m, 64, 4096, KF_BUF_SECRET), KF_OK);
    assert_int_equal(kf_kms_get(f->kms, "test", info.mkek_uid, &obj, &m), KF_ERR_EXPORT);
    assert_int_equal(m.len, 0);
    assert_int_equal(count_audit(f->kms, "Get (export)", "KF_ERR_EXPORT", NULL, 0), 1);
    assert_int_equal(kf_kms_use_key(f->kms, "test", "Encrypt", info.mkek_uid, KF_USE_DERIVE,
                                    KMIP_USAGE_DERIVE_KEY, use_fn, NULL),
                     KF_ERR_PERM);
    uint8_t fake[32] = {1};
    struct kf_register_spec spec = {.object_type = KF_OBJ_SYMMETRIC_KEY,
                                    .crypto_alg = KMIP_ALG_AES,
                                    .crypto_length = 256,
                                    .key_format = KMIP_KEYFMT_RAW};
    assert_int_equal(
        kf_kms_replace_material(f->kms, "test", "Import", info.mkek_uid, &spec, fake, sizeof(fake)),
        KF_ERR_PERM);
    /* An ordinary key of the same domain still exports (the refusal is the mark's). */
    struct kf_key_spec aes = {.domain = "VENDOR",
                              .object_type = KF_OBJ_SYMMETRIC_KEY,
                              .crypto_alg = KMIP_ALG_AES,
                              .crypto_length = 256};
    char uid[KF_UID_MAX];
    assert_int_equal(kf_kms_create(f->kms, "test", &aes, uid), KF_OK);
    assert_int_equal(kf_kms_activate(f->kms, "test", uid), KF_OK);
    assert_int_equal(kf_kms_get(f->kms, "test", uid, &obj, &m), KF_OK);
    assert_int_equal(m.len, 32);
    kf_object_clear(&obj);
    kf_buf_free(&m);

    /* Over KMIP: Get answers Not Extractable (2.x); the mark cannot be deleted. */
    struct kf_principal admin;
    kf_principal_local_admin(&admin, "test-admin");
    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    kf_ttlv *p, *msg = kf_ttlv_request(a, 2, 1, KMIP_OP_GET, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, info.mkek_uid);
    uint32_t st, reason;
    run_kmip(f->kms, &admin, a, msg, &st, &reason);
    assert_int_equal(st, KMIP_RESULT_STATUS_OPERATION_FAILED);
    assert_int_equal(reason, KMIP_REASON_NOT_EXTRACTABLE);
    msg = kf_ttlv_request(a, 2, 1, KMIP_OP_DELETE_ATTRIBUTE, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, info.mkek_uid);
    kf_ttlv *ref = kf_ttlv_struct(a, p, KMIP_TAG_ATTRIBUTE_REFERENCE);
    kf_ttlv_add_text(a, ref, KMIP_TAG_VENDOR_IDENTIFICATION, "y");
    kf_ttlv_add_text(a, ref, KMIP_TAG_ATTRIBUTE_NAME, "keyfleet-device");
    run_kmip(f->kms, &admin, a, msg, &st, &reason);
    assert_int_equal(st, KMIP_RESULT_STATUS_OPERATION_FAILED);
    assert_int_equal(reason, KMIP_REASON_READ_ONLY_ATTRIBUTE);
    assert_int_equal(kf_kms_get(f->kms, "test", info.mkek_uid, &obj, NULL), KF_OK);
    kf_object_clear(&obj);
    msg = kf_ttlv_request(a, 2, 1, KMIP_OP_GET, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, info.mkek_uid);
    run_kmip(f->kms, &admin, a, msg, &st, &reason);
    assert_int_equal(reason, KMIP_REASON_NOT_EXTRACTABLE);
    kf_arena_free(a);
}

/* ---- Pair issuance ---- */

static void both_devices_hold_the_same_keks(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b;
    make_device(f->kms, "meter-1", "VENDOR", &a);
    make_device(f->kms, "base-1", "VENDOR", &b);
    kf_buf ack_a, ack_b;
    int va, vb;
    int64_t before = (int64_t)time(NULL);
    assert_int_equal(pair_and_accept(f->kms, &a, &b, 3, 3600, 77, &ack_a, &ack_b, &va, &vb), KF_OK);
    assert_int_equal(va, KF_OK);
    assert_int_equal(vb, KF_OK);
    assert_int_equal(a.d.st.last_counter, 1);
    assert_int_equal(b.d.st.last_counter, 1);
    for (uint64_t id = 1; id <= 3; id++) {
        int sa = find_slot(&a.d, id), sb = find_slot(&b.d, id);
        assert_true(sa >= 0 && sb >= 0);
        const struct kfd_kek *ka = &a.d.st.keks[sa], *kb = &b.d.st.keks[sb];
        assert_memory_equal(ka->key, kb->key, KFD_KEY_LEN);
        assert_false(kf_ct_is_zero(ka->key, KFD_KEY_LEN));
        assert_string_equal(ka->partner, "base-1");
        assert_string_equal(kb->partner, "meter-1");
        assert_int_equal(ka->role, KFD_ROLE_A);
        assert_int_equal(kb->role, KFD_ROLE_B);
        assert_int_equal(ka->max_uses, 77);
        /* Consecutive windows from the issue time, seed [0049]-[0051]. */
        assert_int_equal(ka->not_after - ka->not_before, 3600);
        assert_int_equal(ka->not_before, kb->not_before);
        assert_true(ka->not_before >= before + (int64_t)(id - 1) * 3600 &&
                    ka->not_before <= (int64_t)time(NULL) + (int64_t)(id - 1) * 3600);
        if (id > 1) {
            int prev = find_slot(&a.d, id - 1);
            assert_int_equal(a.d.st.keks[prev].not_after, ka->not_before);
            assert_memory_not_equal(a.d.st.keks[prev].key, ka->key, KFD_KEY_LEN);
        }
    }
    /* Both acks recorded; the server's view follows. */
    struct kf_pair_ack_result res;
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", ack_a.data, ack_a.len, &res), KF_OK);
    assert_string_equal(res.device, "meter-1");
    assert_int_equal(res.kek_id, 1);
    assert_int_equal(res.status, KFD_ACK_ACCEPTED);
    assert_int_equal(res.counter, 1);
    assert_false(res.resynced);
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_get(f->kms, "test", "base-1", &info), KF_OK);
    assert_int_equal(info.acks_pending, 1);
    assert_int_equal(info.last_kek_id, 3);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", ack_b.data, ack_b.len, &res), KF_OK);
    assert_int_equal(kf_kms_device_get(f->kms, "test", "base-1", &info), KF_OK);
    assert_int_equal(info.acks_pending, 0);
    assert_int_equal(info.counter, 1);
    char detail[512];
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "ok", detail, sizeof(detail)), 1);
    assert_non_null(strstr(detail, "kek 1..3"));
    assert_non_null(strstr(detail, "counter A 1 B 1"));
    assert_int_equal(count_audit(f->kms, "PairAck", "ok", NULL, 0), 2);
    kf_buf_free(&ack_a);
    kf_buf_free(&ack_b);
}

static void counters_increase_across_requests_and_restarts(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b, c;
    make_device(f->kms, "meter-1", "VENDOR", &a);
    make_device(f->kms, "base-1", "VENDOR", &b);
    make_device(f->kms, "base-2", "VENDOR", &c);
    uint64_t last_kek = 0;
    for (int round = 0; round < 4; round++) {
        if (round == 2)
            reopen(f);
        kf_buf ack_a, ack_b;
        int va, vb;
        struct tdev *partner = round % 2 ? &c : &b;
        assert_int_equal(pair_and_accept(f->kms, &a, partner, 1, 0, 0, &ack_a, &ack_b, &va, &vb),
                         KF_OK);
        assert_int_equal(va, KF_OK); /* the device accepts only a counter above its last */
        assert_int_equal(vb, KF_OK);
        assert_int_equal(a.d.st.last_counter, (uint64_t)round + 1);
        struct kf_pair_ack_result res;
        assert_int_equal(kf_kms_pair_ack(f->kms, "test", ack_a.data, ack_a.len, &res), KF_OK);
        assert_true(res.kek_id > last_kek); /* server-wide, strictly increasing */
        last_kek = res.kek_id;
        kf_buf_free(&ack_a);
        kf_buf_free(&ack_b);
    }
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_get(f->kms, "test", "meter-1", &info), KF_OK);
    assert_int_equal(info.counter, 4);
    assert_int_equal(kf_kms_device_get(f->kms, "test", "base-1", &info), KF_OK);
    assert_int_equal(info.counter, 2);
    /* The database refuses lowering a counter or reusing a KEK ID. */
    sqlite3 *db = kms_db_open(f->dir);
    assert_int_not_equal(
        sqlite3_exec(db, "UPDATE device SET counter = 1 WHERE id = 'meter-1'", NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DELETE FROM pair_kek", NULL, NULL, NULL), SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db,
                                      "INSERT INTO pair_kek(kek_id, domain_id, id_a, id_b,"
                                      " counter_a, counter_b, not_before, not_after, max_uses,"
                                      " kek_index, issued_at) VALUES (1, 1, 'meter-1', 'base-1',"
                                      " 9, 9, 0, 1, 1, 0, 0)",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
    assert_int_not_equal(
        sqlite3_exec(db, "UPDATE kek_id_mark SET last_reserved = 0", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    /* Rows gone, IDs not freed: the next KEK continues above the last. */
    kf_buf ack_a, ack_b;
    int va, vb;
    assert_int_equal(pair_and_accept(f->kms, &a, &b, 1, 0, 0, &ack_a, &ack_b, &va, &vb), KF_OK);
    assert_int_equal(va, KF_OK);
    struct kf_pair_ack_result res;
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", ack_a.data, ack_a.len, &res), KF_OK);
    assert_int_equal(res.kek_id, last_kek + 1);
    kf_buf_free(&ack_a);
    kf_buf_free(&ack_b);
}

static void pair_request_refusals(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b, u;
    make_device(f->kms, "meter-1", "VENDOR", &a);
    make_device(f->kms, "base-1", "VENDOR", &b);
    make_device(f->kms, "usps-1", "USPS", &u);
    kf_buf m;
    assert_int_equal(kf_buf_alloc(&m, 0, 8192, 0), KF_OK);
    struct {
        const char *a, *b;
        uint32_t count, lifetime, max_uses;
        int want;
    } cases[] = {
        {"meter-1", "usps-1", 1, 0, 0, KF_ERR_DOMAIN_CROSS},
        {"usps-1", "meter-1", 1, 0, 0, KF_ERR_DOMAIN_CROSS},
        {"meter-1", "meter-1", 1, 0, 0, KF_ERR_PAIR_SAME},
        {"meter-1", "ghost", 1, 0, 0, KF_ERR_DEVICE_UNKNOWN},
        {"ghost", "meter-1", 1, 0, 0, KF_ERR_DEVICE_UNKNOWN},
        {"meter-1", "bad id", 1, 0, 0, KF_ERR_DEVICE_ID},
        {"meter-1", "base-1", 0, 0, 0, KF_ERR_PAIR_POLICY},
        {"meter-1", "base-1", 9, 0, 0, KF_ERR_PAIR_POLICY},
        {"meter-1", "base-1", 1, KF_PAIR_MAX_LIFETIME + 1, 0, KF_ERR_PAIR_POLICY},
        {"meter-1", "base-1", 1, 0, KF_PAIR_MAX_MAX_USES + 1, KF_ERR_PAIR_POLICY},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kf_buf_reset(&m);
        assert_int_equal(kf_kms_pair_issue(f->kms, "test", cases[i].a, cases[i].b, cases[i].count,
                                           cases[i].lifetime, cases[i].max_uses, &m),
                         cases[i].want);
        assert_int_equal(m.len, 0);
    }
    /* Nothing moved: no counter, no KEK ID. */
    const char *ids[] = {"meter-1", "base-1", "usps-1"};
    for (int i = 0; i < 3; i++) {
        struct kf_device_info info;
        assert_int_equal(kf_kms_device_get(f->kms, "test", ids[i], &info), KF_OK);
        assert_int_equal(info.counter, 0);
        assert_int_equal(info.last_kek_id, 0);
    }
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "KF_ERR_DOMAIN_CROSS", NULL, 0), 2);
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "KF_ERR_PAIR_SAME", NULL, 0), 1);
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "KF_ERR_DEVICE_UNKNOWN", NULL, 0), 2);
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "KF_ERR_PAIR_POLICY", NULL, 0), 4);
    /* The limits themselves are accepted. */
    kf_buf_reset(&m);
    assert_int_equal(kf_kms_pair_issue(f->kms, "test", "meter-1", "base-1", 8, KF_PAIR_MAX_LIFETIME,
                                       KF_PAIR_MAX_MAX_USES, &m),
                     KF_OK);
    /* A revoked MKEK pairs no more. */
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_get(f->kms, "test", "base-1", &info), KF_OK);
    assert_int_equal(
        kf_kms_revoke(f->kms, "test", info.mkek_uid, KMIP_REVOKE_CESSATION_OF_OPERATION, 0, NULL),
        KF_OK);
    kf_buf_reset(&m);
    assert_int_equal(kf_kms_pair_issue(f->kms, "test", "meter-1", "base-1", 1, 0, 0, &m),
                     KF_ERR_STATE);
    /* Sealed: refused. */
    assert_int_equal(kf_kms_seal(f->kms, "test"), KF_OK);
    assert_int_equal(kf_kms_pair_issue(f->kms, "test", "meter-1", "usps-1", 1, 0, 0, &m),
                     KF_ERR_SEALED);
    assert_int_equal(kf_kms_device_register(f->kms, "test", "new-1", "VENDOR", NULL),
                     KF_ERR_SEALED);
    kf_buf pkg;
    assert_int_equal(kf_buf_alloc(&pkg, 0, 4096, KF_BUF_SECRET), KF_OK);
    assert_int_equal(kf_kms_device_export(f->kms, "test", "meter-1", &pkg), KF_ERR_SEALED);
    kf_buf_free(&pkg);
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "KF_ERR_SEALED", NULL, 0), 1);
    kf_buf_free(&m);
}

/* The transaction commits before the message is built: a failure while
 * building (here the RNG's health test) leaves the counters advanced. */
static int stuck_source(void *ctx, uint8_t *out, size_t len)
{
    (void)ctx;
    memset(out, 0x37, len);
    return KF_OK;
}

static void committed_before_the_message_is_built(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b;
    make_device(f->kms, "meter-1", "VENDOR", &a);
    make_device(f->kms, "base-1", "VENDOR", &b);
    kf_buf m;
    assert_int_equal(kf_buf_alloc(&m, 0, 8192, 0), KF_OK);
    kf_rng_set_source(stuck_source, NULL);
    assert_int_equal(kf_kms_pair_issue(f->kms, "test", "meter-1", "base-1", 2, 0, 0, &m),
                     KF_ERR_RNG_HEALTH);
    kf_rng_set_source(NULL, NULL);
    assert_int_equal(m.len, 0);
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_get(f->kms, "test", "meter-1", &info), KF_OK);
    assert_int_equal(info.counter, 1);
    assert_int_equal(info.last_kek_id, 2);
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "ok", NULL, 0), 1);
    char detail[512];
    assert_int_equal(
        count_audit(f->kms, "PairKeyRequest", "KF_ERR_RNG_HEALTH", detail, sizeof(detail)), 1);
    assert_non_null(strstr(detail, "could not be built"));
    /* Latched: refused before anything moves now. */
    assert_int_equal(kf_kms_pair_issue(f->kms, "test", "meter-1", "base-1", 1, 0, 0, &m),
                     KF_ERR_RNG_HEALTH);
    assert_int_equal(kf_kms_device_get(f->kms, "test", "meter-1", &info), KF_OK);
    assert_int_equal(info.counter, 1);
    kf_rng_reset_health();
    /* The next message carries the next counter and IDs. */
    kf_buf ack_a, ack_b;
    int va, vb;
    assert_int_equal(pair_and_accept(f->kms, &a, &b, 1, 0, 0, &ack_a, &ack_b, &va, &vb), KF_OK);
    assert_int_equal(va, KF_OK);
    assert_int_equal(a.d.st.last_counter, 2);
    assert_true(find_slot(&a.d, 3) >= 0);
    kf_buf_free(&ack_a);
    kf_buf_free(&ack_b);
    kf_buf_free(&m);
}

/* ---- Acknowledgements ---- */

static void ack_refusals(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b, c;
    make_device(f->kms, "meter-1", "VENDOR", &a);
    make_device(f->kms, "base-1", "VENDOR", &b);
    make_device(f->kms, "base-2", "VENDOR", &c);
    kf_buf ack_a, ack_b, x;
    int va, vb;
    struct kf_pair_ack_result res;
    assert_int_equal(pair_and_accept(f->kms, &a, &b, 2, 0, 0, &ack_a, &ack_b, &va, &vb), KF_OK);
    /* Good, then replayed. */
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", ack_a.data, ack_a.len, &res), KF_OK);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", ack_a.data, ack_a.len, &res),
                     KF_ERR_ACK_REPLAY);
    /* A flipped bit anywhere in the body or the MAC. */
    for (size_t at = 8; at < ack_b.len; at += 7) {
        ack_b.data[at] ^= 0x01;
        int rc = kf_kms_pair_ack(f->kms, "test", ack_b.data, ack_b.len, &res);
        assert_true(rc == KF_ERR_ACK_MAC || rc == KF_ERR_PAIR_MALFORMED ||
                    rc == KF_ERR_DEVICE_UNKNOWN || rc == KF_ERR_DEVICE_ID);
        ack_b.data[at] ^= 0x01;
    }
    /* A's ack presented as if from B: the MAC is under the wrong key. */
    craft_ack("base-1", a.d.st.mkek, 1, 1, 1, KFD_ACK_ACCEPTED, &x);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", x.data, x.len, &res), KF_ERR_ACK_MAC);
    kf_buf_free(&x);
    /* B's untouched ack still counts once. */
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", ack_b.data, ack_b.len, &res), KF_OK);
    /* A KEK that does not exist; one issued to others; not the first of its part;
     * "accepted" with a counter we never sent. */
    craft_ack("meter-1", a.d.st.mkek, 999, 1, 1, KFD_ACK_ACCEPTED, &x);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", x.data, x.len, &res), KF_ERR_ACK_UNKNOWN);
    kf_buf_free(&x);
    craft_ack("base-2", c.d.st.mkek, 1, 1, 0, KFD_ACK_ACCEPTED, &x);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", x.data, x.len, &res), KF_ERR_ACK_UNKNOWN);
    kf_buf_free(&x);
    craft_ack("meter-1", a.d.st.mkek, 2, 1, 1, KFD_ACK_ACCEPTED, &x);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", x.data, x.len, &res), KF_ERR_ACK_UNKNOWN);
    kf_buf_free(&x);
    kf_buf pa2, pb2;
    assert_int_equal(pair_and_accept(f->kms, &a, &b, 1, 0, 0, &pa2, &pb2, &va, &vb), KF_OK);
    craft_ack("meter-1", a.d.st.mkek, 3, 1, 2, KFD_ACK_ACCEPTED, &x);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", x.data, x.len, &res), KF_ERR_ACK_UNKNOWN);
    kf_buf_free(&x);
    /* Garbage and an unknown device. */
    uint8_t junk[16] = {0x54, 0x01, 0x13, 0x01, 0, 0, 0, 8};
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", junk, sizeof(junk), &res),
                     KF_ERR_PAIR_MALFORMED);
    craft_ack("ghost", a.d.st.mkek, 3, 2, 2, KFD_ACK_ACCEPTED, &x);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", x.data, x.len, &res), KF_ERR_DEVICE_UNKNOWN);
    kf_buf_free(&x);
    /* Every refusal is in the audit trail. */
    assert_int_equal(count_audit(f->kms, "PairAck", "KF_ERR_ACK_REPLAY", NULL, 0), 1);
    assert_true(count_audit(f->kms, "PairAck", "KF_ERR_ACK_MAC", NULL, 0) >= 2);
    assert_int_equal(count_audit(f->kms, "PairAck", "KF_ERR_ACK_UNKNOWN", NULL, 0), 4);
    assert_int_equal(count_audit(f->kms, "PairAck", "KF_ERR_PAIR_MALFORMED", NULL, 0) >= 1, 1);
    assert_int_equal(count_audit(f->kms, "PairAck", "KF_ERR_DEVICE_UNKNOWN", NULL, 0) >= 1, 1);
    /* The real ack of the second message is still good. */
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", pa2.data, pa2.len, &res), KF_OK);
    assert_int_equal(res.kek_id, 3);
    /* Sealed: refused. */
    assert_int_equal(kf_kms_seal(f->kms, "test"), KF_OK);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", pb2.data, pb2.len, &res), KF_ERR_SEALED);
    kf_buf_free(&ack_a);
    kf_buf_free(&ack_b);
    kf_buf_free(&pa2);
    kf_buf_free(&pb2);
}

static void resync_only_moves_forward(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b;
    make_device(f->kms, "meter-1", "VENDOR", &a);
    make_device(f->kms, "base-1", "VENDOR", &b);
    kf_buf ack_a, ack_b, x;
    int va, vb;
    struct kf_pair_ack_result res;
    assert_int_equal(pair_and_accept(f->kms, &a, &b, 1, 0, 0, &ack_a, &ack_b, &va, &vb), KF_OK);
    kf_buf_free(&ack_a);
    kf_buf_free(&ack_b);
    /* A server restored from a backup: the device is ahead (counter 7). */
    a.d.st.last_counter = 7;
    assert_int_equal(pair_and_accept(f->kms, &a, &b, 1, 0, 0, &ack_a, &ack_b, &va, &vb), KF_OK);
    assert_int_equal(va, KF_ERR_PAIR_STALE); /* C_A = 2 is not above 7 */
    assert_int_equal(vb, KF_OK);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", ack_a.data, ack_a.len, &res), KF_OK);
    assert_int_equal(res.status, KFD_ACK_STALE);
    assert_true(res.resynced);
    assert_int_equal(res.counter, 7);
    char detail[512];
    assert_int_equal(count_audit(f->kms, "PairResync", "ok", detail, sizeof(detail)), 1);
    assert_non_null(strstr(detail, "counter 2 -> 7"));
    kf_buf_free(&ack_a);
    kf_buf_free(&ack_b);
    /* The retry now carries a counter the device accepts. */
    assert_int_equal(pair_and_accept(f->kms, &a, &b, 1, 0, 0, &ack_a, &ack_b, &va, &vb), KF_OK);
    assert_int_equal(va, KF_OK);
    assert_int_equal(a.d.st.last_counter, 8);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", ack_a.data, ack_a.len, &res), KF_OK);
    assert_false(res.resynced);
    kf_buf_free(&ack_a);
    kf_buf_free(&ack_b);
    /* An ack with a lower DeviceCounter never lowers C (unattributed part, KEK 0). */
    craft_ack("meter-1", a.d.st.mkek, 0, 0, 3, KFD_ACK_MALFORMED, &x);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", x.data, x.len, &res), KF_OK);
    assert_false(res.resynced);
    assert_int_equal(res.counter, 8);
    kf_buf_free(&x);
    /* A higher one moves it, once; the same ack again moves nothing more. */
    craft_ack("meter-1", a.d.st.mkek, 0, 0, 40, KFD_ACK_MALFORMED, &x);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", x.data, x.len, &res), KF_OK);
    assert_true(res.resynced);
    assert_int_equal(res.counter, 40);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", x.data, x.len, &res), KF_OK);
    assert_false(res.resynced);
    kf_buf_free(&x);
    /* A counter at the top of the range is refused, not wrapped. */
    craft_ack("meter-1", a.d.st.mkek, 0, 0, UINT64_MAX, KFD_ACK_MALFORMED, &x);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", x.data, x.len, &res), KF_ERR_DEVICE_COUNTER);
    kf_buf_free(&x);
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_get(f->kms, "test", "meter-1", &info), KF_OK);
    assert_int_equal(info.counter, 40);
    assert_int_equal(count_audit(f->kms, "PairResync", "ok", NULL, 0), 2);
}

/* ---- No key bytes in the files or the audit trail ---- */

struct needles {
    uint8_t keys[16][KFD_KEY_LEN];
    size_t n;
    int found;
};

static bool contains_key(const uint8_t *hay, size_t len, const struct needles *nd)
{
    for (size_t k = 0; k < nd->n; k++) {
        char hex[2 * KFD_KEY_LEN + 1], HEX[2 * KFD_KEY_LEN + 1];
        for (size_t i = 0; i < KFD_KEY_LEN; i++) {
            snprintf(hex + 2 * i, 3, "%02x", nd->keys[k][i]);
            snprintf(HEX + 2 * i, 3, "%02X", nd->keys[k][i]);
        }
        /* The whole key, any 16-byte window of it, its hex. */
        for (size_t off = 0; off + 16 <= KFD_KEY_LEN; off += 8)
            if (memmem(hay, len, nd->keys[k] + off, 16))
                return true;
        if (memmem(hay, len, hex, 2 * KFD_KEY_LEN) || memmem(hay, len, HEX, 2 * KFD_KEY_LEN))
            return true;
    }
    return false;
}

static size_t scan_dir(const char *dir, const struct needles *nd, int *hits)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t scanned = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *fp = fopen(path, "rb");
        if (!fp)
            continue;
        uint8_t *buf = malloc(1 << 24);
        size_t n = fread(buf, 1, 1 << 24, fp);
        fclose(fp);
        scanned += n;
        if (contains_key(buf, n, nd))
            (*hits)++;
        free(buf);
    }
    closedir(d);
    return scanned;
}

static int audit_scan(void *ctx, const struct kf_audit_record *r)
{
    struct needles *nd = ctx;
    const char *fields[] = {r->actor, r->operation, r->domain, r->object, r->result, r->detail};
    for (size_t i = 0; i < 6; i++)
        if (fields[i] && contains_key((const uint8_t *)fields[i], strlen(fields[i]), nd))
            nd->found++;
    return KF_OK;
}

static void no_key_bytes_in_files_or_audit(void **state)
{
    struct fixture *f = *state;
    struct tdev a, b;
    struct needles nd = {.n = 0};
    make_device(f->kms, "meter-1", "VENDOR", &a);
    make_device(f->kms, "base-1", "VENDOR", &b);
    memcpy(nd.keys[nd.n++], a.d.st.mkek, KFD_KEY_LEN);
    memcpy(nd.keys[nd.n++], b.d.st.mkek, KFD_KEY_LEN);
    for (int round = 0; round < 2; round++) {
        kf_buf ack_a, ack_b;
        int va, vb;
        assert_int_equal(pair_and_accept(f->kms, &a, &b, 4, 0, 0, &ack_a, &ack_b, &va, &vb), KF_OK);
        assert_int_equal(va, KF_OK);
        struct kf_pair_ack_result res;
        assert_int_equal(kf_kms_pair_ack(f->kms, "test", ack_a.data, ack_a.len, &res), KF_OK);
        assert_int_equal(kf_kms_pair_ack(f->kms, "test", ack_b.data, ack_b.len, &res), KF_OK);
        for (uint32_t i = 0; i < 4; i++) {
            int s = find_slot(&a.d, res.kek_id + i);
            assert_true(s >= 0);
            memcpy(nd.keys[nd.n++], a.d.st.keks[s].key, KFD_KEY_LEN);
        }
        kf_buf_free(&ack_a);
        kf_buf_free(&ack_b);
    }
    assert_int_equal(nd.n, 10);
    /* The test can fail: a planted key is found. */
    struct needles planted = nd;
    planted.n = 1;
    uint8_t blob[100] = {0};
    memcpy(blob + 33, nd.keys[5] + 8, 16);
    memcpy(planted.keys[0], nd.keys[5], KFD_KEY_LEN);
    assert_true(contains_key(blob, sizeof(blob), &planted));
    int hits = 0;
    size_t scanned = scan_dir(f->dir, &nd, &hits); /* while open: the WAL holds the news */
    assert_true(scanned > 0);
    assert_int_equal(hits, 0);
    assert_int_equal(kf_kms_audit_list(f->kms, 1, 0, audit_scan, &nd), KF_OK);
    assert_int_equal(nd.found, 0);
    kf_kms_close(f->kms);
    f->kms = NULL;
    hits = 0;
    scan_dir(f->dir, &nd, &hits); /* and after the checkpoint at close */
    assert_int_equal(hits, 0);
    reopen(f);
    struct kf_audit_report r;
    assert_int_equal(kf_kms_audit_verify(f->kms, &r), KF_OK);
}

/* ---- The KMIP layer, driven by the device library's own envelope ---- */

static int kmip_device_call(kf_kms *kms, const struct kf_principal *who, uint32_t op,
                            const uint8_t *payload, size_t len, kf_buf *resp,
                            struct kfd_span *answer, uint32_t *reason)
{
    kf_buf req;
    char msg[256];
    assert_int_equal(kf_buf_alloc(&req, 0, 8192, 0), KF_OK);
    assert_int_equal(kfd_kmip_wrap(op, payload, len, &req), KF_OK);
    kf_buf_reset(resp);
    assert_int_equal(kf_kms_handle_kmip(kms, who, req.data, req.len, resp), KF_OK);
    kf_buf_free(&req);
    return kfd_kmip_unwrap(resp->data, resp->len, op, answer, reason, msg, sizeof(msg));
}

static void kmip_operations_with_roles(void **state)
{
    struct fixture *f = *state;
    struct kf_principal admin, device, other, user;
    kf_principal_local_admin(&admin, "test-admin");
    device =
        (struct kf_principal){.name = "cert:CN=meter-1", .roles = KF_ROLE_DEVICE, .ndomains = 1};
    snprintf(device.domains[0], sizeof(device.domains[0]), "VENDOR");
    other = device;
    snprintf(other.name, sizeof(other.name), "cert:CN=usps-gw");
    snprintf(other.domains[0], sizeof(other.domains[0]), "USPS");
    user = device;
    user.roles = KF_ROLE_USE;
    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    uint32_t st, reason;
    /* Register over KMIP (manage), strict order of items. */
    const char *ids[] = {"meter-1", "base-1"};
    for (int i = 0; i < 2; i++) {
        kf_ttlv *p, *msg = kf_ttlv_request(a, 2, 1, KMIP_OP_KEYFLEET_DEVICE_REGISTER, &p);
        kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DEVICE_ID, ids[i]);
        kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VENDOR");
        run_kmip(f->kms, &device, a, msg, &st, &reason); /* device role may not */
        assert_int_equal(reason, KMIP_REASON_PERMISSION_DENIED);
        const kf_ttlv *item = run_kmip(f->kms, &admin, a, msg, &st, &reason);
        assert_int_equal(st, KMIP_RESULT_STATUS_SUCCESS);
        const kf_ttlv *rp = kf_ttlv_find(item, KMIP_TAG_RESPONSE_PAYLOAD);
        assert_true(kf_ttlv_text_equals(kf_ttlv_find(rp, KMIP_TAG_KEYFLEET_DEVICE_ID), ids[i]));
        assert_non_null(kf_ttlv_find(rp, KMIP_TAG_UNIQUE_IDENTIFIER));
    }
    {
        kf_ttlv *p, *msg = kf_ttlv_request(a, 2, 1, KMIP_OP_KEYFLEET_DEVICE_REGISTER, &p);
        kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VENDOR");
        kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DEVICE_ID, "swapped");
        run_kmip(f->kms, &admin, a, msg, &st, &reason);
        assert_int_equal(reason, KMIP_REASON_MISSING_DATA);
        msg = kf_ttlv_request(a, 2, 1, KMIP_OP_KEYFLEET_DEVICE_REGISTER, &p);
        kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DEVICE_ID, "extra");
        kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DOMAIN, "VENDOR");
        kf_ttlv_add_int(a, p, KMIP_TAG_KEYFLEET_LIMIT, 1);
        run_kmip(f->kms, &admin, a, msg, &st, &reason);
        assert_int_equal(st, KMIP_RESULT_STATUS_OPERATION_FAILED);
    }
    /* Export (export role) into devices, via the response payload. */
    struct tdev dev[2];
    kf_buf resp;
    assert_int_equal(kf_buf_alloc(&resp, 0, 1 << 16, KF_BUF_SECRET), KF_OK);
    for (int i = 0; i < 2; i++) {
        kf_buf payload;
        struct kfd_span ans;
        assert_int_equal(kf_buf_alloc(&payload, 0, 512, 0), KF_OK);
        assert_int_equal(kf_buf_put_u24(&payload, KMIP_TAG_KEYFLEET_DEVICE_ID), KF_OK);
        assert_int_equal(kf_buf_put_u8(&payload, KF_TTLV_TEXT), KF_OK);
        size_t n = strlen(ids[i]);
        assert_int_equal(kf_buf_put_u32(&payload, (uint32_t)n), KF_OK);
        assert_int_equal(kf_buf_put_bytes(&payload, ids[i], n), KF_OK);
        assert_int_equal(kf_buf_put_zeros(&payload, (8 - n % 8) % 8), KF_OK);
        assert_int_equal(kmip_device_call(f->kms, &user, KMIP_OP_KEYFLEET_DEVICE_EXPORT,
                                          payload.data, payload.len, &resp, &ans, &reason),
                         KF_ERR_DEVICE_SERVER);
        assert_int_equal(reason, KMIP_REASON_PERMISSION_DENIED);
        assert_int_equal(kmip_device_call(f->kms, &admin, KMIP_OP_KEYFLEET_DEVICE_EXPORT,
                                          payload.data, payload.len, &resp, &ans, &reason),
                         KF_OK);
        tdev_init(&dev[i]);
        assert_int_equal(kfd_install(&dev[i].d, &dev[i].env, ans.p, ans.len), KF_OK);
        assert_int_equal(kmip_device_call(f->kms, &admin, KMIP_OP_KEYFLEET_DEVICE_EXPORT,
                                          payload.data, payload.len, &resp, &ans, &reason),
                         KF_ERR_DEVICE_SERVER);
        assert_int_equal(reason, KMIP_REASON_PERMISSION_DENIED);
        kf_buf_free(&payload);
    }
    /* Pair request with the device role in its domain; refused elsewhere. */
    kf_buf payload;
    struct kfd_span m, pa, pb;
    assert_int_equal(kf_buf_alloc(&payload, 0, 4096, 0), KF_OK);
    assert_int_equal(kfd_pair_request(&dev[0].d, "base-1", 2, 600, 5, &payload), KF_OK);
    assert_int_equal(kmip_device_call(f->kms, &other, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST,
                                      payload.data, payload.len, &resp, &m, &reason),
                     KF_ERR_DEVICE_SERVER);
    assert_int_equal(reason, KMIP_REASON_PERMISSION_DENIED);
    assert_int_equal(kmip_device_call(f->kms, &user, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST,
                                      payload.data, payload.len, &resp, &m, &reason),
                     KF_ERR_DEVICE_SERVER);
    assert_int_equal(kmip_device_call(f->kms, &device, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST,
                                      payload.data, payload.len, &resp, &m, &reason),
                     KF_OK);
    assert_int_equal(kfd_pair_split(m.p, m.len, &pa, &pb), KF_OK);
    kf_buf ack_a, ack_b;
    assert_int_equal(kf_buf_alloc(&ack_a, 0, 4096, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&ack_b, 0, 4096, 0), KF_OK);
    assert_int_equal(kfd_pair_accept(&dev[0].d, KFD_ROLE_A, pa.p, pa.len, &ack_a), KF_OK);
    assert_int_equal(kfd_pair_accept(&dev[1].d, KFD_ROLE_B, pb.p, pb.len, &ack_b), KF_OK);
    assert_memory_equal(dev[0].d.st.keks[find_slot(&dev[0].d, 1)].key,
                        dev[1].d.st.keks[find_slot(&dev[1].d, 1)].key, KFD_KEY_LEN);
    assert_int_equal(dev[0].d.st.keks[find_slot(&dev[0].d, 2)].max_uses, 5);
    /* Ack report (device role): both acks in one request. */
    struct kfd_span acks[2] = {{ack_a.data, ack_a.len}, {ack_b.data, ack_b.len}};
    kf_buf report;
    struct kfd_span ans;
    assert_int_equal(kf_buf_alloc(&report, 0, 4096, 0), KF_OK);
    assert_int_equal(kfd_ack_report(acks, 2, &report), KF_OK);
    assert_int_equal(kmip_device_call(f->kms, &other, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, report.data,
                                      report.len, &resp, &ans, &reason),
                     KF_ERR_DEVICE_SERVER);
    assert_int_equal(reason, KMIP_REASON_PERMISSION_DENIED);
    assert_int_equal(kmip_device_call(f->kms, &device, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT,
                                      report.data, report.len, &resp, &ans, &reason),
                     KF_OK);
    /* Answer: per ack DeviceId, KekId, AckStatus, Counter. */
    kf_ttlv *rt;
    uint8_t wrapped[4096];
    size_t wl = 0;
    /* Wrap the flat answer in a structure to walk it with the codec. */
    memcpy(wrapped, (const uint8_t[]){0x42, 0x00, 0x7C, 0x01}, 4);
    wrapped[4] = (uint8_t)(ans.len >> 24), wrapped[5] = (uint8_t)(ans.len >> 16);
    wrapped[6] = (uint8_t)(ans.len >> 8), wrapped[7] = (uint8_t)ans.len;
    memcpy(wrapped + 8, ans.p, ans.len);
    wl = 8 + ans.len;
    assert_int_equal(kf_ttlv_decode(wrapped, wl, NULL, a, &rt), KF_OK);
    assert_int_equal(kf_ttlv_count(rt, KMIP_TAG_KEYFLEET_DEVICE_ID), 2);
    assert_true(kf_ttlv_text_equals(kf_ttlv_find(rt, KMIP_TAG_KEYFLEET_DEVICE_ID), "meter-1"));
    uint32_t status = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(rt, KMIP_TAG_KEYFLEET_ACK_STATUS), &status),
                     KF_OK);
    assert_int_equal(status, KFD_ACK_ACCEPTED);
    /* Replayed report: refused with a reason. */
    assert_int_equal(kmip_device_call(f->kms, &device, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT,
                                      report.data, report.len, &resp, &ans, &reason),
                     KF_ERR_DEVICE_SERVER);
    assert_int_equal(reason, KMIP_REASON_PERMISSION_DENIED);
    /* Device Get (use role): DeviceInfo as documented. */
    kf_ttlv *p, *msg = kf_ttlv_request(a, 2, 1, KMIP_OP_KEYFLEET_DEVICE_GET, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DEVICE_ID, "base-1");
    const kf_ttlv *item = run_kmip(f->kms, &user, a, msg, &st, &reason);
    assert_int_equal(st, KMIP_RESULT_STATUS_SUCCESS);
    const kf_ttlv *di =
        KF_TTLV_PATH(item, KMIP_TAG_RESPONSE_PAYLOAD, KMIP_TAG_KEYFLEET_DEVICE_INFO);
    int64_t v;
    bool exported;
    int32_t pending;
    assert_int_equal(kf_ttlv_get_long(kf_ttlv_find(di, KMIP_TAG_KEYFLEET_COUNTER), &v), KF_OK);
    assert_int_equal(v, 1);
    assert_int_equal(kf_ttlv_get_long(kf_ttlv_find(di, KMIP_TAG_KEYFLEET_KEK_ID), &v), KF_OK);
    assert_int_equal(v, 2);
    assert_int_equal(kf_ttlv_get_bool(kf_ttlv_find(di, KMIP_TAG_KEYFLEET_EXPORTED), &exported),
                     KF_OK);
    assert_true(exported);
    assert_int_equal(kf_ttlv_get_int(kf_ttlv_find(di, KMIP_TAG_KEYFLEET_ACKS_PENDING), &pending),
                     KF_OK);
    assert_int_equal(pending, 0);
    run_kmip(f->kms, &other, a, msg, &st, &reason);
    assert_int_equal(reason, KMIP_REASON_PERMISSION_DENIED);
    msg = kf_ttlv_request(a, 2, 1, KMIP_OP_KEYFLEET_DEVICE_GET, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DEVICE_ID, "ghost");
    run_kmip(f->kms, &user, a, msg, &st, &reason);
    assert_int_equal(reason, KMIP_REASON_ITEM_NOT_FOUND);
    /* Pair request items out of order are refused. */
    msg = kf_ttlv_request(a, 2, 1, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DEVICE_ID_B, "base-1");
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DEVICE_ID_A, "meter-1");
    run_kmip(f->kms, &device, a, msg, &st, &reason);
    assert_int_equal(reason, KMIP_REASON_MISSING_DATA);
    msg = kf_ttlv_request(a, 2, 1, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DEVICE_ID_A, "meter-1");
    kf_ttlv_add_text(a, p, KMIP_TAG_KEYFLEET_DEVICE_ID_B, "base-1");
    kf_ttlv_add_int(a, p, KMIP_TAG_KEYFLEET_KEK_COUNT, -1);
    run_kmip(f->kms, &device, a, msg, &st, &reason);
    assert_int_equal(reason, KMIP_REASON_INVALID_FIELD);
    /* An ack too long to be one is refused as malformed, and audited. */
    msg = kf_ttlv_request(a, 2, 1, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, &p);
    kf_ttlv *big = kf_ttlv_struct(a, p, KMIP_TAG_KEYFLEET_PAIR_ACK);
    static uint8_t filler[3000];
    kf_ttlv_add_bytes(a, big, KMIP_TAG_KEYFLEET_MAC, filler, sizeof(filler));
    uint64_t malformed_before = count_audit(f->kms, "PairAck", "KF_ERR_PAIR_MALFORMED", NULL, 0);
    run_kmip(f->kms, &device, a, msg, &st, &reason);
    assert_int_equal(reason, KMIP_REASON_INVALID_MESSAGE);
    assert_int_equal(count_audit(f->kms, "PairAck", "KF_ERR_PAIR_MALFORMED", NULL, 0),
                     malformed_before + 1);
    /* Query still lists only standard operations (extensions are not KMIP's). */
    msg = kf_ttlv_request(a, 2, 1, KMIP_OP_QUERY, &p);
    kf_ttlv_add_enum(a, p, KMIP_TAG_QUERY_FUNCTION, KMIP_QUERY_QUERY_OPERATIONS);
    item = run_kmip(f->kms, &admin, a, msg, &st, &reason);
    const kf_ttlv *qp = kf_ttlv_find(item, KMIP_TAG_RESPONSE_PAYLOAD);
    for (const kf_ttlv *o = kf_ttlv_find(qp, KMIP_TAG_OPERATION); o;
         o = kf_ttlv_find_next(o, KMIP_TAG_OPERATION))
        assert_true(o->v.u32 < 0x80000000u);
    kf_buf_free(&payload);
    kf_buf_free(&report);
    kf_buf_free(&ack_a);
    kf_buf_free(&ack_b);
    kf_buf_free(&resp);
    kf_arena_free(a);
}

/* ---- Concurrency: group commit keeps every rule ---- */

struct pair_thread {
    kf_kms *kms;
    struct tdev a, b;
    int n, failures;
    uint64_t kek_ids[64];
    bool unknown; /* ask for a device that does not exist */
};

static void *pair_worker(void *arg)
{
    struct pair_thread *t = arg;
    kf_buf m, ack;
    struct kfd_span pa, pb;
    if (kf_buf_alloc(&m, 0, 8192, 0) < 0 || kf_buf_alloc(&ack, 0, 4096, 0) < 0)
        return NULL;
    for (int i = 0; i < t->n; i++) {
        kf_buf_reset(&m);
        kf_buf_reset(&ack);
        const char *b = t->unknown ? "nobody" : t->b.d.st.id;
        int rc = kf_kms_pair_issue(t->kms, "worker", t->a.d.st.id, b, 1, 0, 0, &m);
        if (t->unknown) {
            t->failures += rc != KF_ERR_DEVICE_UNKNOWN;
            continue;
        }
        struct kf_pair_ack_result res;
        if (rc != KF_OK || kfd_pair_split(m.data, m.len, &pa, &pb) != KF_OK ||
            kfd_pair_accept(&t->a.d, KFD_ROLE_A, pa.p, pa.len, &ack) != KF_OK ||
            kf_kms_pair_ack(t->kms, "worker", ack.data, ack.len, &res) != KF_OK)
            t->failures++;
        else
            t->kek_ids[i] = res.kek_id;
    }
    kf_buf_free(&m);
    kf_buf_free(&ack);
    return NULL;
}

static void concurrent_requests_share_commits(void **state)
{
    struct fixture *f = *state;
    enum { THREADS = 8, N = 25 };
    static struct pair_thread t[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        memset(&t[i], 0, sizeof(t[i]));
        t[i].kms = f->kms;
        t[i].n = N;
        tdev_numbered_pair(f->kms, i, &t[i].a, &t[i].b, make_device);
        t[i].unknown = i == THREADS - 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, pair_worker, &t[i]), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("      %d pair requests + acks from %d threads in %.2f s (%.0f pairings/s)\n",
                  (THREADS - 1) * N, THREADS - 1, secs, (THREADS - 1) * N / secs);
    uint64_t all[THREADS * N];
    size_t n = 0;
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(t[i].failures, 0);
        if (t[i].unknown)
            continue;
        assert_int_equal(t[i].a.d.st.last_counter, N);
        for (int j = 0; j < N; j++)
            all[n++] = t[i].kek_ids[j];
        kfd_close(&t[i].a.d);
        kfd_close(&t[i].b.d);
    }
    qsort(all, n, sizeof(all[0]), cmp_u64);
    for (size_t i = 1; i < n; i++)
        assert_true(all[i] > all[i - 1]);
    assert_int_equal(all[n - 1], (uint64_t)n);
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "ok", NULL, 0), n);
    assert_int_equal(count_audit(f->kms, "PairKeyRequest", "KF_ERR_DEVICE_UNKNOWN", NULL, 0), N);
    struct kf_audit_report r;
    assert_int_equal(kf_kms_audit_verify(f->kms, &r), KF_OK);
}

int main(void)
{
    kf_log_open(NULL, KF_LOG_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(register_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(export_once_then_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(mkek_never_served_nor_used, setup, teardown),
        cmocka_unit_test_setup_teardown(both_devices_hold_the_same_keks, setup, teardown),
        cmocka_unit_test_setup_teardown(counters_increase_across_requests_and_restarts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(pair_request_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(committed_before_the_message_is_built, setup, teardown),
        cmocka_unit_test_setup_teardown(ack_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(resync_only_moves_forward, setup, teardown),
        cmocka_unit_test_setup_teardown(no_key_bytes_in_files_or_audit, setup, teardown),
        cmocka_unit_test_setup_teardown(kmip_operations_with_roles, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_requests_share_commits, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
