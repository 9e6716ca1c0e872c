/*
 * The service's group commits and its device cache, seen from outside and
 * through the few internal counters they keep:
 *  - every create and pair request is answered only after an fdatasync of the
 *    WAL (the store's sync count moves before the call returns), and
 *    concurrent callers share batches and fdatasyncs;
 *  - cached MKEKs are wiped on seal and never used after it; a revoked MKEK
 *    pairs no more even though its facts were cached; unknown devices are
 *    not remembered; an evicted device is read again and still pairs with
 *    the right counters;
 *  - messages built from cached keys open on real devices (test_kms_device
 *    covers that for every issuance after the first);
 *  - deferred read/use records (kf_kms_audit_defer_begin/_end): written at the
 *    end only, as one job in one batch, in order and verifiable; another
 *    thread's are not deferred; bounded; misuse refused; a failed commit is
 *    KF_ERR_AUDIT_WRITE with nothing of the batch in the trail.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/device.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/log.h"
#include "keyfleet/ttlv.h"
#include "kms/kms_internal.h"

#include "kms_fixture.h"

struct fixture {
    char dir[64];
    kf_kms *kms;
};

static int open_kms(struct fixture *f, bool memory)
{
    struct kf_kms_config cfg = {.dir = f->dir, .dev = true, .memory_store = memory};
    return kf_kms_open(&cfg, &f->kms);
}

static int setup_common(void **state, bool memory)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/kf-test-gc.XXXXXX");
    if (!mkdtemp(f->dir) || open_kms(f, memory) < 0)
        return -1;
    if (kf_kms_domain_create(f->kms, "test", "VENDOR", NULL) < 0 ||
        kf_kms_domain_create(f->kms, "test", "USPS", NULL) < 0)
        return -1;
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_common(state, false);
}

static int setup_memory(void **state)
{
    return setup_common(state, true);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (kms_dir_remove(f->kms, f->dir) < 0)
        return -1;
    free(f);
    return 0;
}

static const struct kf_key_spec aes256 = {
    .domain = "VENDOR",
    .object_type = KF_OBJ_SYMMETRIC_KEY,
    .crypto_alg = KMIP_ALG_AES,
    .crypto_length = 256,
    .usage_mask = KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT,
};

static int pair(kf_kms *kms, const char *a, const char *b)
{
    kf_buf m;
    if (kf_buf_alloc(&m, 0, 8192, 0) < 0)
        return KF_ERR_NOMEM;
    int rc = kf_kms_pair_issue(kms, "test", a, b, 1, 0, 0, &m);
    if (rc == KF_OK && m.len == 0)
        rc = KF_ERR_INTERNAL;
    if (rc < 0 && m.len != 0)
        rc = KF_ERR_INTERNAL; /* a refusal must leave nothing behind */
    kf_buf_free(&m);
    return rc;
}

static uint64_t counter(kf_kms *kms, const char *id)
{
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_get(kms, "test", id, &info), KF_OK);
    return info.counter;
}

/* A create and a pair request return only after an fdatasync of the WAL. */
static void answered_only_after_fdatasync(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    assert_int_equal(kf_kms_device_register(f->kms, "test", "meter-1", "VENDOR", NULL), KF_OK);
    assert_int_equal(kf_kms_device_register(f->kms, "test", "base-1", "VENDOR", NULL), KF_OK);
    for (int i = 0; i < 3; i++) {
        uint64_t before = kf_store_sync_count(f->kms->store, NULL);
        assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_OK);
        assert_int_equal(kf_store_sync_count(f->kms->store, NULL), before + 1);
        before = kf_store_sync_count(f->kms->store, NULL);
        assert_int_equal(pair(f->kms, "meter-1", "base-1"), KF_OK);
        assert_int_equal(kf_store_sync_count(f->kms->store, NULL), before + 1);
    }
    /* A refusal commits nothing of the request: no fdatasync was waited for it. */
    uint64_t before = kf_store_sync_count(f->kms->store, NULL);
    assert_int_equal(pair(f->kms, "meter-1", "ghost"), KF_ERR_DEVICE_UNKNOWN);
    assert_int_equal(counter(f->kms, "meter-1"), 3);
    assert_true(kf_store_sync_count(f->kms->store, NULL) <= before + 1);
}

/* Many creators and pairers at once: every answer right, batches shared. */
struct worker {
    kf_kms *kms;
    int n, failures;
    bool creator;
    char a[16], b[16];
    char last_uid[KF_UID_MAX];
};

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->n; i++) {
        int rc = w->creator ? kf_kms_create(w->kms, "worker", &aes256, w->last_uid)
                            : pair(w->kms, w->a, w->b);
        w->failures += rc != KF_OK;
    }
    return NULL;
}

static void concurrent_callers_share_batches(void **state)
{
    struct fixture *f = *state;
    enum { CREATORS = 4, PAIRERS = 4, N = 30 };
    struct worker w[CREATORS + PAIRERS];
    pthread_t t[CREATORS + PAIRERS];
    for (int i = 0; i < CREATORS + PAIRERS; i++) {
        w[i] = (struct worker){.kms = f->kms, .n = N, .creator = i < CREATORS};
        snprintf(w[i].a, sizeof(w[i].a), "m-%d", i);
        snprintf(w[i].b, sizeof(w[i].b), "b-%d", i);
        if (!w[i].creator) {
            assert_int_equal(kf_kms_device_register(f->kms, "test", w[i].a, "VENDOR", NULL), KF_OK);
            assert_int_equal(kf_kms_device_register(f->kms, "test", w[i].b, "VENDOR", NULL), KF_OK);
        }
    }
    uint64_t syncs = kf_store_sync_count(f->kms->store, NULL);
    uint64_t cjobs = atomic_load(&f->kms->create_q.jobs);
    uint64_t djobs = atomic_load(&f->kms->device_q.jobs);
    uint64_t batches =
        atomic_load(&f->kms->create_q.batches) + atomic_load(&f->kms->device_q.batches);
    for (int i = 0; i < CREATORS + PAIRERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    for (int i = 0; i < CREATORS + PAIRERS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(atomic_load(&f->kms->create_q.jobs) - cjobs, CREATORS * N);
    assert_int_equal(atomic_load(&f->kms->device_q.jobs) - djobs, PAIRERS * N);
    batches =
        atomic_load(&f->kms->create_q.batches) + atomic_load(&f->kms->device_q.batches) - batches;
    syncs = kf_store_sync_count(f->kms->store, NULL) - syncs;
    print_message("      %d creates + %d pair requests: %llu batches, %llu fdatasyncs\n",
                  CREATORS * N, PAIRERS * N, (unsigned long long)batches,
                  (unsigned long long)syncs);
    assert_true(batches >= 1 && batches <= (CREATORS + PAIRERS) * N);
    assert_true(syncs >= 1 && syncs <= batches);
    /* Every key ID handed out once: the last one is the count. */
    char want[KF_UID_MAX];
    uint64_t max = 0;
    for (int i = 0; i < CREATORS; i++) {
        char dom[KF_DOMAIN_NAME_MAX + 1];
        uint64_t id;
        assert_int_equal(kf_object_uid_parse(w[i].last_uid, dom, &id), KF_OK);
        max = id > max ? id : max;
    }
    snprintf(want, sizeof(want), "VENDOR/%llu", (unsigned long long)max);
    struct kf_object obj;
    assert_int_equal(kf_kms_get(f->kms, "test", want, &obj, NULL), KF_OK);
    kf_object_clear(&obj);
    for (int i = CREATORS; i < CREATORS + PAIRERS; i++) {
        assert_int_equal(counter(f->kms, w[i].a), N);
        assert_int_equal(counter(f->kms, w[i].b), N);
    }
    struct kf_audit_report r;
    assert_int_equal(kf_kms_audit_verify(f->kms, &r), KF_OK);
}

/* Seal wipes every cached MKEK; nothing pairs while sealed; after a new
 * unseal the keys are unwrapped (and cached) again. */
static void seal_wipes_cached_keys(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(kf_kms_device_register(f->kms, "test", "meter-1", "VENDOR", NULL), KF_OK);
    assert_int_equal(kf_kms_device_register(f->kms, "test", "base-1", "VENDOR", NULL), KF_OK);
    assert_int_equal(kms_device_cache_keys(f->kms), 0);
    assert_int_equal(pair(f->kms, "meter-1", "base-1"), KF_OK);
    assert_int_equal(kms_device_cache_keys(f->kms), 2);
    assert_int_equal(pair(f->kms, "meter-1", "base-1"), KF_OK); /* from the cache */
    assert_int_equal(kms_device_cache_keys(f->kms), 2);
    assert_int_equal(kf_kms_seal(f->kms, "test"), KF_OK);
    assert_int_equal(kms_device_cache_keys(f->kms), 0);
    assert_int_equal(pair(f->kms, "meter-1", "base-1"), KF_ERR_SEALED);
    assert_int_equal(kms_device_cache_keys(f->kms), 0);
    /* The counters did not move for the refused request. */
    assert_int_equal(counter(f->kms, "meter-1"), 2);
    /* A new start unseals (dev mode): keys come back from the store. */
    kf_kms_close(f->kms);
    assert_int_equal(open_kms(f, false), KF_OK);
    assert_int_equal(kms_device_cache_keys(f->kms), 0);
    assert_int_equal(pair(f->kms, "meter-1", "base-1"), KF_OK);
    assert_int_equal(kms_device_cache_keys(f->kms), 2);
    assert_int_equal(counter(f->kms, "meter-1"), 3);
    assert_int_equal(counter(f->kms, "base-1"), 3);
}

/* Cached facts follow the MKEK object: revoke (and then destroy) it and the
 * device pairs no more, though the request before it was served from the cache. */
static void cached_facts_follow_the_mkek(void **state)
{
    struct fixture *f = *state;
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_register(f->kms, "test", "meter-1", "VENDOR", &info), KF_OK);
    assert_int_equal(kf_kms_device_register(f->kms, "test", "base-1", "VENDOR", NULL), KF_OK);
    assert_int_equal(kf_kms_device_register(f->kms, "test", "base-2", "VENDOR", NULL), KF_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pair(f->kms, "meter-1", "base-1"), KF_OK);
    /* Something else changes: the cache re-reads, nothing is refused. */
    char uid[KF_UID_MAX];
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_OK);
    assert_int_equal(kf_kms_activate(f->kms, "test", uid), KF_OK);
    assert_int_equal(pair(f->kms, "meter-1", "base-1"), KF_OK);
    assert_int_equal(
        kf_kms_revoke(f->kms, "test", info.mkek_uid, KMIP_REVOKE_CESSATION_OF_OPERATION, 0, NULL),
        KF_OK);
    assert_int_equal(pair(f->kms, "meter-1", "base-1"), KF_ERR_STATE);
    assert_int_equal(pair(f->kms, "base-2", "meter-1"), KF_ERR_STATE);
    assert_int_equal(kf_kms_destroy(f->kms, "test", info.mkek_uid), KF_OK);
    assert_int_equal(pair(f->kms, "meter-1", "base-1"), KF_ERR_STATE);
    assert_int_equal(counter(f->kms, "meter-1"), 4);
    assert_int_equal(counter(f->kms, "base-2"), 0);
    /* The other devices still pair. */
    assert_int_equal(pair(f->kms, "base-1", "base-2"), KF_OK);
}

/* A decodable acknowledgement from id whose MAC is not made with its MKEK. */
static void forged_ack(const char *id, uint64_t kek_id, kf_buf *out)
{
    kf_arena *a;
    static const uint8_t mac[KFD_MAC_LEN] = {0};
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    kf_ttlv *ack = kf_ttlv_struct(a, NULL, KMIP_TAG_KEYFLEET_PAIR_ACK);
    kf_ttlv *b = kf_ttlv_struct(a, ack, KMIP_TAG_KEYFLEET_ACK_BODY);
    assert_non_null(kf_ttlv_add_int(a, b, KMIP_TAG_KEYFLEET_PROTO_VERSION, 1));
    assert_non_null(kf_ttlv_add_text(a, b, KMIP_TAG_KEYFLEET_DEVICE_ID, id));
    assert_non_null(kf_ttlv_add_long(a, b, KMIP_TAG_KEYFLEET_KEK_ID, (int64_t)kek_id));
    assert_non_null(kf_ttlv_add_long(a, b, KMIP_TAG_KEYFLEET_COUNTER, 1));
    assert_non_null(kf_ttlv_add_long(a, b, KMIP_TAG_KEYFLEET_DEVICE_COUNTER, 1));
    assert_non_null(kf_ttlv_add_enum(a, b, KMIP_TAG_KEYFLEET_ACK_STATUS, KFD_ACK_ACCEPTED));
    assert_non_null(kf_ttlv_add_bytes(a, ack, KMIP_TAG_KEYFLEET_MAC, mac, sizeof(mac)));
    assert_int_equal(kf_buf_alloc(out, 0, 4096, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(ack, out), KF_OK);
    kf_arena_free(a);
}

/* Acknowledgements check the MKEK's state from the cache while no object
 * changed, and from the store once one did: after the MKEK is destroyed an
 * ack is refused for the state, before its MAC is even looked at. */
static void acks_see_the_mkek_change(void **state)
{
    struct fixture *f = *state;
    struct kf_device_info info;
    assert_int_equal(kf_kms_device_register(f->kms, "test", "meter-1", "VENDOR", &info), KF_OK);
    assert_int_equal(kf_kms_device_register(f->kms, "test", "base-1", "VENDOR", NULL), KF_OK);
    assert_int_equal(pair(f->kms, "meter-1", "base-1"), KF_OK); /* facts and key cached */
    kf_buf ack;
    forged_ack("meter-1", 1, &ack);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", ack.data, ack.len, NULL), KF_ERR_ACK_MAC);
    assert_int_equal(
        kf_kms_revoke(f->kms, "test", info.mkek_uid, KMIP_REVOKE_CESSATION_OF_OPERATION, 0, NULL),
        KF_OK);
    assert_int_equal(kf_kms_destroy(f->kms, "test", info.mkek_uid), KF_OK);
    assert_int_equal(kf_kms_pair_ack(f->kms, "test", ack.data, ack.len, NULL), KF_ERR_STATE);
    kf_buf_free(&ack);
}

/* An unknown device is not remembered: once registered it is found. The
 * domain seen for authorisation is the device's. */
static void unknown_devices_are_not_remembered(void **state)
{
    struct fixture *f = *state;
    char domain[KF_DOMAIN_NAME_MAX + 1];
    assert_int_equal(kf_kms_device_domain(f->kms, "later-1", domain), KF_ERR_DEVICE_UNKNOWN);
    assert_int_equal(kf_kms_device_domain(f->kms, "later-1", domain), KF_ERR_DEVICE_UNKNOWN);
    assert_int_equal(kf_kms_device_domain(f->kms, "bad id", domain), KF_ERR_DEVICE_ID);
    assert_int_equal(kf_kms_device_register(f->kms, "test", "later-1", "USPS", NULL), KF_OK);
    assert_int_equal(kf_kms_device_domain(f->kms, "later-1", domain), KF_OK);
    assert_string_equal(domain, "USPS");
    assert_int_equal(kf_kms_device_domain(f->kms, "later-1", domain), KF_OK); /* cached */
    assert_string_equal(domain, "USPS");
    assert_int_equal(kf_kms_device_register(f->kms, "test", "later-2", "VENDOR", NULL), KF_OK);
    assert_int_equal(pair(f->kms, "later-1", "later-2"), KF_ERR_DOMAIN_CROSS);
}

/* More devices than the cache holds: evicted ones are read again, pair with
 * the right counters, and the cache never holds more keys than it has slots. */
static void evicted_devices_pair_again(void **state)
{
    struct fixture *f = *state;
    enum { PAIRS = 600 }; /* 1,200 devices for 1,024 slots */
    char a[32], b[32];
    for (int i = 0; i < PAIRS; i++) {
        snprintf(a, sizeof(a), "ev-a-%d", i);
        snprintf(b, sizeof(b), "ev-b-%d", i);
        assert_int_equal(kf_kms_device_register(f->kms, "test", a, "VENDOR", NULL), KF_OK);
        assert_int_equal(kf_kms_device_register(f->kms, "test", b, "VENDOR", NULL), KF_OK);
        assert_int_equal(pair(f->kms, a, b), KF_OK);
    }
    size_t keys = kms_device_cache_keys(f->kms);
    assert_true(keys > 0 && keys <= 1024);
    for (int i = 0; i < PAIRS; i++) {
        snprintf(a, sizeof(a), "ev-a-%d", i);
        snprintf(b, sizeof(b), "ev-b-%d", i);
        assert_int_equal(pair(f->kms, a, b), KF_OK);
    }
    assert_true(kms_device_cache_keys(f->kms) <= 1024);
    assert_int_equal(counter(f->kms, "ev-a-0"), 2);
    assert_int_equal(counter(f->kms, "ev-b-599"), 2);
}

/* ---- deferred read/use audit records (kf_kms_audit_defer_begin/_end) ---- */

static uint64_t audit_records(kf_kms *kms)
{
    struct kf_kms_status st;
    assert_int_equal(kf_kms_status(kms, &st), KF_OK);
    return st.audit_records;
}

/* The last n audit records, oldest first. */
struct tail {
    uint64_t from;
    size_t n;
    char op[8][64], object[8][KF_UID_MAX], actor[8][64], result[8][64];
};

static int remember_tail(void *ctx, const struct kf_audit_record *r)
{
    struct tail *t = ctx;
    if (t->n < 8) {
        snprintf(t->op[t->n], sizeof(t->op[0]), "%s", r->operation);
        snprintf(t->object[t->n], sizeof(t->object[0]), "%s", r->object);
        snprintf(t->actor[t->n], sizeof(t->actor[0]), "%s", r->actor);
        snprintf(t->result[t->n], sizeof(t->result[0]), "%s", r->result);
    }
    t->n++;
    return KF_OK;
}

static int get_key(kf_kms *kms, const char *actor, const char *uid)
{
    kf_buf m;
    struct kf_object obj = {0};
    assert_int_equal(kf_buf_alloc(&m, 64, 4096, KF_BUF_SECRET), KF_OK);
    int rc = kf_kms_get(kms, actor, uid, &obj, &m);
    if (rc == KF_OK && m.len != 32)
        rc = KF_ERR_INTERNAL;
    kf_object_clear(&obj);
    kf_buf_free(&m);
    return rc;
}

struct getter {
    kf_kms *kms;
    const char *uid;
    int rc;
};

static void *get_on_another_thread(void *arg)
{
    struct getter *g = arg;
    g->rc = get_key(g->kms, "other-thread", g->uid);
    return NULL;
}

/* N Gets on one thread between begin and end: their records are written only
 * at the end, as one job in one audit batch, in order, with the right objects;
 * the trail verifies. Another thread's Get meanwhile is audited at once. */
static void deferred_use_records_are_one_batch(void **state)
{
    struct fixture *f = *state;
    enum { N = 6 };
    char uid[N][KF_UID_MAX];
    for (int i = 0; i < N; i++)
        assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid[i]), KF_OK);
    uint64_t records = audit_records(f->kms);
    uint64_t batches = atomic_load(&f->kms->audit_q.batches);
    uint64_t jobs = atomic_load(&f->kms->audit_q.jobs);
    assert_int_equal(kf_kms_audit_defer_begin(f->kms), KF_OK);
    for (int i = 0; i < N - 1; i++)
        assert_int_equal(get_key(f->kms, "batch", uid[i]), KF_OK);
    struct kf_object obj = {0}; /* Get Attributes is a read too */
    assert_int_equal(kf_kms_get(f->kms, "batch", uid[N - 1], &obj, NULL), KF_OK);
    kf_object_clear(&obj);
    assert_int_equal(audit_records(f->kms), records); /* nothing written yet */
    assert_int_equal(atomic_load(&f->kms->audit_q.batches), batches);
    /* the deferral is this thread's: another thread's Get is audited before it returns */
    struct getter g = {.kms = f->kms, .uid = uid[0]};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, get_on_another_thread, &g), 0);
    pthread_join(t, NULL);
    assert_int_equal(g.rc, KF_OK);
    assert_int_equal(audit_records(f->kms), records + 1);
    assert_int_equal(atomic_load(&f->kms->audit_q.batches), batches + 1);
    assert_int_equal(kf_kms_audit_defer_end(f->kms), KF_OK);
    assert_int_equal(audit_records(f->kms), records + 1 + N);
    assert_int_equal(atomic_load(&f->kms->audit_q.batches), batches + 2); /* one for all N */
    assert_int_equal(atomic_load(&f->kms->audit_q.jobs), jobs + 2);
    struct tail tl = {0};
    assert_int_equal(kf_kms_audit_list(f->kms, records + 2, 0, remember_tail, &tl), KF_OK);
    assert_int_equal(tl.n, N);
    for (int i = 0; i < N; i++) {
        assert_string_equal(tl.object[i], uid[i]);
        assert_string_equal(tl.op[i], i < N - 1 ? "Get (export)" : "Get Attributes");
        assert_string_equal(tl.actor[i], "batch");
        assert_string_equal(tl.result[i], "ok");
    }
    struct kf_audit_report r;
    assert_int_equal(kf_kms_audit_verify(f->kms, &r), KF_OK);
    assert_int_equal(r.first_bad_seq, 0);
    assert_int_equal(r.records, records + 1 + N);
    /* Creates are not deferred: the record is there when the call returns. */
    assert_int_equal(kf_kms_audit_defer_begin(f->kms), KF_OK);
    char more[KF_UID_MAX];
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, more), KF_OK);
    assert_int_equal(audit_records(f->kms), records + 2 + N);
    assert_int_equal(kf_kms_audit_defer_end(f->kms), KF_OK); /* nothing kept: no job */
    assert_int_equal(atomic_load(&f->kms->audit_q.batches), batches + 2);
}

/* More records than a deferral keeps: the kept ones are committed on the way,
 * nothing is lost, and the end commits the rest. */
static void deferral_is_bounded(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_OK);
    uint64_t records = audit_records(f->kms);
    uint64_t batches = atomic_load(&f->kms->audit_q.batches);
    enum { N = 100 }; /* more than AUDIT_DEFER_MAX (64, service.c) */
    assert_int_equal(kf_kms_audit_defer_begin(f->kms), KF_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(get_key(f->kms, "batch", uid), KF_OK);
    uint64_t during = audit_records(f->kms);
    assert_true(during > records && during < records + N);
    assert_int_equal(kf_kms_audit_defer_end(f->kms), KF_OK);
    assert_int_equal(audit_records(f->kms), records + N);
    assert_int_equal(atomic_load(&f->kms->audit_q.batches), batches + 2);
    struct kf_audit_report r;
    assert_int_equal(kf_kms_audit_verify(f->kms, &r), KF_OK);
}

/* Misuse is refused: an end without a begin, a second begin, an end for
 * another service (its kept records are dropped, never committed). */
static void deferral_misuse_is_refused(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_OK);
    assert_int_equal(kf_kms_audit_defer_end(f->kms), KF_ERR_INTERNAL);
    assert_int_equal(kf_kms_audit_defer_begin(NULL), KF_ERR_ARG);
    assert_int_equal(kf_kms_audit_defer_begin(f->kms), KF_OK);
    assert_int_equal(kf_kms_audit_defer_begin(f->kms), KF_ERR_INTERNAL);
    assert_int_equal(kf_kms_audit_defer_end(f->kms), KF_OK); /* the first one is still open */
    assert_int_equal(kf_kms_audit_defer_end(f->kms), KF_ERR_INTERNAL);
    /* another service */
    struct fixture other = {0};
    snprintf(other.dir, sizeof(other.dir), "/tmp/kf-test-gc2.XXXXXX");
    assert_non_null(mkdtemp(other.dir));
    assert_int_equal(open_kms(&other, true), KF_OK);
    uint64_t records = audit_records(f->kms);
    assert_int_equal(kf_kms_audit_defer_begin(f->kms), KF_OK);
    assert_int_equal(get_key(f->kms, "batch", uid), KF_OK);
    assert_int_equal(kf_kms_audit_defer_end(other.kms), KF_ERR_ARG);
    assert_int_equal(audit_records(f->kms), records); /* dropped */
    assert_int_equal(kf_kms_audit_defer_end(f->kms), KF_ERR_INTERNAL); /* it is over */
    assert_int_equal(kms_dir_remove(other.kms, other.dir), 0);
    /* and the thread can defer again */
    assert_int_equal(kf_kms_audit_defer_begin(f->kms), KF_OK);
    assert_int_equal(get_key(f->kms, "batch", uid), KF_OK);
    assert_int_equal(kf_kms_audit_defer_end(f->kms), KF_OK);
    assert_int_equal(audit_records(f->kms), records + 1);
}

static void exec_sql(kf_kms *kms, const char *sql)
{
    pthread_mutex_lock(&kms->lock);
    int rc = sqlite3_exec(kf_store_db(kms->store), sql, NULL, NULL, NULL);
    pthread_mutex_unlock(&kms->lock);
    assert_int_equal(rc, SQLITE_OK);
}

/* The audit commit fails (a trigger refuses every audit record): the end says
 * KF_ERR_AUDIT_WRITE and nothing of the batch is in the trail; once the store
 * takes records again, so does the next batch. Records beyond what a deferral
 * keeps meet the failure on the way: the Gets after it fail at once. */
static void deferred_commit_failure(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    assert_int_equal(kf_kms_create(f->kms, "test", &aes256, uid), KF_OK);
    uint64_t records = audit_records(f->kms);
    exec_sql(f->kms, "CREATE TRIGGER no_audit BEFORE INSERT ON audit_record"
                     " BEGIN SELECT RAISE(ABORT, 'audit disk full'); END;");
    assert_int_equal(get_key(f->kms, "plain", uid), KF_ERR_AUDIT_WRITE); /* the control */
    assert_int_equal(kf_kms_audit_defer_begin(f->kms), KF_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(get_key(f->kms, "batch", uid), KF_OK); /* held by the caller */
    assert_int_equal(kf_kms_audit_defer_end(f->kms), KF_ERR_AUDIT_WRITE);
    assert_int_equal(audit_records(f->kms), records);
    int failed = 0;
    assert_int_equal(kf_kms_audit_defer_begin(f->kms), KF_OK);
    for (int i = 0; i < 80; i++)
        failed += get_key(f->kms, "batch", uid) == KF_ERR_AUDIT_WRITE;
    assert_int_equal(kf_kms_audit_defer_end(f->kms), KF_ERR_AUDIT_WRITE);
    assert_true(failed > 0 && failed < 80);
    assert_int_equal(audit_records(f->kms), records);
    exec_sql(f->kms, "DROP TRIGGER no_audit");
    assert_int_equal(kf_kms_audit_defer_begin(f->kms), KF_OK);
    assert_int_equal(get_key(f->kms, "batch", uid), KF_OK);
    assert_int_equal(kf_kms_audit_defer_end(f->kms), KF_OK);
    assert_int_equal(audit_records(f->kms), records + 1);
    struct kf_audit_report r;
    assert_int_equal(kf_kms_audit_verify(f->kms, &r), KF_OK);
}

int main(void)
{
    kf_log_open(NULL, KF_LOG_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(answered_only_after_fdatasync, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_callers_share_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(seal_wipes_cached_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(cached_facts_follow_the_mkek, setup, teardown),
        cmocka_unit_test_setup_teardown(acks_see_the_mkek_change, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_devices_are_not_remembered, setup, teardown),
        cmocka_unit_test_setup_teardown(evicted_devices_pair_again, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(deferred_use_records_are_one_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(deferral_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(deferral_misuse_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(deferred_commit_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
