/*
 * Shared by test_kms_crypto.c and test_kms_keys.c: the service and KMIP
 * helpers of kms_ops_fixture.h with a VENDOR domain only, attribute and key
 * registration builders; the published RSA vectors come from vectors_rsa.h.
 * Each test program uses a subset, hence KF_TEST_UNUSED.
 */
#ifndef KF_TEST_KMS_CRYPTO_FIXTURE_H
#define KF_TEST_KMS_CRYPTO_FIXTURE_H

#define KF_TEST_NAME "kmsc"
#define KF_TEST_VENDOR_ONLY
#include "kms_ops_fixture.h"
#include "vectors_rsa.h"

static KF_TEST_UNUSED void assert_bytes(const kf_ttlv *parent, uint32_t tag, const uint8_t *want, size_t len)
{
    const uint8_t *p;
    size_t n;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(parent, tag), &p, &n), KF_OK);
    assert_int_equal(n, len);
    assert_memory_equal(p, want, len);
}

/* One attribute, in the 1.x (Template-Attribute) or 2.x (Attributes) form. */
static KF_TEST_UNUSED kf_ttlv *attr_group(struct fixture *f, kf_ttlv *p, int major, uint32_t v1_tag,
                           uint32_t v2_tag)
{
    return kf_ttlv_struct(f->a, p, major == 1 ? v1_tag : v2_tag);
}

static KF_TEST_UNUSED void add_attr_enum(struct fixture *f, kf_ttlv *g, int major, const char *name, uint32_t tag,
                          uint32_t v)
{
    if (major >= 2) {
        kf_ttlv_add_enum(f->a, g, tag, v);
        return;
    }
    kf_ttlv *at = kf_ttlv_struct(f->a, g, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_NAME, name);
    kf_ttlv_add_enum(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE, v);
}

static KF_TEST_UNUSED void add_attr_int(struct fixture *f, kf_ttlv *g, int major, const char *name, uint32_t tag,
                         int32_t v)
{
    if (major >= 2) {
        kf_ttlv_add_int(f->a, g, tag, v);
        return;
    }
    kf_ttlv *at = kf_ttlv_struct(f->a, g, KMIP_TAG_ATTRIBUTE);
    kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_NAME, name);
    kf_ttlv_add_int(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE, v);
}

/*
 * Register a key (symmetric, private or public) with algorithm and usage
 * mask, in protocol major; activate it when asked. uid receives the UID.
 */
static KF_TEST_UNUSED void register_key(struct fixture *f, int major, uint32_t type, uint32_t format,
                         const uint8_t *key, size_t len, uint32_t alg, uint32_t usage,
                         bool activate, char uid[KF_UID_MAX])
{
    kf_ttlv *p, *msg = request(f, major, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, type);
    kf_ttlv *g = attr_group(f, p, major, KMIP_TAG_TEMPLATE_ATTRIBUTE, KMIP_TAG_ATTRIBUTES);
    add_attr_enum(f, g, major, "Cryptographic Algorithm", KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, alg);
    add_attr_int(f, g, major, "Cryptographic Usage Mask", KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK,
                 (int32_t)usage);
    uint32_t tag = type == KMIP_OBJ_SYMMETRIC_KEY ? KMIP_TAG_SYMMETRIC_KEY
                   : type == KMIP_OBJ_PRIVATE_KEY ? KMIP_TAG_PRIVATE_KEY
                                                  : KMIP_TAG_PUBLIC_KEY;
    kf_ttlv *o = kf_ttlv_struct(f->a, p, tag);
    kf_ttlv *kb = kf_ttlv_struct(f->a, o, KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, format);
    kf_ttlv *kv = kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE);
    kf_ttlv_add_bytes(f->a, kv, KMIP_TAG_KEY_MATERIAL, key, len);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, alg);
    copy_uid(expect_success(f, msg), KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    if (activate)
        uid_op(f, major, KMIP_OP_ACTIVATE, uid);
}

#endif
