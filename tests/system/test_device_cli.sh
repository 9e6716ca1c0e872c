#!/usr/bin/env bash
# Devices through the real daemon and CLI: register (and its refusals), the
# installation package exported once to a new 0600 file (a second export is
# refused and audited, an existing file is never replaced and a bad path does
# not cost the export), device show in text and JSON, the master key refused
# to KMIP Get, pair key requests over the admin socket (counters and KEK IDs
# strictly increasing), then a key scan: the master keys from the packages
# appear nowhere in the data directory or the daemon log.
source "$(dirname "$0")/lib.sh"
PKG="$WORK/packages"
mkdir -p "$PKG"
start_daemon --dev --no-kmip
expect_ok kf domain create VENDOR
expect_ok kf domain create USPS

expect_ok "$KEYFLEET" --help; expect_contains "device export ID -o FILE"

# Register.
expect_ok kf device register meter-1 --domain VENDOR; expect_contains "registered in VENDOR"
expect_ok kf --json device register base-1 --domain VENDOR
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["device"]=="base-1" and d["domain"]=="VENDOR" and d["master_key"].startswith("VENDOR/")' "$WORK/out" || fail "register JSON"; ok
expect_ok kf device register usps-1 --domain USPS
expect_refusal "KF_ERR_DEVICE_EXISTS" kf device register meter-1 --domain VENDOR
expect_refusal "KF_ERR_DEVICE_EXISTS" kf device register meter-1 --domain USPS
expect_refusal "KF_ERR_DEVICE_ID" kf device register "bad/id" --domain VENDOR
expect_refusal "ItemNotFound" kf device register meter-9 --domain NOWHERE
expect_refusal "needs --domain" kf device register meter-9
expect_refusal "ItemNotFound" kf device show ghost

expect_ok kf device show meter-1
expect_contains "exported       no"; expect_contains "counter        0"
mkek_uid=$(kf --json device show meter-1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["master_key"])')
[ -n "$mkek_uid" ] || fail "no master key uid"; ok

# The master key is never served by KMIP Get, not even to the administrator.
expect_refusal "KF_ERR_EXPORT" kf key show "$mkek_uid" --export

# Export: a bad path costs nothing, an existing file is never replaced.
expect_refusal "cannot create" kf device export meter-1 -o "$WORK/no-such-dir/m.pkg"
echo keep > "$PKG/existing"
expect_refusal "never replaced" kf device export meter-1 -o "$PKG/existing"
[ "$(cat "$PKG/existing")" = keep ] || fail "existing file was touched"; ok
expect_refusal "needs -o FILE" kf device export meter-1
expect_ok kf device export meter-1 -o "$PKG/meter-1.pkg"; expect_contains "written to"
[ "$(stat -c %a "$PKG/meter-1.pkg")" = 600 ] || fail "package mode is not 0600"; ok
# Once only: refused, no file left behind, and the refusal is in the audit trail.
expect_refusal "KF_ERR_DEVICE_EXPORTED" kf device export meter-1 -o "$PKG/again.pkg"
[ ! -e "$PKG/again.pkg" ] || fail "a refused export left a file"; ok
expect_ok kf --json device export base-1 -o "$PKG/base-1.pkg"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["device"]=="base-1" and d["bytes"]>=80' "$WORK/out" || fail "export JSON"; ok
expect_ok kf device export usps-1 -o "$PKG/usps-1.pkg"
expect_ok kf --json device show meter-1
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["exported"] is True and d["counter"]==0 and d["last_kek_id"]==0' "$WORK/out" || fail "show JSON"; ok
expect_ok kf --json audit show
python3 - "$WORK/out" <<'PY' || fail "second export not audited"
import json, sys
recs = json.load(open(sys.argv[1]))
refused = [r for r in recs if r["operation"] == "DeviceExport" and r["result"] == "KF_ERR_DEVICE_EXPORTED"]
done = [r for r in recs if r["operation"] == "DeviceExport" and r["result"] == "ok"]
assert len(refused) == 1 and refused[0]["object"] == "meter-1", refused
assert len(done) == 3, done
PY
ok

# Pair key requests over the admin socket (KMIP TTLV), as a device's request would come.
pair() {
  python3 - "$DATA/keyfleetd.sock" "$@" <<'PY'
import socket, struct, sys
sock, a, b, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def item(tag, typ, val):
    return struct.pack(">I", tag)[1:] + bytes([typ]) + struct.pack(">I", len(val)) + val + b"\0" * ((8 - len(val) % 8) % 8)
def st(tag, *xs): return item(tag, 1, b"".join(xs))
def i32(tag, v, typ=2): return item(tag, typ, struct.pack(">i" if typ == 2 else ">I", v))
def txt(tag, s): return item(tag, 7, s.encode())
def parse(b):
    out, at = [], 0
    while at < len(b):
        tag = int.from_bytes(b[at:at + 3], "big"); typ = b[at + 3]; n = int.from_bytes(b[at + 4:at + 8], "big")
        v = b[at + 8:at + 8 + n]; at += 8 + n + (8 - n % 8) % 8
        out.append((tag, typ, parse(v) if typ == 1 else v))
    return out
def find(items, tag): return [v for t, _, v in items if t == tag]
payload = st(0x420079, txt(0x540102, a), txt(0x540103, b), i32(0x540106, count))
req = st(0x420078, st(0x420077, st(0x420069, i32(0x42006A, 1), i32(0x42006B, 4)), i32(0x42000D, 1)),
         st(0x42000F, i32(0x42005C, 0x8000000D, 5), payload))
s = socket.socket(socket.AF_UNIX); s.connect(sock); s.sendall(req)
buf = b""
while len(buf) < 8 or len(buf) < 8 + int.from_bytes(buf[4:8], "big"):
    chunk = s.recv(65536)
    if not chunk: break
    buf += chunk
item_ = find(find(parse(buf), 0x42007B)[0], 0x42000F)[0]
status = int.from_bytes(find(item_, 0x42007F)[0], "big")
if status != 0:
    msg = find(item_, 0x42007D)
    print("refused:", msg[0].decode() if msg else "?"); sys.exit(1)
parts = find(find(item_, 0x42007C)[0], 0x540110)
assert len(parts) == 2, "M must be two parts"
for role, part in zip((1, 2), parts):
    h = find(part, 0x54010F)[0]
    assert int.from_bytes(find(h, 0x540107)[0], "big") == role
    assert len(find(h, 0x54010A)) == count
    assert len(find(part, 0x54010E)[0]) == 32 * count + 16
    print(int.from_bytes(find(h, 0x540105)[0], "big"), int.from_bytes(find(h, 0x540108)[0], "big"))
PY
}
pair meter-1 base-1 2 > "$WORK/p1" || fail "pair request 1: $(cat "$WORK/p1")"
pair meter-1 base-1 1 > "$WORK/p2" || fail "pair request 2"
pair base-1 meter-1 3 > "$WORK/p3" || fail "pair request 3"
[ "$(cat "$WORK/p1" | tr '\n' ' ')" = "1 1 1 1 " ] || fail "first message: $(cat "$WORK/p1")"; ok
[ "$(cat "$WORK/p2" | tr '\n' ' ')" = "3 2 3 2 " ] || fail "second message: $(cat "$WORK/p2")"; ok
[ "$(cat "$WORK/p3" | tr '\n' ' ')" = "4 3 4 3 " ] || fail "third message: $(cat "$WORK/p3")"; ok
pair meter-1 usps-1 1 > "$WORK/out" 2>&1 && fail "cross-domain pair accepted"
grep -q KF_ERR_DOMAIN_CROSS "$WORK/out" || fail "cross-domain refusal: $(cat "$WORK/out")"; ok
pair meter-1 meter-1 1 > "$WORK/out" 2>&1 && fail "self pair accepted"
grep -q KF_ERR_PAIR_SAME "$WORK/out" || fail "self pair refusal: $(cat "$WORK/out")"; ok
expect_ok kf --json device show meter-1
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["counter"]==3 and d["last_kek_id"]==6 and d["acks_pending"]==3, d' "$WORK/out" || fail "counters after pairing"; ok
expect_ok kf audit show; expect_contains "PairKeyRequest"
expect_ok kf audit verify

# Key scan: the master keys from the packages are nowhere in the data directory or the log.
for f in "$PKG"/*.pkg; do
  python3 - "$f" <<'PY' >> "$WORK/keys.hex" || fail "package $f"
import sys
b = open(sys.argv[1], "rb").read()
at = 8
while at < len(b):
    tag = int.from_bytes(b[at:at + 3], "big"); n = int.from_bytes(b[at + 4:at + 8], "big")
    if tag == 0x54011D:
        assert n == 32; print(b[at + 8:at + 40].hex())
    at += 8 + n + (8 - n % 8) % 8
PY
done
[ "$(sort -u "$WORK/keys.hex" | wc -l)" -eq 3 ] || fail "expected 3 distinct master keys"; ok
scan() { scan_for_keys "$WORK/keys.hex" "master key"; }
scan || fail "scan while running"; ok
stop_daemon
scan || fail "scan after stop"; ok
finish
