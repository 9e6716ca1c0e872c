/*
 * KMIP XML input: a small, strict XML reader for the subset KMIP uses
 * (elements with attributes, comments, an XML declaration; no DTD, no
 * CDATA, no text content), building the same tree as the binary decoder
 * under the same limits. Bytes are read through kf_buf only.
 */
#include <stdlib.h>
#include <string.h>

#include "ttlv/internal.h"

#define XML_NAME_MAX 128

struct xml_reader {
    kf_buf in;
    struct kf_ttlv_limits lim;
    size_t items;
    int64_t now;
    kf_arena *a;
};

/* One attribute value after entity decoding (arena memory, NUL-terminated). */
struct xml_attrs {
    const char *type, *value, *tag;
    size_t value_len;
};

static int peek(const kf_buf *b)
{
    return kf_buf_remaining(b) ? kf_buf_read_ptr(b)[0] : -1;
}

static bool at(const kf_buf *b, const char *s)
{
    size_t n = strlen(s);
    return kf_buf_remaining(b) >= n && memcmp(kf_buf_read_ptr(b), s, n) == 0;
}

static bool is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void skip_space(kf_buf *b)
{
    while (is_space(peek(b)) && kf_buf_skip(b, 1) == KF_OK)
        ;
}

/* Skip past the next occurrence of end. */
static int skip_past(kf_buf *b, const char *end)
{
    const uint8_t *hit = memmem(kf_buf_read_ptr(b), kf_buf_remaining(b), end, strlen(end));
    KF_ENSURE(hit != NULL, KF_ERR_TTLV_XML);
    return kf_buf_skip(b, (size_t)(hit - kf_buf_read_ptr(b)) + strlen(end));
}

/* Whitespace, comments and processing instructions between elements. */
static int skip_misc(kf_buf *b)
{
    for (;;) {
        skip_space(b);
        if (at(b, "<!--"))
            KF_GUARD(skip_past(b, "-->"));
        else if (at(b, "<?"))
            KF_GUARD(skip_past(b, "?>"));
        else if (at(b, "<!"))
            return KF_ERR_TTLV_XML; /* DOCTYPE/CDATA: never needed, a classic attack surface */
        else
            return KF_OK;
    }
}

static bool is_name_char(int c, bool first)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == ':')
        return true;
    return !first && ((c >= '0' && c <= '9') || c == '-' || c == '.');
}

static int read_name(kf_buf *b, char name[XML_NAME_MAX + 1])
{
    size_t n = 0;
    KF_ENSURE(is_name_char(peek(b), true), KF_ERR_TTLV_XML);
    while (is_name_char(peek(b), false)) {
        KF_ENSURE(n < XML_NAME_MAX, KF_ERR_TTLV_XML);
        uint8_t c;
        KF_GUARD(kf_buf_get_u8(b, &c));
        name[n++] = (char)c;
    }
    name[n] = '\0';
    return KF_OK;
}

static int put_utf8(kf_buf *out, uint32_t cp)
{
    KF_ENSURE(cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF), KF_ERR_TTLV_XML);
    if (cp < 0x80)
        return kf_buf_put_u8(out, (uint8_t)cp);
    if (cp < 0x800) {
        KF_GUARD(kf_buf_put_u8(out, (uint8_t)(0xC0 | cp >> 6)));
    } else if (cp < 0x10000) {
        KF_GUARD(kf_buf_put_u8(out, (uint8_t)(0xE0 | cp >> 12)));
        KF_GUARD(kf_buf_put_u8(out, (uint8_t)(0x80 | (cp >> 6 & 0x3F))));
    } else {
        KF_GUARD(kf_buf_put_u8(out, (uint8_t)(0xF0 | cp >> 18)));
        KF_GUARD(kf_buf_put_u8(out, (uint8_t)(0x80 | (cp >> 12 & 0x3F))));
        KF_GUARD(kf_buf_put_u8(out, (uint8_t)(0x80 | (cp >> 6 & 0x3F))));
    }
    return kf_buf_put_u8(out, (uint8_t)(0x80 | (cp & 0x3F)));
}

static int char_ref(kf_buf *ref, uint32_t *cp)
{
    uint8_t c;
    unsigned base = 10;
    size_t digits = 0;
    *cp = 0;
    if (at(ref, "x")) {
        base = 16;
        KF_GUARD(kf_buf_skip(ref, 1));
    }
    while (kf_buf_get_u8(ref, &c) == KF_OK) {
        unsigned d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (base == 16 && c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (base == 16 && c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return KF_ERR_TTLV_XML;
        KF_ENSURE(++digits <= 8, KF_ERR_TTLV_XML);
        *cp = *cp * base + d;
    }
    KF_ENSURE(digits > 0, KF_ERR_TTLV_XML);
    return KF_OK;
}

/* Decode one entity; ref holds the text between '&' and ';'. */
static int entity(kf_buf *ref, kf_buf *out)
{
    static const struct {
        const char *name;
        char c;
    } named[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
    for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++)
        if (kf_buf_remaining(ref) == strlen(named[i].name) && at(ref, named[i].name))
            return kf_buf_put_u8(out, (uint8_t)named[i].c);
    KF_ENSURE(at(ref, "#"), KF_ERR_TTLV_XML);
    KF_GUARD(kf_buf_skip(ref, 1));
    uint32_t cp;
    KF_GUARD(char_ref(ref, &cp));
    return put_utf8(out, cp);
}

/* Quoted attribute value -> NUL-terminated arena copy with entities decoded. */
static int read_attr_value(struct xml_reader *r, const char **value, size_t *len)
{
    uint8_t quote;
    KF_GUARD(kf_buf_get_u8(&r->in, &quote));
    KF_ENSURE(quote == '"' || quote == '\'', KF_ERR_TTLV_XML);
    const uint8_t *end = memchr(kf_buf_read_ptr(&r->in), quote, kf_buf_remaining(&r->in));
    KF_ENSURE(end != NULL, KF_ERR_TTLV_XML);
    kf_buf raw;
    KF_GUARD(kf_buf_sub(&r->in, (size_t)(end - kf_buf_read_ptr(&r->in)), &raw));
    KF_GUARD(kf_buf_skip(&r->in, 1));
    /* Hex doubles a value's size; anything longer cannot be within the limit. */
    KF_ENSURE(kf_buf_remaining(&raw) / 2 <= r->lim.max_item_len, KF_ERR_TTLV_ITEM_LEN);

    uint8_t *mem = kf_arena_alloc(r->a, kf_buf_remaining(&raw) + 1);
    KF_ENSURE(mem != NULL, KF_ERR_NOMEM);
    kf_buf out;
    kf_buf_fixed(&out, mem, kf_buf_remaining(&raw)); /* decoding never grows text */
    uint8_t c;
    while (kf_buf_get_u8(&raw, &c) == KF_OK) {
        KF_ENSURE(c != '<', KF_ERR_TTLV_XML);
        if (c != '&') {
            KF_GUARD(kf_buf_put_u8(&out, c));
            continue;
        }
        const uint8_t *semi = memchr(kf_buf_read_ptr(&raw), ';', kf_buf_remaining(&raw));
        KF_ENSURE(semi != NULL && semi - kf_buf_read_ptr(&raw) <= 12, KF_ERR_TTLV_XML);
        kf_buf ref;
        KF_GUARD(kf_buf_sub(&raw, (size_t)(semi - kf_buf_read_ptr(&raw)), &ref));
        KF_GUARD(kf_buf_skip(&raw, 1));
        KF_GUARD(entity(&ref, &out));
    }
    *value = (const char *)mem;
    *len = out.len;
    return KF_OK;
}

/* Attributes up to '>' or '/>'; *empty is true for '/>'. */
static int read_attrs(struct xml_reader *r, struct xml_attrs *at_out, bool *empty)
{
    memset(at_out, 0, sizeof(*at_out));
    for (;;) {
        bool spaced = is_space(peek(&r->in));
        skip_space(&r->in);
        if (at(&r->in, "/>")) {
            *empty = true;
            return kf_buf_skip(&r->in, 2);
        }
        if (at(&r->in, ">")) {
            *empty = false;
            return kf_buf_skip(&r->in, 1);
        }
        KF_ENSURE(spaced, KF_ERR_TTLV_XML);
        char name[XML_NAME_MAX + 1];
        KF_GUARD(read_name(&r->in, name));
        skip_space(&r->in);
        KF_ENSURE(at(&r->in, "="), KF_ERR_TTLV_XML);
        KF_GUARD(kf_buf_skip(&r->in, 1));
        skip_space(&r->in);
        const char *v;
        size_t len;
        KF_GUARD(read_attr_value(r, &v, &len));
        const char **slot = strcmp(name, "type") == 0    ? &at_out->type
                            : strcmp(name, "value") == 0 ? &at_out->value
                            : strcmp(name, "tag") == 0   ? &at_out->tag
                                                         : NULL;
        if (!slot)
            continue; /* other attributes (xmlns...) carry nothing for TTLV */
        KF_ENSURE(*slot == NULL, KF_ERR_TTLV_XML);
        *slot = v;
        if (slot == &at_out->value)
            at_out->value_len = len;
    }
}

/* ---- values ---- */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "0x" + 1..max_digits hex digits -> bit pattern. */
static bool parse_hex(const char *s, unsigned max_digits, uint64_t *v)
{
    if (s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
        return false;
    size_t n = 0;
    *v = 0;
    for (s += 2; *s; s++, n++) {
        int d = hex_digit(*s);
        if (d < 0 || n >= max_digits)
            return false;
        *v = *v << 4 | (uint64_t)d;
    }
    return n > 0;
}

/* Optional '-' and decimal digits, within [min, max]. */
static bool parse_dec(const char *s, int64_t min, int64_t max, int64_t *v)
{
    bool neg = *s == '-';
    if (neg)
        s++;
    if (!*s)
        return false;
    uint64_t acc = 0, limit = neg ? (uint64_t)0 - (uint64_t)min : (uint64_t)max;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (acc > (limit - d) / 10)
            return false;
        acc = acc * 10 + d;
    }
    if (neg && min == 0 && acc != 0)
        return false;
    *v = neg ? (int64_t)(0 - acc) : (int64_t)acc;
    return true;
}

static int parse_mask(uint32_t ctx, const char *s, uint32_t *v)
{
    char word[XML_NAME_MAX + 1];
    *v = 0;
    while (*s) {
        size_t n = strcspn(s, " |");
        KF_ENSURE(n > 0 && n <= XML_NAME_MAX, KF_ERR_TTLV_XML);
        memcpy(word, s, n);
        word[n] = '\0';
        uint64_t hex;
        uint32_t bit;
        if (parse_hex(word, 8, &hex))
            bit = (uint32_t)hex;
        else
            KF_GUARD(kf_ttlv_mask_by_name(ctx, word, &bit));
        *v |= bit;
        s += n;
        s += strspn(s, " |");
    }
    return KF_OK;
}

static int parse_integer(uint32_t ctx, const char *s, kf_ttlv *n)
{
    uint64_t h;
    int64_t d;
    if (parse_hex(s, 8, &h)) {
        n->v.u32 = (uint32_t)h;
        return KF_OK;
    }
    if (parse_dec(s, INT32_MIN, INT32_MAX, &d)) {
        n->v.i32 = (int32_t)d;
        return KF_OK;
    }
    KF_ENSURE(*s != '\0', KF_ERR_TTLV_XML);
    uint32_t mask;
    int rc = parse_mask(ctx, s, &mask);
    KF_ENSURE(rc != KF_ERR_TTLV_TAG, KF_ERR_TTLV_XML); /* words, but the tag is no mask */
    KF_GUARD(rc);
    n->v.u32 = mask;
    return KF_OK;
}

/* Fixed-width decimal field of an ISO-8601 time. */
static bool iso_field(const char **s, unsigned width, unsigned *v)
{
    *v = 0;
    for (unsigned i = 0; i < width; i++) {
        char c = (*s)[i];
        if (c < '0' || c > '9')
            return false;
        *v = *v * 10 + (unsigned)(c - '0');
    }
    *s += width;
    return true;
}

static bool iso_sep(const char **s, char c)
{
    if (**s != c)
        return false;
    (*s)++;
    return true;
}

/* YYYY-MM-DDTHH:MM:SS[.ffffff][Z|(+|-)HH:MM] -> seconds and microseconds. */
static int parse_iso(const char *s, bool allow_fraction, int64_t *secs, int64_t *micros)
{
    struct kf_civil c;
    unsigned y, frac = 0, oh = 0, om = 0;
    KF_ENSURE(iso_field(&s, 4, &y) && iso_sep(&s, '-') && iso_field(&s, 2, &c.month) &&
                  iso_sep(&s, '-') && iso_field(&s, 2, &c.day) && iso_sep(&s, 'T') &&
                  iso_field(&s, 2, &c.hour) && iso_sep(&s, ':') && iso_field(&s, 2, &c.min) &&
                  iso_sep(&s, ':') && iso_field(&s, 2, &c.sec),
              KF_ERR_TTLV_XML);
    c.year = y;
    if (*s == '.') {
        KF_ENSURE(allow_fraction, KF_ERR_TTLV_XML);
        s++;
        unsigned digits = 0;
        while (*s >= '0' && *s <= '9') {
            KF_ENSURE(++digits <= 6, KF_ERR_TTLV_XML);
            frac = frac * 10 + (unsigned)(*s++ - '0');
        }
        KF_ENSURE(digits > 0, KF_ERR_TTLV_XML);
        for (; digits < 6; digits++)
            frac *= 10;
    }
    int sign = 0;
    if (*s == 'Z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        sign = *s++ == '+' ? 1 : -1;
        KF_ENSURE(iso_field(&s, 2, &oh) && iso_sep(&s, ':') && iso_field(&s, 2, &om) && oh < 24 &&
                      om < 60,
                  KF_ERR_TTLV_XML);
    }
    KF_ENSURE(*s == '\0', KF_ERR_TTLV_XML);
    int64_t t;
    KF_ENSURE(kf_seconds_from_civil(&c, &t), KF_ERR_TTLV_XML);
    *secs = t - sign * (int64_t)(oh * 3600 + om * 60);
    *micros = frac;
    return KF_OK;
}

static int parse_time(struct xml_reader *r, const char *s, bool micro, int64_t *v)
{
    uint64_t h;
    if (parse_hex(s, 16, &h)) {
        *v = (int64_t)h;
        return KF_OK;
    }
    if (strncmp(s, "$NOW", 4) == 0) { /* test-case placeholder */
        int64_t delta = 0;
        KF_ENSURE(s[4] == '\0' || ((s[4] == '+' || s[4] == '-') &&
                                   parse_dec(s + 5, 0, 100L * 365 * 86400, &delta)),
                  KF_ERR_TTLV_XML);
        int64_t t = r->now + (s[4] == '-' ? -delta : delta);
        KF_ENSURE(!micro || (t < INT64_MAX / 1000000 && t > INT64_MIN / 1000000), KF_ERR_TTLV_XML);
        *v = micro ? t * 1000000 : t;
        return KF_OK;
    }
    int64_t secs, frac;
    KF_GUARD(parse_iso(s, micro, &secs, &frac));
    *v = micro ? secs * 1000000 + frac : secs;
    return KF_OK;
}

static bool is_placeholder(const char *s)
{
    return s[0] == '$' && s[1] && strspn(s + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == strlen(s + 1);
}

/* Hex digits (optionally odd count, left-padded) -> arena bytes. */
static int parse_hex_bytes(struct xml_reader *r, const char *s, size_t len, kf_ttlv *n)
{
    size_t nbytes = (len + 1) / 2;
    uint8_t *p = kf_arena_alloc(r->a, nbytes + 1);
    KF_ENSURE(p != NULL, KF_ERR_NOMEM);
    size_t i = 0, k = 0;
    if (len % 2) {
        int d = hex_digit(s[i++]);
        KF_ENSURE(d >= 0, KF_ERR_TTLV_XML);
        p[k++] = (uint8_t)d;
    }
    for (; i < len; i += 2) {
        int hi = hex_digit(s[i]), lo = hex_digit(s[i + 1]);
        KF_ENSURE(hi >= 0 && lo >= 0, KF_ERR_TTLV_XML);
        p[k++] = (uint8_t)(hi << 4 | lo);
    }
    n->v.bytes.p = p;
    n->v.bytes.len = nbytes;
    return KF_OK;
}

static int parse_bigint(struct xml_reader *r, const char *s, size_t len, kf_ttlv *n)
{
    if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2, len -= 2;
    KF_ENSURE(len > 0, KF_ERR_TTLV_XML);
    kf_ttlv tmp = {0};
    KF_GUARD(parse_hex_bytes(r, s, len, &tmp));
    /* Sign-extend to a multiple of 8 bytes like any builder-made Big Integer. */
    kf_ttlv *made = kf_ttlv_add_bigint(r->a, NULL, n->tag, tmp.v.bytes.p, tmp.v.bytes.len);
    KF_ENSURE(made != NULL, KF_ERR_NOMEM);
    n->v.bytes = made->v.bytes;
    return KF_OK;
}

static int parse_value(struct xml_reader *r, kf_ttlv *n, uint32_t ctx, const struct xml_attrs *at_)
{
    const char *s = at_->value;
    size_t len = at_->value_len;
    uint64_t h;
    int64_t d;
    KF_ENSURE(s != NULL || n->type == KF_TTLV_TEXT || n->type == KF_TTLV_BYTES, KF_ERR_TTLV_XML);
    if (!s)
        s = "", len = 0;
    KF_ENSURE(len <= r->lim.max_item_len || n->type == KF_TTLV_BYTES || n->type == KF_TTLV_BIGINT,
              KF_ERR_TTLV_ITEM_LEN);
    KF_ENSURE(len / 2 <= r->lim.max_item_len, KF_ERR_TTLV_ITEM_LEN);
    /* Only Text may hold NUL (as a character reference); elsewhere it would cut the value short. */
    KF_ENSURE(n->type == KF_TTLV_TEXT || strlen(s) == len, KF_ERR_TTLV_XML);
    switch (n->type) {
    case KF_TTLV_INTEGER:
        return parse_integer(ctx, s, n);
    case KF_TTLV_ENUM:
        if (parse_hex(s, 8, &h)) {
            n->v.u32 = (uint32_t)h;
            return KF_OK;
        }
        KF_ENSURE(kf_dict_enum_of_tag(ctx) >= 0, KF_ERR_TTLV_ENUM);
        return kf_ttlv_enum_by_name(ctx, s, &n->v.u32);
    case KF_TTLV_INTERVAL:
        if (parse_hex(s, 8, &h))
            d = (int64_t)h;
        else
            KF_ENSURE(parse_dec(s, 0, UINT32_MAX, &d), KF_ERR_TTLV_XML);
        n->v.u32 = (uint32_t)d;
        return KF_OK;
    case KF_TTLV_LONG:
        if (parse_hex(s, 16, &h))
            d = (int64_t)h;
        else
            KF_ENSURE(parse_dec(s, INT64_MIN, INT64_MAX, &d), KF_ERR_TTLV_XML);
        n->v.i64 = d;
        return KF_OK;
    case KF_TTLV_DATETIME:
    case KF_TTLV_DTX:
        return parse_time(r, s, n->type == KF_TTLV_DTX, &n->v.i64);
    case KF_TTLV_BOOL:
        KF_ENSURE(strcmp(s, "true") == 0 || strcmp(s, "false") == 0, KF_ERR_TTLV_VALUE);
        n->v.b = s[0] == 't';
        return KF_OK;
    case KF_TTLV_BIGINT:
        return parse_bigint(r, s, len, n);
    case KF_TTLV_BYTES:
        if (is_placeholder(s)) { /* test-case placeholder: keep its name as the bytes */
            n->v.bytes.p = (const uint8_t *)s;
            n->v.bytes.len = len;
            return KF_OK;
        }
        KF_ENSURE(len % 2 == 0, KF_ERR_TTLV_XML);
        return parse_hex_bytes(r, s, len, n);
    case KF_TTLV_TEXT:
        KF_ENSURE(kf_ttlv_utf8_valid((const uint8_t *)s, len), KF_ERR_TTLV_UTF8);
        n->v.bytes.p = (const uint8_t *)s;
        n->v.bytes.len = len;
        return KF_OK;
    default:
        return KF_ERR_TTLV_TYPE;
    }
}

/* ---- elements ---- */

static int expect_close(kf_buf *b, const char *name)
{
    char got[XML_NAME_MAX + 1];
    KF_GUARD(skip_misc(b));
    KF_ENSURE(at(b, "</"), KF_ERR_TTLV_XML);
    KF_GUARD(kf_buf_skip(b, 2));
    KF_GUARD(read_name(b, got));
    KF_ENSURE(strcmp(got, name) == 0, KF_ERR_TTLV_XML);
    skip_space(b);
    KF_ENSURE(at(b, ">"), KF_ERR_TTLV_XML);
    return kf_buf_skip(b, 1);
}

static int element_tag(const char *name, const struct xml_attrs *attrs, uint32_t *tag)
{
    if (strcmp(name, "TTLV") == 0) {
        KF_ENSURE(attrs->tag != NULL, KF_ERR_TTLV_XML);
        return kf_ttlv_tag_by_name(attrs->tag, tag);
    }
    return kf_ttlv_tag_by_name(name, tag);
}

static int parse_element(struct xml_reader *r, kf_ttlv *parent, unsigned depth, kf_ttlv **out);

static int parse_children(struct xml_reader *r, kf_ttlv *n, unsigned depth, const char *name)
{
    for (;;) {
        KF_GUARD(skip_misc(&r->in));
        if (at(&r->in, "</"))
            return expect_close(&r->in, name);
        KF_ENSURE(at(&r->in, "<"), KF_ERR_TTLV_XML); /* text content has no TTLV meaning */
        kf_ttlv *child;
        KF_GUARD(parse_element(r, n, depth + 1, &child));
    }
}

static int parse_element(struct xml_reader *r, kf_ttlv *parent, unsigned depth, kf_ttlv **out)
{
    char name[XML_NAME_MAX + 1];
    struct xml_attrs attrs;
    bool empty;
    KF_ENSURE(depth <= r->lim.max_depth, KF_ERR_TTLV_DEPTH);
    KF_ENSURE(++r->items <= r->lim.max_items, KF_ERR_TTLV_COUNT);
    KF_ENSURE(at(&r->in, "<"), KF_ERR_TTLV_XML);
    KF_GUARD(kf_buf_skip(&r->in, 1));
    KF_GUARD(read_name(&r->in, name));
    KF_GUARD(read_attrs(r, &attrs, &empty));

    uint32_t tag;
    uint8_t type = KF_TTLV_STRUCTURE;
    KF_GUARD(element_tag(name, &attrs, &tag));
    if (attrs.type)
        KF_GUARD(kf_ttlv_type_by_name(attrs.type, &type));
    kf_ttlv *n = kf_ttlv_node_new(r->a, tag, type);
    KF_ENSURE(n != NULL, KF_ERR_NOMEM);
    if (type == KF_TTLV_STRUCTURE) {
        KF_ENSURE(attrs.value == NULL, KF_ERR_TTLV_XML);
        if (!empty)
            KF_GUARD(parse_children(r, n, depth, name));
    } else {
        KF_GUARD(parse_value(r, n, kf_ttlv_value_context(n, parent ? parent->last_child : NULL),
                             &attrs));
        if (!empty)
            KF_GUARD(expect_close(&r->in, name));
    }
    if (parent)
        kf_ttlv_link(parent, n);
    *out = n;
    return KF_OK;
}

static int reader_init(struct xml_reader *r, const char *xml, size_t len,
                       const struct kf_ttlv_xml_opts *opts, kf_arena *a)
{
    KF_ENSURE(a != NULL && (xml != NULL || len == 0), KF_ERR_ARG);
    memset(r, 0, sizeof(*r));
    r->lim = kf_ttlv_limits_resolve(opts ? opts->lim : NULL);
    KF_ENSURE(len <= r->lim.max_total, KF_ERR_TTLV_TOTAL);
    kf_buf_reader(&r->in, (const uint8_t *)xml, len);
    r->now = opts ? opts->now : 0;
    r->a = a;
    return skip_misc(&r->in);
}

static int expect_end(kf_buf *b)
{
    KF_GUARD(skip_misc(b));
    KF_ENSURE(kf_buf_remaining(b) == 0, KF_ERR_TTLV_XML);
    return KF_OK;
}

int kf_ttlv_from_xml_ex(const char *xml, size_t len, const struct kf_ttlv_xml_opts *opts,
                        kf_arena *a, kf_ttlv **root)
{
    KF_ENSURE(root != NULL, KF_ERR_ARG);
    *root = NULL;
    struct xml_reader r;
    KF_GUARD(reader_init(&r, xml, len, opts, a));
    kf_ttlv *n;
    KF_GUARD(parse_element(&r, NULL, 1, &n));
    KF_GUARD(expect_end(&r.in));
    *root = n;
    return KF_OK;
}

int kf_ttlv_from_xml(const char *xml, size_t len, kf_arena *a, kf_ttlv **root)
{
    return kf_ttlv_from_xml_ex(xml, len, NULL, a, root);
}

static bool at_wrapper(const kf_buf *b)
{
    if (!at(b, "<KMIP"))
        return false;
    kf_buf look = *b;
    if (kf_buf_skip(&look, 5) < 0)
        return false;
    int c = peek(&look);
    return c == '>' || c == '/' || is_space(c);
}

int kf_ttlv_from_xml_messages(const char *xml, size_t len, const struct kf_ttlv_xml_opts *opts,
                              kf_arena *a, kf_ttlv **first, size_t *count)
{
    KF_ENSURE(first != NULL, KF_ERR_ARG);
    *first = NULL;
    struct xml_reader r;
    KF_GUARD(reader_init(&r, xml, len, opts, a));
    kf_ttlv list = {.type = KF_TTLV_STRUCTURE};
    if (at_wrapper(&r.in)) {
        struct xml_attrs attrs;
        bool empty;
        KF_GUARD(kf_buf_skip(&r.in, 5));
        KF_GUARD(read_attrs(&r, &attrs, &empty));
        for (;;) {
            if (empty)
                break;
            KF_GUARD(skip_misc(&r.in));
            if (at(&r.in, "</"))
                break;
            kf_ttlv *msg;
            /* Messages are parsed detached and chained, so each encodes on its own. */
            KF_GUARD(parse_element(&r, NULL, 1, &msg));
            kf_ttlv_link(&list, msg);
        }
        if (!empty)
            KF_GUARD(expect_close(&r.in, "KMIP"));
    } else {
        kf_ttlv *msg;
        KF_GUARD(parse_element(&r, NULL, 1, &msg));
        kf_ttlv_link(&list, msg);
    }
    KF_GUARD(expect_end(&r.in));
    *first = list.child;
    if (count)
        *count = list.nchildren;
    return KF_OK;
}
