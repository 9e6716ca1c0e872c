/*
 * One device's way down the line (src/station/line.h): per domain, the key
 * asked for, checked, stored as seen, installed, proved and reported, and
 * the faults a test asks for on the way.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "keyfleet/secmem.h"
#include "station/line.h"
#include "station/steel.h"

#define LINE_RECORDS_MAX (1024u * 1024u)

const char *const steel_fault_names[STEEL_FAULT_KINDS] = {
    "drop-mi4",    "bad-token",      "bad-token-unchecked", "replay-mi4",
    "wrong-steel", "second-install", "write-error"};

int steel_fault_parse(const char *s, struct steel_fault *f)
{
    KF_ENSURE(s && f, KF_ERR_ARG);
    const char *at = strchr(s, '@');
    KF_ENSURE(at, KF_ERR_USAGE);
    size_t klen = (size_t)(at - s);
    int kind = -1;
    for (int k = 0; k < STEEL_FAULT_KINDS; k++)
        if (strlen(steel_fault_names[k]) == klen && strncmp(s, steel_fault_names[k], klen) == 0)
            kind = k;
    KF_ENSURE(kind >= 0, KF_ERR_USAGE);
    const char *num = at + 1, *colon = strchr(num, ':');
    size_t nlen = colon ? (size_t)(colon - num) : strlen(num);
    KF_ENSURE(nlen >= 1 && nlen <= 8, KF_ERR_USAGE);
    uint64_t v = 0;
    for (size_t i = 0; i < nlen; i++) {
        KF_ENSURE(num[i] >= '0' && num[i] <= '9', KF_ERR_USAGE);
        v = v * 10 + (uint64_t)(num[i] - '0');
    }
    KF_ENSURE(v >= 1, KF_ERR_USAGE);
    f->kind = (enum steel_fault_kind)kind;
    f->device = v;
    f->which = 0;
    if (colon) {
        if (strcmp(colon + 1, "postal") == 0)
            f->which = 1;
        else
            KF_ENSURE(strcmp(colon + 1, "vendor") == 0, KF_ERR_USAGE);
    }
    return KF_OK;
}

int steel_line_init(struct steel_line *ln)
{
    KF_ENSURE(ln, KF_ERR_ARG);
    kf_buf *bufs[] = {&ln->mi4, &ln->prev_mi4[0], &ln->prev_mi4[1], &ln->report, &ln->answer};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        int rc = kf_buf_alloc(bufs[i], 1024, LINE_RECORDS_MAX, 0);
        if (rc < 0) {
            steel_line_free(ln);
            return rc;
        }
    }
    return KF_OK;
}

void steel_line_free(struct steel_line *ln)
{
    if (!ln)
        return;
    kf_buf_free(&ln->mi4);
    kf_buf_free(&ln->prev_mi4[0]);
    kf_buf_free(&ln->prev_mi4[1]);
    kf_buf_free(&ln->report);
    kf_buf_free(&ln->answer);
}

static bool has_fault(const struct steel_line *ln, uint64_t device, int which,
                      enum steel_fault_kind k)
{
    for (size_t i = 0; i < ln->nfaults; i++)
        if (ln->faults[i].kind == k && ln->faults[i].device == device &&
            ln->faults[i].which == which)
            return true;
    return false;
}

static void result(struct steel_line *ln, const struct steel_device *d, const char *domain,
                   uint64_t key_id, const char *status, int reason)
{
    if (ln->io.result)
        ln->io.result(ln->io.ctx, d->m->msn, domain, key_id, status, reason);
}

/* MI0 -> MI4 for steel_id into out. A refusal stops the line too: without a
 * key there is nothing to install. */
static int request_key(struct steel_line *ln, const char *domain, const char *steel_id, kf_buf *out)
{
    bool refused = false;
    kf_buf_reset(out);
    int rc = ln->io.request_key(ln->io.ctx, domain, steel_id, out, &refused);
    if (rc < 0)
        snprintf(ln->why, sizeof(ln->why), "%s key request for %s refused%s", domain, steel_id,
                 refused ? " by keyfleetd" : "");
    return rc;
}

/* MI7 (in ln->report) -> MI10 for (domain, key_id): a refusal by keyfleetd is
 * an outcome (ServerRefused); an MI10 that does not check stops the line. */
static int send_report(struct steel_line *ln, const struct steel_device *d, const char *domain,
                       uint64_t key_id, bool *installed)
{
    *installed = false;
    bool refused = false;
    kf_buf_reset(&ln->answer);
    int rc =
        ln->io.report(ln->io.ctx, domain, ln->report.data, ln->report.len, &ln->answer, &refused);
    if (rc < 0 && refused) {
        result(ln, d, domain, key_id, "ServerRefused", rc);
        ln->n.server_refused++;
        return KF_OK;
    }
    struct kf_mfg_record conf;
    if (rc == KF_OK)
        rc = steel_check_confirm(ln->st, domain, key_id, ln->answer.data, ln->answer.len, &conf);
    if (rc < 0) {
        snprintf(ln->why, sizeof(ln->why), "no confirmation (MI10) that checks for %s key %llu",
                 domain, (unsigned long long)key_id);
        return rc;
    }
    if (conf.status == KF_MFG_INSTALLED) {
        ln->n.installed++;
        *installed = true;
        result(ln, d, domain, key_id, "Installed", 0);
    } else {
        ln->n.bad++;
        result(ln, d, domain, key_id, "Bad", conf.reason < 0 ? conf.reason : KF_ERR_MFG_STATUS);
    }
    return KF_OK;
}

/* The station refused an MI4: say so, and report InstallFailed for the key it
 * names when it names one of this domain (docs/manufacturing.md "Rules"). */
static int steel_refused(struct steel_line *ln, const struct steel_device *d, const char *domain,
                         const struct kf_mfg_record *rec, bool decoded, int reason)
{
    result(ln, d, domain, decoded ? rec->key_id : 0, "SteelRefused", reason);
    ln->n.steel_refused++;
    if (!decoded || strcmp(rec->domain, domain) != 0 || rec->key_id == 0)
        return KF_OK;
    const char *steel =
        kf_mfg_role_id_parse(rec->steel_id, NULL) ? rec->steel_id : kf_station_role_id(ln->st);
    kf_buf_reset(&ln->report);
    KF_GUARD(steel_install_failed(ln->st, domain, steel, rec->key_id, NULL, reason,
                                  (int64_t)time(NULL), &ln->report));
    bool installed;
    return send_report(ln, d, domain, rec->key_id, &installed);
}

enum token_fault { TOKENS_GOOD, TOKENS_BAD, TOKENS_BAD_UNCHECKED };

/* MI5..MI10 for one MI4 handed to this station for device d. *installed when
 * Brass confirmed the key Installed. */
static int handle_mi4(struct steel_line *ln, struct steel_device *d, int which, const kf_buf *mi4,
                      enum token_fault tf, bool write_error, bool *installed)
{
    const char *domain = ln->domain[which];
    *installed = false;
    struct kf_mfg_record rec;
    bool decoded;
    int rc = steel_check_mi4(ln->st, domain, mi4->data, mi4->len, &rec, &decoded);
    if (rc < 0)
        return steel_refused(ln, d, domain, &rec, decoded, rc);
    /* Durable before the key goes anywhere: this MI4 is never accepted again. */
    rc = kf_station_set_last_key_id(ln->st, domain, rec.key_id);
    if (rc < 0) {
        snprintf(ln->why, sizeof(ln->why), "cannot store the last key ID seen in %s", domain);
        return rc;
    }
    uint8_t *key = kf_secmem_alloc(KF_MFG_KEY_LEN);
    if (!key)
        return KF_ERR_SECMEM;
    uint8_t tokens[KFD_TEST_TOKENS_LEN];
    int reason = kf_station_open_key(ln->st, domain, rec.key_id, NULL, rec.sealed_key, key);
    bool in_device = false;
    if (reason == KF_OK) {
        d->fail_writes = write_error;
        reason = kfd_meter_install(d->m, domain, rec.key_id, key, tokens);
        d->fail_writes = false;
        if (reason == KF_ERR_DEVICE_STORAGE)
            reason = KF_ERR_MFG_WRITE;
        in_device = reason == KF_OK;
    }
    kf_secmem_free(key);
    if (reason == KF_OK && tf != TOKENS_GOOD)
        tokens[0] ^= 0x5a; /* the device answers wrong evidence */
    if (reason == KF_OK && tf != TOKENS_BAD_UNCHECKED &&
        !kf_ct_equal(tokens, rec.test_tokens, KFD_TEST_TOKENS_LEN))
        reason = KF_ERR_MFG_TOKENS;
    kf_buf_reset(&ln->report);
    int64_t now = (int64_t)time(NULL);
    bool named = in_device || reason == KF_ERR_MFG_WRITE;
    rc = reason == KF_OK ? steel_installed(ln->st, &rec, d->m->msn, tokens, now, &ln->report)
                         : steel_install_failed(ln->st, domain, rec.steel_id, rec.key_id,
                                                named ? d->m->msn : NULL, reason, now, &ln->report);
    if (rc < 0)
        return rc;
    return send_report(ln, d, domain, rec.key_id, installed);
}

/* second-install: the previous device's key offered to this device, first
 * through the station, then past it to the device and to keyfleetd. */
static int second_install(struct steel_line *ln, struct steel_device *d, int which)
{
    const char *domain = ln->domain[which];
    const kf_buf *prev = &ln->prev_mi4[which];
    bool installed;
    KF_GUARD(handle_mi4(ln, d, which, prev, TOKENS_GOOD, false, &installed));
    if (installed)
        ln->n.anomalies++;
    uint8_t oak_pub[32];
    struct kf_mfg_record rec;
    KF_GUARD(kf_station_domain_role(ln->st, domain, KF_MFG_ROLE_OAK, NULL, oak_pub, NULL));
    KF_GUARD(kf_mfg_record_open(prev->data, prev->len, oak_pub, KF_MFG_REC_DISTRIBUTE, &rec));
    uint8_t *key = kf_secmem_alloc(KF_MFG_KEY_LEN);
    if (!key)
        return KF_ERR_SECMEM;
    uint8_t tokens[KFD_TEST_TOKENS_LEN];
    int rc = kf_station_open_key(ln->st, domain, rec.key_id, NULL, rec.sealed_key, key);
    if (rc == KF_OK) {
        int dev_rc = kfd_meter_install(d->m, domain, rec.key_id, key, tokens);
        if (dev_rc < 0) {
            result(ln, d, domain, rec.key_id, "DeviceRefused", dev_rc);
            ln->n.device_refused++;
        } else {
            result(ln, d, domain, rec.key_id, "DeviceAcceptedTwice", 0);
            ln->n.anomalies++;
        }
        rc = kfd_test_tokens(key, tokens); /* the right evidence: only the status may refuse */
    }
    kf_secmem_free(key);
    KF_GUARD(rc);
    kf_buf_reset(&ln->report);
    KF_GUARD(steel_installed(ln->st, &rec, d->m->msn, tokens, (int64_t)time(NULL), &ln->report));
    KF_GUARD(send_report(ln, d, domain, rec.key_id, &installed));
    if (installed)
        ln->n.anomalies++;
    return KF_OK;
}

static int install_domain(struct steel_line *ln, struct steel_device *d, uint64_t number, int which,
                          bool *own_installed)
{
    const char *domain = ln->domain[which];
    const char *me = kf_station_role_id(ln->st);
    bool installed;
    *own_installed = false;
    if (has_fault(ln, number, which, STEEL_FAULT_REPLAY_MI4) && ln->have_prev[which])
        KF_GUARD(handle_mi4(ln, d, which, &ln->prev_mi4[which], TOKENS_GOOD, false, &installed));
    if (has_fault(ln, number, which, STEEL_FAULT_WRONG_STEEL) && ln->other_steel) {
        KF_GUARD(request_key(ln, domain, ln->other_steel, &ln->mi4));
        KF_GUARD(handle_mi4(ln, d, which, &ln->mi4, TOKENS_GOOD, false, &installed));
        if (installed)
            ln->n.anomalies++;
    }
    if (has_fault(ln, number, which, STEEL_FAULT_DROP_MI4)) {
        KF_GUARD(request_key(ln, domain, me, &ln->mi4));
        struct kf_mfg_record rec;
        bool decoded;
        int rc = steel_check_mi4(ln->st, domain, ln->mi4.data, ln->mi4.len, &rec, &decoded);
        result(ln, d, domain, decoded ? rec.key_id : 0, "Lost", rc < 0 ? rc : 0);
        ln->n.lost++;
    }
    /* The device's own key. */
    KF_GUARD(request_key(ln, domain, me, &ln->mi4));
    enum token_fault tf = has_fault(ln, number, which, STEEL_FAULT_BAD_TOKEN) ? TOKENS_BAD
                          : has_fault(ln, number, which, STEEL_FAULT_BAD_TOKEN_UNCHECKED)
                              ? TOKENS_BAD_UNCHECKED
                              : TOKENS_GOOD;
    KF_GUARD(handle_mi4(ln, d, which, &ln->mi4, tf,
                        has_fault(ln, number, which, STEEL_FAULT_WRITE_ERROR), own_installed));
    if (has_fault(ln, number, which, STEEL_FAULT_SECOND_INSTALL) && ln->have_prev[which])
        KF_GUARD(second_install(ln, d, which));
    /* This MI4 is the next device's "previous" one. */
    kf_buf tmp = ln->prev_mi4[which];
    ln->prev_mi4[which] = ln->mi4;
    ln->mi4 = tmp;
    ln->have_prev[which] = true;
    return KF_OK;
}

int steel_line_device(struct steel_line *ln, struct steel_device *d, uint64_t number)
{
    KF_ENSURE(ln && ln->st && d && d->m && ln->io.request_key && ln->io.report, KF_ERR_ARG);
    ln->why[0] = 0;
    bool ok[2] = {false, false};
    for (int w = 0; w < 2; w++)
        KF_GUARD(install_domain(ln, d, number, w, &ok[w]));
    if (ok[0] && ok[1])
        ln->n.complete++;
    else
        ln->n.incomplete++;
    return KF_OK;
}
