/*
 * kf-tls-load: TLS load against an echo server (bench/kf-tls-echo.c), the same
 * client for both endpoint modes.
 *
 *   kf-tls-load --server HOST:PORT --certs DIR --op full|resume|bulk
 *               [--connections C] [--seconds S] [--priority P] [--bytes N]
 *
 * full:   connect, full handshake (client certificate), 1-byte echo, close_notify
 * resume: the same, resuming with the ticket of the previous connection
 *         (every handshake must resume, or the run fails)
 * bulk:   each connection sends 16 KiB application-data records and reads the
 *         echo back (a reader and a writer thread); with --bytes N it sends
 *         exactly N bytes per connection and checks every echoed byte
 * hold:   one connection: handshake, 1-byte echo, write the session data
 *         (ticket and resumption state) to --session-out, print "held", keep
 *         the connection open for S seconds (the memory-scan test); with
 *         --request FILE it sends FILE (a KMIP request) instead of one byte
 * Prints: "op=... connections=C seconds=S count=N per_s=X mb_per_s=Y errors=E".
 * GnuTLS writes the session secrets to $SSLKEYLOGFILE when it is set.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#define RECORD 16384

static const char *host, *port_s, *prio = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
static char ca[4200], cert[4200], key[4200];
static gnutls_certificate_credentials_t creds;
static double seconds = 5;
static uint64_t bulk_bytes;
static const char *session_out, *request_file;
static atomic_ullong count, bytes, errors;
static volatile int running = 1;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int tcp_connect(void)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, port_s, &hints, &ai) != 0)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM, 0), one = 1;
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int tls_open(gnutls_session_t *s, int fd, const gnutls_datum_t *resume)
{
    if (gnutls_init(s, GNUTLS_CLIENT) < 0)
        return -1;
    if (gnutls_priority_set_direct(*s, prio, NULL) < 0 ||
        gnutls_credentials_set(*s, GNUTLS_CRD_CERTIFICATE, creds) < 0)
        return -1;
    gnutls_session_set_verify_cert(*s, "localhost", 0);
    if (resume && resume->size)
        gnutls_session_set_data(*s, resume->data, resume->size);
    gnutls_transport_set_int(*s, fd);
    gnutls_handshake_set_timeout(*s, 10000);
    int rc;
    do
        rc = gnutls_handshake(*s);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    return rc;
}

static ssize_t recv_some(gnutls_session_t s, void *p, size_t n)
{
    ssize_t r;
    do /* AGAIN: GnuTLS handled a NewSessionTicket or KeyUpdate */
        r = gnutls_record_recv(s, p, n);
    while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
    return r;
}

/* One connection of the handshake loops: handshake, 1-byte echo, close. */
static int one_handshake(gnutls_datum_t *ticket, bool resume)
{
    int fd = tcp_connect();
    if (fd < 0)
        return -1;
    gnutls_session_t s;
    int rc = tls_open(&s, fd, resume ? ticket : NULL);
    uint8_t b = 'x';
    if (rc == 0 && resume && !gnutls_session_is_resumed(s))
        rc = -1;
    if (rc == 0 && (gnutls_record_send(s, &b, 1) != 1 || recv_some(s, &b, 1) != 1))
        rc = -1;
    if (rc == 0 && resume) {
        gnutls_free(ticket->data);
        ticket->data = NULL;
        ticket->size = 0;
        if (gnutls_session_get_data2(s, ticket) < 0)
            rc = -1;
    }
    if (rc == 0)
        gnutls_bye(s, GNUTLS_SHUT_WR);
    gnutls_deinit(s);
    close(fd);
    return rc;
}

static void *handshake_thread(void *arg)
{
    bool resume = arg != NULL;
    gnutls_datum_t ticket = {0};
    if (resume) {
        /* The first, full handshake only fetches a ticket. */
        int fd = tcp_connect();
        gnutls_session_t s;
        uint8_t b = 'x';
        if (fd >= 0 && tls_open(&s, fd, NULL) == 0) {
            if (gnutls_record_send(s, &b, 1) == 1 && recv_some(s, &b, 1) == 1)
                gnutls_session_get_data2(s, &ticket);
            gnutls_bye(s, GNUTLS_SHUT_WR);
            gnutls_deinit(s);
        }
        if (fd >= 0)
            close(fd);
    }
    while (running) {
        if (one_handshake(&ticket, resume) == 0)
            atomic_fetch_add(&count, 1);
        else
            atomic_fetch_add(&errors, 1);
    }
    gnutls_free(ticket.data);
    return NULL;
}

struct bulk {
    gnutls_session_t s;
    uint64_t sent, limit;
    int failed;
};

static void pattern(uint8_t *p, size_t n, uint64_t off)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((off + i) * 2654435761u >> 13);
}

static void *bulk_writer(void *arg)
{
    struct bulk *b = arg;
    static __thread uint8_t buf[RECORD];
    while ((b->limit ? b->sent < b->limit : running) && !b->failed) {
        size_t n = RECORD;
        if (b->limit && b->limit - b->sent < n)
            n = (size_t)(b->limit - b->sent);
        if (b->limit)
            pattern(buf, n, b->sent);
        ssize_t w = gnutls_record_send(b->s, buf, n);
        if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED)
            continue;
        if (w <= 0) {
            b->failed = 1;
            break;
        }
        b->sent += (uint64_t)w;
    }
    return NULL;
}

static void *bulk_thread(void *arg)
{
    (void)arg;
    static __thread uint8_t buf[RECORD], want[RECORD];
    int fd = tcp_connect();
    struct bulk b = {.limit = bulk_bytes};
    if (fd < 0 || tls_open(&b.s, fd, NULL) != 0) {
        atomic_fetch_add(&errors, 1);
        return NULL;
    }
    pthread_t w;
    pthread_create(&w, NULL, bulk_writer, &b);
    uint64_t got = 0;
    while (b.limit ? got < b.limit : (running || got < b.sent)) {
        ssize_t r = recv_some(b.s, buf, sizeof(buf));
        if (r <= 0) {
            b.failed = 1;
            break;
        }
        if (b.limit) {
            pattern(want, (size_t)r, got);
            if (memcmp(buf, want, (size_t)r) != 0) {
                fprintf(stderr, "kf-tls-load: echoed bytes differ at offset %llu\n",
                        (unsigned long long)got);
                b.failed = 1;
                break;
            }
        }
        got += (uint64_t)r;
        if (running)
            atomic_fetch_add(&bytes, (unsigned long long)r);
    }
    pthread_join(w, NULL);
    if (b.failed)
        atomic_fetch_add(&errors, 1);
    else
        atomic_fetch_add(&count, 1);
    gnutls_bye(b.s, GNUTLS_SHUT_WR);
    gnutls_deinit(b.s);
    close(fd);
    return NULL;
}

/* One connection held open; its session data saved for the scanner. */
static int hold(void)
{
    int fd = tcp_connect();
    gnutls_session_t s;
    uint8_t b = 'x';
    gnutls_datum_t sd = {0};
    static uint8_t req[65536], resp[65536];
    size_t req_len = 1;
    req[0] = 'x';
    if (request_file) { /* a KMIP request instead of one byte: keyfleetd answers it */
        FILE *rf = fopen(request_file, "rb");
        req_len = rf ? fread(req, 1, sizeof(req), rf) : 0;
        if (rf)
            fclose(rf);
        if (req_len == 0)
            return 1;
    }
    if (fd < 0 || tls_open(&s, fd, NULL) != 0)
        return 1;
    if (gnutls_record_send(s, req, req_len) != (ssize_t)req_len ||
        recv_some(s, resp, sizeof(resp)) <= 0 || gnutls_session_get_data2(s, &sd) < 0)
        return 1;
    FILE *f = session_out ? fopen(session_out, "wb") : NULL;
    if (f) {
        fwrite(sd.data, 1, sd.size, f);
        fclose(f);
    }
    gnutls_free(sd.data);
    printf("held %s\n", gnutls_protocol_get_name(gnutls_protocol_get_version(s)));
    fflush(stdout);
    usleep((useconds_t)(seconds * 1e6));
    /* still alive: one more exchange, then close */
    int rc = gnutls_record_send(s, req, req_len) == (ssize_t)req_len &&
                     recv_some(s, resp, sizeof(resp)) > 0
                 ? 0
                 : 1;
    (void)b;
    gnutls_bye(s, GNUTLS_SHUT_WR);
    gnutls_deinit(s);
    close(fd);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"server", required_argument, NULL, 's'},
                                         {"certs", required_argument, NULL, 'c'},
                                         {"op", required_argument, NULL, 'o'},
                                         {"connections", required_argument, NULL, 'n'},
                                         {"seconds", required_argument, NULL, 't'},
                                         {"priority", required_argument, NULL, 'p'},
                                         {"bytes", required_argument, NULL, 'b'},
                                         {"session-out", required_argument, NULL, 'S'},
                                         {"request", required_argument, NULL, 'R'},
                                         {NULL, 0, NULL, 0}};
    const char *server = NULL, *certs = NULL, *op = "full";
    int conns = 4, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': server = optarg; break;
        case 'c': certs = optarg; break;
        case 'o': op = optarg; break;
        case 'n': conns = atoi(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'p': prio = optarg; break;
        case 'b': bulk_bytes = strtoull(optarg, NULL, 10); break;
        case 'S': session_out = optarg; break;
        case 'R': request_file = optarg; break;
        default: return 2;
        }
    }
    static char hostbuf[256];
    const char *colon = server ? strrchr(server, ':') : NULL;
    if (!colon || !certs || conns < 1 || conns > 256 || (size_t)(colon - server) >= sizeof(hostbuf)) {
        fprintf(stderr, "usage: kf-tls-load --server HOST:PORT --certs DIR --op full|resume|bulk|hold "
                        "[--connections C] [--seconds S] [--priority P] [--bytes N] "
                        "[--session-out FILE]\n");
        return 2;
    }
    memcpy(hostbuf, server, (size_t)(colon - server));
    host = hostbuf;
    port_s = colon + 1;
    snprintf(ca, sizeof(ca), "%s/ca-cert.pem", certs);
    snprintf(cert, sizeof(cert), "%s/admin-cert.pem", certs);
    snprintf(key, sizeof(key), "%s/admin-key.pem", certs);
    if (gnutls_certificate_allocate_credentials(&creds) < 0 ||
        gnutls_certificate_set_x509_trust_file(creds, ca, GNUTLS_X509_FMT_PEM) <= 0 ||
        gnutls_certificate_set_x509_key_file(creds, cert, key, GNUTLS_X509_FMT_PEM) < 0) {
        fprintf(stderr, "kf-tls-load: cannot load %s/{ca,admin}-*.pem\n", certs);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN); /* a server that goes away is an error to count, not our end */
    if (strcmp(op, "hold") == 0)
        return hold();
    bool bulk = strcmp(op, "bulk") == 0, resume = strcmp(op, "resume") == 0;
    if (!bulk && !resume && strcmp(op, "full") != 0)
        return 2;
    pthread_t *t = calloc((size_t)conns, sizeof(*t));
    double t0 = now();
    for (int i = 0; i < conns; i++)
        pthread_create(&t[i], NULL, bulk ? bulk_thread : handshake_thread, resume ? (void *)1 : NULL);
    if (!(bulk && bulk_bytes)) {
        usleep((useconds_t)(seconds * 1e6));
        running = 0;
    }
    double elapsed = now() - t0;
    for (int i = 0; i < conns; i++)
        pthread_join(t[i], NULL);
    if (bulk && bulk_bytes)
        elapsed = now() - t0;
    printf("op=%s connections=%d seconds=%.2f count=%llu per_s=%.1f mb_per_s=%.1f errors=%llu\n",
           op, conns, elapsed, (unsigned long long)count, (double)count / elapsed,
           (double)(bulk && bulk_bytes ? (double)bulk_bytes * conns : (double)bytes) / elapsed / 1e6,
           (unsigned long long)errors);
    return errors ? 1 : 0;
}
