#!/bin/bash
# leaseroom.sh - under --max-store-size a lease takes a little room (a row
# of the lease table, schema version 4). A store filled to its cap, and a
# subscriber holding every lease the room allows: a subscriber of another
# mailbox gets nothing for now, and once the holder dies and its leases
# go back (room made without any event on the other mailbox), it is
# served within moments, every message once, in order. The broker logs
# the lack of room once, and posts fail with a clear error meanwhile.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

SUB=$(driver subscriber-driver)

start_broker --max-store-size 1M
mbctl create a
mbctl create b
seq 1 50 | sed 's/^/b-/' | mbctl post b --lines >"$T_DIR/b.ids"
assert_eq 50 "$(wc -l <"$T_DIR/b.ids")" "posts to b"

# Fill the store with small messages for a: the cap refuses a post.
rc=0
for ((i = 0; i < 40; i++)); do
	seq 1 2000 | mbctl post a --lines >/dev/null 2>"$T_DIR/fill.err" ||
		{ rc=$?; break; }
done
[ "$rc" -ne 0 ] || fail "the 1 MiB cap never refused a post"
grep -q 'disk or database full' "$T_DIR/fill.err" ||
	fail "a refused post did not say the store is full: $(cat "$T_DIR/fill.err")"
queued=$(ls_num a ready)
note "a holds $queued messages at the cap"

# Holders take what the room allows, then hold it: one after the other,
# each taking what is left, until one gets nothing (the broker's count of
# leases stops growing).
holders=()
held=0
for ((h = 1; h <= 10; h++)); do
	start_sub "holder$h" sub a --window 1024 --no-ack-after 0 --timeout-s 60
	holders+=("$SUB_PID")
	wait_subscribed "holder$h"
	sleep 0.5
	before=$held
	held=$(ls_num a leased)
	[ "$held" -gt "$before" ] || break
done
[ "$held" -eq "$before" ] || fail "10 holders of 1024 took $held of $queued messages"
[ "$held" -gt 0 ] && [ "$held" -lt "$queued" ] ||
	fail "the holders hold $held of $queued messages: the room should bound it"
note "$h holders hold $held of $queued messages; the room ran out"

# A subscriber of b finds no room: nothing for now.
start_sub sb sub b --window 16 --count 50 --log "$T_DIR/sb.log" --timeout-s 30
sb=$SUB_PID
wait_subscribed sb
wait_grep "$T_DIR/mboxd.log" 'messages of b: .*no room left for leases' 50 ||
	fail "the broker did not log that b's leases found no room" \
		"(b's subscriber got $(wc -l <"$T_DIR/sb.log") messages)"
sleep 0.5
[ ! -s "$T_DIR/sb.log" ] ||
	fail "b's subscriber was served while the room was used up"

# The holders die: their leases go back and free their room. Nothing
# happens on b, yet its subscriber must be served.
t0=$(now_ms)
for pid in "${holders[@]}"; do
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null || true
	untrack_pid "$pid"
done
finish "$sb" sb
note "b's subscriber served $(($(now_ms) - t0)) ms after the holders died"
paste -d ' ' "$T_DIR/b.ids" <(seq 1 50 | sed 's/^/b-/') | sed 's/$/ 1/' \
	>"$T_DIR/b.expected"
cmp -s "$T_DIR/b.expected" "$T_DIR/sb.log" || {
	diff "$T_DIR/b.expected" "$T_DIR/sb.log" | head -n 10 >&2
	fail "b's subscriber did not get its 50 messages in order, once each"
}
# Logged when it starts, not at every try (every 100 ms).
n=$(grep -c 'messages of b: .*no room left for leases' "$T_DIR/mboxd.log" || true)
[ "$n" -le 2 ] || fail "the lack of room for b was logged $n times"

# And a's messages are all still there, none lost to the cap.
assert_eq "$queued" "$(ls_num a ready)" "a's messages after the holder's death"
stop_broker
