#!/usr/bin/env bash
# No plaintext key bytes anywhere in the data directory: create keys of every
# kind, export them through the CLI (so the test knows their bytes), destroy
# some, then scan every file (database, WAL, shm, lock, logs) for each key,
# while the daemon runs and after it stopped.
source "$(dirname "$0")/lib.sh"
start_daemon --dev
expect_ok kf domain create VENDOR
expect_ok kf domain create USPS
: > "$WORK/keys.hex"
n=0
for spec in "aes --length 128" "aes --length 192" "aes --length 256" "hmac-sha256" \
            "hmac-sha512" "secret --length 256" "secret --length 1024"; do
  for dom in VENDOR USPS; do
    for _ in 1 2; do
      uid=$(kf key create --domain $dom --alg $spec) || fail "create $spec"
      kf --json key show "$uid" --export > "$WORK/k.json" || fail "export $uid"
      python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key_material"])' "$WORK/k.json" >> "$WORK/keys.hex"
      n=$((n + 1))
      if [ $((n % 3)) -eq 0 ]; then
        kf key destroy "$uid" > /dev/null || fail "destroy $uid"
      fi
    done
  done
done
[ "$(sort -u "$WORK/keys.hex" | wc -l)" -eq "$n" ] || fail "exported keys are not all distinct"
ok

scan() { scan_for_keys "$WORK/keys.hex" key; }
scan || fail "scan while running"; ok
stop_daemon
scan || fail "scan after stop"; ok
finish
