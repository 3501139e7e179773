#!/bin/bash
# reader-kill.sh - a reader killed with SIGKILL while it holds leases: its
# messages go to the next reader at once, first and in their original order,
# with the delivery count raised (SPEC 3.3, reader death).
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

HOLDER=$(driver lease-holder-driver)

start_broker

# A long lease: only the reader's death may bring the messages back.
mbctl create work --lease 600
printf 'job-%d\n' 1 2 3 4 5 | mbctl post work --lines >"$T_DIR/ids"
assert_eq 5 "$(wc -l <"$T_DIR/ids")" "ids printed by post --lines"

start_holder 3 "$HOLDER" "$SOCK" work 3
alive "$holder" || fail "lease holder exited early: $(cat "$T_DIR/holder.err")"
cmp -s <(head -n 3 "$T_DIR/ids") "$T_DIR/held" ||
	fail "holder took ids $(words <"$T_DIR/held"), expected the first three"

# While the holder lives, its messages are not offered to anyone else.
mbctl recv work -n 5 --wait 0.2 --no-ack >"$T_DIR/others" ||
	fail "recv of the remaining messages failed"
assert_eq "job-4 job-5" "$(words <"$T_DIR/others")" \
	"messages offered while the holder has the first three"

kill9_pid "$holder"

# The next reader gets the held ones first, in order, delivered twice;
# job-4 and job-5 were delivered once and given back by the exiting recv
# above, so they are on their second delivery too.
mbctl recv work -n 5 --wait 5 --json >"$T_DIR/next"
check_json_lines "$T_DIR/next"
assert_eq 5 "$(wc -l <"$T_DIR/next")" "messages the next reader got"
i=0
while read -r line; do
	i=$((i + 1))
	assert_eq "$(sed -n "${i}p" "$T_DIR/ids")" "$(json_num id <<<"$line")" \
		"id of message $i to the next reader"
	assert_eq "job-$i" "$(json_str data <<<"$line")" "payload of message $i"
	assert_eq 2 "$(json_num deliveries <<<"$line")" "deliveries of message $i"
done <"$T_DIR/next"

# Those were acked: nothing comes back.
expect_rc 3 "recv after the next reader acked" mbctl recv work --wait 0.2

# Three readers in a row die holding the same message: each delivery
# raised the count, none was lost.
printf 'again\n' | mbctl post work --lines >/dev/null
for _ in 1 2 3; do
	start_holder 1 "$HOLDER" "$SOCK" work 1
	kill9_pid "$holder"
done
mbctl recv work --wait 5 --json >"$T_DIR/last"
assert_eq again "$(json_str data <"$T_DIR/last")" "payload after three reader deaths"
assert_eq 4 "$(json_num deliveries <"$T_DIR/last")" "deliveries after three reader deaths"

stop_broker
