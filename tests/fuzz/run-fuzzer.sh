#!/usr/bin/env bash
# run-fuzzer.sh - run one libFuzzer target for a bounded time.
#
#   tests/fuzz/run-fuzzer.sh BUILDDIR TARGET [SECONDS]
#
# TARGET is frame or dispatch; BUILDDIR was configured with
# --enable-fuzzing CC=clang and built. The seed corpus
# tests/fuzz/corpus-TARGET/ is copied to a temporary working corpus (the
# source tree is never written), and the fuzzer runs SECONDS (default 60)
# with -timeout=10 -rss_limit_mb=2048. Exit status is non-zero on any
# crash, leak, timeout, out-of-memory or sanitizer report; the input that
# caused it is kept as ${FUZZ_ARTIFACTS:-/tmp}/fuzz-TARGET-crash-* and
# printed in hex. On success the last line is "fuzz-TARGET: N runs in S s".
set -eu -o pipefail

builddir=${1:?usage: run-fuzzer.sh BUILDDIR frame|dispatch [SECONDS]}
target=${2:?usage: run-fuzzer.sh BUILDDIR frame|dispatch [SECONDS]}
seconds=${3:-60}
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
prog=$builddir/tests/fuzz/fuzz-$target
seeds=$srcdir/tests/fuzz/corpus-$target
artifacts=${FUZZ_ARTIFACTS:-/tmp}

[ -x "$prog" ] || { echo "run-fuzzer: $prog is not built" >&2; exit 2; }
[ -d "$seeds" ] || { echo "run-fuzzer: no corpus $seeds" >&2; exit 2; }

# tmpfs when there is one: fuzz-dispatch makes a store for every input.
base=${TMPDIR:-/tmp}
[ -n "${TMPDIR:-}" ] || [ ! -w /dev/shm ] || base=/dev/shm
work=$(mktemp -d "$base/fuzz-$target.XXXXXXXX")
trap 'rm -rf "$work"' EXIT
# The target's own temporary files go there too, so that they are removed
# even when it dies.
export TMPDIR=$work
mkdir "$work/corpus"
cp "$seeds"/* "$work/corpus/"
log=$work/log

# UBSan aborts already (-fno-sanitize-recover); the stack helps the report.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
"$prog" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
	-print_final_stats=1 -artifact_prefix="$artifacts/fuzz-$target-" \
	"$work/corpus" >"$log" 2>&1 || status=$?

runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" | tail -n 1)
# Any sanitizer report fails the run, even one that did not end it.
if [ "$status" -ne 0 ] || [ -z "$runs" ] ||
	grep -qE '^(==[0-9]+==ERROR|SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer)|runtime error:' "$log"; then
	echo "run-fuzzer: fuzz-$target FAILED (exit status $status)" >&2
	grep -vE '^(#[0-9]+|"|INFO:)' "$log" | tail -n 80 >&2
	for f in "$artifacts/fuzz-$target-"*; do
		[ -f "$f" ] || continue
		echo "--- input $f:" >&2
		od -A d -t x1 "$f" | head -n 40 >&2
	done
	exit 1
fi
echo "fuzz-$target: $runs"
