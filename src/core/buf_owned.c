/* Owned (allocated, growable) kf_buf buffers; secret ones live in secure memory. */
#include <stdlib.h>
#include <string.h>

#include "keyfleet/buf.h"
#include "keyfleet/buf_grow.h"
#include "keyfleet/secmem.h"

static uint8_t *raw_alloc(size_t n, unsigned flags)
{
    if (flags & KF_BUF_SECRET)
        return kf_secmem_alloc(n);
    return calloc(1, n);
}

static void raw_free(uint8_t *p, size_t cap, unsigned flags)
{
    if (!p)
        return;
    if (flags & KF_BUF_SECRET) {
        kf_secmem_free(p);
    } else {
        (void)cap;
        free(p);
    }
}

/* Called by kf_buf_reserve for owned buffers: grow to at least want bytes. */
static int grow(kf_buf *b, size_t want)
{
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap < want)
        ncap = ncap > b->max / 2 ? b->max : ncap * 2;
    if (ncap > b->max)
        ncap = b->max;
    uint8_t *nd = raw_alloc(ncap, b->flags);
    KF_ENSURE(nd != NULL, (b->flags & KF_BUF_SECRET) ? KF_ERR_SECMEM : KF_ERR_NOMEM);
    if (b->len)
        memcpy(nd, b->data, b->len);
    if (b->flags & KF_BUF_SECRET)
        kf_wipe(b->data, b->cap);
    raw_free(b->data, b->cap, b->flags);
    b->data = nd;
    b->cap = ncap;
    return KF_OK;
}

/* Installed before main: an owned buffer can only exist once this object is linked in. */
__attribute__((constructor)) static void install_grower(void)
{
    kf_buf_grower = grow;
}

int kf_buf_alloc(kf_buf *b, size_t initial, size_t max, unsigned flags)
{
    memset(b, 0, sizeof(*b));
    KF_ENSURE(initial <= max && max > 0, KF_ERR_ARG);
    if (initial == 0)
        initial = max < 256 ? max : 256;
    b->data = raw_alloc(initial, flags);
    KF_ENSURE(b->data != NULL, (flags & KF_BUF_SECRET) ? KF_ERR_SECMEM : KF_ERR_NOMEM);
    b->cap = initial;
    b->max = max;
    b->flags = (flags & KF_BUF_SECRET) | KF_BUF_OWNED;
    return KF_OK;
}

void kf_buf_free(kf_buf *b)
{
    if (b->flags & KF_BUF_OWNED) {
        if (b->flags & KF_BUF_SECRET)
            kf_wipe(b->data, b->cap);
        raw_free(b->data, b->cap, b->flags);
    }
    memset(b, 0, sizeof(*b));
}

