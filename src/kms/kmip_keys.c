/*
 * KMIP Register and Create Key Pair, and the object values Get returns.
 *
 * Attributes come as KMIP 1.x Template-Attribute (Attribute {Name, Value})
 * or as the KMIP 2.x Attributes structure (one tag per attribute); both are
 * read into one struct key_attrs. What the store has no column for but the
 * crypto handlers and Get need (Cryptographic Parameters, Secret Data Type,
 * Opaque Data Type, Certificate Type) is kept in the object's attributes
 * blob, the 2.x Attributes structure of attributes.h (kmip_stored_attribute
 * reads it).
 *
 * Asymmetric keys are stored in one form per kind (keys.c); Register
 * converts into it and Get converts out of it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "attributes.h"
#include "kmip_internal.h"

#define KF_DEFAULT_DOMAIN "default"
#define KF_DOMAIN_ATTRIBUTE "x-keyfleet-domain"
#define STORED_MAX 16384 /* kf_kms_register's limit on material */

struct key_attrs {
    uint32_t alg;
    int32_t length;
    uint32_t usage;
    bool has_usage;
    uint32_t curve;            /* Recommended Curve */
    const char *name;
    const char *domain;
    const kf_ttlv *cparams;    /* Cryptographic Parameters to keep with the key */
};

/* ---- attributes in ---- */

static int take_usage(const kf_ttlv *n, struct key_attrs *at)
{
    int32_t m;
    KF_GUARD(kf_ttlv_get_int(n, &m));
    at->usage = (uint32_t)m;
    at->has_usage = true;
    return KF_OK;
}

static int take_name(struct kmip_call *c, const kf_ttlv *name_struct, struct key_attrs *at)
{
    at->name = kmip_text(c, name_struct, KMIP_TAG_NAME_VALUE);
    KF_ENSURE(at->name != NULL, KF_ERR_ATTRIBUTE);
    return KF_OK;
}

static int take_domain_params(const kf_ttlv *dp, struct key_attrs *at)
{
    const kf_ttlv *n = kf_ttlv_find(dp, KMIP_TAG_RECOMMENDED_CURVE);
    return n ? kf_ttlv_get_enum(n, &at->curve) : KF_OK;
}

/* KMIP 1.x: Attribute { Attribute Name, [Attribute Index], Attribute Value }. */
static int take_v1_attribute(struct kmip_call *c, const kf_ttlv *attr, struct key_attrs *at)
{
    const kf_ttlv *name = kf_ttlv_find(attr, KMIP_TAG_ATTRIBUTE_NAME);
    const kf_ttlv *value = kf_ttlv_find(attr, KMIP_TAG_ATTRIBUTE_VALUE);
    KF_ENSURE(name && value, KF_ERR_REQUEST);
    if (kf_ttlv_text_equals(name, "Cryptographic Algorithm"))
        return kf_ttlv_get_enum(value, &at->alg);
    if (kf_ttlv_text_equals(name, "Cryptographic Length"))
        return kf_ttlv_get_int(value, &at->length);
    if (kf_ttlv_text_equals(name, "Cryptographic Usage Mask"))
        return take_usage(value, at);
    if (kf_ttlv_text_equals(name, "Name"))
        return take_name(c, value, at);
    if (kf_ttlv_text_equals(name, "Cryptographic Parameters")) {
        KF_ENSURE(value->type == KF_TTLV_STRUCTURE, KF_ERR_ATTRIBUTE);
        at->cparams = value;
        return KF_OK;
    }
    if (kf_ttlv_text_equals(name, "Cryptographic Domain Parameters"))
        return take_domain_params(value, at);
    if (kf_ttlv_text_equals(name, KF_DOMAIN_ATTRIBUTE)) {
        at->domain = kmip_text(c, attr, KMIP_TAG_ATTRIBUTE_VALUE);
        KF_ENSURE(at->domain != NULL, KF_ERR_ATTRIBUTE);
    }
    return KF_OK; /* other attributes: the attribute operations' business */
}

static int take_v2_attributes(struct kmip_call *c, const kf_ttlv *attrs, struct key_attrs *at)
{
    const kf_ttlv *n;
    if ((n = kf_ttlv_find(attrs, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM)))
        KF_GUARD(kf_ttlv_get_enum(n, &at->alg));
    if ((n = kf_ttlv_find(attrs, KMIP_TAG_CRYPTOGRAPHIC_LENGTH)))
        KF_GUARD(kf_ttlv_get_int(n, &at->length));
    if ((n = kf_ttlv_find(attrs, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK)))
        KF_GUARD(take_usage(n, at));
    if ((n = kf_ttlv_find(attrs, KMIP_TAG_NAME)))
        KF_GUARD(take_name(c, n, at));
    if ((n = kf_ttlv_find(attrs, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS)))
        at->cparams = n;
    if ((n = kf_ttlv_find(attrs, KMIP_TAG_CRYPTOGRAPHIC_DOMAIN_PARAMETERS)))
        KF_GUARD(take_domain_params(n, at));
    if ((n = kf_ttlv_find(attrs, KMIP_TAG_KEYFLEET_DOMAIN)))
        KF_ENSURE((at->domain = kmip_text(c, attrs, KMIP_TAG_KEYFLEET_DOMAIN)) != NULL,
                  KF_ERR_ATTRIBUTE);
    return KF_OK;
}

/* One group of attributes, in whichever of the two forms the request used. */
static int take_group(struct kmip_call *c, uint32_t v1_tag, uint32_t v2_tag, struct key_attrs *at)
{
    const kf_ttlv *ta = kf_ttlv_find(c->req, v1_tag);
    for (const kf_ttlv *a = kf_ttlv_find(ta, KMIP_TAG_ATTRIBUTE); a;
         a = kf_ttlv_find_next(a, KMIP_TAG_ATTRIBUTE))
        KF_GUARD(take_v1_attribute(c, a, at));
    const kf_ttlv *attrs = kf_ttlv_find(c->req, v2_tag);
    return attrs ? take_v2_attributes(c, attrs, at) : KF_OK;
}

static void default_domain(struct kmip_call *c, struct key_attrs *at)
{
    if (!at->domain)
        at->domain = kmip_text(c, c->req, KMIP_TAG_KEYFLEET_DOMAIN);
    if (!at->domain)
        at->domain = c->who->default_domain[0] ? c->who->default_domain : KF_DEFAULT_DOMAIN;
}

/* ---- the attributes blob ---- */

/* A detached copy of n (next NULL) under a new tag, for appending elsewhere. */
static kf_ttlv *copy_as(struct kmip_call *c, const kf_ttlv *n, uint32_t tag)
{
    kf_buf enc;
    kf_ttlv *copy = NULL;
    if (kf_buf_alloc(&enc, 0, 65536, 0) < 0)
        return NULL;
    if (kf_ttlv_encode(n, &enc) == KF_OK &&
        kf_ttlv_decode(enc.data, enc.len, NULL, c->arena, &copy) == KF_OK)
        copy->tag = tag;
    kf_buf_free(&enc);
    return copy;
}

/*
 * Secret Data Type and Opaque Data Type are fields of the object value, not
 * KMIP attributes: they are kept as server-owned ("y", read-only to clients)
 * custom attributes so the attribute operations see a well-formed set.
 */
static const char *server_attribute_name(uint32_t tag)
{
    if (tag == KMIP_TAG_SECRET_DATA_TYPE)
        return "keyfleet-secret-data-type";
    if (tag == KMIP_TAG_OPAQUE_DATA_TYPE)
        return "keyfleet-opaque-data-type";
    return NULL;
}

struct stored_extras {
    const kf_ttlv *cparams;
    uint32_t enum_tag; /* Secret Data Type, Opaque Data Type or Certificate Type; 0 = none */
    uint32_t enum_value;
};

/* Encode the extras into blob (left empty when there are none). */
static int stored_attributes(struct kmip_call *c, const struct stored_extras *x, kf_buf *blob)
{
    if (!x->cparams && !x->enum_tag)
        return KF_OK;
    kf_ttlv *root = kf_ttlv_struct(c->arena, NULL, KMIP_TAG_ATTRIBUTES);
    KF_ENSURE(root != NULL, KF_ERR_NOMEM);
    if (x->cparams) {
        kf_ttlv *cp = copy_as(c, x->cparams, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
        KF_ENSURE(cp != NULL, KF_ERR_ATTRIBUTE);
        KF_GUARD(kf_ttlv_append(root, cp));
    }
    const char *vendor_name = server_attribute_name(x->enum_tag);
    if (x->enum_tag && !vendor_name && !kf_ttlv_add_enum(c->arena, root, x->enum_tag, x->enum_value))
        return KF_ERR_NOMEM;
    if (vendor_name) {
        kf_ttlv *va = kf_ttlv_struct(c->arena, root, KMIP_TAG_ATTRIBUTE);
        if (!va || !kf_ttlv_add_text(c->arena, va, KMIP_TAG_VENDOR_IDENTIFICATION, "y") ||
            !kf_ttlv_add_text(c->arena, va, KMIP_TAG_ATTRIBUTE_NAME, vendor_name) ||
            !kf_ttlv_add_enum(c->arena, va, KMIP_TAG_ATTRIBUTE_VALUE, x->enum_value))
            return KF_ERR_NOMEM;
    }
    return kf_ttlv_encode(root, blob);
}

const kf_ttlv *kmip_stored_attribute(struct kmip_call *c, const struct kf_object *obj,
                                     uint32_t tag)
{
    kf_ttlv *root;
    if (!obj->attributes || obj->attributes_len == 0 ||
        kf_ttlv_decode(obj->attributes, obj->attributes_len, NULL, c->arena, &root) < 0 ||
        root->tag != KMIP_TAG_ATTRIBUTES)
        return NULL;
    const char *vendor_name = server_attribute_name(tag);
    if (!vendor_name)
        return kf_ttlv_find(root, tag);
    for (const kf_ttlv *a = kf_ttlv_find(root, KMIP_TAG_ATTRIBUTE); a;
         a = kf_ttlv_find_next(a, KMIP_TAG_ATTRIBUTE))
        if (kf_ttlv_text_equals(kf_ttlv_find(a, KMIP_TAG_VENDOR_IDENTIFICATION), "y") &&
            kf_ttlv_text_equals(kf_ttlv_find(a, KMIP_TAG_ATTRIBUTE_NAME), vendor_name))
            return kf_ttlv_find(a, KMIP_TAG_ATTRIBUTE_VALUE);
    return NULL;
}

static uint32_t stored_enum(struct kmip_call *c, const struct kf_object *obj, uint32_t tag,
                            uint32_t otherwise)
{
    uint32_t v;
    return kf_ttlv_get_enum(kmip_stored_attribute(c, obj, tag), &v) == KF_OK ? v : otherwise;
}

/* Register the material with its attributes and extras; uid receives the new UID. */
static int register_object(struct kmip_call *c, const char *op, struct kf_register_spec *spec,
                           const struct stored_extras *x, const kf_buf *material,
                           char uid[KF_UID_MAX])
{
    kf_buf blob;
    KF_GUARD(kf_buf_alloc(&blob, 0, 65536, 0));
    int rc = stored_attributes(c, x, &blob);
    if (rc == KF_OK) {
        spec->attributes = blob.len ? blob.data : NULL;
        spec->attributes_len = blob.len;
        rc = kf_kms_register(c->kms, c->actor, op, spec, material->data, material->len, uid);
    }
    kf_buf_free(&blob);
    return rc;
}

/* Import (Replace Existing): the object named by the import gets the material. */
static int replace_object(struct kmip_call *c, struct kf_register_spec *spec,
                          const struct stored_extras *x, const kf_buf *material)
{
    kf_buf blob;
    KF_GUARD(kf_buf_alloc(&blob, 0, 65536, 0));
    int rc = stored_attributes(c, x, &blob);
    if (rc == KF_OK) {
        spec->attributes = blob.len ? blob.data : NULL;
        spec->attributes_len = blob.len;
        rc = kf_kms_replace_material(c->kms, c->actor, "Import", c->import->uid, spec,
                                     material->data, material->len);
    }
    kf_buf_free(&blob);
    return rc;
}

/* Import: the object stays in the domain its Unique Identifier names. */
static int import_domain(struct kmip_call *c, struct key_attrs *at)
{
    const char *named = kmip_text(c, kf_ttlv_find(c->req, KMIP_TAG_ATTRIBUTES),
                                  KMIP_TAG_KEYFLEET_DOMAIN);
    if (named && strcmp(named, c->import->domain) != 0) {
        snprintf(c->message, sizeof(c->message),
                 "the x-keyfleet-domain attribute differs from the Unique Identifier's domain");
        return KF_ERR_ATTRIBUTE;
    }
    at->domain = c->import->domain;
    return KF_OK;
}

/* ---- Register ---- */

struct key_block {
    uint32_t format;
    const uint8_t *material;
    size_t len;
    uint32_t alg;
    int32_t length;
};

static int parse_key_block(struct kmip_call *c, const kf_ttlv *object, struct key_block *kb)
{
    const kf_ttlv *b = kf_ttlv_find(object, KMIP_TAG_KEY_BLOCK);
    const kf_ttlv *n;
    if (!b || kf_ttlv_get_enum(kf_ttlv_find(b, KMIP_TAG_KEY_FORMAT_TYPE), &kb->format) < 0) {
        snprintf(c->message, sizeof(c->message), "the object needs a Key Block with a Key Format Type");
        return KF_ERR_REQUEST;
    }
    if (kf_ttlv_find(b, KMIP_TAG_KEY_WRAPPING_DATA)) {
        snprintf(c->message, sizeof(c->message), "wrapped key blocks cannot be registered");
        return KF_ERR_UNSUPPORTED;
    }
    const kf_ttlv *km = KF_TTLV_PATH(b, KMIP_TAG_KEY_VALUE, KMIP_TAG_KEY_MATERIAL);
    if (km && km->type == KF_TTLV_STRUCTURE && kb->format == KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY)
        km = kf_ttlv_find(km, KMIP_TAG_KEY);
    if (!km || km->type != KF_TTLV_BYTES) {
        snprintf(c->message, sizeof(c->message), "Key Material must be a Byte String here");
        return km ? KF_ERR_KEY_FORMAT : KF_ERR_REQUEST;
    }
    KF_GUARD(kf_ttlv_get_bytes(km, &kb->material, &kb->len));
    if ((n = kf_ttlv_find(b, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM)))
        KF_GUARD(kf_ttlv_get_enum(n, &kb->alg));
    if ((n = kf_ttlv_find(b, KMIP_TAG_CRYPTOGRAPHIC_LENGTH)))
        KF_GUARD(kf_ttlv_get_int(n, &kb->length));
    return KF_OK;
}

static int symmetric_key_in(const struct key_block *kb, struct kf_register_spec *spec,
                            kf_buf *stored)
{
    KF_ENSURE(kb->format == KMIP_KEYFMT_RAW || kb->format == KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY,
              KF_ERR_KEY_FORMAT);
    KF_ENSURE(kb->len > 0 && kb->len <= 512, KF_ERR_KEY_SIZE);
    if (!spec->crypto_alg)
        spec->crypto_alg = kb->alg;
    KF_ENSURE(spec->crypto_alg != 0, KF_ERR_REQUEST);
    KF_ENSURE(spec->crypto_alg != KMIP_ALG_AES || kb->len == 16 || kb->len == 24 || kb->len == 32,
              KF_ERR_KEY_SIZE);
    int32_t bits = (int32_t)kb->len * 8;
    KF_ENSURE((!spec->crypto_length || spec->crypto_length == bits) &&
                  (!kb->length || kb->length == bits),
              KF_ERR_ATTRIBUTE);
    spec->crypto_length = bits;
    spec->key_format = KMIP_KEYFMT_RAW;
    return kf_buf_put_bytes(stored, kb->material, kb->len);
}

static int asymmetric_key_in(const struct key_block *kb, bool private_key,
                             struct kf_register_spec *spec, kf_buf *stored)
{
    uint32_t hint = spec->crypto_alg ? spec->crypto_alg : kb->alg;
    uint32_t alg;
    int32_t bits;
    KF_GUARD(private_key
                 ? kms_private_key_import(kb->format, hint, kb->material, kb->len, &alg, &bits, stored)
                 : kms_public_key_import(kb->format, hint, kb->material, kb->len, &alg, &bits, stored));
    /* A named algorithm must match the key; EC and ECDSA both name a P-256 key. */
    KF_ENSURE(!hint || hint == alg || (alg == KMIP_ALG_ECDSA && hint == KMIP_ALG_EC),
              KF_ERR_ATTRIBUTE);
    spec->crypto_alg = alg;
    spec->crypto_length = bits;
    spec->key_format = alg == KMIP_ALG_RSA ? KMIP_KEYFMT_PKCS_1 : KMIP_KEYFMT_RAW;
    return KF_OK;
}

static int bytes_of(struct kmip_call *c, const kf_ttlv *parent, uint32_t tag, const char *what,
                    const uint8_t **p, size_t *len)
{
    if (kf_ttlv_get_bytes(kf_ttlv_find(parent, tag), p, len) < 0 || *len == 0) {
        snprintf(c->message, sizeof(c->message), "the object needs a non-empty %s", what);
        return KF_ERR_REQUEST;
    }
    return KF_OK;
}

/* The object structure of the request, converted into the stored form. */
static int object_in(struct kmip_call *c, uint32_t type, struct kf_register_spec *spec,
                     struct stored_extras *x, kf_buf *stored)
{
    struct key_block kb = {0};
    const kf_ttlv *o;
    const uint8_t *p;
    size_t len;
    switch (type) {
    case KF_OBJ_SYMMETRIC_KEY:
        KF_GUARD(parse_key_block(c, kf_ttlv_find(c->req, KMIP_TAG_SYMMETRIC_KEY), &kb));
        return symmetric_key_in(&kb, spec, stored);
    case KF_OBJ_PRIVATE_KEY:
    case KF_OBJ_PUBLIC_KEY: {
        bool priv = type == KF_OBJ_PRIVATE_KEY;
        o = kf_ttlv_find(c->req, priv ? KMIP_TAG_PRIVATE_KEY : KMIP_TAG_PUBLIC_KEY);
        KF_GUARD(parse_key_block(c, o, &kb));
        return asymmetric_key_in(&kb, priv, spec, stored);
    }
    case KF_OBJ_SECRET_DATA:
        o = kf_ttlv_find(c->req, KMIP_TAG_SECRET_DATA);
        KF_GUARD(parse_key_block(c, o, &kb));
        KF_ENSURE(kb.format == KMIP_KEYFMT_OPAQUE || kb.format == KMIP_KEYFMT_RAW,
                  KF_ERR_KEY_FORMAT);
        x->enum_tag = KMIP_TAG_SECRET_DATA_TYPE;
        if (kf_ttlv_get_enum(kf_ttlv_find(o, KMIP_TAG_SECRET_DATA_TYPE), &x->enum_value) < 0)
            x->enum_value = KMIP_SECRET_PASSWORD;
        spec->key_format = KMIP_KEYFMT_OPAQUE;
        spec->crypto_length = (int32_t)kb.len * 8;
        return kf_buf_put_bytes(stored, kb.material, kb.len);
    case KF_OBJ_OPAQUE:
        o = kf_ttlv_find(c->req, KMIP_TAG_OPAQUE_OBJECT);
        x->enum_tag = KMIP_TAG_OPAQUE_DATA_TYPE;
        KF_ENSURE(kf_ttlv_get_enum(kf_ttlv_find(o, KMIP_TAG_OPAQUE_DATA_TYPE), &x->enum_value) ==
                      KF_OK,
                  KF_ERR_REQUEST);
        KF_GUARD(bytes_of(c, o, KMIP_TAG_OPAQUE_DATA_VALUE, "Opaque Data Value", &p, &len));
        return kf_buf_put_bytes(stored, p, len);
    case KF_OBJ_CERTIFICATE:
        o = kf_ttlv_find(c->req, KMIP_TAG_CERTIFICATE);
        x->enum_tag = KMIP_TAG_CERTIFICATE_TYPE;
        x->enum_value = KMIP_CERTIFICATE_TYPE_X_509;
        uint32_t ct = 0;
        KF_ENSURE(kf_ttlv_get_enum(kf_ttlv_find(o, KMIP_TAG_CERTIFICATE_TYPE), &ct) == KF_OK,
                  KF_ERR_REQUEST);
        KF_ENSURE(ct == KMIP_CERTIFICATE_TYPE_X_509, KF_ERR_UNSUPPORTED);
        KF_GUARD(bytes_of(c, o, KMIP_TAG_CERTIFICATE_VALUE, "Certificate Value", &p, &len));
        KF_GUARD(kms_certificate_check(p, len));
        return kf_buf_put_bytes(stored, p, len); /* as given: a certificate is its DER */
    default:
        snprintf(c->message, sizeof(c->message),
                 "Register takes symmetric, private and public keys, certificates, secret data "
                 "and opaque objects");
        return KF_ERR_UNSUPPORTED;
    }
}

int kmip_register(struct kmip_call *c)
{
    uint32_t type;
    KF_ENSURE(c->req, KF_ERR_REQUEST);
    if (kf_ttlv_get_enum(kf_ttlv_find(c->req, KMIP_TAG_OBJECT_TYPE), &type) < 0) {
        snprintf(c->message, sizeof(c->message), "Register needs an Object Type");
        return KF_ERR_REQUEST;
    }
    struct key_attrs at = {0};
    KF_GUARD(take_group(c, KMIP_TAG_TEMPLATE_ATTRIBUTE, KMIP_TAG_ATTRIBUTES, &at));
    default_domain(c, &at);
    const char *op = c->import ? "Import" : "Register";
    if (c->import)
        KF_GUARD(import_domain(c, &at));
    KF_GUARD(kmip_authorize(c, KF_ROLE_MANAGE, at.domain, op));
    struct kf_register_spec spec = {
        .domain = at.domain,
        .object_type = type,
        .crypto_alg = at.alg,
        .crypto_length = at.length,
        .usage_mask = at.usage,
        .name = at.name,
        .key_id = c->import ? c->import->key_id : 0,
    };
    struct stored_extras x = {.cparams = at.cparams};
    kf_buf stored;
    char uid[KF_UID_MAX];
    KF_GUARD(kf_buf_alloc(&stored, 0, STORED_MAX, KF_BUF_SECRET));
    int rc = object_in(c, type, &spec, &x, &stored);
    if (rc == KF_ERR_FORMAT) { /* the client's encoding: Invalid Field, not a server failure */
        snprintf(c->message, sizeof(c->message),
                 "the key or certificate does not parse in the Key Format Type given");
        rc = KF_ERR_ATTRIBUTE;
    }
    if (rc == KF_OK && c->import && c->import->replace) {
        rc = replace_object(c, &spec, &x, &stored);
        snprintf(uid, KF_UID_MAX, "%s", c->import->uid);
    } else if (rc == KF_OK) {
        rc = register_object(c, op, &spec, &x, &stored, uid);
    }
    kf_buf_free(&stored);
    KF_GUARD(rc);
    return kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER, uid) ? KF_OK
                                                                                 : KF_ERR_NOMEM;
}

/* ---- Create Key Pair ---- */

enum pair_kind { PAIR_RSA = 1, PAIR_P256, PAIR_ED25519 };

static int pair_kind_of(const struct key_attrs *at, enum pair_kind *kind)
{
    switch (at->alg) {
    case KMIP_ALG_RSA:
        KF_ENSURE(at->length == 2048 || at->length == 3072 || at->length == 4096,
                  KF_ERR_KEY_SIZE);
        *kind = PAIR_RSA;
        return KF_OK;
    case KMIP_ALG_EC:
    case KMIP_ALG_ECDSA:
        /* KMIP 1.x has no Ed25519 algorithm: EC on Curve25519 stands for it. */
        if (at->alg == KMIP_ALG_EC && at->curve == KMIP_CURVE_CURVE25519) {
            *kind = PAIR_ED25519;
            return KF_OK;
        }
        KF_ENSURE((!at->curve || at->curve == KMIP_CURVE_P_256) &&
                      (!at->length || at->length == 256),
                  KF_ERR_KEY_SIZE);
        *kind = PAIR_P256;
        return KF_OK;
    case KMIP_ALG_ED25519:
        KF_ENSURE(!at->length || at->length == 256, KF_ERR_KEY_SIZE);
        *kind = PAIR_ED25519;
        return KF_OK;
    default:
        return KF_ERR_UNSUPPORTED;
    }
}

static int rsa_pair(int32_t bits, kf_buf *priv, kf_buf *pub)
{
    kf_rsa_key *k;
    uint8_t *der = NULL, *pder = NULL;
    size_t len = 0, plen = 0;
    KF_GUARD(kf_rsa_generate((unsigned)bits, &k));
    int rc = kf_rsa_export_private(k, &der, &len);
    if (rc == KF_OK)
        rc = kf_rsa_export_public(k, &pder, &plen);
    if (rc == KF_OK)
        rc = kf_buf_put_bytes(priv, der, len);
    if (rc == KF_OK)
        rc = kf_buf_put_bytes(pub, pder, plen);
    kf_secmem_free(der);
    free(pder);
    kf_rsa_free(k);
    return rc;
}

static int p256_pair(kf_buf *priv, kf_buf *pub)
{
    uint8_t *scalar, point[65];
    KF_GUARD(kf_buf_put_space(priv, 32, &scalar));
    KF_GUARD(kf_p256_generate(scalar, point));
    return kf_buf_put_bytes(pub, point, sizeof(point));
}

static int ed25519_pair(kf_buf *priv, kf_buf *pub)
{
    uint8_t *seed, point[32];
    KF_GUARD(kf_buf_put_space(priv, 32, &seed));
    KF_GUARD(kf_rng_bytes(seed, 32)); /* RFC 8032 5.1.5: the private key is 32 random bytes */
    KF_GUARD(kf_ed25519_public(seed, point));
    return kf_buf_put_bytes(pub, point, sizeof(point));
}

/* Common attributes first, then the half's own on top. */
static int half_attrs(struct kmip_call *c, const struct key_attrs *common, uint32_t v1_tag,
                      uint32_t v2_tag, struct key_attrs *at)
{
    *at = *common;
    return take_group(c, v1_tag, v2_tag, at);
}

static struct kf_register_spec half_spec(const struct key_attrs *at, uint32_t type,
                                         uint32_t alg, int32_t bits, uint32_t default_usage)
{
    return (struct kf_register_spec){
        .domain = at->domain,
        .object_type = type,
        .crypto_alg = alg,
        .crypto_length = bits,
        .usage_mask = at->has_usage ? at->usage : default_usage,
        .key_format = alg == KMIP_ALG_RSA ? KMIP_KEYFMT_PKCS_1 : KMIP_KEYFMT_RAW,
        .name = at->name,
        .server_generated = true, /* made here by Create Key Pair: the RNG attribute applies */
    };
}

static int generate_pair(enum pair_kind kind, int32_t length, kf_buf *priv, kf_buf *pub,
                         uint32_t *alg, int32_t *bits)
{
    *alg = kind == PAIR_RSA ? KMIP_ALG_RSA : kind == PAIR_P256 ? KMIP_ALG_ECDSA : KMIP_ALG_ED25519;
    *bits = kind == PAIR_RSA ? length : 256;
    if (kind == PAIR_RSA)
        return rsa_pair(length, priv, pub);
    return kind == PAIR_P256 ? p256_pair(priv, pub) : ed25519_pair(priv, pub);
}

/* Register both halves; if the public half fails, the private one is destroyed again. */
static int register_pair(struct kmip_call *c, const struct key_attrs *pa,
                         const struct key_attrs *qa, uint32_t alg, int32_t bits,
                         const kf_buf *priv, const kf_buf *pub, char priv_uid[KF_UID_MAX],
                         char pub_uid[KF_UID_MAX])
{
    struct kf_register_spec ps = half_spec(pa, KF_OBJ_PRIVATE_KEY, alg, bits, KMIP_USAGE_SIGN);
    struct kf_register_spec qs = half_spec(qa, KF_OBJ_PUBLIC_KEY, alg, bits, KMIP_USAGE_VERIFY);
    struct stored_extras px = {.cparams = pa->cparams}, qx = {.cparams = qa->cparams};
    KF_GUARD(register_object(c, "Create Key Pair", &ps, &px, priv, priv_uid));
    int rc = register_object(c, "Create Key Pair", &qs, &qx, pub, pub_uid);
    if (rc == KF_OK) /* Public Key Link on the private half, Private Key Link on the public */
        rc = kms_link_pair(c->kms, c->actor, priv_uid, pub_uid);
    if (rc < 0 && kf_kms_destroy(c->kms, c->actor, priv_uid) < 0)
        snprintf(c->message, sizeof(c->message),
                 "the private key %.80s was stored but its public key was not; destroy it",
                 priv_uid);
    return rc;
}

int kmip_create_key_pair(struct kmip_call *c)
{
    struct key_attrs common = {0}, pa, qa;
    KF_ENSURE(c->req, KF_ERR_REQUEST);
    KF_GUARD(take_group(c, KMIP_TAG_COMMON_TEMPLATE_ATTRIBUTE, KMIP_TAG_COMMON_ATTRIBUTES,
                        &common));
    KF_GUARD(half_attrs(c, &common, KMIP_TAG_PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
                        KMIP_TAG_PRIVATE_KEY_ATTRIBUTES, &pa));
    KF_GUARD(half_attrs(c, &common, KMIP_TAG_PUBLIC_KEY_TEMPLATE_ATTRIBUTE,
                        KMIP_TAG_PUBLIC_KEY_ATTRIBUTES, &qa));
    default_domain(c, &pa);
    default_domain(c, &qa);
    if (strcmp(pa.domain, qa.domain) != 0) {
        snprintf(c->message, sizeof(c->message), "both keys of a pair live in one domain");
        return KF_ERR_DOMAIN_CROSS;
    }
    enum pair_kind kind;
    if (pair_kind_of(&pa, &kind) < 0 || pa.alg != qa.alg) {
        snprintf(c->message, sizeof(c->message),
                 "key pairs offered: RSA 2048/3072/4096, ECDSA P-256, Ed25519");
        return pa.alg == KMIP_ALG_RSA ? KF_ERR_KEY_SIZE : KF_ERR_UNSUPPORTED;
    }
    KF_GUARD(kmip_authorize(c, KF_ROLE_MANAGE, pa.domain, "Create Key Pair"));
    kf_buf priv, pub = {0};
    KF_GUARD(kf_buf_alloc(&priv, 0, STORED_MAX, KF_BUF_SECRET));
    char priv_uid[KF_UID_MAX], pub_uid[KF_UID_MAX];
    uint32_t alg;
    int32_t bits;
    int rc = kf_buf_alloc(&pub, 0, STORED_MAX, 0);
    if (rc == KF_OK)
        rc = generate_pair(kind, pa.length, &priv, &pub, &alg, &bits);
    if (rc == KF_OK)
        rc = register_pair(c, &pa, &qa, alg, bits, &priv, &pub, priv_uid, pub_uid);
    kf_buf_free(&priv);
    kf_buf_free(&pub);
    KF_GUARD(rc);
    if (!kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER, priv_uid) ||
        !kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_PUBLIC_KEY_UNIQUE_IDENTIFIER, pub_uid))
        return KF_ERR_NOMEM;
    return KF_OK;
}

/* ---- object values for Get ---- */

static int put_key_block(struct kmip_call *c, kf_ttlv *object, const struct kf_object *obj,
                         uint32_t format, const uint8_t *m, size_t len)
{
    kf_arena *a = c->arena;
    kf_ttlv *kb = kf_ttlv_struct(a, object, KMIP_TAG_KEY_BLOCK);
    kf_ttlv *kv = kb ? kf_ttlv_struct(a, NULL, KMIP_TAG_KEY_VALUE) : NULL;
    KF_ENSURE(kv && kf_ttlv_add_enum(a, kb, KMIP_TAG_KEY_FORMAT_TYPE, format), KF_ERR_NOMEM);
    KF_GUARD(kf_ttlv_append(kb, kv));
    kf_ttlv *km = kv;
    if (format == KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY)
        km = kf_ttlv_struct(a, kv, KMIP_TAG_KEY_MATERIAL);
    KF_ENSURE(km && kf_ttlv_add_bytes(a, km, km == kv ? KMIP_TAG_KEY_MATERIAL : KMIP_TAG_KEY, m,
                                      len),
              KF_ERR_NOMEM);
    if (obj->crypto_alg &&
        (!kf_ttlv_add_enum(a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, obj->crypto_alg) ||
         !kf_ttlv_add_int(a, kb, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, obj->crypto_length)))
        return KF_ERR_NOMEM;
    return KF_OK;
}

static int put_asymmetric(struct kmip_call *c, kf_ttlv *object, const struct kf_object *obj,
                          const uint8_t *m, size_t len, uint32_t format)
{
    bool priv = obj->object_type == KF_OBJ_PRIVATE_KEY;
    if (!format)
        format = obj->key_format ? obj->key_format : KMIP_KEYFMT_RAW;
    kf_buf out;
    KF_GUARD(kf_buf_alloc(&out, 0, STORED_MAX, priv ? KF_BUF_SECRET : 0));
    int rc = priv ? kms_private_key_export(obj->crypto_alg, m, len, format, &out)
                  : kms_public_key_export(obj->crypto_alg, m, len, format, &out);
    if (rc == KF_OK)
        rc = put_key_block(c, object, obj, format, out.data, out.len);
    kf_buf_free(&out);
    return rc;
}

static kf_ttlv *object_struct(struct kmip_call *c, uint32_t type)
{
    static const struct {
        uint32_t type, tag;
    } tags[] = {
        {KF_OBJ_SYMMETRIC_KEY, KMIP_TAG_SYMMETRIC_KEY}, {KF_OBJ_PRIVATE_KEY, KMIP_TAG_PRIVATE_KEY},
        {KF_OBJ_PUBLIC_KEY, KMIP_TAG_PUBLIC_KEY},       {KF_OBJ_SECRET_DATA, KMIP_TAG_SECRET_DATA},
        {KF_OBJ_OPAQUE, KMIP_TAG_OPAQUE_OBJECT},        {KF_OBJ_CERTIFICATE, KMIP_TAG_CERTIFICATE},
    };
    for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
        if (tags[i].type == type)
            return kf_ttlv_struct(c->arena, c->resp, tags[i].tag);
    return NULL;
}

int kmip_put_object_value(struct kmip_call *c, const struct kf_object *obj,
                          const uint8_t *material, size_t len, uint32_t requested_format)
{
    uint32_t f = requested_format;
    kf_arena *a = c->arena;
    switch (obj->object_type) {
    case KF_OBJ_SYMMETRIC_KEY:
        KF_ENSURE(!f || f == KMIP_KEYFMT_RAW || f == KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY,
                  KF_ERR_KEY_FORMAT);
        break;
    case KF_OBJ_SECRET_DATA:
        KF_ENSURE(!f || f == KMIP_KEYFMT_OPAQUE || f == KMIP_KEYFMT_RAW, KF_ERR_KEY_FORMAT);
        break;
    case KF_OBJ_OPAQUE:
        KF_ENSURE(!f, KF_ERR_KEY_FORMAT);
        break;
    case KF_OBJ_CERTIFICATE:
        KF_ENSURE(!f || f == KMIP_KEYFMT_X_509, KF_ERR_KEY_FORMAT);
        break;
    case KF_OBJ_PRIVATE_KEY:
    case KF_OBJ_PUBLIC_KEY:
        break;
    default:
        return KF_ERR_UNSUPPORTED;
    }
    kf_ttlv *o = object_struct(c, obj->object_type);
    KF_ENSURE(o != NULL, KF_ERR_NOMEM);
    switch (obj->object_type) {
    case KF_OBJ_SYMMETRIC_KEY:
        return put_key_block(c, o, obj, f ? f : KMIP_KEYFMT_RAW, material, len);
    case KF_OBJ_SECRET_DATA:
        /* Secret data made by Create carries no type: it is a random seed. */
        KF_ENSURE(kf_ttlv_add_enum(a, o, KMIP_TAG_SECRET_DATA_TYPE,
                                   stored_enum(c, obj, KMIP_TAG_SECRET_DATA_TYPE, KMIP_SECRET_SEED)),
                  KF_ERR_NOMEM);
        return put_key_block(c, o, obj, f ? f : KMIP_KEYFMT_OPAQUE, material, len);
    case KF_OBJ_OPAQUE:
        KF_ENSURE(kf_ttlv_add_enum(a, o, KMIP_TAG_OPAQUE_DATA_TYPE,
                                   stored_enum(c, obj, KMIP_TAG_OPAQUE_DATA_TYPE, 0x80000000u)) &&
                      kf_ttlv_add_bytes(a, o, KMIP_TAG_OPAQUE_DATA_VALUE, material, len),
                  KF_ERR_NOMEM);
        return KF_OK;
    case KF_OBJ_CERTIFICATE:
        KF_ENSURE(kf_ttlv_add_enum(a, o, KMIP_TAG_CERTIFICATE_TYPE,
                                   stored_enum(c, obj, KMIP_TAG_CERTIFICATE_TYPE,
                                               KMIP_CERTIFICATE_TYPE_X_509)) &&
                      kf_ttlv_add_bytes(a, o, KMIP_TAG_CERTIFICATE_VALUE, material, len),
                  KF_ERR_NOMEM);
        return KF_OK;
    default:
        return put_asymmetric(c, o, obj, material, len, f);
    }
}
