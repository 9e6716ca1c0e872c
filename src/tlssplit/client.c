/*
 * The client side of the split (claim 17): keyfleet's and keyfleet-device's
 * outbound KMIP connections. This process connects the TCP socket, passes it
 * to a client session handler (START role 2: server name, address), which
 * runs the client handshake with the client certificate's key and gives back
 * only the traffic keys, IVs and sequence numbers. From then on this process
 * is the active endpoint for application data through the same record layer
 * as the server side (conn.c); every other record goes back to the handler.
 *
 * With cfg->monolithic the same calls run GnuTLS in this process
 * (kf_tls_client): a tool switches with one flag, and kf_tls never needs
 * to know about the split.
 */
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel.h"
#include "keyfleet/log.h"
#include "keyfleet/tls.h"
#include "keyfleet/ttlv.h"

struct kf_tlssplit_client {
    kf_tls_client *mono;       /* monolithic mode */
    kf_tlssplit_handler *own;  /* a handler started for this connection alone */
    kf_tlssplit_conn *conn;    /* split mode: the record layer */
    int timeout_ms;
};

static int connect_monolithic(const char *host, uint16_t port,
                              const struct kf_tlssplit_client_config *cfg, kf_tlssplit_client *cli)
{
    struct kf_tls_client_opts o = {
        .priority = cfg->priority, .server_name = cfg->server_name, .timeout_ms = cli->timeout_ms};
    return kf_tls_client_connect_ex(host, port, cfg->ca_file, cfg->cert_file, cfg->key_file, &o,
                                    &cli->mono);
}

/* What the handler needs for this connection: role, address, server name. */
static int make_start(const char *host, uint16_t port, const struct kf_tlssplit_client_config *cfg,
                      struct kf_split_start *st)
{
    const char *name = cfg->server_name ? cfg->server_name : host;
    memset(st, 0, sizeof(*st));
    st->role = KF_SPLIT_ROLE_CLIENT;
    st->flags = cfg->no_resume ? KF_SPLIT_START_NO_RESUME : 0;
    /* What the handler takes (else it would end, as for any malformed START). */
    size_t n = strlen(name);
    KF_ENSURE(n > 0 && n <= KF_SPLIT_NAME_MAX, KF_ERR_ARG);
    for (size_t i = 0; i < n; i++)
        KF_ENSURE(name[i] > 0x20 && name[i] < 0x7f, KF_ERR_ARG);
    memcpy(st->server_name, name, n + 1);
    /* Names the session cache by address too: a longer one is cut (it is the log's text). */
    char peer[255 + 16];
    if (strchr(host, ':'))
        snprintf(peer, sizeof(peer), "[%.255s]:%u", host, (unsigned)port);
    else
        snprintf(peer, sizeof(peer), "%.255s:%u", host, (unsigned)port);
    memcpy(st->peer, peer, strnlen(peer, KF_SPLIT_PEER_MAX));
    return KF_OK;
}

int kf_tlssplit_client_connect(const char *host, uint16_t port,
                               const struct kf_tlssplit_client_config *cfg,
                               kf_tlssplit_client **out)
{
    KF_ENSURE(host && cfg && cfg->ca_file && out, KF_ERR_ARG);
    KF_ENSURE(!cfg->handler || kf_tlssplit_handler_is_client(cfg->handler), KF_ERR_ARG);
    kf_tlssplit_client *cli = calloc(1, sizeof(*cli));
    KF_ENSURE(cli, KF_ERR_NOMEM);
    cli->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 60000;
    int rc;
    if (cfg->monolithic) {
        rc = connect_monolithic(host, port, cfg, cli);
    } else {
        struct kf_split_start st;
        kf_tlssplit_handler *h = cfg->handler;
        int fd = -1;
        rc = make_start(host, port, cfg, &st);
        if (rc == KF_OK && !h) {
            rc = kf_tlssplit_client_handler_start(cfg, &cli->own);
            h = cli->own;
        }
        if (rc == KF_OK)
            rc = kf_tls_tcp_connect(host, port, cli->timeout_ms, &fd);
        /* The connection owns fd from here, also on failure. */
        if (rc == KF_OK)
            rc = kf_tlssplit_conn_start(kf_tlssplit_handler_broker(h), fd, &st, cli->timeout_ms,
                                        &cli->conn);
        if (rc < 0)
            kf_debug("TLS split client: %s:%u: %s", host, (unsigned)port, kf_strerror(rc));
    }
    if (rc < 0) {
        kf_tlssplit_client_close(cli);
        return rc;
    }
    *out = cli;
    return KF_OK;
}

int kf_tlssplit_client_send_raw(kf_tlssplit_client *cli, const uint8_t *p, size_t len)
{
    KF_ENSURE(cli && (p || len == 0), KF_ERR_ARG);
    if (cli->mono)
        return kf_tls_client_send_raw(cli->mono, p, len);
    return kf_tlssplit_send(cli->conn, p, len, cli->timeout_ms);
}

static int recv_exact(kf_tlssplit_client *cli, uint8_t *p, size_t n)
{
    while (n > 0) {
        size_t got;
        KF_GUARD(kf_tlssplit_recv(cli->conn, p, n, cli->timeout_ms, &got));
        p += got;
        n -= got;
    }
    return KF_OK;
}

/* One TTLV message: the 8-byte header gives the length of the rest. */
static int recv_message(kf_tlssplit_client *cli, kf_buf *resp)
{
    uint8_t *hdr, *body;
    size_t total;
    struct kf_ttlv_limits lim = {.max_total = KF_TLS_MESSAGE_MAX};
    kf_buf_reset(resp);
    KF_GUARD(kf_buf_put_space(resp, KF_TTLV_HEADER_LEN, &hdr));
    KF_GUARD(recv_exact(cli, hdr, KF_TTLV_HEADER_LEN));
    KF_GUARD(kf_ttlv_message_length(hdr, &lim, &total));
    KF_ENSURE(total >= KF_TTLV_HEADER_LEN && total <= KF_TLS_MESSAGE_MAX, KF_ERR_LIMIT);
    KF_GUARD(kf_buf_put_space(resp, total - KF_TTLV_HEADER_LEN, &body));
    return recv_exact(cli, body, total - KF_TTLV_HEADER_LEN);
}

int kf_tlssplit_client_recv(kf_tlssplit_client *cli, kf_buf *resp)
{
    KF_ENSURE(cli && resp, KF_ERR_ARG);
    if (cli->mono)
        return kf_tls_client_recv(cli->mono, resp);
    int rc = recv_message(cli, resp);
    if (rc == KF_ERR_IO || rc == KF_ERR_TLS)
        return KF_ERR_CONNECT; /* the server closed or refused the connection */
    return rc;
}

int kf_tlssplit_client_call(kf_tlssplit_client *cli, const uint8_t *req, size_t len, kf_buf *resp)
{
    KF_ENSURE(cli, KF_ERR_ARG);
    if (cli->mono)
        return kf_tls_client_call(cli->mono, req, len, resp);
    if (kf_tlssplit_client_send_raw(cli, req, len) < 0)
        return KF_ERR_CONNECT;
    return kf_tlssplit_client_recv(cli, resp);
}

const char *kf_tlssplit_client_version(const kf_tlssplit_client *cli)
{
    if (cli && cli->mono)
        return kf_tls_client_version(cli->mono);
    if (!cli || !cli->conn)
        return "unknown";
    return kf_tlssplit_version(cli->conn) == KF_TLSREC_TLS13 ? "TLS1.3" : "TLS1.2";
}

bool kf_tlssplit_client_resumed(const kf_tlssplit_client *cli)
{
    return cli && cli->conn && kf_tlssplit_resumed(cli->conn);
}

kf_tlssplit_conn *kf_tlssplit_client_conn(kf_tlssplit_client *cli)
{
    return cli ? cli->conn : NULL;
}

void kf_tlssplit_client_close(kf_tlssplit_client *cli)
{
    if (!cli)
        return;
    kf_tls_client_close(cli->mono);
    kf_tlssplit_close(cli->conn); /* close_notify through the handler, then END */
    kf_tlssplit_handler_stop(cli->own);
    free(cli);
}
