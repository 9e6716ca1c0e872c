/*
 * The Steel's side of installation (docs/manufacturing.md MI5, MI7, MI10):
 * what it accepts from Oak and Brass, and the reports it signs.
 */
#include <string.h>

#include "keyfleet/mfg.h"
#include "keyfleet/secmem.h"
#include "station/steel.h"

int steel_check_mi4(const kf_station *st, const char *domain, const uint8_t *mi4, size_t len,
                    struct kf_mfg_record *rec, bool *decoded)
{
    KF_ENSURE(st && domain && mi4 && rec && decoded, KF_ERR_ARG);
    memset(rec, 0, sizeof(*rec));
    *decoded = false;
    char oak_id[KF_MFG_ROLE_ID_LEN + 1];
    uint8_t oak_pub[32];
    KF_GUARD(kf_station_domain_role(st, domain, KF_MFG_ROLE_OAK, oak_id, oak_pub, NULL));

    /* What the record claims, before anything is checked: only to name the
     * key in a refusal report. */
    struct kf_mfg_envelope env;
    size_t used = 0;
    KF_GUARD(kf_mfg_envelope_parse(mi4, len, &env, &used));
    KF_ENSURE(used == len && env.type == KF_MFG_REC_DISTRIBUTE, KF_ERR_MFG_FRAMING);
    KF_GUARD(kf_mfg_record_decode(env.body, env.body_len, KF_MFG_REC_DISTRIBUTE, rec));
    *decoded = true;

    /* Oak's signature: the signer named must be the domain's Oak, and its key verify. */
    KF_ENSURE(strcmp(env.signer, oak_id) == 0, KF_ERR_BAD_SIGNATURE);
    KF_GUARD(kf_mfg_envelope_verify(&env, oak_pub));
    KF_ENSURE(strcmp(rec->domain, domain) == 0, KF_ERR_MFG_PARAM);
    KF_ENSURE(rec->status == KF_MFG_NEW && strcmp(rec->role_id, oak_id) == 0, KF_ERR_MFG_PARAM);
    KF_ENSURE(strcmp(rec->steel_id, kf_station_role_id(st)) == 0, KF_ERR_MFG_STEEL_ID);
    uint64_t last = 0;
    KF_GUARD(kf_station_last_key_id(st, domain, &last));
    KF_ENSURE(rec->key_id > last, KF_ERR_MFG_KEY_ID);
    return KF_OK;
}

int steel_installed(const kf_station *st, const struct kf_mfg_record *mi4, const char *msn,
                    const uint8_t tokens[KF_MFG_TEST_TOKENS_LEN], int64_t event_time, kf_buf *out)
{
    KF_ENSURE(st && mi4 && msn && tokens && out, KF_ERR_ARG);
    KF_ENSURE(kf_mfg_msn_valid(msn), KF_ERR_METER_FIELD);
    struct kf_mfg_record r;
    memset(&r, 0, sizeof(r));
    r.type = KF_MFG_REC_INSTALLED;
    r.fields = KF_MFG_F_STATUS | KF_MFG_F_ROLE_ID | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID |
               KF_MFG_F_KEY_ID | KF_MFG_F_MSN | KF_MFG_F_TEST_TOKENS | KF_MFG_F_EVENT_TIME;
    r.status = KF_MFG_INSTALLED;
    memcpy(r.role_id, mi4->role_id, sizeof(r.role_id)); /* Oak's ID, as in MI4 */
    memcpy(r.domain, mi4->domain, sizeof(r.domain));
    memcpy(r.steel_id, mi4->steel_id, sizeof(r.steel_id));
    r.key_id = mi4->key_id;
    memcpy(r.msn, msn, strlen(msn) + 1);
    memcpy(r.test_tokens, tokens, KF_MFG_TEST_TOKENS_LEN);
    r.event_time = event_time;
    return kf_station_sign(st, &r, out);
}

int steel_install_failed(const kf_station *st, const char *domain, const char *steel_id,
                         uint64_t key_id, const char *msn, int reason, int64_t event_time,
                         kf_buf *out)
{
    KF_ENSURE(st && domain && steel_id && out && reason < 0, KF_ERR_ARG);
    KF_ENSURE(strlen(domain) <= KF_MFG_DOMAIN_MAX && kf_mfg_role_id_parse(steel_id, NULL),
              KF_ERR_ARG);
    struct kf_mfg_record r;
    memset(&r, 0, sizeof(r));
    r.type = KF_MFG_REC_INSTALL_FAILED;
    r.fields = KF_MFG_F_STATUS | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID | KF_MFG_F_KEY_ID |
               KF_MFG_F_REASON | KF_MFG_F_EVENT_TIME;
    r.status = KF_MFG_BAD;
    memcpy(r.domain, domain, strlen(domain) + 1);
    memcpy(r.steel_id, steel_id, KF_MFG_ROLE_ID_LEN + 1);
    r.key_id = key_id;
    if (msn) {
        KF_ENSURE(kf_mfg_msn_valid(msn), KF_ERR_METER_FIELD);
        r.fields |= KF_MFG_F_MSN;
        memcpy(r.msn, msn, strlen(msn) + 1);
    }
    r.reason = reason;
    r.event_time = event_time;
    return kf_station_sign(st, &r, out);
}

/* A record of type signed by domain's Brass, naming domain. */
static int open_brass(const kf_station *st, const char *domain, uint32_t type, const uint8_t *msg,
                      size_t len, struct kf_mfg_record *rec)
{
    char brass_id[KF_MFG_ROLE_ID_LEN + 1];
    uint8_t brass_pub[32];
    KF_GUARD(kf_station_domain_role(st, domain, KF_MFG_ROLE_BRASS, brass_id, brass_pub, NULL));
    struct kf_mfg_envelope env;
    KF_GUARD(kf_mfg_envelope_parse(msg, len, &env, NULL));
    KF_ENSURE(strcmp(env.signer, brass_id) == 0, KF_ERR_BAD_SIGNATURE);
    KF_GUARD(kf_mfg_record_open(msg, len, brass_pub, type, rec));
    KF_ENSURE(strcmp(rec->domain, domain) == 0, KF_ERR_MFG_PARAM);
    return KF_OK;
}

int steel_check_confirm(const kf_station *st, const char *domain, uint64_t key_id,
                        const uint8_t *mi10, size_t len, struct kf_mfg_record *rec)
{
    KF_ENSURE(st && domain && mi10 && rec, KF_ERR_ARG);
    KF_GUARD(open_brass(st, domain, KF_MFG_REC_CONFIRM_INSTALLED, mi10, len, rec));
    KF_ENSURE(rec->key_id == key_id, KF_ERR_MFG_PARAM);
    KF_ENSURE(rec->status == KF_MFG_INSTALLED || rec->status == KF_MFG_BAD, KF_ERR_MFG_PARAM);
    return KF_OK;
}

int steel_check_registered(const kf_station *st, const char *domain, const uint8_t *mr4, size_t len,
                           struct kf_mfg_record *rec)
{
    KF_ENSURE(st && domain && mr4 && rec, KF_ERR_ARG);
    KF_GUARD(open_brass(st, domain, KF_MFG_REC_CONFIRM_REGISTERED, mr4, len, rec));
    KF_ENSURE(rec->status == KF_MFG_ACTIVE, KF_ERR_MFG_PARAM);
    return KF_OK;
}
