/*
 * Shared by the libkeyfleet-device tests: a fake environment (storage that
 * can be told to fail, a settable clock, a deterministic random source), a
 * device made from an installation package, and the server's half of a
 * pairing built with kfd_issue_part as keyfleetd would.
 */
#ifndef TEST_DEVICE_FIXTURE_H
#define TEST_DEVICE_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "device/internal.h"
#include "test_hex.h"
#include "keyfleet/device.h"
#include "keyfleet/kmip_tags.h"

#define T0 1700000000 /* the fake clock's start */
#define DAY 86400

struct fake_env {
    int64_t now;
    bool fail_save;
    unsigned saves;
    uint8_t saved[KFD_STATE_MAX];
    size_t saved_len;
    uint64_t rng;
};

static inline int fake_save(void *ctx, const uint8_t *state, size_t len)
{
    struct fake_env *f = ctx;
    if (f->fail_save)
        return -1;
    assert_true(len <= sizeof(f->saved));
    memcpy(f->saved, state, len);
    f->saved_len = len;
    f->saves++;
    return 0;
}

static inline int64_t fake_now(void *ctx)
{
    return ((struct fake_env *)ctx)->now;
}

/* splitmix64: deterministic, distinct per call; a test RNG only. */
static inline int fake_random(void *ctx, uint8_t *out, size_t n)
{
    struct fake_env *f = ctx;
    for (size_t i = 0; i < n; i++) {
        uint64_t z = (f->rng += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        out[i] = (uint8_t)(z ^ (z >> 31));
    }
    return 0;
}

static inline struct kfd_env fake_env_of(struct fake_env *f, uint64_t seed)
{
    memset(f, 0, sizeof(*f));
    f->now = T0;
    f->rng = seed;
    return (struct kfd_env){f, fake_save, fake_now, fake_random};
}

static inline void fill_key(uint8_t key[KFD_KEY_LEN], uint8_t seed)
{
    for (size_t i = 0; i < KFD_KEY_LEN; i++)
        key[i] = (uint8_t)(seed * 31 + i);
}

/* A DevicePackage as keyfleetd exports it. */
static inline size_t make_package(uint8_t *out, size_t cap, const char *id, const char *domain,
                                  const uint8_t mkek[KFD_KEY_LEN])
{
    kf_buf b;
    size_t mark;
    kf_buf_fixed(&b, out, cap);
    assert_int_equal(kfd_put_open(&b, KMIP_TAG_KEYFLEET_DEVICE_PACKAGE, &mark), KF_OK);
    assert_int_equal(kfd_put_u32(&b, KMIP_TAG_KEYFLEET_PROTO_VERSION, 1), KF_OK);
    assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_DEVICE_ID, id), KF_OK);
    assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_DOMAIN, domain), KF_OK);
    assert_int_equal(kfd_put_bytes(&b, KMIP_TAG_KEYFLEET_MASTER_KEY, mkek, KFD_KEY_LEN), KF_OK);
    assert_int_equal(kfd_put_close(&b, mark), KF_OK);
    return b.len;
}

static inline void make_device(struct kfd_device *d, struct fake_env *f, const char *id,
                               const uint8_t mkek[KFD_KEY_LEN], uint64_t seed)
{
    uint8_t pkg[256];
    struct kfd_env env = fake_env_of(f, seed);
    size_t len = make_package(pkg, sizeof(pkg), id, "plant-7", mkek);
    assert_int_equal(kfd_install(d, &env, pkg, len), KF_OK);
}

/* What the server does for one PairKeyRequest: n KEKs with consecutive windows from nb. */
struct issued {
    uint8_t sm_a[KFD_MSG_MAX], sm_b[KFD_MSG_MAX];
    size_t a_len, b_len;
    struct kfd_issue_kek meta[KFD_MAX_KEKS];
    uint8_t keks[KFD_MAX_KEKS][KFD_KEY_LEN];
    uint32_t count;
};

static inline void issue(struct issued *m, const uint8_t mkek_a[KFD_KEY_LEN],
                         const uint8_t mkek_b[KFD_KEY_LEN], const char *id_a, const char *id_b,
                         uint64_t c_a, uint64_t c_b, uint64_t first_id, uint32_t count, int64_t nb,
                         int64_t lifetime, uint32_t max_uses)
{
    uint8_t nonce[KFD_NONCE_LEN];
    kf_buf out;
    memset(m, 0, sizeof(*m));
    m->count = count;
    for (uint32_t i = 0; i < count; i++) {
        m->meta[i] = (struct kfd_issue_kek){first_id + i, nb + (int64_t)i * lifetime,
                                            nb + (int64_t)(i + 1) * lifetime, max_uses};
        fill_key(m->keks[i], (uint8_t)(first_id + i + 100));
    }
    memset(nonce, 0xA1, sizeof(nonce));
    kf_buf_fixed(&out, m->sm_a, sizeof(m->sm_a));
    assert_int_equal(kfd_issue_part(mkek_a, KFD_ROLE_A, id_a, id_b, c_a, m->meta,
                                    (const uint8_t(*)[KFD_KEY_LEN])m->keks, count, nonce, &out),
                     KF_OK);
    m->a_len = out.len;
    memset(nonce, 0xB2, sizeof(nonce));
    kf_buf_fixed(&out, m->sm_b, sizeof(m->sm_b));
    assert_int_equal(kfd_issue_part(mkek_b, KFD_ROLE_B, id_a, id_b, c_b, m->meta,
                                    (const uint8_t(*)[KFD_KEY_LEN])m->keks, count, nonce, &out),
                     KF_OK);
    m->b_len = out.len;
}

/* Decode an ack and check its MAC under mkek; returns its status. */
static inline uint32_t ack_status(const uint8_t *ack, size_t len, const uint8_t mkek[KFD_KEY_LEN],
                                  struct kfd_ack *out)
{
    struct kfd_ack a;
    assert_int_equal(kfd_ack_decode(ack, len, &a), KF_OK);
    assert_int_equal(kfd_ack_verify(&a, mkek), KF_OK);
    if (out)
        *out = a;
    return a.status;
}

/* Hex (whitespace ignored) into out; returns the byte count. */
static inline size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    return unhex_into(hex, out, cap);
}

/* A KMIP Response Message as keyfleetd sends it (with a Time Stamp in the
 * header), one batch item. status 0 = Success with payload; otherwise a
 * failure with reason and message. */
struct response_spec {
    uint32_t operation, status, reason;
    const char *message;
    const uint8_t *payload;
    size_t payload_len;
    uint32_t batch_count;
    bool omit_operation;
};

static inline size_t build_response(uint8_t *out, size_t cap, const struct response_spec *r)
{
    kf_buf b;
    size_t msg, hdr, ver, item, body;
    kf_buf_fixed(&b, out, cap);
    assert_int_equal(kfd_put_open(&b, KMIP_TAG_RESPONSE_MESSAGE, &msg), KF_OK);
    assert_int_equal(kfd_put_open(&b, KMIP_TAG_RESPONSE_HEADER, &hdr), KF_OK);
    assert_int_equal(kfd_put_open(&b, KMIP_TAG_PROTOCOL_VERSION, &ver), KF_OK);
    assert_int_equal(kfd_put_u32(&b, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1), KF_OK);
    assert_int_equal(kfd_put_u32(&b, KMIP_TAG_PROTOCOL_VERSION_MINOR, 4), KF_OK);
    assert_int_equal(kfd_put_close(&b, ver), KF_OK);
    assert_int_equal(kfd_put_u64(&b, KMIP_TAG_TIME_STAMP, T0), KF_OK);
    assert_int_equal(kfd_put_u32(&b, KMIP_TAG_BATCH_COUNT, r->batch_count ? r->batch_count : 1),
                     KF_OK);
    assert_int_equal(kfd_put_close(&b, hdr), KF_OK);
    assert_int_equal(kfd_put_open(&b, KMIP_TAG_BATCH_ITEM, &item), KF_OK);
    if (!r->omit_operation)
        assert_int_equal(kfd_put_u32(&b, KMIP_TAG_OPERATION, r->operation), KF_OK);
    assert_int_equal(kfd_put_u32(&b, KMIP_TAG_RESULT_STATUS, r->status), KF_OK);
    if (r->status != 0) {
        assert_int_equal(kfd_put_u32(&b, KMIP_TAG_RESULT_REASON, r->reason), KF_OK);
        assert_int_equal(kf_buf_put_u24(&b, KMIP_TAG_RESULT_MESSAGE), KF_OK);
        assert_int_equal(kf_buf_put_u8(&b, 0x07), KF_OK);
        size_t n = strlen(r->message);
        assert_int_equal(kf_buf_put_u32(&b, (uint32_t)n), KF_OK);
        assert_int_equal(kf_buf_put_bytes(&b, r->message, n), KF_OK);
        assert_int_equal(kf_buf_put_zeros(&b, (8 - n % 8) % 8), KF_OK);
    } else {
        assert_int_equal(kfd_put_open(&b, KMIP_TAG_RESPONSE_PAYLOAD, &body), KF_OK);
        assert_int_equal(kf_buf_put_bytes(&b, r->payload, r->payload_len), KF_OK);
        assert_int_equal(kfd_put_close(&b, body), KF_OK);
    }
    assert_int_equal(kfd_put_close(&b, item), KF_OK);
    assert_int_equal(kfd_put_close(&b, msg), KF_OK);
    return b.len;
}

/* The operation and payload of a KMIP Request Message (as kfd_kmip_wrap writes it). */
static inline void parse_request(const uint8_t *req, size_t len, uint32_t *op,
                                 struct kfd_span *payload)
{
    kf_buf in, msg, hdr, item, body;
    kf_buf_reader(&in, req, len);
    assert_int_equal(kfd_get_open(&in, KMIP_TAG_REQUEST_MESSAGE, &msg, NULL), KF_OK);
    assert_int_equal(kfd_get_end(&in), KF_OK);
    assert_int_equal(kfd_get_open(&msg, KMIP_TAG_REQUEST_HEADER, &hdr, NULL), KF_OK);
    assert_int_equal(kfd_get_open(&msg, KMIP_TAG_BATCH_ITEM, &item, NULL), KF_OK);
    assert_int_equal(kfd_get_u32(&item, KMIP_TAG_OPERATION, op), KF_OK);
    assert_int_equal(kfd_get_open(&item, KMIP_TAG_REQUEST_PAYLOAD, &body, NULL), KF_OK);
    payload->p = kf_buf_read_ptr(&body);
    payload->len = kf_buf_remaining(&body);
}

#endif
