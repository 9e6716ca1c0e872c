/*
 * KMIP TTLV: the one codec for everything that crosses a process or network
 * boundary (KMIP 1.0-2.1 binary encoding), plus the KMIP XML form used by
 * the OASIS test cases and for debugging.
 *
 * Wire form of one item: tag (3 bytes) | type (1) | length (4) | value,
 * value padded with zero bytes to a multiple of 8. Decoding builds a tree in
 * an arena (include/keyfleet/arena.h) so a message is freed and wiped at
 * once; values are copied into the arena, so the tree does not borrow the
 * input. Decode then encode reproduces the input byte for byte.
 *
 * Every decode refusal has its own code (error_codes.h, range -200..-299):
 *   KF_ERR_SHORT          input ends inside an item
 *   KF_ERR_TTLV_TYPE      unknown item type (also: typed getter on the wrong type)
 *   KF_ERR_TTLV_LENGTH    length not allowed for the type, or a child overruns its structure
 *   KF_ERR_TTLV_PADDING   nonzero padding
 *   KF_ERR_TTLV_VALUE     Boolean other than 0 or 1
 *   KF_ERR_TTLV_UTF8      Text String that is not valid UTF-8
 *   KF_ERR_TTLV_DEPTH     nesting deeper than limits.max_depth
 *   KF_ERR_TTLV_COUNT     more items than limits.max_items
 *   KF_ERR_TTLV_TOTAL     message longer than limits.max_total
 *   KF_ERR_TTLV_ITEM_LEN  one item declares more than limits.max_item_len
 *   KF_ERR_TTLV_TRAILING  bytes after the root item
 *   KF_ERR_NOMEM          the arena's cap was reached
 */
#ifndef KEYFLEET_TTLV_H
#define KEYFLEET_TTLV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfleet/arena.h"
#include "keyfleet/buf.h"
#include "keyfleet/error.h"
#include "keyfleet/kmip_tags.h"

/* Item types (KMIP 1.4 section 9.1.1.2, 2.1 section 9.1.1.2). */
enum kf_ttlv_type {
    KF_TTLV_STRUCTURE = 0x01,
    KF_TTLV_INTEGER = 0x02,
    KF_TTLV_LONG = 0x03,
    KF_TTLV_BIGINT = 0x04,
    KF_TTLV_ENUM = 0x05,
    KF_TTLV_BOOL = 0x06,
    KF_TTLV_TEXT = 0x07,
    KF_TTLV_BYTES = 0x08,
    KF_TTLV_DATETIME = 0x09,
    KF_TTLV_INTERVAL = 0x0A,
    KF_TTLV_DTX = 0x0B, /* Date-Time Extended (KMIP 2.x), microseconds */
};

/* The 8-byte item header, and the size the framing layer must read first. */
#define KF_TTLV_HEADER_LEN 8

/* Decode limits. A zero field means "use the default". */
#define KF_TTLV_DEFAULT_MAX_DEPTH 32u
#define KF_TTLV_DEFAULT_MAX_ITEMS 10000u
#define KF_TTLV_DEFAULT_MAX_TOTAL ((size_t)1024 * 1024)
#define KF_TTLV_DEFAULT_MAX_ITEM_LEN ((size_t)1024 * 1024)
struct kf_ttlv_limits {
    unsigned max_depth;  /* root is depth 1; a child of the root depth 2 */
    size_t max_items;    /* items in the whole message, structures included */
    size_t max_total;    /* bytes of the whole message (XML: bytes of the document) */
    size_t max_item_len; /* declared length of any single item */
};

/*
 * One item. Scalars live in v; Text String, Byte String and Big Integer
 * point at arena memory (Text is also NUL-terminated there, but may contain
 * NUL: use len). Big Integer bytes are the two's-complement big-endian wire
 * bytes, length a multiple of 8. Children of a structure: child, then next.
 */
typedef struct kf_ttlv {
    uint32_t tag;
    uint8_t type; /* enum kf_ttlv_type */
    union {
        int32_t i32;  /* Integer */
        uint32_t u32; /* Enumeration, Interval */
        int64_t i64;  /* Long Integer, Date-Time (seconds), Date-Time Extended (microseconds) */
        bool b;       /* Boolean */
        struct {
            const uint8_t *p;
            size_t len;
        } bytes; /* Text String, Byte String, Big Integer */
    } v;
    struct kf_ttlv *child;      /* first child (structures) */
    struct kf_ttlv *last_child; /* for O(1) append */
    struct kf_ttlv *next;       /* next sibling */
    size_t nchildren;
} kf_ttlv;

/* ---- binary ---------------------------------------------------------- */

/* Decode exactly one item filling msg[0..len). lim NULL = defaults. */
KF_RESULT int kf_ttlv_decode(const uint8_t *msg, size_t len, const struct kf_ttlv_limits *lim,
                             kf_arena *a, kf_ttlv **root);
/* Append the encoding of root and its subtree (not root's siblings) to out. */
KF_RESULT int kf_ttlv_encode(const kf_ttlv *root, kf_buf *out);
/*
 * Framing: from the first KF_TTLV_HEADER_LEN bytes of a message, the total
 * number of bytes of the message (header + value + padding). Refuses an
 * unknown type (KF_ERR_TTLV_TYPE) and a total above lim->max_total
 * (KF_ERR_TTLV_TOTAL), so a socket reader can reject before reading on.
 */
KF_RESULT int kf_ttlv_message_length(const uint8_t hdr[KF_TTLV_HEADER_LEN],
                                     const struct kf_ttlv_limits *lim, size_t *total);

/* ---- building ---------------------------------------------------------- */
/*
 * Each builder allocates a node in a, appends it to parent's children when
 * parent is not NULL, and returns it; NULL when the arena is exhausted (or
 * parent is not a structure). Strings and bytes are copied into the arena.
 */
kf_ttlv *kf_ttlv_struct(kf_arena *a, kf_ttlv *parent, uint32_t tag);
kf_ttlv *kf_ttlv_add_int(kf_arena *a, kf_ttlv *parent, uint32_t tag, int32_t v);
kf_ttlv *kf_ttlv_add_enum(kf_arena *a, kf_ttlv *parent, uint32_t tag, uint32_t v);
kf_ttlv *kf_ttlv_add_long(kf_arena *a, kf_ttlv *parent, uint32_t tag, int64_t v);
kf_ttlv *kf_ttlv_add_bool(kf_arena *a, kf_ttlv *parent, uint32_t tag, bool v);
kf_ttlv *kf_ttlv_add_text(kf_arena *a, kf_ttlv *parent, uint32_t tag, const char *s);
kf_ttlv *kf_ttlv_add_text_n(kf_arena *a, kf_ttlv *parent, uint32_t tag, const char *s, size_t n);
kf_ttlv *kf_ttlv_add_bytes(kf_arena *a, kf_ttlv *parent, uint32_t tag, const uint8_t *p, size_t n);
/* p: big-endian two's complement of any length; sign-extended to a multiple of 8 (n=0 gives 0). */
kf_ttlv *kf_ttlv_add_bigint(kf_arena *a, kf_ttlv *parent, uint32_t tag, const uint8_t *p, size_t n);
kf_ttlv *kf_ttlv_add_datetime(kf_arena *a, kf_ttlv *parent, uint32_t tag, int64_t seconds);
kf_ttlv *kf_ttlv_add_interval(kf_arena *a, kf_ttlv *parent, uint32_t tag, uint32_t seconds);
kf_ttlv *kf_ttlv_add_dtx(kf_arena *a, kf_ttlv *parent, uint32_t tag, int64_t microseconds);
/* Append an existing detached node (next must be NULL) to a structure. */
KF_RESULT int kf_ttlv_append(kf_ttlv *parent, kf_ttlv *node);
/* A KMIP Request Message of one batch item: a header with protocol version
 * major.minor and batch count 1, the operation op, and its empty Request
 * Payload in *payload to fill. NULL (and *payload NULL) when a is exhausted. */
kf_ttlv *kf_ttlv_request(kf_arena *a, int32_t major, int32_t minor, uint32_t op, kf_ttlv **payload);

/* ---- lookup ------------------------------------------------------------ */

/* First child of parent with tag; NULL if none (or parent is NULL). */
const kf_ttlv *kf_ttlv_find(const kf_ttlv *parent, uint32_t tag);
/* Next sibling after `after` with tag; NULL if none. Iterate:
 *   for (n = kf_ttlv_find(p, T); n; n = kf_ttlv_find_next(n, T)) */
const kf_ttlv *kf_ttlv_find_next(const kf_ttlv *after, uint32_t tag);
/* Follow a 0-terminated path of tags, first match at each level:
 *   kf_ttlv_find_path(msg, (const uint32_t[]){KMIP_TAG_BATCH_ITEM, KMIP_TAG_OPERATION, 0}) */
const kf_ttlv *kf_ttlv_find_path(const kf_ttlv *root, const uint32_t *path);
#define KF_TTLV_PATH(root, ...) kf_ttlv_find_path((root), (const uint32_t[]){__VA_ARGS__, 0})
/* Number of children of parent with tag. */
size_t kf_ttlv_count(const kf_ttlv *parent, uint32_t tag);

/*
 * Typed getters: KF_OK, KF_ERR_TTLV_MISSING when n is NULL (so they chain
 * with kf_ttlv_find), KF_ERR_TTLV_TYPE when n has another type.
 */
KF_RESULT int kf_ttlv_get_int(const kf_ttlv *n, int32_t *v);
KF_RESULT int kf_ttlv_get_enum(const kf_ttlv *n, uint32_t *v);
KF_RESULT int kf_ttlv_get_long(const kf_ttlv *n, int64_t *v);
KF_RESULT int kf_ttlv_get_bool(const kf_ttlv *n, bool *v);
KF_RESULT int kf_ttlv_get_text(const kf_ttlv *n, const char **s, size_t *len);
KF_RESULT int kf_ttlv_get_bytes(const kf_ttlv *n, const uint8_t **p, size_t *len);
KF_RESULT int kf_ttlv_get_bigint(const kf_ttlv *n, const uint8_t **p, size_t *len);
KF_RESULT int kf_ttlv_get_datetime(const kf_ttlv *n, int64_t *seconds);
KF_RESULT int kf_ttlv_get_interval(const kf_ttlv *n, uint32_t *seconds);
KF_RESULT int kf_ttlv_get_dtx(const kf_ttlv *n, int64_t *microseconds);
/* Text compared with a C string (exact bytes); false when n is not Text. */
bool kf_ttlv_text_equals(const kf_ttlv *n, const char *s);

/* ---- dictionary (generated from the KMIP 1.4 and 2.1 specs + kmip_ext.h) */

/* XML name of a tag ("RequestMessage"), or NULL if unknown. */
const char *kf_ttlv_tag_name(uint32_t tag);
/* KF_OK or KF_ERR_TTLV_TAG. Accepts names and "0x42xxxx" hex. */
KF_RESULT int kf_ttlv_tag_by_name(const char *name, uint32_t *tag);
/* Type the spec gives a tag, or 0 if unknown or varying (Attribute Value). */
uint8_t kf_ttlv_tag_type(uint32_t tag);
/* XML name of an Enumeration value of the enumeration carried by tag ("Create"), or NULL. */
const char *kf_ttlv_enum_name(uint32_t tag, uint32_t value);
/* KF_OK, KF_ERR_TTLV_ENUM (unknown name) or KF_ERR_TTLV_TAG (tag has no enumeration). */
KF_RESULT int kf_ttlv_enum_by_name(uint32_t tag, const char *name, uint32_t *value);
/* Name of one bit of a mask-valued Integer tag (Cryptographic Usage Mask...), or NULL. */
const char *kf_ttlv_mask_name(uint32_t tag, uint32_t bit);
/* KF_OK, KF_ERR_TTLV_ENUM (unknown bit name) or KF_ERR_TTLV_TAG (tag is not a mask). */
KF_RESULT int kf_ttlv_mask_by_name(uint32_t tag, const char *name, uint32_t *bit);
/* "Structure", "Integer", ... "DateTimeExtended" (XML spelling), or NULL. */
const char *kf_ttlv_type_name(uint8_t type);
KF_RESULT int kf_ttlv_type_by_name(const char *name, uint8_t *type);

/* ---- KMIP XML ------------------------------------------------------------ */
/*
 * XML form per the KMIP Profiles "XML encoding": <TagName type="T" value="V"/>,
 * structures as nested elements without type. Tags by name or "0x42xxxx";
 * Enumeration by name or hex; Integer masks as space-separated bit names or
 * hex; DateTime ISO-8601; ByteString and BigInteger hex; Interval decimal.
 * Test-case placeholders are accepted: DateTime "$NOW", "$NOW-3600" (relative
 * to opts->now), Byte String "$NAME" (the ASCII bytes of the name); Text
 * String placeholders are ordinary text.
 */
struct kf_ttlv_xml_opts {
    const struct kf_ttlv_limits *lim; /* NULL = defaults */
    int64_t now;                      /* value of $NOW in seconds */
};
/* A document whose root element is one TTLV item. */
KF_RESULT int kf_ttlv_from_xml(const char *xml, size_t len, kf_arena *a, kf_ttlv **root);
KF_RESULT int kf_ttlv_from_xml_ex(const char *xml, size_t len, const struct kf_ttlv_xml_opts *opts,
                                  kf_arena *a, kf_ttlv **root);
/*
 * A test-case file: <KMIP> wrapping several messages, or one bare message.
 * *first is the first message; the others follow through ->next. *count may be NULL.
 */
KF_RESULT int kf_ttlv_from_xml_messages(const char *xml, size_t len,
                                        const struct kf_ttlv_xml_opts *opts, kf_arena *a,
                                        kf_ttlv **first, size_t *count);
/* Append the XML form of root's subtree (indented, one element per line). */
KF_RESULT int kf_ttlv_to_xml(const kf_ttlv *root, kf_buf *out);

/* Human-readable tree for debugging: "Tag (0x42xxxx) Type: value" per line.
 * Secret items (Key Material, private key parts, Password, Data, keyfleet
 * shares and PINs) print as [redacted], so a dump may go to a log. */
KF_RESULT int kf_ttlv_dump(const kf_ttlv *root, kf_buf *out);

#endif
