/*
 * Transport and framing over a GnuTLS session, shared by server and client.
 * Every wait is bounded: the reader turns "idle", "stalled mid-message" and
 * "stop requested" into distinct results so the caller can log which one.
 */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include "keyfleet/log.h"
#include "keyfleet/ttlv.h"
#include "tls_internal.h"

static ssize_t transport_push(gnutls_transport_ptr_t ptr, const void *p, size_t n)
{
    const struct kf_tls_transport *t = ptr;
    return send(t->fd, p, n, MSG_NOSIGNAL);
}

static ssize_t transport_pull(gnutls_transport_ptr_t ptr, void *p, size_t n)
{
    const struct kf_tls_transport *t = ptr;
    return recv(t->fd, p, n, 0);
}

/* >0 readable, 0 timed out, -1 with errno EINTR when the server stops. */
static int transport_wait(gnutls_transport_ptr_t ptr, unsigned int ms)
{
    const struct kf_tls_transport *t = ptr;
    struct pollfd p[2] = {{.fd = t->fd, .events = POLLIN}, {.fd = t->stop_fd, .events = POLLIN}};
    int timeout = ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms;
    int r = poll(p, t->stop_fd >= 0 ? 2 : 1, timeout);
    if (r > 0 && t->stop_fd >= 0 && (p[1].revents & POLLIN)) {
        errno = EINTR;
        return -1;
    }
    return r;
}

void kf_tls_transport_install(gnutls_session_t s, struct kf_tls_transport *t)
{
    gnutls_transport_set_ptr(s, t);
    gnutls_transport_set_push_function(s, transport_push);
    gnutls_transport_set_pull_function(s, transport_pull);
    gnutls_transport_set_pull_timeout_function(s, transport_wait);
}

static bool stop_requested(gnutls_session_t s)
{
    const struct kf_tls_transport *t = gnutls_transport_get_ptr(s);
    struct pollfd p = {.fd = t->stop_fd, .events = POLLIN};
    return t->stop_fd >= 0 && poll(&p, 1, 0) > 0;
}

static int ms_until(uint64_t deadline_ns)
{
    uint64_t now = kf_mono_ns();
    if (now >= deadline_ns)
        return 0;
    uint64_t ms = (deadline_ns - now + 999999) / 1000000;
    return ms > 600000000 ? 600000000 : (int)ms;
}

/* Read up to n bytes (at least one) before deadline. */
static int recv_some(gnutls_session_t s, uint8_t *p, size_t n, uint64_t deadline_ns, size_t *got,
                     int *tls_rc)
{
    for (;;) {
        int ms = ms_until(deadline_ns);
        KF_ENSURE(ms > 0, KF_ERR_TIMEOUT);
        gnutls_record_set_timeout(s, (unsigned)ms);
        ssize_t r = gnutls_record_recv(s, p, n);
        if (r > 0) {
            *got = (size_t)r;
            return KF_OK;
        }
        if (r == 0 || r == GNUTLS_E_PREMATURE_TERMINATION)
            return KF_ERR_IO; /* peer closed */
        if (r == GNUTLS_E_TIMEDOUT)
            return KF_ERR_TIMEOUT;
        if (r == GNUTLS_E_INTERRUPTED && stop_requested(s))
            return KF_ERR_IO;
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            continue;
        *tls_rc = (int)r;
        return KF_ERR_TLS;
    }
}

static int recv_exact(gnutls_session_t s, uint8_t *p, size_t n, uint64_t deadline_ns, int *tls_rc)
{
    size_t done = 0;
    while (done < n) {
        size_t got;
        KF_GUARD(recv_some(s, p + done, n - done, deadline_ns, &got, tls_rc));
        done += got;
    }
    return KF_OK;
}

int kf_tls_read_message(gnutls_session_t s, kf_buf *msg, size_t max, int first_timeout_ms,
                        int rest_timeout_ms, bool *eof, int *tls_rc)
{
    uint8_t *hdr, *body;
    size_t got, total;
    struct kf_ttlv_limits lim = {.max_total = max};
    *eof = false;
    *tls_rc = 0;
    kf_buf_reset(msg);
    KF_GUARD(kf_buf_put_space(msg, KF_TTLV_HEADER_LEN, &hdr));
    int rc = recv_some(s, hdr, KF_TTLV_HEADER_LEN,
                       kf_mono_ns() + (uint64_t)first_timeout_ms * 1000000, &got, tls_rc);
    if (rc < 0) {
        *eof = rc == KF_ERR_IO;
        return rc;
    }
    /* The message has started: the rest must arrive within rest_timeout_ms. */
    uint64_t deadline = kf_mono_ns() + (uint64_t)rest_timeout_ms * 1000000;
    KF_GUARD(recv_exact(s, hdr + got, KF_TTLV_HEADER_LEN - got, deadline, tls_rc));
    KF_GUARD(kf_ttlv_message_length(hdr, &lim, &total));
    KF_ENSURE(total >= KF_TTLV_HEADER_LEN && total <= max, KF_ERR_LIMIT);
    KF_GUARD(kf_buf_put_space(msg, total - KF_TTLV_HEADER_LEN, &body));
    return recv_exact(s, body, total - KF_TTLV_HEADER_LEN, deadline, tls_rc);
}

int kf_tls_write_all(gnutls_session_t s, const uint8_t *p, size_t n, int timeout_ms)
{
    kf_buf out;
    uint64_t deadline = kf_mono_ns() + (uint64_t)timeout_ms * 1000000;
    kf_buf_reader(&out, p, n);
    while (kf_buf_remaining(&out)) {
        /* One record at most per call; the rest goes in the next round. */
        ssize_t w = gnutls_record_send(s, kf_buf_read_ptr(&out), kf_buf_remaining(&out));
        if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED) {
            KF_ENSURE(ms_until(deadline) > 0, KF_ERR_TIMEOUT);
            /* GnuTLS wants the retry with the same data, which is what we pass. */
            continue;
        }
        if (w < 0)
            return KF_ERR_TLS;
        KF_GUARD(kf_buf_skip(&out, (size_t)w));
    }
    return KF_OK;
}

int kf_tls_handshake(gnutls_session_t s)
{
    int rc;
    do {
        rc = gnutls_handshake(s);
        if (rc == GNUTLS_E_INTERRUPTED && stop_requested(s))
            return rc;
    } while (rc < 0 && gnutls_error_is_fatal(rc) == 0);
    return rc;
}
