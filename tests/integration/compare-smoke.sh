#!/bin/bash
# compare-smoke.sh - contrib/bench/compare.sh still runs: with tiny counts
# (--quick) against the peers installed here (skipped unless beanstalkd,
# redis-server and nats-server all are; it never installs them), it must
# exit 0, print the table with a figure in every peer's pipeline cell, stop
# every server it started (the pids of its "started NAME pid N" lines) and
# remove its temporary directories. No timing is checked.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

TOP_SRCDIR=${TOP_SRCDIR:-$(dirname "$0")/../..}
COMPARE=$TOP_SRCDIR/contrib/bench/compare.sh
[ -f "$COMPARE" ] || fail "$COMPARE is missing"
[ -x "$TOP_BUILDDIR/tests/bench/peer-bench" ] || fail "peer-bench is not built"

# The servers, where Debian puts them (nats-server in /usr/sbin, often
# not in PATH).
for prog in beanstalkd redis-server nats-server; do
	if ! PATH=$PATH:/usr/sbin:/usr/local/sbin command -v "$prog" >/dev/null; then
		note "SKIP: $prog is not installed (compare.sh would install it)"
		exit 77
	fi
done

# Its temporary directories go under T_DIR, which the trap removes anyway.
mkdir "$T_DIR/tmp"
expect_rc 0 "compare.sh --quick" env TMPDIR="$T_DIR/tmp" \
	timeout 100 bash "$COMPARE" --quick --no-install \
	--builddir "$TOP_BUILDDIR"
cp "$T_DIR/rc.out" "$T_DIR/table"
cp "$T_DIR/rc.err" "$T_DIR/started"

# The header names the columns; the pipeline row has a number in each
# peer's column (mboxd's comes from mbox-bench, tested by bench-smoke.sh).
python3 - "$T_DIR/table" <<'EOF' || fail "bad table: $(cat "$T_DIR/table")"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
names = {"mboxd", "beanstalkd", "redis", "nats"}
head = next(l for l in lines if l.split() and set(l.split()) <= names)
cols = head.split()
for peer in ("beanstalkd", "redis", "nats"):
    if peer not in cols:
        sys.exit("no %s column in %r" % (peer, head))
row = next(l for l in lines if l.startswith("pipeline msgs/s"))
cells = row.split()[-len(cols):]
for peer in ("beanstalkd", "redis", "nats"):
    cell = cells[cols.index(peer)]
    if not re.fullmatch(r"[0-9][0-9,]*(\.[0-9]+)?", cell):
        sys.exit("%s pipeline cell is %r in %r" % (peer, cell, row))
for want in ("ratios (issue 7):", "durability:", "date: "):
    if not any(l.startswith(want) for l in lines):
        sys.exit("no %r line" % want)
EOF

# Every server it started was stopped: three peers, two servers each.
mapfile -t pids < <(sed -n 's/^compare\.sh: started [a-z]* pid \([0-9]*\) .*$/\1/p' \
	"$T_DIR/started")
assert_eq 6 "${#pids[@]}" "servers reported started"
left=()
for pid in "${pids[@]}"; do
	# The trap stops those left behind (by pid) when the test fails.
	alive "$pid" && left+=("$pid") && track_pid "$pid"
done
[ "${#left[@]}" -eq 0 ] ||
	fail "servers still running after compare.sh: ${left[*]}: $(cat "$T_DIR/started")"
files=$(find "$T_DIR/tmp" -mindepth 1 | head -n 3)
[ -z "$files" ] || fail "compare.sh left files behind: $files"
note "$(grep '^pipeline' "$T_DIR/table")"
