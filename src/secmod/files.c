/*
 * The security module's files in its data directory. They are few and small
 * and must never be half-written or silently replaced:
 *   secmod.meta   public metadata (backend, M, N, key check value)
 *   dev-root.key  dev mode only: the single share, i.e. the root key
 * Created with O_EXCL | O_NOFOLLOW, mode 0600: written to a temporary name,
 * fsync'ed, renamed into place without replacing (RENAME_NOREPLACE), and the
 * directory fsync'ed so the rename itself survives a crash.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfleet/buf.h"
#include "keyfleet/file.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "secmod/secmod_internal.h"

#define META_MAGIC 0x4b46534du /* "KFSM" */
#define META_VERSION 1
#define META_FLAG_DEV 0x01
#define META_LEN (4 + 1 + 1 + 1 + 1 + 1 + SECMOD_KCV_LEN)
#define FILE_MAX 4096

static int join_path(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    KF_ENSURE(n > 0 && (size_t)n < cap, KF_ERR_LIMIT);
    return KF_OK;
}

/* The temporary file is ours alone: a stale one from a crash is removed, and
 * O_EXCL | O_NOFOLLOW refuse anything that appears in between. */
static int write_temp(const char *tmp, const uint8_t *data, size_t len)
{
    if (unlink(tmp) != 0 && errno != ENOENT)
        return KF_ERR_IO;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        kf_error("secmod: cannot create %s: %s", tmp, strerror(errno));
        return errno == EACCES ? KF_ERR_PERM : KF_ERR_IO;
    }
    int rc = kf_file_write_all(fd, data, len);
    if (rc == KF_OK && fchmod(fd, 0600) != 0) /* umask cannot widen it, but be explicit */
        rc = KF_ERR_IO;
    if (rc == KF_OK && fsync(fd) != 0)
        rc = KF_ERR_IO;
    if (close(fd) != 0 && rc == KF_OK)
        rc = KF_ERR_IO;
    if (rc < 0)
        unlink(tmp);
    return rc;
}

int secmod_file_create(const char *dir, const char *name, const uint8_t *data, size_t len)
{
    char path[4096], tmp[4096];
    KF_GUARD(join_path(path, sizeof(path), dir, name));
    KF_GUARD(join_path(tmp, sizeof(tmp), dir, name));
    KF_ENSURE(strlen(tmp) + 5 < sizeof(tmp), KF_ERR_LIMIT);
    strcat(tmp, ".tmp");
    KF_GUARD(write_temp(tmp, data, len));
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) != 0) {
        int err = errno;
        unlink(tmp);
        if (err == EEXIST)
            return KF_ERR_EXISTS;
        kf_error("secmod: cannot rename %s into place: %s", tmp, strerror(err));
        return KF_ERR_IO;
    }
    return kf_file_fsync_dir(dir);
}

/* Opens name in dir for reading without following a symlink. */
static int open_no_follow(const char *dir, const char *name, int *fd)
{
    char path[4096];
    KF_GUARD(join_path(path, sizeof(path), dir, name));
    *fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (*fd < 0) {
        if (errno == ENOENT)
            return KF_ERR_NOT_FOUND;
        kf_error("secmod: cannot open %s: %s", path, strerror(errno));
        return errno == ELOOP || errno == EACCES ? KF_ERR_PERM : KF_ERR_IO;
    }
    return KF_OK;
}

static int read_fd(int fd, uint8_t *out, size_t cap, size_t *len)
{
    size_t got = 0;
    for (;;) {
        KF_ENSURE(got < cap, KF_ERR_LIMIT); /* one byte of room proves we saw the end */
        ssize_t r = read(fd, out + got, cap - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return KF_ERR_IO;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    *len = got;
    return KF_OK;
}

int secmod_secret_file_read(const char *dir, const char *name, uint8_t *out, size_t cap,
                            size_t *len)
{
    int fd;
    KF_GUARD(open_no_follow(dir, name, &fd));
    struct stat st;
    int rc = fstat(fd, &st) == 0 ? KF_OK : KF_ERR_IO;
    /* A key file anyone else can read, or that someone else owns, is refused
     * rather than used: the key may already be out. */
    if (rc == KF_OK && (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0 ||
                        st.st_uid != geteuid())) {
        kf_error("secmod: %s/%s must be a regular file owned by this user with mode 0600",
                 dir, name);
        rc = KF_ERR_PERM;
    }
    if (rc == KF_OK)
        rc = read_fd(fd, out, cap, len);
    close(fd);
    if (rc < 0)
        kf_wipe(out, cap);
    return rc;
}

static int meta_encode(const struct secmod_meta *meta, kf_buf *b)
{
    KF_GUARD(kf_buf_put_u32(b, META_MAGIC));
    KF_GUARD(kf_buf_put_u8(b, META_VERSION));
    KF_GUARD(kf_buf_put_u8(b, (uint8_t)meta->backend));
    KF_GUARD(kf_buf_put_u8(b, meta->dev ? META_FLAG_DEV : 0));
    KF_GUARD(kf_buf_put_u8(b, (uint8_t)meta->m));
    KF_GUARD(kf_buf_put_u8(b, (uint8_t)meta->n));
    KF_GUARD(kf_buf_put_bytes(b, meta->kcv, SECMOD_KCV_LEN));
    return KF_OK;
}

static int meta_decode(kf_buf *b, struct secmod_meta *meta)
{
    uint32_t magic;
    uint8_t version, backend, flags, m, n;
    KF_GUARD(kf_buf_get_u32(b, &magic));
    KF_GUARD(kf_buf_get_u8(b, &version));
    KF_ENSURE(magic == META_MAGIC, KF_ERR_FORMAT);
    KF_ENSURE(version == META_VERSION, KF_ERR_UNSUPPORTED);
    KF_GUARD(kf_buf_get_u8(b, &backend));
    KF_GUARD(kf_buf_get_u8(b, &flags));
    KF_GUARD(kf_buf_get_u8(b, &m));
    KF_GUARD(kf_buf_get_u8(b, &n));
    KF_GUARD(kf_buf_get_bytes(b, meta->kcv, SECMOD_KCV_LEN));
    KF_ENSURE(kf_buf_remaining(b) == 0, KF_ERR_FORMAT);
    KF_ENSURE(backend == KF_SECMOD_SOFT || backend == KF_SECMOD_PKCS11, KF_ERR_FORMAT);
    KF_ENSURE((flags & ~META_FLAG_DEV) == 0, KF_ERR_FORMAT);
    meta->backend = backend;
    meta->dev = (flags & META_FLAG_DEV) != 0;
    meta->m = m;
    meta->n = n;
    return KF_OK;
}

int secmod_meta_write(const char *dir, const struct secmod_meta *meta)
{
    uint8_t mem[META_LEN];
    kf_buf b;
    kf_buf_fixed(&b, mem, sizeof(mem));
    KF_GUARD(meta_encode(meta, &b));
    int rc = secmod_file_create(dir, SECMOD_META_FILE, b.data, b.len);
    return rc == KF_ERR_EXISTS ? KF_ERR_ALREADY_INIT : rc;
}

int secmod_meta_read(const char *dir, struct secmod_meta *meta)
{
    int fd;
    KF_GUARD(open_no_follow(dir, SECMOD_META_FILE, &fd));
    uint8_t mem[FILE_MAX];
    size_t len = 0;
    int rc = read_fd(fd, mem, sizeof(mem), &len);
    close(fd);
    KF_GUARD(rc);
    kf_buf b;
    kf_buf_reader(&b, mem, len);
    rc = meta_decode(&b, meta);
    if (rc < 0) {
        kf_error("secmod: %s/%s is not valid security module metadata", dir, SECMOD_META_FILE);
        return rc == KF_ERR_SHORT ? KF_ERR_FORMAT : rc;
    }
    return KF_OK;
}
