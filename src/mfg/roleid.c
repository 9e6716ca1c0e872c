/*
 * Role IDs ("O00000001") and the syntax of the text fields every
 * manufacturing record and tool shares (docs/manufacturing.md).
 */
#include <string.h>

#include "keyfleet/mfg.h"
#include "mfg/internal.h"

#define ROLE_ID_MAX_N 99999999u

char kf_mfg_role_letter(enum kf_mfg_role_type t)
{
    switch (t) {
    case KF_MFG_ROLE_AUTHORITY:
        return 'M';
    case KF_MFG_ROLE_OAK:
        return 'O';
    case KF_MFG_ROLE_BRASS:
        return 'B';
    case KF_MFG_ROLE_STEEL:
        return 'S';
    case KF_MFG_ROLE_TIN:
        return 'T';
    }
    return 0;
}

static enum kf_mfg_role_type role_type_of_letter(char c)
{
    for (int t = KF_MFG_ROLE_AUTHORITY; t <= KF_MFG_ROLE_TIN; t++)
        if (kf_mfg_role_letter((enum kf_mfg_role_type)t) == c)
            return (enum kf_mfg_role_type)t;
    return 0;
}

int kf_mfg_role_id_format(enum kf_mfg_role_type t, uint32_t n, char out[KF_MFG_ROLE_ID_LEN + 1])
{
    KF_ENSURE(out != NULL, KF_ERR_ARG);
    char letter = kf_mfg_role_letter(t);
    KF_ENSURE(letter != 0 && n >= 1 && n <= ROLE_ID_MAX_N, KF_ERR_ARG);
    out[0] = letter;
    /* digits written by hand: no snprintf whose truncation the compiler must prove away */
    for (int i = KF_MFG_ROLE_ID_LEN - 1; i >= 1; i--) {
        out[i] = (char)('0' + n % 10);
        n /= 10;
    }
    out[KF_MFG_ROLE_ID_LEN] = '\0';
    return KF_OK;
}

bool kf_mfg_role_id_parse(const char *id, enum kf_mfg_role_type *type)
{
    if (!id || strnlen(id, KF_MFG_ROLE_ID_LEN + 1) != KF_MFG_ROLE_ID_LEN)
        return false;
    enum kf_mfg_role_type t = role_type_of_letter(id[0]);
    if (t == 0)
        return false;
    bool nonzero = false;
    for (size_t i = 1; i < KF_MFG_ROLE_ID_LEN; i++) {
        if (id[i] < '0' || id[i] > '9')
            return false;
        nonzero |= id[i] != '0';
    }
    if (!nonzero) /* n is 1..99,999,999 */
        return false;
    if (type)
        *type = t;
    return true;
}

/* 1..max of A-Z 0-9 - */
static bool serial_valid(const char *s, size_t max)
{
    if (!s)
        return false;
    size_t n = strnlen(s, max + 1);
    if (n < 1 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

bool kf_mfg_msn_valid(const char *msn)
{
    return serial_valid(msn, KF_MFG_MSN_MAX);
}

bool kf_mfg_indicia_valid(const char *s)
{
    return serial_valid(s, KF_MFG_INDICIA_MAX);
}

bool kf_mfg_country_valid(const char *cc)
{
    return cc && strnlen(cc, 3) == 2 && cc[0] >= 'A' && cc[0] <= 'Z' && cc[1] >= 'A' &&
           cc[1] <= 'Z';
}

bool mfg_domain_valid(const char *name)
{
    if (!name)
        return false;
    size_t n = strnlen(name, KF_MFG_DOMAIN_MAX + 1);
    if (n < 1 || n > KF_MFG_DOMAIN_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool mfg_period_valid(uint32_t period)
{
    uint32_t year = period / 100, month = period % 100;
    return year >= 1970 && year <= 9999 && month >= 1 && month <= 12;
}

bool mfg_text_fits(const char *s, size_t n)
{
    return memchr(s, '\0', n) != NULL;
}
