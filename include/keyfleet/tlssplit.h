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
};
#define KF_TLSSPLIT_HANDLER_ARG "--tls-session-handler"

/* Start the handler process: it loads the credentials and then waits for
 * connections on its broker channel. */
KF_RESULT int kf_tlssplit_handler_start(const struct kf_tlssplit_handler_config *cfg,
                                        kf_tlssplit_handler **out);
/* The broker channel: pass it to kf_tlssplit_accept (threads may share it). */
int kf_tlssplit_handler_broker(const kf_tlssplit_handler *h);
int kf_tlssplit_handler_pid(const kf_tlssplit_handler *h);
/* False once the process has exited (reaps it). */
bool kf_tlssplit_handler_alive(kf_tlssplit_handler *h);
/* Close the broker channel, wait up to 2 s for the process, then kill it. */
void kf_tlssplit_handler_stop(kf_tlssplit_handler *h);
/* main() of the exec'd handler: configuration from fd 3; returns the exit status. */
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

#endif
