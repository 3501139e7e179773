#!/bin/bash
# bench-smoke.sh - the benchmark still runs: a short mbox-bench against a
# broker it starts itself (every workload: post, rtt and the push
# subscriptions), and against ours with --socket (the default workloads,
# then push alone with other subscriber counts, windows and batched acks).
# Its output must be one JSON object; no timing is checked.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

BENCH=$TOP_BUILDDIR/tests/bench/mbox-bench
[ -x "$BENCH" ] || fail "$BENCH is not built"

expect_rc 0 "mbox-bench with its own broker" timeout 120 "$BENCH" \
	--mboxd "$MBOXD" --sync off --producers 2 --messages 300 --count 50 --json
cp "$T_DIR/rc.out" "$T_DIR/bench.json"
check_json_lines "$T_DIR/bench.json"
assert_eq 1 "$(wc -l <"$T_DIR/bench.json")" "mbox-bench --json lines"
for key in rtt_median_us push_rtt_median_us post_msgs_per_sec; do
	grep -q "\"$key\":[0-9]" "$T_DIR/bench.json" ||
		fail "no $key figure in $(cat "$T_DIR/bench.json")"
done
# The push grid: 1 and 4 subscribers, windows 1 and 64, four figures.
assert_eq 4 "$(grep -o '"msgs_per_sec":[0-9]' "$T_DIR/bench.json" | wc -l)" \
	"push runs in the JSON"
note "$(cat "$T_DIR/bench.json")"

start_broker
expect_rc 0 "mbox-bench --socket" timeout 120 "$BENCH" --socket "$SOCK" \
	--producers 3 --messages 100 --count 20
grep -q 'msgs/s' "$T_DIR/rc.out" || fail "no table from mbox-bench: $(cat "$T_DIR/rc.out")"
expect_rc 0 "mbox-bench --workload push" timeout 120 "$BENCH" --socket "$SOCK" \
	--workload push --producers 2 --subscribers 3 --windows 1,8 \
	--ack-batch 4 --messages 120 --count 10
grep -q 'push, 3 subscribers, window 8' "$T_DIR/rc.out" ||
	fail "no push row from mbox-bench: $(cat "$T_DIR/rc.out")"
grep -q 'post -> push' "$T_DIR/rc.out" ||
	fail "no push round trip from mbox-bench: $(cat "$T_DIR/rc.out")"
# It drained what it posted: its mailboxes are empty.
mbctl ls --json >"$T_DIR/ls"
check_json_lines "$T_DIR/ls"
if grep '"bench\.' "$T_DIR/ls" | grep -Eq '"(ready|leased)":[1-9]'; then
	fail "mbox-bench left messages behind: $(cat "$T_DIR/ls")"
fi
stop_broker
