/*
 * keyfleet-pair-bench: pair-key issuance load (KeyfleetPairKeyRequest,
 * docs/pairing.md) over mutually authenticated TLS. C connections, one thread
 * each; connection t drives its own device pair(s) PREFIX-a-N / PREFIX-b-N
 * (N = t, t + C, ... below --pairs), registered beforehand (bench/run-pair-bench.sh
 * does it with the CLI). Prints the same line as keyfleet-kmip-bench: ops/s,
 * p50, p99.
 *
 *   keyfleet-pair-bench --server HOST:PORT --ca F --cert F --key F
 *       [--connections C] [--seconds S | --count N] [--pairs P] [--prefix bench]
 *       [--kek-count K] [--flow request|full] [--packages DIR]
 *
 * --flow request (default): each operation is one KeyfleetPairKeyRequest; the
 *   answer must be Success with exactly two PairParts (kfd_pair_split). With
 *   --packages DIR (installation packages DIR/<device id>.pkg from `keyfleet
 *   device export`), both parts are also opened by real libkeyfleet-device
 *   states (kfd_pair_accept: counter, AEAD, IDs, role) outside the timed part.
 * --flow full: one operation is the whole exchange of pairing.md: request, A
 *   accepts SM_A, B accepts SM_B, and A reports both authenticated acks
 *   (KeyfleetPairAckReport, also Success). Needs --packages. The devices keep
 *   their state in memory (a real device saves to secure storage); each new KEK
 *   supersedes the older ones of the same pair in the device's slots.
 */
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "keyfleet/device.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "keyfleet/tls.h"

enum flow { FLOW_REQUEST, FLOW_FULL };

struct bench_cfg {
    char host[256];
    uint16_t port;
    const char *ca, *cert, *key, *prefix, *packages;
    int connections, pairs, kek_count;
    double seconds;
    long count;
    enum flow flow;
};

/* A device as the bench holds it: libkeyfleet-device state, saved in memory. */
struct bench_device {
    struct kfd_device d;
    uint8_t saved[KFD_STATE_MAX];
    size_t saved_len;
};

struct worker {
    const struct bench_cfg *cfg;
    int index;
    pthread_t thread;
    uint64_t *lat_ns;
    size_t n, cap, errors, verified;
    char first_error[320];
};

static int mem_save(void *ctx, const uint8_t *state, size_t len)
{
    struct bench_device *bd = ctx;
    if (len > sizeof(bd->saved))
        return -1;
    memcpy(bd->saved, state, len);
    bd->saved_len = len;
    return 0;
}
static int64_t wall_now(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}
static int kernel_random(void *ctx, uint8_t *out, size_t n)
{
    (void)ctx;
    while (n) {
        ssize_t r = getrandom(out, n, 0);
        if (r <= 0)
            return -1;
        out += r;
        n -= (size_t)r;
    }
    return 0;
}

static void device_name(char *out, size_t cap, const char *prefix, char side, int n)
{
    int r = snprintf(out, cap, "%s-%c-%d", prefix, side, n);
    if (r < 0 || (size_t)r >= cap)
        out[0] = 0; /* an empty ID: kfd_id_valid refuses it, the call fails visibly */
}

/* Load DIR/<id>.pkg into a device state (kfd_install). */
static int load_device(const char *dir, const char *id, struct bench_device *bd)
{
    char path[4096];
    uint8_t pkg[KFD_MSG_MAX];
    int r = snprintf(path, sizeof(path), "%s/%s.pkg", dir, id);
    if (r < 0 || (size_t)r >= sizeof(path))
        return KF_ERR_ARG;
    FILE *f = fopen(path, "rb");
    if (!f)
        return KF_ERR_IO;
    size_t len = fread(pkg, 1, sizeof(pkg), f);
    bool too_big = len == sizeof(pkg) && fgetc(f) != EOF;
    fclose(f);
    if (len == 0 || too_big)
        return KF_ERR_FORMAT;
    struct kfd_env env = {.ctx = bd, .save = mem_save, .now = wall_now, .random = kernel_random};
    r = kfd_install(&bd->d, &env, pkg, len);
    memset(pkg, 0, sizeof(pkg));
    return r;
}

__attribute__((format(printf, 2, 3))) static void fail_note(struct worker *w, const char *fmt, ...)
{
    if (w->errors++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        int r = vsnprintf(w->first_error, sizeof(w->first_error), fmt, ap);
        va_end(ap);
        if (r < 0 || (size_t)r >= sizeof(w->first_error))
            w->first_error[sizeof(w->first_error) - 1] = 0;
    }
}

static int record(struct worker *w, uint64_t dt)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 4096;
        uint64_t *p = realloc(w->lat_ns, cap * sizeof(uint64_t));
        if (!p)
            return -1;
        w->lat_ns = p;
        w->cap = cap;
    }
    w->lat_ns[w->n++] = dt;
    return 0;
}

struct conn {
    kf_tls_client *t;
    kf_buf payload, msg, resp;
    char why[320];
};

/* One KMIP extension call: wrap payload, send, unwrap. On KF_OK *out spans the
 * response payload inside c->resp. */
static int ext_call(struct conn *c, uint32_t op, struct kfd_span *out)
{
    uint32_t reason = 0;
    char smsg[256] = "";
    kf_buf_reset(&c->msg);
    int rc = kfd_kmip_wrap(op, c->payload.data, c->payload.len, &c->msg);
    if (rc < 0) {
        snprintf(c->why, sizeof(c->why), "wrap: %s", kf_strerror(rc));
        return rc;
    }
    rc = kf_tls_client_call(c->t, c->msg.data, c->msg.len, &c->resp);
    if (rc < 0) {
        snprintf(c->why, sizeof(c->why), "transport: %s", kf_strerror(rc));
        return rc;
    }
    rc = kfd_kmip_unwrap(c->resp.data, c->resp.len, op, out, &reason, smsg, sizeof(smsg));
    if (rc < 0) {
        snprintf(c->why, sizeof(c->why), "server answered reason %u: %.200s (%s)", reason, smsg,
                 kf_strerror(rc));
        return rc;
    }
    return KF_OK;
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    const struct bench_cfg *cfg = w->cfg;
    struct conn c;
    memset(&c, 0, sizeof(c));
    int mine = 0;
    for (int p = w->index; p < cfg->pairs; p += cfg->connections)
        mine++;
    struct bench_device *dev = calloc((size_t)(mine ? mine : 1) * 2, sizeof(*dev));
    if (!dev || mine == 0) {
        fail_note(w, "no device pair for this connection");
        free(dev);
        return NULL;
    }
    for (int k = 0; k < mine; k++) {
        int p = w->index + k * cfg->connections;
        device_name(dev[2 * k].d.st.id, sizeof(dev[2 * k].d.st.id), cfg->prefix, 'a', p);
        device_name(dev[2 * k + 1].d.st.id, sizeof(dev[2 * k + 1].d.st.id), cfg->prefix, 'b', p);
        if (cfg->packages)
            for (int s = 0; s < 2; s++) {
                char id[KFD_ID_MAX + 1];
                memcpy(id, dev[2 * k + s].d.st.id, sizeof(id));
                int rc = load_device(cfg->packages, id, &dev[2 * k + s]);
                if (rc < 0) {
                    fail_note(w, "cannot install %s: %s", id, kf_strerror(rc));
                    goto out;
                }
            }
    }
    int rc = kf_tls_client_connect(cfg->host, cfg->port, cfg->ca, cfg->cert, cfg->key, &c.t);
    if (rc < 0) {
        fail_note(w, "cannot connect: %s", kf_strerror(rc));
        goto out;
    }
    if (kf_buf_alloc(&c.payload, 0, 2 * KFD_MSG_MAX, 0) < 0 ||
        kf_buf_alloc(&c.msg, 0, 4 * KFD_MSG_MAX, 0) < 0 ||
        kf_buf_alloc(&c.resp, 0, 1 << 16, 0) < 0) {
        fail_note(w, "out of memory");
        goto out;
    }
    uint8_t ackmem[2][KFD_MSG_MAX];
    uint64_t end = kf_mono_ns() + (uint64_t)(cfg->seconds * 1e9);
    for (long i = 0;; i++) {
        if (cfg->count > 0 ? i >= cfg->count : kf_mono_ns() >= end)
            break;
        struct bench_device *a = &dev[2 * (i % mine)], *b = a + 1;
        struct kfd_span m, pa, pb;
        uint64_t t0 = kf_mono_ns();
        kf_buf_reset(&c.payload);
        rc = kfd_pair_request(&a->d, b->d.st.id, (uint32_t)cfg->kek_count, 0, 0, &c.payload);
        if (rc < 0) {
            fail_note(w, "pair request: %s", kf_strerror(rc));
            break;
        }
        rc = ext_call(&c, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, &m);
        if (rc == KF_OK && (rc = kfd_pair_split(m.p, m.len, &pa, &pb)) < 0)
            snprintf(c.why, sizeof(c.why), "answer is not two parts: %s", kf_strerror(rc));
        uint64_t dt = kf_mono_ns() - t0;
        if (rc < 0) {
            fail_note(w, "%s", c.why);
            if (rc == KF_ERR_CONNECT || w->errors > 100)
                break;
            continue;
        }
        if (cfg->packages) {
            kf_buf ack[2];
            kf_buf_fixed(&ack[0], ackmem[0], sizeof(ackmem[0]));
            kf_buf_fixed(&ack[1], ackmem[1], sizeof(ackmem[1]));
            int ra = kfd_pair_accept(&a->d, KFD_ROLE_A, pa.p, pa.len, &ack[0]);
            int rb = kfd_pair_accept(&b->d, KFD_ROLE_B, pb.p, pb.len, &ack[1]);
            if (ra < 0 || rb < 0) {
                fail_note(w, "a device refused its part: %s / %s", kf_strerror(ra),
                          kf_strerror(rb));
                continue;
            }
            w->verified++;
            if (cfg->flow == FLOW_FULL) {
                struct kfd_span acks[2] = {{ack[0].data, ack[0].len}, {ack[1].data, ack[1].len}};
                struct kfd_span r;
                kf_buf_reset(&c.payload);
                if ((rc = kfd_ack_report(acks, 2, &c.payload)) < 0) {
                    fail_note(w, "ack report: %s", kf_strerror(rc));
                    break;
                }
                rc = ext_call(&c, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, &r);
                dt = kf_mono_ns() - t0;
                if (rc < 0) {
                    fail_note(w, "%s", c.why);
                    if (rc == KF_ERR_CONNECT || w->errors > 100)
                        break;
                    continue;
                }
            }
        }
        if (record(w, dt) < 0)
            break;
    }
out:
    if (c.t)
        kf_tls_client_close(c.t);
    kf_buf_free(&c.payload);
    kf_buf_free(&c.msg);
    kf_buf_free(&c.resp);
    for (int k = 0; k < 2 * mine; k++)
        kfd_close(&dev[k].d);
    kf_wipe(dev, sizeof(*dev) * 2 * (size_t)mine);
    free(dev);
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
        {"server", required_argument, NULL, 's'},   {"ca", required_argument, NULL, 'a'},
        {"cert", required_argument, NULL, 'c'},     {"key", required_argument, NULL, 'k'},
        {"connections", required_argument, NULL, 'n'}, {"seconds", required_argument, NULL, 't'},
        {"count", required_argument, NULL, 'N'},    {"pairs", required_argument, NULL, 'p'},
        {"prefix", required_argument, NULL, 'P'},   {"kek-count", required_argument, NULL, 'K'},
        {"flow", required_argument, NULL, 'f'},     {"packages", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    struct bench_cfg cfg = {.prefix = "bench", .connections = 4, .pairs = 0, .kek_count = 1,
                            .seconds = 5, .flow = FLOW_REQUEST};
    const char *server = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': server = optarg; break;
        case 'a': cfg.ca = optarg; break;
        case 'c': cfg.cert = optarg; break;
        case 'k': cfg.key = optarg; break;
        case 'n': cfg.connections = atoi(optarg); break;
        case 't': cfg.seconds = atof(optarg); break;
        case 'N': cfg.count = atol(optarg); break;
        case 'p': cfg.pairs = atoi(optarg); break;
        case 'P': cfg.prefix = optarg; break;
        case 'K': cfg.kek_count = atoi(optarg); break;
        case 'd': cfg.packages = optarg; break;
        case 'f':
            if (strcmp(optarg, "request") == 0)
                cfg.flow = FLOW_REQUEST;
            else if (strcmp(optarg, "full") == 0)
                cfg.flow = FLOW_FULL;
            else
                return 2;
            break;
        case 'h':
            puts("Usage: keyfleet-pair-bench --server HOST:PORT --ca F --cert F --key F\n"
                 "  [--connections C] [--seconds S | --count N] [--pairs P] [--prefix bench]\n"
                 "  [--kek-count K] [--flow request|full] [--packages DIR]\n"
                 "Pair-key issuance load: C connections in closed loops, each requesting pair\n"
                 "keys for its own registered pairs PREFIX-a-N/PREFIX-b-N; prints ops/s, p50,\n"
                 "p99. --packages DIR (DIR/<id>.pkg) opens both parts with real device states;\n"
                 "--flow full adds the devices' acknowledgement report to each operation.");
            return 0;
        default: return 2;
        }
    }
    if (cfg.pairs == 0)
        cfg.pairs = cfg.connections;
    const char *colon = server ? strrchr(server, ':') : NULL;
    if (!colon || !cfg.ca || !cfg.cert || !cfg.key || cfg.connections < 1 ||
        cfg.connections > 1024 || cfg.pairs < cfg.connections || cfg.kek_count < 1 ||
        cfg.kek_count > KFD_MAX_KEKS || (cfg.flow == FLOW_FULL && !cfg.packages) ||
        (size_t)(colon - server) >= sizeof(cfg.host)) {
        fprintf(stderr, "keyfleet-pair-bench: --server HOST:PORT, --ca, --cert, --key needed; "
                        "--pairs >= --connections; --flow full needs --packages (see --help)\n");
        return 2;
    }
    memcpy(cfg.host, server, (size_t)(colon - server));
    cfg.port = (uint16_t)atoi(colon + 1);
    kf_log_open(NULL, KF_LOG_ERROR);
    struct worker *w = calloc((size_t)cfg.connections, sizeof(*w));
    if (!w)
        return 1;
    uint64_t t0 = kf_mono_ns();
    for (int i = 0; i < cfg.connections; i++) {
        w[i].cfg = &cfg;
        w[i].index = i;
        if (pthread_create(&w[i].thread, NULL, run_worker, &w[i]) != 0) {
            fprintf(stderr, "keyfleet-pair-bench: cannot start thread %d\n", i);
            return 1;
        }
    }
    size_t total = 0, errors = 0, verified = 0;
    for (int i = 0; i < cfg.connections; i++) {
        pthread_join(w[i].thread, NULL);
        total += w[i].n;
        errors += w[i].errors;
        verified += w[i].verified;
    }
    double secs = (double)(kf_mono_ns() - t0) / 1e9;
    uint64_t *all = malloc((total ? total : 1) * sizeof(uint64_t));
    if (!all)
        return 1;
    size_t k = 0;
    for (int i = 0; i < cfg.connections; i++) {
        if (w[i].n)
            memcpy(all + k, w[i].lat_ns, w[i].n * sizeof(uint64_t));
        k += w[i].n;
        free(w[i].lat_ns);
    }
    qsort(all, total, sizeof(uint64_t), cmp_u64);
    double p50 = total ? (double)all[total / 2] / 1e6 : 0;
    double p99 = total ? (double)all[(size_t)((double)total * 0.99)] / 1e6 : 0;
    printf("op=pair-%s connections=%d seconds=%.1f ops=%zu ops_per_s=%.1f p50_ms=%.3f "
           "p99_ms=%.3f errors=%zu verified=%zu\n",
           cfg.flow == FLOW_FULL ? "full" : "request", cfg.connections, secs, total,
           (double)total / secs, p50, p99, errors, verified);
    for (int i = 0; i < cfg.connections; i++)
        if (w[i].errors) {
            fprintf(stderr, "keyfleet-pair-bench: first error: %s\n", w[i].first_error);
            break;
        }
    free(all);
    free(w);
    return errors ? 1 : 0;
}
