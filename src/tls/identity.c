/*
 * The identity map: verified client certificate -> struct kf_principal.
 * Format in include/keyfleet/tls.h. The file is read through kf_buf cursors,
 * one line and then one word at a time; every refusal names its line.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "keyfleet/tls.h"

#define LINE_MAX_LEN 1024
#define WORD_MAX_LEN 512
#define IDENTITY_FILE_MAX ((size_t)1024 * 1024)

struct rule {
    bool has_fingerprint;
    uint8_t sha256[32];
    const char *cn, *o, *ou; /* NULL = not matched on */
    char cn_buf[128], o_buf[128], ou_buf[128];
    unsigned roles;
    bool all_domains;
    size_t ndomains;
    char domains[KF_PRINCIPAL_MAX_DOMAINS][65];
    char default_domain[65];
};

struct kf_tls_identities {
    struct rule *rules;
    size_t n, cap;
};

struct parse_error {
    char *why;
    size_t why_len;
};

__attribute__((format(printf, 2, 3))) static int refuse(struct parse_error *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (e->why && e->why_len)
        vsnprintf(e->why, e->why_len, fmt, ap);
    va_end(ap);
    return KF_ERR_IDENTITY_FILE;
}

/* Next line (without its newline) from the file cursor into line[]. */
static int next_line(kf_buf *file, char *line, size_t cap, bool *have)
{
    size_t n = 0;
    uint8_t ch;
    *have = kf_buf_remaining(file) > 0;
    while (kf_buf_get_u8(file, &ch) == KF_OK && ch != '\n') {
        if (n + 1 >= cap)
            return KF_ERR_LIMIT;
        if (ch == 0)
            return KF_ERR_FORMAT;
        line[n++] = (char)ch;
    }
    if (n > 0 && line[n - 1] == '\r')
        n--;
    line[n] = 0;
    return KF_OK;
}

static bool is_space(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* Next whitespace-separated word; a "double quoted" part may hold spaces.
 * *done when the line has no more words. */
static int next_word(kf_buf *line, char *word, size_t cap, bool *done, struct parse_error *e)
{
    uint8_t ch;
    size_t n = 0;
    bool quoted = false;
    while (kf_buf_remaining(line) && is_space(kf_buf_read_ptr(line)[0]))
        KF_GUARD(kf_buf_skip(line, 1));
    *done = kf_buf_remaining(line) == 0 || kf_buf_read_ptr(line)[0] == '#';
    if (*done)
        return KF_OK;
    while (kf_buf_get_u8(line, &ch) == KF_OK) {
        if (ch == '"') {
            quoted = !quoted;
            continue;
        }
        if (!quoted && is_space(ch))
            break;
        if (n + 1 >= cap)
            return refuse(e, "word too long (%s)", "limit 511 characters");
        word[n++] = (char)ch;
    }
    word[n] = 0;
    if (quoted)
        return refuse(e, "unterminated quote in '%s'", word);
    return KF_OK;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int parse_fingerprint(const char *v, struct rule *r, struct parse_error *e)
{
    if (strncasecmp(v, "SHA256:", 7) != 0)
        return refuse(e, "fingerprint must start with SHA256: (got '%s')", v);
    kf_buf in;
    kf_buf_reader(&in, (const uint8_t *)v + 7, strlen(v) - 7);
    size_t n = 0;
    int hi = -1;
    uint8_t ch;
    while (kf_buf_get_u8(&in, &ch) == KF_OK) {
        if (ch == ':')
            continue;
        int d = hex_value((char)ch);
        if (d < 0)
            return refuse(e, "fingerprint has a character that is not hex: '%s'", v);
        if (hi < 0) {
            hi = d;
            continue;
        }
        if (n >= sizeof(r->sha256))
            return refuse(e, "fingerprint is longer than 32 bytes: '%s'", v);
        r->sha256[n++] = (uint8_t)(hi << 4 | d);
        hi = -1;
    }
    if (n != sizeof(r->sha256) || hi >= 0)
        return refuse(e, "fingerprint must be 32 bytes (64 hex digits): '%s'", v);
    r->has_fingerprint = true;
    return KF_OK;
}

/* Split a comma list; calls fn for every element. */
typedef int (*list_fn)(const char *item, struct rule *r, struct parse_error *e);

static int for_each_item(const char *v, list_fn fn, struct rule *r, struct parse_error *e)
{
    kf_buf in;
    char item[WORD_MAX_LEN];
    size_t n = 0;
    uint8_t ch;
    kf_buf_reader(&in, (const uint8_t *)v, strlen(v) + 1); /* include the NUL as last separator */
    while (kf_buf_get_u8(&in, &ch) == KF_OK) {
        if (ch != ',' && ch != 0) {
            if (n + 1 >= sizeof(item))
                return refuse(e, "list item too long in '%s'", v);
            item[n++] = (char)ch;
            continue;
        }
        item[n] = 0;
        if (n == 0)
            return refuse(e, "empty item in list '%s'", v);
        KF_GUARD(fn(item, r, e));
        n = 0;
    }
    return KF_OK;
}

static int add_role(const char *item, struct rule *r, struct parse_error *e)
{
    static const struct {
        const char *name;
        unsigned bit;
    } roles[] = {{"admin", KF_ROLE_ADMIN},
                 {"manage", KF_ROLE_MANAGE},
                 {"use", KF_ROLE_USE},
                 {"export", KF_ROLE_EXPORT},
                 {"device", KF_ROLE_DEVICE},
                 /* manufacturing (docs/manufacturing.md "Command table") */
                 {"steel", KF_ROLE_STEEL},
                 {"registrar", KF_ROLE_REGISTRAR},
                 {"verifier", KF_ROLE_VERIFIER},
                 {"none", 0}};
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (strcmp(item, roles[i].name) == 0) {
            r->roles |= roles[i].bit;
            return KF_OK;
        }
    return refuse(e,
                  "unknown role '%s' (admin, manage, use, export, device, steel, registrar, "
                  "verifier, none)",
                  item);
}

static bool domain_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int add_domain(const char *item, struct rule *r, struct parse_error *e)
{
    if (strcmp(item, "*") == 0) {
        r->all_domains = true;
        return KF_OK;
    }
    if (!domain_name_ok(item))
        return refuse(e, "invalid domain name '%s'", item);
    if (r->ndomains >= KF_PRINCIPAL_MAX_DOMAINS)
        return refuse(e, "more than 32 domains at '%s'", item);
    snprintf(r->domains[r->ndomains++], sizeof(r->domains[0]), "%s", item);
    return KF_OK;
}

static int set_subject(const char *v, char *dst, size_t cap, const char **field,
                       struct parse_error *e)
{
    if (*field)
        return refuse(e, "subject field given twice ('%s')", v);
    if (!*v || strlen(v) >= cap)
        return refuse(e, "subject value empty or too long ('%s')", v);
    snprintf(dst, cap, "%s", v);
    *field = dst;
    return KF_OK;
}

static int apply_word(const char *word, struct rule *r, bool *seen_roles, bool *seen_domains,
                      struct parse_error *e)
{
    const char *eq = strchr(word, '=');
    if (!eq)
        return refuse(e, "expected key=value, got '%s'", word);
    size_t klen = (size_t)(eq - word);
    const char *v = eq + 1;
#define KEY_IS(k) (klen == strlen(k) && strncmp(word, k, klen) == 0)
    if (KEY_IS("fingerprint")) {
        if (r->has_fingerprint)
            return refuse(e, "fingerprint given twice ('%s')", v);
        return parse_fingerprint(v, r, e);
    }
    if (KEY_IS("subject-CN"))
        return set_subject(v, r->cn_buf, sizeof(r->cn_buf), &r->cn, e);
    if (KEY_IS("subject-O"))
        return set_subject(v, r->o_buf, sizeof(r->o_buf), &r->o, e);
    if (KEY_IS("subject-OU"))
        return set_subject(v, r->ou_buf, sizeof(r->ou_buf), &r->ou, e);
    if (KEY_IS("roles")) {
        if (*seen_roles)
            return refuse(e, "roles given twice ('%s')", v);
        *seen_roles = true;
        return for_each_item(v, add_role, r, e);
    }
    if (KEY_IS("domains")) {
        if (*seen_domains)
            return refuse(e, "domains given twice ('%s')", v);
        *seen_domains = true;
        return for_each_item(v, add_domain, r, e);
    }
    if (KEY_IS("default")) {
        if (r->default_domain[0] || !domain_name_ok(v))
            return refuse(e, "default given twice or not a domain name ('%s')", v);
        snprintf(r->default_domain, sizeof(r->default_domain), "%s", v);
        return KF_OK;
    }
#undef KEY_IS
    return refuse(e,
                  "unknown key in '%s' (fingerprint, subject-CN, subject-O, subject-OU, "
                  "roles, domains, default)",
                  word);
}

/* One rule line; *empty for blank and comment lines. */
static int parse_rule(const char *text, struct rule *r, bool *empty, struct parse_error *e)
{
    kf_buf line;
    char word[WORD_MAX_LEN];
    bool done, seen_roles = false, seen_domains = false;
    memset(r, 0, sizeof(*r));
    kf_buf_reader(&line, (const uint8_t *)text, strlen(text));
    *empty = true;
    for (;;) {
        KF_GUARD(next_word(&line, word, sizeof(word), &done, e));
        if (done)
            break;
        *empty = false;
        KF_GUARD(apply_word(word, r, &seen_roles, &seen_domains, e));
    }
    if (*empty)
        return KF_OK;
    if (!r->has_fingerprint && !r->cn && !r->o && !r->ou)
        return refuse(e, "rule has no matcher (%s)", "fingerprint= or subject-CN/O/OU=");
    if (!seen_roles || !seen_domains)
        return refuse(e, "rule needs both roles= and domains= (%s)", text);
    if (r->all_domains && r->ndomains)
        return refuse(e, "domains=* cannot be combined with named domains (%s)", text);
    if (r->default_domain[0] && !r->all_domains) {
        bool listed = false;
        for (size_t i = 0; i < r->ndomains; i++)
            listed |= strcmp(r->domains[i], r->default_domain) == 0;
        if (!listed)
            return refuse(e, "default domain '%s' is not among the rule's domains",
                          r->default_domain);
    }
    return KF_OK;
}

static int add_rule(kf_tls_identities *ids, const struct rule *r)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 8;
        struct rule *nr = realloc(ids->rules, cap * sizeof(*nr));
        KF_ENSURE(nr, KF_ERR_NOMEM);
        ids->rules = nr;
        ids->cap = cap;
    }
    ids->rules[ids->n] = *r;
    /* Re-point the matcher fields into the copy. */
    struct rule *c = &ids->rules[ids->n++];
    c->cn = r->cn ? c->cn_buf : NULL;
    c->o = r->o ? c->o_buf : NULL;
    c->ou = r->ou ? c->ou_buf : NULL;
    return KF_OK;
}

int kf_tls_identities_parse(const char *text, size_t len, kf_tls_identities **out,
                            unsigned *bad_line, char *why, size_t why_len)
{
    struct parse_error e = {why, why_len};
    kf_buf file;
    char line[LINE_MAX_LEN];
    unsigned lineno = 0;
    int rc = KF_OK;
    bool have;
    if (why && why_len)
        why[0] = 0;
    if (bad_line)
        *bad_line = 0;
    kf_tls_identities *ids = calloc(1, sizeof(*ids));
    KF_ENSURE(ids, KF_ERR_NOMEM);
    kf_buf_reader(&file, (const uint8_t *)text, len);
    while (rc == KF_OK) {
        lineno++;
        rc = next_line(&file, line, sizeof(line), &have);
        if (rc == KF_ERR_LIMIT)
            rc = refuse(&e, "line longer than %s characters", "1023");
        else if (rc == KF_ERR_FORMAT)
            rc = refuse(&e, "NUL byte in line%s", "");
        if (rc < 0 || !have)
            break;
        struct rule r;
        bool empty;
        rc = parse_rule(line, &r, &empty, &e);
        if (rc == KF_OK && !empty)
            rc = add_rule(ids, &r);
    }
    if (rc < 0) {
        if (bad_line)
            *bad_line = lineno;
        kf_tls_identities_free(ids);
        return rc;
    }
    *out = ids;
    return KF_OK;
}

int kf_tls_identities_load(const char *path, kf_tls_identities **out, unsigned *bad_line, char *why,
                           size_t why_len)
{
    kf_buf text = {0};
    int rc = KF_ERR_IO;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (why && why_len)
            snprintf(why, why_len, "cannot open %s: %s", path, strerror(errno));
        return KF_ERR_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (size_t)sb.st_size > IDENTITY_FILE_MAX) {
        if (why && why_len)
            snprintf(why, why_len, "%s is not a regular file of at most 1 MiB", path);
        goto out;
    }
    if (kf_buf_alloc(&text, (size_t)sb.st_size + 1, IDENTITY_FILE_MAX + 1, 0) < 0) {
        rc = KF_ERR_NOMEM;
        goto out;
    }
    uint8_t *p;
    if (kf_buf_put_space(&text, (size_t)sb.st_size, &p) < 0)
        goto out;
    size_t got = 0;
    while (got < (size_t)sb.st_size) {
        ssize_t r = read(fd, p + got, (size_t)sb.st_size - got);
        if (r <= 0)
            goto out;
        got += (size_t)r;
    }
    rc = kf_tls_identities_parse((const char *)text.data, text.len, out, bad_line, why, why_len);
out:
    close(fd);
    kf_buf_free(&text);
    return rc;
}

void kf_tls_identities_free(kf_tls_identities *ids)
{
    if (!ids)
        return;
    free(ids->rules);
    free(ids);
}

size_t kf_tls_identities_count(const kf_tls_identities *ids)
{
    return ids ? ids->n : 0;
}

/* A subject field matches when the rule does not use it, or the certificate
 * has it exactly once with exactly this value (two CNs would be ambiguous). */
static bool field_matches(const char *want, const char *have, unsigned count)
{
    return !want || (count == 1 && strcmp(want, have) == 0);
}

static bool rule_matches(const struct rule *r, const struct kf_tls_peer *peer)
{
    if (r->has_fingerprint && !kf_ct_equal(r->sha256, peer->sha256, sizeof(r->sha256)))
        return false;
    return field_matches(r->cn, peer->cn, peer->n_cn) && field_matches(r->o, peer->o, peer->n_o) &&
           field_matches(r->ou, peer->ou, peer->n_ou);
}

int kf_tls_identities_match(const kf_tls_identities *ids, const struct kf_tls_peer *peer,
                            struct kf_principal *who)
{
    for (size_t i = 0; ids && i < ids->n; i++) {
        const struct rule *r = &ids->rules[i];
        if (!rule_matches(r, peer))
            continue;
        memset(who, 0, sizeof(*who));
        snprintf(who->name, sizeof(who->name), "cert:%s", peer->subject_dn);
        who->roles = r->roles;
        who->all_domains = r->all_domains;
        who->ndomains = r->ndomains;
        memcpy(who->domains, r->domains, sizeof(who->domains));
        /* Without default=, Create goes to the first named domain, or "default". */
        snprintf(who->default_domain, sizeof(who->default_domain), "%s",
                 r->default_domain[0] ? r->default_domain
                 : r->ndomains        ? r->domains[0]
                                      : "default");
        return KF_OK;
    }
    return KF_ERR_IDENTITY_UNKNOWN;
}
