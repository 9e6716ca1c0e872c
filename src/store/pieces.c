/*
 * Pieces verified good (table mfg_piece, docs/manufacturing.md "Tokens"):
 * what duplicate detection survives a restart with. Rows are only added,
 * always inside the verifying batch's transaction together with its audit
 * record (src/kms/tokens.c).
 *
 * A batch adds up to tens of thousands of rows, so the rows go in as
 * multi-row INSERTs of PIECES_CHUNK rows each (one statement step per chunk
 * rather than per row), prepared once per connection. These statements are
 * this file's own, not the store's statement cache, so that this table's
 * writer needs no slot in the shared enum.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

#define PIECES_CHUNK 64 /* rows per multi-row INSERT: 2 + 2 * 64 parameters */

struct kf_store_pieces {
    kf_store *st;
    sqlite3_stmt *insert_chunk; /* PIECES_CHUNK rows */
    sqlite3_stmt *insert_one;
    sqlite3_stmt *list;
    sqlite3_stmt *count;
};

static int prepare(kf_store *st, const char *sql, sqlite3_stmt **out)
{
    int rc = sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
    return rc == SQLITE_OK ? KF_OK : kf_store_sqlite_error(st, rc, "prepare (mfg_piece)");
}

/* "INSERT ... VALUES (?1, ?3, ?4, ?2), (?1, ?5, ?6, ?2), ...": the domain
 * (?1) and the time (?2) once, then MSN and count per row. */
static int insert_sql(size_t rows, char *out, size_t cap)
{
    int n = snprintf(out, cap, "INSERT INTO mfg_piece(domain_id, msn, piece_count, verified_at)"
                               " VALUES ");
    for (size_t i = 0; i < rows && n > 0 && (size_t)n < cap; i++)
        n += snprintf(out + n, cap - (size_t)n, "%s(?1, ?%zu, ?%zu, ?2)", i ? ", " : "",
                      3 + 2 * i, 4 + 2 * i);
    return n > 0 && (size_t)n < cap ? KF_OK : KF_ERR_INTERNAL;
}

int kf_store_pieces_open(kf_store *st, kf_store_pieces **out)
{
    KF_ENSURE(st && out, KF_ERR_ARG);
    kf_store_pieces *p = calloc(1, sizeof(*p));
    KF_ENSURE(p != NULL, KF_ERR_NOMEM);
    p->st = st;
    char sql[PIECES_CHUNK * 32 + 128];
    int rc = insert_sql(PIECES_CHUNK, sql, sizeof(sql));
    if (rc == KF_OK)
        rc = prepare(st, sql, &p->insert_chunk);
    if (rc == KF_OK && (rc = insert_sql(1, sql, sizeof(sql))) == KF_OK)
        rc = prepare(st, sql, &p->insert_one);
    if (rc == KF_OK)
        rc = prepare(st, "SELECT msn, piece_count FROM mfg_piece WHERE domain_id = ?1", &p->list);
    if (rc == KF_OK)
        rc = prepare(st, "SELECT count(*) FROM mfg_piece WHERE domain_id = ?1", &p->count);
    if (rc < 0) {
        kf_store_pieces_close(p);
        return rc;
    }
    *out = p;
    return KF_OK;
}

void kf_store_pieces_close(kf_store_pieces *p)
{
    if (!p)
        return;
    sqlite3_finalize(p->insert_chunk);
    sqlite3_finalize(p->insert_one);
    sqlite3_finalize(p->list);
    sqlite3_finalize(p->count);
    free(p);
}

static bool piece_ok(const struct kf_store_piece *pc)
{
    size_t n = strnlen(pc->msn, sizeof(pc->msn));
    return n >= 1 && n < sizeof(pc->msn);
}

static int insert_rows(kf_store_pieces *p, sqlite3_stmt *s, uint64_t domain_id,
                       int64_t verified_at, const struct kf_store_piece *pieces, size_t rows)
{
    sqlite3_reset(s);
    sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
    sqlite3_bind_int64(s, 2, verified_at);
    for (size_t i = 0; i < rows; i++) {
        KF_ENSURE(piece_ok(&pieces[i]), KF_ERR_ARG);
        sqlite3_bind_text(s, (int)(3 + 2 * i), pieces[i].msn, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, (int)(4 + 2 * i), pieces[i].piece_count);
    }
    int rc = kf_store_step_done(p->st, s, "piece insert");
    sqlite3_clear_bindings(s); /* no pointer into the caller's rows stays behind */
    return rc;
}

int kf_store_pieces_insert(kf_store_pieces *p, uint64_t domain_id, int64_t verified_at,
                           const struct kf_store_piece *pieces, size_t n)
{
    KF_ENSURE(p && (pieces || n == 0), KF_ERR_ARG);
    KF_ENSURE(domain_id > 0 && domain_id <= (uint64_t)INT64_MAX, KF_ERR_DOMAIN);
    KF_ENSURE(kf_store_in_transaction(p->st), KF_ERR_STATE);
    size_t i = 0;
    for (; i + PIECES_CHUNK <= n; i += PIECES_CHUNK)
        KF_GUARD(insert_rows(p, p->insert_chunk, domain_id, verified_at, pieces + i,
                             PIECES_CHUNK));
    for (; i < n; i++)
        KF_GUARD(insert_rows(p, p->insert_one, domain_id, verified_at, pieces + i, 1));
    return KF_OK;
}

int kf_store_pieces_list(kf_store_pieces *p, uint64_t domain_id, kf_store_piece_cb cb, void *ctx)
{
    KF_ENSURE(p && cb, KF_ERR_ARG);
    KF_ENSURE(domain_id <= (uint64_t)INT64_MAX, KF_ERR_DOMAIN);
    sqlite3_stmt *s = p->list;
    sqlite3_reset(s);
    sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
    int rc, out = KF_OK;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const unsigned char *msn = sqlite3_column_text(s, 0);
        sqlite3_int64 count = sqlite3_column_int64(s, 1);
        size_t len = (size_t)sqlite3_column_bytes(s, 0);
        if (!msn || len == 0 || len > 16 || count < 0 || count > (sqlite3_int64)UINT32_MAX) {
            out = KF_ERR_DB; /* the writer never stores such a row */
            break;
        }
        if ((out = cb(ctx, (const char *)msn, (uint32_t)count)) < 0)
            break;
    }
    if (out == KF_OK && rc != SQLITE_DONE)
        out = kf_store_sqlite_error(p->st, rc, "piece list");
    sqlite3_reset(s);
    return out;
}

int kf_store_pieces_count(kf_store_pieces *p, uint64_t domain_id, uint64_t *n)
{
    KF_ENSURE(p && n, KF_ERR_ARG);
    KF_ENSURE(domain_id <= (uint64_t)INT64_MAX, KF_ERR_DOMAIN);
    sqlite3_stmt *s = p->count;
    sqlite3_reset(s);
    sqlite3_bind_int64(s, 1, (sqlite3_int64)domain_id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *n = (uint64_t)sqlite3_column_int64(s, 0);
    int out = rc == SQLITE_ROW ? KF_OK : kf_store_sqlite_error(p->st, rc, "piece count");
    sqlite3_reset(s);
    return out;
}
