# Helpers for test_pairing.sh and test_pairing_attacks.sh (sourced after lib.sh):
# keyfleetd serving KMIP over TLS, simulated devices (keyfleet-device) and
# attacker relays (kf-relay). docs/device-simulator.md describes the pieces.
DEVICE="$BUILD/keyfleet-device"
RELAY="$BUILD/kf-relay"
[ -x "$DEVICE" ] && [ -x "$RELAY" ] || { echo "SKIP: $DEVICE or $RELAY not built" >&2; exit 1; }
declare -A BASE_PID BASE_PORT RELAY_PID RELAY_PORT
BG_PIDS=()

pairing_cleanup() {
  local p rc=$?
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  # bases and relays run in the background: a sanitizer report in their logs fails the test
  if grep -l -e "ERROR: AddressSanitizer" -e "runtime error:" -e "ERROR: LeakSanitizer" \
       "$WORK"/*.log > "$WORK/sanitizer.txt" 2>/dev/null; then
    echo "FAIL: sanitizer report in $(cat "$WORK/sanitizer.txt")" >&2
    cat $(cat "$WORK/sanitizer.txt") >&2
    rc=1
  fi
  cleanup
  exit "$rc"
}
trap pairing_cleanup EXIT

# start_kms: keyfleetd --dev with a KMIP/TLS listener; SERVER=(...) are the meter's
# options to reach it directly with the dev device certificate.
start_kms() {
  KPORT=$(free_tcp_port)
  start_daemon --dev --kmip-listen "127.0.0.1:$KPORT"
  wait_tcp_port "$KPORT"
  CERTS="$DATA/certs"
  [ -f "$CERTS/device-cert.pem" ] && [ -f "$CERTS/device-key.pem" ] || fail "no dev device certificate"
  grep -q "subject-CN=device .*roles=device domains=default" "$CERTS/identities" || fail "no device identity rule"
  ok
  SERVER=(--server "127.0.0.1:$KPORT" --ca "$CERTS/ca-cert.pem" --cert "$CERTS/device-cert.pem"
          --key "$CERTS/device-key.pem")
  DEVICE_TLS=(--ca "$CERTS/ca-cert.pem" --cert "$CERTS/device-cert.pem" --key "$CERTS/device-key.pem")
}

# new_device ID: register in domain default, export the package once, install it.
new_device() {
  local id=$1
  expect_ok kf device register "$id" --domain default
  expect_ok kf device export "$id" -o "$WORK/$id.pkg"
  expect_ok "$DEVICE" install --state "$WORK/$id.state" --package "$WORK/$id.pkg"
  [ "$(stat -c %a "$WORK/$id.state")" = 600 ] || fail "$id.state is not 0600"; ok
}

# start_base ID [base options...]: the partner on a fresh port.
start_base() {
  local id=$1; shift
  local port; port=$(free_tcp_port)
  "$DEVICE" base --state "$WORK/$id.state" --listen "127.0.0.1:$port" "$@" >> "$WORK/$id.base.log" 2>&1 &
  BASE_PID[$id]=$!; BASE_PORT[$id]=$port; BG_PIDS+=("$!")
  wait_tcp_port "$port" "${BASE_PID[$id]}"
}
stop_base() {
  local id=$1
  kill "${BASE_PID[$id]}" 2>/dev/null || true
  wait "${BASE_PID[$id]}" 2>/dev/null || true
}
restart_base() { local id=$1; shift; stop_base "$id"; start_base "$id" "$@"; }

# meter ID PARTNER [meter options...]: straight to the base and to keyfleetd over TLS.
meter() {
  local id=$1 partner=$2; shift 2
  "$DEVICE" meter --state "$WORK/$id.state" --partner "127.0.0.1:${BASE_PORT[$partner]}" \
    --partner-id "$partner" "${SERVER[@]}" "$@"
}
# meter_via ID PARTNER_ADDR PARTNER SERVER_ADDR [options...]: through relays.
meter_via() {
  local id=$1 paddr=$2 partner=$3 saddr=$4; shift 4
  "$DEVICE" meter --state "$WORK/$id.state" --partner "$paddr" --partner-id "$partner" \
    --via "$saddr" "$@"
}

# start_relay NAME UPSTREAM_PORT tls|plain SCRIPT: records into $WORK/NAME.rec.
start_relay() {
  local name=$1 up=$2 mode=$3 script=$4
  local port; port=$(free_tcp_port)
  printf '%s\n' "$script" > "$WORK/$name.script"
  local extra=()
  [ "$mode" = tls ] && extra=(--upstream-tls "${DEVICE_TLS[@]}")
  "$RELAY" --listen "127.0.0.1:$port" --upstream "127.0.0.1:$up" "${extra[@]}" \
    --record "$WORK/$name.rec" --script "$WORK/$name.script" > "$WORK/$name.relay.log" 2>&1 &
  RELAY_PID[$name]=$!; RELAY_PORT[$name]=$port; BG_PIDS+=("$!")
  wait_tcp_port "$port" "${RELAY_PID[$name]}"
}
stop_relay() {
  kill "${RELAY_PID[$1]}" 2>/dev/null || true
  wait "${RELAY_PID[$1]}" 2>/dev/null || true
}

# dshow ID FILE: the device's state as JSON, keys included (for the comparisons and scans).
# ("now" is left out so that two snapshots of an unchanged device are equal)
dshow() {
  "$DEVICE" show --state "$WORK/$1.state" --json --reveal-keys "${@:3}" > "$2.raw" || fail "show $1"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("now"); print(json.dumps(d, sort_keys=True))' "$2.raw" > "$2"
}
# jv FILE PYEXPR: evaluate a Python expression over the JSON in FILE (as d).
jv() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=eval(sys.argv[2]); print(json.dumps(v) if isinstance(v,(dict,list,bool)) else v)' "$1" "$2"; }
# check FILE PYEXPR WHAT: the expression must be true.
check() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2" || fail "$3: $(cat "$1")"; ok; }
# server_dev ID FILE: keyfleetd's view of a device (counter, acks) as JSON.
server_dev() { kf --json device show "$1" > "$2" || fail "device show $1"; }
# audit_all JSON TEXT: the whole audit trail (paged: one answer holds at most 500 records),
# as one JSON list and as the CLI's text.
audit_all() {
  local from=1 n
  echo "[]" > "$1"; : > "$2"
  while :; do
    kf --json audit show --from "$from" --limit 500 > "$1.page" || fail "audit show --json"
    kf audit show --from "$from" --limit 500 >> "$2" || fail "audit show"
    n=$(python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); p=json.load(open(sys.argv[2])); json.dump(a+p, open(sys.argv[1],"w")); print(len(p))' "$1" "$1.page")
    [ "$n" -eq 500 ] || break
    from=$((from + 500))
  done
}
# same_state A B WHAT: two JSON snapshots of a device are equal.
same_state() { cmp -s "$1" "$2" || fail "$3: $(diff "$1" "$2")"; ok; }
