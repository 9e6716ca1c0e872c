/*
 * keyfleetd: owns the data directory and the security module, serves KMIP
 * TTLV on the local admin socket and, when configured (always in --dev),
 * KMIP over mutually authenticated TLS on a TCP port.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfleet/kms.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "keyfleet/server.h"
#include "keyfleet/tls.h"
#include "keyfleet/tlssplit.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: keyfleetd [options]\n"
            "Serve keyfleet's key store on the local admin socket (KMIP TTLV).\n\n"
            "  --dir DIR              data directory (default: $KEYFLEET_DIR or ./data)\n"
            "  --socket PATH          admin socket (default: DIR/keyfleetd.sock)\n"
            "  --dev                  development mode: soft security module with a 1-of-1\n"
            "                         root key file in DIR that unseals itself (never in production)\n"
            "  --pkcs11-module PATH   keep the root key in a PKCS#11 token (e.g.\n"
            "                         /usr/lib/softhsm/libsofthsm2.so)\n"
            "  --token-label LABEL    PKCS#11 token to use\n"
            "  --pin-file FILE        PKCS#11 user PIN, to unseal at start (file mode 0600)\n"
            "  --log-file FILE        append the log here (default: stderr)\n"
            "  --audit-checkpoint N   MAC checkpoint every N audit records (default 64)\n"
            "  -v, --verbose          debug logging\n"
            "  -h, --help             this text\n"
            "  --version              print the version\n"
            "\nKMIP over TLS (TLS 1.2/1.3, client certificate required):\n"
            "  --kmip-listen ADDR:PORT  listen here (e.g. 0.0.0.0:5696, [::]:5696; port 0 =\n"
            "                         any free port). Without it there is no TLS listener,\n"
            "                         except in --dev: 127.0.0.1:5696 when that port is free\n"
            "  --kmip-ca FILE         PEM CA certificate(s) client certificates must chain to\n"
            "  --kmip-cert FILE       PEM server certificate (chain)\n"
            "  --kmip-key FILE|URL    PEM server key, or a pkcs11: URL of a key in a token\n"
            "  --kmip-pkcs11-module PATH  PKCS#11 module holding the pkcs11: key\n"
            "  --kmip-pin-file FILE   PIN of the token holding the pkcs11: key (mode 0600)\n"
            "  --kmip-identities FILE identity map: which certificate gets which roles and\n"
            "                         domains (format: docs/architecture.md, KMIP over TLS)\n"
            "  --kmip-max-connections N  at most N TLS connections (default 256)\n"
            "  --no-kmip              no TLS listener, even in --dev\n"
            "  --tls-mode MODE        split (default): handshakes and the server key in a\n"
            "                         separate session handler process, the records in\n"
            "                         workers that hold only traffic keys (docs/tls-split.md);\n"
            "                         monolithic: one GnuTLS session per connection thread of\n"
            "                         keyfleetd, for comparison\n"
            "  --split-workers KIND   split mode's record layer: processes (default: confined\n"
            "                         worker processes that relay each KMIP request to\n"
            "                         keyfleetd) or threads (threads of keyfleetd)\n"
            "  --record-aead IMPL     split mode's record protection: gnutls (default: GnuTLS's\n"
            "                         AEAD, fastest here) or nettle (nettle's gcm/chacha_poly1305)\n"
            "  In --dev, missing --kmip-ca/--kmip-cert/--kmip-key/--kmip-identities come from\n"
            "  DIR/certs, generated at first start (dev CA, server, 'admin' and 'user' clients).\n"
            "\n"

            "Without --dev the server starts sealed: run 'keyfleet init' once, then\n"
            "'keyfleet unseal' with M of the N operator shares after every start.\n");
}

static int read_pin_file(const char *path, char *pin, size_t len)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return KF_ERR_IO;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || (sb.st_mode & 077)) {
        close(fd);
        fprintf(stderr, "keyfleetd: %s must not be readable by group or others (chmod 600)\n",
                path);
        return KF_ERR_PERM;
    }
    ssize_t n = read(fd, pin, len - 1);
    close(fd);
    if (n <= 0)
        return KF_ERR_IO;
    pin[n] = 0;
    pin[strcspn(pin, "\r\n")] = 0;
    return KF_OK;
}

/* Options of the KMIP TLS listener, as given on the command line. */
struct kmip_options {
    const char *listen, *ca, *cert, *key, *pkcs11_module, *pin_file, *identities;
    unsigned max_connections;
    bool disabled;
    bool split; /* --tls-mode split */
    unsigned split_workers; /* enum kf_tlssplit_workers */
};

/*
 * Start the TLS listener if configured. --dev fills what is missing from
 * DIR/certs (generated at first start) and listens on 127.0.0.1:5696 by
 * default, but an occupied default port only costs the TLS listener, so
 * several dev daemons (tests) can run side by side.
 */
/* --tls-mode split: the same options, handshakes in a session handler process. */
static int start_split(kf_kms *kms, const struct kmip_options *o, const char *pin,
                       const char *log_file, kf_tlssplit_server **out)
{
    struct kf_tlssplit_server_config cfg = {.kms = kms,
                                            .listen = o->listen,
                                            .max_connections = o->max_connections,
                                            .workers = o->split_workers};
    cfg.handler = (struct kf_tlssplit_handler_config){.ca_file = o->ca,
                                                      .cert_file = o->cert,
                                                      .key_file = o->key,
                                                      .pkcs11_module = o->pkcs11_module,
                                                      .key_pin = pin,
                                                      .identities_file = o->identities,
                                                      .log_file = log_file,
                                                      .log_level = KF_LOG_INFO,
                                                      .exec_path = "/proc/self/exe",
                                                      /* honoured in KF_TEST_HOOKS builds only */
                                                      .test_reveal_secrets =
                                                          getenv("KF_TEST_REVEAL_FILE") != NULL};
    return kf_tlssplit_server_start(&cfg, out);
}

static int start_kmip_tls(kf_kms *kms, const char *dir, bool dev, struct kmip_options *o,
                          char *pin, size_t pin_len, kf_tls_server **srv,
                          const char *log_file, kf_tlssplit_server **split)
{
    *split = NULL;
    struct kf_tls_dev_files devf;
    char certs[4200];
    bool default_listen = false;
    *srv = NULL;
    if (o->disabled || (!dev && !o->listen))
        return KF_OK;
    if (!o->listen) {
        o->listen = "127.0.0.1:5696";
        default_listen = true;
    }
    if (dev && (!o->ca || !o->cert || !o->key || !o->identities)) {
        snprintf(certs, sizeof(certs), "%s/certs", dir);
        int rc = kf_tls_dev_certs(certs, &devf);
        if (rc < 0) {
            fprintf(stderr, "keyfleetd: cannot create dev certificates in %s: %s\n", certs,
                    kf_strerror(rc));
            return rc;
        }
        o->ca = o->ca ? o->ca : devf.ca_cert;
        if (!o->cert && !o->key) {
            o->cert = devf.server_cert;
            o->key = devf.server_key;
        }
        o->identities = o->identities ? o->identities : devf.identities;
        kf_info("dev TLS files: CA %s, identities %s", devf.ca_cert, devf.identities);
        kf_info("dev TLS client 'admin' (every role): %s %s", devf.admin_cert, devf.admin_key);
        kf_info("dev TLS client 'user' (use, domain default): %s %s", devf.user_cert,
                devf.user_key);
    }
    if (!o->ca || !o->cert || !o->key || !o->identities) {
        fprintf(stderr, "keyfleetd: --kmip-listen needs --kmip-ca, --kmip-cert, --kmip-key and "
                        "--kmip-identities\n");
        return KF_ERR_USAGE;
    }
    if (o->pin_file && read_pin_file(o->pin_file, pin, pin_len) < 0) {
        fprintf(stderr, "keyfleetd: cannot read PIN file %s\n", o->pin_file);
        return KF_ERR_IO;
    }
    struct kf_tls_server_config tcfg = {.kms = kms,
                                        .listen = o->listen,
                                        .ca_file = o->ca,
                                        .cert_file = o->cert,
                                        .key_file = o->key,
                                        .pkcs11_module = o->pkcs11_module,
                                        .key_pin = o->pin_file ? pin : NULL,
                                        .identities_file = o->identities,
                                        .max_connections = o->max_connections};
    int rc = o->split ? start_split(kms, o, o->pin_file ? pin : NULL, log_file, split)
                      : kf_tls_server_start(&tcfg, srv);
    if (rc == KF_ERR_IO && dev && default_listen) { /* could not bind the default port */
        kf_warn("dev: %s is busy; no KMIP TLS listener (give --kmip-listen)", o->listen);
        return KF_OK;
    }
    if (rc < 0)
        fprintf(stderr, "keyfleetd: cannot start the KMIP TLS listener on %s: %s\n", o->listen,
                kf_strerror(rc));
    return rc;
}

/* One daemon per data directory. */
static int lock_dir(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/keyfleetd.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "keyfleetd: another keyfleetd already serves %s\n", dir);
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || write(fd, pid, (size_t)n) != n)
        kf_warn("cannot record the pid in %s", path);
    return fd; /* held open for the life of the process */
}

int main(int argc, char **argv)
{
    enum {
        OPT_SOCKET = 1000, OPT_DEV, OPT_MODULE, OPT_TOKEN, OPT_PIN, OPT_LOG, OPT_CKPT, OPT_VER,
        OPT_KMIP_LISTEN, OPT_KMIP_CA, OPT_KMIP_CERT, OPT_KMIP_KEY, OPT_KMIP_MODULE, OPT_KMIP_PIN,
        OPT_KMIP_IDS, OPT_KMIP_MAX, OPT_NO_KMIP, OPT_TLS_MODE, OPT_SPLIT_WORKERS,
        OPT_RECORD_AEAD
    };
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"socket", required_argument, NULL, OPT_SOCKET},
        {"dev", no_argument, NULL, OPT_DEV},
        {"pkcs11-module", required_argument, NULL, OPT_MODULE},
        {"token-label", required_argument, NULL, OPT_TOKEN},
        {"pin-file", required_argument, NULL, OPT_PIN},
        {"log-file", required_argument, NULL, OPT_LOG},
        {"audit-checkpoint", required_argument, NULL, OPT_CKPT},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VER},
        {"kmip-listen", required_argument, NULL, OPT_KMIP_LISTEN},
        {"kmip-ca", required_argument, NULL, OPT_KMIP_CA},
        {"kmip-cert", required_argument, NULL, OPT_KMIP_CERT},
        {"kmip-key", required_argument, NULL, OPT_KMIP_KEY},
        {"kmip-pkcs11-module", required_argument, NULL, OPT_KMIP_MODULE},
        {"kmip-pin-file", required_argument, NULL, OPT_KMIP_PIN},
        {"kmip-identities", required_argument, NULL, OPT_KMIP_IDS},
        {"kmip-max-connections", required_argument, NULL, OPT_KMIP_MAX},
        {"no-kmip", no_argument, NULL, OPT_NO_KMIP},
        {"tls-mode", required_argument, NULL, OPT_TLS_MODE},
        {"split-workers", required_argument, NULL, OPT_SPLIT_WORKERS},
        {"record-aead", required_argument, NULL, OPT_RECORD_AEAD},
        {NULL, 0, NULL, 0},
    };
    /* The split TLS endpoint's session handler: this binary, exec'd by itself. */
    if (argc == 2 && strcmp(argv[1], KF_TLSSPLIT_HANDLER_ARG) == 0)
        return kf_tlssplit_handler_main();
    /* ... and a KMIP worker process of --split-workers processes. */
    if (argc == 2 && strcmp(argv[1], KF_TLSSPLIT_WORKER_ARG) == 0)
        return kf_tlssplit_worker_main();
    const char *dir = getenv("KEYFLEET_DIR") ? getenv("KEYFLEET_DIR") : "data";
    const char *socket_path = NULL, *log_file = NULL, *pin_file = NULL;
    struct kf_kms_config cfg = {0};
    /* The split endpoint with confined worker processes unless told otherwise. */
    struct kmip_options kmip = {.split = true, .split_workers = KF_TLSSPLIT_WORKERS_PROCESSES};
    enum kf_log_level level = KF_LOG_INFO;
    int c;
    while ((c = getopt_long(argc, argv, "d:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case OPT_SOCKET: socket_path = optarg; break;
        case OPT_DEV: cfg.dev = true; break;
        case OPT_MODULE: cfg.pkcs11_module = optarg; break;
        case OPT_TOKEN: cfg.token_label = optarg; break;
        case OPT_PIN: pin_file = optarg; break;
        case OPT_LOG: log_file = optarg; break;
        case OPT_CKPT: cfg.audit_checkpoint_interval = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'v': level = KF_LOG_DEBUG; break;
        case 'h': usage(stdout); return 0;
        case OPT_VER: puts("keyfleetd 0.1.0"); return 0;
        case OPT_KMIP_LISTEN: kmip.listen = optarg; break;
        case OPT_KMIP_CA: kmip.ca = optarg; break;
        case OPT_KMIP_CERT: kmip.cert = optarg; break;
        case OPT_KMIP_KEY: kmip.key = optarg; break;
        case OPT_KMIP_MODULE: kmip.pkcs11_module = optarg; break;
        case OPT_KMIP_PIN: kmip.pin_file = optarg; break;
        case OPT_KMIP_IDS: kmip.identities = optarg; break;
        case OPT_KMIP_MAX: kmip.max_connections = (unsigned)strtoul(optarg, NULL, 10); break;
        case OPT_NO_KMIP: kmip.disabled = true; break;
        case OPT_TLS_MODE:
            if (strcmp(optarg, "split") != 0 && strcmp(optarg, "monolithic") != 0) {
                fprintf(stderr, "keyfleetd: --tls-mode is split or monolithic\n");
                return 2;
            }
            kmip.split = strcmp(optarg, "split") == 0;
            break;
        case OPT_SPLIT_WORKERS:
            if (strcmp(optarg, "processes") != 0 && strcmp(optarg, "threads") != 0) {
                fprintf(stderr, "keyfleetd: --split-workers is processes or threads\n");
                return 2;
            }
            kmip.split_workers = strcmp(optarg, "threads") == 0 ? KF_TLSSPLIT_WORKERS_THREADS
                                                                : KF_TLSSPLIT_WORKERS_PROCESSES;
            break;
        case OPT_RECORD_AEAD:
            if (strcmp(optarg, "gnutls") != 0 && strcmp(optarg, "nettle") != 0) {
                fprintf(stderr, "keyfleetd: --record-aead is gnutls or nettle\n");
                return 2;
            }
            /* Read by the record layer in this process and in the exec'd workers. */
            if (setenv("KF_TLSREC_AEAD", optarg, 1) != 0) {
                fprintf(stderr, "keyfleetd: cannot set the record AEAD\n");
                return 1;
            }
            break;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (cfg.pkcs11_module && (!cfg.token_label || cfg.dev)) {
        fprintf(stderr, "keyfleetd: --pkcs11-module needs --token-label and excludes --dev\n");
        return 2;
    }
    if (kf_process_harden() != 0)
        fprintf(stderr, "keyfleetd: warning: could not disable core dumps\n");
    if (kf_log_open(log_file, level) != 0) {
        fprintf(stderr, "keyfleetd: cannot open log file %s: %s\n", log_file, strerror(errno));
        return 1;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "keyfleetd: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if (lock_dir(dir) < 0)
        return 1;
    char pin[256] = "";
    if (pin_file) {
        if (read_pin_file(pin_file, pin, sizeof(pin)) < 0) {
            fprintf(stderr, "keyfleetd: cannot read PIN file %s\n", pin_file);
            return 1;
        }
        cfg.pin = pin;
    }
    cfg.dir = dir;
    kf_kms *kms;
    int rc = kf_kms_open(&cfg, &kms);
    kf_wipe(pin, sizeof(pin));
    if (rc < 0) {
        fprintf(stderr, "keyfleetd: cannot start: %s (%s)\n", kf_strerror(rc), kf_errname(rc));
        return 1;
    }
    char sock[4200];
    if (!socket_path) {
        snprintf(sock, sizeof(sock), "%s/%s", dir, KF_SOCKET_NAME);
        socket_path = sock;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct kf_kms_status st;
    if (kf_kms_status(kms, &st) == KF_OK)
        kf_info("keyfleetd 0.1.0: data %s, backend %s%s, %s", dir, st.backend,
                st.dev ? " (dev mode)" : "",
                !st.initialised ? "not initialised (run keyfleet init)"
                : st.sealed     ? "sealed (run keyfleet unseal)"
                                : "unsealed");
    kf_tls_server *tls = NULL;
    kf_tlssplit_server *split = NULL;
    char kmip_pin[256] = "";
    rc = start_kmip_tls(kms, dir, cfg.dev, &kmip, kmip_pin, sizeof(kmip_pin), &tls, log_file,
                        &split);
    if (rc < 0) {
        kf_wipe(kmip_pin, sizeof(kmip_pin));
        kf_kms_close(kms);
        return 1;
    }
    struct kf_local_server_config scfg = {.socket_path = socket_path, .kms = kms};
    rc = kf_local_server_run(&scfg, &stop_requested);
    kf_info("keyfleetd stopping");
    kf_tls_server_stop(tls);
    kf_tlssplit_server_stop(split);
    kf_wipe(kmip_pin, sizeof(kmip_pin));
    kf_kms_close(kms);
    return rc < 0 ? 1 : 0;
}
