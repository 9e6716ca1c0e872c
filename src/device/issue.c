/*
 * The server's half of the part format: building SM_X and checking a
 * device's acknowledgement. keyfleetd links these; a device never needs
 * them, so they live apart from the device core (scripts/device-footprint.sh
 * leaves this file out).
 */
#include <string.h>

#include "device/internal.h"

static int check_issue(enum kfd_role role, const char *id_a, const char *id_b,
                       const struct kfd_issue_kek *meta, uint32_t count)
{
    KF_ENSURE(role == KFD_ROLE_A || role == KFD_ROLE_B, KF_ERR_ARG);
    KF_GUARD(kfd_id_valid(id_a));
    KF_GUARD(kfd_id_valid(id_b));
    KF_ENSURE(count >= 1 && count <= KFD_MAX_KEKS, KF_ERR_ARG);
    /* KEK 0 means "not attributable" in an ack, and IDs are consecutive: the header carries the
     * first. */
    KF_ENSURE(meta[0].kek_id >= 1 && meta[0].kek_id <= UINT64_MAX - count, KF_ERR_ARG);
    for (uint32_t i = 0; i < count; i++) {
        KF_ENSURE(meta[i].kek_id == meta[0].kek_id + i, KF_ERR_ARG);
        KF_ENSURE(meta[i].not_before < meta[i].not_after, KF_ERR_ARG);
    }
    return KF_OK;
}

static int put_header(kf_buf *part, enum kfd_role role, const char *id_a, const char *id_b,
                      uint64_t counter, const struct kfd_issue_kek *meta, uint32_t count,
                      const uint8_t nonce[KFD_NONCE_LEN])
{
    size_t header, validity;
    KF_GUARD(kfd_put_open(part, KMIP_TAG_KEYFLEET_PAIR_HEADER, &header));
    KF_GUARD(kfd_put_u32(part, KMIP_TAG_KEYFLEET_PROTO_VERSION, KFD_PROTO_VERSION));
    KF_GUARD(kfd_put_u64(part, KMIP_TAG_KEYFLEET_KEK_ID, meta[0].kek_id));
    KF_GUARD(kfd_put_u32(part, KMIP_TAG_KEYFLEET_KEK_COUNT, count));
    KF_GUARD(kfd_put_text(part, KMIP_TAG_KEYFLEET_DEVICE_ID_A, id_a));
    KF_GUARD(kfd_put_text(part, KMIP_TAG_KEYFLEET_DEVICE_ID_B, id_b));
    KF_GUARD(kfd_put_u32(part, KMIP_TAG_KEYFLEET_PAIR_ROLE, (uint32_t)role));
    KF_GUARD(kfd_put_u64(part, KMIP_TAG_KEYFLEET_COUNTER, counter));
    KF_GUARD(kfd_put_bytes(part, KMIP_TAG_KEYFLEET_NONCE, nonce, KFD_NONCE_LEN));
    for (uint32_t i = 0; i < count; i++) {
        KF_GUARD(kfd_put_open(part, KMIP_TAG_KEYFLEET_KEK_VALIDITY, &validity));
        KF_GUARD(kfd_put_u64(part, KMIP_TAG_KEYFLEET_NOT_BEFORE, (uint64_t)meta[i].not_before));
        KF_GUARD(kfd_put_u64(part, KMIP_TAG_KEYFLEET_NOT_AFTER, (uint64_t)meta[i].not_after));
        KF_GUARD(kfd_put_u32(part, KMIP_TAG_KEYFLEET_MAX_USES, meta[i].max_uses));
        KF_GUARD(kfd_put_close(part, validity));
    }
    return kfd_put_close(part, header);
}

/* PairPart {PairHeader, SealedData = CCM_MSK(KEK_0 || ... ), AAD = the header's bytes}. */
static int put_part(const uint8_t mkek[KFD_KEY_LEN], enum kfd_role role, const char *id_a,
                    const char *id_b, uint64_t counter, const struct kfd_issue_kek *meta,
                    const uint8_t (*keks)[KFD_KEY_LEN], uint32_t count,
                    const uint8_t nonce[KFD_NONCE_LEN], kf_buf *part)
{
    size_t outer, sealed_len = count * KFD_KEY_LEN;
    uint8_t *sealed, msk[KFD_KEY_LEN];
    KF_GUARD(kfd_put_open(part, KMIP_TAG_KEYFLEET_PAIR_PART, &outer));
    size_t header = part->len;
    KF_GUARD(put_header(part, role, id_a, id_b, counter, meta, count, nonce));
    size_t header_len = part->len - header;
    KF_GUARD(kfd_put_bytes_space(part, KMIP_TAG_KEYFLEET_SEALED_DATA, sealed_len + KFD_TAG_LEN,
                                 &sealed));
    /* The buffer does not grow from here on, so the header bytes stay where they are. */
    KF_GUARD(kfd_msk(mkek, role == KFD_ROLE_A ? id_a : id_b, counter, msk));
    kfd_aead_seal(msk, nonce, part->data + header, header_len, keks[0], sealed_len, sealed);
    kfd_wipe(msk, sizeof(msk));
    return kfd_put_close(part, outer);
}

int kfd_issue_part(const uint8_t mkek[KFD_KEY_LEN], enum kfd_role role, const char *id_a,
                   const char *id_b, uint64_t counter, const struct kfd_issue_kek *meta,
                   const uint8_t (*keks)[KFD_KEY_LEN], uint32_t count,
                   const uint8_t nonce[KFD_NONCE_LEN], kf_buf *part)
{
    KF_ENSURE(mkek && meta && keks && nonce && part, KF_ERR_ARG);
    KF_GUARD(check_issue(role, id_a, id_b, meta, count));
    size_t start = part->len;
    int rc = put_part(mkek, role, id_a, id_b, counter, meta, keks, count, nonce, part);
    if (rc != KF_OK) {
        part->len = start; /* no half-written part is left behind */
        return rc;
    }
    return KF_OK;
}

int kfd_ack_verify(const struct kfd_ack *a, const uint8_t mkek[KFD_KEY_LEN])
{
    KF_ENSURE(a && mkek && a->body.p, KF_ERR_ARG);
    uint8_t ak[KFD_KEY_LEN], mac[KFD_MAC_LEN];
    KF_GUARD(kfd_ak(mkek, a->device, ak));
    kfd_mac(ak, a->body.p, a->body.len, mac);
    kfd_wipe(ak, sizeof(ak));
    return kfd_equal(mac, a->mac, KFD_MAC_LEN) ? KF_OK : KF_ERR_PAIR_INTEGRITY;
}
