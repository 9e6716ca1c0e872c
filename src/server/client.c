/* Client side of the admin socket, for the keyfleet CLI and tests. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "keyfleet/server.h"

int kf_client_connect(const char *socket_path, int *fd)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    KF_ENSURE(strlen(socket_path) < sizeof(sa.sun_path), KF_ERR_LIMIT);
    memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    KF_ENSURE(s >= 0, KF_ERR_IO);
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(s);
        return KF_ERR_CONNECT;
    }
    *fd = s;
    return KF_OK;
}

int kf_client_call(int fd, const uint8_t *req, size_t len, kf_buf *resp)
{
    int eof;
    KF_GUARD(kf_frame_write(fd, req, len));
    int rc = kf_frame_read(fd, resp, KF_FRAME_MAX, 600000, 60000, &eof);
    return eof ? KF_ERR_CONNECT : rc;
}
