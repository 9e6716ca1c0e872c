/*
 * Starting and stopping the session handler process.
 *
 * Exec mode (keyfleetd): fork, then exec the daemon's own binary with
 * --tls-session-handler; the handler starts from a fresh address space, so
 * nothing of the host (the key store, its unsealed keys) is in it, and reads
 * its configuration, PIN included, as one CONFIG message from fd 3 -- never
 * from argv or the environment (which it inherits, for PKCS#11 modules). Fork mode (tests): the child runs the
 * handler directly. A client handler (CONFIG flag CLIENT) starts the same way:
 * the program that execs itself (the CLI) calls kf_tlssplit_handler_main() when
 * KF_TLSSPLIT_HANDLER_ARG is its only argument.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channel.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "tlssplit_internal.h"

#define HANDLER_FD 3
#define HANDLER_PEERS_FD 4 /* CONFIG flag CONN_IDS */
/* Loading credentials (a PKCS#11 token may be slow) and confining itself. */
#define HANDLER_READY_MS 30000

struct kf_tlssplit_handler {
    pid_t pid;
    int broker;
    int peers; /* the host's end of the peers channel until taken (conn_ids), else -1 */
    bool client; /* runs client handshakes (kf_tlssplit_client_handler_start) */
};

static int copy_str(char *dst, size_t cap, const char *src)
{
    if (!src) {
        dst[0] = 0;
        return KF_OK;
    }
    size_t n = strlen(src);
    KF_ENSURE(n < cap, KF_ERR_ARG);
    memcpy(dst, src, n + 1);
    return KF_OK;
}

static int make_config(const struct kf_tlssplit_handler_config *cfg, struct kf_split_config *c)
{
    memset(c, 0, sizeof(*c));
    KF_ENSURE(cfg->ca_file && cfg->cert_file && cfg->key_file && cfg->identities_file, KF_ERR_ARG);
    KF_GUARD(copy_str(c->ca_file, sizeof(c->ca_file), cfg->ca_file));
    KF_GUARD(copy_str(c->cert_file, sizeof(c->cert_file), cfg->cert_file));
    KF_GUARD(copy_str(c->key_file, sizeof(c->key_file), cfg->key_file));
    KF_GUARD(copy_str(c->pkcs11_module, sizeof(c->pkcs11_module), cfg->pkcs11_module));
    KF_GUARD(copy_str(c->key_pin, sizeof(c->key_pin), cfg->key_pin));
    KF_GUARD(copy_str(c->identities_file, sizeof(c->identities_file), cfg->identities_file));
    KF_GUARD(copy_str(c->priority, sizeof(c->priority), cfg->priority));
    KF_GUARD(copy_str(c->log_file, sizeof(c->log_file), cfg->log_file));
    c->handshake_timeout_ms = cfg->handshake_timeout_ms > 0 ? (uint32_t)cfg->handshake_timeout_ms : 0;
    c->log_level = (uint8_t)(cfg->log_level >= KF_LOG_DEBUG && cfg->log_level <= KF_LOG_ERROR
                                 ? cfg->log_level
                                 : KF_LOG_INFO);
    c->flags = (uint8_t)((cfg->test_reveal_secrets ? KF_SPLIT_CONFIG_TEST_REVEAL : 0) |
                         (cfg->conn_ids ? KF_SPLIT_CONFIG_CONN_IDS : 0));
    return KF_OK;
}

/* In the child before exec: only stdin/out/err, the broker (and the peers channel) survive. */
static void exec_handler(const char *path, int broker, int peers)
{
    /* Out of the way first, so that neither dup2 overwrites the other. */
    int b = fcntl(broker, F_DUPFD, HANDLER_PEERS_FD + 1);
    int p = peers >= 0 ? fcntl(peers, F_DUPFD, HANDLER_PEERS_FD + 1) : -1;
    if (b < 0 || (peers >= 0 && p < 0) || dup2(b, HANDLER_FD) < 0 ||
        (p >= 0 && dup2(p, HANDLER_PEERS_FD) < 0))
        _exit(127);
    int last = p >= 0 ? HANDLER_PEERS_FD : HANDLER_FD;
    long maxfd = sysconf(_SC_OPEN_MAX);
    for (long fd = last + 1; fd < (maxfd > 0 && maxfd < 65536 ? maxfd : 65536); fd++)
        close((int)fd);
    char *const argv[] = {(char *)"keyfleetd-tls-handler", (char *)KF_TLSSPLIT_HANDLER_ARG, NULL};
    /* The environment goes along (PKCS#11 modules read theirs, e.g. SOFTHSM2_CONF);
     * the configuration and the PIN do not travel this way. */
    execv(path, argv);
    _exit(127);
}

/* Fork the handler (and exec exec_path, or serve in the child); in exec mode
 * the configuration follows as CONFIG on the broker channel. */
static int spawn(const struct kf_split_config *conf, const char *exec_path,
                 kf_tlssplit_handler **out)
{
    kf_tlssplit_handler *h = calloc(1, sizeof(*h));
    int sv[2] = {-1, -1}, pv[2] = {-1, -1};
    KF_ENSURE(h, KF_ERR_NOMEM);
    h->broker = h->peers = h->pid = -1;
    h->client = (conf->flags & KF_SPLIT_CONFIG_CLIENT) != 0;
    int rc = KF_OK;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        rc = KF_ERR_IO;
    if (rc == KF_OK && (conf->flags & KF_SPLIT_CONFIG_CONN_IDS) &&
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pv) != 0)
        rc = KF_ERR_IO;
    if (rc == KF_OK) {
        h->pid = fork();
        if (h->pid < 0)
            rc = KF_ERR_IO;
    }
    if (rc == KF_OK && h->pid == 0) {
        close(sv[0]);
        if (pv[0] >= 0)
            close(pv[0]);
        if (exec_path)
            exec_handler(exec_path, sv[1], pv[1]);
        _exit(kf_tlssplit_handler_serve(sv[1], pv[1], conf) < 0 ? 1 : 0);
    }
    if (sv[1] >= 0)
        close(sv[1]);
    if (pv[1] >= 0)
        close(pv[1]);
    h->broker = sv[0];
    h->peers = pv[0];
    if (rc == KF_OK && exec_path) {
        kf_buf msg;
        rc = kf_buf_alloc(&msg, 4096, KF_SPLIT_BROKER_MAX, KF_BUF_SECRET);
        if (rc == KF_OK) {
            rc = kf_split_encode_config(conf, &msg);
            if (rc == KF_OK && kf_split_send(h->broker, &msg, NULL, 0) < 0)
                rc = KF_ERR_SPLIT_HANDLER;
            kf_buf_free(&msg);
        }
    }
    if (rc == KF_OK) {
        /* Serve only with a handler that loaded its credentials and confined
         * itself: a bad key, certificate or identity map ends it with its reason
         * in the log, and the caller hears so now instead of at every handshake. */
        uint8_t buf[KF_SPLIT_FRAME_LEN], type;
        kf_buf body;
        bool eof;
        rc = kf_split_recv(h->broker, buf, sizeof(buf), KF_SPLIT_ALLOW(KF_SPLIT_READY),
                           HANDLER_READY_MS, &type, &body, NULL, &eof);
        if (rc == KF_OK)
            rc = kf_split_decode_ready(&body);
        if (rc < 0) {
            kf_error("TLS split: the session handler did not start (%s): its reason is logged "
                     "above",
                     eof ? "it ended" : kf_strerror(rc));
            rc = KF_ERR_SPLIT_HANDLER;
        }
    }
    if (rc < 0) {
        kf_tlssplit_handler_stop(h);
        return rc;
    }
    *out = h;
    return KF_OK;
}

int kf_tlssplit_handler_start(const struct kf_tlssplit_handler_config *cfg,
                              kf_tlssplit_handler **out)
{
    KF_ENSURE(cfg && out, KF_ERR_ARG);
    struct kf_split_config *conf = calloc(1, sizeof(*conf));
    KF_ENSURE(conf, KF_ERR_NOMEM);
    int rc = make_config(cfg, conf);
    if (rc == KF_OK)
        rc = spawn(conf, cfg->exec_path, out);
    kf_wipe(conf, sizeof(*conf));
    free(conf);
    return rc;
}

static int make_client_config(const struct kf_tlssplit_client_config *cfg,
                              struct kf_split_config *c)
{
    memset(c, 0, sizeof(*c));
    KF_ENSURE(cfg->ca_file && !cfg->cert_file == !cfg->key_file, KF_ERR_ARG);
    KF_GUARD(copy_str(c->ca_file, sizeof(c->ca_file), cfg->ca_file));
    KF_GUARD(copy_str(c->cert_file, sizeof(c->cert_file), cfg->cert_file));
    KF_GUARD(copy_str(c->key_file, sizeof(c->key_file), cfg->key_file));
    KF_GUARD(copy_str(c->pkcs11_module, sizeof(c->pkcs11_module), cfg->pkcs11_module));
    KF_GUARD(copy_str(c->key_pin, sizeof(c->key_pin), cfg->key_pin));
    KF_GUARD(copy_str(c->priority, sizeof(c->priority), cfg->priority));
    KF_GUARD(copy_str(c->log_file, sizeof(c->log_file), cfg->log_file));
    KF_ENSURE(!c->cert_file[0] == !c->key_file[0], KF_ERR_ARG); /* "" counts as none */
    c->handshake_timeout_ms = cfg->timeout_ms > 0 ? (uint32_t)cfg->timeout_ms : 60000;
    c->log_level = cfg->verbose ? KF_LOG_INFO : KF_LOG_WARN;
    c->flags = KF_SPLIT_CONFIG_CLIENT | (cfg->test_reveal_secrets ? KF_SPLIT_CONFIG_TEST_REVEAL : 0);
    return KF_OK;
}

int kf_tlssplit_client_handler_start(const struct kf_tlssplit_client_config *cfg,
                                     kf_tlssplit_handler **out)
{
    KF_ENSURE(cfg && out, KF_ERR_ARG);
    struct kf_split_config *conf = calloc(1, sizeof(*conf));
    KF_ENSURE(conf, KF_ERR_NOMEM);
    int rc = make_client_config(cfg, conf);
    if (rc == KF_OK)
        rc = spawn(conf, cfg->exec_path, out);
    kf_wipe(conf, sizeof(*conf));
    free(conf);
    return rc;
}

bool kf_tlssplit_handler_is_client(const kf_tlssplit_handler *h)
{
    return h && h->client;
}

int kf_tlssplit_handler_broker(const kf_tlssplit_handler *h)
{
    return h ? h->broker : -1;
}

int kf_tlssplit_handler_take_peers(kf_tlssplit_handler *h)
{
    if (!h)
        return -1;
    int fd = h->peers;
    h->peers = -1;
    return fd;
}

int kf_tlssplit_handler_pid(const kf_tlssplit_handler *h)
{
    return h ? (int)h->pid : -1;
}

bool kf_tlssplit_handler_alive(kf_tlssplit_handler *h)
{
    if (!h || h->pid <= 0)
        return false;
    int status;
    pid_t r = waitpid(h->pid, &status, WNOHANG);
    if (r == h->pid) {
        h->pid = -1;
        return false;
    }
    return r == 0;
}

void kf_tlssplit_handler_stop(kf_tlssplit_handler *h)
{
    if (!h)
        return;
    if (h->broker >= 0)
        close(h->broker); /* the handler sees the end of the broker channel and exits */
    if (h->peers >= 0)
        close(h->peers);
    if (h->pid > 0) {
        int status;
        for (int i = 0; i < 200; i++) {
            pid_t r = waitpid(h->pid, &status, WNOHANG);
            if (r == h->pid || (r < 0 && errno == ECHILD))
                goto done;
            usleep(10000);
        }
        kill(h->pid, SIGKILL);
        waitpid(h->pid, &status, 0);
    }
done:
    free(h);
}

int kf_tlssplit_handler_main(void)
{
    static struct kf_split_config conf; /* lives as long as the process: the PIN callback reads it */
    static uint8_t buf[KF_SPLIT_BROKER_MAX];
    uint8_t type;
    kf_buf body;
    bool eof;
    int rc = kf_split_recv(HANDLER_FD, buf, sizeof(buf), KF_SPLIT_ALLOW(KF_SPLIT_CONFIG), 30000,
                           &type, &body, NULL, &eof);
    if (rc == KF_OK)
        rc = kf_split_decode_config(&body, &conf);
    kf_wipe(buf, sizeof(buf));
    if (rc < 0) {
        fprintf(stderr, "keyfleetd TLS session handler: no usable configuration: %s\n",
                kf_strerror(rc));
        return 1;
    }
    if (kf_log_open(conf.log_file[0] ? conf.log_file : NULL, (enum kf_log_level)conf.log_level) != 0)
        return 1;
    rc = kf_tlssplit_handler_serve(
        HANDLER_FD, (conf.flags & KF_SPLIT_CONFIG_CONN_IDS) ? HANDLER_PEERS_FD : -1, &conf);
    if (rc < 0)
        kf_error("TLS split: session handler stops: %s", kf_strerror(rc));
    /* Without atexit handlers (and a sanitizer's exit-time leak check): they
     * would run under the handler's seccomp filter. The log is unbuffered. */
    _exit(rc < 0 ? 1 : 0);
}
