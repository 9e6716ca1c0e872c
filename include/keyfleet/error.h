/* Error codes and the GUARD/ENSURE discipline used everywhere. */
#ifndef KEYFLEET_ERROR_H
#define KEYFLEET_ERROR_H

#define KF_OK 0
enum kf_error_code {
#define KF_ERROR(name, value, text) name = (value),
#include "keyfleet/error_codes.h"
#undef KF_ERROR
};

/* Sentence for a code; never NULL, never contains secrets. */
const char *kf_strerror(int err);
/* Symbolic name ("KF_ERR_AUTH") for a code; never NULL. */
const char *kf_errname(int err);

#define KF_RESULT __attribute__((warn_unused_result))

/* Propagate a negative result. */
#define KF_GUARD(x)                                                                                \
    do {                                                                                           \
        int kf_guard_rc_ = (x);                                                                    \
        if (kf_guard_rc_ < 0)                                                                      \
            return kf_guard_rc_;                                                                   \
    } while (0)

/* Return err unless cond holds. */
#define KF_ENSURE(cond, err)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return (err);                                                                          \
    } while (0)

#endif
