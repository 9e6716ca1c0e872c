/*
 * Fuzz the worker's record parser (kf_tlsrec_parse_header + kf_tlsrec_open)
 * the way the worker meets bytes from the network: a stream cut into records
 * by their headers. The first input byte picks version and cipher; the key is
 * fixed, so most records fail their tag, and the harness also seals every
 * record body it sees under a second state and opens it again: a sealed
 * record must always open to the same type and bytes, and a refused one must
 * leave the sequence number where it was.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/tlssplit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t ciphers[3] = {KF_TLSREC_AES_128_GCM, KF_TLSREC_AES_256_GCM,
                                   KF_TLSREC_CHACHA20_POLY1305};

static void round_trip(const struct kf_tlsrec_state *st, uint8_t type, const uint8_t *p, size_t n,
                       size_t pad)
{
    static uint8_t mem[KF_TLSREC_MAX], out[KF_TLSREC_PLAINTEXT_MAX + 1];
    kf_tlsrec *w, *r;
    if (kf_tlsrec_new(st, &w) != KF_OK || kf_tlsrec_new(st, &r) != KF_OK)
        abort();
    kf_buf b;
    kf_buf_fixed(&b, mem, sizeof(mem));
    if (st->version != KF_TLSREC_TLS13)
        pad = 0;
    if (n + pad > KF_TLSREC_PLAINTEXT_MAX)
        pad = 0;
    int rc = kf_tlsrec_seal(w, type, p, n, pad, &b);
    if (n > KF_TLSREC_PLAINTEXT_MAX) {
        if (rc != KF_ERR_TLS_RECORD_OVERFLOW)
            abort();
    } else {
        uint8_t got_type;
        size_t got;
        if (rc != KF_OK)
            abort();
        if (kf_tlsrec_open(r, mem, b.len, out, sizeof(out), &got_type, &got) != KF_OK)
            abort();
        /* The type is a valid one, so even content ending in zero bytes
         * comes back exactly (padding stops at the type byte). */
        if (got_type != type || got != n || (n && memcmp(out, p, n) != 0))
            abort();
        if (kf_tlsrec_seq(r) != st->seq + 1 || kf_tlsrec_seq(w) != st->seq + 1)
            abort();
    }
    kf_tlsrec_free(w);
    kf_tlsrec_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t out[KF_TLSREC_PLAINTEXT_MAX + 1];
    if (size < 2)
        return 0;
    struct kf_tlsrec_state st = {0};
    st.version = (data[0] & 1) ? KF_TLSREC_TLS13 : KF_TLSREC_TLS12;
    st.cipher = ciphers[(data[0] >> 1) % 3];
    st.key_len = st.cipher == KF_TLSREC_AES_128_GCM ? 16 : 32;
    st.iv_len = (uint8_t)kf_tlsrec_iv_len(st.version, st.cipher);
    st.seq = data[1];
    memset(st.key, 0x42, sizeof(st.key));
    memset(st.iv, 0x17, sizeof(st.iv));
    kf_tlsrec *r;
    if (kf_tlsrec_new(&st, &r) != KF_OK)
        abort();
    size_t off = 2;
    while (off < size) {
        struct kf_tlsrec_header h;
        int rc = kf_tlsrec_parse_header(data + off, size - off, st.version, &h);
        if (rc != KF_OK)
            break;
        size_t rec_len = KF_TLSREC_HEADER_LEN + (size_t)h.length;
        if (rec_len > size - off)
            break; /* the worker would wait for more */
        uint64_t seq = kf_tlsrec_seq(r);
        uint8_t type;
        size_t got;
        rc = kf_tlsrec_open(r, data + off, rec_len, out, sizeof(out), &type, &got);
        if (rc == KF_OK ? kf_tlsrec_seq(r) != seq + 1 : kf_tlsrec_seq(r) != seq)
            abort();
        if (rc == KF_OK && (got > KF_TLSREC_PLAINTEXT_MAX || type < 20 || type > 23))
            abort();
        round_trip(&st, h.type, data + off + KF_TLSREC_HEADER_LEN, h.length, h.length % 32);
        off += rec_len;
    }
    kf_tlsrec_free(r);
    return 0;
}
