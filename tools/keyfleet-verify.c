/*
 * keyfleet-verify: the remote verifier, the seed's Tin (EP 0 735 720;
 * docs/manufacturing.md "Tokens").
 *
 *   init    a new Tin state directory (role ID, signing and confidentiality keys)
 *   enroll  enrol the Tin into a domain (KMIP KeyfleetMfgRoleEnroll, as an admin)
 *   fetch   the domain's token keys for a range of periods, sealed to this Tin
 *           (KeyfleetTokenKeyExport), checked under the domain's Brass certificate
 *   check   verify printed pieces offline against the fetched keys, with a
 *           durable duplicate set of its own
 *   send    verify printed pieces at keyfleetd (KeyfleetTokenVerify)
 *   bench   the offline verifier's rate next to raw AES-256-CMAC
 *
 * State directory (include/keyfleet/station.h) plus, per domain,
 *   tokens/<domain>  the TokenKeys record as fetched (signed by Brass; the
 *                    token keys in it are sealed to this Tin)
 *   seen/<domain>    pieces verified good here: 20-byte records,
 *                    msn (16, space padded) || [piece count]_32, appended and
 *                    fsync'ed before their verdicts are printed
 * Token keys are opened once at load into secure memory, and wiped at exit.
 *
 * Exit codes: 0 done (check, send: every piece good), 1 a piece was not good
 * or keyfleetd refused, 2 usage, 3 cannot reach keyfleetd, 4 local state or
 * file error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nettle/cmac.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms_mfg.h"
#include "keyfleet/meter.h"
#include "keyfleet/mfg.h"
#include "keyfleet/secmem.h"
#include "keyfleet/station.h"
#include "keyfleet/store.h"
#include "keyfleet/tls.h"
#include "keyfleet/ttlv.h"

#define EXIT_NOT_GOOD 1
#define EXIT_USAGE 2
#define EXIT_CONNECT 3
#define EXIT_LOCAL 4

#define SEND_BATCH 10000u      /* pieces per KeyfleetTokenVerify */
#define CHECK_CHUNK 10000u     /* lines verified, made durable, then printed */
#define TIN_PERIODS 24u        /* periods one TokenKeys record may hold */
#define TIN_PREPARED_MAX 8192u /* token keys kept with their AES schedule ready */
#define SEEN_RECORD_LEN 20u

static const char *const usage_text =
    "Usage: keyfleet-verify COMMAND [OPTIONS]\n"
    "The remote token verifier (Tin) of keyfleet's manufacturing subsystem\n"
    "(docs/manufacturing.md, \"Tokens\").\n\n"
    "Commands:\n"
    "  init   --state DIR --role-id T00000001 [--key-file F]\n"
    "  enroll --state DIR --domain D  + TLS options (an admin identity)\n"
    "  fetch  --state DIR --domain D --periods YYYYMM-YYYYMM  + TLS options\n"
    "  check  --state DIR --domain D [--postal] [--allow-bad] FILE|-\n"
    "  send   --domain D [--postal] [--allow-bad] FILE|-  + TLS options\n"
    "  bench  --state DIR --domain D [--pieces N]\n\n"
    "TLS options: --server HOST:PORT --ca FILE --cert FILE --key FILE (as keyfleet's remote\n"
    "mode). --key-file F: the station key file (default DIR/station.key).\n"
    "Each command has --help. Exit codes: 0 done (check/send: every piece good), 1 a piece\n"
    "was not good or keyfleetd refused, 2 usage, 3 cannot reach keyfleetd, 4 local error.\n";

static const char *const init_help =
    "Usage: keyfleet-verify init --state DIR --role-id T00000001 [--key-file F]\n"
    "Make a new Tin: the state directory DIR (0700) with its role ID and its Ed25519\n"
    "signing and X25519 confidentiality keys, wrapped under the station key file F\n"
    "(default DIR/station.key, made with 32 random bytes, mode 0600, if missing).\n";

static const char *const enroll_help =
    "Usage: keyfleet-verify enroll --state DIR --domain D [--key-file F]\n"
    "                              --server HOST:PORT --ca FILE --cert FILE --key FILE\n"
    "Enrol this Tin into domain D (KMIP KeyfleetMfgRoleEnroll with its public keys): the\n"
    "client certificate must be an admin's. Keeps the answer (this Tin's certificate and\n"
    "the domain's M, O, B certificates) in DIR/certs/D after checking M's signatures.\n";

static const char *const fetch_help =
    "Usage: keyfleet-verify fetch --state DIR --domain D --periods YYYYMM-YYYYMM\n"
    "                             [--key-file F] --server HOST:PORT --ca FILE --cert F --key F\n"
    "Fetch the token keys of every Active device of domain D for the periods (at most 24\n"
    "months; one month: --periods 202611-202611), sealed to this Tin and signed by the\n"
    "domain's Brass (KeyfleetTokenKeyExport; the client certificate needs the verifier\n"
    "role). The signature is checked under Brass's certificate from enrolment, then the\n"
    "record is kept as DIR/tokens/D (replacing an earlier fetch).\n";

static const char *const check_help =
    "Usage: keyfleet-verify check --state DIR --domain D [--postal] [--allow-bad]\n"
    "                             [--key-file F] FILE|-\n"
    "Verify printed pieces offline, one per line of FILE (or standard input):\n"
    "  KF1 <msn> <YYYYMMDD> <value> <count> <postal code> <vendor token> <postal token>\n"
    "with D's fetched token keys: the vendor token, or with --postal the postal token.\n"
    "Prints \"<line no> good\" or \"<line no> bad|duplicate|refused <reason>\" per line and\n"
    "\"good=N bad=N duplicate=N refused=N\". A piece verified good is recorded in\n"
    "DIR/seen/D (durably, before it is printed); presented again it is a duplicate.\n"
    "refused: malformed line or check symbol, unknown device, period not fetched, or a\n"
    "date before the device's registration. Empty lines are skipped.\n"
    "Exit 0 if every piece is good (with --allow-bad: whatever the verdicts), else 1.\n";

static const char *const send_help =
    "Usage: keyfleet-verify send --domain D [--postal] [--allow-bad] FILE|-\n"
    "                            --server HOST:PORT --ca FILE --cert FILE --key FILE\n"
    "Verify printed pieces at keyfleetd (KeyfleetTokenVerify, batches of 10,000; the client\n"
    "certificate needs the verifier or use role in D). Input and output as for check;\n"
    "duplicates are keyfleetd's (every piece ever verified good there). A line that does\n"
    "not parse is refused here and not sent.\n";

static const char *const bench_help =
    "Usage: keyfleet-verify bench --state DIR --domain D [--pieces N] [--key-file F]\n"
    "Make N synthetic pieces (default 1,000,000) over the devices of D's fetched token keys,\n"
    "then time (a) verifying them through check's code path (device and period lookup,\n"
    "registration date, token, duplicate set; in memory, nothing is recorded) and (b) raw\n"
    "nettle AES-256-CMAC over the same 40-byte canonical messages with every key schedule\n"
    "precomputed, in the same run; best of three rounds each. Prints both rates and their\n"
    "ratio, and (c) check's rate from printed lines (parsing and canonical encoding too;\n"
    "at most 200,000 lines).\n";

/* ---- options ---- */

struct opt {
    const char *name;
    const char **value; /* option with a value */
    bool *flag;         /* option without one */
};

/* Parse argv against opts; at most one positional argument. 1 = help printed. */
static int parse_opts(const char *cmd, int argc, char **argv, const struct opt *opts,
                      const char *help, const char **positional)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(help, stdout);
            return 1;
        }
        const struct opt *o = opts;
        while (o->name && strcmp(o->name, a) != 0)
            o++;
        if (o->name && o->flag) {
            *o->flag = true;
        } else if (o->name) {
            if (i + 1 >= argc) {
                fprintf(stderr, "keyfleet-verify %s: %s needs a value\n", cmd, a);
                return -1;
            }
            *o->value = argv[++i];
        } else if (positional && !*positional && (a[0] != '-' || strcmp(a, "-") == 0)) {
            *positional = a;
        } else {
            fprintf(stderr, "keyfleet-verify %s: unknown argument '%.100s' (see --help)\n", cmd, a);
            return -1;
        }
    }
    return 0;
}

static int usage_error(const char *cmd, const char *why)
{
    fprintf(stderr, "keyfleet-verify %s: %s\n(see keyfleet-verify %s --help)\n", cmd, why, cmd);
    return EXIT_USAGE;
}

static int local_error(const char *cmd, const char *what, int rc)
{
    fprintf(stderr, "keyfleet-verify %s: %s: %s (%s)\n", cmd, what, kf_strerror(rc),
            kf_errname(rc));
    return EXIT_LOCAL;
}

/* ---- talking to keyfleetd ---- */

struct remote {
    const char *cmd;
    const char *server, *ca, *cert, *key;
    kf_tls_client *tls;
    kf_arena *arena; /* the current request and answer */
};

static int remote_check_opts(const struct remote *r)
{
    if (!r->server || !r->ca || !r->cert || !r->key)
        return usage_error(r->cmd, "--server, --ca, --cert and --key are required");
    return 0;
}

static int remote_connect(struct remote *r)
{
    char host[256];
    const char *colon = strrchr(r->server, ':');
    if (!colon || colon == r->server || (size_t)(colon - r->server) >= sizeof(host))
        return usage_error(r->cmd, "--server wants HOST:PORT");
    memcpy(host, r->server, (size_t)(colon - r->server));
    host[colon - r->server] = '\0';
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') { /* [v6]:port */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port <= 0 || port > 65535)
        return usage_error(r->cmd, "bad port in --server");
    int rc = kf_tls_client_connect(host, (uint16_t)port, r->ca, r->cert, r->key, &r->tls);
    if (rc < 0) {
        fprintf(stderr, "keyfleet-verify %s: cannot reach %s over TLS: %s\n", r->cmd, r->server,
                kf_strerror(rc));
        return EXIT_CONNECT;
    }
    if (kf_arena_new(&r->arena, 0) < 0) {
        kf_tls_client_close(r->tls);
        r->tls = NULL;
        return local_error(r->cmd, "memory", KF_ERR_NOMEM);
    }
    return 0;
}

static void remote_close(struct remote *r)
{
    kf_tls_client_close(r->tls);
    kf_arena_free(r->arena);
    r->tls = NULL;
    r->arena = NULL;
}

/* A Request Message with one batch item of op; *payload to fill. */
static kf_ttlv *new_request(struct remote *r, uint32_t op, kf_ttlv **payload)
{
    kf_arena_reset(r->arena);
    return kf_ttlv_request(r->arena, 2, 1, op, payload);
}

/* Send msg, read the answer: 0 and *out = its Response Payload, or an exit code. */
static int remote_call(struct remote *r, const kf_ttlv *msg, const kf_ttlv **out)
{
    kf_buf req = {0}, resp = {0};
    int rc, code = EXIT_NOT_GOOD;
    if (!msg || kf_buf_alloc(&req, 4096, KF_TLS_MESSAGE_MAX, 0) < 0 ||
        kf_buf_alloc(&resp, 4096, KF_TLS_MESSAGE_MAX, 0) < 0 || kf_ttlv_encode(msg, &req) < 0) {
        fprintf(stderr, "keyfleet-verify %s: cannot build the request (too large?)\n", r->cmd);
        code = EXIT_LOCAL;
        goto out;
    }
    if ((rc = kf_tls_client_call(r->tls, req.data, req.len, &resp)) < 0) {
        fprintf(stderr, "keyfleet-verify %s: no answer from %s: %s\n", r->cmd, r->server,
                kf_strerror(rc));
        code = EXIT_CONNECT;
        goto out;
    }
    kf_ttlv *m;
    struct kf_ttlv_limits lim = {.max_total = KF_TLS_MESSAGE_MAX};
    if ((rc = kf_ttlv_decode(resp.data, resp.len, &lim, r->arena, &m)) < 0) {
        fprintf(stderr, "keyfleet-verify %s: malformed answer: %s\n", r->cmd, kf_strerror(rc));
        goto out;
    }
    const kf_ttlv *bi = kf_ttlv_find(m, KMIP_TAG_BATCH_ITEM);
    uint32_t status = KMIP_RESULT_STATUS_OPERATION_FAILED;
    if (kf_ttlv_get_enum(kf_ttlv_find(bi, KMIP_TAG_RESULT_STATUS), &status) < 0) {
        fprintf(stderr, "keyfleet-verify %s: the answer has no result status\n", r->cmd);
        goto out;
    }
    if (status != KMIP_RESULT_STATUS_SUCCESS) {
        const char *text = NULL;
        size_t len = 0;
        if (kf_ttlv_get_text(kf_ttlv_find(bi, KMIP_TAG_RESULT_MESSAGE), &text, &len) < 0)
            text = "", len = 0;
        fprintf(stderr, "keyfleet-verify %s: keyfleetd refused: %.*s\n", r->cmd, (int)len, text);
        goto out;
    }
    *out = kf_ttlv_find(bi, KMIP_TAG_RESPONSE_PAYLOAD);
    code = *out ? 0 : EXIT_NOT_GOOD;
    if (!*out)
        fprintf(stderr, "keyfleet-verify %s: the answer has no payload\n", r->cmd);
out:
    kf_buf_free(&req);
    kf_buf_free(&resp);
    return code;
}

/* Every KeyfleetSignedRecord of payload, encoded back to back into out. */
static int payload_records(const kf_ttlv *payload, kf_buf *out, size_t *count)
{
    *count = 0;
    for (const kf_ttlv *n = kf_ttlv_find(payload, KMIP_TAG_KEYFLEET_SIGNED_RECORD); n;
         n = kf_ttlv_find_next(n, KMIP_TAG_KEYFLEET_SIGNED_RECORD)) {
        KF_GUARD(kf_ttlv_encode(n, out));
        (*count)++;
    }
    return *count ? KF_OK : KF_ERR_MFG_FRAMING;
}

/* ---- the Tin's state ---- */

static int open_station(const char *cmd, const char *dir, const char *key_file, kf_station **st)
{
    int rc = kf_station_open(dir, key_file, st);
    if (rc < 0)
        return local_error(cmd, dir, rc);
    enum kf_mfg_role_type type;
    if (!kf_mfg_role_id_parse(kf_station_role_id(*st), &type) || type != KF_MFG_ROLE_TIN) {
        fprintf(stderr, "keyfleet-verify %s: %s is not a Tin's state (role %s)\n", cmd, dir,
                kf_station_role_id(*st));
        kf_station_close(*st);
        *st = NULL;
        return EXIT_LOCAL;
    }
    return 0;
}

/* A domain name that is also a safe file name. */
static bool domain_ok(const char *domain)
{
    return domain && kf_domain_name_valid(domain) && strcmp(domain, ".") != 0 &&
           strcmp(domain, "..") != 0;
}

/* DIR/sub/domain; sub is made (0700) when mkdir_sub. */
static int state_path(const char *dir, const char *sub, const char *domain, bool mkdir_sub,
                      char *out, size_t cap)
{
    KF_ENSURE(domain_ok(domain), KF_ERR_NAME);
    int n = snprintf(out, cap, "%s/%s", dir, sub);
    KF_ENSURE(n > 0 && (size_t)n < cap, KF_ERR_LIMIT);
    if (mkdir_sub && mkdir(out, 0700) != 0 && errno != EEXIST)
        return KF_ERR_IO;
    n = snprintf(out, cap, "%s/%s/%s", dir, sub, domain);
    KF_ENSURE(n > 0 && (size_t)n < cap, KF_ERR_LIMIT);
    return KF_OK;
}

/* ---- the token keys of one domain, open in secure memory ---- */

struct tin_period {
    uint32_t period; /* YYYYMM */
    uint32_t slot;   /* its TK: t->tk + 32 * slot; prepared too if slot < t->nprep */
};

/* An MSN (at most 16 characters) as two words, zero padded: hashing and
 * comparing it costs a few instructions (every piece does it). */
struct msn_key {
    uint64_t w[2];
};

/* Piece counts verified good, one bit each, in chunks of SEEN_CHUNK_BITS
 * consecutive counts: a device prints its counts in order, so a device's
 * few chunks stay in cache and a piece costs one bit, not a hash entry. */
#define SEEN_CHUNK_BITS 4096u
struct seen_chunk {
    uint32_t base; /* count / SEEN_CHUNK_BITS */
    uint8_t bits[SEEN_CHUNK_BITS / 8];
};

struct tin_dev {
    char msn[KFD_METER_MSN_MAX + 1];
    struct msn_key key; /* msn, for the index */
    uint64_t key_id;
    uint32_t reg_date; /* YYYYMMDD (UTC) of the registration: earlier pieces are refused */
    unsigned nperiods;
    struct tin_period p[TIN_PERIODS];
    struct seen_chunk **chunks; /* sorted by base */
    uint32_t nchunks, chunk_cap, last; /* last: the chunk used most recently */
};

struct tin {
    const char *cmd;
    char domain[KF_MFG_DOMAIN_MAX + 1];
    char tin_id[KF_MFG_ROLE_ID_LEN + 1];
    uint32_t first, last;
    struct tin_dev *dev;
    size_t ndev;
    uint32_t *index; /* open addressing by MSN: device index + 1, 0 = empty */
    size_t index_cap;
    uint8_t *tk; /* secure memory: ntk token keys */
    size_t ntk;
    /* The first nprep token keys with their AES-256 schedule and CMAC subkeys
     * ready (secure memory): token = the same CMAC kfd_token_compute makes,
     * without setting the key up per piece. Checked against kfd_token_compute
     * at load. The rest take kfd_token_compute. */
    struct cmac_aes256_ctx *prep;
    size_t nprep;
    int seen_fd; /* seen/<domain>, appended; -1: in memory only (bench) */
    bool seen_new;
    uint8_t *pending; /* records verified good since the last flush */
    size_t npending, pending_cap;
};

static struct msn_key msn_key_of(const char *msn)
{
    struct msn_key k = {{0, 0}};
    memcpy(k.w, msn, strnlen(msn, KFD_METER_MSN_MAX));
    return k;
}

static uint64_t msn_hash(struct msn_key k)
{
    uint64_t h = (k.w[0] ^ (k.w[1] * 0x9e3779b97f4a7c15ull)) * 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 31);
}

static struct tin_dev *tin_find(const struct tin *t, const char *msn)
{
    if (!t->index_cap)
        return NULL;
    struct msn_key k = msn_key_of(msn);
    size_t j = (size_t)msn_hash(k) & (t->index_cap - 1);
    for (; t->index[j]; j = (j + 1) & (t->index_cap - 1)) {
        struct tin_dev *d = &t->dev[t->index[j] - 1];
        if (d->key.w[0] == k.w[0] && d->key.w[1] == k.w[1])
            return d;
    }
    return NULL;
}

static void tin_free(struct tin *t)
{
    kf_secmem_free(t->tk);
    kf_secmem_free(t->prep);
    for (size_t i = 0; t->dev && i < t->ndev; i++) {
        for (uint32_t c = 0; c < t->dev[i].nchunks; c++)
            free(t->dev[i].chunks[c]);
        free(t->dev[i].chunks);
    }
    free(t->dev);
    free(t->index);
    free(t->pending);
    if (t->seen_fd >= 0)
        close(t->seen_fd);
    memset(t, 0, sizeof(*t));
    t->seen_fd = -1;
}

static bool period_valid(uint32_t p)
{
    uint32_t y = p / 100, m = p % 100;
    return y >= 2000 && y <= 2099 && m >= 1 && m <= 12;
}

static unsigned period_count(uint32_t first, uint32_t last)
{
    if (!period_valid(first) || !period_valid(last) || first > last)
        return 0;
    return (last / 100 - first / 100) * 12 + last % 100 - first % 100 + 1;
}

static uint32_t day_of(int64_t when)
{
    if (when <= 0)
        return 0;
    time_t tt = (time_t)when;
    struct tm tm;
    if (!gmtime_r(&tt, &tm))
        return 0;
    return (uint32_t)(tm.tm_year + 1900) * 10000u + (uint32_t)(tm.tm_mon + 1) * 100u +
           (uint32_t)tm.tm_mday;
}

/*
 * A TokenKeys record for this Tin: signed by the domain's Brass (its ID and
 * key from the enrolment certificates), for this domain and this Tin, a
 * valid range of at most 24 periods and a whole number of entries.
 */
static int tokens_record_check(const kf_station *st, const char *domain, const uint8_t *msg,
                               size_t len, struct kf_mfg_record *rec)
{
    char brass_id[KF_MFG_ROLE_ID_LEN + 1];
    uint8_t brass_pub[32];
    struct kf_mfg_envelope env;
    size_t used;
    KF_GUARD(kf_station_domain_role(st, domain, KF_MFG_ROLE_BRASS, brass_id, brass_pub, NULL));
    KF_GUARD(kf_mfg_envelope_parse(msg, len, &env, &used));
    KF_ENSURE(used == len && strcmp(env.signer, brass_id) == 0, KF_ERR_MFG_FRAMING);
    KF_GUARD(kf_mfg_record_open(msg, len, brass_pub, KF_MFG_REC_TOKEN_KEYS, rec));
    KF_ENSURE(strcmp(rec->domain, domain) == 0, KF_ERR_MFG_PARAM);
    KF_ENSURE(strcmp(rec->role_id, kf_station_role_id(st)) == 0, KF_ERR_MFG_ROLE);
    unsigned n = period_count(rec->period_first, rec->period_last);
    KF_ENSURE(n >= 1 && n <= TIN_PERIODS, KF_ERR_MFG_PERIOD);
    KF_ENSURE(rec->table_len % KF_MFG_TOKEN_KEY_ENTRY_LEN == 0, KF_ERR_MFG_FRAMING);
    return KF_OK;
}

static int tin_index(struct tin *t)
{
    size_t cap = 16;
    while (cap < t->ndev * 2)
        cap *= 2;
    t->index = calloc(cap, sizeof(*t->index));
    KF_ENSURE(t->index != NULL, KF_ERR_NOMEM);
    t->index_cap = cap;
    for (size_t i = 0; i < t->ndev; i++) {
        size_t j = (size_t)msn_hash(t->dev[i].key) & (cap - 1);
        while (t->index[j])
            j = (j + 1) & (cap - 1);
        t->index[j] = (uint32_t)(i + 1);
    }
    return KF_OK;
}

/* The entry's device (new or earlier in the table, same key ID) gets the period. */
static int tin_add_entry(struct tin *t, const struct kf_mfg_token_key_entry *e, uint32_t slot)
{
    struct tin_dev *d = tin_find(t, e->msn);
    if (!d) {
        d = &t->dev[t->ndev++];
        memset(d, 0, sizeof(*d));
        snprintf(d->msn, sizeof(d->msn), "%s", e->msn);
        d->key = msn_key_of(d->msn);
        d->key_id = e->key_id;
        d->reg_date = day_of(e->registered_at);
        /* keep the index in step: rebuilt when it fills up */
        if (t->ndev * 2 > t->index_cap) {
            free(t->index);
            KF_GUARD(tin_index(t));
        } else {
            size_t j = (size_t)msn_hash(d->key) & (t->index_cap - 1);
            while (t->index[j])
                j = (j + 1) & (t->index_cap - 1);
            t->index[j] = (uint32_t)t->ndev;
        }
    }
    KF_ENSURE(d->key_id == e->key_id && d->nperiods < TIN_PERIODS, KF_ERR_MFG_FRAMING);
    for (unsigned i = 0; i < d->nperiods; i++)
        KF_ENSURE(d->p[i].period != e->period, KF_ERR_MFG_FRAMING);
    d->p[d->nperiods].period = e->period;
    d->p[d->nperiods++].slot = slot;
    return KF_OK;
}

/* The fast path must give what kfd_token_compute gives (one definition). */
static int tin_prepare(struct tin *t)
{
    t->nprep = t->ntk < TIN_PREPARED_MAX ? t->ntk : TIN_PREPARED_MAX;
    if (!t->nprep)
        return KF_OK;
    t->prep = kf_secmem_alloc(t->nprep * sizeof(*t->prep));
    if (!t->prep) {
        t->nprep = 0; /* no room: every piece takes kfd_token_compute */
        return KF_OK;
    }
    static const uint8_t probe[KFD_TXDATA_LEN] = "keyfleet-verify fast path self-check..";
    for (size_t i = 0; i < t->nprep; i++) {
        uint8_t a[KFD_TOKEN_LEN], b[16];
        cmac_aes256_set_key(&t->prep[i], t->tk + i * KFD_METER_KEY_LEN);
        KF_GUARD(kfd_token_compute(t->tk + i * KFD_METER_KEY_LEN, probe, a));
        cmac_aes256_update(&t->prep[i], sizeof(probe), probe);
        cmac_aes256_digest(&t->prep[i], sizeof(b), b);
        KF_ENSURE(memcmp(a, b, sizeof(a)) == 0, KF_ERR_INTERNAL);
    }
    return KF_OK;
}

/* Open tokens/<domain>: check it, open every token key into secure memory. */
static int tin_load(struct tin *t, const kf_station *st, const char *dir, const char *domain)
{
    char path[PATH_MAX];
    kf_buf file = {0};
    struct kf_mfg_record rec;
    KF_GUARD(state_path(dir, "tokens", domain, false, path, sizeof(path)));
    int rc = kf_station_read_file(path, KF_MFG_TOKEN_KEYS_MAX + 4096, 0, &file);
    if (rc == KF_ERR_NOT_FOUND)
        fprintf(stderr, "keyfleet-verify %s: no token keys of %s here: run keyfleet-verify "
                        "fetch first\n",
                t->cmd, domain);
    if (rc == KF_OK)
        rc = tokens_record_check(st, domain, file.data, file.len, &rec);
    size_t n = rc == KF_OK ? rec.table_len / KF_MFG_TOKEN_KEY_ENTRY_LEN : 0;
    if (rc == KF_OK) {
        snprintf(t->domain, sizeof(t->domain), "%s", domain);
        snprintf(t->tin_id, sizeof(t->tin_id), "%s", kf_station_role_id(st));
        t->first = rec.period_first;
        t->last = rec.period_last;
        t->dev = calloc(n ? n : 1, sizeof(*t->dev));
        t->tk = kf_secmem_alloc(n ? n * KFD_METER_KEY_LEN : 1);
        rc = !t->dev ? KF_ERR_NOMEM : !t->tk ? KF_ERR_SECMEM : tin_index(t);
    }
    for (size_t i = 0; i < n && rc == KF_OK; i++) {
        struct kf_mfg_token_key_entry e;
        char context[KF_MFG_DOMAIN_MAX + 16];
        rc = kf_mfg_token_key_entry_get(rec.table + i * KF_MFG_TOKEN_KEY_ENTRY_LEN, &e);
        if (rc == KF_OK && (e.period < t->first || e.period > t->last))
            rc = KF_ERR_MFG_PERIOD;
        snprintf(context, sizeof(context), "%s/%06u", domain, (unsigned)(e.period % 1000000u));
        if (rc == KF_OK)
            rc = kf_station_open_key(st, context, e.key_id, t->tin_id, e.sealed,
                                     t->tk + t->ntk * KFD_METER_KEY_LEN);
        if (rc == KF_OK)
            rc = tin_add_entry(t, &e, (uint32_t)t->ntk++);
    }
    if (rc == KF_OK)
        rc = tin_prepare(t);
    kf_buf_free(&file);
    return rc;
}

/* ---- the duplicate set ---- */

/* Marks the device's piece count; *fresh false if it was marked before. */
static int seen_add(struct tin_dev *d, uint32_t count, bool *fresh)
{
    uint32_t base = count / SEEN_CHUNK_BITS, bit = count % SEEN_CHUNK_BITS;
    if (!d->nchunks || d->chunks[d->last]->base != base) {
        uint32_t lo = 0, hi = d->nchunks; /* the first chunk with base >= this one */
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (d->chunks[mid]->base < base)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == d->nchunks || d->chunks[lo]->base != base) {
            if (d->nchunks == d->chunk_cap) {
                uint32_t cap = d->chunk_cap ? d->chunk_cap * 2 : 4;
                struct seen_chunk **c = realloc(d->chunks, cap * sizeof(*c));
                KF_ENSURE(c != NULL, KF_ERR_NOMEM);
                d->chunks = c;
                d->chunk_cap = cap;
            }
            struct seen_chunk *c = calloc(1, sizeof(*c));
            KF_ENSURE(c != NULL, KF_ERR_NOMEM);
            c->base = base;
            memmove(&d->chunks[lo + 1], &d->chunks[lo], (d->nchunks - lo) * sizeof(*d->chunks));
            d->chunks[lo] = c;
            d->nchunks++;
        }
        d->last = lo;
    }
    uint8_t *byte = &d->chunks[d->last]->bits[bit / 8], mask = (uint8_t)(1u << (bit % 8));
    *fresh = !(*byte & mask);
    *byte |= mask;
    return KF_OK;
}

static void seen_clear(struct tin *t)
{
    for (size_t i = 0; i < t->ndev; i++)
        for (uint32_t c = 0; c < t->dev[i].nchunks; c++)
            memset(t->dev[i].chunks[c]->bits, 0, sizeof(t->dev[i].chunks[c]->bits));
}

static void seen_record(const char *msn, uint32_t count, uint8_t out[SEEN_RECORD_LEN])
{
    memset(out, ' ', KFD_METER_MSN_MAX);
    memcpy(out, msn, strnlen(msn, KFD_METER_MSN_MAX));
    kf_buf w;
    kf_buf_fixed(&w, out + KFD_METER_MSN_MAX, 4);
    (void)!kf_buf_put_u32(&w, count);
}

/* seen/<domain>: every record of a device we hold keys for goes into the set.
 * A torn last record (a crash while appending) is cut off. */
static int seen_open(struct tin *t, const char *dir)
{
    char path[PATH_MAX];
    KF_GUARD(state_path(dir, "seen", t->domain, true, path, sizeof(path)));
    t->seen_new = access(path, F_OK) != 0;
    t->seen_fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (t->seen_fd < 0) {
        fprintf(stderr, "keyfleet-verify %s: cannot open %s: %s\n", t->cmd, path, strerror(errno));
        return KF_ERR_IO;
    }
    uint8_t buf[SEEN_RECORD_LEN * 1024];
    size_t have = 0, total = 0;
    for (;;) {
        ssize_t r = read(t->seen_fd, buf + have, sizeof(buf) - have);
        if (r < 0 && errno == EINTR)
            continue;
        KF_ENSURE(r >= 0, KF_ERR_IO);
        have += (size_t)r;
        size_t whole = have - have % SEEN_RECORD_LEN;
        for (size_t off = 0; off < whole; off += SEEN_RECORD_LEN) {
            char msn[KFD_METER_MSN_MAX + 1];
            size_t n = KFD_METER_MSN_MAX;
            memcpy(msn, buf + off, n);
            while (n && msn[n - 1] == ' ')
                n--;
            msn[n] = '\0';
            kf_buf rd;
            uint32_t count;
            kf_buf_reader(&rd, buf + off + KFD_METER_MSN_MAX, 4);
            KF_GUARD(kf_buf_get_u32(&rd, &count));
            struct tin_dev *d = tin_find(t, msn);
            bool fresh;
            if (d)
                KF_GUARD(seen_add(d, count, &fresh));
        }
        total += whole;
        memmove(buf, buf + whole, have - whole);
        have -= whole;
        if (r == 0)
            break;
    }
    if (have) {
        fprintf(stderr, "keyfleet-verify %s: %s ends in a torn record; cutting it off\n", t->cmd,
                path);
        KF_ENSURE(ftruncate(t->seen_fd, (off_t)total) == 0 && fsync(t->seen_fd) == 0, KF_ERR_IO);
    }
    return KF_OK;
}

/* Append the pending records and fsync, before any of their verdicts is shown. */
static int seen_flush(struct tin *t, const char *dir)
{
    if (t->seen_fd < 0 || !t->npending)
        return KF_OK;
    size_t len = t->npending * SEEN_RECORD_LEN;
    for (size_t off = 0; off < len;) {
        ssize_t w = write(t->seen_fd, t->pending + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        KF_ENSURE(w > 0, KF_ERR_IO);
        off += (size_t)w;
    }
    KF_ENSURE(fdatasync(t->seen_fd) == 0, KF_ERR_IO);
    if (t->seen_new) { /* the file's name too */
        char path[PATH_MAX];
        KF_GUARD(state_path(dir, "seen", t->domain, false, path, sizeof(path)));
        *strrchr(path, '/') = '\0';
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        KF_ENSURE(fd >= 0, KF_ERR_IO);
        int rc = fsync(fd) == 0 ? KF_OK : KF_ERR_IO;
        close(fd);
        KF_GUARD(rc);
        t->seen_new = false;
    }
    t->npending = 0;
    return KF_OK;
}

static int pending_add(struct tin *t, const char *msn, uint32_t count)
{
    if (t->seen_fd < 0)
        return KF_OK;
    if (t->npending == t->pending_cap) {
        size_t cap = t->pending_cap ? t->pending_cap * 2 : CHECK_CHUNK;
        uint8_t *p = realloc(t->pending, cap * SEEN_RECORD_LEN);
        KF_ENSURE(p != NULL, KF_ERR_NOMEM);
        t->pending = p;
        t->pending_cap = cap;
    }
    seen_record(msn, count, t->pending + t->npending++ * SEEN_RECORD_LEN);
    return KF_OK;
}

/* ---- one piece ---- */

static const char *const why_unknown = "unknown device (no token key fetched for it)";
static const char *const why_period = "period not held (fetch its token keys)";
static const char *const why_early = "dated before the device's registration";
static const char *const why_bad = "token does not match";
static const char *const why_dup = "this device's piece count was verified good before";

static void token_of(struct tin *t, uint32_t slot, const uint8_t canonical[KFD_TXDATA_LEN],
                     uint8_t token[KFD_TOKEN_LEN])
{
    if (slot < t->nprep) {
        uint8_t mac[16];
        cmac_aes256_update(&t->prep[slot], KFD_TXDATA_LEN, canonical); /* digest resets it */
        cmac_aes256_digest(&t->prep[slot], sizeof(mac), mac);
        memcpy(token, mac, KFD_TOKEN_LEN);
    } else if (kfd_token_compute(t->tk + (size_t)slot * KFD_METER_KEY_LEN, canonical, token) < 0) {
        memset(token, 0, KFD_TOKEN_LEN);
    }
}

/* One piece as check reads it: its fields (for the lookups), its canonical
 * data (what the token covers) and the token of the domain being checked. */
struct tin_piece {
    struct kfd_txdata tx;
    uint8_t canonical[KFD_TXDATA_LEN];
    uint8_t token[KFD_TOKEN_LEN];
};

/* A printed line into a piece: KF_ERR_TOKEN_TEXT (syntax, check symbols) or
 * KF_ERR_METER_FIELD (a field out of range). */
static int tin_read_piece(const char *line, bool postal, struct tin_piece *out)
{
    struct kfd_piece p;
    KF_GUARD(kfd_piece_parse(line, &p));
    KF_GUARD(kfd_txdata_encode(&p.tx, out->canonical));
    out->tx = p.tx;
    memcpy(out->token, postal ? p.postal_token : p.vendor_token, KFD_TOKEN_LEN);
    return KF_OK;
}

/* The verdict of one piece (check's code path; bench times it). */
static int tin_verify(struct tin *t, const struct tin_piece *p, uint8_t *verdict, const char **why)
{
    uint8_t token[KFD_TOKEN_LEN];
    *verdict = KF_TOKEN_REFUSED;
    struct tin_dev *d = tin_find(t, p->tx.msn);
    if (!d) {
        *why = why_unknown;
        return KF_OK;
    }
    uint32_t period = p->tx.date / 100;
    const struct tin_period *tp = NULL;
    for (unsigned i = 0; i < d->nperiods && !tp; i++)
        if (d->p[i].period == period)
            tp = &d->p[i];
    if (!tp) {
        *why = why_period;
        return KF_OK;
    }
    if (p->tx.date < d->reg_date) {
        *why = why_early;
        return KF_OK;
    }
    token_of(t, tp->slot, p->canonical, token);
    if (!kf_ct_equal(token, p->token, KFD_TOKEN_LEN)) {
        *verdict = KF_TOKEN_BAD;
        *why = why_bad;
        return KF_OK;
    }
    bool fresh;
    KF_GUARD(seen_add(d, p->tx.piece_count, &fresh));
    if (!fresh) {
        *verdict = KF_TOKEN_DUPLICATE;
        *why = why_dup;
        return KF_OK;
    }
    *verdict = KF_TOKEN_GOOD;
    *why = NULL;
    return pending_add(t, d->msn, p->tx.piece_count);
}

/* ---- output shared by check and send ---- */

struct verdict_line {
    unsigned long line;
    uint8_t verdict;
    const char *why; /* static text; NULL for good */
};

struct tally {
    size_t good, bad, duplicate, refused;
};

static const char *verdict_name(uint8_t v)
{
    switch (v) {
    case KF_TOKEN_GOOD:
        return "good";
    case KF_TOKEN_BAD:
        return "bad";
    case KF_TOKEN_DUPLICATE:
        return "duplicate";
    default:
        return "refused";
    }
}

static void print_lines(const struct verdict_line *v, size_t n, struct tally *tl)
{
    for (size_t i = 0; i < n; i++) {
        if (v[i].why)
            printf("%lu %s %s\n", v[i].line, verdict_name(v[i].verdict), v[i].why);
        else
            printf("%lu %s\n", v[i].line, verdict_name(v[i].verdict));
        tl->good += v[i].verdict == KF_TOKEN_GOOD;
        tl->bad += v[i].verdict == KF_TOKEN_BAD;
        tl->duplicate += v[i].verdict == KF_TOKEN_DUPLICATE;
        tl->refused += v[i].verdict != KF_TOKEN_GOOD && v[i].verdict != KF_TOKEN_BAD &&
                       v[i].verdict != KF_TOKEN_DUPLICATE;
    }
}

static int print_summary(const struct tally *tl, bool allow_bad)
{
    printf("good=%zu bad=%zu duplicate=%zu refused=%zu\n", tl->good, tl->bad, tl->duplicate,
           tl->refused);
    fflush(stdout);
    return allow_bad || (tl->bad + tl->duplicate + tl->refused) == 0 ? 0 : EXIT_NOT_GOOD;
}

/* Next non-empty input line without its line end; NULL at the end. */
static const char *next_line(FILE *in, char **buf, size_t *cap, unsigned long *lineno)
{
    ssize_t n;
    while ((n = getline(buf, cap, in)) >= 0) {
        (*lineno)++;
        while (n > 0 && ((*buf)[n - 1] == '\n' || (*buf)[n - 1] == '\r'))
            (*buf)[--n] = '\0';
        if (n > 0)
            return *buf;
    }
    return NULL;
}

static FILE *open_input(const char *cmd, const char *file)
{
    if (strcmp(file, "-") == 0)
        return stdin;
    FILE *in = fopen(file, "r");
    if (!in)
        fprintf(stderr, "keyfleet-verify %s: cannot read %s: %s\n", cmd, file, strerror(errno));
    return in;
}

/* ---- init ---- */

static int cmd_init(int argc, char **argv)
{
    const char *dir = NULL, *role = NULL, *key_file = NULL;
    const struct opt opts[] = {{"--state", &dir, NULL},
                               {"--role-id", &role, NULL},
                               {"--key-file", &key_file, NULL},
                               {NULL, NULL, NULL}};
    int rc = parse_opts("init", argc, argv, opts, init_help, NULL);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    enum kf_mfg_role_type type;
    if (!dir || !role)
        return usage_error("init", "--state and --role-id are required");
    if (!kf_mfg_role_id_parse(role, &type) || type != KF_MFG_ROLE_TIN)
        return usage_error("init", "--role-id wants a Tin's ID: T and 8 digits, e.g. T00000001");
    if ((rc = kf_station_create(dir, key_file, role)) < 0)
        return local_error("init", dir, rc);
    printf("%s: Tin %s; enrol it with keyfleet-verify enroll --state %s --domain D\n", dir, role,
           dir);
    return 0;
}

/* ---- enroll ---- */

static int cmd_enroll(int argc, char **argv)
{
    struct remote r = {.cmd = "enroll"};
    const char *dir = NULL, *domain = NULL, *key_file = NULL;
    const struct opt opts[] = {{"--state", &dir, NULL},     {"--domain", &domain, NULL},
                               {"--key-file", &key_file, NULL}, {"--server", &r.server, NULL},
                               {"--ca", &r.ca, NULL},       {"--cert", &r.cert, NULL},
                               {"--key", &r.key, NULL},     {NULL, NULL, NULL}};
    int rc = parse_opts("enroll", argc, argv, opts, enroll_help, NULL);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    if (!dir || !domain_ok(domain))
        return usage_error("enroll", "--state and a valid --domain are required");
    if ((rc = remote_check_opts(&r)))
        return rc;
    kf_station *st;
    if ((rc = open_station("enroll", dir, key_file, &st)))
        return rc;
    uint8_t sign_pub[32], enc_pub[32];
    kf_station_public(st, sign_pub, enc_pub);
    kf_buf records = {0};
    if ((rc = remote_connect(&r)))
        goto out;
    kf_ttlv *payload;
    kf_ttlv *msg = new_request(&r, KMIP_OP_KEYFLEET_MFG_ROLE_ENROLL, &payload);
    if (msg && !(kf_ttlv_add_text(r.arena, payload, KMIP_TAG_KEYFLEET_DOMAIN, domain) &&
                 kf_ttlv_add_text(r.arena, payload, KMIP_TAG_KEYFLEET_ROLE_ID,
                                  kf_station_role_id(st)) &&
                 kf_ttlv_add_bytes(r.arena, payload, KMIP_TAG_KEYFLEET_SIGN_PUB, sign_pub, 32) &&
                 kf_ttlv_add_bytes(r.arena, payload, KMIP_TAG_KEYFLEET_ENC_PUB, enc_pub, 32)))
        msg = NULL;
    const kf_ttlv *answer;
    if ((rc = remote_call(&r, msg, &answer)))
        goto out;
    size_t count;
    int krc = kf_buf_alloc(&records, 4096, KF_TLS_MESSAGE_MAX, 0);
    if (krc == KF_OK)
        krc = payload_records(answer, &records, &count);
    if (krc == KF_OK)
        krc = kf_station_save_certs(st, domain, records.data, records.len);
    if (krc < 0) {
        rc = local_error("enroll", "the enrolment answer", krc);
        goto out;
    }
    printf("%s enrolled in %s (%zu certificates kept)\n", kf_station_role_id(st), domain, count);
out:
    kf_buf_free(&records);
    remote_close(&r);
    kf_station_close(st);
    return rc;
}

/* ---- fetch ---- */

static int parse_periods(const char *s, uint32_t *first, uint32_t *last)
{
    unsigned a, b;
    char tail;
    if (!s || strlen(s) != 13 || sscanf(s, "%6u-%6u%c", &a, &b, &tail) != 2)
        return -1;
    *first = a;
    *last = b;
    return period_count(a, b) >= 1 && period_count(a, b) <= TIN_PERIODS ? 0 : -1;
}

static int cmd_fetch(int argc, char **argv)
{
    struct remote r = {.cmd = "fetch"};
    const char *dir = NULL, *domain = NULL, *key_file = NULL, *periods = NULL;
    const struct opt opts[] = {{"--state", &dir, NULL},     {"--domain", &domain, NULL},
                               {"--periods", &periods, NULL}, {"--key-file", &key_file, NULL},
                               {"--server", &r.server, NULL}, {"--ca", &r.ca, NULL},
                               {"--cert", &r.cert, NULL},   {"--key", &r.key, NULL},
                               {NULL, NULL, NULL}};
    int rc = parse_opts("fetch", argc, argv, opts, fetch_help, NULL);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    uint32_t first, last;
    if (!dir || !domain_ok(domain))
        return usage_error("fetch", "--state and a valid --domain are required");
    if (parse_periods(periods, &first, &last) < 0)
        return usage_error("fetch", "--periods wants YYYYMM-YYYYMM, first <= last, at most 24 "
                                    "months, years 2000-2099");
    if ((rc = remote_check_opts(&r)))
        return rc;
    kf_station *st;
    if ((rc = open_station("fetch", dir, key_file, &st)))
        return rc;
    kf_buf record = {0};
    char path[PATH_MAX];
    if ((rc = remote_connect(&r)))
        goto out;
    kf_ttlv *payload;
    kf_ttlv *msg = new_request(&r, KMIP_OP_KEYFLEET_TOKEN_KEY_EXPORT, &payload);
    if (msg && !(kf_ttlv_add_text(r.arena, payload, KMIP_TAG_KEYFLEET_DOMAIN, domain) &&
                 kf_ttlv_add_text(r.arena, payload, KMIP_TAG_KEYFLEET_ROLE_ID,
                                  kf_station_role_id(st)) &&
                 kf_ttlv_add_int(r.arena, payload, KMIP_TAG_KEYFLEET_PERIOD_FIRST, (int32_t)first) &&
                 kf_ttlv_add_int(r.arena, payload, KMIP_TAG_KEYFLEET_PERIOD_LAST, (int32_t)last)))
        msg = NULL;
    const kf_ttlv *answer;
    if ((rc = remote_call(&r, msg, &answer)))
        goto out;
    size_t count;
    struct kf_mfg_record rec;
    int krc = kf_buf_alloc(&record, 4096, KF_MFG_TOKEN_KEYS_MAX + 4096, 0);
    if (krc == KF_OK)
        krc = payload_records(answer, &record, &count);
    if (krc == KF_OK && count != 1)
        krc = KF_ERR_MFG_FRAMING;
    if (krc == KF_OK)
        krc = tokens_record_check(st, domain, record.data, record.len, &rec);
    if (krc == KF_OK && (rec.period_first != first || rec.period_last != last))
        krc = KF_ERR_MFG_PERIOD;
    if (krc == KF_OK)
        krc = state_path(dir, "tokens", domain, true, path, sizeof(path));
    if (krc == KF_OK)
        krc = kf_station_write_file(path, record.data, record.len);
    if (krc < 0) {
        rc = local_error("fetch", "the token keys", krc);
        goto out;
    }
    printf("%s: %zu token keys, periods %06u-%06u, signed by Brass, kept in %s\n", domain,
           rec.table_len / KF_MFG_TOKEN_KEY_ENTRY_LEN, (unsigned)(first % 1000000u),
           (unsigned)(last % 1000000u), path);
out:
    kf_buf_free(&record);
    remote_close(&r);
    kf_station_close(st);
    return rc;
}

/* ---- check ---- */

static int check_flush(struct tin *t, const char *dir, struct verdict_line *v, size_t *n,
                       struct tally *tl)
{
    int rc = seen_flush(t, dir); /* durable before any verdict is shown */
    if (rc < 0)
        return rc;
    print_lines(v, *n, tl);
    *n = 0;
    return KF_OK;
}

static int cmd_check(int argc, char **argv)
{
    const char *dir = NULL, *domain = NULL, *key_file = NULL, *file = NULL;
    bool postal = false, allow_bad = false;
    const struct opt opts[] = {{"--state", &dir, NULL},       {"--domain", &domain, NULL},
                               {"--key-file", &key_file, NULL}, {"--postal", NULL, &postal},
                               {"--allow-bad", NULL, &allow_bad}, {NULL, NULL, NULL}};
    int rc = parse_opts("check", argc, argv, opts, check_help, &file);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    if (!dir || !domain_ok(domain) || !file)
        return usage_error("check", "--state, a valid --domain and FILE (or -) are required");
    kf_station *st;
    if ((rc = open_station("check", dir, key_file, &st)))
        return rc;
    struct tin t = {.cmd = "check", .seen_fd = -1};
    struct verdict_line *v = malloc(CHECK_CHUNK * sizeof(*v));
    struct tally tl = {0};
    char *buf = NULL;
    size_t cap = 0, nv = 0;
    unsigned long lineno = 0;
    FILE *in = NULL;
    int krc = v ? tin_load(&t, st, dir, domain) : KF_ERR_NOMEM;
    kf_station_close(st); /* the token keys are open; the station's own keys are not needed */
    if (krc == KF_OK)
        krc = seen_open(&t, dir);
    if (krc < 0) {
        rc = local_error("check", domain, krc);
        goto out;
    }
    if (!(in = open_input("check", file))) {
        rc = EXIT_LOCAL;
        goto out;
    }
    const char *line;
    while (krc == KF_OK && (line = next_line(in, &buf, &cap, &lineno))) {
        struct tin_piece p;
        struct verdict_line *o = &v[nv++];
        o->line = lineno;
        int prc = tin_read_piece(line, postal, &p);
        if (prc < 0) {
            o->verdict = KF_TOKEN_REFUSED;
            o->why = kf_strerror(prc);
        } else {
            krc = tin_verify(&t, &p, &o->verdict, &o->why);
        }
        if (krc == KF_OK && nv == CHECK_CHUNK)
            krc = check_flush(&t, dir, v, &nv, &tl);
    }
    if (krc == KF_OK && ferror(in))
        krc = KF_ERR_IO;
    if (krc == KF_OK)
        krc = check_flush(&t, dir, v, &nv, &tl);
    rc = krc < 0 ? local_error("check", "verification stopped", krc) : print_summary(&tl, allow_bad);
out:
    if (in && in != stdin)
        fclose(in);
    free(buf);
    free(v);
    tin_free(&t);
    return rc;
}

/* ---- send ---- */

struct send_state {
    struct remote r;
    const char *domain;
    uint8_t *pieces;         /* up to SEND_BATCH x 46 */
    size_t npieces;
    size_t *where;           /* pieces[i]'s line in v */
    struct verdict_line *v;  /* lines since the last batch */
    size_t nv;
    struct tally tl;
};

static int send_batch(struct send_state *s)
{
    if (s->npieces) {
        kf_ttlv *payload;
        kf_ttlv *msg = new_request(&s->r, KMIP_OP_KEYFLEET_TOKEN_VERIFY, &payload);
        if (msg &&
            !(kf_ttlv_add_text(s->r.arena, payload, KMIP_TAG_KEYFLEET_DOMAIN, s->domain) &&
              kf_ttlv_add_bytes(s->r.arena, payload, KMIP_TAG_KEYFLEET_PIECES, s->pieces,
                                s->npieces * KFD_PIECE_LEN)))
            msg = NULL;
        const kf_ttlv *answer;
        int rc = remote_call(&s->r, msg, &answer);
        if (rc)
            return rc;
        const kf_ttlv *vn = kf_ttlv_find(answer, KMIP_TAG_KEYFLEET_VERDICTS);
        const uint8_t *verdicts;
        size_t len;
        if (kf_ttlv_get_bytes(vn, &verdicts, &len) < 0 || len != s->npieces) {
            fprintf(stderr, "keyfleet-verify send: the answer has no verdict per piece\n");
            return EXIT_NOT_GOOD;
        }
        for (size_t i = 0; i < len; i++) {
            struct verdict_line *o = &s->v[s->where[i]];
            o->verdict = verdicts[i];
            o->why = verdicts[i] == KF_TOKEN_GOOD        ? NULL
                     : verdicts[i] == KF_TOKEN_BAD       ? why_bad
                     : verdicts[i] == KF_TOKEN_DUPLICATE ? why_dup
                     : "refused by keyfleetd: unknown device, key not Active, date before "
                       "registration or malformed data";
        }
    }
    print_lines(s->v, s->nv, &s->tl);
    s->nv = 0;
    s->npieces = 0;
    return 0;
}

static int cmd_send(int argc, char **argv)
{
    struct send_state s = {.r = {.cmd = "send"}};
    const char *file = NULL;
    bool postal = false, allow_bad = false;
    const struct opt opts[] = {{"--domain", &s.domain, NULL},     {"--postal", NULL, &postal},
                               {"--allow-bad", NULL, &allow_bad}, {"--server", &s.r.server, NULL},
                               {"--ca", &s.r.ca, NULL},           {"--cert", &s.r.cert, NULL},
                               {"--key", &s.r.key, NULL},         {NULL, NULL, NULL}};
    int rc = parse_opts("send", argc, argv, opts, send_help, &file);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    if (!domain_ok(s.domain) || !file)
        return usage_error("send", "a valid --domain and FILE (or -) are required");
    if ((rc = remote_check_opts(&s.r)))
        return rc;
    s.pieces = malloc((size_t)SEND_BATCH * KFD_PIECE_LEN);
    s.where = malloc(SEND_BATCH * sizeof(*s.where));
    s.v = malloc(2 * SEND_BATCH * sizeof(*s.v));
    FILE *in = NULL;
    char *buf = NULL;
    size_t cap = 0;
    unsigned long lineno = 0;
    if (!s.pieces || !s.where || !s.v) {
        rc = local_error("send", "memory", KF_ERR_NOMEM);
        goto out;
    }
    if (!(in = open_input("send", file))) {
        rc = EXIT_LOCAL;
        goto out;
    }
    if ((rc = remote_connect(&s.r)))
        goto out;
    const char *line;
    while (!rc && (line = next_line(in, &buf, &cap, &lineno))) {
        struct kfd_piece p;
        struct verdict_line *o = &s.v[s.nv];
        o->line = lineno;
        o->verdict = KF_TOKEN_REFUSED;
        int prc = kfd_piece_parse(line, &p);
        uint8_t *out = s.pieces + s.npieces * KFD_PIECE_LEN;
        if (prc == KF_OK)
            prc = kfd_txdata_encode(&p.tx, out);
        if (prc < 0) {
            o->why = kf_strerror(prc);
        } else {
            memcpy(out + KFD_TXDATA_LEN, postal ? p.postal_token : p.vendor_token, KFD_TOKEN_LEN);
            s.where[s.npieces++] = s.nv;
        }
        s.nv++;
        if (s.npieces == SEND_BATCH || s.nv == 2 * SEND_BATCH)
            rc = send_batch(&s);
    }
    if (!rc && ferror(in))
        rc = local_error("send", file, KF_ERR_IO);
    if (!rc)
        rc = send_batch(&s);
    if (!rc)
        rc = print_summary(&s.tl, allow_bad);
out:
    if (in && in != stdin)
        fclose(in);
    free(buf);
    free(s.pieces);
    free(s.where);
    free(s.v);
    remote_close(&s.r);
    return rc;
}

/* ---- bench ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const uint32_t month_days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

/* A date of period that the device may print: on or after its registration. */
static uint32_t bench_date(const struct tin_dev *d, uint32_t period, size_t i)
{
    uint32_t last_day = month_days[period % 100 - 1]; /* 28 in February is always valid */
    uint32_t date = period * 100 + 1 + (uint32_t)(i % last_day);
    if (date < d->reg_date && d->reg_date / 100 == period)
        date = d->reg_date;
    return date < d->reg_date ? 0 : date;
}

struct bench {
    struct tin_piece *pieces;       /* fields, canonical data, vendor token */
    uint32_t *slot;                 /* the token key of each piece */
    struct cmac_aes256_ctx *raw;    /* secure memory: one per token key, for the raw run */
    size_t n;
    char *lines;                    /* the first nlines pieces printed, for the text run */
    size_t nlines;
};

#define BENCH_LINES_MAX 200000u

static int bench_make(struct tin *t, struct bench *b, size_t n)
{
    b->pieces = calloc(n, sizeof(*b->pieces));
    b->slot = malloc(n * sizeof(*b->slot));
    b->nlines = n < BENCH_LINES_MAX ? n : BENCH_LINES_MAX;
    b->lines = malloc(b->nlines * KFD_PIECE_TEXT_MAX);
    b->raw = kf_secmem_alloc(t->ntk * sizeof(*b->raw));
    KF_ENSURE(b->pieces && b->slot && b->lines, KF_ERR_NOMEM);
    KF_ENSURE(b->raw != NULL, KF_ERR_SECMEM);
    for (size_t k = 0; k < t->ntk; k++)
        cmac_aes256_set_key(&b->raw[k], t->tk + k * KFD_METER_KEY_LEN);
    size_t made = 0;
    for (size_t i = 0; made < n && i < n * 4; i++) {
        const struct tin_dev *d = &t->dev[i % t->ndev];
        const struct tin_period *tp = &d->p[(i / t->ndev) % d->nperiods];
        uint32_t date = bench_date(d, tp->period, i);
        if (!date)
            continue; /* that period ends before the device was registered */
        struct kfd_piece p;
        memset(&p, 0, sizeof(p));
        p.tx.date = date;
        p.tx.value = 55 + (uint32_t)(i % 1000);
        p.tx.piece_count = (uint32_t)(i / t->ndev + 1); /* one count per device and round */
        snprintf(p.tx.postal_code, sizeof(p.tx.postal_code), "%05u", (unsigned)(i % 100000));
        snprintf(p.tx.msn, sizeof(p.tx.msn), "%s", d->msn);
        struct tin_piece *tp_out = &b->pieces[made];
        KF_GUARD(kfd_txdata_encode(&p.tx, tp_out->canonical));
        KF_GUARD(kfd_token_compute(t->tk + (size_t)tp->slot * KFD_METER_KEY_LEN,
                                   tp_out->canonical, p.vendor_token));
        tp_out->tx = p.tx;
        memcpy(tp_out->token, p.vendor_token, KFD_TOKEN_LEN);
        if (made < b->nlines)
            KF_GUARD(kfd_piece_format(&p, b->lines + made * KFD_PIECE_TEXT_MAX));
        b->slot[made++] = tp->slot;
    }
    b->n = made;
    return made == n ? KF_OK : KF_ERR_MFG_DATE;
}

static void bench_free(struct bench *b, size_t ntk)
{
    free(b->pieces);
    free(b->slot);
    free(b->lines);
    if (b->raw)
        kf_wipe(b->raw, ntk * sizeof(*b->raw));
    kf_secmem_free(b->raw);
}

/* check's verification of every piece: seconds, and how many were good. */
static int bench_check_path(struct tin *t, const struct bench *b, double *secs, size_t *good)
{
    seen_clear(t);
    *good = 0;
    double t0 = now_s();
    for (size_t i = 0; i < b->n; i++) {
        uint8_t v;
        const char *why;
        KF_GUARD(tin_verify(t, &b->pieces[i], &v, &why));
        *good += v == KF_TOKEN_GOOD;
    }
    *secs = now_s() - t0;
    return KF_OK;
}

/* The same from the printed lines: parsing, canonical data, verification. */
static int bench_text_path(struct tin *t, const struct bench *b, double *secs, size_t *good)
{
    seen_clear(t);
    *good = 0;
    double t0 = now_s();
    for (size_t i = 0; i < b->nlines; i++) {
        struct tin_piece p;
        uint8_t v;
        const char *why;
        KF_GUARD(tin_read_piece(b->lines + i * KFD_PIECE_TEXT_MAX, false, &p));
        KF_GUARD(tin_verify(t, &p, &v, &why));
        *good += v == KF_TOKEN_GOOD;
    }
    *secs = now_s() - t0;
    return KF_OK;
}

/* Raw nettle: CMAC with the key schedule ready and a 6-byte comparison, nothing else. */
static double bench_raw(const struct bench *b, size_t *good)
{
    *good = 0;
    double t0 = now_s();
    for (size_t i = 0; i < b->n; i++) {
        uint8_t mac[16];
        struct cmac_aes256_ctx *c = &b->raw[b->slot[i]];
        cmac_aes256_update(c, KFD_TXDATA_LEN, b->pieces[i].canonical);
        cmac_aes256_digest(c, sizeof(mac), mac);
        *good += memcmp(mac, b->pieces[i].token, KFD_TOKEN_LEN) == 0;
    }
    return now_s() - t0;
}

static int cmd_bench(int argc, char **argv)
{
    const char *dir = NULL, *domain = NULL, *key_file = NULL, *count = NULL;
    const struct opt opts[] = {{"--state", &dir, NULL},
                               {"--domain", &domain, NULL},
                               {"--pieces", &count, NULL},
                               {"--key-file", &key_file, NULL},
                               {NULL, NULL, NULL}};
    int rc = parse_opts("bench", argc, argv, opts, bench_help, NULL);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    size_t n = 1000000;
    if (count) {
        char *end;
        unsigned long long v = strtoull(count, &end, 10);
        if (*end || v < 1 || v > 100000000ull)
            return usage_error("bench", "--pieces wants 1..100000000");
        n = (size_t)v;
    }
    if (!dir || !domain_ok(domain))
        return usage_error("bench", "--state and a valid --domain are required");
    kf_station *st;
    if ((rc = open_station("bench", dir, key_file, &st)))
        return rc;
    struct tin t = {.cmd = "bench", .seen_fd = -1}; /* nothing is recorded */
    struct bench b = {0};
    int krc = tin_load(&t, st, dir, domain);
    kf_station_close(st);
    if (krc == KF_OK && !t.ndev)
        krc = KF_ERR_MFG_UNKNOWN;
    if (krc == KF_OK)
        krc = bench_make(&t, &b, n);
    /* Three rounds each, alternating, best of three: the same run, the same messages. */
    double best_check = 0, best_raw = 0, best_text = 0;
    size_t good_check = 0, good_raw = 0, good_text = 0;
    for (int round = 0; round < 3 && krc == KF_OK; round++) {
        double s;
        krc = bench_check_path(&t, &b, &s, &good_check);
        if (krc == KF_OK && (best_check == 0 || s < best_check))
            best_check = s;
        s = bench_raw(&b, &good_raw);
        if (best_raw == 0 || s < best_raw)
            best_raw = s;
        if (krc == KF_OK)
            krc = bench_text_path(&t, &b, &s, &good_text);
        if (krc == KF_OK && (best_text == 0 || s < best_text))
            best_text = s;
    }
    if (krc < 0) {
        rc = local_error("bench", domain, krc);
    } else if (good_check != b.n || good_raw != b.n || good_text != b.nlines) {
        fprintf(stderr, "keyfleet-verify bench: only %zu (check path), %zu (raw) of %zu and %zu "
                        "(from text) of %zu pieces verified good\n",
                good_check, good_raw, b.n, good_text, b.nlines);
        rc = EXIT_NOT_GOOD;
    } else {
        double check_rate = (double)b.n / best_check, raw_rate = (double)b.n / best_raw;
        double text_rate = (double)b.nlines / best_text;
        printf("pieces=%zu devices=%zu token_keys=%zu prepared=%zu\n", b.n, t.ndev, t.ntk,
               t.nprep);
        printf("check path:            %12.0f pieces/s  (%.0f ns per piece)\n", check_rate,
               1e9 / check_rate);
        printf("raw nettle cmac_aes256: %11.0f pieces/s  (%.0f ns per piece)\n", raw_rate,
               1e9 / raw_rate);
        printf("check from text lines:  %11.0f pieces/s  (%.0f ns per piece: parse, canonical "
               "data, verify; %zu lines)\n",
               text_rate, 1e9 / text_rate, b.nlines);
        printf("check_per_s=%.0f raw_per_s=%.0f text_per_s=%.0f ratio=%.2f\n", check_rate,
               raw_rate, text_rate, check_rate / raw_rate);
    }
    bench_free(&b, t.ntk);
    tin_free(&t);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
    int rc;
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        rc = 0;
    } else if (strcmp(cmd, "init") == 0) {
        rc = cmd_init(argc - 2, argv + 2);
    } else if (strcmp(cmd, "enroll") == 0) {
        rc = cmd_enroll(argc - 2, argv + 2);
    } else if (strcmp(cmd, "fetch") == 0) {
        rc = cmd_fetch(argc - 2, argv + 2);
    } else if (strcmp(cmd, "check") == 0) {
        rc = cmd_check(argc - 2, argv + 2);
    } else if (strcmp(cmd, "send") == 0) {
        rc = cmd_send(argc - 2, argv + 2);
    } else if (strcmp(cmd, "bench") == 0) {
        rc = cmd_bench(argc - 2, argv + 2);
    } else {
        fprintf(stderr, "keyfleet-verify: unknown command '%.100s'\n(see keyfleet-verify "
                        "--help)\n",
                cmd);
        rc = EXIT_USAGE;
    }
    fflush(stdout);
    return rc;
}
