/*
 * Audit trail verification. Order of checks, so the report names the
 * earliest, most specific problem:
 *   1. walk the records in seq order: contiguity (gap), prev_hash link,
 *      strictly increasing time, recomputed hash;
 *   2. the head: its MAC, then that it names the last record (truncation);
 *   3. every checkpoint: its MAC, and that its record still has that hash.
 * All inside one read transaction, so concurrent appends do not interfere.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "audit_internal.h"
#include "keyfleet/secmem.h"

static int fail(struct kf_audit_report *r, int err, uint64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct kf_audit_report *r, int err, uint64_t seq, const char *fmt, ...)
{
    r->first_bad_seq = seq;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
    va_end(ap);
    return err;
}

struct walk {
    uint64_t last_seq;
    uint8_t last_hash[KF_AUDIT_HASH_LEN];
};

static int check_record(sqlite3_stmt *s, struct walk *w, uint64_t *prev_time,
                        struct kf_audit_report *r)
{
    uint64_t seq = (uint64_t)sqlite3_column_int64(s, 0);
    uint64_t time_ns = (uint64_t)sqlite3_column_int64(s, 1);
    uint64_t expected = w->last_seq + 1;
    if (seq != expected)
        return fail(r, KF_ERR_AUDIT_CHAIN, expected,
                    "record %" PRIu64 " is missing: gap after record %" PRIu64, expected,
                    w->last_seq);
    if (sqlite3_column_bytes(s, 8) != KF_AUDIT_HASH_LEN ||
        !kf_ct_equal(sqlite3_column_blob(s, 8), w->last_hash, KF_AUDIT_HASH_LEN))
        return fail(r, KF_ERR_AUDIT_CHAIN, seq,
                    "record %" PRIu64 " does not link to record %" PRIu64
                    " (prev_hash differs): records were removed, reordered or replaced",
                    seq, w->last_seq);
    if (seq > 1 && time_ns <= *prev_time)
        return fail(r, KF_ERR_AUDIT_TIME, seq,
                    "record %" PRIu64 " has a time not after that of record %" PRIu64, seq,
                    w->last_seq);
    struct audit_text t;
    for (int i = 0; i < AUDIT_TEXT_FIELDS; i++) {
        const unsigned char *txt = sqlite3_column_text(s, 2 + i);
        t.n[i] = (size_t)sqlite3_column_bytes(s, 2 + i);
        t.p[i] = txt ? (const char *)txt : "";
    }
    uint8_t hash[KF_AUDIT_HASH_LEN];
    int err = audit_record_hash(seq, time_ns, &t, w->last_hash, hash);
    if (err != KF_OK || sqlite3_column_bytes(s, 9) != KF_AUDIT_HASH_LEN ||
        !kf_ct_equal(sqlite3_column_blob(s, 9), hash, KF_AUDIT_HASH_LEN))
        return fail(r, KF_ERR_AUDIT_CHAIN, seq,
                    "record %" PRIu64 " does not match its hash: it was modified", seq);
    memcpy(w->last_hash, hash, KF_AUDIT_HASH_LEN);
    w->last_seq = seq;
    *prev_time = time_ns;
    r->records++;
    return KF_OK;
}

static int walk_records(kf_audit *a, struct walk *w, struct kf_audit_report *r)
{
    sqlite3_stmt *s;
    KF_GUARD(audit_stmt(a, AS_RECORD_LIST, &s));
    sqlite3_bind_int64(s, 1, 0);
    sqlite3_bind_int64(s, 2, -1);
    memset(w, 0, sizeof(*w));
    uint64_t prev_time = 0;
    int err = KF_OK;
    int rc;
    while (err == KF_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
        err = check_record(s, w, &prev_time, r);
    if (err == KF_OK && rc != SQLITE_DONE)
        err = KF_ERR_DB;
    sqlite3_reset(s);
    r->last_seq = w->last_seq;
    return err;
}

/* KF_OK and *ok = mac matched; KF_ERR_SEALED if the MAC is unavailable. */
static int mac_matches(kf_audit *a, const char *label, uint64_t seq, const void *hash,
                       int hash_len, const void *mac, int mac_len, bool *ok)
{
    *ok = false;
    if (hash_len != KF_AUDIT_HASH_LEN || mac_len != KF_AUDIT_MAC_LEN)
        return KF_OK;
    uint8_t expect[KF_AUDIT_MAC_LEN];
    KF_GUARD(audit_mac(a, label, seq, hash, expect));
    *ok = kf_ct_equal(expect, mac, KF_AUDIT_MAC_LEN);
    return KF_OK;
}

/* *covered: the head's MAC verified and it names the last record. */
static int check_head(kf_audit *a, const struct walk *w, struct kf_audit_report *r, bool *covered)
{
    *covered = false;
    sqlite3_stmt *s;
    KF_GUARD(audit_stmt(a, AS_HEAD_GET, &s));
    if (sqlite3_step(s) != SQLITE_ROW) {
        sqlite3_reset(s);
        return fail(r, KF_ERR_AUDIT_CHAIN, w->last_seq + 1, "the audit head row is missing");
    }
    uint64_t head_seq = (uint64_t)sqlite3_column_int64(s, 0);
    int err = KF_OK;
    bool mac_ok = false;
    if (sqlite3_column_type(s, 3) != SQLITE_NULL && r->macs_checked) {
        err = mac_matches(a, AUDIT_HEAD_LABEL, head_seq, sqlite3_column_blob(s, 2),
                          sqlite3_column_bytes(s, 2), sqlite3_column_blob(s, 3),
                          sqlite3_column_bytes(s, 3), &mac_ok);
        if (err == KF_ERR_SEALED) {
            r->macs_checked = false;
            err = KF_OK;
        } else if (err == KF_OK && !mac_ok) {
            err = fail(r, KF_ERR_AUDIT_MAC, head_seq,
                       "the audit head's MAC does not verify: the head (claiming %" PRIu64
                       " records) was changed without the audit key",
                       head_seq);
        }
    }
    bool same_hash = sqlite3_column_bytes(s, 2) == KF_AUDIT_HASH_LEN &&
                     kf_ct_equal(sqlite3_column_blob(s, 2), w->last_hash, KF_AUDIT_HASH_LEN);
    sqlite3_reset(s);
    KF_GUARD(err);
    if (head_seq > w->last_seq)
        return fail(r, KF_ERR_AUDIT_CHAIN, w->last_seq + 1,
                    "the head says %" PRIu64 " records but only %" PRIu64
                    " exist: the tail was truncated from record %" PRIu64,
                    head_seq, w->last_seq, w->last_seq + 1);
    if (head_seq < w->last_seq)
        return fail(r, KF_ERR_AUDIT_CHAIN, head_seq + 1,
                    "records after %" PRIu64 " were added without updating the head", head_seq);
    if (!same_hash)
        return fail(r, KF_ERR_AUDIT_CHAIN, head_seq,
                    "the head's hash differs from record %" PRIu64 "'s", head_seq);
    *covered = mac_ok;
    return KF_OK;
}

static int record_hash_at(kf_audit *a, uint64_t seq, uint8_t out[KF_AUDIT_HASH_LEN], bool *found)
{
    sqlite3_stmt *s;
    KF_GUARD(audit_stmt(a, AS_RECORD_HASH, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)seq);
    *found = sqlite3_step(s) == SQLITE_ROW && sqlite3_column_bytes(s, 0) == KF_AUDIT_HASH_LEN;
    if (*found)
        memcpy(out, sqlite3_column_blob(s, 0), KF_AUDIT_HASH_LEN);
    sqlite3_reset(s);
    return KF_OK;
}

/* One checkpoint row; *authenticated_to advances to its seq if its MAC verified. */
static int check_checkpoint(kf_audit *a, sqlite3_stmt *s, const struct walk *w,
                            struct kf_audit_report *r, uint64_t *authenticated_to)
{
    uint64_t seq = (uint64_t)sqlite3_column_int64(s, 0);
    const void *hash = sqlite3_column_blob(s, 1);
    int hash_len = sqlite3_column_bytes(s, 1);
    if (sqlite3_column_type(s, 2) != SQLITE_NULL && r->macs_checked) {
        bool ok;
        int err = mac_matches(a, AUDIT_CKPT_LABEL, seq, hash, hash_len,
                              sqlite3_column_blob(s, 2), sqlite3_column_bytes(s, 2), &ok);
        if (err == KF_ERR_SEALED) {
            r->macs_checked = false;
        } else {
            KF_GUARD(err);
            if (!ok)
                return fail(r, KF_ERR_AUDIT_MAC, seq,
                            "the checkpoint MAC at record %" PRIu64 " does not verify", seq);
            r->checkpoints++;
            if (seq > *authenticated_to)
                *authenticated_to = seq;
        }
    }
    if (seq > w->last_seq)
        return fail(r, KF_ERR_AUDIT_CHAIN, w->last_seq + 1,
                    "the checkpoint at record %" PRIu64 " names a record that no longer "
                    "exists: the tail was truncated from record %" PRIu64,
                    seq, w->last_seq + 1);
    uint8_t stored[KF_AUDIT_HASH_LEN];
    bool found;
    KF_GUARD(record_hash_at(a, seq, stored, &found));
    if (!found || hash_len != KF_AUDIT_HASH_LEN ||
        !kf_ct_equal(stored, hash, KF_AUDIT_HASH_LEN))
        return fail(r, KF_ERR_AUDIT_CHAIN, seq,
                    "record %" PRIu64 " differs from its checkpoint: the chain from there on "
                    "was rewritten",
                    seq);
    return KF_OK;
}

static int check_checkpoints(kf_audit *a, const struct walk *w, struct kf_audit_report *r,
                             uint64_t *authenticated_to)
{
    sqlite3_stmt *s;
    KF_GUARD(audit_stmt(a, AS_CKPT_ALL, &s));
    int err = KF_OK;
    int rc;
    while (err == KF_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
        err = check_checkpoint(a, s, w, r, authenticated_to);
    if (err == KF_OK && rc != SQLITE_DONE)
        err = KF_ERR_DB;
    sqlite3_reset(s);
    return err;
}

static int verify_locked(kf_audit *a, struct kf_audit_report *r)
{
    struct walk w;
    KF_GUARD(walk_records(a, &w, r));
    bool head_covered;
    KF_GUARD(check_head(a, &w, r, &head_covered));
    uint64_t authenticated_to = 0;
    KF_GUARD(check_checkpoints(a, &w, r, &authenticated_to));
    if (!r->macs_checked)
        r->unauthenticated_from = w.last_seq ? 1 : 0;
    else if (!head_covered && authenticated_to < w.last_seq)
        r->unauthenticated_from = authenticated_to + 1;
    return KF_OK;
}

int kf_audit_verify(kf_audit *a, struct kf_audit_report *r)
{
    KF_ENSURE(a && r, KF_ERR_ARG);
    memset(r, 0, sizeof(*r));
    r->macs_checked = true;
    bool own_tx = sqlite3_get_autocommit(a->db);
    if (own_tx) {
        sqlite3_stmt *s;
        KF_GUARD(audit_stmt(a, AS_BEGIN_READ, &s));
        KF_GUARD(audit_step_done(a, s, KF_ERR_DB, "begin"));
    }
    /* Probe the MAC once, so a sealed module is reported even when every
     * stored MAC is still NULL and none would otherwise be computed. */
    uint8_t probe[KF_AUDIT_MAC_LEN];
    static const uint8_t zero_hash[KF_AUDIT_HASH_LEN] = {0};
    if (audit_mac(a, "kf-audit-probe", 0, zero_hash, probe) == KF_ERR_SEALED)
        r->macs_checked = false;
    int err = verify_locked(a, r);
    if (own_tx) {
        sqlite3_stmt *s;
        if (audit_stmt(a, AS_COMMIT, &s) == KF_OK)
            (void)audit_step_done(a, s, KF_ERR_DB, "end read");
    }
    if (err == KF_OK && r->unauthenticated_from)
        snprintf(r->reason, sizeof(r->reason),
                 "hash chain intact; records from %" PRIu64 " on are not yet covered by a MAC",
                 r->unauthenticated_from);
    else if (err == KF_OK)
        snprintf(r->reason, sizeof(r->reason), "hash chain intact and covered by MACs");
    return err;
}
