#!/bin/bash
# pipeline.sh - a three-stage shell pipeline over mboxd, with nothing but
# mboxctl:
#
#   produce    posts N numbers to the mailbox JOBS, one message each
#   transform  `mboxctl work -j 4` runs a step for each number, four at a
#              time, which posts its result to RESULTS (exit 0 acks the
#              job; a failing step would be retried with back-off)
#   collect    receives the N results and prints them in order
#
# Each stage could run in its own shell, container or machine sharing the
# socket; here they are three processes of one script.
#
# Usage: pipeline.sh [-S SOCKET] [N]      (N: 1-1000, default 20)
# The broker is found as mboxctl finds it ($MBOX_SOCKET, or -S); set
# MBOXCTL to use another mboxctl than the one in PATH. Everything it
# creates it deletes; it gives up after 60 s.
set -eu -o pipefail

MBOXCTL=${MBOXCTL:-mboxctl}
if [ "${1:-}" = -S ]; then
	export MBOX_SOCKET=$2
	shift 2
fi
n=${1:-20}
case $n in
'' | *[!0-9]*) echo "usage: $0 [-S SOCKET] [N]" >&2; exit 2 ;;
esac
[ "$n" -ge 1 ] && [ "$n" -le 1000 ] || { echo "$0: N is 1-1000" >&2; exit 2; }

jobs=example.pipeline.$$.jobs
results=example.pipeline.$$.results
worker=

cleanup()
{
	# SIGTERM: the worker lets running steps finish, then exits 0.
	if [ -n "$worker" ]; then
		kill -TERM "$worker" 2>/dev/null || true
		wait "$worker" 2>/dev/null || true
	fi
	"$MBOXCTL" rm --force "$jobs" 2>/dev/null || true
	"$MBOXCTL" rm --force "$results" 2>/dev/null || true
}
trap cleanup EXIT

"$MBOXCTL" create "$jobs"
"$MBOXCTL" create "$results"

# Stage 1, produce: one message per line, posted in batches.
seq 1 "$n" | "$MBOXCTL" post "$jobs" --lines >/dev/null

# Stage 2, transform: the step reads the job on stdin; MBOX_ID and the
# other MBOX_* variables describe it. It posts "N squared is N*N".
# shellcheck disable=SC2016
"$MBOXCTL" work "$jobs" -j 4 -- bash -c '
	x=$(cat)
	"$1" post "$2" "$x squared is $((x * x))" >/dev/null
' step "$MBOXCTL" "$results" &
worker=$!

# Stage 3, collect: the n results, whatever order the workers made.
"$MBOXCTL" recv "$results" -n "$n" --wait 60 | sort -n >"${TMPDIR:-/tmp}/pipeline.$$"
got=$(wc -l <"${TMPDIR:-/tmp}/pipeline.$$")
cat "${TMPDIR:-/tmp}/pipeline.$$"
rm -f "${TMPDIR:-/tmp}/pipeline.$$"
if [ "$got" -ne "$n" ]; then
	echo "$0: collected $got of $n results" >&2
	exit 1
fi
echo "pipeline: $n jobs produced, transformed by 4 workers, collected" >&2
