#!/usr/bin/env bash
# Attacks on pairwise KEK distribution through kf-relay (DESIGN §7, seed EP 0 948 158
# [0039]-[0041]): the meter reaches keyfleetd through a gateway relay "gw" (plain TTLV
# in, KMIP over TLS out: the seed's unsecured line 37) and the base through a relay
# "link". Each attack must be refused with its exact reason, and no device may take a
# stale or modified KEK: device states are compared before and after.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pairing_lib.sh"
start_kms
new_device meter-1
new_device base-1
start_base base-1
T=(--timeout 4000)
N=0
# relays GW_SCRIPT LINK_SCRIPT: fresh relays (recording into $WORK/gw-N.rec, link-N.rec).
relays() {
  [ "$N" -eq 0 ] || { stop_relay "gw-$N"; stop_relay "link-$N"; }
  N=$((N + 1)); GW="gw-$N"; LINK="link-$N"
  start_relay "$GW" "$KPORT" tls "$1"
  start_relay "$LINK" "${BASE_PORT[base-1]}" plain "$2"
}
via() { meter_via meter-1 "127.0.0.1:${RELAY_PORT[$LINK]}" base-1 "127.0.0.1:${RELAY_PORT[$GW]}" "$@"; }
snap() { dshow meter-1 "$WORK/$1.m"; dshow base-1 "$WORK/$1.b"; }
# unchanged SNAP WHAT [meter-keks]: both devices as in SNAP (or the meter's KEKs only:
# a meter that accepted its own part moved its counter, which is right).
unchanged() {
  dshow meter-1 "$WORK/now.m"; dshow base-1 "$WORK/now.b"
  same_state "$WORK/$1.b" "$WORK/now.b" "$2: the base changed"
  if [ "${3:-}" = meter-keks ]; then
    [ "$(jv "$WORK/$1.m" 'd["keks"]')" = "$(jv "$WORK/now.m" 'd["keks"]')" ] || fail "$2: the meter's KEKs changed"; ok
  else
    same_state "$WORK/$1.m" "$WORK/now.m" "$2: the meter changed"
  fi
}
base_log_has() {
  for _ in $(seq 1 100); do grep -q -- "$1" "$WORK/base-1.base.log" && { ok; return 0; }; sleep 0.05; done
  fail "base log lacks '$1'"
}

# ---- 0. a clean pairing and two sessions through both relays, recorded ----
relays "" ""
REC_GW="$WORK/$GW.rec"; REC_LINK="$WORK/$LINK.rec"
expect_ok via --sessions 2 --json
check "$WORK/out" 'd["result"]=="ok" and d["sessions"]==2 and d["counter"]==1' "pairing through the relays"
KEK_OLD=$(jv "$WORK/out" 'd["kek_id"]')
grep -q "up #1 RequestMessage KeyfleetPairKeyRequest" "$WORK/$GW.relay.log" || fail "gateway log"; ok
grep -q "down #1 ResponseMessage KeyfleetPairKeyRequest Success kek=$KEK_OLD" "$WORK/$GW.relay.log" || fail "gateway log: M"; ok
grep -q "up #2 RequestMessage KeyfleetPairAckReport" "$WORK/$GW.relay.log" || fail "gateway log: acks"; ok
grep -q "up #1 KeyfleetPairPart kek=$KEK_OLD" "$WORK/$LINK.relay.log" || fail "link log: SM_B"; ok
grep -q "up #2 KeyfleetSessionKey kek=$KEK_OLD seq=1" "$WORK/$LINK.relay.log" || fail "link log: M3"; ok
for f in "$REC_GW/1-down.ttlv" "$REC_GW/2-up.ttlv" "$REC_LINK/1-up.ttlv" "$REC_LINK/2-up.ttlv"; do
  [ -s "$f" ] || fail "not recorded: $f"
done; ok
# The next pairing makes the recorded M old: the seed's scenario (a repaired base is
# paired again; the attacker has the earlier M and, say, cracked its KEK).
expect_ok via --sessions 1 --json
KEK_NEW=$(jv "$WORK/out" 'd["kek_id"]')
[ "$KEK_NEW" -gt "$KEK_OLD" ] || fail "second pairing"; ok

# ---- 1. replayed old M into a new pairing: refused as stale ([0039]-[0041]) ----
# The meter's stale ack names a KEK it acknowledged long ago, so keyfleetd refuses the ack
# report as a replay; the stale verdict is retried all the same (once), and the attacker
# replays again: the result is the stale verdict, the server's refusal said alongside.
snap s1
server_dev meter-1 "$WORK/s1.srv"
relays "down @KeyfleetPairPart replace $REC_GW/1-down.ttlv" ""
expect_refusal "KF_ERR_PAIR_STALE" via --sessions 0 "${T[@]}"
grep -q "this device refused its part SM_A: .*(KF_ERR_PAIR_STALE)" "$WORK/err" || fail "stale verdict: $(cat "$WORK/err")"; ok
grep -q "the key server said: KF_ERR_ACK_REPLAY.*(KeyfleetPairAckReport refused: PermissionDenied)" "$WORK/err" || fail "server refusal: $(cat "$WORK/err")"; ok
grep -q "replace with $REC_GW/1-down.ttlv" "$WORK/$GW.relay.log" || fail "the relay did not replay"; ok
[ "$(grep -c "RequestMessage KeyfleetPairKeyRequest" "$WORK/$GW.relay.log")" -eq 2 ] || fail "not retried once: $(cat "$WORK/$GW.relay.log")"; ok
unchanged s1 "replayed M"
if grep -q "up #" "$WORK/$LINK.relay.log"; then fail "a stale SM_B was forwarded to the base"; fi; ok
server_dev meter-1 "$WORK/s1b.srv"
check "$WORK/s1b.srv" "d['counter'] == $(jv "$WORK/s1.srv" 'd["counter"]') + 2" "the server moved on (twice) while the device kept its counter"
# The old SM_B replayed into a fresh pairing reaches the base: refused there as stale,
# and the meter gives up the KEKs it got for that pairing.
# (The base's ack names the old KEK, so the meter cannot take it for this pairing's.)
relays "" "up 1 replace $REC_LINK/1-up.ttlv"
expect_refusal "own part: accepted; partner's part: KF_ERR_" via --sessions 0 "${T[@]}"
base_log_has "KeyfleetPairPart kek=$KEK_OLD counter=1: refused KF_ERR_PAIR_STALE"
unchanged s1 "replayed SM_B" meter-keks
# The old M replayed once only: the retry of the stale verdict gets the new M, and pairs.
server_dev meter-1 "$WORK/s1c.srv"
relays "down 1 replace $REC_GW/1-down.ttlv" ""
expect_ok via --sessions 1 --json "${T[@]}"
check "$WORK/out" 'd["result"]=="ok" and d["sessions"]==1 and "server_said" not in d' "pairing after one replayed M"
grep -q "down #2 ResponseMessage KeyfleetPairAckReport OperationFailed" "$WORK/$GW.relay.log" || fail "the stale ack's report was not refused: $(cat "$WORK/$GW.relay.log")"; ok
grep -q "up #3 RequestMessage KeyfleetPairKeyRequest" "$WORK/$GW.relay.log" || fail "no retry"; ok
check "$WORK/out" "d['counter'] == $(jv "$WORK/s1c.srv" 'd["counter"]') + 2" "the retry's counter"

# ---- 2. modified parts: any changed byte is an integrity failure ----
snap s2
relays "down @KeyfleetPairPart flip @KeyfleetSealedData+4" ""
expect_refusal "KF_ERR_PAIR_INTEGRITY" via --sessions 0 "${T[@]}"
grep -q "this device refused its part SM_A" "$WORK/err" || fail "own refusal"; ok
unchanged s2 "flipped SM_A body"
relays "down @KeyfleetPairPart flip @KeyfleetNonce+0 0x80" ""
expect_refusal "KF_ERR_PAIR_INTEGRITY" via --sessions 0 "${T[@]}"
unchanged s2 "flipped SM_A nonce"
# a raised counter passes the staleness check but not the AEAD: the header is authenticated
relays "down @KeyfleetPairPart flip @KeyfleetCounter+0 0x01" ""
expect_refusal "KF_ERR_PAIR_INTEGRITY" via --sessions 0 "${T[@]}"
unchanged s2 "raised SM_A counter"
relays "down @KeyfleetPairPart flip @KeyfleetSealedData#2+4" ""
expect_refusal "KF_ERR_PAIR_INTEGRITY" via --sessions 0 "${T[@]}"
grep -q "the partner refused its part SM_B" "$WORK/err" || fail "partner refusal"; ok
base_log_has "refused KF_ERR_PAIR_INTEGRITY"
unchanged s2 "flipped SM_B" meter-keks
# SM_B's header turned into something that is not a structure: malformed
relays "down @KeyfleetPairPart flip @KeyfleetPairPart#2+3 0x02" ""
expect_refusal "KF_ERR_PAIR_MALFORMED" via --sessions 0 "${T[@]}"
base_log_has "refused KF_ERR_PAIR_MALFORMED"
unchanged s2 "malformed SM_B" meter-keks

# ---- 3. swapped parts: each device gets the other's part ----
snap s3
relays "down @KeyfleetPairPart swap-parts" ""
expect_refusal "KF_ERR_PAIR_WRONG_DEVICE" via --sessions 0 "${T[@]}"
grep -q "swap-parts" "$WORK/$GW.relay.log" || fail "the relay did not swap"; ok
unchanged s3 "swapped parts"

# ---- 4. session messages: replayed, modified, renumbered M3; modified data ----
relays "" ""
expect_ok via --no-pair --sessions 1 "${T[@]}"
M3_OLD="$WORK/$LINK.rec/1-up.ttlv"
# The record and its echo: both Seq 1 under one SK, the same data, yet different bytes (each
# direction has its own nonces: [1]32 || seq from the meter, which offered SK, [2]32 || seq back).
python3 - "$WORK/$LINK.rec/2-up.ttlv" "$WORK/$LINK.rec/2-down.ttlv" <<'PY' || fail "record and echo share a nonce"
import struct, sys
def items(b):
    out, i = {}, 8
    while i < len(b):
        tag, typ, n = b[i:i + 3], b[i + 3], struct.unpack(">I", b[i + 4:i + 8])[0]
        out[tag.hex()] = b[i + 8:i + 8 + n]
        i += 8 + n + (-n % 8)
    return out
up, down = (items(open(p, "rb").read()) for p in sys.argv[1:3])
seq = {k for k in up if len(up[k]) == 8}
assert len(seq) == 1 and up[seq.pop()] == (1).to_bytes(8, "big")
sealed = [k for k in up if len(up[k]) > 16]
assert len(sealed) == 1 and len(up[sealed[0]]) == len(down[sealed[0]])
assert up[sealed[0]] != down[sealed[0]]
PY
ok
snap s4
relays "" "up 1 replace $M3_OLD"
expect_refusal "KF_ERR_SESSION_REPLAY" via --no-pair --sessions 1 "${T[@]}"
grep -q "the partner refused the session key" "$WORK/err" || fail "replayed M3"; ok
dshow base-1 "$WORK/now.b"; same_state "$WORK/s4.b" "$WORK/now.b" "replayed M3 changed the base"
relays "" "up 1 flip @KeyfleetSealedData+0"
expect_refusal "KF_ERR_SESSION_INTEGRITY" via --no-pair --sessions 1 "${T[@]}"
dshow base-1 "$WORK/now.b"; same_state "$WORK/s4.b" "$WORK/now.b" "modified M3 changed the base"
# a sequence number pushed to 2^56+: refused, and the base's recv_seq does not jump
relays "" "up 1 flip @KeyfleetSeq+0 0x01"
expect_refusal "KF_ERR_SESSION_INTEGRITY" via --no-pair --sessions 1 "${T[@]}"
dshow base-1 "$WORK/now.b"; same_state "$WORK/s4.b" "$WORK/now.b" "renumbered M3 changed the base"
relays "" "up 2 flip @KeyfleetSealedData-1"
expect_refusal "KF_ERR_SESSION_INTEGRITY" via --no-pair --sessions 1 "${T[@]}"
grep -q "the partner refused the application data" "$WORK/err" || fail "modified record"; ok
relays "" "down 2 flip @KeyfleetSealedData+0"
expect_refusal "KF_ERR_SESSION_INTEGRITY" via --no-pair --sessions 1 "${T[@]}"
grep -q "the echoed record does not open" "$WORK/err" || fail "modified echo"; ok

# ---- 5. acknowledgements: forged N_B, replayed ack report ----
server_dev base-1 "$WORK/s5.srv"
relays "up @KeyfleetPairAck flip @KeyfleetMac#2+0" ""
expect_refusal "KF_ERR_ACK_MAC" via --sessions 0 --json "${T[@]}"
# what the server said comes from the library's result: its message, the operation it
# refused and the KMIP Result Reason
grep -q "the key server said: KF_ERR_ACK_MAC: .*(KeyfleetPairAckReport refused: CryptographicFailure)" "$WORK/err" || fail "server refusal: $(cat "$WORK/err")"; ok
check "$WORK/out" 'd["server_said"].startswith("KF_ERR_ACK_MAC") and d["server_operation"]=="KeyfleetPairAckReport" and d["server_reason"]=="CryptographicFailure"' "the server's refusal in the JSON summary"
server_dev base-1 "$WORK/s5b.srv"
check "$WORK/s5b.srv" 'd["acks_pending"] >= 1' "the forged ack left N_B pending"
# The recorded ack report sent instead of the pair request: the server refuses it as a replay
# (audited), and the meter, whose request that was not an answer to, takes the answer as
# malformed and changes nothing.
replays() { audit_all "$WORK/audit.json" "$WORK/audit.txt"; jv "$WORK/audit.json" 'sum(1 for r in d if r["result"]=="KF_ERR_ACK_REPLAY")'; }
snap s5
BEFORE=$(replays)
relays "up 1 replace $REC_GW/2-up.ttlv" ""
expect_refusal "KF_ERR_PAIR_MALFORMED" via --sessions 0 "${T[@]}"
unchanged s5 "replayed ack report"
[ "$(replays)" -gt "$BEFORE" ] || fail "the replayed ack report was not refused as a replay"; ok

# An ack report duplicated in flight: the first is recorded, the copy refused (audited).
BEFORE=$(replays)
relays "up @KeyfleetPairAck dup" ""
expect_ok via --sessions 0 "${T[@]}"
grep -q "RequestMessage KeyfleetPairAckReport .*: dup" "$WORK/$GW.relay.log" || fail "no dup"; ok
for _ in $(seq 1 100); do [ "$(replays)" -gt "$BEFORE" ] && break; sleep 0.05; done
[ "$(replays)" -gt "$BEFORE" ] || fail "the duplicated ack report was not refused as a replay"; ok

# ---- 6. dropped M: the meter reports it, a retry works at higher counters ----
server_dev meter-1 "$WORK/s6.srv"; C6=$(jv "$WORK/s6.srv" 'd["counter"]')
snap s6
relays "down 1 drop" ""
expect_refusal "KF_ERR_TIMEOUT" via --sessions 0 "${T[@]}"
grep -q "no answer from the key server" "$WORK/err" || fail "dropped M: $(cat "$WORK/err")"; ok
unchanged s6 "dropped M"
server_dev meter-1 "$WORK/s6b.srv"
check "$WORK/s6b.srv" "d['counter']==$C6+1 and d['acks_pending']>=1" "the lost M was counted and is unacknowledged"
expect_ok via --sessions 1 --json   # the same relays: only message 1 was dropped
check "$WORK/out" "d['result']=='ok' and d['counter']==$C6+2" "retry after a lost M"

# A connection closed instead of answering: the meter says so (exit 3), nothing changed.
snap s6c
relays "down 1 close" ""
set +e; via --sessions 0 "${T[@]}" > "$WORK/out" 2> "$WORK/err"; rc=$?; set -e
[ "$rc" -eq 3 ] && grep -q "no answer from the key server" "$WORK/err" || fail "closed: exit $rc $(cat "$WORK/err")"; ok
unchanged s6c "closed connection"

# ---- 7. dropped N_B: the server shows the ack pending; the next pairing works ----
# (seed [0048]: the meter takes the new KEK only once the base's ack says the base took it;
# without that ack it keeps the KEK it had and moves only its counter, and its own ack says so)
server_dev base-1 "$WORK/s7.srv"; P7=$(jv "$WORK/s7.srv" 'd["acks_pending"]')
server_dev meter-1 "$WORK/s7m.srv"; PM7=$(jv "$WORK/s7m.srv" 'd["acks_pending"]')
snap s7
relays "" "down 1 drop"
expect_refusal "KF_ERR_TIMEOUT" via --sessions 0 --json "${T[@]}"
grep -q "no answer from the partner" "$WORK/err" || fail "dropped N_B: $(cat "$WORK/err")"; ok
KEK7=$(jv "$WORK/out" 'd["kek_id"]')
check "$WORK/out" "d['own']=='accepted' and d['counter'] > $(jv "$WORK/s7.m" 'd["counter"]')" "the meter's part was good: its counter moved"
dshow meter-1 "$WORK/s7b.m"; dshow base-1 "$WORK/s7b.b"
[ "$(jv "$WORK/s7.m" 'd["keks"]')" = "$(jv "$WORK/s7b.m" 'd["keks"]')" ] || fail "dropped N_B: the meter took KEKs the base's ack never confirmed"; ok
check "$WORK/s7b.b" "[k['kek_id'] for k in d['keks']]==[$KEK7]" "the base took the new KEK, superseding its old one"
server_dev base-1 "$WORK/s7b.srv"
check "$WORK/s7b.srv" "d['acks_pending']==$P7+1" "N_B pending at the server"
server_dev meter-1 "$WORK/s7mb.srv"
check "$WORK/s7mb.srv" "d['acks_pending']==$PM7" "the meter's ack (took nothing) is on record"
relays "" ""
expect_ok via --sessions 2 --json
check "$WORK/out" 'd["result"]=="ok" and d["sessions"]==2' "pairing after a lost N_B"

# ---- 8. delayed and reordered messages ----
relays "" "up 1 delay 300"
expect_ok via --no-pair --sessions 1 --timeout 5000
relays "" "up 1 delay 2500"
expect_refusal "KF_ERR_TIMEOUT" via --no-pair --sessions 1 --timeout 700
SEQ_LATE=$(grep -o "up #1 KeyfleetSessionKey kek=[0-9]* seq=[0-9]*" "$WORK/$LINK.relay.log" | sed 's/.*seq=//')
base_log_has "seq=$SEQ_LATE: accepted session key"   # it arrives late, and is valid
expect_ok via --no-pair --sessions 1 "${T[@]}"                # a fresh session still works
# M3 #k held back and delivered after M3 #k+1: the base refuses the older one.
relays "" "up 1 hold"
expect_refusal "KF_ERR_TIMEOUT" via --no-pair --sessions 1 --data 0 --timeout 700
SEQ_HELD=$(grep -o "up #1 KeyfleetSessionKey kek=[0-9]* seq=[0-9]*" "$WORK/$LINK.relay.log" | sed 's/.*seq=//')
expect_ok via --no-pair --sessions 1 --data 0 "${T[@]}"
base_log_has "seq=$SEQ_HELD: refused KF_ERR_SESSION_REPLAY"
dshow base-1 "$WORK/now.b"
python3 - "$WORK/now.b" "$SEQ_HELD" <<'PY' || fail "the reordered M3 moved the base's sequence back"
import json, sys
d = json.load(open(sys.argv[1])); held = int(sys.argv[2])
assert max(k["recv_seq"] for k in d["keks"]) == held + 1
PY
ok
# SM_B of one pairing held back and delivered after the next pairing's SM_B: stale.
relays "" "up 1 hold"
expect_refusal "KF_ERR_TIMEOUT" via --sessions 0 --timeout 700
COUNTER_HELD=$(grep -o "up #1 KeyfleetPairPart kek=[0-9]* counter=[0-9]*" "$WORK/$LINK.relay.log" | sed 's/.*counter=//')
expect_ok via --sessions 0 --json "${T[@]}"
base_log_has "counter=$COUNTER_HELD: refused KF_ERR_PAIR_STALE"
dshow base-1 "$WORK/now.b"
check "$WORK/now.b" "d['counter'] > $COUNTER_HELD" "the base kept the newer counter"
stop_relay "gw-$N"; stop_relay "link-$N"
stop_daemon
finish
