/*
 * Shared by the station tests (test_station.c, test_station_steel.c,
 * test_station_line.c): a fake manufacturing domain (M, O and B keys) and the
 * role certificates a station is given at enrolment, signed as keyfleetd's
 * authority would. Include after <cmocka.h>; each program uses a subset.
 */
#ifndef KF_TEST_STATION_FIXTURE_H
#define KF_TEST_STATION_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/mfg.h"

#ifndef KF_TEST_UNUSED
#define KF_TEST_UNUSED __attribute__((unused))
#endif

#define KF_TEST_CERT_TIME 1767225600 /* 2026-01-01, the certificates' event time */

/* A fake domain: M, O, B signing keys and B's encryption key. */
struct domain {
    const char *name;
    uint8_t m_priv[32], m_pub[32];
    uint8_t o_priv[32], o_pub[32];
    uint8_t b_priv[32], b_pub[32], b_enc_pub[32];
};

static KF_TEST_UNUSED void domain_init(struct domain *d, const char *name)
{
    d->name = name;
    assert_int_equal(kf_crypto_random(d->m_priv, 32), KF_OK);
    assert_int_equal(kf_crypto_random(d->o_priv, 32), KF_OK);
    assert_int_equal(kf_crypto_random(d->b_priv, 32), KF_OK);
    assert_int_equal(kf_ed25519_public(d->m_priv, d->m_pub), KF_OK);
    assert_int_equal(kf_ed25519_public(d->o_priv, d->o_pub), KF_OK);
    assert_int_equal(kf_ed25519_public(d->b_priv, d->b_pub), KF_OK);
    uint8_t x[32];
    assert_int_equal(kf_crypto_random(x, 32), KF_OK);
    assert_int_equal(kf_x25519_public(x, d->b_enc_pub), KF_OK);
}

/* Append to out a role certificate for id (enc_pub may be NULL), signed by signer. */
static KF_TEST_UNUSED void add_cert(kf_buf *out, const char *domain, const char *id,
                                    enum kf_mfg_role_type type, const uint8_t sign_pub[32],
                                    const uint8_t *enc_pub, const char *signer,
                                    const uint8_t signer_priv[32])
{
    struct kf_mfg_record r = {0};
    r.type = KF_MFG_REC_ROLE_CERT;
    r.fields = KF_MFG_F_ROLE_ID | KF_MFG_F_ROLE_TYPE | KF_MFG_F_DOMAIN | KF_MFG_F_SIGN_PUB |
               KF_MFG_F_EVENT_TIME;
    snprintf(r.role_id, sizeof(r.role_id), "%s", id);
    r.role_type = type;
    snprintf(r.domain, sizeof(r.domain), "%s", domain);
    memcpy(r.sign_pub, sign_pub, 32);
    if (enc_pub) {
        r.fields |= KF_MFG_F_ENC_PUB;
        memcpy(r.enc_pub, enc_pub, 32);
    }
    r.event_time = KF_TEST_CERT_TIME;
    assert_int_equal(kf_mfg_record_sign(&r, signer, signer_priv, out), KF_OK);
}

/* The same, signed by the domain's authority M00000001. */
static KF_TEST_UNUSED void add_m_cert(kf_buf *out, const char *domain, const char *id,
                                      enum kf_mfg_role_type type, const uint8_t sign_pub[32],
                                      const uint8_t *enc_pub, const uint8_t m_priv[32])
{
    add_cert(out, domain, id, type, sign_pub, enc_pub, "M00000001", m_priv);
}

#endif
