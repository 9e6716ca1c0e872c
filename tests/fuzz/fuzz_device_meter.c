/*
 * libFuzzer target: the postage device's parsers (include/keyfleet/meter.h),
 * each fed the whole input:
 *   kfd_meter_load           a saved KeyfleetMeterState; a loaded state must
 *                            encode back to exactly the input (canonical), and
 *                            then register and print without breaking it;
 *   kfd_registration_decode  an MR1; whatever decodes has valid fields, so each
 *                            of its MACs can be recomputed;
 *   kfd_piece_parse          a printed line (a NUL-terminated copy); a parsed
 *                            line must format back to exactly itself;
 *   kfd_txdata_decode        the first 40 bytes; decoded data must encode back.
 * Seeds: tests/fuzz/corpus/fuzz_device_meter/ (a state, an MR1, a line, a txdata).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/meter.h"

static int store_ok(void *ctx, const uint8_t *state, size_t len)
{
    (void)ctx, (void)state, (void)len;
    return 0;
}

static void meter_state(const uint8_t *data, size_t size)
{
    struct kfd_meter m;
    if (kfd_meter_load(&m, data, size, store_ok, NULL) != KF_OK)
        return;
    uint8_t again[KFD_METER_STATE_MAX];
    kf_buf out;
    kf_buf_fixed(&out, again, sizeof(again));
    if (kfd_meter_encode(&m, &out) != KF_OK || out.len != size || memcmp(again, data, size) != 0)
        abort();
    /* Drive the loaded device: print with its first two domains, register again. */
    if (m.slot[0].used && m.slot[1].used) {
        struct kfd_piece piece;
        uint64_t before = m.piece_count;
        int rc = kfd_meter_print(&m, m.slot[0].domain, m.slot[1].domain, 20991231, 1, "A", &piece);
        if (rc == KF_OK && (m.piece_count != before + 1 || piece.tx.piece_count != before + 1))
            abort();
        if (rc != KF_OK && m.piece_count != before)
            abort();
    }
    uint8_t mem[KFD_REGISTRATION_MAX];
    kf_buf mr1;
    kf_buf_fixed(&mr1, mem, sizeof(mem));
    const char *country = m.country[0] ? m.country : "DE";
    if (kfd_meter_register(&m, country, "IND-1", 4102444799, NULL, NULL, &mr1) == KF_OK) {
        struct kfd_registration r;
        if (kfd_registration_decode(mem, mr1.len, &r) != KF_OK)
            abort();
    }
    kfd_meter_wipe(&m);
}

static void registration(const uint8_t *data, size_t size)
{
    struct kfd_registration r;
    if (kfd_registration_decode(data, size, &r) != KF_OK)
        return;
    if (r.nmacs < 1 || r.nmacs > KFD_METER_DOMAINS)
        abort();
    static const uint8_t key[KFD_METER_KEY_LEN] = {1};
    for (size_t i = 0; i < r.nmacs; i++) {
        uint8_t mac[16];
        if (kfd_registration_mac(key, &r, r.mac[i].domain, r.mac[i].key_id, mac) != KF_OK)
            abort();
    }
}

static void printed_line(const uint8_t *data, size_t size)
{
    char line[KFD_PIECE_TEXT_MAX + 1];
    size_t n = size < KFD_PIECE_TEXT_MAX ? size : KFD_PIECE_TEXT_MAX;
    memcpy(line, data, n);
    line[n] = '\0';
    struct kfd_piece p;
    if (kfd_piece_parse(line, &p) != KF_OK)
        return;
    char again[KFD_PIECE_TEXT_MAX];
    if (kfd_piece_format(&p, again) != KF_OK || strcmp(again, line) != 0)
        abort();
}

static void txdata(const uint8_t *data, size_t size)
{
    if (size < KFD_TXDATA_LEN)
        return;
    struct kfd_txdata tx;
    if (kfd_txdata_decode(data, &tx) != KF_OK)
        return;
    uint8_t again[KFD_TXDATA_LEN];
    if (kfd_txdata_encode(&tx, again) != KF_OK || memcmp(again, data, KFD_TXDATA_LEN) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    meter_state(data, size);
    registration(data, size);
    printed_line(data, size);
    txdata(data, size);
    return 0;
}
