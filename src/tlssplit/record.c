/*
 * The worker's TLS record layer: protection and parsing of TLS 1.3 records
 * (RFC 8446 §5.1-5.4) and TLS 1.2 AEAD records (RFC 5288 AES-GCM, RFC 7905
 * ChaCha20-Poly1305). No I/O: the caller owns buffers.
 *
 * The AEAD is GnuTLS's (gnutls_aead_cipher_*: its stitched AES-NI/PCLMUL
 * AES-GCM is twice as fast as nettle 3.8's here) or nettle's (gcm_aes128/256,
 * chacha_poly1305), chosen per process: kf_tlsrec_set_aead, or
 * KF_TLSREC_AEAD=nettle in the environment (keyfleetd --record-aead). Both
 * pass the same known answers and interoperate with live GnuTLS sessions
 * (test_tlssplit_record runs every test with each).
 *
 * The state of one direction is what gnutls_record_get_state() gives for it:
 * the cipher key, the "IV" and the 64-bit sequence number. For TLS 1.3 the
 * IV is the 12-byte per-direction write IV; for TLS 1.2 AES-GCM it is the
 * 4-byte implicit salt (the other 8 nonce bytes travel in each record); for
 * TLS 1.2 ChaCha20-Poly1305 it is the 12-byte IV that is XORed with the
 * sequence number as in TLS 1.3.
 *
 * CT: the AEAD primitives and GnuTLS's tag comparison run in time that
 * depends on lengths only. Stripping TLS 1.3 padding takes time linear in the padding
 * length (RFC 8446 §5.4 notes this); the padding length is not secret here.
 */
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <nettle/chacha-poly1305.h>
#include <nettle/gcm.h>
#include <nettle/memops.h>
#include <stdatomic.h>

#include "keyfleet/secmem.h"
#include "tlssplit_internal.h"

#define TAG_LEN 16
#define TLS12_EXPLICIT_NONCE_LEN 8

struct kf_tlsrec {
    uint16_t version;
    uint8_t cipher;
    uint8_t iv_len;
    uint8_t iv[12];
    uint64_t seq;
    enum kf_tlsrec_aead impl;
    gnutls_aead_cipher_hd_t aead; /* KF_TLSREC_AEAD_GNUTLS */
    union {                       /* KF_TLSREC_AEAD_NETTLE: key schedules, in secure memory */
        struct gcm_aes128_ctx aes128;
        struct gcm_aes256_ctx aes256;
        struct chacha_poly1305_ctx chacha;
    } n;
};

/* -1: not chosen yet (the environment decides at the first record state). */
static atomic_int aead_choice = -1;

void kf_tlsrec_set_aead(enum kf_tlsrec_aead impl)
{
    atomic_store(&aead_choice, (int)impl);
}

enum kf_tlsrec_aead kf_tlsrec_aead_in_use(void)
{
    int c = atomic_load(&aead_choice);
    if (c < 0) {
        const char *e = getenv("KF_TLSREC_AEAD");
        c = e && strcmp(e, "nettle") == 0 ? KF_TLSREC_AEAD_NETTLE : KF_TLSREC_AEAD_GNUTLS;
        atomic_store(&aead_choice, c);
    }
    return (enum kf_tlsrec_aead)c;
}

/* nettle: one record (the nonce is fresh for each, so the context is re-keyed by IV only). */
static void nettle_crypt(kf_tlsrec *r, bool seal, const uint8_t nonce[12], const uint8_t *aad,
                         size_t aad_len, const uint8_t *src, size_t n, uint8_t *dst,
                         uint8_t tag[TAG_LEN])
{
    switch (r->cipher) {
    case KF_TLSREC_AES_128_GCM:
        gcm_aes128_set_iv(&r->n.aes128, 12, nonce);
        gcm_aes128_update(&r->n.aes128, aad_len, aad);
        (seal ? gcm_aes128_encrypt : gcm_aes128_decrypt)(&r->n.aes128, n, dst, src);
        gcm_aes128_digest(&r->n.aes128, TAG_LEN, tag);
        break;
    case KF_TLSREC_AES_256_GCM:
        gcm_aes256_set_iv(&r->n.aes256, 12, nonce);
        gcm_aes256_update(&r->n.aes256, aad_len, aad);
        (seal ? gcm_aes256_encrypt : gcm_aes256_decrypt)(&r->n.aes256, n, dst, src);
        gcm_aes256_digest(&r->n.aes256, TAG_LEN, tag);
        break;
    default: /* KF_TLSREC_CHACHA20_POLY1305 */
        chacha_poly1305_set_nonce(&r->n.chacha, nonce);
        chacha_poly1305_update(&r->n.chacha, aad_len, aad);
        (seal ? chacha_poly1305_encrypt : chacha_poly1305_decrypt)(&r->n.chacha, n, dst, src);
        chacha_poly1305_digest(&r->n.chacha, TAG_LEN, tag);
        break;
    }
}

/* ---- the AEAD, one record at a time ----------------------------------- */

/* Seal n bytes at src to dst with the tag after them (dst has n + 16). */
int kf_tlsrec_aead_seal(kf_tlsrec *r, const uint8_t nonce[12], const uint8_t *aad, size_t aad_len,
                        const uint8_t *src, size_t n, uint8_t *dst)
{
    if (r->impl == KF_TLSREC_AEAD_NETTLE) {
        nettle_crypt(r, true, nonce, aad, aad_len, src, n, dst, dst + n);
        return KF_OK;
    }
    size_t tag_len = TAG_LEN;
    giovec_t auth = {.iov_base = (void *)(uintptr_t)aad, .iov_len = aad_len};
    giovec_t data = {.iov_base = dst, .iov_len = n};
    if (dst != src && n)
        memmove(dst, src, n);
    /* In place: the buffer is ours, the tag goes right behind the ciphertext. */
    if (gnutls_aead_cipher_encryptv2(r->aead, nonce, 12, &auth, 1, &data, 1, dst + n, &tag_len) <
            0 ||
        tag_len != TAG_LEN) {
        kf_wipe(dst, n + TAG_LEN); /* no plaintext left behind */
        return KF_ERR_CRYPTO;
    }
    return KF_OK;
}

/* Open n bytes of ciphertext followed by the tag; dst gets n bytes, wiped on failure. */
int kf_tlsrec_aead_open(kf_tlsrec *r, const uint8_t nonce[12], const uint8_t *aad, size_t aad_len,
                        const uint8_t *src, size_t n, uint8_t *dst)
{
    if (r->impl == KF_TLSREC_AEAD_NETTLE) {
        uint8_t tag[TAG_LEN];
        nettle_crypt(r, false, nonce, aad, aad_len, src, n, dst, tag);
        int same = memeql_sec(tag, src + n, TAG_LEN);
        kf_wipe(tag, sizeof(tag));
        if (!same) {
            kf_wipe(dst, n); /* unauthenticated plaintext never leaves */
            return KF_ERR_AUTH;
        }
        return KF_OK;
    }
    size_t out_len = n;
    int rc = gnutls_aead_cipher_decrypt(r->aead, nonce, 12, aad, aad_len, TAG_LEN, src,
                                        n + TAG_LEN, dst, &out_len);
    if (rc < 0 || out_len != n) {
        kf_wipe(dst, n);
        return KF_ERR_AUTH;
    }
    return KF_OK;
}

/* ---- state ------------------------------------------------------------- */

static size_t key_len_of(uint8_t cipher)
{
    switch (cipher) {
    case KF_TLSREC_AES_128_GCM: return 16;
    case KF_TLSREC_AES_256_GCM: return 32;
    case KF_TLSREC_CHACHA20_POLY1305: return 32;
    default: return 0;
    }
}

/* The IV length gnutls_record_get_state reports for version and cipher. */
size_t kf_tlsrec_iv_len(uint16_t version, uint8_t cipher)
{
    if (key_len_of(cipher) == 0)
        return 0;
    if (version == KF_TLSREC_TLS13)
        return 12;
    if (version == KF_TLSREC_TLS12)
        return cipher == KF_TLSREC_CHACHA20_POLY1305 ? 12 : 4;
    return 0;
}

int kf_tlsrec_new(const struct kf_tlsrec_state *st, kf_tlsrec **out)
{
    KF_ENSURE(st && out, KF_ERR_ARG);
    size_t klen = key_len_of(st->cipher), ivlen = kf_tlsrec_iv_len(st->version, st->cipher);
    KF_ENSURE(klen && ivlen && st->key_len == klen && st->iv_len == ivlen, KF_ERR_TLS_STATE);
    KF_ENSURE(st->seq != UINT64_MAX, KF_ERR_TLS_SEQUENCE);
    static const gnutls_cipher_algorithm_t algs[] = {
        [KF_TLSREC_AES_128_GCM] = GNUTLS_CIPHER_AES_128_GCM,
        [KF_TLSREC_AES_256_GCM] = GNUTLS_CIPHER_AES_256_GCM,
        [KF_TLSREC_CHACHA20_POLY1305] = GNUTLS_CIPHER_CHACHA20_POLY1305};
    kf_tlsrec *r = kf_secmem_alloc(sizeof(*r));
    KF_ENSURE(r, KF_ERR_SECMEM);
    r->impl = kf_tlsrec_aead_in_use();
    if (r->impl == KF_TLSREC_AEAD_NETTLE) {
        if (st->cipher == KF_TLSREC_AES_128_GCM)
            gcm_aes128_set_key(&r->n.aes128, st->key);
        else if (st->cipher == KF_TLSREC_AES_256_GCM)
            gcm_aes256_set_key(&r->n.aes256, st->key);
        else
            chacha_poly1305_set_key(&r->n.chacha, st->key);
    } else {
        gnutls_datum_t key = {.data = (unsigned char *)(uintptr_t)st->key, .size = st->key_len};
        if (gnutls_aead_cipher_init(&r->aead, algs[st->cipher], &key) < 0) {
            kf_secmem_free(r);
            return KF_ERR_CRYPTO;
        }
    }
    r->version = st->version;
    r->cipher = st->cipher;
    r->iv_len = st->iv_len;
    memcpy(r->iv, st->iv, st->iv_len);
    r->seq = st->seq;
    *out = r;
    return KF_OK;
}

void kf_tlsrec_free(kf_tlsrec *r)
{
    if (!r)
        return;
    if (r->impl == KF_TLSREC_AEAD_GNUTLS)
        gnutls_aead_cipher_deinit(r->aead); /* GnuTLS wipes the key schedule */
    kf_secmem_free(r); /* and this the IV (and nettle's key schedule) */
}

uint64_t kf_tlsrec_seq(const kf_tlsrec *r)
{
    return r->seq;
}

uint16_t kf_tlsrec_version(const kf_tlsrec *r)
{
    return r->version;
}

/* ---- framing ----------------------------------------------------------- */

/* Per-record nonce: TLS 1.3 and TLS 1.2 ChaCha20 XOR the padded sequence number
 * into the IV (RFC 8446 §5.3, RFC 7905 §2); TLS 1.2 AES-GCM is salt || explicit. */
static void xor_nonce(const kf_tlsrec *r, uint64_t seq, uint8_t nonce[12])
{
    memcpy(nonce, r->iv, 12);
    for (int i = 0; i < 8; i++)
        nonce[11 - i] ^= (uint8_t)(seq >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* TLS 1.2 AEAD additional data: seq_num || type || version || plaintext length. */
static void tls12_aad(uint64_t seq, uint8_t type, size_t len, uint8_t aad[13])
{
    put_u64(aad, seq);
    aad[8] = type;
    aad[9] = 3;
    aad[10] = 3;
    aad[11] = (uint8_t)(len >> 8);
    aad[12] = (uint8_t)len;
}

static bool tls12_explicit_nonce(const kf_tlsrec *r)
{
    return r->version == KF_TLSREC_TLS12 && r->cipher != KF_TLSREC_CHACHA20_POLY1305;
}

/* Bytes a sealed record adds to its plaintext (header included). */
size_t kf_tlsrec_overhead(const kf_tlsrec *r, size_t pad)
{
    if (r->version == KF_TLSREC_TLS13)
        return KF_TLSREC_HEADER_LEN + 1 + pad + TAG_LEN;
    return KF_TLSREC_HEADER_LEN + (tls12_explicit_nonce(r) ? TLS12_EXPLICIT_NONCE_LEN : 0) +
           TAG_LEN;
}

int kf_tlsrec_parse_header(const uint8_t *p, size_t n, uint16_t version,
                           struct kf_tlsrec_header *h)
{
    kf_buf b;
    kf_buf_reader(&b, p, n);
    KF_ENSURE(n >= KF_TLSREC_HEADER_LEN, KF_ERR_SHORT);
    KF_GUARD(kf_buf_get_u8(&b, &h->type));
    KF_GUARD(kf_buf_get_u16(&b, &h->legacy_version));
    KF_GUARD(kf_buf_get_u16(&b, &h->length));
    KF_ENSURE(h->type >= KF_TLSREC_CHANGE_CIPHER_SPEC && h->type <= KF_TLSREC_APPLICATION_DATA,
              KF_ERR_TLS_RECORD);
    /* Once keys are in use both versions put 0x0303 on the wire (RFC 8446 §5.1). */
    KF_ENSURE(h->legacy_version == 0x0303, KF_ERR_TLS_RECORD);
    size_t max = version == KF_TLSREC_TLS13 ? KF_TLSREC_TLS13_CIPHERTEXT_MAX
                                             : KF_TLSREC_TLS12_CIPHERTEXT_MAX;
    KF_ENSURE(h->length <= max, KF_ERR_TLS_RECORD_OVERFLOW);
    /* A zero-length record exists only for application data in plaintext. */
    KF_ENSURE(h->length > 0, KF_ERR_TLS_RECORD);
    return KF_OK;
}

static int open13(kf_tlsrec *r, const uint8_t *rec, size_t body_len, uint8_t *out, size_t cap,
                  uint8_t *type, size_t *out_len)
{
    uint8_t nonce[12];
    KF_ENSURE(rec[0] == KF_TLSREC_APPLICATION_DATA, KF_ERR_TLS_RECORD);
    KF_ENSURE(body_len >= 1 + TAG_LEN, KF_ERR_TLS_RECORD);
    size_t inner = body_len - TAG_LEN;
    KF_ENSURE(inner <= KF_TLSREC_PLAINTEXT_MAX + 1, KF_ERR_TLS_RECORD_OVERFLOW);
    KF_ENSURE(cap >= inner, KF_ERR_NOSPACE);
    xor_nonce(r, r->seq, nonce);
    /* AAD: the record header as received (RFC 8446 §5.2). */
    KF_GUARD(kf_tlsrec_aead_open(r, nonce, rec, KF_TLSREC_HEADER_LEN, rec + KF_TLSREC_HEADER_LEN,
                                 inner, out));
    /* TLSInnerPlaintext: content || type || zeros; the type is the last non-zero byte. */
    size_t i = inner;
    while (i > 0 && out[i - 1] == 0)
        i--;
    if (i == 0) {
        kf_wipe(out, inner);
        return KF_ERR_TLS_RECORD; /* unexpected_message: no content type at all */
    }
    *type = out[i - 1];
    *out_len = i - 1;
    return KF_OK;
}

static int open12(kf_tlsrec *r, const uint8_t *rec, size_t body_len, uint8_t *out, size_t cap,
                  uint8_t *type, size_t *out_len)
{
    uint8_t nonce[12], aad[13];
    const uint8_t *body = rec + KF_TLSREC_HEADER_LEN;
    size_t explicit_len = tls12_explicit_nonce(r) ? TLS12_EXPLICIT_NONCE_LEN : 0;
    KF_ENSURE(body_len >= explicit_len + TAG_LEN, KF_ERR_TLS_RECORD);
    size_t plain = body_len - explicit_len - TAG_LEN;
    KF_ENSURE(plain <= KF_TLSREC_PLAINTEXT_MAX, KF_ERR_TLS_RECORD_OVERFLOW);
    KF_ENSURE(cap >= plain, KF_ERR_NOSPACE);
    if (explicit_len) {
        memcpy(nonce, r->iv, 4);
        memcpy(nonce + 4, body, TLS12_EXPLICIT_NONCE_LEN);
    } else
        xor_nonce(r, r->seq, nonce);
    tls12_aad(r->seq, rec[0], plain, aad);
    KF_GUARD(kf_tlsrec_aead_open(r, nonce, aad, sizeof(aad), body + explicit_len, plain, out));
    *type = rec[0];
    *out_len = plain;
    return KF_OK;
}

int kf_tlsrec_open(kf_tlsrec *r, const uint8_t *rec, size_t rec_len, uint8_t *out, size_t cap,
                   uint8_t *type, size_t *out_len)
{
    struct kf_tlsrec_header h;
    KF_ENSURE(r && rec && out && type && out_len, KF_ERR_ARG);
    KF_GUARD(kf_tlsrec_parse_header(rec, rec_len, r->version, &h));
    KF_ENSURE(rec_len == KF_TLSREC_HEADER_LEN + (size_t)h.length, KF_ERR_ARG);
    KF_ENSURE(r->seq != UINT64_MAX, KF_ERR_TLS_SEQUENCE);
    int rc = r->version == KF_TLSREC_TLS13 ? open13(r, rec, h.length, out, cap, type, out_len)
                                            : open12(r, rec, h.length, out, cap, type, out_len);
    if (rc == KF_OK)
        r->seq++;
    return rc;
}

int kf_tlsrec_seal(kf_tlsrec *r, uint8_t type, const uint8_t *p, size_t n, size_t pad,
                   kf_buf *out)
{
    uint8_t nonce[12], *rec;
    KF_ENSURE(r && out && (p || n == 0), KF_ERR_ARG);
    KF_ENSURE(type >= KF_TLSREC_CHANGE_CIPHER_SPEC && type <= KF_TLSREC_APPLICATION_DATA,
              KF_ERR_ARG);
    KF_ENSURE(n <= KF_TLSREC_PLAINTEXT_MAX, KF_ERR_TLS_RECORD_OVERFLOW);
    KF_ENSURE(r->seq != UINT64_MAX, KF_ERR_TLS_SEQUENCE);
    bool tls13 = r->version == KF_TLSREC_TLS13;
    KF_ENSURE(tls13 || pad == 0, KF_ERR_ARG);
    /* The padded inner plaintext may not exceed 2^14 + 1 (RFC 8446 §5.4). */
    KF_ENSURE(!tls13 || n + 1 + pad <= KF_TLSREC_PLAINTEXT_MAX + 1, KF_ERR_TLS_RECORD_OVERFLOW);
    size_t total = kf_tlsrec_overhead(r, pad) + n, start = out->len;
    KF_GUARD(kf_buf_put_space(out, total, &rec));
    int rc;
    size_t body_len = total - KF_TLSREC_HEADER_LEN;
    rec[0] = tls13 ? KF_TLSREC_APPLICATION_DATA : type;
    rec[1] = 3;
    rec[2] = 3;
    rec[3] = (uint8_t)(body_len >> 8);
    rec[4] = (uint8_t)body_len;
    uint8_t *body = rec + KF_TLSREC_HEADER_LEN;
    if (tls13) {
        /* Build content || type || zeros in place, then encrypt it in place. */
        if (n)
            memmove(body, p, n);
        body[n] = type;
        memset(body + n + 1, 0, pad);
        xor_nonce(r, r->seq, nonce);
        rc = kf_tlsrec_aead_seal(r, nonce, rec, KF_TLSREC_HEADER_LEN, body, n + 1 + pad, body);
    } else {
        uint8_t aad[13];
        size_t explicit_len = 0;
        if (tls12_explicit_nonce(r)) {
            /* The explicit nonce is the sequence number: unique per key. */
            memcpy(nonce, r->iv, 4);
            put_u64(nonce + 4, r->seq);
            memcpy(body, nonce + 4, TLS12_EXPLICIT_NONCE_LEN);
            explicit_len = TLS12_EXPLICIT_NONCE_LEN;
        } else
            xor_nonce(r, r->seq, nonce);
        tls12_aad(r->seq, type, n, aad);
        if (n)
            memmove(body + explicit_len, p, n);
        rc = kf_tlsrec_aead_seal(r, nonce, aad, sizeof(aad), body + explicit_len, n,
                                 body + explicit_len);
    }
    if (rc < 0) {
        out->len = start; /* the failed record is not half in the output */
        return rc;
    }
    r->seq++;
    return KF_OK;
}
