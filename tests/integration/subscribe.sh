#!/bin/bash
# subscribe.sh - push subscriptions (SPEC 3.3, doc/protocol.md 5.12-5.14):
# messages are pushed to waiting subscribers without any recv, at most
# WINDOW unacked at a time; competing subscribers share fairly; a killed
# subscriber's messages go to another one in order; after a kill -9 of the
# broker every unacked message comes again and no acked one does; deleting
# the mailbox ends its subscriptions and tells the subscribers.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

SUB=$(driver subscriber-driver)
SUB_LIBEV=$TOP_BUILDDIR/contrib/examples/sub-libev

start_broker

# --- (a) posts to a waiting subscriber are pushed, in order, once each ---
mbctl create a
start_sub a sub a --window 8 --count 200 --log "$T_DIR/a.log"
a_pid=$SUB_PID
wait_subscribed a
post_n a 200
finish "$a_pid" a
cmp -s <(expected a 1 200 1) "$T_DIR/a.log" || {
	diff <(expected a 1 200 1) "$T_DIR/a.log" | head -n 10 >&2
	fail "(a) the subscriber did not get the 200 posts in order, once each"
}
note "(a) 200 posts pushed to a waiting subscriber, in order, once each"

# --- (b) the window bounds the unacked messages ---
mbctl create b
post_n b 50
for w in 3 1; do
	timeout 20 "$SUB" -S "$SOCK" window b "$w" >"$T_DIR/b.out" 2>"$T_DIR/b.err" ||
		fail "(b) window $w driver failed: $(cat "$T_DIR/b.err")"
	assert_eq "window $w" "$(sed -n 1p "$T_DIR/b.out")" \
		"(b) messages pushed unacked with window $w and 50 ready"
	assert_eq "more 1" "$(sed -n 2p "$T_DIR/b.out")" \
		"(b) messages pushed after one ack with window $w"
done
note "(b) windows 3 and 1 hold exactly 3 and 1 unacked; one ack lets one more in"

# --- (c) competing subscribers share fairly ---
for k in 2 4; do
	mb=c$k
	mbctl create "$mb"
	pids=()
	for ((j = 1; j <= k; j++)); do
		start_sub "$mb.$j" sub "$mb" --window 4 --ack-delay-ms 1 \
			--log "$T_DIR/$mb.$j.log"
		pids+=("$SUB_PID")
	done
	for ((j = 1; j <= k; j++)); do
		wait_subscribed "$mb.$j"
	done
	post_n "$mb" 400
	for ((i = 0; i < 200; i++)); do
		[ "$(cat "$T_DIR/$mb".*.log 2>/dev/null | wc -l)" -ge 400 ] && break
		sleep 0.1
	done
	# A moment more, to catch any duplicate pushed late.
	sleep 0.3
	for p in "${pids[@]}"; do
		stop "$p"
	done
	cat "$T_DIR/$mb".*.log | cut -d' ' -f1 | sort -n >"$T_DIR/$mb.got"
	cmp -s <(sort -n "$T_DIR/$mb.ids") "$T_DIR/$mb.got" || {
		note "got $(wc -l <"$T_DIR/$mb.got") ids, $(sort -u "$T_DIR/$mb.got" | wc -l) distinct"
		fail "(c) $k subscribers: the union of what they acked is not the 400 posts once each"
	}
	shares=
	for ((j = 1; j <= k; j++)); do
		n=$(wc -l <"$T_DIR/$mb.$j.log")
		shares="$shares $n"
		if [ "$k" -eq 2 ]; then
			if [ "$n" -lt 120 ] || [ "$n" -gt 280 ]; then
				fail "(c) 2 subscribers: subscriber $j got $n of 400 (want 30%-70%)"
			fi
		else
			[ "$n" -ge 40 ] ||
				fail "(c) 4 subscribers: subscriber $j got $n of 400 (want >= 10%)"
		fi
		# Within one subscriber the pushes come in id order.
		cut -d' ' -f1 "$T_DIR/$mb.$j.log" | sort -nc 2>/dev/null ||
			fail "(c) subscriber $j of $k got its messages out of order"
	done
	note "(c) $k subscribers shared 400 messages:$shares"
done

# --- (d) a subscriber killed holding messages: they go to another one ---
mbctl create d
post_n d 18
start_sub dA sub d --window 8 --no-ack-after 10 --log "$T_DIR/dA.log"
dA=$SUB_PID
wait_lines "$T_DIR/dA.log" 10 100 || fail "(d) subscriber A acked fewer than 10"
wait_grep "$T_DIR/dA.out" '^hold .* 1$' 100 || fail "(d) subscriber A holds nothing"
wait_holds dA 8
cmp -s <(expected d 11 18 1 | sed 's/^/hold /') <(grep '^hold ' "$T_DIR/dA.out") ||
	fail "(d) subscriber A should hold messages 11-18, holds: $(grep '^hold ' "$T_DIR/dA.out" | words)"
cmp -s <(expected d 1 10 1) "$T_DIR/dA.log" || fail "(d) subscriber A acked the wrong messages"
start_sub dB sub d --window 8 --count 8 --log "$T_DIR/dB.log"
dB=$SUB_PID
wait_subscribed dB
sleep 0.3
[ ! -s "$T_DIR/dB.log" ] || fail "(d) subscriber B got messages A holds: $(words <"$T_DIR/dB.log")"
kill9_pid "$dA"
finish "$dB" dB
cmp -s <(expected d 11 18 2) "$T_DIR/dB.log" || {
	diff <(expected d 11 18 2) "$T_DIR/dB.log" >&2
	fail "(d) subscriber B did not get A's 8 messages, in order, on their 2nd delivery"
}
expect_rc 3 "(d) recv after B" mbctl recv d --wait 0.2
note "(d) a killed subscriber's 8 unacked messages were pushed to another, in order"

# --- (e) the libev example subscriber ---
if [ -x "$SUB_LIBEV" ]; then
	mbctl create e
	timeout 20 "$SUB_LIBEV" -S "$SOCK" e 20 >"$T_DIR/e.out" 2>"$T_DIR/e.err" &
	e_pid=$!
	track_pid "$e_pid"
	sleep 0.3
	post_n e 20
	wait_dead "$e_pid" 150 || fail "(e) sub-libev still running 15 s after 20 posts"
	rc=0
	wait "$e_pid" || rc=$?
	untrack_pid "$e_pid"
	[ "$rc" -eq 0 ] || fail "(e) sub-libev exited $rc: $(head -c 500 "$T_DIR/e.err")"
	assert_eq "$(seq 1 20 | sed 's/^/e-/' | words)" "$(words <"$T_DIR/e.out")" \
		"(e) payloads printed by sub-libev"
	expect_rc 3 "(e) recv after sub-libev" mbctl recv e --wait 0.2
	note "(e) contrib/examples/sub-libev received the 20 posts"
else
	note "(e) SKIPPED: $SUB_LIBEV is not built"
fi

# --- (f) kill -9 of the broker while a subscriber holds messages ---
mbctl create f
post_n f 50
start_sub fA sub f --window 8 --no-ack-after 20 --log "$T_DIR/fA.log"
fA=$SUB_PID
wait_lines "$T_DIR/fA.log" 20 100 || fail "(f) subscriber acked fewer than 20"
wait_holds fA 8
assert_eq 8 "$(grep -c '^hold ' "$T_DIR/fA.out")" "(f) messages the subscriber holds"
kill9_broker
wait_dead "$fA" 100 || fail "(f) the subscriber did not notice the broker's death in 10 s"
rc=0
wait "$fA" || rc=$?
untrack_pid "$fA"
[ "$rc" -ne 0 ] || fail "(f) the subscriber exited 0 although the broker died"
start_broker
start_sub fB sub f --window 8 --count 30 --log "$T_DIR/fB.log"
fB=$SUB_PID
finish "$fB" fB
cmp -s <(expected f 21 28 2; expected f 29 50 1) "$T_DIR/fB.log" || {
	diff <(expected f 21 28 2; expected f 29 50 1) "$T_DIR/fB.log" | head -n 10 >&2
	fail "(f) after the broker's restart: not exactly the 30 unacked messages, in order, counts kept"
}
expect_rc 3 "(f) recv after the restart" mbctl recv f --wait 0.2
note "(f) broker kill -9: the 30 unacked came again, none of the 20 acked"

# --- (g) deleting a mailbox ends its subscriptions, and says so ---
# libmbox (mbox_next): the end comes after the messages pushed before it,
# names its mailbox, and the connection's other subscription goes on.
mbctl create g
mbctl create g.other
start_sub g ends g g.other --count 3
g_pid=$SUB_PID
wait_subscribed g
post_n g 2
wait_said g msg 2
mbctl rm g --force
post_n g.other 1
finish "$g_pid" g
assert_eq "subscribed g g.other|msg g g-1|msg g g-2|ended g|msg g.other g.other-1|done 3" \
	"$(paste -sd'|' "$T_DIR/g.out")" "(g) what the libmbox subscriber saw"
# mboxctl sub (mbox_next), sub-libev (mbox_dispatch) and a waiting recv.
mbctl create g2
start_ctl g2sub subscribe g2
g2sub=$CTL_PID
start_ctl g2recv recv g2 --wait 60
g2recv=$CTL_PID
g2ev=
if [ -x "$SUB_LIBEV" ]; then
	timeout 20 "$SUB_LIBEV" -S "$SOCK" g2 5 >"$T_DIR/g2ev.out" 2>"$T_DIR/g2ev.err" &
	g2ev=$!
	track_pid "$g2ev"
fi
# All of them wait on g2 once STAT counts them (bounded: 10 s).
want=$((g2ev ? 3 : 2))
for ((i = 0; i < 100; i++)); do
	[ "$(mbctl stat g2 --json | json_num consumers)" = "$want" ] && break
	sleep 0.1
done
assert_eq "$want" "$(mbctl stat g2 --json | json_num consumers)" "(g) consumers of g2 before its deletion"
mbctl rm g2 --force
for p in $g2sub $g2recv $g2ev; do
	wait_dead "$p" 100 || fail "(g) pid $p still running 10 s after the deletion of g2"
done
for name in g2sub g2recv; do
	pid=${name/g2sub/$g2sub}
	pid=${pid/g2recv/$g2recv}
	rc=0
	wait "$pid" || rc=$?
	untrack_pid "$pid"
	assert_eq 5 "$rc" "(g) exit status of mboxctl ${name#g2} after the deletion ($(cat "$T_DIR/$name.err"))"
done
grep -q "ended the subscription to g2: the mailbox was deleted" "$T_DIR/g2sub.err" ||
	fail "(g) mboxctl sub did not say why it ended: $(cat "$T_DIR/g2sub.err")"
grep -q "deleted" "$T_DIR/g2recv.err" ||
	fail "(g) the waiting recv did not say the mailbox was deleted: $(cat "$T_DIR/g2recv.err")"
if [ -n "$g2ev" ]; then
	rc=0
	wait "$g2ev" || rc=$?
	untrack_pid "$g2ev"
	[ "$rc" -ne 0 ] || fail "(g) sub-libev exited 0 after its mailbox was deleted"
	grep -q "ended the subscription to g2" "$T_DIR/g2ev.err" ||
		fail "(g) sub-libev did not say why it ended: $(cat "$T_DIR/g2ev.err")"
fi
note "(g) deleting a mailbox ended its subscriptions (libmbox, mboxctl sub, sub-libev) and its waiting recv, each saying why"

stop_broker
