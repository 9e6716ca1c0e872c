/*
 * Shamir secret sharing over GF(2^8) with the AES polynomial
 * x^8 + x^4 + x^3 + x + 1 (FIPS 197 section 4.2), byte by byte.
 *
 * CT: the field arithmetic has no secret-indexed tables and no
 * secret-dependent branches (masks instead), so share values and the secret
 * do not show in timing or cache use. Share x coordinates are public.
 */
#include "keyfleet/secmod.h"

#include <string.h>

#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"

/* CT: multiply by shift-and-add, reducing by 0x1b whenever bit 7 falls out. */
uint8_t kf_gf256_mul(uint8_t a, uint8_t b)
{
    uint8_t product = 0;
    for (int i = 0; i < 8; i++) {
        product ^= (uint8_t)(a & (uint8_t)(0u - (b & 1u)));
        uint8_t carry = (uint8_t)(0u - (a >> 7));
        a = (uint8_t)((a << 1) ^ (0x1b & carry));
        b >>= 1;
    }
    return product;
}

/* CT: a^254 = a^-1 in GF(2^8)* (Fermat), with 0 mapping to 0. A fixed chain:
 * a^254 = a^2 * a^4 * a^8 * a^16 * a^32 * a^64 * a^128. */
uint8_t kf_gf256_inv(uint8_t a)
{
    uint8_t power = kf_gf256_mul(a, a); /* a^2 */
    uint8_t result = power;
    for (int i = 0; i < 6; i++) {
        power = kf_gf256_mul(power, power); /* a^4 .. a^128 */
        result = kf_gf256_mul(result, power);
    }
    return result;
}

/* Policy for a split: 2 <= m <= n <= 255, or the degenerate 1-of-1 where the
 * single share is the secret itself (dev mode only; the caller decides). */
static bool threshold_ok(unsigned m, unsigned n)
{
    if (m == 1 && n == 1)
        return true;
    return m >= 2 && m <= n && n <= 255;
}

/* CT: Horner's rule for f(x) = c[0] + c[1] x + ... + c[m-1] x^(m-1). */
static uint8_t poly_eval(const uint8_t *coeff, unsigned m, uint8_t x)
{
    uint8_t y = 0;
    for (unsigned i = m; i-- > 0;)
        y = (uint8_t)(kf_gf256_mul(y, x) ^ coeff[i]);
    return y;
}

/*
 * Each byte of the secret gets its own polynomial with the secret byte as
 * constant term and m - 1 uniformly random coefficients (zero included:
 * uniform coefficients are what makes any m - 1 shares independent of the
 * secret).
 */
int kf_shamir_split(const uint8_t *secret, size_t len, unsigned m, unsigned n, uint8_t *shares)
{
    KF_ENSURE(secret && shares && len > 0, KF_ERR_ARG);
    KF_ENSURE(threshold_ok(m, n), KF_ERR_THRESHOLD);
    size_t random_len = (size_t)(m - 1) * len;
    uint8_t *random_coeff = kf_secmem_alloc(random_len + 1);
    KF_ENSURE(random_coeff != NULL, KF_ERR_SECMEM);
    int rc = kf_rng_bytes(random_coeff, random_len);
    if (rc < 0)
        goto out;
    uint8_t coeff[255];
    for (size_t b = 0; b < len; b++) {
        coeff[0] = secret[b];
        for (unsigned i = 1; i < m; i++)
            coeff[i] = random_coeff[(size_t)(i - 1) * len + b];
        for (unsigned x = 1; x <= n; x++)
            shares[(size_t)(x - 1) * len + b] = poly_eval(coeff, m, (uint8_t)x);
    }
    kf_wipe(coeff, sizeof(coeff));
out:
    kf_secmem_free(random_coeff);
    return rc;
}

/* Lagrange basis polynomial for share i evaluated at 0:
 * l_i(0) = prod_{j != i} x_j / (x_j - x_i), where minus is XOR. */
static uint8_t lagrange_at_zero(const uint8_t *xs, unsigned k, unsigned i)
{
    uint8_t num = 1, den = 1;
    for (unsigned j = 0; j < k; j++) {
        if (j == i)
            continue;
        num = kf_gf256_mul(num, xs[j]);
        den = kf_gf256_mul(den, (uint8_t)(xs[j] ^ xs[i]));
    }
    return kf_gf256_mul(num, kf_gf256_inv(den));
}

int kf_shamir_combine(const uint8_t *xs, const uint8_t *shares, unsigned k, size_t len,
                      uint8_t *secret)
{
    KF_ENSURE(xs && shares && secret && len > 0, KF_ERR_ARG);
    KF_ENSURE(k >= 1 && k <= 255, KF_ERR_THRESHOLD);
    /* x = 0 would be the secret itself; a repeated x makes the system singular. */
    uint8_t seen[256] = {0};
    for (unsigned i = 0; i < k; i++) {
        KF_ENSURE(xs[i] != 0 && !seen[xs[i]], KF_ERR_SHARE);
        seen[xs[i]] = 1;
    }
    memset(secret, 0, len);
    for (unsigned i = 0; i < k; i++) {
        uint8_t basis = lagrange_at_zero(xs, k, i);
        for (size_t b = 0; b < len; b++)
            secret[b] ^= kf_gf256_mul(basis, shares[(size_t)i * len + b]);
    }
    return KF_OK;
}
