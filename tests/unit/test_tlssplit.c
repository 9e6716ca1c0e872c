/*
 * The split endpoint end to end, in process: a session handler (forked) with
 * the dev certificates, the worker side (kf_tlssplit_*) in a thread, and a
 * GnuTLS client with the dev "admin" certificate on the other end of a
 * stream socketpair. Checked: TLS 1.3 and 1.2 handshakes and echoed data of
 * every record size; the identity reaches the worker; KeyUpdate from the
 * peer (with and without update_requested) and from the worker; resumption
 * with tickets in both versions; close_notify both ways; refusals (no client
 * certificate, foreign CA, a record with a bad tag -> bad_record_mac); a
 * session handler that dies leaves established bulk traffic running and
 * ends the connection at its next non-application record. The non-blocking
 * calls an event loop uses (kf_tlssplit_recv_nb/_send_nb): the same echoes,
 * KeyUpdates, close and bad tag, each record that needs the handler stopping
 * them (KF_TLSSPLIT_BLOCKS) so that the blocking call does it from there; a
 * peer that does not read makes send_nb stop (KF_TLSSPLIT_AGAIN) with the
 * rest finished by the blocking send, byte-exact.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "keyfleet/log.h"
#include "keyfleet/tls.h"
#include "keyfleet/tlssplit.h"
#include "tlssplit/tlssplit_internal.h"

struct fixture {
    char dir[64], certs[128], foreign[128];
    struct kf_tls_dev_files dev, other;
    kf_tlssplit_handler *h;
};

/* What the worker thread does with its connection. */
enum worker_mode { ECHO, ECHO_THEN_KEY_UPDATE, ECHO_THEN_CLOSE, ECHO_NB, BLAST_NB };
#define BLAST_LEN (4u << 20) /* far more than a socket buffer */

struct worker {
    struct fixture *f;
    int fd;
    enum worker_mode mode;
    pthread_t thread;
    /* results */
    int accept_rc, end_rc, end_reason;
    char who[256];
    uint16_t version;
    bool resumed;
    uint64_t handovers, echoed;
    uint64_t nb_again, nb_blocks, nb_send_again; /* the non-blocking modes */
};

/* Receive as an event loop does: never wait inside the call; a record for the
 * handler (KF_TLSSPLIT_BLOCKS) is left to the blocking call. */
static int nb_recv(struct worker *w, kf_tlssplit_conn *c, uint8_t *buf, size_t n, size_t *got)
{
    for (;;) {
        int rc = kf_tlssplit_recv_nb(c, buf, n, got);
        if (rc == KF_TLSSPLIT_AGAIN) {
            w->nb_again++;
            struct pollfd p = {.fd = kf_tlssplit_fd(c), .events = POLLIN};
            if (poll(&p, 1, 10000) != 1)
                return KF_ERR_TIMEOUT;
            continue;
        }
        if (rc == KF_TLSSPLIT_BLOCKS) {
            w->nb_blocks++;
            assert_true(kf_tlssplit_pending(c)); /* the record is still there */
            return kf_tlssplit_recv(c, buf, n, 10000, got);
        }
        return rc;
    }
}

static int nb_send(struct worker *w, kf_tlssplit_conn *c, const uint8_t *p, size_t n)
{
    size_t done = 0;
    int rc = kf_tlssplit_send_nb(c, p, n, &done);
    if (rc == KF_TLSSPLIT_AGAIN || rc == KF_TLSSPLIT_BLOCKS) {
        w->nb_send_again++;
        assert_true(done <= n);
        return kf_tlssplit_send(c, p + done, n - done, 10000);
    }
    if (rc == KF_OK)
        assert_int_equal(done, n);
    return rc;
}

static void fill(uint8_t *p, size_t n, unsigned seed);

static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    kf_tlssplit_conn *c;
    static __thread uint8_t buf[65536];
    w->accept_rc = kf_tlssplit_accept(kf_tlssplit_handler_broker(w->f->h), w->fd, "test", 5000, &c);
    if (w->accept_rc < 0)
        return NULL;
    snprintf(w->who, sizeof(w->who), "%s", kf_tlssplit_peer(c)->name);
    w->version = kf_tlssplit_version(c);
    w->resumed = kf_tlssplit_resumed(c);
    bool updated = false;
    bool nb = w->mode == ECHO_NB || w->mode == BLAST_NB;
    for (;;) {
        size_t got;
        int rc = nb ? nb_recv(w, c, buf, sizeof(buf), &got)
                    : kf_tlssplit_recv(c, buf, sizeof(buf), 10000, &got);
        if (rc < 0) {
            w->end_rc = rc;
            break;
        }
        if (w->mode == BLAST_NB) { /* one byte asks for BLAST_LEN */
            uint8_t *blast = malloc(BLAST_LEN);
            assert_non_null(blast);
            fill(blast, BLAST_LEN, buf[0]);
            rc = nb_send(w, c, blast, BLAST_LEN);
            free(blast);
            if (rc < 0)
                break;
            continue;
        }
        if ((nb ? nb_send(w, c, buf, got) : kf_tlssplit_send(c, buf, got, 10000)) < 0)
            break;
        w->echoed += got;
        if (w->mode == ECHO_THEN_KEY_UPDATE && !updated) {
            updated = true;
            if (kf_tlssplit_key_update(c, true) < 0)
                break;
        }
        if (w->mode == ECHO_THEN_CLOSE)
            break;
    }
    w->handovers = kf_tlssplit_handovers(c);
    w->end_reason = kf_tlssplit_end_reason(c);
    kf_tlssplit_close(c);
    return NULL;
}

struct client {
    gnutls_session_t s;
    gnutls_certificate_credentials_t cred;
    int fd;
    int handshake_rc;
};

/* socketpair: [0] to the worker (as if accepted), [1] to the client. */
static void start_worker(struct fixture *f, struct worker *w, enum worker_mode mode, int *client_fd)
{
    int sv[2];
    memset(w, 0, sizeof(*w));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    w->f = f;
    w->fd = sv[0];
    w->mode = mode;
    *client_fd = sv[1];
    assert_int_equal(pthread_create(&w->thread, NULL, worker_thread, w), 0);
}

static int client_open(struct client *cl, int fd, const char *prio, const char *ca,
                       const char *cert, const char *key, const gnutls_datum_t *resume)
{
    memset(cl, 0, sizeof(*cl));
    cl->fd = fd;
    assert_int_equal(gnutls_certificate_allocate_credentials(&cl->cred), 0);
    assert_true(gnutls_certificate_set_x509_trust_file(cl->cred, ca, GNUTLS_X509_FMT_PEM) > 0);
    if (cert)
        assert_int_equal(gnutls_certificate_set_x509_key_file(cl->cred, cert, key,
                                                              GNUTLS_X509_FMT_PEM),
                         0);
    assert_int_equal(gnutls_init(&cl->s, GNUTLS_CLIENT), 0);
    assert_int_equal(gnutls_priority_set_direct(cl->s, prio, NULL), 0);
    assert_int_equal(gnutls_credentials_set(cl->s, GNUTLS_CRD_CERTIFICATE, cl->cred), 0);
    gnutls_session_set_verify_cert(cl->s, "localhost", 0);
    if (resume)
        assert_int_equal(gnutls_session_set_data(cl->s, resume->data, resume->size), 0);
    gnutls_transport_set_int(cl->s, fd);
    gnutls_handshake_set_timeout(cl->s, 5000);
    int rc;
    do
        rc = gnutls_handshake(cl->s);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    cl->handshake_rc = rc;
    return rc;
}

static void client_close(struct client *cl)
{
    gnutls_deinit(cl->s);
    gnutls_certificate_free_credentials(cl->cred);
    close(cl->fd);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 131 + seed * 17 + (i >> 9));
}

/* Send n bytes, read them back, compare. */
static void echo(struct client *cl, size_t n, unsigned seed)
{
    uint8_t *out = malloc(n), *in = malloc(n);
    assert_non_null(out);
    assert_non_null(in);
    fill(out, n, seed);
    size_t sent = 0, got = 0;
    /* Interleave so neither side's socket buffer fills up. */
    while (got < n) {
        if (sent < n) {
            size_t k = n - sent < 16384 ? n - sent : 16384;
            ssize_t w = gnutls_record_send(cl->s, out + sent, k);
            assert_true(w > 0);
            sent += (size_t)w;
        }
        ssize_t r;
        do
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

#define PRIO13 "NORMAL:-VERS-ALL:+VERS-TLS1.3"
#define PRIO12 "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"

/* ---- fixture ----------------------------------------------------------------- */

static int start_handler(struct fixture *f)
{
    struct kf_tlssplit_handler_config cfg = {.ca_file = f->dev.ca_cert,
                                             .cert_file = f->dev.server_cert,
                                             .key_file = f->dev.server_key,
                                             .identities_file = f->dev.identities,
                                             .handshake_timeout_ms = 3000};
    return kf_tlssplit_handler_start(&cfg, &f->h);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/kf-test-tlssplit.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->certs, sizeof(f->certs), "%s/certs", f->dir);
    snprintf(f->foreign, sizeof(f->foreign), "%s/foreign", f->dir);
    if (kf_tls_dev_certs(f->certs, &f->dev) < 0 || kf_tls_dev_certs(f->foreign, &f->other) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static int handler_up(void **state)
{
    return start_handler(*state);
}

static int handler_down(void **state)
{
    struct fixture *f = *state;
    kf_tlssplit_handler_stop(f->h);
    f->h = NULL;
    return 0;
}

/* A worker in mode and a client (cl, its socket *fd) that completed the
 * handshake through it as admin with prio, resuming ticket if not NULL. */
static void admin_session(struct fixture *f, struct worker *w, enum worker_mode mode,
                          const char *prio, const gnutls_datum_t *ticket, struct client *cl,
                          int *fd)
{
    start_worker(f, w, mode, fd);
    assert_int_equal(
        client_open(cl, *fd, prio, f->dev.ca_cert, f->dev.admin_cert, f->dev.admin_key, ticket), 0);
}

/* ---- tests ------------------------------------------------------------------- */

static void handshake_and_echo_as(struct fixture *f, const char *prio, uint16_t version,
                                  enum worker_mode mode)
{
    static const size_t sizes[] = {1, 2, 100, 4096, 16383, 16384, 16385, 65536, 300000};
    struct worker w;
    struct client cl;
    int fd;
    admin_session(f, &w, mode, prio, NULL, &cl, &fd);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        echo(&cl, sizes[i], (unsigned)i);
    assert_int_equal(gnutls_bye(cl.s, GNUTLS_SHUT_WR), 0);
    /* The handler answers our close_notify with its own. */
    uint8_t b[16];
    assert_int_equal(gnutls_record_recv(cl.s, b, sizeof(b)), 0);
    pthread_join(w.thread, NULL);
    assert_int_equal(w.accept_rc, KF_OK);
    assert_non_null(strstr(w.who, "CN=admin"));
    assert_int_equal(w.version, version);
    assert_false(w.resumed);
    assert_int_equal(w.end_rc, KF_ERR_IO);
    assert_int_equal(w.end_reason, KF_OK); /* a clean close */
    assert_int_equal(w.handovers, 1);     /* the close_notify, nothing else */
    if (mode == ECHO_NB) {
        assert_true(w.nb_again > 0);        /* it waited outside the calls */
        assert_int_equal(w.nb_blocks, 1);   /* the close_notify went to the blocking call */
    }
    client_close(&cl);
}

static void handshake_and_echo(struct fixture *f, const char *prio, uint16_t version)
{
    handshake_and_echo_as(f, prio, version, ECHO);
}

static void test_tls13_echo(void **state)
{
    handshake_and_echo(*state, PRIO13, KF_TLSREC_TLS13);
}

static void test_tls12_echo(void **state)
{
    handshake_and_echo(*state, PRIO12, KF_TLSREC_TLS12);
}

static void test_tls13_chacha_echo(void **state)
{
    handshake_and_echo(*state, "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305",
                       KF_TLSREC_TLS13);
}

/* The peer updates its keys, asking for ours too; then without asking. */
static void peer_key_update(struct fixture *f, enum worker_mode mode)
{
    struct worker w;
    struct client cl;
    int fd;
    admin_session(f, &w, mode, PRIO13, NULL, &cl, &fd);
    echo(&cl, 1000, 1);
    unsigned char before[8], after[8];
    gnutls_datum_t k1, k2;
    assert_int_equal(gnutls_record_get_state(cl.s, 1, NULL, NULL, &k1, before), 0);
    uint8_t rk1[32];
    memcpy(rk1, k1.data, k1.size);
    assert_int_equal(gnutls_session_key_update(cl.s, GNUTLS_KU_PEER), 0);
    echo(&cl, 50000, 2);
    /* Our read key changed: the server updated its keys because we asked. */
    assert_int_equal(gnutls_record_get_state(cl.s, 1, NULL, NULL, &k2, after), 0);
    assert_memory_not_equal(rk1, k2.data, k2.size);
    assert_int_equal(gnutls_session_key_update(cl.s, 0), 0);
    echo(&cl, 50000, 3);
    assert_int_equal(gnutls_session_key_update(cl.s, GNUTLS_KU_PEER), 0);
    assert_int_equal(gnutls_session_key_update(cl.s, 0), 0);
    echo(&cl, 20000, 4);
    assert_int_equal(gnutls_bye(cl.s, GNUTLS_SHUT_WR), 0);
    pthread_join(w.thread, NULL);
    assert_int_equal(w.accept_rc, KF_OK);
    assert_int_equal(w.end_reason, KF_OK);
    assert_int_equal(w.handovers, 5); /* four KeyUpdates, one close_notify */
    if (mode == ECHO_NB) {
        /* each left to the blocking call, which may take the next one too (the
         * two updates sent back to back) */
        assert_true(w.nb_blocks >= 3);
        assert_true(w.nb_blocks <= w.handovers);
    }
    client_close(&cl);
}

static void test_peer_key_update(void **state)
{
    peer_key_update(*state, ECHO);
}

/* The worker asks for new keys (ours and the peer's). */
static void test_worker_key_update(void **state)
{
    struct fixture *f = *state;
    struct worker w;
    struct client cl;
    int fd;
    admin_session(f, &w, ECHO_THEN_KEY_UPDATE, PRIO13, NULL, &cl, &fd);
    unsigned char seq[8];
    gnutls_datum_t k1, k2, w1, w2;
    uint8_t rk1[32], wk1[32];
    assert_int_equal(gnutls_record_get_state(cl.s, 1, NULL, NULL, &k1, seq), 0);
    assert_int_equal(gnutls_record_get_state(cl.s, 0, NULL, NULL, &w1, seq), 0);
    memcpy(rk1, k1.data, k1.size);
    memcpy(wk1, w1.data, w1.size);
    echo(&cl, 100, 1); /* after this echo the worker updates and asks us to */
    echo(&cl, 30000, 2);
    assert_int_equal(gnutls_record_get_state(cl.s, 1, NULL, NULL, &k2, seq), 0);
    assert_int_equal(gnutls_record_get_state(cl.s, 0, NULL, NULL, &w2, seq), 0);
    assert_memory_not_equal(rk1, k2.data, k2.size); /* the server's write key changed */
    assert_memory_not_equal(wk1, w2.data, w2.size); /* and ours, as it asked */
    assert_int_equal(gnutls_bye(cl.s, GNUTLS_SHUT_WR), 0);
    pthread_join(w.thread, NULL);
    assert_int_equal(w.end_reason, KF_OK);
    assert_int_equal(w.handovers, 3); /* its own update, our answering update, close_notify */
    client_close(&cl);
}

/* The worker ends the connection: the client sees close_notify. */
static void test_worker_close(void **state)
{
    struct fixture *f = *state;
    struct worker w;
    struct client cl;
    int fd;
    admin_session(f, &w, ECHO_THEN_CLOSE, PRIO12, NULL, &cl, &fd);
    echo(&cl, 10, 1);
    uint8_t b[16];
    assert_int_equal(gnutls_record_recv(cl.s, b, sizeof(b)), 0); /* close_notify */
    pthread_join(w.thread, NULL);
    assert_int_equal(w.handovers, 0); /* counted before the close handed over */
    assert_int_equal(w.version, KF_TLSREC_TLS12);
    client_close(&cl);
}

static void resume(struct fixture *f, const char *prio)
{
    struct worker w;
    struct client cl;
    int fd;
    gnutls_datum_t ticket = {0};
    admin_session(f, &w, ECHO, prio, NULL, &cl, &fd);
    echo(&cl, 100, 1); /* TLS 1.3 tickets come after the handshake: read past them */
    assert_int_equal(gnutls_session_get_data2(cl.s, &ticket), 0);
    assert_int_equal(gnutls_bye(cl.s, GNUTLS_SHUT_WR), 0);
    pthread_join(w.thread, NULL);
    assert_false(w.resumed);
    client_close(&cl);

    for (int round = 0; round < 2; round++) {
        admin_session(f, &w, ECHO, prio, &ticket, &cl, &fd);
        assert_true(gnutls_session_is_resumed(cl.s));
        echo(&cl, 20000, 2);
        assert_int_equal(gnutls_bye(cl.s, GNUTLS_SHUT_WR), 0);
        pthread_join(w.thread, NULL);
        assert_int_equal(w.accept_rc, KF_OK);
        assert_true(w.resumed);
        assert_non_null(strstr(w.who, "CN=admin")); /* the identity survives resumption */
        client_close(&cl);
    }
    gnutls_free(ticket.data);
}

static void test_tls13_resumption(void **state)
{
    resume(*state, PRIO13);
}

static void test_tls12_resumption(void **state)
{
    resume(*state, PRIO12);
}

static void refused(struct fixture *f, const char *ca, const char *cert, const char *key, int want)
{
    struct worker w;
    struct client cl;
    int fd;
    start_worker(f, &w, ECHO, &fd);
    int rc = client_open(&cl, fd, PRIO13, ca, cert, key, NULL);
    if (rc == 0) {
        /* TLS 1.3: the client finishes before the server judges its certificate. */
        uint8_t b[16];
        assert_true(gnutls_record_recv(cl.s, b, sizeof(b)) <= 0);
    }
    pthread_join(w.thread, NULL);
    assert_int_equal(w.accept_rc, want);
    client_close(&cl);
}

static void test_refusals(void **state)
{
    struct fixture *f = *state;
    refused(f, f->dev.ca_cert, NULL, NULL, KF_ERR_TLS);                         /* no certificate */
    refused(f, f->dev.ca_cert, f->other.admin_cert, f->other.admin_key, KF_ERR_TLS); /* other CA */
}

/* A record with a bad tag: the worker refuses it, the handler sends bad_record_mac. */
static void bad_record_mac(struct fixture *f, enum worker_mode mode)
{
    struct worker w;
    struct client cl;
    int fd;
    admin_session(f, &w, mode, PRIO13, NULL, &cl, &fd);
    echo(&cl, 10, 1);
    uint8_t junk[5 + 40] = {23, 3, 3, 0, 40};
    fill(junk + 5, 40, 9);
    assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    uint8_t b[16];
    ssize_t r = gnutls_record_recv(cl.s, b, sizeof(b));
    assert_int_equal(r, GNUTLS_E_FATAL_ALERT_RECEIVED);
    assert_int_equal(gnutls_alert_get(cl.s), GNUTLS_A_BAD_RECORD_MAC);
    pthread_join(w.thread, NULL);
    assert_int_equal(w.end_rc, KF_ERR_AUTH);
    if (mode == ECHO_NB)
        assert_int_equal(w.nb_blocks, 1); /* the refusal's alert is the handler's */
    client_close(&cl);
}

static void test_bad_record_mac(void **state)
{
    bad_record_mac(*state, ECHO);
}

/* ---- the non-blocking calls (an event loop's) ---------------------------------- */

static void test_nb_echo(void **state)
{
    handshake_and_echo_as(*state, PRIO13, KF_TLSREC_TLS13, ECHO_NB);
    handshake_and_echo_as(*state, PRIO12, KF_TLSREC_TLS12, ECHO_NB);
}

static void test_nb_key_update(void **state)
{
    peer_key_update(*state, ECHO_NB);
}

static void test_nb_bad_record_mac(void **state)
{
    bad_record_mac(*state, ECHO_NB);
}

/* A peer that does not read: send_nb stops where the socket is full, the
 * blocking send finishes, and every byte arrives once, in order. */
static void test_nb_send_again(void **state)
{
    struct fixture *f = *state;
    struct worker w;
    struct client cl;
    int fd;
    admin_session(f, &w, BLAST_NB, PRIO13, NULL, &cl, &fd);
    uint8_t seed = 7;
    assert_int_equal(gnutls_record_send(cl.s, &seed, 1), 1);
    usleep(200000); /* the worker fills the socket meanwhile */
    uint8_t *in = malloc(BLAST_LEN), *want = malloc(BLAST_LEN);
    assert_non_null(in);
    assert_non_null(want);
    size_t got = 0;
    while (got < BLAST_LEN) {
        ssize_t r;
        do
            r = gnutls_record_recv(cl.s, in + got, BLAST_LEN - got);
        while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
        assert_true(r > 0);
        got += (size_t)r;
    }
    fill(want, BLAST_LEN, seed);
    assert_memory_equal(in, want, BLAST_LEN);
    free(in);
    free(want);
    assert_int_equal(gnutls_bye(cl.s, GNUTLS_SHUT_WR), 0);
    pthread_join(w.thread, NULL);
    assert_int_equal(w.end_reason, KF_OK);
    assert_int_equal(w.nb_send_again, 1); /* it stopped once, and the blocking send went on */
    client_close(&cl);
}

/* The handler dies: bulk traffic of an established connection goes on; the next
 * record that needs the handler ends the connection (and only it). */
static void test_handler_death(void **state)
{
    struct fixture *f = *state;
    struct worker w;
    struct client cl;
    int fd;
    admin_session(f, &w, ECHO, PRIO13, NULL, &cl, &fd);
    echo(&cl, 1000, 1);
    pid_t pid = kf_tlssplit_handler_pid(f->h);
    assert_int_equal(kill(pid, SIGKILL), 0);
    for (int i = 0; i < 100 && kf_tlssplit_handler_alive(f->h); i++)
        usleep(10000);
    assert_false(kf_tlssplit_handler_alive(f->h));
    echo(&cl, 1000000, 2);
    assert_int_equal(gnutls_session_key_update(cl.s, 0), 0);
    uint8_t b[16];
    assert_true(gnutls_record_recv(cl.s, b, sizeof(b)) <= 0);
    pthread_join(w.thread, NULL);
    assert_int_equal(w.end_rc, KF_ERR_SPLIT_HANDLER);
    client_close(&cl);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    kf_log_open(NULL, KF_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tls13_echo, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_tls12_echo, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_tls13_chacha_echo, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_peer_key_update, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_worker_key_update, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_worker_close, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_tls13_resumption, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_tls12_resumption, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_refusals, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_bad_record_mac, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_handler_death, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_nb_echo, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_nb_key_update, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_nb_bad_record_mac, handler_up, handler_down),
        cmocka_unit_test_setup_teardown(test_nb_send_again, handler_up, handler_down),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
