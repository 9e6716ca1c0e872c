#!/usr/bin/env bash
# Runs PyKMIP's reference server (Debian package python3-pykmip) as a peer to measure
# keyfleetd against, and as a known-good server for tests/interop/test_pykmip_client.py.
# Everything is throwaway: a fresh CA, server and client certificates, config, policy
# directory, log and SQLite database under DIR.
#
#   bench/pykmip-peer.sh start DIR [PORT]   start in the background; writes DIR/peer.env
#                                           (PYKMIP_HOST/PORT/CA/CERT/KEY/PID) and prints it
#   bench/pykmip-peer.sh stop DIR           stop the server started in DIR and delete DIR
#   bench/pykmip-peer.sh certs DIR          only generate the certificates (ca.pem,
#                                           server.{pem,key}, client.{pem,key})
#
# PORT defaults to a free loopback port chosen by the kernel. The server logs at WARNING
# (PYKMIP_LOG_LEVEL=INFO or DEBUG to see each request) so logging does not skew a benchmark.
# Example:
#   bench/pykmip-peer.sh start /tmp/peer && . /tmp/peer/peer.env
#   /usr/bin/python3 tests/interop/test_pykmip_client.py --host 127.0.0.1 \
#       --port "$PYKMIP_PORT" --ca "$PYKMIP_CA" --cert "$PYKMIP_CERT" --key "$PYKMIP_KEY"
#   bench/pykmip-peer.sh stop /tmp/peer
#
# PyKMIP's server speaks TLS 1.2 only (its "TLS1.2" authentication suite) with a fixed
# list of suites that has no RSA+GCM suite and prefers CBC-SHA256 suites; we use an ECDSA
# P-256 certificate and allow only ECDHE-ECDSA-AES256-GCM-SHA384 (one suite: PyKMIP passes
# the configured list through a set, so the order of several is not fixed), the AEAD that
# keyfleetd negotiates too, so a benchmark compares like with like. It requires the
# clientAuth extended key usage in client certificates and takes the client identity
# from the certificate's common name.
set -euo pipefail
PY=/usr/bin/python3  # Debian's interpreter: the one that has python3-pykmip

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# cert_template FILE CN USAGE...: a certtool template for an end-entity or CA certificate.
cert_template() {
  local file=$1 cn=$2; shift 2
  { echo "cn = \"$cn\""; echo "expiration_days = 7"; echo "serial = $RANDOM$RANDOM"
    for line in "$@"; do echo "$line"; done; } > "$file"
}

make_certs() {
  local dir=$1
  mkdir -p "$dir"
  command -v certtool >/dev/null || { echo "pykmip-peer: certtool missing (apt-get install gnutls-bin)" >&2; exit 1; }
  ( cd "$dir"
    umask 077
    for who in ca server client; do
      certtool --generate-privkey --key-type=ecdsa --curve=secp256r1 --outfile "$who.key" 2>/dev/null
    done
    cert_template ca.tmpl "pykmip-peer test CA" "ca" "cert_signing_key"
    certtool --generate-self-signed --load-privkey ca.key --template ca.tmpl --outfile ca.pem 2>/dev/null
    cert_template server.tmpl "127.0.0.1" "ip_address = \"127.0.0.1\"" "dns_name = \"localhost\"" \
      "tls_www_server" "signing_key"
    certtool --generate-certificate --load-privkey server.key --load-ca-certificate ca.pem \
      --load-ca-privkey ca.key --template server.tmpl --outfile server.pem 2>/dev/null
    # PyKMIP's server refuses a client certificate without the clientAuth EKU and
    # uses its CN as the client identity (object owner).
    cert_template client.tmpl "admin" "tls_www_client" "signing_key"
    certtool --generate-certificate --load-privkey client.key --load-ca-certificate ca.pem \
      --load-ca-privkey ca.key --template client.tmpl --outfile client.pem 2>/dev/null
    rm -f ./*.tmpl )
}

start_peer() {
  local dir=$1 port=${2:-}
  [ -e "$dir/pykmip.pid" ] && { echo "pykmip-peer: $dir already has a server" >&2; exit 1; }
  "$PY" -c 'import kmip' 2>/dev/null || { echo "pykmip-peer: $PY lacks kmip (apt-get install python3-pykmip)" >&2; exit 1; }
  [ -n "$port" ] || port=$(free_port)
  dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
  make_certs "$dir"
  mkdir -p "$dir/policies"
  cat > "$dir/server.conf" <<EOF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$dir/server.pem
key_path=$dir/server.key
ca_path=$dir/ca.pem
auth_suite=TLS1.2
policy_path=$dir/policies
enable_tls_client_auth=True
tls_cipher_suites=TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
logging_level=${PYKMIP_LOG_LEVEL:-WARNING}
database_path=$dir/pykmip.db
EOF
  # setsid: the server forks a policy monitor and a multiprocessing manager; its own
  # process group lets stop_peer end exactly those processes and nothing else.
  setsid "$PY" -W ignore -m kmip.services.server.server -f "$dir/server.conf" \
    -l "$dir/server.log" > "$dir/stdout.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$dir/pykmip.pid"
  for _ in $(seq 1 100); do
    if "$PY" -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$port)))" 2>/dev/null; then
      break
    fi
    kill -0 "$pid" 2>/dev/null || { echo "pykmip-peer: server exited at start:" >&2; tail -20 "$dir/stdout.log" "$dir/server.log" >&2 2>/dev/null; rm -f "$dir/pykmip.pid"; exit 1; }
    sleep 0.1
  done
  cat > "$dir/peer.env" <<EOF
PYKMIP_HOST=127.0.0.1
PYKMIP_PORT=$port
PYKMIP_CA=$dir/ca.pem
PYKMIP_CERT=$dir/client.pem
PYKMIP_KEY=$dir/client.key
PYKMIP_PID=$pid
EOF
  cat "$dir/peer.env"
}

stop_peer() {
  local dir=$1 pid
  [ -f "$dir/pykmip.pid" ] || { echo "pykmip-peer: no server recorded in $dir" >&2; exit 1; }
  pid=$(cat "$dir/pykmip.pid")
  # The server is the leader of its own process group (setsid above).
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) [ $# -ge 2 ] || usage; start_peer "$2" "${3:-}" ;;
  stop)  [ $# -eq 2 ] || usage; stop_peer "$2" ;;
  certs) [ $# -eq 2 ] || usage; make_certs "$2" ;;
  *) usage ;;
esac
