/* Unit tests for the cursor, secure memory and error table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "keyfleet/buf.h"
#include "keyfleet/error.h"
#include "keyfleet/secmem.h"

static void reader_reads_big_endian_and_stops_at_end(void **state)
{
    (void)state;
    const uint8_t wire[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07};
    kf_buf b;
    kf_buf_reader(&b, wire, sizeof(wire));
    uint16_t v16;
    uint32_t v32;
    assert_int_equal(kf_buf_get_u16(&b, &v16), KF_OK);
    assert_int_equal(v16, 0x0102);
    assert_int_equal(kf_buf_get_u32(&b, &v32), KF_OK);
    assert_int_equal(v32, 0x03040506);
    assert_int_equal(kf_buf_remaining(&b), 1);
    /* A read past the end fails and does not move the cursor. */
    assert_int_equal(kf_buf_get_u16(&b, &v16), KF_ERR_SHORT);
    assert_int_equal(kf_buf_remaining(&b), 1);
    assert_int_equal(kf_buf_skip(&b, 2), KF_ERR_SHORT);
    assert_int_equal(kf_buf_skip(&b, 1), KF_OK);
    uint8_t v8;
    assert_int_equal(kf_buf_get_u8(&b, &v8), KF_ERR_SHORT);
}

static void reader_refuses_writes(void **state)
{
    (void)state;
    const uint8_t wire[4] = {0};
    kf_buf b;
    kf_buf_reader(&b, wire, sizeof(wire));
    assert_int_equal(kf_buf_put_u8(&b, 1), KF_ERR_ARG);
}

static void sub_cursor_is_bounded(void **state)
{
    (void)state;
    const uint8_t wire[] = {0xaa, 0xbb, 0xcc, 0xdd};
    kf_buf b, child;
    kf_buf_reader(&b, wire, sizeof(wire));
    assert_int_equal(kf_buf_sub(&b, 5, &child), KF_ERR_SHORT);
    assert_int_equal(kf_buf_sub(&b, 2, &child), KF_OK);
    uint32_t v;
    assert_int_equal(kf_buf_get_u32(&child, &v), KF_ERR_SHORT);
    uint16_t v16;
    assert_int_equal(kf_buf_get_u16(&child, &v16), KF_OK);
    assert_int_equal(v16, 0xaabb);
    assert_int_equal(kf_buf_get_u16(&b, &v16), KF_OK);
    assert_int_equal(v16, 0xccdd);
}

/* A u16-length string field: round trip, and each limit refused. */
static void str16_field_round_trips_within_limits(void **state)
{
    (void)state;
    uint8_t mem[32];
    kf_buf b;
    kf_buf_fixed(&b, mem, sizeof(mem));
    assert_int_equal(kf_buf_put_str16(&b, "token", 5), KF_OK);
    assert_int_equal(kf_buf_put_str16(&b, "", 0), KF_OK);
    assert_int_equal(kf_buf_put_str16(&b, "toolong", 6), KF_ERR_LIMIT);
    assert_int_equal(b.len, 2 + 5 + 2);
    assert_memory_equal(mem, "\x00\x05token\x00\x00", 9);
    kf_buf r;
    char out[8];
    kf_buf_reader(&r, mem, b.len);
    assert_int_equal(kf_buf_get_str16(&r, out, sizeof(out), 7), KF_OK);
    assert_string_equal(out, "token");
    assert_int_equal(kf_buf_get_str16(&r, out, sizeof(out), 7), KF_OK);
    assert_string_equal(out, "");
    assert_int_equal(kf_buf_get_str16(&r, out, sizeof(out), 7), KF_ERR_SHORT);
    kf_buf_reader(&r, mem, b.len);
    assert_int_equal(kf_buf_get_str16(&r, out, sizeof(out), 4), KF_ERR_LIMIT); /* over max */
    kf_buf_reader(&r, mem, b.len);
    assert_int_equal(kf_buf_get_str16(&r, out, 5, 7), KF_ERR_LIMIT); /* no room for the NUL */
    const uint8_t nul[] = {0x00, 0x03, 'a', 0x00, 'b'};
    kf_buf_reader(&r, nul, sizeof(nul));
    assert_int_equal(kf_buf_get_str16(&r, out, sizeof(out), 7), KF_ERR_FORMAT);
    const uint8_t cut[] = {0x00, 0x04, 'a', 'b'};
    kf_buf_reader(&r, cut, sizeof(cut));
    assert_int_equal(kf_buf_get_str16(&r, out, sizeof(out), 7), KF_ERR_SHORT);
}

static void fixed_buffer_never_grows(void **state)
{
    (void)state;
    uint8_t mem[6];
    kf_buf b;
    kf_buf_fixed(&b, mem, sizeof(mem));
    assert_int_equal(kf_buf_put_u32(&b, 0xdeadbeef), KF_OK);
    assert_int_equal(kf_buf_put_u32(&b, 1), KF_ERR_NOSPACE);
    assert_int_equal(b.len, 4);
    assert_int_equal(kf_buf_put_u16(&b, 0x1234), KF_OK);
    assert_memory_equal(mem, "\xde\xad\xbe\xef\x12\x34", 6);
}

static void owned_buffer_grows_to_its_limit(void **state)
{
    (void)state;
    kf_buf b;
    assert_int_equal(kf_buf_alloc(&b, 4, 1000, 0), KF_OK);
    for (int i = 0; i < 250; i++)
        assert_int_equal(kf_buf_put_u32(&b, (uint32_t)i), KF_OK);
    assert_int_equal(kf_buf_put_u8(&b, 0), KF_ERR_LIMIT);
    assert_int_equal(b.len, 1000);
    assert_int_equal(kf_buf_patch_u32(&b, 996, 7), KF_OK);
    assert_int_equal(kf_buf_patch_u32(&b, 997, 7), KF_ERR_ARG);
    kf_buf_free(&b);
    assert_null(b.data);
}

static void secret_buffer_uses_secure_memory(void **state)
{
    (void)state;
    size_t before = kf_secmem_live();
    kf_buf b;
    assert_int_equal(kf_buf_alloc(&b, 16, 100000, KF_BUF_SECRET), KF_OK);
    assert_int_equal(kf_secmem_live(), before + 1);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(kf_buf_put_u16(&b, 0x4242), KF_OK);
    assert_int_equal(kf_secmem_live(), before + 1);
    kf_buf_free(&b);
    assert_int_equal(kf_secmem_live(), before);
}

static void secmem_sizes_and_wipe(void **state)
{
    (void)state;
    size_t sizes[] = {1, 7, 32, 4000, 4096, 4097, 100000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *p = kf_secmem_alloc(sizes[i]);
        assert_non_null(p);
        assert_true(kf_ct_is_zero(p, sizes[i]));
        memset(p, 0x5a, sizes[i]);
        kf_secmem_free(p);
    }
    assert_int_equal(kf_secmem_live(), 0);
}

/* Freed mappings are cached for reuse: a reused one must come back wiped. */
static void reused_secure_memory_is_wiped(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        uint8_t *p = kf_secmem_alloc(100);
        assert_non_null(p);
        assert_true(kf_ct_is_zero(p, 100));
        memset(p, 0xa5, 100);
        kf_secmem_free(p);
    }
    uint8_t *big = kf_secmem_alloc(300000); /* above the cache's size: unmapped on free */
    assert_non_null(big);
    memset(big, 0x11, 300000);
    kf_secmem_free(big);
    assert_int_equal(kf_secmem_live(), 0);
}

static void ct_equal_compares_all_bytes(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    memset(a, 1, sizeof(a));
    memset(b, 1, sizeof(b));
    assert_true(kf_ct_equal(a, b, 32));
    b[31] ^= 0x80;
    assert_false(kf_ct_equal(a, b, 32));
    b[31] ^= 0x80;
    b[0] ^= 1;
    assert_false(kf_ct_equal(a, b, 32));
    assert_true(kf_ct_equal(a, b, 0));
}

static void every_error_has_a_sentence(void **state)
{
    (void)state;
#define KF_ERROR(name, value, text)                                                                \
    assert_true(value < 0);                                                                        \
    assert_string_equal(kf_strerror(name), text);                                                  \
    assert_string_equal(kf_errname(name), #name);
#include "keyfleet/error_codes.h"
#undef KF_ERROR
    assert_string_equal(kf_strerror(-99999), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reader_reads_big_endian_and_stops_at_end),
        cmocka_unit_test(reader_refuses_writes),
        cmocka_unit_test(sub_cursor_is_bounded),
        cmocka_unit_test(str16_field_round_trips_within_limits),
        cmocka_unit_test(fixed_buffer_never_grows),
        cmocka_unit_test(owned_buffer_grows_to_its_limit),
        cmocka_unit_test(secret_buffer_uses_secure_memory),
        cmocka_unit_test(secmem_sizes_and_wipe),
        cmocka_unit_test(reused_secure_memory_is_wiped),
        cmocka_unit_test(ct_equal_compares_all_bytes),
        cmocka_unit_test(every_error_has_a_sentence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
