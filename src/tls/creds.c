/* Loading TLS credentials and reading the peer (tls_creds.h): one copy for both TLS endpoints. */
#include <stdio.h>
#include <string.h>

#include <gnutls/pkcs11.h>
#include <gnutls/x509.h>

#include "keyfleet/log.h"
#include "tls_creds.h"

static const char *token_pin;
static const char *token_who = "TLS";

/* GnuTLS asks for a token PIN when it opens a pkcs11: key. */
static int pin_callback(void *userdata, int attempt, const char *token_url, const char *token_label,
                        unsigned int flags, char *pin, size_t pin_max)
{
    (void)userdata, (void)token_url, (void)flags;
    if (!token_pin || attempt > 0 || strlen(token_pin) >= pin_max) {
        kf_error("%s: no usable PIN for token '%s'", token_who, token_label);
        return -1;
    }
    memcpy(pin, token_pin, strlen(token_pin) + 1);
    return 0;
}

int kf_tls_register_pkcs11(const char *who, const char *module, const char *pin)
{
    if (!module)
        return KF_OK;
    int rc = gnutls_pkcs11_init(GNUTLS_PKCS11_FLAG_MANUAL, NULL);
    if (rc >= 0)
        rc = gnutls_pkcs11_add_provider(module, NULL);
    if (rc < 0) {
        kf_error("%s: cannot register PKCS#11 module %s: %s", who, module, gnutls_strerror(rc));
        return KF_ERR_TLS_CONFIG;
    }
    token_pin = pin;
    token_who = who;
    gnutls_pkcs11_set_pin_function(pin_callback, NULL);
    return KF_OK;
}

int kf_tls_load_trust(const char *who, gnutls_certificate_credentials_t creds, const char *ca_file)
{
    int rc = gnutls_certificate_set_x509_trust_file(creds, ca_file, GNUTLS_X509_FMT_PEM);
    if (rc <= 0) {
        kf_error("%s: no CA certificate loaded from %s: %s", who, ca_file,
                 rc < 0 ? gnutls_strerror(rc) : "file holds no certificate");
        return KF_ERR_TLS_CONFIG;
    }
    return KF_OK;
}

int kf_tls_load_cert_key(const char *who, const char *role, gnutls_certificate_credentials_t creds,
                         const char *cert_file, const char *key_file)
{
    int rc = gnutls_certificate_set_x509_key_file2(creds, cert_file, key_file, GNUTLS_X509_FMT_PEM,
                                                   NULL, 0);
    if (rc < 0) {
        /* The key may be a URL with a PIN in it: log the certificate path only. */
        kf_error("%s: cannot load the %s certificate %s with its key: %s", who, role, cert_file,
                 gnutls_strerror(rc));
        return KF_ERR_TLS_CONFIG;
    }
    return KF_OK;
}

int kf_tls_load_priority(const char *who, const char *priority, gnutls_priority_t *out)
{
    const char *err_pos = NULL;
    int rc = gnutls_priority_init2(out, priority ? priority : KF_TLS_PRIORITY, &err_pos, 0);
    if (rc < 0) {
        kf_error("%s: priority string rejected at '%s': %s", who, err_pos ? err_pos : "?",
                 gnutls_strerror(rc));
        return KF_ERR_TLS_CONFIG;
    }
    return KF_OK;
}

int kf_tls_load_identity_map(const char *who, const char *path, kf_tls_identities **out)
{
    unsigned line = 0;
    char why[256];
    int rc = kf_tls_identities_load(path, out, &line, why, sizeof(why));
    if (rc < 0)
        kf_error("%s: identity map %s line %u: %s", who, path, line, why);
    return rc;
}

/* One subject field: its first value and how many times it occurs. */
static void subject_field(gnutls_x509_crt_t crt, const char *oid, char *val, size_t cap,
                          unsigned *count)
{
    *count = 0;
    val[0] = 0;
    for (unsigned idx = 0; idx < 16; idx++) {
        char tmp[256];
        size_t sz = sizeof(tmp);
        int rc = gnutls_x509_crt_get_dn_by_oid(crt, oid, idx, 0, tmp, &sz);
        if (rc == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
            return;
        (*count)++;
        if (idx == 0 && rc == 0 && sz < cap) {
            memcpy(val, tmp, sz); /* sz < cap: fits with its NUL */
            val[sz] = 0;
        }
    }
}

int kf_tls_peer_facts(gnutls_session_t s, struct kf_tls_peer *peer)
{
    unsigned n = 0;
    const gnutls_datum_t *chain = gnutls_certificate_get_peers(s, &n);
    gnutls_x509_crt_t crt;
    gnutls_datum_t dn = {0};
    KF_ENSURE(chain && n > 0, KF_ERR_TLS);
    KF_ENSURE(gnutls_x509_crt_init(&crt) == 0, KF_ERR_NOMEM);
    int rc = KF_ERR_TLS;
    memset(peer, 0, sizeof(*peer));
    if (gnutls_x509_crt_import(crt, &chain[0], GNUTLS_X509_FMT_DER) < 0)
        goto out;
    size_t fl = sizeof(peer->sha256);
    if (gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, peer->sha256, &fl) < 0)
        goto out;
    if (gnutls_x509_crt_get_dn3(crt, &dn, 0) < 0)
        goto out;
    snprintf(peer->subject_dn, sizeof(peer->subject_dn), "%s", (const char *)dn.data);
    subject_field(crt, GNUTLS_OID_X520_COMMON_NAME, peer->cn, sizeof(peer->cn), &peer->n_cn);
    subject_field(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, peer->o, sizeof(peer->o), &peer->n_o);
    subject_field(crt, GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME, peer->ou, sizeof(peer->ou),
                  &peer->n_ou);
    rc = KF_OK;
out:
    gnutls_free(dn.data);
    gnutls_x509_crt_deinit(crt);
    return rc;
}

void kf_tls_log_handshake_failure(const char *who, const char *peer_addr, gnutls_session_t s,
                                  int rc)
{
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
        gnutls_datum_t why = {0};
        unsigned status = gnutls_session_get_verify_cert_status(s);
        if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &why, 0) == 0) {
            kf_warn("%s %s refused: client certificate: %s", who, peer_addr, why.data);
            gnutls_free(why.data);
            return;
        }
    }
    if (rc == GNUTLS_E_NO_CERTIFICATE_FOUND || rc == GNUTLS_E_CERTIFICATE_REQUIRED) {
        kf_warn("%s %s refused: the client sent no certificate", who, peer_addr);
        return;
    }
    kf_warn("%s %s: handshake failed: %s", who, peer_addr, gnutls_strerror(rc));
}
