/* Shared between the audit trail's files. */
#ifndef KEYFLEET_AUDIT_INTERNAL_H
#define KEYFLEET_AUDIT_INTERNAL_H

#include <sqlite3.h>

#include "keyfleet/audit.h"

enum audit_stmt {
    AS_BEGIN,
    AS_BEGIN_READ,
    AS_COMMIT,
    AS_ROLLBACK,
    AS_SAVEPOINT,
    AS_RELEASE,
    AS_ROLLBACK_TO,
    AS_HEAD_GET,
    AS_HEAD_SET,
    AS_RECORD_INSERT,
    AS_RECORD_HASH,
    AS_RECORD_LIST,
    AS_CKPT_INSERT,
    AS_CKPT_GET,
    AS_CKPT_PENDING,
    AS_CKPT_SET_MAC,
    AS_CKPT_ALL,
    AS_COUNT
};

struct kf_audit {
    sqlite3 *db;
    struct kf_audit_mac mac;
    uint32_t checkpoint_interval;
    uint64_t (*clock_ns)(void *ctx);
    void *clock_ctx;
    sqlite3_stmt *stmt[AS_COUNT];
};

/* The six text fields of a record with their exact byte lengths, in hash order. */
#define AUDIT_TEXT_FIELDS 6
struct audit_text {
    const char *p[AUDIT_TEXT_FIELDS];
    size_t n[AUDIT_TEXT_FIELDS];
};

/* Ready-to-bind cached statement. */
int audit_stmt(kf_audit *a, enum audit_stmt id, sqlite3_stmt **out);
/* Step a statement returning no rows, reset it; SQLite errors -> err_code (logged). */
int audit_step_done(kf_audit *a, sqlite3_stmt *s, int err_code, const char *what);

/* The record hash (see audit.h for the encoding). KF_ERR_LIMIT if a field is
 * longer than the encoder's buffer allows. */
int audit_record_hash(uint64_t seq, uint64_t time_ns, const struct audit_text *t,
                      const uint8_t prev_hash[KF_AUDIT_HASH_LEN],
                      uint8_t out[KF_AUDIT_HASH_LEN]);
/* MAC over label || u64 seq || hash via the callback. */
int audit_mac(const kf_audit *a, const char *label, uint64_t seq,
              const uint8_t hash[KF_AUDIT_HASH_LEN], uint8_t out[KF_AUDIT_MAC_LEN]);

#define AUDIT_CKPT_LABEL "kf-audit-ckpt"
#define AUDIT_HEAD_LABEL "kf-audit-head"

#endif
