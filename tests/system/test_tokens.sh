#!/usr/bin/env bash
# Token verification end to end (docs/manufacturing.md "Tokens"): devices made
# on a simulated line (keyfleet-install), registered, printing 100,000 pieces
# (keyfleet-device meter print); every piece verifies good at keyfleetd
# (keyfleet-verify send) and offline at a Tin (keyfleet-verify check, vendor
# and postal tokens); altered data is bad, a period whose keys the Tin did not
# fetch is refused, a device not yet Active is refused, a piece presented
# again is a duplicate (at keyfleetd also across a restart).
source "$(dirname "$0")/lib.sh"
INSTALL="$BUILD/keyfleet-install"
DEVICE="$BUILD/keyfleet-device"
VERIFY="$BUILD/keyfleet-verify"
DEVICES=20
PER_DEVICE=5000 # 100,000 pieces
PORT=$(free_tcp_port)

# The dev certificates come with the first start; the admin certificate then
# also gets the manufacturing roles (Steel, registrar, verifier).
start_daemon --dev --kmip-listen "127.0.0.1:$PORT"
wait_tcp_port "$PORT"
stop_daemon
cat > "$WORK/identities" <<'EOF'
subject-CN=admin subject-O="keyfleet dev" roles=admin,manage,use,export,steel,registrar,verifier domains=*
subject-CN=user subject-O="keyfleet dev" roles=use domains=default default=default
EOF
start_daemon --dev --kmip-listen "127.0.0.1:$PORT" --kmip-identities "$WORK/identities"
wait_tcp_port "$PORT"
C="$DATA/certs"
TLS=(--server "127.0.0.1:$PORT" --ca "$C/ca-cert.pem" --cert "$C/admin-cert.pem" --key "$C/admin-key.pem")
USER_TLS=(--server "127.0.0.1:$PORT" --ca "$C/ca-cert.pem" --cert "$C/user-cert.pem" --key "$C/user-key.pem")
TODAY=$(date -u +%Y%m%d)
PERIOD=${TODAY:0:6}

# ---- domains, a line, registration ----
expect_ok kf mfg setup --domain VE --kind vendor
expect_ok kf mfg setup --domain USPS --kind postal --country US
expect_ok "$INSTALL" init --state "$WORK/steel" --role-id S00000001
expect_ok "$INSTALL" enroll --state "$WORK/steel" --domain VE --domain USPS "${TLS[@]}"
expect_ok "$INSTALL" line --state "$WORK/steel" --vendor VE --postal USPS --count "$DEVICES" \
  --devices "$WORK/devs" "${TLS[@]}"
expect_ok "$INSTALL" register --state "$WORK/steel" --devices "$WORK/devs" --country US \
  --indicia-prefix IND --date now "${TLS[@]}"
# One more device, installed but never registered: not Active.
expect_ok "$INSTALL" line --state "$WORK/steel" --vendor VE --postal USPS --count 1 --first 100 \
  --devices "$WORK/late" "${TLS[@]}"
LATE=SN00000100
[ -f "$WORK/late/$LATE.state" ] || fail "no state for the unregistered device $LATE"; ok

# ---- 100,000 pieces, the devices printing side by side ----
pids=()
for f in "$WORK"/devs/*.state; do
  "$DEVICE" meter print --state "$f" --vendor VE --postal USPS --date "$TODAY" --value 55 \
    --postal-code 10001 --count "$PER_DEVICE" > "$f.pieces" 2> "$f.err" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "meter print failed: $(cat "$WORK"/devs/*.err)"; done
cat "$WORK"/devs/*.state.pieces > "$WORK/pieces"
N=$(wc -l < "$WORK/pieces")
[ "$N" -eq $((DEVICES * PER_DEVICE)) ] || fail "printed $N pieces, not $((DEVICES * PER_DEVICE))"; ok
grep -qv '^KF1 ' "$WORK/pieces" && fail "a printed line is not an indicium"; ok

# ---- a Tin: enrolled in both domains, this month's keys ----
expect_ok "$VERIFY" init --state "$WORK/tin" --role-id T00000001
expect_ok "$VERIFY" enroll --state "$WORK/tin" --domain VE "${TLS[@]}"
expect_ok "$VERIFY" enroll --state "$WORK/tin" --domain USPS "${TLS[@]}"
expect_ok "$VERIFY" fetch --state "$WORK/tin" --domain VE --periods "$PERIOD-$PERIOD" "${TLS[@]}"
expect_contains "$((DEVICES)) token keys"
expect_ok "$VERIFY" fetch --state "$WORK/tin" --domain USPS --periods "$PERIOD-$PERIOD" "${TLS[@]}"

# Offline: every piece good, vendor token with VE's keys, postal token with USPS's.
expect_ok "$VERIFY" check --state "$WORK/tin" --domain VE "$WORK/pieces"
expect_contains "good=$N bad=0 duplicate=0 refused=0"
[ "$(grep -c ' good$' "$WORK/out")" -eq "$N" ] || fail "not one good line per piece"; ok
expect_ok "$VERIFY" check --state "$WORK/tin" --domain USPS --postal "$WORK/pieces"
expect_contains "good=$N bad=0 duplicate=0 refused=0"
# The vendor token is not the postal one.
head -5 "$WORK/pieces" > "$WORK/five"
"$VERIFY" check --state "$WORK/tin" --domain USPS "$WORK/five" > "$WORK/out" 2> "$WORK/err" \
  && fail "vendor tokens passed as postal ones"; ok
expect_contains "good=0 bad=5"

# At keyfleetd: every piece good (batches of 10,000), from standard input too.
expect_ok "$VERIFY" send --domain VE "$WORK/pieces" "${TLS[@]}"
expect_contains "good=$N bad=0 duplicate=0 refused=0"

# ---- a piece presented again: duplicate, at both, and across a restart ----
head -3 "$WORK/pieces" > "$WORK/again"
"$VERIFY" check --state "$WORK/tin" --domain VE "$WORK/again" > "$WORK/out" 2> "$WORK/err" \
  && fail "a re-presented piece passed check"; ok
expect_contains "1 duplicate"
expect_contains "good=0 bad=0 duplicate=3 refused=0"
expect_ok "$VERIFY" check --state "$WORK/tin" --domain VE --allow-bad "$WORK/again"
expect_contains "duplicate=3"
# A torn last record of the duplicate file (a crash while appending) is cut off, the rest kept.
printf 'SN0000' >> "$WORK/tin/seen/VE"
expect_ok "$VERIFY" check --state "$WORK/tin" --domain VE --allow-bad "$WORK/again"
expect_contains "duplicate=3"
grep -q "torn record" "$WORK/err" || fail "no word of the torn record"; ok
[ $(( $(stat -c %s "$WORK/tin/seen/VE") % 20 )) -eq 0 ] || fail "torn record not cut off"; ok
"$VERIFY" send --domain VE - "${TLS[@]}" < "$WORK/again" > "$WORK/out" 2> "$WORK/err" \
  && fail "a re-presented piece passed send"; ok
expect_contains "good=0 bad=0 duplicate=3 refused=0"
stop_daemon
start_daemon --dev --kmip-listen "127.0.0.1:$PORT" --kmip-identities "$WORK/identities"
wait_tcp_port "$PORT"
"$VERIFY" send --domain VE "$WORK/again" "${TLS[@]}" > "$WORK/out" 2> "$WORK/err" \
  && fail "a re-presented piece passed send after a restart"; ok
expect_contains "good=0 bad=0 duplicate=3 refused=0"

# ---- fresh pieces for the negative cases ----
D1="$WORK/devs/SN00000001.state"
expect_ok "$DEVICE" meter print --state "$D1" --vendor VE --postal USPS --date "$TODAY" --value 70 \
  --postal-code 10001 --count 4
cp "$WORK/out" "$WORK/fresh"
# Altered data (the tokens and their check symbols untouched): value, count, postal code.
awk '{ $4 = $4 + 1; print }' "$WORK/fresh" > "$WORK/altered"
awk '{ $5 = $5 + 1000000; print }' "$WORK/fresh" >> "$WORK/altered"
awk '{ $6 = "99999"; print }' "$WORK/fresh" >> "$WORK/altered"
# An altered token digit: its check symbol no longer fits, so the line is malformed (refused).
awk '{ t = $7; c = substr(t, 1, 1); $7 = (c == "0" ? "1" : "0") substr(t, 2); print }' \
  "$WORK/fresh" > "$WORK/digit"
for who in check send; do
  if [ $who = check ]; then run=("$VERIFY" check --state "$WORK/tin" --domain VE)
  else run=("$VERIFY" send --domain VE "${TLS[@]}"); fi
  "${run[@]}" "$WORK/altered" > "$WORK/out" 2> "$WORK/err" && fail "$who: altered data passed"; ok
  expect_contains "good=0 bad=12 duplicate=0 refused=0"
  "${run[@]}" "$WORK/digit" > "$WORK/out" 2> "$WORK/err" && fail "$who: altered token passed"; ok
  expect_contains "good=0 bad=0 duplicate=0 refused=4"
done
# The untouched pieces are still good (bad ones are not recorded), at both.
expect_ok "$VERIFY" check --state "$WORK/tin" --domain VE "$WORK/fresh"
expect_contains "good=4 bad=0"
expect_ok "$VERIFY" send --domain VE "$WORK/fresh" "${TLS[@]}"
expect_contains "good=4 bad=0"

# A device not yet Active: a well-formed piece with its MSN is refused by both.
awk -v m="$LATE" 'NR <= 2 { $2 = m; print }' "$WORK/pieces" > "$WORK/late.pieces"
"$VERIFY" check --state "$WORK/tin" --domain VE "$WORK/late.pieces" > "$WORK/out" 2> "$WORK/err" \
  && fail "an unregistered device's piece passed check"; ok
expect_contains "good=0 bad=0 duplicate=0 refused=2"
expect_contains "unknown device"
"$VERIFY" send --domain VE "$WORK/late.pieces" "${TLS[@]}" > "$WORK/out" 2> "$WORK/err" \
  && fail "an unregistered device's piece passed send"; ok
expect_contains "good=0 bad=0 duplicate=0 refused=2"
# ... and it cannot print either.
expect_refusal "KF_ERR_METER_NOT_REGISTERED" "$DEVICE" meter print --state "$WORK/late/$LATE.state" \
  --vendor VE --postal USPS --date "$TODAY" --value 1 --postal-code 10001

# A period the Tin did not fetch: keys of another month only.
OTHER=$((PERIOD % 100 == 12 ? PERIOD - 11 : PERIOD + 1))
expect_ok "$VERIFY" init --state "$WORK/tin2" --role-id T00000002
expect_ok "$VERIFY" enroll --state "$WORK/tin2" --domain VE "${TLS[@]}"
expect_ok "$VERIFY" fetch --state "$WORK/tin2" --domain VE --periods "$OTHER-$OTHER" "${TLS[@]}"
"$VERIFY" check --state "$WORK/tin2" --domain VE "$WORK/five" > "$WORK/out" 2> "$WORK/err" \
  && fail "pieces of a period not fetched passed"; ok
expect_contains "good=0 bad=0 duplicate=0 refused=5"
expect_contains "period not held"

# ---- refusals of the export ----
# A reversed or too long range never leaves the Tin (the server's own refusals
# of both are in tests/unit/test_kms_tokens.c).
expect_refusal "at most 24" "$VERIFY" fetch --state "$WORK/tin" --domain VE \
  --periods 202612-202601 "${TLS[@]}"
expect_refusal "at most 24" "$VERIFY" fetch --state "$WORK/tin" --domain VE \
  --periods 202601-202801 "${TLS[@]}"
# Not enrolled in the domain (tin2 is in VE only).
expect_refusal "KF_ERR_MFG_ROLE" "$VERIFY" fetch --state "$WORK/tin2" --domain USPS \
  --periods "$PERIOD-$PERIOD" "${TLS[@]}"
# The 'use' role may verify (in its domains) but never export token keys.
expect_refusal "KF_ERR_MFG_COMMAND" "$VERIFY" fetch --state "$WORK/tin" --domain VE \
  --periods "$PERIOD-$PERIOD" "${USER_TLS[@]}"
# A tampered record in the state directory is refused at load.
cp "$WORK/tin/tokens/VE" "$WORK/tokens.bak"
python3 - "$WORK/tin/tokens/VE" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 1; open(p, "wb").write(b)
PY
"$VERIFY" check --state "$WORK/tin" --domain VE "$WORK/five" > "$WORK/out" 2> "$WORK/err" \
  && fail "a tampered token key record was used"; ok
grep -q "KF_ERR" "$WORK/err" || fail "no reason for the tampered record: $(cat "$WORK/err")"; ok
cp "$WORK/tokens.bak" "$WORK/tin/tokens/VE"

# ---- the audit trail: one TokenVerify per batch with counts, no tokens ----
from=1; mkdir "$WORK/audit"
while :; do
  expect_ok kf --json audit show --from "$from" --limit 500
  cp "$WORK/out" "$WORK/audit/$from.json"
  n=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/out")
  [ "$n" -lt 500 ] && break
  from=$((from + 500))
done
python3 - "$WORK/audit" "$WORK/pieces" <<'PY' || fail "audit of token verification"
import glob, json, os, sys
recs = [r for f in glob.glob(os.path.join(sys.argv[1], "*.json")) for r in json.load(open(f))]
tv = [r for r in recs if r["operation"] == "TokenVerify" and r["result"] == "ok"]
assert len(tv) >= 10, len(tv)
assert all("good=" in r["detail"] and "refused=" in r["detail"] for r in tv)
assert sum(int(r["detail"].split("good=")[1].split()[0]) for r in tv) >= 100000
tokens = {l.split()[6][:10] for l in open(sys.argv[2]).read().splitlines()[:1000]}
text = json.dumps(recs)
assert not any(t in text for t in tokens)
assert any(r["operation"] == "TokenKeyExport" and r["result"] == "ok" for r in recs)
PY
ok
stop_daemon
finish
