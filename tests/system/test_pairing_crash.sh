#!/usr/bin/env bash
# Crash test of pairwise KEK distribution (docs/pairing.md): KF_PAIR_CRASH_REQUESTS
# (1,000) pair requests by simulated devices (keyfleet-device, real libkeyfleet-device
# states in files) while keyfleetd is killed with -9 at random moments (50-500 ms
# apart) and restarted. Afterwards, from the server's database (read-only, daemon
# stopped) and from the devices' own states:
#   - no (device, counter) was ever issued twice; each device's counters run 1, 2, 3...
#     with no gap and no repeat in KEK id order (so nothing committed was lost or
#     reissued), and KEK ids are unique and increase with every issuance;
#   - every part a device accepted (the meter's report, the base's log) is on record
#     with the same KEK id and counter: nothing was sent before it was committed;
#   - every pairing reported complete has both acknowledgements recorded as accepted;
#   - the server's counter for each device is >= the device's own, and after one more
#     pairing per pair (which must succeed: convergence) they are equal;
#   - the audit trail verifies;
#   - then (restore phase, KF_PAIR_CRASH_RESTORE=0 to skip) the server is put back to a
#     backup of its database taken mid-run: every pair converges again by resynchronisation
#     although KEK ids are handed out a second time, and each device ends with exactly the
#     KEK of its last pairing.
# Prints how many requests were acknowledged and how many were interrupted.
source "$(dirname "$0")/lib.sh"
REQUESTS=${KF_PAIR_CRASH_REQUESTS:-1000}
PAIRS=${KF_PAIR_CRASH_PAIRS:-4}
DEVICE="$BUILD/keyfleet-device"
[ -x "$DEVICE" ] || fail "$DEVICE missing"
PY=/usr/bin/python3
PORT=$(free_tcp_port)
C="$DATA/certs"
up() { start_daemon --dev --kmip-listen "127.0.0.1:$PORT"; wait_tcp_port "$PORT"; }

up
[ -f "$C/device-cert.pem" ] || fail "no dev device certificate in $C"
declare -a BASE_PID=() BASE_PORT=() LOOPS=()
stop_pids() { for p in "$@"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
stop_bases() { stop_pids "${BASE_PID[@]}"; }
trap 'stop_pids "${LOOPS[@]}"; stop_bases; cleanup' EXIT
start_base() {  # start_base I: base-I serves links on its port, logging to base-I.log
  "$DEVICE" base --state "$WORK/base-$1.state" --listen "127.0.0.1:${BASE_PORT[$1]}" \
    >> "$WORK/base-$1.log" 2>&1 &
  BASE_PID[$1]=$!
  wait_tcp_port "${BASE_PORT[$1]}" "${BASE_PID[$1]}"
}
for i in $(seq 0 $((PAIRS - 1))); do
  for dev in meter base; do
    expect_ok kf device register "$dev-$i" --domain default
    expect_ok kf device export "$dev-$i" -o "$WORK/$dev-$i.pkg"
    expect_ok "$DEVICE" install --state "$WORK/$dev-$i.state" --package "$WORK/$dev-$i.pkg"
    rm -f "$WORK/$dev-$i.pkg"
  done
  BASE_PORT[i]=$(free_tcp_port)
  start_base "$i"
done

meter() {  # meter I [extra args]: one pairing of meter-I with base-I, one JSON line out
  local i=$1; shift
  "$DEVICE" meter --state "$WORK/meter-$i.state" --partner "127.0.0.1:${BASE_PORT[$i]}" \
    --partner-id "base-$i" --server "127.0.0.1:$PORT" --ca "$C/ca-cert.pem" \
    --cert "$C/device-cert.pem" --key "$C/device-key.pem" --timeout 3000 --json "$@"
}
server_up() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# Each pair's requests in its own loop; a request starts only while the server
# accepts connections, so every one of them reaches a live server (it may still die
# during the request: that is the point).
for i in $(seq 0 $((PAIRS - 1))); do
  n=$(( REQUESTS / PAIRS + (i < REQUESTS % PAIRS ? 1 : 0) ))
  (
    for _ in $(seq 1 "$n"); do
      for _ in $(seq 1 400); do server_up && break; sleep 0.025; done
      rc=0
      out=$(meter "$i" --sessions 0 2> /dev/null) || rc=$?
      [ -n "$out" ] || out='{"paired":false,"result":"no output"}'
      echo "$rc $out"
    done > "$WORK/requests-$i.log"
  ) &
  LOOPS+=("$!")
done
kills=0
loops_alive() { for p in "${LOOPS[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
start=$SECONDS
while loops_alive; do
  sleep "0.$(printf '%03d' $(( (RANDOM % 451) + 50 )))"
  loops_alive || break
  kill9_daemon
  kills=$((kills + 1))
  # A backup of the database as the third crash left it (for the restore phase).
  [ "$kills" -ne 3 ] || { mkdir -p "$WORK/backup"; cp "$DATA"/keyfleet.db* "$WORK/backup/"; }
  up
  [ $((SECONDS - start)) -lt 600 ] || fail "the request loops did not finish in 10 minutes"
done
for p in "${LOOPS[@]}"; do wait "$p" || fail "request loop $p failed"; done
[ "$kills" -ge 5 ] || fail "only $kills kills: the load was too short to test anything"
ok

# Where everybody stands after the crashes, before anything else happens.
snapshot() {  # snapshot PREFIX: server's and devices' counters into PREFIX-{server,device}-DEV.json
  for i in $(seq 0 $((PAIRS - 1))); do
    for dev in meter base; do
      expect_ok kf --json device show "$dev-$i"
      cp "$WORK/out" "$WORK/$1-server-$dev-$i.json"
      expect_ok "$DEVICE" show --state "$WORK/$dev-$i.state" --json
      cp "$WORK/out" "$WORK/$1-device-$dev-$i.json"
    done
  done
}
snapshot crashed

# Convergence: one more pairing per pair on a server left alone, with a session key
# exchanged under the new KEK.
for i in $(seq 0 $((PAIRS - 1))); do
  expect_ok meter "$i" --sessions 1
  cp "$WORK/out" "$WORK/final-$i.json"
  grep -q '"result":"ok"' "$WORK/final-$i.json" || fail "final pairing of pair $i: $(cat "$WORK/final-$i.json")"
  ok
done
snapshot final
expect_ok kf audit verify
expect_contains "intact"
stop_daemon
stop_bases

cat > "$WORK/check.py" <<'PY'
import collections, json, re, sqlite3, sys
work, db, pairs, requests, kills = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
rows = con.execute("SELECT kek_id, id_a, id_b, counter_a, counter_b, kek_index, issued_at,"
                   " ack_a_status, ack_b_status FROM pair_kek ORDER BY kek_id").fetchall()
server_counter = dict(con.execute("SELECT id, counter FROM device"))
con.close()
problems = []
def bad(msg):
    problems.append(msg)

# One message = the rows of one issuance (kek_index 0 starts it).
messages = [r for r in rows if r[5] == 0]
ids = [r[0] for r in rows]
if len(ids) != len(set(ids)) or ids != sorted(ids):
    bad("KEK ids repeat or are out of order")
issued_at = [r[6] for r in messages]
if any(b < a for a, b in zip(issued_at, issued_at[1:])):
    bad("a later KEK id was issued earlier than a smaller one")
by_kek = {r[0]: r for r in messages}
seen = collections.Counter()
per_device = collections.defaultdict(list)
for kek_id, a, b, ca, cb, _, _, _, _ in messages:
    for dev, c in ((a, ca), (b, cb)):
        seen[(dev, c)] += 1
        per_device[dev].append(c)
dups = [k for k, n in seen.items() if n > 1]
if dups:
    bad(f"(device, counter) issued twice: {dups[:5]}")
for dev, cs in per_device.items():
    if cs != list(range(1, len(cs) + 1)):
        bad(f"{dev}: counters in KEK id order are not 1..{len(cs)}: {cs[:10]}...")
    if server_counter.get(dev, -1) < max(cs):
        bad(f"{dev}: server counter {server_counter.get(dev)} below issued {max(cs)}")

# What the devices accepted must be on record, with the same counter.
acked = interrupted = other = 0
outcomes = collections.Counter()
accepted_meter = collections.defaultdict(list)
for i in range(pairs):
    for line in open(f"{work}/requests-{i}.log"):
        rc, _, js = line.partition(" ")
        try:
            r = json.loads(js)
        except ValueError:
            r = {"paired": False, "result": "unparsable"}
        outcomes[r.get("result", "?")] += 1
        if r.get("paired") and r.get("result") == "ok":
            acked += 1
        elif r.get("result") in ("KF_ERR_CONNECT", "KF_ERR_IO", "KF_ERR_TIMEOUT", "no output"):
            interrupted += 1
        else:
            other += 1
        if r.get("own") == "accepted" and r.get("kek_id"):
            accepted_meter[f"meter-{i}"].append((r["kek_id"], r["counter"]))
            row = by_kek.get(r["kek_id"])
            if not row or row[1] != f"meter-{i}" or row[3] != r["counter"]:
                bad(f"meter-{i} accepted KEK {r['kek_id']} counter {r['counter']}, server has {row}")
            elif r.get("paired") and (row[7] != 1 or row[8] != 1):
                bad(f"KEK {r['kek_id']} paired but acks recorded as {row[7]}/{row[8]}")
        if r.get("result") in ("KF_ERR_PAIR_STALE", "KF_ERR_PAIR_INTEGRITY",
                               "KF_ERR_PAIR_WRONG_DEVICE", "KF_ERR_ACK_MAC", "KF_ERR_ACK_REPLAY",
                               "KF_ERR_ACK_UNKNOWN"):
            bad(f"pair {i}: protocol refusal after a crash: {js.strip()}")
    kids = [k for k, _ in accepted_meter[f"meter-{i}"]]
    if kids != sorted(set(kids)):
        bad(f"meter-{i} accepted KEK ids not strictly increasing: {kids[:10]}")
    # The base logs "accepted KEK N, acknowledged" for every part it stored.
    base_keks = [int(m) for m in re.findall(r"accepted KEK (\d+)", open(f"{work}/base-{i}.log").read())]
    if base_keks != sorted(set(base_keks)):
        bad(f"base-{i} accepted KEK ids not strictly increasing")
    for k in base_keks:
        if k not in by_kek or by_kek[k][2] != f"base-{i}":
            bad(f"base-{i} accepted KEK {k} which the server has no record of for it")
    # Right after the crashes the server is never behind a device; after the final
    # pairing they agree.
    for dev in (f"meter-{i}", f"base-{i}"):
        s = json.load(open(f"{work}/crashed-server-{dev}.json"))
        d = json.load(open(f"{work}/crashed-device-{dev}.json"))
        if s.get("counter") is None or s["counter"] < d["counter"]:
            bad(f"{dev}: after the crashes the server counter {s.get('counter')} is below the device's {d['counter']}")
        s = json.load(open(f"{work}/final-server-{dev}.json"))
        d = json.load(open(f"{work}/final-device-{dev}.json"))
        sc = s.get("counter")
        if sc is None or sc != d["counter"] or sc != server_counter[dev]:
            bad(f"{dev}: server counter {sc} (db {server_counter[dev]}), device {d['counter']}")
total = acked + interrupted + other
if total != requests:
    bad(f"{total} requests logged, {requests} expected")
if acked < requests // 10:
    bad(f"only {acked} of {requests} requests completed: the test exercised too little")
completed = sum(1 for m in messages if m[7] == 1 and m[8] == 1)
print(f"pair requests: {total}; acknowledged {acked}, interrupted {interrupted}, other {other};"
      f" kills {kills}; issuances committed {len(messages)} (KEK ids {ids[0] if ids else '-'}.."
      f"{ids[-1] if ids else '-'}), of which both acks on record {completed}, never completed"
      f" {len(messages) - completed}; outcomes {dict(outcomes)}")
for p in problems[:20]:
    print("  " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
check() { "$PY" "$WORK/check.py" "$WORK" "$1" "$PAIRS" "$REQUESTS" "$kills"; }
check "$DATA/keyfleet.db" || fail "pairing crash invariants"
ok

# The checks can fail: on copies of the database with one fault each (the store's
# triggers dropped in the copy so the fault can be written), the same checker refuses.
tampered() {  # tampered NAME SQL: a copy of the database with SQL applied
  "$PY" - "$DATA/keyfleet.db" "$WORK/$1.db" "$2" <<'PY'
import sqlite3, sys
src, dst, sql = sys.argv[1:]
s = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
d = sqlite3.connect(dst)
s.backup(d)
s.close()
for (name,) in d.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
    d.execute(f'DROP TRIGGER "{name}"')
d.executescript(sql)
d.commit()
d.close()
PY
}
last_a="(SELECT max(kek_id) FROM pair_kek WHERE kek_index = 0 AND id_a = 'meter-0')"
tampered reissued "UPDATE pair_kek SET counter_a = counter_a - 1 WHERE kek_id = $last_a;"
tampered lost "DELETE FROM pair_kek WHERE kek_id = $last_a;"
tampered behind "UPDATE device SET counter = counter - 1 WHERE id = 'base-0';"
for t in reissued lost behind; do
  if check "$WORK/$t.db" > "$WORK/$t.out" 2>&1; then fail "the checker passed a database with a $t counter"; fi
  ok
done

# Restore phase (on by default; KF_PAIR_CRASH_RESTORE=0 skips it): the server goes back to
# the backup taken at the third crash, so every device is AHEAD of it (docs/pairing.md: "a
# server restored from a backup"), and its KEK id mark went back with it: it hands out KEK
# ids at or below the ones the devices hold. Each pair must then converge through
# resynchronisation: the first request after the restore is answered stale by the devices,
# their acks move the server's counters forward, the retry succeeds and a session key is
# exchanged; a second pairing succeeds too. The devices store each new message's KEKs in
# place of every KEK they held for the partner (a KEK is (partner, id) on a device), so their
# states stay loadable with one KEK per partner, and the server's counters equal the
# devices' again.
if [ "${KF_PAIR_CRASH_RESTORE:-1}" = 1 ]; then
  [ -d "$WORK/backup" ] || fail "no backup was taken"
  rm -f "$DATA"/keyfleet.db*
  cp "$WORK/backup"/keyfleet.db* "$DATA/"
  up
  for i in $(seq 0 $((PAIRS - 1))); do start_base "$i"; done
  for i in $(seq 0 $((PAIRS - 1))); do
    for round in 1 2; do
      expect_ok meter "$i" --sessions 1
      grep -q '"result":"ok"' "$WORK/out" || fail "pairing $round of pair $i after the restore: $(cat "$WORK/out")"
      ok
      cp "$WORK/out" "$WORK/restored-$i-$round.json"
    done
  done
  snapshot restored
  # Each device holds exactly the KEK of its last pairing (the one the session key used).
  for i in $(seq 0 $((PAIRS - 1))); do
    for dev in meter base; do
      "$PY" - "$WORK/restored-$i-2.json" "$WORK/restored-device-$dev-$i.json" <<'PY' ||
import json, sys
r, d = (json.load(open(f)) for f in sys.argv[1:])
assert [k["kek_id"] for k in d["keks"]] == [r["kek_id"]] == r["keks_used"], (r, d["keks"])
PY
        fail "$dev-$i after the restore: not exactly the last pairing's KEK"
      ok
    done
  done
  for i in $(seq 0 $((PAIRS - 1))); do
    for dev in meter base; do
      "$PY" - "$WORK/restored-server-$dev-$i.json" "$WORK/restored-device-$dev-$i.json" <<'PY' ||
import json, sys
s, d = (json.load(open(f)) for f in sys.argv[1:])
sys.exit(0 if s["counter"] == d["counter"] else 1)
PY
        fail "$dev-$i: server and device counters differ after the restore"
      ok
    done
  done
  stop_daemon
  echo "restore phase: every pair converged through resynchronisation"
fi
finish
