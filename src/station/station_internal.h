/*
 * Inside the station state module (include/keyfleet/station.h): the open
 * station and the file helpers its parts share.
 */
#ifndef KF_STATION_INTERNAL_H
#define KF_STATION_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/station.h"

#define STATION_ROLE_FILE "role"
#define STATION_KEYS_FILE "keys"
#define STATION_CERTS_DIR "certs"
#define STATION_LAST_DIR "last"
#define STATION_DEFAULT_KEY_FILE "station.key"
#define STATION_KEY_FILE_LEN 32
#define STATION_CERTS_MAX (64u * 1024u) /* a domain's enrolment records */
#define STATION_RECORDS_MAX 16          /* certificates in one enrolment answer */

struct kf_station {
    char dir[PATH_MAX];
    char role_id[KF_MFG_ROLE_ID_LEN + 1];
    uint8_t *priv; /* secure memory: Ed25519 signing key (32) || X25519 key (32) */
    uint8_t sign_pub[32], enc_pub[32];
};

/* "dir/a" or "dir/a/b" (b may be NULL); KF_ERR_LIMIT if it does not fit. */
int station_path(char *out, size_t cap, const char *dir, const char *a, const char *b);
/* A domain name that is also a safe file name: keyfleet's domain names
 * (1-64 of A-Z a-z 0-9 . _ -), but not "." or "..". */
bool station_domain_ok(const char *domain);
/* Read a regular file (no symlink followed) of at most max bytes. A secret
 * file must be owned by this user with no group or other permission bits. */
int station_read(const char *path, bool secret, uint8_t *out, size_t max, size_t *len);

#endif
