/*
 * Loading TLS credentials and reading the peer's certificate, shared by the
 * monolithic KMIP TLS server (src/tls/server.c) and the split endpoint's
 * session handler (src/tlssplit/handler.c). The loaders log why they failed;
 * log lines start with who ("TLS", "TLS split", ...). Never logs a key
 * path's PIN.
 */
#ifndef KF_TLS_CREDS_H
#define KF_TLS_CREDS_H

#include <gnutls/gnutls.h>

#include "keyfleet/tls.h"

/* Register a PKCS#11 module (NULL: none, nothing to do) and the PIN GnuTLS
 * passes to its tokens (NULL: no PIN). pin must outlive every later
 * handshake. KF_ERR_TLS_CONFIG if the module cannot be registered. */
KF_RESULT int kf_tls_register_pkcs11(const char *who, const char *module, const char *pin);
/* Trust anchors from a PEM file; KF_ERR_TLS_CONFIG if it holds none. */
KF_RESULT int kf_tls_load_trust(const char *who, gnutls_certificate_credentials_t creds,
                                const char *ca_file);
/* A certificate with its key (a file or a pkcs11: URL); role names it in
 * the log ("server", "client"). KF_ERR_TLS_CONFIG if it cannot be loaded. */
KF_RESULT int kf_tls_load_cert_key(const char *who, const char *role,
                                   gnutls_certificate_credentials_t creds, const char *cert_file,
                                   const char *key_file);
/* The priority string (NULL: KF_TLS_PRIORITY); KF_ERR_TLS_CONFIG if rejected. */
KF_RESULT int kf_tls_load_priority(const char *who, const char *priority, gnutls_priority_t *out);
/* The identity map file (kf_tls_identities_load), its error logged with the line. */
KF_RESULT int kf_tls_load_identity_map(const char *who, const char *path, kf_tls_identities **out);

/* What the identity map matches on, from the peer's (verified) certificate:
 * SHA-256 fingerprint, subject DN, first CN, O, OU and how often each occurs.
 * KF_ERR_TLS if there is none or it cannot be read, KF_ERR_NOMEM. */
KF_RESULT int kf_tls_peer_facts(gnutls_session_t s, struct kf_tls_peer *peer);
/* Log why a handshake with peer_addr failed (rc: the GnuTLS code). */
void kf_tls_log_handshake_failure(const char *who, const char *peer_addr, gnutls_session_t s,
                                  int rc);

#endif
