/*
 * Soft security module: init, sealed refusals, unseal by M of N shares, the
 * ways a share set can be wrong, dev mode and its key file, domain keys and
 * stored-secret wrap with every "moved or modified" refusal, and the
 * documented key derivations (checked in dev mode, where the root is known).
 */
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
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

#include "keyfleet/crypto.h"
#include "keyfleet/error.h"
#include "keyfleet/secmem.h"
#include "keyfleet/secmod.h"

struct fixture {
    char dir[64];
    char other_dir[64];
    kf_secmod *sm;
    char shares[5][KF_SHARE_MAX];
    size_t secmem_before;
};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static kf_secmod *open_soft(const char *dir)
{
    struct kf_secmod_config cfg = {.backend = KF_SECMOD_SOFT, .dir = dir};
    kf_secmod *sm = NULL;
    assert_int_equal(kf_secmod_open(&cfg, &sm), KF_OK);
    return sm;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->secmem_before = kf_secmem_live();
    strcpy(f->dir, "/tmp/kf-secmod-XXXXXX");
    strcpy(f->other_dir, "/tmp/kf-secmod-XXXXXX");
    if (!mkdtemp(f->dir) || !mkdtemp(f->other_dir))
        return -1;
    f->sm = open_soft(f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kf_secmod_close(f->sm);
    kf_wipe(f->shares, sizeof(f->shares));
    remove_tree(f->dir);
    remove_tree(f->other_dir);
    /* Every secure allocation the module made is released by close. */
    size_t live = kf_secmem_live();
    size_t before = f->secmem_before;
    free(f);
    return live == before ? 0 : -1;
}

static void init_3_of_5(struct fixture *f)
{
    assert_int_equal(kf_secmod_init_soft(f->sm, 3, 5, false, f->shares), KF_OK);
}

static void unseal_with(kf_secmod *sm, char shares[][KF_SHARE_MAX], const int *which, int k)
{
    bool done = false;
    for (int i = 0; i < k; i++) {
        assert_false(done);
        assert_int_equal(kf_secmod_unseal_share(sm, shares[which[i]], &done), KF_OK);
    }
    assert_true(done);
    assert_false(kf_secmod_sealed(sm));
}

/* Every operation that needs keys gives the same refusal. */
static void expect_every_op_refused(kf_secmod *sm, int err)
{
    uint8_t blob[128] = {1}, out[32];
    kf_buf b;
    kf_domain_handle h = 0;
    assert_int_equal(kf_buf_alloc(&b, 64, 1024, 0), KF_OK);
    assert_int_equal(kf_secmod_domain_key_new(sm, 1, &b), err);
    assert_int_equal(b.len, 0);
    assert_int_equal(kf_secmod_domain_key_load(sm, 1, blob, 61, &h), err);
    assert_int_equal(kf_secmod_wrap(sm, 1u << 12, 9, 1, 1, blob, 16, &b), err);
    assert_int_equal(kf_secmod_unwrap(sm, 1u << 12, 9, 1, 1, blob, 45, &b), err);
    assert_int_equal(kf_secmod_audit_mac(sm, blob, 10, out), err);
    kf_buf_free(&b);
}

static void before_init_everything_says_not_initialised(void **state)
{
    struct fixture *f = *state;
    assert_false(kf_secmod_initialised(f->sm));
    assert_true(kf_secmod_sealed(f->sm));
    expect_every_op_refused(f->sm, KF_ERR_NOT_INIT);
    bool done;
    assert_int_equal(kf_secmod_unseal_share(f->sm, "kfs1-2-1-99-51711961", &done),
                     KF_ERR_NOT_INIT);
    assert_int_equal(kf_secmod_unseal_dev(f->sm), KF_ERR_NOT_INIT);
}

static void init_refuses_bad_thresholds(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(kf_secmod_init_soft(f->sm, 1, 1, false, f->shares), KF_ERR_THRESHOLD);
    assert_int_equal(kf_secmod_init_soft(f->sm, 1, 3, false, f->shares), KF_ERR_THRESHOLD);
    assert_int_equal(kf_secmod_init_soft(f->sm, 4, 3, false, f->shares), KF_ERR_THRESHOLD);
    assert_int_equal(kf_secmod_init_soft(f->sm, 2, 3, true, f->shares), KF_ERR_THRESHOLD);
    assert_false(kf_secmod_initialised(f->sm));
    char path[128];
    struct stat st;
    snprintf(path, sizeof(path), "%s/secmod.meta", f->dir);
    assert_int_equal(stat(path, &st), -1); /* nothing was written */
}

static void sealed_after_init_and_unsealed_by_any_three(void **state)
{
    struct fixture *f = *state;
    init_3_of_5(f);
    assert_true(kf_secmod_initialised(f->sm));
    assert_true(kf_secmod_sealed(f->sm));
    expect_every_op_refused(f->sm, KF_ERR_SEALED);

    /* The metadata file is private and the shares are distinct printable text. */
    char path[128];
    struct stat st;
    snprintf(path, sizeof(path), "%s/secmod.meta", f->dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(strncmp(f->shares[i], "kfs1-3-", 7), 0);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(f->shares[i], f->shares[j]);
    }

    bool done = true;
    unsigned m, n, received;
    assert_int_equal(kf_secmod_unseal_share(f->sm, f->shares[4], &done), KF_OK);
    assert_false(done);
    assert_int_equal(kf_secmod_unseal_share(f->sm, f->shares[1], &done), KF_OK);
    assert_false(done);
    kf_secmod_progress(f->sm, &m, &n, &received);
    assert_int_equal(m, 3);
    assert_int_equal(n, 5);
    assert_int_equal(received, 2);
    /* Two shares are not enough. */
    assert_true(kf_secmod_sealed(f->sm));
    expect_every_op_refused(f->sm, KF_ERR_SEALED);
    assert_int_equal(kf_secmod_unseal_share(f->sm, f->shares[2], &done), KF_OK);
    assert_true(done);
    assert_false(kf_secmod_sealed(f->sm));
    assert_int_equal(kf_secmod_unseal_share(f->sm, f->shares[0], &done),
                     KF_ERR_ALREADY_UNSEALED);

    /* Re-init is refused, by this object and by a fresh one on the same dir. */
    char more[5][KF_SHARE_MAX];
    assert_int_equal(kf_secmod_init_soft(f->sm, 3, 5, false, more), KF_ERR_ALREADY_INIT);
    kf_secmod *again = open_soft(f->dir);
    assert_true(kf_secmod_initialised(again));
    assert_int_equal(kf_secmod_init_soft(again, 2, 3, false, more), KF_ERR_ALREADY_INIT);
    kf_secmod_close(again);
}

static void share_mistakes_are_refused(void **state)
{
    struct fixture *f = *state;
    init_3_of_5(f);
    bool done;
    unsigned received;
    /* The same share twice. */
    assert_int_equal(kf_secmod_unseal_share(f->sm, f->shares[0], &done), KF_OK);
    assert_int_equal(kf_secmod_unseal_share(f->sm, f->shares[0], &done), KF_ERR_SHARE);
    /* A typo: one hex digit changed. */
    char typo[KF_SHARE_MAX];
    strcpy(typo, f->shares[1]);
    typo[12] = typo[12] == 'a' ? 'b' : 'a';
    assert_int_equal(kf_secmod_unseal_share(f->sm, typo, &done), KF_ERR_SHARE);
    /* A share made for another threshold. */
    kf_secmod *other = open_soft(f->other_dir);
    char other_shares[3][KF_SHARE_MAX];
    assert_int_equal(kf_secmod_init_soft(other, 2, 3, false, other_shares), KF_OK);
    assert_int_equal(kf_secmod_unseal_share(f->sm, other_shares[1], &done), KF_ERR_SHARE);
    kf_secmod_close(other);
    /* Refusals keep the good shares already given. */
    kf_secmod_progress(f->sm, NULL, NULL, &received);
    assert_int_equal(received, 1);
    assert_int_equal(kf_secmod_unseal_share(f->sm, f->shares[1], &done), KF_OK);
    assert_int_equal(kf_secmod_unseal_share(f->sm, f->shares[3], &done), KF_OK);
    assert_true(done);
    kf_wipe(other_shares, sizeof(other_shares));
}

static void shares_from_another_init_do_not_rebuild(void **state)
{
    struct fixture *f = *state;
    init_3_of_5(f);
    kf_secmod *other = open_soft(f->other_dir);
    char other_shares[5][KF_SHARE_MAX];
    assert_int_equal(kf_secmod_init_soft(other, 3, 5, false, other_shares), KF_OK);
    kf_secmod_close(other);

    bool done;
    unsigned received;
    /* All three from the other init: well-formed, so only the KCV can tell. */
    assert_int_equal(kf_secmod_unseal_share(f->sm, other_shares[0], &done), KF_OK);
    assert_int_equal(kf_secmod_unseal_share(f->sm, other_shares[1], &done), KF_OK);
    assert_int_equal(kf_secmod_unseal_share(f->sm, other_shares[2], &done),
                     KF_ERR_SHARES_WRONG);
    assert_false(done);
    assert_true(kf_secmod_sealed(f->sm));
    kf_secmod_progress(f->sm, NULL, NULL, &received);
    assert_int_equal(received, 0); /* the pending set is discarded */
    /* One foreign share mixed with two right ones is also wrong. */
    assert_int_equal(kf_secmod_unseal_share(f->sm, f->shares[0], &done), KF_OK);
    assert_int_equal(kf_secmod_unseal_share(f->sm, other_shares[3], &done), KF_OK);
    assert_int_equal(kf_secmod_unseal_share(f->sm, f->shares[2], &done), KF_ERR_SHARES_WRONG);
    /* And the right ones still work afterwards. */
    const int right[] = {0, 2, 4};
    unseal_with(f->sm, f->shares, right, 3);
    kf_wipe(other_shares, sizeof(other_shares));
}

/* ---- domain keys and stored secrets ---- */

static void domain_key_and_secret_round_trip(void **state)
{
    struct fixture *f = *state;
    init_3_of_5(f);
    const int which[] = {0, 1, 2};
    unseal_with(f->sm, f->shares, which, 3);

    kf_buf dk1, dk2, blob, plain;
    assert_int_equal(kf_buf_alloc(&dk1, 16, 256, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&dk2, 16, 256, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&blob, 16, 4096, 0), KF_OK);
    assert_int_equal(kf_buf_alloc(&plain, 16, 4096, KF_BUF_SECRET), KF_OK);
    assert_int_equal(kf_secmod_domain_key_new(f->sm, 1, &dk1), KF_OK);
    assert_int_equal(kf_secmod_domain_key_new(f->sm, 2, &dk2), KF_OK);
    assert_int_equal(dk1.len, 1 + 12 + 32 + 16);
    assert_int_equal(dk1.data[0], 0x01);

    kf_domain_handle h1, h2, h1_again;
    /* A domain key wrapped for domain 1 does not load as domain 2. */
    assert_int_equal(kf_secmod_domain_key_load(f->sm, 2, dk1.data, dk1.len, &h2), KF_ERR_AUTH);
    assert_int_equal(kf_secmod_domain_key_load(f->sm, 1, dk1.data, dk1.len, &h1), KF_OK);
    assert_int_equal(kf_secmod_domain_key_load(f->sm, 2, dk2.data, dk2.len, &h2), KF_OK);
    assert_int_equal(kf_secmod_domain_key_load(f->sm, 1, dk1.data, dk1.len, &h1_again), KF_OK);
    assert_int_equal(h1, h1_again);
    assert_int_not_equal(h1, h2);
    /* A damaged domain key blob. */
    dk1.data[20] ^= 0x01;
    assert_int_equal(kf_secmod_domain_key_load(f->sm, 1, dk1.data, dk1.len, &h1_again),
                     KF_ERR_AUTH);
    dk1.data[20] ^= 0x01;
    assert_int_equal(kf_secmod_domain_key_load(f->sm, 1, dk1.data, dk1.len - 1, &h1_again),
                     KF_ERR_FORMAT);

    const uint8_t secret[20] = "a key to keep safe!";
    assert_int_equal(kf_secmod_wrap(f->sm, h1, 77, 1, 3, secret, sizeof(secret), &blob), KF_OK);
    assert_int_equal(blob.len, 1 + 12 + sizeof(secret) + 16);
    assert_memory_not_equal(blob.data + 13, secret, sizeof(secret));
    assert_int_equal(kf_secmod_unwrap(f->sm, h1, 77, 1, 3, blob.data, blob.len, &plain), KF_OK);
    assert_int_equal(plain.len, sizeof(secret));
    assert_memory_equal(plain.data, secret, sizeof(secret));
    kf_buf_reset(&plain);

    /* Moved to another object, version or domain, or modified: refused, and
     * nothing is left in the output buffer. */
    assert_int_equal(kf_secmod_unwrap(f->sm, h1, 78, 1, 3, blob.data, blob.len, &plain),
                     KF_ERR_AUTH);
    assert_int_equal(kf_secmod_unwrap(f->sm, h1, 77, 1, 4, blob.data, blob.len, &plain),
                     KF_ERR_AUTH);
    assert_int_equal(kf_secmod_unwrap(f->sm, h2, 77, 2, 3, blob.data, blob.len, &plain),
                     KF_ERR_AUTH);
    assert_int_equal(kf_secmod_unwrap(f->sm, h1, 77, 2, 3, blob.data, blob.len, &plain),
                     KF_ERR_DOMAIN_CROSS);
    assert_int_equal(plain.len, 0);
    for (size_t bit = 8; bit < blob.len * 8; bit += 7) {
        blob.data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(kf_secmod_unwrap(f->sm, h1, 77, 1, 3, blob.data, blob.len, &plain),
                         KF_ERR_AUTH);
        blob.data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    assert_int_equal(plain.len, 0);
    blob.data[0] = 0x7f; /* unknown format */
    assert_int_equal(kf_secmod_unwrap(f->sm, h1, 77, 1, 3, blob.data, blob.len, &plain),
                     KF_ERR_FORMAT);
    assert_int_equal(kf_secmod_unwrap(f->sm, h1, 77, 1, 3, blob.data, 20, &plain),
                     KF_ERR_FORMAT);
    /* A handle that was never issued. */
    assert_int_equal(kf_secmod_unwrap(f->sm, h1 + 100, 77, 1, 3, blob.data, blob.len, &plain),
                     KF_ERR_ARG);

    /* Seal wipes: everything is refused, and old handles die for good. */
    kf_secmod_seal(f->sm);
    assert_true(kf_secmod_sealed(f->sm));
    expect_every_op_refused(f->sm, KF_ERR_SEALED);
    blob.data[0] = 0x01;
    const int again[] = {4, 3, 2};
    unseal_with(f->sm, f->shares, again, 3);
    assert_int_equal(kf_secmod_unwrap(f->sm, h1, 77, 1, 3, blob.data, blob.len, &plain),
                     KF_ERR_ARG);
    /* The reloaded domain key unwraps what was stored before the seal. */
    assert_int_equal(kf_secmod_domain_key_load(f->sm, 1, dk1.data, dk1.len, &h1), KF_OK);
    assert_int_equal(kf_secmod_unwrap(f->sm, h1, 77, 1, 3, blob.data, blob.len, &plain), KF_OK);
    assert_memory_equal(plain.data, secret, sizeof(secret));

    kf_buf_free(&dk1);
    kf_buf_free(&dk2);
    kf_buf_free(&blob);
    kf_buf_free(&plain);
}

static void audit_mac_is_stable_across_restarts(void **state)
{
    struct fixture *f = *state;
    init_3_of_5(f);
    const int which[] = {0, 1, 2};
    unseal_with(f->sm, f->shares, which, 3);
    uint8_t a[32], b[32], c[32];
    assert_int_equal(kf_secmod_audit_mac(f->sm, (const uint8_t *)"record 1", 8, a), KF_OK);
    assert_int_equal(kf_secmod_audit_mac(f->sm, (const uint8_t *)"record 2", 8, c), KF_OK);
    assert_memory_not_equal(a, c, 32);
    /* A restart (new object, same directory, other shares) gives the same MAC. */
    kf_secmod_close(f->sm);
    f->sm = open_soft(f->dir);
    assert_true(kf_secmod_sealed(f->sm));
    const int other[] = {3, 4, 0};
    unseal_with(f->sm, f->shares, other, 3);
    assert_int_equal(kf_secmod_audit_mac(f->sm, (const uint8_t *)"record 1", 8, b), KF_OK);
    assert_memory_equal(a, b, 32);
}

/* ---- dev mode ---- */

static void dev_key_path(const struct fixture *f, char *path, size_t cap)
{
    snprintf(path, cap, "%s/dev-root.key", f->dir);
}

/* In dev mode the root key is known (the file holds it), so the documented
 * derivations can be checked from outside the module. */
static void dev_mode_derivations_are_as_documented(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(kf_secmod_init_soft(f->sm, 1, 1, true, f->shares), KF_OK);
    struct kf_share root;
    assert_int_equal(kf_share_decode(f->shares[0], strlen(f->shares[0]), &root), KF_OK);
    assert_int_equal(root.len, 32);

    /* secmod.meta ends with KCV = HMAC-SHA-256(root, "keyfleet root check")[0..16). */
    uint8_t mac[32], meta[64];
    assert_int_equal(kf_hmac_sha256(root.y, 32, (const uint8_t *)"keyfleet root check", 19, mac),
                     KF_OK);
    char path[128];
    snprintf(path, sizeof(path), "%s/secmod.meta", f->dir);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    size_t meta_len = fread(meta, 1, sizeof(meta), fp);
    fclose(fp);
    assert_true(meta_len > 16);
    assert_memory_equal(meta + meta_len - 16, mac, 16);

    /* Audit MAC = HMAC-SHA-256(HKDF-SHA-256(root, info "keyfleet audit mac"), data). */
    assert_int_equal(kf_secmod_unseal_dev(f->sm), KF_OK);
    uint8_t audit_key[32], expected[32], got[32];
    assert_int_equal(kf_hkdf_sha256(NULL, 0, root.y, 32, (const uint8_t *)"keyfleet audit mac",
                                    18, audit_key, 32),
                     KF_OK);
    assert_int_equal(kf_hmac_sha256(audit_key, 32, (const uint8_t *)"checkpoint", 10, expected),
                     KF_OK);
    assert_int_equal(kf_secmod_audit_mac(f->sm, (const uint8_t *)"checkpoint", 10, got), KF_OK);
    assert_memory_equal(got, expected, 32);

    /* Domain keys are AES-256-GCM under HKDF(root, "keyfleet domain-key wrap")
     * with AD "kf-domain-v1" || domain id: open one from outside. */
    kf_buf dk;
    assert_int_equal(kf_buf_alloc(&dk, 16, 256, 0), KF_OK);
    assert_int_equal(kf_secmod_domain_key_new(f->sm, 0x0102030405060708ull, &dk), KF_OK);
    uint8_t wrap_key[32], domain_key[32];
    assert_int_equal(kf_hkdf_sha256(NULL, 0, root.y, 32,
                                    (const uint8_t *)"keyfleet domain-key wrap", 24, wrap_key, 32),
                     KF_OK);
    const uint8_t ad[] = "kf-domain-v1\x01\x02\x03\x04\x05\x06\x07\x08";
    assert_int_equal(kf_aes_gcm_open(wrap_key, 32, dk.data + 1, 12, ad, sizeof(ad) - 1,
                                     dk.data + 13, 32, dk.data + 45, domain_key),
                     KF_OK);
    kf_buf_free(&dk);
    kf_wipe(&root, sizeof(root));
    kf_wipe(audit_key, sizeof(audit_key));
    kf_wipe(wrap_key, sizeof(wrap_key));
    kf_wipe(domain_key, sizeof(domain_key));
}

static void dev_mode_unseals_from_a_private_key_file_only(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(kf_secmod_init_soft(f->sm, 1, 1, true, f->shares), KF_OK);
    assert_true(kf_secmod_sealed(f->sm));
    char path[128];
    struct stat st;
    dev_key_path(f, path, sizeof(path));
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    assert_int_equal(kf_secmod_unseal_dev(f->sm), KF_OK);
    assert_false(kf_secmod_sealed(f->sm));
    assert_int_equal(kf_secmod_unseal_dev(f->sm), KF_ERR_ALREADY_UNSEALED);
    kf_secmod_seal(f->sm);

    /* Readable by the group: refused, the key may already be out. */
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(kf_secmod_unseal_dev(f->sm), KF_ERR_PERM);
    assert_int_equal(chmod(path, 0600), 0);

    /* A symlink in its place is not followed. */
    char moved[128];
    snprintf(moved, sizeof(moved), "%s/elsewhere.key", f->dir);
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(symlink(moved, path), 0);
    assert_int_equal(kf_secmod_unseal_dev(f->sm), KF_ERR_PERM);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(kf_secmod_unseal_dev(f->sm), KF_ERR_NOT_FOUND);
    assert_int_equal(rename(moved, path), 0);

    /* A reopened module unseals itself again. */
    kf_secmod_close(f->sm);
    f->sm = open_soft(f->dir);
    assert_int_equal(kf_secmod_unseal_dev(f->sm), KF_OK);
}

static void production_module_has_no_dev_unseal(void **state)
{
    struct fixture *f = *state;
    init_3_of_5(f);
    assert_int_equal(kf_secmod_unseal_dev(f->sm), KF_ERR_UNSUPPORTED);
    char path[128];
    struct stat st;
    dev_key_path(f, path, sizeof(path));
    assert_int_equal(stat(path, &st), -1); /* and no key file was written */
}

static void damaged_metadata_is_refused_at_open(void **state)
{
    struct fixture *f = *state;
    init_3_of_5(f);
    char path[128];
    snprintf(path, sizeof(path), "%s/secmod.meta", f->dir);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fputc('X', fp); /* break the magic */
    fclose(fp);
    struct kf_secmod_config cfg = {.backend = KF_SECMOD_SOFT, .dir = f->dir};
    kf_secmod *sm = NULL;
    assert_int_equal(kf_secmod_open(&cfg, &sm), KF_ERR_FORMAT);
    assert_null(sm);
    /* Truncated. */
    assert_int_equal(truncate(path, 10), 0);
    assert_int_equal(kf_secmod_open(&cfg, &sm), KF_ERR_FORMAT);
    struct kf_secmod_config bad = {.backend = KF_SECMOD_SOFT, .dir = NULL};
    assert_int_equal(kf_secmod_open(&bad, &sm), KF_ERR_ARG);
}

/* ---- threads ---- */

struct worker {
    kf_secmod *sm;
    kf_domain_handle h;
    int failures;
};

static void *wrap_unwrap_loop(void *arg)
{
    struct worker *w = arg;
    for (uint32_t i = 0; i < 200; i++) {
        kf_buf blob, plain;
        uint8_t secret[32];
        memset(secret, (int)i, sizeof(secret));
        if (kf_buf_alloc(&blob, 64, 256, 0) < 0 || kf_buf_alloc(&plain, 64, 256, 0) < 0) {
            w->failures++;
            continue;
        }
        if (kf_secmod_wrap(w->sm, w->h, i, 1, 1, secret, 32, &blob) != KF_OK ||
            kf_secmod_unwrap(w->sm, w->h, i, 1, 1, blob.data, blob.len, &plain) != KF_OK ||
            plain.len != 32 || memcmp(plain.data, secret, 32) != 0)
            w->failures++;
        kf_buf_free(&blob);
        kf_buf_free(&plain);
    }
    return NULL;
}

static void concurrent_wrap_and_unwrap(void **state)
{
    struct fixture *f = *state;
    init_3_of_5(f);
    const int which[] = {0, 1, 2};
    unseal_with(f->sm, f->shares, which, 3);
    kf_buf dk;
    kf_domain_handle h;
    assert_int_equal(kf_buf_alloc(&dk, 16, 256, 0), KF_OK);
    assert_int_equal(kf_secmod_domain_key_new(f->sm, 1, &dk), KF_OK);
    assert_int_equal(kf_secmod_domain_key_load(f->sm, 1, dk.data, dk.len, &h), KF_OK);
    kf_buf_free(&dk);
    pthread_t t[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){.sm = f->sm, .h = h};
        assert_int_equal(pthread_create(&t[i], NULL, wrap_unwrap_loop, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(before_init_everything_says_not_initialised),
        T(init_refuses_bad_thresholds),
        T(sealed_after_init_and_unsealed_by_any_three),
        T(share_mistakes_are_refused),
        T(shares_from_another_init_do_not_rebuild),
        T(domain_key_and_secret_round_trip),
        T(audit_mac_is_stable_across_restarts),
        T(dev_mode_derivations_are_as_documented),
        T(dev_mode_unseals_from_a_private_key_file_only),
        T(production_module_has_no_dev_unseal),
        T(damaged_metadata_is_refused_at_open),
        T(concurrent_wrap_and_unwrap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
