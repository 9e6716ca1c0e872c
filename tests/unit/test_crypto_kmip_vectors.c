/*
 * Known answers for the primitives the KMIP 1.4 profiles need beyond the
 * basics, from published data only:
 *  - AES-ECB: FIPS-197 Appendix C.1;
 *  - Triple DES ECB: SP 800-67 Rev. 2 example (the "qufck" plaintext);
 *  - GCM with a 64-bit IV and truncated tags: McGrew & Viega Test Case 5;
 *  - RSA-OAEP with MGF1 over another hash, and RSA-PSS with the maximal salt:
 *    the OASIS KMIP 1.4 profile test cases CS-AC-M-OAEP-8 and CS-AC-M-2
 *    (reference-server data published with the standard).
 * Every refusal path has a negative test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "keyfleet/crypto.h"
#include "keyfleet/secmem.h"

/* CS-AC-M-OAEP-8-14: RSA-2048 private key, PKCS#1 RSAPrivateKey DER */
static const char OAEP8_PRIV_PKCS1[] =
    "308204a4020100028201010096ed9882e639115e6502348aed486317b6d8cbed47d4250a"
    "7261a829b2b1ef9a0dabc35861b9d599d8d2761364128976425e166a8e7fcc99f4a225b1"
    "71b6887ce29031d114cd6b3b9b87f0443f4c327905458f72e326874fd9af16986477b33c"
    "43a20f8c9653b2cce47492d9e63cf6713c3a9026d000ebd19310168d209ebfa7b58138c5"
    "80e8c80954d0f5dd65fa24be9f5d0b5d79f8eb65eb84eb4a14ff97851f1c7630802bd106"
    "d8dcc2096989d02c7a67f05552e394827d19929a3ff9adb1d73f26dc3c98ce376f5bf888"
    "e82aa5868c2e0e7fe1cab6d691009da7ee0e483157158c280222acdbec0e1646750614d3"
    "10929113e2560a108bf1299bdcd7747d020301000102820100117275e6ebe63cf3c48974"
    "b97aa49b8fea3b3597c06dedba3f6eba99d7666a644ca0467cb90f5a79e66eade79ff1e4"
    "a21f19f14d701ba5f3462c585f22de0ef920d7ba6a8915160855fa68f3fabd3c38713b91"
    "519ea09d93c57e50065dd6d88966e81d140b6cb186ae022bd7b49de77f3f8f258ad710c4"
    "31fde626353a481faf7e01c10fedd103ea5e2a20c86067ef323fbc0353d41d63adc51355"
    "d8698f34c9d084f3d93ea5f9461ef66a6401abea4566f5bc11551d11152123917706d78a"
    "b95668b673b0c73f3fe480659a047a71ef63313bc8935ae0bc3959939a0193835024e39b"
    "1c816d63de8dbda1a0a728fc1cba8c66fc079c8b07f39559af6ca42f0102818100c499b8"
    "f60d5989746b60939ae5d6466962197aef212a0db5eb618f07fe0e35e21bf6d445bd5e57"
    "1b71c83a3e4cb84f683918a0b87adcd6d7beeb3fca9b87d9437d78f694557bc3d47e96e8"
    "ff83c958018ec70bfec998804d41eb21db99f6bd07cf3621dd6e70f4907a259ea2199208"
    "613bc655a804ca9c6ec1c5ff8918d12b0902818100c4874b4f5aa8538d8af15d945e9be8"
    "42e4a7c08dfe7a42aee4cc375df415640904451cfa15d1cdda5d31f34d45e928986ba52c"
    "3b373c539fdacfe428d70b52a4eb2419277d50f1466debeab0ca24886390fae9d7e611a2"
    "b2993a59e2dc6bb874225f8ce3b2fcf6563421cc4ffd0dc119bff1c17d36bbba40c9fd4d"
    "0df4d4f6d50281810081befd8d0cc4616d7e8bcefdf3ded4bb29adad2ef191225943cd2f"
    "aad3a4a734e0c5a5d39ca50d11a4a6c2a168da5e356730f4a8ab14e188a28bf89e8ac43d"
    "c347a433ff32e72a172bb00676d28f675027dcfef29832d7c1a4d63b9304ea0c58820cb4"
    "8ec11b349bc0b0e11f13870796bbef298a68171ae41167cd3bba30189902818100aafdc0"
    "33aa003cba3142b2160e7efe057da6cb2d805565c17fc68301d705e984c2d7534ff03e1c"
    "2a3adde3ffbead0faa16369f166287b586a73e2c18b089e47d232dc4490c8aa9728adf31"
    "d261fe89407ffb200cbddb6840967b238bf4163165b2268a91eec093a00b39c0e773984d"
    "039772c3d3ab14890827f6a0dd5cc112850281805205e5b103124de9aa55980b26c6fbd9"
    "3b7d3b9ec3ad5df3a7eff2d51f6a14902137ce532bb10a2d1b52ea72a51b3c516cec5d80"
    "00282b87552f9eab4f18dc6756c4d18caeda4edeb4cb9ce510a0e0d636ff43177d768281"
    "830c7cd826d242348bfdb982827365a3d8cdb8f58336377e9ff9ce9f7c4d1b8f2c6a8c93"
    "bcbaecd1";
/* CS-AC-M-OAEP-8-14: OAEP ciphertext (SHA-384 label hash, MGF1 with SHA-256) */
static const char OAEP8_CT[] =
    "275b67e8a848e1d93bd8f3c9430b57321463a174b7f13e015f446c5c309eabb4eab05f75"
    "14496b4b2de302f18bbbd46efd956fcb3b0cd5491241ce706a74f1066f2b49ce4038d2bb"
    "b0384290d217cba6345e487686824cd11d7cbefcdf453f2db1f1a8babc5f82e2160d9b4f"
    "ea350cb3d81c7cad90ff09a8d7d5e36d737daa5c54915468431423e860504b35b1d7694d"
    "2ff167d2389e9314543fd8738e9a6842a6d34f48cff0251fd5e7e015b038156ce2fb0b7f"
    "9869d027725a847f9f3d63bec0234ba7c7bed0c28b33e39c0b5122fed4ed2aeb7b847ae2"
    "19506330646ccb9fdde61da369cddc04fedc0c907e5ea05489dc4401d52922fb18ae6077"
    "05573675";
/* CS-AC-M-OAEP-8-14: the plaintext it decrypts to */
static const char OAEP8_PT[] =
    "6628194e12073db03ba94cda9ef9532397d50dba79b987004afefe34";
/* CS-AC-M-2-14: RSA-2048 public key, PKCS#1 RSAPublicKey DER */
static const char PSS2_PUB_PKCS1[] =
    "3082010a0282010100ab7f161c0042496ccd6c6d4dadb919973435357776003acf54b7af"
    "1e440afb80b64a8755f8002cfeba6b184540a2d66086d74648346d75b8d71812b205387c"
    "0f6583bc4d7dc7ec114f3b176b7957c422e7d03fc6267fa2a6f89b9bee9e60a1d7c2d833"
    "e5a5f4bb0b1434f4e795a41100f8aa214900df8b65089f98135b1c67b701675abdbc7d57"
    "21aac9d14a7f081fcec80b64e8a0ecc8295353c795328abf70e1b42e7bb8b7f4e8ac8c81"
    "0cdb66e3d21126eba8da7d0ca34142cb76f91f013da809e9c1b7ae64c54130fbc21d80e9"
    "c2cb06c5c8d7cce8946a9ac99b1c2815c3612a29a82d73a1f99374fe30e54951662a6eda"
    "29c6fc411335d5dc7426b0f6050203010001";
/* CS-AC-M-2-14: signed data */
static const char PSS2_MSG[] =
    "01020304050607080910111213141516";
/* CS-AC-M-2-14: RSASSA-PSS SHA-256 signature with the maximal salt (222 bytes) */
static const char PSS2_SIG[] =
    "2925ebf8c6c9d0585c36a44491dd28f8ffd1098d2275a505a0eba7af452e9496472fd5c4"
    "a515d1c0db16c7c59ef76863b571cbf498fb8178ffeb75667e6e51b9b9bbf09d55bba54b"
    "42acb947aa5a81dc62751727d7cad4616c0c0bf1dd666f8266f24262c5fa9cbbdc424ef5"
    "f5e345e633d111e66eb4afc4001bb02e158b2d5d4573c614655f21a688bee0e9dbde6a58"
    "324c08f42ae69697e0c51803f9de6b3df242d2915d9b1a8110ad28143ab7855ef92ede48"
    "971b484172de3b0b8957f493a74b3372ee2200f2233607735f90d0b180968ab20d74841f"
    "d3dba4fb1f225ea5c6c87f99c2a238db72a536e68be202a092cd032337d451477e568f9a"
    "48b638cb";

/* Hex to bytes; the caller frees. */
static uint8_t *unhex(const char *hex, size_t *len)
{
    size_t n = strlen(hex) / 2;
    uint8_t *out = malloc(n + 1);
    assert_non_null(out);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    *len = n;
    return out;
}

/* FIPS-197 C.1 (AES-128) and its inverse; ECB is block by block, so two blocks are two C.1s. */
static void aes_ecb_fips197(void **state)
{
    (void)state;
    size_t kl, pl, cl;
    uint8_t *key = unhex("000102030405060708090a0b0c0d0e0f", &kl);
    uint8_t *pt = unhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", &pl);
    uint8_t *ct = unhex("69c4e0d86a7b0430d8cdb78070b4c55a69c4e0d86a7b0430d8cdb78070b4c55a", &cl);
    uint8_t out[32];
    assert_int_equal(kf_aes_ecb_encrypt(key, kl, pt, pl, out), KF_OK);
    assert_memory_equal(out, ct, cl);
    assert_int_equal(kf_aes_ecb_decrypt(key, kl, ct, cl, out), KF_OK);
    assert_memory_equal(out, pt, pl);
    /* Refusals: a partial block, a bad key length. */
    assert_int_equal(kf_aes_ecb_encrypt(key, kl, pt, 15, out), KF_ERR_ARG);
    assert_int_equal(kf_aes_ecb_decrypt(key, 15, ct, 16, out), KF_ERR_KEY_SIZE);
    free(key);
    free(pt);
    free(ct);
}

/* SP 800-67 Rev. 2 worked example: K1||K2||K3, P = "The qufck brown fox jump". */
static void des3_sp800_67_example(void **state)
{
    (void)state;
    size_t kl, cl;
    uint8_t *key = unhex("0123456789abcdef23456789abcdef01456789abcdef0123", &kl);
    uint8_t *ct = unhex("a826fd8ce53b855fcce21c8112256fe668d5c05dd9b6b900", &cl);
    static const uint8_t pt[] = "The qufck brown fox jump";
    uint8_t out[24];
    assert_int_equal(kf_des3_encrypt(key, kl, NULL, pt, 24, out), KF_OK);
    assert_memory_equal(out, ct, cl);
    assert_int_equal(kf_des3_decrypt(key, kl, NULL, ct, cl, out), KF_OK);
    assert_memory_equal(out, pt, 24);
    /* CBC with a zero IV equals ECB on the first block, and round-trips. */
    static const uint8_t zero_iv[8] = {0};
    uint8_t cbc[24], back[24];
    assert_int_equal(kf_des3_encrypt(key, kl, zero_iv, pt, 24, cbc), KF_OK);
    assert_memory_equal(cbc, ct, 8);
    assert_memory_not_equal(cbc + 8, ct + 8, 8);
    assert_int_equal(kf_des3_decrypt(key, kl, zero_iv, cbc, 24, back), KF_OK);
    assert_memory_equal(back, pt, 24);
    /* Parity: clearing the low bits of each byte and fixing them gives the key back. */
    uint8_t k2[24];
    for (size_t i = 0; i < 24; i++)
        k2[i] = key[i] & 0xfe;
    kf_des3_fix_parity(k2, sizeof(k2));
    assert_memory_equal(k2, key, 24);
    /* Refusals: partial block, 16-byte (two-key) material, a weak DES key. */
    assert_int_equal(kf_des3_encrypt(key, kl, NULL, pt, 20, out), KF_ERR_ARG);
    assert_int_equal(kf_des3_encrypt(key, 16, NULL, pt, 8, out), KF_ERR_KEY_SIZE);
    uint8_t weak[24];
    memset(weak, 0x01, sizeof(weak)); /* 0101010101010101 is a DES weak key */
    assert_int_equal(kf_des3_encrypt(weak, sizeof(weak), NULL, pt, 8, out), KF_ERR_KEY_SIZE);
    free(key);
    free(ct);
}

#define TC5_KEY "feffe9928665731c6d6a8f9467308308"
#define TC5_IV "cafebabefacedbad"
#define TC5_PT \
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
#define TC5_AD "feedfacedeadbeeffeedfacedeadbeefabaddad2"
#define TC5_CT \
    "61353b4c2806934a777ff51fa22a4755699b2a714fcdc6f83766e5f97b6c742373806900e49f24b22b097544d4896b424989b5e1ebac0f07c23f4598"
#define TC5_TAG "3612d2e79e3b0785561be14aaca2fccb"

/* McGrew & Viega Test Case 5: 8-byte IV; tags truncated to 12 and 8 bytes (SP 800-38D 5.2.1.2). */
static void gcm_short_iv_and_truncated_tags(void **state)
{
    (void)state;
    size_t kl, il, pl, al, cl, tl;
    uint8_t *key = unhex(TC5_KEY, &kl), *iv = unhex(TC5_IV, &il), *pt = unhex(TC5_PT, &pl);
    uint8_t *ad = unhex(TC5_AD, &al), *ct = unhex(TC5_CT, &cl), *tag = unhex(TC5_TAG, &tl);
    uint8_t out[64], t[16];
    assert_int_equal(kf_aes_gcm_seal_ex(key, kl, iv, il, ad, al, pt, pl, out, t, 16), KF_OK);
    assert_memory_equal(out, ct, cl);
    assert_memory_equal(t, tag, 16);
    assert_int_equal(kf_aes_gcm_seal_ex(key, kl, iv, il, ad, al, pt, pl, out, t, 12), KF_OK);
    assert_memory_equal(t, tag, 12);
    assert_int_equal(kf_aes_gcm_open_ex(key, kl, iv, il, ad, al, ct, cl, tag, 8, out), KF_OK);
    assert_memory_equal(out, pt, pl);
    /* A changed truncated tag fails and leaves no plaintext. */
    uint8_t bad[8];
    memcpy(bad, tag, 8);
    bad[7] ^= 1;
    assert_int_equal(kf_aes_gcm_open_ex(key, kl, iv, il, ad, al, ct, cl, bad, 8, out), KF_ERR_AUTH);
    for (size_t i = 0; i < pl; i++)
        assert_int_equal(out[i], 0);
    /* Tag lengths SP 800-38D does not allow. */
    assert_int_equal(kf_aes_gcm_seal_ex(key, kl, iv, il, ad, al, pt, pl, out, t, 1), KF_ERR_ARG);
    assert_int_equal(kf_aes_gcm_seal_ex(key, kl, iv, il, ad, al, pt, pl, out, t, 10), KF_ERR_ARG);
    assert_int_equal(kf_aes_gcm_open_ex(key, kl, iv, il, ad, al, ct, cl, tag, 17, out), KF_ERR_ARG);
    free(key);
    free(iv);
    free(pt);
    free(ad);
    free(ct);
    free(tag);
}

/* CS-AC-M-OAEP-8: label hash SHA-384, MGF1 over SHA-256. */
static void oaep_with_separate_mgf_hash(void **state)
{
    (void)state;
    size_t kl, cl, pl;
    uint8_t *der = unhex(OAEP8_PRIV_PKCS1, &kl), *ct = unhex(OAEP8_CT, &cl);
    uint8_t *pt = unhex(OAEP8_PT, &pl);
    kf_rsa_key *k;
    assert_int_equal(kf_rsa_import_private(der, kl, &k), KF_OK);
    uint8_t out[256];
    size_t n = 0;
    assert_int_equal(kf_rsa_oaep_decrypt_ex(k, KF_HASH_SHA384, KF_HASH_SHA256, NULL, 0, ct, cl,
                                            out, &n),
                     KF_OK);
    assert_int_equal(n, pl);
    assert_memory_equal(out, pt, pl);
    /* The same hash for both (the plain function) does not decode it. */
    assert_int_equal(kf_rsa_oaep_decrypt(k, KF_HASH_SHA384, NULL, 0, ct, cl, out, &n), KF_ERR_AUTH);
    /* Encrypt with the pair, decrypt back (OAEP encryption is randomised). */
    uint8_t ct2[256];
    assert_int_equal(kf_rsa_oaep_encrypt_ex(k, KF_HASH_SHA512, KF_HASH_SHA1, NULL, 0, pt, pl, ct2),
                     KF_OK);
    assert_int_equal(kf_rsa_oaep_decrypt_ex(k, KF_HASH_SHA512, KF_HASH_SHA1, NULL, 0, ct2,
                                            sizeof(ct2), out, &n),
                     KF_OK);
    assert_memory_equal(out, pt, pl);
    assert_int_equal(kf_rsa_oaep_decrypt_ex(k, KF_HASH_SHA512, KF_HASH_SHA256, NULL, 0, ct2,
                                            sizeof(ct2), out, &n),
                     KF_ERR_AUTH);
    assert_int_equal(kf_rsa_oaep_encrypt_ex(k, KF_HASH_SHA256, (enum kf_hash)99, NULL, 0, pt, pl,
                                            ct2),
                     KF_ERR_UNSUPPORTED);
    kf_rsa_free(k);
    free(der);
    free(ct);
    free(pt);
}

/* CS-AC-M-2: PSS SHA-256 with salt length emLen - hLen - 2 = 222. */
static void pss_with_maximal_salt(void **state)
{
    (void)state;
    size_t kl, ml, sl;
    uint8_t *der = unhex(PSS2_PUB_PKCS1, &kl), *msg = unhex(PSS2_MSG, &ml);
    uint8_t *sig = unhex(PSS2_SIG, &sl);
    kf_rsa_key *k;
    assert_int_equal(kf_rsa_import_public(der, kl, &k), KF_OK);
    assert_int_equal(kf_rsa_pss_max_salt_len(k, KF_HASH_SHA256), 222);
    assert_int_equal(kf_rsa_pss_verify_ex(k, KF_HASH_SHA256, 222, msg, ml, sig, sl), KF_OK);
    /* The default salt length (hash length) does not match it. */
    assert_int_equal(kf_rsa_pss_verify(k, KF_HASH_SHA256, msg, ml, sig, sl), KF_ERR_BAD_SIGNATURE);
    msg[0] ^= 0xfe; /* the case's second request: 0xFF instead of 0x01 */
    assert_int_equal(kf_rsa_pss_verify_ex(k, KF_HASH_SHA256, 222, msg, ml, sig, sl),
                     KF_ERR_BAD_SIGNATURE);
    assert_int_equal(kf_rsa_pss_max_salt_len(NULL, KF_HASH_SHA256), 0);
    kf_rsa_free(k);
    free(der);
    free(msg);
    free(sig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(aes_ecb_fips197),
        cmocka_unit_test(des3_sp800_67_example),
        cmocka_unit_test(gcm_short_iv_and_truncated_tags),
        cmocka_unit_test(oaep_with_separate_mgf_hash),
        cmocka_unit_test(pss_with_maximal_salt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
