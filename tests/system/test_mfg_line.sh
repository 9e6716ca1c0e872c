#!/usr/bin/env bash
# A manufacturing line end to end (seed EP 0 735 720 Fig. 29-31,
# docs/manufacturing.md): keyfleetd with the vendor domain VE, the postal
# domains USPS (US) and UKRM (GB) and the earth domain EARTH; two Steels
# (keyfleet-install) enrolled; 1,000 simulated postage devices, 600 for USPS
# and 400 for EARTH, each getting a vendor and a postal key, with every fault
# kind injected at known devices in both domains. Then: each fault ends with
# the status and reason it must (line output, keyfleet-install status,
# keyfleet mfg status), every other device holds two Installed keys, no key is
# ever in two devices and every Installed archive row is held by exactly its
# device; registration (USPS devices to US, EARTH devices to US through the
# earth transfer) makes the keys Active and the earth records Transferred, a
# second registration of an earth device to GB is refused by the device and,
# for a clone of the device, by keyfleetd; a registered device prints indicia;
# an archive record modified in the SQLite file is refused at its next use;
# the audit trail verifies; no device key is in the data directory or the log.
source "$(dirname "$0")/lib.sh"
INSTALL="$BUILD/keyfleet-install"
DEVICE="$BUILD/keyfleet-device"
for b in "$INSTALL" "$DEVICE" "$KEYFLEET" "$KEYFLEETD"; do [ -x "$b" ] || fail "$b not built"; done
command -v certtool > /dev/null || fail "certtool not found (Debian gnutls-bin)"
command -v sqlite3 > /dev/null || fail "sqlite3 not found (Debian sqlite3)"
T_START=$(date +%s)
DB="$DATA/keyfleet.db"

# ---- keyfleetd with client certificates for the line's roles ----
KPORT=$(free_tcp_port)
start_daemon --dev --kmip-listen "127.0.0.1:$KPORT"
wait_tcp_port "$KPORT"
CERTS="$DATA/certs"
client_cert() {
  local cn=$1
  certtool --generate-privkey --key-type ecdsa --outfile "$WORK/$cn-key.pem" 2> /dev/null
  printf 'cn = %s\norganization = keyfleet dev\ntls_www_client\nexpiration_days = 30\n' "$cn" \
    > "$WORK/$cn.tmpl"
  certtool --generate-certificate --load-privkey "$WORK/$cn-key.pem" \
    --load-ca-certificate "$CERTS/ca-cert.pem" --load-ca-privkey "$CERTS/ca-key.pem" \
    --template "$WORK/$cn.tmpl" --outfile "$WORK/$cn-cert.pem" 2> /dev/null || fail "certtool $cn"
}
client_cert steel
client_cert registrar
cp "$CERTS/identities" "$WORK/identities"
cat >> "$WORK/identities" <<'EOF'
subject-CN=steel subject-O="keyfleet dev" roles=steel domains=VE,USPS,EARTH,UKRM default=VE
subject-CN=registrar subject-O="keyfleet dev" roles=registrar domains=VE,USPS,EARTH,UKRM default=VE
EOF
chmod 600 "$WORK/identities"
stop_daemon
start_daemon --dev --kmip-listen "127.0.0.1:$KPORT" --kmip-identities "$WORK/identities"
wait_tcp_port "$KPORT"
tls() { echo --server "127.0.0.1:$KPORT" --ca "$CERTS/ca-cert.pem" --cert "$1" --key "$2"; }
read -r -a AS_ADMIN <<< "$(tls "$CERTS/admin-cert.pem" "$CERTS/admin-key.pem")"
read -r -a AS_STEEL <<< "$(tls "$WORK/steel-cert.pem" "$WORK/steel-key.pem")"
read -r -a AS_REG <<< "$(tls "$WORK/registrar-cert.pem" "$WORK/registrar-key.pem")"
expect_exit() { local want=$1 got=0; shift; "$@" > "$WORK/out" 2> "$WORK/err" || got=$?
  [ "$got" -eq "$want" ] || fail "exit $got, not $want: $* ($(tail -3 "$WORK/err"))"; ok; }

# ---- domains ----
expect_ok kf mfg setup --domain VE --kind vendor
expect_contains "authority"
expect_ok kf mfg setup --domain USPS --kind postal --country US
expect_ok kf mfg setup --domain EARTH --kind earth
expect_ok kf mfg setup --domain UKRM --kind postal --country GB
expect_refusal "KF_ERR_MFG_PARAM" kf mfg setup --domain VE2 --kind vendor
expect_refusal "KF_ERR_EXISTS" kf mfg setup --domain USPS --kind postal --country US
expect_exit 2 kf mfg setup --domain X --kind postal
expect_exit 2 kf mfg setup --domain X --kind lunar
expect_refusal "KF_ERR_MFG_COMMAND" "$KEYFLEET" "${AS_STEEL[@]}" mfg setup --domain X --kind earth
expect_ok kf mfg certs --domain VE
[ "$(grep -c ' verified$' "$WORK/out")" -eq 3 ] || fail "VE certificates: $(cat "$WORK/out")"; ok
expect_ok "$KEYFLEET" "${AS_ADMIN[@]}" --json mfg certs --domain USPS   # remote, over TLS
[ "$(grep -o '"verified":true' "$WORK/out" | wc -l)" -eq 3 ] || fail "USPS certificates: $(cat "$WORK/out")"; ok

# ---- two Steels ----
for s in 1 2; do
  expect_ok "$INSTALL" init --state "$WORK/s$s" --role-id "S0000000$s" --key-file "$WORK/s$s.key"
done
[ "$(stat -c %a "$WORK/s1")" = 700 ] && [ "$(stat -c %a "$WORK/s1/keys")" = 600 ] &&
  [ "$(stat -c %a "$WORK/s1.key")" = 600 ] || fail "station file modes"; ok
expect_refusal "KF_ERR_EXISTS" "$INSTALL" init --state "$WORK/s1" --role-id S00000003 --key-file "$WORK/s3.key"
expect_exit 2 "$INSTALL" init --state "$WORK/s9" --role-id O00000001
expect_refusal "KF_ERR_AUTH" "$INSTALL" enroll --state "$WORK/s1" --key-file "$WORK/s2.key" --domain VE "${AS_ADMIN[@]}"
expect_refusal "KF_ERR_MFG_COMMAND" "$INSTALL" enroll --state "$WORK/s1" --key-file "$WORK/s1.key" --domain VE "${AS_STEEL[@]}"
S1=(--state "$WORK/s1" --key-file "$WORK/s1.key")
expect_ok "$INSTALL" enroll "${S1[@]}" --domain VE --domain USPS --domain EARTH --domain UKRM "${AS_ADMIN[@]}"
expect_contains "S00000001 enrolled in UKRM"
expect_ok "$INSTALL" enroll --state "$WORK/s2" --key-file "$WORK/s2.key" --domain VE --domain USPS --domain EARTH "${AS_ADMIN[@]}"
expect_refusal "KF_ERR_EXISTS" "$INSTALL" enroll "${S1[@]}" --domain VE "${AS_ADMIN[@]}"
for sub in init enroll line register status; do
  "$INSTALL" "$sub" --help > "$WORK/out" || fail "$sub --help"
  grep -q "Usage: keyfleet-install $sub" "$WORK/out" || fail "$sub --help text"; ok
done
"$KEYFLEET" mfg --help | grep -q "mfg retire" || fail "keyfleet mfg --help"; ok
"$DEVICE" meter print --help | grep -q "postal-code" || fail "keyfleet-device meter print --help"; ok
# A registrar may not ask for keys; a line that cannot start stops at once.
expect_exit 1 "$INSTALL" line "${S1[@]}" --vendor VE --postal USPS --count 1 --first 99999 \
  --devices "$WORK/none" "${AS_REG[@]}"
grep -q "KF_ERR_MFG_COMMAND" "$WORK/err" || fail "registrar asking for a key: $(cat "$WORK/err")"; ok
expect_exit 2 "$INSTALL" line "${S1[@]}" --vendor VE --postal USPS --count 5 --devices "$WORK/x" \
  --fault melt@2 "${AS_STEEL[@]}"
expect_exit 2 "$INSTALL" line "${S1[@]}" --vendor VE --postal USPS --count 5 --devices "$WORK/x" \
  --fault replay-mi4@1 "${AS_STEEL[@]}"

# ---- the line: 600 USPS devices, then 400 EARTH devices ----
# fault@device[:postal], each kind in each domain
USPS_FAULTS="drop-mi4@10 bad-token@20 bad-token-unchecked@30 replay-mi4@40 wrong-steel@50
  second-install@60 write-error@70 drop-mi4@110:postal bad-token@120:postal
  bad-token-unchecked@130:postal replay-mi4@140:postal wrong-steel@150:postal
  second-install@160:postal write-error@170:postal"
EARTH_FAULTS="drop-mi4@610:postal second-install@620:postal write-error@630 bad-token@640:postal
  replay-mi4@650 wrong-steel@660:postal bad-token-unchecked@670:postal"
run_line() {
  local postal=$1 first=$2 count=$3 dir=$4 faults=$5 args=() f
  for f in $faults; do args+=(--fault "$f"); done
  local t0; t0=$(date +%s.%N)
  expect_exit 4 "$INSTALL" line "${S1[@]}" --vendor VE --postal "$postal" --first "$first" \
    --count "$count" --devices "$dir" --other-steel S00000002 "${args[@]}" "${AS_STEEL[@]}"
  cp "$WORK/out" "$WORK/line-$postal.out"
  echo "line $postal: $(tail -1 "$WORK/out") (wall $(python3 -c "import time;print(round(time.time()-$t0,1))") s)"
}
run_line USPS 1 600 "$WORK/usps" "$USPS_FAULTS"
run_line EARTH 601 400 "$WORK/earth" "$EARTH_FAULTS"
# A device is made once.
expect_refusal "KF_ERR_EXISTS" "$INSTALL" line "${S1[@]}" --vendor VE --postal USPS --first 5 --count 1 \
  --devices "$WORK/usps" "${AS_STEEL[@]}"

# Every device's slots, decoded by the device itself (never a key).
: > "$WORK/slots"
for f in "$WORK"/usps/*.state "$WORK"/earth/*.state; do
  "$DEVICE" meter show --state "$f" --json >> "$WORK/slots" || fail "meter show $f"
done
ok
"$DEVICE" meter show --state "$WORK/usps/SN00000001.state" > "$WORK/out" || fail "meter show"
grep -q "^key          VE " "$WORK/out" && grep -q "^key          USPS " "$WORK/out" || fail "meter show text"; ok

# The line outputs, the archive rows and the device slots against each other. The
# archive is read with a read-only connection while keyfleetd runs: a read-write one
# may take itself for the last connection and remove keyfleetd's WAL when it closes.
sqlite3 -readonly -separator '|' "$DB" "SELECT d.name, k.key_id, k.status, k.reason, k.msn, k.steel_id
  FROM mfg_key k JOIN domain d ON d.id = k.domain_id ORDER BY d.name, k.key_id" > "$WORK/rows" ||
  fail "cannot read the archive"
python3 - "$WORK" "$USPS_FAULTS $EARTH_FAULTS" <<'PY' || fail "line checks"
import json, sys
work, faults = sys.argv[1], sys.argv[2].split()
E = {"KF_ERR_MFG_LOST": -868, "KF_ERR_MFG_TOKENS": -867, "KF_ERR_MFG_WRITE": -877,
     "KF_ERR_MFG_STEEL_ID": -864}
fault = {}  # (device, domain kind) -> fault
for f in faults:
    kind, rest = f.split("@")
    dev, _, which = rest.partition(":")
    fault[(int(dev), which or "vendor")] = kind
lines = {}   # msn -> [(domain, key, status, reason)]
summary = {}
for postal in ("USPS", "EARTH"):
    for l in open(f"{work}/line-{postal}.out"):
        w = l.split()
        if w[0] == "line:":
            summary[postal] = l
            continue
        lines.setdefault(w[0], []).append((w[1], None if w[2] == "-" else int(w[2]), w[3], w[4]))
rows = {}
for l in open(f"{work}/rows"):
    d, k, st, reason, msn, steel = l.rstrip("\n").split("|")
    rows[(d, int(k))] = (int(st), int(reason), msn, steel)
holders = {}
slots = {}
for l in open(f"{work}/slots"):
    j = json.loads(l)
    slots[j["msn"]] = {k["domain"]: k["key_id"] for k in j["keys"]}
    for k in j["keys"]:
        holders.setdefault((k["domain"], k["key_id"]), []).append(j["msn"])
def err(msg):
    sys.exit("FAIL: " + msg)
# no key in two devices
for key, who in holders.items():
    if len(who) != 1:
        err(f"key {key} is held by {who}")
# every Installed row is held by exactly its device; every held key has its row
installed_rows = 0
for key, (st, reason, msn, steel) in rows.items():
    if st == 2:
        installed_rows += 1
        if holders.get(key) != [msn]:
            err(f"Installed row {key} of {msn} is held by {holders.get(key)}")
for key, who in holders.items():
    r = rows.get(key)
    if not r or r[2] != who[0] or r[0] not in (2, 3):
        err(f"device {who[0]} holds {key} but the archive says {r}")
checked = 0
for n in range(1, 1001):
    msn = f"SN{n:08d}"
    postal = "USPS" if n <= 600 else "EARTH"
    dom = {"vendor": "VE", "postal": postal}
    got = lines.get(msn, [])
    for which in ("vendor", "postal"):
        d = dom[which]
        mine = [x for x in got if x[0] == d]
        kind = fault.get((n, which))
        if kind is None:
            if [x[2] for x in mine] != ["Installed"]:
                err(f"{msn} {d}: {mine}")
            k = mine[0][1]
            if rows[(d, k)][:3] != (2, 0, msn) or slots[msn].get(d) != k:
                err(f"{msn} {d} key {k}: row {rows[(d, k)]}, slots {slots[msn]}")
            continue
        checked += 1
        st = [x[2] for x in mine]
        if kind == "drop-mi4":
            assert st == ["Lost", "Installed"], (msn, mine)
            lost = mine[0][1]
            if rows[(d, lost)][:2] != (3, E["KF_ERR_MFG_LOST"]):
                err(f"dropped key {d}/{lost}: {rows[(d, lost)]}")
            if holders.get((d, lost)):
                err(f"dropped key {d}/{lost} is in a device")
        elif kind in ("bad-token", "bad-token-unchecked"):
            assert st == ["Bad"] and mine[0][3] == "KF_ERR_MFG_TOKENS", (msn, mine)
            k = mine[0][1]
            if rows[(d, k)][:3] != (3, E["KF_ERR_MFG_TOKENS"], msn):
                err(f"{kind} {msn}: row {rows[(d, k)]}")
        elif kind == "write-error":
            assert st == ["Bad"] and mine[0][3] == "KF_ERR_MFG_WRITE", (msn, mine)
            k = mine[0][1]
            if rows[(d, k)][:2] != (3, E["KF_ERR_MFG_WRITE"]) or d in slots.get(msn, {}):
                err(f"write-error {msn}: row {rows[(d, k)]}, slots {slots.get(msn)}")
        elif kind == "replay-mi4":
            prev = f"SN{n - 1:08d}"
            assert st == ["SteelRefused", "ServerRefused", "Installed"], (msn, mine)
            assert mine[0][3] == "KF_ERR_MFG_KEY_ID" and mine[1][3] == "KF_ERR_MFG_STATUS", mine
            k = mine[0][1]
            if rows[(d, k)][:3] != (2, 0, prev) or holders[(d, k)] != [prev]:
                err(f"replayed key {d}/{k}: {rows[(d, k)]} {holders.get((d, k))}")
        elif kind == "wrong-steel":
            assert st == ["SteelRefused", "Bad", "Installed"], (msn, mine)
            assert mine[0][3] == mine[1][3] == "KF_ERR_MFG_STEEL_ID", mine
            k = mine[0][1]
            if rows[(d, k)] [:2] != (3, E["KF_ERR_MFG_STEEL_ID"]) or rows[(d, k)][3] != "S00000002":
                err(f"wrong-steel key {d}/{k}: {rows[(d, k)]}")
        elif kind == "second-install":
            prev = f"SN{n - 1:08d}"
            assert st == ["Installed", "SteelRefused", "ServerRefused", "DeviceRefused",
                          "ServerRefused"], (msn, mine)
            assert [x[3] for x in mine[1:]] == ["KF_ERR_MFG_KEY_ID", "KF_ERR_MFG_STATUS",
                                                "KF_ERR_METER_INSTALLED", "KF_ERR_MFG_STATUS"], mine
            k = mine[1][1]
            if rows[(d, k)][:3] != (2, 0, prev) or holders[(d, k)] != [prev]:
                err(f"second-install key {d}/{k}: {rows[(d, k)]}")
            if slots[msn][d] != mine[0][1]:
                err(f"{msn} holds {slots[msn][d]}, not its own {d} key {mine[0][1]}")
        else:
            err("unknown fault " + kind)
kinds = {v for v in fault.values()}
assert len(kinds) == 7 and checked == len(fault), (kinds, checked)
bad_devices = {n for (n, w), k in fault.items() if k in ("bad-token", "bad-token-unchecked", "write-error")}
want_complete = {"USPS": 600 - len([n for n in bad_devices if n <= 600]),
                 "EARTH": 400 - len([n for n in bad_devices if n > 600])}
for postal, s in summary.items():
    if f"({want_complete[postal]} with both keys Installed" not in s or "anomalies 0," not in s:
        err(f"summary {postal}: {s}")
# what each fault's key must show through the status commands
expect = {"drop-mi4": ("Lost", "Bad", "KF_ERR_MFG_LOST"),
          "bad-token": ("Bad", "Bad", "KF_ERR_MFG_TOKENS"),
          "bad-token-unchecked": ("Bad", "Bad", "KF_ERR_MFG_TOKENS"),
          "write-error": ("Bad", "Bad", "KF_ERR_MFG_WRITE"),
          "wrong-steel": ("SteelRefused", "Bad", "KF_ERR_MFG_STEEL_ID"),
          "replay-mi4": ("SteelRefused", "Installed", "-"),
          "second-install": ("SteelRefused", "Installed", "-")}
with open(f"{work}/fault_checks", "w") as out:
    for (n, which), kind in sorted(fault.items()):
        msn = f"SN{n:08d}"
        d = "VE" if which == "vendor" else ("USPS" if n <= 600 else "EARTH")
        line_status, status, reason = expect[kind]
        k = next(x[1] for x in lines[msn] if x[0] == d and x[2] == line_status)
        out.write(f"{kind} {msn} {d} {k} {status} {reason}\n")
print(f"devices 1000, faults {len(fault)} of {len(kinds)} kinds, Installed rows {installed_rows},"
      f" held keys {len(holders)}")
open(f"{work}/bad_devices", "w").write(" ".join(f"SN{n:08d}" for n in sorted(bad_devices)))
PY
ok

# The faults' outcomes through both status commands.
key_of() { awk -v m="$1" -v d="$2" -v s="$3" '$1 == m && $2 == d && $4 == s { print $3; exit }' \
  "$WORK/line-USPS.out" "$WORK/line-EARTH.out"; }
status_is() { # domain key-id status reason
  expect_ok "$INSTALL" status --domain "$1" --key-id "$2" "${AS_STEEL[@]}"
  grep -q "^status  *$3\$" "$WORK/out" && grep -q "^reason  *$4\$" "$WORK/out" ||
    fail "keyfleet-install status $1/$2: $(cat "$WORK/out")"
  kf --json mfg status --domain "$1" --key-id "$2" > "$WORK/out" || fail "keyfleet mfg status $1/$2"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(not (d["status"]==sys.argv[2] and d["reason"]==sys.argv[3]))' \
    "$WORK/out" "$3" "$4" || fail "keyfleet mfg status $1/$2: $(cat "$WORK/out")"; ok
}
while read -r kind msn dom key want_status want_reason; do
  status_is "$dom" "$key" "$want_status" "$want_reason" < /dev/null
done < "$WORK/fault_checks"
[ "$(wc -l < "$WORK/fault_checks")" -eq 21 ] || fail "fault checks"; ok
status_is EARTH "$(key_of SN00000601 EARTH Installed)" Installed -
expect_ok "$INSTALL" status --domain VE --msn SN00000059 "${AS_STEEL[@]}"
grep -q "^msn  *SN00000059$" "$WORK/out" && grep -q "^steel  *S00000001$" "$WORK/out" || fail "status by MSN"; ok
expect_refusal "KF_ERR_MFG_UNKNOWN" "$INSTALL" status --domain VE --key-id 999999 "${AS_STEEL[@]}"
expect_exit 2 "$INSTALL" status --domain VE --key-id 1 --msn SN00000001 "${AS_STEEL[@]}"

# ---- registration ----
mkdir -p "$WORK/clone"
cp "$WORK/earth/SN00000700.state" "$WORK/clone/"   # the device as it left the line
cp "$WORK/earth/SN00000700.state" "$WORK/fresh.state"
TOMORROW=$(date -u -d tomorrow +%F)
expect_exit 4 "$INSTALL" register "${S1[@]}" --devices "$WORK/usps" --country US --indicia-prefix US \
  --date "$TOMORROW" "${AS_REG[@]}"
cp "$WORK/out" "$WORK/reg-usps.out"
expect_exit 4 "$INSTALL" register "${S1[@]}" --devices "$WORK/earth" --country US --indicia-prefix EA \
  --date "$TOMORROW" --earth-domain EARTH --country-domain USPS "${AS_REG[@]}"
cp "$WORK/out" "$WORK/reg-earth.out"
sqlite3 -readonly -separator '|' "$DB" "SELECT d.name, k.key_id, k.status, k.msn, k.country, k.moved_key_id
  FROM mfg_key k JOIN domain d ON d.id = k.domain_id ORDER BY d.name, k.key_id" > "$WORK/rows2" ||
  fail "cannot read the archive"
python3 - "$WORK" <<'PY' || fail "registration checks"
import sys
work = sys.argv[1]
bad = set(open(f"{work}/bad_devices").read().split())
active = {}
for f in ("reg-usps", "reg-earth"):
    for l in open(f"{work}/{f}.out"):
        w = l.split()
        if w[0] == "register:":
            continue
        if w[3] == "Active":
            active.setdefault(w[0], {})[w[1]] = int(w[2])
rows = {}
for l in open(f"{work}/rows2"):
    w = l.rstrip("\n").split("|")
    rows[(w[0], int(w[1]))] = w[2:]
for n in range(1, 1001):
    msn = f"SN{n:08d}"
    if msn in bad:
        continue
    a = active.get(msn, {})
    if set(a) != {"VE", "USPS"}:
        raise SystemExit(f"FAIL: {msn} registered as {a}")
    for d, k in a.items():
        st, m, country = rows[(d, k)][:3]
        if (st, m, country) != ("4", msn, "US"):
            raise SystemExit(f"FAIL: {msn} {d}/{k} row {rows[(d, k)]}")
# every EARTH key that was Installed is now Transferred, to the USPS key its device got
moved = 0
for (d, k), r in rows.items():
    if d != "EARTH" or r[0] in ("3",):
        continue
    msn = r[1]
    if msn in bad and r[0] != "6":
        continue
    if r[0] != "6" or rows[("USPS", int(r[3]))][1] != msn or active[msn]["USPS"] != int(r[3]):
        raise SystemExit(f"FAIL: EARTH {k} of {msn}: {r}")
    moved += 1
print(f"registered: {sum(len(v) for v in active.values())} keys Active, {moved} EARTH records Transferred")
PY
ok
expect_ok kf mfg status --domain EARTH --msn SN00000601
grep -q "^status  *Transferred$" "$WORK/out" && grep -q "^moved_to  *USPS/" "$WORK/out" || fail "earth status: $(cat "$WORK/out")"; ok
expect_ok "$INSTALL" status --domain USPS --msn SN00000601 "${AS_REG[@]}"
grep -q "^status  *Active$" "$WORK/out" && grep -q "^country  *US$" "$WORK/out" && grep -q "^indicia  *EA00000601$" "$WORK/out" || fail "USPS status of an earth device: $(cat "$WORK/out")"; ok
# An earth device registered to US never moves to GB: the device refuses ...
mkdir -p "$WORK/again"
cp "$WORK/earth/SN00000700.state" "$WORK/again/"
expect_exit 4 "$INSTALL" register "${S1[@]}" --devices "$WORK/again" --country GB --indicia-prefix GB \
  --date "$TOMORROW" --earth-domain EARTH --country-domain UKRM "${AS_REG[@]}"
grep -q "SN00000700 - - DeviceRefused KF_ERR_METER_COUNTRY" "$WORK/out" || fail "device accepted GB: $(cat "$WORK/out")"; ok
# ... and so does keyfleetd for a clone made before its registration.
expect_exit 4 "$INSTALL" register "${S1[@]}" --devices "$WORK/clone" --country GB --indicia-prefix GB \
  --date "$TOMORROW" --earth-domain EARTH --country-domain UKRM "${AS_REG[@]}"
grep -Eq "SN00000700 - - ServerRefused KF_ERR_MFG_(STATUS|COUNTRY)" "$WORK/out" || fail "keyfleetd accepted GB: $(cat "$WORK/out")"; ok
expect_refusal "KF_ERR_MFG_UNKNOWN" kf mfg status --domain UKRM --msn SN00000700
# A registered device prints indicia; its piece count goes on.
PDATE=$(date -u -d tomorrow +%Y%m%d)
expect_ok "$DEVICE" meter print --state "$WORK/usps/SN00000001.state" --vendor VE --postal USPS \
  --date "$PDATE" --value 73 --postal-code 10001 --count 3
[ "$(grep -c "^KF1 SN00000001 $PDATE 73 [123] 10001 " "$WORK/out")" -eq 3 ] || fail "printed: $(cat "$WORK/out")"; ok
expect_ok "$DEVICE" meter show --state "$WORK/usps/SN00000001.state" --json
grep -q '"piece_count":3' "$WORK/out" && grep -q '"country":"US"' "$WORK/out" || fail "meter show after print"; ok
expect_refusal "KF_ERR_METER_NOT_REGISTERED" "$DEVICE" meter print --state "$WORK/fresh.state" \
  --vendor VE --postal EARTH --date "$PDATE" --value 1 --postal-code 1
# Retirement.
K1=$(key_of SN00000001 VE Installed)
expect_ok kf mfg retire --domain VE --key-id "$K1"
expect_contains "Obsolete"
expect_refusal "KF_ERR_MFG_STATUS" kf mfg retire --domain VE --key-id "$(key_of SN00000020 VE Bad)"

# ---- an archive record modified in the store is refused at its next use ----
K2=$(key_of SN00000002 VE Installed)
stop_daemon
sqlite3 "$DB" "SELECT writefile('$WORK/rec.bin', record) FROM mfg_key
  WHERE key_id = $K2 AND domain_id = (SELECT id FROM domain WHERE name = 'VE')" > /dev/null
python3 -c 'import sys; b=bytearray(open(sys.argv[1],"rb").read()); b[len(b)//2]^=1; open(sys.argv[1],"wb").write(b)' "$WORK/rec.bin"
sqlite3 "$DB" "UPDATE mfg_key SET record = readfile('$WORK/rec.bin')
  WHERE key_id = $K2 AND domain_id = (SELECT id FROM domain WHERE name = 'VE')"
start_daemon --dev --kmip-listen "127.0.0.1:$KPORT" --kmip-identities "$WORK/identities"
wait_tcp_port "$KPORT"
expect_refusal "KF_ERR_MFG_ARCHIVE" "$INSTALL" status --domain VE --key-id "$K2" "${AS_STEEL[@]}"
expect_refusal "KF_ERR_MFG_ARCHIVE" kf mfg status --domain VE --key-id "$K2"
expect_ok kf mfg status --domain VE --key-id "$(key_of SN00000003 VE Installed)"

# ---- the audit trail, and no device key anywhere on the server ----
expect_ok kf audit verify
expect_contains "Audit trail intact"
scan() {
  python3 - "$DATA" "$WORK/daemon.log" "$WORK"/usps/*.state "$WORK"/earth/*.state <<'PY'
import os, struct, sys
data_dir, log, states = sys.argv[1], sys.argv[2], sys.argv[3:]
def keys_of(blob):
    # KeyfleetMeterState TTLV: every 32-byte Byte String inside a KeyfleetMeterSlot is a key
    out, at = [], 0
    def walk(b, in_slot):
        i = 0
        while i + 8 <= len(b):
            tag = int.from_bytes(b[i:i + 3], "big"); typ = b[i + 3]
            n = struct.unpack(">I", b[i + 4:i + 8])[0]
            v = b[i + 8:i + 8 + n]
            if typ == 1:
                walk(v, in_slot or tag == 0x54021E)
            elif typ == 8 and n == 32 and in_slot:
                out.append(bytes(v))
            i += 8 + ((n + 7) // 8) * 8
    walk(blob, False)
    return out
keys = set()
for s in states:
    keys.update(keys_of(open(s, "rb").read()))
if len(keys) < 1900:
    sys.exit(f"only {len(keys)} device keys found in the state files")
# the scanner works: it finds the keys where they are
probe = open(states[0], "rb").read()
assert any(k in probe for k in keys)
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
        if k in blob or k[:16] in blob or k[16:] in blob:
            sys.exit(f"device key bytes found in {path}")
        if k.hex().encode() in low:
            sys.exit(f"device key hex found in {path}")
print(f"scanned {len(files)} files, {scanned} bytes, {len(keys)} device keys: none found")
PY
}
scan || fail "key scan"; ok
stop_daemon
scan || fail "key scan after stop"; ok
echo "test_mfg_line: $(( $(date +%s) - T_START )) s"
finish
