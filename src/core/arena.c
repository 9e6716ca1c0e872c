/*
 * Bump allocator with a hard cap. Chunks are malloc'ed (a message can be far
 * larger than what may be mlock'ed) and wiped before they are freed, because
 * decoded byte strings may carry key material.
 */
#include "keyfleet/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/secmem.h"

#define ARENA_ALIGN 16u
#define ARENA_MIN_CHUNK ((size_t)16 * 1024)

struct arena_chunk {
    struct arena_chunk *prev;
    size_t size; /* usable bytes after the header */
    size_t used;
    /* data follows, aligned: header size is a multiple of ARENA_ALIGN */
    _Alignas(16) unsigned char data[];
};

struct kf_arena {
    struct arena_chunk *top;
    size_t cap;
    size_t used; /* bytes handed out, counted against cap */
};

int kf_arena_new(kf_arena **a, size_t cap)
{
    KF_ENSURE(a != NULL, KF_ERR_ARG);
    *a = calloc(1, sizeof(**a));
    KF_ENSURE(*a != NULL, KF_ERR_NOMEM);
    (*a)->cap = cap ? cap : KF_ARENA_DEFAULT_CAP;
    return KF_OK;
}

static void chunk_free(struct arena_chunk *c)
{
    kf_wipe(c->data, c->used);
    free(c);
}

void kf_arena_free(kf_arena *a)
{
    if (!a)
        return;
    while (a->top) {
        struct arena_chunk *prev = a->top->prev;
        chunk_free(a->top);
        a->top = prev;
    }
    free(a);
}

void kf_arena_reset(kf_arena *a)
{
    if (!a)
        return;
    while (a->top && a->top->prev) {
        struct arena_chunk *prev = a->top->prev;
        chunk_free(a->top);
        a->top = prev;
    }
    if (a->top) {
        kf_wipe(a->top->data, a->top->used);
        a->top->used = 0;
    }
    a->used = 0;
}

static struct arena_chunk *chunk_new(size_t need)
{
    size_t size = need > ARENA_MIN_CHUNK ? need : ARENA_MIN_CHUNK;
    struct arena_chunk *c = malloc(sizeof(*c) + size);
    if (!c)
        return NULL;
    c->prev = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

void *kf_arena_alloc(kf_arena *a, size_t n)
{
    if (!a)
        return NULL;
    if (n == 0)
        n = 1;
    if (n > SIZE_MAX - ARENA_ALIGN)
        return NULL;
    size_t rounded = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (rounded > a->cap - a->used)
        return NULL;
    if (!a->top || a->top->size - a->top->used < rounded) {
        struct arena_chunk *c = chunk_new(rounded);
        if (!c)
            return NULL;
        c->prev = a->top;
        a->top = c;
    }
    void *p = a->top->data + a->top->used;
    a->top->used += rounded;
    a->used += rounded;
    memset(p, 0, rounded);
    return p;
}

void *kf_arena_memdup(kf_arena *a, const void *p, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    unsigned char *q = kf_arena_alloc(a, n + 1);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

size_t kf_arena_used(const kf_arena *a)
{
    return a ? a->used : 0;
}

size_t kf_arena_cap(const kf_arena *a)
{
    return a ? a->cap : 0;
}
