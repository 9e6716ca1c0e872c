/*
 * libkeyfleet-device, part 1: the primitives against their standards (SP
 * 800-108 counter KDF with AES-256-CMAC: NIST CAVP KDFCTR_gen.rsp and an
 * ACVP vector; AES-256-CCM with a 12-byte nonce and 16-byte tag: Project
 * Wycheproof; AES-256-CMAC: SP 800-38B D.3), the TTLV codec, and pairing:
 * issue -> accept for both roles and for KEK lists, and every refusal of
 * docs/pairing.md.
 */
#include "test_device_fixture.h"

static const uint8_t MKEK_A[KFD_KEY_LEN] = {
    0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF,
    0xB0, 0xB1, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xBB, 0xBC, 0xBD, 0xBE, 0xBF};
static const uint8_t MKEK_B[KFD_KEY_LEN] = {
    0x10, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76, 0x87, 0x98, 0xA9, 0xBA, 0xCB, 0xDC, 0xED, 0xFE, 0x0F,
    0x1E, 0x2D, 0x3C, 0x4B, 0x5A, 0x69, 0x78, 0x87, 0x96, 0xA5, 0xB4, 0xC3, 0xD2, 0xE1, 0xF0, 0x01};

/* ---- primitives ---- */

static void kdf_cavp_counter_cmac_aes256(void **state)
{
    (void)state;
    /* KDFCTR_gen.rsp (CAVS 14.4), [PRF=CMAC_AES256] [CTRLOCATION=BEFORE_FIXED] [RLEN=32_BITS]. */
    static const struct {
        const char *name, *ki, *fixed, *ko;
    } v[] = {
        {"COUNT=0 L=128", "d0b1b3b70b2393c48ca05159e7e28cbeadea93f28a7cdae964e5136070c45d5c",
         "dd2f151a3f173492a6fbbb602189d51ddf8ef79fc8e96b8fcbe6dabe73a35b48104f9dff2d63d48786d2b3af1"
         "77091d646a9efae005bdfacb61a1214",
         "8c449fb474d1c1d4d2a33827103b656a"},
        {"COUNT=1 L=128", "ec9bf202ca734acacb4c880ab3fab2a11a27ec877c66842f16f7cf5e611b55d8",
         "29bba1516d9d58ca3b88c9e01f88e02aa04fa62f6e0314393e89e41dc8a85c91faf8d4344f550d4be9c7ca7ac"
         "736e908a257ecc77352cf8726314322",
         "1aa9c924cd2eba50e5b5aad7fb27a0f8"},
        {"COUNT=10 L=256", "d54b6fd94f7cf98fd955517f937e9927f9536caebe148fba1818c1ba46bba3a4",
         "94c4a0c69526196c1377cebf0a2ae0fb4b57797c61bea8eeb0518ca08652d14a5e1bd1b116b1794ac8a476acb"
         "dbbcd4f6142d7b8515bad09ec72f7af",
         "2e1efed4aef3fdd324e098c0a07c0d97f8fd2c748a996ce29861ca042474daea"},
        {"COUNT=11 L=256", "8c9f3ccad22991e925c33627d430792bef8f8d9c7b194f1c0df5912435dbcfd3",
         "60e0794af22b404f6dbf8c5cbdf916321b75cc13861be5c3524021466f5ceaf9a4c2683cf8182eede390bde51"
         "c83ce72f4b61f3803803db9e52f8023",
         "8bb189e1fd082f8b29e1f8c0118442524c2d0a2e471757dfa99453818c0aaea9"},
        {"COUNT=19 L=256", "1621d11427dde824f4b5ea6d5d7d6aefacd2f568aa4443ff5ef58653e74400c8",
         "6f5445344fef88e4af10bd0e0f0ec667d81f40ad308d1fa448fcb9aa7e105ff6e89624e5bd90fd0b7770ad224"
         "e0fbc594d32a006d4f0c87bc3a03d6b",
         "ea21158e118edb1fe22f79ed430bd16982077e5f91ea5ef4d6690d933b366006"},
        {"COUNT=20 L=160", "99f212241a343c1c8c2104ca6d28062413d985c21e6bba27fde0c622e2e4e6b7",
         "af8dc1cb7d1f82ca834628c20f0fc81920eb3ff3f75d3f4e3000593e9c15872479711d99d1b7be794f58d80a3"
         "1bb112219dc16e6354111ab1161e21d",
         "7f778c625bf0d083169a51584f6683f24af7c35e"},
        {"COUNT=30 L=320", "dabde95d751ff1c132bd49f80f4ee347bf39218cf8bfec61bc3ad865d9aa1182",
         "55da554307ed756764d4e97febb77ce85391b53225ee09417ad57def48ead090e3d1e7c2ed04f02462a6324ea"
         "0163b18f86201c69db27fd50b4c42c5",
         "5cc29221cfa6f3a4ded7afeef5a59c05bac787fc5e98a35ee0c96ba582b05c42f758966566084f69"},
        {"COUNT=39 L=320", "3a6576a1541e07eabd47c3534a4346ab39f15eb01d83ecf2319081f6e7ada7e9",
         "a259cae2c4a36b89563cb148c78251343bbfabdc13ca7ac2171c2eb6021f4477fea33b28724da721ee087bffd"
         "794a1563754b425a8d09b3e0da5ffed",
         "99b787ef90a133e5736fdcf175c3a380501f45dec8f093ecdd4000652f4ff1c6575248a363d45d18"},
        /* ACVP KDF counter mode, CMAC-AES256, 32-bit counter before fixed data, tgId 263 tcId 525
           (1024 bits). */
        {"ACVP tcId=525 L=1024", "BFB99C6AAB859A9873ACC9880BD875BB83A8B24A9307576A054216908756BE5B",
         "CD9B9791F5EEE211918BA1E2B01B4E29",
         "C303887FB0ACA8E78DEBB8A008E75C88C26E927F0FA8A1DF1614C97E1B6F78B35C8F8A1CB9CD9F18DC30D06C7"
         "3B75FDEA5A636ACB92F690FC6CB060F0A3DB66E759E30097C297E56C59DB8E17FF2656A8520D7309307B8E161"
         "B091FDDAF375B34E2EB8084D2832621C37BB67F09AAB29F3E467F422270B237D9B5AEBAD2D1F05"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint8_t ki[32], fixed[64], ko[128], out[128];
        assert_int_equal(unhex(v[i].ki, ki, sizeof(ki)), 32);
        size_t fixed_len = unhex(v[i].fixed, fixed, sizeof(fixed));
        size_t ko_len = unhex(v[i].ko, ko, sizeof(ko));
        print_message("KDF108 CMAC_AES256 %s\n", v[i].name);
        memset(out, 0, sizeof(out));
        assert_int_equal(kfd_kdf_ctr(ki, fixed, fixed_len, out, ko_len), KF_OK);
        assert_memory_equal(out, ko, ko_len);
        /* A changed fixed input gives another key (the vector is not matched by accident). */
        fixed[0] ^= 1;
        assert_int_equal(kfd_kdf_ctr(ki, fixed, fixed_len, out, ko_len), KF_OK);
        assert_memory_not_equal(out, ko, ko_len);
    }
    uint8_t key[32] = {0}, out[16];
    assert_int_equal(kfd_kdf_ctr(key, key, 4, out, 0), KF_ERR_ARG);
}

/* KDF(K, label, context) is the counter KDF over label || 0x00 || context || [256]_32. */
static void kdf_fixed_input_layout(void **state)
{
    (void)state;
    uint8_t key[32], a[32], b[32], fixed[64];
    fill_key(key, 7);
    const char *label = "keyfleet pair v1";
    const uint8_t context[] = {'m', '1', 0, 0, 0, 0, 0, 0, 0, 5};
    size_t n = strlen(label);
    memcpy(fixed, label, n);
    fixed[n] = 0x00;
    memcpy(fixed + n + 1, context, sizeof(context));
    memcpy(fixed + n + 1 + sizeof(context), "\x00\x00\x01\x00", 4);
    assert_int_equal(kfd_kdf(key, label, context, sizeof(context), a), KF_OK);
    assert_int_equal(kfd_kdf_ctr(key, fixed, n + 1 + sizeof(context) + 4, b, 32), KF_OK);
    assert_memory_equal(a, b, 32);
    /* MSK_X is that KDF with ID-X || [C]_64. */
    assert_int_equal(kfd_msk(key, "m1", 5, b), KF_OK);
    assert_memory_equal(a, b, 32);
    assert_int_equal(kfd_msk(key, "m1", 6, b), KF_OK);
    assert_memory_not_equal(a, b, 32);
    assert_int_equal(kfd_kdf(NULL, label, context, 1, a), KF_ERR_ARG);
}

/*
 * AES-256-CCM with a 12-byte nonce and a 16-byte tag, the protocol's AEAD:
 * Project Wycheproof, testvectors_v1/aes_ccm_test.json (C2SP/wycheproof),
 * test group {ivSize 96, keySize 256, tagSize 128}, the tcIds named. They
 * cover an empty message, empty and non-empty associated data, and lengths
 * that are and are not whole blocks.
 */
static const struct ccm_vector {
    int tc_id;
    const char *key, *iv, *aad, *msg, *ct, *tag;
} CCM_VECTORS[] = {
    {157, "80ba3192c803ce965ea371d5ff073cf0f43b6a2ab576b208426e11409c09b9b0",
     "4da5bf8dfd5852c1ea12379d", "", "", "", "6dc4ef59a73ebcabb5e34c0d34d9f2d7"},
    {158, "cc56b680552eb75008f5484b4cb803fa5063ebd6eab91f6ab6aef4916a766273",
     "99e23ec48985bccdeeab60f1", "", "2a", "06", "85ca1f6c46283cb5dd5960bd34a8dc36"},
    {160, "59d4eafb4de0cfc7d3db99a8f54b15d7b39f0acc8da69763b019c1699f87674a",
     "2fcb1b38a99e71b84740ad9b", "", "549b365af913f3b081131ccb6b825588",
     "48dd9589a47e638bbbc2aa3e232fa529", "df69fbe1f099f0134fe2869156ab07db"},
    {164, "5155dee9aade1cc61ee7e3f92660f7590f5e5ba82f1b59b850e3fa453d2fa6b3",
     "c26c4b3bfdb97ee6b0f63ca1", "",
     "2734e08eff8f5c4f84fa0c207f49c7fd78af1ad5123ff81f83f500edf4eda09edf",
     "aed24e0082e13ee15ba0506a836c78b97ef2faa3c6e8eb378dc64dd4adc998ad68",
     "5ba1b48a701684d940be244c3de938d2"},
    {167, "7a4cd759172e02eb204db2c3f5c746227df584fc1345196391dbb9577a250742",
     "a92ef0ac991dd516a3c6f689", "bd506764f2d2c410", "", "", "569d82691892e103e627407c95f08a0e"},
    {169, "f60c6a1b625725f76c7037b48fe3577fa7f7b87b1bd5a982176d182306ffb870",
     "f0384fb876121410633d993d", "9aaf299eeea78f79", "63858ca3e2ce69887b578a3c167b421c9c",
     "f05e290bbbc61927fa65760648dcca88b0", "b721be96a6b95c0931fb243dd1287c70"},
    {182, "8e34cf73d245a1082a920b86364eb896c4946467bcb3d58929fcb36690e6394f",
     "6f573aa86baa492ba46596df", "bd4cd02fc7502bbdbdf6c9a3cbe8f0",
     "16ddd23ff53f3d23c06334487040eb47", "c60d2a92e60a1a73a9ce4b2269e13a45",
     "71fa665b611fed6ef5e67ee827ac206d"},
    {185, "077433022ab34d380fc192fc24c2edc6301fec6f24442f572a1087ff2e05b39a",
     "28adcbc74364f26dd4b3108b", "e0100eb116cdc5e22a3b9f9b4126c149595e75107f6e237c69e82960052270",
     "03c874eeaaa6fa9f0da62c758fb0ad04", "136f049ea851c6dfd2e87312d82f0882",
     "fdf9bc0412cfca2b035c5ae68ac6da79"},
    {186, "3937986af86dafc1ba0c4672d8abc46c207062682d9c264ab06d6c5807205130",
     "8df4b15a888c33286a7b7651", "ba446f6f9a0ced22450feb10737d9007fd69abc19b1d4d9049a5551e86ec2b37",
     "dc9e9eaf11e314182df6a4eba17aec9c", "2ced0d04323db20aa8b8b9000d2c33a5",
     "48b81cb70d555b7c38492ba2c0a3b1b8"},
};

static void ccm_wycheproof_aes256_n12_t16(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(CCM_VECTORS) / sizeof(CCM_VECTORS[0]); i++) {
        const struct ccm_vector *v = &CCM_VECTORS[i];
        uint8_t key[32], iv[12], aad[64], msg[64], want[64 + 16], sealed[64 + 16], back[64];
        print_message("Wycheproof AES-CCM tcId %d\n", v->tc_id);
        assert_int_equal(unhex(v->key, key, sizeof(key)), 32);
        assert_int_equal(unhex(v->iv, iv, sizeof(iv)), KFD_NONCE_LEN);
        size_t aad_len = unhex(v->aad, aad, sizeof(aad));
        size_t len = unhex(v->msg, msg, sizeof(msg));
        assert_int_equal(unhex(v->ct, want, sizeof(want)), len);
        assert_int_equal(unhex(v->tag, want + len, KFD_TAG_LEN), KFD_TAG_LEN);
        memset(sealed, 0xEE, sizeof(sealed));
        kfd_aead_seal(key, iv, aad, aad_len, msg, len, sealed);
        assert_memory_equal(sealed, want, len + KFD_TAG_LEN);
        assert_int_equal(sealed[len + KFD_TAG_LEN], 0xEE); /* nothing written past the tag */
        memset(back, 0xEE, sizeof(back));
        assert_int_equal(kfd_aead_open(key, iv, aad, aad_len, want, len + KFD_TAG_LEN, back),
                         KF_OK);
        assert_memory_equal(back, msg, len);
        /* Any flipped bit of ciphertext, tag, nonce or associated data fails the tag and
         * leaves no plaintext behind. */
        for (size_t bit = 0; bit < (len + KFD_TAG_LEN) * 8; bit += 7) {
            want[bit / 8] ^= (uint8_t)(1u << bit % 8);
            memset(back, 0xEE, sizeof(back));
            assert_int_equal(kfd_aead_open(key, iv, aad, aad_len, want, len + KFD_TAG_LEN, back),
                             KF_ERR_AUTH);
            for (size_t j = 0; j < len; j++)
                assert_int_equal(back[j], 0);
            want[bit / 8] ^= (uint8_t)(1u << bit % 8);
        }
        iv[11] ^= 1;
        assert_int_equal(kfd_aead_open(key, iv, aad, aad_len, want, len + KFD_TAG_LEN, back),
                         KF_ERR_AUTH);
        iv[11] ^= 1;
        if (aad_len) {
            aad[0] ^= 0x80;
            assert_int_equal(kfd_aead_open(key, iv, aad, aad_len, want, len + KFD_TAG_LEN, back),
                             KF_ERR_AUTH);
            aad[0] ^= 0x80;
        }
        /* The associated data is bound by its length too: one byte less fails. */
        if (aad_len)
            assert_int_equal(
                kfd_aead_open(key, iv, aad, aad_len - 1, want, len + KFD_TAG_LEN, back),
                KF_ERR_AUTH);
        /* One byte cut off the sealed data: the message length is in CCM's first block. */
        if (len)
            assert_int_equal(
                kfd_aead_open(key, iv, aad, aad_len, want, len - 1 + KFD_TAG_LEN, back),
                KF_ERR_AUTH);
    }
    /* Shorter than a tag, and longer than L = 3 length bytes can say (2^24 - 1): refused
     * before a byte is read. */
    uint8_t key[32] = {0}, iv[12] = {0}, tiny[15] = {0}, out[1];
    assert_int_equal(kfd_aead_open(key, iv, NULL, 0, tiny, sizeof(tiny), out), KF_ERR_AUTH);
    assert_int_equal(kfd_aead_open(key, iv, NULL, 0, tiny, ((size_t)1 << 24) + KFD_TAG_LEN, out),
                     KF_ERR_AUTH);
}

static void cmac_sp800_38b_aes256(void **state)
{
    (void)state;
    uint8_t key[32], msg[64], mac[16], want[16];
    unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", key, 32);
    unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
          "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
          msg, 64);
    static const struct {
        size_t len;
        const char *mac;
    } v[] = {{0, "028962f61b7bf89efc6b551f4667d983"},
             {16, "28a7023f452e8f82bd4bf28d8c37c35c"},
             {64, "e1992190549f6ed5696a2c056c315410"}};
    for (size_t i = 0; i < 3; i++) {
        unhex(v[i].mac, want, 16);
        kfd_mac(key, msg, v[i].len, mac);
        assert_memory_equal(mac, want, 16);
    }
}

/* ---- codec ---- */

static void codec_writes_kmip_encoding(void **state)
{
    (void)state;
    uint8_t mem[128], want[128];
    kf_buf b;
    size_t mark;
    kf_buf_fixed(&b, mem, sizeof(mem));
    assert_int_equal(kfd_put_open(&b, KMIP_TAG_KEYFLEET_SESSION_ACK, &mark), KF_OK);
    assert_int_equal(kfd_put_u32(&b, KMIP_TAG_KEYFLEET_PROTO_VERSION, 1), KF_OK);
    assert_int_equal(kfd_put_u32(&b, KMIP_TAG_KEYFLEET_PAIR_ROLE, 2), KF_OK);
    assert_int_equal(kfd_put_u32(&b, KMIP_TAG_KEYFLEET_LIFETIME, 3600), KF_OK);
    assert_int_equal(kfd_put_u64(&b, KMIP_TAG_KEYFLEET_NOT_AFTER, 0x0102030405060708ULL), KF_OK);
    assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_DEVICE_ID, "m-1"), KF_OK);
    assert_int_equal(
        kfd_put_bytes(&b, KMIP_TAG_KEYFLEET_MAC, (const uint8_t *)"0123456789abcdef", 16), KF_OK);
    assert_int_equal(kfd_put_close(&b, mark), KF_OK);
    /* KMIP 9.1: tag(3) type(1) length(4) value padded to 8; Integer, Enumeration and
     * Interval 4 bytes + 4 of padding, DateTime 8, a Structure's length its items. */
    size_t n = unhex("54011901 00000068"
                     "54010402 00000004 00000001 00000000"
                     "54010705 00000004 00000002 00000000"
                     "5401110A 00000004 00000E10 00000000"
                     "54010C09 00000008 01020304 05060708"
                     "54010107 00000003 6D2D3100 00000000"
                     "54011608 00000010 30313233 34353637 38396162 63646566",
                     want, sizeof(want));
    assert_int_equal(b.len, n);
    assert_memory_equal(mem, want, n);
    /* The writer refuses what the reader would: a bad ID, a MAC of the wrong size. */
    assert_int_equal(kfd_put_text(&b, KMIP_TAG_KEYFLEET_DEVICE_ID, "bad id"), KF_ERR_DEVICE_ID);
    assert_int_equal(kfd_put_bytes(&b, KMIP_TAG_KEYFLEET_MAC, mem, 15), KF_ERR_ARG);
    kf_buf small;
    kf_buf_fixed(&small, mem, 12);
    assert_int_equal(kfd_put_u32(&small, KMIP_TAG_KEYFLEET_USES, 1), KF_ERR_NOSPACE);
}

/* Read one Integer item from hex, as a structure's only item. */
static int read_uses(const char *hex)
{
    uint8_t in[64];
    size_t n = unhex(hex, in, sizeof(in));
    kf_buf r;
    uint32_t v;
    kf_buf_reader(&r, in, n);
    int rc = kfd_get_u32(&r, KMIP_TAG_KEYFLEET_USES, &v);
    if (rc == KF_OK)
        rc = kfd_get_end(&r);
    if (rc == KF_OK)
        assert_int_equal(v, 7);
    return rc;
}

static void codec_reader_refusals(void **state)
{
    (void)state;
    assert_int_equal(read_uses("54012002 00000004 00000007 00000000"), KF_OK);
    /* nonzero padding, wrong type, wrong length, wrong tag, short, trailing bytes */
    assert_int_equal(read_uses("54012002 00000004 00000007 00000001"), KF_ERR_PAIR_MALFORMED);
    assert_int_equal(read_uses("54012005 00000004 00000007 00000000"), KF_ERR_PAIR_MALFORMED);
    assert_int_equal(read_uses("54012002 00000008 00000000 00000007"), KF_ERR_PAIR_MALFORMED);
    assert_int_equal(read_uses("54012102 00000004 00000007 00000000"), KF_ERR_PAIR_MALFORMED);
    assert_int_equal(read_uses("54012002 00000004 00000007"), KF_ERR_PAIR_MALFORMED);
    assert_int_equal(read_uses("54012002 00000004 00000007 00000000 00"), KF_ERR_PAIR_MALFORMED);
    assert_int_equal(read_uses("54012002 FFFFFFFC 00000007 00000000"), KF_ERR_PAIR_MALFORMED);

    uint8_t in[64];
    kf_buf r, inner;
    char id[KFD_ID_MAX + 1];
    /* A structure whose length is not a whole number of items. */
    size_t n = unhex("54011F01 00000004 00000000", in, sizeof(in));
    kf_buf_reader(&r, in, n);
    assert_int_equal(kfd_get_open(&r, KMIP_TAG_KEYFLEET_KEK_SLOT, &inner, NULL),
                     KF_ERR_PAIR_MALFORMED);
    /* Device IDs: characters, and length 1..64. */
    n = unhex("54010107 00000003 6D203100 00000000", in, sizeof(in));
    kf_buf_reader(&r, in, n);
    assert_int_equal(kfd_get_id(&r, KMIP_TAG_KEYFLEET_DEVICE_ID, id), KF_ERR_PAIR_MALFORMED);
    assert_int_equal(r.off, 0);
    n = unhex("54010107 00000000", in, sizeof(in));
    kf_buf_reader(&r, in, n);
    assert_int_equal(kfd_get_id(&r, KMIP_TAG_KEYFLEET_DEVICE_ID, id), KF_ERR_PAIR_MALFORMED);
    n = unhex("54010107 00000002 6D310000 00000000", in, sizeof(in));
    kf_buf_reader(&r, in, n);
    assert_int_equal(kfd_get_id(&r, KMIP_TAG_KEYFLEET_DEVICE_ID, id), KF_OK);
    assert_string_equal(id, "m1");
    /* An embedded NUL is not an ID character. */
    n = unhex("54010107 00000003 6D003100 00000000", in, sizeof(in));
    kf_buf_reader(&r, in, n);
    assert_int_equal(kfd_get_id(&r, KMIP_TAG_KEYFLEET_DEVICE_ID, id), KF_ERR_PAIR_MALFORMED);
}

static void device_ids(void **state)
{
    (void)state;
    char long_id[KFD_ID_MAX + 2];
    memset(long_id, 'a', sizeof(long_id));
    long_id[KFD_ID_MAX] = '\0';
    assert_int_equal(kfd_id_valid(long_id), KF_OK);
    long_id[KFD_ID_MAX] = 'a';
    long_id[KFD_ID_MAX + 1] = '\0';
    assert_int_equal(kfd_id_valid(long_id), KF_ERR_DEVICE_ID);
    assert_int_equal(kfd_id_valid("Meter_01.base-2"), KF_OK);
    assert_int_equal(kfd_id_valid(""), KF_ERR_DEVICE_ID);
    assert_int_equal(kfd_id_valid("a/b"), KF_ERR_DEVICE_ID);
    assert_int_equal(kfd_id_valid("a b"), KF_ERR_DEVICE_ID);
    assert_int_equal(kfd_id_valid(NULL), KF_ERR_DEVICE_ID);
}

/* ---- pairing ---- */

struct pair_fixture {
    struct fake_env fa, fb;
    struct kfd_device a, b;
    struct issued m;
    uint8_t ack[512];
    kf_buf ack_out;
};

static int pair_setup(void **state)
{
    struct pair_fixture *p = calloc(1, sizeof(*p));
    make_device(&p->a, &p->fa, "meter-1", MKEK_A, 1);
    make_device(&p->b, &p->fb, "base-1", MKEK_B, 2);
    *state = p;
    return 0;
}

static int pair_teardown(void **state)
{
    struct pair_fixture *p = *state;
    kfd_close(&p->a);
    kfd_close(&p->b);
    free(p);
    return 0;
}

static int accept_into(struct pair_fixture *p, struct kfd_device *d, enum kfd_role role,
                       const uint8_t *part, size_t len)
{
    kf_buf_fixed(&p->ack_out, p->ack, sizeof(p->ack));
    return kfd_pair_accept(d, role, part, len, &p->ack_out);
}

static void issue_accept_both_roles(void **state)
{
    struct pair_fixture *p = *state;
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 1, 1, 41, 1, T0, DAY, 100);
    struct kfd_span a, b;
    uint8_t m[2 * KFD_MSG_MAX];
    memcpy(m, p->m.sm_a, p->m.a_len);
    memcpy(m + p->m.a_len, p->m.sm_b, p->m.b_len);
    assert_int_equal(kfd_pair_split(m, p->m.a_len + p->m.b_len, &a, &b), KF_OK);
    assert_int_equal(a.len, p->m.a_len);
    assert_int_equal(b.len, p->m.b_len);

    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, a.p, a.len), KF_OK);
    struct kfd_ack ack;
    assert_int_equal(ack_status(p->ack, p->ack_out.len, MKEK_A, &ack), KFD_ACK_ACCEPTED);
    assert_string_equal(ack.device, "meter-1");
    assert_true(ack.kek_id == 41 && ack.part_counter == 1 && ack.device_counter == 1);
    /* B's ack does not verify under A's key. */
    assert_int_equal(kfd_ack_verify(&ack, MKEK_B), KF_ERR_PAIR_INTEGRITY);

    assert_int_equal(accept_into(p, &p->b, KFD_ROLE_B, b.p, b.len), KF_OK);
    assert_int_equal(ack_status(p->ack, p->ack_out.len, MKEK_B, NULL), KFD_ACK_ACCEPTED);

    size_t sa, sb;
    assert_int_equal(kfd_kek_current(&p->a, "base-1", &sa), KF_OK);
    assert_int_equal(kfd_kek_current(&p->b, "meter-1", &sb), KF_OK);
    const struct kfd_kek *ka = &p->a.st.keks[sa], *kb = &p->b.st.keks[sb];
    assert_memory_equal(ka->key, p->m.keks[0], KFD_KEY_LEN);
    assert_memory_equal(kb->key, p->m.keks[0], KFD_KEY_LEN);
    assert_true(ka->kek_id == 41 && ka->role == KFD_ROLE_A && kb->role == KFD_ROLE_B);
    assert_string_equal(ka->partner, "base-1");
    assert_string_equal(kb->partner, "meter-1");
    assert_true(ka->not_before == T0 && ka->not_after == T0 + DAY && ka->max_uses == 100);
    assert_int_equal(p->a.st.last_counter, 1);
    /* It was saved before the ack was written: the saved state opens to the same device. */
    struct kfd_device again;
    assert_int_equal(kfd_open(&again, &p->a.env, p->fa.saved, p->fa.saved_len), KF_OK);
    assert_memory_equal(&again.st, &p->a.st, sizeof(again.st));
    kfd_close(&again);
}

static void issue_accept_kek_list(void **state)
{
    struct pair_fixture *p = *state;
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 3, 9, 500, 3, T0, DAY, 10);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    assert_int_equal(accept_into(p, &p->b, KFD_ROLE_B, p->m.sm_b, p->m.b_len), KF_OK);
    assert_int_equal(p->a.st.last_counter, 3);
    assert_int_equal(p->b.st.last_counter, 9);
    for (uint32_t i = 0; i < 3; i++) {
        bool found = false;
        for (size_t s = 0; s < KFD_MAX_KEKS; s++) {
            const struct kfd_kek *k = &p->b.st.keks[s];
            if (k->in_use && k->kek_id == 500 + i) {
                found = true;
                assert_memory_equal(k->key, p->m.keks[i], KFD_KEY_LEN);
                assert_int_equal(k->not_before, T0 + (int64_t)i * DAY);
                assert_int_equal(k->not_after, T0 + (int64_t)(i + 1) * DAY);
            }
        }
        assert_true(found);
    }
    /* Consecutive windows: the current KEK moves with the clock. */
    size_t slot;
    assert_int_equal(kfd_kek_current(&p->a, "base-1", &slot), KF_OK);
    assert_int_equal(p->a.st.keks[slot].kek_id, 500);
    p->fa.now = T0 + DAY + 5;
    assert_int_equal(kfd_kek_current(&p->a, "base-1", &slot), KF_OK);
    assert_int_equal(p->a.st.keks[slot].kek_id, 501);
    p->fa.now = T0 + 3 * DAY;
    assert_int_equal(kfd_kek_current(&p->a, "base-1", &slot), KF_ERR_KEK_EXPIRED);
    assert_int_equal(kfd_kek_current(&p->a, "nobody", &slot), KF_ERR_KEK_UNKNOWN);
}

/* A refusal changes nothing but what an ack says. */
static void expect_refusal(struct pair_fixture *p, struct kfd_device *d, const uint8_t *mkek,
                           enum kfd_role role, const uint8_t *part, size_t len, int want,
                           uint32_t want_status)
{
    struct kfd_state before = d->st;
    unsigned saves = ((struct fake_env *)d->env.ctx)->saves;
    assert_int_equal(accept_into(p, d, role, part, len), want);
    assert_memory_equal(&before, &d->st, sizeof(before));
    assert_int_equal(((struct fake_env *)d->env.ctx)->saves, saves);
    struct kfd_ack ack;
    assert_int_equal(ack_status(p->ack, p->ack_out.len, mkek, &ack), want_status);
    assert_int_equal(ack.device_counter, d->st.last_counter);
}

static void refuses_stale_counter(void **state)
{
    struct pair_fixture *p = *state;
    struct issued older;
    issue(&older, MKEK_A, MKEK_B, "meter-1", "base-1", 4, 4, 10, 1, T0, DAY, 10);
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 5, 5, 11, 1, T0, DAY, 10);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    /* The same part again (the replayed-M attack), then an older one. */
    expect_refusal(p, &p->a, MKEK_A, KFD_ROLE_A, p->m.sm_a, p->m.a_len, KF_ERR_PAIR_STALE,
                   KFD_ACK_STALE);
    struct kfd_ack ack;
    ack_status(p->ack, p->ack_out.len, MKEK_A, &ack);
    assert_true(ack.kek_id == 11 && ack.part_counter == 5 && ack.device_counter == 5);
    expect_refusal(p, &p->a, MKEK_A, KFD_ROLE_A, older.sm_a, older.a_len, KF_ERR_PAIR_STALE,
                   KFD_ACK_STALE);
    ack_status(p->ack, p->ack_out.len, MKEK_A, &ack);
    assert_true(ack.kek_id == 10 && ack.part_counter == 4 && ack.device_counter == 5);
}

/* Every byte of a part XOR 0xFF: never accepted, nothing changes, always an ack. */
static void refuses_every_flipped_byte(void **state)
{
    struct pair_fixture *p = *state;
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 1, 1, 41, 2, T0, DAY, 10);
    unsigned integrity = 0, malformed = 0, wrong = 0;
    uint8_t part[KFD_MSG_MAX];
    for (size_t i = 0; i < p->m.a_len; i++) {
        memcpy(part, p->m.sm_a, p->m.a_len);
        part[i] ^= 0xFF;
        struct kfd_state before = p->a.st;
        int rc = accept_into(p, &p->a, KFD_ROLE_A, part, p->m.a_len);
        assert_memory_equal(&before, &p->a.st, sizeof(before));
        struct kfd_ack ack;
        uint32_t status = ack_status(p->ack, p->ack_out.len, MKEK_A, &ack);
        assert_int_equal(kfd_ack_status_error(status), rc);
        if (rc == KF_ERR_PAIR_INTEGRITY) {
            integrity++;
        } else if (rc == KF_ERR_PAIR_MALFORMED) {
            malformed++;
            assert_true(ack.kek_id == 0 && ack.part_counter == 0);
        } else {
            /* Check 2 comes before the AEAD: a changed version or role is caught there. */
            assert_int_equal(rc, KF_ERR_PAIR_WRONG_DEVICE);
            wrong++;
        }
    }
    print_message("%zu offsets: %u integrity, %u malformed, %u wrong device\n", p->m.a_len,
                  integrity, malformed, wrong);
    assert_int_equal(integrity + malformed + wrong, p->m.a_len);
    /* The 8 value bytes of ProtoVersion and PairRole are the only ones check 2 sees first. */
    assert_int_equal(wrong, 8);
    assert_true(integrity >= 12 + 64 + 16 + 2 * 20); /* nonce, keys, tag, validity values */
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
}

static void refuses_swapped_and_misaddressed(void **state)
{
    struct pair_fixture *p = *state;
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 1, 1, 41, 1, T0, DAY, 10);
    /* A given SM_B, B given SM_A. */
    expect_refusal(p, &p->a, MKEK_A, KFD_ROLE_A, p->m.sm_b, p->m.b_len, KF_ERR_PAIR_WRONG_DEVICE,
                   KFD_ACK_WRONG_DEVICE);
    struct kfd_ack ack;
    ack_status(p->ack, p->ack_out.len, MKEK_A, &ack);
    assert_int_equal(ack.kek_id, 0);
    expect_refusal(p, &p->b, MKEK_B, KFD_ROLE_B, p->m.sm_a, p->m.a_len, KF_ERR_PAIR_WRONG_DEVICE,
                   KFD_ACK_WRONG_DEVICE);
    /* A part for another meter, even under the right role. */
    struct issued other;
    issue(&other, MKEK_A, MKEK_B, "meter-9", "base-1", 1, 1, 42, 1, T0, DAY, 10);
    expect_refusal(p, &p->a, MKEK_A, KFD_ROLE_A, other.sm_a, other.a_len, KF_ERR_PAIR_WRONG_DEVICE,
                   KFD_ACK_WRONG_DEVICE);
    /* Our ID and role, but sealed under someone else's master key. */
    issue(&other, MKEK_B, MKEK_B, "meter-1", "base-1", 1, 1, 43, 1, T0, DAY, 10);
    expect_refusal(p, &p->a, MKEK_A, KFD_ROLE_A, other.sm_a, other.a_len, KF_ERR_PAIR_INTEGRITY,
                   KFD_ACK_INTEGRITY);
    /* Garbage is malformed and still acknowledged. */
    expect_refusal(p, &p->a, MKEK_A, KFD_ROLE_A, (const uint8_t *)"nonsense", 8,
                   KF_ERR_PAIR_MALFORMED, KFD_ACK_MALFORMED);
    expect_refusal(p, &p->a, MKEK_A, KFD_ROLE_A, p->m.sm_a, p->m.a_len - 8, KF_ERR_PAIR_MALFORMED,
                   KFD_ACK_MALFORMED);
}

static void refuses_expired_list(void **state)
{
    struct pair_fixture *p = *state;
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 1, 1, 41, 2, T0 - 3 * DAY, DAY, 10);
    expect_refusal(p, &p->a, MKEK_A, KFD_ROLE_A, p->m.sm_a, p->m.a_len, KF_ERR_KEK_EXPIRED,
                   KFD_ACK_EXPIRED);
    /* One live KEK of the list is enough; the dead one is not stored. */
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 2, 2, 43, 2, T0 - DAY, DAY, 10);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    unsigned held = 0;
    for (size_t s = 0; s < KFD_MAX_KEKS; s++)
        if (p->a.st.keks[s].in_use) {
            held++;
            assert_int_equal(p->a.st.keks[s].kek_id, 44);
        }
    assert_int_equal(held, 1);
}

static void refuses_on_storage_failure(void **state)
{
    struct pair_fixture *p = *state;
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 1, 1, 41, 3, T0, DAY, 10);
    p->fa.fail_save = true;
    expect_refusal(p, &p->a, MKEK_A, KFD_ROLE_A, p->m.sm_a, p->m.a_len, KF_ERR_DEVICE_STORAGE,
                   KFD_ACK_STORAGE);
    struct kfd_ack ack;
    ack_status(p->ack, p->ack_out.len, MKEK_A, &ack);
    assert_true(ack.kek_id == 41 && ack.part_counter == 1 && ack.device_counter == 0);
    /* Once storage works again the same part is accepted: nothing was half-applied. */
    p->fa.fail_save = false;
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
}

static void kek_slots_are_reused(void **state)
{
    struct pair_fixture *p = *state;
    char partner[16];
    /* Fill all 8 slots with KEKs for 8 different partners. */
    for (unsigned i = 0; i < KFD_MAX_KEKS; i++) {
        snprintf(partner, sizeof(partner), "base-%u", i + 10);
        issue(&p->m, MKEK_A, MKEK_B, "meter-1", partner, i + 1, 1, 100 + i, 1, T0, DAY, 2);
        assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    }
    /* A ninth partner: no slot free, none dead, none held for that partner. */
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-99", 9, 1, 200, 1, T0, DAY, 2);
    expect_refusal(p, &p->a, MKEK_A, KFD_ROLE_A, p->m.sm_a, p->m.a_len, KF_ERR_KEK_SLOTS,
                   KFD_ACK_STORAGE);
    /* A new KEK for an existing partner supersedes its older one, whose slot it takes. */
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-13", 10, 1, 201, 1, T0, DAY, 2);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    size_t slot;
    assert_int_equal(kfd_kek_current(&p->a, "base-13", &slot), KF_OK);
    assert_int_equal(p->a.st.keks[slot].kek_id, 201);
    for (size_t s = 0; s < KFD_MAX_KEKS; s++)
        assert_true(p->a.st.keks[s].in_use && p->a.st.keks[s].kek_id != 103);
    /* An exhausted KEK's slot is taken before any live one. */
    for (size_t s = 0; s < KFD_MAX_KEKS; s++)
        if (p->a.st.keks[s].kek_id == 105)
            p->a.st.keks[s].uses = 2;
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-99", 11, 1, 202, 1, T0, DAY, 2);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    for (size_t s = 0; s < KFD_MAX_KEKS; s++)
        assert_int_not_equal(p->a.st.keks[s].kek_id, 105);
    /* And an expired one after the clock has moved on. */
    p->fa.now = T0 + DAY;
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-98", 12, 1, 203, 1, T0 + DAY, DAY, 2);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    assert_int_equal(kfd_kek_current(&p->a, "base-98", &slot), KF_OK);
}

/* The saved state opens to exactly the device in memory. */
static void saved_matches(const struct kfd_device *d, const struct fake_env *f)
{
    struct kfd_state saved;
    assert_int_equal(kfd_state_decode(&saved, f->saved, f->saved_len), KF_OK);
    assert_memory_equal(&saved, &d->st, sizeof(saved));
}

/* How many KEKs d holds for partner; *ids gets a bit per KEK ID (ID - base, < 32). */
static unsigned held_for(const struct kfd_device *d, const char *partner, uint64_t base,
                         uint32_t *ids)
{
    unsigned n = 0;
    *ids = 0;
    for (size_t s = 0; s < KFD_MAX_KEKS; s++) {
        const struct kfd_kek *k = &d->st.keks[s];
        if (!k->in_use || strcmp(k->partner, partner) != 0)
            continue;
        n++;
        assert_true(k->kek_id >= base && k->kek_id - base < 32);
        *ids |= 1u << (k->kek_id - base);
    }
    return n;
}

/* A new list for a partner supersedes every KEK held for it, whatever their IDs, in the same
 * save; other partners' KEKs stay. */
static void new_list_supersedes_the_old(void **state)
{
    struct pair_fixture *p = *state;
    uint32_t ids;
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-2", 1, 1, 30, 1, T0, DAY, 10);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 2, 2, 41, KFD_MAX_KEKS - 1, T0, DAY, 10);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    saved_matches(&p->a, &p->fa);
    assert_int_equal(held_for(&p->a, "base-1", 41, &ids), KFD_MAX_KEKS - 1);
    /* Three new KEKs: all seven old ones go, five slots are free again. */
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 3, 3, 61, 3, T0, DAY, 10);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    saved_matches(&p->a, &p->fa);
    assert_int_equal(held_for(&p->a, "base-1", 61, &ids), 3);
    assert_int_equal(ids, 0x7u);
    assert_int_equal(held_for(&p->a, "base-2", 30, &ids), 1);
    for (size_t s = 0; s < KFD_MAX_KEKS; s++) {
        const struct kfd_kek *k = &p->a.st.keks[s];
        if (k->in_use && k->kek_id >= 61) {
            assert_memory_equal(k->key, p->m.keks[k->kek_id - 61], KFD_KEY_LEN);
            assert_true(k->uses == 0 && k->send_seq == 0 && k->recv_seq == 0);
        }
    }
    size_t slot;
    assert_int_equal(kfd_kek_current(&p->a, "base-1", &slot), KF_OK);
    assert_int_equal(p->a.st.keks[slot].kek_id, 61);
    /* Seven again, with lower IDs (a server restored from a backup): the three go. */
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 4, 4, 11, KFD_MAX_KEKS - 1, T0, DAY, 10);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    saved_matches(&p->a, &p->fa);
    assert_int_equal(held_for(&p->a, "base-1", 11, &ids), KFD_MAX_KEKS - 1);
    assert_int_equal(ids, 0x7Fu);
    /* Eight for base-1 while base-2 holds a live KEK: one slot short, refused, nothing
     * changes (the seven stay). */
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 5, 5, 71, KFD_MAX_KEKS, T0, DAY, 10);
    expect_refusal(p, &p->a, MKEK_A, KFD_ROLE_A, p->m.sm_a, p->m.a_len, KF_ERR_KEK_SLOTS,
                   KFD_ACK_STORAGE);
    /* Once base-2's KEK is used up, its slot is free for the eighth. */
    for (size_t s = 0; s < KFD_MAX_KEKS; s++)
        if (strcmp(p->a.st.keks[s].partner, "base-2") == 0)
            p->a.st.keks[s].uses = p->a.st.keks[s].max_uses;
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    saved_matches(&p->a, &p->fa);
    assert_int_equal(held_for(&p->a, "base-1", 71, &ids), KFD_MAX_KEKS);
    assert_int_equal(ids, 0xFFu);
    assert_int_equal(held_for(&p->a, "base-2", 30, &ids), 0);
    assert_int_equal(p->a.st.last_counter, 5);
}

/* Renewal after renewal, on both devices: the newest KEK is current at once, the slots never
 * fill up. */
static void renewal_takes_effect_at_once(void **state)
{
    struct pair_fixture *p = *state;
    uint32_t ids;
    size_t slot;
    for (uint64_t i = 0; i < 3 * KFD_MAX_KEKS; i++) {
        issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", i + 1, i + 1, 41 + i, 1, T0, DAY, 10);
        assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
        assert_int_equal(accept_into(p, &p->b, KFD_ROLE_B, p->m.sm_b, p->m.b_len), KF_OK);
        assert_int_equal(kfd_kek_current(&p->a, "base-1", &slot), KF_OK);
        assert_int_equal(p->a.st.keks[slot].kek_id, 41 + i);
        assert_int_equal(kfd_kek_current(&p->b, "meter-1", &slot), KF_OK);
        assert_int_equal(p->b.st.keks[slot].kek_id, 41 + i);
        assert_int_equal(held_for(&p->a, "base-1", 41 + i, &ids), 1);
        assert_int_equal(held_for(&p->b, "meter-1", 41 + i, &ids), 1);
        saved_matches(&p->a, &p->fa);
        saved_matches(&p->b, &p->fb);
    }
}

/* A KEK is (partner, KEK ID) on a device. A server restored from a backup issues an ID again:
 * for the same partner the new KEK replaces the old, never sits beside it; for another
 * partner both are held. Either way the saved state opens again. */
static void kek_identity_is_partner_and_id(void **state)
{
    struct pair_fixture *p = *state;
    struct kfd_device again;
    uint32_t ids;
    size_t slot;
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 1, 1, 50, 2, T0, DAY, 10);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    p->a.st.keks[0].uses = 3; /* KEK 50 has been used */
    /* The restored server: KEK 50 again, in a new message (higher counter). */
    struct issued again_50;
    issue(&again_50, MKEK_A, MKEK_B, "meter-1", "base-1", 2, 2, 50, 1, T0, DAY, 10);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, again_50.sm_a, again_50.a_len), KF_OK);
    assert_int_equal(held_for(&p->a, "base-1", 50, &ids), 1);
    assert_int_equal(kfd_kek_current(&p->a, "base-1", &slot), KF_OK);
    assert_true(p->a.st.keks[slot].kek_id == 50 && p->a.st.keks[slot].uses == 0);
    assert_int_equal(kfd_open(&again, &p->a.env, p->fa.saved, p->fa.saved_len), KF_OK);
    assert_memory_equal(&again.st, &p->a.st, sizeof(again.st));
    kfd_close(&again);
    /* The same ID from base-2's message: a second KEK, told apart by its partner. */
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-2", 3, 1, 50, 1, T0, DAY, 10);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    assert_int_equal(held_for(&p->a, "base-1", 50, &ids), 1);
    assert_int_equal(held_for(&p->a, "base-2", 50, &ids), 1);
    assert_int_equal(kfd_open(&again, &p->a.env, p->fa.saved, p->fa.saved_len), KF_OK);
    assert_memory_equal(&again.st, &p->a.st, sizeof(again.st));
    kfd_close(&again);
    /* Session keys find each partner's own KEK 50. */
    uint8_t sk[KFD_KEY_LEN], m3[512];
    kf_buf out;
    size_t s1, s2;
    assert_int_equal(kfd_kek_current(&p->a, "base-1", &s1), KF_OK);
    assert_int_equal(kfd_kek_current(&p->a, "base-2", &s2), KF_OK);
    assert_true(s1 != s2 && p->a.st.keks[s1].kek_id == 50 && p->a.st.keks[s2].kek_id == 50);
    kf_buf_fixed(&out, m3, sizeof(m3));
    assert_int_equal(kfd_session_offer(&p->a, "base-2", sk, &out), KF_OK);
    assert_true(p->a.st.keks[s2].send_seq == 1 && p->a.st.keks[s1].send_seq == 0);
}

/* The requester's two steps: check SM_A (nothing saved), forward SM_B, then conclude with B's
 * answer: its KEKs only if B took its own, else the counter only, and A's ack says which. */
static void pair_check_then_conclude(void **state)
{
    struct pair_fixture *p = *state;
    uint8_t ack_b[512];
    kf_buf b_out;
    int pv;
    struct kfd_ack ack;
    uint32_t ids;
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 1, 1, 41, 2, T0, DAY, 10);
    struct kfd_state before = p->a.st;
    unsigned saves = p->fa.saves;
    assert_int_equal(kfd_pair_check(&p->a, p->m.sm_a, p->m.a_len), KF_OK);
    assert_int_equal(kfd_pair_check(&p->a, p->m.sm_b, p->m.b_len), KF_ERR_PAIR_WRONG_DEVICE);
    assert_int_equal(kfd_pair_check(&p->a, (const uint8_t *)"nonsense", 8), KF_ERR_PAIR_MALFORMED);
    assert_memory_equal(&before, &p->a.st, sizeof(before));
    assert_int_equal(p->fa.saves, saves);
    /* B accepts: A takes the KEKs. */
    kf_buf_fixed(&b_out, ack_b, sizeof(ack_b));
    assert_int_equal(kfd_pair_accept(&p->b, KFD_ROLE_B, p->m.sm_b, p->m.b_len, &b_out), KF_OK);
    kf_buf_fixed(&p->ack_out, p->ack, sizeof(p->ack));
    assert_int_equal(
        kfd_pair_conclude(&p->a, p->m.sm_a, p->m.a_len, ack_b, b_out.len, &pv, &p->ack_out), KF_OK);
    assert_int_equal(pv, KF_OK);
    assert_int_equal(ack_status(p->ack, p->ack_out.len, MKEK_A, &ack), KFD_ACK_ACCEPTED);
    assert_true(ack.kek_id == 41 && ack.part_counter == 1 && ack.device_counter == 1);
    assert_int_equal(held_for(&p->a, "base-1", 41, &ids), 2);
    saved_matches(&p->a, &p->fa);
    assert_int_equal(kfd_pair_check(&p->a, p->m.sm_a, p->m.a_len), KF_ERR_PAIR_STALE);

    /* B refuses (its storage fails): A keeps 41, 42, moves its counter, acks PARTNER. */
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 2, 2, 51, 1, T0, DAY, 10);
    assert_int_equal(kfd_pair_check(&p->a, p->m.sm_a, p->m.a_len), KF_OK);
    p->fb.fail_save = true;
    kf_buf_fixed(&b_out, ack_b, sizeof(ack_b));
    assert_int_equal(kfd_pair_accept(&p->b, KFD_ROLE_B, p->m.sm_b, p->m.b_len, &b_out),
                     KF_ERR_DEVICE_STORAGE);
    p->fb.fail_save = false;
    kf_buf_fixed(&p->ack_out, p->ack, sizeof(p->ack));
    assert_int_equal(
        kfd_pair_conclude(&p->a, p->m.sm_a, p->m.a_len, ack_b, b_out.len, &pv, &p->ack_out), KF_OK);
    assert_int_equal(pv, KF_ERR_DEVICE_STORAGE);
    assert_int_equal(ack_status(p->ack, p->ack_out.len, MKEK_A, &ack), KFD_ACK_PARTNER);
    assert_true(ack.kek_id == 51 && ack.part_counter == 2 && ack.device_counter == 2);
    assert_int_equal(held_for(&p->a, "base-1", 41, &ids), 2);
    assert_int_equal(p->a.st.last_counter, 2);
    saved_matches(&p->a, &p->fa);
    /* ... and the part can never be taken later. */
    assert_int_equal(kfd_pair_check(&p->a, p->m.sm_a, p->m.a_len), KF_ERR_PAIR_STALE);

    /* No answer from B, an answer that is no ack, B's ack of another part, an ack from the
     * wrong device, an "accepted" of no part: each time the counter only. */
    struct {
        const uint8_t *answer;
        size_t len;
        int want;
    } cases[5];
    uint8_t own_ack[512], no_kek[512];
    size_t own_len = p->ack_out.len;
    memcpy(own_ack, p->ack, own_len); /* A's ack of the part with KEK 51 */
    /* "accepted" with KekId 0 (no part attributed) is no ack of this part either */
    const struct kfd_ack_fields zero_kek = {0, 7, 7, KFD_ACK_ACCEPTED};
    kf_buf no_kek_out;
    kf_buf_fixed(&no_kek_out, no_kek, sizeof(no_kek));
    assert_int_equal(kfd_ack_write(MKEK_B, "base-1", &zero_kek, &no_kek_out), KF_OK);
    cases[0].answer = NULL, cases[0].len = 0, cases[0].want = KF_ERR_IO;
    cases[1].answer = (const uint8_t *)"nonsense", cases[1].len = 8,
    cases[1].want = KF_ERR_PAIR_MALFORMED;
    cases[2].answer = ack_b, cases[2].len = b_out.len, cases[2].want = KF_ERR_PAIR_MALFORMED;
    cases[3].answer = own_ack, cases[3].len = own_len, cases[3].want = KF_ERR_PAIR_WRONG_DEVICE;
    cases[4].answer = no_kek, cases[4].len = no_kek_out.len, cases[4].want = KF_ERR_PAIR_MALFORMED;
    for (uint64_t i = 0; i < 5; i++) {
        issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 3 + i, 3 + i, 61 + i, 1, T0, DAY, 10);
        if (i == 2) { /* B's (accepting) ack of yet another part, KEK 71 */
            struct issued other;
            issue(&other, MKEK_A, MKEK_B, "meter-1", "base-1", 9, 20, 71, 1, T0, DAY, 10);
            kf_buf_fixed(&b_out, ack_b, sizeof(ack_b));
            assert_int_equal(
                kfd_pair_accept(&p->b, KFD_ROLE_B, other.sm_b, other.b_len, &b_out), KF_OK);
            cases[2].len = b_out.len;
        }
        kf_buf_fixed(&p->ack_out, p->ack, sizeof(p->ack));
        assert_int_equal(kfd_pair_conclude(&p->a, p->m.sm_a, p->m.a_len, cases[i].answer,
                                           cases[i].len, &pv, &p->ack_out),
                         KF_OK);
        assert_int_equal(pv, cases[i].want);
        assert_int_equal(ack_status(p->ack, p->ack_out.len, MKEK_A, &ack), KFD_ACK_PARTNER);
        assert_int_equal(p->a.st.last_counter, 3 + i);
        assert_int_equal(held_for(&p->a, "base-1", 41, &ids), 2);
    }
    /* A's own part refused (replayed): the refusal's ack, nothing saved, B's answer unused. */
    saves = p->fa.saves;
    before = p->a.st;
    kf_buf_fixed(&p->ack_out, p->ack, sizeof(p->ack));
    assert_int_equal(kfd_pair_conclude(&p->a, p->m.sm_a, p->m.a_len, NULL, 0, &pv, &p->ack_out),
                     KF_ERR_PAIR_STALE);
    assert_int_equal(ack_status(p->ack, p->ack_out.len, MKEK_A, NULL), KFD_ACK_STALE);
    assert_memory_equal(&before, &p->a.st, sizeof(before));
    assert_int_equal(p->fa.saves, saves);
    /* Storage fails at the conclusion: nothing changes, the ack says so. */
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 10, 30, 81, 1, T0, DAY, 10);
    kf_buf_fixed(&b_out, ack_b, sizeof(ack_b));
    assert_int_equal(kfd_pair_accept(&p->b, KFD_ROLE_B, p->m.sm_b, p->m.b_len, &b_out), KF_OK);
    p->fa.fail_save = true;
    kf_buf_fixed(&p->ack_out, p->ack, sizeof(p->ack));
    assert_int_equal(
        kfd_pair_conclude(&p->a, p->m.sm_a, p->m.a_len, ack_b, b_out.len, &pv, &p->ack_out),
        KF_ERR_DEVICE_STORAGE);
    assert_int_equal(pv, KF_OK);
    assert_int_equal(ack_status(p->ack, p->ack_out.len, MKEK_A, NULL), KFD_ACK_STORAGE);
    assert_memory_equal(&before, &p->a.st, sizeof(before));
    p->fa.fail_save = false;
    /* Arguments. */
    kf_buf_fixed(&p->ack_out, p->ack, sizeof(p->ack));
    assert_int_equal(
        kfd_pair_conclude(&p->a, p->m.sm_a, p->m.a_len, ack_b, b_out.len, NULL, &p->ack_out),
        KF_ERR_ARG);
    assert_int_equal(kfd_pair_conclude(&p->a, p->m.sm_a, p->m.a_len, NULL, 5, &pv, &p->ack_out),
                     KF_ERR_ARG);
    assert_int_equal(p->ack_out.len, 0);
    assert_int_equal(kfd_pair_check(NULL, p->m.sm_a, p->m.a_len), KF_ERR_ARG);
    assert_int_equal(kfd_pair_conclude(&p->a, p->m.sm_a, p->m.a_len, ack_b, b_out.len, &pv,
                                       &p->ack_out),
                     KF_OK);
    assert_int_equal(held_for(&p->a, "base-1", 81, &ids), 1);
}

/* kfd_pair_accept_in (the driver's way): the state encoding goes into the caller's work
 * buffer, which may hold the part itself, and is wiped there after save(). */
static void accept_in_work_buffer_over_the_part(void **state)
{
    struct pair_fixture *p = *state;
    static uint8_t work[KFD_STATE_MAX + 512];
    const size_t at = 40; /* the part lies inside the work buffer */
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 1, 1, 41, 3, T0, DAY, 10);
    memset(work, 0x5A, sizeof(work));
    memcpy(work + at, p->m.sm_a, p->m.a_len);
    kf_buf_fixed(&p->ack_out, p->ack, sizeof(p->ack));
    assert_int_equal(kfd_pair_accept_in(&p->a, KFD_ROLE_A, work + at, p->m.a_len, &p->ack_out, work,
                                        sizeof(work)),
                     KF_OK);
    assert_int_equal(ack_status(p->ack, p->ack_out.len, MKEK_A, NULL), KFD_ACK_ACCEPTED);
    for (uint32_t i = 0; i < 3; i++) {
        size_t s;
        for (s = 0; s < KFD_MAX_KEKS && p->a.st.keks[s].kek_id != 41 + i; s++)
            ;
        assert_true(s < KFD_MAX_KEKS);
        assert_memory_equal(p->a.st.keks[s].key, p->m.keks[i], KFD_KEY_LEN);
    }
    saved_matches(&p->a, &p->fa);
    /* The encoding (master key, KEKs) was written over the part, then wiped. */
    assert_true(p->fa.saved_len > at + p->m.a_len);
    for (size_t i = 0; i < p->fa.saved_len; i++)
        assert_int_equal(work[i], 0);
    assert_int_equal(work[p->fa.saved_len], 0x5A);

    /* Refused by storage: nothing changes, and the encoding is wiped all the same. (Three new
     * KEKs replace the three: the encoding is as long as the one saved.) */
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 2, 2, 51, 3, T0, DAY, 10);
    memset(work, 0x5A, sizeof(work));
    memcpy(work + at, p->m.sm_a, p->m.a_len);
    struct kfd_state before = p->a.st;
    p->fa.fail_save = true;
    kf_buf_fixed(&p->ack_out, p->ack, sizeof(p->ack));
    assert_int_equal(kfd_pair_accept_in(&p->a, KFD_ROLE_A, work + at, p->m.a_len, &p->ack_out, work,
                                        sizeof(work)),
                     KF_ERR_DEVICE_STORAGE);
    assert_memory_equal(&before, &p->a.st, sizeof(before));
    assert_int_equal(ack_status(p->ack, p->ack_out.len, MKEK_A, NULL), KFD_ACK_STORAGE);
    for (size_t i = 0; i < p->fa.saved_len; i++)
        assert_int_equal(work[i], 0);
    p->fa.fail_save = false;

    /* A work buffer that could not take every state is refused before anything is read. */
    kf_buf_fixed(&p->ack_out, p->ack, sizeof(p->ack));
    assert_int_equal(kfd_pair_accept_in(&p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len, &p->ack_out, work,
                                        KFD_STATE_MAX - 1),
                     KF_ERR_ARG);
    assert_int_equal(kfd_pair_accept_in(&p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len, &p->ack_out, NULL,
                                        sizeof(work)),
                     KF_ERR_ARG);
    assert_int_equal(p->ack_out.len, 0);
    assert_memory_equal(&before, &p->a.st, sizeof(before));
}

static void ack_mac_checks(void **state)
{
    struct pair_fixture *p = *state;
    issue(&p->m, MKEK_A, MKEK_B, "meter-1", "base-1", 1, 1, 41, 1, T0, DAY, 10);
    assert_int_equal(accept_into(p, &p->a, KFD_ROLE_A, p->m.sm_a, p->m.a_len), KF_OK);
    struct kfd_ack ack;
    assert_int_equal(kfd_ack_decode(p->ack, p->ack_out.len, &ack), KF_OK);
    assert_int_equal(kfd_ack_verify(&ack, MKEK_A), KF_OK);
    assert_int_equal(kfd_ack_verify(&ack, MKEK_B), KF_ERR_PAIR_INTEGRITY);
    /* Every byte flipped: the ack no longer decodes, or no longer verifies. */
    uint8_t copy[512];
    unsigned undecodable = 0, unverified = 0;
    for (size_t i = 0; i < p->ack_out.len; i++) {
        memcpy(copy, p->ack, p->ack_out.len);
        copy[i] ^= 0x01;
        int rc = kfd_ack_decode(copy, p->ack_out.len, &ack);
        if (rc != KF_OK) {
            assert_int_equal(rc, KF_ERR_PAIR_MALFORMED);
            undecodable++;
            continue;
        }
        assert_int_equal(kfd_ack_verify(&ack, MKEK_A), KF_ERR_PAIR_INTEGRITY);
        unverified++;
    }
    assert_int_equal(undecodable + unverified, p->ack_out.len);
    assert_true(unverified >= 16 + 8 * 3); /* MAC and counter values at least */
    /* Trailing bytes and a short ack are refused. */
    assert_int_equal(kfd_ack_decode(p->ack, p->ack_out.len + 8, &ack), KF_ERR_PAIR_MALFORMED);
    assert_int_equal(kfd_ack_decode(p->ack, p->ack_out.len - 8, &ack), KF_ERR_PAIR_MALFORMED);
    /* The report carries acks as they are and refuses anything else. */
    uint8_t payload[1024];
    kf_buf out;
    kf_buf_fixed(&out, payload, sizeof(payload));
    struct kfd_span acks[2] = {{p->ack, p->ack_out.len}, {p->ack, p->ack_out.len}};
    assert_int_equal(kfd_ack_report(acks, 2, &out), KF_OK);
    assert_int_equal(out.len, 2 * p->ack_out.len);
    acks[1].len -= 8;
    kf_buf_fixed(&out, payload, sizeof(payload));
    assert_int_equal(kfd_ack_report(acks, 2, &out), KF_ERR_PAIR_MALFORMED);
    assert_int_equal(out.len, 0);
}

static void issue_refuses_bad_arguments(void **state)
{
    (void)state;
    uint8_t mem[KFD_MSG_MAX], keks[2][KFD_KEY_LEN] = {{0}}, nonce[12] = {0};
    struct kfd_issue_kek meta[2] = {{7, T0, T0 + 1, 1}, {9, T0, T0 + 1, 1}};
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    const uint8_t(*k)[KFD_KEY_LEN] = (const uint8_t(*)[KFD_KEY_LEN])keks;
    /* Non-consecutive IDs, zero count, bad role, bad ID, empty window, no room. */
    assert_int_equal(kfd_issue_part(MKEK_A, KFD_ROLE_A, "a", "b", 1, meta, k, 2, nonce, &out),
                     KF_ERR_ARG);
    assert_int_equal(kfd_issue_part(MKEK_A, KFD_ROLE_A, "a", "b", 1, meta, k, 0, nonce, &out),
                     KF_ERR_ARG);
    assert_int_equal(kfd_issue_part(MKEK_A, 3, "a", "b", 1, meta, k, 1, nonce, &out), KF_ERR_ARG);
    assert_int_equal(kfd_issue_part(MKEK_A, KFD_ROLE_A, "a b", "b", 1, meta, k, 1, nonce, &out),
                     KF_ERR_DEVICE_ID);
    meta[0].not_after = meta[0].not_before;
    assert_int_equal(kfd_issue_part(MKEK_A, KFD_ROLE_A, "a", "b", 1, meta, k, 1, nonce, &out),
                     KF_ERR_ARG);
    meta[0].not_after = T0 + 10;
    kf_buf_fixed(&out, mem, 100);
    assert_int_equal(kfd_issue_part(MKEK_A, KFD_ROLE_A, "a", "b", 1, meta, k, 1, nonce, &out),
                     KF_ERR_NOSPACE);
    assert_int_equal(out.len, 0);
    /* The largest part (8 KEKs, 64-character IDs) fits a message. */
    char id_a[65], id_b[65];
    memset(id_a, 'a', 64), memset(id_b, 'b', 64);
    id_a[64] = id_b[64] = '\0';
    struct issued big;
    issue(&big, MKEK_A, MKEK_B, id_a, id_b, 1, 1, 1, KFD_MAX_KEKS, T0, DAY, 1);
    assert_true(big.a_len + big.b_len <= KFD_MSG_MAX);
    print_message("largest M: %zu bytes\n", big.a_len + big.b_len);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kdf_cavp_counter_cmac_aes256),
        cmocka_unit_test(kdf_fixed_input_layout),
        cmocka_unit_test(ccm_wycheproof_aes256_n12_t16),
        cmocka_unit_test(cmac_sp800_38b_aes256),
        cmocka_unit_test(codec_writes_kmip_encoding),
        cmocka_unit_test(codec_reader_refusals),
        cmocka_unit_test(device_ids),
        cmocka_unit_test_setup_teardown(issue_accept_both_roles, pair_setup, pair_teardown),
        cmocka_unit_test_setup_teardown(issue_accept_kek_list, pair_setup, pair_teardown),
        cmocka_unit_test_setup_teardown(refuses_stale_counter, pair_setup, pair_teardown),
        cmocka_unit_test_setup_teardown(refuses_every_flipped_byte, pair_setup, pair_teardown),
        cmocka_unit_test_setup_teardown(refuses_swapped_and_misaddressed, pair_setup,
                                        pair_teardown),
        cmocka_unit_test_setup_teardown(refuses_expired_list, pair_setup, pair_teardown),
        cmocka_unit_test_setup_teardown(refuses_on_storage_failure, pair_setup, pair_teardown),
        cmocka_unit_test_setup_teardown(kek_slots_are_reused, pair_setup, pair_teardown),
        cmocka_unit_test_setup_teardown(new_list_supersedes_the_old, pair_setup, pair_teardown),
        cmocka_unit_test_setup_teardown(renewal_takes_effect_at_once, pair_setup, pair_teardown),
        cmocka_unit_test_setup_teardown(kek_identity_is_partner_and_id, pair_setup,
                                        pair_teardown),
        cmocka_unit_test_setup_teardown(pair_check_then_conclude, pair_setup, pair_teardown),
        cmocka_unit_test_setup_teardown(accept_in_work_buffer_over_the_part, pair_setup,
                                        pair_teardown),
        cmocka_unit_test_setup_teardown(ack_mac_checks, pair_setup, pair_teardown),
        cmocka_unit_test(issue_refuses_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
