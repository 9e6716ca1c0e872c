#!/usr/bin/env bash
# Footprint of libkeyfleet-device's core (what a device links): code and data
# size at -Os, the size of struct kfd_device, and the peak stack of one full
# pairing and session exchange, measured on a painted stack.
#
#   scripts/device-footprint.sh [CC]      (default: gcc)
#
# The server-side file (src/device/issue.c: kfd_issue_part, kfd_ack_verify)
# is left out: keyfleetd links it, a device does not.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CC=${1:-${CC:-gcc}}
OUT=$(mktemp -d)
[ -n "${KEEP:-}" ] && echo "keeping $OUT" || trap 'rm -rf "$OUT"' EXIT

BASE=(-std=c11 -Os -D_GNU_SOURCE -ffunction-sections -fdata-sections -I"$ROOT/include" -I"$ROOT/src")
CFLAGS=("${BASE[@]}" -fstack-usage)
core=()
for f in "$ROOT"/src/device/*.c; do
  [ "$(basename "$f")" = issue.c ] && continue
  core+=("$f")
done

echo "== libkeyfleet-device core, $CC -Os =="
objs=()
for f in "${core[@]}" "$ROOT/src/base/buf.c" "$ROOT/src/base/error.c"; do
  o="$OUT/$(basename "${f%.c}").o"
  "$CC" "${CFLAGS[@]}" -c "$f" -o "$o"
  objs+=("$o")
done
size "${objs[@]}" | sed "s|$OUT/||"
dev_objs=()
for o in "${objs[@]}"; do
  case "$o" in */buf.o|*/error.o) ;; *) dev_objs+=("$o") ;; esac
done
size -t "${dev_objs[@]}" | tail -1 | awk '{printf "device core total: text %d, data %d, bss %d bytes\n", $1, $2, $3}'
size -t "$OUT/buf.o" "$OUT/error.o" | tail -1 | awk '{printf "kf_base (cursor + error sentences): text %d, data %d, bss %d bytes\n", $1, $2, $3}'

echo
echo "== largest stack frames (-fstack-usage, bytes) =="
cat "$OUT"/*.su | sort -t$'\t' -k2 -n -r > "$OUT/frames"
awk -F'\t' 'NR <= 12 {split($1, a, ":"); printf "%6d  %s\n", $2, a[length(a)]}' "$OUT/frames"

# A program that runs two pairings and a session exchange for device A and
# device B, each API call on its own painted stack. The transport replays
# answers recorded in a first run, so the measured stacks are the library's.
# Two scenarios: 1 KEK with short IDs, and the largest messages (8 KEKs,
# 64-character IDs), whose second pairing replaces a full state.
cat > "$OUT/measure.c" <<'EOF'
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyfleet/device.h"
#include "keyfleet/kmip_tags.h"
#include "device/wire.h"

#define T0 1700000000
#define STACK (64 * 1024)
#define PAINT 0xA5
#define TURNS 16

static uint8_t saved_state[2][KFD_STATE_MAX];
static int save(void *ctx, const uint8_t *s, size_t n) { memcpy(saved_state[ctx != NULL], s, n); return 0; }
static int64_t now(void *ctx) { (void)ctx; return T0 + 10; }
static int rnd(void *ctx, uint8_t *o, size_t n) { (void)ctx; for (size_t i = 0; i < n; i++) o[i] = (uint8_t)(i * 37 + 11); return 0; }

struct kfd_device A, B;
static char id_a[KFD_ID_MAX + 1], id_b[KFD_ID_MAX + 1];
static uint32_t kek_count;
static uint8_t answers[TURNS][KFD_KMIP_MAX];
static size_t answer_len[TURNS];
static int recording = 1, turn, pairings;
static uint8_t sm_b[2][KFD_MSG_MAX];
static size_t sm_b_len[2];

/* kfd_issue_part, the server's half, lives in issue.c: linked here only for the recording run. */
static size_t server_answer(const uint8_t *req, size_t len, uint8_t *resp, size_t cap);

static int exchange(void *ctx, enum kfd_peer peer, const uint8_t *req, size_t len, uint8_t *resp,
                    size_t cap, size_t *resp_len)
{
    (void)ctx;
    if (!recording) {
        if (answer_len[turn] > cap) abort();
        memcpy(resp, answers[turn], answer_len[turn]);
        *resp_len = answer_len[turn++];
        return 0;
    }
    if (turn >= TURNS) abort();
    if (peer == KFD_PEER_PARTNER) {
        kf_buf out; uint8_t sk[32]; bool got;
        memcpy(sm_b[pairings - 1], req, len);
        sm_b_len[pairings - 1] = len;
        kf_buf_fixed(&out, resp, cap);
        if (kfd_partner_answer(&B, req, len, &out, sk, &got) != KF_OK) abort();
        *resp_len = out.len;
    } else {
        *resp_len = server_answer(req, len, resp, cap);
    }
    memcpy(answers[turn], resp, *resp_len);
    answer_len[turn++] = *resp_len;
    return 0;
}

static const uint8_t mkek_a[32] = {1}, mkek_b[32] = {2};

static size_t server_answer(const uint8_t *req, size_t len, uint8_t *resp, size_t cap)
{
    kf_buf in, m, h, item, body, out, payload;
    uint32_t op;
    kf_buf_reader(&in, req, len);
    if (kfd_get_open(&in, KMIP_TAG_REQUEST_MESSAGE, &m, NULL) || kfd_get_open(&m, KMIP_TAG_REQUEST_HEADER, &h, NULL) ||
        kfd_get_open(&m, KMIP_TAG_BATCH_ITEM, &item, NULL) || kfd_get_u32(&item, KMIP_TAG_OPERATION, &op) ||
        kfd_get_open(&item, KMIP_TAG_REQUEST_PAYLOAD, &body, NULL))
        abort();
    static uint8_t pay[KFD_MSG_MAX];
    kf_buf_fixed(&payload, pay, sizeof(pay));
    if (op == KMIP_OP_KEYFLEET_PAIR_KEY_REQUEST) {
        struct kfd_issue_kek meta[KFD_MAX_KEKS];
        uint8_t kek[KFD_MAX_KEKS][32], nonce[12] = {3};
        uint64_t counter = (uint64_t)++pairings;
        for (uint32_t i = 0; i < kek_count; i++) {
            meta[i] = (struct kfd_issue_kek){counter * 100 + i, T0, T0 + 86400, 10000};
            memset(kek[i], (int)(7 + i), 32);
        }
        if (kfd_issue_part(mkek_a, KFD_ROLE_A, id_a, id_b, counter, meta, (const uint8_t(*)[32])kek, kek_count, nonce, &payload) ||
            kfd_issue_part(mkek_b, KFD_ROLE_B, id_a, id_b, counter, meta, (const uint8_t(*)[32])kek, kek_count, nonce, &payload))
            abort();
    }
    size_t a, b, c, d, e;
    kf_buf_fixed(&out, resp, cap);
    if (kfd_put_open(&out, KMIP_TAG_RESPONSE_MESSAGE, &a) || kfd_put_open(&out, KMIP_TAG_RESPONSE_HEADER, &b) ||
        kfd_put_open(&out, KMIP_TAG_PROTOCOL_VERSION, &c) || kfd_put_u32(&out, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1) ||
        kfd_put_u32(&out, KMIP_TAG_PROTOCOL_VERSION_MINOR, 4) || kfd_put_close(&out, c) ||
        kfd_put_u64(&out, KMIP_TAG_TIME_STAMP, T0) || kfd_put_u32(&out, KMIP_TAG_BATCH_COUNT, 1) ||
        kfd_put_close(&out, b) || kfd_put_open(&out, KMIP_TAG_BATCH_ITEM, &d) ||
        kfd_put_u32(&out, KMIP_TAG_OPERATION, op) || kfd_put_u32(&out, KMIP_TAG_RESULT_STATUS, 0) ||
        kfd_put_open(&out, KMIP_TAG_RESPONSE_PAYLOAD, &e) || kf_buf_put_bytes(&out, pay, payload.len) ||
        kfd_put_close(&out, e) || kfd_put_close(&out, d) || kfd_put_close(&out, a))
        abort();
    return out.len;
}

static uint8_t pkg_a[256], pkg_b[256];
static size_t pkg_a_len, pkg_b_len;
static size_t package(uint8_t *p, const char *id, const uint8_t *mkek)
{
    kf_buf b; size_t m;
    kf_buf_fixed(&b, p, 256);
    if (kfd_put_open(&b, KMIP_TAG_KEYFLEET_DEVICE_PACKAGE, &m) || kfd_put_u32(&b, KMIP_TAG_KEYFLEET_PROTO_VERSION, 1) ||
        kfd_put_text(&b, KMIP_TAG_KEYFLEET_DEVICE_ID, id) || kfd_put_text(&b, KMIP_TAG_KEYFLEET_DOMAIN, "plant-7") ||
        kfd_put_bytes(&b, KMIP_TAG_KEYFLEET_MASTER_KEY, mkek, 32) || kfd_put_close(&b, m))
        abort();
    return b.len;
}

/* The steps of two pairings and one session key, each measured alone. */
static uint8_t m3[256], ack[256], rec[256], data[64];
static size_t m3_len, ack_len, rec_len, offer_slot;
static uint8_t sk_a[32], sk_b[32];
static struct kfd_channel tx, rx;
static const struct kfd_transport T = {NULL, exchange};
static const struct kfd_env env_a = {NULL, save, now, rnd}, env_b = {(void *)1, save, now, rnd};

static void step_install(void) { if (kfd_install(&A, &env_a, pkg_a, pkg_a_len) || kfd_install(&B, &env_b, pkg_b, pkg_b_len)) abort(); }
static void step_nothing(void) {}
static void step_pair_with(void) { struct kfd_pair_result r; if (kfd_pair_with(&A, id_b, kek_count, 0, 0, &T, &r)) abort(); }
static void b_accept(int n) { kf_buf o; bool got; uint8_t sk[32]; kf_buf_fixed(&o, ack, sizeof(ack)); if (kfd_partner_answer(&B, sm_b[n], sm_b_len[n], &o, sk, &got)) abort(); }
static void step_b_accept_1(void) { b_accept(0); }
static void step_b_accept_2(void) { b_accept(1); }
static void step_offer(void) { kf_buf o; kf_buf_fixed(&o, m3, sizeof(m3)); if (kfd_kek_current(&A, id_b, &offer_slot) || kfd_session_offer(&A, id_b, sk_a, &o)) abort(); m3_len = o.len; }
static void step_answer(void) { kf_buf o; bool got; kf_buf_fixed(&o, ack, sizeof(ack)); if (kfd_partner_answer(&B, m3, m3_len, &o, sk_b, &got) || !got) abort(); ack_len = o.len; }
static void step_confirm(void) { const struct kfd_kek *k = &A.st.keks[offer_slot]; if (kfd_session_confirm(&A, id_b, k->kek_id, k->send_seq, sk_a, ack, ack_len)) abort(); }
static void step_seal(void) { kf_buf o; kf_buf_fixed(&o, rec, sizeof(rec)); if (kfd_channel_init(&tx, sk_a, KFD_DIR_OFFERER) || kfd_record_seal(&tx, (const uint8_t *)"42.7 kWh", 8, &o)) abort(); rec_len = o.len; }
static void step_open_record(void) { size_t n; if (kfd_channel_init(&rx, sk_b, KFD_DIR_OFFERER) || kfd_record_open(&rx, rec, rec_len, data, sizeof(data), &n)) abort(); }

static void *run(void *fn) { ((void (*)(void))fn)(); return NULL; }

static size_t measured(void (*fn)(void))
{
    static uint8_t *stack;
    if (!stack && posix_memalign((void **)&stack, 4096, STACK)) abort();
    memset(stack, PAINT, STACK);
    pthread_attr_t at; pthread_t th;
    pthread_attr_init(&at);
    pthread_attr_setstack(&at, stack, STACK);
    if (pthread_create(&th, &at, run, (void *)fn) || pthread_join(th, NULL)) abort();
    size_t untouched = 0;
    while (untouched < STACK && stack[untouched] == PAINT) untouched++;
    return STACK - untouched;
}

int main(int argc, char **argv)
{
    size_t id_len = argc > 1 && strcmp(argv[1], "largest") == 0 ? KFD_ID_MAX : 0;
    if (id_len) {
        memset(id_a, 'm', id_len), memset(id_b, 'b', id_len);
        kek_count = KFD_MAX_KEKS;
    } else {
        strcpy(id_a, "meter-1"), strcpy(id_b, "base-1");
        kek_count = 1;
    }
    pkg_a_len = package(pkg_a, id_a, mkek_a);
    pkg_b_len = package(pkg_b, id_b, mkek_b);
    /* Recording run: the real server half and B answer the transport. */
    step_install(); step_pair_with(); step_pair_with();
    /* Measured run from the same start: the transport replays. */
    recording = 0, turn = 0;
    size_t base = measured(step_nothing);  /* thread start-up, and glibc's thread block at the top */
    struct { const char *name; void (*fn)(void); int device; } steps[] = {
        {"kfd_install (A and B)", step_install, 0},
        {"kfd_pair_with (A: request, check SM_A, forward, conclude, report)", step_pair_with, 'A'},
        {"kfd_pair_with again (A: the new KEKs replace the old)", step_pair_with, 'A'},
        {"kfd_partner_answer -> kfd_pair_accept (B, SM_B)", step_b_accept_1, 'B'},
        {"kfd_partner_answer -> kfd_pair_accept (B, the second SM_B)", step_b_accept_2, 'B'},
        {"kfd_session_offer (A)", step_offer, 0},
        {"kfd_partner_answer -> kfd_session_accept (B)", step_answer, 0},
        {"kfd_session_confirm (A)", step_confirm, 0},
        {"kfd_record_seal (A)", step_seal, 0},
        {"kfd_record_open (B)", step_open_record, 0},
    };
    size_t peak = 0, peak_a = 0, peak_b = 0;
    printf("== %s: peak stack per call (painted %d KiB stack, less %zu bytes of thread start-up) ==\n",
           id_len ? "8 KEKs, 64-character IDs" : "1 KEK, short IDs", STACK / 1024, base);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        size_t used = measured(steps[i].fn) - base;
        printf("%6zu  %s\n", used, steps[i].name);
        if (used > peak) peak = used;
        if (steps[i].device == 'A' && used > peak_a) peak_a = used;
        if (steps[i].device == 'B' && used > peak_b) peak_b = used;
    }
    printf("sizeof(struct kfd_device) = %zu (struct kfd_state %zu, struct kfd_kek %zu)\n",
           sizeof(struct kfd_device), sizeof(struct kfd_state), sizeof(struct kfd_kek));
    printf("RAM per pairing (peak stack + struct kfd_device): A %zu, B %zu bytes\n",
           peak_a + sizeof(struct kfd_device), peak_b + sizeof(struct kfd_device));
    printf("peak stack of any call: %zu bytes\n", peak);
    return 0;
}
EOF
"$CC" "${CFLAGS[@]}" -c "$ROOT/src/device/issue.c" -o "$OUT/issue.o"
# -z now: every library symbol is bound at start, so no call pays for lazy binding.
"$CC" "${BASE[@]}" "$OUT/measure.c" "${objs[@]}" "$OUT/issue.o" -o "$OUT/measure" \
  -Wl,-z,now $(pkg-config --libs nettle) -lpthread
for scenario in typical largest; do
  echo
  "$OUT/measure" "$scenario"
done

# Code a device links: the core plus the nettle functions it calls, statically, with
# unused sections dropped, against an empty program as the baseline.
if [ -f "$(dirname "$($CC -print-file-name=libnettle.a)")/libnettle.a" ] || [ -f /usr/lib/x86_64-linux-gnu/libnettle.a ]; then
  cat > "$OUT/empty.c" <<'EOF'
int main(void) { return 0; }
EOF
  cat > "$OUT/uses.c" <<'EOF'
#include "keyfleet/device.h"
/* Reference every device entry point so the linker keeps the whole core. */
void *volatile keep[] = {(void *)kfd_install, (void *)kfd_open, (void *)kfd_close, (void *)kfd_state_encode,
    (void *)kfd_state_decode, (void *)kfd_pair_request, (void *)kfd_pair_split, (void *)kfd_pair_accept,
    (void *)kfd_ack_report, (void *)kfd_ack_decode, (void *)kfd_kek_current, (void *)kfd_session_offer,
    (void *)kfd_session_accept, (void *)kfd_session_confirm, (void *)kfd_record_seal, (void *)kfd_record_open,
    (void *)kfd_kmip_wrap, (void *)kfd_kmip_unwrap, (void *)kfd_pair_with, (void *)kfd_partner_answer,
    (void *)kfd_kdf, (void *)kfd_id_valid, (void *)kfd_pair_check, (void *)kfd_pair_conclude,
    (void *)kfd_channel_init};
int main(void) { return keep[0] == 0; }
EOF
  nettle_a=/usr/lib/x86_64-linux-gnu/libnettle.a
  "$CC" -Os -static -Wl,--gc-sections "$OUT/empty.c" -o "$OUT/empty" 2>/dev/null || true
  "$CC" "${BASE[@]}" -static -Wl,--gc-sections -Wl,-Map,"$OUT/uses.map" "$OUT/uses.c" \
    "${dev_objs[@]}" "$OUT/buf.o" "$OUT/error.o" "$nettle_a" -o "$OUT/uses" 2>/dev/null || true
  if [ -x "$OUT/uses" ] && [ -x "$OUT/empty" ]; then
    e=$(size "$OUT/empty" | tail -1 | awk '{print $1}')
    u=$(size "$OUT/uses" | tail -1 | awk '{print $1}')
    echo
    echo "== linked statically with nettle (--gc-sections), over an empty program =="
    echo "device core + kf_base + the nettle code it uses: $((u - e)) bytes of text"
    # Which nettle objects were linked (code and read-only tables), from the link map. A
    # "fat" libnettle (Debian's) has a CPU-dispatch object that references every
    # accelerated routine, so SHA-1, SHA-256, GHASH, AES decryption, CBC and AES-128/192
    # come along although the device calls none of them; a device's own nettle build
    # (no --enable-fat) links only the rest.
    awk '
      function hex(s,   i, v) { v = 0; s = tolower(s); sub(/^0x/, "", s)
        for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
        return v }
      function count(size, file,   o) {
        if (file !~ /libnettle\.a\(/ || hex(size) == 0) return
        o = file; sub(/.*\(/, "", o); sub(/\)$/, "", o)
        if (o ~ /^(fat-|sha1|sha256|ghash|aes-decrypt|aes(128|192|256)-decrypt|aes(128|192)-|cbc)/)
          fat += hex(size); else used += hex(size)
        objs[o] += hex(size) }
      /^ \.(text|rodata)/ { if (NF >= 4) count($3, $4); else if (NF == 1) { getline; if (NF >= 3) count($2, $3) } }
      END { printf "nettle in it: %d bytes the device calls (AES-256 encryption, CCM, CTR, CMAC, memxor),\n", used
            printf "  plus %d bytes only the fat build'"'"'s CPU dispatch pulls in\n", fat }' "$OUT/uses.map"
  fi
fi
