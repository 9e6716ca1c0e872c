#!/usr/bin/env bash
# The split TLS endpoint's client side (claim 17; docs/tls-split.md, "Client side"),
# driven by bench/kf-split-client, which execs itself as its client session handler
# exactly as keyfleet and keyfleet-device do with --tls-split:
#  - keyfleetd in --tls-mode split and monolithic: TLS 1.3, 1.2 (AES-GCM, ChaCha20)
#    handshakes with the admin certificate accepted by the identity map, KMIP Query,
#    Create, Get; resumption on the second connection through the same handler;
#    KeyUpdate from the client (with and without asking for the server's);
#    refusals (the user certificate may not Create, foreign CA, wrong server name);
#  - servers nobody here wrote: gnutls-serv --echo and openssl s_server -rev, TLS 1.3
#    and 1.2, with resumption and KeyUpdate; openssl s_server's own KeyUpdate
#    (asking for ours: its -msg trace shows ours arrive);
#  - root only: the client process's memory holds the traffic keys (positive control
#    from keyfleetd's SSLKEYLOGFILE) but not the client's private key, any secret in
#    that key log, or the handler's kept session (ticket and resumption secret,
#    revealed by -DKF_TEST_HOOKS=ON builds); the handler holds them (the scan can
#    fail); the handler is not dumpable (run as nobody: its /proc files are root's);
#    with the client key in SoftHSM2 not even the handler holds its bytes.
source "$(dirname "$0")/lib.sh"
stop_extra_on_exit
CLIENT="$BUILD/kf-split-client"
[ -x "$CLIENT" ] || fail "$CLIENT is not built"
PY=/usr/bin/python3
PRIO13="NORMAL:-VERS-ALL:+VERS-TLS1.3"
PRIO12="NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM"
PRIO12C="NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+CHACHA20-POLY1305"

start_daemon --dev --kmip-listen 127.0.0.1:0 # the first start makes the dev certificates
stop_daemon
C="$DATA/certs"
# cl PORT ARGS...: the split client with the dev admin certificate.
cl() {
  local port=$1; shift
  "$CLIENT" --server "127.0.0.1:$port" --ca "$C/ca-cert.pem" --cert "$C/admin-cert.pem" \
    --key "$C/admin-key.pem" --timeout 10000 "$@"
}
# out_has LINE...: each line must be in the last command's output.
out_has() { for l in "$@"; do grep -qx -- "$l" "$WORK/out" || fail "output lacks '$l': $(cat "$WORK/out")"; done; ok; }
version_of() { case $1 in "$PRIO13") echo TLS1.3 ;; *) echo TLS1.2 ;; esac; }

# ---- keyfleetd, both endpoint modes ----
# kmip_runs MODE PORT RESUMES: the second connection resumes (1) or cannot (0: the
# monolithic endpoint keeps no ticket key across sessions).
kmip_runs() {
  local mode=$1 port=$2 resumes=$3
  for prio in "$PRIO13" "$PRIO12" "$PRIO12C"; do
    local v; v=$(version_of "$prio")
    expect_ok cl "$port" --priority "$prio" --connections 2 query create get ku-ask get ku query
    out_has "connection 1 version=$v resumed=0" "connection 2 version=$v resumed=$resumes" \
      "ku-ask ok" "ku ok"
    [ "$(grep -c '^get ok uid=default/[0-9]* key_bytes=32$' "$WORK/out")" = 4 ] || fail "$mode $v: Get"
    [ "$(grep -c '^query ok operations=' "$WORK/out")" = 4 ] || fail "$mode $v: Query"
    ok
  done
  # The identity map sees the client certificate: 'user' may not Create.
  expect_refusal "create:" "$CLIENT" --server "127.0.0.1:$port" --ca "$C/ca-cert.pem" \
    --cert "$C/user-cert.pem" --key "$C/user-key.pem" query create
  grep -q "^query ok" "$WORK/out" || fail "$mode: user Query"; ok
  # The server must prove itself: another CA, another name.
  expect_refusal "TLS handshake" cl "$port" --ca "$WORK/other/certs/ca-cert.pem" query
  expect_refusal "TLS handshake" cl "$port" --server-name kms.example.org query
  expect_ok cl "$port" --server-name localhost query
}
"$KEYFLEETD" --dev --dir "$WORK/other" --kmip-listen 127.0.0.1:0 --log-file "$WORK/other.log" & OPID=$!
for _ in $(seq 1 100); do [ -f "$WORK/other/certs/ca-cert.pem" ] && break; sleep 0.05; done
kill $OPID; wait $OPID 2> /dev/null || true

PORT=$(free_tcp_port)
start_daemon --dev --tls-mode split --kmip-listen "127.0.0.1:$PORT"
wait_tcp_port "$PORT"
kmip_runs split "$PORT" 1
grep -q "TLS split .*cert:CN=admin.*(TLS1.3, resumed)" "$WORK/daemon.log" || fail "split: no resumed admin session"; ok
# The handler is this very binary, exec'd fresh with the handler argument.
cl "$PORT" query hold:2 > "$WORK/hold.out" 2>&1 &
HC=$!
for _ in $(seq 1 100); do grep -q held "$WORK/hold.out" 2> /dev/null && break; sleep 0.05; done
H=$(sed -n 's/^pid=[0-9]* handler=\([0-9]*\)$/\1/p' "$WORK/hold.out")
[ -n "$H" ] && tr '\0' ' ' < "/proc/$H/cmdline" | grep -q -- "--tls-session-handler" || fail "handler cmdline"
# (its exe link is readable by root only: the handler is not dumpable)
[ "$(id -u)" != 0 ] || [ "$(readlink "/proc/$H/exe")" = "$(readlink -f "$CLIENT")" ] || fail "handler binary"
wait $HC || fail "held connection"
ok
# The tools themselves (claim 17): keyfleet and keyfleet-device with --tls-split.
C="$DATA/certs"
expect_ok "$KEYFLEET" --tls-split --server "127.0.0.1:$PORT" --ca "$C/ca-cert.pem" \
  --cert "$C/admin-cert.pem" --key "$C/admin-key.pem" domain create SPLITCLI
expect_ok "$KEYFLEET" --tls-split --server "127.0.0.1:$PORT" --ca "$C/ca-cert.pem" \
  --cert "$C/admin-cert.pem" --key "$C/admin-key.pem" key create --domain SPLITCLI --name k1 \
  --alg aes --length 256
"$KEYFLEET" --tls-split --server "127.0.0.1:$PORT" --ca "$C/ca-cert.pem" --cert "$C/user-cert.pem" \
  --key "$C/user-key.pem" domain create NOPE > "$WORK/out" 2>&1 && fail "user may not create domains"
ok
expect_refusal "usage\|--server" "$KEYFLEET" --tls-split domain list
# keyfleet-device: a meter pairs with a base through keyfleetd, its TLS split.
kf device register meter-s --domain default > /dev/null || fail "register meter-s"
kf device register base-s --domain default > /dev/null || fail "register base-s"
kf device export meter-s -o "$WORK/meter-s.pkg" > /dev/null || fail "export meter-s"
kf device export base-s -o "$WORK/base-s.pkg" > /dev/null || fail "export base-s"
DEV="$BUILD/keyfleet-device"
expect_ok "$DEV" install --state "$WORK/meter-s.state" --package "$WORK/meter-s.pkg"
expect_ok "$DEV" install --state "$WORK/base-s.state" --package "$WORK/base-s.pkg"
BPORT=$(free_tcp_port)
"$DEV" base --state "$WORK/base-s.state" --listen "127.0.0.1:$BPORT" > "$WORK/base-s.log" 2>&1 &
BPID=$!
wait_tcp_port "$BPORT"
expect_ok "$DEV" meter --state "$WORK/meter-s.state" --partner "127.0.0.1:$BPORT" --partner-id base-s \
  --server "127.0.0.1:$PORT" --ca "$C/ca-cert.pem" --cert "$C/device-cert.pem" \
  --key "$C/device-key.pem" --sessions 2 --tls-split
kill $BPID 2> /dev/null || true; wait $BPID 2> /dev/null || true
grep -q "TLS split .*cert:CN=device" "$WORK/daemon.log" || fail "the meter's split session is not in the log"; ok
stop_daemon

start_daemon --dev --tls-mode monolithic --kmip-listen "127.0.0.1:$PORT"
wait_tcp_port "$PORT"
kmip_runs monolithic "$PORT" 0
# The same calls without the split (the tools' --tls-split off).
expect_ok cl "$PORT" --monolithic --connections 2 query create get
out_has "pid=$(sed -n 's/^pid=\([0-9]*\).*/\1/p' "$WORK/out") handler=-1"
[ "$(grep -c '^get ok' "$WORK/out")" = 2 ] || fail "monolithic client"; ok
stop_daemon

# ---- servers nobody here wrote ----
SRV_PORT=$(free_tcp_port)
for prio in "$PRIO13" "$PRIO12"; do
  v=$(version_of "$prio")
  gnutls-serv --echo -p "$SRV_PORT" --x509cafile "$C/ca-cert.pem" --x509certfile "$C/server-cert.pem" \
    --x509keyfile "$C/server-key.pem" --require-client-cert --priority "$prio" > "$WORK/gs.log" 2>&1 &
  GS=$!; EXTRA_PIDS+=("$GS")
  wait_tcp_port "$SRV_PORT" "$GS"
  expect_ok cl "$SRV_PORT" --priority "$prio" --connections 2 echo:1 echo:16384 echo:100000 ku-ask echo:20000 line:hello
  out_has "connection 1 version=$v resumed=0" "connection 2 version=$v resumed=1" "line: hello"
  [ "$(grep -c '^echo ok' "$WORK/out")" = 8 ] || fail "gnutls-serv $v echo"; ok
  grep -q "This is a resumed session" "$WORK/gs.log" || fail "gnutls-serv saw no resumption"; ok
  kill "$GS"; wait "$GS" 2> /dev/null || true
done
for proto in tls1_3 tls1_2; do
  prio=$([ $proto = tls1_3 ] && echo "$PRIO13" || echo "$PRIO12C"); v=$(version_of "$prio")
  openssl s_server -rev -$proto -accept "127.0.0.1:$SRV_PORT" -cert "$C/server-cert.pem" \
    -key "$C/server-key.pem" -CAfile "$C/ca-cert.pem" -Verify 1 -verify_return_error > "$WORK/os.log" 2>&1 &
  OS=$!; EXTRA_PIDS+=("$OS")
  wait_tcp_port "$SRV_PORT" "$OS"
  expect_ok cl "$SRV_PORT" --priority "$prio" --connections 2 line:hello ku-ask line:abcdef ku line:xyz
  out_has "connection 1 version=$v resumed=0" "connection 2 version=$v resumed=1" \
    "line: olleh" "line: fedcba" "line: zyx"
  grep -q "Peer certificate: O = keyfleet dev, CN = admin" "$WORK/os.log" || fail "s_server: client certificate"; ok
  kill "$OS"; wait "$OS" 2> /dev/null || true
done
# openssl s_server updates its keys and asks for ours ('K' on its stdin).
mkfifo "$WORK/fifo"
exec 7<> "$WORK/fifo"
openssl s_server -msg -tls1_3 -naccept 1 -accept "127.0.0.1:$SRV_PORT" -cert "$C/server-cert.pem" \
  -key "$C/server-key.pem" -CAfile "$C/ca-cert.pem" -Verify 1 -verify_return_error < "$WORK/fifo" > "$WORK/os.log" 2>&1 &
OS=$!; EXTRA_PIDS+=("$OS")
# (-naccept 1: a probe connection would be its one; it says ACCEPT when it listens)
for _ in $(seq 1 200); do grep -q "^ACCEPT" "$WORK/os.log" && break; sleep 0.05; done
cl "$SRV_PORT" read-line read-line send:after-our-update > "$WORK/out" 2>&1 &
CP=$!
for _ in $(seq 1 100); do grep -q "^connection 1" "$WORK/out" && break; sleep 0.05; done
echo before >&7; sleep 0.3; echo K >&7; sleep 0.3; echo after >&7
wait $CP || fail "client under the server's KeyUpdate: $(cat "$WORK/out")"
out_has "line: before" "line: after" "sent after-our-update"
for _ in $(seq 1 100); do grep -q "^after-our-update" "$WORK/os.log" && break; sleep 0.05; done
exec 7>&-
grep -q ">>> TLS 1.3, Handshake \[length 0005\], KeyUpdate" "$WORK/os.log" || fail "s_server sent no KeyUpdate"
grep -q "<<< TLS 1.3, Handshake \[length 0005\], KeyUpdate" "$WORK/os.log" || fail "our KeyUpdate did not arrive"
grep -q "^after-our-update" "$WORK/os.log" || fail "s_server did not read our data"
ok
wait "$OS" 2> /dev/null || true

# ---- memory of the client process ----
if [ "$(id -u)" != 0 ]; then
  echo "$(basename "$0"): not root: memory scan and dumpable check skipped" >&2
  finish
  exit 0
fi
# Under ASan a process maps terabytes of shadow and allocator space: the scan
# runs in the release build (scripts/test.sh runs both).
if grep -q "^KF_SANITIZE:BOOL=ON" "$BUILD/CMakeCache.txt" 2> /dev/null; then
  echo "$(basename "$0"): ASan build: memory scan skipped (the release build runs it)" >&2
  finish
  exit 0
fi
scan_script << 'PY'
# scan.py PID KEYLOG [--key PEM] [--reveal FILE] [--no-positive]
# Exit 0 when a traffic key is found (unless --no-positive) and no secret is.
import sys
from memscan import key_log, memory, present, private_key_bytes, windows

args = sys.argv[1:]
pid, keylog = args[0], args[1]
opt = {args[i]: args[i + 1] for i in range(2, len(args) - 1) if args[i] in ("--key", "--reveal")}
mem = memory(pid)
logged, traffic = key_log(keylog)
secrets = {f"key log {label}": vals for label, vals in logged.items()}
needles = {label: set().union(*(windows(v, 16) for v in vals)) for label, vals in secrets.items()}
if "--key" in opt:
    needles["client private key"] = windows(private_key_bytes(opt["--key"]), 16)
if "--reveal" in opt:
    ws = set()
    for line in open(opt["--reveal"]):
        if line.startswith("session "):
            d = bytes.fromhex(line.split()[1])
            ws |= {w for w in windows(d, 32) if len(set(w)) >= 24}
    if ws:
        needles["handler's kept session (ticket, resumption secret)"] = ws
bad = 0
for label, ws in sorted(needles.items()):
    hits = len(present(mem, ws))
    print(f"{'FOUND' if hits else 'absent'}: {label}")
    bad += hits > 0
if "--no-positive" not in args:
    n = sum(1 for k in traffic if k in mem)
    print(f"positive control: {n} of {len(traffic)} traffic keys found in {len(mem) >> 20} MiB")
    if n == 0:
        print("FAIL: no traffic key in this process: the scan would find nothing")
        sys.exit(1)
sys.exit(1 if bad else 0)
PY

# hold NAME PRIO [client args...]: a KMIP connection held open until $WORK/NAME.done
# exists; sets CPID, HPID, HOLDER.
hold() {
  local name=$1 prio=$2; shift 2
  : > "$WORK/$name.reveal"
  KF_TEST_REVEAL_FILE="$WORK/$name.reveal" "$@" --priority "$prio" --test-reveal \
    query create get "hold-until:$WORK/$name.done" > "$WORK/$name.out" 2>&1 &
  HOLDER=$!; EXTRA_PIDS+=("$HOLDER")
  for _ in $(seq 1 200); do grep -q held "$WORK/$name.out" 2> /dev/null && break; sleep 0.05; done
  grep -q held "$WORK/$name.out" || fail "$name: $(cat "$WORK/$name.out")"
  CPID=$(sed -n 's/^pid=\([0-9]*\) .*/\1/p' "$WORK/$name.out")
  HPID=$(sed -n 's/^pid=[0-9]* handler=\([0-9]*\)$/\1/p' "$WORK/$name.out")
}
scan() { # scan NAME PID KEYLOG [options]: must pass
  local name=$1; shift
  "$PY" "$WORK/scan.py" "$@" > "$WORK/$name.scan" 2>&1 || fail "$name: $(cat "$WORK/$name.scan")"
  sed "s/^/  $name: /" "$WORK/$name.scan"
}
# The split endpoint issues tickets, so the client handler keeps a session; its
# session handler (GnuTLS) writes the peer's key log.
export SSLKEYLOGFILE="$WORK/server.keylog"
start_daemon --dev --tls-mode split --kmip-listen "127.0.0.1:$PORT"
unset SSLKEYLOGFILE
wait_tcp_port "$PORT"
for prio in "$PRIO13" "$PRIO12"; do
  v=$(version_of "$prio")
  : > "$WORK/server.keylog"
  hold "$v" "$prio" cl "$PORT"
  [ -s "$WORK/server.keylog" ] || fail "keyfleetd wrote no SSLKEYLOGFILE"
  if [ "$v" = TLS1.3 ]; then positive=(); else positive=(--no-positive); fi
  scan "client-$v" "$CPID" "$WORK/server.keylog" --key "$C/admin-key.pem" --reveal "$WORK/$v.reveal" "${positive[@]}"
  if [ -s "$WORK/$v.reveal" ]; then
    grep -q "absent: handler's kept session" "$WORK/client-$v.scan" || fail "kept session not scanned"
  else
    echo "$(basename "$0"): build without -DKF_TEST_HOOKS=ON: the kept session is not scanned" >&2
  fi
  # The control: the handler holds the key (a file here) and the kept session.
  "$PY" "$WORK/scan.py" "$HPID" "$WORK/server.keylog" --key "$C/admin-key.pem" --reveal "$WORK/$v.reveal" \
    --no-positive > "$WORK/handler-$v.scan" 2>&1 && fail "the scan finds nothing even in the handler"
  grep -q "FOUND: client private key" "$WORK/handler-$v.scan" || fail "key not found in the handler"
  [ ! -s "$WORK/$v.reveal" ] || grep -q "FOUND: handler's kept session" "$WORK/handler-$v.scan" ||
    fail "kept session not found in the handler"
  kill -0 "$HOLDER" || fail "$v: the connection did not outlive the scan"
  touch "$WORK/$v.done"
  wait "$HOLDER" || fail "$v: held connection: $(cat "$WORK/$v.out")"
  ok
done

# Not dumpable: as an unprivileged user, the handler's /proc files are root's, the client's are not.
NOBODY_DIR="$WORK/nobody"
mkdir -p "$NOBODY_DIR"
cp "$C/ca-cert.pem" "$C/admin-cert.pem" "$C/admin-key.pem" "$NOBODY_DIR/"
chmod 755 "$WORK" "$NOBODY_DIR"; chmod 644 "$NOBODY_DIR"/*
setpriv --reuid=nobody --regid=nogroup --clear-groups "$CLIENT" --server "127.0.0.1:$PORT" \
  --ca "$NOBODY_DIR/ca-cert.pem" --cert "$NOBODY_DIR/admin-cert.pem" --key "$NOBODY_DIR/admin-key.pem" \
  query "hold-until:$NOBODY_DIR/done" > "$NOBODY_DIR/out" 2>&1 &
NB=$!; EXTRA_PIDS+=("$NB")
for _ in $(seq 1 200); do grep -q held "$NOBODY_DIR/out" 2> /dev/null && break; sleep 0.05; done
grep -q held "$NOBODY_DIR/out" || fail "client as nobody: $(cat "$NOBODY_DIR/out")"
CPID=$(sed -n 's/^pid=\([0-9]*\) .*/\1/p' "$NOBODY_DIR/out")
HPID=$(sed -n 's/^pid=[0-9]* handler=\([0-9]*\)$/\1/p' "$NOBODY_DIR/out")
[ "$(stat -c %U "/proc/$CPID/status")" = nobody ] || fail "client process not nobody's"
[ "$(stat -c %U "/proc/$HPID/status")" = root ] || fail "client handler is dumpable"
[ "$(stat -c %U "/proc/$HPID/mem")" = root ] || fail "client handler is dumpable"
touch "$NOBODY_DIR/done"
wait "$NB" || fail "client as nobody"
ok

# The client key in SoftHSM2: the handshake signs with it, no process holds its bytes.
SOFTHSM=/usr/lib/softhsm/libsofthsm2.so
if [ -f "$SOFTHSM" ] && command -v p11tool > /dev/null; then
  eval "$(bash "$(dirname "$0")/softhsm-setup.sh" "$WORK/hsm" split-client)"
  GNUTLS_PIN=1234 p11tool --provider "$SOFTHSM" --login --write --load-privkey "$C/admin-key.pem" \
    --label admin --mark-private --mark-sign "pkcs11:token=split-client" > /dev/null 2>&1 || fail "p11tool import"
  : > "$WORK/server.keylog"
  hold hsm "$PRIO13" "$CLIENT" --server "127.0.0.1:$PORT" --ca "$C/ca-cert.pem" --cert "$C/admin-cert.pem" \
    --key "pkcs11:token=split-client;object=admin;type=private" --pkcs11-module "$SOFTHSM" --pin 1234
  grep -q "^get ok" "$WORK/hsm.out" || fail "KMIP with the token's key"
  scan hsm-client "$CPID" "$WORK/server.keylog" --key "$C/admin-key.pem"
  scan hsm-handler "$HPID" /dev/null --key "$C/admin-key.pem" --no-positive
  grep -q "absent: client private key" "$WORK/hsm-handler.scan" || fail "handler scan incomplete"
  touch "$WORK/hsm.done"
  wait "$HOLDER" || fail "hsm: held connection"
  ok
else
  echo "$(basename "$0"): SoftHSM2 or p11tool missing: the PKCS#11 client key not tested" >&2
fi
stop_daemon
finish
