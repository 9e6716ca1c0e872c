/*
 * The signed envelope every manufacturing record travels and is stored in
 * (docs/manufacturing.md):
 *
 *   KeyfleetSignedRecord { RecordType, RecordBody, RoleId (signer), Signature }
 *
 * exactly those four items in that order. The Ed25519 signature covers
 * "keyfleet-mfg-v1" || 0x00 || [record type]_32 || signer role ID (9) || body,
 * so the type and the signer outside the body are bound too; kf_mfg_record_open then also requires the body's
 * own RecordType to be the envelope's.
 */
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/mfg.h"
#include "keyfleet/ttlv.h"
#include "mfg/internal.h"

/* header (8) + RecordType (16) + RecordBody header (8): where the body's bytes start */
#define BODY_OFFSET (KF_TTLV_HEADER_LEN + 16 + KF_TTLV_HEADER_LEN)
/* the largest envelope: a TokenKeys body plus the other three items */
#define ENVELOPE_MAX (KF_MFG_TOKEN_KEYS_MAX + 256)
#define SIG_INPUT_MAX (MFG_SIG_PREFIX_LEN + KF_MFG_TOKEN_KEYS_MAX + 4096)

static const struct kf_ttlv_limits envelope_limits = {
    .max_depth = 2,
    .max_items = 5, /* the structure and its four items */
    .max_total = ENVELOPE_MAX,
    .max_item_len = ENVELOPE_MAX,
};

/* Start the signature input in b: the label with its NUL, then the type. */
static int sig_prefix(kf_buf *b, uint32_t type, const char *signer)
{
    KF_ENSURE(strlen(signer) == KF_MFG_ROLE_ID_LEN, KF_ERR_ARG);
    KF_GUARD(kf_buf_put_bytes(b, MFG_SIG_LABEL, sizeof(MFG_SIG_LABEL)));
    KF_GUARD(kf_buf_put_u32(b, type));
    return kf_buf_put_bytes(b, signer, KF_MFG_ROLE_ID_LEN);
}

static int envelope_encode(uint32_t type, const uint8_t *body, size_t body_len, const char *signer,
                           const uint8_t sig[KF_MFG_SIG_LEN], kf_buf *out)
{
    kf_arena *a;
    KF_GUARD(kf_arena_new(&a, body_len + 64 * 1024));
    kf_ttlv *root = kf_ttlv_struct(a, NULL, KMIP_TAG_KEYFLEET_SIGNED_RECORD);
    int rc = KF_ERR_NOMEM;
    if (root && kf_ttlv_add_enum(a, root, KMIP_TAG_KEYFLEET_RECORD_TYPE, type) &&
        kf_ttlv_add_bytes(a, root, KMIP_TAG_KEYFLEET_RECORD_BODY, body, body_len) &&
        kf_ttlv_add_text(a, root, KMIP_TAG_KEYFLEET_ROLE_ID, signer) &&
        kf_ttlv_add_bytes(a, root, KMIP_TAG_KEYFLEET_SIGNATURE, sig, KF_MFG_SIG_LEN))
        rc = kf_ttlv_encode(root, out);
    kf_arena_free(a);
    return rc;
}

int kf_mfg_record_sign(const struct kf_mfg_record *rec, const char *signer_id,
                       const uint8_t sign_priv[32], kf_buf *out)
{
    KF_ENSURE(rec && signer_id && sign_priv && out, KF_ERR_ARG);
    KF_ENSURE(kf_mfg_role_id_parse(signer_id, NULL), KF_ERR_ARG);
    /* the body is encoded straight after the prefix, so it is signed where it lies;
     * the private key stays where the caller keeps it (kf_ed25519_sign derives the
     * public half on its stack) */
    kf_buf input;
    KF_GUARD(kf_buf_alloc(&input, 0, SIG_INPUT_MAX, 0));
    uint8_t sig[KF_MFG_SIG_LEN];
    const uint8_t *body = NULL;
    kf_buf view;
    int rc = sig_prefix(&input, rec->type, signer_id);
    if (rc == KF_OK)
        rc = mfg_body_encode(rec, &input);
    if (rc == KF_OK)
        rc = kf_ed25519_sign(sign_priv, input.data, input.len, sig);
    if (rc == KF_OK) {
        kf_buf_reader(&view, input.data, input.len);
        rc = kf_buf_skip(&view, MFG_SIG_PREFIX_LEN);
    }
    if (rc == KF_OK)
        rc = kf_buf_get_ptr(&view, kf_buf_remaining(&view), &body);
    if (rc == KF_OK)
        rc = envelope_encode(rec->type, body, input.len - MFG_SIG_PREFIX_LEN, signer_id, sig, out);
    kf_buf_free(&input);
    return rc;
}

/* The four items, each of its type, in order; env->body not yet set. */
static bool envelope_items(const kf_ttlv *root, struct kf_mfg_envelope *env, const uint8_t **body,
                           size_t *body_len)
{
    if (root->tag != KMIP_TAG_KEYFLEET_SIGNED_RECORD || root->type != KF_TTLV_STRUCTURE ||
        root->nchildren != 4)
        return false;
    const kf_ttlv *type = root->child, *b = type->next, *signer = b->next, *sig = signer->next;
    const char *id;
    size_t id_len, sig_len;
    const uint8_t *sig_p;
    if (type->tag != KMIP_TAG_KEYFLEET_RECORD_TYPE || type->type != KF_TTLV_ENUM ||
        b->tag != KMIP_TAG_KEYFLEET_RECORD_BODY || b->type != KF_TTLV_BYTES ||
        signer->tag != KMIP_TAG_KEYFLEET_ROLE_ID || signer->type != KF_TTLV_TEXT ||
        sig->tag != KMIP_TAG_KEYFLEET_SIGNATURE || sig->type != KF_TTLV_BYTES)
        return false;
    if (kf_ttlv_get_enum(type, &env->type) != KF_OK || env->type < 1 || env->type > KF_MFG_REC_MAX)
        return false;
    if (kf_ttlv_get_bytes(b, body, body_len) != KF_OK || *body_len < KF_TTLV_HEADER_LEN ||
        *body_len > mfg_body_limit(env->type))
        return false;
    if (kf_ttlv_get_text(signer, &id, &id_len) != KF_OK || id_len != KF_MFG_ROLE_ID_LEN ||
        memchr(id, '\0', id_len))
        return false;
    memcpy(env->signer, id, id_len);
    env->signer[id_len] = '\0';
    if (!kf_mfg_role_id_parse(env->signer, NULL))
        return false;
    if (kf_ttlv_get_bytes(sig, &sig_p, &sig_len) != KF_OK || sig_len != KF_MFG_SIG_LEN)
        return false;
    memcpy(env->sig, sig_p, KF_MFG_SIG_LEN);
    return true;
}

/* The decoder copies values into its arena; env->body must point into msg, where the
 * canonical layout puts it. The copy confirms the offset. */
static bool body_in_message(const uint8_t *msg, size_t total, const uint8_t *copy, size_t len,
                            struct kf_mfg_envelope *env)
{
    kf_buf in;
    const uint8_t *p;
    kf_buf_reader(&in, msg, total);
    if (kf_buf_skip(&in, BODY_OFFSET) != KF_OK || kf_buf_get_ptr(&in, len, &p) != KF_OK ||
        memcmp(p, copy, len) != 0)
        return false;
    env->body = p;
    env->body_len = len;
    return true;
}

int kf_mfg_envelope_parse(const uint8_t *msg, size_t len, struct kf_mfg_envelope *env, size_t *used)
{
    KF_ENSURE(env && (msg || len == 0), KF_ERR_ARG);
    memset(env, 0, sizeof(*env));
    if (used)
        *used = 0;
    size_t total;
    KF_ENSURE(len >= KF_TTLV_HEADER_LEN, KF_ERR_MFG_FRAMING);
    KF_ENSURE(kf_ttlv_message_length(msg, &envelope_limits, &total) == KF_OK && total <= len,
              KF_ERR_MFG_FRAMING);
    kf_arena *a;
    KF_GUARD(kf_arena_new(&a, total + 64 * 1024));
    kf_ttlv *root;
    const uint8_t *body;
    size_t body_len;
    bool ok = kf_ttlv_decode(msg, total, &envelope_limits, a, &root) == KF_OK &&
              envelope_items(root, env, &body, &body_len) &&
              body_in_message(msg, total, body, body_len, env);
    kf_arena_free(a);
    if (!ok) {
        memset(env, 0, sizeof(*env));
        return KF_ERR_MFG_FRAMING;
    }
    if (used)
        *used = total;
    return KF_OK;
}

int kf_mfg_envelope_verify(const struct kf_mfg_envelope *env, const uint8_t sign_pub[32])
{
    KF_ENSURE(env && sign_pub && (env->body || env->body_len == 0), KF_ERR_ARG);
    KF_ENSURE(env->body_len <= KF_MFG_TOKEN_KEYS_MAX, KF_ERR_MFG_FRAMING);
    kf_buf input;
    KF_GUARD(kf_buf_alloc(&input, MFG_SIG_PREFIX_LEN + env->body_len,
                          MFG_SIG_PREFIX_LEN + env->body_len, 0));
    int rc = sig_prefix(&input, env->type, env->signer);
    if (rc == KF_OK)
        rc = kf_buf_put_bytes(&input, env->body, env->body_len);
    if (rc == KF_OK)
        rc = kf_ed25519_verify(sign_pub, input.data, input.len, env->sig) == KF_OK
                 ? KF_OK
                 : KF_ERR_BAD_SIGNATURE;
    kf_buf_free(&input);
    return rc;
}

int kf_mfg_record_open(const uint8_t *msg, size_t len, const uint8_t signer_pub[32],
                       uint32_t expect_type, struct kf_mfg_record *rec)
{
    KF_ENSURE(rec && signer_pub && (msg || len == 0), KF_ERR_ARG);
    memset(rec, 0, sizeof(*rec));
    struct kf_mfg_envelope env;
    size_t used;
    KF_GUARD(kf_mfg_envelope_parse(msg, len, &env, &used));
    KF_ENSURE(used == len, KF_ERR_MFG_FRAMING);
    KF_ENSURE(expect_type == 0 || env.type == expect_type, KF_ERR_MFG_FRAMING);
    KF_GUARD(kf_mfg_envelope_verify(&env, signer_pub));
    /* the body must name the type the signature bound outside it */
    return kf_mfg_record_decode(env.body, env.body_len, env.type, rec);
}

int kf_mfg_cert_check(const uint8_t *cert, size_t len, const uint8_t authority_pub[32],
                      const char *domain, enum kf_mfg_role_type want, struct kf_mfg_record *rec)
{
    KF_ENSURE(domain && authority_pub && (cert || len == 0), KF_ERR_ARG);
    struct kf_mfg_record r;
    if (rec)
        memset(rec, 0, sizeof(*rec));
    KF_GUARD(kf_mfg_record_open(cert, len, authority_pub, KF_MFG_REC_ROLE_CERT, &r));
    /* a certificate of another domain, or for another kind of role, certifies nothing here */
    KF_ENSURE(strcmp(r.domain, domain) == 0, KF_ERR_MFG_ROLE);
    KF_ENSURE(want == 0 || r.role_type == (uint32_t)want, KF_ERR_MFG_ROLE);
    if (rec)
        *rec = r;
    return KF_OK;
}
