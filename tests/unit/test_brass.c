/*
 * Brass, the verification role (src/brass, docs/manufacturing.md
 * "Installation" MI8-MI10, "Registration" MR2-MR4 and the earth transfer),
 * without a store. The certificates and Oak's records are made here from the
 * document's table (not by src/oak, so Brass is checked against the spec);
 * the device is the real libkeyfleet-device meter. Every
 * refusal has its case: signatures and certificates (another key, another
 * domain, a modified record), another Steel, another key ID, times out of
 * order, wrong test tokens (a Bad key, not a refusal), a wrong registration
 * MAC, a Transfer for another country or under the wrong authority.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "brass/brass.h"
#include "keyfleet/crypto.h"
#include "keyfleet/meter.h"
#include "keyfleet/mfg.h"
#include "keyfleet/secmem.h"

#define T0 1780000000
#define MSN "MSN-0001"

/* One domain's roles: M, O, B and two Steels, with their certificates. */
struct domain {
    char name[16], m_id[10], o_id[10], b_id[10];
    uint8_t m_priv[32], m_pub[32], o_priv[32], o_pub[32];
    uint8_t b_sign[32], b_pub[32], b_enc[32], b_enc_pub[32], b_archive[32];
    uint8_t s_sign[2][32], s_pub[2][32], s_enc[2][32], s_enc_pub[2][32];
    char s_id[2][10];
    uint8_t oak_cert[1024], b_cert[1024], s_cert[2][1024];
    size_t oak_cert_len, b_cert_len, s_cert_len[2];
    struct kf_brass brass;
};

/* A RoleCert as M signs it (docs/manufacturing.md: RoleId, RoleType, Domain,
 * SignPub, EncPub?, EventTime). */
static size_t certify(struct domain *d, const char *id, const uint8_t *sign_pub,
                      const uint8_t *enc_pub, uint8_t *out)
{
    struct kf_mfg_record c;
    enum kf_mfg_role_type t;
    memset(&c, 0, sizeof(c));
    assert_true(kf_mfg_role_id_parse(id, &t));
    c.type = KF_MFG_REC_ROLE_CERT;
    c.fields = KF_MFG_F_ROLE_ID | KF_MFG_F_ROLE_TYPE | KF_MFG_F_DOMAIN | KF_MFG_F_SIGN_PUB |
               KF_MFG_F_EVENT_TIME | (enc_pub ? KF_MFG_F_ENC_PUB : 0);
    snprintf(c.role_id, sizeof(c.role_id), "%s", id);
    c.role_type = (uint32_t)t;
    snprintf(c.domain, sizeof(c.domain), "%s", d->name);
    memcpy(c.sign_pub, sign_pub, 32);
    if (enc_pub)
        memcpy(c.enc_pub, enc_pub, 32);
    c.event_time = T0;
    kf_buf b;
    kf_buf_fixed(&b, out, 1024);
    assert_int_equal(kf_mfg_record_sign(&c, d->m_id, d->m_priv, &b), KF_OK);
    return b.len;
}

static void domain_make(struct domain *d, const char *name, unsigned n)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->name, sizeof(d->name), "%s", name);
    assert_int_equal(kf_mfg_role_id_format(KF_MFG_ROLE_AUTHORITY, n, d->m_id), KF_OK);
    assert_int_equal(kf_mfg_role_id_format(KF_MFG_ROLE_OAK, n, d->o_id), KF_OK);
    assert_int_equal(kf_mfg_role_id_format(KF_MFG_ROLE_BRASS, n, d->b_id), KF_OK);
    assert_int_equal(kf_crypto_random(d->m_priv, 32), KF_OK);
    assert_int_equal(kf_crypto_random(d->o_priv, 32), KF_OK);
    assert_int_equal(kf_crypto_random(d->b_sign, 32), KF_OK);
    assert_int_equal(kf_crypto_random(d->b_enc, 32), KF_OK);
    assert_int_equal(kf_crypto_random(d->b_archive, 32), KF_OK);
    assert_int_equal(kf_ed25519_public(d->m_priv, d->m_pub), KF_OK);
    assert_int_equal(kf_ed25519_public(d->o_priv, d->o_pub), KF_OK);
    assert_int_equal(kf_ed25519_public(d->b_sign, d->b_pub), KF_OK);
    assert_int_equal(kf_x25519_public(d->b_enc, d->b_enc_pub), KF_OK);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(kf_mfg_role_id_format(KF_MFG_ROLE_STEEL, 40 + (unsigned)i, d->s_id[i]),
                         KF_OK);
        assert_int_equal(kf_crypto_random(d->s_sign[i], 32), KF_OK);
        assert_int_equal(kf_crypto_random(d->s_enc[i], 32), KF_OK);
        assert_int_equal(kf_ed25519_public(d->s_sign[i], d->s_pub[i]), KF_OK);
        assert_int_equal(kf_x25519_public(d->s_enc[i], d->s_enc_pub[i]), KF_OK);
        d->s_cert_len[i] = certify(d, d->s_id[i], d->s_pub[i], d->s_enc_pub[i], d->s_cert[i]);
    }
    d->oak_cert_len = certify(d, d->o_id, d->o_pub, NULL, d->oak_cert);
    d->b_cert_len = certify(d, d->b_id, d->b_pub, d->b_enc_pub, d->b_cert);
    d->brass = (struct kf_brass){
        .domain = d->name,
        .id = d->b_id,
        .sign_priv = d->b_sign,
        .sign_pub = d->b_pub,
        .enc_priv = d->b_enc,
        .archive_key = d->b_archive,
        .authority_pub = d->m_pub,
    };
}

static struct kf_brass_cert oak_of(const struct domain *d)
{
    return (struct kf_brass_cert){d->oak_cert, d->oak_cert_len};
}

static struct kf_brass_cert steel_of(const struct domain *d, int i)
{
    return (struct kf_brass_cert){d->s_cert[i], d->s_cert_len[i]};
}

/* One key for Steel 0: MI3 and K (as the Steel opens it from MI4). */
struct key {
    uint64_t id;
    uint8_t mi3[1024];
    size_t mi3_len;
    uint8_t k[32];
    uint8_t tokens[8]; /* MI4's */
};

/* Oak's MI3 for Steel 0, and MI4's test tokens, around a fresh K. */
static void key_make(const struct domain *d, uint64_t id, struct key *key)
{
    struct kf_mfg_record a;
    memset(&a, 0, sizeof(a));
    key->id = id;
    assert_int_equal(kf_crypto_random(key->k, 32), KF_OK);
    assert_int_equal(kfd_test_tokens(key->k, key->tokens), KF_OK);
    a.type = KF_MFG_REC_ARCHIVE_NEW;
    a.fields = KF_MFG_F_STATUS | KF_MFG_F_ROLE_ID | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID |
               KF_MFG_F_KEY_ID | KF_MFG_F_SEALED_KEY | KF_MFG_F_EVENT_TIME;
    a.status = KF_MFG_NEW;
    snprintf(a.role_id, sizeof(a.role_id), "%s", d->o_id);
    snprintf(a.domain, sizeof(a.domain), "%s", d->name);
    snprintf(a.steel_id, sizeof(a.steel_id), "%s", d->s_id[0]);
    a.key_id = id;
    a.event_time = T0 + 10;
    assert_int_equal(kf_mfg_seal_key(d->b_enc_pub, d->name, id, d->b_id, key->k, a.sealed_key),
                     KF_OK);
    kf_buf mi3;
    kf_buf_fixed(&mi3, key->mi3, sizeof(key->mi3));
    assert_int_equal(kf_mfg_record_sign(&a, d->o_id, d->o_priv, &mi3), KF_OK);
    key->mi3_len = mi3.len;
}

/* MI7 (or InstallFailed when reason != 0) as Steel `signer` signs it, with sign_priv. */
static size_t report_make(const struct domain *d, const struct key *key, const char *signer,
                          const char *steel_id, const uint8_t *sign_priv, const uint8_t tokens[8],
                          int64_t when, int32_t reason, uint8_t *out)
{
    struct kf_mfg_record m;
    memset(&m, 0, sizeof(m));
    if (reason) {
        m.type = KF_MFG_REC_INSTALL_FAILED;
        m.fields = KF_MFG_F_STATUS | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID | KF_MFG_F_KEY_ID |
                   KF_MFG_F_REASON | KF_MFG_F_EVENT_TIME;
        m.status = KF_MFG_BAD;
        m.reason = reason;
    } else {
        m.type = KF_MFG_REC_INSTALLED;
        m.fields = KF_MFG_F_STATUS | KF_MFG_F_ROLE_ID | KF_MFG_F_DOMAIN | KF_MFG_F_STEEL_ID |
                   KF_MFG_F_KEY_ID | KF_MFG_F_MSN | KF_MFG_F_TEST_TOKENS | KF_MFG_F_EVENT_TIME;
        m.status = KF_MFG_INSTALLED;
        snprintf(m.role_id, sizeof(m.role_id), "%s", d->o_id);
        snprintf(m.msn, sizeof(m.msn), "%s", MSN);
        memcpy(m.test_tokens, tokens, 8);
    }
    snprintf(m.domain, sizeof(m.domain), "%s", d->name);
    snprintf(m.steel_id, sizeof(m.steel_id), "%s", steel_id);
    m.key_id = key->id;
    m.event_time = when;
    kf_buf b;
    kf_buf_fixed(&b, out, 1024);
    assert_int_equal(kf_mfg_record_sign(&m, signer, sign_priv, &b), KF_OK);
    return b.len;
}

static size_t installed_by_0(const struct domain *d, const struct key *key, uint8_t *out)
{
    return report_make(d, key, d->s_id[0], d->s_id[0], d->s_sign[0], key->tokens, T0 + 20, 0, out);
}

struct outs {
    uint8_t b9[1024], b10[1024];
    kf_buf mi9, mi10;
    struct kf_brass_install res;
};

static void outs_init(struct outs *o)
{
    kf_buf_fixed(&o->mi9, o->b9, sizeof(o->b9));
    kf_buf_fixed(&o->mi10, o->b10, sizeof(o->b10));
}

static int check(const struct domain *d, const struct key *key, const uint8_t *mi7, size_t len,
                 struct kf_brass_cert steel, struct outs *o)
{
    outs_init(o);
    return kf_brass_install_check(&d->brass, key->mi3, key->mi3_len, oak_of(d), mi7, len, steel,
                                  T0 + 30, &o->mi9, &o->mi10, &o->res);
}

/* ---- Installation ---- */

static void test_installed(void **state)
{
    (void)state;
    struct domain d;
    struct key key;
    struct outs o;
    uint8_t mi7[1024];
    domain_make(&d, "VENDOR", 1);
    key_make(&d, 3, &key);
    size_t len = installed_by_0(&d, &key, mi7);
    assert_int_equal(check(&d, &key, mi7, len, steel_of(&d, 0), &o), KF_OK);
    assert_int_equal(o.res.status, KF_MFG_INSTALLED);
    assert_int_equal(o.res.reason, 0);
    assert_string_equal(o.res.msn, MSN);
    assert_string_equal(o.res.signer, d.s_id[0]);
    assert_int_equal(o.res.t_install, T0 + 20);

    /* MI9: signed by Brass, K under its archive key; MI10: Installed. */
    struct kf_mfg_record r9, r10;
    assert_int_equal(
        kf_mfg_record_open(o.mi9.data, o.mi9.len, d.b_pub, KF_MFG_REC_ARCHIVE_INSTALLED, &r9),
        KF_OK);
    assert_int_equal(r9.status, KF_MFG_INSTALLED);
    assert_string_equal(r9.role_id, d.o_id);
    assert_string_equal(r9.steel_id, d.s_id[0]);
    assert_string_equal(r9.msn, MSN);
    assert_int_equal(r9.key_id, 3);
    assert_int_equal(r9.event_time, T0 + 30);
    assert_int_equal(
        kf_mfg_record_open(o.mi10.data, o.mi10.len, d.b_pub, KF_MFG_REC_CONFIRM_INSTALLED, &r10),
        KF_OK);
    assert_int_equal(r10.status, KF_MFG_INSTALLED);
    assert_false(r10.fields & KF_MFG_F_REASON);
    assert_string_equal(r10.msn, MSN);
    uint8_t k[32];
    assert_int_equal(kf_brass_open(&d.brass, o.mi9.data, o.mi9.len, NULL, NULL, k), KF_OK);
    assert_memory_equal(k, key.k, 32);
    /* The archive copy is not the MI3 copy: only the archive key opens it. */
    assert_int_equal(kf_mfg_archive_open(d.b_archive, d.name, 3, d.b_id, r9.archive_key, k), KF_OK);
    assert_memory_equal(k, key.k, 32);
    /* MI3 opens too, with Oak's key given; without it, it is refused. */
    assert_int_equal(kf_brass_open(&d.brass, key.mi3, key.mi3_len, d.o_pub, NULL, k), KF_OK);
    assert_memory_equal(k, key.k, 32);
    assert_int_equal(kf_brass_open(&d.brass, key.mi3, key.mi3_len, NULL, NULL, k),
                     KF_ERR_MFG_ARCHIVE);
    assert_true(kf_ct_is_zero(k, 32)); /* wiped on failure */
}

static void test_wrong_tokens_bad(void **state)
{
    (void)state;
    struct domain d;
    struct key key;
    struct outs o;
    uint8_t mi7[1024], tokens[8];
    domain_make(&d, "VENDOR", 1);
    key_make(&d, 3, &key);
    memcpy(tokens, key.tokens, 8);
    tokens[7] ^= 1; /* the device holds some other key */
    size_t len = report_make(&d, &key, d.s_id[0], d.s_id[0], d.s_sign[0], tokens, T0 + 20, 0, mi7);
    assert_int_equal(check(&d, &key, mi7, len, steel_of(&d, 0), &o), KF_OK);
    assert_int_equal(o.res.status, KF_MFG_BAD);
    assert_int_equal(o.res.reason, KF_ERR_MFG_TOKENS);
    assert_int_equal(o.mi9.len, 0); /* nothing to archive */
    struct kf_mfg_record r10;
    assert_int_equal(
        kf_mfg_record_open(o.mi10.data, o.mi10.len, d.b_pub, KF_MFG_REC_CONFIRM_INSTALLED, &r10),
        KF_OK);
    assert_int_equal(r10.status, KF_MFG_BAD);
    assert_int_equal(r10.reason, KF_ERR_MFG_TOKENS);
}

static void test_install_refusals(void **state)
{
    (void)state;
    struct domain d, other;
    struct key key;
    struct outs o;
    uint8_t mi7[1024], forged[32];
    size_t len;
    domain_make(&d, "VENDOR", 1);
    domain_make(&other, "USPS", 2);
    key_make(&d, 3, &key);

    /* Signed with a key that is not the certified one. */
    assert_int_equal(kf_crypto_random(forged, 32), KF_OK);
    len = report_make(&d, &key, d.s_id[0], d.s_id[0], forged, key.tokens, T0 + 20, 0, mi7);
    assert_int_equal(check(&d, &key, mi7, len, steel_of(&d, 0), &o), KF_ERR_BAD_SIGNATURE);
    assert_int_equal(o.mi9.len + o.mi10.len, 0);
    /* A certificate of another domain, or one for another role type. */
    len = installed_by_0(&d, &key, mi7);
    assert_int_equal(check(&d, &key, mi7, len, steel_of(&other, 0), &o), KF_ERR_MFG_ROLE);
    assert_int_equal(check(&d, &key, mi7, len, oak_of(&d), &o), KF_ERR_MFG_ROLE);
    /* The certificate of a Steel that did not sign it. */
    assert_int_equal(check(&d, &key, mi7, len, steel_of(&d, 1), &o), KF_ERR_BAD_SIGNATURE);
    /* Another (enrolled) Steel reports the key made for Steel 0. */
    len = report_make(&d, &key, d.s_id[1], d.s_id[1], d.s_sign[1], key.tokens, T0 + 20, 0, mi7);
    assert_int_equal(check(&d, &key, mi7, len, steel_of(&d, 1), &o), KF_ERR_MFG_STEEL_ID);
    /* An EventTime before the key was made. */
    len = report_make(&d, &key, d.s_id[0], d.s_id[0], d.s_sign[0], key.tokens, T0 + 9, 0, mi7);
    assert_int_equal(check(&d, &key, mi7, len, steel_of(&d, 0), &o), KF_ERR_MFG_TIME);
    /* A report for another key ID. */
    struct key other_key = key;
    other_key.id = 4;
    len = installed_by_0(&d, &other_key, mi7);
    assert_int_equal(check(&d, &key, mi7, len, steel_of(&d, 0), &o), KF_ERR_MFG_PARAM);
    /* A modified MI3 from the archive. */
    len = installed_by_0(&d, &key, mi7);
    key.mi3[key.mi3_len - 70] ^= 0x10;
    assert_int_equal(check(&d, &key, mi7, len, steel_of(&d, 0), &o), KF_ERR_MFG_ARCHIVE);
    key.mi3[key.mi3_len - 70] ^= 0x10;
    /* A modified MI7. */
    mi7[len - 100] ^= 0x01;
    assert_int_not_equal(check(&d, &key, mi7, len, steel_of(&d, 0), &o), KF_OK);
    mi7[len - 100] ^= 0x01;
    /* An InstallFailed is not an Installed. */
    len = report_make(&d, &key, d.s_id[0], d.s_id[0], d.s_sign[0], key.tokens, T0 + 20,
                      KF_ERR_MFG_WRITE, mi7);
    assert_int_not_equal(check(&d, &key, mi7, len, steel_of(&d, 0), &o), KF_OK);
    assert_int_equal(o.mi9.len + o.mi10.len, 0);
    /* And the good one still passes after all that. */
    len = installed_by_0(&d, &key, mi7);
    assert_int_equal(check(&d, &key, mi7, len, steel_of(&d, 0), &o), KF_OK);
}

static void test_install_failed(void **state)
{
    (void)state;
    struct domain d;
    struct key key;
    uint8_t rep[1024], b10[1024];
    kf_buf mi10;
    struct kf_brass_install res;
    struct kf_mfg_record r10;
    domain_make(&d, "VENDOR", 1);
    key_make(&d, 3, &key);
    /* Any Steel of the domain may burn the key, speaking for itself. */
    size_t len = report_make(&d, &key, d.s_id[1], d.s_id[1], d.s_sign[1], key.tokens, T0 + 20,
                             KF_ERR_MFG_STEEL_ID, rep);
    kf_buf_fixed(&mi10, b10, sizeof(b10));
    assert_int_equal(kf_brass_install_failed(&d.brass, key.mi3, key.mi3_len, oak_of(&d), rep, len,
                                             steel_of(&d, 1), T0 + 30, &mi10, &res),
                     KF_OK);
    assert_int_equal(res.status, KF_MFG_BAD);
    assert_int_equal(res.reason, KF_ERR_MFG_STEEL_ID);
    assert_string_equal(res.signer, d.s_id[1]);
    assert_int_equal(
        kf_mfg_record_open(mi10.data, mi10.len, d.b_pub, KF_MFG_REC_CONFIRM_INSTALLED, &r10),
        KF_OK);
    assert_int_equal(r10.status, KF_MFG_BAD);
    assert_int_equal(r10.reason, KF_ERR_MFG_STEEL_ID);
    assert_string_equal(r10.msn, "-"); /* the report named no device */
    /* The Steel the key was made for, naming it. */
    len = report_make(&d, &key, d.s_id[0], d.s_id[0], d.s_sign[0], key.tokens, T0 + 20,
                      KF_ERR_MFG_WRITE, rep);
    kf_buf_fixed(&mi10, b10, sizeof(b10));
    assert_int_equal(kf_brass_install_failed(&d.brass, key.mi3, key.mi3_len, oak_of(&d), rep, len,
                                             steel_of(&d, 0), T0 + 30, &mi10, &res),
                     KF_OK);
    assert_int_equal(res.reason, KF_ERR_MFG_WRITE);
    /* Naming a third Steel is refused; so is a report before the key existed. */
    len = report_make(&d, &key, d.s_id[1], "S00000099", d.s_sign[1], key.tokens, T0 + 20,
                      KF_ERR_MFG_WRITE, rep);
    kf_buf_fixed(&mi10, b10, sizeof(b10));
    assert_int_equal(kf_brass_install_failed(&d.brass, key.mi3, key.mi3_len, oak_of(&d), rep, len,
                                             steel_of(&d, 1), T0 + 30, &mi10, &res),
                     KF_ERR_MFG_STEEL_ID);
    len = report_make(&d, &key, d.s_id[0], d.s_id[0], d.s_sign[0], key.tokens, T0, KF_ERR_MFG_WRITE,
                      rep);
    assert_int_equal(kf_brass_install_failed(&d.brass, key.mi3, key.mi3_len, oak_of(&d), rep, len,
                                             steel_of(&d, 0), T0 + 30, &mi10, &res),
                     KF_ERR_MFG_TIME);
    /* An Installed is not an InstallFailed. */
    len = installed_by_0(&d, &key, rep);
    assert_int_not_equal(kf_brass_install_failed(&d.brass, key.mi3, key.mi3_len, oak_of(&d), rep,
                                                 len, steel_of(&d, 0), T0 + 30, &mi10, &res),
                         KF_OK);
    assert_int_equal(mi10.len, 0);
}

/* ---- Registration ---- */

static int meter_store(void *ctx, const uint8_t *state, size_t len)
{
    (void)ctx;
    (void)state;
    (void)len;
    return KF_OK;
}

/* The key installed (MI9 in mi9) and in a meter; MR1 decoded into r. */
struct registered {
    struct key key;
    uint8_t mi9[1024];
    size_t mi9_len;
    struct kfd_meter m;
    struct kfd_registration r;
};

static void install_in_meter(struct domain *d, uint64_t id, struct registered *g)
{
    struct outs o;
    uint8_t mi7[1024], tokens[8];
    key_make(d, id, &g->key);
    size_t len = installed_by_0(d, &g->key, mi7);
    assert_int_equal(check(d, &g->key, mi7, len, steel_of(d, 0), &o), KF_OK);
    memcpy(g->mi9, o.mi9.data, o.mi9.len);
    g->mi9_len = o.mi9.len;
    assert_int_equal(kfd_meter_install(&g->m, d->name, id, g->key.k, tokens), KF_OK);
    assert_memory_equal(tokens, g->key.tokens, 8);
}

static void meter_register(struct registered *g, const char *country, int64_t date,
                           const char *earth, const char *country_domain)
{
    kf_buf mr1;
    assert_int_equal(kf_buf_alloc(&mr1, 0, KFD_REGISTRATION_MAX, 0), KF_OK);
    assert_int_equal(
        kfd_meter_register(&g->m, country, "IND-77", date, earth, country_domain, &mr1), KF_OK);
    assert_int_equal(kfd_registration_decode(mr1.data, mr1.len, &g->r), KF_OK);
    kf_buf_free(&mr1);
}

static void test_register(void **state)
{
    (void)state;
    struct domain d;
    struct registered g;
    domain_make(&d, "VENDOR", 1);
    assert_int_equal(kfd_meter_init(&g.m, MSN, meter_store, NULL), KF_OK);
    install_in_meter(&d, 3, &g);
    meter_register(&g, "US", T0 + 40, NULL, NULL);
    assert_int_equal(g.r.nmacs, 1);

    uint8_t b3[1024], b4[1024];
    kf_buf mr3, mr4;
    kf_buf_fixed(&mr3, b3, sizeof(b3));
    kf_buf_fixed(&mr4, b4, sizeof(b4));
    assert_int_equal(kf_brass_register(&d.brass, g.mi9, g.mi9_len, &g.r, 0, T0 + 50, &mr3, &mr4),
                     KF_OK);
    struct kf_mfg_record r3, r4;
    assert_int_equal(
        kf_mfg_record_open(mr4.data, mr4.len, d.b_pub, KF_MFG_REC_CONFIRM_REGISTERED, &r4), KF_OK);
    assert_int_equal(r4.status, KF_MFG_ACTIVE);
    assert_string_equal(r4.msn, MSN);
    assert_string_equal(r4.indicia, "IND-77");
    assert_string_equal(r4.country, "US");
    assert_int_equal(r4.key_id, 3);
    assert_int_equal(
        kf_mfg_record_open(mr3.data, mr3.len, d.b_pub, KF_MFG_REC_ARCHIVE_REGISTERED, &r3), KF_OK);
    uint8_t k[32];
    assert_int_equal(kf_brass_open(&d.brass, mr3.data, mr3.len, NULL, NULL, k), KF_OK);
    assert_memory_equal(k, g.key.k, 32);

    /* Refusals: a wrong MAC, a date before the installation was confirmed,
     * another device, a modified MI9, MR3 where MI9 belongs. */
    kf_buf_fixed(&mr3, b3, sizeof(b3));
    kf_buf_fixed(&mr4, b4, sizeof(b4));
    struct kfd_registration bad = g.r;
    bad.mac[0].mac[5] ^= 1;
    assert_int_equal(kf_brass_register(&d.brass, g.mi9, g.mi9_len, &bad, 0, T0 + 50, &mr3, &mr4),
                     KF_ERR_MFG_REG_MAC);
    bad = g.r;
    bad.indicia[0] = 'J'; /* the MAC covers the indicia */
    assert_int_equal(kf_brass_register(&d.brass, g.mi9, g.mi9_len, &bad, 0, T0 + 50, &mr3, &mr4),
                     KF_ERR_MFG_REG_MAC);
    bad = g.r;
    bad.date = T0 + 29;
    assert_int_equal(kf_brass_register(&d.brass, g.mi9, g.mi9_len, &bad, 0, T0 + 50, &mr3, &mr4),
                     KF_ERR_MFG_TIME);
    bad = g.r;
    snprintf(bad.msn, sizeof(bad.msn), "MSN-0002");
    assert_int_equal(kf_brass_register(&d.brass, g.mi9, g.mi9_len, &bad, 0, T0 + 50, &mr3, &mr4),
                     KF_ERR_MFG_PARAM);
    bad = g.r;
    bad.mac[0].key_id = 4;
    assert_int_equal(kf_brass_register(&d.brass, g.mi9, g.mi9_len, &bad, 0, T0 + 50, &mr3, &mr4),
                     KF_ERR_MFG_PARAM);
    g.mi9[g.mi9_len - 90] ^= 4;
    assert_int_equal(kf_brass_register(&d.brass, g.mi9, g.mi9_len, &g.r, 0, T0 + 50, &mr3, &mr4),
                     KF_ERR_MFG_ARCHIVE);
    g.mi9[g.mi9_len - 90] ^= 4;
    assert_int_equal(kf_brass_register(&d.brass, b3, sizeof(b3) / 4, &g.r, 0, T0 + 50, &mr3, &mr4),
                     KF_ERR_MFG_ARCHIVE);
    assert_int_equal(mr3.len + mr4.len, 0);
    kfd_meter_wipe(&g.m);
}

static void test_earth_transfer(void **state)
{
    (void)state;
    struct domain earth, usps, gb;
    struct registered g;
    domain_make(&earth, "EARTH", 3);
    domain_make(&usps, "USPS", 2);
    domain_make(&gb, "UKRM", 4);
    assert_int_equal(kfd_meter_init(&g.m, MSN, meter_store, NULL), KF_OK);
    install_in_meter(&earth, 7, &g);
    meter_register(&g, "US", T0 + 40, "EARTH", "USPS");
    assert_string_equal(g.r.mac[0].domain, "EARTH"); /* as the device held it */

    uint8_t bx[1024], b3[1024], b4[1024];
    kf_buf x, mr3, mr4;
    kf_buf_fixed(&x, bx, sizeof(bx));
    assert_int_equal(kf_brass_transfer_out(&earth.brass, g.mi9, g.mi9_len, &g.r, 0, usps.b_id,
                                           usps.b_enc_pub, T0 + 50, &x),
                     KF_OK);
    struct kf_mfg_record rx;
    assert_int_equal(kf_mfg_record_open(x.data, x.len, earth.b_pub, KF_MFG_REC_TRANSFER, &rx),
                     KF_OK);
    assert_string_equal(rx.domain, "EARTH");
    assert_int_equal(rx.key_id, 7);
    assert_string_equal(rx.country, "US");
    struct kf_brass_cert eb = {earth.b_cert, earth.b_cert_len};
    kf_buf_fixed(&mr3, b3, sizeof(b3));
    kf_buf_fixed(&mr4, b4, sizeof(b4));
    assert_int_equal(kf_brass_transfer_in(&usps.brass, x.data, x.len, earth.m_pub, eb, &g.r, 0, 12,
                                          T0 + 50, &mr3, &mr4),
                     KF_OK);
    struct kf_mfg_record r4;
    assert_int_equal(
        kf_mfg_record_open(mr4.data, mr4.len, usps.b_pub, KF_MFG_REC_CONFIRM_REGISTERED, &r4),
        KF_OK);
    assert_string_equal(r4.domain, "USPS");
    assert_int_equal(r4.key_id, 12); /* a key ID of the country's domain */
    uint8_t k[32];
    assert_int_equal(kf_brass_open(&usps.brass, mr3.data, mr3.len, NULL, NULL, k), KF_OK);
    assert_memory_equal(k, g.key.k, 32);
    /* Earth's Brass cannot open the country's record. */
    assert_int_equal(kf_brass_open(&earth.brass, mr3.data, mr3.len, NULL, NULL, k),
                     KF_ERR_MFG_ARCHIVE);

    /* Refusals: another country's Brass cannot open it, earth's certificate
     * under the wrong authority, a Transfer for another country, a wrong MAC. */
    kf_buf_fixed(&mr3, b3, sizeof(b3));
    kf_buf_fixed(&mr4, b4, sizeof(b4));
    struct kfd_registration gbr = g.r;
    snprintf(gbr.country, sizeof(gbr.country), "GB");
    assert_int_equal(kf_brass_transfer_in(&gb.brass, x.data, x.len, earth.m_pub, eb, &gbr, 0, 12,
                                          T0 + 50, &mr3, &mr4),
                     KF_ERR_MFG_COUNTRY);
    assert_int_equal(kf_brass_transfer_in(&gb.brass, x.data, x.len, earth.m_pub, eb, &g.r, 0, 12,
                                          T0 + 50, &mr3, &mr4),
                     KF_ERR_AUTH); /* sealed to USPS's Brass */
    assert_int_equal(kf_brass_transfer_in(&usps.brass, x.data, x.len, usps.m_pub, eb, &g.r, 0, 12,
                                          T0 + 50, &mr3, &mr4),
                     KF_ERR_MFG_ROLE);
    struct kfd_registration bad = g.r;
    bad.mac[0].mac[0] ^= 0x80;
    assert_int_equal(kf_brass_transfer_in(&usps.brass, x.data, x.len, earth.m_pub, eb, &bad, 0, 12,
                                          T0 + 50, &mr3, &mr4),
                     KF_ERR_MFG_REG_MAC);
    assert_int_equal(mr3.len + mr4.len, 0);
    /* Transfer out only for earth's own MI9 of this device. */
    kf_buf_fixed(&x, bx, sizeof(bx));
    bad = g.r;
    snprintf(bad.msn, sizeof(bad.msn), "OTHER");
    assert_int_equal(kf_brass_transfer_out(&earth.brass, g.mi9, g.mi9_len, &bad, 0, usps.b_id,
                                           usps.b_enc_pub, T0 + 50, &x),
                     KF_ERR_MFG_PARAM);
    assert_int_equal(kf_brass_transfer_out(&usps.brass, g.mi9, g.mi9_len, &g.r, 0, usps.b_id,
                                           usps.b_enc_pub, T0 + 50, &x),
                     KF_ERR_MFG_PARAM); /* the MAC names earth, not USPS */
    assert_int_equal(x.len, 0);
    kfd_meter_wipe(&g.m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_installed),        cmocka_unit_test(test_wrong_tokens_bad),
        cmocka_unit_test(test_install_refusals), cmocka_unit_test(test_install_failed),
        cmocka_unit_test(test_register),         cmocka_unit_test(test_earth_transfer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
