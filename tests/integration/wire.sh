#!/bin/bash
# wire.sh - drive mboxd with tests/integration/wire.py, a client written
# from doc/protocol.md alone: payload at MAX_MSG_SIZE and one byte over,
# malformed bodies, broken framing, pipelining, lease expiry; then a
# RECV waiting while the broker stops (answered SHUTDOWN), and a broker
# whose MAX_FRAME is its slack alone (LIST paging, PUBLISH's reply).
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

WIRE="${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/wire.py"
command -v python3 >/dev/null || fail "python3 is needed (apt-get install python3)"
start_broker
timeout 120 python3 "$WIRE" "$SOCK" || fail "wire.py failed"

# SIGTERM while a RECV waits: its reply is SHUTDOWN, then the close.
timeout 60 python3 "$WIRE" "$SOCK" shutdown >"$T_DIR/shutdown.out" 2>&1 &
wire_pid=$!
track_pid "$wire_pid"
wait_grep "$T_DIR/shutdown.out" '^waiting' 100 ||
	fail "wire.py shutdown never started waiting: $(cat "$T_DIR/shutdown.out")"
stop_broker
rc=0
wait "$wire_pid" || rc=$?
untrack_pid "$wire_pid"
cat "$T_DIR/shutdown.out"
assert_eq 0 "$rc" "wire.py shutdown exit status"

start_broker --max-msg-size 0 --max-mailboxes-per-uid 10000 --sync normal
timeout 300 python3 "$WIRE" "$SOCK" small_frames || fail "wire.py small_frames failed"
stop_broker
