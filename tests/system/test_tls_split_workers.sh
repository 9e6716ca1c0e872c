#!/usr/bin/env bash
# KMIP through confined worker processes: keyfleetd --tls-mode split
# --split-workers processes (docs/tls-split.md, "Application channel").
#
#  - test_conformance.sh and test_pykmip.sh run unchanged against a keyfleetd
#    that always starts so (in the background; checked at the end);
#  - the workers are children of keyfleetd exec'd with --tls-split-worker, run as
#    nobody (when started as root), are not dumpable, have seccomp mode 2 and no
#    new privileges; KMIP calls work through them ('user' may not Create);
#  - memory scan (method of test_tls_split_memscan.sh) of the worker holding a
#    TLS 1.3 connection: its traffic keys are there (positive control); the
#    server's private key, every secret in the peer's key log (handshake and
#    application traffic secrets, exporter secret), the session-ticket key
#    (-DKF_TEST_HOOKS=ON builds) and the peer's saved session state are not;
#    and keyfleetd itself holds neither the traffic keys nor any of those (control:
#    the handler's memory does hold the private key and the ticket key);
#  - killing one worker mid-connection ends that worker's connection only; the
#    other worker's held connection keeps working, keyfleetd keeps serving
#    KMIP and starts a replacement; killing every worker at once is survived too;
#  - the session handler killed: a new handler and new workers serve new
#    connections, an old worker finishes the connection it holds, then exits;
#    no worker outlives keyfleetd.
# Root is needed for the user, dumpable and memory checks (else those say SKIP).
source "$(dirname "$0")/lib.sh"
stop_extra_on_exit
TTLV="$BUILD/kf-ttlv"
LOAD="$BUILD/kf-tls-load"
for b in "$TTLV" "$LOAD" "$KEYFLEETD" "$KEYFLEET"; do [ -x "$b" ] || fail "$b is not built"; done
PY=/usr/bin/python3
ROOT=false; [ "$(id -u)" = 0 ] && ROOT=true

# ---- the conformance runner and PyKMIP through worker processes ----
start_split_interop --tls-mode split --split-workers processes

# ---- a request for held connections ----
kmip_requests
REQUEST=$DISCOVER

# ---- keyfleetd with worker processes ----
start_daemon --dev --kmip-listen 127.0.0.1:0   # the first start makes the dev certificates
stop_daemon
# refusals: an unknown kind; more connections than a worker can number (16-bit slots)
expect_refusal "split-workers is processes or threads" "$KEYFLEETD" --dir "$DATA" --dev \
  --tls-mode split --split-workers forks
expect_refusal "cannot start the KMIP TLS listener" "$KEYFLEETD" --dir "$DATA" --dev \
  --kmip-listen 127.0.0.1:0 --tls-mode split --split-workers processes --kmip-max-connections 70000
export KF_TEST_REVEAL_FILE="$WORK/reveal"      # the handler reveals its ticket key (test builds)
start_daemon --dev --tls-mode split --split-workers processes --kmip-listen 127.0.0.1:0
unset KF_TEST_REVEAL_FILE
PORT=$(tls_port)
[ -n "$PORT" ] || fail "no TLS port in the log"
grep -q "confined worker processes" "$WORK/daemon.log" || fail "not in worker-process mode"; ok
CERTS="$DATA/certs"
workers() { ps --ppid "$DAEMON_PID" -o pid=,args= | awk '/--tls-split-worker/ {print $1}'; }
NWORKERS=$(sed -n 's/.* in \([0-9]*\) confined worker processes.*/\1/p' "$WORK/daemon.log" | tail -1)
for _ in $(seq 1 100); do  # a worker forked but not yet exec'd shows keyfleetd's own arguments
  mapfile -t W < <(workers); [ "${#W[@]}" = "$NWORKERS" ] && break; sleep 0.05
done
[ "${#W[@]}" = "$NWORKERS" ] && [ "$NWORKERS" -ge 2 ] \
  || fail "expected $NWORKERS (>= 2) worker processes, found ${#W[@]}: $(ps --ppid "$DAEMON_PID" -o pid=,args=)"
ok

# status PID FIELD: a field of /proc/PID/status.
status() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
for w in "${W[@]}"; do
  [ "$(status "$w" Seccomp)" = 2 ] || fail "worker $w: seccomp mode $(status "$w" Seccomp), not 2"
  [ "$(status "$w" NoNewPrivs)" = 1 ] || fail "worker $w may gain privileges"
  if $ROOT; then
    [ "$(status "$w" Uid)" = 65534 ] || fail "worker $w runs as uid $(status "$w" Uid), not nobody"
    # Not dumpable: its /proc files belong to root although it runs as nobody.
    [ "$(stat -c %u "/proc/$w/mem")" = 0 ] || fail "worker $w is dumpable"
  fi
  ok
done
$ROOT || echo "SKIP: not root: the workers keep the user; nobody / not-dumpable not checked"

# ---- KMIP through the workers ----
kfr() { # kfr CERTNAME ARGS...: the CLI in remote mode
  local who=$1; shift
  "$KEYFLEET" --server "127.0.0.1:$PORT" --ca "$CERTS/ca-cert.pem" --cert "$CERTS/$who-cert.pem" \
    --key "$CERTS/$who-key.pem" "$@"
}
expect_ok kfr admin key create --domain default --name via-worker --alg aes --length 256
expect_ok kfr admin key list --domain default; expect_contains via-worker
expect_ok kfr admin key show default/1; expect_contains via-worker
if kfr user key create --domain default --name nope --alg aes --length 128 > "$WORK/out" 2> "$WORK/err"; then
  fail "'user' may not Create"
fi
ok

# ---- memory: the worker holds traffic keys and nothing else of TLS ----
scan_script <<'PY'
# scan.py PID KEYLOG [--stek FILE] [--key PEM] [--session FILE] [--peer PID] [--absent-traffic | --control]
# Reads every readable mapping of PID. Exit 0 when the TLS 1.3 traffic keys derived
# from KEYLOG are there (--absent-traffic: are not) and no other secret is;
# --control: when the private key and the ticket key are there.
import sys
from memscan import alive, memory, needles_of, present, secrets_of

args = sys.argv[1:]
pid, keylog = args[0], args[1]
opt = {args[i]: args[i + 1] for i in range(2, len(args) - 1) if args[i] in ("--stek", "--key", "--session", "--peer")}
mem = memory(pid, skip_huge=True)
if "--peer" in opt:  # the peer holding the connection must still be there once the memory is read
    if not alive(opt["--peer"]):
        sys.exit("FAIL: the peer was gone before the memory was read: hold longer (KF_MEMSCAN_HOLD_SECONDS)")
secrets, traffic = secrets_of(keylog, opt)
needles = needles_of(secrets)
found = present(mem, [w for ws in needles.values() for w in ws] + traffic)
bad = 0
for label in sorted(secrets):
    hits = sum(w in found for w in needles[label])
    print(f"{'FOUND' if hits else 'absent'}: {label} ({len(secrets[label])} value(s))")
    bad += hits > 0
got = sum(k in found for k in traffic)
print(f"traffic keys: {got} of {len(traffic)} found in {len(mem) >> 20} MiB")
if "--control" in args:  # the process that must hold them: the needles are right
    sys.exit(0 if all(any(w in found for w in needles[l]) for l in ("server private key", "session-ticket key")
                      if l in needles) else 1)
if not traffic:
    bad += 1
elif "--absent-traffic" in args:
    bad += got > 0
elif got == 0:
    print("FAIL: no traffic key in this process: the scan would find nothing")
    bad += 1
sys.exit(1 if bad else 0)
PY
# peer_worker HOLDPID: the worker process holding the connection of kf-tls-load HOLDPID.
peer_worker() {
  local cport
  cport=$(ss -tnpH state established "( dport = :$PORT )" | awk -v p="pid=$1," 'index($0, p) {split($3, a, ":"); print a[2]}' | head -1)
  [ -n "$cport" ] || return 1
  local w
  for w in $(workers); do
    ss -tnpH state established "( sport = :$PORT and dport = :$cport )" | grep -q "pid=$w," && { echo "$w"; return 0; }
  done
  return 1
}
# hold NAME SECONDS [PRIORITY]: a peer connects, gets one answer, holds the connection,
# then makes one more exchange (its exit status says whether that worked).
hold() {
  rm -f "$WORK/$1.keylog"
  SSLKEYLOGFILE="$WORK/$1.keylog" "$LOAD" --server "127.0.0.1:$PORT" --certs "$CERTS" --op hold \
    --seconds "$2" --priority "${3:-NORMAL:-VERS-ALL:+VERS-TLS1.3}" --session-out "$WORK/$1.session" \
    --request "$REQUEST" > "$WORK/$1.hold" 2>&1 &
  HOLD_PID=$!
  EXTRA_PIDS+=($!)
  for _ in $(seq 1 500); do
    grep -q held "$WORK/$1.hold" 2> /dev/null && return 0
    kill -0 "$HOLD_PID" 2> /dev/null || break
    sleep 0.02
  done
  fail "$1: the peer did not connect: $(cat "$WORK/$1.hold")"
}
if $ROOT; then
  hold scan "${KF_MEMSCAN_HOLD_SECONDS:-6}"
  SPID=$HOLD_PID
  SW=$(peer_worker "$SPID") || fail "no worker holds the scanned connection"
  for _ in $(seq 1 100); do [ -s "$WORK/reveal" ] && break; grep -q "no test hooks" "$WORK/daemon.log" && break; sleep 0.02; done
  STEK=(); [ -s "$WORK/reveal" ] && STEK=(--stek "$WORK/reveal")
  [ -s "$WORK/reveal" ] || echo "SKIP (ticket key): build without -DKF_TEST_HOOKS=ON"
  # The worker, keyfleetd and (control: it holds the private key, a file in dev mode,
  # and the ticket key) the handler, side by side while the peer holds on.
  HPID=$(ps --ppid "$DAEMON_PID" -o pid=,args= | awk '/--tls-session-handler/ {print $1}' | head -1)
  "$PY" "$WORK/scan.py" "$HPID" /dev/null --key "$CERTS/server-key.pem" "${STEK[@]}" --control \
    > "$WORK/handler.scan" 2>&1 &
  SH=$!
  "$PY" "$WORK/scan.py" "$DAEMON_PID" "$WORK/scan.keylog" --key "$CERTS/server-key.pem" --peer "$SPID" \
    --session "$WORK/scan.session" "${STEK[@]}" --absent-traffic > "$WORK/host.scan" 2>&1 &
  SK=$!
  rc=0
  "$PY" "$WORK/scan.py" "$SW" "$WORK/scan.keylog" --key "$CERTS/server-key.pem" --peer "$SPID" \
    --session "$WORK/scan.session" "${STEK[@]}" > "$WORK/worker.scan" 2>&1 || rc=$?
  rch=0; wait "$SK" || rch=$?
  wait "$SH" || fail "the scan finds nothing even in the handler: $(cat "$WORK/handler.scan")"
  [ "$rc" = 0 ] || fail "worker $SW: $(cat "$WORK/worker.scan")"
  sed 's/^/  worker: /' "$WORK/worker.scan"
  [ "$rch" = 0 ] || fail "keyfleetd: $(cat "$WORK/host.scan")"
  sed 's/^/  keyfleetd: /' "$WORK/host.scan"
  wait "$SPID" || fail "the scanned connection did not survive the scan"
  ok
else
  echo "SKIP: reading other processes' memory needs root"
fi

# ---- one worker killed mid-connection: its connection ends, the other's goes on ----
hold a 3
HA=$HOLD_PID
WA=$(peer_worker "$HA") || fail "no worker holds connection a"
hold b 3
HB=$HOLD_PID
WB=$(peer_worker "$HB") || fail "no worker holds connection b"
[ "$WA" != "$WB" ] || fail "both connections went to worker $WA (the least busy should take the second)"
kill -9 "$WA"
# keyfleetd keeps serving KMIP at once (the other worker, or a new one)
expect_ok kfr admin key create --domain default --name after-kill --alg aes --length 128
expect_ok kfr admin key list --domain default; expect_contains after-kill
if wait "$HA"; then fail "the killed worker's connection should have ended"; fi
ok
wait "$HB" || fail "the other worker's connection broke: $(cat "$WORK/b.hold")"
ok
kill -0 "$DAEMON_PID" || fail "keyfleetd died with its worker"
grep -q "KMIP worker process $WA is gone" "$WORK/daemon.log" || fail "keyfleetd did not notice worker $WA"
for _ in $(seq 1 100); do [ "$(workers | wc -l)" = "$NWORKERS" ] && break; sleep 0.05; done
[ "$(workers | wc -l)" = "$NWORKERS" ] || fail "no replacement worker: $(workers | tr '\n' ' ')"
workers | grep -qx "$WA" && fail "worker $WA is still listed"
ok

# ---- every worker killed at once ----
for w in $(workers); do kill -9 "$w"; done
for _ in $(seq 1 100); do
  kfr admin key list --domain default > "$WORK/out" 2> "$WORK/err" && break
  sleep 0.05
done
expect_ok kfr admin key list --domain default; expect_contains after-kill
# the replacements come as keyfleetd reaps each killed worker: wait for all of them (up to 10 s)
for _ in $(seq 1 200); do [ "$(workers | wc -l)" = "$NWORKERS" ] && break; sleep 0.05; done
[ "$(workers | wc -l)" = "$NWORKERS" ] || fail "workers not replaced: $(workers | tr '\n' ' ')"
ok
# ---- the handler killed: new handler, new workers; the old workers finish what they hold ----
hold c 3
HC=$HOLD_PID
WC=$(peer_worker "$HC") || fail "no worker holds connection c"
HPID=$(ps --ppid "$DAEMON_PID" -o pid=,args= | awk '/--tls-session-handler/ {print $1}' | head -1)
kill -9 "$HPID"
for _ in $(seq 1 100); do
  NEWH=$(ps --ppid "$DAEMON_PID" -o pid=,args= | awk '/--tls-session-handler/ {print $1}' | head -1)
  [ -n "$NEWH" ] && [ "$NEWH" != "$HPID" ] && [ "$(workers | grep -vcx "$WC")" = "$NWORKERS" ] && break
  sleep 0.05
done
[ "$(workers | grep -vcx "$WC")" = "$NWORKERS" ] || fail "no new workers after the handler's restart"
expect_ok kfr admin key list --domain default; expect_contains after-kill
wait "$HC" || fail "the held connection did not outlive its handler: $(cat "$WORK/c.hold")"
for _ in $(seq 1 100); do workers | grep -qx "$WC" || break; sleep 0.05; done
workers | grep -qx "$WC" && fail "retired worker $WC did not end with its last connection"
ok

mapfile -t W < <(workers)
stop_daemon
# ...and no worker outlives keyfleetd
for w in "${W[@]}"; do
  for _ in $(seq 1 80); do kill -0 "$w" 2> /dev/null || break; sleep 0.05; done
  kill -0 "$w" 2> /dev/null && fail "worker $w outlived keyfleetd"
done
ok

# ---- the conformance runner and PyKMIP through worker processes ----
for t in "${INTEROP[@]}"; do
  wait "${INTEROP_PID[$t]}" || fail "$t through worker processes: $(tail -5 "$WORK/$t.out")"
  grep -E "checks passed|passed" "$WORK/$t.out" | tail -1 | sed "s/^/  $t: /"
  ok
done
finish
