/*
 * The manufacturing line as the Steel runs it (docs/manufacturing.md
 * "Installation" and "Tools"): for one device and each of its two domains,
 * MI0 -> MI4 -> the station's checks (src/station/steel.h) -> the last key
 * ID stored -> kfd_meter_install -> the test tokens compared -> MI7 -> MI10,
 * with the faults tests inject. No socket and no file here: keyfleetd is
 * reached through steel_line_io (KMIP over TLS in tools/keyfleet-install.c,
 * a fake in tests/unit/test_station_line.c), and each outcome goes to a
 * callback as one line "<msn> <domain> <key id> <status> <reason>".
 */
#ifndef KF_STATION_LINE_H
#define KF_STATION_LINE_H

#include <stdbool.h>
#include <stdint.h>

#include "keyfleet/meter.h"
#include "keyfleet/station.h"

enum steel_fault_kind {
    STEEL_FAULT_DROP_MI4,            /* MI4 discarded as if lost; the device asks again */
    STEEL_FAULT_BAD_TOKEN,           /* device's tokens corrupted; the station detects it */
    STEEL_FAULT_BAD_TOKEN_UNCHECKED, /* corrupted tokens sent in Installed unchecked */
    STEEL_FAULT_REPLAY_MI4,          /* the previous device's MI4 presented first */
    STEEL_FAULT_WRONG_STEEL,         /* a key for other_steel handed to this station */
    STEEL_FAULT_SECOND_INSTALL,      /* after its own, the previous device's key offered */
    STEEL_FAULT_WRITE_ERROR,         /* the device's storage fails while installing */
    STEEL_FAULT_KINDS
};
extern const char *const steel_fault_names[STEEL_FAULT_KINDS];

#define STEEL_FAULTS_MAX 256
struct steel_fault {
    enum steel_fault_kind kind;
    uint64_t device; /* the device number (the digits of its MSN) */
    int which;       /* 0 vendor domain, 1 postal domain */
};
/* "KIND@N" or "KIND@N:postal" / "KIND@N:vendor"; N 1..99999999. KF_ERR_USAGE. */
KF_RESULT int steel_fault_parse(const char *s, struct steel_fault *f);

/* How the line reaches keyfleetd. A refusal by keyfleetd returns its kf code
 * with *refused set; anything else negative means the line cannot go on. */
struct steel_line_io {
    void *ctx;
    /* KeyfleetMfgRequestKey: one Distribute record (MI4) into out (reset first). */
    int (*request_key)(void *ctx, const char *domain, const char *steel_id, kf_buf *out,
                       bool *refused);
    /* KeyfleetMfgReportInstall: one ConfirmInstalled record (MI10) into out. */
    int (*report)(void *ctx, const char *domain, const uint8_t *report, size_t len, kf_buf *out,
                  bool *refused);
    /* One outcome; key_id 0 when unknown, reason 0 for none. */
    void (*result)(void *ctx, const char *msn, const char *domain, uint64_t key_id,
                   const char *status, int reason);
};

struct steel_line_counts {
    uint64_t installed, bad, lost, steel_refused, device_refused, server_refused;
    uint64_t complete, incomplete; /* devices with both keys Installed, and not */
    uint64_t anomalies;            /* a key accepted where it must have been refused */
};

/* The device on the line: m is initialised (kfd_meter_init) by the caller,
 * whose store callback must fail while fail_writes is set. */
struct steel_device {
    struct kfd_meter *m;
    bool fail_writes;
};

struct steel_line {
    kf_station *st;
    const char *domain[2];   /* vendor, postal */
    const char *other_steel; /* for STEEL_FAULT_WRONG_STEEL */
    struct steel_fault faults[STEEL_FAULTS_MAX];
    size_t nfaults;
    struct steel_line_io io;
    struct steel_line_counts n;
    /* working buffers, and the previous device's MI4 per domain */
    kf_buf mi4, prev_mi4[2], report, answer;
    bool have_prev[2];
    char why[200]; /* what stopped the line */
};

/* Buffers; st, domain, faults and io are the caller's to fill in. */
KF_RESULT int steel_line_init(struct steel_line *ln);
void steel_line_free(struct steel_line *ln);
/* Both keys of device number (its MSN is d->m->msn). KF_OK when the device was
 * handled, whatever its outcome (counted in ln->n); an error (and ln->why)
 * only when the line cannot go on: a request refused, the last key ID not
 * stored, an MI10 that does not check, the connection lost. */
KF_RESULT int steel_line_device(struct steel_line *ln, struct steel_device *d, uint64_t number);

#endif
