/*
 * Station state (include/keyfleet/station.h): create, open, close; the
 * station key file (wrong file, wrong mode, wrong length); role IDs; keys
 * files moved between stations; saving enrolment certificates (signed by the
 * domain's M, certifying this station, complete, authority never changing,
 * edited on disk); role lookup; the last key ID (durable, never back); file
 * modes; opening keys sealed to the station; the durable file helpers.
 */
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "keyfleet/crypto.h"
#include "keyfleet/error.h"
#include "keyfleet/mfg.h"
#include "keyfleet/secmem.h"
#include "keyfleet/station.h"

#include "station_fixture.h"

struct fixture {
    char root[64];
    char dir[128];
    char key_file[128];
    size_t secmem_before;
};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->secmem_before = kf_secmem_live();
    strcpy(f->root, "/tmp/kf-station-XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    snprintf(f->dir, sizeof(f->dir), "%s/steel", f->root);
    snprintf(f->key_file, sizeof(f->key_file), "%s/steel.key", f->root);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    nftw(f->root, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    size_t live = kf_secmem_live(), before = f->secmem_before;
    free(f);
    return live == before ? 0 : -1; /* close released the private keys */
}

static mode_t mode_of(const char *path)
{
    struct stat sb;
    assert_int_equal(lstat(path, &sb), 0);
    return sb.st_mode & 07777;
}

static kf_station *make_station(const struct fixture *f, const char *role)
{
    kf_station *st = NULL;
    assert_int_equal(kf_station_create(f->dir, f->key_file, role), KF_OK);
    assert_int_equal(kf_station_open(f->dir, f->key_file, &st), KF_OK);
    return st;
}

static void write_bytes(const char *path, const uint8_t *p, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* ---- a fake domain (station_fixture.h): what a station is given ---- */
/* What keyfleetd answers at enrolment: the station's certificate, then M, O, B.
 * me_id/me_sign/me_enc say whom the first certificate certifies. */
static void enrol_answer(const struct domain *d, const char *me_id, const uint8_t me_sign[32],
                         const uint8_t me_enc[32], kf_buf *out)
{
    add_cert(out, d->name, me_id, KF_MFG_ROLE_STEEL, me_sign, me_enc, "M00000001", d->m_priv);
    add_cert(out, d->name, "M00000001", KF_MFG_ROLE_AUTHORITY, d->m_pub, NULL, "M00000001",
             d->m_priv);
    add_cert(out, d->name, "O00000001", KF_MFG_ROLE_OAK, d->o_pub, NULL, "M00000001", d->m_priv);
    add_cert(out, d->name, "B00000001", KF_MFG_ROLE_BRASS, d->b_pub, d->b_enc_pub, "M00000001",
             d->m_priv);
}

static void enrol_good(kf_station *st, const struct domain *d, kf_buf *out)
{
    uint8_t sp[32], ep[32];
    kf_station_public(st, sp, ep);
    enrol_answer(d, kf_station_role_id(st), sp, ep, out);
}

/* ---- create / open / close ---- */
static void test_create_open(void **state)
{
    struct fixture *f = *state;
    kf_station *st = make_station(f, "S00000001");
    assert_string_equal(kf_station_role_id(st), "S00000001");
    assert_int_equal(mode_of(f->dir), 0700);
    assert_int_equal(mode_of(f->key_file), 0600);
    char p[256];
    const char *files[] = {"role", "keys"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s/%s", f->dir, files[i]);
        assert_int_equal(mode_of(p), 0600);
    }
    const char *dirs[] = {"certs", "last"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s/%s", f->dir, dirs[i]);
        assert_int_equal(mode_of(p), 0700);
    }
    uint8_t sp[32], ep[32], sp2[32], ep2[32];
    kf_station_public(st, sp, ep);
    kf_station_close(st);
    /* Reopened: the same keys. */
    assert_int_equal(kf_station_open(f->dir, f->key_file, &st), KF_OK);
    kf_station_public(st, sp2, ep2);
    assert_memory_equal(sp, sp2, 32);
    assert_memory_equal(ep, ep2, 32);
    assert_memory_not_equal(sp, ep, 32);

    /* Its signature verifies under its public key, and only there. */
    struct kf_mfg_record r = {0}, back;
    r.type = KF_MFG_REC_INSTALL_FAILED;
    r.fields = KF_MFG_F_STATUS | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID | KF_MFG_F_KEY_ID |
               KF_MFG_F_REASON | KF_MFG_F_EVENT_TIME;
    r.status = KF_MFG_BAD;
    strcpy(r.domain, "VE");
    strcpy(r.steel_id, "S00000001");
    r.key_id = 7;
    r.reason = KF_ERR_MFG_TOKENS;
    r.event_time = 1767225600;
    kf_buf out;
    assert_int_equal(kf_buf_alloc(&out, 256, 65536, 0), KF_OK);
    assert_int_equal(kf_station_sign(st, &r, &out), KF_OK);
    assert_int_equal(kf_mfg_record_open(out.data, out.len, sp, KF_MFG_REC_INSTALL_FAILED, &back),
                     KF_OK);
    assert_int_equal(back.key_id, 7);
    assert_int_equal(back.reason, KF_ERR_MFG_TOKENS);
    assert_int_not_equal(kf_mfg_record_open(out.data, out.len, ep, 0, &back), KF_OK);
    kf_buf_free(&out);
    kf_station_close(st);
    kf_station_close(NULL);
}

static void test_create_twice_refused(void **state)
{
    struct fixture *f = *state;
    kf_station *st = make_station(f, "S00000001");
    kf_station_close(st);
    assert_int_equal(kf_station_create(f->dir, f->key_file, "S00000002"), KF_ERR_EXISTS);
    assert_int_equal(kf_station_open(f->dir, f->key_file, &st), KF_OK);
    assert_string_equal(kf_station_role_id(st), "S00000001");
    kf_station_close(st);
}

static void test_default_key_file(void **state)
{
    struct fixture *f = *state;
    kf_station *st = NULL;
    assert_int_equal(kf_station_create(f->dir, NULL, "T00000003"), KF_OK);
    char p[256];
    snprintf(p, sizeof(p), "%s/station.key", f->dir);
    assert_int_equal(mode_of(p), 0600);
    assert_int_equal(kf_station_open(f->dir, NULL, &st), KF_OK);
    assert_string_equal(kf_station_role_id(st), "T00000003");
    kf_station_close(st);
}

static void test_open_missing(void **state)
{
    struct fixture *f = *state;
    kf_station *st = NULL;
    assert_int_equal(kf_station_open(f->dir, f->key_file, &st), KF_ERR_NOT_FOUND);
    assert_null(st);
}

static void test_wrong_key_file(void **state)
{
    struct fixture *f = *state;
    kf_station_close(make_station(f, "S00000001"));
    char other[160];
    snprintf(other, sizeof(other), "%s/other.key", f->root);
    uint8_t k[32];
    assert_int_equal(kf_crypto_random(k, sizeof(k)), KF_OK);
    write_bytes(other, k, sizeof(k), 0600);
    kf_station *st = NULL;
    /* The AES-KWP integrity check refuses the unwrap. */
    assert_int_equal(kf_station_open(f->dir, other, &st), KF_ERR_AUTH);
    assert_null(st);
    /* Wrong length. */
    write_bytes(other, k, 31, 0600);
    assert_int_equal(kf_station_open(f->dir, other, &st), KF_ERR_FORMAT);
    /* Readable by others: refused before use. */
    assert_int_equal(chmod(f->key_file, 0644), 0);
    assert_int_equal(kf_station_open(f->dir, f->key_file, &st), KF_ERR_PERM);
    /* A symlink to the key file is not followed. */
    assert_int_equal(chmod(f->key_file, 0600), 0);
    char link[160];
    snprintf(link, sizeof(link), "%s/link.key", f->root);
    assert_int_equal(symlink(f->key_file, link), 0);
    assert_int_equal(kf_station_open(f->dir, link, &st), KF_ERR_PERM);
    /* Missing. */
    snprintf(other, sizeof(other), "%s/none.key", f->root);
    assert_int_equal(kf_station_open(f->dir, other, &st), KF_ERR_NOT_FOUND);
    assert_int_equal(kf_station_open(f->dir, f->key_file, &st), KF_OK);
    kf_station_close(st);
}

static void test_role_id_invalid(void **state)
{
    struct fixture *f = *state;
    const char *bad[] = {"",          "S",         "S0000001",  "S000000001",
                         "X00000001", "s00000001", "S0000000A", "O00000001",
                         "B00000001", "M00000001", "S00000000"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kf_station_create(f->dir, f->key_file, bad[i]), KF_ERR_MFG_PARAM);
    /* Nothing was made. */
    assert_int_not_equal(access(f->key_file, F_OK), 0);
    assert_int_not_equal(access(f->dir, F_OK), 0);
    /* A role file edited into something else is refused on open. */
    kf_station_close(make_station(f, "S00000001"));
    char p[256];
    snprintf(p, sizeof(p), "%s/role", f->dir);
    write_bytes(p, (const uint8_t *)"O00000001\n", 10, 0600);
    kf_station *st = NULL;
    assert_int_equal(kf_station_open(f->dir, f->key_file, &st), KF_ERR_FORMAT);
}

/* A keys file copied to another station's directory does not open there,
 * even under the same key file: the role ID is inside the wrap. */
static void test_keys_moved(void **state)
{
    struct fixture *f = *state;
    kf_station_close(make_station(f, "S00000001"));
    char dir2[160], src[256], dst[256];
    snprintf(dir2, sizeof(dir2), "%s/steel2", f->root);
    assert_int_equal(kf_station_create(dir2, f->key_file, "S00000002"), KF_OK);
    snprintf(src, sizeof(src), "%s/keys", f->dir);
    snprintf(dst, sizeof(dst), "%s/keys", dir2);
    assert_int_equal(rename(src, dst), 0);
    kf_station *st = NULL;
    assert_int_equal(kf_station_open(dir2, f->key_file, &st), KF_ERR_AUTH);
    /* A flipped byte in the wrap. */
    uint8_t mem[200];
    FILE *fp = fopen(dst, "rb");
    size_t n = fread(mem, 1, sizeof(mem), fp);
    fclose(fp);
    assert_int_equal(n, 96);
    mem[50] ^= 1;
    snprintf(dst, sizeof(dst), "%s/keys", f->dir);
    write_bytes(dst, mem, n, 0600);
    assert_int_equal(kf_station_open(f->dir, f->key_file, &st), KF_ERR_AUTH);
}

/* ---- certificates ---- */
static void test_save_certs_and_lookup(void **state)
{
    struct fixture *f = *state;
    kf_station *st = make_station(f, "S00000001");
    struct domain d;
    domain_init(&d, "VE");
    kf_buf rec;
    assert_int_equal(kf_buf_alloc(&rec, 1024, 65536, 0), KF_OK);
    enrol_good(st, &d, &rec);
    assert_int_equal(kf_station_domain_role(st, "VE", KF_MFG_ROLE_OAK, NULL, NULL, NULL),
                     KF_ERR_MFG_ROLE);
    assert_int_equal(kf_station_save_certs(st, "VE", rec.data, rec.len), KF_OK);
    char p[256];
    snprintf(p, sizeof(p), "%s/certs/VE", f->dir);
    assert_int_equal(mode_of(p), 0600);

    char id[KF_MFG_ROLE_ID_LEN + 1];
    uint8_t sp[32], ep[32];
    assert_int_equal(kf_station_domain_role(st, "VE", KF_MFG_ROLE_OAK, id, sp, ep), KF_OK);
    assert_string_equal(id, "O00000001");
    assert_memory_equal(sp, d.o_pub, 32);
    uint8_t zero[32] = {0};
    assert_memory_equal(ep, zero, 32);
    assert_int_equal(kf_station_domain_role(st, "VE", KF_MFG_ROLE_BRASS, id, sp, ep), KF_OK);
    assert_string_equal(id, "B00000001");
    assert_memory_equal(sp, d.b_pub, 32);
    assert_memory_equal(ep, d.b_enc_pub, 32);
    assert_int_equal(kf_station_domain_role(st, "VE", KF_MFG_ROLE_AUTHORITY, id, sp, NULL), KF_OK);
    assert_string_equal(id, "M00000001");
    assert_memory_equal(sp, d.m_pub, 32);
    assert_int_equal(kf_station_domain_role(st, "VE", KF_MFG_ROLE_TIN, id, sp, NULL),
                     KF_ERR_MFG_ROLE);
    assert_int_equal(kf_station_domain_role(st, "USPS", KF_MFG_ROLE_OAK, id, sp, NULL),
                     KF_ERR_MFG_ROLE);
    assert_int_equal(kf_station_domain_role(st, "../VE", KF_MFG_ROLE_OAK, id, sp, NULL),
                     KF_ERR_NAME);

    /* Saving the same domain's certificates again (same M) is fine. */
    assert_int_equal(kf_station_save_certs(st, "VE", rec.data, rec.len), KF_OK);
    /* Another authority for a known domain is refused, and the old set stays. */
    struct domain d2;
    domain_init(&d2, "VE");
    kf_buf rec2;
    assert_int_equal(kf_buf_alloc(&rec2, 1024, 65536, 0), KF_OK);
    enrol_good(st, &d2, &rec2);
    assert_int_equal(kf_station_save_certs(st, "VE", rec2.data, rec2.len), KF_ERR_BAD_SIGNATURE);
    assert_int_equal(kf_station_domain_role(st, "VE", KF_MFG_ROLE_OAK, id, sp, NULL), KF_OK);
    assert_memory_equal(sp, d.o_pub, 32);

    /* A saved file edited on disk is no longer trusted. */
    FILE *fp = fopen(p, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, (long)rec.len - 20, SEEK_SET), 0);
    int ch = fgetc(fp);
    assert_int_equal(fseek(fp, (long)rec.len - 20, SEEK_SET), 0);
    fputc(ch ^ 0x01, fp);
    fclose(fp);
    assert_int_not_equal(kf_station_domain_role(st, "VE", KF_MFG_ROLE_BRASS, id, sp, NULL), KF_OK);
    kf_buf_free(&rec);
    kf_buf_free(&rec2);
    kf_station_close(st);
}

static void assert_refused(kf_station *st, const struct fixture *f, const char *domain, kf_buf *rec,
                           int want)
{
    assert_int_equal(kf_station_save_certs(st, domain, rec->data, rec->len), want);
    char p[256];
    snprintf(p, sizeof(p), "%s/certs/%s", f->dir, domain);
    assert_int_not_equal(access(p, F_OK), 0); /* nothing saved */
    kf_buf_reset(rec);
}

static void test_save_certs_refused(void **state)
{
    struct fixture *f = *state;
    kf_station *st = make_station(f, "S00000001");
    struct domain d, evil;
    domain_init(&d, "VE");
    domain_init(&evil, "VE");
    uint8_t sp[32], ep[32];
    kf_station_public(st, sp, ep);
    kf_buf rec;
    assert_int_equal(kf_buf_alloc(&rec, 1024, 65536, 0), KF_OK);

    /* The station's certificate signed by someone other than the domain's M. */
    add_cert(&rec, "VE", "S00000001", KF_MFG_ROLE_STEEL, sp, ep, "M00000001", evil.m_priv);
    add_cert(&rec, "VE", "M00000001", KF_MFG_ROLE_AUTHORITY, d.m_pub, NULL, "M00000001", d.m_priv);
    add_cert(&rec, "VE", "O00000001", KF_MFG_ROLE_OAK, d.o_pub, NULL, "M00000001", d.m_priv);
    add_cert(&rec, "VE", "B00000001", KF_MFG_ROLE_BRASS, d.b_pub, d.b_enc_pub, "M00000001",
             d.m_priv);
    assert_refused(st, f, "VE", &rec, KF_ERR_BAD_SIGNATURE);
    /* Oak's certificate not signed by M. */
    add_cert(&rec, "VE", "S00000001", KF_MFG_ROLE_STEEL, sp, ep, "M00000001", d.m_priv);
    add_cert(&rec, "VE", "M00000001", KF_MFG_ROLE_AUTHORITY, d.m_pub, NULL, "M00000001", d.m_priv);
    add_cert(&rec, "VE", "O00000001", KF_MFG_ROLE_OAK, d.o_pub, NULL, "M00000001", d.o_priv);
    add_cert(&rec, "VE", "B00000001", KF_MFG_ROLE_BRASS, d.b_pub, d.b_enc_pub, "M00000001",
             d.m_priv);
    assert_refused(st, f, "VE", &rec, KF_ERR_BAD_SIGNATURE);
    /* M's certificate not self-signed. */
    add_cert(&rec, "VE", "S00000001", KF_MFG_ROLE_STEEL, sp, ep, "M00000001", d.m_priv);
    add_cert(&rec, "VE", "M00000001", KF_MFG_ROLE_AUTHORITY, d.m_pub, NULL, "M00000001",
             evil.m_priv);
    add_cert(&rec, "VE", "O00000001", KF_MFG_ROLE_OAK, d.o_pub, NULL, "M00000001", d.m_priv);
    add_cert(&rec, "VE", "B00000001", KF_MFG_ROLE_BRASS, d.b_pub, d.b_enc_pub, "M00000001",
             d.m_priv);
    assert_refused(st, f, "VE", &rec, KF_ERR_BAD_SIGNATURE);
    /* The first certificate certifies another station. */
    enrol_answer(&d, "S00000002", sp, ep, &rec);
    assert_refused(st, f, "VE", &rec, KF_ERR_MFG_ROLE);
    /* ... or this role ID with other keys. */
    enrol_answer(&d, "S00000001", d.o_pub, ep, &rec);
    assert_refused(st, f, "VE", &rec, KF_ERR_MFG_ROLE);
    enrol_answer(&d, "S00000001", sp, d.b_enc_pub, &rec);
    assert_refused(st, f, "VE", &rec, KF_ERR_MFG_ROLE);
    /* No Oak. */
    add_cert(&rec, "VE", "S00000001", KF_MFG_ROLE_STEEL, sp, ep, "M00000001", d.m_priv);
    add_cert(&rec, "VE", "M00000001", KF_MFG_ROLE_AUTHORITY, d.m_pub, NULL, "M00000001", d.m_priv);
    add_cert(&rec, "VE", "B00000001", KF_MFG_ROLE_BRASS, d.b_pub, d.b_enc_pub, "M00000001",
             d.m_priv);
    assert_refused(st, f, "VE", &rec, KF_ERR_MFG_ROLE);
    /* No authority at all. */
    add_cert(&rec, "VE", "S00000001", KF_MFG_ROLE_STEEL, sp, ep, "M00000001", d.m_priv);
    assert_refused(st, f, "VE", &rec, KF_ERR_MFG_ROLE);
    /* Certificates of another domain. */
    enrol_good(st, &d, &rec);
    assert_int_not_equal(kf_station_save_certs(st, "USPS", rec.data, rec.len), KF_OK);
    kf_buf_reset(&rec);
    /* Truncated, empty, bad name. */
    enrol_good(st, &d, &rec);
    assert_int_not_equal(kf_station_save_certs(st, "VE", rec.data, rec.len - 3), KF_OK);
    assert_int_equal(kf_station_save_certs(st, "VE", rec.data, 0), KF_ERR_LIMIT);
    assert_int_equal(kf_station_save_certs(st, "..", rec.data, rec.len), KF_ERR_NAME);
    assert_int_equal(kf_station_save_certs(st, "a/b", rec.data, rec.len), KF_ERR_NAME);
    kf_buf_reset(&rec);
    /* Finally the good set goes in. */
    enrol_good(st, &d, &rec);
    assert_int_equal(kf_station_save_certs(st, "VE", rec.data, rec.len), KF_OK);
    kf_buf_free(&rec);
    kf_station_close(st);
}

/* ---- last key ID ---- */
static void test_last_key_id(void **state)
{
    struct fixture *f = *state;
    kf_station *st = make_station(f, "S00000001");
    uint64_t last = 99;
    assert_int_equal(kf_station_last_key_id(st, "VE", &last), KF_OK);
    assert_int_equal(last, 0);
    assert_int_equal(kf_station_set_last_key_id(st, "VE", 0), KF_ERR_MFG_KEY_ID);
    assert_int_equal(kf_station_set_last_key_id(st, "VE", 5), KF_OK);
    assert_int_equal(kf_station_set_last_key_id(st, "VE", 5), KF_ERR_MFG_KEY_ID);
    assert_int_equal(kf_station_set_last_key_id(st, "VE", 4), KF_ERR_MFG_KEY_ID);
    assert_int_equal(kf_station_last_key_id(st, "VE", &last), KF_OK);
    assert_int_equal(last, 5);
    /* Domains are independent. */
    assert_int_equal(kf_station_set_last_key_id(st, "USPS", 2), KF_OK);
    assert_int_equal(kf_station_last_key_id(st, "USPS", &last), KF_OK);
    assert_int_equal(last, 2);
    char p[256];
    snprintf(p, sizeof(p), "%s/last/VE", f->dir);
    assert_int_equal(mode_of(p), 0600);
    kf_station_close(st);
    /* Durable across a reopen, and still never back. */
    assert_int_equal(kf_station_open(f->dir, f->key_file, &st), KF_OK);
    assert_int_equal(kf_station_last_key_id(st, "VE", &last), KF_OK);
    assert_int_equal(last, 5);
    assert_int_equal(kf_station_set_last_key_id(st, "VE", 3), KF_ERR_MFG_KEY_ID);
    assert_int_equal(kf_station_set_last_key_id(st, "VE", UINT64_MAX), KF_OK);
    assert_int_equal(kf_station_last_key_id(st, "VE", &last), KF_OK);
    assert_int_equal(last, UINT64_MAX);
    assert_int_equal(kf_station_set_last_key_id(st, "VE", UINT64_MAX), KF_ERR_MFG_KEY_ID);
    assert_int_equal(kf_station_set_last_key_id(st, "..", 9), KF_ERR_NAME);
    /* A damaged file is refused, not read as 0. */
    write_bytes(p, (const uint8_t *)"12x\n", 4, 0600);
    assert_int_equal(kf_station_last_key_id(st, "VE", &last), KF_ERR_FORMAT);
    assert_int_equal(kf_station_set_last_key_id(st, "VE", 13), KF_ERR_FORMAT);
    write_bytes(p, (const uint8_t *)"18446744073709551616\n", 21, 0600); /* 2^64 */
    assert_int_equal(kf_station_last_key_id(st, "VE", &last), KF_ERR_FORMAT);
    write_bytes(p, (const uint8_t *)"", 0, 0600);
    assert_int_equal(kf_station_last_key_id(st, "VE", &last), KF_ERR_FORMAT);
    kf_station_close(st);
}

/* ---- keys sealed to the station ---- */
static void test_open_key(void **state)
{
    struct fixture *f = *state;
    kf_station *st = make_station(f, "S00000001");
    uint8_t sp[32], ep[32], k[32], back[32], sealed[KF_MFG_SEALED_LEN];
    kf_station_public(st, sp, ep);
    assert_int_equal(kf_crypto_random(k, sizeof(k)), KF_OK);
    assert_int_equal(kf_mfg_seal_key(ep, "VE", 42, "S00000001", k, sealed), KF_OK);
    assert_int_equal(kf_station_open_key(st, "VE", 42, "S00000001", sealed, back), KF_OK);
    assert_memory_equal(k, back, 32);
    assert_int_equal(kf_station_open_key(st, "VE", 42, NULL, sealed, back), KF_OK);
    assert_memory_equal(k, back, 32);
    /* Another key ID, domain or recipient: refused. */
    assert_int_equal(kf_station_open_key(st, "VE", 43, "S00000001", sealed, back), KF_ERR_AUTH);
    assert_int_equal(kf_station_open_key(st, "USPS", 42, "S00000001", sealed, back), KF_ERR_AUTH);
    assert_int_equal(kf_station_open_key(st, "VE", 42, "S00000002", sealed, back), KF_ERR_AUTH);
    /* Sealed to another station's key. */
    assert_int_equal(kf_mfg_seal_key(sp, "VE", 42, "S00000001", k, sealed), KF_OK);
    assert_int_not_equal(kf_station_open_key(st, "VE", 42, "S00000001", sealed, back), KF_OK);
    kf_station_close(st);
}

/* ---- file helpers ---- */
static void test_files(void **state)
{
    struct fixture *f = *state;
    char p[160];
    snprintf(p, sizeof(p), "%s/dev.state", f->root);
    const uint8_t data[] = "hello state";
    assert_int_equal(kf_station_write_file(p, data, sizeof(data)), KF_OK);
    assert_int_equal(mode_of(p), 0600);
    kf_buf b;
    assert_int_equal(kf_station_read_file(p, 64, 0, &b), KF_OK);
    assert_int_equal(b.len, sizeof(data));
    assert_memory_equal(b.data, data, sizeof(data));
    kf_buf_free(&b);
    assert_int_equal(kf_station_read_file(p, 4, 0, &b), KF_ERR_LIMIT);
    /* Replaced whole. */
    assert_int_equal(kf_station_write_file(p, data, 3), KF_OK);
    assert_int_equal(kf_station_read_file(p, 64, KF_BUF_SECRET, &b), KF_OK);
    assert_int_equal(b.len, 3);
    kf_buf_free(&b);
    snprintf(p, sizeof(p), "%s/none", f->root);
    assert_int_equal(kf_station_read_file(p, 64, 0, &b), KF_ERR_NOT_FOUND);
    snprintf(p, sizeof(p), "%s/nodir/x", f->root);
    assert_int_not_equal(kf_station_write_file(p, data, 3), KF_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_twice_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_key_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_key_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_role_id_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_moved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_certs_and_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_certs_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_key_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
