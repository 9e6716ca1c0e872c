/*
 * keyfleet-install: the installation station, the seed's Steel (EP 0 735 720
 * Fig. 29/30; docs/manufacturing.md "Installation" and "Tools").
 *
 *   init      make the station's state directory: role ID, keys (wrapped)
 *   enroll    enrol it into domains (KMIP KeyfleetMfgRoleEnroll), keep the
 *             role certificates the answers carry
 *   line      run a manufacturing line of simulated postage devices: for each
 *             device and each of its two domains MI0 -> MI4 -> install -> MI7
 *             -> MI10, with injectable faults for tests
 *   register  register the line's devices to a country (MR1 -> MR4)
 *   status    one key's archive status (KMIP KeyfleetMfgStatus)
 *
 * Exit codes: 0 done, 1 refused or failed (the kf error sentence and name on
 * stderr), 2 usage, 3 cannot reach keyfleetd, 4 the line or registration ran
 * through but not every device ended as it should (see the per-device lines).
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/log.h"
#include "keyfleet/meter.h"
#include "keyfleet/mfg.h"
#include "keyfleet/secmem.h"
#include "keyfleet/station.h"
#include "keyfleet/tls.h"
#include "keyfleet/ttlv.h"
#include "station/line.h"
#include "station/steel.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_CONNECT 3
#define EXIT_INCOMPLETE 4

#define RECORDS_MAX (1024u * 1024u)
#define LINE_MAX_DEVICES 10000000u

static const char *const usage_text =
    "Usage: keyfleet-install COMMAND [OPTIONS]\n"
    "The installation station (Steel) of the manufacturing line: it asks keyfleetd for\n"
    "device master keys, installs each in a postage device, proves the installation and\n"
    "reports it (docs/manufacturing.md).\n\n"
    "Commands:\n"
    "  init     --state DIR --role-id SNNNNNNNN [--key-file F]\n"
    "  enroll   --state DIR --domain D [--domain D2 ...] TLS\n"
    "  line     --state DIR --vendor VE --postal DOMAIN --count N --devices DIR TLS\n"
    "           [--first N] [--fault KIND@N[:postal] ...] [--other-steel SNNNNNNNN]\n"
    "  register --state DIR --devices DIR --country CC --indicia-prefix P --date DATE TLS\n"
    "           [--earth-domain EARTH --country-domain DOMAIN]\n"
    "  status   --domain D (--key-id N | --msn M) TLS [--json]\n\n"
    "TLS: --server HOST:PORT --ca FILE --cert FILE --key FILE (KMIP over TLS with a client\n"
    "certificate that the server's identity map gives the steel, registrar or admin role).\n"
    "Every command has --help. Exit codes: 0 done, 1 refused or failed, 2 usage,\n"
    "3 cannot reach keyfleetd, 4 ran through but some devices did not end as they should.\n";

static const char *const init_help =
    "Usage: keyfleet-install init --state DIR --role-id SNNNNNNNN [--key-file F]\n"
    "Make a new station state directory DIR (mode 0700): its role ID (S and 8 digits for a\n"
    "Steel), fresh Ed25519 signing and X25519 confidentiality keys, wrapped (AES-256-KWP)\n"
    "under the station key file. The key file (32 random bytes, mode 0600) is made when\n"
    "missing; default DIR/station.key. Keep it apart from DIR where you can: whoever has\n"
    "both can act as this station. DIR must not hold a station yet.\n"
    "Prints the role ID and the public keys (hex), which enroll sends to keyfleetd.\n";

static const char *const enroll_help =
    "Usage: keyfleet-install enroll --state DIR [--key-file F] --domain D [--domain D2 ...]\n"
    "         --server HOST:PORT --ca FILE --cert FILE --key FILE\n"
    "Enrol the station into each domain (KMIP KeyfleetMfgRoleEnroll with its role ID and\n"
    "public keys; the client certificate must have the admin role there). The answer, the\n"
    "station's certificate and the domain's M, O and B certificates, is checked (signed by\n"
    "the domain's authority M, the first certifying this station) and kept in DIR/certs/.\n"
    "A domain whose authority changed since an earlier enrolment is refused.\n";

static const char *const line_help =
    "Usage: keyfleet-install line --state DIR [--key-file F] --vendor VE --postal DOMAIN\n"
    "         --count N --devices DIR [--first N] [--fault KIND@N[:postal] ...]\n"
    "         [--other-steel SNNNNNNNN] --server HOST:PORT --ca FILE --cert FILE --key FILE\n"
    "Run a line of N simulated postage devices, MSN \"SN\" + 8 digits from --first (default\n"
    "1). Each device's secure storage is the file DEVICES/<msn>.state (0600, written\n"
    "atomically); an existing one is never overwritten. For the vendor domain, then the\n"
    "postal domain (a country's, or earth): KeyfleetMfgRequestKey (MI0) -> Distribute\n"
    "(MI4); the station checks Oak's signature under its saved O certificate, its own\n"
    "Steel ID and that the key ID is above the last it saw there (stored durably before\n"
    "the key is installed), opens the key, installs it (MI5/MI6), compares the device's\n"
    "test tokens with MI4's, signs Installed or InstallFailed (MI7) and sends it\n"
    "(KeyfleetMfgReportInstall); Brass's ConfirmInstalled (MI10) is checked under the\n"
    "saved B certificate. A refused MI4 is reported InstallFailed with the reason.\n"
    "One line per key handled: <msn> <domain> <key id> <status> <reason or ->, status\n"
    "  Installed, Bad        Brass's verdict (MI10)\n"
    "  Lost                  MI4 discarded (drop-mi4): no report\n"
    "  SteelRefused          this station refused an MI4\n"
    "  DeviceRefused         the device refused the key\n"
    "  ServerRefused         keyfleetd refused the report\n"
    "then a summary. Faults, for tests (N: the device number in its MSN; the fault hits\n"
    "the vendor domain, or the postal one with :postal):\n"
    "  drop-mi4              the MI4 is discarded as if lost; the device then asks again\n"
    "                        (keyfleetd marks the lost key Bad KF_ERR_MFG_LOST)\n"
    "  bad-token             the device's test tokens are corrupted; the station detects\n"
    "                        it: InstallFailed KF_ERR_MFG_TOKENS\n"
    "  bad-token-unchecked   corrupted tokens are sent in Installed unchecked: Brass\n"
    "                        answers Bad KF_ERR_MFG_TOKENS\n"
    "  replay-mi4            the previous device's MI4 is presented again first: refused\n"
    "                        (KF_ERR_MFG_KEY_ID), then the device asks for its own key\n"
    "  wrong-steel           a key is asked for the station --other-steel and its MI4\n"
    "                        handed to this one: refused KF_ERR_MFG_STEEL_ID, reported,\n"
    "                        the key is Bad; then the device asks for its own key\n"
    "  second-install        after its own key, the previous device's key is offered to\n"
    "                        the device: refused by the station (key ID), by the device\n"
    "                        (KF_ERR_METER_INSTALLED) and, for an Installed report sent\n"
    "                        past the station, by keyfleetd (KF_ERR_MFG_STATUS)\n"
    "  write-error           the device's storage fails while installing: InstallFailed\n"
    "                        KF_ERR_MFG_WRITE\n"
    "Exit 0 when every device holds both keys Installed, 4 when the line ran through\n"
    "otherwise, 1 when it stopped (a request refused, the connection lost).\n";

static const char *const register_help =
    "Usage: keyfleet-install register --state DIR [--key-file F] --devices DIR --country CC\n"
    "         --indicia-prefix P --date DATE [--earth-domain EARTH --country-domain DOMAIN]\n"
    "         --server HOST:PORT --ca FILE --cert FILE --key FILE\n"
    "Register every device of DEVICES (*.state files, in name order) to country CC: the\n"
    "device makes MR1 (country, indicia P + the digits of its MSN, DATE, one MAC per\n"
    "domain key it holds), keyfleetd checks it (KeyfleetMfgRegister) and answers one\n"
    "ConfirmRegistered (MR4) per key, each checked under the Brass certificate that\n"
    "the station state DIR saved at enrolment. With --earth-domain, a device's earth key\n"
    "moves to --country-domain (its postal key now belongs to the country).\n"
    "DATE: YYYY-MM-DD (midnight UTC), YYYY-MM-DDTHH:MM:SSZ or 'now'; it may not be\n"
    "before the installation. Prints <msn> <domain> <key id> Active per key, or\n"
    "<msn> - - DeviceRefused|ServerRefused <reason>, then a summary.\n"
    "The client certificate needs the registrar (or admin) role.\n";

static const char *const status_help =
    "Usage: keyfleet-install status --domain D (--key-id N | --msn M) [--json]\n"
    "         --server HOST:PORT --ca FILE --cert FILE --key FILE\n"
    "A key's archive record (KMIP KeyfleetMfgStatus): status, reason, Steel, device,\n"
    "registration and the five event times. With --msn, that device's newest key in D.\n"
    "A record modified in the archive is refused (KF_ERR_MFG_ARCHIVE).\n";

/* ---- output and errors ---- */

static int fail(const char *cmd, int rc, const char *what)
{
    fprintf(stderr, "keyfleet-install %s: %s: %s (%s)\n", cmd, what, kf_strerror(rc),
            kf_errname(rc));
    return rc == KF_ERR_CONNECT ? EXIT_CONNECT : EXIT_REFUSED;
}

static int usage_error(const char *cmd, const char *why)
{
    if (cmd)
        fprintf(stderr, "keyfleet-install %s: %s\n(see keyfleet-install %s --help)\n", cmd, why,
                cmd);
    else
        fprintf(stderr, "keyfleet-install: %s\n(see keyfleet-install --help)\n", why);
    return EXIT_USAGE;
}

static void print_hex(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
}

static const char *status_name(uint32_t s)
{
    static const char *const names[] = {"?",      "New",      "Installed",  "Bad",
                                        "Active", "Obsolete", "Transferred"};
    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

static const char *reason_name(int32_t reason)
{
    return reason < 0 ? kf_errname(reason) : "-";
}

/* ---- options ---- */

struct opt {
    const char *name;
    const char **value; /* takes an argument */
    bool *flag;         /* or is a flag */
    const char **many;  /* or may repeat: up to max values */
    size_t *count;
    size_t max;
};
#define OPTS_HELP 1

static int opts_parse(const char *cmd, int argc, char **argv, const struct opt *opts)
{
    for (const struct opt *o = opts; o->name; o++) {
        if (o->value)
            *o->value = NULL;
        if (o->flag)
            *o->flag = false;
        if (o->count)
            *o->count = 0;
    }
    char why[200];
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return OPTS_HELP;
        const struct opt *o = opts;
        while (o->name && strcmp(o->name, argv[i]) != 0)
            o++;
        if (!o->name) {
            snprintf(why, sizeof(why), "unknown option '%.100s'", argv[i]);
            return usage_error(cmd, why);
        }
        if (o->flag) {
            *o->flag = true;
            continue;
        }
        if (i + 1 >= argc) {
            snprintf(why, sizeof(why), "%s needs a value", o->name);
            return usage_error(cmd, why);
        }
        const char *v = argv[++i];
        if (o->many) {
            if (*o->count >= o->max) {
                snprintf(why, sizeof(why), "%s given more than %zu times", o->name, o->max);
                return usage_error(cmd, why);
            }
            o->many[(*o->count)++] = v;
        } else {
            if (*o->value) {
                snprintf(why, sizeof(why), "%s given twice", o->name);
                return usage_error(cmd, why);
            }
            *o->value = v;
        }
    }
    return 0;
}

/* Decimal digits only, value in 1..max (0 allowed when min0). */
static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 20)
        return false;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

/* ---- KMIP over TLS ---- */

struct tls_opts {
    const char *server, *ca, *cert, *key;
};

struct link {
    struct tls_opts o;
    kf_tls_client *tls;
    kf_arena *arena; /* of the current call */
    kf_buf req, resp;
    bool broken;       /* the connection failed: nothing more goes over it */
    int refusal;       /* the kf code of the last refusal */
    char message[512]; /* its Result Message */
};

static int tls_check(const char *cmd, const struct tls_opts *o)
{
    if (!o->server || !o->ca || !o->cert || !o->key)
        return usage_error(cmd, "--server, --ca, --cert and --key are required");
    return 0;
}

static int link_open(const char *cmd, struct link *l, const struct tls_opts *o)
{
    memset(l, 0, sizeof(*l));
    l->o = *o;
    char host[256];
    const char *colon = strrchr(o->server, ':');
    uint64_t port = 0;
    if (!colon || colon == o->server || (size_t)(colon - o->server) >= sizeof(host) ||
        !parse_u64(colon + 1, 65535, &port) || port == 0)
        return usage_error(cmd, "--server wants HOST:PORT");
    memcpy(host, o->server, (size_t)(colon - o->server));
    host[colon - o->server] = 0;
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') { /* [v6]:port */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = 0;
    }
    int rc = kf_buf_alloc(&l->req, 4096, KF_TTLV_DEFAULT_MAX_TOTAL, KF_BUF_SECRET);
    if (rc == KF_OK)
        rc = kf_buf_alloc(&l->resp, 4096, KF_TTLV_DEFAULT_MAX_TOTAL, KF_BUF_SECRET);
    if (rc < 0)
        return fail(cmd, rc, "cannot allocate buffers");
    rc = kf_tls_client_connect(host, (uint16_t)port, o->ca, o->cert, o->key, &l->tls);
    if (rc < 0) {
        fprintf(stderr, "keyfleet-install %s: cannot reach keyfleetd at %s over TLS: %s (%s)\n",
                cmd, o->server, kf_strerror(rc), kf_errname(rc));
        return EXIT_CONNECT;
    }
    return 0;
}

static void link_close(struct link *l)
{
    if (l->tls)
        kf_tls_client_close(l->tls);
    if (l->arena)
        kf_arena_free(l->arena);
    kf_buf_free(&l->req);
    kf_buf_free(&l->resp);
    memset(l, 0, sizeof(*l));
}

/* A new request message for op (in a fresh arena); *payload its Request Payload. */
static kf_ttlv *call_start(struct link *l, uint32_t op, kf_ttlv **payload)
{
    *payload = NULL;
    if (l->arena)
        kf_arena_free(l->arena);
    l->arena = NULL;
    if (kf_arena_new(&l->arena, 0) < 0)
        return NULL;
    return kf_ttlv_request(l->arena, 2, 1, op, payload);
}

/*
 * Send msg (from call_start) and read the answer. KF_OK with *out the Response
 * Payload; a refusal: its kf code (KeyfleetErrorCode, else
 * KF_ERR_DEVICE_SERVER) with l->message set; a transport failure:
 * KF_ERR_CONNECT, and l->broken.
 */
static int call_send(struct link *l, const kf_ttlv *msg, const kf_ttlv **out)
{
    *out = NULL;
    l->refusal = 0;
    l->message[0] = 0;
    if (l->broken)
        return KF_ERR_CONNECT;
    if (!msg)
        return KF_ERR_NOMEM;
    kf_buf_reset(&l->req);
    int rc = kf_ttlv_encode(msg, &l->req);
    if (rc < 0)
        return rc;
    rc = kf_tls_client_call(l->tls, l->req.data, l->req.len, &l->resp);
    if (rc < 0) {
        l->broken = true;
        snprintf(l->message, sizeof(l->message), "no answer from %.200s: %s", l->o.server,
                 kf_strerror(rc));
        return KF_ERR_CONNECT;
    }
    struct kf_ttlv_limits lim = {.max_items = 100000, .max_total = KF_TTLV_DEFAULT_MAX_TOTAL};
    kf_ttlv *r;
    if ((rc = kf_ttlv_decode(l->resp.data, l->resp.len, &lim, l->arena, &r)) < 0) {
        snprintf(l->message, sizeof(l->message), "malformed answer: %s", kf_strerror(rc));
        return rc;
    }
    const kf_ttlv *bi = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
    uint32_t status = 1;
    if (kf_ttlv_get_enum(kf_ttlv_find(bi, KMIP_TAG_RESULT_STATUS), &status) < 0) {
        snprintf(l->message, sizeof(l->message), "the answer has no result status");
        return KF_ERR_FORMAT;
    }
    const kf_ttlv *payload = kf_ttlv_find(bi, KMIP_TAG_RESPONSE_PAYLOAD);
    if (status != KMIP_RESULT_STATUS_SUCCESS) {
        const char *m = "";
        size_t mlen = 0;
        int32_t code = 0;
        if (kf_ttlv_get_text(kf_ttlv_find(bi, KMIP_TAG_RESULT_MESSAGE), &m, &mlen) < 0) {
            m = "";
            mlen = 0;
        }
        if (kf_ttlv_get_int(kf_ttlv_find(payload, KMIP_TAG_KEYFLEET_ERROR_CODE), &code) < 0 ||
            code >= 0)
            code = KF_ERR_DEVICE_SERVER;
        snprintf(l->message, sizeof(l->message), "%.*s", (int)(mlen > 400 ? 400 : mlen), m);
        l->refusal = code;
        return code;
    }
    *out = payload;
    return KF_OK;
}

/* Print why a call failed: the server's message, or the transport's. */
static int call_failed(const char *cmd, const struct link *l, int rc, const char *what)
{
    if (l->broken) {
        fprintf(stderr, "keyfleet-install %s: %s: %s\n", cmd, what, l->message);
        return EXIT_CONNECT;
    }
    if (l->refusal) {
        fprintf(stderr, "keyfleet-install %s: %s: keyfleetd refused: %s\n", cmd, what,
                l->message[0] ? l->message : kf_strerror(rc));
        return EXIT_REFUSED;
    }
    fprintf(stderr, "keyfleet-install %s: %s: %s%s%s (%s)\n", cmd, what, kf_strerror(rc),
            l->message[0] ? ": " : "", l->message, kf_errname(rc));
    return EXIT_REFUSED;
}

/* Append the KeyfleetSignedRecord items of payload to out, back to back. */
static int take_records(const kf_ttlv *payload, kf_buf *out, size_t *count)
{
    *count = 0;
    for (const kf_ttlv *r = kf_ttlv_find(payload, KMIP_TAG_KEYFLEET_SIGNED_RECORD); r;
         r = kf_ttlv_find_next(r, KMIP_TAG_KEYFLEET_SIGNED_RECORD)) {
        KF_GUARD(kf_ttlv_encode(r, out));
        (*count)++;
    }
    return KF_OK;
}

/* Exactly one record in payload, into out (reset first). */
static int take_one_record(const kf_ttlv *payload, kf_buf *out)
{
    size_t n;
    kf_buf_reset(out);
    KF_GUARD(take_records(payload, out, &n));
    KF_ENSURE(n == 1, KF_ERR_MFG_FRAMING);
    return KF_OK;
}

/* Add the TTLV item held in bytes (a signed record, MR1) to parent. */
static int add_item(kf_arena *a, kf_ttlv *parent, const uint8_t *item, size_t len)
{
    struct kf_ttlv_limits lim = {.max_items = 1000, .max_total = KF_TTLV_DEFAULT_MAX_TOTAL};
    kf_ttlv *node;
    KF_GUARD(kf_ttlv_decode(item, len, &lim, a, &node));
    return kf_ttlv_append(parent, node);
}

static int open_station(const char *cmd, const char *dir, const char *key_file, kf_station **st)
{
    int rc = kf_station_open(dir, key_file, st);
    if (rc == KF_ERR_NOT_FOUND) {
        fprintf(stderr,
                "keyfleet-install %s: no station in %s, or its key file is missing"
                " (run keyfleet-install init) (%s)\n",
                cmd, dir, kf_errname(rc));
        return EXIT_REFUSED;
    }
    if (rc == KF_ERR_AUTH) {
        fprintf(stderr,
                "keyfleet-install %s: the station's keys in %s do not open with this"
                " key file (--key-file): %s (%s)\n",
                cmd, dir, kf_strerror(rc), kf_errname(rc));
        return EXIT_REFUSED;
    }
    return rc < 0 ? fail(cmd, rc, dir) : 0;
}

#define TLS_OPTS(t)                                                                                \
    {"--server", &(t).server, NULL, NULL, NULL, 0}, {"--ca", &(t).ca, NULL, NULL, NULL, 0},        \
        {"--cert", &(t).cert, NULL, NULL, NULL, 0},                                                \
    {                                                                                              \
        "--key", &(t).key, NULL, NULL, NULL, 0                                                     \
    }

/* ---- init ---- */

static int cmd_init(int argc, char **argv)
{
    const char *cmd = "init", *dir, *role, *key_file;
    const struct opt opts[] = {{"--state", &dir, NULL, NULL, NULL, 0},
                               {"--role-id", &role, NULL, NULL, NULL, 0},
                               {"--key-file", &key_file, NULL, NULL, NULL, 0},
                               {NULL, NULL, NULL, NULL, NULL, 0}};
    int rc = opts_parse(cmd, argc, argv, opts);
    if (rc == OPTS_HELP)
        return fputs(init_help, stdout), 0;
    if (rc)
        return rc;
    if (!dir || !role)
        return usage_error(cmd, "--state and --role-id are required");
    enum kf_mfg_role_type type;
    if (!kf_mfg_role_id_parse(role, &type) || type != KF_MFG_ROLE_STEEL)
        return usage_error(cmd, "--role-id wants S and 8 digits, e.g. S00000001 (not all zero)");
    rc = kf_station_create(dir, key_file, role);
    if (rc == KF_ERR_EXISTS) {
        fprintf(stderr, "keyfleet-install init: %s already holds a station (%s)\n", dir,
                kf_errname(rc));
        return EXIT_REFUSED;
    }
    if (rc < 0)
        return fail(cmd, rc, "cannot make the station");
    kf_station *st;
    if ((rc = open_station(cmd, dir, key_file, &st)))
        return rc;
    uint8_t sp[32], ep[32];
    kf_station_public(st, sp, ep);
    printf("station %s created in %s (key file %s)\nsign key       ", kf_station_role_id(st), dir,
           key_file ? key_file : "DIR/station.key");
    print_hex(sp, 32);
    printf("\nencryption key ");
    print_hex(ep, 32);
    printf("\nnext: keyfleet-install enroll --state %s --domain D ...\n", dir);
    kf_station_close(st);
    return 0;
}

/* ---- enroll ---- */

static int cmd_enroll(int argc, char **argv)
{
    const char *cmd = "enroll", *dir, *key_file, *domains[16];
    size_t ndomains;
    struct tls_opts t;
    const struct opt opts[] = {{"--state", &dir, NULL, NULL, NULL, 0},
                               {"--key-file", &key_file, NULL, NULL, NULL, 0},
                               {"--domain", NULL, NULL, domains, &ndomains, 16},
                               TLS_OPTS(t),
                               {NULL, NULL, NULL, NULL, NULL, 0}};
    int rc = opts_parse(cmd, argc, argv, opts);
    if (rc == OPTS_HELP)
        return fputs(enroll_help, stdout), 0;
    if (rc)
        return rc;
    if (!dir || ndomains == 0)
        return usage_error(cmd, "--state and at least one --domain are required");
    if ((rc = tls_check(cmd, &t)))
        return rc;
    kf_station *st;
    if ((rc = open_station(cmd, dir, key_file, &st)))
        return rc;
    struct link l;
    if ((rc = link_open(cmd, &l, &t))) {
        kf_station_close(st);
        return rc;
    }
    uint8_t sp[32], ep[32];
    kf_station_public(st, sp, ep);
    kf_buf records = {0};
    int exit_code = 0;
    if ((rc = kf_buf_alloc(&records, 4096, RECORDS_MAX, 0)) < 0)
        exit_code = fail(cmd, rc, "out of memory");
    for (size_t i = 0; i < ndomains && !exit_code; i++) {
        kf_ttlv *p, *msg = call_start(&l, KMIP_OP_KEYFLEET_MFG_ROLE_ENROLL, &p);
        if (msg) {
            kf_ttlv_add_text(l.arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domains[i]);
            kf_ttlv_add_text(l.arena, p, KMIP_TAG_KEYFLEET_ROLE_ID, kf_station_role_id(st));
            kf_ttlv_add_bytes(l.arena, p, KMIP_TAG_KEYFLEET_SIGN_PUB, sp, 32);
            kf_ttlv_add_bytes(l.arena, p, KMIP_TAG_KEYFLEET_ENC_PUB, ep, 32);
        }
        const kf_ttlv *r;
        char what[200];
        snprintf(what, sizeof(what), "enrolment in %.64s", domains[i]);
        if ((rc = call_send(&l, msg, &r)) < 0) {
            exit_code = call_failed(cmd, &l, rc, what);
            break;
        }
        size_t n;
        kf_buf_reset(&records);
        if ((rc = take_records(r, &records, &n)) < 0 ||
            (rc = kf_station_save_certs(st, domains[i], records.data, records.len)) < 0) {
            exit_code = fail(cmd, rc, "the enrolment answer was refused");
            break;
        }
        char m[KF_MFG_ROLE_ID_LEN + 1], o[KF_MFG_ROLE_ID_LEN + 1], b[KF_MFG_ROLE_ID_LEN + 1];
        if (kf_station_domain_role(st, domains[i], KF_MFG_ROLE_AUTHORITY, m, NULL, NULL) < 0 ||
            kf_station_domain_role(st, domains[i], KF_MFG_ROLE_OAK, o, NULL, NULL) < 0 ||
            kf_station_domain_role(st, domains[i], KF_MFG_ROLE_BRASS, b, NULL, NULL) < 0) {
            exit_code = fail(cmd, KF_ERR_MFG_ROLE, "the saved certificates");
            break;
        }
        printf("%s enrolled in %s (authority %s, Oak %s, Brass %s)\n", kf_station_role_id(st),
               domains[i], m, o, b);
    }
    kf_buf_free(&records);
    link_close(&l);
    kf_station_close(st);
    return exit_code;
}

/* ---- line ---- */

/* A simulated device: its secure storage is the file path. */
struct device_file {
    struct steel_device dev; /* dev.m in secure memory */
    char path[PATH_MAX];
};

static int device_store(void *ctx, const uint8_t *state, size_t len)
{
    struct device_file *f = ctx;
    if (f->dev.fail_writes)
        return -1;
    return kf_station_write_file(f->path, state, len) == KF_OK ? 0 : -1;
}

/* The line's transport (src/station/line.h) over the link. */
static int io_request_key(void *ctx, const char *domain, const char *steel_id, kf_buf *out,
                          bool *refused)
{
    struct link *l = ctx;
    kf_ttlv *p, *msg = call_start(l, KMIP_OP_KEYFLEET_MFG_REQUEST_KEY, &p);
    if (msg) {
        kf_ttlv_add_text(l->arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domain);
        kf_ttlv_add_text(l->arena, p, KMIP_TAG_KEYFLEET_STEEL_ID, steel_id);
    }
    const kf_ttlv *r;
    int rc = call_send(l, msg, &r);
    *refused = rc < 0 && l->refusal != 0;
    KF_GUARD(rc);
    return take_one_record(r, out);
}

static int io_report(void *ctx, const char *domain, const uint8_t *report, size_t len, kf_buf *out,
                     bool *refused)
{
    struct link *l = ctx;
    kf_ttlv *p, *msg = call_start(l, KMIP_OP_KEYFLEET_MFG_REPORT_INSTALL, &p);
    if (msg) {
        kf_ttlv_add_text(l->arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domain);
        if (add_item(l->arena, p, report, len) < 0)
            msg = NULL;
    }
    const kf_ttlv *r;
    int rc = call_send(l, msg, &r);
    *refused = rc < 0 && l->refusal != 0;
    KF_GUARD(rc);
    return take_one_record(r, out);
}

static void io_result(void *ctx, const char *msn, const char *domain, uint64_t key_id,
                      const char *status, int reason)
{
    (void)ctx;
    if (key_id)
        printf("%s %s %" PRIu64 " %s %s\n", msn, domain, key_id, status, reason_name(reason));
    else
        printf("%s %s - %s %s\n", msn, domain, status, reason_name(reason));
}

static int line_devices_dir(const char *cmd, const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "keyfleet-install %s: cannot create %s: %s\n", cmd, dir, strerror(errno));
        return EXIT_REFUSED;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "keyfleet-install %s: %s is not a directory\n", cmd, dir);
        return EXIT_REFUSED;
    }
    return 0;
}

static int device_path(char *out, size_t cap, const char *dir, const char *msn)
{
    int n = snprintf(out, cap, "%s/%s.state", dir, msn);
    return n > 0 && (size_t)n < cap ? KF_OK : KF_ERR_LIMIT;
}

struct line_args {
    const char *dir, *key_file, *devices;
    uint64_t count, first;
    struct tls_opts t;
};

/* Parse and check the line's options into ln and a; 0, -1 (help shown), or an exit code. */
static int line_args(struct steel_line *ln, int argc, char **argv, struct line_args *a)
{
    const char *cmd = "line", *count_s, *first_s, *faults[STEEL_FAULTS_MAX];
    size_t nf;
    const struct opt opts[] = {{"--state", &a->dir, NULL, NULL, NULL, 0},
                               {"--key-file", &a->key_file, NULL, NULL, NULL, 0},
                               {"--vendor", &ln->domain[0], NULL, NULL, NULL, 0},
                               {"--postal", &ln->domain[1], NULL, NULL, NULL, 0},
                               {"--count", &count_s, NULL, NULL, NULL, 0},
                               {"--first", &first_s, NULL, NULL, NULL, 0},
                               {"--devices", &a->devices, NULL, NULL, NULL, 0},
                               {"--fault", NULL, NULL, faults, &nf, STEEL_FAULTS_MAX},
                               {"--other-steel", &ln->other_steel, NULL, NULL, NULL, 0},
                               TLS_OPTS(a->t),
                               {NULL, NULL, NULL, NULL, NULL, 0}};
    int rc = opts_parse(cmd, argc, argv, opts);
    if (rc == OPTS_HELP) {
        fputs(line_help, stdout);
        return -1;
    }
    if (rc)
        return rc;
    if (!a->dir || !ln->domain[0] || !ln->domain[1] || !count_s || !a->devices)
        return usage_error(cmd, "--state, --vendor, --postal, --count and --devices are required");
    if ((rc = tls_check(cmd, &a->t)))
        return rc;
    if (strcmp(ln->domain[0], ln->domain[1]) == 0)
        return usage_error(cmd, "--vendor and --postal must name two domains");
    if (!parse_u64(count_s, LINE_MAX_DEVICES, &a->count) || a->count == 0)
        return usage_error(cmd, "--count wants a number of devices, 1..10000000");
    a->first = 1;
    if (first_s && (!parse_u64(first_s, 99999999, &a->first) || a->first == 0))
        return usage_error(cmd, "--first wants a device number, 1..99999999");
    if (a->first + a->count - 1 > 99999999)
        return usage_error(cmd, "--first + --count go past SN99999999");
    if (ln->other_steel && !kf_mfg_role_id_parse(ln->other_steel, NULL))
        return usage_error(cmd, "--other-steel wants a Steel's role ID, S and 8 digits");
    for (size_t i = 0; i < nf; i++) {
        struct steel_fault *f = &ln->faults[ln->nfaults];
        char why[320];
        if (steel_fault_parse(faults[i], f) < 0) {
            snprintf(why, sizeof(why),
                     "--fault '%.60s' wants KIND@N[:postal], KIND one of drop-mi4, bad-token,"
                     " bad-token-unchecked, replay-mi4, wrong-steel, second-install, write-error",
                     faults[i]);
            return usage_error(cmd, why);
        }
        if (f->device < a->first || f->device >= a->first + a->count) {
            snprintf(why, sizeof(why), "--fault '%.60s' names a device outside this line",
                     faults[i]);
            return usage_error(cmd, why);
        }
        bool needs_prev =
            f->kind == STEEL_FAULT_REPLAY_MI4 || f->kind == STEEL_FAULT_SECOND_INSTALL;
        if (needs_prev && f->device == a->first) {
            snprintf(why, sizeof(why), "--fault '%.60s' needs a device before it in this line",
                     faults[i]);
            return usage_error(cmd, why);
        }
        if (f->kind == STEEL_FAULT_WRONG_STEEL && !ln->other_steel)
            return usage_error(cmd, "wrong-steel needs --other-steel SNNNNNNNN (another station"
                                    " enrolled in the domain)");
        ln->nfaults++;
    }
    return 0;
}

/* Nothing is made twice: a device file that exists stops the line before it starts. */
static int line_check_new(const struct line_args *a)
{
    for (uint64_t i = 0; i < a->count; i++) {
        char msn[KFD_METER_MSN_MAX + 1], path[PATH_MAX];
        snprintf(msn, sizeof(msn), "SN%08" PRIu64, a->first + i);
        struct stat sb;
        if (device_path(path, sizeof(path), a->devices, msn) < 0 || lstat(path, &sb) == 0) {
            fprintf(stderr,
                    "keyfleet-install line: %s already exists: a device is made once"
                    " (choose another --first or --devices) (%s)\n",
                    path, kf_errname(KF_ERR_EXISTS));
            return EXIT_REFUSED;
        }
    }
    return 0;
}

static int line_run(struct steel_line *ln, const struct line_args *a, struct link *l)
{
    struct device_file f = {0};
    f.dev.m = kf_secmem_alloc(sizeof(*f.dev.m));
    if (!f.dev.m)
        return fail("line", KF_ERR_SECMEM, "cannot hold the devices' keys");
    int exit_code = 0;
    uint64_t t0 = kf_mono_ns();
    for (uint64_t i = 0; i < a->count; i++) {
        uint64_t number = a->first + i;
        char msn[KFD_METER_MSN_MAX + 1];
        snprintf(msn, sizeof(msn), "SN%08" PRIu64, number);
        int rc = device_path(f.path, sizeof(f.path), a->devices, msn);
        if (rc == KF_OK)
            rc = kfd_meter_init(f.dev.m, msn, device_store, &f);
        if (rc == KF_OK)
            rc = steel_line_device(ln, &f.dev, number);
        kfd_meter_wipe(f.dev.m);
        if (rc < 0) {
            char what[300];
            snprintf(what, sizeof(what), "the line stopped at %s: %s", msn,
                     ln->why[0] ? ln->why : "error");
            exit_code = call_failed("line", l, rc, what);
            break;
        }
    }
    double secs = (double)(kf_mono_ns() - t0) / 1e9;
    const struct steel_line_counts *n = &ln->n;
    printf("line: %" PRIu64 " devices (%" PRIu64 " with both keys Installed, %" PRIu64
           " not), keys installed %" PRIu64 ", bad %" PRIu64 ", lost %" PRIu64
           ", refused by station %" PRIu64 ", by device %" PRIu64 ", by server %" PRIu64
           ", anomalies %" PRIu64 ", %.1f s\n",
           n->complete + n->incomplete, n->complete, n->incomplete, n->installed, n->bad, n->lost,
           n->steel_refused, n->device_refused, n->server_refused, n->anomalies, secs);
    if (!exit_code && (n->incomplete || n->anomalies))
        exit_code = EXIT_INCOMPLETE;
    kf_secmem_free(f.dev.m);
    return exit_code;
}

static int cmd_line(int argc, char **argv)
{
    const char *cmd = "line";
    struct steel_line *ln = calloc(1, sizeof(*ln));
    struct line_args a = {0};
    struct link l = {0};
    if (!ln)
        return fail(cmd, KF_ERR_NOMEM, "out of memory");
    int rc = line_args(ln, argc, argv, &a);
    if (!rc)
        rc = line_devices_dir(cmd, a.devices);
    if (!rc)
        rc = line_check_new(&a);
    if (!rc)
        rc = open_station(cmd, a.dir, a.key_file, &ln->st);
    for (int w = 0; w < 2 && !rc; w++) {
        if (kf_station_domain_role(ln->st, ln->domain[w], KF_MFG_ROLE_OAK, NULL, NULL, NULL) < 0) {
            fprintf(stderr,
                    "keyfleet-install line: this station is not enrolled in %s (run"
                    " keyfleet-install enroll --domain %s) (%s)\n",
                    ln->domain[w], ln->domain[w], kf_errname(KF_ERR_MFG_ROLE));
            rc = EXIT_REFUSED;
        }
    }
    int err;
    if (!rc && (err = steel_line_init(ln)) < 0)
        rc = fail(cmd, err, "cannot start the line");
    if (!rc)
        rc = link_open(cmd, &l, &a.t);
    if (!rc) {
        ln->io = (struct steel_line_io){
            .ctx = &l, .request_key = io_request_key, .report = io_report, .result = io_result};
        rc = line_run(ln, &a, &l);
    }
    link_close(&l);
    steel_line_free(ln);
    kf_station_close(ln->st);
    free(ln);
    return rc < 0 ? 0 : rc;
}

/* ---- register ---- */

/* YYYY-MM-DD (midnight UTC), YYYY-MM-DDTHH:MM:SSZ, or "now". */
static bool parse_date(const char *s, int64_t *out)
{
    if (strcmp(s, "now") == 0) {
        *out = (int64_t)time(NULL);
        return true;
    }
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(s, "%Y-%m-%d", &tm);
    if (end && *end == 'T')
        end = strptime(end, "T%H:%M:%SZ", &tm);
    if (!end || *end)
        return false;
    int year = tm.tm_year + 1900, mon = tm.tm_mon, day = tm.tm_mday;
    time_t t = timegm(&tm);
    struct tm back;
    /* 2026-02-30 is not a date: timegm would roll it into March */
    if (t == (time_t)-1 || !gmtime_r(&t, &back) || back.tm_year + 1900 != year ||
        back.tm_mon != mon || back.tm_mday != day)
        return false;
    *out = (int64_t)t;
    return true;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The *.state files of dir, sorted; *names malloc'ed. */
static int list_states(const char *dir, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    DIR *dp = opendir(dir);
    if (!dp)
        return errno == ENOENT ? KF_ERR_NOT_FOUND : KF_ERR_IO;
    size_t cap = 0;
    int rc = KF_OK;
    struct dirent *e;
    while (rc == KF_OK && (e = readdir(dp))) {
        size_t len = strlen(e->d_name);
        if (len <= 6 || strcmp(e->d_name + len - 6, ".state") != 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 256;
            char **grown = realloc(*names, cap * sizeof(**names));
            if (!grown) {
                rc = KF_ERR_NOMEM;
                break;
            }
            *names = grown;
        }
        if (!((*names)[*n] = strdup(e->d_name)))
            rc = KF_ERR_NOMEM;
        else
            (*n)++;
    }
    closedir(dp);
    if (rc == KF_OK && *n)
        qsort(*names, *n, sizeof(**names), name_cmp);
    return rc;
}

struct reg_args {
    const char *country, *prefix, *earth, *country_domain;
    int64_t date;
};

/* The indicia: the prefix and the trailing digits of the MSN (all of it if none). */
static int make_indicia(const char *prefix, const char *msn, char out[KFD_METER_INDICIA_MAX + 1])
{
    size_t len = strlen(msn), start = len;
    while (start > 0 && msn[start - 1] >= '0' && msn[start - 1] <= '9')
        start--;
    if (start == len)
        start = 0;
    int n = snprintf(out, KFD_METER_INDICIA_MAX + 1, "%s%s", prefix, msn + start);
    return n > 0 && n <= KFD_METER_INDICIA_MAX && kf_mfg_indicia_valid(out) ? KF_OK
                                                                            : KF_ERR_METER_FIELD;
}

/* One device: MR1 made and persisted by the device, MR2 -> MR4 checked. *good when
 * every key of it is now Active. An error only when the run cannot go on. */
static int register_device(struct link *l, const kf_station *st, const struct reg_args *a,
                           const char *path, struct kfd_meter *m, kf_buf *mr1, kf_buf *records,
                           bool *good, uint64_t *active)
{
    *good = false;
    struct device_file d = {0};
    d.dev.m = m;
    snprintf(d.path, sizeof(d.path), "%s", path);
    kf_buf state = {0};
    int rc = kf_station_read_file(path, KFD_METER_STATE_MAX, KF_BUF_SECRET, &state);
    if (rc == KF_OK)
        rc = kfd_meter_load(m, state.data, state.len, device_store, &d);
    kf_buf_free(&state);
    const char *msn = rc == KF_OK ? m->msn : path;
    char indicia[KFD_METER_INDICIA_MAX + 1];
    if (rc == KF_OK)
        rc = make_indicia(a->prefix, m->msn, indicia);
    kf_buf_reset(mr1);
    if (rc == KF_OK)
        rc = kfd_meter_register(m, a->country, indicia, a->date, a->earth, a->country_domain, mr1);
    if (rc < 0) {
        printf("%s - - DeviceRefused %s\n", msn, kf_errname(rc));
        kfd_meter_wipe(m);
        return KF_OK;
    }
    struct kfd_registration r;
    rc = kfd_registration_decode(mr1->data, mr1->len, &r);
    kf_ttlv *p, *msg = rc == KF_OK ? call_start(l, KMIP_OP_KEYFLEET_MFG_REGISTER, &p) : NULL;
    if (msg && add_item(l->arena, p, mr1->data, mr1->len) < 0)
        msg = NULL;
    const kf_ttlv *resp;
    rc = call_send(l, msg, &resp);
    if (rc < 0 && l->refusal) {
        printf("%s - - ServerRefused %s\n", m->msn, kf_errname(rc));
        kfd_meter_wipe(m);
        return KF_OK;
    }
    size_t n = 0;
    kf_buf_reset(records);
    if (rc == KF_OK)
        rc = take_records(resp, records, &n);
    if (rc == KF_OK && n != r.nmacs)
        rc = KF_ERR_MFG_FRAMING;
    size_t at = 0;
    for (size_t i = 0; i < n && rc == KF_OK; i++) {
        struct kf_mfg_envelope env;
        size_t used;
        rc = kf_mfg_envelope_parse(records->data + at, records->len - at, &env, &used);
        /* an earth MAC is answered by the country's Brass under its new key ID */
        const char *domain = a->earth && strcmp(r.mac[i].domain, a->earth) == 0 ? a->country_domain
                                                                                : r.mac[i].domain;
        struct kf_mfg_record rec;
        if (rc == KF_OK)
            rc = steel_check_registered(st, domain, records->data + at, used, &rec);
        if (rc == KF_OK && (strcmp(rec.msn, m->msn) != 0 || strcmp(rec.country, a->country) != 0))
            rc = KF_ERR_MFG_PARAM;
        if (rc == KF_OK) {
            printf("%s %s %" PRIu64 " Active\n", m->msn, domain, rec.key_id);
            (*active)++;
        }
        at += used;
    }
    kfd_meter_wipe(m);
    if (rc < 0) {
        if (!l->broken)
            snprintf(l->message, sizeof(l->message),
                     "the registration answer (MR4) for %.16s does not check", msn);
        return rc;
    }
    *good = true;
    return KF_OK;
}

static int cmd_register(int argc, char **argv)
{
    const char *cmd = "register", *dir, *key_file, *devices, *date_s;
    struct reg_args a;
    struct tls_opts t;
    const struct opt opts[] = {{"--state", &dir, NULL, NULL, NULL, 0},
                               {"--key-file", &key_file, NULL, NULL, NULL, 0},
                               {"--devices", &devices, NULL, NULL, NULL, 0},
                               {"--country", &a.country, NULL, NULL, NULL, 0},
                               {"--indicia-prefix", &a.prefix, NULL, NULL, NULL, 0},
                               {"--date", &date_s, NULL, NULL, NULL, 0},
                               {"--earth-domain", &a.earth, NULL, NULL, NULL, 0},
                               {"--country-domain", &a.country_domain, NULL, NULL, NULL, 0},
                               TLS_OPTS(t),
                               {NULL, NULL, NULL, NULL, NULL, 0}};
    int rc = opts_parse(cmd, argc, argv, opts);
    if (rc == OPTS_HELP)
        return fputs(register_help, stdout), 0;
    if (rc)
        return rc;
    if (!dir || !devices || !a.country || !a.prefix || !date_s)
        return usage_error(cmd, "--state, --devices, --country, --indicia-prefix and --date are"
                                " required");
    if ((rc = tls_check(cmd, &t)))
        return rc;
    if (!kf_mfg_country_valid(a.country))
        return usage_error(cmd, "--country wants two capital letters (ISO 3166), e.g. US");
    if (!parse_date(date_s, &a.date))
        return usage_error(cmd, "--date wants YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or now");
    if (!a.earth != !a.country_domain)
        return usage_error(cmd, "--earth-domain and --country-domain go together");
    char probe[KFD_METER_INDICIA_MAX + 1];
    if (make_indicia(a.prefix, "SN00000001", probe) < 0)
        return usage_error(cmd, "--indicia-prefix wants A-Z 0-9 -, at most 8 characters");
    char **names;
    size_t count;
    if ((rc = list_states(devices, &names, &count)) < 0)
        return fail(cmd, rc, devices);
    kf_station *st = NULL;
    struct link l = {0};
    kf_buf mr1 = {0}, records = {0};
    struct kfd_meter *m = kf_secmem_alloc(sizeof(*m));
    int exit_code = open_station(cmd, dir, key_file, &st);
    if (!exit_code)
        exit_code = link_open(cmd, &l, &t);
    if (!exit_code && (!m || kf_buf_alloc(&mr1, 1024, KFD_REGISTRATION_MAX, 0) < 0 ||
                       kf_buf_alloc(&records, 1024, RECORDS_MAX, 0) < 0))
        exit_code = fail(cmd, KF_ERR_NOMEM, "out of memory");
    uint64_t good = 0, refused = 0, active = 0;
    for (size_t i = 0; i < count && !exit_code; i++) {
        char path[PATH_MAX];
        int n = snprintf(path, sizeof(path), "%s/%s", devices, names[i]);
        if (n < 0 || (size_t)n >= sizeof(path)) {
            exit_code = fail(cmd, KF_ERR_LIMIT, names[i]);
            break;
        }
        bool ok;
        if ((rc = register_device(&l, st, &a, path, m, &mr1, &records, &ok, &active)) < 0) {
            exit_code = call_failed(cmd, &l, rc, "registration stopped");
            break;
        }
        ok ? good++ : refused++;
    }
    printf("register: %" PRIu64 " devices registered to %s (%" PRIu64 " keys Active), %" PRIu64
           " refused\n",
           good, a.country, active, refused);
    if (!exit_code && refused)
        exit_code = EXIT_INCOMPLETE;
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
    kf_secmem_free(m);
    kf_buf_free(&mr1);
    kf_buf_free(&records);
    link_close(&l);
    kf_station_close(st);
    return exit_code;
}

/* ---- status ---- */

static void print_time(const char *label, const kf_ttlv *info, uint32_t tag, bool json)
{
    int64_t v = 0;
    const kf_ttlv *item = kf_ttlv_find(info, tag);
    bool have = item && kf_ttlv_get_datetime(item, &v) == KF_OK;
    char text[40] = "-";
    if (have) {
        time_t tt = (time_t)v;
        struct tm tm;
        if (gmtime_r(&tt, &tm))
            strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    if (json)
        printf(",\"%s\":%s%s%s", label, have ? "\"" : "", have ? text : "null", have ? "\"" : "");
    else
        printf("%-18s%s\n", label, text);
}

static const char *text_or(const kf_ttlv *item, const char *dflt)
{
    const char *s;
    size_t n;
    return item && kf_ttlv_get_text(item, &s, &n) == KF_OK ? s : dflt;
}

static int cmd_status(int argc, char **argv)
{
    const char *cmd = "status", *domain, *key_s, *msn;
    bool json;
    struct tls_opts t;
    const struct opt opts[] = {{"--domain", &domain, NULL, NULL, NULL, 0},
                               {"--key-id", &key_s, NULL, NULL, NULL, 0},
                               {"--msn", &msn, NULL, NULL, NULL, 0},
                               {"--json", NULL, &json, NULL, NULL, 0},
                               TLS_OPTS(t),
                               {NULL, NULL, NULL, NULL, NULL, 0}};
    int rc = opts_parse(cmd, argc, argv, opts);
    if (rc == OPTS_HELP)
        return fputs(status_help, stdout), 0;
    if (rc)
        return rc;
    if (!domain || !key_s == !msn)
        return usage_error(cmd, "--domain and exactly one of --key-id or --msn are required");
    uint64_t key_id = 0;
    if (key_s && (!parse_u64(key_s, INT64_MAX, &key_id) || key_id == 0))
        return usage_error(cmd, "--key-id wants a key ID, 1 or more");
    if (msn && !kf_mfg_msn_valid(msn))
        return usage_error(cmd, "--msn wants 1-16 of A-Z 0-9 -");
    if ((rc = tls_check(cmd, &t)))
        return rc;
    struct link l;
    if ((rc = link_open(cmd, &l, &t)))
        return rc;
    kf_ttlv *p, *msg = call_start(&l, KMIP_OP_KEYFLEET_MFG_STATUS, &p);
    if (msg) {
        kf_ttlv_add_text(l.arena, p, KMIP_TAG_KEYFLEET_DOMAIN, domain);
        if (key_s)
            kf_ttlv_add_long(l.arena, p, KMIP_TAG_KEYFLEET_KEY_ID, (int64_t)key_id);
        else
            kf_ttlv_add_text(l.arena, p, KMIP_TAG_KEYFLEET_MSN, msn);
    }
    const kf_ttlv *r;
    if ((rc = call_send(&l, msg, &r)) < 0) {
        int e = call_failed(cmd, &l, rc, "status");
        link_close(&l);
        return e;
    }
    const kf_ttlv *info = kf_ttlv_find(r, KMIP_TAG_KEYFLEET_MFG_KEY_INFO);
    const kf_ttlv *dom = kf_ttlv_find(info, KMIP_TAG_KEYFLEET_DOMAIN);
    const kf_ttlv *kid = kf_ttlv_find(info, KMIP_TAG_KEYFLEET_KEY_ID);
    const kf_ttlv *moved_dom = dom ? kf_ttlv_find_next(dom, KMIP_TAG_KEYFLEET_DOMAIN) : NULL;
    const kf_ttlv *moved_kid = kid ? kf_ttlv_find_next(kid, KMIP_TAG_KEYFLEET_KEY_ID) : NULL;
    int64_t id = 0, moved_id = 0;
    uint32_t status = 0;
    int32_t reason = 0;
    if (!info || kf_ttlv_get_long(kid, &id) < 0 ||
        kf_ttlv_get_enum(kf_ttlv_find(info, KMIP_TAG_KEYFLEET_KEY_STATUS), &status) < 0) {
        link_close(&l);
        return fail(cmd, KF_ERR_FORMAT, "the status answer lacks its key information");
    }
    if (kf_ttlv_get_int(kf_ttlv_find(info, KMIP_TAG_KEYFLEET_REASON), &reason) < 0)
        reason = 0;
    if (moved_kid && kf_ttlv_get_long(moved_kid, &moved_id) < 0)
        moved_id = 0;
    const char *fields[][2] = {
        {"steel", text_or(kf_ttlv_find(info, KMIP_TAG_KEYFLEET_STEEL_ID), "-")},
        {"msn", text_or(kf_ttlv_find(info, KMIP_TAG_KEYFLEET_MSN), "-")},
        {"indicia", text_or(kf_ttlv_find(info, KMIP_TAG_KEYFLEET_INDICIA), "-")},
        {"country", text_or(kf_ttlv_find(info, KMIP_TAG_KEYFLEET_COUNTRY), "-")}};
    static const struct {
        const char *label;
        uint32_t tag;
    } times[] = {{"requested", KMIP_TAG_KEYFLEET_REQUEST_TIME},
                 {"installed", KMIP_TAG_KEYFLEET_INSTALL_TIME},
                 {"install_verified", KMIP_TAG_KEYFLEET_INSTALL_VERIFY_TIME},
                 {"registered", KMIP_TAG_KEYFLEET_REGISTER_TIME},
                 {"register_verified", KMIP_TAG_KEYFLEET_REGISTER_VERIFY_TIME}};
    if (json) {
        printf("{\"domain\":\"%s\",\"key_id\":%" PRId64 ",\"status\":\"%s\",\"reason\":\"%s\"",
               text_or(dom, ""), id, status_name(status), reason_name(reason));
        for (size_t i = 0; i < 4; i++)
            printf(",\"%s\":\"%s\"", fields[i][0], fields[i][1]);
        for (size_t i = 0; i < 5; i++)
            print_time(times[i].label, info, times[i].tag, true);
        if (moved_dom)
            printf(",\"moved_to\":\"%s\",\"moved_key_id\":%" PRId64, text_or(moved_dom, ""),
                   moved_id);
        printf("}\n");
    } else {
        printf("%-18s%s\n%-18s%" PRId64 "\n%-18s%s\n%-18s%s\n", "domain", text_or(dom, ""),
               "key_id", id, "status", status_name(status), "reason", reason_name(reason));
        for (size_t i = 0; i < 4; i++)
            printf("%-18s%s\n", fields[i][0], fields[i][1]);
        for (size_t i = 0; i < 5; i++)
            print_time(times[i].label, info, times[i].tag, false);
        if (moved_dom)
            printf("%-18s%s/%" PRId64 "\n", "moved_to", text_or(moved_dom, ""), moved_id);
    }
    link_close(&l);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error(NULL, "no command");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    /* Nothing this tool writes is for anyone else. */
    umask(077);
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"init", cmd_init},
                {"enroll", cmd_enroll},
                {"line", cmd_line},
                {"register", cmd_register},
                {"status", cmd_status}};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(cmd, cmds[i].name) == 0)
            return cmds[i].fn(argc - 2, argv + 2);
    char why[200];
    snprintf(why, sizeof(why), "unknown command '%.100s'", cmd);
    return usage_error(NULL, why);
}
