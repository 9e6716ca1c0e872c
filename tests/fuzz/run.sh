#!/usr/bin/env bash
# Runs every fuzz target in BUILD_DIR for SECONDS each, seeded from
# tests/fuzz/corpus/<target>/ (and, for TTLV, from the OASIS KMIP XML test
# cases converted to binary). Prints total executions per target.
# KF_FUZZ_JOBS targets run side by side (default: the number of cores), each
# single-threaded for its full SECONDS, so the wall time shrinks, not the fuzzing.
set -euo pipefail
BUILD=${1:?build dir}
SECONDS_EACH=${2:-60}
JOBS=${KF_FUZZ_JOBS:-$(nproc)}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${KF_SHARED_DIR:-$ROOT/../shared}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# run_target PATH: fuzz one target; its report goes to $OUT/<name>.result.
run_target() {
  local fz=$1 name corpus log execs
  name=$(basename "$fz")
  corpus=$(mktemp -d)
  [ -d "$ROOT/tests/fuzz/corpus/$name" ] && cp -r "$ROOT/tests/fuzz/corpus/$name/." "$corpus/"
  if [ "$name" = fuzz_ttlv ] || [ "$name" = fuzz_kms ]; then
    if [ -x "$ROOT/build/kf-ttlv" ] && [ -d "$SHARED/kmip/testcases/v1.4" ]; then
      for x in "$SHARED"/kmip/testcases/v1.4/*/*.xml; do
        "$ROOT/build/kf-ttlv" xml2bin "$x" "$corpus" > /dev/null 2>&1 || true
      done
    fi
  fi
  log=$(mktemp)
  if "$fz" -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 \
        -print_final_stats=1 "$corpus" > "$log" 2>&1; then
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    echo "$name: ${execs:-?} executions in ${SECONDS_EACH}s, no finding ($(ls "$corpus" | wc -l) corpus files)" \
      > "$OUT/$name.result"
  else
    { echo "$name: FINDING"; tail -60 "$log"; } > "$OUT/$name.result"
  fi
  rm -rf "$corpus" "$log"
}

running=0
for fz in "$BUILD"/fuzz_*; do
  [ -x "$fz" ] || continue
  run_target "$fz" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

status=0
for r in "$OUT"/*.result; do
  [ -f "$r" ] || continue
  cat "$r"
  grep -q ": FINDING" "$r" && status=1
done
exit $status
