/*
 * The relay's TLS connection toward keyfleetd. The library's kf_tls_client
 * is a strict request/response client that hides its socket; the relay
 * forwards both directions independently (a dropped or held request must
 * not block the other side), so it needs a session whose socket it can poll.
 * Same trust rules as kf_tls_client: the server certificate must chain to
 * the CA and name the host; same priority string (KF_TLS_PRIORITY).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "devsim/devsim.h"
#include "keyfleet/log.h"
#include "keyfleet/tls.h"

struct ds_tls {
    gnutls_session_t session;
    gnutls_certificate_credentials_t creds;
    int fd;
    bool established;
};

void ds_tls_close(ds_tls *t)
{
    if (!t)
        return;
    if (t->session) {
        if (t->established)
            gnutls_bye(t->session, GNUTLS_SHUT_WR);
        gnutls_deinit(t->session);
    }
    if (t->fd >= 0)
        close(t->fd);
    if (t->creds)
        gnutls_certificate_free_credentials(t->creds);
    free(t);
}

static bool is_ip_literal(const char *name)
{
    uint8_t tmp[16];
    return inet_pton(AF_INET, name, tmp) == 1 || inet_pton(AF_INET6, name, tmp) == 1;
}

static int setup(ds_tls *t, const char *host, const char *ca_file, const char *cert_file,
                 const char *key_file, int timeout_ms)
{
    const char *err_pos = NULL;
    KF_ENSURE(gnutls_certificate_allocate_credentials(&t->creds) == 0, KF_ERR_NOMEM);
    if (gnutls_certificate_set_x509_trust_file(t->creds, ca_file, GNUTLS_X509_FMT_PEM) <= 0) {
        kf_error("relay TLS: no CA certificate loaded from %s", ca_file);
        return KF_ERR_TLS_CONFIG;
    }
    if (cert_file && key_file) {
        int rc = gnutls_certificate_set_x509_key_file2(t->creds, cert_file, key_file,
                                                       GNUTLS_X509_FMT_PEM, NULL, 0);
        if (rc < 0) {
            kf_error("relay TLS: cannot load %s with its key: %s", cert_file, gnutls_strerror(rc));
            return KF_ERR_TLS_CONFIG;
        }
    }
    KF_ENSURE(gnutls_init(&t->session, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL) == 0, KF_ERR_NOMEM);
    if (gnutls_priority_set_direct(t->session, KF_TLS_PRIORITY, &err_pos) < 0 ||
        gnutls_credentials_set(t->session, GNUTLS_CRD_CERTIFICATE, t->creds) < 0)
        return KF_ERR_TLS_CONFIG;
    if (!is_ip_literal(host))
        gnutls_server_name_set(t->session, GNUTLS_NAME_DNS, host, strlen(host));
    gnutls_session_set_verify_cert(t->session, host, 0);
    gnutls_handshake_set_timeout(t->session, (unsigned)timeout_ms);
    gnutls_transport_set_int(t->session, t->fd);
    return KF_OK;
}

int ds_tls_connect(const char *host, uint16_t port, const char *ca_file, const char *cert_file,
                   const char *key_file, int timeout_ms, ds_tls **out)
{
    KF_ENSURE(host && ca_file && out, KF_ERR_ARG);
    if (timeout_ms <= 0)
        timeout_ms = 60000;
    ds_tls *t = calloc(1, sizeof(*t));
    KF_ENSURE(t, KF_ERR_NOMEM);
    t->fd = -1;
    struct ds_addr a = {.port = port};
    int rc = strlen(host) < sizeof(a.host) ? KF_OK : KF_ERR_ARG;
    if (rc == KF_OK) {
        memcpy(a.host, host, strlen(host) + 1);
        rc = ds_connect(&a, timeout_ms, &t->fd);
    }
    if (rc == KF_OK)
        rc = setup(t, host, ca_file, cert_file, key_file, timeout_ms);
    if (rc == KF_OK) {
        int hs;
        do
            hs = gnutls_handshake(t->session);
        while (hs < 0 && !gnutls_error_is_fatal(hs));
        if (hs < 0) {
            kf_error("relay TLS: handshake with %s:%u failed: %s", host, (unsigned)port,
                     gnutls_strerror(hs));
            rc = KF_ERR_TLS;
        }
        t->established = hs >= 0;
    }
    if (rc < 0) {
        ds_tls_close(t);
        return rc;
    }
    *out = t;
    return KF_OK;
}

int ds_tls_fd(const ds_tls *t)
{
    return t ? t->fd : -1;
}

bool ds_tls_pending(const ds_tls *t)
{
    return t && gnutls_record_check_pending(t->session) > 0;
}

static int read_exact(ds_tls *t, uint8_t *p, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        ssize_t r = gnutls_record_recv(t->session, p + *got, n - *got);
        if (r == 0)
            return KF_ERR_IO;
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            continue;
        if (r == GNUTLS_E_TIMEDOUT)
            return KF_ERR_TIMEOUT;
        if (r == GNUTLS_E_PREMATURE_TERMINATION)
            return KF_ERR_IO;
        if (r < 0) {
            if (!gnutls_error_is_fatal((int)r))
                continue; /* e.g. a TLS 1.3 post-handshake message */
            kf_error("relay TLS: receive failed: %s", gnutls_strerror((int)r));
            return KF_ERR_TLS;
        }
        *got += (size_t)r;
    }
    return KF_OK;
}

static unsigned record_timeout(int ms)
{
    return ms < 0 ? GNUTLS_INDEFINITE_TIMEOUT : (unsigned)ms;
}

int ds_tls_read_frame_within(ds_tls *t, kf_buf *msg, size_t max, int first_ms, int timeout_ms,
                             bool *eof)
{
    uint8_t *hdr, *body;
    size_t got = 0, total;
    *eof = false;
    KF_ENSURE(t && max >= DS_TTLV_HEADER, KF_ERR_ARG);
    kf_buf_reset(msg);
    KF_GUARD(kf_buf_put_space(msg, DS_TTLV_HEADER, &hdr));
    /* The first bytes within first_ms: a readable socket may have brought only
     * post-handshake messages (TLS 1.3 session tickets), which GnuTLS takes in
     * and which are no frame. */
    gnutls_record_set_timeout(t->session, record_timeout(first_ms));
    for (;;) {
        ssize_t r = gnutls_record_recv(t->session, hdr, DS_TTLV_HEADER);
        if (r == GNUTLS_E_TIMEDOUT)
            return DS_TLS_NOTHING;
        if (r == 0 || r == GNUTLS_E_PREMATURE_TERMINATION) {
            *eof = true;
            return KF_ERR_IO;
        }
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED ||
            (r < 0 && !gnutls_error_is_fatal((int)r)))
            continue;
        if (r < 0) {
            kf_error("relay TLS: receive failed: %s", gnutls_strerror((int)r));
            return KF_ERR_TLS;
        }
        got = (size_t)r;
        break;
    }
    gnutls_record_set_timeout(t->session, record_timeout(timeout_ms));
    size_t more;
    KF_GUARD(read_exact(t, hdr + got, DS_TTLV_HEADER - got, &more));
    KF_GUARD(ds_item_total(hdr, DS_TTLV_HEADER, max, &total));
    KF_GUARD(kf_buf_put_space(msg, total - DS_TTLV_HEADER, &body));
    return read_exact(t, body, total - DS_TTLV_HEADER, &got);
}

int ds_tls_read_frame(ds_tls *t, kf_buf *msg, size_t max, int timeout_ms, bool *eof)
{
    int rc = ds_tls_read_frame_within(t, msg, max, timeout_ms, timeout_ms, eof);
    return rc == DS_TLS_NOTHING ? KF_ERR_TIMEOUT : rc;
}

int ds_tls_write(ds_tls *t, const uint8_t *p, size_t n)
{
    size_t done = 0;
    KF_ENSURE(t, KF_ERR_ARG);
    while (done < n) {
        ssize_t w = gnutls_record_send(t->session, p + done, n - done);
        if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED)
            continue;
        if (w < 0)
            return KF_ERR_IO;
        done += (size_t)w;
    }
    return KF_OK;
}
