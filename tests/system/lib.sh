# Shared helpers for the system tests: start/stop keyfleetd, assertions.
# Each test sources this, gets a fresh $WORK directory, and is cleaned up on exit.
set -euo pipefail
SYSTEM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${KF_BUILD_DIR:-$(cd "$SYSTEM_DIR/../.." && pwd)/build}
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

# scan_script: writes stdin (a memory-scan main) to $WORK/scan.py, next to the
# helpers it imports from memscan.py (process memory, key-log secrets, one-pass search).
scan_script() {
  cp "$SYSTEM_DIR/memscan.py" "$WORK/memscan.py"
  cat > "$WORK/scan.py"
}

# stop_extra_on_exit: servers and peers a test starts besides the daemon go in
# EXTRA_PIDS and are stopped on any exit, before cleanup.
stop_extra_on_exit() {
  EXTRA_PIDS=()
  trap 'for p in "${EXTRA_PIDS[@]}"; do kill "$p" 2> /dev/null || true; done; cleanup' EXIT
}

# tls_port: the port keyfleetd bound for --kmip-listen ...:0, from its log.
tls_port() {
  sed -n 's/.*KMIP over TLS on .* (port \([0-9]*\)).*/\1/p' "$WORK/daemon.log" | tail -1
}

# kmip_requests: KMIP 1.4 requests written as KMIP XML and encoded by kf-ttlv
# ($BUILD/kf-ttlv): DISCOVER (Discover Versions) and CREATE (an AES-256 key),
# the paths of their binary forms.
kmip_requests() {
  mkdir -p "$WORK/req"
  cat > "$WORK/discover.xml" <<'XML'
<RequestMessage>
  <RequestHeader>
    <ProtocolVersion><ProtocolVersionMajor type="Integer" value="1"/><ProtocolVersionMinor type="Integer" value="4"/></ProtocolVersion>
    <BatchCount type="Integer" value="1"/>
  </RequestHeader>
  <BatchItem><Operation type="Enumeration" value="DiscoverVersions"/><RequestPayload/></BatchItem>
</RequestMessage>
XML
  cat > "$WORK/create.xml" <<'XML'
<RequestMessage>
  <RequestHeader>
    <ProtocolVersion><ProtocolVersionMajor type="Integer" value="1"/><ProtocolVersionMinor type="Integer" value="4"/></ProtocolVersion>
    <BatchCount type="Integer" value="1"/>
  </RequestHeader>
  <BatchItem>
    <Operation type="Enumeration" value="Create"/>
    <RequestPayload>
      <ObjectType type="Enumeration" value="SymmetricKey"/>
      <TemplateAttribute>
        <Attribute><AttributeName type="TextString" value="Cryptographic Algorithm"/><AttributeValue type="Enumeration" value="AES"/></Attribute>
        <Attribute><AttributeName type="TextString" value="Cryptographic Length"/><AttributeValue type="Integer" value="256"/></Attribute>
      </TemplateAttribute>
    </RequestPayload>
  </BatchItem>
</RequestMessage>
XML
  "$BUILD/kf-ttlv" xml2bin "$WORK/discover.xml" "$WORK/req" > /dev/null || fail "kf-ttlv xml2bin discover"
  "$BUILD/kf-ttlv" xml2bin "$WORK/create.xml" "$WORK/req" > /dev/null || fail "kf-ttlv xml2bin create"
  DISCOVER=$(ls "$WORK"/req/discover*.bin)
  CREATE=$(ls "$WORK"/req/create*.bin)
}

# start_split_interop KEYFLEETD-ARGS...: test_conformance.sh and test_pykmip.sh,
# unchanged, in the background, with a keyfleetd that always starts with these
# arguments (their own daemons and directories); INTEROP lists them and
# INTEROP_PID holds their process IDs, for the caller to check at the end.
# KF_SPLIT_INTEROP=0 skips them (scripts/test.sh sets it for the ASan build).
start_split_interop() {
  mkdir -p "$WORK/splitbin"
  for f in "$BUILD"/*; do [ -f "$f" ] && [ -x "$f" ] && ln -s "$f" "$WORK/splitbin/$(basename "$f")"; done
  rm -f "$WORK/splitbin/keyfleetd"
  printf '#!/bin/sh\nexec "%s" %s "$@"\n' "$KEYFLEETD" "$*" > "$WORK/splitbin/keyfleetd"
  chmod +x "$WORK/splitbin/keyfleetd"
  INTEROP=()
  declare -gA INTEROP_PID=()
  if [ "${KF_SPLIT_INTEROP:-1}" != 0 ]; then
    for t in test_conformance.sh test_pykmip.sh; do
      KF_BUILD_DIR="$WORK/splitbin" bash "$SYSTEM_DIR/$t" > "$WORK/$t.out" 2>&1 &
      INTEROP_PID[$t]=$!
      EXTRA_PIDS+=($!)
      INTEROP+=("$t")
    done
  fi
}

# scan_for_keys KEYS.hex NOUN: no key of KEYS.hex (one hex key a line) in any file
# of the data directory or the daemon log: raw, any 16-byte window of a longer
# key (at steps of 8), or as hex text. NOUN names them in the report.
scan_for_keys() {
  python3 - "$DATA" "$1" "$WORK/daemon.log" "$2" <<'PY'
import os, sys
data_dir, keys_file, log, noun = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
keys = [bytes.fromhex(l.strip()) for l in open(keys_file) if l.strip()]
files = [os.path.join(r, f) for r, _, fs in os.walk(data_dir) for f in fs] + [log]
scanned = 0
for path in files:
    try:
        blob = open(path, "rb").read()
    except OSError:
        continue  # the socket
    scanned += len(blob)
    low = blob.lower()
    for k in keys:
        # raw bytes, any 16-byte window of a longer key, and the hex text form
        probes = [k] + [k[i:i + 16] for i in range(0, len(k) - 15, 8)]
        for p in probes:
            if p in blob:
                sys.exit(f"{noun} bytes found in {path}")
        if k.hex().encode() in low:
            sys.exit(f"{noun} hex found in {path}")
print(f"scanned {len(files)} files, {scanned} bytes, {len(keys)} {noun}s: none found")
PY
}
