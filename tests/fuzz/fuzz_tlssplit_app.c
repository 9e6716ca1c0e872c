/*
 * Fuzz the application channel's decoders (src/tlssplit/app.c) as either end
 * meets them: the frame header first (every type allowed here), then the
 * body by type -- SETTINGS and answers as a worker reads them, REQUEST and
 * CLOSED as keyfleetd does (a REQUEST names its connection by ID, never a
 * principal). Whatever decodes must re-encode to exactly the
 * input bytes (the encoding is canonical, so the decoders accept nothing
 * beyond the format), and a decoded request must be one TTLV message within
 * the KMIP size limit.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/ttlv.h"
#include "tlssplit/app.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t mem[KF_APP_FRAME_LEN + KF_APP_REQUEST_BODY_MAX];
    uint8_t type;
    kf_buf body, out;
    if (kf_app_decode_frame(data, size, 0xff, &type, &body) != KF_OK)
        return 0;
    kf_buf_fixed(&out, mem, sizeof(mem));
    int rc;
    if (type == KF_APP_SETTINGS) {
        struct kf_app_settings s;
        if (kf_app_decode_settings(&body, &s) != KF_OK)
            return 0;
        rc = kf_app_encode_settings(&s, &out);
    } else if (type == KF_APP_REQUEST) {
        static struct kf_app_request r;
        if (kf_app_decode_request(&body, &r) != KF_OK)
            return 0;
        struct kf_ttlv_limits lim = {.max_total = KF_TLS_MESSAGE_MAX};
        size_t total;
        if (r.msg_len > KF_TLS_MESSAGE_MAX || kf_ttlv_message_length(r.msg, &lim, &total) != KF_OK ||
            total != r.msg_len)
            abort();
        rc = kf_app_encode_request(&r, &out);
    } else if (type == KF_APP_RESPONSE || type == KF_APP_FAILED) {
        struct kf_app_response a;
        if (kf_app_decode_response(type, &body, &a) != KF_OK)
            return 0;
        if ((type == KF_APP_FAILED) != (a.status < 0))
            abort();
        rc = kf_app_encode_response(&a, &out);
    } else {
        if (kf_app_decode_closed(&body) != KF_OK)
            return 0;
        rc = kf_app_encode_closed(&out);
    }
    if (rc != KF_OK || out.len != size || memcmp(mem, data, size) != 0)
        abort();
    return 0;
}
