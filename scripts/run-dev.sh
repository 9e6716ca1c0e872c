#!/usr/bin/env bash
# One command for a newcomer: install dependencies, build, and run keyfleetd on
# its embedded defaults (SQLite store, soft security module in dev mode that
# unseals itself) with its data in ./data. Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
# keyfleetd creates data/ itself, mode 0700.
echo "keyfleetd: data in $(pwd)/data, admin socket $(pwd)/data/keyfleetd.sock, KMIP over TLS on 127.0.0.1:5696 (dev CA and client certs admin/user in $(pwd)/data/certs)"
echo "try, in another shell:  build/keyfleet --dir data status"
exec build/keyfleetd --dev --dir data
