/*
 * Internals of the manufacturing record module (src/mfg/): syntax checks the
 * record codec, the envelope and the token key table share.
 */
#ifndef KEYFLEET_MFG_INTERNAL_H
#define KEYFLEET_MFG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The signature input's label: "keyfleet-mfg-v1" || 0x00 (docs/manufacturing.md). */
#define MFG_SIG_LABEL "keyfleet-mfg-v1"
#define MFG_SIG_PREFIX_LEN (sizeof(MFG_SIG_LABEL) + 4 + KF_MFG_ROLE_ID_LEN) /* label, NUL, [record type]_32, signer */

struct kf_mfg_record;
struct kf_buf;

/* Most bytes a body of this record type may have. */
size_t mfg_body_limit(uint32_t type);
/* Append rec's body (KF_ERR_ARG if rec does not fit its type's table). */
int mfg_body_encode(const struct kf_mfg_record *rec, struct kf_buf *out);

/* A keyfleet domain name: 1..64 of A-Z a-z 0-9 . _ - (as kf_domain_name_valid in
 * the store, which this module does not link). */
bool mfg_domain_valid(const char *name);
/* A period YYYYMM with year 1970..9999 and month 01..12. */
bool mfg_period_valid(uint32_t period);
/* The C string in a fixed char array of size n has a terminator inside it. */
bool mfg_text_fits(const char *s, size_t n);

#endif
