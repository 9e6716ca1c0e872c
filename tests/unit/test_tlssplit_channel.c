/*
 * The handler/worker channel messages (src/tlssplit/channel.c): every message
 * round-trips byte-exact; every malformation is KF_ERR_SPLIT_CHANNEL (frame
 * version, reserved bytes, unknown type, length, trailing bytes, each field's
 * limits); the transport refuses types outside the phase's allow list,
 * descriptors where none belong (and closes them), truncated packets, START
 * without its three descriptors; it reports the other end closing and time-outs.
 * Connection IDs: GIVE(first) with an ID and no principal, PEER and GONE
 * round-trip; the ID flag on a later GIVE, cut or padded IDs, the principal's
 * limits in PEER, and CONN_IDS on a client handler's CONFIG are refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keyfleet/log.h"
#include "tlssplit/channel.h"

static uint8_t mem[KF_SPLIT_BROKER_MAX];

static struct kf_split_give sample_give(bool first)
{
    struct kf_split_give g = {.first = first, .resumed = true};
    g.rd.version = g.wr.version = KF_TLSREC_TLS13;
    g.rd.cipher = g.wr.cipher = KF_TLSREC_AES_256_GCM;
    g.rd.key_len = g.wr.key_len = 32;
    g.rd.iv_len = g.wr.iv_len = 12;
    memset(g.rd.key, 1, 32);
    memset(g.wr.key, 2, 32);
    memset(g.rd.iv, 3, 12);
    memset(g.wr.iv, 4, 12);
    g.rd.seq = 7;
    g.wr.seq = 0x0102030405060708ull;
    if (first) {
        snprintf(g.who.name, sizeof(g.who.name), "cert:CN=admin,O=keyfleet dev");
        g.who.roles = 0xf;
        g.who.ndomains = 2;
        snprintf(g.who.domains[0], sizeof(g.who.domains[0]), "VENDOR");
        snprintf(g.who.domains[1], sizeof(g.who.domains[1]), "DE");
        snprintf(g.who.default_domain, sizeof(g.who.default_domain), "VENDOR");
    }
    return g;
}

/* Encode, then decode the frame: returns the body reader. */
static kf_buf frame_of(kf_buf *out, uint8_t want_type)
{
    uint8_t type;
    kf_buf body;
    assert_int_equal(kf_split_decode_frame(out->data, out->len, sizeof(mem), &type, &body), KF_OK);
    assert_int_equal(type, want_type);
    return body;
}

static void test_round_trips(void **state)
{
    (void)state;
    kf_buf out, body;
    for (int first = 0; first <= 1; first++) {
        struct kf_split_give g = sample_give(first), back;
        kf_buf_fixed(&out, mem, sizeof(mem));
        assert_int_equal(kf_split_encode_give(&g, &out), KF_OK);
        body = frame_of(&out, KF_SPLIT_GIVE);
        assert_int_equal(kf_split_decode_give(&body, &back), KF_OK);
        assert_memory_equal(&back.rd, &g.rd, sizeof(g.rd));
        assert_memory_equal(&back.wr, &g.wr, sizeof(g.wr));
        assert_int_equal(back.first, first);
        assert_true(back.resumed);
        assert_memory_equal(&back.who, &g.who, sizeof(g.who));
    }
    struct kf_split_take t = {KF_SPLIT_TAKE_ABORT, 20, 5, 9}, tb;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_take(&t, &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_TAKE);
    assert_int_equal(kf_split_decode_take(&body, &tb), KF_OK);
    assert_int_equal(tb.reason, t.reason);
    assert_int_equal(tb.arg, t.arg);
    assert_int_equal(tb.read_seq, t.read_seq);
    assert_int_equal(tb.write_seq, t.write_seq);

    struct kf_split_end e = {KF_ERR_TLS}, eb;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_end(&e, &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_END);
    assert_int_equal(kf_split_decode_end(&body, &eb), KF_OK);
    assert_int_equal(eb.reason, KF_ERR_TLS);

    struct kf_split_start s = {.role = KF_SPLIT_ROLE_SERVER}, sb;
    snprintf(s.peer, sizeof(s.peer), "[::1]:5696");
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_start(&s, &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_START);
    assert_int_equal(kf_split_decode_start(&body, &sb), KF_OK);
    assert_string_equal(sb.peer, "[::1]:5696");

    static struct kf_split_config c, cb;
    snprintf(c.ca_file, sizeof(c.ca_file), "/ca.pem");
    snprintf(c.cert_file, sizeof(c.cert_file), "/cert.pem");
    snprintf(c.key_file, sizeof(c.key_file), "pkcs11:token=t;object=k");
    snprintf(c.key_pin, sizeof(c.key_pin), "1234");
    snprintf(c.identities_file, sizeof(c.identities_file), "/ids");
    c.handshake_timeout_ms = 3000;
    c.flags = KF_SPLIT_CONFIG_TEST_REVEAL;
    c.log_level = KF_LOG_WARN;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_config(&c, &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_CONFIG);
    assert_int_equal(kf_split_decode_config(&body, &cb), KF_OK);
    assert_memory_equal(&cb, &c, sizeof(c));

    uint8_t rec[5 + 20] = {23, 3, 3, 0, 20};
    const uint8_t *rp;
    size_t rl;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_record(rec, sizeof(rec), &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_RECORD);
    assert_int_equal(kf_split_decode_record(&body, &rp, &rl), KF_OK);
    assert_int_equal(rl, sizeof(rec));
    assert_memory_equal(rp, rec, sizeof(rec));
}

static void test_frame_refusals(void **state)
{
    (void)state;
    kf_buf out, body;
    uint8_t type;
    struct kf_split_end e = {0};
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_end(&e, &out), KF_OK);
    size_t n = out.len;
    uint8_t copy[64];
    struct {
        size_t at;
        uint8_t val;
    } bad[] = {{0, 2}, {0, 0}, {1, 0}, {1, 11}, {2, 1}, {3, 1}, {7, 3}, {7, 5}, {4, 1}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(copy, mem, n);
        copy[bad[i].at] = bad[i].val;
        assert_int_equal(kf_split_decode_frame(copy, n, sizeof(copy), &type, &body),
                         KF_ERR_SPLIT_CHANNEL);
    }
    assert_int_equal(kf_split_decode_frame(mem, n - 1, sizeof(copy), &type, &body),
                     KF_ERR_SPLIT_CHANNEL);
    assert_int_equal(kf_split_decode_frame(mem, 7, sizeof(copy), &type, &body),
                     KF_ERR_SPLIT_CHANNEL);
    assert_int_equal(kf_split_decode_frame(mem, n, n - 1, &type, &body), KF_ERR_SPLIT_CHANNEL);
}

/* Decode a GIVE after changing one byte of its body (offset from the body start). */
static int give_with(bool first, size_t at, uint8_t val, size_t trim, bool extra)
{
    struct kf_split_give g = sample_give(first), back;
    kf_buf out, body;
    uint8_t type;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_give(&g, &out), KF_OK);
    if (at != SIZE_MAX)
        mem[KF_SPLIT_FRAME_LEN + at] = val;
    size_t n = out.len - trim;
    if (extra)
        mem[n++] = 0;
    /* keep the frame's length honest so only the body is at fault */
    uint32_t bl = (uint32_t)(n - KF_SPLIT_FRAME_LEN);
    mem[4] = (uint8_t)(bl >> 24), mem[5] = (uint8_t)(bl >> 16), mem[6] = (uint8_t)(bl >> 8),
    mem[7] = (uint8_t)bl;
    assert_int_equal(kf_split_decode_frame(mem, n, sizeof(mem), &type, &body), KF_OK);
    return kf_split_decode_give(&body, &back);
}

static void test_give_refusals(void **state)
{
    (void)state;
    /* body: flags(1) version(2) cipher(1) | rd: klen(1) key(32) ivlen(1) iv(12) seq(8) | wr ... */
    assert_int_equal(give_with(true, SIZE_MAX, 0, 0, false), KF_OK);
    assert_int_equal(give_with(false, 0, 4, 0, false), KF_ERR_SPLIT_CHANNEL);  /* ID, not first */
    assert_int_equal(give_with(false, 0, 8, 0, false), KF_ERR_SPLIT_CHANNEL);  /* unknown flag */
    assert_int_equal(give_with(false, 2, 2, 0, false), KF_ERR_SPLIT_CHANNEL);  /* version 0x0302 */
    assert_int_equal(give_with(false, 3, 0, 0, false), KF_ERR_SPLIT_CHANNEL);  /* cipher 0 */
    assert_int_equal(give_with(false, 3, 4, 0, false), KF_ERR_SPLIT_CHANNEL);  /* cipher 4 */
    assert_int_equal(give_with(false, 3, KF_TLSREC_AES_128_GCM, 0, false),
                     KF_ERR_SPLIT_CHANNEL);                                   /* 32-byte key */
    assert_int_equal(give_with(false, 4, 31, 0, false), KF_ERR_SPLIT_CHANNEL); /* key length */
    assert_int_equal(give_with(false, 37, 4, 0, false), KF_ERR_SPLIT_CHANNEL); /* IV length */
    assert_int_equal(give_with(false, 50, 0xff, 0, false), KF_OK); /* a large sequence number */
    assert_int_equal(give_with(false, SIZE_MAX, 0, 0, true), KF_ERR_SPLIT_CHANNEL); /* trailing */
    assert_int_equal(give_with(false, SIZE_MAX, 0, 1, false), KF_ERR_SPLIT_CHANNEL); /* short */
    assert_int_equal(give_with(true, SIZE_MAX, 0, 1, false), KF_ERR_SPLIT_CHANNEL);
    /* principal: name length (2) starts at 4 + 2 * 54 = 112 */
    assert_int_equal(give_with(true, 112, 0x01, 0, false), KF_ERR_SPLIT_CHANNEL); /* 256+ bytes */
    assert_int_equal(give_with(true, 118, 0, 0, false), KF_ERR_SPLIT_CHANNEL);   /* NUL in name */
    size_t name_len = strlen(sample_give(true).who.name);
    size_t roles = 114 + name_len, all = roles + 4, nd = all + 1;
    assert_int_equal(give_with(true, all, 2, 0, false), KF_ERR_SPLIT_CHANNEL);
    assert_int_equal(give_with(true, nd, 33, 0, false), KF_ERR_SPLIT_CHANNEL);
    assert_int_equal(give_with(true, nd + 1, 1, 0, false), KF_ERR_SPLIT_CHANNEL); /* domain > 64 */

    /* The last sequence number is never handed over (the record layer refuses it too). */
    struct kf_split_give g = sample_give(false), back;
    g.wr.seq = UINT64_MAX;
    kf_buf out, body;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_give(&g, &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_GIVE);
    assert_int_equal(kf_split_decode_give(&body, &back), KF_ERR_SPLIT_CHANNEL);
}

static int decode_take(uint8_t reason, uint8_t arg, uint64_t rs, uint64_t ws)
{
    struct kf_split_take t = {reason, arg, rs, ws}, back;
    kf_buf out, body;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_take(&t, &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_TAKE);
    return kf_split_decode_take(&body, &back);
}

static int decode_end(int32_t reason)
{
    struct kf_split_end e = {reason}, back;
    kf_buf out, body;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_end(&e, &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_END);
    return kf_split_decode_end(&body, &back);
}

static void test_small_message_refusals(void **state)
{
    (void)state;
    assert_int_equal(decode_take(0, 0, 1, 1), KF_ERR_SPLIT_CHANNEL);
    assert_int_equal(decode_take(5, 0, 1, 1), KF_ERR_SPLIT_CHANNEL);
    assert_int_equal(decode_take(KF_SPLIT_TAKE_RECORD, 1, 1, 1), KF_ERR_SPLIT_CHANNEL);
    assert_int_equal(decode_take(KF_SPLIT_TAKE_CLOSE, 1, 1, 1), KF_ERR_SPLIT_CHANNEL);
    assert_int_equal(decode_take(KF_SPLIT_TAKE_KEY_UPDATE, 1, 1, 1), KF_OK);
    assert_int_equal(decode_take(KF_SPLIT_TAKE_KEY_UPDATE, 2, 1, 1), KF_ERR_SPLIT_CHANNEL);
    assert_int_equal(decode_take(KF_SPLIT_TAKE_ABORT, 80, 1, 1), KF_OK);
    assert_int_equal(decode_take(KF_SPLIT_TAKE_RECORD, 0, UINT64_MAX, 1), KF_ERR_SPLIT_CHANNEL);
    assert_int_equal(decode_take(KF_SPLIT_TAKE_RECORD, 0, 1, UINT64_MAX), KF_ERR_SPLIT_CHANNEL);
    assert_int_equal(decode_end(KF_OK), KF_OK);
    assert_int_equal(decode_end(KF_ERR_TLS), KF_OK);
    assert_int_equal(decode_end(1), KF_ERR_SPLIT_CHANNEL);
    assert_int_equal(decode_end(-100000), KF_ERR_SPLIT_CHANNEL);

    /* START: only the server role; the peer text at most 63 bytes. */
    kf_buf out, body;
    struct kf_split_start s = {.role = 2}, sb;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_start(&s, &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_START);
    assert_int_equal(kf_split_decode_start(&body, &sb), KF_ERR_SPLIT_CHANNEL);
    s.role = KF_SPLIT_ROLE_SERVER;
    memset(s.peer, 'a', KF_SPLIT_PEER_MAX);
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_start(&s, &out), KF_OK);
    mem[KF_SPLIT_FRAME_LEN + 2] = KF_SPLIT_PEER_MAX + 1; /* declared longer than allowed */
    mem[7]++;
    mem[out.len] = 'a';
    out.len++;
    body = frame_of(&out, KF_SPLIT_START);
    assert_int_equal(kf_split_decode_start(&body, &sb), KF_ERR_SPLIT_CHANNEL);

    /* RECORD: must be exactly one well-formed record. */
    const uint8_t *rp;
    size_t rl;
    uint8_t rec[5 + 20] = {23, 3, 3, 0, 21}; /* says 21, has 20 */
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_record(rec, sizeof(rec), &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_RECORD);
    assert_int_equal(kf_split_decode_record(&body, &rp, &rl), KF_ERR_SPLIT_CHANNEL);
    rec[4] = 20;
    rec[0] = 24;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_record(rec, sizeof(rec), &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_RECORD);
    assert_int_equal(kf_split_decode_record(&body, &rp, &rl), KF_ERR_SPLIT_CHANNEL);

    /* CONFIG: required paths, known flags and levels. */
    static struct kf_split_config c, cb;
    snprintf(c.ca_file, sizeof(c.ca_file), "/ca");
    snprintf(c.cert_file, sizeof(c.cert_file), "/c");
    snprintf(c.key_file, sizeof(c.key_file), "/k");
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_config(&c, &out), KF_OK); /* no identity map */
    body = frame_of(&out, KF_SPLIT_CONFIG);
    assert_int_equal(kf_split_decode_config(&body, &cb), KF_ERR_SPLIT_CHANNEL);
    snprintf(c.identities_file, sizeof(c.identities_file), "/i");
    c.flags = 2;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_config(&c, &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_CONFIG);
    assert_int_equal(kf_split_decode_config(&body, &cb), KF_ERR_SPLIT_CHANNEL);
    c.flags = 0;
    c.log_level = 9;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_config(&c, &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_CONFIG);
    assert_int_equal(kf_split_decode_config(&body, &cb), KF_ERR_SPLIT_CHANNEL);
}

/* ---- connection IDs: GIVE with an ID, PEER and GONE (CONFIG flag CONN_IDS) ---- */

static size_t body_fix(size_t n)
{
    uint32_t bl = (uint32_t)(n - KF_SPLIT_FRAME_LEN);
    mem[4] = (uint8_t)(bl >> 24), mem[5] = (uint8_t)(bl >> 16), mem[6] = (uint8_t)(bl >> 8),
    mem[7] = (uint8_t)bl;
    return n;
}

static int decode_peer_bytes(size_t n, struct kf_split_peer *p)
{
    kf_buf body;
    uint8_t type;
    if (kf_split_decode_frame(mem, body_fix(n), sizeof(mem), &type, &body) < 0)
        return KF_ERR_SPLIT_CHANNEL;
    assert_int_equal(type, KF_SPLIT_PEER);
    return kf_split_decode_peer(&body, p);
}

static void test_conn_ids(void **state)
{
    (void)state;
    kf_buf out, body;
    /* GIVE(first) with an ID carries no principal: the ID instead */
    struct kf_split_give g = sample_give(true), back;
    memset(&g.who, 0, sizeof(g.who));
    g.has_id = true;
    for (size_t i = 0; i < sizeof(g.conn_id); i++)
        g.conn_id[i] = (uint8_t)(0xa0 + i);
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_give(&g, &out), KF_OK);
    assert_int_equal(out.len, KF_SPLIT_FRAME_LEN + 4 + 2 * 54 + KF_SPLIT_CONN_ID_LEN);
    assert_int_equal(mem[KF_SPLIT_FRAME_LEN] & 4, 4);
    body = frame_of(&out, KF_SPLIT_GIVE);
    assert_int_equal(kf_split_decode_give(&body, &back), KF_OK);
    assert_true(back.first && back.has_id);
    assert_memory_equal(back.conn_id, g.conn_id, sizeof(g.conn_id));
    assert_int_equal(back.who.name[0], 0);
    assert_int_equal(back.who.roles, 0);
    size_t n = out.len;
    /* cut in the ID, one byte more, and the ID flag on a later GIVE */
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_give(&g, &out), KF_OK);
    uint8_t type;
    assert_int_equal(kf_split_decode_frame(mem, body_fix(n - 1), sizeof(mem), &type, &body), KF_OK);
    assert_int_equal(kf_split_decode_give(&body, &back), KF_ERR_SPLIT_CHANNEL);
    mem[n] = 0;
    assert_int_equal(kf_split_decode_frame(mem, body_fix(n + 1), sizeof(mem), &type, &body), KF_OK);
    assert_int_equal(kf_split_decode_give(&body, &back), KF_ERR_SPLIT_CHANNEL);
    g.first = false;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_give(&g, &out), KF_ERR_ARG);

    /* PEER and GONE round-trip */
    struct kf_split_peer p = {.who = sample_give(true).who}, pb;
    memset(p.id, 0x3c, sizeof(p.id));
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_peer(&p, &out), KF_OK);
    assert_true(out.len <= KF_SPLIT_PEERS_MAX);
    body = frame_of(&out, KF_SPLIT_PEER);
    assert_int_equal(kf_split_decode_peer(&body, &pb), KF_OK);
    assert_memory_equal(&pb, &p, sizeof(p));
    n = out.len;
    uint8_t id[KF_SPLIT_CONN_ID_LEN];
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_gone(p.id, &out), KF_OK);
    assert_int_equal(out.len, KF_SPLIT_FRAME_LEN + KF_SPLIT_CONN_ID_LEN);
    body = frame_of(&out, KF_SPLIT_GONE);
    assert_int_equal(kf_split_decode_gone(&body, id), KF_OK);
    assert_memory_equal(id, p.id, sizeof(id));
    assert_int_equal(kf_split_decode_frame(mem, body_fix(out.len - 1), sizeof(mem), &type, &body),
                     KF_OK);
    assert_int_equal(kf_split_decode_gone(&body, id), KF_ERR_SPLIT_CHANNEL);
    mem[out.len] = 0;
    assert_int_equal(kf_split_decode_frame(mem, body_fix(out.len + 1), sizeof(mem), &type, &body),
                     KF_OK);
    assert_int_equal(kf_split_decode_gone(&body, id), KF_ERR_SPLIT_CHANNEL);

    /* READY: the handler's first word, a bare frame; a body is refused */
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_ready(&out), KF_OK);
    assert_int_equal(out.len, KF_SPLIT_FRAME_LEN);
    body = frame_of(&out, KF_SPLIT_READY);
    assert_int_equal(kf_split_decode_ready(&body), KF_OK);
    mem[out.len] = 0;
    assert_int_equal(kf_split_decode_frame(mem, body_fix(out.len + 1), sizeof(mem), &type, &body),
                     KF_OK);
    assert_int_equal(type, KF_SPLIT_READY);
    assert_int_equal(kf_split_decode_ready(&body), KF_ERR_SPLIT_CHANNEL);

    /* PEER: the principal's limits (name <= 255, all-domains 0/1, <= 32 domains of <= 64) */
    size_t who_at = KF_SPLIT_FRAME_LEN + KF_SPLIT_CONN_ID_LEN;
    size_t name_len = strlen(p.who.name), all_at = who_at + 2 + name_len + 4;
    struct {
        size_t at;
        uint8_t val;
    } bad[] = {{who_at, 1}, {who_at + 2, 0}, {all_at, 2}, {all_at + 1, 33}, {all_at + 2, 1}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kf_buf_fixed(&out, mem, sizeof(mem));
        assert_int_equal(kf_split_encode_peer(&p, &out), KF_OK);
        mem[bad[i].at] = bad[i].val;
        assert_int_equal(decode_peer_bytes(n, &pb), KF_ERR_SPLIT_CHANNEL);
    }
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_peer(&p, &out), KF_OK);
    assert_int_equal(decode_peer_bytes(n, &pb), KF_OK);
    assert_int_equal(decode_peer_bytes(n - 1, &pb), KF_ERR_SPLIT_CHANNEL); /* short */
    mem[n] = 0;
    assert_int_equal(decode_peer_bytes(n + 1, &pb), KF_ERR_SPLIT_CHANNEL); /* trailing */
    assert_int_equal(decode_peer_bytes(KF_SPLIT_FRAME_LEN + 15, &pb), KF_ERR_SPLIT_CHANNEL);

    /* CONFIG: CONN_IDS for a server handler only */
    static struct kf_split_config c, cb;
    snprintf(c.ca_file, sizeof(c.ca_file), "/ca");
    snprintf(c.cert_file, sizeof(c.cert_file), "/c");
    snprintf(c.key_file, sizeof(c.key_file), "/k");
    snprintf(c.identities_file, sizeof(c.identities_file), "/i");
    c.flags = KF_SPLIT_CONFIG_CONN_IDS;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_config(&c, &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_CONFIG);
    assert_int_equal(kf_split_decode_config(&body, &cb), KF_OK);
    assert_int_equal(cb.flags, KF_SPLIT_CONFIG_CONN_IDS);
    c.identities_file[0] = 0;
    c.flags = KF_SPLIT_CONFIG_CONN_IDS | KF_SPLIT_CONFIG_CLIENT;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_config(&c, &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_CONFIG);
    assert_int_equal(kf_split_decode_config(&body, &cb), KF_ERR_SPLIT_CHANNEL);
    c.flags = 8;
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_config(&c, &out), KF_OK);
    body = frame_of(&out, KF_SPLIT_CONFIG);
    assert_int_equal(kf_split_decode_config(&body, &cb), KF_ERR_SPLIT_CHANNEL);
}

/* ---- transport ---- */

static void send_msg(int fd, const kf_buf *m, const int *fds, size_t n)
{
    assert_int_equal(kf_split_send(fd, m, fds, n), KF_OK);
}

static void test_transport(void **state)
{
    (void)state;
    int sv[2], p[2];
    uint8_t buf[KF_SPLIT_CONTROL_MAX], type;
    kf_buf body, out;
    bool eof;
    int fds[3];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    struct kf_split_end e = {0};
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_end(&e, &out), KF_OK);

    /* Allowed now: fine. Not allowed in this phase: refused. */
    send_msg(sv[0], &out, NULL, 0);
    assert_int_equal(kf_split_recv(sv[1], buf, sizeof(buf), KF_SPLIT_ALLOW(KF_SPLIT_END), 1000,
                                   &type, &body, NULL, &eof),
                     KF_OK);
    send_msg(sv[0], &out, NULL, 0);
    assert_int_equal(kf_split_recv(sv[1], buf, sizeof(buf), KF_SPLIT_ALLOW(KF_SPLIT_GIVE), 1000,
                                   &type, &body, NULL, &eof),
                     KF_ERR_SPLIT_CHANNEL);

    /* A descriptor on a message that takes none: refused, and closed by the receiver. */
    assert_int_equal(pipe(p), 0);
    send_msg(sv[0], &out, &p[0], 1);
    close(p[0]);
    assert_int_equal(kf_split_recv(sv[1], buf, sizeof(buf), KF_SPLIT_ALLOW(KF_SPLIT_END), 1000,
                                   &type, &body, NULL, &eof),
                     KF_ERR_SPLIT_CHANNEL);
    assert_int_equal(write(p[1], "x", 1), -1); /* no read end left anywhere */
    assert_int_equal(errno, EPIPE);
    close(p[1]);

    /* START with fewer than three descriptors: refused. */
    struct kf_split_start s = {.role = KF_SPLIT_ROLE_SERVER};
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_start(&s, &out), KF_OK);
    int one = dup(0);
    send_msg(sv[0], &out, &one, 1);
    close(one);
    assert_int_equal(kf_split_recv(sv[1], buf, sizeof(buf), KF_SPLIT_ALLOW(KF_SPLIT_START), 1000,
                                   &type, &body, fds, &eof),
                     KF_ERR_SPLIT_CHANNEL);
    int three[3] = {dup(0), dup(0), dup(0)};
    send_msg(sv[0], &out, three, 3);
    for (int i = 0; i < 3; i++)
        close(three[i]);
    assert_int_equal(kf_split_recv(sv[1], buf, sizeof(buf), KF_SPLIT_ALLOW(KF_SPLIT_START), 1000,
                                   &type, &body, fds, &eof),
                     KF_OK);
    for (int i = 0; i < 3; i++) {
        assert_true(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
        close(fds[i]);
    }

    /* A packet longer than the receiver's buffer is truncated: refused. */
    uint8_t rec[5 + 200] = {23, 3, 3, 0, 200};
    kf_buf_fixed(&out, mem, sizeof(mem));
    assert_int_equal(kf_split_encode_record(rec, sizeof(rec), &out), KF_OK);
    send_msg(sv[0], &out, NULL, 0);
    assert_int_equal(kf_split_recv(sv[1], buf, 100, KF_SPLIT_ALLOW(KF_SPLIT_RECORD), 1000, &type,
                                   &body, NULL, &eof),
                     KF_ERR_SPLIT_CHANNEL);

    /* Nothing comes: time-out. The other end closes: eof. */
    assert_int_equal(kf_split_recv(sv[1], buf, sizeof(buf), KF_SPLIT_ALLOW(KF_SPLIT_END), 50,
                                   &type, &body, NULL, &eof),
                     KF_ERR_TIMEOUT);
    close(sv[0]);
    assert_int_equal(kf_split_recv(sv[1], buf, sizeof(buf), KF_SPLIT_ALLOW(KF_SPLIT_END), 1000,
                                   &type, &body, NULL, &eof),
                     KF_ERR_IO);
    assert_true(eof);
    close(sv[1]);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_frame_refusals),
        cmocka_unit_test(test_give_refusals),
        cmocka_unit_test(test_small_message_refusals),
        cmocka_unit_test(test_conn_ids),
        cmocka_unit_test(test_transport),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
