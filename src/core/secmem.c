/*
 * Secure allocations: [guard page][header page + data pages][guard page].
 * The header records the mapping size so kf_secmem_free needs only the pointer.
 */
#include "keyfleet/secmem.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

static atomic_size_t live_allocations;

/*
 * Freed mappings are kept, wiped, for reuse: mmap + mlock + munmap on every
 * request costs TLB-shootdown IPIs and mmap-lock contention across cores
 * (profiled under KMIP load). A cached mapping keeps every property of a new
 * one: locked, excluded from dumps, guard pages, and all zero.
 */
#define SECMEM_CACHE_SLOTS 64
#define SECMEM_CACHE_MAX_MAP ((size_t)256 * 1024)
static struct {
    uint8_t *base;
    size_t map_len;
} secmem_cache[SECMEM_CACHE_SLOTS];
static size_t secmem_cached;
static pthread_mutex_t secmem_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static uint8_t *cache_take(size_t map_len)
{
    uint8_t *base = NULL;
    pthread_mutex_lock(&secmem_cache_lock);
    for (size_t i = 0; i < secmem_cached; i++) {
        if (secmem_cache[i].map_len == map_len) {
            base = secmem_cache[i].base;
            secmem_cache[i] = secmem_cache[--secmem_cached];
            break;
        }
    }
    pthread_mutex_unlock(&secmem_cache_lock);
    return base;
}

static bool cache_put(uint8_t *base, size_t map_len)
{
    bool kept = false;
    if (map_len > SECMEM_CACHE_MAX_MAP)
        return false;
    pthread_mutex_lock(&secmem_cache_lock);
    if (secmem_cached < SECMEM_CACHE_SLOTS) {
        secmem_cache[secmem_cached].base = base;
        secmem_cache[secmem_cached].map_len = map_len;
        secmem_cached++;
        kept = true;
    }
    pthread_mutex_unlock(&secmem_cache_lock);
    return kept;
}

struct secmem_header {
    size_t map_len;  /* whole mapping, guards included */
    size_t user_len; /* bytes handed out */
    uint64_t canary;
};

#define SECMEM_CANARY 0x6b66736563726574ull /* "kfsecret" */

static size_t page_size(void)
{
    static size_t ps;
    if (!ps)
        ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}

void *kf_secmem_alloc(size_t n)
{
    size_t ps = page_size();
    if (n > SIZE_MAX / 2)
        return NULL;
    size_t body = ((sizeof(struct secmem_header) + n + ps - 1) / ps) * ps;
    size_t map_len = body + 2 * ps;
    uint8_t *base = cache_take(map_len); /* wiped when it was freed */
    uint8_t *region;
    if (base) {
        region = base + ps;
    } else {
        base = mmap(NULL, map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED)
            return NULL;
        region = base + ps;
        if (mprotect(region, body, PROT_READ | PROT_WRITE) != 0 || mlock(region, body) != 0) {
            munmap(base, map_len);
            return NULL;
        }
        (void)madvise(region, body, MADV_DONTDUMP);
        (void)madvise(region, body, MADV_WIPEONFORK);
    }
    /* Data sits at the end of the body so overruns hit the trailing guard page. */
    uint8_t *user = region + body - n;
    struct secmem_header h = {.map_len = map_len, .user_len = n, .canary = SECMEM_CANARY};
    /* The header sits just below the data; it may be unaligned, hence memcpy. */
    memcpy(user - sizeof(h), &h, sizeof(h));
    atomic_fetch_add(&live_allocations, 1);
    return user;
}

void kf_secmem_free(void *p)
{
    if (!p)
        return;
    size_t ps = page_size();
    struct secmem_header h;
    memcpy(&h, (uint8_t *)p - sizeof(h), sizeof(h));
    if (h.canary != SECMEM_CANARY)
        abort(); /* not ours, or the header was overwritten: stop before worse */
    size_t map_len = h.map_len;
    size_t body = map_len - 2 * ps;
    uint8_t *region = (uint8_t *)p + h.user_len - body;
    kf_wipe(region, body);
    atomic_fetch_sub(&live_allocations, 1);
    if (cache_put(region - ps, map_len))
        return;
    munlock(region, body);
    munmap(region - ps, map_len);
}

size_t kf_secmem_live(void)
{
    return atomic_load(&live_allocations);
}

void kf_wipe(void *p, size_t n)
{
    if (p && n)
        explicit_bzero(p, n);
}

bool kf_ct_equal(const void *a, const void *b, size_t n)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    return d == 0;
}

bool kf_ct_is_zero(const void *a, size_t n)
{
    const volatile uint8_t *x = a;
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= x[i];
    return d == 0;
}

int kf_process_harden(void)
{
    struct rlimit no_core = {0, 0};
    if (setrlimit(RLIMIT_CORE, &no_core) != 0)
        return -1;
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return -1;
    return 0;
}
