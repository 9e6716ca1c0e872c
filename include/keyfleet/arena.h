/*
 * kf_arena: a bump allocator for everything one message needs.
 *
 * A decoded TTLV tree, its strings and byte strings all come from one arena,
 * so a whole message is freed (and wiped: byte strings may hold key material)
 * with one call, and no code has to free nodes one by one. The arena has a
 * hard byte cap, so a hostile message cannot make it grow without bound:
 * when the cap would be passed, kf_arena_alloc returns NULL.
 *
 *   kf_arena *a;
 *   if (kf_arena_new(&a, 0) < 0) ...        0 = KF_ARENA_DEFAULT_CAP
 *   p = kf_arena_alloc(a, n);               zeroed, 16-byte aligned, NULL when over cap
 *   kf_arena_free(a);                       wipes every chunk, then frees
 */
#ifndef KEYFLEET_ARENA_H
#define KEYFLEET_ARENA_H

#include <stddef.h>

#include "keyfleet/error.h"

#define KF_ARENA_DEFAULT_CAP ((size_t)16 * 1024 * 1024)

typedef struct kf_arena kf_arena;

/* cap: most bytes the arena may hand out in total (0 = KF_ARENA_DEFAULT_CAP). */
KF_RESULT int kf_arena_new(kf_arena **a, size_t cap);
/* Wipes and frees every chunk and the arena itself. NULL is fine. */
void kf_arena_free(kf_arena *a);
/* Wipes everything handed out so far and makes the arena empty again (keeps one chunk). */
void kf_arena_reset(kf_arena *a);

/* n zeroed bytes, aligned for any type; NULL if n would pass the cap or malloc fails. */
void *kf_arena_alloc(kf_arena *a, size_t n);
/* Copy of n bytes plus a terminating NUL (so text copies are C strings); NULL as above. */
void *kf_arena_memdup(kf_arena *a, const void *p, size_t n);

/* Bytes handed out so far (including alignment) and the cap. */
size_t kf_arena_used(const kf_arena *a);
size_t kf_arena_cap(const kf_arena *a);

#endif
