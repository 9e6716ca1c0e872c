/*
 * The split endpoint's client side (claim 17), in process: kf_tlssplit_client
 * (this process: the record layer) with a client session handler (forked, or
 * exec'd from this very binary), against a plain GnuTLS server thread on
 * 127.0.0.1 that requires a client certificate and issues session tickets.
 * Checked: TLS 1.3 and 1.2 (AES-GCM, ChaCha20) handshakes and echo at record
 * boundaries; the server sees the client certificate; KMIP framing of
 * kf_tlssplit_client_call in split and monolithic mode; resumption on the
 * next connection through the same handler (both versions; not with
 * no_resume; each kept session offered once); KeyUpdate from the client
 * (with and without asking) and from the server, proven by the server's own
 * traffic keys changing; refusals (server name, foreign CA, key purpose, no
 * client certificate, a server handler, a client START to a server handler
 * and vice versa, credentials the handler cannot load, nobody listening);
 * a handler killed under a connection; the channel codec's client fields.
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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "keyfleet/log.h"
#include "keyfleet/tls.h"
#include "keyfleet/tlssplit.h"
#include "tlssplit/channel.h"

#define PRIO13 "NORMAL:-VERS-ALL:+VERS-TLS1.3"
#define PRIO12 "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM"
#define PRIO12_CHACHA "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+CHACHA20-POLY1305"
#define MAX_CONNS 4

struct fixture {
    char dir[64], certs[128], foreign[128];
    struct kf_tls_dev_files dev, other;
};
static struct fixture *fx;

/* ---- the GnuTLS server on the other end ------------------------------------------ */

struct conn_result {
    int hs_rc;
    gnutls_protocol_t version;
    bool resumed;
    char peer_cn[64];
    uint8_t rd_first[32], rd_last[32], wr_first[32], wr_last[32];
    size_t echoed;
};

struct server {
    const char *prio, *cert, *key;
    bool require_cert, close_after_handshake;
    int nconn;
    int lfd;
    uint16_t port;
    pthread_t thread;
    pthread_t conn_thread[MAX_CONNS];
    int conn_fd[MAX_CONNS];
    gnutls_certificate_credentials_t cred;
    gnutls_datum_t stek;
    struct conn_result r[MAX_CONNS];
};

static void state_key(gnutls_session_t s, int read, uint8_t out[32])
{
    gnutls_datum_t mac, iv, key;
    memset(out, 0, 32);
    if (gnutls_record_get_state(s, (unsigned)read, &mac, &iv, &key, NULL) == 0)
        memcpy(out, key.data, key.size < 32 ? key.size : 32);
}

static void peer_cn(gnutls_session_t s, char *out, size_t cap)
{
    unsigned n = 0;
    const gnutls_datum_t *chain = gnutls_certificate_get_peers(s, &n);
    gnutls_x509_crt_t crt;
    out[0] = 0;
    if (!chain || n == 0 || gnutls_x509_crt_init(&crt) < 0)
        return;
    size_t sz = cap;
    if (gnutls_x509_crt_import(crt, &chain[0], GNUTLS_X509_FMT_DER) == 0 &&
        gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, out, &sz) != 0)
        out[0] = 0;
    gnutls_x509_crt_deinit(crt);
}

/* Echo what arrives; the record "SKU\n" makes the server update its keys and
 * ask for the client's, then answer "SKU-OK\n". */
static void serve_one(struct server *sv, struct conn_result *r, int fd)
{
    gnutls_session_t s;
    static __thread uint8_t buf[65536];
    assert_int_equal(gnutls_init(&s, GNUTLS_SERVER), 0);
    assert_int_equal(gnutls_priority_set_direct(s, sv->prio, NULL), 0);
    assert_int_equal(gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, sv->cred), 0);
    assert_int_equal(gnutls_session_ticket_enable_server(s, &sv->stek), 0);
    gnutls_certificate_server_set_request(s, sv->require_cert ? GNUTLS_CERT_REQUIRE
                                                             : GNUTLS_CERT_IGNORE);
    if (sv->require_cert)
        gnutls_session_set_verify_cert(s, NULL, 0);
    gnutls_transport_set_int(s, fd);
    gnutls_handshake_set_timeout(s, 5000);
    gnutls_record_set_timeout(s, 10000);
    int rc;
    do
        rc = gnutls_handshake(s);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    r->hs_rc = rc;
    if (rc == 0) {
        r->version = gnutls_protocol_get_version(s);
        r->resumed = gnutls_session_is_resumed(s) != 0;
        peer_cn(s, r->peer_cn, sizeof(r->peer_cn));
        state_key(s, 1, r->rd_first);
        state_key(s, 0, r->wr_first);
    }
    while (rc == 0 && !sv->close_after_handshake) {
        ssize_t n = gnutls_record_recv(s, buf, sizeof(buf));
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            continue;
        if (n <= 0)
            break;
        if (n == 4 && memcmp(buf, "SKU\n", 4) == 0) {
            if (gnutls_session_key_update(s, GNUTLS_KU_PEER) < 0 ||
                gnutls_record_send(s, "SKU-OK\n", 7) != 7)
                break;
            continue;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = gnutls_record_send(s, buf + off, (size_t)(n - off));
            if (w <= 0)
                goto done;
            off += w;
        }
        r->echoed += (size_t)n;
    }
done:
    if (rc == 0) {
        state_key(s, 1, r->rd_last);
        state_key(s, 0, r->wr_last);
        gnutls_bye(s, GNUTLS_SHUT_WR);
    }
    gnutls_deinit(s);
}

struct conn_arg {
    struct server *sv;
    int i;
};

static void *conn_thread(void *arg)
{
    struct conn_arg *ca = arg;
    serve_one(ca->sv, &ca->sv->r[ca->i], ca->sv->conn_fd[ca->i]);
    close(ca->sv->conn_fd[ca->i]);
    free(ca);
    return NULL;
}

/* Connections are served side by side (a test holds several open). */
static void *server_thread(void *arg)
{
    struct server *sv = arg;
    int n = 0;
    for (; n < sv->nconn; n++) {
        struct conn_arg *ca = malloc(sizeof(*ca));
        int fd = accept(sv->lfd, NULL, NULL);
        if (fd < 0 || !ca) {
            free(ca);
            break;
        }
        ca->sv = sv;
        ca->i = n;
        sv->conn_fd[n] = fd;
        if (pthread_create(&sv->conn_thread[n], NULL, conn_thread, ca) != 0) {
            close(fd);
            free(ca);
            break;
        }
    }
    for (int i = 0; i < n; i++)
        pthread_join(sv->conn_thread[i], NULL);
    return NULL;
}

static void server_start(struct server *sv, const char *prio, int nconn)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    sv->prio = prio;
    sv->nconn = nconn;
    if (!sv->cert) {
        sv->cert = fx->dev.server_cert;
        sv->key = fx->dev.server_key;
    }
    assert_int_equal(gnutls_certificate_allocate_credentials(&sv->cred), 0);
    assert_true(gnutls_certificate_set_x509_trust_file(sv->cred, fx->dev.ca_cert,
                                                       GNUTLS_X509_FMT_PEM) > 0);
    assert_int_equal(gnutls_certificate_set_x509_key_file(sv->cred, sv->cert, sv->key,
                                                          GNUTLS_X509_FMT_PEM),
                     0);
    assert_int_equal(gnutls_session_ticket_key_generate(&sv->stek), 0);
    sv->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(sv->lfd >= 0);
    assert_int_equal(bind(sv->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(sv->lfd, 8), 0);
    assert_int_equal(getsockname(sv->lfd, (struct sockaddr *)&a, &al), 0);
    sv->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&sv->thread, NULL, server_thread, sv), 0);
}

static void server_join(struct server *sv)
{
    shutdown(sv->lfd, SHUT_RDWR); /* ends an accept() still waiting */
    pthread_join(sv->thread, NULL);
    close(sv->lfd);
    gnutls_free(sv->stek.data);
    gnutls_certificate_free_credentials(sv->cred);
}

/* ---- the client ------------------------------------------------------------------- */

/* The handler is this binary exec'd (main() below): a fork alone is unsafe
 * while the server's threads run (a lock one of them holds stays held in the
 * child). Tests that start the handler before any thread use fork mode. */
static struct kf_tlssplit_client_config client_cfg(const char *prio)
{
    struct kf_tlssplit_client_config c = {.ca_file = fx->dev.ca_cert,
                                          .cert_file = fx->dev.admin_cert,
                                          .key_file = fx->dev.admin_key,
                                          .priority = prio,
                                          .server_name = "localhost",
                                          .timeout_ms = 5000,
                                          .exec_path = "/proc/self/exe"};
    return c;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 131 + seed * 17 + (i >> 9));
}

static void recv_exact(kf_tlssplit_conn *c, uint8_t *p, size_t n)
{
    while (n > 0) {
        size_t got;
        assert_int_equal(kf_tlssplit_recv(c, p, n, 5000, &got), KF_OK);
        p += got;
        n -= got;
    }
}

/* The server echoes record by record; n <= 300000 fits both socket buffers. */
static void echo(kf_tlssplit_client *cli, size_t n, unsigned seed)
{
    kf_tlssplit_conn *c = kf_tlssplit_client_conn(cli);
    uint8_t *out = malloc(n), *in = malloc(n);
    assert_non_null(out);
    assert_non_null(in);
    fill(out, n, seed);
    assert_int_equal(kf_tlssplit_send(c, out, n, 5000), KF_OK);
    recv_exact(c, in, n);
    assert_memory_equal(in, out, n);
    free(out);
    free(in);
}

static kf_tlssplit_client *connect_ok(struct server *sv, struct kf_tlssplit_client_config *cfg)
{
    kf_tlssplit_client *cli = NULL;
    assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", sv->port, cfg, &cli), KF_OK);
    return cli;
}

/* ---- tests ------------------------------------------------------------------------ */

static void handshake_and_echo(const char *prio, gnutls_protocol_t version, const char *vname)
{
    static const size_t sizes[] = {1, 100, 16383, 16384, 16385, 65536, 300000};
    struct server sv = {.require_cert = true};
    struct kf_tlssplit_client_config cfg = client_cfg(prio);
    server_start(&sv, prio, 1);
    kf_tlssplit_client *cli = connect_ok(&sv, &cfg);
    assert_string_equal(kf_tlssplit_client_version(cli), vname);
    assert_false(kf_tlssplit_client_resumed(cli));
    /* The handler's verdict on the server: the name its certificate was checked against. */
    assert_string_equal(kf_tlssplit_peer(kf_tlssplit_client_conn(cli))->name, "localhost");
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        echo(cli, sizes[i], (unsigned)i);
    kf_tlssplit_client_close(cli);
    server_join(&sv);
    assert_int_equal(sv.r[0].hs_rc, 0);
    assert_int_equal(sv.r[0].version, version);
    assert_string_equal(sv.r[0].peer_cn, "admin");
    assert_int_equal(sv.r[0].echoed, 16383 + 16384 + 16385 + 65536 + 300000 + 101);
}

static void test_tls13_echo(void **state)
{
    (void)state;
    handshake_and_echo(PRIO13, GNUTLS_TLS1_3, "TLS1.3");
}

static void test_tls12_echo(void **state)
{
    (void)state;
    handshake_and_echo(PRIO12, GNUTLS_TLS1_2, "TLS1.2");
    handshake_and_echo(PRIO12_CHACHA, GNUTLS_TLS1_2, "TLS1.2");
}

/* A KMIP-framed message through kf_tlssplit_client_call comes back whole
 * from the echo server: split and monolithic, the same semantics. */
static void test_call_framing(void **state)
{
    (void)state;
    /* Request Message: one Integer item in a Structure (tag 0x420078). */
    static const uint8_t msg[] = {0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x00, 0x10,
                                  0x42, 0x00, 0x6a, 0x02, 0x00, 0x00, 0x00, 0x04,
                                  0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00};
    for (int mono = 0; mono <= 1; mono++) {
        struct server sv = {.require_cert = true};
        struct kf_tlssplit_client_config cfg = client_cfg(PRIO13);
        cfg.monolithic = mono;
        server_start(&sv, PRIO13, 1);
        kf_tlssplit_client *cli = connect_ok(&sv, &cfg);
        assert_true(mono ? kf_tlssplit_client_conn(cli) == NULL
                         : kf_tlssplit_client_conn(cli) != NULL);
        kf_buf resp;
        assert_int_equal(kf_buf_alloc(&resp, 16, KF_TLS_MESSAGE_MAX, 0), KF_OK);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(kf_tlssplit_client_call(cli, msg, sizeof(msg), &resp), KF_OK);
            assert_int_equal(resp.len, sizeof(msg));
            assert_memory_equal(resp.data, msg, sizeof(msg));
        }
        /* Sent in pieces, read as one message. */
        assert_int_equal(kf_tlssplit_client_send_raw(cli, msg, 5), KF_OK);
        assert_int_equal(kf_tlssplit_client_send_raw(cli, msg + 5, sizeof(msg) - 5), KF_OK);
        assert_int_equal(kf_tlssplit_client_recv(cli, &resp), KF_OK);
        assert_memory_equal(resp.data, msg, sizeof(msg));
        kf_buf_free(&resp);
        kf_tlssplit_client_close(cli);
        server_join(&sv);
        assert_string_equal(sv.r[0].peer_cn, "admin");
    }
}

/* The server ends the session right after the handshake: the call says so. */
static void test_call_server_closes(void **state)
{
    (void)state;
    static const uint8_t msg[] = {0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x00, 0x00};
    for (int mono = 0; mono <= 1; mono++) {
        struct server sv = {.require_cert = true, .close_after_handshake = true};
        struct kf_tlssplit_client_config cfg = client_cfg(PRIO13);
        cfg.monolithic = mono;
        server_start(&sv, PRIO13, 1);
        kf_tlssplit_client *cli = connect_ok(&sv, &cfg);
        kf_buf resp;
        assert_int_equal(kf_buf_alloc(&resp, 16, KF_TLS_MESSAGE_MAX, 0), KF_OK);
        server_join(&sv);
        assert_int_equal(kf_tlssplit_client_call(cli, msg, sizeof(msg), &resp), KF_ERR_CONNECT);
        kf_buf_free(&resp);
        kf_tlssplit_client_close(cli);
    }
}

static void resumption(const char *prio)
{
    struct server sv = {.require_cert = true};
    struct kf_tlssplit_client_config cfg = client_cfg(prio);
    kf_tlssplit_handler *h;
    cfg.exec_path = NULL; /* fork mode: no thread runs yet */
    assert_int_equal(kf_tlssplit_client_handler_start(&cfg, &h), KF_OK);
    assert_true(kf_tlssplit_handler_is_client(h));
    cfg.handler = h;
    server_start(&sv, prio, 4);
    bool expect[4] = {false, true, false, true};
    for (int i = 0; i < 4; i++) {
        cfg.no_resume = i == 2; /* a full handshake on request, and the next resumes again */
        kf_tlssplit_client *cli = connect_ok(&sv, &cfg);
        /* TLS 1.3: the ticket arrives after the handshake, as a record the worker forwards. */
        echo(cli, 10, (unsigned)i);
        assert_int_equal(kf_tlssplit_client_resumed(cli), expect[i]);
        kf_tlssplit_client_close(cli);
    }
    server_join(&sv);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(sv.r[i].hs_rc, 0);
        assert_int_equal(sv.r[i].resumed, expect[i]);
        assert_string_equal(sv.r[i].peer_cn, "admin"); /* the identity survives resumption */
    }
    kf_tlssplit_handler_stop(h);
}

static void test_tls13_resumption(void **state)
{
    (void)state;
    resumption(PRIO13);
}

static void test_tls12_resumption(void **state)
{
    (void)state;
    resumption(PRIO12);
}

/* A kept session is offered once. TLS 1.3: a's ticket is kept; b takes it
 * and resumes; c connects before b has read its own new ticket (it arrives
 * as a record b forwards only when b reads), so nothing is kept for c. */
static void test_session_offered_once(void **state)
{
    (void)state;
    struct server sv = {.require_cert = true};
    struct kf_tlssplit_client_config cfg = client_cfg(PRIO13);
    kf_tlssplit_handler *h;
    cfg.exec_path = NULL; /* fork mode: no thread runs yet */
    assert_int_equal(kf_tlssplit_client_handler_start(&cfg, &h), KF_OK);
    cfg.handler = h;
    server_start(&sv, PRIO13, 4);
    kf_tlssplit_client *a = connect_ok(&sv, &cfg);
    echo(a, 1, 1); /* the tickets arrive */
    kf_tlssplit_client_close(a);
    kf_tlssplit_client *b = connect_ok(&sv, &cfg);
    kf_tlssplit_client *c = connect_ok(&sv, &cfg);
    assert_true(kf_tlssplit_client_resumed(b));
    assert_false(kf_tlssplit_client_resumed(c));
    echo(b, 1, 2); /* b's new ticket is kept now: d resumes */
    kf_tlssplit_client *d = connect_ok(&sv, &cfg);
    assert_true(kf_tlssplit_client_resumed(d));
    kf_tlssplit_client_close(b);
    kf_tlssplit_client_close(c);
    kf_tlssplit_client_close(d);
    server_join(&sv);
    kf_tlssplit_handler_stop(h);
}

static void test_client_key_update(void **state)
{
    (void)state;
    for (int ask = 0; ask <= 1; ask++) {
        struct server sv = {.require_cert = true};
        struct kf_tlssplit_client_config cfg = client_cfg(PRIO13);
        server_start(&sv, PRIO13, 1);
        kf_tlssplit_client *cli = connect_ok(&sv, &cfg);
        kf_tlssplit_conn *c = kf_tlssplit_client_conn(cli);
        echo(cli, 1000, 1);
        uint64_t before = kf_tlssplit_handovers(c);
        assert_int_equal(kf_tlssplit_key_update(c, ask), KF_OK);
        echo(cli, 70000, 2); /* the server reads it with our new key */
        echo(cli, 10, 3);
        assert_true(kf_tlssplit_handovers(c) >= before + 1 + (unsigned)ask);
        kf_tlssplit_client_close(cli);
        server_join(&sv);
        /* Our write key is the server's read key: it changed. Asked, the server's changed too. */
        assert_memory_not_equal(sv.r[0].rd_first, sv.r[0].rd_last, 16);
        if (ask)
            assert_memory_not_equal(sv.r[0].wr_first, sv.r[0].wr_last, 16);
        else
            assert_memory_equal(sv.r[0].wr_first, sv.r[0].wr_last, 16);
    }
}

/* The server updates its keys and asks for ours: the handler answers. */
static void test_server_key_update(void **state)
{
    (void)state;
    struct server sv = {.require_cert = true};
    struct kf_tlssplit_client_config cfg = client_cfg(PRIO13);
    server_start(&sv, PRIO13, 1);
    kf_tlssplit_client *cli = connect_ok(&sv, &cfg);
    kf_tlssplit_conn *c = kf_tlssplit_client_conn(cli);
    echo(cli, 100, 1);
    uint8_t ok[7];
    assert_int_equal(kf_tlssplit_send(c, (const uint8_t *)"SKU\n", 4, 5000), KF_OK);
    recv_exact(c, ok, sizeof(ok)); /* behind the server's KeyUpdate, under its new key */
    assert_memory_equal(ok, "SKU-OK\n", 7);
    echo(cli, 20000, 2); /* the server reads our records under our new key */
    kf_tlssplit_client_close(cli);
    server_join(&sv);
    assert_memory_not_equal(sv.r[0].wr_first, sv.r[0].wr_last, 16);
    assert_memory_not_equal(sv.r[0].rd_first, sv.r[0].rd_last, 16);
}

static void test_refusals(void **state)
{
    (void)state;
    kf_tlssplit_client *cli = NULL;
    struct kf_tlssplit_client_config cfg;
    /* The server's certificate names localhost and 127.0.0.1, not this. */
    for (int v = 0; v < 2; v++) {
        const char *prio = v ? PRIO12 : PRIO13;
        struct server sv = {.require_cert = true};
        server_start(&sv, prio, 3);
        cfg = client_cfg(prio);
        cfg.server_name = "wrong.example";
        assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", sv.port, &cfg, &cli), KF_ERR_TLS);
        /* A CA that did not sign it. */
        cfg = client_cfg(prio);
        cfg.ca_file = fx->other.ca_cert;
        assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", sv.port, &cfg, &cli), KF_ERR_TLS);
        /* The IP address is a name too (IP SAN). */
        cfg = client_cfg(prio);
        cfg.server_name = NULL;
        cli = connect_ok(&sv, &cfg);
        echo(cli, 5, 5);
        kf_tlssplit_client_close(cli);
        server_join(&sv);
    }
    /* A certificate for TLS clients does not serve as a server's. */
    struct server sv = {.require_cert = true, .cert = fx->dev.admin_cert, .key = fx->dev.admin_key};
    server_start(&sv, PRIO13, 1);
    cfg = client_cfg(PRIO13);
    cfg.server_name = "admin";
    assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", sv.port, &cfg, &cli), KF_ERR_TLS);
    server_join(&sv);
    /* No client certificate: TLS 1.2 fails in the handshake, TLS 1.3 right after it. */
    struct server s12 = {.require_cert = true};
    server_start(&s12, PRIO12, 1);
    cfg = client_cfg(PRIO12);
    cfg.cert_file = cfg.key_file = NULL;
    assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", s12.port, &cfg, &cli), KF_ERR_TLS);
    server_join(&s12);
    struct server s13 = {.require_cert = true};
    server_start(&s13, PRIO13, 1);
    cfg = client_cfg(PRIO13);
    cfg.cert_file = cfg.key_file = NULL;
    static const uint8_t msg[] = {0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x00, 0x00};
    kf_buf resp;
    assert_int_equal(kf_buf_alloc(&resp, 16, 1024, 0), KF_OK);
    if (kf_tlssplit_client_connect("127.0.0.1", s13.port, &cfg, &cli) == KF_OK) {
        assert_int_equal(kf_tlssplit_client_call(cli, msg, sizeof(msg), &resp), KF_ERR_CONNECT);
        kf_tlssplit_client_close(cli);
    }
    server_join(&s13);
    assert_int_not_equal(s13.r[0].hs_rc, 0);
    /* Without a certificate, a server that asks for none is fine. */
    struct server anon = {.require_cert = false};
    server_start(&anon, PRIO13, 1);
    cli = connect_ok(&anon, &cfg);
    echo(cli, 3, 3);
    kf_tlssplit_client_close(cli);
    server_join(&anon);
    assert_string_equal(anon.r[0].peer_cn, "");
    kf_buf_free(&resp);
    /* Nobody listening. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    cfg = client_cfg(PRIO13);
    assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", ntohs(a.sin_port), &cfg, &cli),
                     KF_ERR_CONNECT);
    close(fd);
}

static void test_config_refusals(void **state)
{
    (void)state;
    kf_tlssplit_client *cli = NULL;
    kf_tlssplit_handler *h = NULL;
    struct kf_tlssplit_client_config cfg = client_cfg(PRIO13);
    /* A certificate without its key, and the other way round. */
    cfg.key_file = NULL;
    assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", 1, &cfg, &cli), KF_ERR_ARG);
    assert_int_equal(kf_tlssplit_client_handler_start(&cfg, &h), KF_ERR_ARG);
    cfg = client_cfg(PRIO13);
    cfg.cert_file = NULL;
    assert_int_equal(kf_tlssplit_client_handler_start(&cfg, &h), KF_ERR_ARG);
    cfg = client_cfg(PRIO13);
    cfg.ca_file = NULL;
    assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", 1, &cfg, &cli), KF_ERR_ARG);
    /* A server name longer than SNI allows. */
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;
    cfg = client_cfg(PRIO13);
    cfg.server_name = longname;
    assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", 1, &cfg, &cli), KF_ERR_ARG);
    /* Nor one SNI cannot carry (the handler would end on it). */
    cfg.server_name = "kms example";
    assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", 1, &cfg, &cli), KF_ERR_ARG);
    cfg.server_name = "";
    assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", 1, &cfg, &cli), KF_ERR_ARG);
    /* A server's handler is no client's. */
    struct kf_tlssplit_handler_config scfg = {.ca_file = fx->dev.ca_cert,
                                              .cert_file = fx->dev.server_cert,
                                              .key_file = fx->dev.server_key,
                                              .identities_file = fx->dev.identities};
    assert_int_equal(kf_tlssplit_handler_start(&scfg, &h), KF_OK);
    assert_false(kf_tlssplit_handler_is_client(h));
    cfg = client_cfg(PRIO13);
    cfg.handler = h;
    assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", 1, &cfg, &cli), KF_ERR_ARG);
    kf_tlssplit_handler_stop(h);
    /* Credentials the handler cannot load: it exits, the connection says so. */
    struct server sv = {.require_cert = true};
    server_start(&sv, PRIO13, 2);
    cfg = client_cfg(PRIO13);
    cfg.key_file = fx->dev.user_key; /* not the admin certificate's key */
    assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", sv.port, &cfg, &cli),
                     KF_ERR_SPLIT_HANDLER);
    cfg = client_cfg("NORMAL:+NO-SUCH-THING");
    assert_int_equal(kf_tlssplit_client_connect("127.0.0.1", sv.port, &cfg, &cli),
                     KF_ERR_SPLIT_HANDLER);
    server_join(&sv);
}

/* START for the other role: the handler does not guess, it ends. */
static void test_role_mismatch(void **state)
{
    (void)state;
    for (int client_handler = 0; client_handler <= 1; client_handler++) {
        kf_tlssplit_handler *h;
        if (client_handler) {
            struct kf_tlssplit_client_config cfg = client_cfg(PRIO13);
            assert_int_equal(kf_tlssplit_client_handler_start(&cfg, &h), KF_OK);
        } else {
            struct kf_tlssplit_handler_config scfg = {.ca_file = fx->dev.ca_cert,
                                                      .cert_file = fx->dev.server_cert,
                                                      .key_file = fx->dev.server_key,
                                                      .identities_file = fx->dev.identities};
            assert_int_equal(kf_tlssplit_handler_start(&scfg, &h), KF_OK);
        }
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        struct kf_split_start st = {.role = client_handler ? KF_SPLIT_ROLE_SERVER
                                                           : KF_SPLIT_ROLE_CLIENT};
        snprintf(st.peer, sizeof(st.peer), "test");
        snprintf(st.server_name, sizeof(st.server_name), "localhost");
        kf_tlssplit_conn *c = NULL;
        assert_int_equal(kf_tlssplit_conn_start(kf_tlssplit_handler_broker(h), sv[0], &st, 2000, &c),
                         KF_ERR_SPLIT_HANDLER);
        for (int i = 0; i < 100 && kf_tlssplit_handler_alive(h); i++)
            usleep(20000);
        assert_false(kf_tlssplit_handler_alive(h));
        close(sv[1]);
        kf_tlssplit_handler_stop(h);
    }
}

/* The handler dies under an open connection: application data keeps
 * flowing (the keys are here), the next hand-over ends the connection. */
static void test_handler_death(void **state)
{
    (void)state;
    struct server sv = {.require_cert = true};
    struct kf_tlssplit_client_config cfg = client_cfg(PRIO13);
    kf_tlssplit_handler *h;
    assert_int_equal(kf_tlssplit_client_handler_start(&cfg, &h), KF_OK);
    cfg.handler = h;
    server_start(&sv, PRIO13, 1);
    kf_tlssplit_client *cli = connect_ok(&sv, &cfg);
    echo(cli, 100, 1); /* the tickets are in, handed over, and answered */
    kill(kf_tlssplit_handler_pid(h), SIGKILL);
    for (int i = 0; i < 100 && kf_tlssplit_handler_alive(h); i++)
        usleep(10000);
    echo(cli, 50000, 2);
    assert_int_equal(kf_tlssplit_key_update(kf_tlssplit_client_conn(cli), false),
                     KF_ERR_SPLIT_HANDLER);
    kf_tlssplit_client_close(cli);
    server_join(&sv);
    kf_tlssplit_handler_stop(h);
    assert_true(sv.r[0].echoed >= 50100);
}

/* Exec mode: the handler is this binary, started fresh with the handler
 * argument, configured only through CONFIG on fd 3. */
static void test_exec_mode(void **state)
{
    (void)state;
    struct server sv = {.require_cert = true};
    struct kf_tlssplit_client_config cfg = client_cfg(PRIO13);
    kf_tlssplit_handler *h;
    assert_int_equal(kf_tlssplit_client_handler_start(&cfg, &h), KF_OK);
    cfg.handler = h;
    server_start(&sv, PRIO13, 2);
    for (int i = 0; i < 2; i++) {
        kf_tlssplit_client *cli = connect_ok(&sv, &cfg);
        echo(cli, 20000, 1);
        assert_int_equal(kf_tlssplit_client_resumed(cli), i == 1);
        kf_tlssplit_client_close(cli);
    }
    char path[64], cmdline[128] = {0};
    snprintf(path, sizeof(path), "/proc/%d/cmdline", kf_tlssplit_handler_pid(h));
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(cmdline, 1, sizeof(cmdline) - 1, f);
    fclose(f);
    assert_true(n > 0);
    assert_string_equal(cmdline + strlen(cmdline) + 1, KF_TLSSPLIT_HANDLER_ARG);
    server_join(&sv);
    kf_tlssplit_handler_stop(h);
}

/* ---- the channel's client fields ------------------------------------------------- */

static int roundtrip_start(const struct kf_split_start *in, struct kf_split_start *out)
{
    uint8_t mem[512], type;
    kf_buf b, body;
    kf_buf_fixed(&b, mem, sizeof(mem));
    KF_GUARD(kf_split_encode_start(in, &b));
    KF_GUARD(kf_split_decode_frame(b.data, b.len, sizeof(mem), &type, &body));
    return kf_split_decode_start(&body, out);
}

/* Decode a START body given as bytes. */
static int decode_start_bytes(const uint8_t *p, size_t n)
{
    kf_buf body;
    struct kf_split_start st;
    kf_buf_reader(&body, p, n);
    return kf_split_decode_start(&body, &st);
}

static void test_codec(void **state)
{
    (void)state;
    struct kf_split_start in = {.role = KF_SPLIT_ROLE_CLIENT, .flags = KF_SPLIT_START_NO_RESUME},
                          out;
    snprintf(in.peer, sizeof(in.peer), "[::1]:5696");
    snprintf(in.server_name, sizeof(in.server_name), "kms.example.org");
    assert_int_equal(roundtrip_start(&in, &out), KF_OK);
    assert_int_equal(out.role, KF_SPLIT_ROLE_CLIENT);
    assert_string_equal(out.server_name, "kms.example.org");
    assert_string_equal(out.peer, "[::1]:5696");
    assert_int_equal(out.flags, KF_SPLIT_START_NO_RESUME);
    /* 255 bytes is the longest name. */
    memset(in.server_name, 'n', KF_SPLIT_NAME_MAX);
    in.server_name[KF_SPLIT_NAME_MAX] = 0;
    assert_int_equal(roundtrip_start(&in, &out), KF_OK);
    /* What the decoder refuses, whatever the encoder was given. */
    struct kf_split_start bad = in;
    bad.server_name[0] = 0;
    assert_int_equal(roundtrip_start(&bad, &out), KF_ERR_SPLIT_CHANNEL);
    bad = in;
    bad.server_name[3] = ' ';
    assert_int_equal(roundtrip_start(&bad, &out), KF_ERR_SPLIT_CHANNEL);
    bad = in;
    bad.flags = 2;
    assert_int_equal(roundtrip_start(&bad, &out), KF_ERR_SPLIT_CHANNEL);
    bad = in;
    bad.role = 3;
    assert_int_equal(roundtrip_start(&bad, &out), KF_ERR_SPLIT_CHANNEL);
    /* A worker process gets no client connection. */
    uint8_t mem[512], type;
    kf_buf b, abody;
    kf_buf_fixed(&b, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_accepted(&in, &b), KF_OK);
    assert_int_equal(kf_split_decode_frame(b.data, b.len, sizeof(mem), &type, &abody), KF_OK);
    assert_int_equal(type, KF_SPLIT_ACCEPTED);
    assert_int_equal(kf_split_decode_accepted(&abody, &out), KF_ERR_SPLIT_CHANNEL);

    /* Decoder: role 2 body = u8 role, str peer, str name, u8 flags. */
    static const uint8_t ok[] = {2, 0, 1, 'p', 0, 3, 'k', 'm', 's', 0};
    assert_int_equal(decode_start_bytes(ok, sizeof(ok)), KF_OK);
    static const uint8_t server_ok[] = {1, 0, 1, 'p'};
    assert_int_equal(decode_start_bytes(server_ok, sizeof(server_ok)), KF_OK);
    static const uint8_t server_extra[] = {1, 0, 1, 'p', 0, 3, 'k', 'm', 's', 0};
    assert_int_equal(decode_start_bytes(server_extra, sizeof(server_extra)), KF_ERR_SPLIT_CHANNEL);
    static const uint8_t role3[] = {3, 0, 1, 'p', 0, 3, 'k', 'm', 's', 0};
    assert_int_equal(decode_start_bytes(role3, sizeof(role3)), KF_ERR_SPLIT_CHANNEL);
    static const uint8_t empty_name[] = {2, 0, 1, 'p', 0, 0, 0};
    assert_int_equal(decode_start_bytes(empty_name, sizeof(empty_name)), KF_ERR_SPLIT_CHANNEL);
    static const uint8_t nul_name[] = {2, 0, 1, 'p', 0, 3, 'k', 0, 's', 0};
    assert_int_equal(decode_start_bytes(nul_name, sizeof(nul_name)), KF_ERR_SPLIT_CHANNEL);
    static const uint8_t ctl_name[] = {2, 0, 1, 'p', 0, 3, 'k', '\n', 's', 0};
    assert_int_equal(decode_start_bytes(ctl_name, sizeof(ctl_name)), KF_ERR_SPLIT_CHANNEL);
    static const uint8_t high_name[] = {2, 0, 1, 'p', 0, 3, 'k', 0xc3, 's', 0};
    assert_int_equal(decode_start_bytes(high_name, sizeof(high_name)), KF_ERR_SPLIT_CHANNEL);
    static const uint8_t bad_flags[] = {2, 0, 1, 'p', 0, 3, 'k', 'm', 's', 2};
    assert_int_equal(decode_start_bytes(bad_flags, sizeof(bad_flags)), KF_ERR_SPLIT_CHANNEL);
    static const uint8_t no_flags[] = {2, 0, 1, 'p', 0, 3, 'k', 'm', 's'};
    assert_int_equal(decode_start_bytes(no_flags, sizeof(no_flags)), KF_ERR_SPLIT_CHANNEL);
    static const uint8_t trailing[] = {2, 0, 1, 'p', 0, 3, 'k', 'm', 's', 0, 0};
    assert_int_equal(decode_start_bytes(trailing, sizeof(trailing)), KF_ERR_SPLIT_CHANNEL);
    uint8_t longname[4 + 2 + 256 + 1] = {2, 0, 1, 'p', 1, 0};
    memset(longname + 6, 'a', 256);
    assert_int_equal(decode_start_bytes(longname, sizeof(longname)), KF_ERR_SPLIT_CHANNEL);
    /* ACCEPTED with role 2 does not decode. */
    kf_buf body;
    struct kf_split_start st;
    kf_buf_reader(&body, ok, sizeof(ok));
    assert_int_equal(kf_split_decode_accepted(&body, &st), KF_ERR_SPLIT_CHANNEL);
    kf_buf_reader(&body, server_ok, sizeof(server_ok));
    assert_int_equal(kf_split_decode_accepted(&body, &st), KF_OK);
}

static int roundtrip_config(const struct kf_split_config *in)
{
    static uint8_t mem[KF_SPLIT_BROKER_MAX];
    static struct kf_split_config out;
    uint8_t type;
    kf_buf b, body;
    kf_buf_fixed(&b, mem, sizeof(mem));
    KF_GUARD(kf_split_encode_config(in, &b));
    KF_GUARD(kf_split_decode_frame(b.data, b.len, sizeof(mem), &type, &body));
    KF_GUARD(kf_split_decode_config(&body, &out));
    return memcmp(&out, in, sizeof(out)) == 0 ? KF_OK : KF_ERR_INTERNAL;
}

static void test_codec_config(void **state)
{
    (void)state;
    static struct kf_split_config c;
    memset(&c, 0, sizeof(c));
    c.flags = KF_SPLIT_CONFIG_CLIENT;
    snprintf(c.ca_file, sizeof(c.ca_file), "/ca.pem");
    assert_int_equal(roundtrip_config(&c), KF_OK); /* no client certificate */
    snprintf(c.cert_file, sizeof(c.cert_file), "/cert.pem");
    assert_int_equal(roundtrip_config(&c), KF_ERR_SPLIT_CHANNEL); /* certificate without key */
    snprintf(c.key_file, sizeof(c.key_file), "pkcs11:token=t;object=k");
    assert_int_equal(roundtrip_config(&c), KF_OK);
    snprintf(c.identities_file, sizeof(c.identities_file), "/ids");
    assert_int_equal(roundtrip_config(&c), KF_ERR_SPLIT_CHANNEL); /* a client maps no identities */
    c.flags = 0;
    assert_int_equal(roundtrip_config(&c), KF_OK); /* the server's CONFIG */
    memset(c.identities_file, 0, sizeof(c.identities_file));
    assert_int_equal(roundtrip_config(&c), KF_ERR_SPLIT_CHANNEL);
    c.flags = KF_SPLIT_CONFIG_CLIENT;
    c.ca_file[0] = 0;
    assert_int_equal(roundtrip_config(&c), KF_ERR_SPLIT_CHANNEL); /* a client verifies the server */
    snprintf(c.ca_file, sizeof(c.ca_file), "/ca.pem");
    c.flags = 4;
    assert_int_equal(roundtrip_config(&c), KF_ERR_SPLIT_CHANNEL);
    /* Every field at its limit fits the broker channel. */
    c.flags = KF_SPLIT_CONFIG_CLIENT | KF_SPLIT_CONFIG_TEST_REVEAL;
    memset(c.ca_file, 'a', KF_SPLIT_PATH_MAX);
    memset(c.cert_file, 'b', KF_SPLIT_PATH_MAX);
    memset(c.key_file, 'c', KF_SPLIT_PATH_MAX);
    memset(c.pkcs11_module, 'd', KF_SPLIT_PATH_MAX);
    memset(c.key_pin, 'e', sizeof(c.key_pin) - 1);
    memset(c.priority, 'f', sizeof(c.priority) - 1);
    memset(c.log_file, 'g', KF_SPLIT_PATH_MAX);
    assert_int_equal(roundtrip_config(&c), KF_OK);
}

/* ---- fixture ----------------------------------------------------------------------- */

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/kf-test-tlsclient.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->certs, sizeof(f->certs), "%s/certs", f->dir);
    snprintf(f->foreign, sizeof(f->foreign), "%s/foreign", f->dir);
    if (kf_tls_dev_certs(f->certs, &f->dev) < 0 || kf_tls_dev_certs(f->foreign, &f->other) < 0)
        return -1;
    fx = f;
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

int main(int argc, char **argv)
{
    /* The client handler is this binary, exec'd (client_cfg). */
    if (argc == 2 && strcmp(argv[1], KF_TLSSPLIT_HANDLER_ARG) == 0)
        return kf_tlssplit_handler_main();
    signal(SIGPIPE, SIG_IGN);
    kf_log_open(NULL, KF_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls13_echo),
        cmocka_unit_test(test_tls12_echo),
        cmocka_unit_test(test_call_framing),
        cmocka_unit_test(test_call_server_closes),
        cmocka_unit_test(test_tls13_resumption),
        cmocka_unit_test(test_tls12_resumption),
        cmocka_unit_test(test_session_offered_once),
        cmocka_unit_test(test_client_key_update),
        cmocka_unit_test(test_server_key_update),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_config_refusals),
        cmocka_unit_test(test_role_mismatch),
        cmocka_unit_test(test_handler_death),
        cmocka_unit_test(test_exec_mode),
        cmocka_unit_test(test_codec),
        cmocka_unit_test(test_codec_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
