#!/usr/bin/env bash
# The CLI's remote mode: the same commands over KMIP/TLS with a client
# certificate, authorised by the roles the server's identity map gives it.
source "$(dirname "$0")/lib.sh"
PORT=$(free_tcp_port)
start_daemon --dev --kmip-listen "127.0.0.1:$PORT"
wait_tcp_port "$PORT"
C="$DATA/certs"
admin() { "$KEYFLEET" --server "127.0.0.1:$PORT" --ca "$C/ca-cert.pem" --cert "$C/admin-cert.pem" --key "$C/admin-key.pem" "$@"; }
user() { "$KEYFLEET" --server "127.0.0.1:$PORT" --ca "$C/ca-cert.pem" --cert "$C/user-cert.pem" --key "$C/user-key.pem" "$@"; }

expect_refusal "needs --ca" "$KEYFLEET" --server "127.0.0.1:$PORT" status
expect_ok admin status; expect_contains "sealed         no"
expect_ok admin domain create REMOTE
expect_ok admin key create --domain REMOTE --name over-tls; [ "$(cat "$WORK/out")" = "REMOTE/1" ] || fail "remote create"; ok
expect_ok admin key activate REMOTE/1
expect_ok admin --json key show REMOTE/1 --export
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["object"]["state"]=="Active" and len(d["key_material"])==64' "$WORK/out" || fail "remote export"; ok
# The same key seen through the admin socket: one server, one store.
expect_ok kf --json key show REMOTE/1
expect_contains '"name":"over-tls"'
# 'user' may use keys in 'default' only: no administration, no management elsewhere.
expect_refusal "PermissionDenied" user domain create NOPE
expect_refusal "PermissionDenied" user key create --domain REMOTE
expect_refusal "PermissionDenied" user key show REMOTE/1
expect_refusal "PermissionDenied" user audit verify
# Refusals and remote actions are in the audit trail under the certificates' names.
expect_ok kf --json audit show
python3 - "$WORK/out" <<'PY' || fail "audit names the certificates"
import json, sys
recs = json.load(open(sys.argv[1]))
assert any(r["actor"].startswith("cert:") and "admin" in r["actor"] and r["operation"] == "Create" for r in recs)
assert any(r["actor"].startswith("cert:") and "user" in r["actor"] and r["result"] == "KF_ERR_PERM" for r in recs)
PY
ok
# A wrong CA on the client side: the server's certificate does not verify.
OTHER="$WORK/other-certs"
"$KEYFLEETD" --dev --dir "$WORK/other" --kmip-listen 127.0.0.1:0 --log-file "$WORK/other.log" & OPID=$!
for _ in $(seq 1 100); do [ -f "$WORK/other/certs/ca-cert.pem" ] && break; sleep 0.05; done
kill $OPID; wait $OPID 2>/dev/null || true
expect_refusal "cannot reach" "$KEYFLEET" --server "127.0.0.1:$PORT" --ca "$WORK/other/certs/ca-cert.pem" \
  --cert "$C/admin-cert.pem" --key "$C/admin-key.pem" status
stop_daemon
finish
