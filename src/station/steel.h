/*
 * The installation station's checks and reports (seed EP 0 735 720 Fig. 29/30,
 * MI4-MI10; docs/manufacturing.md "Installation"), kept apart from the tool
 * (tools/keyfleet-install.c) so that they are unit tested without a server:
 *
 *   MI5   steel_check_mi4: Oak's signature under the saved O certificate, the
 *         record's domain and status, this Steel's ID, key ID above the last
 *         seen. The caller then stores the key ID durably
 *         (kf_station_set_last_key_id) BEFORE opening and installing K.
 *   MI7   steel_installed / steel_install_failed: the signed report.
 *   MI10  steel_check_confirm: Brass's signature under the saved B
 *         certificate, domain, key ID, status Installed or Bad.
 *   MR4   steel_check_registered: Brass's ConfirmRegistered of a domain.
 *
 * Every function returns KF_OK or the kf error that is the refusal's reason.
 */
#ifndef KF_STATION_STEEL_H
#define KF_STATION_STEEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/station.h"

/*
 * MI4 (a Distribute record, signed by Oak) for domain. rec receives the
 * record even when it is refused, as far as it decodes (*decoded says so), so
 * that a refusal can be reported for its key ID; nothing of a refused record
 * is trusted. Refusals: KF_ERR_MFG_FRAMING, KF_ERR_BAD_SIGNATURE (not Oak's,
 * or modified), KF_ERR_MFG_PARAM (another domain, not New),
 * KF_ERR_MFG_STEEL_ID, KF_ERR_MFG_KEY_ID, KF_ERR_MFG_ROLE (not enrolled).
 */
KF_RESULT int steel_check_mi4(const kf_station *st, const char *domain, const uint8_t *mi4,
                              size_t len, struct kf_mfg_record *rec, bool *decoded);

/* MI7 Installed for mi4's key in device msn, with the device's test tokens. */
KF_RESULT int steel_installed(const kf_station *st, const struct kf_mfg_record *mi4,
                              const char *msn, const uint8_t tokens[KF_MFG_TEST_TOKENS_LEN],
                              int64_t event_time, kf_buf *out);
/* InstallFailed (status Bad) for the key (domain, key_id) made for steel_id;
 * msn may be NULL (no device got it). */
KF_RESULT int steel_install_failed(const kf_station *st, const char *domain, const char *steel_id,
                                   uint64_t key_id, const char *msn, int reason, int64_t event_time,
                                   kf_buf *out);

/* MI10 ConfirmInstalled for (domain, key_id), signed by the domain's Brass. */
KF_RESULT int steel_check_confirm(const kf_station *st, const char *domain, uint64_t key_id,
                                  const uint8_t *mi10, size_t len, struct kf_mfg_record *rec);
/* MR4 ConfirmRegistered, signed by domain's Brass. */
KF_RESULT int steel_check_registered(const kf_station *st, const char *domain, const uint8_t *mr4,
                                     size_t len, struct kf_mfg_record *rec);

#endif
