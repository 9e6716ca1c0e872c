/*
 * The device library's own TTLV codec (no server code): a writer that puts
 * one item at a time into a kf_buf and back-patches structure lengths, and a
 * reader that takes one item at a time from a kf_buf and checks it against
 * the schema below. Message layouts are the sequences of calls in the
 * encoders and decoders (pair.c, session.c, state.c, kmip.c), so the order of
 * items is the order of the code; this file knows every tag's type and
 * length bounds. No recursion, no allocation.
 *
 * Encoding (KMIP 9.1.1): tag 3 bytes, type 1 byte, length 4 bytes, value
 * padded with zeros to a multiple of 8. Integer, Enumeration and Interval are
 * 4 bytes, LongInteger, DateTime and Boolean 8, a Structure's value is its
 * items.
 */
#ifndef KFD_WIRE_H
#define KFD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/buf.h"
#include "keyfleet/device.h"

enum kfd_ttlv_type {
    KFD_STRUCTURE = 0x01,
    KFD_INTEGER = 0x02,
    KFD_LONG_INTEGER = 0x03,
    KFD_ENUMERATION = 0x05,
    KFD_BOOLEAN = 0x06,
    KFD_TEXT_STRING = 0x07,
    KFD_BYTE_STRING = 0x08,
    KFD_DATE_TIME = 0x09,
    KFD_INTERVAL = 0x0A,
};

#define KFD_ITEM_HEAD 8u                 /* tag, type, length */
#define KFD_KMIP_MAX (KFD_MSG_MAX + 512) /* a KMIP envelope around one payload */

/* ---- writer ---- */
/* Open a Structure; *mark remembers where its length goes. */
KF_RESULT int kfd_put_open(kf_buf *b, uint32_t tag, size_t *mark);
/* Close the Structure opened at mark: patch its length. */
KF_RESULT int kfd_put_close(kf_buf *b, size_t mark);
/* Integer, Enumeration or Interval (the schema says which). */
KF_RESULT int kfd_put_u32(kf_buf *b, uint32_t tag, uint32_t v);
/* LongInteger or DateTime. */
KF_RESULT int kfd_put_u64(kf_buf *b, uint32_t tag, uint64_t v);
KF_RESULT int kfd_put_text(kf_buf *b, uint32_t tag, const char *s);
KF_RESULT int kfd_put_bytes(kf_buf *b, uint32_t tag, const uint8_t *p, size_t n);
/* A ByteString whose value the caller fills in: *value points at its n bytes
 * and stays valid until the next put (b does not grow in between). */
KF_RESULT int kfd_put_bytes_space(kf_buf *b, uint32_t tag, size_t n, uint8_t **value);

/* ---- reader ----
 * Every get takes the next item of r, which must have the expected tag, the
 * schema's type and a length within the schema's bounds, with zero padding;
 * anything else is KF_ERR_PAIR_MALFORMED and r is left where it was. */
/* Enter a Structure: inner reads its items; whole spans its full TTLV bytes. */
KF_RESULT int kfd_get_open(kf_buf *r, uint32_t tag, kf_buf *inner, struct kfd_span *whole);
KF_RESULT int kfd_get_u32(kf_buf *r, uint32_t tag, uint32_t *v);
KF_RESULT int kfd_get_u64(kf_buf *r, uint32_t tag, uint64_t *v);
KF_RESULT int kfd_get_i64(kf_buf *r, uint32_t tag, int64_t *v);
KF_RESULT int kfd_get_bytes(kf_buf *r, uint32_t tag, struct kfd_span *v);
/* A ByteString of exactly n bytes, copied out. */
KF_RESULT int kfd_get_key(kf_buf *r, uint32_t tag, uint8_t *out, size_t n);
KF_RESULT int kfd_get_text(kf_buf *r, uint32_t tag, struct kfd_span *v);
/* A TextString that must be a valid device ID (or domain name). */
KF_RESULT int kfd_get_id(kf_buf *r, uint32_t tag, char out[KFD_ID_MAX + 1]);
/* Skip the next item whatever its tag (well-formed header only; a Structure
 * is skipped whole). For KMIP header fields this library does not use. */
KF_RESULT int kfd_skip_item(kf_buf *r);
/* True if the next item has this tag (for optional and repeated items). */
bool kfd_next_is(const kf_buf *r, uint32_t tag);
/* KF_OK if r has no bytes left. */
KF_RESULT int kfd_get_end(const kf_buf *r);

#endif
