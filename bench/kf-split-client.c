/*
 * kf-split-client: the split TLS client (kf_tlssplit_client_*, claim 17) as a
 * program, for its system test (tests/system/test_tls_split_client.sh) and
 * as the model of how a tool wires --tls-split: main() runs the session
 * handler when exec'd with KF_TLSSPLIT_HANDLER_ARG, and the handler is this
 * very binary ("/proc/self/exe") started from a fresh address space.
 *
 *   kf-split-client --server HOST:PORT --ca FILE [--cert FILE --key FILE]
 *       [--server-name NAME] [--priority P] [--monolithic] [--fork]
 *       [--connections N] [--no-resume] [--timeout MS] [--domain D]
 *       [--pkcs11-module SO --pin PIN] [--test-reveal] [--verbose]
 *       STEP...
 *
 * Every connection (through one client handler, so the second can resume)
 * runs the STEPs in order:
 *   query | create | get        KMIP Query, Create (AES-256), Get of the created key
 *   echo:N                      send a line of N bytes, read the same N bytes back (echo servers)
 *   line:TEXT                   send TEXT and a newline, print the line that comes back
 *   read-line                   print the next line the server sends
 *   send:TEXT                   send TEXT and a newline
 *   ku | ku-ask                 TLS 1.3 KeyUpdate (ku-ask: request the server's too)
 *   sleep:MS                    wait
 *   hold:S                      print "held", keep the connection S seconds (memory scan)
 *   hold-until:PATH             print "held", keep the connection until PATH exists (60 s at most)
 * Prints "pid=P handler=H" first, then per connection "connection I version=V
 * resumed=R" and each step's result, "handovers=N" at its end. Exit status 0
 * only if every step worked.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/log.h"
#include "keyfleet/tls.h"
#include "keyfleet/tlssplit.h"
#include "keyfleet/ttlv.h"

static const char *domain = "default";
static char created_uid[128];

static void usage(void)
{
    fprintf(stderr, "usage: kf-split-client --server HOST:PORT --ca FILE [--cert F --key F] "
                    "[options] STEP...\n(see the comment at the top of bench/kf-split-client.c)\n");
    exit(2);
}

/* ---- KMIP ---- */

static kf_ttlv *request(kf_arena *a, uint32_t op, kf_ttlv **payload)
{
    kf_ttlv *msg = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    kf_ttlv *hdr = kf_ttlv_struct(a, msg, KMIP_TAG_REQUEST_HEADER);
    kf_ttlv *pv = kf_ttlv_struct(a, hdr, KMIP_TAG_PROTOCOL_VERSION);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 2);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MINOR, 1);
    kf_ttlv_add_int(a, hdr, KMIP_TAG_BATCH_COUNT, 1);
    kf_ttlv *bi = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, op);
    *payload = kf_ttlv_struct(a, bi, KMIP_TAG_REQUEST_PAYLOAD);
    return msg;
}

/* Send msg, check the result status; *payload: the response payload. */
static int kmip_call(kf_tlssplit_client *cli, kf_arena *a, kf_ttlv *msg, const kf_ttlv **payload)
{
    kf_buf req, resp;
    kf_ttlv *r;
    uint32_t status = 1;
    int rc = kf_buf_alloc(&req, 1024, KF_TLS_MESSAGE_MAX, KF_BUF_SECRET);
    if (rc < 0)
        return rc;
    rc = kf_buf_alloc(&resp, 1024, KF_TLS_MESSAGE_MAX, KF_BUF_SECRET);
    if (rc == KF_OK)
        rc = kf_ttlv_encode(msg, &req);
    if (rc == KF_OK)
        rc = kf_tlssplit_client_call(cli, req.data, req.len, &resp);
    struct kf_ttlv_limits lim = {.max_items = 100000, .max_total = KF_TLS_MESSAGE_MAX};
    if (rc == KF_OK)
        rc = kf_ttlv_decode(resp.data, resp.len, &lim, a, &r);
    if (rc == KF_OK) {
        const kf_ttlv *bi = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
        if (kf_ttlv_get_enum(kf_ttlv_find(bi, KMIP_TAG_RESULT_STATUS), &status) < 0 ||
            status != KMIP_RESULT_STATUS_SUCCESS)
            rc = KF_ERR_PERM;
        *payload = kf_ttlv_find(bi, KMIP_TAG_RESPONSE_PAYLOAD);
    }
    kf_buf_free(&req);
    kf_buf_free(&resp);
    return rc;
}

static int step_kmip(kf_tlssplit_client *cli, const char *step)
{
    kf_arena *a;
    kf_ttlv *p, *msg;
    const kf_ttlv *r = NULL;
    int rc = kf_arena_new(&a, 0);
    if (rc < 0)
        return rc;
    if (strcmp(step, "query") == 0) {
        msg = request(a, KMIP_OP_QUERY, &p);
        kf_ttlv_add_enum(a, p, KMIP_TAG_QUERY_FUNCTION, KMIP_QUERY_QUERY_OPERATIONS);
        kf_ttlv_add_enum(a, p, KMIP_TAG_QUERY_FUNCTION, KMIP_QUERY_QUERY_OBJECTS);
        rc = kmip_call(cli, a, msg, &r);
        size_t ops = 0;
        for (const kf_ttlv *o = kf_ttlv_find(r, KMIP_TAG_OPERATION); o;
             o = kf_ttlv_find_next(o, KMIP_TAG_OPERATION))
            ops++;
        if (rc == KF_OK)
            printf("query ok operations=%zu\n", ops);
    } else if (strcmp(step, "create") == 0) {
        msg = request(a, KMIP_OP_CREATE, &p);
        kf_ttlv_add_enum(a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
        kf_ttlv *at = kf_ttlv_struct(a, p, KMIP_TAG_ATTRIBUTES);
        kf_ttlv_add_enum(a, at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
        kf_ttlv_add_int(a, at, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 256);
        kf_ttlv_add_int(a, at, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK,
                        (int32_t)(KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT));
        kf_ttlv_add_text(a, at, KMIP_TAG_KEYFLEET_DOMAIN, domain);
        rc = kmip_call(cli, a, msg, &r);
        const char *uid = NULL;
        size_t n = 0;
        if (rc == KF_OK &&
            (kf_ttlv_get_text(kf_ttlv_find(r, KMIP_TAG_UNIQUE_IDENTIFIER), &uid, &n) < 0 ||
             n == 0 || n >= sizeof(created_uid)))
            rc = KF_ERR_TTLV_TYPE;
        if (rc == KF_OK) {
            memcpy(created_uid, uid, n);
            created_uid[n] = 0;
            printf("create ok uid=%s\n", created_uid);
        }
    } else { /* get */
        msg = request(a, KMIP_OP_GET, &p);
        kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, created_uid);
        rc = created_uid[0] ? kmip_call(cli, a, msg, &r) : KF_ERR_ARG;
        const kf_ttlv *kv = KF_TTLV_PATH(kf_ttlv_find(r, KMIP_TAG_SYMMETRIC_KEY),
                                         KMIP_TAG_KEY_BLOCK, KMIP_TAG_KEY_VALUE);
        const uint8_t *m = NULL;
        size_t mlen = 0;
        if (rc == KF_OK && kf_ttlv_get_bytes(kf_ttlv_find(kv, KMIP_TAG_KEY_MATERIAL), &m, &mlen) < 0)
            rc = KF_ERR_TTLV_TYPE;
        if (rc == KF_OK)
            printf("get ok uid=%s key_bytes=%zu\n", created_uid, mlen);
    }
    kf_arena_free(a);
    return rc;
}

/* ---- raw application data (echo servers) ---- */

static int recv_exact(kf_tlssplit_conn *c, uint8_t *p, size_t n, int timeout_ms)
{
    while (n > 0) {
        size_t got;
        int rc = kf_tlssplit_recv(c, p, n, timeout_ms, &got);
        if (rc < 0)
            return rc;
        p += got;
        n -= got;
    }
    return KF_OK;
}

static int step_echo(kf_tlssplit_conn *c, size_t n, int timeout_ms)
{
    uint8_t *out = malloc(n ? n : 1), *in = malloc(n ? n : 1);
    int rc = out && in ? KF_OK : KF_ERR_NOMEM;
    /* Letters and a final newline: line-based echo servers (gnutls-serv) answer whole lines. */
    for (size_t i = 0; rc == KF_OK && i < n; i++)
        out[i] = i + 1 == n ? '\n' : (uint8_t)('a' + rand() % 26);
    if (rc == KF_OK)
        rc = kf_tlssplit_send(c, out, n, timeout_ms);
    if (rc == KF_OK)
        rc = recv_exact(c, in, n, timeout_ms);
    if (rc == KF_OK && memcmp(in, out, n) != 0)
        rc = KF_ERR_AUTH;
    if (rc == KF_OK)
        printf("echo ok bytes=%zu\n", n);
    free(out);
    free(in);
    return rc;
}

static int read_line(kf_tlssplit_conn *c, int timeout_ms)
{
    char line[4096];
    size_t n = 0;
    while (n + 1 < sizeof(line)) {
        int rc = recv_exact(c, (uint8_t *)line + n, 1, timeout_ms);
        if (rc < 0)
            return rc;
        if (line[n] == '\n')
            break;
        n++;
    }
    line[n] = 0;
    printf("line: %s\n", line);
    return KF_OK;
}

static int step_line(kf_tlssplit_conn *c, const char *text, int timeout_ms)
{
    size_t n = strlen(text);
    char *out = malloc(n + 1);
    if (!out)
        return KF_ERR_NOMEM;
    memcpy(out, text, n);
    out[n] = '\n';
    int rc = kf_tlssplit_send(c, (const uint8_t *)out, n + 1, timeout_ms);
    free(out);
    return rc < 0 ? rc : read_line(c, timeout_ms);
}

static int run_step(kf_tlssplit_client *cli, const char *step, int timeout_ms)
{
    kf_tlssplit_conn *c = kf_tlssplit_client_conn(cli);
    if (!strcmp(step, "query") || !strcmp(step, "create") || !strcmp(step, "get"))
        return step_kmip(cli, step);
    if (!strncmp(step, "sleep:", 6)) {
        usleep((useconds_t)atoi(step + 6) * 1000);
        return KF_OK;
    }
    if (!c) {
        fprintf(stderr, "kf-split-client: step %s needs the split mode\n", step);
        return KF_ERR_USAGE;
    }
    if (!strncmp(step, "echo:", 5))
        return step_echo(c, (size_t)strtoul(step + 5, NULL, 10), timeout_ms);
    if (!strncmp(step, "line:", 5))
        return step_line(c, step + 5, timeout_ms);
    if (!strcmp(step, "read-line"))
        return read_line(c, timeout_ms);
    if (!strncmp(step, "send:", 5)) {
        char line[4096];
        int n = snprintf(line, sizeof(line), "%s\n", step + 5);
        int rc = n > 0 && (size_t)n < sizeof(line)
                     ? kf_tlssplit_send(c, (const uint8_t *)line, (size_t)n, timeout_ms)
                     : KF_ERR_LIMIT;
        if (rc == KF_OK)
            printf("sent %s\n", step + 5);
        return rc;
    }
    if (!strcmp(step, "ku") || !strcmp(step, "ku-ask")) {
        int rc = kf_tlssplit_key_update(c, strcmp(step, "ku-ask") == 0);
        if (rc == KF_OK)
            printf("%s ok\n", step);
        return rc;
    }
    if (!strncmp(step, "hold:", 5)) {
        printf("held\n");
        fflush(stdout);
        sleep((unsigned)atoi(step + 5));
        return KF_OK;
    }
    if (!strncmp(step, "hold-until:", 11)) {
        printf("held\n");
        fflush(stdout);
        for (int t = 0; t < 1200 && access(step + 11, F_OK) != 0; t++)
            usleep(50000);
        return access(step + 11, F_OK) == 0 ? KF_OK : KF_ERR_TIMEOUT;
    }
    fprintf(stderr, "kf-split-client: unknown step %s\n", step);
    return KF_ERR_USAGE;
}

int main(int argc, char **argv)
{
    /* The client session handler is this program, exec'd (as a tool would do it). */
    if (argc == 2 && strcmp(argv[1], KF_TLSSPLIT_HANDLER_ARG) == 0)
        return kf_tlssplit_handler_main();
    struct kf_tlssplit_client_config cfg = {.exec_path = "/proc/self/exe"};
    const char *server = NULL;
    int connections = 1, i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VAL(name, dst)                                                                             \
    if (strcmp(o, name) == 0) {                                                                    \
        if (!v)                                                                                    \
            usage();                                                                               \
        dst = v;                                                                                   \
        i++;                                                                                       \
        continue;                                                                                  \
    }
        VAL("--server", server);
        VAL("--ca", cfg.ca_file);
        VAL("--cert", cfg.cert_file);
        VAL("--key", cfg.key_file);
        VAL("--server-name", cfg.server_name);
        VAL("--priority", cfg.priority);
        VAL("--domain", domain);
        VAL("--pkcs11-module", cfg.pkcs11_module);
        VAL("--pin", cfg.key_pin);
        if (strcmp(o, "--connections") == 0 && v) {
            connections = atoi(argv[++i]);
            continue;
        }
        if (strcmp(o, "--timeout") == 0 && v) {
            cfg.timeout_ms = atoi(argv[++i]);
            continue;
        }
        if (strcmp(o, "--monolithic") == 0)
            cfg.monolithic = true;
        else if (strcmp(o, "--fork") == 0)
            cfg.exec_path = NULL;
        else if (strcmp(o, "--no-resume") == 0)
            cfg.no_resume = true;
        else if (strcmp(o, "--test-reveal") == 0)
            cfg.test_reveal_secrets = true;
        else if (strcmp(o, "--verbose") == 0)
            cfg.verbose = true;
        else
            usage();
    }
    char host[256];
    const char *colon = server ? strrchr(server, ':') : NULL;
    if (!colon || !cfg.ca_file || (size_t)(colon - server) >= sizeof(host) || connections < 1)
        usage();
    memcpy(host, server, (size_t)(colon - server));
    host[colon - server] = 0;
    uint16_t port = (uint16_t)atoi(colon + 1);
    srand((unsigned)time(NULL));
    kf_log_open(NULL, cfg.verbose ? KF_LOG_INFO : KF_LOG_WARN);

    kf_tlssplit_handler *h = NULL;
    int rc = KF_OK;
    if (!cfg.monolithic) {
        rc = kf_tlssplit_client_handler_start(&cfg, &h);
        if (rc < 0) {
            fprintf(stderr, "kf-split-client: no session handler: %s\n", kf_strerror(rc));
            return 1;
        }
        cfg.handler = h; /* one handler for every connection: the next one can resume */
    }
    printf("pid=%d handler=%d\n", (int)getpid(), kf_tlssplit_handler_pid(h));
    fflush(stdout);
    for (int k = 1; rc == KF_OK && k <= connections; k++) {
        kf_tlssplit_client *cli;
        rc = kf_tlssplit_client_connect(host, port, &cfg, &cli);
        if (rc < 0) {
            fprintf(stderr, "kf-split-client: connection %d: %s\n", k, kf_strerror(rc));
            break;
        }
        printf("connection %d version=%s resumed=%d\n", k, kf_tlssplit_client_version(cli),
               kf_tlssplit_client_resumed(cli) ? 1 : 0);
        fflush(stdout);
        for (int s = i; rc == KF_OK && s < argc; s++) {
            rc = run_step(cli, argv[s], cfg.timeout_ms > 0 ? cfg.timeout_ms : 60000);
            if (rc < 0)
                fprintf(stderr, "kf-split-client: connection %d: %s: %s\n", k, argv[s],
                        kf_strerror(rc));
            fflush(stdout);
        }
        if (kf_tlssplit_client_conn(cli))
            printf("handovers=%llu\n",
                   (unsigned long long)kf_tlssplit_handovers(kf_tlssplit_client_conn(cli)));
        kf_tlssplit_client_close(cli);
    }
    kf_tlssplit_handler_stop(h);
    return rc == KF_OK ? 0 : 1;
}
