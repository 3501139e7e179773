#!/bin/bash
# rpc.sh - request/reply (SPEC 3.7, doc/protocol.md 5.24) and temporary
# mailboxes: mbox_call / mbox_reply round trips, a call with no server
# times out in time, a server killed with SIGKILL mid-request is replaced
# and the call still gets its answer, and a temp mailbox lives exactly as
# long as its connection (kill -9 included).
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

SUB=$(driver subscriber-driver)

# mailboxes: the names mboxctl ls lists, sorted, on one line.
mailboxes()
{
	mbctl ls --json | sed -n 's/^.*"name":"\([^"]*\)".*$/\1/p' | sort | words
}

# wait_mailboxes WANT WHAT: poll ls (at most 5 s) until it lists WANT.
wait_mailboxes()
{
	local i
	for ((i = 0; i < 50; i++)); do
		[ "$(mailboxes)" = "$1" ] && return 0
		sleep 0.1
	done
	assert_eq "$1" "$(mailboxes)" "$2"
}

start_broker

# --- round trips ---
mbctl create r
start_sub s1 serve r
s1=$SUB_PID
wait_out s1 '^serving$'
for i in $(seq 1 10); do
	expect_rc 0 "call $i" "$SUB" -S "$SOCK" call r "hello-$i" --timeout-ms 5000
	assert_eq "re:hello-$i" "$(cat "$T_DIR/rc.out")" "reply to call $i"
done
# The server acks and prints after its reply is sent: the last call may
# return before the last line is written.
wait_said s1 replied 10
assert_eq 10 "$(grep -c '^replied ' "$T_DIR/s1.out")" "requests the server answered"
# Each caller's reply mailbox went with its connection.
wait_mailboxes "r" "mailboxes after 10 calls"
stop "$s1"
expect_rc 3 "recv of requests after the server" mbctl recv r --wait 0.2
note "10 calls answered, payloads echoed"

# --- no server: the call times out in time ---
mbctl create idle
t0=$(now_ms)
expect_rc 3 "call with no server" "$SUB" -S "$SOCK" call idle ping --timeout-ms 700
dt=$(($(now_ms) - t0))
if [ "$dt" -lt 650 ] || [ "$dt" -gt 3000 ]; then
	fail "a call with a 700 ms timeout returned after $dt ms"
fi
note "a call with no server timed out after $dt ms (timeout 700 ms)"

# --- the server is killed mid-request; a new one answers ---
start_sub s2 serve r --delay-ms 5000
s2=$SUB_PID
wait_out s2 '^serving$'
"$SUB" -S "$SOCK" call r mid --timeout-ms 15000 >"$T_DIR/mid.out" 2>"$T_DIR/mid.err" &
mid=$!
track_pid "$mid"
wait_out s2 '^req [0-9]+ mid 1$'
kill9_pid "$s2"
start_sub s3 serve r
s3=$SUB_PID
wait_dead "$mid" 100 || fail "the call was not answered 10 s after the new server started"
rc=0
wait "$mid" || rc=$?
untrack_pid "$mid"
[ "$rc" -eq 0 ] || fail "the call across the server's kill exited $rc: $(cat "$T_DIR/mid.err")"
assert_eq "re:mid" "$(cat "$T_DIR/mid.out")" "reply across the server's kill"
grep -qE '^req [0-9]+ mid 2$' "$T_DIR/s3.out" ||
	fail "the new server did not get the request on its 2nd delivery: $(words <"$T_DIR/s3.out")"
expect_rc 0 "call after the new server" "$SUB" -S "$SOCK" call r after --timeout-ms 5000
assert_eq "re:after" "$(cat "$T_DIR/rc.out")" "reply from the new server"
stop "$s3"
note "a request held by a killed server was answered by the next one"

# --- temporary mailboxes live as long as their connection ---
mkfifo "$T_DIR/fifo"
for how in eof kill9; do
	# One output file per round: the shell truncates it only once the
	# driver has started, so a shared one could still say "ready".
	"$SUB" -S "$SOCK" temp "tmp-$how" <"$T_DIR/fifo" \
		>"$T_DIR/tmp-$how.out" 2>"$T_DIR/tmp-$how.err" &
	tp=$!
	track_pid "$tp"
	SUB_PIDS[tmp-$how]=$tp
	# Keep the driver's stdin open until we close it.
	exec 3>"$T_DIR/fifo"
	wait_out "tmp-$how" '^ready$'
	assert_eq "idle r tmp-$how" "$(mailboxes)" "mailboxes while tmp-$how lives"
	if [ "$how" = eof ]; then
		exec 3>&-
		wait_dead "$tp" 50 || fail "temp driver did not exit on EOF"
		wait "$tp" || fail "temp driver failed: $(cat "$T_DIR/tmp-$how.err")"
		untrack_pid "$tp"
	else
		kill9_pid "$tp"
		exec 3>&-
	fi
	wait_mailboxes "idle r" "mailboxes after the temp driver's end ($how)"
done
note "temp mailboxes went with their connection, on close and on kill -9"

stop_broker
