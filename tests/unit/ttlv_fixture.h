/*
 * Shared by test_ttlv.c and test_ttlv_xml.c: an arena for trees and an output
 * buffer of up to KF_TEST_OUT_MAX bytes (define it before including).
 */
#ifndef KF_TEST_TTLV_FIXTURE_H
#define KF_TEST_TTLV_FIXTURE_H

#include <stdlib.h>

#include "keyfleet/arena.h"
#include "keyfleet/ttlv.h"

struct fixture {
    kf_arena *a;
    kf_buf out;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(kf_arena_new(&f->a, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&f->out, 0, KF_TEST_OUT_MAX, 0), KF_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kf_buf_free(&f->out);
    kf_arena_free(f->a);
    free(f);
    return 0;
}

#endif
