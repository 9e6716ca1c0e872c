/*
 * A worker process: forked before anything secret is loaded, confined
 * (sandbox.c), and fed accepted TCP sockets over its dispatch channel
 * (ACCEPTED messages, one descriptor each). For each it starts a thread that
 * hands the socket to the session handler (kf_tlssplit_accept), runs the
 * application on the connection and closes it. The process holds nothing but
 * traffic keys and the application's data; killing it ends its connections
 * and no others.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channel.h"
#include "keyfleet/log.h"
#include "tlssplit_internal.h"

struct kf_tlssplit_worker {
    pid_t pid;
    int dispatch;
};

struct worker_conn {
    const struct kf_tlssplit_worker_config *cfg;
    int fd;
    char peer[KF_SPLIT_PEER_MAX + 1];
};

static atomic_uint live_conns;

static void conn_thread(void *arg)
{
    struct worker_conn *wc = arg;
    kf_tlssplit_conn *c;
    int rc = kf_tlssplit_accept(wc->cfg->broker, wc->fd, wc->peer, wc->cfg->handshake_timeout_ms,
                                &c);
    if (rc == KF_OK) {
        wc->cfg->app(wc->cfg->arg, c);
        kf_tlssplit_close(c);
    }
    free(wc);
    atomic_fetch_sub(&live_conns, 1);
}

static int serve(const struct kf_tlssplit_worker_config *cfg, int dispatch)
{
    for (;;) {
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
            continue;
        }
        wc->cfg = cfg;
        wc->fd = fds[0];
        memcpy(wc->peer, st.peer, sizeof(wc->peer));
        atomic_fetch_add(&live_conns, 1);
        if (kf_tlssplit_pool_run(conn_thread, wc) < 0) {
            close(wc->fd);
            free(wc);
            atomic_fetch_sub(&live_conns, 1);
        }
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
    w->pid = fork();
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
        rc = serve(cfg, sv[1]);
        /* Let connections in flight finish before the process goes. */
        for (int i = 0; i < 3000 && atomic_load(&live_conns) > 0; i++)
            usleep(10000);
        _exit(rc < 0 ? 1 : 0);
    }
    close(sv[1]);
    w->dispatch = sv[0];
    *out = w;
    return KF_OK;
}

int kf_tlssplit_worker_dispatch(kf_tlssplit_worker *w, int fd, const char *peer)
{
    uint8_t mem[128];
    kf_buf msg;
    struct kf_split_start st = {.role = KF_SPLIT_ROLE_SERVER};
    size_t pl = peer ? strnlen(peer, KF_SPLIT_PEER_MAX) : 0;
    memcpy(st.peer, peer ? peer : "", pl);
    kf_buf_fixed(&msg, mem, sizeof(mem));
    int rc = kf_split_encode_accepted(&st, &msg);
    if (rc == KF_OK)
        rc = kf_split_send(w->dispatch, &msg, &fd, 1);
    close(fd); /* the worker has its own copy (or the connection is refused) */
    return rc;
}

int kf_tlssplit_worker_pid(const kf_tlssplit_worker *w)
{
    return w ? (int)w->pid : -1;
}

void kf_tlssplit_worker_stop(kf_tlssplit_worker *w)
{
    if (!w)
        return;
    close(w->dispatch);
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
