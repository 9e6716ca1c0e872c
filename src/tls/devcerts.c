/*
 * Development certificates: a throwaway CA, a server certificate for
 * localhost, and three client certificates with an identity map, so that
 * `keyfleetd --dev` serves KMIP over TLS with no setup. The third, "device",
 * has only the device role (pair key requests and acknowledgements in domain
 * "default"): the device simulator and its tests connect with it
 * (docs/device-simulator.md). Never for production:
 * the CA key sits next to the certificates it signs.
 *
 * The set is made in a temporary sibling directory and renamed into place,
 * so a crash never leaves a half-made DIR that later starts would trust.
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

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "keyfleet/tls.h"

#define DEV_VALIDITY_SECONDS (10LL * 365 * 24 * 3600)
#define DEV_ORG "keyfleet dev"

struct issued {
    gnutls_x509_privkey_t key;
    gnutls_x509_crt_t crt;
};

struct subject {
    const char *cn;
    bool is_ca;
    const char *purpose; /* Extended Key Usage OID, NULL for the CA */
    bool localhost_san;
};

static void issued_free(struct issued *x)
{
    if (x->crt)
        gnutls_x509_crt_deinit(x->crt);
    if (x->key)
        gnutls_x509_privkey_deinit(x->key);
    memset(x, 0, sizeof(*x));
}

static int write_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[PATH_MAX];
    int len = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (len < 0 || (size_t)len >= sizeof(path))
        return KF_ERR_LIMIT;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        kf_error("dev certificates: cannot create %s: %s", path, strerror(errno));
        return KF_ERR_IO;
    }
    kf_buf out;
    kf_buf_reader(&out, p, n);
    while (kf_buf_remaining(&out)) {
        ssize_t w = write(fd, kf_buf_read_ptr(&out), kf_buf_remaining(&out));
        if (w <= 0) {
            close(fd);
            return KF_ERR_IO;
        }
        KF_GUARD(kf_buf_skip(&out, (size_t)w));
    }
    int rc = fsync(fd) == 0 ? KF_OK : KF_ERR_IO;
    close(fd);
    return rc;
}

static int write_cert(const char *dir, const char *name, gnutls_x509_crt_t crt)
{
    gnutls_datum_t pem = {0};
    KF_ENSURE(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &pem) == 0, KF_ERR_CRYPTO);
    int rc = write_file(dir, name, pem.data, pem.size);
    gnutls_free(pem.data);
    return rc;
}

static int write_key(const char *dir, const char *name, gnutls_x509_privkey_t key)
{
    gnutls_datum_t pem = {0};
    KF_ENSURE(gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN,
                                                &pem) == 0,
              KF_ERR_CRYPTO);
    int rc = write_file(dir, name, pem.data, pem.size);
    kf_wipe(pem.data, pem.size);
    gnutls_free(pem.data);
    return rc;
}

static int set_names_and_validity(gnutls_x509_crt_t crt, const struct subject *sub)
{
    uint8_t serial[16];
    time_t now = time(NULL);
    KF_ENSURE(gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial)) == 0, KF_ERR_RNG_SOURCE);
    serial[0] &= 0x7f; /* a positive INTEGER */
    serial[0] |= 0x01; /* and no leading zero byte */
    int rc = gnutls_x509_crt_set_version(crt, 3);
    rc |= gnutls_x509_crt_set_serial(crt, serial, sizeof(serial));
    rc |= gnutls_x509_crt_set_activation_time(crt, now - 3600);
    rc |= gnutls_x509_crt_set_expiration_time(crt, now + DEV_VALIDITY_SECONDS);
    rc |= gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, DEV_ORG,
                                        strlen(DEV_ORG));
    rc |= gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, sub->cn,
                                        strlen(sub->cn));
    return rc == 0 ? KF_OK : KF_ERR_CRYPTO;
}

static int set_extensions(gnutls_x509_crt_t crt, const struct subject *sub)
{
    static const uint8_t ipv4_loopback[4] = {127, 0, 0, 1};
    static const uint8_t ipv6_loopback[16] = {[15] = 1};
    int rc = gnutls_x509_crt_set_basic_constraints(crt, sub->is_ca, sub->is_ca ? 0 : -1);
    rc |= gnutls_x509_crt_set_key_usage(crt, sub->is_ca
                                                 ? GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN
                                                 : GNUTLS_KEY_DIGITAL_SIGNATURE);
    if (sub->purpose)
        rc |= gnutls_x509_crt_set_key_purpose_oid(crt, sub->purpose, 1);
    if (sub->localhost_san) {
        rc |= gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "localhost", 9,
                                                   GNUTLS_FSAN_APPEND);
        rc |= gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ipv4_loopback, 4,
                                                   GNUTLS_FSAN_APPEND);
        rc |= gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ipv6_loopback, 16,
                                                   GNUTLS_FSAN_APPEND);
    }
    uint8_t id[64];
    size_t idlen = sizeof(id);
    rc |= gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA1, id, &idlen);
    rc |= gnutls_x509_crt_set_subject_key_id(crt, id, idlen);
    return rc == 0 ? KF_OK : KF_ERR_CRYPTO;
}

/* A fresh P-256 key and a certificate for it, signed by issuer (NULL: self-signed). */
static int issue(const struct subject *sub, const struct issued *issuer, struct issued *out)
{
    memset(out, 0, sizeof(*out));
    if (gnutls_x509_privkey_init(&out->key) < 0 || gnutls_x509_crt_init(&out->crt) < 0 ||
        gnutls_x509_privkey_generate(out->key, GNUTLS_PK_ECDSA,
                                     GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) < 0 ||
        gnutls_x509_crt_set_key(out->crt, out->key) < 0)
        return KF_ERR_CRYPTO;
    KF_GUARD(set_names_and_validity(out->crt, sub));
    KF_GUARD(set_extensions(out->crt, sub));
    if (issuer) {
        uint8_t id[64];
        size_t idlen = sizeof(id);
        KF_ENSURE(gnutls_x509_crt_get_subject_key_id(issuer->crt, id, &idlen, NULL) == 0 &&
                      gnutls_x509_crt_set_authority_key_id(out->crt, id, idlen) == 0,
                  KF_ERR_CRYPTO);
    }
    const struct issued *signer = issuer ? issuer : out;
    KF_ENSURE(gnutls_x509_crt_sign2(out->crt, signer->crt, signer->key, GNUTLS_DIG_SHA256, 0) == 0,
              KF_ERR_CRYPTO);
    return KF_OK;
}

static int fingerprint_hex(gnutls_x509_crt_t crt, char out[65])
{
    static const char digits[] = "0123456789abcdef";
    uint8_t fp[32];
    size_t n = sizeof(fp);
    KF_ENSURE(gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, fp, &n) == 0 && n == 32,
              KF_ERR_CRYPTO);
    for (size_t i = 0; i < 32; i++) {
        out[2 * i] = digits[fp[i] >> 4];
        out[2 * i + 1] = digits[fp[i] & 15];
    }
    out[64] = 0;
    return KF_OK;
}

/* The admin is matched by fingerprint, the user and the device by subject: both forms. */
static int write_identities(const char *dir, gnutls_x509_crt_t admin)
{
    char fp[65], text[1024];
    KF_GUARD(fingerprint_hex(admin, fp));
    int n = snprintf(text, sizeof(text),
                     "# keyfleet development identity map (generated; see docs/architecture.md)\n"
                     "# admin-cert.pem: every role in every domain\n"
                     "fingerprint=SHA256:%s roles=admin,manage,use,export,steel,registrar,verifier "
                     "domains=*\n"
                     "# user-cert.pem: use keys of domain 'default' only\n"
                     "subject-CN=user subject-O=\"" DEV_ORG "\" roles=use domains=default "
                     "default=default\n"
                     "# device-cert.pem: pair key requests and acknowledgements in 'default'\n"
                     "subject-CN=device subject-O=\"" DEV_ORG "\" roles=device domains=default "
                     "default=default\n",
                     fp);
    if (n < 0 || (size_t)n >= sizeof(text))
        return KF_ERR_INTERNAL;
    return write_file(dir, "identities", text, (size_t)n);
}

static int make_all(const char *dir)
{
    static const struct subject ca_sub = {"keyfleet dev CA", true, NULL, false};
    static const struct subject server_sub = {"localhost", false, GNUTLS_KP_TLS_WWW_SERVER, true};
    static const struct subject admin_sub = {"admin", false, GNUTLS_KP_TLS_WWW_CLIENT, false};
    static const struct subject user_sub = {"user", false, GNUTLS_KP_TLS_WWW_CLIENT, false};
    static const struct subject device_sub = {"device", false, GNUTLS_KP_TLS_WWW_CLIENT, false};
    struct issued ca = {0}, server = {0}, admin = {0}, user = {0}, device = {0};
    int rc = issue(&ca_sub, NULL, &ca);
    if (rc == KF_OK)
        rc = issue(&server_sub, &ca, &server);
    if (rc == KF_OK)
        rc = issue(&admin_sub, &ca, &admin);
    if (rc == KF_OK)
        rc = issue(&user_sub, &ca, &user);
    if (rc == KF_OK)
        rc = issue(&device_sub, &ca, &device);
    if (rc == KF_OK && ((rc = write_cert(dir, "ca-cert.pem", ca.crt)) < 0 ||
                        (rc = write_key(dir, "ca-key.pem", ca.key)) < 0 ||
                        (rc = write_cert(dir, "server-cert.pem", server.crt)) < 0 ||
                        (rc = write_key(dir, "server-key.pem", server.key)) < 0 ||
                        (rc = write_cert(dir, "admin-cert.pem", admin.crt)) < 0 ||
                        (rc = write_key(dir, "admin-key.pem", admin.key)) < 0 ||
                        (rc = write_cert(dir, "user-cert.pem", user.crt)) < 0 ||
                        (rc = write_key(dir, "user-key.pem", user.key)) < 0 ||
                        (rc = write_cert(dir, "device-cert.pem", device.crt)) < 0 ||
                        (rc = write_key(dir, "device-key.pem", device.key)) < 0))
        kf_error("dev certificates: cannot write into %s", dir);
    if (rc == KF_OK)
        rc = write_identities(dir, admin.crt);
    issued_free(&ca);
    issued_free(&server);
    issued_free(&admin);
    issued_free(&user);
    issued_free(&device);
    return rc;
}

static void remove_partial(const char *dir)
{
    static const char *const names[] = {"ca-cert.pem",    "ca-key.pem",     "server-cert.pem",
                                        "server-key.pem", "admin-cert.pem", "admin-key.pem",
                                        "user-cert.pem",  "user-key.pem",   "device-cert.pem",
                                        "device-key.pem", "identities"};
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        int len = snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (len > 0 && (size_t)len < sizeof(path))
            unlink(path);
    }
    rmdir(dir);
}

static void fill_paths(const char *dir, struct kf_tls_dev_files *f)
{
    /* The caller checked strlen(dir) < 3000, so every path fits; checked all the same. */
#define DEV_PATH(field, name)                                                                      \
    if (snprintf(f->field, sizeof(f->field), "%s/%s", dir, name) >= (int)sizeof(f->field))         \
        f->field[0] = 0
    DEV_PATH(ca_cert, "ca-cert.pem");
    DEV_PATH(server_cert, "server-cert.pem");
    DEV_PATH(server_key, "server-key.pem");
    DEV_PATH(admin_cert, "admin-cert.pem");
    DEV_PATH(admin_key, "admin-key.pem");
    DEV_PATH(user_cert, "user-cert.pem");
    DEV_PATH(user_key, "user-key.pem");
    DEV_PATH(identities, "identities");
#undef DEV_PATH
}

int kf_tls_dev_certs(const char *dir, struct kf_tls_dev_files *files)
{
    struct stat sb;
    KF_ENSURE(dir && files && strlen(dir) < 3000, KF_ERR_ARG);
    fill_paths(dir, files);
    if (stat(dir, &sb) == 0)
        return S_ISDIR(sb.st_mode) ? KF_OK : KF_ERR_IO;
    char tmp[PATH_MAX];
    int len = snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", dir);
    if (len < 0 || (size_t)len >= sizeof(tmp) || !mkdtemp(tmp)) { /* mode 0700 */
        kf_error("dev certificates: cannot create a directory next to %s: %s", dir,
                 strerror(errno));
        return KF_ERR_IO;
    }
    int rc = make_all(tmp);
    if (rc == KF_OK && rename(tmp, dir) != 0) {
        /* Another process made DIR first: use theirs. */
        rc = stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) ? KF_OK : KF_ERR_IO;
        remove_partial(tmp);
        return rc;
    }
    if (rc < 0)
        remove_partial(tmp);
    else
        kf_info("dev certificates created in %s", dir);
    return rc;
}
