/*
 * KMIP Certify (1.4 §4.7, 2.1 §6.1.6): an X.509 v3 certificate signed by a
 * managed CA Private Key, in two forms.
 *
 * The issuer is named by the custom attribute "x-keyfleet-ca" (the CA private
 * key's Unique Identifier) and must have usage Certificate Sign; the caller
 * needs Use on it. The issuer's name is "CN=keyfleet CA <ca uid>".
 *
 * 1. A managed Public Key (Unique Identifier, no Certificate Request): the CA
 *    is named in the request's attributes or carried by the public key itself
 *    and must live in the public key's domain; the subject is "CN=<the public
 *    key's Name>" (or its Unique Identifier). The caller needs Manage on the
 *    public key. The Certificate is linked both ways to the public key.
 *
 * 2. A PKCS#10 Certificate Request: Certificate Request Type PKCS#10 (DER) or
 *    PEM, and the request in Certificate Request Value (2.x, and 1.x clients
 *    that use it) or the 1.x Byte String Certificate Request; at most CSR_MAX
 *    bytes. GnuTLS parses it and verifies its self-signature (a bad one is
 *    refused: KF_ERR_BAD_SIGNATURE, Cryptographic Failure; an unparsable one:
 *    KF_ERR_ATTRIBUTE, Invalid Field). The certificate certifies the request's
 *    SubjectPublicKeyInfo, its subject is "CN=<the request's Common Name>"
 *    (other name parts, attributes and requested extensions are not copied;
 *    a request without a Common Name is refused). x-keyfleet-ca must be in the
 *    request's attributes; the caller needs Manage in the CA's domain, where
 *    the Certificate is registered. If the request also names a managed
 *    Public Key by Unique Identifier (Manage on it, same domain), the request's
 *    key must be that key (else KF_ERR_INVALID_MESSAGE) and the links are made
 *    as in form 1; otherwise the Certificate has no public-key link. CRMF and
 *    PGP requests are refused as not supported.
 *
 * GnuTLS needs an issuer certificate to sign with, so one is made in memory
 * for the CA key (self-signed, never stored): the leaf's Authority Key
 * Identifier and issuer name come from it.
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
#define CSR_MAX 16384 /* a PKCS#10 request, DER or PEM */
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

/* ---- form 1: the subject and the issuer ---- */

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

/* The Certificate in the CA's domain, linked both ways to pub_uid unless that is NULL. */
static int store_certificate(struct kmip_call *c, const char *ca_uid, const char *pub_uid,
                             const kf_buf *der, char cert_uid[KF_UID_MAX])
{
    char domain[65];
    KF_GUARD(kf_kms_uid_domain(ca_uid, domain));
    struct kf_register_spec spec = {
        .domain = domain,
        .object_type = KF_OBJ_CERTIFICATE,
        .key_format = KMIP_KEYFMT_X_509,
    };
    KF_GUARD(kf_kms_register(c->kms, c->actor, "Certify", &spec, der->data, der->len, cert_uid));
    if (!pub_uid)
        return KF_OK;
    struct cert_link to_pub = {KMIP_LINK_PUBLIC_KEY_LINK, pub_uid};
    struct cert_link to_cert = {KMIP_LINK_CERTIFICATE_LINK, cert_uid};
    KF_GUARD(kms_attrs_edit(c->kms, c->actor, "Certify (link)", cert_uid, put_cert_link, &to_pub));
    return kms_attrs_edit(c->kms, c->actor, "Certify (link)", pub_uid, put_cert_link, &to_cert);
}

/* Both forms end here: the CA key signs j's subject, the Certificate is stored
 * (linked to pub_uid unless NULL) and its Unique Identifier answered. */
static int issue_and_store(struct kmip_call *c, struct issue_job *j, const char *pub_uid)
{
    kf_buf cert;
    KF_GUARD(kf_buf_alloc(&cert, 256, CERT_MAX, 0));
    j->cert = &cert;
    int rc = kf_kms_use_key(c->kms, c->actor, "Certify", j->ca_uid, KF_USE_SIGN,
                            KMIP_USAGE_CERTIFICATE_SIGN, issue_with_ca, j);
    char cert_uid[KF_UID_MAX];
    if (rc == KF_OK)
        rc = store_certificate(c, j->ca_uid, pub_uid, &cert, cert_uid);
    kf_buf_free(&cert);
    j->cert = NULL;
    KF_GUARD(rc);
    return kf_ttlv_add_text(c->arena, c->resp, KMIP_TAG_UNIQUE_IDENTIFIER, cert_uid)
               ? KF_OK
               : KF_ERR_NOMEM;
}

/* ---- form 2: a PKCS#10 Certificate Request ---- */

static int csr_refuse(struct kmip_call *c, int err, const char *sentence)
{
    snprintf(c->message, sizeof(c->message), "%s", sentence);
    return err;
}

/* The request's bytes and encoding, parsed into crq (size-limited). */
static int csr_import(struct kmip_call *c, const kf_ttlv *value, gnutls_x509_crq_t *crq)
{
    uint32_t type = 0;
    const kf_ttlv *t = kf_ttlv_find(c->req, KMIP_TAG_CERTIFICATE_REQUEST_TYPE);
    if (!t)
        return csr_refuse(c, KF_ERR_REQUEST,
                          "a Certificate Request needs its Certificate Request Type (PKCS#10)");
    if (kf_ttlv_get_enum(t, &type) != KF_OK)
        return csr_refuse(c, KF_ERR_ATTRIBUTE, "Certificate Request Type must be an Enumeration");
    if (type != KMIP_CERTIFICATE_REQUEST_TYPE_PKCS_10 &&
        type != KMIP_CERTIFICATE_REQUEST_TYPE_PEM)
        return csr_refuse(c, KF_ERR_UNSUPPORTED,
                          "Certify takes PKCS#10 (DER) or PEM Certificate Requests only");
    const uint8_t *p;
    size_t len;
    if (kf_ttlv_get_bytes(value, &p, &len) != KF_OK)
        return csr_refuse(c, KF_ERR_ATTRIBUTE, "the Certificate Request must be a Byte String");
    if (len == 0 || len > CSR_MAX) {
        snprintf(c->message, sizeof(c->message),
                 "the Certificate Request must hold 1 to %d bytes", CSR_MAX);
        return KF_ERR_ATTRIBUTE;
    }
    KF_ENSURE(gnutls_x509_crq_init(crq) >= 0, KF_ERR_NOMEM);
    const gnutls_datum_t d = {(unsigned char *)(uintptr_t)p, (unsigned)len};
    if (gnutls_x509_crq_import(*crq, &d,
                               type == KMIP_CERTIFICATE_REQUEST_TYPE_PEM ? GNUTLS_X509_FMT_PEM
                                                                         : GNUTLS_X509_FMT_DER) <
        0) {
        gnutls_x509_crq_deinit(*crq);
        return csr_refuse(c, KF_ERR_ATTRIBUTE,
                          type == KMIP_CERTIFICATE_REQUEST_TYPE_PEM
                              ? "the Certificate Request is not a PEM PKCS#10 request"
                              : "the Certificate Request is not a DER PKCS#10 request");
    }
    return KF_OK;
}

/* Verified request -> its SubjectPublicKeyInfo (DER) and Common Name. */
static int csr_subject(struct kmip_call *c, gnutls_x509_crq_t crq, struct issue_job *j,
                       kf_buf *spki)
{
    if (gnutls_x509_crq_verify(crq, 0) < 0)
        return csr_refuse(c, KF_ERR_BAD_SIGNATURE,
                          "the Certificate Request's self-signature does not verify: the "
                          "request was altered or not signed with the key it carries");
    size_t cn_len = sizeof(j->subject_cn);
    int g = gnutls_x509_crq_get_dn_by_oid(crq, GNUTLS_OID_X520_COMMON_NAME, 0, 0, j->subject_cn,
                                          &cn_len);
    if (g == GNUTLS_E_SHORT_MEMORY_BUFFER) {
        snprintf(c->message, sizeof(c->message),
                 "the Certificate Request's Common Name is longer than %d characters",
                 KF_OBJECT_NAME_MAX);
        return KF_ERR_ATTRIBUTE;
    }
    if (g < 0 || cn_len == 0 || strlen(j->subject_cn) != cn_len)
        return csr_refuse(c, KF_ERR_ATTRIBUTE,
                          "the Certificate Request's subject needs one Common Name (CN)");
    gnutls_pubkey_t pub;
    gnutls_datum_t der = {0};
    KF_ENSURE(gnutls_pubkey_init(&pub) >= 0, KF_ERR_NOMEM);
    int rc = KF_OK;
    if (gnutls_pubkey_import_x509_crq(pub, crq, 0) < 0 ||
        gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &der) < 0)
        rc = csr_refuse(c, KF_ERR_UNSUPPORTED,
                        "the Certificate Request's public key is of a kind GnuTLS cannot use");
    if (rc == KF_OK)
        rc = kf_buf_put_bytes(spki, der.data, der.size);
    gnutls_free(der.data);
    gnutls_pubkey_deinit(pub);
    return rc;
}

/* KF_OK if the SubjectPublicKeyInfo a (a GnuTLS export) is the key in b. */
static int same_key(struct kmip_call *c, const kf_buf *a, const kf_buf *b)
{
    gnutls_pubkey_t pub;
    gnutls_datum_t der = {0};
    const gnutls_datum_t in = {b->data, (unsigned)b->len};
    KF_ENSURE(gnutls_pubkey_init(&pub) >= 0, KF_ERR_NOMEM);
    int rc = KF_OK;
    if (gnutls_pubkey_import(pub, &in, GNUTLS_X509_FMT_DER) < 0 ||
        gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &der) < 0)
        rc = KF_ERR_CRYPTO;
    else if (der.size != a->len || memcmp(der.data, a->data, a->len) != 0)
        rc = csr_refuse(c, KF_ERR_INVALID_MESSAGE,
                        "the Certificate Request's public key is not the Public Key named by "
                        "the Unique Identifier");
    gnutls_free(der.data);
    gnutls_pubkey_deinit(pub);
    return rc;
}

static int certify_csr(struct kmip_call *c, const kf_ttlv *value)
{
    struct issue_job j = {.c = c};
    j.ca_uid = ca_in_v1(c, kf_ttlv_find(c->req, KMIP_TAG_TEMPLATE_ATTRIBUTE));
    if (!j.ca_uid)
        j.ca_uid = ca_in_v2(c, kf_ttlv_find(c->req, KMIP_TAG_ATTRIBUTES));
    if (!j.ca_uid)
        return csr_refuse(c, KF_ERR_REQUEST,
                          "Certify from a Certificate Request needs the issuer: an "
                          "x-keyfleet-ca attribute in the request naming a CA private key");
    /* Only a Unique Identifier the request names: no ID Placeholder here. */
    const char *pub_uid = kmip_text(c, c->req, KMIP_TAG_UNIQUE_IDENTIFIER);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_MANAGE, j.ca_uid, "Certify"));
    if (pub_uid) {
        KF_GUARD(kmip_authorize_uid(c, KF_ROLE_MANAGE, pub_uid, "Certify"));
        KF_GUARD(issuer_checks(c, pub_uid, j.ca_uid));
    } else {
        KF_GUARD(kmip_authorize_uid(c, KF_ROLE_USE, j.ca_uid, "Certify"));
    }
    gnutls_x509_crq_t crq;
    KF_GUARD(csr_import(c, value, &crq));
    kf_buf spki, named = {0};
    struct kf_object pub = {0};
    int rc = kf_buf_alloc(&spki, 64, CERT_MAX, 0);
    if (rc == KF_OK) {
        rc = csr_subject(c, crq, &j, &spki);
        if (rc == KF_OK && pub_uid) {
            struct issue_job scratch = {.c = c};
            rc = kf_buf_alloc(&named, 64, CERT_MAX, 0);
            if (rc == KF_OK)
                rc = load_subject(c, pub_uid, &pub, &scratch, &named);
            if (rc == KF_OK)
                rc = same_key(c, &spki, &named);
        }
        j.subject_spki = &spki;
        if (rc == KF_OK)
            rc = issue_and_store(c, &j, pub_uid);
        kf_buf_free(&spki);
    }
    if (named.data)
        kf_buf_free(&named);
    kf_object_clear(&pub);
    gnutls_x509_crq_deinit(crq);
    return rc;
}

/* ---- the operation ---- */

int kmip_certify(struct kmip_call *c)
{
    const kf_ttlv *csr = kf_ttlv_find(c->req, KMIP_TAG_CERTIFICATE_REQUEST_VALUE);
    if (!csr)
        csr = kf_ttlv_find(c->req, KMIP_TAG_CERTIFICATE_REQUEST);
    if (csr)
        return certify_csr(c, csr);
    const char *uid = kmip_call_uid(c);
    KF_ENSURE(uid, KF_ERR_REQUEST);
    KF_GUARD(kmip_authorize_uid(c, KF_ROLE_MANAGE, uid, "Certify"));
    struct kf_object pub = {0};
    kf_buf spki;
    struct issue_job j = {.c = c, .subject_spki = &spki};
    KF_GUARD(kf_buf_alloc(&spki, 64, CERT_MAX, 0));
    int rc = load_subject(c, uid, &pub, &j, &spki);
    if (rc == KF_OK) {
        j.ca_uid = ca_uid_of(c, &pub, uid);
        rc = issuer_checks(c, uid, j.ca_uid);
    }
    if (rc == KF_OK)
        rc = issue_and_store(c, &j, uid);
    kf_object_clear(&pub);
    kf_buf_free(&spki);
    return rc;
}
