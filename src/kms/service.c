/*
 * Service lifecycle and administration: open/close, init, unseal, seal,
 * status, domains, and the audit helpers every operation uses.
 */
#include <errno.h>
#include <malloc.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "keyfleet/log.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "kms_internal.h"
#include "mfg_internal.h"

static int audit_mac_cb(void *ctx, const uint8_t *data, size_t len, uint8_t out[32])
{
    kf_kms *kms = ctx;
    int rc = kf_secmod_audit_mac(kms->secmod, data, len, out);
    /* Before init there is no MAC key either: the MAC is deferred, as while sealed. */
    return rc == KF_ERR_NOT_INIT ? KF_ERR_SEALED : rc;
}

int kms_audit(kf_kms *kms, const char *actor, const char *op, const char *domain,
              const char *object, int result, const char *detail)
{
    struct kf_audit_event ev = {
        .actor = actor,
        .operation = op,
        .domain = domain ? domain : "",
        .object = object ? object : "",
        .result = result == KF_OK ? "ok" : kf_errname(result),
        .detail = detail ? detail : "",
    };
    int rc = kf_audit_append(kms->audit, &ev, NULL);
    if (rc < 0)
        kf_error("audit append failed for %s: %s", op, kf_strerror(rc));
    return rc;
}

void kms_audit_refusal(kf_kms *kms, const char *actor, const char *op, const char *domain,
                       const char *object, int err, const char *detail)
{
    if (kf_store_begin(kms->store) < 0)
        return;
    if (kms_audit(kms, actor, op, domain, object, err, detail) < 0 ||
        kf_store_commit(kms->store) < 0)
        kf_store_rollback(kms->store);
}

static bool find_handle(kf_kms *kms, uint64_t domain_id, kf_domain_handle *h)
{
    for (size_t i = 0; i < kms->nloaded; i++) {
        if (kms->loaded[i].domain_id == domain_id) {
            *h = kms->loaded[i].handle;
            return true;
        }
    }
    return false;
}

int kms_domain_handle(kf_kms *kms, const struct kf_domain *d, kf_domain_handle *h)
{
    pthread_rwlock_rdlock(&kms->handles_lock);
    bool found = find_handle(kms, d->id, h);
    pthread_rwlock_unlock(&kms->handles_lock);
    if (found)
        return KF_OK;
    KF_ENSURE(d->wrapped_key != NULL, KF_ERR_INTERNAL);
    pthread_rwlock_wrlock(&kms->handles_lock);
    int rc = KF_OK;
    if (!find_handle(kms, d->id, h)) {
        if (kms->nloaded >= KF_KMS_MAX_DOMAIN_HANDLES)
            rc = KF_ERR_LIMIT;
        else
            rc = kf_secmod_domain_key_load(kms->secmod, d->id, d->wrapped_key, d->wrapped_key_len,
                                           h);
        if (rc == KF_OK) {
            kms->loaded[kms->nloaded].domain_id = d->id;
            kms->loaded[kms->nloaded].handle = *h;
            kms->nloaded++;
        }
    }
    pthread_rwlock_unlock(&kms->handles_lock);
    return rc;
}

void kms_forget_handles(kf_kms *kms)
{
    pthread_rwlock_wrlock(&kms->handles_lock);
    kms->nloaded = 0;
    pthread_rwlock_unlock(&kms->handles_lock);
    kms_device_cache_wipe(kms); /* the unwrapped MKEKs go with the domain keys */
    kms_mfg_wipe(kms);          /* and so do the manufacturing role keys */
    kms_tokens_wipe(kms);       /* and the token keys of the verifier's cache */
}

struct kms_reader *kms_reader_acquire(kf_kms *kms)
{
    static atomic_uint next;
    if (!kms->readers[0].store)
        return NULL;
    unsigned start = atomic_fetch_add(&next, 1);
    for (unsigned i = 0; i < KF_KMS_READERS; i++) {
        struct kms_reader *r = &kms->readers[(start + i) % KF_KMS_READERS];
        if (pthread_mutex_trylock(&r->lock) == 0)
            return r;
    }
    struct kms_reader *r = &kms->readers[start % KF_KMS_READERS];
    pthread_mutex_lock(&r->lock);
    return r;
}

void kms_reader_release(struct kms_reader *r)
{
    if (r)
        pthread_mutex_unlock(&r->lock);
}

void kms_read_begin(kf_kms *kms, struct kms_read *r)
{
    r->reader = kms_reader_acquire(kms);
    if (r->reader) {
        r->st = r->reader->store;
    } else {
        pthread_mutex_lock(&kms->lock);
        r->st = kms->store;
    }
}

void kms_read_end(kf_kms *kms, struct kms_read *r)
{
    if (r->reader)
        kms_reader_release(r->reader);
    else
        pthread_mutex_unlock(&kms->lock);
}

/*
 * Group commit of audit records for reads and key uses (groupcommit.c): one
 * transaction per batch, each caller answered only once its record is
 * committed, so a result is never released unaudited.
 *
 * Durability of these records: they are committed to the WAL (write() done
 * before the answer leaves, so they survive a kill -9 of the daemon) but
 * fsynced by the flusher within KMS_AUDIT_SYNC_MS rather than per commit; a
 * power loss can cost at most that window of *use* records. Records of state
 * changes, creations, pair requests and administration are fsync'ed before
 * their answer leaves (kf_store_sync). Under load this turns one fsync per
 * batch into one per window.
 */
#define KMS_AUDIT_SYNC_MS 20

/*
 * One group-commit job: one record (ev points at one), or the records a thread
 * deferred (kf_kms_audit_defer_end). The job's weight stays 0 whatever n is:
 * weight only decides the early hand-off of a *durable* queue
 * (KMS_GC_OVERLAP_ITEMS, groupcommit.c), and this queue is not durable, so a
 * job of n records is queued, led and answered exactly as a lone record is.
 */
struct audit_job {
    struct kms_gc_job gc; /* first */
    const struct kf_audit_event *ev;
    size_t n;
    struct kf_audit_event one;
};

static void *audit_flusher(void *arg)
{
    kf_kms *kms = arg;
    uint64_t done = 0;
    while (!atomic_load(&kms->flusher_stop)) {
        usleep(KMS_AUDIT_SYNC_MS * 1000);
        uint64_t t = atomic_load(&kms->audit_ticket);
        if (t > done && kf_store_sync(kms->store, t) == KF_OK)
            done = t; /* a failure is logged by the store, and sticky */
    }
    uint64_t t = atomic_load(&kms->audit_ticket);
    if (t > done && kf_store_sync(kms->store, t) < 0)
        kf_error("audit: the last read/use records could not be synced");
    return NULL;
}

/* Under kms->lock. The flusher runs for a store on disk only (the pool of
 * readers is the sign of one). */
static bool flusher_ready(kf_kms *kms)
{
    if (!kms->flusher_running && kms->readers[0].store) {
        atomic_store(&kms->flusher_stop, false);
        kms->flusher_running = pthread_create(&kms->flusher, NULL, audit_flusher, kms) == 0;
    }
    return kms->flusher_running;
}

static void stop_flusher(kf_kms *kms)
{
    if (kms->flusher_running) {
        atomic_store(&kms->flusher_stop, true);
        pthread_join(kms->flusher, NULL);
        kms->flusher_running = false;
    }
}

static uint64_t run_audit_batch(kf_kms *kms, struct kms_gc_job *batch)
{
    uint64_t ticket = 0;
    bool deferred = false;
    pthread_mutex_lock(&kms->lock);
    bool flusher = flusher_ready(kms);
    int rc = flusher ? kf_store_begin_deferred(kms->store, &deferred) : kf_store_begin(kms->store);
    for (struct kms_gc_job *j = batch; j && rc == KF_OK; j = j->next) {
        const struct audit_job *aj = (const struct audit_job *)j;
        for (size_t i = 0; i < aj->n && rc == KF_OK; i++)
            rc = kf_audit_append(kms->audit, &aj->ev[i], NULL);
    }
    if (rc == KF_OK)
        rc = kf_store_commit_deferred(kms->store, &ticket);
    if (rc < 0) {
        kf_store_rollback(kms->store);
        kf_error("audit group commit failed: %s", kf_strerror(rc));
        ticket = 0;
    }
    pthread_mutex_unlock(&kms->lock);
    for (struct kms_gc_job *j = batch; j; j = j->next)
        j->rc = rc < 0 ? KF_ERR_AUDIT_WRITE : KF_OK;
    if (ticket) {
        atomic_store(&kms->audit_ticket, ticket); /* the flusher syncs it */
        ticket = 0;
    }
    return ticket;
}

/*
 * Deferral (kf_kms_audit_defer_begin/_end, kms.h): a thread that answers many
 * requests at once (the split endpoint's keyfleetd side: the requests one
 * wake-up found on a worker's channel) keeps their read/use records and
 * commits them as one job at the end: one group commit, and at most one wait,
 * for the whole batch instead of one per request.
 *
 * Why it is safe: the caller holds back every answer of the batch until
 * kf_kms_audit_defer_end returned KF_OK, and answers none of them if it
 * failed. So no key, and no result of a use, leaves before its record is
 * committed -- the rule kms_audit_group keeps for every other caller -- and
 * the durability is the same: committed to the WAL before the answer leaves,
 * fdatasync'ed by the flusher within KMS_AUDIT_SYNC_MS. The operation itself
 * ran before its record was written, as it does without deferral (a Get reads
 * before it audits); what changes is only that the records of one batch share
 * a transaction. The requests of a batch are concurrent (none of them had its
 * answer), so the order of their records among each other, and against a
 * state change another request of the batch committed meanwhile, is an order
 * they could have had anyway.
 *
 * The kept records are copies (the caller's strings live only during its
 * call) in memory of the thread's own, bounded: AUDIT_DEFER_MAX records and
 * AUDIT_DEFER_TEXT bytes of their fields. A record that does not fit commits
 * the kept ones first (synchronously, as one job); a failure there is kept
 * and fails the end. The copies are wiped when committed (the fields are not
 * secret, but they name who used which key).
 */
#define AUDIT_DEFER_MAX 64
#define AUDIT_DEFER_TEXT (16 * 1024) /* > one record at every field's limit (KF_AUDIT_*_MAX) */

struct audit_deferral {
    kf_kms *kms;
    int rc; /* sticky: a commit of kept records failed */
    size_t n, used;
    struct kf_audit_event ev[AUDIT_DEFER_MAX];
    char text[AUDIT_DEFER_TEXT];
};

static _Thread_local struct audit_deferral *deferral;

_Static_assert(AUDIT_DEFER_TEXT > KF_AUDIT_ACTOR_MAX + KF_AUDIT_OPERATION_MAX +
                                      KF_AUDIT_DOMAIN_MAX + KF_AUDIT_OBJECT_MAX +
                                      KF_AUDIT_RESULT_MAX + KF_AUDIT_DETAIL_MAX + 6,
               "a record at every field's limit fits the deferral");

/* Commit the kept records as one job and wipe them. */
static int defer_commit(struct audit_deferral *d)
{
    int rc = KF_OK;
    if (d->n) {
        struct audit_job job = {.ev = d->ev, .n = d->n};
        rc = kms_gc_submit(d->kms, &d->kms->audit_q, &job.gc, run_audit_batch);
    }
    kf_wipe(d->ev, d->n * sizeof(d->ev[0]));
    kf_wipe(d->text, d->used);
    d->n = d->used = 0;
    if (rc < 0 && d->rc == KF_OK)
        d->rc = rc;
    return rc;
}

static const char *defer_copy(struct audit_deferral *d, const char *s)
{
    size_t n = strlen(s) + 1;
    char *at = d->text + d->used;
    memcpy(at, s, n);
    d->used += n;
    return at;
}

/* Keep a copy of ev: true, or false if it can never fit (commit it alone). */
static bool defer_keep(struct audit_deferral *d, const struct kf_audit_event *ev)
{
    const char *f[] = {ev->actor, ev->operation, ev->domain, ev->object, ev->result, ev->detail};
    size_t need = 0;
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        need += strlen(f[i] ? f[i] : "") + 1;
    if (need > sizeof(d->text))
        return false;
    if (d->n == AUDIT_DEFER_MAX || need > sizeof(d->text) - d->used)
        (void)defer_commit(d); /* full: a failure is kept in d->rc */
    struct kf_audit_event *c = &d->ev[d->n++];
    c->actor = defer_copy(d, f[0] ? f[0] : "");
    c->operation = defer_copy(d, f[1] ? f[1] : "");
    c->domain = defer_copy(d, f[2] ? f[2] : "");
    c->object = defer_copy(d, f[3] ? f[3] : "");
    c->result = defer_copy(d, f[4] ? f[4] : "");
    c->detail = defer_copy(d, f[5] ? f[5] : "");
    return true;
}

int kms_audit_group(kf_kms *kms, const struct kf_audit_event *ev)
{
    struct audit_deferral *d = deferral;
    if (d && d->kms == kms) {
        if (d->rc < 0)
            return d->rc; /* the batch fails anyway: nothing of it may leave */
        if (defer_keep(d, ev))
            return KF_OK; /* its answer waits for kf_kms_audit_defer_end */
    }
    struct audit_job me = {.ev = &me.one, .n = 1, .one = *ev};
    return kms_gc_submit(kms, &kms->audit_q, &me.gc, run_audit_batch);
}

int kf_kms_audit_defer_begin(kf_kms *kms)
{
    KF_ENSURE(kms, KF_ERR_ARG);
    if (deferral) {
        kf_error("audit: kf_kms_audit_defer_begin while this thread already defers: refused");
        return KF_ERR_INTERNAL;
    }
    struct audit_deferral *d = malloc(sizeof(*d));
    KF_ENSURE(d, KF_ERR_NOMEM);
    d->kms = kms;
    d->rc = KF_OK;
    d->n = d->used = 0;
    deferral = d;
    return KF_OK;
}

int kf_kms_audit_defer_end(kf_kms *kms)
{
    struct audit_deferral *d = deferral;
    if (!d) {
        kf_error("audit: kf_kms_audit_defer_end without kf_kms_audit_defer_begin: refused");
        return KF_ERR_INTERNAL;
    }
    deferral = NULL;
    int rc;
    if (d->kms != kms) {
        kf_error("audit: kf_kms_audit_defer_end for another service than its begin: the %zu "
                 "kept records are dropped",
                 d->n);
        d->n = 0;
        rc = KF_ERR_ARG;
    } else {
        rc = defer_commit(d);
        if (rc == KF_OK)
            rc = d->rc;
    }
    kf_wipe(d, sizeof(*d));
    free(d);
    return rc;
}

static int make_dir(const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        kf_error("cannot create data directory %s: %s", dir, strerror(errno));
        return KF_ERR_IO;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        kf_error("data directory %s is not a directory", dir);
        return KF_ERR_IO;
    }
    return KF_OK;
}

static int open_parts(kf_kms *kms, const struct kf_kms_config *cfg)
{
    struct kf_secmod_config sc = {
        .backend = cfg->pkcs11_module ? KF_SECMOD_PKCS11 : KF_SECMOD_SOFT,
        .dir = kms->dir,
        .module_path = cfg->pkcs11_module,
        .token_label = cfg->token_label,
        .key_label = NULL,
    };
    KF_GUARD(kf_secmod_open(&sc, &kms->secmod));
    KF_GUARD(kf_store_open(cfg->memory_store ? KF_STORE_IN_MEMORY : kms->dir, &kms->store));
    struct kf_audit_mac mac = {.mac = audit_mac_cb, .ctx = kms};
    struct kf_audit_options opt = {.checkpoint_interval = cfg->audit_checkpoint_interval};
    KF_GUARD(kf_audit_open(kf_store_db(kms->store), &mac, &opt, &kms->audit));
    for (int i = 0; i < KF_KMS_READERS && !cfg->memory_store; i++)
        KF_GUARD(kf_store_open(kms->dir, &kms->readers[i].store));
    KF_GUARD(kms_device_cache_open(kms));
    KF_GUARD(kms_mfg_open(kms));
    return kms_tokens_open(kms);
}

/*
 * KMIP clients that know nothing of domains create into "default"; make it
 * the first time the module is unsealed, so such a client works out of the box.
 * Called with kms->lock held and the module unsealed.
 */
static void ensure_default_domain(kf_kms *kms)
{
    struct kf_domain d = {0};
    int rc = kf_store_domain_get(kms->store, "default", &d);
    kf_domain_clear(&d);
    if (rc != KF_ERR_DOMAIN)
        return;
    uint64_t id;
    kf_buf wrapped;
    if (kf_buf_alloc(&wrapped, 128, 4096, 0) < 0)
        return;
    rc = kf_store_begin(kms->store);
    if (rc == KF_OK)
        rc = kf_store_domain_create(kms->store, "default", NULL, NULL, 0, &id);
    if (rc == KF_OK)
        rc = kf_secmod_domain_key_new(kms->secmod, id, &wrapped);
    if (rc == KF_OK)
        rc = kf_store_domain_set_key(kms->store, id, wrapped.data, wrapped.len);
    if (rc == KF_OK)
        rc = kms_audit(kms, "system", "domain-create", "default", "", KF_OK,
                       "made at first unseal for clients that name no domain");
    if (rc == KF_OK)
        rc = kf_store_commit(kms->store);
    if (rc < 0) {
        kf_store_rollback(kms->store);
        kf_warn("could not create the default domain: %s", kf_strerror(rc));
    }
    kf_buf_free(&wrapped);
}

/* Dev mode: a 1-of-1 root key kept in the data directory that unseals itself. */
static int dev_autostart(kf_kms *kms)
{
    if (!kf_secmod_initialised(kms->secmod)) {
        char share[1][KF_SHARE_MAX];
        int rc = kf_secmod_init_soft(kms->secmod, 1, 1, true, share);
        kf_wipe(share, sizeof(share));
        KF_GUARD(kf_store_begin(kms->store));
        if (kms_audit(kms, "system", "init", "", "", rc, "dev mode: 1-of-1 key file") < 0 ||
            kf_store_commit(kms->store) < 0)
            kf_store_rollback(kms->store);
        KF_GUARD(rc);
    }
    int rc = kf_secmod_unseal_dev(kms->secmod);
    kms_audit_refusal(kms, "system", "unseal", "", "", rc, "dev mode key file");
    if (rc == KF_OK)
        ensure_default_domain(kms);
    return rc;
}

/*
 * glibc gives the top of a thread's heap back to the kernel (madvise) as soon
 * as a free leaves more than the trim threshold there, and takes it back
 * (page faults) on the next request: SQLite's per-commit buffers made every
 * create and pair request do both (5 % of the daemon's profile). Keep freed
 * memory in the process instead; the peak per connection is small.
 */
static void tune_allocator(void)
{
    (void)mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
}

int kf_kms_open(const struct kf_kms_config *cfg, kf_kms **out)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, tune_allocator);
    KF_ENSURE(cfg && cfg->dir && out, KF_ERR_ARG);
    KF_ENSURE(strlen(cfg->dir) < sizeof(((kf_kms *)0)->dir), KF_ERR_LIMIT);
    KF_GUARD(make_dir(cfg->dir));
    kf_rng_install();
    kf_kms *kms = calloc(1, sizeof(*kms));
    KF_ENSURE(kms != NULL, KF_ERR_NOMEM);
    snprintf(kms->dir, sizeof(kms->dir), "%s", cfg->dir);
    kms->dev = cfg->dev;
    kms->pkcs11 = cfg->pkcs11_module != NULL;
    pthread_mutex_init(&kms->lock, NULL);
    kms_gc_queue_init(&kms->audit_q, false);
    kms_gc_queue_init(&kms->create_q, true);
    kms_gc_queue_init(&kms->device_q, true);
    pthread_rwlock_init(&kms->handles_lock, NULL);
    for (int i = 0; i < KF_KMS_READERS; i++)
        pthread_mutex_init(&kms->readers[i].lock, NULL);
    int rc = open_parts(kms, cfg);
    if (rc == KF_OK && cfg->dev && !kms->pkcs11)
        rc = dev_autostart(kms);
    if (rc == KF_OK && kms->pkcs11 && cfg->pin && kf_secmod_initialised(kms->secmod)) {
        bool done;
        unsigned received;
        rc = kf_kms_unseal(kms, "system", cfg->pin, &done, &received);
    }
    if (rc < 0) {
        kf_kms_close(kms);
        return rc;
    }
    *out = kms;
    return KF_OK;
}

void kf_kms_close(kf_kms *kms)
{
    if (!kms)
        return;
    stop_flusher(kms); /* syncs what is pending */
    struct {
        const char *what;
        struct kms_gc_queue *q;
    } qs[] = {{"read/use audit", &kms->audit_q}, {"create", &kms->create_q},
              {"pair/ack", &kms->device_q}};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        uint64_t b = atomic_load(&qs[i].q->batches), j = atomic_load(&qs[i].q->jobs);
        if (b)
            kf_info("group commit, %s: %llu jobs in %llu batches (%.1f per batch)", qs[i].what,
                    (unsigned long long)j, (unsigned long long)b, (double)j / (double)b);
    }
    uint64_t sync_ns, syncs = kf_store_sync_count(kms->store, &sync_ns);
    if (syncs)
        kf_info("group commit: %llu fdatasyncs of the WAL, %.0f us each on average",
                (unsigned long long)syncs, (double)sync_ns / 1000.0 / (double)syncs);
    kms_device_cache_close(kms);
    kms_tokens_close(kms); /* its statements are on kms->store: before that closes */
    kms_mfg_close(kms);
    kf_audit_close(kms->audit);
    kf_store_close(kms->store);
    for (int i = 0; i < KF_KMS_READERS; i++) {
        kf_store_close(kms->readers[i].store);
        pthread_mutex_destroy(&kms->readers[i].lock);
    }
    kf_secmod_close(kms->secmod);
    pthread_mutex_destroy(&kms->lock);
    kms_gc_queue_destroy(&kms->audit_q);
    kms_gc_queue_destroy(&kms->create_q);
    kms_gc_queue_destroy(&kms->device_q);
    pthread_rwlock_destroy(&kms->handles_lock);
    free(kms);
}

static int count_domain(void *ctx, const struct kf_domain *d)
{
    (void)d;
    (*(uint64_t *)ctx)++;
    return KF_OK;
}

int kf_kms_status(kf_kms *kms, struct kf_kms_status *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_lock(&kms->lock);
    s->initialised = kf_secmod_initialised(kms->secmod);
    s->sealed = kf_secmod_sealed(kms->secmod);
    s->dev = kms->dev;
    s->backend = kms->pkcs11 ? "pkcs11" : "soft";
    kf_secmod_progress(kms->secmod, &s->threshold, &s->shares, &s->shares_received);
    uint8_t hash[KF_AUDIT_HASH_LEN];
    int rc = kf_audit_head(kms->audit, &s->audit_records, hash);
    if (rc == KF_OK)
        rc = kf_store_domain_list(kms->store, count_domain, &s->domains);
    s->schema_version = kf_store_schema_version();
    pthread_mutex_unlock(&kms->lock);
    return rc;
}

/* Run fn inside lock + transaction with an audit record of its outcome. */
static int audited_admin(kf_kms *kms, const char *actor, const char *op, const char *domain,
                         const char *detail, int rc)
{
    if (kf_store_begin(kms->store) < 0)
        return rc < 0 ? rc : KF_ERR_AUDIT_WRITE;
    int arc = kms_audit(kms, actor, op, domain, "", rc, detail);
    if (arc < 0 || kf_store_commit(kms->store) < 0) {
        kf_store_rollback(kms->store);
        return rc < 0 ? rc : KF_ERR_AUDIT_WRITE;
    }
    return rc;
}

int kf_kms_init(kf_kms *kms, const char *actor, unsigned m, unsigned n,
                char shares[][KF_SHARE_MAX])
{
    KF_ENSURE(!kms->pkcs11, KF_ERR_UNSUPPORTED);
    pthread_mutex_lock(&kms->lock);
    int rc = kf_secmod_init_soft(kms->secmod, m, n, false, shares);
    char detail[64];
    snprintf(detail, sizeof(detail), "threshold %u of %u shares", m, n);
    rc = audited_admin(kms, actor, "init", "", detail, rc);
    pthread_mutex_unlock(&kms->lock);
    return rc;
}

int kf_kms_init_pkcs11(kf_kms *kms, const char *actor, const char *pin)
{
    KF_ENSURE(kms->pkcs11, KF_ERR_UNSUPPORTED);
    pthread_mutex_lock(&kms->lock);
    int rc = kf_secmod_init_pkcs11(kms->secmod, pin);
    rc = audited_admin(kms, actor, "init", "", "root key generated in PKCS#11 token", rc);
    pthread_mutex_unlock(&kms->lock);
    return rc;
}

int kf_kms_unseal(kf_kms *kms, const char *actor, const char *share_or_pin, bool *done,
                  unsigned *received)
{
    pthread_mutex_lock(&kms->lock);
    int rc;
    *done = false;
    if (!kf_secmod_initialised(kms->secmod)) {
        rc = KF_ERR_NOT_INIT;
    } else if (!kf_secmod_sealed(kms->secmod)) {
        rc = KF_ERR_ALREADY_UNSEALED;
    } else if (kms->pkcs11) {
        rc = kf_secmod_unseal_pin(kms->secmod, share_or_pin);
        *done = rc == KF_OK;
    } else {
        rc = kf_secmod_unseal_share(kms->secmod, share_or_pin, done);
    }
    unsigned m = 0, n = 0;
    kf_secmod_progress(kms->secmod, &m, &n, received);
    if (*done)
        kms_forget_handles(kms);
    /* Only the outcome is recorded, never the share or PIN. */
    const char *detail = *done ? "unsealed" : (rc == KF_OK ? "share accepted" : "refused");
    rc = audited_admin(kms, actor, "unseal", "", detail, rc);
    if (rc == KF_OK && *done)
        ensure_default_domain(kms);
    pthread_mutex_unlock(&kms->lock);
    return rc;
}

int kf_kms_seal(kf_kms *kms, const char *actor)
{
    pthread_mutex_lock(&kms->lock);
    int rc = kf_secmod_initialised(kms->secmod) ? KF_OK : KF_ERR_NOT_INIT;
    /* Audit first, while the module can still MAC the head. */
    rc = audited_admin(kms, actor, "seal", "", "", rc);
    if (rc == KF_OK) {
        kf_secmod_seal(kms->secmod);
        kms_forget_handles(kms);
    }
    pthread_mutex_unlock(&kms->lock);
    return rc;
}

int kf_kms_domain_create(kf_kms *kms, const char *actor, const char *name, const char *parent)
{
    pthread_mutex_lock(&kms->lock);
    uint64_t id = 0;
    kf_buf wrapped = {0};
    int rc = kf_secmod_sealed(kms->secmod) ? KF_ERR_SEALED : KF_OK;
    if (rc == KF_OK)
        rc = kf_buf_alloc(&wrapped, 128, 4096, 0);
    if (rc == KF_OK)
        rc = kf_store_begin(kms->store);
    if (rc == KF_OK) {
        rc = kf_store_domain_create(kms->store, name, parent, NULL, 0, &id);
        if (rc == KF_OK)
            rc = kf_secmod_domain_key_new(kms->secmod, id, &wrapped);
        if (rc == KF_OK)
            rc = kf_store_domain_set_key(kms->store, id, wrapped.data, wrapped.len);
        if (rc == KF_OK)
            rc = kms_audit(kms, actor, "domain-create", name, "", KF_OK,
                           parent ? parent : "top-level");
        if (rc == KF_OK)
            rc = kf_store_commit(kms->store);
        if (rc < 0)
            kf_store_rollback(kms->store);
    }
    kf_buf_free(&wrapped);
    if (rc < 0)
        kms_audit_refusal(kms, actor, "domain-create", kf_domain_name_valid(name) ? name : "", "",
                          rc, NULL);
    pthread_mutex_unlock(&kms->lock);
    return rc;
}

int kf_kms_domain_list(kf_kms *kms, kf_store_domain_cb cb, void *ctx)
{
    pthread_mutex_lock(&kms->lock);
    int rc = kf_store_domain_list(kms->store, cb, ctx);
    pthread_mutex_unlock(&kms->lock);
    return rc;
}

int kf_kms_audit_list(kf_kms *kms, uint64_t from, uint64_t max, kf_audit_record_cb cb, void *ctx)
{
    pthread_mutex_lock(&kms->lock);
    int rc = kf_audit_list(kms->audit, from, max, cb, ctx);
    pthread_mutex_unlock(&kms->lock);
    return rc;
}

int kf_kms_audit_verify(kf_kms *kms, struct kf_audit_report *r)
{
    pthread_mutex_lock(&kms->lock);
    int rc = kf_audit_verify(kms->audit, r);
    pthread_mutex_unlock(&kms->lock);
    return rc;
}
