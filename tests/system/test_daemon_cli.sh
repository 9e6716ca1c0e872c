#!/usr/bin/env bash
# The daemon and CLI end to end on the soft backend: sealed start, init with
# shares, refusal while sealed, unseal with M of N, wrong shares, domains,
# the key lifecycle through the CLI, seal again, restart, JSON output, --help.
source "$(dirname "$0")/lib.sh"

expect_ok "$KEYFLEETD" --help; expect_contains "--dev"
expect_ok "$KEYFLEET" --help; expect_contains "audit verify"
expect_refusal "cannot connect" kf status

start_daemon
expect_ok kf status; expect_contains "initialised    no"
echo kfs1-junk > "$WORK/junk"; expect_refusal "KF_ERR_NOT_INIT" kf unseal --share-file "$WORK/junk"
expect_refusal "threshold" kf init --shares 2 --threshold 3
expect_ok kf --json init --shares 5 --threshold 3
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["threshold"]==3 and len(d["shares"])==5; [print(s) for s in d["shares"]]' "$WORK/out" > "$WORK/shares" || fail "init JSON"
ok
mapfile -t SHARES < "$WORK/shares"
expect_refusal "KF_ERR_ALREADY_INIT" kf init --shares 3 --threshold 2

# Sealed: every key operation is refused with a clear message.
expect_refusal "KF_ERR_SEALED" kf domain create VENDOR
expect_refusal "KF_ERR_SEALED" kf key create --domain VENDOR

# A share with a typo is refused before it counts.
bad=${SHARES[0]%?}0; [ "$bad" = "${SHARES[0]}" ] && bad=${SHARES[0]%?}1
echo "$bad" > "$WORK/bad"; expect_refusal "KF_ERR_SHARE" kf unseal --share-file "$WORK/bad"
# The same share twice is refused.
echo "${SHARES[1]}" > "$WORK/s"; expect_ok kf unseal --share-file "$WORK/s"; expect_contains "1 of 3"
expect_refusal "KF_ERR_SHARE" kf unseal --share-file "$WORK/s"
echo "${SHARES[3]}" > "$WORK/s"; expect_ok kf unseal --share-file "$WORK/s"; expect_contains "2 of 3"
echo "${SHARES[4]}" | kf unseal > "$WORK/out" 2>&1 || fail "unseal from stdin"; expect_contains "Unsealed"
expect_refusal "KF_ERR_ALREADY_UNSEALED" kf unseal --share-file "$WORK/s"

# Domains and isolation.
expect_ok kf domain create VENDOR
expect_ok kf domain create USPS
expect_ok kf domain create DE --parent USPS
expect_refusal "KF_ERR_EXISTS" kf domain create VENDOR
expect_refusal "KF_ERR_NAME" kf domain create "bad/name"
expect_refusal "KF_ERR_DOMAIN" kf domain create FR --parent NOWHERE
expect_ok kf --json domain list
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); n={x["name"]:x for x in d}; assert n["DE"]["parent"]=="USPS" and n["VENDOR"]["parent"] is None' "$WORK/out" || fail "domain list JSON"; ok

# Keys: ids per domain start at 1 and increase independently.
expect_ok kf key create --domain VENDOR --name meter-1; [ "$(cat "$WORK/out")" = "VENDOR/1" ] || fail "first id"; ok
expect_ok kf key create --domain VENDOR --alg hmac-sha256; [ "$(cat "$WORK/out")" = "VENDOR/2" ] || fail "second id"; ok
expect_ok kf key create --domain USPS --alg secret --length 512; [ "$(cat "$WORK/out")" = "USPS/1" ] || fail "usps id"; ok
expect_refusal "KF_ERR_KEY_SIZE" kf key create --domain VENDOR --length 64
expect_refusal "KF_ERR_DOMAIN\|ItemNotFound" kf key create --domain NOWHERE
expect_refusal "ItemNotFound" kf key show USPS/2
expect_refusal "ItemNotFound" kf key show VENDOR/99
expect_refusal "ItemNotFound" kf key show garbage

# Lifecycle through the CLI: the forbidden transitions are refused.
expect_ok kf key activate VENDOR/1
expect_refusal "KF_ERR_TRANSITION" kf key activate VENDOR/1
expect_refusal "KF_ERR_TRANSITION" kf key destroy VENDOR/1
expect_ok kf key show VENDOR/1 --export; expect_contains "key material"
expect_ok kf key revoke VENDOR/1 --reason superseded
expect_ok kf --json key show VENDOR/1
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["state"]=="Deactivated" and d["revocation_reason"]=="Superseded"' "$WORK/out" || fail "revoked state"; ok
expect_ok kf key destroy VENDOR/1
expect_refusal "KF_ERR_STATE\|WrongKeyLifecycleState" kf key show VENDOR/1 --export
expect_ok kf key revoke VENDOR/1 --reason compromise
expect_ok kf --json key show VENDOR/1
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["state"]=="DestroyedCompromised"' "$WORK/out" || fail "destroyed-compromised"; ok
expect_refusal "KF_ERR_TRANSITION" kf key revoke VENDOR/1 --reason compromise
expect_ok kf key list --domain VENDOR --state active
expect_ok kf --json key list --domain VENDOR
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert [x["uid"] for x in d]==["VENDOR/1","VENDOR/2"]' "$WORK/out" || fail "key list"; ok

# Seal: refused again; a restart starts sealed; M shares bring it back.
expect_ok kf seal
expect_refusal "KF_ERR_SEALED" kf key create --domain VENDOR
stop_daemon
start_daemon
expect_ok kf status; expect_contains "sealed         yes"
for s in 0 2 4; do echo "${SHARES[$s]}" > "$WORK/s"; expect_ok kf unseal --share-file "$WORK/s"; done
expect_ok kf key create --domain VENDOR; [ "$(cat "$WORK/out")" = "VENDOR/3" ] || fail "ids continue after restart"; ok
expect_ok kf key show VENDOR/2 --export

# Shares of another server do not unseal this one.
OTHER="$WORK/other"; mkdir -p "$OTHER"
"$KEYFLEETD" --dir "$OTHER" --log-file "$WORK/other.log" & OPID=$!
for _ in $(seq 1 100); do [ -S "$OTHER/keyfleetd.sock" ] && break; sleep 0.05; done
"$KEYFLEET" --dir "$OTHER" --json init --shares 3 --threshold 2 > "$WORK/oshares"
kill $OPID; wait $OPID || true
expect_ok kf seal
python3 -c 'import json,sys; [print(s) for s in json.load(open(sys.argv[1]))["shares"]]' "$WORK/oshares" > "$WORK/olist"
head -1 "$WORK/olist" > "$WORK/s"; expect_refusal "KF_ERR_SHARE\|KF_ERR_SHARES_WRONG" kf unseal --share-file "$WORK/s"

# The audit trail recorded all of it and verifies.
expect_ok kf audit verify; expect_contains "intact"
expect_ok kf --json audit show
python3 - "$WORK/out" <<'PY' || fail "audit content"
import json, sys
recs = json.load(open(sys.argv[1]))
ops = [r["operation"] for r in recs]
assert "init" in ops and "unseal" in ops and "seal" in ops and "Destroy" in ops, ops
assert any(r["result"] == "KF_ERR_SEALED" for r in recs)
assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
shares = open(sys.argv[1]).read()
PY
ok
for s in "${SHARES[@]}"; do
  grep -q -- "$s" "$WORK/out" && fail "a share appears in the audit trail"
  grep -q -- "$s" "$WORK/daemon.log" && fail "a share appears in the log"
done; ok
stop_daemon
finish
