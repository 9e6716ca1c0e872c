/*
 * Worker processes (src/tlssplit/worker.c, sandbox.c): a forked handler and
 * forked, confined workers serving an echo application to GnuTLS clients.
 * Checked: data and KeyUpdate through a confined worker; the worker runs as
 * nobody (when the test is root), is not dumpable, has no new privileges and
 * a seccomp filter; a system call outside the allow list (socket, fork)
 * kills the worker with SIGSYS, opening a file fails with EACCES; a worker killed mid-connection takes
 * down its own connections only.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "keyfleet/log.h"
#include "keyfleet/tls.h"
#include "keyfleet/tlssplit.h"

struct fixture {
    char dir[64], certs[128];
    struct kf_tls_dev_files dev;
    kf_tlssplit_handler *h;
};

static void echo_app(void *arg, kf_tlssplit_conn *c)
{
    (void)arg;
    static __thread uint8_t buf[32768];
    for (;;) {
        size_t got;
        if (kf_tlssplit_recv(c, buf, sizeof(buf), 10000, &got) < 0 ||
            kf_tlssplit_send(c, buf, got, 10000) < 0)
            return;
    }
}

/* Echoes once, then does what a compromised worker might try. */
static void escape_app(void *arg, kf_tlssplit_conn *c)
{
    const char *what = arg;
    uint8_t buf[64];
    size_t got;
    if (kf_tlssplit_recv(c, buf, sizeof(buf), 10000, &got) < 0 ||
        kf_tlssplit_send(c, buf, got, 10000) < 0)
        return;
    if (strcmp(what, "open") == 0) {
        /* Opening fails (the process lives on): say how. */
        int fd = open("/etc/hostname", O_RDONLY);
        const char *say = fd < 0 && errno == EACCES ? "denied" : "opened";
        if (kf_tlssplit_send(c, (const uint8_t *)say, 6, 1000) < 0)
            return;
        return;
    } else if (strcmp(what, "socket") == 0)
        (void)socket(AF_INET, SOCK_STREAM, 0);
    else
        (void)syscall(SYS_fork);
    if (kf_tlssplit_send(c, (const uint8_t *)"escaped", 7, 1000) < 0)
        return;
}

static unsigned sandbox_flags(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return 0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return 0;
#endif
#endif
    return getenv("KF_TEST_SANDBOX_FLAGS") ? (unsigned)atoi(getenv("KF_TEST_SANDBOX_FLAGS")) : 0;
}

static kf_tlssplit_worker *start_worker(struct fixture *f, kf_tlssplit_app_fn app, void *arg)
{
    struct kf_tlssplit_worker_config cfg = {.broker = kf_tlssplit_handler_broker(f->h),
                                            .app = app,
                                            .arg = arg,
                                            .handshake_timeout_ms = 3000,
                                            .sandbox_flags = sandbox_flags()};
    kf_tlssplit_worker *w;
    assert_int_equal(kf_tlssplit_worker_start(&cfg, &w), KF_OK);
    return w;
}

struct client {
    gnutls_session_t s;
    gnutls_certificate_credentials_t cred;
    int fd;
};

static void connect_via(struct fixture *f, kf_tlssplit_worker *w, struct client *cl)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(kf_tlssplit_worker_dispatch(w, sv[0], "test"), KF_OK);
    cl->fd = sv[1];
    assert_int_equal(gnutls_certificate_allocate_credentials(&cl->cred), 0);
    assert_true(gnutls_certificate_set_x509_trust_file(cl->cred, f->dev.ca_cert,
                                                       GNUTLS_X509_FMT_PEM) > 0);
    assert_int_equal(gnutls_certificate_set_x509_key_file(cl->cred, f->dev.admin_cert,
                                                          f->dev.admin_key, GNUTLS_X509_FMT_PEM),
                     0);
    assert_int_equal(gnutls_init(&cl->s, GNUTLS_CLIENT), 0);
    assert_int_equal(gnutls_set_default_priority(cl->s), 0);
    assert_int_equal(gnutls_credentials_set(cl->s, GNUTLS_CRD_CERTIFICATE, cl->cred), 0);
    gnutls_session_set_verify_cert(cl->s, "localhost", 0);
    gnutls_transport_set_int(cl->s, cl->fd);
    gnutls_handshake_set_timeout(cl->s, 5000);
    int rc;
    do
        rc = gnutls_handshake(cl->s);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    assert_int_equal(rc, 0);
}

static void client_close(struct client *cl)
{
    gnutls_deinit(cl->s);
    gnutls_certificate_free_credentials(cl->cred);
    close(cl->fd);
}

static void echo(struct client *cl, size_t n)
{
    uint8_t *out = malloc(n), *in = malloc(n);
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(i * 7 + 3);
    size_t sent = 0, got = 0;
    while (got < n) {
        if (sent < n) {
            size_t k = n - sent < 16384 ? n - sent : 16384;
            ssize_t w = gnutls_record_send(cl->s, out + sent, k);
            assert_true(w > 0);
            sent += (size_t)w;
        }
        ssize_t r;
        do /* GnuTLS says AGAIN after it handled a NewSessionTicket */
            r = gnutls_record_recv(cl->s, in + got, n - got);
        while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
        if (r <= 0)
            fprintf(stderr, "client recv: %s\n", gnutls_strerror((int)r));
        assert_true(r > 0);
        got += (size_t)r;
    }
    assert_memory_equal(in, out, n);
    free(out);
    free(in);
}

/* "Uid:\t<real>\t<effective>..." and friends from /proc/<pid>/status. */
static long status_field(int pid, const char *name)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    long v = -1;
    while (fgets(line, sizeof(line), fp))
        if (strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ':')
            v = strtol(line + strlen(name) + 1, NULL, 10);
    fclose(fp);
    return v;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/kf-test-tlsw.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->certs, sizeof(f->certs), "%s/certs", f->dir);
    if (kf_tls_dev_certs(f->certs, &f->dev) < 0)
        return -1;
    struct kf_tlssplit_handler_config cfg = {.ca_file = f->dev.ca_cert,
                                             .cert_file = f->dev.server_cert,
                                             .key_file = f->dev.server_key,
                                             .identities_file = f->dev.identities};
    if (kf_tlssplit_handler_start(&cfg, &f->h) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kf_tlssplit_handler_stop(f->h);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void test_confined_worker_serves(void **state)
{
    struct fixture *f = *state;
    kf_tlssplit_worker *w = start_worker(f, echo_app, NULL);
    struct client cl;
    connect_via(f, w, &cl);
    echo(&cl, 100000);
    assert_int_equal(gnutls_session_key_update(cl.s, GNUTLS_KU_PEER), 0);
    echo(&cl, 100000);
    int pid = kf_tlssplit_worker_pid(w);
    assert_int_equal(status_field(pid, "Seccomp"), sandbox_flags() ? 0 : 2); /* filter mode */
    assert_int_equal(status_field(pid, "NoNewPrivs"), 1);
    if (geteuid() == 0) {
        assert_int_equal(status_field(pid, "Uid"), 65534); /* nobody */
        assert_int_equal(status_field(pid, "Gid"), 65534);
        /* Not dumpable: its /proc files belong to root although it runs as nobody. */
        char path[64];
        struct stat sb;
        snprintf(path, sizeof(path), "/proc/%d/mem", pid);
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_uid, 0);
    }
    assert_int_equal(gnutls_bye(cl.s, GNUTLS_SHUT_WR), 0);
    client_close(&cl);
    kf_tlssplit_worker_stop(w);
}

static void escape(struct fixture *f, const char *what)
{
    kf_tlssplit_worker *w = start_worker(f, escape_app, (void *)what);
    struct client cl;
    connect_via(f, w, &cl);
    echo(&cl, 10);
    uint8_t b[16];
    /* The worker dies at the forbidden call: the client sees the end, not "escaped". */
    assert_true(gnutls_record_recv(cl.s, b, sizeof(b)) <= 0);
    int status;
    assert_int_equal(waitpid(kf_tlssplit_worker_pid(w), &status, 0), kf_tlssplit_worker_pid(w));
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSYS);
    client_close(&cl);
    kf_tlssplit_worker_stop(w);
}

static void test_seccomp_kills(void **state)
{
    if (sandbox_flags() & KF_TLSSPLIT_SANDBOX_NO_FILTER)
        skip();
    escape(*state, "socket");
    escape(*state, "fork");
}

/* Files cannot be opened: the call fails, the worker goes on. */
static void test_seccomp_denies_open(void **state)
{
    struct fixture *f = *state;
    if (sandbox_flags() & KF_TLSSPLIT_SANDBOX_NO_FILTER)
        skip();
    kf_tlssplit_worker *w = start_worker(f, escape_app, (void *)"open");
    struct client cl;
    connect_via(f, w, &cl);
    echo(&cl, 10);
    uint8_t b[16];
    ssize_t r;
    do
        r = gnutls_record_recv(cl.s, b, sizeof(b));
    while (r == GNUTLS_E_AGAIN);
    assert_int_equal(r, 6);
    assert_memory_equal(b, "denied", 6);
    client_close(&cl);
    kf_tlssplit_worker_stop(w);
}

/* Killing one worker ends its connections; another worker's go on. */
static void test_worker_kill_is_local(void **state)
{
    struct fixture *f = *state;
    kf_tlssplit_worker *w1 = start_worker(f, echo_app, NULL), *w2 = start_worker(f, echo_app, NULL);
    struct client a, b;
    connect_via(f, w1, &a);
    connect_via(f, w2, &b);
    echo(&a, 1000);
    echo(&b, 1000);
    assert_int_equal(kill(kf_tlssplit_worker_pid(w1), SIGKILL), 0);
    uint8_t buf[16];
    assert_true(gnutls_record_recv(a.s, buf, sizeof(buf)) <= 0);
    echo(&b, 500000);
    assert_int_equal(gnutls_session_key_update(b.s, GNUTLS_KU_PEER), 0);
    echo(&b, 1000);
    client_close(&a);
    client_close(&b);
    kf_tlssplit_worker_stop(w1);
    kf_tlssplit_worker_stop(w2);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    kf_log_open(NULL, KF_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_confined_worker_serves),
        cmocka_unit_test(test_seccomp_kills),
        cmocka_unit_test(test_seccomp_denies_open),
        cmocka_unit_test(test_worker_kill_is_local),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
