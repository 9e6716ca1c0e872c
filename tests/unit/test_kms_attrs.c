/*
 * KMIP attribute operations, Locate and batch handling, in the KMIP 1.4 and
 * 2.1 forms, through kf_kms_handle_kmip. Expected results come from the KMIP
 * 1.4/2.1 specifications (attribute rule tables, Result Reasons) and the
 * OASIS 1.4 test cases (SKLC-M-3: Modify Activation Date of an Active key is
 * Permission Denied; MSGENC-*-M-1: Maximum Response Size 256 for a Query is
 * Response Too Large, 2048 succeeds; TL-M-3: Locate then Get with the ID
 * Placeholder).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/lifecycle.h"
#include "keyfleet/log.h"
#include "keyfleet/ttlv.h"
#include "../../src/kms/attributes.h"
#include "kms_fixture.h"

struct fixture {
    char dir[64];
    kf_kms *kms;
    kf_arena *a;
    struct kf_principal who;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || kms_dir_open(f->dir, sizeof(f->dir), "attrs", &f->kms) < 0 ||
        kf_arena_new(&f->a, 0) < 0)
        return -1;
    if (kf_kms_domain_create(f->kms, "test", "VENDOR", NULL) < 0 ||
        kf_kms_domain_create(f->kms, "test", "USPS", NULL) < 0)
        return -1;
    kf_principal_local_admin(&f->who, "test");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kf_arena_free(f->a);
    if (kms_dir_remove(f->kms, f->dir) < 0)
        return -1;
    free(f);
    return 0;
}

/* ---- message building ---- */

static kf_ttlv *message(struct fixture *f, int major, int minor, kf_ttlv **hdr)
{
    kf_ttlv *msg = kf_ttlv_struct(f->a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    kf_ttlv *h = kf_ttlv_struct(f->a, msg, KMIP_TAG_REQUEST_HEADER);
    kf_ttlv *pv = kf_ttlv_struct(f->a, h, KMIP_TAG_PROTOCOL_VERSION);
    kf_ttlv_add_int(f->a, pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR, major);
    kf_ttlv_add_int(f->a, pv, KMIP_TAG_PROTOCOL_VERSION_MINOR, minor);
    if (hdr)
        *hdr = h;
    return msg;
}

static kf_ttlv *add_item(struct fixture *f, kf_ttlv *msg, uint32_t op)
{
    kf_ttlv *bi = kf_ttlv_struct(f->a, msg, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(f->a, bi, KMIP_TAG_OPERATION, op);
    return kf_ttlv_struct(f->a, bi, KMIP_TAG_REQUEST_PAYLOAD);
}

static kf_ttlv *single(struct fixture *f, int major, uint32_t op, kf_ttlv **payload)
{
    kf_ttlv *msg = message(f, major, major == 1 ? 4 : 1, NULL);
    *payload = add_item(f, msg, op);
    return msg;
}

/* The Response Message for msg (as f->who unless who is given). */
static const kf_ttlv *send_as(struct fixture *f, const struct kf_principal *who, kf_ttlv *msg)
{
    kf_buf req, resp;
    kf_ttlv *r;
    assert_int_equal(kf_buf_alloc(&req, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&resp, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(msg, &req), KF_OK);
    assert_int_equal(kf_kms_handle_kmip(f->kms, who ? who : &f->who, req.data, req.len, &resp),
                     KF_OK);
    assert_int_equal(kf_ttlv_decode(resp.data, resp.len, NULL, f->a, &r), KF_OK);
    assert_int_equal(r->tag, KMIP_TAG_RESPONSE_MESSAGE);
    kf_buf_free(&req);
    kf_buf_free(&resp);
    return r;
}

static const kf_ttlv *send(struct fixture *f, kf_ttlv *msg)
{
    return send_as(f, NULL, msg);
}

static uint32_t status_of(const kf_ttlv *item)
{
    uint32_t s = 99;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_STATUS), &s), KF_OK);
    return s;
}

static uint32_t reason_of(const kf_ttlv *item)
{
    uint32_t r = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_REASON), &r), KF_OK);
    return r;
}

/* Send a one-item request; the response item. */
static const kf_ttlv *call(struct fixture *f, kf_ttlv *msg)
{
    return kf_ttlv_find(send(f, msg), KMIP_TAG_BATCH_ITEM);
}

static void expect_ok(const kf_ttlv *item)
{
    assert_int_equal(status_of(item), KMIP_RESULT_STATUS_SUCCESS);
}

static void expect_fail(const kf_ttlv *item, uint32_t reason)
{
    assert_int_equal(status_of(item), KMIP_RESULT_STATUS_OPERATION_FAILED);
    assert_int_equal(reason_of(item), reason);
}

static const kf_ttlv *payload_of(const kf_ttlv *item)
{
    return kf_ttlv_find(item, KMIP_TAG_RESPONSE_PAYLOAD);
}

/* 1.x Attribute{Name, Value}; returns the struct so the caller adds the value. */
static kf_ttlv *v1_attr(struct fixture *f, kf_ttlv *parent, const char *name)
{
    kf_ttlv *at = kf_ttlv_struct(f->a, parent, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_NAME, name);
    return at;
}

static void v1_text_attr(struct fixture *f, kf_ttlv *parent, const char *name, const char *v)
{
    kf_ttlv_add_text(f->a, v1_attr(f, parent, name), KMIP_TAG_ATTRIBUTE_VALUE, v);
}

static void v1_name(struct fixture *f, kf_ttlv *parent, const char *name)
{
    kf_ttlv *v = kf_ttlv_struct(f->a, v1_attr(f, parent, "Name"), KMIP_TAG_ATTRIBUTE_VALUE);
    kf_ttlv_add_text(f->a, v, KMIP_TAG_NAME_VALUE, name);
    kf_ttlv_add_enum(f->a, v, KMIP_TAG_NAME_TYPE, KMIP_NAME_TYPE_UNINTERPRETED_TEXT_STRING);
}

/* 2.x Vendor Attribute (a 1.x custom attribute "x-<name>"). */
static kf_ttlv *v2_vendor(struct fixture *f, kf_ttlv *parent, const char *name, const char *v)
{
    kf_ttlv *at = kf_ttlv_struct(f->a, parent, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(f->a, at, KMIP_TAG_VENDOR_IDENTIFICATION, "x");
    kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_NAME, name);
    kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE, v);
    return at;
}

/* Run msg, which must succeed; uid gets the Unique Identifier it answers. */
static void expect_uid(struct fixture *f, kf_ttlv *msg, char uid[KF_UID_MAX])
{
    const kf_ttlv *item = call(f, msg);
    expect_ok(item);
    const char *s;
    size_t len;
    assert_int_equal(
        kf_ttlv_get_text(kf_ttlv_find(payload_of(item), KMIP_TAG_UNIQUE_IDENTIFIER), &s, &len),
        KF_OK);
    snprintf(uid, KF_UID_MAX, "%s", s);
}

/* A 1.x Create of an AES key of bits; *ta its Template-Attribute, for more attributes. */
static kf_ttlv *v1_aes_create(struct fixture *f, int32_t bits, kf_ttlv **ta)
{
    kf_ttlv *p, *msg = single(f, 1, KMIP_OP_CREATE, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
    *ta = kf_ttlv_struct(f->a, p, KMIP_TAG_TEMPLATE_ATTRIBUTE);
    kf_ttlv_add_enum(f->a, v1_attr(f, *ta, "Cryptographic Algorithm"), KMIP_TAG_ATTRIBUTE_VALUE,
                     KMIP_ALG_AES);
    kf_ttlv_add_int(f->a, v1_attr(f, *ta, "Cryptographic Length"), KMIP_TAG_ATTRIBUTE_VALUE, bits);
    return msg;
}

/* KMIP 1.4 Create of an AES key with extra attributes in the Template-Attribute. */
static void create_v1(struct fixture *f, const char *domain, int bits, const char *name,
                      const char *group, const char *custom, char uid[KF_UID_MAX])
{
    kf_ttlv *ta, *msg = v1_aes_create(f, bits, &ta);
    kf_ttlv_add_int(f->a, v1_attr(f, ta, "Cryptographic Usage Mask"), KMIP_TAG_ATTRIBUTE_VALUE,
                    (int32_t)(KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT));
    if (domain)
        v1_text_attr(f, ta, "x-keyfleet-domain", domain);
    if (name)
        v1_name(f, ta, name);
    if (group)
        v1_text_attr(f, ta, "Object Group", group);
    if (custom)
        v1_text_attr(f, ta, "x-ID", custom);
    expect_uid(f, msg, uid);
}

/* Response 1.x Attribute items named name, in order. */
static size_t v1_count(const kf_ttlv *payload, const char *name)
{
    size_t n = 0;
    for (const kf_ttlv *a = kf_ttlv_find(payload, KMIP_TAG_ATTRIBUTE); a;
         a = kf_ttlv_find_next(a, KMIP_TAG_ATTRIBUTE))
        n += kf_ttlv_text_equals(kf_ttlv_find(a, KMIP_TAG_ATTRIBUTE_NAME), name);
    return n;
}

static const kf_ttlv *v1_value(const kf_ttlv *payload, const char *name, int index)
{
    for (const kf_ttlv *a = kf_ttlv_find(payload, KMIP_TAG_ATTRIBUTE); a;
         a = kf_ttlv_find_next(a, KMIP_TAG_ATTRIBUTE))
        if (kf_ttlv_text_equals(kf_ttlv_find(a, KMIP_TAG_ATTRIBUTE_NAME), name) && index-- == 0)
            return kf_ttlv_find(a, KMIP_TAG_ATTRIBUTE_VALUE);
    return NULL;
}

static const kf_ttlv *get_attributes_v1(struct fixture *f, const char *uid, const char *only)
{
    kf_ttlv *p, *msg = single(f, 1, KMIP_OP_GET_ATTRIBUTES, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    if (only)
        kf_ttlv_add_text(f->a, p, KMIP_TAG_ATTRIBUTE_NAME, only);
    const kf_ttlv *item = call(f, msg);
    expect_ok(item);
    return payload_of(item);
}

static const kf_ttlv *get_attributes_v2(struct fixture *f, const char *uid)
{
    kf_ttlv *p, *msg = single(f, 2, KMIP_OP_GET_ATTRIBUTES, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    const kf_ttlv *item = call(f, msg);
    expect_ok(item);
    return kf_ttlv_find(payload_of(item), KMIP_TAG_ATTRIBUTES);
}

/* ---- Get Attributes / Get Attribute List ---- */

static void v1_create_stores_attributes_and_get_attributes_returns_them(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    create_v1(f, "USPS", 256, "meter-key", "fleet-A", "AX-1", uid);
    assert_string_equal(uid, "USPS/1");

    /* All attributes: the object fields and the stored ones. */
    const kf_ttlv *p = get_attributes_v1(f, uid, NULL);
    assert_true(kf_ttlv_text_equals(v1_value(p, "Unique Identifier", 0), uid));
    assert_true(kf_ttlv_text_equals(v1_value(p, "Object Group", 0), "fleet-A"));
    assert_true(kf_ttlv_text_equals(v1_value(p, "x-ID", 0), "AX-1"));
    assert_true(kf_ttlv_text_equals(
        kf_ttlv_find(v1_value(p, "Name", 0), KMIP_TAG_NAME_VALUE), "meter-key"));
    assert_int_equal(v1_count(p, "Name"), 1);
    assert_non_null(v1_value(p, "Initial Date", 0));
    uint32_t st;
    assert_int_equal(kf_ttlv_get_enum(v1_value(p, "State", 0), &st), KF_OK);
    assert_int_equal(st, KF_STATE_PRE_ACTIVE);
    /* x-keyfleet-domain chose the domain and is not kept as an attribute. */
    assert_int_equal(v1_count(p, "x-keyfleet-domain"), 0);

    /* By name: only those, an unknown name gives nothing. */
    kf_ttlv *q, *msg = single(f, 1, KMIP_OP_GET_ATTRIBUTES, &q);
    kf_ttlv_add_text(f->a, q, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_text(f->a, q, KMIP_TAG_ATTRIBUTE_NAME, "Object Group");
    kf_ttlv_add_text(f->a, q, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Length");
    kf_ttlv_add_text(f->a, q, KMIP_TAG_ATTRIBUTE_NAME, "No Such Attribute");
    kf_ttlv_add_text(f->a, q, KMIP_TAG_ATTRIBUTE_NAME, "Contact Information");
    const kf_ttlv *item = call(f, msg);
    expect_ok(item);
    p = payload_of(item);
    assert_int_equal(kf_ttlv_count(p, KMIP_TAG_ATTRIBUTE), 2);
    int32_t len;
    assert_int_equal(kf_ttlv_get_int(v1_value(p, "Cryptographic Length", 0), &len), KF_OK);
    assert_int_equal(len, 256);

    /* The same object in the 2.x form: tags, custom attribute as Vendor Attribute. */
    const kf_ttlv *at = get_attributes_v2(f, uid);
    assert_true(kf_ttlv_text_equals(kf_ttlv_find(at, KMIP_TAG_OBJECT_GROUP), "fleet-A"));
    const kf_ttlv *va = kf_ttlv_find(at, KMIP_TAG_ATTRIBUTE);
    assert_true(kf_ttlv_text_equals(kf_ttlv_find(va, KMIP_TAG_VENDOR_IDENTIFICATION), "x"));
    assert_true(kf_ttlv_text_equals(kf_ttlv_find(va, KMIP_TAG_ATTRIBUTE_NAME), "ID"));
    assert_true(kf_ttlv_text_equals(kf_ttlv_find(va, KMIP_TAG_ATTRIBUTE_VALUE), "AX-1"));
}

static void v2_create_and_get_attributes_by_reference(void **state)
{
    struct fixture *f = *state;
    kf_ttlv *p, *msg = single(f, 2, KMIP_OP_CREATE, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
    kf_ttlv *at = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
    kf_ttlv_add_enum(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
    kf_ttlv_add_int(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 128);
    kf_ttlv_add_text(f->a, at, KMIP_TAG_CONTACT_INFORMATION, "ops@example.org");
    kf_ttlv_add_text(f->a, at, KMIP_TAG_OBJECT_GROUP, "g1");
    kf_ttlv_add_text(f->a, at, KMIP_TAG_OBJECT_GROUP, "g2");
    v2_vendor(f, at, "Barcode", "12345");
    kf_ttlv_add_text(f->a, at, KMIP_TAG_KEYFLEET_DOMAIN, "VENDOR");
    char uid[KF_UID_MAX];
    expect_uid(f, msg, uid);

    msg = single(f, 2, KMIP_OP_GET_ATTRIBUTES, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_ATTRIBUTE_REFERENCE, KMIP_TAG_OBJECT_GROUP);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_ATTRIBUTE_REFERENCE, KMIP_TAG_STATE);
    kf_ttlv *ref = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTE_REFERENCE);
    kf_ttlv_add_text(f->a, ref, KMIP_TAG_VENDOR_IDENTIFICATION, "x");
    kf_ttlv_add_text(f->a, ref, KMIP_TAG_ATTRIBUTE_NAME, "Barcode");
    const kf_ttlv *item = call(f, msg);
    expect_ok(item);
    const kf_ttlv *got = kf_ttlv_find(payload_of(item), KMIP_TAG_ATTRIBUTES);
    assert_int_equal(got->nchildren, 4); /* two groups, the state, the vendor attribute */
    assert_int_equal(kf_ttlv_count(got, KMIP_TAG_OBJECT_GROUP), 2);
    assert_true(kf_ttlv_text_equals(
        kf_ttlv_find(kf_ttlv_find(got, KMIP_TAG_ATTRIBUTE), KMIP_TAG_ATTRIBUTE_VALUE), "12345"));
    assert_null(kf_ttlv_find(got, KMIP_TAG_CONTACT_INFORMATION));

    /* The 1.x view of the same object numbers the instances. */
    const kf_ttlv *v1p = get_attributes_v1(f, uid, "Object Group");
    assert_int_equal(v1_count(v1p, "Object Group"), 2);
    const kf_ttlv *second = kf_ttlv_find_next(kf_ttlv_find(v1p, KMIP_TAG_ATTRIBUTE),
                                              KMIP_TAG_ATTRIBUTE);
    int32_t index = -1;
    assert_int_equal(kf_ttlv_get_int(kf_ttlv_find(second, KMIP_TAG_ATTRIBUTE_INDEX), &index),
                     KF_OK);
    assert_int_equal(index, 1);
}

static void get_attribute_list_in_both_forms(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    create_v1(f, "VENDOR", 128, "k", "grp", "v", uid);
    kf_ttlv *p, *msg = single(f, 1, KMIP_OP_GET_ATTRIBUTE_LIST, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    const kf_ttlv *item = call(f, msg);
    expect_ok(item);
    bool group = false, custom = false, type = false;
    for (const kf_ttlv *n = kf_ttlv_find(payload_of(item), KMIP_TAG_ATTRIBUTE_NAME); n;
         n = kf_ttlv_find_next(n, KMIP_TAG_ATTRIBUTE_NAME)) {
        group |= kf_ttlv_text_equals(n, "Object Group");
        custom |= kf_ttlv_text_equals(n, "x-ID");
        type |= kf_ttlv_text_equals(n, "Object Type");
    }
    assert_true(group && custom && type);

    msg = single(f, 2, KMIP_OP_GET_ATTRIBUTE_LIST, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    item = call(f, msg);
    expect_ok(item);
    bool tag_group = false, vendor = false;
    for (const kf_ttlv *n = kf_ttlv_find(payload_of(item), KMIP_TAG_ATTRIBUTE_REFERENCE); n;
         n = kf_ttlv_find_next(n, KMIP_TAG_ATTRIBUTE_REFERENCE)) {
        uint32_t t;
        if (kf_ttlv_get_enum(n, &t) == KF_OK)
            tag_group |= t == KMIP_TAG_OBJECT_GROUP;
        else
            vendor |= kf_ttlv_text_equals(kf_ttlv_find(n, KMIP_TAG_ATTRIBUTE_NAME), "ID");
    }
    assert_true(tag_group && vendor);
    assert_null(kf_ttlv_find(payload_of(item), KMIP_TAG_ATTRIBUTE_NAME));
}

/* ---- Add / Modify / Delete / Set ---- */

static const kf_ttlv *v1_change(struct fixture *f, uint32_t op, const char *uid,
                                const char *name, int index, const char *text)
{
    kf_ttlv *p, *msg = single(f, 1, op, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    if (op == KMIP_OP_DELETE_ATTRIBUTE) {
        kf_ttlv_add_text(f->a, p, KMIP_TAG_ATTRIBUTE_NAME, name);
        if (index >= 0)
            kf_ttlv_add_int(f->a, p, KMIP_TAG_ATTRIBUTE_INDEX, index);
    } else {
        kf_ttlv *at = v1_attr(f, p, name);
        if (index >= 0)
            kf_ttlv_add_int(f->a, at, KMIP_TAG_ATTRIBUTE_INDEX, index);
        kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE, text);
    }
    return call(f, msg);
}

static void v1_add_modify_delete_with_index(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    create_v1(f, "VENDOR", 128, NULL, NULL, NULL, uid);
    const kf_ttlv *item = v1_change(f, KMIP_OP_ADD_ATTRIBUTE, uid, "x-Barcode", -1, "first");
    expect_ok(item);
    item = v1_change(f, KMIP_OP_ADD_ATTRIBUTE, uid, "x-Barcode", -1, "second");
    expect_ok(item);
    /* The 1.x answer carries the attribute with its index. */
    int32_t index = -1;
    assert_int_equal(kf_ttlv_get_int(KF_TTLV_PATH(payload_of(item), KMIP_TAG_ATTRIBUTE,
                                                  KMIP_TAG_ATTRIBUTE_INDEX),
                                     &index),
                     KF_OK);
    assert_int_equal(index, 1);
    expect_ok(v1_change(f, KMIP_OP_ADD_ATTRIBUTE, uid, "Contact Information", -1, "a@b"));
    /* Contact Information is single-valued. */
    expect_fail(v1_change(f, KMIP_OP_ADD_ATTRIBUTE, uid, "Contact Information", -1, "c@d"),
                KMIP_REASON_INVALID_FIELD);
    expect_ok(v1_change(f, KMIP_OP_MODIFY_ATTRIBUTE, uid, "x-Barcode", 1, "second'"));
    expect_ok(v1_change(f, KMIP_OP_MODIFY_ATTRIBUTE, uid, "Contact Information", -1, "e@f"));
    /* No third instance to modify or delete. */
    expect_fail(v1_change(f, KMIP_OP_MODIFY_ATTRIBUTE, uid, "x-Barcode", 2, "x"),
                KMIP_REASON_ITEM_NOT_FOUND);
    expect_fail(v1_change(f, KMIP_OP_DELETE_ATTRIBUTE, uid, "x-Barcode", 2, NULL),
                KMIP_REASON_ITEM_NOT_FOUND);
    item = v1_change(f, KMIP_OP_DELETE_ATTRIBUTE, uid, "x-Barcode", 0, NULL);
    expect_ok(item);
    assert_true(kf_ttlv_text_equals(
        KF_TTLV_PATH(payload_of(item), KMIP_TAG_ATTRIBUTE, KMIP_TAG_ATTRIBUTE_VALUE), "first"));
    const kf_ttlv *p = get_attributes_v1(f, uid, NULL);
    assert_int_equal(v1_count(p, "x-Barcode"), 1);
    assert_true(kf_ttlv_text_equals(v1_value(p, "x-Barcode", 0), "second'"));
    assert_true(kf_ttlv_text_equals(v1_value(p, "Contact Information", 0), "e@f"));
    /* A value of the wrong type and an unknown name are Invalid Field. */
    kf_ttlv *q, *msg = single(f, 1, KMIP_OP_ADD_ATTRIBUTE, &q);
    kf_ttlv_add_text(f->a, q, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_int(f->a, v1_attr(f, q, "Object Group"), KMIP_TAG_ATTRIBUTE_VALUE, 7);
    expect_fail(call(f, msg), KMIP_REASON_INVALID_FIELD);
    expect_fail(v1_change(f, KMIP_OP_ADD_ATTRIBUTE, uid, "Colour", -1, "red"),
                KMIP_REASON_INVALID_FIELD);
    /* Unknown object. */
    expect_fail(v1_change(f, KMIP_OP_ADD_ATTRIBUTE, "VENDOR/99", "x-a", -1, "b"),
                KMIP_REASON_ITEM_NOT_FOUND);
}

/* 2.x: New Attribute / Current Attribute / Attribute Reference. */
static const kf_ttlv *v2_change(struct fixture *f, uint32_t op, const char *uid,
                                const char *current_group, const char *new_group)
{
    kf_ttlv *p, *msg = single(f, 2, op, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    if (current_group)
        kf_ttlv_add_text(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_CURRENT_ATTRIBUTE),
                         KMIP_TAG_OBJECT_GROUP, current_group);
    if (new_group)
        kf_ttlv_add_text(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_NEW_ATTRIBUTE),
                         KMIP_TAG_OBJECT_GROUP, new_group);
    return call(f, msg);
}

static void v2_add_modify_set_delete(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    create_v1(f, "VENDOR", 128, NULL, NULL, NULL, uid);
    expect_ok(v2_change(f, KMIP_OP_ADD_ATTRIBUTE, uid, NULL, "red"));
    /* The 2.x answer is the Unique Identifier alone. */
    const kf_ttlv *item = v2_change(f, KMIP_OP_ADD_ATTRIBUTE, uid, NULL, "blue");
    expect_ok(item);
    assert_null(kf_ttlv_find(payload_of(item), KMIP_TAG_ATTRIBUTE));
    /* Two instances: Modify and Set must say which. */
    expect_fail(v2_change(f, KMIP_OP_MODIFY_ATTRIBUTE, uid, NULL, "green"),
                KMIP_REASON_MULTI_VALUED_ATTRIBUTE);
    expect_fail(v2_change(f, KMIP_OP_SET_ATTRIBUTE, uid, NULL, "green"),
                KMIP_REASON_MULTI_VALUED_ATTRIBUTE);
    expect_ok(v2_change(f, KMIP_OP_MODIFY_ATTRIBUTE, uid, "blue", "green"));
    expect_fail(v2_change(f, KMIP_OP_MODIFY_ATTRIBUTE, uid, "blue", "x"),
                KMIP_REASON_ATTRIBUTE_NOT_FOUND);
    const kf_ttlv *at = get_attributes_v2(f, uid);
    const kf_ttlv *g = kf_ttlv_find(at, KMIP_TAG_OBJECT_GROUP);
    assert_true(kf_ttlv_text_equals(g, "red"));
    assert_true(kf_ttlv_text_equals(kf_ttlv_find_next(g, KMIP_TAG_OBJECT_GROUP), "green"));

    /* Set: adds when absent, replaces the one instance otherwise. */
    kf_ttlv *p, *msg = single(f, 2, KMIP_OP_SET_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_text(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_NEW_ATTRIBUTE), KMIP_TAG_DESCRIPTION,
                     "one");
    expect_ok(call(f, msg));
    msg = single(f, 2, KMIP_OP_SET_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_text(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_NEW_ATTRIBUTE), KMIP_TAG_DESCRIPTION,
                     "two");
    expect_ok(call(f, msg));
    at = get_attributes_v2(f, uid);
    assert_int_equal(kf_ttlv_count(at, KMIP_TAG_DESCRIPTION), 1);
    assert_true(kf_ttlv_text_equals(kf_ttlv_find(at, KMIP_TAG_DESCRIPTION), "two"));
    /* Set Attribute does not exist in KMIP 1.x. */
    msg = single(f, 1, KMIP_OP_SET_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    expect_fail(call(f, msg), KMIP_REASON_OPERATION_NOT_SUPPORTED);

    /* Delete one instance by value, then all by reference. */
    expect_ok(v2_change(f, KMIP_OP_DELETE_ATTRIBUTE, uid, "red", NULL));
    expect_fail(v2_change(f, KMIP_OP_DELETE_ATTRIBUTE, uid, "red", NULL),
                KMIP_REASON_ATTRIBUTE_NOT_FOUND);
    expect_ok(v2_change(f, KMIP_OP_ADD_ATTRIBUTE, uid, NULL, "red"));
    msg = single(f, 2, KMIP_OP_DELETE_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_ATTRIBUTE_REFERENCE, KMIP_TAG_OBJECT_GROUP);
    expect_ok(call(f, msg));
    at = get_attributes_v2(f, uid);
    assert_null(kf_ttlv_find(at, KMIP_TAG_OBJECT_GROUP));
    msg = single(f, 2, KMIP_OP_DELETE_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_ATTRIBUTE_REFERENCE, KMIP_TAG_OBJECT_GROUP);
    expect_fail(call(f, msg), KMIP_REASON_ATTRIBUTE_NOT_FOUND);
}

/* ---- read-only attributes ---- */

static void read_only_attributes_are_refused(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    create_v1(f, "VENDOR", 128, NULL, NULL, NULL, uid);
    /* KMIP 1.x has no Read Only reason: Permission Denied (as SKLC-M-3 does for dates). */
    expect_fail(v1_change(f, KMIP_OP_MODIFY_ATTRIBUTE, uid, "Unique Identifier", -1, "x/1"),
                KMIP_REASON_PERMISSION_DENIED);
    expect_fail(v1_change(f, KMIP_OP_DELETE_ATTRIBUTE, uid, "Unique Identifier", -1, NULL),
                KMIP_REASON_PERMISSION_DENIED);
    kf_ttlv *p, *msg = single(f, 1, KMIP_OP_MODIFY_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_int(f->a, v1_attr(f, p, "Cryptographic Length"), KMIP_TAG_ATTRIBUTE_VALUE, 256);
    expect_fail(call(f, msg), KMIP_REASON_PERMISSION_DENIED);
    msg = single(f, 1, KMIP_OP_ADD_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_datetime(f->a, v1_attr(f, p, "Initial Date"), KMIP_TAG_ATTRIBUTE_VALUE, 1000);
    expect_fail(call(f, msg), KMIP_REASON_PERMISSION_DENIED);
    /* KMIP 2.x: Read Only Attribute. */
    msg = single(f, 2, KMIP_OP_SET_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_enum(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_NEW_ATTRIBUTE), KMIP_TAG_STATE,
                     KF_STATE_ACTIVE);
    expect_fail(call(f, msg), KMIP_REASON_READ_ONLY_ATTRIBUTE);
    msg = single(f, 2, KMIP_OP_MODIFY_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_enum(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_NEW_ATTRIBUTE),
                     KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_HMAC_SHA256);
    expect_fail(call(f, msg), KMIP_REASON_READ_ONLY_ATTRIBUTE);
    msg = single(f, 2, KMIP_OP_DELETE_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_ATTRIBUTE_REFERENCE, KMIP_TAG_INITIAL_DATE);
    expect_fail(call(f, msg), KMIP_REASON_READ_ONLY_ATTRIBUTE);
    /* Sensitive may be set but not deleted. */
    msg = single(f, 2, KMIP_OP_SET_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_bool(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_NEW_ATTRIBUTE), KMIP_TAG_SENSITIVE,
                     true);
    expect_ok(call(f, msg));
    msg = single(f, 2, KMIP_OP_DELETE_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_ATTRIBUTE_REFERENCE, KMIP_TAG_SENSITIVE);
    expect_fail(call(f, msg), KMIP_REASON_READ_ONLY_ATTRIBUTE);
    /* Nothing changed: the object is still what Create made. */
    uint32_t alg;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(get_attributes_v2(f, uid),
                                                   KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM),
                                      &alg),
                     KF_OK);
    assert_int_equal(alg, KMIP_ALG_AES);
    /* Create refuses a read-only attribute before making anything. */
    kf_ttlv *ta;
    msg = v1_aes_create(f, 128, &ta);
    v1_text_attr(f, ta, "x-keyfleet-domain", "VENDOR");
    kf_ttlv_add_datetime(f->a, v1_attr(f, ta, "Last Change Date"), KMIP_TAG_ATTRIBUTE_VALUE, 5);
    expect_fail(call(f, msg), KMIP_REASON_PERMISSION_DENIED);
    char next[KF_UID_MAX];
    create_v1(f, "VENDOR", 128, NULL, NULL, NULL, next);
    assert_string_equal(next, "VENDOR/2"); /* the refused Create made no object */
}

/* ---- dates and the lifecycle ---- */

struct stored_state {
    uint32_t state;
    int64_t activation;
};

static int remember_state(void *ctx, const struct kf_object *obj)
{
    struct stored_state *s = ctx;
    s->state = obj->state; /* as stored: kf_kms_list applies no date rule */
    s->activation = obj->activation_date;
    return KF_OK;
}

static void activation_date_in_the_past_activates_and_persists(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    create_v1(f, "VENDOR", 128, NULL, NULL, NULL, uid);
    int64_t past = (int64_t)time(NULL) - 3600;
    kf_ttlv *p, *msg = single(f, 2, KMIP_OP_SET_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_datetime(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_NEW_ATTRIBUTE),
                         KMIP_TAG_ACTIVATION_DATE, past);
    expect_ok(call(f, msg));
    struct stored_state s = {0};
    assert_int_equal(kf_kms_list(f->kms, "test", "VENDOR", NULL, remember_state, &s), KF_OK);
    assert_int_equal(s.state, KF_STATE_ACTIVE);
    assert_int_equal(s.activation, past);
    /* Active: the Activation Date may no longer change (KMIP 1.4 SKLC-M-3). */
    msg = single(f, 1, KMIP_OP_MODIFY_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_datetime(f->a, v1_attr(f, p, "Activation Date"), KMIP_TAG_ATTRIBUTE_VALUE,
                         past + 10);
    expect_fail(call(f, msg), KMIP_REASON_PERMISSION_DENIED);
    msg = single(f, 2, KMIP_OP_SET_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_datetime(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_NEW_ATTRIBUTE),
                         KMIP_TAG_ACTIVATION_DATE, past + 10);
    expect_fail(call(f, msg), KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE);
    /* A reached Deactivation Date deactivates, persisted the same way. */
    msg = single(f, 2, KMIP_OP_SET_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_datetime(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_NEW_ATTRIBUTE),
                         KMIP_TAG_DEACTIVATION_DATE, past + 60);
    expect_ok(call(f, msg));
    assert_int_equal(kf_kms_list(f->kms, "test", "VENDOR", NULL, remember_state, &s), KF_OK);
    assert_int_equal(s.state, KF_STATE_DEACTIVATED);
    /* Deactivated: the Deactivation Date may no longer change either. */
    msg = single(f, 2, KMIP_OP_SET_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_datetime(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_NEW_ATTRIBUTE),
                         KMIP_TAG_DEACTIVATION_DATE, past + 90);
    expect_fail(call(f, msg), KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE);
    /* A future Activation Date on a new key leaves it Pre-Active. */
    create_v1(f, "VENDOR", 128, NULL, NULL, NULL, uid);
    expect_ok(v1_change(f, KMIP_OP_ADD_ATTRIBUTE, uid, "Comment", -1, "later"));
    msg = single(f, 1, KMIP_OP_ADD_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_datetime(f->a, v1_attr(f, p, "Activation Date"), KMIP_TAG_ATTRIBUTE_VALUE,
                         past + 7200);
    expect_ok(call(f, msg));
    uint32_t st;
    assert_int_equal(kf_ttlv_get_enum(v1_value(get_attributes_v1(f, uid, "State"), "State", 0),
                                      &st),
                     KF_OK);
    assert_int_equal(st, KF_STATE_PRE_ACTIVE);
}

static void create_with_past_activation_date_is_active(void **state)
{
    struct fixture *f = *state;
    /* AX-M-1-14 shape: Activation Date $NOW-3600 in the Template-Attribute. */
    kf_ttlv *ta, *msg = v1_aes_create(f, 256, &ta);
    kf_ttlv *cp = kf_ttlv_struct(f->a, v1_attr(f, ta, "Cryptographic Parameters"),
                                 KMIP_TAG_ATTRIBUTE_VALUE);
    kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_XTS);
    kf_ttlv_add_datetime(f->a, v1_attr(f, ta, "Activation Date"), KMIP_TAG_ATTRIBUTE_VALUE,
                         (int64_t)time(NULL) - 3600);
    v1_text_attr(f, ta, "x-ID", "AX-M-1-14-key1");
    v1_text_attr(f, ta, "x-keyfleet-domain", "VENDOR");
    char uid[KF_UID_MAX];
    expect_uid(f, msg, uid);
    const kf_ttlv *at = get_attributes_v2(f, uid);
    uint32_t st, mode;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(at, KMIP_TAG_STATE), &st), KF_OK);
    assert_int_equal(st, KF_STATE_ACTIVE);
    assert_int_equal(kf_ttlv_get_enum(KF_TTLV_PATH(at, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS,
                                                   KMIP_TAG_BLOCK_CIPHER_MODE),
                                      &mode),
                     KF_OK);
    assert_int_equal(mode, KMIP_MODE_XTS);
}

/* ---- Usage Limits ---- */

static void usage_limits_are_stored_and_consumed(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    create_v1(f, "VENDOR", 128, NULL, NULL, NULL, uid);
    kf_ttlv *p, *msg = single(f, 2, KMIP_OP_SET_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv *ul = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_NEW_ATTRIBUTE),
                                 KMIP_TAG_USAGE_LIMITS);
    kf_ttlv_add_long(f->a, ul, KMIP_TAG_USAGE_LIMITS_TOTAL, 2);
    kf_ttlv_add_enum(f->a, ul, KMIP_TAG_USAGE_LIMITS_UNIT, KMIP_USAGE_LIMITS_UNIT_OBJECT);
    expect_ok(call(f, msg));
    int64_t count = -1;
    assert_int_equal(kf_ttlv_get_long(KF_TTLV_PATH(get_attributes_v2(f, uid),
                                                   KMIP_TAG_USAGE_LIMITS,
                                                   KMIP_TAG_USAGE_LIMITS_COUNT),
                                      &count),
                     KF_OK);
    assert_int_equal(count, 2); /* the server starts the count at the total */

    /* Two uses pass, the third is refused; each consumption is committed. */
    kf_kms *kms = f->kms;
    int results[3];
    struct kf_domain vendor = {0};
    assert_int_equal(kf_store_domain_get(kms->store, "VENDOR", &vendor), KF_OK);
    uint64_t vendor_id = vendor.id;
    kf_domain_clear(&vendor);
    for (int i = 0; i < 3; i++) {
        struct kf_object obj = {0};
        assert_int_equal(kf_store_begin(kms->store), KF_OK);
        assert_int_equal(kf_store_object_get(kms->store, vendor_id, 1, &obj), KF_OK);
        results[i] = kms_usage_limit_consume(kms, &obj, 0);
        if (results[i] == KF_OK)
            assert_int_equal(kf_store_commit(kms->store), KF_OK);
        else
            kf_store_rollback(kms->store);
        kf_object_clear(&obj);
    }
    assert_int_equal(results[0], KF_OK);
    assert_int_equal(results[1], KF_OK);
    assert_int_equal(results[2], KF_ERR_USAGE_LIMIT);
    assert_int_equal(kf_ttlv_get_long(KF_TTLV_PATH(get_attributes_v2(f, uid),
                                                   KMIP_TAG_USAGE_LIMITS,
                                                   KMIP_TAG_USAGE_LIMITS_COUNT),
                                      &count),
                     KF_OK);
    assert_int_equal(count, 0);
    /* Raising the Total keeps what was used: the count does not reset. */
    msg = single(f, 2, KMIP_OP_SET_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    ul = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_NEW_ATTRIBUTE),
                        KMIP_TAG_USAGE_LIMITS);
    kf_ttlv_add_long(f->a, ul, KMIP_TAG_USAGE_LIMITS_TOTAL, 10);
    kf_ttlv_add_enum(f->a, ul, KMIP_TAG_USAGE_LIMITS_UNIT, KMIP_USAGE_LIMITS_UNIT_OBJECT);
    expect_ok(call(f, msg));
    assert_int_equal(kf_ttlv_get_long(KF_TTLV_PATH(get_attributes_v2(f, uid),
                                                   KMIP_TAG_USAGE_LIMITS,
                                                   KMIP_TAG_USAGE_LIMITS_COUNT),
                                      &count),
                     KF_OK);
    assert_int_equal(count, 0);
    /* An object without Usage Limits is not limited. */
    char other[KF_UID_MAX];
    create_v1(f, "VENDOR", 128, NULL, NULL, NULL, other);
    struct kf_object obj = {0};
    assert_int_equal(kf_store_begin(kms->store), KF_OK);
    assert_int_equal(kf_store_object_get(kms->store, vendor_id, 2, &obj), KF_OK);
    assert_int_equal(kms_usage_limit_consume(kms, &obj, 1000), KF_OK);
    kf_store_rollback(kms->store);
    kf_object_clear(&obj);
}

/* ---- Locate ---- */

static size_t locate(struct fixture *f, const struct kf_principal *who, kf_ttlv *msg,
                     const char **uids, size_t max, int32_t *located)
{
    const kf_ttlv *item = kf_ttlv_find(send_as(f, who, msg), KMIP_TAG_BATCH_ITEM);
    expect_ok(item);
    const kf_ttlv *p = payload_of(item);
    if (located) {
        *located = -1;
        if (kf_ttlv_find(p, KMIP_TAG_LOCATED_ITEMS))
            assert_int_equal(kf_ttlv_get_int(kf_ttlv_find(p, KMIP_TAG_LOCATED_ITEMS), located),
                             KF_OK);
    }
    size_t n = 0;
    for (const kf_ttlv *u = kf_ttlv_find(p, KMIP_TAG_UNIQUE_IDENTIFIER); u;
         u = kf_ttlv_find_next(u, KMIP_TAG_UNIQUE_IDENTIFIER)) {
        size_t len;
        if (n < max)
            assert_int_equal(kf_ttlv_get_text(u, &uids[n], &len), KF_OK);
        n++;
    }
    return n;
}

static void locate_filters_and_pages(void **state)
{
    struct fixture *f = *state;
    char u[6][KF_UID_MAX];
    create_v1(f, "VENDOR", 128, "alpha", "g1", "tape-1", u[0]); /* VENDOR/1 */
    create_v1(f, "VENDOR", 256, "beta", "g1", "tape-2", u[1]);  /* VENDOR/2 */
    create_v1(f, "VENDOR", 256, "gamma", "g2", NULL, u[2]);     /* VENDOR/3 */
    create_v1(f, "USPS", 256, "alpha", "g1", NULL, u[3]);       /* USPS/1 */
    assert_int_equal(kf_kms_activate(f->kms, "test", u[1]), KF_OK);
    const char *found[8];
    kf_ttlv *p, *msg;

    /* 1.x: Object Type + Cryptographic Length. */
    msg = single(f, 1, KMIP_OP_LOCATE, &p);
    kf_ttlv_add_enum(f->a, v1_attr(f, p, "Object Type"), KMIP_TAG_ATTRIBUTE_VALUE,
                     KMIP_OBJ_SYMMETRIC_KEY);
    kf_ttlv_add_int(f->a, v1_attr(f, p, "Cryptographic Length"), KMIP_TAG_ATTRIBUTE_VALUE, 256);
    int32_t located;
    assert_int_equal(locate(f, NULL, msg, found, 8, &located), 3);
    assert_int_equal(located, -1); /* not paging: no Located Items (as the 1.4 test cases) */
    /* Name, across domains, in domain then key ID order. */
    msg = single(f, 1, KMIP_OP_LOCATE, &p);
    v1_name(f, p, "alpha");
    assert_int_equal(locate(f, NULL, msg, found, 8, NULL), 2);
    assert_string_equal(found[0], "VENDOR/1");
    assert_string_equal(found[1], "USPS/1");
    /* Object Group and a custom attribute together. */
    msg = single(f, 1, KMIP_OP_LOCATE, &p);
    v1_text_attr(f, p, "Object Group", "g1");
    v1_text_attr(f, p, "x-ID", "tape-2");
    assert_int_equal(locate(f, NULL, msg, found, 8, NULL), 1);
    assert_string_equal(found[0], "VENDOR/2");
    /* State. */
    msg = single(f, 1, KMIP_OP_LOCATE, &p);
    kf_ttlv_add_enum(f->a, v1_attr(f, p, "State"), KMIP_TAG_ATTRIBUTE_VALUE, KF_STATE_ACTIVE);
    assert_int_equal(locate(f, NULL, msg, found, 8, NULL), 1);
    assert_string_equal(found[0], "VENDOR/2");
    /* Unique Identifier. */
    msg = single(f, 1, KMIP_OP_LOCATE, &p);
    v1_text_attr(f, p, "Unique Identifier", "VENDOR/3");
    assert_int_equal(locate(f, NULL, msg, found, 8, NULL), 1);
    /* Nothing matches. */
    msg = single(f, 1, KMIP_OP_LOCATE, &p);
    v1_text_attr(f, p, "Object Group", "none");
    assert_int_equal(locate(f, NULL, msg, found, 8, NULL), 0);

    /* 2.x: Attributes, Offset Items and Maximum Items, Located Items counts all. */
    msg = single(f, 2, KMIP_OP_LOCATE, &p);
    kf_ttlv_add_int(f->a, p, KMIP_TAG_MAXIMUM_ITEMS, 2);
    kf_ttlv_add_int(f->a, p, KMIP_TAG_OFFSET_ITEMS, 1);
    kf_ttlv_add_int(f->a, p, KMIP_TAG_STORAGE_STATUS_MASK, 1);
    kf_ttlv *at = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
    kf_ttlv_add_enum(f->a, at, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
    assert_int_equal(locate(f, NULL, msg, found, 8, &located), 2);
    assert_int_equal(located, 4);
    assert_string_equal(found[0], "VENDOR/2");
    assert_string_equal(found[1], "VENDOR/3");
    /* 2.x Vendor Attribute. */
    msg = single(f, 2, KMIP_OP_LOCATE, &p);
    v2_vendor(f, kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES), "ID", "tape-1");
    assert_int_equal(locate(f, NULL, msg, found, 8, NULL), 1);
    assert_string_equal(found[0], "VENDOR/1");

    /* A principal of USPS only sees USPS objects. */
    struct kf_principal usps = {.roles = KF_ROLE_USE, .ndomains = 1};
    snprintf(usps.name, sizeof(usps.name), "cert:CN=usps");
    snprintf(usps.domains[0], sizeof(usps.domains[0]), "USPS");
    msg = single(f, 1, KMIP_OP_LOCATE, &p);
    v1_name(f, p, "alpha");
    assert_int_equal(locate(f, &usps, msg, found, 8, NULL), 1);
    assert_string_equal(found[0], "USPS/1");
    /* A destroyed object is not on-line: only a mask with Destroyed Storage finds it. */
    assert_int_equal(kf_kms_destroy(f->kms, "test", "VENDOR/3"), KF_OK);
    msg = single(f, 1, KMIP_OP_LOCATE, &p);
    v1_text_attr(f, p, "Unique Identifier", "VENDOR/3");
    assert_int_equal(locate(f, NULL, msg, found, 8, NULL), 0);
    msg = single(f, 2, KMIP_OP_LOCATE, &p);
    kf_ttlv_add_int(f->a, p, KMIP_TAG_STORAGE_STATUS_MASK,
                    KMIP_STORAGE_ON_LINE_STORAGE | KMIP_STORAGE_DESTROYED_STORAGE);
    kf_ttlv_add_text(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES),
                     KMIP_TAG_UNIQUE_IDENTIFIER, "VENDOR/3");
    assert_int_equal(locate(f, NULL, msg, found, 8, NULL), 1);
    /* A malformed filter is refused. */
    msg = single(f, 1, KMIP_OP_LOCATE, &p);
    kf_ttlv_add_text(f->a, v1_attr(f, p, "Cryptographic Length"), KMIP_TAG_ATTRIBUTE_VALUE, "x");
    expect_fail(call(f, msg), KMIP_REASON_INVALID_FIELD);
}

/* ---- batches ---- */

static void batch_with_id_placeholder(void **state)
{
    struct fixture *f = *state;
    kf_ttlv *msg = message(f, 1, 4, NULL);
    kf_ttlv *p = add_item(f, msg, KMIP_OP_CREATE);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
    kf_ttlv *ta = kf_ttlv_struct(f->a, p, KMIP_TAG_TEMPLATE_ATTRIBUTE);
    kf_ttlv_add_enum(f->a, v1_attr(f, ta, "Cryptographic Algorithm"), KMIP_TAG_ATTRIBUTE_VALUE,
                     KMIP_ALG_AES);
    kf_ttlv_add_int(f->a, v1_attr(f, ta, "Cryptographic Length"), KMIP_TAG_ATTRIBUTE_VALUE, 128);
    v1_text_attr(f, ta, "x-keyfleet-domain", "USPS");
    (void)add_item(f, msg, KMIP_OP_ACTIVATE); /* no Unique Identifier: the placeholder */
    p = add_item(f, msg, KMIP_OP_GET_ATTRIBUTES);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_ATTRIBUTE_NAME, "State");
    const kf_ttlv *r = send(f, msg);
    int32_t count;
    assert_int_equal(
        kf_ttlv_get_int(KF_TTLV_PATH(r, KMIP_TAG_RESPONSE_HEADER, KMIP_TAG_BATCH_COUNT), &count),
        KF_OK);
    assert_int_equal(count, 3);
    const kf_ttlv *it = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
    expect_ok(it);
    it = kf_ttlv_find_next(it, KMIP_TAG_BATCH_ITEM);
    expect_ok(it);
    assert_true(kf_ttlv_text_equals(kf_ttlv_find(payload_of(it), KMIP_TAG_UNIQUE_IDENTIFIER),
                                    "USPS/1"));
    it = kf_ttlv_find_next(it, KMIP_TAG_BATCH_ITEM);
    expect_ok(it);
    uint32_t st;
    assert_int_equal(kf_ttlv_get_enum(v1_value(payload_of(it), "State", 0), &st), KF_OK);
    assert_int_equal(st, KF_STATE_ACTIVE);

    /* Without a preceding Create there is no placeholder: the request is incomplete. */
    msg = message(f, 1, 4, NULL);
    (void)add_item(f, msg, KMIP_OP_ACTIVATE);
    expect_fail(call(f, msg), KMIP_REASON_MISSING_DATA);
    /* Locate sets it too (TL-M-3-14: Locate then Get Attribute List with an empty payload). */
    msg = message(f, 1, 4, NULL);
    p = add_item(f, msg, KMIP_OP_LOCATE);
    v1_text_attr(f, p, "Unique Identifier", "USPS/1");
    (void)add_item(f, msg, KMIP_OP_GET_ATTRIBUTE_LIST);
    r = send(f, msg);
    it = kf_ttlv_find_next(kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM), KMIP_TAG_BATCH_ITEM);
    expect_ok(it);
    assert_true(kf_ttlv_text_equals(kf_ttlv_find(payload_of(it), KMIP_TAG_UNIQUE_IDENTIFIER),
                                    "USPS/1"));
}

static const kf_ttlv *failing_batch(struct fixture *f, int option)
{
    kf_ttlv *hdr, *msg = message(f, 1, 4, &hdr);
    if (option)
        kf_ttlv_add_enum(f->a, hdr, KMIP_TAG_BATCH_ERROR_CONTINUATION_OPTION, (uint32_t)option);
    kf_ttlv *bi = kf_ttlv_struct(f->a, msg, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(f->a, bi, KMIP_TAG_OPERATION, KMIP_OP_GET_ATTRIBUTES);
    static const uint8_t id1[] = {0x01};
    kf_ttlv_add_bytes(f->a, bi, KMIP_TAG_UNIQUE_BATCH_ITEM_ID, id1, 1);
    kf_ttlv_add_text(f->a, kf_ttlv_struct(f->a, bi, KMIP_TAG_REQUEST_PAYLOAD),
                     KMIP_TAG_UNIQUE_IDENTIFIER, "VENDOR/404");
    kf_ttlv *p = add_item(f, msg, KMIP_OP_QUERY);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_QUERY_FUNCTION, KMIP_QUERY_QUERY_OPERATIONS);
    return send(f, msg);
}

static void batch_stop_continue_undo(void **state)
{
    struct fixture *f = *state;
    int32_t count;
    /* Default (Stop): the failing first item ends the batch. */
    const kf_ttlv *r = failing_batch(f, 0);
    assert_int_equal(kf_ttlv_count(r, KMIP_TAG_BATCH_ITEM), 1);
    assert_int_equal(
        kf_ttlv_get_int(KF_TTLV_PATH(r, KMIP_TAG_RESPONSE_HEADER, KMIP_TAG_BATCH_COUNT), &count),
        KF_OK);
    assert_int_equal(count, 1);
    const kf_ttlv *it = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
    expect_fail(it, KMIP_REASON_ITEM_NOT_FOUND);
    const uint8_t *id;
    size_t idlen;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(it, KMIP_TAG_UNIQUE_BATCH_ITEM_ID), &id,
                                       &idlen),
                     KF_OK);
    assert_int_equal(idlen, 1);
    assert_int_equal(id[0], 0x01);
    r = failing_batch(f, KMIP_BATCH_ERR_STOP);
    assert_int_equal(kf_ttlv_count(r, KMIP_TAG_BATCH_ITEM), 1);
    r = failing_batch(f, KMIP_BATCH_ERR_UNDO);
    assert_int_equal(kf_ttlv_count(r, KMIP_TAG_BATCH_ITEM), 1);
    /* Continue: the second item runs and succeeds. */
    r = failing_batch(f, KMIP_BATCH_ERR_CONTINUE);
    assert_int_equal(kf_ttlv_count(r, KMIP_TAG_BATCH_ITEM), 2);
    assert_int_equal(
        kf_ttlv_get_int(KF_TTLV_PATH(r, KMIP_TAG_RESPONSE_HEADER, KMIP_TAG_BATCH_COUNT), &count),
        KF_OK);
    assert_int_equal(count, 2);
    expect_ok(kf_ttlv_find_next(kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM), KMIP_TAG_BATCH_ITEM));
    /* An option outside the enumeration is refused. */
    r = failing_batch(f, 9);
    expect_fail(kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM), KMIP_REASON_MISSING_DATA);
}

static const kf_ttlv *query_with_max(struct fixture *f, int32_t max)
{
    kf_ttlv *hdr, *msg = message(f, 1, 4, &hdr);
    kf_ttlv_add_int(f->a, hdr, KMIP_TAG_MAXIMUM_RESPONSE_SIZE, max);
    kf_ttlv_add_int(f->a, hdr, KMIP_TAG_BATCH_COUNT, 1);
    kf_ttlv *p = add_item(f, msg, KMIP_OP_QUERY);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_QUERY_FUNCTION, KMIP_QUERY_QUERY_OPERATIONS);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_QUERY_FUNCTION, KMIP_QUERY_QUERY_OBJECTS);
    return kf_ttlv_find(send(f, msg), KMIP_TAG_BATCH_ITEM);
}

static void maximum_response_size(void **state)
{
    struct fixture *f = *state;
    /* MSGENC-XML-M-1-14: 256 bytes is too small for this Query, 2048 is enough. */
    const kf_ttlv *it = query_with_max(f, 256);
    expect_fail(it, KMIP_REASON_RESPONSE_TOO_LARGE);
    uint32_t op;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(it, KMIP_TAG_OPERATION), &op), KF_OK);
    assert_int_equal(op, KMIP_OP_QUERY);
    assert_null(payload_of(it));
    expect_ok(query_with_max(f, 2048));
    it = query_with_max(f, 0);
    expect_fail(it, KMIP_REASON_MISSING_DATA);
}

/* ---- the model itself ---- */

static void v1_and_v2_forms_convert_both_ways(void **state)
{
    struct fixture *f = *state;
    kf_ttlv *at = v1_attr(f, NULL, "Application Specific Information");
    kf_ttlv *v = kf_ttlv_struct(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE);
    kf_ttlv_add_text(f->a, v, KMIP_TAG_APPLICATION_NAMESPACE, "LIBRARY-LTO");
    kf_ttlv_add_text(f->a, v, KMIP_TAG_APPLICATION_DATA, "123456789ABCDEF");
    kf_ttlv *node;
    int32_t index;
    assert_int_equal(attr_from_v1(f->a, at, &node, &index), KF_OK);
    assert_int_equal(node->tag, KMIP_TAG_APPLICATION_SPECIFIC_INFORMATION);
    assert_true(kf_ttlv_text_equals(kf_ttlv_find(node, KMIP_TAG_APPLICATION_NAMESPACE),
                                    "LIBRARY-LTO"));
    kf_ttlv *back = kf_ttlv_struct(f->a, NULL, KMIP_TAG_RESPONSE_PAYLOAD);
    assert_int_equal(attr_to_v1(f->a, back, node, 0), KF_OK);
    assert_true(attr_equal(kf_ttlv_find(back, KMIP_TAG_ATTRIBUTE), at));
    /* A custom attribute: "y-" is the server's, read-only for a client. */
    at = v1_attr(f, NULL, "y-Server");
    kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE, "s");
    assert_int_equal(attr_from_v1(f->a, at, &node, &index), KF_OK);
    assert_true(attr_flags(node) & AF_READ_ONLY);
    char name[64];
    assert_int_equal(attr_name(node, name, sizeof(name)), KF_OK);
    assert_string_equal(name, "y-Server");
    /* Refusals: unknown name, wrong type, missing value, negative index. */
    at = v1_attr(f, NULL, "Colour");
    kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE, "red");
    assert_int_equal(attr_from_v1(f->a, at, &node, &index), KF_ERR_ATTRIBUTE);
    at = v1_attr(f, NULL, "State");
    kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE, "Active");
    assert_int_equal(attr_from_v1(f->a, at, &node, &index), KF_ERR_ATTRIBUTE);
    at = v1_attr(f, NULL, "Comment");
    assert_int_equal(attr_from_v1(f->a, at, &node, &index), KF_ERR_REQUEST);
    at = v1_attr(f, NULL, "Comment");
    kf_ttlv_add_int(f->a, at, KMIP_TAG_ATTRIBUTE_INDEX, -1);
    kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE, "c");
    assert_int_equal(attr_from_v1(f->a, at, &node, &index), KF_ERR_ATTRIBUTE);
}

/* ---- server-set attributes, links, Query, wrapped Get ---- */

static void hex_to(const char *hex, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
}

static void expect_digest(const kf_ttlv *digest, const char *hex, uint32_t key_format)
{
    uint8_t want[32];
    hex_to(hex, want, sizeof(want));
    assert_non_null(digest);
    uint32_t alg = 0, kft = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(digest, KMIP_TAG_HASHING_ALGORITHM), &alg),
                     KF_OK);
    assert_int_equal(alg, KMIP_HASH_SHA_256);
    const kf_ttlv *dv = kf_ttlv_find(digest, KMIP_TAG_DIGEST_VALUE);
    assert_non_null(dv);
    assert_int_equal(dv->v.bytes.len, 32);
    assert_memory_equal(dv->v.bytes.p, want, 32);
    if (key_format) {
        assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(digest, KMIP_TAG_KEY_FORMAT_TYPE), &kft),
                         KF_OK);
        assert_int_equal(kft, key_format);
    } else {
        assert_null(kf_ttlv_find(digest, KMIP_TAG_KEY_FORMAT_TYPE));
    }
}

/* FIPS 180-2 Appendix B.1: SHA-256("abc"). */
static void digest_attribute_known_answer(void **state)
{
    struct fixture *f = *state;
    kf_ttlv *set = kf_ttlv_struct(f->a, NULL, KMIP_TAG_ATTRIBUTES);
    assert_int_equal(kms_digest_attr(f->a, set, KMIP_KEYFMT_RAW, (const uint8_t *)"abc", 3), KF_OK);
    expect_digest(kf_ttlv_find(set, KMIP_TAG_DIGEST),
                  "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                  KMIP_KEYFMT_RAW);
    assert_int_equal(kms_digest_attr(f->a, set, 0, (const uint8_t *)"abc", 0), KF_ERR_ARG);
    assert_int_equal(kms_digest_attr(f->a, set, 0, NULL, 3), KF_ERR_ARG);
}

/* Register computes the Digest over the registered material (FIPS 180-2 B.2 message). */
static void register_sets_digest_of_material(void **state)
{
    struct fixture *f = *state;
    static const char msg[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    struct kf_register_spec spec = {.domain = "VENDOR",
                                    .object_type = KF_OBJ_SECRET_DATA,
                                    .key_format = KMIP_KEYFMT_OPAQUE};
    char uid[KF_UID_MAX];
    assert_int_equal(kf_kms_register(f->kms, "test", "Register", &spec, (const uint8_t *)msg,
                                     strlen(msg), uid),
                     KF_OK);
    const kf_ttlv *p = get_attributes_v1(f, uid, "Digest");
    assert_int_equal(v1_count(p, "Digest"), 1);
    expect_digest(v1_value(p, "Digest", 0),
                  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
                  KMIP_KEYFMT_OPAQUE);
    /* Not given by the server for generated material only: no RNG attribute here. */
    p = get_attributes_v1(f, uid, NULL);
    assert_int_equal(v1_count(p, "Random Number Generator"), 0);
    assert_int_equal(v1_count(p, "Original Creation Date"), 1);
}

static bool bool_attr(const kf_ttlv *p, const char *name)
{
    bool b = false;
    assert_int_equal(kf_ttlv_get_bool(v1_value(p, name, 0), &b), KF_OK);
    return b;
}

/* KMIP 1.4 §3.34-3.44 server-set attributes on Create; SKFF-M-9's Get Attribute List. */
static void create_sets_server_attributes(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    create_v1(f, "VENDOR", 256, "srv", NULL, NULL, uid);
    const kf_ttlv *p = get_attributes_v1(f, uid, NULL);
    assert_false(bool_attr(p, "Sensitive"));
    assert_false(bool_attr(p, "Always Sensitive"));
    assert_true(bool_attr(p, "Extractable"));
    assert_false(bool_attr(p, "Never Extractable"));
    assert_true(bool_attr(p, "Fresh"));
    const kf_ttlv *lt = v1_value(p, "Lease Time", 0);
    assert_non_null(lt);
    assert_int_equal(lt->type, KF_TTLV_INTERVAL);
    assert_int_equal(lt->v.u32, 3600);
    assert_int_equal(v1_count(p, "Original Creation Date"), 1);
    uint32_t rng = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(v1_value(p, "Random Number Generator", 0),
                                                   KMIP_TAG_RNG_ALGORITHM),
                                      &rng),
                     KF_OK);
    assert_int_equal(rng, KMIP_RNG_ALGORITHM_UNSPECIFIED);
    /* Digest of the generated key: present, Raw; its value is checked against the key. */
    const kf_ttlv *dg = v1_value(p, "Digest", 0);
    assert_non_null(dg);
    struct kf_object obj = {0};
    kf_buf key;
    assert_int_equal(kf_buf_alloc(&key, 64, 4096, KF_BUF_SECRET), KF_OK);
    assert_int_equal(kf_kms_activate(f->kms, "test", uid), KF_OK);
    assert_int_equal(kf_kms_get(f->kms, "test", uid, &obj, &key), KF_OK);
    kf_ttlv *mine = kf_ttlv_struct(f->a, NULL, KMIP_TAG_ATTRIBUTES);
    assert_int_equal(kms_digest_attr(f->a, mine, KMIP_KEYFMT_RAW, key.data, key.len), KF_OK);
    assert_true(attr_equal(kf_ttlv_find(mine, KMIP_TAG_DIGEST), attr_clone(f->a, NULL, dg, KMIP_TAG_DIGEST)));
    kf_buf_free(&key);
    kf_object_clear(&obj);

    static const char *const names[] = {"Always Sensitive", "Digest", "Extractable", "Fresh",
                                        "Lease Time", "Never Extractable",
                                        "Original Creation Date", "Random Number Generator",
                                        "Sensitive"};
    kf_ttlv *q, *msg = single(f, 1, KMIP_OP_GET_ATTRIBUTE_LIST, &q);
    kf_ttlv_add_text(f->a, q, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    const kf_ttlv *item = call(f, msg);
    expect_ok(item);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t n = 0;
        for (const kf_ttlv *a = kf_ttlv_find(payload_of(item), KMIP_TAG_ATTRIBUTE_NAME); a;
             a = kf_ttlv_find_next(a, KMIP_TAG_ATTRIBUTE_NAME))
            n += kf_ttlv_text_equals(a, names[i]);
        assert_int_equal(n, 1);
    }
}

/* Fresh (KMIP 1.4 §3.34): true until a Get serves the key, false after (TL-M-3). */
static void get_clears_fresh(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    create_v1(f, "VENDOR", 128, NULL, NULL, NULL, uid);
    assert_int_equal(kf_kms_activate(f->kms, "test", uid), KF_OK);
    assert_true(bool_attr(get_attributes_v1(f, uid, "Fresh"), "Fresh"));
    for (int i = 0; i < 2; i++) {
        kf_ttlv *p, *msg = single(f, 1, KMIP_OP_GET, &p);
        kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
        expect_ok(call(f, msg));
        const kf_ttlv *got = get_attributes_v1(f, uid, "Fresh");
        assert_int_equal(v1_count(got, "Fresh"), 1);
        assert_false(bool_attr(got, "Fresh"));
    }
    /* A refused Get (unknown object) changes nothing and is not Success. */
    kf_ttlv *p, *msg = single(f, 1, KMIP_OP_GET, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, "VENDOR/99");
    assert_int_equal(status_of(call(f, msg)), KMIP_RESULT_STATUS_OPERATION_FAILED);
}

/* The server's Digest and RNG are read-only: a client may not give or change them. */
static void server_attributes_are_read_only(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    create_v1(f, "VENDOR", 128, NULL, NULL, NULL, uid);
    kf_ttlv *p, *msg = single(f, 1, KMIP_OP_MODIFY_ATTRIBUTE, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv_add_bool(f->a, v1_attr(f, p, "Fresh"), KMIP_TAG_ATTRIBUTE_VALUE, false);
    expect_fail(call(f, msg), KMIP_REASON_PERMISSION_DENIED);
    kf_ttlv *ta;
    msg = v1_aes_create(f, 128, &ta);
    kf_ttlv *rv = kf_ttlv_struct(f->a, v1_attr(f, ta, "Random Number Generator"),
                                 KMIP_TAG_ATTRIBUTE_VALUE);
    kf_ttlv_add_enum(f->a, rv, KMIP_TAG_RNG_ALGORITHM, KMIP_RNG_ALGORITHM_ANSIX9_31);
    expect_fail(call(f, msg), KMIP_REASON_PERMISSION_DENIED);
}

static const kf_ttlv *link_of(const kf_ttlv *p, uint32_t type)
{
    for (int i = 0;; i++) {
        const kf_ttlv *l = v1_value(p, "Link", i);
        if (!l)
            return NULL;
        uint32_t t = 0;
        if (kf_ttlv_get_enum(kf_ttlv_find(l, KMIP_TAG_LINK_TYPE), &t) == KF_OK && t == type)
            return kf_ttlv_find(l, KMIP_TAG_LINKED_OBJECT_IDENTIFIER);
    }
}

static void link_pair_links_both_halves(void **state)
{
    struct fixture *f = *state;
    char priv[KF_UID_MAX], pub[KF_UID_MAX];
    create_v1(f, "VENDOR", 128, NULL, NULL, NULL, priv);
    create_v1(f, "VENDOR", 128, NULL, NULL, NULL, pub);
    assert_int_equal(kms_link_pair(f->kms, "test", priv, pub), KF_OK);
    assert_int_equal(kms_link_pair(f->kms, "test", priv, pub), KF_OK); /* idempotent */
    const kf_ttlv *p = get_attributes_v1(f, priv, "Link");
    assert_int_equal(v1_count(p, "Link"), 1);
    assert_true(kf_ttlv_text_equals(link_of(p, KMIP_LINK_PUBLIC_KEY_LINK), pub));
    p = get_attributes_v1(f, pub, "Link");
    assert_int_equal(v1_count(p, "Link"), 1);
    assert_true(kf_ttlv_text_equals(link_of(p, KMIP_LINK_PRIVATE_KEY_LINK), priv));
    assert_int_equal(kms_link_pair(f->kms, "test", priv, "VENDOR/99"), KF_ERR_OBJECT);
    assert_int_equal(kms_link_pair(f->kms, "test", priv, priv), KF_ERR_ARG);
    assert_int_equal(kms_link_pair(f->kms, "test", NULL, pub), KF_ERR_ARG);
}

/* SASED-M-1 / TL-M-1: Query Server Information answers Vendor Identification and Server Information. */
static void query_server_information(void **state)
{
    struct fixture *f = *state;
    kf_ttlv *p, *msg = single(f, 1, KMIP_OP_QUERY, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_QUERY_FUNCTION, KMIP_QUERY_QUERY_SERVER_INFORMATION);
    const kf_ttlv *item = call(f, msg);
    expect_ok(item);
    assert_non_null(kf_ttlv_find(payload_of(item), KMIP_TAG_VENDOR_IDENTIFICATION));
    const kf_ttlv *si = kf_ttlv_find(payload_of(item), KMIP_TAG_SERVER_INFORMATION);
    assert_non_null(si);
    assert_int_equal(si->type, KF_TTLV_STRUCTURE);
    /* Without the function: neither. */
    msg = single(f, 1, KMIP_OP_QUERY, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_QUERY_FUNCTION, KMIP_QUERY_QUERY_OPERATIONS);
    item = call(f, msg);
    expect_ok(item);
    assert_null(kf_ttlv_find(payload_of(item), KMIP_TAG_SERVER_INFORMATION));
}

/* KMIP 1.4 Register of an AES-256 key with given bytes; activated. */
static void register_aes(struct fixture *f, const char *hex, uint32_t usage, char uid[KF_UID_MAX])
{
    uint8_t key[32];
    hex_to(hex, key, sizeof(key));
    kf_ttlv *p, *msg = single(f, 1, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
    kf_ttlv *ta = kf_ttlv_struct(f->a, p, KMIP_TAG_TEMPLATE_ATTRIBUTE);
    kf_ttlv_add_int(f->a, v1_attr(f, ta, "Cryptographic Usage Mask"), KMIP_TAG_ATTRIBUTE_VALUE,
                    (int32_t)usage);
    v1_text_attr(f, ta, "x-keyfleet-domain", "VENDOR");
    kf_ttlv *kb = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_SYMMETRIC_KEY),
                                 KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_RAW);
    kf_ttlv_add_bytes(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL,
                      key, sizeof(key));
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
    kf_ttlv_add_int(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 256);
    expect_uid(f, msg, uid);
    assert_int_equal(kf_kms_activate(f->kms, "test", uid), KF_OK);
}

static const kf_ttlv *get_wrapped(struct fixture *f, const char *uid, const char *kek,
                                  uint32_t method, uint32_t mode, bool no_encoding)
{
    kf_ttlv *p, *msg = single(f, 1, KMIP_OP_GET, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    kf_ttlv *kws = kf_ttlv_struct(f->a, p, KMIP_TAG_KEY_WRAPPING_SPECIFICATION);
    kf_ttlv_add_enum(f->a, kws, KMIP_TAG_WRAPPING_METHOD, method);
    kf_ttlv *eki = kf_ttlv_struct(f->a, kws, KMIP_TAG_ENCRYPTION_KEY_INFORMATION);
    kf_ttlv_add_text(f->a, eki, KMIP_TAG_UNIQUE_IDENTIFIER, kek);
    kf_ttlv_add_enum(f->a, kf_ttlv_struct(f->a, eki, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS),
                     KMIP_TAG_BLOCK_CIPHER_MODE, mode);
    if (no_encoding)
        kf_ttlv_add_enum(f->a, kws, KMIP_TAG_ENCODING_OPTION, KMIP_ENCODING_OPTION_NO_ENCODING);
    return call(f, msg);
}

/* RFC 3394 §4.6: 256-bit key data wrapped with a 256-bit KEK (Encoding Option No Encoding:
 * only the Key Material is wrapped). AX-M-2's form: Key Value as a Byte String plus Key
 * Wrapping Data echoing the Encryption Key Information. */
static void get_with_key_wrapping_specification(void **state)
{
    struct fixture *f = *state;
    char kek[KF_UID_MAX], key[KF_UID_MAX], nowrap[KF_UID_MAX];
    register_aes(f, "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                 KMIP_USAGE_WRAP_KEY, kek);
    register_aes(f, "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
                 KMIP_USAGE_ENCRYPT, key);
    register_aes(f, "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                 KMIP_USAGE_ENCRYPT, nowrap);
    const kf_ttlv *item =
        get_wrapped(f, key, kek, KMIP_WRAPPING_METHOD_ENCRYPT, KMIP_MODE_NIST_KEY_WRAP, true);
    expect_ok(item);
    const kf_ttlv *kb =
        kf_ttlv_find(kf_ttlv_find(payload_of(item), KMIP_TAG_SYMMETRIC_KEY), KMIP_TAG_KEY_BLOCK);
    const kf_ttlv *kv = kf_ttlv_find(kb, KMIP_TAG_KEY_VALUE);
    assert_non_null(kv);
    assert_int_equal(kv->type, KF_TTLV_BYTES);
    uint8_t want[40];
    hex_to("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21",
           want, sizeof(want));
    assert_int_equal(kv->v.bytes.len, 40);
    assert_memory_equal(kv->v.bytes.p, want, 40);
    const kf_ttlv *kwd = kf_ttlv_find(kb, KMIP_TAG_KEY_WRAPPING_DATA);
    uint32_t m = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(kwd, KMIP_TAG_WRAPPING_METHOD), &m), KF_OK);
    assert_int_equal(m, KMIP_WRAPPING_METHOD_ENCRYPT);
    assert_true(kf_ttlv_text_equals(
        kf_ttlv_find(kf_ttlv_find(kwd, KMIP_TAG_ENCRYPTION_KEY_INFORMATION),
                     KMIP_TAG_UNIQUE_IDENTIFIER),
        kek));

    /* TTLV encoding (the default): the wrapped Key Value structure, 48 bytes + 8. */
    item = get_wrapped(f, key, kek, KMIP_WRAPPING_METHOD_ENCRYPT, KMIP_MODE_NIST_KEY_WRAP, false);
    expect_ok(item);
    kv = kf_ttlv_find(kf_ttlv_find(kf_ttlv_find(payload_of(item), KMIP_TAG_SYMMETRIC_KEY),
                                   KMIP_TAG_KEY_BLOCK),
                      KMIP_TAG_KEY_VALUE);
    assert_int_equal(kv->type, KF_TTLV_BYTES);
    assert_int_equal(kv->v.bytes.len, 56);

    /* Refusals: a KEK without Wrap Key usage, an unknown KEK, MAC/sign, another mode. */
    expect_fail(get_wrapped(f, key, nowrap, KMIP_WRAPPING_METHOD_ENCRYPT,
                            KMIP_MODE_NIST_KEY_WRAP, false),
                KMIP_REASON_PERMISSION_DENIED);
    item = get_wrapped(f, key, "VENDOR/99", KMIP_WRAPPING_METHOD_ENCRYPT,
                       KMIP_MODE_NIST_KEY_WRAP, false);
    assert_int_equal(status_of(item), KMIP_RESULT_STATUS_OPERATION_FAILED);
    expect_fail(get_wrapped(f, key, kek, KMIP_WRAPPING_METHOD_MAC_SIGN, KMIP_MODE_NIST_KEY_WRAP,
                            false),
                KMIP_REASON_FEATURE_NOT_SUPPORTED);
    expect_fail(get_wrapped(f, key, kek, KMIP_WRAPPING_METHOD_ENCRYPT, KMIP_MODE_CBC, false),
                KMIP_REASON_FEATURE_NOT_SUPPORTED);
}

int main(void)
{
    kf_log_open(NULL, KF_LOG_ERROR);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(v1_create_stores_attributes_and_get_attributes_returns_them),
        T(v2_create_and_get_attributes_by_reference),
        T(get_attribute_list_in_both_forms),
        T(v1_add_modify_delete_with_index),
        T(v2_add_modify_set_delete),
        T(read_only_attributes_are_refused),
        T(activation_date_in_the_past_activates_and_persists),
        T(create_with_past_activation_date_is_active),
        T(usage_limits_are_stored_and_consumed),
        T(locate_filters_and_pages),
        T(batch_with_id_placeholder),
        T(batch_stop_continue_undo),
        T(maximum_response_size),
        T(v1_and_v2_forms_convert_both_ways),
        T(digest_attribute_known_answer),
        T(register_sets_digest_of_material),
        T(create_sets_server_attributes),
        T(server_attributes_are_read_only),
        T(get_clears_fresh),
        T(link_pair_links_both_halves),
        T(query_server_information),
        T(get_with_key_wrapping_specification),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
