/*
 * Devices and the metadata of pairwise KEKs (docs/pairing.md). Keys never
 * come here: a device's MKEK is a managed object (object.c) and a KEK is
 * never stored at all. The rules that matter for security — counters only go
 * forward, device IDs and KEK IDs are never reused, the package is exported
 * once, an acknowledgement is recorded once — are also triggers in the schema
 * (store.c), so a bug above this layer cannot break them silently.
 */
#include <stdio.h>
#include <string.h>

#include "store_internal.h"

static bool device_id_ok(const char *id)
{
    /* The characters are the service's to check (kfd_id_valid); here only
     * what the columns and buffers need. */
    return id && id[0] && strlen(id) <= KF_DEVICE_ID_MAX;
}

static bool fits_i64(uint64_t v)
{
    return v <= (uint64_t)INT64_MAX;
}

static int copy_text(sqlite3_stmt *s, int col, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    KF_ENSURE(t && n < cap, KF_ERR_INTERNAL);
    memcpy(out, t, n);
    out[n] = '\0';
    return KF_OK;
}

int kf_store_device_insert(kf_store *st, const struct kf_device *dev)
{
    KF_ENSURE(st && dev && device_id_ok(dev->id), KF_ERR_ARG);
    KF_ENSURE(dev->domain_id > 0 && fits_i64(dev->domain_id), KF_ERR_DOMAIN);
    KF_ENSURE(dev->mkek_key_id > 0 && fits_i64(dev->mkek_key_id) && fits_i64(dev->counter),
              KF_ERR_ARG);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_DEVICE_INSERT, &s));
    sqlite3_bind_text(s, 1, dev->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)dev->domain_id);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)dev->mkek_key_id);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)dev->counter);
    sqlite3_bind_int64(s, 5, dev->exported_at);
    sqlite3_bind_int64(s, 6, dev->created_at);
    int rc = kf_store_step_done(st, s, "device insert");
    return rc == KF_ERR_EXISTS ? KF_ERR_DEVICE_EXISTS : rc;
}

int kf_store_device_get(kf_store *st, const char *id, struct kf_device *out)
{
    KF_ENSURE(st && out, KF_ERR_ARG);
    KF_ENSURE(device_id_ok(id), KF_ERR_DEVICE_UNKNOWN);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_DEVICE_GET, &s));
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    int err = KF_OK;
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        err = copy_text(s, 0, out->id, sizeof(out->id));
        out->domain_id = (uint64_t)sqlite3_column_int64(s, 1);
        out->mkek_key_id = (uint64_t)sqlite3_column_int64(s, 2);
        out->counter = (uint64_t)sqlite3_column_int64(s, 3);
        out->exported_at = sqlite3_column_int64(s, 4);
        out->created_at = sqlite3_column_int64(s, 5);
    } else if (rc == SQLITE_DONE) {
        err = KF_ERR_DEVICE_UNKNOWN;
    } else {
        err = kf_store_sqlite_error(st, rc, "device lookup");
    }
    sqlite3_reset(s);
    return err;
}

/* One-row UPDATE of a device; KF_ERR_DEVICE_UNKNOWN if it touched nothing. */
static int update_device(kf_store *st, enum kf_store_stmt id_stmt, const char *id, int64_t v,
                         const char *what)
{
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, id_stmt, &s));
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, v);
    KF_GUARD(kf_store_step_done(st, s, what));
    KF_ENSURE(sqlite3_changes(st->db) == 1, KF_ERR_DEVICE_UNKNOWN);
    return KF_OK;
}

int kf_store_device_set_counter(kf_store *st, const char *id, uint64_t counter)
{
    KF_ENSURE(st, KF_ERR_ARG);
    KF_ENSURE(device_id_ok(id), KF_ERR_DEVICE_UNKNOWN);
    KF_ENSURE(fits_i64(counter), KF_ERR_ARG);
    return update_device(st, KF_STMT_DEVICE_SET_COUNTER, id, (int64_t)counter, "device counter");
}

/* One device: C_X + 1 in one statement. */
static int next_counter(kf_store *st, const char *id, uint64_t *counter)
{
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_DEVICE_NEXT_COUNTER, &s));
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    int err;
    if (rc == SQLITE_ROW) {
        int64_t v = sqlite3_column_int64(s, 0);
        rc = sqlite3_step(s); /* finish the RETURNING update */
        err = rc == SQLITE_DONE ? KF_OK : kf_store_sqlite_error(st, rc, "device counter");
        if (err == KF_OK && v < 1)
            err = KF_ERR_INTERNAL;
        if (err == KF_OK)
            *counter = (uint64_t)v;
    } else if (rc == SQLITE_DONE) {
        err = KF_ERR_NOT_FOUND; /* unknown, or at the counter's end: told apart below */
    } else {
        err = kf_store_sqlite_error(st, rc, "device counter");
    }
    sqlite3_reset(s);
    if (err == KF_ERR_NOT_FOUND) {
        struct kf_device dev;
        KF_GUARD(kf_store_device_get(st, id, &dev));
        return KF_ERR_DEVICE_COUNTER;
    }
    return err;
}

int kf_store_device_next_counters(kf_store *st, const char *const ids[2], uint64_t counters[2])
{
    KF_ENSURE(st && ids && counters, KF_ERR_ARG);
    for (int i = 0; i < 2; i++)
        KF_ENSURE(device_id_ok(ids[i]), KF_ERR_DEVICE_UNKNOWN);
    KF_ENSURE(strcmp(ids[0], ids[1]) != 0, KF_ERR_ARG);
    for (int i = 0; i < 2; i++)
        KF_GUARD(next_counter(st, ids[i], &counters[i]));
    return KF_OK;
}

int kf_store_device_set_exported(kf_store *st, const char *id, int64_t when)
{
    KF_ENSURE(st && when > 0, KF_ERR_ARG);
    KF_ENSURE(device_id_ok(id), KF_ERR_DEVICE_UNKNOWN);
    int rc = update_device(st, KF_STMT_DEVICE_SET_EXPORTED, id, when, "device export mark");
    return rc == KF_ERR_ARG ? KF_ERR_DEVICE_EXPORTED : rc; /* the export-once trigger */
}

int kf_store_device_stats(kf_store *st, const char *id, struct kf_device_stats *out)
{
    KF_ENSURE(st && out, KF_ERR_ARG);
    KF_ENSURE(device_id_ok(id), KF_ERR_DEVICE_UNKNOWN);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_DEVICE_STATS, &s));
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    int err = KF_OK;
    if (rc == SQLITE_ROW) {
        out->last_kek_id = (uint64_t)sqlite3_column_int64(s, 0); /* NULL reads as 0 */
        out->acks_pending = (uint64_t)sqlite3_column_int64(s, 1);
    } else {
        err = kf_store_sqlite_error(st, rc, "device stats");
    }
    sqlite3_reset(s);
    return err;
}

int kf_store_kek_ids_next(kf_store *st, uint32_t count, uint64_t *first)
{
    KF_ENSURE(st && first && count >= 1 && count <= 8, KF_ERR_ARG);
    /* Outside a transaction the reservation would commit on its own; the
     * pairing service always reserves inside the transaction that uses them. */
    KF_ENSURE(!sqlite3_get_autocommit(st->db), KF_ERR_STATE);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_KEK_RESERVE, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)count);
    int rc = sqlite3_step(s);
    int err;
    if (rc == SQLITE_ROW) {
        int64_t last = sqlite3_column_int64(s, 0);
        rc = sqlite3_step(s); /* finish the RETURNING update */
        err = rc == SQLITE_DONE ? KF_OK : kf_store_sqlite_error(st, rc, "kek id reserve");
        if (err == KF_OK) {
            KF_ENSURE(last >= (int64_t)count, KF_ERR_INTERNAL);
            *first = (uint64_t)last - count + 1;
        }
    } else if (rc == SQLITE_DONE) {
        err = KF_ERR_INTERNAL; /* the mark row is made by the migration and never deleted */
    } else {
        err = kf_store_sqlite_error(st, rc, "kek id reserve");
    }
    sqlite3_reset(s);
    return err;
}

int kf_store_pair_kek_insert(kf_store *st, const struct kf_pair_kek *k)
{
    KF_ENSURE(st && k && device_id_ok(k->id_a) && device_id_ok(k->id_b), KF_ERR_ARG);
    KF_ENSURE(k->kek_id > 0 && fits_i64(k->kek_id) && k->domain_id > 0 && fits_i64(k->domain_id) &&
                  fits_i64(k->counter_a) && fits_i64(k->counter_b),
              KF_ERR_ARG);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_PAIR_KEK_INSERT, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)k->kek_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)k->domain_id);
    sqlite3_bind_text(s, 3, k->id_a, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, k->id_b, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)k->counter_a);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)k->counter_b);
    sqlite3_bind_int64(s, 7, k->not_before);
    sqlite3_bind_int64(s, 8, k->not_after);
    sqlite3_bind_int64(s, 9, k->max_uses);
    sqlite3_bind_int64(s, 10, k->kek_index);
    sqlite3_bind_int64(s, 11, k->issued_at);
    return kf_store_step_done(st, s, "pair kek insert");
}

int kf_store_pair_kek_get(kf_store *st, uint64_t kek_id, struct kf_pair_kek *out)
{
    KF_ENSURE(st && out, KF_ERR_ARG);
    KF_ENSURE(kek_id > 0 && fits_i64(kek_id), KF_ERR_NOT_FOUND);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, KF_STMT_PAIR_KEK_GET, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)kek_id);
    int rc = sqlite3_step(s);
    int err = KF_OK;
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        out->kek_id = (uint64_t)sqlite3_column_int64(s, 0);
        out->domain_id = (uint64_t)sqlite3_column_int64(s, 1);
        err = copy_text(s, 2, out->id_a, sizeof(out->id_a));
        if (err == KF_OK)
            err = copy_text(s, 3, out->id_b, sizeof(out->id_b));
        out->counter_a = (uint64_t)sqlite3_column_int64(s, 4);
        out->counter_b = (uint64_t)sqlite3_column_int64(s, 5);
        out->not_before = sqlite3_column_int64(s, 6);
        out->not_after = sqlite3_column_int64(s, 7);
        out->max_uses = (uint32_t)sqlite3_column_int64(s, 8);
        out->kek_index = (uint32_t)sqlite3_column_int64(s, 9);
        out->issued_at = sqlite3_column_int64(s, 10);
        out->ack_a_status = (uint32_t)sqlite3_column_int64(s, 11);
        out->ack_a_at = sqlite3_column_int64(s, 12);
        out->ack_b_status = (uint32_t)sqlite3_column_int64(s, 13);
        out->ack_b_at = sqlite3_column_int64(s, 14);
    } else if (rc == SQLITE_DONE) {
        err = KF_ERR_NOT_FOUND;
    } else {
        err = kf_store_sqlite_error(st, rc, "pair kek lookup");
    }
    sqlite3_reset(s);
    return err;
}

int kf_store_pair_kek_ack(kf_store *st, uint64_t first_kek_id, const char *device, int role,
                          uint32_t status, int64_t when)
{
    KF_ENSURE(st && (role == 1 || role == 2) && status >= 1, KF_ERR_ARG);
    KF_ENSURE(device_id_ok(device), KF_ERR_ACK_UNKNOWN);
    KF_ENSURE(first_kek_id > 0 && first_kek_id <= (uint64_t)INT64_MAX - 8, KF_ERR_ACK_UNKNOWN);
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, role == 1 ? KF_STMT_PAIR_KEK_ACK_A : KF_STMT_PAIR_KEK_ACK_B, &s));
    sqlite3_bind_int64(s, 1, (sqlite3_int64)first_kek_id);
    sqlite3_bind_text(s, 2, device, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, status);
    sqlite3_bind_int64(s, 4, when);
    int rc = kf_store_step_done(st, s, "pair kek ack");
    if (rc == KF_ERR_ARG)
        return KF_ERR_ACK_REPLAY; /* the ack-once trigger */
    KF_GUARD(rc);
    KF_ENSURE(sqlite3_changes(st->db) >= 1, KF_ERR_ACK_UNKNOWN);
    return KF_OK;
}
