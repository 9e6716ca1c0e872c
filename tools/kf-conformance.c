/*
 * kf-conformance: run the OASIS KMIP XML test cases against keyfleetd.
 *
 *   kf-conformance [--socket PATH | --tls HOST:PORT --ca F --cert F --key F]
 *                  [--verbose] [--only NAME] DIR
 *
 * Every *.xml file of DIR (sorted by name) is one test case: <KMIP> with alternating
 * <RequestMessage> and <ResponseMessage>. Each request is sent as binary TTLV
 * with its own Protocol Version; the server's answer is compared with the
 * expected response item by item (same tags, same order, same types, equal
 * values) except where a value is the server's to choose:
 *
 *   - "$NAME" placeholders (Text or Byte String) in an expected response bind
 *     to the server's value at that position on first sight and must be equal
 *     on every later sight; in a request they are replaced by the bound value.
 *     A placeholder only requests use ($DATA_0 in CS-BC-M-13) binds to the
 *     first later response item whose tag has that name (Data).
 *     $NOW / $NOW±N in DateTime values are resolved by the XML reader.
 *   - any DateTime / Date-Time Extended (Time Stamp, Initial Date, ...),
 *     Result Message text, Vendor Identification, Server Information; of a
 *     Query payload only the kinds of items (it lists what the server has);
 *   - values that depend on key material the reference server made: Key
 *     Material, Key Value, Data, Signature Data, MAC Data, IV/Counter/Nonce,
 *     Authenticated Encryption Tag, Digest Value, Correlation Value and Big
 *     Integers in answers to Create / Create Key Pair / Re-key / Derive Key /
 *     RNG Retrieve, or about an object this case did not Register;
 *   - randomised outputs: Data/IV/tag when the server chose the IV, Data and
 *     Signature Data of Encrypt/Sign with public-key algorithms;
 *   - runs of Attribute (Get Attributes) and Attribute Name (Get Attribute
 *     List) match in any order; extra "x-" custom attributes are allowed.
 * Tags and types are compared everywhere. docs/conformance.md has the table
 * of rules and the current results.
 *
 * Output: one line per file, "PASS name" or "FAIL name: reason", then
 * "N passed, N failed". Exit 0 whatever the results; 1 if the runner could
 * not run (no test files, cannot connect, bad arguments). Byte values are
 * never printed (they may be key material), only their lengths.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keyfleet/error.h"
#include "keyfleet/server.h"
#include "keyfleet/tls.h"
#include "keyfleet/ttlv.h"

#define MAX_FILE ((size_t)16 * 1024 * 1024)
#define MAX_BINDINGS 256
#define REASON_MAX 512
#define PATH_MAX_LEN 384

/* ---- state of one test case ------------------------------------------------ */

struct binding {
    char name[64];
    uint8_t *value;
    size_t len;
};

struct uid_set {
    char *uids[MAX_BINDINGS];
    size_t n;
};

struct case_state {
    struct binding bindings[MAX_BINDINGS];
    size_t nbindings;
    /* Placeholders that requests use but no expected response spells: they
     * name the value of the item with that tag in an earlier response
     * ($DATA_0 = the Data an Encrypt returned, $MAC_DATA = the MAC Data...). */
    char implicit[MAX_BINDINGS][64];
    size_t nimplicit;
    struct uid_set generated;  /* objects whose key material the server made */
    struct uid_set asymmetric; /* public/private keys: randomised Encrypt and Sign */
    struct uid_set registered; /* objects whose material this case gave (Register) */
    bool in_generated_context; /* comparing an answer about a generated object */
    bool random_outputs;       /* the answer's Data/IV/tag/signature are randomised */
    bool all_attributes;       /* a Get Attributes that named none: "all", extras allowed */
    uint32_t attribute_value_tag; /* tag of the attribute being compared, for messages */
    bool trial;                /* matching attempt: no binding, no reason */
    char reason[REASON_MAX]; /* of the exchange being compared */
    char first[REASON_MAX];  /* of the first exchange that failed: the file's result */
    bool verbose;            /* dump trees and go on after a failure (later gaps too) */
};

/* The admin socket, or KMIP over TLS with a client certificate. */
struct transport {
    const char *socket_path;
    int fd;
    const char *tls_host; /* NULL: UNIX socket */
    uint16_t tls_port;
    const char *ca, *cert, *key;
    kf_tls_client *tls;
};

static void uid_set_free(struct uid_set *set)
{
    for (size_t i = 0; i < set->n; i++)
        free(set->uids[i]);
    set->n = 0;
}

static void case_state_free(struct case_state *cs)
{
    for (size_t i = 0; i < cs->nbindings; i++)
        free(cs->bindings[i].value);
    uid_set_free(&cs->generated);
    uid_set_free(&cs->asymmetric);
    uid_set_free(&cs->registered);
    memset(cs, 0, sizeof(*cs));
}

/* First reason wins: later differences are usually consequences of it. */
__attribute__((format(printf, 2, 3))) static void set_reason(struct case_state *cs,
                                                             const char *fmt, ...)
{
    if (cs->trial || cs->reason[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cs->reason, sizeof(cs->reason), fmt, ap);
    va_end(ap);
}

static const char *tag_label(uint32_t tag, char buf[16])
{
    const char *name = kf_ttlv_tag_name(tag);
    if (name)
        return name;
    snprintf(buf, 16, "0x%06X", (unsigned)tag);
    return buf;
}

static const char *type_label(uint8_t type)
{
    const char *name = kf_ttlv_type_name(type);
    return name ? name : "?";
}

/* ---- placeholders ------------------------------------------------------------ */

/* "$NAME" with NAME in [A-Z0-9_]: how the OASIS files spell server-chosen values.
 * The XML reader keeps a Byte String placeholder as the ASCII bytes of its name. */
static bool placeholder_name(const kf_ttlv *n, char out[64])
{
    if (n->type != KF_TTLV_TEXT && n->type != KF_TTLV_BYTES)
        return false;
    const uint8_t *p = n->v.bytes.p;
    size_t len = n->v.bytes.len;
    if (len < 2 || len >= 64 || p[0] != '$')
        return false;
    for (size_t i = 1; i < len; i++) {
        uint8_t c = p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    memcpy(out, p, len);
    out[len] = '\0';
    return true;
}

static struct binding *find_binding(struct case_state *cs, const char *name)
{
    for (size_t i = 0; i < cs->nbindings; i++)
        if (strcmp(cs->bindings[i].name, name) == 0)
            return &cs->bindings[i];
    return NULL;
}

static int bind_placeholder(struct case_state *cs, const char *name, const uint8_t *p, size_t len)
{
    KF_ENSURE(cs->nbindings < MAX_BINDINGS, KF_ERR_LIMIT);
    struct binding *b = &cs->bindings[cs->nbindings];
    b->value = malloc(len ? len : 1);
    KF_ENSURE(b->value != NULL, KF_ERR_NOMEM);
    if (len)
        memcpy(b->value, p, len);
    b->len = len;
    snprintf(b->name, sizeof(b->name), "%s", name);
    cs->nbindings++;
    return KF_OK;
}

/* Replace every placeholder in a request by its bound value (in the arena). */
static int substitute(struct case_state *cs, kf_arena *a, kf_ttlv *n)
{
    for (; n; n = n->next) {
        char name[64];
        if (n->type == KF_TTLV_STRUCTURE) {
            KF_GUARD(substitute(cs, a, n->child));
            continue;
        }
        if (!placeholder_name(n, name))
            continue;
        const struct binding *b = find_binding(cs, name);
        if (!b) {
            set_reason(cs, "request uses %s before any response bound it", name);
            return KF_ERR_REQUEST;
        }
        uint8_t *copy = kf_arena_alloc(a, b->len + 1);
        KF_ENSURE(copy != NULL, KF_ERR_NOMEM);
        memcpy(copy, b->value, b->len);
        copy[b->len] = '\0';
        n->v.bytes.p = copy;
        n->v.bytes.len = b->len;
    }
    return KF_OK;
}

/* ---- objects the server generated -------------------------------------------- */

static bool op_generates(uint32_t op)
{
    switch (op) {
    case KMIP_OP_CREATE:
    case KMIP_OP_CREATE_KEY_PAIR:
    case KMIP_OP_RE_KEY:
    case KMIP_OP_RE_KEY_KEY_PAIR:
    case KMIP_OP_DERIVE_KEY:
    case KMIP_OP_RNG_RETRIEVE:
    case KMIP_OP_CREATE_SPLIT_KEY:
    case KMIP_OP_JOIN_SPLIT_KEY:
        return true;
    default:
        return false;
    }
}

static bool uid_set_has(const struct uid_set *set, const kf_ttlv *uid)
{
    if (!uid || uid->type != KF_TTLV_TEXT)
        return false;
    for (size_t i = 0; i < set->n; i++)
        if (strlen(set->uids[i]) == uid->v.bytes.len &&
            memcmp(set->uids[i], uid->v.bytes.p, uid->v.bytes.len) == 0)
            return true;
    return false;
}

static void uid_set_add(struct uid_set *set, const kf_ttlv *uid)
{
    if (!uid || uid->type != KF_TTLV_TEXT || uid_set_has(set, uid) || set->n >= MAX_BINDINGS)
        return;
    char *copy = strndup((const char *)uid->v.bytes.p, uid->v.bytes.len);
    if (copy)
        set->uids[set->n++] = copy;
}

/* Every Unique Identifier a Create / Create Key Pair / Register answer names. */
static void uid_set_add_payload(struct uid_set *set, const kf_ttlv *payload)
{
    static const uint32_t uid_tags[] = {KMIP_TAG_UNIQUE_IDENTIFIER,
                                        KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER,
                                        KMIP_TAG_PUBLIC_KEY_UNIQUE_IDENTIFIER};
    for (size_t i = 0; i < sizeof(uid_tags) / sizeof(uid_tags[0]); i++)
        for (const kf_ttlv *u = kf_ttlv_find(payload, uid_tags[i]); u;
             u = kf_ttlv_find_next(u, uid_tags[i]))
            uid_set_add(set, u);
}

/* Values that come from generated key material or randomness. */
static bool is_generated_output_tag(uint32_t tag)
{
    switch (tag) {
    case KMIP_TAG_KEY_MATERIAL:
    case KMIP_TAG_KEY_VALUE:
    case KMIP_TAG_DATA:
    case KMIP_TAG_SIGNATURE_DATA:
    case KMIP_TAG_MAC_DATA:
    case KMIP_TAG_IV_COUNTER_NONCE:
    case KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG:
    case KMIP_TAG_DIGEST_VALUE:
    case KMIP_TAG_CORRELATION_VALUE:
        return true;
    default:
        return false;
    }
}

/* Outputs of a randomised operation: an encryption under an IV the server
 * chose, RSA-OAEP / PKCS#1 v1.5 encryption, PSS or ECDSA signatures. */
static bool is_random_output_tag(uint32_t tag)
{
    return tag == KMIP_TAG_DATA || tag == KMIP_TAG_IV_COUNTER_NONCE ||
           tag == KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG || tag == KMIP_TAG_SIGNATURE_DATA;
}

/* ---- implicit placeholders ------------------------------------------------------ */

/* "$IV_COUNTER_NONCE_0" and "IVCounterNonce" both give "IVCOUNTERNONCE". */
static void placeholder_base(const char *name, char out[64])
{
    size_t k = 0, len = strlen(name);
    while (len > 1 && name[len - 1] >= '0' && name[len - 1] <= '9')
        len--;
    for (size_t i = 0; i < len && k < 63; i++)
        if (name[i] != '$' && name[i] != '_')
            out[k++] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32 : name[i]);
    out[k] = '\0';
}

static bool names_placeholder(const kf_ttlv *n, char *names, size_t cap, size_t *count)
{
    char name[64];
    if (!placeholder_name(n, name))
        return false;
    for (size_t i = 0; i < *count; i++)
        if (strcmp(names + i * 64, name) == 0)
            return true;
    if (*count < cap)
        memcpy(names + (*count)++ * 64, name, 64);
    return true;
}

static void collect_placeholders(const kf_ttlv *n, char *names, size_t cap, size_t *count)
{
    for (; n; n = n->next) {
        if (n->type == KF_TTLV_STRUCTURE)
            collect_placeholders(n->child, names, cap, count);
        else
            names_placeholder(n, names, cap, count);
    }
}

/* Placeholders the requests of a file use and its responses never spell. */
static void find_implicit_placeholders(struct case_state *cs, const kf_ttlv *first)
{
    static char in_req[MAX_BINDINGS][64], in_resp[MAX_BINDINGS][64];
    size_t nreq = 0, nresp = 0;
    for (const kf_ttlv *m = first; m; m = m->next) {
        if (m->tag == KMIP_TAG_REQUEST_MESSAGE)
            collect_placeholders(m->child, in_req[0], MAX_BINDINGS, &nreq);
        else
            collect_placeholders(m->child, in_resp[0], MAX_BINDINGS, &nresp);
    }
    for (size_t i = 0; i < nreq; i++) {
        bool spelled = false;
        for (size_t j = 0; j < nresp && !spelled; j++)
            spelled = strcmp(in_req[i], in_resp[j]) == 0;
        if (!spelled && cs->nimplicit < MAX_BINDINGS)
            memcpy(cs->implicit[cs->nimplicit++], in_req[i], 64);
    }
}

/* An actual response value whose tag an unbound implicit placeholder names
 * binds it (the lowest-numbered first, in response order). */
static void bind_implicit(struct case_state *cs, const kf_ttlv *act)
{
    const char *tag = kf_ttlv_tag_name(act->tag);
    if (!tag || cs->nimplicit == 0)
        return;
    char want[64], base[64];
    placeholder_base(tag, want);
    for (size_t i = 0; i < cs->nimplicit; i++) {
        placeholder_base(cs->implicit[i], base);
        if (strcmp(base, want) != 0 || find_binding(cs, cs->implicit[i]))
            continue;
        if (bind_placeholder(cs, cs->implicit[i], act->v.bytes.p, act->v.bytes.len) < 0)
            set_reason(cs, "too many placeholders (runner limit)");
        return;
    }
}

/* ---- comparison ---------------------------------------------------------------- */

static bool compare_item(struct case_state *cs, const kf_ttlv *exp, const kf_ttlv *act,
                         const char *path);

/* Diagnostic paths: a path too long for the buffer ends in "..." rather than silently. */
__attribute__((format(printf, 3, 4))) static void path_printf(char *out, size_t cap,
                                                               const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n >= cap && cap > 4)
        memcpy(out + cap - 4, "...", 4);
}

static void child_path(char out[PATH_MAX_LEN], const char *path, const kf_ttlv *n,
                       const char *suffix)
{
    char hex[16];
    path_printf(out, PATH_MAX_LEN, "%s/%s%s", path, tag_label(n->tag, hex), suffix ? suffix : "");
}

static bool compare_placeholder(struct case_state *cs, const char *name, const kf_ttlv *act,
                                const char *path)
{
    const struct binding *b = find_binding(cs, name);
    if (!b) {
        if (!cs->trial && bind_placeholder(cs, name, act->v.bytes.p, act->v.bytes.len) < 0) {
            set_reason(cs, "%s: too many placeholders (runner limit)", path);
            return false;
        }
        return true; /* in a trial an unbound placeholder matches anything */
    }
    if (b->len == act->v.bytes.len && memcmp(b->value, act->v.bytes.p, b->len) == 0)
        return true;
    if (act->type == KF_TTLV_TEXT)
        set_reason(cs, "%s is \"%.*s\" but %s was bound to \"%.*s\"", path,
                   (int)act->v.bytes.len, (const char *)act->v.bytes.p, name, (int)b->len,
                   (const char *)b->value);
    else
        set_reason(cs, "%s (%zu bytes) differs from the value bound to %s", path,
                   act->v.bytes.len, name);
    return false;
}

static bool compare_bytes(struct case_state *cs, const kf_ttlv *exp, const kf_ttlv *act,
                          const char *path)
{
    if (exp->v.bytes.len == act->v.bytes.len &&
        memcmp(exp->v.bytes.p, act->v.bytes.p, exp->v.bytes.len) == 0)
        return true;
    if (exp->type == KF_TTLV_TEXT)
        set_reason(cs, "%s is \"%.*s\", expected \"%.*s\"", path, (int)act->v.bytes.len,
                   (const char *)act->v.bytes.p, (int)exp->v.bytes.len,
                   (const char *)exp->v.bytes.p);
    else
        set_reason(cs, "%s: %zu bytes that differ from the expected %zu bytes", path,
                   act->v.bytes.len, exp->v.bytes.len);
    return false;
}

/* tag: whose enumeration names the value (an Attribute Value takes its
 * attribute's, e.g. State for "Attribute(State)/AttributeValue"). */
static void describe_scalar(const kf_ttlv *n, uint32_t tag, char *out, size_t cap)
{
    const char *name;
    switch (n->type) {
    case KF_TTLV_INTEGER:
        snprintf(out, cap, "%d (0x%x)", n->v.i32, (unsigned)n->v.i32);
        break;
    case KF_TTLV_ENUM:
        name = kf_ttlv_enum_name(tag, n->v.u32);
        if (name)
            snprintf(out, cap, "%s", name);
        else
            snprintf(out, cap, "0x%08x", n->v.u32);
        break;
    case KF_TTLV_BOOL:
        snprintf(out, cap, "%s", n->v.b ? "true" : "false");
        break;
    case KF_TTLV_INTERVAL:
        snprintf(out, cap, "%u", n->v.u32);
        break;
    default:
        snprintf(out, cap, "%lld", (long long)n->v.i64);
        break;
    }
}

static bool compare_scalar(struct case_state *cs, const kf_ttlv *exp, const kf_ttlv *act,
                           const char *path)
{
    char name[64];
    switch (exp->type) {
    case KF_TTLV_DATETIME:
    case KF_TTLV_DTX:
        return true; /* times are the server's */
    case KF_TTLV_TEXT:
    case KF_TTLV_BYTES:
        if (placeholder_name(exp, name))
            return compare_placeholder(cs, name, act, path);
        if (!cs->trial)
            bind_implicit(cs, act);
        if (exp->tag == KMIP_TAG_RESULT_MESSAGE || exp->tag == KMIP_TAG_VENDOR_IDENTIFICATION)
            return true;
        if (exp->type == KF_TTLV_BYTES && cs->in_generated_context &&
            is_generated_output_tag(exp->tag))
            return true;
        if (exp->type == KF_TTLV_BYTES && cs->random_outputs && is_random_output_tag(exp->tag))
            return true;
        return compare_bytes(cs, exp, act, path);
    case KF_TTLV_BIGINT:
        if (cs->in_generated_context)
            return true;
        return compare_bytes(cs, exp, act, path);
    default:
        break;
    }
    bool same;
    switch (exp->type) {
    case KF_TTLV_INTEGER:
        same = exp->v.i32 == act->v.i32;
        break;
    case KF_TTLV_ENUM:
    case KF_TTLV_INTERVAL:
        same = exp->v.u32 == act->v.u32;
        break;
    case KF_TTLV_BOOL:
        same = exp->v.b == act->v.b;
        break;
    default:
        same = exp->v.i64 == act->v.i64;
        break;
    }
    if (!same) {
        char e[64], a[64];
        uint32_t tag = exp->tag == KMIP_TAG_ATTRIBUTE_VALUE && cs->attribute_value_tag
                           ? cs->attribute_value_tag
                           : exp->tag;
        describe_scalar(exp, tag, e, sizeof(e));
        describe_scalar(act, tag, a, sizeof(a));
        set_reason(cs, "%s is %s, expected %s", path, a, e);
    }
    return same;
}

/* The attribute an Attribute structure or an Attribute Name item names ("?" if none). */
static void attribute_name(const kf_ttlv *attr, char *out, size_t cap)
{
    const kf_ttlv *n =
        attr->tag == KMIP_TAG_ATTRIBUTE_NAME ? attr : kf_ttlv_find(attr, KMIP_TAG_ATTRIBUTE_NAME);
    if (n && n->type == KF_TTLV_TEXT)
        snprintf(out, cap, "%.*s", (int)n->v.bytes.len, (const char *)n->v.bytes.p);
    else
        snprintf(out, cap, "?");
}

static size_t run_length(const kf_ttlv *n, uint32_t tag)
{
    size_t k = 0;
    for (; n && n->tag == tag; n = n->next)
        k++;
    return k;
}

/*
 * A run of Attribute structures (Get Attributes) or Attribute Names (Get
 * Attribute List): each expected one must match a distinct actual one, in any
 * order. A trial match first (no binding), then the real
 * comparison, so placeholders bind to the attribute that matched.
 */
static bool compare_attribute_run(struct case_state *cs, const kf_ttlv **pexp,
                                  const kf_ttlv **pact, const char *path)
{
    const kf_ttlv *exp = *pexp, *act = *pact;
    uint32_t tag = exp->tag;
    size_t nexp = run_length(exp, tag), nact = run_length(act, tag);
    bool used[KF_TTLV_DEFAULT_MAX_ITEMS / 8] = {0};
    bool ok = true;
    if (nact > sizeof(used) / sizeof(used[0]))
        nact = sizeof(used) / sizeof(used[0]);
    const kf_ttlv *e = exp;
    for (size_t i = 0; i < nexp; i++, e = e->next) {
        char aname[96], p[PATH_MAX_LEN];
        attribute_name(e, aname, sizeof(aname));
        snprintf(p, sizeof(p), "%s/%s(%s)", path,
                 tag == KMIP_TAG_ATTRIBUTE ? "Attribute" : "AttributeName", aname);
        const kf_ttlv *a = act, *match = NULL, *same_name = NULL;
        size_t match_i = 0, same_i = 0;
        char other[96];
        for (size_t j = 0; j < nact; j++, a = a->next) {
            if (used[j])
                continue;
            attribute_name(a, other, sizeof(other));
            if (!same_name && strcmp(other, aname) == 0) {
                same_name = a;
                same_i = j;
            }
            bool saved = cs->trial;
            cs->trial = true;
            bool m = compare_item(cs, e, a, p);
            cs->trial = saved;
            if (m) {
                match = a;
                match_i = j;
                break;
            }
        }
        if (match) {
            used[match_i] = true;
            ok = compare_item(cs, e, match, p) && ok;
        } else if (same_name) {
            used[same_i] = true;
            compare_item(cs, e, same_name, p); /* for the reason */
            ok = false;
        } else {
            set_reason(cs, "%s: attribute missing from the response", p);
            ok = false;
        }
        if (!ok && cs->trial)
            return false;
    }
    if (ok && nact > nexp) {
        /* A server may add its own "x-" custom attributes (KMIP 1.4 §3.39 Custom Attribute). */
        const kf_ttlv *a = act;
        for (size_t j = 0; j < nact; j++, a = a->next) {
            char aname[96];
            attribute_name(a, aname, sizeof(aname));
            if (used[j] || strncmp(aname, "x-", 2) == 0 ||
                (cs->all_attributes && tag == KMIP_TAG_ATTRIBUTE))
                continue;
            set_reason(cs, "%s: unexpected attribute '%s' in the response", path, aname);
            ok = false;
            break;
        }
    }
    for (size_t i = 0; i < nexp; i++)
        exp = exp->next;
    for (size_t j = 0; j < run_length(*pact, tag); j++)
        act = act->next;
    *pexp = exp;
    *pact = act;
    return ok;
}

/* "Cryptographic Algorithm" -> the tag CryptographicAlgorithm; 0 if none. */
static uint32_t attribute_tag(const kf_ttlv *attr)
{
    const kf_ttlv *n = kf_ttlv_find(attr, KMIP_TAG_ATTRIBUTE_NAME);
    char name[96];
    size_t k = 0;
    if (!n || n->type != KF_TTLV_TEXT)
        return 0;
    for (size_t i = 0; i < n->v.bytes.len && k + 1 < sizeof(name); i++)
        if (n->v.bytes.p[i] != ' ')
            name[k++] = (char)n->v.bytes.p[i];
    name[k] = '\0';
    uint32_t tag;
    return kf_ttlv_tag_by_name(name, &tag) == KF_OK ? tag : 0;
}

static bool compare_children(struct case_state *cs, const kf_ttlv *exp, const kf_ttlv *act,
                             const char *path)
{
    if (exp->tag == KMIP_TAG_ATTRIBUTE)
        cs->attribute_value_tag = attribute_tag(exp);
    const kf_ttlv *e = exp->child, *a = act->child;
    bool ok = true;
    while (e && a) {
        char p[PATH_MAX_LEN], hex[16];
        if ((e->tag == KMIP_TAG_ATTRIBUTE || e->tag == KMIP_TAG_ATTRIBUTE_NAME) &&
            a->tag == e->tag) {
            ok = compare_attribute_run(cs, &e, &a, path) && ok;
        } else {
            child_path(p, path, e, NULL);
            if (e->tag != a->tag) {
                set_reason(cs, "%s: the response has %s here", p, tag_label(a->tag, hex));
                return false;
            }
            ok = compare_item(cs, e, a, p) && ok;
            e = e->next;
            a = a->next;
        }
        if (!ok && (cs->trial || cs->reason[0]))
            return false;
    }
    if (e) {
        char p[PATH_MAX_LEN];
        child_path(p, path, e, NULL);
        set_reason(cs, "%s: missing from the response", p);
        return false;
    }
    if (a) {
        char p[PATH_MAX_LEN];
        child_path(p, path, a, NULL);
        set_reason(cs, "%s: not expected in the response", p);
        return false;
    }
    return ok;
}

static bool compare_item(struct case_state *cs, const kf_ttlv *exp, const kf_ttlv *act,
                         const char *path)
{
    char hex[16];
    if (exp->tag != act->tag) {
        set_reason(cs, "%s: the response has %s here", path, tag_label(act->tag, hex));
        return false;
    }
    if (exp->type != act->type) {
        set_reason(cs, "%s is a %s, expected a %s", path, type_label(act->type),
                   type_label(exp->type));
        return false;
    }
    /* The server's own facts: its information, and which RNG it uses (keyfleet reports
     * its getrandom XOR DRBG construction truthfully as Unspecified, where the OASIS
     * files show their reference server's ANSI X9.31). Present, same type: enough. */
    /* Only the value: the Attribute around it still has to name Random Number Generator. */
    if (exp->tag == KMIP_TAG_SERVER_INFORMATION || exp->tag == KMIP_TAG_RANDOM_NUMBER_GENERATOR ||
        (exp->tag == KMIP_TAG_ATTRIBUTE_VALUE && exp->type == KF_TTLV_STRUCTURE &&
         strstr(path, "(Random Number Generator)/AttributeValue")))
        return true;
    if (exp->type == KF_TTLV_STRUCTURE)
        return compare_children(cs, exp, act, path);
    return compare_scalar(cs, exp, act, path);
}

/* ---- one batch item --------------------------------------------------------- */

static uint32_t item_enum(const kf_ttlv *item, uint32_t tag)
{
    uint32_t v = 0;
    if (kf_ttlv_get_enum(kf_ttlv_find(item, tag), &v) < 0)
        return 0;
    return v;
}

static const char *enum_label(uint32_t tag, uint32_t v, char buf[16])
{
    const char *name = kf_ttlv_enum_name(tag, v);
    if (name)
        return name;
    snprintf(buf, 16, "0x%08x", v);
    return buf;
}

/* The result status differs: say what the server said, which names the gap. */
static void report_status(struct case_state *cs, const kf_ttlv *exp, const kf_ttlv *act,
                          const char *path)
{
    char b1[16], b2[16], b3[16];
    uint32_t want = item_enum(exp, KMIP_TAG_RESULT_STATUS);
    uint32_t got = item_enum(act, KMIP_TAG_RESULT_STATUS);
    const kf_ttlv *reason = kf_ttlv_find(act, KMIP_TAG_RESULT_REASON);
    const kf_ttlv *msg = kf_ttlv_find(act, KMIP_TAG_RESULT_MESSAGE);
    int msg_len = msg && msg->type == KF_TTLV_TEXT ? (int)msg->v.bytes.len : 0;
    if (!reason && !msg_len) {
        char b5[16];
        const kf_ttlv *want_reason = kf_ttlv_find(exp, KMIP_TAG_RESULT_REASON);
        set_reason(cs, "%s: %s, expected %s%s%s", path, enum_label(KMIP_TAG_RESULT_STATUS, got, b1),
                   enum_label(KMIP_TAG_RESULT_STATUS, want, b2), want_reason ? "/" : "",
                   want_reason ? enum_label(KMIP_TAG_RESULT_REASON,
                                            item_enum(exp, KMIP_TAG_RESULT_REASON), b5)
                               : "");
        return;
    }
    char b4[16];
    const kf_ttlv *want_reason = kf_ttlv_find(exp, KMIP_TAG_RESULT_REASON);
    set_reason(cs, "%s: %s, expected %s%s%s (%s%s%.*s)", path,
               enum_label(KMIP_TAG_RESULT_STATUS, got, b1),
               enum_label(KMIP_TAG_RESULT_STATUS, want, b2), want_reason ? "/" : "",
               want_reason ? enum_label(KMIP_TAG_RESULT_REASON,
                                        item_enum(exp, KMIP_TAG_RESULT_REASON), b4)
                           : "",
               reason ? enum_label(KMIP_TAG_RESULT_REASON, item_enum(act, KMIP_TAG_RESULT_REASON), b3)
                      : "no reason",
               msg_len ? ": " : "", msg_len, msg_len ? (const char *)msg->v.bytes.p : "");
}

/*
 * A Query answer lists what the server implements, so its values are the
 * server's; but each kind of item the expected answer has (Operation,
 * Object Type, Vendor Identification, Server Information...) must be there,
 * or the server ignored a Query Function the test asked for.
 */
static bool query_answers_every_function(struct case_state *cs, const kf_ttlv *exp,
                                         const kf_ttlv *act, const char *path)
{
    for (const kf_ttlv *e = exp->child; e; e = e->next) {
        if (kf_ttlv_find(act, e->tag))
            continue;
        char p[PATH_MAX_LEN];
        child_path(p, path, e, NULL);
        set_reason(cs, "%s: none in the Query response", p);
        return false;
    }
    return true;
}

/* Randomised outputs: an IV the server chose (the request had none), or an
 * Encrypt / Sign with a public-key algorithm (OAEP, PKCS#1 v1.5, PSS, ECDSA). */
static bool has_random_outputs(const struct case_state *cs, uint32_t op, const kf_ttlv *req_item,
                               const kf_ttlv *act_payload)
{
    const kf_ttlv *req_payload = kf_ttlv_find(req_item, KMIP_TAG_REQUEST_PAYLOAD);
    if (kf_ttlv_find(act_payload, KMIP_TAG_IV_COUNTER_NONCE) &&
        !kf_ttlv_find(req_payload, KMIP_TAG_IV_COUNTER_NONCE))
        return true;
    return (op == KMIP_OP_ENCRYPT || op == KMIP_OP_SIGN) &&
           uid_set_has(&cs->asymmetric, kf_ttlv_find(act_payload, KMIP_TAG_UNIQUE_IDENTIFIER));
}

/* Register of a public or private key: remember its UID for has_random_outputs. */
static void note_asymmetric(struct case_state *cs, uint32_t op, const kf_ttlv *req_item,
                            const kf_ttlv *act_payload)
{
    uint32_t type = 0;
    const kf_ttlv *req_payload = kf_ttlv_find(req_item, KMIP_TAG_REQUEST_PAYLOAD);
    if (kf_ttlv_get_enum(kf_ttlv_find(req_payload, KMIP_TAG_OBJECT_TYPE), &type) < 0)
        type = 0;
    if (op == KMIP_OP_CREATE_KEY_PAIR || op == KMIP_OP_RE_KEY_KEY_PAIR ||
        (op == KMIP_OP_REGISTER &&
         (type == KF_OBJ_PUBLIC_KEY || type == KF_OBJ_PRIVATE_KEY)))
        uid_set_add_payload(&cs->asymmetric, act_payload);
}

static bool compare_batch_item(struct case_state *cs, const kf_ttlv *req_item, const kf_ttlv *exp,
                               const kf_ttlv *act, const char *path)
{
    char b1[16];
    uint32_t op = item_enum(exp, KMIP_TAG_OPERATION);
    char p[PATH_MAX_LEN];
    path_printf(p, sizeof(p), "%s(%s)", path, enum_label(KMIP_TAG_OPERATION, op, b1));
    if (item_enum(exp, KMIP_TAG_RESULT_STATUS) != item_enum(act, KMIP_TAG_RESULT_STATUS)) {
        report_status(cs, exp, act, p);
        return false;
    }
    const kf_ttlv *act_payload = kf_ttlv_find(act, KMIP_TAG_RESPONSE_PAYLOAD);
    if (op == KMIP_OP_QUERY && act_payload && kf_ttlv_find(exp, KMIP_TAG_RESPONSE_PAYLOAD)) {
        /* What a server implements is its own; the rest of the item still counts. */
        const kf_ttlv *e = exp->child, *a = act->child;
        for (; e && a; e = e->next, a = a->next) {
            char cp[PATH_MAX_LEN];
            child_path(cp, p, e, NULL);
            if (e->tag == KMIP_TAG_RESPONSE_PAYLOAD && a->tag == KMIP_TAG_RESPONSE_PAYLOAD) {
                if (!query_answers_every_function(cs, e, a, cp))
                    return false;
                continue;
            }
            if (!compare_item(cs, e, a, cp))
                return false;
        }
        if (e || a) {
            set_reason(cs, "%s: the response has %s items than expected", p, e ? "fewer" : "more");
            return false;
        }
        return true;
    }
    /* Outputs that depend on key material compare only for objects whose
     * material this case registered; created ones, and ones another case made
     * (found by Locate), have material the reference server never saw. */
    const kf_ttlv *uid = kf_ttlv_find(act_payload, KMIP_TAG_UNIQUE_IDENTIFIER);
    cs->in_generated_context =
        op_generates(op) || uid_set_has(&cs->generated, uid) ||
        (uid && op != KMIP_OP_REGISTER && !uid_set_has(&cs->registered, uid));
    cs->random_outputs = has_random_outputs(cs, op, req_item, act_payload);
    /* KMIP: a Get Attributes naming no attribute returns all of them, so a server that
     * keeps more attributes than the reference server (SKFF-M-9 expects Sensitive,
     * Extractable... which TL-M-3's reference answer omits) answers with more. */
    {
        const kf_ttlv *rp = kf_ttlv_find(req_item, KMIP_TAG_REQUEST_PAYLOAD);
        cs->all_attributes = op == KMIP_OP_GET_ATTRIBUTES &&
                             !kf_ttlv_find(rp, KMIP_TAG_ATTRIBUTE_NAME) &&
                             !kf_ttlv_find(rp, KMIP_TAG_ATTRIBUTE_REFERENCE);
    }
    bool ok = compare_item(cs, exp, act, p);
    cs->in_generated_context = false;
    cs->random_outputs = false;
    if (op_generates(op) && op != KMIP_OP_RNG_RETRIEVE)
        uid_set_add_payload(&cs->generated, act_payload);
    note_asymmetric(cs, op, req_item, act_payload);
    if (op == KMIP_OP_REGISTER)
        uid_set_add_payload(&cs->registered, act_payload);
    return ok;
}

static bool compare_response(struct case_state *cs, const kf_ttlv *req, const kf_ttlv *exp,
                             const kf_ttlv *act, const char *path)
{
    const kf_ttlv *req_item = kf_ttlv_find(req, KMIP_TAG_BATCH_ITEM);
    char hex[16];
    if (act->tag != KMIP_TAG_RESPONSE_MESSAGE || act->type != KF_TTLV_STRUCTURE) {
        set_reason(cs, "%s: the server answered with %s, not a ResponseMessage", path,
                   tag_label(act->tag, hex));
        return false;
    }
    const kf_ttlv *e = exp->child, *a = act->child;
    size_t index = 0;
    for (; e && a; e = e->next, a = a->next) {
        char p[PATH_MAX_LEN];
        if (e->tag == KMIP_TAG_BATCH_ITEM && a->tag == KMIP_TAG_BATCH_ITEM) {
            snprintf(p, sizeof(p), "%s/BatchItem[%zu]", path, index++);
            if (!compare_batch_item(cs, req_item, e, a, p))
                return false;
            if (req_item)
                req_item = kf_ttlv_find_next(req_item, KMIP_TAG_BATCH_ITEM);
            continue;
        }
        child_path(p, path, e, NULL);
        if (!compare_item(cs, e, a, p))
            return false;
    }
    if (e || a) {
        char p[PATH_MAX_LEN];
        child_path(p, path, e ? e : a, NULL);
        set_reason(cs, "%s: %s", p, e ? "missing from the response" : "not expected in the response");
        return false;
    }
    return true;
}

/* ---- transport ---------------------------------------------------------------- */

static int transport_open(struct transport *t)
{
    if (t->tls_host)
        return kf_tls_client_connect(t->tls_host, t->tls_port, t->ca, t->cert, t->key, &t->tls);
    return kf_client_connect(t->socket_path, &t->fd);
}

static void transport_close(struct transport *t)
{
    if (t->tls)
        kf_tls_client_close(t->tls);
    t->tls = NULL;
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
}

static int transport_call(struct transport *t, const kf_buf *req, kf_buf *resp)
{
    if (t->tls)
        return kf_tls_client_call(t->tls, req->data, req->len, resp);
    return kf_client_call(t->fd, req->data, req->len, resp);
}

/*
 * Can the runner run at all? Connect and exchange one Discover Versions: a
 * server that refuses the client (no certificate, wrong CA) often does so
 * only after the handshake, so a connection alone proves nothing.
 */
static int transport_probe(struct transport *t)
{
    kf_arena *a = NULL;
    kf_buf req = {0}, resp = {0};
    KF_GUARD(kf_arena_new(&a, 0));
    kf_ttlv *payload, *msg = kf_ttlv_request(a, 1, 4, KMIP_OP_DISCOVER_VERSIONS, &payload);
    int rc = msg ? KF_OK : KF_ERR_NOMEM;
    kf_ttlv *answer;
    if (rc == KF_OK)
        rc = kf_buf_alloc(&req, 0, KF_FRAME_MAX, 0);
    if (rc == KF_OK)
        rc = kf_ttlv_encode(msg, &req);
    if (rc == KF_OK)
        rc = kf_buf_alloc(&resp, 0, KF_FRAME_MAX, 0);
    if (rc == KF_OK)
        rc = transport_open(t);
    if (rc == KF_OK) {
        rc = transport_call(t, &req, &resp);
        transport_close(t);
    }
    if (rc == KF_OK)
        rc = kf_ttlv_decode(resp.data, resp.len, NULL, a, &answer);
    if (rc == KF_OK && answer->tag != KMIP_TAG_RESPONSE_MESSAGE)
        rc = KF_ERR_CONNECT;
    kf_buf_free(&req);
    kf_buf_free(&resp);
    kf_arena_free(a);
    return rc;
}

/* "HOST:PORT" or "[V6]:PORT" into host (NUL-terminated) and port. */
static int split_host_port(const char *s, char *host, size_t cap, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    KF_ENSURE(colon && colon != s && (size_t)(colon - s) < cap, KF_ERR_USAGE);
    const char *h = s;
    size_t n = (size_t)(colon - s);
    if (h[0] == '[' && n >= 2 && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    memcpy(host, h, n);
    host[n] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    KF_ENSURE(*end == '\0' && p > 0 && p <= 65535, KF_ERR_USAGE);
    *port = (uint16_t)p;
    return KF_OK;
}

/* ---- one test-case file ---------------------------------------------------- */

static int read_file(const char *path, kf_buf *b)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return KF_ERR_IO;
    int rc = kf_buf_alloc(b, 0, MAX_FILE, 0);
    while (rc == KF_OK) {
        uint8_t chunk[8192];
        size_t n = fread(chunk, 1, sizeof(chunk), f);
        if (n == 0)
            break;
        rc = kf_buf_put_bytes(b, chunk, n);
    }
    if (rc == KF_OK && ferror(f))
        rc = KF_ERR_IO;
    fclose(f);
    return rc;
}

static void verbose_dump(const char *what, const kf_ttlv *msg)
{
    kf_buf out = {0};
    if (kf_buf_alloc(&out, 0, MAX_FILE, 0) == KF_OK && kf_ttlv_dump(msg, &out) == KF_OK)
        fprintf(stderr, "---- %s\n%.*s", what, (int)out.len, (const char *)out.data);
    kf_buf_free(&out);
}

/* One exchange: substitute, send, decode, compare. false with cs->reason set on failure. */
static bool run_exchange(struct case_state *cs, struct transport *t, kf_arena *a, kf_ttlv *req,
                         const kf_ttlv *expected, size_t number)
{
    char where[32];
    snprintf(where, sizeof(where), "response %zu", number);
    if (substitute(cs, a, req) < 0)
        return false; /* not sent: it would name an object this run does not have */
    kf_buf wire = {0}, resp = {0};
    bool ok = false;
    int rc = kf_buf_alloc(&wire, 0, KF_FRAME_MAX, 0);
    if (rc == KF_OK)
        rc = kf_ttlv_encode(req, &wire);
    if (rc == KF_OK)
        rc = kf_buf_alloc(&resp, 0, KF_FRAME_MAX, 0);
    if (rc < 0) {
        set_reason(cs, "request %zu cannot be encoded: %s", number, kf_strerror(rc));
        goto out;
    }
    rc = transport_call(t, &wire, &resp);
    if (rc < 0) {
        set_reason(cs, "request %zu: no response (%s)", number, kf_errname(rc));
        goto out;
    }
    kf_ttlv *actual;
    rc = kf_ttlv_decode(resp.data, resp.len, NULL, a, &actual);
    if (rc < 0) {
        set_reason(cs, "response %zu does not decode: %s", number, kf_errname(rc));
        goto out;
    }
    ok = compare_response(cs, req, expected, actual, where);
    if (!ok && cs->verbose) {
        verbose_dump("expected", expected);
        verbose_dump("actual", actual);
    }
out:
    kf_buf_free(&wire);
    kf_buf_free(&resp);
    return ok;
}

static void record_failure(struct case_state *cs)
{
    if (!cs->first[0])
        memcpy(cs->first, cs->reason, sizeof(cs->first));
    if (cs->verbose)
        fprintf(stderr, "  %s\n", cs->reason[0] ? cs->reason : "unknown");
    cs->reason[0] = '\0';
}

/* Returns true if the case passed; reason in cs->first otherwise. */
static bool run_case(struct case_state *cs, struct transport *t, const char *path)
{
    kf_buf xml = {0};
    kf_arena *a = NULL;
    bool passed = false;
    int rc = read_file(path, &xml);
    if (rc < 0) {
        set_reason(cs, "cannot read the file: %s", strerror(errno));
        record_failure(cs);
        goto out;
    }
    if ((rc = kf_arena_new(&a, 0)) < 0) {
        set_reason(cs, "%s", kf_strerror(rc));
        record_failure(cs);
        goto out;
    }
    struct kf_ttlv_limits lim = {.max_total = MAX_FILE, .max_items = 200000};
    struct kf_ttlv_xml_opts opts = {.lim = &lim, .now = (int64_t)time(NULL)};
    kf_ttlv *msg = NULL;
    size_t count = 0;
    rc = kf_ttlv_from_xml_messages((const char *)xml.data, xml.len, &opts, a, &msg, &count);
    if (rc < 0) {
        set_reason(cs, "the XML does not parse: %s (runner limitation)", kf_errname(rc));
        record_failure(cs);
        goto out;
    }
    if ((rc = transport_open(t)) < 0) {
        set_reason(cs, "cannot connect: %s", kf_strerror(rc));
        record_failure(cs);
        goto out;
    }
    find_implicit_placeholders(cs, msg);
    size_t number = 0;
    passed = true;
    /* After a failure the rest of the file still runs (requests that name an
     * object never bound are skipped), so its Revoke/Destroy steps clean up
     * and one case's leftovers do not change another's Locate results. The
     * file's result is its first difference; --verbose prints all of them. */
    while (msg) {
        kf_ttlv *req = msg, *expected = msg->next;
        if (req->tag != KMIP_TAG_REQUEST_MESSAGE || !expected ||
            expected->tag != KMIP_TAG_RESPONSE_MESSAGE) {
            set_reason(cs, "message %zu is not a RequestMessage followed by a ResponseMessage",
                       2 * number + 1);
            record_failure(cs);
            passed = false;
            break;
        }
        msg = expected->next;
        req->next = NULL; /* encode the request alone */
        if (!run_exchange(cs, t, a, req, expected, ++number)) {
            record_failure(cs);
            passed = false;
        }
    }
    if (passed && number == 0) {
        set_reason(cs, "no messages in the file");
        record_failure(cs);
        passed = false;
    }
    transport_close(t);
out:
    kf_arena_free(a);
    kf_buf_free(&xml);
    return passed;
}

/* ---- main ------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: kf-conformance [--socket PATH | --tls HOST:PORT --ca F --cert F --key F]\n"
          "                      [--verbose] [--only NAME] DIR\n"
          "Runs every DIR/*.xml KMIP test case (sorted) against keyfleetd and prints one\n"
          "line per file (PASS name / FAIL name: reason) and \"N passed, N failed\".\n"
          "--socket defaults to ./keyfleetd.sock. --only runs the one file NAME (with or\n"
          "without .xml). Exit 0 whatever the results, 1 if the runner cannot run.\n",
          f);
}

static int xml_filter(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 4 && strcmp(d->d_name + n - 4, ".xml") == 0;
}

static bool name_matches(const char *file, const char *only)
{
    if (!only)
        return true;
    size_t n = strlen(only);
    return strcmp(file, only) == 0 ||
           (strncmp(file, only, n) == 0 && strcmp(file + n, ".xml") == 0);
}

struct options {
    const char *socket_path, *tls, *ca, *cert, *key, *only, *dir;
    bool verbose;
};

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'}, {"tls", required_argument, NULL, 't'},
        {"ca", required_argument, NULL, 'a'},     {"cert", required_argument, NULL, 'c'},
        {"key", required_argument, NULL, 'k'},    {"only", required_argument, NULL, 'o'},
        {"verbose", no_argument, NULL, 'v'},      {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "s:t:a:c:k:o:vh", longopts, NULL)) != -1) {
        switch (c) {
        case 's': o->socket_path = optarg; break;
        case 't': o->tls = optarg; break;
        case 'a': o->ca = optarg; break;
        case 'c': o->cert = optarg; break;
        case 'k': o->key = optarg; break;
        case 'o': o->only = optarg; break;
        case 'v': o->verbose = true; break;
        case 'h': usage(stdout); exit(0);
        default: return -1;
        }
    }
    if (optind != argc - 1)
        return -1;
    o->dir = argv[optind];
    if (o->tls && o->socket_path) {
        fprintf(stderr, "kf-conformance: --socket and --tls exclude each other\n");
        return -1;
    }
    if (!o->socket_path)
        o->socket_path = KF_SOCKET_NAME;
    if (!o->tls && (o->ca || o->cert || o->key)) {
        fprintf(stderr, "kf-conformance: --ca, --cert and --key go with --tls\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o = {0};
    if (parse_options(argc, argv, &o) < 0) {
        usage(stderr);
        return 1;
    }
    struct transport t = {.socket_path = o.socket_path, .fd = -1,
                          .ca = o.ca, .cert = o.cert, .key = o.key};
    char host[256];
    if (o.tls) {
        if (split_host_port(o.tls, host, sizeof(host), &t.tls_port) < 0 || !o.ca) {
            fprintf(stderr, "kf-conformance: --tls wants HOST:PORT and --ca (and usually "
                            "--cert/--key)\n");
            return 1;
        }
        t.tls_host = host;
    }
    int rc = transport_probe(&t);
    if (rc < 0) {
        fprintf(stderr, "kf-conformance: cannot connect to %s: %s\n", o.tls ? o.tls : o.socket_path,
                kf_strerror(rc));
        return 1;
    }

    struct dirent **names;
    int n = scandir(o.dir, &names, xml_filter, alphasort);
    if (n < 0) {
        fprintf(stderr, "kf-conformance: %s: %s\n", o.dir, strerror(errno));
        return 1;
    }
    unsigned passed = 0, failed = 0;
    struct case_state *cs = calloc(1, sizeof(*cs));
    if (!cs)
        return 1;
    for (int i = 0; i < n; i++) {
        const char *file = names[i]->d_name;
        if (!name_matches(file, o.only))
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", o.dir, file);
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)(strlen(file) - 4), file);
        case_state_free(cs);
        cs->verbose = o.verbose;
        if (o.verbose)
            fprintf(stderr, "==== %s\n", name);
        if (run_case(cs, &t, path)) {
            printf("PASS %s\n", name);
            passed++;
        } else {
            printf("FAIL %s: %s\n", name, cs->first[0] ? cs->first : "unknown");
            failed++;
        }
        fflush(stdout);
    }
    case_state_free(cs);
    free(cs);
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (passed + failed == 0) {
        fprintf(stderr, "kf-conformance: no test case in %s%s%s\n", o.dir,
                o.only ? " named " : "", o.only ? o.only : "");
        return 1;
    }
    printf("%u passed, %u failed\n", passed, failed);
    return 0;
}
