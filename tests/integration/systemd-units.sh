#!/bin/bash
# systemd-units.sh - systemd-analyze verify accepts the generated units,
# system and user, with no warning at all.
#
# The units name the installed mboxd (@sbindir@/mboxd), which verify wants
# to be executable: the copies checked here point at the freshly built one.
# Skipped (77) where systemd-analyze is not installed.
set -eu -o pipefail

TOP_BUILDDIR=${TOP_BUILDDIR:-$PWD}
MBOXD=${MBOXD:-$TOP_BUILDDIR/mboxd}
command -v systemd-analyze >/dev/null || {
	echo "# systemd-units: no systemd-analyze, skipped"
	exit 77
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/mbox-units.XXXXXXXX")
trap 'rm -rf "$dir"' EXIT

check() # MODE SRCDIR
{
	local mode=$1 src=$2 out rc=0
	mkdir -p "$dir/$mode"
	for u in mboxd.service mboxd.socket; do
		[ -f "$src/$u" ] || { echo "FAIL: $src/$u was not generated" >&2; exit 1; }
		grep -q '@[a-z]*dir@' "$src/$u" && {
			echo "FAIL: $src/$u has an unsubstituted @...@" >&2; exit 1; }
		sed -E "s|^ExecStart=[^ ]*/mboxd|ExecStart=$MBOXD|" "$src/$u" \
			>"$dir/$mode/$u"
	done
	out=$(cd "$dir/$mode" && XDG_RUNTIME_DIR=$dir \
		timeout 60 systemd-analyze "$mode" verify --man=no \
		./mboxd.socket ./mboxd.service 2>&1) || rc=$?
	if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
		echo "FAIL: systemd-analyze $mode verify (rc $rc):" >&2
		echo "$out" >&2
		exit 1
	fi
	echo "# systemd-units: $mode units verified"
}

check --system "$TOP_BUILDDIR/contrib/systemd"
check --user "$TOP_BUILDDIR/contrib/systemd/user"
