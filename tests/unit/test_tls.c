/*
 * The KMIP TLS listener in-process: a kms in dev mode in a temp dir, dev
 * certificates, a listener on 127.0.0.1:0. Mutual authentication (no cert,
 * foreign CA, wrong key purpose, unknown identity, TLS 1.1 all refused),
 * KMIP operations over TLS, robustness (garbage, oversized length, stalls)
 * and 50 concurrent clients.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/log.h"
#include "keyfleet/tls.h"
#include "keyfleet/ttlv.h"

struct fixture {
    char dir[64];
    char certs[128], foreign[128], narrow_map[160];
    struct kf_tls_dev_files dev, other_ca;
    kf_kms *kms;
    kf_tls_server *srv;    /* the dev identity map */
    kf_tls_server *narrow; /* a map that knows only admin and the server's own cert */
};

static struct fixture *F;

static int start_server(struct fixture *f, const char *map, kf_tls_server **out)
{
    struct kf_tls_server_config cfg = {.kms = f->kms,
                                       .listen = "127.0.0.1:0",
                                       .ca_file = f->dev.ca_cert,
                                       .cert_file = f->dev.server_cert,
                                       .key_file = f->dev.server_key,
                                       .identities_file = map,
                                       .message_timeout_ms = 500,
                                       .handshake_timeout_ms = 2000};
    return kf_tls_server_start(&cfg, out);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/kf-test-tls.XXXXXX");
    if (!f || !mkdtemp(f->dir))
        return -1;
    snprintf(f->certs, sizeof(f->certs), "%s/certs", f->dir);
    snprintf(f->foreign, sizeof(f->foreign), "%s/foreign", f->dir);
    if (kf_tls_dev_certs(f->certs, &f->dev) < 0 || kf_tls_dev_certs(f->foreign, &f->other_ca) < 0)
        return -1;
    snprintf(f->narrow_map, sizeof(f->narrow_map), "%s/narrow", f->dir);
    FILE *m = fopen(f->narrow_map, "w");
    if (!m)
        return -1;
    fputs("subject-CN=admin subject-O=\"keyfleet dev\" roles=admin,manage,use,export domains=*\n"
          "subject-CN=localhost roles=use domains=*\n",
          m);
    fclose(m);
    struct kf_kms_config cfg = {.dir = f->dir, .dev = true};
    if (kf_kms_open(&cfg, &f->kms) < 0) /* dev mode makes the "default" domain */
        return -1;
    if (start_server(f, f->dev.identities, &f->srv) < 0 ||
        start_server(f, f->narrow_map, &f->narrow) < 0)
        return -1;
    F = f;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    uint64_t t0 = kf_mono_ns();
    kf_tls_server_stop(f->srv);
    kf_tls_server_stop(f->narrow);
    /* Stopping does not wait for idle clients' 300 s timeout. */
    if (kf_mono_ns() - t0 > 5000000000ull)
        return -1;
    kf_kms_close(f->kms);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* ---- KMIP helpers ---- */

static kf_ttlv *request(kf_arena *a, uint32_t op, kf_ttlv **payload)
{
    return kf_ttlv_request(a, 1, 4, op, payload);
}

static kf_ttlv *create_request(kf_arena *a)
{
    kf_ttlv *p, *msg = request(a, KMIP_OP_CREATE, &p);
    kf_ttlv_add_enum(a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
    kf_ttlv *ta = kf_ttlv_struct(a, p, KMIP_TAG_TEMPLATE_ATTRIBUTE);
    kf_ttlv *at = kf_ttlv_struct(a, ta, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(a, at, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Algorithm");
    kf_ttlv_add_enum(a, at, KMIP_TAG_ATTRIBUTE_VALUE, KMIP_ALG_AES);
    at = kf_ttlv_struct(a, ta, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(a, at, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Length");
    kf_ttlv_add_int(a, at, KMIP_TAG_ATTRIBUTE_VALUE, 256);
    return msg;
}

/* Send msg, decode the answer; returns the first batch item's Result Status
 * (or -1 when the transport failed). */
static int call(kf_tls_client *cli, kf_arena *a, const kf_ttlv *msg, const kf_ttlv **item)
{
    kf_buf req, resp;
    kf_ttlv *r;
    int status = -1;
    if (kf_buf_alloc(&req, 256, 1 << 20, 0) < 0 || kf_buf_alloc(&resp, 256, 1 << 20, 0) < 0)
        return -1;
    if (kf_ttlv_encode(msg, &req) == KF_OK &&
        kf_tls_client_call(cli, req.data, req.len, &resp) == KF_OK &&
        kf_ttlv_decode(resp.data, resp.len, NULL, a, &r) == KF_OK &&
        r->tag == KMIP_TAG_RESPONSE_MESSAGE) {
        uint32_t st;
        *item = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
        if (kf_ttlv_get_enum(kf_ttlv_find(*item, KMIP_TAG_RESULT_STATUS), &st) == KF_OK)
            status = (int)st;
    }
    kf_buf_free(&req);
    kf_buf_free(&resp);
    return status;
}

/* Discover Versions over cli: its Result Status (-1: the transport failed). */
static int discover(kf_tls_client *cli)
{
    kf_arena *a;
    kf_ttlv *p;
    const kf_ttlv *item;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    int status = call(cli, a, request(a, KMIP_OP_DISCOVER_VERSIONS, &p), &item);
    kf_arena_free(a);
    return status;
}

static kf_tls_client *connect_as(kf_tls_server *srv, const char *cert, const char *key)
{
    kf_tls_client *cli = NULL;
    int rc = kf_tls_client_connect("127.0.0.1", kf_tls_server_port(srv), F->dev.ca_cert, cert, key,
                                   &cli);
    return rc == KF_OK ? cli : NULL;
}

/*
 * A refused client: in TLS 1.2 the handshake fails; in TLS 1.3 the client
 * may finish its side before the server checks its certificate, and then
 * its first request finds the connection closed. Either way no answer.
 */
static void assert_refused(kf_tls_server *srv, const char *cert, const char *key)
{
    kf_tls_client *cli = connect_as(srv, cert, key);
    if (!cli)
        return;
    assert_int_equal(discover(cli), -1);
    kf_tls_client_close(cli);
}

/* ---- tests ---- */

static void admin_runs_discover_query_create_get(void **state)
{
    struct fixture *f = *state;
    kf_tls_client *cli = connect_as(f->srv, f->dev.admin_cert, f->dev.admin_key);
    assert_non_null(cli);
    assert_string_equal(kf_tls_client_version(cli), "TLS1.3");
    kf_arena *a;
    kf_ttlv *p;
    const kf_ttlv *item;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    assert_int_equal(call(cli, a, request(a, KMIP_OP_DISCOVER_VERSIONS, &p), &item),
                     KMIP_RESULT_STATUS_SUCCESS);
    assert_non_null(KF_TTLV_PATH(item, KMIP_TAG_RESPONSE_PAYLOAD, KMIP_TAG_PROTOCOL_VERSION));
    kf_ttlv *msg = request(a, KMIP_OP_QUERY, &p);
    kf_ttlv_add_enum(a, p, KMIP_TAG_QUERY_FUNCTION, KMIP_QUERY_QUERY_OPERATIONS);
    assert_int_equal(call(cli, a, msg, &item), KMIP_RESULT_STATUS_SUCCESS);
    assert_int_equal(call(cli, a, create_request(a), &item), KMIP_RESULT_STATUS_SUCCESS);
    const char *uid;
    size_t uid_len;
    assert_int_equal(
        kf_ttlv_get_text(KF_TTLV_PATH(item, KMIP_TAG_RESPONSE_PAYLOAD, KMIP_TAG_UNIQUE_IDENTIFIER),
                         &uid, &uid_len),
        KF_OK);
    assert_true(uid_len > 8 && strncmp(uid, "default/", 8) == 0);
    msg = request(a, KMIP_OP_GET, &p);
    kf_ttlv_add_text_n(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid, uid_len);
    assert_int_equal(call(cli, a, msg, &item), KMIP_RESULT_STATUS_SUCCESS);
    const uint8_t *km;
    size_t kmlen;
    assert_int_equal(kf_ttlv_get_bytes(KF_TTLV_PATH(item, KMIP_TAG_RESPONSE_PAYLOAD,
                                                    KMIP_TAG_SYMMETRIC_KEY, KMIP_TAG_KEY_BLOCK,
                                                    KMIP_TAG_KEY_VALUE, KMIP_TAG_KEY_MATERIAL),
                                       &km, &kmlen),
                     KF_OK);
    assert_int_equal(kmlen, 32);
    kf_arena_free(a);
    kf_tls_client_close(cli);
}

/* Connect to f->srv as admin with the client options o; the connection must end
 * in want (KF_OK, or the refusal). The client, if any. */
static kf_tls_client *connect_admin_with(struct fixture *f, const struct kf_tls_client_opts *o,
                                         int want)
{
    kf_tls_client *cli = NULL;
    assert_int_equal(kf_tls_client_connect_ex("127.0.0.1", kf_tls_server_port(f->srv),
                                              f->dev.ca_cert, f->dev.admin_cert, f->dev.admin_key,
                                              o, &cli),
                     want);
    return cli;
}

static void tls12_also_works(void **state)
{
    struct fixture *f = *state;
    struct kf_tls_client_opts o = {.priority = "SECURE256:+SECURE128:-VERS-ALL:+VERS-TLS1.2"};
    kf_tls_client *cli = connect_admin_with(f, &o, KF_OK);
    assert_string_equal(kf_tls_client_version(cli), "TLS1.2");
    assert_int_equal(discover(cli), KMIP_RESULT_STATUS_SUCCESS);
    kf_tls_client_close(cli);
}

static void user_may_not_create(void **state)
{
    struct fixture *f = *state;
    kf_tls_client *cli = connect_as(f->srv, f->dev.user_cert, f->dev.user_key);
    assert_non_null(cli);
    kf_arena *a;
    const kf_ttlv *item;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    assert_int_equal(call(cli, a, create_request(a), &item), KMIP_RESULT_STATUS_OPERATION_FAILED);
    uint32_t reason;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_REASON), &reason), KF_OK);
    assert_int_equal(reason, KMIP_REASON_PERMISSION_DENIED);
    kf_arena_free(a);
    kf_tls_client_close(cli);
}

static void refusals(void **state)
{
    struct fixture *f = *state;
    /* No client certificate. */
    assert_refused(f->srv, NULL, NULL);
    /* A client certificate from another CA (even one whose subject is "admin"). */
    assert_refused(f->srv, f->other_ca.admin_cert, f->other_ca.admin_key);
    /* Chains to our CA but matches no identity rule. */
    assert_refused(f->narrow, f->dev.user_cert, f->dev.user_key);
    /* A rule matches, but the certificate is for TLS servers only. */
    assert_refused(f->narrow, f->dev.server_cert, f->dev.server_key);
    /* The positive control on the same server. */
    kf_tls_client *cli = connect_as(f->narrow, f->dev.admin_cert, f->dev.admin_key);
    assert_non_null(cli);
    assert_int_equal(discover(cli), KMIP_RESULT_STATUS_SUCCESS);
    kf_tls_client_close(cli);
}

static void tls11_is_refused(void **state)
{
    struct fixture *f = *state;
    struct kf_tls_client_opts o = {.priority = "NORMAL:-VERS-ALL:+VERS-TLS1.1"};
    kf_tls_client *cli = connect_admin_with(f, &o, KF_ERR_TLS);
    assert_null(cli);
}

static void client_checks_server_name(void **state)
{
    struct fixture *f = *state;
    struct kf_tls_client_opts o = {.server_name = "kms.example.com"};
    kf_tls_client *cli = connect_admin_with(f, &o, KF_ERR_TLS);
    /* And the server's CA must be the one given. */
    assert_int_equal(kf_tls_client_connect("127.0.0.1", kf_tls_server_port(f->srv),
                                           f->other_ca.ca_cert, f->dev.admin_cert, f->dev.admin_key,
                                           &cli),
                     KF_ERR_TLS);
}

static void assert_second_client_served(struct fixture *f)
{
    kf_tls_client *cli = connect_as(f->srv, f->dev.admin_cert, f->dev.admin_key);
    assert_non_null(cli);
    assert_int_equal(discover(cli), KMIP_RESULT_STATUS_SUCCESS);
    kf_tls_client_close(cli);
}

/* Send raw bytes; the server must answer with a KMIP failure or close. */
static void assert_error_or_close(struct fixture *f, const uint8_t *bytes, size_t n)
{
    kf_tls_client *cli = connect_as(f->srv, f->dev.admin_cert, f->dev.admin_key);
    assert_non_null(cli);
    kf_buf resp;
    assert_int_equal(kf_buf_alloc(&resp, 256, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_tls_client_send_raw(cli, bytes, n), KF_OK);
    int rc = kf_tls_client_recv(cli, &resp);
    if (rc == KF_OK) {
        kf_arena *a;
        kf_ttlv *r;
        uint32_t st = 0;
        assert_int_equal(kf_arena_new(&a, 0), KF_OK);
        assert_int_equal(kf_ttlv_decode(resp.data, resp.len, NULL, a, &r), KF_OK);
        assert_int_equal(
            kf_ttlv_get_enum(KF_TTLV_PATH(r, KMIP_TAG_BATCH_ITEM, KMIP_TAG_RESULT_STATUS), &st),
            KF_OK);
        assert_int_equal(st, KMIP_RESULT_STATUS_OPERATION_FAILED);
        kf_arena_free(a);
    } else {
        assert_int_equal(rc, KF_ERR_CONNECT);
    }
    kf_buf_free(&resp);
    kf_tls_client_close(cli);
    assert_second_client_served(f);
}

static void garbage_oversize_and_stalls(void **state)
{
    struct fixture *f = *state;
    /* Not TTLV at all: unknown type 0xff. */
    static const uint8_t garbage[16] = {0xde, 0xad, 0xbe, 0xff, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8};
    assert_error_or_close(f, garbage, sizeof(garbage));
    /* A well-formed header announcing 2 MiB: refused before reading it. */
    static const uint8_t huge[8] = {0x42, 0x00, 0x78, 0x01, 0x00, 0x20, 0x00, 0x00};
    assert_error_or_close(f, huge, sizeof(huge));
    /* A structure whose content is not TTLV: the KMIP layer answers. */
    static const uint8_t bad_body[16] = {0x42, 0x00, 0x78, 0x01, 0, 0, 0, 8,
                                         9,    9,    9,    9,    9, 9, 9, 9};
    assert_error_or_close(f, bad_body, sizeof(bad_body));
    /* Half a header, then silence: closed after the 500 ms message timeout. */
    uint64_t t0 = kf_mono_ns();
    assert_error_or_close(f, huge, 5);
    assert_true(kf_mono_ns() - t0 < 5000000000ull);
}

struct worker {
    int ok;
};

static void *concurrent_client(void *arg)
{
    struct worker *w = arg;
    kf_tls_client *cli = connect_as(F->srv, F->dev.admin_cert, F->dev.admin_key);
    kf_arena *a;
    if (!cli || kf_arena_new(&a, 0) < 0)
        return NULL;
    for (int i = 0; i < 20; i++) {
        kf_ttlv *p, *msg;
        const kf_ttlv *item;
        if (i % 5 == 4) {
            msg = create_request(a);
        } else {
            msg = request(a, KMIP_OP_QUERY, &p);
            kf_ttlv_add_enum(a, p, KMIP_TAG_QUERY_FUNCTION, KMIP_QUERY_QUERY_OPERATIONS);
        }
        if (call(cli, a, msg, &item) == KMIP_RESULT_STATUS_SUCCESS)
            w->ok++;
        kf_arena_reset(a);
    }
    kf_arena_free(a);
    kf_tls_client_close(cli);
    return NULL;
}

/* A TCP connection to port; the socket gives up reading after 8 s. */
static int raw_connect(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = 8};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return -1;
    return fd;
}

static void silent_client_is_dropped_after_handshake_timeout(void **state)
{
    struct fixture *f = *state;
    int fd = raw_connect(kf_tls_server_port(f->srv));
    assert_true(fd >= 0);
    uint64_t t0 = kf_mono_ns();
    char b;
    /* The server closes (recv 0) after the 2 s handshake timeout, not our 8 s. */
    assert_int_equal(recv(fd, &b, 1, 0), 0);
    uint64_t waited = kf_mono_ns() - t0;
    assert_true(waited > 1500000000ull && waited < 6000000000ull);
    close(fd);
    assert_second_client_served(f);
}

static void connections_beyond_the_cap_are_closed(void **state)
{
    struct fixture *f = *state;
    kf_tls_server *small;
    struct kf_tls_server_config cfg = {.kms = f->kms,
                                       .listen = "127.0.0.1:0",
                                       .ca_file = f->dev.ca_cert,
                                       .cert_file = f->dev.server_cert,
                                       .key_file = f->dev.server_key,
                                       .identities_file = f->dev.identities,
                                       .max_connections = 2};
    assert_int_equal(kf_tls_server_start(&cfg, &small), KF_OK);
    int a = raw_connect(kf_tls_server_port(small)), b = raw_connect(kf_tls_server_port(small));
    assert_true(a >= 0 && b >= 0);
    for (int i = 0; i < 200 && kf_tls_server_connections(small) < 2; i++)
        usleep(10000);
    assert_int_equal(kf_tls_server_connections(small), 2);
    int c = raw_connect(kf_tls_server_port(small));
    char byte;
    assert_int_equal(recv(c, &byte, 1, 0), 0); /* closed at once */
    close(c);
    close(a);
    close(b);
    for (int i = 0; i < 300 && kf_tls_server_connections(small) > 0; i++)
        usleep(10000);
    assert_int_equal(kf_tls_server_connections(small), 0);
    /* With the slots free again, a real client is served. */
    kf_tls_client *cli = connect_as(small, f->dev.admin_cert, f->dev.admin_key);
    assert_non_null(cli);
    assert_int_equal(discover(cli), KMIP_RESULT_STATUS_SUCCESS);
    /* Stop with this client still connected and idle: it does not wait 300 s. */
    uint64_t t0 = kf_mono_ns();
    kf_tls_server_stop(small);
    assert_true(kf_mono_ns() - t0 < 3000000000ull);
    kf_tls_client_close(cli);
}

static void fifty_concurrent_clients(void **state)
{
    (void)state;
    enum { N = 50 };
    pthread_t t[N];
    struct worker w[N];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_create(&t[i], NULL, concurrent_client, &w[i]), 0);
    int total = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        total += w[i].ok;
    }
    assert_int_equal(total, N * 20);
}

static void start_refuses_bad_configuration(void **state)
{
    struct fixture *f = *state;
    kf_tls_server *srv = NULL;
    struct kf_tls_server_config cfg = {.kms = f->kms,
                                       .listen = "127.0.0.1:0",
                                       .ca_file = f->dev.ca_cert,
                                       .cert_file = f->dev.server_cert,
                                       .key_file = f->other_ca.server_key, /* not its key */
                                       .identities_file = f->dev.identities};
    assert_int_equal(kf_tls_server_start(&cfg, &srv), KF_ERR_TLS_CONFIG);
    cfg.key_file = f->dev.server_key;
    cfg.ca_file = f->narrow_map; /* not a certificate */
    assert_int_equal(kf_tls_server_start(&cfg, &srv), KF_ERR_TLS_CONFIG);
    cfg.ca_file = f->dev.ca_cert;
    cfg.identities_file = f->dev.ca_cert; /* not an identity map */
    assert_int_equal(kf_tls_server_start(&cfg, &srv), KF_ERR_IDENTITY_FILE);
    cfg.identities_file = NULL;
    assert_int_equal(kf_tls_server_start(&cfg, &srv), KF_ERR_TLS_CONFIG);
    cfg.identities_file = f->dev.identities;
    cfg.listen = "127.0.0.1";
    assert_int_equal(kf_tls_server_start(&cfg, &srv), KF_ERR_ARG);
    cfg.listen = "127.0.0.1:0";
    cfg.priority = "NORMAL:+NO-SUCH-THING";
    assert_int_equal(kf_tls_server_start(&cfg, &srv), KF_ERR_TLS_CONFIG);
    assert_null(srv);
}

static void dev_certs_are_private_and_kept(void **state)
{
    struct fixture *f = *state;
    struct stat sb;
    const char *files[] = {f->dev.ca_cert, f->dev.server_key, f->dev.admin_key, f->dev.user_key,
                           f->dev.identities};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        assert_int_equal(stat(files[i], &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0600);
    }
    assert_int_equal(stat(f->certs, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    /* A second call keeps the existing set (same CA file contents). */
    struct stat before;
    assert_int_equal(stat(f->dev.ca_cert, &before), 0);
    struct kf_tls_dev_files again;
    assert_int_equal(kf_tls_dev_certs(f->certs, &again), KF_OK);
    assert_string_equal(again.ca_cert, f->dev.ca_cert);
    assert_int_equal(stat(again.ca_cert, &sb), 0);
    assert_int_equal(sb.st_ino, before.st_ino);
}

int main(void)
{
    kf_log_open(NULL, KF_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(admin_runs_discover_query_create_get),
        cmocka_unit_test(tls12_also_works),
        cmocka_unit_test(user_may_not_create),
        cmocka_unit_test(refusals),
        cmocka_unit_test(tls11_is_refused),
        cmocka_unit_test(client_checks_server_name),
        cmocka_unit_test(garbage_oversize_and_stalls),
        cmocka_unit_test(silent_client_is_dropped_after_handshake_timeout),
        cmocka_unit_test(connections_beyond_the_cap_are_closed),
        cmocka_unit_test(fifty_concurrent_clients),
        cmocka_unit_test(start_refuses_bad_configuration),
        cmocka_unit_test(dev_certs_are_private_and_kept),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
