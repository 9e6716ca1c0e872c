/*
 * TTLV binary codec, tree and arena. Known answers are the encodings printed
 * in KMIP 1.4 section 9.1.2 "Examples" (tag 0x420020 throughout).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "keyfleet/arena.h"
#include "keyfleet/error.h"
#include "keyfleet/ttlv.h"

#define T 0x420020u

/* KMIP 1.4 section 9.1.2 examples, verbatim. */
static const uint8_t kat_integer[] = {0x42, 0x00, 0x20, 0x02, 0x00, 0x00, 0x00, 0x04,
                                      0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00};
static const uint8_t kat_long[] = {0x42, 0x00, 0x20, 0x03, 0x00, 0x00, 0x00, 0x08,
                                   0x01, 0xB6, 0x9B, 0x4B, 0xA5, 0x74, 0x92, 0x00};
static const uint8_t kat_bigint[] = {0x42, 0x00, 0x20, 0x04, 0x00, 0x00, 0x00, 0x10,
                                     0x00, 0x00, 0x00, 0x00, 0x03, 0xFD, 0x35, 0xEB,
                                     0x6B, 0xC2, 0xDF, 0x46, 0x18, 0x08, 0x00, 0x00};
static const uint8_t kat_enum[] = {0x42, 0x00, 0x20, 0x05, 0x00, 0x00, 0x00, 0x04,
                                   0x00, 0x00, 0x00, 0xFF, 0x00, 0x00, 0x00, 0x00};
static const uint8_t kat_bool[] = {0x42, 0x00, 0x20, 0x06, 0x00, 0x00, 0x00, 0x08,
                                   0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01};
static const uint8_t kat_text[] = {0x42, 0x00, 0x20, 0x07, 0x00, 0x00, 0x00, 0x0B, 0x48, 0x65, 0x6C, 0x6C,
                                   0x6F, 0x20, 0x57, 0x6F, 0x72, 0x6C, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00};
static const uint8_t kat_bytes[] = {0x42, 0x00, 0x20, 0x08, 0x00, 0x00, 0x00, 0x03,
                                    0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00};
static const uint8_t kat_datetime[] = {0x42, 0x00, 0x20, 0x09, 0x00, 0x00, 0x00, 0x08,
                                       0x00, 0x00, 0x00, 0x00, 0x47, 0xDA, 0x67, 0xF8};
static const uint8_t kat_interval[] = {0x42, 0x00, 0x20, 0x0A, 0x00, 0x00, 0x00, 0x04,
                                       0x00, 0x0D, 0x2F, 0x00, 0x00, 0x00, 0x00, 0x00};
static const uint8_t kat_struct[] = {
    0x42, 0x00, 0x20, 0x01, 0x00, 0x00, 0x00, 0x20, 0x42, 0x00, 0x04, 0x05, 0x00, 0x00, 0x00, 0x04,
    0x00, 0x00, 0x00, 0xFE, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0x05, 0x02, 0x00, 0x00, 0x00, 0x04,
    0x00, 0x00, 0x00, 0xFF, 0x00, 0x00, 0x00, 0x00};
/* 1234567890000000000000000000 in big-endian, minimal form (12 bytes). */
static const uint8_t bigint_value[] = {0x03, 0xFD, 0x35, 0xEB, 0x6B, 0xC2,
                                       0xDF, 0x46, 0x18, 0x08, 0x00, 0x00};

#define KF_TEST_OUT_MAX (1 << 22)
#include "ttlv_fixture.h"

static void assert_encodes_to(struct fixture *f, const kf_ttlv *n, const uint8_t *want, size_t len)
{
    assert_non_null(n);
    kf_buf_reset(&f->out);
    assert_int_equal(kf_ttlv_encode(n, &f->out), KF_OK);
    assert_int_equal(f->out.len, len);
    assert_memory_equal(f->out.data, want, len);
}

/* Decode, then check the value re-encodes to the same bytes. */
static const kf_ttlv *decode_ok(struct fixture *f, const uint8_t *msg, size_t len)
{
    kf_ttlv *root = NULL;
    assert_int_equal(kf_ttlv_decode(msg, len, NULL, f->a, &root), KF_OK);
    assert_encodes_to(f, root, msg, len);
    return root;
}

static void builders_produce_spec_examples(void **state)
{
    struct fixture *f = *state;
    kf_arena *a = f->a;
    assert_encodes_to(f, kf_ttlv_add_int(a, NULL, T, 8), kat_integer, sizeof(kat_integer));
    assert_encodes_to(f, kf_ttlv_add_long(a, NULL, T, 123456789000000000LL), kat_long,
                      sizeof(kat_long));
    assert_encodes_to(f, kf_ttlv_add_bigint(a, NULL, T, bigint_value, sizeof(bigint_value)),
                      kat_bigint, sizeof(kat_bigint));
    assert_encodes_to(f, kf_ttlv_add_enum(a, NULL, T, 255), kat_enum, sizeof(kat_enum));
    assert_encodes_to(f, kf_ttlv_add_bool(a, NULL, T, true), kat_bool, sizeof(kat_bool));
    assert_encodes_to(f, kf_ttlv_add_text(a, NULL, T, "Hello World"), kat_text, sizeof(kat_text));
    const uint8_t b3[] = {1, 2, 3};
    assert_encodes_to(f, kf_ttlv_add_bytes(a, NULL, T, b3, 3), kat_bytes, sizeof(kat_bytes));
    /* Friday, March 14, 2008, 11:56:40 GMT */
    assert_encodes_to(f, kf_ttlv_add_datetime(a, NULL, T, 1205495800), kat_datetime,
                      sizeof(kat_datetime));
    assert_encodes_to(f, kf_ttlv_add_interval(a, NULL, T, 864000), kat_interval,
                      sizeof(kat_interval));
    kf_ttlv *s = kf_ttlv_struct(a, NULL, T);
    assert_non_null(kf_ttlv_add_enum(a, s, 0x420004, 254));
    assert_non_null(kf_ttlv_add_int(a, s, 0x420005, 255));
    assert_encodes_to(f, s, kat_struct, sizeof(kat_struct));
}

static void decoder_reads_spec_examples(void **state)
{
    struct fixture *f = *state;
    int32_t i32;
    int64_t i64;
    uint32_t u32;
    bool b;
    const char *s;
    const uint8_t *p;
    size_t len;

    assert_int_equal(kf_ttlv_get_int(decode_ok(f, kat_integer, sizeof(kat_integer)), &i32), KF_OK);
    assert_int_equal(i32, 8);
    assert_int_equal(kf_ttlv_get_long(decode_ok(f, kat_long, sizeof(kat_long)), &i64), KF_OK);
    assert_true(i64 == 123456789000000000LL);
    assert_int_equal(kf_ttlv_get_bigint(decode_ok(f, kat_bigint, sizeof(kat_bigint)), &p, &len),
                     KF_OK);
    assert_int_equal(len, 16);
    assert_memory_equal(p + 4, bigint_value, sizeof(bigint_value));
    assert_int_equal(kf_ttlv_get_enum(decode_ok(f, kat_enum, sizeof(kat_enum)), &u32), KF_OK);
    assert_int_equal(u32, 255);
    assert_int_equal(kf_ttlv_get_bool(decode_ok(f, kat_bool, sizeof(kat_bool)), &b), KF_OK);
    assert_true(b);
    assert_int_equal(kf_ttlv_get_text(decode_ok(f, kat_text, sizeof(kat_text)), &s, &len), KF_OK);
    assert_int_equal(len, 11);
    assert_string_equal(s, "Hello World"); /* arena copy is NUL-terminated */
    assert_int_equal(kf_ttlv_get_bytes(decode_ok(f, kat_bytes, sizeof(kat_bytes)), &p, &len), KF_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(p, "\x01\x02\x03", 3);
    assert_int_equal(
        kf_ttlv_get_datetime(decode_ok(f, kat_datetime, sizeof(kat_datetime)), &i64), KF_OK);
    assert_true(i64 == 1205495800);
    assert_int_equal(
        kf_ttlv_get_interval(decode_ok(f, kat_interval, sizeof(kat_interval)), &u32), KF_OK);
    assert_int_equal(u32, 864000);

    const kf_ttlv *st = decode_ok(f, kat_struct, sizeof(kat_struct));
    assert_int_equal(st->type, KF_TTLV_STRUCTURE);
    assert_int_equal(st->nchildren, 2);
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(st, 0x420004), &u32), KF_OK);
    assert_int_equal(u32, 254);
    assert_int_equal(kf_ttlv_get_int(kf_ttlv_find(st, 0x420005), &i32), KF_OK);
    assert_int_equal(i32, 255);
}

static void getters_check_type_and_presence(void **state)
{
    struct fixture *f = *state;
    const kf_ttlv *st = decode_ok(f, kat_struct, sizeof(kat_struct));
    int32_t i32;
    uint32_t u32;
    const char *s;
    size_t len;
    assert_int_equal(kf_ttlv_get_int(kf_ttlv_find(st, 0x420004), &i32), KF_ERR_TTLV_TYPE);
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(st, 0x420005), &u32), KF_ERR_TTLV_TYPE);
    assert_int_equal(kf_ttlv_get_text(st, &s, &len), KF_ERR_TTLV_TYPE);
    assert_int_equal(kf_ttlv_get_int(kf_ttlv_find(st, 0x420006), &i32), KF_ERR_TTLV_MISSING);
    assert_null(kf_ttlv_find(kf_ttlv_find(st, 0x420005), 0x420005)); /* not a structure */
}

static void lookup_walks_paths_and_siblings(void **state)
{
    struct fixture *f = *state;
    kf_arena *a = f->a;
    kf_ttlv *msg = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    kf_ttlv *hdr = kf_ttlv_struct(a, msg, KMIP_TAG_REQUEST_HEADER);
    assert_non_null(kf_ttlv_add_int(a, hdr, KMIP_TAG_BATCH_COUNT, 2));
    for (uint32_t op = KMIP_OP_CREATE; op <= KMIP_OP_REGISTER; op += 2) {
        kf_ttlv *item = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
        assert_non_null(kf_ttlv_add_enum(a, item, KMIP_TAG_OPERATION, op));
    }
    uint32_t op;
    assert_int_equal(kf_ttlv_get_enum(KF_TTLV_PATH(msg, KMIP_TAG_BATCH_ITEM, KMIP_TAG_OPERATION), &op),
                     KF_OK);
    assert_int_equal(op, KMIP_OP_CREATE);
    const kf_ttlv *second = kf_ttlv_find_next(kf_ttlv_find(msg, KMIP_TAG_BATCH_ITEM), KMIP_TAG_BATCH_ITEM);
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(second, KMIP_TAG_OPERATION), &op), KF_OK);
    assert_int_equal(op, KMIP_OP_REGISTER);
    assert_null(kf_ttlv_find_next(second, KMIP_TAG_BATCH_ITEM));
    assert_int_equal(kf_ttlv_count(msg, KMIP_TAG_BATCH_ITEM), 2);
    assert_null(KF_TTLV_PATH(msg, KMIP_TAG_RESPONSE_HEADER, KMIP_TAG_BATCH_COUNT));
    assert_true(kf_ttlv_text_equals(kf_ttlv_add_text(a, hdr, KMIP_TAG_CLIENT_CORRELATION_VALUE, "x"), "x"));
    /* A scalar cannot take children. */
    assert_null(kf_ttlv_add_int(a, (kf_ttlv *)kf_ttlv_find(hdr, KMIP_TAG_BATCH_COUNT), T, 1));
    assert_int_equal(kf_ttlv_append(hdr, kf_ttlv_add_bool(a, NULL, T, false)), KF_OK);
    assert_int_equal(hdr->nchildren, 3);
}

static void bigint_builder_sign_extends(void **state)
{
    struct fixture *f = *state;
    const uint8_t minus_one[] = {0xFF};
    const uint8_t want[] = {0x42, 0x00, 0x20, 0x04, 0, 0, 0, 8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    assert_encodes_to(f, kf_ttlv_add_bigint(f->a, NULL, T, minus_one, 1), want, sizeof(want));
}

static void message_length_frames_from_header(void **state)
{
    (void)state;
    size_t total;
    assert_int_equal(kf_ttlv_message_length(kat_struct, NULL, &total), KF_OK);
    assert_int_equal(total, sizeof(kat_struct));
    assert_int_equal(kf_ttlv_message_length(kat_text, NULL, &total), KF_OK);
    assert_int_equal(total, sizeof(kat_text)); /* padding counted */
    const uint8_t bad_type[8] = {0x42, 0x00, 0x78, 0x0C, 0, 0, 0, 8};
    assert_int_equal(kf_ttlv_message_length(bad_type, NULL, &total), KF_ERR_TTLV_TYPE);
    const uint8_t huge[8] = {0x42, 0x00, 0x78, 0x01, 0x7F, 0xFF, 0xFF, 0xF8};
    assert_int_equal(kf_ttlv_message_length(huge, NULL, &total), KF_ERR_TTLV_TOTAL);
}

static void decode_expect(struct fixture *f, const uint8_t *msg, size_t len,
                          const struct kf_ttlv_limits *lim, int want)
{
    kf_ttlv *root = (kf_ttlv *)1;
    assert_int_equal(kf_ttlv_decode(msg, len, lim, f->a, &root), want);
    assert_null(root);
}

static void truncation_at_every_offset_is_refused(void **state)
{
    struct fixture *f = *state;
    kf_ttlv *msg = kf_ttlv_struct(f->a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    kf_ttlv *inner = kf_ttlv_struct(f->a, msg, KMIP_TAG_REQUEST_HEADER);
    assert_non_null(kf_ttlv_add_text(f->a, inner, KMIP_TAG_NAME_VALUE, "Hello World"));
    assert_non_null(kf_ttlv_add_long(f->a, msg, KMIP_TAG_ACTIVATION_DATE, 7));
    kf_buf_reset(&f->out);
    assert_int_equal(kf_ttlv_encode(msg, &f->out), KF_OK);
    uint8_t copy[256];
    assert_true(f->out.len <= sizeof(copy));
    memcpy(copy, f->out.data, f->out.len);
    for (size_t cut = 0; cut < f->out.len; cut++)
        decode_expect(f, copy, cut, NULL, KF_ERR_SHORT);
}

/* One item with the given type and declared length, value bytes zero. */
static size_t item(uint8_t *buf, uint8_t type, uint32_t len, size_t value_bytes)
{
    const uint8_t hdr[8] = {0x42, 0x00, 0x20, type, (uint8_t)(len >> 24), (uint8_t)(len >> 16),
                            (uint8_t)(len >> 8), (uint8_t)len};
    memcpy(buf, hdr, 8);
    memset(buf + 8, 0, value_bytes);
    return 8 + value_bytes;
}

static void wrong_lengths_per_type_are_refused(void **state)
{
    struct fixture *f = *state;
    static const struct {
        uint8_t type;
        uint32_t len;
    } bad[] = {
        {KF_TTLV_INTEGER, 8},  {KF_TTLV_INTEGER, 0}, {KF_TTLV_ENUM, 8},     {KF_TTLV_INTERVAL, 2},
        {KF_TTLV_LONG, 4},     {KF_TTLV_LONG, 16},   {KF_TTLV_BOOL, 4},     {KF_TTLV_DATETIME, 4},
        {KF_TTLV_DTX, 16},     {KF_TTLV_BIGINT, 12}, {KF_TTLV_BIGINT, 0},   {KF_TTLV_STRUCTURE, 12},
    };
    uint8_t buf[64];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t n = item(buf, bad[i].type, bad[i].len, 16);
        decode_expect(f, buf, n, NULL, KF_ERR_TTLV_LENGTH);
    }
    /* A child that runs past the end of its structure. */
    uint8_t s[sizeof(kat_struct)];
    memcpy(s, kat_struct, sizeof(s));
    s[7] = 0x18; /* structure now claims 24 bytes: the Integer child overruns it */
    decode_expect(f, s, 8 + 0x18, NULL, KF_ERR_TTLV_LENGTH);
}

static void unknown_types_are_refused(void **state)
{
    struct fixture *f = *state;
    const uint8_t types[] = {0x00, 0x0C, 0x10, 0xFF};
    uint8_t buf[32];
    for (size_t i = 0; i < sizeof(types); i++) {
        size_t n = item(buf, types[i], 8, 8);
        decode_expect(f, buf, n, NULL, KF_ERR_TTLV_TYPE);
    }
}

static void nonzero_padding_is_refused(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[32];
    memcpy(buf, kat_integer, sizeof(kat_integer));
    buf[15] = 1;
    decode_expect(f, buf, sizeof(kat_integer), NULL, KF_ERR_TTLV_PADDING);
    memcpy(buf, kat_text, sizeof(kat_text));
    buf[19] = 0x20;
    decode_expect(f, buf, sizeof(kat_text), NULL, KF_ERR_TTLV_PADDING);
    memcpy(buf, kat_bytes, sizeof(kat_bytes));
    buf[11] = 0x80;
    decode_expect(f, buf, sizeof(kat_bytes), NULL, KF_ERR_TTLV_PADDING);
}

static void bad_values_are_refused(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[32];
    memcpy(buf, kat_bool, sizeof(kat_bool));
    buf[15] = 2;
    decode_expect(f, buf, sizeof(kat_bool), NULL, KF_ERR_TTLV_VALUE);
    buf[15] = 0;
    buf[8] = 0x80; /* 0x8000000000000000 is no Boolean either */
    decode_expect(f, buf, sizeof(kat_bool), NULL, KF_ERR_TTLV_VALUE);
    memcpy(buf, kat_text, sizeof(kat_text));
    buf[8] = 0xC0; /* overlong encoding: not UTF-8 */
    decode_expect(f, buf, sizeof(kat_text), NULL, KF_ERR_TTLV_UTF8);
    memcpy(buf, kat_integer, sizeof(kat_integer));
    decode_expect(f, buf, sizeof(kat_integer) + 8, NULL, KF_ERR_TTLV_TRAILING);
}

/* depth structures nested, innermost empty. */
static size_t nested(uint8_t *buf, unsigned depth)
{
    for (unsigned i = 0; i < depth; i++)
        item(buf + 8 * i, KF_TTLV_STRUCTURE, 8 * (depth - 1 - i), 0);
    return 8 * (size_t)depth;
}

static void depth_limit_is_enforced(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[8 * 40];
    kf_ttlv *root;
    size_t n = nested(buf, 32);
    assert_int_equal(kf_ttlv_decode(buf, n, NULL, f->a, &root), KF_OK);
    n = nested(buf, 33);
    decode_expect(f, buf, n, NULL, KF_ERR_TTLV_DEPTH);
    struct kf_ttlv_limits lim = {.max_depth = 4};
    n = nested(buf, 5);
    decode_expect(f, buf, n, &lim, KF_ERR_TTLV_DEPTH);
}

static void item_count_limit_is_enforced(void **state)
{
    struct fixture *f = *state;
    kf_ttlv *root;
    struct kf_ttlv_limits lim = {.max_items = 3};
    assert_int_equal(kf_ttlv_decode(kat_struct, sizeof(kat_struct), &lim, f->a, &root), KF_OK);
    lim.max_items = 2;
    decode_expect(f, kat_struct, sizeof(kat_struct), &lim, KF_ERR_TTLV_COUNT);

    /* Default limit: 10000 items in all. */
    kf_ttlv *big = kf_ttlv_struct(f->a, NULL, T);
    for (int i = 0; i < 10000; i++)
        assert_non_null(kf_ttlv_add_bool(f->a, big, T, true));
    kf_buf_reset(&f->out);
    assert_int_equal(kf_ttlv_encode(big, &f->out), KF_OK);
    decode_expect(f, f->out.data, f->out.len, NULL, KF_ERR_TTLV_COUNT);
}

static void huge_declared_lengths_are_refused(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[32];
    size_t n = item(buf, KF_TTLV_BYTES, 0xFFFFFFF8u, 8);
    decode_expect(f, buf, n, NULL, KF_ERR_TTLV_ITEM_LEN);
    struct kf_ttlv_limits lim = {.max_item_len = 0xFFFFFFFFu};
    decode_expect(f, buf, n, &lim, KF_ERR_SHORT);
    n = item(buf, KF_TTLV_STRUCTURE, 0x7FFFFFF8u, 8);
    decode_expect(f, buf, n, NULL, KF_ERR_TTLV_ITEM_LEN);
    lim = (struct kf_ttlv_limits){.max_total = 16};
    decode_expect(f, kat_bigint, sizeof(kat_bigint), &lim, KF_ERR_TTLV_TOTAL);
}

static void arena_cap_is_enforced_and_wipes(void **state)
{
    (void)state;
    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 256), KF_OK);
    assert_non_null(kf_arena_alloc(a, 200));
    assert_null(kf_arena_alloc(a, 100));
    assert_int_equal(kf_arena_used(a), 208);
    kf_ttlv *root;
    assert_int_equal(kf_ttlv_decode(kat_struct, sizeof(kat_struct), NULL, a, &root), KF_ERR_NOMEM);
    kf_arena_reset(a);
    assert_int_equal(kf_arena_used(a), 0);
    uint8_t *p = kf_arena_alloc(a, 16);
    assert_non_null(p);
    for (int i = 0; i < 16; i++)
        assert_int_equal(p[i], 0); /* fresh memory is zero */
    kf_arena_free(a);
    kf_arena_free(NULL);
}

static void encoder_refuses_invalid_trees(void **state)
{
    struct fixture *f = *state;
    kf_ttlv *n = kf_ttlv_add_int(f->a, NULL, T, 1);
    n->type = 0x0C;
    kf_buf_reset(&f->out);
    assert_int_equal(kf_ttlv_encode(n, &f->out), KF_ERR_TTLV_TYPE);
    assert_int_equal(f->out.len, 0); /* nothing half-written */
    kf_ttlv *b = kf_ttlv_add_bytes(f->a, NULL, T, (const uint8_t *)"abc", 3);
    b->type = KF_TTLV_BIGINT; /* 3 bytes is no Big Integer */
    assert_int_equal(kf_ttlv_encode(b, &f->out), KF_ERR_TTLV_LENGTH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(builders_produce_spec_examples, setup, teardown),
        cmocka_unit_test_setup_teardown(decoder_reads_spec_examples, setup, teardown),
        cmocka_unit_test_setup_teardown(getters_check_type_and_presence, setup, teardown),
        cmocka_unit_test_setup_teardown(lookup_walks_paths_and_siblings, setup, teardown),
        cmocka_unit_test_setup_teardown(bigint_builder_sign_extends, setup, teardown),
        cmocka_unit_test(message_length_frames_from_header),
        cmocka_unit_test_setup_teardown(truncation_at_every_offset_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_lengths_per_type_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_types_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(nonzero_padding_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_values_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(depth_limit_is_enforced, setup, teardown),
        cmocka_unit_test_setup_teardown(item_count_limit_is_enforced, setup, teardown),
        cmocka_unit_test_setup_teardown(huge_declared_lengths_are_refused, setup, teardown),
        cmocka_unit_test(arena_cap_is_enforced_and_wipes),
        cmocka_unit_test_setup_teardown(encoder_refuses_invalid_trees, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
