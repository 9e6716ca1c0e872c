/*
 * The store (DESIGN §3, §5): security domains, per-domain key IDs and KMIP
 * managed objects in one SQLite database, <dir>/keyfleet.db.
 *
 * Durability: WAL journal, synchronous=FULL, so a committed transaction
 * survives power loss. foreign_keys=ON, secure_delete=ON, busy_timeout.
 * The file (and its -wal/-shm companions) are created with mode 0600.
 *
 * Threads: a kf_store is one SQLite connection with its own prepared
 * statements and is NOT thread-safe. Use one kf_store per thread (several
 * connections to the same file are fine: WAL lets readers run beside the one
 * writer, and BEGIN IMMEDIATE serialises writers), or guard one with a mutex.
 *
 * Domains: no query on objects runs without a domain_id in its WHERE clause,
 * so nothing here can hand out an object of another domain.
 *
 * Secrets: the store only ever sees wrapped (encrypted, authenticated) blobs
 * made by the security module; it never holds plaintext key material.
 */
#ifndef KEYFLEET_STORE_H
#define KEYFLEET_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/error.h"

struct sqlite3;
typedef struct kf_store kf_store;

#define KF_STORE_DB_NAME "keyfleet.db"
/* Pass as dir to kf_store_open for a private in-memory database (fuzzing, tests): not durable. */
#define KF_STORE_IN_MEMORY ":memory:"

/* Open (creating and migrating if needed) <dir>/keyfleet.db.
 * KF_ERR_SCHEMA if the file was written by a newer keyfleet; KF_ERR_DB/KF_ERR_IO otherwise. */
KF_RESULT int kf_store_open(const char *dir, kf_store **out);
/* Rolls back an open transaction, finalizes statements, closes. NULL is fine. */
void kf_store_close(kf_store *st);
/* The underlying connection, e.g. for kf_audit_open (same file, same transactions). */
struct sqlite3 *kf_store_db(kf_store *st);
/* Schema version this code writes (for status output and tests). */
int kf_store_schema_version(void);

/* ---- Transactions ----
 * One action = one transaction: the service layer does
 *   begin; <store changes>; kf_audit_append; commit   (or rollback on any error)
 * so the action and its audit record persist together or not at all.
 * begin is BEGIN IMMEDIATE: it takes the write lock up front (waiting up to
 * busy_timeout), so a transaction never fails half-way on a lock upgrade. */
KF_RESULT int kf_store_begin(kf_store *st);
KF_RESULT int kf_store_commit(kf_store *st);
/* No-op if no transaction is open. Failures are logged, not returned. */
void kf_store_rollback(kf_store *st);
bool kf_store_in_transaction(kf_store *st);

/* One job of a batch inside the open transaction: a savepoint that
 * kf_store_savepoint_end releases (keep) or rolls back and releases (!keep),
 * so a failed job takes back only its own changes. Prepared statements. */
KF_RESULT int kf_store_savepoint(kf_store *st);
void kf_store_savepoint_end(kf_store *st, bool keep);

/*
 * Group commit with the fsync outside the caller's lock. A batch that many
 * callers wait on does
 *   kf_store_begin_deferred(st, &deferred); <changes>; kf_store_commit_deferred(st, &ticket);
 *   (release the lock that guards the connection)
 *   kf_store_sync(st, ticket);    -- and only then answer anyone
 * The commit is written to the WAL (it survives a kill -9 of the process) but
 * not fsync'ed; kf_store_sync returns once an fdatasync of the WAL that began
 * after that commit has completed, so an answer is released only when its
 * transaction would survive a power loss, exactly as with synchronous=FULL.
 * Meanwhile the next batch may run its transaction on the connection:
 * kf_store_sync touches only the WAL file and its own lock, and one fdatasync
 * covers every commit made before it started.
 * When the store cannot defer (in memory, no WAL file yet, or a sync failed
 * before), begin_deferred opens an ordinary synchronous=FULL transaction,
 * sets *deferred false and commit_deferred returns ticket 0, which
 * kf_store_sync treats as already durable. A failed fdatasync is sticky:
 * every later sync fails (KF_ERR_IO) and later batches fall back to FULL.
 * kf_store_begin always restores synchronous=FULL for ordinary transactions.
 */
KF_RESULT int kf_store_begin_deferred(kf_store *st, bool *deferred);
KF_RESULT int kf_store_commit_deferred(kf_store *st, uint64_t *ticket);
KF_RESULT int kf_store_sync(kf_store *st, uint64_t ticket);
/* fdatasync calls kf_store_sync has made on this store, and (ns, may be
 * NULL) the time they took together: for tests and benchmarks. */
uint64_t kf_store_sync_count(kf_store *st, uint64_t *ns);
/* If an fdatasync round of kf_store_sync is under way, wait until it ends.
 * A batch leader calls it before its transaction: a commit made during that
 * fdatasync cannot be covered by it anyway, so waiting costs the batch
 * little and lets more callers join it. */
void kf_store_sync_wait_idle(kf_store *st);

/* Moves on every write to the object table (update, destroy material,
 * delete: before the statement runs) and on every rollback, so a cache of
 * facts about stored objects that remembers the value it was filled at is
 * still right while the value has not changed. Fill such a cache under the
 * lock that guards the connection; the value may be read from any thread. */
uint64_t kf_store_object_generation(kf_store *st);

/* ---- Security domains ---- */
#define KF_DOMAIN_NAME_MAX 64

struct kf_domain {
    uint64_t id;
    char name[KF_DOMAIN_NAME_MAX + 1];
    uint64_t parent_id;     /* 0 = top-level domain */
    int64_t created;        /* seconds since the epoch */
    uint64_t last_key_id;   /* high-water mark: highest key ID ever handed out (0 = none) */
    uint8_t *wrapped_key;   /* malloc'd copy of the wrapped domain key; kf_domain_clear frees */
    size_t wrapped_key_len;
};
void kf_domain_clear(struct kf_domain *d);

/* 1-64 characters from [A-Za-z0-9._-]. */
bool kf_domain_name_valid(const char *name);

/* parent_name NULL for a top-level domain. KF_ERR_NAME for a bad name,
 * KF_ERR_EXISTS for a taken name, KF_ERR_DOMAIN if the parent does not exist.
 * wrapped_key may be NULL/0: the domain key's wrapping binds the domain id,
 * which is only known after this call, so the usual sequence is
 *   begin; domain_create(NULL); secmod_domain_key_new(id); domain_set_key; commit.
 * Domain ids are never reused (AUTOINCREMENT). */
KF_RESULT int kf_store_domain_create(kf_store *st, const char *name, const char *parent_name,
                                     const uint8_t *wrapped_key, size_t wrapped_key_len,
                                     uint64_t *domain_id);
/* KF_ERR_DOMAIN if there is no such domain. out is overwritten (clear it first if reused). */
KF_RESULT int kf_store_domain_get(kf_store *st, const char *name, struct kf_domain *out);
KF_RESULT int kf_store_domain_get_by_id(kf_store *st, uint64_t id, struct kf_domain *out);
/* Replace the wrapped domain key (re-wrap under a new root key). */
KF_RESULT int kf_store_domain_set_key(kf_store *st, uint64_t id, const uint8_t *wrapped_key,
                                      size_t wrapped_key_len);
/* Callback contract for every list function here: return KF_OK to go on,
 * a positive value to stop early (the list then returns KF_OK), a negative
 * kf error to stop and have the list return it. The record is only valid
 * during the call. */
typedef int (*kf_store_domain_cb)(void *ctx, const struct kf_domain *d);
KF_RESULT int kf_store_domain_list(kf_store *st, kf_store_domain_cb cb, void *ctx);

/* ---- Key IDs (seed 003 "Master Key Identification") ----
 * Per-domain, starting at 1, strictly increasing, never reused: the counter
 * (struct kf_domain.last_key_id) only moves forward (a trigger refuses any
 * update that lowers it) and is never reset by destroying or deleting objects.
 *
 * Two ways to get one:
 *  - kf_store_reserve_key_id: STRICT. Must be called outside a transaction;
 *    commits the increment in its own durable transaction before returning,
 *    so the ID is "persisted before use" and a later rollback of the action
 *    that uses it can never cause it to be issued again. Use this whenever
 *    the ID may be seen outside this database before the action commits
 *    (e.g. sent to a generation or installation role). Costs one extra commit.
 *  - kf_store_next_key_id: inside the caller's transaction. The increment
 *    commits atomically with its use; if the caller rolls back, the same ID
 *    is issued again next time. Acceptable ONLY when nothing outside the
 *    database saw the ID before commit (e.g. KMIP Create: the Unique
 *    Identifier is returned after commit). One commit per action.
 * KF_ERR_DOMAIN if the domain does not exist; KF_ERR_STATE if called in the
 * wrong transaction mode. */
KF_RESULT int kf_store_reserve_key_id(kf_store *st, uint64_t domain_id, uint64_t *key_id);
KF_RESULT int kf_store_next_key_id(kf_store *st, uint64_t domain_id, uint64_t *key_id);

/* ---- Managed objects (KMIP) ---- */
/* KMIP Object Type (KMIP 1.4 §9.1.3.2.12). */
enum kf_object_type {
    KF_OBJ_CERTIFICATE = 1,
    KF_OBJ_SYMMETRIC_KEY = 2,
    KF_OBJ_PUBLIC_KEY = 3,
    KF_OBJ_PRIVATE_KEY = 4,
    KF_OBJ_SPLIT_KEY = 5,
    KF_OBJ_TEMPLATE = 6,
    KF_OBJ_SECRET_DATA = 7,
    KF_OBJ_OPAQUE = 8,
    KF_OBJ_PGP_KEY = 9,
};

#define KF_OBJECT_NAME_MAX 127
#define KF_REVOCATION_MESSAGE_MAX 255
/* "<domain name>/<key_id>" fits in this (64 + 1 + 20 digits + NUL). */
#define KF_UID_MAX 96

struct kf_object {
    uint64_t domain_id;
    uint64_t key_id;
    uint32_t object_type;   /* enum kf_object_type */
    uint32_t state;         /* KMIP State, enum kf_kmip_state in lifecycle.h */
    uint32_t crypto_alg;    /* KMIP Cryptographic Algorithm, e.g. AES = 3; 0 = none */
    int32_t crypto_length;  /* bits; 0 = none */
    uint32_t usage_mask;    /* KMIP Cryptographic Usage Mask */
    uint8_t key_format;     /* KMIP Key Format Type; 0 = none */
    char name[KF_OBJECT_NAME_MAX + 1]; /* KMIP Name (first one); "" = none */
    uint32_t version;       /* wrap version, bumped on re-wrap (bound into the blob's AD) */
    /* Seconds since the epoch; 0 = unset. */
    int64_t initial_date;
    int64_t activation_date;
    int64_t deactivation_date;
    int64_t destroy_date;
    int64_t compromise_date;
    int64_t compromise_occurrence_date;
    int64_t last_change_date;
    uint32_t revocation_reason; /* KMIP Revocation Reason Code; 0 = not revoked */
    char revocation_message[KF_REVOCATION_MESSAGE_MAX + 1];
    uint8_t *material;      /* wrapped blob (malloc'd); NULL = none or destroyed */
    size_t material_len;
    uint8_t *attributes;    /* TTLV of the other KMIP attributes, opaque here (malloc'd) */
    size_t attributes_len;
};
/* Frees material and attributes and zeroes the struct. Safe on a zeroed struct. */
void kf_object_clear(struct kf_object *obj);

/* UID text "<domain name>/<key_id>". KF_ERR_NOSPACE if out is too small. */
KF_RESULT int kf_object_uid_format(const char *domain_name, uint64_t key_id, char *out,
                                   size_t out_len);
/* Split a UID; domain_name gets KF_DOMAIN_NAME_MAX + 1 bytes. KF_ERR_FORMAT if malformed. */
KF_RESULT int kf_object_uid_parse(const char *uid, char domain_name[KF_DOMAIN_NAME_MAX + 1],
                                  uint64_t *key_id);

/* obj->key_id must come from kf_store_reserve_key_id/kf_store_next_key_id for
 * this domain (KF_ERR_ARG for 0 or an ID above the domain's high-water mark);
 * KF_ERR_EXISTS if (domain_id, key_id) is taken; KF_ERR_DOMAIN if no such domain. */
KF_RESULT int kf_store_object_insert(kf_store *st, const struct kf_object *obj);
/* Loads into obj (material and attributes malloc'd: kf_object_clear after).
 * KF_ERR_OBJECT if there is no object with this key_id IN THIS domain. */
KF_RESULT int kf_store_object_get(kf_store *st, uint64_t domain_id, uint64_t key_id,
                                  struct kf_object *obj);
/* Writes type, state, algorithm, length, usage mask, key format, name,
 * version, all dates, revocation, attributes, and material IF obj->material is
 * non-NULL (so an object listed without material can be updated safely; use
 * kf_store_object_destroy_material to remove material). KF_ERR_OBJECT if missing. */
KF_RESULT int kf_store_object_update(kf_store *st, const struct kf_object *obj);
/*
 * Removes the wrapped material of a (Destroyed) object: the column is set to
 * NULL with secure_delete on, so SQLite zeroes the freed bytes in the page.
 * The old page image still sits in the WAL until a checkpoint copies the
 * page back and the WAL is reset; kf_store_checkpoint does that. Inside a
 * transaction the checkpoint cannot run: call kf_store_checkpoint after
 * commit. Outside a transaction this function checkpoints itself.
 * Note the material was a wrapped blob in the first place; this removes the
 * ciphertext so it cannot be unwrapped later even if the domain key leaks.
 */
KF_RESULT int kf_store_object_destroy_material(kf_store *st, uint64_t domain_id, uint64_t key_id);
/* Remove the row entirely; the key ID stays consumed (never reissued). */
KF_RESULT int kf_store_object_delete(kf_store *st, uint64_t domain_id, uint64_t key_id);
/* PRAGMA wal_checkpoint(TRUNCATE): flush the WAL into the db file and empty it.
 * KF_ERR_STATE inside a transaction; KF_ERR_DB if readers kept it from completing. */
KF_RESULT int kf_store_checkpoint(kf_store *st);

struct kf_object_filter {
    uint32_t object_type;  /* 0 = any */
    uint32_t state;        /* 0 = any */
    const char *name;      /* NULL = any; exact match */
    uint64_t offset;       /* skip this many matches (in key_id order) */
    uint64_t max;          /* 0 = no limit */
    bool with_material;    /* load material too (default: material NULL in callbacks) */
};
typedef int (*kf_store_object_cb)(void *ctx, const struct kf_object *obj);
/* Objects of one domain in increasing key_id order. f may be NULL (all). */
KF_RESULT int kf_store_object_list(kf_store *st, uint64_t domain_id,
                                   const struct kf_object_filter *f, kf_store_object_cb cb,
                                   void *ctx);

/* ---- Devices and pairwise KEK metadata (docs/pairing.md, DESIGN §4.1) ----
 * A device row names its MKEK (an ordinary wrapped managed object of the
 * device's domain, key_id mkek_key_id) and holds its pairing counter C_X.
 * The schema's triggers make the rules hold whatever the caller does:
 * device rows are never deleted (IDs never reused), the counter never goes
 * back, the export mark is set once. A pair_kek row is the metadata of one
 * KEK; the KEK itself is never stored anywhere. KEK IDs are server-wide,
 * strictly increasing and never reused (a trigger-protected high-water mark;
 * an ID can get a row at most once). */
#define KF_DEVICE_ID_MAX 64

struct kf_device {
    char id[KF_DEVICE_ID_MAX + 1];
    uint64_t domain_id;
    uint64_t mkek_key_id;  /* the MKEK object: (domain_id, mkek_key_id) */
    uint64_t counter;      /* C_X: the last counter sent to this device (0 = none yet) */
    int64_t exported_at;   /* seconds since the epoch; 0 = package not exported */
    int64_t created_at;
};

/* KF_ERR_DEVICE_EXISTS if the ID was ever taken; KF_ERR_DOMAIN if no such domain. */
KF_RESULT int kf_store_device_insert(kf_store *st, const struct kf_device *dev);
/* KF_ERR_DEVICE_UNKNOWN if there is no such device. */
KF_RESULT int kf_store_device_get(kf_store *st, const char *id, struct kf_device *out);
/* KF_ERR_ARG (the trigger) if counter is below the stored one; KF_ERR_DEVICE_UNKNOWN. */
KF_RESULT int kf_store_device_set_counter(kf_store *st, const char *id, uint64_t counter);
/* C_A + 1 and C_B + 1 for two different devices, each written and returned
 * in one statement, inside the caller's transaction (which rolls back both
 * on an error). KF_ERR_DEVICE_UNKNOWN; KF_ERR_DEVICE_COUNTER if one is at INT64_MAX. */
KF_RESULT int kf_store_device_next_counters(kf_store *st, const char *const ids[2],
                                            uint64_t counters[2]);
/* KF_ERR_DEVICE_EXPORTED if it was already set. */
KF_RESULT int kf_store_device_set_exported(kf_store *st, const char *id, int64_t when);
struct kf_device_stats {
    uint64_t last_kek_id;   /* highest KEK ID issued to the device (either role); 0 = none */
    uint64_t acks_pending;  /* parts sent to it that it has not acknowledged */
};
KF_RESULT int kf_store_device_stats(kf_store *st, const char *id, struct kf_device_stats *out);

/* Reserve count (1..8) consecutive KEK IDs inside the caller's transaction:
 * *first .. *first + count - 1. They commit (or roll back) with the rows that
 * use them; a rolled-back reservation was never seen outside the database.
 * KF_ERR_STATE outside a transaction. */
KF_RESULT int kf_store_kek_ids_next(kf_store *st, uint32_t count, uint64_t *first);

struct kf_pair_kek {
    uint64_t kek_id;
    uint64_t domain_id;
    char id_a[KF_DEVICE_ID_MAX + 1], id_b[KF_DEVICE_ID_MAX + 1];
    uint64_t counter_a, counter_b;   /* C_A, C_B of the message that carried it */
    int64_t not_before, not_after;   /* validity window [not_before, not_after) */
    uint32_t max_uses;
    uint32_t kek_index;              /* position in its message: kek_id - kek_index = first */
    int64_t issued_at;
    uint32_t ack_a_status, ack_b_status; /* enum kfd_ack_status; 0 = no ack yet */
    int64_t ack_a_at, ack_b_at;
};
/* kek_id must be reserved and not used before (KF_ERR_ARG from the trigger). */
KF_RESULT int kf_store_pair_kek_insert(kf_store *st, const struct kf_pair_kek *k);
/* KF_ERR_NOT_FOUND if no KEK has this ID. */
KF_RESULT int kf_store_pair_kek_get(kf_store *st, uint64_t kek_id, struct kf_pair_kek *out);
/* Record the acknowledgement of the device in role (1 = A, 2 = B) for every
 * KEK of the message whose first KEK is first_kek_id. KF_ERR_ACK_REPLAY if
 * that device already acknowledged it (the trigger), KF_ERR_ACK_UNKNOWN if
 * no KEK of that message was issued to device in that role. */
KF_RESULT int kf_store_pair_kek_ack(kf_store *st, uint64_t first_kek_id, const char *device,
                                    int role, uint32_t status, int64_t when);

/* ---- Manufacturing (docs/manufacturing.md, DESIGN §4.2) ----
 * A domain set up for manufacturing (mfg_domain: kind, country, the IDs of
 * its M, O and B, the archive's key ID counter and Oak's last seen key ID,
 * both of which only go forward), its roles (mfg_role: public keys and the
 * M-signed certificate; never deleted), and its archive (mfg_key: one row
 * per device master key, holding the signed records; never deleted). The
 * schema's triggers enforce the counters, the reserved key IDs and the
 * status moves whatever the caller does. Keys never come here in the clear:
 * a record holds a key sealed to Brass or under Brass's archive key, and the
 * role private keys are wrapped managed objects (object.c). */
#define KF_STORE_MFG_ID_MAX 9         /* role ID: letter + 8 digits */
#define KF_STORE_MFG_BLOB_MAX 2048    /* one stored signed record or certificate */

struct kf_mfg_domain_row {
    uint64_t domain_id;
    uint32_t kind;               /* enum kf_mfg_domain_kind (mfg.h) */
    char country[3];             /* postal: two letters; else "" */
    char authority_id[KF_STORE_MFG_ID_MAX + 1], oak_id[KF_STORE_MFG_ID_MAX + 1],
        brass_id[KF_STORE_MFG_ID_MAX + 1];
    uint64_t last_key_id;        /* the archive's counter (MI0'): highest key ID issued */
    uint64_t oak_last_key_id;    /* the highest key ID Oak accepted (MI1) */
    int64_t created;
};
/* KF_ERR_EXISTS if the domain is set up already; KF_ERR_DOMAIN if no such domain. */
KF_RESULT int kf_store_mfg_domain_insert(kf_store *st, const struct kf_mfg_domain_row *d);
/* KF_ERR_MFG_SETUP if the domain is not set up for manufacturing. */
KF_RESULT int kf_store_mfg_domain_get(kf_store *st, uint64_t domain_id,
                                      struct kf_mfg_domain_row *out);
typedef int (*kf_store_mfg_domain_cb)(void *ctx, const struct kf_mfg_domain_row *d);
KF_RESULT int kf_store_mfg_domain_list(kf_store *st, kf_store_mfg_domain_cb cb, void *ctx);
/* The domain's next archive key ID, inside the caller's transaction (it
 * commits with the record that uses it). KF_ERR_MFG_SETUP. */
KF_RESULT int kf_store_mfg_next_key_id(kf_store *st, uint64_t domain_id, uint64_t *key_id);
/* Oak's last seen key ID := key_id (KF_ERR_ARG from the trigger if lower). */
KF_RESULT int kf_store_mfg_oak_seen(kf_store *st, uint64_t domain_id, uint64_t key_id);

struct kf_mfg_role_row {
    char role_id[KF_STORE_MFG_ID_MAX + 1];
    uint64_t domain_id;
    uint32_t role_type;          /* enum kf_mfg_role_type */
    uint8_t sign_pub[32];
    bool has_enc;
    uint8_t enc_pub[32];
    uint8_t cert[KF_STORE_MFG_BLOB_MAX]; /* the RoleCert envelope */
    size_t cert_len;
    /* M, O, B: key IDs of the wrapped private keys in the domain (0 = none). */
    uint64_t sign_key_id, enc_key_id, archive_key_id;
    int64_t created;
};
/* KF_ERR_EXISTS if that role ID is enrolled in the domain already. */
KF_RESULT int kf_store_mfg_role_insert(kf_store *st, const struct kf_mfg_role_row *r);
/* KF_ERR_MFG_ROLE if the role is not enrolled in the domain. */
KF_RESULT int kf_store_mfg_role_get(kf_store *st, uint64_t domain_id, const char *role_id,
                                    struct kf_mfg_role_row *out);
typedef int (*kf_store_mfg_role_cb)(void *ctx, const struct kf_mfg_role_row *r);
/* The domain's roles in role ID order ("B..." < "M..." < "O..." < "S..." < "T..."). */
KF_RESULT int kf_store_mfg_role_list(kf_store *st, uint64_t domain_id, kf_store_mfg_role_cb cb,
                                     void *ctx);

struct kf_mfg_key_row {
    uint64_t domain_id, key_id;
    char steel_id[KF_STORE_MFG_ID_MAX + 1];
    uint32_t status;             /* enum kf_mfg_status */
    int32_t reason;              /* kf error code of a Bad status, else 0 */
    char msn[17], indicia[17], country[3];
    uint8_t mi3[KF_STORE_MFG_BLOB_MAX];    /* the origin record: ArchiveNew, or Transfer */
    size_t mi3_len;
    uint8_t record[KF_STORE_MFG_BLOB_MAX]; /* the current record: MI3, MI9 or MR3 */
    size_t record_len;
    int64_t t_request, t_install, t_install_verify, t_register, t_register_verify;
    uint64_t moved_domain_id, moved_key_id; /* Transferred: where the key went */
};
/* key_id must come from kf_store_mfg_next_key_id (KF_ERR_ARG otherwise);
 * KF_ERR_EXISTS if taken. */
KF_RESULT int kf_store_mfg_key_insert(kf_store *st, const struct kf_mfg_key_row *k);
/* KF_ERR_MFG_UNKNOWN if there is no such key in the domain. */
KF_RESULT int kf_store_mfg_key_get(kf_store *st, uint64_t domain_id, uint64_t key_id,
                                   struct kf_mfg_key_row *out);
/* The newest key (highest key ID) of msn in the domain; KF_ERR_MFG_UNKNOWN. */
KF_RESULT int kf_store_mfg_key_by_msn(kf_store *st, uint64_t domain_id, const char *msn,
                                      struct kf_mfg_key_row *out);
/* The Steel's newest key that is still New; KF_ERR_NOT_FOUND if none. */
KF_RESULT int kf_store_mfg_key_open_for_steel(kf_store *st, uint64_t domain_id,
                                              const char *steel_id, struct kf_mfg_key_row *out);
/* Writes status, reason, msn, indicia, country, record, the four later
 * times and the move. The schema refuses a status move the protocol does
 * not allow (KF_ERR_ARG) and a change of identity. KF_ERR_MFG_UNKNOWN. */
KF_RESULT int kf_store_mfg_key_update(kf_store *st, const struct kf_mfg_key_row *k);
typedef int (*kf_store_mfg_key_cb)(void *ctx, const struct kf_mfg_key_row *k);
/* The domain's keys in key ID order; status 0 = every status. */
KF_RESULT int kf_store_mfg_key_list(kf_store *st, uint64_t domain_id, uint32_t status,
                                    kf_store_mfg_key_cb cb, void *ctx);

/* ---- Token pieces (docs/manufacturing.md "Tokens"): duplicate detection ----
 * One row of mfg_piece per (domain, MSN, piece count) ever verified good;
 * rows are only ever added. The token verifier (src/kms/tokens.c) keeps its
 * own prepared statements for this table on one connection: a
 * kf_store_pieces, closed before that connection's store. */
typedef struct kf_store_pieces kf_store_pieces;
struct kf_store_piece {
    char msn[16 + 1];     /* 1..16 of A-Z 0-9 - (KF_MFG_MSN_MAX) */
    uint32_t piece_count;
};
KF_RESULT int kf_store_pieces_open(kf_store *st, kf_store_pieces **out);
/* Finalizes the statements. NULL is fine. */
void kf_store_pieces_close(kf_store_pieces *p);
/* Add n pieces of one domain, verified at verified_at (Unix s), inside the
 * caller's transaction. KF_ERR_EXISTS if one of them is there already (the
 * caller rolls back). */
KF_RESULT int kf_store_pieces_insert(kf_store_pieces *p, uint64_t domain_id, int64_t verified_at,
                                     const struct kf_store_piece *pieces, size_t n);
/* Every piece of the domain, in no particular order. cb returning < 0 stops
 * the walk with that result. */
typedef int (*kf_store_piece_cb)(void *ctx, const char *msn, uint32_t piece_count);
KF_RESULT int kf_store_pieces_list(kf_store_pieces *p, uint64_t domain_id, kf_store_piece_cb cb,
                                   void *ctx);
/* How many pieces the domain has (tests, status). */
KF_RESULT int kf_store_pieces_count(kf_store_pieces *p, uint64_t domain_id, uint64_t *n);

#endif
