#!/usr/bin/env bash
# The split TLS endpoint (docs/tls-split.md) with outside clients.
#
# keyfleetd --tls-mode split: gnutls-cli and openssl s_client, TLS 1.3 and 1.2,
# get KMIP answers; refusals (no client certificate, foreign CA, 'user' may not
# Create) hold through the split; KeyUpdate both ways (openssl 'K' asks the server
# to update too, 'k' does not); resumption with tickets (openssl -sess_in, gnutls-cli
# --resume) in both versions; the session handler is a separate process; killed, it
# leaves an established connection's application data flowing, ends that
# connection at its next KeyUpdate, and is replaced for new connections.
# kf-tls-echo in split mode (confined worker processes): 1 GiB echoed byte-exact
# with openssl (TLS 1.3) and with a GnuTLS client (TLS 1.2, and ChaCha20); a
# worker killed mid-transfer ends its own connection only.
# Alongside, test_conformance.sh and test_pykmip.sh run unchanged against a keyfleetd
# that always starts with --tls-mode split.
source "$(dirname "$0")/lib.sh"
stop_extra_on_exit
command -v gnutls-cli > /dev/null || fail "gnutls-cli not found (apt-get install gnutls-bin)"
command -v openssl > /dev/null || fail "openssl not found"
TTLV="$BUILD/kf-ttlv"
ECHO="$BUILD/kf-tls-echo"
LOAD="$BUILD/kf-tls-load"
for b in "$TTLV" "$ECHO" "$LOAD"; do [ -x "$b" ] || fail "$b is not built"; done
GIB=$((1024 * 1024 * 1024))
BULK=${KF_SPLIT_BULK_BYTES:-$GIB}
PY=/usr/bin/python3

# ---- requests ----
kmip_requests

# count_answers FILE: KMIP Response Messages (tag 42007B, type structure) in FILE.
count_answers() {
  "$PY" -c 'import sys; print(open(sys.argv[1], "rb").read().count(bytes.fromhex("42007b01")))' "$1"
}
# No fixed sleeps: a client's stdin is fed by drive.py, which sends the next
# request only when the previous answer (or s_client's KEYUPDATE) is in the
# client's output, and ends the input as soon as the last awaited thing came.
cat > "$WORK/drive.py" <<'PY'
# drive.py OUT STEP...: feeds a TLS client's stdin (our stdout) step by step,
# waiting for what the client wrote to OUT instead of sleeping. Steps:
#   send=FILE       write FILE
#   line=TEXT       write TEXT and a newline (s_client's K/k commands)
#   answers=N       wait until OUT holds N whole KMIP responses (42007B, structure)
#   text=N:STRING   wait until OUT holds N times STRING
#   kill9=PID       SIGKILL PID and wait until it is dead (gone or a zombie)
#   end=S           wait up to S seconds for the client to go away by itself
# A wait gives up after $KF_DRIVE_TIMEOUT seconds (default 20) or as soon as the
# client is gone (it closed its stdin); the driver then exits, so the client
# sees end of input. The checks are made on OUT afterwards, not here.
import os, select, signal, sys, time

RESP = bytes.fromhex("42007b01")
out, steps = sys.argv[1], sys.argv[2:]
limit = float(os.environ.get("KF_DRIVE_TIMEOUT", "20"))
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
pipe = select.poll()
pipe.register(1, select.POLLERR)


def client_gone():
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in pipe.poll(0))


def output():
    try:
        with open(out, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def count(needle):
    return output().count(needle)


def answers():
    """Responses whose header and all the bytes its length announces are in OUT."""
    data, n = output(), 0
    i = data.find(RESP)
    while i >= 0:
        n += len(data) >= i + 8 + int.from_bytes(data[i + 4:i + 8], "big")
        i = data.find(RESP, i + 1)
    return n


def wait(cond, seconds):
    end = time.monotonic() + seconds
    while not cond():
        if client_gone() or time.monotonic() > end:
            return cond()
        time.sleep(0.01)
    return True


def dead(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


for step in steps:
    op, arg = step.split("=", 1)
    if op == "send":
        with open(arg, "rb") as f:
            os.write(1, f.read())
    elif op == "line":
        os.write(1, arg.encode() + b"\n")
    elif op == "answers":
        if not wait(lambda: answers() >= int(arg), limit):
            sys.exit(f"drive: {answers()} of {arg} answers")
    elif op == "text":
        n, s = arg.split(":", 1)
        if not wait(lambda: count(s.encode()) >= int(n), limit):
            sys.exit(f"drive: '{s}' {count(s.encode())} of {n} times")
    elif op == "kill9":
        os.kill(int(arg), signal.SIGKILL)
        if not wait(lambda: dead(arg), limit):
            sys.exit(f"drive: {arg} did not die")
    elif op == "end":
        wait(lambda: False, float(arg))
    else:
        sys.exit(f"drive: unknown step {step}")
PY
# drive OUT STEP... : drive.py feeding the client command that follows a '|'.
drive() { "$PY" "$WORK/drive.py" "$@" 2>> "$WORK/drive.log"; }
# wait_log PATTERN: up to 10 s for PATTERN in the daemon log.
wait_log() {
  local i
  for i in $(seq 1 200); do grep -q -- "$1" "$WORK/daemon.log" && return 0; sleep 0.05; done
  return 1
}

# ---- the conformance runner and PyKMIP through the split endpoint ----
# test_conformance.sh and test_pykmip.sh unchanged, with a keyfleetd that always
# starts in split mode. They have their own daemons and directories: they run in
# the background from here, and their results are checked at the end. The ASan
# build skips them (KF_SPLIT_INTEROP=0): its release twin runs them, and the 1 GiB
# transfer shrinks there too, see KF_SPLIT_BULK_BYTES.
start_split_interop --tls-mode split

# ---- keyfleetd --tls-mode split ----
start_daemon --dev --tls-mode split --kmip-listen 127.0.0.1:0
PORT=$(tls_port)
[ -n "$PORT" ] || fail "no TLS port in the log"
grep -q "split: handshakes in session handler process" "$WORK/daemon.log" || fail "not in split mode"; ok
CERTS="$DATA/certs"
as_admin=(--x509certfile "$CERTS/admin-cert.pem" --x509keyfile "$CERTS/admin-key.pem")
as_user=(--x509certfile "$CERTS/user-cert.pem" --x509keyfile "$CERTS/user-key.pem")
ossl_admin=(-CAfile "$CERTS/ca-cert.pem" -cert "$CERTS/admin-cert.pem" -key "$CERTS/admin-key.pem")

# The handler: a child of keyfleetd, exec'd with --tls-session-handler.
handler_pid() { ps --ppid "$DAEMON_PID" -o pid=,args= | awk '/--tls-session-handler/ {print $1}' | head -1; }
HPID=$(handler_pid)
[ -n "$HPID" ] || fail "no session handler process under keyfleetd $DAEMON_PID"; ok
# Confined once its credentials are loaded (src/tlssplit/sandbox.c): a seccomp filter
# (mode 2) and no new privileges ("ready" is logged after the filter is in place).
wait_log "session handler $HPID ready" || fail "the session handler did not get ready"
grep -q "^Seccomp:[[:space:]]*2" "/proc/$HPID/status" || fail "the session handler has no seccomp filter"; ok
grep -q "^NoNewPrivs:[[:space:]]*1" "/proc/$HPID/status" || fail "the session handler may gain privileges"; ok

# gnutls_send NAME REQUEST [gnutls-cli options]: one exchange; answer in $WORK/NAME.resp.
# (a refused client is not answered: the input ends when the server drops it)
gnutls_send() {
  local name=$1 req=$2; shift 2
  drive "$WORK/$name.resp" send="$req" answers=1 | timeout 30 gnutls-cli --port "$PORT" \
    --x509cafile "$CERTS/ca-cert.pem" --logfile "$WORK/$name.log" "$@" 127.0.0.1 \
    > "$WORK/$name.resp" 2> "$WORK/$name.err" || true
}
# ossl NAME [s_client options] -- STEP...: one s_client driven by STEPs; output in $WORK/NAME.out.
ossl() {
  local name=$1 opts=(); shift
  while [ "$1" != -- ]; do opts+=("$1"); shift; done; shift
  drive "$WORK/$name.out" "$@" | timeout 60 openssl s_client -connect "127.0.0.1:$PORT" "${opts[@]}" \
    > "$WORK/$name.out" 2>&1 || true
}
# The clients below are independent of each other: they run side by side, and
# their results are checked once all are done.
JOBS=()
for v in 1.3 1.2; do
  gnutls_send "g$v" "$DISCOVER" "${as_admin[@]}" --priority "NORMAL:-VERS-ALL:+VERS-TLS$v" & JOBS+=($!)
done
gnutls_send chacha "$DISCOVER" "${as_admin[@]}" --priority "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305" & JOBS+=($!)
gnutls_send nocert "$DISCOVER" & JOBS+=($!)
# 'user' has the use role only: Create is refused by the kms with the identity the handler found.
gnutls_send usercreate "$CREATE" "${as_user[@]}" & JOBS+=($!)
# A certificate from another CA.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=admin/O=keyfleet dev" \
  -days 1 -keyout "$WORK/rogue-key.pem" -out "$WORK/rogue-cert.pem" > /dev/null 2>&1 || fail "openssl req"
gnutls_send rogue "$DISCOVER" --x509certfile "$WORK/rogue-cert.pem" --x509keyfile "$WORK/rogue-key.pem" & JOBS+=($!)
# openssl s_client, both versions, two requests each.
for v in tls1_3 tls1_2; do
  ossl "o-$v" -"$v" "${ossl_admin[@]}" -- send="$DISCOVER" answers=1 send="$DISCOVER" answers=2 & JOBS+=($!)
done
# KeyUpdate: K (ask the server too), k (ours only); each request goes out once
# s_client has taken the K/k line (it says KEYUPDATE) and answered the one before.
ossl ku -tls1_3 -msg "${ossl_admin[@]}" -- send="$DISCOVER" answers=1 line=K text=1:KEYUPDATE \
  send="$DISCOVER" answers=2 line=k text=2:KEYUPDATE send="$DISCOVER" answers=3 line=K text=3:KEYUPDATE \
  send="$DISCOVER" answers=4 & JOBS+=($!)
# Resumption with tickets: openssl in both versions (the second connection
# resumes the first's session); gnutls-cli --resume below.
for v in tls1_3 tls1_2; do
  { ossl "r1-$v" -"$v" "${ossl_admin[@]}" -sess_out "$WORK/sess.$v" -- send="$DISCOVER" answers=1
    ossl "r2-$v" -"$v" "${ossl_admin[@]}" -sess_in "$WORK/sess.$v" -- send="$DISCOVER" answers=1; } & JOBS+=($!)
done
wait "${JOBS[@]}" || true
# gnutls-cli --resume gives the TLS 1.3 ticket, which comes after the handshake,
# only a few milliseconds before it reconnects: it runs on its own, not among the others.
drive "$WORK/gres.out" send="$DISCOVER" answers=1 | timeout 30 gnutls-cli --port "$PORT" \
  --x509cafile "$CERTS/ca-cert.pem" "${as_admin[@]}" --resume 127.0.0.1 > "$WORK/gres.out" 2>&1 || true

for v in 1.3 1.2; do
  [ "$(count_answers "$WORK/g$v.resp")" = 1 ] || fail "gnutls-cli TLS $v: no answer: $(tail -3 "$WORK/g$v.err")"
  ok
done
[ "$(count_answers "$WORK/chacha.resp")" = 1 ] || fail "ChaCha20-Poly1305: no answer"; ok
[ "$(count_answers "$WORK/nocert.resp")" = 0 ] || fail "answered a client without certificate"; ok
wait_log "refused: the client sent no certificate" || fail "no refusal logged"; ok
"$TTLV" dump "$WORK/usercreate.resp" > "$WORK/usercreate.dump" 2>&1 || fail "user Create: no TTLV answer"
grep -q "PermissionDenied" "$WORK/usercreate.dump" || fail "user may Create: $(cat "$WORK/usercreate.dump")"; ok
[ "$(count_answers "$WORK/rogue.resp")" = 0 ] || fail "answered a certificate from another CA"; ok
for v in tls1_3 tls1_2; do
  [ "$(count_answers "$WORK/o-$v.out")" = 2 ] || fail "openssl $v: expected 2 answers"; ok
done
[ "$(count_answers "$WORK/ku.out")" = 4 ] || fail "KeyUpdate: expected 4 answers, got $(count_answers "$WORK/ku.out")"; ok
[ "$(grep -a -c '>>> TLS 1.3, Handshake \[length 0005\], KeyUpdate' "$WORK/ku.out")" = 3 ] || fail "client KeyUpdates not sent"; ok
# The server answers each 'K' with its own KeyUpdate (and not the 'k').
[ "$(grep -a -c '<<< TLS 1.3, Handshake \[length 0005\], KeyUpdate' "$WORK/ku.out")" = 2 ] || fail "server did not update its keys when asked"; ok
for v in tls1_3 tls1_2; do
  grep -a -q "^New," "$WORK/r1-$v.out" || fail "openssl $v: first handshake not full"
  grep -a -q "^Reused," "$WORK/r2-$v.out" || fail "openssl $v: no resumption"
  [ "$(count_answers "$WORK/r2-$v.out")" = 1 ] || fail "openssl $v: resumed session not answered"; ok
done
grep -a -q "This is a resumed session" "$WORK/gres.out" || fail "gnutls-cli --resume did not resume"; ok
wait_log "(TLS1.3, resumed)" || fail "handler did not log a resumption"; ok

# Kill the handler under an open connection: its application data keeps flowing,
# its next KeyUpdate (which needs the handler) ends it, and a new handler serves
# new connections. The driver kills the handler once the first request is
# answered and sends the second when it is dead; after the 'k' the connection may
# be gone by the time the third request comes (that is the point): the driver
# gives the server 5 s to answer it, which it must not do.
[ "$(handler_pid)" = "$HPID" ] || fail "the session handler changed on its own"
ossl kill -tls1_3 "${ossl_admin[@]}" -- send="$DISCOVER" answers=1 kill9="$HPID" send="$DISCOVER" answers=2 \
  line=k text=1:KEYUPDATE send="$DISCOVER" end=5
[ "$(count_answers "$WORK/kill.out")" -ge 2 ] || fail "application data stopped when the handler died"; ok
[ "$(count_answers "$WORK/kill.out")" = 2 ] || fail "a KeyUpdate without a handler was served"; ok
# (keyfleetd looks for a dead handler once a second and before each accept: the
# new connection does not wait for the next second)
gnutls_send after "$DISCOVER" "${as_admin[@]}"
[ "$(count_answers "$WORK/after.resp")" = 1 ] || fail "new connections fail after a handler restart"; ok
for _ in $(seq 1 100); do NEW=$(handler_pid); [ -n "$NEW" ] && [ "$NEW" != "$HPID" ] && break; sleep 0.05; done
[ -n "$NEW" ] && [ "$NEW" != "$HPID" ] || fail "no new session handler after the old one died"; ok
kill -0 "$DAEMON_PID" || fail "keyfleetd died with its handler"; ok
stop_daemon

# A handler that cannot load its credentials stops keyfleetd at start, with its
# reason, in both worker kinds (it waits for the handler's READY).
printf 'subject-CN=admin roles=sudo domains=*\n' > "$WORK/bad-identities"
echo "not a key" > "$WORK/bad-key.pem"
for kind in threads processes; do
  expect_refusal "session handler did not start" "$KEYFLEETD" --dir "$WORK/prod-$kind" \
    --kmip-listen 127.0.0.1:0 --tls-mode split --split-workers "$kind" \
    --kmip-ca "$CERTS/ca-cert.pem" --kmip-cert "$CERTS/server-cert.pem" \
    --kmip-key "$CERTS/server-key.pem" --kmip-identities "$WORK/bad-identities"
  grep -q "identity map file is malformed" "$WORK/err" || fail "no reason for the refusal"; ok
  expect_refusal "session handler did not start" "$KEYFLEETD" --dir "$WORK/prod-$kind" \
    --kmip-listen 127.0.0.1:0 --tls-mode split --split-workers "$kind" \
    --kmip-ca "$CERTS/ca-cert.pem" --kmip-cert "$CERTS/server-cert.pem" \
    --kmip-key "$WORK/bad-key.pem" --kmip-identities "$CERTS/identities"
done

# The record layer with nettle's AEADs (--record-aead nettle): TLS 1.3 and 1.2
# AES-GCM and ChaCha20-Poly1305 through the worker processes.
expect_refusal "gnutls or nettle" "$KEYFLEETD" --dev --dir "$WORK/x" --record-aead openssl
start_daemon --dev --record-aead nettle --kmip-listen 127.0.0.1:0
PORT=$(tls_port)
for p in "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-256-GCM" "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM" \
         "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305"; do
  gnutls_send nettle "$DISCOVER" "${as_admin[@]}" --priority "$p"
  [ "$(count_answers "$WORK/nettle.resp")" = 1 ] || fail "nettle AEAD, $p: no answer: $(tail -3 "$WORK/nettle.err")"; ok
done
grep -q "ready (record AEAD: nettle)" "$WORK/daemon.log" || fail "the workers do not use nettle"; ok
stop_daemon

# ---- kf-tls-echo --mode split: bulk, byte-exact ----
"$ECHO" --mode split --listen 127.0.0.1:0 --certs "$WORK/echo-certs" > "$WORK/echo.out" 2> "$WORK/echo.err" &
EPID=$!
EXTRA_PIDS+=("$EPID")
for _ in $(seq 1 200); do grep -q ready "$WORK/echo.out" 2>/dev/null && break; sleep 0.05; done
EPORT=$(sed -n 's/ready port=\([0-9]*\).*/\1/p' "$WORK/echo.out")
[ -n "$EPORT" ] || fail "kf-tls-echo did not start: $(cat "$WORK/echo.err")"
W1=$(sed -n 's/.*workers=\([0-9]*\),.*/\1/p' "$WORK/echo.out")
EC="$WORK/echo-certs"
# The worker processes are confined: user nobody, seccomp filter, no new privileges.
if [ "$(id -u)" = 0 ]; then
  grep -q "^Uid:[[:space:]]*65534" "/proc/$W1/status" || fail "worker runs as $(grep ^Uid "/proc/$W1/status")"; ok
fi
grep -q "^Seccomp:[[:space:]]*2" "/proc/$W1/status" || fail "worker has no seccomp filter"; ok
grep -q "^NoNewPrivs:[[:space:]]*1" "/proc/$W1/status" || fail "worker may gain privileges"; ok

# openssl, TLS 1.3: BULK bytes of a pseudo-random stream; cmp compares the echo
# with the same stream made again, byte by byte. (-quiet never ends the
# connection by itself: s_client is stopped once cmp has had all BULK bytes.)
stream() { openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 0 -nosalt < /dev/zero 2> /dev/null | head -c "$BULK"; }
mkfifo "$WORK/bulk.fifo"
stream | timeout 300 openssl s_client -connect "127.0.0.1:$EPORT" -tls1_3 -quiet -CAfile "$EC/ca-cert.pem" \
  -cert "$EC/admin-cert.pem" -key "$EC/admin-key.pem" > "$WORK/bulk.fifo" 2> "$WORK/bulk.err" &
BPID=$!
EXTRA_PIDS+=("$BPID")
cmp -n "$BULK" <(stream) "$WORK/bulk.fifo" > "$WORK/bulk.cmp" 2>&1 ||
  fail "openssl TLS 1.3: the echoed $BULK bytes differ ($(cat "$WORK/bulk.cmp"); $(tail -2 "$WORK/bulk.err"))"
kill "$BPID" 2> /dev/null || true
wait "$BPID" || true
ok
# GnuTLS client, TLS 1.2 AES-GCM and TLS 1.3 ChaCha20: every echoed byte checked.
# (The transfers run one after the other: each keeps both cores busy.)
"$LOAD" --server "127.0.0.1:$EPORT" --certs "$EC" --op bulk --connections 1 --bytes "$BULK" \
  --priority "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM" > "$WORK/l12.out" 2>&1 ||
  fail "TLS 1.2 bulk (exit $?): $(cat "$WORK/l12.out")"; ok
"$LOAD" --server "127.0.0.1:$EPORT" --certs "$EC" --op bulk --connections 1 --bytes $((BULK / 4)) \
  --priority "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305" > "$WORK/lcc.out" 2>&1 ||
  fail "ChaCha20 bulk (exit $?): $(cat "$WORK/lcc.out")"; ok
# Resumption against the confined workers too.
"$LOAD" --server "127.0.0.1:$EPORT" --certs "$EC" --op resume --connections 2 --seconds 1 > "$WORK/lres.out" 2>&1 ||
  fail "resumption (exit $?): $(cat "$WORK/lres.out")"; ok
grep -q "count=[1-9]" "$WORK/lres.out" || fail "resumption: no handshake done: $(cat "$WORK/lres.out")"

# Two transfers, one per worker; killing the first worker ends only its connection:
# the other finishes its bytes, all checked. The worker is killed once both
# connections move data: each of kf-tls-load's four transfer threads (a reader
# and a writer per connection) has used 30 ms of CPU, a small part of the time
# KILL_BYTES take, so the kill lands mid-transfer (if it came too late, the
# count check below would fail, not pass).
KILL_BYTES=$((BULK / 2 > 128 * 1024 * 1024 ? BULK / 2 : 128 * 1024 * 1024))
"$LOAD" --server "127.0.0.1:$EPORT" --certs "$EC" --op bulk --connections 2 --bytes "$KILL_BYTES" > "$WORK/kill2.out" 2>&1 &
LPID=$!
EXTRA_PIDS+=("$LPID")
"$PY" - "$LPID" "$W1" > "$WORK/kill2.poll" 2>&1 <<'PY' || fail "worker kill: $(cat "$WORK/kill2.poll")"
import glob, os, sys, time
lpid, worker = sys.argv[1], int(sys.argv[2])
end = time.monotonic() + 60
while time.monotonic() < end:
    ticks = {}
    for f in glob.glob(f"/proc/{lpid}/task/*/stat"):
        try:
            st = open(f).read().rsplit(")", 1)[1].split()
            ticks[int(f.split("/")[4])] = int(st[11]) + int(st[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    ticks.pop(int(lpid), None)  # the main thread only waits
    if len(ticks) >= 4 and sum(t >= 3 for t in ticks.values()) >= 4:
        os.kill(worker, 9)
        print("worker killed; CPU ticks of the transfer threads:", sorted(ticks.values()))
        sys.exit(0)
    try:
        ended = open(f"/proc/{lpid}/stat").read().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        ended = True
    if ended:
        sys.exit(f"kf-tls-load ended before both transfers ran: {sorted(ticks.values())}")
    time.sleep(0.005)
sys.exit("the two transfers did not start")
PY
wait "$LPID" || true
grep -q "count=1 .*errors=1" "$WORK/kill2.out" || fail "one dead worker should cost one connection: $(cat "$WORK/kill2.out"; cat "$WORK/kill2.poll")"
kill "$EPID"; wait "$EPID" || true
ok

# ---- the conformance runner and PyKMIP through the split endpoint ----
for t in "${INTEROP[@]}"; do
  wait "${INTEROP_PID[$t]}" || fail "$t through the split endpoint: $(tail -5 "$WORK/$t.out")"
  ok
done
finish
