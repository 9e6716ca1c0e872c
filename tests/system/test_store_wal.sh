#!/usr/bin/env bash
# A reader from another process (the sqlite3 shell, a backup tool) must not
# take the running daemon's database as unused: it would checkpoint and delete
# the WAL, and every later commit would go to an unlinked file and be lost at
# the next restart. Regression test for create_db_file() dropping the
# writer's POSIX locks when the kms opened its reader connections.
source "$(dirname "$0")/lib.sh"
command -v sqlite3 >/dev/null || fail "sqlite3 shell missing (scripts/install-deps.sh installs it)"
start_daemon --dev
"$KEYFLEET" --socket "$DATA/keyfleetd.sock" domain create WALONE >/dev/null || fail "domain create"
[ "$(sqlite3 "$DATA/keyfleet.db" "SELECT count(*) FROM domain WHERE name = 'WALONE'")" = 1 ] \
  || fail "outside reader does not see the committed domain"; ok
[ -f "$DATA/keyfleet.db-wal" ] || fail "the outside reader deleted the daemon's WAL"; ok
"$KEYFLEET" --socket "$DATA/keyfleetd.sock" domain create WALTWO >/dev/null || fail "domain create 2"
grep -q "fdatasync.*failed" "$WORK/daemon.log" && fail "daemon lost its WAL: $(grep fdatasync "$WORK/daemon.log" | head -1)"
ok
kill9_daemon
start_daemon --dev
for d in WALONE WALTWO; do
  "$KEYFLEET" --socket "$DATA/keyfleetd.sock" domain list | grep -q "$d" || fail "$d lost after kill -9"
  ok
done
stop_daemon
echo "test_store_wal: $CHECKS checks passed"
