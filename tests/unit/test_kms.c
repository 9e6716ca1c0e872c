/*
 * Service-layer tests: the behaviour the daemon exposes, without a socket.
 * Stuck random source refuses creation and is audited; domains isolate;
 * a wrapped blob moved to another object fails to unwrap; the lifecycle
 * through the service; KMIP requests, including malformed ones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <pthread.h>
#include <sqlite3.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/log.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "keyfleet/ttlv.h"

#include "kms_fixture.h"

struct fixture {
    char dir[64];
    kf_kms *kms;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || kms_dir_open(f->dir, sizeof(f->dir), "kms", &f->kms) < 0)
        return -1;
    if (kf_kms_domain_create(f->kms, "test", "VENDOR", NULL) < 0 ||
        kf_kms_domain_create(f->kms, "test", "USPS", NULL) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (kms_dir_remove(f->kms, f->dir) < 0)
        return -1;
    free(f);
    return 0;
}

static const struct kf_key_spec aes256 = {.domain = "VENDOR",
                                          .object_type = KF_OBJ_SYMMETRIC_KEY,
                                          .crypto_alg = KMIP_ALG_AES,
                                          .crypto_length = 256,
                                          .usage_mask = KMIP_USAGE_ENCRYPT};

struct last_record {
    char operation[64], result[64], detail[256];
    uint64_t count;
};

static int remember(void *ctx, const struct kf_audit_record *r)
{
    struct last_record *l = ctx;
    snprintf(l->operation, sizeof(l->operation), "%s", r->operation);
    snprintf(l->result, sizeof(l->result), "%s", r->result);
    snprintf(l->detail, sizeof(l->detail), "%s", r->detail);
    l->count++;
    return KF_OK;
}

static int stuck_source(void *ctx, uint8_t *out, size_t len)
{
    (void)ctx;
    memset(out, 0x37, len);
    return KF_OK;
}

static void stuck_random_source_refuses_creation_and_is_audited(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_OK);
    kf_rng_set_source(stuck_source, NULL);
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_ERR_RNG_HEALTH);
    /* Latched: a healthy source alone does not bring it back. */
    kf_rng_set_source(NULL, NULL);
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_ERR_RNG_HEALTH);
    struct last_record l = {0};
    assert_int_equal(kf_kms_audit_list(f->kms, 1, 0, remember, &l), KF_OK);
    assert_string_equal(l.operation, "Create");
    assert_string_equal(l.result, "KF_ERR_RNG_HEALTH");
    assert_non_null(strstr(l.detail, "health test"));
    kf_rng_reset_health();
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_OK);
    assert_string_equal(uid, "VENDOR/2"); /* the refused attempts consumed no id */
    struct kf_audit_report r;
    assert_int_equal(kf_kms_audit_verify(f->kms, &r), KF_OK);
}

static void domains_are_isolated(void **state)
{
    struct fixture *f = *state;
    char v[KF_UID_MAX], u[KF_UID_MAX];
    struct kf_key_spec usps = aes256;
    usps.domain = "USPS";
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, v), KF_OK);
    assert_int_equal(kf_kms_create(f->kms, "test", &usps, u), KF_OK);
    assert_string_equal(v, "VENDOR/1");
    assert_string_equal(u, "USPS/1");
    struct kf_object obj = {0};
    /* USPS/2 does not exist even though VENDOR has a second id space. */
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, v), KF_OK);
    assert_int_equal(kf_kms_get(f->kms, "test", "USPS/2", &obj, NULL), KF_ERR_OBJECT);
    assert_int_equal(kf_kms_get(f->kms, "test", "NOPE/1", &obj, NULL), KF_ERR_OBJECT);
    assert_int_equal(kf_kms_get(f->kms, "test", "VENDOR/x", &obj, NULL), KF_ERR_OBJECT);
    assert_int_equal(kf_kms_get(f->kms, "test", "USPS/1", &obj, NULL), KF_OK);
    assert_int_equal(obj.key_id, 1);
    kf_object_clear(&obj);
}

/* Copy one object's wrapped material onto another row behind the service's back. */
static void move_material(const char *dir, int from_key, int to_key, const char *column_fix)
{
    char path[128], sql[512];
    sqlite3 *db;
    snprintf(path, sizeof(path), "%s/keyfleet.db", dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    snprintf(sql, sizeof(sql),
             "UPDATE object SET material = (SELECT material FROM object WHERE key_id = %d AND "
             "domain_id = (SELECT id FROM domain WHERE name = 'VENDOR')) WHERE key_id = %d AND "
             "domain_id = (SELECT id FROM domain WHERE name = 'VENDOR') %s",
             from_key, to_key, column_fix);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        fail_msg("sql: %s", err);
    assert_int_equal(sqlite3_changes(db), 1); /* the move really happened */
    sqlite3_close(db);
}

static void wrapped_material_moved_to_another_object_fails(void **state)
{
    struct fixture *f = *state;
    char a[KF_UID_MAX], b[KF_UID_MAX];
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, a), KF_OK);
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, b), KF_OK);
    kf_buf m;
    assert_int_equal(kf_buf_alloc(&m, 64, 4096, KF_BUF_SECRET), KF_OK);
    struct kf_object obj = {0};
    assert_int_equal(kf_kms_get(f->kms, "test", b, &obj, &m), KF_OK);
    assert_int_equal(m.len, 32);
    kf_object_clear(&obj);
    move_material(f->dir, 1, 2, "");
    kf_buf_reset(&m);
    assert_int_equal(kf_kms_get(f->kms, "test", b, &obj, &m), KF_ERR_AUTH);
    assert_int_equal(m.len, 0);
    /* The original still unwraps. */
    assert_int_equal(kf_kms_get(f->kms, "test", a, &obj, &m), KF_OK);
    kf_object_clear(&obj);
    kf_buf_free(&m);
}

static void lifecycle_through_the_service(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    struct kf_object obj = {0};
    kf_buf m;
    assert_int_equal(kf_buf_alloc(&m, 64, 4096, KF_BUF_SECRET), KF_OK);
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_OK);
    assert_int_equal(kf_kms_destroy(f->kms, "t", uid), KF_OK); /* Pre-Active -> Destroyed */
    assert_int_equal(kf_kms_get(f->kms, "t", uid, &obj, &m), KF_ERR_STATE);
    assert_int_equal(kf_kms_activate(f->kms, "t", uid), KF_ERR_TRANSITION);
    assert_int_equal(kf_kms_revoke(f->kms, "t", uid, KMIP_REVOKE_KEY_COMPROMISE, 0, NULL), KF_OK);
    assert_int_equal(kf_kms_get(f->kms, "t", uid, &obj, NULL), KF_OK);
    assert_int_equal(obj.state, KF_STATE_DESTROYED_COMPROMISED);
    assert_null(obj.material);
    kf_object_clear(&obj);

    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_OK);
    assert_int_equal(kf_kms_activate(f->kms, "t", uid), KF_OK);
    assert_int_equal(kf_kms_destroy(f->kms, "t", uid), KF_ERR_TRANSITION); /* Active: revoke first */
    assert_int_equal(kf_kms_revoke(f->kms, "t", uid, 99, 0, NULL), KF_ERR_ATTRIBUTE);
    assert_int_equal(kf_kms_revoke(f->kms, "t", uid, KMIP_REVOKE_SUPERSEDED, 0, "rotated"), KF_OK);
    assert_int_equal(kf_kms_get(f->kms, "t", uid, &obj, &m), KF_OK); /* Deactivated still gets */
    assert_int_equal(obj.state, KF_STATE_DEACTIVATED);
    assert_string_equal(obj.revocation_message, "rotated");
    assert_true(obj.deactivation_date > 0);
    kf_object_clear(&obj);
    assert_int_equal(kf_kms_destroy(f->kms, "t", uid), KF_OK);
    assert_int_equal(kf_kms_destroy(f->kms, "t", uid), KF_ERR_TRANSITION);
    kf_buf_free(&m);
}

static void sealed_service_refuses_key_operations(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_OK);
    assert_int_equal(kf_kms_seal(f->kms, "test"), KF_OK);
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_ERR_SEALED);
    assert_int_equal(kf_kms_domain_create(f->kms, "test", "NEW", NULL), KF_ERR_SEALED);
    assert_int_equal(kf_kms_activate(f->kms, "test", uid), KF_ERR_SEALED);
    kf_buf m;
    struct kf_object obj = {0};
    assert_int_equal(kf_buf_alloc(&m, 64, 4096, KF_BUF_SECRET), KF_OK);
    assert_int_equal(kf_kms_get(f->kms, "test", uid, &obj, &m), KF_ERR_SEALED);
    /* Metadata stays readable while sealed; the audit chain is still checked. */
    assert_int_equal(kf_kms_get(f->kms, "test", uid, &obj, NULL), KF_OK);
    kf_object_clear(&obj);
    kf_buf_free(&m);
    struct kf_audit_report r;
    assert_int_equal(kf_kms_audit_verify(f->kms, &r), KF_OK);
}

/* ---- KMIP messages ---- */
static int kmip_call(kf_kms *kms, kf_arena *a, kf_ttlv *msg, const kf_ttlv **item)
{
    kf_buf req, resp;
    kf_ttlv *r;
    assert_int_equal(kf_buf_alloc(&req, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&resp, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(msg, &req), KF_OK);
    struct kf_principal who;
    kf_principal_local_admin(&who, "test");
    assert_int_equal(kf_kms_handle_kmip(kms, &who, req.data, req.len, &resp), KF_OK);
    assert_int_equal(kf_ttlv_decode(resp.data, resp.len, NULL, a, &r), KF_OK);
    assert_int_equal(r->tag, KMIP_TAG_RESPONSE_MESSAGE);
    *item = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
    uint32_t status = 99;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(*item, KMIP_TAG_RESULT_STATUS), &status), KF_OK);
    kf_buf_free(&req);
    kf_buf_free(&resp);
    return (int)status;
}

static kf_ttlv *request(kf_arena *a, int major, int minor, uint32_t op, kf_ttlv **payload)
{
    return kf_ttlv_request(a, major, minor, op, payload);
}

static void kmip_v1_create_with_template_attributes(void **state)
{
    struct fixture *f = *state;
    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    kf_ttlv *p, *msg = request(a, 1, 4, KMIP_OP_CREATE, &p);
    kf_ttlv_add_enum(a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
    kf_ttlv *ta = kf_ttlv_struct(a, p, KMIP_TAG_TEMPLATE_ATTRIBUTE);
    kf_ttlv *at = kf_ttlv_struct(a, ta, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(a, at, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Algorithm");
    kf_ttlv_add_enum(a, at, KMIP_TAG_ATTRIBUTE_VALUE, KMIP_ALG_AES);
    at = kf_ttlv_struct(a, ta, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(a, at, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Length");
    kf_ttlv_add_int(a, at, KMIP_TAG_ATTRIBUTE_VALUE, 128);
    at = kf_ttlv_struct(a, ta, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(a, at, KMIP_TAG_ATTRIBUTE_NAME, "x-keyfleet-domain");
    kf_ttlv_add_text(a, at, KMIP_TAG_ATTRIBUTE_VALUE, "USPS");
    const kf_ttlv *item;
    assert_int_equal(kmip_call(f->kms, a, msg, &item), KMIP_RESULT_STATUS_SUCCESS);
    assert_true(kf_ttlv_text_equals(
        KF_TTLV_PATH(item, KMIP_TAG_RESPONSE_PAYLOAD, KMIP_TAG_UNIQUE_IDENTIFIER), "USPS/1"));

    /* Get returns the 16-byte key in a Raw key block. */
    msg = request(a, 1, 4, KMIP_OP_GET, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, "USPS/1");
    assert_int_equal(kmip_call(f->kms, a, msg, &item), KMIP_RESULT_STATUS_SUCCESS);
    const uint8_t *km;
    size_t kmlen;
    assert_int_equal(kf_ttlv_get_bytes(KF_TTLV_PATH(item, KMIP_TAG_RESPONSE_PAYLOAD,
                                                    KMIP_TAG_SYMMETRIC_KEY, KMIP_TAG_KEY_BLOCK,
                                                    KMIP_TAG_KEY_VALUE, KMIP_TAG_KEY_MATERIAL),
                                       &km, &kmlen),
                     KF_OK);
    assert_int_equal(kmlen, 16);

    /* Destroying an active key: refused with the 1.x reason. */
    msg = request(a, 1, 4, KMIP_OP_ACTIVATE, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, "USPS/1");
    assert_int_equal(kmip_call(f->kms, a, msg, &item), KMIP_RESULT_STATUS_SUCCESS);
    msg = request(a, 1, 4, KMIP_OP_DESTROY, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, "USPS/1");
    assert_int_equal(kmip_call(f->kms, a, msg, &item), KMIP_RESULT_STATUS_OPERATION_FAILED);
    uint32_t reason;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_REASON), &reason), KF_OK);
    assert_int_equal(reason, KMIP_REASON_PERMISSION_DENIED);
    msg = request(a, 2, 1, KMIP_OP_DESTROY, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, "USPS/1");
    assert_int_equal(kmip_call(f->kms, a, msg, &item), KMIP_RESULT_STATUS_OPERATION_FAILED);
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_REASON), &reason), KF_OK);
    assert_int_equal(reason, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE);
    kf_arena_free(a);
}

static void kmip_refusals_have_reasons(void **state)
{
    struct fixture *f = *state;
    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    kf_ttlv *p, *msg;
    const kf_ttlv *item;
    uint32_t reason;
    /* Unsupported protocol version. */
    msg = request(a, 3, 0, KMIP_OP_QUERY, &p);
    assert_int_equal(kmip_call(f->kms, a, msg, &item), KMIP_RESULT_STATUS_OPERATION_FAILED);
    /* Unknown operation. */
    msg = request(a, 2, 1, 0x7777, &p);
    assert_int_equal(kmip_call(f->kms, a, msg, &item), KMIP_RESULT_STATUS_OPERATION_FAILED);
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_REASON), &reason), KF_OK);
    assert_int_equal(reason, KMIP_REASON_OPERATION_NOT_SUPPORTED);
    /* Get without a Unique Identifier. */
    msg = request(a, 2, 1, KMIP_OP_GET, &p);
    assert_int_equal(kmip_call(f->kms, a, msg, &item), KMIP_RESULT_STATUS_OPERATION_FAILED);
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_REASON), &reason), KF_OK);
    assert_int_equal(reason, KMIP_REASON_MISSING_DATA);
    /* Unknown object. */
    msg = request(a, 2, 1, KMIP_OP_GET, &p);
    kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, "VENDOR/404");
    assert_int_equal(kmip_call(f->kms, a, msg, &item), KMIP_RESULT_STATUS_OPERATION_FAILED);
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_REASON), &reason), KF_OK);
    assert_int_equal(reason, KMIP_REASON_ITEM_NOT_FOUND);
    /* Garbage and truncated bytes get a KMIP answer, not a crash. */
    kf_buf req, resp;
    assert_int_equal(kf_buf_alloc(&req, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&resp, 0, 1 << 20, 0), KF_OK);
    msg = request(a, 2, 1, KMIP_OP_QUERY, &p);
    assert_int_equal(kf_ttlv_encode(msg, &req), KF_OK);
    for (size_t cut = 0; cut < req.len; cut += 3) {
        kf_buf_reset(&resp);
        struct kf_principal who;
        kf_principal_local_admin(&who, "test");
        assert_int_equal(kf_kms_handle_kmip(f->kms, &who, req.data, cut, &resp), KF_OK);
        kf_ttlv *r;
        assert_int_equal(kf_ttlv_decode(resp.data, resp.len, NULL, a, &r), KF_OK);
        uint32_t st = 0;
        assert_int_equal(kf_ttlv_get_enum(KF_TTLV_PATH(r, KMIP_TAG_BATCH_ITEM,
                                                       KMIP_TAG_RESULT_STATUS), &st), KF_OK);
        assert_int_equal(st, KMIP_RESULT_STATUS_OPERATION_FAILED);
    }
    kf_buf_free(&req);
    kf_buf_free(&resp);
    kf_arena_free(a);
}

struct hammer {
    kf_kms *kms;
    int ops;
    int failures;
};

static int count_bytes(void *ctx, const struct kf_object *obj, const uint8_t *m, size_t len)
{
    (void)obj;
    (void)m;
    *(size_t *)ctx += len;
    return KF_OK;
}

static void *hammer_reads(void *arg)
{
    struct hammer *h = arg;
    kf_buf m;
    if (kf_buf_alloc(&m, 64, 4096, KF_BUF_SECRET) < 0)
        return NULL;
    for (int i = 0; i < h->ops; i++) {
        struct kf_object obj = {0};
        size_t seen = 0;
        kf_buf_reset(&m);
        if (kf_kms_get(h->kms, "reader", "VENDOR/1", &obj, &m) != KF_OK || m.len != 32)
            h->failures++;
        kf_object_clear(&obj);
        if (kf_kms_use_key(h->kms, "reader", "Encrypt", "VENDOR/1", KF_USE_ENCRYPT,
                           KMIP_USAGE_ENCRYPT, count_bytes, &seen) != KF_OK || seen != 32)
            h->failures++;
    }
    kf_buf_free(&m);
    return NULL;
}

static int count_records(void *ctx, const struct kf_audit_record *r)
{
    (void)r;
    (*(uint64_t *)ctx)++;
    return KF_OK;
}

/* Reads and key uses from 8 threads while keys are created: every use is
 * audited exactly once (group commit), ids stay unique, the chain verifies. */
static void concurrent_reads_and_creates_are_all_audited(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_OK);
    assert_int_equal(kf_kms_activate(f->kms, "test", uid), KF_OK);
    uint64_t before = 0;
    assert_int_equal(kf_kms_audit_list(f->kms, 1, 0, count_records, &before), KF_OK);
    enum { THREADS = 8, OPS = 40, CREATES = 50 };
    struct hammer h[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){.kms = f->kms, .ops = OPS};
        assert_int_equal(pthread_create(&t[i], NULL, hammer_reads, &h[i]), 0);
    }
    for (int i = 0; i < CREATES; i++)
        assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_OK);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(h[i].failures, 0);
    }
    assert_string_equal(uid, "VENDOR/51");
    uint64_t after = 0;
    assert_int_equal(kf_kms_audit_list(f->kms, 1, 0, count_records, &after), KF_OK);
    assert_int_equal(after - before, (uint64_t)(THREADS * OPS * 2 + CREATES));
    struct kf_audit_report r;
    assert_int_equal(kf_kms_audit_verify(f->kms, &r), KF_OK);
}

/* A principal limited to using keys in VENDOR. */
static void principals_are_authorised_per_domain(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    struct kf_key_spec usps = aes256;
    usps.domain = "USPS";
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_OK);
    assert_int_equal(kf_kms_create(f->kms, "test", &usps, uid), KF_OK);
    struct kf_principal user = {.name = "cert:CN=app", .roles = KF_ROLE_USE, .ndomains = 1};
    snprintf(user.domains[0], sizeof(user.domains[0]), "VENDOR");
    assert_true(kf_principal_allows(&user, KF_ROLE_USE, "VENDOR"));
    assert_false(kf_principal_allows(&user, KF_ROLE_USE, "USPS"));
    assert_false(kf_principal_allows(&user, KF_ROLE_EXPORT, "VENDOR"));
    assert_false(kf_principal_allows(&user, KF_ROLE_ADMIN, NULL));

    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    struct {
        uint32_t op;
        const char *uid;
        uint32_t want;
    } cases[] = {
        {KMIP_OP_GET_ATTRIBUTES, "VENDOR/1", KMIP_RESULT_STATUS_SUCCESS},
        {KMIP_OP_GET_ATTRIBUTES, "USPS/1", KMIP_RESULT_STATUS_OPERATION_FAILED},
        {KMIP_OP_GET, "VENDOR/1", KMIP_RESULT_STATUS_OPERATION_FAILED},
        {KMIP_OP_DESTROY, "VENDOR/1", KMIP_RESULT_STATUS_OPERATION_FAILED},
        {KMIP_OP_KEYFLEET_SEAL, NULL, KMIP_RESULT_STATUS_OPERATION_FAILED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kf_ttlv *p, *msg = request(a, 2, 1, cases[i].op, &p);
        if (cases[i].uid)
            kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, cases[i].uid);
        kf_buf req, resp;
        kf_ttlv *r;
        assert_int_equal(kf_buf_alloc(&req, 0, 1 << 20, 0), KF_OK);
        assert_int_equal(kf_buf_alloc(&resp, 0, 1 << 20, 0), KF_OK);
        assert_int_equal(kf_ttlv_encode(msg, &req), KF_OK);
        assert_int_equal(kf_kms_handle_kmip(f->kms, &user, req.data, req.len, &resp), KF_OK);
        assert_int_equal(kf_ttlv_decode(resp.data, resp.len, NULL, a, &r), KF_OK);
        const kf_ttlv *item = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
        uint32_t st = 99, reason = 0;
        assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_STATUS), &st), KF_OK);
        assert_int_equal(st, cases[i].want);
        if (st != KMIP_RESULT_STATUS_SUCCESS) {
            assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_REASON), &reason),
                             KF_OK);
            assert_int_equal(reason, KMIP_REASON_PERMISSION_DENIED);
        }
        kf_buf_free(&req);
        kf_buf_free(&resp);
    }
    /* The refusals are in the audit trail under the certificate's name. */
    struct last_record l = {0};
    assert_int_equal(kf_kms_audit_list(f->kms, 1, 0, remember, &l), KF_OK);
    assert_string_equal(l.result, "KF_ERR_PERM");
    kf_arena_free(a);
}

/* The request's TTLV bytes (into out, from the arena a). */
static size_t encoded(kf_ttlv *msg, uint8_t *out, size_t cap)
{
    kf_buf b;
    kf_buf_fixed(&b, out, cap);
    assert_int_equal(kf_ttlv_encode(msg, &b), KF_OK);
    return b.len;
}

/* Which requests may share a batch's audit commit (kf_kms_kmip_read_only): every
 * operation must be one that only reads or uses; anything else, or a message
 * that does not scan, is not. */
static void read_only_requests_are_told_apart(void **state)
{
    (void)state;
    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    static uint8_t buf[4096];
    kf_ttlv *p;
    static const uint32_t reads[] = {KMIP_OP_GET, KMIP_OP_LOCATE, KMIP_OP_ENCRYPT, KMIP_OP_MAC,
                                     KMIP_OP_QUERY, KMIP_OP_GET_ATTRIBUTES};
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
        kf_ttlv *m = request(a, 1, 4, reads[i], &p);
        kf_ttlv_add_text(a, p, KMIP_TAG_UNIQUE_IDENTIFIER, "default/1");
        assert_true(kf_kms_kmip_read_only(buf, encoded(m, buf, sizeof(buf))));
    }
    static const uint32_t writes[] = {KMIP_OP_CREATE, KMIP_OP_DESTROY, KMIP_OP_REGISTER,
                                      KMIP_OP_ACTIVATE, KMIP_OP_REVOKE,
                                      KMIP_OP_KEYFLEET_DEVICE_REGISTER};
    for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++) {
        kf_ttlv *m = request(a, 1, 4, writes[i], &p);
        assert_false(kf_kms_kmip_read_only(buf, encoded(m, buf, sizeof(buf))));
    }
    /* two batch items: a Get and a Destroy -> not read-only; two Gets -> read-only */
    kf_ttlv *m = request(a, 1, 4, KMIP_OP_GET, &p);
    kf_ttlv *bi = kf_ttlv_struct(a, m, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, KMIP_OP_DESTROY);
    size_t n = encoded(m, buf, sizeof(buf));
    assert_false(kf_kms_kmip_read_only(buf, n));
    m = request(a, 1, 4, KMIP_OP_GET, &p);
    bi = kf_ttlv_struct(a, m, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, KMIP_OP_GET);
    n = encoded(m, buf, sizeof(buf));
    assert_true(kf_kms_kmip_read_only(buf, n));
    /* cut anywhere, or a length past the end: not read-only */
    for (size_t cut = 0; cut < n; cut += 8)
        assert_false(kf_kms_kmip_read_only(buf, cut));
    buf[7] ^= 0x40; /* the message's length, far past the bytes */
    assert_false(kf_kms_kmip_read_only(buf, n));
    /* no operation at all, and structures nested deeper than 8 */
    kf_ttlv *bare = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    assert_false(kf_kms_kmip_read_only(buf, encoded(bare, buf, sizeof(buf))));
    kf_ttlv *deep = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_MESSAGE), *at = deep;
    for (int d = 0; d < 9; d++)
        at = kf_ttlv_struct(a, at, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(a, at, KMIP_TAG_OPERATION, KMIP_OP_GET);
    assert_false(kf_kms_kmip_read_only(buf, encoded(deep, buf, sizeof(buf))));
    assert_false(kf_kms_kmip_read_only(NULL, 0));
    kf_arena_free(a);
}

int main(void)
{
    kf_log_open(NULL, KF_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(stuck_random_source_refuses_creation_and_is_audited, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(domains_are_isolated, setup, teardown),
        cmocka_unit_test_setup_teardown(wrapped_material_moved_to_another_object_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(lifecycle_through_the_service, setup, teardown),
        cmocka_unit_test_setup_teardown(sealed_service_refuses_key_operations, setup, teardown),
        cmocka_unit_test_setup_teardown(kmip_v1_create_with_template_attributes, setup, teardown),
        cmocka_unit_test_setup_teardown(kmip_refusals_have_reasons, setup, teardown),
        cmocka_unit_test_setup_teardown(principals_are_authorised_per_domain, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_reads_and_creates_are_all_audited, setup,
                                        teardown),
        cmocka_unit_test(read_only_requests_are_told_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
