/*
 * Durable whole-file writes for small state files (a station's records, the
 * simulated device's storage): a crash leaves the old content or the new,
 * never a mix (temporary file, fsync, rename, fsync of the directory).
 */
#ifndef KEYFLEET_FILE_H
#define KEYFLEET_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "keyfleet/error.h"

/* write(2) until all n bytes are out, retrying EINTR. KF_ERR_IO otherwise. */
KF_RESULT int kf_file_write_all(int fd, const uint8_t *p, size_t n);
/* fsync a directory so a rename or create inside it survives a crash. */
KF_RESULT int kf_file_fsync_dir(const char *dir);
/* The directory part of path ("." for a bare name, "/" for "/x"). */
KF_RESULT int kf_file_dir_of(const char *path, char *dir, size_t cap);
/*
 * Replaces path with data[0..len) atomically and durably, mode 0600: the
 * temporary file is created next to it with O_EXCL (mkostemp), fsync'ed,
 * renamed over path, and the directory fsync'ed. Log lines start with
 * log_prefix (e.g. "station: ", or ""). KF_ERR_PERM when the directory
 * refuses the temporary file (EACCES), KF_ERR_LIMIT for a path too long,
 * KF_ERR_IO for any other failure; on failure no temporary file is left.
 */
KF_RESULT int kf_file_write_atomic(const char *path, const uint8_t *data, size_t len,
                                   const char *log_prefix);

#endif
