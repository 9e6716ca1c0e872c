/*
 * Fuzz the control channel's decoders (GIVE -- with the principal or a
 * connection ID -- and END from the handler, TAKE from the worker) and the
 * peers channel's (PEER and GONE from the handler to keyfleetd) as the
 * receiving side meets them: the frame first, then
 * the body. Whatever decodes must re-encode to exactly the input bytes (the
 * encoding is canonical, so the decoder accepts nothing beyond the format).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tlssplit/channel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t mem[KF_SPLIT_CONTROL_MAX];
    uint8_t type;
    kf_buf body, out;
    if (kf_split_decode_frame(data, size, KF_SPLIT_CONTROL_MAX, &type, &body) != KF_OK)
        return 0;
    kf_buf_fixed(&out, mem, sizeof(mem));
    int rc;
    if (type == KF_SPLIT_GIVE) {
        struct kf_split_give g;
        if (kf_split_decode_give(&body, &g) != KF_OK)
            return 0;
        /* What the worker would do with it: key both directions. */
        kf_tlsrec *rd, *wr;
        if (kf_tlsrec_new(&g.rd, &rd) != KF_OK || kf_tlsrec_new(&g.wr, &wr) != KF_OK)
            abort();
        kf_tlsrec_free(rd);
        kf_tlsrec_free(wr);
        rc = kf_split_encode_give(&g, &out);
    } else if (type == KF_SPLIT_END) {
        struct kf_split_end e;
        if (kf_split_decode_end(&body, &e) != KF_OK)
            return 0;
        rc = kf_split_encode_end(&e, &out);
    } else if (type == KF_SPLIT_TAKE) {
        struct kf_split_take t;
        if (kf_split_decode_take(&body, &t) != KF_OK)
            return 0;
        rc = kf_split_encode_take(&t, &out);
    } else if (type == KF_SPLIT_PEER) {
        struct kf_split_peer p;
        if (kf_split_decode_peer(&body, &p) != KF_OK)
            return 0;
        rc = kf_split_encode_peer(&p, &out);
    } else if (type == KF_SPLIT_GONE) {
        uint8_t id[KF_SPLIT_CONN_ID_LEN];
        if (kf_split_decode_gone(&body, id) != KF_OK)
            return 0;
        rc = kf_split_encode_gone(id, &out);
    } else
        return 0;
    if (rc != KF_OK || out.len != size || memcmp(mem, data, size) != 0)
        abort();
    return 0;
}
