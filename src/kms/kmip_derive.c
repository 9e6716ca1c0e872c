/*
 * KMIP Derive Key (1.4 §4.6, 2.1 §6.1.10): a new Symmetric Key or Secret Data
 * from a base object (Symmetric Key or Secret Data with usage Derive Key).
 *
 * Methods:
 *   PBKDF2          PKCS #5 v2 with HMAC over the Cryptographic Parameters'
 *                   Hashing Algorithm (default SHA-1, PKCS #5's default PRF);
 *                   password = the base object's value, Salt and Iteration
 *                   Count from the Derivation Parameters.
 *   HASH            H(base value || Derivation Data), H from the parameters.
 *   HMAC            HMAC(base value, Derivation Data), the hash from the base
 *                   key's algorithm (HMAC-SHA*) or else the parameters.
 *   NIST800-108-C   SP 800-108 counter mode, 32-bit counter before the fixed
 *                   input (= Derivation Data): AES-CMAC for an AES base key,
 *                   else HMAC with the hash as for HMAC.
 * The output length is the Cryptographic Length asked for (bits, whole bytes).
 * The derived value exists only in secure memory between the KDF and its
 * registration; the new object is linked to its base (Derivation Base Object).
 */
#include <nettle/pbkdf2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/secmem.h"
#include "attributes.h"
#include "kmip_internal.h"

#define DERIVED_MAX 512            /* bytes: 4096-bit output at most */
#define PBKDF2_MAX_ITERATIONS 10000000

struct derive_job {
    struct kmip_call *c;
    uint32_t method;
    uint32_t hash;               /* KMIP Hashing Algorithm from the parameters; 0 = none */
    const uint8_t *data;         /* Derivation Data (may be NULL) */
    size_t data_len;
    const uint8_t *salt;
    size_t salt_len;
    int32_t iterations;
    size_t out_len;
    kf_buf *out;                 /* KF_BUF_SECRET */
};

static int kf_hash_from_kmip(uint32_t kmip, enum kf_hash *h)
{
    switch (kmip) {
    case KMIP_HASH_SHA_1: *h = KF_HASH_SHA1; return KF_OK;
    case KMIP_HASH_SHA_224: *h = KF_HASH_SHA224; return KF_OK;
    case KMIP_HASH_SHA_256: *h = KF_HASH_SHA256; return KF_OK;
    case KMIP_HASH_SHA_384: *h = KF_HASH_SHA384; return KF_OK;
    case KMIP_HASH_SHA_512: *h = KF_HASH_SHA512; return KF_OK;
    default: return KF_ERR_UNSUPPORTED;
    }
}

static uint32_t hmac_hash_of_alg(uint32_t alg)
{
    switch (alg) {
    case KMIP_ALG_HMAC_SHA1: return KMIP_HASH_SHA_1;
    case KMIP_ALG_HMAC_SHA224: return KMIP_HASH_SHA_224;
    case KMIP_ALG_HMAC_SHA256: return KMIP_HASH_SHA_256;
    case KMIP_ALG_HMAC_SHA384: return KMIP_HASH_SHA_384;
    case KMIP_ALG_HMAC_SHA512: return KMIP_HASH_SHA_512;
    default: return 0;
    }
}

static int pbkdf2_method(const struct derive_job *j, const uint8_t *pw, size_t pw_len, uint8_t *out)
{
    KF_ENSURE(j->salt && j->iterations > 0 && j->iterations <= PBKDF2_MAX_ITERATIONS,
              KF_ERR_REQUEST);
    unsigned n = (unsigned)j->iterations;
    switch (j->hash ? j->hash : KMIP_HASH_SHA_1) {
    case KMIP_HASH_SHA_1: pbkdf2_hmac_sha1(pw_len, pw, n, j->salt_len, j->salt, j->out_len, out); break;
    case KMIP_HASH_SHA_256: pbkdf2_hmac_sha256(pw_len, pw, n, j->salt_len, j->salt, j->out_len, out); break;
    case KMIP_HASH_SHA_384: pbkdf2_hmac_sha384(pw_len, pw, n, j->salt_len, j->salt, j->out_len, out); break;
    case KMIP_HASH_SHA_512: pbkdf2_hmac_sha512(pw_len, pw, n, j->salt_len, j->salt, j->out_len, out); break;
    default: return KF_ERR_UNSUPPORTED;
    }
    return KF_OK;
}

/* H(key || data), truncated to the length asked for. */
static int hash_method(const struct derive_job *j, const uint8_t *key, size_t key_len,
                       uint8_t *out)
{
    enum kf_hash h;
    KF_GUARD(kf_hash_from_kmip(j->hash ? j->hash : KMIP_HASH_SHA_256, &h));
    KF_ENSURE(j->out_len <= kf_hash_len(h), KF_ERR_KEY_SIZE);
    kf_buf in;
    uint8_t digest[64];
    KF_GUARD(kf_buf_alloc(&in, 0, key_len + j->data_len + 1, KF_BUF_SECRET));
    int rc = kf_buf_put_bytes(&in, key, key_len);
    if (rc == KF_OK && j->data_len)
        rc = kf_buf_put_bytes(&in, j->data, j->data_len);
    if (rc == KF_OK)
        rc = kf_hash(h, in.data, in.len, digest);
    if (rc == KF_OK)
        memcpy(out, digest, j->out_len);
    kf_wipe(digest, sizeof(digest));
    kf_buf_free(&in);
    return rc;
}

static int hmac_method(const struct derive_job *j, enum kf_hash h, const uint8_t *key,
                       size_t key_len, uint8_t *out)
{
    uint8_t mac[64];
    KF_ENSURE(j->out_len <= kf_hash_len(h), KF_ERR_KEY_SIZE);
    int rc = kf_hmac(h, key, key_len, j->data ? j->data : (const uint8_t *)"", j->data_len, mac);
    if (rc == KF_OK)
        memcpy(out, mac, j->out_len);
    kf_wipe(mac, sizeof(mac));
    return rc;
}

/* SP 800-108 counter mode with HMAC: K(i) = HMAC(key, [i]_32 || fixed). */
static int kdf108_hmac(const struct derive_job *j, enum kf_hash h, const uint8_t *key,
                       size_t key_len, uint8_t *out)
{
    size_t hlen = kf_hash_len(h);
    kf_buf in;
    uint8_t block[64];
    KF_GUARD(kf_buf_alloc(&in, 4 + j->data_len, 4 + j->data_len, KF_BUF_SECRET));
    int rc = KF_OK;
    for (uint32_t i = 1, done = 0; rc == KF_OK && done < j->out_len; i++) {
        kf_buf_reset(&in);
        rc = kf_buf_put_u32(&in, i);
        if (rc == KF_OK && j->data_len)
            rc = kf_buf_put_bytes(&in, j->data, j->data_len);
        if (rc == KF_OK)
            rc = kf_hmac(h, key, key_len, in.data, in.len, block);
        size_t take = j->out_len - done < hlen ? j->out_len - done : hlen;
        if (rc == KF_OK)
            memcpy(out + done, block, take);
        done += (uint32_t)take;
    }
    kf_wipe(block, sizeof(block));
    kf_buf_free(&in);
    return rc;
}

static int prf_hash(const struct derive_job *j, const struct kf_object *base, enum kf_hash *h)
{
    uint32_t kmip = hmac_hash_of_alg(base->crypto_alg);
    return kf_hash_from_kmip(kmip ? kmip : j->hash ? j->hash : KMIP_HASH_SHA_256, h);
}

/* kf_kms_use_key callback: runs with the base object's value in secure memory. */
static int derive_with_key(void *ctx, const struct kf_object *base, const uint8_t *key,
                           size_t key_len)
{
    struct derive_job *j = ctx;
    uint8_t *out;
    enum kf_hash h;
    KF_GUARD(kf_buf_put_space(j->out, j->out_len, &out));
    switch (j->method) {
    case KMIP_DERIVATION_METHOD_PBKDF2:
        return pbkdf2_method(j, key, key_len, out);
    case KMIP_DERIVATION_METHOD_HASH:
        return hash_method(j, key, key_len, out);
    case KMIP_DERIVATION_METHOD_HMAC:
        KF_GUARD(prf_hash(j, base, &h));
        return hmac_method(j, h, key, key_len, out);
    case KMIP_DERIVATION_METHOD_NIST800_108_C:
        if (base->crypto_alg == KMIP_ALG_AES)
            return kf_kdf108_ctr_cmac(key, key_len, j->data, j->data_len, out, j->out_len);
        KF_GUARD(prf_hash(j, base, &h));
        return kdf108_hmac(j, h, key, key_len, out);
    default:
        return KF_ERR_UNSUPPORTED;
    }
}

static int opt_bytes(const kf_ttlv *parent, uint32_t tag, const uint8_t **p, size_t *len)
{
    const kf_ttlv *n = kf_ttlv_find(parent, tag);
    if (!n)
        return KF_OK;
    return kf_ttlv_get_bytes(n, p, len);
}

static int read_parameters(struct kmip_call *c, struct derive_job *j)
{
    if (kf_ttlv_get_enum(kf_ttlv_find(c->req, KMIP_TAG_DERIVATION_METHOD), &j->method) < 0) {
        snprintf(c->message, sizeof(c->message), "Derive Key needs a Derivation Method");
        return KF_ERR_REQUEST;
    }
    if (j->method != KMIP_DERIVATION_METHOD_PBKDF2 && j->method != KMIP_DERIVATION_METHOD_HASH &&
        j->method != KMIP_DERIVATION_METHOD_HMAC &&
        j->method != KMIP_DERIVATION_METHOD_NIST800_108_C) {
        snprintf(c->message, sizeof(c->message),
                 "Derivation Methods offered: PBKDF2, HASH, HMAC, NIST800-108-C");
        return KF_ERR_UNSUPPORTED;
    }
    const kf_ttlv *dp = kf_ttlv_find(c->req, KMIP_TAG_DERIVATION_PARAMETERS);
    const kf_ttlv *cp = kf_ttlv_find(dp, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    const kf_ttlv *ha = kf_ttlv_find(cp, KMIP_TAG_HASHING_ALGORITHM);
    if (ha)
        KF_GUARD(kf_ttlv_get_enum(ha, &j->hash));
    KF_GUARD(opt_bytes(dp, KMIP_TAG_DERIVATION_DATA, &j->data, &j->data_len));
    KF_GUARD(opt_bytes(dp, KMIP_TAG_SALT, &j->salt, &j->salt_len));
    const kf_ttlv *ic = kf_ttlv_find(dp, KMIP_TAG_ITERATION_COUNT);
    if (ic)
        KF_GUARD(kf_ttlv_get_int(ic, &j->iterations));
    if (j->method == KMIP_DERIVATION_METHOD_NIST800_108_C && j->data_len == 0) {
        snprintf(c->message, sizeof(c->message),
                 "NIST800-108-C needs Derivation Data (Label || 0x00 || Context)");
        return KF_ERR_REQUEST;
    }
    if (j->method == KMIP_DERIVATION_METHOD_PBKDF2 && (!j->salt || j->iterations <= 0)) {
        snprintf(c->message, sizeof(c->message), "PBKDF2 needs a Salt and an Iteration Count");
        return KF_ERR_REQUEST;
    }
    return KF_OK;
}

/* Object Type and output attributes; the derived object goes to the base's domain. */
static int read_output(struct kmip_call *c, const char *base_uid, struct create_attrs_out *at,
                       uint32_t *type, size_t *out_len)
{
    if (kf_ttlv_get_enum(kf_ttlv_find(c->req, KMIP_TAG_OBJECT_TYPE), type) < 0 ||
        (*type != KF_OBJ_SYMMETRIC_KEY && *type != KF_OBJ_SECRET_DATA)) {
        snprintf(c->message, sizeof(c->message),
                 "Derive Key makes a Symmetric Key or Secret Data (Object Type)");
        return KF_ERR_REQUEST;
    }
    KF_GUARD(kmip_create_attrs_check(c, at));
    char domain[65];
    int rc = kf_kms_uid_domain(base_uid, domain);
    if (rc == KF_OK && at->domain[0] && strcmp(at->domain, domain) != 0) {
        snprintf(c->message, sizeof(c->message), "a derived object stays in its base's domain");
        rc = KF_ERR_DOMAIN_CROSS;
    }
    if (rc == KF_OK)
        memcpy(at->domain, domain, sizeof(domain));
    if (rc == KF_OK && (at->length <= 0 || at->length % 8 || at->length / 8 > DERIVED_MAX ||
                        (*type == KF_OBJ_SYMMETRIC_KEY && !at->alg))) {
        snprintf(c->message, sizeof(c->message),
                 "Derive Key needs a Cryptographic Length (whole bytes, at most 4096 bits) and, "
                 "for a key, a Cryptographic Algorithm");
        rc = KF_ERR_REQUEST;
    }
    *out_len = rc == KF_OK ? (size_t)at->length / 8 : 0;
    if (rc < 0) {
        free(at->blob);
        at->blob = NULL;
    }
    return rc;
}

static int register_derived(struct kmip_call *c, uint32_t type, const struct create_attrs_out *at,
                            const kf_buf *value, char uid[KF_UID_MAX])
{
    struct kf_register_spec spec = {
        .domain = at->domain,
        .object_type = type,
        .crypto_alg = at->alg,
        .crypto_length = at->length,
        .usage_mask = at->usage,
        .key_format = KMIP_KEYFMT_RAW,
        .name = at->name[0] ? at->name : NULL,
    };
    return kf_kms_register(c->kms, c->actor, "Derive Key", &spec, value->data, value->len, uid);
}

struct base_link {
    const char *base_uid;
};

static int put_base_link(void *ctx, kf_arena *a, kf_ttlv *set, const struct kf_object *obj)
{
    const struct base_link *l = ctx;
    (void)obj;
    kf_ttlv *link = kf_ttlv_struct(a, set, KMIP_TAG_LINK);
    KF_ENSURE(link && kf_ttlv_add_enum(a, link, KMIP_TAG_LINK_TYPE,
                                       KMIP_LINK_DERIVATION_BASE_OBJECT_LINK) &&
                  kf_ttlv_add_text(a, link, KMIP_TAG_LINKED_OBJECT_IDENTIFIER, l->base_uid),
              KF_ERR_NOMEM);
    return KF_OK;
}

static const char *base_uid_of(struct kmip_call *c)
{
    size_t n = kf_ttlv_count(c->req, KMIP_TAG_UNIQUE_IDENTIFIER);
    if (n > 1) {
        snprintf(c->message, sizeof(c->message),
                 "Derive Key takes one base object; give the data as Derivation Data");
        return NULL;
    }
    return kmip_call_uid(c);
}

int kmip_derive_key(struct kmip_call *c)
{
    KF_ENSURE(c->req, KF_ERR_REQUEST);
    const char *base = base_uid_of(c);
    KF_ENSURE(base, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_USE | KF_ROLE_MANAGE, base, "Derive Key"));
    struct derive_job j = {.c = c};
    KF_GUARD(read_parameters(c, &j));
    struct create_attrs_out at;
    uint32_t type;
    KF_GUARD(read_output(c, base, &at, &type, &j.out_len));
    struct kf_object meta = {0};
    int rc = kf_kms_get(c->kms, c->actor, base, &meta, NULL);
    if (rc == KF_OK)
        rc = kmip_refuse_archived(c, &meta, base);
    kf_object_clear(&meta);
    kf_buf value = {0};
    if (rc == KF_OK)
        rc = kf_buf_alloc(&value, DERIVED_MAX, DERIVED_MAX, KF_BUF_SECRET);
    j.out = &value;
    if (rc == KF_OK)
        rc = kf_kms_use_key(c->kms, c->actor, "Derive Key", base, KF_USE_DERIVE,
                            KMIP_USAGE_DERIVE_KEY, derive_with_key, &j);
    char uid[KF_UID_MAX];
    if (rc == KF_OK)
        rc = register_derived(c, type, &at, &value, uid);
    if (value.data)
        kf_buf_free(&value);
    if (rc < 0) {
        free(at.blob);
        return rc;
    }
    KF_GUARD(kmip_create_attrs_apply(c, uid, &at));
    struct base_link l = {.base_uid = base};
    KF_GUARD(kms_attrs_edit(c->kms, c->actor, "Derive Key (link)", uid, put_base_link, &l));
    return kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER, uid) ? KF_OK
                                                                                 : KF_ERR_NOMEM;
}
