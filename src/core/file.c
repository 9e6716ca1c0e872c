/*
 * Durable whole-file writes (include/keyfleet/file.h), shared by the station
 * (src/station/files.c), the security module (src/secmod/files.c) and the
 * device simulator (src/devsim/file.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfleet/file.h"
#include "keyfleet/log.h"

int kf_file_write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return KF_ERR_IO;
        p += w;
        n -= (size_t)w;
    }
    return KF_OK;
}

int kf_file_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return KF_ERR_IO;
    int rc = fsync(fd) == 0 ? KF_OK : KF_ERR_IO;
    close(fd);
    return rc;
}

int kf_file_dir_of(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');
    int n;
    if (!slash)
        n = snprintf(dir, cap, ".");
    else if (slash == path)
        n = snprintf(dir, cap, "/");
    else
        n = snprintf(dir, cap, "%.*s", (int)(slash - path), path);
    KF_ENSURE(n > 0 && (size_t)n < cap, KF_ERR_LIMIT);
    return KF_OK;
}

int kf_file_write_atomic(const char *path, const uint8_t *data, size_t len, const char *log_prefix)
{
    KF_ENSURE(path && (data || len == 0) && log_prefix, KF_ERR_ARG);
    char tmp[PATH_MAX], dir[PATH_MAX];
    KF_GUARD(kf_file_dir_of(path, dir, sizeof(dir)));
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path);
    KF_ENSURE(n > 0 && (size_t)n < sizeof(tmp), KF_ERR_LIMIT);
    int fd = mkostemp(tmp, O_CLOEXEC); /* O_EXCL, mode 0600 */
    if (fd < 0) {
        int err = errno; /* the log call may change errno */
        kf_error("%scannot create a file next to %s: %s", log_prefix, path, strerror(err));
        return err == EACCES ? KF_ERR_PERM : KF_ERR_IO;
    }
    int rc = fchmod(fd, 0600) == 0 ? KF_OK : KF_ERR_IO;
    if (rc == KF_OK)
        rc = kf_file_write_all(fd, data, len);
    if (rc == KF_OK && fsync(fd) != 0)
        rc = KF_ERR_IO;
    if (close(fd) != 0)
        rc = KF_ERR_IO;
    if (rc == KF_OK && rename(tmp, path) != 0)
        rc = KF_ERR_IO;
    if (rc < 0) {
        kf_error("%scannot write %s: %s", log_prefix, path, strerror(errno));
        unlink(tmp);
        return rc;
    }
    return kf_file_fsync_dir(dir);
}
