/*
 * The authority M and the generation role Oak (src/oak, docs/manufacturing.md
 * "Installation", seed Fig. 30 MI1-MI4), without a store: role certificates
 * and what each role type may carry; Oak's refusal of a key ID it saw before
 * (equal or lower, nothing appended); MI3 and MI4 signed by Oak, carrying the
 * same K sealed to Brass and to the Steel respectively, each sealed copy
 * bound to its recipient and record; the test tokens of MI4 those of K; a
 * fresh K per key; and a modified record refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "keyfleet/crypto.h"
#include "keyfleet/meter.h"
#include "keyfleet/mfg.h"
#include "keyfleet/secmem.h"
#include "oak/oak.h"

#define DOMAIN "VENDOR"
#define M_ID "M00000001"
#define O_ID "O00000001"
#define B_ID "B00000001"
#define S_ID "S00000042"
#define NOW 1780000000

struct keys {
    uint8_t m_priv[32], m_pub[32];
    uint8_t o_priv[32], o_pub[32];
    uint8_t b_enc_priv[32], b_enc_pub[32];
    uint8_t s_sign_priv[32], s_sign_pub[32];
    uint8_t s_enc_priv[32], s_enc_pub[32];
};

static void make_keys(struct keys *k)
{
    assert_int_equal(kf_crypto_random((uint8_t *)k, sizeof(*k)), KF_OK);
    assert_int_equal(kf_ed25519_public(k->m_priv, k->m_pub), KF_OK);
    assert_int_equal(kf_ed25519_public(k->o_priv, k->o_pub), KF_OK);
    assert_int_equal(kf_x25519_public(k->b_enc_priv, k->b_enc_pub), KF_OK);
    assert_int_equal(kf_ed25519_public(k->s_sign_priv, k->s_sign_pub), KF_OK);
    assert_int_equal(kf_x25519_public(k->s_enc_priv, k->s_enc_pub), KF_OK);
}

static struct kf_oak_request request(const struct keys *k, uint64_t key_id, uint64_t last_seen)
{
    return (struct kf_oak_request){
        .domain = DOMAIN,
        .oak_id = O_ID,
        .sign_priv = k->o_priv,
        .steel_id = S_ID,
        .steel_enc_pub = k->s_enc_pub,
        .brass_id = B_ID,
        .brass_enc_pub = k->b_enc_pub,
        .key_id = key_id,
        .last_seen = last_seen,
        .now = NOW,
    };
}

/* ---- M ---- */

static void test_certificates(void **state)
{
    (void)state;
    struct keys k;
    make_keys(&k);
    kf_buf cert;
    struct kf_mfg_record rec;
    assert_int_equal(kf_buf_alloc(&cert, 0, 4096, 0), KF_OK);

    /* M's own: self-signed, no enc key. */
    assert_int_equal(kf_authority_certify(DOMAIN, M_ID, k.m_priv, M_ID, k.m_pub, NULL, NOW, &cert),
                     KF_OK);
    assert_int_equal(
        kf_mfg_cert_check(cert.data, cert.len, k.m_pub, DOMAIN, KF_MFG_ROLE_AUTHORITY, &rec),
        KF_OK);
    assert_string_equal(rec.role_id, M_ID);
    assert_memory_equal(rec.sign_pub, k.m_pub, 32);
    assert_false(rec.fields & KF_MFG_F_ENC_PUB);
    assert_int_equal(rec.event_time, NOW);
    /* It certifies nothing in another domain, nor as another role type. */
    assert_int_not_equal(kf_mfg_cert_check(cert.data, cert.len, k.m_pub, "USPS", 0, &rec), KF_OK);
    assert_int_not_equal(
        kf_mfg_cert_check(cert.data, cert.len, k.m_pub, DOMAIN, KF_MFG_ROLE_OAK, &rec), KF_OK);

    /* A Steel's: both keys; checked under M's key only. */
    kf_buf_reset(&cert);
    assert_int_equal(
        kf_authority_certify(DOMAIN, M_ID, k.m_priv, S_ID, k.s_sign_pub, k.s_enc_pub, NOW, &cert),
        KF_OK);
    assert_int_equal(
        kf_mfg_cert_check(cert.data, cert.len, k.m_pub, DOMAIN, KF_MFG_ROLE_STEEL, &rec), KF_OK);
    assert_memory_equal(rec.enc_pub, k.s_enc_pub, 32);
    assert_int_equal(
        kf_mfg_cert_check(cert.data, cert.len, k.o_pub, DOMAIN, KF_MFG_ROLE_STEEL, &rec),
        KF_ERR_BAD_SIGNATURE);
    cert.data[cert.len - 3] ^= 1; /* inside the signature */
    assert_int_equal(
        kf_mfg_cert_check(cert.data, cert.len, k.m_pub, DOMAIN, KF_MFG_ROLE_STEEL, &rec),
        KF_ERR_BAD_SIGNATURE);

    /* What a role type may carry, and who may sign. */
    kf_buf_reset(&cert);
    assert_int_equal(
        kf_authority_certify(DOMAIN, M_ID, k.m_priv, O_ID, k.o_pub, k.b_enc_pub, NOW, &cert),
        KF_ERR_MFG_ROLE); /* Oak is sealed nothing */
    assert_int_equal(
        kf_authority_certify(DOMAIN, M_ID, k.m_priv, S_ID, k.s_sign_pub, NULL, NOW, &cert),
        KF_ERR_MFG_ROLE); /* a Steel without an enc key could receive no key */
    assert_int_equal(
        kf_authority_certify(DOMAIN, M_ID, k.m_priv, "M00000002", k.m_pub, NULL, NOW, &cert),
        KF_ERR_MFG_ROLE); /* a second M */
    assert_int_equal(
        kf_authority_certify(DOMAIN, O_ID, k.o_priv, S_ID, k.s_sign_pub, k.s_enc_pub, NOW, &cert),
        KF_ERR_MFG_PARAM); /* only M certifies */
    assert_int_equal(kf_authority_certify(DOMAIN, M_ID, k.m_priv, "S0000004", k.s_sign_pub,
                                          k.s_enc_pub, NOW, &cert),
                     KF_ERR_MFG_PARAM);
    assert_int_equal(
        kf_authority_certify("", M_ID, k.m_priv, S_ID, k.s_sign_pub, k.s_enc_pub, NOW, &cert),
        KF_ERR_MFG_PARAM);
    assert_int_equal(cert.len, 0); /* refusals append nothing */
    kf_buf_free(&cert);
}

/* ---- Oak ---- */

static void test_key_id_refused(void **state)
{
    (void)state;
    struct keys k;
    make_keys(&k);
    kf_buf mi3, mi4;
    assert_int_equal(kf_buf_alloc(&mi3, 0, 4096, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&mi4, 0, 4096, 0), KF_OK);
    struct kf_oak_request r = request(&k, 7, 7);
    assert_int_equal(kf_oak_generate(&r, &mi3, &mi4), KF_ERR_MFG_KEY_ID); /* a replay */
    r = request(&k, 6, 7);
    assert_int_equal(kf_oak_generate(&r, &mi3, &mi4), KF_ERR_MFG_KEY_ID); /* going back */
    assert_int_equal(mi3.len, 0);
    assert_int_equal(mi4.len, 0);
    /* Malformed requests: the wrong role letters. */
    r = request(&k, 8, 7);
    r.steel_id = "T00000001";
    assert_int_equal(kf_oak_generate(&r, &mi3, &mi4), KF_ERR_MFG_PARAM);
    r = request(&k, 8, 7);
    r.brass_id = O_ID;
    assert_int_equal(kf_oak_generate(&r, &mi3, &mi4), KF_ERR_MFG_PARAM);
    assert_int_equal(mi3.len + mi4.len, 0);
    r = request(&k, 8, 7);
    assert_int_equal(kf_oak_generate(&r, &mi3, &mi4), KF_OK);
    assert_true(mi3.len > 0 && mi4.len > 0);
    kf_buf_free(&mi3);
    kf_buf_free(&mi4);
}

static void generate(const struct keys *k, uint64_t key_id, kf_buf *mi3, kf_buf *mi4)
{
    assert_int_equal(kf_buf_alloc(mi3, 0, 4096, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(mi4, 0, 4096, 0), KF_OK);
    struct kf_oak_request r = request(k, key_id, key_id - 1);
    assert_int_equal(kf_oak_generate(&r, mi3, mi4), KF_OK);
}

static void test_records(void **state)
{
    (void)state;
    struct keys k;
    make_keys(&k);
    kf_buf mi3, mi4;
    generate(&k, 5, &mi3, &mi4);
    struct kf_mfg_record a, d;
    struct kf_mfg_envelope env;
    size_t used;

    /* MI3: signed by Oak, ArchiveNew, every Fig. 30 field. */
    assert_int_equal(kf_mfg_envelope_parse(mi3.data, mi3.len, &env, &used), KF_OK);
    assert_int_equal(used, mi3.len);
    assert_string_equal(env.signer, O_ID);
    assert_int_equal(kf_mfg_record_open(mi3.data, mi3.len, k.o_pub, KF_MFG_REC_ARCHIVE_NEW, &a),
                     KF_OK);
    assert_int_equal(a.status, KF_MFG_NEW);
    assert_string_equal(a.role_id, O_ID);
    assert_string_equal(a.domain, DOMAIN);
    assert_string_equal(a.steel_id, S_ID);
    assert_int_equal(a.key_id, 5);
    assert_int_equal(a.event_time, NOW);
    assert_false(a.fields & KF_MFG_F_TEST_TOKENS);
    /* MI4: Distribute, with the test tokens. */
    assert_int_equal(kf_mfg_record_open(mi4.data, mi4.len, k.o_pub, KF_MFG_REC_DISTRIBUTE, &d),
                     KF_OK);
    assert_int_equal(d.key_id, 5);
    assert_string_equal(d.steel_id, S_ID);
    assert_true(d.fields & KF_MFG_F_TEST_TOKENS);
    /* Not signed by anyone else. */
    struct kf_mfg_record other;
    assert_int_equal(kf_mfg_record_open(mi4.data, mi4.len, k.m_pub, 0, &other),
                     KF_ERR_BAD_SIGNATURE);

    /* The same K in both: Brass opens MI3's copy, the Steel MI4's. */
    uint8_t *kb = kf_secmem_alloc(32), *ks = kf_secmem_alloc(32);
    assert_non_null(kb);
    assert_non_null(ks);
    assert_int_equal(kf_mfg_open_key(k.b_enc_priv, DOMAIN, 5, B_ID, a.sealed_key, kb), KF_OK);
    assert_int_equal(kf_mfg_open_key(k.s_enc_priv, DOMAIN, 5, S_ID, d.sealed_key, ks), KF_OK);
    assert_memory_equal(kb, ks, 32);
    assert_false(kf_ct_is_zero(kb, 32));
    uint8_t tokens[8];
    assert_int_equal(kfd_test_tokens(kb, tokens), KF_OK);
    assert_memory_equal(tokens, d.test_tokens, 8);
    /* Each copy opens only for its recipient, record and key ID. */
    assert_int_equal(kf_mfg_open_key(k.s_enc_priv, DOMAIN, 5, S_ID, a.sealed_key, ks), KF_ERR_AUTH);
    assert_int_equal(kf_mfg_open_key(k.b_enc_priv, DOMAIN, 5, B_ID, d.sealed_key, ks), KF_ERR_AUTH);
    assert_int_equal(kf_mfg_open_key(k.b_enc_priv, DOMAIN, 6, B_ID, a.sealed_key, ks), KF_ERR_AUTH);
    assert_int_equal(kf_mfg_open_key(k.b_enc_priv, "USPS", 5, B_ID, a.sealed_key, ks), KF_ERR_AUTH);

    /* A second key is a fresh K. */
    kf_buf mi3b, mi4b;
    generate(&k, 6, &mi3b, &mi4b);
    assert_int_equal(kf_mfg_record_open(mi3b.data, mi3b.len, k.o_pub, KF_MFG_REC_ARCHIVE_NEW, &a),
                     KF_OK);
    assert_int_equal(kf_mfg_open_key(k.b_enc_priv, DOMAIN, 6, B_ID, a.sealed_key, ks), KF_OK);
    assert_memory_not_equal(kb, ks, 32);

    /* A modified record is refused. */
    mi4.data[mi4.len / 2] ^= 0x40;
    assert_int_not_equal(kf_mfg_record_open(mi4.data, mi4.len, k.o_pub, 0, &d), KF_OK);
    kf_secmem_free(kb);
    kf_secmem_free(ks);
    kf_buf_free(&mi3);
    kf_buf_free(&mi4);
    kf_buf_free(&mi3b);
    kf_buf_free(&mi4b);
}

/* K lives only inside the call: no secure allocation is left behind. */
static void test_no_key_left(void **state)
{
    (void)state;
    struct keys k;
    make_keys(&k);
    size_t live = kf_secmem_live();
    kf_buf mi3, mi4;
    generate(&k, 9, &mi3, &mi4);
    assert_int_equal(kf_secmem_live(), live);
    kf_buf_free(&mi3);
    kf_buf_free(&mi4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_certificates),
        cmocka_unit_test(test_key_id_refused),
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_no_key_left),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
