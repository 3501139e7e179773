#!/bin/bash
# groupcommit.sh - group commit's wait for posters (--commit-delay-us),
# driven by tests/integration/groupcommit.py at the protocol level: a lone
# poster never waits, a post waits for the poster answered last and shares
# its commit, a poster that hangs up or stays silent is not waited for
# longer than it must be, nor one that may be waiting for a message, and
# nothing waits with sync=normal.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

command -v python3 >/dev/null || fail "python3 is needed (apt-get install python3)"
GC_PY="${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/groupcommit.py"

start_broker --commit-delay-us 1000000
mbctl create gc
mbctl create gc-reply
mbctl create gc-empty
timeout 60 python3 "$GC_PY" "$SOCK" lone grouped deadline busy ||
	fail "groupcommit.py failed with sync=full"
alive "$BROKER_PID" || fail "mboxd died during the scenarios"
stop_broker

BROKER_SYNC=normal start_broker --commit-delay-us 1000000
timeout 60 python3 "$GC_PY" "$SOCK" nowait ||
	fail "groupcommit.py failed with sync=normal"
stop_broker

# Nothing acknowledged was lost: every answered post is stored.
start_broker
assert_eq 19 "$(mbctl stat gc --json | json_num ready)" "answered posts stored (6 + 5 + 3 + 3 + 2)"
assert_eq 1 "$(mbctl stat gc-reply --json | json_num ready)" "the pushed reply, never acked, is back"
assert_eq 1 "$(mbctl stat gc-empty --json | json_num ready)" "the received message, never acked, is back"
stop_broker
