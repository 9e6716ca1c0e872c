/*
 * libFuzzer target: the manufacturing record decoders (src/mfg/).
 *
 * - The input as envelopes back to back (kf_mfg_envelope_parse with *used):
 *   each parsed envelope's body points inside the input and its length is
 *   the one used; its body goes to kf_mfg_record_decode; each envelope goes
 *   to kf_mfg_cert_check under a fixed authority key (bytes 00..1f as the
 *   Ed25519 private key, as the seeds are signed, so seeds pass the check).
 * - The input as one body: whatever decodes must encode back to exactly the
 *   input (the encoding is canonical), a TokenKeys table must point into it.
 * - The input in 116-byte chunks as token key entries: an entry that reads
 *   must write back to the same bytes.
 * Seeds: tests/fuzz/corpus/fuzz_mfg_record/, written by the fuzz_seeds test
 * in tests/unit/test_mfg.c (KF_MFG_CORPUS_DIR=<dir> ./test_mfg).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/mfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t authority_pub[32];

static void init_key(void)
{
    static int done;
    if (done)
        return;
    uint8_t priv[32];
    for (int i = 0; i < 32; i++)
        priv[i] = (uint8_t)i;
    if (kf_ed25519_public(priv, authority_pub) != KF_OK)
        abort();
    done = 1;
}

static void check_body(const uint8_t *body, size_t len)
{
    struct kf_mfg_record rec;
    if (kf_mfg_record_decode(body, len, 0, &rec) != KF_OK)
        return;
    if (rec.type < 1 || rec.type > KF_MFG_REC_MAX)
        abort();
    if (rec.table && (rec.table < body || rec.table_len > len ||
                      (size_t)(rec.table - body) > len - rec.table_len ||
                      rec.table_len % KF_MFG_TOKEN_KEY_ENTRY_LEN != 0))
        abort();
    kf_buf out;
    if (kf_buf_alloc(&out, 0, KF_MFG_TOKEN_KEYS_MAX + 4096, 0) != KF_OK)
        abort();
    if (kf_mfg_record_encode(&rec, &out) != KF_OK || out.len != len ||
        memcmp(out.data, body, len) != 0)
        abort();
    kf_buf_free(&out);
}

static void check_envelopes(const uint8_t *data, size_t size)
{
    kf_buf in;
    kf_buf_reader(&in, data, size);
    while (kf_buf_remaining(&in) > 0) {
        const uint8_t *msg = kf_buf_read_ptr(&in);
        size_t left = kf_buf_remaining(&in), used;
        struct kf_mfg_envelope env;
        if (kf_mfg_envelope_parse(msg, left, &env, &used) != KF_OK)
            break;
        if (used == 0 || used > left || env.body < msg || env.body_len > used ||
            (size_t)(env.body - msg) > used - env.body_len ||
            !kf_mfg_role_id_parse(env.signer, NULL))
            abort();
        check_body(env.body, env.body_len);
        struct kf_mfg_record rec;
        int rc = kf_mfg_cert_check(msg, used, authority_pub, "VENDOR", 0, &rec);
        if (rc == KF_OK && (rec.type != KF_MFG_REC_ROLE_CERT || strcmp(rec.domain, "VENDOR") != 0))
            abort();
        if (kf_buf_skip(&in, used) != KF_OK)
            abort();
    }
}

static void check_entries(const uint8_t *data, size_t size)
{
    kf_buf in;
    kf_buf_reader(&in, data, size);
    const uint8_t *chunk;
    while (kf_buf_get_ptr(&in, KF_MFG_TOKEN_KEY_ENTRY_LEN, &chunk) == KF_OK) {
        struct kf_mfg_token_key_entry e;
        if (kf_mfg_token_key_entry_get(chunk, &e) != KF_OK)
            continue;
        uint8_t again[KF_MFG_TOKEN_KEY_ENTRY_LEN];
        if (!kf_mfg_msn_valid(e.msn))
            abort();
        kf_mfg_token_key_entry_put(&e, again);
        if (memcmp(again, chunk, sizeof(again)) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_key();
    check_envelopes(data, size);
    check_body(data, size);
    check_entries(data, size);
    return 0;
}
