/*
 * Fuzz the session channel's decoder (RECORD: one TLS record the worker
 * forwards to the handler). A decoded record is exactly one well-formed
 * record and re-encodes to the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tlssplit/channel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t mem[KF_SPLIT_SESSION_MAX];
    uint8_t type;
    kf_buf body, out;
    const uint8_t *rec;
    size_t len;
    if (kf_split_decode_frame(data, size, KF_SPLIT_SESSION_MAX, &type, &body) != KF_OK ||
        type != KF_SPLIT_RECORD || kf_split_decode_record(&body, &rec, &len) != KF_OK)
        return 0;
    struct kf_tlsrec_header h;
    if (kf_tlsrec_parse_header(rec, len, KF_TLSREC_TLS12, &h) != KF_OK ||
        len != KF_TLSREC_HEADER_LEN + (size_t)h.length)
        abort();
    kf_buf_fixed(&out, mem, sizeof(mem));
    if (kf_split_encode_record(rec, len, &out) != KF_OK || out.len != size ||
        memcmp(mem, data, size) != 0)
        abort();
    return 0;
}
