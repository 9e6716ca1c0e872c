/* Unit tests for the device simulator's helpers: numbers, addresses, link
 * framing, the link's error item, the state file. (The records on the simulated link
 * are the library's own, with the direction in the nonce: test_device_session.c.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>
#include <cmocka.h>

#include "devsim/devsim.h"
#include "keyfleet/device.h"
#include "keyfleet/kmip_tags.h"

static void numbers_are_decimal_only_and_bounded(void **state)
{
    (void)state;
    uint64_t u;
    int64_t i;
    assert_int_equal(ds_parse_u64("0", 10, &u), KF_OK);
    assert_int_equal(u, 0);
    assert_int_equal(ds_parse_u64("1000", 1000, &u), KF_OK);
    assert_int_equal(u, 1000);
    assert_int_equal(ds_parse_u64("1001", 1000, &u), KF_ERR_USAGE);
    assert_int_equal(ds_parse_u64("18446744073709551615", UINT64_MAX, &u), KF_OK);
    assert_true(u == UINT64_MAX);
    assert_int_equal(ds_parse_u64("18446744073709551616", UINT64_MAX, &u), KF_ERR_USAGE);
    const char *bad[] = {"", "-1", "+1", " 1", "1 ", "1k", "0x10", "1.5"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
        assert_int_equal(ds_parse_u64(bad[k], UINT64_MAX, &u), KF_ERR_USAGE);
    assert_int_equal(ds_parse_i64("-86401", &i), KF_OK);
    assert_true(i == -86401);
    assert_int_equal(ds_parse_i64("+5", &i), KF_OK);
    assert_true(i == 5);
    assert_int_equal(ds_parse_i64("-9223372036854775808", &i), KF_OK);
    assert_true(i == INT64_MIN);
    assert_int_equal(ds_parse_i64("9223372036854775807", &i), KF_OK);
    assert_true(i == INT64_MAX);
    assert_int_equal(ds_parse_i64("9223372036854775808", &i), KF_ERR_USAGE);
    assert_int_equal(ds_parse_i64("-", &i), KF_ERR_USAGE);
    assert_int_equal(ds_parse_i64("--1", &i), KF_ERR_USAGE);
}

static void options_take_values_flags_and_refuse_the_rest(void **state)
{
    (void)state;
    const char *a = "stale", *b = NULL;
    bool f = true, g = false;
    const struct ds_opt opts[] = {{"--alpha", &a, NULL},
                                  {"--beta", &b, NULL},
                                  {"--flag", NULL, &f},
                                  {"--gee", NULL, &g},
                                  {NULL, NULL, NULL}};
    char why[200];
    char *ok1[] = {"--alpha", "1", "--beta=x=y", "--gee"};
    assert_int_equal(ds_opts_parse(4, ok1, opts, why, sizeof(why)), KF_OK);
    assert_string_equal(a, "1");
    assert_string_equal(b, "x=y");
    assert_false(f); /* reset: not given */
    assert_true(g);
    char *empty_value[] = {"--alpha="};
    assert_int_equal(ds_opts_parse(1, empty_value, opts, why, sizeof(why)), KF_OK);
    assert_string_equal(a, "");
    assert_null(b);
    assert_int_equal(ds_opts_parse(0, NULL, opts, why, sizeof(why)), KF_OK);
    assert_null(a);
    char *help[] = {"--alpha", "1", "-h", "--bogus"};
    assert_int_equal(ds_opts_parse(4, help, opts, why, sizeof(why)), DS_OPTS_HELP);
    static const struct {
        int argc;
        char *argv[3];
        const char *why;
    } bad[] = {
        {1, {"--bogus"}, "unknown option '--bogus'"},
        {1, {"--alphabet"}, "unknown option '--alphabet'"},
        {1, {"--alph"}, "unknown option '--alph'"},
        {1, {"alpha"}, "unexpected argument 'alpha'"},
        {1, {"--"}, "unexpected argument '--'"},
        {1, {"--alpha"}, "needs a value: '--alpha'"},
        {1, {"--flag=1"}, "this flag takes no value: '--flag'"},
        {3, {"--alpha", "1", "--alpha=2"}, "given twice: '--alpha'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = 0;
        assert_int_equal(ds_opts_parse(bad[i].argc, (char **)bad[i].argv, opts, why, sizeof(why)),
                         KF_ERR_USAGE);
        assert_string_equal(why, bad[i].why);
    }
}

static void addresses_parse_and_format(void **state)
{
    (void)state;
    struct ds_addr a;
    char s[300];
    assert_int_equal(ds_addr_parse("127.0.0.1:5696", &a), KF_OK);
    assert_false(a.is_unix);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 5696);
    ds_addr_format(&a, s, sizeof(s));
    assert_string_equal(s, "127.0.0.1:5696");
    assert_int_equal(ds_addr_parse("[::1]:0", &a), KF_OK);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 0);
    ds_addr_format(&a, s, sizeof(s));
    assert_string_equal(s, "[::1]:0");
    assert_int_equal(ds_addr_parse("localhost:65535", &a), KF_OK);
    assert_int_equal(a.port, 65535);
    assert_int_equal(ds_addr_parse("unix:/tmp/base.sock", &a), KF_OK);
    assert_true(a.is_unix);
    assert_string_equal(a.path, "/tmp/base.sock");
    ds_addr_format(&a, s, sizeof(s));
    assert_string_equal(s, "unix:/tmp/base.sock");
    const char *bad[] = {"",       "5696",    ":5696", "host:", "host:65536", "host:-1",
                         "::1:80", "[::1:80", "[]:80", "unix:", "host:80x"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
        assert_int_equal(ds_addr_parse(bad[k], &a), KF_ERR_USAGE);
    char longpath[200] = "unix:/";
    memset(longpath + 6, 'a', 150);
    longpath[156] = 0;
    assert_int_equal(ds_addr_parse(longpath, &a), KF_ERR_USAGE);
}

/* An Integer item: 16 bytes. */
static const uint8_t one_int[16] = {0x54, 0x01, 0x1A, 0x02, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 0};

static void framing_reads_one_item_at_a_time(void **state)
{
    (void)state;
    int sv[2];
    bool eof;
    kf_buf msg;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(kf_buf_alloc(&msg, 0, 4096, 0), KF_OK);
    /* two items written at once come out as two messages */
    uint8_t two[32];
    memcpy(two, one_int, 16);
    memcpy(two + 16, one_int, 16);
    two[27] = 9;
    assert_int_equal(ds_frame_write(sv[0], two, sizeof(two)), KF_OK);
    assert_int_equal(ds_frame_read(sv[1], &msg, 4096, 1000, &eof), KF_OK);
    assert_int_equal(msg.len, 16);
    assert_memory_equal(msg.data, one_int, 16);
    assert_int_equal(ds_frame_read(sv[1], &msg, 4096, 1000, &eof), KF_OK);
    assert_int_equal(msg.len, 16);
    assert_int_equal(msg.data[11], 9);
    /* nothing more: timeout, not EOF */
    assert_int_equal(ds_frame_read(sv[1], &msg, 4096, 50, &eof), KF_ERR_TIMEOUT);
    assert_false(eof);
    /* a header announcing more than the cap is refused before the body is read */
    uint8_t big[8] = {0x54, 0x01, 0x18, 0x01, 0, 0, 0x10, 0};
    assert_int_equal(ds_frame_write(sv[0], big, sizeof(big)), KF_OK);
    assert_int_equal(ds_frame_read(sv[1], &msg, 2048, 1000, &eof), KF_ERR_LIMIT);
    /* an unknown type in the header is refused */
    close(sv[0]);
    close(sv[1]);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    uint8_t badtype[8] = {0x54, 0x01, 0x18, 0x7F, 0, 0, 0, 8};
    assert_int_equal(ds_frame_write(sv[0], badtype, sizeof(badtype)), KF_OK);
    assert_int_equal(ds_frame_read(sv[1], &msg, 2048, 1000, &eof), KF_ERR_TTLV_TYPE);
    /* a message cut short by the peer closing is an I/O error, not EOF */
    close(sv[0]);
    close(sv[1]);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(ds_frame_write(sv[0], one_int, 12), KF_OK);
    close(sv[0]);
    assert_int_equal(ds_frame_read(sv[1], &msg, 2048, 1000, &eof), KF_ERR_IO);
    assert_false(eof);
    /* a clean close before a message is EOF */
    assert_int_equal(ds_frame_read(sv[1], &msg, 2048, 1000, &eof), KF_ERR_IO);
    assert_true(eof);
    close(sv[1]);
    /* writing to a closed peer is an error, not SIGPIPE */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    close(sv[1]);
    assert_int_equal(ds_frame_write(sv[0], one_int, 16), KF_ERR_IO);
    close(sv[0]);
    kf_buf_free(&msg);
}

static void item_check_wants_exactly_one_item(void **state)
{
    (void)state;
    uint8_t buf[40];
    memcpy(buf, one_int, 16);
    assert_int_equal(ds_item_check(buf, 16, 2048), KF_OK);
    assert_int_equal(ds_item_check(buf, 15, 2048), KF_ERR_SHORT);
    assert_int_equal(ds_item_check(buf, 7, 2048), KF_ERR_SHORT);
    memset(buf + 16, 0, 8);
    assert_int_equal(ds_item_check(buf, 24, 2048), KF_ERR_TTLV_TRAILING);
    assert_int_equal(ds_item_check(buf, 16, 15), KF_ERR_LIMIT);
}

static void sockets_listen_connect_and_time_out(void **state)
{
    (void)state;
    struct ds_addr a, b;
    int lfd, cfd, sfd;
    bool eof;
    kf_buf msg;
    assert_int_equal(kf_buf_alloc(&msg, 0, 4096, 0), KF_OK);
    /* TCP on an ephemeral port */
    assert_int_equal(ds_addr_parse("127.0.0.1:0", &a), KF_OK);
    assert_int_equal(ds_listen(&a, &lfd), KF_OK);
    uint16_t port = ds_bound_port(lfd);
    assert_true(port != 0);
    assert_int_equal(ds_accept(lfd, 20, &sfd), KF_ERR_TIMEOUT);
    b = a;
    b.port = port;
    assert_int_equal(ds_connect(&b, 1000, &cfd), KF_OK);
    assert_int_equal(ds_accept(lfd, 1000, &sfd), KF_OK);
    assert_int_equal(ds_frame_write(cfd, one_int, 16), KF_OK);
    assert_int_equal(ds_frame_read(sfd, &msg, 64, 1000, &eof), KF_OK);
    assert_memory_equal(msg.data, one_int, 16);
    close(cfd);
    close(sfd);
    close(lfd);
    /* nobody listens there any more */
    assert_int_equal(ds_connect(&b, 500, &cfd), KF_ERR_CONNECT);
    /* a unix socket; a regular file at the path is never replaced */
    char dir[] = "/tmp/kf-devsim-XXXXXX", path[200];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "unix:%s/s", dir);
    assert_int_equal(ds_addr_parse(path, &a), KF_OK);
    assert_int_equal(ds_listen(&a, &lfd), KF_OK);
    assert_int_equal(ds_bound_port(lfd), 0);
    assert_int_equal(ds_connect(&a, 1000, &cfd), KF_OK);
    assert_int_equal(ds_accept(lfd, 1000, &sfd), KF_OK);
    assert_int_equal(ds_frame_write(sfd, one_int, 16), KF_OK);
    assert_int_equal(ds_frame_read(cfd, &msg, 64, 1000, &eof), KF_OK);
    close(cfd);
    close(sfd);
    close(lfd);
    assert_int_equal(ds_listen(&a, &lfd), KF_OK); /* the stale socket is replaced */
    close(lfd);
    unlink(a.path);
    FILE *f = fopen(a.path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(ds_listen(&a, &lfd), KF_ERR_EXISTS);
    unlink(a.path);
    rmdir(dir);
    kf_buf_free(&msg);
}

static void error_item_round_trips_and_rejects_others(void **state)
{
    (void)state;
    uint8_t item[DS_ERROR_ITEM_LEN];
    int code = 0;
    ds_error_item(KF_ERR_SESSION_REPLAY, item);
    assert_int_equal(ds_item_check(item, sizeof(item), 64), KF_OK);
    assert_true(ds_error_item_parse(item, sizeof(item), &code));
    assert_int_equal(code, KF_ERR_SESSION_REPLAY);
    assert_int_equal(item[0] << 16 | item[1] << 8 | item[2], KMIP_TAG_KEYFLEET_ERROR_CODE);
    /* another tag, another type, another length, non-zero padding, wrong size */
    uint8_t x[DS_ERROR_ITEM_LEN];
    memcpy(x, item, sizeof(x));
    x[2] ^= 1;
    assert_false(ds_error_item_parse(x, sizeof(x), &code));
    memcpy(x, item, sizeof(x));
    x[3] = 0x05;
    assert_false(ds_error_item_parse(x, sizeof(x), &code));
    memcpy(x, item, sizeof(x));
    x[7] = 8;
    assert_false(ds_error_item_parse(x, sizeof(x), &code));
    memcpy(x, item, sizeof(x));
    x[15] = 1;
    assert_false(ds_error_item_parse(x, sizeof(x), &code));
    assert_false(ds_error_item_parse(item, 8, &code));
    assert_false(ds_error_item_parse(one_int, sizeof(one_int), &code));
}

static size_t count_entries(const char *dir)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static void state_file_is_atomic_private_and_bounded(void **state)
{
    (void)state;
    char dir[] = "/tmp/kf-devsim-XXXXXX", path[200];
    struct stat sb;
    kf_buf in;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/device.state", dir);
    assert_int_equal(ds_file_read(path, 100, 0, &in), KF_ERR_NOT_FOUND);
    umask(022); /* the file is 0600 whatever the umask */
    assert_int_equal(ds_file_write_atomic(path, (const uint8_t *)"first", 5), KF_OK);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(ds_file_write_atomic(path, (const uint8_t *)"second!", 7), KF_OK);
    assert_int_equal(ds_file_read(path, 100, KF_BUF_SECRET, &in), KF_OK);
    assert_int_equal(in.len, 7);
    assert_memory_equal(in.data, "second!", 7);
    kf_buf_free(&in);
    assert_int_equal(count_entries(dir), 1); /* no temp file left behind */
    assert_int_equal(ds_file_read(path, 6, 0, &in), KF_ERR_LIMIT);
    assert_int_equal(ds_file_read(path, 7, 0, &in), KF_OK);
    kf_buf_free(&in);
    /* empty file */
    assert_int_equal(ds_file_write_atomic(path, NULL, 0), KF_OK);
    assert_int_equal(ds_file_read(path, 7, 0, &in), KF_OK);
    assert_int_equal(in.len, 0);
    kf_buf_free(&in);
    /* a symlink is not followed when reading */
    char link[220];
    snprintf(link, sizeof(link), "%s/link", dir);
    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(ds_file_read(link, 100, 0, &in), KF_ERR_IO);
    unlink(link);
    /* a directory that does not exist: refused, nothing written */
    char nodir[220];
    snprintf(nodir, sizeof(nodir), "%s/missing/state", dir);
    assert_int_equal(ds_file_write_atomic(nodir, (const uint8_t *)"x", 1), KF_ERR_IO);
    unlink(path);
    rmdir(dir);
}

static void times_format_as_utc(void **state)
{
    (void)state;
    char s[40];
    ds_format_time(0, s, sizeof(s));
    assert_string_equal(s, "1970-01-01T00:00:00Z");
    ds_format_time(1700000000, s, sizeof(s));
    assert_string_equal(s, "2023-11-14T22:13:20Z");
    ds_format_time(INT64_MAX, s, sizeof(s));
    assert_string_equal(s, "+inf");
    ds_format_time(INT64_MIN, s, sizeof(s));
    assert_string_equal(s, "-inf");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(numbers_are_decimal_only_and_bounded),
        cmocka_unit_test(options_take_values_flags_and_refuse_the_rest),
        cmocka_unit_test(addresses_parse_and_format),
        cmocka_unit_test(framing_reads_one_item_at_a_time),
        cmocka_unit_test(item_check_wants_exactly_one_item),
        cmocka_unit_test(sockets_listen_connect_and_time_out),
        cmocka_unit_test(error_item_round_trips_and_rejects_others),
        cmocka_unit_test(state_file_is_atomic_private_and_bounded),
        cmocka_unit_test(times_format_as_utc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
