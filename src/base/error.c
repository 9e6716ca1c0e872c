#include "keyfleet/error.h"

const char *kf_strerror(int err)
{
    switch (err) {
    case KF_OK:
        return "success";
#define KF_ERROR(name, value, text)                                                                \
    case name:                                                                                     \
        return text;
#include "keyfleet/error_codes.h"
#undef KF_ERROR
    }
    return "unknown error";
}

const char *kf_errname(int err)
{
    switch (err) {
    case KF_OK:
        return "KF_OK";
#define KF_ERROR(name, value, text)                                                                \
    case name:                                                                                     \
        return #name;
#include "keyfleet/error_codes.h"
#undef KF_ERROR
    }
    return "KF_ERR_UNKNOWN";
}
