/*
 * The KMIP worker process's event loop (loop.h).
 *
 * Why: a request relayed by a thread per connection cost the worker two
 * thread wake-ups (the peer's bytes, then keyfleetd's answer) and keyfleetd
 * one more, each a trip through the scheduler that the monolithic endpoint
 * does not make; with KMIP Gets that was a quarter of the throughput. Here
 * one thread waits on every connection of the process and on the channel:
 * what one wake-up finds ready -- requests of many connections, answers of
 * many -- is done in one go, and the requests go out in one write (which
 * keyfleetd answers as one batch).
 *
 * A connection is either the loop's (reading a request, or waiting for its
 * answer) or its own thread's. The loop hands it back to that thread when
 * the next step would wait: a record for the session handler (KeyUpdate,
 * alert, close_notify), a refusal that ends in an alert, an answer the peer
 * does not take at once, the end. The thread does that step with the
 * blocking calls (conn.c), then gives the connection back to the loop. A
 * connection's fields belong to whoever holds it; the hand-over goes through
 * the loop's queue (under its mutex) one way and the connection's semaphore
 * the other.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "keyfleet/ttlv.h"
#include "loop.h"
#include "tlssplit_internal.h"

#define LOOP_EVENTS 64
#define LOOP_TICK_MS 250 /* time-outs are checked this often */
#define LOOP_IOV_MAX 512 /* iovecs per write of requests */

enum lstate { L_FREE, L_THREAD, L_READING, L_ASKED };
/* What the connection's thread is to do when the loop hands it back. */
enum lback { BACK_READ = 1, BACK_WRITE, BACK_END, BACK_FAILED };
/* What a thread asks of the loop. */
enum lop { OP_ADOPT = 1, OP_ASK };

struct lconn {
    bool used;          /* the slot is taken (under the loop's mu) */
    _Atomic enum lstate state; /* set by whoever holds the connection; read by the loop */
    kf_tlssplit_conn *c;
    const char *peer;
    uint8_t id[KF_APP_CONN_ID_LEN];
    uint16_t gen; /* high half of the request ID: a stale answer does not fit */
    kf_buf req;   /* the request being read (secure memory) */
    size_t have;  /* bytes of it received */
    bool sized;   /* its length is known (req.len is all of it) */
    kf_buf rest;  /* the part of an answer the loop could not write (secure memory) */
    uint8_t head[KF_APP_REQUEST_HEAD_MAX];
    size_t head_len;
    bool registered; /* its socket is in the epoll set */
    int64_t deadline;
    /* hand-over */
    sem_t wake;
    enum lback back;
    int back_rc;
    enum lop op;
    struct lconn *next; /* in the loop's queue */
};

struct kf_app_loop {
    struct kf_app_reader rd; /* the channel: the loop thread only */
    struct kf_app_settings set;
    kf_app_loop_end_fn on_end;
    void *arg;
    int ep;
    int wake[2]; /* a byte: the queue has something */
    pthread_mutex_t mu; /* slots' used, queue, closed, dead */
    struct lconn *slots;
    unsigned nslots;
    struct lconn *queue;
    unsigned closed; /* CLOSED frames to send */
    bool dead;
    bool woken; /* a byte is in the pipe */
    /* the loop thread's */
    struct lconn **asking;
    unsigned nasking;
};

/* epoll tags for the loop's own descriptors (connections are tagged with their lconn) */
static char tag_channel, tag_wake;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- a request, read by the loop (nb) or by the connection's thread -------------- */

static void request_reset(struct lconn *lc)
{
    kf_buf_reset(&lc->req); /* wipes */
    lc->have = 0;
    lc->sized = false;
}

/* Read on until the request is complete (KF_OK), or what recv_nb said. */
static int request_read(kf_app_loop *l, struct lconn *lc, bool nb)
{
    struct kf_ttlv_limits lim = {.max_total = KF_TLS_MESSAGE_MAX};
    uint8_t *p;
    for (;;) {
        if (lc->req.len == 0)
            KF_GUARD(kf_buf_put_space(&lc->req, KF_TTLV_HEADER_LEN, &p));
        if (lc->have == lc->req.len) {
            if (lc->sized)
                return KF_OK;
            size_t total;
            KF_GUARD(kf_ttlv_message_length(lc->req.data, &lim, &total));
            KF_ENSURE(total >= KF_TTLV_HEADER_LEN && total <= KF_TLS_MESSAGE_MAX, KF_ERR_LIMIT);
            lc->sized = true;
            if (total > KF_TTLV_HEADER_LEN)
                KF_GUARD(kf_buf_put_space(&lc->req, total - KF_TTLV_HEADER_LEN, &p));
            continue;
        }
        size_t got;
        int rc = nb ? kf_tlssplit_recv_nb(lc->c, lc->req.data + lc->have, lc->req.len - lc->have, &got)
                    : kf_tlssplit_recv(lc->c, lc->req.data + lc->have, lc->req.len - lc->have,
                                       (int)(lc->have ? l->set.message_ms : l->set.idle_ms), &got);
        if (rc != KF_OK)
            return rc;
        if (nb)
            lc->deadline = now_ms() + (int64_t)l->set.message_ms; /* a request under way */
        lc->have += got;
    }
}

/* ---- the loop thread ------------------------------------------------------------------ */

static void back_to_thread(kf_app_loop *l, struct lconn *lc, enum lback why, int rc)
{
    if (lc->registered) {
        (void)epoll_ctl(l->ep, EPOLL_CTL_DEL, kf_tlssplit_fd(lc->c), NULL);
        lc->registered = false;
    }
    lc->state = L_THREAD;
    lc->back = why;
    lc->back_rc = rc;
    sem_post(&lc->wake);
}

static void arm(kf_app_loop *l, struct lconn *lc)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = lc};
    int fd = kf_tlssplit_fd(lc->c);
    if (epoll_ctl(l->ep, lc->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) == 0)
        lc->registered = true;
    else
        back_to_thread(l, lc, BACK_END, KF_ERR_IO);
}

/* The request is complete: it goes out with this round's others. */
static void ask(kf_app_loop *l, struct lconn *lc)
{
    unsigned slot = (unsigned)(lc - l->slots);
    lc->gen++;
    struct kf_app_request r = {.id = ((uint32_t)lc->gen << 16) | slot,
                               .msg = lc->req.data,
                               .msg_len = lc->req.len};
    memcpy(r.conn, lc->id, sizeof(r.conn));
    kf_buf h;
    kf_buf_fixed(&h, lc->head, sizeof(lc->head));
    if (kf_app_encode_request_head(&r, &h) < 0) {
        back_to_thread(l, lc, BACK_END, KF_ERR_LIMIT);
        return;
    }
    lc->head_len = h.len;
    lc->state = L_ASKED;
    l->asking[l->nasking++] = lc;
}

/* The connection is the loop's and reading: read on without waiting. */
static void reading(kf_app_loop *l, struct lconn *lc)
{
    int rc = request_read(l, lc, true);
    if (rc == KF_OK)
        ask(l, lc);
    else if (rc == KF_TLSSPLIT_AGAIN)
        arm(l, lc);
    else if (rc == KF_TLSSPLIT_BLOCKS)
        back_to_thread(l, lc, BACK_READ, KF_OK);
    else
        back_to_thread(l, lc, BACK_END, rc);
}

static void adopt(kf_app_loop *l, struct lconn *lc)
{
    lc->state = L_READING;
    if (lc->have == 0)
        lc->deadline = now_ms() + (int64_t)l->set.idle_ms;
    reading(l, lc);
}

/* Under mu: the channel is over; every connection the loop holds ends. */
static void loop_dead(kf_app_loop *l)
{
    l->dead = true;
    for (unsigned i = 0; i < l->nslots; i++) {
        struct lconn *lc = &l->slots[i];
        if (lc->state == L_READING || lc->state == L_ASKED)
            back_to_thread(l, lc, BACK_END, KF_ERR_IO);
    }
    l->nasking = 0;
}

static void channel_over(kf_app_loop *l, int reason)
{
    pthread_mutex_lock(&l->mu);
    bool was = l->dead;
    loop_dead(l);
    pthread_mutex_unlock(&l->mu);
    (void)epoll_ctl(l->ep, EPOLL_CTL_DEL, l->rd.fd, NULL);
    if (!was && l->on_end)
        l->on_end(l->arg, reason);
}

/* Every request complete this round, and the CLOSED frames owed, in as few writes as possible. */
static void flush(kf_app_loop *l)
{
    static const uint8_t closed_frame[KF_APP_FRAME_LEN] = {KF_APP_VERSION, KF_APP_CLOSED, 0, 0, 0, 0, 0, 0};
    pthread_mutex_lock(&l->mu);
    unsigned closed = l->closed;
    l->closed = 0;
    bool dead = l->dead;
    pthread_mutex_unlock(&l->mu);
    if (dead)
        return;
    struct iovec iov[LOOP_IOV_MAX];
    unsigned next = 0;
    while (next < l->nasking || closed) {
        size_t n = 0;
        while (closed && n < LOOP_IOV_MAX) {
            iov[n++] = (struct iovec){.iov_base = (void *)closed_frame, .iov_len = sizeof(closed_frame)};
            closed--;
        }
        while (next < l->nasking && n + 2 <= LOOP_IOV_MAX) {
            struct lconn *lc = l->asking[next++];
            iov[n++] = (struct iovec){.iov_base = lc->head, .iov_len = lc->head_len};
            iov[n++] = (struct iovec){.iov_base = lc->req.data, .iov_len = lc->req.len};
        }
        if (kf_app_writev(l->rd.fd, iov, n, (int)l->set.message_ms) < 0) {
            channel_over(l, KF_ERR_IO);
            return;
        }
    }
    /* Sent: the plaintext goes (the answer is read into the reader's buffer). */
    for (unsigned i = 0; i < l->nasking; i++)
        request_reset(l->asking[i]);
    l->nasking = 0;
}

/* An answer for lc: sealed into its socket, then on to the next request. */
static void answer(kf_app_loop *l, struct lconn *lc, const uint8_t *msg, size_t len)
{
    size_t done = 0;
    int rc = kf_tlssplit_send_nb(lc->c, msg, len, &done);
    if (rc == KF_OK) {
        adopt(l, lc);
        return;
    }
    if (rc == KF_TLSSPLIT_AGAIN || rc == KF_TLSSPLIT_BLOCKS) {
        kf_buf_reset(&lc->rest);
        rc = kf_buf_put_bytes(&lc->rest, msg + done, len - done);
        if (rc == KF_OK) {
            back_to_thread(l, lc, BACK_WRITE, KF_OK);
            return;
        }
    }
    back_to_thread(l, lc, BACK_FAILED, rc);
}

/* The channel is readable: every answer that has come. */
static void answers(kf_app_loop *l)
{
    do {
        uint8_t type;
        kf_buf body;
        bool eof;
        struct kf_app_response r;
        int rc = kf_app_read(&l->rd, KF_APP_ALLOW(KF_APP_RESPONSE) | KF_APP_ALLOW(KF_APP_FAILED),
                             (int)l->set.message_ms, &type, &body, &eof);
        if (rc == KF_OK)
            rc = kf_app_decode_response(type, &body, &r);
        struct lconn *lc = NULL;
        if (rc == KF_OK) {
            unsigned slot = r.id & 0xffffu;
            lc = slot < l->nslots ? &l->slots[slot] : NULL;
            if (!lc || lc->state != L_ASKED || lc->gen != (uint16_t)(r.id >> 16))
                rc = KF_ERR_SPLIT_APP; /* an answer nobody asked for */
        }
        if (rc < 0) {
            channel_over(l, rc == KF_ERR_SPLIT_APP ? rc : KF_ERR_IO);
            return;
        }
        if (r.status == KF_OK)
            answer(l, lc, r.msg, r.msg_len);
        else
            back_to_thread(l, lc, BACK_FAILED, r.status);
    } while (kf_app_reader_buffered(&l->rd));
}

/* What the connections' threads asked for. */
static void take_queue(kf_app_loop *l)
{
    char buf[64];
    while (read(l->wake[0], buf, sizeof(buf)) > 0)
        ;
    pthread_mutex_lock(&l->mu);
    struct lconn *q = l->queue;
    l->queue = NULL;
    l->woken = false;
    bool dead = l->dead;
    pthread_mutex_unlock(&l->mu);
    /* The queue is LIFO; the order between connections does not matter. */
    while (q) {
        struct lconn *lc = q;
        q = q->next;
        if (dead)
            back_to_thread(l, lc, BACK_END, KF_ERR_IO);
        else if (lc->op == OP_ASK)
            ask(l, lc);
        else
            adopt(l, lc);
    }
}

static void time_outs(kf_app_loop *l)
{
    int64_t now = now_ms();
    for (unsigned i = 0; i < l->nslots; i++) {
        struct lconn *lc = &l->slots[i];
        if (lc->state == L_READING && now >= lc->deadline)
            back_to_thread(l, lc, BACK_END, KF_ERR_TIMEOUT);
    }
}

static void *loop_thread(void *arg)
{
    kf_app_loop *l = arg;
    int64_t tick = now_ms() + LOOP_TICK_MS;
    for (;;) {
        struct epoll_event ev[LOOP_EVENTS];
        int n = epoll_wait(l->ep, ev, LOOP_EVENTS, LOOP_TICK_MS);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++) {
            void *tag = ev[i].data.ptr;
            if (tag == &tag_wake)
                take_queue(l);
            else if (tag == &tag_channel) {
                if (ev[i].events & EPOLLIN)
                    answers(l);
                else
                    channel_over(l, KF_ERR_IO);
            } else {
                struct lconn *lc = tag;
                if (lc->state == L_READING)
                    reading(l, lc);
            }
        }
        flush(l);
        if (now_ms() >= tick) {
            time_outs(l);
            tick = now_ms() + LOOP_TICK_MS;
        }
    }
    kf_error("TLS split worker: the event loop stopped: %s", strerror(errno));
    channel_over(l, KF_ERR_IO);
    return NULL;
}

/* ---- public ----------------------------------------------------------------------- */

int kf_app_loop_new(struct kf_app_reader *rd, const struct kf_app_settings *set,
                    kf_app_loop_end_fn on_end, void *arg, kf_app_loop **out)
{
    KF_ENSURE(rd && rd->buf && set && out && set->max_connections >= 1 &&
                  set->max_connections <= KF_APP_SLOTS_MAX,
              KF_ERR_ARG);
    kf_app_loop *l = calloc(1, sizeof(*l));
    KF_ENSURE(l, KF_ERR_NOMEM);
    l->ep = l->wake[0] = l->wake[1] = -1;
    l->nslots = set->max_connections;
    l->slots = calloc(l->nslots, sizeof(*l->slots));
    l->asking = calloc(l->nslots, sizeof(*l->asking));
    int rc = l->slots && l->asking ? KF_OK : KF_ERR_NOMEM;
    if (rc == KF_OK && ((l->ep = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
                        pipe2(l->wake, O_CLOEXEC | O_NONBLOCK) != 0))
        rc = KF_ERR_IO;
    struct epoll_event ch = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = &tag_channel};
    struct epoll_event wk = {.events = EPOLLIN, .data.ptr = &tag_wake};
    if (rc == KF_OK && (epoll_ctl(l->ep, EPOLL_CTL_ADD, rd->fd, &ch) != 0 ||
                        epoll_ctl(l->ep, EPOLL_CTL_ADD, l->wake[0], &wk) != 0))
        rc = KF_ERR_IO;
    if (rc < 0) {
        if (l->ep >= 0)
            close(l->ep);
        for (int i = 0; i < 2; i++)
            if (l->wake[i] >= 0)
                close(l->wake[i]);
        free(l->slots);
        free(l->asking);
        free(l);
        return rc;
    }
    for (unsigned i = 0; i < l->nslots; i++)
        sem_init(&l->slots[i].wake, 0, 0);
    pthread_mutex_init(&l->mu, NULL);
    l->rd = *rd; /* ours from here on */
    memset(rd, 0, sizeof(*rd));
    l->set = *set;
    l->on_end = on_end;
    l->arg = arg;
    *out = l;
    return KF_OK;
}

int kf_app_loop_run(kf_app_loop *l)
{
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, loop_thread, l) == 0 ? KF_OK : KF_ERR_NOMEM;
    pthread_attr_destroy(&attr);
    return rc;
}

/* From a connection's thread: the loop takes lc over. */
static void post(kf_app_loop *l, struct lconn *lc, enum lop op)
{
    pthread_mutex_lock(&l->mu);
    lc->op = op;
    bool dead = l->dead;
    if (!dead) {
        lc->next = l->queue;
        l->queue = lc;
    }
    bool wake = !dead && !l->woken;
    l->woken = l->woken || wake;
    pthread_mutex_unlock(&l->mu);
    if (dead) {
        lc->back = BACK_END;
        lc->back_rc = KF_ERR_IO;
        sem_post(&lc->wake);
    } else if (wake && write(l->wake[1], "x", 1) != 1) {
        /* The pipe is full, so the loop has a byte to wake for already. */
    }
}

static void serve_conn(kf_app_loop *l, struct lconn *lc)
{
    enum lop op = OP_ADOPT;
    for (;;) {
        post(l, lc, op);
        while (sem_wait(&lc->wake) != 0)
            ; /* EINTR */
        int rc = lc->back_rc;
        switch (lc->back) {
        case BACK_READ: /* a record for the handler, or a refusal: read on here */
            rc = request_read(l, lc, false);
            if (rc == KF_OK) {
                op = OP_ASK;
                continue;
            }
            break;
        case BACK_WRITE: /* the peer did not take the whole answer at once */
            rc = kf_tlssplit_send(lc->c, lc->rest.data, lc->rest.len, (int)l->set.message_ms);
            kf_buf_reset(&lc->rest);
            if (rc == KF_OK) {
                op = OP_ADOPT;
                continue;
            }
            kf_warn("TLS split %s: cannot answer: %s", lc->peer, kf_strerror(rc));
            return;
        case BACK_FAILED:
            kf_warn("TLS split %s: cannot answer: %s", lc->peer, kf_strerror(rc));
            return;
        case BACK_END:
            break;
        }
        int why = kf_tlssplit_end_reason(lc->c);
        if (!(rc == KF_ERR_IO && why == KF_OK))
            kf_info("TLS split %s closed: %s", lc->peer, kf_strerror(why < 0 ? why : rc));
        return;
    }
}

int kf_app_loop_serve(kf_app_loop *l, kf_tlssplit_conn *c, const char *peer)
{
    KF_ENSURE(l && c, KF_ERR_ARG);
    struct lconn *lc = NULL;
    pthread_mutex_lock(&l->mu);
    for (unsigned i = 0; i < l->nslots && !lc; i++)
        if (!l->slots[i].used) {
            lc = &l->slots[i];
            lc->used = true;
            lc->state = L_THREAD;
        }
    pthread_mutex_unlock(&l->mu);
    KF_ENSURE(lc, KF_ERR_LIMIT);
    int rc = KF_OK;
    /* keyfleetd knows the principal under this ID from the handler; we never see it. */
    if (!kf_tlssplit_conn_id(c, lc->id)) {
        kf_error("TLS split %s: the session handler gave no connection ID", peer);
        rc = KF_ERR_SPLIT_HANDLER;
    } else if (kf_buf_alloc(&lc->req, 4096, KF_TLS_MESSAGE_MAX, KF_BUF_SECRET) < 0 ||
               kf_buf_alloc(&lc->rest, 4096, KF_APP_ANSWER_MAX, KF_BUF_SECRET) < 0) {
        kf_error("TLS split %s: no secure memory for buffers", peer);
        rc = KF_ERR_SECMEM;
    }
    if (rc == KF_OK) {
        lc->c = c;
        lc->peer = peer;
        lc->have = 0;
        lc->sized = false;
        serve_conn(l, lc);
    }
    kf_buf_free(&lc->req);
    kf_buf_free(&lc->rest);
    kf_wipe(lc->head, sizeof(lc->head));
    lc->c = NULL;
    lc->peer = NULL;
    lc->state = L_FREE;
    pthread_mutex_lock(&l->mu);
    lc->used = false;
    pthread_mutex_unlock(&l->mu);
    return KF_OK;
}

int kf_app_loop_closed(kf_app_loop *l)
{
    pthread_mutex_lock(&l->mu);
    bool dead = l->dead;
    if (!dead)
        l->closed++;
    bool wake = !dead && !l->woken;
    l->woken = l->woken || wake;
    pthread_mutex_unlock(&l->mu);
    if (wake && write(l->wake[1], "x", 1) != 1) {
        /* full: the loop will wake anyway */
    }
    return dead ? KF_ERR_IO : KF_OK;
}

bool kf_app_loop_alive(kf_app_loop *l)
{
    if (!l)
        return false;
    pthread_mutex_lock(&l->mu);
    bool alive = !l->dead;
    pthread_mutex_unlock(&l->mu);
    return alive;
}
