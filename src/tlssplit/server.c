/*
 * keyfleetd's KMIP listener in split mode (--tls-mode split).
 *
 * Process layout of this first step: keyfleetd is the host. Its acceptor
 * thread accepts TCP connections; each gets a worker thread in keyfleetd --
 * which holds the key store, so the worker calls kf_kms_handle_kmip directly,
 * as the monolithic endpoint does -- and the session handler, a separate
 * process exec'd from keyfleetd's own binary, runs the handshake. The
 * worker threads hold traffic keys only: no GnuTLS session, no certificate
 * key, no ticket key, no master or resumption secret exists in keyfleetd.
 *
 * If the handler process dies, the acceptor starts a new one for new
 * connections; established connections keep their application data flowing
 * and end at their next record that needs the (old, gone) handler.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "keyfleet/tls.h"
#include "keyfleet/ttlv.h"
#include "tlssplit_internal.h"

/* A handler process and the connections that still use its broker channel. */
struct handler_ref {
    kf_tlssplit_handler *h;
    unsigned refs; /* under srv->lock */
    bool retired;
};

struct kf_tlssplit_server {
    kf_kms *kms;
    struct kf_tlssplit_handler_config hcfg;
    char *strings; /* owns the copies hcfg points to (the PIN among them) */
    size_t strings_len;
    pthread_mutex_t lock;
    struct handler_ref *current;
    int listen_fd;
    int stop_pipe[2];
    uint16_t port;
    pthread_t acceptor;
    bool acceptor_running;
    atomic_uint active;
    unsigned max_connections;
    int handshake_ms, idle_ms, message_ms;
};

struct split_conn {
    kf_tlssplit_server *srv;
    int fd;
    char peer[64];
};

/* ---- the handler, shared by reference ----------------------------------------- */

static struct handler_ref *handler_get(kf_tlssplit_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    struct handler_ref *r = srv->current;
    if (r)
        r->refs++;
    pthread_mutex_unlock(&srv->lock);
    return r;
}

static void handler_put(kf_tlssplit_server *srv, struct handler_ref *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&srv->lock);
    bool last = --r->refs == 0 && r->retired;
    pthread_mutex_unlock(&srv->lock);
    if (last) {
        kf_tlssplit_handler_stop(r->h);
        free(r);
    }
}

static int handler_spawn(kf_tlssplit_server *srv)
{
    struct handler_ref *r = calloc(1, sizeof(*r));
    KF_ENSURE(r, KF_ERR_NOMEM);
    int rc = kf_tlssplit_handler_start(&srv->hcfg, &r->h);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->refs = 1; /* the server's own reference */
    pthread_mutex_lock(&srv->lock);
    struct handler_ref *old = srv->current;
    srv->current = r;
    if (old)
        old->retired = true;
    pthread_mutex_unlock(&srv->lock);
    handler_put(srv, old);
    kf_info("TLS split: session handler process %d", kf_tlssplit_handler_pid(r->h));
    return KF_OK;
}

/* A dead handler is replaced (at most every 2 s) for the connections to come. */
static void handler_check(kf_tlssplit_server *srv)
{
    static uint64_t last_try;
    struct handler_ref *r = handler_get(srv);
    bool alive = r && kf_tlssplit_handler_alive(r->h);
    handler_put(srv, r);
    if (alive || kf_mono_ns() - last_try < 2000000000ull)
        return;
    last_try = kf_mono_ns();
    kf_warn("TLS split: the session handler is gone; starting a new one");
    if (handler_spawn(srv) < 0)
        kf_error("TLS split: cannot start a session handler");
}

/* ---- one connection: KMIP over the worker's record layer ------------------------ */

static int read_exact(kf_tlssplit_conn *c, uint8_t *p, size_t n, int timeout_ms)
{
    while (n) {
        size_t got;
        KF_GUARD(kf_tlssplit_recv(c, p, n, timeout_ms, &got));
        p += got;
        n -= got;
    }
    return KF_OK;
}

/* One TTLV message: the header within the idle time, the rest within the message time. */
static int read_message(kf_tlssplit_server *srv, kf_tlssplit_conn *c, kf_buf *msg)
{
    uint8_t *hdr, *body;
    size_t got, total;
    struct kf_ttlv_limits lim = {.max_total = KF_TLS_MESSAGE_MAX};
    kf_buf_reset(msg);
    KF_GUARD(kf_buf_put_space(msg, KF_TTLV_HEADER_LEN, &hdr));
    KF_GUARD(kf_tlssplit_recv(c, hdr, KF_TTLV_HEADER_LEN, srv->idle_ms, &got));
    KF_GUARD(read_exact(c, hdr + got, KF_TTLV_HEADER_LEN - got, srv->message_ms));
    KF_GUARD(kf_ttlv_message_length(hdr, &lim, &total));
    KF_ENSURE(total >= KF_TTLV_HEADER_LEN && total <= KF_TLS_MESSAGE_MAX, KF_ERR_LIMIT);
    KF_GUARD(kf_buf_put_space(msg, total - KF_TTLV_HEADER_LEN, &body));
    return read_exact(c, body, total - KF_TTLV_HEADER_LEN, srv->message_ms);
}

static void serve_requests(struct split_conn *sc, kf_tlssplit_conn *c)
{
    kf_tlssplit_server *srv = sc->srv;
    const struct kf_principal *who = kf_tlssplit_peer(c);
    kf_buf req = {0}, resp = {0};
    if (kf_buf_alloc(&req, 4096, KF_TLS_MESSAGE_MAX, KF_BUF_SECRET) < 0 ||
        kf_buf_alloc(&resp, 4096, KF_TLS_MESSAGE_MAX + 65536, KF_BUF_SECRET) < 0) {
        kf_error("TLS split %s: no secure memory for buffers", sc->peer);
        goto out;
    }
    for (;;) {
        int rc = read_message(srv, c, &req);
        if (rc < 0) {
            int why = kf_tlssplit_end_reason(c);
            if (!(rc == KF_ERR_IO && why == KF_OK))
                kf_info("TLS split %s (%s) closed: %s", sc->peer, who->name,
                        kf_strerror(why < 0 ? why : rc));
            break;
        }
        kf_buf_reset(&resp);
        rc = kf_kms_handle_kmip(srv->kms, who, req.data, req.len, &resp);
        if (rc < 0 || kf_tlssplit_send(c, resp.data, resp.len, srv->message_ms) < 0) {
            kf_warn("TLS split %s (%s): cannot answer: %s", sc->peer, who->name,
                    kf_strerror(rc < 0 ? rc : KF_ERR_TLS));
            break;
        }
    }
out:
    kf_buf_free(&req);
    kf_buf_free(&resp);
}

static void connection_thread(void *arg)
{
    struct split_conn *sc = arg;
    kf_tlssplit_server *srv = sc->srv;
    struct handler_ref *r = handler_get(srv);
    kf_tlssplit_conn *c = NULL;
    int rc = r ? kf_tlssplit_accept(kf_tlssplit_handler_broker(r->h), sc->fd, sc->peer,
                                    srv->handshake_ms, &c)
               : KF_ERR_SPLIT_HANDLER;
    if (!r)
        close(sc->fd);
    if (rc == KF_OK) {
        kf_tlssplit_set_stop_fd(c, srv->stop_pipe[0]);
        serve_requests(sc, c);
        kf_tlssplit_close(c);
    } else if (rc == KF_ERR_SPLIT_HANDLER)
        kf_warn("TLS split %s refused: %s", sc->peer, kf_strerror(rc));
    handler_put(srv, r);
    free(sc);
    atomic_fetch_sub(&srv->active, 1);
}

/* ---- listening ------------------------------------------------------------------- */



static void start_connection(kf_tlssplit_server *srv, int fd, const struct sockaddr_storage *ss,
                             socklen_t len)
{
    char addr[64];
    kf_tls_describe_peer(ss, len, addr, sizeof(addr));
    if (atomic_fetch_add(&srv->active, 1) >= srv->max_connections) {
        atomic_fetch_sub(&srv->active, 1);
        kf_warn("TLS split %s refused: %u connections open", addr, srv->max_connections);
        close(fd);
        return;
    }
    struct split_conn *sc = calloc(1, sizeof(*sc));
    if (!sc) {
        atomic_fetch_sub(&srv->active, 1);
        close(fd);
        return;
    }
    sc->srv = srv;
    sc->fd = fd;
    memcpy(sc->peer, addr, sizeof(addr));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (kf_tlssplit_pool_run(connection_thread, sc) < 0) {
        kf_warn("TLS split %s refused: cannot start a thread", addr);
        atomic_fetch_sub(&srv->active, 1);
        close(fd);
        free(sc);
    }
}

static void *acceptor_thread(void *arg)
{
    kf_tlssplit_server *srv = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = srv->listen_fd, .events = POLLIN},
                              {.fd = srv->stop_pipe[0], .events = POLLIN}};
        int r = poll(p, 2, 1000);
        if (r < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        handler_check(srv);
        if (r <= 0 || !(p[0].revents & POLLIN))
            continue;
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(srv->listen_fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                usleep(100000);
            continue;
        }
        start_connection(srv, fd, &ss, len);
    }
    return NULL;
}

/* ---- public ------------------------------------------------------------------------ */

static char *dup_into(char **pos, const char *s)
{
    if (!s)
        return NULL;
    char *d = *pos;
    size_t n = strlen(s) + 1;
    memcpy(d, s, n);
    *pos += n;
    return d;
}

static void free_server(kf_tlssplit_server *srv)
{
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    if (srv->stop_pipe[0] >= 0) {
        close(srv->stop_pipe[0]);
        close(srv->stop_pipe[1]);
    }
    if (srv->current) {
        srv->current->retired = true;
        handler_put(srv, srv->current);
    }
    pthread_mutex_destroy(&srv->lock);
    if (srv->strings) {
        kf_wipe(srv->strings, srv->strings_len);
        free(srv->strings);
    }
    free(srv);
}

int kf_tlssplit_server_start(const struct kf_tlssplit_server_config *cfg, kf_tlssplit_server **out)
{
    KF_ENSURE(cfg && cfg->kms && cfg->listen && out, KF_ERR_ARG);
    kf_tlssplit_server *srv = calloc(1, sizeof(*srv));
    KF_ENSURE(srv, KF_ERR_NOMEM);
    srv->listen_fd = srv->stop_pipe[0] = srv->stop_pipe[1] = -1;
    pthread_mutex_init(&srv->lock, NULL);
    srv->kms = cfg->kms;
    srv->max_connections = cfg->max_connections ? cfg->max_connections : 256;
    srv->handshake_ms = cfg->handshake_timeout_ms > 0 ? cfg->handshake_timeout_ms : 10000;
    srv->idle_ms = cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms : 300000;
    srv->message_ms = cfg->message_timeout_ms > 0 ? cfg->message_timeout_ms : 10000;
    /* The handler is restarted later with the same settings: keep copies. */
    const struct kf_tlssplit_handler_config *h = &cfg->handler;
    const char *strs[] = {h->ca_file,  h->cert_file, h->key_file, h->pkcs11_module, h->key_pin,
                          h->identities_file, h->priority, h->log_file, h->exec_path};
    size_t total = 1;
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        total += strs[i] ? strlen(strs[i]) + 1 : 0;
    srv->strings = calloc(1, total);
    srv->strings_len = total;
    int rc = srv->strings ? KF_OK : KF_ERR_NOMEM;
    if (rc == KF_OK) {
        char *pos = srv->strings;
        srv->hcfg = *h;
        srv->hcfg.ca_file = dup_into(&pos, h->ca_file);
        srv->hcfg.cert_file = dup_into(&pos, h->cert_file);
        srv->hcfg.key_file = dup_into(&pos, h->key_file);
        srv->hcfg.pkcs11_module = dup_into(&pos, h->pkcs11_module);
        srv->hcfg.key_pin = dup_into(&pos, h->key_pin);
        srv->hcfg.identities_file = dup_into(&pos, h->identities_file);
        srv->hcfg.priority = dup_into(&pos, h->priority);
        srv->hcfg.log_file = dup_into(&pos, h->log_file);
        srv->hcfg.exec_path = dup_into(&pos, h->exec_path);
        srv->hcfg.handshake_timeout_ms = srv->handshake_ms;
        rc = handler_spawn(srv);
    }
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
    /* "KMIP over TLS on ... (port N)" is what scripts look for, in both modes. */
    kf_info("KMIP over TLS on %s (port %u), split: handshakes in session handler process %d",
            cfg->listen, (unsigned)srv->port, kf_tlssplit_handler_pid(srv->current->h));
    *out = srv;
    return KF_OK;
}

uint16_t kf_tlssplit_server_port(const kf_tlssplit_server *srv)
{
    return srv ? srv->port : 0;
}

int kf_tlssplit_server_handler_pid(kf_tlssplit_server *srv)
{
    struct handler_ref *r = handler_get(srv);
    int pid = r ? kf_tlssplit_handler_pid(r->h) : -1;
    handler_put(srv, r);
    return pid;
}

void kf_tlssplit_server_stop(kf_tlssplit_server *srv)
{
    if (!srv)
        return;
    if (write(srv->stop_pipe[1], "x", 1) != 1)
        kf_warn("TLS split: cannot signal stop");
    if (srv->acceptor_running)
        pthread_join(srv->acceptor, NULL);
    for (int i = 0; i < 1500 && atomic_load(&srv->active) > 0; i++)
        usleep(20000);
    if (atomic_load(&srv->active) > 0) {
        kf_warn("TLS split: %u connections did not finish within 30 s", atomic_load(&srv->active));
        return;
    }
    free_server(srv);
}
