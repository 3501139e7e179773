#!/usr/bin/env bash
# corpus-frame.sh - run fuzz-frame once over every seed of tests/fuzz/corpus-frame/
# (a regression suite: each seed, and each crash input added there, must
# run clean). Works with the standalone and the libFuzzer build alike:
# both run the files named on the command line once each.
set -eu -o pipefail
TOP_BUILDDIR=${TOP_BUILDDIR:-$PWD}
TOP_SRCDIR=${TOP_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
corpus=$TOP_SRCDIR/tests/fuzz/corpus-frame
shopt -s nullglob
seeds=("$corpus"/*)
if [ "${#seeds[@]}" -eq 0 ]; then
	echo "FAIL: no seeds in $corpus" >&2
	exit 1
fi
exec "$TOP_BUILDDIR/tests/fuzz/fuzz-frame" "${seeds[@]}"
