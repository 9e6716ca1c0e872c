/*
 * Fuzz target: the manufacturing operations (src/kms/kmip_mfg.c and the
 * service behind it) through kf_kms_handle_kmip, with the store in memory, a
 * dev-mode soft security module, domains VE (vendor), USPS (postal, US) and
 * EARTH (earth) set up and a Steel enrolled. The first input byte picks the
 * principal (administrator, Steel, registrar, verifier: the command table
 * is part of what is fuzzed); the rest is the KMIP request. Every input must
 * produce a well-formed KMIP Response Message; anything else aborts.
 * Seeds: tests/fuzz/corpus/fuzz_kms_mfg (one valid request per operation).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/kms_mfg.h"
#include "keyfleet/log.h"
#include "keyfleet/ttlv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static kf_kms *kms;
static struct kf_principal who[4];

static void principal(struct kf_principal *p, const char *name, unsigned roles)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->roles = roles;
    p->all_domains = true;
}

static void setup(void)
{
    static char dir[] = "/tmp/kf-fuzz-kms-mfg.XXXXXX";
    if (!mkdtemp(dir))
        abort();
    kf_log_open(NULL, KF_LOG_ERROR + 1); /* silent */
    struct kf_kms_config cfg = {.dir = dir, .dev = true, .memory_store = true};
    kf_buf recs;
    uint8_t sign[32], sign_pub[32], enc[32], enc_pub[32];
    if (kf_kms_open(&cfg, &kms) < 0 || kf_buf_alloc(&recs, 0, 1 << 20, 0) < 0 ||
        kf_kms_mfg_setup(kms, "fuzz", "VE", KF_MFG_VENDOR, NULL, &recs) < 0 ||
        kf_kms_mfg_setup(kms, "fuzz", "USPS", KF_MFG_POSTAL, "US", &recs) < 0 ||
        kf_kms_mfg_setup(kms, "fuzz", "EARTH", KF_MFG_EARTH, NULL, &recs) < 0 ||
        kf_crypto_random(sign, 32) < 0 || kf_crypto_random(enc, 32) < 0 ||
        kf_ed25519_public(sign, sign_pub) < 0 || kf_x25519_public(enc, enc_pub) < 0 ||
        kf_kms_mfg_enroll(kms, "fuzz", "VE", "S00000001", sign_pub, enc_pub, &recs) < 0)
        abort();
    kf_buf_free(&recs);
    kf_principal_local_admin(&who[0], "fuzz-admin");
    principal(&who[1], "fuzz-steel", KF_ROLE_STEEL);
    principal(&who[2], "fuzz-registrar", KF_ROLE_REGISTRAR);
    principal(&who[3], "fuzz-verifier", KF_ROLE_VERIFIER);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!kms)
        setup();
    if (size < 1)
        return 0;
    const struct kf_principal *p = &who[data[0] & 3];
    kf_buf resp;
    if (kf_buf_alloc(&resp, 0, 1 << 22, 0) < 0)
        abort();
    if (kf_kms_handle_kmip(kms, p, data + 1, size - 1, &resp) != KF_OK)
        abort(); /* a request must always get an answer */
    kf_arena *a;
    kf_ttlv *r;
    if (kf_arena_new(&a, 0) < 0)
        abort();
    struct kf_ttlv_limits lim = {.max_items = 1000000, .max_total = 1 << 22};
    if (kf_ttlv_decode(resp.data, resp.len, &lim, a, &r) != KF_OK ||
        r->tag != KMIP_TAG_RESPONSE_MESSAGE || !kf_ttlv_find(r, KMIP_TAG_BATCH_ITEM))
        abort(); /* and the answer is a Response Message with a batch item */
    kf_arena_free(a);
    kf_buf_free(&resp);
    return 0;
}
