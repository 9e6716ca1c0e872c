/*
 * Manufacturing records (docs/manufacturing.md, "Signed envelope and
 * records"): role IDs and field syntax, the KeyfleetMfgRecord body codec of
 * every record type, the signed envelope, role certificates and token key
 * table entries.
 *
 * The refusal tests take a valid body apart as a TTLV tree and put it back
 * together wrong (a field dropped, repeated, moved, foreign, re-typed or of
 * the wrong length); the rebuilt unmodified body must decode, so each refusal
 * is the decoder's doing. The signature input is composed here from the
 * document ("keyfleet-mfg-v1" || 0x00 || [type]_32 || signer || body), not taken from
 * the code under test.
 *
 * With KF_MFG_CORPUS_DIR set, the fuzz_seeds test writes the seed corpus of
 * tests/fuzz/fuzz_mfg_record.c there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "keyfleet/arena.h"
#include "keyfleet/crypto.h"
#include "keyfleet/error.h"
#include "keyfleet/mfg.h"
#include "keyfleet/ttlv.h"

#define DOMAIN "VENDOR"
#define OAK_ID "O00000001"
#define BRASS_ID "B00000003"
#define STEEL_ID "S00000042"
#define TIN_ID "T00000007"
#define AUTH_ID "M00000001"
#define EVENT_TIME 1767225600 /* 2026-01-01 */
#define NENTRIES 3

/* The authority key the fuzz target checks certificates against: bytes 00..1f. */
static void authority_priv(uint8_t k[32])
{
    for (int i = 0; i < 32; i++)
        k[i] = (uint8_t)i;
}

static void other_priv(uint8_t k[32])
{
    for (int i = 0; i < 32; i++)
        k[i] = (uint8_t)(0xA0 + i);
}

static void pub_of(void (*priv_fn)(uint8_t[32]), uint8_t pub[32])
{
    uint8_t priv[32];
    priv_fn(priv);
    assert_int_equal(kf_ed25519_public(priv, pub), KF_OK);
}

/* ---- sample records, one per type ---- */

static uint8_t sample_table[NENTRIES * KF_MFG_TOKEN_KEY_ENTRY_LEN];

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i);
}

static void make_table(void)
{
    for (int i = 0; i < NENTRIES; i++) {
        struct kf_mfg_token_key_entry e = {0};
        snprintf(e.msn, sizeof(e.msn), "MSN-%04d", i + 1);
        e.key_id = (uint64_t)(100 + i);
        e.period = (uint32_t)(202601 + i);
        e.registered_at = 1767225600 + i;
        fill(e.sealed, sizeof(e.sealed), (uint8_t)(0x30 + i));
        kf_mfg_token_key_entry_put(&e, &sample_table[i * KF_MFG_TOKEN_KEY_ENTRY_LEN]);
    }
}

/* A valid record of type; with_optional adds the type's optional field
 * (ConfirmInstalled: status Bad with its reason instead of Installed). */
static void sample(uint32_t type, bool with_optional, struct kf_mfg_record *r)
{
    memset(r, 0, sizeof(*r));
    r->type = type;
    strcpy(r->domain, DOMAIN);
    r->key_id = 42;
    r->event_time = EVENT_TIME;
    strcpy(r->msn, "MSN-0001");
    strcpy(r->steel_id, STEEL_ID);
    strcpy(r->role_id, OAK_ID);
    fill(r->sealed_key, sizeof(r->sealed_key), 0x10);
    fill(r->archive_key, sizeof(r->archive_key), 0x60);
    fill(r->test_tokens, sizeof(r->test_tokens), 0xE0);
    strcpy(r->indicia, "IND-77");
    strcpy(r->country, "DE");
    const uint32_t base = KF_MFG_F_DOMAIN | KF_MFG_F_KEY_ID | KF_MFG_F_EVENT_TIME;
    switch (type) {
    case KF_MFG_REC_ROLE_CERT:
        strcpy(r->role_id, STEEL_ID);
        r->role_type = KF_MFG_ROLE_STEEL;
        fill(r->sign_pub, 32, 0x80);
        fill(r->enc_pub, 32, 0xA0);
        r->fields = KF_MFG_F_ROLE_ID | KF_MFG_F_ROLE_TYPE | KF_MFG_F_DOMAIN | KF_MFG_F_SIGN_PUB |
                    KF_MFG_F_EVENT_TIME | (with_optional ? KF_MFG_F_ENC_PUB : 0);
        break;
    case KF_MFG_REC_ARCHIVE_NEW:
    case KF_MFG_REC_DISTRIBUTE:
        r->status = KF_MFG_NEW;
        r->fields = base | KF_MFG_F_STATUS | KF_MFG_F_ROLE_ID | KF_MFG_F_STEEL_ID |
                    KF_MFG_F_SEALED_KEY |
                    (type == KF_MFG_REC_DISTRIBUTE ? KF_MFG_F_TEST_TOKENS : 0);
        break;
    case KF_MFG_REC_INSTALLED:
        r->status = KF_MFG_INSTALLED;
        r->fields = base | KF_MFG_F_STATUS | KF_MFG_F_ROLE_ID | KF_MFG_F_STEEL_ID | KF_MFG_F_MSN |
                    KF_MFG_F_TEST_TOKENS;
        break;
    case KF_MFG_REC_INSTALL_FAILED:
        r->status = KF_MFG_BAD;
        r->reason = KF_ERR_MFG_STEEL_ID;
        r->fields = base | KF_MFG_F_STATUS | KF_MFG_F_STEEL_ID | KF_MFG_F_REASON |
                    (with_optional ? KF_MFG_F_MSN : 0);
        break;
    case KF_MFG_REC_ARCHIVE_INSTALLED:
        r->status = KF_MFG_INSTALLED;
        r->fields = base | KF_MFG_F_STATUS | KF_MFG_F_ROLE_ID | KF_MFG_F_STEEL_ID | KF_MFG_F_MSN |
                    KF_MFG_F_ARCHIVE_KEY;
        break;
    case KF_MFG_REC_CONFIRM_INSTALLED:
        r->status = with_optional ? KF_MFG_BAD : KF_MFG_INSTALLED;
        r->reason = KF_ERR_MFG_TOKENS;
        r->fields = base | KF_MFG_F_STATUS | KF_MFG_F_MSN | (with_optional ? KF_MFG_F_REASON : 0);
        break;
    case KF_MFG_REC_ARCHIVE_REGISTERED:
    case KF_MFG_REC_CONFIRM_REGISTERED:
        r->status = KF_MFG_ACTIVE;
        r->fields = base | KF_MFG_F_STATUS | KF_MFG_F_MSN | KF_MFG_F_INDICIA | KF_MFG_F_COUNTRY |
                    (type == KF_MFG_REC_ARCHIVE_REGISTERED ? KF_MFG_F_ARCHIVE_KEY : 0);
        break;
    case KF_MFG_REC_TRANSFER:
        strcpy(r->domain, "earth");
        r->fields = base | KF_MFG_F_MSN | KF_MFG_F_COUNTRY | KF_MFG_F_SEALED_KEY;
        break;
    case KF_MFG_REC_TOKEN_KEYS:
        make_table();
        strcpy(r->role_id, TIN_ID);
        r->period_first = 202601;
        r->period_last = 202603;
        r->table = sample_table;
        r->table_len = sizeof(sample_table);
        r->fields = KF_MFG_F_DOMAIN | KF_MFG_F_ROLE_ID | KF_MFG_F_PERIODS | KF_MFG_F_TABLE;
        break;
    default:
        fail();
    }
}

/* Equal in every field the record carries (absent fields decode as zero). */
static void assert_same_record(const struct kf_mfg_record *want, const struct kf_mfg_record *got)
{
    uint32_t f = want->fields;
    assert_int_equal(got->type, want->type);
    assert_int_equal(got->fields, f);
    if (f & KF_MFG_F_STATUS)
        assert_int_equal(got->status, want->status);
    if (f & KF_MFG_F_ROLE_ID)
        assert_string_equal(got->role_id, want->role_id);
    if (f & KF_MFG_F_ROLE_TYPE)
        assert_int_equal(got->role_type, want->role_type);
    if (f & KF_MFG_F_DOMAIN)
        assert_string_equal(got->domain, want->domain);
    if (f & KF_MFG_F_STEEL_ID)
        assert_string_equal(got->steel_id, want->steel_id);
    if (f & KF_MFG_F_KEY_ID)
        assert_int_equal(got->key_id, want->key_id);
    if (f & KF_MFG_F_SIGN_PUB)
        assert_memory_equal(got->sign_pub, want->sign_pub, 32);
    if (f & KF_MFG_F_ENC_PUB)
        assert_memory_equal(got->enc_pub, want->enc_pub, 32);
    if (f & KF_MFG_F_SEALED_KEY)
        assert_memory_equal(got->sealed_key, want->sealed_key, KF_MFG_SEALED_LEN);
    if (f & KF_MFG_F_ARCHIVE_KEY)
        assert_memory_equal(got->archive_key, want->archive_key, KF_MFG_ARCHIVE_LEN);
    if (f & KF_MFG_F_TEST_TOKENS)
        assert_memory_equal(got->test_tokens, want->test_tokens, KF_MFG_TEST_TOKENS_LEN);
    if (f & KF_MFG_F_MSN)
        assert_string_equal(got->msn, want->msn);
    if (f & KF_MFG_F_INDICIA)
        assert_string_equal(got->indicia, want->indicia);
    if (f & KF_MFG_F_COUNTRY)
        assert_string_equal(got->country, want->country);
    if (f & KF_MFG_F_REASON)
        assert_int_equal(got->reason, want->reason);
    if (f & KF_MFG_F_EVENT_TIME)
        assert_int_equal(got->event_time, want->event_time);
    if (f & KF_MFG_F_PERIODS) {
        assert_int_equal(got->period_first, want->period_first);
        assert_int_equal(got->period_last, want->period_last);
    }
    if (f & KF_MFG_F_TABLE) {
        assert_int_equal(got->table_len, want->table_len);
        assert_memory_equal(got->table, want->table, want->table_len);
    }
    /* a field the record does not carry stays zero */
    if (!(f & KF_MFG_F_STATUS))
        assert_int_equal(got->status, 0);
    if (!(f & KF_MFG_F_MSN))
        assert_string_equal(got->msn, "");
    if (!(f & KF_MFG_F_TABLE))
        assert_null(got->table);
}

static void encode(const struct kf_mfg_record *r, kf_buf *out)
{
    assert_int_equal(kf_buf_alloc(out, 0, 16u << 20, 0), KF_OK);
    assert_int_equal(kf_mfg_record_encode(r, out), KF_OK);
}

static void sign(const struct kf_mfg_record *r, void (*priv_fn)(uint8_t[32]), kf_buf *out)
{
    uint8_t priv[32];
    priv_fn(priv);
    assert_int_equal(kf_buf_alloc(out, 0, 16u << 20, 0), KF_OK);
    assert_int_equal(kf_mfg_record_sign(r, AUTH_ID, priv, out), KF_OK);
}

/* ---- role IDs and field syntax ---- */

static void role_ids_format_and_parse(void **state)
{
    (void)state;
    char id[KF_MFG_ROLE_ID_LEN + 1];
    enum kf_mfg_role_type t;
    assert_int_equal(kf_mfg_role_id_format(KF_MFG_ROLE_OAK, 1, id), KF_OK);
    assert_string_equal(id, "O00000001");
    assert_int_equal(kf_mfg_role_id_format(KF_MFG_ROLE_STEEL, 42, id), KF_OK);
    assert_string_equal(id, "S00000042");
    assert_int_equal(kf_mfg_role_id_format(KF_MFG_ROLE_TIN, 99999999, id), KF_OK);
    assert_string_equal(id, "T99999999");
    assert_int_equal(kf_mfg_role_id_format(KF_MFG_ROLE_AUTHORITY, 12345678, id), KF_OK);
    assert_string_equal(id, "M12345678");
    assert_int_equal(kf_mfg_role_id_format(KF_MFG_ROLE_BRASS, 7, id), KF_OK);
    assert_string_equal(id, "B00000007");
    assert_true(kf_mfg_role_id_parse(id, &t));
    assert_int_equal(t, KF_MFG_ROLE_BRASS);
    /* n is 1..99,999,999; unknown role types */
    assert_int_equal(kf_mfg_role_id_format(KF_MFG_ROLE_OAK, 0, id), KF_ERR_ARG);
    assert_int_equal(kf_mfg_role_id_format(KF_MFG_ROLE_OAK, 100000000, id), KF_ERR_ARG);
    assert_int_equal(kf_mfg_role_id_format(0, 1, id), KF_ERR_ARG);
    assert_int_equal(kf_mfg_role_id_format(6, 1, id), KF_ERR_ARG);

    const char letters[] = "MOBST";
    for (int i = 0; i < 5; i++) {
        assert_int_equal(kf_mfg_role_letter((enum kf_mfg_role_type)(i + 1)), letters[i]);
        char s[] = "X00000009";
        s[0] = letters[i];
        assert_true(kf_mfg_role_id_parse(s, &t));
        assert_int_equal(t, i + 1);
    }
    assert_int_equal(kf_mfg_role_letter(0), 0);
    assert_int_equal(kf_mfg_role_letter(6), 0);
    assert_true(kf_mfg_role_id_parse("O00000001", NULL));

    static const char *const bad[] = {
        "O00000000",  /* n = 0 */
        "o00000001",  /* lower-case letter */
        "X00000001",  /* unknown letter */
        "O0000001",   /* 7 digits */
        "O000000001", /* 9 digits */
        "O0000000A",  /* not a digit */
        "O 0000001",  /* space */
        "O-0000001",  "00000001O", "", "O",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(kf_mfg_role_id_parse(bad[i], &t));
    assert_false(kf_mfg_role_id_parse(NULL, &t));
}

static void field_syntax(void **state)
{
    (void)state;
    assert_true(kf_mfg_msn_valid("A"));
    assert_true(kf_mfg_msn_valid("MSN-0001"));
    assert_true(kf_mfg_msn_valid("0123456789ABCDEF"));
    assert_false(kf_mfg_msn_valid(""));
    assert_false(kf_mfg_msn_valid("0123456789ABCDEFG")); /* 17 */
    assert_false(kf_mfg_msn_valid("msn-1"));
    assert_false(kf_mfg_msn_valid("MSN 1"));
    assert_false(kf_mfg_msn_valid("MSN_1"));
    assert_false(kf_mfg_msn_valid("MSN/1"));
    assert_false(kf_mfg_msn_valid(NULL));
    assert_true(kf_mfg_indicia_valid("IND-77"));
    assert_true(kf_mfg_indicia_valid("0123456789ABCDEF"));
    assert_false(kf_mfg_indicia_valid(""));
    assert_false(kf_mfg_indicia_valid("0123456789ABCDEF0"));
    assert_false(kf_mfg_indicia_valid("ind"));
    assert_true(kf_mfg_country_valid("DE"));
    assert_true(kf_mfg_country_valid("US"));
    assert_false(kf_mfg_country_valid("de"));
    assert_false(kf_mfg_country_valid("D"));
    assert_false(kf_mfg_country_valid("DEU"));
    assert_false(kf_mfg_country_valid("D1"));
    assert_false(kf_mfg_country_valid(""));
    assert_false(kf_mfg_country_valid(NULL));
}

/* ---- bodies ---- */

/* The body of a ConfirmInstalled, worked out by hand from the TTLV rules
 * (tag 3 | type 1 | length 4 | value padded to 8) and the document's table. */
static void body_known_encoding(void **state)
{
    (void)state;
    static const uint8_t want[] = {
        0x54, 0x02, 0x06, 0x01, 0x00, 0x00, 0x00, 0x60, /* MfgRecord */
        0x54, 0x02, 0x02, 0x05, 0x00, 0x00, 0x00, 0x04, 0,    0,    0,
        7,    0,    0,    0,    0, /* type 7 */
        0x54, 0x02, 0x0B, 0x05, 0x00, 0x00, 0x00, 0x04, 0,    0,    0,
        2,    0,    0,    0,    0, /* Installed */
        0x54, 0x00, 0x01, 0x07, 0x00, 0x00, 0x00, 0x06, 'V',  'E',  'N',
        'D',  'O',  'R',  0,    0,    0x54, 0x00, 0x0B, 0x03, 0x00, 0x00,
        0x00, 0x08, 0,    0,    0,    0,    0,    0,    0,    42, /* key id */
        0x54, 0x02, 0x0F, 0x07, 0x00, 0x00, 0x00, 0x08, 'M',  'S',  'N',
        '-',  '0',  '0',  '0',  '1',  0x54, 0x02, 0x0A, 0x09, 0x00, 0x00,
        0x00, 0x08, 0,    0,    0,    0,    0x69, 0x55, 0xB9, 0x00,
    };
    struct kf_mfg_record r, got;
    sample(KF_MFG_REC_CONFIRM_INSTALLED, false, &r);
    kf_buf out;
    encode(&r, &out);
    assert_int_equal(out.len, sizeof(want));
    assert_memory_equal(out.data, want, sizeof(want));
    assert_int_equal(kf_mfg_record_decode(want, sizeof(want), 0, &got), KF_OK);
    assert_same_record(&r, &got);
    kf_buf_free(&out);
}

static void every_type_round_trips(void **state)
{
    (void)state;
    uint8_t apub[32];
    pub_of(authority_priv, apub);
    for (uint32_t type = 1; type <= KF_MFG_REC_MAX; type++) {
        for (int opt = 0; opt < 2; opt++) {
            struct kf_mfg_record r, got;
            sample(type, opt, &r);
            kf_buf body, env;
            encode(&r, &body);
            assert_int_equal(kf_mfg_record_decode(body.data, body.len, type, &got), KF_OK);
            assert_same_record(&r, &got);
            assert_int_equal(kf_mfg_record_decode(body.data, body.len, 0, &got), KF_OK);
            if (type == KF_MFG_REC_TOKEN_KEYS) /* the table points into the body */
                assert_true(got.table > body.data &&
                            got.table + got.table_len <= body.data + body.len);
            /* a body of another type is not this one */
            assert_int_equal(
                kf_mfg_record_decode(body.data, body.len, type % KF_MFG_REC_MAX + 1, &got),
                KF_ERR_MFG_FRAMING);

            sign(&r, authority_priv, &env);
            assert_int_equal(kf_mfg_record_open(env.data, env.len, apub, type, &got), KF_OK);
            assert_same_record(&r, &got);
            assert_int_equal(kf_mfg_record_open(env.data, env.len, apub, 0, &got), KF_OK);
            assert_same_record(&r, &got);
            assert_int_equal(
                kf_mfg_record_open(env.data, env.len, apub, type % KF_MFG_REC_MAX + 1, &got),
                KF_ERR_MFG_FRAMING);

            /* the envelope carries exactly these body bytes, signed as the document says */
            struct kf_mfg_envelope e;
            size_t used;
            assert_int_equal(kf_mfg_envelope_parse(env.data, env.len, &e, &used), KF_OK);
            assert_int_equal(used, env.len);
            assert_int_equal(e.type, type);
            assert_string_equal(e.signer, AUTH_ID);
            assert_int_equal(e.body_len, body.len);
            assert_memory_equal(e.body, body.data, body.len);
            kf_buf input;
            assert_int_equal(kf_buf_alloc(&input, 0, 16u << 20, 0), KF_OK);
            assert_int_equal(kf_buf_put_bytes(&input, "keyfleet-mfg-v1", 16), KF_OK);
            assert_int_equal(kf_buf_put_u32(&input, type), KF_OK);
            assert_int_equal(kf_buf_put_bytes(&input, AUTH_ID, 9), KF_OK);
            assert_int_equal(kf_buf_put_bytes(&input, body.data, body.len), KF_OK);
            assert_int_equal(kf_ed25519_verify(apub, input.data, input.len, e.sig), KF_OK);
            assert_int_equal(kf_mfg_envelope_verify(&e, apub), KF_OK);
            kf_buf_free(&input);
            kf_buf_free(&body);
            kf_buf_free(&env);
        }
    }
}

/* Each required field unset, and a field the type does not allow set: encode refuses. */
static void encode_refuses_records_off_the_table(void **state)
{
    (void)state;
    for (uint32_t type = 1; type <= KF_MFG_REC_MAX; type++) {
        struct kf_mfg_record full, r;
        sample(type, true, &full);
        kf_buf out;
        assert_int_equal(kf_buf_alloc(&out, 0, 16u << 20, 0), KF_OK);
        for (uint32_t bit = 1; bit <= KF_MFG_F_TABLE; bit <<= 1) {
            r = full;
            if (full.fields & bit) {
                r.fields &= ~bit;
                bool optional = (type == KF_MFG_REC_ROLE_CERT && bit == KF_MFG_F_ENC_PUB) ||
                                (type == KF_MFG_REC_INSTALL_FAILED && bit == KF_MFG_F_MSN);
                assert_int_equal(kf_mfg_record_encode(&r, &out), optional ? KF_OK : KF_ERR_ARG);
            } else {
                r.fields |= bit;
                assert_int_equal(kf_mfg_record_encode(&r, &out), KF_ERR_ARG);
            }
        }
        r = full;
        r.fields |= 1u << 18; /* no such field */
        assert_int_equal(kf_mfg_record_encode(&r, &out), KF_ERR_ARG);
        kf_buf_free(&out);
    }
    struct kf_mfg_record r;
    kf_buf out;
    assert_int_equal(kf_buf_alloc(&out, 0, 4096, 0), KF_OK);
    sample(KF_MFG_REC_ROLE_CERT, false, &r);
    r.type = 0;
    assert_int_equal(kf_mfg_record_encode(&r, &out), KF_ERR_ARG);
    r.type = KF_MFG_REC_MAX + 1;
    assert_int_equal(kf_mfg_record_encode(&r, &out), KF_ERR_ARG);
    assert_int_equal(out.len, 0);
    kf_buf_free(&out);
}

/* Values outside their syntax or the type's table: encode refuses them all. */
static void encode_refuses_bad_values(void **state)
{
    (void)state;
    struct kf_mfg_record r;
    kf_buf out;
    assert_int_equal(kf_buf_alloc(&out, 0, 16u << 20, 0), KF_OK);
#define REFUSED(type, opt, change)                                                                 \
    do {                                                                                           \
        sample(type, opt, &r);                                                                     \
        assert_int_equal(kf_mfg_record_encode(&r, &out), KF_OK);                                   \
        kf_buf_reset(&out);                                                                        \
        change;                                                                                    \
        assert_int_equal(kf_mfg_record_encode(&r, &out), KF_ERR_ARG);                              \
        assert_int_equal(out.len, 0); /* a refusal writes nothing */                               \
    } while (0)
    REFUSED(KF_MFG_REC_ARCHIVE_NEW, false, r.status = KF_MFG_INSTALLED);
    REFUSED(KF_MFG_REC_ARCHIVE_NEW, false, r.status = 0);
    REFUSED(KF_MFG_REC_ARCHIVE_NEW, false, r.status = 99);
    REFUSED(KF_MFG_REC_INSTALLED, false, r.status = KF_MFG_BAD);
    REFUSED(KF_MFG_REC_INSTALL_FAILED, false, r.status = KF_MFG_INSTALLED);
    REFUSED(KF_MFG_REC_CONFIRM_INSTALLED, false, r.status = KF_MFG_ACTIVE);
    REFUSED(KF_MFG_REC_CONFIRM_INSTALLED, false, r.status = KF_MFG_BAD); /* Bad needs a reason */
    REFUSED(KF_MFG_REC_CONFIRM_INSTALLED, true, r.status = KF_MFG_INSTALLED); /* reason iff Bad */
    REFUSED(KF_MFG_REC_CONFIRM_REGISTERED, false, r.status = KF_MFG_OBSOLETE);
    REFUSED(KF_MFG_REC_INSTALL_FAILED, false, r.reason = 0);
    REFUSED(KF_MFG_REC_INSTALL_FAILED, false, r.reason = 5);
    REFUSED(KF_MFG_REC_ARCHIVE_NEW, false, strcpy(r.role_id, STEEL_ID)); /* RoleId is Oak's */
    REFUSED(KF_MFG_REC_ARCHIVE_NEW, false, strcpy(r.role_id, "O00000000"));
    REFUSED(KF_MFG_REC_ARCHIVE_NEW, false, strcpy(r.steel_id, OAK_ID));
    REFUSED(KF_MFG_REC_ARCHIVE_NEW, false, memset(r.steel_id, 'S', sizeof(r.steel_id)));
    REFUSED(KF_MFG_REC_TOKEN_KEYS, false, strcpy(r.role_id, BRASS_ID));  /* RoleId is a Tin */
    REFUSED(KF_MFG_REC_ROLE_CERT, false, r.role_type = KF_MFG_ROLE_OAK); /* letter S */
    REFUSED(KF_MFG_REC_ROLE_CERT, false, (strcpy(r.role_id, "X00000001")));
    REFUSED(KF_MFG_REC_ROLE_CERT, false, (r.role_type = 6, strcpy(r.role_id, "X00000001")));
    REFUSED(KF_MFG_REC_ARCHIVE_NEW, false, r.key_id = 0);
    REFUSED(KF_MFG_REC_ARCHIVE_NEW, false, r.key_id = (uint64_t)INT64_MAX + 1);
    REFUSED(KF_MFG_REC_ARCHIVE_NEW, false, strcpy(r.domain, "VEN DOR"));
    REFUSED(KF_MFG_REC_ARCHIVE_NEW, false, strcpy(r.domain, ""));
    REFUSED(KF_MFG_REC_ARCHIVE_NEW, false, strcpy(r.domain, "VENDOR/202601"));
    REFUSED(KF_MFG_REC_ARCHIVE_NEW, false, memset(r.domain, 'A', sizeof(r.domain)));
    REFUSED(KF_MFG_REC_INSTALLED, false, strcpy(r.msn, "msn"));
    REFUSED(KF_MFG_REC_INSTALLED, false, strcpy(r.msn, ""));
    REFUSED(KF_MFG_REC_INSTALLED, false, memset(r.msn, 'A', sizeof(r.msn)));
    REFUSED(KF_MFG_REC_ARCHIVE_REGISTERED, false, strcpy(r.indicia, "a"));
    REFUSED(KF_MFG_REC_ARCHIVE_REGISTERED, false, strcpy(r.country, "D"));
    REFUSED(KF_MFG_REC_ARCHIVE_REGISTERED, false, strcpy(r.country, "de"));
    REFUSED(KF_MFG_REC_ARCHIVE_REGISTERED, false, memset(r.country, 'D', sizeof(r.country)));
    REFUSED(KF_MFG_REC_TOKEN_KEYS, false, r.period_first = 202613);
    REFUSED(KF_MFG_REC_TOKEN_KEYS, false, r.period_last = 202600);
    REFUSED(KF_MFG_REC_TOKEN_KEYS, false, r.period_first = 196912);
    REFUSED(KF_MFG_REC_TOKEN_KEYS, false, (r.period_first = 202604, r.period_last = 202603));
    REFUSED(KF_MFG_REC_TOKEN_KEYS, false, r.period_last = 202602); /* an entry outside it */
    REFUSED(KF_MFG_REC_TOKEN_KEYS, false, r.table_len -= 1);       /* not n x 116 */
    REFUSED(KF_MFG_REC_TOKEN_KEYS, false, r.table = NULL);
    REFUSED(KF_MFG_REC_TOKEN_KEYS, false, sample_table[KF_MFG_TOKEN_KEY_ENTRY_LEN] = 'a');
#undef REFUSED
    kf_buf_free(&out);
}

/* A TokenKeys body may pass 64 KiB, not 8 MiB; an empty table is a table. */
static void token_keys_size_limits(void **state)
{
    (void)state;
    struct kf_mfg_record r, got;
    kf_buf out;
    const size_t big = 8u * 1024 * 1024 / KF_MFG_TOKEN_KEY_ENTRY_LEN + 1;
    uint8_t *table = malloc(big * KF_MFG_TOKEN_KEY_ENTRY_LEN);
    assert_non_null(table);
    sample(KF_MFG_REC_TOKEN_KEYS, false, &r);
    for (size_t i = 0; i < big; i++)
        memcpy(table + i * KF_MFG_TOKEN_KEY_ENTRY_LEN, sample_table, KF_MFG_TOKEN_KEY_ENTRY_LEN);
    r.table = table;

    r.table_len = 600 * KF_MFG_TOKEN_KEY_ENTRY_LEN; /* 69,600 bytes */
    encode(&r, &out);
    assert_true(out.len > KF_MFG_BODY_MAX);
    assert_int_equal(kf_mfg_record_decode(out.data, out.len, 0, &got), KF_OK);
    assert_int_equal(got.table_len, r.table_len);
    kf_buf_free(&out);

    /* the largest table that fits, and one entry more */
    size_t fit = (KF_MFG_TOKEN_KEYS_MAX - 256) / KF_MFG_TOKEN_KEY_ENTRY_LEN;
    r.table_len = fit * KF_MFG_TOKEN_KEY_ENTRY_LEN;
    encode(&r, &out);
    assert_true(out.len <= KF_MFG_TOKEN_KEYS_MAX);
    assert_int_equal(kf_mfg_record_decode(out.data, out.len, 0, &got), KF_OK);
    kf_buf_free(&out);
    r.table_len = big * KF_MFG_TOKEN_KEY_ENTRY_LEN;
    assert_int_equal(kf_buf_alloc(&out, 0, 16u << 20, 0), KF_OK);
    assert_int_equal(kf_mfg_record_encode(&r, &out), KF_ERR_ARG);
    assert_int_equal(out.len, 0);
    /* built by hand, it is refused by the decoder */
    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 32u << 20), KF_OK);
    kf_ttlv *root = kf_ttlv_struct(a, NULL, KMIP_TAG_KEYFLEET_MFG_RECORD);
    assert_non_null(
        kf_ttlv_add_enum(a, root, KMIP_TAG_KEYFLEET_RECORD_TYPE, KF_MFG_REC_TOKEN_KEYS));
    assert_non_null(kf_ttlv_add_text(a, root, KMIP_TAG_KEYFLEET_DOMAIN, DOMAIN));
    assert_non_null(kf_ttlv_add_text(a, root, KMIP_TAG_KEYFLEET_ROLE_ID, TIN_ID));
    assert_non_null(kf_ttlv_add_int(a, root, KMIP_TAG_KEYFLEET_PERIOD_FIRST, 202601));
    assert_non_null(kf_ttlv_add_int(a, root, KMIP_TAG_KEYFLEET_PERIOD_LAST, 202603));
    assert_non_null(
        kf_ttlv_add_bytes(a, root, KMIP_TAG_KEYFLEET_TOKEN_KEY_TABLE, table, r.table_len));
    assert_int_equal(kf_ttlv_encode(root, &out), KF_OK);
    assert_true(out.len > KF_MFG_TOKEN_KEYS_MAX);
    assert_int_equal(kf_mfg_record_decode(out.data, out.len, 0, &got), KF_ERR_MFG_FRAMING);
    kf_arena_free(a);
    kf_buf_free(&out);

    r.table_len = 0;
    encode(&r, &out);
    assert_int_equal(kf_mfg_record_decode(out.data, out.len, 0, &got), KF_OK);
    assert_int_equal(got.table_len, 0);
    kf_buf_free(&out);
    free(table);
}

/* ---- refusals, by taking a valid body apart ---- */

#define MAX_ITEMS 32
struct items {
    kf_arena *a;
    kf_ttlv *v[MAX_ITEMS];
    size_t n;
};

static void items_of(uint32_t type, bool opt, struct items *it)
{
    struct kf_mfg_record r;
    sample(type, opt, &r);
    kf_buf body;
    encode(&r, &body);
    assert_int_equal(kf_arena_new(&it->a, 0), KF_OK);
    kf_ttlv *root;
    assert_int_equal(kf_ttlv_decode(body.data, body.len, NULL, it->a, &root), KF_OK);
    it->n = 0;
    for (kf_ttlv *c = root->child; c; c = c->next)
        it->v[it->n++] = c;
    kf_buf_free(&body);
}

/* Rebuild a KeyfleetMfgRecord from the item list and decode it. */
static int decode_items(kf_arena *a, kf_ttlv *const *v, size_t n, uint32_t expect)
{
    kf_ttlv *root = kf_ttlv_struct(a, NULL, KMIP_TAG_KEYFLEET_MFG_RECORD);
    assert_non_null(root);
    for (size_t i = 0; i < n; i++) {
        kf_ttlv *c = kf_arena_alloc(a, sizeof(*c));
        assert_non_null(c);
        *c = *v[i];
        c->next = NULL;
        assert_int_equal(kf_ttlv_append(root, c), KF_OK);
    }
    kf_buf out;
    assert_int_equal(kf_buf_alloc(&out, 0, 16u << 20, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(root, &out), KF_OK);
    struct kf_mfg_record r;
    int rc = kf_mfg_record_decode(out.data, out.len, expect, &r);
    if (rc != KF_OK) { /* a refusal leaves nothing behind */
        struct kf_mfg_record zero;
        memset(&zero, 0, sizeof(zero));
        assert_memory_equal(&r, &zero, sizeof(r));
    }
    kf_buf_free(&out);
    return rc;
}

static size_t copy_without(const struct items *it, size_t skip, kf_ttlv **w)
{
    size_t n = 0;
    for (size_t i = 0; i < it->n; i++)
        if (i != skip)
            w[n++] = it->v[i];
    return n;
}

static bool optional_field(uint32_t type, uint32_t tag)
{
    return (type == KF_MFG_REC_ROLE_CERT && tag == KMIP_TAG_KEYFLEET_ENC_PUB) ||
           (type == KF_MFG_REC_INSTALL_FAILED && tag == KMIP_TAG_KEYFLEET_MSN);
}

static void decode_refuses_missing_fields(void **state)
{
    (void)state;
    for (uint32_t type = 1; type <= KF_MFG_REC_MAX; type++) {
        struct items it;
        kf_ttlv *w[MAX_ITEMS];
        items_of(type, true, &it);
        assert_int_equal(decode_items(it.a, it.v, it.n, 0), KF_OK); /* the harness itself */
        for (size_t skip = 0; skip < it.n; skip++) {
            size_t n = copy_without(&it, skip, w);
            int want = optional_field(type, it.v[skip]->tag) ? KF_OK : KF_ERR_MFG_FRAMING;
            assert_int_equal(decode_items(it.a, w, n, 0), want);
        }
        kf_arena_free(it.a);
    }
}

static void decode_refuses_duplicates_and_disorder(void **state)
{
    (void)state;
    for (uint32_t type = 1; type <= KF_MFG_REC_MAX; type++) {
        for (int opt = 0; opt < 2; opt++) {
            struct items it;
            kf_ttlv *w[MAX_ITEMS];
            items_of(type, opt, &it);
            /* each field twice, right after itself */
            for (size_t d = 0; d < it.n; d++) {
                size_t n = 0;
                for (size_t i = 0; i < it.n; i++) {
                    w[n++] = it.v[i];
                    if (i == d)
                        w[n++] = it.v[i];
                }
                assert_int_equal(decode_items(it.a, w, n, 0), KF_ERR_MFG_FRAMING);
            }
            /* each neighbouring pair swapped, and the first field moved to the end */
            for (size_t s = 0; s + 1 < it.n; s++) {
                memcpy(w, it.v, it.n * sizeof(w[0]));
                w[s] = it.v[s + 1];
                w[s + 1] = it.v[s];
                assert_int_equal(decode_items(it.a, w, it.n, 0), KF_ERR_MFG_FRAMING);
            }
            memcpy(w, it.v + 1, (it.n - 1) * sizeof(w[0]));
            w[it.n - 1] = it.v[0];
            assert_int_equal(decode_items(it.a, w, it.n, 0), KF_ERR_MFG_FRAMING);
            kf_arena_free(it.a);
        }
    }
}

/* Every field of any type, inserted anywhere into a type that does not allow it. */
static void decode_refuses_foreign_fields(void **state)
{
    (void)state;
    struct items all[KF_MFG_REC_MAX + 1];
    kf_ttlv *catalogue[64];
    size_t ncat = 0;
    for (uint32_t type = 1; type <= KF_MFG_REC_MAX; type++) {
        items_of(type, true, &all[type]);
        for (size_t i = 1; i < all[type].n; i++) {
            bool seen = false;
            for (size_t j = 0; j < ncat; j++)
                seen |= catalogue[j]->tag == all[type].v[i]->tag;
            if (!seen)
                catalogue[ncat++] = all[type].v[i];
        }
    }
    assert_int_equal(ncat, 19); /* every field of the table appears in some sample */
    kf_ttlv *unknown = kf_ttlv_add_text(all[1].a, NULL, KMIP_TAG_KEYFLEET_BACKEND, "x");
    catalogue[ncat++] = unknown;

    size_t refused = 0;
    for (uint32_t type = 1; type <= KF_MFG_REC_MAX; type++) {
        const struct items *it = &all[type];
        for (size_t c = 0; c < ncat; c++) {
            bool allowed = false;
            for (size_t i = 0; i < it->n; i++)
                allowed |= it->v[i]->tag == catalogue[c]->tag;
            if (allowed)
                continue;
            for (size_t at = 0; at <= it->n; at++) {
                kf_ttlv *w[MAX_ITEMS];
                size_t n = 0;
                for (size_t i = 0; i <= it->n; i++) {
                    if (i == at)
                        w[n++] = catalogue[c];
                    if (i < it->n)
                        w[n++] = it->v[i];
                }
                assert_int_equal(decode_items(it->a, w, n, 0), KF_ERR_MFG_FRAMING);
                refused++;
            }
        }
    }
    assert_true(refused > 11 * 10);
    for (uint32_t type = 1; type <= KF_MFG_REC_MAX; type++)
        kf_arena_free(all[type].a);
}

/* A copy of item i with another value, type or length. */
static kf_ttlv *replaced(kf_arena *a, const kf_ttlv *like, uint8_t type, const void *p, size_t len,
                         int64_t v)
{
    kf_ttlv *n;
    switch (type) {
    case KF_TTLV_TEXT:
        n = kf_ttlv_add_text_n(a, NULL, like->tag, p, len);
        break;
    case KF_TTLV_BYTES:
        n = kf_ttlv_add_bytes(a, NULL, like->tag, p, len);
        break;
    case KF_TTLV_ENUM:
        n = kf_ttlv_add_enum(a, NULL, like->tag, (uint32_t)v);
        break;
    case KF_TTLV_INTEGER:
        n = kf_ttlv_add_int(a, NULL, like->tag, (int32_t)v);
        break;
    case KF_TTLV_LONG:
        n = kf_ttlv_add_long(a, NULL, like->tag, v);
        break;
    case KF_TTLV_DATETIME:
        n = kf_ttlv_add_datetime(a, NULL, like->tag, v);
        break;
    default:
        n = kf_ttlv_add_bool(a, NULL, like->tag, true);
        break;
    }
    assert_non_null(n);
    return n;
}

static int decode_with(const struct items *it, size_t i, kf_ttlv *with)
{
    kf_ttlv *w[MAX_ITEMS];
    memcpy(w, it->v, it->n * sizeof(w[0]));
    w[i] = with;
    return decode_items(it->a, w, it->n, 0);
}

/* Every field with the wrong TTLV type; byte strings a byte short or long;
 * text empty or too long. */
static void decode_refuses_wrong_types_and_lengths(void **state)
{
    (void)state;
    static const uint8_t other_types[] = {KF_TTLV_TEXT,    KF_TTLV_BYTES, KF_TTLV_ENUM,
                                          KF_TTLV_INTEGER, KF_TTLV_LONG,  KF_TTLV_DATETIME,
                                          KF_TTLV_BOOL};
    uint8_t big[KF_MFG_TOKEN_KEY_ENTRY_LEN * NENTRIES + 1];
    memset(big, 'A', sizeof(big));
    for (uint32_t type = 1; type <= KF_MFG_REC_MAX; type++) {
        struct items it;
        items_of(type, true, &it);
        for (size_t i = 0; i < it.n; i++) {
            const kf_ttlv *n = it.v[i];
            for (size_t t = 0; t < sizeof(other_types); t++) {
                if (other_types[t] == n->type)
                    continue;
                /* a value that would be fine for the field's own type where it has one */
                kf_ttlv *w = replaced(it.a, n, other_types[t], "A", 1,
                                      n->type == KF_TTLV_ENUM ? n->v.u32 : 1);
                assert_int_equal(decode_with(&it, i, w), KF_ERR_MFG_FRAMING);
            }
            if (n->type == KF_TTLV_BYTES) {
                size_t len = n->v.bytes.len;
                assert_int_equal(
                    decode_with(&it, i, replaced(it.a, n, KF_TTLV_BYTES, n->v.bytes.p, len, 0)),
                    KF_OK);
                assert_int_equal(
                    decode_with(&it, i, replaced(it.a, n, KF_TTLV_BYTES, n->v.bytes.p, len - 1, 0)),
                    KF_ERR_MFG_FRAMING);
                assert_int_equal(
                    decode_with(&it, i, replaced(it.a, n, KF_TTLV_BYTES, big, len + 1, 0)),
                    KF_ERR_MFG_FRAMING);
                assert_int_equal(decode_with(&it, i, replaced(it.a, n, KF_TTLV_BYTES, big, 0, 0)),
                                 n->tag == KMIP_TAG_KEYFLEET_TOKEN_KEY_TABLE ? KF_OK
                                                                             : KF_ERR_MFG_FRAMING);
            }
            if (n->type == KF_TTLV_TEXT) {
                assert_int_equal(decode_with(&it, i, replaced(it.a, n, KF_TTLV_TEXT, "", 0, 0)),
                                 KF_ERR_MFG_FRAMING);
                assert_int_equal(decode_with(&it, i, replaced(it.a, n, KF_TTLV_TEXT, big, 65, 0)),
                                 KF_ERR_MFG_FRAMING);
                /* the same text with a NUL inside */
                char s[80];
                size_t len = n->v.bytes.len;
                memcpy(s, n->v.bytes.p, len);
                s[len - 1] = '\0';
                assert_int_equal(decode_with(&it, i, replaced(it.a, n, KF_TTLV_TEXT, s, len, 0)),
                                 KF_ERR_MFG_FRAMING);
            }
        }
        kf_arena_free(it.a);
    }
}

static size_t index_of(const struct items *it, uint32_t tag)
{
    for (size_t i = 0; i < it->n; i++)
        if (it->v[i]->tag == tag)
            return i;
    fail_msg("tag %06x not in the sample", tag);
    return 0;
}

static int decode_text(uint32_t type, bool opt, uint32_t tag, const char *s)
{
    struct items it;
    items_of(type, opt, &it);
    size_t i = index_of(&it, tag);
    int rc = decode_with(&it, i, replaced(it.a, it.v[i], KF_TTLV_TEXT, s, strlen(s), 0));
    kf_arena_free(it.a);
    return rc;
}

static int decode_number(uint32_t type, bool opt, uint32_t tag, int64_t v)
{
    struct items it;
    items_of(type, opt, &it);
    size_t i = index_of(&it, tag);
    int rc = decode_with(&it, i, replaced(it.a, it.v[i], it.v[i]->type, NULL, 0, v));
    kf_arena_free(it.a);
    return rc;
}

/* Values the encoder would refuse, smuggled into a body: the decoder refuses them too. */
static void decode_refuses_bad_values(void **state)
{
    (void)state;
    const uint32_t RT = KMIP_TAG_KEYFLEET_RECORD_TYPE, ST = KMIP_TAG_KEYFLEET_KEY_STATUS;
    const int F = KF_ERR_MFG_FRAMING;
    /* record type */
    assert_int_equal(decode_number(KF_MFG_REC_ROLE_CERT, false, RT, 0), F);
    assert_int_equal(decode_number(KF_MFG_REC_ROLE_CERT, false, RT, 12), F);
    assert_int_equal(decode_number(KF_MFG_REC_ARCHIVE_NEW, false, RT, KF_MFG_REC_DISTRIBUTE), F);
    /* KeyStatus by type: only the document's values pass */
    static const struct {
        uint32_t type;
        bool opt;
        uint32_t ok_mask;
    } st[] = {
        {KF_MFG_REC_ARCHIVE_NEW, false, 1u << KF_MFG_NEW},
        {KF_MFG_REC_DISTRIBUTE, false, 1u << KF_MFG_NEW},
        {KF_MFG_REC_INSTALLED, false, 1u << KF_MFG_INSTALLED},
        {KF_MFG_REC_INSTALL_FAILED, false, 1u << KF_MFG_BAD},
        {KF_MFG_REC_ARCHIVE_INSTALLED, false, 1u << KF_MFG_INSTALLED},
        {KF_MFG_REC_CONFIRM_INSTALLED, false, 1u << KF_MFG_INSTALLED}, /* without a reason */
        {KF_MFG_REC_CONFIRM_INSTALLED, true, 1u << KF_MFG_BAD},        /* with one */
        {KF_MFG_REC_ARCHIVE_REGISTERED, false, 1u << KF_MFG_ACTIVE},
        {KF_MFG_REC_CONFIRM_REGISTERED, false, 1u << KF_MFG_ACTIVE},
    };
    for (size_t i = 0; i < sizeof(st) / sizeof(st[0]); i++)
        for (int64_t s = 0; s <= 8; s++)
            assert_int_equal(decode_number(st[i].type, st[i].opt, ST, s),
                             (st[i].ok_mask >> s) & 1 ? KF_OK : F);
    /* role IDs: the role the type names */
    assert_int_equal(
        decode_text(KF_MFG_REC_ARCHIVE_NEW, false, KMIP_TAG_KEYFLEET_ROLE_ID, "O12345678"), KF_OK);
    assert_int_equal(
        decode_text(KF_MFG_REC_ARCHIVE_NEW, false, KMIP_TAG_KEYFLEET_ROLE_ID, BRASS_ID), F);
    assert_int_equal(decode_text(KF_MFG_REC_INSTALLED, false, KMIP_TAG_KEYFLEET_ROLE_ID, STEEL_ID),
                     F);
    assert_int_equal(
        decode_text(KF_MFG_REC_ARCHIVE_INSTALLED, false, KMIP_TAG_KEYFLEET_ROLE_ID, "O00000000"),
        F);
    assert_int_equal(decode_text(KF_MFG_REC_TOKEN_KEYS, false, KMIP_TAG_KEYFLEET_ROLE_ID, OAK_ID),
                     F);
    assert_int_equal(decode_text(KF_MFG_REC_ROLE_CERT, false, KMIP_TAG_KEYFLEET_ROLE_ID, TIN_ID),
                     F);
    assert_int_equal(
        decode_number(KF_MFG_REC_ROLE_CERT, false, KMIP_TAG_KEYFLEET_ROLE_TYPE, KF_MFG_ROLE_TIN),
        F);
    assert_int_equal(decode_number(KF_MFG_REC_ROLE_CERT, false, KMIP_TAG_KEYFLEET_ROLE_TYPE, 0), F);
    assert_int_equal(
        decode_text(KF_MFG_REC_DISTRIBUTE, false, KMIP_TAG_KEYFLEET_STEEL_ID, "S00000001"), KF_OK);
    assert_int_equal(decode_text(KF_MFG_REC_DISTRIBUTE, false, KMIP_TAG_KEYFLEET_STEEL_ID, TIN_ID),
                     F);
    assert_int_equal(
        decode_text(KF_MFG_REC_DISTRIBUTE, false, KMIP_TAG_KEYFLEET_STEEL_ID, "s00000042"), F);
    /* text syntax */
    const uint32_t D = KMIP_TAG_KEYFLEET_DOMAIN, M = KMIP_TAG_KEYFLEET_MSN;
    assert_int_equal(decode_text(KF_MFG_REC_TRANSFER, false, D, "a.b_c-D9"), KF_OK);
    assert_int_equal(decode_text(KF_MFG_REC_TRANSFER, false, D, "a/b"), F);
    assert_int_equal(decode_text(KF_MFG_REC_TRANSFER, false, D, "a b"), F);
    assert_int_equal(decode_text(KF_MFG_REC_TRANSFER, false, D, "\xc3\xa9t\xc3\xa9"), F);
    char d64[65];
    memset(d64, 'd', 64);
    d64[64] = '\0';
    assert_int_equal(decode_text(KF_MFG_REC_TRANSFER, false, D, d64), KF_OK);
    assert_int_equal(decode_text(KF_MFG_REC_INSTALLED, false, M, "0123456789ABCDEF"), KF_OK);
    assert_int_equal(decode_text(KF_MFG_REC_INSTALLED, false, M, "0123456789ABCDEFG"), F);
    assert_int_equal(decode_text(KF_MFG_REC_INSTALLED, false, M, "Msn"), F);
    assert_int_equal(decode_text(KF_MFG_REC_INSTALLED, false, M, "MSN 1"), F);
    assert_int_equal(
        decode_text(KF_MFG_REC_ARCHIVE_REGISTERED, false, KMIP_TAG_KEYFLEET_INDICIA, "I_1"), F);
    assert_int_equal(
        decode_text(KF_MFG_REC_ARCHIVE_REGISTERED, false, KMIP_TAG_KEYFLEET_COUNTRY, "GB"), KF_OK);
    assert_int_equal(
        decode_text(KF_MFG_REC_ARCHIVE_REGISTERED, false, KMIP_TAG_KEYFLEET_COUNTRY, "G1"), F);
    assert_int_equal(
        decode_text(KF_MFG_REC_CONFIRM_REGISTERED, false, KMIP_TAG_KEYFLEET_COUNTRY, "GBR"), F);
    /* numbers */
    const uint32_t K = KMIP_TAG_KEYFLEET_KEY_ID, R = KMIP_TAG_KEYFLEET_REASON;
    assert_int_equal(decode_number(KF_MFG_REC_ARCHIVE_NEW, false, K, 1), KF_OK);
    assert_int_equal(decode_number(KF_MFG_REC_ARCHIVE_NEW, false, K, INT64_MAX), KF_OK);
    assert_int_equal(decode_number(KF_MFG_REC_ARCHIVE_NEW, false, K, 0), F);
    assert_int_equal(decode_number(KF_MFG_REC_ARCHIVE_NEW, false, K, -1), F);
    assert_int_equal(decode_number(KF_MFG_REC_INSTALL_FAILED, false, R, KF_ERR_MFG_WRITE), KF_OK);
    assert_int_equal(decode_number(KF_MFG_REC_INSTALL_FAILED, false, R, 0), F);
    assert_int_equal(decode_number(KF_MFG_REC_INSTALL_FAILED, false, R, 3), F);
    const uint32_t PF = KMIP_TAG_KEYFLEET_PERIOD_FIRST, PL = KMIP_TAG_KEYFLEET_PERIOD_LAST;
    assert_int_equal(decode_number(KF_MFG_REC_TOKEN_KEYS, false, PF, 202512), KF_OK);
    assert_int_equal(decode_number(KF_MFG_REC_TOKEN_KEYS, false, PL, 202712), KF_OK);
    assert_int_equal(decode_number(KF_MFG_REC_TOKEN_KEYS, false, PF, 202513), F);
    assert_int_equal(decode_number(KF_MFG_REC_TOKEN_KEYS, false, PF, 202600), F);
    assert_int_equal(decode_number(KF_MFG_REC_TOKEN_KEYS, false, PF, -202601), F);
    assert_int_equal(decode_number(KF_MFG_REC_TOKEN_KEYS, false, PF, 202602), F); /* entry 202601 */
    assert_int_equal(decode_number(KF_MFG_REC_TOKEN_KEYS, false, PL, 202602), F); /* entry 202603 */
    assert_int_equal(decode_number(KF_MFG_REC_TOKEN_KEYS, false, PL, 202512), F); /* last < first */
    /* a table whose second entry has a bad MSN */
    struct items it;
    items_of(KF_MFG_REC_TOKEN_KEYS, false, &it);
    size_t ti = index_of(&it, KMIP_TAG_KEYFLEET_TOKEN_KEY_TABLE);
    uint8_t t2[sizeof(sample_table)];
    memcpy(t2, sample_table, sizeof(t2));
    t2[KF_MFG_TOKEN_KEY_ENTRY_LEN] = ' ';
    assert_int_equal(
        decode_with(&it, ti, replaced(it.a, it.v[ti], KF_TTLV_BYTES, t2, sizeof(t2), 0)), F);
    kf_arena_free(it.a);
}

/* Root and framing: wrong root tag or type, trailing bytes, truncation, limits. */
static void decode_refuses_bad_framing(void **state)
{
    (void)state;
    struct kf_mfg_record r, got;
    kf_buf body;
    sample(KF_MFG_REC_ARCHIVE_NEW, false, &r);
    encode(&r, &body);
    uint8_t copy[1024];
    assert_true(body.len + 8 <= sizeof(copy));
    memcpy(copy, body.data, body.len);
    for (size_t n = 0; n < body.len; n++)
        assert_int_equal(kf_mfg_record_decode(copy, n, 0, &got), KF_ERR_MFG_FRAMING);
    memset(copy + body.len, 0, 8);
    assert_int_equal(kf_mfg_record_decode(copy, body.len + 8, 0, &got), KF_ERR_MFG_FRAMING);
    copy[2] = 0x01; /* root tag KeyfleetSignedRecord */
    assert_int_equal(kf_mfg_record_decode(copy, body.len, 0, &got), KF_ERR_MFG_FRAMING);
    assert_int_equal(kf_mfg_record_decode(NULL, 0, 0, &got), KF_ERR_MFG_FRAMING);
    assert_int_equal(kf_mfg_record_decode(body.data, body.len, 0, NULL), KF_ERR_ARG);

    /* an empty record, and one nested a level down */
    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    kf_ttlv *root = kf_ttlv_struct(a, NULL, KMIP_TAG_KEYFLEET_MFG_RECORD);
    kf_buf out;
    assert_int_equal(kf_buf_alloc(&out, 0, 4096, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(root, &out), KF_OK);
    assert_int_equal(kf_mfg_record_decode(out.data, out.len, 0, &got), KF_ERR_MFG_FRAMING);
    kf_buf_reset(&out);
    kf_ttlv *outer = kf_ttlv_struct(a, NULL, KMIP_TAG_KEYFLEET_MFG_RECORD);
    kf_ttlv *inner = kf_ttlv_struct(a, outer, KMIP_TAG_KEYFLEET_MFG_RECORD);
    assert_int_equal(kf_ttlv_decode(body.data, body.len, NULL, a, &root), KF_OK);
    inner->child = root->child;
    inner->last_child = root->last_child;
    inner->nchildren = root->nchildren;
    assert_int_equal(kf_ttlv_encode(outer, &out), KF_OK);
    assert_int_equal(kf_mfg_record_decode(out.data, out.len, 0, &got), KF_ERR_MFG_FRAMING);
    kf_buf_free(&out);
    kf_arena_free(a);
    kf_buf_free(&body);
}

/* ---- the envelope ---- */

/* An envelope built here from parts, signed over the document's input. */
static void make_envelope(uint32_t env_type, uint32_t sig_type, const uint8_t *body, size_t len,
                          const char *signer, void (*priv_fn)(uint8_t[32]), kf_buf *out)
{
    uint8_t priv[32], sig[64];
    priv_fn(priv);
    kf_buf input;
    assert_int_equal(kf_buf_alloc(&input, 0, 16u << 20, 0), KF_OK);
    assert_int_equal(kf_buf_put_bytes(&input, "keyfleet-mfg-v1", 16), KF_OK);
    assert_int_equal(kf_buf_put_u32(&input, sig_type), KF_OK);
    assert_int_equal(kf_buf_put_bytes(&input, signer, strlen(signer)), KF_OK);
    assert_int_equal(kf_buf_put_bytes(&input, body, len), KF_OK);
    assert_int_equal(kf_ed25519_sign(priv, input.data, input.len, sig), KF_OK);
    kf_buf_free(&input);
    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    kf_ttlv *root = kf_ttlv_struct(a, NULL, KMIP_TAG_KEYFLEET_SIGNED_RECORD);
    assert_non_null(kf_ttlv_add_enum(a, root, KMIP_TAG_KEYFLEET_RECORD_TYPE, env_type));
    assert_non_null(kf_ttlv_add_bytes(a, root, KMIP_TAG_KEYFLEET_RECORD_BODY, body, len));
    assert_non_null(kf_ttlv_add_text(a, root, KMIP_TAG_KEYFLEET_ROLE_ID, signer));
    assert_non_null(kf_ttlv_add_bytes(a, root, KMIP_TAG_KEYFLEET_SIGNATURE, sig, 64));
    assert_int_equal(kf_buf_alloc(out, 0, 16u << 20, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(root, out), KF_OK);
    kf_arena_free(a);
}

static void envelope_signed_by_the_document(void **state)
{
    (void)state;
    uint8_t apub[32];
    pub_of(authority_priv, apub);
    struct kf_mfg_record r, got;
    kf_buf body, env, mine;
    sample(KF_MFG_REC_DISTRIBUTE, false, &r);
    encode(&r, &body);
    /* built here, it opens; and is the very envelope kf_mfg_record_sign makes
     * (Ed25519 is deterministic) */
    make_envelope(KF_MFG_REC_DISTRIBUTE, KF_MFG_REC_DISTRIBUTE, body.data, body.len, AUTH_ID,
                  authority_priv, &env);
    assert_int_equal(kf_mfg_record_open(env.data, env.len, apub, 0, &got), KF_OK);
    assert_same_record(&r, &got);
    sign(&r, authority_priv, &mine);
    assert_int_equal(mine.len, env.len);
    assert_memory_equal(mine.data, env.data, env.len);
    kf_buf_free(&env);
    kf_buf_free(&mine);

    /* the envelope says Installed, the body Distribute: refused, though the signature holds */
    make_envelope(KF_MFG_REC_INSTALLED, KF_MFG_REC_INSTALLED, body.data, body.len, AUTH_ID,
                  authority_priv, &env);
    struct kf_mfg_envelope e;
    assert_int_equal(kf_mfg_envelope_parse(env.data, env.len, &e, NULL), KF_OK);
    assert_int_equal(kf_mfg_envelope_verify(&e, apub), KF_OK);
    assert_int_equal(kf_mfg_record_open(env.data, env.len, apub, 0, &got), KF_ERR_MFG_FRAMING);
    assert_int_equal(got.type, 0);
    kf_buf_free(&env);
    /* signed over another type than the envelope names */
    make_envelope(KF_MFG_REC_DISTRIBUTE, KF_MFG_REC_INSTALLED, body.data, body.len, AUTH_ID,
                  authority_priv, &env);
    assert_int_equal(kf_mfg_record_open(env.data, env.len, apub, 0, &got), KF_ERR_BAD_SIGNATURE);
    kf_buf_free(&env);
    kf_buf_free(&body);
}

static void envelope_wrong_key_is_bad_signature(void **state)
{
    (void)state;
    uint8_t apub[32], opub[32];
    pub_of(authority_priv, apub);
    pub_of(other_priv, opub);
    for (uint32_t type = 1; type <= KF_MFG_REC_MAX; type++) {
        struct kf_mfg_record r, got;
        kf_buf env;
        sample(type, true, &r);
        sign(&r, other_priv, &env);
        assert_int_equal(kf_mfg_record_open(env.data, env.len, apub, 0, &got),
                         KF_ERR_BAD_SIGNATURE);
        assert_int_equal(got.type, 0);
        assert_int_equal(kf_mfg_record_open(env.data, env.len, opub, 0, &got), KF_OK);
        kf_buf_free(&env);
    }
}

/*
 * Every byte of every type's envelope, changed: never accepted. The signature
 * covers the type, the signer's role ID and the body, so renaming the signer
 * to another well-formed role ID is refused too.
 */
static void envelope_every_flipped_byte_is_refused(void **state)
{
    (void)state;
    uint8_t apub[32];
    pub_of(authority_priv, apub);
    static const uint8_t masks[] = {0x01, 0x80, 0xFF};
    for (uint32_t type = 1; type <= KF_MFG_REC_MAX; type++) {
        struct kf_mfg_record r, got;
        kf_buf env;
        sample(type, true, &r);
        sign(&r, authority_priv, &env);
        for (size_t i = 0; i < env.len; i++) {
            for (size_t m = 0; m < sizeof(masks); m++) {
                env.data[i] ^= masks[m];
                int rc = kf_mfg_record_open(env.data, env.len, apub, 0, &got);
                if (rc == KF_OK)
                    fail_msg("type %u byte %zu ^ %02x accepted", type, i, masks[m]);
                else if (rc != KF_ERR_MFG_FRAMING && rc != KF_ERR_BAD_SIGNATURE)
                    fail_msg("type %u byte %zu ^ %02x: %d", type, i, masks[m], rc);
                env.data[i] ^= masks[m];
            }
        }
        assert_int_equal(kf_mfg_record_open(env.data, env.len, apub, 0, &got), KF_OK);
        kf_buf_free(&env);
    }
}

static void envelope_parse_refusals(void **state)
{
    (void)state;
    uint8_t apub[32];
    pub_of(authority_priv, apub);
    struct kf_mfg_record r, got;
    struct kf_mfg_envelope e;
    size_t used;
    kf_buf body, env;
    const int F = KF_ERR_MFG_FRAMING;
    sample(KF_MFG_REC_ARCHIVE_NEW, false, &r);
    encode(&r, &body);
    sign(&r, authority_priv, &env);

    /* every truncation; trailing bytes parse (used says where it ends) but do not open */
    for (size_t n = 0; n < env.len; n++)
        assert_int_equal(kf_mfg_envelope_parse(env.data, n, &e, &used), F);
    assert_int_equal(kf_buf_put_zeros(&env, 8), KF_OK);
    assert_int_equal(kf_mfg_envelope_parse(env.data, env.len, &e, &used), KF_OK);
    assert_int_equal(used, env.len - 8);
    assert_int_equal(kf_mfg_record_open(env.data, env.len, apub, 0, &got), F);
    kf_buf_free(&env);

    /* signer IDs, types and lengths */
    static const char *const bad_signers[] = {"O00000000", "o00000001",  "X00000001",
                                              "O0000001",  "O000000001", ""};
    for (size_t i = 0; i < sizeof(bad_signers) / sizeof(bad_signers[0]); i++) {
        make_envelope(2, 2, body.data, body.len, bad_signers[i], authority_priv, &env);
        assert_int_equal(kf_mfg_envelope_parse(env.data, env.len, &e, &used), F);
        kf_buf_free(&env);
    }
    make_envelope(0, 0, body.data, body.len, OAK_ID, authority_priv, &env);
    assert_int_equal(kf_mfg_envelope_parse(env.data, env.len, &e, &used), F);
    kf_buf_free(&env);
    make_envelope(12, 12, body.data, body.len, OAK_ID, authority_priv, &env);
    assert_int_equal(kf_mfg_envelope_parse(env.data, env.len, &e, &used), F);
    kf_buf_free(&env);
    make_envelope(2, 2, body.data, 7, OAK_ID, authority_priv, &env); /* shorter than a header */
    assert_int_equal(kf_mfg_envelope_parse(env.data, env.len, &e, &used), F);
    kf_buf_free(&env);

    /* a RoleCert envelope may not carry a body over 64 KiB; a TokenKeys one may */
    uint8_t *big = calloc(1, KF_MFG_BODY_MAX + 8);
    assert_non_null(big);
    make_envelope(KF_MFG_REC_ROLE_CERT, 1, big, KF_MFG_BODY_MAX + 8, OAK_ID, authority_priv, &env);
    assert_int_equal(kf_mfg_envelope_parse(env.data, env.len, &e, &used), F);
    kf_buf_free(&env);
    make_envelope(KF_MFG_REC_TOKEN_KEYS, 11, big, KF_MFG_BODY_MAX + 8, OAK_ID, authority_priv,
                  &env);
    assert_int_equal(kf_mfg_envelope_parse(env.data, env.len, &e, &used), KF_OK);
    assert_int_equal(e.body_len, KF_MFG_BODY_MAX + 8);
    assert_int_equal(kf_mfg_envelope_verify(&e, apub), KF_OK);
    assert_int_equal(kf_mfg_record_open(env.data, env.len, apub, 0, &got),
                     F); /* zeros are no body */
    kf_buf_free(&env);
    free(big);

    /* structure: signature length, an item missing, one extra, two swapped, another root */
    kf_arena *a;
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    uint8_t sig[65] = {0};
    for (int variant = 0; variant < 7; variant++) {
        kf_ttlv *root = kf_ttlv_struct(
            a, NULL, variant == 6 ? KMIP_TAG_KEYFLEET_MFG_RECORD : KMIP_TAG_KEYFLEET_SIGNED_RECORD);
        if (variant != 2)
            assert_non_null(kf_ttlv_add_enum(a, root, KMIP_TAG_KEYFLEET_RECORD_TYPE, 2));
        if (variant == 4)
            assert_non_null(kf_ttlv_add_text(a, root, KMIP_TAG_KEYFLEET_ROLE_ID, OAK_ID));
        assert_non_null(
            kf_ttlv_add_bytes(a, root, KMIP_TAG_KEYFLEET_RECORD_BODY, body.data, body.len));
        if (variant != 4)
            assert_non_null(kf_ttlv_add_text(a, root, KMIP_TAG_KEYFLEET_ROLE_ID, OAK_ID));
        size_t sig_len = variant == 0 ? 63 : variant == 1 ? 65 : 64;
        assert_non_null(kf_ttlv_add_bytes(a, root, KMIP_TAG_KEYFLEET_SIGNATURE, sig, sig_len));
        if (variant == 3)
            assert_non_null(kf_ttlv_add_bytes(a, root, KMIP_TAG_KEYFLEET_SIGNATURE, sig, 64));
        if (variant == 5)
            assert_non_null(kf_ttlv_add_int(a, root, KMIP_TAG_KEYFLEET_REASON, -1));
        assert_int_equal(kf_buf_alloc(&env, 0, 4096, 0), KF_OK);
        assert_int_equal(kf_ttlv_encode(root, &env), KF_OK);
        assert_int_equal(kf_mfg_envelope_parse(env.data, env.len, &e, &used), F);
        assert_int_equal(e.type, 0);
        assert_null(e.body);
        kf_buf_free(&env);
    }
    kf_arena_free(a);
    kf_buf_free(&body);
}

static void envelopes_back_to_back(void **state)
{
    (void)state;
    uint8_t apub[32];
    pub_of(authority_priv, apub);
    static const uint32_t types[] = {KF_MFG_REC_ARCHIVE_NEW, KF_MFG_REC_TOKEN_KEYS,
                                     KF_MFG_REC_CONFIRM_INSTALLED, KF_MFG_REC_ROLE_CERT};
    kf_buf all;
    assert_int_equal(kf_buf_alloc(&all, 0, 1u << 20, 0), KF_OK);
    for (size_t i = 0; i < 4; i++) {
        struct kf_mfg_record r;
        sample(types[i], i % 2, &r);
        uint8_t priv[32];
        authority_priv(priv);
        assert_int_equal(kf_mfg_record_sign(&r, AUTH_ID, priv, &all), KF_OK);
    }
    kf_buf in;
    kf_buf_reader(&in, all.data, all.len);
    for (size_t i = 0; i < 4; i++) {
        struct kf_mfg_envelope e;
        struct kf_mfg_record got, want;
        size_t used;
        const uint8_t *msg = kf_buf_read_ptr(&in);
        assert_int_equal(kf_mfg_envelope_parse(msg, kf_buf_remaining(&in), &e, &used), KF_OK);
        assert_int_equal(e.type, types[i]);
        assert_int_equal(kf_mfg_envelope_verify(&e, apub), KF_OK);
        assert_int_equal(kf_mfg_record_decode(e.body, e.body_len, e.type, &got), KF_OK);
        sample(types[i], i % 2, &want);
        assert_same_record(&want, &got);
        assert_int_equal(kf_mfg_record_open(msg, used, apub, types[i], &got), KF_OK);
        assert_int_equal(kf_buf_skip(&in, used), KF_OK);
    }
    assert_int_equal(kf_buf_remaining(&in), 0);
    kf_buf_free(&all);
}

static void sign_refuses_bad_arguments(void **state)
{
    (void)state;
    uint8_t priv[32];
    authority_priv(priv);
    struct kf_mfg_record r;
    kf_buf out;
    assert_int_equal(kf_buf_alloc(&out, 0, 4096, 0), KF_OK);
    sample(KF_MFG_REC_ROLE_CERT, false, &r);
    assert_int_equal(kf_mfg_record_sign(&r, "M0000001", priv, &out), KF_ERR_ARG);
    assert_int_equal(kf_mfg_record_sign(&r, NULL, priv, &out), KF_ERR_ARG);
    assert_int_equal(kf_mfg_record_sign(&r, AUTH_ID, NULL, &out), KF_ERR_ARG);
    r.fields &= ~KF_MFG_F_DOMAIN;
    assert_int_equal(kf_mfg_record_sign(&r, AUTH_ID, priv, &out), KF_ERR_ARG);
    assert_int_equal(out.len, 0);
    /* too small an output buffer: refused, no partial write is claimed as success */
    uint8_t tiny[64];
    kf_buf small;
    kf_buf_fixed(&small, tiny, sizeof(tiny));
    sample(KF_MFG_REC_ROLE_CERT, false, &r);
    assert_int_not_equal(kf_mfg_record_sign(&r, AUTH_ID, priv, &small), KF_OK);
    kf_buf_free(&out);
}

/* ---- role certificates ---- */

static void role_certificates(void **state)
{
    (void)state;
    uint8_t apub[32], opub[32];
    pub_of(authority_priv, apub);
    pub_of(other_priv, opub);
    struct kf_mfg_record r, got;
    kf_buf cert;
    sample(KF_MFG_REC_ROLE_CERT, true, &r);
    sign(&r, authority_priv, &cert);
    assert_int_equal(kf_mfg_cert_check(cert.data, cert.len, apub, DOMAIN, KF_MFG_ROLE_STEEL, &got),
                     KF_OK);
    assert_same_record(&r, &got);
    assert_int_equal(kf_mfg_cert_check(cert.data, cert.len, apub, DOMAIN, 0, &got), KF_OK);
    assert_int_equal(kf_mfg_cert_check(cert.data, cert.len, apub, DOMAIN, 0, NULL), KF_OK);
    /* another domain (names are exact), another role type, another authority */
    assert_int_equal(kf_mfg_cert_check(cert.data, cert.len, apub, "DE", 0, &got), KF_ERR_MFG_ROLE);
    assert_int_equal(got.type, 0);
    assert_int_equal(kf_mfg_cert_check(cert.data, cert.len, apub, "vendor", 0, &got),
                     KF_ERR_MFG_ROLE);
    assert_int_equal(kf_mfg_cert_check(cert.data, cert.len, apub, "VENDOR2", 0, &got),
                     KF_ERR_MFG_ROLE);
    assert_int_equal(kf_mfg_cert_check(cert.data, cert.len, apub, DOMAIN, KF_MFG_ROLE_TIN, &got),
                     KF_ERR_MFG_ROLE);
    assert_int_equal(kf_mfg_cert_check(cert.data, cert.len, apub, DOMAIN, KF_MFG_ROLE_OAK, &got),
                     KF_ERR_MFG_ROLE);
    assert_int_equal(kf_mfg_cert_check(cert.data, cert.len, opub, DOMAIN, 0, &got),
                     KF_ERR_BAD_SIGNATURE);
    cert.data[cert.len - 1] ^= 1;
    assert_int_equal(kf_mfg_cert_check(cert.data, cert.len, apub, DOMAIN, 0, &got),
                     KF_ERR_BAD_SIGNATURE);
    assert_int_equal(kf_mfg_cert_check(cert.data, cert.len, apub, NULL, 0, &got), KF_ERR_ARG);
    kf_buf_free(&cert);
    /* a record of another type signed by the authority certifies nothing */
    sample(KF_MFG_REC_ARCHIVE_NEW, false, &r);
    sign(&r, authority_priv, &cert);
    assert_int_equal(kf_mfg_cert_check(cert.data, cert.len, apub, DOMAIN, 0, &got),
                     KF_ERR_MFG_FRAMING);
    kf_buf_free(&cert);
}

/* ---- token key table entries ---- */

static void token_key_entries(void **state)
{
    (void)state;
    struct kf_mfg_token_key_entry e = {0}, got;
    uint8_t raw[KF_MFG_TOKEN_KEY_ENTRY_LEN];
    strcpy(e.msn, "MSN-7");
    e.key_id = 0x0102030405060708ull;
    e.period = 202611;
    e.registered_at = 1767225600;
    fill(e.sealed, sizeof(e.sealed), 0x40);
    kf_mfg_token_key_entry_put(&e, raw);
    /* the layout, byte for byte */
    assert_memory_equal(raw, "MSN-7           ", 16);
    static const uint8_t ids[] = {1,    2,    3, 4, 5, 6, 7,    8,    0x00, 0x03,
                                  0x17, 0x73, 0, 0, 0, 0, 0x69, 0x55, 0xB9, 0x00};
    assert_memory_equal(raw + 16, ids, sizeof(ids));
    assert_memory_equal(raw + 36, e.sealed, 80);
    assert_int_equal(kf_mfg_token_key_entry_get(raw, &got), KF_OK);
    assert_string_equal(got.msn, "MSN-7");
    assert_int_equal(got.key_id, e.key_id);
    assert_int_equal(got.period, 202611);
    assert_int_equal(got.registered_at, 1767225600);
    assert_memory_equal(got.sealed, e.sealed, 80);
    /* a full 16-character MSN has no padding */
    strcpy(e.msn, "0123456789ABCDEF");
    kf_mfg_token_key_entry_put(&e, raw);
    assert_int_equal(kf_mfg_token_key_entry_get(raw, &got), KF_OK);
    assert_string_equal(got.msn, "0123456789ABCDEF");

    /* MSNs the padding may not hide */
    static const char bad_msn[][17] = {
        "                ",  /* empty */
        " MSN-7          ",  /* leading space */
        "MSN 7           ",  /* inner space */
        "msn-7           ",  /* lower case */
        "MSN-7\0          ", /* NUL */
        "MSN-7          \t",
    };
    for (size_t i = 0; i < sizeof(bad_msn) / sizeof(bad_msn[0]); i++) {
        kf_mfg_token_key_entry_put(&e, raw);
        memcpy(raw, bad_msn[i], 16);
        memset(&got, 0x55, sizeof(got));
        assert_int_equal(kf_mfg_token_key_entry_get(raw, &got), KF_ERR_MFG_FRAMING);
        assert_string_equal(got.msn, "");
        assert_int_equal(got.key_id, 0);
    }
    /* key ID 0 or above 2^63-1, a period that is not YYYYMM */
    e.key_id = 0;
    kf_mfg_token_key_entry_put(&e, raw);
    assert_int_equal(kf_mfg_token_key_entry_get(raw, &got), KF_ERR_MFG_FRAMING);
    e.key_id = (uint64_t)INT64_MAX + 1;
    kf_mfg_token_key_entry_put(&e, raw);
    assert_int_equal(kf_mfg_token_key_entry_get(raw, &got), KF_ERR_MFG_FRAMING);
    e.key_id = 1;
    static const uint32_t bad_periods[] = {0, 202600, 202613, 196912, 2026011};
    for (size_t i = 0; i < sizeof(bad_periods) / sizeof(bad_periods[0]); i++) {
        e.period = bad_periods[i];
        kf_mfg_token_key_entry_put(&e, raw);
        assert_int_equal(kf_mfg_token_key_entry_get(raw, &got), KF_ERR_MFG_FRAMING);
    }
}

/* ---- the fuzz target's seeds ---- */

static void write_seed(const char *dir, const char *name, const uint8_t *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/fuzz_mfg_record", dir);
    (void)mkdir(dir, 0755);
    (void)mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/fuzz_mfg_record/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void fuzz_seeds(void **state)
{
    (void)state;
    const char *dir = getenv("KF_MFG_CORPUS_DIR");
    uint8_t apub[32];
    pub_of(authority_priv, apub);
    kf_buf all;
    assert_int_equal(kf_buf_alloc(&all, 0, 1u << 20, 0), KF_OK);
    for (uint32_t type = 1; type <= KF_MFG_REC_MAX; type++) {
        struct kf_mfg_record r;
        kf_buf body, env;
        sample(type, true, &r);
        encode(&r, &body);
        sign(&r, authority_priv, &env);
        /* the fuzz target checks certificates under this key: the RoleCert seed passes */
        if (type == KF_MFG_REC_ROLE_CERT)
            assert_int_equal(kf_mfg_cert_check(env.data, env.len, apub, DOMAIN, 0, NULL), KF_OK);
        assert_int_equal(kf_buf_put_bytes(&all, env.data, env.len), KF_OK);
        if (dir) {
            char name[32];
            snprintf(name, sizeof(name), "envelope_%02u", type);
            write_seed(dir, name, env.data, env.len);
            snprintf(name, sizeof(name), "body_%02u", type);
            write_seed(dir, name, body.data, body.len);
        }
        kf_buf_free(&body);
        kf_buf_free(&env);
    }
    if (dir) {
        write_seed(dir, "envelopes_all", all.data, all.len);
        write_seed(dir, "token_key_entries", sample_table, sizeof(sample_table));
    }
    kf_buf_free(&all);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(role_ids_format_and_parse),
        cmocka_unit_test(field_syntax),
        cmocka_unit_test(body_known_encoding),
        cmocka_unit_test(every_type_round_trips),
        cmocka_unit_test(encode_refuses_records_off_the_table),
        cmocka_unit_test(encode_refuses_bad_values),
        cmocka_unit_test(token_keys_size_limits),
        cmocka_unit_test(decode_refuses_missing_fields),
        cmocka_unit_test(decode_refuses_duplicates_and_disorder),
        cmocka_unit_test(decode_refuses_foreign_fields),
        cmocka_unit_test(decode_refuses_wrong_types_and_lengths),
        cmocka_unit_test(decode_refuses_bad_values),
        cmocka_unit_test(decode_refuses_bad_framing),
        cmocka_unit_test(envelope_signed_by_the_document),
        cmocka_unit_test(envelope_wrong_key_is_bad_signature),
        cmocka_unit_test(envelope_every_flipped_byte_is_refused),
        cmocka_unit_test(envelope_parse_refusals),
        cmocka_unit_test(envelopes_back_to_back),
        cmocka_unit_test(sign_refuses_bad_arguments),
        cmocka_unit_test(role_certificates),
        cmocka_unit_test(token_key_entries),
        cmocka_unit_test(fuzz_seeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
