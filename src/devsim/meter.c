/*
 * The simulated postage device (seed EP 0 735 720; docs/manufacturing.md
 * "Tools"): "keyfleet-device meter show" and "keyfleet-device meter print" on
 * a device state file made by keyfleet-install line. The state file is the
 * device's secure storage (it holds its master keys in the clear, as a
 * device's protected memory would); nothing here ever prints a key.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "devsim/devsim.h"
#include "keyfleet/meter.h"
#include "keyfleet/secmem.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define PRINT_MAX 1000000u

static const char *const show_help =
    "Usage: keyfleet-device meter show --state FILE [--json]\n"
    "What a postage device holds, never a key: its manufacturing serial number (MSN),\n"
    "country, indicia number and registration date once registered, the last piece\n"
    "count, and one line per master key slot: domain and key ID.\n";

static const char *const print_help =
    "Usage: keyfleet-device meter print --state FILE --vendor VE --postal DOMAIN\n"
    "         --date YYYYMMDD --value N --postal-code C [--count N]\n"
    "Print N pieces (default 1) of postage VALUE (smallest currency unit) dated DATE from\n"
    "origin postal code C (1-10 of A-Z 0-9 -): each takes the next piece count, which is\n"
    "stored before its tokens are made, and carries a token of the vendor key and one of\n"
    "the postal key for DATE's month. One line per piece on stdout, the printed indicium:\n"
    "  KF1 <msn> <YYYYMMDD> <value> <count> <postal code> <vendor token> <postal token>\n"
    "The device must be registered (keyfleet-install register) and DATE not before its\n"
    "registration.\n";

struct meter_file {
    const char *path;
};

static int meter_store(void *ctx, const uint8_t *state, size_t len)
{
    const struct meter_file *f = ctx;
    return ds_file_write_atomic(f->path, state, len) == KF_OK ? 0 : -1;
}

static int refuse(const char *sub, int rc, const char *what)
{
    fprintf(stderr, "keyfleet-device meter %s: %s: %s (%s)\n", sub, what, kf_strerror(rc),
            kf_errname(rc));
    return EXIT_REFUSED;
}

static int usage(const char *sub, const char *why)
{
    fprintf(stderr, "keyfleet-device meter %s: %s\n(see keyfleet-device meter %s --help)\n", sub,
            why, sub);
    return EXIT_USAGE;
}

/* Parse options; -1 after printing help, an exit code, or 0. */
static int parse(const char *sub, int argc, char **argv, const struct ds_opt *opts,
                 const char *help)
{
    char why[200];
    int rc = ds_opts_parse(argc, argv, opts, why, sizeof(why));
    if (rc == DS_OPTS_HELP) {
        fputs(help, stdout);
        return -1;
    }
    return rc < 0 ? usage(sub, why) : 0;
}

/* Load the device from its state file into m (secure memory). */
static int meter_open(const char *sub, struct meter_file *f, struct kfd_meter *m)
{
    kf_buf state = {0};
    int rc = ds_file_read(f->path, KFD_METER_STATE_MAX, KF_BUF_SECRET, &state);
    if (rc == KF_ERR_NOT_FOUND) {
        fprintf(stderr, "keyfleet-device meter %s: no device state at %s (%s)\n", sub, f->path,
                kf_errname(rc));
        return EXIT_REFUSED;
    }
    if (rc == KF_OK)
        rc = kfd_meter_load(m, state.data, state.len, meter_store, f);
    kf_buf_free(&state);
    return rc < 0 ? refuse(sub, rc, f->path) : 0;
}

static void format_day(int64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!t || !gmtime_r(&tt, &tm) || !strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, cap, "-");
}

static int meter_show(int argc, char **argv)
{
    struct meter_file f;
    bool json;
    const struct ds_opt opts[] = {
        {"--state", &f.path, NULL}, {"--json", NULL, &json}, {NULL, NULL, NULL}};
    int rc = parse("show", argc, argv, opts, show_help);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (!f.path)
        return usage("show", "--state is required");
    struct kfd_meter *m = kf_secmem_alloc(sizeof(*m));
    if (!m)
        return refuse("show", KF_ERR_SECMEM, "cannot hold the device's keys");
    if ((rc = meter_open("show", &f, m))) {
        kf_secmem_free(m);
        return rc;
    }
    char reg[32];
    format_day(m->registered_at, reg, sizeof(reg));
    if (json) {
        printf("{\"msn\":");
        ds_json_string(stdout, m->msn);
        printf(",\"country\":");
        ds_json_string(stdout, m->country);
        printf(",\"indicia\":");
        ds_json_string(stdout, m->indicia);
        printf(",\"registered_at\":%" PRId64 ",\"piece_count\":%" PRIu64 ",\"keys\":[",
               m->registered_at, m->piece_count);
    } else {
        printf("msn          %s\ncountry      %s\nindicia      %s\nregistered   %s\n"
               "piece count  %" PRIu64 "\n",
               m->msn, m->country[0] ? m->country : "-", m->indicia[0] ? m->indicia : "-", reg,
               m->piece_count);
    }
    bool first = true;
    for (size_t i = 0; i < KFD_METER_DOMAINS; i++) {
        const struct kfd_meter_slot *s = &m->slot[i];
        if (!s->used)
            continue;
        if (json) {
            printf("%s{\"domain\":", first ? "" : ",");
            ds_json_string(stdout, s->domain);
            printf(",\"key_id\":%" PRIu64 "}", s->key_id);
        } else {
            printf("key          %s %" PRIu64 "\n", s->domain, s->key_id);
        }
        first = false;
    }
    if (json)
        printf("]}\n");
    kfd_meter_wipe(m);
    kf_secmem_free(m);
    return 0;
}

static int number(const char *name, const char *v, uint64_t max, uint64_t *out)
{
    if (ds_parse_u64(v, max, out) == KF_OK)
        return 0;
    char why[200];
    snprintf(why, sizeof(why), "%s wants a whole number 0..%" PRIu64 ", not '%.60s'", name, max, v);
    return usage("print", why);
}

static int meter_print(int argc, char **argv)
{
    struct meter_file f;
    const char *vendor, *postal, *date_s, *value_s, *code, *count_s;
    const struct ds_opt opts[] = {{"--state", &f.path, NULL},  {"--vendor", &vendor, NULL},
                                  {"--postal", &postal, NULL}, {"--date", &date_s, NULL},
                                  {"--value", &value_s, NULL}, {"--postal-code", &code, NULL},
                                  {"--count", &count_s, NULL}, {NULL, NULL, NULL}};
    int rc = parse("print", argc, argv, opts, print_help);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (!f.path || !vendor || !postal || !date_s || !value_s || !code)
        return usage("print", "--state, --vendor, --postal, --date, --value and --postal-code are"
                              " required");
    uint64_t date, value, count = 1;
    if ((rc = number("--date", date_s, 99991231, &date)) ||
        (rc = number("--value", value_s, UINT32_MAX, &value)) ||
        (count_s && (rc = number("--count", count_s, PRINT_MAX, &count))))
        return rc;
    struct kfd_meter *m = kf_secmem_alloc(sizeof(*m));
    if (!m)
        return refuse("print", KF_ERR_SECMEM, "cannot hold the device's keys");
    if ((rc = meter_open("print", &f, m))) {
        kf_secmem_free(m);
        return rc;
    }
    for (uint64_t i = 0; i < count && !rc; i++) {
        struct kfd_piece piece;
        char line[KFD_PIECE_TEXT_MAX];
        int err = kfd_meter_print(m, vendor, postal, (uint32_t)date, (uint32_t)value, code, &piece);
        if (err == KF_OK)
            err = kfd_piece_format(&piece, line);
        if (err < 0) {
            char what[64];
            snprintf(what, sizeof(what), "piece %" PRIu64 " of %" PRIu64, i + 1, count);
            rc = refuse("print", err, what);
            break;
        }
        puts(line);
    }
    kfd_meter_wipe(m);
    kf_secmem_free(m);
    return rc;
}

int ds_meter_main(int argc, char **argv)
{
    if (argc < 1) {
        fprintf(stderr, "keyfleet-device meter: show or print\n");
        return EXIT_USAGE;
    }
    if (strcmp(argv[0], "show") == 0)
        return meter_show(argc - 1, argv + 1);
    if (strcmp(argv[0], "print") == 0)
        return meter_print(argc - 1, argv + 1);
    fprintf(stderr, "keyfleet-device meter: show or print, not '%.60s'\n", argv[0]);
    return EXIT_USAGE;
}
