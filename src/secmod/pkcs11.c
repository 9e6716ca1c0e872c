/*
 * PKCS#11 backend: the root key is an AES-256 key generated inside the token
 * (sensitive, never extractable); unsealing is the user login. Domain keys
 * are wrapped and unwrapped by the token with CKM_AES_GCM (SoftHSM2 2.6.1
 * lists AES-GCM for encrypt/decrypt, so the blob has the same shape and
 * associated data as the soft backend's, only a different format byte).
 * Unwrapped domain keys then live in our secure memory like the soft
 * backend's. The audit key is a second token key, a generic secret used with
 * CKM_SHA256_HMAC, so checkpoints are HMAC-SHA-256 on both backends.
 *
 * One session, serialised by session_lock: the rwlock in secmod.c lets
 * several readers in, and a PKCS#11 session is not for concurrent use.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "keyfleet/log.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "secmod/secmod_internal.h"

#define GCM_TAG_BITS (KF_GCM_TAG_LEN * 8)
#define TOKEN_CT_LEN (SECMOD_KEY_LEN + KF_GCM_TAG_LEN) /* C_Encrypt output: ct || tag */
#define LABEL_MAX 128

struct p11_state {
    void *library;
    CK_FUNCTION_LIST_PTR fn;
    bool we_initialised; /* C_Finalize only what we C_Initialize'd */
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE session;
    bool logged_in;
    CK_OBJECT_HANDLE root;
    CK_OBJECT_HANDLE audit;
    pthread_mutex_t session_lock;
};

static int token_error(const char *what, CK_RV rv)
{
    kf_error("secmod: PKCS#11 %s failed: CKR 0x%lx", what, (unsigned long)rv);
    return KF_ERR_PKCS11;
}

static int load_module(struct p11_state *p, const char *path)
{
    p->library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!p->library) {
        kf_error("secmod: cannot load PKCS#11 module %s: %s", path, dlerror());
        return KF_ERR_PKCS11;
    }
    CK_C_GetFunctionList get_list;
    *(void **)&get_list = dlsym(p->library, "C_GetFunctionList");
    KF_ENSURE(get_list != NULL, token_error("C_GetFunctionList lookup", 0));
    CK_RV rv = get_list(&p->fn);
    KF_ENSURE(rv == CKR_OK && p->fn, token_error("C_GetFunctionList", rv));
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    rv = p->fn->C_Initialize(&args);
    if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED)
        return KF_OK; /* another user in this process (GnuTLS/p11-kit) owns it */
    KF_ENSURE(rv == CKR_OK, token_error("C_Initialize", rv));
    p->we_initialised = true;
    return KF_OK;
}

/* Token labels are 32 bytes padded with spaces. */
static bool label_matches(const CK_UTF8CHAR label[32], const char *want)
{
    size_t n = strlen(want);
    if (n > 32)
        return false;
    for (size_t i = 0; i < 32; i++) {
        CK_UTF8CHAR c = i < n ? (CK_UTF8CHAR)want[i] : ' ';
        if (label[i] != c)
            return false;
    }
    return true;
}

static int find_slot(struct p11_state *p, const char *token_label)
{
    CK_ULONG count = 0;
    CK_RV rv = p->fn->C_GetSlotList(CK_TRUE, NULL, &count);
    KF_ENSURE(rv == CKR_OK, token_error("C_GetSlotList", rv));
    KF_ENSURE(count > 0 && count < 4096, KF_ERR_NOT_FOUND);
    CK_SLOT_ID *slots = calloc(count, sizeof(*slots));
    KF_ENSURE(slots != NULL, KF_ERR_NOMEM);
    rv = p->fn->C_GetSlotList(CK_TRUE, slots, &count);
    int rc = rv == CKR_OK ? KF_ERR_NOT_FOUND : token_error("C_GetSlotList", rv);
    for (CK_ULONG i = 0; rv == CKR_OK && i < count; i++) {
        CK_TOKEN_INFO info;
        if (p->fn->C_GetTokenInfo(slots[i], &info) == CKR_OK &&
            label_matches(info.label, token_label)) {
            p->slot = slots[i];
            rc = KF_OK;
            break;
        }
    }
    free(slots);
    if (rc == KF_ERR_NOT_FOUND)
        kf_error("secmod: no PKCS#11 token labelled \"%s\"", token_label);
    return rc;
}

static void unload(struct p11_state *p)
{
    if (p->session)
        p->fn->C_CloseSession(p->session);
    if (p->we_initialised)
        p->fn->C_Finalize(NULL);
    if (p->library)
        dlclose(p->library);
}

int p11_open(kf_secmod *sm)
{
    struct p11_state *p = calloc(1, sizeof(*p));
    KF_ENSURE(p != NULL, KF_ERR_NOMEM);
    int rc = pthread_mutex_init(&p->session_lock, NULL) == 0 ? KF_OK : KF_ERR_NOMEM;
    if (rc == KF_OK)
        rc = load_module(p, sm->module_path);
    if (rc == KF_OK)
        rc = find_slot(p, sm->token_label);
    if (rc == KF_OK) {
        CK_RV rv = p->fn->C_OpenSession(p->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
                                        NULL, &p->session);
        if (rv != CKR_OK)
            rc = token_error("C_OpenSession", rv);
    }
    if (rc < 0) {
        if (p->fn)
            unload(p);
        else if (p->library)
            dlclose(p->library);
        pthread_mutex_destroy(&p->session_lock);
        free(p);
        return rc;
    }
    sm->p11 = p;
    return KF_OK;
}

void p11_close(kf_secmod *sm)
{
    struct p11_state *p = sm->p11;
    if (!p)
        return;
    unload(p);
    pthread_mutex_destroy(&p->session_lock);
    free(p);
    sm->p11 = NULL;
}

static int login(struct p11_state *p, const char *pin)
{
    CK_RV rv = p->fn->C_Login(p->session, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
    if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_INVALID || rv == CKR_PIN_LEN_RANGE ||
        rv == CKR_PIN_LOCKED || rv == CKR_PIN_EXPIRED) {
        kf_warn("secmod: the token refused the user PIN (CKR 0x%lx)", (unsigned long)rv);
        return KF_ERR_PIN;
    }
    KF_ENSURE(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN, token_error("C_Login", rv));
    p->logged_in = true;
    return KF_OK;
}

static void logout(struct p11_state *p)
{
    if (p->logged_in)
        p->fn->C_Logout(p->session);
    p->logged_in = false;
    p->root = CK_INVALID_HANDLE;
    p->audit = CK_INVALID_HANDLE;
}

/* The audit key is named after the root key: "keyfleet-root" -> "keyfleet-audit". */
static int audit_label(const char *key_label, char out[LABEL_MAX])
{
    size_t n = strlen(key_label);
    const char *suffix = "-root";
    size_t sl = strlen(suffix);
    if (n >= sl && strcmp(key_label + n - sl, suffix) == 0)
        n -= sl;
    int w = snprintf(out, LABEL_MAX, "%.*s-audit", (int)n, key_label);
    KF_ENSURE(w > 0 && w < LABEL_MAX, KF_ERR_LIMIT);
    return KF_OK;
}

/* KF_ERR_NOT_FOUND, or the one secret key object with this label. */
static int find_key(struct p11_state *p, const char *label, CK_OBJECT_HANDLE *obj)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_LABEL, (void *)label, strlen(label)},
    };
    CK_RV rv = p->fn->C_FindObjectsInit(p->session, tmpl, 2);
    KF_ENSURE(rv == CKR_OK, token_error("C_FindObjectsInit", rv));
    CK_OBJECT_HANDLE found[2];
    CK_ULONG count = 0;
    rv = p->fn->C_FindObjects(p->session, found, 2, &count);
    p->fn->C_FindObjectsFinal(p->session);
    KF_ENSURE(rv == CKR_OK, token_error("C_FindObjects", rv));
    KF_ENSURE(count > 0, KF_ERR_NOT_FOUND);
    if (count > 1) {
        kf_error("secmod: more than one token key is labelled \"%s\"", label);
        return KF_ERR_PKCS11;
    }
    *obj = found[0];
    return KF_OK;
}

static int generate_root(struct p11_state *p, const char *label, CK_OBJECT_HANDLE *obj)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_ULONG len = SECMOD_KEY_LEN;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},      {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_VALUE_LEN, &len, sizeof(len)},  {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},    {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)},  {CKA_ENCRYPT, &yes, sizeof(yes)},
        {CKA_DECRYPT, &yes, sizeof(yes)},    {CKA_WRAP, &no, sizeof(no)},
        {CKA_UNWRAP, &no, sizeof(no)},       {CKA_SIGN, &no, sizeof(no)},
        {CKA_LABEL, (void *)label, strlen(label)},
    };
    CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
    CK_RV rv = p->fn->C_GenerateKey(p->session, &mech, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), obj);
    KF_ENSURE(rv == CKR_OK, token_error("C_GenerateKey (root)", rv));
    return KF_OK;
}

static int generate_audit(struct p11_state *p, const char *label, CK_OBJECT_HANDLE *obj)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_GENERIC_SECRET;
    CK_ULONG len = SECMOD_KEY_LEN;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},     {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_VALUE_LEN, &len, sizeof(len)}, {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},   {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)}, {CKA_SIGN, &yes, sizeof(yes)},
        {CKA_VERIFY, &yes, sizeof(yes)},    {CKA_ENCRYPT, &no, sizeof(no)},
        {CKA_DECRYPT, &no, sizeof(no)},     {CKA_LABEL, (void *)label, strlen(label)},
    };
    CK_MECHANISM mech = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
    CK_RV rv = p->fn->C_GenerateKey(p->session, &mech, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), obj);
    KF_ENSURE(rv == CKR_OK, token_error("C_GenerateKey (audit)", rv));
    return KF_OK;
}

/* Both keys or neither: a root without its audit key is destroyed again. */
static int create_token_keys(kf_secmod *sm, struct p11_state *p)
{
    char audit[LABEL_MAX];
    KF_GUARD(audit_label(sm->key_label, audit));
    CK_OBJECT_HANDLE root, mac;
    int rc = find_key(p, sm->key_label, &root);
    if (rc == KF_OK)
        return KF_ERR_ALREADY_INIT;
    KF_ENSURE(rc == KF_ERR_NOT_FOUND, rc);
    rc = find_key(p, audit, &mac);
    if (rc == KF_OK)
        return KF_ERR_ALREADY_INIT;
    KF_ENSURE(rc == KF_ERR_NOT_FOUND, rc);
    KF_GUARD(generate_root(p, sm->key_label, &root));
    rc = generate_audit(p, audit, &mac);
    if (rc < 0)
        p->fn->C_DestroyObject(p->session, root);
    return rc;
}

int p11_init(kf_secmod *sm, const char *pin)
{
    KF_ENSURE(!sm->initialised && sm->sealed, KF_ERR_ALREADY_INIT);
    struct p11_state *p = sm->p11;
    pthread_mutex_lock(&p->session_lock);
    int rc = login(p, pin);
    if (rc == KF_OK)
        rc = create_token_keys(sm, p);
    logout(p); /* like the soft backend, the module stays sealed after init */
    pthread_mutex_unlock(&p->session_lock);
    if (rc == KF_OK && sm->dir) {
        struct secmod_meta meta = {.backend = KF_SECMOD_PKCS11};
        rc = secmod_meta_write(sm->dir, &meta);
    }
    if (rc == KF_OK) {
        sm->initialised = true;
        kf_info("secmod: root and audit keys created in PKCS#11 token \"%s\"", sm->token_label);
    }
    return rc;
}

int p11_unseal(kf_secmod *sm, const char *pin)
{
    struct p11_state *p = sm->p11;
    char audit[LABEL_MAX];
    KF_GUARD(audit_label(sm->key_label, audit));
    pthread_mutex_lock(&p->session_lock);
    int rc = login(p, pin);
    if (rc == KF_OK)
        rc = find_key(p, sm->key_label, &p->root);
    if (rc == KF_OK)
        rc = find_key(p, audit, &p->audit);
    if (rc < 0)
        logout(p);
    pthread_mutex_unlock(&p->session_lock);
    if (rc == KF_ERR_NOT_FOUND) {
        kf_error("secmod: token \"%s\" holds no key \"%s\" and \"%s\": run keyfleet init",
                 sm->token_label, sm->key_label, audit);
        return KF_ERR_NOT_INIT;
    }
    KF_GUARD(rc);
    sm->initialised = true;
    sm->sealed = false;
    kf_info("secmod: unsealed (logged in to PKCS#11 token \"%s\")", sm->token_label);
    return KF_OK;
}

void p11_seal(kf_secmod *sm)
{
    struct p11_state *p = sm->p11;
    if (!p)
        return;
    pthread_mutex_lock(&p->session_lock);
    logout(p);
    pthread_mutex_unlock(&p->session_lock);
}

static void gcm_params(CK_GCM_PARAMS *params, uint8_t *iv, uint8_t *ad, size_t ad_len)
{
    params->pIv = iv;
    params->ulIvLen = KF_GCM_IV_LEN;
    params->ulIvBits = KF_GCM_IV_LEN * 8;
    params->pAAD = ad;
    params->ulAADLen = ad_len;
    params->ulTagBits = GCM_TAG_BITS;
}

/* Token-side AES-GCM encrypt of the key into ct_tag (ct || tag). */
static int token_encrypt(struct p11_state *p, uint8_t *iv, uint8_t *ad, size_t ad_len,
                         const uint8_t *key, uint8_t *ct_tag)
{
    CK_GCM_PARAMS params;
    gcm_params(&params, iv, ad, ad_len);
    CK_MECHANISM mech = {CKM_AES_GCM, &params, sizeof(params)};
    pthread_mutex_lock(&p->session_lock);
    CK_RV rv = p->fn->C_EncryptInit(p->session, &mech, p->root);
    CK_ULONG out_len = TOKEN_CT_LEN;
    if (rv == CKR_OK)
        rv = p->fn->C_Encrypt(p->session, (CK_BYTE_PTR)key, SECMOD_KEY_LEN, ct_tag, &out_len);
    pthread_mutex_unlock(&p->session_lock);
    KF_ENSURE(rv == CKR_OK, token_error("C_Encrypt (AES-GCM)", rv));
    KF_ENSURE(out_len == TOKEN_CT_LEN, token_error("C_Encrypt output length", 0));
    return KF_OK;
}

int p11_domain_wrap(kf_secmod *sm, uint64_t domain_id, const uint8_t key[SECMOD_KEY_LEN],
                    kf_buf *out)
{
    uint8_t ad[sizeof(DOMAIN_WRAP_AD) - 1 + 8];
    uint8_t iv[KF_GCM_IV_LEN];
    uint8_t *ct_tag;
    domain_wrap_ad(domain_id, ad);
    KF_GUARD(kf_rng_bytes(iv, sizeof(iv)));
    KF_GUARD(kf_buf_reserve(out, DOMAIN_BLOB_LEN));
    KF_GUARD(kf_buf_put_u8(out, DOMAIN_BLOB_TOKEN_GCM));
    KF_GUARD(kf_buf_put_bytes(out, iv, sizeof(iv)));
    KF_GUARD(kf_buf_put_space(out, TOKEN_CT_LEN, &ct_tag));
    return token_encrypt(sm->p11, iv, ad, sizeof(ad), key, ct_tag);
}

/* A tag that does not verify is an integrity failure, not a token fault.
 * PKCS#11 3.0 says CKR_ENCRYPTED_DATA_INVALID; SoftHSM2 2.6.1 answers
 * CKR_GENERAL_ERROR (seen in test_secmod_pkcs11), so both mean KF_ERR_AUTH. */
static int decrypt_result(CK_RV rv)
{
    if (rv == CKR_OK)
        return KF_OK;
    if (rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_ENCRYPTED_DATA_LEN_RANGE ||
        rv == CKR_GENERAL_ERROR) {
        kf_debug("secmod: token refused a domain key blob (CKR 0x%lx)", (unsigned long)rv);
        return KF_ERR_AUTH;
    }
    return token_error("C_Decrypt (AES-GCM)", rv);
}

int p11_domain_unwrap(kf_secmod *sm, uint64_t domain_id, const uint8_t *blob, size_t len,
                      uint8_t key[SECMOD_KEY_LEN])
{
    struct p11_state *p = sm->p11;
    uint8_t ad[sizeof(DOMAIN_WRAP_AD) - 1 + 8];
    domain_wrap_ad(domain_id, ad);
    kf_buf b;
    kf_buf_reader(&b, blob, len);
    uint8_t format;
    const uint8_t *iv, *ct_tag;
    KF_ENSURE(len == DOMAIN_BLOB_LEN, KF_ERR_FORMAT);
    KF_GUARD(kf_buf_get_u8(&b, &format));
    KF_ENSURE(format == DOMAIN_BLOB_TOKEN_GCM, KF_ERR_FORMAT);
    KF_GUARD(kf_buf_get_ptr(&b, KF_GCM_IV_LEN, &iv));
    KF_GUARD(kf_buf_get_ptr(&b, TOKEN_CT_LEN, &ct_tag));
    uint8_t *plain = kf_secmem_alloc(TOKEN_CT_LEN);
    KF_ENSURE(plain != NULL, KF_ERR_SECMEM);
    CK_GCM_PARAMS params;
    gcm_params(&params, (uint8_t *)iv, ad, sizeof(ad));
    CK_MECHANISM mech = {CKM_AES_GCM, &params, sizeof(params)};
    CK_ULONG plain_len = TOKEN_CT_LEN; /* room for the tag too, whatever the token wants */
    pthread_mutex_lock(&p->session_lock);
    CK_RV rv = p->fn->C_DecryptInit(p->session, &mech, p->root);
    if (rv == CKR_OK)
        rv = p->fn->C_Decrypt(p->session, (CK_BYTE_PTR)ct_tag, TOKEN_CT_LEN, plain, &plain_len);
    pthread_mutex_unlock(&p->session_lock);
    int rc = decrypt_result(rv);
    if (rc == KF_OK && plain_len != SECMOD_KEY_LEN)
        rc = token_error("C_Decrypt output length", 0);
    if (rc == KF_OK)
        memcpy(key, plain, SECMOD_KEY_LEN);
    kf_secmem_free(plain);
    return rc;
}

int p11_audit_mac(kf_secmod *sm, const uint8_t *data, size_t len, uint8_t out[32])
{
    struct p11_state *p = sm->p11;
    CK_MECHANISM mech = {CKM_SHA256_HMAC, NULL, 0};
    uint8_t empty = 0;
    CK_ULONG out_len = 32;
    pthread_mutex_lock(&p->session_lock);
    CK_RV rv = p->fn->C_SignInit(p->session, &mech, p->audit);
    if (rv == CKR_OK)
        rv = p->fn->C_Sign(p->session, len ? (CK_BYTE_PTR)data : &empty, len, out, &out_len);
    pthread_mutex_unlock(&p->session_lock);
    KF_ENSURE(rv == CKR_OK, token_error("C_Sign (HMAC-SHA-256)", rv));
    KF_ENSURE(out_len == 32, token_error("C_Sign output length", 0));
    return KF_OK;
}
