/*
 * Unit tests for the audit trail: the record hash against a hand-built
 * encoding, MACs with a real HMAC-SHA-256 key (RFC 4231 checked first), and
 * every tampering the verifier must catch, each on a fresh 200-record trail.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyfleet/audit.h"
#include "keyfleet/crypto.h"

static const uint8_t audit_key[32] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};

struct mac_ctx {
    bool sealed;
    bool broken;
};

static int hmac_cb(void *ctx, const uint8_t *data, size_t len, uint8_t out[32])
{
    struct mac_ctx *m = ctx;
    if (m->sealed)
        return KF_ERR_SEALED;
    if (m->broken)
        return KF_ERR_CRYPTO;
    return kf_hmac_sha256(audit_key, sizeof(audit_key), data, len, out);
}

struct clock_ctx {
    const uint64_t *ticks;
    size_t n, i;
    uint64_t fake;
};

static uint64_t test_clock(void *ctx)
{
    struct clock_ctx *c = ctx;
    if (c->ticks)
        return c->ticks[c->i < c->n ? c->i++ : c->n - 1];
    return c->fake += 1000;
}

struct fixture {
    char dir[64];
    char db_path[128];
    sqlite3 *db;
    kf_audit *audit;
    struct mac_ctx mac;
    struct clock_ctx clock;
};

static sqlite3 *open_db(const char *path, int flags)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_busy_timeout(db, 5000);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, NULL);
    return db;
}

static int open_audit(struct fixture *f, uint32_t interval)
{
    struct kf_audit_mac mac = {hmac_cb, &f->mac};
    struct kf_audit_options opt = {interval, test_clock, &f->clock};
    return kf_audit_open(f->db, &mac, &opt, &f->audit);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/kf-audit-test-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->db_path, sizeof(f->db_path), "%s/keyfleet.db", f->dir);
    f->db = open_db(f->db_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    f->clock.fake = 1700000000000000000ull;
    if (!f->db || open_audit(f, 0) != KF_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kf_audit_close(f->audit);
    sqlite3_close(f->db);
    const char *suffix[] = {"", "-wal", "-shm"};
    char p[160];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s%s", f->db_path, suffix[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static void append_n(struct fixture *f, int n)
{
    assert_int_equal(sqlite3_exec(f->db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < n; i++) {
        char detail[32], object[32];
        snprintf(detail, sizeof(detail), "n=%d", i);
        snprintf(object, sizeof(object), "VENDOR/%d", i + 1);
        struct kf_audit_event ev = {"admin", "Create", "VENDOR", object, "ok", detail};
        uint64_t seq;
        assert_int_equal(kf_audit_append(f->audit, &ev, &seq), KF_OK);
        assert_true(seq >= 1);
    }
    assert_int_equal(sqlite3_exec(f->db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
}

static void sql(struct fixture *f, const char *s)
{
    char *msg = NULL;
    int rc = sqlite3_exec(f->db, s, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fprintf(stderr, "sql failed: %s\n", msg ? msg : "?");
    sqlite3_free(msg);
    assert_int_equal(rc, SQLITE_OK);
}

static int64_t sql_int(struct fixture *f, const char *q)
{
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(f->db, q, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* ---- primitives and the encoding ---- */

static void hmac_and_sha256_match_published_vectors(void **state)
{
    (void)state;
    /* FIPS 180-2 Appendix B.1: SHA-256("abc"). */
    static const uint8_t abc[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22,
        0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00,
        0x15, 0xad};
    uint8_t out[32];
    assert_int_equal(kf_sha256((const uint8_t *)"abc", 3, out), KF_OK);
    assert_memory_equal(out, abc, 32);
    /* RFC 4231 test case 2. */
    static const uint8_t tc2[32] = {
        0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75,
        0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec,
        0x38, 0x43};
    const char *msg = "what do ya want for nothing?";
    assert_int_equal(kf_hmac_sha256((const uint8_t *)"Jefe", 4, (const uint8_t *)msg,
                                    strlen(msg), out),
                     KF_OK);
    assert_memory_equal(out, tc2, 32);
}

struct one_record {
    struct kf_audit_record r;
    int seen;
};

static int grab_first(void *ctx, const struct kf_audit_record *r)
{
    struct one_record *o = ctx;
    if (o->seen++ == 0) {
        o->r = *r;
        o->r.actor = o->r.operation = o->r.domain = o->r.object = o->r.result = o->r.detail = NULL;
    }
    return KF_OK;
}

static void record_hash_and_head_mac_follow_the_documented_encoding(void **state)
{
    struct fixture *f = *state;
    static const uint64_t tick[] = {1000};
    f->clock = (struct clock_ctx){.ticks = tick, .n = 1};
    struct kf_audit_event ev = {"a", "Create", "D", "D/1", "ok", NULL};
    assert_int_equal(kf_audit_append(f->audit, &ev, NULL), KF_OK);

    /* The encoding from audit.h, written out by hand. */
    static const uint8_t encoding[] = {
        'k', 'f', '-', 'a', 'u', 'd', 'i', 't', '-', 'r', 'e', 'c', 'o', 'r', 'd', '-', 'v', '1',
        0, 0, 0, 0, 0, 0, 0, 1,          /* seq */
        0, 0, 0, 0, 0, 0, 0x03, 0xe8,    /* time_ns 1000 */
        0, 0, 0, 1, 'a',                 /* actor */
        0, 0, 0, 6, 'C', 'r', 'e', 'a', 't', 'e',
        0, 0, 0, 1, 'D',                 /* domain */
        0, 0, 0, 3, 'D', '/', '1',       /* object */
        0, 0, 0, 2, 'o', 'k',            /* result */
        0, 0, 0, 0,                      /* detail "" */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* prev_hash */
    };
    uint8_t expect[32];
    assert_int_equal(kf_sha256(encoding, sizeof(encoding), expect), KF_OK);
    struct one_record o = {0};
    assert_int_equal(kf_audit_list(f->audit, 1, 0, grab_first, &o), KF_OK);
    assert_int_equal(o.seen, 1);
    assert_int_equal(o.r.seq, 1);
    assert_int_equal(o.r.time_ns, 1000);
    assert_memory_equal(o.r.hash, expect, 32);

    /* head MAC = HMAC(key, "kf-audit-head" || u64 seq || hash) */
    uint8_t mac_input[13 + 8 + 32] = {'k', 'f', '-', 'a', 'u', 'd', 'i', 't', '-', 'h', 'e', 'a',
                                      'd', 0, 0, 0, 0, 0, 0, 0, 1};
    memcpy(mac_input + 21, expect, 32);
    uint8_t mac[32];
    assert_int_equal(kf_hmac_sha256(audit_key, 32, mac_input, sizeof(mac_input), mac), KF_OK);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(f->db, "SELECT mac FROM audit_head", -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_bytes(s, 0), 32);
    assert_memory_equal(sqlite3_column_blob(s, 0), mac, 32);
    sqlite3_finalize(s);
}

/* ---- the whole trail ---- */

static void two_hundred_records_verify(void **state)
{
    struct fixture *f = *state;
    append_n(f, 200);
    struct kf_audit_report r;
    assert_int_equal(kf_audit_verify(f->audit, &r), KF_OK);
    assert_int_equal(r.records, 200);
    assert_int_equal(r.last_seq, 200);
    assert_int_equal(r.checkpoints, 3); /* 64, 128, 192 */
    assert_true(r.macs_checked);
    assert_int_equal(r.unauthenticated_from, 0);
    assert_int_equal(r.first_bad_seq, 0);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM audit_record"), 200);
    uint64_t head;
    uint8_t hash[32];
    assert_int_equal(kf_audit_head(f->audit, &head, hash), KF_OK);
    assert_int_equal(head, 200);
}

static void expect_failure(struct fixture *f, int err, uint64_t seq)
{
    struct kf_audit_report r;
    int got = kf_audit_verify(f->audit, &r);
    if (got != err || r.first_bad_seq != seq)
        fprintf(stderr, "verify: %d at %llu: %s\n", got, (unsigned long long)r.first_bad_seq,
                r.reason);
    assert_int_equal(got, err);
    assert_int_equal(r.first_bad_seq, seq);
    assert_true(strlen(r.reason) > 10);
}

static void modified_record_is_detected(void **state)
{
    struct fixture *f = *state;
    append_n(f, 200);
    sql(f, "UPDATE audit_record SET detail = 'n=all fine' WHERE seq = 57");
    expect_failure(f, KF_ERR_AUDIT_CHAIN, 57);
}

static void rehashed_record_is_detected(void **state)
{
    struct fixture *f = *state;
    append_n(f, 200);
    /* Rewriting the stored hash too breaks the link from record 58. */
    sql(f, "UPDATE audit_record SET hash = zeroblob(32) WHERE seq = 57");
    expect_failure(f, KF_ERR_AUDIT_CHAIN, 57);
}

static void deleted_record_is_detected(void **state)
{
    struct fixture *f = *state;
    append_n(f, 200);
    sql(f, "DELETE FROM audit_record WHERE seq = 100");
    expect_failure(f, KF_ERR_AUDIT_CHAIN, 100);
}

static void swapped_records_are_detected(void **state)
{
    struct fixture *f = *state;
    append_n(f, 200);
    sql(f, "CREATE TEMP TABLE r AS SELECT * FROM audit_record WHERE seq IN (30, 31);"
           "UPDATE audit_record SET (time_ns, actor, operation, domain, object, result, detail,"
           " prev_hash, hash) = (SELECT time_ns, actor, operation, domain, object, result, detail,"
           " prev_hash, hash FROM r WHERE r.seq = 61 - audit_record.seq) WHERE seq IN (30, 31);");
    expect_failure(f, KF_ERR_AUDIT_CHAIN, 30);
}

static void truncated_tail_is_detected(void **state)
{
    struct fixture *f = *state;
    append_n(f, 200);
    sql(f, "DELETE FROM audit_record WHERE seq > 190");
    expect_failure(f, KF_ERR_AUDIT_CHAIN, 191);
}

static void truncation_with_forged_head_fails_the_mac(void **state)
{
    struct fixture *f = *state;
    append_n(f, 200);
    sql(f, "DELETE FROM audit_record WHERE seq > 190;"
           "UPDATE audit_head SET (seq, time_ns, hash) ="
           " (SELECT seq, time_ns, hash FROM audit_record WHERE seq = 190);");
    expect_failure(f, KF_ERR_AUDIT_MAC, 190);
}

static void truncation_hidden_by_dropping_the_head_mac_is_still_caught(void **state)
{
    struct fixture *f = *state;
    append_n(f, 200);
    /* Pretend the module was sealed: head MAC NULL. Checkpoint 192 remains. */
    sql(f, "DELETE FROM audit_record WHERE seq > 190;"
           "UPDATE audit_head SET (seq, time_ns, hash, mac) ="
           " (SELECT seq, time_ns, hash, NULL FROM audit_record WHERE seq = 190);");
    expect_failure(f, KF_ERR_AUDIT_CHAIN, 191);
}

static void changed_checkpoint_mac_is_detected(void **state)
{
    struct fixture *f = *state;
    append_n(f, 200);
    sql(f, "UPDATE audit_checkpoint SET mac = zeroblob(32) WHERE seq = 128");
    expect_failure(f, KF_ERR_AUDIT_MAC, 128);
}

static void time_going_back_is_detected(void **state)
{
    struct fixture *f = *state;
    append_n(f, 200);
    sql(f, "UPDATE audit_record SET time_ns ="
           " (SELECT time_ns - 1 FROM audit_record WHERE seq = 79) WHERE seq = 80");
    expect_failure(f, KF_ERR_AUDIT_TIME, 80);
}

/* ---- failure to write ---- */

static void append_fails_cleanly_when_the_record_cannot_be_written(void **state)
{
    struct fixture *f = *state;
    append_n(f, 3);
    sql(f, "CREATE TRIGGER no_audit BEFORE INSERT ON audit_record"
           " BEGIN SELECT RAISE(ABORT, 'audit disk full'); END;");
    struct kf_audit_event ev = {"admin", "Destroy", "VENDOR", "VENDOR/1", "ok", ""};
    uint64_t seq = 77;
    assert_int_equal(kf_audit_append(f->audit, &ev, &seq), KF_ERR_AUDIT_WRITE);
    assert_int_equal(seq, 77);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM audit_record"), 3);
    assert_int_equal(sql_int(f, "SELECT seq FROM audit_head"), 3);
    sql(f, "DROP TRIGGER no_audit");

    /* The head update fails after the record went in: no partial record. */
    sql(f, "CREATE TRIGGER no_head BEFORE UPDATE ON audit_head"
           " BEGIN SELECT RAISE(ABORT, 'nope'); END;");
    /* Inside the caller's transaction, with the caller's own change. */
    sql(f, "CREATE TABLE action(x)");
    sql(f, "BEGIN IMMEDIATE; INSERT INTO action VALUES (1);");
    assert_int_equal(kf_audit_append(f->audit, &ev, NULL), KF_ERR_AUDIT_WRITE);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM audit_record"), 3);
    assert_int_equal(sqlite3_get_autocommit(f->db), 0); /* caller still decides */
    sql(f, "ROLLBACK");
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM action"), 0);
    sql(f, "DROP TRIGGER no_head");

    struct kf_audit_report r;
    assert_int_equal(kf_audit_verify(f->audit, &r), KF_OK);
    assert_int_equal(kf_audit_append(f->audit, &ev, &seq), KF_OK);
    assert_int_equal(seq, 4);
}

static void append_fails_on_a_read_only_connection(void **state)
{
    struct fixture *f = *state;
    append_n(f, 2);
    sqlite3 *ro = open_db(f->db_path, SQLITE_OPEN_READONLY);
    assert_non_null(ro);
    kf_audit *a;
    struct kf_audit_mac mac = {hmac_cb, &f->mac};
    assert_int_equal(kf_audit_open(ro, &mac, NULL, &a), KF_OK);
    struct kf_audit_event ev = {"admin", "Get", "VENDOR", "VENDOR/1", "ok", ""};
    assert_int_equal(kf_audit_append(a, &ev, NULL), KF_ERR_AUDIT_WRITE);
    struct kf_audit_report r;
    assert_int_equal(kf_audit_verify(a, &r), KF_OK); /* reading still works */
    assert_int_equal(r.records, 2);
    kf_audit_close(a);
    sqlite3_close(ro);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM audit_record"), 2);
}

static void broken_mac_fails_the_append(void **state)
{
    struct fixture *f = *state;
    f->mac.broken = true;
    struct kf_audit_event ev = {"admin", "Get", "VENDOR", "VENDOR/1", "ok", ""};
    assert_int_equal(kf_audit_append(f->audit, &ev, NULL), KF_ERR_AUDIT_WRITE);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM audit_record"), 0);
}

static void over_long_fields_are_refused(void **state)
{
    struct fixture *f = *state;
    char detail[KF_AUDIT_DETAIL_MAX + 2];
    memset(detail, 'x', sizeof(detail) - 1);
    detail[sizeof(detail) - 1] = '\0';
    struct kf_audit_event ev = {"admin", "Get", "VENDOR", "VENDOR/1", "ok", detail};
    assert_int_equal(kf_audit_append(f->audit, &ev, NULL), KF_ERR_LIMIT);
    detail[KF_AUDIT_DETAIL_MAX] = '\0';
    assert_int_equal(kf_audit_append(f->audit, &ev, NULL), KF_OK);
    struct kf_audit_report r;
    assert_int_equal(kf_audit_verify(f->audit, &r), KF_OK);
    assert_int_equal(r.records, 1);
}

/* ---- time ---- */

static void time_strictly_increases_when_the_clock_goes_back(void **state)
{
    struct fixture *f = *state;
    static const uint64_t ticks[] = {1000, 2000, 1500, 1500, 5, 3000};
    f->clock = (struct clock_ctx){.ticks = ticks, .n = 6};
    append_n(f, 6);
    static const uint64_t expect[] = {1000, 2000, 2001, 2002, 2003, 3000};
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(f->db, "SELECT time_ns FROM audit_record ORDER BY seq",
                                        -1, &s, NULL),
                     SQLITE_OK);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int64(s, 0), expect[i]);
    }
    sqlite3_finalize(s);
    struct kf_audit_report r;
    assert_int_equal(kf_audit_verify(f->audit, &r), KF_OK);
}

/* ---- sealed module ---- */

static void sealed_module_defers_macs_until_the_next_append(void **state)
{
    struct fixture *f = *state;
    kf_audit_close(f->audit);
    assert_int_equal(open_audit(f, 10), KF_OK);
    append_n(f, 5);
    f->mac.sealed = true;
    append_n(f, 20); /* checkpoints 10 and 20 without MAC, head without MAC */
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM audit_checkpoint WHERE mac IS NULL"), 2);
    assert_int_equal(sql_int(f, "SELECT mac IS NULL FROM audit_head"), 1);
    struct kf_audit_report r;
    assert_int_equal(kf_audit_verify(f->audit, &r), KF_OK);
    assert_false(r.macs_checked);
    assert_int_equal(r.unauthenticated_from, 1);
    assert_int_equal(kf_audit_checkpoint(f->audit), KF_ERR_SEALED);

    f->mac.sealed = false;
    assert_int_equal(kf_audit_verify(f->audit, &r), KF_OK);
    assert_true(r.macs_checked);
    assert_int_equal(r.unauthenticated_from, 1); /* nothing MAC'd since record 5's head */
    append_n(f, 1);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM audit_checkpoint WHERE mac IS NULL"), 0);
    assert_int_equal(kf_audit_verify(f->audit, &r), KF_OK);
    assert_int_equal(r.unauthenticated_from, 0);
    assert_int_equal(r.checkpoints, 2);
    assert_int_equal(r.records, 26);
}

static void on_demand_checkpoint(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(kf_audit_checkpoint(f->audit), KF_OK); /* empty trail: nothing to do */
    append_n(f, 7);
    assert_int_equal(kf_audit_checkpoint(f->audit), KF_OK);
    assert_int_equal(kf_audit_checkpoint(f->audit), KF_OK); /* idempotent */
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM audit_checkpoint"), 1);
    struct kf_audit_report r;
    assert_int_equal(kf_audit_verify(f->audit, &r), KF_OK);
    assert_int_equal(r.checkpoints, 1);
}

/* ---- list and schema ---- */

struct counter {
    uint64_t first, last;
    int n;
};

static int count_records(void *ctx, const struct kf_audit_record *r)
{
    struct counter *c = ctx;
    if (c->n++ == 0)
        c->first = r->seq;
    c->last = r->seq;
    assert_string_equal(r->operation, "Create");
    return KF_OK;
}

static void list_pages_through_records(void **state)
{
    struct fixture *f = *state;
    append_n(f, 30);
    struct counter c = {0};
    assert_int_equal(kf_audit_list(f->audit, 11, 5, count_records, &c), KF_OK);
    assert_int_equal(c.n, 5);
    assert_int_equal(c.first, 11);
    assert_int_equal(c.last, 15);
    memset(&c, 0, sizeof(c));
    assert_int_equal(kf_audit_list(f->audit, 0, 0, count_records, &c), KF_OK);
    assert_int_equal(c.n, 30);
}

static void newer_audit_schema_is_refused(void **state)
{
    struct fixture *f = *state;
    sql(f, "UPDATE schema_version SET version = 99 WHERE module = 'audit'");
    kf_audit *a = NULL;
    struct kf_audit_mac mac = {hmac_cb, &f->mac};
    assert_int_equal(kf_audit_open(f->db, &mac, NULL, &a), KF_ERR_SCHEMA);
    assert_null(a);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hmac_and_sha256_match_published_vectors),
        T(record_hash_and_head_mac_follow_the_documented_encoding),
        T(two_hundred_records_verify),
        T(modified_record_is_detected),
        T(rehashed_record_is_detected),
        T(deleted_record_is_detected),
        T(swapped_records_are_detected),
        T(truncated_tail_is_detected),
        T(truncation_with_forged_head_fails_the_mac),
        T(truncation_hidden_by_dropping_the_head_mac_is_still_caught),
        T(changed_checkpoint_mac_is_detected),
        T(time_going_back_is_detected),
        T(append_fails_cleanly_when_the_record_cannot_be_written),
        T(append_fails_on_a_read_only_connection),
        T(broken_mac_fails_the_append),
        T(over_long_fields_are_refused),
        T(time_strictly_increases_when_the_clock_goes_back),
        T(sealed_module_defers_macs_until_the_next_append),
        T(on_demand_checkpoint),
        T(list_pages_through_records),
        T(newer_audit_schema_is_refused),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
