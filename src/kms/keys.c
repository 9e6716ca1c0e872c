/*
 * Asymmetric key encodings: the stored form of each key and the client
 * encodings KMIP Register accepts and Get produces.
 *
 * Stored forms (what kf_kms_register wraps):
 *   RSA       private: PKCS#1 RSAPrivateKey DER   public: PKCS#1 RSAPublicKey DER
 *   P-256     private: 32-byte big-endian scalar  public: 65-byte point 04||X||Y
 *   Ed25519   private: 32-byte seed (RFC 8032)    public: 32-byte point
 * One stored form per key kind keeps the crypto handlers free of format
 * cases; conversions to PKCS#8, X.509 SubjectPublicKeyInfo and RFC 5915
 * go through GnuTLS, so no ASN.1 is parsed here. Private material only
 * passes through KF_BUF_SECRET buffers; GnuTLS copies are wiped before free.
 */
#include <stdlib.h>
#include <string.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/secmem.h"
#include "kmip_internal.h"

#define P256_SCALAR 32
#define P256_POINT 65
#define ED25519_LEN 32

static void datum_wipe_free(gnutls_datum_t *d)
{
    if (d->data) {
        kf_wipe(d->data, d->size);
        gnutls_free(d->data);
    }
    d->data = NULL;
    d->size = 0;
}

/* A big-endian integer from GnuTLS, left-padded to exactly n bytes. */
static int put_fixed(kf_buf *out, const gnutls_datum_t *v, size_t n)
{
    kf_buf r;
    kf_buf_reader(&r, v->data, v->size);
    while (kf_buf_remaining(&r) > n) { /* leading zeros only */
        uint8_t z;
        KF_GUARD(kf_buf_get_u8(&r, &z));
        KF_ENSURE(z == 0, KF_ERR_FORMAT);
    }
    KF_GUARD(kf_buf_put_zeros(out, n - kf_buf_remaining(&r)));
    return kf_buf_put_bytes(out, kf_buf_read_ptr(&r), kf_buf_remaining(&r));
}

static int put_gnutls_datum(kf_buf *out, gnutls_datum_t *d)
{
    int rc = kf_buf_put_bytes(out, d->data, d->size);
    datum_wipe_free(d);
    return rc;
}

/* ---- private keys ---- */

/* PKCS#1 RSAPrivateKey DER checked by nettle, then stored as given. */
static int rsa_private_store(const uint8_t *der, size_t len, int32_t *bits, kf_buf *stored)
{
    kf_rsa_key *k;
    KF_GUARD(kf_rsa_import_private(der, len, &k));
    *bits = (int32_t)(kf_rsa_modulus_len(k) * 8);
    kf_rsa_free(k);
    return kf_buf_put_bytes(stored, der, len);
}

static int ec_private_store(gnutls_x509_privkey_t key, uint32_t *alg, int32_t *bits,
                            kf_buf *stored)
{
    gnutls_ecc_curve_t curve;
    gnutls_datum_t x = {0}, y = {0}, k = {0};
    int rc = gnutls_x509_privkey_export_ecc_raw(key, &curve, &x, &y, &k) < 0 ? KF_ERR_FORMAT
                                                                             : KF_OK;
    if (rc == KF_OK && curve == GNUTLS_ECC_CURVE_SECP256R1) {
        *alg = KMIP_ALG_ECDSA;
        *bits = 256;
        rc = put_fixed(stored, &k, P256_SCALAR);
    } else if (rc == KF_OK && curve == GNUTLS_ECC_CURVE_ED25519) {
        *alg = KMIP_ALG_ED25519;
        *bits = 256;
        rc = put_fixed(stored, &k, ED25519_LEN);
    } else if (rc == KF_OK) {
        rc = KF_ERR_UNSUPPORTED; /* other curves */
    }
    datum_wipe_free(&x);
    datum_wipe_free(&y);
    datum_wipe_free(&k);
    return rc;
}

/* Any private key GnuTLS parsed, into its stored form. */
static int gnutls_private_store(gnutls_x509_privkey_t key, uint32_t *alg, int32_t *bits,
                                kf_buf *stored)
{
    int pk = gnutls_x509_privkey_get_pk_algorithm(key);
    if (pk == GNUTLS_PK_RSA) {
        gnutls_datum_t der = {0};
        KF_ENSURE(gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_DER, &der) >= 0,
                  KF_ERR_FORMAT);
        int rc = rsa_private_store(der.data, der.size, bits, stored);
        datum_wipe_free(&der);
        *alg = KMIP_ALG_RSA;
        return rc;
    }
    if (pk == GNUTLS_PK_ECDSA || pk == GNUTLS_PK_EDDSA_ED25519)
        return ec_private_store(key, alg, bits, stored);
    return KF_ERR_UNSUPPORTED;
}

int kms_private_key_import(uint32_t format, uint32_t hint_alg, const uint8_t *in, size_t len,
                           uint32_t *alg, int32_t *bits, kf_buf *stored)
{
    KF_ENSURE(in && len > 0 && len <= 16384, KF_ERR_FORMAT);
    if (format == KMIP_KEYFMT_PKCS_1) {
        *alg = KMIP_ALG_RSA;
        return rsa_private_store(in, len, bits, stored);
    }
    if (format == KMIP_KEYFMT_RAW && len == P256_SCALAR &&
        (hint_alg == KMIP_ALG_ECDSA || hint_alg == KMIP_ALG_EC)) {
        uint8_t pub[P256_POINT];
        KF_GUARD(kf_p256_public(in, pub)); /* refuses 0 and scalars >= n */
        *alg = KMIP_ALG_ECDSA;
        *bits = 256;
        return kf_buf_put_bytes(stored, in, len);
    }
    if (format == KMIP_KEYFMT_RAW && len == ED25519_LEN && hint_alg == KMIP_ALG_ED25519) {
        *alg = KMIP_ALG_ED25519;
        *bits = 256;
        return kf_buf_put_bytes(stored, in, len);
    }
    KF_ENSURE(format == KMIP_KEYFMT_PKCS_8 || format == KMIP_KEYFMT_EC_PRIVATE_KEY,
              KF_ERR_KEY_FORMAT);
    gnutls_x509_privkey_t key;
    KF_ENSURE(gnutls_x509_privkey_init(&key) >= 0, KF_ERR_NOMEM);
    const gnutls_datum_t d = {(unsigned char *)(uintptr_t)in, (unsigned)len};
    int grc = format == KMIP_KEYFMT_PKCS_8
                  ? gnutls_x509_privkey_import_pkcs8(key, &d, GNUTLS_X509_FMT_DER, NULL,
                                                     GNUTLS_PKCS_PLAIN)
                  : gnutls_x509_privkey_import(key, &d, GNUTLS_X509_FMT_DER);
    int rc = grc < 0 ? KF_ERR_FORMAT : gnutls_private_store(key, alg, bits, stored);
    gnutls_x509_privkey_deinit(key);
    return rc;
}

/* A GnuTLS private key object from a stored RSA or Ed25519 key (for PKCS#8 export). */
static int gnutls_private_load(uint32_t alg, const uint8_t *stored, size_t len,
                               gnutls_x509_privkey_t key)
{
    if (alg == KMIP_ALG_RSA) {
        const gnutls_datum_t d = {(unsigned char *)(uintptr_t)stored, (unsigned)len};
        return gnutls_x509_privkey_import(key, &d, GNUTLS_X509_FMT_DER) < 0 ? KF_ERR_FORMAT
                                                                           : KF_OK;
    }
    uint8_t pub[ED25519_LEN];
    gnutls_datum_t k = {(unsigned char *)(uintptr_t)stored, (unsigned)len};
    KF_ENSURE(alg == KMIP_ALG_ED25519 && len == ED25519_LEN, KF_ERR_KEY_FORMAT);
    KF_GUARD(kf_ed25519_public(stored, pub));
    gnutls_datum_t x = {pub, ED25519_LEN};
    int grc = gnutls_x509_privkey_import_ecc_raw(key, GNUTLS_ECC_CURVE_ED25519, &x, NULL, &k);
    return grc < 0 ? KF_ERR_CRYPTO : KF_OK;
}

/*
 * P-256 private key as RFC 5915 ECPrivateKey (with the curve) or as PKCS#8
 * (RFC 5208, the ECPrivateKey inside without the curve, which the
 * AlgorithmIdentifier names). Composed here because GnuTLS 3.7 writes the
 * privateKey OCTET STRING with a leading zero when the scalar's top bit is
 * set, where RFC 5915 requires exactly 32 octets.
 */
static int p256_private_encode(const uint8_t *d, size_t len, uint32_t format, kf_buf *out)
{
    static const uint8_t pkcs8_head[] = {0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06,
                                         0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                                         0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                                         0x04, 0x6d};
    static const uint8_t version_and_key[] = {0x02, 0x01, 0x01, 0x04, 0x20};
    static const uint8_t curve[] = {0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                    0xce, 0x3d, 0x03, 0x01, 0x07};
    static const uint8_t public_key[] = {0xa1, 0x44, 0x03, 0x42, 0x00};
    uint8_t pub[P256_POINT];
    bool pkcs8 = format == KMIP_KEYFMT_PKCS_8;
    KF_ENSURE(len == P256_SCALAR, KF_ERR_FORMAT);
    KF_GUARD(kf_p256_public(d, pub));
    if (pkcs8)
        KF_GUARD(kf_buf_put_bytes(out, pkcs8_head, sizeof(pkcs8_head)));
    KF_GUARD(kf_buf_put_u8(out, 0x30));
    KF_GUARD(kf_buf_put_u8(out, pkcs8 ? 0x6b : 0x77));
    KF_GUARD(kf_buf_put_bytes(out, version_and_key, sizeof(version_and_key)));
    KF_GUARD(kf_buf_put_bytes(out, d, len));
    if (!pkcs8)
        KF_GUARD(kf_buf_put_bytes(out, curve, sizeof(curve)));
    KF_GUARD(kf_buf_put_bytes(out, public_key, sizeof(public_key)));
    return kf_buf_put_bytes(out, pub, sizeof(pub));
}

int kms_private_key_export(uint32_t alg, const uint8_t *stored, size_t len, uint32_t format,
                           kf_buf *out)
{
    bool rsa = alg == KMIP_ALG_RSA;
    if ((rsa && format == KMIP_KEYFMT_PKCS_1) || (!rsa && format == KMIP_KEYFMT_RAW))
        return kf_buf_put_bytes(out, stored, len);
    if (alg == KMIP_ALG_ECDSA &&
        (format == KMIP_KEYFMT_PKCS_8 || format == KMIP_KEYFMT_EC_PRIVATE_KEY))
        return p256_private_encode(stored, len, format, out);
    KF_ENSURE(format == KMIP_KEYFMT_PKCS_8, KF_ERR_KEY_FORMAT);
    gnutls_x509_privkey_t key;
    KF_ENSURE(gnutls_x509_privkey_init(&key) >= 0, KF_ERR_NOMEM);
    gnutls_datum_t der = {0};
    int rc = gnutls_private_load(alg, stored, len, key);
    if (rc == KF_OK) {
        int grc = gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_DER, NULL,
                                                    GNUTLS_PKCS_PLAIN, &der);
        rc = grc < 0 ? KF_ERR_CRYPTO : put_gnutls_datum(out, &der);
    }
    gnutls_x509_privkey_deinit(key);
    return rc;
}

/* ---- public keys ---- */

static int rsa_public_store(const uint8_t *der, size_t len, int32_t *bits, kf_buf *stored)
{
    kf_rsa_key *k;
    KF_GUARD(kf_rsa_import_public(der, len, &k));
    *bits = (int32_t)(kf_rsa_modulus_len(k) * 8);
    kf_rsa_free(k);
    return kf_buf_put_bytes(stored, der, len);
}

static int spki_rsa_store(gnutls_pubkey_t pub, int32_t *bits, kf_buf *stored)
{
    gnutls_datum_t m = {0}, e = {0};
    KF_ENSURE(gnutls_pubkey_export_rsa_raw2(pub, &m, &e, GNUTLS_EXPORT_FLAG_NO_LZ) >= 0,
              KF_ERR_FORMAT);
    struct kf_rsa_parts parts = {.n = {m.data, m.size}, .e = {e.data, e.size}};
    kf_rsa_key *k = NULL;
    uint8_t *der = NULL;
    size_t der_len = 0;
    int rc = kf_rsa_import_parts(&parts, &k);
    if (rc == KF_OK)
        rc = kf_rsa_export_public(k, &der, &der_len);
    if (rc == KF_OK) {
        *bits = (int32_t)(kf_rsa_modulus_len(k) * 8);
        rc = kf_buf_put_bytes(stored, der, der_len);
    }
    free(der);
    kf_rsa_free(k);
    gnutls_free(m.data);
    gnutls_free(e.data);
    return rc;
}

static int spki_ec_store(gnutls_pubkey_t pub, uint32_t *alg, int32_t *bits, kf_buf *stored)
{
    gnutls_ecc_curve_t curve;
    gnutls_datum_t x = {0}, y = {0};
    KF_ENSURE(gnutls_pubkey_export_ecc_raw2(pub, &curve, &x, &y, GNUTLS_EXPORT_FLAG_NO_LZ) >= 0,
              KF_ERR_FORMAT);
    int rc = KF_ERR_UNSUPPORTED;
    *bits = 256;
    if (curve == GNUTLS_ECC_CURVE_SECP256R1) {
        *alg = KMIP_ALG_ECDSA;
        rc = kf_buf_put_u8(stored, 0x04);
        if (rc == KF_OK)
            rc = put_fixed(stored, &x, 32);
        if (rc == KF_OK)
            rc = put_fixed(stored, &y, 32);
    } else if (curve == GNUTLS_ECC_CURVE_ED25519) {
        *alg = KMIP_ALG_ED25519;
        rc = x.size == ED25519_LEN ? kf_buf_put_bytes(stored, x.data, x.size) : KF_ERR_FORMAT;
    }
    gnutls_free(x.data);
    gnutls_free(y.data);
    return rc;
}

int kms_public_key_import(uint32_t format, uint32_t hint_alg, const uint8_t *in, size_t len,
                          uint32_t *alg, int32_t *bits, kf_buf *stored)
{
    KF_ENSURE(in && len > 0 && len <= 16384, KF_ERR_FORMAT);
    if (format == KMIP_KEYFMT_PKCS_1) {
        *alg = KMIP_ALG_RSA;
        return rsa_public_store(in, len, bits, stored);
    }
    if (format == KMIP_KEYFMT_RAW && len == P256_POINT &&
        (hint_alg == KMIP_ALG_ECDSA || hint_alg == KMIP_ALG_EC)) {
        uint8_t digest[32] = {0}, sig[64] = {0};
        /* Verification of a dummy signature refuses points off the curve with FORMAT. */
        int rc = kf_p256_verify_digest(in, digest, sizeof(digest), sig);
        KF_ENSURE(rc != KF_ERR_FORMAT, KF_ERR_FORMAT);
        *alg = KMIP_ALG_ECDSA;
        *bits = 256;
        return kf_buf_put_bytes(stored, in, len);
    }
    if (format == KMIP_KEYFMT_RAW && len == ED25519_LEN && hint_alg == KMIP_ALG_ED25519) {
        *alg = KMIP_ALG_ED25519;
        *bits = 256;
        return kf_buf_put_bytes(stored, in, len);
    }
    KF_ENSURE(format == KMIP_KEYFMT_X_509, KF_ERR_KEY_FORMAT);
    gnutls_pubkey_t pub;
    KF_ENSURE(gnutls_pubkey_init(&pub) >= 0, KF_ERR_NOMEM);
    const gnutls_datum_t d = {(unsigned char *)(uintptr_t)in, (unsigned)len};
    int rc = gnutls_pubkey_import(pub, &d, GNUTLS_X509_FMT_DER) < 0 ? KF_ERR_FORMAT : KF_OK;
    if (rc == KF_OK) {
        int pk = gnutls_pubkey_get_pk_algorithm(pub, NULL);
        if (pk == GNUTLS_PK_RSA) {
            *alg = KMIP_ALG_RSA;
            rc = spki_rsa_store(pub, bits, stored);
        } else if (pk == GNUTLS_PK_ECDSA || pk == GNUTLS_PK_EDDSA_ED25519) {
            rc = spki_ec_store(pub, alg, bits, stored);
        } else {
            rc = KF_ERR_UNSUPPORTED;
        }
    }
    gnutls_pubkey_deinit(pub);
    return rc;
}

/* DER tag and definite length (X.690 8.1.3). */
static int der_header(kf_buf *out, uint8_t tag, size_t len)
{
    KF_GUARD(kf_buf_put_u8(out, tag));
    if (len < 0x80)
        return kf_buf_put_u8(out, (uint8_t)len);
    if (len <= 0xff) {
        KF_GUARD(kf_buf_put_u8(out, 0x81));
        return kf_buf_put_u8(out, (uint8_t)len);
    }
    KF_ENSURE(len <= 0xffff, KF_ERR_LIMIT);
    KF_GUARD(kf_buf_put_u8(out, 0x82));
    return kf_buf_put_u16(out, (uint16_t)len);
}

static size_t der_header_len(size_t len)
{
    return len < 0x80 ? 2 : len <= 0xff ? 3 : 4;
}

/*
 * SubjectPublicKeyInfo for an RSA key (RFC 8017 A.1, RFC 5280 4.1): the
 * stored RSAPublicKey goes unchanged into the BIT STRING, so composing the
 * two fixed headers is all there is to it (GnuTLS cannot import PKCS#1
 * public keys directly).
 */
static int rsa_spki(const uint8_t *pkcs1, size_t len, kf_buf *out)
{
    static const uint8_t rsa_alg_id[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                         0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00};
    size_t bits_len = 1 + len;
    size_t body = sizeof(rsa_alg_id) + der_header_len(bits_len) + bits_len;
    KF_GUARD(der_header(out, 0x30, body));
    KF_GUARD(kf_buf_put_bytes(out, rsa_alg_id, sizeof(rsa_alg_id)));
    KF_GUARD(der_header(out, 0x03, bits_len));
    KF_GUARD(kf_buf_put_u8(out, 0)); /* no unused bits */
    return kf_buf_put_bytes(out, pkcs1, len);
}

static int ec_spki(uint32_t alg, const uint8_t *stored, size_t len, kf_buf *out)
{
    gnutls_pubkey_t pub;
    KF_ENSURE(gnutls_pubkey_init(&pub) >= 0, KF_ERR_NOMEM);
    int grc;
    if (alg == KMIP_ALG_ED25519) {
        gnutls_datum_t x = {(unsigned char *)(uintptr_t)stored, (unsigned)len};
        grc = len == ED25519_LEN
                  ? gnutls_pubkey_import_ecc_raw(pub, GNUTLS_ECC_CURVE_ED25519, &x, NULL)
                  : -1;
    } else {
        kf_buf point;
        const uint8_t *xp = NULL, *yp = NULL;
        uint8_t form = 0;
        kf_buf_reader(&point, stored, len);
        grc = kf_buf_get_u8(&point, &form) == KF_OK && form == 0x04 && len == P256_POINT &&
                      kf_buf_get_ptr(&point, 32, &xp) == KF_OK &&
                      kf_buf_get_ptr(&point, 32, &yp) == KF_OK
                  ? 0
                  : -1;
        gnutls_datum_t x = {(unsigned char *)(uintptr_t)xp, 32},
                       y = {(unsigned char *)(uintptr_t)yp, 32};
        if (grc == 0)
            grc = gnutls_pubkey_import_ecc_raw(pub, GNUTLS_ECC_CURVE_SECP256R1, &x, &y);
    }
    gnutls_datum_t der = {0};
    int rc = grc < 0 ? KF_ERR_FORMAT : KF_OK;
    if (rc == KF_OK)
        rc = gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &der) < 0
                 ? KF_ERR_CRYPTO
                 : put_gnutls_datum(out, &der);
    gnutls_pubkey_deinit(pub);
    return rc;
}

int kms_public_key_export(uint32_t alg, const uint8_t *stored, size_t len, uint32_t format,
                          kf_buf *out)
{
    bool rsa = alg == KMIP_ALG_RSA;
    if ((rsa && format == KMIP_KEYFMT_PKCS_1) || (!rsa && format == KMIP_KEYFMT_RAW))
        return kf_buf_put_bytes(out, stored, len);
    KF_ENSURE(format == KMIP_KEYFMT_X_509, KF_ERR_KEY_FORMAT);
    return rsa ? rsa_spki(stored, len, out) : ec_spki(alg, stored, len, out);
}

int kms_certificate_check(const uint8_t *der, size_t len)
{
    gnutls_x509_crt_t crt;
    KF_ENSURE(der && len > 0, KF_ERR_FORMAT);
    KF_ENSURE(gnutls_x509_crt_init(&crt) >= 0, KF_ERR_NOMEM);
    const gnutls_datum_t d = {(unsigned char *)(uintptr_t)der, (unsigned)len};
    int rc = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER) < 0 ? KF_ERR_FORMAT : KF_OK;
    gnutls_x509_crt_deinit(crt);
    return rc;
}
