/*
 * Shared by test_kms_ops2.c, test_kms_certify.c, test_kms_import.c and (through
 * kms_crypto_fixture.h) test_kms_crypto.c and test_kms_keys.c: a dev-mode
 * service in a temporary directory with the domains VENDOR and OTHER (VENDOR
 * only when KF_TEST_VENDOR_ONLY is defined), KMIP request builders driving
 * kf_kms_handle_kmip as an administrator (or as any principal), and small
 * helpers. Define KF_TEST_NAME (the temporary directory's tag) before including.
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
    if (kf_kms_open(&cfg, &f->kms) < 0 || kf_kms_domain_create(f->kms, "test", "VENDOR", NULL) < 0)
        return -1;
#ifndef KF_TEST_VENDOR_ONLY
    if (kf_kms_domain_create(f->kms, "test", "OTHER", NULL) < 0)
        return -1;
#endif
    if (kf_arena_new(&f->a, 0) < 0)
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

/* Hex to bytes in the fixture's arena; *len (if len) their count. */
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

/* A request of one batch item in protocol major.(1 ? 4 : 1); *payload to fill. */
static KF_TEST_UNUSED kf_ttlv *request(struct fixture *f, int major, uint32_t op, kf_ttlv **payload)
{
    kf_ttlv *msg = kf_ttlv_request(f->a, major, major == 1 ? 4 : 1, op, payload);
    assert_non_null(msg);
    return msg;
}

/* Send msg as who; returns the Result Status, *item the response batch item. */
static KF_TEST_UNUSED uint32_t send_request_as(struct fixture *f, const struct kf_principal *who,
                                               kf_ttlv *msg, const kf_ttlv **item)
{
    kf_buf req, resp;
    kf_ttlv *r;
    assert_int_equal(kf_buf_alloc(&req, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&resp, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(msg, &req), KF_OK);
    assert_int_equal(kf_kms_handle_kmip(f->kms, who, req.data, req.len, &resp), KF_OK);
    assert_int_equal(kf_ttlv_decode(resp.data, resp.len, NULL, f->a, &r), KF_OK);
    *item = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
    uint32_t status = 99;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(*item, KMIP_TAG_RESULT_STATUS), &status), KF_OK);
    kf_buf_free(&req);
    kf_buf_free(&resp);
    return status;
}

/* Send msg as the local administrator (default domain VENDOR). */
static KF_TEST_UNUSED uint32_t send_request(struct fixture *f, kf_ttlv *msg, const kf_ttlv **item)
{
    struct kf_principal who;
    kf_principal_local_admin(&who, "test");
    snprintf(who.default_domain, sizeof(who.default_domain), "VENDOR");
    return send_request_as(f, &who, msg, item);
}

/* The Result Reason of a failed batch item; *message (if message) its Result Message. */
static KF_TEST_UNUSED uint32_t reason_of(const kf_ttlv *item, const char **message)
{
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

/* The response payload of a request that must succeed. */
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

/* The Result Reason of a request that must fail; *message (if message) its Result Message. */
static KF_TEST_UNUSED uint32_t expect_failure(struct fixture *f, kf_ttlv *msg, const char **message)
{
    const kf_ttlv *item;
    assert_int_equal(send_request(f, msg, &item), KMIP_RESULT_STATUS_OPERATION_FAILED);
    return reason_of(item, message);
}

static KF_TEST_UNUSED void copy_uid(const kf_ttlv *payload, uint32_t tag, char uid[KF_UID_MAX])
{
    const char *s;
    size_t n;
    assert_int_equal(kf_ttlv_get_text(kf_ttlv_find(payload, tag), &s, &n), KF_OK);
    assert_true(n < KF_UID_MAX);
    memcpy(uid, s, n + 1);
}

/* op on uid, which must succeed. */
static KF_TEST_UNUSED void uid_op(struct fixture *f, int major, uint32_t op, const char *uid)
{
    kf_ttlv *p, *msg = request(f, major, op, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    expect_success(f, msg);
}

/* Every attribute of uid (2.x Get Attributes without references). */
static KF_TEST_UNUSED const kf_ttlv *attributes_of(struct fixture *f, const char *uid)
{
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_GET_ATTRIBUTES, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    const kf_ttlv *at = kf_ttlv_find(expect_success(f, msg), KMIP_TAG_ATTRIBUTES);
    assert_non_null(at);
    return at;
}

static KF_TEST_UNUSED uint32_t enum_attr(const kf_ttlv *set, uint32_t tag)
{
    uint32_t v = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(set, tag), &v), KF_OK);
    return v;
}

/* Whether set has a Link of type to target. */
static KF_TEST_UNUSED bool has_link(const kf_ttlv *set, uint32_t type, const char *target)
{
    for (const kf_ttlv *l = kf_ttlv_find(set, KMIP_TAG_LINK); l;
         l = kf_ttlv_find_next(l, KMIP_TAG_LINK)) {
        uint32_t t = 0;
        if (kf_ttlv_get_enum(kf_ttlv_find(l, KMIP_TAG_LINK_TYPE), &t) == KF_OK && t == type &&
            kf_ttlv_text_equals(kf_ttlv_find(l, KMIP_TAG_LINKED_OBJECT_IDENTIFIER), target))
            return true;
    }
    return false;
}

#endif
