/*
 * RSA keys: generation, import and export (PKCS#1 DER and raw integers).
 * The operations live in rsa_sign.c and rsa_oaep.c.
 *
 * Import parses with nettle's DER reader, then re-encodes with the encoder
 * below and requires the result to equal the input byte for byte: that
 * rejects BER variants, trailing bytes and anything else that is not the one
 * canonical DER encoding, without a second parser.
 */
#include <stdlib.h>
#include <string.h>

#include <nettle/bignum.h>

#include "crypto/crypto_internal.h"
#include "keyfleet/buf.h"
#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

#define RSA_IMPORT_MIN_BITS 1024
#define RSA_IMPORT_MAX_BITS 8192
#define RSA_GENERATE_MIN_BITS 2048
#define RSA_GENERATE_MAX_BITS 4096
#define RSA_PUBLIC_EXPONENT 65537

#define DER_INTEGER 0x02
#define DER_SEQUENCE 0x30

static kf_rsa_key *key_new(void)
{
    kf_rsa_key *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    rsa_public_key_init(&k->pub);
    rsa_private_key_init(&k->priv);
    return k;
}

void kf_rsa_free(kf_rsa_key *k)
{
    if (!k)
        return;
    rsa_public_key_clear(&k->pub);
    kf_mpz_clear_secret(k->priv.d);
    kf_mpz_clear_secret(k->priv.p);
    kf_mpz_clear_secret(k->priv.q);
    kf_mpz_clear_secret(k->priv.a);
    kf_mpz_clear_secret(k->priv.b);
    kf_mpz_clear_secret(k->priv.c);
    kf_wipe(k, sizeof(*k));
    free(k);
}

size_t kf_rsa_modulus_len(const kf_rsa_key *k)
{
    return k ? k->pub.size : 0;
}

bool kf_rsa_has_private(const kf_rsa_key *k)
{
    return k && k->has_private;
}

/* Sanity of a parsed key: modulus size in range, odd e > 1, and n = p * q. */
static int key_check(const kf_rsa_key *k)
{
    size_t bits = mpz_sizeinbase(k->pub.n, 2);
    KF_ENSURE(bits >= RSA_IMPORT_MIN_BITS && bits <= RSA_IMPORT_MAX_BITS, KF_ERR_KEY_SIZE);
    KF_ENSURE(mpz_cmp_ui(k->pub.e, 1) > 0 && mpz_odd_p(k->pub.e), KF_ERR_FORMAT);
    KF_ENSURE(mpz_cmp(k->pub.e, k->pub.n) < 0, KF_ERR_FORMAT);
    if (!k->has_private)
        return KF_OK;
    mpz_t pq;
    mpz_init(pq);
    mpz_mul(pq, k->priv.p, k->priv.q);
    int same = mpz_cmp(pq, k->pub.n) == 0;
    kf_mpz_clear_secret(pq);
    KF_ENSURE(same, KF_ERR_FORMAT);
    return KF_OK;
}

/* ---- key generation ---- */

int kf_rsa_generate(unsigned bits, kf_rsa_key **out)
{
    KF_ENSURE(out, KF_ERR_ARG);
    *out = NULL;
    KF_ENSURE(bits >= RSA_GENERATE_MIN_BITS && bits <= RSA_GENERATE_MAX_BITS, KF_ERR_KEY_SIZE);
    /* Refuse early when the source is already failing (e.g. a latched health test). */
    uint8_t probe[16];
    int probe_rc = kf_crypto_random(probe, sizeof(probe));
    kf_wipe(probe, sizeof(probe));
    KF_GUARD(probe_rc);
    kf_rsa_key *k = key_new();
    KF_ENSURE(k, KF_ERR_NOMEM);
    struct kf_random_ctx rnd = {0};
    mpz_set_ui(k->pub.e, RSA_PUBLIC_EXPONENT);
    int ok = rsa_generate_keypair(&k->pub, &k->priv, &rnd, kf_nettle_random, NULL, NULL, bits, 0);
    k->has_private = true;
    if (!ok || rnd.failed) {
        kf_rsa_free(k);
        return rnd.failed ? KF_ERR_RNG_SOURCE : KF_ERR_CRYPTO;
    }
    *out = k;
    return KF_OK;
}

/* ---- DER encoding (PKCS#1 RSAPublicKey / RSAPrivateKey) ---- */

static size_t der_length_octets(size_t content_len)
{
    size_t n = 1;
    if (content_len >= 0x80)
        for (size_t v = content_len; v; v >>= 8)
            n++;
    return n;
}

/* Content bytes of a non-negative INTEGER: minimal, with a 0x00 if the top bit is set. */
static size_t der_integer_content_len(const mpz_t x)
{
    if (mpz_sgn(x) == 0)
        return 1;
    size_t bits = mpz_sizeinbase(x, 2);
    return bits / 8 + 1; /* bits % 8 == 0 needs the extra zero octet; otherwise rounds up */
}

static size_t der_integer_len(const mpz_t x)
{
    size_t content = der_integer_content_len(x);
    return 1 + der_length_octets(content) + content;
}

static int der_put_header(kf_buf *b, uint8_t tag, size_t content_len)
{
    KF_GUARD(kf_buf_put_u8(b, tag));
    if (content_len < 0x80)
        return kf_buf_put_u8(b, (uint8_t)content_len);
    size_t octets = der_length_octets(content_len) - 1;
    KF_GUARD(kf_buf_put_u8(b, (uint8_t)(0x80 | octets)));
    for (size_t i = octets; i > 0; i--)
        KF_GUARD(kf_buf_put_u8(b, (uint8_t)(content_len >> (8 * (i - 1)))));
    return KF_OK;
}

static int der_put_integer(kf_buf *b, const mpz_t x)
{
    size_t content = der_integer_content_len(x);
    KF_GUARD(der_put_header(b, DER_INTEGER, content));
    uint8_t *space;
    KF_GUARD(kf_buf_put_space(b, content, &space));
    nettle_mpz_get_str_256(content, space, x); /* left-pads with zeros */
    return KF_OK;
}

/* Encodes SEQUENCE { ints[0..count) } in secure memory if secret, else malloc. */
static int der_encode_sequence(const mpz_srcptr *ints, size_t count, bool secret, uint8_t **der,
                               size_t *len)
{
    size_t content = 0;
    for (size_t i = 0; i < count; i++)
        content += der_integer_len(ints[i]);
    size_t total = 1 + der_length_octets(content) + content;
    uint8_t *mem = secret ? kf_secmem_alloc(total) : malloc(total);
    KF_ENSURE(mem, secret ? KF_ERR_SECMEM : KF_ERR_NOMEM);
    kf_buf b;
    kf_buf_fixed(&b, mem, total);
    int rc = der_put_header(&b, DER_SEQUENCE, content);
    for (size_t i = 0; i < count && rc == KF_OK; i++)
        rc = der_put_integer(&b, ints[i]);
    if (rc == KF_OK && b.len != total)
        rc = KF_ERR_INTERNAL;
    if (rc != KF_OK) {
        if (secret)
            kf_secmem_free(mem);
        else
            free(mem);
        return rc;
    }
    *der = mem;
    *len = total;
    return KF_OK;
}

int kf_rsa_export_public(const kf_rsa_key *k, uint8_t **der, size_t *len)
{
    KF_ENSURE(k && der && len, KF_ERR_ARG);
    const mpz_srcptr ints[] = {k->pub.n, k->pub.e};
    return der_encode_sequence(ints, 2, false, der, len);
}

int kf_rsa_export_private(const kf_rsa_key *k, uint8_t **der, size_t *len)
{
    KF_ENSURE(k && der && len, KF_ERR_ARG);
    KF_ENSURE(k->has_private, KF_ERR_ARG);
    mpz_t version;
    mpz_init(version); /* 0: two-prime */
    /* nettle's a, b, c are exactly PKCS#1's exponent1, exponent2 and coefficient. */
    const mpz_srcptr ints[] = {version,     k->pub.n,    k->pub.e,    k->priv.d,  k->priv.p,
                               k->priv.q,   k->priv.a,   k->priv.b,   k->priv.c};
    int rc = der_encode_sequence(ints, sizeof(ints) / sizeof(ints[0]), true, der, len);
    mpz_clear(version);
    return rc;
}

/* ---- import ---- */

static int import_der(const uint8_t *der, size_t len, bool private_key, kf_rsa_key **out)
{
    KF_ENSURE(der && out, KF_ERR_ARG);
    *out = NULL;
    KF_ENSURE(len > 0 && len <= 16 * 1024, KF_ERR_FORMAT);
    kf_rsa_key *k = key_new();
    KF_ENSURE(k, KF_ERR_NOMEM);
    k->has_private = private_key;
    int rc = rsa_keypair_from_der(&k->pub, private_key ? &k->priv : NULL, RSA_IMPORT_MAX_BITS,
                                  len, der)
                 ? KF_OK
                 : KF_ERR_FORMAT;
    if (rc == KF_OK)
        rc = key_check(k);
    if (rc == KF_OK) {
        uint8_t *canonical = NULL;
        size_t canonical_len = 0;
        rc = private_key ? kf_rsa_export_private(k, &canonical, &canonical_len)
                         : kf_rsa_export_public(k, &canonical, &canonical_len);
        if (rc == KF_OK && (canonical_len != len || !kf_ct_equal(canonical, der, len)))
            rc = KF_ERR_FORMAT;
        if (private_key)
            kf_secmem_free(canonical);
        else
            free(canonical);
    }
    if (rc != KF_OK) {
        kf_rsa_free(k);
        return rc;
    }
    *out = k;
    return KF_OK;
}

int kf_rsa_import_private(const uint8_t *der, size_t len, kf_rsa_key **out)
{
    return import_der(der, len, true, out);
}

int kf_rsa_import_public(const uint8_t *der, size_t len, kf_rsa_key **out)
{
    return import_der(der, len, false, out);
}

static int set_integer(mpz_t x, const struct kf_rsa_integer *v)
{
    KF_ENSURE(v->data && v->len > 0 && v->len <= RSA_IMPORT_MAX_BITS / 8, KF_ERR_FORMAT);
    nettle_mpz_set_str_256_u(x, v->len, v->data);
    return KF_OK;
}

static int import_parts_into(kf_rsa_key *k, const struct kf_rsa_parts *parts)
{
    KF_GUARD(set_integer(k->pub.n, &parts->n));
    KF_GUARD(set_integer(k->pub.e, &parts->e));
    KF_ENSURE(rsa_public_key_prepare(&k->pub), KF_ERR_FORMAT);
    if (!k->has_private)
        return KF_OK;
    KF_GUARD(set_integer(k->priv.d, &parts->d));
    KF_GUARD(set_integer(k->priv.p, &parts->p));
    KF_GUARD(set_integer(k->priv.q, &parts->q));
    KF_GUARD(set_integer(k->priv.a, &parts->dp));
    KF_GUARD(set_integer(k->priv.b, &parts->dq));
    KF_GUARD(set_integer(k->priv.c, &parts->qinv));
    KF_ENSURE(rsa_private_key_prepare(&k->priv), KF_ERR_FORMAT);
    return KF_OK;
}

int kf_rsa_import_parts(const struct kf_rsa_parts *parts, kf_rsa_key **out)
{
    KF_ENSURE(parts && out, KF_ERR_ARG);
    *out = NULL;
    kf_rsa_key *k = key_new();
    KF_ENSURE(k, KF_ERR_NOMEM);
    k->has_private = parts->d.data != NULL;
    int rc = import_parts_into(k, parts);
    if (rc == KF_OK)
        rc = key_check(k);
    if (rc != KF_OK) {
        kf_rsa_free(k);
        return rc;
    }
    *out = k;
    return KF_OK;
}
