/*
 * libFuzzer harness for the TTLV codec and the KMIP XML reader.
 * Binary: whatever decodes must re-encode byte for byte, frame to its own
 * length, and survive to_xml -> from_xml -> encode unchanged. XML: the
 * same input read as a KMIP XML document must never crash, and each message
 * it yields must survive encode -> decode -> encode.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/ttlv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct kf_ttlv_limits fuzz_limits = {
    .max_depth = 32, .max_items = 2000, .max_total = 1 << 16, .max_item_len = 1 << 16};

static void same_bytes(const kf_buf *b, const uint8_t *data, size_t size)
{
    if (b->len != size || memcmp(b->data, data, size) != 0)
        abort();
}

static void check_binary(const uint8_t *data, size_t size, kf_arena *a)
{
    kf_ttlv *root;
    if (kf_ttlv_decode(data, size, &fuzz_limits, a, &root) < 0)
        return;
    kf_buf out = {0}, xml = {0};
    if (kf_buf_alloc(&out, 0, 1 << 20, 0) < 0 || kf_buf_alloc(&xml, 0, 1 << 24, 0) < 0)
        abort();
    if (kf_ttlv_encode(root, &out) < 0)
        abort();
    same_bytes(&out, data, size);

    size_t total;
    if (kf_ttlv_message_length(data, &fuzz_limits, &total) < 0 || total != size)
        abort();

    if (kf_ttlv_to_xml(root, &xml) < 0)
        abort();
    struct kf_ttlv_limits xml_lim = {.max_total = 1 << 24, .max_item_len = 1 << 16};
    struct kf_ttlv_xml_opts opts = {.lim = &xml_lim};
    kf_ttlv *again;
    if (kf_ttlv_from_xml_ex((const char *)xml.data, xml.len, &opts, a, &again) < 0)
        abort();
    kf_buf_reset(&out);
    if (kf_ttlv_encode(again, &out) < 0)
        abort();
    same_bytes(&out, data, size);

    kf_buf dump = {0};
    if (kf_buf_alloc(&dump, 0, 1 << 24, 0) < 0 || kf_ttlv_dump(root, &dump) < 0)
        abort();
    kf_buf_free(&dump);
    kf_buf_free(&out);
    kf_buf_free(&xml);
}

static void check_xml(const uint8_t *data, size_t size, kf_arena *a)
{
    struct kf_ttlv_xml_opts opts = {.lim = &fuzz_limits, .now = 1205495800};
    kf_ttlv *msg;
    size_t count;
    if (kf_ttlv_from_xml_messages((const char *)data, size, &opts, a, &msg, &count) < 0)
        return;
    for (; msg; msg = msg->next) {
        kf_buf out = {0}, out2 = {0};
        if (kf_buf_alloc(&out, 0, 1 << 22, 0) < 0 || kf_buf_alloc(&out2, 0, 1 << 22, 0) < 0)
            abort();
        if (kf_ttlv_encode(msg, &out) < 0)
            abort();
        kf_ttlv *decoded;
        struct kf_ttlv_limits big = {.max_total = 1 << 22, .max_item_len = 1 << 22, .max_items = 100000};
        if (kf_ttlv_decode(out.data, out.len, &big, a, &decoded) < 0)
            abort();
        if (kf_ttlv_encode(decoded, &out2) < 0)
            abort();
        same_bytes(&out2, out.data, out.len);
        kf_buf_free(&out);
        kf_buf_free(&out2);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kf_arena *a;
    if (kf_arena_new(&a, 64u << 20) < 0)
        abort();
    check_binary(data, size, a);
    kf_arena_reset(a);
    check_xml(data, size, a);
    kf_arena_free(a);
    return 0;
}
