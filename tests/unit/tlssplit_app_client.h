/*
 * A worker side of the application channel for tests of keyfleetd's side
 * (test_tlssplit_app.c): a thread per call, as the first KMIP worker processes
 * had it. The product's worker serves its connections from one event loop
 * (src/tlssplit/loop.c); this one lets a test hold many calls open at once
 * from plain threads and check what keyfleetd answers to each.
 */
#ifndef KF_TEST_TLSSPLIT_APP_CLIENT_H
#define KF_TEST_TLSSPLIT_APP_CLIENT_H

#include <pthread.h>
#include <string.h>
#include <sys/socket.h>

#include "keyfleet/secmem.h"
#include "tlssplit/app.h"

/* Called once, by the thread that finds the channel over: KF_ERR_IO or KF_ERR_SPLIT_APP. */
typedef void (*app_end_fn)(void *arg, int reason);
typedef struct app_client app_client;

/*
 * No reader thread: a connection thread waiting for its answer reads the
 * channel itself when nobody else does (leader/follower). It hands every
 * answer it reads to the thread waiting for it and keeps reading until its
 * own has come; then, if others still wait, it wakes one of them to read on.
 * With one request out, the asking thread reads its own answer: no thread
 * switch beyond the one the data arrival costs anyway.
 */
struct app_slot {
    pthread_cond_t cv;
    uint16_t gen; /* high half of the request ID: a stale answer does not fit */
    bool used;    /* taken by a connection */
    bool waiting; /* a request is out */
    bool done;    /* its answer (or failure) is in */
    int status;
    kf_buf *resp;
};

struct app_client {
    struct kf_app_reader rd; /* touched by the thread that reads (reading) only */
    pthread_mutex_t mu;      /* slots, reading, dead */
    pthread_mutex_t wlock;   /* one frame at a time on the channel */
    unsigned nslots, next;
    struct app_slot *slots;
    bool reading, dead;
    app_end_fn on_end;
    void *arg;
};

/* Under mu. */
static int deliver(app_client *c, const struct kf_app_response *r)
{
    unsigned i = r->id & 0xffffu;
    KF_ENSURE(i < c->nslots, KF_ERR_SPLIT_APP);
    struct app_slot *s = &c->slots[i];
    if (!s->waiting || s->done || s->gen != (uint16_t)(r->id >> 16))
        return KF_ERR_SPLIT_APP; /* an answer nobody asked for */
    s->status = r->status;
    if (r->status == KF_OK) {
        kf_buf_reset(s->resp);
        if (kf_buf_put_bytes(s->resp, r->msg, r->msg_len) < 0)
            s->status = KF_ERR_LIMIT;
    }
    s->done = true;
    pthread_cond_signal(&s->cv);
    return KF_OK;
}

/* The reader's turn (without mu): one frame (waiting for it), then every frame
 * already buffered, each delivered to its slot. */
static int lead(app_client *c)
{
    do {
        uint8_t type;
        kf_buf body;
        bool eof;
        struct kf_app_response r;
        int rc = kf_app_read(&c->rd, KF_APP_ALLOW(KF_APP_RESPONSE) | KF_APP_ALLOW(KF_APP_FAILED),
                             -1, &type, &body, &eof);
        if (rc == KF_OK)
            rc = kf_app_decode_response(type, &body, &r);
        if (rc < 0)
            return rc == KF_ERR_SPLIT_APP ? rc : KF_ERR_IO;
        pthread_mutex_lock(&c->mu);
        rc = deliver(c, &r);
        pthread_mutex_unlock(&c->mu);
        KF_GUARD(rc);
    } while (kf_app_reader_buffered(&c->rd));
    return KF_OK;
}

/* Under mu: the channel is over; every waiter hears it. */
static void client_dead(app_client *c)
{
    c->dead = true;
    for (unsigned i = 0; i < c->nslots; i++)
        pthread_cond_signal(&c->slots[i].cv);
}

/* Under mu, nobody reading: wake one waiter to read on. */
static void promote(app_client *c)
{
    for (unsigned k = 0; k < c->nslots; k++) {
        struct app_slot *s = &c->slots[(c->next + k) % c->nslots];
        if (s->waiting && !s->done) {
            c->next = (c->next + k + 1) % c->nslots;
            pthread_cond_signal(&s->cv);
            return;
        }
    }
}

static int app_client_start(struct kf_app_reader *rd, unsigned slots, app_end_fn on_end, void *arg,
                        app_client **out)
{
    KF_ENSURE(rd && rd->buf && out && slots >= 1 && slots <= KF_APP_SLOTS_MAX, KF_ERR_ARG);
    app_client *c = calloc(1, sizeof(*c));
    KF_ENSURE(c, KF_ERR_NOMEM);
    c->slots = calloc(slots, sizeof(*c->slots));
    if (!c->slots) {
        free(c);
        return KF_ERR_NOMEM;
    }
    c->nslots = slots;
    for (unsigned i = 0; i < slots; i++)
        pthread_cond_init(&c->slots[i].cv, NULL);
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->wlock, NULL);
    c->rd = *rd; /* ours from here on */
    memset(rd, 0, sizeof(*rd));
    c->on_end = on_end;
    c->arg = arg;
    *out = c;
    return KF_OK;
}

static int app_client_slot(app_client *c, unsigned *slot)
{
    int rc = KF_ERR_LIMIT;
    pthread_mutex_lock(&c->mu);
    for (unsigned i = 0; i < c->nslots; i++)
        if (!c->slots[i].used) {
            c->slots[i].used = true;
            *slot = i;
            rc = KF_OK;
            break;
        }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void app_client_release(app_client *c, unsigned slot)
{
    if (slot >= c->nslots)
        return;
    pthread_mutex_lock(&c->mu);
    c->slots[slot].used = false;
    pthread_mutex_unlock(&c->mu);
}

static int app_client_call(app_client *c, unsigned slot, const uint8_t conn[KF_APP_CONN_ID_LEN],
                       const uint8_t *req, size_t len, kf_buf *resp)
{
    KF_ENSURE(c && slot < c->nslots && conn && req && resp, KF_ERR_ARG);
    struct app_slot *s = &c->slots[slot];
    /* Ask before sending: the answer may be read by another thread before the writer returns. */
    pthread_mutex_lock(&c->mu);
    if (c->dead) {
        pthread_mutex_unlock(&c->mu);
        return KF_ERR_SPLIT_APP;
    }
    s->gen++;
    uint32_t id = ((uint32_t)s->gen << 16) | slot;
    s->waiting = true;
    s->done = false;
    s->resp = resp;
    pthread_mutex_unlock(&c->mu);

    struct kf_app_request r = {.id = id, .msg = req, .msg_len = len};
    memcpy(r.conn, conn, sizeof(r.conn));
    uint8_t head[KF_APP_REQUEST_HEAD_MAX];
    kf_buf h;
    kf_buf_fixed(&h, head, sizeof(head));
    int rc = kf_app_encode_request_head(&r, &h);
    int ended = KF_OK; /* set when this thread found the channel over */
    if (rc == KF_OK) {
        pthread_mutex_lock(&c->wlock);
        if (kf_app_write(c->rd.fd, h.data, h.len, req, len, -1) < 0)
            rc = ended = KF_ERR_IO;
        pthread_mutex_unlock(&c->wlock);
    }
    pthread_mutex_lock(&c->mu);
    if (ended < 0) {
        rc = KF_ERR_SPLIT_APP;
        if (c->dead)
            ended = KF_OK; /* somebody else found it first and said so */
        else
            client_dead(c);
    }
    while (rc == KF_OK && !s->done && !c->dead) {
        if (c->reading) {
            pthread_cond_wait(&s->cv, &c->mu);
            continue;
        }
        c->reading = true;
        pthread_mutex_unlock(&c->mu);
        int lrc = lead(c);
        pthread_mutex_lock(&c->mu);
        c->reading = false;
        if (lrc < 0) {
            client_dead(c);
            ended = lrc;
        }
    }
    if (rc == KF_OK)
        rc = s->done ? s->status : KF_ERR_SPLIT_APP;
    s->waiting = false;
    s->resp = NULL;
    if (!c->reading && !c->dead)
        promote(c);
    pthread_mutex_unlock(&c->mu);
    if (ended < 0 && c->on_end)
        c->on_end(c->arg, ended);
    return rc;
}

static int app_client_closed(app_client *c)
{
    uint8_t mem[KF_APP_FRAME_LEN];
    kf_buf msg;
    kf_buf_fixed(&msg, mem, sizeof(mem));
    KF_GUARD(kf_app_encode_closed(&msg));
    pthread_mutex_lock(&c->wlock);
    int rc = kf_app_write(c->rd.fd, msg.data, msg.len, NULL, 0, -1);
    pthread_mutex_unlock(&c->wlock);
    return rc;
}

static void app_client_stop(app_client *c)
{
    if (!c)
        return;
    close(c->rd.fd);
    kf_app_reader_free(&c->rd);
    for (unsigned i = 0; i < c->nslots; i++)
        pthread_cond_destroy(&c->slots[i].cv);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->wlock);
    free(c->slots);
    free(c);
}

#endif
