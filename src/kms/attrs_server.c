/*
 * Attributes the server sets on a new object (KMIP 1.4 §3): Digest, the
 * Sensitive/Extractable family, Fresh, Lease Time, Original Creation Date
 * and, for server-generated material, Random Number Generator. Computed in
 * the service where the plaintext material is (objects.c create/register),
 * merged into the attribute blob; the material itself is never stored here.
 */
#include <stdlib.h>
#include <string.h>

#include <nettle/sha2.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/secmem.h"
#include "attributes.h"

/* Lease Time (§3.20): how long a client may use the object before asking again.
 * keyfleet does not revoke leases; this is the advisory interval it reports. */
#define KMS_LEASE_SECONDS 3600u

int kms_digest_attr(kf_arena *a, kf_ttlv *parent, uint32_t key_format, const uint8_t *material,
                    size_t material_len)
{
    KF_ENSURE(material && material_len > 0, KF_ERR_ARG);
    struct sha256_ctx ctx;
    uint8_t md[SHA256_DIGEST_SIZE];
    sha256_init(&ctx);
    sha256_update(&ctx, material_len, material);
    sha256_digest(&ctx, sizeof(md), md);
    kf_wipe(&ctx, sizeof(ctx)); /* the context held material blocks */
    kf_ttlv *d = kf_ttlv_struct(a, parent, KMIP_TAG_DIGEST);
    bool ok = d && kf_ttlv_add_enum(a, d, KMIP_TAG_HASHING_ALGORITHM, KMIP_HASH_SHA_256) &&
              kf_ttlv_add_bytes(a, d, KMIP_TAG_DIGEST_VALUE, md, sizeof(md));
    if (ok && key_format)
        ok = kf_ttlv_add_enum(a, d, KMIP_TAG_KEY_FORMAT_TYPE, key_format) != NULL;
    return ok ? KF_OK : KF_ERR_NOMEM;
}

/* The RNG keyfleet uses (rng/: getrandom() XOR gnutls_rnd) is none of the
 * algorithms KMIP's RNG Algorithm enumeration names, so it says Unspecified
 * rather than claim one it does not run. */
static int put_rng(kf_arena *a, kf_ttlv *set)
{
    kf_ttlv *r = kf_ttlv_struct(a, set, KMIP_TAG_RANDOM_NUMBER_GENERATOR);
    KF_ENSURE(r && kf_ttlv_add_enum(a, r, KMIP_TAG_RNG_ALGORITHM, KMIP_RNG_ALGORITHM_UNSPECIFIED),
              KF_ERR_NOMEM);
    return KF_OK;
}

static bool has(const kf_ttlv *set, uint32_t tag)
{
    return kf_ttlv_find(set, tag) != NULL;
}

static int add_server_set(kf_arena *a, kf_ttlv *set, const struct kms_new_object *n)
{
    if (n->material && !has(set, KMIP_TAG_DIGEST))
        KF_GUARD(kms_digest_attr(a, set, n->key_format, n->material, n->material_len));
    /* keyfleet exports keys with Get: not sensitive, extractable, and so never
     * "always sensitive" nor "never extractable" (§3.40-3.43). */
    if (!has(set, KMIP_TAG_SENSITIVE))
        KF_ENSURE(kf_ttlv_add_bool(a, set, KMIP_TAG_SENSITIVE, false), KF_ERR_NOMEM);
    if (!has(set, KMIP_TAG_ALWAYS_SENSITIVE))
        KF_ENSURE(kf_ttlv_add_bool(a, set, KMIP_TAG_ALWAYS_SENSITIVE, false), KF_ERR_NOMEM);
    if (!has(set, KMIP_TAG_EXTRACTABLE))
        KF_ENSURE(kf_ttlv_add_bool(a, set, KMIP_TAG_EXTRACTABLE, true), KF_ERR_NOMEM);
    if (!has(set, KMIP_TAG_NEVER_EXTRACTABLE))
        KF_ENSURE(kf_ttlv_add_bool(a, set, KMIP_TAG_NEVER_EXTRACTABLE, false), KF_ERR_NOMEM);
    /* Fresh (§3.34): not yet served to a client. */
    if (!has(set, KMIP_TAG_FRESH))
        KF_ENSURE(kf_ttlv_add_bool(a, set, KMIP_TAG_FRESH, true), KF_ERR_NOMEM);
    if (!has(set, KMIP_TAG_LEASE_TIME))
        KF_ENSURE(kf_ttlv_add_interval(a, set, KMIP_TAG_LEASE_TIME, KMS_LEASE_SECONDS),
                  KF_ERR_NOMEM);
    if (!has(set, KMIP_TAG_ORIGINAL_CREATION_DATE))
        KF_ENSURE(kf_ttlv_add_datetime(a, set, KMIP_TAG_ORIGINAL_CREATION_DATE, n->now),
                  KF_ERR_NOMEM);
    if (n->generated && !has(set, KMIP_TAG_RANDOM_NUMBER_GENERATOR))
        KF_GUARD(put_rng(a, set));
    return KF_OK;
}

int kms_server_attrs(const uint8_t *blob, size_t blob_len, const struct kms_new_object *n,
                     uint8_t **out, size_t *out_len)
{
    kf_arena *a;
    kf_ttlv *set = NULL;
    *out = NULL;
    *out_len = 0;
    KF_GUARD(kf_arena_new(&a, 0));
    int rc = KF_OK;
    if (blob && blob_len) {
        rc = kf_ttlv_decode(blob, blob_len, NULL, a, &set);
        if (rc == KF_OK && set->tag != KMIP_TAG_ATTRIBUTES)
            rc = KF_ERR_FORMAT;
    } else {
        set = kf_ttlv_struct(a, NULL, KMIP_TAG_ATTRIBUTES);
        rc = set ? KF_OK : KF_ERR_NOMEM;
    }
    if (rc == KF_OK)
        rc = add_server_set(a, set, n);
    if (rc == KF_OK) {
        struct kf_object tmp = {0};
        rc = attrs_store(set, &tmp); /* encodes the blob kinds only */
        *out = tmp.attributes;
        *out_len = tmp.attributes_len;
    }
    kf_arena_free(a);
    return rc;
}

/* ---- Create Key Pair links ---- */

struct link_ctx {
    uint32_t type;
    const char *to;
};

static int put_link(void *ctx, kf_arena *a, kf_ttlv *set, const struct kf_object *obj)
{
    const struct link_ctx *l = ctx;
    (void)obj;
    /* Idempotent: a retried call does not add a second identical link. */
    for (const kf_ttlv *c = set->child; c; c = c->next) {
        uint32_t t;
        if (c->tag == KMIP_TAG_LINK &&
            kf_ttlv_get_enum(kf_ttlv_find(c, KMIP_TAG_LINK_TYPE), &t) == KF_OK && t == l->type &&
            kf_ttlv_text_equals(kf_ttlv_find(c, KMIP_TAG_LINKED_OBJECT_IDENTIFIER), l->to))
            return KF_OK;
    }
    kf_ttlv *n = kf_ttlv_struct(a, set, KMIP_TAG_LINK);
    KF_ENSURE(n && kf_ttlv_add_enum(a, n, KMIP_TAG_LINK_TYPE, l->type) &&
                  kf_ttlv_add_text(a, n, KMIP_TAG_LINKED_OBJECT_IDENTIFIER, l->to),
              KF_ERR_NOMEM);
    return KF_OK;
}

int kms_link_pair(kf_kms *kms, const char *actor, const char *priv_uid, const char *pub_uid)
{
    KF_ENSURE(kms && priv_uid && pub_uid && strcmp(priv_uid, pub_uid) != 0, KF_ERR_ARG);
    struct link_ctx to_pub = {.type = KMIP_LINK_PUBLIC_KEY_LINK, .to = pub_uid};
    struct link_ctx to_priv = {.type = KMIP_LINK_PRIVATE_KEY_LINK, .to = priv_uid};
    KF_GUARD(kms_attrs_edit(kms, actor, "Create Key Pair (link)", priv_uid, put_link, &to_pub));
    return kms_attrs_edit(kms, actor, "Create Key Pair (link)", pub_uid, put_link, &to_priv);
}

/* ---- Fresh ---- */

static bool blob_says_fresh(const struct kf_object *obj)
{
    kf_arena *a;
    kf_ttlv *set;
    bool fresh = false;
    if (!obj->attributes || !obj->attributes_len || kf_arena_new(&a, 0) < 0)
        return false;
    if (kf_ttlv_decode(obj->attributes, obj->attributes_len, NULL, a, &set) == KF_OK &&
        kf_ttlv_get_bool(kf_ttlv_find(set, KMIP_TAG_FRESH), &fresh) != KF_OK)
        fresh = false;
    kf_arena_free(a);
    return fresh;
}

static int clear_fresh(void *ctx, kf_arena *a, kf_ttlv *set, const struct kf_object *obj)
{
    (void)ctx;
    (void)obj;
    kf_ttlv *old = (kf_ttlv *)(uintptr_t)kf_ttlv_find(set, KMIP_TAG_FRESH);
    kf_ttlv *now = kf_ttlv_add_bool(a, NULL, KMIP_TAG_FRESH, false);
    KF_ENSURE(now != NULL, KF_ERR_NOMEM);
    if (old)
        attr_replace(set, old, now);
    else
        KF_GUARD(kf_ttlv_append(set, now));
    return KF_OK;
}

int kms_mark_served(kf_kms *kms, const char *actor, const char *uid,
                    const struct kf_object *obj)
{
    if (!blob_says_fresh(obj))
        return KF_OK; /* already served: no write on every Get */
    return kms_attrs_edit(kms, actor, "Get (no longer fresh)", uid, clear_fresh, NULL);
}
