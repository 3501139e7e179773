#!/bin/bash
# memory.sh - the broker gives memory back once requests stop: after a
# burst (50,000 messages of 1 KiB posted and received), SQLite's page
# cache and the heap pages malloc kept are released within a few quiet
# seconds (broker_on_trim_timer). Checked on RssAnon, the broker's own
# memory (shared libraries are RssFile). Nothing else is timed; under a
# sanitizer, whose allocator keeps memory its own way, the test skips.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

# (Captured first: with pipefail, ldd killed by grep -q's early exit
# would read as "not a sanitizer build".)
libs=$(ldd "$MBOXD" 2>/dev/null || true)
if [[ $libs == *libasan* || $libs == *libubsan* ]]; then
	note "sanitizer build: memory figures mean nothing here"
	exit 77
fi

rss_anon()
{
	sed -n 's/^RssAnon:[[:space:]]*\([0-9]*\) kB$/\1/p' "/proc/$BROKER_PID/status"
}

start_broker
idle=$(rss_anon)
note "RssAnon idle: $idle KiB"

line=$(head -c 1023 /dev/zero | tr '\0' x)
awk -v l="$line" 'BEGIN { for (i = 0; i < 50000; i++) print l }' |
	mbctl post burst --lines >/dev/null ||
	fail "posting the burst failed"
busy=$(rss_anon)
mbctl recv burst -n 50000 >/dev/null || fail "receiving the burst failed"
assert_eq 0 "$(ls_num burst ready)" "messages left in burst"
note "RssAnon after the burst: $busy KiB"
# The page cache alone (2 MiB) must have shown up, or this proves nothing.
[ "$busy" -gt $((idle + 1024)) ] ||
	fail "the burst did not grow the broker ($idle -> $busy KiB)"

# Quiet now: the trim timer runs every second; allow ten.
for ((i = 0; i < 100; i++)); do
	now=$(rss_anon)
	[ "$now" -gt $((idle + 512)) ] || break
	sleep 0.1
done
note "RssAnon when quiet: $now KiB"
[ "$now" -le $((idle + 512)) ] ||
	fail "memory not given back: $idle KiB idle, $busy KiB busy, $now KiB after 10 s quiet"
stop_broker
