/*
 * The service half of the KMS unit tests' fixtures (test_kms.c,
 * test_kms_mfg.c, test_kms_tokens.c, test_kms_attrs.c, test_kms_device.c,
 * test_kms_pair_batch.c): a dev-mode service in a fresh temporary directory,
 * closed and removed again; one KMIP message run through it; and the
 * Steel/Tin role key pairs and the do-nothing meter store of the
 * manufacturing tests. Include after <cmocka.h>; each program uses a subset.
 */
#ifndef KF_TEST_KMS_FIXTURE_H
#define KF_TEST_KMS_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kms.h"
#include "keyfleet/ttlv.h"

#ifndef KF_TEST_UNUSED
#define KF_TEST_UNUSED __attribute__((unused))
#endif

/* Make /tmp/kf-test-<tag>.XXXXXX in dir and open a dev-mode service there
 * (it unseals itself). 0, or -1 for a setup function to return. */
static KF_TEST_UNUSED int kms_dir_open(char *dir, size_t cap, const char *tag, kf_kms **kms)
{
    int n = snprintf(dir, cap, "/tmp/kf-test-%s.XXXXXX", tag);
    if (n < 0 || (size_t)n >= cap || !mkdtemp(dir))
        return -1;
    struct kf_kms_config cfg = {.dir = dir, .dev = true};
    return kf_kms_open(&cfg, kms) < 0 ? -1 : 0;
}

/* Close the service and remove its directory: 0, or -1 for a teardown to return. */
static KF_TEST_UNUSED int kms_dir_remove(kf_kms *kms, const char *dir)
{
    kf_kms_close(kms);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Run msg as who through the service's KMIP layer: the Response Message,
 * decoded in a. */
static KF_TEST_UNUSED kf_ttlv *kms_kmip_exchange(kf_kms *kms, const struct kf_principal *who,
                                                 kf_arena *a, const kf_ttlv *msg)
{
    kf_buf req, resp;
    kf_ttlv *r;
    assert_int_equal(kf_buf_alloc(&req, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&resp, 0, 1 << 20, 0), KF_OK);
    assert_int_equal(kf_ttlv_encode(msg, &req), KF_OK);
    assert_int_equal(kf_kms_handle_kmip(kms, who, req.data, req.len, &resp), KF_OK);
    assert_int_equal(kf_ttlv_decode(resp.data, resp.len, NULL, a, &r), KF_OK);
    kf_buf_free(&req);
    kf_buf_free(&resp);
    return r;
}

/* A station's (Steel's, Tin's) signing and encryption key pairs. */
struct role_keys {
    uint8_t sign_priv[32], sign_pub[32], enc_priv[32], enc_pub[32];
};

static KF_TEST_UNUSED void role_keys_make(struct role_keys *k)
{
    assert_int_equal(kf_crypto_random(k->sign_priv, 32), KF_OK);
    assert_int_equal(kf_crypto_random(k->enc_priv, 32), KF_OK);
    assert_int_equal(kf_ed25519_public(k->sign_priv, k->sign_pub), KF_OK);
    assert_int_equal(kf_x25519_public(k->enc_priv, k->enc_pub), KF_OK);
}

/* A meter's state store that keeps nothing (kfd_meter_init). */
static KF_TEST_UNUSED int store_nothing(void *ctx, const uint8_t *state, size_t len)
{
    (void)ctx;
    (void)state;
    (void)len;
    return KF_OK;
}

#endif
