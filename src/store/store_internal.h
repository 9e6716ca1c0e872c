/* Shared between the store's files: the connection and its statement cache. */
#ifndef KEYFLEET_STORE_INTERNAL_H
#define KEYFLEET_STORE_INTERNAL_H

#include <sqlite3.h>

#include "keyfleet/store.h"

/* Every statement the store runs, prepared once per connection on first use. */
enum kf_store_stmt {
    KF_STMT_BEGIN,
    KF_STMT_COMMIT,
    KF_STMT_ROLLBACK,
    KF_STMT_DOMAIN_INSERT,
    KF_STMT_DOMAIN_BY_NAME,
    KF_STMT_DOMAIN_BY_ID,
    KF_STMT_DOMAIN_LIST,
    KF_STMT_DOMAIN_SET_KEY,
    KF_STMT_NEXT_KEY_ID,
    KF_STMT_OBJECT_INSERT,
    KF_STMT_OBJECT_GET,
    KF_STMT_OBJECT_UPDATE,
    KF_STMT_OBJECT_DESTROY_MATERIAL,
    KF_STMT_OBJECT_DELETE,
    KF_STMT_OBJECT_LIST,
    /* devices and pairwise KEK metadata (device.c) */
    KF_STMT_DEVICE_INSERT,
    KF_STMT_DEVICE_GET,
    KF_STMT_DEVICE_SET_COUNTER,
    KF_STMT_DEVICE_SET_EXPORTED,
    KF_STMT_DEVICE_STATS,
    KF_STMT_KEK_RESERVE,
    KF_STMT_PAIR_KEK_INSERT,
    KF_STMT_PAIR_KEK_GET,
    KF_STMT_PAIR_KEK_ACK_A,
    KF_STMT_PAIR_KEK_ACK_B,
    KF_STMT_COUNT
};

struct kf_store {
    sqlite3 *db;
    sqlite3_stmt *stmt[KF_STMT_COUNT];
};

/* The cached statement, reset and with bindings cleared, ready to bind. */
int kf_store_stmt(kf_store *st, enum kf_store_stmt id, sqlite3_stmt **out);
/* Map a SQLite result code to a kf error, logging the SQLite message
 * (which names tables and constraints, never bound values). */
int kf_store_sqlite_error(kf_store *st, int rc, const char *what);
/* Step a statement that returns no rows; then reset it. */
int kf_store_step_done(kf_store *st, sqlite3_stmt *s, const char *what);

#endif
