/*
 * Secure memory for live key material: page-aligned, mlock'ed, excluded
 * from core dumps (MADV_DONTDUMP), guard pages either side, wiped on free.
 * Constant-time helpers live here too: never memcmp a MAC, tag or key.
 */
#ifndef KEYFLEET_SECMEM_H
#define KEYFLEET_SECMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* NULL on failure (mmap, or mlock beyond RLIMIT_MEMLOCK). Memory is zeroed. */
void *kf_secmem_alloc(size_t n);
/* Wipes and unmaps; NULL is fine. n is not needed: the size is recorded. */
void kf_secmem_free(void *p);
/* Count of live secure allocations (tests check for leaks of key memory). */
size_t kf_secmem_live(void);

/* Wipe memory in a way the compiler may not elide. */
void kf_wipe(void *p, size_t n);
/* CT: time depends on n only, never on the contents. Returns true if equal. */
bool kf_ct_equal(const void *a, const void *b, size_t n);
/* CT: returns true if all n bytes are zero. */
bool kf_ct_is_zero(const void *a, size_t n);

/* Make the process non-dumpable and disable core files (daemon start). */
int kf_process_harden(void);

#endif
