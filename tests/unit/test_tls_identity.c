/*
 * The identity map: parsing (every malformed line refused with its number
 * and a reason) and matching (fingerprint, subject fields, first rule wins,
 * ambiguous subjects never match).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "keyfleet/tls.h"

#define FP_HEX "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static const struct kf_tls_peer admin_peer = {
    .subject_dn = "CN=admin,O=keyfleet dev",
    .sha256 = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa,
               0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
               0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff},
    .cn = "admin",
    .o = "keyfleet dev",
    .n_cn = 1,
    .n_o = 1,
};

static int parse(const char *text, kf_tls_identities **ids, unsigned *line, char *why)
{
    return kf_tls_identities_parse(text, strlen(text), ids, line, why, 256);
}

static void parses_rules_comments_and_quotes(void **state)
{
    (void)state;
    const char *text = "# comment\n"
                       "\n"
                       "   \t  \n"
                       "fingerprint=SHA256:" FP_HEX " roles=admin,manage,use,export domains=*\n"
                       "subject-CN=user subject-O=\"keyfleet dev\" roles=use domains=VENDOR,USPS "
                       "default=USPS  # trailing comment\r\n"
                       "subject-OU=ops roles=none domains=X";
    kf_tls_identities *ids = NULL;
    unsigned line = 99;
    char why[256];
    assert_int_equal(parse(text, &ids, &line, why), KF_OK);
    assert_int_equal(kf_tls_identities_count(ids), 3);
    kf_tls_identities_free(ids);
}

static void colon_separated_fingerprint_matches(void **state)
{
    (void)state;
    const char *text = "fingerprint=sha256:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"
                       "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff roles=use domains=A\n";
    kf_tls_identities *ids;
    char why[256];
    unsigned line;
    assert_int_equal(parse(text, &ids, &line, why), KF_OK);
    struct kf_principal who;
    assert_int_equal(kf_tls_identities_match(ids, &admin_peer, &who), KF_OK);
    assert_string_equal(who.name, "cert:CN=admin,O=keyfleet dev");
    assert_int_equal(who.roles, KF_ROLE_USE);
    assert_false(who.all_domains);
    assert_int_equal(who.ndomains, 1);
    assert_string_equal(who.domains[0], "A");
    assert_string_equal(who.default_domain, "A"); /* first named domain */
    kf_tls_identities_free(ids);
}

/* The manufacturing roles (docs/manufacturing.md "Command table"). */
static void manufacturing_role_words(void **state)
{
    (void)state;
    const char *text = "subject-CN=admin roles=steel,registrar,verifier domains=VE\n";
    kf_tls_identities *ids;
    char why[256];
    unsigned line;
    assert_int_equal(parse(text, &ids, &line, why), KF_OK);
    struct kf_principal who;
    assert_int_equal(kf_tls_identities_match(ids, &admin_peer, &who), KF_OK);
    assert_int_equal(who.roles, KF_ROLE_STEEL | KF_ROLE_REGISTRAR | KF_ROLE_VERIFIER);
    kf_tls_identities_free(ids);
    assert_int_equal(parse("subject-CN=a roles=oak domains=A\n", &ids, &line, why),
                     KF_ERR_IDENTITY_FILE);
    assert_non_null(strstr(why, "steel, registrar, verifier"));
}

struct bad {
    const char *text;
    unsigned line;
    const char *why_part;
};

static void malformed_lines_are_refused_with_their_number(void **state)
{
    (void)state;
    static const struct bad cases[] = {
        {"roles=use domains=A\n", 1, "no matcher"},
        {"# ok\nsubject-CN=a domains=A\n", 2, "roles= and domains="},
        {"subject-CN=a roles=use\n", 1, "roles= and domains="},
        {"\n\nsubject-CN=a roles=root domains=A\n", 3, "unknown role"},
        {"subject-CN=a roles=use,,admin domains=A\n", 1, "empty item"},
        {"subject-CN=a roles=use domains=A/B\n", 1, "invalid domain"},
        {"subject-CN=a roles=use domains=*,A\n", 1, "cannot be combined"},
        {"subject-CN=a roles=use domains=A default=B\n", 1, "not among"},
        {"subject-CN=a roles=use domains=A colour=blue\n", 1, "unknown key"},
        {"subject-CN=a roles=use domains=A junk\n", 1, "key=value"},
        {"subject-CN=\"a roles=use domains=A\n", 1, "unterminated quote"},
        {"subject-CN=a subject-CN=b roles=use domains=A\n", 1, "twice"},
        {"subject-CN=a roles=use roles=admin domains=A\n", 1, "twice"},
        {"subject-CN= roles=use domains=A\n", 1, "empty"},
        {"fingerprint=MD5:00 roles=use domains=A\n", 1, "SHA256:"},
        {"fingerprint=SHA256:0011 roles=use domains=A\n", 1, "32 bytes"},
        {"fingerprint=SHA256:" FP_HEX "00 roles=use domains=A\n", 1, "longer than 32"},
        {"fingerprint=SHA256:" FP_HEX "0 roles=use domains=A\n", 1, "32 bytes"},
        {"fingerprint=SHA256:zz" FP_HEX " roles=use domains=A\n", 1, "not hex"},
        {"subject-CN=a roles=use domains=A\nsubject-CN=b roles=use domains=\n", 2, "empty item"},
        {"subject-CN=a roles=use domains="
         "A1,A2,A3,A4,A5,A6,A7,A8,A9,A10,A11,A12,A13,A14,A15,A16,A17,A18,A19,A20,A21,A22,A23,"
         "A24,A25,A26,A27,A28,A29,A30,A31,A32,A33\n",
         1, "more than 32"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kf_tls_identities *ids = NULL;
        unsigned line = 0;
        char why[256] = "";
        int rc = parse(cases[i].text, &ids, &line, why);
        if (rc != KF_ERR_IDENTITY_FILE || line != cases[i].line || !strstr(why, cases[i].why_part))
            fail_msg("case %zu: rc %d line %u why '%s'", i, rc, line, why);
        assert_null(ids);
    }
}

static void long_line_and_nul_byte_are_refused(void **state)
{
    (void)state;
    char text[2100];
    memset(text, 'a', sizeof(text));
    memcpy(text, "subject-CN=", 11);
    kf_tls_identities *ids = NULL;
    unsigned line;
    char why[256];
    assert_int_equal(kf_tls_identities_parse(text, sizeof(text), &ids, &line, why, sizeof(why)),
                     KF_ERR_IDENTITY_FILE);
    assert_int_equal(line, 1);
    static const char with_nul[] = "# fine\nsubject-CN=a\0 roles=use domains=A\n";
    assert_int_equal(
        kf_tls_identities_parse(with_nul, sizeof(with_nul) - 1, &ids, &line, why, sizeof(why)),
        KF_ERR_IDENTITY_FILE);
    assert_int_equal(line, 2);
    assert_non_null(strstr(why, "NUL"));
}

static void subject_rules_need_every_field_once(void **state)
{
    (void)state;
    const char *text = "subject-CN=admin subject-O=other roles=admin domains=*\n"
                       "subject-CN=admin subject-O=\"keyfleet dev\" roles=use domains=A\n"
                       "subject-CN=admin roles=export domains=*\n";
    kf_tls_identities *ids;
    unsigned line;
    char why[256];
    assert_int_equal(parse(text, &ids, &line, why), KF_OK);
    struct kf_principal who;
    /* The first rule's O differs: the second rule is the first match. */
    assert_int_equal(kf_tls_identities_match(ids, &admin_peer, &who), KF_OK);
    assert_int_equal(who.roles, KF_ROLE_USE);
    /* Two CNs in the certificate: ambiguous, no subject-CN rule matches. */
    struct kf_tls_peer twice = admin_peer;
    twice.n_cn = 2;
    assert_int_equal(kf_tls_identities_match(ids, &twice, &who), KF_ERR_IDENTITY_UNKNOWN);
    /* Case matters, and a prefix is not a match. */
    struct kf_tls_peer other = admin_peer;
    snprintf(other.cn, sizeof(other.cn), "Admin");
    assert_int_equal(kf_tls_identities_match(ids, &other, &who), KF_ERR_IDENTITY_UNKNOWN);
    snprintf(other.cn, sizeof(other.cn), "admin2");
    assert_int_equal(kf_tls_identities_match(ids, &other, &who), KF_ERR_IDENTITY_UNKNOWN);
    kf_tls_identities_free(ids);
}

static void fingerprint_must_match_exactly(void **state)
{
    (void)state;
    kf_tls_identities *ids;
    unsigned line;
    char why[256];
    assert_int_equal(parse("fingerprint=SHA256:" FP_HEX " subject-CN=admin roles=admin domains=*",
                           &ids, &line, why),
                     KF_OK);
    struct kf_principal who;
    assert_int_equal(kf_tls_identities_match(ids, &admin_peer, &who), KF_OK);
    assert_true(who.all_domains);
    assert_string_equal(who.default_domain, "default");
    struct kf_tls_peer other = admin_peer;
    other.sha256[31] ^= 1;
    assert_int_equal(kf_tls_identities_match(ids, &other, &who), KF_ERR_IDENTITY_UNKNOWN);
    /* Both matchers must hold. */
    other = admin_peer;
    snprintf(other.cn, sizeof(other.cn), "user");
    assert_int_equal(kf_tls_identities_match(ids, &other, &who), KF_ERR_IDENTITY_UNKNOWN);
    kf_tls_identities_free(ids);
    /* An empty map matches nobody. */
    assert_int_equal(parse("# nothing\n", &ids, &line, why), KF_OK);
    assert_int_equal(kf_tls_identities_match(ids, &admin_peer, &who), KF_ERR_IDENTITY_UNKNOWN);
    kf_tls_identities_free(ids);
}

static void load_refuses_missing_file(void **state)
{
    (void)state;
    kf_tls_identities *ids = NULL;
    unsigned line;
    char why[256];
    assert_int_equal(
        kf_tls_identities_load("/nonexistent/identities", &ids, &line, why, sizeof(why)),
        KF_ERR_IO);
    assert_non_null(strstr(why, "/nonexistent/identities"));
    assert_int_equal(kf_tls_identities_load("/tmp", &ids, &line, why, sizeof(why)), KF_ERR_IO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_rules_comments_and_quotes),
        cmocka_unit_test(colon_separated_fingerprint_matches),
        cmocka_unit_test(manufacturing_role_words),
        cmocka_unit_test(malformed_lines_are_refused_with_their_number),
        cmocka_unit_test(long_line_and_nul_byte_are_refused),
        cmocka_unit_test(subject_rules_need_every_field_once),
        cmocka_unit_test(fingerprint_must_match_exactly),
        cmocka_unit_test(load_refuses_missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
