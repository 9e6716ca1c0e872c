/*
 * A blocking KMIP-over-TLS client: one TCP connection, one session, one
 * request/response at a time. The server's certificate is verified against
 * the given CA and host name (or IP address).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keyfleet/log.h"
#include "tls_internal.h"

struct kf_tls_client {
    gnutls_session_t session;
    gnutls_certificate_credentials_t creds;
    struct kf_tls_transport transport;
    char server_name[256];
    int timeout_ms;
    bool established; /* handshake done: close sends close_notify */
};

int kf_tls_tcp_connect(const char *host, uint16_t port, int timeout_ms, int *out)
{
    char portstr[8];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai, *p;
    snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
    if (getaddrinfo(host, portstr, &hints, &ai) != 0)
        return KF_ERR_CONNECT;
    int fd = -1;
    /* connect() honours SO_SNDTIMEO on Linux. */
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    for (p = ai; p; p = p->ai_next) {
        fd = socket(p->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, p->ai_addr, p->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    KF_ENSURE(fd >= 0, KF_ERR_CONNECT);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *out = fd;
    return KF_OK;
}

static bool is_ip_literal(const char *name)
{
    uint8_t tmp[16];
    return inet_pton(AF_INET, name, tmp) == 1 || inet_pton(AF_INET6, name, tmp) == 1;
}

static int load_client_creds(kf_tls_client *cli, const char *ca_file, const char *cert_file,
                             const char *key_file)
{
    KF_ENSURE(gnutls_certificate_allocate_credentials(&cli->creds) == 0, KF_ERR_NOMEM);
    if (gnutls_certificate_set_x509_trust_file(cli->creds, ca_file, GNUTLS_X509_FMT_PEM) <= 0) {
        kf_error("TLS client: no CA certificate loaded from %s", ca_file);
        return KF_ERR_TLS_CONFIG;
    }
    if (cert_file && key_file) {
        int rc = gnutls_certificate_set_x509_key_file2(cli->creds, cert_file, key_file,
                                                       GNUTLS_X509_FMT_PEM, NULL, 0);
        if (rc < 0) {
            kf_error("TLS client: cannot load %s with its key: %s", cert_file, gnutls_strerror(rc));
            return KF_ERR_TLS_CONFIG;
        }
    }
    return KF_OK;
}

static int client_session(kf_tls_client *cli, const char *priority)
{
    const char *err_pos = NULL;
    KF_ENSURE(gnutls_init(&cli->session, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL) == 0, KF_ERR_NOMEM);
    int rc =
        gnutls_priority_set_direct(cli->session, priority ? priority : KF_TLS_PRIORITY, &err_pos);
    if (rc < 0) {
        kf_error("TLS client: priority string rejected at '%s': %s", err_pos ? err_pos : "?",
                 gnutls_strerror(rc));
        return KF_ERR_TLS_CONFIG;
    }
    KF_ENSURE(gnutls_credentials_set(cli->session, GNUTLS_CRD_CERTIFICATE, cli->creds) == 0,
              KF_ERR_TLS_CONFIG);
    if (!is_ip_literal(cli->server_name))
        gnutls_server_name_set(cli->session, GNUTLS_NAME_DNS, cli->server_name,
                               strlen(cli->server_name));
    /* Checks the chain and that the certificate names server_name (DNS or IP SAN). */
    gnutls_session_set_verify_cert(cli->session, cli->server_name, 0);
    gnutls_handshake_set_timeout(cli->session, (unsigned)cli->timeout_ms);
    kf_tls_transport_install(cli->session, &cli->transport);
    return KF_OK;
}

int kf_tls_client_connect_ex(const char *host, uint16_t port, const char *ca_file,
                             const char *cert_file, const char *key_file,
                             const struct kf_tls_client_opts *opts, kf_tls_client **out)
{
    KF_ENSURE(host && ca_file && out, KF_ERR_ARG);
    kf_tls_client *cli = calloc(1, sizeof(*cli));
    KF_ENSURE(cli, KF_ERR_NOMEM);
    cli->transport.fd = cli->transport.stop_fd = -1;
    cli->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : 60000;
    snprintf(cli->server_name, sizeof(cli->server_name), "%s",
             opts && opts->server_name ? opts->server_name : host);
    int rc = load_client_creds(cli, ca_file, cert_file, key_file);
    if (rc == KF_OK)
        rc = kf_tls_tcp_connect(host, port, cli->timeout_ms, &cli->transport.fd);
    if (rc == KF_OK)
        rc = client_session(cli, opts ? opts->priority : NULL);
    if (rc == KF_OK) {
        int hs = kf_tls_handshake(cli->session);
        if (hs < 0) {
            kf_debug("TLS client: handshake with %s:%u failed: %s", host, (unsigned)port,
                     gnutls_strerror(hs));
            rc = KF_ERR_TLS;
        }
        cli->established = hs >= 0;
    }
    if (rc < 0) {
        kf_tls_client_close(cli);
        return rc;
    }
    *out = cli;
    return KF_OK;
}

int kf_tls_client_connect(const char *host, uint16_t port, const char *ca_file,
                          const char *cert_file, const char *key_file, kf_tls_client **out)
{
    return kf_tls_client_connect_ex(host, port, ca_file, cert_file, key_file, NULL, out);
}

int kf_tls_client_send_raw(kf_tls_client *cli, const uint8_t *p, size_t len)
{
    KF_ENSURE(cli, KF_ERR_ARG);
    return kf_tls_write_all(cli->session, p, len, cli->timeout_ms);
}

int kf_tls_client_recv(kf_tls_client *cli, kf_buf *resp)
{
    bool eof;
    int tls_rc;
    KF_ENSURE(cli, KF_ERR_ARG);
    int rc = kf_tls_read_message(cli->session, resp, KF_TLS_MESSAGE_MAX, cli->timeout_ms,
                                 cli->timeout_ms, &eof, &tls_rc);
    if (rc == KF_ERR_IO || rc == KF_ERR_TLS)
        return KF_ERR_CONNECT; /* the server closed or refused the connection */
    return rc;
}

int kf_tls_client_call(kf_tls_client *cli, const uint8_t *req, size_t len, kf_buf *resp)
{
    int rc = kf_tls_client_send_raw(cli, req, len);
    if (rc < 0)
        return KF_ERR_CONNECT;
    return kf_tls_client_recv(cli, resp);
}

const char *kf_tls_client_version(const kf_tls_client *cli)
{
    const char *v =
        cli ? gnutls_protocol_get_name(gnutls_protocol_get_version(cli->session)) : NULL;
    return v ? v : "unknown";
}

void kf_tls_client_close(kf_tls_client *cli)
{
    if (!cli)
        return;
    if (cli->session) {
        if (cli->established)
            gnutls_bye(cli->session, GNUTLS_SHUT_WR);
        gnutls_deinit(cli->session);
    }
    if (cli->transport.fd >= 0)
        close(cli->transport.fd);
    if (cli->creds)
        gnutls_certificate_free_credentials(cli->creds);
    free(cli);
}
