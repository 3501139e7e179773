#!/bin/bash
# examples.sh - the shell examples of contrib/examples run against a test
# broker and print what they promise: pipeline.sh (produce -> work -j 4 ->
# collect) and rpc.sh (serve and call, with an error reply), both with -S
# and with MBOX_SOCKET, leaving no mailbox behind.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

EX=${TOP_SRCDIR:-$(dirname "$0")/../..}/contrib/examples
export MBOXCTL

mailboxes()
{
	mbctl ls --json | sed -n 's/^.*"name":"\([^"]*\)".*$/\1/p' | sort | words
}

start_broker

# --- pipeline.sh: 50 jobs through 4 workers, all collected, in order ---
expect_rc 0 "pipeline.sh -S" timeout 60 bash "$EX/pipeline.sh" -S "$SOCK" 50
for i in $(seq 1 50); do echo "$i squared is $((i * i))"; done >"$T_DIR/want"
cmp -s "$T_DIR/want" "$T_DIR/rc.out" || {
	diff "$T_DIR/want" "$T_DIR/rc.out" | head -n 10 >&2
	fail "pipeline.sh printed the wrong results"
}
grep -q '50 jobs produced' "$T_DIR/rc.err" || fail "pipeline.sh: $(cat "$T_DIR/rc.err")"
assert_eq "" "$(mailboxes)" "mailboxes left by pipeline.sh"
MBOX_SOCKET=$SOCK expect_rc 0 "pipeline.sh with MBOX_SOCKET" timeout 60 bash "$EX/pipeline.sh" 5
assert_eq 5 "$(wc -l <"$T_DIR/rc.out")" "pipeline.sh with MBOX_SOCKET: results"
expect_rc 2 "pipeline.sh with a bad N" bash "$EX/pipeline.sh" -S "$SOCK" lots
note "pipeline.sh: 50 jobs produced, transformed, collected in order"

# --- rpc.sh: the demo, then a server and a client as two shells ---
expect_rc 0 "rpc.sh demo" timeout 60 bash "$EX/rpc.sh" -S "$SOCK"
cat >"$T_DIR/want" <<'OUT'
call hello, world -> HELLO, WORLD
call mailboxes all the way down -> MAILBOXES ALL THE WAY DOWN
OUT
cmp -s "$T_DIR/want" "$T_DIR/rc.out" || fail "rpc.sh demo printed: $(cat "$T_DIR/rc.out")"
grep -q 'empty request: send some text' "$T_DIR/rc.err" || fail "rpc.sh demo: no error reply: $(cat "$T_DIR/rc.err")"
assert_eq "" "$(mailboxes)" "mailboxes left by the rpc.sh demo"

MBOX_SOCKET=$SOCK RPC_MAILBOX=ex.up bash "$EX/rpc.sh" server >"$T_DIR/srv.out" 2>"$T_DIR/srv.err" &
srv=$!
track_pid "$srv"
MBOX_SOCKET=$SOCK RPC_MAILBOX=ex.up expect_rc 0 "rpc.sh client" timeout 30 bash "$EX/rpc.sh" client "two shells"
assert_eq "TWO SHELLS" "$(cat "$T_DIR/rc.out")" "rpc.sh client reply"
MBOX_SOCKET=$SOCK RPC_MAILBOX=ex.up expect_rc 1 "rpc.sh client, empty" timeout 30 bash "$EX/rpc.sh" client ""
grep -q 'empty request' "$T_DIR/rc.err" || fail "rpc.sh client error: $(cat "$T_DIR/rc.err")"
kill -TERM "$srv"
wait_dead "$srv" 100 || fail "rpc.sh server still running after SIGTERM"
rc=0
wait "$srv" || rc=$?
untrack_pid "$srv"
assert_eq 0 "$rc" "rpc.sh server exit status ($(cat "$T_DIR/srv.err"))"
note "rpc.sh: demo and two-shell server/client answered, error reply exit 1"
