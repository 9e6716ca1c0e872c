/*
 * KMIP 1.4 §3.22 state machine as a table: next_state[from][event], 0 where
 * the spec does not permit the transition. The numbers in the comments are
 * the spec's transition numbers (see lifecycle.h).
 */
#include "keyfleet/lifecycle.h"

#define NSTATES 7 /* index 0 unused; KMIP states are 1..6 */
#define NEVENTS (KF_EV_COUNT + 1)

static const uint8_t next_state[NSTATES][NEVENTS] = {
    [KF_STATE_PRE_ACTIVE] = {
        [KF_EV_ACTIVATE] = KF_STATE_ACTIVE,                     /* 4 */
        [KF_EV_ACTIVATION_DATE_REACHED] = KF_STATE_ACTIVE,      /* 4 */
        [KF_EV_REVOKE_COMPROMISED] = KF_STATE_COMPROMISED,      /* 3 */
        [KF_EV_DESTROY] = KF_STATE_DESTROYED,                   /* 2 */
    },
    [KF_STATE_ACTIVE] = {
        [KF_EV_REVOKE_COMPROMISED] = KF_STATE_COMPROMISED,      /* 5 */
        [KF_EV_REVOKE_OTHER] = KF_STATE_DEACTIVATED,            /* 6 */
        [KF_EV_DEACTIVATION_DATE_REACHED] = KF_STATE_DEACTIVATED, /* 6 */
    },
    [KF_STATE_DEACTIVATED] = {
        [KF_EV_REVOKE_COMPROMISED] = KF_STATE_COMPROMISED,      /* 8 */
        [KF_EV_DESTROY] = KF_STATE_DESTROYED,                   /* 7 */
    },
    [KF_STATE_COMPROMISED] = {
        [KF_EV_DESTROY] = KF_STATE_DESTROYED_COMPROMISED,       /* 9 */
    },
    [KF_STATE_DESTROYED] = {
        [KF_EV_REVOKE_COMPROMISED] = KF_STATE_DESTROYED_COMPROMISED, /* 10 */
    },
    [KF_STATE_DESTROYED_COMPROMISED] = {0},
};

bool kf_lifecycle_state_valid(uint32_t state)
{
    return state >= KF_STATE_PRE_ACTIVE && state <= KF_STATE_DESTROYED_COMPROMISED;
}

static bool event_valid(enum kf_lifecycle_event ev)
{
    return (int)ev >= KF_EV_ACTIVATE && (int)ev <= KF_EV_COUNT;
}

int kf_lifecycle_transition(uint32_t from, enum kf_lifecycle_event ev, uint32_t *to)
{
    KF_ENSURE(to && kf_lifecycle_state_valid(from) && event_valid(ev), KF_ERR_ARG);
    uint8_t next = next_state[from][ev];
    KF_ENSURE(next != 0, KF_ERR_TRANSITION);
    *to = next;
    return KF_OK;
}

const char *kf_lifecycle_state_name(uint32_t state)
{
    static const char *const names[NSTATES] = {
        [KF_STATE_PRE_ACTIVE] = "Pre-Active",
        [KF_STATE_ACTIVE] = "Active",
        [KF_STATE_DEACTIVATED] = "Deactivated",
        [KF_STATE_COMPROMISED] = "Compromised",
        [KF_STATE_DESTROYED] = "Destroyed",
        [KF_STATE_DESTROYED_COMPROMISED] = "Destroyed Compromised",
    };
    return kf_lifecycle_state_valid(state) ? names[state] : "Unknown";
}

const char *kf_lifecycle_event_name(enum kf_lifecycle_event ev)
{
    static const char *const names[NEVENTS] = {
        [KF_EV_ACTIVATE] = "Activate",
        [KF_EV_ACTIVATION_DATE_REACHED] = "Activation Date reached",
        [KF_EV_REVOKE_COMPROMISED] = "Revoke (compromised)",
        [KF_EV_REVOKE_OTHER] = "Revoke (not compromised)",
        [KF_EV_DEACTIVATION_DATE_REACHED] = "Deactivation Date reached",
        [KF_EV_DESTROY] = "Destroy",
    };
    return event_valid(ev) ? names[ev] : "Unknown";
}

uint32_t kf_lifecycle_effective_state(uint32_t state, int64_t activation_date,
                                      int64_t deactivation_date, int64_t now)
{
    if (state == KF_STATE_PRE_ACTIVE && activation_date != 0 && activation_date <= now)
        state = KF_STATE_ACTIVE;
    if (state == KF_STATE_ACTIVE && deactivation_date != 0 && deactivation_date <= now)
        state = KF_STATE_DEACTIVATED;
    return state;
}

static bool applies_protection(enum kf_use_purpose p)
{
    return p == KF_USE_ENCRYPT || p == KF_USE_SIGN || p == KF_USE_MAC_GENERATE ||
           p == KF_USE_WRAP || p == KF_USE_DERIVE;
}

static bool processes_protected(enum kf_use_purpose p)
{
    return p == KF_USE_DECRYPT || p == KF_USE_VERIFY || p == KF_USE_MAC_VERIFY ||
           p == KF_USE_UNWRAP;
}

bool kf_lifecycle_allows_use(uint32_t state, enum kf_use_purpose purpose)
{
    switch (state) {
    case KF_STATE_ACTIVE:
        return applies_protection(purpose) || processes_protected(purpose) ||
               purpose == KF_USE_GET;
    case KF_STATE_DEACTIVATED:
    case KF_STATE_COMPROMISED:
        return processes_protected(purpose) || purpose == KF_USE_GET;
    case KF_STATE_PRE_ACTIVE:
        return purpose == KF_USE_GET;
    default: /* Destroyed, Destroyed Compromised, unknown: nothing */
        return false;
    }
}

int kf_lifecycle_check_use(uint32_t state, enum kf_use_purpose purpose)
{
    return kf_lifecycle_allows_use(state, purpose) ? KF_OK : KF_ERR_STATE;
}
