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

/* A slot whose KEK can no longer be used (or that holds none). */
static bool slot_dead(const struct kfd_kek *k, int64_t now)
{
    return !k->in_use || now >= k->not_after || k->uses >= k->max_uses;
}

/* A KEK for the same partner from an earlier list: a newer list supersedes it. */
static bool slot_superseded(const struct kfd_kek *k, const char *partner, uint64_t first_new)
{
    return k->in_use && k->kek_id < first_new && strcmp(k->partner, partner) == 0;
}

/* Where a new KEK goes: a free slot, else one whose KEK can no longer be
 * used, else the oldest KEK held for the same partner from an earlier list.
 * Slots that already take a new KEK of this part are not free. */
static int pick_slot(const struct kfd_state *st, const uint8_t taken[KFD_MAX_KEKS],
                     const char *partner, uint64_t first_new, int64_t now, size_t *slot)
{
    for (size_t i = 0; i < KFD_MAX_KEKS; i++)
        if (!taken[i] && !st->keks[i].in_use)
            return *slot = i, KF_OK;
    for (size_t i = 0; i < KFD_MAX_KEKS; i++)
        if (!taken[i] && slot_dead(&st->keks[i], now))
            return *slot = i, KF_OK;
    size_t oldest = KFD_MAX_KEKS;
    for (size_t i = 0; i < KFD_MAX_KEKS; i++)
        if (!taken[i] && slot_superseded(&st->keks[i], partner, first_new) &&
            (oldest == KFD_MAX_KEKS || st->keks[i].kek_id < st->keks[oldest].kek_id))
            oldest = i;
    KF_ENSURE(oldest < KFD_MAX_KEKS, KF_ERR_KEK_SLOTS);
    *slot = oldest;
    return KF_OK;
}

/* Store the live KEKs and the counter in one save; d changes only if it succeeds. */
static KFD_NOINLINE int store_keks(struct kfd_device *d, enum kfd_role role, const struct part *p,
                                   const uint8_t keks[KFD_MAX_KEKS][KFD_KEY_LEN], int64_t now,
                                   uint8_t *work, size_t cap)
{
    const struct kfd_new_keks list = {(uint8_t)role, partner_of(p, role), p->validity,
                                      (const uint8_t(*)[KFD_KEY_LEN])keks};
    struct kfd_change c = {.last_counter = p->counter, .keks = &list};
    for (uint32_t i = 0; i < p->count; i++) {
        size_t slot;
        if (p->validity[i].not_after <= now)
            continue;
        KF_GUARD(pick_slot(&d->st, c.slot, list.partner, p->kek_id, now, &slot));
        c.slot[slot] = (uint8_t)(KFD_SLOT_NEW + i);
    }
    return kfd_commit(d, &c, work, cap);
}

/* Checks 4 and 5, then storage. */
static int take_keks(struct kfd_device *d, enum kfd_role role, const struct part *p, uint8_t *work,
                     size_t cap)
{
    uint8_t keks[KFD_MAX_KEKS][KFD_KEY_LEN];
    int rc = open_keks(d, p, keks);
    if (rc == KF_OK) {
        int64_t now = d->env.now(d->env.ctx);
        rc = check_live(p, now);
        if (rc == KF_OK)
            rc = store_keks(d, role, p, keks, now, work, cap);
    }
    kfd_wipe(keks, sizeof(keks));
    return rc;
}

static int accept_part(struct kfd_device *d, enum kfd_role role, const uint8_t *part, size_t len,
                       kf_buf *ack, uint8_t *work, size_t cap)
{
    KF_ENSURE(d && ack && d->env.now && d->env.save, KF_ERR_ARG);
    KF_ENSURE(role == KFD_ROLE_A || role == KFD_ROLE_B, KF_ERR_ARG);
    /* Room for the ack first: a verdict is never reached that cannot be acknowledged. */
    KF_GUARD(kf_buf_reserve(ack, KFD_ACK_MAX));
    struct part p;
    struct kfd_ack_fields f = {0, 0, 0, 0};
    int verdict = part_decode(part, len, &p);
    if (verdict == KF_OK)
        verdict = check_addressee(d, role, &p);
    if (verdict == KF_OK) {
        f.kek_id = p.kek_id;
        f.part_counter = p.counter;
        verdict = check_fresh(d, &p);
    }
    /* part is read for the last time when its KEKs are decrypted (kfd_pair_accept_in may
     * write over it after that): everything needed later is in p. */
    if (verdict == KF_OK)
        verdict = take_keks(d, role, &p, work, cap);
    f.device_counter = d->st.last_counter;
    f.status = kfd_error_ack_status(verdict);
    KF_GUARD(kfd_ack_write(d->st.mkek, d->st.id, &f, ack));
    return verdict;
}

int kfd_pair_accept(struct kfd_device *d, enum kfd_role role, const uint8_t *part, size_t len,
                    kf_buf *ack)
{
    return accept_part(d, role, part, len, ack, NULL, 0);
}

int kfd_pair_accept_in(struct kfd_device *d, enum kfd_role role, const uint8_t *part, size_t len,
                       kf_buf *ack, uint8_t *work, size_t cap)
{
    KF_ENSURE(work && cap >= KFD_STATE_MAX, KF_ERR_ARG);
    return accept_part(d, role, part, len, ack, work, cap);
}

int kfd_part_ids(const uint8_t *part, size_t len, uint64_t *kek_id, uint32_t *count)
{
    struct part p;
    KF_GUARD(part_decode(part, len, &p));
    *kek_id = p.kek_id;
    *count = p.count;
    return KF_OK;
}
