#!/usr/bin/env bash
# Crash test: ROUNDS times, start keyfleetd, stream key creations at it and
# kill -9 it at a random moment. Afterwards every acknowledged key must be
# present and unwrap, key IDs must be strictly increasing with no reuse, new
# IDs must continue above every ID ever seen, and the audit trail must verify.
source "$(dirname "$0")/lib.sh"
ROUNDS=${KF_CRASH_ROUNDS:-100}
LOAD="$BUILD/kf-load"
start_daemon --dev
expect_ok kf domain create CRASH
stop_daemon
: > "$WORK/acked"
for round in $(seq 1 "$ROUNDS"); do
  start_daemon --dev
  "$LOAD" --socket "$DATA/keyfleetd.sock" --domain CRASH --count 100000 >> "$WORK/acked" 2> /dev/null &
  LPID=$!
  # A random moment between 5 and 250 ms into the stream.
  sleep "0.$(printf '%03d' $(( (RANDOM % 246) + 5 )))"
  kill9_daemon
  wait $LPID 2>/dev/null || true
done
acked=$(wc -l < "$WORK/acked")
[ "$acked" -gt "$ROUNDS" ] || fail "too few acknowledged creations ($acked)"
ok
# Acknowledged IDs strictly increase: no ID was ever handed out twice.
python3 - "$WORK/acked" <<'PY' || fail "acknowledged ids not strictly increasing"
import sys
ids = [int(l.strip().split("/")[1]) for l in open(sys.argv[1]) if l.strip()]
bad = [(a, b) for a, b in zip(ids, ids[1:]) if b <= a]
assert not bad, f"ids went backwards or repeated: {bad[:5]}"
PY
ok
start_daemon --dev
kf --json key list --domain CRASH --limit 500 > /dev/null || fail "list"
# Every acknowledged key is present and unwraps (export decrypts it).
python3 - "$WORK/acked" "$KEYFLEET" "$DATA" <<'PY' || fail "acknowledged key missing or does not unwrap"
import json, subprocess, sys
acked, cli, data = sys.argv[1], sys.argv[2], sys.argv[3]
uids = [l.strip() for l in open(acked) if l.strip()]
present = {}
offset = 0
while True:
    out = subprocess.run([cli, "--dir", data, "--json", "key", "list", "--domain", "CRASH",
                          "--offset", str(offset), "--limit", "500"],
                         check=True, capture_output=True, text=True).stdout
    page = json.loads(out)
    if not page:
        break
    for o in page:
        present[o["uid"]] = o
    offset += len(page)
missing = [u for u in uids if u not in present]
assert not missing, f"{len(missing)} acknowledged keys missing, e.g. {missing[:3]}"
ids = sorted(o["key_id"] for o in present.values())
assert len(ids) == len(set(ids)), "duplicate key ids in the store"
# Unwrap every acknowledged key (a sample of 300 if there are more).
step = max(1, len(uids) // 300)
for u in uids[::step]:
    r = subprocess.run([cli, "--dir", data, "--json", "key", "show", u, "--export"],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"{u}: {r.stderr}"
    assert len(json.loads(r.stdout)["key_material"]) == 64
print(f"{len(uids)} acknowledged, {len(present)} stored, {len(uids[::step])} unwrapped")
PY
ok
# New keys continue above every id ever seen.
last=$(tail -1 "$WORK/acked" | cut -d/ -f2)
max_stored=$(kf --json domain list | python3 -c 'import json,sys; print([d for d in json.load(sys.stdin) if d["name"]=="CRASH"][0]["last_key_id"])')
new=$(kf key create --domain CRASH | cut -d/ -f2)
[ "$new" -gt "$last" ] && [ "$new" -gt "$max_stored" ] || fail "new id $new not above $last / $max_stored"
ok
expect_ok kf audit verify; expect_contains "intact"
stop_daemon
echo "crash rounds: $ROUNDS, acknowledged creations: $acked"
finish
