/* Unit tests for the attacker relay's script language and message surgery. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "devsim/devsim.h"
#include "keyfleet/arena.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/ttlv.h"

static int parse(const char *text, struct ds_script *s, unsigned *line, char *why)
{
    return ds_script_parse(text, strlen(text), s, line, why, 200);
}

static void script_parses_every_action(void **state)
{
    (void)state;
    struct ds_script s;
    unsigned line;
    char why[200];
    const char *text = "# attacker script\n"
                       "\n"
                       "up 1 pass\n"
                       "down 2 drop   # lose the answer\n"
                       "* * delay 250\n"
                       "up 3 flip 17\n"
                       "up 4 flip -1 0x80\n"
                       "down @KeyfleetPairPart flip @KeyfleetSealedData#2+5 255\n"
                       "up 5 flip @KeyfleetMac-1\n"
                       "up 6 replace /tmp/rec/1-down.ttlv\n"
                       "both 7 dup\n"
                       "up 8 hold\n"
                       "down 1 swap-parts\n"
                       "down 9 close\r\n"
                       "up 10 flip @0x540116\n";
    assert_int_equal(parse(text, &s, &line, why), KF_OK);
    assert_int_equal(s.n, 13);
    const struct ds_rule *r = s.rules;
    assert_int_equal(r[0].line, 3);
    assert_int_equal(r[0].dir, DS_UP);
    assert_int_equal(r[0].index, 1);
    assert_int_equal(r[0].action, DS_PASS);
    assert_int_equal(r[1].dir, DS_DOWN);
    assert_int_equal(r[1].action, DS_DROP);
    assert_int_equal(r[2].dir, -1);
    assert_int_equal(r[2].index, 0);
    assert_int_equal(r[2].action, DS_DELAY);
    assert_int_equal(r[2].delay_ms, 250);
    assert_int_equal(r[3].action, DS_FLIP);
    assert_false(r[3].where.by_tag);
    assert_int_equal(r[3].where.offset, 17);
    assert_int_equal(r[3].xor_mask, 0x01);
    assert_true(r[4].where.offset == -1);
    assert_int_equal(r[4].xor_mask, 0x80);
    assert_int_equal(r[5].has_tag, KMIP_TAG_KEYFLEET_PAIR_PART);
    assert_true(r[5].where.by_tag);
    assert_int_equal(r[5].where.tag, KMIP_TAG_KEYFLEET_SEALED_DATA);
    assert_int_equal(r[5].where.nth, 2);
    assert_int_equal(r[5].where.offset, 5);
    assert_int_equal(r[5].xor_mask, 255);
    assert_int_equal(r[6].where.tag, KMIP_TAG_KEYFLEET_MAC);
    assert_int_equal(r[6].where.nth, 1);
    assert_true(r[6].where.offset == -1);
    assert_int_equal(r[7].action, DS_REPLACE);
    assert_string_equal(r[7].file, "/tmp/rec/1-down.ttlv");
    assert_int_equal(r[8].action, DS_DUP);
    assert_int_equal(r[8].dir, -1);
    assert_int_equal(r[9].action, DS_HOLD);
    assert_int_equal(r[10].action, DS_SWAP_PARTS);
    assert_int_equal(r[11].action, DS_CLOSE);
    assert_int_equal(r[11].line, 14);
    assert_int_equal(r[12].where.tag, KMIP_TAG_KEYFLEET_MAC);
    assert_string_equal(ds_action_name(DS_SWAP_PARTS), "swap-parts");
    assert_string_equal(ds_dir_name(DS_DOWN), "down");
    ds_script_free(&s);
    /* an empty script is fine */
    assert_int_equal(parse("# nothing\n\n", &s, &line, why), KF_OK);
    assert_int_equal(s.n, 0);
    ds_script_free(&s);
}

static void script_refusals_name_the_line(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        unsigned line;
        const char *why;
    } cases[] = {
        {"up 1 pass\nsideways 1 pass\n", 2, "direction"},
        {"up 0 pass\n", 1, "index"},
        {"up x pass\n", 1, "index"},
        {"up @NoSuchTag pass\n", 1, "unknown tag"},
        {"up 1 explode\n", 1, "unknown action"},
        {"up 1\n", 1, "a rule is"},
        {"\n\nup 1 delay\n", 3, "missing argument"},
        {"up 1 delay 600001\n", 1, "milliseconds"},
        {"up 1 delay -5\n", 1, "milliseconds"},
        {"up 1 pass now\n", 1, "too many"},
        {"up 1 flip\n", 1, "missing argument"},
        {"up 1 flip 1x\n", 1, "byte offset"},
        {"up 1 flip @Bogus+1\n", 1, "unknown tag"},
        {"up 1 flip @KeyfleetMac#0\n", 1, "item number"},
        {"up 1 flip @KeyfleetMac#\n", 1, "item number"},
        {"up 1 flip @KeyfleetMac+x\n", 1, "byte offset"},
        {"up 1 flip 3 0\n", 1, "XOR"},
        {"up 1 flip 3 256\n", 1, "XOR"},
        {"up 1 flip 3 0x100\n", 1, "XOR"},
        {"up 1 flip 3 0xzz\n", 1, "XOR"},
        {"up 1 flip 3 1 2\n", 1, "too many"},
        {"up 1 replace\n", 1, "missing argument"},
        {"up 1 hold 5\n", 1, "too many"},
        {"up 1 a b c d e f g h i\n", 1, "too many words"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ds_script s = {0};
        unsigned line = 99;
        char why[200] = "";
        assert_int_equal(parse(cases[i].text, &s, &line, why), KF_ERR_FORMAT);
        if (line != cases[i].line || !strstr(why, cases[i].why))
            fail_msg("case %zu: line %u why '%s'", i, line, why);
        assert_null(s.rules);
    }
    /* a NUL byte is refused with its line */
    struct ds_script s;
    unsigned line;
    char why[200];
    const char nul[] = "up 1 pass\nup 2 p\0ss\n";
    assert_int_equal(ds_script_parse(nul, sizeof(nul) - 1, &s, &line, why, sizeof(why)),
                     KF_ERR_FORMAT);
    assert_int_equal(line, 2);
}

/* A KMIP Response carrying M = SM_A || SM_B, as keyfleetd answers a pair request. */
static kf_ttlv *add_part(kf_arena *a, kf_ttlv *parent, uint32_t role, uint64_t counter,
                         uint8_t fill)
{
    uint8_t nonce[12], sealed[48];
    memset(nonce, fill, sizeof(nonce));
    memset(sealed, fill, sizeof(sealed));
    kf_ttlv *part = kf_ttlv_struct(a, parent, KMIP_TAG_KEYFLEET_PAIR_PART);
    kf_ttlv *h = kf_ttlv_struct(a, part, KMIP_TAG_KEYFLEET_PAIR_HEADER);
    kf_ttlv_add_int(a, h, KMIP_TAG_KEYFLEET_PROTO_VERSION, 1);
    kf_ttlv_add_long(a, h, KMIP_TAG_KEYFLEET_KEK_ID, 5);
    kf_ttlv_add_int(a, h, KMIP_TAG_KEYFLEET_KEK_COUNT, 1);
    kf_ttlv_add_text(a, h, KMIP_TAG_KEYFLEET_DEVICE_ID_A, "meter-1");
    kf_ttlv_add_text(a, h, KMIP_TAG_KEYFLEET_DEVICE_ID_B, "base-1");
    kf_ttlv_add_enum(a, h, KMIP_TAG_KEYFLEET_PAIR_ROLE, role);
    kf_ttlv_add_long(a, h, KMIP_TAG_KEYFLEET_COUNTER, (int64_t)counter);
    kf_ttlv_add_bytes(a, h, KMIP_TAG_KEYFLEET_NONCE, nonce, sizeof(nonce));
    return kf_ttlv_add_bytes(a, part, KMIP_TAG_KEYFLEET_SEALED_DATA, sealed, sizeof(sealed));
}

static void build_response(kf_buf *out, bool with_parts, bool adjacent)
{
    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    kf_ttlv *msg = kf_ttlv_struct(a, NULL, KMIP_TAG_RESPONSE_MESSAGE);
    kf_ttlv *hdr = kf_ttlv_struct(a, msg, KMIP_TAG_RESPONSE_HEADER);
    kf_ttlv_add_int(a, hdr, KMIP_TAG_BATCH_COUNT, 1);
    kf_ttlv *bi = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_RESULT_STATUS, 0);
    kf_ttlv *pl = kf_ttlv_struct(a, bi, KMIP_TAG_RESPONSE_PAYLOAD);
    if (with_parts) {
        add_part(a, pl, 1, 3, 0xAA);
        if (!adjacent)
            kf_ttlv_add_int(a, pl, KMIP_TAG_KEYFLEET_KEK_COUNT, 1);
        add_part(a, pl, 2, 7, 0xBB);
    }
    assert_int_equal(kf_buf_alloc(out, 0, 65536, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(msg, out), KF_OK);
    kf_arena_free(a);
}

static uint32_t role_of_part(const uint8_t *m, size_t len, unsigned nth)
{
    struct ds_item_pos pos;
    assert_int_equal(ds_find_item(m, len, KMIP_TAG_KEYFLEET_PAIR_ROLE, nth, &pos), KF_OK);
    assert_int_equal(pos.value_len, 4);
    return (uint32_t)m[pos.value_off] << 24 | (uint32_t)m[pos.value_off + 1] << 16 |
           (uint32_t)m[pos.value_off + 2] << 8 | m[pos.value_off + 3];
}

static void items_are_found_by_tag_and_rank(void **state)
{
    (void)state;
    kf_buf m;
    struct ds_item_pos pos;
    build_response(&m, true, true);
    assert_int_equal(ds_find_item(m.data, m.len, KMIP_TAG_RESPONSE_MESSAGE, 1, &pos), KF_OK);
    assert_int_equal(pos.item_off, 0);
    assert_int_equal(pos.total, m.len);
    assert_int_equal(ds_find_item(m.data, m.len, KMIP_TAG_KEYFLEET_SEALED_DATA, 2, &pos), KF_OK);
    assert_int_equal(pos.value_len, 48);
    assert_int_equal(m.data[pos.value_off], 0xBB);
    assert_int_equal(pos.type, KF_TTLV_BYTES);
    assert_int_equal(ds_find_item(m.data, m.len, KMIP_TAG_KEYFLEET_SEALED_DATA, 3, &pos),
                     KF_ERR_NOT_FOUND);
    assert_int_equal(ds_find_item(m.data, m.len, KMIP_TAG_KEYFLEET_MAC, 1, &pos), KF_ERR_NOT_FOUND);
    /* a structure whose length runs past the message is malformed */
    m.data[7] = 0xF8;
    assert_int_equal(ds_find_item(m.data, m.len, KMIP_TAG_KEYFLEET_MAC, 1, &pos), KF_ERR_FORMAT);
    kf_buf_free(&m);
}

static void item_values_are_read_by_type(void **state)
{
    (void)state;
    kf_buf m;
    uint64_t v = 0;
    char id[16];
    build_response(&m, true, true);
    assert_true(ds_item_u64(m.data, m.len, KMIP_TAG_KEYFLEET_KEK_ID, &v));
    assert_true(v == 5);
    assert_true(ds_item_u64(m.data, m.len, KMIP_TAG_KEYFLEET_COUNTER, &v));
    assert_true(v == 3); /* the first: SM_A's */
    assert_false(ds_item_u64(m.data, m.len, KMIP_TAG_KEYFLEET_PAIR_ROLE, &v)); /* 4 bytes */
    assert_false(ds_item_u64(m.data, m.len, KMIP_TAG_KEYFLEET_MAC, &v));       /* absent */
    assert_true(ds_item_text(m.data, m.len, KMIP_TAG_KEYFLEET_DEVICE_ID_B, id, sizeof(id)));
    assert_string_equal(id, "base-1");
    assert_false(ds_item_text(m.data, m.len, KMIP_TAG_KEYFLEET_DEVICE_ID_B, id, 6)); /* no room */
    assert_true(ds_item_text(m.data, m.len, KMIP_TAG_KEYFLEET_DEVICE_ID_B, id, 7));
    assert_false(ds_item_text(m.data, m.len, KMIP_TAG_KEYFLEET_NONCE, id, sizeof(id))); /* bytes */
    kf_buf_free(&m);
}

static void flips_land_where_the_locator_says(void **state)
{
    (void)state;
    kf_buf m;
    size_t at;
    struct ds_item_pos pos;
    build_response(&m, true, true);
    struct ds_locator abs = {.offset = 17};
    assert_int_equal(ds_locate(m.data, m.len, &abs, &at), KF_OK);
    assert_int_equal(at, 17);
    abs.offset = -1;
    assert_int_equal(ds_locate(m.data, m.len, &abs, &at), KF_OK);
    assert_int_equal(at, m.len - 1);
    abs.offset = -(int64_t)m.len;
    assert_int_equal(ds_locate(m.data, m.len, &abs, &at), KF_OK);
    assert_int_equal(at, 0);
    abs.offset = -(int64_t)m.len - 1;
    assert_int_equal(ds_locate(m.data, m.len, &abs, &at), KF_ERR_LIMIT);
    abs.offset = (int64_t)m.len;
    assert_int_equal(ds_locate(m.data, m.len, &abs, &at), KF_ERR_LIMIT);
    struct ds_locator second = {
        .by_tag = true, .tag = KMIP_TAG_KEYFLEET_SEALED_DATA, .nth = 2, .offset = 5};
    assert_int_equal(ds_find_item(m.data, m.len, KMIP_TAG_KEYFLEET_SEALED_DATA, 2, &pos), KF_OK);
    assert_int_equal(ds_locate(m.data, m.len, &second, &at), KF_OK);
    assert_int_equal(at, pos.value_off + 5);
    second.offset = -1;
    assert_int_equal(ds_locate(m.data, m.len, &second, &at), KF_OK);
    assert_int_equal(at, pos.value_off + 47);
    second.offset = 48;
    assert_int_equal(ds_locate(m.data, m.len, &second, &at), KF_ERR_LIMIT);
    second.nth = 3;
    second.offset = 0;
    assert_int_equal(ds_locate(m.data, m.len, &second, &at), KF_ERR_NOT_FOUND);
    kf_buf_free(&m);
}

static void swap_parts_exchanges_sm_a_and_sm_b(void **state)
{
    (void)state;
    kf_buf m, orig;
    build_response(&m, true, true);
    build_response(&orig, true, true);
    assert_int_equal(role_of_part(m.data, m.len, 1), 1);
    assert_int_equal(role_of_part(m.data, m.len, 2), 2);
    assert_int_equal(ds_swap_parts(m.data, m.len), KF_OK);
    assert_int_equal(role_of_part(m.data, m.len, 1), 2);
    assert_int_equal(role_of_part(m.data, m.len, 2), 1);
    assert_int_equal(ds_item_check(m.data, m.len, 65536), KF_OK);
    assert_memory_not_equal(m.data, orig.data, m.len);
    assert_int_equal(ds_swap_parts(m.data, m.len), KF_OK);
    assert_memory_equal(m.data, orig.data, m.len);
    kf_buf_free(&m);
    kf_buf_free(&orig);
    /* parts not next to each other, or no parts at all: refused, message untouched */
    build_response(&m, true, false);
    build_response(&orig, true, false);
    assert_int_equal(ds_swap_parts(m.data, m.len), KF_ERR_NOT_FOUND);
    assert_memory_equal(m.data, orig.data, m.len);
    kf_buf_free(&m);
    kf_buf_free(&orig);
    build_response(&m, false, true);
    assert_int_equal(ds_swap_parts(m.data, m.len), KF_ERR_NOT_FOUND);
    kf_buf_free(&m);
}

static void matching_takes_the_first_rule_that_fits(void **state)
{
    (void)state;
    struct ds_script s;
    unsigned line;
    char why[200];
    kf_buf m;
    build_response(&m, true, true);
    uint8_t other[16] = {0x54, 0x01, 0x1A, 0x03, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1};
    assert_int_equal(parse("up 2 drop\n"
                           "down @KeyfleetPairPart swap-parts\n"
                           "down 3 dup\n"
                           "* 3 hold\n"
                           "down * delay 5\n",
                           &s, &line, why),
                     KF_OK);
    assert_null(ds_script_match(&s, DS_UP, 1, other, sizeof(other)));
    assert_int_equal(ds_script_match(&s, DS_UP, 2, other, sizeof(other))->action, DS_DROP);
    assert_int_equal(ds_script_match(&s, DS_UP, 3, other, sizeof(other))->action, DS_HOLD);
    assert_int_equal(ds_script_match(&s, DS_DOWN, 3, other, sizeof(other))->action, DS_DUP);
    assert_int_equal(ds_script_match(&s, DS_DOWN, 3, m.data, m.len)->action, DS_SWAP_PARTS);
    assert_int_equal(ds_script_match(&s, DS_DOWN, 1, m.data, m.len)->action, DS_SWAP_PARTS);
    assert_int_equal(ds_script_match(&s, DS_DOWN, 1, other, sizeof(other))->action, DS_DELAY);
    assert_int_equal(ds_script_match(&s, DS_DOWN, 1, other, sizeof(other))->line, 5);
    assert_null(ds_script_match(NULL, DS_DOWN, 1, other, sizeof(other)));
    ds_script_free(&s);
    kf_buf_free(&m);
}

static void messages_are_named_for_the_log(void **state)
{
    (void)state;
    kf_buf m;
    char d[200];
    build_response(&m, true, true);
    ds_describe(m.data, m.len, d, sizeof(d));
    assert_string_equal(d, "ResponseMessage KeyfleetPairKeyRequest Success kek=5 counter=3");
    uint8_t seq[16] = {0x54, 0x01, 0x1A, 0x03, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 42};
    ds_describe(seq, sizeof(seq), d, sizeof(d));
    assert_string_equal(d, "KeyfleetSeq seq=42");
    uint8_t unknown[8] = {0x54, 0xFF, 0xFE, 0x01, 0, 0, 0, 0};
    ds_describe(unknown, sizeof(unknown), d, sizeof(d));
    assert_string_equal(d, "0x54fffe");
    ds_describe(unknown, 2, d, sizeof(d));
    assert_string_equal(d, "malformed");
    /* truncation never overflows */
    ds_describe(m.data, m.len, d, 8);
    assert_int_equal(strlen(d), 7);
    kf_buf_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(script_parses_every_action),
        cmocka_unit_test(script_refusals_name_the_line),
        cmocka_unit_test(items_are_found_by_tag_and_rank),
        cmocka_unit_test(item_values_are_read_by_type),
        cmocka_unit_test(flips_land_where_the_locator_says),
        cmocka_unit_test(swap_parts_exchanges_sm_a_and_sm_b),
        cmocka_unit_test(matching_takes_the_first_rule_that_fits),
        cmocka_unit_test(messages_are_named_for_the_log),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
