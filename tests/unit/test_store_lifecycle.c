/*
 * The KMIP 1.4 §3.22 state machine, checked over the FULL state x event
 * matrix against the spec's list of permitted transitions, written out here
 * independently of src/store/lifecycle.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "keyfleet/lifecycle.h"

struct permitted {
    uint32_t from;
    enum kf_lifecycle_event ev;
    uint32_t to;
    int spec_number; /* transition number in KMIP 1.4 §3.22 */
};

static const struct permitted spec[] = {
    {KF_STATE_PRE_ACTIVE, KF_EV_DESTROY, KF_STATE_DESTROYED, 2},
    {KF_STATE_PRE_ACTIVE, KF_EV_REVOKE_COMPROMISED, KF_STATE_COMPROMISED, 3},
    {KF_STATE_PRE_ACTIVE, KF_EV_ACTIVATE, KF_STATE_ACTIVE, 4},
    {KF_STATE_PRE_ACTIVE, KF_EV_ACTIVATION_DATE_REACHED, KF_STATE_ACTIVE, 4},
    {KF_STATE_ACTIVE, KF_EV_REVOKE_COMPROMISED, KF_STATE_COMPROMISED, 5},
    {KF_STATE_ACTIVE, KF_EV_REVOKE_OTHER, KF_STATE_DEACTIVATED, 6},
    {KF_STATE_ACTIVE, KF_EV_DEACTIVATION_DATE_REACHED, KF_STATE_DEACTIVATED, 6},
    {KF_STATE_DEACTIVATED, KF_EV_DESTROY, KF_STATE_DESTROYED, 7},
    {KF_STATE_DEACTIVATED, KF_EV_REVOKE_COMPROMISED, KF_STATE_COMPROMISED, 8},
    {KF_STATE_COMPROMISED, KF_EV_DESTROY, KF_STATE_DESTROYED_COMPROMISED, 9},
    {KF_STATE_DESTROYED, KF_EV_REVOKE_COMPROMISED, KF_STATE_DESTROYED_COMPROMISED, 10},
};

static const struct permitted *find_permitted(uint32_t from, enum kf_lifecycle_event ev)
{
    for (size_t i = 0; i < sizeof(spec) / sizeof(spec[0]); i++)
        if (spec[i].from == from && spec[i].ev == ev)
            return &spec[i];
    return NULL;
}

static void full_matrix_matches_the_spec(void **state)
{
    (void)state;
    int allowed = 0, refused = 0;
    for (uint32_t from = KF_STATE_PRE_ACTIVE; from <= KF_STATE_DESTROYED_COMPROMISED; from++) {
        for (int e = KF_EV_ACTIVATE; e <= KF_EV_COUNT; e++) {
            const struct permitted *p = find_permitted(from, (enum kf_lifecycle_event)e);
            uint32_t to = 0xdead;
            int err = kf_lifecycle_transition(from, (enum kf_lifecycle_event)e, &to);
            if (p) {
                assert_int_equal(err, KF_OK);
                assert_int_equal(to, p->to);
                allowed++;
            } else {
                assert_int_equal(err, KF_ERR_TRANSITION);
                assert_int_equal(to, 0xdead); /* untouched on refusal */
                refused++;
            }
        }
    }
    assert_int_equal(allowed, 11);
    assert_int_equal(refused, 6 * KF_EV_COUNT - 11);
}

static void spec_highlights(void **state)
{
    (void)state;
    uint32_t to;
    /* Active cannot be destroyed directly. */
    assert_int_equal(kf_lifecycle_transition(KF_STATE_ACTIVE, KF_EV_DESTROY, &to),
                     KF_ERR_TRANSITION);
    /* Nothing leaves Destroyed Compromised. */
    for (int e = KF_EV_ACTIVATE; e <= KF_EV_COUNT; e++)
        assert_int_equal(kf_lifecycle_transition(KF_STATE_DESTROYED_COMPROMISED,
                                                 (enum kf_lifecycle_event)e, &to),
                         KF_ERR_TRANSITION);
    /* A Pre-Active key cannot be revoked for a non-compromise reason. */
    assert_int_equal(kf_lifecycle_transition(KF_STATE_PRE_ACTIVE, KF_EV_REVOKE_OTHER, &to),
                     KF_ERR_TRANSITION);
}

static void unknown_states_and_events_are_arguments_errors(void **state)
{
    (void)state;
    uint32_t to;
    assert_int_equal(kf_lifecycle_transition(0, KF_EV_ACTIVATE, &to), KF_ERR_ARG);
    assert_int_equal(kf_lifecycle_transition(7, KF_EV_ACTIVATE, &to), KF_ERR_ARG);
    assert_int_equal(kf_lifecycle_transition(KF_STATE_ACTIVE, (enum kf_lifecycle_event)0, &to),
                     KF_ERR_ARG);
    assert_int_equal(kf_lifecycle_transition(KF_STATE_ACTIVE,
                                             (enum kf_lifecycle_event)(KF_EV_COUNT + 1), &to),
                     KF_ERR_ARG);
    assert_int_equal(kf_lifecycle_transition(KF_STATE_ACTIVE, KF_EV_REVOKE_OTHER, NULL),
                     KF_ERR_ARG);
}

static void names_use_kmip_spelling(void **state)
{
    (void)state;
    assert_string_equal(kf_lifecycle_state_name(KF_STATE_PRE_ACTIVE), "Pre-Active");
    assert_string_equal(kf_lifecycle_state_name(KF_STATE_DESTROYED_COMPROMISED),
                        "Destroyed Compromised");
    assert_string_equal(kf_lifecycle_state_name(0), "Unknown");
    assert_string_equal(kf_lifecycle_state_name(99), "Unknown");
    assert_string_equal(kf_lifecycle_event_name(KF_EV_DESTROY), "Destroy");
    assert_string_equal(kf_lifecycle_event_name((enum kf_lifecycle_event)99), "Unknown");
}

static void dates_drive_transitions_4_and_6(void **state)
{
    (void)state;
    assert_int_equal(kf_lifecycle_effective_state(KF_STATE_PRE_ACTIVE, 0, 0, 1000),
                     KF_STATE_PRE_ACTIVE);
    assert_int_equal(kf_lifecycle_effective_state(KF_STATE_PRE_ACTIVE, 1001, 0, 1000),
                     KF_STATE_PRE_ACTIVE);
    assert_int_equal(kf_lifecycle_effective_state(KF_STATE_PRE_ACTIVE, 1000, 0, 1000),
                     KF_STATE_ACTIVE);
    assert_int_equal(kf_lifecycle_effective_state(KF_STATE_PRE_ACTIVE, 900, 950, 1000),
                     KF_STATE_DEACTIVATED);
    assert_int_equal(kf_lifecycle_effective_state(KF_STATE_ACTIVE, 0, 2000, 1000),
                     KF_STATE_ACTIVE);
    /* A deactivation date alone does not move a Pre-Active object (no such transition). */
    assert_int_equal(kf_lifecycle_effective_state(KF_STATE_PRE_ACTIVE, 0, 10, 1000),
                     KF_STATE_PRE_ACTIVE);
    assert_int_equal(kf_lifecycle_effective_state(KF_STATE_COMPROMISED, 10, 20, 1000),
                     KF_STATE_COMPROMISED);
}

static void use_follows_kmip_state_rules(void **state)
{
    (void)state;
    const enum kf_use_purpose apply[] = {KF_USE_ENCRYPT, KF_USE_SIGN, KF_USE_MAC_GENERATE,
                                         KF_USE_WRAP, KF_USE_DERIVE};
    const enum kf_use_purpose process[] = {KF_USE_DECRYPT, KF_USE_VERIFY, KF_USE_MAC_VERIFY,
                                           KF_USE_UNWRAP};
    for (size_t i = 0; i < sizeof(apply) / sizeof(apply[0]); i++) {
        assert_true(kf_lifecycle_allows_use(KF_STATE_ACTIVE, apply[i]));
        assert_false(kf_lifecycle_allows_use(KF_STATE_PRE_ACTIVE, apply[i]));
        assert_false(kf_lifecycle_allows_use(KF_STATE_DEACTIVATED, apply[i]));
        assert_false(kf_lifecycle_allows_use(KF_STATE_COMPROMISED, apply[i]));
        assert_false(kf_lifecycle_allows_use(KF_STATE_DESTROYED, apply[i]));
        assert_false(kf_lifecycle_allows_use(KF_STATE_DESTROYED_COMPROMISED, apply[i]));
    }
    for (size_t i = 0; i < sizeof(process) / sizeof(process[0]); i++) {
        assert_true(kf_lifecycle_allows_use(KF_STATE_ACTIVE, process[i]));
        assert_true(kf_lifecycle_allows_use(KF_STATE_DEACTIVATED, process[i]));
        assert_true(kf_lifecycle_allows_use(KF_STATE_COMPROMISED, process[i]));
        assert_false(kf_lifecycle_allows_use(KF_STATE_PRE_ACTIVE, process[i]));
        assert_false(kf_lifecycle_allows_use(KF_STATE_DESTROYED, process[i]));
        assert_false(kf_lifecycle_allows_use(KF_STATE_DESTROYED_COMPROMISED, process[i]));
    }
    assert_true(kf_lifecycle_allows_use(KF_STATE_PRE_ACTIVE, KF_USE_GET));
    assert_false(kf_lifecycle_allows_use(KF_STATE_DESTROYED, KF_USE_GET));
    assert_false(kf_lifecycle_allows_use(0, KF_USE_GET));
    assert_int_equal(kf_lifecycle_check_use(KF_STATE_DEACTIVATED, KF_USE_ENCRYPT), KF_ERR_STATE);
    assert_int_equal(kf_lifecycle_check_use(KF_STATE_DEACTIVATED, KF_USE_DECRYPT), KF_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_matrix_matches_the_spec),
        cmocka_unit_test(spec_highlights),
        cmocka_unit_test(unknown_states_and_events_are_arguments_errors),
        cmocka_unit_test(names_use_kmip_spelling),
        cmocka_unit_test(dates_drive_transitions_4_and_6),
        cmocka_unit_test(use_follows_kmip_state_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
