/*
 * KMIP Register and the object values Get returns (kmip_put_object_value),
 * and the key encodings behind them (keys.c). Known answers are published
 * encodings: RFC 8410 10.1/10.3 (Ed25519 SubjectPublicKeyInfo and PKCS#8),
 * the oaep-int.txt RSA key in PKCS#1 and, wrapped per RFC 5208 / RFC 5280,
 * in PKCS#8 / SubjectPublicKeyInfo, RFC 6979 A.2.5's P-256 key in RFC 5480 /
 * RFC 5915 form, SP 800-38A F.2.5 for parameters stored at Register.
 * Every refusal path of Register has a test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "keyfleet/ttlv.h"
#include "kms/kmip_internal.h"

#include "kms_crypto_fixture.h"

/* The object value Get would return for uid, in format (0 = stored), or the refusal. */
static int get_value(struct fixture *f, const char *uid, uint32_t format, const kf_ttlv **object)
{
    struct kf_object obj = {0};
    kf_buf m;
    assert_int_equal(kf_buf_alloc(&m, 64, 16384, KF_BUF_SECRET), KF_OK);
    assert_int_equal(kf_kms_get(f->kms, "test", uid, &obj, &m), KF_OK);
    struct kf_principal who;
    kf_principal_local_admin(&who, "test");
    struct kmip_call c = {.kms = f->kms, .who = &who, .actor = "test", .major = 2, .minor = 1,
                          .arena = f->a};
    c.resp = kf_ttlv_struct(f->a, NULL, KMIP_TAG_RESPONSE_PAYLOAD);
    int rc = kmip_put_object_value(&c, &obj, m.data, m.len, format);
    *object = c.resp->child;
    kf_buf_free(&m);
    kf_object_clear(&obj);
    return rc;
}

/* Key Material of the object's Key Block (a Byte String, or the Key of a Transparent Symmetric Key). */
static void assert_key_material(const kf_ttlv *object, uint32_t format, const uint8_t *want,
                                size_t len)
{
    const kf_ttlv *kb = kf_ttlv_find(object, KMIP_TAG_KEY_BLOCK);
    uint32_t got = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(kb, KMIP_TAG_KEY_FORMAT_TYPE), &got), KF_OK);
    assert_int_equal(got, format);
    const kf_ttlv *km = KF_TTLV_PATH(kb, KMIP_TAG_KEY_VALUE, KMIP_TAG_KEY_MATERIAL);
    if (format == KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY)
        assert_bytes(km, KMIP_TAG_KEY, want, len);
    else
        assert_bytes(kf_ttlv_find(kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL, want, len);
}

/* RFC 8410 10.3 (PKCS#8 Ed25519 private key) and 10.1 (its SubjectPublicKeyInfo). */
#define RFC8410_PRIV_PKCS8 "302e020100300506032b657004220420d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842"
#define RFC8410_SEED "d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842"
#define RFC8410_SPKI "302a300506032b657003210019bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
#define RFC8410_PUB "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"

static void ed25519_pkcs8_and_spki_rfc8410(void **state)
{
    struct fixture *f = *state;
    char priv[KF_UID_MAX], pub[KF_UID_MAX];
    size_t plen, slen, spki_len, publen;
    uint8_t *pkcs8 = unhex(f, RFC8410_PRIV_PKCS8, &plen), *seed = unhex(f, RFC8410_SEED, &slen);
    uint8_t *spki = unhex(f, RFC8410_SPKI, &spki_len), *point = unhex(f, RFC8410_PUB, &publen);
    register_key(f, 2, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_PKCS_8, pkcs8, plen, KMIP_ALG_ED25519,
                 KMIP_USAGE_SIGN, false, priv);
    register_key(f, 1, KMIP_OBJ_PUBLIC_KEY, KMIP_KEYFMT_X_509, spki, spki_len, KMIP_ALG_ED25519,
                 KMIP_USAGE_VERIFY, false, pub);
    const kf_ttlv *o;
    assert_int_equal(get_value(f, priv, 0, &o), KF_OK);
    assert_int_equal(o->tag, KMIP_TAG_PRIVATE_KEY);
    assert_key_material(o, KMIP_KEYFMT_RAW, seed, slen);
    assert_int_equal(get_value(f, priv, KMIP_KEYFMT_PKCS_8, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_PKCS_8, pkcs8, plen);
    assert_int_equal(get_value(f, priv, KMIP_KEYFMT_PKCS_1, &o), KF_ERR_KEY_FORMAT);
    assert_int_equal(get_value(f, pub, 0, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_RAW, point, publen);
    assert_int_equal(get_value(f, pub, KMIP_KEYFMT_X_509, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_X_509, spki, spki_len);
    /* The two RFC examples are one key pair. */
    uint8_t derived[32];
    assert_int_equal(kf_ed25519_public(seed, derived), KF_OK);
    assert_memory_equal(derived, point, 32);
    struct kf_object obj = {0};
    assert_int_equal(kf_kms_get(f->kms, "t", priv, &obj, NULL), KF_OK);
    assert_int_equal(obj.crypto_alg, KMIP_ALG_ED25519);
    assert_int_equal(obj.crypto_length, 256);
    kf_object_clear(&obj);
}

/* PKCS#8 PrivateKeyInfo (RFC 5208) and SubjectPublicKeyInfo (RFC 5280) around the oaep-int.txt key. */
static const uint8_t pkcs8_rsa_prefix[] = {0x30, 0x82, 0x02, 0x75, 0x02, 0x01, 0x00, 0x30, 0x0d,
                                           0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
                                           0x01, 0x01, 0x05, 0x00, 0x04, 0x82, 0x02, 0x5f};
static const uint8_t spki_rsa_prefix[] = {0x30, 0x81, 0x9d, 0x30, 0x0d, 0x06, 0x09, 0x2a,
                                          0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
                                          0x05, 0x00, 0x03, 0x81, 0x8b, 0x00};

static void rsa_pkcs1_pkcs8_and_x509(void **state)
{
    struct fixture *f = *state;
    char priv[KF_UID_MAX], priv8[KF_UID_MAX], pub[KF_UID_MAX], pub509[KF_UID_MAX];
    uint8_t pkcs8[sizeof(pkcs8_rsa_prefix) + sizeof(oaep_priv_der)];
    uint8_t spki[sizeof(spki_rsa_prefix) + sizeof(oaep_pub_der)];
    memcpy(pkcs8, pkcs8_rsa_prefix, sizeof(pkcs8_rsa_prefix));
    memcpy(pkcs8 + sizeof(pkcs8_rsa_prefix), oaep_priv_der, sizeof(oaep_priv_der));
    memcpy(spki, spki_rsa_prefix, sizeof(spki_rsa_prefix));
    memcpy(spki + sizeof(spki_rsa_prefix), oaep_pub_der, sizeof(oaep_pub_der));

    register_key(f, 2, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_PKCS_1, oaep_priv_der,
                 sizeof(oaep_priv_der), KMIP_ALG_RSA, KMIP_USAGE_DECRYPT, false, priv);
    const kf_ttlv *o;
    assert_int_equal(get_value(f, priv, 0, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_PKCS_1, oaep_priv_der, sizeof(oaep_priv_der));
    assert_int_equal(get_value(f, priv, KMIP_KEYFMT_PKCS_8, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_PKCS_8, pkcs8, sizeof(pkcs8));
    assert_int_equal(get_value(f, priv, KMIP_KEYFMT_X_509, &o), KF_ERR_KEY_FORMAT);
    /* Registered as PKCS#8, it is stored (and returned) as the same PKCS#1 key. */
    register_key(f, 1, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_PKCS_8, pkcs8, sizeof(pkcs8), KMIP_ALG_RSA,
                 KMIP_USAGE_DECRYPT, false, priv8);
    assert_int_equal(get_value(f, priv8, KMIP_KEYFMT_PKCS_1, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_PKCS_1, oaep_priv_der, sizeof(oaep_priv_der));
    struct kf_object obj = {0};
    assert_int_equal(kf_kms_get(f->kms, "t", priv8, &obj, NULL), KF_OK);
    assert_int_equal(obj.crypto_length, 1024);
    kf_object_clear(&obj);

    register_key(f, 2, KMIP_OBJ_PUBLIC_KEY, KMIP_KEYFMT_PKCS_1, oaep_pub_der, sizeof(oaep_pub_der),
                 KMIP_ALG_RSA, KMIP_USAGE_ENCRYPT, false, pub);
    assert_int_equal(get_value(f, pub, KMIP_KEYFMT_X_509, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_X_509, spki, sizeof(spki));
    register_key(f, 2, KMIP_OBJ_PUBLIC_KEY, KMIP_KEYFMT_X_509, spki, sizeof(spki), KMIP_ALG_RSA,
                 KMIP_USAGE_ENCRYPT, false, pub509);
    assert_int_equal(get_value(f, pub509, 0, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_PKCS_1, oaep_pub_der, sizeof(oaep_pub_der));
    assert_int_equal(get_value(f, pub509, KMIP_KEYFMT_PKCS_8, &o), KF_ERR_KEY_FORMAT);
}

/* RFC 6979 A.2.5 P-256 key: RFC 5480 SubjectPublicKeyInfo, RFC 5915 ECPrivateKey, PKCS#8. */
#define RFC6979_X "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721"
#define RFC6979_POINT \
    "0460fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb67903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299"
#define P256_SPKI_PREFIX "3059301306072a8648ce3d020106082a8648ce3d030107034200"

static void p256_raw_pkcs8_rfc5915_and_x509(void **state)
{
    struct fixture *f = *state;
    char priv[KF_UID_MAX], again[KF_UID_MAX], pub[KF_UID_MAX], pub2[KF_UID_MAX];
    size_t xlen, qlen, plen;
    uint8_t *x = unhex(f, RFC6979_X, &xlen), *q = unhex(f, RFC6979_POINT, &qlen);
    uint8_t *prefix = unhex(f, P256_SPKI_PREFIX, &plen);
    register_key(f, 2, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_RAW, x, xlen, KMIP_ALG_ECDSA,
                 KMIP_USAGE_SIGN, false, priv);
    const kf_ttlv *o;
    const uint8_t *der;
    size_t n;
    assert_int_equal(get_value(f, priv, KMIP_KEYFMT_EC_PRIVATE_KEY, &o), KF_OK);
    assert_int_equal(kf_ttlv_get_bytes(KF_TTLV_PATH(o, KMIP_TAG_KEY_BLOCK, KMIP_TAG_KEY_VALUE,
                                                    KMIP_TAG_KEY_MATERIAL),
                                       &der, &n),
                     KF_OK);
    /* ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING (32), ... } */
    static const uint8_t ec_head[] = {0x02, 0x01, 0x01, 0x04, 0x20};
    assert_int_equal(n, 2 + 0x77);
    assert_true(der[0] == 0x30 && der[1] == 0x77);
    assert_memory_equal(der + 2, ec_head, sizeof(ec_head));
    assert_memory_equal(der + 2 + sizeof(ec_head), x, 32);
    assert_int_equal(get_value(f, priv, KMIP_KEYFMT_PKCS_8, &o), KF_OK);
    assert_int_equal(kf_ttlv_get_bytes(KF_TTLV_PATH(o, KMIP_TAG_KEY_BLOCK, KMIP_TAG_KEY_VALUE,
                                                    KMIP_TAG_KEY_MATERIAL),
                                       &der, &n),
                     KF_OK);
    uint8_t pkcs8[512];
    assert_true(n <= sizeof(pkcs8));
    memcpy(pkcs8, der, n);
    register_key(f, 1, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_PKCS_8, pkcs8, n, KMIP_ALG_EC,
                 KMIP_USAGE_SIGN, false, again);
    assert_int_equal(get_value(f, again, KMIP_KEYFMT_RAW, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_RAW, x, xlen);

    register_key(f, 2, KMIP_OBJ_PUBLIC_KEY, KMIP_KEYFMT_RAW, q, qlen, KMIP_ALG_ECDSA,
                 KMIP_USAGE_VERIFY, false, pub);
    assert_int_equal(get_value(f, pub, KMIP_KEYFMT_X_509, &o), KF_OK);
    uint8_t spki[91];
    memcpy(spki, prefix, plen);
    memcpy(spki + plen, q, qlen);
    assert_key_material(o, KMIP_KEYFMT_X_509, spki, sizeof(spki));
    register_key(f, 2, KMIP_OBJ_PUBLIC_KEY, KMIP_KEYFMT_X_509, spki, sizeof(spki), 0,
                 KMIP_USAGE_VERIFY, false, pub2);
    assert_int_equal(get_value(f, pub2, 0, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_RAW, q, qlen);

    /* A point off the curve, a zero scalar: Invalid Field / refused. */
    q[64] ^= 0x01;
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_PUBLIC_KEY);
    kf_ttlv *kb = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_PUBLIC_KEY), KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_RAW);
    kf_ttlv_add_bytes(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL, q, qlen);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_ECDSA);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_INVALID_FIELD);
}

/* A self-signed certificate to register (a fixture, not a known answer). */
static size_t make_certificate(uint8_t *out, size_t cap)
{
    gnutls_x509_privkey_t k;
    gnutls_x509_crt_t crt;
    gnutls_datum_t der = {0};
    unsigned char serial[] = {0x01};
    time_t now = time(NULL);
    assert_true(gnutls_x509_privkey_init(&k) >= 0);
    assert_true(gnutls_x509_privkey_generate(k, GNUTLS_PK_ECDSA,
                                             GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) >= 0);
    assert_true(gnutls_x509_crt_init(&crt) >= 0);
    assert_true(gnutls_x509_crt_set_version(crt, 3) >= 0);
    assert_true(gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)) >= 0);
    assert_true(gnutls_x509_crt_set_activation_time(crt, now) >= 0);
    assert_true(gnutls_x509_crt_set_expiration_time(crt, now + 3600) >= 0);
    assert_true(gnutls_x509_crt_set_dn(crt, "CN=keyfleet test", NULL) >= 0);
    assert_true(gnutls_x509_crt_set_key(crt, k) >= 0);
    assert_true(gnutls_x509_crt_sign2(crt, crt, k, GNUTLS_DIG_SHA256, 0) >= 0);
    assert_true(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &der) >= 0);
    assert_true(der.size <= cap);
    memcpy(out, der.data, der.size);
    size_t n = der.size;
    gnutls_free(der.data);
    gnutls_x509_crt_deinit(crt);
    gnutls_x509_privkey_deinit(k);
    return n;
}

static const char *register_simple(struct fixture *f, int major, kf_ttlv *msg, char uid[KF_UID_MAX])
{
    const kf_ttlv *r = expect_success(f, msg);
    const char *s;
    size_t n;
    assert_int_equal(kf_ttlv_get_text(kf_ttlv_find(r, KMIP_TAG_UNIQUE_IDENTIFIER), &s, &n), KF_OK);
    memcpy(uid, s, n + 1);
    (void)major;
    return uid;
}

/* Certificate, Secret Data and Opaque Object keep their type enumerations; Get returns them. */
static void certificate_secret_data_and_opaque(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    uint8_t cert[2048];
    size_t cert_len = make_certificate(cert, sizeof(cert));
    const kf_ttlv *o;
    uint32_t v;

    kf_ttlv *p, *msg = request(f, 1, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_CERTIFICATE);
    kf_ttlv *c = kf_ttlv_struct(f->a, p, KMIP_TAG_CERTIFICATE);
    kf_ttlv_add_enum(f->a, c, KMIP_TAG_CERTIFICATE_TYPE, KMIP_CERTIFICATE_TYPE_X_509);
    kf_ttlv_add_bytes(f->a, c, KMIP_TAG_CERTIFICATE_VALUE, cert, cert_len);
    register_simple(f, 1, msg, uid);
    assert_int_equal(get_value(f, uid, 0, &o), KF_OK);
    assert_int_equal(o->tag, KMIP_TAG_CERTIFICATE);
    assert_bytes(o, KMIP_TAG_CERTIFICATE_VALUE, cert, cert_len);
    assert_int_equal(get_value(f, uid, KMIP_KEYFMT_RAW, &o), KF_ERR_KEY_FORMAT);
    /* Not a certificate: Invalid Field. */
    cert[cert_len / 2] ^= 0xff;
    cert[1] ^= 0x7f;
    msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_CERTIFICATE);
    c = kf_ttlv_struct(f->a, p, KMIP_TAG_CERTIFICATE);
    kf_ttlv_add_enum(f->a, c, KMIP_TAG_CERTIFICATE_TYPE, KMIP_CERTIFICATE_TYPE_X_509);
    kf_ttlv_add_bytes(f->a, c, KMIP_TAG_CERTIFICATE_VALUE, cert, cert_len);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_INVALID_FIELD);
    /* PGP certificates are not taken. */
    msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_CERTIFICATE);
    c = kf_ttlv_struct(f->a, p, KMIP_TAG_CERTIFICATE);
    kf_ttlv_add_enum(f->a, c, KMIP_TAG_CERTIFICATE_TYPE, KMIP_CERTIFICATE_TYPE_PGP);
    kf_ttlv_add_bytes(f->a, c, KMIP_TAG_CERTIFICATE_VALUE, cert, cert_len);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_FEATURE_NOT_SUPPORTED);

    static const uint8_t password[] = "correct horse battery staple";
    msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SECRET_DATA);
    kf_ttlv *sd = kf_ttlv_struct(f->a, p, KMIP_TAG_SECRET_DATA);
    kf_ttlv_add_enum(f->a, sd, KMIP_TAG_SECRET_DATA_TYPE, KMIP_SECRET_PASSWORD);
    kf_ttlv *kb = kf_ttlv_struct(f->a, sd, KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_OPAQUE);
    kf_ttlv_add_bytes(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL,
                      password, sizeof(password));
    register_simple(f, 2, msg, uid);
    assert_int_equal(get_value(f, uid, 0, &o), KF_OK);
    assert_int_equal(o->tag, KMIP_TAG_SECRET_DATA);
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(o, KMIP_TAG_SECRET_DATA_TYPE), &v), KF_OK);
    assert_int_equal(v, KMIP_SECRET_PASSWORD);
    assert_key_material(o, KMIP_KEYFMT_OPAQUE, password, sizeof(password));
    assert_int_equal(get_value(f, uid, KMIP_KEYFMT_PKCS_8, &o), KF_ERR_KEY_FORMAT);

    static const uint8_t blob[] = {0xde, 0xad, 0xbe, 0xef};
    msg = request(f, 1, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_OPAQUE_OBJECT);
    kf_ttlv *op = kf_ttlv_struct(f->a, p, KMIP_TAG_OPAQUE_OBJECT);
    kf_ttlv_add_enum(f->a, op, KMIP_TAG_OPAQUE_DATA_TYPE, 0x80000010u);
    kf_ttlv_add_bytes(f->a, op, KMIP_TAG_OPAQUE_DATA_VALUE, blob, sizeof(blob));
    register_simple(f, 1, msg, uid);
    assert_int_equal(get_value(f, uid, 0, &o), KF_OK);
    assert_int_equal(o->tag, KMIP_TAG_OPAQUE_OBJECT);
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(o, KMIP_TAG_OPAQUE_DATA_TYPE), &v), KF_OK);
    assert_int_equal(v, 0x80000010u);
    assert_bytes(o, KMIP_TAG_OPAQUE_DATA_VALUE, blob, sizeof(blob));
    assert_int_equal(get_value(f, uid, KMIP_KEYFMT_RAW, &o), KF_ERR_KEY_FORMAT);
}

/* Register of a key block that must be refused with reason. */
static void register_key_expect(struct fixture *f, uint32_t type, uint32_t format,
                                const uint8_t *key, size_t len, uint32_t reason)
{
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, type);
    uint32_t tag = type == KMIP_OBJ_PRIVATE_KEY ? KMIP_TAG_PRIVATE_KEY : KMIP_TAG_PUBLIC_KEY;
    kf_ttlv *kb = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, tag), KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, format);
    kf_ttlv_add_bytes(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL,
                      key, len);
    assert_int_equal(expect_failure(f, msg, NULL), reason);
}

/* Transparent Symmetric Key in and out; Raw out; other formats refused. */
static void symmetric_key_formats(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    size_t klen;
    uint8_t *key = unhex(f, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", &klen);
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
    kf_ttlv *attrs = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
    kf_ttlv_add_int(f->a, attrs, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, KMIP_USAGE_ENCRYPT);
    kf_ttlv *kb = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_SYMMETRIC_KEY), KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY);
    kf_ttlv *km = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL);
    kf_ttlv_add_bytes(f->a, km, KMIP_TAG_KEY, key, klen);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
    kf_ttlv_add_int(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 256);
    register_simple(f, 2, msg, uid);
    const kf_ttlv *o;
    assert_int_equal(get_value(f, uid, 0, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_RAW, key, klen);
    assert_int_equal(get_value(f, uid, KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY, key, klen);
    assert_int_equal(get_value(f, uid, KMIP_KEYFMT_PKCS_1, &o), KF_ERR_KEY_FORMAT);
    assert_int_equal(kf_kms_result_reason(KF_ERR_KEY_FORMAT, 2),
                     KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED);
    assert_int_equal(kf_kms_result_reason(KF_ERR_KEY_FORMAT, 1),
                     KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED);

    /* Refusals: a 20-byte AES key, a length that contradicts the material, a wrapped block. */
    static const struct {
        size_t len;
        int32_t length;
        bool wrapped;
        uint32_t reason;
    } bad[] = {
        {20, 0, false, KMIP_REASON_FEATURE_NOT_SUPPORTED},
        {16, 256, false, KMIP_REASON_INVALID_FIELD},
        {16, 0, true, KMIP_REASON_FEATURE_NOT_SUPPORTED},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        msg = request(f, 2, KMIP_OP_REGISTER, &p);
        kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
        kb = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_SYMMETRIC_KEY), KMIP_TAG_KEY_BLOCK);
        kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_RAW);
        kf_ttlv_add_bytes(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL,
                          key, bad[i].len);
        kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
        if (bad[i].length)
            kf_ttlv_add_int(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, bad[i].length);
        if (bad[i].wrapped)
            kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_WRAPPING_DATA);
        assert_int_equal(expect_failure(f, msg, NULL), bad[i].reason);
    }
    /* No Object Type; an object type Register does not take. */
    msg = request(f, 2, KMIP_OP_REGISTER, &p);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_MISSING_DATA);
    msg = request(f, 1, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SPLIT_KEY);
    assert_int_equal(expect_failure(f, msg, NULL), KMIP_REASON_FEATURE_NOT_SUPPORTED);
    /* Key material in a format the object type cannot have. */
    register_key_expect(f, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY, key, klen,
                        KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED);
    register_key_expect(f, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_PKCS_1, key, klen,
                        KMIP_REASON_INVALID_FIELD);
}

/* Cryptographic Parameters given at Register are the key's defaults (1.x and 2.x forms). */
static void registered_parameters_are_defaults(void **state)
{
    struct fixture *f = *state;
    size_t klen, ivlen, ptlen, ctlen;
    uint8_t *k256 = unhex(f, "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", &klen);
    uint8_t *iv = unhex(f, "000102030405060708090a0b0c0d0e0f", &ivlen);
    uint8_t *pt = unhex(f, "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710", &ptlen);
    uint8_t *ct = unhex(f, "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b", &ctlen);
    for (int major = 1; major <= 2; major++) {
        char uid[KF_UID_MAX];
        kf_ttlv *p, *msg = request(f, major, KMIP_OP_REGISTER, &p);
        kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
        kf_ttlv *g = attr_group(f, p, major, KMIP_TAG_TEMPLATE_ATTRIBUTE, KMIP_TAG_ATTRIBUTES);
        add_attr_int(f, g, major, "Cryptographic Usage Mask", KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK,
                     KMIP_USAGE_ENCRYPT);
        kf_ttlv *cp;
        if (major == 1) {
            kf_ttlv *at = kf_ttlv_struct(f->a, g, KMIP_TAG_ATTRIBUTE);
            kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Parameters");
            cp = kf_ttlv_struct(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE);
        } else {
            cp = kf_ttlv_struct(f->a, g, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
        }
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_CBC);
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, KMIP_PAD_NONE);
        kf_ttlv *kb = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_SYMMETRIC_KEY), KMIP_TAG_KEY_BLOCK);
        kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_RAW);
        kf_ttlv_add_bytes(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL,
                          k256, klen);
        kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
        register_simple(f, major, msg, uid);
        uid_op(f, major, KMIP_OP_ACTIVATE, uid);
        /* No Cryptographic Parameters in the Encrypt: SP 800-38A F.2.5 from the defaults. */
        msg = request(f, major, KMIP_OP_ENCRYPT, &p);
        kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, pt, ptlen);
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_IV_COUNTER_NONCE, iv, ivlen);
        assert_bytes(expect_success(f, msg), KMIP_TAG_DATA, ct, ctlen);
        /* The request overrides: PKCS#5 padding adds a block. */
        msg = request(f, major, KMIP_OP_ENCRYPT, &p);
        kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
        cp = kf_ttlv_struct(f->a, p, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, KMIP_PAD_PKCS5);
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, pt, ptlen);
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_IV_COUNTER_NONCE, iv, ivlen);
        const uint8_t *out;
        size_t n;
        assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(expect_success(f, msg), KMIP_TAG_DATA),
                                           &out, &n),
                         KF_OK);
        assert_int_equal(n, 80);
        assert_memory_equal(out, ct, 64);
    }
}

int main(void)
{
    kf_log_open(NULL, KF_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(ed25519_pkcs8_and_spki_rfc8410, setup, teardown),
        cmocka_unit_test_setup_teardown(rsa_pkcs1_pkcs8_and_x509, setup, teardown),
        cmocka_unit_test_setup_teardown(p256_raw_pkcs8_rfc5915_and_x509, setup, teardown),
        cmocka_unit_test_setup_teardown(certificate_secret_data_and_opaque, setup, teardown),
        cmocka_unit_test_setup_teardown(symmetric_key_formats, setup, teardown),
        cmocka_unit_test_setup_teardown(registered_parameters_are_defaults, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
