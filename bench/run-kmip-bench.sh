#!/usr/bin/env bash
# KMIP throughput, keyfleetd next to pykmip-server, same run, same workload,
# same client (bench/keyfleet-kmip-bench.c), same number of connections.
# Prints ops/s, p50/p99 per operation for both and the ratio keyfleetd/pykmip.
#
#   bench/run-kmip-bench.sh [CONNECTIONS] [SECONDS]      (defaults 4 and 5)
# Env: KF_BUILD_DIR (default build/), OPS (default "get encrypt mac create"),
#      KF_KMIP (protocol version for both, default 1.2), ENCRYPT_MODE (gcm|cbc).
# keyfleetd's TLS endpoint: KF_TLS_ARGS (default --tls-mode monolithic, as the figures in
# docs/benchmarks.md were measured; e.g. KF_TLS_ARGS="--tls-mode split" for the default split).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${KF_BUILD_DIR:-$ROOT/build}
CONN=${1:-4}
SECS=${2:-5}
OPS=${OPS:-get encrypt mac create}
KMIP=${KF_KMIP:-1.2}
MODE=${ENCRYPT_MODE:-gcm}
BENCH="$BUILD/keyfleet-kmip-bench"
WORK=$(mktemp -d /tmp/kf-kmip-bench.XXXXXX)
KF_PID=""
cleanup() {
  [ -n "$KF_PID" ] && kill "$KF_PID" 2>/dev/null || true
  "$ROOT/bench/pykmip-peer.sh" stop "$WORK/peer" > /dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing on port $1" >&2; exit 1; }

KF_PORT=$(free_port)
"$BUILD/keyfleetd" --dev --dir "$WORK/kf" ${KF_TLS_ARGS:---tls-mode monolithic} --kmip-listen "127.0.0.1:$KF_PORT" --log-file "$WORK/kf.log" &
KF_PID=$!
wait_port "$KF_PORT"
C="$WORK/kf/certs"
"$ROOT/bench/pykmip-peer.sh" start "$WORK/peer" > /dev/null
# shellcheck disable=SC1091
. "$WORK/peer/peer.env"
wait_port "$PYKMIP_PORT"

echo "KMIP $KMIP over TLS, $CONN connections, ${SECS}s per operation, encrypt = 64 B AES-256-$MODE"
printf '%-8s %12s %9s %9s   %12s %9s %9s   %8s\n' op "keyfleet/s" "p50 ms" "p99 ms" "pykmip/s" "p50 ms" "p99 ms" ratio
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
for op in $OPS; do
  kf=$("$BENCH" --server "127.0.0.1:$KF_PORT" --ca "$C/ca-cert.pem" --cert "$C/admin-cert.pem" \
        --key "$C/admin-key.pem" --op "$op" --connections "$CONN" --seconds "$SECS" --kmip "$KMIP" \
        --encrypt-mode "$MODE" 2> "$WORK/kf.err" || true)
  py=$("$BENCH" --server "127.0.0.1:$PYKMIP_PORT" --ca "$PYKMIP_CA" --cert "$PYKMIP_CERT" \
        --key "$PYKMIP_KEY" --op "$op" --connections "$CONN" --seconds "$SECS" --kmip "$KMIP" \
        --encrypt-mode "$MODE" --mac-key aes 2> "$WORK/py.err" || true)
  kf_ops=$(echo "$kf" | field ops_per_s); py_ops=$(echo "$py" | field ops_per_s)
  ratio=$(/usr/bin/python3 -c "import sys; a,b=sys.argv[1:]; print(f'{float(a)/float(b):.1f}x' if a and b and float(b)>0 else 'n/a')" "${kf_ops:-}" "${py_ops:-}")
  printf '%-8s %12s %9s %9s   %12s %9s %9s   %8s\n' "$op" "${kf_ops:-fail}" "$(echo "$kf" | field p50_ms)" \
    "$(echo "$kf" | field p99_ms)" "${py_ops:-fail}" "$(echo "$py" | field p50_ms)" "$(echo "$py" | field p99_ms)" "$ratio"
  [ -n "$kf_ops" ] || sed 's/^/  keyfleet: /' "$WORK/kf.err" | head -3
  [ -n "$py_ops" ] || sed 's/^/  pykmip:   /' "$WORK/py.err" | head -3
done
