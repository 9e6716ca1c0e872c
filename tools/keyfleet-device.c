/*
 * keyfleet-device: a simulated device on libkeyfleet-device (seed EP 0 948 158,
 * Fig. 2; docs/device-simulator.md, docs/pairing.md).
 *
 *   install  load an installation package into a new state file
 *   base     partner B: serves links from a meter, answers every message
 *   meter    requester A: pairs through keyfleetd, then exchanges session keys
 *            with the base and checks application data round trips
 *   show     what a state file holds
 *
 * The state file is the simulated device's secure storage: it holds the
 * master key and the KEKs in the clear, as a device's protected NVM would.
 * Exit codes: 0 done, 1 refused or failed (the kf error sentence and name on
 * stderr), 2 usage, 3 cannot reach the server or the partner.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "devsim/devsim.h"
#include "keyfleet/device.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/secmem.h"
#include "keyfleet/tls.h"
#include "keyfleet/tlssplit.h"
#include "keyfleet/ttlv.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_CONNECT 3

#define MAX_SESSIONS 10000000u
#define DEFAULT_TIMEOUT_MS 10000

static const char *const usage_text =
    "Usage: keyfleet-device COMMAND [OPTIONS]\n"
    "A simulated device on libkeyfleet-device: pairwise KEKs from keyfleetd (seed EP 0 948 158,\n"
    "Fig. 2) and session keys between two devices. docs/device-simulator.md has the details.\n\n"
    "Commands:\n"
    "  install --state FILE --package PKG     make a device from its installation package\n"
    "  base    --state FILE --listen ADDR     partner B: answer a meter's messages\n"
    "  meter   --state FILE --partner ADDR --partner-id ID ...\n"
    "                                         requester A: pair, then exchange session keys\n"
    "  show    --state FILE [--json] [--reveal-keys]\n"
    "                                         counter and KEK slots of a device\n"
    "  meter show  --state FILE [--json]      a postage device (docs/manufacturing.md):\n"
    "                                         MSN, country, piece count, key slots\n"
    "  meter print --state FILE --vendor VE --postal D --date YYYYMMDD --value N\n"
    "              --postal-code C [--count N]\n"
    "                                         print N indicia (one line each)\n\n"
    "Every command takes --clock-skew SECONDS (added to the clock: a test's time machine)\n"
    "and --help. ADDR is HOST:PORT, [V6]:PORT or unix:/PATH.\n"
    "The state file is the device's secure storage: it holds its keys in the clear, as a\n"
    "device's protected memory would. Keep it 0600 (it is written so) and never copy it.\n"
    "Exit codes: 0 done, 1 refused or failed, 2 usage, 3 cannot reach a peer.\n";

static const char *const install_help =
    "Usage: keyfleet-device install --state FILE --package PKG [--clock-skew S]\n"
    "Load the installation package PKG (a KeyfleetDevicePackage, as written by\n"
    "`keyfleet device export ID -o PKG`) and write the new device state to FILE\n"
    "(atomically, mode 0600): device ID, domain, master key, counter 0, no KEKs.\n"
    "FILE must not exist: installing over a device would reset its counter, and an old\n"
    "pairing message would then be accepted again. The package holds the master key:\n"
    "destroy it once installed.\n";

static const char *const base_help =
    "Usage: keyfleet-device base --state FILE --listen ADDR [--links N] [--idle-timeout S]\n"
    "                            [--clock-skew S]\n"
    "Partner B of Fig. 2: waits for links from a meter (one at a time) and answers each\n"
    "message (one TTLV item, at most 2048 bytes):\n"
    "  KeyfleetPairPart      its part SM_B: stored if good, answered by an ack N_B either way\n"
    "  KeyfleetSessionKey    M3: answered by a SessionAck (key confirmation)\n"
    "  KeyfleetSessionRecord application data under the session key: opened and sent back\n"
    "                        sealed in the base's own direction\n"
    "A refusal the protocol has no authenticated answer for is answered by\n"
    "KeyfleetErrorCode {kf error code}. One log line per message on stdout (never a key).\n"
    "  --links N          stop after N links (default: serve until killed)\n"
    "  --idle-timeout S   close a link silent for S seconds (default 300)\n";

static const char *const meter_help =
    "Usage: keyfleet-device meter --state FILE --partner ADDR --partner-id ID\n"
    "         [--server HOST:PORT --ca F --cert F --key F [--tls-split] | --via HOST:PORT]\n"
    "         [--pair | --no-pair] [--kek-count N] [--lifetime S] [--max-uses N]\n"
    "         [--sessions N] [--data BYTES] [--timeout MS] [--json] [--clock-skew S]\n"
    "         [--ignore-own-limits [--kek ID]]\n"
    "Requester A of Fig. 2. With --pair (the default) it asks keyfleetd for KEKs shared\n"
    "with ID: KMIP over TLS with a device certificate (--server), or plain KMIP TTLV over\n"
    "TCP to a gateway such as kf-relay --upstream-tls (--via: the seed's unsecured modem\n"
    "line 37); it keeps its part SM_A, forwards SM_B to the base at ADDR and reports both\n"
    "acknowledgements. Then it runs N session-key exchanges with the base (M3 ->\n"
    "SessionAck) and after each sends BYTES of random data under the session key and\n"
    "checks that the base's echo is byte-exact.\n"
    "  --tls-split        with --server: the TLS handshake runs in a separate session handler\n"
    "                     process that alone holds the device key and the TLS secrets\n"
    "  --kek-count N      KEKs in one message, 1..8, consecutive windows (server default 1)\n"
    "  --lifetime S       seconds per KEK (server default 86400)\n"
    "  --max-uses N       session keys per KEK on each device (server default 10000)\n"
    "  --sessions N       session-key exchanges after pairing (default 1; 0: none)\n"
    "  --data BYTES       application data per session, 0..1024 (default 64)\n"
    "  --timeout MS       connect and answer timeout per message (default 10000)\n"
    "  --json             one JSON summary on stdout\n"
    "  --ignore-own-limits  TEST ONLY: send M3 under a KEK this device itself considers\n"
    "                     expired or exhausted (the highest-numbered, or --kek ID), so a\n"
    "                     test can watch the RECEIVER refuse it. The send is counted (its\n"
    "                     sequence number, and a use up to the limit).\n";

static const char *const show_help =
    "Usage: keyfleet-device show --state FILE [--json] [--reveal-keys] [--clock-skew S]\n"
    "Device ID, domain, pairing counter and every KEK slot: ID, partner, role, window,\n"
    "uses, sequence numbers and its status now (valid, not-yet-valid, expired, exhausted).\n"
    "  --reveal-keys   also print each KEK in hex. FOR TESTS ONLY (the key scans compare\n"
    "                  what two devices hold and search server files for it); a real device\n"
    "                  never shows a key. The master key is never printed.\n";

/* ---- the simulated device: secure storage = a file, clock = time + skew ---- */

struct sim {
    const char *cmd;
    const char *state_path;
    int64_t skew;
    bool suppress_save;     /* --ignore-own-limits: the faked limits never reach the file */
    struct kfd_device *dev; /* in secure memory: it holds the master key and KEKs */
};

static int sim_save(void *ctx, const uint8_t *state, size_t len)
{
    struct sim *s = ctx;
    if (s->suppress_save)
        return 0;
    return ds_file_write_atomic(s->state_path, state, len) == KF_OK ? 0 : -1;
}

static int64_t sim_now(void *ctx)
{
    const struct sim *s = ctx;
    return (int64_t)time(NULL) + s->skew;
}

static int sim_random(void *ctx, uint8_t *out, size_t n)
{
    (void)ctx;
    return gnutls_rnd(GNUTLS_RND_KEY, out, n) == 0 ? 0 : -1;
}

static struct kfd_env sim_env(struct sim *s)
{
    return (struct kfd_env){.ctx = s, .save = sim_save, .now = sim_now, .random = sim_random};
}

static int refuse(const struct sim *s, int rc, const char *what)
{
    fprintf(stderr, "keyfleet-device %s: %s: %s (%s)\n", s->cmd, what, kf_strerror(rc),
            kf_errname(rc));
    return rc == KF_ERR_CONNECT ? EXIT_CONNECT : EXIT_REFUSED;
}

static int usage_error(const char *cmd, const char *why)
{
    if (cmd)
        fprintf(stderr, "keyfleet-device %s: %s\n(see keyfleet-device %s --help)\n", cmd, why, cmd);
    else
        fprintf(stderr, "keyfleet-device: %s\n(see keyfleet-device --help)\n", why);
    return EXIT_USAGE;
}

static int sim_alloc(struct sim *s)
{
    s->dev = kf_secmem_alloc(sizeof(*s->dev));
    if (!s->dev)
        return refuse(s, KF_ERR_SECMEM, "cannot hold the device's keys");
    return 0;
}

static void sim_free(struct sim *s)
{
    if (s->dev) {
        kfd_close(s->dev);
        kf_secmem_free(s->dev);
        s->dev = NULL;
    }
}

/* Open the device from its state file. */
static int sim_open(struct sim *s)
{
    kf_buf state = {0};
    int rc = ds_file_read(s->state_path, KFD_STATE_MAX, KF_BUF_SECRET, &state);
    if (rc == KF_ERR_NOT_FOUND) {
        fprintf(stderr, "keyfleet-device %s: no device state at %s (install one first)\n", s->cmd,
                s->state_path);
        return EXIT_REFUSED;
    }
    if (rc < 0)
        return refuse(s, rc, s->state_path);
    if (sim_alloc(s))
        return EXIT_REFUSED;
    struct kfd_env env = sim_env(s);
    rc = kfd_open(s->dev, &env, state.data, state.len);
    kf_buf_free(&state);
    if (rc < 0)
        return refuse(s, rc, s->state_path);
    return 0;
}

/* Write the in-memory state (after the test-only limit bypass restored it). */
static int sim_persist(struct sim *s)
{
    kf_buf out;
    KF_GUARD(kf_buf_alloc(&out, KFD_STATE_MAX, KFD_STATE_MAX, KF_BUF_SECRET));
    int rc = kfd_state_encode(&s->dev->st, &out);
    if (rc == KF_OK)
        rc = ds_file_write_atomic(s->state_path, out.data, out.len) == KF_OK
                 ? KF_OK
                 : KF_ERR_DEVICE_STORAGE;
    kf_buf_free(&out);
    return rc;
}

/* ---- options ---- */

/* Parse a command's options; prints its help (-1) or a usage error (EXIT_USAGE). */
static int parse_opts(const char *cmd, int argc, char **argv, const struct ds_opt *opts,
                      const char *help)
{
    char why[200];
    int rc = ds_opts_parse(argc, argv, opts, why, sizeof(why));
    if (rc == DS_OPTS_HELP) {
        fputs(help, stdout);
        return -1;
    }
    return rc < 0 ? usage_error(cmd, why) : 0;
}

static int number_opt(const char *cmd, const char *name, const char *v, uint64_t max, uint64_t *out)
{
    if (ds_parse_u64(v, max, out) == KF_OK)
        return 0;
    char why[200];
    snprintf(why, sizeof(why), "%s wants a whole number 0..%" PRIu64 ", not '%.60s'", name, max, v);
    return usage_error(cmd, why);
}

static int skew_opt(struct sim *s, const char *v)
{
    if (!v)
        return 0;
    /* a skew of more than 1000 years is a typo, and keeps now() far from overflow */
    if (ds_parse_i64(v, &s->skew) == KF_OK && s->skew > -31536000000LL && s->skew < 31536000000LL)
        return 0;
    return usage_error(s->cmd, "--clock-skew wants seconds, e.g. 86401 or -60");
}

/* ---- install ---- */

static int cmd_install(int argc, char **argv)
{
    struct sim s = {.cmd = "install"};
    const char *pkg_path = NULL, *skew = NULL;
    const struct ds_opt opts[] = {{"--state", &s.state_path, NULL},
                                  {"--package", &pkg_path, NULL},
                                  {"--clock-skew", &skew, NULL},
                                  {NULL, NULL, NULL}};
    int rc = parse_opts(s.cmd, argc, argv, opts, install_help);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (!s.state_path || !pkg_path)
        return usage_error(s.cmd, "--state and --package are required");
    if ((rc = skew_opt(&s, skew)))
        return rc;
    struct stat sb;
    if (lstat(s.state_path, &sb) == 0) {
        fprintf(stderr,
                "keyfleet-device install: %s already holds a device: installing again would "
                "reset its counter (%s)\n",
                s.state_path, kf_errname(KF_ERR_EXISTS));
        return EXIT_REFUSED;
    }
    kf_buf pkg = {0};
    rc = ds_file_read(pkg_path, KFD_MSG_MAX, KF_BUF_SECRET, &pkg);
    if (rc < 0)
        return refuse(&s, rc, pkg_path);
    if (sim_alloc(&s)) {
        kf_buf_free(&pkg);
        return EXIT_REFUSED;
    }
    struct kfd_env env = sim_env(&s);
    rc = kfd_install(s.dev, &env, pkg.data, pkg.len);
    kf_buf_free(&pkg);
    int exit_code = 0;
    if (rc < 0)
        exit_code = refuse(&s, rc, "the package was refused");
    else
        printf("installed %s (domain %s) into %s\n", s.dev->st.id, s.dev->st.domain, s.state_path);
    sim_free(&s);
    return exit_code;
}

/* ---- show ---- */

static const char *kek_status(const struct kfd_kek *k, int64_t now)
{
    if (now < k->not_before)
        return "not-yet-valid";
    if (now >= k->not_after)
        return "expired";
    if (k->uses >= k->max_uses)
        return "exhausted";
    return "valid";
}

static void print_hex(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
}

static int cmd_show(int argc, char **argv)
{
    struct sim s = {.cmd = "show"};
    const char *skew = NULL;
    bool json = false, reveal = false;
    const struct ds_opt opts[] = {{"--state", &s.state_path, NULL},
                                  {"--clock-skew", &skew, NULL},
                                  {"--json", NULL, &json},
                                  {"--reveal-keys", NULL, &reveal},
                                  {NULL, NULL, NULL}};
    int rc = parse_opts(s.cmd, argc, argv, opts, show_help);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (!s.state_path)
        return usage_error(s.cmd, "--state is required");
    if ((rc = skew_opt(&s, skew)) || (rc = sim_open(&s)))
        return rc;
    const struct kfd_state *st = &s.dev->st;
    int64_t now = sim_now(&s);
    unsigned used = 0;
    for (size_t i = 0; i < KFD_MAX_KEKS; i++)
        used += st->keks[i].in_use;
    if (json) {
        printf("{\"device\":");
        ds_json_string(stdout, st->id);
        printf(",\"domain\":");
        ds_json_string(stdout, st->domain);
        printf(",\"counter\":%" PRIu64 ",\"now\":%" PRId64 ",\"slots\":%d,\"keks\":[",
               st->last_counter, now, KFD_MAX_KEKS);
    } else {
        printf("device    %s\ndomain    %s\ncounter   %" PRIu64 "\nKEK slots %u of %d in use\n",
               st->id, st->domain, st->last_counter, used, KFD_MAX_KEKS);
    }
    bool first = true;
    for (size_t i = 0; i < KFD_MAX_KEKS; i++) {
        const struct kfd_kek *k = &st->keks[i];
        char nb[32], na[32];
        if (!k->in_use)
            continue;
        ds_format_time(k->not_before, nb, sizeof(nb));
        ds_format_time(k->not_after, na, sizeof(na));
        const char *role = k->role == KFD_ROLE_A ? "A" : k->role == KFD_ROLE_B ? "B" : "?";
        if (json) {
            printf("%s{\"kek_id\":%" PRIu64 ",\"partner\":", first ? "" : ",", k->kek_id);
            ds_json_string(stdout, k->partner);
            printf(",\"role\":\"%s\",\"not_before\":%" PRId64 ",\"not_after\":%" PRId64
                   ",\"not_before_utc\":\"%s\",\"not_after_utc\":\"%s\",\"max_uses\":%" PRIu32
                   ",\"uses\":%" PRIu32 ",\"send_seq\":%" PRIu64 ",\"recv_seq\":%" PRIu64
                   ",\"status\":\"%s\"",
                   role, k->not_before, k->not_after, nb, na, k->max_uses, k->uses, k->send_seq,
                   k->recv_seq, kek_status(k, now));
            if (reveal) {
                printf(",\"key\":\"");
                print_hex(k->key, KFD_KEY_LEN);
                putchar('"');
            }
            putchar('}');
        } else {
            printf("  kek %" PRIu64 "  partner %s  role %s  %s .. %s  uses %" PRIu32 "/%" PRIu32
                   "  send-seq %" PRIu64 "  recv-seq %" PRIu64 "  %s",
                   k->kek_id, k->partner, role, nb, na, k->uses, k->max_uses, k->send_seq,
                   k->recv_seq, kek_status(k, now));
            if (reveal) {
                printf("  key ");
                print_hex(k->key, KFD_KEY_LEN);
            }
            putchar('\n');
        }
        first = false;
    }
    if (json)
        printf("]}\n");
    sim_free(&s);
    return 0;
}

/* ---- the link between the two devices ---- */

/* Read one message from a link; KF_ERR_IO when the peer closed. */
static int link_read(int fd, kf_buf *msg, int timeout_ms)
{
    bool eof;
    return ds_frame_read(fd, msg, KFD_MSG_MAX, timeout_ms, &eof);
}

/* A device ID from a message (non-secret): the first Text item with tag. */
static bool find_id(const uint8_t *msg, size_t len, uint32_t tag, char out[KFD_ID_MAX + 1])
{
    return ds_item_text(msg, len, tag, out, KFD_ID_MAX + 1) && kfd_id_valid(out) == KF_OK;
}

/* ---- base ---- */

/* The records of the session last accepted: the base accepted SK, so it seals in the
 * accepter's direction and opens the offerer's (the library's nonce carries it). */
struct base {
    struct sim *s;
    unsigned long link, msgs;
    struct kfd_channel tx, rx;
    bool ready;
};

static void base_forget_session(struct base *b)
{
    kf_wipe(&b->tx, sizeof(b->tx));
    kf_wipe(&b->rx, sizeof(b->rx));
    b->ready = false;
}

static void base_log(const struct base *b, const char *what, const char *verdict, int rc)
{
    if (rc < 0)
        printf("base: link %lu #%lu %s: refused %s (%s)\n", b->link, b->msgs, what, kf_errname(rc),
               kf_strerror(rc));
    else
        printf("base: link %lu #%lu %s: %s\n", b->link, b->msgs, what, verdict);
}

/* One message in, one answer out (in answer). */
static int base_answer(struct base *b, const uint8_t *msg, size_t len, kf_buf *answer)
{
    char what[160], verdict[200];
    uint8_t sk[KFD_KEY_LEN];
    bool got_sk = false;
    int rc;
    ds_describe(msg, len, what, sizeof(what));
    struct ds_item_pos pos;
    bool is_record = len >= DS_TTLV_HEADER &&
                     ds_find_item(msg, len, KMIP_TAG_KEYFLEET_SESSION_RECORD, 1, &pos) == KF_OK &&
                     pos.item_off == 0;
    if (is_record) {
        uint8_t data[KFD_DATA_MAX];
        size_t n = 0;
        rc = b->ready ? kfd_record_open(&b->rx, msg, len, data, sizeof(data), &n)
                      : KF_ERR_SESSION_INTEGRITY; /* no session key to open it with */
        if (rc == KF_OK)
            rc = kfd_record_seal(&b->tx, data, n, answer);
        kf_wipe(data, sizeof(data));
        snprintf(verdict, sizeof(verdict), "echoed %zu bytes", n);
        base_log(b, what, verdict, rc);
        return rc;
    }
    rc = kfd_partner_answer(b->s->dev, msg, len, answer, sk, &got_sk);
    if (got_sk) {
        char sender[KFD_ID_MAX + 1] = "";
        base_forget_session(b);
        if (!find_id(msg, len, KMIP_TAG_KEYFLEET_DEVICE_ID, sender))
            rc = KF_ERR_PAIR_MALFORMED;
        else if ((rc = kfd_channel_init(&b->tx, sk, KFD_DIR_ACCEPTER)) == KF_OK &&
                 (rc = kfd_channel_init(&b->rx, sk, KFD_DIR_OFFERER)) == KF_OK)
            b->ready = true;
        snprintf(verdict, sizeof(verdict), "accepted session key from %s", sender);
    } else if (rc == KF_OK) {
        uint64_t kek = 0;
        ds_item_u64(msg, len, KMIP_TAG_KEYFLEET_KEK_ID, &kek);
        snprintf(verdict, sizeof(verdict), "accepted KEK %" PRIu64 ", acknowledged", kek);
    }
    kf_wipe(sk, sizeof(sk));
    base_log(b, what, verdict, rc);
    if (rc < 0 && answer->len > 0)
        printf("base: link %lu #%lu: answered with an authenticated ack of the refusal\n", b->link,
               b->msgs);
    return rc;
}

static void base_serve_link(struct base *b, int fd, int idle_ms)
{
    kf_buf msg, answer;
    if (kf_buf_alloc(&msg, 256, KFD_MSG_MAX, 0) < 0 ||
        kf_buf_alloc(&answer, KFD_MSG_MAX, KFD_MSG_MAX, KF_BUF_SECRET) < 0) {
        kf_buf_free(&msg);
        return;
    }
    for (;;) {
        int rc = link_read(fd, &msg, idle_ms);
        if (rc < 0) {
            if (rc != KF_ERR_IO)
                printf("base: link %lu closed: %s (%s)\n", b->link, kf_strerror(rc),
                       kf_errname(rc));
            break;
        }
        b->msgs++;
        kf_buf_reset(&answer);
        rc = base_answer(b, msg.data, msg.len, &answer);
        if (answer.len == 0) { /* the protocol has no answer for this refusal */
            uint8_t item[DS_ERROR_ITEM_LEN];
            ds_error_item(rc < 0 ? rc : KF_ERR_INTERNAL, item);
            rc = ds_frame_write(fd, item, sizeof(item));
        } else {
            rc = ds_frame_write(fd, answer.data, answer.len);
        }
        if (rc < 0)
            break;
    }
    base_forget_session(b);
    kf_buf_free(&msg);
    kf_buf_free(&answer);
}

static int cmd_base(int argc, char **argv)
{
    struct sim s = {.cmd = "base"};
    const char *listen_at = NULL, *skew = NULL, *links_s = NULL, *idle_s = NULL;
    const struct ds_opt opts[] = {
        {"--state", &s.state_path, NULL}, {"--listen", &listen_at, NULL},
        {"--links", &links_s, NULL},      {"--idle-timeout", &idle_s, NULL},
        {"--clock-skew", &skew, NULL},    {NULL, NULL, NULL}};
    int rc = parse_opts(s.cmd, argc, argv, opts, base_help);
    if (rc)
        return rc < 0 ? 0 : rc;
    uint64_t links = 0, idle = 300;
    struct ds_addr addr;
    if (!s.state_path || !listen_at)
        return usage_error(s.cmd, "--state and --listen are required");
    if (ds_addr_parse(listen_at, &addr) < 0)
        return usage_error(s.cmd, "--listen wants HOST:PORT, [V6]:PORT or unix:/PATH");
    if ((links_s && (rc = number_opt(s.cmd, "--links", links_s, UINT32_MAX, &links))) ||
        (idle_s && (rc = number_opt(s.cmd, "--idle-timeout", idle_s, 86400, &idle))) ||
        (rc = skew_opt(&s, skew)))
        return rc;
    if ((rc = sim_open(&s)))
        return rc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    int lfd;
    rc = ds_listen(&addr, &lfd);
    if (rc < 0) {
        sim_free(&s);
        return refuse(&s, rc, listen_at);
    }
    if (!addr.is_unix)
        addr.port = ds_bound_port(lfd);
    char where[400];
    ds_addr_format(&addr, where, sizeof(where));
    printf("base: %s (domain %s) listening on %s\n", s.dev->st.id, s.dev->st.domain, where);
    struct base b = {.s = &s};
    while (!links || b.link < links) {
        int fd;
        rc = ds_accept(lfd, -1, &fd);
        if (rc < 0)
            continue;
        b.link++;
        b.msgs = 0;
        base_serve_link(&b, fd, idle ? (int)idle * 1000 : -1);
        close(fd);
        printf("base: link %lu ended after %lu messages\n", b.link, b.msgs);
    }
    close(lfd);
    sim_free(&s);
    return 0;
}

/* ---- meter ---- */

struct meter_io {
    struct sim *s;
    int timeout_ms;
    /* server: KMIP over TLS (server_addr) or plain TTLV to a gateway (via) */
    const char *ca, *cert, *key;
    struct ds_addr server_addr, via, partner_addr;
    bool use_via;
    bool tls_split; /* --tls-split */
    kf_tlssplit_client *tls;
    int via_fd, partner_fd;
    kf_buf rx;
    /* what went wrong last, for the message */
    enum kfd_peer failed_peer;
};

static int server_connect(struct meter_io *io)
{
    if (io->use_via)
        return io->via_fd >= 0 ? KF_OK : ds_connect(&io->via, io->timeout_ms, &io->via_fd);
    if (io->tls)
        return KF_OK;
    /* --tls-split: the handler is this binary, exec'd fresh (see main). */
    struct kf_tlssplit_client_config o = {.ca_file = io->ca,
                                          .cert_file = io->cert,
                                          .key_file = io->key,
                                          .timeout_ms = io->timeout_ms,
                                          .exec_path = "/proc/self/exe",
                                          .monolithic = !io->tls_split};
    int rc = kf_tlssplit_client_connect(io->server_addr.host, io->server_addr.port, &o, &io->tls);
    return rc == KF_ERR_TLS ? KF_ERR_CONNECT : rc;
}

static int server_exchange(struct meter_io *io, const uint8_t *req, size_t len)
{
    bool eof;
    KF_GUARD(server_connect(io));
    if (io->use_via) {
        KF_GUARD(ds_frame_write(io->via_fd, req, len));
        int rc = ds_frame_read(io->via_fd, &io->rx, KF_TLS_MESSAGE_MAX, io->timeout_ms, &eof);
        return rc == KF_ERR_IO ? KF_ERR_CONNECT : rc;
    }
    return kf_tlssplit_client_call(io->tls, req, len, &io->rx);
}

static int meter_exchange(void *ctx, enum kfd_peer peer, const uint8_t *req, size_t len,
                          uint8_t *resp, size_t cap, size_t *resp_len)
{
    struct meter_io *io = ctx;
    int rc, code;
    if (peer == KFD_PEER_SERVER) {
        rc = server_exchange(io, req, len);
    } else {
        rc = ds_frame_write(io->partner_fd, req, len);
        if (rc == KF_OK)
            rc = link_read(io->partner_fd, &io->rx, io->timeout_ms);
        if (rc == KF_OK && ds_error_item_parse(io->rx.data, io->rx.len, &code))
            return code < 0 ? code : KF_ERR_PAIR_MALFORMED;
    }
    if (rc < 0) {
        io->failed_peer = peer;
        return rc;
    }
    KF_ENSURE(io->rx.len <= cap, KF_ERR_NOSPACE);
    memcpy(resp, io->rx.data, io->rx.len);
    *resp_len = io->rx.len;
    return KF_OK;
}

struct meter_opts {
    const char *partner_id;
    uint64_t kek_count, lifetime, max_uses, sessions, data, want_kek;
    bool pair, ignore_limits, json;
};

struct meter_result {
    bool paired;
    struct kfd_pair_result pr;
    uint64_t sessions_done, bytes;
    uint64_t keks_used[KFD_MAX_KEKS];
    size_t n_keks_used;
    int rc;
    char what[300];
};

static void note_kek_used(struct meter_result *r, uint64_t kek)
{
    for (size_t i = 0; i < r->n_keks_used; i++)
        if (r->keks_used[i] == kek)
            return;
    if (r->n_keks_used < KFD_MAX_KEKS)
        r->keks_used[r->n_keks_used++] = kek;
}

/* TEST ONLY (--ignore-own-limits): offer under a KEK this device considers
 * unusable, so the receiver's own checks can be seen to refuse it. The
 * chosen slot looks valid to kfd_session_offer for the one call (its other
 * KEKs for the partner are hidden); saving is suppressed meanwhile, then the
 * true window and limits come back with the use and sequence counted, and
 * that is what is saved. */
static int offer_ignoring_limits(struct sim *s, const char *partner, uint64_t want_kek,
                                 uint8_t sk[KFD_KEY_LEN], kf_buf *m3)
{
    size_t slot;
    if (!want_kek && kfd_kek_current(s->dev, partner, &slot) == KF_OK)
        return kfd_session_offer(s->dev, partner, sk, m3);
    struct kfd_state *st = &s->dev->st;
    size_t target = KFD_MAX_KEKS;
    for (size_t i = 0; i < KFD_MAX_KEKS; i++) {
        const struct kfd_kek *k = &st->keks[i];
        if (!k->in_use || strcmp(k->partner, partner) != 0)
            continue;
        if (want_kek ? k->kek_id == want_kek
                     : target == KFD_MAX_KEKS || k->kek_id > st->keks[target].kek_id)
            target = i;
    }
    KF_ENSURE(target < KFD_MAX_KEKS, KF_ERR_KEK_UNKNOWN);
    struct kfd_kek *saved = kf_secmem_alloc(sizeof(st->keks));
    KF_ENSURE(saved, KF_ERR_SECMEM);
    memcpy(saved, st->keks, sizeof(st->keks));
    for (size_t i = 0; i < KFD_MAX_KEKS; i++)
        if (i != target && st->keks[i].in_use && strcmp(st->keks[i].partner, partner) == 0)
            st->keks[i].in_use = false;
    struct kfd_kek *k = &st->keks[target];
    k->not_before = INT64_MIN;
    k->not_after = INT64_MAX;
    k->uses = 0;
    if (k->max_uses == 0)
        k->max_uses = 1;
    s->suppress_save = true;
    int rc = kfd_session_offer(s->dev, partner, sk, m3);
    s->suppress_save = false;
    uint64_t send_seq = k->send_seq;
    memcpy(st->keks, saved, sizeof(st->keks));
    kf_secmem_free(saved);
    if (rc == KF_OK) {
        /* a stored slot never has uses above max_uses (kfd_open would refuse it) */
        if (st->keks[target].uses < st->keks[target].max_uses)
            st->keks[target].uses++;
        st->keks[target].send_seq = send_seq;
        rc = sim_persist(s);
    }
    return rc;
}

/* Record what failed in session i (the first failure wins) and return rc. */
static int fail(struct meter_result *r, int rc, uint64_t i, const char *what)
{
    if (!r->rc) {
        r->rc = rc;
        snprintf(r->what, sizeof(r->what), "session %" PRIu64 ": %s", i, what);
    }
    return rc;
}

/* Send a message to the partner and read its answer into io->rx; a
 * KeyfleetErrorCode answer becomes its code. */
static int partner_call(struct meter_io *io, const uint8_t *msg, size_t len, bool *refused)
{
    int code;
    *refused = false;
    KF_GUARD(ds_frame_write(io->partner_fd, msg, len));
    KF_GUARD(link_read(io->partner_fd, &io->rx, io->timeout_ms));
    if (ds_error_item_parse(io->rx.data, io->rx.len, &code)) {
        *refused = true;
        return code < 0 ? code : KF_ERR_PAIR_MALFORMED;
    }
    return KF_OK;
}

/* After a session key: BYTES of random data out under it, the echo back, compared. */
static int meter_data(struct meter_io *io, const struct meter_opts *o, struct meter_result *r,
                      uint64_t i, const uint8_t sk[KFD_KEY_LEN], kf_buf *rec)
{
    uint8_t data[KFD_DATA_MAX], back[KFD_DATA_MAX];
    struct kfd_channel tx, rx; /* we offered SK: ours is the offerer's direction */
    size_t n = 0;
    bool refused;
    int rc = kfd_channel_init(&tx, sk, KFD_DIR_OFFERER);
    if (rc == KF_OK)
        rc = kfd_channel_init(&rx, sk, KFD_DIR_ACCEPTER);
    if (rc == KF_OK && gnutls_rnd(GNUTLS_RND_NONCE, data, (size_t)o->data) != 0)
        rc = KF_ERR_RNG_SOURCE;
    kf_buf_reset(rec);
    if (rc == KF_OK)
        rc = kfd_record_seal(&tx, data, (size_t)o->data, rec);
    if (rc < 0) {
        fail(r, rc, i, "cannot seal application data");
        goto out;
    }
    rc = partner_call(io, rec->data, rec->len, &refused);
    if (rc < 0) {
        fail(r, rc, i,
             refused ? "the partner refused the application data"
                     : "the application data did not come back");
        goto out;
    }
    rc = kfd_record_open(&rx, io->rx.data, io->rx.len, back, sizeof(back), &n);
    if (rc < 0) {
        fail(r, rc, i, "the echoed record does not open");
        goto out;
    }
    if (n != o->data || memcmp(back, data, n) != 0) {
        rc = fail(r, KF_ERR_INTERNAL, i, "the echo differs from what was sent");
        goto out;
    }
    r->bytes += n;
out:
    kf_wipe(&tx, sizeof(tx));
    kf_wipe(&rx, sizeof(rx));
    kf_wipe(data, sizeof(data));
    kf_wipe(back, sizeof(back));
    return rc;
}

/* One session: M3 -> SessionAck, then one record each way. */
static int meter_session(struct meter_io *io, const struct meter_opts *o, struct meter_result *r,
                         uint64_t i, kf_buf *m3, kf_buf *rec)
{
    struct sim *s = io->s;
    uint8_t sk[KFD_KEY_LEN];
    uint64_t kek = 0, seq = 0;
    bool refused;
    kf_buf_reset(m3);
    int rc = o->ignore_limits ? offer_ignoring_limits(s, o->partner_id, o->want_kek, sk, m3)
                              : kfd_session_offer(s->dev, o->partner_id, sk, m3);
    if (rc < 0)
        return fail(r, rc, i, "this device refuses to send a session key");
    if (!ds_item_u64(m3->data, m3->len, KMIP_TAG_KEYFLEET_KEK_ID, &kek) ||
        !ds_item_u64(m3->data, m3->len, KMIP_TAG_KEYFLEET_SEQ, &seq)) {
        rc = fail(r, KF_ERR_INTERNAL, i, "our own M3 is unreadable");
        goto out;
    }
    rc = partner_call(io, m3->data, m3->len, &refused);
    if (rc < 0) {
        fail(r, rc, i,
             refused ? "the partner refused the session key" : "no answer from the partner to M3");
        goto out;
    }
    rc = kfd_session_confirm(s->dev, o->partner_id, kek, seq, sk, io->rx.data, io->rx.len);
    if (rc < 0) {
        fail(r, rc, i, "the partner's key confirmation does not verify");
        goto out;
    }
    note_kek_used(r, kek);
    if (o->data > 0 && (rc = meter_data(io, o, r, i, sk, rec)) < 0)
        goto out;
    r->sessions_done++;
out:
    kf_wipe(sk, sizeof(sk));
    return rc;
}

static const char *verdict_name(int v)
{
    return v == KF_OK ? "accepted" : kf_errname(v);
}

/* A name from the KMIP dictionary, or the number. */
static const char *kmip_name(uint32_t tag, uint32_t value, char *buf, size_t cap)
{
    const char *name = kf_ttlv_enum_name(tag, value);
    if (name)
        return name;
    snprintf(buf, cap, "0x%08" PRIx32, value);
    return buf;
}

static void meter_report(const struct meter_io *io, const struct meter_opts *o,
                         const struct meter_result *r)
{
    /* The key server's refusal, as kfd_pair_with kept it (operation, reason, message). */
    const struct kfd_pair_result *pr = &r->pr;
    char op_buf[16], reason_buf[16];
    const char *op = kmip_name(KMIP_TAG_OPERATION, pr->server_operation, op_buf, sizeof(op_buf));
    const char *reason =
        kmip_name(KMIP_TAG_RESULT_REASON, pr->server_reason, reason_buf, sizeof(reason_buf));
    bool server_refused = o->pair && pr->server_operation != 0;
    const struct kfd_state *st = &io->s->dev->st;
    if (o->json) {
        printf("{\"device\":");
        ds_json_string(stdout, st->id);
        printf(",\"partner\":");
        ds_json_string(stdout, o->partner_id);
        printf(",\"paired\":%s", r->paired ? "true" : "false");
        if (o->pair)
            printf(",\"kek_id\":%" PRIu64 ",\"kek_count\":%" PRIu32
                   ",\"own\":\"%s\",\"partner_verdict\":\"%s\"",
                   r->pr.kek_id, r->pr.kek_count, verdict_name(r->pr.own),
                   verdict_name(r->pr.partner));
        printf(",\"counter\":%" PRIu64 ",\"sessions\":%" PRIu64 ",\"bytes\":%" PRIu64
               ",\"keks_used\":[",
               st->last_counter, r->sessions_done, r->bytes);
        for (size_t i = 0; i < r->n_keks_used; i++)
            printf("%s%" PRIu64, i ? "," : "", r->keks_used[i]);
        printf("],\"result\":\"%s\"", r->rc ? kf_errname(r->rc) : "ok");
        if (r->rc) {
            printf(",\"error\":");
            ds_json_string(stdout, r->what);
            printf(",\"sentence\":");
            ds_json_string(stdout, kf_strerror(r->rc));
        }
        if (server_refused) {
            printf(",\"server_said\":");
            ds_json_string(stdout, pr->server_message);
            printf(",\"server_operation\":");
            ds_json_string(stdout, op);
            printf(",\"server_reason\":");
            ds_json_string(stdout, reason);
        }
        printf("}\n");
    } else {
        printf("meter: %s <-> %s:", st->id, o->partner_id);
        if (r->paired)
            printf(" paired KEK %" PRIu64 " (%" PRIu32 " KEK%s, counter %" PRIu64 ");",
                   r->pr.kek_id, r->pr.kek_count, r->pr.kek_count == 1 ? "" : "s",
                   st->last_counter);
        printf(" %" PRIu64 " session key%s confirmed, %" PRIu64 " bytes echoed byte-exact",
               r->sessions_done, r->sessions_done == 1 ? "" : "s", r->bytes);
        if (r->n_keks_used) {
            printf("; KEK");
            for (size_t i = 0; i < r->n_keks_used; i++)
                printf(" %" PRIu64, r->keks_used[i]);
        }
        printf("\n");
    }
    if (r->rc) {
        fprintf(stderr, "keyfleet-device meter: %s: %s (%s)\n", r->what, kf_strerror(r->rc),
                kf_errname(r->rc));
        if (o->pair && !r->paired && (r->pr.own != 0 || r->pr.partner != 0))
            fprintf(stderr, "keyfleet-device meter: own part: %s; partner's part: %s\n",
                    verdict_name(r->pr.own), verdict_name(r->pr.partner));
        if (server_refused)
            fprintf(stderr, "keyfleet-device meter: the key server said: %s (%s refused: %s)\n",
                    pr->server_message, op, reason);
    }
}

static int meter_pair(struct meter_io *io, const struct meter_opts *o, struct meter_result *r)
{
    struct kfd_transport t = {.ctx = io, .exchange = meter_exchange};
    int rc = kfd_pair_with(io->s->dev, o->partner_id, (uint32_t)o->kek_count, (uint32_t)o->lifetime,
                           (uint32_t)o->max_uses, &t, &r->pr);
    if (rc == KF_OK) {
        r->paired = true;
        return KF_OK;
    }
    r->rc = rc;
    if (rc == KF_ERR_DEVICE_SERVER)
        snprintf(r->what, sizeof(r->what), "pairing with %s: the key server refused %s",
                 o->partner_id,
                 r->pr.server_operation == KMIP_OP_KEYFLEET_PAIR_ACK_REPORT
                     ? "the acknowledgements"
                     : "the request");
    else if (io->failed_peer == KFD_PEER_SERVER)
        snprintf(r->what, sizeof(r->what), "pairing with %s: no answer from the key server",
                 o->partner_id);
    else if (io->failed_peer == KFD_PEER_PARTNER)
        snprintf(r->what, sizeof(r->what), "pairing with %s: no answer from the partner",
                 o->partner_id);
    else if (r->pr.own != KF_OK)
        snprintf(r->what, sizeof(r->what), "pairing with %s: this device refused its part SM_A",
                 o->partner_id);
    else
        snprintf(r->what, sizeof(r->what), "pairing with %s: the partner refused its part SM_B",
                 o->partner_id);
    return rc;
}

static int meter_args(struct sim *s, struct meter_io *io, struct meter_opts *o, int argc,
                      char **argv)
{
    const char *partner = NULL, *server = NULL, *via = NULL, *skew = NULL, *kek_count = NULL,
               *lifetime = NULL, *max_uses = NULL, *sessions = NULL, *data = NULL, *timeout = NULL,
               *kek = NULL;
    bool pair = false, no_pair = false;
    const struct ds_opt opts[] = {{"--state", &s->state_path, NULL},
                                  {"--partner", &partner, NULL},
                                  {"--partner-id", &o->partner_id, NULL},
                                  {"--server", &server, NULL},
                                  {"--ca", &io->ca, NULL},
                                  {"--cert", &io->cert, NULL},
                                  {"--key", &io->key, NULL},
                                  {"--via", &via, NULL},
                                  {"--kek-count", &kek_count, NULL},
                                  {"--lifetime", &lifetime, NULL},
                                  {"--max-uses", &max_uses, NULL},
                                  {"--sessions", &sessions, NULL},
                                  {"--data", &data, NULL},
                                  {"--timeout", &timeout, NULL},
                                  {"--kek", &kek, NULL},
                                  {"--clock-skew", &skew, NULL},
                                  {"--pair", NULL, &pair},
                                  {"--no-pair", NULL, &no_pair},
                                  {"--ignore-own-limits", NULL, &o->ignore_limits},
                                  {"--tls-split", NULL, &io->tls_split},
                                  {"--json", NULL, &o->json},
                                  {NULL, NULL, NULL}};
    int rc = parse_opts(s->cmd, argc, argv, opts, meter_help);
    if (rc)
        return rc;
    uint64_t t = DEFAULT_TIMEOUT_MS;
    o->sessions = 1;
    o->data = 64;
    o->pair = !no_pair;
    if (!s->state_path || !partner || !o->partner_id)
        return usage_error(s->cmd, "--state, --partner and --partner-id are required");
    if (pair && no_pair)
        return usage_error(s->cmd, "--pair and --no-pair exclude each other");
    if (kfd_id_valid(o->partner_id) < 0)
        return usage_error(s->cmd, kf_strerror(KF_ERR_DEVICE_ID));
    if (ds_addr_parse(partner, &io->partner_addr) < 0)
        return usage_error(s->cmd, "--partner wants HOST:PORT, [V6]:PORT or unix:/PATH");
    if (o->pair && !!server == !!via)
        return usage_error(s->cmd, "pairing needs exactly one of --server and --via");
    if (io->tls_split && !server)
        return usage_error(s->cmd, "--tls-split goes with --server");
    if (server && (!io->ca || !io->cert || !io->key))
        return usage_error(s->cmd,
                           "--server needs --ca, --cert and --key (the device certificate)");
    if (server && (ds_addr_parse(server, &io->server_addr) < 0 || io->server_addr.is_unix))
        return usage_error(s->cmd, "--server wants HOST:PORT");
    if (via && (ds_addr_parse(via, &io->via) < 0))
        return usage_error(s->cmd, "--via wants HOST:PORT or unix:/PATH");
    io->use_via = via != NULL;
    if (kek && !o->ignore_limits)
        return usage_error(s->cmd, "--kek only goes with --ignore-own-limits");
    if ((kek_count &&
         (rc = number_opt(s->cmd, "--kek-count", kek_count, KFD_MAX_KEKS, &o->kek_count))) ||
        (lifetime && (rc = number_opt(s->cmd, "--lifetime", lifetime, UINT32_MAX, &o->lifetime))) ||
        (max_uses && (rc = number_opt(s->cmd, "--max-uses", max_uses, UINT32_MAX, &o->max_uses))) ||
        (sessions &&
         (rc = number_opt(s->cmd, "--sessions", sessions, MAX_SESSIONS, &o->sessions))) ||
        (data && (rc = number_opt(s->cmd, "--data", data, KFD_DATA_MAX, &o->data))) ||
        (timeout && (rc = number_opt(s->cmd, "--timeout", timeout, 3600000, &t))) ||
        (kek && (rc = number_opt(s->cmd, "--kek", kek, UINT64_MAX, &o->want_kek))) ||
        (rc = skew_opt(s, skew)))
        return rc;
    io->timeout_ms = t ? (int)t : DEFAULT_TIMEOUT_MS;
    return 0;
}

static int cmd_meter(int argc, char **argv)
{
    struct sim s = {.cmd = "meter"};
    struct meter_io io = {.s = &s, .via_fd = -1, .partner_fd = -1};
    struct meter_opts o = {0};
    struct meter_result r = {0};
    int rc = meter_args(&s, &io, &o, argc, argv);
    if (rc)
        return rc < 0 ? 0 : rc;
    if ((rc = sim_open(&s)))
        return rc;
    kf_buf m3 = {0}, rec = {0};
    if (kf_buf_alloc(&io.rx, 4096, KF_TLS_MESSAGE_MAX, 0) < 0 ||
        kf_buf_alloc(&m3, KFD_MSG_MAX, KFD_MSG_MAX, 0) < 0 ||
        kf_buf_alloc(&rec, KFD_MSG_MAX, KFD_MSG_MAX, 0) < 0) {
        rc = refuse(&s, KF_ERR_NOMEM, "buffers");
        goto out;
    }
    rc = ds_connect(&io.partner_addr, io.timeout_ms, &io.partner_fd);
    if (rc < 0) {
        rc = refuse(&s, rc, "cannot reach the partner");
        goto out;
    }
    if (o.pair)
        meter_pair(&io, &o, &r);
    for (uint64_t i = 1; r.rc == KF_OK && i <= o.sessions; i++)
        meter_session(&io, &o, &r, i, &m3, &rec);
    meter_report(&io, &o, &r);
    rc = r.rc == KF_OK ? 0 : r.rc == KF_ERR_CONNECT ? EXIT_CONNECT : EXIT_REFUSED;
out:
    if (io.partner_fd >= 0)
        close(io.partner_fd);
    if (io.via_fd >= 0)
        close(io.via_fd);
    kf_tlssplit_client_close(io.tls);
    kf_buf_free(&io.rx);
    kf_buf_free(&m3);
    kf_buf_free(&rec);
    sim_free(&s);
    return rc;
}

int main(int argc, char **argv)
{
    /* --tls-split's client session handler: this binary, started by server_connect. */
    if (argc == 2 && strcmp(argv[1], KF_TLSSPLIT_HANDLER_ARG) == 0)
        return kf_tlssplit_handler_main();
    if (argc < 2)
        return usage_error(NULL, "no command");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "install") == 0)
        return cmd_install(argc - 2, argv + 2);
    if (strcmp(cmd, "base") == 0)
        return cmd_base(argc - 2, argv + 2);
    /* "meter show" and "meter print" are the postage device; plain "meter" pairs */
    if (strcmp(cmd, "meter") == 0 && argc >= 3 &&
        (strcmp(argv[2], "show") == 0 || strcmp(argv[2], "print") == 0))
        return ds_meter_main(argc - 2, argv + 2);
    if (strcmp(cmd, "meter") == 0)
        return cmd_meter(argc - 2, argv + 2);
    if (strcmp(cmd, "show") == 0)
        return cmd_show(argc - 2, argv + 2);
    char why[200];
    snprintf(why, sizeof(why), "unknown command '%.100s'", cmd);
    return usage_error(NULL, why);
}
