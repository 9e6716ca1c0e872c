/*
 * KMIP Register and the object values Get returns (kmip_put_object_value),
 * and the key encodings behind them (keys.c). Known answers are published
 * encodings: RFC 8410 10.1/10.3 (Ed25519 SubjectPublicKeyInfo and PKCS#8),
 * the oaep-int.txt RSA key in PKCS#1 and, wrapped per RFC 5208 / RFC 5280,
 * in PKCS#8 / SubjectPublicKeyInfo, RFC 6979 A.2.5's P-256 key in RFC 5480 /
 * RFC 5915 form, SP 800-38A F.2.5 for parameters stored at Register.
 * Every refusal path of Register has a test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "keyfleet/ttlv.h"
#include "kms/kmip_internal.h"

struct fixture {
    char dir[64];
    kf_kms *kms;
    kf_arena *a;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/kf-test-kmsc.XXXXXX");
    if (!f || !mkdtemp(f->dir))
        return -1;
    struct kf_kms_config cfg = {.dir = f->dir, .dev = true};
    if (kf_kms_open(&cfg, &f->kms) < 0 || kf_kms_domain_create(f->kms, "test", "VENDOR", NULL) < 0 ||
        kf_arena_new(&f->a, 0) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kf_arena_free(f->a);
    kf_kms_close(f->kms);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* Hex to bytes in the fixture's arena. */
static uint8_t *unhex(struct fixture *f, const char *hex, size_t *len)
{
    size_t n = strlen(hex) / 2;
    uint8_t *out = kf_arena_alloc(f->a, n + 1);
    assert_non_null(out);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    if (len)
        *len = n;
    return out;
}

static kf_ttlv *request(struct fixture *f, int major, uint32_t op, kf_ttlv **payload)
{
    kf_arena *a = f->a;
    kf_ttlv *msg = kf_ttlv_struct(a, NULL, KMIP_TAG_REQUEST_MESSAGE);
    kf_ttlv *h = kf_ttlv_struct(a, msg, KMIP_TAG_REQUEST_HEADER);
    kf_ttlv *pv = kf_ttlv_struct(a, h, KMIP_TAG_PROTOCOL_VERSION);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MAJOR, major);
    kf_ttlv_add_int(a, pv, KMIP_TAG_PROTOCOL_VERSION_MINOR, major == 1 ? 4 : 1);
    kf_ttlv_add_int(a, h, KMIP_TAG_BATCH_COUNT, 1);
    kf_ttlv *bi = kf_ttlv_struct(a, msg, KMIP_TAG_BATCH_ITEM);
    kf_ttlv_add_enum(a, bi, KMIP_TAG_OPERATION, op);
    *payload = kf_ttlv_struct(a, bi, KMIP_TAG_REQUEST_PAYLOAD);
    return msg;
}

/* Send msg; returns the Result Status, *item the response batch item. */
static uint32_t send_request(struct fixture *f, kf_ttlv *msg, const kf_ttlv **item)
{
    kf_buf req, resp;
    kf_ttlv *r;
    assert_int_equal(kf_buf_alloc(&req, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&resp, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(msg, &req), KF_OK);
    struct kf_principal who;
    kf_principal_local_admin(&who, "test");
    snprintf(who.default_domain, sizeof(who.default_domain), "VENDOR");
    assert_int_equal(kf_kms_handle_kmip(f->kms, &who, req.data, req.len, &resp), KF_OK);
    assert_int_equal(kf_ttlv_decode(resp.data, resp.len, NULL, f->a, &r), KF_OK);
    *item = kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM);
    uint32_t status = 99;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(*item, KMIP_TAG_RESULT_STATUS), &status), KF_OK);
    kf_buf_free(&req);
    kf_buf_free(&resp);
    return status;
}

/* The response payload of a request that must succeed. */
static const kf_ttlv *expect_success(struct fixture *f, kf_ttlv *msg)
{
    const kf_ttlv *item;
    uint32_t st = send_request(f, msg, &item);
    if (st != KMIP_RESULT_STATUS_SUCCESS) {
        const char *m = "";
        size_t n;
        if (kf_ttlv_get_text(kf_ttlv_find(item, KMIP_TAG_RESULT_MESSAGE), &m, &n) < 0)
            m = "(no message)";
        fail_msg("request failed: %s", m);
    }
    return kf_ttlv_find(item, KMIP_TAG_RESPONSE_PAYLOAD);
}

/* The Result Reason of a request that must fail. */
static uint32_t expect_failure(struct fixture *f, kf_ttlv *msg)
{
    const kf_ttlv *item;
    assert_int_equal(send_request(f, msg, &item), KMIP_RESULT_STATUS_OPERATION_FAILED);
    uint32_t reason = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(item, KMIP_TAG_RESULT_REASON), &reason), KF_OK);
    return reason;
}

static void assert_bytes(const kf_ttlv *parent, uint32_t tag, const uint8_t *want, size_t len)
{
    const uint8_t *p;
    size_t n;
    assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(parent, tag), &p, &n), KF_OK);
    assert_int_equal(n, len);
    assert_memory_equal(p, want, len);
}

/* One attribute, in the 1.x (Template-Attribute) or 2.x (Attributes) form. */
static kf_ttlv *attr_group(struct fixture *f, kf_ttlv *p, int major, uint32_t v1_tag,
                           uint32_t v2_tag)
{
    return kf_ttlv_struct(f->a, p, major == 1 ? v1_tag : v2_tag);
}

static void add_attr_enum(struct fixture *f, kf_ttlv *g, int major, const char *name, uint32_t tag,
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

static void add_attr_int(struct fixture *f, kf_ttlv *g, int major, const char *name, uint32_t tag,
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

static void uid_request(struct fixture *f, int major, uint32_t op, const char *uid)
{
    kf_ttlv *p, *msg = request(f, major, op, &p);
    kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
    expect_success(f, msg);
}

/*
 * Register a key (symmetric, private or public) with algorithm and usage
 * mask, in protocol major; activate it when asked. uid receives the UID.
 */
static void register_key(struct fixture *f, int major, uint32_t type, uint32_t format,
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
    const kf_ttlv *r = expect_success(f, msg);
    const char *s;
    size_t n;
    assert_int_equal(kf_ttlv_get_text(kf_ttlv_find(r, KMIP_TAG_UNIQUE_IDENTIFIER), &s, &n), KF_OK);
    assert_true(n < KF_UID_MAX);
    memcpy(uid, s, n + 1);
    if (activate)
        uid_request(f, major, KMIP_OP_ACTIVATE, uid);
}

/* ---- oaep-int.txt RSA key (copied from test_crypto_rsa.c) ---- */
/* oaep-int.txt: RSAPublicKey (DER) */
static const uint8_t oaep_pub_der[138] = {
    0x30, 0x81, 0x87, 0x02, 0x81, 0x81, 0x00, 0xbb, 0xf8, 0x2f, 0x09, 0x06,
    0x82, 0xce, 0x9c, 0x23, 0x38, 0xac, 0x2b, 0x9d, 0xa8, 0x71, 0xf7, 0x36,
    0x8d, 0x07, 0xee, 0xd4, 0x10, 0x43, 0xa4, 0x40, 0xd6, 0xb6, 0xf0, 0x74,
    0x54, 0xf5, 0x1f, 0xb8, 0xdf, 0xba, 0xaf, 0x03, 0x5c, 0x02, 0xab, 0x61,
    0xea, 0x48, 0xce, 0xeb, 0x6f, 0xcd, 0x48, 0x76, 0xed, 0x52, 0x0d, 0x60,
    0xe1, 0xec, 0x46, 0x19, 0x71, 0x9d, 0x8a, 0x5b, 0x8b, 0x80, 0x7f, 0xaf,
    0xb8, 0xe0, 0xa3, 0xdf, 0xc7, 0x37, 0x72, 0x3e, 0xe6, 0xb4, 0xb7, 0xd9,
    0x3a, 0x25, 0x84, 0xee, 0x6a, 0x64, 0x9d, 0x06, 0x09, 0x53, 0x74, 0x88,
    0x34, 0xb2, 0x45, 0x45, 0x98, 0x39, 0x4e, 0xe0, 0xaa, 0xb1, 0x2d, 0x7b,
    0x61, 0xa5, 0x1f, 0x52, 0x7a, 0x9a, 0x41, 0xf6, 0xc1, 0x68, 0x7f, 0xe2,
    0x53, 0x72, 0x98, 0xca, 0x2a, 0x8f, 0x59, 0x46, 0xf8, 0xe5, 0xfd, 0x09,
    0x1d, 0xbd, 0xcb, 0x02, 0x01, 0x11,
};
/* oaep-int.txt: RSAPrivateKey (DER) */
static const uint8_t oaep_priv_der[607] = {
    0x30, 0x82, 0x02, 0x5b, 0x02, 0x01, 0x00, 0x02, 0x81, 0x81, 0x00, 0xbb,
    0xf8, 0x2f, 0x09, 0x06, 0x82, 0xce, 0x9c, 0x23, 0x38, 0xac, 0x2b, 0x9d,
    0xa8, 0x71, 0xf7, 0x36, 0x8d, 0x07, 0xee, 0xd4, 0x10, 0x43, 0xa4, 0x40,
    0xd6, 0xb6, 0xf0, 0x74, 0x54, 0xf5, 0x1f, 0xb8, 0xdf, 0xba, 0xaf, 0x03,
    0x5c, 0x02, 0xab, 0x61, 0xea, 0x48, 0xce, 0xeb, 0x6f, 0xcd, 0x48, 0x76,
    0xed, 0x52, 0x0d, 0x60, 0xe1, 0xec, 0x46, 0x19, 0x71, 0x9d, 0x8a, 0x5b,
    0x8b, 0x80, 0x7f, 0xaf, 0xb8, 0xe0, 0xa3, 0xdf, 0xc7, 0x37, 0x72, 0x3e,
    0xe6, 0xb4, 0xb7, 0xd9, 0x3a, 0x25, 0x84, 0xee, 0x6a, 0x64, 0x9d, 0x06,
    0x09, 0x53, 0x74, 0x88, 0x34, 0xb2, 0x45, 0x45, 0x98, 0x39, 0x4e, 0xe0,
    0xaa, 0xb1, 0x2d, 0x7b, 0x61, 0xa5, 0x1f, 0x52, 0x7a, 0x9a, 0x41, 0xf6,
    0xc1, 0x68, 0x7f, 0xe2, 0x53, 0x72, 0x98, 0xca, 0x2a, 0x8f, 0x59, 0x46,
    0xf8, 0xe5, 0xfd, 0x09, 0x1d, 0xbd, 0xcb, 0x02, 0x01, 0x11, 0x02, 0x81,
    0x81, 0x00, 0xa5, 0xda, 0xfc, 0x53, 0x41, 0xfa, 0xf2, 0x89, 0xc4, 0xb9,
    0x88, 0xdb, 0x30, 0xc1, 0xcd, 0xf8, 0x3f, 0x31, 0x25, 0x1e, 0x06, 0x68,
    0xb4, 0x27, 0x84, 0x81, 0x38, 0x01, 0x57, 0x96, 0x41, 0xb2, 0x94, 0x10,
    0xb3, 0xc7, 0x99, 0x8d, 0x6b, 0xc4, 0x65, 0x74, 0x5e, 0x5c, 0x39, 0x26,
    0x69, 0xd6, 0x87, 0x0d, 0xa2, 0xc0, 0x82, 0xa9, 0x39, 0xe3, 0x7f, 0xdc,
    0xb8, 0x2e, 0xc9, 0x3e, 0xda, 0xc9, 0x7f, 0xf3, 0xad, 0x59, 0x50, 0xac,
    0xcf, 0xbc, 0x11, 0x1c, 0x76, 0xf1, 0xa9, 0x52, 0x94, 0x44, 0xe5, 0x6a,
    0xaf, 0x68, 0xc5, 0x6c, 0x09, 0x2c, 0xd3, 0x8d, 0xc3, 0xbe, 0xf5, 0xd2,
    0x0a, 0x93, 0x99, 0x26, 0xed, 0x4f, 0x74, 0xa1, 0x3e, 0xdd, 0xfb, 0xe1,
    0xa1, 0xce, 0xcc, 0x48, 0x94, 0xaf, 0x94, 0x28, 0xc2, 0xb7, 0xb8, 0x88,
    0x3f, 0xe4, 0x46, 0x3a, 0x4b, 0xc8, 0x5b, 0x1c, 0xb3, 0xc1, 0x02, 0x41,
    0x00, 0xee, 0xcf, 0xae, 0x81, 0xb1, 0xb9, 0xb3, 0xc9, 0x08, 0x81, 0x0b,
    0x10, 0xa1, 0xb5, 0x60, 0x01, 0x99, 0xeb, 0x9f, 0x44, 0xae, 0xf4, 0xfd,
    0xa4, 0x93, 0xb8, 0x1a, 0x9e, 0x3d, 0x84, 0xf6, 0x32, 0x12, 0x4e, 0xf0,
    0x23, 0x6e, 0x5d, 0x1e, 0x3b, 0x7e, 0x28, 0xfa, 0xe7, 0xaa, 0x04, 0x0a,
    0x2d, 0x5b, 0x25, 0x21, 0x76, 0x45, 0x9d, 0x1f, 0x39, 0x75, 0x41, 0xba,
    0x2a, 0x58, 0xfb, 0x65, 0x99, 0x02, 0x41, 0x00, 0xc9, 0x7f, 0xb1, 0xf0,
    0x27, 0xf4, 0x53, 0xf6, 0x34, 0x12, 0x33, 0xea, 0xaa, 0xd1, 0xd9, 0x35,
    0x3f, 0x6c, 0x42, 0xd0, 0x88, 0x66, 0xb1, 0xd0, 0x5a, 0x0f, 0x20, 0x35,
    0x02, 0x8b, 0x9d, 0x86, 0x98, 0x40, 0xb4, 0x16, 0x66, 0xb4, 0x2e, 0x92,
    0xea, 0x0d, 0xa3, 0xb4, 0x32, 0x04, 0xb5, 0xcf, 0xce, 0x33, 0x52, 0x52,
    0x4d, 0x04, 0x16, 0xa5, 0xa4, 0x41, 0xe7, 0x00, 0xaf, 0x46, 0x15, 0x03,
    0x02, 0x40, 0x54, 0x49, 0x4c, 0xa6, 0x3e, 0xba, 0x03, 0x37, 0xe4, 0xe2,
    0x40, 0x23, 0xfc, 0xd6, 0x9a, 0x5a, 0xeb, 0x07, 0xdd, 0xdc, 0x01, 0x83,
    0xa4, 0xd0, 0xac, 0x9b, 0x54, 0xb0, 0x51, 0xf2, 0xb1, 0x3e, 0xd9, 0x49,
    0x09, 0x75, 0xea, 0xb7, 0x74, 0x14, 0xff, 0x59, 0xc1, 0xf7, 0x69, 0x2e,
    0x9a, 0x2e, 0x20, 0x2b, 0x38, 0xfc, 0x91, 0x0a, 0x47, 0x41, 0x74, 0xad,
    0xc9, 0x3c, 0x1f, 0x67, 0xc9, 0x81, 0x02, 0x40, 0x47, 0x1e, 0x02, 0x90,
    0xff, 0x0a, 0xf0, 0x75, 0x03, 0x51, 0xb7, 0xf8, 0x78, 0x86, 0x4c, 0xa9,
    0x61, 0xad, 0xbd, 0x3a, 0x8a, 0x7e, 0x99, 0x1c, 0x5c, 0x05, 0x56, 0xa9,
    0x4c, 0x31, 0x46, 0xa7, 0xf9, 0x80, 0x3f, 0x8f, 0x6f, 0x8a, 0xe3, 0x42,
    0xe9, 0x31, 0xfd, 0x8a, 0xe4, 0x7a, 0x22, 0x0d, 0x1b, 0x99, 0xa4, 0x95,
    0x84, 0x98, 0x07, 0xfe, 0x39, 0xf9, 0x24, 0x5a, 0x98, 0x36, 0xda, 0x3d,
    0x02, 0x41, 0x00, 0xb0, 0x6c, 0x4f, 0xda, 0xbb, 0x63, 0x01, 0x19, 0x8d,
    0x26, 0x5b, 0xdb, 0xae, 0x94, 0x23, 0xb3, 0x80, 0xf2, 0x71, 0xf7, 0x34,
    0x53, 0x88, 0x50, 0x93, 0x07, 0x7f, 0xcd, 0x39, 0xe2, 0x11, 0x9f, 0xc9,
    0x86, 0x32, 0x15, 0x4f, 0x58, 0x83, 0xb1, 0x67, 0xa9, 0x67, 0xbf, 0x40,
    0x2b, 0x4e, 0x9e, 0x2e, 0x0f, 0x96, 0x56, 0xe6, 0x98, 0xea, 0x36, 0x66,
    0xed, 0xfb, 0x25, 0x79, 0x80, 0x39, 0xf7,
};

/* The object value Get would return for uid, in format (0 = stored), or the refusal. */
static int get_value(struct fixture *f, const char *uid, uint32_t format, const kf_ttlv **object)
{
    struct kf_object obj = {0};
    kf_buf m;
    assert_int_equal(kf_buf_alloc(&m, 64, 16384, KF_BUF_SECRET), KF_OK);
    assert_int_equal(kf_kms_get(f->kms, "test", uid, &obj, &m), KF_OK);
    struct kf_principal who;
    kf_principal_local_admin(&who, "test");
    struct kmip_call c = {.kms = f->kms, .who = &who, .actor = "test", .major = 2, .minor = 1,
                          .arena = f->a};
    c.resp = kf_ttlv_struct(f->a, NULL, KMIP_TAG_RESPONSE_PAYLOAD);
    int rc = kmip_put_object_value(&c, &obj, m.data, m.len, format);
    *object = c.resp->child;
    kf_buf_free(&m);
    kf_object_clear(&obj);
    return rc;
}

/* Key Material of the object's Key Block (a Byte String, or the Key of a Transparent Symmetric Key). */
static void assert_key_material(const kf_ttlv *object, uint32_t format, const uint8_t *want,
                                size_t len)
{
    const kf_ttlv *kb = kf_ttlv_find(object, KMIP_TAG_KEY_BLOCK);
    uint32_t got = 0;
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(kb, KMIP_TAG_KEY_FORMAT_TYPE), &got), KF_OK);
    assert_int_equal(got, format);
    const kf_ttlv *km = KF_TTLV_PATH(kb, KMIP_TAG_KEY_VALUE, KMIP_TAG_KEY_MATERIAL);
    if (format == KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY)
        assert_bytes(km, KMIP_TAG_KEY, want, len);
    else
        assert_bytes(kf_ttlv_find(kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL, want, len);
}

/* RFC 8410 10.3 (PKCS#8 Ed25519 private key) and 10.1 (its SubjectPublicKeyInfo). */
#define RFC8410_PRIV_PKCS8 "302e020100300506032b657004220420d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842"
#define RFC8410_SEED "d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842"
#define RFC8410_SPKI "302a300506032b657003210019bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
#define RFC8410_PUB "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"

static void ed25519_pkcs8_and_spki_rfc8410(void **state)
{
    struct fixture *f = *state;
    char priv[KF_UID_MAX], pub[KF_UID_MAX];
    size_t plen, slen, spki_len, publen;
    uint8_t *pkcs8 = unhex(f, RFC8410_PRIV_PKCS8, &plen), *seed = unhex(f, RFC8410_SEED, &slen);
    uint8_t *spki = unhex(f, RFC8410_SPKI, &spki_len), *point = unhex(f, RFC8410_PUB, &publen);
    register_key(f, 2, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_PKCS_8, pkcs8, plen, KMIP_ALG_ED25519,
                 KMIP_USAGE_SIGN, false, priv);
    register_key(f, 1, KMIP_OBJ_PUBLIC_KEY, KMIP_KEYFMT_X_509, spki, spki_len, KMIP_ALG_ED25519,
                 KMIP_USAGE_VERIFY, false, pub);
    const kf_ttlv *o;
    assert_int_equal(get_value(f, priv, 0, &o), KF_OK);
    assert_int_equal(o->tag, KMIP_TAG_PRIVATE_KEY);
    assert_key_material(o, KMIP_KEYFMT_RAW, seed, slen);
    assert_int_equal(get_value(f, priv, KMIP_KEYFMT_PKCS_8, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_PKCS_8, pkcs8, plen);
    assert_int_equal(get_value(f, priv, KMIP_KEYFMT_PKCS_1, &o), KF_ERR_KEY_FORMAT);
    assert_int_equal(get_value(f, pub, 0, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_RAW, point, publen);
    assert_int_equal(get_value(f, pub, KMIP_KEYFMT_X_509, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_X_509, spki, spki_len);
    /* The two RFC examples are one key pair. */
    uint8_t derived[32];
    assert_int_equal(kf_ed25519_public(seed, derived), KF_OK);
    assert_memory_equal(derived, point, 32);
    struct kf_object obj = {0};
    assert_int_equal(kf_kms_get(f->kms, "t", priv, &obj, NULL), KF_OK);
    assert_int_equal(obj.crypto_alg, KMIP_ALG_ED25519);
    assert_int_equal(obj.crypto_length, 256);
    kf_object_clear(&obj);
}

/* PKCS#8 PrivateKeyInfo (RFC 5208) and SubjectPublicKeyInfo (RFC 5280) around the oaep-int.txt key. */
static const uint8_t pkcs8_rsa_prefix[] = {0x30, 0x82, 0x02, 0x75, 0x02, 0x01, 0x00, 0x30, 0x0d,
                                           0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
                                           0x01, 0x01, 0x05, 0x00, 0x04, 0x82, 0x02, 0x5f};
static const uint8_t spki_rsa_prefix[] = {0x30, 0x81, 0x9d, 0x30, 0x0d, 0x06, 0x09, 0x2a,
                                          0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
                                          0x05, 0x00, 0x03, 0x81, 0x8b, 0x00};

static void rsa_pkcs1_pkcs8_and_x509(void **state)
{
    struct fixture *f = *state;
    char priv[KF_UID_MAX], priv8[KF_UID_MAX], pub[KF_UID_MAX], pub509[KF_UID_MAX];
    uint8_t pkcs8[sizeof(pkcs8_rsa_prefix) + sizeof(oaep_priv_der)];
    uint8_t spki[sizeof(spki_rsa_prefix) + sizeof(oaep_pub_der)];
    memcpy(pkcs8, pkcs8_rsa_prefix, sizeof(pkcs8_rsa_prefix));
    memcpy(pkcs8 + sizeof(pkcs8_rsa_prefix), oaep_priv_der, sizeof(oaep_priv_der));
    memcpy(spki, spki_rsa_prefix, sizeof(spki_rsa_prefix));
    memcpy(spki + sizeof(spki_rsa_prefix), oaep_pub_der, sizeof(oaep_pub_der));

    register_key(f, 2, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_PKCS_1, oaep_priv_der,
                 sizeof(oaep_priv_der), KMIP_ALG_RSA, KMIP_USAGE_DECRYPT, false, priv);
    const kf_ttlv *o;
    assert_int_equal(get_value(f, priv, 0, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_PKCS_1, oaep_priv_der, sizeof(oaep_priv_der));
    assert_int_equal(get_value(f, priv, KMIP_KEYFMT_PKCS_8, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_PKCS_8, pkcs8, sizeof(pkcs8));
    assert_int_equal(get_value(f, priv, KMIP_KEYFMT_X_509, &o), KF_ERR_KEY_FORMAT);
    /* Registered as PKCS#8, it is stored (and returned) as the same PKCS#1 key. */
    register_key(f, 1, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_PKCS_8, pkcs8, sizeof(pkcs8), KMIP_ALG_RSA,
                 KMIP_USAGE_DECRYPT, false, priv8);
    assert_int_equal(get_value(f, priv8, KMIP_KEYFMT_PKCS_1, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_PKCS_1, oaep_priv_der, sizeof(oaep_priv_der));
    struct kf_object obj = {0};
    assert_int_equal(kf_kms_get(f->kms, "t", priv8, &obj, NULL), KF_OK);
    assert_int_equal(obj.crypto_length, 1024);
    kf_object_clear(&obj);

    register_key(f, 2, KMIP_OBJ_PUBLIC_KEY, KMIP_KEYFMT_PKCS_1, oaep_pub_der, sizeof(oaep_pub_der),
                 KMIP_ALG_RSA, KMIP_USAGE_ENCRYPT, false, pub);
    assert_int_equal(get_value(f, pub, KMIP_KEYFMT_X_509, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_X_509, spki, sizeof(spki));
    register_key(f, 2, KMIP_OBJ_PUBLIC_KEY, KMIP_KEYFMT_X_509, spki, sizeof(spki), KMIP_ALG_RSA,
                 KMIP_USAGE_ENCRYPT, false, pub509);
    assert_int_equal(get_value(f, pub509, 0, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_PKCS_1, oaep_pub_der, sizeof(oaep_pub_der));
    assert_int_equal(get_value(f, pub509, KMIP_KEYFMT_PKCS_8, &o), KF_ERR_KEY_FORMAT);
}

/* RFC 6979 A.2.5 P-256 key: RFC 5480 SubjectPublicKeyInfo, RFC 5915 ECPrivateKey, PKCS#8. */
#define RFC6979_X "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721"
#define RFC6979_POINT \
    "0460fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb67903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299"
#define P256_SPKI_PREFIX "3059301306072a8648ce3d020106082a8648ce3d030107034200"

static void p256_raw_pkcs8_rfc5915_and_x509(void **state)
{
    struct fixture *f = *state;
    char priv[KF_UID_MAX], again[KF_UID_MAX], pub[KF_UID_MAX], pub2[KF_UID_MAX];
    size_t xlen, qlen, plen;
    uint8_t *x = unhex(f, RFC6979_X, &xlen), *q = unhex(f, RFC6979_POINT, &qlen);
    uint8_t *prefix = unhex(f, P256_SPKI_PREFIX, &plen);
    register_key(f, 2, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_RAW, x, xlen, KMIP_ALG_ECDSA,
                 KMIP_USAGE_SIGN, false, priv);
    const kf_ttlv *o;
    const uint8_t *der;
    size_t n;
    assert_int_equal(get_value(f, priv, KMIP_KEYFMT_EC_PRIVATE_KEY, &o), KF_OK);
    assert_int_equal(kf_ttlv_get_bytes(KF_TTLV_PATH(o, KMIP_TAG_KEY_BLOCK, KMIP_TAG_KEY_VALUE,
                                                    KMIP_TAG_KEY_MATERIAL),
                                       &der, &n),
                     KF_OK);
    /* ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING (32), ... } */
    static const uint8_t ec_head[] = {0x02, 0x01, 0x01, 0x04, 0x20};
    assert_int_equal(n, 2 + 0x77);
    assert_true(der[0] == 0x30 && der[1] == 0x77);
    assert_memory_equal(der + 2, ec_head, sizeof(ec_head));
    assert_memory_equal(der + 2 + sizeof(ec_head), x, 32);
    assert_int_equal(get_value(f, priv, KMIP_KEYFMT_PKCS_8, &o), KF_OK);
    assert_int_equal(kf_ttlv_get_bytes(KF_TTLV_PATH(o, KMIP_TAG_KEY_BLOCK, KMIP_TAG_KEY_VALUE,
                                                    KMIP_TAG_KEY_MATERIAL),
                                       &der, &n),
                     KF_OK);
    uint8_t pkcs8[512];
    assert_true(n <= sizeof(pkcs8));
    memcpy(pkcs8, der, n);
    register_key(f, 1, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_PKCS_8, pkcs8, n, KMIP_ALG_EC,
                 KMIP_USAGE_SIGN, false, again);
    assert_int_equal(get_value(f, again, KMIP_KEYFMT_RAW, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_RAW, x, xlen);

    register_key(f, 2, KMIP_OBJ_PUBLIC_KEY, KMIP_KEYFMT_RAW, q, qlen, KMIP_ALG_ECDSA,
                 KMIP_USAGE_VERIFY, false, pub);
    assert_int_equal(get_value(f, pub, KMIP_KEYFMT_X_509, &o), KF_OK);
    uint8_t spki[91];
    memcpy(spki, prefix, plen);
    memcpy(spki + plen, q, qlen);
    assert_key_material(o, KMIP_KEYFMT_X_509, spki, sizeof(spki));
    register_key(f, 2, KMIP_OBJ_PUBLIC_KEY, KMIP_KEYFMT_X_509, spki, sizeof(spki), 0,
                 KMIP_USAGE_VERIFY, false, pub2);
    assert_int_equal(get_value(f, pub2, 0, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_RAW, q, qlen);

    /* A point off the curve, a zero scalar: Invalid Field / refused. */
    q[64] ^= 0x01;
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_PUBLIC_KEY);
    kf_ttlv *kb = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_PUBLIC_KEY), KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_RAW);
    kf_ttlv_add_bytes(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL, q, qlen);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_ECDSA);
    assert_int_equal(expect_failure(f, msg), KMIP_REASON_INVALID_FIELD);
}

/* A self-signed certificate to register (a fixture, not a known answer). */
static size_t make_certificate(uint8_t *out, size_t cap)
{
    gnutls_x509_privkey_t k;
    gnutls_x509_crt_t crt;
    gnutls_datum_t der = {0};
    unsigned char serial[] = {0x01};
    time_t now = time(NULL);
    assert_true(gnutls_x509_privkey_init(&k) >= 0);
    assert_true(gnutls_x509_privkey_generate(k, GNUTLS_PK_ECDSA,
                                             GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) >= 0);
    assert_true(gnutls_x509_crt_init(&crt) >= 0);
    assert_true(gnutls_x509_crt_set_version(crt, 3) >= 0);
    assert_true(gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)) >= 0);
    assert_true(gnutls_x509_crt_set_activation_time(crt, now) >= 0);
    assert_true(gnutls_x509_crt_set_expiration_time(crt, now + 3600) >= 0);
    assert_true(gnutls_x509_crt_set_dn(crt, "CN=keyfleet test", NULL) >= 0);
    assert_true(gnutls_x509_crt_set_key(crt, k) >= 0);
    assert_true(gnutls_x509_crt_sign2(crt, crt, k, GNUTLS_DIG_SHA256, 0) >= 0);
    assert_true(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &der) >= 0);
    assert_true(der.size <= cap);
    memcpy(out, der.data, der.size);
    size_t n = der.size;
    gnutls_free(der.data);
    gnutls_x509_crt_deinit(crt);
    gnutls_x509_privkey_deinit(k);
    return n;
}

static const char *register_simple(struct fixture *f, int major, kf_ttlv *msg, char uid[KF_UID_MAX])
{
    const kf_ttlv *r = expect_success(f, msg);
    const char *s;
    size_t n;
    assert_int_equal(kf_ttlv_get_text(kf_ttlv_find(r, KMIP_TAG_UNIQUE_IDENTIFIER), &s, &n), KF_OK);
    memcpy(uid, s, n + 1);
    (void)major;
    return uid;
}

/* Certificate, Secret Data and Opaque Object keep their type enumerations; Get returns them. */
static void certificate_secret_data_and_opaque(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    uint8_t cert[2048];
    size_t cert_len = make_certificate(cert, sizeof(cert));
    const kf_ttlv *o;
    uint32_t v;

    kf_ttlv *p, *msg = request(f, 1, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_CERTIFICATE);
    kf_ttlv *c = kf_ttlv_struct(f->a, p, KMIP_TAG_CERTIFICATE);
    kf_ttlv_add_enum(f->a, c, KMIP_TAG_CERTIFICATE_TYPE, KMIP_CERTIFICATE_TYPE_X_509);
    kf_ttlv_add_bytes(f->a, c, KMIP_TAG_CERTIFICATE_VALUE, cert, cert_len);
    register_simple(f, 1, msg, uid);
    assert_int_equal(get_value(f, uid, 0, &o), KF_OK);
    assert_int_equal(o->tag, KMIP_TAG_CERTIFICATE);
    assert_bytes(o, KMIP_TAG_CERTIFICATE_VALUE, cert, cert_len);
    assert_int_equal(get_value(f, uid, KMIP_KEYFMT_RAW, &o), KF_ERR_KEY_FORMAT);
    /* Not a certificate: Invalid Field. */
    cert[cert_len / 2] ^= 0xff;
    cert[1] ^= 0x7f;
    msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_CERTIFICATE);
    c = kf_ttlv_struct(f->a, p, KMIP_TAG_CERTIFICATE);
    kf_ttlv_add_enum(f->a, c, KMIP_TAG_CERTIFICATE_TYPE, KMIP_CERTIFICATE_TYPE_X_509);
    kf_ttlv_add_bytes(f->a, c, KMIP_TAG_CERTIFICATE_VALUE, cert, cert_len);
    assert_int_equal(expect_failure(f, msg), KMIP_REASON_INVALID_FIELD);
    /* PGP certificates are not taken. */
    msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_CERTIFICATE);
    c = kf_ttlv_struct(f->a, p, KMIP_TAG_CERTIFICATE);
    kf_ttlv_add_enum(f->a, c, KMIP_TAG_CERTIFICATE_TYPE, KMIP_CERTIFICATE_TYPE_PGP);
    kf_ttlv_add_bytes(f->a, c, KMIP_TAG_CERTIFICATE_VALUE, cert, cert_len);
    assert_int_equal(expect_failure(f, msg), KMIP_REASON_FEATURE_NOT_SUPPORTED);

    static const uint8_t password[] = "correct horse battery staple";
    msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SECRET_DATA);
    kf_ttlv *sd = kf_ttlv_struct(f->a, p, KMIP_TAG_SECRET_DATA);
    kf_ttlv_add_enum(f->a, sd, KMIP_TAG_SECRET_DATA_TYPE, KMIP_SECRET_PASSWORD);
    kf_ttlv *kb = kf_ttlv_struct(f->a, sd, KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_OPAQUE);
    kf_ttlv_add_bytes(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL,
                      password, sizeof(password));
    register_simple(f, 2, msg, uid);
    assert_int_equal(get_value(f, uid, 0, &o), KF_OK);
    assert_int_equal(o->tag, KMIP_TAG_SECRET_DATA);
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(o, KMIP_TAG_SECRET_DATA_TYPE), &v), KF_OK);
    assert_int_equal(v, KMIP_SECRET_PASSWORD);
    assert_key_material(o, KMIP_KEYFMT_OPAQUE, password, sizeof(password));
    assert_int_equal(get_value(f, uid, KMIP_KEYFMT_PKCS_8, &o), KF_ERR_KEY_FORMAT);

    static const uint8_t blob[] = {0xde, 0xad, 0xbe, 0xef};
    msg = request(f, 1, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_OPAQUE_OBJECT);
    kf_ttlv *op = kf_ttlv_struct(f->a, p, KMIP_TAG_OPAQUE_OBJECT);
    kf_ttlv_add_enum(f->a, op, KMIP_TAG_OPAQUE_DATA_TYPE, 0x80000010u);
    kf_ttlv_add_bytes(f->a, op, KMIP_TAG_OPAQUE_DATA_VALUE, blob, sizeof(blob));
    register_simple(f, 1, msg, uid);
    assert_int_equal(get_value(f, uid, 0, &o), KF_OK);
    assert_int_equal(o->tag, KMIP_TAG_OPAQUE_OBJECT);
    assert_int_equal(kf_ttlv_get_enum(kf_ttlv_find(o, KMIP_TAG_OPAQUE_DATA_TYPE), &v), KF_OK);
    assert_int_equal(v, 0x80000010u);
    assert_bytes(o, KMIP_TAG_OPAQUE_DATA_VALUE, blob, sizeof(blob));
    assert_int_equal(get_value(f, uid, KMIP_KEYFMT_RAW, &o), KF_ERR_KEY_FORMAT);
}

/* Register of a key block that must be refused with reason. */
static void register_key_expect(struct fixture *f, uint32_t type, uint32_t format,
                                const uint8_t *key, size_t len, uint32_t reason)
{
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, type);
    uint32_t tag = type == KMIP_OBJ_PRIVATE_KEY ? KMIP_TAG_PRIVATE_KEY : KMIP_TAG_PUBLIC_KEY;
    kf_ttlv *kb = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, tag), KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, format);
    kf_ttlv_add_bytes(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL,
                      key, len);
    assert_int_equal(expect_failure(f, msg), reason);
}

/* Transparent Symmetric Key in and out; Raw out; other formats refused. */
static void symmetric_key_formats(void **state)
{
    struct fixture *f = *state;
    char uid[KF_UID_MAX];
    size_t klen;
    uint8_t *key = unhex(f, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", &klen);
    kf_ttlv *p, *msg = request(f, 2, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
    kf_ttlv *attrs = kf_ttlv_struct(f->a, p, KMIP_TAG_ATTRIBUTES);
    kf_ttlv_add_int(f->a, attrs, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, KMIP_USAGE_ENCRYPT);
    kf_ttlv *kb = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_SYMMETRIC_KEY), KMIP_TAG_KEY_BLOCK);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY);
    kf_ttlv *km = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL);
    kf_ttlv_add_bytes(f->a, km, KMIP_TAG_KEY, key, klen);
    kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
    kf_ttlv_add_int(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 256);
    register_simple(f, 2, msg, uid);
    const kf_ttlv *o;
    assert_int_equal(get_value(f, uid, 0, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_RAW, key, klen);
    assert_int_equal(get_value(f, uid, KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY, &o), KF_OK);
    assert_key_material(o, KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY, key, klen);
    assert_int_equal(get_value(f, uid, KMIP_KEYFMT_PKCS_1, &o), KF_ERR_KEY_FORMAT);
    assert_int_equal(kf_kms_result_reason(KF_ERR_KEY_FORMAT, 2),
                     KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED);
    assert_int_equal(kf_kms_result_reason(KF_ERR_KEY_FORMAT, 1),
                     KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED);

    /* Refusals: a 20-byte AES key, a length that contradicts the material, a wrapped block. */
    static const struct {
        size_t len;
        int32_t length;
        bool wrapped;
        uint32_t reason;
    } bad[] = {
        {20, 0, false, KMIP_REASON_FEATURE_NOT_SUPPORTED},
        {16, 256, false, KMIP_REASON_INVALID_FIELD},
        {16, 0, true, KMIP_REASON_FEATURE_NOT_SUPPORTED},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        msg = request(f, 2, KMIP_OP_REGISTER, &p);
        kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
        kb = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_SYMMETRIC_KEY), KMIP_TAG_KEY_BLOCK);
        kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_RAW);
        kf_ttlv_add_bytes(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL,
                          key, bad[i].len);
        kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
        if (bad[i].length)
            kf_ttlv_add_int(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, bad[i].length);
        if (bad[i].wrapped)
            kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_WRAPPING_DATA);
        assert_int_equal(expect_failure(f, msg), bad[i].reason);
    }
    /* No Object Type; an object type Register does not take. */
    msg = request(f, 2, KMIP_OP_REGISTER, &p);
    assert_int_equal(expect_failure(f, msg), KMIP_REASON_MISSING_DATA);
    msg = request(f, 1, KMIP_OP_REGISTER, &p);
    kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SPLIT_KEY);
    assert_int_equal(expect_failure(f, msg), KMIP_REASON_FEATURE_NOT_SUPPORTED);
    /* Key material in a format the object type cannot have. */
    register_key_expect(f, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_TRANSPARENT_SYMMETRIC_KEY, key, klen,
                        KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED);
    register_key_expect(f, KMIP_OBJ_PRIVATE_KEY, KMIP_KEYFMT_PKCS_1, key, klen,
                        KMIP_REASON_INVALID_FIELD);
}

/* Cryptographic Parameters given at Register are the key's defaults (1.x and 2.x forms). */
static void registered_parameters_are_defaults(void **state)
{
    struct fixture *f = *state;
    size_t klen, ivlen, ptlen, ctlen;
    uint8_t *k256 = unhex(f, "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", &klen);
    uint8_t *iv = unhex(f, "000102030405060708090a0b0c0d0e0f", &ivlen);
    uint8_t *pt = unhex(f, "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710", &ptlen);
    uint8_t *ct = unhex(f, "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b", &ctlen);
    for (int major = 1; major <= 2; major++) {
        char uid[KF_UID_MAX];
        kf_ttlv *p, *msg = request(f, major, KMIP_OP_REGISTER, &p);
        kf_ttlv_add_enum(f->a, p, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
        kf_ttlv *g = attr_group(f, p, major, KMIP_TAG_TEMPLATE_ATTRIBUTE, KMIP_TAG_ATTRIBUTES);
        add_attr_int(f, g, major, "Cryptographic Usage Mask", KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK,
                     KMIP_USAGE_ENCRYPT);
        kf_ttlv *cp;
        if (major == 1) {
            kf_ttlv *at = kf_ttlv_struct(f->a, g, KMIP_TAG_ATTRIBUTE);
            kf_ttlv_add_text(f->a, at, KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Parameters");
            cp = kf_ttlv_struct(f->a, at, KMIP_TAG_ATTRIBUTE_VALUE);
        } else {
            cp = kf_ttlv_struct(f->a, g, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
        }
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_CBC);
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, KMIP_PAD_NONE);
        kf_ttlv *kb = kf_ttlv_struct(f->a, kf_ttlv_struct(f->a, p, KMIP_TAG_SYMMETRIC_KEY), KMIP_TAG_KEY_BLOCK);
        kf_ttlv_add_enum(f->a, kb, KMIP_TAG_KEY_FORMAT_TYPE, KMIP_KEYFMT_RAW);
        kf_ttlv_add_bytes(f->a, kf_ttlv_struct(f->a, kb, KMIP_TAG_KEY_VALUE), KMIP_TAG_KEY_MATERIAL,
                          k256, klen);
        kf_ttlv_add_enum(f->a, kb, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, KMIP_ALG_AES);
        register_simple(f, major, msg, uid);
        uid_request(f, major, KMIP_OP_ACTIVATE, uid);
        /* No Cryptographic Parameters in the Encrypt: SP 800-38A F.2.5 from the defaults. */
        msg = request(f, major, KMIP_OP_ENCRYPT, &p);
        kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, pt, ptlen);
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_IV_COUNTER_NONCE, iv, ivlen);
        assert_bytes(expect_success(f, msg), KMIP_TAG_DATA, ct, ctlen);
        /* The request overrides: PKCS#5 padding adds a block. */
        msg = request(f, major, KMIP_OP_ENCRYPT, &p);
        kf_ttlv_add_text(f->a, p, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
        cp = kf_ttlv_struct(f->a, p, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
        kf_ttlv_add_enum(f->a, cp, KMIP_TAG_PADDING_METHOD, KMIP_PAD_PKCS5);
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_DATA, pt, ptlen);
        kf_ttlv_add_bytes(f->a, p, KMIP_TAG_IV_COUNTER_NONCE, iv, ivlen);
        const uint8_t *out;
        size_t n;
        assert_int_equal(kf_ttlv_get_bytes(kf_ttlv_find(expect_success(f, msg), KMIP_TAG_DATA),
                                           &out, &n),
                         KF_OK);
        assert_int_equal(n, 80);
        assert_memory_equal(out, ct, 64);
    }
}

int main(void)
{
    kf_log_open(NULL, KF_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(ed25519_pkcs8_and_spki_rfc8410, setup, teardown),
        cmocka_unit_test_setup_teardown(rsa_pkcs1_pkcs8_and_x509, setup, teardown),
        cmocka_unit_test_setup_teardown(p256_raw_pkcs8_rfc5915_and_x509, setup, teardown),
        cmocka_unit_test_setup_teardown(certificate_secret_data_and_opaque, setup, teardown),
        cmocka_unit_test_setup_teardown(symmetric_key_formats, setup, teardown),
        cmocka_unit_test_setup_teardown(registered_parameters_are_defaults, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
