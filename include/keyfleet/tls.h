/*
 * KMIP over mutually authenticated TLS (KMIP 1.4 profiles: TCP port 5696,
 * TLS 1.2 or 1.3, client certificate required).
 *
 * Server: one acceptor thread plus one thread per connection, capped at
 * max_connections; every connection owns its GnuTLS session, buffers and
 * timeouts, and this layer takes no lock: connections share only read-only
 * credentials and the identity map, plus atomics. Every wait also polls a
 * stop pipe, so stopping wakes idle connections at once.
 * Framing is the admin socket's: each message is one TTLV item whose 8-byte
 * header gives its length, at most KF_TLS_MESSAGE_MAX bytes.
 *
 * Who a client is: its certificate must chain to the configured CA (and have
 * the TLS client key purpose when it has an Extended Key Usage); the identity
 * map (kf_tls_identities_*) turns the verified certificate into a struct
 * kf_principal. A certificate that matches no line is refused at connect
 * (logged, connection closed): the map is an allow list.
 *
 * Client: a small blocking client for the conformance runner, benchmarks and
 * the CLI's remote mode (kf_tls_client_*).
 */
#ifndef KEYFLEET_TLS_H
#define KEYFLEET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "keyfleet/buf.h"
#include "keyfleet/error.h"
#include "keyfleet/kms.h"

#define KF_TLS_DEFAULT_PORT 5696
#define KF_TLS_MESSAGE_MAX ((size_t)1024 * 1024)
/*
 * TLS 1.3 and 1.2 only; AEAD ciphers only (AES-GCM, ChaCha20-Poly1305);
 * ECDHE (and, for 1.2, only ECDHE) key exchange; certificates and groups at
 * the SECURE128 level or above. Used by the server and the client unless a
 * config gives another string.
 */
#define KF_TLS_PRIORITY                                                                            \
    "SECURE256:+SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:"           \
    "+AES-128-GCM:+CHACHA20-POLY1305:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:%PROFILE_MEDIUM"

/* ---- Identity map ---------------------------------------------------------
 *
 * One rule per line; '#' starts a comment; blank lines are ignored. A rule
 * is whitespace-separated key=value words (a value may be "double quoted"):
 *
 *   fingerprint=SHA256:<64 hex digits, colons allowed>   match the certificate
 *   subject-CN=<text> subject-O=<text> subject-OU=<text> match subject fields
 *   roles=admin,manage,use,export | roles=none           required; also device,
 *                                                          steel, registrar, verifier
 *   domains=* | domains=VENDOR,USPS                      required
 *   default=VENDOR                                       optional (Create's domain)
 *
 * A rule needs at least one matcher (fingerprint or subject-*); all its
 * matchers must hold. A subject field used by a rule must appear exactly once
 * in the certificate. The first rule that matches wins. Examples:
 *
 *   subject-CN=admin roles=admin,manage,use,export domains=*
 *   fingerprint=SHA256:ab01...cd roles=use domains=VENDOR,USPS default=VENDOR
 *   subject-O="Acme Metering" subject-OU=ops roles=use domains=ACME
 */
typedef struct kf_tls_identities kf_tls_identities;

/* The facts of a verified client certificate that rules can match. */
struct kf_tls_peer {
    char subject_dn[240]; /* RFC 4514 string */
    uint8_t sha256[32];   /* SHA-256 over the DER certificate */
    char cn[128], o[128], ou[128];
    unsigned n_cn, n_o, n_ou; /* how many times each field occurs */
};

/* Parse the text of a map. On KF_ERR_IDENTITY_FILE, *bad_line (if not NULL)
 * is the 1-based line that is wrong and why[] (if not NULL) says what. */
KF_RESULT int kf_tls_identities_parse(const char *text, size_t len, kf_tls_identities **out,
                                      unsigned *bad_line, char *why, size_t why_len);
KF_RESULT int kf_tls_identities_load(const char *path, kf_tls_identities **out, unsigned *bad_line,
                                     char *why, size_t why_len);
void kf_tls_identities_free(kf_tls_identities *ids);
size_t kf_tls_identities_count(const kf_tls_identities *ids);
/* KF_OK and *who filled (name "cert:" + subject DN) when a rule matches;
 * KF_ERR_IDENTITY_UNKNOWN otherwise. */
KF_RESULT int kf_tls_identities_match(const kf_tls_identities *ids, const struct kf_tls_peer *peer,
                                      struct kf_principal *who);

/* ---- Server ---------------------------------------------------------------- */
typedef struct kf_tls_server kf_tls_server;

struct kf_tls_server_config {
    kf_kms *kms;
    const char *listen;          /* "ADDR:PORT", "[v6]:PORT"; port 0 = ephemeral */
    const char *ca_file;         /* PEM trust anchors for client certificates */
    const char *cert_file;       /* PEM server certificate (chain) */
    const char *key_file;        /* PEM private key, or a "pkcs11:" URL */
    const char *pkcs11_module;   /* register this PKCS#11 module for a pkcs11: key (NULL: none) */
    const char *key_pin;         /* token PIN for a pkcs11: key (not copied; keep it alive) */
    const char *identities_file; /* identity map (required) */
    const char *priority;        /* NULL = KF_TLS_PRIORITY */
    unsigned max_connections;    /* 0 = 256 */
    int handshake_timeout_ms;    /* 0 = 10 s */
    int idle_timeout_ms;         /* between messages; 0 = 300 s */
    int message_timeout_ms;      /* to finish a started message; 0 = 10 s */
};

/* Load credentials and the identity map, bind, listen, and start serving in
 * background threads. Errors are logged with their cause. */
KF_RESULT int kf_tls_server_start(const struct kf_tls_server_config *cfg, kf_tls_server **out);
/* The bound TCP port (useful after listening on port 0). */
uint16_t kf_tls_server_port(const kf_tls_server *srv);
/* Connections currently open (for tests and status). */
unsigned kf_tls_server_connections(const kf_tls_server *srv);
/* Stop accepting, wake and finish every connection (in-flight requests
 * complete), free. NULL is fine. */
void kf_tls_server_stop(kf_tls_server *srv);

/* ---- Development certificates --------------------------------------------- */
/*
 * For --dev and tests: if DIR does not exist, create it (0700) with an ECDSA
 * P-256 dev CA, a server certificate (SAN DNS localhost, IP 127.0.0.1 and ::1),
 * client certificates "admin" (all roles, all domains) and "user" (role use,
 * domain "default"), their keys, and an identity map; every file 0600.
 * If DIR exists, only fill in the paths. Each call on a new DIR makes a new CA.
 */
struct kf_tls_dev_files {
    char ca_cert[4096];
    char server_cert[4096], server_key[4096];
    char admin_cert[4096], admin_key[4096];
    char user_cert[4096], user_key[4096];
    char identities[4096];
};
KF_RESULT int kf_tls_dev_certs(const char *dir, struct kf_tls_dev_files *files);

/* ---- Client ---------------------------------------------------------------- */
typedef struct kf_tls_client kf_tls_client;

struct kf_tls_client_opts {
    const char *priority;    /* NULL = KF_TLS_PRIORITY */
    const char *server_name; /* name to verify the server certificate against; NULL = host */
    int timeout_ms;          /* connect, handshake and each call; 0 = 60 s */
};

/*
 * Connect over TCP, handshake, verify the server against ca_file (and host).
 * cert_file/key_file: the client certificate and its key (PEM, or a pkcs11:
 * URL for the key); both NULL to connect without one (the server refuses).
 */
KF_RESULT int kf_tls_client_connect(const char *host, uint16_t port, const char *ca_file,
                                    const char *cert_file, const char *key_file,
                                    kf_tls_client **out);
KF_RESULT int kf_tls_client_connect_ex(const char *host, uint16_t port, const char *ca_file,
                                       const char *cert_file, const char *key_file,
                                       const struct kf_tls_client_opts *opts, kf_tls_client **out);
/* Send one TTLV message, read one into resp (reset first; resp must come from
 * kf_buf_alloc with max >= the answer, at most 1 MiB is read). KF_ERR_CONNECT
 * when the server closed the connection (or refused the client certificate). */
KF_RESULT int kf_tls_client_call(kf_tls_client *cli, const uint8_t *req, size_t len, kf_buf *resp);
/* Send bytes as they are (tests: garbage, partial messages). */
KF_RESULT int kf_tls_client_send_raw(kf_tls_client *cli, const uint8_t *p, size_t len);
/* Read one framed message (after send_raw). */
KF_RESULT int kf_tls_client_recv(kf_tls_client *cli, kf_buf *resp);
/* Negotiated protocol, e.g. "TLS1.3". */
const char *kf_tls_client_version(const kf_tls_client *cli);
void kf_tls_client_close(kf_tls_client *cli);

/* Listening sockets, shared by the monolithic and the split endpoint. Listen on
 * "HOST:PORT" ("[v6]:PORT" too; port 0 = any free port): the socket and the port bound.
 * KF_ERR_ARG for a malformed or unresolvable address, KF_ERR_IO if it cannot listen. */
KF_RESULT int kf_tls_listen_tcp(const char *spec, int *fd, uint16_t *port);
/* A TCP connection to host:port (TCP_NODELAY, close-on-exec), connect bounded by
 * timeout_ms; KF_ERR_CONNECT if no address answers. Shared by both TLS clients. */
KF_RESULT int kf_tls_tcp_connect(const char *host, uint16_t port, int timeout_ms, int *out);
/* "ADDR:PORT" ("[v6]:PORT") of a peer for log lines; "?" if unknown. */
void kf_tls_describe_peer(const struct sockaddr_storage *ss, socklen_t len, char *out, size_t cap);

#endif
