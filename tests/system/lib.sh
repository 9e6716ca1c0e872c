# Shared helpers for the system tests: start/stop keyfleetd, assertions.
# Each test sources this, gets a fresh $WORK directory, and is cleaned up on exit.
set -euo pipefail
BUILD=${KF_BUILD_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build}
KEYFLEETD="$BUILD/keyfleetd"
KEYFLEET="$BUILD/keyfleet"
WORK=$(mktemp -d /tmp/kf-system.XXXXXX)
DATA="$WORK/data"
DAEMON_PID=""
CHECKS=0

cleanup() {
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then kill -9 "$DAEMON_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; [ -f "$WORK/daemon.log" ] && tail -20 "$WORK/daemon.log" >&2; exit 1; }
ok() { CHECKS=$((CHECKS + 1)); }

# start_daemon [extra keyfleetd args...]: starts and waits for the socket.
start_daemon() {
  rm -f "$DATA/keyfleetd.sock"  # a kill -9 leaves the old one behind
  "$KEYFLEETD" --dir "$DATA" --log-file "$WORK/daemon.log" "$@" &
  DAEMON_PID=$!
  for _ in $(seq 1 200); do
    [ -S "$DATA/keyfleetd.sock" ] && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || fail "keyfleetd exited at start"
    sleep 0.05
  done
  fail "keyfleetd did not create its socket"
}
stop_daemon() {
  [ -n "$DAEMON_PID" ] || return 0
  kill "$DAEMON_PID" 2>/dev/null || true
  wait "$DAEMON_PID" 2>/dev/null || true
  DAEMON_PID=""
}
kill9_daemon() {
  [ -n "$DAEMON_PID" ] || return 0
  kill -9 "$DAEMON_PID" 2>/dev/null || true
  wait "$DAEMON_PID" 2>/dev/null || true
  DAEMON_PID=""
}

kf() { "$KEYFLEET" --dir "$DATA" "$@"; }

# expect_ok CMD...: the command must succeed.
expect_ok() { "$@" > "$WORK/out" 2> "$WORK/err" || fail "expected success: $* ($(cat "$WORK/err"))"; ok; }
# expect_refusal PATTERN CMD...: must exit 1 and say PATTERN on stderr.
expect_refusal() {
  local pat=$1; shift
  if "$@" > "$WORK/out" 2> "$WORK/err"; then fail "expected refusal: $*"; fi
  grep -q -- "$pat" "$WORK/err" || fail "refusal of '$*' does not mention '$pat': $(cat "$WORK/err")"
  ok
}
expect_contains() { grep -q -- "$1" "$WORK/out" || fail "output lacks '$1': $(cat "$WORK/out")"; ok; }

finish() { echo "$(basename "$0"): $CHECKS checks passed"; }

# free_tcp_port: prints a loopback TCP port nobody listens on right now.
free_tcp_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# wait_tcp_port PORT [PID]: waits up to 10 s until something accepts on 127.0.0.1:PORT;
# fails early if PID (default: the daemon) exits.
wait_tcp_port() {
  local port=$1 pid=${2:-$DAEMON_PID}
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || fail "process $pid exited before listening on $port"
    sleep 0.05
  done
  fail "nothing listens on 127.0.0.1:$port"
}
