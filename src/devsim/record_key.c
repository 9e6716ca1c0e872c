/*
 * Per-direction record keys of the simulated link. kfd_channel's nonce is
 * [0]32 || [seq]64 with no direction in it, so if meter and base both sealed
 * under SK, record 1 of each direction would reuse a GCM nonce under one key
 * (fatal for GCM). Each direction therefore seals under its own key derived
 * from SK with the sender's ID as context.
 */
#include <string.h>

#include "devsim/devsim.h"
#include "keyfleet/device.h"
#include "keyfleet/secmem.h"

int ds_record_key(const uint8_t sk[32], const char *sender_id, uint8_t out[32])
{
    KF_ENSURE(sk && sender_id && out, KF_ERR_ARG);
    KF_GUARD(kfd_id_valid(sender_id));
    return kfd_kdf(sk, "keyfleet-sim record v1", (const uint8_t *)sender_id, strlen(sender_id),
                   out);
}

int ds_channels_open(struct ds_channels *c, const uint8_t sk[KFD_KEY_LEN], const char *self,
                     const char *peer)
{
    KF_ENSURE(c && sk && self && peer, KF_ERR_ARG);
    memset(c, 0, sizeof(*c));
    int rc = ds_record_key(sk, self, c->tx.sk);
    if (rc == KF_OK)
        rc = ds_record_key(sk, peer, c->rx.sk);
    if (rc != KF_OK) {
        ds_channels_close(c);
        return rc;
    }
    c->ready = true;
    return KF_OK;
}

void ds_channels_close(struct ds_channels *c)
{
    if (c)
        kf_wipe(c, sizeof(*c));
}
