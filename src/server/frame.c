/* Framing of TTLV messages on stream sockets, with timeouts and a size cap. */
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "keyfleet/server.h"
#include "keyfleet/ttlv.h"

static int wait_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (;;) {
        int r = poll(&p, 1, timeout_ms);
        if (r > 0)
            return KF_OK;
        if (r == 0)
            return KF_ERR_TIMEOUT;
        if (errno != EINTR)
            return KF_ERR_IO;
    }
}

static int read_exact(int fd, uint8_t *p, size_t n, int timeout_ms, size_t *got)
{
    *got = 0;
    while (*got < n) {
        KF_GUARD(wait_readable(fd, timeout_ms));
        ssize_t r = read(fd, p + *got, n - *got);
        if (r == 0)
            return KF_ERR_IO;
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return KF_ERR_IO;
        }
        *got += (size_t)r;
    }
    return KF_OK;
}

int kf_frame_read(int fd, kf_buf *msg, size_t max, int first_byte_timeout_ms,
                  int rest_timeout_ms, int *eof)
{
    uint8_t *hdr, *body;
    size_t got, total;
    struct kf_ttlv_limits lim = {.max_total = max};
    *eof = 0;
    kf_buf_reset(msg);
    KF_GUARD(wait_readable(fd, first_byte_timeout_ms));
    KF_GUARD(kf_buf_put_space(msg, KF_TTLV_HEADER_LEN, &hdr));
    int rc = read_exact(fd, hdr, KF_TTLV_HEADER_LEN, rest_timeout_ms, &got);
    if (rc < 0) {
        *eof = got == 0 && rc == KF_ERR_IO;
        return rc;
    }
    KF_GUARD(kf_ttlv_message_length(hdr, &lim, &total));
    KF_ENSURE(total >= KF_TTLV_HEADER_LEN && total <= max, KF_ERR_LIMIT);
    KF_GUARD(kf_buf_put_space(msg, total - KF_TTLV_HEADER_LEN, &body));
    return read_exact(fd, body, total - KF_TTLV_HEADER_LEN, rest_timeout_ms, &got);
}

int kf_frame_write(int fd, const uint8_t *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return KF_ERR_IO;
        }
        done += (size_t)w;
    }
    return KF_OK;
}
