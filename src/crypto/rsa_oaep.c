/*
 * RSAES-OAEP (RFC 8017 section 7.1). Neither nettle 3.8 nor GnuTLS 3.7 offer
 * it, so EME-OAEP is composed here from nettle's pss_mgf1 (MGF1) and the raw
 * RSA operations: RSAEP as mpz_powm with the public exponent, RSADP as
 * nettle's blinded and fault-checked rsa_compute_root_tr.
 *
 * CT: decoding does not branch on, or index by, secret data until every
 * check is folded into one flag; all decoding failures give the same error
 * (KF_ERR_AUTH) so they cannot be told apart (Manger's attack).
 */
#include <string.h>

#include <nettle/bignum.h>
#include <nettle/memxor.h>
#include <nettle/pss-mgf1.h>

#include "crypto/crypto_internal.h"
#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

/* target ^= MGF1(seed, target_len) over hash; mask is scratch of target_len bytes. */
static void mgf1_xor(const struct nettle_hash *hash, const uint8_t *seed, size_t seed_len,
                     uint8_t *target, size_t target_len, uint8_t *mask)
{
    kf_any_hash_state state;
    hash->init(&state);
    hash->update(&state, seed_len, seed);
    pss_mgf1(&state, hash, target_len, mask);
    memxor(target, mask, target_len);
    kf_wipe(&state, sizeof(state));
    kf_wipe(mask, target_len);
}

/* A scratch area in secure memory: the encoded message and a mask buffer, k bytes each. */
struct oaep_scratch {
    uint8_t *em;
    uint8_t *mask;
};

static int scratch_alloc(struct oaep_scratch *s, size_t k)
{
    s->em = kf_secmem_alloc(2 * k);
    KF_ENSURE(s->em, KF_ERR_SECMEM);
    s->mask = s->em + k;
    return KF_OK;
}

static void scratch_free(struct oaep_scratch *s)
{
    kf_secmem_free(s->em);
    s->em = s->mask = NULL;
}

/* EM = 0x00 || maskedSeed || maskedDB, from RFC 8017 7.1.1 step 2. */
static int oaep_encode(const struct nettle_hash *hash, const struct nettle_hash *mgf,
                       const uint8_t *label, size_t label_len, const uint8_t *msg, size_t len,
                       uint8_t *em, size_t k, uint8_t *mask)
{
    size_t hlen = hash->digest_size;
    uint8_t *seed = em + 1;
    uint8_t *db = em + 1 + hlen;
    size_t db_len = k - hlen - 1;
    kf_any_hash_state state;
    hash->init(&state);
    if (label_len)
        hash->update(&state, label_len, label);
    hash->digest(&state, hlen, db); /* lHash */
    memset(db + hlen, 0, db_len - hlen - len - 1);
    db[db_len - len - 1] = 0x01;
    if (len)
        memcpy(db + db_len - len, msg, len);
    em[0] = 0x00;
    KF_GUARD(kf_crypto_random(seed, hlen));
    mgf1_xor(mgf, seed, hlen, db, db_len, mask);
    mgf1_xor(mgf, db, db_len, seed, hlen, mask);
    return KF_OK;
}

int kf_rsa_oaep_encrypt(const kf_rsa_key *k, enum kf_hash h, const uint8_t *label,
                        size_t label_len, const uint8_t *msg, size_t len, uint8_t *out)
{
    return kf_rsa_oaep_encrypt_ex(k, h, h, label, label_len, msg, len, out);
}

int kf_rsa_oaep_encrypt_ex(const kf_rsa_key *k, enum kf_hash h, enum kf_hash mgf_h,
                           const uint8_t *label, size_t label_len, const uint8_t *msg, size_t len,
                           uint8_t *out)
{
    KF_ENSURE(k && out && (msg || len == 0) && (label || label_len == 0), KF_ERR_ARG);
    const struct nettle_hash *hash = kf_nettle_hash(h), *mgf = kf_nettle_hash(mgf_h);
    KF_ENSURE(hash && mgf, KF_ERR_UNSUPPORTED);
    size_t kbytes = k->pub.size, hlen = hash->digest_size;
    KF_ENSURE(kbytes >= 2 * hlen + 2, KF_ERR_KEY_SIZE);
    KF_ENSURE(len <= kbytes - 2 * hlen - 2, KF_ERR_LIMIT); /* "message too long" */

    struct oaep_scratch scratch;
    KF_GUARD(scratch_alloc(&scratch, kbytes));
    int rc = oaep_encode(hash, mgf, label, label_len, msg, len, scratch.em, kbytes, scratch.mask);
    if (rc == KF_OK) {
        mpz_t m, c;
        mpz_init(m);
        mpz_init(c);
        nettle_mpz_set_str_256_u(m, kbytes, scratch.em);
        mpz_powm(c, m, k->pub.e, k->pub.n); /* RSAEP; m < n since its top octet is zero */
        nettle_mpz_get_str_256(kbytes, out, c);
        kf_mpz_clear_secret(m);
        mpz_clear(c);
    }
    scratch_free(&scratch);
    return rc;
}

/* CT: all-ones if x == 0 else 0. */
static uint32_t ct_is_zero_mask(uint32_t x)
{
    return (uint32_t)0 - (uint32_t)(((uint64_t)x - 1) >> 63);
}

/*
 * CT: RFC 8017 7.1.2 step 3 on EM; on success *msg_at is the offset of M in EM.
 * Returns all-ones if EM is well formed, 0 otherwise.
 */
static uint32_t oaep_decode(const struct nettle_hash *hash, const struct nettle_hash *mgf,
                            const uint8_t *label, size_t label_len, uint8_t *em, size_t k,
                            uint8_t *mask, size_t *msg_at)
{
    size_t hlen = hash->digest_size;
    uint8_t *seed = em + 1;
    uint8_t *db = em + 1 + hlen;
    size_t db_len = k - hlen - 1;
    uint8_t lhash[KF_MAX_DIGEST_SIZE];
    kf_any_hash_state state;
    hash->init(&state);
    if (label_len)
        hash->update(&state, label_len, label);
    hash->digest(&state, hlen, lhash);

    mgf1_xor(mgf, db, db_len, seed, hlen, mask);
    mgf1_xor(mgf, seed, hlen, db, db_len, mask);

    uint32_t good = ct_is_zero_mask(em[0]);
    good &= kf_ct_equal(db, lhash, hlen) ? 0xffffffffu : 0;
    /* Find the 0x01 after the zero padding without branching on the bytes. */
    uint32_t looking = 0xffffffffu;
    uint32_t separator_at = 0;
    for (size_t i = hlen; i < db_len; i++) {
        uint32_t is_zero = ct_is_zero_mask(db[i]);
        uint32_t is_one = ct_is_zero_mask(db[i] ^ 0x01u);
        separator_at |= looking & is_one & (uint32_t)i;
        good &= ~(looking & ~is_zero & ~is_one); /* a stray byte before the separator */
        looking &= ~is_one;
    }
    good &= ~looking; /* no separator at all */
    *msg_at = 1 + hlen + (size_t)separator_at + 1;
    kf_wipe(lhash, sizeof(lhash));
    return good;
}

/* m = c^d mod n into em (k bytes), refusing c >= n. */
static int oaep_rsadp(const kf_rsa_key *k, const uint8_t *in, uint8_t *em)
{
    mpz_t c, m;
    mpz_init(c);
    mpz_init(m);
    nettle_mpz_set_str_256_u(c, k->pub.size, in);
    struct kf_random_ctx rnd = {0};
    int rc = KF_OK;
    if (mpz_cmp(c, k->pub.n) >= 0)
        rc = KF_ERR_AUTH;
    else if (!rsa_compute_root_tr(&k->pub, &k->priv, &rnd, kf_nettle_random, m, c))
        rc = KF_ERR_CRYPTO;
    else if (rnd.failed)
        rc = KF_ERR_RNG_SOURCE;
    if (rc == KF_OK)
        nettle_mpz_get_str_256(k->pub.size, em, m);
    mpz_clear(c);
    kf_mpz_clear_secret(m);
    return rc;
}

int kf_rsa_oaep_decrypt(const kf_rsa_key *k, enum kf_hash h, const uint8_t *label,
                        size_t label_len, const uint8_t *in, size_t in_len, uint8_t *out,
                        size_t *out_len)
{
    return kf_rsa_oaep_decrypt_ex(k, h, h, label, label_len, in, in_len, out, out_len);
}

int kf_rsa_oaep_decrypt_ex(const kf_rsa_key *k, enum kf_hash h, enum kf_hash mgf_h,
                           const uint8_t *label, size_t label_len, const uint8_t *in,
                           size_t in_len, uint8_t *out, size_t *out_len)
{
    KF_ENSURE(k && in && out && out_len && (label || label_len == 0), KF_ERR_ARG);
    KF_ENSURE(k->has_private, KF_ERR_ARG);
    const struct nettle_hash *hash = kf_nettle_hash(h), *mgf = kf_nettle_hash(mgf_h);
    KF_ENSURE(hash && mgf, KF_ERR_UNSUPPORTED);
    size_t kbytes = k->pub.size, hlen = hash->digest_size;
    KF_ENSURE(kbytes >= 2 * hlen + 2, KF_ERR_KEY_SIZE);
    KF_ENSURE(in_len == kbytes, KF_ERR_AUTH); /* 7.1.2 step 1: public length check */

    struct oaep_scratch scratch;
    KF_GUARD(scratch_alloc(&scratch, kbytes));
    int rc = oaep_rsadp(k, in, scratch.em);
    if (rc == KF_OK) {
        size_t msg_at = 0;
        uint32_t good = oaep_decode(hash, mgf, label, label_len, scratch.em, kbytes,
                                    scratch.mask, &msg_at);
        /* The verdict is now public (it is the return value); only then use msg_at. */
        if (good) {
            *out_len = kbytes - msg_at;
            memcpy(out, scratch.em + msg_at, *out_len);
        } else {
            rc = KF_ERR_AUTH;
        }
    }
    scratch_free(&scratch);
    return rc;
}
