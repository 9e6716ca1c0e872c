/*
 * The device half of the pairing tests' fixtures (test_kms_device.c,
 * test_kms_pair_batch.c): devices in memory run by the real device library
 * (libkeyfleet-device) and installed from their exported packages; the
 * audit trail counted by operation and result; acknowledgements made from
 * the spec; the service with the domains VENDOR and USPS, and its database
 * opened beside it; a sort order for KEK IDs. Include after <cmocka.h>; it
 * brings kms_fixture.h.
 */
#ifndef KF_TEST_KMS_DEVICE_FIXTURE_H
#define KF_TEST_KMS_DEVICE_FIXTURE_H

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <nettle/cmac.h>
#include <sqlite3.h>

#include "keyfleet/device.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/rng.h"
#include "keyfleet/ttlv.h"
#include "kms_fixture.h"

#ifndef KF_TEST_UNUSED
#define KF_TEST_UNUSED __attribute__((unused))
#endif

/* ---- A device in memory, made from its exported package ---- */

struct tdev {
    struct kfd_device d;
    struct kfd_env env;
    uint8_t saved[KFD_STATE_MAX];
    size_t saved_len;
};

static KF_TEST_UNUSED int env_save(void *ctx, const uint8_t *st, size_t len)
{
    struct tdev *t = ctx;
    if (len > sizeof(t->saved))
        return -1;
    memcpy(t->saved, st, len);
    t->saved_len = len;
    return 0;
}

static KF_TEST_UNUSED int64_t env_now(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}

static KF_TEST_UNUSED int env_random(void *ctx, uint8_t *out, size_t n)
{
    (void)ctx;
    return kf_rng_bytes(out, n) == KF_OK ? 0 : -1;
}

static KF_TEST_UNUSED void tdev_init(struct tdev *t)
{
    memset(t, 0, sizeof(*t));
    t->env = (struct kfd_env){.ctx = t, .save = env_save, .now = env_now, .random = env_random};
}

/* The device's one-time export, into secure memory. */
static KF_TEST_UNUSED void export_package(kf_kms *kms, const char *id, kf_buf *pkg)
{
    assert_int_equal(kf_buf_alloc(pkg, 256, 4096, KF_BUF_SECRET), KF_OK);
    assert_int_equal(kf_kms_device_export(kms, "test", id, pkg), KF_OK);
}

/* Register id in domain, export it once and install the device from the package. */
static KF_TEST_UNUSED void tdev_install(kf_kms *kms, const char *id, const char *domain,
                                        struct tdev *t)
{
    struct kf_device_info info;
    kf_buf pkg;
    tdev_init(t);
    assert_int_equal(kf_kms_device_register(kms, "test", id, domain, &info), KF_OK);
    export_package(kms, id, &pkg);
    assert_int_equal(kfd_install(&t->d, &t->env, pkg.data, pkg.len), KF_OK);
    kf_buf_free(&pkg);
}

/* Devices m-<i> and b-<i> of VENDOR, made by make (tdev_install, or one that
 * checks more). */
static KF_TEST_UNUSED void tdev_numbered_pair(kf_kms *kms, int i, struct tdev *a, struct tdev *b,
                                              void (*make)(kf_kms *, const char *, const char *,
                                                           struct tdev *))
{
    char ida[16], idb[16];
    snprintf(ida, sizeof(ida), "m-%d", i);
    snprintf(idb, sizeof(idb), "b-%d", i);
    make(kms, ida, "VENDOR", a);
    make(kms, idb, "VENDOR", b);
}

/* ---- The audit trail ---- */

struct audit_find {
    const char *op, *result;
    char detail[512];
    uint64_t matches;
};

static KF_TEST_UNUSED int find_record(void *ctx, const struct kf_audit_record *r)
{
    struct audit_find *q = ctx;
    if (strcmp(r->operation, q->op) == 0 && (!q->result || strcmp(r->result, q->result) == 0)) {
        q->matches++;
        snprintf(q->detail, sizeof(q->detail), "%s", r->detail);
    }
    return KF_OK;
}

/* How many records of operation op with result (any result if NULL); the
 * last one's detail in detail if given. */
static KF_TEST_UNUSED uint64_t count_audit(kf_kms *kms, const char *op, const char *result,
                                           char *detail, size_t detail_len)
{
    struct audit_find q = {.op = op, .result = result};
    assert_int_equal(kf_kms_audit_list(kms, 1, 0, find_record, &q), KF_OK);
    if (detail)
        snprintf(detail, detail_len, "%s", q.detail);
    return q.matches;
}

/* ---- Acknowledgements made from the spec ---- */

/* docs/pairing.md: AK = KDF(MKEK, "keyfleet ack v1", ID), MAC = AES-256-CMAC
 * over the AckBody's bytes. */
static KF_TEST_UNUSED void craft_ack(const char *id, const uint8_t mkek[KFD_KEY_LEN],
                                     uint64_t kek_id, uint64_t part_counter,
                                     uint64_t device_counter, uint32_t status, kf_buf *out)
{
    kf_arena *a;
    kf_buf body;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&body, 0, 4096, 0), KF_OK);
    kf_ttlv *b = kf_ttlv_struct(a, NULL, KMIP_TAG_KEYFLEET_ACK_BODY);
    assert_non_null(kf_ttlv_add_int(a, b, KMIP_TAG_KEYFLEET_PROTO_VERSION, 1));
    assert_non_null(kf_ttlv_add_text(a, b, KMIP_TAG_KEYFLEET_DEVICE_ID, id));
    assert_non_null(kf_ttlv_add_long(a, b, KMIP_TAG_KEYFLEET_KEK_ID, (int64_t)kek_id));
    assert_non_null(kf_ttlv_add_long(a, b, KMIP_TAG_KEYFLEET_COUNTER, (int64_t)part_counter));
    assert_non_null(
        kf_ttlv_add_long(a, b, KMIP_TAG_KEYFLEET_DEVICE_COUNTER, (int64_t)device_counter));
    assert_non_null(kf_ttlv_add_enum(a, b, KMIP_TAG_KEYFLEET_ACK_STATUS, status));
    assert_int_equal(kf_ttlv_encode(b, &body), KF_OK);
    uint8_t ak[KFD_KEY_LEN], mac[KFD_MAC_LEN];
    assert_int_equal(kfd_kdf(mkek, "keyfleet ack v1", (const uint8_t *)id, strlen(id), ak), KF_OK);
    struct cmac_aes256_ctx ctx;
    cmac_aes256_set_key(&ctx, ak);
    cmac_aes256_update(&ctx, body.len, body.data);
    cmac_aes256_digest(&ctx, sizeof(mac), mac);
    kf_ttlv *ack = kf_ttlv_struct(a, NULL, KMIP_TAG_KEYFLEET_PAIR_ACK);
    kf_ttlv *body_node;
    assert_int_equal(kf_ttlv_decode(body.data, body.len, NULL, a, &body_node), KF_OK);
    assert_int_equal(kf_ttlv_append(ack, body_node), KF_OK);
    assert_non_null(kf_ttlv_add_bytes(a, ack, KMIP_TAG_KEYFLEET_MAC, mac, sizeof(mac)));
    assert_int_equal(kf_buf_alloc(out, 0, 4096, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(ack, out), KF_OK);
    kf_buf_free(&body);
    kf_arena_free(a);
}

/* ---- Beside the service ---- */

/* A dev-mode service in /tmp/kf-test-<tag>.XXXXXX (kms_dir_open) with the
 * domains VENDOR and USPS: 0, or -1 for a setup function to return. */
static KF_TEST_UNUSED int kms_pairing_open(char *dir, size_t cap, const char *tag, kf_kms **kms)
{
    if (kms_dir_open(dir, cap, tag, kms) < 0 ||
        kf_kms_domain_create(*kms, "test", "VENDOR", NULL) < 0 ||
        kf_kms_domain_create(*kms, "test", "USPS", NULL) < 0)
        return -1;
    return 0;
}

/* The service's database in dir, opened a second time (close with sqlite3_close). */
static KF_TEST_UNUSED sqlite3 *kms_db_open(const char *dir)
{
    char path[128];
    sqlite3 *db;
    snprintf(path, sizeof(path), "%s/keyfleet.db", dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static KF_TEST_UNUSED int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

#endif
