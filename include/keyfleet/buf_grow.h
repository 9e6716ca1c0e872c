/* Internal: how kf_buf_reserve grows owned buffers without base knowing the allocator. */
#ifndef KEYFLEET_BUF_GROW_H
#define KEYFLEET_BUF_GROW_H

#include "keyfleet/buf.h"

/* Set by kf_buf_alloc (src/core/buf_owned.c); NULL until an owned buffer exists. */
extern int (*kf_buf_grower)(kf_buf *b, size_t want);

#endif
