/*
 * The KMIP object lifecycle (KMIP 1.4 §3.22 "State"), as a pure function of
 * (state, event). The spec's permitted transitions, numbered as there:
 *   1  (none)      -> Pre-Active   creation (Create/Register)
 *   2  Pre-Active  -> Destroyed    Destroy
 *   3  Pre-Active  -> Compromised  Revoke, reason Compromised
 *   4  Pre-Active  -> Active       Activate, or the Activation Date is reached
 *   5  Active      -> Compromised  Revoke, reason Compromised
 *   6  Active      -> Deactivated  Revoke, other reason, or the Deactivation Date is reached
 *   7  Deactivated -> Destroyed    Destroy
 *   8  Deactivated -> Compromised  Revoke, reason Compromised
 *   9  Compromised -> Destroyed Compromised   Destroy
 *  10  Destroyed   -> Destroyed Compromised   Revoke, reason Compromised
 * "Only the transitions described above are permitted": in particular an
 * Active object cannot be destroyed directly (revoke it first) and nothing
 * leaves Destroyed Compromised.
 *
 * Seed 003's key statuses map onto these: New = Pre-Active, Installed =
 * Pre-Active with an installation record, Active = Active, Obsolete =
 * Deactivated, Bad = Compromised.
 */
#ifndef KEYFLEET_LIFECYCLE_H
#define KEYFLEET_LIFECYCLE_H

#include <stdbool.h>
#include <stdint.h>

#include "keyfleet/error.h"

/* KMIP State enumeration (KMIP 1.4 §9.1.3.2.18). */
enum kf_kmip_state {
    KF_STATE_PRE_ACTIVE = 1,
    KF_STATE_ACTIVE = 2,
    KF_STATE_DEACTIVATED = 3,
    KF_STATE_COMPROMISED = 4,
    KF_STATE_DESTROYED = 5,
    KF_STATE_DESTROYED_COMPROMISED = 6,
};

enum kf_lifecycle_event {
    KF_EV_ACTIVATE = 1,                /* Activate operation */
    KF_EV_ACTIVATION_DATE_REACHED,     /* Activation Date <= now (also via Modify Attribute) */
    KF_EV_REVOKE_COMPROMISED,          /* Revoke, Revocation Reason Code = Key/CA Compromise */
    KF_EV_REVOKE_OTHER,                /* Revoke, any other reason */
    KF_EV_DEACTIVATION_DATE_REACHED,   /* Deactivation Date <= now (also via Modify Attribute) */
    KF_EV_DESTROY,                     /* Destroy operation */
};
#define KF_EV_COUNT 6

/* *to gets the new state. KF_ERR_TRANSITION if the spec does not permit the
 * event in this state, KF_ERR_ARG for an unknown state or event. */
KF_RESULT int kf_lifecycle_transition(uint32_t from, enum kf_lifecycle_event ev, uint32_t *to);

/* "Pre-Active", "Active", ... (KMIP spelling); "Unknown" otherwise. Never NULL. */
const char *kf_lifecycle_state_name(uint32_t state);
/* "Activate", "Revoke (compromised)", ...; "Unknown" otherwise. Never NULL. */
const char *kf_lifecycle_event_name(enum kf_lifecycle_event ev);
bool kf_lifecycle_state_valid(uint32_t state);

/*
 * The state after applying date-driven transitions 4 and 6 at time now
 * (seconds): a Pre-Active object whose activation date (non-zero) has been
 * reached becomes Active, then an Active one whose deactivation date has been
 * reached becomes Deactivated. Other states are returned unchanged.
 */
uint32_t kf_lifecycle_effective_state(uint32_t state, int64_t activation_date,
                                      int64_t deactivation_date, int64_t now);

/* What an object is being used for. */
enum kf_use_purpose {
    KF_USE_ENCRYPT = 1,   /* apply protection: encrypt */
    KF_USE_SIGN,          /* apply: sign */
    KF_USE_MAC_GENERATE,  /* apply: MAC */
    KF_USE_WRAP,          /* apply: wrap another key */
    KF_USE_DERIVE,        /* apply: derive keys */
    KF_USE_DECRYPT,       /* process protected data: decrypt */
    KF_USE_VERIFY,        /* process: verify a signature */
    KF_USE_MAC_VERIFY,    /* process: verify a MAC */
    KF_USE_UNWRAP,        /* process: unwrap */
    KF_USE_GET,           /* return the (wrapped-for-transport) material to a client */
};

/*
 * KMIP §3.22: applying protection (encrypt, sign, MAC, wrap, derive) only in
 * Active; processing protected data (decrypt, verify, MAC verify, unwrap) in
 * Active, Deactivated and Compromised (the spec's "SHOULD only ... under
 * extraordinary circumstances" is left to policy above this); Get of material
 * in every state that still has material (not Destroyed / Destroyed
 * Compromised). Pre-Active allows no cryptographic use.
 * The Cryptographic Usage Mask is checked separately by the caller.
 */
bool kf_lifecycle_allows_use(uint32_t state, enum kf_use_purpose purpose);
/* KF_OK or KF_ERR_STATE, for callers that want an error code. */
KF_RESULT int kf_lifecycle_check_use(uint32_t state, enum kf_use_purpose purpose);

#endif
