/* The KMIP front door's pieces: one handler per operation. */
#ifndef KF_KMIP_INTERNAL_H
#define KF_KMIP_INTERNAL_H

#include "keyfleet/ttlv.h"
#include "kms_internal.h"

/* What a handler gets: the request payload and a response payload to fill. */
struct kmip_call {
    kf_kms *kms;
    const struct kf_principal *who;
    const char *actor;       /* who->name */
    int major, minor;        /* protocol version of the request */
    const kf_ttlv *req;      /* Request Payload (may be NULL) */
    kf_ttlv *resp;           /* Response Payload, already created */
    kf_arena *arena;
    char message[256];       /* optional extra sentence for a failure */
    /* KMIP ID Placeholder: the Unique Identifier the last Create/Register/Create Key
     * Pair/Locate... of this batch returned ("" if none). run_item puts it into the
     * payload of a later item that omits its Unique Identifier. */
    const char *id_placeholder;
    /* Set only while Import (kmip_import.c) runs Register's path: NULL otherwise. */
    const struct kmip_import *import;
};

/* What Import asks of Register's path (kmip_register). */
struct kmip_import {
    const char *uid;           /* the client's Unique Identifier */
    char domain[65];           /* its domain: the object goes there, whatever else is named */
    uint64_t key_id;           /* its key ID: must be exactly the domain's next one */
    bool replace;              /* Replace Existing on an existing object: new material */
};

typedef int (*kmip_handler)(struct kmip_call *c);

/* Standard operations (kmip_objects.c). */
int kmip_create(struct kmip_call *c);
int kmip_get(struct kmip_call *c);
int kmip_activate(struct kmip_call *c);
int kmip_revoke(struct kmip_call *c);
int kmip_destroy(struct kmip_call *c);
int kmip_discover_versions(struct kmip_call *c);
int kmip_query(struct kmip_call *c);
/* Attribute operations (kmip_attrs.c) and Locate (kmip_locate.c). */
int kmip_attrs_get_attributes(struct kmip_call *c);
int kmip_get_attribute_list(struct kmip_call *c);
int kmip_add_attribute(struct kmip_call *c);
int kmip_modify_attribute(struct kmip_call *c);
int kmip_delete_attribute(struct kmip_call *c);
int kmip_set_attribute(struct kmip_call *c);
int kmip_locate(struct kmip_call *c);
/* Create: check the request's attributes before creating (refuses read-only ones),
 * then store the ones kf_kms_create does not take (kmip_attrs.c). */
struct create_attrs_out;
int kmip_create_attrs_check(struct kmip_call *c, struct create_attrs_out *out);
int kmip_create_attrs_apply(struct kmip_call *c, const char *uid, struct create_attrs_out *out);
/* Create with all attributes: check, kmip_create, apply (register this for KMIP_OP_CREATE). */
int kmip_attrs_create(struct kmip_call *c);
/* keyfleet extension operations (kmip_admin.c). */
int kmip_kf_init(struct kmip_call *c);
int kmip_kf_unseal(struct kmip_call *c);
int kmip_kf_seal(struct kmip_call *c);
int kmip_kf_status(struct kmip_call *c);
int kmip_kf_domain_create(struct kmip_call *c);
int kmip_kf_domain_list(struct kmip_call *c);
int kmip_kf_key_list(struct kmip_call *c);
int kmip_kf_audit_show(struct kmip_call *c);
int kmip_kf_audit_verify(struct kmip_call *c);
/* Devices and pairwise KEKs (kmip_device.c, docs/pairing.md). */
int kmip_kf_device_register(struct kmip_call *c);
int kmip_kf_device_export(struct kmip_call *c);
int kmip_kf_device_get(struct kmip_call *c);
int kmip_kf_pair_key_request(struct kmip_call *c);
int kmip_kf_pair_ack_report(struct kmip_call *c);
/*
 * A run of consecutive items of one Request Message, all KeyfleetPairKeyRequest
 * or all KeyfleetPairAckReport, carried by ONE group-commit transaction and one
 * fdatasync (kms_pair_issue_items, kms_pair_ack_items) instead of one each.
 * kmip_device_run_add takes an item (c: its call, which must stay valid until
 * its answer) only if nothing but the service can refuse it: strict payload,
 * known device(s), the caller authorised for their domain, request policy.
 * Otherwise it returns < 0 having done nothing (no audit record): the
 * dispatcher ends the run there and runs that item on its own, which gives
 * its exact refusal. stop: KMIP Stop or Undo (items after a failed one are not
 * run and get no answer). kmip_device_run_answer fills item i's response
 * payload (KF_OK), or returns its refusal; *ran false: not run, no answer.
 */
struct kmip_device_run;
bool kmip_device_batch_op(uint32_t op);
int kmip_device_run_new(kf_kms *kms, const char *actor, uint32_t op, bool stop,
                        struct kmip_device_run **out);
int kmip_device_run_add(struct kmip_device_run *r, struct kmip_call *c);
size_t kmip_device_run_items(const struct kmip_device_run *r);
int kmip_device_run_exec(struct kmip_device_run *r);
int kmip_device_run_answer(struct kmip_device_run *r, size_t i, bool *ran);
void kmip_device_run_free(struct kmip_device_run *r);

/* Manufacturing (kmip_mfg.c, docs/manufacturing.md "KMIP operations"). */
int kmip_kf_mfg_setup(struct kmip_call *c);
int kmip_kf_mfg_role_enroll(struct kmip_call *c);
int kmip_kf_mfg_role_certs(struct kmip_call *c);
int kmip_kf_mfg_request_key(struct kmip_call *c);
int kmip_kf_mfg_report_install(struct kmip_call *c);
int kmip_kf_mfg_register(struct kmip_call *c);
int kmip_kf_mfg_retire(struct kmip_call *c);
int kmip_kf_mfg_status(struct kmip_call *c);
/* Token verification and the token key export to a Tin (kmip_tokens.c). */
int kmip_kf_token_verify(struct kmip_call *c);
int kmip_kf_token_key_export(struct kmip_call *c);
/*
 * Error level 2 of the manufacturing operations (0x80000010-0x80000019):
 * the command table. KF_OK if c->who holds one of the roles that may send op
 * and record_type (0: the request carries no signed record) is one op takes;
 * then, when domain is not NULL, holds that role in domain (level 3's
 * principal check). Otherwise KF_ERR_MFG_COMMAND (KF_ERR_PERM for the
 * domain), with the sentence in c->message, logged with its level and audited.
 */
int kmip_mfg_command(struct kmip_call *c, uint32_t op, uint32_t record_type, const char *domain);
/* The error level (1 framing/integrity, 2 command, 3 parameter) of a kf error. */
int kmip_mfg_level(int rc);
/* Log a refusal the service returned (it audited it already) once, with its
 * level; puts the level into c->message if empty. Returns rc. */
int kmip_mfg_log(struct kmip_call *c, uint32_t op, int rc);
/* A failed manufacturing operation's Response Payload: {KeyfleetErrorCode}
 * (no-op for other operations). */
int kmip_mfg_error_payload(kf_arena *a, kf_ttlv *item, uint32_t op, int err);

/*
 * KF_OK if c->who holds roles in domain (NULL: server-wide); otherwise audits
 * the refusal of op and returns KF_ERR_PERM with a sentence in c->message.
 */
int kmip_authorize(struct kmip_call *c, unsigned roles, const char *domain, const char *op);
/* Same, for the domain of a Unique Identifier (unknown UIDs pass to the service's not-found). */
int kmip_authorize_uid(struct kmip_call *c, unsigned roles, const char *uid, const char *op);

/* The standard (non-extension) operations in the handler table; returns the count. */
size_t kmip_supported_operations(uint32_t *out, size_t max);

int kmip_attrs_register(struct kmip_call *c);

/* Text field of the payload as a NUL-terminated arena string, or NULL. */
const char *kmip_text(struct kmip_call *c, const kf_ttlv *parent, uint32_t tag);

/* Cryptographic operations (kmip_crypto.c). */
int kmip_encrypt(struct kmip_call *c);
int kmip_decrypt(struct kmip_call *c);
int kmip_sign(struct kmip_call *c);
int kmip_signature_verify(struct kmip_call *c);
int kmip_mac(struct kmip_call *c);
int kmip_mac_verify(struct kmip_call *c);
int kmip_rng_retrieve(struct kmip_call *c);
int kmip_hash(struct kmip_call *c);
/* Register, Create Key Pair and object values for Get (kmip_keys.c). */
int kmip_register(struct kmip_call *c);
int kmip_create_key_pair(struct kmip_call *c);
/*
 * Append the object structure (Symmetric Key, Private Key, Public Key,
 * Certificate, Secret Data, Opaque Object) holding material to c->resp, in
 * requested_format (a KMIP Key Format Type; 0 = the stored format).
 * KF_ERR_KEY_FORMAT if that format cannot be produced for this object.
 */
int kmip_put_object_value(struct kmip_call *c, const struct kf_object *obj,
                          const uint8_t *material, size_t len, uint32_t requested_format);
/*
 * One attribute Register / Create Key Pair stored in obj->attributes (a TTLV
 * 2.x Attributes structure: Cryptographic Parameters, Certificate Type, and
 * Secret Data Type / Opaque Data Type as "y" custom attributes), decoded
 * into c->arena; NULL if absent.
 */
const kf_ttlv *kmip_stored_attribute(struct kmip_call *c, const struct kf_object *obj,
                                     uint32_t tag);
/*
 * Stored forms of asymmetric keys (keys.c): RSA as PKCS#1 DER, P-256 as the
 * 32-byte scalar / 65-byte point, Ed25519 as 32-byte seed / point. import
 * converts a client's encoding (format: KMIP Key Format Type; hint_alg the
 * algorithm the client named, for Raw keys) and says what the key is;
 * export produces a client encoding. stored/out: KF_BUF_SECRET for private keys.
 */
int kms_private_key_import(uint32_t format, uint32_t hint_alg, const uint8_t *in, size_t len,
                           uint32_t *alg, int32_t *bits, kf_buf *stored);
int kms_public_key_import(uint32_t format, uint32_t hint_alg, const uint8_t *in, size_t len,
                          uint32_t *alg, int32_t *bits, kf_buf *stored);
int kms_private_key_export(uint32_t alg, const uint8_t *stored, size_t len, uint32_t format,
                           kf_buf *out);
int kms_public_key_export(uint32_t alg, const uint8_t *stored, size_t len, uint32_t format,
                          kf_buf *out);
/* KF_OK if der is an X.509 certificate GnuTLS can parse. */
int kms_certificate_check(const uint8_t *der, size_t len);

/* Re-key, Derive Key, Check, Archive/Recover, Export, Interop, Log
 * (kmip_rekey.c, kmip_derive.c, kmip_ops2.c). */
int kmip_re_key(struct kmip_call *c);
int kmip_re_key_key_pair(struct kmip_call *c);
int kmip_derive_key(struct kmip_call *c);
int kmip_check(struct kmip_call *c);
int kmip_archive(struct kmip_call *c);
int kmip_recover(struct kmip_call *c);
int kmip_export(struct kmip_call *c);
int kmip_interop(struct kmip_call *c);
int kmip_log(struct kmip_call *c);
/* Import (KMIP 2.x; kmip_import.c). */
int kmip_import(struct kmip_call *c);
/* Certify a managed Public Key with an x-keyfleet-ca issuer (kmip_certify.c). */
int kmip_certify(struct kmip_call *c);
/* The request's Unique Identifier, else the batch's ID Placeholder; NULL (and a
 * sentence in c->message) if neither. */
const char *kmip_call_uid(struct kmip_call *c);
/* True once Archive marked obj (server-owned custom attribute y-keyfleet-archived). */
/* KF_ERR_OBJECT_ARCHIVED (with c->message) if obj is archived, else KF_OK. */
int kmip_refuse_archived(struct kmip_call *c, const struct kf_object *obj, const char *uid);

#endif
