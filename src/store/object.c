/*
 * KMIP managed objects. Every statement here has "domain_id = ?1" in its
 * WHERE clause: an object is addressed by (domain, key ID) and nothing else,
 * so no function can reach an object of another domain.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/log.h"
#include "store_internal.h"

void kf_object_clear(struct kf_object *obj)
{
    if (!obj)
        return;
    free(obj->material);
    free(obj->attributes);
    memset(obj, 0, sizeof(*obj));
}

int kf_object_uid_format(const char *domain_name, uint64_t key_id, char *out, size_t out_len)
{
    KF_ENSURE(domain_name && out && out_len > 0, KF_ERR_ARG);
    KF_ENSURE(kf_domain_name_valid(domain_name), KF_ERR_NAME);
    int n = snprintf(out, out_len, "%s/%" PRIu64, domain_name, key_id);
    KF_ENSURE(n > 0 && (size_t)n < out_len, KF_ERR_NOSPACE);
    return KF_OK;
}

int kf_object_uid_parse(const char *uid, char domain_name[KF_DOMAIN_NAME_MAX + 1],
                        uint64_t *key_id)
{
    KF_ENSURE(uid && domain_name && key_id, KF_ERR_ARG);
    const char *slash = strchr(uid, '/');
    KF_ENSURE(slash, KF_ERR_FORMAT);
    size_t name_len = (size_t)(slash - uid);
    KF_ENSURE(name_len >= 1 && name_len <= KF_DOMAIN_NAME_MAX, KF_ERR_FORMAT);
    char name[KF_DOMAIN_NAME_MAX + 1];
    memcpy(name, uid, name_len);
    name[name_len] = '\0';
    KF_ENSURE(kf_domain_name_valid(name), KF_ERR_FORMAT);

    /* Decimal, no sign, no leading zero, no overflow, nothing after. */
    const char *digits = slash + 1;
    KF_ENSURE(digits[0] >= '1' && digits[0] <= '9', KF_ERR_FORMAT);
    uint64_t v = 0;
    for (const char *p = digits; *p; p++) {
        KF_ENSURE(*p >= '0' && *p <= '9', KF_ERR_FORMAT);
        unsigned d = (unsigned)(*p - '0');
        KF_ENSURE(v <= ((uint64_t)INT64_MAX - d) / 10, KF_ERR_FORMAT);
        v = v * 10 + d;
    }
    memcpy(domain_name, name, name_len + 1);
    *key_id = v;
    return KF_OK;
}

static bool ids_valid(uint64_t domain_id, uint64_t key_id)
{
    return domain_id > 0 && domain_id <= INT64_MAX && key_id > 0 && key_id <= INT64_MAX;
}

static void bind_blob_or_null(sqlite3_stmt *s, int col, const uint8_t *p, size_t n)
{
    if (p && n > 0)
        sqlite3_bind_blob(s, col, p, (int)n, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, col);
}

/* Parameters ?1..?21 in the column order shared by insert and update. */
static int bind_object(sqlite3_stmt *s, const struct kf_object *o)
{
    KF_ENSURE(ids_valid(o->domain_id, o->key_id), KF_ERR_ARG);
    KF_ENSURE(o->material_len <= INT32_MAX && o->attributes_len <= INT32_MAX, KF_ERR_LIMIT);
    KF_ENSURE(memchr(o->name, '\0', sizeof(o->name)) &&
                  memchr(o->revocation_message, '\0', sizeof(o->revocation_message)),
              KF_ERR_ARG);
    sqlite3_bind_int64(s, 1, (sqlite3_int64)o->domain_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)o->key_id);
    sqlite3_bind_int64(s, 3, o->object_type);
    sqlite3_bind_int64(s, 4, o->state);
    sqlite3_bind_int64(s, 5, o->crypto_alg);
    sqlite3_bind_int64(s, 6, o->crypto_length);
    sqlite3_bind_int64(s, 7, o->usage_mask);
    sqlite3_bind_int64(s, 8, o->key_format);
    sqlite3_bind_text(s, 9, o->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 10, o->version);
    sqlite3_bind_int64(s, 11, o->initial_date);
    sqlite3_bind_int64(s, 12, o->activation_date);
    sqlite3_bind_int64(s, 13, o->deactivation_date);
    sqlite3_bind_int64(s, 14, o->destroy_date);
    sqlite3_bind_int64(s, 15, o->compromise_date);
    sqlite3_bind_int64(s, 16, o->compromise_occurrence_date);
    sqlite3_bind_int64(s, 17, o->last_change_date);
    sqlite3_bind_int64(s, 18, o->revocation_reason);
    sqlite3_bind_text(s, 19, o->revocation_message, -1, SQLITE_STATIC);
    return KF_OK;
}

static int copy_blob(sqlite3_stmt *s, int col, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    if (n == 0)
        return KF_OK;
    const void *p = sqlite3_column_blob(s, col);
    KF_ENSURE(p, KF_ERR_NOMEM);
    *out = malloc(n);
    KF_ENSURE(*out, KF_ERR_NOMEM);
    memcpy(*out, p, n);
    *out_len = n;
    return KF_OK;
}

static void copy_text(sqlite3_stmt *s, int col, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    if (!t)
        n = 0;
    if (n >= cap)
        n = cap - 1; /* cannot happen for rows we wrote */
    if (n)
        memcpy(out, t, n);
    out[n] = '\0';
}

/* Columns in the order of the SELECTs in store.c. */
static int read_object_row(sqlite3_stmt *s, struct kf_object *o)
{
    memset(o, 0, sizeof(*o));
    o->domain_id = (uint64_t)sqlite3_column_int64(s, 0);
    o->key_id = (uint64_t)sqlite3_column_int64(s, 1);
    o->object_type = (uint32_t)sqlite3_column_int64(s, 2);
    o->state = (uint32_t)sqlite3_column_int64(s, 3);
    o->crypto_alg = (uint32_t)sqlite3_column_int64(s, 4);
    o->crypto_length = (int32_t)sqlite3_column_int64(s, 5);
    o->usage_mask = (uint32_t)sqlite3_column_int64(s, 6);
    o->key_format = (uint8_t)sqlite3_column_int64(s, 7);
    copy_text(s, 8, o->name, sizeof(o->name));
    o->version = (uint32_t)sqlite3_column_int64(s, 9);
    o->initial_date = sqlite3_column_int64(s, 10);
    o->activation_date = sqlite3_column_int64(s, 11);
    o->deactivation_date = sqlite3_column_int64(s, 12);
    o->destroy_date = sqlite3_column_int64(s, 13);
    o->compromise_date = sqlite3_column_int64(s, 14);
    o->compromise_occurrence_date = sqlite3_column_int64(s, 15);
    o->last_change_date = sqlite3_column_int64(s, 16);
    o->revocation_reason = (uint32_t)sqlite3_column_int64(s, 17);
    copy_text(s, 18, o->revocation_message, sizeof(o->revocation_message));
    int err = copy_blob(s, 19, &o->material, &o->material_len);
    if (err == KF_OK)
        err = copy_blob(s, 20, &o->attributes, &o->attributes_len);
    if (err != KF_OK)
        kf_object_clear(o);
    return err;
}

int kf_store_object_insert(kf_store *st, const struct kf_object *obj)
{
    KF_ENSURE(st && obj, KF_ERR_ARG);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_OBJECT_INSERT, &s));
    KF_GUARD(bind_object(s, obj));
    bind_blob_or_null(s, 20, obj->material, obj->material_len);
    bind_blob_or_null(s, 21, obj->attributes, obj->attributes_len);
    return kf_store_step_done(st, s, "object insert");
}

int kf_store_object_get(kf_store *st, uint64_t domain_id, uint64_t key_id, struct kf_object *obj)
{
    KF_ENSURE(st && obj, KF_ERR_ARG);
    KF_ENSURE(ids_valid(domain_id, key_id), KF_ERR_OBJECT);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_OBJECT_GET, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)key_id);
    int rc = sqlite3_step(s);
    int err;
    if (rc == SQLITE_ROW)
        err = read_object_row(s, obj);
    else if (rc == SQLITE_DONE)
        err = KF_ERR_OBJECT;
    else
        err = kf_store_sqlite_error(st, rc, "object get");
    sqlite3_reset(s);
    return err;
}

/* Run an UPDATE/DELETE addressed by (domain, key ID); KF_ERR_OBJECT if it hit nothing. */
static int step_one_object(kf_store *st, sqlite3_stmt *s, const char *what)
{
    KF_GUARD(kf_store_step_done(st, s, what));
    KF_ENSURE(sqlite3_changes(st->db) == 1, KF_ERR_OBJECT);
    return KF_OK;
}

int kf_store_object_update(kf_store *st, const struct kf_object *obj)
{
    KF_ENSURE(st && obj, KF_ERR_ARG);
    atomic_fetch_add(&st->object_generation, 1);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_OBJECT_UPDATE, &s));
    KF_GUARD(bind_object(s, obj));
    /* NULL material keeps the stored one (COALESCE in the statement). */
    bind_blob_or_null(s, 20, obj->material, obj->material_len);
    bind_blob_or_null(s, 21, obj->attributes, obj->attributes_len);
    return step_one_object(st, s, "object update");
}

static int run_on_object(kf_store *st, enum kf_store_stmt id, uint64_t domain_id, uint64_t key_id,
                         const char *what)
{
    KF_ENSURE(st, KF_ERR_ARG);
    KF_ENSURE(ids_valid(domain_id, key_id), KF_ERR_OBJECT);
    atomic_fetch_add(&st->object_generation, 1);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, id, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)key_id);
    return step_one_object(st, s, what);
}

/* Old page images survive in the WAL until a checkpoint has copied them back
 * and the WAL restarts; TRUNCATE does both. Outside a transaction we can do
 * it now; a busy reader only delays it (the data is already gone from the
 * live database), so that is logged, not returned. */
int kf_store_object_destroy_material(kf_store *st, uint64_t domain_id, uint64_t key_id)
{
    bool own_commit = st && sqlite3_get_autocommit(st->db);
    KF_GUARD(run_on_object(st, KF_STMT_OBJECT_DESTROY_MATERIAL, domain_id, key_id,
                           "destroy material"));
    if (own_commit && kf_store_checkpoint(st) != KF_OK)
        kf_warn("store: WAL checkpoint after destroy did not complete; it will on the next one");
    return KF_OK;
}

int kf_store_object_delete(kf_store *st, uint64_t domain_id, uint64_t key_id)
{
    return run_on_object(st, KF_STMT_OBJECT_DELETE, domain_id, key_id, "object delete");
}

struct object_walk {
    kf_store_object_cb cb;
    void *ctx;
};

static int object_row(sqlite3_stmt *s, void *arg)
{
    const struct object_walk *w = arg;
    struct kf_object o;
    int err = read_object_row(s, &o);
    if (err == KF_OK)
        err = w->cb(w->ctx, &o);
    kf_object_clear(&o);
    return err;
}

int kf_store_object_list(kf_store *st, uint64_t domain_id, const struct kf_object_filter *f,
                         kf_store_object_cb cb, void *ctx)
{
    KF_ENSURE(st && cb, KF_ERR_ARG);
    KF_ENSURE(domain_id > 0 && domain_id <= INT64_MAX, KF_ERR_DOMAIN);
    struct kf_object_filter all = {0};
    if (!f)
        f = &all;
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_OBJECT_LIST, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
    sqlite3_bind_int64(s, 2, f->object_type);
    sqlite3_bind_int64(s, 3, f->state);
    if (f->name)
        sqlite3_bind_text(s, 4, f->name, -1, SQLITE_STATIC);
    /* LIMIT -1 is SQLite's "no limit". */
    sqlite3_bind_int64(s, 5, f->max == 0 || f->max > INT64_MAX ? -1 : (sqlite3_int64)f->max);
    sqlite3_bind_int64(s, 6, f->offset > INT64_MAX ? INT64_MAX : (sqlite3_int64)f->offset);
    sqlite3_bind_int(s, 7, f->with_material ? 1 : 0);
    struct object_walk w = {cb, ctx};
    return kf_store_each_row(st, s, "object list", object_row, &w);
}
