/*
 * keyfleetd's KMIP listener in split mode (--tls-mode split).
 *
 * keyfleetd is the host: it holds the key store and accepts TCP connections;
 * the session handler, a separate process exec'd from keyfleetd's own
 * binary, runs every handshake. Who does the record layer:
 *
 *  - threads (the default): a thread of keyfleetd per connection calls
 *    kf_kms_handle_kmip directly. It holds traffic keys only -- no GnuTLS
 *    session, certificate key, ticket key, master or resumption secret exists
 *    in keyfleetd -- but it runs in the process that has the key store.
 *  - processes: confined worker processes, also exec'd from keyfleetd's
 *    binary (worker.c). The acceptor passes each socket to the least busy
 *    one; the worker gets the traffic state and a random connection ID from
 *    the handler and relays each KMIP request with that ID over its
 *    application channel (app.c); the handler tells keyfleetd the
 *    connection's principal under the ID directly (the peers channel), and
 *    keyfleetd's pool threads look it up and answer with kf_kms_handle_kmip. A worker that dies takes its own connections with
 *    it and is replaced; one that breaks the channel protocol is killed.
 *    (Not the default: about two more thread wake-ups per request, 0.7-0.8 of
 *    the monolithic Get rate; docs/tls-split.md, "Benchmark".)
 *
 * If the handler process dies, the acceptor starts a new one for new
 * connections (and, with processes, new workers that use it); established
 * connections keep their application data flowing and end at their next
 * record that needs the (old, gone) handler.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "keyfleet/tls.h"
#include "keyfleet/ttlv.h"
#include "tlssplit_internal.h"

/* A handler process and the connections that still use its broker channel. */
struct handler_ref {
    kf_tlssplit_handler *h;
    kf_app_peers *peers; /* processes: the principals by connection ID, from this handler */
    unsigned refs; /* under srv->lock */
    bool retired;
};

/* A KMIP worker process, as keyfleetd sees it. */
struct kmip_worker {
    kf_tlssplit_server *srv;
    kf_tlssplit_worker *proc; /* pid, dispatch channel */
    struct handler_ref *href;  /* its handler (broker, peers table): held until reaped */
    kf_app_host *app;         /* the application channel's keyfleetd end */
    int pid;
    atomic_uint conns;  /* dispatched and not yet CLOSED */
    atomic_bool ended;  /* the channel is over: reap it */
    atomic_bool retired; /* takes no new connections (its handler was replaced) */
    struct kmip_worker *next;
};

struct kf_tlssplit_server {
    kf_kms *kms;
    struct kf_tlssplit_handler_config hcfg;
    char *strings; /* owns the copies hcfg points to (the PIN among them) */
    size_t strings_len;
    pthread_mutex_t lock; /* current handler, the worker list */
    struct handler_ref *current;
    int listen_fd;
    int stop_pipe[2];
    uint16_t port;
    pthread_t acceptor;
    bool acceptor_running;
    atomic_uint active;
    unsigned max_connections;
    int handshake_ms, idle_ms, message_ms;
    /* --split-workers processes */
    bool processes;
    unsigned nworkers, sandbox_flags;
    struct kmip_worker *workers; /* changed by the acceptor only (and start/stop), under lock */
    unsigned next_worker;        /* ties go round */
    uint64_t last_worker_spawn;
    atomic_bool stopping;
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
        kf_app_peers_stop(r->peers);
        free(r);
    }
}

static int handler_spawn(kf_tlssplit_server *srv)
{
    struct handler_ref *r = calloc(1, sizeof(*r));
    KF_ENSURE(r, KF_ERR_NOMEM);
    int rc = kf_tlssplit_handler_start(&srv->hcfg, &r->h);
    if (rc == KF_OK && srv->processes) {
        /* The workers get connection IDs; the principals come to us directly. */
        rc = kf_app_peers_start(kf_tlssplit_handler_take_peers(r->h), &r->peers);
        if (rc < 0)
            kf_tlssplit_handler_stop(r->h);
    }
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

/* ---- KMIP worker processes ------------------------------------------------------- */

static int kms_answer(void *arg, const struct kf_principal *who, const uint8_t *req, size_t len,
                      kf_buf *resp)
{
    return kf_kms_handle_kmip(arg, who, req, len, resp);
}

/* Around each batch of a worker's requests: their read/use audit records are one
 * group-commit job, committed before any of the batch's answers is written. */
static bool kms_batchable(void *arg, const uint8_t *req, size_t len)
{
    (void)arg;
    return kf_kms_kmip_read_only(req, len);
}

static int kms_batch_begin(void *arg)
{
    return kf_kms_audit_defer_begin(arg);
}

static int kms_batch_end(void *arg)
{
    return kf_kms_audit_defer_end(arg);
}

/* From the channel's reader thread: one of the worker's connections is over. */
static bool worker_closed(void *owner)
{
    struct kmip_worker *w = owner;
    unsigned n = atomic_load(&w->conns);
    do
        if (n == 0)
            return false; /* it had none: a protocol violation */
    while (!atomic_compare_exchange_weak(&w->conns, &n, n - 1));
    atomic_fetch_sub(&w->srv->active, 1);
    return true;
}

/* From the channel's reader thread: the worker is gone, or must go. */
static void worker_ended(void *owner, int reason)
{
    struct kmip_worker *w = owner;
    if (reason == KF_ERR_SPLIT_APP) {
        kf_error("TLS split: KMIP worker process %d: %s", w->pid, kf_strerror(reason));
        kill(w->pid, SIGKILL);
    } else if (!atomic_load(&w->srv->stopping) && !atomic_load(&w->retired))
        kf_warn("TLS split: KMIP worker process %d is gone (%u connections with it)", w->pid,
                atomic_load(&w->conns));
    atomic_store(&w->ended, true);
}

static int worker_spawn(kf_tlssplit_server *srv)
{
    struct handler_ref *r = handler_get(srv);
    KF_ENSURE(r, KF_ERR_SPLIT_HANDLER);
    struct kf_app_worker_spawn spawn = {.broker = kf_tlssplit_handler_broker(r->h),
                                        .exec_path = srv->hcfg.exec_path};
    struct kmip_worker *w = calloc(1, sizeof(*w));
    int app_fd = -1;
    int rc = w ? kf_tlssplit_kmip_worker_start(&spawn, &w->proc, &app_fd) : KF_ERR_NOMEM;
    if (rc < 0) {
        handler_put(srv, r);
        free(w);
        return rc;
    }
    w->href = r; /* its requests' principals are in this handler's peers table */
    w->srv = srv;
    w->pid = kf_tlssplit_worker_pid(w->proc);
    struct kf_app_host_config hc = {.handle = kms_answer,
                                    .handle_arg = srv->kms,
                                    .batchable = kms_batchable,
                                    .batch_begin = kms_batch_begin,
                                    .batch_end = kms_batch_end,
                                    .on_closed = worker_closed,
                                    .on_end = worker_ended,
                                    .owner = w,
                                    .peers = r->peers,
                                    .max_inflight = srv->max_connections,
                                    .write_timeout_ms = srv->message_ms};
    rc = kf_app_host_start(app_fd, &hc, &w->app);
    if (rc == KF_OK) {
        struct kf_app_settings set = {0};
        set.max_connections = srv->max_connections;
        set.handshake_ms = (uint32_t)srv->handshake_ms;
        set.idle_ms = (uint32_t)srv->idle_ms;
        set.message_ms = (uint32_t)srv->message_ms;
        set.log_level = (uint8_t)(srv->hcfg.log_level >= KF_LOG_DEBUG &&
                                          srv->hcfg.log_level <= KF_LOG_ERROR
                                      ? srv->hcfg.log_level
                                      : KF_LOG_INFO);
        set.sandbox_flags = (uint8_t)srv->sandbox_flags;
        set.flags = srv->hcfg.exec_path ? KF_APP_SETTINGS_OPEN_LOG : 0;
        if (srv->hcfg.log_file && strlen(srv->hcfg.log_file) <= KF_APP_LOG_FILE_MAX)
            memcpy(set.log_file, srv->hcfg.log_file, strlen(srv->hcfg.log_file));
        rc = kf_app_host_settings(w->app, &set);
    }
    if (rc < 0) {
        kill(w->pid, SIGKILL);
        kf_app_host_stop(w->app);
        kf_tlssplit_worker_stop(w->proc);
        handler_put(srv, w->href);
        free(w);
        return rc;
    }
    pthread_mutex_lock(&srv->lock);
    w->next = srv->workers;
    srv->workers = w;
    pthread_mutex_unlock(&srv->lock);
    srv->last_worker_spawn = kf_mono_ns();
    kf_info("TLS split: KMIP worker process %d", w->pid);
    return KF_OK;
}

/* Channel closed, process waited for (killed after 3 s), its connections uncounted. */
static void worker_reap(kf_tlssplit_server *srv, struct kmip_worker *w)
{
    kf_app_host_stop(w->app);
    kf_tlssplit_worker_stop(w->proc);
    atomic_fetch_sub(&srv->active, atomic_load(&w->conns));
    handler_put(srv, w->href);
    free(w);
}

/* The acceptor, now and then: reap workers that are gone, start what is missing. */
static void workers_check(kf_tlssplit_server *srv)
{
    struct kmip_worker *gone = NULL;
    unsigned live = 0;
    pthread_mutex_lock(&srv->lock);
    for (struct kmip_worker **p = &srv->workers; *p;) {
        struct kmip_worker *w = *p;
        if (atomic_load(&w->ended)) {
            *p = w->next;
            w->next = gone;
            gone = w;
            continue;
        }
        live += !atomic_load(&w->retired);
        p = &w->next;
    }
    pthread_mutex_unlock(&srv->lock);
    while (gone) {
        struct kmip_worker *w = gone;
        gone = w->next;
        worker_reap(srv, w);
    }
    /* At most one round of replacements a second (a crash loop costs no more). */
    if (live >= srv->nworkers || (live > 0 && kf_mono_ns() - srv->last_worker_spawn < 1000000000ull))
        return;
    for (; live < srv->nworkers; live++) {
        int rc = worker_spawn(srv);
        if (rc < 0) {
            kf_error("TLS split: cannot start a KMIP worker process: %s", kf_strerror(rc));
            srv->last_worker_spawn = kf_mono_ns();
            break;
        }
    }
}

/* A new handler: the workers that use the old one's broker take no more connections. */
static void workers_retire(kf_tlssplit_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    for (struct kmip_worker *w = srv->workers; w; w = w->next)
        if (!atomic_load(&w->retired)) {
            atomic_store(&w->retired, true);
            kf_tlssplit_worker_retire(w->proc);
        }
    pthread_mutex_unlock(&srv->lock);
    srv->last_worker_spawn = 0;
}

/* The least busy live worker; equal loads take turns (the acceptor only). */
static struct kmip_worker *worker_pick(kf_tlssplit_server *srv)
{
    struct kmip_worker *best = NULL;
    unsigned best_conns = 0, best_rank = 0, n = 0, idx = 0, turn = srv->next_worker++;
    pthread_mutex_lock(&srv->lock);
    for (struct kmip_worker *w = srv->workers; w; w = w->next)
        n++;
    for (struct kmip_worker *w = srv->workers; w; w = w->next, idx++) {
        if (atomic_load(&w->retired) || atomic_load(&w->ended))
            continue;
        unsigned conns = atomic_load(&w->conns), rank = (idx + n - turn % n) % n;
        if (!best || conns < best_conns || (conns == best_conns && rank < best_rank)) {
            best = w;
            best_conns = conns;
            best_rank = rank;
        }
    }
    pthread_mutex_unlock(&srv->lock);
    return best;
}

static void workers_stop(kf_tlssplit_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    struct kmip_worker *all = srv->workers;
    srv->workers = NULL;
    pthread_mutex_unlock(&srv->lock);
    /* First every channel (requests in flight are answered, then the workers end
     * their connections), then the processes. */
    for (struct kmip_worker *w = all; w; w = w->next) {
        kf_app_host_stop(w->app);
        w->app = NULL;
    }
    while (all) {
        struct kmip_worker *w = all;
        all = w->next;
        kf_tlssplit_worker_stop(w->proc);
        atomic_fetch_sub(&srv->active, atomic_load(&w->conns));
        handler_put(srv, w->href);
        free(w);
    }
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
    else if (srv->processes)
        workers_retire(srv); /* workers_check starts new ones with the new broker */
}

/* ---- one connection on a thread of keyfleetd: KMIP over the record layer ---------- */

static void serve_requests(struct split_conn *sc, kf_tlssplit_conn *c)
{
    kf_tlssplit_server *srv = sc->srv;
    const struct kf_principal *who = kf_tlssplit_peer(c);
    kf_buf req = {0}, resp = {0};
    if (kf_buf_alloc(&req, 4096, KF_TLS_MESSAGE_MAX, KF_BUF_SECRET) < 0 ||
        kf_buf_alloc(&resp, 4096, KF_APP_ANSWER_MAX, KF_BUF_SECRET) < 0) {
        kf_error("TLS split %s: no secure memory for buffers", sc->peer);
        goto out;
    }
    for (;;) {
        int rc = kf_app_read_kmip(c, srv->idle_ms, srv->message_ms, &req);
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

/* --split-workers processes: the socket goes to the least busy worker process. */
static void dispatch_connection(kf_tlssplit_server *srv, int fd, const char *addr)
{
    struct kmip_worker *w = worker_pick(srv);
    if (!w) {
        workers_check(srv); /* all gone: start new ones now if allowed */
        w = worker_pick(srv);
    }
    if (!w) {
        kf_warn("TLS split %s refused: %s", addr, kf_strerror(KF_ERR_SPLIT_WORKER));
        atomic_fetch_sub(&srv->active, 1);
        close(fd);
        return;
    }
    atomic_fetch_add(&w->conns, 1);
    if (kf_tlssplit_worker_dispatch(w->proc, fd, addr) < 0) { /* closes fd */
        kf_warn("TLS split %s refused: KMIP worker process %d does not take it", addr, w->pid);
        atomic_fetch_sub(&w->conns, 1);
        atomic_fetch_sub(&srv->active, 1);
    }
}

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
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (srv->processes) {
        dispatch_connection(srv, fd, addr);
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
        int r = poll(p, 2, srv->processes ? 250 : 1000);
        if (r < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        handler_check(srv);
        if (srv->processes)
            workers_check(srv);
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
    atomic_store(&srv->stopping, true);
    workers_stop(srv);
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

static unsigned default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 2 ? 2u : n > 64 ? 64u : (unsigned)n;
}

int kf_tlssplit_server_start(const struct kf_tlssplit_server_config *cfg, kf_tlssplit_server **out)
{
    KF_ENSURE(cfg && cfg->kms && cfg->listen && out, KF_ERR_ARG);
    KF_ENSURE(cfg->workers == KF_TLSSPLIT_WORKERS_PROCESSES ||
                  cfg->workers == KF_TLSSPLIT_WORKERS_THREADS,
              KF_ERR_ARG);
    /* A worker process numbers its connections in 16 bits. */
    KF_ENSURE(cfg->workers == KF_TLSSPLIT_WORKERS_THREADS || cfg->max_connections <= KF_APP_SLOTS_MAX,
              KF_ERR_ARG);
    kf_tlssplit_server *srv = calloc(1, sizeof(*srv));
    KF_ENSURE(srv, KF_ERR_NOMEM);
    srv->listen_fd = srv->stop_pipe[0] = srv->stop_pipe[1] = -1;
    pthread_mutex_init(&srv->lock, NULL);
    srv->kms = cfg->kms;
    srv->max_connections = cfg->max_connections ? cfg->max_connections : 256;
    srv->handshake_ms = cfg->handshake_timeout_ms > 0 ? cfg->handshake_timeout_ms : 10000;
    srv->idle_ms = cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms : 300000;
    srv->message_ms = cfg->message_timeout_ms > 0 ? cfg->message_timeout_ms : 10000;
    srv->processes = cfg->workers == KF_TLSSPLIT_WORKERS_PROCESSES;
    srv->nworkers = cfg->worker_processes ? cfg->worker_processes : default_workers();
    srv->sandbox_flags = cfg->worker_sandbox_flags;
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
        srv->hcfg.conn_ids = srv->processes; /* worker processes never see a principal */
        rc = handler_spawn(srv);
    }
    for (unsigned i = 0; rc == KF_OK && srv->processes && i < srv->nworkers; i++)
        rc = worker_spawn(srv);
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
    if (srv->processes)
        kf_info("KMIP over TLS on %s (port %u), split: handshakes in session handler process %d, "
                "records and KMIP relay in %u confined worker processes",
                cfg->listen, (unsigned)srv->port, kf_tlssplit_handler_pid(srv->current->h),
                srv->nworkers);
    else
        kf_info("KMIP over TLS on %s (port %u), split: handshakes in session handler process %d, "
                "records in worker threads",
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
    if (srv->processes) { /* the workers' connections end with the workers */
        free_server(srv);
        return;
    }
    for (int i = 0; i < 1500 && atomic_load(&srv->active) > 0; i++)
        usleep(20000);
    if (atomic_load(&srv->active) > 0) {
        kf_warn("TLS split: %u connections did not finish within 30 s", atomic_load(&srv->active));
        return;
    }
    free_server(srv);
}
