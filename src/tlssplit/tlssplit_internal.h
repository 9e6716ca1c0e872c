/* Internals of the split TLS endpoint shared by its files and its tests. */
#ifndef KF_TLSSPLIT_INTERNAL_H
#define KF_TLSSPLIT_INTERNAL_H

#include <gnutls/gnutls.h>

#include "keyfleet/tls.h"
#include "keyfleet/tlssplit.h"

/* The record layer's AEAD step, exposed so the RFC 8439 vector can check it:
 * seal n bytes to dst (n + 16 bytes, tag last; KF_ERR_CRYPTO only if GnuTLS
 * fails, e.g. out of memory); open checks the tag after the
 * n ciphertext bytes (KF_ERR_AUTH, dst wiped, when it does not verify). */
KF_RESULT int kf_tlsrec_aead_seal(kf_tlsrec *r, const uint8_t nonce[12], const uint8_t *aad,
                                  size_t aad_len, const uint8_t *src, size_t n, uint8_t *dst);
KF_RESULT int kf_tlsrec_aead_open(kf_tlsrec *r, const uint8_t nonce[12], const uint8_t *aad,
                                  size_t aad_len, const uint8_t *src, size_t n, uint8_t *dst);

/* One direction of a GnuTLS session as the worker needs it (read: the
 * peer's direction). KF_ERR_UNSUPPORTED for a version or cipher the worker
 * does not do; KF_ERR_TLS_STATE if GnuTLS's lengths are not the expected ones.
 * st holds a traffic key: wipe it after use. */
KF_RESULT int kf_tlssplit_export_state(gnutls_session_t s, bool read, struct kf_tlsrec_state *st);
/* Give GnuTLS back the sequence number the worker reached in one direction. */
KF_RESULT int kf_tlssplit_import_seq(gnutls_session_t s, bool read, uint64_t seq);

/* The verified client certificate -> principal by the identity map (an allow
 * list: KF_ERR_IDENTITY_UNKNOWN, logged with peer_addr, when no rule matches). */
KF_RESULT int kf_tlssplit_identify(gnutls_session_t s, const kf_tls_identities *ids,
                                   const char *peer_addr, struct kf_principal *who);

/* Run fn(arg) on a pooled thread (pool.c): an idle one, else a new one. */
KF_RESULT int kf_tlssplit_pool_run(void (*fn)(void *), void *arg);

struct kf_split_config;
/* The session handler's main loop on the broker channel (handler.c); peers:
 * the channel for PEER/GONE to the host with CONFIG flag CONN_IDS, else -1. */
KF_RESULT int kf_tlssplit_handler_serve(int broker, int peers, const struct kf_split_config *cfg);

#endif
