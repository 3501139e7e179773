#!/bin/bash
# rpc.sh - a synchronous call from one shell into a service run by another
# shell (or another container sharing the broker's socket):
#
#   server shell:  rpc.sh [-S SOCKET] server
#                  mboxctl serve answers each request on the mailbox
#                  example.upper with the output of a command (here: the
#                  request upper-cased); a command that fails answers with
#                  an error reply carrying its stderr
#   client shell:  rpc.sh [-S SOCKET] client TEXT
#                  mboxctl call prints the reply; exit 1 and the server's
#                  error text on an error reply, exit 3 if nobody answers
#   both at once:  rpc.sh [-S SOCKET]
#                  starts the server, makes a few calls, stops it
#
# The broker is found as mboxctl finds it ($MBOX_SOCKET, or -S); set
# MBOXCTL to use another mboxctl than the one in PATH.
set -eu -o pipefail

MBOXCTL=${MBOXCTL:-mboxctl}
if [ "${1:-}" = -S ]; then
	export MBOX_SOCKET=$2
	shift 2
fi
svc=${RPC_MAILBOX:-example.upper}

server()
{
	# Create the service mailbox unless it is there; mode 0622 lets
	# callers of any uid post requests.
	"$MBOXCTL" create "$svc" --mode 0622 2>/dev/null || true
	# -j 2: two requests at once. SIGTERM answers the running ones and
	# exits 0.
	# shellcheck disable=SC2016
	exec "$MBOXCTL" serve "$svc" -j 2 -- bash -c '
		in=$(cat)
		if [ -z "$in" ]; then
			echo "empty request: send some text" >&2
			exit 2
		fi
		printf "%s" "$in" | tr "[:lower:]" "[:upper:]"
	'
}

client()
{
	"$MBOXCTL" call "$svc" "$1" --timeout 10
}

case ${1:-demo} in
server)
	server
	;;
client)
	[ $# -eq 2 ] || { echo "usage: $0 [-S SOCKET] client TEXT" >&2; exit 2; }
	client "$2"
	;;
demo)
	svc=example.upper.$$
	server &
	srv=$!
	trap 'kill -TERM $srv 2>/dev/null; wait $srv 2>/dev/null; "$MBOXCTL" rm --force "$svc" 2>/dev/null || true' EXIT
	# The server may still be starting: the request waits in the mailbox
	# (created by the first call's post if need be), the call waits for
	# the reply.
	for text in "hello, world" "mailboxes all the way down"; do
		printf 'call %s -> ' "$text"
		client "$text"
		echo
	done
	rc=0
	printf 'call (empty) -> ' >&2
	client "" || rc=$?
	echo "exit status $rc" >&2
	[ "$rc" -eq 1 ]
	;;
*)
	echo "usage: $0 [-S SOCKET] [server | client TEXT]" >&2
	exit 2
	;;
esac
