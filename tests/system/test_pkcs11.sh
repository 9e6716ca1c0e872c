#!/usr/bin/env bash
# The same behaviour on the PKCS#11 backend, with a throwaway SoftHSM2 token:
# sealed until the token login, init makes a non-extractable root key in the
# token, wrong PIN refused, keys wrap/unwrap, seal and unseal again, restart
# with a PIN file, audit verifies, no key bytes on disk.
source "$(dirname "$0")/lib.sh"
MODULE=${KF_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
[ -f "$MODULE" ] || fail "SoftHSM2 module $MODULE missing (apt-get install softhsm2)"
eval "$(sh "$(dirname "$0")/softhsm-setup.sh" "$WORK/hsm" kf-sys 0000 4321)"
echo 4321 > "$WORK/pin"; echo 9999 > "$WORK/badpin"; chmod 600 "$WORK/pin" "$WORK/badpin"

start_daemon --pkcs11-module "$MODULE" --token-label kf-sys
expect_ok kf status; expect_contains "backend        pkcs11"; expect_contains "initialised    no"
expect_refusal "KF_ERR_SEALED\|KF_ERR_NOT_INIT" kf domain create V
expect_refusal "KF_ERR_PIN" kf init --pin-file "$WORK/badpin"
expect_ok kf init --pin-file "$WORK/pin"
expect_refusal "KF_ERR_ALREADY_INIT" kf init --pin-file "$WORK/pin"

# The root key is in the token, sensitive and not extractable.
pkcs11-tool --module "$MODULE" --token-label kf-sys --login --pin 4321 --list-objects --type secrkey > "$WORK/objs" 2>&1 || fail "pkcs11-tool"
grep -q "keyfleet-root" "$WORK/objs" || fail "no root key object in the token: $(cat "$WORK/objs")"
ok
python3 - "$WORK/objs" <<'PY' || fail "root key attributes: $(cat "$WORK/objs")"
import sys
lines = open(sys.argv[1]).read().splitlines()
i = next(n for n, l in enumerate(lines) if "label:" in l and "keyfleet-root" in l)
access = next(l for l in lines[i:i + 4] if "Access:" in l)
assert "sensitive" in access and "never extractable" in access, access
assert any("AES length 32" in l for l in lines[max(0, i - 1):i]), lines[i - 1]
PY
ok

expect_refusal "KF_ERR_SEALED" kf domain create V
expect_refusal "KF_ERR_PIN" kf unseal --pin-file "$WORK/badpin"
expect_ok kf unseal --pin-file "$WORK/pin"; expect_contains "Unsealed"
expect_ok kf domain create V
expect_ok kf key create --domain V --name hsm-1
expect_ok kf --json key show V/1 --export
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key_material"])' "$WORK/out" > "$WORK/k1"
expect_ok kf key activate V/1
expect_ok kf seal
expect_refusal "KF_ERR_SEALED" kf key create --domain V
expect_refusal "KF_ERR_SEALED" kf key show V/1 --export
expect_ok kf unseal --pin-file "$WORK/pin"
expect_ok kf --json key show V/1 --export
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key_material"])' "$WORK/out" | cmp -s - "$WORK/k1" || fail "key changed across seal/unseal"
ok
stop_daemon

# Restart with a PIN file: unsealed at start, same key.
start_daemon --pkcs11-module "$MODULE" --token-label kf-sys --pin-file "$WORK/pin"
expect_ok kf status; expect_contains "sealed         no"
expect_ok kf --json key show V/1 --export
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key_material"])' "$WORK/out" | cmp -s - "$WORK/k1" || fail "key changed across restart"
ok
expect_ok kf audit verify; expect_contains "MACs verified"
stop_daemon
k=$(cat "$WORK/k1")
python3 - "$DATA" "$k" <<'PY' || fail "key bytes on disk"
import os, sys
k = bytes.fromhex(sys.argv[2])
for r, _, fs in os.walk(sys.argv[1]):
    for f in fs:
        try:
            b = open(os.path.join(r, f), "rb").read()
        except OSError:
            continue
        assert k not in b and sys.argv[2].encode() not in b.lower(), f
PY
ok
finish
