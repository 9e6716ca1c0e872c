/*
 * The relay's script: one rule per line, '#' at the start of a word begins a
 * comment. A rule is
 *
 *   <direction> <which> <action> [arguments]
 *
 *   direction  up (client -> upstream), down (upstream -> client), * (both)
 *   which      N (the N-th message in that direction, from 1), * (every one),
 *              @Tag (every message that contains an item with that tag)
 *   action     pass | drop | delay MS | flip WHERE [XOR] | replace FILE | dup |
 *              hold | swap-parts | close
 *   WHERE      a byte offset (negative: from the end), or @Tag[#K][+N|-N]: byte N
 *              of the value of the K-th item with that tag (K from 1; N < 0
 *              counts from the value's end)
 *   XOR        the mask, 1..255, decimal or 0x hex (default 0x01)
 *
 * The first rule that matches a message decides; no rule: pass.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devsim/devsim.h"
#include "keyfleet/ttlv.h"

#define MAX_WORDS 8
#define MAX_RULES 4096

static const char *const action_names[] = {
    [DS_PASS] = "pass",       [DS_DROP] = "drop",
    [DS_DELAY] = "delay",     [DS_FLIP] = "flip",
    [DS_REPLACE] = "replace", [DS_DUP] = "dup",
    [DS_HOLD] = "hold",       [DS_SWAP_PARTS] = "swap-parts",
    [DS_CLOSE] = "close",
};

const char *ds_action_name(enum ds_action a)
{
    return (unsigned)a < sizeof(action_names) / sizeof(action_names[0]) ? action_names[a] : "?";
}

const char *ds_dir_name(enum ds_dir d)
{
    return d == DS_UP ? "up" : "down";
}

struct parse_err {
    char *why;
    size_t why_len;
};

static int refuse(struct parse_err *e, const char *what, const char *word)
{
    if (e->why && e->why_len)
        snprintf(e->why, e->why_len, "%s '%s'", what, word ? word : "");
    return KF_ERR_FORMAT;
}

static int parse_tag(const char *name, size_t n, uint32_t *tag)
{
    char buf[96];
    KF_ENSURE(n > 0 && n < sizeof(buf), KF_ERR_TTLV_TAG);
    memcpy(buf, name, n);
    buf[n] = 0;
    return kf_ttlv_tag_by_name(buf, tag);
}

/* "@Tag[#K][+N|-N]" or a signed offset */
static int parse_locator(const char *w, struct ds_locator *loc, struct parse_err *e)
{
    memset(loc, 0, sizeof(*loc));
    loc->nth = 1;
    if (w[0] != '@') {
        if (ds_parse_i64(w, &loc->offset) < 0)
            return refuse(e, "flip wants a byte offset or @Tag[#K][+N], not", w);
        return KF_OK;
    }
    const char *name = w + 1;
    size_t n = strcspn(name, "#+-");
    loc->by_tag = true;
    if (parse_tag(name, n, &loc->tag) < 0)
        return refuse(e, "unknown tag in", w);
    const char *p = name + n;
    if (*p == '#') {
        char num[24];
        size_t k = strcspn(p + 1, "+-");
        uint64_t nth;
        if (k == 0 || k >= sizeof(num))
            return refuse(e, "bad item number in", w);
        memcpy(num, p + 1, k);
        num[k] = 0;
        if (ds_parse_u64(num, 1000000, &nth) < 0 || nth == 0)
            return refuse(e, "bad item number in", w);
        loc->nth = (unsigned)nth;
        p += 1 + k;
    }
    if (*p && ds_parse_i64(p, &loc->offset) < 0)
        return refuse(e, "bad byte offset in", w);
    return KF_OK;
}

static int parse_xor(const char *w, uint8_t *mask, struct parse_err *e)
{
    uint64_t v = 0;
    bool ok;
    if (strncmp(w, "0x", 2) == 0 || strncmp(w, "0X", 2) == 0) {
        char *end;
        ok = w[2] && strspn(w + 2, "0123456789abcdefABCDEF") == strlen(w + 2) && strlen(w + 2) <= 2;
        v = ok ? strtoull(w + 2, &end, 16) : 0;
    } else {
        ok = ds_parse_u64(w, 255, &v) == KF_OK;
    }
    if (!ok || v == 0 || v > 255)
        return refuse(e, "XOR mask must be 1..255, not", w);
    *mask = (uint8_t)v;
    return KF_OK;
}

static int want_args(size_t have, size_t min, size_t max, const char *action, struct parse_err *e)
{
    if (have < min)
        return refuse(e, "missing argument for", action);
    if (have > max)
        return refuse(e, "too many words after", action);
    return KF_OK;
}

static int parse_rule(char **w, size_t n, struct ds_rule *r, struct parse_err *e)
{
    if (n < 3)
        return refuse(e, "a rule is '<up|down|*> <N|*|@Tag> <action> [args]', got", w[0]);
    if (strcmp(w[0], "up") == 0)
        r->dir = DS_UP;
    else if (strcmp(w[0], "down") == 0)
        r->dir = DS_DOWN;
    else if (strcmp(w[0], "*") == 0 || strcmp(w[0], "both") == 0)
        r->dir = -1;
    else
        return refuse(e, "direction must be up, down or *, not", w[0]);
    if (strcmp(w[1], "*") == 0) {
        r->index = 0;
    } else if (w[1][0] == '@') {
        if (parse_tag(w[1] + 1, strlen(w[1] + 1), &r->has_tag) < 0)
            return refuse(e, "unknown tag", w[1]);
    } else if (ds_parse_u64(w[1], UINT64_MAX, &r->index) < 0 || r->index == 0) {
        return refuse(e, "message index must be 1, 2, ..., * or @Tag, not", w[1]);
    }
    const char *a = w[2];
    size_t args = n - 3;
    for (unsigned i = 0; i < sizeof(action_names) / sizeof(action_names[0]); i++)
        if (strcmp(a, action_names[i]) == 0) {
            r->action = (enum ds_action)i;
            goto known;
        }
    return refuse(e, "unknown action", a);
known:
    switch (r->action) {
    case DS_DELAY: {
        uint64_t ms;
        KF_GUARD(want_args(args, 1, 1, a, e));
        if (ds_parse_u64(w[3], 600000, &ms) < 0)
            return refuse(e, "delay wants milliseconds 0..600000, not", w[3]);
        r->delay_ms = (uint32_t)ms;
        return KF_OK;
    }
    case DS_FLIP:
        KF_GUARD(want_args(args, 1, 2, a, e));
        KF_GUARD(parse_locator(w[3], &r->where, e));
        r->xor_mask = 0x01;
        return args == 2 ? parse_xor(w[4], &r->xor_mask, e) : KF_OK;
    case DS_REPLACE:
        KF_GUARD(want_args(args, 1, 1, a, e));
        if (strlen(w[3]) >= sizeof(r->file))
            return refuse(e, "file name too long:", w[3]);
        memcpy(r->file, w[3], strlen(w[3]) + 1);
        return KF_OK;
    default:
        return want_args(args, 0, 0, a, e);
    }
}

int ds_script_parse(const char *text, size_t len, struct ds_script *s, unsigned *bad_line,
                    char *why, size_t why_len)
{
    struct parse_err e = {why, why_len};
    KF_ENSURE(text && s, KF_ERR_ARG);
    memset(s, 0, sizeof(*s));
    if (bad_line)
        *bad_line = 0;
    if (why && why_len)
        why[0] = 0;
    const char *nul = memchr(text, 0, len);
    if (nul) {
        unsigned at = 1;
        for (const char *q = text; q < nul; q++)
            at += *q == '\n';
        if (bad_line)
            *bad_line = at;
        return refuse(&e, "NUL byte in the script", "");
    }
    char *copy = malloc(len + 1);
    KF_ENSURE(copy, KF_ERR_NOMEM);
    memcpy(copy, text, len);
    copy[len] = 0;
    int rc = KF_OK;
    unsigned line = 0;
    /* strtok_r would merge empty lines and miscount them: split lines by hand */
    char *p = copy;
    while (rc == KF_OK && p && *p) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        line++;
        char *w[MAX_WORDS + 1];
        size_t n = 0;
        char *save = NULL;
        for (char *tok = strtok_r(p, " \t\r", &save); tok; tok = strtok_r(NULL, " \t\r", &save)) {
            if (tok[0] == '#')
                break;
            if (n == MAX_WORDS) {
                rc = refuse(&e, "too many words starting at", tok);
                break;
            }
            w[n++] = tok;
        }
        if (rc == KF_OK && n > 0) {
            if (s->n == MAX_RULES) {
                rc = refuse(&e, "more than 4096 rules at", w[0]);
                break;
            }
            struct ds_rule *grown = realloc(s->rules, (s->n + 1) * sizeof(*grown));
            if (!grown) {
                rc = KF_ERR_NOMEM;
                break;
            }
            s->rules = grown;
            struct ds_rule *r = &s->rules[s->n];
            memset(r, 0, sizeof(*r));
            r->line = line;
            rc = parse_rule(w, n, r, &e);
            if (rc == KF_OK)
                s->n++;
        }
        p = nl ? nl + 1 : NULL;
    }
    free(copy);
    if (rc < 0) {
        if (bad_line)
            *bad_line = line;
        ds_script_free(s);
    }
    return rc;
}

void ds_script_free(struct ds_script *s)
{
    if (!s)
        return;
    free(s->rules);
    s->rules = NULL;
    s->n = 0;
}

const struct ds_rule *ds_script_match(const struct ds_script *s, enum ds_dir dir, uint64_t index,
                                      const uint8_t *msg, size_t len)
{
    if (!s)
        return NULL;
    for (size_t i = 0; i < s->n; i++) {
        const struct ds_rule *r = &s->rules[i];
        if (r->dir >= 0 && r->dir != (int)dir)
            continue;
        if (r->index && r->index != index)
            continue;
        if (r->has_tag) {
            struct ds_item_pos pos;
            if (!msg || ds_find_item(msg, len, r->has_tag, 1, &pos) < 0)
                continue;
        }
        return r;
    }
    return NULL;
}
