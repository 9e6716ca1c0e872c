/*
 * The postage device (docs/manufacturing.md): its persistent state
 * (KeyfleetMeterState), key installation with the test-token evidence
 * (MI5/MI6), registration (MR1, KeyfleetRegistration) and printing. Every
 * change is handed to the caller's store callback before anything that
 * depends on it leaves the device, and is undone in memory if the store
 * refuses it.
 *
 * KeyfleetMeterState (Structure)
 *   ProtoVersion = 1, Msn,
 *   [Country, Indicia, Date]   all three once registered, none before
 *   PieceCount                 last piece printed (at most 2^32 - 1)
 *   MeterSlot {Domain, KeyId, KeyBytes}, 0..KFD_METER_DOMAINS, distinct domains
 *
 * KeyfleetRegistration (Structure)
 *   Msn, Indicia, Country, Date, then 1..KFD_METER_DOMAINS
 *   RegistrationMac {Domain, KeyId, Mac(16)}, distinct domains
 */
#include <string.h>

#include "device/internal.h"
#include "device/meter_internal.h"

#define KFD_METER_STATE_VERSION 1

static bool registered(const struct kfd_meter *m)
{
    return m->country[0] != '\0';
}

/* The slot holding domain's key, or -1. */
static int slot_of(const struct kfd_meter *m, const char *domain)
{
    for (int i = 0; i < KFD_METER_DOMAINS; i++)
        if (m->slot[i].used && strcmp(m->slot[i].domain, domain) == 0)
            return i;
    return -1;
}

/* ---- state ---- */

static int put_state(kf_buf *out, const struct kfd_meter *m)
{
    size_t outer, slot;
    KF_GUARD(kfd_put_open(out, KMIP_TAG_KEYFLEET_METER_STATE, &outer));
    KF_GUARD(kfd_put_u32(out, KMIP_TAG_KEYFLEET_PROTO_VERSION, KFD_METER_STATE_VERSION));
    KF_GUARD(kfd_put_text(out, KMIP_TAG_KEYFLEET_MSN, m->msn));
    if (registered(m)) {
        KF_GUARD(kfd_put_text(out, KMIP_TAG_KEYFLEET_COUNTRY, m->country));
        KF_GUARD(kfd_put_text(out, KMIP_TAG_KEYFLEET_INDICIA, m->indicia));
        KF_GUARD(kfd_put_u64(out, KMIP_TAG_KEYFLEET_DATE, (uint64_t)m->registered_at));
    }
    KF_GUARD(kfd_put_u64(out, KMIP_TAG_KEYFLEET_PIECE_COUNT, m->piece_count));
    for (size_t i = 0; i < KFD_METER_DOMAINS; i++) {
        const struct kfd_meter_slot *s = &m->slot[i];
        if (!s->used)
            continue;
        KF_GUARD(kfd_put_open(out, KMIP_TAG_KEYFLEET_METER_SLOT, &slot));
        KF_GUARD(kfd_put_text(out, KMIP_TAG_KEYFLEET_DOMAIN, s->domain));
        KF_GUARD(kfd_put_u64(out, KMIP_TAG_KEYFLEET_KEY_ID, s->key_id));
        KF_GUARD(kfd_put_bytes(out, KMIP_TAG_KEYFLEET_KEY_BYTES, s->key, KFD_METER_KEY_LEN));
        KF_GUARD(kfd_put_close(out, slot));
    }
    return kfd_put_close(out, outer);
}

int kfd_meter_encode(const struct kfd_meter *m, kf_buf *out)
{
    KF_ENSURE(m && out, KF_ERR_ARG);
    size_t start = out->len;
    int rc = put_state(out, m);
    if (rc != KF_OK && out->len > start) {
        /* What was written holds keys: wipe it before forgetting it. */
        kfd_wipe(out->data + start, out->len - start);
        out->len = start;
    }
    return rc;
}

/* Hand m's encoding to the store; the encoding, which holds every key, lives on the stack for
 * this call only and is wiped. */
static KFD_NOINLINE int persist(const struct kfd_meter *m)
{
    uint8_t blob[KFD_METER_STATE_MAX];
    kf_buf out;
    kf_buf_fixed(&out, blob, sizeof(blob));
    int rc = put_state(&out, m);
    if (rc == KF_OK && m->store(m->store_ctx, blob, out.len) != 0)
        rc = KF_ERR_DEVICE_STORAGE;
    kfd_wipe(blob, out.len);
    return rc;
}

/* A TextString of the A-Z 0-9 '-' alphabet, 1..max characters, into out (max + 1 bytes). */
static int get_field(kf_buf *in, uint32_t tag, char *out, size_t max)
{
    struct kfd_span v;
    KF_GUARD(kfd_get_text(in, tag, &v));
    KF_ENSURE(v.len >= 1 && v.len <= max && kfd_meter_chars_valid((const char *)v.p, v.len),
              KF_ERR_PAIR_MALFORMED);
    memcpy(out, v.p, v.len);
    out[v.len] = '\0';
    return KF_OK;
}

static int get_country(kf_buf *in, char out[3])
{
    struct kfd_span v;
    KF_GUARD(kfd_get_text(in, KMIP_TAG_KEYFLEET_COUNTRY, &v));
    KF_ENSURE(v.len == 2, KF_ERR_PAIR_MALFORMED);
    memcpy(out, v.p, 2);
    out[2] = '\0';
    KF_ENSURE(kfd_meter_country_valid(out), KF_ERR_PAIR_MALFORMED);
    return KF_OK;
}

static int get_slot(kf_buf *in, struct kfd_meter_slot *s)
{
    kf_buf slot;
    KF_GUARD(kfd_get_open(in, KMIP_TAG_KEYFLEET_METER_SLOT, &slot, NULL));
    KF_GUARD(kfd_get_id(&slot, KMIP_TAG_KEYFLEET_DOMAIN, s->domain));
    KF_GUARD(kfd_get_u64(&slot, KMIP_TAG_KEYFLEET_KEY_ID, &s->key_id));
    KF_ENSURE(s->key_id >= 1, KF_ERR_DEVICE_STATE);
    KF_GUARD(kfd_get_key(&slot, KMIP_TAG_KEYFLEET_KEY_BYTES, s->key, KFD_METER_KEY_LEN));
    s->used = true;
    return kfd_get_end(&slot);
}

static int get_state(kf_buf *in, struct kfd_meter *m)
{
    kf_buf st;
    uint32_t version;
    KF_GUARD(kfd_get_open(in, KMIP_TAG_KEYFLEET_METER_STATE, &st, NULL));
    KF_GUARD(kfd_get_end(in));
    KF_GUARD(kfd_get_u32(&st, KMIP_TAG_KEYFLEET_PROTO_VERSION, &version));
    KF_ENSURE(version == KFD_METER_STATE_VERSION, KF_ERR_DEVICE_STATE);
    KF_GUARD(get_field(&st, KMIP_TAG_KEYFLEET_MSN, m->msn, KFD_METER_MSN_MAX));
    if (kfd_next_is(&st, KMIP_TAG_KEYFLEET_COUNTRY)) {
        KF_GUARD(get_country(&st, m->country));
        KF_GUARD(get_field(&st, KMIP_TAG_KEYFLEET_INDICIA, m->indicia, KFD_METER_INDICIA_MAX));
        KF_GUARD(kfd_get_i64(&st, KMIP_TAG_KEYFLEET_DATE, &m->registered_at));
        KF_ENSURE(kfd_meter_time_valid(m->registered_at), KF_ERR_DEVICE_STATE);
    }
    KF_GUARD(kfd_get_u64(&st, KMIP_TAG_KEYFLEET_PIECE_COUNT, &m->piece_count));
    /* Pieces are printed only once registered, and counted in 32 bits. */
    KF_ENSURE(m->piece_count <= UINT32_MAX && (registered(m) || m->piece_count == 0),
              KF_ERR_DEVICE_STATE);
    for (size_t n = 0; kfd_next_is(&st, KMIP_TAG_KEYFLEET_METER_SLOT); n++) {
        KF_ENSURE(n < KFD_METER_DOMAINS, KF_ERR_DEVICE_STATE);
        KF_GUARD(get_slot(&st, &m->slot[n]));
        for (size_t i = 0; i < n; i++)
            KF_ENSURE(strcmp(m->slot[i].domain, m->slot[n].domain) != 0, KF_ERR_DEVICE_STATE);
    }
    return kfd_get_end(&st);
}

int kfd_meter_load(struct kfd_meter *m, const uint8_t *state, size_t len, kfd_meter_store_fn store,
                   void *store_ctx)
{
    KF_ENSURE(m && state && store, KF_ERR_ARG);
    kfd_wipe(m, sizeof(*m));
    KF_ENSURE(len <= KFD_METER_STATE_MAX, KF_ERR_DEVICE_STATE);
    kf_buf r;
    kf_buf_reader(&r, state, len);
    if (get_state(&r, m) != KF_OK) {
        kfd_wipe(m, sizeof(*m));
        return KF_ERR_DEVICE_STATE; /* whatever the flaw, the saved state is bad */
    }
    m->store = store;
    m->store_ctx = store_ctx;
    return KF_OK;
}

int kfd_meter_init(struct kfd_meter *m, const char *msn, kfd_meter_store_fn store, void *store_ctx)
{
    KF_ENSURE(m && store, KF_ERR_ARG);
    kfd_wipe(m, sizeof(*m));
    KF_ENSURE(kfd_meter_field_valid(msn, KFD_METER_MSN_MAX), KF_ERR_METER_FIELD);
    memcpy(m->msn, msn, strlen(msn) + 1);
    m->store = store;
    m->store_ctx = store_ctx;
    return KF_OK;
}

void kfd_meter_wipe(struct kfd_meter *m)
{
    if (m)
        kfd_wipe(m, sizeof(*m));
}

/* ---- MI5/MI6: installation ---- */

int kfd_meter_install(struct kfd_meter *m, const char *domain, uint64_t key_id,
                      const uint8_t key[KFD_METER_KEY_LEN],
                      uint8_t test_tokens[KFD_TEST_TOKENS_LEN])
{
    KF_ENSURE(m && m->store && key && test_tokens && key_id >= 1, KF_ERR_ARG);
    KF_ENSURE(kfd_id_valid(domain) == KF_OK, KF_ERR_NAME);
    KF_ENSURE(slot_of(m, domain) < 0, KF_ERR_METER_INSTALLED);
    size_t free_slot = 0;
    while (free_slot < KFD_METER_DOMAINS && m->slot[free_slot].used)
        free_slot++;
    KF_ENSURE(free_slot < KFD_METER_DOMAINS, KF_ERR_LIMIT);
    struct kfd_meter_slot *s = &m->slot[free_slot];
    s->used = true;
    memcpy(s->domain, domain, strlen(domain) + 1);
    s->key_id = key_id;
    memcpy(s->key, key, KFD_METER_KEY_LEN);
    int rc = persist(m);
    if (rc != KF_OK) {
        kfd_wipe(s, sizeof(*s)); /* nothing installed */
        return rc;
    }
    /* The evidence comes from the key as stored, not as handed in. */
    return kfd_test_tokens(s->key, test_tokens);
}

/* ---- MR1: registration ---- */

static int put_registration(kf_buf *out, const struct kfd_registration *r)
{
    size_t outer, item;
    KF_GUARD(kfd_put_open(out, KMIP_TAG_KEYFLEET_REGISTRATION, &outer));
    KF_GUARD(kfd_put_text(out, KMIP_TAG_KEYFLEET_MSN, r->msn));
    KF_GUARD(kfd_put_text(out, KMIP_TAG_KEYFLEET_INDICIA, r->indicia));
    KF_GUARD(kfd_put_text(out, KMIP_TAG_KEYFLEET_COUNTRY, r->country));
    KF_GUARD(kfd_put_u64(out, KMIP_TAG_KEYFLEET_DATE, (uint64_t)r->date));
    for (size_t i = 0; i < r->nmacs; i++) {
        KF_GUARD(kfd_put_open(out, KMIP_TAG_KEYFLEET_REGISTRATION_MAC, &item));
        KF_GUARD(kfd_put_text(out, KMIP_TAG_KEYFLEET_DOMAIN, r->mac[i].domain));
        KF_GUARD(kfd_put_u64(out, KMIP_TAG_KEYFLEET_KEY_ID, r->mac[i].key_id));
        KF_GUARD(kfd_put_bytes(out, KMIP_TAG_KEYFLEET_MAC, r->mac[i].mac, sizeof(r->mac[i].mac)));
        KF_GUARD(kfd_put_close(out, item));
    }
    return kfd_put_close(out, outer);
}

/* Which slot an earth device renames (-1: none). earth and country are both NULL or both
 * domain names; after an earlier registration renamed the slot, there is nothing left to do. */
static int earth_slot(const struct kfd_meter *m, const char *earth, const char *country,
                      int *rename)
{
    *rename = -1;
    KF_ENSURE((earth == NULL) == (country == NULL), KF_ERR_ARG);
    if (!earth)
        return KF_OK;
    KF_ENSURE(kfd_id_valid(earth) == KF_OK && kfd_id_valid(country) == KF_OK, KF_ERR_NAME);
    KF_ENSURE(strcmp(earth, country) != 0, KF_ERR_ARG);
    int e = slot_of(m, earth), c = slot_of(m, country);
    if (e < 0) {
        KF_ENSURE(c >= 0, KF_ERR_METER_NO_KEY);
        return KF_OK;
    }
    KF_ENSURE(c < 0, KF_ERR_METER_INSTALLED); /* the country's key is held already */
    *rename = e;
    return KF_OK;
}

int kfd_meter_register(struct kfd_meter *m, const char *country, const char *indicia, int64_t date,
                       const char *earth_domain, const char *country_domain, kf_buf *mr1)
{
    KF_ENSURE(m && m->store && country && indicia && mr1, KF_ERR_ARG);
    KF_ENSURE(kfd_meter_country_valid(country) &&
                  kfd_meter_field_valid(indicia, KFD_METER_INDICIA_MAX) &&
                  kfd_meter_time_valid(date),
              KF_ERR_METER_FIELD);
    KF_ENSURE(!registered(m) || strcmp(m->country, country) == 0, KF_ERR_METER_COUNTRY);
    int rename;
    KF_GUARD(earth_slot(m, earth_domain, country_domain, &rename));

    /* MR1, with each MAC naming its slot's domain and key ID as they are now. */
    struct kfd_registration r;
    memset(&r, 0, sizeof(r));
    memcpy(r.msn, m->msn, sizeof(r.msn));
    memcpy(r.indicia, indicia, strlen(indicia) + 1);
    memcpy(r.country, country, 3);
    r.date = date;
    for (size_t i = 0; i < KFD_METER_DOMAINS; i++) {
        const struct kfd_meter_slot *s = &m->slot[i];
        if (!s->used)
            continue;
        memcpy(r.mac[r.nmacs].domain, s->domain, sizeof(s->domain));
        r.mac[r.nmacs].key_id = s->key_id;
        KF_GUARD(kfd_registration_mac(s->key, &r, s->domain, s->key_id, r.mac[r.nmacs].mac));
        r.nmacs++;
    }
    KF_ENSURE(r.nmacs >= 1, KF_ERR_METER_NO_KEY);
    uint8_t blob[KFD_REGISTRATION_MAX];
    kf_buf enc;
    kf_buf_fixed(&enc, blob, sizeof(blob));
    KF_GUARD(put_registration(&enc, &r));
    /* Room for MR1 first: once the state is stored, writing it cannot fail. */
    KF_GUARD(kf_buf_reserve(mr1, enc.len));

    char old_country[sizeof(m->country)], old_indicia[sizeof(m->indicia)];
    char old_domain[KFD_METER_DOMAIN_MAX + 1];
    int64_t old_date = m->registered_at;
    memcpy(old_country, m->country, sizeof(old_country));
    memcpy(old_indicia, m->indicia, sizeof(old_indicia));
    memcpy(m->country, country, 3);
    memset(m->indicia, 0, sizeof(m->indicia));
    memcpy(m->indicia, indicia, strlen(indicia));
    m->registered_at = date;
    if (rename >= 0) {
        memcpy(old_domain, m->slot[rename].domain, sizeof(old_domain));
        memset(m->slot[rename].domain, 0, sizeof(m->slot[rename].domain));
        memcpy(m->slot[rename].domain, country_domain, strlen(country_domain));
    }
    int rc = persist(m);
    if (rc != KF_OK) {
        memcpy(m->country, old_country, sizeof(old_country));
        memcpy(m->indicia, old_indicia, sizeof(old_indicia));
        m->registered_at = old_date;
        if (rename >= 0)
            memcpy(m->slot[rename].domain, old_domain, sizeof(old_domain));
        return rc;
    }
    return kf_buf_put_bytes(mr1, blob, enc.len);
}

static int get_registration(kf_buf *in, struct kfd_registration *r)
{
    kf_buf reg, item;
    KF_GUARD(kfd_get_open(in, KMIP_TAG_KEYFLEET_REGISTRATION, &reg, NULL));
    KF_GUARD(kfd_get_end(in));
    KF_GUARD(get_field(&reg, KMIP_TAG_KEYFLEET_MSN, r->msn, KFD_METER_MSN_MAX));
    KF_GUARD(get_field(&reg, KMIP_TAG_KEYFLEET_INDICIA, r->indicia, KFD_METER_INDICIA_MAX));
    KF_GUARD(get_country(&reg, r->country));
    KF_GUARD(kfd_get_i64(&reg, KMIP_TAG_KEYFLEET_DATE, &r->date));
    KF_ENSURE(kfd_meter_time_valid(r->date), KF_ERR_PAIR_MALFORMED);
    for (; kfd_next_is(&reg, KMIP_TAG_KEYFLEET_REGISTRATION_MAC); r->nmacs++) {
        KF_ENSURE(r->nmacs < KFD_METER_DOMAINS, KF_ERR_PAIR_MALFORMED);
        KF_GUARD(kfd_get_open(&reg, KMIP_TAG_KEYFLEET_REGISTRATION_MAC, &item, NULL));
        KF_GUARD(kfd_get_id(&item, KMIP_TAG_KEYFLEET_DOMAIN, r->mac[r->nmacs].domain));
        KF_GUARD(kfd_get_u64(&item, KMIP_TAG_KEYFLEET_KEY_ID, &r->mac[r->nmacs].key_id));
        KF_ENSURE(r->mac[r->nmacs].key_id >= 1, KF_ERR_PAIR_MALFORMED);
        KF_GUARD(kfd_get_key(&item, KMIP_TAG_KEYFLEET_MAC, r->mac[r->nmacs].mac, 16));
        KF_GUARD(kfd_get_end(&item));
        for (size_t i = 0; i < r->nmacs; i++)
            KF_ENSURE(strcmp(r->mac[i].domain, r->mac[r->nmacs].domain) != 0,
                      KF_ERR_PAIR_MALFORMED);
    }
    KF_ENSURE(r->nmacs >= 1, KF_ERR_PAIR_MALFORMED);
    return kfd_get_end(&reg);
}

int kfd_registration_decode(const uint8_t *mr1, size_t len, struct kfd_registration *r)
{
    KF_ENSURE(mr1 && r, KF_ERR_ARG);
    memset(r, 0, sizeof(*r));
    KF_ENSURE(len <= KFD_REGISTRATION_MAX, KF_ERR_PAIR_MALFORMED);
    kf_buf in;
    kf_buf_reader(&in, mr1, len);
    if (get_registration(&in, r) != KF_OK) {
        memset(r, 0, sizeof(*r));
        return KF_ERR_PAIR_MALFORMED;
    }
    return KF_OK;
}

/* ---- printing ---- */

/* The token of one domain's key for the canonical data of date. */
static int domain_token(const struct kfd_meter_slot *s, uint32_t date,
                        const uint8_t canonical[KFD_TXDATA_LEN], uint8_t token[KFD_TOKEN_LEN])
{
    uint8_t tk[KFD_METER_KEY_LEN];
    int rc = kfd_token_key(s->key, s->domain, date / 100, tk);
    if (rc == KF_OK)
        rc = kfd_token_compute(tk, canonical, token);
    kfd_wipe(tk, sizeof(tk));
    return rc;
}

int kfd_meter_print(struct kfd_meter *m, const char *vendor_domain, const char *postal_domain,
                    uint32_t date, uint32_t value, const char *postal_code, struct kfd_piece *out)
{
    KF_ENSURE(m && m->store && vendor_domain && postal_domain && postal_code && out, KF_ERR_ARG);
    memset(out, 0, sizeof(*out));
    KF_ENSURE(registered(m), KF_ERR_METER_NOT_REGISTERED);
    KF_ENSURE(strcmp(vendor_domain, postal_domain) != 0, KF_ERR_ARG);
    int v = slot_of(m, vendor_domain), p = slot_of(m, postal_domain);
    KF_ENSURE(v >= 0 && p >= 0, KF_ERR_METER_NO_KEY);
    KF_ENSURE(m->piece_count < UINT32_MAX, KF_ERR_METER_COUNT);

    struct kfd_piece piece;
    memset(&piece, 0, sizeof(piece));
    piece.tx.date = date;
    piece.tx.value = value;
    piece.tx.piece_count = (uint32_t)m->piece_count + 1;
    KF_ENSURE(strnlen(postal_code, sizeof(piece.tx.postal_code)) < sizeof(piece.tx.postal_code),
              KF_ERR_METER_FIELD);
    memcpy(piece.tx.postal_code, postal_code, strlen(postal_code));
    memcpy(piece.tx.msn, m->msn, sizeof(piece.tx.msn));
    uint8_t canonical[KFD_TXDATA_LEN];
    KF_GUARD(kfd_txdata_encode(&piece.tx, canonical));
    KF_ENSURE(date >= kfd_meter_day_of(m->registered_at), KF_ERR_METER_FIELD);

    /* The count is stored before any token exists: a piece count is never used twice, even if
     * the device loses power right after. */
    m->piece_count++;
    int rc = persist(m);
    if (rc != KF_OK) {
        m->piece_count--;
        return rc;
    }
    rc = domain_token(&m->slot[v], date, canonical, piece.vendor_token);
    if (rc == KF_OK)
        rc = domain_token(&m->slot[p], date, canonical, piece.postal_token);
    if (rc != KF_OK)
        return rc; /* the count stays used: a gap, never a repeat */
    *out = piece;
    return KF_OK;
}
