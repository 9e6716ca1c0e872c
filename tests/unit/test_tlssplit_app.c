/*
 * The application channel between KMIP worker processes and keyfleetd
 * (src/tlssplit/app.c): every message round-trips byte-exact; every
 * malformation is KF_ERR_SPLIT_APP (frame version, reserved bytes, unknown or
 * disallowed type, length over the type's limit, each field's limits, a KMIP
 * message that is not exactly one TTLV message within KF_TLS_MESSAGE_MAX);
 * the stream reader reassembles frames cut anywhere, takes many from one
 * read and frames larger than its buffer, and tells a clean end from a cut
 * one. Worker side and keyfleetd side over a socketpair: answers come back
 * by ID with the principal keyfleetd looked up under the request's connection
 * ID (sent by a stand-in handler on a peers channel); a request with a forged,
 * unknown or ended connection ID is refused (FAILED, KF_ERR_SPLIT_APP) and the
 * worker cannot reach any other principal; a slow request holds up no other
 * connection; FAILED ends only its call; each protocol violation by either
 * side is caught (keyfleetd: garbage, too many requests at once, a CLOSED
 * too many, a frame that stalls, answers not taken in time; worker: an answer
 * nobody asked for); stopping keyfleetd's side still answers what is in
 * flight. Finally a forked KMIP worker process behind a forked session
 * handler: a GnuTLS client's TTLV request reaches the handler callback with
 * the identity map's principal (from the handler's peers channel: the worker
 * has only the connection ID), the ID is forgotten when its connection ends,
 * the worker is confined, and killing it ends its channel.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "keyfleet/ttlv.h"
#include "tlssplit/app.h"
#include "tlssplit/channel.h"
#include "tlssplit_app_client.h"

static uint8_t mem[KF_APP_FRAME_LEN + KF_APP_RESPONSE_BODY_MAX];

/* A TTLV message of total bytes: one byte string (tag 420078) of total - 8 bytes. */
static size_t ttlv_message(uint8_t *p, size_t total, uint8_t fill)
{
    assert_true(total >= 8 && total % 8 == 0);
    uint32_t len = (uint32_t)(total - 8);
    p[0] = 0x42, p[1] = 0x00, p[2] = 0x78, p[3] = 0x08;
    p[4] = (uint8_t)(len >> 24), p[5] = (uint8_t)(len >> 16), p[6] = (uint8_t)(len >> 8),
    p[7] = (uint8_t)len;
    memset(p + 8, fill, len);
    return total;
}

static struct kf_principal sample_who(void)
{
    struct kf_principal w = {.roles = 0x1f, .ndomains = 2};
    snprintf(w.name, sizeof(w.name), "cert:CN=admin,O=keyfleet dev");
    snprintf(w.domains[0], sizeof(w.domains[0]), "VENDOR");
    snprintf(w.domains[1], sizeof(w.domains[1]), "DE");
    snprintf(w.default_domain, sizeof(w.default_domain), "VENDOR");
    return w;
}

/* The stand-in session handler: PEER and GONE on a peers channel whose table
 * the keyfleetd sides of these tests use (host_start). */
static int peers_tx = -1;
static kf_app_peers *peers_rx;
static kf_app_peers *host_peers; /* what host_start gives the host side */

static void conn_id_of(unsigned slot, uint8_t id[KF_APP_CONN_ID_LEN])
{
    memset(id, 0xc5, KF_APP_CONN_ID_LEN);
    id[0] = (uint8_t)slot;
    id[1] = (uint8_t)(slot >> 8);
}

static void peer_send(const uint8_t id[KF_APP_CONN_ID_LEN], const char *name)
{
    uint8_t buf[KF_SPLIT_PEERS_MAX];
    kf_buf out;
    kf_buf_fixed(&out, buf, sizeof(buf));
    struct kf_split_peer p = {.who = sample_who()};
    memcpy(p.id, id, sizeof(p.id));
    snprintf(p.who.name, sizeof(p.who.name), "%s", name);
    assert_int_equal(kf_split_encode_peer(&p, &out), KF_OK);
    assert_int_equal(kf_split_send(peers_tx, &out, NULL, 0), KF_OK);
}

static void gone_send(const uint8_t id[KF_APP_CONN_ID_LEN])
{
    uint8_t buf[64];
    kf_buf out;
    kf_buf_fixed(&out, buf, sizeof(buf));
    assert_int_equal(kf_split_encode_gone(id, &out), KF_OK);
    assert_int_equal(kf_split_send(peers_tx, &out, NULL, 0), KF_OK);
}

/* Slots 0..63 each have a connection named cert:CN=slot<N>. */
static void peers_setup(void)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    peers_tx = sv[0];
    assert_int_equal(kf_app_peers_start(sv[1], &peers_rx), KF_OK);
    host_peers = peers_rx;
    for (unsigned slot = 0; slot < 64; slot++) {
        uint8_t id[KF_APP_CONN_ID_LEN];
        char name[64];
        conn_id_of(slot, id);
        snprintf(name, sizeof(name), "cert:CN=slot%u", slot);
        peer_send(id, name);
    }
}

static kf_buf frame_of(kf_buf *out, uint8_t want)
{
    uint8_t type;
    kf_buf body;
    assert_int_equal(kf_app_decode_frame(out->data, out->len, 0xff, &type, &body), KF_OK);
    assert_int_equal(type, want);
    return body;
}

/* ---- codec ------------------------------------------------------------------------ */

static void test_roundtrip(void **state)
{
    (void)state;
    kf_buf out, again, body;
    uint8_t mem2[8192];
    /* SETTINGS */
    struct kf_app_settings s = {.max_connections = 256, .handshake_ms = 10000, .idle_ms = 300000,
                                .message_ms = 10000, .log_level = KF_LOG_WARN,
                                .sandbox_flags = KF_TLSSPLIT_SANDBOX_KEEP_USER,
                                .flags = KF_APP_SETTINGS_OPEN_LOG};
    snprintf(s.log_file, sizeof(s.log_file), "/var/log/keyfleetd.log");
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_settings(&s, &out), KF_OK);
    body = frame_of(&out, KF_APP_SETTINGS);
    struct kf_app_settings s2;
    assert_int_equal(kf_app_decode_settings(&body, &s2), KF_OK);
    assert_memory_equal(&s, &s2, sizeof(s));
    /* REQUEST: whole, and head + message (what the worker writes) */
    uint8_t msg[64];
    struct kf_app_request r = {.id = 0x00070003, .msg = msg, .msg_len = ttlv_message(msg, 64, 0xab)};
    for (size_t i = 0; i < sizeof(r.conn); i++)
        r.conn[i] = (uint8_t)(0xf0 + i);
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_request(&r, &out), KF_OK);
    kf_buf_fixed(&again, mem2, sizeof(mem2));
    assert_int_equal(kf_app_encode_request_head(&r, &again), KF_OK);
    assert_int_equal(again.len + r.msg_len, out.len);
    assert_memory_equal(again.data, out.data, again.len);
    body = frame_of(&out, KF_APP_REQUEST);
    struct kf_app_request r2;
    assert_int_equal(kf_app_decode_request(&body, &r2), KF_OK);
    assert_int_equal(r2.id, r.id);
    assert_memory_equal(r2.conn, r.conn, sizeof(r.conn));
    assert_int_equal(r2.msg_len, 64);
    assert_memory_equal(r2.msg, msg, 64);
    kf_buf_fixed(&again, mem2, sizeof(mem2));
    assert_int_equal(kf_app_encode_request(&r2, &again), KF_OK);
    assert_int_equal(again.len, out.len);
    assert_memory_equal(again.data, out.data, out.len);
    /* RESPONSE and FAILED */
    struct kf_app_response a = {.id = 9, .status = KF_OK, .msg = msg, .msg_len = 64}, a2;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_response(&a, &out), KF_OK);
    body = frame_of(&out, KF_APP_RESPONSE);
    assert_int_equal(kf_app_decode_response(KF_APP_RESPONSE, &body, &a2), KF_OK);
    assert_int_equal(a2.id, 9);
    assert_int_equal(a2.msg_len, 64);
    assert_memory_equal(a2.msg, msg, 64);
    a.status = KF_ERR_PERM;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_response(&a, &out), KF_OK);
    assert_int_equal(out.len, KF_APP_FRAME_LEN + 8);
    body = frame_of(&out, KF_APP_FAILED);
    assert_int_equal(kf_app_decode_response(KF_APP_FAILED, &body, &a2), KF_OK);
    assert_int_equal(a2.status, KF_ERR_PERM);
    assert_int_equal(a2.id, 9);
    /* CLOSED */
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_closed(&out), KF_OK);
    assert_int_equal(out.len, KF_APP_FRAME_LEN);
    body = frame_of(&out, KF_APP_CLOSED);
    assert_int_equal(kf_app_decode_closed(&body), KF_OK);
    /* The largest request and answer fit their limits exactly. */
    uint8_t *big = malloc(KF_TLS_MESSAGE_MAX);
    r.msg = big;
    r.msg_len = ttlv_message(big, KF_TLS_MESSAGE_MAX, 1);
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_request(&r, &out), KF_OK);
    assert_int_equal(out.len, KF_APP_FRAME_LEN + KF_APP_REQUEST_BODY_MAX);
    body = frame_of(&out, KF_APP_REQUEST);
    assert_int_equal(kf_app_decode_request(&body, &r2), KF_OK);
    free(big);
}

/* Decode the frame in out (allowing every type) and its body by type. */
static int decode_any(const kf_buf *out)
{
    uint8_t type;
    kf_buf body;
    struct kf_app_settings s;
    struct kf_app_request r;
    struct kf_app_response a;
    int rc = kf_app_decode_frame(out->data, out->len, 0xff, &type, &body);
    if (rc < 0)
        return rc;
    switch (type) {
    case KF_APP_SETTINGS: return kf_app_decode_settings(&body, &s);
    case KF_APP_REQUEST: return kf_app_decode_request(&body, &r);
    case KF_APP_CLOSED: return kf_app_decode_closed(&body);
    default: return kf_app_decode_response(type, &body, &a);
    }
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static void test_frame_refusals(void **state)
{
    (void)state;
    kf_buf out;
    uint8_t type;
    kf_buf body;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_closed(&out), KF_OK);
    assert_int_equal(decode_any(&out), KF_OK);
    mem[0] = 2; /* version */
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    mem[0] = 1, mem[2] = 1; /* reserved */
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    mem[2] = 0, mem[1] = 0; /* type 0, 6 */
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    mem[1] = 6;
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    mem[1] = KF_APP_CLOSED;
    /* not in the allow list */
    assert_int_equal(kf_app_decode_frame(mem, 8, KF_APP_ALLOW(KF_APP_REQUEST), &type, &body),
                     KF_ERR_SPLIT_APP);
    /* CLOSED with a body; FAILED of the wrong length; a length beyond the type's limit */
    put_be32(mem + 4, 1);
    mem[8] = 0;
    assert_int_equal(kf_app_decode_frame(mem, 9, 0xff, &type, &body), KF_ERR_SPLIT_APP);
    mem[1] = KF_APP_FAILED;
    put_be32(mem + 4, 7);
    assert_int_equal(kf_app_decode_frame(mem, 15, 0xff, &type, &body), KF_ERR_SPLIT_APP);
    mem[1] = KF_APP_RESPONSE;
    put_be32(mem + 4, KF_APP_RESPONSE_BODY_MAX + 1);
    assert_int_equal(kf_app_decode_header(mem, 0xff, &type, &(uint32_t){0}), KF_ERR_SPLIT_APP);
    put_be32(mem + 4, KF_APP_RESPONSE_BODY_MAX);
    assert_int_equal(kf_app_decode_header(mem, 0xff, &type, &(uint32_t){0}), KF_OK);
    mem[1] = KF_APP_SETTINGS;
    put_be32(mem + 4, KF_APP_SETTINGS_BODY_MAX + 1);
    assert_int_equal(kf_app_decode_header(mem, 0xff, &type, &(uint32_t){0}), KF_ERR_SPLIT_APP);
    /* length field against the bytes there: short and long */
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_closed(&out), KF_OK);
    assert_int_equal(kf_app_decode_frame(mem, 7, 0xff, &type, &body), KF_ERR_SPLIT_APP);
    assert_int_equal(kf_app_decode_frame(mem, 9, 0xff, &type, &body), KF_ERR_SPLIT_APP);
}

static void test_settings_refusals(void **state)
{
    (void)state;
    struct kf_app_settings good = {.max_connections = 4, .handshake_ms = 1, .idle_ms = 86400000,
                                   .message_ms = 5};
    kf_buf out;
    /* body offsets: 0 max_connections, 4 handshake, 8 idle, 12 message (ms), 16 log
     * level, 17 sandbox flags, 18 flags, 19 log file */
    struct {
        size_t at;
        uint8_t v;
        int want;
    } cases[] = {
        {0, 1, KF_ERR_SPLIT_APP},  /* 0x01000004 connections */
        {1, 1, KF_ERR_SPLIT_APP},  /* 65540 connections: beyond the 16-bit slot numbers */
        {4, 0x10, KF_ERR_SPLIT_APP}, /* handshake time-out over 24 h */
        {16, 3, KF_OK},            /* log level error */
        {16, 4, KF_ERR_SPLIT_APP}, /* no such level */
        {17, 3, KF_OK},            /* both sandbox flags */
        {17, 4, KF_ERR_SPLIT_APP},
        {18, 2, KF_ERR_SPLIT_APP}, /* unknown flag */
        {20, 1, KF_ERR_SPLIT_APP}, /* log file length beyond the body */
    };
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_settings(&good, &out), KF_OK);
    assert_int_equal(decode_any(&out), KF_OK);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kf_buf_fixed(&out, mem, sizeof(mem));
        assert_int_equal(kf_app_encode_settings(&good, &out), KF_OK);
        mem[KF_APP_FRAME_LEN + cases[i].at] = cases[i].v;
        assert_int_equal(decode_any(&out), cases[i].want);
    }
    struct kf_app_settings s = good;
    s.max_connections = 0;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_settings(&s, &out), KF_ERR_ARG);
    s = good;
    s.message_ms = 0;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_settings(&s, &out), KF_OK);
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    /* log file with a NUL inside; trailing byte */
    s = good;
    snprintf(s.log_file, sizeof(s.log_file), "abc");
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_settings(&s, &out), KF_OK);
    mem[out.len - 2] = 0;
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_settings(&good, &out), KF_OK);
    mem[out.len] = 0;
    out.len++;
    put_be32(mem + 4, (uint32_t)(out.len - KF_APP_FRAME_LEN));
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
}

static void test_request_refusals(void **state)
{
    (void)state;
    uint8_t msg[32];
    struct kf_app_request r = {.id = 1, .msg = msg, .msg_len = ttlv_message(msg, 32, 7)};
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_request(&r, &out), KF_OK);
    assert_int_equal(out.len, KF_APP_FRAME_LEN + 4 + KF_APP_CONN_ID_LEN + 32);
    assert_int_equal(decode_any(&out), KF_OK);
    /* cut inside the connection ID */
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_request(&r, &out), KF_OK);
    out.len = KF_APP_FRAME_LEN + 4 + KF_APP_CONN_ID_LEN - 1;
    put_be32(mem + 4, (uint32_t)(out.len - KF_APP_FRAME_LEN));
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_request(&r, &out), KF_OK);
    /* the TTLV length says more, or less, than is there */
    size_t msg_at = out.len - 32;
    mem[msg_at + 7] = 32;
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    mem[msg_at + 7] = 16;
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    mem[msg_at + 7] = 24;
    mem[msg_at + 3] = 0x55; /* no such TTLV type */
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    /* shorter than a TTLV header */
    kf_buf_fixed(&out, mem, sizeof(mem));
    r.msg_len = 4;
    assert_int_equal(kf_app_encode_request(&r, &out), KF_ERR_LIMIT);
    r.msg_len = 32;
    assert_int_equal(kf_app_encode_request(&r, &out), KF_OK);
    out.len -= 28;
    put_be32(mem + 4, (uint32_t)(out.len - KF_APP_FRAME_LEN));
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    /* over the KMIP message limit (the monolithic endpoint's) */
    r.msg_len = KF_TLS_MESSAGE_MAX + 8;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_request_head(&r, &out), KF_ERR_LIMIT);
    /* hand-made: 32 bytes whose TTLV header claims 1 MiB + 8 */
    r.msg_len = 32;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_request(&r, &out), KF_OK);
    uint8_t *claim = mem + out.len - 32;
    put_be32(claim + 4, (uint32_t)KF_TLS_MESSAGE_MAX);
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    put_be32(claim + 4, 24);
    assert_int_equal(decode_any(&out), KF_OK);
}

static void test_response_refusals(void **state)
{
    (void)state;
    kf_buf out;
    uint8_t one = 1;
    struct kf_app_response a = {.id = 1, .status = KF_OK, .msg = &one, .msg_len = 0};
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_response(&a, &out), KF_ERR_LIMIT); /* empty */
    a.msg_len = KF_APP_ANSWER_MAX + 1;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_response_head(&a, &out), KF_ERR_LIMIT);
    /* hand-made empty RESPONSE, FAILED with reason 0 and > 0 */
    uint8_t f[16] = {1, KF_APP_RESPONSE, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1};
    kf_buf_reader(&out, f, 12);
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    uint8_t g[16] = {1, KF_APP_FAILED, 0, 0, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0};
    kf_buf_reader(&out, g, 16);
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    g[15] = 5;
    assert_int_equal(decode_any(&out), KF_ERR_SPLIT_APP);
    g[12] = 0xff, g[13] = 0xff, g[14] = 0xff, g[15] = 0xfe; /* -2 */
    assert_int_equal(decode_any(&out), KF_OK);
}

/* ---- the stream reader ---------------------------------------------------------------- */

static void write_slowly(int fd, const uint8_t *p, size_t n, size_t step)
{
    for (size_t i = 0; i < n; i += step) {
        size_t k = n - i < step ? n - i : step;
        assert_int_equal(send(fd, p + i, k, MSG_NOSIGNAL), (ssize_t)k);
    }
}

struct writer {
    int fd;
    const uint8_t *p;
    size_t n, step;
};

static void *writer_thread(void *arg)
{
    struct writer *w = arg;
    for (size_t i = 0; i < w->n; i += w->step) {
        size_t k = w->n - i < w->step ? w->n - i : w->step;
        size_t done = 0;
        while (done < k) {
            ssize_t r = send(w->fd, w->p + i + done, k - done, MSG_NOSIGNAL);
            if (r <= 0)
                return NULL;
            done += (size_t)r;
        }
    }
    return NULL;
}

static void test_reader(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct kf_app_reader rd;
    assert_int_equal(kf_app_reader_init(&rd, sv[1]), KF_OK);
    uint8_t type;
    kf_buf body, out;
    bool eof;
    const unsigned answers = KF_APP_ALLOW(KF_APP_RESPONSE) | KF_APP_ALLOW(KF_APP_FAILED);
    /* nothing yet: time-out */
    assert_int_equal(kf_app_read(&rd, answers, 50, &type, &body, &eof), KF_ERR_TIMEOUT);
    /* three frames in one write, then one cut into single bytes */
    uint8_t msg[40];
    ttlv_message(msg, 40, 3);
    struct kf_app_response a = {.id = 1, .status = KF_OK, .msg = msg, .msg_len = 40};
    kf_buf_fixed(&out, mem, sizeof(mem));
    for (uint32_t i = 1; i <= 3; i++) {
        a.id = i;
        assert_int_equal(kf_app_encode_response(&a, &out), KF_OK);
    }
    write_slowly(sv[0], out.data, out.len, out.len);
    for (uint32_t i = 1; i <= 3; i++) {
        struct kf_app_response got;
        assert_int_equal(kf_app_read(&rd, answers, 1000, &type, &body, &eof), KF_OK);
        assert_int_equal(kf_app_decode_response(type, &body, &got), KF_OK);
        assert_int_equal(got.id, i);
        assert_memory_equal(got.msg, msg, 40);
    }
    kf_buf_fixed(&out, mem, sizeof(mem));
    a.id = 77;
    assert_int_equal(kf_app_encode_response(&a, &out), KF_OK);
    write_slowly(sv[0], out.data, out.len, 1);
    struct kf_app_response got;
    assert_int_equal(kf_app_read(&rd, answers, 1000, &type, &body, &eof), KF_OK);
    assert_int_equal(kf_app_decode_response(type, &body, &got), KF_OK);
    assert_int_equal(got.id, 77);
    /* an answer of 1 MiB (larger than the buffer), written in pieces by another thread */
    uint8_t *big = malloc(KF_TLS_MESSAGE_MAX);
    a.id = 78;
    a.msg = big;
    a.msg_len = ttlv_message(big, KF_TLS_MESSAGE_MAX, 0x5a);
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_response(&a, &out), KF_OK);
    struct writer w = {.fd = sv[0], .p = out.data, .n = out.len, .step = 70000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_thread, &w), 0);
    assert_int_equal(kf_app_read(&rd, answers, 5000, &type, &body, &eof), KF_OK);
    assert_int_equal(kf_app_decode_response(type, &body, &got), KF_OK);
    assert_int_equal(got.id, 78);
    assert_int_equal(got.msg_len, KF_TLS_MESSAGE_MAX);
    assert_memory_equal(got.msg, big, KF_TLS_MESSAGE_MAX);
    pthread_join(t, NULL);
    free(big);
    /* a type this side does not take */
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_closed(&out), KF_OK);
    write_slowly(sv[0], out.data, out.len, out.len);
    assert_int_equal(kf_app_read(&rd, answers, 1000, &type, &body, &eof), KF_ERR_SPLIT_APP);
    kf_app_reader_free(&rd);
    close(sv[0]);
    close(sv[1]);
    /* the other end goes: in a frame (not eof), between frames (eof) */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(kf_app_reader_init(&rd, sv[1]), KF_OK);
    kf_buf_fixed(&out, mem, sizeof(mem));
    a.msg = msg;
    a.msg_len = 40;
    assert_int_equal(kf_app_encode_response(&a, &out), KF_OK);
    write_slowly(sv[0], out.data, out.len, out.len);
    write_slowly(sv[0], out.data, 10, 10);
    close(sv[0]);
    assert_int_equal(kf_app_read(&rd, answers, 1000, &type, &body, &eof), KF_OK);
    assert_int_equal(kf_app_read(&rd, answers, 1000, &type, &body, &eof), KF_ERR_IO);
    assert_false(eof);
    kf_app_reader_free(&rd);
    close(sv[1]);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(kf_app_reader_init(&rd, sv[1]), KF_OK);
    close(sv[0]);
    assert_int_equal(kf_app_read(&rd, answers, 1000, &type, &body, &eof), KF_ERR_IO);
    assert_true(eof);
    kf_app_reader_free(&rd);
    close(sv[1]);
}

/* ---- worker side and keyfleetd side over a socketpair ---------------------------------- */

struct host_side {
    kf_app_host *h;
    atomic_int ended; /* 0, or the reason + 1000 */
    atomic_uint closed, conns;
    /* batched hosts (host_start_batched): the calls of batch_begin, batch_end and
     * the stand-in KMS, and what was wrong with their order */
    atomic_uint begins, ends, handled, outside, nested, unpaired, early;
    atomic_int end_rc; /* what batch_end returns */
    int worker_fd;     /* check_early: no answer may be there when batch_end is called */
    atomic_bool check_early;
};

/* On a pool thread: between its batch_begin and batch_end. */
static _Thread_local bool batch_open;

/* The answer: "who=<name>;" then the request, as one TTLV byte string; the
 * request's first content byte says what else to do. */
static int fake_kms(void *arg, const struct kf_principal *who, const uint8_t *req, size_t len,
                    kf_buf *resp)
{
    struct host_side *hs = arg; /* batched hosts only */
    if (hs) {
        atomic_fetch_add(&hs->handled, 1);
        if (!batch_open)
            atomic_fetch_add(&hs->outside, 1);
    }
    uint8_t op = len > 8 ? req[8] : 0;
    if (op == 'F')
        return KF_ERR_PERM;
    if (op == 'S')
        usleep(400000);
    char head[300];
    int n = snprintf(head, sizeof(head), "who=%s;", who->name);
    size_t content = (size_t)n + len, total = 8 + content + (8 - content % 8) % 8;
    if (op == 'B')
        total = KF_TLS_MESSAGE_MAX;
    uint8_t *p;
    KF_GUARD(kf_buf_put_space(resp, total, &p));
    memset(p, 0, total);
    ttlv_message(p, total, 0);
    memcpy(p + 8, head, (size_t)n);
    memcpy(p + 8 + n, req, len < total - 8 - (size_t)n ? len : total - 8 - (size_t)n);
    return KF_OK;
}

static bool host_closed(void *owner)
{
    struct host_side *hs = owner;
    atomic_fetch_add(&hs->closed, 1);
    unsigned n = atomic_load(&hs->conns);
    do
        if (n == 0)
            return false;
    while (!atomic_compare_exchange_weak(&hs->conns, &n, n - 1));
    return true;
}

static void host_ended(void *owner, int reason)
{
    struct host_side *hs = owner;
    atomic_store(&hs->ended, reason + 1000);
}

static void host_start(struct host_side *hs, int fd, unsigned max_inflight, int timeout_ms)
{
    memset(hs, 0, sizeof(*hs));
    struct kf_app_host_config cfg = {.handle = fake_kms, .on_closed = host_closed,
                                     .on_end = host_ended, .owner = hs, .peers = host_peers,
                                     .max_inflight = max_inflight,
                                     .write_timeout_ms = timeout_ms};
    assert_int_equal(kf_app_host_start(fd, &cfg, &hs->h), KF_OK);
}

static int count_begin(void *arg)
{
    struct host_side *hs = arg;
    atomic_fetch_add(&hs->begins, 1);
    if (batch_open)
        atomic_fetch_add(&hs->nested, 1);
    batch_open = true;
    return KF_OK;
}

static int count_end(void *arg)
{
    struct host_side *hs = arg;
    atomic_fetch_add(&hs->ends, 1);
    if (!batch_open)
        atomic_fetch_add(&hs->unpaired, 1);
    batch_open = false;
    int avail = 0;
    if (atomic_load(&hs->check_early) && ioctl(hs->worker_fd, FIONREAD, &avail) == 0 && avail > 0)
        atomic_fetch_add(&hs->early, 1); /* an answer of the batch left before its end */
    return atomic_load(&hs->end_rc);
}

/* A request whose first content byte is 'W' stands for one that waits for its
 * own fdatasync: it may not have others wait behind it. */
static bool not_w(void *arg, const uint8_t *req, size_t len)
{
    (void)arg;
    return !(len > 8 && req[8] == 'W');
}

/* A keyfleetd side with batch_begin/batch_end (counted; batch_end returns
 * hs->end_rc) whose stand-in KMS counts its calls; 'W' requests end a batch. */
static void host_start_batched(struct host_side *hs, int fd, unsigned max_inflight, int timeout_ms)
{
    memset(hs, 0, sizeof(*hs));
    struct kf_app_host_config cfg = {.handle = fake_kms, .handle_arg = hs,
                                     .batchable = not_w, .batch_begin = count_begin,
                                     .batch_end = count_end,
                                     .on_closed = host_closed, .on_end = host_ended, .owner = hs,
                                     .peers = host_peers, .max_inflight = max_inflight,
                                     .write_timeout_ms = timeout_ms};
    assert_int_equal(kf_app_host_start(fd, &cfg, &hs->h), KF_OK);
}

static void host_send_settings(struct host_side *hs, unsigned max_conns)
{
    struct kf_app_settings s = {.max_connections = max_conns, .handshake_ms = 3000,
                                .idle_ms = 10000, .message_ms = 3000, .log_level = KF_LOG_WARN};
    assert_int_equal(kf_app_host_settings(hs->h, &s), KF_OK);
}

/* Up to 5 s for the host side to end; its reason. */
static int host_wait_end(struct host_side *hs)
{
    for (int i = 0; i < 500 && !atomic_load(&hs->ended); i++)
        usleep(10000);
    return atomic_load(&hs->ended) - 1000;
}

struct worker_side {
    app_client *c;
    atomic_int ended;
};

static void client_ended(void *arg, int reason)
{
    struct worker_side *ws = arg;
    atomic_store(&ws->ended, reason + 1000);
}

/* A worker-side client on fd, past SETTINGS. */
static void client_start(struct worker_side *ws, int fd, unsigned slots)
{
    struct kf_app_reader rd;
    uint8_t type;
    kf_buf body;
    bool eof;
    struct kf_app_settings s;
    memset(ws, 0, sizeof(*ws));
    assert_int_equal(kf_app_reader_init(&rd, fd), KF_OK);
    assert_int_equal(kf_app_read(&rd, KF_APP_ALLOW(KF_APP_SETTINGS), 3000, &type, &body, &eof),
                     KF_OK);
    assert_int_equal(kf_app_decode_settings(&body, &s), KF_OK);
    assert_int_equal(app_client_start(&rd, slots, client_ended, ws, &ws->c), KF_OK);
}

static void pair(struct host_side *hs, struct worker_side *ws, unsigned conns)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    host_start(hs, sv[0], conns, 2000);
    host_send_settings(hs, conns);
    client_start(ws, sv[1], conns);
}

static int call(struct worker_side *ws, unsigned slot, char op, size_t len, kf_buf *resp)
{
    uint8_t *msg = malloc(len);
    ttlv_message(msg, len, 'x');
    msg[8] = (uint8_t)op;
    uint8_t conn[KF_APP_CONN_ID_LEN];
    conn_id_of(slot, conn); /* keyfleetd knows it as cert:CN=slot<N> */
    int rc = app_client_call(ws->c, slot, conn, msg, len, resp);
    if (rc == KF_OK) {
        char want[64];
        int n = snprintf(want, sizeof(want), "who=cert:CN=slot%u;", slot);
        assert_true(resp->len >= 8 + (size_t)n + len || op == 'B');
        assert_memory_equal(resp->data + 8, want, (size_t)n);
        if (op != 'B')
            assert_memory_equal(resp->data + 8 + n, msg, len);
    }
    free(msg);
    return rc;
}

static void test_calls(void **state)
{
    (void)state;
    struct host_side hs;
    struct worker_side ws;
    pair(&hs, &ws, 4);
    kf_buf resp = {0};
    assert_int_equal(kf_buf_alloc(&resp, 64, KF_APP_ANSWER_MAX, KF_BUF_SECRET), KF_OK);
    unsigned s0 = 0, s1 = 0;
    assert_int_equal(app_client_slot(ws.c, &s0), KF_OK);
    assert_int_equal(app_client_slot(ws.c, &s1), KF_OK);
    assert_int_not_equal(s0, s1);
    for (int i = 0; i < 20; i++)
        assert_int_equal(call(&ws, s0, 'g', 64, &resp), KF_OK);
    assert_int_equal(call(&ws, s1, 'F', 16, &resp), KF_ERR_PERM); /* FAILED: this call only */
    assert_int_equal(call(&ws, s1, 'g', 16, &resp), KF_OK);
    /* the largest request; the largest answer */
    assert_int_equal(call(&ws, s0, 'g', KF_TLS_MESSAGE_MAX - 64 * 1024, &resp), KF_OK);
    assert_int_equal(call(&ws, s1, 'B', 64, &resp), KF_OK);
    assert_int_equal(resp.len, KF_TLS_MESSAGE_MAX);
    /* CLOSED is counted; one too many is a violation */
    atomic_store(&hs.conns, 1);
    assert_int_equal(app_client_closed(ws.c), KF_OK);
    for (int i = 0; i < 200 && atomic_load(&hs.closed) < 1; i++)
        usleep(5000);
    assert_int_equal(atomic_load(&hs.closed), 1);
    assert_int_equal(atomic_load(&hs.ended), 0);
    assert_int_equal(app_client_closed(ws.c), KF_OK);
    assert_int_equal(host_wait_end(&hs), KF_ERR_SPLIT_APP);
    app_client_release(ws.c, s0);
    app_client_release(ws.c, s1);
    kf_buf_free(&resp);
    kf_app_host_stop(hs.h);
    /* keyfleetd's side is gone: the worker's next call fails and says why */
    assert_int_equal(call(&ws, 0, 'g', 16, &resp), KF_ERR_SPLIT_APP);
    assert_int_equal(atomic_load(&ws.ended) - 1000, KF_ERR_IO);
    app_client_stop(ws.c);
}

struct caller {
    struct worker_side *ws;
    unsigned slot;
    char op;
    int n, rc;
    uint64_t done_ns;
};

static void *caller_thread(void *arg)
{
    struct caller *c = arg;
    kf_buf resp = {0};
    assert_int_equal(kf_buf_alloc(&resp, 64, KF_APP_ANSWER_MAX, KF_BUF_SECRET), KF_OK);
    c->rc = KF_OK;
    for (int i = 0; i < c->n && c->rc == KF_OK; i++)
        c->rc = call(c->ws, c->slot, c->op, 24 + 8 * (size_t)(i % 7), &resp);
    c->done_ns = kf_mono_ns();
    kf_buf_free(&resp);
    return NULL;
}

/* A slow request holds up nobody else; many callers at once get their own answers. */
static void test_pipelined(void **state)
{
    (void)state;
    struct host_side hs;
    struct worker_side ws;
    pair(&hs, &ws, 16);
    struct caller c[9];
    pthread_t t[9];
    for (unsigned i = 0; i < 9; i++) {
        assert_int_equal(app_client_slot(ws.c, &c[i].slot), KF_OK);
        c[i].ws = &ws;
        c[i].op = i == 0 ? 'S' : 'g';
        c[i].n = i == 0 ? 1 : 30;
    }
    uint64_t t0 = kf_mono_ns();
    assert_int_equal(pthread_create(&t[0], NULL, caller_thread, &c[0]), 0);
    usleep(50000); /* the slow one is under way */
    for (unsigned i = 1; i < 9; i++)
        assert_int_equal(pthread_create(&t[i], NULL, caller_thread, &c[i]), 0);
    for (unsigned i = 1; i < 9; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].rc, KF_OK);
    }
    pthread_join(t[0], NULL);
    assert_int_equal(c[0].rc, KF_OK);
    assert_true(c[0].done_ns - t0 >= 400000000ull);
    /* at least one caller's 30 fast calls were all answered while the slow one was
     * still being handled: they did not queue behind it */
    uint64_t first_fast = UINT64_MAX;
    for (unsigned i = 1; i < 9; i++)
        first_fast = c[i].done_ns < first_fast ? c[i].done_ns : first_fast;
    assert_true(first_fast < c[0].done_ns);
    kf_app_host_stop(hs.h);
    app_client_stop(ws.c);
}

/* keyfleetd stops while a request is in flight: it is still answered. */
static void test_stop_answers_inflight(void **state)
{
    (void)state;
    struct host_side hs;
    struct worker_side ws;
    pair(&hs, &ws, 2);
    struct caller c = {.ws = &ws, .op = 'S', .n = 1};
    assert_int_equal(app_client_slot(ws.c, &c.slot), KF_OK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, caller_thread, &c), 0);
    usleep(100000);
    kf_app_host_stop(hs.h);
    pthread_join(t, NULL);
    assert_int_equal(c.rc, KF_OK);
    app_client_stop(ws.c);
}

/* keyfleetd's side against a worker that breaks the protocol. */
static void host_violation(const uint8_t *bytes, size_t n, unsigned max_inflight, int want)
{
    int sv[2];
    struct host_side hs;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    host_start(&hs, sv[0], max_inflight, 300);
    host_send_settings(&hs, max_inflight);
    write_slowly(sv[1], bytes, n, n);
    assert_int_equal(host_wait_end(&hs), want);
    kf_app_host_stop(hs.h);
    close(sv[1]);
}

static void test_host_violations(void **state)
{
    (void)state;
    uint8_t garbage[16] = "GET / HTTP/1.1\r\n";
    host_violation(garbage, sizeof(garbage), 4, KF_ERR_SPLIT_APP);
    /* a frame of a type keyfleetd never takes (RESPONSE) */
    uint8_t msg[16];
    ttlv_message(msg, 16, 0);
    struct kf_app_response a = {.id = 1, .status = KF_OK, .msg = msg, .msg_len = 16};
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_response(&a, &out), KF_OK);
    host_violation(out.data, out.len, 4, KF_ERR_SPLIT_APP);
    /* a CLOSED for a connection it never had */
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_closed(&out), KF_OK);
    host_violation(out.data, out.len, 4, KF_ERR_SPLIT_APP);
    /* three slow requests at once where one is allowed */
    struct kf_app_request r = {.msg = msg, .msg_len = 16};
    conn_id_of(0, r.conn);
    msg[8] = 'S';
    kf_buf_fixed(&out, mem, sizeof(mem));
    for (uint32_t i = 0; i < 3; i++) {
        r.id = i;
        assert_int_equal(kf_app_encode_request(&r, &out), KF_OK);
    }
    host_violation(out.data, out.len, 1, KF_ERR_SPLIT_APP);
    /* a frame that starts and stalls */
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_request(&r, &out), KF_OK);
    host_violation(out.data, out.len - 3, 4, KF_ERR_SPLIT_APP);
    /* the worker closes its end between frames: not a violation */
    int sv[2];
    struct host_side hs;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    host_start(&hs, sv[0], 4, 300);
    host_send_settings(&hs, 4);
    close(sv[1]);
    assert_int_equal(host_wait_end(&hs), KF_ERR_IO);
    kf_app_host_stop(hs.h);
}

/* A worker that does not take its answers: after the time-out, a violation. */
static void test_host_write_timeout(void **state)
{
    (void)state;
    int sv[2];
    struct host_side hs;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    host_start(&hs, sv[0], 8, 300);
    host_send_settings(&hs, 8);
    uint8_t msg[16];
    ttlv_message(msg, 16, 0);
    msg[8] = 'B'; /* 1 MiB answers: more than the socket holds */
    struct kf_app_request r = {.msg = msg, .msg_len = 16};
    conn_id_of(0, r.conn);
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    for (uint32_t i = 0; i < 4; i++) {
        r.id = i;
        assert_int_equal(kf_app_encode_request(&r, &out), KF_OK);
    }
    write_slowly(sv[1], out.data, out.len, out.len);
    assert_int_equal(host_wait_end(&hs), KF_ERR_SPLIT_APP);
    kf_app_host_stop(hs.h);
    close(sv[1]);
}

/* A worker names a connection ID that keyfleetd did not get from the handler
 * (forged), or one whose connection is over: refused, with no KMIP call and no
 * principal; the worker's other connections go on. */
static int call_as(struct worker_side *ws, unsigned slot, const uint8_t conn[KF_APP_CONN_ID_LEN],
                   kf_buf *resp)
{
    uint8_t msg[16];
    ttlv_message(msg, 16, 'x');
    msg[8] = 'g';
    return app_client_call(ws->c, slot, conn, msg, sizeof(msg), resp);
}

static void test_forged_conn_id(void **state)
{
    (void)state;
    struct host_side hs;
    struct worker_side ws;
    pair(&hs, &ws, 4);
    kf_buf resp = {0};
    assert_int_equal(kf_buf_alloc(&resp, 64, KF_APP_ANSWER_MAX, KF_BUF_SECRET), KF_OK);
    unsigned s0 = 0;
    assert_int_equal(app_client_slot(ws.c, &s0), KF_OK);
    uint8_t forged[KF_APP_CONN_ID_LEN];
    /* never given out: one bit off a real one, all zero, all ones */
    conn_id_of(s0, forged);
    forged[15] ^= 1;
    assert_int_equal(call_as(&ws, s0, forged, &resp), KF_ERR_SPLIT_APP);
    assert_int_equal(resp.len, 0);
    memset(forged, 0, sizeof(forged));
    assert_int_equal(call_as(&ws, s0, forged, &resp), KF_ERR_SPLIT_APP);
    memset(forged, 0xff, sizeof(forged));
    assert_int_equal(call_as(&ws, s0, forged, &resp), KF_ERR_SPLIT_APP);
    /* a refusal is not a channel violation: the real ID still works */
    assert_int_equal(call(&ws, s0, 'g', 16, &resp), KF_OK);
    assert_int_equal(atomic_load(&hs.ended), 0);
    /* an ID the handler announces right before the worker uses it (nobody has read it yet) */
    uint8_t fresh[KF_APP_CONN_ID_LEN];
    memset(fresh, 0x5a, sizeof(fresh));
    unsigned before = kf_app_peers_count(peers_rx);
    peer_send(fresh, "cert:CN=fresh");
    kf_buf_reset(&resp);
    assert_int_equal(call_as(&ws, s0, fresh, &resp), KF_OK);
    assert_memory_equal(resp.data + 8, "who=cert:CN=fresh;", 18);
    assert_int_equal(kf_app_peers_count(peers_rx), before + 1);
    /* its connection ends (GONE): the ID is refused from then on */
    gone_send(fresh);
    for (int i = 0; i < 200 && kf_app_peers_count(peers_rx) != before; i++)
        usleep(5000);
    assert_int_equal(kf_app_peers_count(peers_rx), before);
    kf_buf_reset(&resp);
    assert_int_equal(call_as(&ws, s0, fresh, &resp), KF_ERR_SPLIT_APP);
    assert_int_equal(atomic_load(&hs.ended), 0);
    app_client_release(ws.c, s0);
    kf_buf_free(&resp);
    kf_app_host_stop(hs.h);
    app_client_stop(ws.c);
}

/* The peers table: the handler's malformed messages end it; what it knew stays. */
static void test_peers_channel(void **state)
{
    (void)state;
    int sv[2];
    kf_app_peers *p;
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    int keep = peers_tx;
    peers_tx = sv[0];
    assert_int_equal(kf_app_peers_start(sv[1], &p), KF_OK);
    uint8_t id[KF_APP_CONN_ID_LEN], other[KF_APP_CONN_ID_LEN];
    struct kf_principal who;
    memset(id, 1, sizeof(id));
    memset(other, 2, sizeof(other));
    peer_send(id, "cert:CN=one");
    peer_send(id, "cert:CN=impostor"); /* the same ID twice: the first stays */
    assert_int_equal(kf_app_peers_lookup(p, id, &who), KF_OK);
    assert_string_equal(who.name, "cert:CN=one");
    assert_int_equal(kf_app_peers_count(p), 1);
    gone_send(other); /* GONE for an unknown ID: nothing happens */
    assert_int_equal(kf_app_peers_lookup(p, other, &who), KF_ERR_SPLIT_APP);
    /* a message of another type (START) ends the channel; later PEERs are not taken */
    uint8_t buf[64];
    kf_buf out;
    kf_buf_fixed(&out, buf, sizeof(buf));
    struct kf_split_end e = {.reason = 0};
    assert_int_equal(kf_split_encode_end(&e, &out), KF_OK);
    assert_int_equal(kf_split_send(peers_tx, &out, NULL, 0), KF_OK);
    peer_send(other, "cert:CN=two");
    assert_int_equal(kf_app_peers_lookup(p, other, &who), KF_ERR_SPLIT_APP);
    assert_int_equal(kf_app_peers_lookup(p, id, &who), KF_OK);
    kf_app_peers_stop(p);
    close(peers_tx);
    peers_tx = keep;
}

/* The worker's side against a keyfleetd that answers what nobody asked. */
/* ---- keyfleetd's side: batches ---------------------------------------------------------- */

/* A batched keyfleetd side and the raw worker end of its channel, past SETTINGS. */
static int batched_pair(struct host_side *hs, unsigned max_inflight)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    host_start_batched(hs, sv[0], max_inflight, 2000);
    hs->worker_fd = sv[1];
    host_send_settings(hs, max_inflight);
    struct kf_app_reader rd; /* nothing but SETTINGS is on the channel yet */
    uint8_t type;
    kf_buf body;
    bool eof;
    assert_int_equal(kf_app_reader_init(&rd, sv[1]), KF_OK);
    assert_int_equal(kf_app_read(&rd, KF_APP_ALLOW(KF_APP_SETTINGS), 3000, &type, &body, &eof),
                     KF_OK);
    kf_app_reader_free(&rd);
    return sv[1];
}

/* Append a REQUEST (id, the connection of slot, op, len bytes) to out. */
static void batch_put_request(kf_buf *out, uint32_t id, const uint8_t conn[KF_APP_CONN_ID_LEN], char op,
                        size_t len)
{
    uint8_t *msg = malloc(len);
    ttlv_message(msg, len, (uint8_t)('a' + id % 26));
    msg[8] = (uint8_t)op;
    struct kf_app_request r = {.id = id, .msg = msg, .msg_len = len};
    memcpy(r.conn, conn, sizeof(r.conn));
    assert_int_equal(kf_app_encode_request(&r, out), KF_OK);
    free(msg);
}

static void batch_put_slot_request(kf_buf *out, uint32_t id, char op, size_t len)
{
    uint8_t conn[KF_APP_CONN_ID_LEN];
    conn_id_of(id & 0xffff, conn); /* keyfleetd knows it as cert:CN=slot<N> */
    batch_put_request(out, id, conn, op, len);
}

struct batch_answer {
    uint32_t id;
    int status;
    size_t len;
    uint8_t first[64]; /* the answer's first bytes */
};

/* n answers off fd within 5 s; *recvs: the recv calls that brought them. */
static void batch_read_answers(int fd, struct batch_answer *ans, size_t n, unsigned *recvs)
{
    size_t cap = 4 * KF_APP_ANSWER_MAX, have = 0, used = 0, got = 0;
    uint8_t *buf = malloc(cap);
    *recvs = 0;
    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 5000), 1);
        ssize_t r = recv(fd, buf + have, cap - have, MSG_DONTWAIT);
        assert_true(r > 0);
        have += (size_t)r;
        (*recvs)++;
        for (;;) {
            uint8_t type;
            uint32_t len;
            if (have - used < KF_APP_FRAME_LEN)
                break;
            assert_int_equal(kf_app_decode_header(buf + used,
                                                  KF_APP_ALLOW(KF_APP_RESPONSE) |
                                                      KF_APP_ALLOW(KF_APP_FAILED),
                                                  &type, &len),
                             KF_OK);
            if (have - used < KF_APP_FRAME_LEN + len)
                break;
            kf_buf body;
            struct kf_app_response a;
            kf_buf_reader(&body, buf + used + KF_APP_FRAME_LEN, len);
            assert_int_equal(kf_app_decode_response(type, &body, &a), KF_OK);
            assert_true(got < n);
            ans[got] = (struct batch_answer){.id = a.id, .status = a.status, .len = a.msg_len};
            if (a.msg_len)
                memcpy(ans[got].first, a.msg, a.msg_len < 64 ? a.msg_len : 64);
            got++;
            used += KF_APP_FRAME_LEN + len;
        }
        if (used == have)
            used = have = 0;
        else if (have > cap / 2) { /* keep the partial frame, at the front */
            memmove(buf, buf + used, have - used);
            have -= used;
            used = 0;
        }
    }
    assert_int_equal(used, have); /* nothing beyond the answers asked for */
    free(buf);
}

/* The answer to request id (batch_put_slot_request with op, len): the principal of its slot, then the
 * request itself. */
static void batch_check_answer(const struct batch_answer *ans, size_t n, uint32_t id, char op, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (ans[i].id != id)
            continue;
        assert_int_equal(ans[i].status, KF_OK);
        char want[64];
        int k = snprintf(want, sizeof(want), "who=cert:CN=slot%u;", id & 0xffff);
        assert_true(ans[i].len >= 8 + (size_t)k + len);
        assert_memory_equal(ans[i].first + 8, want, (size_t)k);
        uint8_t req[9];
        ttlv_message(req, 8, 0); /* the request's TTLV header, then its op */
        req[4] = (uint8_t)((len - 8) >> 24), req[5] = (uint8_t)((len - 8) >> 16);
        req[6] = (uint8_t)((len - 8) >> 8), req[7] = (uint8_t)(len - 8);
        req[8] = (uint8_t)op;
        assert_memory_equal(ans[i].first + 8 + k, req, 9);
        if (8 + (size_t)k + 10 <= 64)
            assert_int_equal(ans[i].first[8 + k + 9], (uint8_t)('a' + id % 26));
        return;
    }
    fail_msg("no answer for request %u", id);
}

static const struct batch_answer *batch_answer_of(const struct batch_answer *ans, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ans[i].id == id)
            return &ans[i];
    fail_msg("no answer for request %u", id);
    return NULL;
}

/* Requests still in flight once the answers are read (they are released right after
 * their write: up to 1 s for that). */
static unsigned batch_inflight_after(struct host_side *hs)
{
    for (int i = 0; i < 200 && kf_app_host_inflight(hs->h) != 0; i++)
        usleep(5000);
    return kf_app_host_inflight(hs->h);
}

static void batched_stop(struct host_side *hs, int wfd)
{
    assert_int_equal(atomic_load(&hs->outside), 0); /* every request inside a batch */
    assert_int_equal(atomic_load(&hs->nested), 0);
    assert_int_equal(atomic_load(&hs->unpaired), 0);
    assert_int_equal(atomic_load(&hs->early), 0);
    kf_app_host_stop(hs->h);
    close(wfd);
}

/* The batches hs counted so far: begun and ended (paired), and the channel still up. */
static void batches_were(struct host_side *hs, unsigned n)
{
    assert_int_equal(atomic_load(&hs->begins), n);
    assert_int_equal(atomic_load(&hs->ends), n);
    assert_int_equal(atomic_load(&hs->ended), 0);
}

/* Requests written back to back in one write are one batch: one batch_begin,
 * each request handled inside it, one batch_end before any answer leaves, and
 * the answers in one write (one recv finds them all), each under its ID. */
static void test_batch_one_write(void **state)
{
    (void)state;
    struct host_side hs;
    int wfd = batched_pair(&hs, 8);
    atomic_store(&hs.check_early, true);
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    for (uint32_t i = 0; i < 8; i++) /* as many as the worker may have out at once */
        batch_put_slot_request(&out, (i + 1) << 16 | i, 'g', 24 + 8 * i);
    write_slowly(wfd, out.data, out.len, out.len);
    struct batch_answer ans[8];
    unsigned recvs;
    batch_read_answers(wfd, ans, 8, &recvs);
    for (uint32_t i = 0; i < 8; i++)
        batch_check_answer(ans, 8, (i + 1) << 16 | i, 'g', 24 + 8 * i);
    assert_int_equal(atomic_load(&hs.begins), 1);
    assert_int_equal(atomic_load(&hs.ends), 1);
    assert_int_equal(atomic_load(&hs.handled), 8);
    assert_int_equal(recvs, 1);
    assert_int_equal(batch_inflight_after(&hs), 0);
    /* again, after a pause: a new batch */
    kf_buf_fixed(&out, mem, sizeof(mem));
    for (uint32_t i = 0; i < 3; i++)
        batch_put_slot_request(&out, (i + 9) << 16 | i, 'g', 32);
    write_slowly(wfd, out.data, out.len, out.len);
    batch_read_answers(wfd, ans, 3, &recvs);
    for (uint32_t i = 0; i < 3; i++)
        batch_check_answer(ans, 3, (i + 9) << 16 | i, 'g', 32);
    batches_were(&hs, 2);
    assert_int_equal(recvs, 1);
    batched_stop(&hs, wfd);
}

/* A request that is not batchable ends the batch it is read into: the ones
 * after it are another batch (another thread), every one answered. */
static void test_batch_ends_at_a_write(void **state)
{
    (void)state;
    struct host_side hs;
    int wfd = batched_pair(&hs, 8);
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    static const char ops[] = "ggWgg";
    for (uint32_t i = 0; i < 5; i++)
        batch_put_slot_request(&out, (i + 1) << 16 | i, ops[i], 40);
    write_slowly(wfd, out.data, out.len, out.len);
    struct batch_answer ans[5];
    unsigned recvs;
    batch_read_answers(wfd, ans, 5, &recvs);
    for (uint32_t i = 0; i < 5; i++)
        batch_check_answer(ans, 5, (i + 1) << 16 | i, ops[i], 40);
    assert_int_equal(atomic_load(&hs.handled), 5);
    batches_were(&hs, 2); /* g g W | g g */
    /* a 'W' first: a batch of its own */
    kf_buf_fixed(&out, mem, sizeof(mem));
    batch_put_slot_request(&out, 6u << 16 | 0, 'W', 40);
    batch_put_slot_request(&out, 6u << 16 | 1, 'g', 40);
    write_slowly(wfd, out.data, out.len, out.len);
    batch_read_answers(wfd, ans, 2, &recvs);
    batch_check_answer(ans, 2, 6u << 16 | 0, 'W', 40);
    batch_check_answer(ans, 2, 6u << 16 | 1, 'g', 40);
    batches_were(&hs, 4);
    batched_stop(&hs, wfd);
}

/* batch_end fails: every answer of that batch is FAILED with its code (none
 * leaves as a response); the next batch is answered as usual. */
static void test_batch_end_fails(void **state)
{
    (void)state;
    struct host_side hs;
    int wfd = batched_pair(&hs, 8);
    atomic_store(&hs.check_early, true);
    atomic_store(&hs.end_rc, KF_ERR_AUDIT_WRITE);
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    for (uint32_t i = 0; i < 5; i++)
        batch_put_slot_request(&out, 0x10000 | i, 'g', 40);
    write_slowly(wfd, out.data, out.len, out.len);
    struct batch_answer ans[5];
    unsigned recvs;
    batch_read_answers(wfd, ans, 5, &recvs);
    for (uint32_t i = 0; i < 5; i++) {
        const struct batch_answer *a = batch_answer_of(ans, 5, 0x10000 | i);
        assert_int_equal(a->status, KF_ERR_AUDIT_WRITE);
        assert_int_equal(a->len, 0);
    }
    assert_int_equal(atomic_load(&hs.handled), 5); /* handled, then held back */
    assert_int_equal(atomic_load(&hs.ends), 1);
    assert_int_equal(batch_inflight_after(&hs), 0);
    /* not a violation: the next batch works */
    atomic_store(&hs.end_rc, KF_OK);
    kf_buf_fixed(&out, mem, sizeof(mem));
    for (uint32_t i = 0; i < 5; i++)
        batch_put_slot_request(&out, 0x20000 | i, 'g', 40);
    write_slowly(wfd, out.data, out.len, out.len);
    batch_read_answers(wfd, ans, 5, &recvs);
    for (uint32_t i = 0; i < 5; i++)
        batch_check_answer(ans, 5, 0x20000 | i, 'g', 40);
    batches_were(&hs, 2);
    batched_stop(&hs, wfd);
}

/* An unknown connection ID in the middle of a batch: that request alone is
 * refused (no KMS call); a FAILED of the stand-in KMS stays that request's. */
static void test_batch_unknown_conn(void **state)
{
    (void)state;
    struct host_side hs;
    int wfd = batched_pair(&hs, 8);
    atomic_store(&hs.check_early, true);
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    uint8_t forged[KF_APP_CONN_ID_LEN];
    conn_id_of(2, forged);
    forged[9] ^= 0x40;
    batch_put_slot_request(&out, 0x10000, 'g', 48);
    batch_put_slot_request(&out, 0x10001, 'g', 48);
    batch_put_request(&out, 0x10002, forged, 'g', 48);
    batch_put_slot_request(&out, 0x10003, 'F', 48);
    batch_put_slot_request(&out, 0x10004, 'g', 48);
    write_slowly(wfd, out.data, out.len, out.len);
    struct batch_answer ans[5];
    unsigned recvs;
    batch_read_answers(wfd, ans, 5, &recvs);
    batch_check_answer(ans, 5, 0x10000, 'g', 48);
    batch_check_answer(ans, 5, 0x10001, 'g', 48);
    assert_int_equal(batch_answer_of(ans, 5, 0x10002)->status, KF_ERR_SPLIT_APP);
    assert_int_equal(batch_answer_of(ans, 5, 0x10003)->status, KF_ERR_PERM);
    batch_check_answer(ans, 5, 0x10004, 'g', 48);
    assert_int_equal(atomic_load(&hs.handled), 4); /* not the forged one */
    batches_were(&hs, 1);
    assert_int_equal(recvs, 1);
    batched_stop(&hs, wfd);
}

/* More requests in one write than the worker may have out: a violation, and
 * none of them reaches the KMS. */
static void test_batch_over_inflight(void **state)
{
    (void)state;
    struct host_side hs;
    int wfd = batched_pair(&hs, 4);
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    for (uint32_t i = 0; i < 5; i++)
        batch_put_slot_request(&out, 0x10000 | i, 'g', 16);
    write_slowly(wfd, out.data, out.len, out.len);
    assert_int_equal(host_wait_end(&hs), KF_ERR_SPLIT_APP);
    assert_int_equal(atomic_load(&hs.handled), 0);
    assert_int_equal(atomic_load(&hs.begins), 0);
    assert_int_equal(batch_inflight_after(&hs), 0);
    batched_stop(&hs, wfd);
}

/* CLOSED frames between the requests of a batch are counted as they come; one
 * too many, even inside a batch, is a violation. */
static void test_batch_closed_mixed(void **state)
{
    (void)state;
    struct host_side hs;
    int wfd = batched_pair(&hs, 8);
    atomic_store(&hs.conns, 2);
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    batch_put_slot_request(&out, 0x10000, 'g', 24);
    assert_int_equal(kf_app_encode_closed(&out), KF_OK);
    batch_put_slot_request(&out, 0x10001, 'g', 24);
    assert_int_equal(kf_app_encode_closed(&out), KF_OK);
    batch_put_slot_request(&out, 0x10002, 'g', 24);
    write_slowly(wfd, out.data, out.len, out.len);
    struct batch_answer ans[3];
    unsigned recvs;
    batch_read_answers(wfd, ans, 3, &recvs);
    for (uint32_t i = 0; i < 3; i++)
        batch_check_answer(ans, 3, 0x10000 | i, 'g', 24);
    assert_int_equal(atomic_load(&hs.closed), 2);
    assert_int_equal(atomic_load(&hs.begins), 1);
    assert_int_equal(atomic_load(&hs.ended), 0);
    /* a third CLOSED: the worker had only two connections */
    kf_buf_fixed(&out, mem, sizeof(mem));
    batch_put_slot_request(&out, 0x20000, 'g', 24);
    assert_int_equal(kf_app_encode_closed(&out), KF_OK);
    batch_put_slot_request(&out, 0x20001, 'g', 24);
    write_slowly(wfd, out.data, out.len, out.len);
    assert_int_equal(host_wait_end(&hs), KF_ERR_SPLIT_APP);
    assert_int_equal(atomic_load(&hs.closed), 3);
    assert_int_equal(atomic_load(&hs.handled), 3); /* nothing of the violating batch */
    batched_stop(&hs, wfd);
}

/* The limits of a batch: KF_APP_BATCH_MAX requests; KF_APP_BATCH_BYTES of
 * them; answers beyond KF_APP_BATCH_ANSWER_BYTES end the batch early (its
 * end, then its answers) and the rest is a batch of its own. */
static void test_batch_limits(void **state)
{
    (void)state;
    struct host_side hs;
    int wfd = batched_pair(&hs, 64);
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    enum { N = KF_APP_BATCH_MAX + 8 };
    for (uint32_t i = 0; i < N; i++)
        batch_put_slot_request(&out, 0x10000 | i, 'g', 16);
    write_slowly(wfd, out.data, out.len, out.len);
    struct batch_answer *ans = calloc(N, sizeof(*ans));
    unsigned recvs;
    batch_read_answers(wfd, ans, N, &recvs);
    for (uint32_t i = 0; i < N; i++)
        batch_check_answer(ans, N, 0x10000 | i, 'g', 16);
    for (int i = 0; i < 200 && atomic_load(&hs.ends) < 2; i++)
        usleep(5000);
    batches_were(&hs, 2); /* 32, then 8 */
    /* 1 MiB answers between small ones: the batch ends after the first big one */
    atomic_store(&hs.begins, 0);
    atomic_store(&hs.ends, 0);
    kf_buf_fixed(&out, mem, sizeof(mem));
    const char ops[] = "ggBgBg";
    for (uint32_t i = 0; i < 6; i++)
        batch_put_slot_request(&out, 0x20000 | i, ops[i], 32);
    write_slowly(wfd, out.data, out.len, out.len);
    batch_read_answers(wfd, ans, 6, &recvs);
    for (uint32_t i = 0; i < 6; i++) {
        if (ops[i] == 'g')
            batch_check_answer(ans, 6, 0x20000 | i, 'g', 32);
        else
            assert_int_equal(batch_answer_of(ans, 6, 0x20000 | i)->len, KF_TLS_MESSAGE_MAX);
    }
    for (int i = 0; i < 200 && atomic_load(&hs.ends) < 3; i++)
        usleep(5000);
    batches_were(&hs, 3); /* ggB, gB, g */
    /* large requests: no further frame once a batch holds KF_APP_BATCH_BYTES */
    atomic_store(&hs.begins, 0);
    atomic_store(&hs.ends, 0);
    size_t big = KF_APP_BATCH_BYTES / 2 + 8;
    kf_buf_fixed(&out, mem, sizeof(mem));
    for (uint32_t i = 0; i < 3; i++)
        batch_put_slot_request(&out, 0x30000 | i, 'g', big);
    struct writer w = {.fd = wfd, .p = out.data, .n = out.len, .step = out.len};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_thread, &w), 0);
    batch_read_answers(wfd, ans, 3, &recvs);
    pthread_join(t, NULL);
    for (uint32_t i = 0; i < 3; i++)
        batch_check_answer(ans, 3, 0x30000 | i, 'g', big);
    for (int i = 0; i < 200 && atomic_load(&hs.ends) < 2; i++)
        usleep(5000);
    assert_true(atomic_load(&hs.begins) >= 2);
    assert_int_equal(atomic_load(&hs.ends), atomic_load(&hs.begins));
    assert_int_equal(atomic_load(&hs.ended), 0);
    free(ans);
    batched_stop(&hs, wfd);
}

/* ---- a KMIP worker process behind a session handler ------------------------------------- */

struct fixture {
    char dir[64], certs[128];
    struct kf_tls_dev_files dev;
    kf_tlssplit_handler *h;
};

static unsigned sandbox_flags(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return 0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return 0;
#endif
#endif
    return getenv("KF_TEST_SANDBOX_FLAGS") ? (unsigned)atoi(getenv("KF_TEST_SANDBOX_FLAGS")) : 0;
}

static long status_field(int pid, const char *name)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    long v = -1;
    while (fgets(line, sizeof(line), fp))
        if (strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ':')
            v = strtol(line + strlen(name) + 1, NULL, 10);
    fclose(fp);
    return v;
}

static gnutls_session_t client_connect(struct fixture *f, kf_tlssplit_worker *w,
                                       gnutls_certificate_credentials_t *cred, int *fd)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(kf_tlssplit_worker_dispatch(w, sv[0], "test"), KF_OK);
    *fd = sv[1];
    gnutls_session_t s;
    assert_int_equal(gnutls_certificate_allocate_credentials(cred), 0);
    assert_true(gnutls_certificate_set_x509_trust_file(*cred, f->dev.ca_cert,
                                                       GNUTLS_X509_FMT_PEM) > 0);
    assert_int_equal(gnutls_certificate_set_x509_key_file(*cred, f->dev.admin_cert,
                                                          f->dev.admin_key, GNUTLS_X509_FMT_PEM),
                     0);
    assert_int_equal(gnutls_init(&s, GNUTLS_CLIENT), 0);
    assert_int_equal(gnutls_set_default_priority(s), 0);
    assert_int_equal(gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, *cred), 0);
    gnutls_session_set_verify_cert(s, "localhost", 0);
    gnutls_transport_set_int(s, *fd);
    gnutls_handshake_set_timeout(s, 5000);
    int rc;
    do
        rc = gnutls_handshake(s);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    assert_int_equal(rc, 0);
    struct timeval tv = {.tv_sec = 10}; /* a missing answer fails the test instead of hanging it */
    assert_int_equal(setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    return s;
}

/* Read one TTLV answer (its length from its header). */
static ssize_t kmip_answer(gnutls_session_t s, uint8_t *ans, size_t cap)
{
    /* GnuTLS says AGAIN after a post-handshake message too; the socket's
     * 10 s receive time-out says it as well, and then the answer is missing */
    time_t give_up = time(NULL) + 10;
    size_t got = 0, total = 8;
    while (got < total) {
        ssize_t r;
        do
            r = gnutls_record_recv(s, ans + got, (total > cap ? cap : total) - got);
        while (r == GNUTLS_E_INTERRUPTED || (r == GNUTLS_E_AGAIN && time(NULL) < give_up));
        if (r <= 0)
            return -1;
        got += (size_t)r;
        if (got >= 8)
            total = 8 + ((size_t)ans[4] << 24 | (size_t)ans[5] << 16 | (size_t)ans[6] << 8 | ans[7]);
        if (total > cap)
            return -1;
    }
    return (ssize_t)got;
}

/* Send one TTLV request, read one TTLV answer. */
static ssize_t kmip_exchange(gnutls_session_t s, const uint8_t *req, size_t len, uint8_t *ans,
                             size_t cap)
{
    if (gnutls_record_send(s, req, len) != (ssize_t)len)
        return -1;
    return kmip_answer(s, ans, cap);
}

/* The answer fake_kms gives the admin certificate's connections for req. */
static void check_answer(const uint8_t *ans, ssize_t n, const uint8_t *req, size_t len)
{
    const char *want = "who=cert:CN=admin,O=keyfleet dev;";
    assert_true(n > 8 && (size_t)n >= 8 + strlen(want) + len);
    assert_memory_equal(ans + 8, want, strlen(want));
    assert_memory_equal(ans + 8 + strlen(want), req, len);
}

/* A forked CONN_IDS handler, its peers table as the host side's, a forked KMIP
 * worker process and keyfleetd's side (fake_kms) with settings set. */
struct worker_fixture {
    struct fixture f;
    kf_app_peers *peers;
    kf_tlssplit_worker *w;
    struct host_side hs;
    int app_fd; /* keyfleetd's end of the application channel (the host side's) */
};

static void worker_up(struct worker_fixture *x, const struct kf_app_settings *set)
{
    memset(x, 0, sizeof(*x));
    struct fixture *f = &x->f;
    snprintf(f->dir, sizeof(f->dir), "/tmp/kf-test-tlsapp.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->certs, sizeof(f->certs), "%s/certs", f->dir);
    assert_int_equal(kf_tls_dev_certs(f->certs, &f->dev), KF_OK);
    struct kf_tlssplit_handler_config hc = {.ca_file = f->dev.ca_cert,
                                            .cert_file = f->dev.server_cert,
                                            .key_file = f->dev.server_key,
                                            .identities_file = f->dev.identities,
                                            .conn_ids = true};
    assert_int_equal(kf_tlssplit_handler_start(&hc, &f->h), KF_OK);
    assert_int_equal(kf_app_peers_start(kf_tlssplit_handler_take_peers(f->h), &x->peers), KF_OK);
    assert_int_equal(kf_tlssplit_handler_take_peers(f->h), -1); /* handed over once */
    host_peers = x->peers;
    struct kf_app_worker_spawn sp = {.broker = kf_tlssplit_handler_broker(f->h)};
    assert_int_equal(kf_tlssplit_kmip_worker_start(&sp, &x->w, &x->app_fd), KF_OK);
    host_start(&x->hs, x->app_fd, set->max_connections, 3000);
    assert_int_equal(kf_app_host_settings(x->hs.h, set), KF_OK);
}

static void worker_down(struct worker_fixture *x)
{
    kf_app_host_stop(x->hs.h);
    kf_tlssplit_worker_stop(x->w);
    kf_tlssplit_handler_stop(x->f.h);
    kf_app_peers_stop(x->peers);
    host_peers = peers_rx;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", x->f.dir);
    assert_int_equal(system(cmd), 0);
}

static struct kf_app_settings worker_settings(uint32_t conns, uint32_t idle_ms)
{
    return (struct kf_app_settings){.max_connections = conns, .handshake_ms = 3000,
                                    .idle_ms = idle_ms, .message_ms = 3000,
                                    .log_level = KF_LOG_WARN,
                                    .sandbox_flags = (uint8_t)sandbox_flags()};
}

static void test_kmip_worker_process(void **state)
{
    (void)state;
    struct worker_fixture x;
    struct kf_app_settings set = worker_settings(4, 10000);
    worker_up(&x, &set);
    struct fixture *fp = &x.f;
    kf_app_peers *peers = x.peers;
    kf_tlssplit_worker *w = x.w;
    struct host_side *hsp = &x.hs;
    atomic_store(&hsp->conns, 2);

    gnutls_certificate_credentials_t cred1, cred2;
    int fd1, fd2;
    gnutls_session_t s1 = client_connect(fp, w, &cred1, &fd1);
    gnutls_session_t s2 = client_connect(fp, w, &cred2, &fd2);
    /* one ID per connection (the client may finish its handshake before the handler has sent it) */
    for (int i = 0; i < 300 && kf_app_peers_count(peers) != 2; i++)
        usleep(10000);
    assert_int_equal(kf_app_peers_count(peers), 2);
    uint8_t req[64], ans[1024];
    ttlv_message(req, 64, 'q');
    req[8] = 'g';
    for (int i = 0; i < 10; i++) {
        ssize_t n = kmip_exchange(i % 2 ? s1 : s2, req, sizeof(req), ans, sizeof(ans));
        /* the identity map's verdict on the admin certificate came along */
        check_answer(ans, n, req, sizeof(req));
    }
    /* a request keyfleetd fails ends that connection only */
    req[8] = 'F';
    assert_true(kmip_exchange(s1, req, sizeof(req), ans, sizeof(ans)) < 0);
    req[8] = 'g';
    assert_true(kmip_exchange(s2, req, sizeof(req), ans, sizeof(ans)) > 8);
    for (int i = 0; i < 300 && atomic_load(&hsp->closed) < 1; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&hsp->closed), 1); /* the worker said so */
    /* and the handler: s1's ID is forgotten */
    for (int i = 0; i < 300 && kf_app_peers_count(peers) != 1; i++)
        usleep(10000);
    assert_int_equal(kf_app_peers_count(peers), 1);
    int pid = kf_tlssplit_worker_pid(w);
    assert_int_equal(status_field(pid, "Seccomp"), sandbox_flags() ? 0 : 2);
    assert_int_equal(status_field(pid, "NoNewPrivs"), 1);
    if (geteuid() == 0) {
        assert_int_equal(status_field(pid, "Uid"), 65534);
        char path[64];
        struct stat sb;
        snprintf(path, sizeof(path), "/proc/%d/mem", pid);
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_uid, 0); /* not dumpable */
    }
    /* the worker dies: its connection ends, keyfleetd's side hears of it (not a violation) */
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_true(kmip_exchange(s2, req, sizeof(req), ans, sizeof(ans)) < 0);
    assert_int_equal(host_wait_end(hsp), KF_ERR_IO);
    gnutls_deinit(s1);
    gnutls_deinit(s2);
    gnutls_certificate_free_credentials(cred1);
    gnutls_certificate_free_credentials(cred2);
    close(fd1);
    close(fd2);
    worker_down(&x);
}

/* ---- the worker process's event loop (loop.c) ------------------------------------------ */

struct loop_client {
    struct worker_fixture *x;
    unsigned seed, rounds;
    int failures;
};

static void *loop_client_thread(void *arg)
{
    struct loop_client *lc = arg;
    gnutls_certificate_credentials_t cred;
    int fd;
    gnutls_session_t s = client_connect(&lc->x->f, lc->x->w, &cred, &fd);
    uint8_t req[256], ans[1024];
    for (unsigned i = 0; i < lc->rounds; i++) {
        ttlv_message(req, 8 * (1 + (lc->seed + i) % 32), (uint8_t)(lc->seed * 31 + i));
        size_t len = 8 * (1 + (lc->seed + i) % 32);
        req[8] = 'g';
        ssize_t n = kmip_exchange(s, req, len, ans, sizeof(ans));
        const char *want = "who=cert:CN=admin,O=keyfleet dev;";
        if (n < (ssize_t)(8 + strlen(want) + len) || memcmp(ans + 8 + strlen(want), req, len) != 0)
            lc->failures++;
    }
    gnutls_bye(s, GNUTLS_SHUT_WR);
    gnutls_deinit(s);
    gnutls_certificate_free_credentials(cred);
    close(fd);
    return NULL;
}

/*
 * Everything that makes the loop hand a connection to its own thread and take
 * it back, each followed by more requests on the same connection: requests
 * pipelined in one record; a request cut by KeyUpdates (the handler's: the
 * server's keys change as asked); an answer the peer does not read at once
 * (the thread finishes writing it, byte-exact); a request over 1 MiB (that
 * connection ends, the other goes on); connections at once from many threads;
 * an idle connection ended by the loop's time-out; an answer keyfleetd was
 * not asked for ends the worker process.
 */
static void test_kmip_worker_loop(void **state)
{
    (void)state;
    struct worker_fixture x;
    struct kf_app_settings set = worker_settings(16, 10000);
    worker_up(&x, &set);
    atomic_store(&x.hs.conns, 100);
    gnutls_certificate_credentials_t cred1, cred2;
    int fd1, fd2;
    gnutls_session_t s1 = client_connect(&x.f, x.w, &cred1, &fd1);
    gnutls_session_t s2 = client_connect(&x.f, x.w, &cred2, &fd2);
    static uint8_t req[3 * 64], ans[1u << 21];
    /* three requests in one record: three answers, in order */
    for (int i = 0; i < 3; i++) {
        ttlv_message(req + 64 * i, 64, (uint8_t)('a' + i));
        req[64 * i + 8] = 'g';
    }
    assert_int_equal(gnutls_record_send(s1, req, sizeof(req)), (ssize_t)sizeof(req));
    for (int i = 0; i < 3; i++)
        check_answer(ans, kmip_answer(s1, ans, sizeof(ans)), req + 64 * i, 64);
    /* a request cut by two KeyUpdates, the first asking for the server's */
    unsigned char seq[8];
    gnutls_datum_t k;
    uint8_t rk[32];
    assert_int_equal(gnutls_record_get_state(s1, 1, NULL, NULL, &k, seq), 0);
    memcpy(rk, k.data, k.size);
    assert_int_equal(gnutls_record_send(s1, req, 20), 20);
    assert_int_equal(gnutls_session_key_update(s1, GNUTLS_KU_PEER), 0);
    assert_int_equal(gnutls_record_send(s1, req + 20, 30), 30);
    assert_int_equal(gnutls_session_key_update(s1, 0), 0);
    assert_int_equal(gnutls_record_send(s1, req + 50, 14), 14);
    check_answer(ans, kmip_answer(s1, ans, sizeof(ans)), req, 64);
    assert_int_equal(gnutls_record_get_state(s1, 1, NULL, NULL, &k, seq), 0);
    assert_memory_not_equal(rk, k.data, k.size); /* the server's write key changed */
    check_answer(ans, kmip_exchange(s1, req + 64, 64, ans, sizeof(ans)), req + 64, 64);
    /* an answer of 900 kB the peer does not read for a while */
    size_t big = 900 * 1024;
    uint8_t *breq = malloc(big);
    assert_non_null(breq);
    ttlv_message(breq, big, 'z');
    breq[8] = 'g';
    for (size_t i = 9; i < big; i++)
        breq[i] = (uint8_t)(i * 7 + (i >> 11));
    ssize_t sent = 0;
    while (sent < (ssize_t)big) {
        ssize_t w = gnutls_record_send(s1, breq + sent, big - (size_t)sent);
        assert_true(w > 0);
        sent += w;
    }
    usleep(300000);
    check_answer(ans, kmip_answer(s1, ans, sizeof(ans)), breq, big);
    free(breq);
    check_answer(ans, kmip_exchange(s1, req, 64, ans, sizeof(ans)), req, 64);
    /* a request announcing more than 1 MiB ends its connection, and only that */
    uint8_t huge[8] = {0x42, 0x00, 0x78, 0x08, 0x00, 0x20, 0x00, 0x00};
    assert_int_equal(gnutls_record_send(s2, huge, sizeof(huge)), (ssize_t)sizeof(huge));
    assert_true(kmip_answer(s2, ans, sizeof(ans)) < 0);
    check_answer(ans, kmip_exchange(s1, req, 64, ans, sizeof(ans)), req, 64);
    /* many connections at once */
    struct loop_client lc[6];
    pthread_t t[6];
    for (unsigned i = 0; i < 6; i++) {
        lc[i] = (struct loop_client){.x = &x, .seed = i, .rounds = 200};
        assert_int_equal(pthread_create(&t[i], NULL, loop_client_thread, &lc[i]), 0);
    }
    for (unsigned i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(lc[i].failures, 0);
    }
    check_answer(ans, kmip_exchange(s1, req, 64, ans, sizeof(ans)), req, 64);
    gnutls_deinit(s1);
    gnutls_deinit(s2);
    gnutls_certificate_free_credentials(cred1);
    gnutls_certificate_free_credentials(cred2);
    close(fd1);
    close(fd2);
    worker_down(&x);

    /* idle for longer than the settings allow: the loop ends the connection */
    set = worker_settings(4, 300);
    worker_up(&x, &set);
    atomic_store(&x.hs.conns, 100);
    s1 = client_connect(&x.f, x.w, &cred1, &fd1);
    check_answer(ans, kmip_exchange(s1, req, 64, ans, sizeof(ans)), req, 64);
    usleep(900000);
    assert_true(kmip_exchange(s1, req, 64, ans, sizeof(ans)) < 0);
    for (int i = 0; i < 300 && atomic_load(&x.hs.closed) < 1; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&x.hs.closed), 1);
    gnutls_deinit(s1);
    gnutls_certificate_free_credentials(cred1);
    close(fd1);

    /* keyfleetd answers what was not asked (slot 0's first request once more,
     * long answered): the worker process trusts nothing more from
     * it and exits (status 3), its connections with it. (Same worker: each
     * fork of this threaded test process is a chance for a sanitizer runtime
     * to deadlock in the child.) */
    s1 = client_connect(&x.f, x.w, &cred1, &fd1);
    check_answer(ans, kmip_exchange(s1, req, 64, ans, sizeof(ans)), req, 64);
    uint8_t msg[16];
    ttlv_message(msg, 16, 0);
    struct kf_app_response a = {.id = (1u << 16) | 0, .status = KF_OK, .msg = msg, .msg_len = 16};
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_app_encode_response(&a, &out), KF_OK);
    assert_int_equal(write(x.app_fd, out.data, out.len), (ssize_t)out.len);
    int status, pid = kf_tlssplit_worker_pid(x.w);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 3);
    assert_true(kmip_exchange(s1, req, 64, ans, sizeof(ans)) < 0);
    assert_int_equal(host_wait_end(&x.hs), KF_ERR_IO);
    gnutls_deinit(s1);
    gnutls_certificate_free_credentials(cred1);
    close(fd1);
    worker_down(&x);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    kf_log_open(NULL, KF_LOG_ERROR);
    peers_setup();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_frame_refusals),
        cmocka_unit_test(test_settings_refusals),
        cmocka_unit_test(test_request_refusals),
        cmocka_unit_test(test_response_refusals),
        cmocka_unit_test(test_reader),
        cmocka_unit_test(test_calls),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_stop_answers_inflight),
        cmocka_unit_test(test_host_violations),
        cmocka_unit_test(test_host_write_timeout),
        cmocka_unit_test(test_forged_conn_id),
        cmocka_unit_test(test_peers_channel),
        cmocka_unit_test(test_batch_one_write),
        cmocka_unit_test(test_batch_ends_at_a_write),
        cmocka_unit_test(test_batch_end_fails),
        cmocka_unit_test(test_batch_unknown_conn),
        cmocka_unit_test(test_batch_over_inflight),
        cmocka_unit_test(test_batch_closed_mixed),
        cmocka_unit_test(test_batch_limits),
        cmocka_unit_test(test_kmip_worker_process),
        cmocka_unit_test(test_kmip_worker_loop),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    kf_app_peers_stop(peers_rx);
    close(peers_tx);
    return rc;
}
