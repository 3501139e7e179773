#!/bin/bash
# handoff.sh - graceful hand-off to a successor (SPEC 3.5, doc/protocol.md
# 5.22-5.23): a worker re-execs itself mid-stream and its successor claims
# the leases and the subscription, with nothing lost, duplicated or counted
# as a redelivery; an unclaimed hand-off gives the messages back after its
# deadline; wrong, used and foreign tokens are refused.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

SUB=$(driver subscriber-driver)

# token_of NAME: the token the driver NAME printed.
token_of()
{
	sed -n 's/^handoff \([0-9a-f]*\)$/\1/p' "$T_DIR/$1.out" | head -n 1
}

# handed_off MAILBOX: create MAILBOX with 3 messages and start the driver
# MAILBOX"W" on it, which acks the first and hands the other two off (the
# token valid 10 s); sets SUB_PID and token once the token is printed.
handed_off()
{
	mbctl create "$1"
	post_n "$1" 3
	start_sub "$1W" sub "$1" --window 4 --handoff-after 1 \
		--handoff-wait-ms 10000 --timeout-s 15 --log "$T_DIR/$1W.log"
	wait_out "$1W" '^handoff '
	token=$(token_of "$1W")
}

start_broker

# --- (a) re-exec mid-stream: the successor claims and goes on ---
mbctl create h
post_n h 300
start_sub h sub h --window 16 --count 300 --handoff-after 100 --exec \
	--log "$T_DIR/h.log"
h_pid=$SUB_PID
finish "$h_pid" h
grep -qE '^handoff [0-9a-f]{32}$' "$T_DIR/h.out" ||
	fail "(a) no 32-hex-digit token printed: $(words <"$T_DIR/h.out")"
claimed=$(sed -n 's/^claimed //p' "$T_DIR/h.out")
[ -n "$claimed" ] || fail "(a) the successor did not claim: $(words <"$T_DIR/h.out")"
if [ "$claimed" -lt 1 ] || [ "$claimed" -gt 16 ]; then
	fail "(a) the successor claimed $claimed messages, expected 1-16 (the window)"
fi
assert_eq "done 300" "$(tail -n 1 "$T_DIR/h.out")" "(a) last line of the successor"
# Every message acked exactly once, in order, none counted twice.
cmp -s <(expected h 1 300 1) "$T_DIR/h.log" || {
	diff <(expected h 1 300 1) "$T_DIR/h.log" | head -n 10 >&2
	fail "(a) the two generations did not ack the 300 messages once each, in order, on their first delivery"
}
expect_rc 3 "(a) recv after the successor" mbctl recv h --wait 0.2
note "(a) re-exec after 100 of 300: $claimed claimed, nothing lost or duplicated"

# --- (b) an unclaimed hand-off: the messages go back after the deadline ---
mbctl create u
post_n u 20
start_sub uW sub u --window 8 --handoff-after 5 --handoff-wait-ms 1500 \
	--timeout-s 15 --log "$T_DIR/uW.log"
uW=$SUB_PID
wait_out uW '^handoff '
start_sub uC sub u --window 8 --count 15 --log "$T_DIR/uC.log"
uC=$SUB_PID
wait_subscribed uC
# Before the deadline only the messages nobody held come.
sleep 0.7
cmp -s <(expected u 14 20 1) "$T_DIR/uC.log" || {
	diff <(expected u 14 20 1) "$T_DIR/uC.log" >&2
	fail "(b) before the hand-off's deadline the other consumer should have exactly messages 14-20"
}
finish "$uC" uC
cmp -s <(expected u 14 20 1; expected u 6 13 2) "$T_DIR/uC.log" || {
	diff <(expected u 14 20 1; expected u 6 13 2) "$T_DIR/uC.log" >&2
	fail "(b) after the deadline the 8 parked messages did not come back in order, delivered twice"
}
cmp -s <(expected u 1 5 1) "$T_DIR/uW.log" || fail "(b) the worker acked the wrong messages"
alive "$uW" || fail "(b) the worker's connection did not stay usable after its hand-off"
! grep -q '^late ' "$T_DIR/uW.out" ||
	fail "(b) pushes after the hand-off: $(grep '^late ' "$T_DIR/uW.out" | words)"
stop "$uW"
note "(b) an unclaimed hand-off gave its 8 messages to another consumer after the deadline"

# The log names hand-offs by serial number and never shows a token, not
# even its first digits (doc/security.md).
for t in $(sed -n 's/^handoff \([0-9a-f]*\)$/\1/p' "$T_DIR/h.out" "$T_DIR/uW.out"); do
	! grep -qi "${t:0:8}" "$T_DIR/mboxd.log" ||
		fail "(b) the broker's log shows token $t: $(grep -i "${t:0:8}" "$T_DIR/mboxd.log" | words)"
done
grep -qE 'handed off 8 message\(s\) as hand-off [0-9]+$' "$T_DIR/mboxd.log" ||
	fail "(b) no log line for the hand-off: $(words <"$T_DIR/mboxd.log")"
grep -qE 'hand-off [0-9]+ was not claimed in time' "$T_DIR/mboxd.log" ||
	fail "(b) no log line for the unclaimed hand-off: $(words <"$T_DIR/mboxd.log")"
note "(b) the log names both hand-offs by number and shows no token"

# --- (c) unknown, malformed and used tokens ---
expect_rc 5 "(c) claim of an unknown token" \
	"$SUB" -S "$SOCK" claim 0123456789abcdef0123456789abcdef
rc=0
"$SUB" -S "$SOCK" claim not-a-token >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 5 ] || [ "$rc" -eq 1 ] || fail "(c) claim of a malformed token exited $rc"
handed_off t
tW=$SUB_PID
expect_rc 0 "(c) first claim of the token" "$SUB" -S "$SOCK" claim "$token"
assert_eq "claimed 2" "$(sed -n 1p "$T_DIR/rc.out")" "(c) messages claimed"
assert_eq "$(expected t 2 3 1 | sed 's/^/msg /' | words)" \
	"$(sed -n '2,$p' "$T_DIR/rc.out" | words)" \
	"(c) claimed messages (unchanged: no delivery counted)"
expect_rc 5 "(c) second claim of a used token" "$SUB" -S "$SOCK" claim "$token"
# The first claimer closed its connection: its messages are ready again.
mbctl recv t -n 5 --wait 2 >"$T_DIR/t.rest"
assert_eq "t-2 t-3" "$(words <"$T_DIR/t.rest")" "(c) messages after the claimer closed"
stop "$tW"
note "(c) unknown and used tokens are refused"

# --- (d) a claim by another uid is denied ---
if [ "$(id -u)" -ne 0 ] || ! command -v setpriv >/dev/null 2>&1 ||
	! getent passwd nobody >/dev/null || ! getent group nogroup >/dev/null; then
	note "(d) SKIPPED: needs root, setpriv, user nobody and group nogroup"
else
	chmod 0755 "$T_DIR"
	handed_off n
	nW=$SUB_PID
	# The same driver may reach the broker as nobody (exit 6 would not).
	expect_rc 0 "(d) ping as nobody" setpriv --reuid=nobody --regid=nogroup \
		--clear-groups "$MBOXCTL" -S "$SOCK" ping
	expect_rc 4 "(d) claim by another uid" setpriv --reuid=nobody \
		--regid=nogroup --clear-groups "$SUB" -S "$SOCK" claim "$token"
	# The denied claim did not use the token up.
	expect_rc 0 "(d) claim by the same uid after the denial" \
		"$SUB" -S "$SOCK" claim "$token"
	assert_eq "claimed 2" "$(sed -n 1p "$T_DIR/rc.out")" "(d) messages claimed after the denial"
	stop "$nW"
	note "(d) a claim by another uid is denied"
fi

stop_broker
