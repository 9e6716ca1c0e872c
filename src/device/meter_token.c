/*
 * The postage device's arithmetic (docs/manufacturing.md, "Cryptography",
 * "Registration" and "Tokens"): test tokens, the token and registration keys
 * derived with the library's SP 800-108 KDF, the 40-byte canonical
 * transaction data and its 48-bit token, and the registration MAC.
 * Stateless: keyfleetd, keyfleet-install and keyfleet-verify link this same
 * code, so there is one definition of every byte that is MAC'd.
 */
#include <string.h>

#include "device/keys.h"
#include "device/meter_internal.h"

#define KFD_LABEL_TOKEN "keyfleet token v1"
#define KFD_LABEL_REGISTER "keyfleet register v1"
#define KFD_TEST_PATTERN_1 "KF-TEST-PATTERN1"
#define KFD_TEST_PATTERN_2 "KF-TEST-PATTERN2"
#define KFD_REG_MAGIC "KFREG1"

_Static_assert(KFD_METER_KEY_LEN == KFD_KEY_LEN, "meter keys are the library's AES-256 keys");
_Static_assert(KFD_METER_DOMAIN_MAX == KFD_ID_MAX, "a domain name follows the device ID rules");
_Static_assert(sizeof(KFD_TEST_PATTERN_1) - 1 == 16 && sizeof(KFD_TEST_PATTERN_2) - 1 == 16,
               "the test patterns are one AES block each");

/* ---- fields and dates ---- */

bool kfd_meter_chars_valid(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

bool kfd_meter_field_valid(const char *s, size_t max)
{
    if (!s)
        return false;
    size_t n = strnlen(s, max + 1);
    return n >= 1 && n <= max && kfd_meter_chars_valid(s, n);
}

bool kfd_meter_country_valid(const char *s)
{
    return s && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' && s[2] == '\0';
}

static bool leap_year(uint32_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

bool kfd_meter_date_valid(uint32_t yyyymmdd)
{
    static const uint8_t month_days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    uint32_t y = yyyymmdd / 10000, m = yyyymmdd / 100 % 100, d = yyyymmdd % 100;
    if (y < 2000 || y > 2099 || m < 1 || m > 12 || d < 1)
        return false;
    return d <= month_days[m - 1] + (m == 2 && leap_year(y) ? 1u : 0u);
}

static bool period_valid(uint32_t period)
{
    uint32_t y = period / 100, m = period % 100;
    return y >= 2000 && y <= 2099 && m >= 1 && m <= 12;
}

bool kfd_meter_time_valid(int64_t t)
{
    return t >= KFD_METER_TIME_FIRST && t < KFD_METER_TIME_END;
}

/* Days since 1970-01-01 to the proleptic Gregorian calendar (H. Hinnant's civil_from_days),
 * for the non-negative day numbers a valid time has. */
uint32_t kfd_meter_day_of(int64_t t)
{
    uint32_t z = (uint32_t)(t / 86400) + 719468u;
    uint32_t era = z / 146097u, doe = z - era * 146097u;
    uint32_t yoe = (doe - doe / 1460u + doe / 36524u - doe / 146096u) / 365u;
    uint32_t doy = doe - (365u * yoe + yoe / 4u - yoe / 100u);
    uint32_t mp = (5u * doy + 2u) / 153u;
    uint32_t d = doy - (153u * mp + 2u) / 5u + 1u;
    uint32_t m = mp < 10u ? mp + 3u : mp - 9u;
    uint32_t y = yoe + era * 400u + (m <= 2u ? 1u : 0u);
    return y * 10000u + m * 100u + d;
}

/* ---- keys and MACs ---- */

int kfd_test_tokens(const uint8_t key[KFD_METER_KEY_LEN], uint8_t out[KFD_TEST_TOKENS_LEN])
{
    KF_ENSURE(key && out, KF_ERR_ARG);
    uint8_t mac[KFD_MAC_LEN];
    kfd_mac(key, (const uint8_t *)KFD_TEST_PATTERN_1, 16, mac);
    memcpy(out, mac, 4);
    kfd_mac(key, (const uint8_t *)KFD_TEST_PATTERN_2, 16, mac);
    memcpy(out + 4, mac, 4);
    kfd_wipe(mac, sizeof(mac));
    return KF_OK;
}

int kfd_token_key(const uint8_t key[KFD_METER_KEY_LEN], const char *domain, uint32_t period,
                  uint8_t tk[KFD_METER_KEY_LEN])
{
    KF_ENSURE(key && tk, KF_ERR_ARG);
    KF_ENSURE(kfd_id_valid(domain) == KF_OK, KF_ERR_NAME);
    KF_ENSURE(period_valid(period), KF_ERR_METER_FIELD);
    /* context = domain || 0x00 || [period]_32 */
    uint8_t context[KFD_METER_DOMAIN_MAX + 1 + 4];
    kf_buf c;
    kf_buf_fixed(&c, context, sizeof(context));
    KF_GUARD(kf_buf_put_bytes(&c, domain, strlen(domain)));
    KF_GUARD(kf_buf_put_u8(&c, 0x00));
    KF_GUARD(kf_buf_put_u32(&c, period));
    return kfd_kdf(key, KFD_LABEL_TOKEN, context, c.len, tk);
}

int kfd_registration_key(const uint8_t key[KFD_METER_KEY_LEN], const char *domain,
                         uint8_t rk[KFD_METER_KEY_LEN])
{
    KF_ENSURE(key && rk, KF_ERR_ARG);
    KF_ENSURE(kfd_id_valid(domain) == KF_OK, KF_ERR_NAME);
    return kfd_kdf(key, KFD_LABEL_REGISTER, (const uint8_t *)domain, strlen(domain), rk);
}

/* s (already checked: 1..width characters) left-aligned in width bytes, space padded. */
static int put_padded(kf_buf *b, const char *s, size_t width)
{
    size_t n = strnlen(s, width);
    KF_GUARD(kf_buf_put_bytes(b, s, n));
    for (; n < width; n++)
        KF_GUARD(kf_buf_put_u8(b, ' '));
    return KF_OK;
}

/* The bytes the registration MAC covers:
 * "KFREG1" || msn(16) || indicia(16) || country(2) || [date]_64 || domain || 0x00 || [key id]_64 */
#define KFD_REG_CANONICAL_MAX (6 + 16 + 16 + 2 + 8 + KFD_METER_DOMAIN_MAX + 1 + 8)

static int registration_canonical(const struct kfd_registration *r, const char *domain,
                                  uint64_t key_id, kf_buf *b)
{
    KF_GUARD(kf_buf_put_bytes(b, KFD_REG_MAGIC, sizeof(KFD_REG_MAGIC) - 1));
    KF_GUARD(put_padded(b, r->msn, KFD_METER_MSN_MAX));
    KF_GUARD(put_padded(b, r->indicia, KFD_METER_INDICIA_MAX));
    KF_GUARD(kf_buf_put_bytes(b, r->country, 2));
    KF_GUARD(kf_buf_put_u64(b, (uint64_t)r->date));
    KF_GUARD(kf_buf_put_bytes(b, domain, strlen(domain)));
    KF_GUARD(kf_buf_put_u8(b, 0x00));
    return kf_buf_put_u64(b, key_id);
}

int kfd_registration_mac(const uint8_t key[KFD_METER_KEY_LEN], const struct kfd_registration *r,
                         const char *domain, uint64_t key_id, uint8_t mac[16])
{
    KF_ENSURE(key && r && mac, KF_ERR_ARG);
    KF_ENSURE(kfd_id_valid(domain) == KF_OK, KF_ERR_NAME);
    KF_ENSURE(kfd_meter_field_valid(r->msn, KFD_METER_MSN_MAX) &&
                  kfd_meter_field_valid(r->indicia, KFD_METER_INDICIA_MAX) &&
                  kfd_meter_country_valid(r->country) && kfd_meter_time_valid(r->date),
              KF_ERR_METER_FIELD);
    uint8_t canonical[KFD_REG_CANONICAL_MAX], rk[KFD_METER_KEY_LEN];
    kf_buf b;
    kf_buf_fixed(&b, canonical, sizeof(canonical));
    KF_GUARD(registration_canonical(r, domain, key_id, &b));
    KF_GUARD(kfd_registration_key(key, domain, rk));
    kfd_mac(rk, canonical, b.len, mac);
    kfd_wipe(rk, sizeof(rk));
    return KF_OK;
}

/* ---- transaction data and tokens ---- */

int kfd_txdata_encode(const struct kfd_txdata *tx, uint8_t out[KFD_TXDATA_LEN])
{
    KF_ENSURE(tx && out, KF_ERR_ARG);
    KF_ENSURE(kfd_meter_date_valid(tx->date) &&
                  kfd_meter_field_valid(tx->postal_code, KFD_POSTAL_CODE_MAX) &&
                  kfd_meter_field_valid(tx->msn, KFD_METER_MSN_MAX),
              KF_ERR_METER_FIELD);
    kf_buf b;
    kf_buf_fixed(&b, out, KFD_TXDATA_LEN);
    KF_GUARD(kf_buf_put_u8(&b, 1));
    KF_GUARD(kf_buf_put_u32(&b, tx->date));
    KF_GUARD(kf_buf_put_u32(&b, tx->value));
    KF_GUARD(kf_buf_put_u32(&b, tx->piece_count));
    KF_GUARD(put_padded(&b, tx->postal_code, KFD_POSTAL_CODE_MAX));
    KF_GUARD(put_padded(&b, tx->msn, KFD_METER_MSN_MAX));
    KF_GUARD(kf_buf_put_u8(&b, 0));
    KF_ENSURE(b.len == KFD_TXDATA_LEN, KF_ERR_INTERNAL);
    return KF_OK;
}

/* A width-byte padded field: 1..width characters of the alphabet, then spaces only. */
static int get_padded(kf_buf *r, size_t width, char *out)
{
    const uint8_t *p;
    KF_GUARD(kf_buf_get_ptr(r, width, &p));
    size_t n = 0;
    while (n < width && p[n] != ' ')
        n++;
    KF_ENSURE(n >= 1 && kfd_meter_chars_valid((const char *)p, n), KF_ERR_METER_FIELD);
    for (size_t i = n; i < width; i++)
        KF_ENSURE(p[i] == ' ', KF_ERR_METER_FIELD);
    memcpy(out, p, n);
    out[n] = '\0';
    return KF_OK;
}

static int get_txdata(kf_buf *r, struct kfd_txdata *tx)
{
    uint8_t version, trailer;
    KF_GUARD(kf_buf_get_u8(r, &version));
    KF_ENSURE(version == 1, KF_ERR_METER_FIELD);
    KF_GUARD(kf_buf_get_u32(r, &tx->date));
    KF_ENSURE(kfd_meter_date_valid(tx->date), KF_ERR_METER_FIELD);
    KF_GUARD(kf_buf_get_u32(r, &tx->value));
    KF_GUARD(kf_buf_get_u32(r, &tx->piece_count));
    KF_GUARD(get_padded(r, KFD_POSTAL_CODE_MAX, tx->postal_code));
    KF_GUARD(get_padded(r, KFD_METER_MSN_MAX, tx->msn));
    KF_GUARD(kf_buf_get_u8(r, &trailer));
    KF_ENSURE(trailer == 0, KF_ERR_METER_FIELD);
    return KF_OK;
}

int kfd_txdata_decode(const uint8_t in[KFD_TXDATA_LEN], struct kfd_txdata *tx)
{
    KF_ENSURE(in && tx, KF_ERR_ARG);
    memset(tx, 0, sizeof(*tx));
    kf_buf r;
    kf_buf_reader(&r, in, KFD_TXDATA_LEN);
    int rc = get_txdata(&r, tx);
    if (rc != KF_OK) {
        memset(tx, 0, sizeof(*tx));
        return rc == KF_ERR_METER_FIELD ? rc : KF_ERR_INTERNAL; /* 40 bytes always suffice */
    }
    return KF_OK;
}

int kfd_token_compute(const uint8_t tk[KFD_METER_KEY_LEN], const uint8_t canonical[KFD_TXDATA_LEN],
                      uint8_t token[KFD_TOKEN_LEN])
{
    KF_ENSURE(tk && canonical && token, KF_ERR_ARG);
    uint8_t mac[KFD_MAC_LEN];
    kfd_mac(tk, canonical, KFD_TXDATA_LEN, mac);
    memcpy(token, mac, KFD_TOKEN_LEN);
    kfd_wipe(mac, sizeof(mac));
    return KF_OK;
}
