#!/bin/bash
# wire.sh - drive mboxd with tests/integration/wire.py, a client written
# from doc/protocol.md alone: payload at MAX_MSG_SIZE and one byte over,
# malformed bodies, broken framing, pipelining, lease expiry.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

command -v python3 >/dev/null || fail "python3 is needed (apt-get install python3)"
start_broker
timeout 120 python3 "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/wire.py" "$SOCK" ||
	fail "wire.py failed"
stop_broker
