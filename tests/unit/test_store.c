/* Unit tests for the store: schema, domains, key IDs, managed objects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfleet/lifecycle.h"
#include "keyfleet/store.h"

struct fixture {
    char dir[64];
    char db_path[128];
    kf_store *st;
};

static void remove_db_files(const struct fixture *f)
{
    static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
    char p[160];
    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", f->db_path, suffix[i]);
        unlink(p);
    }
    rmdir(f->dir);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/kf-store-test-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->db_path, sizeof(f->db_path), "%s/%s", f->dir, KF_STORE_DB_NAME);
    if (kf_store_open(f->dir, &f->st) != KF_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kf_store_close(f->st);
    remove_db_files(f);
    free(f);
    return 0;
}

/* Run SQL on a separate raw connection (what an attacker or old version could do). */
static int raw_exec(const struct fixture *f, const char *sql)
{
    sqlite3 *db;
    if (sqlite3_open(f->db_path, &db) != SQLITE_OK)
        return -1;
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

static uint64_t make_domain(kf_store *st, const char *name)
{
    static const uint8_t wrapped[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    uint64_t id = 0;
    assert_int_equal(kf_store_domain_create(st, name, NULL, wrapped, sizeof(wrapped), &id), KF_OK);
    assert_true(id > 0);
    return id;
}

/* ---- schema ---- */

static void open_creates_private_wal_database(void **state)
{
    struct fixture *f = *state;
    struct stat sb;
    assert_int_equal(stat(f->db_path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    sqlite3_stmt *s;
    sqlite3 *db = kf_store_db(f->st);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA synchronous", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), 2); /* FULL */
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA foreign_keys", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), 1);
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_prepare_v2(
                         db, "SELECT version FROM schema_version WHERE module = 'store'", -1, &s,
                         NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), kf_store_schema_version());
    sqlite3_finalize(s);
}

static void reopen_keeps_data(void **state)
{
    struct fixture *f = *state;
    uint64_t id = make_domain(f->st, "VENDOR");
    kf_store_close(f->st);
    f->st = NULL;
    assert_int_equal(kf_store_open(f->dir, &f->st), KF_OK);
    struct kf_domain d;
    assert_int_equal(kf_store_domain_get(f->st, "VENDOR", &d), KF_OK);
    assert_int_equal(d.id, id);
    kf_domain_clear(&d);
}

static void newer_schema_is_refused(void **state)
{
    struct fixture *f = *state;
    kf_store_close(f->st);
    f->st = NULL;
    assert_int_equal(raw_exec(f, "UPDATE schema_version SET version = 999 WHERE module = 'store'"),
                     SQLITE_OK);
    kf_store *st = NULL;
    assert_int_equal(kf_store_open(f->dir, &st), KF_ERR_SCHEMA);
    assert_null(st);
}

static void open_refuses_missing_directory(void **state)
{
    (void)state;
    kf_store *st = NULL;
    assert_int_not_equal(kf_store_open("/nonexistent/keyfleet-dir", &st), KF_OK);
    assert_null(st);
}

/* ---- domains ---- */

static void domain_names_are_checked(void **state)
{
    struct fixture *f = *state;
    char long_name[KF_DOMAIN_NAME_MAX + 2];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0'; /* 65 characters */
    const char *bad[] = {"", "a/b", "a b", "caf\xc3\xa9", "x;DROP", long_name};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kf_store_domain_create(f->st, bad[i], NULL, NULL, 0, NULL), KF_ERR_NAME);
    long_name[KF_DOMAIN_NAME_MAX] = '\0'; /* exactly 64 */
    assert_true(kf_domain_name_valid(long_name));
    assert_true(kf_domain_name_valid("USPS.de_1-x"));
    assert_int_equal(kf_store_domain_create(f->st, long_name, NULL, NULL, 0, NULL), KF_OK);
}

static void domain_duplicates_and_missing_parents_are_refused(void **state)
{
    struct fixture *f = *state;
    uint64_t vendor = make_domain(f->st, "VENDOR");
    assert_int_equal(kf_store_domain_create(f->st, "VENDOR", NULL, NULL, 0, NULL), KF_ERR_EXISTS);
    assert_int_equal(kf_store_domain_create(f->st, "DE", "EARTH", NULL, 0, NULL), KF_ERR_DOMAIN);
    assert_int_equal(kf_store_domain_create(f->st, "DE", "bad/parent", NULL, 0, NULL),
                     KF_ERR_DOMAIN);
    uint64_t sub = 0;
    assert_int_equal(kf_store_domain_create(f->st, "VENDOR.DE", "VENDOR", NULL, 0, &sub), KF_OK);
    assert_true(sub > vendor);

    struct kf_domain d;
    assert_int_equal(kf_store_domain_get_by_id(f->st, sub, &d), KF_OK);
    assert_string_equal(d.name, "VENDOR.DE");
    assert_int_equal(d.parent_id, vendor);
    assert_null(d.wrapped_key);
    kf_domain_clear(&d);
    assert_int_equal(kf_store_domain_get(f->st, "NOPE", &d), KF_ERR_DOMAIN);
    assert_int_equal(kf_store_domain_get_by_id(f->st, 9999, &d), KF_ERR_DOMAIN);
}

static void domain_key_is_stored_and_replaced(void **state)
{
    struct fixture *f = *state;
    uint64_t id = make_domain(f->st, "VENDOR");
    struct kf_domain d;
    assert_int_equal(kf_store_domain_get(f->st, "VENDOR", &d), KF_OK);
    assert_int_equal(d.wrapped_key_len, 8);
    assert_int_equal(d.wrapped_key[7], 0x08);
    assert_true(d.created > 0);
    assert_int_equal(d.last_key_id, 0);
    kf_domain_clear(&d);
    const uint8_t rewrapped[3] = {0xaa, 0xbb, 0xcc};
    assert_int_equal(kf_store_domain_set_key(f->st, id, rewrapped, 3), KF_OK);
    assert_int_equal(kf_store_domain_set_key(f->st, id + 100, rewrapped, 3), KF_ERR_DOMAIN);
    assert_int_equal(kf_store_domain_get_by_id(f->st, id, &d), KF_OK);
    assert_memory_equal(d.wrapped_key, rewrapped, 3);
    kf_domain_clear(&d);
}

static int count_domains(void *ctx, const struct kf_domain *d)
{
    (void)d;
    (*(int *)ctx)++;
    return KF_OK;
}

static void domain_list_visits_all(void **state)
{
    struct fixture *f = *state;
    make_domain(f->st, "A");
    make_domain(f->st, "B");
    make_domain(f->st, "C");
    int n = 0;
    assert_int_equal(kf_store_domain_list(f->st, count_domains, &n), KF_OK);
    assert_int_equal(n, 3);
}

/* ---- key IDs ---- */

static uint64_t next_id(kf_store *st, uint64_t domain)
{
    uint64_t id = 0;
    assert_int_equal(kf_store_begin(st), KF_OK);
    assert_int_equal(kf_store_next_key_id(st, domain, &id), KF_OK);
    assert_int_equal(kf_store_commit(st), KF_OK);
    return id;
}

static void key_ids_count_per_domain(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_domain(f->st, "A"), b = make_domain(f->st, "B");
    assert_int_equal(next_id(f->st, a), 1);
    assert_int_equal(next_id(f->st, a), 2);
    assert_int_equal(next_id(f->st, b), 1);
    assert_int_equal(next_id(f->st, a), 3);
    uint64_t id;
    assert_int_equal(kf_store_reserve_key_id(f->st, b, &id), KF_OK);
    assert_int_equal(id, 2);
    assert_int_equal(kf_store_reserve_key_id(f->st, 777, &id), KF_ERR_DOMAIN);
}

static void key_id_calls_check_transaction_mode(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_domain(f->st, "A");
    uint64_t id;
    /* next_key_id outside a transaction would autocommit: refused. */
    assert_int_equal(kf_store_next_key_id(f->st, a, &id), KF_ERR_STATE);
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    /* reserve inside the caller's transaction could be rolled back: refused. */
    assert_int_equal(kf_store_reserve_key_id(f->st, a, &id), KF_ERR_STATE);
    assert_int_equal(kf_store_begin(f->st), KF_ERR_STATE);
    assert_int_equal(kf_store_next_key_id(f->st, 555, &id), KF_ERR_DOMAIN);
    kf_store_rollback(f->st);
    assert_int_equal(kf_store_commit(f->st), KF_ERR_STATE);
}

static void sample_object(struct kf_object *o, uint64_t domain, uint64_t key_id)
{
    memset(o, 0, sizeof(*o));
    o->domain_id = domain;
    o->key_id = key_id;
    o->object_type = KF_OBJ_SYMMETRIC_KEY;
    o->state = KF_STATE_PRE_ACTIVE;
    o->crypto_alg = 3; /* AES */
    o->crypto_length = 256;
    o->usage_mask = 0x0c;
    o->key_format = 1;
    snprintf(o->name, sizeof(o->name), "key-%llu", (unsigned long long)key_id);
    o->version = 1;
    o->initial_date = 1700000000;
    o->last_change_date = 1700000001;
}

static void reserved_id_is_not_reissued_after_rollback(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_domain(f->st, "A");
    uint64_t first, second;
    assert_int_equal(kf_store_reserve_key_id(f->st, a, &first), KF_OK);
    assert_int_equal(first, 1);
    struct kf_object o;
    sample_object(&o, a, first);
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    assert_int_equal(kf_store_object_insert(f->st, &o), KF_OK);
    kf_store_rollback(f->st);
    assert_int_equal(kf_store_object_get(f->st, a, first, &o), KF_ERR_OBJECT);
    assert_int_equal(kf_store_reserve_key_id(f->st, a, &second), KF_OK);
    assert_true(second > first);

    /* Documented contrast: next_key_id's increment is part of the caller's
     * transaction, so a rolled-back, never-acknowledged ID is issued again. */
    uint64_t in_tx, again;
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    assert_int_equal(kf_store_next_key_id(f->st, a, &in_tx), KF_OK);
    kf_store_rollback(f->st);
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    assert_int_equal(kf_store_next_key_id(f->st, a, &again), KF_OK);
    assert_int_equal(kf_store_commit(f->st), KF_OK);
    assert_int_equal(again, in_tx);
    assert_true(again > second);
}

static void key_id_counter_never_goes_back(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_domain(f->st, "A");
    uint64_t id;
    assert_int_equal(kf_store_reserve_key_id(f->st, a, &id), KF_OK);
    assert_int_equal(kf_store_reserve_key_id(f->st, a, &id), KF_OK);
    /* Even raw SQL cannot lower the high-water mark. */
    assert_int_not_equal(raw_exec(f, "UPDATE domain SET last_key_id = 0"), SQLITE_OK);
    /* Deleting the object does not free its ID either. */
    struct kf_object o;
    sample_object(&o, a, id);
    assert_int_equal(kf_store_object_insert(f->st, &o), KF_OK);
    assert_int_equal(kf_store_object_delete(f->st, a, id), KF_OK);
    assert_int_equal(kf_store_object_delete(f->st, a, id), KF_ERR_OBJECT);
    uint64_t next;
    assert_int_equal(kf_store_reserve_key_id(f->st, a, &next), KF_OK);
    assert_int_equal(next, id + 1);
}

/* ---- objects ---- */

static void object_round_trips_every_field(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_domain(f->st, "A");
    uint64_t id;
    assert_int_equal(kf_store_reserve_key_id(f->st, a, &id), KF_OK);
    struct kf_object o, got;
    sample_object(&o, a, id);
    uint8_t blob[40], attrs[16];
    memset(blob, 0x5a, sizeof(blob));
    memset(attrs, 0x42, sizeof(attrs));
    o.material = blob;
    o.material_len = sizeof(blob);
    o.attributes = attrs;
    o.attributes_len = sizeof(attrs);
    o.activation_date = 11;
    o.deactivation_date = 12;
    o.destroy_date = 13;
    o.compromise_date = 14;
    o.compromise_occurrence_date = 15;
    o.revocation_reason = 2;
    snprintf(o.revocation_message, sizeof(o.revocation_message), "lost");
    o.crypto_length = -1;
    assert_int_equal(kf_store_object_insert(f->st, &o), KF_OK);
    assert_int_equal(kf_store_object_insert(f->st, &o), KF_ERR_EXISTS);
    assert_int_equal(kf_store_object_get(f->st, a, id, &got), KF_OK);
    assert_int_equal(got.domain_id, a);
    assert_int_equal(got.key_id, id);
    assert_int_equal(got.object_type, o.object_type);
    assert_int_equal(got.state, o.state);
    assert_int_equal(got.crypto_alg, 3);
    assert_int_equal(got.crypto_length, -1);
    assert_int_equal(got.usage_mask, 0x0c);
    assert_int_equal(got.key_format, 1);
    assert_string_equal(got.name, o.name);
    assert_int_equal(got.version, 1);
    assert_int_equal(got.initial_date, 1700000000);
    assert_int_equal(got.activation_date, 11);
    assert_int_equal(got.deactivation_date, 12);
    assert_int_equal(got.destroy_date, 13);
    assert_int_equal(got.compromise_date, 14);
    assert_int_equal(got.compromise_occurrence_date, 15);
    assert_int_equal(got.last_change_date, 1700000001);
    assert_int_equal(got.revocation_reason, 2);
    assert_string_equal(got.revocation_message, "lost");
    assert_int_equal(got.material_len, sizeof(blob));
    assert_memory_equal(got.material, blob, sizeof(blob));
    assert_int_equal(got.attributes_len, sizeof(attrs));
    assert_memory_equal(got.attributes, attrs, sizeof(attrs));
    kf_object_clear(&got);
    assert_null(got.material);
}

static void object_insert_refusals(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_domain(f->st, "A");
    struct kf_object o;
    sample_object(&o, a, 1); /* never reserved */
    assert_int_equal(kf_store_object_insert(f->st, &o), KF_ERR_ARG);
    sample_object(&o, a, 0);
    assert_int_equal(kf_store_object_insert(f->st, &o), KF_ERR_ARG);
    sample_object(&o, 4242, 1); /* no such domain */
    assert_int_equal(kf_store_object_insert(f->st, &o), KF_ERR_DOMAIN);
}

static void objects_never_cross_domains(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_domain(f->st, "A"), b = make_domain(f->st, "B");
    uint64_t id_a, id_b;
    assert_int_equal(kf_store_reserve_key_id(f->st, a, &id_a), KF_OK);
    assert_int_equal(kf_store_reserve_key_id(f->st, b, &id_b), KF_OK);
    assert_int_equal(id_a, 1);
    assert_int_equal(id_b, 1);
    struct kf_object o, got;
    sample_object(&o, a, id_a);
    assert_int_equal(kf_store_object_insert(f->st, &o), KF_OK);
    /* Same key ID, other domain: not found, never A's object. */
    assert_int_equal(kf_store_object_get(f->st, b, id_a, &got), KF_ERR_OBJECT);
    o.domain_id = b;
    o.state = KF_STATE_ACTIVE;
    assert_int_equal(kf_store_object_update(f->st, &o), KF_ERR_OBJECT);
    assert_int_equal(kf_store_object_destroy_material(f->st, b, id_a), KF_ERR_OBJECT);
    assert_int_equal(kf_store_object_delete(f->st, b, id_a), KF_ERR_OBJECT);
    assert_int_equal(kf_store_object_get(f->st, a, id_a, &got), KF_OK);
    assert_int_equal(got.state, KF_STATE_PRE_ACTIVE);
    kf_object_clear(&got);
}

static void object_update_keeps_material_unless_given(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_domain(f->st, "A");
    uint64_t id;
    assert_int_equal(kf_store_reserve_key_id(f->st, a, &id), KF_OK);
    struct kf_object o, got;
    sample_object(&o, a, id);
    uint8_t blob[4] = {1, 2, 3, 4};
    o.material = blob;
    o.material_len = sizeof(blob);
    assert_int_equal(kf_store_object_insert(f->st, &o), KF_OK);
    o.material = NULL;
    o.material_len = 0;
    o.state = KF_STATE_ACTIVE;
    o.activation_date = 99;
    assert_int_equal(kf_store_object_update(f->st, &o), KF_OK);
    assert_int_equal(kf_store_object_get(f->st, a, id, &got), KF_OK);
    assert_int_equal(got.state, KF_STATE_ACTIVE);
    assert_int_equal(got.activation_date, 99);
    assert_memory_equal(got.material, blob, sizeof(blob));
    kf_object_clear(&got);
    uint8_t rewrapped[6] = {9, 9, 9, 9, 9, 9};
    o.material = rewrapped;
    o.material_len = sizeof(rewrapped);
    o.version = 2;
    assert_int_equal(kf_store_object_update(f->st, &o), KF_OK);
    assert_int_equal(kf_store_object_get(f->st, a, id, &got), KF_OK);
    assert_int_equal(got.version, 2);
    assert_int_equal(got.material_len, sizeof(rewrapped));
    assert_memory_equal(got.material, rewrapped, sizeof(rewrapped));
    kf_object_clear(&got);
}

struct collected {
    uint64_t ids[64];
    size_t n;
    size_t stop_after;
    bool saw_material;
};

static int collect(void *ctx, const struct kf_object *o)
{
    struct collected *c = ctx;
    c->ids[c->n++] = o->key_id;
    if (o->material)
        c->saw_material = true;
    return c->stop_after && c->n >= c->stop_after ? 1 : KF_OK;
}

static int fail_cb(void *ctx, const struct kf_object *o)
{
    (void)ctx;
    (void)o;
    return KF_ERR_INTERNAL;
}

static void object_list_filters_and_pages(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_domain(f->st, "A"), b = make_domain(f->st, "B");
    uint8_t blob[2] = {7, 7};
    /* ids 1..10: even ids are secret data, ids 1..3 Active, names "k<id % 3>" */
    for (int i = 1; i <= 10; i++) {
        uint64_t id;
        assert_int_equal(kf_store_reserve_key_id(f->st, a, &id), KF_OK);
        struct kf_object o;
        sample_object(&o, a, id);
        o.object_type = id % 2 == 0 ? KF_OBJ_SECRET_DATA : KF_OBJ_SYMMETRIC_KEY;
        o.state = id <= 3 ? KF_STATE_ACTIVE : KF_STATE_PRE_ACTIVE;
        snprintf(o.name, sizeof(o.name), "k%d", (int)(id % 3));
        o.material = blob;
        o.material_len = sizeof(blob);
        assert_int_equal(kf_store_object_insert(f->st, &o), KF_OK);
    }
    uint64_t idb;
    assert_int_equal(kf_store_reserve_key_id(f->st, b, &idb), KF_OK);
    struct kf_object ob;
    sample_object(&ob, b, idb);
    assert_int_equal(kf_store_object_insert(f->st, &ob), KF_OK);

    struct collected c = {0};
    assert_int_equal(kf_store_object_list(f->st, a, NULL, collect, &c), KF_OK);
    assert_int_equal(c.n, 10);
    assert_false(c.saw_material);
    for (size_t i = 0; i < c.n; i++)
        assert_int_equal(c.ids[i], i + 1);

    struct kf_object_filter filt = {.object_type = KF_OBJ_SECRET_DATA};
    memset(&c, 0, sizeof(c));
    assert_int_equal(kf_store_object_list(f->st, a, &filt, collect, &c), KF_OK);
    assert_int_equal(c.n, 5);
    assert_int_equal(c.ids[0], 2);

    filt = (struct kf_object_filter){.state = KF_STATE_ACTIVE, .with_material = true};
    memset(&c, 0, sizeof(c));
    assert_int_equal(kf_store_object_list(f->st, a, &filt, collect, &c), KF_OK);
    assert_int_equal(c.n, 3);
    assert_true(c.saw_material);

    filt = (struct kf_object_filter){.name = "k1", .object_type = KF_OBJ_SYMMETRIC_KEY};
    memset(&c, 0, sizeof(c));
    assert_int_equal(kf_store_object_list(f->st, a, &filt, collect, &c), KF_OK);
    assert_int_equal(c.n, 2); /* ids 1 and 7 */
    assert_int_equal(c.ids[0], 1);
    assert_int_equal(c.ids[1], 7);

    filt = (struct kf_object_filter){.offset = 3, .max = 4};
    memset(&c, 0, sizeof(c));
    assert_int_equal(kf_store_object_list(f->st, a, &filt, collect, &c), KF_OK);
    assert_int_equal(c.n, 4);
    assert_int_equal(c.ids[0], 4);
    assert_int_equal(c.ids[3], 7);

    memset(&c, 0, sizeof(c));
    c.stop_after = 2;
    assert_int_equal(kf_store_object_list(f->st, a, NULL, collect, &c), KF_OK);
    assert_int_equal(c.n, 2);
    assert_int_equal(kf_store_object_list(f->st, a, NULL, fail_cb, NULL), KF_ERR_INTERNAL);

    memset(&c, 0, sizeof(c));
    assert_int_equal(kf_store_object_list(f->st, b, NULL, collect, &c), KF_OK);
    assert_int_equal(c.n, 1);
}

static bool file_contains(const char *path, const uint8_t *pat, size_t n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return false;
    static uint8_t data[4 << 20];
    size_t len = fread(data, 1, sizeof(data), fp);
    fclose(fp);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(data + i, pat, n) == 0)
            return true;
    return false;
}

static void destroy_material_leaves_no_copy_on_disk(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_domain(f->st, "A");
    uint64_t id;
    assert_int_equal(kf_store_reserve_key_id(f->st, a, &id), KF_OK);
    uint8_t blob[48];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(0xc0 ^ (i * 37));
    struct kf_object o, got;
    sample_object(&o, a, id);
    o.material = blob;
    o.material_len = sizeof(blob);
    assert_int_equal(kf_store_object_insert(f->st, &o), KF_OK);
    char wal[160];
    snprintf(wal, sizeof(wal), "%s-wal", f->db_path);
    /* The test can fail: the blob is on disk before the destroy. */
    assert_true(file_contains(f->db_path, blob, sizeof(blob)) ||
                file_contains(wal, blob, sizeof(blob)));

    assert_int_equal(kf_store_object_destroy_material(f->st, a, id), KF_OK);
    assert_int_equal(kf_store_object_get(f->st, a, id, &got), KF_OK);
    assert_null(got.material);
    assert_int_equal(got.material_len, 0);
    kf_object_clear(&got);
    assert_false(file_contains(f->db_path, blob, sizeof(blob)));
    assert_false(file_contains(wal, blob, sizeof(blob)));

    /* Inside a transaction it cannot checkpoint; kf_store_checkpoint refuses there. */
    assert_int_equal(kf_store_begin(f->st), KF_OK);
    assert_int_equal(kf_store_checkpoint(f->st), KF_ERR_STATE);
    kf_store_rollback(f->st);
    assert_int_equal(kf_store_object_destroy_material(f->st, a, id + 1), KF_ERR_OBJECT);
}

static void uid_formats_and_parses(void **state)
{
    (void)state;
    char uid[KF_UID_MAX], name[KF_DOMAIN_NAME_MAX + 1];
    uint64_t id;
    assert_int_equal(kf_object_uid_format("VENDOR", 42, uid, sizeof(uid)), KF_OK);
    assert_string_equal(uid, "VENDOR/42");
    assert_int_equal(kf_object_uid_parse(uid, name, &id), KF_OK);
    assert_string_equal(name, "VENDOR");
    assert_int_equal(id, 42);
    assert_int_equal(kf_object_uid_format("VENDOR", 42, uid, 5), KF_ERR_NOSPACE);
    assert_int_equal(kf_object_uid_format("bad/name", 1, uid, sizeof(uid)), KF_ERR_NAME);
    const char *bad[] = {"VENDOR", "/1", "VENDOR/", "VENDOR/0", "VENDOR/01", "VENDOR/-1",
                         "VENDOR/1x", "VEN DOR/1", "VENDOR/9223372036854775808", "a/b/1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kf_object_uid_parse(bad[i], name, &id), KF_ERR_FORMAT);
    assert_int_equal(kf_object_uid_parse("X/9223372036854775807", name, &id), KF_OK);
    assert_int_equal(id, 9223372036854775807ull);
}

/* ---- concurrency ---- */

#define PER_THREAD 40

struct worker {
    const char *dir;
    uint64_t domain;
    uint64_t ids[PER_THREAD];
    int err;
};

static void *insert_worker(void *arg)
{
    struct worker *w = arg;
    kf_store *st;
    w->err = kf_store_open(w->dir, &st);
    for (int i = 0; i < PER_THREAD && w->err == KF_OK; i++) {
        struct kf_object o;
        uint64_t id = 0;
        w->err = kf_store_begin(st);
        if (w->err == KF_OK)
            w->err = kf_store_next_key_id(st, w->domain, &id);
        sample_object(&o, w->domain, id);
        if (w->err == KF_OK)
            w->err = kf_store_object_insert(st, &o);
        if (w->err == KF_OK)
            w->err = kf_store_commit(st);
        if (w->err != KF_OK)
            kf_store_rollback(st);
        w->ids[i] = id;
    }
    if (st)
        kf_store_close(st);
    return NULL;
}

static void two_connections_get_unique_increasing_ids(void **state)
{
    struct fixture *f = *state;
    uint64_t a = make_domain(f->st, "A");
    struct worker w[2] = {{.dir = f->dir, .domain = a}, {.dir = f->dir, .domain = a}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, insert_worker, &w[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    bool seen[2 * PER_THREAD + 1] = {false};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(w[i].err, KF_OK);
        for (int j = 0; j < PER_THREAD; j++) {
            uint64_t id = w[i].ids[j];
            assert_true(id >= 1 && id <= 2 * PER_THREAD);
            assert_false(seen[id]);
            seen[id] = true;
            if (j > 0)
                assert_true(id > w[i].ids[j - 1]);
        }
    }
    struct kf_domain d;
    assert_int_equal(kf_store_domain_get_by_id(f->st, a, &d), KF_OK);
    assert_int_equal(d.last_key_id, 2 * PER_THREAD);
    kf_domain_clear(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(open_creates_private_wal_database, setup, teardown),
        cmocka_unit_test_setup_teardown(reopen_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(newer_schema_is_refused, setup, teardown),
        cmocka_unit_test(open_refuses_missing_directory),
        cmocka_unit_test_setup_teardown(domain_names_are_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(domain_duplicates_and_missing_parents_are_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(domain_key_is_stored_and_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(domain_list_visits_all, setup, teardown),
        cmocka_unit_test_setup_teardown(key_ids_count_per_domain, setup, teardown),
        cmocka_unit_test_setup_teardown(key_id_calls_check_transaction_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(reserved_id_is_not_reissued_after_rollback, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(key_id_counter_never_goes_back, setup, teardown),
        cmocka_unit_test_setup_teardown(object_round_trips_every_field, setup, teardown),
        cmocka_unit_test_setup_teardown(object_insert_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(objects_never_cross_domains, setup, teardown),
        cmocka_unit_test_setup_teardown(object_update_keeps_material_unless_given, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(object_list_filters_and_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(destroy_material_leaves_no_copy_on_disk, setup, teardown),
        cmocka_unit_test(uid_formats_and_parses),
        cmocka_unit_test_setup_teardown(two_connections_get_unique_increasing_ids, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
