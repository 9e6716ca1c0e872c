/*
 * A station's identity: its role ID and its two private keys (Ed25519 for
 * signing its reports, X25519 for opening the keys Oak seals to it).
 *
 * The keys file holds "KFSTKEY1" || AES-256-KWP(station key, role ID (9) ||
 * signing key (32) || confidentiality key (32)) under the 32-byte station key
 * file. The role ID is inside the wrap, so a keys file copied next to another
 * station's role file is refused, and a wrong key file fails the unwrap's
 * integrity check (KF_ERR_AUTH).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfleet/crypto.h"
#include "keyfleet/file.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "station/station_internal.h"

#define KEYS_MAGIC "KFSTKEY1"
#define KEYS_MAGIC_LEN 8
#define KEYS_PLAIN_LEN (KF_MFG_ROLE_ID_LEN + 64)
#define KEYS_WRAPPED_LEN 88 /* kf_aes_kwp_wrapped_len(73): 8 + 80 */
#define KEYS_FILE_LEN (KEYS_MAGIC_LEN + KEYS_WRAPPED_LEN)

static int key_file_path(const char *dir, const char *key_file, char *out, size_t cap)
{
    if (key_file) {
        int n = snprintf(out, cap, "%s", key_file);
        KF_ENSURE(n > 0 && (size_t)n < cap, KF_ERR_LIMIT);
        return KF_OK;
    }
    return station_path(out, cap, dir, STATION_DEFAULT_KEY_FILE, NULL);
}

static int read_key_file(const char *path, uint8_t key[STATION_KEY_FILE_LEN])
{
    uint8_t mem[STATION_KEY_FILE_LEN + 1];
    size_t len = 0;
    int rc = station_read(path, true, mem, sizeof(mem), &len);
    if (rc == KF_OK && len != STATION_KEY_FILE_LEN) {
        kf_error("station: %s must hold exactly %d bytes", path, STATION_KEY_FILE_LEN);
        rc = KF_ERR_FORMAT;
    }
    if (rc == KF_OK)
        memcpy(key, mem, STATION_KEY_FILE_LEN);
    kf_wipe(mem, sizeof(mem));
    return rc;
}

/* A new key file: 32 random bytes, created new (never replacing one), 0600. */
static int make_key_file(const char *path, uint8_t key[STATION_KEY_FILE_LEN])
{
    KF_GUARD(kf_crypto_random(key, STATION_KEY_FILE_LEN));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        kf_wipe(key, STATION_KEY_FILE_LEN);
        kf_error("station: cannot create key file %s: %s", path, strerror(errno));
        return errno == EEXIST ? KF_ERR_EXISTS : errno == EACCES ? KF_ERR_PERM : KF_ERR_IO;
    }
    int rc = fchmod(fd, 0600) == 0 ? KF_OK : KF_ERR_IO;
    ssize_t w = rc == KF_OK ? write(fd, key, STATION_KEY_FILE_LEN) : -1;
    if (w != STATION_KEY_FILE_LEN || fsync(fd) != 0)
        rc = KF_ERR_IO;
    if (close(fd) != 0)
        rc = KF_ERR_IO;
    if (rc < 0) {
        unlink(path);
        kf_wipe(key, STATION_KEY_FILE_LEN);
        return rc;
    }
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int n = slash
                ? snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path)
                : snprintf(dir, sizeof(dir), ".");
    if (n > 0 && (size_t)n < sizeof(dir))
        rc = kf_file_fsync_dir(dir);
    return rc;
}

static int get_key(const char *dir, const char *key_file, bool create,
                   uint8_t key[STATION_KEY_FILE_LEN])
{
    char path[PATH_MAX];
    KF_GUARD(key_file_path(dir, key_file, path, sizeof(path)));
    int rc = read_key_file(path, key);
    if (rc == KF_ERR_NOT_FOUND && create)
        rc = make_key_file(path, key);
    return rc;
}

/* The state directory: made 0700 if missing; an existing one must be a real
 * directory (not a symlink) and holds no station yet. */
static int prepare_dir(const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        kf_error("station: cannot create %s: %s", dir, strerror(errno));
        return errno == EACCES ? KF_ERR_PERM : KF_ERR_IO;
    }
    struct stat sb;
    KF_ENSURE(lstat(dir, &sb) == 0, KF_ERR_IO);
    if (!S_ISDIR(sb.st_mode) || sb.st_uid != geteuid()) {
        kf_error("station: %s must be a directory owned by this user", dir);
        return KF_ERR_PERM;
    }
    KF_ENSURE(chmod(dir, 0700) == 0, KF_ERR_PERM);
    char path[PATH_MAX];
    KF_GUARD(station_path(path, sizeof(path), dir, STATION_ROLE_FILE, NULL));
    KF_ENSURE(access(path, F_OK) != 0, KF_ERR_EXISTS);
    KF_GUARD(station_path(path, sizeof(path), dir, STATION_KEYS_FILE, NULL));
    KF_ENSURE(access(path, F_OK) != 0, KF_ERR_EXISTS);
    const char *sub[] = {STATION_CERTS_DIR, STATION_LAST_DIR};
    for (size_t i = 0; i < 2; i++) {
        KF_GUARD(station_path(path, sizeof(path), dir, sub[i], NULL));
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return KF_ERR_IO;
        KF_ENSURE(lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode), KF_ERR_PERM);
        KF_ENSURE(chmod(path, 0700) == 0, KF_ERR_PERM);
    }
    return KF_OK;
}

int kf_station_create(const char *dir, const char *key_file, const char *role_id)
{
    enum kf_mfg_role_type type;
    KF_ENSURE(dir && role_id, KF_ERR_ARG);
    KF_ENSURE(kf_mfg_role_id_parse(role_id, &type) &&
                  (type == KF_MFG_ROLE_STEEL || type == KF_MFG_ROLE_TIN),
              KF_ERR_MFG_PARAM);
    KF_GUARD(prepare_dir(dir));

    uint8_t kek[STATION_KEY_FILE_LEN];
    KF_GUARD(get_key(dir, key_file, true, kek));
    uint8_t *plain = kf_secmem_alloc(KEYS_PLAIN_LEN);
    if (!plain) {
        kf_wipe(kek, sizeof(kek));
        return KF_ERR_SECMEM;
    }
    uint8_t file[KEYS_FILE_LEN];
    memcpy(file, KEYS_MAGIC, KEYS_MAGIC_LEN);
    memcpy(plain, role_id, KF_MFG_ROLE_ID_LEN);
    int rc = kf_crypto_random(plain + KF_MFG_ROLE_ID_LEN, 64);
    if (rc == KF_OK && kf_aes_kwp_wrapped_len(KEYS_PLAIN_LEN) != KEYS_WRAPPED_LEN)
        rc = KF_ERR_INTERNAL;
    if (rc == KF_OK)
        rc = kf_aes_kwp_wrap(kek, sizeof(kek), plain, KEYS_PLAIN_LEN, file + KEYS_MAGIC_LEN);
    kf_wipe(kek, sizeof(kek));
    kf_secmem_free(plain);

    char path[PATH_MAX];
    if (rc == KF_OK)
        rc = station_path(path, sizeof(path), dir, STATION_KEYS_FILE, NULL);
    if (rc == KF_OK)
        rc = kf_station_write_file(path, file, sizeof(file));
    /* The role file comes last: a station without it was never made. */
    char role_line[KF_MFG_ROLE_ID_LEN + 2];
    memcpy(role_line, role_id, KF_MFG_ROLE_ID_LEN);
    role_line[KF_MFG_ROLE_ID_LEN] = '\n';
    role_line[KF_MFG_ROLE_ID_LEN + 1] = 0;
    if (rc == KF_OK)
        rc = station_path(path, sizeof(path), dir, STATION_ROLE_FILE, NULL);
    if (rc == KF_OK)
        rc = kf_station_write_file(path, (const uint8_t *)role_line, KF_MFG_ROLE_ID_LEN + 1);
    return rc;
}

static int read_role(const char *dir, char role_id[KF_MFG_ROLE_ID_LEN + 1])
{
    char path[PATH_MAX];
    uint8_t mem[KF_MFG_ROLE_ID_LEN + 2];
    size_t len = 0;
    KF_GUARD(station_path(path, sizeof(path), dir, STATION_ROLE_FILE, NULL));
    int rc = station_read(path, false, mem, sizeof(mem), &len);
    if (rc == KF_ERR_NOT_FOUND) {
        kf_error("station: %s holds no station (run the init command first)", dir);
        return rc;
    }
    KF_GUARD(rc);
    if (len == KF_MFG_ROLE_ID_LEN + 1 && mem[KF_MFG_ROLE_ID_LEN] == '\n')
        len--;
    KF_ENSURE(len == KF_MFG_ROLE_ID_LEN, KF_ERR_FORMAT);
    memcpy(role_id, mem, KF_MFG_ROLE_ID_LEN);
    role_id[KF_MFG_ROLE_ID_LEN] = 0;
    enum kf_mfg_role_type type;
    KF_ENSURE(kf_mfg_role_id_parse(role_id, &type) &&
                  (type == KF_MFG_ROLE_STEEL || type == KF_MFG_ROLE_TIN),
              KF_ERR_FORMAT);
    return KF_OK;
}

int kf_station_open(const char *dir, const char *key_file, kf_station **out)
{
    KF_ENSURE(dir && out, KF_ERR_ARG);
    *out = NULL;
    kf_station *st = calloc(1, sizeof(*st));
    KF_ENSURE(st, KF_ERR_NOMEM);
    int n = snprintf(st->dir, sizeof(st->dir), "%s", dir);
    int rc = n > 0 && (size_t)n < sizeof(st->dir) ? KF_OK : KF_ERR_LIMIT;
    if (rc == KF_OK)
        rc = read_role(dir, st->role_id);

    uint8_t file[KEYS_FILE_LEN + 1];
    size_t flen = 0;
    char path[PATH_MAX];
    if (rc == KF_OK)
        rc = station_path(path, sizeof(path), dir, STATION_KEYS_FILE, NULL);
    if (rc == KF_OK)
        rc = station_read(path, true, file, sizeof(file), &flen);
    if (rc == KF_OK && (flen != KEYS_FILE_LEN || memcmp(file, KEYS_MAGIC, KEYS_MAGIC_LEN) != 0))
        rc = KF_ERR_FORMAT;

    uint8_t kek[STATION_KEY_FILE_LEN];
    uint8_t *plain = kf_secmem_alloc(KEYS_WRAPPED_LEN);
    st->priv = kf_secmem_alloc(64);
    if (rc == KF_OK && (!plain || !st->priv))
        rc = KF_ERR_SECMEM;
    if (rc == KF_OK)
        rc = get_key(dir, key_file, false, kek);
    size_t plen = 0;
    if (rc == KF_OK) {
        rc = kf_aes_kwp_unwrap(kek, sizeof(kek), file + KEYS_MAGIC_LEN, KEYS_WRAPPED_LEN, plain,
                               &plen);
        kf_wipe(kek, sizeof(kek));
        if (rc < 0)
            kf_error("station: the keys of %s do not open with this station key file", dir);
    }
    /* The role ID inside the wrap must be the role file's. */
    if (rc == KF_OK &&
        (plen != KEYS_PLAIN_LEN || memcmp(plain, st->role_id, KF_MFG_ROLE_ID_LEN) != 0))
        rc = KF_ERR_AUTH;
    if (rc == KF_OK)
        memcpy(st->priv, plain + KF_MFG_ROLE_ID_LEN, 64);
    kf_secmem_free(plain);
    if (rc == KF_OK)
        rc = kf_ed25519_public(st->priv, st->sign_pub);
    if (rc == KF_OK)
        rc = kf_x25519_public(st->priv + 32, st->enc_pub);
    if (rc < 0) {
        kf_station_close(st);
        return rc;
    }
    *out = st;
    return KF_OK;
}

void kf_station_close(kf_station *st)
{
    if (!st)
        return;
    kf_secmem_free(st->priv);
    free(st);
}

const char *kf_station_role_id(const kf_station *st)
{
    return st->role_id;
}

void kf_station_public(const kf_station *st, uint8_t sign_pub[32], uint8_t enc_pub[32])
{
    if (sign_pub)
        memcpy(sign_pub, st->sign_pub, 32);
    if (enc_pub)
        memcpy(enc_pub, st->enc_pub, 32);
}

int kf_station_sign(const kf_station *st, const struct kf_mfg_record *rec, kf_buf *out)
{
    KF_ENSURE(st && rec && out, KF_ERR_ARG);
    return kf_mfg_record_sign(rec, st->role_id, st->priv, out);
}

int kf_station_open_key(const kf_station *st, const char *domain, uint64_t key_id,
                        const char *context_recipient, const uint8_t in[KF_MFG_SEALED_LEN],
                        uint8_t key[KF_MFG_KEY_LEN])
{
    KF_ENSURE(st && domain && in && key, KF_ERR_ARG);
    return kf_mfg_open_key(st->priv + 32, domain, key_id,
                           context_recipient ? context_recipient : st->role_id, in, key);
}
