/*
 * The manufacturing token arithmetic of libkeyfleet-device (include/keyfleet/meter.h)
 * checked against an independent composition of the server's crypto module
 * (kf_aes_cmac, kf_kdf108_derive: src/crypto, its own code over nettle) with
 * every byte string built by hand here from docs/manufacturing.md; frozen
 * known-answer vectors for each; and the AES-256 CMAC examples of NIST
 * SP 800-38B (Appendix D.3) through the same nettle path the meter uses.
 */
#include "test_device_fixture.h"
#include "keyfleet/crypto.h"
#include "keyfleet/meter.h"

/*
 * Frozen known-answer vectors, key 00 01 .. 1f. Computed once, before the device code was run
 * against them, by a throw-away program that linked only kf_crypto and called kf_aes_cmac and
 * kf_kdf108_derive over byte strings built by hand exactly as the server_* helpers below build
 * them (labels "keyfleet token v1" / "keyfleet register v1"; token context "vendor" 00
 * [202611]_32; registration: the sample registration, domain "vendor", key ID 7; token: the
 * canonical data of 2026-11-15, value 85, piece 1, "10115", "KF-000123"). They pin the format:
 * a change to any label, layout or primitive breaks them.
 */
#define KAT_TEST_TOKENS "38f0307df0112425"
#define KAT_TOKEN_KEY "f8c5a81a6972730641b45772645249b0c85e83abd1c01b62c0519c7cf29dad06"
#define KAT_REGISTRATION_KEY "e1e1fffbc455d85821de519b6e873d2f6935b1694dc249f2f3024ab9405ad9b4"
#define KAT_REGISTRATION_MAC "12e8fc0116e190ff18730eed3d73dc9e"
#define KAT_TOKEN "4d092df46894"

static void hex_of(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Compare with a frozen vector, printing what was computed if it differs. */
static void assert_hex(const uint8_t *p, size_t n, const char *want)
{
    char got[2 * 64 + 1];
    assert_true(n <= 64);
    hex_of(p, n, got);
    if (strcmp(got, want) != 0)
        print_message("computed %s\nexpected %s\n", got, want);
    assert_string_equal(got, want);
}

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void be64(uint8_t *p, uint64_t v)
{
    be32(p, (uint32_t)(v >> 32));
    be32(p + 4, (uint32_t)v);
}

/* The frozen vectors' key: 00 01 02 ... 1f. */
static void kat_key(uint8_t key[32])
{
    for (size_t i = 0; i < 32; i++)
        key[i] = (uint8_t)i;
}

/* ---- the standard ---- */

static void cmac_aes256_sp800_38b(void **state)
{
    (void)state;
    /* SP 800-38B Appendix D.3, CMAC-AES256, Examples 9-12 (Mlen 0, 128, 320, 512 bits). */
    uint8_t key[32], msg[64], mac[16], want[16];
    unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", key, 32);
    unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
          "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
          msg, 64);
    static const struct {
        size_t len;
        const char *mac;
    } v[] = {{0, "028962f61b7bf89efc6b551f4667d983"},
             {16, "28a7023f452e8f82bd4bf28d8c37c35c"},
             {40, "aaf3d8f1de5640c232f5b169b9c911e6"},
             {64, "e1992190549f6ed5696a2c056c315410"}};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        unhex(v[i].mac, want, 16);
        kfd_mac(key, msg, v[i].len, mac); /* the device library's CMAC, as the meter calls it */
        assert_memory_equal(mac, want, 16);
        assert_int_equal(kf_aes_cmac(key, 32, msg, v[i].len, mac), KF_OK);
        assert_memory_equal(mac, want, 16);
    }
    /* Example 11 is 40 bytes: exactly a canonical transaction data, so kfd_token_compute over it
     * must give the tag's first 6 bytes. */
    uint8_t token[KFD_TOKEN_LEN];
    assert_int_equal(kfd_token_compute(key, msg, token), KF_OK);
    assert_hex(token, KFD_TOKEN_LEN, "aaf3d8f1de56");
}

/* ---- cross-checks with the server's crypto module ---- */

static void test_tokens_match_server_cmac(void **state)
{
    (void)state;
    for (unsigned k = 0; k < 16; k++) {
        uint8_t key[32], tokens[KFD_TEST_TOKENS_LEN], mac1[16], mac2[16];
        fill_key(key, (uint8_t)(k * 13 + 1));
        assert_int_equal(kfd_test_tokens(key, tokens), KF_OK);
        assert_int_equal(kf_aes_cmac(key, 32, (const uint8_t *)"KF-TEST-PATTERN1", 16, mac1),
                         KF_OK);
        assert_int_equal(kf_aes_cmac(key, 32, (const uint8_t *)"KF-TEST-PATTERN2", 16, mac2),
                         KF_OK);
        assert_memory_equal(tokens, mac1, 4);
        assert_memory_equal(tokens + 4, mac2, 4);
    }
    /* Frozen: key 00..1f, computed once with kf_aes_cmac over the two patterns as above. */
    uint8_t key[32], tokens[KFD_TEST_TOKENS_LEN];
    kat_key(key);
    assert_int_equal(kfd_test_tokens(key, tokens), KF_OK);
    assert_hex(tokens, sizeof(tokens), KAT_TEST_TOKENS);
}

/* TK = kf_kdf108_derive(K, "keyfleet token v1", domain || 0x00 || [period]_32, 32 bytes). */
static void server_token_key(const uint8_t key[32], const char *domain, uint32_t period,
                             uint8_t tk[32])
{
    uint8_t context[80];
    size_t n = strlen(domain);
    memcpy(context, domain, n);
    context[n] = 0x00;
    be32(context + n + 1, period);
    assert_int_equal(kf_kdf108_derive(key, 32, "keyfleet token v1", context, n + 5, tk, 32), KF_OK);
}

static void token_key_matches_server_kdf(void **state)
{
    (void)state;
    static const char *domains[] = {
        "vendor", "USPS", "earth", "a",
        "0123456789012345678901234567890123456789012345678901234567890123"};
    static const uint32_t periods[] = {200001, 202611, 202612, 209912};
    for (size_t d = 0; d < sizeof(domains) / sizeof(domains[0]); d++)
        for (size_t p = 0; p < sizeof(periods) / sizeof(periods[0]); p++) {
            uint8_t key[32], tk[32], want[32];
            fill_key(key, (uint8_t)(d * 5 + p));
            assert_int_equal(kfd_token_key(key, domains[d], periods[p], tk), KF_OK);
            server_token_key(key, domains[d], periods[p], want);
            assert_memory_equal(tk, want, 32);
        }
    /* Periods are YYYYMM of 2000..2099; domains follow the name rules. */
    uint8_t key[32], tk[32];
    fill_key(key, 1);
    static const uint32_t bad[] = {0, 199912, 202600, 202613, 210001, 20261115};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kfd_token_key(key, "vendor", bad[i], tk), KF_ERR_METER_FIELD);
    assert_int_equal(kfd_token_key(key, "", 202611, tk), KF_ERR_NAME);
    assert_int_equal(kfd_token_key(key, "ven dor", 202611, tk), KF_ERR_NAME);
    assert_int_equal(kfd_token_key(key, NULL, 202611, tk), KF_ERR_NAME);
    /* Frozen: key 00..1f, "vendor", 202611, computed once with server_token_key above. */
    kat_key(key);
    assert_int_equal(kfd_token_key(key, "vendor", 202611, tk), KF_OK);
    assert_hex(tk, 32, KAT_TOKEN_KEY);
}

/* The canonical registration bytes, by hand from docs/manufacturing.md. */
static size_t server_registration_canonical(const struct kfd_registration *r, const char *domain,
                                            uint64_t key_id, uint8_t *out)
{
    size_t n = 0;
    memcpy(out, "KFREG1", 6), n += 6;
    memset(out + n, ' ', 16), memcpy(out + n, r->msn, strlen(r->msn)), n += 16;
    memset(out + n, ' ', 16), memcpy(out + n, r->indicia, strlen(r->indicia)), n += 16;
    memcpy(out + n, r->country, 2), n += 2;
    be64(out + n, (uint64_t)r->date), n += 8;
    memcpy(out + n, domain, strlen(domain)), n += strlen(domain);
    out[n++] = 0x00;
    be64(out + n, key_id), n += 8;
    return n;
}

static void server_registration_mac(const uint8_t key[32], const struct kfd_registration *r,
                                    const char *domain, uint64_t key_id, uint8_t mac[16])
{
    uint8_t rk[32], canonical[160];
    assert_int_equal(kf_kdf108_derive(key, 32, "keyfleet register v1", (const uint8_t *)domain,
                                      strlen(domain), rk, 32),
                     KF_OK);
    size_t n = server_registration_canonical(r, domain, key_id, canonical);
    assert_int_equal(kf_aes_cmac(rk, 32, canonical, n, mac), KF_OK);
}

static struct kfd_registration sample_registration(void)
{
    struct kfd_registration r;
    memset(&r, 0, sizeof(r));
    strcpy(r.msn, "KF-000123");
    strcpy(r.indicia, "IND-42");
    strcpy(r.country, "DE");
    r.date = 1794744000; /* 2026-11-15T12:00:00Z */
    return r;
}

static void registration_mac_matches_server(void **state)
{
    (void)state;
    struct kfd_registration r = sample_registration();
    uint8_t key[32], rk[32], want_rk[32], mac[16], want[16];
    for (unsigned k = 0; k < 8; k++) {
        fill_key(key, (uint8_t)(k * 7 + 3));
        const char *domain = k % 2 ? "vendor" : "postal-de";
        uint64_t key_id = k == 7 ? UINT64_MAX : k + 1;
        if (k == 5)
            strcpy(r.msn, "ABCDEFGHIJKLMNOP"), strcpy(r.indicia, "0123456789-ABCDE");
        assert_int_equal(kfd_registration_key(key, domain, rk), KF_OK);
        assert_int_equal(kf_kdf108_derive(key, 32, "keyfleet register v1", (const uint8_t *)domain,
                                          strlen(domain), want_rk, 32),
                         KF_OK);
        assert_memory_equal(rk, want_rk, 32);
        assert_int_equal(kfd_registration_mac(key, &r, domain, key_id, mac), KF_OK);
        server_registration_mac(key, &r, domain, key_id, want);
        assert_memory_equal(mac, want, 16);
    }
    /* And what a meter writes into MR1 is that MAC. */
    uint8_t mem[KFD_REGISTRATION_MAX];
    kf_buf mr1;
    struct kfd_meter m;
    struct fake_env f;
    struct kfd_env env = fake_env_of(&f, 1);
    uint8_t tokens[KFD_TEST_TOKENS_LEN];
    assert_int_equal(kfd_meter_init(&m, "KF-000123", env.save, env.ctx), KF_OK);
    fill_key(key, 77);
    assert_int_equal(kfd_meter_install(&m, "vendor", 9, key, tokens), KF_OK);
    kf_buf_fixed(&mr1, mem, sizeof(mem));
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", 1794744000, NULL, NULL, &mr1), KF_OK);
    struct kfd_registration got;
    assert_int_equal(kfd_registration_decode(mem, mr1.len, &got), KF_OK);
    assert_int_equal(got.nmacs, 1);
    r = sample_registration();
    server_registration_mac(key, &r, "vendor", 9, want);
    assert_memory_equal(got.mac[0].mac, want, 16);
    kfd_meter_wipe(&m);
    /* Frozen: key 00..1f, the sample registration, "vendor", key ID 7; computed once with
     * kf_kdf108_derive and kf_aes_cmac over the canonical bytes built above. */
    kat_key(key);
    r = sample_registration();
    assert_int_equal(kfd_registration_key(key, "vendor", rk), KF_OK);
    assert_hex(rk, 32, KAT_REGISTRATION_KEY);
    assert_int_equal(kfd_registration_mac(key, &r, "vendor", 7, mac), KF_OK);
    assert_hex(mac, 16, KAT_REGISTRATION_MAC);
}

/* The 40 canonical bytes, by hand from the table in docs/manufacturing.md. */
static void server_canonical(uint32_t date, uint32_t value, uint32_t count, const char *postal,
                             const char *msn, uint8_t out[40])
{
    out[0] = 1;
    be32(out + 1, date);
    be32(out + 5, value);
    be32(out + 9, count);
    memset(out + 13, ' ', 26);
    memcpy(out + 13, postal, strlen(postal));
    memcpy(out + 23, msn, strlen(msn));
    out[39] = 0;
}

static void token_matches_server(void **state)
{
    (void)state;
    /* kfd_txdata_encode + kfd_token_compute against the hand-built bytes and kf_aes_cmac. */
    struct kfd_txdata tx;
    memset(&tx, 0, sizeof(tx));
    tx.date = 20261115, tx.value = 85, tx.piece_count = 1;
    strcpy(tx.postal_code, "10115"), strcpy(tx.msn, "KF-000123");
    uint8_t canonical[40], want_canonical[40], tk[32], token[KFD_TOKEN_LEN], mac[16];
    assert_int_equal(kfd_txdata_encode(&tx, canonical), KF_OK);
    server_canonical(20261115, 85, 1, "10115", "KF-000123", want_canonical);
    assert_memory_equal(canonical, want_canonical, 40);
    for (unsigned k = 0; k < 8; k++) {
        fill_key(tk, (uint8_t)(k + 40));
        canonical[9 + 3] = (uint8_t)k;
        assert_int_equal(kfd_token_compute(tk, canonical, token), KF_OK);
        assert_int_equal(kf_aes_cmac(tk, 32, canonical, 40, mac), KF_OK);
        assert_memory_equal(token, mac, KFD_TOKEN_LEN);
    }

    /* A whole print: the meter's tokens verified the way keyfleetd would, from the master keys,
     * with the server's KDF and CMAC over the bytes built by hand. */
    struct fake_env f;
    struct kfd_env env = fake_env_of(&f, 2);
    struct kfd_meter m;
    uint8_t vendor_key[32], postal_key[32], tokens[KFD_TEST_TOKENS_LEN], mem[KFD_REGISTRATION_MAX];
    kf_buf mr1;
    fill_key(vendor_key, 5), fill_key(postal_key, 6);
    assert_int_equal(kfd_meter_init(&m, "KF-000123", env.save, env.ctx), KF_OK);
    assert_int_equal(kfd_meter_install(&m, "vendor", 1, vendor_key, tokens), KF_OK);
    assert_int_equal(kfd_meter_install(&m, "postal-de", 2, postal_key, tokens), KF_OK);
    kf_buf_fixed(&mr1, mem, sizeof(mem));
    assert_int_equal(kfd_meter_register(&m, "DE", "IND-42", 1794744000, NULL, NULL, &mr1), KF_OK);
    for (uint32_t n = 1; n <= 3; n++) {
        struct kfd_piece piece;
        uint32_t date = n == 3 ? 20270101 : 20261130;
        assert_int_equal(kfd_meter_print(&m, "vendor", "postal-de", date, 85 * n, "10115", &piece),
                         KF_OK);
        server_canonical(date, 85 * n, n, "10115", "KF-000123", want_canonical);
        server_token_key(vendor_key, "vendor", date / 100, tk);
        assert_int_equal(kf_aes_cmac(tk, 32, want_canonical, 40, mac), KF_OK);
        assert_memory_equal(piece.vendor_token, mac, KFD_TOKEN_LEN);
        server_token_key(postal_key, "postal-de", date / 100, tk);
        assert_int_equal(kf_aes_cmac(tk, 32, want_canonical, 40, mac), KF_OK);
        assert_memory_equal(piece.postal_token, mac, KFD_TOKEN_LEN);
    }
    kfd_meter_wipe(&m);

    /* Frozen: TK of key 00..1f, "vendor", 202611 (KAT_TOKEN_KEY) over the canonical data of
     * 2026-11-15, 85, piece 1, "10115", "KF-000123"; computed once with kf_aes_cmac. */
    uint8_t key[32];
    kat_key(key);
    assert_int_equal(kfd_token_key(key, "vendor", 202611, tk), KF_OK);
    server_canonical(20261115, 85, 1, "10115", "KF-000123", want_canonical);
    assert_int_equal(kfd_token_compute(tk, want_canonical, token), KF_OK);
    assert_hex(token, KFD_TOKEN_LEN, KAT_TOKEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cmac_aes256_sp800_38b),
        cmocka_unit_test(test_tokens_match_server_cmac),
        cmocka_unit_test(token_key_matches_server_kdf),
        cmocka_unit_test(registration_mac_matches_server),
        cmocka_unit_test(token_matches_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
