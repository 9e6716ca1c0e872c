/*
 * What a station knows of each domain it is enrolled in: the role
 * certificates keyfleetd returned at enrolment (certs/<domain>), and, for a
 * Steel, the last key ID it accepted there (last/<domain>).
 *
 * The domain's authority M signs every certificate; M's own is self-signed.
 * The station takes M's key from its first enrolment in a domain (answered
 * over mutually authenticated TLS) and never lets it change afterwards. Every
 * lookup checks the saved certificates again, so a file edited in place is
 * refused rather than trusted.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "station/station_internal.h"

struct cert_set {
    size_t n;
    struct {
        const uint8_t *msg;
        size_t len;
        struct kf_mfg_record rec; /* checked under M */
    } c[STATION_RECORDS_MAX];
    size_t authority; /* index of M's certificate */
};

/*
 * Split records into envelopes, find M's certificate (self-signed), and check
 * every certificate under M for this domain. KF_ERR_MFG_ROLE if there is no M
 * or more than one; the checks' own errors (KF_ERR_BAD_SIGNATURE, framing)
 * otherwise.
 */
static int certs_check(const char *domain, const uint8_t *records, size_t len, struct cert_set *set)
{
    memset(set, 0, sizeof(*set));
    size_t at = 0;
    bool have_m = false;
    while (at < len) {
        KF_ENSURE(set->n < STATION_RECORDS_MAX, KF_ERR_LIMIT);
        struct kf_mfg_envelope env;
        size_t used = 0;
        KF_GUARD(kf_mfg_envelope_parse(records + at, len - at, &env, &used));
        KF_ENSURE(used > 0 && used <= len - at, KF_ERR_MFG_FRAMING);
        set->c[set->n].msg = records + at;
        set->c[set->n].len = used;
        /* Only to find M: nothing of this body is trusted before the check below. */
        struct kf_mfg_record peek;
        if (env.type == KF_MFG_REC_ROLE_CERT &&
            kf_mfg_record_decode(env.body, env.body_len, KF_MFG_REC_ROLE_CERT, &peek) == KF_OK &&
            peek.role_type == KF_MFG_ROLE_AUTHORITY) {
            KF_ENSURE(!have_m, KF_ERR_MFG_ROLE);
            have_m = true;
            set->authority = set->n;
            KF_GUARD(kf_mfg_cert_check(records + at, used, peek.sign_pub, domain,
                                       KF_MFG_ROLE_AUTHORITY, &set->c[set->n].rec));
        }
        set->n++;
        at += used;
    }
    KF_ENSURE(have_m, KF_ERR_MFG_ROLE);
    uint8_t m_pub[32]; /* a copy: each check below rewrites its record, M's included */
    memcpy(m_pub, set->c[set->authority].rec.sign_pub, sizeof(m_pub));
    for (size_t i = 0; i < set->n; i++)
        KF_GUARD(kf_mfg_cert_check(set->c[i].msg, set->c[i].len, m_pub, domain, 0, &set->c[i].rec));
    return KF_OK;
}

/* The one certificate of role type in set; KF_ERR_MFG_ROLE if none or several. */
static int certs_find(const struct cert_set *set, enum kf_mfg_role_type type, size_t *idx)
{
    size_t found = 0;
    for (size_t i = 0; i < set->n; i++)
        if (set->c[i].rec.role_type == (uint32_t)type) {
            *idx = i;
            found++;
        }
    KF_ENSURE(found == 1, KF_ERR_MFG_ROLE);
    return KF_OK;
}

static int certs_load(const kf_station *st, const char *domain, uint8_t *mem, size_t cap,
                      struct cert_set *set)
{
    KF_ENSURE(station_domain_ok(domain), KF_ERR_NAME);
    char path[PATH_MAX];
    size_t len = 0;
    KF_GUARD(station_path(path, sizeof(path), st->dir, STATION_CERTS_DIR, domain));
    int rc = station_read(path, false, mem, cap, &len);
    if (rc == KF_ERR_NOT_FOUND)
        return KF_ERR_MFG_ROLE; /* not enrolled in this domain */
    KF_GUARD(rc);
    return certs_check(domain, mem, len, set);
}

int kf_station_save_certs(kf_station *st, const char *domain, const uint8_t *records, size_t len)
{
    KF_ENSURE(st && domain && records, KF_ERR_ARG);
    KF_ENSURE(station_domain_ok(domain), KF_ERR_NAME);
    KF_ENSURE(len > 0 && len <= STATION_CERTS_MAX, KF_ERR_LIMIT);
    struct cert_set *set = calloc(2, sizeof(*set));
    uint8_t *old = malloc(STATION_CERTS_MAX);
    int rc = set && old ? KF_OK : KF_ERR_NOMEM;
    if (rc == KF_OK)
        rc = certs_check(domain, records, len, &set[0]);

    /* The first certificate is this station's: its role ID and both keys. */
    if (rc == KF_OK) {
        const struct kf_mfg_record *me = &set[0].c[0].rec;
        enum kf_mfg_role_type my_type;
        if (!kf_mfg_role_id_parse(st->role_id, &my_type) || me->role_type != (uint32_t)my_type ||
            strcmp(me->role_id, st->role_id) != 0 || !(me->fields & KF_MFG_F_ENC_PUB) ||
            memcmp(me->sign_pub, st->sign_pub, 32) != 0 ||
            memcmp(me->enc_pub, st->enc_pub, 32) != 0) {
            kf_error("station %s: the first certificate for %s does not certify this station",
                     st->role_id, domain);
            rc = KF_ERR_MFG_ROLE;
        }
    }
    size_t idx;
    if (rc == KF_OK)
        rc = certs_find(&set[0], KF_MFG_ROLE_OAK, &idx);
    if (rc == KF_OK)
        rc = certs_find(&set[0], KF_MFG_ROLE_BRASS, &idx);

    /* Once a domain's authority is known, it stays the one. */
    if (rc == KF_OK) {
        int lr = certs_load(st, domain, old, STATION_CERTS_MAX, &set[1]);
        if (lr == KF_OK) {
            const uint8_t *was = set[1].c[set[1].authority].rec.sign_pub;
            const uint8_t *now = set[0].c[set[0].authority].rec.sign_pub;
            if (memcmp(was, now, 32) != 0) {
                kf_error("station %s: the certificates for %s are signed by another authority"
                         " than the one saved before",
                         st->role_id, domain);
                rc = KF_ERR_BAD_SIGNATURE;
            }
        } else if (lr != KF_ERR_MFG_ROLE) {
            rc = lr; /* a saved file that no longer checks is not silently replaced */
        }
    }
    char path[PATH_MAX];
    if (rc == KF_OK)
        rc = station_path(path, sizeof(path), st->dir, STATION_CERTS_DIR, domain);
    if (rc == KF_OK)
        rc = kf_station_write_file(path, records, len);
    free(old);
    free(set);
    return rc;
}

int kf_station_domain_role(const kf_station *st, const char *domain, enum kf_mfg_role_type type,
                           char id[KF_MFG_ROLE_ID_LEN + 1], uint8_t sign_pub[32],
                           uint8_t enc_pub[32])
{
    KF_ENSURE(st && domain, KF_ERR_ARG);
    struct cert_set *set = calloc(1, sizeof(*set));
    uint8_t *mem = malloc(STATION_CERTS_MAX);
    int rc = set && mem ? KF_OK : KF_ERR_NOMEM;
    if (rc == KF_OK)
        rc = certs_load(st, domain, mem, STATION_CERTS_MAX, set);
    size_t idx = 0;
    if (rc == KF_OK)
        rc = certs_find(set, type, &idx);
    if (rc == KF_OK) {
        const struct kf_mfg_record *r = &set->c[idx].rec;
        if (id)
            memcpy(id, r->role_id, KF_MFG_ROLE_ID_LEN + 1);
        if (sign_pub)
            memcpy(sign_pub, r->sign_pub, 32);
        if (enc_pub) {
            if (r->fields & KF_MFG_F_ENC_PUB)
                memcpy(enc_pub, r->enc_pub, 32);
            else
                memset(enc_pub, 0, 32);
        }
    }
    free(mem);
    free(set);
    return rc;
}

/* ---- last key ID seen per domain ---- */

static int last_read(const kf_station *st, const char *domain, uint64_t *last)
{
    KF_ENSURE(station_domain_ok(domain), KF_ERR_NAME);
    char path[PATH_MAX];
    char mem[32];
    size_t len = 0;
    KF_GUARD(station_path(path, sizeof(path), st->dir, STATION_LAST_DIR, domain));
    int rc = station_read(path, false, (uint8_t *)mem, sizeof(mem) - 1, &len);
    if (rc == KF_ERR_NOT_FOUND) {
        *last = 0;
        return KF_OK;
    }
    KF_GUARD(rc);
    mem[len] = 0;
    if (len > 0 && mem[len - 1] == '\n')
        mem[--len] = 0;
    KF_ENSURE(len >= 1 && len <= 20, KF_ERR_FORMAT);
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        KF_ENSURE(mem[i] >= '0' && mem[i] <= '9', KF_ERR_FORMAT);
        unsigned d = (unsigned)(mem[i] - '0');
        KF_ENSURE(v <= (UINT64_MAX - d) / 10, KF_ERR_FORMAT);
        v = v * 10 + d;
    }
    *last = v;
    return KF_OK;
}

int kf_station_last_key_id(const kf_station *st, const char *domain, uint64_t *last)
{
    KF_ENSURE(st && domain && last, KF_ERR_ARG);
    return last_read(st, domain, last);
}

int kf_station_set_last_key_id(kf_station *st, const char *domain, uint64_t id)
{
    KF_ENSURE(st && domain, KF_ERR_ARG);
    KF_ENSURE(station_domain_ok(domain), KF_ERR_NAME);
    char dir[PATH_MAX], path[PATH_MAX];
    KF_GUARD(station_path(dir, sizeof(dir), st->dir, STATION_LAST_DIR, NULL));
    KF_GUARD(station_path(path, sizeof(path), st->dir, STATION_LAST_DIR, domain));
    /* Check and write under a lock: two processes on one station cannot
     * both accept the same key ID. */
    int lock = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lock < 0)
        return KF_ERR_IO;
    int rc = flock(lock, LOCK_EX) == 0 ? KF_OK : KF_ERR_IO;
    uint64_t last = 0;
    if (rc == KF_OK)
        rc = last_read(st, domain, &last);
    if (rc == KF_OK && id <= last)
        rc = KF_ERR_MFG_KEY_ID;
    if (rc == KF_OK) {
        char line[32];
        int n = snprintf(line, sizeof(line), "%" PRIu64 "\n", id);
        rc = n > 0 && (size_t)n < sizeof(line)
                 ? kf_station_write_file(path, (const uint8_t *)line, (size_t)n)
                 : KF_ERR_INTERNAL;
    }
    close(lock); /* releases the lock */
    return rc;
}
