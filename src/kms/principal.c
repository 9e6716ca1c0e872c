/* Principals: who may do what, in which domain. */
#include <stdio.h>
#include <string.h>

#include "keyfleet/kms.h"

bool kf_principal_allows(const struct kf_principal *who, unsigned roles, const char *domain)
{
    if (!who || (who->roles & roles) != roles)
        return false;
    if (!domain || who->all_domains)
        return true;
    for (size_t i = 0; i < who->ndomains && i < KF_PRINCIPAL_MAX_DOMAINS; i++)
        if (strcmp(who->domains[i], domain) == 0)
            return true;
    return false;
}

void kf_principal_local_admin(struct kf_principal *who, const char *name)
{
    memset(who, 0, sizeof(*who));
    snprintf(who->name, sizeof(who->name), "%s", name);
    /* Every role: the device role adds nothing to what registering and
     * exporting devices already allow, and lets the socket drive pairing. */
    who->roles = KF_ROLE_ADMIN | KF_ROLE_MANAGE | KF_ROLE_USE | KF_ROLE_EXPORT | KF_ROLE_DEVICE |
                 KF_ROLE_STEEL | KF_ROLE_REGISTRAR | KF_ROLE_VERIFIER;
    who->all_domains = true;
    snprintf(who->default_domain, sizeof(who->default_domain), "default");
}
