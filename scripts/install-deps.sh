#!/usr/bin/env bash
# Installs keyfleet's build and test dependencies from Debian bookworm's archive.
set -euo pipefail
PKGS=(build-essential cmake pkg-config clang libclang-rt-14-dev llvm
      libgnutls28-dev gnutls-bin nettle-dev libgmp-dev libsqlite3-dev sqlite3
      libp11-kit-dev softhsm2 opensc libcmocka-dev python3-pykmip
      krb5-kdc krb5-admin-server krb5-user libkrb5-dev)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
