/*
 * The KMIP TLS listener: an acceptor thread and one thread per connection,
 * capped. Connections share only read-only state (credentials, priorities,
 * identity map) and atomics; each owns its session, buffers and timeouts, so
 * requests on both cores run in parallel up to the kms layer.
 *
 * Stopping: the acceptor and every connection wait on the stop pipe as well
 * as their socket (io.c), so stop wakes them without closing a socket under
 * another thread's feet; a request already being handled completes first.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/x509.h>

#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "tls_creds.h"
#include "tls_internal.h"

struct kf_tls_server {
    kf_kms *kms;
    gnutls_certificate_credentials_t creds;
    gnutls_priority_t priority;
    kf_tls_identities *ids;
    int listen_fd;
    int stop_pipe[2];
    uint16_t port;
    pthread_t acceptor;
    bool acceptor_running;
    atomic_uint active;
    unsigned max_connections;
    int handshake_ms, idle_ms, message_ms;
};

struct tls_conn {
    kf_tls_server *srv;
    struct kf_tls_transport transport;
    char peer_addr[64];
    struct kf_principal who;
};

/* ---- credentials ------------------------------------------------------- */

static int load_credentials(kf_tls_server *srv, const struct kf_tls_server_config *cfg)
{
    KF_GUARD(kf_tls_register_pkcs11("TLS", cfg->pkcs11_module, cfg->key_pin));
    int rc = gnutls_certificate_allocate_credentials(&srv->creds);
    if (rc < 0)
        return KF_ERR_NOMEM;
    KF_GUARD(kf_tls_load_trust("TLS", srv->creds, cfg->ca_file));
    KF_GUARD(kf_tls_load_cert_key("TLS", "server", srv->creds, cfg->cert_file, cfg->key_file));
    return kf_tls_load_priority("TLS", cfg->priority, &srv->priority);
}

static int load_identities(kf_tls_server *srv, const struct kf_tls_server_config *cfg)
{
    if (!cfg->identities_file) {
        kf_error("TLS: an identity map file is required (--kmip-identities)");
        return KF_ERR_TLS_CONFIG;
    }
    KF_GUARD(kf_tls_load_identity_map("TLS", cfg->identities_file, &srv->ids));
    kf_info("TLS: %zu identity rules from %s", kf_tls_identities_count(srv->ids),
            cfg->identities_file);
    return KF_OK;
}

/* ---- listening --------------------------------------------------------- */

/* "ADDR:PORT" or "[ADDR]:PORT" into host and port strings. */
static int split_listen(const char *spec, char *host, size_t hlen, char *port, size_t plen)
{
    const char *colon = strrchr(spec, ':');
    KF_ENSURE(colon && colon[1], KF_ERR_ARG);
    size_t n = (size_t)(colon - spec);
    const char *h = spec;
    if (n >= 2 && spec[0] == '[' && spec[n - 1] == ']') {
        h = spec + 1;
        n -= 2;
    }
    KF_ENSURE(n > 0 && n < hlen && strlen(colon + 1) < plen, KF_ERR_ARG);
    memcpy(host, h, n);
    host[n] = 0;
    snprintf(port, plen, "%s", colon + 1);
    return KF_OK;
}

int kf_tls_listen_tcp(const char *spec, int *fd_out, uint16_t *port_out)
{
    char host[256], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai;
    if (split_listen(spec, host, sizeof(host), port, sizeof(port)) < 0) {
        kf_error("TLS: listen address '%s' is not ADDR:PORT", spec);
        return KF_ERR_ARG;
    }
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        kf_error("TLS: cannot resolve %s: %s", spec, gai_strerror(rc));
        return KF_ERR_ARG;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        kf_error("TLS: cannot listen on %s: %s", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return KF_ERR_IO;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return KF_OK;
}

/* ---- one connection ---------------------------------------------------- */

static void hex_fingerprint(const uint8_t fp[32], char out[65])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < 32; i++) {
        out[2 * i] = digits[fp[i] >> 4];
        out[2 * i + 1] = digits[fp[i] & 15];
    }
    out[64] = 0;
}

/* Verified certificate -> principal, or refuse (the map is an allow list). */
static int identify(struct tls_conn *c, gnutls_session_t s)
{
    struct kf_tls_peer peer;
    char fp[65];
    if (kf_tls_peer_facts(s, &peer) < 0) {
        kf_warn("TLS %s refused: cannot read the client certificate", c->peer_addr);
        return KF_ERR_TLS;
    }
    hex_fingerprint(peer.sha256, fp);
    if (kf_tls_identities_match(c->srv->ids, &peer, &c->who) < 0) {
        kf_warn("TLS %s refused: certificate '%s' (SHA256:%s) matches no identity rule",
                c->peer_addr, peer.subject_dn, fp);
        return KF_ERR_IDENTITY_UNKNOWN;
    }
    kf_info("TLS %s: %s (%s), roles 0x%x", c->peer_addr, c->who.name,
            gnutls_protocol_get_name(gnutls_protocol_get_version(s)), c->who.roles);
    return KF_OK;
}

static void serve_requests(struct tls_conn *c, gnutls_session_t s)
{
    kf_tls_server *srv = c->srv;
    kf_buf req = {0}, resp = {0};
    /* Requests and responses may carry key material: secure memory. */
    if (kf_buf_alloc(&req, 4096, KF_TLS_MESSAGE_MAX, KF_BUF_SECRET) < 0 ||
        kf_buf_alloc(&resp, 4096, KF_TLS_MESSAGE_MAX + 65536, KF_BUF_SECRET) < 0) {
        kf_error("TLS %s: no secure memory for buffers", c->peer_addr);
        goto out;
    }
    for (;;) {
        bool eof;
        int tls_rc;
        int rc = kf_tls_read_message(s, &req, KF_TLS_MESSAGE_MAX, srv->idle_ms, srv->message_ms,
                                     &eof, &tls_rc);
        if (rc < 0) {
            if (!eof)
                kf_info("TLS %s (%s) closed: %s%s%s", c->peer_addr, c->who.name, kf_strerror(rc),
                        tls_rc ? ": " : "", tls_rc ? gnutls_strerror(tls_rc) : "");
            break;
        }
        kf_buf_reset(&resp);
        rc = kf_kms_handle_kmip(srv->kms, &c->who, req.data, req.len, &resp);
        if (rc < 0 || kf_tls_write_all(s, resp.data, resp.len, srv->message_ms) < 0) {
            kf_warn("TLS %s (%s): cannot answer: %s", c->peer_addr, c->who.name,
                    kf_strerror(rc < 0 ? rc : KF_ERR_TLS));
            break;
        }
    }
out:
    kf_buf_free(&req);
    kf_buf_free(&resp);
}

static int session_open(struct tls_conn *c, gnutls_session_t *out)
{
    /* The client certificate must be issued for TLS client authentication
     * when it states its purposes at all. */
    static const gnutls_typed_vdata_st purpose = {.type = GNUTLS_DT_KEY_PURPOSE_OID,
                                                  .data = (void *)GNUTLS_KP_TLS_WWW_CLIENT};
    gnutls_session_t s;
    KF_ENSURE(gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL) == 0, KF_ERR_NOMEM);
    if (gnutls_priority_set(s, c->srv->priority) < 0 ||
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, c->srv->creds) < 0) {
        gnutls_deinit(s);
        return KF_ERR_TLS_CONFIG;
    }
    gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_cert2(s, (gnutls_typed_vdata_st *)&purpose, 1, 0);
    gnutls_handshake_set_timeout(s, (unsigned)c->srv->handshake_ms);
    kf_tls_transport_install(s, &c->transport);
    *out = s;
    return KF_OK;
}

static void serve_connection(struct tls_conn *c)
{
    gnutls_session_t s;
    if (session_open(c, &s) < 0) {
        kf_error("TLS %s: cannot set up a session", c->peer_addr);
        return;
    }
    int rc = kf_tls_handshake(s);
    if (rc < 0)
        kf_tls_log_handshake_failure("TLS", c->peer_addr, s, rc);
    else if (identify(c, s) == KF_OK) {
        serve_requests(c, s);
        gnutls_bye(s, GNUTLS_SHUT_WR);
    }
    gnutls_deinit(s);
}

static void *connection_thread(void *arg)
{
    struct tls_conn *c = arg;
    kf_tls_server *srv = c->srv;
    serve_connection(c);
    close(c->transport.fd);
    kf_wipe(&c->who, sizeof(c->who));
    free(c);
    atomic_fetch_sub(&srv->active, 1);
    return NULL;
}

void kf_tls_describe_peer(const struct sockaddr_storage *ss, socklen_t len, char *out, size_t cap)
{
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getnameinfo((const struct sockaddr *)ss, len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0)
    {
        /* Numeric: an IPv6 address is at most 45 characters, a port 5. */
        snprintf(out, cap, "%s%.46s%s:%.5s", ss->ss_family == AF_INET6 ? "[" : "", host,
                 ss->ss_family == AF_INET6 ? "]" : "", port);
    } else
        snprintf(out, cap, "?");
}

static void start_connection(kf_tls_server *srv, int fd, const struct sockaddr_storage *ss,
                             socklen_t len)
{
    char addr[64];
    kf_tls_describe_peer(ss, len, addr, sizeof(addr));
    if (atomic_fetch_add(&srv->active, 1) >= srv->max_connections) {
        atomic_fetch_sub(&srv->active, 1);
        kf_warn("TLS %s refused: %u connections open", addr, srv->max_connections);
        close(fd);
        return;
    }
    struct tls_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        atomic_fetch_sub(&srv->active, 1);
        close(fd);
        return;
    }
    c->srv = srv;
    c->transport.fd = fd;
    c->transport.stop_fd = srv->stop_pipe[0];
    memcpy(c->peer_addr, addr, sizeof(addr));
    /* A client that stops reading must not hold a thread forever in send. */
    struct timeval tv = {.tv_sec = srv->message_ms / 1000,
                         .tv_usec = (srv->message_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, connection_thread, c) != 0) {
        kf_warn("TLS %s refused: cannot start a thread", addr);
        atomic_fetch_sub(&srv->active, 1);
        close(fd);
        free(c);
    }
    pthread_attr_destroy(&attr);
}

static void *acceptor_thread(void *arg)
{
    kf_tls_server *srv = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = srv->listen_fd, .events = POLLIN},
                              {.fd = srv->stop_pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(srv->listen_fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                usleep(100000); /* out of descriptors: let connections finish */
            continue;
        }
        start_connection(srv, fd, &ss, len);
    }
    return NULL;
}

/* ---- public ------------------------------------------------------------ */

static void free_server(kf_tls_server *srv)
{
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    if (srv->stop_pipe[0] >= 0) {
        close(srv->stop_pipe[0]);
        close(srv->stop_pipe[1]);
    }
    if (srv->priority)
        gnutls_priority_deinit(srv->priority);
    if (srv->creds)
        gnutls_certificate_free_credentials(srv->creds);
    kf_tls_identities_free(srv->ids);
    free(srv);
}

int kf_tls_server_start(const struct kf_tls_server_config *cfg, kf_tls_server **out)
{
    KF_ENSURE(cfg && cfg->kms && cfg->listen && cfg->ca_file && cfg->cert_file && cfg->key_file,
              KF_ERR_ARG);
    kf_tls_server *srv = calloc(1, sizeof(*srv));
    KF_ENSURE(srv, KF_ERR_NOMEM);
    srv->listen_fd = srv->stop_pipe[0] = srv->stop_pipe[1] = -1;
    srv->kms = cfg->kms;
    srv->max_connections = cfg->max_connections ? cfg->max_connections : 256;
    srv->handshake_ms = cfg->handshake_timeout_ms > 0 ? cfg->handshake_timeout_ms : 10000;
    srv->idle_ms = cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms : 300000;
    srv->message_ms = cfg->message_timeout_ms > 0 ? cfg->message_timeout_ms : 10000;
    int rc = load_credentials(srv, cfg);
    if (rc == KF_OK)
        rc = load_identities(srv, cfg);
    if (rc == KF_OK && pipe2(srv->stop_pipe, O_CLOEXEC) != 0)
        rc = KF_ERR_IO;
    if (rc == KF_OK)
        rc = kf_tls_listen_tcp(cfg->listen, &srv->listen_fd, &srv->port);
    if (rc == KF_OK && pthread_create(&srv->acceptor, NULL, acceptor_thread, srv) != 0)
        rc = KF_ERR_NOMEM;
    if (rc < 0) {
        free_server(srv);
        return rc;
    }
    srv->acceptor_running = true;
    kf_info("KMIP over TLS on %s (port %u), client certificates from %s", cfg->listen,
            (unsigned)srv->port, cfg->ca_file);
    *out = srv;
    return KF_OK;
}

uint16_t kf_tls_server_port(const kf_tls_server *srv)
{
    return srv ? srv->port : 0;
}

unsigned kf_tls_server_connections(const kf_tls_server *srv)
{
    return srv ? atomic_load(&((kf_tls_server *)srv)->active) : 0;
}

void kf_tls_server_stop(kf_tls_server *srv)
{
    if (!srv)
        return;
    if (write(srv->stop_pipe[1], "x", 1) != 1)
        kf_warn("TLS: cannot signal stop");
    if (srv->acceptor_running)
        pthread_join(srv->acceptor, NULL);
    /* Requests in flight finish and commit; then their threads see the stop. */
    for (int i = 0; i < 1500 && atomic_load(&srv->active) > 0; i++)
        usleep(20000);
    if (atomic_load(&srv->active) > 0) {
        /* Threads still use srv: leak it rather than free it under them. */
        kf_warn("TLS: %u connections did not finish within 30 s", atomic_load(&srv->active));
        return;
    }
    free_server(srv);
}
