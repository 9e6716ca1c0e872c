/*
 * From a GnuTLS session to the worker's traffic state and back: the only
 * place that reads gnutls_record_get_state() and writes
 * gnutls_record_set_state(). What crosses to the worker is the cipher key,
 * IV and sequence number of one direction -- never a traffic or master
 * secret (GnuTLS does not even offer those through this call).
 */
#include <string.h>

#include "keyfleet/secmem.h"
#include "tlssplit_internal.h"

static int map_cipher(gnutls_cipher_algorithm_t c, uint8_t *out)
{
    switch (c) {
    case GNUTLS_CIPHER_AES_128_GCM: *out = KF_TLSREC_AES_128_GCM; return KF_OK;
    case GNUTLS_CIPHER_AES_256_GCM: *out = KF_TLSREC_AES_256_GCM; return KF_OK;
    case GNUTLS_CIPHER_CHACHA20_POLY1305: *out = KF_TLSREC_CHACHA20_POLY1305; return KF_OK;
    default: return KF_ERR_UNSUPPORTED;
    }
}

int kf_tlssplit_export_state(gnutls_session_t s, bool read, struct kf_tlsrec_state *st)
{
    gnutls_datum_t mac = {0}, iv = {0}, key = {0};
    uint8_t seq[8];
    memset(st, 0, sizeof(*st));
    switch (gnutls_protocol_get_version(s)) {
    case GNUTLS_TLS1_2: st->version = KF_TLSREC_TLS12; break;
    case GNUTLS_TLS1_3: st->version = KF_TLSREC_TLS13; break;
    default: return KF_ERR_UNSUPPORTED;
    }
    KF_GUARD(map_cipher(gnutls_cipher_get(s), &st->cipher));
    if (gnutls_record_get_state(s, read ? 1 : 0, &mac, &iv, &key, seq) < 0)
        return KF_ERR_TLS_STATE;
    /* AEAD suites have no separate MAC key; lengths must be what the cipher uses. */
    if (mac.size != 0 || key.size > sizeof(st->key) || iv.size > sizeof(st->iv) ||
        iv.size != kf_tlsrec_iv_len(st->version, st->cipher))
        return KF_ERR_TLS_STATE;
    st->key_len = (uint8_t)key.size;
    st->iv_len = (uint8_t)iv.size;
    memcpy(st->key, key.data, key.size);
    memcpy(st->iv, iv.data, iv.size);
    for (int i = 0; i < 8; i++)
        st->seq = (st->seq << 8) | seq[i];
    return KF_OK;
}

int kf_tlssplit_import_seq(gnutls_session_t s, bool read, uint64_t seq)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(seq >> (56 - 8 * i));
    return gnutls_record_set_state(s, read ? 1 : 0, b) < 0 ? KF_ERR_TLS_STATE : KF_OK;
}
