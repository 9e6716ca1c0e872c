/*
 * The channels between the session handler and the worker (docs/tls-split.md):
 * SOCK_SEQPACKET socketpairs, one message per packet, a fixed 8-byte frame
 * (version 1, type, two zero bytes, body length) and a body of fixed layout.
 *
 *   broker  (host -> handler, one per handler)  CONFIG once (exec mode), then START
 *   control (per connection, both ways)          GIVE, END (handler -> worker)
 *                                                TAKE      (worker -> handler)
 *   session (per connection, worker -> handler)  RECORD
 *   dispatch (host -> worker process)            ACCEPTED
 *   peers   (handler -> host, one per handler;   PEER, GONE
 *            CONFIG flag CONN_IDS only)
 *
 * Every receive names the types it accepts now (the phase's allow list);
 * anything else -- another type, a bad length, a truncated packet,
 * descriptors where none belong -- is KF_ERR_SPLIT_CHANNEL and the session
 * ends. Control messages can carry traffic keys: they are decoded from and
 * encoded into caller buffers that the caller wipes.
 */
#ifndef KF_TLSSPLIT_CHANNEL_H
#define KF_TLSSPLIT_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/kms.h"
#include "keyfleet/tlssplit.h"

#define KF_SPLIT_FRAME_LEN 8
#define KF_SPLIT_VERSION 1
/* Largest message per channel, frame included. */
#define KF_SPLIT_CONTROL_MAX 4096
#define KF_SPLIT_SESSION_MAX (KF_SPLIT_FRAME_LEN + KF_TLSREC_MAX)
#define KF_SPLIT_PATH_MAX 4095 /* longest path or string in CONFIG */
#define KF_SPLIT_PEER_MAX 63   /* longest peer address text in START */
#define KF_SPLIT_NAME_MAX 255  /* longest server name in a client START */
/* CONFIG at its largest: six paths, the PIN, the priority, 6 bytes of numbers. */
#define KF_SPLIT_BROKER_MAX                                                                        \
    (KF_SPLIT_FRAME_LEN + 6 * (2 + KF_SPLIT_PATH_MAX) + (2 + 255) + (2 + 1023) + 6)

enum kf_split_type {
    KF_SPLIT_CONFIG = 1, /* host -> handler: credentials and settings (exec mode) */
    KF_SPLIT_START = 2,  /* host -> handler: a new connection; fds: TCP, control, session */
    KF_SPLIT_GIVE = 3,   /* handler -> worker: you are the active endpoint; traffic state */
    KF_SPLIT_END = 4,    /* handler -> worker: the connection is over; close it */
    KF_SPLIT_TAKE = 5,   /* worker -> handler: you are the active endpoint; sequence numbers */
    KF_SPLIT_RECORD = 6, /* worker -> handler: one TLS record the worker does not handle */
    KF_SPLIT_ACCEPTED = 7, /* host -> worker process (dispatch): a new TCP socket; fd: it */
    KF_SPLIT_PEER = 8,     /* handler -> host (peers): a connection ID and its principal */
    KF_SPLIT_GONE = 9,     /* handler -> host (peers): that connection is over */
    KF_SPLIT_READY = 10,   /* handler -> host (broker): credentials loaded, confined; empty */
};
/* A connection ID: 128 random bits from the handler, the worker's only handle
 * on its connection's principal (CONFIG flag CONN_IDS). */
#define KF_SPLIT_CONN_ID_LEN 16
/* PEER at its largest: frame, ID, principal. */
#define KF_SPLIT_PEERS_MAX                                                                         \
    (KF_SPLIT_FRAME_LEN + KF_SPLIT_CONN_ID_LEN + 2 + 255 + 4 + 1 + 1 +                             \
     KF_PRINCIPAL_MAX_DOMAINS * (2 + 64) + 2 + 64)
#define KF_SPLIT_ALLOW(t) (1u << (t))

/* CONFIG: what the handler needs to run handshakes. The PIN is a secret.
 * A server handler (no KF_SPLIT_CONFIG_CLIENT) needs CA, certificate, key and
 * identity map; a client handler needs the CA (the server's trust anchors),
 * certificate and key together or neither, and no identity map. */
struct kf_split_config {
    char ca_file[KF_SPLIT_PATH_MAX + 1];
    char cert_file[KF_SPLIT_PATH_MAX + 1];
    char key_file[KF_SPLIT_PATH_MAX + 1]; /* PEM file (dev) or pkcs11: URL */
    char pkcs11_module[KF_SPLIT_PATH_MAX + 1];
    char key_pin[256];
    char identities_file[KF_SPLIT_PATH_MAX + 1];
    char priority[1024];
    char log_file[KF_SPLIT_PATH_MAX + 1];
    uint32_t handshake_timeout_ms;
    uint8_t log_level;
    uint8_t flags; /* KF_SPLIT_CONFIG_* */
};
#define KF_SPLIT_CONFIG_TEST_REVEAL 1u /* test builds only: log the ticket key and resumption secret */
#define KF_SPLIT_CONFIG_CLIENT 2u      /* the handler runs client handshakes (START role 2 only) */
/* Server handler for KMIP worker processes: each connection's principal goes
 * to the host on the peers channel (fd 4 in exec mode) under a fresh random
 * connection ID, and GIVE(first) carries only that ID. */
#define KF_SPLIT_CONFIG_CONN_IDS 4u

/* START's role is the handler's TLS role; it must be the one CONFIG set
 * (a server handler takes role 1 only, a client handler role 2 only). */
enum kf_split_role { KF_SPLIT_ROLE_SERVER = 1, KF_SPLIT_ROLE_CLIENT = 2 };
struct kf_split_start {
    uint8_t role;
    char peer[KF_SPLIT_PEER_MAX + 1]; /* "ADDR:PORT", for the log (client: and the session cache) */
    /* Role 2 only: the name sent as SNI (unless an IP literal) and the one the
     * server's certificate must carry; printable ASCII, 1..255 bytes. */
    char server_name[KF_SPLIT_NAME_MAX + 1];
    uint8_t flags; /* role 2 only: KF_SPLIT_START_* */
};
#define KF_SPLIT_START_NO_RESUME 1u /* client: full handshake, offer no kept session */

/* GIVE: the traffic state of both directions; the first one after the
 * handshake also says who the peer is (server role: the identity map's
 * verdict; client role: name = the server name its certificate was verified
 * against, no roles, no domains) -- or, from a CONN_IDS handler, only the
 * connection ID under which the host got the principal (flag 4). */
struct kf_split_give {
    bool first;
    bool resumed;
    bool has_id; /* first only: conn_id instead of who */
    struct kf_tlsrec_state rd, wr;
    struct kf_principal who; /* first only, !has_id */
    uint8_t conn_id[KF_SPLIT_CONN_ID_LEN]; /* first only, has_id */
};

/* PEER (GONE: id only): handler -> host on the peers channel. */
struct kf_split_peer {
    uint8_t id[KF_SPLIT_CONN_ID_LEN];
    struct kf_principal who;
};

/* END: KF_OK for a clean close (close_notify exchanged), else why. */
struct kf_split_end {
    int32_t reason;
};

enum kf_split_take_reason {
    KF_SPLIT_TAKE_RECORD = 1,     /* a RECORD follows on the session channel */
    KF_SPLIT_TAKE_KEY_UPDATE = 2, /* TLS 1.3: update our keys; arg 1: ask the peer too */
    KF_SPLIT_TAKE_CLOSE = 3,      /* send close_notify and end */
    KF_SPLIT_TAKE_ABORT = 4,      /* send the fatal alert arg and end */
};
struct kf_split_take {
    uint8_t reason;
    uint8_t arg;
    uint64_t read_seq, write_seq; /* the worker's next sequence numbers */
};

/* ---- codec (pure; the fuzz targets call these) ---- */
KF_RESULT int kf_split_encode_config(const struct kf_split_config *c, kf_buf *out);
KF_RESULT int kf_split_encode_start(const struct kf_split_start *s, kf_buf *out);
KF_RESULT int kf_split_encode_give(const struct kf_split_give *g, kf_buf *out);
KF_RESULT int kf_split_encode_end(const struct kf_split_end *e, kf_buf *out);
KF_RESULT int kf_split_encode_take(const struct kf_split_take *t, kf_buf *out);
KF_RESULT int kf_split_encode_record(const uint8_t *rec, size_t len, kf_buf *out);
/* ACCEPTED has START's body; its role is always 1 (a worker process serves). */
KF_RESULT int kf_split_encode_accepted(const struct kf_split_start *s, kf_buf *out);
KF_RESULT int kf_split_encode_peer(const struct kf_split_peer *p, kf_buf *out);
KF_RESULT int kf_split_encode_gone(const uint8_t id[KF_SPLIT_CONN_ID_LEN], kf_buf *out);

/* The frame of a whole packet: its type, and a reader over its body. */
KF_RESULT int kf_split_decode_frame(const uint8_t *p, size_t n, size_t max, uint8_t *type,
                                    kf_buf *body);
KF_RESULT int kf_split_decode_config(kf_buf *body, struct kf_split_config *c);
KF_RESULT int kf_split_decode_start(kf_buf *body, struct kf_split_start *s);
KF_RESULT int kf_split_decode_accepted(kf_buf *body, struct kf_split_start *s);
KF_RESULT int kf_split_decode_give(kf_buf *body, struct kf_split_give *g);
KF_RESULT int kf_split_decode_end(kf_buf *body, struct kf_split_end *e);
KF_RESULT int kf_split_decode_take(kf_buf *body, struct kf_split_take *t);
KF_RESULT int kf_split_decode_peer(kf_buf *body, struct kf_split_peer *p);
KF_RESULT int kf_split_decode_gone(kf_buf *body, uint8_t id[KF_SPLIT_CONN_ID_LEN]);
/* READY: no body. The handler's first word, once it can serve (spawn.c waits for it). */
KF_RESULT int kf_split_encode_ready(kf_buf *out);
KF_RESULT int kf_split_decode_ready(kf_buf *b);
/* The record must be exactly one well-formed TLS record header plus its body. */
KF_RESULT int kf_split_decode_record(kf_buf *body, const uint8_t **rec, size_t *len);

/* ---- starting a session (conn.c) ---- */
/* Hand fd to the handler with the START st (the connection owns fd from here,
 * also on failure) and wait for its first GIVE: kf_tlssplit_accept for any role. */
KF_RESULT int kf_tlssplit_conn_start(int broker, int fd, const struct kf_split_start *st,
                                     int timeout_ms, kf_tlssplit_conn **out);

/* The connection ID of a CONN_IDS handler's first GIVE (false: it gave the
 * principal instead, kf_tlssplit_peer). */
bool kf_tlssplit_conn_id(const kf_tlssplit_conn *c, uint8_t id[KF_SPLIT_CONN_ID_LEN]);

/* ---- transport ---- */
/* Send one message (out's bytes) with up to 3 descriptors; blocking. */
KF_RESULT int kf_split_send(int fd, const kf_buf *msg, const int *fds, size_t nfds);
/*
 * Receive one message into buf (cap bytes) within timeout_ms (-1: wait):
 * its type must be in allow (KF_SPLIT_ALLOW bits) and it must carry exactly
 * as many descriptors as its type takes (START 3, ACCEPTED 1, others 0);
 * they land in fds. KF_ERR_IO with *eof when the other end closed; KF_ERR_TIMEOUT;
 * KF_ERR_SPLIT_CHANNEL for anything unexpected (stray descriptors closed).
 */
KF_RESULT int kf_split_recv(int fd, uint8_t *buf, size_t cap, unsigned allow, int timeout_ms,
                            uint8_t *type, kf_buf *body, int fds[3], bool *eof);

#endif
