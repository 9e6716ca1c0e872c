/*
 * The key management service: the one place that composes the security
 * module, the store and the audit trail into operations. Transports (the
 * local admin socket now, KMIP over TLS later) decode a request, call these,
 * and encode the answer; they never touch keys or the database directly.
 *
 * Every operation that changes state or uses a key runs as
 *   lock; begin; <store changes>; audit append; commit; unlock
 * so the change and its audit record persist together or not at all, and a
 * refusal is itself audited (in its own transaction) with its error name.
 * Plaintext key material exists only in secure memory (kf_buf KF_BUF_SECRET)
 * and only between unwrap and the caller's encoding of it.
 */
#ifndef KEYFLEET_KMS_H
#define KEYFLEET_KMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/audit.h"
#include "keyfleet/buf.h"
#include "keyfleet/error.h"
#include "keyfleet/secmod.h"
#include "keyfleet/store.h"

typedef struct kf_kms kf_kms;

/*
 * Who is asking, and what they may do. The local admin socket maps root and
 * the daemon's user to an administrator of every domain; the TLS listener
 * maps a client certificate to a principal through its configuration.
 * Authorisation happens in the KMIP layer (kmip_authorize) before the
 * service is called; the service records who->name as the audit actor.
 */
enum kf_role {
    KF_ROLE_ADMIN = 1u << 0,  /* init, unseal, seal, domains, audit */
    KF_ROLE_MANAGE = 1u << 1, /* create, register, activate, revoke, destroy, attributes */
    KF_ROLE_USE = 1u << 2,    /* encrypt, decrypt, sign, verify, MAC, derive, locate, get attributes */
    KF_ROLE_EXPORT = 1u << 3, /* Get of key material */
    KF_ROLE_DEVICE = 1u << 4, /* pair key requests and acknowledgements (docs/pairing.md) */
    /* Manufacturing (docs/manufacturing.md); each has its command table in kmip_mfg.c. */
    KF_ROLE_STEEL = 1u << 5,     /* installation station: request keys, report installs */
    KF_ROLE_REGISTRAR = 1u << 6, /* forwards devices' registration records (MR1) */
    KF_ROLE_VERIFIER = 1u << 7,  /* token verification, token key export to a Tin */
};
#define KF_PRINCIPAL_MAX_DOMAINS 32
struct kf_principal {
    char name[256];          /* audit actor: "local:uid=0,pid=1" or "cert:CN=...,O=..." */
    unsigned roles;          /* enum kf_role bits */
    bool all_domains;        /* may act in every domain */
    size_t ndomains;
    char domains[KF_PRINCIPAL_MAX_DOMAINS][65];
    char default_domain[65]; /* where Create/Register go without an x-keyfleet-domain attribute */
};
/* True if who holds every role in roles for domain (NULL domain: server-wide). */
bool kf_principal_allows(const struct kf_principal *who, unsigned roles, const char *domain);

struct kf_kms_config {
    const char *dir;          /* data directory (created 0700 if missing) */
    bool dev;                 /* soft backend, 1-of-1 key file, unseals itself */
    /* PKCS#11 backend when module_path is set */
    const char *pkcs11_module;
    const char *token_label;
    const char *pin;          /* optional: log in at start (from a PIN file) */
    uint32_t audit_checkpoint_interval; /* 0 = default */
    bool memory_store;        /* fuzzing/tests: the store in memory (dir still holds secmod files) */
};

KF_RESULT int kf_kms_open(const struct kf_kms_config *cfg, kf_kms **out);
void kf_kms_close(kf_kms *kms);

/* ---- Administration ---- */
struct kf_kms_status {
    bool initialised;
    bool sealed;
    bool dev;
    const char *backend; /* "soft" or "pkcs11" */
    unsigned threshold, shares, shares_received;
    uint64_t audit_records;
    uint64_t domains;
    int schema_version;
};
KF_RESULT int kf_kms_status(kf_kms *kms, struct kf_kms_status *st);
/* Soft backend: make the root key and its n shares (threshold m). */
KF_RESULT int kf_kms_init(kf_kms *kms, const char *actor, unsigned m, unsigned n,
                          char shares[][KF_SHARE_MAX]);
/* PKCS#11 backend: make the root key in the token. */
KF_RESULT int kf_kms_init_pkcs11(kf_kms *kms, const char *actor, const char *pin);
/* Soft: one share; PKCS#11: the user PIN. *done once unsealed. */
KF_RESULT int kf_kms_unseal(kf_kms *kms, const char *actor, const char *share_or_pin,
                            bool *done, unsigned *received);
KF_RESULT int kf_kms_seal(kf_kms *kms, const char *actor);

KF_RESULT int kf_kms_domain_create(kf_kms *kms, const char *actor, const char *name,
                                   const char *parent);
KF_RESULT int kf_kms_domain_list(kf_kms *kms, kf_store_domain_cb cb, void *ctx);

/* ---- Managed objects ---- */
struct kf_key_spec {
    const char *domain;
    uint32_t object_type;  /* KF_OBJ_SYMMETRIC_KEY or KF_OBJ_SECRET_DATA */
    uint32_t crypto_alg;   /* KMIP algorithm (AES, HMAC-SHA256, ...) */
    int32_t crypto_length; /* bits */
    uint32_t usage_mask;
    const char *name;      /* optional */
};
/* uid receives "<domain>/<key_id>". */
KF_RESULT int kf_kms_create(kf_kms *kms, const char *actor, const struct kf_key_spec *spec,
                            char uid[KF_UID_MAX]);
/* Metadata into obj (material left NULL). With material != NULL (a
 * KF_BUF_SECRET buffer), also the plaintext key: audited as an export. */
KF_RESULT int kf_kms_get(kf_kms *kms, const char *actor, const char *uid, struct kf_object *obj,
                         kf_buf *material);
KF_RESULT int kf_kms_list(kf_kms *kms, const char *actor, const char *domain,
                          const struct kf_object_filter *f, kf_store_object_cb cb, void *ctx);
KF_RESULT int kf_kms_activate(kf_kms *kms, const char *actor, const char *uid);
/* reason: KMIP Revocation Reason Code; compromise_time used for compromise reasons. */
KF_RESULT int kf_kms_revoke(kf_kms *kms, const char *actor, const char *uid, uint32_t reason,
                            int64_t compromise_time, const char *message);
KF_RESULT int kf_kms_destroy(kf_kms *kms, const char *actor, const char *uid);

/*
 * Use a key: load it, check the lifecycle allows purpose (lifecycle.h) and
 * that its Cryptographic Usage Mask has usage_bit (0 = no mask check), unwrap
 * its material into secure memory, call fn, wipe, audit "<op>" with the
 * outcome. fn runs under no store lock; it must not keep material.
 */
typedef int (*kf_kms_key_fn)(void *ctx, const struct kf_object *obj, const uint8_t *material,
                             size_t material_len);
KF_RESULT int kf_kms_use_key(kf_kms *kms, const char *actor, const char *op, const char *uid,
                             int purpose, uint32_t usage_bit, kf_kms_key_fn fn, void *ctx);
/* Same, counting bytes of data processed against a Byte-unit Usage Limit
 * (an Object-unit limit counts one use whatever bytes is). */
KF_RESULT int kf_kms_use_key_bytes(kf_kms *kms, const char *actor, const char *op,
                                   const char *uid, int purpose, uint32_t usage_bit,
                                   uint64_t bytes, kf_kms_key_fn fn, void *ctx);

/* Store given material as a new managed object (KMIP Register, and the second
 * half of Create Key Pair). spec->crypto_length is taken as given. */
struct kf_register_spec {
    const char *domain;
    uint32_t object_type;    /* any KF_OBJ_* */
    uint32_t crypto_alg;
    int32_t crypto_length;
    uint32_t usage_mask;
    uint8_t key_format;      /* KMIP Key Format Type of material */
    const char *name;
    const uint8_t *attributes; /* TTLV of further attributes (opaque to the store), or NULL */
    size_t attributes_len;
    uint32_t state;          /* 0 = Pre-Active; KF_STATE_ACTIVE for objects registered active */
    bool server_generated;   /* material made by the server (Create Key Pair): RNG attribute */
    /* 0: the domain's next key ID. Otherwise (KMIP Import of a new object) the ID the
     * client named: it must be exactly the next one, else KF_ERR_EXISTS and nothing is
     * stored (IDs are never reused, and keyfleet assigns them). */
    uint64_t key_id;
};
KF_RESULT int kf_kms_register(kf_kms *kms, const char *actor, const char *op,
                              const struct kf_register_spec *spec, const uint8_t *material,
                              size_t material_len, char uid[KF_UID_MAX]);

/*
 * KMIP Import with Replace Existing: give an existing object new material and
 * attributes (spec: object_type must match the object's; crypto_alg,
 * crypto_length, key_format, attributes replace; usage_mask and name replace
 * when given; domain and key_id are ignored: uid names the object). The
 * material is wrapped with version + 1, so the wrapping's associated data
 * changes and the old blob no longer unwraps as this object. Refused:
 * KF_ERR_OBJECT (no such object), KF_ERR_ATTRIBUTE (other Object Type),
 * KF_ERR_STATE (Destroyed: its ID stays retired), KF_ERR_OBJECT_ARCHIVED.
 * Audited as op with the new version.
 */
KF_RESULT int kf_kms_replace_material(kf_kms *kms, const char *actor, const char *op,
                                      const char *uid, const struct kf_register_spec *spec,
                                      const uint8_t *material, size_t material_len);

/* Change an object's metadata in one audited transaction: fn may modify any
 * field of obj except domain_id, key_id, state, version and material (state
 * changes go through activate/revoke/destroy). */
typedef int (*kf_kms_update_fn)(void *ctx, struct kf_object *obj);
KF_RESULT int kf_kms_update(kf_kms *kms, const char *actor, const char *op, const char *uid,
                            kf_kms_update_fn fn, void *ctx);

/* The domain name part of a UID ("VENDOR" of "VENDOR/17"); KF_ERR_OBJECT if malformed. */
KF_RESULT int kf_kms_uid_domain(const char *uid, char domain[65]);

/* ---- Devices and pairwise KEKs (docs/pairing.md, DESIGN §4.1) ----
 * A device is registered into one domain with a fresh 256-bit MKEK, kept as
 * an ordinary wrapped managed object of that domain (name "device:<id>",
 * marked server-side so that no KMIP operation serves or uses its material)
 * and exported exactly once in an installation package. A pair request
 * advances both devices' counters and reserves KEK IDs in one durable,
 * group-committed transaction with its audit record, and only then draws the
 * KEKs and builds the message M = SM_A || SM_B; KEKs exist only in secure
 * memory while M is built and are never stored. Authorisation (roles and
 * domains) is the KMIP layer's; every refusal here is audited. */
struct kf_device_info {
    char id[KF_DEVICE_ID_MAX + 1];
    char domain[KF_DOMAIN_NAME_MAX + 1];
    char mkek_uid[KF_UID_MAX];  /* the MKEK's Unique Identifier ("<domain>/<key id>") */
    uint64_t counter;           /* C_X: the last counter sent to the device */
    bool exported;
    int64_t exported_at;        /* 0 = not exported */
    int64_t created_at;
    uint64_t last_kek_id;       /* highest KEK ID issued to the device; 0 = none */
    uint64_t acks_pending;      /* parts sent to it and not acknowledged by it */
};
/* KF_ERR_DEVICE_ID (bad ID), KF_ERR_DEVICE_EXISTS (ever registered), KF_ERR_DOMAIN,
 * KF_ERR_SEALED, KF_ERR_RNG_HEALTH. out may be NULL. Audited "DeviceRegister". */
KF_RESULT int kf_kms_device_register(kf_kms *kms, const char *actor, const char *id,
                                     const char *domain, struct kf_device_info *out);
/* Append the installation package (TTLV KeyfleetDevicePackage, docs/pairing.md)
 * to package, which must be KF_BUF_SECRET. Once per device: the export mark
 * commits before the package is released; a second call is refused with
 * KF_ERR_DEVICE_EXPORTED and audited. Audited "DeviceExport". */
KF_RESULT int kf_kms_device_export(kf_kms *kms, const char *actor, const char *id,
                                   kf_buf *package);
/* Metadata only (no key). Audited "DeviceGet" (a read: group-committed). */
KF_RESULT int kf_kms_device_get(kf_kms *kms, const char *actor, const char *id,
                                struct kf_device_info *out);
/* The device's domain, unaudited, for authorisation before the audited call.
 * KF_ERR_DEVICE_UNKNOWN if there is no such device. */
KF_RESULT int kf_kms_device_domain(kf_kms *kms, const char *id,
                                   char domain[KF_DOMAIN_NAME_MAX + 1]);

#define KF_PAIR_MAX_KEKS 8
#define KF_PAIR_DEFAULT_LIFETIME 86400u    /* seconds per KEK */
#define KF_PAIR_MAX_LIFETIME 31536000u
#define KF_PAIR_DEFAULT_MAX_USES 10000u
#define KF_PAIR_MAX_MAX_USES 1000000u
/*
 * Pair key request of id_a (requester) with id_b: count KEKs (1..8), each
 * valid for lifetime_s seconds in consecutive windows from now and for
 * max_uses uses (0 = the defaults above). Appends M = PairPart(A) || PairPart(B)
 * to m. Refusals: KF_ERR_DEVICE_ID, KF_ERR_PAIR_SAME, KF_ERR_PAIR_POLICY,
 * KF_ERR_DEVICE_UNKNOWN, KF_ERR_DOMAIN_CROSS, KF_ERR_STATE (an MKEK revoked or
 * destroyed), KF_ERR_OBJECT_ARCHIVED, KF_ERR_DEVICE_COUNTER, KF_ERR_SEALED,
 * KF_ERR_RNG_HEALTH. Audited "PairKeyRequest" (devices, KEK IDs, counters).
 */
KF_RESULT int kf_kms_pair_issue(kf_kms *kms, const char *actor, const char *id_a,
                                const char *id_b, uint32_t count, uint32_t lifetime_s,
                                uint32_t max_uses, kf_buf *m);

/* What the server recorded for one acknowledgement. */
struct kf_pair_ack_result {
    char device[KF_DEVICE_ID_MAX + 1];
    uint64_t kek_id;     /* first KEK ID of the part; 0 if the device could not attribute it */
    uint32_t status;     /* enum kfd_ack_status, as recorded */
    uint64_t counter;    /* the server's C_X for the device after this ack */
    bool resynced;       /* C_X moved forward to the device's counter */
};
/*
 * One KeyfleetPairAck (its full TTLV bytes): MAC under the device's MKEK
 * (KF_ERR_ACK_MAC), KEK issued to that device in that part (KF_ERR_ACK_UNKNOWN),
 * not yet acknowledged by it (KF_ERR_ACK_REPLAY); records status and time and,
 * if DeviceCounter > C_X, sets C_X = DeviceCounter (never lower; audited
 * "PairResync"). Also KF_ERR_PAIR_MALFORMED, KF_ERR_DEVICE_UNKNOWN,
 * KF_ERR_SEALED. Audited "PairAck". out may be NULL.
 */
KF_RESULT int kf_kms_pair_ack(kf_kms *kms, const char *actor, const uint8_t *ack, size_t len,
                              struct kf_pair_ack_result *out);

/* ---- Audit ---- */
KF_RESULT int kf_kms_audit_list(kf_kms *kms, uint64_t from, uint64_t max, kf_audit_record_cb cb,
                                void *ctx);
KF_RESULT int kf_kms_audit_verify(kf_kms *kms, struct kf_audit_report *r);
/*
 * Deferred read/use audit records, for a caller that answers several requests
 * at once (the split endpoint's keyfleetd side, one batch of a worker's
 * requests). Between begin and end, on the calling thread only, the records
 * of reads and key uses (Get, Get Attributes, device Get, Log, ...: the ones
 * that go through the read/use group commit) are copied and kept instead of
 * committed, and the operation returns as if they were; end commits all of
 * them as one group-commit job and returns KF_OK or KF_ERR_AUDIT_WRITE.
 * Creates, state changes and refusals are audited as always. The caller must
 * hold back every answer made between begin and end until end returned KF_OK
 * (and answer none of them if it failed): then no result leaves before its
 * audit record is committed, as without deferral (docs/architecture.md,
 * "Durability and atomicity"). At most a bounded number of records is kept; beyond that the ones
 * kept are committed on the spot (a failure then fails end too).
 * KF_ERR_INTERNAL: begin while a deferral is open on this thread, or end
 * without one (logged). KF_ERR_ARG: end for another kms than begin (the kept
 * records are dropped: nothing of the batch may be answered).
 */
KF_RESULT int kf_kms_audit_defer_begin(kf_kms *kms);
KF_RESULT int kf_kms_audit_defer_end(kf_kms *kms);

/* ---- KMIP front door ---- */
/*
 * Decode one KMIP Request Message (TTLV), run its batch items as actor, and
 * append the Response Message to resp. Never fails for a bad request: that
 * gets a KMIP error response. Returns < 0 only if no response can be made.
 */
KF_RESULT int kf_kms_handle_kmip(kf_kms *kms, const struct kf_principal *who, const uint8_t *req,
                                 size_t len, kf_buf *resp);
/*
 * True if every operation of the KMIP request message req answers without a
 * durable commit of its own (Get, Locate, the crypto operations, Query...: only
 * read/use audit records). A batch of such requests may share one audit commit
 * (kf_kms_audit_defer_begin); a request that creates or changes something waits
 * for its fdatasync and is better handled beside others than after them. A
 * malformed message is not: it gets its refusal alone. Scans the TTLV without
 * building it (depth <= 8).
 */
bool kf_kms_kmip_read_only(const uint8_t *req, size_t len);
/* The principal of the local admin socket: every role, every domain. */
void kf_principal_local_admin(struct kf_principal *who, const char *name);
/* KMIP Result Reason for a kf error (protocol major version matters). */
uint32_t kf_kms_result_reason(int err, int kmip_major);

#endif
