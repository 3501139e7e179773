#!/bin/bash
# walquiet.sh - the WAL is given back when the broker is quiet. Under load
# it grows to thousands of pages between checkpoints (4000, 16 MiB: a
# longer WAL copies each queue page fewer times, doc/performance.md); once
# requests stop, the quiet tick of the trim timer copies it into the
# database and cuts the file to nothing (store_wal_empty). What was posted
# is then in the database file itself: after kill -9 and a restart every
# message is there, byte for byte.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

wal_bytes()
{
	stat -c %s "$DB-wal" 2>/dev/null || echo 0
}

start_broker
# 3000 lines of 1 KiB: about 1000 WAL pages, under one checkpoint.
awk 'BEGIN { for (i = 0; i < 3000; i++) printf "%04d%01020d\n", i, i }' \
	>"$T_DIR/lines"
mbctl post burst --lines <"$T_DIR/lines" >/dev/null || fail "posting failed"
busy=$(wal_bytes)
note "WAL after the burst: $busy bytes"
# The trim timer needs a quiet second: this is well before it.
[ "$busy" -gt 1048576 ] ||
	fail "the WAL did not grow under the burst ($busy bytes)"

# Quiet now: the trim timer ticks every second; allow ten.
for ((i = 0; i < 100; i++)); do
	[ "$(wal_bytes)" -eq 0 ] && break
	sleep 0.1
done
assert_eq 0 "$(wal_bytes)" "WAL bytes after 10 s quiet"
note "database $(stat -c %s "$DB") bytes"

# Nothing lives in the WAL any more: kill -9, restart, all there.
kill9_broker
start_broker
assert_eq 3000 "$(ls_num burst ready)" "messages ready after the restart"
mbctl recv burst -n 3000 >"$T_DIR/got" || fail "receiving failed"
cmp -s "$T_DIR/lines" "$T_DIR/got" ||
	fail "the messages came back changed: $(diff "$T_DIR/lines" "$T_DIR/got" | head -n 4)"
stop_broker
