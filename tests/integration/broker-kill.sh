#!/bin/bash
# broker-kill.sh - mboxd killed with SIGKILL in the middle of a stream of
# posts: after a restart on the same database, every post the broker had
# confirmed is there, byte for byte (SPEC 4). A post in flight at the kill
# may or may not be there; nothing else may appear.
#
# Three posters (poster-driver, one connection each, so that commits are
# shared) post numbered messages of random sizes, up to 300 KiB, each to its
# own mailbox and print "SEQ ID LEN HASH" only once the post was confirmed.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

POSTER=$(driver poster-driver)
SEED=$(( $$ * 7919 + $(date +%s) % 100000 ))
POSTERS=3
note "seed $SEED"

start_broker

pids=()
for ((k = 1; k <= POSTERS; k++)); do
	"$POSTER" post "$SOCK" "stream.$k" "$((SEED + k))" 1000000 \
		>"$T_DIR/confirmed.$k" 2>"$T_DIR/poster.$k.err" &
	pids+=($!)
	track_pid "$!"
done

# Let each poster get a good way into its stream, then kill the broker.
for ((k = 1; k <= POSTERS; k++)); do
	wait_lines "$T_DIR/confirmed.$k" 60 300 ||
		fail "poster $k confirmed only $(wc -l <"$T_DIR/confirmed.$k") posts in 30 s: $(cat "$T_DIR/poster.$k.err")"
done
for p in "${pids[@]}"; do
	alive "$p" || fail "a poster stopped before the broker was killed"
done
kill9_broker

# Every poster must notice that the broker is gone and stop with an error.
for ((k = 1; k <= POSTERS; k++)); do
	p=${pids[k - 1]}
	wait_dead "$p" 100 || fail "poster $k still running 10 s after the broker died"
	rc=0
	wait "$p" || rc=$?
	untrack_pid "$p"
	[ "$rc" -ne 0 ] || fail "poster $k exited 0 although the broker was killed"
	note "poster $k: $(wc -l <"$T_DIR/confirmed.$k") confirmed; it said: $(tail -n 1 "$T_DIR/poster.$k.err")"
done

# The socket file the dead broker left behind must not stop the restart.
start_broker

for ((k = 1; k <= POSTERS; k++)); do
	c=$T_DIR/confirmed.$k
	# Lines are printed whole after each confirmation; check their shape.
	grep -qvE '^[0-9]+ [0-9]+ [0-9]+ [0-9a-f]{16}$' "$c" &&
		fail "poster $k printed a malformed line: $(grep -vE '^[0-9]+ [0-9]+ [0-9]+ [0-9a-f]{16}$' "$c" | head -n 1)"

	# 1. All confirmed posts, checked through libmbox peek (nothing consumed).
	"$POSTER" verify "$SOCK" "stream.$k" <"$c" >"$T_DIR/verify.$k" 2>&1 || {
		cat "$T_DIR/verify.$k" >&2
		fail "stream.$k: confirmed posts are missing or damaged after the kill"
	}
	note "$(tail -n 1 "$T_DIR/verify.$k")"

	# 2. The same through mboxctl: receive them in order, byte for byte.
	while read -r seq id len _hash; do
		mbctl recv "stream.$k" --raw >"$T_DIR/got" ||
			fail "stream.$k: recv of seq $seq (id $id) failed"
		"$POSTER" emit "$((SEED + k))" "$seq" >"$T_DIR/want"
		cmp -s "$T_DIR/want" "$T_DIR/got" ||
			fail "stream.$k: seq $seq (id $id, $len bytes): received payload differs"
	done <"$c"

	# 3. At most the one post in flight at the kill can be left over.
	mbctl recv "stream.$k" -n 10 --wait 0.1 --json >"$T_DIR/rest" || true
	extra=$(wc -l <"$T_DIR/rest")
	[ "$extra" -le 1 ] || fail "stream.$k: $extra unexpected messages after the confirmed ones"
	if [ "$extra" -eq 1 ]; then
		note "stream.$k: the post in flight at the kill was stored too (id $(json_num id <"$T_DIR/rest"))"
	fi
done

stop_broker
