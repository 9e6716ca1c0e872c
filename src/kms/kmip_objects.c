/* KMIP standard operations on managed objects, over the service layer. */
#include <stdio.h>
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/secmem.h"
#include "attributes.h"
#include "kmip_internal.h"

#define KF_DEFAULT_DOMAIN "default"
#define KF_DOMAIN_ATTRIBUTE "x-keyfleet-domain"

/* Attributes a Create may carry, from KMIP 1.x Template-Attribute or 2.x Attributes. */
struct create_attrs {
    uint32_t alg;
    int32_t length;
    uint32_t usage;
    const char *name;
    const char *domain;
};

static int take_name(struct kmip_call *c, const kf_ttlv *name_struct, struct create_attrs *at)
{
    at->name = kmip_text(c, name_struct, KMIP_TAG_NAME_VALUE);
    KF_ENSURE(at->name != NULL, KF_ERR_ATTRIBUTE);
    return KF_OK;
}

/* KMIP 1.x: Attribute { Attribute Name, [Attribute Index], Attribute Value }. */
static int take_v1_attribute(struct kmip_call *c, const kf_ttlv *attr, struct create_attrs *at)
{
    const kf_ttlv *name = kf_ttlv_find(attr, KMIP_TAG_ATTRIBUTE_NAME);
    const kf_ttlv *value = kf_ttlv_find(attr, KMIP_TAG_ATTRIBUTE_VALUE);
    KF_ENSURE(name && value, KF_ERR_REQUEST);
    if (kf_ttlv_text_equals(name, "Cryptographic Algorithm"))
        return kf_ttlv_get_enum(value, &at->alg);
    if (kf_ttlv_text_equals(name, "Cryptographic Length"))
        return kf_ttlv_get_int(value, &at->length);
    if (kf_ttlv_text_equals(name, "Cryptographic Usage Mask")) {
        int32_t m;
        KF_GUARD(kf_ttlv_get_int(value, &m));
        at->usage = (uint32_t)m;
        return KF_OK;
    }
    if (kf_ttlv_text_equals(name, "Name"))
        return take_name(c, value, at);
    if (kf_ttlv_text_equals(name, KF_DOMAIN_ATTRIBUTE)) {
        at->domain = kmip_text(c, attr, KMIP_TAG_ATTRIBUTE_VALUE);
        KF_ENSURE(at->domain != NULL, KF_ERR_ATTRIBUTE);
        return KF_OK;
    }
    return KF_OK; /* other attributes are accepted and ignored for now */
}

static int take_v2_attributes(struct kmip_call *c, const kf_ttlv *attrs, struct create_attrs *at)
{
    const kf_ttlv *n;
    if ((n = kf_ttlv_find(attrs, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM)))
        KF_GUARD(kf_ttlv_get_enum(n, &at->alg));
    if ((n = kf_ttlv_find(attrs, KMIP_TAG_CRYPTOGRAPHIC_LENGTH)))
        KF_GUARD(kf_ttlv_get_int(n, &at->length));
    if ((n = kf_ttlv_find(attrs, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK))) {
        int32_t m;
        KF_GUARD(kf_ttlv_get_int(n, &m));
        at->usage = (uint32_t)m;
    }
    if ((n = kf_ttlv_find(attrs, KMIP_TAG_NAME)))
        KF_GUARD(take_name(c, n, at));
    if ((n = kf_ttlv_find(attrs, KMIP_TAG_KEYFLEET_DOMAIN)))
        KF_ENSURE((at->domain = kmip_text(c, attrs, KMIP_TAG_KEYFLEET_DOMAIN)) != NULL,
                  KF_ERR_ATTRIBUTE);
    return KF_OK;
}

static int parse_create(struct kmip_call *c, struct create_attrs *at)
{
    const kf_ttlv *ta = kf_ttlv_find(c->req, KMIP_TAG_TEMPLATE_ATTRIBUTE);
    for (const kf_ttlv *a = kf_ttlv_find(ta, KMIP_TAG_ATTRIBUTE); a;
         a = kf_ttlv_find_next(a, KMIP_TAG_ATTRIBUTE))
        KF_GUARD(take_v1_attribute(c, a, at));
    const kf_ttlv *attrs = kf_ttlv_find(c->req, KMIP_TAG_ATTRIBUTES);
    if (attrs)
        KF_GUARD(take_v2_attributes(c, attrs, at));
    if (!at->domain)
        at->domain = kmip_text(c, c->req, KMIP_TAG_KEYFLEET_DOMAIN);
    if (!at->domain)
        at->domain = c->who->default_domain[0] ? c->who->default_domain : KF_DEFAULT_DOMAIN;
    return KF_OK;
}

int kmip_create(struct kmip_call *c)
{
    uint32_t type;
    KF_ENSURE(c->req, KF_ERR_REQUEST);
    if (kf_ttlv_get_enum(kf_ttlv_find(c->req, KMIP_TAG_OBJECT_TYPE), &type) < 0) {
        snprintf(c->message, sizeof(c->message), "Create needs an Object Type");
        return KF_ERR_REQUEST;
    }
    struct create_attrs at = {0};
    KF_GUARD(parse_create(c, &at));
    if (type == KF_OBJ_SYMMETRIC_KEY && (!at.alg || !at.length)) {
        snprintf(c->message, sizeof(c->message),
                 "Create of a symmetric key needs Cryptographic Algorithm and Length");
        return KF_ERR_REQUEST;
    }
    KF_GUARD(kmip_authorize(c, KF_ROLE_MANAGE, at.domain, "Create"));
    struct kf_key_spec spec = {
        .domain = at.domain,
        .object_type = type,
        .crypto_alg = at.alg,
        .crypto_length = at.length ? at.length : 256,
        .usage_mask = at.usage,
        .name = at.name,
    };
    char uid[KF_UID_MAX];
    KF_GUARD(kf_kms_create(c->kms, c->actor, &spec, uid));
    if (!kf_ttlv_add_enum(c->arena, c->resp, KMIP_TAG_OBJECT_TYPE, type) ||
        !kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER, uid))
        return KF_ERR_NOMEM;
    return KF_OK;
}

static const char *request_uid(struct kmip_call *c)
{
    const char *uid = kmip_text(c, c->req, KMIP_TAG_UNIQUE_IDENTIFIER);
    if (!uid)
        snprintf(c->message, sizeof(c->message), "the request needs a Unique Identifier");
    return uid;
}

/* ---- Get with a Key Wrapping Specification (KMIP 1.4 §2.1.5, §4.11) ---- */

struct wrap_request {
    const char *kek_uid;
    uint32_t mode;     /* KMIP_MODE_NIST_KEY_WRAP or KMIP_MODE_AES_KEY_WRAP_PADDING */
    bool oaep;         /* Padding Method OAEP: RSA-OAEP under a managed RSA Public Key */
    enum kf_hash hash, mgf_hash; /* OAEP's label hash and MGF1 hash (KMIP default SHA-1) */
    bool no_encoding;  /* Encoding Option No Encoding: wrap the Key Material bytes only */
    const kf_ttlv *eki; /* Encryption Key Information, echoed in Key Wrapping Data */
};

/* KMIP Hashing Algorithm -> kf_hash; KF_ERR_UNSUPPORTED for the ones not offered. */
static int oaep_hash_of(struct kmip_call *c, const kf_ttlv *cp, uint32_t tag, enum kf_hash *h)
{
    uint32_t kmip_hash = KMIP_HASH_SHA_1; /* KMIP's default for OAEP and its MGF1 */
    const kf_ttlv *n = kf_ttlv_find(cp, tag);
    if (n)
        KF_GUARD(kf_ttlv_get_enum(n, &kmip_hash));
    switch (kmip_hash) {
    case KMIP_HASH_SHA_1: *h = KF_HASH_SHA1; return KF_OK;
    case KMIP_HASH_SHA_224: *h = KF_HASH_SHA224; return KF_OK;
    case KMIP_HASH_SHA_256: *h = KF_HASH_SHA256; return KF_OK;
    case KMIP_HASH_SHA_384: *h = KF_HASH_SHA384; return KF_OK;
    case KMIP_HASH_SHA_512: *h = KF_HASH_SHA512; return KF_OK;
    default:
        snprintf(c->message, sizeof(c->message),
                 "RSA-OAEP key wrapping hashes offered: SHA-1, SHA-224, SHA-256, SHA-384, SHA-512");
        return KF_ERR_UNSUPPORTED;
    }
}

/* Padding Method OAEP: Hashing Algorithm and Mask Generator Hashing Algorithm. */
static int parse_oaep_params(struct kmip_call *c, const kf_ttlv *cp, struct wrap_request *w)
{
    uint32_t mg = KMIP_MASK_GENERATOR_MGF1;
    const kf_ttlv *n = kf_ttlv_find(cp, KMIP_TAG_MASK_GENERATOR);
    if (n)
        KF_GUARD(kf_ttlv_get_enum(n, &mg));
    if (mg != KMIP_MASK_GENERATOR_MGF1) {
        snprintf(c->message, sizeof(c->message), "RSA-OAEP key wrapping uses MGF1 only");
        return KF_ERR_UNSUPPORTED;
    }
    w->oaep = true;
    KF_GUARD(oaep_hash_of(c, cp, KMIP_TAG_HASHING_ALGORITHM, &w->hash));
    return oaep_hash_of(c, cp, KMIP_TAG_MASK_GENERATOR_HASHING_ALGORITHM, &w->mgf_hash);
}

static int parse_wrapping_spec(struct kmip_call *c, const kf_ttlv *spec, struct wrap_request *w)
{
    uint32_t method = 0, enc = KMIP_ENCODING_OPTION_TTLV_ENCODING;
    KF_ENSURE(kf_ttlv_get_enum(kf_ttlv_find(spec, KMIP_TAG_WRAPPING_METHOD), &method) == KF_OK,
              KF_ERR_REQUEST);
    if (method != KMIP_WRAPPING_METHOD_ENCRYPT ||
        kf_ttlv_find(spec, KMIP_TAG_MAC_SIGNATURE_KEY_INFORMATION)) {
        snprintf(c->message, sizeof(c->message),
                 "key wrapping offered: Wrapping Method Encrypt with AES key wrap or RSA-OAEP");
        return KF_ERR_UNSUPPORTED;
    }
    w->eki = kf_ttlv_find(spec, KMIP_TAG_ENCRYPTION_KEY_INFORMATION);
    w->kek_uid = w->eki ? kmip_text(c, w->eki, KMIP_TAG_UNIQUE_IDENTIFIER) : NULL;
    if (!w->kek_uid) {
        snprintf(c->message, sizeof(c->message),
                 "the Key Wrapping Specification needs the wrapping key's Unique Identifier");
        return KF_ERR_REQUEST;
    }
    const kf_ttlv *eo = kf_ttlv_find(spec, KMIP_TAG_ENCODING_OPTION);
    if (eo)
        KF_GUARD(kf_ttlv_get_enum(eo, &enc));
    KF_ENSURE(enc == KMIP_ENCODING_OPTION_TTLV_ENCODING || enc == KMIP_ENCODING_OPTION_NO_ENCODING,
              KF_ERR_ATTRIBUTE);
    w->no_encoding = enc == KMIP_ENCODING_OPTION_NO_ENCODING;
    w->mode = KMIP_MODE_NIST_KEY_WRAP;
    const kf_ttlv *cp = kf_ttlv_find(w->eki, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    const kf_ttlv *pad = kf_ttlv_find(cp, KMIP_TAG_PADDING_METHOD);
    uint32_t padding = 0;
    if (pad)
        KF_GUARD(kf_ttlv_get_enum(pad, &padding));
    if (padding == KMIP_PAD_OAEP)
        return parse_oaep_params(c, cp, w);
    const kf_ttlv *bcm = kf_ttlv_find(cp, KMIP_TAG_BLOCK_CIPHER_MODE);
    if (bcm)
        KF_GUARD(kf_ttlv_get_enum(bcm, &w->mode));
    if (w->mode != KMIP_MODE_NIST_KEY_WRAP && w->mode != KMIP_MODE_AES_KEY_WRAP_PADDING) {
        snprintf(c->message, sizeof(c->message),
                 "key wrapping modes offered: NIST Key Wrap, AES Key Wrap Padding");
        return KF_ERR_UNSUPPORTED;
    }
    return KF_OK;
}

struct wrap_job {
    const struct wrap_request *w;
    uint32_t mode;
    const uint8_t *in;
    size_t in_len;
    kf_buf *out;
};

/* Runs with the wrapping key's plaintext (kf_kms_use_key checked state and usage). */
/* RSA-OAEP (RFC 8017 §7.1) under a managed RSA Public Key; its "material" is public. */
static int wrap_with_rsa(struct wrap_job *j, const struct kf_object *kek, const uint8_t *der,
                         size_t len)
{
    KF_ENSURE(kek->object_type == KF_OBJ_PUBLIC_KEY && kek->crypto_alg == KMIP_ALG_RSA,
              KF_ERR_UNSUPPORTED);
    kf_rsa_key *pub;
    KF_GUARD(kf_rsa_import_public(der, len, &pub));
    uint8_t *p;
    int rc = kf_buf_put_space(j->out, kf_rsa_modulus_len(pub), &p);
    if (rc == KF_OK)
        rc = kf_rsa_oaep_encrypt_ex(pub, j->w->hash, j->w->mgf_hash, NULL, 0, j->in, j->in_len, p);
    kf_rsa_free(pub);
    return rc;
}

static int wrap_with_kek(void *ctx, const struct kf_object *kek, const uint8_t *key, size_t len)
{
    struct wrap_job *j = ctx;
    if (j->w->oaep)
        return wrap_with_rsa(j, kek, key, len);
    KF_ENSURE(kek->object_type == KF_OBJ_SYMMETRIC_KEY && kek->crypto_alg == KMIP_ALG_AES,
              KF_ERR_UNSUPPORTED);
    bool padded = j->mode == KMIP_MODE_AES_KEY_WRAP_PADDING;
    /* RFC 3394 needs whole 64-bit blocks, at least two. */
    KF_ENSURE(padded || (j->in_len % 8 == 0 && j->in_len >= 16), KF_ERR_ARG);
    size_t n = padded ? kf_aes_kwp_wrapped_len(j->in_len) : j->in_len + 8;
    uint8_t *p;
    KF_GUARD(kf_buf_put_space(j->out, n, &p));
    return padded ? kf_aes_kwp_wrap(key, len, j->in, j->in_len, p)
                  : kf_aes_kw_wrap(key, len, j->in, j->in_len, p);
}

/* What is wrapped: the TTLV encoding of the Key Value, or its Key Material bytes. */
static int wrap_input(const kf_ttlv *kv, bool no_encoding, kf_buf *in)
{
    if (!no_encoding)
        return kf_ttlv_encode(kv, in);
    const kf_ttlv *km = kf_ttlv_find(kv, KMIP_TAG_KEY_MATERIAL);
    KF_ENSURE(km && km->type == KF_TTLV_BYTES, KF_ERR_KEY_FORMAT);
    return kf_buf_put_bytes(in, km->v.bytes.p, km->v.bytes.len);
}

/* Replace the plaintext Key Value of the answer's Key Block by its wrapping. */
static int wrap_key_block(struct kmip_call *c, const struct wrap_request *w)
{
    kf_ttlv *kb = NULL;
    for (kf_ttlv *o = c->resp->child; o && !kb; o = o->next)
        if (o->type == KF_TTLV_STRUCTURE)
            kb = (kf_ttlv *)(uintptr_t)kf_ttlv_find(o, KMIP_TAG_KEY_BLOCK);
    if (!kb) {
        snprintf(c->message, sizeof(c->message), "only objects with a Key Block can be wrapped");
        return KF_ERR_UNSUPPORTED;
    }
    kf_ttlv *kv = (kf_ttlv *)(uintptr_t)kf_ttlv_find(kb, KMIP_TAG_KEY_VALUE);
    KF_ENSURE(kv != NULL, KF_ERR_INTERNAL);
    kf_buf in, out;
    KF_GUARD(kf_buf_alloc(&in, 0, 65536, KF_BUF_SECRET));
    int rc = kf_buf_alloc(&out, 0, 65536 + 16, 0);
    if (rc < 0) {
        kf_buf_free(&in);
        return rc;
    }
    rc = wrap_input(kv, w->no_encoding, &in);
    struct wrap_job j = {.w = w, .mode = w->mode, .in = in.data, .in_len = in.len, .out = &out};
    if (rc == KF_OK)
        rc = kf_kms_use_key(c->kms, c->actor, "Get (wrap)", w->kek_uid, KF_USE_WRAP,
                            KMIP_USAGE_WRAP_KEY, wrap_with_kek, &j);
    kf_ttlv *wrapped = NULL, *kwd = NULL;
    if (rc == KF_OK) {
        wrapped = kf_ttlv_add_bytes(c->arena, NULL, KMIP_TAG_KEY_VALUE, out.data, out.len);
        kwd = kf_ttlv_struct(c->arena, kb, KMIP_TAG_KEY_WRAPPING_DATA);
        rc = wrapped && kwd &&
                     kf_ttlv_add_enum(c->arena, kwd, KMIP_TAG_WRAPPING_METHOD,
                                      KMIP_WRAPPING_METHOD_ENCRYPT) &&
                     attr_clone(c->arena, kwd, w->eki, KMIP_TAG_ENCRYPTION_KEY_INFORMATION)
                 ? KF_OK
                 : KF_ERR_NOMEM;
    }
    if (rc == KF_OK && w->no_encoding)
        rc = kf_ttlv_add_enum(c->arena, kwd, KMIP_TAG_ENCODING_OPTION,
                              KMIP_ENCODING_OPTION_NO_ENCODING)
                 ? KF_OK
                 : KF_ERR_NOMEM;
    if (rc == KF_OK)
        attr_replace(kb, kv, wrapped);
    kf_buf_free(&in);
    kf_buf_free(&out);
    return rc;
}

int kmip_get(struct kmip_call *c)
{
    const char *uid = request_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_EXPORT, uid, "Get"));
    const kf_ttlv *kws = kf_ttlv_find(c->req, KMIP_TAG_KEY_WRAPPING_SPECIFICATION);
    struct wrap_request wrap = {0};
    if (kws) {
        KF_GUARD(parse_wrapping_spec(c, kws, &wrap));
        KF_GUARD(kmip_authorize_uid(c, KF_ROLE_EXPORT, wrap.kek_uid, "Get (wrap)"));
    }
    uint32_t format = 0; /* 0: as stored */
    const kf_ttlv *kft = kf_ttlv_find(c->req, KMIP_TAG_KEY_FORMAT_TYPE);
    if (kft)
        KF_GUARD(kf_ttlv_get_enum(kft, &format));
    struct kf_object obj = {0};
    kf_buf material;
    /* Room for an RSA-4096 private key in PKCS#1 DER. */
    KF_GUARD(kf_buf_alloc(&material, 64, 16384, KF_BUF_SECRET));
    /* An archived object answers Object Archived (checked in the service, before unwrap). */
    int rc = kf_kms_get(c->kms, c->actor, uid, &obj, &material);
    if (rc == KF_OK) {
        if (!kf_ttlv_add_enum(c->arena, c->resp, KMIP_TAG_OBJECT_TYPE, obj.object_type) ||
            !kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER, uid))
            rc = KF_ERR_NOMEM;
        else
            rc = kmip_put_object_value(c, &obj, material.data, material.len, format);
    }
    if (rc == KF_OK && kws)
        rc = wrap_key_block(c, &wrap);
    if (rc == KF_OK)
        rc = kms_mark_served(c->kms, c->actor, uid, &obj);
    kf_buf_free(&material);
    kf_object_clear(&obj);
    return rc;
}

static int answer_uid(struct kmip_call *c, const char *uid)
{
    return kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER, uid) ? KF_OK
                                                                                 : KF_ERR_NOMEM;
}

int kmip_activate(struct kmip_call *c)
{
    const char *uid = request_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_MANAGE, uid, "Activate"));
    KF_GUARD(kf_kms_activate(c->kms, c->actor, uid));
    return answer_uid(c, uid);
}

int kmip_revoke(struct kmip_call *c)
{
    const char *uid = request_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_MANAGE, uid, "Revoke"));
    const kf_ttlv *rr = kf_ttlv_find(c->req, KMIP_TAG_REVOCATION_REASON);
    uint32_t code;
    if (kf_ttlv_get_enum(kf_ttlv_find(rr, KMIP_TAG_REVOCATION_REASON_CODE), &code) < 0) {
        snprintf(c->message, sizeof(c->message), "Revoke needs a Revocation Reason Code");
        return KF_ERR_REQUEST;
    }
    int64_t when = 0;
    const kf_ttlv *cod = kf_ttlv_find(c->req, KMIP_TAG_COMPROMISE_OCCURRENCE_DATE);
    if (cod)
        KF_GUARD(kf_ttlv_get_datetime(cod, &when));
    const char *msg = kmip_text(c, rr, KMIP_TAG_REVOCATION_MESSAGE);
    KF_GUARD(kf_kms_revoke(c->kms, c->actor, uid, code, when, msg));
    return answer_uid(c, uid);
}

int kmip_destroy(struct kmip_call *c)
{
    const char *uid = request_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_MANAGE, uid, "Destroy"));
    KF_GUARD(kf_kms_destroy(c->kms, c->actor, uid));
    return answer_uid(c, uid);
}

int kmip_discover_versions(struct kmip_call *c)
{
    static const int versions[][2] = {{2, 1}, {2, 0}, {1, 4}, {1, 3}, {1, 2}, {1, 1}, {1, 0}};
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        kf_ttlv *pv = kf_ttlv_struct(c->arena, c->resp, KMIP_TAG_PROTOCOL_VERSION);
        if (!pv || !kf_ttlv_add_int(c->arena, pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR, versions[i][0]) ||
            !kf_ttlv_add_int(c->arena, pv, KMIP_TAG_PROTOCOL_VERSION_MINOR, versions[i][1]))
            return KF_ERR_NOMEM;
    }
    return KF_OK;
}

int kmip_query(struct kmip_call *c)
{
    uint32_t ops[64];
    size_t nops = kmip_supported_operations(ops, sizeof(ops) / sizeof(ops[0]));
    static const uint32_t objs[] = {KMIP_OBJ_SYMMETRIC_KEY, KMIP_OBJ_SECRET_DATA};
    bool want_ops = false, want_objs = false, want_info = false;
    for (const kf_ttlv *q = kf_ttlv_find(c->req, KMIP_TAG_QUERY_FUNCTION); q;
         q = kf_ttlv_find_next(q, KMIP_TAG_QUERY_FUNCTION)) {
        uint32_t f;
        KF_GUARD(kf_ttlv_get_enum(q, &f));
        want_ops |= f == KMIP_QUERY_QUERY_OPERATIONS;
        want_objs |= f == KMIP_QUERY_QUERY_OBJECTS;
        want_info |= f == KMIP_QUERY_QUERY_SERVER_INFORMATION;
    }
    for (size_t i = 0; want_ops && i < nops; i++)
        KF_ENSURE(kf_ttlv_add_enum(c->arena, c->resp, KMIP_TAG_OPERATION, ops[i]), KF_ERR_NOMEM);
    for (size_t i = 0; want_objs && i < sizeof(objs) / sizeof(objs[0]); i++)
        KF_ENSURE(kf_ttlv_add_enum(c->arena, c->resp, KMIP_TAG_OBJECT_TYPE, objs[i]), KF_ERR_NOMEM);
    /* KMIP 1.4 §4.25: Query Server Information answers Vendor Identification and
     * a Server Information structure whose contents are the vendor's; keyfleet
     * has nothing more to say there, so it is empty. */
    if (want_info)
        KF_ENSURE(kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_VENDOR_IDENTIFICATION,
                                   "keyfleet " "0.1.0") &&
                      kf_ttlv_struct(c->arena, c->resp, KMIP_TAG_SERVER_INFORMATION),
                  KF_ERR_NOMEM);
    return KF_OK;
}
