/* Shared by the TLS server and client: transport callbacks and framing over
 * a GnuTLS session. */
#ifndef KF_TLS_INTERNAL_H
#define KF_TLS_INTERNAL_H

#include <gnutls/gnutls.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "keyfleet/tls.h"

/*
 * The transport of one session: its socket, and the server's stop pipe
 * (-1 for clients). Waiting for data polls both, so stopping the server
 * wakes every connection without touching its socket from another thread.
 */
struct kf_tls_transport {
    int fd;
    int stop_fd;
};

/* Install push/pull/pull_timeout callbacks over t (which must outlive s). */
void kf_tls_transport_install(gnutls_session_t s, struct kf_tls_transport *t);

/*
 * Read one TTLV-framed message into msg (reset first): the first byte within
 * first_timeout_ms, the rest within rest_timeout_ms of it. *eof when the peer
 * closed before sending anything. KF_ERR_TIMEOUT, KF_ERR_LIMIT (declared
 * length above max), a TTLV header error, KF_ERR_TLS (record layer; *tls_rc
 * has the GnuTLS code) or KF_ERR_IO (stop requested or connection lost).
 */
KF_RESULT int kf_tls_read_message(gnutls_session_t s, kf_buf *msg, size_t max, int first_timeout_ms,
                                  int rest_timeout_ms, bool *eof, int *tls_rc);
/* Send all of p within timeout_ms. */
KF_RESULT int kf_tls_write_all(gnutls_session_t s, const uint8_t *p, size_t n, int timeout_ms);

/* Run the handshake to completion within the session's handshake timeout. */
int kf_tls_handshake(gnutls_session_t s);

#endif
