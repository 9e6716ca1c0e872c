/*
 * Pair key requests and their acknowledgements (docs/pairing.md "Server
 * operations", "Batched requests"): the service half of
 * KeyfleetPairKeyRequest and KeyfleetPairAckReport. The devices themselves
 * (registration, export, the MKEK's mark): device.c.
 *
 * Order of a pair request (the replayed-M defence of seed [0039]-[0041]
 * depends on it): ONE transaction advances C_A and C_B, reserves the KEK IDs,
 * records their metadata and the audit record, and commits durably; only then
 * are the KEKs drawn and M built. A crash after commit loses nothing that
 * matters: the counters only went up, and the unused KEK IDs are simply never
 * acknowledged. Pair requests and acknowledgements are group-committed like
 * creates (groupcommit.c): concurrent callers share one transaction and one
 * fdatasync of the WAL, each in its own savepoint, and each is answered only
 * once that fdatasync, begun after the commit, has completed. The items of
 * one KMIP message (kms_pair_issue_items, kms_pair_ack_items) are one such
 * caller: the same order holds for each of them, every M of the message is
 * built only after the commit that carries all their counters.
 *
 * A KEK exists only in secure memory between the RNG and kfd_issue_part, and
 * is wiped after; the MKEKs come from the device cache (device_cache.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keyfleet/device.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "kms_internal.h"

static int64_t now_seconds(void)
{
    return (int64_t)time(NULL);
}

/* ---- Group commit of pair requests and acknowledgements ----
 * groupcommit.c: the leader runs every queued job in its own savepoint inside
 * one transaction, commits once, audits the refusals, and the jobs are
 * answered only once the commit is fsync'ed (kf_store_sync). A job's result
 * is final only then.
 *
 * The items of one KMIP Request Message (kms_pair_issue_items,
 * kms_pair_ack_items) are one caller of the queue: its first job carries the
 * others (next), so they ride in the same transaction, in order, each in a
 * savepoint of its own, and the caller wakes once. An item chained to the one
 * before it (KMIP Batch Error Continuation Option Stop or Undo, or the second
 * ack of a report) is not run, and not answered, when that one failed or was
 * not run: exactly what a message whose items ran one after the other would
 * have done, only with one commit and one fdatasync for all of them.
 */

/*
 * KEK IDs reserved by the batch's transaction and not yet used: a pair job
 * takes its IDs from here, and reserves (at most 8 at a time, the store's
 * limit) only when too few are left, as many as the jobs still to run will
 * take. So a batch of single-KEK requests reserves once per eight, not once
 * per request (one UPDATE of the KEK id mark less per request). Which jobs
 * will take IDs is known before any runs: each job's checks (check: the
 * devices, their domain, their MKEKs' state) are made first, in the same
 * transaction, for the whole batch, and a job that fails them, or that is
 * chained to one that does, reserves nothing. A reservation made by a job
 * that then fails anyway is rolled back with its savepoint, and the pool with
 * it, so the next job reuses those IDs; only such a failure (a database
 * error) of a job that an earlier one reserved for leaves IDs that are never
 * used, as a crash after a commit does. The IDs stay consecutive otherwise.
 */
struct kek_pool {
    uint64_t next, end; /* [next, end) reserved, unused */
    uint64_t need;      /* KEKs the jobs not yet run will take, the running one's included */
};

/*
 * Device counters C_X the batch's transaction has moved. The first issuance
 * to a device in a transaction moves its row (UPDATE ... RETURNING, as ever);
 * further ones to the same device in the same transaction — a gateway asking
 * for several keys of one pair in one message, or two connections' messages
 * in one batch — count on here, and the row gets the final value once, before
 * the commit (or before an ack runs: an ack reads the row, and may move it
 * forward itself, so the table is written out and forgotten first). Nothing
 * of it outlives the transaction: the values reach the database in the same
 * commit that carries the issuances, before any M is built, and a rollback
 * takes them back with everything else. A job that fails puts back what it
 * changed here, as its savepoint does in the database.
 */
#define TX_COUNTER_SLOTS 512u /* power of two */
#define TX_COUNTER_FILL 384u  /* beyond: new devices go to the row each time */

struct tx_counter {
    const char *id; /* NULL: empty slot */
    uint64_t value; /* C_X as the transaction has it */
    bool live;      /* false: its job failed (or never set it) */
    bool dirty;     /* value is ahead of the row */
};

struct dev_tx {
    struct kek_pool pool;
    size_t used;
    struct {
        struct tx_counter *slot;
        struct tx_counter before;
    } undo[2]; /* what the running job changed */
    size_t nundo;
    struct tx_counter c[TX_COUNTER_SLOTS];
};

static struct tx_counter *tx_counter_slot(struct dev_tx *tx, const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = id; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    for (unsigned k = 0; k < TX_COUNTER_SLOTS; k++) {
        struct tx_counter *c = &tx->c[(h + k) & (TX_COUNTER_SLOTS - 1)];
        if (!c->id) {
            if (tx->used >= TX_COUNTER_FILL)
                return NULL;
            tx->used++;
            *c = (struct tx_counter){.id = id};
            return c;
        }
        if (strcmp(c->id, id) == 0)
            return c;
    }
    return NULL;
}

static void tx_counter_set(struct dev_tx *tx, struct tx_counter *c, uint64_t value, bool dirty)
{
    tx->undo[tx->nundo].slot = c;
    tx->undo[tx->nundo++].before = *c;
    c->value = value;
    c->live = true;
    c->dirty = dirty;
}

/* C_A + 1 and C_B + 1, as kf_store_device_next_counters. */
static int tx_next_counters(kf_store *st, struct dev_tx *tx, const char *const ids[2],
                            uint64_t counters[2])
{
    struct tx_counter *c[2];
    for (int i = 0; i < 2; i++)
        c[i] = tx_counter_slot(tx, ids[i]);
    if (!(c[0] && c[0]->live) && !(c[1] && c[1]->live)) {
        KF_GUARD(kf_store_device_next_counters(st, ids, counters));
        for (int i = 0; i < 2; i++)
            if (c[i])
                tx_counter_set(tx, c[i], counters[i], false);
        return KF_OK;
    }
    for (int i = 0; i < 2; i++) {
        uint64_t now;
        if (c[i] && c[i]->live) {
            now = c[i]->value;
        } else {
            struct kf_device dev;
            KF_GUARD(kf_store_device_get(st, ids[i], &dev));
            now = dev.counter;
        }
        KF_ENSURE(now < (uint64_t)INT64_MAX, KF_ERR_DEVICE_COUNTER);
        counters[i] = now + 1;
        if (c[i])
            tx_counter_set(tx, c[i], counters[i], true);
        else
            KF_GUARD(kf_store_device_set_counter(st, ids[i], counters[i]));
    }
    return KF_OK;
}

/* Write the counters that are ahead of their rows, and forget them all. */
static int tx_counters_flush(kf_store *st, struct dev_tx *tx)
{
    int rc = KF_OK;
    if (tx->used == 0)
        return KF_OK;
    for (unsigned k = 0; k < TX_COUNTER_SLOTS && rc == KF_OK; k++) {
        const struct tx_counter *c = &tx->c[k];
        if (c->id && c->live && c->dirty)
            rc = kf_store_device_set_counter(st, c->id, c->value);
    }
    memset(tx->c, 0, sizeof(tx->c));
    tx->used = 0;
    return rc;
}

struct dev_job {
    struct kms_gc_job gc; /* first: the queue holds &gc */
    /* In the open transaction: check (read only; NULL: none), then run. */
    int (*check)(kf_kms *kms, struct dev_job *j);
    int (*run)(kf_kms *kms, struct dev_job *j, struct dev_tx *tx);
    void (*refused)(kf_kms *kms, struct dev_job *j); /* audit rc, under kms->lock */
    struct dev_job *next; /* the next item of the same message, in order */
    uint32_t keks;        /* KEK IDs it takes (pair requests) */
    bool counters;        /* moves device counters through the transaction's table */
    bool counted;         /* its keks are in the pool's need */
    bool chained;         /* run only if the job before it ran and succeeded */
    bool decided;         /* refused before the transaction (rc set): not run in it */
    bool ran;             /* out: run or refused (answered); false: not run, not answered */
    int rc;               /* out: the job's result */
};

/* count consecutive KEK IDs from the pool, reserving when short. */
static int kek_ids_take(kf_store *st, struct kek_pool *pool, uint32_t count, uint64_t *first)
{
    if (pool->end - pool->next < count) {
        uint64_t want = pool->need > count ? pool->need : count;
        want -= pool->end - pool->next; /* what is left is the start of the run */
        uint32_t r = want > KF_PAIR_MAX_KEKS ? KF_PAIR_MAX_KEKS : (uint32_t)want;
        uint64_t got;
        KF_GUARD(kf_store_kek_ids_next(st, r, &got));
        if (got != pool->end) /* not contiguous (never, under kms->lock): start over */
            pool->next = got;
        pool->end = got + r;
    }
    KF_ENSURE(pool->end - pool->next >= count, KF_ERR_INTERNAL);
    *first = pool->next;
    pool->next += count;
    return KF_OK;
}

/* Whether j may run after prev (the item before it in its message, or NULL). */
static bool chain_holds(const struct dev_job *prev, const struct dev_job *j)
{
    return !j->chained || !prev || (prev->ran && prev->rc == KF_OK);
}

static int run_in_savepoint(kf_kms *kms, struct dev_job *j, struct dev_tx *tx)
{
    struct kek_pool before = tx->pool;
    tx->nundo = 0;
    KF_GUARD(kf_store_savepoint(kms->store));
    int rc = j->run(kms, j, tx);
    kf_store_savepoint_end(kms->store, rc == KF_OK);
    if (rc < 0) {
        /* Its reservation and counter updates were rolled back with it. */
        before.need = tx->pool.need;
        tx->pool = before;
        while (tx->nundo > 0) {
            tx->nundo--;
            *tx->undo[tx->nundo].slot = tx->undo[tx->nundo].before;
        }
    }
    return rc;
}

/* What did not become durable (the commit failed, or its fdatasync): every
 * item that had succeeded fails with rc, and an item chained to a failed one
 * is not answered, as if the message had stopped there. */
static void settle(struct dev_job *head, int rc)
{
    for (struct dev_job *d = head, *prev = NULL; d; prev = d, d = d->next) {
        if (!d->ran)
            continue;
        if (!chain_holds(prev, d))
            d->ran = false;
        else if (d->rc == KF_OK)
            d->rc = rc;
    }
}

static uint64_t run_device_batch(kf_kms *kms, struct kms_gc_job *batch)
{
    uint64_t ticket = 0;
    bool deferred;
    pthread_mutex_lock(&kms->lock);
    int trc = kf_secmod_sealed(kms->secmod) ? KF_ERR_SEALED
                                            : kf_store_begin_deferred(kms->store, &deferred);
    struct dev_tx tx; /* 12 kB */
    memset(&tx, 0, sizeof(tx));
    struct kek_pool *pool = &tx.pool;
    /* Checks first: who will run, and so how many KEK IDs the batch takes. */
    for (struct kms_gc_job *j = batch; j; j = j->next)
        for (struct dev_job *d = (struct dev_job *)j, *prev = NULL; d; prev = d, d = d->next) {
            d->ran = chain_holds(prev, d);
            d->counted = false;
            if (!d->ran || d->decided)
                continue;
            d->rc = trc == KF_OK && d->check ? d->check(kms, d) : trc;
            d->counted = d->rc == KF_OK;
            pool->need += d->counted ? d->keks : 0;
        }
    int xrc = KF_OK; /* writing the counter table out failed: the batch fails */
    for (struct kms_gc_job *j = batch; j; j = j->next)
        for (struct dev_job *d = (struct dev_job *)j, *prev = NULL; d; prev = d, d = d->next) {
            d->ran = chain_holds(prev, d);
            if (d->ran && !d->decided && d->rc == KF_OK) {
                if (!d->counters && xrc == KF_OK)
                    xrc = tx_counters_flush(kms->store, &tx);
                d->rc = xrc == KF_OK ? run_in_savepoint(kms, d, &tx) : xrc;
            }
            if (!d->ran)
                d->rc = KF_OK; /* not run: no result (its check's is void) */
            if (d->counted)
                pool->need -= d->keks;
        }
    if (trc == KF_OK && xrc == KF_OK)
        xrc = tx_counters_flush(kms->store, &tx);
    if (trc == KF_OK && xrc < 0) {
        kf_store_rollback(kms->store);
        for (struct kms_gc_job *j = batch; j; j = j->next)
            settle((struct dev_job *)j, xrc); /* nothing of the batch persisted */
    } else if (trc == KF_OK && (trc = kf_store_commit_deferred(kms->store, &ticket)) < 0) {
        kf_store_rollback(kms->store);
        for (struct kms_gc_job *j = batch; j; j = j->next)
            settle((struct dev_job *)j, trc); /* nothing of the batch persisted */
    }
    for (struct kms_gc_job *j = batch; j; j = j->next)
        for (struct dev_job *d = (struct dev_job *)j; d; d = d->next)
            if (d->ran && d->rc < 0)
                d->refused(kms, d);
    pthread_mutex_unlock(&kms->lock);
    return ticket;
}

/* Run head (and the items it carries) in a group commit; head->rc etc. hold
 * the results. A message whose items were all refused before the transaction
 * costs no transaction: its refusals are audited here. */
static void device_batch_submit(kf_kms *kms, struct dev_job *head)
{
    unsigned runnable = 0;
    for (struct dev_job *d = head, *prev = NULL; d; prev = d, d = d->next) {
        if (!d->decided)
            d->rc = KF_OK; /* as if it will succeed: does anything run at all? */
        d->ran = chain_holds(prev, d);
        runnable += d->ran && !d->decided;
    }
    bool any = runnable > 0;
    /* A lone request says nothing: the queue treats it as it always did. */
    head->gc.weight = head->next ? runnable : 0;
    if (!any) {
        pthread_mutex_lock(&kms->lock);
        for (struct dev_job *d = head; d; d = d->next)
            if (d->ran)
                d->refused(kms, d);
        pthread_mutex_unlock(&kms->lock);
        return;
    }
    int rc = kms_gc_submit(kms, &kms->device_q, &head->gc, run_device_batch);
    if (rc < 0)
        settle(head, rc); /* committed, but not known to be on disk: not answered as done */
}

/* ---- Pair key request ---- */

struct pair_job {
    struct dev_job job; /* first */
    const char *actor, *id_a, *id_b;
    uint32_t count, lifetime, max_uses;
    /* Captured in the transaction for building M after the commit. */
    char domain[KF_DOMAIN_NAME_MAX + 1];
    struct kms_device_view dev[2];
    uint64_t counter[2];
    uint64_t first_kek_id;
    int64_t not_before;
};

/* The MKEK may wrap KEKs now: its mark, archive, material and (from its
 * dates, now) its state, as of this transaction. */
static int device_usable(const struct kms_device_view *v, enum kf_use_purpose purpose)
{
    uint32_t state = kf_lifecycle_effective_state(v->state, v->activation_date,
                                                  v->deactivation_date, now_seconds());
    KF_ENSURE(v->bound, KF_ERR_INTERNAL);
    KF_ENSURE(!v->archived, KF_ERR_OBJECT_ARCHIVED);
    KF_ENSURE(kf_lifecycle_allows_use(state, purpose) && v->has_material, KF_ERR_STATE);
    return KF_OK;
}

/* Before anything is written: both devices, one domain, MKEKs usable. */
static int pair_check(kf_kms *kms, struct dev_job *j)
{
    struct pair_job *p = (struct pair_job *)j;
    const char *ids[2] = {p->id_a, p->id_b};
    for (int i = 0; i < 2; i++)
        KF_GUARD(kms_device_view_tx(kms, ids[i], &p->dev[i]));
    KF_ENSURE(p->dev[0].domain_id == p->dev[1].domain_id, KF_ERR_DOMAIN_CROSS);
    memcpy(p->domain, p->dev[0].domain, sizeof(p->domain));
    for (int i = 0; i < 2; i++)
        KF_GUARD(device_usable(&p->dev[i], KF_USE_WRAP));
    return KF_OK;
}

/* After pair_check, in the same transaction (nothing of a pair job changes
 * what it checked: device rows' identity and MKEK objects stay as they are). */
static int pair_run(kf_kms *kms, struct dev_job *j, struct dev_tx *tx)
{
    struct pair_job *p = (struct pair_job *)j;
    const char *ids[2] = {p->id_a, p->id_b};
    kf_store *st = kms->store;
    /* C_A + 1, C_B + 1: in the database (authoritative) and in this job. */
    KF_GUARD(tx_next_counters(st, tx, ids, p->counter));
    KF_GUARD(kek_ids_take(st, &tx->pool, p->count, &p->first_kek_id));
    p->not_before = now_seconds();
    struct kf_pair_kek k = {
        .domain_id = p->dev[0].domain_id,
        .counter_a = p->counter[0],
        .counter_b = p->counter[1],
        .max_uses = p->max_uses,
        .issued_at = p->not_before,
    };
    memcpy(k.id_a, p->dev[0].id, sizeof(k.id_a));
    memcpy(k.id_b, p->dev[1].id, sizeof(k.id_b));
    for (uint32_t i = 0; i < p->count; i++) {
        k.kek_id = p->first_kek_id + i;
        k.kek_index = i;
        k.not_before = p->not_before + (int64_t)i * p->lifetime;
        k.not_after = k.not_before + p->lifetime;
        KF_GUARD(kf_store_pair_kek_insert(st, &k));
    }
    /* IDs, KEK IDs and counters: never a key. */
    char detail[320];
    snprintf(detail, sizeof(detail),
             "A %s B %s kek %llu..%llu count %u counter A %llu B %llu lifetime %u max uses %u",
             p->id_a, p->id_b, (unsigned long long)p->first_kek_id,
             (unsigned long long)(p->first_kek_id + p->count - 1), p->count,
             (unsigned long long)p->counter[0], (unsigned long long)p->counter[1], p->lifetime,
             p->max_uses);
    return kms_audit(kms, p->actor, "PairKeyRequest", p->domain, p->id_a, KF_OK, detail);
}

static void pair_audit_refusal(kf_kms *kms, const struct pair_job *p, int rc, const char *why)
{
    char detail[256];
    const char *b = kms_device_shown_id(p->id_b);
    if (why)
        snprintf(detail, sizeof(detail), "B %s: %s", *b ? b : "-", why);
    else
        snprintf(detail, sizeof(detail), "B %s", *b ? b : "-");
    kms_audit_refusal(kms, p->actor, "PairKeyRequest", p->domain, kms_device_shown_id(p->id_a), rc,
                      detail);
}

static void pair_refused(kf_kms *kms, struct dev_job *j)
{
    struct pair_job *p = (struct pair_job *)j;
    pair_audit_refusal(kms, p, j->rc,
                       j->rc == KF_ERR_RNG_HEALTH ? "random source failed its health test" : NULL);
}

/* One part of M, built with the MKEK of its device (kms_device_with_mkek). */
struct part_build {
    const struct pair_job *p;
    enum kfd_role role;
    uint64_t counter;
    const struct kfd_issue_kek *meta;
    const uint8_t (*keks)[KFD_KEY_LEN];
    const uint8_t *nonce;
    kf_buf *m;
};

static int build_part(void *ctx, const uint8_t *mkek)
{
    const struct part_build *b = ctx;
    return kfd_issue_part(mkek, b->role, b->p->id_a, b->p->id_b, b->counter, b->meta, b->keks,
                          b->p->count, b->nonce, b->m);
}

/* The RNG output one M takes: its KEKs, then the two parts' nonces. */
static size_t message_randomness(const struct pair_job *p)
{
    return (size_t)p->count * KFD_KEY_LEN + 2 * KFD_NONCE_LEN;
}

/* After the commit: build SM_A || SM_B into m from rnd (message_randomness(p)
 * bytes fresh from the RNG, in secure memory: the caller wipes them). */
static int build_message_from(kf_kms *kms, struct pair_job *p, const uint8_t *rnd, kf_buf *m)
{
    struct kfd_issue_kek meta[KF_PAIR_MAX_KEKS];
    static const enum kfd_role roles[2] = {KFD_ROLE_A, KFD_ROLE_B};
    size_t n = (size_t)p->count * KFD_KEY_LEN;
    const uint8_t *nonce[2] = {rnd + n, rnd + n + KFD_NONCE_LEN};
    int rc = KF_OK;
    for (uint32_t i = 0; i < p->count; i++)
        meta[i] = (struct kfd_issue_kek){
            .kek_id = p->first_kek_id + i,
            .not_before = p->not_before + (int64_t)i * p->lifetime,
            .not_after = p->not_before + (int64_t)(i + 1) * p->lifetime,
            .max_uses = p->max_uses,
        };
    /* Each part is appended to m: M = SM_A || SM_B. */
    for (int i = 0; i < 2 && rc == KF_OK; i++) {
        struct part_build b = {
            .p = p,
            .role = roles[i],
            .counter = p->counter[i],
            .meta = meta,
            .keks = (const uint8_t(*)[KFD_KEY_LEN])rnd,
            .nonce = nonce[i],
            .m = m,
        };
        rc = kms_device_with_mkek(kms, &p->dev[i], build_part, &b);
    }
    if (rc < 0)
        kf_buf_reset(m);
    return rc;
}

/* Draw fresh randomness for ms (the KEKs and nonces of n messages, one RNG
 * call: the RNG's lock and system calls once, not per message) into rnd, a
 * secure buffer. */
static int draw_randomness(size_t bytes, kf_buf *rnd)
{
    uint8_t *p;
    KF_GUARD(kf_buf_alloc(rnd, bytes, bytes, KF_BUF_SECRET));
    int rc = kf_buf_put_space(rnd, bytes, &p);
    if (rc == KF_OK)
        rc = kf_rng_bytes(p, bytes);
    if (rc < 0)
        kf_buf_free(rnd);
    return rc;
}

/* After the commit: draw the KEKs, build SM_A || SM_B into m, wipe. */
static int build_message(kf_kms *kms, struct pair_job *p, kf_buf *m)
{
    kf_buf rnd = {0};
    int rc = draw_randomness(message_randomness(p), &rnd);
    if (rc == KF_OK)
        rc = build_message_from(kms, p, rnd.data, m);
    kf_buf_free(&rnd); /* wipes the KEKs: nothing of them remains but M */
    return rc;
}

static int pair_policy(uint32_t count, uint32_t lifetime, uint32_t max_uses)
{
    KF_ENSURE(count >= 1 && count <= KF_PAIR_MAX_KEKS, KF_ERR_PAIR_POLICY);
    KF_ENSURE(lifetime >= 1 && lifetime <= KF_PAIR_MAX_LIFETIME, KF_ERR_PAIR_POLICY);
    KF_ENSURE(max_uses >= 1 && max_uses <= KF_PAIR_MAX_MAX_USES, KF_ERR_PAIR_POLICY);
    return KF_OK;
}

int kms_pair_precheck(const char *id_a, const char *id_b, uint32_t count, uint32_t lifetime_s,
                      uint32_t max_uses)
{
    KF_GUARD(kfd_id_valid(id_a));
    KF_GUARD(kfd_id_valid(id_b));
    KF_ENSURE(strcmp(id_a, id_b) != 0, KF_ERR_PAIR_SAME);
    KF_GUARD(pair_policy(count, lifetime_s ? lifetime_s : KF_PAIR_DEFAULT_LIFETIME,
                         max_uses ? max_uses : KF_PAIR_DEFAULT_MAX_USES));
    /* Before any counter moves for a message that cannot be made. */
    KF_ENSURE(!kf_rng_failed(), KF_ERR_RNG_HEALTH);
    return KF_OK;
}

static void pair_job_init(struct pair_job *p, const char *actor, const char *id_a, const char *id_b,
                          uint32_t count, uint32_t lifetime_s, uint32_t max_uses)
{
    *p = (struct pair_job){
        .job = {.check = pair_check,
                .run = pair_run,
                .refused = pair_refused,
                .keks = count,
                .counters = true},
        .actor = actor,
        .id_a = id_a,
        .id_b = id_b,
        .count = count,
        .lifetime = lifetime_s ? lifetime_s : KF_PAIR_DEFAULT_LIFETIME,
        .max_uses = max_uses ? max_uses : KF_PAIR_DEFAULT_MAX_USES,
    };
}

/* After the commit: M for a job that succeeded (from rnd, or a draw of its
 * own when rnd is NULL), or its audited failure. */
static int pair_answer(kf_kms *kms, struct pair_job *p, const uint8_t *rnd, kf_buf *m)
{
    int rc = rnd ? build_message_from(kms, p, rnd, m) : build_message(kms, p, m);
    if (rc < 0) {
        pthread_mutex_lock(&kms->lock);
        pair_audit_refusal(kms, p, rc, "committed, but the message could not be built");
        pthread_mutex_unlock(&kms->lock);
    }
    return rc;
}

int kf_kms_pair_issue(kf_kms *kms, const char *actor, const char *id_a, const char *id_b,
                      uint32_t count, uint32_t lifetime_s, uint32_t max_uses, kf_buf *m)
{
    KF_ENSURE(kms && actor && m, KF_ERR_ARG);
    struct pair_job p;
    pair_job_init(&p, actor, id_a, id_b, count, lifetime_s, max_uses);
    int rc = kms_pair_precheck(id_a, id_b, count, lifetime_s, max_uses);
    if (rc < 0) {
        pthread_mutex_lock(&kms->lock);
        p.job.rc = rc;
        pair_refused(kms, &p.job);
        pthread_mutex_unlock(&kms->lock);
        return rc;
    }
    device_batch_submit(kms, &p.job);
    rc = p.job.rc;
    if (rc == KF_OK)
        rc = pair_answer(kms, &p, NULL, m);
    return rc;
}

int kms_pair_issue_items(kf_kms *kms, const char *actor, struct kms_pair_item *items, size_t n)
{
    KF_ENSURE(kms && actor && items && n >= 1 && n <= KMS_DEVICE_ITEMS_MAX, KF_ERR_ARG);
    struct pair_job *jobs = calloc(n, sizeof(*jobs));
    KF_ENSURE(jobs, KF_ERR_NOMEM);
    for (size_t i = 0; i < n; i++) {
        struct kms_pair_item *it = &items[i];
        struct pair_job *p = &jobs[i];
        pair_job_init(p, actor, it->id_a, it->id_b, it->count, it->lifetime, it->max_uses);
        p->job.chained = i > 0 && it->chained;
        p->job.next = i + 1 < n ? &jobs[i + 1].job : NULL;
        int rc = it->m
                     ? kms_pair_precheck(it->id_a, it->id_b, it->count, it->lifetime, it->max_uses)
                     : KF_ERR_ARG;
        if (rc < 0) {
            p->job.decided = true; /* audited by the batch, in order with the others */
            p->job.rc = rc;
        }
    }
    device_batch_submit(kms, &jobs[0].job);
    /* Every commit is durable now: draw the KEKs and nonces of every M at
     * once (secure memory, wiped below), then build each M, in order. An item
     * after one whose M could not be built, chained to it, is not answered (it
     * stays committed: its counters moved, which only ever costs a counter
     * value). */
    size_t bytes = 0, at = 0;
    for (size_t i = 0; i < n; i++)
        if (jobs[i].job.ran && jobs[i].job.rc == KF_OK)
            bytes += message_randomness(&jobs[i]);
    kf_buf rnd = {0};
    int drc = bytes ? draw_randomness(bytes, &rnd) : KF_OK;
    for (size_t i = 0; i < n; i++) {
        struct pair_job *p = &jobs[i];
        struct dev_job *prev = i ? &jobs[i - 1].job : NULL;
        size_t off = at; /* its slice, drawn for it above */
        if (p->job.ran && p->job.rc == KF_OK)
            at += message_randomness(p);
        if (p->job.ran && p->job.rc == KF_OK && !chain_holds(prev, &p->job)) {
            p->job.ran = false;
            p->job.rc = prev->rc; /* the failure that stopped the message, passed on */
            pthread_mutex_lock(&kms->lock);
            pair_audit_refusal(kms, p, p->job.rc,
                               "committed, but not answered: an earlier item of its message "
                               "failed");
            pthread_mutex_unlock(&kms->lock);
        } else if (p->job.ran && p->job.rc == KF_OK) {
            if (drc == KF_OK) {
                p->job.rc = pair_answer(kms, p, rnd.data + off, items[i].m);
            } else {
                p->job.rc = drc;
                pthread_mutex_lock(&kms->lock);
                pair_audit_refusal(kms, p, drc, "committed, but the message could not be built");
                pthread_mutex_unlock(&kms->lock);
            }
        }
        items[i].ran = p->job.ran;
        items[i].rc = p->job.ran ? p->job.rc : KF_OK;
    }
    kf_buf_free(&rnd);                /* wipes the KEKs: nothing of them remains but the Ms */
    kf_wipe(jobs, n * sizeof(*jobs)); /* counters and IDs only, but no need to leave them */
    free(jobs);
    return KF_OK;
}

/* ---- Acknowledgements ---- */

struct ack_job {
    struct dev_job job; /* first */
    const char *actor;
    struct kfd_ack ack;
    char domain[KF_DOMAIN_NAME_MAX + 1];
    struct kf_pair_ack_result res;
};

static const char *ack_status_name(uint32_t s)
{
    static const char *const names[] = {"-",         "accepted",     "stale",
                                        "integrity", "wrong device", "malformed",
                                        "expired",   "storage",      "partner"};
    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

/* Record the ack against its KEKs: issued to this device, in this part, once. */
static int ack_record(kf_kms *kms, struct ack_job *q)
{
    struct kf_pair_kek k;
    const struct kfd_ack *a = &q->ack;
    int rc = kf_store_pair_kek_get(kms->store, a->kek_id, &k);
    KF_ENSURE(rc != KF_ERR_NOT_FOUND, KF_ERR_ACK_UNKNOWN);
    KF_GUARD(rc);
    /* The ack names the first KEK of the part it answers. */
    KF_ENSURE(k.kek_index == 0, KF_ERR_ACK_UNKNOWN);
    int role = strcmp(k.id_a, a->device) == 0 ? 1 : strcmp(k.id_b, a->device) == 0 ? 2 : 0;
    KF_ENSURE(role != 0, KF_ERR_ACK_UNKNOWN);
    uint64_t sent = role == 1 ? k.counter_a : k.counter_b;
    /* "Accepted" is only true of the part we sent, with the counter we sent. */
    KF_ENSURE(a->status != KFD_ACK_ACCEPTED || a->part_counter == sent, KF_ERR_ACK_UNKNOWN);
    KF_ENSURE((role == 1 ? k.ack_a_status : k.ack_b_status) == 0, KF_ERR_ACK_REPLAY);
    return kf_store_pair_kek_ack(kms->store, a->kek_id, a->device, role, a->status, now_seconds());
}

static int ack_run(kf_kms *kms, struct dev_job *j, struct dev_tx *tx)
{
    (void)tx;
    struct ack_job *q = (struct ack_job *)j;
    const struct kfd_ack *a = &q->ack;
    struct kf_device dev;
    KF_GUARD(kf_store_device_get(kms->store, a->device, &dev));
    if (a->kek_id != 0)
        KF_GUARD(ack_record(kms, q));
    char detail[256];
    snprintf(detail, sizeof(detail),
             "kek %llu status %s part counter %llu device counter %llu server counter %llu",
             (unsigned long long)a->kek_id, ack_status_name(a->status),
             (unsigned long long)a->part_counter, (unsigned long long)a->device_counter,
             (unsigned long long)dev.counter);
    KF_GUARD(kms_audit(kms, q->actor, "PairAck", q->domain, a->device, KF_OK, detail));
    q->res.counter = dev.counter;
    /* Resynchronisation: a device ahead of the server (restored from a backup)
     * pulls C_X forward to its own counter; C_X never goes back. */
    if (a->device_counter > dev.counter) {
        KF_ENSURE(a->device_counter < (uint64_t)INT64_MAX, KF_ERR_DEVICE_COUNTER);
        KF_GUARD(kf_store_device_set_counter(kms->store, a->device, a->device_counter));
        snprintf(detail, sizeof(detail), "counter %llu -> %llu (the device's counter, kek %llu)",
                 (unsigned long long)dev.counter, (unsigned long long)a->device_counter,
                 (unsigned long long)a->kek_id);
        KF_GUARD(kms_audit(kms, q->actor, "PairResync", q->domain, a->device, KF_OK, detail));
        q->res.counter = a->device_counter;
        q->res.resynced = true;
    }
    return KF_OK;
}

static void ack_audit_refusal(kf_kms *kms, const char *actor, const char *domain,
                              const struct kfd_ack *a, int rc)
{
    char detail[128] = "";
    if (a && a->device[0])
        snprintf(detail, sizeof(detail), "kek %llu status %s", (unsigned long long)a->kek_id,
                 ack_status_name(a->status));
    kms_audit_refusal(kms, actor, "PairAck", domain ? domain : "",
                      a ? kms_device_shown_id(a->device) : "", rc, detail);
}

static void ack_refused(kf_kms *kms, struct dev_job *j)
{
    struct ack_job *q = (struct ack_job *)j;
    ack_audit_refusal(kms, q->actor, q->domain, &q->ack, j->rc);
}

static int ack_mac_check(void *ctx, const uint8_t *mkek)
{
    const struct ack_job *q = ctx;
    return kfd_ack_verify(&q->ack, mkek) == KF_OK ? KF_OK : KF_ERR_ACK_MAC;
}

/* Check the ack's MAC under the device's MKEK, on a read connection. */
static int ack_verify(kf_kms *kms, struct ack_job *q)
{
    struct kms_device_view v;
    struct kf_object obj = {0};
    struct kms_read r;
    KF_ENSURE(!kf_secmod_sealed(kms->secmod), KF_ERR_SEALED);
    /* The device as its last pair request saw it, if no object changed since. */
    int rc = kms_device_view_cached(kms, q->ack.device, &v);
    if (rc == KF_OK) {
        memcpy(q->domain, v.domain, sizeof(q->domain));
        rc = device_usable(&v, KF_USE_MAC_VERIFY);
    } else {
        kms_read_begin(kms, &r);
        rc = kms_device_identity(kms, r.st, q->ack.device, &v);
        if (rc == KF_OK)
            rc = kf_store_object_get(r.st, v.domain_id, v.mkek_key_id, &obj);
        kms_read_end(kms, &r);
        if (rc == KF_OK) {
            memcpy(q->domain, v.domain, sizeof(q->domain));
            rc = kms_mkek_usable(&obj, KF_USE_MAC_VERIFY);
            v.version = obj.version;
            v.facts_valid = true; /* for the key's version only */
        }
    }
    if (rc == KF_OK)
        rc = kms_device_with_mkek(kms, &v, ack_mac_check, q);
    kf_object_clear(&obj);
    return rc;
}

/* Decode and check the ack's MAC, before the transaction; memset on malformed. */
static int ack_prepare(kf_kms *kms, struct ack_job *q, const uint8_t *ack, size_t len)
{
    int rc = ack && len ? kfd_ack_decode(ack, len, &q->ack) : KF_ERR_PAIR_MALFORMED;
    if (rc < 0) {
        memset(&q->ack, 0, sizeof(q->ack));
        return KF_ERR_PAIR_MALFORMED;
    }
    return ack_verify(kms, q);
}

static void ack_result(const struct ack_job *q, struct kf_pair_ack_result *out)
{
    *out = q->res;
    out->kek_id = q->ack.kek_id;
    out->status = q->ack.status;
    memcpy(out->device, q->ack.device, sizeof(out->device));
}

int kf_kms_pair_ack(kf_kms *kms, const char *actor, const uint8_t *ack, size_t len,
                    struct kf_pair_ack_result *out)
{
    KF_ENSURE(kms && actor, KF_ERR_ARG);
    struct ack_job q = {.job = {.run = ack_run, .refused = ack_refused}, .actor = actor};
    int rc = ack_prepare(kms, &q, ack, len);
    if (rc < 0) {
        pthread_mutex_lock(&kms->lock);
        ack_audit_refusal(kms, actor, q.domain, &q.ack, rc);
        pthread_mutex_unlock(&kms->lock);
        return rc;
    }
    device_batch_submit(kms, &q.job);
    rc = q.job.rc;
    if (rc == KF_OK && out)
        ack_result(&q, out);
    return rc;
}

int kms_pair_ack_items(kf_kms *kms, const char *actor, struct kms_ack_item *items, size_t n)
{
    KF_ENSURE(kms && actor && items && n >= 1 && n <= 2 * KMS_DEVICE_ITEMS_MAX, KF_ERR_ARG);
    struct ack_job *jobs = calloc(n, sizeof(*jobs));
    KF_ENSURE(jobs, KF_ERR_NOMEM);
    for (size_t i = 0; i < n; i++) {
        struct ack_job *q = &jobs[i];
        *q = (struct ack_job){.job = {.run = ack_run, .refused = ack_refused}, .actor = actor};
        q->job.chained = i > 0 && items[i].chained;
        q->job.next = i + 1 < n ? &jobs[i + 1].job : NULL;
        /* The MAC is checked outside the transaction, as for a lone ack. */
        int rc = ack_prepare(kms, q, items[i].ack, items[i].len);
        if (rc < 0) {
            q->job.decided = true; /* audited by the batch, in order with the others */
            q->job.rc = rc;
        }
    }
    device_batch_submit(kms, &jobs[0].job);
    for (size_t i = 0; i < n; i++) {
        items[i].ran = jobs[i].job.ran;
        items[i].rc = jobs[i].job.ran ? jobs[i].job.rc : KF_OK;
        if (items[i].ran && items[i].rc == KF_OK)
            ack_result(&jobs[i], &items[i].res);
    }
    free(jobs);
    return KF_OK;
}
