#!/usr/bin/env bash
# KMIP over TLS against the real daemon, with gnutls-cli as an independent
# client: dev certificates, TLS 1.3 and 1.2, refusals (no certificate, foreign
# CA, TLS 1.1, 'user' may not Create), garbage, and a server key in SoftHSM2.
source "$(dirname "$0")/lib.sh"
command -v gnutls-cli > /dev/null || fail "gnutls-cli not found (apt-get install gnutls-bin)"
TTLV="$BUILD/kf-ttlv"
CERTS="$DATA/certs"

# tls_send NAME REQUEST.bin [gnutls-cli options...]: one exchange; the answer in
# $WORK/NAME.resp, gnutls-cli's report in $WORK/NAME.log. Never fails itself.
tls_send() {
  local name=$1 req=$2; shift 2
  (cat "$req"; sleep 1) | timeout 20 gnutls-cli --port "$PORT" --x509cafile "$CERTS/ca-cert.pem" \
    --logfile "$WORK/$name.log" "$@" 127.0.0.1 > "$WORK/$name.resp" 2> "$WORK/$name.err" || true
}
as_admin=(--x509certfile "$CERTS/admin-cert.pem" --x509keyfile "$CERTS/admin-key.pem")
as_user=(--x509certfile "$CERTS/user-cert.pem" --x509keyfile "$CERTS/user-key.pem")

# expect_answer NAME PATTERN: the answer is one TTLV message whose dump says PATTERN.
expect_answer() {
  [ -s "$WORK/$1.resp" ] || fail "$1: no answer ($(cat "$WORK/$1.log" "$WORK/$1.err" 2>/dev/null | tail -3))"
  "$TTLV" dump "$WORK/$1.resp" > "$WORK/$1.dump" 2>&1 || fail "$1: answer is not TTLV"
  grep -q -- "$2" "$WORK/$1.dump" || fail "$1: answer lacks '$2': $(cat "$WORK/$1.dump")"
  ok
}
expect_no_answer() {
  [ ! -s "$WORK/$1.resp" ] || fail "$1: expected a refused connection, got an answer"
  ok
}
expect_log() { grep -q -- "$1" "$WORK/daemon.log" || fail "daemon log lacks '$1'"; ok; }

# ---- requests, written as KMIP XML and encoded by kf-ttlv ----
kmip_requests
head -c 256 /dev/urandom > "$WORK/garbage.bin"

# ---- dev mode: certificates generated at first start ----
start_daemon --dev --kmip-listen 127.0.0.1:0
PORT=$(tls_port)
[ -n "$PORT" ] || fail "no TLS port in the log"
ok
for f in ca-cert.pem ca-key.pem server-cert.pem server-key.pem admin-cert.pem admin-key.pem \
         user-cert.pem user-key.pem identities; do
  [ "$(stat -c %a "$CERTS/$f")" = 600 ] || fail "$CERTS/$f is not mode 0600"
done
ok
expect_log "dev TLS client 'admin'"
expect_ok kf domain list; expect_contains "default"  # made at first unseal

tls_send tls13 "$DISCOVER" "${as_admin[@]}" --priority "NORMAL:-VERS-ALL:+VERS-TLS1.3"
expect_answer tls13 "Success"
grep -q "TLS1.3" "$WORK/tls13.log" || fail "gnutls-cli did not negotiate TLS 1.3"
ok
tls_send tls12 "$DISCOVER" "${as_admin[@]}" --priority "NORMAL:-VERS-ALL:+VERS-TLS1.2"
expect_answer tls12 "Success"
grep -q "TLS1.2" "$WORK/tls12.log" || fail "gnutls-cli did not negotiate TLS 1.2"
ok
tls_send admin_create "$CREATE" "${as_admin[@]}"
expect_answer admin_create "default/1"

# 'user' has the use role only: Create is refused by the KMIP layer.
tls_send user_create "$CREATE" "${as_user[@]}"
expect_answer user_create "PermissionDenied"

# Refusals at connect, each logged with its reason.
tls_send nocert "$DISCOVER"
expect_no_answer nocert
expect_log "sent no certificate"

certtool --generate-privkey --key-type ecdsa --outfile "$WORK/rogue-key.pem" 2> /dev/null
printf 'cn = admin\norganization = keyfleet dev\ntls_www_client\nexpiration_days = 30\n' > "$WORK/rogue.tmpl"
certtool --generate-self-signed --load-privkey "$WORK/rogue-key.pem" --template "$WORK/rogue.tmpl" \
  --outfile "$WORK/rogue-cert.pem" 2> /dev/null || fail "certtool"
tls_send rogue "$DISCOVER" --x509certfile "$WORK/rogue-cert.pem" --x509keyfile "$WORK/rogue-key.pem"
expect_no_answer rogue
expect_log "issuer is unknown"

tls_send tls11 "$DISCOVER" "${as_admin[@]}" --priority "NORMAL:-VERS-ALL:+VERS-TLS1.1"
expect_no_answer tls11
expect_log "unsupported version"

# Garbage after the handshake: closed with a log line; the next client is served.
tls_send garbage "$WORK/garbage.bin" "${as_admin[@]}"
expect_log "closed: "
tls_send after_garbage "$DISCOVER" "${as_admin[@]}"
expect_answer after_garbage "Success"

# No private key or PEM body reaches the log.
if grep -q "PRIVATE KEY" "$WORK/daemon.log"; then fail "key material in the log"; fi
ok
stop_daemon

# ---- without --dev, --kmip-listen needs every file ----
expect_refusal "needs --kmip-ca" "$KEYFLEETD" --dir "$WORK/prod" --kmip-listen 127.0.0.1:0
printf 'subject-CN=admin roles=sudo domains=*\n' > "$WORK/bad-identities"
expect_refusal "line 1" "$KEYFLEETD" --dir "$WORK/prod" --kmip-listen 127.0.0.1:0 \
  --kmip-ca "$CERTS/ca-cert.pem" --kmip-cert "$CERTS/server-cert.pem" \
  --kmip-key "$CERTS/server-key.pem" --kmip-identities "$WORK/bad-identities"

# ---- the server key in a PKCS#11 token (SoftHSM2) ----
SOFTHSM=/usr/lib/softhsm/libsofthsm2.so
if [ -f "$SOFTHSM" ] && command -v p11tool > /dev/null; then
  eval "$(bash "$(dirname "$0")/softhsm-setup.sh" "$WORK/hsm" kmip-tls)"
  printf '1234\n' > "$WORK/pin"; chmod 600 "$WORK/pin"
  GNUTLS_PIN=1234 p11tool --provider "$SOFTHSM" --login --write --load-privkey "$CERTS/server-key.pem" \
    --label kmip-server --mark-private --mark-sign "pkcs11:token=kmip-tls" > /dev/null 2>&1 || fail "p11tool import"
  start_daemon --dev --kmip-listen 127.0.0.1:0 --kmip-cert "$CERTS/server-cert.pem" \
    --kmip-key "pkcs11:token=kmip-tls;object=kmip-server;type=private" \
    --kmip-pkcs11-module "$SOFTHSM" --kmip-pin-file "$WORK/pin"
  PORT=$(tls_port)
  tls_send hsm "$DISCOVER" "${as_admin[@]}"
  expect_answer hsm "Success"
  stop_daemon
  # The key is only reachable with the token's PIN.
  printf '9999\n' > "$WORK/badpin"; chmod 600 "$WORK/badpin"
  expect_refusal "cannot start the KMIP TLS listener" "$KEYFLEETD" --dir "$DATA" --dev \
    --kmip-listen 127.0.0.1:0 --kmip-cert "$CERTS/server-cert.pem" \
    --kmip-key "pkcs11:token=kmip-tls;object=kmip-server;type=private" \
    --kmip-pkcs11-module "$SOFTHSM" --kmip-pin-file "$WORK/badpin"
else
  echo "test_tls.sh: SoftHSM2 or p11tool missing, PKCS#11 server key not tested" >&2
fi
finish
