/*
 * Fuzz the broker channel's decoders (CONFIG once, then START per
 * connection: role 1 for a server handler, role 2 with server name and
 * flags for a client handler), what the session handler reads from the
 * host, and ACCEPTED (START's body, role 1 only), what a worker process
 * reads from its dispatch channel. Whatever decodes re-encodes to exactly
 * the input.
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
    } else if (type == KF_SPLIT_START || type == KF_SPLIT_ACCEPTED) {
        struct kf_split_start s;
        if ((type == KF_SPLIT_START ? kf_split_decode_start(&body, &s)
                                    : kf_split_decode_accepted(&body, &s)) != KF_OK)
            return 0;
        size_t n = strlen(s.server_name);
        if (strlen(s.peer) > KF_SPLIT_PEER_MAX || n > KF_SPLIT_NAME_MAX)
            abort();
        if (s.role == KF_SPLIT_ROLE_CLIENT) {
            /* What SNI and the certificate check get: printable, not empty. */
            if (type != KF_SPLIT_START || n == 0 || (s.flags & ~KF_SPLIT_START_NO_RESUME))
                abort();
            for (size_t i = 0; i < n; i++)
                if (s.server_name[i] < 0x21 || s.server_name[i] > 0x7e)
                    abort();
        } else if (s.role != KF_SPLIT_ROLE_SERVER || n != 0 || s.flags != 0)
            abort();
        rc = type == KF_SPLIT_START ? kf_split_encode_start(&s, &out)
                                    : kf_split_encode_accepted(&s, &out);
    } else if (type == KF_SPLIT_READY) { /* handler -> host on the same channel */
        if (kf_split_decode_ready(&body) != KF_OK)
            return 0;
        rc = kf_split_encode_ready(&out);
    } else
        return 0;
    if (rc != KF_OK || out.len != size || memcmp(mem, data, size) != 0)
        abort();
    return 0;
}
