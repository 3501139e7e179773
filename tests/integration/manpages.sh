#!/bin/bash
# manpages.sh - every public function of <mbox.h> has a manual page
# (SPEC 8: a page per function group): its group's page (doc/NAME.3),
# which names it under NAME and shows it in the SYNOPSIS, or a link to
# one (MAN3_LINKS in doc/Makemodule.am, installed as a .so page); and
# every page renders without groff warnings where groff is installed.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"
SRC=${TOP_SRCDIR:-$(dirname "$0")/../..}

funcs=$(grep -o '\bmbox_[a-z_]*(' "$SRC/include/mbox.h" | tr -d '(' | sort -u)
[ "$(wc -w <<<"$funcs")" -ge 60 ] || fail "found only $(wc -w <<<"$funcs") functions in mbox.h"
links=$(sed -n '/^MAN3_LINKS/,/^$/p' "$SRC/doc/Makemodule.am" |
	grep -o 'mbox_[a-z_]*:mbox_[a-z_]*')
n=0
for f in $funcs; do
	page=$f
	l=$(grep "^$f:" <<<"$links" || true)
	[ -z "$l" ] || page=${l#*:}
	[ -f "$SRC/doc/$page.3" ] || fail "$f: no page doc/$page.3"
	grep -q "doc/$page\.3" "$SRC/doc/Makemodule.am" ||
		fail "$f: doc/$page.3 is not installed"
	sed -n '/^\.SH NAME/{n;p}' "$SRC/doc/$page.3" | grep -qw "$f" ||
		fail "$f: not under NAME in doc/$page.3"
	case $f in
	mbox_msg_*) ;; # the accessors are listed in the description
	*) sed -n '/^\.SH SYNOPSIS/,/^\.SH DESCRIPTION/p' "$SRC/doc/$page.3" |
		grep -q "$f(" || fail "$f: not in the SYNOPSIS of doc/$page.3" ;;
	esac
	n=$((n + 1))
done
# No link to a page that does not exist, none for a function that is gone.
for l in $links; do
	grep -qx "${l%%:*}" <<<"$funcs" || fail "MAN3_LINKS names ${l%%:*}, not in mbox.h"
	[ -f "$SRC/doc/${l#*:}.3" ] || fail "MAN3_LINKS points at a missing doc/${l#*:}.3"
done
note "$n functions, each on its group's page"

if command -v groff >/dev/null 2>&1; then
	for p in "$SRC"/doc/*.[1-8]; do
		groff -man -Tutf8 -ww "$p" >/dev/null 2>"$T_DIR/groff.err"
		[ ! -s "$T_DIR/groff.err" ] ||
			fail "groff warns about $p: $(head -n 3 "$T_DIR/groff.err")"
	done
	note "every page renders without groff warnings"
else
	note "SKIP the rendering check: no groff"
fi
