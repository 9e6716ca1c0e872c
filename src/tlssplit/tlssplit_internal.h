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

/* Whose AEAD the record layer uses, process-wide (record.c). The default comes
 * from KF_TLSREC_AEAD in the environment ("nettle"; else GnuTLS's). A record
 * state keeps the one in use when it was made. */
enum kf_tlsrec_aead { KF_TLSREC_AEAD_GNUTLS = 0, KF_TLSREC_AEAD_NETTLE = 1 };
void kf_tlsrec_set_aead(enum kf_tlsrec_aead impl);
enum kf_tlsrec_aead kf_tlsrec_aead_in_use(void);

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

/*
 * Non-blocking application data, for an event loop serving many connections
 * on one thread (the KMIP worker process, worker.c). They never wait: besides
 * KF_OK and errors (as the blocking calls) they return
 *   KF_TLSSPLIT_AGAIN   the socket has nothing more now (recv) or takes no
 *                       more now (send: the rest of what was sealed stays
 *                       buffered in the connection and goes first next time);
 *   KF_TLSSPLIT_BLOCKS  the next step needs the session handler (a record
 *                       that is not application data, a refusal that ends in
 *                       an alert, a KeyUpdate before sending): the blocking
 *                       call (kf_tlssplit_recv / _send) takes over from there.
 * send_nb: *done is how much of p was sealed (all of it on KF_OK).
 */
#define KF_TLSSPLIT_AGAIN 1
#define KF_TLSSPLIT_BLOCKS 2
KF_RESULT int kf_tlssplit_recv_nb(kf_tlssplit_conn *c, uint8_t *p, size_t n, size_t *got);
KF_RESULT int kf_tlssplit_send_nb(kf_tlssplit_conn *c, const uint8_t *p, size_t n, size_t *done);
/* Received bytes (or a deferred record) not yet taken: a readiness wait would miss them. */
bool kf_tlssplit_pending(const kf_tlssplit_conn *c);
int kf_tlssplit_fd(const kf_tlssplit_conn *c);

struct kf_split_config;
/* The session handler's main loop on the broker channel (handler.c); peers:
 * the channel for PEER/GONE to the host with CONFIG flag CONN_IDS, else -1. */
KF_RESULT int kf_tlssplit_handler_serve(int broker, int peers, const struct kf_split_config *cfg);

#endif
