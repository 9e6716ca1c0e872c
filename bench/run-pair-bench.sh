#!/usr/bin/env bash
# Pair-key issuance (docs/pairing.md) next to MIT Kerberos issuing service tickets,
# same run, same machine, same number of client connections. Prints ops/s, p50/p99
# for both and the ratio keyfleetd / krb5kdc.
#
#   bench/run-pair-bench.sh [CONNECTIONS] [SECONDS]        (defaults 16 and 5)
#
# keyfleetd: `keyfleetd --dev` with its TLS listener; C device pairs bench-a-N /
# bench-b-N registered and exported with the CLI; bench/keyfleet-pair-bench with C
# connections (the dev "device" certificate, role device), each issuing pair keys
# for its own pair. Every issuance is committed durably (fsync'ed, group commit)
# before the answer leaves. Two figures: "request" (one KeyfleetPairKeyRequest per
# operation; both parts are then opened by real libkeyfleet-device states, outside
# the timed part) and "full" (request, both devices accept, and their acknowledgement
# report: two round trips and two commits per operation). Each figure is measured
# with one item per Request Message (as a single device asks) and again with
# PAIR_BATCH items per message for the connection's pair (a gateway asking for many
# pair keys in one round trip: keyfleetd runs them in one group-commit transaction;
# ops count issuances, p50/p99 are per message), both against the same krb5kdc run.
# krb5kdc: bench/krb5-peer.sh's throwaway realm on loopback; bench/krb5/krb5-tgs-bench
# with C threads, one TGT each, then TGS requests, each a real KDC round trip (the
# script checks the KDC logged at least as many TGS issues as the bench counted).
# krb5kdc runs as one process (its default), then with `-w 2` (one worker per core).
# Env: KF_BUILD_DIR (default build/), KRB5_TRANSPORT (udp, libkrb5's default for
#      requests this small, or tcp), PAIR_FLOWS (default "request full"),
#      PAIR_BATCH (items per message of the extra rows, 1-64, default 16; 1: none).
# keyfleetd's TLS endpoint: KF_TLS_ARGS (default --tls-mode monolithic, as the figures in
# docs/benchmarks.md were measured; e.g. KF_TLS_ARGS="--tls-mode split" for the default split).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${KF_BUILD_DIR:-$ROOT/build}
CONN=${1:-16}
SECS=${2:-5}
TRANSPORT=${KRB5_TRANSPORT:-udp}
FLOWS=${PAIR_FLOWS:-request full}
BATCH=${PAIR_BATCH:-16}
case $BATCH in ''|*[!0-9]*) echo "run-pair-bench: PAIR_BATCH must be 1-64" >&2; exit 2 ;; esac
[ "$BATCH" -ge 1 ] && [ "$BATCH" -le 64 ] || { echo "run-pair-bench: PAIR_BATCH must be 1-64" >&2; exit 2; }
BATCHES=1
[ "$BATCH" -gt 1 ] && BATCHES="1 $BATCH"
PAIR_BENCH="$BUILD/keyfleet-pair-bench"
TGS_BENCH="$BUILD/krb5-tgs-bench"
WORK=$(mktemp -d /tmp/kf-pair-bench.XXXXXX)
KF_PID=""
cleanup() {
  [ -n "$KF_PID" ] && kill "$KF_PID" 2>/dev/null || true
  for p in "$WORK/peer1" "$WORK/peer2"; do
    [ -f "$p/kdc.pid.leader" ] && "$ROOT/bench/krb5-peer.sh" stop "$p" > /dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
for b in "$BUILD/keyfleetd" "$BUILD/keyfleet" "$PAIR_BENCH" "$TGS_BENCH"; do
  [ -x "$b" ] || { echo "run-pair-bench: $b missing (build with libkrb5-dev installed for krb5-tgs-bench)" >&2; exit 1; }
done
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing on port $1" >&2; exit 1; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
ratio() { /usr/bin/python3 -c "import sys; a,b=sys.argv[1:]; print(f'{float(a)/float(b):.1f}x' if a and b and float(b)>0 else 'n/a')" "${1:-}" "${2:-}"; }

KF_PORT=$(free_port)
"$BUILD/keyfleetd" --dev --dir "$WORK/kf" ${KF_TLS_ARGS:---tls-mode monolithic} --kmip-listen "127.0.0.1:$KF_PORT" --log-file "$WORK/kf.log" &
KF_PID=$!
wait_port "$KF_PORT"
C="$WORK/kf/certs"
kf() { "$BUILD/keyfleet" --dir "$WORK/kf" "$@"; }
# The dev "device" identity may pair devices of domain "default" only.
CERT="device"
[ -f "$C/$CERT-cert.pem" ] || { echo "run-pair-bench: no $C/$CERT-cert.pem (dev certificates too old?)" >&2; exit 1; }
mkdir -p "$WORK/pkg"
for i in $(seq 0 $((CONN - 1))); do
  for side in a b; do
    kf device register "bench-$side-$i" --domain default > /dev/null
    kf device export "bench-$side-$i" -o "$WORK/pkg/bench-$side-$i.pkg" > /dev/null
  done
done

# Both KDCs start now, so the measurements below run back to back (the machine is
# shared and noisy: the shorter the gap, the fairer the comparison).
"$ROOT/bench/krb5-peer.sh" start "$WORK/peer1" "$CONN" 1 > /dev/null
"$ROOT/bench/krb5-peer.sh" start "$WORK/peer2" "$CONN" 2 > /dev/null

echo "Pair-key issuance vs MIT krb5kdc TGS, $CONN connections, ${SECS}s each, krb5 over $TRANSPORT"
printf '%-50s %10s %9s %9s %8s\n' what "ops/s" "p50 ms" "p99 ms" errors
row() { printf '%-50s %10s %9s %9s %8s\n' "$1" "${2:-fail}" "$(echo "$3" | field p50_ms)" "$(echo "$3" | field p99_ms)" "$(echo "$3" | field errors)"; }
declare -A KF K5
RUNS=""
for flow in $FLOWS; do
  for batch in $BATCHES; do
    out=$("$PAIR_BENCH" --server "127.0.0.1:$KF_PORT" --ca "$C/ca-cert.pem" --cert "$C/$CERT-cert.pem" \
          --key "$C/$CERT-key.pem" --connections "$CONN" --seconds "$SECS" --flow "$flow" \
          --batch "$batch" --packages "$WORK/pkg" 2> "$WORK/kf.err" || true)
    KF[$flow.$batch]=$(echo "$out" | field ops_per_s)
    RUNS="$RUNS $flow.$batch"
    case $flow in
      request) label="keyfleetd pair-key request (durable)" ;;
      full) label="keyfleetd request + both acks (2 commits)" ;;
      *) label="keyfleetd $flow" ;;
    esac
    [ "$batch" -gt 1 ] && label="${label%% (*}, $batch per message"
    row "$label" "${KF[$flow.$batch]}" "$out"
    [ -n "${KF[$flow.$batch]}" ] || sed 's/^/  keyfleet: /' "$WORK/kf.err" | head -3
  done
done
for workers in 1 2; do
  peer="$WORK/peer$workers"
  # shellcheck disable=SC1090
  . "$peer/peer.env"
  conf=$KRB5_CONFIG
  [ "$TRANSPORT" = tcp ] && conf=$KRB5_CONFIG_TCP
  before=$("$ROOT/bench/krb5-peer.sh" count "$peer")
  out=$(KRB5_CONFIG=$conf "$TGS_BENCH" --client "$KRB5_CLIENT" --password "$KRB5_PASSWORD" \
        --services "$KRB5_SERVICES" --prefix "$KRB5_SERVICE_PREFIX" --connections "$CONN" \
        --seconds "$SECS" 2> "$WORK/k5.err" || true)
  after=$("$ROOT/bench/krb5-peer.sh" count "$peer")
  K5[$workers]=$(echo "$out" | field ops_per_s)
  ops=$(echo "$out" | sed -n 's/.* ops=\([0-9]*\).*/\1/p')
  if [ "$workers" = 1 ]; then label="krb5kdc TGS (one process, its default)"; else label="krb5kdc TGS (-w $workers worker processes)"; fi
  row "$label" "${K5[$workers]}" "$out"
  [ -n "${K5[$workers]}" ] || sed 's/^/  krb5: /' "$WORK/k5.err" | head -3
  # Every counted TGS reached the KDC: its log has at least as many issues.
  if [ -n "$ops" ] && [ $((after - before)) -lt "$ops" ]; then
    echo "  WARNING: krb5kdc logged $((after - before)) TGS issues for $ops counted requests" >&2
    K5[$workers]=""
  fi
done

for r in $RUNS; do
  flow=${r%.*} batch=${r##*.}
  what=$flow
  [ "$batch" -gt 1 ] && what="$flow, $batch per message,"
  echo "ratio $what / krb5kdc: $(ratio "${KF[$r]:-}" "${K5[1]:-}") (one process)," \
       "$(ratio "${KF[$r]:-}" "${K5[2]:-}") (-w 2)"
done
