/*
 * The device's persistent state (KeyfleetDeviceState), its installation
 * package (KeyfleetDevicePackage), and the one way state reaches storage:
 * kfd_save, called before any answer leaves the device.
 */
#include <string.h>

#include "device/internal.h"

static int put_slot(kf_buf *out, const struct kfd_kek *k)
{
    size_t slot;
    KF_GUARD(kfd_put_open(out, KMIP_TAG_KEYFLEET_KEK_SLOT, &slot));
    KF_GUARD(kfd_put_u64(out, KMIP_TAG_KEYFLEET_KEK_ID, k->kek_id));
    KF_GUARD(kfd_put_text(out, KMIP_TAG_KEYFLEET_DEVICE_ID, k->partner));
    KF_GUARD(kfd_put_u32(out, KMIP_TAG_KEYFLEET_PAIR_ROLE, k->role));
    KF_GUARD(kfd_put_u64(out, KMIP_TAG_KEYFLEET_NOT_BEFORE, (uint64_t)k->not_before));
    KF_GUARD(kfd_put_u64(out, KMIP_TAG_KEYFLEET_NOT_AFTER, (uint64_t)k->not_after));
    KF_GUARD(kfd_put_u32(out, KMIP_TAG_KEYFLEET_MAX_USES, k->max_uses));
    KF_GUARD(kfd_put_u32(out, KMIP_TAG_KEYFLEET_USES, k->uses));
    KF_GUARD(kfd_put_u64(out, KMIP_TAG_KEYFLEET_SEND_SEQ, k->send_seq));
    KF_GUARD(kfd_put_u64(out, KMIP_TAG_KEYFLEET_RECV_SEQ, k->recv_seq));
    KF_GUARD(kfd_put_bytes(out, KMIP_TAG_KEYFLEET_KEY_BYTES, k->key, KFD_KEY_LEN));
    return kfd_put_close(out, slot);
}

/* The KEK a change puts in a slot: new KEK n of a part, with no uses yet. */
static void fill_slot(struct kfd_kek *k, const struct kfd_new_keks *src, size_t n)
{
    kfd_wipe(k, sizeof(*k));
    k->in_use = true;
    k->role = src->role;
    k->kek_id = src->validity[n].kek_id;
    memcpy(k->partner, src->partner, strlen(src->partner) + 1);
    k->not_before = src->validity[n].not_before;
    k->not_after = src->validity[n].not_after;
    k->max_uses = src->validity[n].max_uses;
    memcpy(k->key, src->keys[n], KFD_KEY_LEN);
}

/* Slot i of st as it will be once c is made (c NULL: as it is). */
static int put_slot_changed(kf_buf *out, const struct kfd_state *st, const struct kfd_change *c,
                            size_t i)
{
    uint8_t what = c ? c->slot[i] : KFD_SLOT_KEEP;
    if (what == KFD_SLOT_KEEP)
        return st->keks[i].in_use ? put_slot(out, &st->keks[i]) : KF_OK;
    if (what == KFD_SLOT_CLEAR)
        return KF_OK;
    struct kfd_kek k;
    fill_slot(&k, c->keks, what - KFD_SLOT_NEW);
    int rc = put_slot(out, &k);
    kfd_wipe(&k, sizeof(k));
    return rc;
}

static int put_state(kf_buf *out, const struct kfd_state *st, const struct kfd_change *c)
{
    size_t outer;
    KF_GUARD(kfd_put_open(out, KMIP_TAG_KEYFLEET_DEVICE_STATE, &outer));
    KF_GUARD(kfd_put_u32(out, KMIP_TAG_KEYFLEET_PROTO_VERSION, KFD_PROTO_VERSION));
    KF_GUARD(kfd_put_text(out, KMIP_TAG_KEYFLEET_DEVICE_ID, st->id));
    KF_GUARD(kfd_put_text(out, KMIP_TAG_KEYFLEET_DOMAIN, st->domain));
    KF_GUARD(kfd_put_bytes(out, KMIP_TAG_KEYFLEET_MASTER_KEY, st->mkek, KFD_KEY_LEN));
    KF_GUARD(kfd_put_u64(out, KMIP_TAG_KEYFLEET_COUNTER, c ? c->last_counter : st->last_counter));
    for (size_t i = 0; i < KFD_MAX_KEKS; i++)
        KF_GUARD(put_slot_changed(out, st, c, i));
    return kfd_put_close(out, outer);
}

static int encode_changed(const struct kfd_state *st, const struct kfd_change *c, kf_buf *out)
{
    size_t start = out->len;
    int rc = put_state(out, st, c);
    if (rc != KF_OK) {
        /* What was written holds the master key: wipe it before forgetting it. */
        kfd_wipe(out->data + start, out->len - start);
        out->len = start;
    }
    return rc;
}

int kfd_state_encode(const struct kfd_state *st, kf_buf *out)
{
    KF_ENSURE(st && out, KF_ERR_ARG);
    return encode_changed(st, NULL, out);
}

/* A slot as stored must make sense: a role, a window, uses within the limit. */
static int check_slot(const struct kfd_state *st, size_t n)
{
    const struct kfd_kek *k = &st->keks[n];
    KF_ENSURE(k->role == KFD_ROLE_A || k->role == KFD_ROLE_B, KF_ERR_DEVICE_STATE);
    KF_ENSURE(k->kek_id >= 1 && k->not_before < k->not_after, KF_ERR_DEVICE_STATE);
    KF_ENSURE(k->max_uses >= 1 && k->uses <= k->max_uses, KF_ERR_DEVICE_STATE);
    KF_ENSURE(strcmp(k->partner, st->id) != 0, KF_ERR_DEVICE_STATE);
    /* A KEK is (partner, KEK ID): the same ID may come from two partners' messages. */
    for (size_t i = 0; i < n; i++)
        KF_ENSURE(st->keks[i].kek_id != k->kek_id || strcmp(st->keks[i].partner, k->partner) != 0,
                  KF_ERR_DEVICE_STATE);
    return KF_OK;
}

static int get_slot(kf_buf *in, struct kfd_kek *k)
{
    kf_buf slot;
    uint32_t role;
    KF_GUARD(kfd_get_open(in, KMIP_TAG_KEYFLEET_KEK_SLOT, &slot, NULL));
    KF_GUARD(kfd_get_u64(&slot, KMIP_TAG_KEYFLEET_KEK_ID, &k->kek_id));
    KF_GUARD(kfd_get_id(&slot, KMIP_TAG_KEYFLEET_DEVICE_ID, k->partner));
    KF_GUARD(kfd_get_u32(&slot, KMIP_TAG_KEYFLEET_PAIR_ROLE, &role));
    k->role = role <= UINT8_MAX ? (uint8_t)role : 0;
    KF_GUARD(kfd_get_i64(&slot, KMIP_TAG_KEYFLEET_NOT_BEFORE, &k->not_before));
    KF_GUARD(kfd_get_i64(&slot, KMIP_TAG_KEYFLEET_NOT_AFTER, &k->not_after));
    KF_GUARD(kfd_get_u32(&slot, KMIP_TAG_KEYFLEET_MAX_USES, &k->max_uses));
    KF_GUARD(kfd_get_u32(&slot, KMIP_TAG_KEYFLEET_USES, &k->uses));
    KF_GUARD(kfd_get_u64(&slot, KMIP_TAG_KEYFLEET_SEND_SEQ, &k->send_seq));
    KF_GUARD(kfd_get_u64(&slot, KMIP_TAG_KEYFLEET_RECV_SEQ, &k->recv_seq));
    KF_GUARD(kfd_get_key(&slot, KMIP_TAG_KEYFLEET_KEY_BYTES, k->key, KFD_KEY_LEN));
    k->in_use = true;
    return kfd_get_end(&slot);
}

static int get_state(kf_buf *in, struct kfd_state *st)
{
    kf_buf state;
    uint32_t version;
    KF_GUARD(kfd_get_open(in, KMIP_TAG_KEYFLEET_DEVICE_STATE, &state, NULL));
    KF_GUARD(kfd_get_end(in));
    KF_GUARD(kfd_get_u32(&state, KMIP_TAG_KEYFLEET_PROTO_VERSION, &version));
    KF_ENSURE(version == KFD_PROTO_VERSION, KF_ERR_DEVICE_STATE);
    KF_GUARD(kfd_get_id(&state, KMIP_TAG_KEYFLEET_DEVICE_ID, st->id));
    KF_GUARD(kfd_get_id(&state, KMIP_TAG_KEYFLEET_DOMAIN, st->domain));
    KF_GUARD(kfd_get_key(&state, KMIP_TAG_KEYFLEET_MASTER_KEY, st->mkek, KFD_KEY_LEN));
    KF_GUARD(kfd_get_u64(&state, KMIP_TAG_KEYFLEET_COUNTER, &st->last_counter));
    for (size_t n = 0; kfd_next_is(&state, KMIP_TAG_KEYFLEET_KEK_SLOT); n++) {
        KF_ENSURE(n < KFD_MAX_KEKS, KF_ERR_DEVICE_STATE);
        KF_GUARD(get_slot(&state, &st->keks[n]));
        KF_GUARD(check_slot(st, n));
    }
    return kfd_get_end(&state);
}

int kfd_state_decode(struct kfd_state *st, const uint8_t *in, size_t len)
{
    KF_ENSURE(st && in, KF_ERR_ARG);
    kfd_wipe(st, sizeof(*st));
    KF_ENSURE(len <= KFD_STATE_MAX, KF_ERR_DEVICE_STATE);
    kf_buf r;
    kf_buf_reader(&r, in, len);
    int rc = get_state(&r, st);
    if (rc != KF_OK) {
        kfd_wipe(st, sizeof(*st));
        /* A framing error in a state blob is a bad state, not a bad message. */
        return rc == KF_ERR_PAIR_MALFORMED ? KF_ERR_DEVICE_STATE : rc;
    }
    return KF_OK;
}

/* Encode st (with c applied, if any) into buf and hand it to save; the encoding, which holds
 * every key, is wiped before returning. */
static int save_in(const struct kfd_env *env, const struct kfd_state *st,
                   const struct kfd_change *c, uint8_t *buf, size_t cap)
{
    kf_buf out;
    kf_buf_fixed(&out, buf, cap);
    int rc = encode_changed(st, c, &out);
    if (rc == KF_OK && env->save(env->ctx, buf, out.len) != 0)
        rc = KF_ERR_DEVICE_STORAGE;
    kfd_wipe(buf, out.len);
    return rc;
}

/* The same with the encoding on the stack: its KFD_STATE_MAX bytes exist only during this call
 * (never while a caller's work buffer would have done). */
static KFD_NOINLINE int save_on_stack(const struct kfd_env *env, const struct kfd_state *st,
                                      const struct kfd_change *c)
{
    uint8_t blob[KFD_STATE_MAX];
    return save_in(env, st, c, blob, sizeof(blob));
}

int kfd_save(const struct kfd_env *env, const struct kfd_state *st)
{
    return save_on_stack(env, st, NULL);
}

int kfd_commit(struct kfd_device *d, const struct kfd_change *c, uint8_t *work, size_t cap)
{
    KF_ENSURE(!work || cap >= KFD_STATE_MAX, KF_ERR_ARG);
    int rc = work ? save_in(&d->env, &d->st, c, work, cap) : save_on_stack(&d->env, &d->st, c);
    if (rc != KF_OK)
        return rc; /* nothing in memory changes */
    for (size_t i = 0; i < KFD_MAX_KEKS; i++) {
        if (c->slot[i] == KFD_SLOT_CLEAR)
            kfd_wipe(&d->st.keks[i], sizeof(d->st.keks[i]));
        else if (c->slot[i] >= KFD_SLOT_NEW)
            fill_slot(&d->st.keks[i], c->keks, c->slot[i] - KFD_SLOT_NEW);
    }
    d->st.last_counter = c->last_counter;
    return KF_OK;
}

static int env_complete(const struct kfd_env *env)
{
    KF_ENSURE(env && env->save && env->now && env->random, KF_ERR_ARG);
    return KF_OK;
}

static int get_package(kf_buf *in, struct kfd_state *st)
{
    kf_buf package;
    uint32_t version;
    KF_GUARD(kfd_get_open(in, KMIP_TAG_KEYFLEET_DEVICE_PACKAGE, &package, NULL));
    KF_GUARD(kfd_get_end(in));
    KF_GUARD(kfd_get_u32(&package, KMIP_TAG_KEYFLEET_PROTO_VERSION, &version));
    KF_ENSURE(version == KFD_PROTO_VERSION, KF_ERR_PAIR_MALFORMED);
    KF_GUARD(kfd_get_id(&package, KMIP_TAG_KEYFLEET_DEVICE_ID, st->id));
    KF_GUARD(kfd_get_id(&package, KMIP_TAG_KEYFLEET_DOMAIN, st->domain));
    KF_GUARD(kfd_get_key(&package, KMIP_TAG_KEYFLEET_MASTER_KEY, st->mkek, KFD_KEY_LEN));
    return kfd_get_end(&package);
}

int kfd_install(struct kfd_device *d, const struct kfd_env *env, const uint8_t *package, size_t len)
{
    KF_ENSURE(d && package, KF_ERR_ARG);
    KF_GUARD(env_complete(env));
    kfd_wipe(d, sizeof(*d));
    KF_ENSURE(len <= KFD_MSG_MAX, KF_ERR_PAIR_MALFORMED);
    kf_buf in;
    kf_buf_reader(&in, package, len);
    int rc = get_package(&in, &d->st);
    if (rc == KF_OK)
        rc = kfd_save(env, &d->st);
    if (rc != KF_OK) {
        kfd_wipe(d, sizeof(*d));
        return rc;
    }
    d->env = *env;
    return KF_OK;
}

int kfd_open(struct kfd_device *d, const struct kfd_env *env, const uint8_t *state, size_t len)
{
    KF_ENSURE(d, KF_ERR_ARG);
    KF_GUARD(env_complete(env));
    KF_GUARD(kfd_state_decode(&d->st, state, len));
    d->env = *env;
    return KF_OK;
}

void kfd_close(struct kfd_device *d)
{
    if (d)
        kfd_wipe(d, sizeof(*d));
}

int kfd_kek_usable(const struct kfd_kek *k, int64_t now)
{
    KF_ENSURE(now >= k->not_before && now < k->not_after, KF_ERR_KEK_EXPIRED);
    KF_ENSURE(k->uses < k->max_uses, KF_ERR_KEK_EXHAUSTED);
    return KF_OK;
}

int kfd_kek_current(const struct kfd_device *d, const char *partner, size_t *slot)
{
    KF_ENSURE(d && partner && slot && d->env.now, KF_ERR_ARG);
    int64_t now = d->env.now(d->env.ctx);
    int verdict = KF_ERR_KEK_UNKNOWN;
    size_t best = KFD_MAX_KEKS;
    for (size_t i = 0; i < KFD_MAX_KEKS; i++) {
        const struct kfd_kek *k = &d->st.keks[i];
        if (!k->in_use || strcmp(k->partner, partner) != 0)
            continue;
        int rc = kfd_kek_usable(k, now);
        if (rc != KF_OK) {
            /* Say why the partner's KEKs are unusable: exhausted beats expired beats unknown. */
            if (verdict != KF_ERR_KEK_EXHAUSTED)
                verdict = rc;
            continue;
        }
        if (best == KFD_MAX_KEKS || k->kek_id < d->st.keks[best].kek_id)
            best = i;
    }
    KF_ENSURE(best < KFD_MAX_KEKS, verdict);
    *slot = best;
    return KF_OK;
}
