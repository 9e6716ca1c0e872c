/*
 * KMIP cryptographic services (KMIP 1.4 §4.29-4.36, 2.1 §6.1): Encrypt,
 * Decrypt, Sign, Signature Verify, MAC, MAC Verify, RNG Retrieve and Hash,
 * single-shot, except a streamed AES-GCM Encrypt (kmip_stream.c). Symmetric
 * modes are in kmip_symcipher.c.
 *
 * Keyed operations run inside kf_kms_use_key, which checks the lifecycle
 * state and the usage mask, unwraps the key into secure memory for the
 * callback only, and audits. Results are built in the callback's job and
 * put into the response only after kf_kms_use_key returned KF_OK, so a
 * result whose audit record could not be written is never released.
 *
 * Cryptographic Parameters: the key's own (stored with it at Register /
 * Create Key Pair) are the defaults; any field in the request overrides.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "kmip_crypto_internal.h"
#include "kmip_internal.h"

#define RNG_RETRIEVE_MAX 65536 /* bytes per RNG Retrieve; a response stays far below 1 MiB */

static int take_enum(const kf_ttlv *parent, uint32_t tag, uint32_t *v)
{
    const kf_ttlv *n = kf_ttlv_find(parent, tag);
    return n ? kf_ttlv_get_enum(n, v) : KF_OK;
}

static int take_int(const kf_ttlv *parent, uint32_t tag, int32_t *v)
{
    const kf_ttlv *n = kf_ttlv_find(parent, tag);
    return n ? kf_ttlv_get_int(n, v) : KF_OK;
}

/* Overlay the fields present in cp onto p. */
static int params_overlay(const kf_ttlv *cp, struct crypto_params *p)
{
    if (!cp)
        return KF_OK;
    KF_GUARD(take_enum(cp, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, &p->alg));
    KF_GUARD(take_enum(cp, KMIP_TAG_BLOCK_CIPHER_MODE, &p->mode));
    KF_GUARD(take_enum(cp, KMIP_TAG_PADDING_METHOD, &p->padding));
    KF_GUARD(take_enum(cp, KMIP_TAG_HASHING_ALGORITHM, &p->hash));
    KF_GUARD(take_enum(cp, KMIP_TAG_MASK_GENERATOR_HASHING_ALGORITHM, &p->mgf_hash));
    KF_GUARD(take_enum(cp, KMIP_TAG_DIGITAL_SIGNATURE_ALGORITHM, &p->sigalg));
    KF_GUARD(take_int(cp, KMIP_TAG_TAG_LENGTH, &p->tag_len));
    KF_GUARD(take_int(cp, KMIP_TAG_IV_LENGTH, &p->iv_len));
    const kf_ttlv *ps = kf_ttlv_find(cp, KMIP_TAG_P_SOURCE);
    if (ps)
        KF_GUARD(kf_ttlv_get_bytes(ps, &p->p_source, &p->p_source_len));
    return KF_OK;
}

/* The key's stored defaults, then the request's parameters on top. */
static int params_for_key(struct kmip_call *c, const struct kf_object *obj,
                          const kf_ttlv *request_cp, struct crypto_params *p)
{
    memset(p, 0, sizeof(*p));
    KF_GUARD(params_overlay(kmip_stored_attribute(c, obj, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS), p));
    return params_overlay(request_cp, p);
}

static int kf_hash_of(uint32_t kmip_hash, enum kf_hash *h)
{
    switch (kmip_hash) {
    case KMIP_HASH_SHA_1: *h = KF_HASH_SHA1; return KF_OK;
    case KMIP_HASH_SHA_224: *h = KF_HASH_SHA224; return KF_OK;
    case KMIP_HASH_SHA_256: *h = KF_HASH_SHA256; return KF_OK;
    case KMIP_HASH_SHA_384: *h = KF_HASH_SHA384; return KF_OK;
    case KMIP_HASH_SHA_512: *h = KF_HASH_SHA512; return KF_OK;
    default: return KF_ERR_UNSUPPORTED;
    }
}

static int bytes_field(const kf_ttlv *parent, uint32_t tag, const uint8_t **p, size_t *len)
{
    *p = NULL;
    *len = 0;
    const kf_ttlv *n = kf_ttlv_find(parent, tag);
    return n ? kf_ttlv_get_bytes(n, p, len) : KF_OK;
}

/* Multi-part (streamed) operations are not offered: refuse them plainly. */
static int refuse_streaming(struct kmip_call *c)
{
    bool init = true, final = true;
    const kf_ttlv *n;
    if ((n = kf_ttlv_find(c->req, KMIP_TAG_INIT_INDICATOR)))
        KF_GUARD(kf_ttlv_get_bool(n, &init));
    if ((n = kf_ttlv_find(c->req, KMIP_TAG_FINAL_INDICATOR)))
        KF_GUARD(kf_ttlv_get_bool(n, &final));
    if (init && final && !kf_ttlv_find(c->req, KMIP_TAG_CORRELATION_VALUE))
        return KF_OK;
    snprintf(c->message, sizeof(c->message), "streamed (multi-part) operations are not supported");
    return KF_ERR_UNSUPPORTED;
}

/*
 * Encrypt / Decrypt in parts: Init Indicator true (and no Final) starts a
 * stream, a Correlation Value continues one, Final Indicator true ends it.
 * Neither present, or both indicators true: a single-shot operation.
 */
static int stream_indicators(struct kmip_call *c, struct cipher_job *j)
{
    bool init = false, final = false;
    const kf_ttlv *n;
    if ((n = kf_ttlv_find(c->req, KMIP_TAG_INIT_INDICATOR)))
        KF_GUARD(kf_ttlv_get_bool(n, &init));
    if ((n = kf_ttlv_find(c->req, KMIP_TAG_FINAL_INDICATOR)))
        KF_GUARD(kf_ttlv_get_bool(n, &final));
    KF_GUARD(bytes_field(c->req, KMIP_TAG_CORRELATION_VALUE, &j->corr, &j->corr_len));
    if (init && j->corr) {
        snprintf(c->message, sizeof(c->message),
                 "Init Indicator starts a stream; it takes no Correlation Value");
        return KF_ERR_INVALID_MESSAGE;
    }
    j->stream_start = init && !final;
    j->stream_final = final;
    return KF_OK;
}

/* Unique Identifier of the key, and the caller's right to use it. */
static int use_uid(struct kmip_call *c, const char *op, const char **uid)
{
    *uid = kmip_text(c, c->req, KMIP_TAG_UNIQUE_IDENTIFIER);
    if (!*uid) {
        snprintf(c->message, sizeof(c->message), "%s needs a Unique Identifier", op);
        return KF_ERR_REQUEST;
    }
    return kmip_authorize_uid(c, KF_ROLE_USE, *uid, op);
}

static int put_uid(struct kmip_call *c, const char *uid)
{
    return kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER, uid) ? KF_OK
                                                                                 : KF_ERR_NOMEM;
}

/* ==== Encrypt / Decrypt ==== */

/* A parsed RSA key from a stored private or public key object. */
static int rsa_load(const struct kf_object *obj, const uint8_t *m, size_t len, kf_rsa_key **k)
{
    KF_ENSURE(obj->crypto_alg == KMIP_ALG_RSA, KF_ERR_UNSUPPORTED);
    if (obj->object_type == KF_OBJ_PRIVATE_KEY)
        return kf_rsa_import_private(m, len, k);
    KF_ENSURE(obj->object_type == KF_OBJ_PUBLIC_KEY, KF_ERR_UNSUPPORTED);
    return kf_rsa_import_public(m, len, k);
}

static int rsa_oaep(struct cipher_job *j, const struct crypto_params *p,
                    const struct kf_object *obj, const uint8_t *m, size_t mlen)
{
    enum kf_hash h, mgf;
    KF_ENSURE(!p->padding || p->padding == KMIP_PAD_OAEP, KF_ERR_UNSUPPORTED);
    uint32_t hash = p->hash ? p->hash : KMIP_HASH_SHA_1;
    KF_GUARD(kf_hash_of(hash, &h));
    /* MGF1 takes the label hash unless the Mask Generator Hashing Algorithm names another. */
    KF_GUARD(kf_hash_of(p->mgf_hash ? p->mgf_hash : hash, &mgf));
    KF_ENSURE(!j->decrypt || obj->object_type == KF_OBJ_PRIVATE_KEY, KF_ERR_UNSUPPORTED);
    kf_rsa_key *k;
    KF_GUARD(rsa_load(obj, m, mlen, &k));
    uint8_t *dst;
    size_t n = kf_rsa_modulus_len(k);
    int rc = kf_buf_put_space(&j->out, n, &dst);
    if (rc == KF_OK && !j->decrypt)
        rc = kf_rsa_oaep_encrypt_ex(k, h, mgf, p->p_source, p->p_source_len, j->data, j->len,
                                    dst);
    if (rc == KF_OK && j->decrypt) {
        size_t pt_len;
        rc = kf_rsa_oaep_decrypt_ex(k, h, mgf, p->p_source, p->p_source_len, j->data, j->len,
                                    dst, &pt_len);
        if (rc == KF_OK)
            j->out.len -= n - pt_len;
    }
    kf_rsa_free(k);
    return rc;
}

/*
 * Process Start Date and Protect Stop Date (KMIP 1.4 §3.25-3.26): before the
 * first, the key may not decrypt (process); after the second, it may not
 * encrypt (protect). The profiles answer these refusals Permission Denied.
 */
static int check_process_protect(struct kmip_call *c, const struct kf_object *obj, bool process)
{
    const kf_ttlv *n = kmip_stored_attribute(
        c, obj, process ? KMIP_TAG_PROCESS_START_DATE : KMIP_TAG_PROTECT_STOP_DATE);
    int64_t when;
    if (!n || kf_ttlv_get_datetime(n, &when) < 0)
        return KF_OK;
    int64_t now = (int64_t)time(NULL);
    if (process ? now >= when : now < when)
        return KF_OK;
    snprintf(c->message, sizeof(c->message), "%s",
             process ? "the key's Process Start Date has not come"
                     : "the key's Protect Stop Date has passed");
    return KF_ERR_PERM;
}

static int cipher_with_key(void *ctx, const struct kf_object *obj, const uint8_t *m, size_t len)
{
    struct cipher_job *j = ctx;
    struct crypto_params p;
    KF_GUARD(params_for_key(j->c, obj, j->cp, &p));
    uint32_t alg = p.alg ? p.alg : obj->crypto_alg;
    KF_ENSURE(alg == obj->crypto_alg, KF_ERR_ATTRIBUTE); /* parameters may not re-type a key */
    KF_GUARD(check_process_protect(j->c, obj, j->decrypt));
    if (obj->object_type == KF_OBJ_SYMMETRIC_KEY && (j->stream_start || j->corr))
        return kmip_gcm_stream(j, &p, alg, m, len);
    if (obj->object_type == KF_OBJ_SYMMETRIC_KEY)
        return kmip_symmetric_cipher(j, &p, alg, m, len);
    if (alg == KMIP_ALG_RSA)
        return rsa_oaep(j, &p, obj, m, len);
    snprintf(j->c->message, sizeof(j->c->message),
             "Encrypt and Decrypt take AES and Triple DES symmetric keys and RSA key pairs");
    return KF_ERR_UNSUPPORTED;
}

static int cipher_op(struct kmip_call *c, bool decrypt)
{
    const char *op = decrypt ? "Decrypt" : "Encrypt";
    KF_ENSURE(c->req, KF_ERR_REQUEST);
    const char *uid;
    KF_GUARD(use_uid(c, op, &uid));
    struct cipher_job j = {.c = c, .decrypt = decrypt, .uid = uid};
    KF_GUARD(stream_indicators(c, &j));
    j.cp = kf_ttlv_find(c->req, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    KF_GUARD(bytes_field(c->req, KMIP_TAG_DATA, &j.data, &j.len));
    KF_GUARD(bytes_field(c->req, KMIP_TAG_IV_COUNTER_NONCE, &j.iv, &j.iv_len));
    KF_GUARD(bytes_field(c->req, KMIP_TAG_AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, &j.aad,
                         &j.aad_len));
    KF_GUARD(bytes_field(c->req, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, &j.tag, &j.tag_len));
    if (!j.data) {
        snprintf(c->message, sizeof(c->message), "%s needs Data", op);
        return KF_ERR_REQUEST;
    }
    KF_GUARD(kf_buf_alloc(&j.out, 0, j.len + 1024, 0));
    int rc = kf_kms_use_key_bytes(c->kms, c->actor, op, uid,
                                  decrypt ? KF_USE_DECRYPT : KF_USE_ENCRYPT,
                                  decrypt ? KMIP_USAGE_DECRYPT : KMIP_USAGE_ENCRYPT, j.len,
                                  cipher_with_key, &j);
    if (rc == KF_OK)
        rc = put_uid(c, uid);
    if (rc == KF_OK && !kf_ttlv_add_bytes(c->arena, c->resp, KMIP_TAG_DATA, j.out.data, j.out.len))
        rc = KF_ERR_NOMEM;
    if (rc == KF_OK && j.iv_out_len &&
        !kf_ttlv_add_bytes(c->arena, c->resp, KMIP_TAG_IV_COUNTER_NONCE, j.iv_out, j.iv_out_len))
        rc = KF_ERR_NOMEM;
    if (rc == KF_OK && j.corr_out_len &&
        !kf_ttlv_add_bytes(c->arena, c->resp, KMIP_TAG_CORRELATION_VALUE, j.corr_out,
                           j.corr_out_len))
        rc = KF_ERR_NOMEM;
    if (rc == KF_OK && j.tag_out_len &&
        !kf_ttlv_add_bytes(c->arena, c->resp, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, j.tag_out,
                           j.tag_out_len))
        rc = KF_ERR_NOMEM;
    kf_wipe(j.out.data, j.out.cap); /* plaintext of a Decrypt */
    kf_buf_free(&j.out);
    return rc;
}

int kmip_encrypt(struct kmip_call *c)
{
    return cipher_op(c, false);
}

int kmip_decrypt(struct kmip_call *c)
{
    return cipher_op(c, true);
}

/* ==== Sign / Signature Verify ==== */

struct sign_job {
    struct kmip_call *c;
    bool verify;
    const kf_ttlv *cp;
    const uint8_t *data, *sig;
    size_t len, sig_len;
    bool digested;          /* data is a digest (Digested Data) */
    uint8_t out[1024];      /* signature (RSA up to 8192 bits) */
    size_t out_len;
    bool valid;
};

enum sig_scheme { SIG_RSA_PKCS1 = 1, SIG_RSA_PSS, SIG_ECDSA, SIG_ED25519 };

/* Scheme and hash from Digital Signature Algorithm, else Padding Method and Hashing Algorithm. */
static int sig_scheme_of(const struct crypto_params *p, uint32_t key_alg, enum sig_scheme *s,
                         uint32_t *hash)
{
    *hash = p->hash ? p->hash : KMIP_HASH_SHA_256;
    switch (p->sigalg) {
    case 0:
        break;
    case KMIP_SIGALG_SHA_1_WITH_RSA_ENCRYPTION: *hash = KMIP_HASH_SHA_1; *s = SIG_RSA_PKCS1; return KF_OK;
    case KMIP_SIGALG_SHA_224_WITH_RSA_ENCRYPTION: *hash = KMIP_HASH_SHA_224; *s = SIG_RSA_PKCS1; return KF_OK;
    case KMIP_SIGALG_SHA_256_WITH_RSA_ENCRYPTION: *hash = KMIP_HASH_SHA_256; *s = SIG_RSA_PKCS1; return KF_OK;
    case KMIP_SIGALG_SHA_384_WITH_RSA_ENCRYPTION: *hash = KMIP_HASH_SHA_384; *s = SIG_RSA_PKCS1; return KF_OK;
    case KMIP_SIGALG_SHA_512_WITH_RSA_ENCRYPTION: *hash = KMIP_HASH_SHA_512; *s = SIG_RSA_PKCS1; return KF_OK;
    case KMIP_SIGALG_RSASSA_PSS: *s = SIG_RSA_PSS; return KF_OK;
    case KMIP_SIGALG_ECDSA_WITH_SHA256: *hash = KMIP_HASH_SHA_256; *s = SIG_ECDSA; return KF_OK;
    case KMIP_SIGALG_ECDSA_WITH_SHA384: *hash = KMIP_HASH_SHA_384; *s = SIG_ECDSA; return KF_OK;
    case KMIP_SIGALG_ECDSA_WITH_SHA512: *hash = KMIP_HASH_SHA_512; *s = SIG_ECDSA; return KF_OK;
    default: return KF_ERR_UNSUPPORTED;
    }
    switch (key_alg) {
    case KMIP_ALG_RSA:
        if (!p->padding || p->padding == KMIP_PAD_PKCS1_V1_5)
            *s = SIG_RSA_PKCS1;
        else if (p->padding == KMIP_PAD_PSS)
            *s = SIG_RSA_PSS;
        else
            return KF_ERR_UNSUPPORTED;
        return KF_OK;
    case KMIP_ALG_ECDSA:
        *s = SIG_ECDSA;
        return KF_OK;
    case KMIP_ALG_ED25519:
        *s = SIG_ED25519;
        return KF_OK;
    default:
        return KF_ERR_UNSUPPORTED;
    }
}

/*
 * KMIP 1.4 carries no PSS salt length: we sign with salt = hash length (RFC
 * 8017's recommendation) and accept that or the largest salt the key allows
 * (what the OASIS reference signatures and many HSMs use). Both are public.
 */
static int pss_verify_any_salt(const kf_rsa_key *k, enum kf_hash h, const struct sign_job *j)
{
    int rc = kf_rsa_pss_verify(k, h, j->data, j->len, j->sig, j->sig_len);
    size_t max_salt = kf_rsa_pss_max_salt_len(k, h);
    if (rc == KF_ERR_BAD_SIGNATURE && max_salt > kf_hash_len(h))
        rc = kf_rsa_pss_verify_ex(k, h, max_salt, j->data, j->len, j->sig, j->sig_len);
    return rc;
}

static int rsa_signature(struct sign_job *j, enum sig_scheme s, enum kf_hash h,
                         const struct kf_object *obj, const uint8_t *m, size_t mlen)
{
    KF_ENSURE(!j->digested, KF_ERR_UNSUPPORTED);
    KF_ENSURE(j->verify || obj->object_type == KF_OBJ_PRIVATE_KEY, KF_ERR_UNSUPPORTED);
    kf_rsa_key *k;
    KF_GUARD(rsa_load(obj, m, mlen, &k));
    int rc = KF_OK;
    if (j->verify) {
        rc = s == SIG_RSA_PSS ? pss_verify_any_salt(k, h, j)
                              : kf_rsa_pkcs1_verify(k, h, j->data, j->len, j->sig, j->sig_len);
    } else if (kf_rsa_modulus_len(k) > sizeof(j->out)) {
        rc = KF_ERR_KEY_SIZE;
    } else {
        j->out_len = kf_rsa_modulus_len(k);
        rc = s == SIG_RSA_PSS ? kf_rsa_pss_sign(k, h, j->data, j->len, j->out)
                              : kf_rsa_pkcs1_sign(k, h, j->data, j->len, j->out);
    }
    kf_rsa_free(k);
    return rc;
}

/* Leading zero bytes off (DER INTEGERs are minimal; GnuTLS adds a 0 where the sign needs one). */
static gnutls_datum_t trimmed(uint8_t *p, size_t n)
{
    size_t skip = 0;
    while (skip + 1 < n && p[skip] == 0)
        skip++;
    return (gnutls_datum_t){p + skip, (unsigned)(n - skip)};
}

/* ECDSA signatures travel as DER Ecdsa-Sig-Value (X9.62, RFC 5480); 64-byte r||s is accepted. */
static int ecdsa_der_encode(const uint8_t rs[64], uint8_t *out, size_t cap, size_t *len)
{
    uint8_t copy[64];
    memcpy(copy, rs, sizeof(copy));
    gnutls_datum_t r = trimmed(copy, 32), s = trimmed(copy + 32, 32), der = {0};
    KF_ENSURE(gnutls_encode_rs_value(&der, &r, &s) >= 0, KF_ERR_CRYPTO);
    int rc = der.size <= cap ? KF_OK : KF_ERR_INTERNAL;
    if (rc == KF_OK) {
        memcpy(out, der.data, der.size);
        *len = der.size;
    }
    gnutls_free(der.data);
    return rc;
}

static int fixed32(const gnutls_datum_t *v, uint8_t out[32])
{
    kf_buf b;
    kf_buf_fixed(&b, out, 32);
    kf_buf r;
    kf_buf_reader(&r, v->data, v->size);
    uint8_t z;
    while (kf_buf_remaining(&r) > 32)
        if (kf_buf_get_u8(&r, &z) < 0 || z != 0)
            return KF_ERR_BAD_SIGNATURE;
    KF_GUARD(kf_buf_put_zeros(&b, 32 - kf_buf_remaining(&r)));
    return kf_buf_put_bytes(&b, kf_buf_read_ptr(&r), kf_buf_remaining(&r));
}

static int ecdsa_der_decode(const uint8_t *sig, size_t len, uint8_t rs[64])
{
    const gnutls_datum_t in = {(unsigned char *)(uintptr_t)sig, (unsigned)len};
    gnutls_datum_t r = {0}, s = {0};
    if (gnutls_decode_rs_value(&in, &r, &s) < 0) {
        KF_ENSURE(len == 64, KF_ERR_BAD_SIGNATURE);
        memcpy(rs, sig, 64);
        return KF_OK;
    }
    int rc = fixed32(&r, rs);
    if (rc == KF_OK)
        rc = fixed32(&s, rs + 32);
    gnutls_free(r.data);
    gnutls_free(s.data);
    return rc;
}

/* The digest ECDSA signs: the given Digested Data, or the hash of Data. */
static int ecdsa_digest(const struct sign_job *j, uint32_t hash, uint8_t d[64], size_t *dlen)
{
    if (j->digested) {
        KF_ENSURE(j->len >= 1 && j->len <= 64, KF_ERR_ATTRIBUTE);
        memcpy(d, j->data, j->len);
        *dlen = j->len;
        return KF_OK;
    }
    enum kf_hash h;
    KF_GUARD(kf_hash_of(hash, &h));
    *dlen = kf_hash_len(h);
    return kf_hash(h, j->data, j->len, d);
}

static int ecdsa_signature(struct sign_job *j, uint32_t hash, const struct kf_object *obj,
                           const uint8_t *m, size_t mlen)
{
    uint8_t d[64], rs[64], pub[65];
    size_t dlen;
    KF_GUARD(ecdsa_digest(j, hash, d, &dlen));
    if (!j->verify) {
        KF_ENSURE(obj->object_type == KF_OBJ_PRIVATE_KEY && mlen == 32, KF_ERR_UNSUPPORTED);
        KF_GUARD(kf_p256_sign_digest(m, d, dlen, rs));
        return ecdsa_der_encode(rs, j->out, sizeof(j->out), &j->out_len);
    }
    if (obj->object_type == KF_OBJ_PRIVATE_KEY) {
        KF_ENSURE(mlen == 32, KF_ERR_FORMAT);
        KF_GUARD(kf_p256_public(m, pub));
    } else {
        KF_ENSURE(mlen == sizeof(pub), KF_ERR_FORMAT);
        memcpy(pub, m, sizeof(pub));
    }
    KF_GUARD(ecdsa_der_decode(j->sig, j->sig_len, rs));
    return kf_p256_verify_digest(pub, d, dlen, rs);
}

static int ed25519_signature(struct sign_job *j, const struct kf_object *obj, const uint8_t *m,
                             size_t mlen)
{
    uint8_t pub[32];
    KF_ENSURE(!j->digested, KF_ERR_UNSUPPORTED); /* PureEdDSA signs the message itself */
    KF_ENSURE(mlen == 32, KF_ERR_FORMAT);
    if (!j->verify) {
        KF_ENSURE(obj->object_type == KF_OBJ_PRIVATE_KEY, KF_ERR_UNSUPPORTED);
        j->out_len = 64;
        return kf_ed25519_sign(m, j->data, j->len, j->out);
    }
    if (obj->object_type == KF_OBJ_PRIVATE_KEY)
        KF_GUARD(kf_ed25519_public(m, pub));
    else
        memcpy(pub, m, sizeof(pub));
    KF_ENSURE(j->sig_len == 64, KF_ERR_BAD_SIGNATURE);
    return kf_ed25519_verify(pub, j->data, j->len, j->sig);
}

static int signature_with_key(void *ctx, const struct kf_object *obj, const uint8_t *m,
                              size_t len)
{
    struct sign_job *j = ctx;
    struct crypto_params p;
    enum sig_scheme s;
    uint32_t hash;
    KF_ENSURE(obj->object_type == KF_OBJ_PRIVATE_KEY || obj->object_type == KF_OBJ_PUBLIC_KEY,
              KF_ERR_UNSUPPORTED);
    KF_GUARD(check_process_protect(j->c, obj, j->verify)); /* signing protects */
    KF_GUARD(params_for_key(j->c, obj, j->cp, &p));
    int rc = sig_scheme_of(&p, obj->crypto_alg, &s, &hash);
    if (rc < 0) {
        snprintf(j->c->message, sizeof(j->c->message),
                 "signatures offered: RSA PKCS#1 v1.5 and PSS, ECDSA P-256, Ed25519");
        return rc;
    }
    if (s == SIG_RSA_PKCS1 || s == SIG_RSA_PSS) {
        enum kf_hash h;
        KF_GUARD(kf_hash_of(hash, &h));
        rc = rsa_signature(j, s, h, obj, m, len);
    } else if (s == SIG_ECDSA) {
        KF_ENSURE(obj->crypto_alg == KMIP_ALG_ECDSA, KF_ERR_ATTRIBUTE);
        rc = ecdsa_signature(j, hash, obj, m, len);
    } else {
        rc = ed25519_signature(j, obj, m, len);
    }
    if (j->verify && (rc == KF_OK || rc == KF_ERR_BAD_SIGNATURE)) {
        j->valid = rc == KF_OK; /* an invalid signature is an answer, not a failure */
        rc = KF_OK;
    }
    return rc;
}

static int signature_op(struct kmip_call *c, bool verify)
{
    const char *op = verify ? "Signature Verify" : "Sign";
    const char *uid;
    KF_ENSURE(c->req, KF_ERR_REQUEST);
    KF_GUARD(use_uid(c, op, &uid));
    KF_GUARD(refuse_streaming(c));
    struct sign_job j = {.c = c, .verify = verify};
    j.cp = kf_ttlv_find(c->req, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    KF_GUARD(bytes_field(c->req, KMIP_TAG_DATA, &j.data, &j.len));
    if (!j.data) {
        KF_GUARD(bytes_field(c->req, KMIP_TAG_DIGESTED_DATA, &j.data, &j.len));
        j.digested = j.data != NULL;
    }
    KF_GUARD(bytes_field(c->req, KMIP_TAG_SIGNATURE_DATA, &j.sig, &j.sig_len));
    if (!j.data || (verify && !j.sig)) {
        snprintf(c->message, sizeof(c->message), "%s needs Data%s", op,
                 verify ? " and Signature Data" : "");
        return KF_ERR_REQUEST;
    }
    KF_GUARD(kf_kms_use_key(c->kms, c->actor, op, uid, verify ? KF_USE_VERIFY : KF_USE_SIGN,
                            verify ? KMIP_USAGE_VERIFY : KMIP_USAGE_SIGN, signature_with_key, &j));
    KF_GUARD(put_uid(c, uid));
    kf_ttlv *n = verify ? kf_ttlv_add_enum(c->arena, c->resp, KMIP_TAG_VALIDITY_INDICATOR,
                                           j.valid ? KMIP_VALIDITY_INDICATOR_VALID
                                                   : KMIP_VALIDITY_INDICATOR_INVALID)
                        : kf_ttlv_add_bytes(c->arena, c->resp, KMIP_TAG_SIGNATURE_DATA, j.out,
                                            j.out_len);
    return n ? KF_OK : KF_ERR_NOMEM;
}

int kmip_sign(struct kmip_call *c)
{
    return signature_op(c, false);
}

int kmip_signature_verify(struct kmip_call *c)
{
    return signature_op(c, true);
}

/* ==== MAC / MAC Verify ==== */

struct mac_job {
    struct kmip_call *c;
    bool verify;
    const kf_ttlv *cp;
    const uint8_t *data, *mac;
    size_t len, mac_len;
    uint8_t out[64];
    size_t out_len;
    bool valid;
};

static bool is_hmac(uint32_t alg)
{
    return alg == KMIP_ALG_HMAC_SHA1 || alg == KMIP_ALG_HMAC_SHA224 ||
           alg == KMIP_ALG_HMAC_SHA256 || alg == KMIP_ALG_HMAC_SHA384 ||
           alg == KMIP_ALG_HMAC_SHA512;
}

static enum kf_hash hmac_hash(uint32_t alg)
{
    switch (alg) {
    case KMIP_ALG_HMAC_SHA1: return KF_HASH_SHA1;
    case KMIP_ALG_HMAC_SHA224: return KF_HASH_SHA224;
    case KMIP_ALG_HMAC_SHA384: return KF_HASH_SHA384;
    case KMIP_ALG_HMAC_SHA512: return KF_HASH_SHA512;
    default: return KF_HASH_SHA256;
    }
}

static int mac_with_key(void *ctx, const struct kf_object *obj, const uint8_t *m, size_t len)
{
    struct mac_job *j = ctx;
    struct crypto_params p;
    KF_ENSURE(obj->object_type == KF_OBJ_SYMMETRIC_KEY, KF_ERR_UNSUPPORTED);
    KF_GUARD(check_process_protect(j->c, obj, j->verify)); /* a MAC protects, its check processes */
    KF_GUARD(params_for_key(j->c, obj, j->cp, &p));
    uint32_t alg = p.alg ? p.alg : obj->crypto_alg;
    /* An HMAC key, or an AES key whose Cryptographic Parameters name an HMAC (as the
     * KMIP 1.4 profiles' CS-AC-M-4..6 register one): the key bytes are the HMAC key. */
    if (is_hmac(alg) && (is_hmac(obj->crypto_alg) || obj->crypto_alg == KMIP_ALG_AES)) {
        enum kf_hash h = hmac_hash(alg);
        j->out_len = kf_hash_len(h);
        KF_GUARD(kf_hmac(h, m, len, j->data, j->len, j->out));
    } else if (alg == KMIP_ALG_AES && obj->crypto_alg == KMIP_ALG_AES &&
               (!p.mode || p.mode == KMIP_MODE_CMAC)) {
        j->out_len = KF_CMAC_LEN;
        KF_GUARD(kf_aes_cmac(m, len, j->data, j->len, j->out));
    } else {
        snprintf(j->c->message, sizeof(j->c->message),
                 "MACs offered: HMAC-SHA1/224/256/384/512 (HMAC keys, or AES keys naming one), CMAC");
        return KF_ERR_UNSUPPORTED;
    }
    if (j->verify) /* CT: the comparison does not depend on where the MACs differ */
        j->valid = j->mac_len == j->out_len && kf_ct_equal(j->mac, j->out, j->out_len);
    return KF_OK;
}

static int mac_op(struct kmip_call *c, bool verify)
{
    const char *op = verify ? "MAC Verify" : "MAC";
    const char *uid;
    KF_ENSURE(c->req, KF_ERR_REQUEST);
    KF_GUARD(use_uid(c, op, &uid));
    KF_GUARD(refuse_streaming(c));
    struct mac_job j = {.c = c, .verify = verify};
    j.cp = kf_ttlv_find(c->req, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    KF_GUARD(bytes_field(c->req, KMIP_TAG_DATA, &j.data, &j.len));
    KF_GUARD(bytes_field(c->req, KMIP_TAG_MAC_DATA, &j.mac, &j.mac_len));
    if (!j.data || (verify && !j.mac)) {
        snprintf(c->message, sizeof(c->message), "%s needs Data%s", op,
                 verify ? " and MAC Data" : "");
        return KF_ERR_REQUEST;
    }
    int rc = kf_kms_use_key(c->kms, c->actor, op, uid,
                            verify ? KF_USE_MAC_VERIFY : KF_USE_MAC_GENERATE,
                            verify ? KMIP_USAGE_MAC_VERIFY : KMIP_USAGE_MAC_GENERATE,
                            mac_with_key, &j);
    if (rc == KF_OK)
        rc = put_uid(c, uid);
    if (rc == KF_OK) {
        kf_ttlv *n = verify ? kf_ttlv_add_enum(c->arena, c->resp, KMIP_TAG_VALIDITY_INDICATOR,
                                               j.valid ? KMIP_VALIDITY_INDICATOR_VALID
                                                       : KMIP_VALIDITY_INDICATOR_INVALID)
                            : kf_ttlv_add_bytes(c->arena, c->resp, KMIP_TAG_MAC_DATA, j.out,
                                                j.out_len);
        rc = n ? KF_OK : KF_ERR_NOMEM;
    }
    kf_wipe(j.out, sizeof(j.out)); /* a MAC Verify's expected MAC is not given out */
    return rc;
}

int kmip_mac(struct kmip_call *c)
{
    return mac_op(c, false);
}

int kmip_mac_verify(struct kmip_call *c)
{
    return mac_op(c, true);
}

/* ==== RNG Retrieve / Hash (no key) ==== */

int kmip_rng_retrieve(struct kmip_call *c)
{
    int32_t n = 0;
    KF_GUARD(kmip_authorize(c, KF_ROLE_USE, NULL, "RNG Retrieve"));
    if (kf_ttlv_get_int(kf_ttlv_find(c->req, KMIP_TAG_DATA_LENGTH), &n) < 0) {
        snprintf(c->message, sizeof(c->message), "RNG Retrieve needs a Data Length");
        return KF_ERR_REQUEST;
    }
    if (n < 1 || n > RNG_RETRIEVE_MAX) {
        snprintf(c->message, sizeof(c->message), "Data Length must be 1 to %d bytes",
                 RNG_RETRIEVE_MAX);
        return KF_ERR_ATTRIBUTE;
    }
    uint8_t *p = kf_arena_alloc(c->arena, (size_t)n);
    KF_ENSURE(p != NULL, KF_ERR_NOMEM);
    KF_GUARD(kf_rng_bytes(p, (size_t)n));
    return kf_ttlv_add_bytes(c->arena, c->resp, KMIP_TAG_DATA, p, (size_t)n) ? KF_OK
                                                                             : KF_ERR_NOMEM;
}

int kmip_hash(struct kmip_call *c)
{
    struct crypto_params p = {0};
    enum kf_hash h;
    const uint8_t *data;
    size_t len;
    uint8_t digest[64];
    KF_GUARD(kmip_authorize(c, KF_ROLE_USE, NULL, "Hash"));
    KF_GUARD(refuse_streaming(c));
    KF_GUARD(params_overlay(kf_ttlv_find(c->req, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS), &p));
    KF_GUARD(bytes_field(c->req, KMIP_TAG_DATA, &data, &len));
    if (!data || !p.hash) {
        snprintf(c->message, sizeof(c->message),
                 "Hash needs Data and a Hashing Algorithm in the Cryptographic Parameters");
        return KF_ERR_REQUEST;
    }
    if (kf_hash_of(p.hash, &h) < 0) {
        snprintf(c->message, sizeof(c->message), "hashes offered: SHA-1, SHA-224/256/384/512");
        return KF_ERR_UNSUPPORTED;
    }
    KF_GUARD(kf_hash(h, data, len, digest));
    return kf_ttlv_add_bytes(c->arena, c->resp, KMIP_TAG_DATA, digest, kf_hash_len(h))
               ? KF_OK
               : KF_ERR_NOMEM;
}
