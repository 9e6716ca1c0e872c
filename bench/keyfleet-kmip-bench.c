/*
 * keyfleet-kmip-bench: KMIP load over mutually authenticated TLS.
 * Opens C connections (one thread each), runs one operation in a closed loop
 * for S seconds, and prints ops/s and p50/p99 latency. The same binary and
 * workload are run against keyfleetd and against pykmip-server by
 * bench/run-kmip-bench.sh, which prints the ratio.
 *
 *   keyfleet-kmip-bench --server HOST:PORT --ca F --cert F --key F
 *                       [--op get|encrypt|mac|create] [--connections C]
 *                       [--seconds S] [--kmip 1.2] [--encrypt-mode gcm|cbc]
 *                       [--domain-attribute] (tag Create with x-keyfleet-domain=default)
 */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/log.h"
#include "keyfleet/tls.h"
#include "keyfleet/ttlv.h"

struct bench_cfg {
    char host[256];
    uint16_t port;
    const char *ca, *cert, *key, *op, *mode, *mac_key;
    int connections, major, minor;
    double seconds;
    char aes_uid[128], hmac_uid[128];
};

struct worker {
    const struct bench_cfg *cfg;
    pthread_t thread;
    uint64_t *lat_ns;
    size_t n, cap, errors;
    char first_error[256];
};

static kf_ttlv *request(kf_arena *a, const struct bench_cfg *cfg, uint32_t op, kf_ttlv **payload)
{
    kf_ttlv *msg = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    kf_ttlv *h = kf_ttlv_struct(a, msg, KMIP_TAG_REQUEST_HEADER);
    kf_ttlv *pv = kf_ttlv_struct(a, h, KMIP_TAG_PROTOCOL_VERSION);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR, cfg->major);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MINOR, cfg->minor);
    kf_ttlv_add_int(a, h, KMIP_TAG_BATCH_COUNT, 1);
    kf_ttlv *bi = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, op);
    *payload = kf_ttlv_struct(a, bi, KMIP_TAG_REQUEST_PAYLOAD);
    return msg;
}

static void v1_attribute_enum(kf_arena *a, kf_ttlv *ta, const char *name, uint32_t v)
{
    kf_ttlv *at = kf_ttlv_struct(a, ta, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(a, at, KMIP_TAG_ATTRIBUTE_NAME, name);
    kf_ttlv_add_enum(a, at, KMIP_TAG_ATTRIBUTE_VALUE, v);
}
static void v1_attribute_int(kf_arena *a, kf_ttlv *ta, const char *name, int32_t v)
{
    kf_ttlv *at = kf_ttlv_struct(a, ta, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(a, at, KMIP_TAG_ATTRIBUTE_NAME, name);
    kf_ttlv_add_int(a, at, KMIP_TAG_ATTRIBUTE_VALUE, v);
}

static kf_ttlv *create_request(kf_arena *a, const struct bench_cfg *cfg, uint32_t alg, int32_t len,
                               uint32_t usage)
{
    kf_ttlv *p, *msg = request(a, cfg, KMIP_OP_CREATE, &p);
    kf_ttlv_add_enum(a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
    kf_ttlv *ta = kf_ttlv_struct(a, p, KMIP_TAG_TEMPLATE_ATTRIBUTE);
    v1_attribute_enum(a, ta, "Cryptographic Algorithm", alg);
    v1_attribute_int(a, ta, "Cryptographic Length", len);
    v1_attribute_int(a, ta, "Cryptographic Usage Mask", (int32_t)usage);
    return msg;
}

static kf_ttlv *build(kf_arena *a, const struct bench_cfg *cfg, const char *op)
{
    static const uint8_t data[64] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    static const uint8_t iv[16] = {0xca, 0xfe, 0xba, 0xbe, 0xfa, 0xce, 0xdb, 0xad, 0xde, 0xca,
                                   0xf8, 0x88, 1, 2, 3, 4};
    kf_ttlv *p, *msg;
    if (strcmp(op, "create") == 0)
        return create_request(a, cfg, KMIP_ALG_AES, 256,
                              KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT);
    if (strcmp(op, "get") == 0) {
        msg = request(a, cfg, KMIP_OP_GET, &p);
        kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, cfg->aes_uid);
        return msg;
    }
    bool mac = strcmp(op, "mac") == 0;
    msg = request(a, cfg, mac ? KMIP_OP_MAC : KMIP_OP_ENCRYPT, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, mac ? cfg->hmac_uid : cfg->aes_uid);
    kf_ttlv *cp = kf_ttlv_struct(a, p, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
    if (mac) {
        kf_ttlv_add_enum(a, cp, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_HMAC_SHA256);
    } else {
        bool gcm = strcmp(cfg->mode, "gcm") == 0;
        kf_ttlv_add_enum(a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, gcm ? KMIP_MODE_GCM : KMIP_MODE_CBC);
        if (!gcm)
            kf_ttlv_add_enum(a, cp, KMIP_TAG_PADDING_METHOD, KMIP_PAD_PKCS5);
        kf_ttlv_add_enum(a, cp, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
        if (gcm && (cfg->major > 1 || cfg->minor >= 4)) /* Tag Length is KMIP 1.4 */
            kf_ttlv_add_int(a, cp, KMIP_TAG_TAG_LENGTH, 16);
        /* Payload order is the spec's: Data, then IV/Counter/Nonce (strict parsers care). */
        kf_ttlv_add_bytes(a, p, KMIP_TAG_DATA, data, sizeof(data));
        kf_ttlv_add_bytes(a, p, KMIP_TAG_IV_COUNTER_NONCE, iv, gcm ? 12 : 16);
        return msg;
    }
    kf_ttlv_add_bytes(a, p, KMIP_TAG_DATA, data, sizeof(data));
    return msg;
}

/* One call; KF_OK only for a Success result. uid_out (optional) gets the payload's UID. */
static int call(kf_tls_client *t, kf_ttlv *msg, kf_buf *req, kf_buf *resp, kf_arena *a,
                char *uid_out, size_t uid_len, char *why, size_t why_len)
{
    kf_buf_reset(req);
    KF_GUARD(kf_ttlv_encode(msg, req));
    int rc = kf_tls_client_call(t, req->data, req->len, resp);
    if (rc < 0) {
        snprintf(why, why_len, "transport: %s", kf_strerror(rc));
        return rc;
    }
    kf_ttlv *r;
    struct kf_ttlv_limits lim = {.max_items = 100000};
    if ((rc = kf_ttlv_decode(resp->data, resp->len, &lim, a, &r)) < 0) {
        snprintf(why, why_len, "decode: %s", kf_strerror(rc));
        return rc;
    }
    const kf_ttlv *bi = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
    uint32_t st = 99;
    if (kf_ttlv_get_enum(kf_ttlv_find(bi, KMIP_TAG_RESULT_STATUS), &st) < 0 || st != 0) {
        const char *m = "";
        size_t ml = 0;
        if (kf_ttlv_get_text(kf_ttlv_find(bi, KMIP_TAG_RESULT_MESSAGE), &m, &ml) < 0)
            m = "";
        snprintf(why, why_len, "operation failed: %.*s", (int)ml, m);
        return KF_ERR_OPERATION;
    }
    if (uid_out) {
        const char *u;
        size_t ul;
        if (kf_ttlv_get_text(KF_TTLV_PATH(bi, KMIP_TAG_RESPONSE_PAYLOAD,
                                          KMIP_TAG_UNIQUE_IDENTIFIER), &u, &ul) < 0 || ul >= uid_len)
            return KF_ERR_FORMAT;
        memcpy(uid_out, u, ul);
        uid_out[ul] = 0;
    }
    return KF_OK;
}

static int connect_cfg(const struct bench_cfg *cfg, kf_tls_client **t)
{
    return kf_tls_client_connect(cfg->host, cfg->port, cfg->ca, cfg->cert, cfg->key, t);
}

/* Make and activate the keys the workload uses. */
static int setup_keys(struct bench_cfg *cfg)
{
    kf_tls_client *t;
    kf_arena *a;
    kf_buf req, resp;
    char why[256];
    int rc = connect_cfg(cfg, &t);
    if (rc < 0) {
        fprintf(stderr, "keyfleet-kmip-bench: cannot connect: %s\n", kf_strerror(rc));
        return rc;
    }
    KF_GUARD(kf_arena_new(&a, 0));
    KF_GUARD(kf_buf_alloc(&req, 0, 1 << 20, 0));
    KF_GUARD(kf_buf_alloc(&resp, 0, 1 << 20, 0));
    rc = call(t, create_request(a, cfg, KMIP_ALG_AES, 256, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT),
              &req, &resp, a, cfg->aes_uid, sizeof(cfg->aes_uid), why, sizeof(why));
    if (rc == KF_OK)
        rc = call(t, create_request(a, cfg,
                                    strcmp(cfg->mac_key, "aes") == 0 ? KMIP_ALG_AES
                                                                      : KMIP_ALG_HMAC_SHA256,
                                    256, KMIP_USAGE_MAC_GENERATE | KMIP_USAGE_MAC_VERIFY),
                  &req, &resp, a, cfg->hmac_uid, sizeof(cfg->hmac_uid), why, sizeof(why));
    const char *uids[2] = {cfg->aes_uid, cfg->hmac_uid};
    for (int i = 0; rc == KF_OK && i < 2; i++) {
        kf_ttlv *p, *msg = request(a, cfg, KMIP_OP_ACTIVATE, &p);
        kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uids[i]);
        rc = call(t, msg, &req, &resp, a, NULL, 0, why, sizeof(why));
    }
    if (rc < 0)
        fprintf(stderr, "keyfleet-kmip-bench: setup failed: %s\n", why);
    kf_tls_client_close(t);
    kf_buf_free(&req);
    kf_buf_free(&resp);
    kf_arena_free(a);
    return rc;
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    const struct bench_cfg *cfg = w->cfg;
    kf_tls_client *t;
    kf_arena *a, *ra;
    kf_buf req, resp;
    if (connect_cfg(cfg, &t) < 0 || kf_arena_new(&a, 0) < 0 || kf_arena_new(&ra, 0) < 0 ||
        kf_buf_alloc(&req, 0, 1 << 20, 0) < 0 || kf_buf_alloc(&resp, 0, 1 << 20, 0) < 0) {
        w->errors++;
        snprintf(w->first_error, sizeof(w->first_error), "cannot connect");
        return NULL;
    }
    kf_ttlv *msg = build(a, cfg, cfg->op);
    uint64_t end = kf_mono_ns() + (uint64_t)(cfg->seconds * 1e9);
    while (kf_mono_ns() < end) {
        char why[256];
        kf_arena_reset(ra);
        uint64_t t0 = kf_mono_ns();
        int rc = call(t, msg, &req, &resp, ra, NULL, 0, why, sizeof(why));
        uint64_t dt = kf_mono_ns() - t0;
        if (rc < 0) {
            if (!w->errors++)
                snprintf(w->first_error, sizeof(w->first_error), "%s", why);
            if (rc == KF_ERR_CONNECT || w->errors > 100)
                break;
            continue;
        }
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            w->lat_ns = realloc(w->lat_ns, w->cap * sizeof(uint64_t));
            if (!w->lat_ns)
                abort();
        }
        w->lat_ns[w->n++] = dt;
    }
    kf_tls_client_close(t);
    kf_buf_free(&req);
    kf_buf_free(&resp);
    kf_arena_free(a);
    kf_arena_free(ra);
    return NULL;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server", required_argument, NULL, 's'}, {"ca", required_argument, NULL, 'a'},
        {"cert", required_argument, NULL, 'c'},   {"key", required_argument, NULL, 'k'},
        {"op", required_argument, NULL, 'o'},     {"connections", required_argument, NULL, 'n'},
        {"seconds", required_argument, NULL, 't'}, {"kmip", required_argument, NULL, 'v'},
        {"encrypt-mode", required_argument, NULL, 'm'}, {"mac-key", required_argument, NULL, 'K'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct bench_cfg cfg = {.op = "get", .mode = "gcm", .mac_key = "hmac", .connections = 4,
                            .major = 1, .minor = 2, .seconds = 5};
    const char *server = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': server = optarg; break;
        case 'a': cfg.ca = optarg; break;
        case 'c': cfg.cert = optarg; break;
        case 'k': cfg.key = optarg; break;
        case 'o': cfg.op = optarg; break;
        case 'n': cfg.connections = atoi(optarg); break;
        case 't': cfg.seconds = atof(optarg); break;
        case 'm': cfg.mode = optarg; break;
        case 'K': cfg.mac_key = optarg; break;
        case 'v':
            if (sscanf(optarg, "%d.%d", &cfg.major, &cfg.minor) != 2)
                return 2;
            break;
        case 'h':
            puts("Usage: keyfleet-kmip-bench --server HOST:PORT --ca F --cert F --key F\n"
                 "  [--op get|encrypt|mac|create] [--connections C] [--seconds S]\n"
                 "  [--kmip MAJOR.MINOR] [--encrypt-mode gcm|cbc] [--mac-key hmac|aes]\n"
                 "KMIP over TLS load: C connections in closed loops; prints ops/s, p50, p99.\n"
                 "Encrypt is 64 bytes with AES-256; MAC is HMAC-SHA-256 over 64 bytes, with an\n"
                 "HMAC-SHA256 key, or an AES-typed key (--mac-key aes, as PyKMIP's server wants).");
            return 0;
        default: return 2;
        }
    }
    const char *colon = server ? strrchr(server, ':') : NULL;
    if (!colon || !cfg.ca || !cfg.cert || !cfg.key || cfg.connections < 1 ||
        (size_t)(colon - server) >= sizeof(cfg.host)) {
        fprintf(stderr, "keyfleet-kmip-bench: --server HOST:PORT, --ca, --cert, --key needed\n");
        return 2;
    }
    memcpy(cfg.host, server, (size_t)(colon - server));
    cfg.port = (uint16_t)atoi(colon + 1);
    kf_log_open(NULL, KF_LOG_ERROR);
    if (setup_keys(&cfg) < 0)
        return 1;
    struct worker *w = calloc((size_t)cfg.connections, sizeof(*w));
    uint64_t t0 = kf_mono_ns();
    for (int i = 0; i < cfg.connections; i++) {
        w[i].cfg = &cfg;
        pthread_create(&w[i].thread, NULL, run_worker, &w[i]);
    }
    size_t total = 0, errors = 0;
    for (int i = 0; i < cfg.connections; i++) {
        pthread_join(w[i].thread, NULL);
        total += w[i].n;
        errors += w[i].errors;
    }
    double secs = (double)(kf_mono_ns() - t0) / 1e9;
    uint64_t *all = malloc((total ? total : 1) * sizeof(uint64_t));
    size_t k = 0;
    for (int i = 0; i < cfg.connections; i++) {
        memcpy(all + k, w[i].lat_ns, w[i].n * sizeof(uint64_t));
        k += w[i].n;
    }
    qsort(all, total, sizeof(uint64_t), cmp_u64);
    double p50 = total ? (double)all[total / 2] / 1e6 : 0;
    double p99 = total ? (double)all[(size_t)((double)total * 0.99)] / 1e6 : 0;
    printf("op=%s connections=%d seconds=%.1f ops=%zu ops_per_s=%.1f p50_ms=%.3f p99_ms=%.3f "
           "errors=%zu\n",
           cfg.op, cfg.connections, secs, total, (double)total / secs, p50, p99, errors);
    for (int i = 0; i < cfg.connections; i++)
        if (w[i].errors) {
            fprintf(stderr, "keyfleet-kmip-bench: first error: %s\n", w[i].first_error);
            break;
        }
    return errors && !total ? 1 : 0;
}
