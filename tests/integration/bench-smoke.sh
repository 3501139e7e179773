#!/bin/bash
# bench-smoke.sh - the benchmark still runs: a short mbox-bench against
# brokers it starts itself (every workload, tiny counts), and against ours
# with --socket (every workload again, then push alone with other
# subscriber counts, windows and batched acks, then the pipeline and
# backlog with consumers that recv, then the workloads whose
# figures need the broker's pid, which must then be null). Its JSON output
# must be one object with a number for every figure; no timing is checked.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

BENCH=$TOP_BUILDDIR/tests/bench/mbox-bench
[ -x "$BENCH" ] || fail "$BENCH is not built"

# Tiny counts for every workload: seconds, not minutes.
SMALL=(--messages 300 --count 50 --backlog 2000 --churn 5000 --live 500
	--idle-conns 50 --active 20 --cli-lines 3000 --scale 1,4)

# has_number FILE KEY...: each "KEY": is followed by a number in FILE.
has_number()
{
	local file=$1 key
	shift
	for key in "$@"; do
		grep -Eq "\"$key\":-?[0-9]" "$file" ||
			fail "no $key figure in $(cat "$file")"
	done
}

# Its brokers' directories go in a TMPDIR of its own, to be found empty
# after: every file a broker leaves (its disk reserve too) is removed.
mkdir "$T_DIR/tmp"
expect_rc 0 "mbox-bench with its own broker" env TMPDIR="$T_DIR/tmp" \
	timeout 120 "$BENCH" \
	--mboxd "$MBOXD" --mboxctl "$MBOXCTL" --sync off --producers 2 \
	"${SMALL[@]}" --json
cp "$T_DIR/rc.out" "$T_DIR/bench.json"
left=$(find "$T_DIR/tmp" -mindepth 1 | head -n 5)
[ -z "$left" ] || fail "mbox-bench left files behind: $left"
if grep -q "rmdir" "$T_DIR/rc.err"; then
	fail "mbox-bench: $(grep rmdir "$T_DIR/rc.err")"
fi
check_json_lines "$T_DIR/bench.json"
assert_eq 1 "$(wc -l <"$T_DIR/bench.json")" "mbox-bench --json lines"
has_number "$T_DIR/bench.json" rtt_median_us push_rtt_median_us \
	post_msgs_per_sec
# The push grid: 1 and 4 subscribers, windows 1 and 64, four figures.
assert_eq 4 "$(grep -o '"push":\[[^]]*\]' "$T_DIR/bench.json" |
	grep -o '"msgs_per_sec":[0-9]' | wc -l)" "push runs in the JSON"
# The figures of every target of issue 7, and their ratios.
has_number "$T_DIR/bench.json" \
	pipeline_msgs_per_sec pipeline_producers pipeline_consumers \
	pipeline_depth pipeline_consumer_window pipeline_recv_msgs_per_sec \
	sqlite_batch1_per_sec sqlite_batch64_per_sec \
	sqlite_batch1024_per_sec store_alone_batch64_per_sec \
	store_capped_batch64_per_sec store_capped_mailboxes \
	sqlite_page_size sqlite_ceiling_per_sec sqlite_ceiling_batch \
	sqlite_ceiling_page_size \
	latency_full_p50_us latency_full_p99_us latency_normal_p50_us \
	latency_normal_p99_us \
	rss_idle_kib rss_backlog_kib rss_backlog_anon_kib rss_drained_kib \
	backlog_messages backlog_msgs_per_sec empty_msgs_per_sec ready_ms \
	backlog_recv_msgs_per_sec empty_recv_msgs_per_sec \
	sqlite_empty_batch64_per_sec sqlite_backlog_batch64_per_sec \
	store_empty_batch64_per_sec store_backlog_batch64_per_sec \
	idle_conns idle_conns_rss_kib active_16_msgs_per_sec \
	active_max_msgs_per_sec active_max \
	churn_messages churn_peak_live_bytes churn_db_bytes churn_wal_bytes \
	churn_wal_busy_bytes \
	cli_post_s lib_post_s cli_recv_s lib_recv_s \
	pipeline_per_sqlite_ceiling store_alone_per_ceiling \
	pipeline_per_store_alone store_capped_per_store_alone \
	fsync_start_per_sec fsync_after_per_before \
	scale_max_per_1 scale_1_per_fsync \
	latency_normal_p50_per_seqpacket latency_full_p50_per_model \
	backlog_per_empty sqlite_backlog_per_empty active_max_per_16 \
	backlog_cost_us sqlite_backlog_cost_us backlog_cost_allowed_us \
	store_backlog_per_empty store_backlog_cost_us \
	churn_file_per_peak_live \
	cli_post_per_lib cli_recv_per_lib
# The SQLite baseline at every page size it tries.
for page in 4096 8192 16384 32768 65536; do
	grep -Eq "\"page_size\":$page,\"batch64_per_sec\":[0-9]+[.0-9]*,\"batch1024_per_sec\":[0-9]" \
		"$T_DIR/bench.json" || fail "no SQLite figures for $page-byte pages in $(cat "$T_DIR/bench.json")"
done
# Whether the disk's fsync rate held still through the run.
grep -Eq '"fsync_unsteady":(true|false)' "$T_DIR/bench.json" ||
	fail "no fsync_unsteady in $(cat "$T_DIR/bench.json")"
# One entry per --scale count.
grep -Eq '"scale":\[\{"producers":1,"msgs_per_sec":[0-9][^]]*\{"producers":4,"msgs_per_sec":[0-9]' \
	"$T_DIR/bench.json" || fail "no scale runs in $(cat "$T_DIR/bench.json")"
note "$(cat "$T_DIR/bench.json")"

start_broker
expect_rc 0 "mbox-bench --socket" timeout 120 "$BENCH" --socket "$SOCK" \
	--mboxctl "$MBOXCTL" --producers 3 "${SMALL[@]}" --messages 100 \
	--count 20
grep -q 'msgs/s' "$T_DIR/rc.out" || fail "no table from mbox-bench: $(cat "$T_DIR/rc.out")"
grep -q 'the same before the workloads' "$T_DIR/rc.out" ||
	fail "no fsync baseline from before the workloads: $(cat "$T_DIR/rc.out")"
for section in pipeline scale latency memory backlog conns churn cli; do
	grep -q "^$section (target" "$T_DIR/rc.out" ||
		fail "no $section section from mbox-bench: $(cat "$T_DIR/rc.out")"
done
expect_rc 0 "mbox-bench --workload push" timeout 120 "$BENCH" --socket "$SOCK" \
	--workload push --producers 2 --subscribers 3 --windows 1,8 \
	--ack-batch 4 --messages 120 --count 10
grep -q 'push, 3 subscribers, window 8' "$T_DIR/rc.out" ||
	fail "no push row from mbox-bench: $(cat "$T_DIR/rc.out")"
grep -q 'post -> push' "$T_DIR/rc.out" ||
	fail "no push round trip from mbox-bench: $(cat "$T_DIR/rc.out")"
# Consumers that recv: the pipeline and the backlog still run, and there
# is no second run of recv consumers to report.
expect_rc 0 "mbox-bench --consumer-window 0" timeout 120 "$BENCH" \
	--socket "$SOCK" --workload pipeline,backlog --consumer-window 0 \
	"${SMALL[@]}" --messages 100 --json
cp "$T_DIR/rc.out" "$T_DIR/recv.json"
check_json_lines "$T_DIR/recv.json"
has_number "$T_DIR/recv.json" pipeline_msgs_per_sec backlog_msgs_per_sec
grep -q '"pipeline_consumer_window":0,"pipeline_recv_msgs_per_sec":null' \
	"$T_DIR/recv.json" ||
	fail "recv consumers reported wrong: $(cat "$T_DIR/recv.json")"
grep -q '"backlog_recv_msgs_per_sec":null,"empty_recv_msgs_per_sec":null' \
	"$T_DIR/recv.json" ||
	fail "recv consumers of the backlog reported wrong: $(cat "$T_DIR/recv.json")"
# A running broker: no pid, no files of its own, so those figures are null.
expect_rc 0 "mbox-bench --socket --json" timeout 120 "$BENCH" --socket "$SOCK" \
	--workload latency,memory,backlog,churn "${SMALL[@]}" --json
cp "$T_DIR/rc.out" "$T_DIR/ext.json"
check_json_lines "$T_DIR/ext.json"
has_number "$T_DIR/ext.json" latency_full_p50_us backlog_msgs_per_sec \
	empty_msgs_per_sec churn_peak_live_bytes
for key in rss_idle_kib rss_backlog_kib ready_ms latency_normal_p50_us \
	churn_db_bytes pipeline_msgs_per_sec; do
	grep -q "\"$key\":null" "$T_DIR/ext.json" ||
		fail "$key is not null with --socket: $(cat "$T_DIR/ext.json")"
done
grep -q '"latency_full_sync":"external"' "$T_DIR/ext.json" ||
	fail "latency not marked external: $(cat "$T_DIR/ext.json")"
# It drained what it posted: its mailboxes are empty.
mbctl ls --json >"$T_DIR/ls"
check_json_lines "$T_DIR/ls"
if grep '"bench\.' "$T_DIR/ls" | grep -Eq '"(ready|leased)":[1-9]'; then
	fail "mbox-bench left messages behind: $(cat "$T_DIR/ls")"
fi
stop_broker
