/*
 * The store's group-commit support: deferred commits and kf_store_sync (one
 * fdatasync of the WAL covers every commit made before it began; a failed
 * fdatasync is sticky and later batches fall back to synchronous=FULL),
 * savepoints for one job of a batch, the object generation that caches of
 * object facts rely on, and the two-device counter step of a pair request.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyfleet/log.h"
#include "keyfleet/store.h"
#include "store/store_internal.h" /* to make the WAL's fdatasync fail */

struct fixture {
    char dir[64];
    kf_store *st;
    uint64_t domain_id;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/kf-store-sync-XXXXXX");
    if (!mkdtemp(f->dir) || kf_store_open(f->dir, &f->st) != KF_OK)
        return -1;
    uint8_t key[16] = {1};
    if (kf_store_begin(f->st) != KF_OK ||
        kf_store_domain_create(f->st, "VENDOR", NULL, key, sizeof(key), &f->domain_id) != KF_OK ||
        kf_store_commit(f->st) != KF_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kf_store_close(f->st);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static int pragma_synchronous(kf_store *st)
{
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(kf_store_db(st), "PRAGMA synchronous", -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return v;
}

static void add_device(kf_store *st, uint64_t domain_id, const char *id, uint64_t mkek)
{
    struct kf_device d = {.domain_id = domain_id, .mkek_key_id = mkek, .created_at = 1};
    snprintf(d.id, sizeof(d.id), "%s", id);
    assert_int_equal(kf_store_device_insert(st, &d), KF_OK);
}

static uint64_t counter_of(kf_store *st, const char *id)
{
    struct kf_device d;
    assert_int_equal(kf_store_device_get(st, id, &d), KF_OK);
    return d.counter;
}

/* A deferred commit is NORMAL on the connection, gets a ticket, and is made
 * durable by exactly one fdatasync; ordinary transactions are FULL again. */
static void deferred_commit_then_sync(void **state)
{
    struct fixture *f = *state;
    bool deferred = false;
    uint64_t ticket = 0, ns = 0;
    uint64_t syncs = kf_store_sync_count(f->st, NULL);
    assert_int_equal(kf_store_begin_deferred(f->st, &deferred), KF_OK);
    assert_true(deferred);
    assert_int_equal(pragma_synchronous(f->st), 1); /* NORMAL */
    add_device(f->st, f->domain_id, "meter-1", 1);
    assert_int_equal(kf_store_commit_deferred(f->st, &ticket), KF_OK);
    assert_true(ticket > 0);
    assert_int_equal(kf_store_sync_count(f->st, NULL), syncs); /* nothing synced yet */
    assert_int_equal(kf_store_sync(f->st, ticket), KF_OK);
    assert_int_equal(kf_store_sync_count(f->st, &ns), syncs + 1);
    assert_true(ns > 0);
    /* Covered already: no second fdatasync. */
    assert_int_equal(kf_store_sync(f->st, ticket), KF_OK);
    assert_int_equal(kf_store_sync_count(f->st, NULL), syncs + 1);
    /* An ordinary transaction is synchronous=FULL again. */
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    assert_int_equal(pragma_synchronous(f->st), 2); /* FULL */
    kf_store_rollback(f->st);
    /* And the row is there for a new connection. */
    kf_store_close(f->st);
    assert_int_equal(kf_store_open(f->dir, &f->st), KF_OK);
    assert_int_equal(counter_of(f->st, "meter-1"), 0);
    /* Misuse. */
    assert_int_equal(kf_store_commit_deferred(f->st, &ticket), KF_ERR_STATE);
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    assert_int_equal(kf_store_begin_deferred(f->st, &deferred), KF_ERR_STATE);
    kf_store_rollback(f->st);
}

/* One fdatasync covers every commit made before it began. */
static void one_sync_covers_earlier_commits(void **state)
{
    struct fixture *f = *state;
    uint64_t t[3];
    bool deferred;
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "m-%d", i);
        assert_int_equal(kf_store_begin_deferred(f->st, &deferred), KF_OK);
        add_device(f->st, f->domain_id, id, (uint64_t)i + 1);
        assert_int_equal(kf_store_commit_deferred(f->st, &t[i]), KF_OK);
    }
    assert_true(t[0] < t[1] && t[1] < t[2]);
    uint64_t before = kf_store_sync_count(f->st, NULL);
    assert_int_equal(kf_store_sync(f->st, t[2]), KF_OK);
    assert_int_equal(kf_store_sync(f->st, t[0]), KF_OK);
    assert_int_equal(kf_store_sync(f->st, t[1]), KF_OK);
    assert_int_equal(kf_store_sync_count(f->st, NULL), before + 1);
    /* Ticket 0 (a FULL commit) needs nothing. */
    assert_int_equal(kf_store_sync(f->st, 0), KF_OK);
    assert_int_equal(kf_store_sync_count(f->st, NULL), before + 1);
}

/* Many threads commit (one at a time on the connection) and sync at once:
 * every sync answers, and fdatasyncs are shared. */
struct syncer {
    struct fixture *f;
    pthread_mutex_t *lock;
    int n, failures;
    int index;
};

static void *sync_worker(void *arg)
{
    struct syncer *s = arg;
    for (int i = 0; i < s->n; i++) {
        bool deferred;
        uint64_t ticket = 0;
        char id[32];
        snprintf(id, sizeof(id), "w%d-%d", s->index, i);
        pthread_mutex_lock(s->lock);
        int rc = kf_store_begin_deferred(s->f->st, &deferred);
        if (rc == KF_OK) {
            struct kf_device d = {.domain_id = s->f->domain_id,
                                  .mkek_key_id = (uint64_t)(s->index * 1000 + i + 100),
                                  .created_at = 1};
            snprintf(d.id, sizeof(d.id), "%s", id);
            rc = kf_store_device_insert(s->f->st, &d);
            if (rc == KF_OK)
                rc = kf_store_commit_deferred(s->f->st, &ticket);
            else
                kf_store_rollback(s->f->st);
        }
        pthread_mutex_unlock(s->lock);
        if (rc != KF_OK || ticket == 0 || kf_store_sync(s->f->st, ticket) != KF_OK)
            s->failures++;
    }
    return NULL;
}

static void concurrent_syncs_share_fdatasyncs(void **state)
{
    struct fixture *f = *state;
    enum { THREADS = 8, N = 25 };
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    struct syncer s[THREADS];
    pthread_t t[THREADS];
    uint64_t before = kf_store_sync_count(f->st, NULL);
    for (int i = 0; i < THREADS; i++) {
        s[i] = (struct syncer){.f = f, .lock = &lock, .n = N, .index = i};
        assert_int_equal(pthread_create(&t[i], NULL, sync_worker, &s[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(s[i].failures, 0);
    }
    uint64_t syncs = kf_store_sync_count(f->st, NULL) - before;
    assert_true(syncs >= 1 && syncs <= THREADS * N);
    print_message("      %d deferred commits, %llu fdatasyncs\n", THREADS * N,
                  (unsigned long long)syncs);
    kf_store_close(f->st);
    assert_int_equal(kf_store_open(f->dir, &f->st), KF_OK);
    assert_int_equal(counter_of(f->st, "w7-24"), 0);
}

/* A failed fdatasync is never reported as durable, stays failed, and later
 * batches commit with synchronous=FULL instead. */
static void failed_sync_is_sticky(void **state)
{
    struct fixture *f = *state;
    bool deferred;
    uint64_t ticket;
    assert_int_equal(kf_store_begin_deferred(f->st, &deferred), KF_OK);
    assert_true(deferred);
    add_device(f->st, f->domain_id, "meter-1", 1);
    assert_int_equal(kf_store_commit_deferred(f->st, &ticket), KF_OK);
    /* fdatasync of a pipe fails (EINVAL); the pipe also has a link count of 1
     * only while open, so keep it open: the store must not reopen the WAL. */
    int p[2];
    assert_int_equal(pipe(p), 0);
    pthread_mutex_lock(&f->st->sync_lock);
    int wal = f->st->wal_fd;
    f->st->wal_fd = p[0];
    pthread_mutex_unlock(&f->st->sync_lock);
    assert_int_equal(kf_store_sync(f->st, ticket), KF_ERR_IO);
    assert_int_equal(kf_store_sync(f->st, ticket), KF_ERR_IO); /* sticky */
    pthread_mutex_lock(&f->st->sync_lock);
    f->st->wal_fd = wal;
    pthread_mutex_unlock(&f->st->sync_lock);
    close(p[0]);
    close(p[1]);
    assert_int_equal(kf_store_sync(f->st, ticket), KF_ERR_IO); /* still */
    /* The next batch is an ordinary FULL transaction: ticket 0. */
    assert_int_equal(kf_store_begin_deferred(f->st, &deferred), KF_OK);
    assert_false(deferred);
    assert_int_equal(pragma_synchronous(f->st), 2);
    add_device(f->st, f->domain_id, "meter-2", 2);
    assert_int_equal(kf_store_commit_deferred(f->st, &ticket), KF_OK);
    assert_int_equal(ticket, 0);
    assert_int_equal(kf_store_sync(f->st, ticket), KF_OK);
}

/* In memory there is nothing to sync: ordinary transactions, ticket 0. */
static void in_memory_store_does_not_defer(void **state)
{
    (void)state;
    kf_store *st;
    bool deferred = true;
    uint64_t ticket = 1, id;
    assert_int_equal(kf_store_open(KF_STORE_IN_MEMORY, &st), KF_OK);
    assert_int_equal(kf_store_begin_deferred(st, &deferred), KF_OK);
    assert_false(deferred);
    assert_int_equal(kf_store_domain_create(st, "VENDOR", NULL, NULL, 0, &id), KF_OK);
    assert_int_equal(kf_store_commit_deferred(st, &ticket), KF_OK);
    assert_int_equal(ticket, 0);
    assert_int_equal(kf_store_sync(st, ticket), KF_OK);
    assert_int_equal(kf_store_sync_count(st, NULL), 0);
    kf_store_close(st);
}

/* A job's savepoint: kept, or taken back without touching the others. */
static void savepoints_take_back_one_job(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(kf_store_savepoint(f->st), KF_ERR_STATE); /* outside a transaction */
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    add_device(f->st, f->domain_id, "kept-1", 1);
    assert_int_equal(kf_store_savepoint(f->st), KF_OK);
    add_device(f->st, f->domain_id, "kept-2", 2);
    kf_store_savepoint_end(f->st, true);
    assert_int_equal(kf_store_savepoint(f->st), KF_OK);
    add_device(f->st, f->domain_id, "gone-3", 3);
    kf_store_savepoint_end(f->st, false);
    assert_int_equal(kf_store_savepoint(f->st), KF_OK);
    add_device(f->st, f->domain_id, "kept-4", 4);
    kf_store_savepoint_end(f->st, true);
    assert_int_equal(kf_store_commit(f->st), KF_OK);
    struct kf_device d;
    assert_int_equal(kf_store_device_get(f->st, "kept-1", &d), KF_OK);
    assert_int_equal(kf_store_device_get(f->st, "kept-2", &d), KF_OK);
    assert_int_equal(kf_store_device_get(f->st, "gone-3", &d), KF_ERR_DEVICE_UNKNOWN);
    assert_int_equal(kf_store_device_get(f->st, "kept-4", &d), KF_OK);
}

/* The generation moves on every object write and every rollback, and on
 * nothing else (inserts, reads, commits). */
static void object_generation_moves_on_writes_and_rollbacks(void **state)
{
    struct fixture *f = *state;
    struct kf_object o = {
        .domain_id = f->domain_id, .object_type = KF_OBJ_SYMMETRIC_KEY, .state = 1, .version = 1};
    uint8_t blob[8] = {9};
    o.material = blob;
    o.material_len = sizeof(blob);
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    assert_int_equal(kf_store_next_key_id(f->st, f->domain_id, &o.key_id), KF_OK);
    uint64_t g = kf_store_object_generation(f->st);
    assert_int_equal(kf_store_object_insert(f->st, &o), KF_OK);
    assert_int_equal(kf_store_commit(f->st), KF_OK);
    struct kf_object got = {0};
    assert_int_equal(kf_store_object_get(f->st, f->domain_id, o.key_id, &got), KF_OK);
    kf_object_clear(&got);
    assert_int_equal(kf_store_object_generation(f->st), g);
    o.state = 2;
    assert_int_equal(kf_store_object_update(f->st, &o), KF_OK);
    assert_true(kf_store_object_generation(f->st) > g);
    g = kf_store_object_generation(f->st);
    assert_int_equal(kf_store_object_destroy_material(f->st, f->domain_id, o.key_id), KF_OK);
    assert_true(kf_store_object_generation(f->st) > g);
    g = kf_store_object_generation(f->st);
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    kf_store_rollback(f->st);
    assert_true(kf_store_object_generation(f->st) > g);
    g = kf_store_object_generation(f->st);
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    assert_int_equal(kf_store_savepoint(f->st), KF_OK);
    kf_store_savepoint_end(f->st, true);
    assert_int_equal(kf_store_object_generation(f->st), g);
    assert_int_equal(kf_store_savepoint(f->st), KF_OK);
    kf_store_savepoint_end(f->st, false);
    assert_true(kf_store_object_generation(f->st) > g);
    assert_int_equal(kf_store_commit(f->st), KF_OK);
    g = kf_store_object_generation(f->st);
    assert_int_equal(kf_store_object_delete(f->st, f->domain_id, o.key_id), KF_OK);
    assert_true(kf_store_object_generation(f->st) > g);
}

/* C_A + 1 and C_B + 1 in the transaction; refusals. */
static void pair_counters_step_together(void **state)
{
    struct fixture *f = *state;
    add_device(f->st, f->domain_id, "meter-1", 1);
    add_device(f->st, f->domain_id, "base-1", 2);
    const char *ids[2] = {"meter-1", "base-1"};
    uint64_t c[2] = {0, 0};
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    assert_int_equal(kf_store_device_next_counters(f->st, ids, c), KF_OK);
    assert_int_equal(c[0], 1);
    assert_int_equal(c[1], 1);
    assert_int_equal(kf_store_device_next_counters(f->st, ids, c), KF_OK);
    assert_int_equal(c[0], 2);
    assert_int_equal(c[1], 2);
    assert_int_equal(kf_store_commit(f->st), KF_OK);
    assert_int_equal(counter_of(f->st, "meter-1"), 2);
    assert_int_equal(counter_of(f->st, "base-1"), 2);
    /* Unknown device; the same device twice. */
    const char *ghost[2] = {"meter-1", "ghost"};
    const char *same[2] = {"meter-1", "meter-1"};
    const char *bad[2] = {"meter-1", ""};
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    assert_int_equal(kf_store_device_next_counters(f->st, ghost, c), KF_ERR_DEVICE_UNKNOWN);
    assert_int_equal(kf_store_device_next_counters(f->st, same, c), KF_ERR_ARG);
    assert_int_equal(kf_store_device_next_counters(f->st, bad, c), KF_ERR_DEVICE_UNKNOWN);
    kf_store_rollback(f->st); /* the caller takes back a half-done step */
    assert_int_equal(counter_of(f->st, "meter-1"), 2);
    /* At the counter's end: refused, nothing wraps or turns into a float. */
    assert_int_equal(kf_store_device_set_counter(f->st, "base-1", (uint64_t)INT64_MAX), KF_OK);
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    assert_int_equal(kf_store_device_next_counters(f->st, ids, c), KF_ERR_DEVICE_COUNTER);
    kf_store_rollback(f->st);
    assert_int_equal(counter_of(f->st, "base-1"), (uint64_t)INT64_MAX);
    assert_int_equal(counter_of(f->st, "meter-1"), 2);
}

int main(void)
{
    kf_log_open(NULL, KF_LOG_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(deferred_commit_then_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(one_sync_covers_earlier_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_syncs_share_fdatasyncs, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_sync_is_sticky, setup, teardown),
        cmocka_unit_test(in_memory_store_does_not_defer),
        cmocka_unit_test_setup_teardown(savepoints_take_back_one_job, setup, teardown),
        cmocka_unit_test_setup_teardown(object_generation_moves_on_writes_and_rollbacks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(pair_counters_step_together, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
