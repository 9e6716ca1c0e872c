#!/usr/bin/env bash
# Split vs monolithic TLS endpoint, same run, same client, alternating order.
#
#   bench/run-tls-split-bench.sh [SECONDS] [ROUNDS]        (defaults 5 and 3)
#
# Echo servers (bench/kf-tls-echo.c) in both modes with the same certificates,
# priorities and ticket setup, driven by bench/kf-tls-load.c:
#   full     handshakes/s (ECDSA P-256 server and client certificates, 1-byte echo, close)
#   resume   resumed handshakes/s (TLS 1.3 tickets)
#   bulk     echoed MB/s over 16 KiB application-data records
# and keyfleetd --dev driven by bench/keyfleet-kmip-bench.c, three times: --tls-mode
# monolithic, split with --split-workers threads, split with --split-workers processes:
#   get      KMIP Get ops/s (AES-256 key, KMIP 1.2), one row per split kind
# Each figure is measured ROUNDS times per mode (monolithic, split, monolithic,
# ...; for get: monolithic, threads, processes, ...); the median of each mode is
# reported with the ratio split/monolithic.
# Env: KF_BUILD_DIR (default build/), CONNS_HS (8), CONNS_BULK (2), CONNS_KMIP (16),
#      SPLIT_WORKERS (2, echo server), OPS (default "full resume bulk get").
# keyfleetd's worker processes: one per CPU, at least 2.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${KF_BUILD_DIR:-$ROOT/build}
SECS=${1:-5}
ROUNDS=${2:-3}
CONNS_HS=${CONNS_HS:-8}
CONNS_BULK=${CONNS_BULK:-2}
CONNS_KMIP=${CONNS_KMIP:-16}
WORKERS=${SPLIT_WORKERS:-2}
OPS=${OPS:-full resume bulk get}
ECHO="$BUILD/kf-tls-echo"
LOAD="$BUILD/kf-tls-load"
KMIPB="$BUILD/keyfleet-kmip-bench"
for b in "$ECHO" "$LOAD" "$KMIPB" "$BUILD/keyfleetd"; do [ -x "$b" ] || { echo "missing $b" >&2; exit 1; }; done
WORK=$(mktemp -d /tmp/kf-split-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done; wait 2> /dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
wait_line() { for _ in $(seq 1 200); do grep -q "$2" "$1" 2> /dev/null && return 0; sleep 0.05; done; echo "no '$2' in $1" >&2; exit 1; }
field() { sed -n "s/\(.* \)\{0,1\}$1=\([0-9.]*\).*/\2/p"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# ---- echo servers ----
"$ECHO" --mode split --certs "$WORK/certs" > /dev/null 2>&1 & p=$!; sleep 0.5; kill "$p"; wait "$p" || true  # make certs
"$ECHO" --mode monolithic --certs "$WORK/certs" > "$WORK/mono.out" 2>&1 & PIDS+=($!)
"$ECHO" --mode split --workers "$WORKERS" --certs "$WORK/certs" > "$WORK/split.out" 2>&1 & PIDS+=($!)
wait_line "$WORK/mono.out" ready; wait_line "$WORK/split.out" ready
declare -A PORT=([monolithic]=$(sed -n 's/ready port=\([0-9]*\).*/\1/p' "$WORK/mono.out")
                 [split]=$(sed -n 's/ready port=\([0-9]*\).*/\1/p' "$WORK/split.out"))

# ---- keyfleetd in three modes ----
declare -A KFARGS=([monolithic]="--tls-mode monolithic" [split]="--tls-mode split --split-workers threads"
                   [split-proc]="--tls-mode split --split-workers processes")
for mode in monolithic split split-proc; do
  # shellcheck disable=SC2086
  "$BUILD/keyfleetd" --dev --dir "$WORK/kf-$mode" --kmip-listen 127.0.0.1:0 ${KFARGS[$mode]} \
    --log-file "$WORK/kf-$mode.log" & PIDS+=($!)
  wait_line "$WORK/kf-$mode.log" "KMIP over TLS on"
  PORT[kf-$mode]=$(sed -n 's/.*KMIP over TLS on .* (port \([0-9]*\)).*/\1/p' "$WORK/kf-$mode.log" | tail -1)
done

run() { # run OP MODE -> the figure (failed requests are counted in $WORK/errors)
  local op=$1 mode=$2 out
  case "$op" in
    full|resume) out=$("$LOAD" --server "127.0.0.1:${PORT[$mode]}" --certs "$WORK/certs" --op "$op" \
                   --connections "$CONNS_HS" --seconds "$SECS" || true); echo "$out" | field per_s ;;
    bulk) out=$("$LOAD" --server "127.0.0.1:${PORT[$mode]}" --certs "$WORK/certs" --op bulk \
            --connections "$CONNS_BULK" --seconds "$SECS" || true); echo "$out" | field mb_per_s ;;
    get) local c="$WORK/kf-$mode/certs"
         out=$("$KMIPB" --server "127.0.0.1:${PORT[kf-$mode]}" --ca "$c/ca-cert.pem" --cert "$c/admin-cert.pem" \
           --key "$c/admin-key.pem" --op get --connections "$CONNS_KMIP" --seconds "$SECS" --kmip 1.2 \
           2> /dev/null || true); echo "$out" | field ops_per_s ;;
  esac
  local e; e=$(echo "$out" | field errors); [ -z "$e" ] || [ "$e" = 0 ] || echo "$op $mode: $e errors" >> "$WORK/errors"
}

echo "split vs monolithic TLS endpoint: $ROUNDS rounds x ${SECS}s per figure and mode, $(nproc) cores"
echo "split: 1 session handler process + $WORKERS worker processes (echo);"
echo "keyfleetd: handler process + worker threads (get, threads) or $(sed -n 's/.* in \([0-9]*\) confined worker processes.*/\1/p' "$WORK/kf-split-proc.log" | tail -1) confined worker processes (get, processes)"
printf '%-40s %14s %14s %8s %8s\n' figure monolithic split ratio target
# row NAME TARGET MONO-FIGURES -- SPLIT-FIGURES
row() {
  local name=$1 target=$2 m=() s=() mm sm ratio; shift 2
  while [ "$1" != -- ]; do m+=("$1"); shift; done; shift; s=("$@")
  mm=$(median "${m[@]}"); sm=$(median "${s[@]}")
  ratio=$(awk -v a="$sm" -v b="$mm" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
  printf '%-40s %14s %14s %8s %8s   [mono: %s | split: %s]\n' "$name" "$mm" "$sm" "$ratio" ">= $target" \
    "${m[*]}" "${s[*]}"
}
for op in $OPS; do
  m=(); s=(); p=()
  for _ in $(seq 1 "$ROUNDS"); do
    if [ "$op" = get ]; then
      m+=("$(run get monolithic)"); s+=("$(run get split)"); p+=("$(run get split-proc)")
    else
      m+=("$(run "$op" monolithic)"); s+=("$(run "$op" split)")
    fi
  done
  case "$op" in
    full) row "full handshakes/s (C=$CONNS_HS)" 0.85 "${m[@]}" -- "${s[@]}" ;;
    resume) row "resumed handshakes/s (C=$CONNS_HS)" 0.85 "${m[@]}" -- "${s[@]}" ;;
    bulk) row "16 KiB bulk MB/s (C=$CONNS_BULK)" 0.90 "${m[@]}" -- "${s[@]}" ;;
    get) row "KMIP Get ops/s (C=$CONNS_KMIP), threads" 0.90 "${m[@]}" -- "${s[@]}"
         row "KMIP Get ops/s (C=$CONNS_KMIP), processes" 0.90 "${m[@]}" -- "${p[@]}" ;;
  esac
done
if [ -s "$WORK/errors" ]; then echo "errors:"; sed 's/^/  /' "$WORK/errors"; else echo "no failed handshake or request"; fi
