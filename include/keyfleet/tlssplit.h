/*
 * The split TLS endpoint (DE 10 2022 203 797; docs/tls-split.md).
 *
 * A session handler process runs every handshake with GnuTLS and keeps the
 * long-term key, the session-ticket key and every resumption and traffic
 * secret. After the handshake it gives the worker -- the side that serves the
 * application -- only what gnutls_record_get_state() returns per direction:
 * cipher key, IV and sequence number. The worker protects and parses
 * application_data records itself (kf_tlsrec below); any other record
 * (alert, KeyUpdate, NewSessionTicket, renegotiation) goes back to the
 * handler with the sequence numbers, and the handler, having set them with
 * gnutls_record_set_state(), processes it and hands back the new state.
 * Exactly one side is the active endpoint of a connection at any time.
 */
#ifndef KEYFLEET_TLSSPLIT_H
#define KEYFLEET_TLSSPLIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/error.h"
#include "keyfleet/kms.h"

/* ---- Record layer (the worker's) --------------------------------------------
 *
 * TLS 1.3 (RFC 8446 §5): AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305;
 * TLS 1.2 AEAD: AES-GCM (RFC 5288) and ChaCha20-Poly1305 (RFC 7905).
 */
#define KF_TLSREC_HEADER_LEN 5
#define KF_TLSREC_PLAINTEXT_MAX 16384                          /* 2^14 */
#define KF_TLSREC_TLS13_CIPHERTEXT_MAX (KF_TLSREC_PLAINTEXT_MAX + 256)  /* RFC 8446 §5.2 */
#define KF_TLSREC_TLS12_CIPHERTEXT_MAX (KF_TLSREC_PLAINTEXT_MAX + 2048) /* RFC 5246 §6.2.3 */
/* Room for any one record, header included. */
#define KF_TLSREC_MAX (KF_TLSREC_HEADER_LEN + KF_TLSREC_TLS12_CIPHERTEXT_MAX)

enum kf_tlsrec_type {
    KF_TLSREC_CHANGE_CIPHER_SPEC = 20,
    KF_TLSREC_ALERT = 21,
    KF_TLSREC_HANDSHAKE = 22,
    KF_TLSREC_APPLICATION_DATA = 23,
};
enum kf_tlsrec_version { KF_TLSREC_TLS12 = 0x0303, KF_TLSREC_TLS13 = 0x0304 };
enum kf_tlsrec_cipher {
    KF_TLSREC_AES_128_GCM = 1,
    KF_TLSREC_AES_256_GCM = 2,
    KF_TLSREC_CHACHA20_POLY1305 = 3,
};

/*
 * One direction's traffic state: the negotiated version and cipher, and
 * exactly what gnutls_record_get_state() returns: the cipher key, the IV
 * (TLS 1.3: 12-byte write IV; TLS 1.2 AES-GCM: 4-byte salt; TLS 1.2
 * ChaCha20: 12-byte IV) and the next sequence number.
 */
struct kf_tlsrec_state {
    uint16_t version; /* enum kf_tlsrec_version */
    uint8_t cipher;   /* enum kf_tlsrec_cipher */
    uint8_t key_len, iv_len;
    uint8_t key[32];
    uint8_t iv[12];
    uint64_t seq;
};

struct kf_tlsrec_header {
    uint8_t type;
    uint16_t legacy_version;
    uint16_t length; /* of the body that follows the 5 header bytes */
};

typedef struct kf_tlsrec kf_tlsrec;

/* Key one direction (the context lives in secure memory). KF_ERR_TLS_STATE
 * when version, cipher and lengths do not fit together. */
KF_RESULT int kf_tlsrec_new(const struct kf_tlsrec_state *st, kf_tlsrec **out);
void kf_tlsrec_free(kf_tlsrec *r);
/* The sequence number of the next record. */
uint64_t kf_tlsrec_seq(const kf_tlsrec *r);
uint16_t kf_tlsrec_version(const kf_tlsrec *r);
/* The IV length gnutls_record_get_state() gives for version and cipher (0: unsupported). */
size_t kf_tlsrec_iv_len(uint16_t version, uint8_t cipher);
/* Bytes a sealed record adds to its plaintext, header included. */
size_t kf_tlsrec_overhead(const kf_tlsrec *r, size_t pad);

/*
 * Check the 5-byte header at p (n bytes available): KF_ERR_SHORT if n < 5;
 * KF_ERR_TLS_RECORD for an unknown content type, a version field other than
 * 0x0303 or an empty body; KF_ERR_TLS_RECORD_OVERFLOW for a body longer than
 * the version allows (TLS 1.3: 2^14+256, TLS 1.2: 2^14+2048).
 */
KF_RESULT int kf_tlsrec_parse_header(const uint8_t *p, size_t n, uint16_t version,
                                     struct kf_tlsrec_header *h);

/*
 * Decrypt and verify one complete record (rec_len = 5 + its length field)
 * into out (cap bytes; 2^14 + 1 always suffices). *type is the real content
 * type (TLS 1.3: from the inner plaintext, padding removed), *out_len the
 * content length. The sequence number advances only on success. Refusals:
 * the parse_header ones, KF_ERR_TLS_RECORD (too short for the cipher, outer
 * type not application_data in TLS 1.3, inner plaintext all zeros),
 * KF_ERR_TLS_RECORD_OVERFLOW (plaintext above 2^14), KF_ERR_AUTH (tag does
 * not verify: bad_record_mac; out is wiped), KF_ERR_TLS_SEQUENCE.
 */
KF_RESULT int kf_tlsrec_open(kf_tlsrec *r, const uint8_t *rec, size_t rec_len, uint8_t *out,
                             size_t cap, uint8_t *type, size_t *out_len);

/*
 * Protect n <= 2^14 bytes at p (which must not point into out) as one record
 * of the given type, appended to out; pad zero bytes of TLS 1.3 padding
 * (0 for TLS 1.2). The sequence number advances.
 */
KF_RESULT int kf_tlsrec_seal(kf_tlsrec *r, uint8_t type, const uint8_t *p, size_t n, size_t pad,
                             kf_buf *out);

/* ---- Session handler (its own process) ---------------------------------------- */
typedef struct kf_tlssplit_handler kf_tlssplit_handler;

struct kf_tlssplit_handler_config {
    const char *ca_file;         /* PEM trust anchors for client certificates */
    const char *cert_file;       /* PEM server certificate (chain) */
    const char *key_file;        /* PEM key (dev) or a pkcs11: URL */
    const char *pkcs11_module;   /* register this module for a pkcs11: key (NULL: none) */
    const char *key_pin;         /* token PIN (copied into the handler only) */
    const char *identities_file; /* identity map (tls.h) */
    const char *priority;        /* NULL = KF_TLS_PRIORITY */
    const char *log_file;        /* exec mode: where the handler logs (NULL: stderr) */
    int log_level;               /* enum kf_log_level */
    int handshake_timeout_ms;    /* 0 = 10 s */
    /* Run the handler as a fresh program: exec this binary (keyfleetd) with
     * KF_TLSSPLIT_HANDLER_ARG. NULL: fork only (tests). */
    const char *exec_path;
    bool test_reveal_secrets; /* honoured only in KF_TEST_HOOKS builds (memory-scan test) */
    /* For KMIP worker processes: the handler sends each connection's principal
     * to the host on a peers channel (kf_tlssplit_handler_take_peers) under a
     * random connection ID and gives the worker only that ID. */
    bool conn_ids;
};
#define KF_TLSSPLIT_HANDLER_ARG "--tls-session-handler"

/* Start the handler process: it loads the credentials and then waits for
 * connections on its broker channel. */
KF_RESULT int kf_tlssplit_handler_start(const struct kf_tlssplit_handler_config *cfg,
                                        kf_tlssplit_handler **out);
/* The broker channel: pass it to kf_tlssplit_accept (threads may share it). */
int kf_tlssplit_handler_broker(const kf_tlssplit_handler *h);
int kf_tlssplit_handler_pid(const kf_tlssplit_handler *h);
/* conn_ids: the host's end of the peers channel, handed over once (the caller
 * closes it; later calls and other handlers: -1). */
int kf_tlssplit_handler_take_peers(kf_tlssplit_handler *h);
/* False once the process has exited (reaps it). */
bool kf_tlssplit_handler_alive(kf_tlssplit_handler *h);
/* Close the broker channel, wait up to 2 s for the process, then kill it. */
void kf_tlssplit_handler_stop(kf_tlssplit_handler *h);
/* main() of the exec'd handler: configuration from fd 3; ends the process (_exit) with its
 * exit status, without atexit handlers (they would run under its seccomp filter). */
int kf_tlssplit_handler_main(void);

/* ---- One connection, the worker's side ----------------------------------------- */
typedef struct kf_tlssplit_conn kf_tlssplit_conn;

/*
 * Hand the accepted TCP socket fd (and two fresh channels) to the handler,
 * which runs the handshake, and wait up to timeout_ms (+2 s) for the traffic
 * state. The connection owns fd from here on, also on failure (closed then).
 * Refusals: the handler's reason (KF_ERR_TLS handshake, KF_ERR_IDENTITY_UNKNOWN
 * certificate not in the map), KF_ERR_SPLIT_HANDLER (no handler).
 */
KF_RESULT int kf_tlssplit_accept(int broker, int fd, const char *peer, int timeout_ms,
                                 kf_tlssplit_conn **out);
/* Application data: up to n bytes, at least one, within timeout_ms per wait.
 * KF_ERR_IO when the connection is over (kf_tlssplit_end_reason says how). */
KF_RESULT int kf_tlssplit_recv(kf_tlssplit_conn *c, uint8_t *p, size_t n, int timeout_ms,
                               size_t *got);
KF_RESULT int kf_tlssplit_send(kf_tlssplit_conn *c, const uint8_t *p, size_t n, int timeout_ms);
/* TLS 1.3: new write keys (via the handler); ask_peer: request the peer's too. */
KF_RESULT int kf_tlssplit_key_update(kf_tlssplit_conn *c, bool ask_peer);
/* close_notify (via the handler), close the socket, free. NULL is fine. */
void kf_tlssplit_close(kf_tlssplit_conn *c);
/* Waits for the peer also end (KF_ERR_IO) when fd becomes readable (a stop pipe). */
void kf_tlssplit_set_stop_fd(kf_tlssplit_conn *c, int fd);
/* Who the handler's identity map says the peer is. */
const struct kf_principal *kf_tlssplit_peer(const kf_tlssplit_conn *c);
uint16_t kf_tlssplit_version(const kf_tlssplit_conn *c); /* enum kf_tlsrec_version */
bool kf_tlssplit_resumed(const kf_tlssplit_conn *c);
/* How often control went to the handler (tests). */
uint64_t kf_tlssplit_handovers(const kf_tlssplit_conn *c);
/* Why the connection is over: KF_OK after close_notify both ways, else the refusal. */
int kf_tlssplit_end_reason(const kf_tlssplit_conn *c);

/* ---- keyfleetd's KMIP listener in split mode -------------------------------------- */
/*
 * Like kf_tls_server (tls.h), but the handshakes run in a session handler
 * process (restarted if it dies) and this process's connection threads do
 * only record protection and KMIP. Give handler.exec_path (keyfleetd:
 * "/proc/self/exe") so the handler starts from a fresh address space.
 */
typedef struct kf_tlssplit_server kf_tlssplit_server;
struct kf_tlssplit_server_config {
    kf_kms *kms;
    const char *listen; /* "ADDR:PORT", "[v6]:PORT"; port 0 = ephemeral */
    struct kf_tlssplit_handler_config handler;
    unsigned max_connections; /* 0 = 256 */
    int handshake_timeout_ms; /* 0 = 10 s */
    int idle_timeout_ms;      /* between messages; 0 = 300 s */
    int message_timeout_ms;   /* to finish a started message; 0 = 10 s */
    /* Who does the record layer and relays KMIP (end of this file): enum kf_tlssplit_workers. */
    unsigned workers;          /* 0 = KF_TLSSPLIT_WORKERS_THREADS */
    unsigned worker_processes; /* processes: how many; 0 = one per CPU, at least 2 */
    unsigned worker_sandbox_flags; /* processes: KF_TLSSPLIT_SANDBOX_* (tests) */
};
KF_RESULT int kf_tlssplit_server_start(const struct kf_tlssplit_server_config *cfg,
                                       kf_tlssplit_server **out);
uint16_t kf_tlssplit_server_port(const kf_tlssplit_server *srv);
int kf_tlssplit_server_handler_pid(kf_tlssplit_server *srv);
/* Stop accepting, end connections (requests in flight complete), stop the handler. */
void kf_tlssplit_server_stop(kf_tlssplit_server *srv);

/* ---- Worker processes ------------------------------------------------------------ */
/*
 * Confine the calling process for good: not dumpable, no core files, user
 * nobody when root, no new privileges, and a seccomp allow list of the
 * system calls a worker needs (others kill the process). Flags for tests.
 */
#define KF_TLSSPLIT_SANDBOX_KEEP_USER 1u /* do not change user */
#define KF_TLSSPLIT_SANDBOX_NO_FILTER 2u /* no seccomp filter (sanitizer runtimes) */
KF_RESULT int kf_tlssplit_sandbox(unsigned flags);
/* The session handler's confinement, once its credentials are loaded: not
 * dumpable, no new privileges, the worker's allow list plus reading files (a
 * PKCS#11 token reads its own); no file opened for writing, no new socket, no
 * program started (src/tlssplit/sandbox.c). */
KF_RESULT int kf_tlssplit_sandbox_handler(void);

typedef struct kf_tlssplit_worker kf_tlssplit_worker;
/* Serves one established connection; kf_tlssplit_close follows. */
typedef void (*kf_tlssplit_app_fn)(void *arg, kf_tlssplit_conn *c);
struct kf_tlssplit_worker_config {
    int broker;               /* the handler's broker channel */
    kf_tlssplit_app_fn app;
    void *arg;
    int handshake_timeout_ms; /* 0 = 10 s */
    unsigned sandbox_flags;
};
/* Fork a worker process (do it before loading anything secret): it confines
 * itself and serves every socket dispatched to it on a thread of its own. */
KF_RESULT int kf_tlssplit_worker_start(const struct kf_tlssplit_worker_config *cfg,
                                       kf_tlssplit_worker **out);
/* Pass an accepted socket to the worker (our copy of fd is closed). */
KF_RESULT int kf_tlssplit_worker_dispatch(kf_tlssplit_worker *w, int fd, const char *peer);
int kf_tlssplit_worker_pid(const kf_tlssplit_worker *w);
/* Close the dispatch channel; connections in flight get up to 3 s, then SIGKILL. */
void kf_tlssplit_worker_stop(kf_tlssplit_worker *w);

/* ---- Client side ----------------------------------------------------------------- */
/*
 * The same split for outbound connections (claim 17: the keyfleet CLI's and
 * keyfleet-device's remote mode). A client session handler process runs the
 * client handshake with GnuTLS -- the client certificate's key (file or
 * PKCS#11), the master, handshake and traffic secrets and the kept
 * resumption sessions stay there -- and gives this process only the traffic
 * keys, IVs and sequence numbers (GIVE). This process is the active endpoint
 * for application data (kf_tlssplit_send/recv on kf_tlssplit_client_conn);
 * every other record (NewSessionTicket, KeyUpdate, alerts, a TLS 1.2
 * HelloRequest) goes back to the handler as with the server side.
 * One handler serves any number of connections, one thread each, and offers
 * a server (name and address) the session it kept from the last connection
 * to it (TLS 1.3 ticket or TLS 1.2 ticket; each kept session is offered once).
 */
struct kf_tlssplit_client_config {
    const char *ca_file;       /* PEM trust anchors for the server's certificate (required) */
    const char *cert_file;     /* PEM client certificate (chain); NULL together with key_file: none */
    const char *key_file;      /* PEM key (dev) or a pkcs11: URL: only the handler opens it */
    const char *pkcs11_module; /* register this module for a pkcs11: key (NULL: p11-kit's list) */
    const char *key_pin;       /* token PIN (copied into the handler only) */
    const char *priority;      /* NULL = KF_TLS_PRIORITY (AEAD suites only: the record layer's) */
    const char *server_name;   /* verify the server's certificate against it; NULL = host */
    int timeout_ms;            /* connect, handshake and each wait for the server; 0 = 60 s */
    /* Run the handler as a fresh program: exec this binary with
     * KF_TLSSPLIT_HANDLER_ARG (a tool passes "/proc/self/exe"; its main() must
     * then call kf_tlssplit_handler_main()). NULL: fork only (tests). */
    const char *exec_path;
    const char *log_file; /* exec mode: where the handler logs (NULL: stderr) */
    bool verbose;         /* the handler logs INFO too (default: warnings and errors) */
    /* kf_tlssplit_client_connect only: connect through this running client
     * handler (kept sessions: resumption across connections); NULL: start one
     * for this connection, stopped by kf_tlssplit_client_close. */
    kf_tlssplit_handler *handler;
    bool no_resume;  /* full handshake: offer no kept session */
    /* No split at all: GnuTLS in this process (kf_tls_client), so a tool
     * switches with one flag (--tls-split) and the same calls. */
    bool monolithic;
    bool test_reveal_secrets; /* KF_TEST_HOOKS builds: the handler writes each kept session
                               * to $KF_TEST_REVEAL_FILE (memory-scan test) */
};

/* Start a client handler: it loads CA, certificate and key, then waits for
 * connections. Stop it with kf_tlssplit_handler_stop. */
KF_RESULT int kf_tlssplit_client_handler_start(const struct kf_tlssplit_client_config *cfg,
                                               kf_tlssplit_handler **out);
/* Whether h runs client handshakes (a server handler refuses client STARTs). */
bool kf_tlssplit_handler_is_client(const kf_tlssplit_handler *h);

typedef struct kf_tlssplit_client kf_tlssplit_client;
/*
 * Connect over TCP to host:port and handshake through the handler (or, with
 * cfg->monolithic, in this process). Refusals: KF_ERR_CONNECT (TCP),
 * KF_ERR_TLS (handshake, including a server certificate that does not verify
 * against the CA and name), KF_ERR_SPLIT_HANDLER (the handler is gone, or
 * did not start: e.g. the certificate or key is unusable -- its log says
 * why), KF_ERR_ARG (cfg->handler is not a client handler).
 */
KF_RESULT int kf_tlssplit_client_connect(const char *host, uint16_t port,
                                         const struct kf_tlssplit_client_config *cfg,
                                         kf_tlssplit_client **out);
/* As kf_tls_client_call: send one TTLV message, read one into resp (reset
 * first; at most KF_TLS_MESSAGE_MAX). KF_ERR_CONNECT when the server closed
 * the connection or the TLS session ended (e.g. it refused the certificate). */
KF_RESULT int kf_tlssplit_client_call(kf_tlssplit_client *cli, const uint8_t *req, size_t len,
                                      kf_buf *resp);
KF_RESULT int kf_tlssplit_client_send_raw(kf_tlssplit_client *cli, const uint8_t *p, size_t len);
KF_RESULT int kf_tlssplit_client_recv(kf_tlssplit_client *cli, kf_buf *resp);
/* Negotiated protocol, "TLS1.3" or "TLS1.2". */
const char *kf_tlssplit_client_version(const kf_tlssplit_client *cli);
/* The handshake resumed a kept session (false in monolithic mode). */
bool kf_tlssplit_client_resumed(const kf_tlssplit_client *cli);
/* The record-layer connection (raw bytes, KeyUpdate, hand-over count); NULL
 * in monolithic mode. Owned by cli. */
kf_tlssplit_conn *kf_tlssplit_client_conn(kf_tlssplit_client *cli);
/* close_notify (via the handler), close, stop an own handler, free. NULL is fine. */
void kf_tlssplit_client_close(kf_tlssplit_client *cli);

/* ---- KMIP worker processes (keyfleetd split mode) ------------------------------------ */
/*
 * keyfleetd --tls-mode split --split-workers processes: the record layer runs
 * in confined worker processes (exec'd from keyfleetd's own binary with
 * KF_TLSSPLIT_WORKER_ARG, then kf_tlssplit_sandbox). Each gets accepted
 * sockets over its dispatch channel, the traffic state from the session
 * handler, and relays every plaintext KMIP request with the connection's
 * principal over its application channel to keyfleetd, which answers it with
 * kf_kms_handle_kmip (docs/tls-split.md, "Application channel").
 * --split-workers threads (the default until processes reach the benchmark
 * target): the record layer on threads of keyfleetd itself.
 */
enum kf_tlssplit_workers {
    KF_TLSSPLIT_WORKERS_THREADS = 0,
    KF_TLSSPLIT_WORKERS_PROCESSES = 1,
};
#define KF_TLSSPLIT_WORKER_ARG "--tls-split-worker"
/* main() of an exec'd KMIP worker: dispatch channel on fd 3, application channel
 * on fd 4, the handler's broker on fd 5. Ends the process (without atexit
 * handlers, which would run under the seccomp filter); does not return. */
int kf_tlssplit_worker_main(void);

#endif
