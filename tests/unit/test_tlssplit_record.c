/*
 * The worker's record layer (src/tlssplit/record.c):
 *  - known answers: RFC 8448 §3 (the simple 1-RTT trace, TLS_AES_128_GCM_SHA256):
 *    both sides' application data, the server's NewSessionTicket and both
 *    close_notify alerts, opened and re-sealed byte-exact; RFC 8439 §2.8.2
 *    through the record layer's ChaCha20-Poly1305 step;
 *  - the cross-check: a real GnuTLS session over a socketpair for every cipher
 *    (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305) and both versions; the
 *    state comes from gnutls_record_get_state(), our layer opens what GnuTLS
 *    sent (with TLS 1.3 padding) and GnuTLS opens what we sealed (including
 *    an alert), and the sequence numbers hand back with gnutls_record_set_state();
 *  - every refusal: header checks, lengths, tampering, replay, states, limits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "keyfleet/secmem.h"
#include "tlssplit/tlssplit_internal.h"

static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    int hi = -1;
    for (; *s; s++) {
        int v;
        if (*s >= '0' && *s <= '9')
            v = *s - '0';
        else if (*s >= 'a' && *s <= 'f')
            v = *s - 'a' + 10;
        else if (*s >= 'A' && *s <= 'F')
            v = *s - 'A' + 10;
        else
            continue;
        if (hi < 0)
            hi = v;
        else {
            assert_true(n < cap);
            out[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    assert_int_equal(hi, -1);
    return n;
}

/* ---- RFC 8448 §3 ------------------------------------------------------- */

#define C_APP_KEY "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51"
#define C_APP_IV "5b 78 92 3d ee 08 57 90 33 e5 23 d9"
#define S_APP_KEY "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56"
#define S_APP_IV "cf 78 2b 88 dd 83 54 9a ad f1 e9 84"
/* {client} send application_data record, complete record (72 octets) */
#define C_APP_REC                                                                                  \
    "17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea 42 f9 14 aa 66 bc "  \
    "ab 3f 2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f 5a 62 92 a2 97 70 14 bd "  \
    "1e 3d ea e6 3a ee bb 21 69 49 15 e4"
/* {server} send application_data record (72 octets), after the NewSessionTicket */
#define S_APP_REC                                                                                  \
    "17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad 36 00 5f c4 a4 69 32 fc 32 25 d0 5f 82 aa "  \
    "1b 36 e3 0e fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8 fc c4 9c 4b f2 e5 f0 a2 1c 00 47 c2 "  \
    "ab f3 32 54 0d d0 32 e1 67 c2 95 5d"
/* {server} send handshake record: NewSessionTicket (227 octets) */
#define S_NST_REC                                                                                  \
    "17 03 03 00 de 3a 6b 8f 90 41 4a 97 d6 95 9c 34 87 68 0d e5 13 4a 2b 24 0e 6c ff ac 11 6e "  \
    "95 d4 1d 6a f8 f6 b5 80 dc f3 d1 1d 63 c7 58 db 28 9a 01 59 40 25 2f 55 71 3e 06 1d c1 3e "  \
    "07 88 91 a3 8e fb cf 57 53 ad 8e f1 70 ad 3c 73 53 d1 6d 9d a7 73 b9 ca 7f 2b 9f a1 b6 c0 "  \
    "d4 a3 d0 3f 75 e0 9c 30 ba 1e 62 97 2a c4 6f 75 f7 b9 81 be 63 43 9b 29 99 ce 13 06 46 15 "  \
    "13 98 91 d5 e4 c5 b4 06 f1 6e 3f c1 81 a7 7c a4 75 84 00 25 db 2f 0a 77 f8 1b 5a b0 5b 94 "  \
    "c0 13 46 75 5f 69 23 2c 86 51 9d 86 cb ee ac 87 aa c3 47 d1 43 f9 60 5d 64 f6 50 db 4d 02 "  \
    "3e 70 e9 52 ca 49 fe 51 37 12 1c 74 bc 26 97 68 7e 24 87 46 d6 df 35 30 05 f3 bc e1 86 96 "  \
    "12 9c 81 53 55 6b 3b 6c 67 79 b3 7b f1 59 85 68 4f"
/* {client}/{server} send alert record: close_notify (24 octets each) */
#define C_ALERT_REC "17 03 03 00 13 c9 87 27 60 65 56 66 b7 4d 7f f1 15 3e fd 6d b6 d0 b0 e3"
#define S_ALERT_REC "17 03 03 00 13 b5 8f d6 71 66 eb f5 99 d2 47 20 cf be 7e fa 7a 88 64 a9"

static kf_tlsrec *rfc8448_dir(const char *key, const char *iv, uint64_t seq)
{
    struct kf_tlsrec_state st = {.version = KF_TLSREC_TLS13,
                                 .cipher = KF_TLSREC_AES_128_GCM,
                                 .key_len = 16,
                                 .iv_len = 12,
                                 .seq = seq};
    assert_int_equal(unhex(key, st.key, sizeof(st.key)), 16);
    assert_int_equal(unhex(iv, st.iv, sizeof(st.iv)), 12);
    kf_tlsrec *r;
    assert_int_equal(kf_tlsrec_new(&st, &r), KF_OK);
    kf_wipe(&st, sizeof(st));
    return r;
}

static void expect_open(kf_tlsrec *r, const char *rec_hex, uint8_t want_type, const uint8_t *want,
                        size_t want_len)
{
    uint8_t rec[512], out[512], type = 0;
    size_t n = unhex(rec_hex, rec, sizeof(rec)), got = 0;
    uint64_t seq = kf_tlsrec_seq(r);
    assert_int_equal(kf_tlsrec_open(r, rec, n, out, sizeof(out), &type, &got), KF_OK);
    assert_int_equal(type, want_type);
    assert_int_equal(kf_tlsrec_seq(r), seq + 1);
    if (want) {
        assert_int_equal(got, want_len);
        assert_memory_equal(out, want, want_len);
    }
}

static void expect_seal(kf_tlsrec *r, uint8_t type, const uint8_t *p, size_t n, const char *rec_hex)
{
    uint8_t want[512], mem[512];
    size_t wn = unhex(rec_hex, want, sizeof(want));
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_tlsrec_seal(r, type, p, n, 0, &out), KF_OK);
    assert_int_equal(out.len, wn);
    assert_memory_equal(mem, want, wn);
}

static void test_rfc8448_client_direction(void **state)
{
    (void)state;
    uint8_t payload[50], close_notify[2] = {1, 0};
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)i;
    kf_tlsrec *rd = rfc8448_dir(C_APP_KEY, C_APP_IV, 0); /* the server reading */
    expect_open(rd, C_APP_REC, KF_TLSREC_APPLICATION_DATA, payload, sizeof(payload));
    expect_open(rd, C_ALERT_REC, KF_TLSREC_ALERT, close_notify, 2);
    kf_tlsrec *wr = rfc8448_dir(C_APP_KEY, C_APP_IV, 0); /* the client writing */
    expect_seal(wr, KF_TLSREC_APPLICATION_DATA, payload, sizeof(payload), C_APP_REC);
    expect_seal(wr, KF_TLSREC_ALERT, close_notify, 2, C_ALERT_REC);
    kf_tlsrec_free(rd);
    kf_tlsrec_free(wr);
}

static void test_rfc8448_server_direction(void **state)
{
    (void)state;
    uint8_t payload[50], close_notify[2] = {1, 0};
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)i;
    /* The client reads NewSessionTicket (seq 0), data (1), close_notify (2). */
    kf_tlsrec *rd = rfc8448_dir(S_APP_KEY, S_APP_IV, 0);
    uint8_t rec[512], nst[512], type;
    size_t n = unhex(S_NST_REC, rec, sizeof(rec)), got;
    assert_int_equal(kf_tlsrec_open(rd, rec, n, nst, sizeof(nst), &type, &got), KF_OK);
    assert_int_equal(type, KF_TLSREC_HANDSHAKE);
    assert_int_equal(got, 205); /* NewSessionTicket: type 4, length 0x0000c9 = 201 */
    static const uint8_t nst_head[4] = {0x04, 0x00, 0x00, 0xc9};
    assert_memory_equal(nst, nst_head, 4);
    expect_open(rd, S_APP_REC, KF_TLSREC_APPLICATION_DATA, payload, sizeof(payload));
    expect_open(rd, S_ALERT_REC, KF_TLSREC_ALERT, close_notify, 2);
    /* And the server side seals the same bytes from the same sequence numbers. */
    kf_tlsrec *wr = rfc8448_dir(S_APP_KEY, S_APP_IV, 0);
    expect_seal(wr, KF_TLSREC_HANDSHAKE, nst, got, S_NST_REC);
    expect_seal(wr, KF_TLSREC_APPLICATION_DATA, payload, sizeof(payload), S_APP_REC);
    expect_seal(wr, KF_TLSREC_ALERT, close_notify, 2, S_ALERT_REC);
    kf_tlsrec_free(rd);
    kf_tlsrec_free(wr);
}

/* A record is bound to its sequence number: the server's data record does
 * not open as the first record (replay/reorder), nor under the client's key. */
static void test_rfc8448_wrong_seq_or_key(void **state)
{
    (void)state;
    uint8_t rec[128], out[128], type;
    size_t n = unhex(S_APP_REC, rec, sizeof(rec)), got;
    kf_tlsrec *r = rfc8448_dir(S_APP_KEY, S_APP_IV, 0);
    assert_int_equal(kf_tlsrec_open(r, rec, n, out, sizeof(out), &type, &got), KF_ERR_AUTH);
    assert_int_equal(kf_tlsrec_seq(r), 0); /* a refused record does not advance */
    kf_tlsrec_free(r);
    r = rfc8448_dir(C_APP_KEY, C_APP_IV, 1);
    assert_int_equal(kf_tlsrec_open(r, rec, n, out, sizeof(out), &type, &got), KF_ERR_AUTH);
    kf_tlsrec_free(r);
}

/* Every byte of the record matters: header (it is the AAD), ciphertext, tag. */
static void test_tamper_every_byte(void **state)
{
    (void)state;
    uint8_t rec[128], out[128], type;
    size_t n = unhex(C_APP_REC, rec, sizeof(rec)), got;
    kf_tlsrec *r = rfc8448_dir(C_APP_KEY, C_APP_IV, 0);
    for (size_t i = 0; i < n; i++) {
        uint8_t t[128];
        memcpy(t, rec, n);
        t[i] ^= 0x01;
        int rc = kf_tlsrec_open(r, t, n, out, sizeof(out), &type, &got);
        if (i == 0)
            assert_int_equal(rc, KF_ERR_TLS_RECORD); /* type 22 outside: not TLS 1.3 data */
        else if (i == 1 || i == 2)
            assert_int_equal(rc, KF_ERR_TLS_RECORD); /* version 0x0203 or 0x0302 */
        else if (i == 3 || i == 4)
            assert_true(rc == KF_ERR_ARG); /* length no longer matches the bytes */
        else
            assert_int_equal(rc, KF_ERR_AUTH);
        assert_int_equal(kf_tlsrec_seq(r), 0);
    }
    kf_tlsrec_free(r);
}

/* ---- RFC 8439 §2.8.2 through the record layer's AEAD step --------------- */

static void test_rfc8439_aead(void **state)
{
    (void)state;
    static const char pt[] = "Ladies and Gentlemen of the class of '99: If I could offer you only "
                             "one tip for the future, sunscreen would be it.";
    uint8_t aad[12], nonce[12], ct[256], tag[16], buf[256], back[256];
    struct kf_tlsrec_state st = {.version = KF_TLSREC_TLS13,
                                 .cipher = KF_TLSREC_CHACHA20_POLY1305,
                                 .key_len = 32,
                                 .iv_len = 12};
    for (int i = 0; i < 32; i++)
        st.key[i] = (uint8_t)(0x80 + i);
    unhex("50 51 52 53 c0 c1 c2 c3 c4 c5 c6 c7", aad, sizeof(aad));
    unhex("07 00 00 00 40 41 42 43 44 45 46 47", nonce, sizeof(nonce));
    size_t ctn = unhex("d3 1a 8d 34 64 8e 60 db 7b 86 af bc 53 ef 7e c2 a4 ad ed 51 29 6e 08 fe "
                       "a9 e2 b5 a7 36 ee 62 d6 3d be a4 5e 8c a9 67 12 82 fa fb 69 da 92 72 8b "
                       "1a 71 de 0a 9e 06 0b 29 05 d6 a5 b6 7e cd 3b 36 92 dd bd 7f 2d 77 8b 8c "
                       "98 03 ae e3 28 09 1b 58 fa b3 24 e4 fa d6 75 94 55 85 80 8b 48 31 d7 bc "
                       "3f f4 de f0 8e 4b 7a 9d e5 76 d2 65 86 ce c6 4b 61 16",
                       ct, sizeof(ct));
    unhex("1a e1 0b 59 4f 09 e2 6a 7e 90 2e cb d0 60 06 91", tag, sizeof(tag));
    assert_int_equal(ctn, strlen(pt));
    kf_tlsrec *r;
    assert_int_equal(kf_tlsrec_new(&st, &r), KF_OK);
    assert_int_equal(kf_tlsrec_aead_seal(r, nonce, aad, sizeof(aad), (const uint8_t *)pt, ctn, buf),
                     KF_OK);
    assert_memory_equal(buf, ct, ctn);
    assert_memory_equal(buf + ctn, tag, 16);
    assert_int_equal(kf_tlsrec_aead_open(r, nonce, aad, sizeof(aad), buf, ctn, back), KF_OK);
    assert_memory_equal(back, pt, ctn);
    buf[ctn + 15] ^= 0x80;
    assert_int_equal(kf_tlsrec_aead_open(r, nonce, aad, sizeof(aad), buf, ctn, back), KF_ERR_AUTH);
    assert_true(kf_ct_is_zero(back, ctn)); /* unauthenticated plaintext is not left behind */
    kf_tlsrec_free(r);
}

/* ---- refusals ------------------------------------------------------------ */

static void test_state_refusals(void **state)
{
    (void)state;
    kf_tlsrec *r = NULL;
    struct kf_tlsrec_state ok13 = {.version = KF_TLSREC_TLS13,
                                   .cipher = KF_TLSREC_AES_128_GCM,
                                   .key_len = 16,
                                   .iv_len = 12};
    struct kf_tlsrec_state st = ok13;
    assert_int_equal(kf_tlsrec_new(&st, &r), KF_OK);
    kf_tlsrec_free(r);
    st.key_len = 32; /* AES-128 with a 32-byte key */
    assert_int_equal(kf_tlsrec_new(&st, &r), KF_ERR_TLS_STATE);
    st = ok13;
    st.cipher = KF_TLSREC_AES_256_GCM; /* AES-256 with a 16-byte key */
    assert_int_equal(kf_tlsrec_new(&st, &r), KF_ERR_TLS_STATE);
    st = ok13;
    st.cipher = 9;
    assert_int_equal(kf_tlsrec_new(&st, &r), KF_ERR_TLS_STATE);
    st = ok13;
    st.version = 0x0302; /* TLS 1.1 */
    assert_int_equal(kf_tlsrec_new(&st, &r), KF_ERR_TLS_STATE);
    st = ok13;
    st.version = KF_TLSREC_TLS12; /* TLS 1.2 AES-GCM takes a 4-byte salt, not 12 */
    assert_int_equal(kf_tlsrec_new(&st, &r), KF_ERR_TLS_STATE);
    st.iv_len = 4;
    assert_int_equal(kf_tlsrec_new(&st, &r), KF_OK);
    kf_tlsrec_free(r);
    st = ok13;
    st.seq = UINT64_MAX;
    assert_int_equal(kf_tlsrec_new(&st, &r), KF_ERR_TLS_SEQUENCE);
    assert_int_equal(kf_tlsrec_iv_len(KF_TLSREC_TLS12, KF_TLSREC_CHACHA20_POLY1305), 12);
    assert_int_equal(kf_tlsrec_iv_len(KF_TLSREC_TLS12, KF_TLSREC_AES_256_GCM), 4);
    assert_int_equal(kf_tlsrec_iv_len(KF_TLSREC_TLS13, KF_TLSREC_AES_256_GCM), 12);
}

static void test_header_refusals(void **state)
{
    (void)state;
    struct kf_tlsrec_header h;
    uint8_t p[5] = {23, 3, 3, 0, 17};
    assert_int_equal(kf_tlsrec_parse_header(p, 4, KF_TLSREC_TLS13, &h), KF_ERR_SHORT);
    assert_int_equal(kf_tlsrec_parse_header(p, 5, KF_TLSREC_TLS13, &h), KF_OK);
    assert_int_equal(h.type, 23);
    assert_int_equal(h.length, 17);
    p[0] = 19;
    assert_int_equal(kf_tlsrec_parse_header(p, 5, KF_TLSREC_TLS13, &h), KF_ERR_TLS_RECORD);
    p[0] = 24; /* heartbeat: never */
    assert_int_equal(kf_tlsrec_parse_header(p, 5, KF_TLSREC_TLS13, &h), KF_ERR_TLS_RECORD);
    p[0] = 23;
    p[2] = 1; /* 0x0301 */
    assert_int_equal(kf_tlsrec_parse_header(p, 5, KF_TLSREC_TLS13, &h), KF_ERR_TLS_RECORD);
    p[1] = 2;
    p[2] = 3; /* SSL 2-ish */
    assert_int_equal(kf_tlsrec_parse_header(p, 5, KF_TLSREC_TLS13, &h), KF_ERR_TLS_RECORD);
    p[1] = 3;
    p[3] = 0;
    p[4] = 0; /* empty */
    assert_int_equal(kf_tlsrec_parse_header(p, 5, KF_TLSREC_TLS13, &h), KF_ERR_TLS_RECORD);
    /* 2^14 + 256 is the TLS 1.3 ceiling, 2^14 + 2048 the TLS 1.2 one. */
    p[3] = 0x41;
    p[4] = 0x00;
    assert_int_equal(kf_tlsrec_parse_header(p, 5, KF_TLSREC_TLS13, &h), KF_OK);
    p[4] = 0x01;
    assert_int_equal(kf_tlsrec_parse_header(p, 5, KF_TLSREC_TLS13, &h),
                     KF_ERR_TLS_RECORD_OVERFLOW);
    assert_int_equal(kf_tlsrec_parse_header(p, 5, KF_TLSREC_TLS12, &h), KF_OK);
    p[3] = 0x48;
    p[4] = 0x00;
    assert_int_equal(kf_tlsrec_parse_header(p, 5, KF_TLSREC_TLS12, &h), KF_OK);
    p[4] = 0x01;
    assert_int_equal(kf_tlsrec_parse_header(p, 5, KF_TLSREC_TLS12, &h),
                     KF_ERR_TLS_RECORD_OVERFLOW);
}

/* Records whose lengths break the rules, made with the right key so that only
 * the rule can refuse them. */
static void test_length_refusals(void **state)
{
    (void)state;
    static uint8_t rec[KF_TLSREC_MAX], out[KF_TLSREC_PLAINTEXT_MAX + 1], inner[KF_TLSREC_MAX];
    uint8_t type, nonce[12];
    size_t got;
    struct kf_tlsrec_state st = {.version = KF_TLSREC_TLS13,
                                 .cipher = KF_TLSREC_AES_256_GCM,
                                 .key_len = 32,
                                 .iv_len = 12};
    memset(st.key, 7, 32);
    memset(st.iv, 9, 12);
    kf_tlsrec *r, *w;
    assert_int_equal(kf_tlsrec_new(&st, &r), KF_OK);
    assert_int_equal(kf_tlsrec_new(&st, &w), KF_OK);

    /* TLS 1.3, body shorter than type byte + tag. */
    uint8_t tiny[5 + 16] = {23, 3, 3, 0, 16};
    assert_int_equal(kf_tlsrec_open(r, tiny, sizeof(tiny), out, sizeof(out), &type, &got),
                     KF_ERR_TLS_RECORD);

    /* TLS 1.3, inner plaintext of 2^14 + 2 bytes (valid tag): record_overflow. */
    size_t in_len = KF_TLSREC_PLAINTEXT_MAX + 2, body = in_len + 16;
    rec[0] = 23, rec[1] = 3, rec[2] = 3, rec[3] = (uint8_t)(body >> 8), rec[4] = (uint8_t)body;
    memset(inner, 'x', in_len);
    memcpy(nonce, st.iv, 12); /* seq 0 */
    assert_int_equal(kf_tlsrec_aead_seal(w, nonce, rec, 5, inner, in_len, rec + 5), KF_OK);
    assert_int_equal(kf_tlsrec_open(r, rec, 5 + body, out, sizeof(out), &type, &got),
                     KF_ERR_TLS_RECORD_OVERFLOW);

    /* TLS 1.3, inner plaintext all zeros (no content type): unexpected_message. */
    in_len = 40, body = in_len + 16;
    rec[3] = 0, rec[4] = (uint8_t)body;
    memset(inner, 0, in_len);
    assert_int_equal(kf_tlsrec_aead_seal(w, nonce, rec, 5, inner, in_len, rec + 5), KF_OK);
    assert_int_equal(kf_tlsrec_open(r, rec, 5 + body, out, sizeof(out), &type, &got),
                     KF_ERR_TLS_RECORD);
    assert_int_equal(kf_tlsrec_seq(r), 0);

    /* Output buffer too small for the plaintext. */
    inner[10] = KF_TLSREC_APPLICATION_DATA;
    assert_int_equal(kf_tlsrec_aead_seal(w, nonce, rec, 5, inner, in_len, rec + 5), KF_OK);
    assert_int_equal(kf_tlsrec_open(r, rec, 5 + body, out, 20, &type, &got), KF_ERR_NOSPACE);
    /* ... and in a big enough one, padding is stripped: 10 zero bytes, type, 29 zeros. */
    assert_int_equal(kf_tlsrec_open(r, rec, 5 + body, out, sizeof(out), &type, &got), KF_OK);
    assert_int_equal(type, KF_TLSREC_APPLICATION_DATA);
    assert_int_equal(got, 10);

    /* Sealing more than 2^14, or 2^14 plus padding, is refused; padding only in 1.3. */
    kf_buf o;
    kf_buf_fixed(&o, rec, sizeof(rec));
    assert_int_equal(kf_tlsrec_seal(w, 23, inner, KF_TLSREC_PLAINTEXT_MAX + 1, 0, &o),
                     KF_ERR_TLS_RECORD_OVERFLOW);
    assert_int_equal(kf_tlsrec_seal(w, 23, inner, KF_TLSREC_PLAINTEXT_MAX, 1, &o),
                     KF_ERR_TLS_RECORD_OVERFLOW);
    assert_int_equal(kf_tlsrec_seal(w, 24, inner, 1, 0, &o), KF_ERR_ARG);
    assert_int_equal(kf_tlsrec_seal(w, 23, inner, KF_TLSREC_PLAINTEXT_MAX, 0, &o), KF_OK);
    /* No room left in the fixed buffer. */
    assert_int_equal(kf_tlsrec_seal(w, 23, inner, KF_TLSREC_PLAINTEXT_MAX, 0, &o), KF_ERR_NOSPACE);
    kf_tlsrec_free(r);
    kf_tlsrec_free(w);

    /* TLS 1.2 AES-GCM: body shorter than explicit nonce + tag; plaintext above 2^14. */
    st.version = KF_TLSREC_TLS12;
    st.iv_len = 4;
    assert_int_equal(kf_tlsrec_new(&st, &r), KF_OK);
    uint8_t short12[5 + 23] = {23, 3, 3, 0, 23};
    assert_int_equal(kf_tlsrec_open(r, short12, sizeof(short12), out, sizeof(out), &type, &got),
                     KF_ERR_TLS_RECORD);
    body = 8 + KF_TLSREC_PLAINTEXT_MAX + 1 + 16;
    rec[0] = 23, rec[1] = 3, rec[2] = 3, rec[3] = (uint8_t)(body >> 8), rec[4] = (uint8_t)body;
    assert_int_equal(kf_tlsrec_open(r, rec, 5 + body, out, sizeof(out), &type, &got),
                     KF_ERR_TLS_RECORD_OVERFLOW);
    assert_int_equal(kf_tlsrec_seal(r, 23, inner, 10, 5, &o), KF_ERR_ARG);
    kf_tlsrec_free(r);
}

/* The last sequence number is never used: a connection must rekey first. */
static void test_sequence_exhausted(void **state)
{
    (void)state;
    uint8_t mem[128], out[128], type;
    size_t got;
    struct kf_tlsrec_state st = {.version = KF_TLSREC_TLS13,
                                 .cipher = KF_TLSREC_CHACHA20_POLY1305,
                                 .key_len = 32,
                                 .iv_len = 12,
                                 .seq = UINT64_MAX - 1};
    kf_tlsrec *w, *r;
    assert_int_equal(kf_tlsrec_new(&st, &w), KF_OK);
    assert_int_equal(kf_tlsrec_new(&st, &r), KF_OK);
    kf_buf o;
    kf_buf_fixed(&o, mem, sizeof(mem));
    assert_int_equal(kf_tlsrec_seal(w, 23, (const uint8_t *)"last", 4, 0, &o), KF_OK);
    assert_int_equal(kf_tlsrec_open(r, mem, o.len, out, sizeof(out), &type, &got), KF_OK);
    assert_int_equal(got, 4);
    size_t first = o.len;
    assert_int_equal(kf_tlsrec_seal(w, 23, (const uint8_t *)"more", 4, 0, &o),
                     KF_ERR_TLS_SEQUENCE);
    assert_int_equal(o.len, first);
    assert_int_equal(kf_tlsrec_open(r, mem, first, out, sizeof(out), &type, &got),
                     KF_ERR_TLS_SEQUENCE);
    kf_tlsrec_free(w);
    kf_tlsrec_free(r);
}

/* ---- cross-check against GnuTLS --------------------------------------------
 *
 * A GnuTLS client and server handshake over a socketpair (TLS 1.2 with PSK,
 * TLS 1.3 with a throw-away certificate: the record layer does not care how
 * the keys came).
 * Our layer then takes the server's place on the wire.
 */

static int psk_cb(gnutls_session_t s, const char *user, gnutls_datum_t *key)
{
    (void)s, (void)user;
    key->data = gnutls_malloc(32);
    key->size = 32;
    memset(key->data, 0x5a, 32);
    return 0;
}

struct pair {
    int sv[2]; /* [0] server side, [1] client side */
    gnutls_session_t srv, cli;
    gnutls_psk_server_credentials_t scred;
    gnutls_psk_client_credentials_t ccred;
    gnutls_certificate_credentials_t xcred, ccert;
    int srv_rc;
};

/* A throw-away self-signed ECDSA certificate: TLS 1.3 with AES-256-GCM needs
 * SHA-384, which a SHA-256 PSK cannot give, so the TLS 1.3 cases use this. */
static gnutls_certificate_credentials_t self_signed(void)
{
    gnutls_x509_privkey_t key;
    gnutls_x509_crt_t crt;
    gnutls_certificate_credentials_t cred;
    assert_int_equal(gnutls_x509_privkey_init(&key), 0);
    assert_int_equal(gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                                  GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1),
                                                  0),
                     0);
    assert_int_equal(gnutls_x509_crt_init(&crt), 0);
    assert_int_equal(gnutls_x509_crt_set_version(crt, 3), 0);
    assert_int_equal(gnutls_x509_crt_set_serial(crt, "\x01", 1), 0);
    assert_int_equal(gnutls_x509_crt_set_activation_time(crt, time(NULL) - 60), 0);
    assert_int_equal(gnutls_x509_crt_set_expiration_time(crt, time(NULL) + 3600), 0);
    assert_int_equal(gnutls_x509_crt_set_dn(crt, "CN=record-test", NULL), 0);
    assert_int_equal(gnutls_x509_crt_set_key(crt, key), 0);
    assert_int_equal(gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0), 0);
    assert_int_equal(gnutls_certificate_allocate_credentials(&cred), 0);
    assert_int_equal(gnutls_certificate_set_x509_key(cred, &crt, 1, key), 0);
    gnutls_x509_crt_deinit(crt);
    gnutls_x509_privkey_deinit(key);
    return cred;
}

static void *server_handshake(void *arg)
{
    struct pair *p = arg;
    do
        p->srv_rc = gnutls_handshake(p->srv);
    while (p->srv_rc < 0 && !gnutls_error_is_fatal(p->srv_rc));
    if (p->srv_rc < 0) {
        fprintf(stderr, "server handshake: %s\n", gnutls_strerror(p->srv_rc));
        shutdown(p->sv[0], SHUT_RDWR); /* the client must not wait for ever */
    }
    return NULL;
}

static void pair_open(struct pair *p, const char *prio)
{
    gnutls_datum_t key = {(unsigned char *)"\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
                                           "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a"
                                           "\x5a\x5a\x5a\x5a\x5a\x5a",
                          32};
    memset(p, 0, sizeof(*p));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p->sv), 0);
    assert_int_equal(gnutls_psk_allocate_server_credentials(&p->scred), 0);
    gnutls_psk_set_server_credentials_function(p->scred, psk_cb);
    assert_int_equal(gnutls_psk_allocate_client_credentials(&p->ccred), 0);
    assert_int_equal(gnutls_psk_set_client_credentials(p->ccred, "test", &key, GNUTLS_PSK_KEY_RAW),
                     0);
    assert_int_equal(gnutls_init(&p->srv, GNUTLS_SERVER), 0);
    assert_int_equal(gnutls_init(&p->cli, GNUTLS_CLIENT), 0);
    assert_int_equal(gnutls_priority_set_direct(p->srv, prio, NULL), 0);
    assert_int_equal(gnutls_priority_set_direct(p->cli, prio, NULL), 0);
    assert_int_equal(gnutls_credentials_set(p->srv, GNUTLS_CRD_PSK, p->scred), 0);
    assert_int_equal(gnutls_credentials_set(p->cli, GNUTLS_CRD_PSK, p->ccred), 0);
    if (strstr(prio, "ECDHE-ECDSA")) {
        p->xcred = self_signed();
        assert_int_equal(gnutls_certificate_allocate_credentials(&p->ccert), 0);
        assert_int_equal(gnutls_credentials_set(p->srv, GNUTLS_CRD_CERTIFICATE, p->xcred), 0);
        assert_int_equal(gnutls_credentials_set(p->cli, GNUTLS_CRD_CERTIFICATE, p->ccert), 0);
    }
    gnutls_transport_set_int(p->srv, p->sv[0]);
    gnutls_transport_set_int(p->cli, p->sv[1]);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, server_handshake, p), 0);
    int rc;
    do
        rc = gnutls_handshake(p->cli);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    pthread_join(t, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(p->srv_rc, 0);
}

static void pair_close(struct pair *p)
{
    gnutls_deinit(p->srv);
    gnutls_deinit(p->cli);
    gnutls_psk_free_server_credentials(p->scred);
    gnutls_psk_free_client_credentials(p->ccred);
    if (p->xcred) {
        gnutls_certificate_free_credentials(p->xcred);
        gnutls_certificate_free_credentials(p->ccert);
    }
    close(p->sv[0]);
    close(p->sv[1]);
}

static void read_exact(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        assert_true(r > 0);
        p += r;
        n -= (size_t)r;
    }
}

/* One raw record off the server's socket. */
static size_t read_record(int fd, uint8_t *buf)
{
    read_exact(fd, buf, 5);
    size_t len = (size_t)buf[3] << 8 | buf[4];
    assert_true(len <= KF_TLSREC_TLS12_CIPHERTEXT_MAX);
    read_exact(fd, buf + 5, len);
    return 5 + len;
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 31 + seed * 7 + (i >> 8));
}

struct xcase {
    const char *prio;
    uint16_t version;
    uint8_t cipher;
};

static void cross_check(const struct xcase *c)
{
    static uint8_t rec[KF_TLSREC_MAX], pt[KF_TLSREC_PLAINTEXT_MAX + 1],
        data[KF_TLSREC_PLAINTEXT_MAX], got_buf[KF_TLSREC_PLAINTEXT_MAX], out_mem[4 * KF_TLSREC_MAX];
    static const size_t sizes[] = {1, 100, 1000, 16383, KF_TLSREC_PLAINTEXT_MAX};
    struct pair p;
    pair_open(&p, c->prio);
    struct kf_tlsrec_state rs, ws, cli_ws;
    assert_int_equal(kf_tlssplit_export_state(p.srv, true, &rs), KF_OK);
    assert_int_equal(kf_tlssplit_export_state(p.srv, false, &ws), KF_OK);
    /* What the server reads is what the client writes. */
    assert_int_equal(kf_tlssplit_export_state(p.cli, false, &cli_ws), KF_OK);
    assert_int_equal(rs.version, c->version);
    assert_int_equal(rs.cipher, c->cipher);
    assert_int_equal(rs.iv_len, kf_tlsrec_iv_len(c->version, c->cipher));
    assert_memory_equal(rs.key, cli_ws.key, rs.key_len);
    assert_memory_equal(rs.iv, cli_ws.iv, rs.iv_len);
    assert_int_equal(rs.seq, cli_ws.seq);
    kf_tlsrec *rd, *wr;
    assert_int_equal(kf_tlsrec_new(&rs, &rd), KF_OK);
    assert_int_equal(kf_tlsrec_new(&ws, &wr), KF_OK);
    kf_wipe(&rs, sizeof(rs));
    kf_wipe(&ws, sizeof(ws));
    kf_wipe(&cli_ws, sizeof(cli_ws));

    /* GnuTLS writes (with padding in TLS 1.3), we read. */
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t pad = c->version == KF_TLSREC_TLS13 && sizes[i] < 16000 ? 7 * i : 0;
        fill(data, sizes[i], (unsigned)i);
        assert_int_equal(gnutls_record_send2(p.cli, data, sizes[i], pad, 0), (ssize_t)sizes[i]);
        size_t n = read_record(p.sv[0], rec), got;
        uint8_t type;
        assert_int_equal(kf_tlsrec_open(rd, rec, n, pt, sizeof(pt), &type, &got), KF_OK);
        assert_int_equal(type, KF_TLSREC_APPLICATION_DATA);
        assert_int_equal(got, sizes[i]);
        assert_memory_equal(pt, data, got);
        if (c->version == KF_TLSREC_TLS13)
            assert_int_equal(n, 5 + sizes[i] + 1 + pad + 16);
    }
    /* We write (two records in one write, padding in TLS 1.3), GnuTLS reads. */
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        kf_buf o;
        kf_buf_fixed(&o, out_mem, sizeof(out_mem));
        size_t pad = c->version == KF_TLSREC_TLS13 && sizes[i] < 16000 ? 3 + i : 0;
        fill(data, sizes[i], (unsigned)(100 + i));
        assert_int_equal(kf_tlsrec_seal(wr, KF_TLSREC_APPLICATION_DATA, data, sizes[i], pad, &o),
                         KF_OK);
        assert_int_equal(kf_tlsrec_seal(wr, KF_TLSREC_APPLICATION_DATA, data, 5, 0, &o), KF_OK);
        write_all(p.sv[0], out_mem, o.len);
        size_t total = 0;
        while (total < sizes[i]) {
            ssize_t r = gnutls_record_recv(p.cli, got_buf + total, sizes[i] - total);
            assert_true(r > 0);
            total += (size_t)r;
        }
        assert_memory_equal(got_buf, data, sizes[i]);
        assert_int_equal(gnutls_record_recv(p.cli, got_buf, sizeof(got_buf)), 5);
        assert_memory_equal(got_buf, data, 5);
    }

    /* Hand the sequence numbers back: GnuTLS's server continues where we stopped. */
    assert_int_equal(kf_tlssplit_import_seq(p.srv, true, kf_tlsrec_seq(rd)), KF_OK);
    assert_int_equal(kf_tlssplit_import_seq(p.srv, false, kf_tlsrec_seq(wr)), KF_OK);
    assert_int_equal(gnutls_record_send(p.cli, "to the handler", 14), 14);
    assert_int_equal(gnutls_record_recv(p.srv, got_buf, sizeof(got_buf)), 14);
    assert_memory_equal(got_buf, "to the handler", 14);
    assert_int_equal(gnutls_record_send(p.srv, "from the handler", 16), 16);
    assert_int_equal(gnutls_record_recv(p.cli, got_buf, sizeof(got_buf)), 16);
    assert_memory_equal(got_buf, "from the handler", 16);
    /* ... and back to us once more: the state we get now matches what we had. */
    struct kf_tlsrec_state again;
    assert_int_equal(kf_tlssplit_export_state(p.srv, false, &again), KF_OK);
    assert_int_equal(again.seq, kf_tlsrec_seq(wr) + 1);
    kf_tlsrec_free(wr);
    assert_int_equal(kf_tlsrec_new(&again, &wr), KF_OK);
    kf_wipe(&again, sizeof(again));

    /* A record GnuTLS's server wrote after we stopped cannot be replayed to us:
     * our read state is behind, and the record is bound to its sequence number. */
    assert_int_equal(gnutls_record_send(p.cli, "x", 1), 1);
    size_t n = read_record(p.sv[0], rec), got;
    uint8_t type;
    kf_tlsrec *stale;
    struct kf_tlsrec_state old;
    assert_int_equal(kf_tlssplit_export_state(p.srv, true, &old), KF_OK);
    old.seq -= 1; /* pretend the worker missed the handler's record */
    assert_int_equal(kf_tlsrec_new(&old, &stale), KF_OK);
    kf_wipe(&old, sizeof(old));
    assert_int_equal(kf_tlsrec_open(stale, rec, n, pt, sizeof(pt), &type, &got), KF_ERR_AUTH);
    kf_tlsrec_free(stale);

    /* An alert we seal is an alert to GnuTLS: close_notify ends its reading. */
    kf_buf o;
    kf_buf_fixed(&o, out_mem, sizeof(out_mem));
    assert_int_equal(kf_tlsrec_seal(wr, KF_TLSREC_ALERT, (const uint8_t *)"\x01\x00", 2, 0, &o),
                     KF_OK);
    write_all(p.sv[0], out_mem, o.len);
    assert_int_equal(gnutls_record_recv(p.cli, got_buf, sizeof(got_buf)), 0);

    /* And GnuTLS's close_notify reaches us as an alert (type and body). */
    assert_int_equal(gnutls_bye(p.cli, GNUTLS_SHUT_WR), 0);
    kf_tlsrec_free(rd);
    assert_int_equal(kf_tlssplit_export_state(p.cli, false, &old), KF_OK);
    old.seq -= 1; /* the sequence number of the alert GnuTLS just wrote */
    assert_int_equal(kf_tlsrec_new(&old, &rd), KF_OK);
    kf_wipe(&old, sizeof(old));
    n = read_record(p.sv[0], rec);
    assert_int_equal(kf_tlsrec_open(rd, rec, n, pt, sizeof(pt), &type, &got), KF_OK);
    assert_int_equal(type, KF_TLSREC_ALERT);
    assert_int_equal(got, 2);
    assert_int_equal(pt[0], 1); /* warning */
    assert_int_equal(pt[1], 0); /* close_notify */
    kf_tlsrec_free(rd);
    kf_tlsrec_free(wr);
    pair_close(&p);
}

#define CERT13 "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+ECDHE-ECDSA:-CIPHER-ALL:"
#define PSK12 "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+PSK:-CIPHER-ALL:"

static void test_gnutls_tls13_aes128(void **state)
{
    (void)state;
    struct xcase c = {CERT13 "+AES-128-GCM", KF_TLSREC_TLS13, KF_TLSREC_AES_128_GCM};
    cross_check(&c);
}
static void test_gnutls_tls13_aes256(void **state)
{
    (void)state;
    struct xcase c = {CERT13 "+AES-256-GCM", KF_TLSREC_TLS13, KF_TLSREC_AES_256_GCM};
    cross_check(&c);
}
static void test_gnutls_tls13_chacha(void **state)
{
    (void)state;
    struct xcase c = {CERT13 "+CHACHA20-POLY1305", KF_TLSREC_TLS13, KF_TLSREC_CHACHA20_POLY1305};
    cross_check(&c);
}
static void test_gnutls_tls12_aes128(void **state)
{
    (void)state;
    struct xcase c = {PSK12 "+AES-128-GCM", KF_TLSREC_TLS12, KF_TLSREC_AES_128_GCM};
    cross_check(&c);
}
static void test_gnutls_tls12_aes256(void **state)
{
    (void)state;
    struct xcase c = {PSK12 "+AES-256-GCM", KF_TLSREC_TLS12, KF_TLSREC_AES_256_GCM};
    cross_check(&c);
}
static void test_gnutls_tls12_chacha(void **state)
{
    (void)state;
    struct xcase c = {PSK12 "+CHACHA20-POLY1305", KF_TLSREC_TLS12, KF_TLSREC_CHACHA20_POLY1305};
    cross_check(&c);
}

/* Suites the worker does not do are refused at export, not half-done. */
static void test_gnutls_cbc_refused(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p, PSK12 "+AES-128-CBC:-MAC-ALL:+SHA256:+SHA1");
    struct kf_tlsrec_state st;
    assert_int_equal(kf_tlssplit_export_state(p.srv, true, &st), KF_ERR_UNSUPPORTED);
    pair_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc8448_client_direction),
        cmocka_unit_test(test_rfc8448_server_direction),
        cmocka_unit_test(test_rfc8448_wrong_seq_or_key),
        cmocka_unit_test(test_tamper_every_byte),
        cmocka_unit_test(test_rfc8439_aead),
        cmocka_unit_test(test_state_refusals),
        cmocka_unit_test(test_header_refusals),
        cmocka_unit_test(test_length_refusals),
        cmocka_unit_test(test_sequence_exhausted),
        cmocka_unit_test(test_gnutls_tls13_aes128),
        cmocka_unit_test(test_gnutls_tls13_aes256),
        cmocka_unit_test(test_gnutls_tls13_chacha),
        cmocka_unit_test(test_gnutls_tls12_aes128),
        cmocka_unit_test(test_gnutls_tls12_aes256),
        cmocka_unit_test(test_gnutls_tls12_chacha),
        cmocka_unit_test(test_gnutls_cbc_refused),
    };
    /* Every test with each AEAD the record layer can use: GnuTLS's, then nettle's. */
    kf_tlsrec_set_aead(KF_TLSREC_AEAD_GNUTLS);
    int failed = cmocka_run_group_tests_name("record layer, GnuTLS AEAD", tests, NULL, NULL);
    kf_tlsrec_set_aead(KF_TLSREC_AEAD_NETTLE);
    assert_int_equal(kf_tlsrec_aead_in_use(), KF_TLSREC_AEAD_NETTLE);
    failed += cmocka_run_group_tests_name("record layer, nettle AEAD", tests, NULL, NULL);
    return failed;
}
