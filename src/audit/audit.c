/*
 * The audit trail: schema, append (hash chain, head and checkpoint MACs),
 * listing. Verification is in verify.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_internal.h"
#include "keyfleet/buf.h"
#include "keyfleet/crypto.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"

#define SCHEMA_MODULE "audit"
#define RECORD_HASH_LABEL "kf-audit-record-v1"
/* Largest encoding: label, two u64, six u32 lengths, the field maxima, prev hash. */
#define RECORD_ENCODING_MAX                                                                        \
    (sizeof(RECORD_HASH_LABEL) + 16 + 4 * AUDIT_TEXT_FIELDS + KF_AUDIT_ACTOR_MAX +                \
     KF_AUDIT_OPERATION_MAX + KF_AUDIT_DOMAIN_MAX + KF_AUDIT_OBJECT_MAX + KF_AUDIT_RESULT_MAX +   \
     KF_AUDIT_DETAIL_MAX + KF_AUDIT_HASH_LEN)

static const size_t field_max[AUDIT_TEXT_FIELDS] = {
    KF_AUDIT_ACTOR_MAX, KF_AUDIT_OPERATION_MAX, KF_AUDIT_DOMAIN_MAX,
    KF_AUDIT_OBJECT_MAX, KF_AUDIT_RESULT_MAX, KF_AUDIT_DETAIL_MAX,
};

/* Never edit a released step; append. Step i takes version i to i + 1. */
static const char *const audit_migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE audit_record("
    "  seq INTEGER PRIMARY KEY,"
    "  time_ns INTEGER NOT NULL,"
    "  actor TEXT NOT NULL, operation TEXT NOT NULL, domain TEXT NOT NULL,"
    "  object TEXT NOT NULL, result TEXT NOT NULL, detail TEXT NOT NULL,"
    "  prev_hash BLOB NOT NULL, hash BLOB NOT NULL);"
    "CREATE TABLE audit_checkpoint(seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, mac BLOB);"
    "CREATE TABLE audit_head(id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL,"
    "  time_ns INTEGER NOT NULL, hash BLOB NOT NULL, mac BLOB);"
    "INSERT INTO audit_head(id, seq, time_ns, hash, mac) VALUES (1, 0, 0, zeroblob(32), NULL);",
};
#define AUDIT_SCHEMA_VERSION ((int)(sizeof(audit_migrations) / sizeof(audit_migrations[0])))

static const char *const stmt_sql[AS_COUNT] = {
    [AS_BEGIN] = "BEGIN IMMEDIATE",
    [AS_BEGIN_READ] = "BEGIN",
    [AS_COMMIT] = "COMMIT",
    [AS_ROLLBACK] = "ROLLBACK",
    [AS_SAVEPOINT] = "SAVEPOINT kf_audit_append",
    [AS_RELEASE] = "RELEASE kf_audit_append",
    [AS_ROLLBACK_TO] = "ROLLBACK TO kf_audit_append",
    [AS_HEAD_GET] = "SELECT seq, time_ns, hash, mac FROM audit_head WHERE id = 1",
    [AS_HEAD_SET] = "UPDATE audit_head SET seq = ?1, time_ns = ?2, hash = ?3, mac = ?4 "
                    "WHERE id = 1",
    [AS_RECORD_INSERT] = "INSERT INTO audit_record(seq, time_ns, actor, operation, domain,"
                         " object, result, detail, prev_hash, hash) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [AS_RECORD_HASH] = "SELECT hash FROM audit_record WHERE seq = ?1",
    [AS_RECORD_LIST] = "SELECT seq, time_ns, actor, operation, domain, object, result, detail,"
                       " prev_hash, hash FROM audit_record WHERE seq >= ?1 ORDER BY seq"
                       " LIMIT ?2",
    [AS_CKPT_INSERT] = "INSERT INTO audit_checkpoint(seq, hash, mac) VALUES (?1, ?2, ?3)",
    [AS_CKPT_GET] = "SELECT mac FROM audit_checkpoint WHERE seq = ?1",
    [AS_CKPT_PENDING] = "SELECT seq, hash FROM audit_checkpoint WHERE mac IS NULL ORDER BY seq",
    [AS_CKPT_SET_MAC] = "UPDATE audit_checkpoint SET mac = ?2 WHERE seq = ?1",
    [AS_CKPT_ALL] = "SELECT seq, hash, mac FROM audit_checkpoint ORDER BY seq",
};

int audit_stmt(kf_audit *a, enum audit_stmt id, sqlite3_stmt **out)
{
    sqlite3_stmt *s = a->stmt[id];
    if (!s) {
        int rc = sqlite3_prepare_v3(a->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s, NULL);
        if (rc != SQLITE_OK) {
            kf_error("audit: prepare: %s", sqlite3_errmsg(a->db));
            return KF_ERR_DB;
        }
        a->stmt[id] = s;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    *out = s;
    return KF_OK;
}

int audit_step_done(kf_audit *a, sqlite3_stmt *s, int err_code, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return KF_OK;
    kf_error("audit: %s: %s (sqlite %d)", what, sqlite3_errmsg(a->db), rc);
    return err_code;
}

static int run_simple(kf_audit *a, enum audit_stmt id, int err_code)
{
    sqlite3_stmt *s;
    KF_GUARD(audit_stmt(a, id, &s));
    return audit_step_done(a, s, err_code, stmt_sql[id]);
}

/* ---- Hash and MAC encodings ---- */

int audit_record_hash(uint64_t seq, uint64_t time_ns, const struct audit_text *t,
                      const uint8_t prev_hash[KF_AUDIT_HASH_LEN], uint8_t out[KF_AUDIT_HASH_LEN])
{
    uint8_t mem[RECORD_ENCODING_MAX];
    kf_buf b;
    kf_buf_fixed(&b, mem, sizeof(mem));
    int err = kf_buf_put_bytes(&b, RECORD_HASH_LABEL, sizeof(RECORD_HASH_LABEL) - 1);
    if (err == KF_OK)
        err = kf_buf_put_u64(&b, seq);
    if (err == KF_OK)
        err = kf_buf_put_u64(&b, time_ns);
    for (int i = 0; i < AUDIT_TEXT_FIELDS && err == KF_OK; i++) {
        if (t->n[i] > UINT32_MAX) {
            err = KF_ERR_LIMIT;
            break;
        }
        err = kf_buf_put_u32(&b, (uint32_t)t->n[i]);
        if (err == KF_OK)
            err = kf_buf_put_bytes(&b, t->p[i], t->n[i]);
    }
    if (err == KF_OK)
        err = kf_buf_put_bytes(&b, prev_hash, KF_AUDIT_HASH_LEN);
    if (err == KF_OK)
        err = kf_sha256(b.data, b.len, out);
    return err == KF_ERR_NOSPACE ? KF_ERR_LIMIT : err;
}

int audit_mac(const kf_audit *a, const char *label, uint64_t seq,
              const uint8_t hash[KF_AUDIT_HASH_LEN], uint8_t out[KF_AUDIT_MAC_LEN])
{
    uint8_t mem[32 + 8 + KF_AUDIT_HASH_LEN];
    kf_buf b;
    kf_buf_fixed(&b, mem, sizeof(mem));
    KF_GUARD(kf_buf_put_bytes(&b, label, strlen(label)));
    KF_GUARD(kf_buf_put_u64(&b, seq));
    KF_GUARD(kf_buf_put_bytes(&b, hash, KF_AUDIT_HASH_LEN));
    int err = a->mac.mac(a->mac.ctx, b.data, b.len, out);
    return err > 0 ? KF_ERR_INTERNAL : err;
}

/* ---- Open / schema ---- */

static int exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        kf_error("audit: %s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return KF_ERR_DB;
    }
    return KF_OK;
}

/* 0 if the audit tables were never made (or there is no version table yet). */
static int read_schema_version(sqlite3 *db, int *version)
{
    *version = 0;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, "SELECT version FROM schema_version WHERE module = ?1", -1, &s,
                           NULL) != SQLITE_OK) {
        sqlite3_finalize(s);
        return KF_OK; /* no schema_version table: a fresh database */
    }
    sqlite3_bind_text(s, 1, SCHEMA_MODULE, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *version = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? KF_OK : KF_ERR_DB;
}

static int migrate_locked(sqlite3 *db)
{
    KF_GUARD(exec_sql(db, "CREATE TABLE IF NOT EXISTS schema_version("
                          "module TEXT PRIMARY KEY, version INTEGER NOT NULL)"));
    int version;
    KF_GUARD(read_schema_version(db, &version));
    KF_ENSURE(version <= AUDIT_SCHEMA_VERSION, KF_ERR_SCHEMA);
    for (int v = version; v < AUDIT_SCHEMA_VERSION; v++) {
        KF_GUARD(exec_sql(db, audit_migrations[v]));
        char sql[160];
        snprintf(sql, sizeof(sql),
                 "INSERT INTO schema_version(module, version) VALUES ('" SCHEMA_MODULE "', %d) "
                 "ON CONFLICT(module) DO UPDATE SET version = excluded.version",
                 v + 1);
        KF_GUARD(exec_sql(db, sql));
    }
    return KF_OK;
}

/* Only take the write lock when there is something to create, so a
 * read-only connection can still open the trail to list and verify it. */
static int migrate(sqlite3 *db)
{
    int version;
    KF_GUARD(read_schema_version(db, &version));
    if (version > AUDIT_SCHEMA_VERSION) {
        kf_error("audit: schema version %d, this program knows up to %d", version,
                 AUDIT_SCHEMA_VERSION);
        return KF_ERR_SCHEMA;
    }
    if (version == AUDIT_SCHEMA_VERSION)
        return KF_OK;
    KF_ENSURE(sqlite3_get_autocommit(db), KF_ERR_STATE);
    KF_GUARD(exec_sql(db, "BEGIN IMMEDIATE"));
    int err = migrate_locked(db);
    if (err == KF_OK)
        err = exec_sql(db, "COMMIT");
    if (err != KF_OK)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return err;
}

static uint64_t wall_clock(void *ctx)
{
    (void)ctx;
    return kf_now_ns();
}

int kf_audit_open(struct sqlite3 *db, const struct kf_audit_mac *mac,
                  const struct kf_audit_options *opt, kf_audit **out)
{
    KF_ENSURE(db && mac && mac->mac && out, KF_ERR_ARG);
    *out = NULL;
    KF_GUARD(migrate(db));
    kf_audit *a = calloc(1, sizeof(*a));
    KF_ENSURE(a, KF_ERR_NOMEM);
    a->db = db;
    a->mac = *mac;
    a->checkpoint_interval = KF_AUDIT_CHECKPOINT_DEFAULT;
    a->clock_ns = wall_clock;
    if (opt && opt->checkpoint_interval)
        a->checkpoint_interval = opt->checkpoint_interval;
    if (opt && opt->clock_ns) {
        a->clock_ns = opt->clock_ns;
        a->clock_ctx = opt->clock_ctx;
    }
    *out = a;
    return KF_OK;
}

void kf_audit_close(kf_audit *a)
{
    if (!a)
        return;
    for (int i = 0; i < AS_COUNT; i++)
        sqlite3_finalize(a->stmt[i]);
    free(a);
}

/* ---- Append ---- */

struct head {
    uint64_t seq;
    uint64_t time_ns;
    uint8_t hash[KF_AUDIT_HASH_LEN];
    bool mac_pending; /* stored MAC is NULL: something awaits a MAC */
    uint8_t mac[KF_AUDIT_MAC_LEN];
};

static int read_head(kf_audit *a, struct head *h)
{
    sqlite3_stmt *s;
    KF_GUARD(audit_stmt(a, AS_HEAD_GET, &s));
    int rc = sqlite3_step(s);
    int err = KF_OK;
    if (rc != SQLITE_ROW || sqlite3_column_bytes(s, 2) != KF_AUDIT_HASH_LEN) {
        kf_error("audit: the audit head row is missing or malformed");
        err = rc == SQLITE_ROW || rc == SQLITE_DONE ? KF_ERR_AUDIT_CHAIN : KF_ERR_DB;
    } else {
        h->seq = (uint64_t)sqlite3_column_int64(s, 0);
        h->time_ns = (uint64_t)sqlite3_column_int64(s, 1);
        memcpy(h->hash, sqlite3_column_blob(s, 2), KF_AUDIT_HASH_LEN);
        h->mac_pending = sqlite3_column_type(s, 3) == SQLITE_NULL;
        if (!h->mac_pending && sqlite3_column_bytes(s, 3) == KF_AUDIT_MAC_LEN)
            memcpy(h->mac, sqlite3_column_blob(s, 3), KF_AUDIT_MAC_LEN);
        else if (!h->mac_pending)
            memset(h->mac, 0, KF_AUDIT_MAC_LEN); /* wrong length: cannot verify */
    }
    sqlite3_reset(s);
    return err;
}

static int text_of_event(const struct kf_audit_event *ev, struct audit_text *t)
{
    const char *f[AUDIT_TEXT_FIELDS] = {ev->actor,  ev->operation, ev->domain,
                                        ev->object, ev->result,    ev->detail};
    for (int i = 0; i < AUDIT_TEXT_FIELDS; i++) {
        t->p[i] = f[i] ? f[i] : "";
        t->n[i] = strlen(t->p[i]);
        KF_ENSURE(t->n[i] <= field_max[i], KF_ERR_LIMIT);
    }
    return KF_OK;
}

/* MAC, or NULL (*have = false) when the module is sealed. */
static int mac_or_defer(const kf_audit *a, const char *label, uint64_t seq,
                        const uint8_t hash[KF_AUDIT_HASH_LEN], uint8_t out[KF_AUDIT_MAC_LEN],
                        bool *have)
{
    int err = audit_mac(a, label, seq, hash, out);
    *have = err == KF_OK;
    if (err == KF_ERR_SEALED)
        return KF_OK;
    if (err != KF_OK)
        kf_error("audit: MAC failed: %s", kf_strerror(err));
    return err;
}

static void bind_mac(sqlite3_stmt *s, int col, const uint8_t mac[KF_AUDIT_MAC_LEN], bool have)
{
    if (have)
        sqlite3_bind_blob(s, col, mac, KF_AUDIT_MAC_LEN, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, col);
}

static int insert_record(kf_audit *a, uint64_t seq, uint64_t time_ns, const struct audit_text *t,
                         const uint8_t prev[KF_AUDIT_HASH_LEN],
                         const uint8_t hash[KF_AUDIT_HASH_LEN])
{
    sqlite3_stmt *s;
    KF_GUARD(audit_stmt(a, AS_RECORD_INSERT, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)seq);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)time_ns);
    for (int i = 0; i < AUDIT_TEXT_FIELDS; i++)
        sqlite3_bind_text(s, 3 + i, t->p[i], (int)t->n[i], SQLITE_STATIC);
    sqlite3_bind_blob(s, 9, prev, KF_AUDIT_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(s, 10, hash, KF_AUDIT_HASH_LEN, SQLITE_STATIC);
    return audit_step_done(a, s, KF_ERR_AUDIT_WRITE, "insert record");
}

static int insert_checkpoint(kf_audit *a, uint64_t seq, const uint8_t hash[KF_AUDIT_HASH_LEN],
                             bool *deferred)
{
    uint8_t mac[KF_AUDIT_MAC_LEN];
    bool have;
    KF_GUARD(mac_or_defer(a, AUDIT_CKPT_LABEL, seq, hash, mac, &have));
    sqlite3_stmt *s;
    KF_GUARD(audit_stmt(a, AS_CKPT_INSERT, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)seq);
    sqlite3_bind_blob(s, 2, hash, KF_AUDIT_HASH_LEN, SQLITE_STATIC);
    bind_mac(s, 3, mac, have);
    *deferred = *deferred || !have;
    return audit_step_done(a, s, KF_ERR_AUDIT_WRITE, "insert checkpoint");
}

/* Fill in checkpoint MACs deferred while the module was sealed. The pending
 * ones are collected first and updated after the SELECT is done: SQLite
 * leaves a scan's result undefined if its table changes under it. */
struct pending_ckpt {
    uint64_t seq;
    uint8_t hash[KF_AUDIT_HASH_LEN];
};

static int collect_pending(kf_audit *a, struct pending_ckpt **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    sqlite3_stmt *s;
    KF_GUARD(audit_stmt(a, AS_CKPT_PENDING, &s));
    size_t cap = 0;
    int err = KF_OK;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(s, 1) != KF_AUDIT_HASH_LEN)
            continue; /* malformed: left for verify to report */
        if (*count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct pending_ckpt *p = realloc(*out, ncap * sizeof(*p));
            if (!p) {
                err = KF_ERR_NOMEM;
                break;
            }
            *out = p;
            cap = ncap;
        }
        (*out)[*count].seq = (uint64_t)sqlite3_column_int64(s, 0);
        memcpy((*out)[*count].hash, sqlite3_column_blob(s, 1), KF_AUDIT_HASH_LEN);
        (*count)++;
    }
    if (err == KF_OK && rc != SQLITE_DONE)
        err = KF_ERR_AUDIT_WRITE;
    sqlite3_reset(s);
    return err;
}

static int fill_pending_checkpoints(kf_audit *a, bool *deferred)
{
    struct pending_ckpt *pending;
    size_t count;
    int err = collect_pending(a, &pending, &count);
    for (size_t i = 0; err == KF_OK && i < count; i++) {
        uint8_t mac[KF_AUDIT_MAC_LEN];
        bool have;
        err = mac_or_defer(a, AUDIT_CKPT_LABEL, pending[i].seq, pending[i].hash, mac, &have);
        if (err != KF_OK || !have) {
            *deferred = *deferred || !have;
            break;
        }
        sqlite3_stmt *u;
        err = audit_stmt(a, AS_CKPT_SET_MAC, &u);
        if (err != KF_OK)
            break;
        sqlite3_bind_int64(u, 1, (sqlite3_int64)pending[i].seq);
        sqlite3_bind_blob(u, 2, mac, KF_AUDIT_MAC_LEN, SQLITE_TRANSIENT);
        err = audit_step_done(a, u, KF_ERR_AUDIT_WRITE, "fill checkpoint mac");
    }
    free(pending);
    return err;
}

static int write_head(kf_audit *a, uint64_t seq, uint64_t time_ns,
                      const uint8_t hash[KF_AUDIT_HASH_LEN], bool deferred)
{
    uint8_t mac[KF_AUDIT_MAC_LEN];
    bool have = false;
    /* If anything in this append was deferred, the head stays without a MAC
     * too: a NULL head MAC is what tells the next append to catch up. */
    if (!deferred)
        KF_GUARD(mac_or_defer(a, AUDIT_HEAD_LABEL, seq, hash, mac, &have));
    sqlite3_stmt *s;
    KF_GUARD(audit_stmt(a, AS_HEAD_SET, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)seq);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)time_ns);
    sqlite3_bind_blob(s, 3, hash, KF_AUDIT_HASH_LEN, SQLITE_STATIC);
    bind_mac(s, 4, mac, have);
    KF_GUARD(audit_step_done(a, s, KF_ERR_AUDIT_WRITE, "update head"));
    KF_ENSURE(sqlite3_changes(a->db) == 1, KF_ERR_AUDIT_WRITE);
    return KF_OK;
}

/* Everything between SAVEPOINT and RELEASE. */
static int append_locked(kf_audit *a, const struct audit_text *t, uint64_t *seq_out)
{
    struct head h;
    KF_GUARD(read_head(a, &h));
    /* Never extend a chain whose head was forged: re-MACing it would bless a
     * truncation. (A head left without MAC while sealed cannot be checked.) */
    if (!h.mac_pending && h.seq > 0) {
        uint8_t expect[KF_AUDIT_MAC_LEN];
        int err = audit_mac(a, AUDIT_HEAD_LABEL, h.seq, h.hash, expect);
        if (err == KF_OK && !kf_ct_equal(expect, h.mac, KF_AUDIT_MAC_LEN)) {
            kf_error("audit: the audit head's MAC does not verify; refusing to append "
                     "(run keyfleet audit verify)");
            return KF_ERR_AUDIT_MAC;
        }
        if (err != KF_OK && err != KF_ERR_SEALED)
            return err;
    }
    uint64_t seq = h.seq + 1;
    /* Strictly increasing even if the wall clock steps back (NTP, VM restore). */
    uint64_t now = a->clock_ns(a->clock_ctx);
    uint64_t time_ns = now > h.time_ns ? now : h.time_ns + 1;
    KF_ENSURE(time_ns <= INT64_MAX, KF_ERR_AUDIT_TIME);

    uint8_t hash[KF_AUDIT_HASH_LEN];
    KF_GUARD(audit_record_hash(seq, time_ns, t, h.hash, hash));
    KF_GUARD(insert_record(a, seq, time_ns, t, h.hash, hash));
    bool deferred = false;
    if (h.mac_pending)
        KF_GUARD(fill_pending_checkpoints(a, &deferred));
    if (seq % a->checkpoint_interval == 0)
        KF_GUARD(insert_checkpoint(a, seq, hash, &deferred));
    KF_GUARD(write_head(a, seq, time_ns, hash, deferred));
    *seq_out = seq;
    return KF_OK;
}

int kf_audit_append(kf_audit *a, const struct kf_audit_event *ev, uint64_t *seq_out)
{
    KF_ENSURE(a && ev, KF_ERR_ARG);
    struct audit_text t;
    KF_GUARD(text_of_event(ev, &t));

    bool own_tx = sqlite3_get_autocommit(a->db);
    if (own_tx && run_simple(a, AS_BEGIN, KF_ERR_AUDIT_WRITE) != KF_OK)
        return KF_ERR_AUDIT_WRITE;
    uint64_t seq = 0;
    int err = run_simple(a, AS_SAVEPOINT, KF_ERR_AUDIT_WRITE);
    if (err == KF_OK) {
        err = append_locked(a, &t, &seq);
        if (err != KF_OK) {
            /* Leave no part of the record behind; the caller's own changes
             * are untouched and it decides to roll them back. */
            if (run_simple(a, AS_ROLLBACK_TO, KF_ERR_DB) != KF_OK)
                kf_error("audit: could not undo a failed append");
        }
        if (run_simple(a, AS_RELEASE, KF_ERR_AUDIT_WRITE) != KF_OK && err == KF_OK)
            err = KF_ERR_AUDIT_WRITE;
    }
    if (own_tx) {
        if (err == KF_OK)
            err = run_simple(a, AS_COMMIT, KF_ERR_AUDIT_WRITE);
        if (err != KF_OK && !sqlite3_get_autocommit(a->db))
            (void)run_simple(a, AS_ROLLBACK, KF_ERR_DB);
    }
    if (err != KF_OK) {
        kf_error("audit: append failed: %s", kf_strerror(err));
        return err == KF_ERR_LIMIT || err == KF_ERR_AUDIT_MAC ? err : KF_ERR_AUDIT_WRITE;
    }
    if (seq_out)
        *seq_out = seq;
    return KF_OK;
}

int kf_audit_checkpoint(kf_audit *a)
{
    KF_ENSURE(a, KF_ERR_ARG);
    bool own_tx = sqlite3_get_autocommit(a->db);
    if (own_tx)
        KF_GUARD(run_simple(a, AS_BEGIN, KF_ERR_AUDIT_WRITE));
    struct head h;
    int err = read_head(a, &h);
    bool exists = false;
    sqlite3_stmt *s = NULL;
    if (err == KF_OK && h.seq > 0)
        err = audit_stmt(a, AS_CKPT_GET, &s);
    if (err == KF_OK && s) {
        sqlite3_bind_int64(s, 1, (sqlite3_int64)h.seq);
        exists = sqlite3_step(s) == SQLITE_ROW;
        sqlite3_reset(s);
    }
    if (err == KF_OK && h.seq > 0 && !exists) {
        uint8_t mac[KF_AUDIT_MAC_LEN];
        /* On demand means now: a sealed module is an error here, not a deferral. */
        err = audit_mac(a, AUDIT_CKPT_LABEL, h.seq, h.hash, mac);
        if (err == KF_OK)
            err = audit_stmt(a, AS_CKPT_INSERT, &s);
        if (err == KF_OK) {
            sqlite3_bind_int64(s, 1, (sqlite3_int64)h.seq);
            sqlite3_bind_blob(s, 2, h.hash, KF_AUDIT_HASH_LEN, SQLITE_STATIC);
            sqlite3_bind_blob(s, 3, mac, KF_AUDIT_MAC_LEN, SQLITE_TRANSIENT);
            err = audit_step_done(a, s, KF_ERR_AUDIT_WRITE, "insert checkpoint");
        }
    }
    if (own_tx) {
        if (err == KF_OK)
            err = run_simple(a, AS_COMMIT, KF_ERR_AUDIT_WRITE);
        if (err != KF_OK && !sqlite3_get_autocommit(a->db))
            (void)run_simple(a, AS_ROLLBACK, KF_ERR_DB);
    }
    return err;
}

int kf_audit_head(kf_audit *a, uint64_t *seq, uint8_t hash[KF_AUDIT_HASH_LEN])
{
    KF_ENSURE(a && seq && hash, KF_ERR_ARG);
    struct head h;
    KF_GUARD(read_head(a, &h));
    *seq = h.seq;
    memcpy(hash, h.hash, KF_AUDIT_HASH_LEN);
    return KF_OK;
}

/* ---- List ---- */

static void copy_hash(sqlite3_stmt *s, int col, uint8_t out[KF_AUDIT_HASH_LEN])
{
    memset(out, 0, KF_AUDIT_HASH_LEN);
    if (sqlite3_column_bytes(s, col) == KF_AUDIT_HASH_LEN)
        memcpy(out, sqlite3_column_blob(s, col), KF_AUDIT_HASH_LEN);
}

int kf_audit_list(kf_audit *a, uint64_t from_seq, uint64_t max, kf_audit_record_cb cb, void *ctx)
{
    KF_ENSURE(a && cb, KF_ERR_ARG);
    sqlite3_stmt *s;
    KF_GUARD(audit_stmt(a, AS_RECORD_LIST, &s));
    sqlite3_bind_int64(s, 1, from_seq > INT64_MAX ? INT64_MAX : (sqlite3_int64)from_seq);
    sqlite3_bind_int64(s, 2, max == 0 || max > INT64_MAX ? -1 : (sqlite3_int64)max);
    int err = KF_OK;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct kf_audit_record r;
        r.seq = (uint64_t)sqlite3_column_int64(s, 0);
        r.time_ns = (uint64_t)sqlite3_column_int64(s, 1);
        const char **f[AUDIT_TEXT_FIELDS] = {&r.actor,  &r.operation, &r.domain,
                                             &r.object, &r.result,    &r.detail};
        for (int i = 0; i < AUDIT_TEXT_FIELDS; i++) {
            const unsigned char *txt = sqlite3_column_text(s, 2 + i);
            *f[i] = txt ? (const char *)txt : "";
        }
        copy_hash(s, 8, r.prev_hash);
        copy_hash(s, 9, r.hash);
        err = cb(ctx, &r);
        if (err != KF_OK)
            break;
    }
    if (err == KF_OK && rc != SQLITE_DONE) {
        kf_error("audit: list: %s", sqlite3_errmsg(a->db));
        err = KF_ERR_DB;
    }
    sqlite3_reset(s);
    return err > 0 ? KF_OK : err;
}
