/*
 * PKCS#11 security module against a throwaway SoftHSM2 token made here (the
 * same steps as tests/system/softhsm-setup.sh): refusals before init and
 * before login, wrong PIN, init, unseal by PIN, domain keys and stored
 * secrets, and - checked through our own PKCS#11 session, not through the
 * module under test - that the root and audit keys are sensitive and never
 * extractable. Skipped if SoftHSM2 is not installed.
 */
#include <dlfcn.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <p11-kit/pkcs11.h>

#include "keyfleet/error.h"
#include "keyfleet/secmem.h"
#include "keyfleet/secmod.h"

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define TOKEN_LABEL "keyfleet-test"
#define USER_PIN "1234"

static char token_dir[64];
static char meta_dir[96];
static bool have_softhsm;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int make_token(void **state)
{
    (void)state;
    if (access(SOFTHSM_MODULE, R_OK) != 0 || system("command -v softhsm2-util >/dev/null") != 0)
        return 0; /* tests skip */
    strcpy(token_dir, "/tmp/kf-p11-XXXXXX");
    if (!mkdtemp(token_dir))
        return -1;
    char path[160];
    snprintf(path, sizeof(path), "%s/tokens", token_dir);
    if (mkdir(path, 0700) != 0)
        return -1;
    snprintf(meta_dir, sizeof(meta_dir), "%s/meta", token_dir);
    if (mkdir(meta_dir, 0700) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/softhsm2.conf", token_dir);
    FILE *conf = fopen(path, "w");
    if (!conf)
        return -1;
    fprintf(conf, "directories.tokendir = %s/tokens\nobjectstore.backend = file\n"
                  "log.level = ERROR\n", token_dir);
    fclose(conf);
    setenv("SOFTHSM2_CONF", path, 1);
    if (system("softhsm2-util --init-token --free --label " TOKEN_LABEL
               " --so-pin 0000 --pin " USER_PIN " >/dev/null") != 0)
        return -1;
    have_softhsm = true;
    return 0;
}

static int remove_token(void **state)
{
    (void)state;
    if (token_dir[0])
        nftw(token_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static kf_secmod *open_token(const char *dir)
{
    struct kf_secmod_config cfg = {.backend = KF_SECMOD_PKCS11,
                                   .dir = dir,
                                   .module_path = SOFTHSM_MODULE,
                                   .token_label = TOKEN_LABEL};
    kf_secmod *sm = NULL;
    assert_int_equal(kf_secmod_open(&cfg, &sm), KF_OK);
    return sm;
}

static void expect_every_op_refused(kf_secmod *sm, int err)
{
    uint8_t blob[64] = {2}, out[32];
    kf_buf b;
    kf_domain_handle h;
    assert_int_equal(kf_buf_alloc(&b, 64, 1024, 0), KF_OK);
    assert_int_equal(kf_secmod_domain_key_new(sm, 1, &b), err);
    assert_int_equal(kf_secmod_domain_key_load(sm, 1, blob, 61, &h), err);
    assert_int_equal(kf_secmod_wrap(sm, 1u << 12, 9, 1, 1, blob, 16, &b), err);
    assert_int_equal(kf_secmod_unwrap(sm, 1u << 12, 9, 1, 1, blob, 45, &b), err);
    assert_int_equal(kf_secmod_audit_mac(sm, blob, 10, out), err);
    kf_buf_free(&b);
}

/* The tests below run in order on one token. */

static void unknown_token_or_module_is_refused(void **state)
{
    (void)state;
    if (!have_softhsm)
        skip();
    struct kf_secmod_config cfg = {.backend = KF_SECMOD_PKCS11,
                                   .module_path = SOFTHSM_MODULE,
                                   .token_label = "no-such-token"};
    kf_secmod *sm = NULL;
    assert_int_equal(kf_secmod_open(&cfg, &sm), KF_ERR_NOT_FOUND);
    cfg.module_path = "/nonexistent/libpkcs11.so";
    assert_int_equal(kf_secmod_open(&cfg, &sm), KF_ERR_PKCS11);
    cfg.module_path = NULL;
    assert_int_equal(kf_secmod_open(&cfg, &sm), KF_ERR_ARG);
    assert_null(sm);
}

static void refused_before_init_and_before_login(void **state)
{
    (void)state;
    if (!have_softhsm)
        skip();
    kf_secmod *sm = open_token(meta_dir);
    assert_false(kf_secmod_initialised(sm));
    assert_true(kf_secmod_sealed(sm));
    expect_every_op_refused(sm, KF_ERR_NOT_INIT);
    /* The right PIN, but no root key in the token yet. */
    assert_int_equal(kf_secmod_unseal_pin(sm, USER_PIN), KF_ERR_NOT_INIT);
    assert_true(kf_secmod_sealed(sm));
    /* The soft-only entry points do not apply. */
    char shares[1][KF_SHARE_MAX];
    bool done;
    assert_int_equal(kf_secmod_init_soft(sm, 1, 1, true, shares), KF_ERR_UNSUPPORTED);
    assert_int_equal(kf_secmod_unseal_share(sm, "kfs1-2-1-99-51711961", &done),
                     KF_ERR_UNSUPPORTED);
    kf_secmod_close(sm);
    /* Without a metadata directory the module cannot tell, and says sealed. */
    sm = open_token(NULL);
    expect_every_op_refused(sm, KF_ERR_SEALED);
    kf_secmod_close(sm);
}

static void wrong_pin_is_refused(void **state)
{
    (void)state;
    if (!have_softhsm)
        skip();
    kf_secmod *sm = open_token(meta_dir);
    assert_int_equal(kf_secmod_init_pkcs11(sm, "9999"), KF_ERR_PIN);
    assert_false(kf_secmod_initialised(sm));
    assert_int_equal(kf_secmod_unseal_pin(sm, "0000"), KF_ERR_PIN);
    assert_true(kf_secmod_sealed(sm));
    kf_secmod_close(sm);
}

static void init_creates_keys_once(void **state)
{
    (void)state;
    if (!have_softhsm)
        skip();
    kf_secmod *sm = open_token(meta_dir);
    assert_int_equal(kf_secmod_init_pkcs11(sm, USER_PIN), KF_OK);
    assert_true(kf_secmod_initialised(sm));
    assert_true(kf_secmod_sealed(sm)); /* init does not leave us logged in */
    expect_every_op_refused(sm, KF_ERR_SEALED);
    assert_int_equal(kf_secmod_init_pkcs11(sm, USER_PIN), KF_ERR_ALREADY_INIT);
    kf_secmod_close(sm);
    /* Found in the token even without our metadata file. */
    sm = open_token(NULL);
    assert_int_equal(kf_secmod_init_pkcs11(sm, USER_PIN), KF_ERR_ALREADY_INIT);
    kf_secmod_close(sm);
    sm = open_token(meta_dir);
    assert_true(kf_secmod_initialised(sm));
    kf_secmod_close(sm);
}

static void unsealed_by_pin_wraps_and_unwraps(void **state)
{
    (void)state;
    if (!have_softhsm)
        skip();
    kf_secmod *sm = open_token(meta_dir);
    assert_int_equal(kf_secmod_unseal_pin(sm, USER_PIN), KF_OK);
    assert_false(kf_secmod_sealed(sm));
    assert_int_equal(kf_secmod_unseal_pin(sm, USER_PIN), KF_ERR_ALREADY_UNSEALED);

    kf_buf dk1, dk2, blob, plain;
    assert_int_equal(kf_buf_alloc(&dk1, 16, 256, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&dk2, 16, 256, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&blob, 16, 256, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&plain, 16, 256, KF_BUF_SECRET), KF_OK);
    assert_int_equal(kf_secmod_domain_key_new(sm, 1, &dk1), KF_OK);
    assert_int_equal(kf_secmod_domain_key_new(sm, 2, &dk2), KF_OK);
    assert_int_equal(dk1.len, 1 + 12 + 32 + 16);
    assert_int_equal(dk1.data[0], 0x02); /* made by the token */

    kf_domain_handle h1, h2, h;
    assert_int_equal(kf_secmod_domain_key_load(sm, 2, dk1.data, dk1.len, &h), KF_ERR_AUTH);
    assert_int_equal(kf_secmod_domain_key_load(sm, 1, dk1.data, dk1.len, &h1), KF_OK);
    assert_int_equal(kf_secmod_domain_key_load(sm, 2, dk2.data, dk2.len, &h2), KF_OK);
    dk1.data[30] ^= 0x80;
    assert_int_equal(kf_secmod_domain_key_load(sm, 1, dk1.data, dk1.len, &h), KF_ERR_AUTH);
    dk1.data[30] ^= 0x80;
    dk1.data[0] = 0x01; /* a soft-backend blob is not ours */
    assert_int_equal(kf_secmod_domain_key_load(sm, 1, dk1.data, dk1.len, &h), KF_ERR_FORMAT);
    dk1.data[0] = 0x02;

    const uint8_t secret[16] = "0123456789abcdef";
    assert_int_equal(kf_secmod_wrap(sm, h1, 5, 1, 1, secret, sizeof(secret), &blob), KF_OK);
    assert_int_equal(kf_secmod_unwrap(sm, h1, 5, 1, 1, blob.data, blob.len, &plain), KF_OK);
    assert_memory_equal(plain.data, secret, sizeof(secret));
    kf_buf_reset(&plain);
    assert_int_equal(kf_secmod_unwrap(sm, h1, 6, 1, 1, blob.data, blob.len, &plain), KF_ERR_AUTH);
    assert_int_equal(kf_secmod_unwrap(sm, h1, 5, 1, 2, blob.data, blob.len, &plain), KF_ERR_AUTH);
    assert_int_equal(kf_secmod_unwrap(sm, h2, 5, 2, 1, blob.data, blob.len, &plain), KF_ERR_AUTH);
    blob.data[blob.len - 1] ^= 1;
    assert_int_equal(kf_secmod_unwrap(sm, h1, 5, 1, 1, blob.data, blob.len, &plain), KF_ERR_AUTH);
    assert_int_equal(plain.len, 0);

    /* Seal logs out and wipes; a new login loads the same domain key. */
    kf_secmod_seal(sm);
    expect_every_op_refused(sm, KF_ERR_SEALED);
    assert_int_equal(kf_secmod_unseal_pin(sm, USER_PIN), KF_OK);
    assert_int_equal(kf_secmod_domain_key_load(sm, 1, dk1.data, dk1.len, &h1), KF_OK);
    blob.data[blob.len - 1] ^= 1;
    assert_int_equal(kf_secmod_unwrap(sm, h1, 5, 1, 1, blob.data, blob.len, &plain), KF_OK);
    assert_memory_equal(plain.data, secret, sizeof(secret));

    kf_buf_free(&dk1);
    kf_buf_free(&dk2);
    kf_buf_free(&blob);
    kf_buf_free(&plain);
    kf_secmod_close(sm);
}

static void audit_mac_is_stable_and_data_dependent(void **state)
{
    (void)state;
    if (!have_softhsm)
        skip();
    kf_secmod *sm = open_token(meta_dir);
    assert_int_equal(kf_secmod_unseal_pin(sm, USER_PIN), KF_OK);
    uint8_t a[32], b[32], c[32], empty[32];
    assert_int_equal(kf_secmod_audit_mac(sm, (const uint8_t *)"records 1-100", 13, a), KF_OK);
    assert_int_equal(kf_secmod_audit_mac(sm, (const uint8_t *)"records 1-101", 13, c), KF_OK);
    assert_int_equal(kf_secmod_audit_mac(sm, NULL, 0, empty), KF_OK);
    assert_memory_not_equal(a, c, 32);
    kf_secmod_close(sm);
    sm = open_token(meta_dir);
    assert_int_equal(kf_secmod_unseal_pin(sm, USER_PIN), KF_OK);
    assert_int_equal(kf_secmod_audit_mac(sm, (const uint8_t *)"records 1-100", 13, b), KF_OK);
    assert_memory_equal(a, b, 32);
    kf_secmod_close(sm);
}

/* ---- our own look into the token ---- */

static CK_FUNCTION_LIST_PTR token_functions(void)
{
    void *lib = dlopen(SOFTHSM_MODULE, RTLD_NOW | RTLD_LOCAL);
    assert_non_null(lib);
    CK_C_GetFunctionList get_list;
    *(void **)&get_list = dlsym(lib, "C_GetFunctionList");
    assert_non_null(get_list);
    CK_FUNCTION_LIST_PTR fn = NULL;
    assert_int_equal(get_list(&fn), CKR_OK);
    return fn; /* the library stays loaded: the module under test shares it */
}

static CK_OBJECT_HANDLE find_by_label(CK_FUNCTION_LIST_PTR fn, CK_SESSION_HANDLE s,
                                      const char *label)
{
    CK_ATTRIBUTE tmpl[] = {{CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE obj[2];
    CK_ULONG count = 0;
    assert_int_equal(fn->C_FindObjectsInit(s, tmpl, 1), CKR_OK);
    assert_int_equal(fn->C_FindObjects(s, obj, 2, &count), CKR_OK);
    assert_int_equal(fn->C_FindObjectsFinal(s), CKR_OK);
    assert_int_equal(count, 1);
    return obj[0];
}

static void expect_protected(CK_FUNCTION_LIST_PTR fn, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE k)
{
    CK_BBOOL extractable = CK_TRUE, sensitive = CK_FALSE, never_extractable = CK_FALSE,
             always_sensitive = CK_FALSE, token = CK_FALSE;
    CK_ATTRIBUTE attrs[] = {
        {CKA_EXTRACTABLE, &extractable, sizeof(extractable)},
        {CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
        {CKA_NEVER_EXTRACTABLE, &never_extractable, sizeof(never_extractable)},
        {CKA_ALWAYS_SENSITIVE, &always_sensitive, sizeof(always_sensitive)},
        {CKA_TOKEN, &token, sizeof(token)},
    };
    assert_int_equal(fn->C_GetAttributeValue(s, k, attrs, 5), CKR_OK);
    assert_int_equal(extractable, CK_FALSE);
    assert_int_equal(sensitive, CK_TRUE);
    assert_int_equal(never_extractable, CK_TRUE);
    assert_int_equal(always_sensitive, CK_TRUE);
    assert_int_equal(token, CK_TRUE);
    uint8_t value[64];
    CK_ATTRIBUTE v = {CKA_VALUE, value, sizeof(value)};
    assert_int_equal(fn->C_GetAttributeValue(s, k, &v, 1), CKR_ATTRIBUTE_SENSITIVE);
}

static void token_keys_are_sensitive_and_never_extractable(void **state)
{
    (void)state;
    if (!have_softhsm)
        skip();
    kf_secmod *sm = open_token(meta_dir); /* it initialises the library and logs in */
    assert_int_equal(kf_secmod_unseal_pin(sm, USER_PIN), KF_OK);
    CK_FUNCTION_LIST_PTR fn = token_functions();
    CK_ULONG count = 8;
    CK_SLOT_ID slots[8];
    assert_int_equal(fn->C_GetSlotList(CK_TRUE, slots, &count), CKR_OK);
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    for (CK_ULONG i = 0; i < count && s == CK_INVALID_HANDLE; i++) {
        CK_TOKEN_INFO info;
        assert_int_equal(fn->C_GetTokenInfo(slots[i], &info), CKR_OK);
        if (memcmp(info.label, TOKEN_LABEL, strlen(TOKEN_LABEL)) == 0)
            assert_int_equal(fn->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &s),
                             CKR_OK);
    }
    assert_int_not_equal(s, CK_INVALID_HANDLE);
    /* Login state is per application, so this session sees the private keys. */
    expect_protected(fn, s, find_by_label(fn, s, "keyfleet-root"));
    expect_protected(fn, s, find_by_label(fn, s, "keyfleet-audit"));
    assert_int_equal(fn->C_CloseSession(s), CKR_OK);
    kf_secmod_close(sm);
}

static void no_secure_memory_is_left_behind(void **state)
{
    (void)state;
    assert_int_equal(kf_secmem_live(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unknown_token_or_module_is_refused),
        cmocka_unit_test(refused_before_init_and_before_login),
        cmocka_unit_test(wrong_pin_is_refused),
        cmocka_unit_test(init_creates_keys_once),
        cmocka_unit_test(unsealed_by_pin_wraps_and_unwraps),
        cmocka_unit_test(audit_mac_is_stable_and_data_dependent),
        cmocka_unit_test(token_keys_are_sensitive_and_never_extractable),
        cmocka_unit_test(no_secure_memory_is_left_behind),
    };
    return cmocka_run_group_tests(tests, make_token, remove_token);
}
