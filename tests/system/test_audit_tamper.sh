#!/usr/bin/env bash
# Tampering with the audit trail in the real database is detected and located
# by 'keyfleet audit verify': modify, delete, swap, truncate, and a forged head.
source "$(dirname "$0")/lib.sh"
command -v sqlite3 > /dev/null || fail "sqlite3 CLI missing (apt-get install sqlite3)"
start_daemon --dev --audit-checkpoint 8
expect_ok kf domain create T
for _ in $(seq 1 30); do kf key create --domain T > /dev/null || fail create; done
expect_ok kf audit verify
stop_daemon
cp "$DATA/keyfleet.db" "$WORK/pristine.db"
DB="$DATA/keyfleet.db"

# tamper SQL EXPECTED_PATTERN
tamper() {
  cp "$WORK/pristine.db" "$DB"; rm -f "$DB-wal" "$DB-shm"
  sqlite3 "$DB" "$1" || fail "sqlite3: $1"
  start_daemon --dev
  expect_refusal "$2" kf audit verify
  stop_daemon
}
tamper "UPDATE audit_record SET detail='nothing happened' WHERE seq=12" "first bad record 12"
tamper "UPDATE audit_record SET actor='someone-else' WHERE seq=5" "first bad record 5"
tamper "DELETE FROM audit_record WHERE seq=20" "first bad record 20"
tamper "UPDATE audit_record SET seq=-1 WHERE seq=15; UPDATE audit_record SET seq=15 WHERE seq=16; UPDATE audit_record SET seq=16 WHERE seq=-1" "first bad record 15"
tamper "DELETE FROM audit_record WHERE seq > 25" "first bad record 26"
# Truncation with the later checkpoints removed too: the checkpoint at 32 is gone.
tamper "DELETE FROM audit_record WHERE seq > 25; DELETE FROM audit_checkpoint WHERE seq > 25" "first bad record 26"
# ... and with the head forged to match: only the head's MAC can tell, and does.
tamper "DELETE FROM audit_record WHERE seq > 25; DELETE FROM audit_checkpoint WHERE seq > 25; UPDATE audit_head SET seq=25, time_ns=(SELECT time_ns FROM audit_record WHERE seq=25), hash=(SELECT hash FROM audit_record WHERE seq=25)" "KF_ERR_AUDIT_MAC"
tamper "UPDATE audit_record SET time_ns = time_ns - 1000000000000 WHERE seq=18" "first bad record 18"
# Untouched, it still verifies.
cp "$WORK/pristine.db" "$DB"; rm -f "$DB-wal" "$DB-shm"
start_daemon --dev; expect_ok kf audit verify; stop_daemon
finish
