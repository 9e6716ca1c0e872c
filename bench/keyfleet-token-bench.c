/*
 * keyfleet-token-bench: token verification throughput of keyfleetd over KMIP
 * (docs/manufacturing.md "Tokens"; bench/run-token-bench.sh drives it).
 *
 *   prepare  set up VE (vendor) and USPS (postal, US), enrol a Steel held in
 *            memory, then make D devices the protocol's way over KMIP (per
 *            domain RequestKey, the Distribute opened with the Steel's key,
 *            kfd_meter_install, a signed Installed report; then the device's
 *            own MR1 to Register) and print P pieces per device with
 *            kfd_meter_print. Writes the pieces' KeyfleetPieces entries (40
 *            bytes of canonical data + the vendor token) to --out.
 *   verify   send --in's pieces in batches (KeyfleetTokenVerify) over C
 *            connections at once; prints pieces/s and the verdict counts.
 *
 *   keyfleet-token-bench prepare|verify --server HOST:PORT --ca F --cert F --key F
 *       prepare: [--devices 200] [--pieces 5000] --out FILE
 *       verify:  --in FILE [--connections 2] [--batch 10000]
 * The client certificate needs admin (prepare) and verifier or use in VE (verify).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms_mfg.h"
#include "keyfleet/meter.h"
#include "keyfleet/mfg.h"
#include "keyfleet/secmem.h"
#include "keyfleet/tls.h"
#include "keyfleet/ttlv.h"

#define STEEL "S00000001"

struct cfg {
    char host[256];
    uint16_t port;
    const char *ca, *cert, *key;
};

struct conn {
    kf_tls_client *tls;
    kf_arena *arena;
    kf_buf req, resp;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int conn_open(const struct cfg *c, struct conn *k)
{
    memset(k, 0, sizeof(*k));
    KF_GUARD(kf_tls_client_connect(c->host, c->port, c->ca, c->cert, c->key, &k->tls));
    KF_GUARD(kf_arena_new(&k->arena, 64u << 20));
    KF_GUARD(kf_buf_alloc(&k->req, 65536, KF_TLS_MESSAGE_MAX, 0));
    return kf_buf_alloc(&k->resp, 65536, KF_TLS_MESSAGE_MAX, 0);
}

static void conn_close(struct conn *k)
{
    kf_tls_client_close(k->tls);
    kf_arena_free(k->arena);
    kf_buf_free(&k->req);
    kf_buf_free(&k->resp);
}

static kf_ttlv *request(struct conn *k, uint32_t op, kf_ttlv **payload)
{
    kf_arena_reset(k->arena);
    kf_arena *a = k->arena;
    kf_ttlv *msg = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    kf_ttlv *h = kf_ttlv_struct(a, msg, KMIP_TAG_REQUEST_HEADER);
    kf_ttlv *pv = kf_ttlv_struct(a, h, KMIP_TAG_PROTOCOL_VERSION);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 2);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MINOR, 1);
    kf_ttlv_add_int(a, h, KMIP_TAG_BATCH_COUNT, 1);
    kf_ttlv *bi = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, op);
    *payload = kf_ttlv_struct(a, bi, KMIP_TAG_REQUEST_PAYLOAD);
    return msg;
}

/* One call: KF_OK and the payload, or the server's refusal on stderr. */
static int call(struct conn *k, const char *what, const kf_ttlv *msg, const kf_ttlv **out)
{
    kf_buf_reset(&k->req);
    KF_GUARD(kf_ttlv_encode(msg, &k->req));
    KF_GUARD(kf_tls_client_call(k->tls, k->req.data, k->req.len, &k->resp));
    kf_ttlv *m;
    struct kf_ttlv_limits lim = {.max_total = KF_TLS_MESSAGE_MAX};
    KF_GUARD(kf_ttlv_decode(k->resp.data, k->resp.len, &lim, k->arena, &m));
    const kf_ttlv *bi = kf_ttlv_find(m, KMIP_TAG_BATCH_ITEM);
    uint32_t status = 0;
    KF_GUARD(kf_ttlv_get_enum(kf_ttlv_find(bi, KMIP_TAG_RESULT_STATUS), &status));
    if (status != KMIP_RESULT_STATUS_SUCCESS) {
        const char *t = "";
        size_t n = 0;
        (void)!kf_ttlv_get_text(kf_ttlv_find(bi, KMIP_TAG_RESULT_MESSAGE), &t, &n);
        fprintf(stderr, "keyfleet-token-bench: %s refused: %.*s\n", what, (int)n, t);
        return KF_ERR_PERM; /* refused: the reason is on stderr */
    }
    *out = kf_ttlv_find(bi, KMIP_TAG_RESPONSE_PAYLOAD);
    return *out ? KF_OK : KF_ERR_REQUEST;
}

/* Append the TTLV bytes (one item) as a node of payload. */
static int add_raw(struct conn *k, kf_ttlv *payload, const uint8_t *bytes, size_t len)
{
    kf_ttlv *n;
    KF_GUARD(kf_ttlv_decode(bytes, len, NULL, k->arena, &n));
    return kf_ttlv_append(payload, n);
}

/* The first KeyfleetSignedRecord of a payload, decoded. */
static int first_record(const kf_ttlv *payload, uint32_t type, struct kf_mfg_record *rec,
                        kf_buf *bytes)
{
    const kf_ttlv *n = kf_ttlv_find(payload, KMIP_TAG_KEYFLEET_SIGNED_RECORD);
    KF_ENSURE(n != NULL, KF_ERR_MFG_FRAMING);
    kf_buf_reset(bytes);
    KF_GUARD(kf_ttlv_encode(n, bytes));
    struct kf_mfg_envelope env;
    KF_GUARD(kf_mfg_envelope_parse(bytes->data, bytes->len, &env, NULL));
    return kf_mfg_record_decode(env.body, env.body_len, type, rec);
}

/* ---- prepare ---- */

struct steel {
    uint8_t sign_priv[32], sign_pub[32], enc_priv[32], enc_pub[32];
};

static int no_store(void *ctx, const uint8_t *state, size_t len)
{
    (void)ctx, (void)state, (void)len;
    return KF_OK;
}

static int setup_domain(struct conn *k, const char *domain, uint32_t kind, const char *country)
{
    kf_ttlv *p, *msg = request(k, KMIP_OP_KEYFLEET_MFG_SETUP, &p);
    kf_ttlv_add_text(k->arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domain);
    kf_ttlv_add_enum(k->arena, p, KMIP_TAG_KEYFLEET_DOMAIN_KIND, kind);
    if (country)
        kf_ttlv_add_text(k->arena, p, KMIP_TAG_KEYFLEET_COUNTRY, country);
    const kf_ttlv *out;
    return call(k, "MfgSetup", msg, &out);
}

static int enroll(struct conn *k, const char *domain, const struct steel *s)
{
    kf_ttlv *p, *msg = request(k, KMIP_OP_KEYFLEET_MFG_ROLE_ENROLL, &p);
    kf_ttlv_add_text(k->arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domain);
    kf_ttlv_add_text(k->arena, p, KMIP_TAG_KEYFLEET_ROLE_ID, STEEL);
    kf_ttlv_add_bytes(k->arena, p, KMIP_TAG_KEYFLEET_SIGN_PUB, s->sign_pub, 32);
    kf_ttlv_add_bytes(k->arena, p, KMIP_TAG_KEYFLEET_ENC_PUB, s->enc_pub, 32);
    const kf_ttlv *out;
    return call(k, "MfgRoleEnroll", msg, &out);
}

/* MI0..MI10 for one domain over KMIP. */
static int install(struct conn *k, const struct steel *s, struct kfd_meter *m, const char *domain,
                   kf_buf *scratch)
{
    kf_ttlv *p, *msg = request(k, KMIP_OP_KEYFLEET_MFG_REQUEST_KEY, &p);
    kf_ttlv_add_text(k->arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domain);
    kf_ttlv_add_text(k->arena, p, KMIP_TAG_KEYFLEET_STEEL_ID, STEEL);
    const kf_ttlv *out;
    struct kf_mfg_record mi4, mi7;
    KF_GUARD(call(k, "MfgRequestKey", msg, &out));
    KF_GUARD(first_record(out, KF_MFG_REC_DISTRIBUTE, &mi4, scratch));
    uint8_t key[32], tt[KFD_TEST_TOKENS_LEN];
    int rc = kf_mfg_open_key(s->enc_priv, domain, mi4.key_id, STEEL, mi4.sealed_key, key);
    if (rc == KF_OK)
        rc = kfd_meter_install(m, domain, mi4.key_id, key, tt);
    kf_wipe(key, sizeof(key));
    KF_GUARD(rc);
    memset(&mi7, 0, sizeof(mi7));
    mi7.type = KF_MFG_REC_INSTALLED;
    mi7.fields = KF_MFG_F_STATUS | KF_MFG_F_ROLE_ID | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID |
                 KF_MFG_F_KEY_ID | KF_MFG_F_MSN | KF_MFG_F_TEST_TOKENS | KF_MFG_F_EVENT_TIME;
    mi7.status = KF_MFG_INSTALLED;
    memcpy(mi7.role_id, mi4.role_id, sizeof(mi7.role_id));
    snprintf(mi7.domain, sizeof(mi7.domain), "%s", domain);
    snprintf(mi7.steel_id, sizeof(mi7.steel_id), "%s", STEEL);
    mi7.key_id = mi4.key_id;
    snprintf(mi7.msn, sizeof(mi7.msn), "%s", m->msn);
    memcpy(mi7.test_tokens, tt, sizeof(tt));
    mi7.event_time = (int64_t)time(NULL);
    kf_buf_reset(scratch);
    KF_GUARD(kf_mfg_record_sign(&mi7, STEEL, s->sign_priv, scratch));
    msg = request(k, KMIP_OP_KEYFLEET_MFG_REPORT_INSTALL, &p);
    kf_ttlv_add_text(k->arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domain);
    KF_GUARD(add_raw(k, p, scratch->data, scratch->len));
    return call(k, "MfgReportInstall", msg, &out);
}

static int register_device(struct conn *k, struct kfd_meter *m, kf_buf *scratch)
{
    kf_buf_reset(scratch);
    KF_GUARD(kfd_meter_register(m, "US", "IND-1", (int64_t)time(NULL), NULL, NULL, scratch));
    kf_ttlv *p, *msg = request(k, KMIP_OP_KEYFLEET_MFG_REGISTER, &p);
    KF_GUARD(add_raw(k, p, scratch->data, scratch->len));
    const kf_ttlv *out;
    return call(k, "MfgRegister", msg, &out);
}

static int prepare(const struct cfg *c, unsigned devices, unsigned pieces, const char *path)
{
    struct conn k;
    struct steel *s = kf_secmem_alloc(sizeof(*s));
    struct kfd_meter *m = kf_secmem_alloc(sizeof(*m));
    kf_buf scratch = {0};
    FILE *out = fopen(path, "wb");
    int rc = s && m && out ? conn_open(c, &k) : KF_ERR_NOMEM;
    if (rc == KF_OK)
        rc = kf_buf_alloc(&scratch, 4096, 1u << 20, 0);
    if (rc == KF_OK && (rc = kf_crypto_random(s->sign_priv, 32)) == KF_OK &&
        (rc = kf_crypto_random(s->enc_priv, 32)) == KF_OK &&
        (rc = kf_ed25519_public(s->sign_priv, s->sign_pub)) == KF_OK)
        rc = kf_x25519_public(s->enc_priv, s->enc_pub);
    if (rc == KF_OK)
        rc = setup_domain(&k, "VE", KF_MFG_VENDOR, NULL);
    if (rc == KF_OK)
        rc = setup_domain(&k, "USPS", KF_MFG_POSTAL, "US");
    if (rc == KF_OK)
        rc = enroll(&k, "VE", s);
    if (rc == KF_OK)
        rc = enroll(&k, "USPS", s);
    double t0 = now_s();
    time_t tt = time(NULL);
    struct tm tm;
    gmtime_r(&tt, &tm);
    uint32_t today = (uint32_t)(tm.tm_year + 1900) * 10000u + (uint32_t)(tm.tm_mon + 1) * 100u +
                     (uint32_t)tm.tm_mday;
    for (unsigned d = 0; d < devices && rc == KF_OK; d++) {
        char msn[KFD_METER_MSN_MAX + 1];
        snprintf(msn, sizeof(msn), "BENCH-%06u", d);
        rc = kfd_meter_init(m, msn, no_store, NULL);
        if (rc == KF_OK)
            rc = install(&k, s, m, "VE", &scratch);
        if (rc == KF_OK)
            rc = install(&k, s, m, "USPS", &scratch);
        if (rc == KF_OK)
            rc = register_device(&k, m, &scratch);
        for (unsigned i = 0; i < pieces && rc == KF_OK; i++) {
            struct kfd_piece pc;
            uint8_t entry[KFD_PIECE_LEN];
            rc = kfd_meter_print(m, "VE", "USPS", today, 55 + i % 1000, "10001", &pc);
            if (rc == KF_OK)
                rc = kfd_txdata_encode(&pc.tx, entry);
            memcpy(entry + KFD_TXDATA_LEN, pc.vendor_token, KFD_TOKEN_LEN);
            if (rc == KF_OK && fwrite(entry, sizeof(entry), 1, out) != 1)
                rc = KF_ERR_IO;
        }
        kfd_meter_wipe(m);
    }
    if (rc == KF_OK)
        fprintf(stderr, "prepared %u devices (install + register over KMIP) and %u pieces in "
                        "%.1f s\n",
                devices, devices * pieces, now_s() - t0);
    else
        fprintf(stderr, "keyfleet-token-bench prepare: %s (%s)\n", kf_strerror(rc),
                kf_errname(rc));
    if (out && fclose(out) != 0 && rc == KF_OK)
        rc = KF_ERR_IO;
    if (s && m && rc != KF_ERR_NOMEM)
        conn_close(&k);
    kf_buf_free(&scratch);
    kf_secmem_free(s);
    kf_secmem_free(m);
    return rc;
}

/* ---- verify ---- */

struct worker {
    const struct cfg *cfg;
    const uint8_t *pieces;
    size_t first, count, batch; /* pieces [first, first + count) */
    size_t verdicts[5];
    int rc;
    pthread_t thread;
};

static void *verify_worker(void *arg)
{
    struct worker *w = arg;
    struct conn k;
    w->rc = conn_open(w->cfg, &k);
    for (size_t off = 0; off < w->count && w->rc == KF_OK; off += w->batch) {
        size_t n = w->count - off < w->batch ? w->count - off : w->batch;
        kf_ttlv *p, *msg = request(&k, KMIP_OP_KEYFLEET_TOKEN_VERIFY, &p);
        kf_ttlv_add_text(k.arena, p, KMIP_TAG_KEYFLEET_DOMAIN, "VE");
        kf_ttlv_add_bytes(k.arena, p, KMIP_TAG_KEYFLEET_PIECES,
                          w->pieces + (w->first + off) * KFD_PIECE_LEN, n * KFD_PIECE_LEN);
        const kf_ttlv *out;
        const uint8_t *v;
        size_t len;
        w->rc = call(&k, "TokenVerify", msg, &out);
        if (w->rc == KF_OK &&
            (kf_ttlv_get_bytes(kf_ttlv_find(out, KMIP_TAG_KEYFLEET_VERDICTS), &v, &len) < 0 ||
             len != n))
            w->rc = KF_ERR_REQUEST;
        for (size_t i = 0; i < n && w->rc == KF_OK; i++)
            w->verdicts[v[i] < 5 ? v[i] : 0]++;
    }
    conn_close(&k);
    return NULL;
}

static int verify(const struct cfg *c, const char *path, unsigned connections, size_t batch)
{
    FILE *in = fopen(path, "rb");
    KF_ENSURE(in != NULL, KF_ERR_IO);
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    fseek(in, 0, SEEK_SET);
    size_t n = size > 0 ? (size_t)size / KFD_PIECE_LEN : 0;
    uint8_t *pieces = malloc(n * KFD_PIECE_LEN + 1);
    int rc = pieces && fread(pieces, KFD_PIECE_LEN, n, in) == n ? KF_OK : KF_ERR_IO;
    fclose(in);
    struct worker w[16];
    memset(w, 0, sizeof(w));
    double t0 = now_s();
    for (unsigned i = 0; i < connections && rc == KF_OK; i++) {
        /* Contiguous shares: each connection its own batches, as two sorting lines would. */
        w[i] = (struct worker){.cfg = c, .pieces = pieces, .batch = batch};
        w[i].first = n * i / connections;
        w[i].count = n * (i + 1) / connections - w[i].first;
        if (pthread_create(&w[i].thread, NULL, verify_worker, &w[i]) != 0)
            rc = KF_ERR_INTERNAL;
    }
    size_t total[5] = {0};
    for (unsigned i = 0; i < connections; i++) {
        if (!w[i].thread)
            continue;
        pthread_join(w[i].thread, NULL);
        if (w[i].rc < 0 && rc == KF_OK)
            rc = w[i].rc;
        for (int v = 0; v < 5; v++)
            total[v] += w[i].verdicts[v];
    }
    double secs = now_s() - t0;
    if (rc == KF_OK)
        printf("pieces=%zu connections=%u batch=%zu seconds=%.3f pieces_per_s=%.0f good=%zu "
               "bad=%zu duplicate=%zu refused=%zu\n",
               n, connections, batch, secs, (double)n / secs, total[KF_TOKEN_GOOD],
               total[KF_TOKEN_BAD], total[KF_TOKEN_DUPLICATE], total[KF_TOKEN_REFUSED]);
    else
        fprintf(stderr, "keyfleet-token-bench verify: %s (%s)\n", kf_strerror(rc),
                kf_errname(rc));
    free(pieces);
    return rc;
}

static const char *const usage =
    "Usage: keyfleet-token-bench prepare|verify --server HOST:PORT --ca F --cert F --key F\n"
    "  prepare [--devices 200] [--pieces 5000] --out FILE\n"
    "  verify  --in FILE [--connections 2] [--batch 10000]\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    struct cfg c = {0};
    const char *server = NULL, *out = NULL, *in = NULL;
    unsigned long devices = 200, pieces = 5000, connections = 2, batch = 10000;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--server"))
            server = v;
        else if (!strcmp(o, "--ca"))
            c.ca = v;
        else if (!strcmp(o, "--cert"))
            c.cert = v;
        else if (!strcmp(o, "--key"))
            c.key = v;
        else if (!strcmp(o, "--out"))
            out = v;
        else if (!strcmp(o, "--in"))
            in = v;
        else if (!strcmp(o, "--devices"))
            devices = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--pieces"))
            pieces = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--connections"))
            connections = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--batch"))
            batch = strtoul(v, NULL, 10);
        else {
            fputs(usage, stderr);
            return 2;
        }
    }
    const char *colon = server ? strrchr(server, ':') : NULL;
    if (!colon || !c.ca || !c.cert || !c.key || (size_t)(colon - server) >= sizeof(c.host) ||
        connections < 1 || connections > 16 || batch < 1 || batch > KF_TOKEN_BATCH_MAX ||
        devices < 1 || devices > 1000000 || pieces > 100000000) {
        fputs(usage, stderr);
        return 2;
    }
    memcpy(c.host, server, (size_t)(colon - server));
    c.port = (uint16_t)strtoul(colon + 1, NULL, 10);
    int rc;
    if (!strcmp(argv[1], "prepare") && out)
        rc = prepare(&c, (unsigned)devices, (unsigned)pieces, out);
    else if (!strcmp(argv[1], "verify") && in)
        rc = verify(&c, in, (unsigned)connections, batch);
    else {
        fputs(usage, stderr);
        return 2;
    }
    return rc == KF_OK ? 0 : 1;
}
