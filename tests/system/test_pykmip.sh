#!/usr/bin/env bash
# Interoperability with an outside KMIP client: PyKMIP (Debian python3-pykmip) talks to
# keyfleetd --dev over mutually authenticated TLS with the dev "admin" certificate, in
# KMIP 1.0-1.4 and 2.0 (TLS 1.3, and 1.4/2.0 again over TLS 1.2). Every (version, operation) pair in tests/interop/expected-pass.txt
# must pass; pairs outside the list may fail (operations keyfleetd does not offer).
# Also: a client certificate from another CA is refused, PyKMIP refuses a server it
# cannot verify, and the registered key bytes never reach the daemon's log.
source "$(dirname "$0")/lib.sh"
SRC=${KF_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
PY=/usr/bin/python3  # Debian's interpreter: the one that has python3-pykmip
CLIENT="$SRC/tests/interop/test_pykmip_client.py"
EXPECTED="$SRC/tests/interop/expected-pass.txt"

[ -x "$KEYFLEETD" ] || fail "$KEYFLEETD is not built"
# (help text captured first: grep -q closing the pipe early must not look like "no TLS")
HELP=$("$KEYFLEETD" --help 2>&1 || true)
if ! grep -q -- '--kmip-listen' <<< "$HELP"; then
  echo "SKIP: keyfleetd has no TLS listener yet"
  exit 0
fi
"$PY" -c 'import kmip' 2>/dev/null || fail "$PY cannot import kmip: apt-get install python3-pykmip (scripts/install-deps.sh)"
[ -s "$EXPECTED" ] || fail "$EXPECTED is missing or empty"

PORT=$(free_tcp_port)
start_daemon --dev --kmip-listen "127.0.0.1:$PORT"
wait_tcp_port "$PORT"
CERTS="$DATA/certs"
# dev_file NAME...: the first of these files keyfleetd --dev wrote under DATA/certs.
dev_file() {
  local f
  for f in "$@"; do [ -f "$CERTS/$f" ] && { echo "$CERTS/$f"; return 0; }; done
  fail "keyfleetd --dev wrote none of '$*' in $CERTS: $(ls "$CERTS" 2>&1 | tr '\n' ' ')"
}
CA=$(dev_file ca-cert.pem ca.pem)
ADMIN_CERT=$(dev_file admin-cert.pem admin.pem)
ADMIN_KEY=$(dev_file admin-key.pem admin.key)
ok
expect_ok kf domain list; expect_contains "default"  # made at first unseal

# The matrix. --expect makes the run fail when a listed pair fails or does not run.
if ! "$PY" "$CLIENT" --host 127.0.0.1 --port "$PORT" --ca "$CA" --cert "$ADMIN_CERT" \
     --key "$ADMIN_KEY" --expect "$EXPECTED" > "$WORK/interop.out" 2>&1; then
  cat "$WORK/interop.out" >&2
  fail "PyKMIP broke expected-to-pass pairs (see EXPECTED PASS BROKE above)"
fi
grep -E "^(# |[0-9]+ passed)" "$WORK/interop.out"
grep '^NEW PASS' "$WORK/interop.out" || true
ok

# The same over TLS 1.2 (PyKMIP's default negotiates 1.3), for the latest 1.x and 2.0.
if ! "$PY" "$CLIENT" --port "$PORT" --ca "$CA" --cert "$ADMIN_CERT" --key "$ADMIN_KEY" \
     --tls12 --versions 1.4,2.0 --expect "$EXPECTED" > "$WORK/interop12.out" 2>&1; then
  cat "$WORK/interop12.out" >&2
  fail "PyKMIP over TLS 1.2 broke expected-to-pass pairs"
fi
grep -q "^# 1.4 over TLSv1.2 " "$WORK/interop12.out" || fail "--tls12 did not give TLS 1.2: $(grep '^#' "$WORK/interop12.out")"
grep -E "^(# |[0-9]+ passed)" "$WORK/interop12.out"
ok

# Refusals. A certificate from another CA: keyfleetd must refuse the client.
"$SRC/bench/pykmip-peer.sh" certs "$WORK/foreign" >/dev/null 2>&1 || fail "cannot make foreign certificates"
if "$PY" "$CLIENT" --port "$PORT" --ca "$CA" --cert "$WORK/foreign/client.pem" \
     --key "$WORK/foreign/client.key" --versions 1.4 > "$WORK/out" 2>&1; then
  fail "keyfleetd served a client whose certificate chains to a foreign CA"
fi
expect_contains "^0 passed"
# PyKMIP given another CA must not accept keyfleetd's server certificate.
if "$PY" "$CLIENT" --port "$PORT" --ca "$WORK/foreign/ca.pem" --cert "$ADMIN_CERT" \
     --key "$ADMIN_KEY" --versions 2.0 > "$WORK/out" 2>&1; then
  fail "PyKMIP accepted a server certificate from an untrusted CA"
fi
expect_contains "^0 passed"

# The registered keys (AES bytes 00..1f, HMAC bytes 20..3f) and the secret data never
# reach the log, in any case or spacing.
stop_daemon
if tr -d ' :' < "$WORK/daemon.log" | grep -qi -e '000102030405060708090a0b0c0d0e0f' \
     -e '202122232425262728292a2b2c2d2e2f' -e 'interop secret data'; then
  fail "registered key material appears in the daemon log"
fi
ok
finish
