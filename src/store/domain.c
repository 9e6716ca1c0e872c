/* Security domains and their key ID counters. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyfleet/log.h"
#include "store_internal.h"

bool kf_domain_name_valid(const char *name)
{
    if (!name)
        return false;
    size_t n = 0;
    for (; name[n]; n++) {
        char c = name[n];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok || n >= KF_DOMAIN_NAME_MAX)
            return false;
    }
    return n >= 1;
}

void kf_domain_clear(struct kf_domain *d)
{
    if (!d)
        return;
    free(d->wrapped_key);
    memset(d, 0, sizeof(*d));
}

/* Columns: id, name, parent_id, created, last_key_id, wrapped_key. */
static int read_domain_row(sqlite3_stmt *s, struct kf_domain *out)
{
    memset(out, 0, sizeof(*out));
    out->id = (uint64_t)sqlite3_column_int64(s, 0);
    const unsigned char *name = sqlite3_column_text(s, 1);
    size_t name_len = (size_t)sqlite3_column_bytes(s, 1);
    KF_ENSURE(name && name_len <= KF_DOMAIN_NAME_MAX, KF_ERR_INTERNAL);
    memcpy(out->name, name, name_len);
    out->parent_id = (uint64_t)sqlite3_column_int64(s, 2);
    out->created = sqlite3_column_int64(s, 3);
    out->last_key_id = (uint64_t)sqlite3_column_int64(s, 4);
    size_t key_len = (size_t)sqlite3_column_bytes(s, 5);
    if (key_len > 0) {
        const void *key = sqlite3_column_blob(s, 5);
        out->wrapped_key = malloc(key_len);
        KF_ENSURE(key && out->wrapped_key, KF_ERR_NOMEM);
        memcpy(out->wrapped_key, key, key_len);
        out->wrapped_key_len = key_len;
    }
    return KF_OK;
}

/* Run a one-row domain query already bound; KF_ERR_DOMAIN if no row. */
static int fetch_one_domain(kf_store *st, sqlite3_stmt *s, struct kf_domain *out)
{
    int rc = sqlite3_step(s);
    int err;
    if (rc == SQLITE_ROW) {
        err = read_domain_row(s, out);
        if (err != KF_OK)
            kf_domain_clear(out);
    } else if (rc == SQLITE_DONE) {
        err = KF_ERR_DOMAIN;
    } else {
        err = kf_store_sqlite_error(st, rc, "domain lookup");
    }
    sqlite3_reset(s);
    return err;
}

int kf_store_domain_get(kf_store *st, const char *name, struct kf_domain *out)
{
    KF_ENSURE(st && name && out, KF_ERR_ARG);
    KF_ENSURE(kf_domain_name_valid(name), KF_ERR_NAME);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_DOMAIN_BY_NAME, &s));
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    return fetch_one_domain(st, s, out);
}

int kf_store_domain_get_by_id(kf_store *st, uint64_t id, struct kf_domain *out)
{
    KF_ENSURE(st && out, KF_ERR_ARG);
    KF_ENSURE(id > 0 && id <= INT64_MAX, KF_ERR_DOMAIN);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_DOMAIN_BY_ID, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
    return fetch_one_domain(st, s, out);
}

static int parent_id_of(kf_store *st, const char *parent_name, uint64_t *parent_id)
{
    *parent_id = 0;
    if (!parent_name)
        return KF_OK;
    struct kf_domain parent;
    int err = kf_store_domain_get(st, parent_name, &parent);
    if (err == KF_ERR_NAME)
        return KF_ERR_DOMAIN; /* a parent that cannot exist does not exist */
    KF_GUARD(err);
    *parent_id = parent.id;
    kf_domain_clear(&parent);
    return KF_OK;
}

int kf_store_domain_create(kf_store *st, const char *name, const char *parent_name,
                           const uint8_t *wrapped_key, size_t wrapped_key_len,
                           uint64_t *domain_id)
{
    KF_ENSURE(st && name, KF_ERR_ARG);
    KF_ENSURE(wrapped_key || wrapped_key_len == 0, KF_ERR_ARG);
    KF_ENSURE(wrapped_key_len <= INT32_MAX, KF_ERR_LIMIT);
    KF_ENSURE(kf_domain_name_valid(name), KF_ERR_NAME);
    uint64_t parent_id;
    KF_GUARD(parent_id_of(st, parent_name, &parent_id));

    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_DOMAIN_INSERT, &s));
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    if (parent_id)
        sqlite3_bind_int64(s, 2, (sqlite3_int64)parent_id);
    if (wrapped_key_len)
        sqlite3_bind_blob(s, 3, wrapped_key, (int)wrapped_key_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)time(NULL));
    KF_GUARD(kf_store_step_done(st, s, "domain create"));
    if (domain_id)
        *domain_id = (uint64_t)sqlite3_last_insert_rowid(st->db);
    return KF_OK;
}

int kf_store_domain_set_key(kf_store *st, uint64_t id, const uint8_t *wrapped_key,
                            size_t wrapped_key_len)
{
    KF_ENSURE(st && wrapped_key && wrapped_key_len > 0, KF_ERR_ARG);
    KF_ENSURE(wrapped_key_len <= INT32_MAX, KF_ERR_LIMIT);
    KF_ENSURE(id > 0 && id <= INT64_MAX, KF_ERR_DOMAIN);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_DOMAIN_SET_KEY, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
    sqlite3_bind_blob(s, 2, wrapped_key, (int)wrapped_key_len, SQLITE_STATIC);
    KF_GUARD(kf_store_step_done(st, s, "domain set key"));
    KF_ENSURE(sqlite3_changes(st->db) == 1, KF_ERR_DOMAIN);
    return KF_OK;
}

struct domain_walk {
    kf_store_domain_cb cb;
    void *ctx;
};

static int domain_row(sqlite3_stmt *s, void *arg)
{
    const struct domain_walk *w = arg;
    struct kf_domain d;
    int err = read_domain_row(s, &d);
    if (err == KF_OK)
        err = w->cb(w->ctx, &d);
    kf_domain_clear(&d);
    return err;
}

int kf_store_domain_list(kf_store *st, kf_store_domain_cb cb, void *ctx)
{
    KF_ENSURE(st && cb, KF_ERR_ARG);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_DOMAIN_LIST, &s));
    struct domain_walk w = {cb, ctx};
    return kf_store_each_row(st, s, "domain list", domain_row, &w);
}

/* ---- Key IDs ---- */

int kf_store_next_key_id(kf_store *st, uint64_t domain_id, uint64_t *key_id)
{
    KF_ENSURE(st && key_id, KF_ERR_ARG);
    /* Outside a transaction the increment would autocommit on its own,
     * which is reserve_key_id's job: make the caller say which it means. */
    KF_ENSURE(!sqlite3_get_autocommit(st->db), KF_ERR_STATE);
    KF_ENSURE(domain_id > 0 && domain_id <= INT64_MAX, KF_ERR_DOMAIN);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_NEXT_KEY_ID, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
    int rc = sqlite3_step(s);
    int err;
    if (rc == SQLITE_ROW) {
        *key_id = (uint64_t)sqlite3_column_int64(s, 0);
        /* Finish the statement so the RETURNING update is complete. */
        rc = sqlite3_step(s);
        err = rc == SQLITE_DONE ? KF_OK : kf_store_sqlite_error(st, rc, "next key id");
    } else if (rc == SQLITE_DONE) {
        err = KF_ERR_DOMAIN;
    } else {
        err = kf_store_sqlite_error(st, rc, "next key id");
    }
    sqlite3_reset(s);
    return err;
}

int kf_store_reserve_key_id(kf_store *st, uint64_t domain_id, uint64_t *key_id)
{
    KF_ENSURE(st && key_id, KF_ERR_ARG);
    /* Strict: the increment must be durable on its own before anyone uses
     * the ID, so it cannot share a transaction that might roll back. */
    KF_ENSURE(sqlite3_get_autocommit(st->db), KF_ERR_STATE);
    KF_GUARD(kf_store_begin(st));
    uint64_t id = 0;
    int err = kf_store_next_key_id(st, domain_id, &id);
    if (err == KF_OK)
        err = kf_store_commit(st);
    if (err != KF_OK) {
        kf_store_rollback(st);
        return err;
    }
    *key_id = id;
    return KF_OK;
}
