/*
 * KMIP XML output (KMIP Profiles, XML encoding) and a human-readable dump.
 * The output always parses back (xml_read.c) to the same TTLV bytes: values
 * the readable forms cannot carry exactly (dates outside years 0-9999) are
 * written in hex, and control characters as character references.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ttlv/internal.h"

static int put_str(kf_buf *out, const char *s)
{
    return kf_buf_put_bytes(out, s, strlen(s));
}

static int put_fmt(kf_buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int put_fmt(kf_buf *out, const char *fmt, ...)
{
    char tmp[96];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    KF_ENSURE(n >= 0 && (size_t)n < sizeof(tmp), KF_ERR_INTERNAL);
    return kf_buf_put_bytes(out, tmp, (size_t)n);
}

static int put_indent(kf_buf *out, unsigned depth)
{
    for (unsigned i = 0; i < depth; i++)
        KF_GUARD(put_str(out, "  "));
    return KF_OK;
}

static int put_hex(kf_buf *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        KF_GUARD(kf_buf_put_u8(out, (uint8_t)digits[p[i] >> 4]));
        KF_GUARD(kf_buf_put_u8(out, (uint8_t)digits[p[i] & 15]));
    }
    return KF_OK;
}

/* Attribute-safe text: markup characters and all C0 controls become references. */
static int put_escaped(kf_buf *out, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '&')
            KF_GUARD(put_str(out, "&amp;"));
        else if (c == '<')
            KF_GUARD(put_str(out, "&lt;"));
        else if (c == '>')
            KF_GUARD(put_str(out, "&gt;"));
        else if (c == '"')
            KF_GUARD(put_str(out, "&quot;"));
        else if (c < 0x20 || c == 0x7F)
            KF_GUARD(put_fmt(out, "&#x%X;", c));
        else
            KF_GUARD(kf_buf_put_u8(out, c));
    }
    return KF_OK;
}

uint32_t kf_ttlv_value_context(const kf_ttlv *node, const kf_ttlv *prev)
{
    if (node->tag != KMIP_TAG_ATTRIBUTE_VALUE || !prev || prev->tag != KMIP_TAG_ATTRIBUTE_NAME ||
        prev->type != KF_TTLV_TEXT || prev->v.bytes.len >= 64)
        return node->tag;
    char name[64];
    size_t k = 0;
    for (size_t i = 0; i < prev->v.bytes.len; i++)
        if (prev->v.bytes.p[i] != ' ')
            name[k++] = (char)prev->v.bytes.p[i];
    name[k] = '\0';
    uint32_t tag;
    if (kf_ttlv_tag_by_name(name, &tag) < 0 || name[0] == '0')
        return node->tag;
    return tag;
}

static int put_mask(kf_buf *out, uint32_t ctx, uint32_t v)
{
    /* Names only when every set bit has one, so the value is exact. */
    uint32_t known = 0;
    for (unsigned b = 0; b < 32; b++)
        if ((v >> b & 1) && kf_ttlv_mask_name(ctx, 1u << b))
            known |= 1u << b;
    if (v == 0 || known != v)
        return put_fmt(out, "%" PRId32, (int32_t)v);
    bool first = true;
    for (unsigned b = 0; b < 32; b++) {
        if (!(v >> b & 1))
            continue;
        if (!first)
            KF_GUARD(kf_buf_put_u8(out, ' '));
        KF_GUARD(put_str(out, kf_ttlv_mask_name(ctx, 1u << b)));
        first = false;
    }
    return KF_OK;
}

static int put_time(kf_buf *out, int64_t v, bool micro)
{
    /* Floor division without overflow, even for INT64_MIN (found by fuzz_ttlv). */
    int64_t secs = micro ? v / 1000000 : v;
    int64_t frac = micro ? v % 1000000 : 0;
    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    struct kf_civil c;
    kf_civil_from_seconds(secs, &c);
    if (c.year < 0 || c.year > 9999)
        return put_fmt(out, "0x%016" PRIX64, (uint64_t)v);
    KF_GUARD(put_fmt(out, "%04" PRId64 "-%02u-%02uT%02u:%02u:%02u", c.year, c.month, c.day, c.hour,
                     c.min, c.sec));
    if (micro)
        KF_GUARD(put_fmt(out, ".%06" PRId64, frac));
    return put_str(out, "+00:00");
}

/* The value attribute's text (already escaped where needed). */
static int put_value(kf_buf *out, const kf_ttlv *n, uint32_t ctx)
{
    const char *name;
    switch (n->type) {
    case KF_TTLV_INTEGER:
        if (kf_dict_enum_is_mask(kf_dict_enum_of_tag(ctx)))
            return put_mask(out, ctx, n->v.u32);
        return put_fmt(out, "%" PRId32, n->v.i32);
    case KF_TTLV_ENUM:
        name = kf_ttlv_enum_name(ctx, n->v.u32);
        return name ? put_str(out, name) : put_fmt(out, "0x%08" PRIX32, n->v.u32);
    case KF_TTLV_INTERVAL:
        return put_fmt(out, "%" PRIu32, n->v.u32);
    case KF_TTLV_LONG:
        return put_fmt(out, "%" PRId64, n->v.i64);
    case KF_TTLV_DATETIME:
        return put_time(out, n->v.i64, false);
    case KF_TTLV_DTX:
        return put_time(out, n->v.i64, true);
    case KF_TTLV_BOOL:
        return put_str(out, n->v.b ? "true" : "false");
    case KF_TTLV_BIGINT:
        KF_GUARD(put_str(out, "0x"));
        return put_hex(out, n->v.bytes.p, n->v.bytes.len);
    case KF_TTLV_BYTES:
        return put_hex(out, n->v.bytes.p, n->v.bytes.len);
    case KF_TTLV_TEXT:
        return put_escaped(out, n->v.bytes.p, n->v.bytes.len);
    default:
        return KF_ERR_TTLV_TYPE;
    }
}

static int put_open(kf_buf *out, const kf_ttlv *n)
{
    const char *name = kf_ttlv_tag_name(n->tag);
    KF_GUARD(kf_buf_put_u8(out, '<'));
    if (name)
        return put_str(out, name);
    return put_fmt(out, "TTLV tag=\"0x%06" PRIX32 "\"", n->tag);
}

static int xml_item(const kf_ttlv *n, const kf_ttlv *prev, kf_buf *out, unsigned depth)
{
    KF_ENSURE(depth <= KF_TTLV_HARD_MAX_DEPTH, KF_ERR_TTLV_DEPTH);
    const char *type = kf_ttlv_type_name(n->type);
    KF_ENSURE(type != NULL, KF_ERR_TTLV_TYPE);
    KF_GUARD(put_indent(out, depth));
    KF_GUARD(put_open(out, n));
    if (n->type == KF_TTLV_STRUCTURE) {
        if (!n->child)
            return put_str(out, "/>\n");
        KF_GUARD(put_str(out, ">\n"));
        const kf_ttlv *before = NULL;
        for (const kf_ttlv *c = n->child; c; before = c, c = c->next)
            KF_GUARD(xml_item(c, before, out, depth + 1));
        KF_GUARD(put_indent(out, depth));
        const char *name = kf_ttlv_tag_name(n->tag);
        return put_fmt(out, "</%s>\n", name ? name : "TTLV");
    }
    KF_GUARD(put_fmt(out, " type=\"%s\" value=\"", type));
    KF_GUARD(put_value(out, n, kf_ttlv_value_context(n, prev)));
    return put_str(out, "\"/>\n");
}

int kf_ttlv_to_xml(const kf_ttlv *root, kf_buf *out)
{
    KF_ENSURE(root != NULL && out != NULL, KF_ERR_ARG);
    size_t mark = out->len;
    int rc = xml_item(root, NULL, out, 0);
    if (rc < 0)
        out->len = mark;
    return rc;
}

/* ---- dump ---- */

/* Items a dump must not show: key material, private key parts, passwords,
 * plaintext, operator shares and PINs. A dump may end up in a log. */
static bool is_secret_tag(uint32_t tag)
{
    static const uint32_t secret[] = {
        KMIP_TAG_KEY_MATERIAL,     KMIP_TAG_D,          KMIP_TAG_PRIVATE_EXPONENT,
        KMIP_TAG_P,                KMIP_TAG_Q,          KMIP_TAG_PRIME_EXPONENT_P,
        KMIP_TAG_PRIME_EXPONENT_Q, KMIP_TAG_CRT_COEFFICIENT, KMIP_TAG_X,
        KMIP_TAG_PASSWORD,         KMIP_TAG_DATA,       KMIP_TAG_KEYFLEET_SHARE,
        KMIP_TAG_KEYFLEET_PIN,     KMIP_TAG_KEYFLEET_MASTER_KEY, KMIP_TAG_KEYFLEET_KEY_BYTES,
    };
    for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
        if (secret[i] == tag)
            return true;
    return false;
}

static int dump_item(const kf_ttlv *n, const kf_ttlv *prev, kf_buf *out, unsigned depth)
{
    KF_ENSURE(depth <= KF_TTLV_HARD_MAX_DEPTH, KF_ERR_TTLV_DEPTH);
    const char *name = kf_ttlv_tag_name(n->tag);
    const char *type = kf_ttlv_type_name(n->type);
    KF_ENSURE(type != NULL, KF_ERR_TTLV_TYPE);
    KF_GUARD(put_indent(out, depth));
    KF_GUARD(put_fmt(out, "%s (0x%06" PRIX32 ") %s", name ? name : "?", n->tag, type));
    if (is_secret_tag(n->tag))
        return put_str(out, ": [redacted]\n");
    if (n->type == KF_TTLV_STRUCTURE) {
        KF_GUARD(put_fmt(out, " [%zu]\n", n->nchildren));
        const kf_ttlv *before = NULL;
        for (const kf_ttlv *c = n->child; c; before = c, c = c->next)
            KF_GUARD(dump_item(c, before, out, depth + 1));
        return KF_OK;
    }
    KF_GUARD(put_str(out, ": "));
    KF_GUARD(put_value(out, n, kf_ttlv_value_context(n, prev)));
    if (n->type == KF_TTLV_ENUM || n->type == KF_TTLV_INTEGER)
        KF_GUARD(put_fmt(out, " (0x%08" PRIX32 ")", n->v.u32));
    if (n->type == KF_TTLV_TEXT || n->type == KF_TTLV_BYTES || n->type == KF_TTLV_BIGINT)
        KF_GUARD(put_fmt(out, " (%zu bytes)", n->v.bytes.len));
    return kf_buf_put_u8(out, '\n');
}

int kf_ttlv_dump(const kf_ttlv *root, kf_buf *out)
{
    KF_ENSURE(root != NULL && out != NULL, KF_ERR_ARG);
    size_t mark = out->len;
    int rc = dump_item(root, NULL, out, 0);
    if (rc < 0)
        out->len = mark;
    return rc;
}
