/*
 * libkeyfleet-device, part 3: the minimal KMIP envelope. The request bytes
 * are checked against a hand-assembled KMIP 1.4 Request Message (tags from
 * the KMIP 1.4 specification, section 9.1.3.1); responses with a Time Stamp,
 * failures with reason and message, and every malformation are refused.
 */
#include "test_device_fixture.h"

static void wrap_builds_request_message(void **state)
{
    (void)state;
    uint8_t payload[16], want[160], mem[160];
    unhex("54010207 00000002 6D310000 00000000", payload, sizeof(payload));
    size_t n = unhex("42007801 00000070"
                     "42007701 00000038"
                     "42006901 00000020"
                     "42006A02 00000004 00000001 00000000"
                     "42006B02 00000004 00000004 00000000"
                     "42000D02 00000004 00000001 00000000"
                     "42000F01 00000028"
                     "42005C05 00000004 8000000D 00000000"
                     "42007901 00000010"
                     "54010207 00000002 6D310000 00000000",
                     want, sizeof(want));
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kfd_kmip_wrap(KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, payload, 16, &out), KF_OK);
    assert_int_equal(out.len, n);
    assert_memory_equal(mem, want, n);
    /* A payload that is not whole items, too large, or a buffer too small. */
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kfd_kmip_wrap(1, payload, 12, &out), KF_ERR_ARG);
    assert_int_equal(kfd_kmip_wrap(1, payload, KFD_MSG_MAX + 8, &out), KF_ERR_ARG);
    kf_buf_fixed(&out, mem, n - 1);
    assert_int_equal(kfd_kmip_wrap(KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, payload, 16, &out),
                     KF_ERR_NOSPACE);
    assert_int_equal(out.len, 0);
}

static void unwrap_success(void **state)
{
    (void)state;
    uint8_t payload[32], resp[512];
    struct kfd_span got;
    uint32_t reason = 99;
    char msg[64] = "stale";
    memset(payload, 0, sizeof(payload));
    unhex("54010207 00000002 6D310000 00000000 54010307 00000002 62310000 00000000", payload,
          sizeof(payload));
    struct response_spec r = {KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, 0, 0, NULL, payload, 32, 0, false};
    size_t n = build_response(resp, sizeof(resp), &r);
    assert_int_equal(kfd_kmip_unwrap(resp, n, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, &got, &reason, msg,
                                     sizeof(msg)),
                     KF_OK);
    assert_int_equal(got.len, 32);
    assert_memory_equal(got.p, payload, 32);
    assert_int_equal(reason, 0);
    assert_string_equal(msg, "");
    /* Operation may be left out of a response; an empty payload is an empty span. */
    r.omit_operation = true;
    r.payload_len = 0;
    n = build_response(resp, sizeof(resp), &r);
    assert_int_equal(
        kfd_kmip_unwrap(resp, n, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, &got, NULL, NULL, 0), KF_OK);
    assert_int_equal(got.len, 0);
}

static void unwrap_failure(void **state)
{
    (void)state;
    uint8_t resp[512];
    struct kfd_span got;
    uint32_t reason = 0;
    char msg[16];
    struct response_spec r = {
        KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, 1, 0x0D, "device not registered", NULL, 0, 0, false};
    size_t n = build_response(resp, sizeof(resp), &r);
    assert_int_equal(kfd_kmip_unwrap(resp, n, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, &got, &reason, msg,
                                     sizeof(msg)),
                     KF_ERR_DEVICE_SERVER);
    assert_int_equal(reason, 0x0D);
    assert_string_equal(msg, "device not regi"); /* cut to fit, always terminated */
    assert_null(got.p);
}

static void unwrap_refusals(void **state)
{
    (void)state;
    uint8_t payload[16], resp[512], copy[512];
    struct kfd_span got;
    unhex("54010207 00000002 6D310000 00000000", payload, sizeof(payload));
    struct response_spec r = {KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, 0, 0, NULL, payload, 16, 0, false};
    size_t n = build_response(resp, sizeof(resp), &r);
    /* An answer to another operation, two batch items announced, trailing bytes, short. */
    assert_int_equal(
        kfd_kmip_unwrap(resp, n, KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST, &got, NULL, NULL, 0),
        KF_ERR_PAIR_MALFORMED);
    r.batch_count = 2;
    size_t n2 = build_response(copy, sizeof(copy), &r);
    assert_int_equal(
        kfd_kmip_unwrap(copy, n2, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, &got, NULL, NULL, 0),
        KF_ERR_PAIR_MALFORMED);
    memcpy(copy, resp, n);
    memset(copy + n, 0, 8);
    assert_int_equal(
        kfd_kmip_unwrap(copy, n + 8, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, &got, NULL, NULL, 0),
        KF_ERR_PAIR_MALFORMED);
    assert_int_equal(
        kfd_kmip_unwrap(resp, n - 8, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, &got, NULL, NULL, 0),
        KF_ERR_PAIR_MALFORMED);
    /* Every byte flipped: refused, or (in the skipped Time Stamp or payload value) accepted
     * with the payload still inside the message. */
    unsigned refused = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(copy, resp, n);
        copy[i] ^= 0xFF;
        int rc = kfd_kmip_unwrap(copy, n, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, &got, NULL, NULL, 0);
        if (rc == KF_OK)
            assert_true(got.p >= copy && got.p + got.len <= copy + n);
        else
            refused++;
    }
    assert_true(refused > n / 2);
    /* A Request Message is not a response. */
    kf_buf out;
    kf_buf_fixed(&out, copy, sizeof(copy));
    assert_int_equal(kfd_kmip_wrap(KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, payload, 16, &out), KF_OK);
    assert_int_equal(
        kfd_kmip_unwrap(copy, out.len, KMIP_OP_KEYFLEET_PAIR_ACK_REPORT, &got, NULL, NULL, 0),
        KF_ERR_PAIR_MALFORMED);
}

static void pair_request_payload(void **state)
{
    (void)state;
    struct fake_env f;
    struct kfd_device d;
    uint8_t mkek[32], mem[256];
    kf_buf out;
    fill_key(mkek, 3);
    make_device(&d, &f, "meter-1", mkek, 1);
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kfd_pair_request(&d, "base-1", 3, 3600, 50, &out), KF_OK);
    kf_buf r;
    char id[KFD_ID_MAX + 1];
    uint32_t v;
    kf_buf_reader(&r, mem, out.len);
    assert_int_equal(kfd_get_id(&r, KMIP_TAG_KEYFLEET_DEVICE_ID_A, id), KF_OK);
    assert_string_equal(id, "meter-1");
    assert_int_equal(kfd_get_id(&r, KMIP_TAG_KEYFLEET_DEVICE_ID_B, id), KF_OK);
    assert_string_equal(id, "base-1");
    assert_int_equal(kfd_get_u32(&r, KMIP_TAG_KEYFLEET_KEK_COUNT, &v), KF_OK);
    assert_int_equal(v, 3);
    assert_int_equal(kfd_get_u32(&r, KMIP_TAG_KEYFLEET_LIFETIME, &v), KF_OK);
    assert_int_equal(v, 3600);
    assert_int_equal(kfd_get_u32(&r, KMIP_TAG_KEYFLEET_MAX_USES, &v), KF_OK);
    assert_int_equal(v, 50);
    assert_int_equal(kfd_get_end(&r), KF_OK);
    /* Zero asks for the server's defaults: the optional items are left out. */
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kfd_pair_request(&d, "base-1", 0, 0, 0, &out), KF_OK);
    assert_int_equal(out.len, 32);
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kfd_pair_request(&d, "meter-1", 1, 0, 0, &out), KF_ERR_ARG);
    assert_int_equal(kfd_pair_request(&d, "base 1", 1, 0, 0, &out), KF_ERR_DEVICE_ID);
    assert_int_equal(kfd_pair_request(&d, "base-1", 9, 0, 0, &out), KF_ERR_ARG);
    kfd_close(&d);
}

/* a || b into out, each PairPart grown by grow_a / grow_b zero bytes inside its structure. */
static size_t join_parts(uint8_t *out, const uint8_t *a, size_t a_len, size_t grow_a,
                         const uint8_t *b, size_t b_len, size_t grow_b)
{
    const uint8_t *part[2] = {a, b};
    size_t len[2] = {a_len, b_len}, grow[2] = {grow_a, grow_b}, n = 0;
    for (int i = 0; i < 2; i++) {
        memcpy(out + n, part[i], len[i]);
        memset(out + n + len[i], 0, grow[i]);
        uint32_t inner = (uint32_t)(len[i] - 8 + grow[i]); /* the structure's length field */
        out[n + 4] = (uint8_t)(inner >> 24), out[n + 5] = (uint8_t)(inner >> 16);
        out[n + 6] = (uint8_t)(inner >> 8), out[n + 7] = (uint8_t)inner;
        n += len[i] + grow[i];
    }
    return n;
}

static void split_checks_framing(void **state)
{
    (void)state;
    struct issued m;
    uint8_t mkek[32], both[2 * KFD_MSG_MAX];
    struct kfd_span a, b;
    fill_key(mkek, 9);
    issue(&m, mkek, mkek, "meter-1", "base-1", 1, 1, 5, 1, T0, DAY, 10);
    memcpy(both, m.sm_a, m.a_len);
    memcpy(both + m.a_len, m.sm_b, m.b_len);
    size_t n = m.a_len + m.b_len;
    assert_int_equal(kfd_pair_split(both, n, &a, &b), KF_OK);
    assert_true(a.p == both && a.len == m.a_len && b.p == both + m.a_len && b.len == m.b_len);
    assert_int_equal(kfd_pair_split(both, m.a_len, &a, &b), KF_ERR_PAIR_MALFORMED);
    memset(both + n, 0, 8);
    assert_int_equal(kfd_pair_split(both, n + 8, &a, &b), KF_ERR_PAIR_MALFORMED);
    both[2] ^= 1; /* not a PairPart */
    assert_int_equal(kfd_pair_split(both, n, &a, &b), KF_ERR_PAIR_MALFORMED);
    assert_int_equal(kfd_pair_split(both, KFD_MSG_MAX + 1, &a, &b), KF_ERR_PAIR_MALFORMED);

    /* The largest valid parts (8 KEKs, 64-character IDs) are KFD_PART_MAX bytes each and split;
     * a part even 8 bytes longer is no valid part, whichever of the two it is. */
    char id_a[65], id_b[65];
    memset(id_a, 'a', 64), memset(id_b, 'b', 64);
    id_a[64] = id_b[64] = '\0';
    struct issued big;
    issue(&big, mkek, mkek, id_a, id_b, 1, 1, 5, KFD_MAX_KEKS, T0, DAY, 10);
    assert_int_equal(big.a_len, KFD_PART_MAX);
    assert_int_equal(big.b_len, KFD_PART_MAX);
    n = join_parts(both, big.sm_a, big.a_len, 0, big.sm_b, big.b_len, 0);
    assert_int_equal(kfd_pair_split(both, n, &a, &b), KF_OK);
    assert_true(a.len == KFD_PART_MAX && b.len == KFD_PART_MAX);
    n = join_parts(both, big.sm_a, big.a_len, 8, big.sm_b, big.b_len, 0);
    assert_int_equal(kfd_pair_split(both, n, &a, &b), KF_ERR_PAIR_MALFORMED);
    n = join_parts(both, big.sm_a, big.a_len, 0, big.sm_b, big.b_len, 8);
    assert_int_equal(kfd_pair_split(both, n, &a, &b), KF_ERR_PAIR_MALFORMED);
    /* The same 8 bytes in a small part are left to kfd_pair_accept: only the size is refused. */
    n = join_parts(both, m.sm_a, m.a_len, 8, m.sm_b, m.b_len, 8);
    assert_int_equal(kfd_pair_split(both, n, &a, &b), KF_OK);
    assert_true(a.len == m.a_len + 8 && b.len == m.b_len + 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wrap_builds_request_message),
        cmocka_unit_test(unwrap_success),
        cmocka_unit_test(unwrap_failure),
        cmocka_unit_test(unwrap_refusals),
        cmocka_unit_test(pair_request_payload),
        cmocka_unit_test(split_checks_framing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
