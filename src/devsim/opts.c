/* Command-line options of the simulator's commands: "--name value", "--name=value", flags. */
#include <stdio.h>
#include <string.h>

#include "devsim/devsim.h"

static int refuse(char *why, size_t why_len, const char *what, const char *arg, size_t n)
{
    if (why && why_len)
        snprintf(why, why_len, "%s '%.*s'", what, (int)(n > 100 ? 100 : n), arg);
    return KF_ERR_USAGE;
}

int ds_opts_parse(int argc, char **argv, const struct ds_opt *opts, char *why, size_t why_len)
{
    KF_ENSURE(argc >= 0 && (argv || argc == 0) && opts, KF_ERR_ARG);
    for (const struct ds_opt *o = opts; o->name; o++) {
        if (o->value)
            *o->value = NULL;
        if (o->flag)
            *o->flag = false;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return DS_OPTS_HELP;
        if (strncmp(a, "--", 2) != 0 || a[2] == 0)
            return refuse(why, why_len, "unexpected argument", a, strlen(a));
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        const struct ds_opt *o = opts;
        while (o->name && (strlen(o->name) != nl || strncmp(o->name, a, nl) != 0))
            o++;
        if (!o->name)
            return refuse(why, why_len, "unknown option", a, nl);
        if (!o->value) {
            if (eq)
                return refuse(why, why_len, "this flag takes no value:", a, nl);
            *o->flag = true;
            continue;
        }
        if (*o->value)
            return refuse(why, why_len, "given twice:", a, nl);
        if (eq)
            *o->value = eq + 1;
        else if (i + 1 < argc)
            *o->value = argv[++i];
        else
            return refuse(why, why_len, "needs a value:", a, nl);
    }
    return KF_OK;
}
