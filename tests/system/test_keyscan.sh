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

scan() {
  python3 - "$DATA" "$WORK/keys.hex" "$WORK/daemon.log" <<'PY'
import os, sys
data_dir, keys_file, log = sys.argv[1], sys.argv[2], sys.argv[3]
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
                sys.exit(f"key bytes found in {path}")
        if k.hex().encode() in low:
            sys.exit(f"key hex found in {path}")
print(f"scanned {len(files)} files, {scanned} bytes, {len(keys)} keys: none found")
PY
}
scan || fail "scan while running"; ok
stop_daemon
scan || fail "scan after stop"; ok
finish
