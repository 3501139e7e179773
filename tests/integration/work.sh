#!/bin/bash
# work.sh - `mboxctl work` (SPEC 6, issue 6): exit 0 acks, a failure nacks
# with back-off and the message comes again with MBOX_DELIVERIES raised,
# the reject code and --max-deliveries send it to the dead list, the MBOX_*
# environment and headers, -j 4 runs four at once, the lease is touched
# while CMD runs, SIGTERM lets running commands finish and acks them,
# --once, kill -9 of the worker gives its message back, and a re-exec
# hand-off (SIGUSR2 --handoff-exec) loses and duplicates nothing.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

# start_work NAME ARGS...: mboxctl work in the background (start_ctl),
# pid in WORK_PID.
start_work()
{
	start_ctl "$1" work "${@:2}"
	WORK_PID=$CTL_PID
}

# end_work PID NAME: SIGTERM the worker, require exit 0 within 15 s.
end_work()
{
	end_ctl "$@"
}

# settled MAILBOX: nothing ready, leased or delayed.
settled()
{
	wait_num "$1" ready 0 50 && wait_num "$1" leased 0 50 &&
		wait_num "$1" delayed 0 50
}

start_broker

# --- exit 0 acks; the payload is on stdin ---
mbctl create a
post_n a 5
start_work a a -- sh -c 'printf "%s\n" "$(cat)" >>"$0"' "$T_DIR/a.log"
a=$WORK_PID
wait_lines "$T_DIR/a.log" 5 100 || fail "worker handled $(wc -l <"$T_DIR/a.log") of 5"
settled a || fail "messages not acked: $(mbctl ls)"
assert_eq "a-1 a-2 a-3 a-4 a-5" "$(words <"$T_DIR/a.log")" "payloads, in order"
end_work "$a" a
note "exit 0 acks, payloads in order"

# --- a failure nacks; redelivered with MBOX_DELIVERIES 2 after ~1 s ---
mbctl create n
mbctl post n again >/dev/null
start_work n n -- sh -c 'echo "$(cat) $MBOX_DELIVERIES $(date +%s%N)" >>"$0"
	[ "$MBOX_DELIVERIES" -ge 2 ]' "$T_DIR/n.log"
n=$WORK_PID
wait_lines "$T_DIR/n.log" 2 100 || fail "no redelivery after a failure: $(cat "$T_DIR/n.log")"
settled n || fail "the redelivered message was not acked"
assert_eq "again 1 again 2" "$(cut -d' ' -f1,2 "$T_DIR/n.log" | words)" "deliveries"
t1=$(sed -n 1p "$T_DIR/n.log" | cut -d' ' -f3)
t2=$(sed -n 2p "$T_DIR/n.log" | cut -d' ' -f3)
gap=$(((t2 - t1) / 1000000))
[ "$gap" -ge 900 ] || fail "redelivered after $gap ms, the back-off is 1 s"
end_work "$n" n
grep -q '^mboxctl: work n: message [0-9]*: the command exited with status 1 (delivery 1); given back, retried after 1 s$' "$T_DIR/n.err" ||
	fail "the failure was not reported: $(cat "$T_DIR/n.err")"
note "a failure is nacked and redelivered after $gap ms (back-off 1 s)"

# --- the reject code and --max-deliveries: dead list ---
mbctl create r
mbctl post r poison >/dev/null
expect_rc 100 "work --once, CMD exits 100" mbctl work r --once -- sh -c 'exit 100'
assert_eq 1 "$(ls_num r dead)" "dead after exit 100"
mbctl post r poison2 >/dev/null
expect_rc 42 "work --once --reject-exit 42" mbctl work r --once --reject-exit 42 -- sh -c 'exit 42'
assert_eq 2 "$(ls_num r dead)" "dead after --reject-exit 42"
mbctl post r flaky >/dev/null
start_work r r --max-deliveries 2 -- sh -c 'echo "$MBOX_DELIVERIES" >>"$0"; exit 1' "$T_DIR/r.log"
r=$WORK_PID
wait_num r dead 3 60 || fail "--max-deliveries 2 did not reject: $(words <"$T_DIR/r.log")"
assert_eq "1 2" "$(words <"$T_DIR/r.log")" "deliveries before the dead list"
grep -q 'dead list' "$T_DIR/r.err" || fail "no word about the dead list: $(cat "$T_DIR/r.err")"
end_work "$r" r
mbctl peek r --dead -n 5 --json >"$T_DIR/dead.json"
assert_eq 3 "$(grep -c '"dead_reason":"rejected"' "$T_DIR/dead.json")" "dead reasons"
note "exit 100, --reject-exit and --max-deliveries reject"

# --- environment: metadata and headers ---
mbctl create e
id=$(mbctl post e payload --priority 5 -H trace-id=abc-1 -H Content.Type=text/x)
expect_rc 0 "work --once (env)" mbctl work e --once -- sh -c 'env >"$0"' "$T_DIR/env"
envv()
{
	sed -n "s/^$1=//p" "$T_DIR/env"
}
assert_eq "$id" "$(envv MBOX_ID)" MBOX_ID
assert_eq e "$(envv MBOX_MAILBOX)" MBOX_MAILBOX
assert_eq 1 "$(envv MBOX_DELIVERIES)" MBOX_DELIVERIES
assert_eq 5 "$(envv MBOX_PRIORITY)" MBOX_PRIORITY
assert_eq "$(id -u)" "$(envv MBOX_SENDER_UID)" MBOX_SENDER_UID
assert_eq "$(id -g)" "$(envv MBOX_SENDER_GID)" MBOX_SENDER_GID
assert_eq mboxctl "$(envv MBOX_SENDER_NAME)" MBOX_SENDER_NAME
[[ "$(envv MBOX_SENDER_PID)" =~ ^[1-9][0-9]*$ ]] || fail "MBOX_SENDER_PID: $(envv MBOX_SENDER_PID)"
assert_eq abc-1 "$(envv MBOX_HEADER_TRACE_ID)" "MBOX_HEADER_TRACE_ID"
assert_eq text/x "$(envv MBOX_HEADER_CONTENT_TYPE)" "MBOX_HEADER_CONTENT_TYPE"
assert_eq "$SOCK" "$(envv MBOX_SOCKET)" "MBOX_SOCKET"
note "MBOX_* environment and MBOX_HEADER_* present"

# --- -j 4: four commands at once ---
mbctl create j
post_n j 4
t0=$(now_ms)
start_work j j -j 4 -- sh -c 'echo "s $(date +%s%N)" >>"$0"; sleep 1
	echo "e $(date +%s%N)" >>"$0"' "$T_DIR/j.log"
j=$WORK_PID
wait_lines "$T_DIR/j.log" 8 100 || fail "-j 4: $(wc -l <"$T_DIR/j.log") lines of 8"
settled j || fail "-j 4: not all acked"
last_start=$(sed -n 's/^s //p' "$T_DIR/j.log" | sort -n | tail -n 1)
first_end=$(sed -n 's/^e //p' "$T_DIR/j.log" | sort -n | head -n 1)
[ "$last_start" -lt "$first_end" ] ||
	fail "-j 4: the fourth command started after the first ended"
dt=$(($(now_ms) - t0))
end_work "$j" j
note "-j 4: four 1 s commands overlapped (all done after $dt ms)"

# --- the lease is touched while CMD runs ---
mbctl create l --lease 1
mbctl post l long >/dev/null
start_work l1 l -- sh -c 'cat >/dev/null; echo start >>"$0"; sleep 3; echo end >>"$0"' "$T_DIR/l1.log"
l1=$WORK_PID
wait_lines "$T_DIR/l1.log" 1 50 || fail "lease: the command did not start"
start_work l2 l -- sh -c 'echo "$(cat) $MBOX_DELIVERIES" >>"$0"' "$T_DIR/l2.log"
l2=$WORK_PID
wait_lines "$T_DIR/l1.log" 2 60 || fail "lease: the long command did not end"
settled l || fail "lease: the long message was not acked"
sleep 0.3
[ ! -s "$T_DIR/l2.log" ] ||
	fail "lease 1 s, command 3 s: the message went to a second worker: $(cat "$T_DIR/l2.log")"
! grep -q 'lease' "$T_DIR/l1.err" || fail "lease: $(cat "$T_DIR/l1.err")"
end_work "$l1" l1
end_work "$l2" l2
note "a 3 s command kept its 1 s lease; no second delivery"

# --- SIGTERM: running commands finish and are acked ---
mbctl create t
post_n t 2
start_work t t -j 2 -- sh -c 'echo "start $(cat)" >>"$0"; sleep 1.5; echo "end $MBOX_ID" >>"$0"' "$T_DIR/t.log"
t=$WORK_PID
wait_lines "$T_DIR/t.log" 2 50 || fail "SIGTERM: the commands did not start"
end_work "$t" t
assert_eq 2 "$(grep -c '^end ' "$T_DIR/t.log")" "commands that finished after SIGTERM"
assert_eq 0 "$(ls_num t ready)" "SIGTERM: ready"
assert_eq 0 "$(ls_num t leased)" "SIGTERM: leased"
note "SIGTERM let 2 running commands finish; both acked"

# --- --once ---
mbctl create o
post_n o 2
expect_rc 0 "work --once" mbctl work o --once -- cat
assert_eq o-1 "$(cat "$T_DIR/rc.out")" "--once output"
assert_eq 1 "$(ls_num o ready)" "--once took one message"
expect_rc 7 "work --once, CMD exits 7" mbctl work o --once -- sh -c 'exit 7'
mbctl purge o >/dev/null
wait_num o delayed 0 30 || true
expect_rc 3 "work --once on an empty mailbox" mbctl work o --once --wait 0.3 -- cat
expect_rc 2 "work without a command" mbctl work o
expect_rc 2 "work with a missing command" mbctl work o -- /nonexistent/cmd
expect_rc 5 "work on a missing mailbox" mbctl work nosuch --once -- cat
# The command succeeds but its message cannot be acked (the mailbox is
# deleted meanwhile): not 0, which says "acknowledged".
mbctl create gone
mbctl post gone doomed >/dev/null
expect_rc 1 "work --once whose ack fails" mbctl work gone --once -- \
	sh -c 'cat >/dev/null; "$0" -S "$1" rm gone --force' "$MBOXCTL" "$SOCK"
grep -q 'cannot ack message' "$T_DIR/rc.err" || fail "work --once: $(cat "$T_DIR/rc.err")"
note "--once: 0 on ack, 1 when the ack failed, CMD's status on failure, 3 when empty; usage errors"

# --- the mailbox deleted under a worker: exit 5, as subscribe ---
mbctl create del
start_work del del -- cat
d=$WORK_PID
wait_num del consumers 1 50 || fail "the worker of del did not subscribe"
mbctl rm del >/dev/null
wait_dead "$d" 100 || fail "the worker of a deleted mailbox still runs"
rc=0
wait "$d" || rc=$?
untrack_pid "$d"
assert_eq 5 "$rc" "work's exit status when its mailbox is deleted"

# --- the reader of work's output goes away: work stops, loses nothing ---
mbctl create pq
seq 1 200 | mbctl post pq --lines >/dev/null
rc=0
{ timeout 60 "$MBOXCTL" -S "$SOCK" work pq -- sh -c 'cat; echo' \
	2>"$T_DIR/pq.err" || echo $? >"$T_DIR/pq.rc"; } | head -n 1 >/dev/null
assert_eq 1 "$(cat "$T_DIR/pq.rc" 2>/dev/null)" "work's exit status once its reader left"
grep -q 'standard output is closed (its reader went away): stopping' "$T_DIR/pq.err" ||
	fail "work did not say why it stopped: $(cat "$T_DIR/pq.err")"
assert_eq 0 "$(ls_num pq leased)" "leased after work stopped"
assert_eq 0 "$(ls_num pq dead)" "dead after work stopped"
[ "$(ls_num pq ready)" -ge 150 ] || fail "work went on after its reader left: $(ls_num pq ready) ready of 200"
note "work stops when its reader goes away, and gives the message back"

# --- kill -9 of the worker mid-command: the message comes back, and the
# command dies with the worker rather than run beside the next one ---
mbctl create k
mbctl post k victim >/dev/null
# The command writes its pid (tracked, in case it outlives the worker).
start_work k k -- sh -c 'cat >/dev/null; echo $$ >>"$0"; exec sleep 30' "$T_DIR/k.log"
k=$WORK_PID
wait_lines "$T_DIR/k.log" 1 50 || fail "kill -9: the command did not start"
kcmd=$(cat "$T_DIR/k.log")
track_pid "$kcmd"
kill9_pid "$k"
expect_rc 0 "recv after kill -9 of the worker" mbctl recv k --json --wait 5
assert_eq 2 "$(json_num deliveries <"$T_DIR/rc.out")" "deliveries after kill -9"
wait_dead "$kcmd" 50 || fail "the command of a worker killed with -9 still runs"
untrack_pid "$kcmd"
note "kill -9 of the worker: its command died with it, its message was delivered again"

# --- re-exec hand-off: nothing lost, nothing done twice ---
mbctl create h
post_n h 300
start_work h h -j 4 --handoff-exec "$MBOXCTL" -- sh -c 'echo "$(cat) $MBOX_DELIVERIES" >>"$0"; sleep 0.01' "$T_DIR/h.log"
h=$WORK_PID
for gen in 1 2; do
	wait_lines "$T_DIR/h.log" $((gen * 80)) 300 || fail "hand-off: stalled at $(wc -l <"$T_DIR/h.log")"
	kill -USR2 "$h"
	for ((i = 0; i < 100; i++)); do
		[ "$(grep -c 'claimed a hand-off' "$T_DIR/h.err")" -ge "$gen" ] && break
		sleep 0.1
	done
	[ "$(grep -c 'claimed a hand-off' "$T_DIR/h.err")" -ge "$gen" ] ||
		fail "generation $((gen + 1)) did not claim: $(cat "$T_DIR/h.err")"
done
wait_lines "$T_DIR/h.log" 300 300 || fail "hand-off: $(wc -l <"$T_DIR/h.log") of 300 handled"
settled h || fail "hand-off: not all acked: $(mbctl ls)"
alive "$h" || fail "hand-off: the worker died: $(cat "$T_DIR/h.err")"
end_work "$h" h
assert_eq 2 "$(grep -c 'handing off' "$T_DIR/h.err")" "hand-offs"
assert_eq 300 "$(sort -u "$T_DIR/h.log" | wc -l)" "distinct messages handled"
assert_eq 300 "$(wc -l <"$T_DIR/h.log")" "messages handled (no duplicate)"
assert_eq 300 "$(grep -c ' 1$' "$T_DIR/h.log")" "handled on their first delivery"
cmp -s <(seq 1 300 | sed 's/^/h-/') <(cut -d' ' -f1 "$T_DIR/h.log" | sort -t- -k2 -n) ||
	fail "hand-off: the handled payloads are not h-1..h-300"
note "two re-exec hand-offs mid-stream: 300 handled once each, none redelivered"
