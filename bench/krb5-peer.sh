#!/usr/bin/env bash
# Runs MIT Kerberos' KDC (Debian's krb5-kdc) as a peer to measure keyfleetd's
# pair-key issuance against: a throwaway realm on loopback, everything under DIR
# (database, stash, krb5.conf, kdc.conf, log). Nothing under /etc is read or written:
# the tools are pointed at DIR through KRB5_CONFIG and KRB5_KDC_PROFILE.
#
#   bench/krb5-peer.sh start DIR [SERVICES] [WORKERS]
#        make the realm KFBENCH.TEST with a client principal (password) and SERVICES
#        service principals bench/svcN (default 16, random keys), start krb5kdc on a
#        free loopback port (UDP and TCP), with WORKERS worker processes (default 1:
#        krb5kdc's default, one process), write DIR/peer.env and print it
#   bench/krb5-peer.sh stop DIR        stop that KDC and delete DIR
#   bench/krb5-peer.sh count DIR       print how many TGS requests the KDC issued a
#                                      ticket for so far (from its log)
#
# peer.env: KRB5_CONFIG (clients use UDP, libkrb5's default for messages this small),
# KRB5_CONFIG_TCP (the same over TCP), KRB5_KDC_PROFILE, KRB5_PORT, KRB5_REALM, KRB5_CLIENT,
# KRB5_PASSWORD, KRB5_SERVICES (count), KRB5_SERVICE_PREFIX, KRB5_KDC_PID, KRB5_LOG.
# The KDC logs every request to DIR/kdc.log (its default behaviour with a FILE: log);
# `count` reads that log, so a benchmark can prove each of its calls reached the KDC.
# The enctype is aes256-cts-hmac-sha1-96 only, the usual modern default.
set -euo pipefail
PY=/usr/bin/python3
REALM=KFBENCH.TEST
PREFIX=bench/svc

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

need() {
  command -v "$1" > /dev/null || [ -x "/usr/sbin/$1" ] ||
    { echo "krb5-peer: $1 missing (apt-get install krb5-kdc krb5-admin-server)" >&2; exit 1; }
}
sbin() { if command -v "$1" > /dev/null; then command -v "$1"; else echo "/usr/sbin/$1"; fi; }

free_port() {
  # A port free for both TCP and UDP on 127.0.0.1.
  "$PY" - <<'EOF'
import socket
for _ in range(50):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
    except OSError:
        continue
    print(p); break
EOF
}

start_peer() {
  local dir=$1 services=${2:-16} workers=${3:-1}
  need krb5kdc; need kdb5_util; need kadmin.local
  [ -e "$dir/kdc.pid" ] && { echo "krb5-peer: $dir already has a KDC" >&2; exit 1; }
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local port password
  port=$(free_port)
  password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  umask 077
  cat > "$dir/krb5.conf" <<EOF
[libdefaults]
    default_realm = $REALM
    dns_lookup_kdc = false
    dns_lookup_realm = false
    rdns = false
    dns_canonicalize_hostname = false
    ignore_acceptor_hostname = true
    default_ccache_name = FILE:$dir/ccache
    permitted_enctypes = aes256-cts-hmac-sha1-96
    default_tkt_enctypes = aes256-cts-hmac-sha1-96
    default_tgs_enctypes = aes256-cts-hmac-sha1-96
[realms]
    $REALM = {
        kdc = 127.0.0.1:$port
        admin_server = 127.0.0.1:1
    }
EOF
  # The same client configuration, but every request over TCP (one connection per
  # request: that is how libkrb5 talks TCP to a KDC).
  sed 's/^\[libdefaults\]$/[libdefaults]\n    udp_preference_limit = 1/' "$dir/krb5.conf" > "$dir/krb5-tcp.conf"
  cat > "$dir/kdc.conf" <<EOF
[kdcdefaults]
    kdc_listen = 127.0.0.1:$port
    kdc_tcp_listen = 127.0.0.1:$port
[realms]
    $REALM = {
        database_name = $dir/principal
        key_stash_file = $dir/stash
        acl_file = $dir/kadm5.acl
        kdc_listen = 127.0.0.1:$port
        kdc_tcp_listen = 127.0.0.1:$port
        max_life = 10h 0m 0s
        max_renewable_life = 7d 0h 0m 0s
        master_key_type = aes256-cts-hmac-sha1-96
        supported_enctypes = aes256-cts-hmac-sha1-96:normal
    }
[logging]
    kdc = FILE:$dir/kdc.log
    admin_server = FILE:$dir/kadmin.log
    default = FILE:$dir/krb5.log
EOF
  : > "$dir/kadm5.acl"
  export KRB5_CONFIG="$dir/krb5.conf" KRB5_KDC_PROFILE="$dir/kdc.conf"
  "$(sbin kdb5_util)" -r "$REALM" create -s -P "$(head -c 18 /dev/urandom | base64)" \
    > "$dir/setup.log" 2>&1 || { cat "$dir/setup.log" >&2; exit 1; }
  { echo "addprinc -pw $password client"
    for i in $(seq 0 $((services - 1))); do echo "addprinc -randkey $PREFIX$i"; done
  } | "$(sbin kadmin.local)" -r "$REALM" >> "$dir/setup.log" 2>&1 ||
    { tail -20 "$dir/setup.log" >&2; exit 1; }
  local wargs=()
  [ "$workers" -gt 1 ] && wargs=(-w "$workers")
  # setsid: with -w the KDC forks workers; its own process group lets stop end
  # exactly those processes.
  setsid "$(sbin krb5kdc)" -n -r "$REALM" -P "$dir/kdc.pid" "${wargs[@]}" \
    > "$dir/stdout.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$dir/kdc.pid.leader"
  for _ in $(seq 1 100); do
    if "$PY" -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$port)))" 2>/dev/null; then
      break
    fi
    kill -0 "$pid" 2>/dev/null || { echo "krb5-peer: krb5kdc exited at start:" >&2; tail -20 "$dir/stdout.log" "$dir/kdc.log" >&2 2>/dev/null; exit 1; }
    sleep 0.1
  done
  cat > "$dir/peer.env" <<EOF
KRB5_CONFIG=$dir/krb5.conf
KRB5_CONFIG_TCP=$dir/krb5-tcp.conf
KRB5_KDC_PROFILE=$dir/kdc.conf
KRB5_PORT=$port
KRB5_REALM=$REALM
KRB5_CLIENT=client@$REALM
KRB5_PASSWORD=$password
KRB5_SERVICES=$services
KRB5_SERVICE_PREFIX=$PREFIX
KRB5_WORKERS=$workers
KRB5_KDC_PID=$pid
KRB5_LOG=$dir/kdc.log
EOF
  touch "$dir/kdc.pid"
  cat "$dir/peer.env"
}

stop_peer() {
  local dir=$1 pid
  [ -f "$dir/kdc.pid.leader" ] || { echo "krb5-peer: no KDC recorded in $dir" >&2; exit 1; }
  pid=$(cat "$dir/kdc.pid.leader")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -rf "$dir"
}

count_peer() {
  local dir=$1
  [ -f "$dir/kdc.log" ] || { echo 0; return; }
  # One line per TGS request: "TGS_REQ (...) 127.0.0.1: ISSUE: authtime ..., for svc@REALM".
  grep -c 'TGS_REQ.*ISSUE:' "$dir/kdc.log" || true
}

case "${1:-}" in
  start) [ $# -ge 2 ] || usage; start_peer "$2" "${3:-16}" "${4:-1}" ;;
  stop)  [ $# -eq 2 ] || usage; stop_peer "$2" ;;
  count) [ $# -eq 2 ] || usage; count_peer "$2" ;;
  *) usage ;;
esac
