/*
 * The worker's side of one split TLS connection. The worker owns the TCP
 * socket and, between a GIVE and its next TAKE, is the active endpoint: it
 * reads records, opens application_data itself and seals what it sends.
 * Any other record -- in TLS 1.3 known only after decryption, in TLS 1.2
 * by its outer type -- goes back to the handler as received (ciphertext),
 * with the sequence number it was opened at, and the worker waits for the
 * handler's GIVE (new state) or END. Bytes that followed that record stay
 * here and are read with the state the handler gives back.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "tlssplit_internal.h"

#define IN_CAP (2 * KF_TLSREC_MAX)
#define OUT_RECORDS 4 /* sealed records gathered into one write */
#define OUT_CAP (OUT_RECORDS * KF_TLSREC_MAX)
#define HANDLER_TIMEOUT_MS 30000
/* TLS 1.3 AES-GCM may protect 2^24.5 records per key (RFC 8446 §5.5);
 * ask for fresh keys well before. */
#define REKEY_AFTER_RECORDS (1ull << 23)

/* TLS alert descriptions the worker sends (via the handler) on refusals. */
enum { ALERT_UNEXPECTED_MESSAGE = 10, ALERT_BAD_RECORD_MAC = 20, ALERT_RECORD_OVERFLOW = 22,
       ALERT_DECODE_ERROR = 50, ALERT_INTERNAL_ERROR = 80 };

struct kf_tlssplit_conn {
    int fd, ctl, ses;
    int stop_fd; /* readable: the server is stopping (-1: none) */
    kf_tlsrec *rd, *wr;
    uint16_t version;
    bool resumed;
    bool over; /* END received, handler gone, or fatal error: no more records */
    int end_reason;
    struct kf_principal who; /* the first GIVE's, unless has_id */
    bool has_id;             /* CONN_IDS handler: only the connection ID, no principal */
    uint8_t conn_id[KF_SPLIT_CONN_ID_LEN];
    uint64_t handovers;
    uint8_t *in; /* received bytes, not yet a complete record or not yet used */
    size_t in_len;
    uint8_t *pt; /* plaintext of the last record (secure memory: may be key material) */
    size_t pt_off, pt_len;
    uint8_t *out;
    size_t out_off, out_len; /* sealed bytes a non-blocking send left unwritten */
    /* A non-blocking receive met a record the handler must see, or a refusal
     * (which the handler turns into an alert): the next blocking receive does
     * it. In TLS 1.3 the record was already opened: its sequence number and
     * whether it was a close_notify are kept here. */
    bool deferred;
    bool def_close_notify;
    int def_err; /* < 0: a refusal, not a record */
    uint64_t def_seq;
    size_t def_len;
};

/* ---- state from the handler --------------------------------------------------- */

static int install(kf_tlssplit_conn *c, const struct kf_split_give *g)
{
    kf_tlsrec *rd, *wr;
    KF_GUARD(kf_tlsrec_new(&g->rd, &rd));
    int rc = kf_tlsrec_new(&g->wr, &wr);
    if (rc < 0) {
        kf_tlsrec_free(rd);
        return rc;
    }
    kf_tlsrec_free(c->rd);
    kf_tlsrec_free(c->wr);
    c->rd = rd;
    c->wr = wr;
    c->version = g->rd.version;
    return KF_OK;
}

/* Wait for the handler's answer to a START or TAKE: GIVE (we are active
 * again) or END (the connection is over). */
static int await_handler(kf_tlssplit_conn *c, bool first, int timeout_ms)
{
    uint8_t buf[KF_SPLIT_CONTROL_MAX], type;
    kf_buf body;
    bool eof;
    struct kf_split_give g;
    int rc = kf_split_recv(c->ctl, buf, sizeof(buf),
                           KF_SPLIT_ALLOW(KF_SPLIT_GIVE) | KF_SPLIT_ALLOW(KF_SPLIT_END), timeout_ms,
                           &type, &body, NULL, &eof);
    if (rc == KF_OK && type == KF_SPLIT_END) {
        struct kf_split_end e;
        rc = kf_split_decode_end(&body, &e);
        c->over = true;
        c->end_reason = rc == KF_OK ? e.reason : rc;
        return c->end_reason == KF_OK ? KF_ERR_IO : c->end_reason;
    }
    if (rc == KF_OK)
        rc = kf_split_decode_give(&body, &g);
    if (rc == KF_OK && g.first != first)
        rc = KF_ERR_SPLIT_CHANNEL;
    if (rc == KF_OK)
        rc = install(c, &g);
    if (rc == KF_OK && first) {
        c->who = g.who;
        c->has_id = g.has_id;
        memcpy(c->conn_id, g.conn_id, sizeof(c->conn_id));
        c->resumed = g.resumed;
    }
    kf_wipe(&g, sizeof(g));
    kf_wipe(buf, sizeof(buf));
    if (rc < 0) {
        /* A handler that is gone or speaks nonsense ends the connection. */
        c->over = true;
        c->end_reason = (rc == KF_ERR_IO || rc == KF_ERR_TIMEOUT) ? KF_ERR_SPLIT_HANDLER : rc;
        return c->end_reason;
    }
    return KF_OK;
}

/* Make the handler the active endpoint; it answers with GIVE or END. */
static int handover_ex(kf_tlssplit_conn *c, uint8_t reason, uint8_t arg, const uint8_t *rec,
                       size_t rec_len, uint64_t read_seq, bool wait)
{
    uint8_t mem[64];
    kf_buf msg;
    KF_ENSURE(!c->over, c->end_reason ? c->end_reason : KF_ERR_IO);
    if (rec) {
        kf_buf recmsg;
        KF_GUARD(kf_buf_alloc(&recmsg, rec_len + KF_SPLIT_FRAME_LEN, KF_SPLIT_SESSION_MAX, 0));
        int rc = kf_split_encode_record(rec, rec_len, &recmsg);
        if (rc == KF_OK)
            rc = kf_split_send(c->ses, &recmsg, NULL, 0);
        kf_buf_free(&recmsg);
        if (rc < 0) {
            c->over = true;
            c->end_reason = KF_ERR_SPLIT_HANDLER;
            return c->end_reason;
        }
    }
    struct kf_split_take t = {
        .reason = reason, .arg = arg, .read_seq = read_seq, .write_seq = kf_tlsrec_seq(c->wr)};
    kf_buf_fixed(&msg, mem, sizeof(mem));
    KF_GUARD(kf_split_encode_take(&t, &msg));
    if (kf_split_send(c->ctl, &msg, NULL, 0) < 0) {
        c->over = true;
        c->end_reason = KF_ERR_SPLIT_HANDLER;
        return c->end_reason;
    }
    c->handovers++;
    if (!wait) {
        /* The peer's close_notify: the handler answers it on its own copy of
         * the socket and ends; this side is done and need not hear so. */
        c->over = true;
        c->end_reason = KF_OK;
        return KF_ERR_IO;
    }
    return await_handler(c, false, HANDLER_TIMEOUT_MS);
}

static int handover(kf_tlssplit_conn *c, uint8_t reason, uint8_t arg, const uint8_t *rec,
                    size_t rec_len, uint64_t read_seq)
{
    return handover_ex(c, reason, arg, rec, rec_len, read_seq, true);
}

/* A refusal of the peer's bytes: the handler sends the fatal alert and ends. */
static int abort_with(kf_tlssplit_conn *c, int err)
{
    uint8_t alert = err == KF_ERR_AUTH                  ? ALERT_BAD_RECORD_MAC
                    : err == KF_ERR_TLS_RECORD_OVERFLOW ? ALERT_RECORD_OVERFLOW
                    : err == KF_ERR_TLS_RECORD          ? ALERT_DECODE_ERROR
                                                        : ALERT_INTERNAL_ERROR;
    if (!c->over)
        (void)handover(c, KF_SPLIT_TAKE_ABORT, alert, NULL, 0, kf_tlsrec_seq(c->rd));
    c->over = true;
    c->end_reason = err;
    return err;
}

/* ---- socket I/O ------------------------------------------------------------- */

static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int r;
    do
        r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    return r > 0 ? KF_OK : r == 0 ? KF_ERR_TIMEOUT : KF_ERR_IO;
}

static int write_all(int fd, const uint8_t *p, size_t n, int timeout_ms)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            KF_GUARD(wait_fd(fd, POLLOUT, timeout_ms));
            continue;
        }
        return KF_ERR_IO;
    }
    return KF_OK;
}

/* Wait for the peer's bytes, or the server's stop. */
static int wait_readable(kf_tlssplit_conn *c, int timeout_ms)
{
    struct pollfd p[2] = {{.fd = c->fd, .events = POLLIN}, {.fd = c->stop_fd, .events = POLLIN}};
    int r;
    do
        r = poll(p, c->stop_fd >= 0 ? 2 : 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    if (r > 0 && c->stop_fd >= 0 && (p[1].revents & POLLIN))
        return KF_ERR_IO;
    return r > 0 ? KF_OK : r == 0 ? KF_ERR_TIMEOUT : KF_ERR_IO;
}

/* A non-blocking call stops where the blocking one would wait for the handler:
 * the blocking call takes over from here (kf_tlssplit_recv). */
static int defer_refusal(kf_tlssplit_conn *c, int err)
{
    c->deferred = true;
    c->def_err = err;
    return KF_TLSSPLIT_BLOCKS;
}

/* Make in[] start with one complete record; its length in *rec_len. nb: never
 * wait (KF_TLSSPLIT_AGAIN when the socket has no more now). */
static int fill_record(kf_tlssplit_conn *c, int timeout_ms, bool nb, size_t *rec_len)
{
    for (;;) {
        if (c->in_len >= KF_TLSREC_HEADER_LEN) {
            struct kf_tlsrec_header h;
            int rc = kf_tlsrec_parse_header(c->in, c->in_len, c->version, &h);
            if (rc < 0)
                return nb ? defer_refusal(c, rc) : abort_with(c, rc);
            size_t need = KF_TLSREC_HEADER_LEN + (size_t)h.length;
            if (c->in_len >= need) {
                *rec_len = need;
                return KF_OK;
            }
        }
        if (!nb)
            KF_GUARD(wait_readable(c, timeout_ms));
        ssize_t r = recv(c->fd, c->in + c->in_len, IN_CAP - c->in_len, nb ? MSG_DONTWAIT : 0);
        if (r > 0)
            c->in_len += (size_t)r;
        else if (r < 0 && nb && (errno == EAGAIN || errno == EWOULDBLOCK))
            return KF_TLSSPLIT_AGAIN;
        else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
            c->over = true; /* closed without close_notify: a truncation */
            c->end_reason = KF_ERR_IO;
            return KF_ERR_IO;
        }
    }
}

static void consume(kf_tlssplit_conn *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

/* ---- public ------------------------------------------------------------------- */

static void conn_free(kf_tlssplit_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    if (c->ctl >= 0)
        close(c->ctl);
    if (c->ses >= 0)
        close(c->ses);
    kf_tlsrec_free(c->rd);
    kf_tlsrec_free(c->wr);
    kf_secmem_free(c->pt);
    /* out holds ciphertext only: plaintext is sealed in place as soon as it is copied in. */
    free(c->in);
    free(c->out);
    kf_wipe(&c->who, sizeof(c->who));
    free(c);
}

int kf_tlssplit_accept(int broker, int fd, const char *peer, int timeout_ms,
                       kf_tlssplit_conn **out)
{
    struct kf_split_start st = {.role = KF_SPLIT_ROLE_SERVER};
    size_t pl = peer ? strnlen(peer, KF_SPLIT_PEER_MAX) : 0;
    memcpy(st.peer, peer ? peer : "", pl); /* the rest is zero: st was zeroed */
    return kf_tlssplit_conn_start(broker, fd, &st, timeout_ms, out);
}

int kf_tlssplit_conn_start(int broker, int fd, const struct kf_split_start *st, int timeout_ms,
                           kf_tlssplit_conn **out)
{
    int ctl[2] = {-1, -1}, ses[2] = {-1, -1};
    kf_tlssplit_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return KF_ERR_NOMEM;
    }
    c->fd = fd;
    c->ctl = c->ses = c->stop_fd = -1;
    c->in = malloc(IN_CAP);
    c->pt = kf_secmem_alloc(KF_TLSREC_PLAINTEXT_MAX + 1);
    int rc = c->in ? (c->pt ? KF_OK : KF_ERR_SECMEM) : KF_ERR_NOMEM;
    if (rc == KF_OK && (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) != 0 ||
                        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ses) != 0))
        rc = KF_ERR_IO;
    c->ctl = ctl[0];
    c->ses = ses[0];
    if (rc == KF_OK) {
        uint8_t mem[512]; /* START at its largest: 8 + 1 + 2 + 63 + 2 + 255 + 1 */
        kf_buf msg;
        kf_buf_fixed(&msg, mem, sizeof(mem));
        int fds[3] = {fd, ctl[1], ses[1]};
        rc = kf_split_encode_start(st, &msg);
        if (rc == KF_OK && kf_split_send(broker, &msg, fds, 3) < 0)
            rc = KF_ERR_SPLIT_HANDLER;
    }
    /* The handler has its own copies now; ours of its ends go. */
    if (ctl[1] >= 0)
        close(ctl[1]);
    if (ses[1] >= 0)
        close(ses[1]);
    if (rc == KF_OK)
        rc = await_handler(c, true, timeout_ms > 0 ? timeout_ms + 2000 : 12000);
    if (rc < 0) {
        conn_free(c);
        return rc;
    }
    *out = c;
    return KF_OK;
}

static int conn_recv(kf_tlssplit_conn *c, uint8_t *p, size_t n, int timeout_ms, bool nb,
                     size_t *got)
{
    KF_ENSURE(c && p && got && n > 0, KF_ERR_ARG);
    for (;;) {
        if (c->pt_off < c->pt_len) {
            size_t k = c->pt_len - c->pt_off < n ? c->pt_len - c->pt_off : n;
            memcpy(p, c->pt + c->pt_off, k);
            c->pt_off += k;
            if (c->pt_off == c->pt_len) {
                kf_wipe(c->pt, c->pt_len);
                c->pt_off = c->pt_len = 0;
            }
            *got = k;
            return KF_OK;
        }
        KF_ENSURE(!c->over, c->end_reason ? c->end_reason : KF_ERR_IO);
        if (c->deferred) { /* what a non-blocking call left for the handler */
            if (nb)
                return KF_TLSSPLIT_BLOCKS;
            c->deferred = false;
            if (c->def_err < 0)
                return abort_with(c, c->def_err);
            int rc = handover_ex(c, KF_SPLIT_TAKE_RECORD, 0, c->in, c->def_len, c->def_seq,
                                 !c->def_close_notify);
            consume(c, c->def_len);
            KF_GUARD(rc);
            continue;
        }
        size_t rec_len = 0;
        int rc = fill_record(c, timeout_ms, nb, &rec_len);
        if (rc != KF_OK)
            return rc;
        uint64_t seq = kf_tlsrec_seq(c->rd);
        if (c->version == KF_TLSREC_TLS12 && c->in[0] != KF_TLSREC_APPLICATION_DATA &&
            c->in[0] != KF_TLSREC_ALERT) {
            /* TLS 1.2 shows the type outside: not ours, forward it unopened. */
            if (nb)
                return KF_TLSSPLIT_BLOCKS; /* untouched: the blocking call sees it afresh */
            rc = handover(c, KF_SPLIT_TAKE_RECORD, 0, c->in, rec_len, seq);
            consume(c, rec_len);
            KF_GUARD(rc);
            continue;
        }
        uint8_t type;
        size_t len;
        rc = kf_tlsrec_open(c->rd, c->in, rec_len, c->pt, KF_TLSREC_PLAINTEXT_MAX + 1, &type, &len);
        if (rc < 0)
            return nb ? defer_refusal(c, rc) : abort_with(c, rc);
        /* Alerts are the handler's too; opening them tells a close_notify. */
        bool close_notify = type == KF_TLSREC_ALERT && len == 2 && c->pt[1] == 0;
        if (type == KF_TLSREC_APPLICATION_DATA) {
            consume(c, rec_len);
            c->pt_off = 0;
            c->pt_len = len;
            continue;
        }
        /* KeyUpdate, NewSessionTicket, alert...: the handler's, at the record's own
         * sequence number; it reads the record itself, so the plaintext goes. */
        kf_wipe(c->pt, len);
        if (nb) {
            c->deferred = true;
            c->def_err = KF_OK;
            c->def_seq = seq;
            c->def_len = rec_len;
            c->def_close_notify = close_notify;
            return KF_TLSSPLIT_BLOCKS;
        }
        rc = handover_ex(c, KF_SPLIT_TAKE_RECORD, 0, c->in, rec_len, seq, !close_notify);
        consume(c, rec_len);
        KF_GUARD(rc);
    }
}

int kf_tlssplit_recv(kf_tlssplit_conn *c, uint8_t *p, size_t n, int timeout_ms, size_t *got)
{
    return conn_recv(c, p, n, timeout_ms, false, got);
}

int kf_tlssplit_recv_nb(kf_tlssplit_conn *c, uint8_t *p, size_t n, size_t *got)
{
    return conn_recv(c, p, n, 0, true, got);
}

bool kf_tlssplit_pending(const kf_tlssplit_conn *c)
{
    return c->pt_off < c->pt_len || c->in_len > 0 || c->deferred;
}

int kf_tlssplit_fd(const kf_tlssplit_conn *c)
{
    return c->fd;
}

int kf_tlssplit_key_update(kf_tlssplit_conn *c, bool ask_peer)
{
    KF_ENSURE(c, KF_ERR_ARG);
    return handover(c, KF_SPLIT_TAKE_KEY_UPDATE, ask_peer ? 1 : 0, NULL, 0, kf_tlsrec_seq(c->rd));
}

/* Sealed bytes a non-blocking send left: written now (nb: as far as the socket takes them). */
static int flush_out(kf_tlssplit_conn *c, int timeout_ms, bool nb)
{
    while (c->out_off < c->out_len) {
        if (!nb) {
            int rc = write_all(c->fd, c->out + c->out_off, c->out_len - c->out_off, timeout_ms);
            if (rc < 0) {
                c->over = true;
                c->end_reason = rc;
                return rc;
            }
            break;
        }
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0)
            c->out_off += (size_t)w;
        else if (w < 0 && errno == EINTR)
            continue;
        else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return KF_TLSSPLIT_AGAIN;
        else {
            c->over = true;
            c->end_reason = KF_ERR_IO;
            return KF_ERR_IO;
        }
    }
    c->out_off = c->out_len = 0;
    return KF_OK;
}

static int conn_send(kf_tlssplit_conn *c, const uint8_t *p, size_t n, int timeout_ms, bool nb,
                     size_t *done)
{
    KF_ENSURE(c && (p || n == 0), KF_ERR_ARG);
    *done = 0;
    if (!c->out && n > 0) { /* the first answer */
        c->out = malloc(OUT_CAP);
        KF_ENSURE(c->out, KF_ERR_NOMEM);
    }
    int rc = flush_out(c, timeout_ms, nb);
    if (rc != KF_OK)
        return rc;
    while (n > 0) {
        KF_ENSURE(!c->over, c->end_reason ? c->end_reason : KF_ERR_IO);
        if (c->version == KF_TLSREC_TLS13 && kf_tlsrec_seq(c->wr) >= REKEY_AFTER_RECORDS) {
            if (nb)
                return KF_TLSSPLIT_BLOCKS; /* the handler's job */
            KF_GUARD(kf_tlssplit_key_update(c, false));
        }
        kf_buf out;
        kf_buf_fixed(&out, c->out, OUT_CAP);
        for (int i = 0; i < OUT_RECORDS && n > 0; i++) {
            size_t k = n < KF_TLSREC_PLAINTEXT_MAX ? n : KF_TLSREC_PLAINTEXT_MAX;
            KF_GUARD(kf_tlsrec_seal(c->wr, KF_TLSREC_APPLICATION_DATA, p, k, 0, &out));
            p += k;
            n -= k;
            *done += k;
        }
        c->out_off = 0;
        c->out_len = out.len;
        rc = flush_out(c, timeout_ms, nb);
        if (rc != KF_OK)
            return rc;
    }
    return KF_OK;
}

int kf_tlssplit_send(kf_tlssplit_conn *c, const uint8_t *p, size_t n, int timeout_ms)
{
    size_t done;
    return conn_send(c, p, n, timeout_ms, false, &done);
}

int kf_tlssplit_send_nb(kf_tlssplit_conn *c, const uint8_t *p, size_t n, size_t *done)
{
    return conn_send(c, p, n, 0, true, done);
}

void kf_tlssplit_close(kf_tlssplit_conn *c)
{
    if (!c)
        return;
    if (!c->over && c->out_off < c->out_len)
        (void)flush_out(c, 1000, false); /* the close_notify comes after these records */
    if (!c->over)
        (void)handover(c, KF_SPLIT_TAKE_CLOSE, 0, NULL, 0, kf_tlsrec_seq(c->rd));
    conn_free(c);
}

void kf_tlssplit_set_stop_fd(kf_tlssplit_conn *c, int fd)
{
    c->stop_fd = fd;
}

const struct kf_principal *kf_tlssplit_peer(const kf_tlssplit_conn *c)
{
    return &c->who;
}

bool kf_tlssplit_conn_id(const kf_tlssplit_conn *c, uint8_t id[KF_SPLIT_CONN_ID_LEN])
{
    if (c->has_id)
        memcpy(id, c->conn_id, KF_SPLIT_CONN_ID_LEN);
    return c->has_id;
}

uint16_t kf_tlssplit_version(const kf_tlssplit_conn *c)
{
    return c->version;
}

bool kf_tlssplit_resumed(const kf_tlssplit_conn *c)
{
    return c->resumed;
}

uint64_t kf_tlssplit_handovers(const kf_tlssplit_conn *c)
{
    return c->handovers;
}

int kf_tlssplit_end_reason(const kf_tlssplit_conn *c)
{
    return c->end_reason;
}
