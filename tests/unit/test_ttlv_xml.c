/*
 * KMIP XML and the dictionary. Every OASIS KMIP 1.4 test-case file must go
 * XML -> tree -> binary -> tree -> XML -> binary with identical binaries;
 * KMIP 1.4 section 9.1.2 examples are the known answers for values.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "keyfleet/arena.h"
#include "keyfleet/error.h"
#include "keyfleet/ttlv.h"

#define KF_TEST_OUT_MAX (1 << 24)
#include "ttlv_fixture.h"

static int from_xml(struct fixture *f, const char *xml, kf_ttlv **root)
{
    return kf_ttlv_from_xml(xml, strlen(xml), f->a, root);
}

/* XML with one element must encode to exactly want. */
static void xml_encodes_to(struct fixture *f, const char *xml, const uint8_t *want, size_t len)
{
    kf_ttlv *root;
    assert_int_equal(from_xml(f, xml, &root), KF_OK);
    kf_buf_reset(&f->out);
    assert_int_equal(kf_ttlv_encode(root, &f->out), KF_OK);
    assert_int_equal(f->out.len, len);
    assert_memory_equal(f->out.data, want, len);
}

static void xml_values_match_spec_examples(void **state)
{
    struct fixture *f = *state;
    /* KMIP 1.4 section 9.1.2, tag 0x420020 (Application Specific Information... given in hex). */
    static const uint8_t integer8[] = {0x42, 0x00, 0x20, 0x02, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0, 0};
    xml_encodes_to(f, "<TTLV tag=\"0x420020\" type=\"Integer\" value=\"8\"/>", integer8, 16);
    static const uint8_t long1[] = {0x42, 0x00, 0x20, 0x03, 0, 0, 0, 8,
                                    0x01, 0xB6, 0x9B, 0x4B, 0xA5, 0x74, 0x92, 0x00};
    xml_encodes_to(f, "<TTLV tag=\"0x420020\" type=\"LongInteger\" value=\"123456789000000000\"/>",
                   long1, 16);
    static const uint8_t big[] = {0x42, 0x00, 0x20, 0x04, 0, 0, 0, 0x10, 0, 0, 0, 0, 0x03, 0xFD,
                                  0x35, 0xEB, 0x6B, 0xC2, 0xDF, 0x46, 0x18, 0x08, 0x00, 0x00};
    xml_encodes_to(f, "<TTLV tag=\"0x420020\" type=\"BigInteger\" value=\"0x03FD35EB6BC2DF4618080000\"/>",
                   big, sizeof(big));
    static const uint8_t en[] = {0x42, 0x00, 0x20, 0x05, 0, 0, 0, 4, 0, 0, 0, 0xFF, 0, 0, 0, 0};
    xml_encodes_to(f, "<TTLV tag=\"0x420020\" type=\"Enumeration\" value=\"0x000000FF\"/>", en, 16);
    static const uint8_t bo[] = {0x42, 0x00, 0x20, 0x06, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1};
    xml_encodes_to(f, "<TTLV tag=\"0x420020\" type=\"Boolean\" value=\"true\"/>", bo, 16);
    static const uint8_t tx[] = {0x42, 0x00, 0x20, 0x07, 0, 0, 0, 0x0B, 'H', 'e', 'l', 'l',
                                 'o',  ' ',  'W',  'o',  'r', 'l', 'd', 0, 0, 0, 0, 0};
    xml_encodes_to(f, "<TTLV tag=\"0x420020\" type=\"TextString\" value=\"Hello World\"/>", tx, 24);
    static const uint8_t by[] = {0x42, 0x00, 0x20, 0x08, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0};
    xml_encodes_to(f, "<TTLV tag=\"0x420020\" type=\"ByteString\" value=\"010203\"/>", by, 16);
    /* Friday, March 14, 2008, 11:56:40 GMT, also written with another zone. */
    static const uint8_t dt[] = {0x42, 0x00, 0x20, 0x09, 0, 0, 0, 8, 0, 0, 0, 0, 0x47, 0xDA, 0x67, 0xF8};
    xml_encodes_to(f, "<TTLV tag=\"0x420020\" type=\"DateTime\" value=\"2008-03-14T11:56:40+00:00\"/>",
                   dt, 16);
    xml_encodes_to(f, "<TTLV tag=\"0x420020\" type=\"DateTime\" value=\"2008-03-14T21:56:40+10:00\"/>",
                   dt, 16);
    static const uint8_t iv[] = {0x42, 0x00, 0x20, 0x0A, 0, 0, 0, 4, 0x00, 0x0D, 0x2F, 0x00, 0, 0, 0, 0};
    xml_encodes_to(f, "<TTLV tag=\"0x420020\" type=\"Interval\" value=\"864000\"/>", iv, 16);
    static const uint8_t st[] = {0x42, 0x00, 0x20, 0x01, 0, 0, 0, 0x20, 0x42, 0x00, 0x04, 0x05, 0, 0, 0, 4,
                                 0, 0, 0, 0xFE, 0, 0, 0, 0, 0x42, 0x00, 0x05, 0x02, 0, 0, 0, 4,
                                 0, 0, 0, 0xFF, 0, 0, 0, 0};
    xml_encodes_to(f,
                   "<TTLV tag=\"0x420020\">\n"
                   "  <TTLV tag=\"0x420004\" type=\"Enumeration\" value=\"0x000000FE\"/>\n"
                   "  <ArchiveDate type=\"Integer\" value=\"255\"/>\n" /* 0x420005 by name */
                   "</TTLV>",
                   st, sizeof(st));
}

static void names_enumerations_and_masks_resolve(void **state)
{
    struct fixture *f = *state;
    kf_ttlv *root;
    const char *xml =
        "<Attribute>"
        "<AttributeName type=\"TextString\" value=\"Cryptographic Usage Mask\"/>"
        "<AttributeValue type=\"Integer\" value=\"Encrypt Decrypt\"/>"
        "</Attribute>";
    assert_int_equal(from_xml(f, xml, &root), KF_OK);
    int32_t mask;
    assert_int_equal(kf_ttlv_get_int(kf_ttlv_find(root, KMIP_TAG_ATTRIBUTE_VALUE), &mask), KF_OK);
    assert_int_equal(mask, KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT);
    assert_int_equal(mask, 0x0C); /* KMIP 1.4 9.1.3.3.1: Encrypt 0x04, Decrypt 0x08 */

    const char *attr_enum =
        "<Attribute><AttributeName type=\"TextString\" value=\"Cryptographic Algorithm\"/>"
        "<AttributeValue type=\"Enumeration\" value=\"AES\"/></Attribute>";
    assert_int_equal(from_xml(f, attr_enum, &root), KF_OK);
    uint32_t v;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(root, KMIP_TAG_ATTRIBUTE_VALUE), &v), KF_OK);
    assert_int_equal(v, 3); /* KMIP 1.4 9.1.3.2.13: AES = 0x03 */

    /* Spec numbers behind a few generated names. */
    uint32_t tag;
    assert_int_equal(kf_ttlv_tag_by_name("RequestMessage", &tag), KF_OK);
    assert_int_equal(tag, 0x420078);
    assert_int_equal(KMIP_TAG_REQUEST_MESSAGE, 0x420078);
    assert_string_equal(kf_ttlv_tag_name(0x42005C), "Operation");
    assert_string_equal(kf_ttlv_enum_name(KMIP_TAG_OPERATION, 0x1D), "ReKeyKeyPair");
    assert_string_equal(kf_ttlv_enum_name(KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, 2), "DES3");
    assert_string_equal(kf_ttlv_enum_name(KMIP_TAG_HASHING_ALGORITHM, 4), "SHA_1");
    assert_string_equal(kf_ttlv_enum_name(KMIP_TAG_STATE, 1), "PreActive");
    assert_string_equal(kf_ttlv_enum_name(KMIP_TAG_RESULT_REASON, 1), "ItemNotFound");
    assert_string_equal(kf_ttlv_mask_name(KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, 0x10), "WrapKey");
    assert_int_equal(kf_ttlv_enum_by_name(KMIP_TAG_OBJECT_TYPE, "SymmetricKey", &v), KF_OK);
    assert_int_equal(v, KMIP_OBJ_SYMMETRIC_KEY);
    assert_int_equal(v, 2);
    assert_int_equal(kf_ttlv_enum_by_name(KMIP_TAG_OBJECT_TYPE, "Template", &v), KF_OK); /* 1.4 name */
    assert_int_equal(v, 6);
    assert_int_equal(kf_ttlv_enum_by_name(KMIP_TAG_OBJECT_TYPE, "Frobnicator", &v), KF_ERR_TTLV_ENUM);
    assert_int_equal(kf_ttlv_enum_by_name(KMIP_TAG_BATCH_COUNT, "One", &v), KF_ERR_TTLV_TAG);
    assert_int_equal(kf_ttlv_tag_by_name("NoSuchTag", &tag), KF_ERR_TTLV_TAG);
    assert_null(kf_ttlv_tag_name(0x42FFFF));
    assert_int_equal(kf_ttlv_tag_type(KMIP_TAG_BATCH_COUNT), KF_TTLV_INTEGER);
}

static void extensions_come_from_kmip_ext(void **state)
{
    (void)state;
    uint32_t v;
#define KF_EXT_TAG(name, value, type)                                                              \
    assert_int_equal(kf_ttlv_tag_by_name(#name, &v), KF_OK);                                       \
    assert_int_equal(v, (value));                                                                  \
    assert_string_equal(kf_ttlv_tag_name(value), #name);                                           \
    assert_string_equal(kf_ttlv_type_name(kf_ttlv_tag_type(value)), #type);
#define KF_EXT_OP(name, value)                                                                     \
    assert_int_equal(kf_ttlv_enum_by_name(KMIP_TAG_OPERATION, #name, &v), KF_OK);                  \
    assert_int_equal(v, (value));                                                                  \
    assert_string_equal(kf_ttlv_enum_name(KMIP_TAG_OPERATION, value), #name);
#include "keyfleet/kmip_ext.h"
#undef KF_EXT_TAG
#undef KF_EXT_OP
    /* The generated #defines agree with kmip_ext.h (regenerate if this fails). */
    assert_int_equal(KMIP_TAG_KEYFLEET_DOMAIN, 0x540001);
    assert_int_equal(KMIP_OP_KEYFLEET_INIT, 0x80000001u);
}

static void special_values_round_trip(void **state)
{
    struct fixture *f = *state;
    kf_arena *a = f->a;
    kf_ttlv *s = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    assert_non_null(kf_ttlv_add_text_n(a, s, KMIP_TAG_NAME_VALUE, "a<b>&\"c\x01\n\0d\xc3\xa9", 13));
    assert_non_null(kf_ttlv_add_datetime(a, s, KMIP_TAG_ACTIVATION_DATE, INT64_MIN));
    assert_non_null(kf_ttlv_add_datetime(a, s, KMIP_TAG_ARCHIVE_DATE, -1));
    assert_non_null(kf_ttlv_add_dtx(a, s, 0x54000F, -1));
    /* Extremes of the microsecond form (fuzz_ttlv found an overflow at INT64_MIN). */
    assert_non_null(kf_ttlv_add_dtx(a, s, KMIP_TAG_KEYFLEET_AUDIT_TIME, INT64_MIN));
    assert_non_null(kf_ttlv_add_dtx(a, s, KMIP_TAG_KEYFLEET_AUDIT_TIME, INT64_MAX));
    assert_non_null(kf_ttlv_add_dtx(a, s, KMIP_TAG_KEYFLEET_AUDIT_TIME, -1000001));
    assert_non_null(kf_ttlv_add_dtx(a, s, KMIP_TAG_KEYFLEET_AUDIT_TIME, 1205495800123456LL));
    assert_non_null(kf_ttlv_add_int(a, s, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, (int32_t)0x80000004));
    assert_non_null(kf_ttlv_add_int(a, s, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, 0));
    assert_non_null(kf_ttlv_add_enum(a, s, KMIP_TAG_OPERATION, 0x7777));
    assert_non_null(kf_ttlv_add_long(a, s, 0x54FFFF, INT64_MIN));
    assert_non_null(kf_ttlv_add_bytes(a, s, KMIP_TAG_KEY_MATERIAL, NULL, 0));
    assert_non_null(kf_ttlv_struct(a, s, KMIP_TAG_REQUEST_HEADER));
    kf_buf bin1 = {0};
    assert_int_equal(kf_buf_alloc(&bin1, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(s, &bin1), KF_OK);
    kf_buf_reset(&f->out);
    assert_int_equal(kf_ttlv_to_xml(s, &f->out), KF_OK);
    kf_ttlv *back;
    assert_int_equal(kf_ttlv_from_xml((const char *)f->out.data, f->out.len, a, &back), KF_OK);
    kf_buf_reset(&f->out);
    assert_int_equal(kf_ttlv_encode(back, &f->out), KF_OK);
    assert_int_equal(f->out.len, bin1.len);
    assert_memory_equal(f->out.data, bin1.data, bin1.len);
    kf_buf_free(&bin1);
}

static void placeholders_of_test_cases_are_read(void **state)
{
    struct fixture *f = *state;
    kf_ttlv *n;
    const char *xml = "<ActivationDate type=\"DateTime\" value=\"$NOW-3600\"/>";
    struct kf_ttlv_xml_opts opts = {.now = 1205495800};
    assert_int_equal(kf_ttlv_from_xml_ex(xml, strlen(xml), &opts, f->a, &n), KF_OK);
    int64_t t;
    assert_int_equal(kf_ttlv_get_datetime(n, &t), KF_OK);
    assert_true(t == 1205495800 - 3600);
    const char *bytes = "<IVCounterNonce type=\"ByteString\" value=\"$IV_COUNTER_NONCE\"/>";
    assert_int_equal(from_xml(f, bytes, &n), KF_OK);
    assert_int_equal(n->v.bytes.len, strlen("$IV_COUNTER_NONCE"));
}

static void dump_names_values_and_hides_secrets(void **state)
{
    struct fixture *f = *state;
    kf_arena *a = f->a;
    kf_ttlv *item = kf_ttlv_struct(a, NULL, KMIP_TAG_BATCH_ITEM);
    assert_non_null(kf_ttlv_add_enum(a, item, KMIP_TAG_OPERATION, KMIP_OP_CREATE));
    const uint8_t key[] = {0xDE, 0xAD, 0xBE, 0xEF};
    assert_non_null(kf_ttlv_add_bytes(a, item, KMIP_TAG_KEY_MATERIAL, key, sizeof(key)));
    assert_non_null(kf_ttlv_add_text(a, item, KMIP_TAG_KEYFLEET_PIN, "1234"));
    kf_buf_reset(&f->out);
    assert_int_equal(kf_ttlv_dump(item, &f->out), KF_OK);
    assert_int_equal(kf_buf_put_u8(&f->out, 0), KF_OK);
    const char *text = (const char *)f->out.data;
    assert_non_null(strstr(text, "Operation (0x42005C) Enumeration: Create"));
    assert_non_null(strstr(text, "KeyMaterial (0x420043) ByteString: [redacted]"));
    assert_null(strstr(text, "deadbeef"));
    assert_null(strstr(text, "1234"));
    kf_buf_reset(&f->out);
    assert_int_equal(kf_ttlv_to_xml(item, &f->out), KF_OK);
    assert_int_equal(kf_buf_put_u8(&f->out, 0), KF_OK);
    assert_non_null(strstr((const char *)f->out.data,
                           "<Operation type=\"Enumeration\" value=\"Create\"/>"));
    assert_non_null(strstr((const char *)f->out.data, "value=\"deadbeef\"")); /* XML is exact */
}

static void test_case_files_yield_each_message(void **state)
{
    struct fixture *f = *state;
    const char *file = "<?xml version=\"1.0\"?>\n<KMIP>\n<!-- header -->\n<RequestMessage/>\n"
                       "<ResponseMessage><BatchCount type=\"Integer\" value=\"1\"/></ResponseMessage>\n"
                       "</KMIP>\n";
    kf_ttlv *msg;
    size_t count;
    assert_int_equal(kf_ttlv_from_xml_messages(file, strlen(file), NULL, f->a, &msg, &count), KF_OK);
    assert_int_equal(count, 2);
    assert_int_equal(msg->tag, KMIP_TAG_REQUEST_MESSAGE);
    assert_int_equal(msg->next->tag, KMIP_TAG_RESPONSE_MESSAGE);
    assert_null(msg->next->next);
    const char *bare = "<RequestMessage/>";
    assert_int_equal(kf_ttlv_from_xml_messages(bare, strlen(bare), NULL, f->a, &msg, &count), KF_OK);
    assert_int_equal(count, 1);
    const char *junk = "<KMIP><RequestMessage/></KMIP>trailing";
    assert_int_equal(kf_ttlv_from_xml_messages(junk, strlen(junk), NULL, f->a, &msg, &count),
                     KF_ERR_TTLV_XML);
}

static void xml_expect(struct fixture *f, const char *xml, int want)
{
    kf_ttlv *root = (kf_ttlv *)1;
    assert_int_equal(from_xml(f, xml, &root), want);
    assert_null(root);
}

static void malformed_xml_is_refused(void **state)
{
    struct fixture *f = *state;
    static const char *const bad[] = {
        "",
        "<",
        "<RequestMessage>",
        "<RequestMessage></ResponseMessage>",
        "<RequestMessage>text</RequestMessage>",
        "<RequestMessage><BatchCount type=\"Integer\" value=\"1\"/>",
        "<BatchCount type=\"Integer\" value=\"1/>",
        "<BatchCount type=\"Integer\"value=\"1\"/>",
        "<BatchCount type=\"Integer\" value=\"1\" value=\"2\"/>",
        "<BatchCount type=\"Integer\" value=\"one\"/>",
        "<BatchCount type=\"Integer\" value=\"99999999999\"/>",
        "<BatchCount type=\"Integer\" value=\"\"/>",
        "<BatchCount type=\"Integer\"/>",
        "<BatchCount type=\"Integer\" value=\"1\"/><BatchCount type=\"Integer\" value=\"1\"/>",
        "<!DOCTYPE x [<!ENTITY a \"b\">]><BatchCount type=\"Integer\" value=\"1\"/>",
        "<NameValue type=\"TextString\" value=\"&bogus;\"/>",
        "<NameValue type=\"TextString\" value=\"&#xD800;\"/>",
        "<NameValue type=\"TextString\" value=\"&#x110000;\"/>",
        "<NameValue type=\"TextString\" value=\"a<b\"/>",
        "<KeyMaterial type=\"ByteString\" value=\"0g\"/>",
        "<KeyMaterial type=\"ByteString\" value=\"012\"/>",
        "<ActivationDate type=\"DateTime\" value=\"2008-02-30T00:00:00Z\"/>",
        "<ActivationDate type=\"DateTime\" value=\"2008-03-14T11:56:40.5Z\"/>",
        "<ActivationDate type=\"DateTime\" value=\"yesterday\"/>",
        "<RequestMessage type=\"Structure\" value=\"1\"/>",
        "<CryptographicUsageMask type=\"Integer\" value=\"Encrypt 0xZZ\"/>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kf_ttlv *root = NULL;
        int rc = from_xml(f, bad[i], &root);
        if (rc >= 0)
            fail_msg("accepted: %s", bad[i]);
        assert_null(root);
    }
    xml_expect(f, "<NoSuchTag type=\"Integer\" value=\"1\"/>", KF_ERR_TTLV_TAG);
    xml_expect(f, "<TTLV tag=\"NoSuchTag\" type=\"Integer\" value=\"1\"/>", KF_ERR_TTLV_TAG);
    xml_expect(f, "<Operation type=\"Enumeration\" value=\"Frobnicate\"/>", KF_ERR_TTLV_ENUM);
    xml_expect(f, "<CryptographicUsageMask type=\"Integer\" value=\"Encrypt Frob\"/>",
               KF_ERR_TTLV_ENUM);
    xml_expect(f, "<BatchCount type=\"Int\" value=\"1\"/>", KF_ERR_TTLV_TYPE);
    xml_expect(f, "<Sensitive type=\"Boolean\" value=\"yes\"/>", KF_ERR_TTLV_VALUE);
    xml_expect(f, "<KeyMaterial type=\"ByteString\" value=\"0g\"/>", KF_ERR_TTLV_XML);
}

static void xml_limits_are_enforced(void **state)
{
    struct fixture *f = *state;
    char xml[2048] = "";
    for (int i = 0; i < 33; i++)
        strcat(xml, "<RequestMessage>");
    for (int i = 0; i < 33; i++)
        strcat(xml, "</RequestMessage>");
    xml_expect(f, xml, KF_ERR_TTLV_DEPTH);
    kf_ttlv *root;
    const char *three = "<RequestMessage><BatchCount type=\"Integer\" value=\"1\"/>"
                        "<BatchCount type=\"Integer\" value=\"2\"/></RequestMessage>";
    struct kf_ttlv_limits lim = {.max_items = 2};
    struct kf_ttlv_xml_opts opts = {.lim = &lim};
    assert_int_equal(kf_ttlv_from_xml_ex(three, strlen(three), &opts, f->a, &root), KF_ERR_TTLV_COUNT);
    lim = (struct kf_ttlv_limits){.max_total = 16};
    assert_int_equal(kf_ttlv_from_xml_ex(three, strlen(three), &opts, f->a, &root), KF_ERR_TTLV_TOTAL);
    /* Truncated anywhere: refused, never a crash. */
    for (size_t cut = 0; cut < strlen(three); cut++)
        assert_true(kf_ttlv_from_xml(three, cut, f->a, &root) < 0);
}

static int read_all(const char *path, kf_buf *b)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return KF_ERR_IO;
    int rc = kf_buf_alloc(b, 0, 1 << 24, 0);
    uint8_t chunk[4096];
    size_t n;
    while (rc == KF_OK && (n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        rc = kf_buf_put_bytes(b, chunk, n);
    fclose(fp);
    return rc;
}

/* XML -> tree -> bin1 -> tree -> bin (== bin1) -> XML -> tree -> bin (== bin1). */
static void round_trip_message(const kf_ttlv *msg, const char *file, size_t index)
{
    kf_arena *a;
    kf_buf bin1 = {0}, bin2 = {0}, xml = {0};
    assert_int_equal(kf_arena_new(&a, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&bin1, 0, 1 << 22, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&bin2, 0, 1 << 22, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&xml, 0, 1 << 24, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(msg, &bin1), KF_OK);

    kf_ttlv *decoded;
    int rc = kf_ttlv_decode(bin1.data, bin1.len, NULL, a, &decoded);
    if (rc < 0)
        fail_msg("%s message %zu: decode: %s", file, index, kf_strerror(rc));
    assert_int_equal(kf_ttlv_encode(decoded, &bin2), KF_OK);
    if (bin2.len != bin1.len || memcmp(bin1.data, bin2.data, bin1.len) != 0)
        fail_msg("%s message %zu: binary round trip differs", file, index);

    assert_int_equal(kf_ttlv_to_xml(decoded, &xml), KF_OK);
    kf_ttlv *again;
    rc = kf_ttlv_from_xml((const char *)xml.data, xml.len, a, &again);
    if (rc < 0)
        fail_msg("%s message %zu: re-read XML: %s", file, index, kf_strerror(rc));
    kf_buf_reset(&bin2);
    assert_int_equal(kf_ttlv_encode(again, &bin2), KF_OK);
    if (bin2.len != bin1.len || memcmp(bin1.data, bin2.data, bin1.len) != 0)
        fail_msg("%s message %zu: XML round trip differs", file, index);
    kf_buf_free(&bin1);
    kf_buf_free(&bin2);
    kf_buf_free(&xml);
    kf_arena_free(a);
}

static size_t round_trip_dir(const char *dir, size_t *messages)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".xml") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        kf_buf in = {0};
        assert_int_equal(read_all(path, &in), KF_OK);
        kf_arena *a;
        assert_int_equal(kf_arena_new(&a, 0), KF_OK);
        kf_ttlv *msg;
        size_t count;
        struct kf_ttlv_xml_opts opts = {.now = 1205495800};
        int rc = kf_ttlv_from_xml_messages((const char *)in.data, in.len, &opts, a, &msg, &count);
        if (rc < 0)
            fail_msg("%s: %s", path, kf_strerror(rc));
        assert_true(count > 0);
        for (size_t i = 0; msg; msg = msg->next, i++)
            round_trip_message(msg, e->d_name, i);
        *messages += count;
        files++;
        kf_arena_free(a);
        kf_buf_free(&in);
    }
    closedir(d);
    return files;
}

static void oasis_test_cases_round_trip(void **state)
{
    (void)state;
    const char *shared = getenv("KF_SHARED_DIR");
    if (!shared || !*shared) {
        print_message("SKIPPED: KF_SHARED_DIR is not set; OASIS KMIP test cases not checked\n");
        return;
    }
    char dir[4096];
    size_t files = 0, messages = 0;
    snprintf(dir, sizeof(dir), "%s/kmip/testcases/v1.4/mandatory", shared);
    files += round_trip_dir(dir, &messages);
    snprintf(dir, sizeof(dir), "%s/kmip/testcases/v1.4/optional", shared);
    files += round_trip_dir(dir, &messages);
    if (files == 0) {
        print_message("SKIPPED: no KMIP test cases under %s/kmip/testcases/v1.4\n", shared);
        return;
    }
    print_message("OASIS KMIP 1.4 test cases: %zu files, %zu messages round-tripped\n", files,
                  messages);
    assert_true(files > 0 && messages > files);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(xml_values_match_spec_examples, setup, teardown),
        cmocka_unit_test_setup_teardown(names_enumerations_and_masks_resolve, setup, teardown),
        cmocka_unit_test(extensions_come_from_kmip_ext),
        cmocka_unit_test_setup_teardown(special_values_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(placeholders_of_test_cases_are_read, setup, teardown),
        cmocka_unit_test_setup_teardown(dump_names_values_and_hides_secrets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_case_files_yield_each_message, setup, teardown),
        cmocka_unit_test_setup_teardown(malformed_xml_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(xml_limits_are_enforced, setup, teardown),
        cmocka_unit_test(oasis_test_cases_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
