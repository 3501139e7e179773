#!/bin/bash
# edge.sh - the corners review found, driven by tests/integration/edge.py
# at the protocol level: a claimer that hangs up (the broker crashed),
# clients closed while the broker delivers to them, an exclusive
# subscriber that unsubscribes, DELETE amid leases (and the ENDED pushes
# it sends, or not when it is rolled back), temporary mailboxes,
# exclusive fail-over. Afterwards the broker must still be alive, answer,
# and stop cleanly.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

command -v python3 >/dev/null || fail "python3 is needed (apt-get install python3)"
start_broker
timeout 60 python3 "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/edge.py" "$SOCK" ||
	fail "edge.py failed"
alive "$BROKER_PID" || fail "mboxd died during the scenarios"
mbctl ping >/dev/null || fail "mboxd does not answer ping after the scenarios"
stop_broker

# A DELETE rolled back with its group commit: a store that fills up.
DB=$T_DIR/full.db
start_broker --max-store-size 1048576
MBOXD_PID=$BROKER_PID timeout 60 python3 \
	"${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/edge.py" \
	"$SOCK" delete_rollback || fail "edge.py delete_rollback failed"
alive "$BROKER_PID" || fail "mboxd died during delete_rollback"
stop_broker
