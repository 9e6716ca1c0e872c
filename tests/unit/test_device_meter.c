/*
 * libkeyfleet-device, the postage device (docs/manufacturing.md): key
 * installation and its evidence, the persisted state and its strict decoder,
 * registration (MR1) and its decoder, printing, the canonical transaction
 * data and the printed text form, with every refusal. The token arithmetic
 * against the server's crypto module and the standards is test_mfg_tokens.c.
 */
#include "test_device_fixture.h"
#include "device/meter_internal.h"
#include "keyfleet/meter.h"

#define MSN "KF-000123"
#define VENDOR "vendor"
#define POSTAL "postal-de"
#define EARTH "earth"
/* 2026-11-15T12:00:00Z */
#define REG_TIME INT64_C(1794744000)
#define REG_DAY 20261115u

/* ---- a store the tests can watch and break ---- */

struct meter_store {
    bool fail;
    unsigned saves;
    uint8_t saved[KFD_METER_STATE_MAX];
    size_t saved_len;
    const struct kfd_piece *watch; /* print's output: no token may exist when the count is stored */
    uint64_t saved_count;
};

static int store_fn(void *ctx, const uint8_t *state, size_t len)
{
    struct meter_store *s = ctx;
    if (s->fail)
        return -1;
    assert_true(len <= sizeof(s->saved));
    memcpy(s->saved, state, len);
    s->saved_len = len;
    s->saves++;
    struct kfd_meter again;
    assert_int_equal(kfd_meter_load(&again, state, len, store_fn, ctx), KF_OK);
    s->saved_count = again.piece_count;
    kfd_meter_wipe(&again);
    if (s->watch) {
        static const uint8_t zero[KFD_TOKEN_LEN];
        assert_memory_equal(s->watch->vendor_token, zero, KFD_TOKEN_LEN);
        assert_memory_equal(s->watch->postal_token, zero, KFD_TOKEN_LEN);
    }
    return 0;
}

static bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

static int slot_index(const struct kfd_meter *m, const char *domain)
{
    for (int i = 0; i < KFD_METER_DOMAINS; i++)
        if (m->slot[i].used && strcmp(m->slot[i].domain, domain) == 0)
            return i;
    return -1;
}

/* A device with a vendor and a postal key (postal_domain), not registered. */
static void make_meter(struct kfd_meter *m, struct meter_store *s, const char *postal_domain)
{
    uint8_t key[KFD_METER_KEY_LEN], tokens[KFD_TEST_TOKENS_LEN];
    memset(s, 0, sizeof(*s));
    assert_int_equal(kfd_meter_init(m, MSN, store_fn, s), KF_OK);
    fill_key(key, 1);
    assert_int_equal(kfd_meter_install(m, VENDOR, 11, key, tokens), KF_OK);
    fill_key(key, 2);
    assert_int_equal(kfd_meter_install(m, postal_domain, 22, key, tokens), KF_OK);
}

static void register_meter(struct kfd_meter *m)
{
    uint8_t mem[KFD_REGISTRATION_MAX];
    kf_buf mr1;
    kf_buf_fixed(&mr1, mem, sizeof(mem));
    assert_int_equal(kfd_meter_register(m, "DE", "IND-42", REG_TIME, NULL, NULL, &mr1), KF_OK);
}

/* ---- installation (MI5/MI6) ---- */

static void install_answers_evidence_and_persists(void **state)
{
    (void)state;
    struct meter_store s = {0};
    struct kfd_meter m;
    uint8_t key[KFD_METER_KEY_LEN], tokens[KFD_TEST_TOKENS_LEN], want[KFD_TEST_TOKENS_LEN];
    assert_int_equal(kfd_meter_init(&m, MSN, store_fn, &s), KF_OK);
    assert_string_equal(m.msn, MSN);
    assert_int_equal(s.saves, 0);
    fill_key(key, 1);
    assert_int_equal(kfd_meter_install(&m, VENDOR, 11, key, tokens), KF_OK);
    assert_int_equal(kfd_test_tokens(key, want), KF_OK);
    assert_memory_equal(tokens, want, sizeof(want));
    assert_int_equal(s.saves, 1);
    /* The stored state holds the key. */
    struct kfd_meter back;
    assert_int_equal(kfd_meter_load(&back, s.saved, s.saved_len, store_fn, &s), KF_OK);
    int i = slot_index(&back, VENDOR);
    assert_true(i >= 0);
    assert_int_equal(back.slot[i].key_id, 11);
    assert_memory_equal(back.slot[i].key, key, sizeof(key));
    assert_string_equal(back.msn, MSN);
    /* A second domain takes another slot; its evidence is its own key's. */
    uint8_t key2[KFD_METER_KEY_LEN], tokens2[KFD_TEST_TOKENS_LEN];
    fill_key(key2, 2);
    assert_int_equal(kfd_meter_install(&m, EARTH, 5, key2, tokens2), KF_OK);
    assert_int_equal(kfd_test_tokens(key2, want), KF_OK);
    assert_memory_equal(tokens2, want, sizeof(want));
    assert_memory_not_equal(tokens, tokens2, sizeof(tokens));
    assert_int_equal(s.saves, 2);
    kfd_meter_wipe(&m);
    assert_true(all_zero(&m, sizeof(m)));
    kfd_meter_wipe(&back);
}

static void install_refusals(void **state)
{
    (void)state;
    struct meter_store s = {0};
    struct kfd_meter m;
    uint8_t key[KFD_METER_KEY_LEN], other[KFD_METER_KEY_LEN], tokens[KFD_TEST_TOKENS_LEN];
    fill_key(key, 1);
    fill_key(other, 9);
    assert_int_equal(kfd_meter_init(&m, MSN, store_fn, &s), KF_OK);
    assert_int_equal(kfd_meter_install(&m, VENDOR, 11, key, tokens), KF_OK);
    /* A domain's key is installed once, whatever the key ID. */
    assert_int_equal(kfd_meter_install(&m, VENDOR, 12, other, tokens), KF_ERR_METER_INSTALLED);
    assert_int_equal(kfd_meter_install(&m, VENDOR, 11, key, tokens), KF_ERR_METER_INSTALLED);
    assert_memory_equal(m.slot[slot_index(&m, VENDOR)].key, key, sizeof(key));
    assert_int_equal(s.saves, 1);
    /* Bad arguments. */
    assert_int_equal(kfd_meter_install(&m, "bad domain", 1, key, tokens), KF_ERR_NAME);
    assert_int_equal(kfd_meter_install(&m, "", 1, key, tokens), KF_ERR_NAME);
    assert_int_equal(kfd_meter_install(&m, NULL, 1, key, tokens), KF_ERR_NAME);
    assert_int_equal(kfd_meter_install(&m, "d2", 0, key, tokens), KF_ERR_ARG);
    assert_int_equal(kfd_meter_install(&m, "d2", 1, NULL, tokens), KF_ERR_ARG);
    assert_int_equal(kfd_meter_install(&m, "d2", 1, key, NULL), KF_ERR_ARG);
    assert_int_equal(kfd_meter_install(NULL, "d2", 1, key, tokens), KF_ERR_ARG);
    /* Slots run out. */
    assert_int_equal(kfd_meter_install(&m, "d2", 1, key, tokens), KF_OK);
    assert_int_equal(kfd_meter_install(&m, "d3", 1, key, tokens), KF_OK);
    assert_int_equal(kfd_meter_install(&m, "d4", 1, key, tokens), KF_OK);
    assert_int_equal(kfd_meter_install(&m, "d5", 1, key, tokens), KF_ERR_LIMIT);
    assert_int_equal(s.saves, 4);
    /* init refuses a bad MSN. */
    struct kfd_meter n;
    assert_int_equal(kfd_meter_init(&n, "kf-1", store_fn, &s), KF_ERR_METER_FIELD);
    assert_int_equal(kfd_meter_init(&n, "", store_fn, &s), KF_ERR_METER_FIELD);
    assert_int_equal(kfd_meter_init(&n, "ABCDEFGHIJKLMNOPQ", store_fn, &s), KF_ERR_METER_FIELD);
    assert_int_equal(kfd_meter_init(&n, "KF 1", store_fn, &s), KF_ERR_METER_FIELD);
    assert_int_equal(kfd_meter_init(&n, NULL, store_fn, &s), KF_ERR_METER_FIELD);
    assert_int_equal(kfd_meter_init(&n, MSN, NULL, &s), KF_ERR_ARG);
    assert_int_equal(kfd_meter_init(&n, "ABCDEFGHIJKLMNOP", store_fn, &s), KF_OK);
    kfd_meter_wipe(&m);
}

static void install_storage_failure_installs_nothing(void **state)
{
    (void)state;
    struct meter_store s = {0};
    struct kfd_meter m;
    uint8_t key[KFD_METER_KEY_LEN], tokens[KFD_TEST_TOKENS_LEN];
    fill_key(key, 1);
    assert_int_equal(kfd_meter_init(&m, MSN, store_fn, &s), KF_OK);
    memset(tokens, 0xEE, sizeof(tokens));
    s.fail = true;
    assert_int_equal(kfd_meter_install(&m, VENDOR, 11, key, tokens), KF_ERR_DEVICE_STORAGE);
    assert_int_equal(slot_index(&m, VENDOR), -1);
    for (size_t i = 0; i < KFD_METER_DOMAINS; i++)
        assert_true(all_zero(&m.slot[i], sizeof(m.slot[i]))); /* the key is wiped */
    for (size_t i = 0; i < sizeof(tokens); i++)
        assert_int_equal(tokens[i], 0xEE); /* no evidence for a key not held */
    /* Once storage works again the key installs (nothing half-done stands in the way). */
    s.fail = false;
    assert_int_equal(kfd_meter_install(&m, VENDOR, 11, key, tokens), KF_OK);
    assert_int_equal(s.saves, 1);
    kfd_meter_wipe(&m);
}

/* ---- state ---- */

static size_t encode(const struct kfd_meter *m, uint8_t *out, size_t cap)
{
    kf_buf b;
    kf_buf_fixed(&b, out, cap);
    assert_int_equal(kfd_meter_encode(m, &b), KF_OK);
    return b.len;
}

static void state_round_trip(void **state)
{
    (void)state;
    struct meter_store s;
    struct kfd_meter m, back;
    uint8_t a[KFD_METER_STATE_MAX], b[KFD_METER_STATE_MAX];
    /* Unregistered, no keys. */
    memset(&s, 0, sizeof(s));
    assert_int_equal(kfd_meter_init(&m, MSN, store_fn, &s), KF_OK);
    size_t len = encode(&m, a, sizeof(a));
    assert_int_equal(kfd_meter_load(&back, a, len, store_fn, &s), KF_OK);
    assert_string_equal(back.msn, MSN);
    assert_string_equal(back.country, "");
    assert_int_equal(back.registered_at, 0);
    assert_int_equal(encode(&back, b, sizeof(b)), len);
    assert_memory_equal(a, b, len);
    /* Registered, four keys with the longest names, a count. */
    make_meter(&m, &s, POSTAL);
    uint8_t key[KFD_METER_KEY_LEN], tokens[KFD_TEST_TOKENS_LEN];
    char longest[KFD_METER_DOMAIN_MAX + 1];
    memset(longest, 'x', KFD_METER_DOMAIN_MAX);
    longest[KFD_METER_DOMAIN_MAX] = '\0';
    fill_key(key, 3);
    assert_int_equal(kfd_meter_install(&m, longest, UINT64_MAX, key, tokens), KF_OK);
    longest[0] = 'y';
    assert_int_equal(kfd_meter_install(&m, longest, 7, key, tokens), KF_OK);
    register_meter(&m);
    m.piece_count = 77;
    len = encode(&m, a, sizeof(a));
    print_message("largest meter state: %zu bytes (limit %d)\n", len, KFD_METER_STATE_MAX);
    assert_true(len <= KFD_METER_STATE_MAX);
    assert_int_equal(kfd_meter_load(&back, a, len, store_fn, &s), KF_OK);
    assert_string_equal(back.country, "DE");
    assert_string_equal(back.indicia, "IND-42");
    assert_int_equal(back.registered_at, REG_TIME);
    assert_int_equal(back.piece_count, 77);
    for (int i = 0; i < KFD_METER_DOMAINS; i++) {
        int j = slot_index(&back, m.slot[i].domain);
        assert_true(j >= 0);
        assert_int_equal(back.slot[j].key_id, m.slot[i].key_id);
        assert_memory_equal(back.slot[j].key, m.slot[i].key, KFD_METER_KEY_LEN);
    }
    assert_ptr_equal(back.store_ctx, &s);
    assert_int_equal(encode(&back, b, sizeof(b)), len);
    assert_memory_equal(a, b, len);
    /* An encoding that does not fit leaves nothing behind. */
    kf_buf small;
    uint8_t tiny[100];
    memset(tiny, 0, sizeof(tiny));
    kf_buf_fixed(&small, tiny, sizeof(tiny));
    assert_int_equal(kfd_meter_encode(&m, &small), KF_ERR_NOSPACE);
    assert_int_equal(small.len, 0);
    assert_true(all_zero(tiny, sizeof(tiny)));
    kfd_meter_wipe(&m);
    kfd_meter_wipe(&back);
}

/* Each byte flipped (three ways) and each truncation of a registered state with keys: refused
 * with KF_ERR_DEVICE_STATE, or loaded as another valid state that encodes back to exactly the
 * bytes given (the encoding is canonical, so nothing is silently normalised). */
static void state_every_flip_and_truncation(void **state)
{
    (void)state;
    struct meter_store s;
    struct kfd_meter m, back;
    make_meter(&m, &s, POSTAL);
    register_meter(&m);
    m.piece_count = 5;
    uint8_t good[KFD_METER_STATE_MAX], bad[KFD_METER_STATE_MAX + 8], again[KFD_METER_STATE_MAX];
    size_t len = encode(&m, good, sizeof(good));
    static const uint8_t flips[] = {0x01, 0x80, 0xFF};
    unsigned refused = 0, handled = 0;
    for (size_t i = 0; i < len; i++) {
        for (size_t f = 0; f < sizeof(flips); f++) {
            memcpy(bad, good, len);
            bad[i] ^= flips[f];
            int rc = kfd_meter_load(&back, bad, len, store_fn, &s);
            if (rc == KF_OK) {
                assert_int_equal(encode(&back, again, sizeof(again)), len);
                assert_memory_equal(again, bad, len);
                handled++;
            } else {
                assert_int_equal(rc, KF_ERR_DEVICE_STATE);
                assert_true(all_zero(&back, sizeof(back)));
                refused++;
            }
        }
    }
    print_message("flipped bytes: %u refused, %u loaded as another valid state\n", refused,
                  handled);
    assert_true(refused > handled);
    for (size_t n = 0; n < len; n++)
        assert_int_equal(kfd_meter_load(&back, good, n, store_fn, &s), KF_ERR_DEVICE_STATE);
    /* Bytes after the structure. */
    memcpy(bad, good, len);
    memset(bad + len, 0, 8);
    assert_int_equal(kfd_meter_load(&back, bad, len + 8, store_fn, &s), KF_ERR_DEVICE_STATE);
    assert_int_equal(kfd_meter_load(&back, good, len, store_fn, &s), KF_OK);
    assert_int_equal(kfd_meter_load(&back, good, len, NULL, &s), KF_ERR_ARG);
    assert_int_equal(kfd_meter_load(&back, NULL, len, store_fn, &s), KF_ERR_ARG);
    kfd_meter_wipe(&m);
    kfd_meter_wipe(&back);
}

/* A state built item by item, to make each inconsistency the decoder must refuse. */
struct state_spec {
    uint32_t version;
    const char *msn, *country, *indicia;
    bool date;
    int64_t reg_time;
    uint64_t piece_count;
    unsigned slots;
    const char *domain[6];
    uint64_t key_id[6];
    size_t key_len;
};

static struct state_spec good_spec(void)
{
    return (struct state_spec){1,
                               MSN,
                               "DE",
                               "IND-42",
                               true,
                               REG_TIME,
                               3,
                               2,
                               {VENDOR, POSTAL},
                               {11, 22},
                               KFD_METER_KEY_LEN};
}

static size_t build_state(const struct state_spec *sp, uint8_t *out, size_t cap)
{
    kf_buf b;
    size_t outer, slot;
    uint8_t key[KFD_METER_KEY_LEN + 1];
    memset(key, 0x42, sizeof(key));
    kf_buf_fixed(&b, out, cap);
    assert_int_equal(kfd_put_open(&b, KMIP_TAG_KEYFLEET_METER_STATE, &outer), KF_OK);
    assert_int_equal(kfd_put_u32(&b, KMIP_TAG_KEYFLEET_PROTO_VERSION, sp->version), KF_OK);
    if (sp->msn)
        assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_MSN, sp->msn), KF_OK);
    if (sp->country)
        assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_COUNTRY, sp->country), KF_OK);
    if (sp->indicia)
        assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_INDICIA, sp->indicia), KF_OK);
    if (sp->date)
        assert_int_equal(kfd_put_u64(&b, KMIP_TAG_KEYFLEET_DATE, (uint64_t)sp->reg_time), KF_OK);
    assert_int_equal(kfd_put_u64(&b, KMIP_TAG_KEYFLEET_PIECE_COUNT, sp->piece_count), KF_OK);
    for (unsigned i = 0; i < sp->slots; i++) {
        assert_int_equal(kfd_put_open(&b, KMIP_TAG_KEYFLEET_METER_SLOT, &slot), KF_OK);
        assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_DOMAIN, sp->domain[i]), KF_OK);
        assert_int_equal(kfd_put_u64(&b, KMIP_TAG_KEYFLEET_KEY_ID, sp->key_id[i]), KF_OK);
        /* put_string's length check is the schema's: write a wrong length by hand. */
        assert_int_equal(kf_buf_put_u24(&b, KMIP_TAG_KEYFLEET_KEY_BYTES), KF_OK);
        assert_int_equal(kf_buf_put_u8(&b, KFD_BYTE_STRING), KF_OK);
        assert_int_equal(kf_buf_put_u32(&b, (uint32_t)sp->key_len), KF_OK);
        assert_int_equal(kf_buf_put_bytes(&b, key, sp->key_len), KF_OK);
        assert_int_equal(kf_buf_put_zeros(&b, (8 - sp->key_len % 8) % 8), KF_OK);
        assert_int_equal(kfd_put_close(&b, slot), KF_OK);
    }
    assert_int_equal(kfd_put_close(&b, outer), KF_OK);
    return b.len;
}

static int load_spec(const struct state_spec *sp)
{
    uint8_t mem[2 * KFD_METER_STATE_MAX];
    struct meter_store s = {0};
    struct kfd_meter m;
    size_t len = build_state(sp, mem, sizeof(mem));
    int rc = kfd_meter_load(&m, mem, len, store_fn, &s);
    kfd_meter_wipe(&m);
    return rc;
}

static void state_inconsistencies_refused(void **state)
{
    (void)state;
    struct state_spec sp = good_spec();
    assert_int_equal(load_spec(&sp), KF_OK);
    sp = good_spec(), sp.country = NULL, sp.indicia = NULL, sp.date = false, sp.piece_count = 0;
    assert_int_equal(load_spec(&sp), KF_OK); /* not registered, nothing printed */
    sp = good_spec(), sp.slots = 0;
    assert_int_equal(load_spec(&sp), KF_OK);
    sp = good_spec(), sp.piece_count = UINT32_MAX;
    assert_int_equal(load_spec(&sp), KF_OK);

    struct state_spec bad[20];
    size_t n = 0;
    bad[n] = good_spec(), bad[n++].version = 2;
    bad[n] = good_spec(), bad[n++].msn = NULL;
    bad[n] = good_spec(), bad[n++].msn = "kf-000123";
    bad[n] = good_spec(), bad[n++].msn = "KF 1";
    bad[n] = good_spec(), bad[n++].country = "de";
    bad[n] = good_spec(), bad[n++].country = NULL; /* indicia and date without country */
    bad[n] = good_spec(), bad[n++].indicia = NULL;
    bad[n] = good_spec(), bad[n++].indicia = "ind.42";
    bad[n] = good_spec(), bad[n++].date = false;
    bad[n] = good_spec(), bad[n++].reg_time = 0;
    bad[n] = good_spec(), bad[n++].reg_time = KFD_METER_TIME_END;
    bad[n] = good_spec(), bad[n].country = NULL, bad[n].indicia = NULL, bad[n].date = false,
    bad[n++].piece_count = 1; /* printed before registration */
    bad[n] = good_spec(), bad[n++].piece_count = (uint64_t)UINT32_MAX + 1;
    bad[n] = good_spec(), bad[n++].domain[1] = VENDOR; /* one domain twice */
    bad[n] = good_spec(), bad[n++].key_id[0] = 0;
    bad[n] = good_spec(), bad[n++].key_len = KFD_METER_KEY_LEN - 1;
    bad[n] = good_spec(), bad[n++].key_len = KFD_METER_KEY_LEN + 1;
    bad[n] = good_spec(), bad[n].slots = 5, bad[n].domain[2] = "a", bad[n].domain[3] = "b",
    bad[n].domain[4] = "c", bad[n].key_id[2] = bad[n].key_id[3] = bad[n].key_id[4] = 1, n++;
    for (size_t i = 0; i < n; i++) {
        print_message("bad state %zu\n", i);
        assert_int_equal(load_spec(&bad[i]), KF_ERR_DEVICE_STATE);
    }
    /* Longer than the limit. */
    uint8_t big[KFD_METER_STATE_MAX + 1];
    struct meter_store s = {0};
    struct kfd_meter m;
    sp = good_spec();
    size_t len = build_state(&sp, big, sizeof(big));
    memset(big + len, 0, sizeof(big) - len);
    assert_int_equal(kfd_meter_load(&m, big, sizeof(big), store_fn, &s), KF_ERR_DEVICE_STATE);
}

/* ---- registration (MR1) ---- */

static void register_macs_rename_and_persist(void **state)
{
    (void)state;
    struct meter_store s;
    struct kfd_meter m;
    make_meter(&m, &s, EARTH);
    uint8_t vendor_key[KFD_METER_KEY_LEN], earth_key[KFD_METER_KEY_LEN];
    memcpy(vendor_key, m.slot[slot_index(&m, VENDOR)].key, sizeof(vendor_key));
    memcpy(earth_key, m.slot[slot_index(&m, EARTH)].key, sizeof(earth_key));
    unsigned saves = s.saves;

    uint8_t mem[KFD_REGISTRATION_MAX];
    kf_buf mr1;
    kf_buf_fixed(&mr1, mem, sizeof(mem));
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", REG_TIME, EARTH, POSTAL, &mr1), KF_OK);
    assert_int_equal(s.saves, saves + 1);
    assert_string_equal(m.country, "DE");
    assert_string_equal(m.indicia, "IND-42");
    assert_int_equal(m.registered_at, REG_TIME);
    /* The earth slot now belongs to the country, same key and key ID. */
    assert_int_equal(slot_index(&m, EARTH), -1);
    int p = slot_index(&m, POSTAL);
    assert_true(p >= 0);
    assert_memory_equal(m.slot[p].key, earth_key, KFD_METER_KEY_LEN);
    assert_int_equal(m.slot[p].key_id, 22);

    /* MR1: one MAC per domain, naming the slots as they were (earth). */
    struct kfd_registration r;
    assert_int_equal(kfd_registration_decode(mem, mr1.len, &r), KF_OK);
    assert_string_equal(r.msn, MSN);
    assert_string_equal(r.indicia, "IND-42");
    assert_string_equal(r.country, "DE");
    assert_int_equal(r.date, REG_TIME);
    assert_int_equal(r.nmacs, 2);
    assert_string_equal(r.mac[0].domain, VENDOR);
    assert_int_equal(r.mac[0].key_id, 11);
    assert_string_equal(r.mac[1].domain, EARTH);
    assert_int_equal(r.mac[1].key_id, 22);
    uint8_t mac[16];
    assert_int_equal(kfd_registration_mac(vendor_key, &r, VENDOR, 11, mac), KF_OK);
    assert_memory_equal(mac, r.mac[0].mac, 16);
    assert_int_equal(kfd_registration_mac(earth_key, &r, EARTH, 22, mac), KF_OK);
    assert_memory_equal(mac, r.mac[1].mac, 16);
    /* A MAC binds its domain, key ID, key and every field. */
    assert_memory_not_equal(r.mac[0].mac, r.mac[1].mac, 16);
    assert_int_equal(kfd_registration_mac(vendor_key, &r, VENDOR, 12, mac), KF_OK);
    assert_memory_not_equal(mac, r.mac[0].mac, 16);
    assert_int_equal(kfd_registration_mac(vendor_key, &r, POSTAL, 11, mac), KF_OK);
    assert_memory_not_equal(mac, r.mac[0].mac, 16);
    assert_int_equal(kfd_registration_mac(earth_key, &r, VENDOR, 11, mac), KF_OK);
    assert_memory_not_equal(mac, r.mac[0].mac, 16);
    struct kfd_registration changed = r;
    changed.date++;
    assert_int_equal(kfd_registration_mac(vendor_key, &changed, VENDOR, 11, mac), KF_OK);
    assert_memory_not_equal(mac, r.mac[0].mac, 16);
    changed = r, strcpy(changed.indicia, "IND-43");
    assert_int_equal(kfd_registration_mac(vendor_key, &changed, VENDOR, 11, mac), KF_OK);
    assert_memory_not_equal(mac, r.mac[0].mac, 16);
    changed = r, strcpy(changed.country, "AT");
    assert_int_equal(kfd_registration_mac(vendor_key, &changed, VENDOR, 11, mac), KF_OK);
    assert_memory_not_equal(mac, r.mac[0].mac, 16);
    changed = r, strcpy(changed.msn, "KF-000124");
    assert_int_equal(kfd_registration_mac(vendor_key, &changed, VENDOR, 11, mac), KF_OK);
    assert_memory_not_equal(mac, r.mac[0].mac, 16);
    changed = r, strcpy(changed.country, "de");
    assert_int_equal(kfd_registration_mac(vendor_key, &changed, VENDOR, 11, mac),
                     KF_ERR_METER_FIELD);
    assert_int_equal(kfd_registration_mac(vendor_key, &r, "no such", 11, mac), KF_ERR_NAME);

    /* Persisted before MR1: the stored state has the registration and the renamed slot. */
    struct kfd_meter back;
    assert_int_equal(kfd_meter_load(&back, s.saved, s.saved_len, store_fn, &s), KF_OK);
    assert_string_equal(back.country, "DE");
    assert_string_equal(back.indicia, "IND-42");
    assert_int_equal(back.registered_at, REG_TIME);
    assert_int_equal(slot_index(&back, EARTH), -1);
    assert_memory_equal(back.slot[slot_index(&back, POSTAL)].key, earth_key, KFD_METER_KEY_LEN);

    /* Another country is refused, with nothing stored or written. */
    size_t before = mr1.len;
    saves = s.saves;
    assert_int_equal(kfd_meter_register(&m, "FR", "IND-42", REG_TIME, NULL, NULL, &mr1),
                     KF_ERR_METER_COUNTRY);
    assert_int_equal(kfd_meter_register(&m, "FR", "IND-42", REG_TIME, EARTH, "postal-fr", &mr1),
                     KF_ERR_METER_COUNTRY);
    assert_int_equal(mr1.len, before);
    assert_int_equal(s.saves, saves);
    assert_string_equal(m.country, "DE");

    /* The same country again is allowed and MACs again (the slot already renamed: the caller
     * may name earth again, nothing more is renamed). */
    kf_buf again;
    uint8_t mem2[KFD_REGISTRATION_MAX];
    kf_buf_fixed(&again, mem2, sizeof(mem2));
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-43", REG_TIME + 60, EARTH, POSTAL, &again),
                     KF_OK);
    assert_int_equal(s.saves, saves + 1);
    assert_string_equal(m.indicia, "IND-43");
    assert_int_equal(kfd_registration_decode(mem2, again.len, &r), KF_OK);
    assert_int_equal(r.nmacs, 2);
    assert_string_equal(r.mac[1].domain, POSTAL);
    assert_int_equal(kfd_registration_mac(earth_key, &r, POSTAL, 22, mac), KF_OK);
    assert_memory_equal(mac, r.mac[1].mac, 16);
    kfd_meter_wipe(&m);
    kfd_meter_wipe(&back);
}

static void register_refusals(void **state)
{
    (void)state;
    struct meter_store s;
    struct kfd_meter m;
    uint8_t mem[KFD_REGISTRATION_MAX];
    kf_buf mr1;
    kf_buf_fixed(&mr1, mem, sizeof(mem));
    /* No key held: nothing to MAC. */
    memset(&s, 0, sizeof(s));
    assert_int_equal(kfd_meter_init(&m, MSN, store_fn, &s), KF_OK);
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", REG_TIME, NULL, NULL, &mr1),
                     KF_ERR_METER_NO_KEY);
    assert_int_equal(s.saves, 0);
    assert_string_equal(m.country, "");

    make_meter(&m, &s, EARTH);
    unsigned saves = s.saves;
    static const char *countries[] = {"de", "D", "DEU", "", "D1"};
    for (size_t i = 0; i < sizeof(countries) / sizeof(countries[0]); i++)
        assert_int_equal(kfd_meter_register(&m, countries[i], "IND-42", REG_TIME, NULL, NULL, &mr1),
                         KF_ERR_METER_FIELD);
    static const char *indicias[] = {"", "ind-42", "IND 42", "IND-42-0123456789"};
    for (size_t i = 0; i < sizeof(indicias) / sizeof(indicias[0]); i++)
        assert_int_equal(kfd_meter_register(&m, "DE", indicias[i], REG_TIME, NULL, NULL, &mr1),
                         KF_ERR_METER_FIELD);
    assert_int_equal(
        kfd_meter_register(&m, "DE", "IND-42", KFD_METER_TIME_FIRST - 1, NULL, NULL, &mr1),
        KF_ERR_METER_FIELD);
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", KFD_METER_TIME_END, NULL, NULL, &mr1),
                     KF_ERR_METER_FIELD);
    /* earth and country domains come together, differ, and must fit the slots held. */
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", REG_TIME, EARTH, NULL, &mr1),
                     KF_ERR_ARG);
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", REG_TIME, NULL, POSTAL, &mr1),
                     KF_ERR_ARG);
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", REG_TIME, EARTH, EARTH, &mr1),
                     KF_ERR_ARG);
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", REG_TIME, EARTH, "bad name", &mr1),
                     KF_ERR_NAME);
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", REG_TIME, "moon", POSTAL, &mr1),
                     KF_ERR_METER_NO_KEY);
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", REG_TIME, EARTH, VENDOR, &mr1),
                     KF_ERR_METER_INSTALLED);
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", REG_TIME, NULL, NULL, NULL),
                     KF_ERR_ARG);
    /* MR1 does not fit: refused before anything is stored. */
    kf_buf small;
    uint8_t tiny[64];
    kf_buf_fixed(&small, tiny, sizeof(tiny));
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", REG_TIME, EARTH, POSTAL, &small),
                     KF_ERR_NOSPACE);
    assert_int_equal(small.len, 0);
    assert_int_equal(s.saves, saves);
    assert_string_equal(m.country, "");
    assert_true(slot_index(&m, EARTH) >= 0);
    /* Storage fails: nothing changes, no MR1. */
    s.fail = true;
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", REG_TIME, EARTH, POSTAL, &mr1),
                     KF_ERR_DEVICE_STORAGE);
    assert_int_equal(mr1.len, 0);
    assert_string_equal(m.country, "");
    assert_string_equal(m.indicia, "");
    assert_int_equal(m.registered_at, 0);
    assert_true(slot_index(&m, EARTH) >= 0);
    assert_int_equal(slot_index(&m, POSTAL), -1);
    s.fail = false;
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", REG_TIME, EARTH, POSTAL, &mr1), KF_OK);
    /* A failed re-registration keeps the first one. */
    s.fail = true;
    kf_buf_fixed(&mr1, mem, sizeof(mem));
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-99", REG_TIME + 5, NULL, NULL, &mr1),
                     KF_ERR_DEVICE_STORAGE);
    assert_string_equal(m.indicia, "IND-42");
    assert_int_equal(m.registered_at, REG_TIME);
    kfd_meter_wipe(&m);
}

/* A KeyfleetRegistration item by item. */
struct reg_spec {
    const char *msn, *indicia, *country;
    int64_t date;
    bool swap_first_two;
    unsigned nmacs;
    const char *domain[6];
    uint64_t key_id[6];
    size_t mac_len;
    bool extra_item;
};

static struct reg_spec good_reg(void)
{
    return (struct reg_spec){MSN,
                             "IND-42",
                             "DE",
                             REG_TIME,
                             false,
                             2,
                             {VENDOR, POSTAL, "d3", "d4", "d5"},
                             {11, 22, 3, 4, 5},
                             16,
                             false};
}

static size_t build_reg(const struct reg_spec *sp, uint8_t *out, size_t cap)
{
    kf_buf b;
    size_t outer, item;
    uint8_t mac[17];
    memset(mac, 0x5C, sizeof(mac));
    kf_buf_fixed(&b, out, cap);
    assert_int_equal(kfd_put_open(&b, KMIP_TAG_KEYFLEET_REGISTRATION, &outer), KF_OK);
    if (sp->swap_first_two) {
        assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_INDICIA, sp->indicia), KF_OK);
        assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_MSN, sp->msn), KF_OK);
    } else {
        if (sp->msn)
            assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_MSN, sp->msn), KF_OK);
        assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_INDICIA, sp->indicia), KF_OK);
    }
    /* By hand: the writer's schema would not write a country of another length. */
    size_t clen = strlen(sp->country);
    assert_int_equal(kf_buf_put_u24(&b, KMIP_TAG_KEYFLEET_COUNTRY), KF_OK);
    assert_int_equal(kf_buf_put_u8(&b, KFD_TEXT_STRING), KF_OK);
    assert_int_equal(kf_buf_put_u32(&b, (uint32_t)clen), KF_OK);
    assert_int_equal(kf_buf_put_bytes(&b, sp->country, clen), KF_OK);
    assert_int_equal(kf_buf_put_zeros(&b, (8 - clen % 8) % 8), KF_OK);
    assert_int_equal(kfd_put_u64(&b, KMIP_TAG_KEYFLEET_DATE, (uint64_t)sp->date), KF_OK);
    if (sp->extra_item)
        assert_int_equal(kfd_put_u64(&b, KMIP_TAG_KEYFLEET_PIECE_COUNT, 1), KF_OK);
    for (unsigned i = 0; i < sp->nmacs; i++) {
        assert_int_equal(kfd_put_open(&b, KMIP_TAG_KEYFLEET_REGISTRATION_MAC, &item), KF_OK);
        assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_DOMAIN, sp->domain[i]), KF_OK);
        assert_int_equal(kfd_put_u64(&b, KMIP_TAG_KEYFLEET_KEY_ID, sp->key_id[i]), KF_OK);
        assert_int_equal(kf_buf_put_u24(&b, KMIP_TAG_KEYFLEET_MAC), KF_OK);
        assert_int_equal(kf_buf_put_u8(&b, KFD_BYTE_STRING), KF_OK);
        assert_int_equal(kf_buf_put_u32(&b, (uint32_t)sp->mac_len), KF_OK);
        assert_int_equal(kf_buf_put_bytes(&b, mac, sp->mac_len), KF_OK);
        assert_int_equal(kf_buf_put_zeros(&b, (8 - sp->mac_len % 8) % 8), KF_OK);
        assert_int_equal(kfd_put_close(&b, item), KF_OK);
    }
    assert_int_equal(kfd_put_close(&b, outer), KF_OK);
    return b.len;
}

static int decode_reg(const struct reg_spec *sp)
{
    uint8_t mem[2 * KFD_REGISTRATION_MAX];
    struct kfd_registration r;
    size_t len = build_reg(sp, mem, sizeof(mem));
    int rc = kfd_registration_decode(mem, len, &r);
    if (rc != KF_OK)
        assert_true(all_zero(&r, sizeof(r)));
    return rc;
}

static void registration_decode_refusals(void **state)
{
    (void)state;
    struct reg_spec sp = good_reg();
    assert_int_equal(decode_reg(&sp), KF_OK);
    sp.nmacs = 1;
    assert_int_equal(decode_reg(&sp), KF_OK);
    sp.nmacs = KFD_METER_DOMAINS;
    assert_int_equal(decode_reg(&sp), KF_OK);

    struct reg_spec bad[20];
    size_t n = 0;
    bad[n] = good_reg(), bad[n++].nmacs = 0;
    bad[n] = good_reg(), bad[n++].nmacs = KFD_METER_DOMAINS + 1;
    bad[n] = good_reg(), bad[n++].domain[1] = VENDOR;
    bad[n] = good_reg(), bad[n++].key_id[0] = 0;
    bad[n] = good_reg(), bad[n++].mac_len = 15;
    bad[n] = good_reg(), bad[n++].mac_len = 17;
    bad[n] = good_reg(), bad[n++].msn = "kf-1";
    bad[n] = good_reg(), bad[n++].msn = NULL;
    bad[n] = good_reg(), bad[n++].indicia = "IND 42";
    bad[n] = good_reg(), bad[n++].country = "DEU";
    bad[n] = good_reg(), bad[n++].country = "D";
    bad[n] = good_reg(), bad[n++].country = "dE";
    bad[n] = good_reg(), bad[n++].date = 0;
    bad[n] = good_reg(), bad[n++].date = -1;
    bad[n] = good_reg(), bad[n++].date = KFD_METER_TIME_END;
    bad[n] = good_reg(), bad[n++].swap_first_two = true;
    bad[n] = good_reg(), bad[n++].extra_item = true;
    for (size_t i = 0; i < n; i++) {
        print_message("bad registration %zu\n", i);
        assert_int_equal(decode_reg(&bad[i]), KF_ERR_PAIR_MALFORMED);
    }

    /* A real MR1: every truncation refused, trailing bytes refused, longer than the limit
     * refused; a flipped byte is refused or decodes to fields the MACs no longer match. */
    struct meter_store s;
    struct kfd_meter m;
    make_meter(&m, &s, POSTAL);
    uint8_t mem[KFD_REGISTRATION_MAX + 8];
    kf_buf mr1;
    kf_buf_fixed(&mr1, mem, KFD_REGISTRATION_MAX);
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", REG_TIME, NULL, NULL, &mr1), KF_OK);
    struct kfd_registration r, good;
    assert_int_equal(kfd_registration_decode(mem, mr1.len, &good), KF_OK);
    for (size_t len = 0; len < mr1.len; len++)
        assert_int_equal(kfd_registration_decode(mem, len, &r), KF_ERR_PAIR_MALFORMED);
    memset(mem + mr1.len, 0, 8);
    assert_int_equal(kfd_registration_decode(mem, mr1.len + 8, &r), KF_ERR_PAIR_MALFORMED);
    assert_int_equal(kfd_registration_decode(mem, KFD_REGISTRATION_MAX + 1, &r),
                     KF_ERR_PAIR_MALFORMED);
    assert_int_equal(kfd_registration_decode(NULL, 8, &r), KF_ERR_ARG);
    unsigned refused = 0, caught_by_mac = 0;
    for (size_t i = 0; i < mr1.len; i++) {
        mem[i] ^= 0x01;
        int rc = kfd_registration_decode(mem, mr1.len, &r);
        if (rc == KF_OK) {
            /* What the server does next: every MAC under its key. One of them fails. */
            bool all_good = true;
            for (size_t k = 0; k < r.nmacs; k++) {
                int j = slot_index(&m, r.mac[k].domain);
                uint8_t mac[16];
                if (j < 0 ||
                    kfd_registration_mac(m.slot[j].key, &r, r.mac[k].domain, r.mac[k].key_id,
                                         mac) != KF_OK ||
                    memcmp(mac, r.mac[k].mac, 16) != 0)
                    all_good = false;
            }
            assert_false(all_good);
            caught_by_mac++;
        } else {
            assert_int_equal(rc, KF_ERR_PAIR_MALFORMED);
            refused++;
        }
        mem[i] ^= 0x01;
    }
    print_message("MR1 flipped bits: %u refused by the decoder, %u by the MACs\n", refused,
                  caught_by_mac);
    kfd_meter_wipe(&m);
}

/* ---- printing ---- */

static void expected_token(const struct kfd_meter *m, const char *domain,
                           const struct kfd_txdata *tx, uint8_t token[KFD_TOKEN_LEN])
{
    uint8_t tk[KFD_METER_KEY_LEN], canonical[KFD_TXDATA_LEN];
    int i = slot_index(m, domain);
    assert_true(i >= 0);
    assert_int_equal(kfd_token_key(m->slot[i].key, domain, tx->date / 100, tk), KF_OK);
    assert_int_equal(kfd_txdata_encode(tx, canonical), KF_OK);
    assert_int_equal(kfd_token_compute(tk, canonical, token), KF_OK);
}

static void print_counts_persists_then_tokens(void **state)
{
    (void)state;
    struct meter_store s;
    struct kfd_meter m;
    struct kfd_piece piece;
    make_meter(&m, &s, POSTAL);
    assert_int_equal(kfd_meter_print(&m, VENDOR, POSTAL, REG_DAY, 85, "10115", &piece),
                     KF_ERR_METER_NOT_REGISTERED);
    register_meter(&m);
    s.watch = &piece;
    uint8_t last_vendor[KFD_TOKEN_LEN] = {0};
    for (uint32_t n = 1; n <= 5; n++) {
        unsigned saves = s.saves;
        memset(&piece, 0xAB, sizeof(piece));
        assert_int_equal(kfd_meter_print(&m, VENDOR, POSTAL, REG_DAY + n, 85, "10115", &piece),
                         KF_OK);
        /* Stored once, with the new count, while no token existed yet (store_fn checks). */
        assert_int_equal(s.saves, saves + 1);
        assert_int_equal(s.saved_count, n);
        assert_int_equal(m.piece_count, n);
        assert_int_equal(piece.tx.piece_count, n);
        assert_int_equal(piece.tx.date, REG_DAY + n);
        assert_int_equal(piece.tx.value, 85);
        assert_string_equal(piece.tx.postal_code, "10115");
        assert_string_equal(piece.tx.msn, MSN);
        uint8_t want[KFD_TOKEN_LEN];
        expected_token(&m, VENDOR, &piece.tx, want);
        assert_memory_equal(piece.vendor_token, want, KFD_TOKEN_LEN);
        expected_token(&m, POSTAL, &piece.tx, want);
        assert_memory_equal(piece.postal_token, want, KFD_TOKEN_LEN);
        assert_memory_not_equal(piece.vendor_token, piece.postal_token, KFD_TOKEN_LEN);
        assert_memory_not_equal(piece.vendor_token, last_vendor, KFD_TOKEN_LEN);
        memcpy(last_vendor, piece.vendor_token, KFD_TOKEN_LEN);
    }
    /* The domains' order is the caller's: vendor first, postal second. */
    assert_int_equal(kfd_meter_print(&m, POSTAL, VENDOR, REG_DAY, 85, "10115", &piece), KF_OK);
    uint8_t want[KFD_TOKEN_LEN];
    expected_token(&m, POSTAL, &piece.tx, want);
    assert_memory_equal(piece.vendor_token, want, KFD_TOKEN_LEN);
    /* A reloaded device goes on from the stored count. */
    struct kfd_meter back;
    assert_int_equal(kfd_meter_load(&back, s.saved, s.saved_len, store_fn, &s), KF_OK);
    assert_int_equal(back.piece_count, 6);
    assert_int_equal(kfd_meter_print(&back, VENDOR, POSTAL, REG_DAY, 0, "A", &piece), KF_OK);
    assert_int_equal(piece.tx.piece_count, 7);
    kfd_meter_wipe(&m);
    kfd_meter_wipe(&back);
}

static void print_refusals(void **state)
{
    (void)state;
    struct meter_store s;
    struct kfd_meter m;
    struct kfd_piece piece;
    make_meter(&m, &s, POSTAL);
    register_meter(&m);
    unsigned saves = s.saves;
    /* Before the registration date (2026-11-15, registered at noon UTC). */
    assert_int_equal(kfd_meter_print(&m, VENDOR, POSTAL, REG_DAY - 1, 85, "10115", &piece),
                     KF_ERR_METER_FIELD);
    assert_int_equal(kfd_meter_print(&m, VENDOR, POSTAL, 20261031, 85, "10115", &piece),
                     KF_ERR_METER_FIELD);
    static const uint32_t dates[] = {20261131, 20270229, 20261300,
                                     20261200, 21000101, 20261115u * 10};
    for (size_t i = 0; i < sizeof(dates) / sizeof(dates[0]); i++)
        assert_int_equal(kfd_meter_print(&m, VENDOR, POSTAL, dates[i], 85, "10115", &piece),
                         KF_ERR_METER_FIELD);
    static const char *codes[] = {"", "10115 ", "abc", "12345678901", "1_2"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        assert_int_equal(kfd_meter_print(&m, VENDOR, POSTAL, REG_DAY, 85, codes[i], &piece),
                         KF_ERR_METER_FIELD);
    assert_int_equal(kfd_meter_print(&m, VENDOR, "postal-fr", REG_DAY, 85, "10115", &piece),
                     KF_ERR_METER_NO_KEY);
    assert_int_equal(kfd_meter_print(&m, "vendor2", POSTAL, REG_DAY, 85, "10115", &piece),
                     KF_ERR_METER_NO_KEY);
    assert_int_equal(kfd_meter_print(&m, VENDOR, VENDOR, REG_DAY, 85, "10115", &piece), KF_ERR_ARG);
    assert_int_equal(kfd_meter_print(&m, VENDOR, POSTAL, REG_DAY, 85, NULL, &piece), KF_ERR_ARG);
    assert_int_equal(m.piece_count, 0);
    assert_int_equal(s.saves, saves);
    /* The registration day itself, and the leap day of 2028. */
    assert_int_equal(kfd_meter_print(&m, VENDOR, POSTAL, REG_DAY, 85, "10115", &piece), KF_OK);
    assert_int_equal(kfd_meter_print(&m, VENDOR, POSTAL, 20280229, 85, "10115", &piece), KF_OK);
    assert_int_equal(m.piece_count, 2);
    /* Storage fails: no count used, no token. */
    s.fail = true;
    memset(&piece, 0xAB, sizeof(piece));
    assert_int_equal(kfd_meter_print(&m, VENDOR, POSTAL, REG_DAY, 85, "10115", &piece),
                     KF_ERR_DEVICE_STORAGE);
    assert_int_equal(m.piece_count, 2);
    assert_true(all_zero(&piece, sizeof(piece)));
    s.fail = false;
    /* The counter ends at 2^32 - 1. */
    m.piece_count = UINT32_MAX - 1;
    assert_int_equal(kfd_meter_print(&m, VENDOR, POSTAL, REG_DAY, 85, "10115", &piece), KF_OK);
    assert_int_equal(piece.tx.piece_count, UINT32_MAX);
    saves = s.saves;
    assert_int_equal(kfd_meter_print(&m, VENDOR, POSTAL, REG_DAY, 85, "10115", &piece),
                     KF_ERR_METER_COUNT);
    assert_int_equal(s.saves, saves);
    assert_int_equal(m.piece_count, UINT32_MAX);
    kfd_meter_wipe(&m);
}

/* ---- canonical transaction data ---- */

static struct kfd_txdata sample_tx(void)
{
    struct kfd_txdata tx;
    memset(&tx, 0, sizeof(tx));
    tx.date = 20261115;
    tx.value = 0x01020304;
    tx.piece_count = 0xA0B0C0D0;
    strcpy(tx.postal_code, "10115");
    strcpy(tx.msn, MSN);
    return tx;
}

static void txdata_layout_and_round_trip(void **state)
{
    (void)state;
    struct kfd_txdata tx = sample_tx(), back;
    uint8_t out[KFD_TXDATA_LEN], want[KFD_TXDATA_LEN];
    /* docs/manufacturing.md "Tokens", byte by byte. */
    want[0] = 1;
    want[1] = 0x01, want[2] = 0x35, want[3] = 0x28, want[4] = 0xFB; /* 20261115 */
    want[5] = 1, want[6] = 2, want[7] = 3, want[8] = 4;
    want[9] = 0xA0, want[10] = 0xB0, want[11] = 0xC0, want[12] = 0xD0;
    memcpy(want + 13, "10115     ", 10);
    memcpy(want + 23, "KF-000123       ", 16);
    want[39] = 0;
    assert_int_equal(kfd_txdata_encode(&tx, out), KF_OK);
    assert_memory_equal(out, want, sizeof(want));
    assert_int_equal(kfd_txdata_decode(out, &back), KF_OK);
    assert_memory_equal(&back, &tx, sizeof(tx));
    /* Full-width fields. */
    strcpy(tx.postal_code, "ABCDEFGHIJ");
    strcpy(tx.msn, "0123456789-ABCDE");
    assert_int_equal(kfd_txdata_encode(&tx, out), KF_OK);
    assert_int_equal(kfd_txdata_decode(out, &back), KF_OK);
    assert_string_equal(back.postal_code, "ABCDEFGHIJ");
    assert_string_equal(back.msn, "0123456789-ABCDE");
    /* Dates: the calendar, 2000..2099. */
    static const struct {
        uint32_t date;
        bool ok;
    } dates[] = {{20000101, true},  {20991231, true},  {19991231, false},  {21000101, false},
                 {20000229, true},  {20240229, true},  {20230229, false},  {20230431, false},
                 {20230430, true},  {20231301, false}, {20230001, false},  {20230100, false},
                 {20230132, false}, {0, false},        {UINT32_MAX, false}};
    for (size_t i = 0; i < sizeof(dates) / sizeof(dates[0]); i++) {
        tx = sample_tx();
        tx.date = dates[i].date;
        assert_int_equal(kfd_txdata_encode(&tx, out), dates[i].ok ? KF_OK : KF_ERR_METER_FIELD);
        /* The decoder applies the same rule. */
        tx.date = 20261115;
        assert_int_equal(kfd_txdata_encode(&tx, out), KF_OK);
        out[1] = (uint8_t)(dates[i].date >> 24), out[2] = (uint8_t)(dates[i].date >> 16);
        out[3] = (uint8_t)(dates[i].date >> 8), out[4] = (uint8_t)dates[i].date;
        assert_int_equal(kfd_txdata_decode(out, &back), dates[i].ok ? KF_OK : KF_ERR_METER_FIELD);
    }
}

static void txdata_refusals(void **state)
{
    (void)state;
    struct kfd_txdata tx, back;
    uint8_t out[KFD_TXDATA_LEN], good[KFD_TXDATA_LEN];
    static const char *codes[] = {"", "abc", "1 2", "A_B", " 12"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        tx = sample_tx();
        strcpy(tx.postal_code, codes[i]);
        assert_int_equal(kfd_txdata_encode(&tx, out), KF_ERR_METER_FIELD);
    }
    tx = sample_tx();
    memset(tx.postal_code, 'A', sizeof(tx.postal_code)); /* 11 characters, no NUL */
    assert_int_equal(kfd_txdata_encode(&tx, out), KF_ERR_METER_FIELD);
    tx = sample_tx();
    memset(tx.msn, 'A', sizeof(tx.msn)); /* 17 characters, no NUL */
    assert_int_equal(kfd_txdata_encode(&tx, out), KF_ERR_METER_FIELD);
    tx = sample_tx(), tx.msn[0] = '\0';
    assert_int_equal(kfd_txdata_encode(&tx, out), KF_ERR_METER_FIELD);
    tx = sample_tx(), tx.msn[1] = 'f';
    assert_int_equal(kfd_txdata_encode(&tx, out), KF_ERR_METER_FIELD);
    assert_int_equal(kfd_txdata_encode(NULL, out), KF_ERR_ARG);

    tx = sample_tx();
    assert_int_equal(kfd_txdata_encode(&tx, good), KF_OK);
    const struct {
        size_t at;
        uint8_t value;
    } bad[] = {
        {0, 0},
        {0, 2}, /* version */
        {39, ' '},
        {39, 1},    /* trailing byte */
        {13, ' '},  /* postal code starts with a space */
        {19, 'X'},  /* a character after the padding began */
        {22, '\0'}, /* padding that is not a space */
        {14, 'a'},  /* lower case */
        {23, ' '},  /* MSN starts with a space */
        {38, '-'} /* (a '-' after padding) */,
        {30, '.'},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(out, good, sizeof(out));
        out[bad[i].at] = bad[i].value;
        assert_int_equal(kfd_txdata_decode(out, &back), KF_ERR_METER_FIELD);
        assert_true(all_zero(&back, sizeof(back)));
    }
    /* A whole field of spaces. */
    memcpy(out, good, sizeof(out));
    memset(out + 13, ' ', 10);
    assert_int_equal(kfd_txdata_decode(out, &back), KF_ERR_METER_FIELD);
    memcpy(out, good, sizeof(out));
    memset(out + 23, ' ', 16);
    assert_int_equal(kfd_txdata_decode(out, &back), KF_ERR_METER_FIELD);
    /* Any piece count and value are data. */
    memcpy(out, good, sizeof(out));
    memset(out + 5, 0xFF, 8);
    assert_int_equal(kfd_txdata_decode(out, &back), KF_OK);
    assert_int_equal(back.value, UINT32_MAX);
    assert_int_equal(back.piece_count, UINT32_MAX);
}

/* ---- the printed line ---- */

static struct kfd_piece sample_piece(void)
{
    struct kfd_piece p;
    memset(&p, 0, sizeof(p));
    p.tx = sample_tx();
    p.tx.value = 85;
    p.tx.piece_count = 1234;
    static const uint8_t v[KFD_TOKEN_LEN] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xAB};
    memcpy(p.vendor_token, v, KFD_TOKEN_LEN);
    memset(p.postal_token, 0xFF, KFD_TOKEN_LEN);
    return p;
}

/* Crockford base 32 and mod 37 worked out by hand (python3: int -> base 32 digits, v % 37). */
#define SAMPLE_LINE "KF1 KF-000123 20261115 85 1234 10115 014D2PF2DBA 7ZZZZZZZZZS"

static void text_format_and_parse(void **state)
{
    (void)state;
    struct kfd_piece p = sample_piece(), back;
    char line[KFD_PIECE_TEXT_MAX];
    assert_int_equal(kfd_piece_format(&p, line), KF_OK);
    assert_string_equal(line, SAMPLE_LINE);
    assert_int_equal(kfd_piece_parse(line, &back), KF_OK);
    assert_memory_equal(&back, &p, sizeof(p));
    /* Zero and the extremes. */
    memset(p.vendor_token, 0, KFD_TOKEN_LEN);
    p.postal_token[5] = 0x01, memset(p.postal_token, 0, 5);
    p.tx.value = 0, p.tx.piece_count = UINT32_MAX;
    assert_int_equal(kfd_piece_format(&p, line), KF_OK);
    assert_string_equal(line, "KF1 KF-000123 20261115 0 4294967295 10115 00000000000 00000000011");
    assert_int_equal(kfd_piece_parse(line, &back), KF_OK);
    assert_memory_equal(&back, &p, sizeof(p));
    /* The longest line fits. */
    p = sample_piece();
    strcpy(p.tx.msn, "ABCDEFGHIJKLMNOP"), strcpy(p.tx.postal_code, "ABCDEFGHIJ");
    p.tx.value = p.tx.piece_count = UINT32_MAX;
    assert_int_equal(kfd_piece_format(&p, line), KF_OK);
    print_message("longest line: %zu characters\n", strlen(line));
    assert_int_equal(kfd_piece_parse(line, &back), KF_OK);
    assert_memory_equal(&back, &p, sizeof(p));
    /* Random tokens round trip. */
    for (unsigned i = 0; i < 2000; i++) {
        p = sample_piece();
        for (size_t k = 0; k < KFD_TOKEN_LEN; k++) {
            p.vendor_token[k] = (uint8_t)(i * 131 + k * 17);
            p.postal_token[k] = (uint8_t)(i * 7 + k * 251 + (i >> 3));
        }
        p.tx.value = i * 1000003u;
        assert_int_equal(kfd_piece_format(&p, line), KF_OK);
        assert_int_equal(kfd_piece_parse(line, &back), KF_OK);
        assert_memory_equal(&back, &p, sizeof(p));
    }
    /* format refuses bad fields. */
    p = sample_piece(), p.tx.date = 20261131;
    assert_int_equal(kfd_piece_format(&p, line), KF_ERR_METER_FIELD);
    assert_string_equal(line, "");
    p = sample_piece(), strcpy(p.tx.postal_code, "a");
    assert_int_equal(kfd_piece_format(&p, line), KF_ERR_METER_FIELD);
}

static void text_parse_refusals(void **state)
{
    (void)state;
    struct kfd_piece back;
    static const struct {
        const char *line;
        int rc;
    } v[] = {
        {SAMPLE_LINE, KF_OK},
        {"", KF_ERR_TOKEN_TEXT},
        {"kf1 KF-000123 20261115 85 1234 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF2 KF-000123 20261115 85 1234 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1  KF-000123 20261115 85 1234 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {" " SAMPLE_LINE, KF_ERR_TOKEN_TEXT},
        {SAMPLE_LINE " ", KF_ERR_TOKEN_TEXT},
        {SAMPLE_LINE "\n", KF_ERR_TOKEN_TEXT},
        {SAMPLE_LINE " 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 85 1234 10115 014D2PF2DBA", KF_ERR_TOKEN_TEXT},
        {"KF1\tKF-000123 20261115 85 1234 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        /* numbers: no sign, no leading zero, at most 10 digits */
        {"KF1 KF-000123 20261115 085 1234 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 +85 1234 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 -85 1234 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 85 00 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 85 12345678901 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 4294967296 1234 10115 014D2PF2DBA 7ZZZZZZZZZS",
         KF_ERR_METER_FIELD},
        {"KF1 KF-000123 20261115 85 9999999999 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_METER_FIELD},
        {"KF1 KF-000123 20261115 0x55 1234 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        /* the date: 8 digits, a real day */
        {"KF1 KF-000123 2026111 85 1234 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 202611150 85 1234 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261131 85 1234 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_METER_FIELD},
        {"KF1 KF-000123 19991231 85 1234 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_METER_FIELD},
        /* MSN and postal code */
        {"KF1 kf-000123 20261115 85 1234 10115 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_METER_FIELD},
        {"KF1 ABCDEFGHIJKLMNOPQ 20261115 85 1234 10115 014D2PF2DBA 7ZZZZZZZZZS",
         KF_ERR_METER_FIELD},
        {"KF1 KF-000123 20261115 85 1234 ABCDEFGHIJK 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_METER_FIELD},
        {"KF1 KF-000123 20261115 85 1234 101_5 014D2PF2DBA 7ZZZZZZZZZS", KF_ERR_METER_FIELD},
        /* tokens: 11 symbols, upper case, no aliases, below 2^48, right check symbol */
        {"KF1 KF-000123 20261115 85 1234 10115 014d2pf2dba 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 85 1234 10115 014D2PF2DBA 7zzzzzzzzzs", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 85 1234 10115 014D2PF2DB 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 85 1234 10115 014D2PF2DBAA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 85 1234 10115 014D2PF2DBA 7ZZZZZZZZZT", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 85 1234 10115 O14D2PF2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 85 1234 10115 014D2PF2DBA 7ZZZZZZZZZI", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 85 1234 10115 014D2-F2DBA 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        /* 2^48 = "8000000000", 2^48 mod 37 = 26 ('T'): a good check symbol, too large a value */
        {"KF1 KF-000123 20261115 85 1234 10115 8000000000T 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
        {"KF1 KF-000123 20261115 85 1234 10115 ZZZZZZZZZZ$ 7ZZZZZZZZZS", KF_ERR_TOKEN_TEXT},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        print_message("line %zu\n", i);
        memset(&back, 0xAB, sizeof(back));
        assert_int_equal(kfd_piece_parse(v[i].line, &back), v[i].rc);
        if (v[i].rc != KF_OK)
            assert_true(all_zero(&back, sizeof(back)));
    }
    /* No terminator within KFD_PIECE_TEXT_MAX bytes. */
    char longline[KFD_PIECE_TEXT_MAX + 1];
    memset(longline, 'A', sizeof(longline));
    assert_int_equal(kfd_piece_parse(longline, &back), KF_ERR_TOKEN_TEXT);
    longline[KFD_PIECE_TEXT_MAX] = '\0';
    assert_int_equal(kfd_piece_parse(longline, &back), KF_ERR_TOKEN_TEXT);
    assert_int_equal(kfd_piece_parse(NULL, &back), KF_ERR_ARG);
}

/* The check symbol catches every single-symbol substitution: each of the 11 symbols of both
 * tokens replaced by every other byte value is refused (as KF_ERR_TOKEN_TEXT). */
static void text_check_symbol_catches_every_substitution(void **state)
{
    (void)state;
    struct kfd_piece p = sample_piece(), back;
    char line[KFD_PIECE_TEXT_MAX];
    /* Tokens with digits in every region of the alphabet. */
    static const uint8_t v[KFD_TOKEN_LEN] = {0x3A, 0x5F, 0xC1, 0x07, 0x9E, 0x64};
    memcpy(p.vendor_token, v, KFD_TOKEN_LEN);
    assert_int_equal(kfd_piece_format(&p, line), KF_OK);
    size_t len = strlen(line);
    unsigned tried = 0;
    for (size_t tok = 0; tok < 2; tok++) {
        size_t start = len - (tok ? 11 : 23);
        for (size_t i = start; i < start + 11; i++) {
            char orig = line[i];
            for (int c = 1; c < 256; c++) {
                if (c == (unsigned char)orig)
                    continue;
                line[i] = (char)c;
                assert_int_equal(kfd_piece_parse(line, &back), KF_ERR_TOKEN_TEXT);
                tried++;
            }
            line[i] = orig;
        }
    }
    assert_int_equal(kfd_piece_parse(line, &back), KF_OK);
    print_message("%u substitutions refused\n", tried);
    /* And for comparison: a transposition of two different data digits is also caught. */
    size_t at = len - 23;
    for (size_t i = at; i + 1 < at + 10; i++) {
        if (line[i] == line[i + 1])
            continue;
        char t = line[i];
        line[i] = line[i + 1], line[i + 1] = t;
        assert_int_equal(kfd_piece_parse(line, &back), KF_ERR_TOKEN_TEXT);
        line[i + 1] = line[i], line[i] = t;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(install_answers_evidence_and_persists),
        cmocka_unit_test(install_refusals),
        cmocka_unit_test(install_storage_failure_installs_nothing),
        cmocka_unit_test(state_round_trip),
        cmocka_unit_test(state_every_flip_and_truncation),
        cmocka_unit_test(state_inconsistencies_refused),
        cmocka_unit_test(register_macs_rename_and_persist),
        cmocka_unit_test(register_refusals),
        cmocka_unit_test(registration_decode_refusals),
        cmocka_unit_test(print_counts_persists_then_tokens),
        cmocka_unit_test(print_refusals),
        cmocka_unit_test(txdata_layout_and_round_trip),
        cmocka_unit_test(txdata_refusals),
        cmocka_unit_test(text_format_and_parse),
        cmocka_unit_test(text_parse_refusals),
        cmocka_unit_test(text_check_symbol_catches_every_substitution),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
