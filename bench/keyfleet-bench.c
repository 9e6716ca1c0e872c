/*
 * keyfleet-bench (foundation): each figure next to a reference measured in
 * the same run on the same machine, printed as a ratio, because absolute
 * times on a shared machine mean little.
 *
 *  1. durable key creations/s through the service layer (generate, wrap
 *     under the domain key, insert, audit record with hash chain and head
 *     MAC, one fsync'ed WAL commit each), vs raw SQLite inserts of a row of
 *     the same size with the same durability (WAL, synchronous=FULL, one
 *     transaction per insert);
 *  2. TTLV decode throughput (MB/s) of real KMIP messages vs memcpy of the
 *     same bytes, and decode+encode round trips.
 *
 *   keyfleet-bench [--creations N] [--seconds S] [--dir DIR]
 */
#include <getopt.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/log.h"
#include "keyfleet/ttlv.h"

/* Keeps the compiler from removing the reference copies. */
static volatile uint8_t bench_sink;

static double seconds_since(uint64_t t0)
{
    return (double)(kf_mono_ns() - t0) / 1e9;
}

static double bench_service_creations(const char *dir, int n)
{
    struct kf_kms_config cfg = {.dir = dir, .dev = true};
    kf_kms *kms;
    if (kf_kms_open(&cfg, &kms) < 0 || kf_kms_domain_create(kms, "bench", "BENCH", NULL) < 0) {
        fprintf(stderr, "keyfleet-bench: cannot open the service in %s\n", dir);
        exit(1);
    }
    struct kf_key_spec spec = {.domain = "BENCH", .object_type = KF_OBJ_SYMMETRIC_KEY,
                               .crypto_alg = KMIP_ALG_AES, .crypto_length = 256,
                               .usage_mask = KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT};
    char uid[KF_UID_MAX];
    uint64_t t0 = kf_mono_ns();
    for (int i = 0; i < n; i++)
        if (kf_kms_create(kms, "bench", &spec, uid) < 0) {
            fprintf(stderr, "keyfleet-bench: create failed\n");
            exit(1);
        }
    double s = seconds_since(t0);
    kf_kms_close(kms);
    return n / s;
}

static double bench_sqlite_inserts(const char *dir, int n)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/raw.db", dir);
    sqlite3 *db;
    sqlite3_stmt *ins;
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     "CREATE TABLE t(id INTEGER PRIMARY KEY, domain INTEGER, material BLOB, "
                     "audit BLOB)",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO t(domain, material, audit) VALUES (1, ?1, ?2)", -1,
                           &ins, NULL) != SQLITE_OK) {
        fprintf(stderr, "keyfleet-bench: sqlite reference failed: %s\n", sqlite3_errmsg(db));
        exit(1);
    }
    uint8_t material[61], audit[200];
    memset(material, 0xa5, sizeof(material));
    memset(audit, 0x5a, sizeof(audit));
    uint64_t t0 = kf_mono_ns();
    for (int i = 0; i < n; i++) {
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        sqlite3_bind_blob(ins, 1, material, sizeof(material), SQLITE_STATIC);
        sqlite3_bind_blob(ins, 2, audit, sizeof(audit), SQLITE_STATIC);
        if (sqlite3_step(ins) != SQLITE_DONE) {
            fprintf(stderr, "keyfleet-bench: insert failed\n");
            exit(1);
        }
        sqlite3_reset(ins);
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    double s = seconds_since(t0);
    sqlite3_finalize(ins);
    sqlite3_close(db);
    return n / s;
}

/* A realistic KMIP message: a Locate-style response listing 40 objects with attributes. */
static int build_sample(kf_arena *a, kf_buf *out)
{
    kf_ttlv *msg = kf_ttlv_struct(a, NULL, KMIP_TAG_RESPONSE_MESSAGE);
    kf_ttlv *hdr = kf_ttlv_struct(a, msg, KMIP_TAG_RESPONSE_HEADER);
    kf_ttlv *pv = kf_ttlv_struct(a, hdr, KMIP_TAG_PROTOCOL_VERSION);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 2);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MINOR, 1);
    kf_ttlv_add_datetime(a, hdr, KMIP_TAG_TIME_STAMP, 1700000000);
    kf_ttlv_add_int(a, hdr, KMIP_TAG_BATCH_COUNT, 1);
    kf_ttlv *bi = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, KMIP_OP_GET_ATTRIBUTES);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_RESULT_STATUS, 0);
    kf_ttlv *p = kf_ttlv_struct(a, bi, KMIP_TAG_RESPONSE_PAYLOAD);
    uint8_t material[32];
    memset(material, 0x42, sizeof(material));
    for (int i = 0; i < 40; i++) {
        kf_ttlv *at = kf_ttlv_struct(a, p, KMIP_TAG_ATTRIBUTES);
        char uid[32];
        snprintf(uid, sizeof(uid), "VENDOR/%d", 1000 + i);
        kf_ttlv_add_text(a, at, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
        kf_ttlv_add_enum(a, at, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
        kf_ttlv_add_enum(a, at, KMIP_TAG_STATE, 2);
        kf_ttlv_add_enum(a, at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
        kf_ttlv_add_int(a, at, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 256);
        kf_ttlv_add_int(a, at, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, 12);
        kf_ttlv *n = kf_ttlv_struct(a, at, KMIP_TAG_NAME);
        kf_ttlv_add_text(a, n, KMIP_TAG_NAME_VALUE, "meter master key, vendor domain");
        kf_ttlv_add_enum(a, n, KMIP_TAG_NAME_TYPE, 1);
        kf_ttlv_add_datetime(a, at, KMIP_TAG_INITIAL_DATE, 1700000000 + i);
        kf_ttlv_add_datetime(a, at, KMIP_TAG_ACTIVATION_DATE, 1700000100 + i);
        kf_ttlv_add_bytes(a, at, KMIP_TAG_KEY_MATERIAL, material, sizeof(material));
    }
    return kf_ttlv_encode(msg, out);
}

static void bench_ttlv(double seconds)
{
    kf_arena *a, *work;
    kf_buf msg, re;
    if (kf_arena_new(&a, 0) < 0 || kf_arena_new(&work, 0) < 0 ||
        kf_buf_alloc(&msg, 0, 1 << 20, 0) < 0 || kf_buf_alloc(&re, 0, 1 << 20, 0) < 0 ||
        build_sample(a, &msg) < 0) {
        fprintf(stderr, "keyfleet-bench: cannot build the TTLV sample\n");
        exit(1);
    }
    size_t iters = 0;
    uint64_t t0 = kf_mono_ns();
    while (seconds_since(t0) < seconds) {
        for (int k = 0; k < 64; k++) {
            kf_ttlv *root;
            kf_arena_reset(work);
            if (kf_ttlv_decode(msg.data, msg.len, NULL, work, &root) < 0)
                exit(1);
        }
        iters += 64;
    }
    double dec_s = seconds_since(t0);
    double dec_mbps = (double)(iters * msg.len) / dec_s / 1e6;

    size_t rt_iters = 0;
    t0 = kf_mono_ns();
    while (seconds_since(t0) < seconds) {
        for (int k = 0; k < 64; k++) {
            kf_ttlv *root;
            kf_arena_reset(work);
            kf_buf_reset(&re);
            if (kf_ttlv_decode(msg.data, msg.len, NULL, work, &root) < 0 ||
                kf_ttlv_encode(root, &re) < 0 || re.len != msg.len)
                exit(1);
        }
        rt_iters += 64;
    }
    double rt_mbps = (double)(rt_iters * msg.len) / seconds_since(t0) / 1e6;

    /* Reference: copying the same bytes, as a floor no parser can beat. */
    uint8_t *dst = malloc(msg.len);
    size_t copies = 0;
    t0 = kf_mono_ns();
    while (seconds_since(t0) < seconds) {
        for (int k = 0; k < 4096; k++) {
            memcpy(dst, msg.data, msg.len);
            bench_sink ^= dst[k % msg.len];
        }
        copies += 4096;
    }
    double cpy_mbps = (double)(copies * msg.len) / seconds_since(t0) / 1e6;
    free(dst);
    printf("ttlv message               %zu bytes, %zu items deep-nested KMIP response\n",
           msg.len, (size_t)(40 * 13 + 8));
    printf("ttlv decode                %10.1f MB/s  (%.0f messages/s)\n", dec_mbps,
           dec_mbps * 1e6 / (double)msg.len);
    printf("ttlv decode+encode         %10.1f MB/s\n", rt_mbps);
    printf("memcpy (reference)         %10.1f MB/s\n", cpy_mbps);
    printf("ratio decode/memcpy        %10.4f\n", dec_mbps / cpy_mbps);
    kf_buf_free(&msg);
    kf_buf_free(&re);
    kf_arena_free(a);
    kf_arena_free(work);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"creations", required_argument, NULL, 'n'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"dir", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int n = 500;
    double seconds = 2.0;
    char tmpl[] = "/tmp/kf-bench.XXXXXX";
    const char *dir = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "n:s:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n': n = atoi(optarg); break;
        case 's': seconds = atof(optarg); break;
        case 'd': dir = optarg; break;
        case 'h':
            puts("Usage: keyfleet-bench [--creations N] [--seconds S] [--dir DIR]\n"
                 "Durable key creations/s vs raw SQLite inserts (WAL, synchronous=FULL), and\n"
                 "TTLV decode MB/s vs memcpy, measured in the same run. DIR must be on the disk\n"
                 "under test (default: a new directory in /tmp).");
            return 0;
        default: return 2;
        }
    }
    if (!dir && !(dir = mkdtemp(tmpl))) {
        perror("mkdtemp");
        return 1;
    }
    kf_log_open(NULL, KF_LOG_WARN);
    printf("keyfleet-bench: %d durable creations each, %.1f s per TTLV figure, dir %s\n", n,
           seconds, dir);
    double raw = bench_sqlite_inserts(dir, n);
    double kms = bench_service_creations(dir, n);
    printf("sqlite insert (reference)  %10.1f /s  (WAL, synchronous=FULL, 1 tx each)\n", raw);
    printf("keyfleet create (durable)  %10.1f /s  (AES-256, wrapped, audited, 1 tx each)\n", kms);
    printf("ratio create/sqlite        %10.3f\n", kms / raw);
    bench_ttlv(seconds);
    char cmd[4300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (strncmp(dir, "/tmp/kf-bench.", 14) == 0 && system(cmd) != 0)
        fprintf(stderr, "keyfleet-bench: could not remove %s\n", dir);
    return 0;
}
