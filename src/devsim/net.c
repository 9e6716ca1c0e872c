/* Addresses, sockets and the one-TTLV-item framing of the simulator's links. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "devsim/devsim.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/ttlv.h"

int ds_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    KF_ENSURE(s && out && *s, KF_ERR_USAGE);
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        KF_ENSURE(*p >= '0' && *p <= '9', KF_ERR_USAGE);
        unsigned d = (unsigned)(*p - '0');
        KF_ENSURE(v <= (UINT64_MAX - d) / 10, KF_ERR_USAGE);
        v = v * 10 + d;
    }
    KF_ENSURE(v <= max, KF_ERR_USAGE);
    *out = v;
    return KF_OK;
}

int ds_parse_i64(const char *s, int64_t *out)
{
    KF_ENSURE(s && out, KF_ERR_USAGE);
    bool neg = *s == '-';
    if (*s == '-' || *s == '+')
        s++;
    uint64_t mag;
    KF_GUARD(ds_parse_u64(s, neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &mag));
    /* -2^63 has no positive twin: build it from its magnitude without overflow */
    *out = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    return KF_OK;
}

/* ---- addresses ---- */

int ds_addr_parse(const char *s, struct ds_addr *a)
{
    KF_ENSURE(s && a, KF_ERR_USAGE);
    memset(a, 0, sizeof(*a));
    if (strncmp(s, "unix:", 5) == 0) {
        const char *path = s + 5;
        size_t n = strlen(path);
        KF_ENSURE(n > 0 && n <= DS_UNIX_PATH_MAX, KF_ERR_USAGE);
        a->is_unix = true;
        memcpy(a->path, path, n + 1);
        return KF_OK;
    }
    const char *colon = strrchr(s, ':');
    KF_ENSURE(colon && colon != s, KF_ERR_USAGE);
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[') { /* [v6]:port */
        KF_ENSURE(hl >= 3 && h[hl - 1] == ']', KF_ERR_USAGE);
        h++;
        hl -= 2;
    } else {
        KF_ENSURE(memchr(h, ':', hl) == NULL, KF_ERR_USAGE); /* bare v6 needs brackets */
    }
    KF_ENSURE(hl > 0 && hl < sizeof(a->host), KF_ERR_USAGE);
    memcpy(a->host, h, hl);
    a->host[hl] = 0;
    uint64_t port;
    KF_GUARD(ds_parse_u64(colon + 1, 65535, &port));
    a->port = (uint16_t)port;
    return KF_OK;
}

void ds_addr_format(const struct ds_addr *a, char *out, size_t cap)
{
    int n;
    if (a->is_unix)
        n = snprintf(out, cap, "unix:%s", a->path);
    else if (strchr(a->host, ':'))
        n = snprintf(out, cap, "[%s]:%u", a->host, (unsigned)a->port);
    else
        n = snprintf(out, cap, "%s:%u", a->host, (unsigned)a->port);
    if (n < 0 || (size_t)n >= cap)
        snprintf(out, cap, "?");
}

static int unix_sockaddr(const struct ds_addr *a, struct sockaddr_un *sa_un)
{
    memset(sa_un, 0, sizeof(*sa_un));
    sa_un->sun_family = AF_UNIX;
    KF_ENSURE(strlen(a->path) < sizeof(sa_un->sun_path), KF_ERR_USAGE);
    memcpy(sa_un->sun_path, a->path, strlen(a->path) + 1);
    return KF_OK;
}

int ds_listen(const struct ds_addr *a, int *out)
{
    int fd = -1, one = 1;
    if (a->is_unix) {
        struct sockaddr_un sa_un;
        struct stat sb;
        KF_GUARD(unix_sockaddr(a, &sa_un));
        if (lstat(a->path, &sb) == 0) {
            KF_ENSURE(S_ISSOCK(sb.st_mode),
                      KF_ERR_EXISTS); /* never unlink a file that is not ours */
            unlink(a->path);
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        KF_ENSURE(fd >= 0, KF_ERR_IO);
        if (bind(fd, (struct sockaddr *)&sa_un, sizeof(sa_un)) != 0 || listen(fd, 16) != 0) {
            close(fd);
            return KF_ERR_IO;
        }
        *out = fd;
        return KF_OK;
    }
    char port[8];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *ai, *p;
    snprintf(port, sizeof(port), "%u", (unsigned)a->port);
    KF_ENSURE(getaddrinfo(a->host, port, &hints, &ai) == 0, KF_ERR_USAGE);
    for (p = ai; p; p = p->ai_next) {
        fd = socket(p->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, p->ai_addr, p->ai_addrlen) == 0 && listen(fd, 16) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    KF_ENSURE(fd >= 0, KF_ERR_IO);
    *out = fd;
    return KF_OK;
}

uint16_t ds_bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

/* poll one fd for events; KF_ERR_TIMEOUT, KF_ERR_IO; EINTR restarts the full wait. */
static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int r = poll(&p, 1, timeout_ms < 0 ? -1 : timeout_ms);
        if (r > 0)
            return KF_OK;
        if (r == 0)
            return KF_ERR_TIMEOUT;
        if (errno != EINTR)
            return KF_ERR_IO;
    }
}

int ds_accept(int lfd, int timeout_ms, int *out)
{
    KF_GUARD(wait_fd(lfd, POLLIN, timeout_ms));
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    KF_ENSURE(fd >= 0, KF_ERR_IO);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails harmlessly on unix */
    *out = fd;
    return KF_OK;
}

/* Non-blocking connect bounded by timeout_ms, then back to blocking. */
static int connect_bounded(int fd, const struct sockaddr *sa, socklen_t sl, int timeout_ms)
{
    int flags = fcntl(fd, F_GETFL);
    KF_ENSURE(flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0, KF_ERR_IO);
    int rc = KF_OK;
    if (connect(fd, sa, sl) != 0) {
        if (errno != EINPROGRESS)
            rc = KF_ERR_CONNECT;
        else if (wait_fd(fd, POLLOUT, timeout_ms) != KF_OK)
            rc = KF_ERR_CONNECT;
        else {
            int err = 0;
            socklen_t el = sizeof(err);
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0)
                rc = KF_ERR_CONNECT;
        }
    }
    if (fcntl(fd, F_SETFL, flags) != 0)
        rc = KF_ERR_IO;
    return rc;
}

int ds_connect(const struct ds_addr *a, int timeout_ms, int *out)
{
    int fd = -1;
    if (timeout_ms < 0)
        timeout_ms = 60000;
    if (a->is_unix) {
        struct sockaddr_un sa_un;
        KF_GUARD(unix_sockaddr(a, &sa_un));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        KF_ENSURE(fd >= 0, KF_ERR_IO);
        if (connect_bounded(fd, (struct sockaddr *)&sa_un, sizeof(sa_un), timeout_ms) != KF_OK) {
            close(fd);
            return KF_ERR_CONNECT;
        }
        *out = fd;
        return KF_OK;
    }
    char port[8];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai, *p;
    snprintf(port, sizeof(port), "%u", (unsigned)a->port);
    KF_ENSURE(a->port != 0 && getaddrinfo(a->host, port, &hints, &ai) == 0, KF_ERR_CONNECT);
    for (p = ai; p; p = p->ai_next) {
        fd = socket(p->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect_bounded(fd, p->ai_addr, p->ai_addrlen, timeout_ms) == KF_OK)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    KF_ENSURE(fd >= 0, KF_ERR_CONNECT);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *out = fd;
    return KF_OK;
}

/* ---- framing ---- */

int ds_item_total(const uint8_t *p, size_t n, size_t max, size_t *total)
{
    KF_ENSURE(p && total, KF_ERR_ARG);
    KF_ENSURE(n >= DS_TTLV_HEADER, KF_ERR_SHORT);
    struct kf_ttlv_limits lim = {.max_total = max};
    int rc = kf_ttlv_message_length(p, &lim, total);
    if (rc == KF_ERR_TTLV_TOTAL)
        return KF_ERR_LIMIT;
    return rc;
}

int ds_item_check(const uint8_t *p, size_t n, size_t max)
{
    size_t total;
    KF_GUARD(ds_item_total(p, n, max, &total));
    KF_ENSURE(total == n, total > n ? KF_ERR_SHORT : KF_ERR_TTLV_TRAILING);
    return KF_OK;
}

static int read_exact(int fd, uint8_t *p, size_t n, int timeout_ms, size_t *got)
{
    *got = 0;
    while (*got < n) {
        KF_GUARD(wait_fd(fd, POLLIN, timeout_ms));
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

int ds_frame_read(int fd, kf_buf *msg, size_t max, int timeout_ms, bool *eof)
{
    uint8_t *hdr, *body;
    size_t got, total;
    *eof = false;
    KF_ENSURE(max >= DS_TTLV_HEADER, KF_ERR_ARG);
    kf_buf_reset(msg);
    KF_GUARD(kf_buf_put_space(msg, DS_TTLV_HEADER, &hdr));
    int rc = read_exact(fd, hdr, DS_TTLV_HEADER, timeout_ms, &got);
    if (rc < 0) {
        *eof = got == 0 && rc == KF_ERR_IO;
        return rc;
    }
    KF_GUARD(ds_item_total(hdr, DS_TTLV_HEADER, max, &total));
    KF_GUARD(kf_buf_put_space(msg, total - DS_TTLV_HEADER, &body));
    return read_exact(fd, body, total - DS_TTLV_HEADER, timeout_ms, &got);
}

int ds_frame_write(int fd, const uint8_t *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(fd, p + done, n - done, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK)
            w = write(fd, p + done, n - done);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return KF_ERR_IO;
        }
        done += (size_t)w;
    }
    return KF_OK;
}

/* ---- link error item ---- */

void ds_error_item(int code, uint8_t out[DS_ERROR_ITEM_LEN])
{
    kf_buf b;
    kf_buf_fixed(&b, out, DS_ERROR_ITEM_LEN);
    /* header, 4-byte Integer, 4 bytes of padding: exactly 16 bytes, so no put can fail */
    int rc = kf_buf_put_u24(&b, KMIP_TAG_KEYFLEET_ERROR_CODE);
    rc |= kf_buf_put_u8(&b, 0x02);
    rc |= kf_buf_put_u32(&b, 4);
    rc |= kf_buf_put_u32(&b, (uint32_t)code);
    rc |= kf_buf_put_u32(&b, 0);
    (void)rc;
}

bool ds_error_item_parse(const uint8_t *p, size_t n, int *code)
{
    kf_buf b;
    uint32_t tag, len, v, pad;
    uint8_t type;
    if (!p || n != DS_ERROR_ITEM_LEN)
        return false;
    kf_buf_reader(&b, p, n);
    if (kf_buf_get_u24(&b, &tag) < 0 || kf_buf_get_u8(&b, &type) < 0 ||
        kf_buf_get_u32(&b, &len) < 0 || kf_buf_get_u32(&b, &v) < 0 || kf_buf_get_u32(&b, &pad) < 0)
        return false;
    if (tag != KMIP_TAG_KEYFLEET_ERROR_CODE || type != 0x02 || len != 4 || pad != 0)
        return false;
    *code = (int)(int32_t)v;
    return true;
}
