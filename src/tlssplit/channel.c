/*
 * Channel messages between session handler and worker: codec and transport
 * (channel.h has the list). Every decoder reads through the kf_buf cursor,
 * checks every length against its field's limit, refuses trailing bytes and
 * turns any failure into KF_ERR_SPLIT_CHANNEL: the caller ends the session.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"

/* Any malformation is the same refusal: the peer process is not speaking the protocol. */
#define CH(x)                                                                                      \
    do {                                                                                           \
        if ((x) < 0)                                                                               \
            return KF_ERR_SPLIT_CHANNEL;                                                           \
    } while (0)
#define CH_ENSURE(c) CH((c) ? KF_OK : KF_ERR_SPLIT_CHANNEL)

/* ---- frame ---------------------------------------------------------------- */

static int frame_begin(kf_buf *out, uint8_t type, size_t *len_at)
{
    KF_GUARD(kf_buf_put_u8(out, KF_SPLIT_VERSION));
    KF_GUARD(kf_buf_put_u8(out, type));
    KF_GUARD(kf_buf_put_u16(out, 0));
    *len_at = out->len;
    return kf_buf_put_u32(out, 0);
}

static int frame_end(kf_buf *out, size_t len_at)
{
    return kf_buf_patch_u32(out, len_at, (uint32_t)(out->len - len_at - 4));
}

int kf_split_decode_frame(const uint8_t *p, size_t n, size_t max, uint8_t *type, kf_buf *body)
{
    kf_buf b;
    uint8_t version;
    uint16_t zero;
    uint32_t len;
    CH_ENSURE(n <= max);
    kf_buf_reader(&b, p, n);
    CH(kf_buf_get_u8(&b, &version));
    CH(kf_buf_get_u8(&b, type));
    CH(kf_buf_get_u16(&b, &zero));
    CH(kf_buf_get_u32(&b, &len));
    CH_ENSURE(version == KF_SPLIT_VERSION && zero == 0);
    CH_ENSURE(*type >= KF_SPLIT_CONFIG && *type <= KF_SPLIT_READY);
    CH_ENSURE(len == kf_buf_remaining(&b));
    kf_buf_reader(body, kf_buf_read_ptr(&b), len);
    return KF_OK;
}

/* ---- fields ---------------------------------------------------------------- */

static int put_dir(kf_buf *out, const struct kf_tlsrec_state *st)
{
    KF_GUARD(kf_buf_put_u8(out, st->key_len));
    KF_GUARD(kf_buf_put_bytes(out, st->key, st->key_len));
    KF_GUARD(kf_buf_put_u8(out, st->iv_len));
    KF_GUARD(kf_buf_put_bytes(out, st->iv, st->iv_len));
    return kf_buf_put_u64(out, st->seq);
}

static int get_dir(kf_buf *b, uint16_t version, uint8_t cipher, struct kf_tlsrec_state *st)
{
    st->version = version;
    st->cipher = cipher;
    CH(kf_buf_get_u8(b, &st->key_len));
    CH_ENSURE(st->key_len == (cipher == KF_TLSREC_AES_128_GCM ? 16 : 32));
    CH(kf_buf_get_bytes(b, st->key, st->key_len));
    CH(kf_buf_get_u8(b, &st->iv_len));
    CH_ENSURE(st->iv_len == kf_tlsrec_iv_len(version, cipher));
    CH(kf_buf_get_bytes(b, st->iv, st->iv_len));
    CH(kf_buf_get_u64(b, &st->seq));
    CH_ENSURE(st->seq != UINT64_MAX);
    return KF_OK;
}

static int put_principal(kf_buf *out, const struct kf_principal *who)
{
    KF_ENSURE(who->ndomains <= KF_PRINCIPAL_MAX_DOMAINS, KF_ERR_LIMIT);
    KF_GUARD(kf_buf_put_str16(out, who->name, sizeof(who->name) - 1));
    KF_GUARD(kf_buf_put_u32(out, who->roles));
    KF_GUARD(kf_buf_put_u8(out, who->all_domains ? 1 : 0));
    KF_GUARD(kf_buf_put_u8(out, (uint8_t)who->ndomains));
    for (size_t i = 0; i < who->ndomains; i++)
        KF_GUARD(kf_buf_put_str16(out, who->domains[i], sizeof(who->domains[i]) - 1));
    return kf_buf_put_str16(out, who->default_domain, sizeof(who->default_domain) - 1);
}

static int get_principal(kf_buf *b, struct kf_principal *who)
{
    uint8_t all, n;
    memset(who, 0, sizeof(*who));
    CH(kf_buf_get_str16(b, who->name, sizeof(who->name), sizeof(who->name) - 1));
    CH(kf_buf_get_u32(b, &who->roles));
    CH(kf_buf_get_u8(b, &all));
    CH_ENSURE(all <= 1);
    who->all_domains = all == 1;
    CH(kf_buf_get_u8(b, &n));
    CH_ENSURE(n <= KF_PRINCIPAL_MAX_DOMAINS);
    who->ndomains = n;
    for (size_t i = 0; i < n; i++)
        CH(kf_buf_get_str16(b, who->domains[i], sizeof(who->domains[i]),
                            sizeof(who->domains[i]) - 1));
    CH(kf_buf_get_str16(b, who->default_domain, sizeof(who->default_domain),
                        sizeof(who->default_domain) - 1));
    return KF_OK;
}

/* ---- messages -------------------------------------------------------------- */

int kf_split_encode_config(const struct kf_split_config *c, kf_buf *out)
{
    size_t at;
    KF_GUARD(frame_begin(out, KF_SPLIT_CONFIG, &at));
    KF_GUARD(kf_buf_put_str16(out, c->ca_file, KF_SPLIT_PATH_MAX));
    KF_GUARD(kf_buf_put_str16(out, c->cert_file, KF_SPLIT_PATH_MAX));
    KF_GUARD(kf_buf_put_str16(out, c->key_file, KF_SPLIT_PATH_MAX));
    KF_GUARD(kf_buf_put_str16(out, c->pkcs11_module, KF_SPLIT_PATH_MAX));
    KF_GUARD(kf_buf_put_str16(out, c->key_pin, sizeof(c->key_pin) - 1));
    KF_GUARD(kf_buf_put_str16(out, c->identities_file, KF_SPLIT_PATH_MAX));
    KF_GUARD(kf_buf_put_str16(out, c->priority, sizeof(c->priority) - 1));
    KF_GUARD(kf_buf_put_str16(out, c->log_file, KF_SPLIT_PATH_MAX));
    KF_GUARD(kf_buf_put_u32(out, c->handshake_timeout_ms));
    KF_GUARD(kf_buf_put_u8(out, c->log_level));
    KF_GUARD(kf_buf_put_u8(out, c->flags));
    return frame_end(out, at);
}

int kf_split_decode_config(kf_buf *b, struct kf_split_config *c)
{
    memset(c, 0, sizeof(*c));
    CH(kf_buf_get_str16(b, c->ca_file, sizeof(c->ca_file), KF_SPLIT_PATH_MAX));
    CH(kf_buf_get_str16(b, c->cert_file, sizeof(c->cert_file), KF_SPLIT_PATH_MAX));
    CH(kf_buf_get_str16(b, c->key_file, sizeof(c->key_file), KF_SPLIT_PATH_MAX));
    CH(kf_buf_get_str16(b, c->pkcs11_module, sizeof(c->pkcs11_module), KF_SPLIT_PATH_MAX));
    CH(kf_buf_get_str16(b, c->key_pin, sizeof(c->key_pin), sizeof(c->key_pin) - 1));
    CH(kf_buf_get_str16(b, c->identities_file, sizeof(c->identities_file), KF_SPLIT_PATH_MAX));
    CH(kf_buf_get_str16(b, c->priority, sizeof(c->priority), sizeof(c->priority) - 1));
    CH(kf_buf_get_str16(b, c->log_file, sizeof(c->log_file), KF_SPLIT_PATH_MAX));
    CH(kf_buf_get_u32(b, &c->handshake_timeout_ms));
    CH(kf_buf_get_u8(b, &c->log_level));
    CH(kf_buf_get_u8(b, &c->flags));
    CH_ENSURE(c->log_level <= KF_LOG_ERROR &&
              (c->flags & ~(KF_SPLIT_CONFIG_TEST_REVEAL | KF_SPLIT_CONFIG_CLIENT |
                            KF_SPLIT_CONFIG_CONN_IDS)) == 0);
    if (c->flags & KF_SPLIT_CONFIG_CLIENT) /* a client certificate is optional, but whole */
        CH_ENSURE(c->ca_file[0] && !c->cert_file[0] == !c->key_file[0] && !c->identities_file[0] &&
                  !(c->flags & KF_SPLIT_CONFIG_CONN_IDS));
    else
        CH_ENSURE(c->ca_file[0] && c->cert_file[0] && c->key_file[0] && c->identities_file[0]);
    CH_ENSURE(kf_buf_remaining(b) == 0);
    return KF_OK;
}

/* A server name as SNI and certificate check take it: 1..255 printable ASCII bytes. */
static bool server_name_ok(const char *p, size_t n)
{
    if (n == 0 || n > KF_SPLIT_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x21 || p[i] > 0x7e)
            return false;
    return true;
}

/* Writes what it is given (within the field limits); the receiving side's
 * decoder judges role, name and flags. */
static int encode_start_body(uint8_t type, const struct kf_split_start *s, kf_buf *out)
{
    size_t at;
    KF_GUARD(frame_begin(out, type, &at));
    KF_GUARD(kf_buf_put_u8(out, s->role));
    KF_GUARD(kf_buf_put_str16(out, s->peer, KF_SPLIT_PEER_MAX));
    if (s->role == KF_SPLIT_ROLE_CLIENT) {
        KF_ENSURE(memchr(s->server_name, 0, sizeof(s->server_name)), KF_ERR_LIMIT);
        KF_GUARD(kf_buf_put_str16(out, s->server_name, KF_SPLIT_NAME_MAX));
        KF_GUARD(kf_buf_put_u8(out, s->flags));
    }
    return frame_end(out, at);
}

int kf_split_encode_start(const struct kf_split_start *s, kf_buf *out)
{
    return encode_start_body(KF_SPLIT_START, s, out);
}

int kf_split_encode_accepted(const struct kf_split_start *s, kf_buf *out)
{
    return encode_start_body(KF_SPLIT_ACCEPTED, s, out);
}

int kf_split_decode_accepted(kf_buf *b, struct kf_split_start *s)
{
    KF_GUARD(kf_split_decode_start(b, s));
    /* A worker process serves: it never makes outbound connections. */
    CH_ENSURE(s->role == KF_SPLIT_ROLE_SERVER);
    return KF_OK;
}

int kf_split_decode_start(kf_buf *b, struct kf_split_start *s)
{
    memset(s, 0, sizeof(*s));
    CH(kf_buf_get_u8(b, &s->role));
    CH_ENSURE(s->role == KF_SPLIT_ROLE_SERVER || s->role == KF_SPLIT_ROLE_CLIENT);
    CH(kf_buf_get_str16(b, s->peer, sizeof(s->peer), KF_SPLIT_PEER_MAX));
    if (s->role == KF_SPLIT_ROLE_CLIENT) {
        CH(kf_buf_get_str16(b, s->server_name, sizeof(s->server_name), KF_SPLIT_NAME_MAX));
        CH_ENSURE(server_name_ok(s->server_name, strlen(s->server_name)));
        CH(kf_buf_get_u8(b, &s->flags));
        CH_ENSURE((s->flags & ~KF_SPLIT_START_NO_RESUME) == 0);
    }
    CH_ENSURE(kf_buf_remaining(b) == 0);
    return KF_OK;
}

int kf_split_encode_give(const struct kf_split_give *g, kf_buf *out)
{
    size_t at;
    KF_ENSURE(g->rd.version == g->wr.version && g->rd.cipher == g->wr.cipher, KF_ERR_ARG);
    KF_GUARD(frame_begin(out, KF_SPLIT_GIVE, &at));
    KF_ENSURE(g->first || !g->has_id, KF_ERR_ARG);
    KF_GUARD(kf_buf_put_u8(
        out, (uint8_t)((g->first ? 1 : 0) | (g->resumed ? 2 : 0) | (g->has_id ? 4 : 0))));
    KF_GUARD(kf_buf_put_u16(out, g->rd.version));
    KF_GUARD(kf_buf_put_u8(out, g->rd.cipher));
    KF_GUARD(put_dir(out, &g->rd));
    KF_GUARD(put_dir(out, &g->wr));
    if (g->first && g->has_id)
        KF_GUARD(kf_buf_put_bytes(out, g->conn_id, sizeof(g->conn_id)));
    else if (g->first)
        KF_GUARD(put_principal(out, &g->who));
    return frame_end(out, at);
}

int kf_split_decode_give(kf_buf *b, struct kf_split_give *g)
{
    uint8_t flags, cipher;
    uint16_t version;
    memset(g, 0, sizeof(*g));
    CH(kf_buf_get_u8(b, &flags));
    CH_ENSURE((flags & ~7u) == 0);
    g->first = flags & 1;
    g->resumed = (flags & 2) != 0;
    g->has_id = (flags & 4) != 0;
    CH_ENSURE(g->first || !g->has_id); /* an ID comes with the first GIVE only */
    CH(kf_buf_get_u16(b, &version));
    CH(kf_buf_get_u8(b, &cipher));
    CH_ENSURE(version == KF_TLSREC_TLS12 || version == KF_TLSREC_TLS13);
    CH_ENSURE(cipher >= KF_TLSREC_AES_128_GCM && cipher <= KF_TLSREC_CHACHA20_POLY1305);
    CH(get_dir(b, version, cipher, &g->rd));
    CH(get_dir(b, version, cipher, &g->wr));
    if (g->first && g->has_id)
        CH(kf_buf_get_bytes(b, g->conn_id, sizeof(g->conn_id)));
    else if (g->first)
        CH(get_principal(b, &g->who));
    CH_ENSURE(kf_buf_remaining(b) == 0);
    return KF_OK;
}

int kf_split_encode_end(const struct kf_split_end *e, kf_buf *out)
{
    size_t at;
    KF_GUARD(frame_begin(out, KF_SPLIT_END, &at));
    KF_GUARD(kf_buf_put_u32(out, (uint32_t)e->reason));
    return frame_end(out, at);
}

int kf_split_decode_end(kf_buf *b, struct kf_split_end *e)
{
    uint32_t v;
    CH(kf_buf_get_u32(b, &v));
    e->reason = (int32_t)v;
    CH_ENSURE(e->reason <= 0 && e->reason > -100000);
    CH_ENSURE(kf_buf_remaining(b) == 0);
    return KF_OK;
}

int kf_split_encode_take(const struct kf_split_take *t, kf_buf *out)
{
    size_t at;
    KF_GUARD(frame_begin(out, KF_SPLIT_TAKE, &at));
    KF_GUARD(kf_buf_put_u8(out, t->reason));
    KF_GUARD(kf_buf_put_u8(out, t->arg));
    KF_GUARD(kf_buf_put_u64(out, t->read_seq));
    KF_GUARD(kf_buf_put_u64(out, t->write_seq));
    return frame_end(out, at);
}

int kf_split_decode_take(kf_buf *b, struct kf_split_take *t)
{
    CH(kf_buf_get_u8(b, &t->reason));
    CH(kf_buf_get_u8(b, &t->arg));
    CH(kf_buf_get_u64(b, &t->read_seq));
    CH(kf_buf_get_u64(b, &t->write_seq));
    CH_ENSURE(t->reason >= KF_SPLIT_TAKE_RECORD && t->reason <= KF_SPLIT_TAKE_ABORT);
    /* Only these two carry an argument: ask-the-peer (0/1) and the alert. */
    CH_ENSURE(t->reason == KF_SPLIT_TAKE_ABORT || t->arg <= (t->reason == KF_SPLIT_TAKE_KEY_UPDATE));
    CH_ENSURE(t->read_seq != UINT64_MAX && t->write_seq != UINT64_MAX);
    CH_ENSURE(kf_buf_remaining(b) == 0);
    return KF_OK;
}

int kf_split_encode_peer(const struct kf_split_peer *p, kf_buf *out)
{
    size_t at;
    KF_GUARD(frame_begin(out, KF_SPLIT_PEER, &at));
    KF_GUARD(kf_buf_put_bytes(out, p->id, sizeof(p->id)));
    KF_GUARD(put_principal(out, &p->who));
    return frame_end(out, at);
}

int kf_split_decode_peer(kf_buf *b, struct kf_split_peer *p)
{
    memset(p, 0, sizeof(*p));
    CH(kf_buf_get_bytes(b, p->id, sizeof(p->id)));
    CH(get_principal(b, &p->who));
    CH_ENSURE(kf_buf_remaining(b) == 0);
    return KF_OK;
}

int kf_split_encode_gone(const uint8_t id[KF_SPLIT_CONN_ID_LEN], kf_buf *out)
{
    size_t at;
    KF_GUARD(frame_begin(out, KF_SPLIT_GONE, &at));
    KF_GUARD(kf_buf_put_bytes(out, id, KF_SPLIT_CONN_ID_LEN));
    return frame_end(out, at);
}

int kf_split_decode_gone(kf_buf *b, uint8_t id[KF_SPLIT_CONN_ID_LEN])
{
    CH(kf_buf_get_bytes(b, id, KF_SPLIT_CONN_ID_LEN));
    CH_ENSURE(kf_buf_remaining(b) == 0);
    return KF_OK;
}

int kf_split_encode_ready(kf_buf *out)
{
    size_t at;
    KF_GUARD(frame_begin(out, KF_SPLIT_READY, &at));
    return frame_end(out, at);
}

int kf_split_decode_ready(kf_buf *b)
{
    CH_ENSURE(kf_buf_remaining(b) == 0);
    return KF_OK;
}

int kf_split_encode_record(const uint8_t *rec, size_t len, kf_buf *out)
{
    size_t at;
    KF_ENSURE(len <= KF_TLSREC_MAX, KF_ERR_LIMIT);
    KF_GUARD(frame_begin(out, KF_SPLIT_RECORD, &at));
    KF_GUARD(kf_buf_put_bytes(out, rec, len));
    return frame_end(out, at);
}

int kf_split_decode_record(kf_buf *b, const uint8_t **rec, size_t *len)
{
    struct kf_tlsrec_header h;
    size_t n = kf_buf_remaining(b);
    /* The TLS 1.2 limit is the larger one; the handler's GnuTLS applies the exact one. */
    CH(kf_tlsrec_parse_header(kf_buf_read_ptr(b), n, KF_TLSREC_TLS12, &h));
    CH_ENSURE(n == KF_TLSREC_HEADER_LEN + (size_t)h.length);
    CH(kf_buf_get_ptr(b, n, rec));
    *len = n;
    return KF_OK;
}

/* ---- transport ----------------------------------------------------------------- */

int kf_split_send(int fd, const kf_buf *msg, const int *fds, size_t nfds)
{
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(3 * sizeof(int))];
    } ctl;
    struct iovec iov = {.iov_base = msg->data, .iov_len = msg->len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    KF_ENSURE(nfds <= 3, KF_ERR_ARG);
    if (nfds) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.space;
        mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    for (;;) {
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w == (ssize_t)msg->len)
            return KF_OK;
        if (w < 0 && errno == EINTR)
            continue;
        return KF_ERR_IO; /* SEQPACKET: all or nothing; the other end is gone */
    }
}

/* Take the descriptors out of a received packet (closing any beyond max). */
static size_t take_fds(struct msghdr *mh, int fds[3], bool *extra)
{
    size_t n = 0;
    *extra = false;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            *extra = true;
            continue;
        }
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int v;
            memcpy(&v, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (n < 3)
                fds[n++] = v;
            else {
                close(v);
                *extra = true;
            }
        }
    }
    return n;
}

int kf_split_recv(int fd, uint8_t *buf, size_t cap, unsigned allow, int timeout_ms, uint8_t *type,
                  kf_buf *body, int fds[3], bool *eof)
{
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(4 * sizeof(int))];
    } ctl;
    *eof = false;
    if (timeout_ms >= 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r;
        do
            r = poll(&p, 1, timeout_ms);
        while (r < 0 && errno == EINTR);
        KF_ENSURE(r > 0, r == 0 ? KF_ERR_TIMEOUT : KF_ERR_IO);
    }
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = ctl.space,
                        .msg_controllen = sizeof(ctl.space)};
    ssize_t n;
    do
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        *eof = n == 0;
        return KF_ERR_IO;
    }
    int got[3] = {-1, -1, -1};
    bool extra;
    size_t nfds = take_fds(&mh, got, &extra);
    int rc = KF_OK;
    if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || extra)
        rc = KF_ERR_SPLIT_CHANNEL;
    if (rc == KF_OK)
        rc = kf_split_decode_frame(buf, (size_t)n, cap, type, body);
    if (rc == KF_OK && !(allow & KF_SPLIT_ALLOW(*type)))
        rc = KF_ERR_SPLIT_CHANNEL;
    size_t want = *type == KF_SPLIT_START ? 3u : *type == KF_SPLIT_ACCEPTED ? 1u : 0u;
    if (rc == KF_OK && nfds != want)
        rc = KF_ERR_SPLIT_CHANNEL;
    if (rc < 0) {
        for (size_t i = 0; i < nfds; i++)
            close(got[i]);
        return rc;
    }
    for (size_t i = 0; i < 3; i++)
        if (fds)
            fds[i] = got[i];
    return KF_OK;
}
