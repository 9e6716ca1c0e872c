/* What the files of libkeyfleet-device share among themselves. */
#ifndef KFD_INTERNAL_H
#define KFD_INTERNAL_H

#include "device/keys.h"
#include "device/wire.h"
#include "keyfleet/device.h"
#include "keyfleet/kmip_tags.h"

#define KFD_NOINLINE __attribute__((noinline))

/* Largest PairAck and PairPart, every item at its limit (a part: 8 KEKs, 64-character IDs;
 * test_device.c checks it against the largest part kfd_issue_part writes). */
#define KFD_ACK_MAX (2 * KFD_ITEM_HEAD + 16 + KFD_ITEM_HEAD + KFD_ID_MAX + 4 * 16 + 24)
#define KFD_PART_MAX                                                                               \
    (2 * KFD_ITEM_HEAD + 3 * 16 + 2 * (KFD_ITEM_HEAD + KFD_ID_MAX) + 2 * 16 +                      \
     (KFD_ITEM_HEAD + 16) + KFD_MAX_KEKS * (KFD_ITEM_HEAD + 3 * 16) + KFD_ITEM_HEAD +              \
     KFD_MAX_KEKS * KFD_KEY_LEN + KFD_TAG_LEN)

/* Acknowledgement of one part, written and MAC'd under AK of (mkek, id). */
struct kfd_ack_fields {
    uint64_t kek_id, part_counter, device_counter;
    uint32_t status;
};
KF_RESULT int kfd_ack_write(const uint8_t mkek[KFD_KEY_LEN], const char *id,
                            const struct kfd_ack_fields *f, kf_buf *ack);

/* The refusal an ack status stands for (KF_OK for ACCEPTED), and back. */
int kfd_ack_status_error(uint32_t status);
uint32_t kfd_error_ack_status(int err);

/* Encode st and hand it to env.save; KF_ERR_DEVICE_STORAGE if it refuses. The encoding
 * (KFD_STATE_MAX bytes) is on the stack for the call. */
KF_RESULT int kfd_save(const struct kfd_env *env, const struct kfd_state *st);

/*
 * A change to the state that is saved before it is made, so a refusal changes nothing and no
 * copy of the state is needed: the counter, and for each slot whether it keeps its KEK
 * (KFD_SLOT_KEEP, 0), is emptied (KFD_SLOT_CLEAR) or takes KEK n of a part (KFD_SLOT_NEW + n).
 */
enum { KFD_SLOT_KEEP = 0, KFD_SLOT_CLEAR = 1, KFD_SLOT_NEW = 2 };
struct kfd_new_keks {
    uint8_t role; /* enum kfd_role: ours in the pairing */
    const char *partner;
    const struct kfd_issue_kek *validity; /* [n]: ID, window, use limit */
    const uint8_t (*keys)[KFD_KEY_LEN];   /* [n] */
};
struct kfd_change {
    uint64_t last_counter;
    uint8_t slot[KFD_MAX_KEKS];
    const struct kfd_new_keks *keks;
};
/* Encode d's state with c made into work (cap >= KFD_STATE_MAX; work NULL: a buffer on the
 * stack), hand it to env.save, wipe it, and make c in d only if save returned 0. */
KF_RESULT int kfd_commit(struct kfd_device *d, const struct kfd_change *c, uint8_t *work,
                         size_t cap);

/* Validity of a held KEK at now (KF_OK, KF_ERR_KEK_EXPIRED or _EXHAUSTED). */
KF_RESULT int kfd_kek_usable(const struct kfd_kek *k, int64_t now);

/* kfd_pair_accept with a work buffer for the state encoding (cap >= KFD_STATE_MAX; see
 * kfd_commit). work may overlap part: part is not read again once its KEKs are decrypted,
 * which is before anything is written to work. ack must not overlap either. */
KF_RESULT int kfd_pair_accept_in(struct kfd_device *d, enum kfd_role role, const uint8_t *part,
                                 size_t len, kf_buf *ack, uint8_t *work, size_t cap);

/* kfd_pair_conclude with a work buffer for the state encoding, as kfd_pair_accept_in (work
 * NULL: a buffer on the stack). partner_ack must not overlap work or ack. */
KF_RESULT int kfd_pair_conclude_in(struct kfd_device *d, const uint8_t *part, size_t len,
                                   const uint8_t *partner_ack, size_t partner_ack_len,
                                   int *partner_verdict, kf_buf *ack, uint8_t *work, size_t cap);

/* B's verdict on its part, from its answer to SM_B (ack NULL: none, KF_ERR_IO): the answer
 * must be a PairAck from the partner that part (A's part) names, for its first KEK ID or 0;
 * then what its status says. */
KF_RESULT int kfd_partner_verdict(const uint8_t *part, size_t len, const uint8_t *ack,
                                  size_t ack_len);

/* First KEK ID and count of a well-framed PairPart (its AEAD unchecked). */
KF_RESULT int kfd_part_ids(const uint8_t *part, size_t len, uint64_t *kek_id, uint32_t *count);

#endif
