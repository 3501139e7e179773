#!/bin/bash
# wire.sh - drive mboxd with tests/integration/wire.py, a client written
# from doc/protocol.md alone: payload at MAX_MSG_SIZE and one byte over,
# malformed bodies, broken framing, pipelining, lease expiry; then a
# RECV waiting while the broker stops (answered SHUTDOWN), and a broker
# whose MAX_FRAME is its slack alone (LIST paging, PUBLISH's reply); then
# a broker whose files may not grow past 512 KiB, where a commit fails:
# reads in the same batch never show what it took back.
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

# A soft RLIMIT_FSIZE needs no privilege (and can be raised again); it
# fails the WAL's write as a full disk would; an ignored SIGXFSZ is
# inherited through exec.
cat >"$T_DIR/fsize.sh" <<'EOF'
#!/bin/bash
trap '' XFSZ
ulimit -S -f 512
exec "$@"
EOF
chmod +x "$T_DIR/fsize.sh"
wrapper=$MBOXD_WRAPPER
MBOXD_WRAPPER="$T_DIR/fsize.sh $wrapper"
rm -f "$DB" "$DB-wal" "$DB-shm"
start_broker
MBOXD_WRAPPER=$wrapper
timeout 120 python3 "$WIRE" "$SOCK" rolled_back "$BROKER_PID" ||
	fail "wire.py rolled_back failed"
stop_broker
