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
 *       [--kek-count K] [--flow request|full] [--packages DIR] [--batch N]
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
 * --batch N (1..64, default 1): each Request Message carries N batch items for
 *   the connection's pair (a gateway asking for many pair keys at once; the
 *   server runs them in one group-commit transaction, docs/pairing.md "Batched
 *   requests"); --flow full then reports the N items' acks in one message of N
 *   KeyfleetPairAckReport items. Every item must be Success, and with
 *   --packages every part is opened, in order, by the real device states
 *   (outside the timed part). ops counts issuances (items); p50/p99 are per
 *   message (one round trip, or two for full).
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
#include "keyfleet/ttlv.h"

enum flow { FLOW_REQUEST, FLOW_FULL };

struct bench_cfg {
    char host[256];
    uint16_t port;
    const char *ca, *cert, *key, *prefix, *packages;
    int connections, pairs, kek_count, batch;
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
    size_t n, cap, errors, verified, issued;
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

/* ---- Batched messages: N items of one operation in one Request Message ---- */

static int put_head(kf_buf *b, uint32_t tag, uint8_t type, uint32_t len)
{
    KF_GUARD(kf_buf_put_u24(b, tag));
    KF_GUARD(kf_buf_put_u8(b, type));
    return kf_buf_put_u32(b, len);
}

/* Open a Structure; *at is where its length goes (put_close). */
static int put_open(kf_buf *b, uint32_t tag, size_t *at)
{
    KF_GUARD(put_head(b, tag, KF_TTLV_STRUCTURE, 0));
    *at = b->len;
    return KF_OK;
}

static int put_close(kf_buf *b, size_t at)
{
    return kf_buf_patch_u32(b, at - 4, (uint32_t)(b->len - at));
}

static int put_u32(kf_buf *b, uint32_t tag, uint8_t type, uint32_t v)
{
    KF_GUARD(put_head(b, tag, type, 4));
    KF_GUARD(kf_buf_put_u32(b, v));
    return kf_buf_put_u32(b, 0); /* padding */
}

/* Request Message (KMIP 1.4, Batch Count n) whose item i has operation op
 * and payload[i] (whole TTLV items) as its Request Payload's contents. */
static int wrap_many(uint32_t op, const struct kfd_span *payload, size_t n, kf_buf *msg)
{
    size_t message, header, version, item, body;
    KF_GUARD(put_open(msg, KMIP_TAG_REQUEST_MESSAGE, &message));
    KF_GUARD(put_open(msg, KMIP_TAG_REQUEST_HEADER, &header));
    KF_GUARD(put_open(msg, KMIP_TAG_PROTOCOL_VERSION, &version));
    KF_GUARD(put_u32(msg, KMIP_TAG_PROTOCOL_VERSION_MAJOR, KF_TTLV_INTEGER, 1));
    KF_GUARD(put_u32(msg, KMIP_TAG_PROTOCOL_VERSION_MINOR, KF_TTLV_INTEGER, 4));
    KF_GUARD(put_close(msg, version));
    KF_GUARD(put_u32(msg, KMIP_TAG_BATCH_COUNT, KF_TTLV_INTEGER, (uint32_t)n));
    KF_GUARD(put_close(msg, header));
    for (size_t i = 0; i < n; i++) {
        KF_GUARD(put_open(msg, KMIP_TAG_BATCH_ITEM, &item));
        KF_GUARD(put_u32(msg, KMIP_TAG_OPERATION, KF_TTLV_ENUM, op));
        KF_GUARD(put_open(msg, KMIP_TAG_REQUEST_PAYLOAD, &body));
        KF_GUARD(kf_buf_put_bytes(msg, payload[i].p, payload[i].len));
        KF_GUARD(put_close(msg, body));
        KF_GUARD(put_close(msg, item));
    }
    return put_close(msg, message);
}

/* The next TTLV item of in: tag, type, and its value (without padding). */
static int get_item(kf_buf *in, uint32_t *tag, uint8_t *type, kf_buf *value)
{
    uint32_t len;
    KF_GUARD(kf_buf_get_u24(in, tag));
    KF_GUARD(kf_buf_get_u8(in, type));
    KF_GUARD(kf_buf_get_u32(in, &len));
    size_t padded = *type == KF_TTLV_STRUCTURE ? len : ((size_t)len + 7) / 8 * 8;
    KF_ENSURE(padded <= kf_buf_remaining(in), KF_ERR_FORMAT);
    kf_buf_reader(value, kf_buf_read_ptr(in), len);
    return kf_buf_skip(in, padded);
}

struct item_answer {
    uint32_t status, reason;
    struct kfd_span payload, message;
};

/* A Response Message of exactly n items of operation op: each item's result. */
static int unwrap_many(const uint8_t *resp, size_t len, uint32_t op, struct item_answer *out,
                       size_t n)
{
    kf_buf in, message, v;
    uint32_t tag;
    uint8_t type;
    kf_buf_reader(&in, resp, len);
    KF_GUARD(get_item(&in, &tag, &type, &message));
    KF_ENSURE(tag == KMIP_TAG_RESPONSE_MESSAGE && type == KF_TTLV_STRUCTURE, KF_ERR_FORMAT);
    KF_GUARD(get_item(&message, &tag, &type, &v));
    KF_ENSURE(tag == KMIP_TAG_RESPONSE_HEADER, KF_ERR_FORMAT);
    size_t k = 0;
    while (kf_buf_remaining(&message)) {
        kf_buf item;
        KF_GUARD(get_item(&message, &tag, &type, &item));
        KF_ENSURE(tag == KMIP_TAG_BATCH_ITEM && type == KF_TTLV_STRUCTURE && k < n, KF_ERR_FORMAT);
        struct item_answer *a = &out[k++];
        uint32_t item_op = 0;
        *a = (struct item_answer){.status = UINT32_MAX};
        while (kf_buf_remaining(&item)) {
            KF_GUARD(get_item(&item, &tag, &type, &v));
            if (tag == KMIP_TAG_OPERATION)
                KF_GUARD(kf_buf_get_u32(&v, &item_op));
            else if (tag == KMIP_TAG_RESULT_STATUS)
                KF_GUARD(kf_buf_get_u32(&v, &a->status));
            else if (tag == KMIP_TAG_RESULT_REASON)
                KF_GUARD(kf_buf_get_u32(&v, &a->reason));
            else if (tag == KMIP_TAG_RESULT_MESSAGE)
                a->message = (struct kfd_span){kf_buf_read_ptr(&v), kf_buf_remaining(&v)};
            else if (tag == KMIP_TAG_RESPONSE_PAYLOAD)
                a->payload = (struct kfd_span){kf_buf_read_ptr(&v), kf_buf_remaining(&v)};
        }
        KF_ENSURE(item_op == op, KF_ERR_FORMAT);
    }
    return k == n ? KF_OK : KF_ERR_FORMAT;
}

/* One message of n items of op, payloads back to back in c->payload at the
 * given offsets; on KF_OK every item succeeded and out[i] spans its payload. */
static int ext_call_many(struct conn *c, uint32_t op, const size_t *at, size_t n,
                         struct kfd_span *out)
{
    struct kfd_span in[64];
    struct item_answer ans[64];
    for (size_t i = 0; i < n; i++)
        in[i] = (struct kfd_span){c->payload.data + at[i],
                                  (i + 1 < n ? at[i + 1] : c->payload.len) - at[i]};
    kf_buf_reset(&c->msg);
    int rc = wrap_many(op, in, n, &c->msg);
    if (rc < 0) {
        snprintf(c->why, sizeof(c->why), "wrap: %s", kf_strerror(rc));
        return rc;
    }
    rc = kf_tls_client_call(c->t, c->msg.data, c->msg.len, &c->resp);
    if (rc < 0) {
        snprintf(c->why, sizeof(c->why), "transport: %s", kf_strerror(rc));
        return rc;
    }
    rc = unwrap_many(c->resp.data, c->resp.len, op, ans, n);
    if (rc < 0) {
        snprintf(c->why, sizeof(c->why), "answer is not %zu items: %s", n, kf_strerror(rc));
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if (ans[i].status != KMIP_RESULT_STATUS_SUCCESS) {
            int len = ans[i].message.len > 200 ? 200 : (int)ans[i].message.len;
            snprintf(c->why, sizeof(c->why), "item %zu: server answered reason %u: %.*s", i,
                     ans[i].reason, len, (const char *)ans[i].message.p);
            return KF_ERR_DEVICE_SERVER;
        }
        out[i] = ans[i].payload;
    }
    return KF_OK;
}

/* --batch N: N items per message for one pair (the connection's pairs in turn). */
static void run_batched(struct worker *w, struct conn *c, struct bench_device *dev, int mine)
{
    const struct bench_cfg *cfg = w->cfg;
    size_t nb = (size_t)cfg->batch, at[64];
    struct kfd_span m[64], r[64];
    uint8_t(*ackmem)[2][KFD_MSG_MAX] = calloc(nb, sizeof(*ackmem));
    kf_buf(*ack)[2] = calloc(nb, sizeof(*ack));
    if (!ackmem || !ack) {
        fail_note(w, "out of memory");
        goto out;
    }
    uint64_t end = kf_mono_ns() + (uint64_t)(cfg->seconds * 1e9);
    for (long i = 0;; i++) {
        if (cfg->count > 0 ? (long)w->issued >= cfg->count : kf_mono_ns() >= end)
            break;
        struct bench_device *a = &dev[2 * (i % mine)], *b = a + 1;
        uint64_t t0 = kf_mono_ns();
        kf_buf_reset(&c->payload);
        int rc = KF_OK;
        for (size_t j = 0; j < nb && rc == KF_OK; j++) {
            at[j] = c->payload.len;
            rc = kfd_pair_request(&a->d, b->d.st.id, (uint32_t)cfg->kek_count, 0, 0, &c->payload);
        }
        if (rc < 0) {
            fail_note(w, "pair request: %s", kf_strerror(rc));
            break;
        }
        rc = ext_call_many(c, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, at, nb, m);
        uint64_t dt = kf_mono_ns() - t0;
        if (rc < 0) {
            fail_note(w, "%s", c->why);
            if (rc == KF_ERR_CONNECT || w->errors > 100)
                break;
            continue;
        }
        bool bad = false;
        for (size_t j = 0; j < nb && !bad; j++) {
            struct kfd_span pa, pb;
            if ((rc = kfd_pair_split(m[j].p, m[j].len, &pa, &pb)) < 0) {
                fail_note(w, "item %zu: answer is not two parts: %s", j, kf_strerror(rc));
                bad = true;
            } else if (cfg->packages) {
                /* In order: each item's counters are above the one's before. */
                kf_buf_fixed(&ack[j][0], ackmem[j][0], KFD_MSG_MAX);
                kf_buf_fixed(&ack[j][1], ackmem[j][1], KFD_MSG_MAX);
                int ra = kfd_pair_accept(&a->d, KFD_ROLE_A, pa.p, pa.len, &ack[j][0]);
                int rb = kfd_pair_accept(&b->d, KFD_ROLE_B, pb.p, pb.len, &ack[j][1]);
                if (ra < 0 || rb < 0) {
                    fail_note(w, "item %zu: a device refused its part: %s / %s", j, kf_strerror(ra),
                              kf_strerror(rb));
                    bad = true;
                } else {
                    w->verified++;
                }
            }
        }
        if (bad)
            continue;
        if (cfg->flow == FLOW_FULL) {
            kf_buf_reset(&c->payload);
            for (size_t j = 0; j < nb && rc == KF_OK; j++) {
                struct kfd_span acks[2] = {{ack[j][0].data, ack[j][0].len},
                                           {ack[j][1].data, ack[j][1].len}};
                at[j] = c->payload.len;
                rc = kfd_ack_report(acks, 2, &c->payload);
            }
            if (rc < 0) {
                fail_note(w, "ack report: %s", kf_strerror(rc));
                break;
            }
            rc = ext_call_many(c, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, at, nb, r);
            dt = kf_mono_ns() - t0;
            if (rc < 0) {
                fail_note(w, "%s", c->why);
                if (rc == KF_ERR_CONNECT || w->errors > 100)
                    break;
                continue;
            }
        }
        if (record(w, dt) < 0)
            break;
        w->issued += nb;
    }
out:
    if (ackmem)
        kf_wipe(ackmem, nb * sizeof(*ackmem));
    free(ackmem);
    free(ack);
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
    size_t nb = (size_t)cfg->batch;
    if (kf_buf_alloc(&c.payload, 0, nb * 2 * KFD_MSG_MAX, 0) < 0 ||
        kf_buf_alloc(&c.msg, 0, nb * 2 * KFD_MSG_MAX + 4096, 0) < 0 ||
        kf_buf_alloc(&c.resp, 0, 1 << 20, 0) < 0) {
        fail_note(w, "out of memory");
        goto out;
    }
    if (nb > 1) {
        run_batched(w, &c, dev, mine);
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
        w->issued++;
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
        {"batch", required_argument, NULL, 'B'},    {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct bench_cfg cfg = {.prefix = "bench", .connections = 4, .pairs = 0, .kek_count = 1,
                            .seconds = 5, .flow = FLOW_REQUEST, .batch = 1};
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
        case 'B': cfg.batch = atoi(optarg); break;
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
                 "  [--kek-count K] [--flow request|full] [--packages DIR] [--batch N]\n"
                 "Pair-key issuance load: C connections in closed loops, each requesting pair\n"
                 "keys for its own registered pairs PREFIX-a-N/PREFIX-b-N; prints ops/s, p50,\n"
                 "p99. --packages DIR (DIR/<id>.pkg) opens both parts with real device states;\n"
                 "--flow full adds the devices' acknowledgement report to each operation.\n"
                 "--batch N (1-64): N items per Request Message; ops counts items.");
            return 0;
        default: return 2;
        }
    }
    if (cfg.pairs == 0)
        cfg.pairs = cfg.connections;
    const char *colon = server ? strrchr(server, ':') : NULL;
    if (!colon || !cfg.ca || !cfg.cert || !cfg.key || cfg.connections < 1 ||
        cfg.connections > 1024 || cfg.pairs < cfg.connections || cfg.kek_count < 1 ||
        cfg.kek_count > KFD_MAX_KEKS || (cfg.flow == FLOW_FULL && !cfg.packages) || cfg.batch < 1 ||
        cfg.batch > 64 || (size_t)(colon - server) >= sizeof(cfg.host)) {
        fprintf(stderr, "keyfleet-pair-bench: --server HOST:PORT, --ca, --cert, --key needed; "
                        "--pairs >= --connections; --flow full needs --packages; --batch 1-64 "
                        "(see --help)\n");
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
    size_t total = 0, errors = 0, verified = 0, issued = 0;
    for (int i = 0; i < cfg.connections; i++) {
        pthread_join(w[i].thread, NULL);
        total += w[i].n;
        errors += w[i].errors;
        verified += w[i].verified;
        issued += w[i].issued;
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
    /* ops: issuances (items); p50/p99: per message (= per issuance at --batch 1). */
    printf("op=pair-%s connections=%d batch=%d seconds=%.1f ops=%zu ops_per_s=%.1f "
           "messages=%zu p50_ms=%.3f p99_ms=%.3f errors=%zu verified=%zu\n",
           cfg.flow == FLOW_FULL ? "full" : "request", cfg.connections, cfg.batch, secs, issued,
           (double)issued / secs, total, p50, p99, errors, verified);
    for (int i = 0; i < cfg.connections; i++)
        if (w[i].errors) {
            fprintf(stderr, "keyfleet-pair-bench: first error: %s\n", w[i].first_error);
            break;
        }
    free(all);
    free(w);
    return errors ? 1 : 0;
}
