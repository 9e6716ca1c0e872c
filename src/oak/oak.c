/*
 * Oak, the generation role (seed EP 0 735 720 Fig. 29/30, MI1-MI4;
 * docs/manufacturing.md "Installation"). Given a key ID the archive
 * assigned, Oak draws the device master key K and makes the two records of
 * MI2 with the same K: ArchiveNew (MI3), K sealed to the domain's Brass, and
 * Distribute (MI4), K sealed to the requesting Steel with the test tokens
 * that let the Steel and Brass check the installation. K lives in secure
 * memory for the length of this call only.
 */
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/meter.h"
#include "keyfleet/secmem.h"
#include "oak.h"

static bool request_ok(const struct kf_oak_request *r)
{
    enum kf_mfg_role_type t;
    return r->domain && r->domain[0] && strlen(r->domain) <= KF_MFG_DOMAIN_MAX && r->oak_id &&
           kf_mfg_role_id_parse(r->oak_id, &t) && t == KF_MFG_ROLE_OAK && r->steel_id &&
           kf_mfg_role_id_parse(r->steel_id, &t) && t == KF_MFG_ROLE_STEEL && r->brass_id &&
           kf_mfg_role_id_parse(r->brass_id, &t) && t == KF_MFG_ROLE_BRASS && r->sign_priv &&
           r->steel_enc_pub && r->brass_enc_pub;
}

/* The fields MI3 and MI4 share (Fig. 30: NEW, O_ID, DOMAIN, S_ID, KEY_ID). */
static void common_fields(const struct kf_oak_request *r, uint32_t type, struct kf_mfg_record *rec)
{
    memset(rec, 0, sizeof(*rec));
    rec->type = type;
    rec->fields = KF_MFG_F_STATUS | KF_MFG_F_ROLE_ID | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID |
                  KF_MFG_F_KEY_ID | KF_MFG_F_SEALED_KEY | KF_MFG_F_EVENT_TIME;
    rec->status = KF_MFG_NEW;
    memcpy(rec->role_id, r->oak_id, strlen(r->oak_id) + 1);
    memcpy(rec->domain, r->domain, strlen(r->domain) + 1);
    memcpy(rec->steel_id, r->steel_id, strlen(r->steel_id) + 1);
    rec->key_id = r->key_id;
    rec->event_time = r->now;
}

static int make_records(const struct kf_oak_request *r, const uint8_t *k, kf_buf *mi3, kf_buf *mi4)
{
    struct kf_mfg_record rec;
    /* MI3: for Brass, to keep in the archive. */
    common_fields(r, KF_MFG_REC_ARCHIVE_NEW, &rec);
    KF_GUARD(
        kf_mfg_seal_key(r->brass_enc_pub, r->domain, r->key_id, r->brass_id, k, rec.sealed_key));
    KF_GUARD(kf_mfg_record_sign(&rec, r->oak_id, r->sign_priv, mi3));
    /* MI4: for the Steel, to install; the test tokens are a check value of K. */
    common_fields(r, KF_MFG_REC_DISTRIBUTE, &rec);
    rec.fields |= KF_MFG_F_TEST_TOKENS;
    KF_GUARD(
        kf_mfg_seal_key(r->steel_enc_pub, r->domain, r->key_id, r->steel_id, k, rec.sealed_key));
    KF_GUARD(kfd_test_tokens(k, rec.test_tokens));
    return kf_mfg_record_sign(&rec, r->oak_id, r->sign_priv, mi4);
}

int kf_oak_generate(const struct kf_oak_request *r, kf_buf *mi3, kf_buf *mi4)
{
    KF_ENSURE(r && mi3 && mi4 && mi3 != mi4, KF_ERR_ARG);
    KF_ENSURE(request_ok(r), KF_ERR_MFG_PARAM);
    /* MI1: a key ID Oak has seen before (or a lower one) is a replay. */
    KF_ENSURE(r->key_id > r->last_seen, KF_ERR_MFG_KEY_ID);
    uint8_t *k = kf_secmem_alloc(KF_MFG_KEY_LEN);
    KF_ENSURE(k != NULL, KF_ERR_NOMEM);
    size_t len3 = mi3->len, len4 = mi4->len;
    int rc = kf_crypto_random(k, KF_MFG_KEY_LEN);
    if (rc == KF_OK)
        rc = make_records(r, k, mi3, mi4);
    kf_secmem_free(k); /* wipes K: only the two sealed copies remain */
    if (rc < 0) {
        mi3->len = len3 < mi3->len ? len3 : mi3->len;
        mi4->len = len4 < mi4->len ? len4 : mi4->len;
    }
    return rc;
}
