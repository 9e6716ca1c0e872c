/*
 * Fuzz the operator share text decoder (kf_share_decode). Besides memory
 * safety it checks two properties: whatever decodes re-encodes to text that
 * decodes to the same share, and the canonical text is never longer than
 * the input (decoding accepts nothing beyond the format).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/secmod.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kf_share share, again;
    if (kf_share_decode((const char *)data, size, &share) != KF_OK)
        return 0;
    if (share.m < 1 || share.m > 255 || share.x < 1 || share.len < 1 ||
        share.len > KF_SHARE_BYTES_MAX)
        abort();
    char text[KF_SHARE_MAX];
    if (kf_share_encode(&share, text) != KF_OK)
        abort();
    size_t len = strlen(text);
    if (len != size)
        abort(); /* only the case of hex digits may differ from the canonical form */
    if (kf_share_decode(text, len, &again) != KF_OK)
        abort();
    if (again.m != share.m || again.x != share.x || again.len != share.len ||
        memcmp(again.y, share.y, share.len) != 0)
        abort();
    return 0;
}
