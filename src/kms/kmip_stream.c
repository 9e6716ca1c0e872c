/*
 * Streamed (multi-part) Encrypt, KMIP 1.4 §4.29: the first request carries
 * Init Indicator, the server answers a Correlation Value, later requests
 * carry it, and the one with Final Indicator gets the rest and the tag.
 *
 * Offered for AES-GCM encryption only. Streamed Decrypt is refused: GCM
 * would have to release plaintext before the tag is checked, and a client
 * could act on unauthenticated data.
 *
 * Each part is a full kf_kms_use_key (state, usage mask and audit are
 * checked again). A stream is bound to its server, key and caller; idle
 * streams expire, and the table is small and bounded, so abandoned streams
 * cannot pin memory. Stream state (the key schedule) lives in secure memory.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "keyfleet/crypto.h"
#include "keyfleet/kmip_tags.h"
#include "keyfleet/rng.h"
#include "keyfleet/secmem.h"
#include "kmip_crypto_internal.h"

#define STREAMS_MAX 64
#define STREAM_IDLE_SECONDS 600
#define STREAM_ACTOR_MAX 256

struct stream {
    bool used;
    uint8_t corr[KMIP_CORRELATION_LEN];
    const kf_kms *kms;
    char uid[KF_UID_MAX];
    char actor[STREAM_ACTOR_MAX];
    size_t tag_len;
    int64_t expires;
    kf_aes_gcm_stream *gcm;
};

static struct stream streams[STREAMS_MAX];
static pthread_mutex_t streams_lock = PTHREAD_MUTEX_INITIALIZER;

static int64_t now_seconds(void)
{
    return (int64_t)time(NULL);
}

static void stream_drop(struct stream *s)
{
    kf_aes_gcm_stream_free(s->gcm);
    memset(s, 0, sizeof(*s));
}

/* A free slot, after dropping expired streams; NULL when all are live. Under the lock. */
static struct stream *slot_free(int64_t now)
{
    struct stream *free_slot = NULL;
    for (size_t i = 0; i < STREAMS_MAX; i++) {
        if (streams[i].used && streams[i].expires <= now)
            stream_drop(&streams[i]);
        if (!streams[i].used && !free_slot)
            free_slot = &streams[i];
    }
    return free_slot;
}

/* The live stream with this Correlation Value for this server, key and caller. Under the lock. */
static struct stream *slot_find(const struct cipher_job *j, int64_t now)
{
    if (j->corr_len != KMIP_CORRELATION_LEN)
        return NULL;
    for (size_t i = 0; i < STREAMS_MAX; i++) {
        struct stream *s = &streams[i];
        if (s->used && kf_ct_equal(s->corr, j->corr, KMIP_CORRELATION_LEN) &&
            s->kms == j->c->kms && strcmp(s->uid, j->uid) == 0 &&
            strcmp(s->actor, j->c->actor ? j->c->actor : "") == 0)
            return s->expires > now ? s : NULL;
    }
    return NULL;
}

static size_t stream_tag_len(const struct crypto_params *p)
{
    return p->tag_len > 0 ? (size_t)p->tag_len : KF_GCM_TAG_LEN;
}

/* Encrypt one part into j->out; the tag too when it is the last. */
static int stream_part(struct cipher_job *j, struct stream *s)
{
    uint8_t *dst;
    KF_GUARD(kf_buf_put_space(&j->out, j->len, &dst));
    if (!j->stream_final && j->len % 16) {
        snprintf(j->c->message, sizeof(j->c->message),
                 "streamed GCM parts before the last must be whole 16-byte blocks");
        return KF_ERR_ATTRIBUTE;
    }
    KF_GUARD(kf_aes_gcm_stream_encrypt(s->gcm, j->data, j->len, dst));
    if (!j->stream_final)
        return KF_OK;
    KF_GUARD(kf_aes_gcm_stream_tag(s->gcm, j->tag_out, s->tag_len));
    j->tag_out_len = s->tag_len;
    return KF_OK;
}

static int stream_start(struct cipher_job *j, const struct crypto_params *p, const uint8_t *key,
                        size_t klen, int64_t now)
{
    struct stream s = {.used = true, .kms = j->c->kms, .tag_len = stream_tag_len(p)};
    KF_ENSURE(s.tag_len == 4 || s.tag_len == 8 || (s.tag_len >= 12 && s.tag_len <= 16),
              KF_ERR_ARG);
    const uint8_t *iv = j->iv;
    size_t iv_len = j->iv_len;
    if (!iv) { /* the server chooses, and returns, a 12-byte IV */
        KF_GUARD(kf_rng_bytes(j->iv_out, KF_GCM_IV_LEN));
        j->iv_out_len = iv_len = KF_GCM_IV_LEN;
        iv = j->iv_out;
    }
    KF_ENSURE(iv_len >= 1, KF_ERR_ATTRIBUTE);
    KF_ENSURE(strlen(j->uid) < sizeof(s.uid), KF_ERR_ATTRIBUTE);
    const char *actor = j->c->actor ? j->c->actor : "";
    KF_ENSURE(strlen(actor) < sizeof(s.actor), KF_ERR_ATTRIBUTE);
    snprintf(s.uid, sizeof(s.uid), "%s", j->uid);
    snprintf(s.actor, sizeof(s.actor), "%s", actor);
    KF_GUARD(kf_rng_bytes(s.corr, sizeof(s.corr)));
    KF_GUARD(kf_aes_gcm_stream_start(key, klen, iv, iv_len, j->aad, j->aad_len, &s.gcm));
    int rc = stream_part(j, &s);
    if (rc == KF_OK && !j->stream_final) {
        pthread_mutex_lock(&streams_lock);
        struct stream *slot = slot_free(now);
        if (slot) {
            s.expires = now + STREAM_IDLE_SECONDS;
            *slot = s;
            s.gcm = NULL; /* the table owns it now */
            memcpy(j->corr_out, slot->corr, sizeof(j->corr_out));
            j->corr_out_len = sizeof(j->corr_out);
        } else {
            snprintf(j->c->message, sizeof(j->c->message), "too many streamed operations open");
            rc = KF_ERR_LIMIT;
        }
        pthread_mutex_unlock(&streams_lock);
    }
    kf_aes_gcm_stream_free(s.gcm);
    return rc;
}

static int stream_continue(struct cipher_job *j, int64_t now)
{
    pthread_mutex_lock(&streams_lock);
    struct stream *s = slot_find(j, now);
    int rc = s ? stream_part(j, s) : KF_ERR_INVALID_MESSAGE;
    if (!s)
        snprintf(j->c->message, sizeof(j->c->message),
                 "no open stream has this Correlation Value (ended, expired or another key's)");
    if (s && (rc < 0 || j->stream_final)) {
        stream_drop(s); /* a failed part ends the stream: its state is no longer known good */
    } else if (s) {
        s->expires = now + STREAM_IDLE_SECONDS;
        memcpy(j->corr_out, s->corr, sizeof(j->corr_out));
        j->corr_out_len = sizeof(j->corr_out);
    }
    pthread_mutex_unlock(&streams_lock);
    return rc;
}

int kmip_gcm_stream(struct cipher_job *j, const struct crypto_params *p, uint32_t alg,
                    const uint8_t *key, size_t klen)
{
    if (j->decrypt || alg != KMIP_ALG_AES || p->mode != KMIP_MODE_GCM) {
        snprintf(j->c->message, sizeof(j->c->message),
                 "streamed operations offered: AES-GCM Encrypt (a streamed Decrypt would "
                 "release unauthenticated plaintext)");
        return KF_ERR_UNSUPPORTED;
    }
    int64_t now = now_seconds();
    return j->stream_start ? stream_start(j, p, key, klen, now) : stream_continue(j, now);
}
