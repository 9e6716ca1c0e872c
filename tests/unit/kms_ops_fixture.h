/*
 * Shared by test_kms_ops2.c and test_kms_certify.c: a dev-mode service in a
 * temporary directory, KMIP request builders driving kf_kms_handle_kmip as an
 * administrator, and small helpers. Define KF_TEST_NAME before including.
 */
#ifndef KF_TEST_KMS_OPS_FIXTURE_H
#define KF_TEST_KMS_OPS_FIXTURE_H

#ifndef KF_TEST_UNUSED
#define KF_TEST_UNUSED __attribute__((unused))
#endif

struct fixture {
    char dir[64];
    kf_kms *kms;
    kf_arena *a;
};

static KF_TEST_UNUSED int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/kf-test-" KF_TEST_NAME ".XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    struct kf_kms_config cfg = {.dir = f->dir, .dev = true};
    if (kf_kms_open(&cfg, &f->kms) < 0 || kf_kms_domain_create(f->kms, "test", "VENDOR", NULL) < 0 ||
        kf_kms_domain_create(f->kms, "test", "OTHER", NULL) < 0 || kf_arena_new(&f->a, 0) < 0)
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

static KF_TEST_UNUSED const kf_ttlv *expect_success(struct fixture *f, kf_ttlv *msg)
{
    const kf_ttlv *item;
    if (send_request(f, msg, &item) != KMIP_RESULT_STATUS_SUCCESS) {
        const char *m = "(no message)";
        size_t n;
        if (kf_ttlv_get_text(kf_ttlv_find(item, KMIP_TAG_RESULT_MESSAGE), &m, &n) < 0)
            m = "(no message)";
        fail_msg("request failed: %s", m);
    }
    return kf_ttlv_find(item, KMIP_TAG_RESPONSE_PAYLOAD);
}

/* The Result Reason of a request that must fail; *message its Result Message. */
static KF_TEST_UNUSED uint32_t expect_failure(struct fixture *f, kf_ttlv *msg, const char **message)
{
    const kf_ttlv *item;
    assert_int_equal(send_request(f, msg, &item), KMIP_RESULT_STATUS_OPERATION_FAILED);
    uint32_t reason = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_REASON), &reason), KF_OK);
    size_t n;
    const char *m = "";
    if (kf_ttlv_get_text(kf_ttlv_find(item, KMIP_TAG_RESULT_MESSAGE), &m, &n) < 0)
        m = "";
    if (message)
        *message = m;
    return reason;
}

static KF_TEST_UNUSED void copy_uid(const kf_ttlv *payload, uint32_t tag, char uid[KF_UID_MAX])
{
    const char *s;
    size_t n;
    assert_int_equal(kf_ttlv_get_text(kf_ttlv_find(payload, tag), &s, &n), KF_OK);
    assert_true(n < KF_UID_MAX);
    memcpy(uid, s, n + 1);
}

static KF_TEST_UNUSED void uid_op(struct fixture *f, int major, uint32_t op, const char *uid)
{
    kf_ttlv *p, *msg = request(f, major, op, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    expect_success(f, msg);
}

#endif
