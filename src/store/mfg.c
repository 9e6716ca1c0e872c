/*
 * Manufacturing: the domains set up for it, their roles and the archive of
 * device master key records (docs/manufacturing.md). Keys never come here in
 * the clear: an archive record holds its key sealed to Brass or under
 * Brass's archive key, and is signed; the role private keys are ordinary
 * wrapped objects (object.c). The rules that matter — counters only go
 * forward, key IDs are reserved before use, records and roles are never
 * deleted, a record's identity is fixed, status moves only as Fig. 14/15
 * allow — are triggers in the schema (store.c), so a bug above this layer
 * cannot break them silently; here they come back as KF_ERR_ARG.
 */
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

static bool fits_i64(uint64_t v)
{
    return v <= (uint64_t)INT64_MAX;
}

/* Text column into a fixed buffer of cap bytes (NUL included). */
static int column_text(sqlite3_stmt *s, int col, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    KF_ENSURE(n < cap && (t || n == 0), KF_ERR_INTERNAL);
    if (n)
        memcpy(out, t, n);
    out[n] = '\0';
    return KF_OK;
}

/* Blob column into a fixed buffer; *len its length. */
static int column_blob(sqlite3_stmt *s, int col, uint8_t *out, size_t cap, size_t *len)
{
    const void *p = sqlite3_column_blob(s, col);
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    KF_ENSURE(n <= cap && (p || n == 0), KF_ERR_INTERNAL);
    if (n)
        memcpy(out, p, n);
    *len = n;
    return KF_OK;
}

/* A 32-byte key column, exactly. */
static int column_key32(sqlite3_stmt *s, int col, uint8_t out[32])
{
    size_t n;
    KF_GUARD(column_blob(s, col, out, 32, &n));
    KF_ENSURE(n == 32, KF_ERR_INTERNAL);
    return KF_OK;
}

static bool text_ok(const char *t, size_t max)
{
    return t && strlen(t) <= max;
}

/* Run a query bound by the caller: read rows with read_row and hand each to
 * visit (fn(ctx, row)); stop at the first row when one_only. KF_ERR_NOT_FOUND
 * if there were none. */
typedef int (*row_reader)(sqlite3_stmt *s, void *row);
typedef int (*row_visitor)(void *fn, void *ctx, const void *row);

static int run_query(kf_store *st, sqlite3_stmt *s, row_reader read_row, void *row,
                     row_visitor visit, void *fn, void *ctx, const char *what)
{
    int err = KF_OK, rc;
    bool any = false;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        any = true;
        if ((err = read_row(s, row)) < 0)
            break;
        if (!visit)
            break; /* one row wanted */
        err = visit(fn, ctx, row);
        if (err != KF_OK)
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = kf_store_sqlite_error(st, rc, what);
    sqlite3_reset(s);
    if (err > 0)
        err = KF_OK; /* the callback stopped early */
    if (err == KF_OK && !any)
        err = KF_ERR_NOT_FOUND;
    return err;
}

/* ---- Domains ---- */

/* Columns: domain_id, kind, country, authority_id, oak_id, brass_id,
 * last_key_id, oak_last_key_id, created. */
static int read_domain(sqlite3_stmt *s, void *row)
{
    struct kf_mfg_domain_row *d = row;
    memset(d, 0, sizeof(*d));
    d->domain_id = (uint64_t)sqlite3_column_int64(s, 0);
    d->kind = (uint32_t)sqlite3_column_int64(s, 1);
    KF_GUARD(column_text(s, 2, d->country, sizeof(d->country)));
    KF_GUARD(column_text(s, 3, d->authority_id, sizeof(d->authority_id)));
    KF_GUARD(column_text(s, 4, d->oak_id, sizeof(d->oak_id)));
    KF_GUARD(column_text(s, 5, d->brass_id, sizeof(d->brass_id)));
    d->last_key_id = (uint64_t)sqlite3_column_int64(s, 6);
    d->oak_last_key_id = (uint64_t)sqlite3_column_int64(s, 7);
    d->created = sqlite3_column_int64(s, 8);
    return KF_OK;
}

static int visit_domain(void *fn, void *ctx, const void *row)
{
    return ((kf_store_mfg_domain_cb)fn)(ctx, row);
}

int kf_store_mfg_domain_insert(kf_store *st, const struct kf_mfg_domain_row *d)
{
    KF_ENSURE(st && d && d->domain_id > 0 && fits_i64(d->domain_id), KF_ERR_ARG);
    KF_ENSURE(text_ok(d->country, 2) && text_ok(d->authority_id, KF_STORE_MFG_ID_MAX) &&
                  text_ok(d->oak_id, KF_STORE_MFG_ID_MAX) &&
                  text_ok(d->brass_id, KF_STORE_MFG_ID_MAX),
              KF_ERR_ARG);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_MFG_DOMAIN_INSERT, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)d->domain_id);
    sqlite3_bind_int64(s, 2, d->kind);
    sqlite3_bind_text(s, 3, d->country, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, d->authority_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, d->oak_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, d->brass_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 7, d->created);
    return kf_store_step_done(st, s, "mfg domain insert");
}

int kf_store_mfg_domain_get(kf_store *st, uint64_t domain_id, struct kf_mfg_domain_row *out)
{
    KF_ENSURE(st && out, KF_ERR_ARG);
    KF_ENSURE(fits_i64(domain_id), KF_ERR_MFG_SETUP);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_MFG_DOMAIN_GET, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
    int rc = run_query(st, s, read_domain, out, NULL, NULL, NULL, "mfg domain lookup");
    return rc == KF_ERR_NOT_FOUND ? KF_ERR_MFG_SETUP : rc;
}

int kf_store_mfg_domain_list(kf_store *st, kf_store_mfg_domain_cb cb, void *ctx)
{
    KF_ENSURE(st && cb, KF_ERR_ARG);
    struct kf_mfg_domain_row d;
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_MFG_DOMAIN_LIST, &s));
    int rc = run_query(st, s, read_domain, &d, visit_domain, (void *)cb, ctx, "mfg domain list");
    return rc == KF_ERR_NOT_FOUND ? KF_OK : rc;
}

int kf_store_mfg_next_key_id(kf_store *st, uint64_t domain_id, uint64_t *key_id)
{
    KF_ENSURE(st && key_id, KF_ERR_ARG);
    KF_ENSURE(kf_store_in_transaction(st), KF_ERR_STATE);
    KF_ENSURE(fits_i64(domain_id), KF_ERR_MFG_SETUP);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_MFG_NEXT_KEY_ID, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
    int rc = sqlite3_step(s);
    int err;
    if (rc == SQLITE_ROW) {
        int64_t v = sqlite3_column_int64(s, 0);
        rc = sqlite3_step(s); /* finish the RETURNING update */
        err = rc == SQLITE_DONE ? KF_OK : kf_store_sqlite_error(st, rc, "mfg key id");
        if (err == KF_OK && v < 1)
            err = KF_ERR_INTERNAL;
        if (err == KF_OK)
            *key_id = (uint64_t)v;
    } else if (rc == SQLITE_DONE) {
        err = KF_ERR_MFG_SETUP;
    } else {
        err = kf_store_sqlite_error(st, rc, "mfg key id");
    }
    sqlite3_reset(s);
    return err;
}

int kf_store_mfg_oak_seen(kf_store *st, uint64_t domain_id, uint64_t key_id)
{
    KF_ENSURE(st && fits_i64(key_id), KF_ERR_ARG);
    KF_ENSURE(fits_i64(domain_id), KF_ERR_MFG_SETUP);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_MFG_OAK_SEEN, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)key_id);
    KF_GUARD(kf_store_step_done(st, s, "oak last key id"));
    KF_ENSURE(sqlite3_changes(st->db) == 1, KF_ERR_MFG_SETUP);
    return KF_OK;
}

/* ---- Roles ---- */

/* Columns: role_id, domain_id, role_type, sign_pub, enc_pub, cert,
 * sign_key_id, enc_key_id, archive_key_id, created. */
static int read_role(sqlite3_stmt *s, void *row)
{
    struct kf_mfg_role_row *r = row;
    memset(r, 0, sizeof(*r));
    KF_GUARD(column_text(s, 0, r->role_id, sizeof(r->role_id)));
    r->domain_id = (uint64_t)sqlite3_column_int64(s, 1);
    r->role_type = (uint32_t)sqlite3_column_int64(s, 2);
    KF_GUARD(column_key32(s, 3, r->sign_pub));
    r->has_enc = sqlite3_column_type(s, 4) != SQLITE_NULL;
    if (r->has_enc)
        KF_GUARD(column_key32(s, 4, r->enc_pub));
    KF_GUARD(column_blob(s, 5, r->cert, sizeof(r->cert), &r->cert_len));
    r->sign_key_id = (uint64_t)sqlite3_column_int64(s, 6);
    r->enc_key_id = (uint64_t)sqlite3_column_int64(s, 7);
    r->archive_key_id = (uint64_t)sqlite3_column_int64(s, 8);
    r->created = sqlite3_column_int64(s, 9);
    return KF_OK;
}

static int visit_role(void *fn, void *ctx, const void *row)
{
    return ((kf_store_mfg_role_cb)fn)(ctx, row);
}

int kf_store_mfg_role_insert(kf_store *st, const struct kf_mfg_role_row *r)
{
    KF_ENSURE(st && r && r->role_id[0] && text_ok(r->role_id, KF_STORE_MFG_ID_MAX), KF_ERR_ARG);
    KF_ENSURE(r->domain_id > 0 && fits_i64(r->domain_id), KF_ERR_DOMAIN);
    KF_ENSURE(r->cert_len > 0 && r->cert_len <= sizeof(r->cert), KF_ERR_ARG);
    KF_ENSURE(fits_i64(r->sign_key_id) && fits_i64(r->enc_key_id) && fits_i64(r->archive_key_id),
              KF_ERR_ARG);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_MFG_ROLE_INSERT, &s));
    sqlite3_bind_text(s, 1, r->role_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)r->domain_id);
    sqlite3_bind_int64(s, 3, r->role_type);
    sqlite3_bind_blob(s, 4, r->sign_pub, 32, SQLITE_STATIC);
    if (r->has_enc)
        sqlite3_bind_blob(s, 5, r->enc_pub, 32, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 5);
    sqlite3_bind_blob(s, 6, r->cert, (int)r->cert_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 7, (sqlite3_int64)r->sign_key_id);
    sqlite3_bind_int64(s, 8, (sqlite3_int64)r->enc_key_id);
    sqlite3_bind_int64(s, 9, (sqlite3_int64)r->archive_key_id);
    sqlite3_bind_int64(s, 10, r->created);
    return kf_store_step_done(st, s, "mfg role insert");
}

int kf_store_mfg_role_get(kf_store *st, uint64_t domain_id, const char *role_id,
                          struct kf_mfg_role_row *out)
{
    KF_ENSURE(st && out, KF_ERR_ARG);
    KF_ENSURE(role_id && text_ok(role_id, KF_STORE_MFG_ID_MAX) && fits_i64(domain_id),
              KF_ERR_MFG_ROLE);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_MFG_ROLE_GET, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
    sqlite3_bind_text(s, 2, role_id, -1, SQLITE_STATIC);
    int rc = run_query(st, s, read_role, out, NULL, NULL, NULL, "mfg role lookup");
    return rc == KF_ERR_NOT_FOUND ? KF_ERR_MFG_ROLE : rc;
}

int kf_store_mfg_role_list(kf_store *st, uint64_t domain_id, kf_store_mfg_role_cb cb, void *ctx)
{
    KF_ENSURE(st && cb && fits_i64(domain_id), KF_ERR_ARG);
    struct kf_mfg_role_row *r = calloc(1, sizeof(*r));
    KF_ENSURE(r != NULL, KF_ERR_NOMEM);
    sqlite3_stmt *s;
    int rc = kf_store_stmt(st, KF_STMT_MFG_ROLE_LIST, &s);
    if (rc == KF_OK) {
        sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
        rc = run_query(st, s, read_role, r, visit_role, (void *)cb, ctx, "mfg role list");
    }
    free(r);
    return rc == KF_ERR_NOT_FOUND ? KF_OK : rc;
}

/* ---- The archive ---- */

/* Columns: MFG_KEY_COLUMNS (store.c). */
static int read_key(sqlite3_stmt *s, void *row)
{
    struct kf_mfg_key_row *k = row;
    memset(k, 0, sizeof(*k));
    k->domain_id = (uint64_t)sqlite3_column_int64(s, 0);
    k->key_id = (uint64_t)sqlite3_column_int64(s, 1);
    KF_GUARD(column_text(s, 2, k->steel_id, sizeof(k->steel_id)));
    k->status = (uint32_t)sqlite3_column_int64(s, 3);
    k->reason = (int32_t)sqlite3_column_int64(s, 4);
    KF_GUARD(column_text(s, 5, k->msn, sizeof(k->msn)));
    KF_GUARD(column_text(s, 6, k->indicia, sizeof(k->indicia)));
    KF_GUARD(column_text(s, 7, k->country, sizeof(k->country)));
    KF_GUARD(column_blob(s, 8, k->mi3, sizeof(k->mi3), &k->mi3_len));
    KF_GUARD(column_blob(s, 9, k->record, sizeof(k->record), &k->record_len));
    k->t_request = sqlite3_column_int64(s, 10);
    k->t_install = sqlite3_column_int64(s, 11);
    k->t_install_verify = sqlite3_column_int64(s, 12);
    k->t_register = sqlite3_column_int64(s, 13);
    k->t_register_verify = sqlite3_column_int64(s, 14);
    k->moved_domain_id = (uint64_t)sqlite3_column_int64(s, 15);
    k->moved_key_id = (uint64_t)sqlite3_column_int64(s, 16);
    return KF_OK;
}

static int visit_key(void *fn, void *ctx, const void *row)
{
    return ((kf_store_mfg_key_cb)fn)(ctx, row);
}

static bool key_row_ok(const struct kf_mfg_key_row *k)
{
    return k->domain_id > 0 && fits_i64(k->domain_id) && k->key_id > 0 && fits_i64(k->key_id) &&
           text_ok(k->steel_id, KF_STORE_MFG_ID_MAX) && text_ok(k->msn, 16) &&
           text_ok(k->indicia, 16) && text_ok(k->country, 2) && k->mi3_len > 0 &&
           k->mi3_len <= sizeof(k->mi3) && k->record_len > 0 &&
           k->record_len <= sizeof(k->record) && fits_i64(k->moved_domain_id) &&
           fits_i64(k->moved_key_id);
}

int kf_store_mfg_key_insert(kf_store *st, const struct kf_mfg_key_row *k)
{
    KF_ENSURE(st && k && key_row_ok(k), KF_ERR_ARG);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_MFG_KEY_INSERT, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)k->domain_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)k->key_id);
    sqlite3_bind_text(s, 3, k->steel_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, k->status);
    sqlite3_bind_int64(s, 5, k->reason);
    sqlite3_bind_text(s, 6, k->msn, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, k->indicia, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 8, k->country, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 9, k->mi3, (int)k->mi3_len, SQLITE_STATIC);
    sqlite3_bind_blob(s, 10, k->record, (int)k->record_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 11, k->t_request);
    sqlite3_bind_int64(s, 12, k->t_install);
    sqlite3_bind_int64(s, 13, k->t_install_verify);
    sqlite3_bind_int64(s, 14, k->t_register);
    sqlite3_bind_int64(s, 15, k->t_register_verify);
    sqlite3_bind_int64(s, 16, (sqlite3_int64)k->moved_domain_id);
    sqlite3_bind_int64(s, 17, (sqlite3_int64)k->moved_key_id);
    return kf_store_step_done(st, s, "mfg archive insert");
}

static int key_one(kf_store *st, enum kf_store_stmt id, uint64_t domain_id, uint64_t key_id,
                   const char *text, struct kf_mfg_key_row *out, const char *what)
{
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, id, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
    if (text)
        sqlite3_bind_text(s, 2, text, -1, SQLITE_STATIC);
    else
        sqlite3_bind_int64(s, 2, (sqlite3_int64)key_id);
    return run_query(st, s, read_key, out, NULL, NULL, NULL, what);
}

int kf_store_mfg_key_get(kf_store *st, uint64_t domain_id, uint64_t key_id,
                         struct kf_mfg_key_row *out)
{
    KF_ENSURE(st && out, KF_ERR_ARG);
    KF_ENSURE(fits_i64(domain_id) && key_id > 0 && fits_i64(key_id), KF_ERR_MFG_UNKNOWN);
    int rc = key_one(st, KF_STMT_MFG_KEY_GET, domain_id, key_id, NULL, out, "mfg archive lookup");
    return rc == KF_ERR_NOT_FOUND ? KF_ERR_MFG_UNKNOWN : rc;
}

int kf_store_mfg_key_by_msn(kf_store *st, uint64_t domain_id, const char *msn,
                            struct kf_mfg_key_row *out)
{
    KF_ENSURE(st && out, KF_ERR_ARG);
    KF_ENSURE(msn && msn[0] && text_ok(msn, 16) && fits_i64(domain_id), KF_ERR_MFG_UNKNOWN);
    int rc = key_one(st, KF_STMT_MFG_KEY_BY_MSN, domain_id, 0, msn, out, "mfg archive by msn");
    return rc == KF_ERR_NOT_FOUND ? KF_ERR_MFG_UNKNOWN : rc;
}

int kf_store_mfg_key_open_for_steel(kf_store *st, uint64_t domain_id, const char *steel_id,
                                    struct kf_mfg_key_row *out)
{
    KF_ENSURE(st && out && steel_id && text_ok(steel_id, KF_STORE_MFG_ID_MAX), KF_ERR_ARG);
    KF_ENSURE(fits_i64(domain_id), KF_ERR_NOT_FOUND);
    return key_one(st, KF_STMT_MFG_KEY_OPEN_FOR_STEEL, domain_id, 0, steel_id, out,
                   "mfg archive open key");
}

int kf_store_mfg_key_update(kf_store *st, const struct kf_mfg_key_row *k)
{
    KF_ENSURE(st && k && key_row_ok(k), KF_ERR_ARG);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_MFG_KEY_UPDATE, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)k->domain_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)k->key_id);
    sqlite3_bind_int64(s, 3, k->status);
    sqlite3_bind_int64(s, 4, k->reason);
    sqlite3_bind_text(s, 5, k->msn, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, k->indicia, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, k->country, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 8, k->record, (int)k->record_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 9, k->t_install);
    sqlite3_bind_int64(s, 10, k->t_install_verify);
    sqlite3_bind_int64(s, 11, k->t_register);
    sqlite3_bind_int64(s, 12, k->t_register_verify);
    sqlite3_bind_int64(s, 13, (sqlite3_int64)k->moved_domain_id);
    sqlite3_bind_int64(s, 14, (sqlite3_int64)k->moved_key_id);
    KF_GUARD(kf_store_step_done(st, s, "mfg archive update"));
    KF_ENSURE(sqlite3_changes(st->db) == 1, KF_ERR_MFG_UNKNOWN);
    return KF_OK;
}

int kf_store_mfg_key_list(kf_store *st, uint64_t domain_id, uint32_t status, kf_store_mfg_key_cb cb,
                          void *ctx)
{
    KF_ENSURE(st && cb && fits_i64(domain_id), KF_ERR_ARG);
    struct kf_mfg_key_row *k = calloc(1, sizeof(*k));
    KF_ENSURE(k != NULL, KF_ERR_NOMEM);
    sqlite3_stmt *s;
    int rc = kf_store_stmt(st, KF_STMT_MFG_KEY_LIST, &s);
    if (rc == KF_OK) {
        sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
        sqlite3_bind_int64(s, 2, status);
        rc = run_query(st, s, read_key, k, visit_key, (void *)cb, ctx, "mfg archive list");
    }
    free(k);
    return rc == KF_ERR_NOT_FOUND ? KF_OK : rc;
}
