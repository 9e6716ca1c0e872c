/*
 * Fuzz the broker channel's decoders (CONFIG once, then START per
 * connection), what the session handler reads from the host. Whatever
 * decodes re-encodes to exactly the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tlssplit/channel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t mem[KF_SPLIT_BROKER_MAX];
    static struct kf_split_config c;
    uint8_t type;
    kf_buf body, out;
    if (kf_split_decode_frame(data, size, KF_SPLIT_BROKER_MAX, &type, &body) != KF_OK)
        return 0;
    kf_buf_fixed(&out, mem, sizeof(mem));
    int rc;
    if (type == KF_SPLIT_CONFIG) {
        if (kf_split_decode_config(&body, &c) != KF_OK)
            return 0;
        rc = kf_split_encode_config(&c, &out);
    } else if (type == KF_SPLIT_START) {
        struct kf_split_start s;
        if (kf_split_decode_start(&body, &s) != KF_OK)
            return 0;
        if (strlen(s.peer) > KF_SPLIT_PEER_MAX)
            abort();
        rc = kf_split_encode_start(&s, &out);
    } else
        return 0;
    if (rc != KF_OK || out.len != size || memcmp(mem, data, size) != 0)
        abort();
    return 0;
}
