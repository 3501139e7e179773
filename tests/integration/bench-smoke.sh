#!/bin/bash
# bench-smoke.sh - the benchmark still runs: a short mbox-bench against a
# broker it starts itself, and against ours with --socket. Its output must
# be one JSON object; no timing is checked.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

BENCH=$TOP_BUILDDIR/tests/bench/mbox-bench
[ -x "$BENCH" ] || fail "$BENCH is not built"

expect_rc 0 "mbox-bench with its own broker" timeout 120 "$BENCH" \
	--mboxd "$MBOXD" --sync off --producers 2 --messages 300 --count 50 --json
cp "$T_DIR/rc.out" "$T_DIR/bench.json"
check_json_lines "$T_DIR/bench.json"
assert_eq 1 "$(wc -l <"$T_DIR/bench.json")" "mbox-bench --json lines"
grep -q '"rtt_median_us":' "$T_DIR/bench.json" ||
	fail "no rtt_median_us in $(cat "$T_DIR/bench.json")"
note "$(cat "$T_DIR/bench.json")"

start_broker
expect_rc 0 "mbox-bench --socket" timeout 120 "$BENCH" --socket "$SOCK" \
	--producers 3 --messages 100 --count 20
grep -q 'msgs/s' "$T_DIR/rc.out" || fail "no table from mbox-bench: $(cat "$T_DIR/rc.out")"
# It drained what it posted: its mailboxes are empty.
mbctl ls --json >"$T_DIR/ls"
check_json_lines "$T_DIR/ls"
if grep '"bench\.' "$T_DIR/ls" | grep -q '"ready":[1-9]'; then
	fail "mbox-bench left messages behind: $(cat "$T_DIR/ls")"
fi
stop_broker
