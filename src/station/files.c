/*
 * A station's files. Each is small and is replaced whole: a crash leaves the
 * old content or the new, never a mix (temporary file, fsync, rename,
 * fsync of the directory). Files are 0600 and never followed through a
 * symlink; the key file is refused if anyone else could have read it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfleet/file.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "station/station_internal.h"

int station_path(char *out, size_t cap, const char *dir, const char *a, const char *b)
{
    int n = b ? snprintf(out, cap, "%s/%s/%s", dir, a, b) : snprintf(out, cap, "%s/%s", dir, a);
    KF_ENSURE(n > 0 && (size_t)n < cap, KF_ERR_LIMIT);
    return KF_OK;
}

bool station_domain_ok(const char *domain)
{
    if (!domain || strcmp(domain, ".") == 0 || strcmp(domain, "..") == 0)
        return false;
    size_t n = 0;
    for (; domain[n]; n++) {
        char c = domain[n];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok || n >= KF_MFG_DOMAIN_MAX)
            return false;
    }
    return n >= 1;
}

int station_read(const char *path, bool secret, uint8_t *out, size_t max, size_t *len)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return KF_ERR_NOT_FOUND;
        kf_error("station: cannot open %s: %s", path, strerror(errno));
        return errno == ELOOP || errno == EACCES ? KF_ERR_PERM : KF_ERR_IO;
    }
    struct stat sb;
    int rc = fstat(fd, &sb) == 0 ? KF_OK : KF_ERR_IO;
    if (rc == KF_OK && !S_ISREG(sb.st_mode))
        rc = KF_ERR_PERM;
    /* A key file someone else could read (or owns) may already be out. */
    if (rc == KF_OK && secret && ((sb.st_mode & 077) != 0 || sb.st_uid != geteuid())) {
        kf_error("station: %s must be a regular file owned by this user with mode 0600", path);
        rc = KF_ERR_PERM;
    }
    size_t got = 0;
    while (rc == KF_OK) {
        if (got == max) { /* one more byte would prove the file is too long */
            uint8_t extra;
            ssize_t r = read(fd, &extra, 1);
            rc = r == 0 ? KF_OK : KF_ERR_LIMIT;
            break;
        }
        ssize_t r = read(fd, out + got, max - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = KF_ERR_IO;
        else if (r == 0)
            break;
        else
            got += (size_t)r;
    }
    close(fd);
    if (rc < 0) {
        kf_wipe(out, max);
        return rc;
    }
    *len = got;
    return KF_OK;
}

int kf_station_write_file(const char *path, const uint8_t *data, size_t len)
{
    return kf_file_write_atomic(path, data, len, "station: ");
}

int kf_station_read_file(const char *path, size_t max, unsigned flags, kf_buf *out)
{
    KF_ENSURE(path && out && max > 0, KF_ERR_ARG);
    KF_GUARD(kf_buf_alloc(out, max, max, flags));
    size_t len = 0;
    int rc = station_read(path, false, out->data, max, &len);
    if (rc < 0) {
        kf_buf_free(out);
        return rc;
    }
    out->len = len;
    return KF_OK;
}
