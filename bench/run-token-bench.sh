#!/usr/bin/env bash
# Token verification (docs/manufacturing.md "Tokens"), both verifiers, one run:
#  (a) keyfleetd: KeyfleetTokenVerify over KMIP/TLS, C connections at once,
#      batches of B pieces, every piece fresh (verified good, recorded durably)
#      and then every piece again (duplicates);      target >= 200,000 pieces/s
#  (b) keyfleet-verify bench: the Tin's offline check path next to raw nettle
#      AES-256-CMAC over the same messages with precomputed keys; target ratio >= 0.5
# Devices are made the protocol's way over KMIP by bench/keyfleet-token-bench.c
# (a Steel in memory: RequestKey, install, signed report, registration).
#
#   bench/run-token-bench.sh [DEVICES] [PIECES_PER_DEVICE] [CONNECTIONS] [BATCH]
#                            (defaults 200 5000 2 10000: 1,000,000 pieces)
# Env: KF_BUILD_DIR (default build/), TIN_PIECES (keyfleet-verify bench, default 2000000).
# keyfleetd's TLS endpoint: KF_TLS_ARGS (default --tls-mode monolithic, as the figures in
# docs/benchmarks.md were measured; e.g. KF_TLS_ARGS="--tls-mode split" for the default split).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${KF_BUILD_DIR:-$ROOT/build}
DEVICES=${1:-200}
PER=${2:-5000}
CONN=${3:-2}
BATCH=${4:-10000}
TIN_PIECES=${TIN_PIECES:-2000000}
BENCH="$BUILD/keyfleet-token-bench"
VERIFY="$BUILD/keyfleet-verify"
WORK=$(mktemp -d /tmp/kf-token-bench.XXXXXX)
KF_PID=""
cleanup() {
  [ -n "$KF_PID" ] && kill "$KF_PID" 2>/dev/null && wait "$KF_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing on port $1" >&2; exit 1; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

# The dev certificates, then an identity map in which the dev admin also holds
# the manufacturing roles (the token key export is the verifier role's alone).
PORT=$(free_port)
"$BUILD/keyfleetd" --dev --dir "$WORK/kf" ${KF_TLS_ARGS:---tls-mode monolithic} --kmip-listen "127.0.0.1:$PORT" --log-file "$WORK/kf.log" &
KF_PID=$!
wait_port "$PORT"
kill "$KF_PID"; wait "$KF_PID" 2>/dev/null || true; KF_PID=""
C="$WORK/kf/certs"
cat > "$WORK/identities" <<'EOF'
subject-CN=admin subject-O="keyfleet dev" roles=admin,manage,use,export,steel,registrar,verifier domains=*
EOF
"$BUILD/keyfleetd" --dev --dir "$WORK/kf" ${KF_TLS_ARGS:---tls-mode monolithic} --kmip-listen "127.0.0.1:$PORT" --log-file "$WORK/kf.log" \
  --kmip-identities "$WORK/identities" &
KF_PID=$!
wait_port "$PORT"
TLS=(--server "127.0.0.1:$PORT" --ca "$C/ca-cert.pem" --cert "$C/admin-cert.pem" --key "$C/admin-key.pem")

echo "Token verification: $DEVICES devices x $PER pieces, $CONN connections, batches of $BATCH"
"$BENCH" prepare "${TLS[@]}" --devices "$DEVICES" --pieces "$PER" --out "$WORK/pieces.bin"
fresh=$("$BENCH" verify "${TLS[@]}" --in "$WORK/pieces.bin" --connections "$CONN" --batch "$BATCH")
again=$("$BENCH" verify "${TLS[@]}" --in "$WORK/pieces.bin" --connections "$CONN" --batch "$BATCH")
echo "(a) keyfleetd, fresh pieces:     $fresh"
echo "    keyfleetd, the same again:   $again"

# (b) a Tin with the keys of this month, then the in-process comparison.
PERIOD=$(date -u +%Y%m)
"$VERIFY" init --state "$WORK/tin" --role-id T00000001 > /dev/null
"$VERIFY" enroll --state "$WORK/tin" --domain VE "${TLS[@]}" > /dev/null
"$VERIFY" fetch --state "$WORK/tin" --domain VE --periods "$PERIOD-$PERIOD" "${TLS[@]}" > /dev/null
tin=$("$VERIFY" bench --state "$WORK/tin" --domain VE --pieces "$TIN_PIECES")
echo "(b) keyfleet-verify bench:"
echo "$tin" | sed 's/^/    /'

kf_rate=$(echo "$fresh" | field pieces_per_s)
dup_rate=$(echo "$again" | field pieces_per_s)
ratio=$(echo "$tin" | field ratio)
good=$(echo "$fresh" | field good)
/usr/bin/python3 - "$kf_rate" "$dup_rate" "$ratio" "$good" "$((DEVICES * PER))" <<'EOF'
import sys
rate, dup, ratio, good, n = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
print(f"keyfleetd TokenVerify: {rate:,.0f} pieces/s fresh, {dup:,.0f} pieces/s duplicates "
      f"(target >= 200,000: {rate / 200000:.2f}x); {good:,} of {n:,} good")
print(f"keyfleet-verify check path / raw nettle CMAC: {ratio:.2f} (target >= 0.5)")
EOF
