/*
 * The tamper-evident audit trail (DESIGN §3, seed 003 "Audit Trail").
 *
 * Records live in the same SQLite file as the store (tables audit_record,
 * audit_checkpoint, audit_head), on the same connection, so the service layer
 * writes an action and its audit record in ONE transaction: both persist or
 * neither. If the audit append fails, the caller must roll back and fail the
 * operation (kf_audit_append returns KF_ERR_AUDIT_WRITE and leaves no partial
 * record: it works inside a SAVEPOINT).
 *
 * Each record: seq (1, 2, 3, ... no gaps), time_ns (strictly increasing:
 * max(clock, previous + 1), so a clock stepping back never breaks the order),
 * actor, operation, domain, object (UID or ""), result ("ok" or an error
 * name), detail, prev_hash, and
 *   hash = SHA-256( "kf-audit-record-v1" || u64 seq || u64 time_ns
 *                   || for each of actor, operation, domain, object, result,
 *                      detail: u32 length || bytes
 *                   || prev_hash[32] )
 * (all integers big-endian; record 1 has prev_hash = 32 zero bytes).
 *
 * MACs (key inside the security module, through struct kf_audit_mac):
 *  - a checkpoint every K records (and on demand): (seq, hash,
 *    MAC("kf-audit-ckpt" || u64 seq || hash));
 *  - the head row (last seq, last hash, last time, MAC("kf-audit-head" ||
 *    u64 seq || hash)) rewritten on EVERY append, so cutting off the tail
 *    is detected, and fixing up the head needs the key.
 * While the module is sealed (the MAC callback returns KF_ERR_SEALED) the
 * MACs are stored as NULL and filled in by the first append after it works
 * again; kf_audit_verify still checks the hash chain and reports the records
 * after the last MAC'd point as an unauthenticated tail.
 *
 * NEVER put secrets (key material, shares, PINs, passwords, plaintext) into
 * any field: audit records are readable by whoever can read the database and
 * are listed by the admin tools. Name the object, not its contents.
 *
 * Threads: one kf_audit per connection (it keeps prepared statements); it is
 * as thread-safe as that connection. Appends from several connections are
 * serialised by SQLite's write lock (the head is read inside the write
 * transaction), so seq stays gap-free.
 */
#ifndef KEYFLEET_AUDIT_H
#define KEYFLEET_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/error.h"

struct sqlite3;
typedef struct kf_audit kf_audit;

#define KF_AUDIT_HASH_LEN 32
#define KF_AUDIT_MAC_LEN 32
#define KF_AUDIT_CHECKPOINT_DEFAULT 64

/* Field limits (bytes); longer fields are refused with KF_ERR_LIMIT. */
#define KF_AUDIT_ACTOR_MAX 256
#define KF_AUDIT_OPERATION_MAX 64
#define KF_AUDIT_DOMAIN_MAX 64
#define KF_AUDIT_OBJECT_MAX 256
#define KF_AUDIT_RESULT_MAX 64
#define KF_AUDIT_DETAIL_MAX 1024

/* The MAC over checkpoints and the head; normally kf_secmod_audit_mac.
 * Returns KF_OK, KF_ERR_SEALED (MAC deferred), or another error (append fails). */
struct kf_audit_mac {
    int (*mac)(void *ctx, const uint8_t *data, size_t len, uint8_t out[KF_AUDIT_MAC_LEN]);
    void *ctx;
};

struct kf_audit_options {
    uint32_t checkpoint_interval;              /* K; 0 = KF_AUDIT_CHECKPOINT_DEFAULT */
    uint64_t (*clock_ns)(void *ctx);           /* NULL = kf_now_ns (wall clock) */
    void *clock_ctx;
};

/* What the caller knows about an action. NULL fields are stored as "". */
struct kf_audit_event {
    const char *actor;      /* who: certificate subject, "admin:uid=0", "system" */
    const char *operation;  /* "Create", "Destroy", "unseal", ... */
    const char *domain;     /* domain name, "" for server-wide events */
    const char *object;     /* KMIP Unique Identifier "<domain>/<key_id>" or "" */
    const char *result;     /* "ok" or kf_errname(err) */
    const char *detail;     /* short, non-secret text */
};

/* A stored record, as handed to list callbacks (valid only during the call). */
struct kf_audit_record {
    uint64_t seq;
    uint64_t time_ns;
    const char *actor;
    const char *operation;
    const char *domain;
    const char *object;
    const char *result;
    const char *detail;
    uint8_t prev_hash[KF_AUDIT_HASH_LEN];
    uint8_t hash[KF_AUDIT_HASH_LEN];
};

/*
 * Bind to an open connection (kf_store_db(st)), creating the audit tables if
 * needed (call outside a transaction). mac is copied; opt may be NULL.
 * KF_ERR_SCHEMA if the tables were made by a newer keyfleet.
 */
KF_RESULT int kf_audit_open(struct sqlite3 *db, const struct kf_audit_mac *mac,
                            const struct kf_audit_options *opt, kf_audit **out);
void kf_audit_close(kf_audit *a); /* NULL is fine; does not close db */

/*
 * Append one record. Inside the caller's transaction if one is open (the
 * caller commits), otherwise in its own. *seq_out (may be NULL) gets the seq.
 * KF_ERR_LIMIT for an over-long field; KF_ERR_AUDIT_WRITE if it could not be
 * written (nothing of it remains: the caller must roll back its action);
 * a MAC error other than KF_ERR_SEALED also fails the append.
 */
KF_RESULT int kf_audit_append(kf_audit *a, const struct kf_audit_event *ev, uint64_t *seq_out);

/* Write a checkpoint for the current head now (no-op if it has one). */
KF_RESULT int kf_audit_checkpoint(kf_audit *a);

/* Last seq and hash (0 and zeros for an empty trail). */
KF_RESULT int kf_audit_head(kf_audit *a, uint64_t *seq, uint8_t hash[KF_AUDIT_HASH_LEN]);

/* Records with seq >= from_seq in order, at most max (0 = all). Callback
 * contract as in store.h: KF_OK goes on, > 0 stops, < 0 stops with that error. */
typedef int (*kf_audit_record_cb)(void *ctx, const struct kf_audit_record *r);
KF_RESULT int kf_audit_list(kf_audit *a, uint64_t from_seq, uint64_t max, kf_audit_record_cb cb,
                            void *ctx);

struct kf_audit_report {
    uint64_t records;             /* records read */
    uint64_t last_seq;            /* highest seq found */
    uint64_t checkpoints;         /* checkpoints whose MAC verified */
    bool macs_checked;            /* false if the MAC callback was sealed: chain checked only */
    uint64_t unauthenticated_from; /* first seq not covered by a verified MAC; 0 = none */
    uint64_t first_bad_seq;       /* where the first problem is; 0 if none */
    char reason[256];             /* one sentence: which check failed where */
};

/*
 * Check everything: seq contiguity, prev_hash links, strictly increasing
 * time, every record's hash, the head (MAC, and that it matches the last
 * record: truncation), every checkpoint (MAC, and that its record exists
 * with that hash). Returns KF_OK, or the first failure as
 * KF_ERR_AUDIT_CHAIN (modified/removed/reordered/truncated),
 * KF_ERR_AUDIT_TIME (time not increasing) or KF_ERR_AUDIT_MAC, with
 * r->first_bad_seq and r->reason set. KF_ERR_DB if it could not read.
 * Runs in one read transaction (a consistent snapshot).
 */
KF_RESULT int kf_audit_verify(kf_audit *a, struct kf_audit_report *r);

#endif
