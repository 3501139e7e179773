#!/bin/bash
# socket-activation.sh - mboxd under systemd's protocols, without systemd:
# started by systemd-socket-activate on a seqpacket socket it serves
# clients on that socket and binds nothing itself; a test NOTIFY_SOCKET
# receives READY=1 (after the store is open), STATUS= as the counters
# change, WATCHDOG=1 (WATCHDOG_USEC), RELOADING=1 and READY=1 on SIGHUP,
# and on SIGTERM STOPPING=1; with JOURNAL_STREAM its log lines carry
# "<N>" priorities; a stream socket is refused with a clear message.
# Skipped (77) without systemd-socket-activate or python3.
# shellcheck source=tests/integration/lib.sh
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

for t_prog in systemd-socket-activate python3; do
	command -v "$t_prog" >/dev/null || {
		note "no $t_prog, skipped"
		exit 77
	}
done

NOTIFY=$T_DIR/notify.sock
NOTES=$T_DIR/notify.log

# The manager's notify socket: one line per datagram (newlines inside a
# datagram shown as ' | '); ends after STOPPING=1 or 60 s.
start_notify_listener()
{
	: >"$NOTES"
	python3 - "$NOTIFY" "$NOTES" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(1.0)
end = time.monotonic() + 60
with open(sys.argv[2], "a", buffering=1) as out:
    while time.monotonic() < end:
        try:
            d = s.recv(4096).decode()
        except socket.timeout:
            continue
        out.write(d.replace("\n", " | ") + "\n")
        if "STOPPING=1" in d.split("\n"):
            break
PY
	NOTIFY_PID=$!
	track_pid "$NOTIFY_PID"
	for ((i = 0; i < 100; i++)); do
		[ -S "$NOTIFY" ] && return 0
		sleep 0.05
	done
	fail "the notify listener did not bind $NOTIFY"
}

# wait_note LINE TENTHS: wait for a datagram exactly LINE.
wait_note()
{
	local i
	for ((i = 0; i < $2; i++)); do
		grep -qxF -- "$1" "$NOTES" && return 0
		sleep 0.1
	done
	fail "no '$1' on NOTIFY_SOCKET within $(($2 / 10)) s; got: $(tr '\n' ';' <"$NOTES")"
}

start_notify_listener

# Activated: the socket is systemd's (here systemd-socket-activate's), and
# --socket names another path that must stay unbound.
# systemd-socket-activate passes on only the variables named with -E.
# JOURNAL_STREAM names the log file as stderr's dev:inode, so the broker
# takes it for the journal and prefixes "<N>"; WATCHDOG_USEC asks for
# pings every 0.1 s.
: >>"$T_DIR/mboxd.log"
journal=$(stat -c '%d:%i' "$T_DIR/mboxd.log")
systemd-socket-activate --seqpacket -l "$SOCK" -E NOTIFY_SOCKET="$NOTIFY" \
	-E JOURNAL_STREAM="$journal" -E WATCHDOG_USEC=200000 \
	"$MBOXD" --foreground --db "$DB" --sync off --log-level debug \
	--socket "$T_DIR/not-this.sock" </dev/null >>"$T_DIR/mboxd.log" 2>&1 &
BROKER_PID=$!
track_pid "$BROKER_PID"
# systemd-socket-activate execs mboxd on the first connection: that ping
# waits in the backlog until the broker runs its loop.
for ((i = 0; i < 100; i++)); do
	[ -S "$SOCK" ] && break
	sleep 0.05
done
mbctl ping >/dev/null || fail "no answer to ping on the activated socket"
wait_note READY=1 100
# READY=1 comes only once the store is open: the database exists by now.
[ -f "$DB" ] || fail "READY=1 before the store $DB was created"
grep -q '^STATUS=' "$NOTES" || fail "no STATUS= line: $(cat "$NOTES")"
[ ! -e "$T_DIR/not-this.sock" ] || fail "mboxd bound --socket although activated"

id=$(mbctl post act 'hello, systemd')
[ -n "$id" ] || fail "post through the activated socket printed no id"
# STATUS= follows the counters (polled every 2 s).
wait_note 'STATUS=0 connections, 1 mailboxes, 1 messages' 100
assert_eq 'hello, systemd' "$(mbctl recv act)" "recv through the activated socket"
wait_note WATCHDOG=1 50
# SIGHUP: RELOADING=1, then READY=1 again.
kill -HUP "$BROKER_PID"
wait_note RELOADING=1 50
for ((i = 0; i < 50; i++)); do
	[ "$(grep -cx READY=1 "$NOTES")" -ge 2 ] && break
	sleep 0.1
done
[ "$(grep -cx READY=1 "$NOTES")" -ge 2 ] || fail "no READY=1 after RELOADING=1: $(tr '\n' ';' <"$NOTES")"
# The journal's priority prefixes: <5> notice, <7> debug; no "mboxd[...]".
grep -qE '^<5>mboxd .* listening on '"$SOCK"' \(from systemd\)' "$T_DIR/mboxd.log" ||
	fail "no '<5>' start-up line for the journal: $(head -3 "$T_DIR/mboxd.log")"
grep -qE '^<7>client [0-9]+ connected' "$T_DIR/mboxd.log" ||
	fail "no '<7>' debug line for the journal"
! grep -q '^mboxd\[' "$T_DIR/mboxd.log" || fail "a line without a priority prefix under the journal"

kill -TERM "$BROKER_PID"
wait_note STOPPING=1 200
wait_dead "$BROKER_PID" 200 || fail "mboxd still running 20 s after SIGTERM"
rc=0
wait "$BROKER_PID" || rc=$?
untrack_pid "$BROKER_PID"
BROKER_PID=
assert_eq 0 "$rc" "exit status of the activated mboxd"
wait "$NOTIFY_PID" 2>/dev/null || true
untrack_pid "$NOTIFY_PID"

# A stream socket is not what mboxd serves: it refuses to start and says
# which .socket setting to use.
rm -f "$SOCK"
timeout 20 systemd-socket-activate -l "$SOCK" "$MBOXD" --foreground \
	--db "$DB" --sync off </dev/null >"$T_DIR/stream.out" 2>&1 &
pid=$!
track_pid "$pid"
# systemd-socket-activate execs mboxd only on the first connection.
for ((i = 0; i < 100; i++)); do
	[ -S "$SOCK" ] && break
	sleep 0.05
done
timeout 5 python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' "$SOCK" || true
rc=0
wait_dead "$pid" 200 || fail "mboxd kept running on a stream socket"
wait "$pid" || rc=$?
untrack_pid "$pid"
[ "$rc" -ne 0 ] || fail "mboxd exited 0 on a stream socket"
grep -q 'ListenSequentialPacket=' "$T_DIR/stream.out" ||
	fail "no hint at ListenSequentialPacket= in: $(cat "$T_DIR/stream.out")"
note "activated broker served, READY/STATUS/WATCHDOG/RELOADING/STOPPING seen, journal prefixes, stream socket refused"
