# shellcheck shell=bash
# lib.sh - shared helpers of the integration tests (source it, do not run it).
#
# Each test gets a private directory (T_DIR) holding the broker's socket
# (SOCK), database (DB) and log (T_DIR/mboxd.log). Every process a test
# starts in the background is registered with track_pid; the EXIT trap kills
# those that are still running, by pid and nothing else, waits for them,
# prints the broker's log when the test failed, and removes T_DIR.
#
# Programs come from the environment 'make check' sets up (MBOXD, MBOXCTL,
# TOP_BUILDDIR, TOP_SRCDIR); by hand, run a test from the top of the build
# tree: bash /path/to/src/tests/integration/roundtrip.sh
#
# Every wait is a loop bounded in count and time; every mboxctl call made
# through mbctl is bounded by 'timeout'.

set -eu -o pipefail

TOP_BUILDDIR=${TOP_BUILDDIR:-$PWD}
MBOXD=${MBOXD:-$TOP_BUILDDIR/mboxd}
MBOXCTL=${MBOXCTL:-$TOP_BUILDDIR/mboxctl}
T_NAME=$(basename "$0" .sh)

# Optional: MBOXD_WRAPPER='valgrind --error-exitcode=99 -q' runs the broker
# under a tool. Word splitting of the wrapper is intended.
MBOXD_WRAPPER=${MBOXD_WRAPPER:-}

# Longest a single mboxctl call may take before the test calls it hung.
T_CMD_TIMEOUT=${T_CMD_TIMEOUT:-60}

fail()
{
	echo "FAIL: $T_NAME: $*" >&2
	exit 1
}

note()
{
	echo "# $T_NAME: $*"
}

# assert_eq EXPECTED GOT WHAT
assert_eq()
{
	if [ "$1" != "$2" ]; then
		fail "$3: expected '$1', got '$2'"
	fi
}

for t_prog in "$MBOXD" "$MBOXCTL"; do
	[ -x "$t_prog" ] || fail "$t_prog is not built (run through 'make check')"
done
unset t_prog

# The socket path must fit in sun_path (108 bytes): fall back to /tmp when
# TMPDIR is deep.
t_tmp=${TMPDIR:-/tmp}
[ "${#t_tmp}" -le 60 ] || t_tmp=/tmp
T_DIR=$(mktemp -d "$t_tmp/mbox-$T_NAME.XXXXXXXX")
unset t_tmp
SOCK=$T_DIR/mbox.sock
DB=$T_DIR/mbox.db
BROKER_PID=
T_PIDS=()
# Paths outside T_DIR a test had to make (a fixed path like
# /tmp/mbox-$UID), removed at exit like T_DIR.
T_EXTRA_PATHS=()

track_pid()
{
	T_PIDS+=("$1")
}

untrack_pid()
{
	local p keep=()
	for p in "${T_PIDS[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	T_PIDS=("${keep[@]}")
}

# alive PID: the process exists and is not a zombie.
alive()
{
	local state
	[ -r "/proc/$1/stat" ] || return 1
	state=$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$1/stat" 2>/dev/null) ||
		return 1
	[ -n "$state" ] && [ "$state" != Z ]
}

# wait_dead PID TENTHS: wait up to TENTHS/10 s for PID to end (not reaped).
wait_dead()
{
	local i
	for ((i = 0; i < $2; i++)); do
		alive "$1" || return 0
		sleep 0.1
	done
	! alive "$1"
}

t_cleanup()
{
	local rc=$? p
	set +e
	for p in "${T_PIDS[@]}"; do
		alive "$p" && kill -TERM "$p" 2>/dev/null
	done
	for p in "${T_PIDS[@]}"; do
		if ! wait_dead "$p" 50; then
			echo "# $T_NAME: pid $p ignored SIGTERM, killing it" >&2
			kill -KILL "$p" 2>/dev/null
		fi
		wait "$p" 2>/dev/null
	done
	if [ "$rc" -ne 0 ] && [ -s "$T_DIR/mboxd.log" ]; then
		echo "# --- mboxd log (last 50 lines) ---" >&2
		tail -n 50 "$T_DIR/mboxd.log" >&2
	fi
	for p in "${T_EXTRA_PATHS[@]}"; do
		rm -rf "$p"
	done
	rm -rf "$T_DIR"
	exit "$rc"
}
trap t_cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# mbctl ARGS...: mboxctl on the test's socket, bounded in time.
mbctl()
{
	timeout "$T_CMD_TIMEOUT" "$MBOXCTL" -S "$SOCK" "$@"
}

# expect_rc WANT WHAT CMD...: run CMD and require exit status WANT; its
# stdout and stderr are kept in T_DIR/rc.out and T_DIR/rc.err.
expect_rc()
{
	local want=$1 what=$2 rc=0
	shift 2
	"$@" >"$T_DIR/rc.out" 2>"$T_DIR/rc.err" || rc=$?
	if [ "$rc" -ne "$want" ]; then
		echo "# stdout:" >&2
		head -c 2000 "$T_DIR/rc.out" >&2
		echo "# stderr:" >&2
		head -c 2000 "$T_DIR/rc.err" >&2
		fail "$what: '$*' exited $rc, expected $want"
	fi
}

# start_broker [EXTRA MBOXD ARGS...]: start mboxd on SOCK and DB with
# --sync $BROKER_SYNC (default full); later arguments override earlier
# ones. Returns once the broker answers ping; fails after ~10 s.
start_broker()
{
	local i
	[ -z "$BROKER_PID" ] || fail "start_broker: broker $BROKER_PID still running"
	echo "# --- start: mboxd $* ---" >>"$T_DIR/mboxd.log"
	# shellcheck disable=SC2086
	$MBOXD_WRAPPER "$MBOXD" --config /dev/null --foreground --socket "$SOCK" --db "$DB" \
		--sync "${BROKER_SYNC:-full}" "$@" </dev/null \
		>>"$T_DIR/mboxd.log" 2>&1 &
	BROKER_PID=$!
	track_pid "$BROKER_PID"
	for ((i = 0; i < 200; i++)); do
		if timeout 5 "$MBOXCTL" -S "$SOCK" ping >/dev/null 2>&1; then
			return 0
		fi
		if ! alive "$BROKER_PID"; then
			local rc=0
			wait "$BROKER_PID" || rc=$?
			untrack_pid "$BROKER_PID"
			BROKER_PID=
			fail "mboxd exited with status $rc during start-up"
		fi
		sleep 0.05
	done
	fail "mboxd (pid $BROKER_PID) did not answer ping on $SOCK within 10 s"
}

# stop_broker: SIGTERM, wait (at most 20 s), require exit status 0.
stop_broker()
{
	local rc=0 pid=$BROKER_PID
	[ -n "$pid" ] || fail "stop_broker: no broker running"
	kill -TERM "$pid" || fail "stop_broker: cannot signal mboxd $pid"
	wait_dead "$pid" 200 || fail "mboxd $pid still running 20 s after SIGTERM"
	wait "$pid" || rc=$?
	untrack_pid "$pid"
	BROKER_PID=
	assert_eq 0 "$rc" "mboxd exit status after SIGTERM"
}

# kill9_broker: SIGKILL the broker and reap it.
kill9_broker()
{
	local pid=$BROKER_PID
	[ -n "$pid" ] || fail "kill9_broker: no broker running"
	alive "$pid" || fail "kill9_broker: mboxd $pid had already died"
	kill9_pid "$pid"
	BROKER_PID=
}

# kill9_pid PID: SIGKILL a process this test started and reap it, without
# the shell's "Killed" job notice.
kill9_pid()
{
	{
		kill -KILL "$1"
		wait "$1"
	} 2>/dev/null || true
	untrack_pid "$1"
}

# driver NAME: path of a C test driver built in the build tree.
driver()
{
	local p=$TOP_BUILDDIR/tests/integration/$1
	[ -x "$p" ] || fail "test driver $p is not built (run through 'make check')"
	printf '%s\n' "$p"
}

# wait_lines FILE N TENTHS: wait until FILE has at least N lines.
wait_lines()
{
	local i
	for ((i = 0; i < $3; i++)); do
		if [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ]; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# words < FILE: the lines of FILE joined by single spaces.
words()
{
	paste -sd ' ' -
}

# json_num KEY < LINE: the integer value of the first "KEY": in a JSON line.
# Enough for mboxctl's compact one-object-per-line output.
json_num()
{
	sed -n 's/^.*"'"$1"'":\(-\{0,1\}[0-9][0-9]*\).*$/\1/p' | head -n 1
}

# json_str KEY < LINE: the value of "KEY":"..." (no unescaping).
json_str()
{
	sed -n 's/^.*"'"$1"'":"\([^"\\]*\(\\.[^"\\]*\)*\)".*$/\1/p' | head -n 1
}

# check_json_lines FILE: every line of FILE is one JSON object.
check_json_lines()
{
	local line n=0
	if command -v python3 >/dev/null 2>&1; then
		python3 - "$1" <<'EOF' || fail "$1: not valid JSON Lines (see above)"
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
        line = line.rstrip("\n")
        try:
            obj = json.loads(line)
        except ValueError as e:
            sys.exit("line %d: %s: %r" % (n, e, line[:200]))
        if not isinstance(obj, dict):
            sys.exit("line %d is not an object: %r" % (n, line[:200]))
EOF
	else
		while IFS= read -r line; do
			n=$((n + 1))
			case $line in
			'{'*'}') ;;
			*) fail "$1 line $n is not a JSON object: ${line:0:200}" ;;
			esac
		done <"$1"
	fi
}

# ---- Mailbox counters, times, and the tests that hold or drive messages ----

# ls_num MAILBOX FIELD: a counter of MAILBOX (ready, leased, delayed, dead)
# from ls --json.
ls_num()
{
	mbctl ls --json | grep -F "\"name\":\"$1\"" | json_num "$2"
}

# wait_num MAILBOX FIELD VALUE TENTHS: wait until the counter has VALUE;
# returns 1 after TENTHS/10 s without it.
wait_num()
{
	local i
	for ((i = 0; i < $4; i++)); do
		[ "$(ls_num "$1" "$2")" = "$3" ] && return 0
		sleep 0.1
	done
	return 1
}

# now_ms: the wall clock in milliseconds, to time what a test waits for.
now_ms()
{
	echo $(($(date +%s%N) / 1000000))
}

# start_holder N CMD...: run CMD, a driver that prints the id of each message
# it takes and then holds them, in the background: ids in T_DIR/held,
# stderr in T_DIR/holder.err, pid in $holder (tracked). Fails unless N ids
# come within 10 s.
start_holder()
{
	local n=$1
	shift
	# Emptied first, so no earlier holder's ids are counted.
	: >"$T_DIR/held"
	"$@" >"$T_DIR/held" 2>"$T_DIR/holder.err" &
	holder=$!
	track_pid "$holder"
	wait_lines "$T_DIR/held" "$n" 100 ||
		fail "holder did not get $n messages: $(cat "$T_DIR/holder.err")"
}

# client MODE ARGS...: run client-driver ($CLIENT, which the test sets with
# driver) to its end, output in T_DIR/client.out; it must exit 0.
client()
{
	local rc=0
	timeout 60 "$CLIENT" "$SOCK" "$@" >"$T_DIR/client.out" \
		2>"$T_DIR/client.err" || rc=$?
	if [ "$rc" -ne 0 ]; then
		echo "# client-driver $* printed:" >&2
		cat "$T_DIR/client.out" >&2
		fail "client-driver $* exited $rc: $(cat "$T_DIR/client.err")"
	fi
}

# hold MAILBOX N LEASE_MS [GOFILE]: client-driver ($CLIENT) holding N
# messages of MAILBOX in the background, through start_holder; with GOFILE
# it acks them once that file exists.
hold()
{
	start_holder "$2" "$CLIENT" "$SOCK" hold "$@"
}

# ---- Helpers of the tests that drive subscriber-driver ($SUB) ----

# post_n MAILBOX N: post payloads MAILBOX-1..MAILBOX-N, ids to T_DIR/MAILBOX.ids.
post_n()
{
	seq 1 "$2" | sed "s/^/$1-/" | mbctl post "$1" --lines >"$T_DIR/$1.ids" ||
		fail "posting $2 messages to $1 failed"
	assert_eq "$2" "$(wc -l <"$T_DIR/$1.ids")" "ids printed by post --lines to $1"
}

# start_ctl NAME VERB ARGS...: a long-running mboxctl VERB (work, serve)
# in the background, stdout in T_DIR/NAME.out, stderr in T_DIR/NAME.err,
# pid in CTL_PID (tracked).
start_ctl()
{
	local name=$1
	shift
	"$MBOXCTL" -S "$SOCK" "$@" >"$T_DIR/$name.out" 2>"$T_DIR/$name.err" &
	CTL_PID=$!
	track_pid "$CTL_PID"
}

# end_ctl PID NAME: SIGTERM it, require exit 0 within 15 s.
end_ctl()
{
	local rc=0
	kill -TERM "$1"
	wait_dead "$1" 150 || fail "$2: still running 15 s after SIGTERM"
	wait "$1" || rc=$?
	untrack_pid "$1"
	assert_eq 0 "$rc" "$2: exit status after SIGTERM ($(cat "$T_DIR/$2.err"))"
}

# expected MAILBOX FIRST LAST DELIVERIES: the "ID PAYLOAD DELIVERIES" lines
# of messages FIRST..LAST (1-based post order) of MAILBOX.
expected()
{
	local i
	for ((i = $2; i <= $3; i++)); do
		echo "$(sed -n "${i}p" "$T_DIR/$1.ids") $1-$i $4"
	done
}

# start_sub NAME ARGS...: subscriber-driver in the background, its stdout
# in T_DIR/NAME.out, stderr in T_DIR/NAME.err; its pid in SUB_PID.
start_sub()
{
	local name=$1
	shift
	"$SUB" -S "$SOCK" "$@" >"$T_DIR/$name.out" 2>"$T_DIR/$name.err" &
	SUB_PID=$!
	SUB_PIDS[$name]=$SUB_PID
	track_pid "$SUB_PID"
}

# wait_grep FILE REGEX TENTHS
wait_grep()
{
	local i
	for ((i = 0; i < $3; i++)); do
		grep -qE "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# wait_out NAME REGEX: the driver NAME (pid SUB_PIDS[NAME]) printed a line
# matching REGEX; fails at once if it died first, or after 10 s.
declare -A SUB_PIDS
wait_out()
{
	local i
	for ((i = 0; i < 100; i++)); do
		grep -qE "$2" "$T_DIR/$1.out" 2>/dev/null && return 0
		alive "${SUB_PIDS[$1]}" || break
		sleep 0.1
	done
	grep -qE "$2" "$T_DIR/$1.out" 2>/dev/null ||
		fail "$1 did not print '$2': $(cat "$T_DIR/$1.err")"
}

# wait_said NAME WORD N: wait (at most 5 s) until the driver NAME printed
# N lines starting with WORD. It never fails: the caller checks them.
wait_said()
{
	local i
	for ((i = 0; i < 50; i++)); do
		[ "$(grep -c "^$2 " "$T_DIR/$1.out")" -ge "$3" ] && return 0
		sleep 0.1
	done
	return 0
}

# wait_holds NAME N: wait_said NAME hold N.
wait_holds()
{
	wait_said "$1" hold "$2"
}

# wait_subscribed NAME: the driver NAME has subscribed.
wait_subscribed()
{
	wait_out "$1" '^subscribed '
}

# finish PID NAME: wait (at most 15 s) for a driver to exit 0.
finish()
{
	local rc=0
	wait_dead "$1" 150 || fail "$2 still running after 15 s: $(cat "$T_DIR/$2.err")"
	wait "$1" || rc=$?
	untrack_pid "$1"
	[ "$rc" -eq 0 ] || fail "$2 exited $rc: $(cat "$T_DIR/$2.err")"
}

# stop PID: SIGTERM a driver left running and reap it.
stop()
{
	kill -TERM "$1" 2>/dev/null || true
	wait_dead "$1" 50 || kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	untrack_pid "$1"
}
