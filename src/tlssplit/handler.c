/*
 * The session handler: the process that runs every handshake and keeps the
 * secrets (long-term key or its PKCS#11 handle, session-ticket key, master
 * and traffic secrets, resumption secrets). It reads START messages from the
 * broker channel; each starts a thread that owns one connection's GnuTLS
 * session for its whole life:
 *
 *   handshake over the TCP socket  ->  GIVE(first) to the worker  ->
 *   wait for TAKE  ->  set the worker's sequence numbers  ->  process (one
 *   forwarded record / key update / close / abort)  ->  GIVE or END  -> ...
 *
 * While a session is handed to the worker the handler never touches its
 * socket; while the handler holds it, the worker waits. During the
 * handshake the transport never reads past the end of the record GnuTLS is
 * reading, so no byte meant for the worker stays behind in GnuTLS.
 *
 * A client handler (CONFIG flag CLIENT; the CLI's outbound connections) runs
 * the client handshake instead -- server name, certificate check and client
 * certificate -- and keeps each server's resumption state (the TLS 1.3
 * NewSessionTicket reaches it as a forwarded record) to offer once on the
 * next connection to that server. Everything after the handshake is the same.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>

#include "channel.h"
#include "keyfleet/log.h"
#include "keyfleet/secmem.h"
#include "keyfleet/tls.h"
#include "tls/tls_creds.h"
#include "tlssplit_internal.h"

#define HANDLER_MAX_SESSIONS 4096
#define KEPT_MAX 32 /* client: servers whose resumption state is kept */

/* Client: one server's resumption state, offered once to the next connection. */
struct kept_session {
    char key[KF_SPLIT_NAME_MAX + KF_SPLIT_PEER_MAX + 2]; /* server name '\n' address */
    gnutls_datum_t data; /* gnutls_session_get_data2: ticket and resumption secret */
    uint64_t stamp;      /* for replacing the oldest */
};

struct handler {
    gnutls_certificate_credentials_t creds;
    gnutls_priority_t priority;
    kf_tls_identities *ids; /* server only */
    gnutls_datum_t stek; /* server only: session-ticket encryption key (GnuTLS rotates from it) */
    int handshake_ms;
    unsigned flags;
    bool client; /* KF_SPLIT_CONFIG_CLIENT */
    int peers;   /* KF_SPLIT_CONFIG_CONN_IDS: principals go to the host here; else -1 */
    atomic_uint sessions;
    pthread_mutex_t kept_lock;
    struct kept_session kept[KEPT_MAX];
    uint64_t kept_stamp;
    FILE *reveal; /* test builds: KF_TEST_REVEAL_FILE, opened before the sandbox */
};

/* SSLKEYLOGFILE, when set (see keylog_open). */
static FILE *keylog;
static int keylog_write(gnutls_session_t s, const char *label, const gnutls_datum_t *secret);

struct session {
    struct handler *h;
    int tcp, ctl, ses;
    char peer[KF_SPLIT_PEER_MAX + 1];
    /* client role */
    char server_name[KF_SPLIT_NAME_MAX + 1];
    uint8_t start_flags;
    bool ticket_arrived; /* a NewSessionTicket was among the records just processed */
    gnutls_typed_vdata_st check[2]; /* what the server's certificate must satisfy */
    gnutls_session_t s;
    /* Handshake: read TCP one record at a time. */
    uint8_t hdr[KF_TLSREC_HEADER_LEN];
    size_t hdr_got, rec_left;
    /* After it: GnuTLS reads the one record the worker forwarded. */
    bool inject;
    const uint8_t *inj;
    size_t inj_len;
    bool peer_asked_update;
};

/* ---- transport ------------------------------------------------------------ */

static ssize_t pull_record_bounded(struct session *se, uint8_t *p, size_t n)
{
    ssize_t r;
    if (se->hdr_got < KF_TLSREC_HEADER_LEN) {
        size_t want = KF_TLSREC_HEADER_LEN - se->hdr_got;
        r = recv(se->tcp, p, n < want ? n : want, 0);
        if (r > 0) {
            memcpy(se->hdr + se->hdr_got, p, (size_t)r);
            se->hdr_got += (size_t)r;
            if (se->hdr_got == KF_TLSREC_HEADER_LEN)
                se->rec_left = (size_t)se->hdr[3] << 8 | se->hdr[4];
            if (se->hdr_got == KF_TLSREC_HEADER_LEN && se->rec_left == 0)
                se->hdr_got = 0;
        }
        return r;
    }
    r = recv(se->tcp, p, n < se->rec_left ? n : se->rec_left, 0);
    if (r > 0) {
        se->rec_left -= (size_t)r;
        if (se->rec_left == 0)
            se->hdr_got = 0;
    }
    return r;
}

static ssize_t session_pull(gnutls_transport_ptr_t ptr, void *p, size_t n)
{
    struct session *se = ptr;
    if (!se->inject)
        return pull_record_bounded(se, p, n);
    if (se->inj_len == 0) {
        gnutls_transport_set_errno(se->s, EAGAIN);
        return -1;
    }
    size_t k = n < se->inj_len ? n : se->inj_len;
    memcpy(p, se->inj, k);
    se->inj += k;
    se->inj_len -= k;
    return (ssize_t)k;
}

static ssize_t session_push(gnutls_transport_ptr_t ptr, const void *p, size_t n)
{
    struct session *se = ptr;
    return send(se->tcp, p, n, MSG_NOSIGNAL);
}

static int session_wait(gnutls_transport_ptr_t ptr, unsigned int ms)
{
    struct session *se = ptr;
    if (se->inject)
        return se->inj_len > 0;
    struct pollfd p = {.fd = se->tcp, .events = POLLIN};
    return poll(&p, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms);
}

/* The peer's KeyUpdate asked for ours; GnuTLS would only send it with the
 * next application data, which the handler never writes: note it here.
 * (Client: a NewSessionTicket is noted too, to keep the session after it.) */
static int post_handshake_hook(gnutls_session_t s, unsigned htype, unsigned when, unsigned incoming,
                           const gnutls_datum_t *msg)
{
    struct session *se = gnutls_session_get_ptr(s);
    if (htype == GNUTLS_HANDSHAKE_KEY_UPDATE && when == GNUTLS_HOOK_PRE && incoming && msg &&
        msg->size == 1 && msg->data[0] == 1)
        se->peer_asked_update = true;
    if (htype == GNUTLS_HANDSHAKE_NEW_SESSION_TICKET && when == GNUTLS_HOOK_PRE && incoming)
        se->ticket_arrived = true;
    return 0;
}

/* ---- who the peer is (the identity map is an allow list) ------------------- */

int kf_tlssplit_identify(gnutls_session_t s, const kf_tls_identities *ids, const char *peer_addr,
                         struct kf_principal *who)
{
    struct kf_tls_peer peer;
    int rc = kf_tls_peer_facts(s, &peer);
    if (rc < 0) {
        kf_warn("TLS split %s refused: cannot read the client certificate", peer_addr);
        return rc;
    }
    rc = kf_tls_identities_match(ids, &peer, who);
    if (rc < 0)
        kf_warn("TLS split %s refused: certificate '%s' matches no identity rule", peer_addr,
                peer.subject_dn);
    return rc;
}

/* ---- client: kept sessions ---------------------------------------------------------- */

static void kept_key(const struct session *se, char *key, size_t cap)
{
    snprintf(key, cap, "%s\n%s", se->server_name, se->peer);
}

static void datum_wipe_free(gnutls_datum_t *d)
{
    if (d->data) {
        kf_wipe(d->data, d->size);
        gnutls_free(d->data);
    }
    d->data = NULL;
    d->size = 0;
}

/* Take this server's kept session out (it is offered once); empty if none. */
static void kept_take(struct handler *h, const char *key, gnutls_datum_t *out)
{
    out->data = NULL;
    out->size = 0;
    pthread_mutex_lock(&h->kept_lock);
    for (size_t i = 0; i < KEPT_MAX; i++)
        if (h->kept[i].data.data && strcmp(h->kept[i].key, key) == 0) {
            *out = h->kept[i].data;
            h->kept[i].data.data = NULL;
            h->kept[i].data.size = 0;
            break;
        }
    pthread_mutex_unlock(&h->kept_lock);
}

/* Keep d (taken over) for key, replacing what was kept for it, else the oldest. */
static void kept_put(struct handler *h, const char *key, gnutls_datum_t *d)
{
    pthread_mutex_lock(&h->kept_lock);
    size_t slot = KEPT_MAX;
    for (size_t i = 0; i < KEPT_MAX && slot == KEPT_MAX; i++)
        if (h->kept[i].data.data && strcmp(h->kept[i].key, key) == 0)
            slot = i;
    for (size_t i = 0; i < KEPT_MAX && slot == KEPT_MAX; i++)
        if (!h->kept[i].data.data)
            slot = i;
    if (slot == KEPT_MAX) { /* all taken: replace the oldest */
        slot = 0;
        for (size_t i = 1; i < KEPT_MAX; i++)
            if (h->kept[i].stamp < h->kept[slot].stamp)
                slot = i;
    }
    datum_wipe_free(&h->kept[slot].data);
    snprintf(h->kept[slot].key, sizeof(h->kept[slot].key), "%s", key);
    h->kept[slot].data = *d;
    h->kept[slot].stamp = ++h->kept_stamp;
    d->data = NULL;
    d->size = 0;
    pthread_mutex_unlock(&h->kept_lock);
}

/* The handler ends: no kept session outlives it in freed memory. */
static void kept_clear(struct handler *h)
{
    pthread_mutex_lock(&h->kept_lock);
    for (size_t i = 0; i < KEPT_MAX; i++)
        datum_wipe_free(&h->kept[i].data);
    pthread_mutex_unlock(&h->kept_lock);
}

static void reveal_kept(struct handler *h, const gnutls_datum_t *d);

/* Client: keep the session for the next connection to this server. In TLS
 * 1.3 only once a ticket has arrived: before that gnutls_session_get_data2
 * would wait on the socket for one. The transport answers "nothing there"
 * meanwhile, so GnuTLS cannot read what belongs to the worker. */
static void keep_session(struct session *se)
{
    gnutls_datum_t d = {0};
    if (!se->h->client || (se->start_flags & KF_SPLIT_START_NO_RESUME))
        return;
    if (gnutls_protocol_get_version(se->s) == GNUTLS_TLS1_3 &&
        !(gnutls_session_get_flags(se->s) & GNUTLS_SFLAGS_SESSION_TICKET))
        return;
    bool was = se->inject;
    const uint8_t *inj = se->inj;
    size_t inj_len = se->inj_len;
    se->inject = true;
    se->inj_len = 0;
    int rc = gnutls_session_get_data2(se->s, &d);
    se->inject = was;
    se->inj = inj;
    se->inj_len = inj_len;
    if (rc < 0 || d.size == 0) {
        datum_wipe_free(&d);
        return;
    }
    char key[sizeof(se->h->kept[0].key)];
    kept_key(se, key, sizeof(key));
    reveal_kept(se->h, &d);
    kept_put(se->h, key, &d);
}

/* ---- messages to the worker ------------------------------------------------------ */

static int send_end(struct session *se, int reason)
{
    uint8_t mem[64];
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    struct kf_split_end e = {.reason = reason};
    KF_GUARD(kf_split_encode_end(&e, &out));
    return kf_split_send(se->ctl, &out, NULL, 0);
}

/* CONN_IDS: the host learns the principal from us, under a fresh random ID;
 * the worker gets only the ID (GIVE), so it can act only for its own peers. */
static int send_peer(struct session *se, const struct kf_principal *who,
                     uint8_t id[KF_SPLIT_CONN_ID_LEN])
{
    uint8_t mem[KF_SPLIT_PEERS_MAX];
    struct kf_split_peer p;
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    KF_ENSURE(gnutls_rnd(GNUTLS_RND_RANDOM, id, KF_SPLIT_CONN_ID_LEN) == 0, KF_ERR_CRYPTO);
    memcpy(p.id, id, KF_SPLIT_CONN_ID_LEN);
    p.who = *who;
    int rc = kf_split_encode_peer(&p, &out);
    if (rc == KF_OK)
        rc = kf_split_send(se->h->peers, &out, NULL, 0);
    kf_wipe(&p, sizeof(p));
    kf_wipe(mem, out.len);
    return rc;
}

static void send_gone(struct session *se, const uint8_t id[KF_SPLIT_CONN_ID_LEN])
{
    uint8_t mem[KF_SPLIT_FRAME_LEN + KF_SPLIT_CONN_ID_LEN];
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    if (kf_split_encode_gone(id, &out) < 0 || kf_split_send(se->h->peers, &out, NULL, 0) < 0)
        kf_warn("TLS split %s: cannot tell the host that the connection is over", se->peer);
}

/* Hand the worker the traffic state of both directions (and control). First
 * GIVE: the principal, or (conn_id != NULL) only the connection ID. */
static int send_give(struct session *se, bool first, const struct kf_principal *who,
                     const uint8_t *conn_id)
{
    uint8_t mem[KF_SPLIT_CONTROL_MAX];
    struct kf_split_give g = {.first = first, .resumed = gnutls_session_is_resumed(se->s) != 0};
    kf_buf out;
    kf_buf_fixed(&out, mem, sizeof(mem));
    int rc = kf_tlssplit_export_state(se->s, true, &g.rd);
    if (rc == KF_OK)
        rc = kf_tlssplit_export_state(se->s, false, &g.wr);
    if (rc == KF_OK && first && conn_id) {
        g.has_id = true;
        memcpy(g.conn_id, conn_id, sizeof(g.conn_id));
    } else if (rc == KF_OK && first)
        g.who = *who;
    if (rc == KF_OK)
        rc = kf_split_encode_give(&g, &out);
    if (rc == KF_OK)
        rc = kf_split_send(se->ctl, &out, NULL, 0);
    kf_wipe(&g, sizeof(g));
    kf_wipe(mem, out.len);
    return rc;
}

/* ---- after the handshake: one TAKE at a time -------------------------------------- */

/* GnuTLS processes the one record the worker could not: KeyUpdate, an alert,
 * a renegotiation attempt. KF_OK: give control back; KF_ERR_IO: closed
 * cleanly (close_notify answered); other: the session is over. */
static int process_record(struct session *se, const uint8_t *rec, size_t len)
{
    uint8_t sink[256];
    se->inject = true;
    se->inj = rec;
    se->inj_len = len;
    se->peer_asked_update = false;
    ssize_t r;
    do
        r = gnutls_record_recv(se->s, sink, sizeof(sink));
    while (r == GNUTLS_E_INTERRUPTED);
    bool consumed = se->inj_len == 0;
    if (r == GNUTLS_E_AGAIN && consumed && se->ticket_arrived) {
        se->ticket_arrived = false;
        keep_session(se); /* still injecting: GnuTLS finds nothing more to read */
    }
    se->inject = false;
    if (r == GNUTLS_E_AGAIN && consumed) {
        if (se->peer_asked_update && gnutls_session_key_update(se->s, 0) < 0)
            return KF_ERR_TLS;
        return KF_OK;
    }
    if (r == 0) { /* close_notify: answer it */
        gnutls_bye(se->s, GNUTLS_SHUT_WR);
        return KF_ERR_IO;
    }
    if (r == GNUTLS_E_WARNING_ALERT_RECEIVED)
        return KF_OK;
    if (r == GNUTLS_E_REHANDSHAKE) {
        /* TLS 1.2 renegotiation is not offered: say so and carry on. */
        return gnutls_alert_send(se->s, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION) < 0
                   ? KF_ERR_TLS
                   : KF_OK;
    }
    if (r > 0) {
        /* Application data is the worker's to read; the worker forwarded it anyway. */
        kf_warn("TLS split %s: the worker forwarded application data", se->peer);
        kf_wipe(sink, sizeof(sink));
        return KF_ERR_SPLIT_CHANNEL;
    }
    kf_info("TLS split %s: closed: %s", se->peer, gnutls_strerror((int)r));
    if (gnutls_error_is_fatal((int)r))
        gnutls_alert_send_appropriate(se->s, (int)r);
    return KF_ERR_TLS;
}

static int serve_take(struct session *se, const struct kf_split_take *t)
{
    KF_GUARD(kf_tlssplit_import_seq(se->s, true, t->read_seq));
    KF_GUARD(kf_tlssplit_import_seq(se->s, false, t->write_seq));
    switch (t->reason) {
    case KF_SPLIT_TAKE_RECORD: {
        uint8_t buf[KF_SPLIT_SESSION_MAX];
        uint8_t type;
        kf_buf body;
        const uint8_t *rec;
        size_t len;
        bool eof;
        /* The worker sent the record before the TAKE: it is already queued. */
        KF_GUARD(kf_split_recv(se->ses, buf, sizeof(buf), KF_SPLIT_ALLOW(KF_SPLIT_RECORD), 5000,
                               &type, &body, NULL, &eof));
        KF_GUARD(kf_split_decode_record(&body, &rec, &len));
        return process_record(se, rec, len);
    }
    case KF_SPLIT_TAKE_KEY_UPDATE:
        if (gnutls_protocol_get_version(se->s) != GNUTLS_TLS1_3)
            return KF_OK; /* TLS 1.2 has no key update: nothing to do */
        return gnutls_session_key_update(se->s, t->arg ? GNUTLS_KU_PEER : 0) < 0 ? KF_ERR_TLS
                                                                               : KF_OK;
    case KF_SPLIT_TAKE_CLOSE:
        gnutls_bye(se->s, GNUTLS_SHUT_WR);
        return KF_ERR_IO;
    default: /* ABORT */
        gnutls_alert_send(se->s, GNUTLS_AL_FATAL, (gnutls_alert_description_t)t->arg);
        return KF_ERR_TLS;
    }
}

static void serve_worker(struct session *se)
{
    for (;;) {
        uint8_t buf[KF_SPLIT_CONTROL_MAX], type;
        kf_buf body;
        bool eof;
        struct kf_split_take t;
        int rc = kf_split_recv(se->ctl, buf, sizeof(buf), KF_SPLIT_ALLOW(KF_SPLIT_TAKE), -1, &type,
                               &body, NULL, &eof);
        if (rc == KF_OK)
            rc = kf_split_decode_take(&body, &t);
        if (rc < 0) {
            if (!eof)
                kf_warn("TLS split %s: %s", se->peer, kf_strerror(rc));
            return; /* the worker is gone or broke the protocol: nothing to give back */
        }
        rc = serve_take(se, &t);
        if (rc == KF_OK)
            rc = send_give(se, false, NULL, NULL);
        else {
            if (send_end(se, rc == KF_ERR_IO ? KF_OK : rc) < 0)
                return;
            return;
        }
        if (rc < 0)
            return;
    }
}

/* ---- one session ------------------------------------------------------------------ */

static int session_open(struct session *se)
{
    static const gnutls_typed_vdata_st purpose = {.type = GNUTLS_DT_KEY_PURPOSE_OID,
                                                  .data = (void *)GNUTLS_KP_TLS_WWW_CLIENT};
    KF_ENSURE(gnutls_init(&se->s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL) == 0, KF_ERR_NOMEM);
    if (keylog)
        gnutls_session_set_keylog_function(se->s, keylog_write);
    if (gnutls_priority_set(se->s, se->h->priority) < 0 ||
        gnutls_credentials_set(se->s, GNUTLS_CRD_CERTIFICATE, se->h->creds) < 0 ||
        gnutls_session_ticket_enable_server(se->s, &se->h->stek) < 0)
        return KF_ERR_TLS_CONFIG;
    gnutls_certificate_server_set_request(se->s, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_cert2(se->s, (gnutls_typed_vdata_st *)&purpose, 1, 0);
    gnutls_handshake_set_timeout(se->s, (unsigned)se->h->handshake_ms);
    gnutls_session_set_ptr(se->s, se);
    gnutls_handshake_set_hook_function(se->s, GNUTLS_HANDSHAKE_KEY_UPDATE, GNUTLS_HOOK_PRE,
                                       post_handshake_hook);
    gnutls_transport_set_ptr(se->s, se);
    gnutls_transport_set_push_function(se->s, session_push);
    gnutls_transport_set_pull_function(se->s, session_pull);
    gnutls_transport_set_pull_timeout_function(se->s, session_wait);
    return KF_OK;
}

static void run_session(struct session *se)
{
    struct kf_principal who;
    int rc = session_open(se);
    if (rc < 0) {
        kf_error("TLS split %s: cannot set up a session", se->peer);
        (void)send_end(se, rc);
        return;
    }
    do
        rc = gnutls_handshake(se->s);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    if (rc < 0) {
        kf_tls_log_handshake_failure("TLS split", se->peer, se->s, rc);
        (void)send_end(se, KF_ERR_TLS);
        return;
    }
    /* Bytes GnuTLS read but did not give out would be lost to the worker. */
    if (gnutls_record_check_pending(se->s) > 0 || se->hdr_got != 0) {
        kf_warn("TLS split %s: data arrived inside the handshake's last record", se->peer);
        (void)send_end(se, KF_ERR_TLS);
        return;
    }
    rc = kf_tlssplit_identify(se->s, se->h->ids, se->peer, &who);
    if (rc < 0) {
        (void)send_end(se, rc);
        return;
    }
    kf_info("TLS split %s: %s (%s%s), roles 0x%x", se->peer, who.name,
            gnutls_protocol_get_name(gnutls_protocol_get_version(se->s)),
            gnutls_session_is_resumed(se->s) ? ", resumed" : "", who.roles);
    uint8_t id[KF_SPLIT_CONN_ID_LEN];
    bool ids = se->h->peers >= 0;
    if (ids) {
        rc = send_peer(se, &who, id);
        if (rc < 0) {
            kf_wipe(&who, sizeof(who));
            kf_error("TLS split %s: cannot tell the host who the peer is: %s", se->peer,
                     kf_strerror(rc));
            (void)send_end(se, rc);
            return;
        }
    }
    rc = send_give(se, true, &who, ids ? id : NULL);
    kf_wipe(&who, sizeof(who));
    if (rc < 0)
        kf_warn("TLS split %s: cannot hand the session to the worker: %s", se->peer,
                kf_strerror(rc));
    else
        serve_worker(se);
    if (ids)
        send_gone(se, id); /* the host forgets the ID: nobody can use it any more */
}

/* ---- one client session --------------------------------------------------------- */

static bool is_ip_literal(const char *name)
{
    uint8_t tmp[16];
    return inet_pton(AF_INET, name, tmp) == 1 || inet_pton(AF_INET6, name, tmp) == 1;
}

static int client_session_open(struct session *se)
{
    /* The server's certificate must chain to the CA, name server_name (DNS or
     * IP SAN) and, if it has an Extended Key Usage, allow TLS server use.
     * GnuTLS keeps a pointer to the list: it lives in the session. */
    se->check[0] = (gnutls_typed_vdata_st){.type = GNUTLS_DT_DNS_HOSTNAME,
                                           .data = (void *)se->server_name};
    se->check[1] = (gnutls_typed_vdata_st){.type = GNUTLS_DT_KEY_PURPOSE_OID,
                                           .data = (void *)GNUTLS_KP_TLS_WWW_SERVER};
    KF_ENSURE(gnutls_init(&se->s, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL) == 0, KF_ERR_NOMEM);
    if (keylog)
        gnutls_session_set_keylog_function(se->s, keylog_write);
    if (gnutls_priority_set(se->s, se->h->priority) < 0 ||
        gnutls_credentials_set(se->s, GNUTLS_CRD_CERTIFICATE, se->h->creds) < 0)
        return KF_ERR_TLS_CONFIG;
    if (!is_ip_literal(se->server_name) &&
        gnutls_server_name_set(se->s, GNUTLS_NAME_DNS, se->server_name,
                               strlen(se->server_name)) < 0)
        return KF_ERR_TLS_CONFIG;
    gnutls_session_set_verify_cert2(se->s, se->check, 2, 0);
    gnutls_handshake_set_timeout(se->s, (unsigned)se->h->handshake_ms);
    gnutls_session_set_ptr(se->s, se);
    gnutls_handshake_set_hook_function(se->s, GNUTLS_HANDSHAKE_ANY, GNUTLS_HOOK_PRE,
                                       post_handshake_hook);
    gnutls_transport_set_ptr(se->s, se);
    gnutls_transport_set_push_function(se->s, session_push);
    gnutls_transport_set_pull_function(se->s, session_pull);
    gnutls_transport_set_pull_timeout_function(se->s, session_wait);
    if (!(se->start_flags & KF_SPLIT_START_NO_RESUME)) {
        char key[sizeof(se->h->kept[0].key)];
        gnutls_datum_t kept;
        kept_key(se, key, sizeof(key));
        kept_take(se->h, key, &kept);
        /* A session GnuTLS no longer takes (expired) just means a full handshake. */
        if (kept.data)
            (void)gnutls_session_set_data(se->s, kept.data, kept.size);
        datum_wipe_free(&kept);
    }
    return KF_OK;
}

static void log_client_handshake_failure(struct session *se, int rc)
{
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
        gnutls_datum_t why = {0};
        unsigned status = gnutls_session_get_verify_cert_status(se->s);
        if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &why, 0) == 0) {
            kf_warn("TLS split client %s (%s): server certificate refused: %s", se->peer,
                    se->server_name, why.data);
            gnutls_free(why.data);
            return;
        }
    }
    kf_warn("TLS split client %s (%s): handshake failed: %s", se->peer, se->server_name,
            gnutls_strerror(rc));
}

/* The client handshake, then the worker as the active endpoint -- as
 * run_session, with the server's verified name in place of an identity. */
static void run_client_session(struct session *se)
{
    struct kf_principal who;
    int rc = client_session_open(se);
    if (rc < 0) {
        kf_error("TLS split client %s: cannot set up a session", se->peer);
        (void)send_end(se, rc);
        return;
    }
    do
        rc = gnutls_handshake(se->s);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    if (rc < 0) {
        log_client_handshake_failure(se, rc);
        (void)send_end(se, KF_ERR_TLS);
        return;
    }
    if (gnutls_record_check_pending(se->s) > 0 || se->hdr_got != 0) {
        kf_warn("TLS split client %s: data arrived inside the handshake's last record", se->peer);
        (void)send_end(se, KF_ERR_TLS);
        return;
    }
    /* TLS 1.2: the ticket came inside the handshake; TLS 1.3: it comes later,
     * as a record the worker forwards. */
    se->ticket_arrived = false;
    keep_session(se);
    memset(&who, 0, sizeof(who));
    snprintf(who.name, sizeof(who.name), "%s", se->server_name);
    kf_info("TLS split client %s: %s (%s%s)", se->peer, se->server_name,
            gnutls_protocol_get_name(gnutls_protocol_get_version(se->s)),
            gnutls_session_is_resumed(se->s) ? ", resumed" : "");
    rc = send_give(se, true, &who, NULL);
    if (rc < 0) {
        kf_warn("TLS split client %s: cannot hand the session over: %s", se->peer,
                kf_strerror(rc));
        return;
    }
    serve_worker(se);
}

static void session_thread(void *arg)
{
    struct session *se = arg;
    if (se->h->client)
        run_client_session(se);
    else
        run_session(se);
    if (se->s)
        gnutls_deinit(se->s); /* wipes GnuTLS's secrets of this session */
    close(se->tcp);
    close(se->ctl);
    close(se->ses);
    atomic_fetch_sub(&se->h->sessions, 1);
    kf_wipe(se, sizeof(*se));
    free(se);
}

static void start_session(struct handler *h, const struct kf_split_start *st, const int fds[3])
{
    struct session *se = NULL;
    if (atomic_fetch_add(&h->sessions, 1) >= HANDLER_MAX_SESSIONS ||
        !(se = calloc(1, sizeof(*se))))
    {
        atomic_fetch_sub(&h->sessions, 1);
        kf_warn("TLS split %s refused: %u sessions open", st->peer, HANDLER_MAX_SESSIONS);
        for (int i = 0; i < 3; i++)
            close(fds[i]);
        return;
    }
    se->h = h;
    se->tcp = fds[0];
    se->ctl = fds[1];
    se->ses = fds[2];
    memcpy(se->peer, st->peer, sizeof(se->peer));
    memcpy(se->server_name, st->server_name, sizeof(se->server_name));
    se->start_flags = st->flags;
    if (kf_tlssplit_pool_run(session_thread, se) < 0) {
        (void)send_end(se, KF_ERR_NOMEM);
        close(se->tcp);
        close(se->ctl);
        close(se->ses);
        atomic_fetch_sub(&h->sessions, 1);
        free(se);
    }
}

/* ---- SSLKEYLOGFILE -----------------------------------------------------------------------
 * For debugging with a packet capture (it writes every session's secrets in the
 * clear, so keyfleetd warns when it is set). GnuTLS's own writer opens the file
 * at the first handshake, which the sandbox forbids: the handler opens it before
 * and writes GnuTLS's NSS key log lines itself. */
static pthread_mutex_t keylog_lock = PTHREAD_MUTEX_INITIALIZER;

static void keylog_hex(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(keylog, "%02x", p[i]);
}

static int keylog_write(gnutls_session_t s, const char *label, const gnutls_datum_t *secret)
{
    gnutls_datum_t client_random, server_random;
    gnutls_session_get_random(s, &client_random, &server_random);
    pthread_mutex_lock(&keylog_lock);
    fprintf(keylog, "%s ", label);
    keylog_hex(client_random.data, client_random.size);
    fputc(' ', keylog);
    keylog_hex(secret->data, secret->size);
    fputc('\n', keylog);
    fflush(keylog);
    pthread_mutex_unlock(&keylog_lock);
    return 0;
}

static void keylog_open(void)
{
    const char *path = secure_getenv("SSLKEYLOGFILE");
    if (!path || !*path)
        return;
    keylog = fopen(path, "a");
    if (keylog)
        kf_warn("TLS split: SSLKEYLOGFILE is set: the TLS secrets of every session are written "
                "to %s", path);
    else
        kf_warn("TLS split: SSLKEYLOGFILE %s cannot be opened: no key log", path);
}

/* ---- the memory-scan test's hook ------------------------------------------------------ */

#ifdef KF_TEST_HOOKS
/* Test builds only (cmake -DKF_TEST_HOOKS=ON): write the ticket key where the
 * memory-scan test finds it, so it can prove no worker holds it. */
static void reveal_for_tests(struct handler *h, const struct kf_split_config *c)
{
    const char *path = getenv("KF_TEST_REVEAL_FILE");
    if (!(c->flags & KF_SPLIT_CONFIG_TEST_REVEAL) || !path)
        return;
    /* Opened now: once confined, the handler can open no file for writing. */
    h->reveal = fopen(path, "a");
    if (!h->reveal)
        return;
    if (!h->client) {
        fprintf(h->reveal, "stek ");
        for (unsigned i = 0; i < h->stek.size; i++)
            fprintf(h->reveal, "%02x", h->stek.data[i]);
        fprintf(h->reveal, "\n");
        kf_warn("TLS split: TEST BUILD: the session-ticket key was written to %s", path);
    }
    fflush(h->reveal);
}

/* Client: each kept session (ticket and resumption secret), for the scan of the client process. */
static void reveal_kept(struct handler *h, const gnutls_datum_t *d)
{
    if (!h->reveal)
        return;
    pthread_mutex_lock(&h->kept_lock);
    fprintf(h->reveal, "session ");
    for (unsigned i = 0; i < d->size; i++)
        fprintf(h->reveal, "%02x", d->data[i]);
    fprintf(h->reveal, "\n");
    fflush(h->reveal);
    pthread_mutex_unlock(&h->kept_lock);
}
#else
static void reveal_for_tests(struct handler *h, const struct kf_split_config *c)
{
    (void)h;
    if (c->flags & KF_SPLIT_CONFIG_TEST_REVEAL)
        kf_warn("TLS split: reveal requested, but this build has no test hooks (KF_TEST_HOOKS)");
}

static void reveal_kept(struct handler *h, const gnutls_datum_t *d)
{
    (void)h, (void)d;
}
#endif

/* ---- credentials -------------------------------------------------------------------- */

/* The module and PIN fields are empty strings when not given. */
static int register_token(const struct kf_split_config *c)
{
    return kf_tls_register_pkcs11("TLS split", c->pkcs11_module[0] ? c->pkcs11_module : NULL,
                                  c->key_pin[0] ? c->key_pin : NULL);
}

static int load_priority(struct handler *h, const struct kf_split_config *c)
{
    return kf_tls_load_priority("TLS split", c->priority[0] ? c->priority : NULL, &h->priority);
}

/* Client: the server's trust anchors and, if given, the client certificate. */
static int load_client_credentials(struct handler *h, const struct kf_split_config *c)
{
    KF_GUARD(register_token(c));
    KF_ENSURE(gnutls_certificate_allocate_credentials(&h->creds) == 0, KF_ERR_NOMEM);
    KF_GUARD(kf_tls_load_trust("TLS split client", h->creds, c->ca_file));
    if (c->cert_file[0])
        KF_GUARD(kf_tls_load_cert_key("TLS split client", "client", h->creds, c->cert_file,
                                      c->key_file));
    KF_GUARD(load_priority(h, c));
    h->handshake_ms = c->handshake_timeout_ms ? (int)c->handshake_timeout_ms : 10000;
    h->flags = c->flags;
    h->client = true;
    reveal_for_tests(h, c); /* the kept sessions go there as they come */
    return KF_OK;
}

static int load_credentials(struct handler *h, const struct kf_split_config *c)
{
    if (c->flags & KF_SPLIT_CONFIG_CLIENT)
        return load_client_credentials(h, c);
    KF_GUARD(register_token(c));
    KF_ENSURE(gnutls_certificate_allocate_credentials(&h->creds) == 0, KF_ERR_NOMEM);
    KF_GUARD(kf_tls_load_trust("TLS split", h->creds, c->ca_file));
    KF_GUARD(kf_tls_load_cert_key("TLS split", "server", h->creds, c->cert_file, c->key_file));
    KF_GUARD(load_priority(h, c));
    KF_GUARD(kf_tls_load_identity_map("TLS split", c->identities_file, &h->ids));
    if (gnutls_session_ticket_key_generate(&h->stek) < 0)
        return KF_ERR_TLS_CONFIG;
    reveal_for_tests(h, c);
    h->handshake_ms = c->handshake_timeout_ms ? (int)c->handshake_timeout_ms : 10000;
    h->flags = c->flags;
    return KF_OK;
}

/* ---- the process ------------------------------------------------------------------------ */

int kf_tlssplit_handler_serve(int broker, int peers, const struct kf_split_config *cfg)
{
    static struct handler h; /* KEPT_MAX kept sessions: not on the stack */
    memset(&h, 0, sizeof(h));
    KF_ENSURE(!(cfg->flags & KF_SPLIT_CONFIG_CONN_IDS) == (peers < 0), KF_ERR_ARG);
    h.peers = peers;
    pthread_mutex_init(&h.kept_lock, NULL);
    /* No core file, no ptrace by the same user: this process holds the secrets. */
    prctl(PR_SET_DUMPABLE, 0);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(SIGPIPE, SIG_IGN);
    int rc = load_credentials(&h, cfg);
    if (rc < 0)
        return rc;
    /* From here on: no file opened for writing, no socket made, no program
     * started, whatever a handshake does to this process (sandbox.c). */
    keylog_open();
    rc = kf_tlssplit_sandbox_handler();
    if (rc < 0) {
        kf_error("TLS split: the session handler cannot confine itself: %s", kf_strerror(rc));
        return rc;
    }
    /* The host waits for this before it counts on us (kf_tlssplit_handler_start). */
    uint8_t ready_mem[KF_SPLIT_FRAME_LEN];
    kf_buf ready;
    kf_buf_fixed(&ready, ready_mem, sizeof(ready_mem));
    rc = kf_split_encode_ready(&ready);
    if (rc == KF_OK)
        rc = kf_split_send(broker, &ready, NULL, 0);
    if (rc < 0) {
        kf_error("TLS split: the session handler cannot tell its host it is ready: %s",
                 kf_strerror(rc));
        return rc;
    }
    if (h.client)
        kf_info("TLS split: client session handler %d ready", (int)getpid());
    else
        kf_info("TLS split: session handler %d ready (identity rules: %zu)", (int)getpid(),
                kf_tls_identities_count(h.ids));
    for (;;) {
        static uint8_t buf[KF_SPLIT_BROKER_MAX];
        uint8_t type;
        kf_buf body;
        bool eof;
        int fds[3];
        struct kf_split_start st;
        rc = kf_split_recv(broker, buf, sizeof(buf), KF_SPLIT_ALLOW(KF_SPLIT_START), -1, &type,
                           &body, fds, &eof);
        /* The role is the handler's, fixed by CONFIG: a START for the other one
         * is a host that does not know what it talks to. */
        if (rc == KF_OK &&
            (kf_split_decode_start(&body, &st) < 0 ||
             st.role != (h.client ? KF_SPLIT_ROLE_CLIENT : KF_SPLIT_ROLE_SERVER)))
        {
            for (int i = 0; i < 3; i++)
                close(fds[i]);
            rc = KF_ERR_SPLIT_CHANNEL;
        }
        if (rc < 0) {
            /* The host closed the broker (stopping), or broke the protocol: the
             * handler does not guess, it ends and takes its sessions with it. */
            if (!eof)
                kf_error("TLS split: broker channel: %s", kf_strerror(rc));
            kept_clear(&h);
            return eof ? KF_OK : rc;
        }
        start_session(&h, &st, fds);
    }
}
