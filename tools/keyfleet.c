/*
 * keyfleet: the administration CLI. Talks KMIP TTLV to keyfleetd over the
 * local admin socket. Human-readable tables by default, --json for scripts.
 * Exit codes: 0 success, 1 the server refused (reason on stderr), 2 usage,
 * 3 cannot reach the server.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "keyfleet/file.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/mfg.h"
#include "keyfleet/secmem.h"
#include "keyfleet/server.h"
#include "keyfleet/tls.h"
#include "keyfleet/tlssplit.h"
#include "keyfleet/ttlv.h"

/* Optional fields: a missing or mistyped one leaves the default. */
static void ignore(int rc)
{
    (void)rc;
}

struct cli {
    char socket[4200];
    bool json;
    kf_arena *arena;
    /* Remote mode: KMIP over TLS with a client certificate instead of the socket. */
    const char *server, *ca, *cert, *key;
    bool tls_split; /* --tls-split: the handshake in a client session handler process */
};

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_CONNECT 3

static const char *const usage_text =
    "Usage: keyfleet [--dir DIR | --socket PATH] [--json] COMMAND [ARGS]\n"
    "Administer a keyfleetd over its local admin socket.\n\n"
    "Commands:\n"
    "  status                              server state: initialised, sealed, backend\n"
    "  init [--shares N] [--threshold M]   make the root key, print N operator shares\n"
    "       [--pin-file F]                 (PKCS#11 backend: the token user PIN instead)\n"
    "  unseal [--share-file F]             give one share (or the PIN); reads stdin if no file\n"
    "  seal                                wipe the root and domain keys from memory\n"
    "  domain create NAME [--parent P]     make a security domain (or sub-domain of P)\n"
    "  domain list\n"
    "  key create --domain D [--alg A] [--length BITS] [--name N] [--usage U,U...]\n"
    "                                      A: aes (default), hmac-sha256, hmac-sha384,\n"
    "                                      hmac-sha512, hmac-sha1, secret; U: encrypt,\n"
    "                                      decrypt, wrap, unwrap, mac-generate, mac-verify,\n"
    "                                      sign, verify, derive\n"
    "  key list --domain D [--state S] [--offset N] [--limit N]\n"
    "  key show UID [--export]             attributes; --export also prints the key (hex)\n"
    "  key activate UID\n"
    "  key revoke UID [--reason R] [--message TEXT]\n"
    "                                      R: unspecified, compromise, ca-compromise,\n"
    "                                      affiliation-changed, superseded, cessation,\n"
    "                                      privilege-withdrawn\n"
    "  key destroy UID                     (revoke an active key first)\n"
    "  device register ID --domain D       a device and its master key (MKEK) in domain D\n"
    "  device export ID -o FILE            its installation package, ONCE (a second export\n"
    "                                      is refused); FILE is new, mode 0600, never replaced\n"
    "  device show ID                      domain, pairing counter, exported, last KEK ID,\n"
    "                                      acknowledgements pending\n"
    "  mfg setup --domain D --kind vendor|postal|earth [--country CC]\n"
    "                                      set a domain up for manufacturing: its authority\n"
    "                                      M, Oak and Brass (postal: its country)\n"
    "  mfg certs --domain D                the domain's role certificates, checked under M\n"
    "  mfg status --domain D --key-id N|--msn M\n"
    "                                      a device key's archive record and event times\n"
    "  mfg retire --domain D --key-id N    take a key out of service (Obsolete)\n"
    "  audit show [--from SEQ] [--limit N]\n"
    "  audit verify                        check the hash chain, MACs and order\n\n"
    "Options:\n"
    "  --dir DIR       data directory of the server (default: $KEYFLEET_DIR or ./data)\n"
    "  --socket PATH   admin socket (default: DIR/keyfleetd.sock)\n"
    "  --server HOST:PORT --ca FILE --cert FILE --key FILE\n"
    "                  remote mode: KMIP over TLS to HOST:PORT with a client certificate;\n"
    "                  what is allowed depends on the roles the server maps it to\n"
    "  --tls-split     remote mode: the TLS handshake runs in a separate session handler\n"
    "                  process that alone holds the client key and the TLS secrets; this\n"
    "                  process gets only the traffic keys (docs/tls-split.md)\n"
    "  --json          machine-readable output\n"
    "  -h, --help      this text (also: keyfleet COMMAND --help)\n";

static int usage_error(const char *why)
{
    fprintf(stderr, "keyfleet: %s\n(see keyfleet --help)\n", why);
    return EXIT_USAGE;
}

/* ---- JSON and table output ---- */
static void json_string(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void format_time(int64_t secs, char *out, size_t len)
{
    if (!secs) {
        snprintf(out, len, "-");
        return;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- Requests ---- */
static kf_ttlv *new_request(struct cli *c, uint32_t op, kf_ttlv **payload)
{
    return kf_ttlv_request(c->arena, 2, 1, op, payload);
}

/* One request over TLS; the connection lives for one command. */
static int remote_call(struct cli *c, const kf_buf *req, kf_buf *resp)
{
    char host[256];
    const char *colon = strrchr(c->server, ':');
    if (!colon || colon == c->server || (size_t)(colon - c->server) >= sizeof(host)) {
        fprintf(stderr, "keyfleet: --server wants HOST:PORT\n");
        return KF_ERR_USAGE;
    }
    memcpy(host, c->server, (size_t)(colon - c->server));
    host[colon - c->server] = 0;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [v6]:port */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    long port = strtol(colon + 1, NULL, 10);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "keyfleet: bad port in --server\n");
        return KF_ERR_USAGE;
    }
    /* --tls-split: the handler is this binary, exec'd fresh (see main). */
    struct kf_tlssplit_client_config tc = {.ca_file = c->ca,
                                           .cert_file = c->cert,
                                           .key_file = c->key,
                                           .exec_path = "/proc/self/exe",
                                           .monolithic = !c->tls_split};
    kf_tlssplit_client *t;
    int rc = kf_tlssplit_client_connect(host, (uint16_t)port, &tc, &t);
    if (rc < 0) {
        fprintf(stderr, "keyfleet: cannot reach %s over TLS: %s\n", c->server, kf_strerror(rc));
        return rc;
    }
    rc = kf_tlssplit_client_call(t, req->data, req->len, resp);
    if (rc < 0)
        fprintf(stderr, "keyfleet: no answer from %s: %s\n", c->server, kf_strerror(rc));
    kf_tlssplit_client_close(t);
    return rc;
}

/* Send, receive, check the result. *out gets the Response Payload. */
static int call(struct cli *c, kf_ttlv *msg, const kf_ttlv **out)
{
    kf_buf req = {0}, resp = {0};
    int fd = -1, rc, exit_code = EXIT_REFUSED;
    if (!msg || kf_buf_alloc(&req, 1024, KF_FRAME_MAX, KF_BUF_SECRET) < 0 ||
        kf_buf_alloc(&resp, 1024, KF_FRAME_MAX, KF_BUF_SECRET) < 0 ||
        kf_ttlv_encode(msg, &req) < 0) {
        fprintf(stderr, "keyfleet: cannot build the request\n");
        goto out;
    }
    if (c->server) {
        rc = remote_call(c, &req, &resp);
        if (rc < 0) {
            exit_code = EXIT_CONNECT;
            goto out;
        }
    } else if ((rc = kf_client_connect(c->socket, &fd)) < 0) {
        fprintf(stderr, "keyfleet: %s (socket %s)\n", kf_strerror(rc), c->socket);
        exit_code = EXIT_CONNECT;
        goto out;
    } else if ((rc = kf_client_call(fd, req.data, req.len, &resp)) < 0) {
        fprintf(stderr, "keyfleet: no answer from keyfleetd: %s\n", kf_strerror(rc));
        exit_code = EXIT_CONNECT;
        goto out;
    }
    kf_ttlv *r;
    /* Listings are long: a page of 500 objects is ~7000 items. */
    struct kf_ttlv_limits lim = {.max_items = 100000, .max_total = KF_FRAME_MAX};
    if ((rc = kf_ttlv_decode(resp.data, resp.len, &lim, c->arena, &r)) < 0) {
        fprintf(stderr, "keyfleet: malformed answer: %s\n", kf_strerror(rc));
        goto out;
    }
    const kf_ttlv *bi = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
    uint32_t status = 1, reason = 0;
    if (kf_ttlv_get_enum(kf_ttlv_find(bi, KMIP_TAG_RESULT_STATUS), &status) < 0) {
        fprintf(stderr, "keyfleet: the answer has no result status\n");
        goto out;
    }
    if (status != KMIP_RESULT_STATUS_SUCCESS) {
        const char *m = NULL;
        size_t mlen = 0;
        ignore(kf_ttlv_get_enum(kf_ttlv_find(bi, KMIP_TAG_RESULT_REASON), &reason));
        ignore(kf_ttlv_get_text(kf_ttlv_find(bi, KMIP_TAG_RESULT_MESSAGE), &m, &mlen));
        const char *rname = kf_ttlv_enum_name(KMIP_TAG_RESULT_REASON, reason);
        if (c->json) {
            printf("{\"ok\":false,\"reason\":");
            json_string(rname ? rname : "?", strlen(rname ? rname : "?"));
            printf(",\"message\":");
            json_string(m ? m : "", mlen);
            printf("}\n");
        }
        fprintf(stderr, "keyfleet: refused (%s): %.*s\n", rname ? rname : "?", (int)mlen,
                m ? m : "");
        goto out;
    }
    *out = kf_ttlv_find(bi, KMIP_TAG_RESPONSE_PAYLOAD);
    exit_code = 0;
out:
    if (fd >= 0)
        close(fd);
    kf_buf_free(&req);
    kf_buf_free(&resp);
    return exit_code;
}

static const char *text_of(const kf_ttlv *parent, uint32_t tag)
{
    const char *s;
    size_t n;
    return kf_ttlv_get_text(kf_ttlv_find(parent, tag), &s, &n) == KF_OK ? s : "";
}
static int64_t long_of(const kf_ttlv *parent, uint32_t tag)
{
    int64_t v = 0;
    if (kf_ttlv_get_long(kf_ttlv_find(parent, tag), &v) < 0)
        ignore(kf_ttlv_get_datetime(kf_ttlv_find(parent, tag), &v));
    return v;
}
static int32_t int_of(const kf_ttlv *parent, uint32_t tag)
{
    int32_t v = 0;
    ignore(kf_ttlv_get_int(kf_ttlv_find(parent, tag), &v));
    return v;
}
static bool bool_of(const kf_ttlv *parent, uint32_t tag)
{
    bool v = false;
    ignore(kf_ttlv_get_bool(kf_ttlv_find(parent, tag), &v));
    return v;
}
static const char *enum_of(const kf_ttlv *parent, uint32_t tag)
{
    uint32_t v;
    if (kf_ttlv_get_enum(kf_ttlv_find(parent, tag), &v) < 0)
        return "";
    const char *n = kf_ttlv_enum_name(tag, v);
    return n ? n : "?";
}

/* ---- Option parsing for subcommands: --name value pairs ---- */
static const char *opt_value(int argc, char **argv, const char *name)
{
    for (int i = 0; i < argc - 1; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return NULL;
}
static bool opt_flag(int argc, char **argv, const char *name)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return true;
    return false;
}
/*
 * Every --option must be one of the allowed; flags take no value. When
 * positional is 1 the first argument is the one positional (NAME or UID).
 */
static int check_opts(int argc, char **argv, const char *const *with_value,
                      const char *const *flags, int positional)
{
    int i = 0;
    if (positional) {
        if (argc < 1 || strncmp(argv[0], "--", 2) == 0)
            return usage_error("missing argument");
        i = 1;
    }
    for (; i < argc; i++) {
        bool known = false;
        if (strncmp(argv[i], "--", 2) != 0)
            return usage_error("unexpected argument");
        for (const char *const *o = with_value; o && *o; o++)
            if (strcmp(argv[i], *o) == 0) {
                if (i + 1 >= argc)
                    return usage_error("option needs a value");
                i++;
                known = true;
                break;
            }
        for (const char *const *o = flags; !known && o && *o; o++)
            known = strcmp(argv[i], *o) == 0;
        if (!known) {
            fprintf(stderr, "keyfleet: unknown option %s\n", argv[i]);
            return EXIT_USAGE;
        }
    }
    return 0;
}

/* ---- Commands ---- */
static int cmd_status(struct cli *c, int argc, char **argv)
{
    int rc = check_opts(argc, argv, NULL, NULL, 0);
    kf_ttlv *p, *m = new_request(c, KMIP_OP_KEYFLEET_STATUS, &p);
    const kf_ttlv *r;
    if (rc || (rc = call(c, m, &r)))
        return rc;
    bool init = bool_of(r, KMIP_TAG_KEYFLEET_INITIALISED), sealed = bool_of(r, KMIP_TAG_KEYFLEET_SEALED);
    const char *backend = text_of(r, KMIP_TAG_KEYFLEET_BACKEND);
    if (c->json) {
        printf("{\"initialised\":%s,\"sealed\":%s,\"dev\":%s,\"backend\":\"%s\",\"threshold\":%d,"
               "\"shares\":%d,\"shares_received\":%d,\"domains\":%d,\"audit_records\":%lld}\n",
               init ? "true" : "false", sealed ? "true" : "false",
               bool_of(r, KMIP_TAG_KEYFLEET_DEV_MODE) ? "true" : "false", backend,
               int_of(r, KMIP_TAG_KEYFLEET_THRESHOLD), int_of(r, KMIP_TAG_KEYFLEET_SHARE_COUNT),
               int_of(r, KMIP_TAG_KEYFLEET_SHARES_RECEIVED), int_of(r, KMIP_TAG_KEYFLEET_OBJECT_COUNT),
               (long long)long_of(r, KMIP_TAG_KEYFLEET_AUDIT_RECORDS));
        return 0;
    }
    printf("initialised    %s\n", init ? "yes" : "no (run: keyfleet init)");
    printf("sealed         %s\n", !init ? "-" : sealed ? "yes (run: keyfleet unseal)" : "no");
    printf("backend        %s%s\n", backend, bool_of(r, KMIP_TAG_KEYFLEET_DEV_MODE) ? " (dev mode)" : "");
    if (strcmp(backend, "soft") == 0 && init)
        printf("threshold      %d of %d shares (%d received)\n", int_of(r, KMIP_TAG_KEYFLEET_THRESHOLD),
               int_of(r, KMIP_TAG_KEYFLEET_SHARE_COUNT), int_of(r, KMIP_TAG_KEYFLEET_SHARES_RECEIVED));
    printf("domains        %d\n", int_of(r, KMIP_TAG_KEYFLEET_OBJECT_COUNT));
    printf("audit records  %lld\n", (long long)long_of(r, KMIP_TAG_KEYFLEET_AUDIT_RECORDS));
    return 0;
}

static int read_secret_file(const char *path, char *out, size_t len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
    if (!f)
        return -1;
    bool ok = fgets(out, (int)len, f) != NULL;
    if (f != stdin)
        fclose(f);
    out[strcspn(out, "\r\n")] = 0;
    return ok && out[0] ? 0 : -1;
}

/* Read a share or PIN from the terminal without echo, or from stdin. */
static int read_secret(const char *prompt, char *out, size_t len)
{
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fprintf(stderr, "%s", prompt);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    int rc = read_secret_file("-", out, len);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    return rc;
}

static int cmd_init(struct cli *c, int argc, char **argv)
{
    static const char *const vals[] = {"--shares", "--threshold", "--pin-file", NULL};
    int rc = check_opts(argc, argv, vals, NULL, 0);
    if (rc)
        return rc;
    const char *pin_file = opt_value(argc, argv, "--pin-file");
    int n = atoi(opt_value(argc, argv, "--shares") ? opt_value(argc, argv, "--shares") : "5");
    int m = atoi(opt_value(argc, argv, "--threshold") ? opt_value(argc, argv, "--threshold") : "3");
    kf_ttlv *p, *msg = new_request(c, KMIP_OP_KEYFLEET_INIT, &p);
    char pin[256] = "";
    if (pin_file) {
        if (read_secret_file(pin_file, pin, sizeof(pin)) < 0)
            return usage_error("cannot read the PIN file");
        kf_ttlv_add_text(c->arena, p, KMIP_TAG_KEYFLEET_PIN, pin);
        kf_wipe(pin, sizeof(pin));
    } else {
        if (n < 1 || n > 255 || m < 1 || m > n)
            return usage_error("need 1 <= --threshold <= --shares <= 255");
        kf_ttlv_add_int(c->arena, p, KMIP_TAG_KEYFLEET_THRESHOLD, m);
        kf_ttlv_add_int(c->arena, p, KMIP_TAG_KEYFLEET_SHARE_COUNT, n);
    }
    const kf_ttlv *r;
    if ((rc = call(c, msg, &r)))
        return rc;
    if (pin_file) {
        printf(c->json ? "{\"initialised\":true}\n" : "Root key generated in the PKCS#11 token.\n");
        return 0;
    }
    if (c->json)
        printf("{\"threshold\":%d,\"shares\":[", m);
    else
        printf("Root key made and split into %d shares; any %d unseal the server.\n"
               "Give each share to a different custodian and keep no copy together.\n"
               "They are shown once and stored nowhere.\n\n", n, m);
    int i = 0;
    for (const kf_ttlv *s = kf_ttlv_find(r, KMIP_TAG_KEYFLEET_SHARE); s;
         s = kf_ttlv_find_next(s, KMIP_TAG_KEYFLEET_SHARE), i++) {
        const char *t;
        size_t len;
        if (kf_ttlv_get_text(s, &t, &len) < 0)
            continue;
        if (c->json) {
            printf(i ? "," : "");
            json_string(t, len);
        } else {
            printf("share %d: %.*s\n", i + 1, (int)len, t);
        }
    }
    printf(c->json ? "]}\n" : "\nThe server is sealed: run 'keyfleet unseal' %d times.\n", m);
    return 0;
}

static int cmd_unseal(struct cli *c, int argc, char **argv)
{
    static const char *const vals[] = {"--share-file", "--pin-file", NULL};
    int rc = check_opts(argc, argv, vals, NULL, 0);
    if (rc)
        return rc;
    const char *file = opt_value(argc, argv, "--share-file");
    const char *pin_file = opt_value(argc, argv, "--pin-file");
    char secret[256];
    if (pin_file ? read_secret_file(pin_file, secret, sizeof(secret))
        : file   ? read_secret_file(file, secret, sizeof(secret))
                 : read_secret("Share (or PKCS#11 PIN): ", secret, sizeof(secret)))
        return usage_error("no share given");
    kf_ttlv *p, *msg = new_request(c, KMIP_OP_KEYFLEET_UNSEAL, &p);
    kf_ttlv_add_text(c->arena, p, pin_file ? KMIP_TAG_KEYFLEET_PIN : KMIP_TAG_KEYFLEET_SHARE, secret);
    kf_wipe(secret, sizeof(secret));
    const kf_ttlv *r;
    if ((rc = call(c, msg, &r)))
        return rc;
    bool sealed = bool_of(r, KMIP_TAG_KEYFLEET_SEALED);
    int got = int_of(r, KMIP_TAG_KEYFLEET_SHARES_RECEIVED), need = int_of(r, KMIP_TAG_KEYFLEET_THRESHOLD);
    if (c->json)
        printf("{\"sealed\":%s,\"shares_received\":%d,\"threshold\":%d}\n", sealed ? "true" : "false",
               got, need);
    else if (sealed)
        printf("Share accepted: %d of %d. Still sealed.\n", got, need);
    else
        printf("Unsealed.\n");
    return 0;
}

static int simple_op(struct cli *c, int argc, char **argv, uint32_t op, const char *done_text)
{
    int rc = check_opts(argc, argv, NULL, NULL, 0);
    kf_ttlv *p, *msg = new_request(c, op, &p);
    const kf_ttlv *r;
    if (rc || (rc = call(c, msg, &r)))
        return rc;
    printf(c->json ? "{\"ok\":true}\n" : "%s\n", done_text);
    return 0;
}

static int cmd_domain(struct cli *c, int argc, char **argv)
{
    if (argc < 1)
        return usage_error("domain create NAME | domain list");
    kf_ttlv *p, *msg;
    const kf_ttlv *r;
    int rc;
    if (strcmp(argv[0], "create") == 0) {
        static const char *const vals[] = {"--parent", NULL};
        if ((rc = check_opts(argc - 1, argv + 1, vals, NULL, 1)))
            return rc;
        msg = new_request(c, KMIP_OP_KEYFLEET_DOMAIN_CREATE, &p);
        kf_ttlv_add_text(c->arena, p, KMIP_TAG_KEYFLEET_DOMAIN, argv[1]);
        const char *parent = opt_value(argc - 1, argv + 1, "--parent");
        if (parent)
            kf_ttlv_add_text(c->arena, p, KMIP_TAG_KEYFLEET_PARENT_DOMAIN, parent);
        if ((rc = call(c, msg, &r)))
            return rc;
        if (c->json) {
            printf("{\"domain\":");
            json_string(argv[1], strlen(argv[1]));
            printf("}\n");
        } else {
            printf("Domain %s created.\n", argv[1]);
        }
        return 0;
    }
    if (strcmp(argv[0], "list") != 0)
        return usage_error("domain create NAME | domain list");
    if ((rc = check_opts(argc - 1, argv + 1, NULL, NULL, 0)))
        return rc;
    msg = new_request(c, KMIP_OP_KEYFLEET_DOMAIN_LIST, &p);
    if ((rc = call(c, msg, &r)))
        return rc;
    if (!c->json)
        printf("%-6s %-24s %-24s %-10s %s\n", "ID", "DOMAIN", "PARENT", "LAST KEY", "CREATED");
    else
        printf("[");
    int i = 0;
    for (const kf_ttlv *d = kf_ttlv_find(r, KMIP_TAG_KEYFLEET_DOMAIN_INFO); d;
         d = kf_ttlv_find_next(d, KMIP_TAG_KEYFLEET_DOMAIN_INFO), i++) {
        int64_t parent_id = long_of(d, KMIP_TAG_KEYFLEET_FROM);
        const char *parent = "-";
        for (const kf_ttlv *e = kf_ttlv_find(r, KMIP_TAG_KEYFLEET_DOMAIN_INFO); parent_id && e;
             e = kf_ttlv_find_next(e, KMIP_TAG_KEYFLEET_DOMAIN_INFO))
            if (long_of(e, KMIP_TAG_KEYFLEET_AUDIT_SEQ) == parent_id)
                parent = text_of(e, KMIP_TAG_KEYFLEET_DOMAIN);
        char created[32];
        format_time(long_of(d, KMIP_TAG_INITIAL_DATE), created, sizeof(created));
        const char *name = text_of(d, KMIP_TAG_KEYFLEET_DOMAIN);
        if (c->json) {
            printf("%s{\"id\":%lld,\"name\":", i ? "," : "", (long long)long_of(d, KMIP_TAG_KEYFLEET_AUDIT_SEQ));
            json_string(name, strlen(name));
            printf(",\"parent\":");
            if (parent_id)
                json_string(parent, strlen(parent));
            else
                printf("null");
            printf(",\"last_key_id\":%lld,\"created\":\"%s\"}",
                   (long long)long_of(d, KMIP_TAG_KEYFLEET_KEY_ID), created);
        } else {
            printf("%-6lld %-24s %-24s %-10lld %s\n", (long long)long_of(d, KMIP_TAG_KEYFLEET_AUDIT_SEQ),
                   name, parent, (long long)long_of(d, KMIP_TAG_KEYFLEET_KEY_ID), created);
        }
    }
    if (c->json)
        printf("]\n");
    return 0;
}

static const struct {
    const char *name;
    uint32_t bit;
} usage_names[] = {
    {"sign", KMIP_USAGE_SIGN},           {"verify", KMIP_USAGE_VERIFY},
    {"encrypt", KMIP_USAGE_ENCRYPT},     {"decrypt", KMIP_USAGE_DECRYPT},
    {"wrap", KMIP_USAGE_WRAP_KEY},       {"unwrap", KMIP_USAGE_UNWRAP_KEY},
    {"mac-generate", KMIP_USAGE_MAC_GENERATE}, {"mac-verify", KMIP_USAGE_MAC_VERIFY},
    {"derive", KMIP_USAGE_DERIVE_KEY},
};

static int parse_usage(const char *list, uint32_t *mask)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", list);
    *mask = 0;
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        bool found = false;
        for (size_t i = 0; i < sizeof(usage_names) / sizeof(usage_names[0]); i++)
            if (strcmp(t, usage_names[i].name) == 0) {
                *mask |= usage_names[i].bit;
                found = true;
            }
        if (!found) {
            fprintf(stderr, "keyfleet: unknown usage %s\n", t);
            return EXIT_USAGE;
        }
    }
    return 0;
}

static void usage_text_of(uint32_t mask, char *out, size_t len)
{
    out[0] = 0;
    for (size_t i = 0; i < sizeof(usage_names) / sizeof(usage_names[0]); i++)
        if (mask & usage_names[i].bit) {
            size_t n = strlen(out);
            snprintf(out + n, len - n, "%s%s", n ? "," : "", usage_names[i].name);
        }
    if (!out[0])
        snprintf(out, len, "-");
}

static const struct {
    const char *name;
    uint32_t alg;
    int32_t length;
} alg_names[] = {
    {"aes", KMIP_ALG_AES, 256},
    {"hmac-sha1", KMIP_ALG_HMAC_SHA1, 160},
    {"hmac-sha256", KMIP_ALG_HMAC_SHA256, 256},
    {"hmac-sha384", KMIP_ALG_HMAC_SHA384, 384},
    {"hmac-sha512", KMIP_ALG_HMAC_SHA512, 512},
    {"secret", 0, 256},
};

static int cmd_key_create(struct cli *c, int argc, char **argv)
{
    static const char *const vals[] = {"--domain", "--alg", "--length", "--name", "--usage", NULL};
    int rc = check_opts(argc, argv, vals, NULL, 0);
    if (rc)
        return rc;
    const char *domain = opt_value(argc, argv, "--domain");
    const char *alg = opt_value(argc, argv, "--alg") ? opt_value(argc, argv, "--alg") : "aes";
    const char *name = opt_value(argc, argv, "--name");
    const char *usage = opt_value(argc, argv, "--usage");
    if (!domain)
        return usage_error("key create needs --domain");
    size_t ai = 0;
    while (ai < sizeof(alg_names) / sizeof(alg_names[0]) && strcmp(alg_names[ai].name, alg) != 0)
        ai++;
    if (ai == sizeof(alg_names) / sizeof(alg_names[0]))
        return usage_error("unknown --alg");
    int32_t length = opt_value(argc, argv, "--length") ? atoi(opt_value(argc, argv, "--length"))
                                                       : alg_names[ai].length;
    uint32_t mask = alg_names[ai].alg == KMIP_ALG_AES ? KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT
                    : alg_names[ai].alg ? KMIP_USAGE_MAC_GENERATE | KMIP_USAGE_MAC_VERIFY
                                        : KMIP_USAGE_DERIVE_KEY;
    if (usage && (rc = parse_usage(usage, &mask)))
        return rc;
    kf_ttlv *p, *msg = new_request(c, KMIP_OP_CREATE, &p);
    kf_ttlv_add_enum(c->arena, p, KMIP_TAG_OBJECT_TYPE,
                     alg_names[ai].alg ? KMIP_OBJ_SYMMETRIC_KEY : KMIP_OBJ_SECRET_DATA);
    kf_ttlv *at = kf_ttlv_struct(c->arena, p, KMIP_TAG_ATTRIBUTES);
    if (alg_names[ai].alg)
        kf_ttlv_add_enum(c->arena, at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, alg_names[ai].alg);
    kf_ttlv_add_int(c->arena, at, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, length);
    kf_ttlv_add_int(c->arena, at, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, (int32_t)mask);
    kf_ttlv_add_text(c->arena, at, KMIP_TAG_KEYFLEET_DOMAIN, domain);
    if (name) {
        kf_ttlv *n = kf_ttlv_struct(c->arena, at, KMIP_TAG_NAME);
        kf_ttlv_add_text(c->arena, n, KMIP_TAG_NAME_VALUE, name);
        kf_ttlv_add_enum(c->arena, n, KMIP_TAG_NAME_TYPE, 1);
    }
    const kf_ttlv *r;
    if ((rc = call(c, msg, &r)))
        return rc;
    const char *uid = text_of(r, KMIP_TAG_UNIQUE_IDENTIFIER);
    if (c->json) {
        printf("{\"uid\":");
        json_string(uid, strlen(uid));
        printf("}\n");
    } else {
        printf("%s\n", uid);
    }
    return 0;
}

/* One object from a KMIP 2.x Attributes structure. */
static void print_object(struct cli *c, const kf_ttlv *at, bool first, bool table)
{
    char usage[128], dates[7][32];
    uint32_t mask = (uint32_t)int_of(at, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK);
    usage_text_of(mask, usage, sizeof(usage));
    const uint32_t date_tags[7] = {KMIP_TAG_INITIAL_DATE,    KMIP_TAG_ACTIVATION_DATE,
                                   KMIP_TAG_DEACTIVATION_DATE, KMIP_TAG_COMPROMISE_DATE,
                                   KMIP_TAG_COMPROMISE_OCCURRENCE_DATE, KMIP_TAG_DESTROY_DATE,
                                   KMIP_TAG_LAST_CHANGE_DATE};
    static const char *const date_names[7] = {"initial",     "activation", "deactivation",
                                              "compromise",  "compromise_occurrence",
                                              "destroy",     "last_change"};
    for (int i = 0; i < 7; i++)
        format_time(long_of(at, date_tags[i]), dates[i], sizeof(dates[i]));
    const char *uid = text_of(at, KMIP_TAG_UNIQUE_IDENTIFIER);
    const char *name = text_of(kf_ttlv_find(at, KMIP_TAG_NAME), KMIP_TAG_NAME_VALUE);
    const char *alg = enum_of(at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM);
    const char *revoked = enum_of(kf_ttlv_find(at, KMIP_TAG_REVOCATION_REASON),
                                  KMIP_TAG_REVOCATION_REASON_CODE);
    if (c->json) {
        printf("%s{\"uid\":", first ? "" : ",");
        json_string(uid, strlen(uid));
        printf(",\"key_id\":%lld,\"type\":\"%s\",\"state\":\"%s\",\"algorithm\":\"%s\",\"length\":%d,"
               "\"usage\":\"%s\",\"name\":",
               (long long)long_of(at, KMIP_TAG_KEYFLEET_KEY_ID), enum_of(at, KMIP_TAG_OBJECT_TYPE),
               enum_of(at, KMIP_TAG_STATE), alg, int_of(at, KMIP_TAG_CRYPTOGRAPHIC_LENGTH), usage);
        json_string(name, strlen(name));
        for (int i = 0; i < 7; i++)
            printf(",\"%s_date\":\"%s\"", date_names[i], dates[i]);
        printf(",\"revocation_reason\":\"%s\"}", revoked);
    } else if (table) {
        printf("%-28s %-14s %-12s %-12s %-6d %-20s %s\n", uid, enum_of(at, KMIP_TAG_OBJECT_TYPE),
               enum_of(at, KMIP_TAG_STATE), *alg ? alg : "-",
               int_of(at, KMIP_TAG_CRYPTOGRAPHIC_LENGTH), *name ? name : "-", dates[0]);
    } else {
        printf("uid                %s\ntype               %s\nstate              %s\n", uid,
               enum_of(at, KMIP_TAG_OBJECT_TYPE), enum_of(at, KMIP_TAG_STATE));
        printf("algorithm          %s\nlength             %d\nusage              %s\n",
               *alg ? alg : "-", int_of(at, KMIP_TAG_CRYPTOGRAPHIC_LENGTH), usage);
        printf("name               %s\n", *name ? name : "-");
        for (int i = 0; i < 7; i++)
            if (strcmp(dates[i], "-") != 0)
                printf("%-18s %s\n", date_names[i], dates[i]);
        if (*revoked)
            printf("revocation reason  %s\n", revoked);
    }
}

static int cmd_key_list(struct cli *c, int argc, char **argv)
{
    static const char *const vals[] = {"--domain", "--state", "--offset", "--limit", NULL};
    int rc = check_opts(argc, argv, vals, NULL, 0);
    if (rc)
        return rc;
    const char *domain = opt_value(argc, argv, "--domain");
    if (!domain)
        return usage_error("key list needs --domain");
    kf_ttlv *p, *msg = new_request(c, KMIP_OP_KEYFLEET_KEY_LIST, &p);
    kf_ttlv_add_text(c->arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domain);
    const char *state = opt_value(argc, argv, "--state");
    if (state) {
        uint32_t s = 0;
        for (uint32_t i = 1; i <= 6; i++) {
            char lower[32];
            snprintf(lower, sizeof(lower), "%s", kf_lifecycle_state_name(i));
            for (char *q = lower; *q; q++)
                *q = *q == ' ' ? '-' : (char)tolower((unsigned char)*q);
            if (strcmp(lower, state) == 0)
                s = i;
        }
        if (!s)
            return usage_error("--state: pre-active, active, deactivated, compromised, destroyed, "
                               "destroyed-compromised");
        kf_ttlv_add_enum(c->arena, p, KMIP_TAG_STATE, s);
    }
    if (opt_value(argc, argv, "--offset"))
        kf_ttlv_add_long(c->arena, p, KMIP_TAG_KEYFLEET_FROM, atoll(opt_value(argc, argv, "--offset")));
    if (opt_value(argc, argv, "--limit"))
        kf_ttlv_add_int(c->arena, p, KMIP_TAG_KEYFLEET_LIMIT, atoi(opt_value(argc, argv, "--limit")));
    const kf_ttlv *r;
    if ((rc = call(c, msg, &r)))
        return rc;
    if (c->json)
        printf("[");
    else
        printf("%-28s %-14s %-12s %-12s %-6s %-20s %s\n", "UID", "TYPE", "STATE", "ALGORITHM",
               "LENGTH", "NAME", "CREATED");
    bool first = true;
    for (const kf_ttlv *at = kf_ttlv_find(r, KMIP_TAG_ATTRIBUTES); at;
         at = kf_ttlv_find_next(at, KMIP_TAG_ATTRIBUTES), first = false)
        print_object(c, at, first, true);
    if (c->json)
        printf("]\n");
    return 0;
}

static int cmd_key_show(struct cli *c, int argc, char **argv)
{
    static const char *const flags[] = {"--export", NULL};
    int rc = check_opts(argc, argv, NULL, flags, 1);
    if (rc)
        return rc;
    kf_ttlv *p, *msg = new_request(c, KMIP_OP_GET_ATTRIBUTES, &p);
    kf_ttlv_add_text(c->arena, p, KMIP_TAG_UNIQUE_IDENTIFIER, argv[0]);
    const kf_ttlv *r;
    if ((rc = call(c, msg, &r)))
        return rc;
    const kf_ttlv *key = NULL;
    if (opt_flag(argc, argv, "--export")) {
        msg = new_request(c, KMIP_OP_GET, &p);
        kf_ttlv_add_text(c->arena, p, KMIP_TAG_UNIQUE_IDENTIFIER, argv[0]);
        if ((rc = call(c, msg, &key)))
            return rc;
    }
    if (c->json && key)
        printf("{\"object\":");
    print_object(c, kf_ttlv_find(r, KMIP_TAG_ATTRIBUTES), true, false);
    if (key) {
        const kf_ttlv *w = kf_ttlv_find(key, KMIP_TAG_SYMMETRIC_KEY);
        if (!w)
            w = kf_ttlv_find(key, KMIP_TAG_SECRET_DATA);
        const kf_ttlv *kv = KF_TTLV_PATH(w, KMIP_TAG_KEY_BLOCK, KMIP_TAG_KEY_VALUE);
        const uint8_t *m = NULL;
        size_t mlen = 0;
        ignore(kf_ttlv_get_bytes(kf_ttlv_find(kv, KMIP_TAG_KEY_MATERIAL), &m, &mlen));
        printf(c->json ? ",\"key_material\":\"" : "key material       ");
        for (size_t i = 0; i < mlen; i++)
            printf("%02x", m[i]);
        printf(c->json ? "\"}" : "");
    }
    printf("\n");
    return 0;
}

static int cmd_key_uid_op(struct cli *c, int argc, char **argv, uint32_t op, const char *done)
{
    static const char *const revoke_vals[] = {"--reason", "--message", NULL};
    int rc = check_opts(argc, argv, op == KMIP_OP_REVOKE ? revoke_vals : NULL, NULL, 1);
    if (rc)
        return rc;
    kf_ttlv *p, *msg = new_request(c, op, &p);
    kf_ttlv_add_text(c->arena, p, KMIP_TAG_UNIQUE_IDENTIFIER, argv[0]);
    if (op == KMIP_OP_REVOKE) {
        static const char *const reasons[] = {"unspecified", "compromise", "ca-compromise",
                                              "affiliation-changed", "superseded", "cessation",
                                              "privilege-withdrawn"};
        const char *reason = opt_value(argc, argv, "--reason");
        uint32_t code = 0;
        for (uint32_t i = 0; i < 7; i++)
            if (strcmp(reason ? reason : "unspecified", reasons[i]) == 0)
                code = i + 1;
        if (!code)
            return usage_error("unknown --reason");
        kf_ttlv *rr = kf_ttlv_struct(c->arena, p, KMIP_TAG_REVOCATION_REASON);
        kf_ttlv_add_enum(c->arena, rr, KMIP_TAG_REVOCATION_REASON_CODE, code);
        const char *message = opt_value(argc, argv, "--message");
        if (message)
            kf_ttlv_add_text(c->arena, rr, KMIP_TAG_REVOCATION_MESSAGE, message);
        if (code == KMIP_REVOKE_KEY_COMPROMISE || code == KMIP_REVOKE_CA_COMPROMISE)
            kf_ttlv_add_datetime(c->arena, p, KMIP_TAG_COMPROMISE_OCCURRENCE_DATE, (int64_t)time(NULL));
    }
    const kf_ttlv *r;
    if ((rc = call(c, msg, &r)))
        return rc;
    if (c->json) {
        printf("{\"uid\":");
        json_string(argv[0], strlen(argv[0]));
        printf(",\"done\":\"%s\"}\n", done);
    } else {
        printf("%s %s.\n", argv[0], done);
    }
    return 0;
}

static int cmd_key(struct cli *c, int argc, char **argv)
{
    if (argc < 1)
        return usage_error("key create|list|show|activate|revoke|destroy");
    const char *sub = argv[0];
    argc--, argv++;
    if (strcmp(sub, "create") == 0)
        return cmd_key_create(c, argc, argv);
    if (strcmp(sub, "list") == 0)
        return cmd_key_list(c, argc, argv);
    if (strcmp(sub, "show") == 0)
        return cmd_key_show(c, argc, argv);
    if (strcmp(sub, "activate") == 0)
        return cmd_key_uid_op(c, argc, argv, KMIP_OP_ACTIVATE, "activated");
    if (strcmp(sub, "revoke") == 0)
        return cmd_key_uid_op(c, argc, argv, KMIP_OP_REVOKE, "revoked");
    if (strcmp(sub, "destroy") == 0)
        return cmd_key_uid_op(c, argc, argv, KMIP_OP_DESTROY, "destroyed");
    return usage_error("key create|list|show|activate|revoke|destroy");
}

static int cmd_audit(struct cli *c, int argc, char **argv)
{
    if (argc < 1)
        return usage_error("audit show | audit verify");
    kf_ttlv *p, *msg;
    const kf_ttlv *r;
    int rc;
    if (strcmp(argv[0], "verify") == 0) {
        if ((rc = check_opts(argc - 1, argv + 1, NULL, NULL, 0)))
            return rc;
        msg = new_request(c, KMIP_OP_KEYFLEET_AUDIT_VERIFY, &p);
        rc = call(c, msg, &r);
        if (rc)
            return rc;
        const kf_ttlv *v = kf_ttlv_find(r, KMIP_TAG_KEYFLEET_AUDIT_VERDICT);
        long long n = (long long)long_of(v, KMIP_TAG_KEYFLEET_AUDIT_RECORDS);
        long long tail = (long long)long_of(v, KMIP_TAG_KEYFLEET_AUDIT_SEQ);
        bool unmac = bool_of(v, KMIP_TAG_KEYFLEET_SEALED);
        if (c->json)
            printf("{\"ok\":true,\"records\":%lld,\"macs_checked\":%s,\"unauthenticated_from\":%lld}\n",
                   n, unmac ? "false" : "true", tail);
        else
            printf("Audit trail intact: %lld records, hash chain %s%s.\n", n,
                   unmac ? "checked (sealed: MACs not checked)" : "and MACs verified",
                   tail ? ", records from the unauthenticated tail not yet MAC'd" : "");
        return 0;
    }
    if (strcmp(argv[0], "show") != 0)
        return usage_error("audit show | audit verify");
    static const char *const vals[] = {"--from", "--limit", NULL};
    if ((rc = check_opts(argc - 1, argv + 1, vals, NULL, 0)))
        return rc;
    msg = new_request(c, KMIP_OP_KEYFLEET_AUDIT_SHOW, &p);
    const char *from = opt_value(argc - 1, argv + 1, "--from");
    const char *limit = opt_value(argc - 1, argv + 1, "--limit");
    if (from)
        kf_ttlv_add_long(c->arena, p, KMIP_TAG_KEYFLEET_FROM, atoll(from));
    if (limit)
        kf_ttlv_add_int(c->arena, p, KMIP_TAG_KEYFLEET_LIMIT, atoi(limit));
    if ((rc = call(c, msg, &r)))
        return rc;
    if (c->json)
        printf("[");
    else
        printf("%-6s %-27s %-24s %-16s %-12s %-24s %-22s %s\n", "SEQ", "TIME", "ACTOR", "OPERATION",
               "DOMAIN", "OBJECT", "RESULT", "DETAIL");
    bool first = true;
    for (const kf_ttlv *a = kf_ttlv_find(r, KMIP_TAG_KEYFLEET_AUDIT_RECORD); a;
         a = kf_ttlv_find_next(a, KMIP_TAG_KEYFLEET_AUDIT_RECORD), first = false) {
        int64_t us = 0;
        ignore(kf_ttlv_get_dtx(kf_ttlv_find(a, KMIP_TAG_KEYFLEET_AUDIT_TIME), &us));
        char when[40], base[32];
        format_time(us / 1000000, base, sizeof(base));
        snprintf(when, sizeof(when), "%.19s.%06lldZ", base, (long long)(us % 1000000));
        const uint32_t fields[] = {KMIP_TAG_KEYFLEET_AUDIT_ACTOR, KMIP_TAG_KEYFLEET_AUDIT_OPERATION,
                                   KMIP_TAG_KEYFLEET_DOMAIN, KMIP_TAG_KEYFLEET_AUDIT_OBJECT,
                                   KMIP_TAG_KEYFLEET_AUDIT_RESULT, KMIP_TAG_KEYFLEET_AUDIT_DETAIL};
        static const char *const names[] = {"actor", "operation", "domain", "object", "result", "detail"};
        if (c->json) {
            printf("%s{\"seq\":%lld,\"time\":\"%s\"", first ? "" : ",",
                   (long long)long_of(a, KMIP_TAG_KEYFLEET_AUDIT_SEQ), when);
            for (int i = 0; i < 6; i++) {
                const char *t = text_of(a, fields[i]);
                printf(",\"%s\":", names[i]);
                json_string(t, strlen(t));
            }
            printf("}");
        } else {
            printf("%-6lld %-27s", (long long)long_of(a, KMIP_TAG_KEYFLEET_AUDIT_SEQ), when);
            const int widths[] = {24, 16, 12, 24, 22, 0};
            for (int i = 0; i < 6; i++) {
                const char *t = text_of(a, fields[i]);
                printf(" %-*s", widths[i], *t ? t : "-");
            }
            printf("\n");
        }
    }
    if (c->json)
        printf("]\n");
    return 0;
}

/* ---- Devices (docs/pairing.md) ---- */
static kf_ttlv *device_request(struct cli *c, uint32_t op, const char *id, kf_ttlv **p)
{
    kf_ttlv *msg = new_request(c, op, p);
    if (msg)
        kf_ttlv_add_text(c->arena, *p, KMIP_TAG_KEYFLEET_DEVICE_ID, id);
    return msg;
}

static int cmd_device_register(struct cli *c, int argc, char **argv)
{
    static const char *const vals[] = {"--domain", NULL};
    int rc = check_opts(argc, argv, vals, NULL, 1);
    if (rc)
        return rc;
    const char *domain = opt_value(argc, argv, "--domain");
    if (!domain)
        return usage_error("device register needs --domain");
    kf_ttlv *p, *msg = device_request(c, KMIP_OP_KEYFLEET_DEVICE_REGISTER, argv[0], &p);
    if (msg)
        kf_ttlv_add_text(c->arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domain);
    const kf_ttlv *r;
    if ((rc = call(c, msg, &r)))
        return rc;
    const char *id = text_of(r, KMIP_TAG_KEYFLEET_DEVICE_ID);
    const char *dom = text_of(r, KMIP_TAG_KEYFLEET_DOMAIN);
    const char *mkek = text_of(r, KMIP_TAG_UNIQUE_IDENTIFIER);
    if (c->json) {
        printf("{\"device\":");
        json_string(id, strlen(id));
        printf(",\"domain\":");
        json_string(dom, strlen(dom));
        printf(",\"master_key\":");
        json_string(mkek, strlen(mkek));
        printf("}\n");
    } else {
        printf("Device %s registered in %s (master key %s, counter 0).\n"
               "Export its installation package once: keyfleet device export %s -o FILE\n",
               id, dom, mkek, id);
    }
    return 0;
}

/*
 * The package holds the device's master key and can be had once: the file is
 * created (new, 0600, no symlink followed) BEFORE asking, so a bad path never
 * costs the one export; it is removed again if the server refuses.
 */
static int cmd_device_export(struct cli *c, int argc, char **argv)
{
    const char *id = NULL, *out = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--output") == 0) {
            if (i + 1 >= argc)
                return usage_error("-o needs a file name");
            out = argv[++i];
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "keyfleet: unknown option %s\n", argv[i]);
            return EXIT_USAGE;
        } else if (!id) {
            id = argv[i];
        } else {
            return usage_error("unexpected argument");
        }
    }
    if (!id)
        return usage_error("missing argument");
    if (!out)
        return usage_error("device export needs -o FILE (the package is never printed)");
    int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "keyfleet: cannot create %s: %s%s\n", out, strerror(errno),
                errno == EEXIST ? " (an existing file is never replaced)" : "");
        return EXIT_USAGE;
    }
    kf_ttlv *p, *msg = device_request(c, KMIP_OP_KEYFLEET_DEVICE_EXPORT, id, &p);
    const kf_ttlv *r;
    int rc = call(c, msg, &r);
    if (rc) {
        close(fd);
        unlink(out);
        return rc;
    }
    const kf_ttlv *pkg = kf_ttlv_find(r, KMIP_TAG_KEYFLEET_DEVICE_PACKAGE);
    kf_buf bytes = {0};
    bool ok = pkg && kf_buf_alloc(&bytes, 256, 65536, KF_BUF_SECRET) == KF_OK &&
              kf_ttlv_encode(pkg, &bytes) == KF_OK &&
              kf_file_write_all(fd, bytes.data, bytes.len) == KF_OK && fsync(fd) == 0;
    size_t written = bytes.len;
    kf_buf_free(&bytes);
    if (close(fd) != 0)
        ok = false;
    if (!ok) {
        /* The server has marked the export done: say so plainly. */
        fprintf(stderr, "keyfleet: the package of %s was exported but could not be written to %s;"
                        " the export cannot be repeated: register the device under a new ID\n",
                id, out);
        unlink(out);
        return EXIT_REFUSED;
    }
    if (c->json) {
        printf("{\"device\":");
        json_string(id, strlen(id));
        printf(",\"file\":");
        json_string(out, strlen(out));
        printf(",\"bytes\":%zu}\n", written);
    } else {
        printf("Installation package of %s written to %s (%zu bytes, mode 0600).\n"
               "It holds the device's master key: install it, then destroy the file.\n",
               id, out, written);
    }
    return 0;
}

static int cmd_device_show(struct cli *c, int argc, char **argv)
{
    int rc = check_opts(argc, argv, NULL, NULL, 1);
    if (rc)
        return rc;
    kf_ttlv *p, *msg = device_request(c, KMIP_OP_KEYFLEET_DEVICE_GET, argv[0], &p);
    const kf_ttlv *r;
    if ((rc = call(c, msg, &r)))
        return rc;
    const kf_ttlv *di = kf_ttlv_find(r, KMIP_TAG_KEYFLEET_DEVICE_INFO);
    const char *id = text_of(di, KMIP_TAG_KEYFLEET_DEVICE_ID);
    const char *dom = text_of(di, KMIP_TAG_KEYFLEET_DOMAIN);
    const char *mkek = text_of(di, KMIP_TAG_UNIQUE_IDENTIFIER);
    long long counter = (long long)long_of(di, KMIP_TAG_KEYFLEET_COUNTER);
    long long kek = (long long)long_of(di, KMIP_TAG_KEYFLEET_KEK_ID);
    bool exported = bool_of(di, KMIP_TAG_KEYFLEET_EXPORTED);
    int pending = int_of(di, KMIP_TAG_KEYFLEET_ACKS_PENDING);
    if (c->json) {
        printf("{\"device\":");
        json_string(id, strlen(id));
        printf(",\"domain\":");
        json_string(dom, strlen(dom));
        printf(",\"master_key\":");
        json_string(mkek, strlen(mkek));
        printf(",\"counter\":%lld,\"exported\":%s,\"last_kek_id\":%lld,\"acks_pending\":%d}\n",
               counter, exported ? "true" : "false", kek, pending);
        return 0;
    }
    printf("device         %s\n", id);
    printf("domain         %s\n", dom);
    printf("master key     %s\n", *mkek ? mkek : "-");
    printf("counter        %lld\n", counter);
    printf("exported       %s\n", exported ? "yes" : "no");
    if (kek)
        printf("last KEK id    %lld\n", kek);
    else
        printf("last KEK id    -\n");
    printf("acks pending   %d\n", pending);
    return 0;
}

static int cmd_device(struct cli *c, int argc, char **argv)
{
    if (argc < 1)
        return usage_error("device register|export|show");
    const char *sub = argv[0];
    argc--, argv++;
    if (strcmp(sub, "register") == 0)
        return cmd_device_register(c, argc, argv);
    if (strcmp(sub, "export") == 0)
        return cmd_device_export(c, argc, argv);
    if (strcmp(sub, "show") == 0)
        return cmd_device_show(c, argc, argv);
    return usage_error("device register|export|show");
}

/* ---- Manufacturing (docs/manufacturing.md) ---- */
static const char *const mfg_help =
    "Usage: keyfleet [--json] mfg setup --domain D --kind vendor|postal|earth [--country CC]\n"
    "       keyfleet [--json] mfg certs --domain D\n"
    "       keyfleet [--json] mfg status --domain D (--key-id N | --msn M)\n"
    "       keyfleet [--json] mfg retire --domain D --key-id N\n"
    "Manufacturing key installation and registration (docs/manufacturing.md).\n"
    "  setup   make the domain's authority M, generation role Oak and verification role\n"
    "          Brass (keys kept wrapped in the domain, certificates signed by M); the\n"
    "          keyfleet domain is created when missing. vendor: one per system; postal:\n"
    "          one per country (--country, ISO 3166 alpha-2); earth: devices made for no\n"
    "          country yet. Prints the three role IDs.\n"
    "  certs   every role certificate of the domain: M, O, B and each enrolled station,\n"
    "          each checked under M's key (M's own is self-signed)\n"
    "  status  a device key's archive record: status (New, Installed, Bad, Active,\n"
    "          Obsolete, Transferred), the reason of a Bad status, Steel, device,\n"
    "          registration and the five event times; --msn: that device's newest key.\n"
    "          A record modified in the store is refused (KF_ERR_MFG_ARCHIVE).\n"
    "  retire  Installed or Active -> Obsolete\n"
    "Over the admin socket, or remote (--server ...) with a certificate the identity map\n"
    "gives the admin role (status: also registrar or steel).\n";

static const char *mfg_status_name(uint32_t s)
{
    static const char *const names[] = {"?",      "New",      "Installed",  "Bad",
                                        "Active", "Obsolete", "Transferred"};
    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

static const char *mfg_role_name(uint32_t t)
{
    static const char *const names[] = {"?", "authority", "oak", "brass", "steel", "tin"};
    return t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

static int mfg_domain_opt(int argc, char **argv, const char **domain)
{
    *domain = opt_value(argc, argv, "--domain");
    return *domain ? 0 : usage_error("mfg: --domain is required");
}

/*
 * The role certificates in a response payload: M's is found first and checked
 * as self-signed, every other one under M. The authority is taken from the
 * answer itself, so this shows what the server holds and that it is
 * consistent; a station checks against the M it saved at enrolment.
 */
static void mfg_print_certs(struct cli *c, const kf_ttlv *r, const char *domain)
{
    kf_buf all = {0};
    size_t n = 0;
    uint8_t m_pub[32];
    bool have_m = false;
    if (kf_buf_alloc(&all, 4096, KF_FRAME_MAX, 0) < 0)
        return;
    for (const kf_ttlv *e = kf_ttlv_find(r, KMIP_TAG_KEYFLEET_SIGNED_RECORD); e;
         e = kf_ttlv_find_next(e, KMIP_TAG_KEYFLEET_SIGNED_RECORD)) {
        size_t start = all.len;
        if (kf_ttlv_encode(e, &all) < 0)
            break;
        struct kf_mfg_envelope env;
        struct kf_mfg_record rec;
        if (!have_m && kf_mfg_envelope_parse(all.data + start, all.len - start, &env, NULL) == 0 &&
            kf_mfg_record_decode(env.body, env.body_len, KF_MFG_REC_ROLE_CERT, &rec) == 0 &&
            rec.role_type == KF_MFG_ROLE_AUTHORITY &&
            kf_mfg_cert_check(all.data + start, all.len - start, rec.sign_pub, domain,
                              KF_MFG_ROLE_AUTHORITY, NULL) == 0) {
            memcpy(m_pub, rec.sign_pub, 32);
            have_m = true;
        }
        n++;
    }
    if (c->json)
        printf("[");
    else
        printf("%-10s %-10s %-12s %-10s %-64s %s\n", "ROLE", "TYPE", "DOMAIN", "SIGNED BY",
               "SIGN KEY", "CHECK");
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        struct kf_mfg_envelope env;
        struct kf_mfg_record rec;
        size_t used = 0;
        if (kf_mfg_envelope_parse(all.data + at, all.len - at, &env, &used) < 0)
            break;
        bool ok = have_m && kf_mfg_cert_check(all.data + at, used, m_pub, domain, 0, &rec) == 0;
        if (!ok && kf_mfg_record_decode(env.body, env.body_len, KF_MFG_REC_ROLE_CERT, &rec) < 0)
            memset(&rec, 0, sizeof(rec));
        char hex[65];
        for (size_t k = 0; k < 32; k++)
            snprintf(hex + 2 * k, 3, "%02x", rec.sign_pub[k]);
        if (c->json) {
            printf("%s{\"role_id\":\"%s\",\"type\":\"%s\",\"domain\":", i ? "," : "", rec.role_id,
                   mfg_role_name(rec.role_type));
            json_string(rec.domain, strlen(rec.domain));
            printf(",\"signer\":\"%s\",\"sign_pub\":\"%s\",\"verified\":%s}", env.signer, hex,
                   ok ? "true" : "false");
        } else {
            printf("%-10s %-10s %-12s %-10s %-64s %s\n", rec.role_id[0] ? rec.role_id : "?",
                   mfg_role_name(rec.role_type), rec.domain, env.signer, hex,
                   ok ? "verified" : "DOES NOT VERIFY");
        }
        at += used;
    }
    if (c->json)
        printf("]\n");
    kf_buf_free(&all);
}

static int cmd_mfg_setup(struct cli *c, int argc, char **argv)
{
    static const char *const vals[] = {"--domain", "--kind", "--country", NULL};
    const char *domain, *kind = opt_value(argc, argv, "--kind");
    const char *country = opt_value(argc, argv, "--country");
    int rc = check_opts(argc, argv, vals, NULL, 0);
    if (rc || (rc = mfg_domain_opt(argc, argv, &domain)))
        return rc;
    uint32_t k = 0;
    if (kind && strcmp(kind, "vendor") == 0)
        k = 1;
    else if (kind && strcmp(kind, "postal") == 0)
        k = 2;
    else if (kind && strcmp(kind, "earth") == 0)
        k = 3;
    else
        return usage_error("mfg setup: --kind vendor|postal|earth");
    if ((k == 2) != (country != NULL))
        return usage_error("mfg setup: --country CC goes with --kind postal, and only with it");
    if (country && !kf_mfg_country_valid(country))
        return usage_error("mfg setup: --country wants two capital letters, e.g. US");
    kf_ttlv *p, *msg = new_request(c, KMIP_OP_KEYFLEET_MFG_SETUP, &p);
    if (msg) {
        kf_ttlv_add_text(c->arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domain);
        kf_ttlv_add_enum(c->arena, p, KMIP_TAG_KEYFLEET_DOMAIN_KIND, k);
        if (country)
            kf_ttlv_add_text(c->arena, p, KMIP_TAG_KEYFLEET_COUNTRY, country);
    }
    const kf_ttlv *r;
    if ((rc = call(c, msg, &r)))
        return rc;
    if (!c->json)
        printf("Domain %s is set up for manufacturing (%s%s%s):\n", domain, kind,
               country ? ", " : "", country ? country : "");
    mfg_print_certs(c, r, domain);
    return 0;
}

static int cmd_mfg_certs(struct cli *c, int argc, char **argv)
{
    static const char *const vals[] = {"--domain", NULL};
    const char *domain;
    int rc = check_opts(argc, argv, vals, NULL, 0);
    if (rc || (rc = mfg_domain_opt(argc, argv, &domain)))
        return rc;
    kf_ttlv *p, *msg = new_request(c, KMIP_OP_KEYFLEET_MFG_ROLE_CERTS, &p);
    if (msg)
        kf_ttlv_add_text(c->arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domain);
    const kf_ttlv *r;
    if ((rc = call(c, msg, &r)))
        return rc;
    mfg_print_certs(c, r, domain);
    return 0;
}

/* A key ID: digits only, 1 or more. */
static bool mfg_key_id(const char *s, int64_t *out)
{
    if (!s || !*s || strlen(s) > 18)
        return false;
    for (const char *q = s; *q; q++)
        if (!isdigit((unsigned char)*q))
            return false;
    *out = atoll(s);
    return *out > 0;
}

static void mfg_print_time(struct cli *c, const char *label, const kf_ttlv *info, uint32_t tag)
{
    int64_t v = 0;
    const kf_ttlv *item = kf_ttlv_find(info, tag);
    bool have = item && kf_ttlv_get_datetime(item, &v) == KF_OK;
    char text[40] = "-";
    if (have)
        format_time(v, text, sizeof(text));
    if (c->json)
        printf(",\"%s\":%s%s%s", label, have ? "\"" : "", have ? text : "null", have ? "\"" : "");
    else
        printf("%-18s%s\n", label, text);
}

static int cmd_mfg_status(struct cli *c, int argc, char **argv)
{
    static const char *const vals[] = {"--domain", "--key-id", "--msn", NULL};
    const char *domain, *key_s = opt_value(argc, argv, "--key-id");
    const char *msn = opt_value(argc, argv, "--msn");
    int rc = check_opts(argc, argv, vals, NULL, 0);
    if (rc || (rc = mfg_domain_opt(argc, argv, &domain)))
        return rc;
    int64_t key_id = 0;
    if (!key_s == !msn)
        return usage_error("mfg status: exactly one of --key-id N or --msn M");
    if (key_s && !mfg_key_id(key_s, &key_id))
        return usage_error("mfg status: --key-id wants a key ID, 1 or more");
    if (msn && !kf_mfg_msn_valid(msn))
        return usage_error("mfg status: --msn wants 1-16 of A-Z 0-9 -");
    kf_ttlv *p, *msg = new_request(c, KMIP_OP_KEYFLEET_MFG_STATUS, &p);
    if (msg) {
        kf_ttlv_add_text(c->arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domain);
        if (key_s)
            kf_ttlv_add_long(c->arena, p, KMIP_TAG_KEYFLEET_KEY_ID, key_id);
        else
            kf_ttlv_add_text(c->arena, p, KMIP_TAG_KEYFLEET_MSN, msn);
    }
    const kf_ttlv *r;
    if ((rc = call(c, msg, &r)))
        return rc;
    const kf_ttlv *info = kf_ttlv_find(r, KMIP_TAG_KEYFLEET_MFG_KEY_INFO);
    const kf_ttlv *dom = kf_ttlv_find(info, KMIP_TAG_KEYFLEET_DOMAIN);
    const kf_ttlv *kid = kf_ttlv_find(info, KMIP_TAG_KEYFLEET_KEY_ID);
    const kf_ttlv *moved_dom = dom ? kf_ttlv_find_next(dom, KMIP_TAG_KEYFLEET_DOMAIN) : NULL;
    const kf_ttlv *moved_kid = kid ? kf_ttlv_find_next(kid, KMIP_TAG_KEYFLEET_KEY_ID) : NULL;
    int64_t id = 0, moved_id = 0;
    uint32_t status = 0;
    int32_t reason = int_of(info, KMIP_TAG_KEYFLEET_REASON);
    ignore(kf_ttlv_get_long(kid, &id));
    ignore(kf_ttlv_get_enum(kf_ttlv_find(info, KMIP_TAG_KEYFLEET_KEY_STATUS), &status));
    if (moved_kid)
        ignore(kf_ttlv_get_long(moved_kid, &moved_id));
    if (!info) {
        fprintf(stderr, "keyfleet: the status answer lacks its key information\n");
        return EXIT_REFUSED;
    }
    const char *reason_text = reason < 0 ? kf_errname(reason) : "-";
    const char *fields[][2] = {{"steel", text_of(info, KMIP_TAG_KEYFLEET_STEEL_ID)},
                               {"msn", text_of(info, KMIP_TAG_KEYFLEET_MSN)},
                               {"indicia", text_of(info, KMIP_TAG_KEYFLEET_INDICIA)},
                               {"country", text_of(info, KMIP_TAG_KEYFLEET_COUNTRY)}};
    static const struct {
        const char *label;
        uint32_t tag;
    } times[] = {{"requested", KMIP_TAG_KEYFLEET_REQUEST_TIME},
                 {"installed", KMIP_TAG_KEYFLEET_INSTALL_TIME},
                 {"install_verified", KMIP_TAG_KEYFLEET_INSTALL_VERIFY_TIME},
                 {"registered", KMIP_TAG_KEYFLEET_REGISTER_TIME},
                 {"register_verified", KMIP_TAG_KEYFLEET_REGISTER_VERIFY_TIME}};
    const char *dname = text_of(info, KMIP_TAG_KEYFLEET_DOMAIN);
    if (c->json) {
        printf("{\"domain\":");
        json_string(dname, strlen(dname));
        printf(",\"key_id\":%lld,\"status\":\"%s\",\"reason\":\"%s\"", (long long)id,
               mfg_status_name(status), reason_text);
        for (size_t i = 0; i < 4; i++) {
            printf(",\"%s\":", fields[i][0]);
            json_string(fields[i][1], strlen(fields[i][1]));
        }
        for (size_t i = 0; i < 5; i++)
            mfg_print_time(c, times[i].label, info, times[i].tag);
        if (moved_dom) {
            const char *md = "";
            size_t mlen = 0;
            ignore(kf_ttlv_get_text(moved_dom, &md, &mlen));
            printf(",\"moved_to\":");
            json_string(md, mlen);
            printf(",\"moved_key_id\":%lld", (long long)moved_id);
        }
        printf("}\n");
        return 0;
    }
    printf("%-18s%s\n%-18s%lld\n%-18s%s\n%-18s%s\n", "domain", dname, "key_id", (long long)id,
           "status", mfg_status_name(status), "reason", reason_text);
    for (size_t i = 0; i < 4; i++)
        printf("%-18s%s\n", fields[i][0], *fields[i][1] ? fields[i][1] : "-");
    for (size_t i = 0; i < 5; i++)
        mfg_print_time(c, times[i].label, info, times[i].tag);
    if (moved_dom) {
        const char *md = "";
        size_t mlen = 0;
        ignore(kf_ttlv_get_text(moved_dom, &md, &mlen));
        printf("%-18s%.*s/%lld\n", "moved_to", (int)mlen, md, (long long)moved_id);
    }
    return 0;
}

static int cmd_mfg_retire(struct cli *c, int argc, char **argv)
{
    static const char *const vals[] = {"--domain", "--key-id", NULL};
    const char *domain;
    int64_t key_id;
    int rc = check_opts(argc, argv, vals, NULL, 0);
    if (rc || (rc = mfg_domain_opt(argc, argv, &domain)))
        return rc;
    if (!mfg_key_id(opt_value(argc, argv, "--key-id"), &key_id))
        return usage_error("mfg retire: --key-id wants a key ID, 1 or more");
    kf_ttlv *p, *msg = new_request(c, KMIP_OP_KEYFLEET_MFG_RETIRE, &p);
    if (msg) {
        kf_ttlv_add_text(c->arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domain);
        kf_ttlv_add_long(c->arena, p, KMIP_TAG_KEYFLEET_KEY_ID, key_id);
    }
    const kf_ttlv *r;
    if ((rc = call(c, msg, &r)))
        return rc;
    uint32_t status = 0;
    ignore(kf_ttlv_get_enum(kf_ttlv_find(r, KMIP_TAG_KEYFLEET_KEY_STATUS), &status));
    if (c->json) {
        printf("{\"domain\":");
        json_string(domain, strlen(domain));
        printf(",\"key_id\":%lld,\"status\":\"%s\"}\n", (long long)key_id, mfg_status_name(status));
    } else {
        printf("Key %lld of %s is now %s.\n", (long long)key_id, domain, mfg_status_name(status));
    }
    return 0;
}

static int cmd_mfg(struct cli *c, int argc, char **argv)
{
    if (argc < 1)
        return usage_error("mfg setup|certs|status|retire");
    const char *sub = argv[0];
    argc--, argv++;
    if (strcmp(sub, "setup") == 0)
        return cmd_mfg_setup(c, argc, argv);
    if (strcmp(sub, "certs") == 0)
        return cmd_mfg_certs(c, argc, argv);
    if (strcmp(sub, "status") == 0)
        return cmd_mfg_status(c, argc, argv);
    if (strcmp(sub, "retire") == 0)
        return cmd_mfg_retire(c, argc, argv);
    return usage_error("mfg setup|certs|status|retire");
}

int main(int argc, char **argv)
{
    /* --tls-split's client session handler: this binary, started by remote_call. */
    if (argc == 2 && strcmp(argv[1], KF_TLSSPLIT_HANDLER_ARG) == 0)
        return kf_tlssplit_handler_main();
    struct cli c = {0};
    const char *dir = getenv("KEYFLEET_DIR") ? getenv("KEYFLEET_DIR") : "data";
    const char *sock = NULL;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "-", 1) == 0; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            c.json = true;
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
            sock = argv[++i];
        } else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc) {
            c.server = argv[++i];
        } else if (strcmp(argv[i], "--ca") == 0 && i + 1 < argc) {
            c.ca = argv[++i];
        } else if (strcmp(argv[i], "--cert") == 0 && i + 1 < argc) {
            c.cert = argv[++i];
        } else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
            c.key = argv[++i];
        } else if (strcmp(argv[i], "--tls-split") == 0) {
            c.tls_split = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            puts("keyfleet 0.1.0");
            return 0;
        } else {
            fprintf(stderr, "keyfleet: unknown option %s\n", argv[i]);
            return EXIT_USAGE;
        }
    }
    if (i >= argc)
        return usage_error("no command given");
    if (c.server && (!c.ca || !c.cert || !c.key))
        return usage_error("--server needs --ca, --cert and --key");
    if (c.tls_split && !c.server)
        return usage_error("--tls-split goes with --server");
    for (int j = i; j < argc; j++)
        if (strcmp(argv[j], "--help") == 0 || strcmp(argv[j], "-h") == 0) {
            fputs(strcmp(argv[i], "mfg") == 0 ? mfg_help : usage_text, stdout);
            return 0;
        }
    if (sock)
        snprintf(c.socket, sizeof(c.socket), "%s", sock);
    else
        snprintf(c.socket, sizeof(c.socket), "%s/%s", dir, KF_SOCKET_NAME);
    if (kf_arena_new(&c.arena, 0) < 0)
        return 1;
    const char *cmd = argv[i];
    int sub_argc = argc - i - 1;
    char **sub_argv = argv + i + 1;
    int rc;
    if (strcmp(cmd, "status") == 0)
        rc = cmd_status(&c, sub_argc, sub_argv);
    else if (strcmp(cmd, "init") == 0)
        rc = cmd_init(&c, sub_argc, sub_argv);
    else if (strcmp(cmd, "unseal") == 0)
        rc = cmd_unseal(&c, sub_argc, sub_argv);
    else if (strcmp(cmd, "seal") == 0)
        rc = simple_op(&c, sub_argc, sub_argv, KMIP_OP_KEYFLEET_SEAL, "Sealed.");
    else if (strcmp(cmd, "domain") == 0)
        rc = cmd_domain(&c, sub_argc, sub_argv);
    else if (strcmp(cmd, "key") == 0)
        rc = cmd_key(&c, sub_argc, sub_argv);
    else if (strcmp(cmd, "audit") == 0)
        rc = cmd_audit(&c, sub_argc, sub_argv);
    else if (strcmp(cmd, "device") == 0)
        rc = cmd_device(&c, sub_argc, sub_argv);
    else if (strcmp(cmd, "mfg") == 0)
        rc = cmd_mfg(&c, sub_argc, sub_argv);
    else
        rc = usage_error("unknown command");
    kf_arena_free(c.arena);
    return rc;
}
