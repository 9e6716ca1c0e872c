#!/bin/sh
# Create a throwaway SoftHSM2 token for tests.
#
#   tests/system/softhsm-setup.sh DIR [LABEL] [SO_PIN] [USER_PIN]
#
# Writes DIR/softhsm2.conf with its token directory DIR/tokens, initialises a
# token (default label keyfleet-test, SO PIN 0000, user PIN 1234) in the first
# free slot, and prints the line "export SOFTHSM2_CONF=DIR/softhsm2.conf";
# eval it to use the token from the calling shell:
#   eval "$(tests/system/softhsm-setup.sh /tmp/kf-hsm)"
# (Run it, do not source it: it sets -eu.)
# PINs here are test values for a throwaway token only.
set -eu

kf_hsm_dir=${1:?usage: softhsm-setup.sh DIR [LABEL] [SO_PIN] [USER_PIN]}
kf_hsm_label=${2:-keyfleet-test}
kf_hsm_so_pin=${3:-0000}
kf_hsm_pin=${4:-1234}

command -v softhsm2-util >/dev/null 2>&1 || {
    echo "softhsm-setup.sh: softhsm2-util not found (apt-get install softhsm2)" >&2
    exit 1
}

mkdir -p "$kf_hsm_dir/tokens"
kf_hsm_dir=$(cd "$kf_hsm_dir" && pwd)
cat >"$kf_hsm_dir/softhsm2.conf" <<CONF
directories.tokendir = $kf_hsm_dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF

SOFTHSM2_CONF=$kf_hsm_dir/softhsm2.conf
export SOFTHSM2_CONF
softhsm2-util --init-token --free --label "$kf_hsm_label" \
    --so-pin "$kf_hsm_so_pin" --pin "$kf_hsm_pin" >/dev/null
echo "export SOFTHSM2_CONF=$SOFTHSM2_CONF"
