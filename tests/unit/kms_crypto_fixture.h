/*
 * Shared by test_kms_crypto.c and test_kms_keys.c: a dev-mode service in a
 * temporary directory with a VENDOR domain, KMIP request builders that drive
 * kf_kms_handle_kmip as an administrator; the published RSA vectors come
 * from vectors_rsa.h. Each test program uses a subset, hence KF_TEST_UNUSED.
 */
#ifndef KF_TEST_KMS_CRYPTO_FIXTURE_H
#define KF_TEST_KMS_CRYPTO_FIXTURE_H

#define KF_TEST_UNUSED __attribute__((unused))

#include "vectors_rsa.h"

struct fixture {
    char dir[64];
    kf_kms *kms;
    kf_arena *a;
};

static KF_TEST_UNUSED int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/kf-test-kmsc.XXXXXX");
    if (!f || !mkdtemp(f->dir))
        return -1;
    struct kf_kms_config cfg = {.dir = f->dir, .dev = true};
    if (kf_kms_open(&cfg, &f->kms) < 0 || kf_kms_domain_create(f->kms, "test", "VENDOR", NULL) < 0 ||
        kf_arena_new(&f->a, 0) < 0)
        return -1;
    *state = f;
    return 0;
}

static KF_TEST_UNUSED int teardown(void **state)
{
    struct fixture *f = *state;
    kf_arena_free(f->a);
    kf_kms_close(f->kms);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* Hex to bytes in the fixture's arena. */
static KF_TEST_UNUSED uint8_t *unhex(struct fixture *f, const char *hex, size_t *len)
{
    size_t n = strlen(hex) / 2;
    uint8_t *out = kf_arena_alloc(f->a, n + 1);
    assert_non_null(out);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    if (len)
        *len = n;
    return out;
}

static KF_TEST_UNUSED kf_ttlv *request(struct fixture *f, int major, uint32_t op, kf_ttlv **payload)
{
    kf_arena *a = f->a;
    kf_ttlv *msg = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    kf_ttlv *h = kf_ttlv_struct(a, msg, KMIP_TAG_REQUEST_HEADER);
    kf_ttlv *pv = kf_ttlv_struct(a, h, KMIP_TAG_PROTOCOL_VERSION);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR, major);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MINOR, major == 1 ? 4 : 1);
    kf_ttlv_add_int(a, h, KMIP_TAG_BATCH_COUNT, 1);
    kf_ttlv *bi = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, op);
    *payload = kf_ttlv_struct(a, bi, KMIP_TAG_REQUEST_PAYLOAD);
    return msg;
}

/* Send msg; returns the Result Status, *item the response batch item. */
static KF_TEST_UNUSED uint32_t send_request(struct fixture *f, kf_ttlv *msg, const kf_ttlv **item)
{
    kf_buf req, resp;
    kf_ttlv *r;
    assert_int_equal(kf_buf_alloc(&req, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&resp, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(msg, &req), KF_OK);
    struct kf_principal who;
    kf_principal_local_admin(&who, "test");
    snprintf(who.default_domain, sizeof(who.default_domain), "VENDOR");
    assert_int_equal(kf_kms_handle_kmip(f->kms, &who, req.data, req.len, &resp), KF_OK);
    assert_int_equal(kf_ttlv_decode(resp.data, resp.len, NULL, f->a, &r), KF_OK);
    *item = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
    uint32_t status = 99;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(*item, KMIP_TAG_RESULT_STATUS), &status), KF_OK);
    kf_buf_free(&req);
    kf_buf_free(&resp);
    return status;
}

/* The response payload of a request that must succeed. */
static KF_TEST_UNUSED const kf_ttlv *expect_success(struct fixture *f, kf_ttlv *msg)
{
    const kf_ttlv *item;
    uint32_t st = send_request(f, msg, &item);
    if (st != KMIP_RESULT_STATUS_SUCCESS) {
        const char *m = "";
        size_t n;
        if (kf_ttlv_get_text(kf_ttlv_find(item, KMIP_TAG_RESULT_MESSAGE), &m, &n) < 0)
            m = "(no message)";
        fail_msg("request failed: %s", m);
    }
    return kf_ttlv_find(item, KMIP_TAG_RESPONSE_PAYLOAD);
}

/* The Result Reason of a request that must fail. */
static KF_TEST_UNUSED uint32_t expect_failure(struct fixture *f, kf_ttlv *msg)
{
    const kf_ttlv *item;
    assert_int_equal(send_request(f, msg, &item), KMIP_RESULT_STATUS_OPERATION_FAILED);
    uint32_t reason = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_REASON), &reason), KF_OK);
    return reason;
}

static KF_TEST_UNUSED void assert_bytes(const kf_ttlv *parent, uint32_t tag, const uint8_t *want, size_t len)
{
    const uint8_t *p;
    size_t n;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(parent, tag), &p, &n), KF_OK);
    assert_int_equal(n, len);
    assert_memory_equal(p, want, len);
}

/* One attribute, in the 1.x (Template-Attribute) or 2.x (Attributes) form. */
static KF_TEST_UNUSED kf_ttlv *attr_group(struct fixture *f, kf_ttlv *p, int major, uint32_t v1_tag,
                           uint32_t v2_tag)
{
    return kf_ttlv_struct(f->a, p, major == 1 ? v1_tag : v2_tag);
}

static KF_TEST_UNUSED void add_attr_enum(struct fixture *f, kf_ttlv *g, int major, const char *name, uint32_t tag,
                          uint32_t v)
{
    if (major >= 2) {
        kf_ttlv_add_enum(f->a, g, tag, v);
        return;
    }
    kf_ttlv *at = kf_ttlv_struct(f->a, g, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_NAME, name);
    kf_ttlv_add_enum(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE, v);
}

static KF_TEST_UNUSED void add_attr_int(struct fixture *f, kf_ttlv *g, int major, const char *name, uint32_t tag,
                         int32_t v)
{
    if (major >= 2) {
        kf_ttlv_add_int(f->a, g, tag, v);
        return;
    }
    kf_ttlv *at = kf_ttlv_struct(f->a, g, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_NAME, name);
    kf_ttlv_add_int(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE, v);
}

static KF_TEST_UNUSED void uid_request(struct fixture *f, int major, uint32_t op, const char *uid)
{
    kf_ttlv *p, *msg = request(f, major, op, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    expect_success(f, msg);
}

/*
 * Register a key (symmetric, private or public) with algorithm and usage
 * mask, in protocol major; activate it when asked. uid receives the UID.
 */
static KF_TEST_UNUSED void register_key(struct fixture *f, int major, uint32_t type, uint32_t format,
                         const uint8_t *key, size_t len, uint32_t alg, uint32_t usage,
                         bool activate, char uid[KF_UID_MAX])
{
    kf_ttlv *p, *msg = request(f, major, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, type);
    kf_ttlv *g = attr_group(f, p, major, KMIP_TAG_TEMPLATE_ATTRIBUTE, KMIP_TAG_ATTRIBUTES);
    add_attr_enum(f, g, major, "Cryptographic Algorithm", KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, alg);
    add_attr_int(f, g, major, "Cryptographic Usage Mask", KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK,
                 (int32_t)usage);
    uint32_t tag = type == KMIP_OBJ_SYMMETRIC_KEY ? KMIP_TAG_SYMMETRIC_KEY
                   : type == KMIP_OBJ_PRIVATE_KEY ? KMIP_TAG_PRIVATE_KEY
                                                  : KMIP_TAG_PUBLIC_KEY;
    kf_ttlv *o = kf_ttlv_struct(f->a, p, tag);
    kf_ttlv *kb = kf_ttlv_struct(f->a, o, KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, format);
    kf_ttlv *kv = kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE);
    kf_ttlv_add_bytes(f->a, kv, KMIP_TAG_KEY_MATERIAL, key, len);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, alg);
    const kf_ttlv *r = expect_success(f, msg);
    const char *s;
    size_t n;
    assert_int_equal(kf_ttlv_get_text(kf_ttlv_find(r, KMIP_TAG_UNIQUE_IDENTIFIER), &s, &n), KF_OK);
    assert_true(n < KF_UID_MAX);
    memcpy(uid, s, n + 1);
    if (activate)
        uid_request(f, major, KMIP_OP_ACTIVATE, uid);
}

#endif
