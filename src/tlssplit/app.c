/*
 * The application channel between KMIP worker processes and keyfleetd
 * (app.h has the messages): codec, a buffered stream reader, and keyfleetd's
 * side (requests in, answered by a pool of threads that outlive requests).
 * The worker's side is in worker.c.
 *
 * Why the hop is cheap: thread wake-ups, not bytes, are what a request costs
 * on top of the monolithic endpoint. A worker writes each request with one
 * writev (frame head, then the message in place) and the thread that waits for
 * the answer reads the channel itself when no other does; keyfleetd's pool
 * threads wait on one epoll set holding every worker's channel, and the
 * thread woken for a request answers it on the spot. No thread is created per
 * request, and up to max_inflight requests of one worker are under way at
 * once, so a slow one holds up only its own connection.
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

/* ---- keyfleetd's side: the peers table ------------------------------------------------ */

_Static_assert(KF_APP_CONN_ID_LEN == KF_SPLIT_CONN_ID_LEN, "one connection ID length");

#define PEERS_BUCKETS 1024u
struct peer_entry {
    uint8_t id[KF_APP_CONN_ID_LEN];
    struct kf_principal who;
    struct peer_entry *next;
};

struct kf_app_peers {
    int fd;
    pthread_t reader;
    bool reader_running;
    pthread_mutex_t lock; /* the table, and reading the channel (PEER and GONE stay in order) */
    bool ended;           /* the channel is over: nothing more to take in */
    unsigned count;
    struct peer_entry *bucket[PEERS_BUCKETS];
};

/* IDs are random (the handler's): any 4 bytes of them spread evenly. */
static struct peer_entry **peers_slot(kf_app_peers *p, const uint8_t *id)
{
    uint32_t v = (uint32_t)id[0] | (uint32_t)id[1] << 8 | (uint32_t)id[2] << 16 |
                 (uint32_t)id[3] << 24;
    struct peer_entry **e = &p->bucket[v % PEERS_BUCKETS];
    while (*e && memcmp((*e)->id, id, KF_APP_CONN_ID_LEN) != 0)
        e = &(*e)->next;
    return e;
}

/* Under p->lock: everything the handler has sent so far. */
static void peers_drain(kf_app_peers *p)
{
    while (!p->ended) {
        uint8_t buf[KF_SPLIT_PEERS_MAX], type;
        kf_buf body;
        bool eof;
        int rc = kf_split_recv(p->fd, buf, sizeof(buf),
                               KF_SPLIT_ALLOW(KF_SPLIT_PEER) | KF_SPLIT_ALLOW(KF_SPLIT_GONE), 0,
                               &type, &body, NULL, &eof);
        if (rc == KF_ERR_TIMEOUT)
            return;
        struct kf_split_peer m;
        if (rc == KF_OK)
            rc = type == KF_SPLIT_PEER ? kf_split_decode_peer(&body, &m)
                                       : kf_split_decode_gone(&body, m.id);
        if (rc < 0) {
            if (!eof)
                kf_error("TLS split: the session handler's peers channel: %s", kf_strerror(rc));
            p->ended = true;
            return;
        }
        struct peer_entry **e = peers_slot(p, m.id);
        if (type == KF_SPLIT_GONE) {
            struct peer_entry *gone = *e;
            if (gone) {
                *e = gone->next;
                kf_wipe(gone, sizeof(*gone));
                free(gone);
                p->count--;
            }
            continue;
        }
        struct peer_entry *n = NULL;
        if (*e)
            kf_warn("TLS split: the session handler sent a connection ID twice: ignored");
        else if (p->count >= KF_APP_PEERS_MAX)
            kf_warn("TLS split: more than %u connection IDs: %s refused", KF_APP_PEERS_MAX,
                    m.who.name);
        else if (!(n = calloc(1, sizeof(*n))))
            kf_error("TLS split: out of memory for a connection ID: %s refused", m.who.name);
        if (n) {
            memcpy(n->id, m.id, sizeof(n->id));
            n->who = m.who;
            *e = n;
            p->count++;
        }
    }
}

static void *peers_reader(void *arg)
{
    kf_app_peers *p = arg;
    for (;;) {
        struct pollfd pf = {.fd = p->fd, .events = POLLIN};
        int k = poll(&pf, 1, -1);
        if (k < 0 && errno != EINTR)
            break;
        pthread_mutex_lock(&p->lock);
        peers_drain(p);
        bool ended = p->ended;
        pthread_mutex_unlock(&p->lock);
        if (ended)
            break;
    }
    return NULL;
}

int kf_app_peers_start(int fd, kf_app_peers **out)
{
    KF_ENSURE(out, KF_ERR_ARG);
    kf_app_peers *p = fd >= 0 ? calloc(1, sizeof(*p)) : NULL;
    if (!p) {
        if (fd >= 0)
            close(fd);
        return fd >= 0 ? KF_ERR_NOMEM : KF_ERR_ARG;
    }
    p->fd = fd;
    pthread_mutex_init(&p->lock, NULL);
    if (pthread_create(&p->reader, NULL, peers_reader, p) != 0) {
        kf_app_peers_stop(p);
        return KF_ERR_NOMEM;
    }
    p->reader_running = true;
    *out = p;
    return KF_OK;
}

int kf_app_peers_lookup(kf_app_peers *p, const uint8_t id[KF_APP_CONN_ID_LEN],
                        struct kf_principal *who)
{
    KF_ENSURE(p && id && who, KF_ERR_ARG);
    pthread_mutex_lock(&p->lock);
    struct peer_entry *e = *peers_slot(p, id);
    if (!e) { /* maybe not read yet: the handler sent it before the worker had the ID */
        peers_drain(p);
        e = *peers_slot(p, id);
    }
    if (e)
        *who = e->who;
    pthread_mutex_unlock(&p->lock);
    return e ? KF_OK : KF_ERR_SPLIT_APP;
}

unsigned kf_app_peers_count(kf_app_peers *p)
{
    pthread_mutex_lock(&p->lock);
    unsigned n = p->count;
    pthread_mutex_unlock(&p->lock);
    return n;
}

void kf_app_peers_stop(kf_app_peers *p)
{
    if (!p)
        return;
    shutdown(p->fd, SHUT_RDWR); /* the reader finds the end */
    if (p->reader_running)
        pthread_join(p->reader, NULL);
    close(p->fd);
    for (unsigned i = 0; i < PEERS_BUCKETS; i++)
        while (p->bucket[i]) {
            struct peer_entry *e = p->bucket[i];
            p->bucket[i] = e->next;
            kf_wipe(e, sizeof(*e));
            free(e);
        }
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* ---- keyfleetd's side: requests ------------------------------------------------------ */

/*
 * Every worker's channel is in one epoll set, armed one-shot. The pool thread
 * the set wakes reads exactly one frame, re-arms the channel -- so the
 * worker's next request wakes another thread -- and answers the request
 * itself. A request costs one thread wake-up, the requests of one worker run
 * side by side (which also lets the key store's group commit batch their
 * audit records, as it does for the monolithic endpoint's threads), and a
 * slow one holds up only its own connection. (Answering on the thread that
 * holds the channel, re-arming only when it is empty, saves that wake-up
 * under load but serialises each worker's requests: measured 15 % fewer Get/s,
 * because the audit batches shrink.) Whenever the last idle thread takes
 * work, another is started (up to POOL_THREADS_MAX); threads idle for
 * POOL_IDLE_MS end, down to POOL_THREADS_KEEP.
 */
#define POOL_THREADS_MAX 256u
#define POOL_THREADS_KEEP 2u
#define POOL_IDLE_MS 30000

struct kf_app_host {
    int fd;
    struct kf_app_host_config cfg;
    pthread_mutex_t wlock; /* one frame at a time on the channel */
    pthread_mutex_t lock;  /* the fields below */
    pthread_cond_t changed;
    unsigned inflight;
    bool registered; /* in the epoll set (SETTINGS went out) */
    bool retired;    /* no thread will read it again (it was not re-armed) */
    bool broken;     /* no more writes */
    bool violation;  /* the worker did not take an answer in time */
};

static struct {
    pthread_mutex_t mu; /* threads */
    int epfd;
    unsigned threads;
    atomic_uint idle;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .epfd = -1};

/* What a pool thread keeps between requests (secure memory: plaintext KMIP). */
struct pool_thread_state {
    kf_buf body, resp;
    struct kf_app_request r;
    struct kf_principal who;
};

static void *pool_thread(void *arg);

/* Under pool.mu. */
static void pool_spawn(void)
{
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, pool_thread, NULL) == 0)
        pool.threads++;
    pthread_attr_destroy(&attr);
}

static int pool_init(void)
{
    pthread_mutex_lock(&pool.mu);
    if (pool.epfd < 0)
        pool.epfd = epoll_create1(EPOLL_CLOEXEC);
    while (pool.epfd >= 0 && pool.threads < POOL_THREADS_KEEP) {
        unsigned before = pool.threads;
        pool_spawn();
        if (pool.threads == before)
            break;
    }
    int rc = pool.epfd < 0 ? KF_ERR_IO : pool.threads ? KF_OK : KF_ERR_NOMEM;
    pthread_mutex_unlock(&pool.mu);
    return rc;
}

static int host_arm(kf_app_host *h, int op)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = h};
    return epoll_ctl(pool.epfd, op, h->fd, &ev) == 0 ? KF_OK : KF_ERR_IO;
}

/*
 * The thread that read from h and does not re-arm it: nobody reads h again, and
 * the owner hears why (once). h may be gone as soon as this returns.
 */
static void host_end(kf_app_host *h, int reason)
{
    void (*on_end)(void *, int) = h->cfg.on_end;
    void *owner = h->cfg.owner;
    pthread_mutex_lock(&h->lock);
    if (h->violation)
        reason = KF_ERR_SPLIT_APP;
    if (reason == KF_ERR_SPLIT_APP)
        h->broken = true;
    h->retired = true;
    pthread_cond_broadcast(&h->changed);
    pthread_mutex_unlock(&h->lock);
    on_end(owner, reason);
}

#define NOTHING_THERE 1
/* n bytes, each part within timeout_ms of the one before; first: the first
 * bytes of a frame, which need not be there (NOTHING_THERE). */
static int recv_exact(int fd, uint8_t *p, size_t n, int timeout_ms, bool first)
{
    while (n) {
        ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            first = false;
            continue;
        }
        if (r == 0)
            return KF_ERR_IO;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return KF_ERR_IO;
        if (first)
            return NOTHING_THERE;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int k;
        do
            k = poll(&pf, 1, timeout_ms);
        while (k < 0 && errno == EINTR);
        if (k == 0)
            return KF_ERR_TIMEOUT; /* a frame started and did not finish */
        if (k < 0)
            return KF_ERR_IO;
    }
    return KF_OK;
}

static void host_answer(kf_app_host *h, uint32_t id, int status, const kf_buf *resp)
{
    struct kf_app_response a = {.id = id, .status = status};
    if (status == KF_OK) {
        a.msg = resp->data;
        a.msg_len = resp->len;
    }
    uint8_t mem[KF_APP_FRAME_LEN + 8];
    kf_buf head;
    kf_buf_fixed(&head, mem, sizeof(mem));
    if (kf_app_encode_response_head(&a, &head) < 0) { /* an empty or oversized answer */
        a.status = KF_ERR_LIMIT;
        kf_buf_fixed(&head, mem, sizeof(mem));
        if (kf_app_encode_response_head(&a, &head) < 0)
            return;
    }
    pthread_mutex_lock(&h->wlock);
    pthread_mutex_lock(&h->lock);
    bool broken = h->broken;
    pthread_mutex_unlock(&h->lock);
    int rc = broken ? KF_ERR_IO
                    : kf_app_write(h->fd, head.data, head.len, a.status == KF_OK ? a.msg : NULL,
                                   a.status == KF_OK ? a.msg_len : 0, h->cfg.write_timeout_ms);
    pthread_mutex_unlock(&h->wlock);
    if (rc < 0 && !broken) {
        /* Not taking its answers in time is a worker's fault; a closed channel is
         * not. Either way the channel is done: the thread that reads it next
         * finds its end and tells the owner. */
        pthread_mutex_lock(&h->lock);
        h->broken = true;
        h->violation = h->violation || rc == KF_ERR_TIMEOUT;
        pthread_mutex_unlock(&h->lock);
        shutdown(h->fd, SHUT_RDWR);
    }
}

/* One more request under way; more at once than the worker may have is a violation. */
static int host_take(kf_app_host *h)
{
    int rc = KF_OK;
    pthread_mutex_lock(&h->lock);
    if (h->inflight >= h->cfg.max_inflight)
        rc = KF_ERR_SPLIT_APP;
    else
        h->inflight++;
    pthread_mutex_unlock(&h->lock);
    return rc;
}

/* The next frame of h (the epoll set woke us for it): KF_OK with a REQUEST in ts, NOTHING_THERE,
 * or the reason the channel is over. A CLOSED is taken care of here. */
static int host_next(kf_app_host *h, struct pool_thread_state *ts, bool have_bufs)
{
    for (;;) {
        uint8_t hdr[KF_APP_FRAME_LEN], type;
        uint32_t len;
        int rc = recv_exact(h->fd, hdr, sizeof(hdr), h->cfg.write_timeout_ms, true);
        if (rc != KF_OK)
            return rc;
        KF_GUARD(kf_app_decode_header(hdr, KF_APP_ALLOW(KF_APP_REQUEST) | KF_APP_ALLOW(KF_APP_CLOSED),
                                      &type, &len));
        if (type == KF_APP_CLOSED) {
            KF_ENSURE(h->cfg.on_closed(h->cfg.owner), KF_ERR_SPLIT_APP);
            continue;
        }
        uint8_t *body;
        KF_ENSURE(have_bufs, KF_ERR_SECMEM);
        kf_buf_reset(&ts->body);
        KF_GUARD(kf_buf_put_space(&ts->body, len, &body));
        rc = recv_exact(h->fd, body, len, h->cfg.write_timeout_ms, false);
        if (rc < 0)
            return rc == KF_ERR_TIMEOUT ? KF_ERR_SPLIT_APP : rc; /* a stalled frame */
        kf_buf b;
        kf_buf_reader(&b, body, len);
        KF_GUARD(kf_app_decode_request(&b, &ts->r));
        return host_take(h);
    }
}

/* The epoll set woke us for h: one frame; a request is answered here, after
 * the channel is re-armed for the next one. */
static void host_serve(kf_app_host *h, struct pool_thread_state *ts, bool have_bufs)
{
    int rc = host_next(h, ts, have_bufs);
    if (rc == NOTHING_THERE)
        rc = host_arm(h, EPOLL_CTL_MOD);
    else if (rc == KF_OK && host_arm(h, EPOLL_CTL_MOD) < 0) {
        pthread_mutex_lock(&h->lock);
        h->inflight--; /* h stays: not retired yet */
        pthread_mutex_unlock(&h->lock);
        rc = KF_ERR_IO;
    } else if (rc == KF_OK) {
        kf_buf_reset(&ts->resp);
        /* The principal is the handler's word for this connection, never the worker's. */
        rc = kf_app_peers_lookup(h->cfg.peers, ts->r.conn, &ts->who);
        if (rc < 0)
            kf_warn("TLS split: a KMIP worker process sent a request for an unknown connection "
                    "ID: refused");
        else
            rc = h->cfg.handle(h->cfg.handle_arg, &ts->who, ts->r.msg, ts->r.msg_len, &ts->resp);
        host_answer(h, ts->r.id, rc < 0 ? rc : KF_OK, &ts->resp);
        kf_buf_reset(&ts->body); /* wipes the request */
        kf_buf_reset(&ts->resp); /* and the answer */
        pthread_mutex_lock(&h->lock);
        h->inflight--;
        pthread_cond_broadcast(&h->changed);
        pthread_mutex_unlock(&h->lock); /* h may be gone from here on */
        return;
    }
    if (rc < 0) {
        kf_buf_reset(&ts->body);
        /* A malformed or stalled frame is the worker's fault; the end of the stream,
         * or keyfleetd out of memory, is not. */
        host_end(h, rc == KF_ERR_SPLIT_APP || rc == KF_ERR_TIMEOUT ? KF_ERR_SPLIT_APP : KF_ERR_IO);
    }
}

static void *pool_thread(void *arg)
{
    (void)arg;
    static _Thread_local struct pool_thread_state ts;
    bool have_bufs = kf_buf_alloc(&ts.body, 4096, KF_APP_REQUEST_BODY_MAX, KF_BUF_SECRET) == KF_OK &&
                     kf_buf_alloc(&ts.resp, 4096, KF_APP_ANSWER_MAX, KF_BUF_SECRET) == KF_OK;
    for (;;) {
        struct epoll_event ev;
        atomic_fetch_add(&pool.idle, 1);
        int n = epoll_wait(pool.epfd, &ev, 1, POOL_IDLE_MS);
        unsigned idle = atomic_fetch_sub(&pool.idle, 1) - 1;
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0) {
            pthread_mutex_lock(&pool.mu);
            bool leave = n == 0 && pool.threads > POOL_THREADS_KEEP;
            if (leave)
                pool.threads--;
            pthread_mutex_unlock(&pool.mu);
            if (leave)
                break;
            continue;
        }
        if (idle == 0) { /* the last one listening takes work: someone must listen on */
            pthread_mutex_lock(&pool.mu);
            if (pool.threads < POOL_THREADS_MAX)
                pool_spawn();
            pthread_mutex_unlock(&pool.mu);
        }
        host_serve(ev.data.ptr, &ts, have_bufs);
    }
    kf_buf_free(&ts.body);
    kf_buf_free(&ts.resp);
    kf_wipe(&ts.r, sizeof(ts.r));
    kf_wipe(&ts.who, sizeof(ts.who));
    return NULL;
}

int kf_app_host_start(int fd, const struct kf_app_host_config *cfg, kf_app_host **out)
{
    KF_ENSURE(fd >= 0 && cfg && cfg->handle && cfg->on_closed && cfg->on_end && cfg->peers &&
                  out && cfg->max_inflight >= 1,
              KF_ERR_ARG);
    int rc = pool_init();
    kf_app_host *h = rc == KF_OK ? calloc(1, sizeof(*h)) : NULL;
    if (!h) {
        close(fd);
        return rc < 0 ? rc : KF_ERR_NOMEM;
    }
    h->fd = fd;
    h->cfg = *cfg;
    if (h->cfg.write_timeout_ms <= 0)
        h->cfg.write_timeout_ms = 10000;
    pthread_mutex_init(&h->wlock, NULL);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->changed, NULL);
    *out = h;
    return KF_OK;
}

int kf_app_host_settings(kf_app_host *h, const struct kf_app_settings *s)
{
    uint8_t mem[KF_APP_FRAME_LEN + KF_APP_SETTINGS_BODY_MAX];
    kf_buf msg;
    kf_buf_fixed(&msg, mem, sizeof(mem));
    KF_GUARD(kf_app_encode_settings(s, &msg));
    pthread_mutex_lock(&h->wlock);
    int rc = kf_app_write(h->fd, msg.data, msg.len, NULL, 0, h->cfg.write_timeout_ms);
    pthread_mutex_unlock(&h->wlock);
    /* Requests are taken from here on. */
    pthread_mutex_lock(&h->lock);
    if (rc == KF_OK)
        rc = host_arm(h, EPOLL_CTL_ADD);
    h->registered = rc == KF_OK;
    pthread_mutex_unlock(&h->lock);
    return rc;
}

unsigned kf_app_host_inflight(kf_app_host *h)
{
    pthread_mutex_lock(&h->lock);
    unsigned n = h->inflight;
    pthread_mutex_unlock(&h->lock);
    return n;
}

void kf_app_host_stop(kf_app_host *h)
{
    if (!h)
        return;
    /* No more requests (the armed channel wakes a thread that finds its end,
     * or the thread reading it does); the ones taken are still answered. */
    shutdown(h->fd, SHUT_RD);
    pthread_mutex_lock(&h->lock);
    if (!h->registered)
        h->retired = true; /* never armed: no thread knows it */
    while (!h->retired || h->inflight > 0)
        pthread_cond_wait(&h->changed, &h->lock);
    bool registered = h->registered;
    pthread_mutex_unlock(&h->lock);
    if (registered)
        (void)epoll_ctl(pool.epfd, EPOLL_CTL_DEL, h->fd, NULL);
    close(h->fd);
    pthread_mutex_destroy(&h->wlock);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->changed);
    free(h);
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
