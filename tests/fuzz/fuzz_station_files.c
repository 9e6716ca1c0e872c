/*
 * Fuzz the decoders of a station's state directory (include/keyfleet/station.h):
 * the first input byte picks the file, the rest becomes its content, and the
 * station reads it back the way keyfleet-install and keyfleet-verify do:
 *   0  last/<domain>   kf_station_last_key_id (a decimal key ID)
 *   1  certs/<domain>  kf_station_domain_role for M, O and B (enrolment records)
 *   2  role            kf_station_open (the role ID line)
 *   3  keys            kf_station_open (the wrapped private keys)
 * One station is made at start-up in a temporary directory; the file is
 * restored after each input so the next one starts from a good station.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfleet/station.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char top[64], dir[80], key_file[96];
static kf_station *st;
static uint8_t *good_role, *good_keys;
static size_t good_role_len, good_keys_len;

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        abort();
    uint8_t *p = malloc(65536);
    if (!p)
        abort();
    *len = fread(p, 1, 65536, f);
    fclose(f);
    return p;
}

static void put(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (n && fwrite(p, 1, n, f) != n)
        abort();
    fclose(f);
}

/* The station's files are known: remove them and the directories at exit. */
static void cleanup(void)
{
    static const char *const files[] = {"s/last/VE", "s/certs/VE", "s/role", "s/keys",
                                        "s/last", "s/certs", "s", "station.key"};
    char p[160];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", top, files[i]);
        if (unlink(p) != 0)
            rmdir(p);
    }
    rmdir(top);
}

static void setup(void)
{
    snprintf(top, sizeof(top), "/tmp/kf-fuzz-station.XXXXXX");
    if (!mkdtemp(top))
        abort();
    atexit(cleanup);
    snprintf(dir, sizeof(dir), "%s/s", top);
    snprintf(key_file, sizeof(key_file), "%s/station.key", top);
    if (kf_station_create(dir, key_file, "S00000001") != KF_OK ||
        kf_station_open(dir, key_file, &st) != KF_OK ||
        kf_station_set_last_key_id(st, "VE", 1) != KF_OK)
        abort();
    char p[128];
    snprintf(p, sizeof(p), "%s/certs", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/role", dir);
    good_role = slurp(p, &good_role_len);
    snprintf(p, sizeof(p), "%s/keys", dir);
    good_keys = slurp(p, &good_keys_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!st)
        setup();
    if (size < 1)
        return 0;
    unsigned which = data[0] % 4;
    data++;
    size--;
    char path[128];
    if (which == 0) {
        snprintf(path, sizeof(path), "%s/last/VE", dir);
        put(path, data, size);
        uint64_t last;
        (void)kf_station_last_key_id(st, "VE", &last);
        put(path, (const uint8_t *)"1\n", 2);
    } else if (which == 1) {
        snprintf(path, sizeof(path), "%s/certs/VE", dir);
        put(path, data, size);
        char id[KF_MFG_ROLE_ID_LEN + 1];
        uint8_t sp[32], ep[32];
        for (int t = KF_MFG_ROLE_AUTHORITY; t <= KF_MFG_ROLE_BRASS; t++)
            (void)kf_station_domain_role(st, "VE", (enum kf_mfg_role_type)t, id, sp, ep);
        unlink(path);
    } else {
        snprintf(path, sizeof(path), "%s/%s", dir, which == 2 ? "role" : "keys");
        put(path, data, size);
        kf_station *other = NULL;
        if (kf_station_open(dir, key_file, &other) == KF_OK)
            kf_station_close(other);
        if (which == 2)
            put(path, good_role, good_role_len);
        else
            put(path, good_keys, good_keys_len);
    }
    return 0;
}
