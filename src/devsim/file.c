/*
 * The simulated device's secure storage is a file: written atomically and
 * durably (a crash leaves the old state or the new one, never a mix), mode
 * 0600. It holds the device's keys in the clear, as a real device's
 * protected non-volatile memory would.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "devsim/devsim.h"
#include "keyfleet/file.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"

int ds_file_write_atomic(const char *path, const uint8_t *p, size_t n)
{
    int rc = kf_file_write_atomic(path, p, n, "");
    /* The simulator has always answered a refused directory with KF_ERR_IO. */
    return rc == KF_ERR_PERM ? KF_ERR_IO : rc;
}

int ds_file_read(const char *path, size_t max, unsigned flags, kf_buf *out)
{
    KF_ENSURE(path && out, KF_ERR_ARG);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? KF_ERR_NOT_FOUND : KF_ERR_IO;
    struct stat sb;
    int rc = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) ? KF_OK : KF_ERR_IO;
    if (rc == KF_OK && (uint64_t)sb.st_size > max)
        rc = KF_ERR_LIMIT;
    if (rc == KF_OK)
        rc = kf_buf_alloc(out, sb.st_size ? (size_t)sb.st_size : 1, max, flags);
    uint8_t chunk[4096]; /* may hold secret bytes: wiped below */
    while (rc == KF_OK) {
        ssize_t r = read(fd, chunk, sizeof(chunk));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = KF_ERR_IO;
        else if (r == 0)
            break;
        else if (out->len + (size_t)r > max) /* the file grew past max while we read */
            rc = KF_ERR_LIMIT;
        else
            rc = kf_buf_put_bytes(out, chunk, (size_t)r);
    }
    kf_wipe(chunk, sizeof(chunk));
    close(fd);
    if (rc < 0)
        kf_buf_free(out);
    return rc;
}

void ds_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

void ds_format_time(int64_t secs, char *out, size_t cap)
{
    struct tm tm;
    time_t t = (time_t)secs;
    if (secs == INT64_MIN || secs == INT64_MAX || !gmtime_r(&t, &tm) ||
        strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, cap, "%s", secs < 0 ? "-inf" : "+inf");
}
