/*
 * One entry of a TokenKeys record's table (116 bytes, docs/manufacturing.md):
 *   msn(16, left-aligned, space padded) || [key id]_64 || [period]_32 ||
 *   [registered at]_64 || TK sealed to the Tin (80)
 */
#include <string.h>

#include "keyfleet/mfg.h"
#include "mfg/internal.h"

void kf_mfg_token_key_entry_put(const struct kf_mfg_token_key_entry *e,
                                uint8_t out[KF_MFG_TOKEN_KEY_ENTRY_LEN])
{
    uint8_t msn[KF_MFG_MSN_MAX];
    memset(msn, ' ', sizeof(msn));
    memcpy(msn, e->msn, strnlen(e->msn, KF_MFG_MSN_MAX));
    kf_buf w;
    kf_buf_fixed(&w, out, KF_MFG_TOKEN_KEY_ENTRY_LEN);
    /* 116 bytes into 116: none of these can run out of room */
    (void)!kf_buf_put_bytes(&w, msn, sizeof(msn));
    (void)!kf_buf_put_u64(&w, e->key_id);
    (void)!kf_buf_put_u32(&w, e->period);
    (void)!kf_buf_put_u64(&w, (uint64_t)e->registered_at);
    (void)!kf_buf_put_bytes(&w, e->sealed, KF_MFG_SEALED_LEN);
}

int kf_mfg_token_key_entry_get(const uint8_t in[KF_MFG_TOKEN_KEY_ENTRY_LEN],
                               struct kf_mfg_token_key_entry *e)
{
    KF_ENSURE(in && e, KF_ERR_ARG);
    memset(e, 0, sizeof(*e));
    kf_buf r;
    uint64_t registered_at;
    kf_buf_reader(&r, in, KF_MFG_TOKEN_KEY_ENTRY_LEN);
    int rc = kf_buf_get_bytes(&r, (uint8_t *)e->msn, KF_MFG_MSN_MAX);
    if (rc == KF_OK)
        rc = kf_buf_get_u64(&r, &e->key_id);
    if (rc == KF_OK)
        rc = kf_buf_get_u32(&r, &e->period);
    if (rc == KF_OK)
        rc = kf_buf_get_u64(&r, &registered_at);
    if (rc == KF_OK)
        rc = kf_buf_get_bytes(&r, e->sealed, KF_MFG_SEALED_LEN);
    /* trim the padding; what is left must be an MSN (so no inner space, no NUL) */
    size_t n = KF_MFG_MSN_MAX;
    while (n > 0 && e->msn[n - 1] == ' ')
        n--;
    e->msn[n] = '\0';
    if (rc != KF_OK || strlen(e->msn) != n || !kf_mfg_msn_valid(e->msn) || e->key_id < 1 ||
        e->key_id > (uint64_t)INT64_MAX || !mfg_period_valid(e->period)) {
        memset(e, 0, sizeof(*e));
        return KF_ERR_MFG_FRAMING;
    }
    e->registered_at = (int64_t)registered_at;
    return KF_OK;
}
