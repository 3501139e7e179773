#!/bin/bash
# completion.sh - the bash completion of mboxctl (contrib/bash-completion/
# mboxctl): verbs, each verb's options, mailbox names asked of a real
# broker on the socket given with -S/--socket, and file names.
#
# The completion function is called as bash calls it, with COMP_WORDS and
# COMP_CWORD set by hand; no interactive shell is needed.

. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

# shellcheck source=contrib/bash-completion/mboxctl
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/contrib/bash-completion/mboxctl"

# complete WORD...: complete the last WORD (may be ''), as bash would
# with COMP_WORDBREAKS splitting '=' off; sets REPLY to the sorted
# candidates on one line.
complete_line()
{
	COMP_WORDS=("$MBOXCTL" "$@")
	COMP_CWORD=$#
	COMPREPLY=()
	# The completion function is meant for interactive shells: no -eu.
	set +eu
	_mboxctl
	set -eu
	REPLY=$(printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ')
	REPLY=${REPLY% }
}

# expect_has WHAT WORD...: every WORD is among the candidates.
expect_has()
{
	local what=$1 w
	shift
	for w in "$@"; do
		case " $REPLY " in
		*" $w "*) ;;
		*) fail "$what: '$w' missing from '$REPLY'" ;;
		esac
	done
}

start_broker
mbctl create jobs >/dev/null
mbctl create jobs.eu >/dev/null
mbctl create audit >/dev/null

# Verbs.
complete_line ''
expect_has "verbs" post recv ls chmod chown create help
expect_has "verbs" stat clients stats watch work call serve export import
complete_line p
assert_eq "pause peek ping post publish purge" "$REPLY" "verbs starting with p"
complete_line st
assert_eq "stat stats" "$REPLY" "verbs starting with st"
complete_line help wa
assert_eq "watch" "$REPLY" "help VERB (new verb)"

# Global and per-verb options.
complete_line -
expect_has "global options" -S --socket --help --version
complete_line -S "$SOCK" recv jobs --
expect_has "recv options" --count --wait --no-ack --json --raw --socket
complete_line post jobs --d
assert_eq "--dedup --delay" "$REPLY" "post options starting with --d"
complete_line subscribe jobs --ex
assert_eq "--exclusive" "$REPLY" "subscribe --ex"
complete_line create jobs --te
assert_eq "--temp" "$REPLY" "create --temp"
complete_line set jobs --te
assert_eq "" "$REPLY" "set has no --temp"
complete_line work jobs -
expect_has "work options" -j --jobs --max-deliveries --reject-exit --lease \
	--once --wait --handoff-exec --socket
complete_line call jobs --t
assert_eq "--timeout" "$REPLY" "call --t"
complete_line serve jobs --
expect_has "serve options" --jobs --lease --help
complete_line stats --
expect_has "stats options" --json --socket
complete_line watch -
expect_has "watch options" -i --interval -n --count
complete_line export jobs --
expect_has "export options" --dead --output
complete_line import jobs --
expect_has "import options" --input --no-meta

# -j is --jobs (takes N) for work and serve, --json (takes nothing) for
# the others; -i is --interval for watch, --input (a file) for import.
complete_line -S "$SOCK" work -j ''
assert_eq "" "$REPLY" "work -j N: no mailbox names for N"
complete_line -S "$SOCK" work -j 4 ''
assert_eq "audit jobs jobs.eu" "$REPLY" "work -j 4 MAILBOX"
complete_line -S "$SOCK" serve --jobs = 2 j
assert_eq "jobs jobs.eu" "$REPLY" "serve --jobs=2 MAILBOX"
complete_line -S "$SOCK" stat -j ''
assert_eq "audit jobs jobs.eu" "$REPLY" "stat -j MAILBOX"
complete_line -S "$SOCK" work jobs -j 2 ''
assert_eq "--" "$REPLY" "work: '--' before CMD"
complete_line -S "$SOCK" work jobs -j 2 -- prin
expect_has "work CMD (a command name)" printf
complete_line -S "$SOCK" watch -i ''
assert_eq "" "$REPLY" "watch -i SECS is no file"
complete_line -S "$SOCK" call jobs --timeout f
assert_eq "forever" "$REPLY" "call --timeout"

# Mailbox names from the broker, on the socket of -S, --socket, --socket=.
complete_line -S "$SOCK" recv ''
assert_eq "audit jobs jobs.eu" "$REPLY" "mailboxes after -S"
complete_line --socket "$SOCK" peek j
assert_eq "jobs jobs.eu" "$REPLY" "mailboxes after --socket"
complete_line --socket = "$SOCK" rm a
assert_eq "audit" "$REPLY" "mailboxes after --socket=PATH"
MBOX_SOCKET=$SOCK complete_line chmod ''
assert_eq "audit jobs jobs.eu" "$REPLY" "mailboxes on \$MBOX_SOCKET"

# Only the first argument is a mailbox; then what the verb takes.
complete_line -S "$SOCK" chmod jobs 064
assert_eq "0640 0644" "$REPLY" "chmod modes"
complete_line -S "$SOCK" post jobs hello ''
assert_eq "" "$REPLY" "post DATA"
complete_line -S "$SOCK" set jobs max_
assert_eq "max_bytes= max_deliveries= max_msgs=" "$REPLY" "set keys"
complete_line -S "$SOCK" recv jobs --count ''
assert_eq "" "$REPLY" "the argument of --count"
complete_line help re
assert_eq "recv resume" "$REPLY" "help VERB"

# No broker on the socket: no mailbox names, quickly, and no noise.
complete_line -S "$T_DIR/none.sock" recv ''
assert_eq "" "$REPLY" "mailboxes without a broker"

# File names: the socket, and after a redirection.
: >"$T_DIR/payload.bin"
complete_line -S "$T_DIR/pay"
assert_eq "$T_DIR/payload.bin" "$REPLY" "file name after -S"
complete_line -S "$SOCK" post jobs '<' "$T_DIR/pay"
assert_eq "$T_DIR/payload.bin" "$REPLY" "file name after <"
complete_line -S "$SOCK" export jobs -o "$T_DIR/pay"
assert_eq "$T_DIR/payload.bin" "$REPLY" "file name after export -o"
complete_line -S "$SOCK" export jobs --output = "$T_DIR/pay"
assert_eq "$T_DIR/payload.bin" "$REPLY" "file name after export --output="
complete_line -S "$SOCK" import jobs -i "$T_DIR/pay"
assert_eq "$T_DIR/payload.bin" "$REPLY" "file name after import -i"
complete_line -S "$SOCK" import jobs --input "$T_DIR/pay"
assert_eq "$T_DIR/payload.bin" "$REPLY" "file name after import --input"
complete_line -S "$SOCK" work jobs -- cat "$T_DIR/pay"
assert_eq "$T_DIR/payload.bin" "$REPLY" "file name as CMD's argument"

stop_broker
note "ok"
