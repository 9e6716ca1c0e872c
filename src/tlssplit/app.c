/*
 * The application channel between KMIP worker processes and keyfleetd
 * (app.h has the messages): codec and a buffered stream reader. keyfleetd's
 * side (the peers table; requests in, answered by a pool of threads that
 * outlive requests) is in app_host.c, the worker's side in worker.c.
 *
 * Why the hop is cheap: thread wake-ups, not bytes, are what a request costs
 * on top of the monolithic endpoint. A worker writes each request with one
 * writev (frame head, then the message in place) and the thread that waits for
 * the answer reads the channel itself when no other does; keyfleetd's pool
 * threads wait on one epoll set holding every worker's channel, and the
 * thread woken takes every request already buffered on the channel (up to
 * KF_APP_BATCH_MAX) and answers them as one batch: one wake-up, one audit
 * commit and one write for all of them (app_host.c). No thread is created per
 * request, and up to max_inflight requests of one worker are under way at
 * once, so a slow one holds up only its own connection and the others of its
 * batch.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "channel.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "keyfleet/ttlv.h"

/* Any malformation is the same refusal: the other process is not speaking the protocol. */
#define CH(x)                                                                                      \
    do {                                                                                           \
        if ((x) < 0)                                                                               \
            return KF_ERR_SPLIT_APP;                                                               \
    } while (0)
#define CH_ENSURE(c) CH((c) ? KF_OK : KF_ERR_SPLIT_APP)

#define MS_MAX (24u * 3600u * 1000u)

/* ---- frame ------------------------------------------------------------------- */

static uint32_t body_max(uint8_t type)
{
    switch (type) {
    case KF_APP_SETTINGS: return KF_APP_SETTINGS_BODY_MAX;
    case KF_APP_REQUEST: return KF_APP_REQUEST_BODY_MAX;
    case KF_APP_RESPONSE: return KF_APP_RESPONSE_BODY_MAX;
    case KF_APP_FAILED: return 8;
    default: return 0; /* CLOSED */
    }
}

static int frame_begin(kf_buf *out, uint8_t type, size_t *len_at)
{
    KF_GUARD(kf_buf_put_u8(out, KF_APP_VERSION));
    KF_GUARD(kf_buf_put_u8(out, type));
    KF_GUARD(kf_buf_put_u16(out, 0));
    *len_at = out->len;
    return kf_buf_put_u32(out, 0);
}

/* follows: bytes the caller writes after this head (the message). */
static int frame_end(kf_buf *out, uint8_t type, size_t len_at, size_t follows)
{
    size_t len = out->len - len_at - 4 + follows;
    KF_ENSURE(len <= body_max(type), KF_ERR_LIMIT);
    return kf_buf_patch_u32(out, len_at, (uint32_t)len);
}

int kf_app_decode_header(const uint8_t hdr[KF_APP_FRAME_LEN], unsigned allow, uint8_t *type,
                         uint32_t *body_len)
{
    kf_buf b;
    uint8_t version;
    uint16_t zero;
    kf_buf_reader(&b, hdr, KF_APP_FRAME_LEN);
    CH(kf_buf_get_u8(&b, &version));
    CH(kf_buf_get_u8(&b, type));
    CH(kf_buf_get_u16(&b, &zero));
    CH(kf_buf_get_u32(&b, body_len));
    CH_ENSURE(version == KF_APP_VERSION && zero == 0);
    CH_ENSURE(*type >= KF_APP_SETTINGS && *type <= KF_APP_CLOSED && (allow & KF_APP_ALLOW(*type)));
    CH_ENSURE(*body_len <= body_max(*type));
    if (*type == KF_APP_FAILED || *type == KF_APP_CLOSED)
        CH_ENSURE(*body_len == body_max(*type));
    return KF_OK;
}

int kf_app_decode_frame(const uint8_t *p, size_t n, unsigned allow, uint8_t *type, kf_buf *body)
{
    uint32_t len;
    CH_ENSURE(p && n >= KF_APP_FRAME_LEN);
    CH(kf_app_decode_header(p, allow, type, &len));
    CH_ENSURE(n - KF_APP_FRAME_LEN == len);
    kf_buf_reader(body, p + KF_APP_FRAME_LEN, len);
    return KF_OK;
}

/* ---- messages ------------------------------------------------------------------ */

int kf_app_encode_settings(const struct kf_app_settings *s, kf_buf *out)
{
    size_t at;
    KF_ENSURE(s->max_connections >= 1 && s->max_connections <= KF_APP_SLOTS_MAX, KF_ERR_ARG);
    KF_GUARD(frame_begin(out, KF_APP_SETTINGS, &at));
    KF_GUARD(kf_buf_put_u32(out, s->max_connections));
    KF_GUARD(kf_buf_put_u32(out, s->handshake_ms));
    KF_GUARD(kf_buf_put_u32(out, s->idle_ms));
    KF_GUARD(kf_buf_put_u32(out, s->message_ms));
    KF_GUARD(kf_buf_put_u8(out, s->log_level));
    KF_GUARD(kf_buf_put_u8(out, s->sandbox_flags));
    KF_GUARD(kf_buf_put_u8(out, s->flags));
    KF_GUARD(kf_buf_put_str16(out, s->log_file, KF_APP_LOG_FILE_MAX));
    return frame_end(out, KF_APP_SETTINGS, at, 0);
}

static int get_ms(kf_buf *b, uint32_t *ms)
{
    CH(kf_buf_get_u32(b, ms));
    CH_ENSURE(*ms >= 1 && *ms <= MS_MAX);
    return KF_OK;
}

int kf_app_decode_settings(kf_buf *b, struct kf_app_settings *s)
{
    memset(s, 0, sizeof(*s));
    CH(kf_buf_get_u32(b, &s->max_connections));
    CH_ENSURE(s->max_connections >= 1 && s->max_connections <= KF_APP_SLOTS_MAX);
    CH(get_ms(b, &s->handshake_ms));
    CH(get_ms(b, &s->idle_ms));
    CH(get_ms(b, &s->message_ms));
    CH(kf_buf_get_u8(b, &s->log_level));
    CH_ENSURE(s->log_level <= KF_LOG_ERROR);
    CH(kf_buf_get_u8(b, &s->sandbox_flags));
    CH_ENSURE((s->sandbox_flags & ~(KF_TLSSPLIT_SANDBOX_KEEP_USER | KF_TLSSPLIT_SANDBOX_NO_FILTER)) ==
              0);
    CH(kf_buf_get_u8(b, &s->flags));
    CH_ENSURE((s->flags & ~KF_APP_SETTINGS_OPEN_LOG) == 0);
    CH(kf_buf_get_str16(b, s->log_file, sizeof(s->log_file), KF_APP_LOG_FILE_MAX));
    CH_ENSURE(kf_buf_remaining(b) == 0);
    return KF_OK;
}

int kf_app_encode_request_head(const struct kf_app_request *r, kf_buf *out)
{
    size_t at;
    KF_ENSURE(r->msg_len >= KF_TTLV_HEADER_LEN && r->msg_len <= KF_TLS_MESSAGE_MAX, KF_ERR_LIMIT);
    KF_GUARD(frame_begin(out, KF_APP_REQUEST, &at));
    KF_GUARD(kf_buf_put_u32(out, r->id));
    KF_GUARD(kf_buf_put_bytes(out, r->conn, sizeof(r->conn)));
    return frame_end(out, KF_APP_REQUEST, at, r->msg_len);
}

int kf_app_encode_request(const struct kf_app_request *r, kf_buf *out)
{
    KF_GUARD(kf_app_encode_request_head(r, out));
    return kf_buf_put_bytes(out, r->msg, r->msg_len);
}

int kf_app_decode_request(kf_buf *b, struct kf_app_request *r)
{
    CH(kf_buf_get_u32(b, &r->id));
    CH(kf_buf_get_bytes(b, r->conn, sizeof(r->conn)));
    r->msg_len = kf_buf_remaining(b);
    CH_ENSURE(r->msg_len >= KF_TTLV_HEADER_LEN && r->msg_len <= KF_TLS_MESSAGE_MAX);
    /* Exactly one TTLV message, as the monolithic endpoint reads it off the socket. */
    struct kf_ttlv_limits lim = {.max_total = KF_TLS_MESSAGE_MAX};
    size_t total;
    CH(kf_ttlv_message_length(kf_buf_read_ptr(b), &lim, &total));
    CH_ENSURE(total == r->msg_len);
    CH(kf_buf_get_ptr(b, r->msg_len, &r->msg));
    return KF_OK;
}

int kf_app_encode_response_head(const struct kf_app_response *r, kf_buf *out)
{
    size_t at;
    if (r->status < 0) {
        KF_GUARD(frame_begin(out, KF_APP_FAILED, &at));
        KF_GUARD(kf_buf_put_u32(out, r->id));
        KF_GUARD(kf_buf_put_u32(out, (uint32_t)r->status));
        return frame_end(out, KF_APP_FAILED, at, 0);
    }
    KF_ENSURE(r->status == KF_OK && r->msg_len >= 1 && r->msg_len <= KF_APP_ANSWER_MAX,
              KF_ERR_LIMIT);
    KF_GUARD(frame_begin(out, KF_APP_RESPONSE, &at));
    KF_GUARD(kf_buf_put_u32(out, r->id));
    return frame_end(out, KF_APP_RESPONSE, at, r->msg_len);
}

int kf_app_encode_response(const struct kf_app_response *r, kf_buf *out)
{
    KF_GUARD(kf_app_encode_response_head(r, out));
    return r->status < 0 ? KF_OK : kf_buf_put_bytes(out, r->msg, r->msg_len);
}

int kf_app_decode_response(uint8_t type, kf_buf *b, struct kf_app_response *r)
{
    memset(r, 0, sizeof(*r));
    CH(kf_buf_get_u32(b, &r->id));
    if (type == KF_APP_FAILED) {
        uint32_t v;
        CH(kf_buf_get_u32(b, &v));
        r->status = (int32_t)v;
        CH_ENSURE(r->status < 0 && kf_buf_remaining(b) == 0);
        return KF_OK;
    }
    CH_ENSURE(type == KF_APP_RESPONSE);
    r->msg_len = kf_buf_remaining(b);
    CH_ENSURE(r->msg_len >= 1 && r->msg_len <= KF_APP_ANSWER_MAX);
    CH(kf_buf_get_ptr(b, r->msg_len, &r->msg));
    return KF_OK;
}

int kf_app_encode_closed(kf_buf *out)
{
    size_t at;
    KF_GUARD(frame_begin(out, KF_APP_CLOSED, &at));
    return frame_end(out, KF_APP_CLOSED, at, 0);
}

int kf_app_decode_closed(kf_buf *b)
{
    CH_ENSURE(kf_buf_remaining(b) == 0);
    return KF_OK;
}

/* ---- stream transport ------------------------------------------------------------ */

#define READER_CAP ((size_t)64 * 1024)

int kf_app_reader_init(struct kf_app_reader *r, int fd)
{
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->buf = kf_secmem_alloc(READER_CAP);
    KF_ENSURE(r->buf, KF_ERR_SECMEM);
    r->cap = READER_CAP;
    return KF_OK;
}

void kf_app_reader_free(struct kf_app_reader *r)
{
    kf_secmem_free(r->buf); /* wipes */
    kf_buf_free(&r->big);
    r->buf = NULL;
}

/* The frame handed out last is done with: wipe it. */
static void consume_last(struct kf_app_reader *r)
{
    if (r->last_big)
        kf_buf_free(&r->big);
    else if (r->last) {
        kf_wipe(r->buf + r->start, r->last);
        r->start += r->last;
    }
    r->last = 0;
    r->last_big = false;
    if (r->start == r->end)
        r->start = r->end = 0;
}

static int wait_in(int fd, int timeout_ms)
{
    if (timeout_ms < 0)
        return KF_OK; /* the recv blocks */
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n;
    do
        n = poll(&p, 1, timeout_ms);
    while (n < 0 && errno == EINTR);
    return n > 0 ? KF_OK : n == 0 ? KF_ERR_TIMEOUT : KF_ERR_IO;
}

/* recv into dst (room bytes): how many came; KF_ERR_IO at the end of the stream. */
static int recv_some(int fd, uint8_t *dst, size_t room, int timeout_ms, size_t *got)
{
    for (;;) {
        KF_GUARD(wait_in(fd, timeout_ms));
        ssize_t n = recv(fd, dst, room, 0);
        if (n > 0) {
            *got = (size_t)n;
            return KF_OK;
        }
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        return KF_ERR_IO;
    }
}

/* At least need bytes buffered from start (need <= cap). */
static int fill(struct kf_app_reader *r, size_t need, int timeout_ms)
{
    if (r->start + need > r->cap) { /* move the partial frame to the front */
        size_t have = r->end - r->start;
        memmove(r->buf, r->buf + r->start, have);
        kf_wipe(r->buf + have, r->end - have);
        r->start = 0;
        r->end = have;
    }
    while (r->end - r->start < need) {
        size_t got;
        KF_GUARD(recv_some(r->fd, r->buf + r->end, r->cap - r->end, timeout_ms, &got));
        r->end += got;
    }
    return KF_OK;
}

int kf_app_read(struct kf_app_reader *r, unsigned allow, int timeout_ms, uint8_t *type,
                kf_buf *body, bool *eof)
{
    uint32_t len;
    *eof = false;
    consume_last(r);
    int rc = fill(r, KF_APP_FRAME_LEN, timeout_ms);
    if (rc < 0) {
        *eof = rc == KF_ERR_IO && r->end == r->start; /* closed between frames */
        return rc;
    }
    KF_GUARD(kf_app_decode_header(r->buf + r->start, allow, type, &len));
    size_t total = KF_APP_FRAME_LEN + (size_t)len;
    if (total <= r->cap) {
        KF_GUARD(fill(r, total, timeout_ms));
        kf_buf_reader(body, r->buf + r->start + KF_APP_FRAME_LEN, len);
        r->last = total;
        return KF_OK;
    }
    /* Larger than the buffer: everything buffered belongs to this frame. */
    size_t have = r->end - r->start;
    KF_GUARD(kf_buf_alloc(&r->big, total, total, KF_BUF_SECRET));
    r->last_big = true; /* freed (wiped) at the next read, also after a failure */
    KF_GUARD(kf_buf_put_bytes(&r->big, r->buf + r->start, have));
    kf_wipe(r->buf + r->start, have);
    r->start = r->end = 0;
    while (r->big.len < total) {
        size_t got;
        KF_GUARD(recv_some(r->fd, r->big.data + r->big.len, total - r->big.len, timeout_ms, &got));
        r->big.len += got;
    }
    kf_buf_reader(body, r->big.data + KF_APP_FRAME_LEN, len);
    return KF_OK;
}

int kf_app_write(int fd, const uint8_t *head, size_t head_len, const uint8_t *body,
                 size_t body_len, int timeout_ms)
{
    struct iovec iov[2] = {{.iov_base = (void *)head, .iov_len = head_len},
                           {.iov_base = (void *)body, .iov_len = body_len}};
    return kf_app_writev(fd, iov, body_len ? 2 : 1, timeout_ms);
}

int kf_app_writev(int fd, struct iovec *v, size_t nv, int timeout_ms)
{
    while (nv) {
        if (v->iov_len == 0) {
            v++;
            nv--;
            continue;
        }
        struct msghdr mh = {.msg_iov = v, .msg_iovlen = nv};
        ssize_t w = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int n;
            do
                n = poll(&p, 1, timeout_ms);
            while (n < 0 && errno == EINTR);
            KF_ENSURE(n > 0, n == 0 ? KF_ERR_TIMEOUT : KF_ERR_IO);
            continue;
        }
        KF_ENSURE(w > 0, KF_ERR_IO);
        size_t done = (size_t)w;
        while (nv && done >= v->iov_len) {
            done -= v->iov_len;
            v++;
            nv--;
        }
        if (nv) {
            v->iov_base = (uint8_t *)v->iov_base + done;
            v->iov_len -= done;
        }
    }
    return KF_OK;
}

bool kf_app_reader_buffered(const struct kf_app_reader *r)
{
    if (r->last_big || !r->buf)
        return false;
    kf_buf rest;
    uint32_t len;
    kf_buf_reader(&rest, r->buf + r->start + r->last, r->end - r->start - r->last);
    return kf_buf_peek_u32(&rest, 4, &len) == KF_OK &&
           kf_buf_remaining(&rest) - KF_APP_FRAME_LEN >= len;
}

/* ---- one KMIP message off a split connection -------------------------------------- */

static int read_exact(kf_tlssplit_conn *c, uint8_t *p, size_t n, int timeout_ms)
{
    while (n) {
        size_t got;
        KF_GUARD(kf_tlssplit_recv(c, p, n, timeout_ms, &got));
        p += got;
        n -= got;
    }
    return KF_OK;
}

int kf_app_read_kmip(kf_tlssplit_conn *c, int idle_ms, int message_ms, kf_buf *msg)
{
    uint8_t *hdr, *body;
    size_t got, total;
    struct kf_ttlv_limits lim = {.max_total = KF_TLS_MESSAGE_MAX};
    kf_buf_reset(msg);
    KF_GUARD(kf_buf_put_space(msg, KF_TTLV_HEADER_LEN, &hdr));
    KF_GUARD(kf_tlssplit_recv(c, hdr, KF_TTLV_HEADER_LEN, idle_ms, &got));
    KF_GUARD(read_exact(c, hdr + got, KF_TTLV_HEADER_LEN - got, message_ms));
    KF_GUARD(kf_ttlv_message_length(hdr, &lim, &total));
    KF_ENSURE(total >= KF_TTLV_HEADER_LEN && total <= KF_TLS_MESSAGE_MAX, KF_ERR_LIMIT);
    KF_GUARD(kf_buf_put_space(msg, total - KF_TTLV_HEADER_LEN, &body));
    return read_exact(c, body, total - KF_TTLV_HEADER_LEN, message_ms);
}
