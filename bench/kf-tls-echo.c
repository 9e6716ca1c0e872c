/*
 * kf-tls-echo: an echo server over mutually authenticated TLS, in either
 * endpoint mode, for the split-vs-monolithic benchmark and the split
 * endpoint's system test (bulk transfer, KeyUpdate, resumption, memory scan).
 *
 *   kf-tls-echo --mode split|monolithic --listen ADDR:PORT --certs DIR
 *               [--workers N] [--test-reveal]
 *
 * DIR holds the dev certificates (made there if missing; clients use
 * DIR/admin-cert.pem and DIR/admin-key.pem). Prints one line when ready:
 *   "ready port=P handler=PID workers=PID,PID"   (split)
 *   "ready port=P"                               (monolithic)
 * split: a session handler process and N confined worker processes (default
 * 2), forked before any key is loaded; the acceptor hands sockets to the
 * workers in turn. monolithic: one GnuTLS session per connection thread, the
 * same priorities, client-certificate check, identity map and session tickets.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "keyfleet/log.h"
#include "keyfleet/tls.h"
#include "keyfleet/tlssplit.h"
#include "tlssplit/tlssplit_internal.h"

#define MAX_WORKERS 16

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static int listen_on(const char *spec, uint16_t *port)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof(host))
        return -1;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = 0;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 512) != 0) {
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* ---- split ---------------------------------------------------------------------- */

static void echo_app(void *arg, kf_tlssplit_conn *c)
{
    (void)arg;
    static __thread uint8_t buf[65536];
    for (;;) {
        size_t got;
        if (kf_tlssplit_recv(c, buf, sizeof(buf), 600000, &got) < 0 ||
            kf_tlssplit_send(c, buf, got, 60000) < 0)
            return;
    }
}

static int run_split(int lfd, uint16_t port, const struct kf_tls_dev_files *dev, int nworkers,
                     bool reveal)
{
    struct kf_tlssplit_handler_config hcfg = {.ca_file = dev->ca_cert,
                                              .cert_file = dev->server_cert,
                                              .key_file = dev->server_key,
                                              .identities_file = dev->identities,
                                              .test_reveal_secrets = reveal};
    kf_tlssplit_handler *h;
    kf_tlssplit_worker *w[MAX_WORKERS];
    if (kf_tlssplit_handler_start(&hcfg, &h) < 0) {
        fprintf(stderr, "kf-tls-echo: cannot start the session handler\n");
        return 1;
    }
    struct kf_tlssplit_worker_config wcfg = {.broker = kf_tlssplit_handler_broker(h),
                                             .app = echo_app};
    char pids[MAX_WORKERS * 12] = "";
    for (int i = 0; i < nworkers; i++) {
        if (kf_tlssplit_worker_start(&wcfg, &w[i]) < 0) {
            fprintf(stderr, "kf-tls-echo: cannot start worker %d\n", i);
            return 1;
        }
        size_t len = strlen(pids);
        snprintf(pids + len, sizeof(pids) - len, "%s%d", i ? "," : "", kf_tlssplit_worker_pid(w[i]));
    }
    printf("ready port=%u handler=%d workers=%s\n", port, kf_tlssplit_handler_pid(h), pids);
    fflush(stdout);
    for (unsigned next = 0; !stopping;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (kf_tlssplit_worker_dispatch(w[next++ % (unsigned)nworkers], fd, "client") < 0)
            fprintf(stderr, "kf-tls-echo: a worker is gone\n");
    }
    for (int i = 0; i < nworkers; i++)
        kf_tlssplit_worker_stop(w[i]);
    kf_tlssplit_handler_stop(h);
    return 0;
}

/* ---- monolithic ------------------------------------------------------------------- */

struct mono {
    kf_tls_identities *ids;
    gnutls_certificate_credentials_t creds;
    gnutls_priority_t prio;
    gnutls_datum_t stek;
};

struct mono_conn {
    struct mono *m;
    int fd;
};

static void *mono_thread(void *arg)
{
    struct mono_conn *mc = arg;
    static const gnutls_typed_vdata_st purpose = {.type = GNUTLS_DT_KEY_PURPOSE_OID,
                                                  .data = (void *)GNUTLS_KP_TLS_WWW_CLIENT};
    static __thread uint8_t buf[65536];
    gnutls_session_t s;
    if (gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL) == 0) {
        gnutls_priority_set(s, mc->m->prio);
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, mc->m->creds);
        gnutls_session_ticket_enable_server(s, &mc->m->stek);
        gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
        gnutls_session_set_verify_cert2(s, (gnutls_typed_vdata_st *)&purpose, 1, 0);
        gnutls_transport_set_int(s, mc->fd);
        gnutls_handshake_set_timeout(s, 10000);
        int rc;
        do
            rc = gnutls_handshake(s);
        while (rc < 0 && !gnutls_error_is_fatal(rc));
        /* The same identity check the split handler (and keyfleetd) makes. */
        struct kf_principal who;
        if (rc == 0 && kf_tlssplit_identify(s, mc->m->ids, "client", &who) < 0)
            rc = -1;
        while (rc == 0) {
            ssize_t r = gnutls_record_recv(s, buf, sizeof(buf));
            if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
                continue;
            if (r <= 0)
                break;
            for (ssize_t off = 0; off < r;) {
                ssize_t w = gnutls_record_send(s, buf + off, (size_t)(r - off));
                if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED)
                    continue;
                if (w < 0) {
                    rc = -1;
                    break;
                }
                off += w;
            }
        }
        gnutls_bye(s, GNUTLS_SHUT_WR);
        gnutls_deinit(s);
    }
    close(mc->fd);
    free(mc);
    return NULL;
}

static int run_monolithic(int lfd, uint16_t port, const struct kf_tls_dev_files *dev)
{
    struct mono m;
    if (gnutls_certificate_allocate_credentials(&m.creds) < 0 ||
        gnutls_certificate_set_x509_trust_file(m.creds, dev->ca_cert, GNUTLS_X509_FMT_PEM) <= 0 ||
        gnutls_certificate_set_x509_key_file(m.creds, dev->server_cert, dev->server_key,
                                             GNUTLS_X509_FMT_PEM) < 0 ||
        gnutls_priority_init(&m.prio, KF_TLS_PRIORITY, NULL) < 0 ||
        gnutls_session_ticket_key_generate(&m.stek) < 0 ||
        kf_tls_identities_load(dev->identities, &m.ids, NULL, NULL, 0) < 0) {
        fprintf(stderr, "kf-tls-echo: cannot load credentials\n");
        return 1;
    }
    printf("ready port=%u\n", port);
    fflush(stdout);
    while (!stopping) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct mono_conn *mc = malloc(sizeof(*mc));
        pthread_t t;
        pthread_attr_t attr;
        if (!mc) {
            close(fd);
            continue;
        }
        mc->m = &m;
        mc->fd = fd;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, mono_thread, mc) != 0) {
            close(fd);
            free(mc);
        }
        pthread_attr_destroy(&attr);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"mode", required_argument, NULL, 'm'},
                                         {"listen", required_argument, NULL, 'l'},
                                         {"certs", required_argument, NULL, 'c'},
                                         {"workers", required_argument, NULL, 'w'},
                                         {"test-reveal", no_argument, NULL, 'r'},
                                         {NULL, 0, NULL, 0}};
    const char *mode = "split", *listen_spec = "127.0.0.1:0", *certs = NULL;
    int workers = 2, c;
    bool reveal = false;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': mode = optarg; break;
        case 'l': listen_spec = optarg; break;
        case 'c': certs = optarg; break;
        case 'w': workers = atoi(optarg); break;
        case 'r': reveal = true; break;
        default:
            fprintf(stderr, "usage: kf-tls-echo --mode split|monolithic --listen ADDR:PORT "
                            "--certs DIR [--workers N] [--test-reveal]\n");
            return 2;
        }
    }
    if (!certs || workers < 1 || workers > MAX_WORKERS ||
        (strcmp(mode, "split") != 0 && strcmp(mode, "monolithic") != 0)) {
        fprintf(stderr, "kf-tls-echo: need --certs DIR, --mode split|monolithic, 1-16 workers\n");
        return 2;
    }
    kf_log_open(NULL, KF_LOG_WARN);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    struct kf_tls_dev_files dev;
    if (kf_tls_dev_certs(certs, &dev) < 0) {
        fprintf(stderr, "kf-tls-echo: cannot make or read dev certificates in %s\n", certs);
        return 1;
    }
    uint16_t port;
    int lfd = listen_on(listen_spec, &port);
    if (lfd < 0) {
        fprintf(stderr, "kf-tls-echo: cannot listen on %s\n", listen_spec);
        return 1;
    }
    return strcmp(mode, "split") == 0 ? run_split(lfd, port, &dev, workers, reveal)
                                      : run_monolithic(lfd, port, &dev);
}
