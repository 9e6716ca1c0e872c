/*
 * Transports. Now: the local admin socket (UNIX stream socket, peer
 * credentials checked), carrying KMIP TTLV request/response messages, the
 * same wire format as the network server. Framing: each message is exactly
 * one TTLV item; its 8-byte header gives the length (kf_ttlv_message_length).
 */
#ifndef KEYFLEET_SERVER_H
#define KEYFLEET_SERVER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/kms.h"

#define KF_SOCKET_NAME "keyfleetd.sock"
#define KF_FRAME_MAX ((size_t)1024 * 1024)

struct kf_local_server_config {
    const char *socket_path;
    kf_kms *kms;
    unsigned max_connections;  /* 0 = 64 */
    int idle_timeout_ms;       /* between messages; 0 = 300 s */
    int message_timeout_ms;    /* to finish a started message; 0 = 10 s */
};

/* Serve until *stop becomes non-zero. Creates the socket 0600; removes it on return. */
KF_RESULT int kf_local_server_run(const struct kf_local_server_config *cfg,
                                  volatile sig_atomic_t *stop);

/* Read one framed message into msg (reset first). KF_ERR_IO on EOF before any byte
 * (*eof set), KF_ERR_TIMEOUT, KF_ERR_LIMIT above max, or a TTLV header error. */
KF_RESULT int kf_frame_read(int fd, kf_buf *msg, size_t max, int first_byte_timeout_ms,
                            int rest_timeout_ms, int *eof);
KF_RESULT int kf_frame_write(int fd, const uint8_t *p, size_t n);

/* Client side (the keyfleet CLI). */
KF_RESULT int kf_client_connect(const char *socket_path, int *fd);
/* Send one request, read one response into resp. */
KF_RESULT int kf_client_call(int fd, const uint8_t *req, size_t len, kf_buf *resp);

#endif
