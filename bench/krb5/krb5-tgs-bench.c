/*
 * krb5-tgs-bench: service-ticket (TGS) load against an MIT Kerberos KDC, the
 * reference that bench/run-pair-bench.sh puts beside keyfleetd's pair-key
 * issuance. C threads, each with its own krb5_context and MEMORY ccache: each
 * gets a TGT once (AS exchange with the client's password), then loops TGS
 * requests for the realm's service principals in turn for S seconds. Every
 * call is a real KDC round trip: krb5_get_credentials with KRB5_GC_NO_STORE
 * never puts the service ticket into the ccache, so the next lookup misses and
 * goes to the KDC (bench/krb5-peer.sh count checks that against the KDC's log).
 * Prints the same line as keyfleet-kmip-bench: ops/s, p50, p99.
 *
 *   KRB5_CONFIG=DIR/krb5.conf krb5-tgs-bench --client client@REALM --password PW
 *       [--services N] [--prefix bench/svc] [--connections C] [--seconds S]
 *       [--count N]   (instead of --seconds: exactly N requests per thread)
 */
#include <getopt.h>
#include <krb5.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cfg {
    const char *client, *password, *prefix;
    int services, connections;
    double seconds;
    long count;
};

struct worker {
    const struct cfg *cfg;
    int index;
    pthread_t thread;
    uint64_t *lat_ns;
    size_t n, cap, errors;
    char first_error[256];
    int fatal;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void note(struct worker *w, krb5_context ctx, krb5_error_code code, const char *what)
{
    if (w->errors++ == 0) {
        const char *m = ctx ? krb5_get_error_message(ctx, code) : "cannot make a krb5 context";
        int r = snprintf(w->first_error, sizeof(w->first_error), "%s: %s", what, m);
        if (r < 0 || (size_t)r >= sizeof(w->first_error))
            w->first_error[sizeof(w->first_error) - 1] = 0;
        if (ctx)
            krb5_free_error_message(ctx, m);
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

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    const struct cfg *cfg = w->cfg;
    krb5_context ctx = NULL;
    krb5_principal client = NULL, *svc = NULL;
    krb5_ccache cc = NULL;
    krb5_creds tgt;
    krb5_get_init_creds_opt *opt = NULL;
    krb5_error_code code;
    char name[128];
    int got_tgt = 0;

    memset(&tgt, 0, sizeof(tgt));
    if ((code = krb5_init_context(&ctx)) != 0) {
        ctx = NULL;
        note(w, NULL, code, "init");
        w->fatal = 1;
        return NULL;
    }
    svc = calloc((size_t)cfg->services, sizeof(*svc));
    if (!svc) {
        w->fatal = 1;
        goto out;
    }
    if ((code = krb5_parse_name(ctx, cfg->client, &client)) != 0) {
        note(w, ctx, code, "client name");
        w->fatal = 1;
        goto out;
    }
    for (int i = 0; i < cfg->services; i++) {
        int r = snprintf(name, sizeof(name), "%s%d", cfg->prefix, i);
        if (r < 0 || (size_t)r >= sizeof(name) ||
            (code = krb5_parse_name(ctx, name, &svc[i])) != 0) {
            note(w, ctx, code, "service name");
            w->fatal = 1;
            goto out;
        }
    }
    /* One AS exchange per thread: the TGT every TGS request below is made with. */
    if ((code = krb5_get_init_creds_opt_alloc(ctx, &opt)) != 0 ||
        (code = krb5_get_init_creds_password(ctx, &tgt, client, cfg->password, NULL, NULL, 0,
                                             NULL, opt)) != 0) {
        note(w, ctx, code, "TGT");
        w->fatal = 1;
        goto out;
    }
    got_tgt = 1;
    int r = snprintf(name, sizeof(name), "MEMORY:krb5-tgs-bench-%d", w->index);
    if (r < 0 || (size_t)r >= sizeof(name) || (code = krb5_cc_resolve(ctx, name, &cc)) != 0 ||
        (code = krb5_cc_initialize(ctx, cc, client)) != 0 ||
        (code = krb5_cc_store_cred(ctx, cc, &tgt)) != 0) {
        note(w, ctx, code, "ccache");
        w->fatal = 1;
        goto out;
    }

    uint64_t end = mono_ns() + (uint64_t)(cfg->seconds * 1e9);
    for (long i = 0;; i++) {
        if (cfg->count > 0 ? i >= cfg->count : mono_ns() >= end)
            break;
        krb5_creds in, *outc = NULL;
        memset(&in, 0, sizeof(in));
        in.client = client;
        in.server = svc[(w->index + i) % cfg->services];
        uint64_t t0 = mono_ns();
        code = krb5_get_credentials(ctx, KRB5_GC_NO_STORE, cc, &in, &outc);
        uint64_t dt = mono_ns() - t0;
        if (code != 0) {
            note(w, ctx, code, "TGS");
            if (w->errors > 100)
                break;
            continue;
        }
        /* A ticket for the service we asked for, with a session key. */
        if (!krb5_principal_compare(ctx, outc->server, in.server) ||
            outc->keyblock.length != 32 || outc->ticket.length == 0) {
            note(w, ctx, KRB5KRB_ERR_GENERIC, "TGS answer");
            krb5_free_creds(ctx, outc);
            continue;
        }
        krb5_free_creds(ctx, outc);
        if (record(w, dt) < 0)
            break;
    }
out:
    if (got_tgt)
        krb5_free_cred_contents(ctx, &tgt);
    if (opt)
        krb5_get_init_creds_opt_free(ctx, opt);
    if (cc)
        krb5_cc_destroy(ctx, cc);
    if (svc) {
        for (int i = 0; i < cfg->services; i++)
            if (svc[i])
                krb5_free_principal(ctx, svc[i]);
        free(svc);
    }
    if (client)
        krb5_free_principal(ctx, client);
    krb5_free_context(ctx);
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
        {"client", required_argument, NULL, 'c'},   {"password", required_argument, NULL, 'p'},
        {"services", required_argument, NULL, 'N'}, {"prefix", required_argument, NULL, 'P'},
        {"connections", required_argument, NULL, 'n'}, {"seconds", required_argument, NULL, 't'},
        {"count", required_argument, NULL, 'k'},    {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct cfg cfg = {.prefix = "bench/svc", .services = 16, .connections = 4, .seconds = 5};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': cfg.client = optarg; break;
        case 'p': cfg.password = optarg; break;
        case 'N': cfg.services = atoi(optarg); break;
        case 'P': cfg.prefix = optarg; break;
        case 'n': cfg.connections = atoi(optarg); break;
        case 't': cfg.seconds = atof(optarg); break;
        case 'k': cfg.count = atol(optarg); break;
        case 'h':
            puts("Usage: krb5-tgs-bench --client PRINCIPAL --password PW [--services N]\n"
                 "  [--prefix bench/svc] [--connections C] [--seconds S | --count N]\n"
                 "TGS load against the KDC named by KRB5_CONFIG: C threads, one TGT each, then\n"
                 "service-ticket requests in a closed loop, each a real KDC round trip;\n"
                 "prints ops/s, p50, p99.");
            return 0;
        default: return 2;
        }
    }
    if (!cfg.client || !cfg.password || cfg.services < 1 || cfg.connections < 1 ||
        cfg.connections > 4096 || (cfg.count <= 0 && cfg.seconds <= 0)) {
        fprintf(stderr, "krb5-tgs-bench: --client and --password needed (see --help)\n");
        return 2;
    }
    struct worker *w = calloc((size_t)cfg.connections, sizeof(*w));
    if (!w)
        return 1;
    uint64_t t0 = mono_ns();
    for (int i = 0; i < cfg.connections; i++) {
        w[i].cfg = &cfg;
        w[i].index = i;
        if (pthread_create(&w[i].thread, NULL, run_worker, &w[i]) != 0) {
            fprintf(stderr, "krb5-tgs-bench: cannot start thread %d\n", i);
            return 1;
        }
    }
    size_t total = 0, errors = 0;
    int fatal = 0;
    for (int i = 0; i < cfg.connections; i++) {
        pthread_join(w[i].thread, NULL);
        total += w[i].n;
        errors += w[i].errors;
        fatal |= w[i].fatal;
    }
    double secs = (double)(mono_ns() - t0) / 1e9;
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
    printf("op=tgs connections=%d seconds=%.1f ops=%zu ops_per_s=%.1f p50_ms=%.3f p99_ms=%.3f "
           "errors=%zu\n",
           cfg.connections, secs, total, (double)total / secs, p50, p99, errors);
    for (int i = 0; i < cfg.connections; i++)
        if (w[i].errors) {
            fprintf(stderr, "krb5-tgs-bench: first error: %s\n", w[i].first_error);
            break;
        }
    free(all);
    free(w);
    return (errors && !total) || fatal ? 1 : 0;
}
