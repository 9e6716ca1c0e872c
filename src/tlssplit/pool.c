/*
 * Threads that outlive their connection. Each connection (a session in the
 * handler, a connection in a worker or in keyfleetd) runs on one thread for
 * its whole life; creating and tearing down a thread per connection costs a
 * clone, a stack mapping and TLB shootdowns across cores, which is a fifth of
 * a resumed handshake's CPU time. A finished thread waits up to 30 s for the
 * next connection instead (at most POOL_IDLE_MAX of them wait).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "tlssplit_internal.h"

#define POOL_IDLE_MAX 64
#define POOL_IDLE_SECONDS 30

struct pool_thread {
    pthread_cond_t wake;
    void (*fn)(void *);
    void *arg;
    struct pool_thread *next; /* on the idle stack */
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool_thread *idle;
static unsigned nidle;

/* Remove t from the idle stack (it timed out). */
static void unlink_idle(struct pool_thread *t)
{
    for (struct pool_thread **p = &idle; *p; p = &(*p)->next)
        if (*p == t) {
            *p = t->next;
            nidle--;
            return;
        }
}

static void *pool_main(void *arg)
{
    struct pool_thread *t = arg;
    for (;;) {
        t->fn(t->arg);
        pthread_mutex_lock(&pool_lock);
        t->fn = NULL;
        if (nidle >= POOL_IDLE_MAX) {
            pthread_mutex_unlock(&pool_lock);
            break;
        }
        t->next = idle;
        idle = t;
        nidle++;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += POOL_IDLE_SECONDS;
        int rc = 0;
        while (!t->fn && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&t->wake, &pool_lock, &until);
        if (!t->fn) {
            unlink_idle(t);
            pthread_mutex_unlock(&pool_lock);
            break;
        }
        pthread_mutex_unlock(&pool_lock);
    }
    pthread_cond_destroy(&t->wake);
    free(t);
    return NULL;
}

/* A forked child has none of the parent's threads: forget them (and a lock
 * some other thread may have held at the fork). */
static void pool_atfork_child(void)
{
    pthread_mutex_init(&pool_lock, NULL);
    idle = NULL;
    nidle = 0;
}

static void pool_init(void)
{
    pthread_atfork(NULL, NULL, pool_atfork_child);
}

int kf_tlssplit_pool_run(void (*fn)(void *), void *arg)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, pool_init);
    pthread_mutex_lock(&pool_lock);
    struct pool_thread *t = idle;
    if (t) {
        idle = t->next;
        nidle--;
        t->fn = fn;
        t->arg = arg;
        pthread_cond_signal(&t->wake);
        pthread_mutex_unlock(&pool_lock);
        return KF_OK;
    }
    pthread_mutex_unlock(&pool_lock);
    t = calloc(1, sizeof(*t));
    KF_ENSURE(t, KF_ERR_NOMEM);
    pthread_cond_init(&t->wake, NULL);
    t->fn = fn;
    t->arg = arg;
    pthread_t id;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&id, &attr, pool_main, t);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_cond_destroy(&t->wake);
        free(t);
        return KF_ERR_NOMEM;
    }
    return KF_OK;
}
