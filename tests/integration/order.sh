#!/bin/bash
# order.sh - 200 messages posted with --lines come back in order: each id on
# its own line, ids strictly increasing, recv -n 200 returns the payloads in
# the order they were posted.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

N=200

start_broker

for ((i = 1; i <= N; i++)); do
	printf 'message %03d\n' "$i"
done >"$T_DIR/sent"

mbctl post order --lines <"$T_DIR/sent" >"$T_DIR/ids"
assert_eq $N "$(wc -l <"$T_DIR/ids")" "ids printed by post --lines"
prev=0
while read -r id; do
	[[ $id =~ ^[0-9]+$ ]] || fail "post --lines printed '$id', expected an id"
	[ "$id" -gt "$prev" ] || fail "id $id does not follow $prev"
	prev=$id
done <"$T_DIR/ids"

mbctl recv order -n $N --wait 5 >"$T_DIR/got"
if ! cmp -s "$T_DIR/sent" "$T_DIR/got"; then
	diff "$T_DIR/sent" "$T_DIR/got" | head -n 20 >&2 || true
	fail "recv -n $N did not return the $N messages in order"
fi

# The ids recv reports are the ones post printed, in the same order.
printf 'x%d\n' 1 2 3 | mbctl post order --lines >"$T_DIR/ids3"
mbctl recv order -n 3 --json >"$T_DIR/got3"
check_json_lines "$T_DIR/got3"
while read -r line; do json_num id <<<"$line"; done <"$T_DIR/got3" >"$T_DIR/rids3"
cmp -s "$T_DIR/ids3" "$T_DIR/rids3" ||
	fail "recv --json ids ($(words <"$T_DIR/rids3")) differ from posted ($(words <"$T_DIR/ids3"))"

# Nothing is left.
expect_rc 3 "recv on the drained mailbox" mbctl recv order --wait 0.1

stop_broker
