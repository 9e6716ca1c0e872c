/*
 * The domain authority M (docs/manufacturing.md "Roles, IDs and their
 * keys"; seed Fig. 22/23): it certifies the roles of its domain with RoleCert
 * records, and its signing key signs nothing else. A certificate binds a role
 * ID (and so its type) to its public keys within one domain: every receiver
 * checks records against the certificates of the record's own domain.
 */
#include <string.h>

#include "oak.h"

/* Which role types carry an X25519 key: the ones keys are sealed to. */
static bool takes_enc(enum kf_mfg_role_type t)
{
    return t == KF_MFG_ROLE_BRASS || t == KF_MFG_ROLE_STEEL || t == KF_MFG_ROLE_TIN;
}

int kf_authority_certify(const char *domain, const char *authority_id,
                         const uint8_t authority_priv[32], const char *role_id,
                         const uint8_t sign_pub[32], const uint8_t *enc_pub, int64_t now,
                         kf_buf *cert)
{
    KF_ENSURE(authority_priv && sign_pub && cert, KF_ERR_ARG);
    enum kf_mfg_role_type at, t;
    KF_ENSURE(domain && domain[0] && strlen(domain) <= KF_MFG_DOMAIN_MAX, KF_ERR_MFG_PARAM);
    KF_ENSURE(authority_id && kf_mfg_role_id_parse(authority_id, &at) &&
                  at == KF_MFG_ROLE_AUTHORITY,
              KF_ERR_MFG_PARAM);
    KF_ENSURE(role_id && kf_mfg_role_id_parse(role_id, &t), KF_ERR_MFG_PARAM);
    /* Only M itself is of type M in its domain. */
    KF_ENSURE(t != KF_MFG_ROLE_AUTHORITY || strcmp(role_id, authority_id) == 0, KF_ERR_MFG_ROLE);
    KF_ENSURE(takes_enc(t) == (enc_pub != NULL), KF_ERR_MFG_ROLE);
    struct kf_mfg_record rec;
    memset(&rec, 0, sizeof(rec));
    rec.type = KF_MFG_REC_ROLE_CERT;
    rec.fields = KF_MFG_F_ROLE_ID | KF_MFG_F_ROLE_TYPE | KF_MFG_F_DOMAIN | KF_MFG_F_SIGN_PUB |
                 KF_MFG_F_EVENT_TIME | (enc_pub ? KF_MFG_F_ENC_PUB : 0);
    memcpy(rec.role_id, role_id, strlen(role_id) + 1);
    rec.role_type = (uint32_t)t;
    memcpy(rec.domain, domain, strlen(domain) + 1);
    memcpy(rec.sign_pub, sign_pub, 32);
    if (enc_pub)
        memcpy(rec.enc_pub, enc_pub, 32);
    rec.event_time = now;
    size_t before = cert->len;
    int rc = kf_mfg_record_sign(&rec, authority_id, authority_priv, cert);
    if (rc < 0 && cert->len > before)
        cert->len = before;
    return rc;
}
