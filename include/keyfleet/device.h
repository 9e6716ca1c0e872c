/*
 * libkeyfleet-device: the device side of pairwise KEK distribution and
 * device session keys (seed EP 0 948 158, DESIGN §4.1, wire format in
 * docs/pairing.md).
 *
 * Portable C11 for small devices: it depends on nettle and on the kf_buf
 * cursor and error codes (src/base) only, never on server code; its core
 * allocates nothing (the caller owns every struct and buffer); it does no
 * I/O of its own: the caller supplies secure storage, a clock, a random
 * source and, for the driver functions, a transport.
 *
 * Every protocol message is a TTLV structure (keyfleet extension tags,
 * include/keyfleet/kmip_ext.h); the ones exchanged with keyfleetd travel
 * as the payload of a KMIP extension operation, which this library wraps in
 * a minimal KMIP Request Message itself (kfd_kmip_*), so a device talks to
 * keyfleetd with no other code.
 *
 * Cryptography (all through nettle):
 *   KDF(K, label, context) = NIST SP 800-108 counter mode, PRF AES-256-CMAC,
 *       L = 256: K(1) || K(2) with K(i) = CMAC(K, [i]_32 || label || 0x00 ||
 *       context || [256]_32).
 *   MSK_X  = KDF(MKEK_X, "keyfleet pair v1", ID-X || [C_X]_64)
 *   AK_X   = KDF(MKEK_X, "keyfleet ack v1", ID-X)
 *   SKEK   = KDF(KEK, "keyfleet session v1", [kek_id]_64 || sender ID)
 *   SK confirmation key = KDF(SK, "keyfleet confirm v1", [kek_id]_64 || [seq]_64)
 *   AEAD   = AES-256-CCM (NIST SP 800-38C), 12-byte nonce carried in the
 *            header (so L = 3: up to 2^24 - 1 bytes a message), 16-byte tag
 *            appended, associated data = the exact TTLV bytes of the header
 *            structure. CCM, not GCM, for the device's RAM: it needs only the
 *            AES key schedule (280 bytes of context in nettle), where nettle's
 *            GCM context is 4,400 bytes with its GHASH table.
 *   MAC    = AES-256-CMAC (16 bytes) over the exact TTLV bytes of the body.
 *
 * RAM (docs/device.md, scripts/device-footprint.sh): struct kfd_device is
 * 1,488 bytes; the deepest call, kfd_pair_with, peaks at about 6.3 KB of stack
 * (x86-64, gcc -Os), its 3,680-byte work buffer included; every other call
 * stays under 4.2 KB.
 *
 * KEKs on a device are named by (partner, KEK ID): a server restored from a
 * backup may issue an ID again, and two partners' KEKs may share one. A
 * device keeps the KEKs of one message per partner: storing a new message's
 * KEKs for a partner supersedes (frees) every KEK held for it before, on A and
 * on B alike, so a renewal takes effect at once and never fills the slots.
 *
 * Every function returns KF_OK or a negative kf error code
 * (include/keyfleet/error_codes.h, device range -800..-829); kf_strerror()
 * gives the sentence. No function ever writes a key to anything but the
 * caller's structs and the storage callback.
 */
#ifndef KEYFLEET_DEVICE_H
#define KEYFLEET_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/error.h"

#define KFD_PROTO_VERSION 1
#define KFD_ID_MAX 64       /* device ID: 1..64 characters from A-Z a-z 0-9 . _ - */
#define KFD_KEY_LEN 32      /* MKEK, KEK, SK: AES-256 */
#define KFD_NONCE_LEN 12
#define KFD_TAG_LEN 16
#define KFD_MAC_LEN 16
#define KFD_MAX_KEKS 8      /* KEKs in one message (a KEK list, seed [0049]-[0051]) and slots held */
#define KFD_MSG_MAX 2048    /* largest protocol message or payload, in bytes */
#define KFD_STATE_MAX 2304  /* largest encoded device state (8 slots, 64-character IDs: 2208) */
#define KFD_DATA_MAX 1024   /* largest application data in one session record */

enum kfd_role { KFD_ROLE_A = 1, KFD_ROLE_B = 2 };

/* What a device says about a part it received (KeyfleetAckStatus). */
enum kfd_ack_status {
    KFD_ACK_ACCEPTED = 1,  /* KEK(s) stored; counter moved to the part's */
    KFD_ACK_STALE = 2,     /* counter not above last_counter: DeviceCounter tells the server where we are */
    KFD_ACK_INTEGRITY = 3, /* AEAD tag failed */
    KFD_ACK_WRONG_DEVICE = 4,
    KFD_ACK_MALFORMED = 5,
    KFD_ACK_EXPIRED = 6,   /* every KEK in the part is already past its not-after */
    KFD_ACK_STORAGE = 7,   /* secure storage refused the write */
    KFD_ACK_PARTNER = 8,   /* requester A only: its part was good and its counter moved, but it
                              stored no KEK because B did not accept its part (refused it, or
                              never answered): seed [0048], A takes the KEKs only after B */
};

/* One KEK held by a device, with its validity and its use counters. */
struct kfd_kek {
    bool in_use;
    uint8_t role;                    /* this device's role in the pairing: enum kfd_role */
    uint64_t kek_id;
    char partner[KFD_ID_MAX + 1];
    int64_t not_before, not_after;   /* seconds since the epoch; valid for not_before <= t < not_after */
    uint32_t max_uses, uses;         /* one use = one session key sent or accepted */
    uint64_t send_seq, recv_seq;     /* last M3 sequence number sent / accepted under this KEK */
    uint8_t key[KFD_KEY_LEN];
};

/* The device's persistent state: what its secure storage holds. */
struct kfd_state {
    char id[KFD_ID_MAX + 1];
    char domain[KFD_ID_MAX + 1];
    uint8_t mkek[KFD_KEY_LEN];
    uint64_t last_counter;           /* highest C_X accepted; never goes back */
    struct kfd_kek keks[KFD_MAX_KEKS];
};

/* The caller's environment. save must be atomic (all or nothing) and durable
 * before it returns 0: the library answers nothing before its state is saved. */
struct kfd_env {
    void *ctx;
    int (*save)(void *ctx, const uint8_t *state, size_t len);
    int64_t (*now)(void *ctx);                         /* seconds since the epoch */
    int (*random)(void *ctx, uint8_t *out, size_t n);  /* 0 on success */
};

struct kfd_device {
    struct kfd_state st;
    struct kfd_env env;
};

/* ---- Device state ---- */
KF_RESULT int kfd_id_valid(const char *id);  /* KF_OK or KF_ERR_DEVICE_ID */
/* Load from an installation package (KeyfleetDevicePackage, exported once by
 * keyfleetd): ID, domain, MKEK, counter 0, no KEKs. Saves the state. */
KF_RESULT int kfd_install(struct kfd_device *d, const struct kfd_env *env, const uint8_t *package,
                          size_t len);
/* Encode / decode the persistent state (KeyfleetDeviceState TTLV). */
KF_RESULT int kfd_state_encode(const struct kfd_state *st, kf_buf *out);
KF_RESULT int kfd_state_decode(struct kfd_state *st, const uint8_t *in, size_t len);
/* Open a device from its saved state. */
KF_RESULT int kfd_open(struct kfd_device *d, const struct kfd_env *env, const uint8_t *state,
                       size_t len);
/* Wipe every key in d. */
void kfd_close(struct kfd_device *d);

/* ---- Pairing (device side) ---- */
/* Payload of KeyfleetPairKeyRequest: {DeviceIdA = us, DeviceIdB = partner,
 * KekCount, Lifetime (0 = server default), MaxUses (0 = server default)}. */
KF_RESULT int kfd_pair_request(const struct kfd_device *d, const char *partner, uint32_t kek_count,
                               uint32_t lifetime_s, uint32_t max_uses, kf_buf *payload);
/* Split the server's response payload M into its two parts (each the full
 * TTLV bytes of one KeyfleetPairPart), A's first. Checks framing, and that
 * neither part is longer than the largest valid part (8 KEKs, 64-character
 * IDs: 992 bytes); the contents are kfd_pair_accept's to check. */
struct kfd_span { const uint8_t *p; size_t len; };
KF_RESULT int kfd_pair_split(const uint8_t *m, size_t len, struct kfd_span *part_a,
                             struct kfd_span *part_b);
/*
 * Process one part addressed to this device: check version, role and IDs,
 * counter > last_counter, AEAD under MSK, validity; store the KEK(s) and the
 * counter (save() before returning), superseding every KEK held for the same
 * partner; and always write an authenticated acknowledgement (KeyfleetPairAck)
 * into ack, whatever the verdict, so the server learns the device's counter.
 * Returns KF_OK when the KEKs were accepted, otherwise the refusal
 * (KF_ERR_PAIR_STALE, _INTEGRITY, _WRONG_DEVICE, _MALFORMED, KF_ERR_KEK_EXPIRED,
 * KF_ERR_KEK_SLOTS, KF_ERR_DEVICE_STORAGE). A part that cannot be attributed to
 * this device at all still gets an ack with status MALFORMED/WRONG_DEVICE and
 * KekId 0. This is the partner B's step (kfd_partner_answer calls it); the
 * requester A stores only after B accepted: kfd_pair_check, then
 * kfd_pair_conclude (kfd_pair_with does both).
 */
KF_RESULT int kfd_pair_accept(struct kfd_device *d, enum kfd_role role, const uint8_t *part,
                              size_t len, kf_buf *ack);
/* Requester A, before forwarding SM_B: the checks of kfd_pair_accept on its own part, nothing
 * stored, saved or written. KF_OK if SM_A passes every check (then forward SM_B), else the
 * refusal. */
KF_RESULT int kfd_pair_check(const struct kfd_device *d, const uint8_t *part, size_t len);
/*
 * Requester A, once B answered SM_B with partner_ack (NULL, 0: B never answered): checks SM_A
 * again, and B's verdict: partner_ack must be a well-formed PairAck from the partner the part
 * names, for this part's first KEK ID (or 0), whose status says accepted (its MAC is the
 * server's to check). *partner_verdict gets it (KF_OK, B's refusal, KF_ERR_PAIR_MALFORMED or
 * _WRONG_DEVICE for an answer that is no ack of this part, KF_ERR_IO for none). Then one save:
 * if B accepted, SM_A's KEKs (superseding every KEK held for B) and the counter; otherwise the
 * counter only, so the part can never be taken later, while the KEKs held before stay. Always
 * writes A's PairAck into ack: ACCEPTED, PARTNER (good part, no KEK taken) or the refusal.
 * Returns A's verdict on SM_A: KF_OK if it passed and the save succeeded (the KEKs are then
 * held if and only if *partner_verdict is KF_OK), else the refusal.
 */
KF_RESULT int kfd_pair_conclude(struct kfd_device *d, const uint8_t *part, size_t len,
                                const uint8_t *partner_ack, size_t partner_ack_len,
                                int *partner_verdict, kf_buf *ack);
/* Payload of KeyfleetPairAckReport: one or two KeyfleetPairAck items as received. */
KF_RESULT int kfd_ack_report(const struct kfd_span *acks, size_t n, kf_buf *payload);

/* ---- Session keys (seed steps 6-9) ---- */
/* The KEK this device would use now with partner: valid at now, uses < max,
 * lowest ID first (the KEKs held for a partner are one list with consecutive
 * windows). KF_ERR_KEK_UNKNOWN / _EXPIRED / _EXHAUSTED otherwise. */
KF_RESULT int kfd_kek_current(const struct kfd_device *d, const char *partner, size_t *slot);
/* Sender: fresh SK, next seq, M3 = KeyfleetSessionKey. Counts one use and
 * saves before returning. sk receives the session key. */
KF_RESULT int kfd_session_offer(struct kfd_device *d, const char *partner,
                                uint8_t sk[KFD_KEY_LEN], kf_buf *m3);
/* Receiver: check M3 (KEK known and valid, sender is the partner, seq above
 * recv_seq, AEAD), count one use, save, give SK and write the
 * KeyfleetSessionAck (key confirmation under SK) into ack. */
KF_RESULT int kfd_session_accept(struct kfd_device *d, const uint8_t *m3, size_t len,
                                 uint8_t sk[KFD_KEY_LEN], kf_buf *ack);
/* Sender: check the receiver's KeyfleetSessionAck for the offer it made. */
KF_RESULT int kfd_session_confirm(const struct kfd_device *d, const char *partner, uint64_t kek_id,
                                  uint64_t seq, const uint8_t sk[KFD_KEY_LEN], const uint8_t *ack,
                                  size_t len);

/* Application data under SK: KeyfleetSessionRecord {Seq, SealedData}, AES-256-CCM
 * with nonce [direction]_32 || [seq]_64 and AAD = the Seq item. Both devices
 * seal under the same SK, so the direction keeps their nonces apart: 1 for
 * records sent by the device that offered SK (sent M3), 2 for records sent by
 * the device that accepted it. One struct per direction: a device seals with
 * a channel of its own direction and opens with one of its peer's; a record
 * sealed in the other direction (our own, reflected back) fails the tag
 * (KF_ERR_SESSION_INTEGRITY), and the receiver refuses seq <= last. A channel
 * whose direction is neither is refused (KF_ERR_ARG). */
enum kfd_direction { KFD_DIR_OFFERER = 1, KFD_DIR_ACCEPTER = 2 };
struct kfd_channel {
    uint8_t sk[KFD_KEY_LEN];
    uint64_t seq;                    /* last sent or accepted */
    uint32_t direction;              /* enum kfd_direction of the records sealed or opened */
};
/* sk and direction in, seq 0. */
KF_RESULT int kfd_channel_init(struct kfd_channel *ch, const uint8_t sk[KFD_KEY_LEN],
                               enum kfd_direction direction);
KF_RESULT int kfd_record_seal(struct kfd_channel *ch, const uint8_t *data, size_t len,
                              kf_buf *record);
KF_RESULT int kfd_record_open(struct kfd_channel *ch, const uint8_t *record, size_t len,
                              uint8_t *data, size_t cap, size_t *data_len);

/* ---- Talking to keyfleetd: a minimal KMIP envelope ---- */
/* A KMIP 1.4 Request Message with one batch item (operation, payload bytes as
 * the Request Payload's contents). */
KF_RESULT int kfd_kmip_wrap(uint32_t operation, const uint8_t *payload, size_t len, kf_buf *msg);
/* Parse a Response Message with one batch item: on Success, *payload spans the
 * Response Payload's contents; on failure returns KF_ERR_DEVICE_SERVER and
 * sets *reason (KMIP Result Reason) and copies the Result Message into msg. */
KF_RESULT int kfd_kmip_unwrap(const uint8_t *resp, size_t len, uint32_t operation,
                              struct kfd_span *payload, uint32_t *reason, char *msg,
                              size_t msg_cap);

/* ---- Drivers: the whole flow over a caller-supplied transport ---- */
enum kfd_peer { KFD_PEER_SERVER = 1, KFD_PEER_PARTNER = 2 };
struct kfd_transport {
    void *ctx;
    /* Send req to peer and receive its one answer (a KMIP Response Message
     * from the server; a protocol message from the partner) into resp, at most
     * cap bytes. req and resp never overlap. */
    int (*exchange)(void *ctx, enum kfd_peer peer, const uint8_t *req, size_t len, uint8_t *resp,
                    size_t cap, size_t *resp_len);
};
#define KFD_SERVER_MSG_MAX 128 /* bytes of the server's Result Message kept, terminator included */
struct kfd_pair_result {
    uint64_t kek_id;                /* first KEK ID of the message */
    uint32_t kek_count;
    int own;                        /* our verdict on SM_A */
    int partner;                    /* partner's verdict on SM_B, from its ack */
    /* The key server's refusal in the last attempt, if any (else 0, 0, ""): */
    uint32_t server_operation;      /* the KMIP operation it refused (PairKeyRequest, PairAckReport) */
    uint32_t server_reason;         /* its KMIP Result Reason */
    char server_message[KFD_SERVER_MSG_MAX]; /* its Result Message, cut to fit, NUL-terminated */
};
/* Requester (A): request, check own part, forward SM_B and collect N_B, then
 * store the KEKs only if B accepted (else move the counter only: the KEKs held
 * before stay), and report both acks to the server. The KEKs are stored if
 * and only if r->own and r->partner are both KF_OK. On a stale verdict
 * (server behind after a restore) the acks resynchronise the server and the
 * request is retried, once per device, whatever the report's outcome (a
 * server that refuses the report, e.g. a replayed M's ack as
 * KF_ERR_ACK_REPLAY, still gets its retry). The result is a transport error,
 * then KF_ERR_PAIR_STALE if still stale, then the report's refusal, then the
 * verdicts. Everything travels through one 3,680-byte work buffer on the
 * stack, which also takes the state encoding handed to save()
 * (docs/device.md). */
KF_RESULT int kfd_pair_with(struct kfd_device *d, const char *partner, uint32_t kek_count,
                            uint32_t lifetime_s, uint32_t max_uses,
                            const struct kfd_transport *t, struct kfd_pair_result *r);
/* Partner (B): answer one message from the requester: a KeyfleetPairPart
 * (answer: KeyfleetPairAck) or a KeyfleetSessionKey (answer:
 * KeyfleetSessionAck). Any refusal still answers with an authenticated ack
 * where the protocol has one. */
KF_RESULT int kfd_partner_answer(struct kfd_device *d, const uint8_t *msg, size_t len,
                                 kf_buf *answer, uint8_t sk[KFD_KEY_LEN], bool *got_sk);

/* ---- Server side of the same format (linked by keyfleetd, not by devices) ---- */
struct kfd_issue_kek {
    uint64_t kek_id;
    int64_t not_before, not_after;
    uint32_t max_uses;
};
/* Build SM_X for device id (role) under mkek with counter: KEK material
 * keks[i] (32 bytes each) and metadata meta[i], i < count. nonce supplied by
 * the caller (fresh random). */
KF_RESULT int kfd_issue_part(const uint8_t mkek[KFD_KEY_LEN], enum kfd_role role, const char *id_a,
                             const char *id_b, uint64_t counter, const struct kfd_issue_kek *meta,
                             const uint8_t (*keks)[KFD_KEY_LEN], uint32_t count,
                             const uint8_t nonce[KFD_NONCE_LEN], kf_buf *part);
/* Decoded acknowledgement, before and after its MAC is checked. */
struct kfd_ack {
    char device[KFD_ID_MAX + 1];
    uint64_t kek_id;                 /* 0 if the part could not be attributed */
    uint64_t part_counter;           /* C_X in the part that was acknowledged */
    uint64_t device_counter;         /* the device's last_counter after processing */
    uint32_t status;                 /* enum kfd_ack_status */
    struct kfd_span body;            /* the MAC'd bytes */
    uint8_t mac[KFD_MAC_LEN];
};
KF_RESULT int kfd_ack_decode(const uint8_t *ack, size_t len, struct kfd_ack *out);
/* KF_OK if out->mac is right for the device's MKEK, else KF_ERR_PAIR_INTEGRITY. */
KF_RESULT int kfd_ack_verify(const struct kfd_ack *a, const uint8_t mkek[KFD_KEY_LEN]);

/* ---- Building blocks (exposed for tests) ---- */
KF_RESULT int kfd_kdf(const uint8_t key[KFD_KEY_LEN], const char *label, const uint8_t *context,
                      size_t context_len, uint8_t out[KFD_KEY_LEN]);

#endif
