/*
 * keyfleetd's end of the application channel (app.h; docs/tls-split.md,
 * "Application channel"): the peers table -- the principals, by connection
 * ID, from each session handler -- and the pool of threads that takes the
 * KMIP worker processes' requests and answers them. The codec and the
 * stream transport are in app.c, the worker's side in worker.c.
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
#include <unistd.h>

#include "app.h"
#include "channel.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"

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
 * the set wakes reads the first frame and then every further complete frame
 * already in the socket (a worker writes the requests of many connections
 * back to back), up to KF_APP_BATCH_MAX requests or KF_APP_BATCH_BYTES of
 * them; it re-arms the channel -- so the worker's next requests wake another
 * thread -- and answers the batch itself: batch_begin, each request, batch_end
 * (keyfleetd: the KMS defers the batch's read/use audit records and commits
 * them as one job at batch_end), then every answer in one write. So a batch
 * costs one wake-up, one audit commit and one write, where one request each
 * cost all three; the requests of a batch are handled one after the other
 * (a slow one delays the others of its batch, never a later batch), and
 * the batches of one worker run side by side on as many threads. (Answering
 * on the thread that holds the channel, re-arming only when it is empty,
 * saved the wake-ups too but serialised everything a worker sent: measured
 * 15 % fewer Get/s, because the audit batches shrank. With deferral one
 * batch's records are one job however they arrive.) Whenever the last idle
 * thread takes work, another is started (up to POOL_THREADS_MAX); threads
 * idle for POOL_IDLE_MS end, down to POOL_THREADS_KEEP.
 */
#define POOL_THREADS_MAX 256u
#define POOL_THREADS_KEEP 2u
#define POOL_IDLE_MS 30000

struct kf_app_host {
    int fd;
    struct kf_app_host_config cfg;
    pthread_mutex_t wlock; /* one writer at a time on the channel */
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

/* One request of a batch: its ID, and where its REQUEST body is in the thread's bodies. */
struct batch_request {
    uint32_t id;
    size_t at, len;
};

/* The largest answer head: a FAILED frame (a RESPONSE's head is shorter). */
#define ANSWER_HEAD_MAX (KF_APP_FRAME_LEN + 8)
/* What a pool thread's answer buffer starts with: a batch's FAILED frames fit
 * in it without growing (host_flush, when batch_end fails). */
#define OUT_INITIAL 4096
_Static_assert(ANSWER_HEAD_MAX * KF_APP_BATCH_MAX <= OUT_INITIAL, "FAILED frames of a batch");

/*
 * What a pool thread keeps between batches. Secure memory, wiped after each
 * batch: the requests' bodies back to back (at most KF_APP_BATCH_BYTES, plus
 * the one frame that crossed it), the answer being made (resp, up to
 * KF_APP_ANSWER_MAX), and the answer frames held for the batch's one write
 * (out, at most KF_APP_BATCH_ANSWER_BYTES: an answer that would not fit is
 * written, with those held, at once -- after batch_end).
 */
struct pool_thread_state {
    kf_buf bodies, resp, out;
    struct batch_request req[KF_APP_BATCH_MAX];
    size_t n; /* requests in the batch */
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
    pthread_mutex_unlock(&h->lock);
    /* The owner hears it before kf_app_host_stop can return: after that, owner
     * (and h) may be gone. */
    on_end(owner, reason);
    pthread_mutex_lock(&h->lock);
    h->retired = true;
    pthread_cond_broadcast(&h->changed);
    pthread_mutex_unlock(&h->lock);
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

/* n requests are done with (answered, or dropped). Once the last is, h may be
 * gone unless this thread is the one that retires it. */
static void host_release(kf_app_host *h, size_t n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&h->lock);
    h->inflight -= (unsigned)n;
    pthread_cond_broadcast(&h->changed);
    pthread_mutex_unlock(&h->lock);
}

/*
 * The frames of h the epoll set woke us for: the first one, then every
 * complete one already buffered, up to KF_APP_BATCH_MAX requests and
 * KF_APP_BATCH_BYTES of them (a frame that has started is read to its end,
 * within the time-out). CLOSED frames are taken care of here. KF_OK with
 * ts->n requests (0: nothing there, or only CLOSED), or the reason the channel
 * is over -- with the requests taken before it still in ts (counted in
 * flight).
 */
static int host_read_batch(kf_app_host *h, struct pool_thread_state *ts, bool have_bufs)
{
    ts->n = 0;
    kf_buf_reset(&ts->bodies);
    while (ts->n < KF_APP_BATCH_MAX && ts->bodies.len < KF_APP_BATCH_BYTES) {
        uint8_t hdr[KF_APP_FRAME_LEN], type;
        uint32_t len;
        int rc = recv_exact(h->fd, hdr, sizeof(hdr), h->cfg.write_timeout_ms, true);
        if (rc == NOTHING_THERE)
            return KF_OK;
        if (rc != KF_OK)
            return rc == KF_ERR_TIMEOUT ? KF_ERR_SPLIT_APP : rc; /* a stalled frame head */
        KF_GUARD(kf_app_decode_header(
            hdr, KF_APP_ALLOW(KF_APP_REQUEST) | KF_APP_ALLOW(KF_APP_CLOSED), &type, &len));
        if (type == KF_APP_CLOSED) {
            KF_ENSURE(h->cfg.on_closed(h->cfg.owner), KF_ERR_SPLIT_APP);
            continue;
        }
        KF_ENSURE(have_bufs, KF_ERR_SECMEM);
        size_t at = ts->bodies.len;
        uint8_t *body;
        KF_GUARD(kf_buf_put_space(&ts->bodies, len, &body));
        rc = recv_exact(h->fd, body, len, h->cfg.write_timeout_ms, false);
        if (rc < 0)
            return rc == KF_ERR_TIMEOUT ? KF_ERR_SPLIT_APP : rc; /* a stalled frame */
        kf_buf b;
        struct kf_app_request r;
        kf_buf_reader(&b, body, len);
        KF_GUARD(kf_app_decode_request(&b, &r));
        KF_GUARD(host_take(h));
        ts->req[ts->n++] = (struct batch_request){.id = r.id, .at = at, .len = len};
        /* A request that waits for its own fdatasync ends the batch: the ones
         * after it go to another thread, beside it rather than behind it. */
        if (h->cfg.batchable && !h->cfg.batchable(h->cfg.handle_arg, r.msg, r.msg_len))
            break;
    }
    return KF_OK;
}

/* Request i of the batch, decoded again in place (its bytes were checked when read). */
static int batch_request(const struct pool_thread_state *ts, size_t i, struct kf_app_request *r)
{
    kf_buf all, body;
    kf_buf_reader(&all, ts->bodies.data, ts->bodies.len);
    KF_GUARD(kf_buf_skip(&all, ts->req[i].at));
    KF_GUARD(kf_buf_sub(&all, ts->req[i].len, &body));
    return kf_app_decode_request(&body, r);
}

/* Answer request i into ts->resp: KF_OK, or the reason it is answered FAILED. */
static int host_handle(kf_app_host *h, struct pool_thread_state *ts, size_t i)
{
    struct kf_app_request r;
    KF_GUARD(batch_request(ts, i, &r));
    /* The principal is the handler's word for this connection, never the worker's. */
    if (kf_app_peers_lookup(h->cfg.peers, r.conn, &ts->who) < 0) {
        kf_warn("TLS split: a KMIP worker process sent a request for an unknown connection "
                "ID: refused");
        return KF_ERR_SPLIT_APP;
    }
    int rc = h->cfg.handle(h->cfg.handle_arg, &ts->who, r.msg, r.msg_len, &ts->resp);
    return rc < 0 ? rc : KF_OK;
}

/* Append the head of an answer to head: RESPONSE for resp if status is KF_OK,
 * else FAILED(status). The status it goes out with: an empty or oversized
 * answer is FAILED(KF_ERR_LIMIT). */
static int answer_head(uint32_t id, int status, const kf_buf *resp, kf_buf *head)
{
    struct kf_app_response a = {.id = id, .status = status};
    if (status == KF_OK) {
        a.msg = resp->data;
        a.msg_len = resp->len;
    }
    size_t mark = head->len;
    if (kf_app_encode_response_head(&a, head) == KF_OK)
        return status;
    head->len = mark;
    a.status = KF_ERR_LIMIT;
    if (kf_app_encode_response_head(&a, head) < 0) /* a FAILED fits ANSWER_HEAD_MAX */
        head->len = mark;
    return KF_ERR_LIMIT;
}

/* Write iov (answer frames back to back) within the write time-out. */
static void host_write(kf_app_host *h, struct iovec *iov, size_t n)
{
    pthread_mutex_lock(&h->wlock);
    pthread_mutex_lock(&h->lock);
    bool broken = h->broken;
    pthread_mutex_unlock(&h->lock);
    int rc = broken ? KF_ERR_IO : kf_app_writev(h->fd, iov, n, h->cfg.write_timeout_ms);
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

static int batch_begin(kf_app_host *h)
{
    int rc = h->cfg.batch_begin ? h->cfg.batch_begin(h->cfg.handle_arg) : KF_OK;
    if (rc < 0)
        kf_error("TLS split: a batch of KMIP requests could not begin: %s", kf_strerror(rc));
    return rc;
}

/*
 * Requests from..last have been handled: the answers of from..last-1 are in
 * ts->out, the last one's is in ts->resp (status). End the batch (if it began)
 * and only then write them all, with one write -- each as FAILED(the reason)
 * if batch_end failed: nothing of a batch leaves unless batch_end allowed it.
 * Then the requests are released: h may be gone from then on, unless this
 * thread is the one that retires it.
 */
static void host_flush(kf_app_host *h, struct pool_thread_state *ts, size_t from, size_t last,
                       int status, bool begun)
{
    int end = begun && h->cfg.batch_end ? h->cfg.batch_end(h->cfg.handle_arg) : KF_OK;
    if (end < 0) {
        kf_error("TLS split: %zu KMIP requests answered FAILED: %s", last + 1 - from,
                 kf_strerror(end));
        kf_buf_reset(&ts->out); /* wipes the answers held */
        for (size_t i = from; i < last; i++)
            (void)answer_head(ts->req[i].id, end, NULL, &ts->out); /* fits: OUT_INITIAL */
        status = end;
    }
    uint8_t head_mem[ANSWER_HEAD_MAX];
    kf_buf head;
    kf_buf_fixed(&head, head_mem, sizeof(head_mem));
    status = answer_head(ts->req[last].id, status, &ts->resp, &head);
    struct iovec iov[3] = {
        {.iov_base = ts->out.data, .iov_len = ts->out.len},
        {.iov_base = head.data, .iov_len = head.len},
        {.iov_base = ts->resp.data, .iov_len = status == KF_OK ? ts->resp.len : 0},
    };
    host_write(h, iov, 3);
    kf_buf_reset(&ts->out); /* wipes the answers */
    kf_buf_reset(&ts->resp);
    host_release(h, last + 1 - from);
}

/*
 * Answer the batch in ts: batch_begin, each request, batch_end, then every
 * answer in one write. Answers of more than KF_APP_BATCH_ANSWER_BYTES end the
 * batch early: batch_end, the write of what is there, batch_begin for the
 * rest. If batch_begin fails, no request of that part is handled: each is
 * answered FAILED(its reason).
 */
static void host_answer_batch(kf_app_host *h, struct pool_thread_state *ts)
{
    size_t from = 0;
    int begun = batch_begin(h);
    for (size_t i = 0; i < ts->n; i++) {
        int status = begun < 0 ? begun : host_handle(h, ts, i);
        if (status != KF_OK)
            kf_buf_reset(&ts->resp);
        if (i + 1 < ts->n) {
            /* Held for the batch's write, if it fits. */
            uint8_t head_mem[ANSWER_HEAD_MAX];
            kf_buf head;
            kf_buf_fixed(&head, head_mem, sizeof(head_mem));
            int sent = answer_head(ts->req[i].id, status, &ts->resp, &head);
            size_t frame = head.len + (sent == KF_OK ? ts->resp.len : 0);
            if (ts->out.len + frame <= KF_APP_BATCH_ANSWER_BYTES &&
                kf_buf_reserve(&ts->out, frame) == KF_OK &&
                kf_buf_put_bytes(&ts->out, head.data, head.len) == KF_OK &&
                (sent != KF_OK ||
                 kf_buf_put_bytes(&ts->out, ts->resp.data, ts->resp.len) == KF_OK)) {
                kf_buf_reset(&ts->resp);
                continue;
            }
        }
        /* The last one, or one that does not fit: this part of the batch ends here. */
        host_flush(h, ts, from, i, status, begun == KF_OK);
        from = i + 1;
        if (from < ts->n)
            begun = batch_begin(h);
    }
}

/*
 * The epoll set woke us for h: read a batch, re-arm the channel for the next
 * one, answer the batch. A violation ends the channel without answering (the
 * worker is killed); the end of the stream ends it after the requests read
 * before it are answered (stopping keyfleetd's side still answers what is in
 * flight).
 */
static void host_serve(kf_app_host *h, struct pool_thread_state *ts, bool have_bufs)
{
    int rc = host_read_batch(h, ts, have_bufs);
    if (rc == KF_OK && host_arm(h, EPOLL_CTL_MOD) < 0)
        rc = KF_ERR_IO; /* nobody would read h again: end it here */
    if (rc == KF_ERR_SPLIT_APP || rc == KF_ERR_TIMEOUT) {
        host_release(h, ts->n); /* h stays: not retired yet */
        ts->n = 0;
    }
    if (ts->n)
        host_answer_batch(h, ts); /* once it is over, h may be gone unless rc < 0 */
    kf_buf_reset(&ts->bodies); /* wipes the requests */
    ts->n = 0;
    /* A malformed or stalled frame is the worker's fault; the end of the stream,
     * or keyfleetd out of memory, is not. */
    if (rc < 0)
        host_end(h, rc == KF_ERR_SPLIT_APP || rc == KF_ERR_TIMEOUT ? KF_ERR_SPLIT_APP : KF_ERR_IO);
}

static void *pool_thread(void *arg)
{
    (void)arg;
    struct pool_thread_state ts = {0};
    bool have_bufs =
        kf_buf_alloc(&ts.bodies, 4096, KF_APP_BATCH_BYTES + KF_APP_REQUEST_BODY_MAX,
                     KF_BUF_SECRET) == KF_OK &&
        kf_buf_alloc(&ts.resp, 4096, KF_APP_ANSWER_MAX, KF_BUF_SECRET) == KF_OK &&
        kf_buf_alloc(&ts.out, OUT_INITIAL, KF_APP_BATCH_ANSWER_BYTES, KF_BUF_SECRET) == KF_OK;
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
    kf_buf_free(&ts.bodies);
    kf_buf_free(&ts.resp);
    kf_buf_free(&ts.out);
    kf_wipe(&ts.who, sizeof(ts.who));
    return NULL;
}

int kf_app_host_start(int fd, const struct kf_app_host_config *cfg, kf_app_host **out)
{
    KF_ENSURE(fd >= 0 && cfg && cfg->handle && cfg->on_closed && cfg->on_end && cfg->peers &&
                  out && cfg->max_inflight >= 1 && !cfg->batch_begin == !cfg->batch_end,
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
