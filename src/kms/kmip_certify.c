/*
 * KMIP Certify (1.4 §4.7, 2.1 §6.1.6), keyfleet's simple form: an X.509 v3
 * certificate for a managed Public Key, signed by a managed CA Private Key.
 *
 * The issuer is named by the custom attribute "x-keyfleet-ca" (the CA private
 * key's Unique Identifier), given in the request's attributes or carried by
 * the public key itself; it must live in the public key's domain and have
 * usage Certificate Sign. The issuer's name is "CN=keyfleet CA <ca uid>"; the
 * subject's is "CN=<the public key's Name>" (or its Unique Identifier).
 * PKCS#10 Certificate Requests are not taken (yet): the request is refused
 * with a sentence saying so.
 *
 * GnuTLS needs an issuer certificate to sign with, so one is made in memory
 * for the CA key (self-signed, never stored): the leaf's Authority Key
 * Identifier and issuer name come from it. The result is stored as a
 * Certificate object linked both ways to the public key.
 */
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/rng.h"
#include "attributes.h"
#include "kmip_internal.h"

#define CERT_MAX 16384
#define CERT_DAYS 365
#define CA_ATTRIBUTE_V1 "x-keyfleet-ca"
#define CA_ATTRIBUTE_NAME "keyfleet-ca"

struct issue_job {
    struct kmip_call *c;
    const char *ca_uid;
    const kf_buf *subject_spki;  /* SubjectPublicKeyInfo DER of the key to certify */
    char subject_cn[KF_OBJECT_NAME_MAX + 1];
    kf_buf *cert;                /* the DER certificate */
};

/* ---- the CA's UID from the request or the public key ---- */

static const char *ca_in_v1(struct kmip_call *c, const kf_ttlv *group)
{
    for (const kf_ttlv *a = kf_ttlv_find(group, KMIP_TAG_ATTRIBUTE); a;
         a = kf_ttlv_find_next(a, KMIP_TAG_ATTRIBUTE))
        if (kf_ttlv_text_equals(kf_ttlv_find(a, KMIP_TAG_ATTRIBUTE_NAME), CA_ATTRIBUTE_V1))
            return kmip_text(c, a, KMIP_TAG_ATTRIBUTE_VALUE);
    return NULL;
}

/* 2.x Vendor Attribute {x, keyfleet-ca, value} among the children of set. */
static const char *ca_in_v2(struct kmip_call *c, const kf_ttlv *set)
{
    for (const kf_ttlv *a = kf_ttlv_find(set, KMIP_TAG_ATTRIBUTE); a;
         a = kf_ttlv_find_next(a, KMIP_TAG_ATTRIBUTE))
        if (kf_ttlv_text_equals(kf_ttlv_find(a, KMIP_TAG_VENDOR_IDENTIFICATION), "x") &&
            kf_ttlv_text_equals(kf_ttlv_find(a, KMIP_TAG_ATTRIBUTE_NAME), CA_ATTRIBUTE_NAME))
            return kmip_text(c, a, KMIP_TAG_ATTRIBUTE_VALUE);
    return NULL;
}

static const char *ca_uid_of(struct kmip_call *c, const struct kf_object *pub, const char *uid)
{
    const char *ca = ca_in_v1(c, kf_ttlv_find(c->req, KMIP_TAG_TEMPLATE_ATTRIBUTE));
    if (!ca)
        ca = ca_in_v2(c, kf_ttlv_find(c->req, KMIP_TAG_ATTRIBUTES));
    kf_ttlv *set;
    if (!ca && attrs_load(c->arena, pub, uid, &set) == KF_OK)
        ca = ca_in_v2(c, set);
    return ca;
}

/* ---- building the certificate ---- */

static int set_cn(gnutls_x509_crt_t crt, bool issuer, const char *cn)
{
    int (*set)(gnutls_x509_crt_t, const char *, unsigned, const void *, unsigned) =
        issuer ? gnutls_x509_crt_set_issuer_dn_by_oid : gnutls_x509_crt_set_dn_by_oid;
    return set(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn, (unsigned)strlen(cn)) < 0 ? KF_ERR_CRYPTO
                                                                                   : KF_OK;
}

/* Version 3, a random 16-byte positive serial, valid from a minute ago for CERT_DAYS. */
static int set_common(gnutls_x509_crt_t crt)
{
    uint8_t serial[16];
    KF_GUARD(kf_rng_bytes(serial, sizeof(serial)));
    serial[0] &= 0x7f;
    serial[0] |= 0x01; /* positive and no leading zero */
    time_t now = time(NULL);
    if (gnutls_x509_crt_set_version(crt, 3) < 0 ||
        gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)) < 0 ||
        gnutls_x509_crt_set_activation_time(crt, now - 60) < 0 ||
        gnutls_x509_crt_set_expiration_time(crt, now + (time_t)CERT_DAYS * 86400) < 0)
        return KF_ERR_CRYPTO;
    return KF_OK;
}

static unsigned sign_hash(gnutls_privkey_t key)
{
    gnutls_pubkey_t pub;
    gnutls_digest_algorithm_t dig = GNUTLS_DIG_SHA256;
    unsigned mand = 0;
    if (gnutls_pubkey_init(&pub) >= 0) {
        if (gnutls_pubkey_import_privkey(pub, key, 0, 0) >= 0 &&
            gnutls_pubkey_get_preferred_hash_algorithm(pub, &dig, &mand) < 0)
            dig = GNUTLS_DIG_SHA256;
        gnutls_pubkey_deinit(pub);
    }
    return (unsigned)dig;
}

/* The in-memory issuer certificate for the CA key. */
static int issuer_cert(gnutls_privkey_t key, const char *ca_cn, gnutls_x509_crt_t *out)
{
    gnutls_x509_crt_t ca;
    KF_ENSURE(gnutls_x509_crt_init(&ca) >= 0, KF_ERR_NOMEM);
    int rc = set_common(ca);
    if (rc == KF_OK)
        rc = set_cn(ca, false, ca_cn);
    gnutls_pubkey_t pub = NULL;
    if (rc == KF_OK && (gnutls_pubkey_init(&pub) < 0 ||
                        gnutls_pubkey_import_privkey(pub, key, 0, 0) < 0 ||
                        gnutls_x509_crt_set_pubkey(ca, pub) < 0 ||
                        gnutls_x509_crt_set_basic_constraints(ca, 1, -1) < 0 ||
                        gnutls_x509_crt_set_key_usage(ca, GNUTLS_KEY_KEY_CERT_SIGN |
                                                              GNUTLS_KEY_CRL_SIGN) < 0 ||
                        gnutls_x509_crt_privkey_sign(ca, ca, key,
                                                     (gnutls_digest_algorithm_t)sign_hash(key),
                                                     0) < 0))
        rc = KF_ERR_CRYPTO;
    if (pub)
        gnutls_pubkey_deinit(pub);
    if (rc < 0) {
        gnutls_x509_crt_deinit(ca);
        return rc;
    }
    *out = ca;
    return KF_OK;
}

static int leaf_cert(const struct issue_job *j, gnutls_x509_crt_t issuer, gnutls_privkey_t key,
                     kf_buf *der_out)
{
    gnutls_x509_crt_t crt;
    gnutls_pubkey_t pub;
    KF_ENSURE(gnutls_x509_crt_init(&crt) >= 0, KF_ERR_NOMEM);
    if (gnutls_pubkey_init(&pub) < 0) {
        gnutls_x509_crt_deinit(crt);
        return KF_ERR_NOMEM;
    }
    const gnutls_datum_t spki = {j->subject_spki->data, (unsigned)j->subject_spki->len};
    gnutls_datum_t der = {0};
    int rc = set_common(crt);
    if (rc == KF_OK)
        rc = set_cn(crt, false, j->subject_cn);
    if (rc == KF_OK &&
        (gnutls_pubkey_import(pub, &spki, GNUTLS_X509_FMT_DER) < 0 ||
         gnutls_x509_crt_set_pubkey(crt, pub) < 0 ||
         gnutls_x509_crt_set_basic_constraints(crt, 0, -1) < 0 ||
         gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE) < 0 ||
         gnutls_x509_crt_privkey_sign(crt, issuer, key, (gnutls_digest_algorithm_t)sign_hash(key),
                                      0) < 0 ||
         gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &der) < 0))
        rc = KF_ERR_CRYPTO;
    if (rc == KF_OK)
        rc = kf_buf_put_bytes(der_out, der.data, der.size);
    gnutls_free(der.data);
    gnutls_pubkey_deinit(pub);
    gnutls_x509_crt_deinit(crt);
    return rc;
}

/* The CA key (PKCS#8 in secure memory) as a GnuTLS private key. */
static int ca_privkey(const struct kf_object *obj, const uint8_t *m, size_t len,
                      gnutls_privkey_t *out)
{
    kf_buf p8;
    gnutls_x509_privkey_t xk;
    KF_GUARD(kf_buf_alloc(&p8, 0, CERT_MAX, KF_BUF_SECRET));
    int rc = kms_private_key_export(obj->crypto_alg, m, len, KMIP_KEYFMT_PKCS_8, &p8);
    if (rc == KF_OK && gnutls_x509_privkey_init(&xk) < 0)
        rc = KF_ERR_NOMEM;
    if (rc == KF_OK) {
        const gnutls_datum_t d = {p8.data, (unsigned)p8.len};
        if (gnutls_x509_privkey_import_pkcs8(xk, &d, GNUTLS_X509_FMT_DER, NULL,
                                             GNUTLS_PKCS_PLAIN) < 0 ||
            gnutls_privkey_init(out) < 0)
            rc = KF_ERR_CRYPTO;
        else if (gnutls_privkey_import_x509(*out, xk, GNUTLS_PRIVKEY_IMPORT_AUTO_RELEASE) < 0) {
            gnutls_privkey_deinit(*out);
            rc = KF_ERR_CRYPTO;
        }
        if (rc < 0)
            gnutls_x509_privkey_deinit(xk);
    }
    kf_buf_free(&p8);
    return rc;
}

/* kf_kms_use_key callback: the CA key in secure memory signs the leaf. */
static int issue_with_ca(void *ctx, const struct kf_object *obj, const uint8_t *m, size_t len)
{
    struct issue_job *j = ctx;
    KF_ENSURE(obj->object_type == KF_OBJ_PRIVATE_KEY, KF_ERR_ATTRIBUTE);
    gnutls_privkey_t key;
    KF_GUARD(ca_privkey(obj, m, len, &key));
    char ca_cn[KF_UID_MAX + 16];
    snprintf(ca_cn, sizeof(ca_cn), "keyfleet CA %s", j->ca_uid);
    gnutls_x509_crt_t issuer;
    int rc = issuer_cert(key, ca_cn, &issuer);
    if (rc == KF_OK) {
        rc = leaf_cert(j, issuer, key, j->cert);
        gnutls_x509_crt_deinit(issuer);
    }
    gnutls_privkey_deinit(key);
    return rc;
}

/* ---- the operation ---- */

/* The public key's SubjectPublicKeyInfo and subject name. */
static int load_subject(struct kmip_call *c, const char *uid, struct kf_object *pub,
                        struct issue_job *j, kf_buf *spki)
{
    kf_buf stored;
    KF_GUARD(kf_buf_alloc(&stored, 64, CERT_MAX, 0));
    int rc = kf_kms_get(c->kms, c->actor, uid, pub, &stored);
    if (rc == KF_OK)
        rc = kmip_refuse_archived(c, pub, uid);
    if (rc == KF_OK && pub->object_type != KF_OBJ_PUBLIC_KEY) {
        snprintf(c->message, sizeof(c->message), "Certify takes a Public Key");
        rc = KF_ERR_ATTRIBUTE;
    }
    if (rc == KF_OK)
        rc = kms_public_key_export(pub->crypto_alg, stored.data, stored.len, KMIP_KEYFMT_X_509,
                                   spki);
    kf_buf_free(&stored);
    snprintf(j->subject_cn, sizeof(j->subject_cn), "%s", pub->name[0] ? pub->name : uid);
    return rc;
}

static int issuer_checks(struct kmip_call *c, const char *uid, const char *ca)
{
    char d1[65], d2[65];
    if (!ca) {
        snprintf(c->message, sizeof(c->message),
                 "Certify needs the issuer: an x-keyfleet-ca attribute naming a CA private key");
        return KF_ERR_REQUEST;
    }
    KF_GUARD(kf_kms_uid_domain(uid, d1));
    KF_GUARD(kf_kms_uid_domain(ca, d2));
    if (strcmp(d1, d2) != 0) {
        snprintf(c->message, sizeof(c->message), "the CA key must be in the public key's domain");
        return KF_ERR_DOMAIN_CROSS;
    }
    return kmip_authorize_uid(c, KF_ROLE_USE, ca, "Certify");
}

struct cert_link {
    uint32_t type;
    const char *target;
};

static int put_cert_link(void *ctx, kf_arena *a, kf_ttlv *set, const struct kf_object *obj)
{
    const struct cert_link *l = ctx;
    (void)obj;
    kf_ttlv *link = kf_ttlv_struct(a, set, KMIP_TAG_LINK);
    KF_ENSURE(link && kf_ttlv_add_enum(a, link, KMIP_TAG_LINK_TYPE, l->type) &&
                  kf_ttlv_add_text(a, link, KMIP_TAG_LINKED_OBJECT_IDENTIFIER, l->target),
              KF_ERR_NOMEM);
    return KF_OK;
}

static int store_certificate(struct kmip_call *c, const char *pub_uid, const kf_buf *der,
                             char cert_uid[KF_UID_MAX])
{
    char domain[65];
    KF_GUARD(kf_kms_uid_domain(pub_uid, domain));
    struct kf_register_spec spec = {
        .domain = domain,
        .object_type = KF_OBJ_CERTIFICATE,
        .key_format = KMIP_KEYFMT_X_509,
    };
    KF_GUARD(kf_kms_register(c->kms, c->actor, "Certify", &spec, der->data, der->len, cert_uid));
    struct cert_link to_pub = {KMIP_LINK_PUBLIC_KEY_LINK, pub_uid};
    struct cert_link to_cert = {KMIP_LINK_CERTIFICATE_LINK, cert_uid};
    KF_GUARD(kms_attrs_edit(c->kms, c->actor, "Certify (link)", cert_uid, put_cert_link, &to_pub));
    return kms_attrs_edit(c->kms, c->actor, "Certify (link)", pub_uid, put_cert_link, &to_cert);
}

int kmip_certify(struct kmip_call *c)
{
    if (kf_ttlv_find(c->req, KMIP_TAG_CERTIFICATE_REQUEST_VALUE) ||
        kf_ttlv_find(c->req, KMIP_TAG_CERTIFICATE_REQUEST)) {
        snprintf(c->message, sizeof(c->message),
                 "Certify from a Certificate Request is not supported: certify a managed "
                 "Public Key with an x-keyfleet-ca issuer");
        return KF_ERR_UNSUPPORTED;
    }
    const char *uid = kmip_call_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_MANAGE, uid, "Certify"));
    struct kf_object pub = {0};
    kf_buf spki, cert = {0};
    struct issue_job j = {.c = c, .subject_spki = &spki, .cert = &cert};
    KF_GUARD(kf_buf_alloc(&spki, 64, CERT_MAX, 0));
    int rc = load_subject(c, uid, &pub, &j, &spki);
    if (rc == KF_OK) {
        j.ca_uid = ca_uid_of(c, &pub, uid);
        rc = issuer_checks(c, uid, j.ca_uid);
    }
    if (rc == KF_OK)
        rc = kf_buf_alloc(&cert, 256, CERT_MAX, 0);
    if (rc == KF_OK)
        rc = kf_kms_use_key(c->kms, c->actor, "Certify", j.ca_uid, KF_USE_SIGN,
                            KMIP_USAGE_CERTIFICATE_SIGN, issue_with_ca, &j);
    char cert_uid[KF_UID_MAX];
    if (rc == KF_OK)
        rc = store_certificate(c, uid, &cert, cert_uid);
    kf_object_clear(&pub);
    kf_buf_free(&spki);
    if (cert.data)
        kf_buf_free(&cert);
    KF_GUARD(rc);
    return kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER, cert_uid)
               ? KF_OK
               : KF_ERR_NOMEM;
}
