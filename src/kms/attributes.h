/*
 * The attribute model: every KMIP attribute of a managed object in one
 * representation, the KMIP 2.x "Attributes" structure (each attribute as its
 * own tag; a 1.x Custom Attribute "x-Foo" as the 2.x Vendor Attribute
 * Attribute{Vendor Identification "x", Attribute Name "Foo", Attribute Value}).
 * KMIP 1.x Attribute{Attribute Name, [Attribute Index], Attribute Value}
 * items convert to and from it, so every operation is written once.
 *
 * Storage: the fields struct kf_object carries itself (type, state,
 * algorithm, length, usage mask, dates, revocation) stay there; every other
 * attribute, Name included (all instances, with their Name Type), is kept in
 * kf_object.attributes as the kf_ttlv_encode of an Attributes structure
 * holding only those. kf_object.name mirrors the first Name so the store's
 * name filter and listings keep working; an object whose blob has no Name
 * but whose name is set (made by kf_kms_create) shows that Name.
 */
#ifndef KF_KMS_ATTRIBUTES_H
#define KF_KMS_ATTRIBUTES_H

#include <stdbool.h>
#include <stdint.h>

#include "keyfleet/ttlv.h"
#include "kms_internal.h"

/* What the client may do with an attribute (KMIP 1.4/2.1 §3/§4 rule tables). */
enum attr_flag {
    AF_READ_ONLY = 1u << 0,  /* "Modifiable by client: No" */
    AF_MULTI = 1u << 1,      /* multiple instances permitted */
    AF_NO_DELETE = 1u << 2,  /* modifiable but not deletable (Sensitive, Extractable) */
    AF_AT_CREATE = 1u << 3,  /* a client may give it to Create/Register though read-only after */
    AF_OBJECT = 1u << 4,     /* kept in a struct kf_object field, not in the blob */
    AF_PRE_ACTIVE = 1u << 5, /* modifiable only while Pre-Active */
    AF_LIVE = 1u << 6,       /* modifiable only while Pre-Active or Active */
};

struct attr_def {
    const char *name; /* KMIP 1.x Attribute Name */
    uint32_t tag;     /* KMIP 2.x tag */
    unsigned flags;   /* enum attr_flag */
};

/* Known attribute by 1.x name or by tag; NULL if unknown. */
const struct attr_def *attr_def_by_name(const char *name, size_t len);
const struct attr_def *attr_def_by_tag(uint32_t tag);
/* Flags of any attribute node of the 2.x form (custom attributes: AF_MULTI). */
unsigned attr_flags(const kf_ttlv *node);

/* Deep copy of src with its tag replaced by tag, appended to parent (NULL: detached). */
kf_ttlv *attr_clone(kf_arena *a, kf_ttlv *parent, const kf_ttlv *src, uint32_t tag);
/* Same attribute (same tag; for custom attributes same vendor and name)? */
bool attr_same_kind(const kf_ttlv *x, const kf_ttlv *y);
/* Same attribute with the same value (compares encodings). */
bool attr_equal(const kf_ttlv *x, const kf_ttlv *y);

/* Known tag (or a well-formed custom attribute) carrying the type the spec gives it. */
KF_RESULT int attr_check_type(const kf_ttlv *node);
/* Usage Limits: check it and start Usage Limits Count at the Total when absent. */
KF_RESULT int attr_normalize(kf_arena *a, kf_ttlv *node);

/* 1.x Attribute -> detached 2.x node; *index gets the Attribute Index (0 if absent).
 * KF_ERR_ATTRIBUTE for an unknown name or a missing value. */
KF_RESULT int attr_from_v1(kf_arena *a, const kf_ttlv *attribute, kf_ttlv **node, int32_t *index);
/* A 1.x name ("Name", "x-Foo") -> a detached 2.x node without value, for matching
 * kinds (Get Attributes by name, Delete Attribute). KF_ERR_ATTRIBUTE if unknown. */
KF_RESULT int attr_kind_from_name(kf_arena *a, const char *name, size_t len, kf_ttlv **kind);
/* A 2.x Attribute Reference (Enumeration tag or {Vendor Identification, Attribute Name}) -> kind. */
KF_RESULT int attr_kind_from_reference(kf_arena *a, const kf_ttlv *ref, kf_ttlv **kind);
/* 2.x node -> 1.x Attribute{Name, [Index if > 0], Value} appended to parent. */
KF_RESULT int attr_to_v1(kf_arena *a, kf_ttlv *parent, const kf_ttlv *node, int32_t index);
/* 1.x name of a node into out ("x-Foo" for vendor "x", name "Foo"). */
KF_RESULT int attr_name(const kf_ttlv *node, char *out, size_t outlen);
/* Attribute Reference of a node appended to parent (2.x Get Attribute List). */
KF_RESULT int attr_put_reference(kf_arena *a, kf_ttlv *parent, const kf_ttlv *node);

/* Index of node among the instances of its kind in set (1.x Attribute Index). */
int32_t attr_index_in(const kf_ttlv *set, const kf_ttlv *node);
/* The index-th instance of kind in set, or NULL. */
kf_ttlv *attr_find_instance(kf_ttlv *set, const kf_ttlv *kind, int32_t index);
size_t attr_count_kind(const kf_ttlv *set, const kf_ttlv *kind);
/* Unlink node from set's children. */
void attr_remove(kf_ttlv *set, kf_ttlv *node);
/* Put replacement where old was. */
void attr_replace(kf_ttlv *set, kf_ttlv *old, kf_ttlv *replacement);

/* The object's full attribute set (object fields + blob) as a 2.x Attributes structure. */
KF_RESULT int attrs_load(kf_arena *a, const struct kf_object *obj, const char *uid,
                         kf_ttlv **set);
/* Write a full set back: the client-settable object fields (activation, deactivation
 * date, name mirror) and the blob (obj->attributes replaced, malloc'd). */
KF_RESULT int attrs_store(const kf_ttlv *set, struct kf_object *obj);

/*
 * Create/Register: the attributes of a request (1.x Template-Attribute with its
 * Attribute items and Names, or 2.x Attributes) checked and split into the object
 * fields (alg, length, usage mask, name, activation/deactivation dates) and the
 * blob of everything else, which kf_register_spec.attributes can carry. Refuses
 * read-only attributes (KF_ERR_ATTR_READ_ONLY) and unknown names.
 * blob/blob_len: malloc'd (NULL/0 when there is nothing else); free() it.
 */
struct create_attrs_out {
    uint32_t alg;
    int32_t length;
    uint32_t usage;
    bool have_usage;
    char name[KF_OBJECT_NAME_MAX + 1];
    int64_t activation_date, deactivation_date;
    char domain[KF_DOMAIN_NAME_MAX + 1]; /* x-keyfleet-domain, "" if not given */
    uint8_t *blob;
    size_t blob_len;
};
KF_RESULT int create_attrs_from_request(kf_arena *a, const kf_ttlv *req_payload,
                                        struct create_attrs_out *out);

/*
 * Change an object's attributes in one audited transaction. fn edits the full
 * set; then the set is stored, a reached Activation/Deactivation Date moves the
 * state (kf_lifecycle_transition with KF_EV_ACTIVATION_DATE_REACHED /
 * KF_EV_DEACTIVATION_DATE_REACHED) and persists, Last Change Date is set.
 * obj passed to fn is the object as loaded (state already effective).
 */
typedef int (*kms_attrs_edit_fn)(void *ctx, kf_arena *a, kf_ttlv *set,
                                 const struct kf_object *obj);
KF_RESULT int kms_attrs_edit(kf_kms *kms, const char *actor, const char *op, const char *uid,
                             kms_attrs_edit_fn fn, void *ctx);

/*
 * Usage Limits enforcement, for kf_kms_use_key: inside the caller's open
 * transaction, with kms->lock held, on an object loaded with its attributes.
 * Unit Object consumes 1, unit Byte consumes bytes. Updates obj->attributes and
 * writes the object (kf_store_object_update), so the caller must COMMIT.
 * KF_OK (also when the object has no Usage Limits), KF_ERR_USAGE_LIMIT when
 * the count left is smaller than what this use needs.
 */
KF_RESULT int kms_usage_limit_consume(kf_kms *kms, struct kf_object *obj, uint64_t bytes);

/*
 * Server-set attributes of a new object (attrs_server.c), computed where the
 * plaintext material is (objects.c): Digest (SHA-256 over the material in its
 * Key Format Type), Sensitive false, Always Sensitive false, Extractable true,
 * Never Extractable false, Fresh true, Lease Time, Original Creation Date and,
 * when the server generated the material, Random Number Generator. Attributes
 * the client's blob already has are kept. out: malloc'd blob (free()).
 */
struct kms_new_object {
    uint32_t key_format;     /* KMIP Key Format Type of material; 0: none in the Digest */
    const uint8_t *material; /* plaintext, only hashed; NULL: no Digest */
    size_t material_len;
    bool generated;          /* made by the server's RNG (Create) */
    int64_t now;
};
KF_RESULT int kms_server_attrs(const uint8_t *blob, size_t blob_len,
                               const struct kms_new_object *n, uint8_t **out, size_t *out_len);
/* Digest{SHA-256, SHA-256(material), [Key Format Type]} appended to parent. */
KF_RESULT int kms_digest_attr(kf_arena *a, kf_ttlv *parent, uint32_t key_format,
                              const uint8_t *material, size_t material_len);

/* After a Get served obj's key material: Fresh becomes false (KMIP 1.4 §3.34),
 * in an audited edit, only when the object was still fresh. */
KF_RESULT int kms_mark_served(kf_kms *kms, const char *actor, const char *uid,
                              const struct kf_object *obj);

/*
 * Create Key Pair: Link{Public Key Link, pub_uid} on the private key and
 * Link{Private Key Link, priv_uid} on the public key, each in an audited edit.
 */
KF_RESULT int kms_link_pair(kf_kms *kms, const char *actor, const char *priv_uid,
                            const char *pub_uid);

#endif
