/*
 * Helpers of the device simulator (tools/keyfleet-device.c) and of the
 * attacker relay (tools/kf-relay.c); docs/device-simulator.md.
 *
 * Nothing here is part of a real device: a device links libkeyfleet-device
 * only. This module gives the simulator what a device's firmware would have
 * around the library (a link, a clock, secure storage as a file) and gives
 * the relay its script language and the message surgery it performs.
 *
 *   addresses    "HOST:PORT", "[V6]:PORT" or "unix:/PATH"; listen, accept, connect
 *   framing      every message on a link is one TTLV item: its 8-byte header gives
 *                the length, refused above a cap before the body is read
 *   link error   KeyfleetErrorCode {kf error code}: what a device answers when the
 *                protocol has no authenticated answer for a refusal
 *   files        atomic, durable writes (temp file, fsync, rename, fsync dir), 0600
 *   relay script one rule per line: <up|down|*> <N|*|@Tag> <action> [args]
 *   surgery      flip a byte (by offset, or inside the N-th item with a tag),
 *                swap the two PairParts of a message, name a message
 *   upstream TLS a GnuTLS client whose socket the relay can poll
 */
#ifndef KF_DEVSIM_H
#define KF_DEVSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "keyfleet/buf.h"
#include "keyfleet/device.h"
#include "keyfleet/error.h"

/* ---- numbers ---- */
/* Decimal digits only (no sign, no spaces, no suffix), value <= max. KF_ERR_USAGE otherwise. */
KF_RESULT int ds_parse_u64(const char *s, uint64_t max, uint64_t *out);
/* Optional sign then decimal digits. KF_ERR_USAGE otherwise. */
KF_RESULT int ds_parse_i64(const char *s, int64_t *out);

/* ---- options ---- */
/* One option: value != NULL takes an argument ("--name V" or "--name=V"),
 * else flag is set. A list ends with a NULL name. */
struct ds_opt {
    const char *name;
    const char **value;
    bool *flag;
};
#define DS_OPTS_HELP 1
/* Resets every value to NULL and flag to false, then parses argv. KF_OK;
 * DS_OPTS_HELP when --help or -h is given; KF_ERR_USAGE with why (an unknown
 * option, a value missing or given to a flag, an option given twice, a word
 * that is not an option). */
KF_RESULT int ds_opts_parse(int argc, char **argv, const struct ds_opt *opts, char *why,
                            size_t why_len);

/* ---- addresses ---- */
#define DS_UNIX_PATH_MAX 107 /* sun_path less its terminator */
struct ds_addr {
    bool is_unix;
    char host[256];
    uint16_t port;
    char path[DS_UNIX_PATH_MAX + 1];
};
/* "HOST:PORT" (port 0..65535; 0 only for listening), "[V6]:PORT", "unix:/PATH". */
KF_RESULT int ds_addr_parse(const char *s, struct ds_addr *a);
void ds_addr_format(const struct ds_addr *a, char *out, size_t cap);
/* Bind and listen (a unix path that exists as a socket is replaced). */
KF_RESULT int ds_listen(const struct ds_addr *a, int *fd);
/* The TCP port a listening socket is bound to (0 for unix sockets). */
uint16_t ds_bound_port(int fd);
/* timeout_ms < 0: wait for ever. KF_ERR_TIMEOUT, KF_ERR_IO. */
KF_RESULT int ds_accept(int lfd, int timeout_ms, int *fd);
/* KF_ERR_CONNECT when nothing accepts within timeout_ms. */
KF_RESULT int ds_connect(const struct ds_addr *a, int timeout_ms, int *fd);

/* ---- framing: one TTLV item per message ---- */
#define DS_TTLV_HEADER 8
/* Total bytes of the item whose header starts p (n >= 8): header + value +
 * padding; KF_ERR_LIMIT above max, a TTLV error for an impossible header. */
KF_RESULT int ds_item_total(const uint8_t *p, size_t n, size_t max, size_t *total);
/* KF_OK if p..p+n is exactly one item of at most max bytes. */
KF_RESULT int ds_item_check(const uint8_t *p, size_t n, size_t max);
/*
 * Read one message into msg (reset first; msg must be able to grow to max).
 * timeout_ms bounds the wait for its first byte (< 0: for ever) and for each
 * later read. *eof is set when the peer closed before the first byte
 * (KF_ERR_IO is returned then). KF_ERR_LIMIT above max (nothing past the
 * header is read), KF_ERR_TIMEOUT, KF_ERR_IO.
 */
KF_RESULT int ds_frame_read(int fd, kf_buf *msg, size_t max, int timeout_ms, bool *eof);
/* Write all of p (MSG_NOSIGNAL: a closed peer is KF_ERR_IO, not SIGPIPE). */
KF_RESULT int ds_frame_write(int fd, const uint8_t *p, size_t n);

/* ---- the link's error message ---- */
#define DS_ERROR_ITEM_LEN 16
/* KeyfleetErrorCode (Integer) = code. */
void ds_error_item(int code, uint8_t out[DS_ERROR_ITEM_LEN]);
/* True (and *code set) if p..p+n is exactly one KeyfleetErrorCode item. */
bool ds_error_item_parse(const uint8_t *p, size_t n, int *code);

/* ---- files ---- */
/* Write path atomically and durably with mode 0600: temp file in the same
 * directory, write, fsync, rename over path, fsync the directory. */
KF_RESULT int ds_file_write_atomic(const char *path, const uint8_t *p, size_t n);
/* Read a whole file of at most max bytes into out (allocated here with
 * flags, e.g. KF_BUF_SECRET). KF_ERR_NOT_FOUND, KF_ERR_LIMIT, KF_ERR_IO. */
KF_RESULT int ds_file_read(const char *path, size_t max, unsigned flags, kf_buf *out);

/* ---- output ---- */
void ds_json_string(FILE *f, const char *s);
/* "2026-01-31T12:00:00Z"; INT64 extremes print as "-inf"/"+inf". */
void ds_format_time(int64_t secs, char *out, size_t cap);

/* ---- the postage device (src/devsim/meter.c) ---- */
/* "keyfleet-device meter show|print ...": argv[0] is show or print. Returns
 * the exit code (0, 1 refused, 2 usage). */
int ds_meter_main(int argc, char **argv);

/* ---- TTLV surgery (relay) ---- */
/* The n-th (1-based, preorder) item with tag anywhere in msg: offset of its
 * header, of its value, and the value length. KF_ERR_NOT_FOUND, KF_ERR_FORMAT
 * when the walk meets a malformed item first. */
struct ds_item_pos {
    size_t item_off, value_off, value_len, total;
    uint8_t type;
};
KF_RESULT int ds_find_item(const uint8_t *msg, size_t len, uint32_t tag, unsigned nth,
                           struct ds_item_pos *pos);
/* Where a byte is: an absolute offset (negative: from the end), or inside
 * the value of the nth item with tag, plus a byte offset. */
struct ds_locator {
    bool by_tag;
    uint32_t tag;
    unsigned nth;   /* 1-based */
    int64_t offset; /* absolute (by_tag false) or within the item's value */
};
KF_RESULT int ds_locate(const uint8_t *msg, size_t len, const struct ds_locator *loc, size_t *at);
/* Exchange, in place, the first KeyfleetPairPart of msg with the item right
 * after it, which must be a KeyfleetPairPart too. KF_ERR_NOT_FOUND otherwise. */
KF_RESULT int ds_swap_parts(uint8_t *msg, size_t len);
/* The value of the first item with tag: a LongInteger or DateTime (8 bytes);
 * a Text String copied NUL-terminated (false if it does not fit in cap or
 * holds a NUL). */
bool ds_item_u64(const uint8_t *msg, size_t len, uint32_t tag, uint64_t *v);
bool ds_item_text(const uint8_t *msg, size_t len, uint32_t tag, char *out, size_t cap);
/* "KeyfleetSessionKey", "RequestMessage KeyfleetPairKeyRequest",
 * "ResponseMessage KeyfleetPairKeyRequest Success", or "0x540123"/"malformed". */
void ds_describe(const uint8_t *msg, size_t len, char *out, size_t cap);

/* ---- relay script ---- */
enum ds_dir { DS_UP = 0, DS_DOWN = 1 };
enum ds_action {
    DS_PASS,
    DS_DROP,
    DS_DELAY,
    DS_FLIP,
    DS_REPLACE,
    DS_DUP,
    DS_HOLD,
    DS_SWAP_PARTS,
    DS_CLOSE,
};
#define DS_RULE_FILE_MAX 4096
struct ds_rule {
    unsigned line;
    int dir;          /* DS_UP, DS_DOWN, or -1 for both */
    uint64_t index;   /* 1-based message index in its direction; 0 = any */
    uint32_t has_tag; /* 0, or a tag the message must contain (@Tag) */
    enum ds_action action;
    uint32_t delay_ms;
    struct ds_locator where;
    uint8_t xor_mask;
    char file[DS_RULE_FILE_MAX];
};
struct ds_script {
    struct ds_rule *rules;
    size_t n;
};
/* Parse a script. On KF_ERR_FORMAT, *bad_line (1-based) and why say what. */
KF_RESULT int ds_script_parse(const char *text, size_t len, struct ds_script *s, unsigned *bad_line,
                              char *why, size_t why_len);
void ds_script_free(struct ds_script *s);
/* The first rule for this message, or NULL (pass). */
const struct ds_rule *ds_script_match(const struct ds_script *s, enum ds_dir dir, uint64_t index,
                                      const uint8_t *msg, size_t len);
const char *ds_action_name(enum ds_action a);
const char *ds_dir_name(enum ds_dir d);

/* ---- upstream TLS client (relay) ---- */
typedef struct ds_tls ds_tls;
KF_RESULT int ds_tls_connect(const char *host, uint16_t port, const char *ca_file,
                             const char *cert_file, const char *key_file, int timeout_ms,
                             ds_tls **out);
int ds_tls_fd(const ds_tls *t);
/* Decrypted bytes already buffered (poll on the fd would not show them). */
bool ds_tls_pending(const ds_tls *t);
KF_RESULT int ds_tls_read_frame(ds_tls *t, kf_buf *msg, size_t max, int timeout_ms, bool *eof);
/* The same, but the first bytes must come within first_ms, else DS_TLS_NOTHING
 * (a readable socket that brought only session tickets or a KeyUpdate). */
#define DS_TLS_NOTHING 1
KF_RESULT int ds_tls_read_frame_within(ds_tls *t, kf_buf *msg, size_t max, int first_ms,
                                       int timeout_ms, bool *eof);
KF_RESULT int ds_tls_write(ds_tls *t, const uint8_t *p, size_t n);
void ds_tls_close(ds_tls *t);

#endif
