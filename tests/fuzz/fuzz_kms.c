/*
 * Fuzz target: KMIP request bytes -> decode -> dispatch -> service -> store,
 * with the store in memory and a dev-mode soft security module, as an
 * administrator principal (the widest reach). Every input must produce a
 * well-formed KMIP Response Message; anything else aborts.
 * Seeds: the OASIS v1.4 test cases converted to binary (tests/fuzz/run.sh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/kmip_tags.h"
#include "keyfleet/kms.h"
#include "keyfleet/log.h"
#include "keyfleet/ttlv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static kf_kms *kms;
static struct kf_principal admin;

static void setup(void)
{
    static char dir[] = "/tmp/kf-fuzz-kms.XXXXXX";
    if (!mkdtemp(dir))
        abort();
    kf_log_open(NULL, KF_LOG_ERROR + 1); /* silent */
    struct kf_kms_config cfg = {.dir = dir, .dev = true, .memory_store = true};
    /* Dev mode makes the "default" domain at unseal. */
    if (kf_kms_open(&cfg, &kms) < 0 || kf_kms_domain_create(kms, "fuzz", "VENDOR", NULL) < 0)
        abort();
    kf_principal_local_admin(&admin, "fuzz");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!kms)
        setup();
    kf_buf resp;
    if (kf_buf_alloc(&resp, 0, 1 << 22, 0) < 0)
        abort();
    if (kf_kms_handle_kmip(kms, &admin, data, size, &resp) != KF_OK)
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
