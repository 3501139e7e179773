#!/bin/bash
# restart.sh - the store across restarts (SPEC 4): after a clean restart
# (SIGTERM, exit 0) and after a crash (SIGKILL), messages that were leased
# are ready again, in their place, with their delivery counts kept; acked
# messages never come back; mailboxes and their messages persist.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

HOLDER=$(driver lease-holder-driver)

# deliveries_of FILE: the deliveries field of each JSON line, space-separated.
deliveries_of()
{
	local line
	while read -r line; do json_num deliveries <<<"$line"; done <"$1" |
		words
}

data_of()
{
	local line
	while read -r line; do json_str data <<<"$line"; done <"$1" |
		words
}

start_broker
mbctl create r --lease 600
printf 'm%d\n' 1 2 3 4 | mbctl post r --lines >"$T_DIR/ids"
# m1 is acked: it must never come back.
assert_eq m1 "$(mbctl recv r)" "first message"
# m2 and m3 are leased (long lease) when the broker stops.
start_holder 2 "$HOLDER" "$SOCK" r 2
assert_eq "$(sed -n 2,3p "$T_DIR/ids")" "$(cat "$T_DIR/held")" "ids held"

stop_broker
kill9_pid "$holder"
start_broker

mbctl peek r -n 10 --json >"$T_DIR/peek1"
check_json_lines "$T_DIR/peek1"
assert_eq "m2 m3 m4" "$(data_of "$T_DIR/peek1")" "messages after a clean restart"
assert_eq "1 1 0" "$(deliveries_of "$T_DIR/peek1")" "deliveries after a clean restart (peek)"

# The void leases make them ready at once (the lease was 600 s).
mbctl recv r -n 3 --wait 5 --no-ack --json >"$T_DIR/recv1"
assert_eq "m2 m3 m4" "$(data_of "$T_DIR/recv1")" "recv after a clean restart"
assert_eq "2 2 1" "$(deliveries_of "$T_DIR/recv1")" "deliveries after a clean restart (recv)"

# Now the same after a crash: hold m2 and m3 again, kill -9 the broker.
start_holder 2 "$HOLDER" "$SOCK" r 2
kill9_broker
kill9_pid "$holder"
start_broker

mbctl peek r -n 10 --json >"$T_DIR/peek2"
check_json_lines "$T_DIR/peek2"
assert_eq "m2 m3 m4" "$(data_of "$T_DIR/peek2")" "messages after a crash"
assert_eq "3 3 1" "$(deliveries_of "$T_DIR/peek2")" "deliveries after a crash (peek)"
mbctl recv r -n 3 --wait 5 --json >"$T_DIR/recv2"
assert_eq "m2 m3 m4" "$(data_of "$T_DIR/recv2")" "recv after a crash"
assert_eq "4 4 2" "$(deliveries_of "$T_DIR/recv2")" "deliveries after a crash (recv)"

# Those were acked: after one more restart the mailbox is empty, but exists.
stop_broker
start_broker
expect_rc 3 "recv on the drained mailbox after a restart" mbctl recv r --wait 0.1
mbctl ls --json >"$T_DIR/ls"
grep -q '"r"' "$T_DIR/ls" || fail "mailbox r is gone after a restart: $(cat "$T_DIR/ls")"

# A lease voided by a crash is a give-back: with max_deliveries reached the
# message goes dead, as when its reader dies (SPEC 3.4), instead of being
# delivered again after every restart.
mbctl create md --lease 600 --max-deliveries 2
mbctl post md poison >/dev/null
mbctl post md fine >/dev/null
start_holder 1 "$HOLDER" "$SOCK" md 1
kill9_broker
kill9_pid "$holder"
start_broker
assert_eq "2 0" "$(ls_num md ready) $(ls_num md dead)" "md after one crash (ready, dead)"
start_holder 2 "$HOLDER" "$SOCK" md 2
kill9_broker
kill9_pid "$holder"
start_broker
assert_eq "1 1" "$(ls_num md ready) $(ls_num md dead)" "md after two crashes (ready, dead)"
mbctl peek md --dead --json >"$T_DIR/peekdead"
assert_eq poison "$(data_of "$T_DIR/peekdead")" "the dead message"
grep -q '"max-deliveries"' "$T_DIR/peekdead" ||
	fail "dead for another reason: $(cat "$T_DIR/peekdead")"
assert_eq fine "$(mbctl recv md)" "the other message, delivered once before"

# New ids keep growing across restarts.
id=$(mbctl post r after)
[ "$id" -gt "$(tail -n 1 "$T_DIR/ids")" ] ||
	fail "id $id after restarts is not above the earlier $(tail -n 1 "$T_DIR/ids")"

stop_broker
