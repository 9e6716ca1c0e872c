#!/usr/bin/env bash
# Pairwise KEK distribution end to end (seed EP 0 948 158 Fig. 2, docs/pairing.md):
# keyfleetd registers and exports devices, two simulated devices (meter = A,
# base = B) get the same KEK through the meter, exchange 1,000 session keys with
# application data under each, and stop at the KEK's use limit and validity
# window on both sides; a KEK list rolls over window by window; a renewal gives
# a new KEK at higher counters, which supersedes the old one on both devices at
# once. Finally no KEK is in any server file, the log or the audit trail (and the
# scan does find it where it is: the device state).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pairing_lib.sh"
start_kms
for id in meter-1 base-1 meter-2 base-2 meter-3 base-3 meter-4 base-4; do new_device "$id"; done
# The dev device certificate has the device role only: no registering, exporting or auditing.
as_device() { "$KEYFLEET" --server "127.0.0.1:$KPORT" "${DEVICE_TLS[@]}" "$@"; }
expect_refusal "PermissionDenied" as_device device register rogue-1 --domain default
expect_refusal "PermissionDenied" as_device device export base-2 -o "$WORK/stolen.pkg"
expect_refusal "PermissionDenied" as_device audit show
# The package is handed out once.
expect_refusal "KF_ERR_DEVICE_EXPORTED" kf device export meter-1 -o "$WORK/again.pkg"
[ ! -s "$WORK/again.pkg" ] || fail "a second export wrote a package"; ok
# A state is never installed over: the counter would go back to 0.
expect_refusal "KF_ERR_EXISTS" "$DEVICE" install --state "$WORK/meter-1.state" --package "$WORK/meter-1.pkg"
# Usage: --help everywhere, usage errors exit 2, refusals exit 1, an unreachable peer 3.
for sub in install base meter show; do
  "$DEVICE" "$sub" --help > "$WORK/out" || fail "$sub --help"
  grep -q "Usage: keyfleet-device $sub" "$WORK/out" || fail "$sub --help text"; ok
done
"$DEVICE" --help > "$WORK/out" && grep -q "reveal-keys" "$WORK/out" || fail "keyfleet-device --help"; ok
"$RELAY" --help > "$WORK/out" && grep -q "swap-parts" "$WORK/out" || fail "kf-relay --help"; ok
expect_exit() { local want=$1 got=0; shift; "$@" > "$WORK/out" 2> "$WORK/err" || got=$?
  [ "$got" -eq "$want" ] || fail "exit $got, not $want: $* ($(cat "$WORK/err"))"; ok; }
expect_exit 2 "$DEVICE" meter --state "$WORK/meter-1.state" --partner-id base-1 --bogus
expect_exit 2 "$DEVICE" meter --state "$WORK/meter-1.state" --partner nowhere --partner-id base-1 --no-pair
expect_exit 2 "$DEVICE" meter --state "$WORK/meter-1.state" --partner 127.0.0.1:1 --partner-id 'bad id' --no-pair
expect_exit 2 "$DEVICE" meter --state "$WORK/meter-1.state" --partner 127.0.0.1:1 --partner-id base-1 --sessions -1 --no-pair
expect_exit 2 "$DEVICE" meter --state "$WORK/meter-1.state" --partner 127.0.0.1:1 --partner-id base-1 --data 1025 --no-pair
expect_exit 2 "$DEVICE" meter --state "$WORK/meter-1.state" --partner 127.0.0.1:1 --partner-id base-1   # pairing needs a server
expect_exit 2 "$DEVICE" show --state "$WORK/meter-1.state" --clock-skew soon
expect_exit 3 "$DEVICE" meter --state "$WORK/meter-1.state" --partner "127.0.0.1:$(free_tcp_port)" --partner-id base-1 --no-pair --timeout 500
grep -q "cannot reach the partner" "$WORK/err" || fail "unreachable partner"; ok
expect_exit 1 "$DEVICE" show --state "$WORK/no-such.state"
head -c 40 "$WORK/meter-1.state" > "$WORK/cut.state"
expect_refusal "KF_ERR_DEVICE_STATE" "$DEVICE" show --state "$WORK/cut.state"
head -c 40 "$WORK/meter-1.pkg" > "$WORK/cut.pkg"
expect_refusal "KF_ERR_PAIR_MALFORMED" "$DEVICE" install --state "$WORK/cut-install.state" --package "$WORK/cut.pkg"
[ ! -e "$WORK/cut-install.state" ] || fail "a refused package left a state file"; ok
printf 'up 1 pass\nup 2 explode\n' > "$WORK/bad.script"
expect_exit 2 "$RELAY" --listen 127.0.0.1:0 --upstream 127.0.0.1:1 --script "$WORK/bad.script"
grep -q "line 2: unknown action 'explode'" "$WORK/err" || fail "relay script error: $(cat "$WORK/err")"; ok
dshow meter-1 "$WORK/m1.fresh"
check "$WORK/m1.fresh" 'd["device"]=="meter-1" and d["domain"]=="default" and d["counter"]==0 and d["keks"]==[]' "fresh meter"

# ---- 1. one KEK, 1,000 session keys with data under each ----
start_base base-1
expect_ok meter meter-1 base-1 --pair --sessions 1000 --data 200 --json
check "$WORK/out" 'd["result"]=="ok" and d["paired"] and d["own"]=="accepted" and d["partner_verdict"]=="accepted"' "pairing verdicts"
check "$WORK/out" 'd["sessions"]==1000 and d["bytes"]==200000 and d["kek_count"]==1 and d["counter"]==1' "1,000 sessions"
KEK1=$(jv "$WORK/out" 'd["kek_id"]')
check "$WORK/out" "d['keks_used']==[$KEK1]" "sessions used the paired KEK"
dshow meter-1 "$WORK/m1"; dshow base-1 "$WORK/b1"
# Both devices hold the same KEK (same ID, same bytes), in their own roles.
[ "$(jv "$WORK/m1" 'd["keks"][0]["key"]')" = "$(jv "$WORK/b1" 'd["keks"][0]["key"]')" ] || fail "meter and base KEKs differ"; ok
check "$WORK/m1" "len(d['keks'])==1 and d['keks'][0]['kek_id']==$KEK1 and d['keks'][0]['role']=='A' and d['keks'][0]['partner']=='base-1'" "meter slot"
check "$WORK/b1" "len(d['keks'])==1 and d['keks'][0]['kek_id']==$KEK1 and d['keks'][0]['role']=='B' and d['keks'][0]['partner']=='meter-1'" "base slot"
check "$WORK/m1" 'd["counter"]==1 and d["keks"][0]["uses"]==1000 and d["keks"][0]["send_seq"]==1000' "meter counted 1,000 sends"
check "$WORK/b1" 'd["counter"]==1 and d["keks"][0]["uses"]==1000 and d["keks"][0]["recv_seq"]==1000' "base counted 1,000 receipts"
[ "$(grep -c 'accepted session key from meter-1' "$WORK/base-1.base.log")" -eq 1000 ] || fail "base log"; ok
[ "$(grep -c 'echoed 200 bytes' "$WORK/base-1.base.log")" -eq 1000 ] || fail "base echoes"; ok
# The same over a unix socket, the largest records, and a base that serves one link only.
stop_base base-1
"$DEVICE" base --state "$WORK/base-1.state" --listen "unix:$WORK/base-1.sock" --links 1 > "$WORK/base-1.unix.log" 2>&1 &
UNIX_BASE=$!; BG_PIDS+=("$UNIX_BASE")
for _ in $(seq 1 100); do [ -S "$WORK/base-1.sock" ] && break; sleep 0.05; done
expect_ok "$DEVICE" meter --state "$WORK/meter-1.state" --partner "unix:$WORK/base-1.sock" --partner-id base-1 \
  --no-pair --sessions 5 --data 1024 --json
check "$WORK/out" 'd["sessions"]==5 and d["bytes"]==5120' "sessions over a unix socket"
wait "$UNIX_BASE" || fail "the one-link base did not exit cleanly"; ok
grep -q "link 1 ended after 10 messages" "$WORK/base-1.unix.log" || fail "unix base log"; ok
start_base base-1
# keyfleetd: both counters at 1, both acks recorded, the KEK is the last issued.
for id in meter-1 base-1; do
  server_dev "$id" "$WORK/s.$id"
  check "$WORK/s.$id" "d['counter']==1 and d['acks_pending']==0 and d['last_kek_id']==$KEK1 and d['exported']" "server view of $id"
done

# ---- 2. the use limit, on both sides ----
start_base base-2
expect_ok meter meter-2 base-2 --max-uses 5 --sessions 5 --json
check "$WORK/out" 'd["sessions"]==5' "5 sessions under a 5-use KEK"
dshow meter-2 "$WORK/m2.before"; dshow base-2 "$WORK/b2.before"
check "$WORK/m2.before" 'd["keks"][0]["status"]=="exhausted" and d["keks"][0]["uses"]==5' "meter KEK exhausted"
check "$WORK/b2.before" 'd["keks"][0]["status"]=="exhausted" and d["keks"][0]["uses"]==5' "base KEK exhausted"
# The sender refuses a 6th session key ...
expect_refusal "KF_ERR_KEK_EXHAUSTED" meter meter-2 base-2 --no-pair --sessions 1
grep -q "this device refuses to send" "$WORK/err" || fail "sender refusal: $(cat "$WORK/err")"; ok
dshow meter-2 "$WORK/m2.after"; same_state "$WORK/m2.before" "$WORK/m2.after" "a refused offer changed the meter"
# ... and when a sender ignores its limit, the receiver refuses it.
expect_refusal "KF_ERR_KEK_EXHAUSTED" meter meter-2 base-2 --no-pair --sessions 1 --ignore-own-limits
grep -q "the partner refused the session key" "$WORK/err" || fail "receiver refusal: $(cat "$WORK/err")"; ok
dshow base-2 "$WORK/b2.after"; same_state "$WORK/b2.before" "$WORK/b2.after" "the base accepted an exhausted KEK"
grep -q "refused KF_ERR_KEK_EXHAUSTED" "$WORK/base-2.base.log" || fail "base log of the refusal"; ok

# ---- 3. the validity window, on both sides (the clock jumps past not-after) ----
start_base base-3
expect_ok meter meter-3 base-3 --lifetime 600 --sessions 3 --json
check "$WORK/out" 'd["sessions"]==3' "sessions inside the window"
dshow meter-3 "$WORK/m3"
check "$WORK/m3" 'd["keks"][0]["not_after"]-d["keks"][0]["not_before"]==600' "600 s window"
expect_ok meter meter-3 base-3 --no-pair --sessions 1 --clock-skew 590   # just inside
restart_base base-3 --clock-skew 601
dshow meter-3 "$WORK/m3.before" --clock-skew 601; dshow base-3 "$WORK/b3.before" --clock-skew 601
check "$WORK/m3.before" 'd["keks"][0]["status"]=="expired"' "meter KEK expired"
check "$WORK/b3.before" 'd["keks"][0]["status"]=="expired"' "base KEK expired"
expect_refusal "KF_ERR_KEK_EXPIRED" meter meter-3 base-3 --no-pair --sessions 1 --clock-skew 601
grep -q "this device refuses to send" "$WORK/err" || fail "sender refusal"; ok
expect_refusal "KF_ERR_KEK_EXPIRED" meter meter-3 base-3 --no-pair --sessions 1 --clock-skew 601 --ignore-own-limits
grep -q "the partner refused the session key" "$WORK/err" || fail "receiver refusal"; ok
dshow base-3 "$WORK/b3.after" --clock-skew 601; same_state "$WORK/b3.before" "$WORK/b3.after" "the base accepted an expired KEK"
# A part whose every KEK is already past not-after is refused at pairing too.
expect_refusal "KF_ERR_KEK_EXPIRED" meter meter-3 base-3 --lifetime 60 --sessions 0 --clock-skew 601
restart_base base-3

# ---- 4. a KEK list: consecutive windows, the next one takes over when one expires ----
start_base base-4
expect_ok meter meter-4 base-4 --kek-count 3 --lifetime 600 --sessions 2 --json
FIRST=$(jv "$WORK/out" 'd["kek_id"]')
check "$WORK/out" "d['kek_count']==3 and d['keks_used']==[$FIRST]" "the list's first KEK is current"
dshow meter-4 "$WORK/m4"; dshow base-4 "$WORK/b4"
python3 - "$WORK/m4" "$WORK/b4" "$FIRST" <<'PY' || fail "KEK list layout"
import json, sys
m, b, first = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
km = sorted(m["keks"], key=lambda k: k["kek_id"]); kb = sorted(b["keks"], key=lambda k: k["kek_id"])
assert [k["kek_id"] for k in km] == [first, first + 1, first + 2] == [k["kek_id"] for k in kb]
assert [k["key"] for k in km] == [k["key"] for k in kb] and len(set(k["key"] for k in km)) == 3
for i in range(2):
    assert km[i]["not_after"] == km[i + 1]["not_before"], "windows are consecutive"
    assert km[i + 1]["not_after"] - km[i + 1]["not_before"] == 600
assert [k["status"] for k in km] == ["valid", "not-yet-valid", "not-yet-valid"]
PY
ok
for step in 1 2; do
  skew=$((step * 600 + 1))
  restart_base base-4 --clock-skew "$skew"
  expect_ok meter meter-4 base-4 --no-pair --sessions 2 --clock-skew "$skew" --json
  check "$WORK/out" "d['keks_used']==[$FIRST+$step] and d['sessions']==2" "KEK $step of the list after $skew s"
done
restart_base base-4 --clock-skew 1801
expect_refusal "KF_ERR_KEK_EXPIRED" meter meter-4 base-4 --no-pair --sessions 1 --clock-skew 1801
restart_base base-4

# ---- 5. renewal: requesting again gives a new KEK at higher counters, in force at once ----
# (seed [0037]: the KEK is changed by requesting M again; the new one supersedes the old on
# both devices, so the very next session key travels under it)
expect_ok meter meter-1 base-1 --pair --sessions 0 --json
KEK2=$(jv "$WORK/out" 'd["kek_id"]')
[ "$KEK2" -gt "$KEK1" ] || fail "renewed KEK id $KEK2 not above $KEK1"; ok
dshow meter-1 "$WORK/m1.renewed"; dshow base-1 "$WORK/b1.renewed"
check "$WORK/m1.renewed" "d['counter']==2 and [k['kek_id'] for k in d['keks']]==[$KEK2]" "meter renewed: KEK $KEK1 superseded"
check "$WORK/b1.renewed" "d['counter']==2 and [k['kek_id'] for k in d['keks']]==[$KEK2]" "base renewed: KEK $KEK1 superseded"
python3 - "$WORK/m1.renewed" "$WORK/b1.renewed" "$WORK/m1" <<'PY' || fail "renewed KEK differs between devices or equals the old one"
import json, sys
m, b, old = (json.load(open(p)) for p in sys.argv[1:4])
assert m["keks"][0]["key"] == b["keks"][0]["key"] != old["keks"][0]["key"]
assert m["keks"][0]["uses"] == 0 and m["keks"][0]["send_seq"] == 0
PY
ok
server_dev meter-1 "$WORK/s.m1"; check "$WORK/s.m1" "d['counter']==2 and d['last_kek_id']==$KEK2 and d['acks_pending']==0" "server counters after renewal"
expect_ok meter meter-1 base-1 --no-pair --sessions 10 --json
check "$WORK/out" "d['sessions']==10 and d['keks_used']==[$KEK2]" "sessions after renewal use the new KEK"
# Renewed again and again: never more than one KEK (and slot) per partner.
for round in 1 2 3 4 5 6 7 8 9; do
  expect_ok meter meter-1 base-1 --pair --sessions 1 --data 0 --json
  KEKN=$(jv "$WORK/out" 'd["kek_id"]')
  check "$WORK/out" "d['result']=='ok' and d['keks_used']==[$KEKN]" "renewal $round is used at once"
done
dshow meter-1 "$WORK/m1.renewed9"; dshow base-1 "$WORK/b1.renewed9"
check "$WORK/m1.renewed9" "[k['kek_id'] for k in d['keks']]==[$KEKN] and d['counter']==11" "meter after 10 renewals"
check "$WORK/b1.renewed9" "[k['kek_id'] for k in d['keks']]==[$KEKN] and d['counter']==11" "base after 10 renewals"

# ---- 6. no KEK anywhere on the server side ----
for id in meter-1 meter-2 meter-3 meter-4; do dshow "$id" "$WORK/keys.$id"; done
# (and the superseded KEK1 and KEK2 of meter-1, from the snapshots taken when they were held)
python3 - "$WORK"/keys.meter-* "$WORK/m1" "$WORK/m1.renewed" > "$WORK/keks.hex" <<'PY'
import json, sys
for p in sys.argv[1:]:
    for k in json.load(open(p))["keks"]:
        print(k["key"])
PY
[ "$(sort -u "$WORK/keks.hex" | wc -l)" -eq 8 ] || fail "expected 8 distinct KEKs (3 + 1 + 1 + 3): $(cat "$WORK/keks.hex")"; ok
audit_all "$WORK/audit.json" "$WORK/audit.txt"
check "$WORK/audit.json" 'len(d) > 20 and len({r["seq"] for r in d}) == len(d)' "the whole audit trail"
grep -q "meter-1" "$WORK/audit.txt" || fail "the audit trail does not name the devices"; ok
# scan FILES...: every KEK as raw bytes, any 16-byte window, hex (either case), base64
# (every alignment, standard and URL alphabets). Exit 0 if none is found.
scan() {
  python3 - "$WORK/keks.hex" "$@" <<'PY'
import base64, os, sys
keys = [bytes.fromhex(l.strip()) for l in open(sys.argv[1]) if l.strip()]
paths = []
for p in sys.argv[2:]:
    paths += [os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs] if os.path.isdir(p) else [p]
def probes(k):
    yield k
    for i in range(0, len(k) - 15, 8):
        yield k[i:i + 16]
    yield k.hex().encode(); yield k.hex().upper().encode()
    for s in range(3):  # whatever the key's offset in an encoded blob, one of these appears
        chunk = k[s:s + 24]
        yield base64.b64encode(chunk); yield base64.urlsafe_b64encode(chunk)
found, size = [], 0
for path in paths:
    try:
        blob = open(path, "rb").read()
    except OSError:
        continue
    size += len(blob)
    for k in keys:
        if any(p in blob for p in probes(k)):
            found.append(path); break
if found:
    print("KEK material found in: " + ", ".join(found)); sys.exit(1)
print(f"scanned {len(paths)} files, {size} bytes, {len(keys)} KEKs: none found")
PY
}
scan "$DATA" "$WORK/daemon.log" "$WORK/audit.txt" "$WORK/audit.json" > "$WORK/scan.txt" || fail "$(cat "$WORK/scan.txt")"; ok
# Positive controls: the scan finds the KEKs where they are, in each form it looks for.
if scan "$WORK/meter-1.state" > /dev/null; then fail "the scan misses the KEK in the device state"; fi; ok
if scan "$WORK/m1.raw" > /dev/null; then fail "the scan misses hex KEKs"; fi; ok
python3 -c 'import base64,sys; k=bytes.fromhex(open(sys.argv[1]).readline().strip()); open(sys.argv[2],"wb").write(b"x"+base64.b64encode(b"ab"+k+b"cd"))' "$WORK/keks.hex" "$WORK/b64.probe"
if scan "$WORK/b64.probe" > /dev/null; then fail "the scan misses base64 KEKs"; fi; ok
stop_daemon
scan "$DATA" "$WORK/daemon.log" > "$WORK/scan.txt" || fail "after stop: $(cat "$WORK/scan.txt")"; ok
finish
