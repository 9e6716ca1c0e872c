/*
 * The local admin socket: one thread per connection (admin traffic is light),
 * capped. Only root and the daemon's own user may connect (SO_PEERCRED);
 * every request runs as the actor "local:uid=U,pid=P".
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "keyfleet/log.h"
#include "keyfleet/server.h"

struct conn {
    int fd;
    char actor[64];
    struct kf_principal who;
    const struct kf_local_server_config *cfg;
    atomic_uint *active;
};

static int peer_allowed(int fd, char *actor, size_t actor_len)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return KF_ERR_PEER;
    snprintf(actor, actor_len, "local:uid=%u,pid=%d", (unsigned)cred.uid, (int)cred.pid);
    if (cred.uid != 0 && cred.uid != geteuid())
        return KF_ERR_PEER;
    return KF_OK;
}

static void serve_connection(struct conn *c)
{
    kf_buf req = {0}, resp = {0};
    int idle = c->cfg->idle_timeout_ms ? c->cfg->idle_timeout_ms : 300000;
    int rest = c->cfg->message_timeout_ms ? c->cfg->message_timeout_ms : 10000;
    /* Requests and responses may carry key material: secure memory. */
    if (kf_buf_alloc(&req, 4096, KF_FRAME_MAX, KF_BUF_SECRET) < 0 ||
        kf_buf_alloc(&resp, 4096, KF_FRAME_MAX, KF_BUF_SECRET) < 0) {
        kf_error("admin connection %s: no secure memory for buffers", c->actor);
        goto out;
    }
    for (;;) {
        int eof = 0;
        int rc = kf_frame_read(c->fd, &req, KF_FRAME_MAX, idle, rest, &eof);
        if (rc < 0) {
            if (!eof)
                kf_info("admin connection %s closed: %s", c->actor, kf_strerror(rc));
            break;
        }
        kf_buf_reset(&resp);
        rc = kf_kms_handle_kmip(c->cfg->kms, &c->who, req.data, req.len, &resp);
        if (rc < 0 || kf_frame_write(c->fd, resp.data, resp.len) < 0) {
            kf_warn("admin connection %s: cannot answer: %s", c->actor, kf_strerror(rc));
            break;
        }
    }
out:
    kf_buf_free(&req);
    kf_buf_free(&resp);
}

static void *connection_thread(void *arg)
{
    struct conn *c = arg;
    serve_connection(c);
    close(c->fd);
    atomic_fetch_sub(c->active, 1);
    free(c);
    return NULL;
}

static int listen_on(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        kf_error("socket path too long: %s", path);
        return KF_ERR_LIMIT;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return KF_ERR_IO;
    unlink(path); /* a stale socket from a killed daemon */
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc != 0 || listen(fd, 64) != 0) {
        kf_error("cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return KF_ERR_IO;
    }
    return fd;
}

static void accept_one(int lfd, const struct kf_local_server_config *cfg, atomic_uint *active)
{
    unsigned max = cfg->max_connections ? cfg->max_connections : 64;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->cfg = cfg;
    c->active = active;
    if (peer_allowed(fd, c->actor, sizeof(c->actor)) < 0) {
        kf_warn("admin socket: refused %s (%s)", c->actor, kf_strerror(KF_ERR_PEER));
        close(fd);
        free(c);
        return;
    }
    kf_principal_local_admin(&c->who, c->actor);
    if (atomic_fetch_add(active, 1) >= max) {
        atomic_fetch_sub(active, 1);
        kf_warn("admin socket: refused %s, %u connections open", c->actor, max);
        close(fd);
        free(c);
        return;
    }
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, connection_thread, c) != 0) {
        atomic_fetch_sub(active, 1);
        close(fd);
        free(c);
    }
    pthread_attr_destroy(&attr);
}

int kf_local_server_run(const struct kf_local_server_config *cfg, volatile sig_atomic_t *stop)
{
    static atomic_uint active;
    int lfd = listen_on(cfg->socket_path);
    if (lfd < 0)
        return lfd;
    kf_info("listening on %s", cfg->socket_path);
    while (!*stop) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        int r = poll(&p, 1, 200);
        if (r > 0)
            accept_one(lfd, cfg, &active);
    }
    close(lfd);
    unlink(cfg->socket_path);
    /* Let running requests finish so their transactions commit before exit. */
    for (int i = 0; i < 100 && atomic_load(&active) > 0; i++)
        usleep(20000);
    return KF_OK;
}
