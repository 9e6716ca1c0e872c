/*
 * The store's connection: opening the file safely, the schema and its
 * migrations, transactions and the prepared-statement cache.
 */
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfleet/log.h"
#include "store_internal.h"

#define BUSY_TIMEOUT_MS 10000
#define SCHEMA_MODULE "store"

/*
 * Migrations, applied in order, each inside one transaction together with the
 * version bump. Step i brings the schema from version i to i + 1. Never edit a
 * released step; append a new one.
 */
static const char *const store_migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE domain("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  name TEXT NOT NULL UNIQUE,"
    "  parent_id INTEGER REFERENCES domain(id),"
    "  wrapped_key BLOB,"
    "  created INTEGER NOT NULL,"
    "  last_key_id INTEGER NOT NULL DEFAULT 0 CHECK (last_key_id >= 0));"
    /* The key ID counter is the high-water mark: it may never go back. */
    "CREATE TRIGGER domain_key_id_forward BEFORE UPDATE OF last_key_id ON domain"
    "  WHEN NEW.last_key_id < OLD.last_key_id"
    "  BEGIN SELECT RAISE(ABORT, 'key id counter may not go back'); END;"
    "CREATE TABLE object("
    "  domain_id INTEGER NOT NULL REFERENCES domain(id),"
    "  key_id INTEGER NOT NULL,"
    "  object_type INTEGER NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  crypto_alg INTEGER NOT NULL DEFAULT 0,"
    "  crypto_length INTEGER NOT NULL DEFAULT 0,"
    "  usage_mask INTEGER NOT NULL DEFAULT 0,"
    "  key_format INTEGER NOT NULL DEFAULT 0,"
    "  name TEXT NOT NULL DEFAULT '',"
    "  version INTEGER NOT NULL DEFAULT 0,"
    "  initial_date INTEGER NOT NULL DEFAULT 0,"
    "  activation_date INTEGER NOT NULL DEFAULT 0,"
    "  deactivation_date INTEGER NOT NULL DEFAULT 0,"
    "  destroy_date INTEGER NOT NULL DEFAULT 0,"
    "  compromise_date INTEGER NOT NULL DEFAULT 0,"
    "  compromise_occurrence_date INTEGER NOT NULL DEFAULT 0,"
    "  last_change_date INTEGER NOT NULL DEFAULT 0,"
    "  revocation_reason INTEGER NOT NULL DEFAULT 0,"
    "  revocation_message TEXT NOT NULL DEFAULT '',"
    "  material BLOB,"
    "  attributes BLOB,"
    "  PRIMARY KEY (domain_id, key_id)) WITHOUT ROWID;"
    "CREATE INDEX object_by_name ON object(domain_id, name);"
    /* Only IDs the domain's counter handed out may be used. */
    "CREATE TRIGGER object_key_id_reserved BEFORE INSERT ON object"
    "  WHEN NEW.key_id < 1 OR NEW.key_id >"
    "       (SELECT last_key_id FROM domain WHERE id = NEW.domain_id)"
    "  BEGIN SELECT RAISE(ABORT, 'key id was not reserved'); END;",
    /* 1 -> 2: devices and pairwise KEK metadata (docs/pairing.md). No key is
     * stored here: the device's MKEK is an ordinary wrapped object of its
     * domain (mkek_key_id), and a KEK leaves nothing but its metadata. */
    "CREATE TABLE device("
    "  id TEXT PRIMARY KEY,"
    "  domain_id INTEGER NOT NULL REFERENCES domain(id),"
    "  mkek_key_id INTEGER NOT NULL CHECK (mkek_key_id >= 1),"
    "  counter INTEGER NOT NULL DEFAULT 0 CHECK (counter >= 0),"
    "  exported_at INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE UNIQUE INDEX device_by_mkek ON device(domain_id, mkek_key_id);"
    /* C_X only moves forward (a replayed message must stay stale on the device). */
    "CREATE TRIGGER device_counter_forward BEFORE UPDATE OF counter ON device"
    "  WHEN NEW.counter < OLD.counter"
    "  BEGIN SELECT RAISE(ABORT, 'device counter may not go back'); END;"
    /* The installation package is exported once: the mark is never taken back. */
    "CREATE TRIGGER device_exported_once BEFORE UPDATE OF exported_at ON device"
    "  WHEN OLD.exported_at != 0 AND NEW.exported_at != OLD.exported_at"
    "  BEGIN SELECT RAISE(ABORT, 'device was already exported'); END;"
    "CREATE TRIGGER device_identity_fixed BEFORE UPDATE OF id, domain_id, mkek_key_id,"
    "  created_at ON device"
    "  BEGIN SELECT RAISE(ABORT, 'device identity may not change'); END;"
    /* Device IDs are never reused: a row, once made, stays. */
    "CREATE TRIGGER device_never_deleted BEFORE DELETE ON device"
    "  BEGIN SELECT RAISE(ABORT, 'device ids are never reused'); END;"
    /* KEK IDs: server-wide, strictly increasing, never reused. last_reserved is
     * the high-water mark handed out; last_inserted the highest ID that got a
     * row. Both only move forward, so deleting pair_kek rows frees nothing. */
    "CREATE TABLE kek_id_mark("
    "  one INTEGER PRIMARY KEY CHECK (one = 1),"
    "  last_reserved INTEGER NOT NULL CHECK (last_reserved >= 0),"
    "  last_inserted INTEGER NOT NULL CHECK (last_inserted >= 0));"
    "INSERT INTO kek_id_mark(one, last_reserved, last_inserted) VALUES (1, 0, 0);"
    "CREATE TRIGGER kek_id_mark_forward BEFORE UPDATE ON kek_id_mark"
    "  WHEN NEW.last_reserved < OLD.last_reserved OR NEW.last_inserted < OLD.last_inserted"
    "    OR NEW.one != OLD.one"
    "  BEGIN SELECT RAISE(ABORT, 'kek id counter may not go back'); END;"
    "CREATE TRIGGER kek_id_mark_kept BEFORE DELETE ON kek_id_mark"
    "  BEGIN SELECT RAISE(ABORT, 'kek id counter may not be removed'); END;"
    "CREATE TABLE pair_kek("
    "  kek_id INTEGER PRIMARY KEY,"
    "  domain_id INTEGER NOT NULL REFERENCES domain(id),"
    "  id_a TEXT NOT NULL REFERENCES device(id),"
    "  id_b TEXT NOT NULL REFERENCES device(id),"
    "  counter_a INTEGER NOT NULL,"
    "  counter_b INTEGER NOT NULL,"
    "  not_before INTEGER NOT NULL,"
    "  not_after INTEGER NOT NULL,"
    "  max_uses INTEGER NOT NULL,"
    "  kek_index INTEGER NOT NULL CHECK (kek_index >= 0),"
    "  issued_at INTEGER NOT NULL,"
    "  ack_a_status INTEGER NOT NULL DEFAULT 0,"
    "  ack_a_at INTEGER NOT NULL DEFAULT 0,"
    "  ack_b_status INTEGER NOT NULL DEFAULT 0,"
    "  ack_b_at INTEGER NOT NULL DEFAULT 0,"
    "  CHECK (id_a != id_b));"
    "CREATE INDEX pair_kek_by_a ON pair_kek(id_a);"
    "CREATE INDEX pair_kek_by_b ON pair_kek(id_b);"
    /* Only reserved IDs, each at most once, in increasing order. */
    "CREATE TRIGGER pair_kek_id_reserved BEFORE INSERT ON pair_kek"
    "  WHEN NEW.kek_id IS NULL"
    "    OR NEW.kek_id > (SELECT last_reserved FROM kek_id_mark WHERE one = 1)"
    "    OR NEW.kek_id <= (SELECT last_inserted FROM kek_id_mark WHERE one = 1)"
    "  BEGIN SELECT RAISE(ABORT, 'kek id was not reserved or was already used'); END;"
    "CREATE TRIGGER pair_kek_id_used AFTER INSERT ON pair_kek"
    "  BEGIN UPDATE kek_id_mark SET last_inserted = NEW.kek_id WHERE one = 1; END;"
    /* What was issued is history: only the acknowledgements are written later,
     * each once. */
    "CREATE TRIGGER pair_kek_fixed BEFORE UPDATE OF kek_id, domain_id, id_a, id_b, counter_a,"
    "  counter_b, not_before, not_after, max_uses, kek_index, issued_at ON pair_kek"
    "  BEGIN SELECT RAISE(ABORT, 'issued kek metadata may not change'); END;"
    "CREATE TRIGGER pair_kek_ack_a_once BEFORE UPDATE OF ack_a_status, ack_a_at ON pair_kek"
    "  WHEN OLD.ack_a_status != 0"
    "  BEGIN SELECT RAISE(ABORT, 'kek already acknowledged by device a'); END;"
    "CREATE TRIGGER pair_kek_ack_b_once BEFORE UPDATE OF ack_b_status, ack_b_at ON pair_kek"
    "  WHEN OLD.ack_b_status != 0"
    "  BEGIN SELECT RAISE(ABORT, 'kek already acknowledged by device b'); END;",
    /* 2 -> 3: manufacturing (docs/manufacturing.md). The roles of a domain, its
     * archive of device master key records (each a signed record; the key in it
     * sealed to Brass or under Brass's archive key, never in the clear), and the
     * pieces verified good (duplicate detection). Private role keys are ordinary
     * wrapped objects of the domain (sign/enc/archive_key_id). */
    "CREATE TABLE mfg_domain("
    "  domain_id INTEGER PRIMARY KEY REFERENCES domain(id),"
    "  kind INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),"
    "  country TEXT NOT NULL DEFAULT '',"
    "  authority_id TEXT NOT NULL,"
    "  oak_id TEXT NOT NULL,"
    "  brass_id TEXT NOT NULL,"
    "  last_key_id INTEGER NOT NULL DEFAULT 0 CHECK (last_key_id >= 0),"
    "  oak_last_key_id INTEGER NOT NULL DEFAULT 0 CHECK (oak_last_key_id >= 0),"
    "  created INTEGER NOT NULL);"
    /* The archive's key ID counter (MI0') and Oak's last-seen key ID (MI1) only go forward. */
    "CREATE TRIGGER mfg_domain_forward BEFORE UPDATE ON mfg_domain"
    "  WHEN NEW.last_key_id < OLD.last_key_id OR NEW.oak_last_key_id < OLD.oak_last_key_id"
    "    OR NEW.domain_id != OLD.domain_id OR NEW.kind != OLD.kind"
    "  BEGIN SELECT RAISE(ABORT, 'mfg key id counters may not go back'); END;"
    "CREATE TABLE mfg_role("
    "  role_id TEXT NOT NULL,"
    "  domain_id INTEGER NOT NULL REFERENCES domain(id),"
    "  role_type INTEGER NOT NULL CHECK (role_type BETWEEN 1 AND 5),"
    "  sign_pub BLOB NOT NULL,"
    "  enc_pub BLOB,"
    "  cert BLOB NOT NULL,"
    "  sign_key_id INTEGER NOT NULL DEFAULT 0,"
    "  enc_key_id INTEGER NOT NULL DEFAULT 0,"
    "  archive_key_id INTEGER NOT NULL DEFAULT 0,"
    "  created INTEGER NOT NULL,"
    "  PRIMARY KEY (role_id, domain_id)) WITHOUT ROWID;"
    "CREATE TRIGGER mfg_role_never_deleted BEFORE DELETE ON mfg_role"
    "  BEGIN SELECT RAISE(ABORT, 'role ids are never reused'); END;"
    "CREATE TABLE mfg_key("
    "  domain_id INTEGER NOT NULL REFERENCES domain(id),"
    "  key_id INTEGER NOT NULL CHECK (key_id >= 1),"
    "  steel_id TEXT NOT NULL,"
    "  status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 6),"
    "  reason INTEGER NOT NULL DEFAULT 0,"
    "  msn TEXT NOT NULL DEFAULT '',"
    "  indicia TEXT NOT NULL DEFAULT '',"
    "  country TEXT NOT NULL DEFAULT '',"
    "  mi3 BLOB NOT NULL,"
    "  record BLOB NOT NULL,"
    "  t_request INTEGER NOT NULL,"
    "  t_install INTEGER NOT NULL DEFAULT 0,"
    "  t_install_verify INTEGER NOT NULL DEFAULT 0,"
    "  t_register INTEGER NOT NULL DEFAULT 0,"
    "  t_register_verify INTEGER NOT NULL DEFAULT 0,"
    "  moved_domain_id INTEGER NOT NULL DEFAULT 0,"
    "  moved_key_id INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (domain_id, key_id)) WITHOUT ROWID;"
    "CREATE INDEX mfg_key_by_msn ON mfg_key(domain_id, msn);"
    "CREATE INDEX mfg_key_by_steel ON mfg_key(domain_id, steel_id, status);"
    "CREATE TRIGGER mfg_key_id_reserved BEFORE INSERT ON mfg_key"
    "  WHEN NEW.key_id > (SELECT last_key_id FROM mfg_domain WHERE domain_id = NEW.domain_id)"
    "  BEGIN SELECT RAISE(ABORT, 'mfg key id was not reserved'); END;"
    "CREATE TRIGGER mfg_key_never_deleted BEFORE DELETE ON mfg_key"
    "  BEGIN SELECT RAISE(ABORT, 'archive records are never deleted'); END;"
    "CREATE TRIGGER mfg_key_identity_fixed BEFORE UPDATE OF domain_id, key_id, steel_id, mi3,"
    "  t_request ON mfg_key"
    "  BEGIN SELECT RAISE(ABORT, 'archive record identity may not change'); END;"
    /* Fig. 14/15: New -> Installed | Bad; Installed -> Active | Bad | Obsolete |
     * Transferred; Active -> Obsolete. Bad, Obsolete and Transferred are final. */
    "CREATE TRIGGER mfg_key_status_moves BEFORE UPDATE OF status ON mfg_key"
    "  WHEN NEW.status != OLD.status AND NOT ("
    "    (OLD.status = 1 AND NEW.status IN (2, 3)) OR"
    "    (OLD.status = 2 AND NEW.status IN (3, 4, 5, 6)) OR"
    "    (OLD.status = 4 AND NEW.status = 5))"
    "  BEGIN SELECT RAISE(ABORT, 'mfg key status transition not allowed'); END;"
    "CREATE TABLE mfg_piece("
    "  domain_id INTEGER NOT NULL,"
    "  msn TEXT NOT NULL,"
    "  piece_count INTEGER NOT NULL,"
    "  verified_at INTEGER NOT NULL,"
    "  PRIMARY KEY (domain_id, msn, piece_count)) WITHOUT ROWID;",
};
#define STORE_SCHEMA_VERSION ((int)(sizeof(store_migrations) / sizeof(store_migrations[0])))

/* The archive's columns, in the order src/store/mfg.c reads them. */
#define MFG_KEY_COLUMNS                                                                         \
    "domain_id, key_id, steel_id, status, reason, msn, indicia, country, mi3, record, t_request," \
    " t_install, t_install_verify, t_register, t_register_verify, moved_domain_id, moved_key_id"

static const char *const stmt_sql[KF_STMT_COUNT] = {
    [KF_STMT_BEGIN] = "BEGIN IMMEDIATE",
    [KF_STMT_COMMIT] = "COMMIT",
    [KF_STMT_ROLLBACK] = "ROLLBACK",
    [KF_STMT_DOMAIN_INSERT] = "INSERT INTO domain(name, parent_id, wrapped_key, created) "
                              "VALUES (?1, ?2, ?3, ?4)",
    [KF_STMT_DOMAIN_BY_NAME] = "SELECT id, name, parent_id, created, last_key_id, wrapped_key "
                               "FROM domain WHERE name = ?1",
    [KF_STMT_DOMAIN_BY_ID] = "SELECT id, name, parent_id, created, last_key_id, wrapped_key "
                             "FROM domain WHERE id = ?1",
    [KF_STMT_DOMAIN_LIST] = "SELECT id, name, parent_id, created, last_key_id, wrapped_key "
                            "FROM domain ORDER BY id",
    [KF_STMT_DOMAIN_SET_KEY] = "UPDATE domain SET wrapped_key = ?2 WHERE id = ?1",
    [KF_STMT_NEXT_KEY_ID] = "UPDATE domain SET last_key_id = last_key_id + 1 WHERE id = ?1 "
                            "RETURNING last_key_id",
    [KF_STMT_OBJECT_INSERT] =
        "INSERT INTO object(domain_id, key_id, object_type, state, crypto_alg, crypto_length,"
        " usage_mask, key_format, name, version, initial_date, activation_date,"
        " deactivation_date, destroy_date, compromise_date, compromise_occurrence_date,"
        " last_change_date, revocation_reason, revocation_message, material, attributes) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,"
        " ?18, ?19, ?20, ?21)",
    [KF_STMT_OBJECT_GET] =
        "SELECT domain_id, key_id, object_type, state, crypto_alg, crypto_length, usage_mask,"
        " key_format, name, version, initial_date, activation_date, deactivation_date,"
        " destroy_date, compromise_date, compromise_occurrence_date, last_change_date,"
        " revocation_reason, revocation_message, material, attributes "
        "FROM object WHERE domain_id = ?1 AND key_id = ?2",
    [KF_STMT_OBJECT_UPDATE] =
        "UPDATE object SET object_type = ?3, state = ?4, crypto_alg = ?5, crypto_length = ?6,"
        " usage_mask = ?7, key_format = ?8, name = ?9, version = ?10, initial_date = ?11,"
        " activation_date = ?12, deactivation_date = ?13, destroy_date = ?14,"
        " compromise_date = ?15, compromise_occurrence_date = ?16, last_change_date = ?17,"
        " revocation_reason = ?18, revocation_message = ?19, material = COALESCE(?20, material),"
        " attributes = ?21 "
        "WHERE domain_id = ?1 AND key_id = ?2",
    [KF_STMT_OBJECT_DESTROY_MATERIAL] =
        "UPDATE object SET material = NULL WHERE domain_id = ?1 AND key_id = ?2",
    [KF_STMT_OBJECT_DELETE] = "DELETE FROM object WHERE domain_id = ?1 AND key_id = ?2",
    [KF_STMT_OBJECT_LIST] =
        "SELECT domain_id, key_id, object_type, state, crypto_alg, crypto_length, usage_mask,"
        " key_format, name, version, initial_date, activation_date, deactivation_date,"
        " destroy_date, compromise_date, compromise_occurrence_date, last_change_date,"
        " revocation_reason, revocation_message, CASE WHEN ?7 THEN material END, attributes "
        "FROM object WHERE domain_id = ?1 AND (?2 = 0 OR object_type = ?2)"
        " AND (?3 = 0 OR state = ?3) AND (?4 IS NULL OR name = ?4) "
        "ORDER BY key_id LIMIT ?5 OFFSET ?6",
    [KF_STMT_DEVICE_INSERT] = "INSERT INTO device(id, domain_id, mkek_key_id, counter, exported_at,"
                              " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [KF_STMT_DEVICE_GET] = "SELECT id, domain_id, mkek_key_id, counter, exported_at, created_at "
                           "FROM device WHERE id = ?1",
    [KF_STMT_DEVICE_SET_COUNTER] = "UPDATE device SET counter = ?2 WHERE id = ?1",
    [KF_STMT_DEVICE_SET_EXPORTED] = "UPDATE device SET exported_at = ?2 WHERE id = ?1",
    [KF_STMT_DEVICE_STATS] =
        "SELECT (SELECT max(kek_id) FROM pair_kek WHERE id_a = ?1 OR id_b = ?1),"
        " (SELECT count(*) FROM pair_kek WHERE kek_index = 0 AND"
        "  ((id_a = ?1 AND ack_a_status = 0) OR (id_b = ?1 AND ack_b_status = 0)))",
    [KF_STMT_KEK_RESERVE] = "UPDATE kek_id_mark SET last_reserved = last_reserved + ?1 "
                            "WHERE one = 1 RETURNING last_reserved",
    [KF_STMT_PAIR_KEK_INSERT] =
        "INSERT INTO pair_kek(kek_id, domain_id, id_a, id_b, counter_a, counter_b, not_before,"
        " not_after, max_uses, kek_index, issued_at) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [KF_STMT_PAIR_KEK_GET] =
        "SELECT kek_id, domain_id, id_a, id_b, counter_a, counter_b, not_before, not_after,"
        " max_uses, kek_index, issued_at, ack_a_status, ack_a_at, ack_b_status, ack_b_at "
        "FROM pair_kek WHERE kek_id = ?1",
    /* Every KEK of one message: IDs first .. first + 7 whose index puts them there. */
    [KF_STMT_PAIR_KEK_ACK_A] = "UPDATE pair_kek SET ack_a_status = ?3, ack_a_at = ?4 "
                               "WHERE kek_id BETWEEN ?1 AND ?1 + 7 AND kek_id - kek_index = ?1"
                               " AND id_a = ?2",
    [KF_STMT_PAIR_KEK_ACK_B] = "UPDATE pair_kek SET ack_b_status = ?3, ack_b_at = ?4 "
                               "WHERE kek_id BETWEEN ?1 AND ?1 + 7 AND kek_id - kek_index = ?1"
                               " AND id_b = ?2",
    [KF_STMT_DEVICE_NEXT_COUNTER] = "UPDATE device SET counter = counter + 1 "
                                    "WHERE id = ?1 AND counter < 9223372036854775807 "
                                    "RETURNING counter",
    [KF_STMT_SAVEPOINT] = "SAVEPOINT kf_job",
    [KF_STMT_SAVEPOINT_RELEASE] = "RELEASE kf_job",
    [KF_STMT_SAVEPOINT_ROLLBACK] = "ROLLBACK TO kf_job",
    [KF_STMT_MFG_DOMAIN_INSERT] =
        "INSERT INTO mfg_domain(domain_id, kind, country, authority_id, oak_id, brass_id,"
        " last_key_id, oak_last_key_id, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7)",
    [KF_STMT_MFG_DOMAIN_GET] =
        "SELECT domain_id, kind, country, authority_id, oak_id, brass_id, last_key_id,"
        " oak_last_key_id, created FROM mfg_domain WHERE domain_id = ?1",
    [KF_STMT_MFG_DOMAIN_LIST] =
        "SELECT domain_id, kind, country, authority_id, oak_id, brass_id, last_key_id,"
        " oak_last_key_id, created FROM mfg_domain ORDER BY domain_id",
    [KF_STMT_MFG_NEXT_KEY_ID] = "UPDATE mfg_domain SET last_key_id = last_key_id + 1 "
                                "WHERE domain_id = ?1 RETURNING last_key_id",
    [KF_STMT_MFG_OAK_SEEN] = "UPDATE mfg_domain SET oak_last_key_id = ?2 WHERE domain_id = ?1",
    [KF_STMT_MFG_ROLE_INSERT] =
        "INSERT INTO mfg_role(role_id, domain_id, role_type, sign_pub, enc_pub, cert, sign_key_id,"
        " enc_key_id, archive_key_id, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [KF_STMT_MFG_ROLE_GET] =
        "SELECT role_id, domain_id, role_type, sign_pub, enc_pub, cert, sign_key_id, enc_key_id,"
        " archive_key_id, created FROM mfg_role WHERE domain_id = ?1 AND role_id = ?2",
    [KF_STMT_MFG_ROLE_LIST] =
        "SELECT role_id, domain_id, role_type, sign_pub, enc_pub, cert, sign_key_id, enc_key_id,"
        " archive_key_id, created FROM mfg_role WHERE domain_id = ?1 ORDER BY role_id",
    [KF_STMT_MFG_KEY_INSERT] =
        "INSERT INTO mfg_key(domain_id, key_id, steel_id, status, reason, msn, indicia, country,"
        " mi3, record, t_request, t_install, t_install_verify, t_register, t_register_verify,"
        " moved_domain_id, moved_key_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
        " ?12, ?13, ?14, ?15, ?16, ?17)",
    [KF_STMT_MFG_KEY_GET] =
        "SELECT " MFG_KEY_COLUMNS " FROM mfg_key WHERE domain_id = ?1 AND key_id = ?2",
    [KF_STMT_MFG_KEY_BY_MSN] = "SELECT " MFG_KEY_COLUMNS " FROM mfg_key "
                               "WHERE domain_id = ?1 AND msn = ?2 ORDER BY key_id DESC LIMIT 1",
    [KF_STMT_MFG_KEY_OPEN_FOR_STEEL] =
        "SELECT " MFG_KEY_COLUMNS " FROM mfg_key "
        "WHERE domain_id = ?1 AND steel_id = ?2 AND status = 1 ORDER BY key_id DESC LIMIT 1",
    [KF_STMT_MFG_KEY_UPDATE] =
        "UPDATE mfg_key SET status = ?3, reason = ?4, msn = ?5, indicia = ?6, country = ?7,"
        " record = ?8, t_install = ?9, t_install_verify = ?10, t_register = ?11,"
        " t_register_verify = ?12, moved_domain_id = ?13, moved_key_id = ?14 "
        "WHERE domain_id = ?1 AND key_id = ?2",
    [KF_STMT_MFG_KEY_LIST] = "SELECT " MFG_KEY_COLUMNS " FROM mfg_key "
                             "WHERE domain_id = ?1 AND (?2 = 0 OR status = ?2) ORDER BY key_id",
};

int kf_store_sqlite_error(kf_store *st, int rc, const char *what)
{
    switch (rc) {
    case SQLITE_NOMEM:
        return KF_ERR_NOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        kf_warn("store: %s: database is busy", what);
        return KF_ERR_TIMEOUT;
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return KF_ERR_EXISTS;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        /* Every foreign key in this schema points at a domain. */
        return KF_ERR_DOMAIN;
    case SQLITE_CONSTRAINT_TRIGGER:
        /* The schema's guard triggers: unreserved key ID, counter going back. */
        kf_warn("store: %s refused: %s", what, st && st->db ? sqlite3_errmsg(st->db) : "-");
        return KF_ERR_ARG;
    default:
        break;
    }
    kf_error("store: %s: %s (sqlite %d)", what, st && st->db ? sqlite3_errmsg(st->db) : "-", rc);
    return KF_ERR_DB;
}

int kf_store_stmt(kf_store *st, enum kf_store_stmt id, sqlite3_stmt **out)
{
    KF_ENSURE(st && (int)id >= 0 && id < KF_STMT_COUNT, KF_ERR_ARG);
    sqlite3_stmt *s = st->stmt[id];
    if (!s) {
        int rc = sqlite3_prepare_v3(st->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s,
                                    NULL);
        if (rc != SQLITE_OK)
            return kf_store_sqlite_error(st, rc, "prepare");
        st->stmt[id] = s;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    *out = s;
    return KF_OK;
}

int kf_store_step_done(kf_store *st, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    int err = rc == SQLITE_DONE ? KF_OK : kf_store_sqlite_error(st, rc, what);
    sqlite3_reset(s);
    return err;
}

int kf_store_each_row(kf_store *st, sqlite3_stmt *s, const char *what,
                      int (*row)(sqlite3_stmt *s, void *ctx), void *ctx)
{
    int err = KF_OK;
    for (;;) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            err = kf_store_sqlite_error(st, rc, what);
            break;
        }
        err = row(s, ctx);
        if (err != KF_OK)
            break;
    }
    sqlite3_reset(s);
    return err > 0 ? KF_OK : err;
}

static int exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        kf_error("store: %s (sqlite %d)", msg ? msg : sqlite3_errstr(rc), rc);
        sqlite3_free(msg);
        return rc == SQLITE_BUSY ? KF_ERR_TIMEOUT : KF_ERR_DB;
    }
    return KF_OK;
}

/* The file is created here, not by SQLite, so it gets mode 0600 regardless
 * of umask and a symlink planted at the path is refused. SQLite gives the
 * -wal and -shm files the same mode as the database file.
 * An existing file is never opened here: closing any descriptor of the
 * database file drops every POSIX lock this process holds on it, including
 * the SHARED lock of a connection already open (the kms opens its readers
 * after the writer). Without that lock another process's sqlite3 would take
 * the file as unused, checkpoint and delete the WAL under the running daemon,
 * and later commits would go to an unlinked file. */
static int create_db_file(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) == 0) {
        if (!S_ISREG(sb.st_mode)) {
            kf_error("store: %s is not a regular file (a symlink?)", path);
            return KF_ERR_PERM;
        }
        return KF_OK;
    }
    if (errno != ENOENT) {
        kf_error("store: cannot stat %s: %s", path, strerror(errno));
        return errno == EACCES ? KF_ERR_PERM : KF_ERR_IO;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST)
        return create_db_file(path); /* raced with another opener: check what is there */
    if (fd < 0) {
        kf_error("store: cannot open %s: %s", path, strerror(errno));
        return errno == EACCES ? KF_ERR_PERM : KF_ERR_IO;
    }
    close(fd);
    return KF_OK;
}

static int read_schema_version(sqlite3 *db, int *version)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT version FROM schema_version WHERE module = ?1", -1,
                                &s, NULL);
    if (rc != SQLITE_OK) {
        kf_error("store: reading schema version: %s", sqlite3_errmsg(db));
        return KF_ERR_DB;
    }
    sqlite3_bind_text(s, 1, SCHEMA_MODULE, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    *version = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? KF_OK : KF_ERR_DB;
}

static int write_schema_version(sqlite3 *db, int version)
{
    char sql[160];
    snprintf(sql, sizeof(sql),
             "INSERT INTO schema_version(module, version) VALUES ('" SCHEMA_MODULE "', %d) "
             "ON CONFLICT(module) DO UPDATE SET version = excluded.version",
             version);
    return exec_sql(db, sql);
}

static int migrate_locked(sqlite3 *db)
{
    KF_GUARD(exec_sql(db, "CREATE TABLE IF NOT EXISTS schema_version("
                          "module TEXT PRIMARY KEY, version INTEGER NOT NULL)"));
    int version;
    KF_GUARD(read_schema_version(db, &version));
    if (version > STORE_SCHEMA_VERSION) {
        kf_error("store: database schema version %d, this program knows up to %d", version,
                 STORE_SCHEMA_VERSION);
        return KF_ERR_SCHEMA;
    }
    for (int v = version; v < STORE_SCHEMA_VERSION; v++) {
        KF_GUARD(exec_sql(db, store_migrations[v]));
        KF_GUARD(write_schema_version(db, v + 1));
        kf_info("store: schema migrated to version %d", v + 1);
    }
    return KF_OK;
}

/* Take the write lock first, so two processes opening a fresh file at once
 * do not both try to create the tables. */
static int migrate(sqlite3 *db)
{
    KF_GUARD(exec_sql(db, "BEGIN IMMEDIATE"));
    int err = migrate_locked(db);
    if (err == KF_OK)
        err = exec_sql(db, "COMMIT");
    if (err != KF_OK)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return err;
}

static int configure(sqlite3 *db, bool in_memory)
{
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    if (in_memory) /* fuzzing and tests only: nothing to make durable */
        return exec_sql(db, "PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON;");
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &s, NULL);
    if (rc != SQLITE_OK)
        return KF_ERR_DB;
    rc = sqlite3_step(s);
    const unsigned char *mode = rc == SQLITE_ROW ? sqlite3_column_text(s, 0) : NULL;
    bool wal = mode && strcmp((const char *)mode, "wal") == 0;
    sqlite3_finalize(s);
    if (!wal) {
        kf_error("store: cannot switch the database to WAL mode: %s", sqlite3_errmsg(db));
        return KF_ERR_DB;
    }
    return exec_sql(db, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
                        " PRAGMA secure_delete=ON;");
}

/* SQLite's allocator counts every allocation under one process-wide mutex
 * unless told not to; with several connections on two cores that mutex was
 * a contention point (profiled under pair-key load). Only possible before
 * SQLite initialises: a process that used SQLite first keeps its setting. */
static void configure_library(void)
{
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

int kf_store_open(const char *dir, kf_store **out)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    KF_ENSURE(dir && out, KF_ERR_ARG);
    *out = NULL;
    pthread_once(&once, configure_library);
    char path[4096];
    bool in_memory = strcmp(dir, KF_STORE_IN_MEMORY) == 0;
    if (in_memory) {
        snprintf(path, sizeof(path), ":memory:");
    } else {
        int n = snprintf(path, sizeof(path), "%s/%s", dir, KF_STORE_DB_NAME);
        KF_ENSURE(n > 0 && (size_t)n < sizeof(path), KF_ERR_LIMIT);
        KF_GUARD(create_db_file(path));
    }

    kf_store *st = calloc(1, sizeof(*st));
    KF_ENSURE(st, KF_ERR_NOMEM);
    st->in_memory = in_memory;
    st->wal_fd = -1;
    pthread_mutex_init(&st->sync_lock, NULL);
    if (!in_memory) {
        int n = snprintf(st->wal_path, sizeof(st->wal_path), "%s-wal", path);
        int m = snprintf(st->dir, sizeof(st->dir), "%s", dir);
        if (n <= 0 || (size_t)n >= sizeof(st->wal_path) || m <= 0 || (size_t)m >= sizeof(st->dir)) {
            kf_store_close(st);
            return KF_ERR_LIMIT;
        }
    }
    int rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    int err = rc == SQLITE_OK ? KF_OK : kf_store_sqlite_error(st, rc, "open");
    if (err == KF_OK)
        err = configure(st->db, in_memory);
    if (err == KF_OK)
        err = migrate(st->db);
    if (err != KF_OK) {
        kf_store_close(st);
        return err;
    }
    *out = st;
    return KF_OK;
}

void kf_store_close(kf_store *st)
{
    if (!st)
        return;
    if (st->db && !sqlite3_get_autocommit(st->db))
        kf_store_rollback(st);
    for (int i = 0; i < KF_STMT_COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    sqlite3_close(st->db);
    if (st->wal_fd >= 0)
        close(st->wal_fd);
    pthread_mutex_destroy(&st->sync_lock);
    free(st);
}

struct sqlite3 *kf_store_db(kf_store *st)
{
    return st ? st->db : NULL;
}

int kf_store_schema_version(void)
{
    return STORE_SCHEMA_VERSION;
}

static int run_simple(kf_store *st, enum kf_store_stmt id, const char *what)
{
    sqlite3_stmt *s;
    KF_GUARD(kf_store_stmt(st, id, &s));
    return kf_store_step_done(st, s, what);
}

/* synchronous=FULL (fsync per commit) or NORMAL (the WAL is written at commit
 * and fsync'ed by kf_store_sync). A PRAGMA takes effect when it is prepared,
 * so it is run as text, and only when the mode changes. */
static int set_relaxed(kf_store *st, bool relaxed)
{
    if (st->relaxed == relaxed)
        return KF_OK;
    KF_GUARD(exec_sql(st->db, relaxed ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL"));
    st->relaxed = relaxed;
    return KF_OK;
}

int kf_store_begin(kf_store *st)
{
    KF_ENSURE(st, KF_ERR_ARG);
    KF_ENSURE(sqlite3_get_autocommit(st->db), KF_ERR_STATE);
    KF_GUARD(set_relaxed(st, false));
    return run_simple(st, KF_STMT_BEGIN, "begin");
}

/* The WAL file's directory entry must be on disk before a commit is trusted
 * to an fdatasync of the file alone. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return KF_ERR_IO;
    int rc = fsync(fd) == 0 ? KF_OK : KF_ERR_IO;
    close(fd);
    return rc;
}

/* Under sync_lock. Opens the WAL (again, if the one we hold was unlinked). */
static int wal_open_locked(kf_store *st)
{
    struct stat sb;
    if (st->wal_fd >= 0 && (fstat(st->wal_fd, &sb) != 0 || sb.st_nlink == 0)) {
        close(st->wal_fd);
        st->wal_fd = -1;
    }
    if (st->wal_fd >= 0)
        return KF_OK;
    int fd = open(st->wal_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? KF_ERR_NOT_FOUND : KF_ERR_IO;
    if (sync_dir(st->dir) < 0) {
        close(fd);
        return KF_ERR_IO;
    }
    st->wal_fd = fd;
    return KF_OK;
}

int kf_store_begin_deferred(kf_store *st, bool *deferred)
{
    KF_ENSURE(st && deferred, KF_ERR_ARG);
    KF_ENSURE(sqlite3_get_autocommit(st->db), KF_ERR_STATE);
    bool can = false;
    if (!st->in_memory) {
        pthread_mutex_lock(&st->sync_lock);
        can = !st->sync_failed && (st->wal_fd >= 0 || wal_open_locked(st) == KF_OK);
        pthread_mutex_unlock(&st->sync_lock);
    }
    KF_GUARD(set_relaxed(st, can));
    *deferred = can;
    return run_simple(st, KF_STMT_BEGIN, "begin");
}

int kf_store_commit_deferred(kf_store *st, uint64_t *ticket)
{
    KF_ENSURE(st && ticket, KF_ERR_ARG);
    *ticket = 0;
    KF_GUARD(kf_store_commit(st));
    if (st->relaxed)
        *ticket = atomic_fetch_add(&st->committed, 1) + 1;
    return KF_OK;
}

/* A caller of kf_store_sync waiting for the syncer. */
struct store_sync_waiter {
    struct store_sync_waiter *next;
    uint64_t ticket;
    sem_t wake;
    bool take_over; /* set when woken: the caller is the syncer now */
    int result;
};

/* Under sync_lock, after a round: answer the waiters this round covered (or
 * all, on failure); hand the syncing to one that is still waiting, if any.
 * Returns the answered ones and the new syncer (to post after unlocking). */
static struct store_sync_waiter *settle_locked(kf_store *st, struct store_sync_waiter **next_syncer)
{
    struct store_sync_waiter *answered = NULL, *keep = NULL;
    *next_syncer = NULL;
    for (struct store_sync_waiter *w = st->sync_waiters, *n; w; w = n) {
        n = w->next;
        if (st->sync_failed || w->ticket <= st->synced) {
            w->result = w->ticket <= st->synced ? KF_OK : KF_ERR_IO;
            w->next = answered;
            answered = w;
        } else {
            w->next = keep;
            keep = w;
        }
    }
    if (keep) {
        *next_syncer = keep;
        keep = keep->next;
        (*next_syncer)->next = NULL;
        (*next_syncer)->take_over = true;
    } else {
        st->syncing = false;
    }
    st->sync_waiters = keep;
    /* A round ended: whoever waited for that goes on. */
    for (struct store_sync_waiter *w = st->idle_waiters, *n; w; w = n) {
        n = w->next;
        w->next = answered;
        answered = w;
    }
    st->idle_waiters = NULL;
    return answered;
}

/* The syncer: fdatasync until ticket is covered, then settle. No lock held on entry. */
static int sync_rounds(kf_store *st, uint64_t ticket)
{
    pthread_mutex_lock(&st->sync_lock);
    while (!st->sync_failed && st->synced < ticket) {
        /* Everything committed before this point is covered by what follows. */
        uint64_t target = atomic_load(&st->committed);
        int fd_rc = wal_open_locked(st);
        int fd = st->wal_fd;
        st->syncs++;
        pthread_mutex_unlock(&st->sync_lock);
        uint64_t t0 = kf_mono_ns();
        int err = fd_rc == KF_OK && fdatasync(fd) == 0 ? 0 : (fd_rc == KF_OK ? errno : ENOENT);
        uint64_t t1 = kf_mono_ns();
        pthread_mutex_lock(&st->sync_lock);
        st->sync_ns += t1 - t0;
        if (err == 0) {
            if (target > st->synced)
                st->synced = target;
        } else {
            kf_error("store: fdatasync of %s failed: %s; later batches fall back to "
                     "synchronous commits",
                     st->wal_path, strerror(err));
            st->sync_failed = true;
        }
    }
    int rc = st->synced >= ticket ? KF_OK : KF_ERR_IO;
    struct store_sync_waiter *next;
    struct store_sync_waiter *answered = settle_locked(st, &next);
    pthread_mutex_unlock(&st->sync_lock);
    for (struct store_sync_waiter *w = answered, *n; w; w = n) {
        n = w->next; /* w is gone once posted */
        sem_post(&w->wake);
    }
    if (next)
        sem_post(&next->wake);
    return rc;
}

int kf_store_sync(kf_store *st, uint64_t ticket)
{
    KF_ENSURE(st, KF_ERR_ARG);
    if (ticket == 0)
        return KF_OK; /* committed with synchronous=FULL */
    pthread_mutex_lock(&st->sync_lock);
    if (st->synced >= ticket) {
        pthread_mutex_unlock(&st->sync_lock);
        return KF_OK;
    }
    if (!st->syncing) {
        st->syncing = true;
        pthread_mutex_unlock(&st->sync_lock);
        return sync_rounds(st, ticket);
    }
    /* The fdatasync under way may have begun before our commit: wait for
     * the syncer to answer us, or to make us the next syncer. */
    struct store_sync_waiter me = {.ticket = ticket};
    if (sem_init(&me.wake, 0, 0) != 0) {
        pthread_mutex_unlock(&st->sync_lock);
        return KF_ERR_INTERNAL;
    }
    me.next = st->sync_waiters;
    st->sync_waiters = &me;
    pthread_mutex_unlock(&st->sync_lock);
    while (sem_wait(&me.wake) != 0)
        ; /* EINTR */
    sem_destroy(&me.wake);
    return me.take_over ? sync_rounds(st, ticket) : me.result;
}

void kf_store_sync_wait_idle(kf_store *st)
{
    if (!st)
        return;
    pthread_mutex_lock(&st->sync_lock);
    if (!st->syncing) {
        pthread_mutex_unlock(&st->sync_lock);
        return;
    }
    struct store_sync_waiter me = {0};
    if (sem_init(&me.wake, 0, 0) != 0) {
        pthread_mutex_unlock(&st->sync_lock);
        return;
    }
    me.next = st->idle_waiters;
    st->idle_waiters = &me;
    pthread_mutex_unlock(&st->sync_lock);
    while (sem_wait(&me.wake) != 0)
        ; /* EINTR */
    sem_destroy(&me.wake);
}

uint64_t kf_store_sync_count(kf_store *st, uint64_t *ns)
{
    if (!st)
        return 0;
    pthread_mutex_lock(&st->sync_lock);
    uint64_t n = st->syncs;
    if (ns)
        *ns = st->sync_ns;
    pthread_mutex_unlock(&st->sync_lock);
    return n;
}

uint64_t kf_store_object_generation(kf_store *st)
{
    return st ? atomic_load(&st->object_generation) : 0;
}

int kf_store_savepoint(kf_store *st)
{
    KF_ENSURE(st, KF_ERR_ARG);
    KF_ENSURE(!sqlite3_get_autocommit(st->db), KF_ERR_STATE);
    return run_simple(st, KF_STMT_SAVEPOINT, "savepoint");
}

void kf_store_savepoint_end(kf_store *st, bool keep)
{
    if (!st)
        return;
    if (!keep) {
        atomic_fetch_add(&st->object_generation, 1);
        if (run_simple(st, KF_STMT_SAVEPOINT_ROLLBACK, "rollback to savepoint") != KF_OK)
            kf_error("store: rollback to savepoint failed");
    }
    if (run_simple(st, KF_STMT_SAVEPOINT_RELEASE, "release savepoint") != KF_OK)
        kf_error("store: release savepoint failed");
}

int kf_store_commit(kf_store *st)
{
    KF_ENSURE(st, KF_ERR_ARG);
    KF_ENSURE(!sqlite3_get_autocommit(st->db), KF_ERR_STATE);
    return run_simple(st, KF_STMT_COMMIT, "commit");
}

void kf_store_rollback(kf_store *st)
{
    if (!st)
        return;
    atomic_fetch_add(&st->object_generation, 1); /* whatever a cache saw inside the transaction is gone */
    if (sqlite3_get_autocommit(st->db))
        return;
    /* Reset every cached statement first: a statement still mid-step would
     * otherwise keep its read open across the rollback. */
    for (int i = 0; i < KF_STMT_COUNT; i++)
        if (st->stmt[i])
            sqlite3_reset(st->stmt[i]);
    if (run_simple(st, KF_STMT_ROLLBACK, "rollback") != KF_OK)
        kf_error("store: rollback failed");
}

bool kf_store_in_transaction(kf_store *st)
{
    return st && !sqlite3_get_autocommit(st->db);
}

int kf_store_checkpoint(kf_store *st)
{
    KF_ENSURE(st, KF_ERR_ARG);
    KF_ENSURE(sqlite3_get_autocommit(st->db), KF_ERR_STATE);
    int rc = sqlite3_wal_checkpoint_v2(st->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (rc != SQLITE_OK)
        return kf_store_sqlite_error(st, rc, "wal checkpoint");
    return KF_OK;
}
