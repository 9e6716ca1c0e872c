/*
 * Worker processes: started before anything secret is loaded (forked) or
 * from a fresh address space (exec'd, keyfleetd), confined (sandbox.c), and
 * fed accepted TCP sockets over their dispatch channel (ACCEPTED messages,
 * one descriptor each). For each socket a thread hands it to the session
 * handler (kf_tlssplit_accept), serves the connection and closes it. The
 * process holds nothing but traffic keys and the application's data; killing
 * it ends its connections and no others.
 *
 * Two applications:
 *  - a callback (kf_tlssplit_worker_start: the echo benchmark, tests);
 *  - KMIP (kf_tlssplit_kmip_worker_start: keyfleetd --split-workers
 *    processes): every complete request goes with the connection's ID (the
 *    handler's; keyfleetd has the principal under it from the handler, the
 *    worker never has it) over the application channel (app.h: app.c the
 *    codec, app_host.c keyfleetd's end) to keyfleetd, which holds the key
 *    store and answers; the worker relays the answer. The handshake runs on
 *    the connection's thread; after it the process's event loop (loop.c)
 *    serves the connection, handing it back to that thread only for what
 *    waits.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "app.h"
#include "loop.h"
#include "channel.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "tlssplit_internal.h"

struct kf_tlssplit_worker {
    pid_t pid;
    int dispatch;
};

/*
 * The host's ends of its workers' dispatch channels. A worker forked without
 * exec would inherit its elder siblings' ends and keep them open, so an elder
 * never saw its channel close (kf-tls-echo took 3 s to stop): the child
 * closes them all first.
 */
#define DISPATCH_FDS_MAX 256
static pthread_mutex_t dispatch_mu = PTHREAD_MUTEX_INITIALIZER;
static int dispatch_fds[DISPATCH_FDS_MAX];
static unsigned dispatch_n;

static void dispatch_track(int fd)
{
    pthread_mutex_lock(&dispatch_mu);
    if (dispatch_n < DISPATCH_FDS_MAX)
        dispatch_fds[dispatch_n++] = fd;
    pthread_mutex_unlock(&dispatch_mu);
}

/* Before the descriptor is closed (its number may be reused right after). */
static void dispatch_untrack(int fd)
{
    pthread_mutex_lock(&dispatch_mu);
    for (unsigned i = 0; i < dispatch_n; i++)
        if (dispatch_fds[i] == fd) {
            dispatch_fds[i] = dispatch_fds[--dispatch_n];
            break;
        }
    pthread_mutex_unlock(&dispatch_mu);
}

/* fork() with the list held still; the child closes the siblings' ends. */
static pid_t fork_worker(void)
{
    pthread_mutex_lock(&dispatch_mu);
    pid_t pid = fork();
    if (pid == 0) {
        for (unsigned i = 0; i < dispatch_n; i++)
            close(dispatch_fds[i]);
        dispatch_n = 0;
        pthread_mutex_init(&dispatch_mu, NULL);
        return 0;
    }
    pthread_mutex_unlock(&dispatch_mu);
    return pid;
}

struct worker_conn {
    void (*serve)(struct worker_conn *wc);
    const void *ctx; /* the callback worker's config, or the KMIP worker */
    int fd;
    char peer[KF_SPLIT_PEER_MAX + 1];
};

static atomic_uint live_conns;

static void conn_thread(void *arg)
{
    struct worker_conn *wc = arg;
    wc->serve(wc);
    free(wc);
    atomic_fetch_sub(&live_conns, 1);
}

/* True once the other end of fd has closed (or shut down) its side. */
static bool peer_gone(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    int n;
    do
        n = poll(&p, 1, timeout_ms);
    while (n < 0 && errno == EINTR);
    return n > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* ACCEPTED messages until the dispatch channel ends (or, watch >= 0, the
 * other end of watch goes away). refused (may be NULL) is told of a socket
 * that got no thread. */
static int serve(int dispatch, int watch, void (*fn)(struct worker_conn *), const void *ctx,
                 void (*refused)(const void *ctx))
{
    for (;;) {
        if (watch >= 0) {
            struct pollfd p[2] = {{.fd = dispatch, .events = POLLIN},
                                  {.fd = watch, .events = POLLRDHUP}};
            int n = poll(p, 2, -1);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 || (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
                return KF_OK;
        }
        uint8_t buf[256], type;
        kf_buf body;
        bool eof;
        int fds[3];
        struct kf_split_start st;
        int rc = kf_split_recv(dispatch, buf, sizeof(buf), KF_SPLIT_ALLOW(KF_SPLIT_ACCEPTED), -1,
                               &type, &body, fds, &eof);
        if (rc == KF_OK && kf_split_decode_accepted(&body, &st) < 0) {
            close(fds[0]);
            rc = KF_ERR_SPLIT_CHANNEL;
        }
        if (rc < 0)
            return eof ? KF_OK : rc; /* the host is gone, or broke the protocol */
        struct worker_conn *wc = calloc(1, sizeof(*wc));
        if (!wc) {
            close(fds[0]);
            if (refused)
                refused(ctx);
            continue;
        }
        wc->serve = fn;
        wc->ctx = ctx;
        wc->fd = fds[0];
        memcpy(wc->peer, st.peer, sizeof(wc->peer));
        atomic_fetch_add(&live_conns, 1);
        if (kf_tlssplit_pool_run(conn_thread, wc) < 0) {
            close(wc->fd);
            free(wc);
            atomic_fetch_sub(&live_conns, 1);
            if (refused)
                refused(ctx);
        }
    }
}

/* ---- a callback application ----------------------------------------------------- */

static void app_conn(struct worker_conn *wc)
{
    const struct kf_tlssplit_worker_config *cfg = wc->ctx;
    kf_tlssplit_conn *c;
    int rc = kf_tlssplit_accept(cfg->broker, wc->fd, wc->peer, cfg->handshake_timeout_ms, &c);
    if (rc == KF_OK) {
        cfg->app(cfg->arg, c);
        kf_tlssplit_close(c);
    }
}

int kf_tlssplit_worker_start(const struct kf_tlssplit_worker_config *cfg,
                             kf_tlssplit_worker **out)
{
    KF_ENSURE(cfg && cfg->app && cfg->broker >= 0 && out, KF_ERR_ARG);
    kf_tlssplit_worker *w = calloc(1, sizeof(*w));
    int sv[2];
    KF_ENSURE(w, KF_ERR_NOMEM);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        free(w);
        return KF_ERR_IO;
    }
    w->pid = fork_worker();
    if (w->pid < 0) {
        close(sv[0]);
        close(sv[1]);
        free(w);
        return KF_ERR_IO;
    }
    if (w->pid == 0) {
        close(sv[0]);
        signal(SIGPIPE, SIG_IGN);
        int rc = kf_tlssplit_sandbox(cfg->sandbox_flags);
        if (rc < 0) {
            kf_error("TLS split worker: cannot confine itself: %s", kf_strerror(rc));
            _exit(2);
        }
        rc = serve(sv[1], -1, app_conn, cfg, NULL);
        /* Let connections in flight finish before the process goes. */
        for (int i = 0; i < 3000 && atomic_load(&live_conns) > 0; i++)
            usleep(10000);
        _exit(rc < 0 ? 1 : 0);
    }
    close(sv[1]);
    w->dispatch = sv[0];
    dispatch_track(w->dispatch);
    *out = w;
    return KF_OK;
}

/* ---- KMIP over the application channel --------------------------------------------- */

/* The one KMIP worker of this process. */
static struct kmip_worker {
    int broker, dispatch;
    int stop[2]; /* readable: keyfleetd stops, end every connection */
    struct kf_app_settings set;
    kf_app_loop *loop;
} kw = {.broker = -1, .dispatch = -1, .stop = {-1, -1}};

/* keyfleetd stops (or is gone): every connection ends, no new ones come. */
static void kmip_stop(void)
{

    static atomic_flag once = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&once))
        return;
    if (write(kw.stop[1], "x", 1) != 1)
        _exit(3);
    shutdown(kw.dispatch, SHUT_RDWR);
}

/* The application channel ended (from the loop thread). */
static void kmip_channel_end(void *arg, int reason)
{
    (void)arg;
    if (reason == KF_ERR_SPLIT_APP) {
        /* Not speaking the protocol: nothing it says can be trusted, not even a goodbye. */
        kf_error("TLS split worker %d: %s", (int)getpid(), kf_strerror(reason));
        _exit(3);
    }
    kmip_stop();
}

static void kmip_conn(struct worker_conn *wc)
{
    kf_tlssplit_conn *c;
    int rc = kf_tlssplit_accept(kw.broker, wc->fd, wc->peer, (int)kw.set.handshake_ms, &c);
    if (rc == KF_OK) {
        kf_tlssplit_set_stop_fd(c, kw.stop[0]);
        if (kf_app_loop_serve(kw.loop, c, wc->peer) == KF_ERR_LIMIT)
            kf_warn("TLS split %s refused: more than %u connections", wc->peer,
                    (unsigned)kw.set.max_connections);
        kf_tlssplit_close(c);
    } else if (rc == KF_ERR_SPLIT_HANDLER)
        kf_warn("TLS split %s refused: %s", wc->peer, kf_strerror(rc));
    /* Every dispatched socket is accounted for, whatever became of it. */
    (void)kf_app_loop_closed(kw.loop);
}

static void kmip_refused(const void *ctx)
{
    (void)ctx;
    (void)kf_app_loop_closed(kw.loop);
}

/* The worker process: settings, confinement, then connections until keyfleetd says stop. */
static int kmip_worker_run(int dispatch, int app, int broker)
{
    struct kf_app_reader rd;
    uint8_t type;
    kf_buf body;
    bool eof;
    int rc = kf_app_reader_init(&rd, app);
    if (rc == KF_OK)
        rc = kf_app_read(&rd, KF_APP_ALLOW(KF_APP_SETTINGS), 30000, &type, &body, &eof);
    if (rc == KF_OK)
        rc = kf_app_decode_settings(&body, &kw.set);
    if (rc < 0) {
        kf_error("TLS split worker %d: no settings from keyfleetd: %s", (int)getpid(),
                 kf_strerror(rc));
        return 1;
    }
    /* An exec'd worker opens the log itself (a forked one has keyfleetd's). */
    if ((kw.set.flags & KF_APP_SETTINGS_OPEN_LOG) &&
        kf_log_open(kw.set.log_file[0] ? kw.set.log_file : NULL,
                    (enum kf_log_level)kw.set.log_level) != 0)
        fprintf(stderr, "keyfleetd TLS worker: cannot open the log %s\n", kw.set.log_file);
    kw.broker = broker;
    kw.dispatch = dispatch;
    (void)prctl(PR_SET_NAME, "kf-tls-worker", 0, 0, 0); /* for ps and top: not "exe" */
    if (pipe2(kw.stop, O_CLOEXEC) != 0)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    rc = kf_app_loop_new(&rd, &kw.set, kmip_channel_end, NULL, &kw.loop);
    if (rc < 0) {
        kf_error("TLS split worker %d: %s", (int)getpid(), kf_strerror(rc));
        return 1;
    }
    rc = kf_tlssplit_sandbox(kw.set.sandbox_flags);
    if (rc < 0) {
        kf_error("TLS split worker %d: cannot confine itself: %s", (int)getpid(), kf_strerror(rc));
        return 2;
    }
    if (kf_app_loop_run(kw.loop) < 0) {
        kf_error("TLS split worker %d: cannot start its event loop", (int)getpid());
        return 1;
    }
    kf_info("TLS split: KMIP worker process %d ready (record AEAD: %s)", (int)getpid(),
            kf_tlsrec_aead_in_use() == KF_TLSREC_AEAD_NETTLE ? "nettle" : "GnuTLS");
    rc = serve(dispatch, app, kmip_conn, &kw, kmip_refused);
    /* No more connections (retired, or keyfleetd stops): the open ones run to
     * their end; once keyfleetd's channel is gone they get 3 s. */
    for (int grace = 300; atomic_load(&live_conns) > 0 && grace > 0;) {
        if (peer_gone(app, 10))
            kmip_stop();
        if (!kf_app_loop_alive(kw.loop)) {
            usleep(10000);
            grace--;
        }
    }
    return rc < 0 ? 1 : 0;
}

int kf_tlssplit_worker_main(void)
{
    /* Exit without atexit handlers: they would run under the seccomp filter. */
    _exit(kmip_worker_run(3, 4, 5));
}

/* In the child before exec: dispatch, application channel and broker on fds 3,
 * 4 and 5; nothing else of keyfleetd's survives. */
static void exec_worker(const char *path, int dispatch, int app, int broker)
{
    int src[3] = {dispatch, app, broker}, hi[3];
    for (int i = 0; i < 3; i++)
        if ((hi[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 10)) < 0)
            _exit(127);
    for (int i = 0; i < 3; i++)
        if (dup2(hi[i], 3 + i) < 0) /* the copies on 3..5 stay open across exec */
            _exit(127);
    long maxfd = sysconf(_SC_OPEN_MAX);
    for (long fd = 6; fd < (maxfd > 0 && maxfd < 65536 ? maxfd : 65536); fd++)
        close((int)fd);
    char *const argv[] = {(char *)"keyfleetd-tls-worker", (char *)KF_TLSSPLIT_WORKER_ARG, NULL};
    execv(path, argv);
    _exit(127);
}

int kf_tlssplit_kmip_worker_start(const struct kf_app_worker_spawn *cfg,
                                  kf_tlssplit_worker **out, int *app_fd)
{
    KF_ENSURE(cfg && cfg->broker >= 0 && out && app_fd, KF_ERR_ARG);
    kf_tlssplit_worker *w = calloc(1, sizeof(*w));
    int dv[2] = {-1, -1}, av[2] = {-1, -1};
    KF_ENSURE(w, KF_ERR_NOMEM);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, dv) != 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, av) != 0)
        goto fail;
    w->pid = fork_worker();
    if (w->pid < 0)
        goto fail;
    if (w->pid == 0) {
        if (cfg->exec_path)
            exec_worker(cfg->exec_path, dv[1], av[1], cfg->broker);
        close(dv[0]);
        close(av[0]);
        _exit(kmip_worker_run(dv[1], av[1], cfg->broker));
    }
    close(dv[1]);
    close(av[1]);
    w->dispatch = dv[0];
    dispatch_track(w->dispatch);
    *app_fd = av[0];
    *out = w;
    return KF_OK;
fail:
    for (int i = 0; i < 2; i++) {
        if (dv[i] >= 0)
            close(dv[i]);
        if (av[i] >= 0)
            close(av[i]);
    }
    free(w);
    return KF_ERR_IO;
}

/* ---- the host's handle on a worker ----------------------------------------------------- */

int kf_tlssplit_worker_dispatch(kf_tlssplit_worker *w, int fd, const char *peer)
{
    uint8_t mem[128];
    kf_buf msg;
    struct kf_split_start st = {.role = KF_SPLIT_ROLE_SERVER};
    size_t pl = peer ? strnlen(peer, KF_SPLIT_PEER_MAX) : 0;
    memcpy(st.peer, peer ? peer : "", pl);
    kf_buf_fixed(&msg, mem, sizeof(mem));
    int rc = w->dispatch >= 0 ? kf_split_encode_accepted(&st, &msg) : KF_ERR_IO;
    if (rc == KF_OK)
        rc = kf_split_send(w->dispatch, &msg, &fd, 1);
    close(fd); /* the worker has its own copy (or the connection is refused) */
    return rc;
}

int kf_tlssplit_worker_pid(const kf_tlssplit_worker *w)
{
    return w ? (int)w->pid : -1;
}

void kf_tlssplit_worker_retire(kf_tlssplit_worker *w)
{
    if (w && w->dispatch >= 0) {
        dispatch_untrack(w->dispatch);
        close(w->dispatch);
        w->dispatch = -1;
    }
}

void kf_tlssplit_worker_stop(kf_tlssplit_worker *w)
{
    if (!w)
        return;
    kf_tlssplit_worker_retire(w);
    int status;
    for (int i = 0; i < 300; i++) {
        pid_t r = waitpid(w->pid, &status, WNOHANG);
        if (r == w->pid || (r < 0 && errno == ECHILD)) /* gone, or reaped by someone else */
            goto done;
        usleep(10000);
    }
    kill(w->pid, SIGKILL);
    waitpid(w->pid, &status, 0);
done:
    free(w);
}
