#!/usr/bin/env bash
# Memory scan of the split endpoint's processes (docs/tls-split.md, "who holds which
# secret"). While a peer holds a connection open, every readable mapping of the
# process that does the record protection is read through /proc/PID/mem and searched:
#  - positive control: the current traffic keys, derived from the peer's
#    SSLKEYLOGFILE (HKDF-Expand-Label(secret, "key")) -- they must be found;
#  - none of: the server's private key, any traffic secret, handshake secret,
#    exporter secret or TLS 1.2 master secret from the peer's key log, the
#    session-ticket key (revealed by the handler through a hook compiled only into
#    -DKF_TEST_HOOKS=ON builds), and the peer's saved session state (ticket and
#    resumption master secret: every high-entropy 32-byte window of it).
# Scanned: a confined kf-tls-echo worker process (TLS 1.3 and 1.2), the keyfleetd
# host in --tls-mode split (TLS 1.3), and -- with the server key in SoftHSM2 --
# the session handler, which must hold no private-key bytes either.
# Without KF_TEST_HOOKS the ticket key cannot be revealed: the script says SKIP.
source "$(dirname "$0")/lib.sh"
stop_extra_on_exit
[ "$(id -u)" = 0 ] || { echo "SKIP: reading other processes' memory needs root"; exit 0; }
ECHO="$BUILD/kf-tls-echo"
LOAD="$BUILD/kf-tls-load"
TTLV="$BUILD/kf-ttlv"
for b in "$ECHO" "$LOAD" "$TTLV"; do [ -x "$b" ] || fail "$b is not built"; done
PY=/usr/bin/python3

scan_script <<'PY'
# scan.py PID KEYLOG [--stek FILE] [--key PEM] [--session FILE] [--peer PID] [--no-positive]
# Exit 0 when the traffic key is found (unless --no-positive) and nothing else is.
# --peer: the peer holding the connection must still be there once the memory is read.
import sys
from memscan import alive, memory, needles_of, present, secrets_of

args = sys.argv[1:]
pid, keylog = args[0], args[1]
opt = {args[i]: args[i + 1] for i in range(2, len(args) - 1) if args[i].startswith("--") and args[i] != "--no-positive"}
positive = "--no-positive" not in args
mem = memory(pid)
if "--peer" in opt and not alive(opt["--peer"]):
    print("FAIL: the peer was gone before the memory was read: hold the connection longer")
    sys.exit(1)
secrets, traffic = secrets_of(keylog, opt)
needles = needles_of(secrets)
found = present(mem, [w for ws in needles.values() for w in ws])
bad = 0
for label, values in sorted(secrets.items()):
    hits = sum(w in found for w in needles[label])
    print(f"{'FOUND' if hits else 'absent'}: {label} ({len(values)} value(s))")
    bad += hits > 0
if positive:
    found = sum(1 for k in traffic if k in mem)
    print(f"positive control: {found} of {len(traffic)} traffic keys found in {len(mem) >> 20} MiB")
    if found == 0:
        print("FAIL: the traffic key is not in this process: the scan would find nothing")
        sys.exit(1)
sys.exit(1 if bad else 0)
PY

# The peer's hold has a fixed length (kf-tls-load cannot be told to end it);
# scan.py only needs it while it reads the memory (a fraction of a second) and
# fails, rather than scanning a closed connection, if the peer is gone by then.
HOLD=${KF_MEMSCAN_HOLD_SECONDS:-3}
declare -A PEER
# hold NAME PORT CERTS PRIORITY: a peer connects, makes one exchange and holds the
# connection for $HOLD seconds; returns once it holds.
hold() {
  local name=$1 port=$2 certs=$3 prio=$4
  rm -f "$WORK/$name.keylog"
  SSLKEYLOGFILE="$WORK/$name.keylog" "$LOAD" --server "127.0.0.1:$port" --certs "$certs" --op hold \
    --seconds "$HOLD" --priority "$prio" --session-out "$WORK/$name.session" ${REQUEST:+--request "$REQUEST"} \
    > "$WORK/$name.hold" 2>&1 &
  PEER[$name]=$!
  EXTRA_PIDS+=($!)
  for _ in $(seq 1 500); do
    grep -q held "$WORK/$name.hold" 2> /dev/null && break
    kill -0 "${PEER[$name]}" 2> /dev/null || break
    sleep 0.02
  done
  grep -q held "$WORK/$name.hold" || fail "$name: the peer did not connect: $(cat "$WORK/$name.hold")"
  [ -s "$WORK/$name.keylog" ] || fail "$name: no SSLKEYLOGFILE from the peer"
}
# scan NAME PID [scan options]: scan.py on PID while NAME's peer holds its connection.
scan() {
  "$PY" "$WORK/scan.py" "$2" "$WORK/$1.keylog" --session "$WORK/$1.session" --peer "${PEER[$1]}" "${@:3}" \
    > "$WORK/$1.scan" 2>&1
}
# scanned NAME STATUS: the verdict of NAME's scan; then the peer's exchange after
# the hold must have worked.
scanned() {
  [ "$2" = 0 ] || fail "$1: $(cat "$WORK/$1.scan")"
  sed "s/^/  $1: /" "$WORK/$1.scan"
  wait "${PEER[$1]}" || fail "$1: the held connection did not survive the scan"
  ok
}
# hold_and_scan NAME PID PORT CERTS PRIORITY [scan options]: a peer holds one
# connection open while PID is scanned.
hold_and_scan() {
  local name=$1 pid=$2 rc=0
  hold "$name" "$3" "$4" "$5"
  scan "$name" "$pid" "${@:6}" || rc=$?
  scanned "$name" "$rc"
}

# ---- kf-tls-echo: a confined worker process ----
EC="$WORK/echo-certs"
# First start makes the certificates; the scanned run only reads their paths.
# (one worker: with two, kf-tls-echo takes 3 s to stop -- the second worker holds
# the first one's dispatch socket, so the first never sees its end)
"$ECHO" --mode split --workers 1 --certs "$EC" > "$WORK/echo0.out" 2>&1 &
P0=$!
for _ in $(seq 1 500); do grep -q ready "$WORK/echo0.out" && break; kill -0 "$P0" 2> /dev/null || break; sleep 0.02; done
kill "$P0" 2> /dev/null || true; wait "$P0" || true
[ -f "$EC/server-key.pem" ] || fail "no dev certificates"
KF_TEST_REVEAL_FILE="$WORK/reveal" "$ECHO" --mode split --workers 1 --test-reveal --certs "$EC" \
  > "$WORK/echo.out" 2> "$WORK/echo.err" &
EPID=$!
EXTRA_PIDS+=("$EPID")
for _ in $(seq 1 100); do grep -q ready "$WORK/echo.out" 2> /dev/null && break; sleep 0.05; done
EPORT=$(sed -n 's/ready port=\([0-9]*\).*/\1/p' "$WORK/echo.out")
WPID=$(sed -n 's/.*workers=\([0-9]*\).*/\1/p' "$WORK/echo.out")
HPID=$(sed -n 's/.*handler=\([0-9]*\).*/\1/p' "$WORK/echo.out")
[ -n "$EPORT" ] && [ -n "$WPID" ] || fail "kf-tls-echo did not start: $(cat "$WORK/echo.err")"
# (a build without the hooks says so in the handler's log: no need to wait then)
for _ in $(seq 1 100); do
  [ -s "$WORK/reveal" ] && break
  grep -q "no test hooks" "$WORK/echo.err" && break
  sleep 0.02
done
if [ ! -s "$WORK/reveal" ]; then
  kill "$EPID"; wait "$EPID" || true
  echo "SKIP: $(basename "$0"): build without -DKF_TEST_HOOKS=ON (the handler cannot reveal its ticket key)"
  exit 0
fi
# Both versions' peers hold a connection to the one worker at the same time;
# the worker and (control for the control: it does hold the ticket key and the
# private key) the handler are scanned side by side.
hold worker-tls13 "$EPORT" "$EC" "NORMAL:-VERS-ALL:+VERS-TLS1.3"
hold worker-tls12 "$EPORT" "$EC" "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM"
scan worker-tls13 "$WPID" --stek "$WORK/reveal" --key "$EC/server-key.pem" &
S13=$!
"$PY" "$WORK/scan.py" "$HPID" /dev/null --stek "$WORK/reveal" --key "$EC/server-key.pem" \
  --no-positive > "$WORK/handler.scan" 2>&1 &
SH=$!
rc12=0; scan worker-tls12 "$WPID" --stek "$WORK/reveal" --key "$EC/server-key.pem" --no-positive || rc12=$?
rc13=0; wait "$S13" || rc13=$?
scanned worker-tls13 "$rc13"
scanned worker-tls12 "$rc12"
wait "$SH" && fail "the scan finds nothing even in the handler"
grep -q "FOUND: session-ticket key" "$WORK/handler.scan" || fail "ticket key not found in the handler"
grep -q "FOUND: server private key" "$WORK/handler.scan" || fail "private key not found in the handler"
ok
kill "$EPID"; wait "$EPID" || true

# ---- keyfleetd --tls-mode split: the host process (workers are its threads) ----
kmip_requests
REQUEST=$DISCOVER
start_daemon --dev --kmip-listen 127.0.0.1:0   # the first start makes the dev certificates
stop_daemon
start_daemon --dev --tls-mode split --split-workers threads --kmip-listen 127.0.0.1:0
PORT=$(tls_port)
hold_and_scan keyfleetd "$DAEMON_PID" "$PORT" "$DATA/certs" "NORMAL:-VERS-ALL:+VERS-TLS1.3" \
  --key "$DATA/certs/server-key.pem"
stop_daemon

# ---- the server key in SoftHSM2: not in the handler, not in keyfleetd ----
SOFTHSM=/usr/lib/softhsm/libsofthsm2.so
if [ -f "$SOFTHSM" ] && command -v p11tool > /dev/null; then
  CERTS="$DATA/certs"
  eval "$(bash "$(dirname "$0")/softhsm-setup.sh" "$WORK/hsm" split-tls)"
  printf '1234\n' > "$WORK/pin"; chmod 600 "$WORK/pin"
  GNUTLS_PIN=1234 p11tool --provider "$SOFTHSM" --login --write --load-privkey "$CERTS/server-key.pem" \
    --label kmip-server --mark-private --mark-sign "pkcs11:token=split-tls" > /dev/null 2>&1 || fail "p11tool import"
  start_daemon --dev --tls-mode split --split-workers threads --kmip-listen 127.0.0.1:0 --kmip-cert "$CERTS/server-cert.pem" \
    --kmip-key "pkcs11:token=split-tls;object=kmip-server;type=private" \
    --kmip-pkcs11-module "$SOFTHSM" --kmip-pin-file "$WORK/pin"
  PORT=$(tls_port)
  HPID=$(ps --ppid "$DAEMON_PID" -o pid=,args= | awk '/--tls-session-handler/ {print $1}' | head -1)
  [ -n "$HPID" ] || fail "no session handler"
  hold hsm-host "$PORT" "$CERTS" "NORMAL:-VERS-ALL:+VERS-TLS1.3"
  # The handler signed with the token's key (the handshake succeeded), yet holds none
  # of it: scanned alongside keyfleetd.
  "$PY" "$WORK/scan.py" "$HPID" /dev/null --key "$CERTS/server-key.pem" --no-positive \
    > "$WORK/hsm-handler.scan" 2>&1 &
  SH=$!
  rc=0; scan hsm-host "$DAEMON_PID" --key "$CERTS/server-key.pem" || rc=$?
  scanned hsm-host "$rc"
  wait "$SH" || fail "handler with a SoftHSM2 key: $(cat "$WORK/hsm-handler.scan")"
  grep -q "absent: server private key" "$WORK/hsm-handler.scan" || fail "handler scan incomplete"
  sed "s/^/  hsm-handler: /" "$WORK/hsm-handler.scan" | grep "private key"
  ok
  stop_daemon
else
  echo "$(basename "$0"): SoftHSM2 or p11tool missing, the handler's PKCS#11 case not scanned" >&2
fi
finish
