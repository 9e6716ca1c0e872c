/*
 * kf-relay: the attacker in the middle, for tests (DESIGN §7,
 * docs/device-simulator.md). It accepts a client (a meter), connects
 * upstream (keyfleetd or a base) and forwards messages both ways - each one
 * TTLV item, so KMIP messages and device messages alike - recording them
 * and doing to each what its script says: pass, drop, delay, flip a byte,
 * replace it (replay a recorded one), duplicate it, hold it back (reorder),
 * swap the two parts of a pairing answer, or close the connection.
 *
 * With --upstream-tls it is also the gateway of the seed's Fig. 2: plain
 * TTLV from the device side (the unsecured line 37), KMIP over TLS toward
 * keyfleetd with the device certificate.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "devsim/devsim.h"
#include "keyfleet/log.h"
#include "keyfleet/tls.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define MAX_HELD 16
#define MAX_SCRIPT ((size_t)1024 * 1024)

static const char *const usage_text =
    "Usage: kf-relay --listen ADDR --upstream ADDR [--upstream-tls --ca F --cert F --key F]\n"
    "                [--record DIR] [--script FILE] [--connections N] [--timeout MS]\n"
    "                [--max-message BYTES]\n"
    "A relay for tests: accepts clients on ADDR one at a time, connects each to the\n"
    "upstream ADDR and forwards messages (each one TTLV item: KMIP or device protocol)\n"
    "both ways, doing to each what the script says. 'up' is client -> upstream, 'down'\n"
    "upstream -> client; messages are numbered per direction from 1 over the relay's life.\n\n"
    "  --upstream-tls     KMIP over TLS upstream (a gateway: the client side stays plain),\n"
    "                     verifying the server against --ca and presenting --cert/--key\n"
    "  --record DIR       write every message as received to DIR/<n>-<up|down>.ttlv\n"
    "  --script FILE      one rule per line: <up|down|*> <N|*|@Tag> <action> [args]\n"
    "                       N: the N-th message of that direction; @Tag: messages that\n"
    "                       contain an item with that tag; the first matching rule decides\n"
    "                     actions:\n"
    "                       pass                  forward it (also: no rule matched)\n"
    "                       drop                  forward nothing\n"
    "                       delay MS              wait, then forward\n"
    "                       flip WHERE [XOR]      XOR one byte (default 0x01); WHERE is a\n"
    "                                             byte offset (negative: from the end) or\n"
    "                                             @Tag[#K][+N]: byte N of the value of the\n"
    "                                             K-th item with that tag\n"
    "                       replace FILE          forward FILE's message instead (replay)\n"
    "                       dup                   forward it twice\n"
    "                       hold                  keep it; forward it after the next message\n"
    "                                             of that direction (reorder)\n"
    "                       swap-parts            exchange the two KeyfleetPairParts (SM_A,\n"
    "                                             SM_B) of a pair key answer\n"
    "                       close                 close both connections instead\n"
    "  --connections N    exit after N client connections (default: run until killed)\n"
    "  --timeout MS       to finish reading a started message, and to connect (10000)\n"
    "  --max-message N    largest message accepted (default 1048576)\n"
    "One log line per message and action on stdout. Exit: 0, 1 failure, 2 usage.\n";

struct held {
    kf_buf msg[MAX_HELD];
    size_t n;
};

struct relay {
    struct ds_addr listen_at, upstream;
    bool upstream_tls;
    const char *ca, *cert, *key, *record_dir;
    struct ds_script script;
    int timeout_ms;
    size_t max_message;
    uint64_t count[2];
    struct held held[2];
};

/* One client connection and its upstream. */
struct conn {
    int cfd, ufd;
    ds_tls *tls;
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kf-relay: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

static int send_to(struct conn *c, enum ds_dir dir, const uint8_t *p, size_t n)
{
    if (dir == DS_DOWN)
        return ds_frame_write(c->cfd, p, n);
    return c->tls ? ds_tls_write(c->tls, p, n) : ds_frame_write(c->ufd, p, n);
}

static void record(const struct relay *r, enum ds_dir dir, uint64_t idx, const kf_buf *msg)
{
    char path[PATH_MAX];
    if (!r->record_dir)
        return;
    int n = snprintf(path, sizeof(path), "%s/%llu-%s.ttlv", r->record_dir, (unsigned long long)idx,
                     ds_dir_name(dir));
    if (n < 0 || (size_t)n >= sizeof(path))
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || ds_frame_write(fd, msg->data, msg->len) < 0)
        say("cannot record %s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The message FILE holds: exactly one TTLV item. */
static int load_replacement(const struct relay *r, const char *file, kf_buf *out)
{
    KF_GUARD(ds_file_read(file, r->max_message, 0, out));
    int rc = ds_item_check(out->data, out->len, r->max_message);
    if (rc < 0)
        kf_buf_free(out);
    return rc;
}

static int flip(const struct ds_rule *rule, kf_buf *msg, char *note, size_t cap)
{
    size_t at;
    int rc = ds_locate(msg->data, msg->len, &rule->where, &at);
    if (rc < 0) {
        snprintf(note, cap, "flip found no such byte (%s): forwarded unchanged", kf_errname(rc));
        return rc;
    }
    msg->data[at] ^= rule->xor_mask;
    snprintf(note, cap, "flip byte %zu ^0x%02x", at, rule->xor_mask);
    return KF_OK;
}

/* Forward what was held back in this direction, oldest first. */
static int release_held(struct relay *r, struct conn *c, enum ds_dir dir)
{
    struct held *h = &r->held[dir];
    int rc = KF_OK;
    for (size_t i = 0; i < h->n; i++) {
        if (rc == KF_OK) {
            rc = send_to(c, dir, h->msg[i].data, h->msg[i].len);
            say("%s: released a held message (%zu bytes)%s", ds_dir_name(dir), h->msg[i].len,
                rc < 0 ? ": send failed" : "");
        }
        kf_buf_free(&h->msg[i]);
    }
    h->n = 0;
    return rc;
}

enum verdict { GO_ON, END_CONN };

/* Apply the script to one message; send what it says. */
static enum verdict handle(struct relay *r, struct conn *c, enum ds_dir dir, kf_buf *msg)
{
    uint64_t idx = ++r->count[dir];
    char what[200], note[PATH_MAX + 100];
    ds_describe(msg->data, msg->len, what, sizeof(what));
    record(r, dir, idx, msg);
    const struct ds_rule *rule = ds_script_match(&r->script, dir, idx, msg->data, msg->len);
    enum ds_action action = rule ? rule->action : DS_PASS;
    int rc = KF_OK;
    snprintf(note, sizeof(note), "%s", ds_action_name(action));
    switch (action) {
    case DS_PASS:
    case DS_DROP:
    case DS_CLOSE:
        break;
    case DS_DELAY:
        snprintf(note, sizeof(note), "delay %u ms", (unsigned)rule->delay_ms);
        break;
    case DS_FLIP:
        (void)flip(rule, msg, note, sizeof(note));
        break;
    case DS_REPLACE: {
        kf_buf repl;
        rc = load_replacement(r, rule->file, &repl);
        if (rc < 0) {
            snprintf(note, sizeof(note), "replace: cannot use %s (%s): forwarded unchanged",
                     rule->file, kf_errname(rc));
            rc = KF_OK;
        } else {
            kf_buf_free(msg);
            *msg = repl;
            snprintf(note, sizeof(note), "replace with %s (%zu bytes)", rule->file, msg->len);
        }
        break;
    }
    case DS_DUP:
        break;
    case DS_HOLD: {
        struct held *h = &r->held[dir];
        if (h->n == MAX_HELD) {
            snprintf(note, sizeof(note), "hold: %d already held: forwarded", MAX_HELD);
            action = DS_PASS;
        } else {
            h->msg[h->n++] = *msg;
            memset(msg, 0, sizeof(*msg)); /* ownership moved to the queue */
        }
        break;
    }
    case DS_SWAP_PARTS:
        if (ds_swap_parts(msg->data, msg->len) < 0)
            snprintf(note, sizeof(note),
                     "swap-parts: no two adjacent PairParts: forwarded unchanged");
        break;
    }
    char line[32] = "";
    if (rule)
        snprintf(line, sizeof(line), " (rule line %u)", rule->line);
    say("%s #%llu %s (%zu bytes): %s%s", ds_dir_name(dir), (unsigned long long)idx, what,
        action == DS_HOLD ? r->held[dir].msg[r->held[dir].n - 1].len : msg->len, note, line);
    if (action == DS_CLOSE)
        return END_CONN;
    if (action == DS_DELAY)
        sleep_ms(rule->delay_ms);
    if (action != DS_DROP && action != DS_HOLD) {
        rc = send_to(c, dir, msg->data, msg->len);
        if (rc == KF_OK && action == DS_DUP)
            rc = send_to(c, dir, msg->data, msg->len);
    }
    if (rc == KF_OK && action != DS_HOLD)
        rc = release_held(r, c, dir);
    if (rc < 0) {
        say("%s: cannot forward: %s", ds_dir_name(dir), kf_strerror(rc));
        return END_CONN;
    }
    return GO_ON;
}

static int connect_upstream(const struct relay *r, struct conn *c)
{
    if (r->upstream_tls)
        return ds_tls_connect(r->upstream.host, r->upstream.port, r->ca, r->cert, r->key,
                              r->timeout_ms, &c->tls);
    return ds_connect(&r->upstream, r->timeout_ms, &c->ufd);
}

/* How long a readable TLS upstream may take to show a frame's first bytes
 * before the readiness counts as post-handshake messages only. */
#define UPSTREAM_SETTLE_MS 20

static int read_side(const struct relay *r, struct conn *c, enum ds_dir dir, kf_buf *msg, bool *eof)
{
    /* up: a message from the client; down: from upstream */
    if (dir == DS_UP)
        return ds_frame_read(c->cfd, msg, r->max_message, r->timeout_ms, eof);
    if (c->tls) /* a server that sends session tickets makes the socket readable with no frame */
        return ds_tls_read_frame_within(c->tls, msg, r->max_message, UPSTREAM_SETTLE_MS,
                                        r->timeout_ms, eof);
    return ds_frame_read(c->ufd, msg, r->max_message, r->timeout_ms, eof);
}

static void serve(struct relay *r, struct conn *c, unsigned long n)
{
    kf_buf msg = {0};
    int ufd = c->tls ? ds_tls_fd(c->tls) : c->ufd;
    for (;;) {
        bool from_up = c->tls && ds_tls_pending(c->tls), from_client = false;
        if (!from_up) {
            struct pollfd p[2] = {{.fd = c->cfd, .events = POLLIN}, {.fd = ufd, .events = POLLIN}};
            if (poll(p, 2, -1) < 0) {
                if (errno == EINTR)
                    continue;
                break;
            }
            from_client = p[0].revents != 0;
            from_up = p[1].revents != 0;
        }
        enum ds_dir order[2] = {DS_DOWN, DS_UP};
        bool ready[2] = {from_up, from_client};
        bool end = false;
        for (int k = 0; k < 2 && !end; k++) {
            if (!ready[k])
                continue;
            bool eof;
            if (!msg.data && kf_buf_alloc(&msg, 4096, r->max_message, 0) < 0)
                return;
            int rc = read_side(r, c, order[k], &msg, &eof);
            if (rc == DS_TLS_NOTHING)
                continue; /* tickets only: wait on both sides again */
            if (rc < 0) {
                say("connection %lu: %s %s", n, order[k] == DS_UP ? "client" : "upstream",
                    eof ? "closed" : kf_strerror(rc));
                end = true;
                break;
            }
            end = handle(r, c, order[k], &msg) == END_CONN;
        }
        if (end)
            break;
    }
    kf_buf_free(&msg);
}

static int run(struct relay *r, uint64_t connections)
{
    int lfd;
    char where[400], up[400];
    int rc = ds_listen(&r->listen_at, &lfd);
    if (rc < 0) {
        fprintf(stderr, "kf-relay: cannot listen: %s (%s)\n", kf_strerror(rc), kf_errname(rc));
        return EXIT_FAILED;
    }
    if (!r->listen_at.is_unix)
        r->listen_at.port = ds_bound_port(lfd);
    ds_addr_format(&r->listen_at, where, sizeof(where));
    ds_addr_format(&r->upstream, up, sizeof(up));
    say("listening on %s, upstream %s%s, %zu script rules", where, up,
        r->upstream_tls ? " (KMIP over TLS)" : "", r->script.n);
    for (unsigned long n = 1; !connections || n <= connections; n++) {
        struct conn c = {.cfd = -1, .ufd = -1};
        if (ds_accept(lfd, -1, &c.cfd) < 0) {
            n--;
            continue;
        }
        rc = connect_upstream(r, &c);
        if (rc < 0) {
            say("connection %lu: cannot reach upstream %s: %s (%s)", n, up, kf_strerror(rc),
                kf_errname(rc));
        } else {
            say("connection %lu: open", n);
            serve(r, &c, n);
        }
        close(c.cfd);
        if (c.ufd >= 0)
            close(c.ufd);
        ds_tls_close(c.tls);
        say("connection %lu: closed", n);
    }
    close(lfd);
    return 0;
}

static int usage_error(const char *why)
{
    fprintf(stderr, "kf-relay: %s\n(see kf-relay --help)\n", why);
    return EXIT_USAGE;
}

static int load_script(struct relay *r, const char *path)
{
    kf_buf text;
    unsigned line = 0;
    char why[300];
    int rc = ds_file_read(path, MAX_SCRIPT, 0, &text);
    if (rc < 0) {
        fprintf(stderr, "kf-relay: cannot read the script %s: %s\n", path, kf_strerror(rc));
        return EXIT_USAGE;
    }
    rc = ds_script_parse((const char *)text.data, text.len, &r->script, &line, why, sizeof(why));
    kf_buf_free(&text);
    if (rc < 0) {
        fprintf(stderr, "kf-relay: %s line %u: %s\n", path, line, why);
        return EXIT_USAGE;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct relay r = {.timeout_ms = 10000, .max_message = KF_TLS_MESSAGE_MAX};
    const char *listen_at = NULL, *upstream = NULL, *script = NULL;
    uint64_t connections = 0, v;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (strcmp(a, "--upstream-tls") == 0) {
            r.upstream_tls = true;
            continue;
        }
        if (!val) {
            char why[300];
            snprintf(why, sizeof(why), "%.200s needs a value, or is unknown", a);
            return usage_error(why);
        }
        i++;
        if (strcmp(a, "--listen") == 0)
            listen_at = val;
        else if (strcmp(a, "--upstream") == 0)
            upstream = val;
        else if (strcmp(a, "--ca") == 0)
            r.ca = val;
        else if (strcmp(a, "--cert") == 0)
            r.cert = val;
        else if (strcmp(a, "--key") == 0)
            r.key = val;
        else if (strcmp(a, "--record") == 0)
            r.record_dir = val;
        else if (strcmp(a, "--script") == 0)
            script = val;
        else if (strcmp(a, "--connections") == 0 && ds_parse_u64(val, UINT32_MAX, &v) == 0)
            connections = v;
        else if (strcmp(a, "--timeout") == 0 && ds_parse_u64(val, 3600000, &v) == 0 && v > 0)
            r.timeout_ms = (int)v;
        else if (strcmp(a, "--max-message") == 0 &&
                 ds_parse_u64(val, KF_TLS_MESSAGE_MAX, &v) == 0 && v >= 16)
            r.max_message = (size_t)v;
        else {
            char why[300];
            snprintf(why, sizeof(why), "unknown option or bad value: %.100s %.100s", a, val);
            return usage_error(why);
        }
    }
    if (!listen_at || !upstream)
        return usage_error("--listen and --upstream are required");
    if (ds_addr_parse(listen_at, &r.listen_at) < 0)
        return usage_error("--listen wants HOST:PORT, [V6]:PORT or unix:/PATH");
    if (ds_addr_parse(upstream, &r.upstream) < 0 || (!r.upstream.is_unix && !r.upstream.port))
        return usage_error("--upstream wants HOST:PORT, [V6]:PORT or unix:/PATH");
    if (r.upstream_tls && (!r.ca || !r.cert || !r.key || r.upstream.is_unix))
        return usage_error("--upstream-tls needs HOST:PORT and --ca, --cert and --key");
    if (!r.upstream_tls && (r.ca || r.cert || r.key))
        return usage_error("--ca, --cert and --key go with --upstream-tls");
    if (r.record_dir && mkdir(r.record_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "kf-relay: cannot create %s: %s\n", r.record_dir, strerror(errno));
        return EXIT_USAGE;
    }
    int rc = script ? load_script(&r, script) : 0;
    if (rc == 0)
        rc = run(&r, connections);
    ds_script_free(&r.script);
    for (int d = 0; d < 2; d++)
        for (size_t i = 0; i < r.held[d].n; i++)
            kf_buf_free(&r.held[d].msg[i]);
    return rc;
}
