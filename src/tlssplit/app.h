/*
 * The application channel between a KMIP worker process and keyfleetd
 * (docs/tls-split.md, "Application channel").
 *
 * One SOCK_STREAM socketpair per worker process. The worker does the record
 * layer; every complete plaintext KMIP request goes to keyfleetd with the
 * connection's ID (from the handler's first GIVE) and a request ID; keyfleetd
 * looks the principal up in what the handler told it under that ID (the
 * peers table: a worker cannot choose its principal, it can only name a
 * connection it holds), runs kf_kms_handle_kmip on one of its pool threads and answers
 * with the same ID, in whatever order the requests finish. A stream rather
 * than SEQPACKET because a KMIP message may be 1 MiB (KF_TLS_MESSAGE_MAX),
 * more than a socket buffer takes in one packet.
 *
 * Frame (8 bytes): version 1, type, two zero bytes, u32 body length, which
 * must be within the type's maximum. Every read names the types allowed in
 * the current phase; anything else -- other type or version, nonzero
 * reserved bytes, a length over the limit, trailing bytes, an unknown request
 * ID, a field beyond its limit -- is KF_ERR_SPLIT_APP: the worker exits, and
 * keyfleetd kills the worker.
 *
 *   SETTINGS  keyfleetd -> worker, first and once
 *   REQUEST   worker -> keyfleetd   u32 id, 16-byte connection ID, one TTLV message
 *   RESPONSE  keyfleetd -> worker   u32 id, the response message
 *   FAILED    keyfleetd -> worker   u32 id, i32 reason: no answer, end the connection
 *   CLOSED    worker -> keyfleetd   (empty) one dispatched connection is over
 *
 * Requests and responses are plaintext KMIP, key material included: every
 * buffer that holds them is secure memory, wiped when done with.
 */
#ifndef KF_TLSSPLIT_APP_H
#define KF_TLSSPLIT_APP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/kms.h"
#include "keyfleet/tls.h"
#include "keyfleet/tlssplit.h"

#define KF_APP_FRAME_LEN 8
#define KF_APP_VERSION 1

enum kf_app_type {
    KF_APP_SETTINGS = 1,
    KF_APP_REQUEST = 2,
    KF_APP_RESPONSE = 3,
    KF_APP_FAILED = 4,
    KF_APP_CLOSED = 5,
};
#define KF_APP_ALLOW(t) (1u << (t))

/* The largest KMIP answer: what the monolithic endpoint allows a response to grow to. */
#define KF_APP_ANSWER_MAX (KF_TLS_MESSAGE_MAX + 65536)
/* The handler's connection ID (KF_SPLIT_CONN_ID_LEN). */
#define KF_APP_CONN_ID_LEN 16
#define KF_APP_LOG_FILE_MAX 4095
/* Body limits per type. */
#define KF_APP_SETTINGS_BODY_MAX (4 * 4 + 3 + 2 + KF_APP_LOG_FILE_MAX)
#define KF_APP_REQUEST_BODY_MAX (4 + KF_APP_CONN_ID_LEN + KF_TLS_MESSAGE_MAX)
#define KF_APP_RESPONSE_BODY_MAX (4 + KF_APP_ANSWER_MAX)
/* Frame and fields up to the message bytes of a REQUEST (the head written before them). */
#define KF_APP_REQUEST_HEAD_MAX (KF_APP_FRAME_LEN + 4 + KF_APP_CONN_ID_LEN)
/* Slot numbers are the low 16 bits of a request ID: at most this many connections a worker. */
#define KF_APP_SLOTS_MAX 65535u
/* keyfleetd's side takes the requests already buffered on a channel as one
 * batch (one wake-up, one audit commit, one write of all the answers): at most
 * this many, and no further frame once the batch holds KF_APP_BATCH_BYTES of
 * REQUEST bodies (a frame begun is read to its end, so a batch holds less than
 * KF_APP_BATCH_BYTES + KF_APP_REQUEST_BODY_MAX). A worker that writes the
 * requests of many connections at once gets the most from up to
 * KF_APP_BATCH_MAX frames per write. */
#define KF_APP_BATCH_MAX 32u
#define KF_APP_BATCH_BYTES ((size_t)64 * 1024)
/* Answers held for one write; an answer that does not fit ends the batch
 * early (batch_end, then the write) and the rest is a batch of its own. */
#define KF_APP_BATCH_ANSWER_BYTES ((size_t)64 * 1024)

/* SETTINGS: what the worker needs before it confines itself. */
#define KF_APP_SETTINGS_OPEN_LOG 1u /* exec'd worker: open log_file (else: keep the inherited log) */
struct kf_app_settings {
    uint32_t max_connections; /* at once; 1..KF_APP_SLOTS_MAX */
    uint32_t handshake_ms, idle_ms, message_ms; /* each 1..24 h */
    uint8_t log_level;     /* enum kf_log_level */
    uint8_t sandbox_flags; /* KF_TLSSPLIT_SANDBOX_* */
    uint8_t flags;         /* KF_APP_SETTINGS_* */
    char log_file[KF_APP_LOG_FILE_MAX + 1]; /* empty: stderr */
};

struct kf_app_request {
    uint32_t id;
    uint8_t conn[KF_APP_CONN_ID_LEN]; /* whose connection: keyfleetd looks the principal up */
    const uint8_t *msg; /* one whole TTLV message, <= KF_TLS_MESSAGE_MAX (borrowed) */
    size_t msg_len;
};

/* RESPONSE when status is KF_OK (msg, 1..KF_APP_ANSWER_MAX bytes), else FAILED. */
struct kf_app_response {
    uint32_t id;
    int32_t status;
    const uint8_t *msg; /* borrowed */
    size_t msg_len;
};

/* ---- codec (pure; fuzz_tlssplit_app calls the decoders) ---- */
KF_RESULT int kf_app_encode_settings(const struct kf_app_settings *s, kf_buf *out);
/* The whole frame; the _head variants stop where the message bytes begin
 * (with the frame's length already counting them), so a sender can write
 * head and message with one writev and without copying the message. */
KF_RESULT int kf_app_encode_request(const struct kf_app_request *r, kf_buf *out);
KF_RESULT int kf_app_encode_request_head(const struct kf_app_request *r, kf_buf *out);
KF_RESULT int kf_app_encode_response(const struct kf_app_response *r, kf_buf *out);
KF_RESULT int kf_app_encode_response_head(const struct kf_app_response *r, kf_buf *out);
KF_RESULT int kf_app_encode_closed(kf_buf *out);

/* The 8-byte frame header: type in allow, reserved bytes zero, length within the type's
 * maximum (and exact for FAILED and CLOSED). */
KF_RESULT int kf_app_decode_header(const uint8_t hdr[KF_APP_FRAME_LEN], unsigned allow,
                                   uint8_t *type, uint32_t *body_len);
/* A whole frame in memory (header, then exactly body_len bytes). */
KF_RESULT int kf_app_decode_frame(const uint8_t *p, size_t n, unsigned allow, uint8_t *type,
                                  kf_buf *body);
KF_RESULT int kf_app_decode_settings(kf_buf *body, struct kf_app_settings *s);
/* The message must be exactly one TTLV message of at most KF_TLS_MESSAGE_MAX bytes. */
KF_RESULT int kf_app_decode_request(kf_buf *body, struct kf_app_request *r);
/* type: KF_APP_RESPONSE or KF_APP_FAILED (reason < 0). */
KF_RESULT int kf_app_decode_response(uint8_t type, kf_buf *body, struct kf_app_response *r);
KF_RESULT int kf_app_decode_closed(kf_buf *body);

/* ---- transport over the stream ---- */
/* Buffered frame reader: one recv may bring many frames (pipelined requests). */
struct kf_app_reader {
    int fd;
    uint8_t *buf; /* secure memory */
    size_t cap, start, end;
    kf_buf big;       /* a frame larger than buf (secret) */
    size_t last;      /* bytes of the frame handed out last (consumed and wiped at the next read) */
    bool last_big;
};
KF_RESULT int kf_app_reader_init(struct kf_app_reader *r, int fd);
void kf_app_reader_free(struct kf_app_reader *r);
/* The next frame, whose type must be in allow; body is valid until the next
 * call. timeout_ms < 0: wait. KF_ERR_IO (*eof: the other end closed cleanly
 * between frames), KF_ERR_TIMEOUT, KF_ERR_SPLIT_APP. */
KF_RESULT int kf_app_read(struct kf_app_reader *r, unsigned allow, int timeout_ms, uint8_t *type,
                          kf_buf *body, bool *eof);
/* head then body (either may be empty), all of it, within timeout_ms (< 0: wait). The
 * caller serialises writers. KF_ERR_IO, KF_ERR_TIMEOUT. */
KF_RESULT int kf_app_write(int fd, const uint8_t *head, size_t head_len, const uint8_t *body,
                           size_t body_len, int timeout_ms);
/* The same for many pieces (v is updated as they go). */
struct iovec;
KF_RESULT int kf_app_writev(int fd, struct iovec *v, size_t nv, int timeout_ms);
/* A whole frame is buffered after the one handed out last: the next read takes it without
 * waiting. */
bool kf_app_reader_buffered(const struct kf_app_reader *r);

/* ---- keyfleetd side (app_host.c): the principals, from the handler ---- */
/* The peers table of one session handler (CONFIG flag CONN_IDS): a thread
 * reads its PEER (ID, principal) and GONE (ID) messages off the peers channel.
 * Entries stay when the handler ends (its connections go on until they end). */
typedef struct kf_app_peers kf_app_peers;
#define KF_APP_PEERS_MAX 65536u /* IDs known at once; beyond: refused (logged) */
/* Takes over fd (kf_tlssplit_handler_take_peers; closed also on failure). */
KF_RESULT int kf_app_peers_start(int fd, kf_app_peers **out);
/* The principal of connection id: KF_OK, or KF_ERR_SPLIT_APP (unknown: never
 * given out, or over). A miss first takes in what the handler has sent: it
 * sends PEER before it gives the worker the ID. */
KF_RESULT int kf_app_peers_lookup(kf_app_peers *p, const uint8_t id[KF_APP_CONN_ID_LEN],
                                  struct kf_principal *who);
unsigned kf_app_peers_count(kf_app_peers *p);
void kf_app_peers_stop(kf_app_peers *p);

/* ---- keyfleetd side (app_host.c): requests in, answered by a shared pool of threads ---- */
typedef struct kf_app_host kf_app_host;
/* Answer req for who into resp (KF_BUF_SECRET, grows to KF_APP_ANSWER_MAX); < 0: FAILED. */
typedef int (*kf_app_handle_fn)(void *arg, const struct kf_principal *who, const uint8_t *req,
                                size_t len, kf_buf *resp);
struct kf_app_host_config {
    kf_app_handle_fn handle;
    void *handle_arg;
    /* Optional, both or neither: around each batch (the requests one wake-up
     * found on the channel), on the thread that handles it. batch_begin before
     * its first handle call; batch_end after its last. No answer of a batch is
     * written before batch_end returned KF_OK; if it fails, every answer of
     * the batch goes out as FAILED(its reason) instead, and if batch_begin
     * fails no request of the batch is handled (each FAILED(its reason)).
     * keyfleetd: kf_kms_audit_defer_begin/_end, so a batch's read/use audit
     * records are one group-commit job, committed before any answer leaves. */
    /* Optional: false for a request that should not wait behind others (one
     * that makes a durable commit): it ends the batch it is read into (NULL:
     * every request may join). */
    bool (*batchable)(void *handle_arg, const uint8_t *req, size_t len);
    int (*batch_begin)(void *handle_arg);
    int (*batch_end)(void *handle_arg);
    /* A CLOSED arrived (return false if the worker had no connection to
     * close: a protocol violation). */
    bool (*on_closed)(void *owner);
    /* Once: the channel ended (KF_ERR_IO: the worker closed it or died) or the
     * worker broke the protocol or stalled (KF_ERR_SPLIT_APP). */
    void (*on_end)(void *owner, int reason);
    void *owner;
    /* Where the principal of a request's connection ID is looked up (required):
     * an unknown ID is logged and answered FAILED(KF_ERR_SPLIT_APP). */
    kf_app_peers *peers;
    unsigned max_inflight;  /* requests at once; more is a violation */
    int write_timeout_ms;   /* an answer the worker does not take in time ends it */
};
/* Takes over fd (closed also on failure). */
KF_RESULT int kf_app_host_start(int fd, const struct kf_app_host_config *cfg, kf_app_host **out);
/* Send SETTINGS (before anything else); requests are taken from then on. */
KF_RESULT int kf_app_host_settings(kf_app_host *h, const struct kf_app_settings *s);
/* Stop reading requests, let the ones in flight be answered, close the channel, free. */
void kf_app_host_stop(kf_app_host *h);
/* Requests taken and not yet answered. */
unsigned kf_app_host_inflight(kf_app_host *h);

/* ---- KMIP worker processes (worker.c) ---- */
struct kf_app_worker_spawn {
    int broker;            /* the handler's broker channel (the worker keeps a copy) */
    const char *exec_path; /* exec this binary with KF_TLSSPLIT_WORKER_ARG; NULL: fork only (tests) */
};
/* Start a KMIP worker process: *out has its pid and dispatch channel, *app_fd
 * keyfleetd's end of its application channel (SETTINGS goes first). */
KF_RESULT int kf_tlssplit_kmip_worker_start(const struct kf_app_worker_spawn *cfg,
                                            kf_tlssplit_worker **out, int *app_fd);
/* No more connections for this worker: its dispatch channel closes, and it
 * exits once its last connection has ended. */
void kf_tlssplit_worker_retire(kf_tlssplit_worker *w);

/* One KMIP message from a split connection: the header within idle_ms, the rest
 * within message_ms; at most KF_TLS_MESSAGE_MAX bytes (KF_ERR_LIMIT). */
KF_RESULT int kf_app_read_kmip(kf_tlssplit_conn *c, int idle_ms, int message_ms, kf_buf *msg);

#endif
