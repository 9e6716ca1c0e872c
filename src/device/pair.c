/*
 * The device's side of a pairing: asking for KEKs, splitting the server's
 * answer M = SM_A || SM_B, and accepting the part addressed to us with the
 * checks of docs/pairing.md in their order (framing, addressee, counter,
 * AEAD, validity), then storing and acknowledging.
 */
#include <string.h>

#include "device/internal.h"

/* A PairPart as read off the wire, before its AEAD is checked. */
struct part {
    uint32_t version, count, role;
    uint64_t kek_id, counter;
    char id_a[KFD_ID_MAX + 1], id_b[KFD_ID_MAX + 1];
    uint8_t nonce[KFD_NONCE_LEN];
    struct kfd_issue_kek validity[KFD_MAX_KEKS];
    struct kfd_span header; /* associated data: the PairHeader's bytes */
    struct kfd_span sealed;
};

int kfd_pair_request(const struct kfd_device *d, const char *partner, uint32_t kek_count,
                     uint32_t lifetime_s, uint32_t max_uses, kf_buf *payload)
{
    KF_ENSURE(d && payload, KF_ERR_ARG);
    KF_GUARD(kfd_id_valid(partner));
    KF_ENSURE(strcmp(partner, d->st.id) != 0, KF_ERR_ARG);
    KF_ENSURE(kek_count <= KFD_MAX_KEKS, KF_ERR_ARG);
    size_t start = payload->len;
    int rc = kfd_put_text(payload, KMIP_TAG_KEYFLEET_DEVICE_ID_A, d->st.id);
    if (rc == KF_OK)
        rc = kfd_put_text(payload, KMIP_TAG_KEYFLEET_DEVICE_ID_B, partner);
    /* Zero asks for the server's default, which an absent item says. */
    if (rc == KF_OK && kek_count)
        rc = kfd_put_u32(payload, KMIP_TAG_KEYFLEET_KEK_COUNT, kek_count);
    if (rc == KF_OK && lifetime_s)
        rc = kfd_put_u32(payload, KMIP_TAG_KEYFLEET_LIFETIME, lifetime_s);
    if (rc == KF_OK && max_uses)
        rc = kfd_put_u32(payload, KMIP_TAG_KEYFLEET_MAX_USES, max_uses);
    if (rc != KF_OK)
        payload->len = start;
    return rc;
}

int kfd_pair_split(const uint8_t *m, size_t len, struct kfd_span *part_a, struct kfd_span *part_b)
{
    KF_ENSURE(m && part_a && part_b, KF_ERR_ARG);
    KF_ENSURE(len <= KFD_MSG_MAX, KF_ERR_PAIR_MALFORMED);
    kf_buf in, inner;
    kf_buf_reader(&in, m, len);
    KF_GUARD(kfd_get_open(&in, KMIP_TAG_KEYFLEET_PAIR_PART, &inner, part_a));
    KF_GUARD(kfd_get_open(&in, KMIP_TAG_KEYFLEET_PAIR_PART, &inner, part_b));
    KF_GUARD(kfd_get_end(&in));
    /* No valid part is larger (8 KEKs, 64-character IDs); the driver's buffer counts on it. */
    KF_ENSURE(part_a->len <= KFD_PART_MAX && part_b->len <= KFD_PART_MAX, KF_ERR_PAIR_MALFORMED);
    return KF_OK;
}

static int get_validity(kf_buf *header, struct kfd_issue_kek *v)
{
    kf_buf in;
    KF_GUARD(kfd_get_open(header, KMIP_TAG_KEYFLEET_KEK_VALIDITY, &in, NULL));
    KF_GUARD(kfd_get_i64(&in, KMIP_TAG_KEYFLEET_NOT_BEFORE, &v->not_before));
    KF_GUARD(kfd_get_i64(&in, KMIP_TAG_KEYFLEET_NOT_AFTER, &v->not_after));
    KF_GUARD(kfd_get_u32(&in, KMIP_TAG_KEYFLEET_MAX_USES, &v->max_uses));
    KF_ENSURE(v->not_before < v->not_after && v->max_uses >= 1, KF_ERR_PAIR_MALFORMED);
    return kfd_get_end(&in);
}

static int get_header(kf_buf *part, struct part *p)
{
    kf_buf in;
    KF_GUARD(kfd_get_open(part, KMIP_TAG_KEYFLEET_PAIR_HEADER, &in, &p->header));
    KF_GUARD(kfd_get_u32(&in, KMIP_TAG_KEYFLEET_PROTO_VERSION, &p->version));
    KF_GUARD(kfd_get_u64(&in, KMIP_TAG_KEYFLEET_KEK_ID, &p->kek_id));
    KF_GUARD(kfd_get_u32(&in, KMIP_TAG_KEYFLEET_KEK_COUNT, &p->count));
    KF_ENSURE(p->count >= 1 && p->count <= KFD_MAX_KEKS, KF_ERR_PAIR_MALFORMED);
    KF_ENSURE(p->kek_id >= 1 && p->kek_id <= UINT64_MAX - p->count, KF_ERR_PAIR_MALFORMED);
    KF_GUARD(kfd_get_id(&in, KMIP_TAG_KEYFLEET_DEVICE_ID_A, p->id_a));
    KF_GUARD(kfd_get_id(&in, KMIP_TAG_KEYFLEET_DEVICE_ID_B, p->id_b));
    KF_GUARD(kfd_get_u32(&in, KMIP_TAG_KEYFLEET_PAIR_ROLE, &p->role));
    KF_GUARD(kfd_get_u64(&in, KMIP_TAG_KEYFLEET_COUNTER, &p->counter));
    KF_GUARD(kfd_get_key(&in, KMIP_TAG_KEYFLEET_NONCE, p->nonce, KFD_NONCE_LEN));
    for (uint32_t i = 0; i < p->count; i++) {
        KF_GUARD(get_validity(&in, &p->validity[i]));
        p->validity[i].kek_id = p->kek_id + i;
    }
    return kfd_get_end(&in);
}

/* Check 1: framing and limits. */
static int part_decode(const uint8_t *bytes, size_t len, struct part *p)
{
    KF_ENSURE(bytes && len <= KFD_MSG_MAX, KF_ERR_PAIR_MALFORMED);
    kf_buf in, part;
    kf_buf_reader(&in, bytes, len);
    KF_GUARD(kfd_get_open(&in, KMIP_TAG_KEYFLEET_PAIR_PART, &part, NULL));
    KF_GUARD(kfd_get_end(&in));
    KF_GUARD(get_header(&part, p));
    KF_GUARD(kfd_get_bytes(&part, KMIP_TAG_KEYFLEET_SEALED_DATA, &p->sealed));
    KF_ENSURE(p->sealed.len == p->count * KFD_KEY_LEN + KFD_TAG_LEN, KF_ERR_PAIR_MALFORMED);
    return kfd_get_end(&part);
}

static const char *partner_of(const struct part *p, enum kfd_role role)
{
    return role == KFD_ROLE_A ? p->id_b : p->id_a;
}

/* Check 2: version, and the part is for the role we play and names us in it. */
static int check_addressee(const struct kfd_device *d, enum kfd_role role, const struct part *p)
{
    const char *ours = role == KFD_ROLE_A ? p->id_a : p->id_b;
    KF_ENSURE(p->version == KFD_PROTO_VERSION, KF_ERR_PAIR_WRONG_DEVICE);
    KF_ENSURE(p->role == (uint32_t)role, KF_ERR_PAIR_WRONG_DEVICE);
    KF_ENSURE(strcmp(ours, d->st.id) == 0, KF_ERR_PAIR_WRONG_DEVICE);
    KF_ENSURE(strcmp(partner_of(p, role), d->st.id) != 0, KF_ERR_PAIR_WRONG_DEVICE);
    return KF_OK;
}

/* Check 3: the counter moves forward (a replayed or older M is refused). */
static int check_fresh(const struct kfd_device *d, const struct part *p)
{
    KF_ENSURE(p->counter > d->st.last_counter, KF_ERR_PAIR_STALE);
    return KF_OK;
}

/* Check 4: AEAD under MSK = KDF(MKEK, "keyfleet pair v1", ID || [C]_64). */
static KFD_NOINLINE int open_keks(const struct kfd_device *d, const struct part *p,
                                  uint8_t keks[KFD_MAX_KEKS][KFD_KEY_LEN])
{
    uint8_t msk[KFD_KEY_LEN];
    KF_GUARD(kfd_msk(d->st.mkek, d->st.id, p->counter, msk));
    int rc = kfd_aead_open(msk, p->nonce, p->header.p, p->header.len, p->sealed.p, p->sealed.len,
                           keks[0]);
    kfd_wipe(msk, sizeof(msk));
    return rc == KF_OK ? KF_OK : KF_ERR_PAIR_INTEGRITY;
}

/* Check 5: at least one KEK of the list is not yet past its not-after. */
static int check_live(const struct part *p, int64_t now)
{
    for (uint32_t i = 0; i < p->count; i++)
        if (p->validity[i].not_after > now)
            return KF_OK;
    return KF_ERR_KEK_EXPIRED;
}

/* Checks 1-5 in their order. f gets what the ack says of the part; keks its KEKs if they
 * were decrypted (the caller wipes them in any case). part is read for the last time here. */
static int check_part(const struct kfd_device *d, enum kfd_role role, const uint8_t *part,
                      size_t len, struct part *p, uint8_t keks[KFD_MAX_KEKS][KFD_KEY_LEN],
                      struct kfd_ack_fields *f)
{
    memset(f, 0, sizeof(*f));
    KF_GUARD(part_decode(part, len, p));
    KF_GUARD(check_addressee(d, role, p));
    f->kek_id = p->kek_id;
    f->part_counter = p->counter;
    KF_GUARD(check_fresh(d, p));
    KF_GUARD(open_keks(d, p, keks));
    return check_live(p, d->env.now(d->env.ctx));
}

/* A slot whose KEK can no longer be used (or that holds none). */
static bool slot_dead(const struct kfd_kek *k, int64_t now)
{
    return !k->in_use || now >= k->not_after || k->uses >= k->max_uses;
}

/* Where a new KEK goes: a slot that is free or superseded by this change, else one whose KEK
 * can no longer be used. Slots that already take a new KEK of this part are not free. */
static int pick_slot(const struct kfd_state *st, const struct kfd_change *c, int64_t now,
                     size_t *slot)
{
    for (size_t i = 0; i < KFD_MAX_KEKS; i++)
        if (c->slot[i] == KFD_SLOT_CLEAR || (c->slot[i] == KFD_SLOT_KEEP && !st->keks[i].in_use))
            return *slot = i, KF_OK;
    for (size_t i = 0; i < KFD_MAX_KEKS; i++)
        if (c->slot[i] == KFD_SLOT_KEEP && slot_dead(&st->keks[i], now))
            return *slot = i, KF_OK;
    return KF_ERR_KEK_SLOTS;
}

/*
 * Store the live KEKs and the counter in one save; d changes only if it succeeds. Every KEK
 * held for this partner came from an earlier message (a message is taken once: its counter
 * moves on), so the new list supersedes them all: their slots are freed in the same save.
 * That is also what keeps a KEK's identity, (partner, KEK ID), unique when a restored server
 * issues an ID again.
 */
static KFD_NOINLINE int store_keks(struct kfd_device *d, enum kfd_role role, const struct part *p,
                                   const uint8_t keks[KFD_MAX_KEKS][KFD_KEY_LEN], uint8_t *work,
                                   size_t cap)
{
    const struct kfd_new_keks list = {(uint8_t)role, partner_of(p, role), p->validity,
                                      (const uint8_t(*)[KFD_KEY_LEN])keks};
    struct kfd_change c = {.last_counter = p->counter, .keks = &list};
    int64_t now = d->env.now(d->env.ctx);
    for (size_t i = 0; i < KFD_MAX_KEKS; i++)
        if (d->st.keks[i].in_use && strcmp(d->st.keks[i].partner, list.partner) == 0)
            c.slot[i] = KFD_SLOT_CLEAR;
    for (uint32_t i = 0; i < p->count; i++) {
        size_t slot;
        if (p->validity[i].not_after <= now)
            continue;
        KF_GUARD(pick_slot(&d->st, &c, now, &slot));
        c.slot[slot] = (uint8_t)(KFD_SLOT_NEW + i);
    }
    return kfd_commit(d, &c, work, cap);
}

/* The counter alone (A's part was good, B did not take its own): the KEKs held stay. */
static int store_counter(struct kfd_device *d, const struct part *p, uint8_t *work, size_t cap)
{
    struct kfd_change c = {.last_counter = p->counter, .keks = NULL};
    return kfd_commit(d, &c, work, cap);
}

enum take { TAKE_KEKS, TAKE_COUNTER };

/* The checks, then what to keep (one save), then the ack of whatever the verdict. */
static int accept_part(struct kfd_device *d, enum kfd_role role, const uint8_t *part, size_t len,
                       enum take take, kf_buf *ack, uint8_t *work, size_t cap)
{
    KF_ENSURE(d && ack && d->env.now && d->env.save, KF_ERR_ARG);
    KF_ENSURE(role == KFD_ROLE_A || role == KFD_ROLE_B, KF_ERR_ARG);
    /* Room for the ack first: a verdict is never reached that cannot be acknowledged. */
    KF_GUARD(kf_buf_reserve(ack, KFD_ACK_MAX));
    struct part p;
    struct kfd_ack_fields f;
    uint8_t keks[KFD_MAX_KEKS][KFD_KEY_LEN];
    /* part is read for the last time when its KEKs are decrypted (kfd_pair_accept_in may
     * write over it after that): everything needed later is in p. */
    int verdict = check_part(d, role, part, len, &p, keks, &f);
    if (verdict == KF_OK)
        verdict = take == TAKE_KEKS ? store_keks(d, role, &p, (const uint8_t(*)[KFD_KEY_LEN])keks,
                                                 work, cap)
                                    : store_counter(d, &p, work, cap);
    kfd_wipe(keks, sizeof(keks));
    f.device_counter = d->st.last_counter;
    f.status = verdict == KF_OK && take == TAKE_COUNTER ? KFD_ACK_PARTNER
                                                        : kfd_error_ack_status(verdict);
    KF_GUARD(kfd_ack_write(d->st.mkek, d->st.id, &f, ack));
    return verdict;
}

int kfd_pair_accept(struct kfd_device *d, enum kfd_role role, const uint8_t *part, size_t len,
                    kf_buf *ack)
{
    return accept_part(d, role, part, len, TAKE_KEKS, ack, NULL, 0);
}

int kfd_pair_accept_in(struct kfd_device *d, enum kfd_role role, const uint8_t *part, size_t len,
                       kf_buf *ack, uint8_t *work, size_t cap)
{
    KF_ENSURE(work && cap >= KFD_STATE_MAX, KF_ERR_ARG);
    return accept_part(d, role, part, len, TAKE_KEKS, ack, work, cap);
}

int kfd_pair_check(const struct kfd_device *d, const uint8_t *part, size_t len)
{
    KF_ENSURE(d && d->env.now, KF_ERR_ARG);
    struct part p;
    struct kfd_ack_fields f;
    uint8_t keks[KFD_MAX_KEKS][KFD_KEY_LEN];
    int rc = check_part(d, KFD_ROLE_A, part, len, &p, keks, &f);
    kfd_wipe(keks, sizeof(keks));
    return rc;
}

int kfd_partner_verdict(const uint8_t *part, size_t len, const uint8_t *ack, size_t ack_len)
{
    struct part p;
    struct kfd_ack a;
    KF_ENSURE(ack, KF_ERR_IO); /* no answer */
    KF_GUARD(kfd_ack_decode(ack, ack_len, &a));
    KF_GUARD(part_decode(part, len, &p));
    /* B's ack must be B's, of this part (KekId 0: B could not attribute it, so it cannot
     * have taken it either). */
    KF_ENSURE(strcmp(a.device, p.id_b) == 0, KF_ERR_PAIR_WRONG_DEVICE);
    KF_ENSURE(a.kek_id == p.kek_id || (a.kek_id == 0 && a.status != KFD_ACK_ACCEPTED),
              KF_ERR_PAIR_MALFORMED);
    return kfd_ack_status_error(a.status);
}

int kfd_pair_conclude_in(struct kfd_device *d, const uint8_t *part, size_t len,
                         const uint8_t *partner_ack, size_t partner_ack_len, int *partner_verdict,
                         kf_buf *ack, uint8_t *work, size_t cap)
{
    KF_ENSURE(partner_verdict && (partner_ack || partner_ack_len == 0), KF_ERR_ARG);
    KF_ENSURE(!work || cap >= KFD_STATE_MAX, KF_ERR_ARG);
    *partner_verdict = kfd_partner_verdict(part, len, partner_ack, partner_ack_len);
    return accept_part(d, KFD_ROLE_A, part, len,
                       *partner_verdict == KF_OK ? TAKE_KEKS : TAKE_COUNTER, ack, work, cap);
}

int kfd_pair_conclude(struct kfd_device *d, const uint8_t *part, size_t len,
                      const uint8_t *partner_ack, size_t partner_ack_len, int *partner_verdict,
                      kf_buf *ack)
{
    return kfd_pair_conclude_in(d, part, len, partner_ack, partner_ack_len, partner_verdict, ack,
                                NULL, 0);
}

int kfd_part_ids(const uint8_t *part, size_t len, uint64_t *kek_id, uint32_t *count)
{
    struct part p;
    KF_GUARD(part_decode(part, len, &p));
    *kek_id = p.kek_id;
    *count = p.count;
    return KF_OK;
}
