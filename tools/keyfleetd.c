/*
 * keyfleetd: owns the data directory and the security module, serves KMIP
 * TTLV on the local admin socket.
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
            "  --version              print the version\n\n"
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
    enum { OPT_SOCKET = 1000, OPT_DEV, OPT_MODULE, OPT_TOKEN, OPT_PIN, OPT_LOG, OPT_CKPT, OPT_VER };
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
        {NULL, 0, NULL, 0},
    };
    const char *dir = getenv("KEYFLEET_DIR") ? getenv("KEYFLEET_DIR") : "data";
    const char *socket_path = NULL, *log_file = NULL, *pin_file = NULL;
    struct kf_kms_config cfg = {0};
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
    struct kf_local_server_config scfg = {.socket_path = socket_path, .kms = kms};
    rc = kf_local_server_run(&scfg, &stop_requested);
    kf_info("keyfleetd stopping");
    kf_kms_close(kms);
    return rc < 0 ? 1 : 0;
}
