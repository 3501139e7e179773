#!/bin/bash
# exclusive.sh - exclusive consumer with a hot standby (SPEC 3.5 point 3,
# doc/protocol.md 5.12, 5.22): the standby gets nothing while the active
# subscriber lives; when that one is killed, or hands off and nobody claims
# in time, the standby takes over with the pending work first, so the
# acked ids stay strictly increasing across the switch, with no gap.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

SUB=$(driver subscriber-driver)

# strictly_increasing FILE...: the first columns, concatenated, increase.
strictly_increasing()
{
	cat "$@" | awk 'NR > 1 && $1 <= prev { exit 1 } { prev = $1 }'
}

start_broker

# --- kill -9 of the active subscriber ---
mbctl create x
start_sub xA sub x --exclusive --window 4 --ack-delay-ms 5 --no-ack-after 20 \
	--log "$T_DIR/xA.log"
xA=$SUB_PID
wait_subscribed xA
assert_eq "subscribed standby=0" "$(head -n 1 "$T_DIR/xA.out")" "first exclusive subscriber"
start_sub xB sub x --exclusive --window 4 --ack-delay-ms 5 --count 40 \
	--log "$T_DIR/xB.log"
xB=$SUB_PID
wait_subscribed xB
assert_eq "subscribed standby=1" "$(head -n 1 "$T_DIR/xB.out")" "second exclusive subscriber"
# Exclusive and shared subscriptions do not mix on one mailbox.
expect_rc 1 "shared subscription of an exclusive mailbox" \
	"$SUB" -S "$SOCK" sub x --window 1 --count 1 --timeout-s 2
# EBUSY (16): doc/protocol.md 5.12.
grep -q '^subscriber-driver: subscribe: .*\[err=-16\]' "$T_DIR/rc.err" ||
	fail "a shared subscription of an exclusive mailbox was not refused: $(cat "$T_DIR/rc.err")"
# Nor does a RECV of another connection overtake the active subscriber.
post_n x 60
expect_rc 1 "recv from an exclusive subscriber's mailbox" mbctl recv x
grep -q 'exclusive subscriber' "$T_DIR/rc.err" ||
	fail "recv beside an exclusive subscriber was not refused busy: $(cat "$T_DIR/rc.err")"
wait_lines "$T_DIR/xA.log" 20 100 || fail "the active subscriber acked fewer than 20"
wait_holds xA 4
cmp -s <(expected x 21 24 1 | sed 's/^/hold /') <(grep '^hold ' "$T_DIR/xA.out") ||
	fail "the active subscriber should hold 21-24: $(grep '^hold ' "$T_DIR/xA.out" | words)"
sleep 0.2
[ ! -s "$T_DIR/xB.log" ] || fail "the standby got messages: $(words <"$T_DIR/xB.log")"
kill9_pid "$xA"
finish "$xB" xB
strictly_increasing "$T_DIR/xA.log" "$T_DIR/xB.log" || {
	cat "$T_DIR/xA.log" "$T_DIR/xB.log" | cut -d' ' -f1 | words >&2
	fail "acked ids are not strictly increasing across the kill"
}
cmp -s <(expected x 1 20 1; expected x 21 24 2; expected x 25 60 1) \
	<(cat "$T_DIR/xA.log" "$T_DIR/xB.log") || {
	diff <(expected x 1 20 1; expected x 21 24 2; expected x 25 60 1) \
		<(cat "$T_DIR/xA.log" "$T_DIR/xB.log") | head -n 10 >&2
	fail "the standby did not take over with the killed one's 4 messages first, then the rest"
}
expect_rc 3 "recv after the standby" mbctl recv x --wait 0.2
note "kill -9 of the active subscriber: the standby took over, strict order, nothing lost"

# --- an unclaimed hand-off of the active subscriber ---
mbctl create y
start_sub yA sub y --exclusive --window 4 --handoff-after 10 \
	--handoff-wait-ms 1500 --timeout-s 15 --log "$T_DIR/yA.log"
yA=$SUB_PID
wait_subscribed yA
start_sub yB sub y --exclusive --window 4 --count 30 --log "$T_DIR/yB.log"
yB=$SUB_PID
wait_subscribed yB
assert_eq "subscribed standby=1" "$(head -n 1 "$T_DIR/yB.out")" "standby of y"
post_n y 40
wait_out yA '^handoff '
# The hand-off record keeps the active position until its deadline.
sleep 0.7
[ ! -s "$T_DIR/yB.log" ] ||
	fail "the standby got messages before the hand-off's deadline: $(words <"$T_DIR/yB.log")"
finish "$yB" yB
cmp -s <(expected y 1 10 1) "$T_DIR/yA.log" || fail "the active one acked the wrong messages"
cmp -s <(expected y 11 14 2; expected y 15 40 1) "$T_DIR/yB.log" || {
	diff <(expected y 11 14 2; expected y 15 40 1) "$T_DIR/yB.log" | head -n 10 >&2
	fail "the standby did not take over after the unclaimed hand-off, in order"
}
! grep -q '^late ' "$T_DIR/yA.out" ||
	fail "pushes to the handed-off subscriber: $(grep '^late ' "$T_DIR/yA.out" | words)"
stop "$yA"
note "unclaimed hand-off: the standby took over after the deadline, in order"

# --- an exclusive subscription is refused while a RECV waits ---
mbctl create z
"$MBOXCTL" -S "$SOCK" recv z --wait 30 >"$T_DIR/zr.out" 2>"$T_DIR/zr.err" &
zr=$!
track_pid "$zr"
for ((i = 0; i < 100; i++)); do
	mbctl clients --json | grep -q '"waiting":1' && break
	sleep 0.1
done
mbctl clients --json | grep -q '"waiting":1' || fail "the recv of z never waited"
expect_rc 1 "exclusive subscription while a recv waits" \
	"$SUB" -S "$SOCK" sub z --exclusive --window 1 --count 1 --timeout-s 2
grep -q '^subscriber-driver: subscribe: .*\[err=-16\]' "$T_DIR/rc.err" ||
	fail "an exclusive subscription beside a waiting recv was not refused busy: $(cat "$T_DIR/rc.err")"
mbctl post z hello >/dev/null
wait_dead "$zr" 100 || fail "the waiting recv of z did not get its message"
wait "$zr" || fail "recv z exited $?: $(cat "$T_DIR/zr.err")"
untrack_pid "$zr"
assert_eq hello "$(cat "$T_DIR/zr.out")" "what the waiting recv of z got"
note "RECV and exclusive subscriptions do not mix"

stop_broker
