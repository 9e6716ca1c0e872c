/* Shared between the store's files: the connection and its statement cache. */
#ifndef KEYFLEET_STORE_INTERNAL_H
#define KEYFLEET_STORE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

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
    KF_STMT_DEVICE_NEXT_COUNTER,
    /* one job of a group-committed batch (kf_store_savepoint) */
    KF_STMT_SAVEPOINT,
    KF_STMT_SAVEPOINT_RELEASE,
    KF_STMT_SAVEPOINT_ROLLBACK,
    /* manufacturing: domains, roles, the archive (mfg.c) */
    KF_STMT_MFG_DOMAIN_INSERT,
    KF_STMT_MFG_DOMAIN_GET,
    KF_STMT_MFG_DOMAIN_LIST,
    KF_STMT_MFG_NEXT_KEY_ID,
    KF_STMT_MFG_OAK_SEEN,
    KF_STMT_MFG_ROLE_INSERT,
    KF_STMT_MFG_ROLE_GET,
    KF_STMT_MFG_ROLE_LIST,
    KF_STMT_MFG_KEY_INSERT,
    KF_STMT_MFG_KEY_GET,
    KF_STMT_MFG_KEY_BY_MSN,
    KF_STMT_MFG_KEY_OPEN_FOR_STEEL,
    KF_STMT_MFG_KEY_UPDATE,
    KF_STMT_MFG_KEY_LIST,
    KF_STMT_COUNT
};

struct kf_store {
    sqlite3 *db;
    sqlite3_stmt *stmt[KF_STMT_COUNT];
    bool in_memory;
    char wal_path[4200]; /* <dir>/keyfleet.db-wal */
    char dir[4096];
    /* synchronous=NORMAL is set on the connection (a deferred-sync batch ran last);
     * kf_store_begin puts FULL back before any other transaction. */
    bool relaxed;
    /* Bumped (before the write) by every write to the object table and by
     * every rollback: the service's caches of object facts are valid while it
     * has not moved. Atomic: readers on other threads may look at it. */
    atomic_uint_fast64_t object_generation;
    /* Deferred sync (kf_store_commit_deferred / kf_store_sync), all under
     * sync_lock except committed (the tickets handed out, atomic). One caller
     * at a time runs fdatasync (the syncer); the others wait on their own
     * semaphores in sync_waiters, and the syncer either answers them or
     * hands the syncing on to one of them. */
    int wal_fd;
    atomic_uint_fast64_t committed;
    pthread_mutex_t sync_lock;
    struct store_sync_waiter *sync_waiters;
    struct store_sync_waiter *idle_waiters; /* kf_store_sync_wait_idle */
    bool syncing;        /* an fdatasync round is under way (one at a time) */
    bool sync_failed; /* sticky: after a failed fdatasync nothing is trusted to the page cache */
    uint64_t synced;  /* every ticket up to this one is on stable storage */
    uint64_t syncs;   /* fdatasync calls made, for tests and benchmarks */
    uint64_t sync_ns; /* time spent in them */
};

/* The cached statement, reset and with bindings cleared, ready to bind. */
int kf_store_stmt(kf_store *st, enum kf_store_stmt id, sqlite3_stmt **out);
/* Map a SQLite result code to a kf error, logging the SQLite message
 * (which names tables and constraints, never bound values). */
int kf_store_sqlite_error(kf_store *st, int rc, const char *what);
/* Step a statement that returns no rows; then reset it. */
int kf_store_step_done(kf_store *st, sqlite3_stmt *s, const char *what);
/* Step a listing statement to its end, calling row(s, ctx) on each row; the
 * first nonzero result stops the walk (a positive one, the caller's "stop
 * here", counts as KF_OK). Then reset it. */
int kf_store_each_row(kf_store *st, sqlite3_stmt *s, const char *what,
                      int (*row)(sqlite3_stmt *s, void *ctx), void *ctx);

#endif
