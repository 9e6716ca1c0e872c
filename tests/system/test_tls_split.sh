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
# Then test_conformance.sh and test_pykmip.sh run unchanged against a keyfleetd
# that always starts with --tls-mode split.
source "$(dirname "$0")/lib.sh"
# Servers and peers this script starts besides the daemon: stopped on any exit.
EXTRA_PIDS=()
trap 'for p in "${EXTRA_PIDS[@]}"; do kill "$p" 2> /dev/null || true; done; cleanup' EXIT
SRC=${KF_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
command -v gnutls-cli > /dev/null || fail "gnutls-cli not found (apt-get install gnutls-bin)"
command -v openssl > /dev/null || fail "openssl not found"
TTLV="$BUILD/kf-ttlv"
ECHO="$BUILD/kf-tls-echo"
LOAD="$BUILD/kf-tls-load"
for b in "$TTLV" "$ECHO" "$LOAD"; do [ -x "$b" ] || fail "$b is not built"; done
GIB=$((1024 * 1024 * 1024))
BULK=${KF_SPLIT_BULK_BYTES:-$GIB}

# ---- requests ----
mkdir -p "$WORK/req"
cat > "$WORK/discover.xml" <<'XML'
<RequestMessage>
  <RequestHeader>
    <ProtocolVersion><ProtocolVersionMajor type="Integer" value="1"/><ProtocolVersionMinor type="Integer" value="4"/></ProtocolVersion>
    <BatchCount type="Integer" value="1"/>
  </RequestHeader>
  <BatchItem><Operation type="Enumeration" value="DiscoverVersions"/><RequestPayload/></BatchItem>
</RequestMessage>
XML
cat > "$WORK/create.xml" <<'XML'
<RequestMessage>
  <RequestHeader>
    <ProtocolVersion><ProtocolVersionMajor type="Integer" value="1"/><ProtocolVersionMinor type="Integer" value="4"/></ProtocolVersion>
    <BatchCount type="Integer" value="1"/>
  </RequestHeader>
  <BatchItem>
    <Operation type="Enumeration" value="Create"/>
    <RequestPayload>
      <ObjectType type="Enumeration" value="SymmetricKey"/>
      <TemplateAttribute>
        <Attribute><AttributeName type="TextString" value="Cryptographic Algorithm"/><AttributeValue type="Enumeration" value="AES"/></Attribute>
        <Attribute><AttributeName type="TextString" value="Cryptographic Length"/><AttributeValue type="Integer" value="256"/></Attribute>
      </TemplateAttribute>
    </RequestPayload>
  </BatchItem>
</RequestMessage>
XML
"$TTLV" xml2bin "$WORK/discover.xml" "$WORK/req" > /dev/null || fail "kf-ttlv xml2bin discover"
"$TTLV" xml2bin "$WORK/create.xml" "$WORK/req" > /dev/null || fail "kf-ttlv xml2bin create"
DISCOVER=$(ls "$WORK"/req/discover*.bin)
CREATE=$(ls "$WORK"/req/create*.bin)

# count_answers FILE: KMIP Response Messages (tag 42007B, type structure) in FILE.
count_answers() {
  /usr/bin/python3 -c 'import sys; print(open(sys.argv[1], "rb").read().count(bytes.fromhex("42007b01")))' "$1"
}

# ---- keyfleetd --tls-mode split ----
start_daemon --dev --tls-mode split --kmip-listen 127.0.0.1:0
PORT=$(sed -n 's/.*KMIP over TLS on .* (port \([0-9]*\)).*/\1/p' "$WORK/daemon.log" | tail -1)
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

# gnutls_send NAME REQUEST [gnutls-cli options]: one exchange; answer in $WORK/NAME.resp.
gnutls_send() {
  local name=$1 req=$2; shift 2
  (cat "$req"; sleep 1) | timeout 20 gnutls-cli --port "$PORT" --x509cafile "$CERTS/ca-cert.pem" \
    --logfile "$WORK/$name.log" "$@" 127.0.0.1 > "$WORK/$name.resp" 2> "$WORK/$name.err" || true
}
for v in 1.3 1.2; do
  gnutls_send "g$v" "$DISCOVER" "${as_admin[@]}" --priority "NORMAL:-VERS-ALL:+VERS-TLS$v"
  [ "$(count_answers "$WORK/g$v.resp")" = 1 ] || fail "gnutls-cli TLS $v: no answer: $(tail -3 "$WORK/g$v.err")"
  ok
done
gnutls_send chacha "$DISCOVER" "${as_admin[@]}" --priority "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305"
[ "$(count_answers "$WORK/chacha.resp")" = 1 ] || fail "ChaCha20-Poly1305: no answer"; ok
gnutls_send nocert "$DISCOVER"
[ "$(count_answers "$WORK/nocert.resp")" = 0 ] || fail "answered a client without certificate"; ok
grep -q "refused: the client sent no certificate" "$WORK/daemon.log" || fail "no refusal logged"; ok
# 'user' has the use role only: Create is refused by the kms with the identity the handler found.
gnutls_send usercreate "$CREATE" "${as_user[@]}"
"$TTLV" dump "$WORK/usercreate.resp" > "$WORK/usercreate.dump" 2>&1 || fail "user Create: no TTLV answer"
grep -q "PermissionDenied" "$WORK/usercreate.dump" || fail "user may Create: $(cat "$WORK/usercreate.dump")"; ok
# A certificate from another CA.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=admin/O=keyfleet dev" \
  -days 1 -keyout "$WORK/rogue-key.pem" -out "$WORK/rogue-cert.pem" > /dev/null 2>&1 || fail "openssl req"
gnutls_send rogue "$DISCOVER" --x509certfile "$WORK/rogue-cert.pem" --x509keyfile "$WORK/rogue-key.pem"
[ "$(count_answers "$WORK/rogue.resp")" = 0 ] || fail "answered a certificate from another CA"; ok

# openssl s_client, both versions, with KeyUpdate: K (ask the server too), k (ours only).
for v in tls1_3 tls1_2; do
  (sleep 0.5; cat "$DISCOVER"; sleep 0.5; cat "$DISCOVER"; sleep 1) | timeout 20 openssl s_client \
    -connect "127.0.0.1:$PORT" -"$v" "${ossl_admin[@]}" > "$WORK/o-$v.out" 2>&1 || true
  [ "$(count_answers "$WORK/o-$v.out")" = 2 ] || fail "openssl $v: expected 2 answers"; ok
done
(sleep 0.5; cat "$DISCOVER"; sleep 0.5; printf 'K\n'; sleep 0.5; cat "$DISCOVER"; sleep 0.5
 printf 'k\n'; sleep 0.5; cat "$DISCOVER"; sleep 0.5; printf 'K\n'; sleep 0.5; cat "$DISCOVER"; sleep 1) |
  timeout 30 openssl s_client -connect "127.0.0.1:$PORT" -tls1_3 -msg "${ossl_admin[@]}" > "$WORK/ku.out" 2>&1 || true
[ "$(count_answers "$WORK/ku.out")" = 4 ] || fail "KeyUpdate: expected 4 answers, got $(count_answers "$WORK/ku.out")"; ok
[ "$(grep -a -c '>>> TLS 1.3, Handshake \[length 0005\], KeyUpdate' "$WORK/ku.out")" = 3 ] || fail "client KeyUpdates not sent"; ok
# The server answers each 'K' with its own KeyUpdate (and not the 'k').
[ "$(grep -a -c '<<< TLS 1.3, Handshake \[length 0005\], KeyUpdate' "$WORK/ku.out")" = 2 ] || fail "server did not update its keys when asked"; ok

# Resumption with tickets: openssl in both versions, gnutls-cli --resume.
for v in tls1_3 tls1_2; do
  (sleep 0.5; cat "$DISCOVER"; sleep 1) | timeout 20 openssl s_client -connect "127.0.0.1:$PORT" -"$v" \
    "${ossl_admin[@]}" -sess_out "$WORK/sess.$v" > "$WORK/r1-$v.out" 2>&1 || true
  (sleep 0.5; cat "$DISCOVER"; sleep 1) | timeout 20 openssl s_client -connect "127.0.0.1:$PORT" -"$v" \
    "${ossl_admin[@]}" -sess_in "$WORK/sess.$v" > "$WORK/r2-$v.out" 2>&1 || true
  grep -a -q "^New," "$WORK/r1-$v.out" || fail "openssl $v: first handshake not full"
  grep -a -q "^Reused," "$WORK/r2-$v.out" || fail "openssl $v: no resumption"
  [ "$(count_answers "$WORK/r2-$v.out")" = 1 ] || fail "openssl $v: resumed session not answered"; ok
done
(cat "$DISCOVER"; sleep 1) | timeout 20 gnutls-cli --port "$PORT" --x509cafile "$CERTS/ca-cert.pem" \
  "${as_admin[@]}" --resume 127.0.0.1 > "$WORK/gres.out" 2>&1 || true
grep -a -q "This is a resumed session" "$WORK/gres.out" || fail "gnutls-cli --resume did not resume"; ok
grep -q "(TLS1.3, resumed)" "$WORK/daemon.log" || fail "handler did not log a resumption"; ok

# Kill the handler under an open connection: its application data keeps flowing,
# its next KeyUpdate (which needs the handler) ends it, and a new handler serves
# new connections.
mkfifo "$WORK/fifo"
timeout 60 openssl s_client -connect "127.0.0.1:$PORT" -tls1_3 "${ossl_admin[@]}" < "$WORK/fifo" > "$WORK/kill.out" 2>&1 &
SPID=$!
EXTRA_PIDS+=("$SPID")
exec 7> "$WORK/fifo"
sleep 0.5; cat "$DISCOVER" >&7; sleep 0.5
kill -9 "$HPID"
sleep 0.3; cat "$DISCOVER" >&7; sleep 0.5
[ "$(count_answers "$WORK/kill.out")" = 2 ] || fail "application data stopped when the handler died"; ok
# (the connection may be gone by the time the second write comes: that is the point)
printf 'k\n' >&7 || true; sleep 0.5; cat "$DISCOVER" >&7 2> /dev/null || true; sleep 0.5
exec 7>&-
wait "$SPID" || true
[ "$(count_answers "$WORK/kill.out")" = 2 ] || fail "a KeyUpdate without a handler was served"; ok
for _ in $(seq 1 50); do NEW=$(handler_pid); [ -n "$NEW" ] && [ "$NEW" != "$HPID" ] && break; sleep 0.1; done
[ -n "$NEW" ] && [ "$NEW" != "$HPID" ] || fail "no new session handler after the old one died"; ok
gnutls_send after "$DISCOVER" "${as_admin[@]}"
[ "$(count_answers "$WORK/after.resp")" = 1 ] || fail "new connections fail after a handler restart"; ok
kill -0 "$DAEMON_PID" || fail "keyfleetd died with its handler"; ok
stop_daemon

# ---- kf-tls-echo --mode split: bulk, byte-exact ----
"$ECHO" --mode split --listen 127.0.0.1:0 --certs "$WORK/echo-certs" > "$WORK/echo.out" 2> "$WORK/echo.err" &
EPID=$!
EXTRA_PIDS+=("$EPID")
for _ in $(seq 1 100); do grep -q ready "$WORK/echo.out" 2>/dev/null && break; sleep 0.05; done
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

# openssl, TLS 1.3: BULK bytes of a pseudo-random stream, hashed on both sides.
# (head ends both pipelines early on purpose: no pipefail for them)
stream() { openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 0 -nosalt < /dev/zero 2> /dev/null | head -c "$BULK"; }
want=$(set +o pipefail; stream | sha256sum | cut -d' ' -f1)
got=$(set +o pipefail; stream | timeout 300 openssl s_client -connect "127.0.0.1:$EPORT" -tls1_3 -quiet \
        -CAfile "$EC/ca-cert.pem" -cert "$EC/admin-cert.pem" -key "$EC/admin-key.pem" 2> "$WORK/bulk.err" |
      head -c "$BULK" | sha256sum | cut -d' ' -f1)
[ "$want" = "$got" ] || fail "openssl TLS 1.3: the echoed $BULK bytes differ ($(tail -2 "$WORK/bulk.err"))"; ok
# GnuTLS client, TLS 1.2 AES-GCM and TLS 1.3 ChaCha20: every echoed byte checked.
"$LOAD" --server "127.0.0.1:$EPORT" --certs "$EC" --op bulk --connections 1 --bytes "$BULK" \
  --priority "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM" > "$WORK/l12.out" 2>&1 ||
  fail "TLS 1.2 bulk: $(cat "$WORK/l12.out")"; ok
"$LOAD" --server "127.0.0.1:$EPORT" --certs "$EC" --op bulk --connections 1 --bytes $((BULK / 4)) \
  --priority "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305" > "$WORK/lcc.out" 2>&1 ||
  fail "ChaCha20 bulk: $(cat "$WORK/lcc.out")"; ok
# Resumption against the confined workers too.
"$LOAD" --server "127.0.0.1:$EPORT" --certs "$EC" --op resume --connections 2 --seconds 1 > "$WORK/lres.out" 2>&1 ||
  fail "resumption: $(cat "$WORK/lres.out")"; ok

# Two transfers, one per worker; killing the first worker ends only its connection:
# the other finishes its bytes, all checked.
"$LOAD" --server "127.0.0.1:$EPORT" --certs "$EC" --op bulk --connections 2 --bytes $((2 * GIB)) > "$WORK/kill2.out" 2>&1 &
LPID=$!
EXTRA_PIDS+=("$LPID")
sleep 0.3
kill -9 "$W1"
wait "$LPID" || true
grep -q "count=1 .*errors=1" "$WORK/kill2.out" || fail "one dead worker should cost one connection: $(cat "$WORK/kill2.out")"
kill "$EPID"; wait "$EPID" || true
ok

# ---- the conformance runner and PyKMIP through the split endpoint ----
mkdir -p "$WORK/splitbin"
for f in "$BUILD"/*; do [ -f "$f" ] && [ -x "$f" ] && ln -s "$f" "$WORK/splitbin/$(basename "$f")"; done
rm -f "$WORK/splitbin/keyfleetd"
printf '#!/bin/sh\nexec "%s" --tls-mode split "$@"\n' "$BUILD/keyfleetd" > "$WORK/splitbin/keyfleetd"
chmod +x "$WORK/splitbin/keyfleetd"
# KF_SPLIT_INTEROP=0 skips this part (scripts/test.sh sets it for the ASan build, whose
# release twin runs it; the 1 GiB transfer shrinks there too, see KF_SPLIT_BULK_BYTES).
if [ "${KF_SPLIT_INTEROP:-1}" != 0 ]; then
  for t in test_conformance.sh test_pykmip.sh; do
    KF_BUILD_DIR="$WORK/splitbin" bash "$SRC/tests/system/$t" > "$WORK/$t.out" 2>&1 ||
      fail "$t through the split endpoint: $(tail -5 "$WORK/$t.out")"
    ok
  done
fi
finish
