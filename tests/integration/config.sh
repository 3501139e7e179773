#!/bin/bash
# config.sh - the configuration file, SIGHUP and --daemon (SPEC 7,
# mboxd(8), mboxd.conf(5)):
#  - every command-line option (but help, version, config) is a key of the
#    file, and a broker started from a file with all of them takes them;
#  - options on the command line win over the file, also after a reload;
#  - an unknown key, a bad value or a missing --config stops start-up with
#    exit 2 and FILE:LINE: reason;
#  - SIGHUP applies a changed limit and log level and logs each change,
#    warns about what needs a restart, and a bad file changes nothing;
#  - with no -c a missing default file is not reported; a size takes one
#    unit and nothing after it;
#  - a second mboxd is refused on a held pid file or a live socket; a
#    stale socket is replaced, a regular file at --socket is not; a socket
#    directory others may write to is warned about;
#  - a SIGHUP during start-up is a reload once the broker runs;
#  - --daemon detaches, writes the pid file, serves, and SIGTERM removes
#    the pid file; its log goes to syslog (checked against a fake
#    /dev/log in a private mount namespace when we may make one).
# shellcheck source=tests/integration/lib.sh
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

CONF=$T_DIR/mboxd.conf
LOG=$T_DIR/mboxd.log

# log_wait REGEX TENTHS: the broker's log has a line matching REGEX.
log_wait()
{
	wait_grep "$LOG" "$1" "$2" || fail "no log line /$1/ within $(($2 / 10)) s"
}

# hup_and_wait N: SIGHUP the broker and wait for its Nth "reloaded"/"keeping
# the running settings" line.
hup_and_wait()
{
	local i
	kill -HUP "$BROKER_PID"
	for ((i = 0; i < 100; i++)); do
		[ "$(grep -cE 'reloaded |keeping the running settings' "$LOG")" -ge "$1" ] &&
			return 0
		sleep 0.1
	done
	fail "reload $1 not logged within 10 s"
}

# refused WHAT CMD...: CMD must fail (any non-zero status: mboxctl's
# status names the kind of refusal); its stderr in T_DIR/rc.err.
refused()
{
	local what=$1
	shift
	if "$@" >"$T_DIR/rc.out" 2>"$T_DIR/rc.err"; then
		fail "$what: '$*' succeeded"
	fi
}

# ---- every option is a key ----
# The long options of --help, less the command-line-only ones.
"$MBOXD" --help | grep -oE -- '--[a-z][a-z-]+' | sed 's/^--//' |
	grep -vxE 'help|version|config' | sort -u >"$T_DIR/opts"
[ "$(wc -l <"$T_DIR/opts")" -ge 20 ] || fail "too few options in --help: $(words <"$T_DIR/opts")"
cat >"$CONF" <<CONF
# every key, with a value that differs from the default where it can
socket = $SOCK
db = $DB
sync = normal
foreground = yes
daemon = no
pid-file = $T_DIR/fg.pid
log-level = debug
socket-mode = 0600
max-msg-size = 1000
no-autocreate = yes
dedup-window = 90s
max-header-bytes = 2K
max-mailboxes = 2
max-mailbox-msgs = 3
max-mailbox-bytes = 1M
max-connections = 100
max-connections-per-uid = 50
max-unacked = 1000
max-in-flight = 64
max-store-size = 64M
commit-delay-us = 250
max-subscriptions = 8
max-mailboxes-per-uid = 10
disk-reserve = 2M
CONF
while read -r k; do
	grep -q "^$k = " "$CONF" || fail "option --$k is not in the test's file"
done <"$T_DIR/opts"

# Started from the file alone: no --socket, no --db.
"$MBOXD" --config "$CONF" </dev/null >>"$LOG" 2>&1 &
BROKER_PID=$!
track_pid "$BROKER_PID"
for ((i = 0; i < 100; i++)); do
	mbctl ping >/dev/null 2>&1 && break
	alive "$BROKER_PID" || fail "mboxd -c exited: $(cat "$LOG")"
	sleep 0.1
done
mbctl ping >/dev/null || fail "no broker on the file's socket"
assert_eq 600 "$(stat -c %a "$SOCK")" "socket-mode from the file"
assert_eq "$BROKER_PID" "$(cat "$T_DIR/fg.pid")" "pid-file from the file"
[ -f "$DB" ] || fail "db from the file not created"
assert_eq 2097152 "$(stat -c %s "$DB-reserve")" "disk-reserve from the file"
grep -q 'sync=normal' "$LOG" || fail "sync from the file not used"
grep -q 'client [0-9]* connected' "$LOG" || fail "log-level debug from the file not used"
refused "post to a missing mailbox (no-autocreate)" mbctl post nobox x
mbctl create a
mbctl create b
refused "a third mailbox (max-mailboxes 2)" mbctl create c
grep -q max_mailboxes "$T_DIR/rc.err" || fail "no max_mailboxes in: $(cat "$T_DIR/rc.err")"
refused "a 1001-byte payload (max-msg-size 1000)" \
	mbctl post a "$(head -c 1001 /dev/zero | tr '\0' x)"
for m in 1 2 3; do mbctl post a "m$m" >/dev/null; done
refused "a fourth message (max-mailbox-msgs 3)" mbctl post a m4

# ---- SIGHUP: a limit and the log level change, the rest needs a restart ----
sed -i -e 's/^max-mailboxes = 2$/max-mailboxes = 3/' \
	-e 's/^log-level = debug$/log-level = notice/' \
	-e 's/^commit-delay-us = 250$/commit-delay-us = 50/' \
	-e 's/^max-subscriptions = 8$/max-subscriptions = 9/' \
	-e 's/^max-mailboxes-per-uid = 10$/max-mailboxes-per-uid = 11/' \
	-e 's/^sync = normal$/sync = off/' \
	-e 's/^disk-reserve = 2M$/disk-reserve = 3M/' "$CONF"
hup_and_wait 1
grep -q 'reload: max-mailboxes 2 -> 3' "$LOG" || fail "max-mailboxes change not logged"
grep -q 'reload: commit-delay-us 250 -> 50' "$LOG" || fail "commit-delay-us change not logged"
grep -q 'reload: log-level debug -> notice' "$LOG" || fail "log-level change not logged"
grep -q "reload: sync changed.*needs a restart" "$LOG" || fail "no restart warning for sync"
grep -q "reload: disk-reserve changed.*needs a restart" "$LOG" ||
	fail "no restart warning for disk-reserve"
grep -q 'reload: max-subscriptions 8 -> 9' "$LOG" || fail "max-subscriptions change not logged"
grep -q 'reload: max-mailboxes-per-uid 10 -> 11' "$LOG" || fail "max-mailboxes-per-uid change not logged"
grep -q 'reloaded .*: 5 settings changed' "$LOG" || fail "no reload summary: $(tail -5 "$LOG")"
mbctl create c || fail "max-mailboxes 3 not applied by SIGHUP"
n=$(grep -c 'client [0-9]* connected' "$LOG")
mbctl ping >/dev/null
mbctl ping >/dev/null
assert_eq "$n" "$(grep -c 'client [0-9]* connected' "$LOG")" "debug lines after log-level notice"

# A bad file on reload: logged with FILE:LINE, nothing changes.
cp "$CONF" "$T_DIR/good.conf"
# max-mailboxes comes before the bad line: it must not apply either.
sed -i -e 's/^max-mailboxes = 3$/max-mailboxes = 4/' \
	-e 's/^max-unacked = .*/max-unacked = lots/' "$CONF"
bad_line=$(grep -n '^max-unacked' "$CONF" | cut -d: -f1)
hup_and_wait 2
grep -qF "$CONF:$bad_line: max-unacked must be a whole number" "$LOG" ||
	fail "bad reload not reported with FILE:LINE: $(tail -3 "$LOG")"
grep -q 'keeping the running settings' "$LOG" || fail "no 'keeping' after a bad reload"
! grep -q 'max-mailboxes 3 -> 4' "$LOG" || fail "a bad file changed max-mailboxes"
refused "a fourth mailbox after the bad reload" mbctl create d

# A reload that changes the log level logs every change, whichever way
# the level goes: down to warning (the limit's line and the summary are
# at notice), then up from warning (the log-level line is at notice).
cp "$T_DIR/good.conf" "$CONF"
sed -i -e 's/^log-level = notice$/log-level = warning/' \
	-e 's/^max-subscriptions = 9$/max-subscriptions = 10/' "$CONF"
hup_and_wait 3
grep -q 'reload: log-level notice -> warning' "$LOG" || fail "log-level notice -> warning not logged"
grep -q 'reload: max-subscriptions 9 -> 10' "$LOG" ||
	fail "a limit changed with the level lowered to warning not logged: $(tail -3 "$LOG")"
grep -q 'reloaded .*: 2 settings changed' "$LOG" || fail "no summary of the reload to warning"
sed -i -e 's/^log-level = warning$/log-level = info/' \
	-e 's/^max-subscriptions = 10$/max-subscriptions = 11/' "$CONF"
hup_and_wait 4
grep -q 'reload: log-level warning -> info' "$LOG" ||
	fail "log-level warning -> info not logged: $(tail -3 "$LOG")"
grep -q 'reload: max-subscriptions 10 -> 11' "$LOG" || fail "max-subscriptions 10 -> 11 not logged"
stop_broker
[ ! -e "$T_DIR/fg.pid" ] || fail "pid file left after SIGTERM"

# ---- options win over the file, also after a reload ----
cp "$T_DIR/good.conf" "$CONF"
: >"$LOG"
start_broker --config "$CONF" --max-mailboxes 1 --log-level info --sync off
mbctl create only >/dev/null 2>&1 || true
refused "--max-mailboxes 1 over the file's 3" mbctl create second
! grep -q 'client [0-9]* connected' "$LOG" || fail "--log-level info lost to the file's notice"
grep -q 'sync=off' "$LOG" || fail "--sync lost to the file"
sed -i 's/^max-mailboxes = 3$/max-mailboxes = 9/' "$CONF"
hup_and_wait 1
! grep -q 'reload: max-mailboxes' "$LOG" || fail "the file's max-mailboxes beat --max-mailboxes on reload"
refused "--max-mailboxes 1 after a reload" mbctl create second
stop_broker

# ---- start-up errors: exit 2, FILE:LINE: reason ----
bad_conf() # LINE... : write the lines, expect exit 2 and stderr matching $want
{
	printf '%s\n' "$@" >"$T_DIR/bad.conf"
	expect_rc 2 "mboxd -c with: $*" "$MBOXD" -c "$T_DIR/bad.conf" -s "$SOCK" -d "$DB"
	grep -qE -- "$want" "$T_DIR/rc.err" || fail "for '$*': expected /$want/ in: $(cat "$T_DIR/rc.err")"
	[ ! -e "$SOCK" ] || fail "a bad file still bound the socket"
}
want="bad.conf:2: unknown key 'max-unacket' \(did you mean 'max-unacked'\?\)"
bad_conf '# comment' 'max-unacket = 5'
want="bad.conf:3: max-unacked must be a whole number.*not '10k'"
bad_conf 'sync = off' '' 'max-unacked = 10k'
want="bad.conf:1: sync must be full, normal or off, not 'fast'"
bad_conf 'sync = fast'
want="bad.conf:1: 'daemon' takes yes or no, not 'maybe'"
bad_conf 'daemon = maybe'
want="bad.conf:1: log-level must be"
bad_conf 'log-level = loud'
want="bad.conf:1: expected '=' after 'just'"
bad_conf 'just words'
want="bad.conf:1: 'config' can only be given on the command line"
bad_conf 'config = /etc/other.conf'
expect_rc 2 "a missing --config" "$MBOXD" -c "$T_DIR/none.conf" -s "$SOCK" -d "$DB"
grep -qF "cannot read $T_DIR/none.conf" "$T_DIR/rc.err" || fail "missing --config: $(cat "$T_DIR/rc.err")"
# The command line is still checked on its own: a bad option exits 2 too.
expect_rc 2 "--sync fast" "$MBOXD" -s "$SOCK" -d "$DB" --sync fast
grep -q -- "--sync must be full" "$T_DIR/rc.err" || fail "--sync fast: $(cat "$T_DIR/rc.err")"

# With no -c, a missing default file is no error: it must not trail one.
expect_rc 2 "--max-unacked=0" timeout 10 "$MBOXD" -s "$SOCK" -d "$DB" --max-unacked=0
assert_eq 1 "$(wc -l <"$T_DIR/rc.err")" "lines on stderr for one bad option: $(cat "$T_DIR/rc.err")"
! grep -q 'cannot read' "$T_DIR/rc.err" || fail "a missing default file reported: $(cat "$T_DIR/rc.err")"
# A size takes one unit letter, optionally B or iB, and nothing after.
for v in '1 ' '1K ' '1Kx' '1KiBs' ' 1' '1 K' 'K'; do
	expect_rc 2 "--max-mailbox-bytes '$v'" timeout 10 "$MBOXD" --config /dev/null \
		-s "$SOCK" -d "$DB" --max-mailbox-bytes "$v"
	grep -q "max-mailbox-bytes must be a whole number" "$T_DIR/rc.err" ||
		fail "--max-mailbox-bytes '$v': $(cat "$T_DIR/rc.err")"
done
# --max-msg-size is a size like the others (K, M, G or T), up to 64M (0: only empty payloads).
for v in 65M 64Mx 1Q; do
	expect_rc 2 "--max-msg-size $v" timeout 10 "$MBOXD" --config /dev/null \
		-s "$SOCK" -d "$DB" --max-msg-size "$v"
	grep -q "max-msg-size must be a whole number of bytes (K, M, G or T.*from 0 to 67108864, not '$v'" "$T_DIR/rc.err" ||
		fail "--max-msg-size $v: $(cat "$T_DIR/rc.err")"
done

# ---- one broker per pid file and per socket; what is at --socket ----
PIDF=$T_DIR/mboxd.pid
start_broker --pid-file "$PIDF" --sync off
# Another socket and store, the same pid file: refused, the file intact.
expect_rc 1 "a second mboxd on a held pid file" timeout 20 "$MBOXD" --config /dev/null \
	-s "$T_DIR/two.sock" -d "$T_DIR/two.db" --sync off --pid-file "$PIDF"
grep -q "pid file $PIDF is held by another mboxd (pid $BROKER_PID)" "$T_DIR/rc.err" ||
	fail "held pid file: $(cat "$T_DIR/rc.err")"
[ ! -e "$T_DIR/two.sock" ] || fail "a refused second mboxd bound its socket"
assert_eq "$BROKER_PID" "$(cat "$PIDF")" "the pid file after a refused second mboxd"
# The same socket: refused, the first one still serves.
expect_rc 1 "a second mboxd on a live socket" timeout 20 "$MBOXD" --config /dev/null \
	-s "$SOCK" -d "$T_DIR/newdir/two.db" --sync off
grep -q "another mboxd is already listening on $SOCK" "$T_DIR/rc.err" ||
	fail "live socket: $(cat "$T_DIR/rc.err")"
[ ! -e "$T_DIR/newdir" ] || fail "a refused second mboxd left the directory of its store behind"
mbctl ping >/dev/null || fail "the first broker lost its socket"
# A socket left by a broker that died is replaced.
kill9_broker
[ -S "$SOCK" ] || fail "no stale socket after SIGKILL"
start_broker --pid-file "$PIDF" --sync off
assert_eq "$BROKER_PID" "$(cat "$PIDF")" "the pid file of a broker after a stale one"
stop_broker
[ ! -e "$PIDF" ] || fail "SIGTERM left the pid file"
# Not a socket: left alone.
echo keep >"$T_DIR/plain"
expect_rc 1 "--socket on a regular file" timeout 20 "$MBOXD" --config /dev/null \
	-s "$T_DIR/plain" -d "$DB" --sync off
grep -q "$T_DIR/plain exists and is not a socket" "$T_DIR/rc.err" || fail "plain file: $(cat "$T_DIR/rc.err")"
assert_eq keep "$(cat "$T_DIR/plain")" "a regular file at --socket"
# A socket directory others may write to is worth a warning.
mkdir -m 0777 "$T_DIR/open"
chmod 0777 "$T_DIR/open"
SOCK_SAVED=$SOCK
SOCK=$T_DIR/open/mbox.sock
: >"$LOG"
start_broker --sync off
stop_broker
SOCK=$SOCK_SAVED
grep -q "socket directory $T_DIR/open may be written by others" "$T_DIR/mboxd.log" ||
	fail "no warning about a mode 0777 socket directory"

# ---- a SIGHUP during start-up is a reload, not the end ----
# The configuration file is a FIFO: mboxd blocks reading it at start-up,
# and each reload reads it again.
mkfifo "$T_DIR/fifo.conf"
"$MBOXD" --config "$T_DIR/fifo.conf" -s "$SOCK" -d "$DB" --sync off \
	</dev/null >"$T_DIR/fifo.log" 2>&1 &
BROKER_PID=$!
track_pid "$BROKER_PID"
# Once SIGHUP is blocked (SigBlk bit 0) mboxd is past its first line.
for ((i = 0; i < 100; i++)); do
	blk=$(sed -n 's/^SigBlk:[[:space:]]*//p' "/proc/$BROKER_PID/status" 2>/dev/null)
	[ -n "$blk" ] && (((16#${blk: -1}) & 1)) && break
	sleep 0.05
done
kill -HUP "$BROKER_PID"
sleep 0.2
alive "$BROKER_PID" || fail "SIGHUP during start-up killed mboxd"
timeout 10 sh -c 'echo "log-level = info" >"$1"' sh "$T_DIR/fifo.conf" ||
	fail "mboxd did not read its configuration FIFO"
# The first read must be over (mboxd listening) before the second write,
# or a slow mboxd still holding the FIFO open reads both lines as one file.
wait_grep "$T_DIR/fifo.log" "listening on" 100 ||
	fail "mboxd did not start after reading its FIFO: $(cat "$T_DIR/fifo.log")"
timeout 10 sh -c 'echo "log-level = debug" >"$1"' sh "$T_DIR/fifo.conf" ||
	fail "the SIGHUP of start-up was lost: no reload read the file"
wait_grep "$T_DIR/fifo.log" "reloaded $T_DIR/fifo.conf: 1 setting changed" 50 ||
	fail "no reload after a SIGHUP during start-up: $(cat "$T_DIR/fifo.log")"
mbctl ping >/dev/null || fail "no broker after a SIGHUP during start-up"
stop_broker

# ---- --daemon: detaches, pid file, serves, SIGTERM removes the pid file ----
rc=0
timeout 20 "$MBOXD" --daemon --pid-file "$PIDF" -s "$SOCK" -d "$DB" \
	--sync off || rc=$?
dpid=$(cat "$PIDF" 2>/dev/null)
[ -z "$dpid" ] || track_pid "$dpid"
assert_eq 0 "$rc" "mboxd --daemon: exit status"
[ -n "$dpid" ] || fail "no pid file once mboxd --daemon returned"
alive "$dpid" || fail "the daemon $dpid named in the pid file is not running"
assert_eq "$dpid" "$(awk '{print $6}' "/proc/$dpid/stat")" "the daemon leads its own session"
assert_eq / "$(readlink "/proc/$dpid/cwd")" "the daemon's cwd"
assert_eq /dev/null "$(readlink "/proc/$dpid/fd/1")" "the daemon's stdout"
mbctl post dq 'from a daemon' >/dev/null
assert_eq 'from a daemon' "$(mbctl recv dq)" "the daemon serves"
kill -TERM "$dpid"
wait_dead "$dpid" 200 || fail "the daemon still runs 20 s after SIGTERM"
untrack_pid "$dpid"
[ ! -e "$PIDF" ] || fail "SIGTERM left the pid file"
[ ! -e "$SOCK" ] || fail "SIGTERM left the socket"
# Started with standard descriptors closed: the daemon must not mistake
# its own descriptors for them (the parent hung, or the daemon died or
# spun), and neither must mboxctl (its socket read as stdin).
for redir in '2>&-' '<&- >&-' '<&- >&- 2>&-'; do
	rc=0
	timeout 20 bash -c "exec \"\$0\" --daemon --pid-file \"\$1\" -s \"\$2\" \
		-d \"\$3\" --sync off $redir" "$MBOXD" "$PIDF" "$SOCK" "$DB" || rc=$?
	dpid=$(cat "$PIDF" 2>/dev/null)
	[ -z "$dpid" ] || track_pid "$dpid"
	assert_eq 0 "$rc" "mboxd --daemon started with $redir: exit status"
	alive "$dpid" || fail "the daemon started with $redir is not running"
	rc=0
	timeout 10 bash -c 'exec "$0" -S "$1" post dq "closed $2" <&- >&-' \
		"$MBOXCTL" "$SOCK" "$redir" || rc=$?
	assert_eq 0 "$rc" "mboxctl post with stdin and stdout closed (daemon $redir)"
	rc=0
	timeout 10 bash -c 'exec "$0" -S "$1" post dq <&-' "$MBOXCTL" "$SOCK" \
		>/dev/null 2>&1 || rc=$?
	[ "$rc" -ne 124 ] || fail "mboxctl post with stdin closed hangs (daemon $redir)"
	assert_eq "closed $redir" "$(mbctl recv dq)" "the daemon started with $redir serves"
	mbctl purge dq >/dev/null
	kill -TERM "$dpid"
	wait_dead "$dpid" 200 || fail "the daemon ($redir) still runs 20 s after SIGTERM"
	untrack_pid "$dpid"
done
note "--daemon and mboxctl with stdin, stdout or stderr closed"
# A daemon that cannot start: the parent exits 1 and says why.
expect_rc 1 "mboxd --daemon with an unwritable pid file" timeout 20 "$MBOXD" \
	--daemon --pid-file /proc/mboxd-no.pid -s "$SOCK" -d "$DB" --sync off
grep -q 'cannot write the pid file' "$T_DIR/rc.err" || fail "no reason: $(cat "$T_DIR/rc.err")"

# ---- --daemon logs to syslog, at --log-level ----
# glibc's syslog() writes to /dev/log: in a private mount namespace (root
# only) a tmpfs over /dev with a fake /dev/log bound to our datagram socket.
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null ||
	! command -v python3 >/dev/null ||
	! unshare -m mount -t tmpfs none "$T_DIR" 2>/dev/null; then
	note "no private mount namespace: syslog not checked"
	exit 0
fi
SYSLOG=$T_DIR/syslog.txt
python3 - "$T_DIR/log.sock" "$SYSLOG" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(0.5)
end = time.monotonic() + 60
with open(sys.argv[2], "a", buffering=1) as out:
    while time.monotonic() < end:
        try:
            out.write(s.recv(4096).decode(errors="replace") + "\n")
        except socket.timeout:
            pass
PY
LPID=$!
track_pid "$LPID"
for ((i = 0; i < 100; i++)); do
	[ -S "$T_DIR/log.sock" ] && break
	sleep 0.05
done
cp "$T_DIR/good.conf" "$CONF"
sed -i -e "s|^pid-file = .*|pid-file = $PIDF|" -e 's/^log-level = .*/log-level = debug/' "$CONF"
mkdir "$T_DIR/olddev"
# The namespace lives on in the daemon after unshare's shell has exited.
# shellcheck disable=SC2016 # expanded by the inner sh
unshare -m sh -ec '
	mount --bind /dev "$1/olddev"
	mount -t tmpfs -o mode=0755 none /dev
	for n in null zero random urandom; do
		touch "/dev/$n"
		mount --bind "$1/olddev/$n" "/dev/$n"
	done
	umount "$1/olddev"
	touch /dev/log
	mount --bind "$1/log.sock" /dev/log
	exec timeout 20 "$2" --daemon --config "$3"
' sh "$T_DIR" "$MBOXD" "$CONF" >"$T_DIR/ns.out" 2>&1 || fail "unshare: $(cat "$T_DIR/ns.out")"
dpid=$(cat "$PIDF")
track_pid "$dpid"
mbctl ping >/dev/null
# <29> is daemon.notice, <31> daemon.debug (RFC 3164 PRI: facility*8+level).
wait_grep "$SYSLOG" "^<29>.*mboxd\[$dpid\]: mboxd .* listening on $SOCK" 50 ||
	fail "no start-up line in syslog: $(cat "$SYSLOG")"
wait_grep "$SYSLOG" "^<31>.*mboxd\[$dpid\]: client [0-9]+ connected" 50 ||
	fail "no debug line in syslog at log-level debug: $(cat "$SYSLOG")"
sed -i 's/^log-level = .*/log-level = info/' "$CONF"
kill -HUP "$dpid"
wait_grep "$SYSLOG" "reloaded $CONF" 50 || fail "no reload in syslog: $(cat "$SYSLOG")"
n=$(grep -c 'connected' "$SYSLOG")
mbctl ping >/dev/null
sleep 0.3
assert_eq "$n" "$(grep -c 'connected' "$SYSLOG")" "debug lines in syslog after log-level info"
[ ! -s "$T_DIR/ns.out" ] || fail "mboxd --daemon printed on success: $(cat "$T_DIR/ns.out")"
kill -TERM "$dpid"
wait_dead "$dpid" 200 || fail "the daemon still runs 20 s after SIGTERM"
untrack_pid "$dpid"
wait_grep "$SYSLOG" "mboxd\[$dpid\]: stopped" 50 || fail "no 'stopped' in syslog"
[ ! -e "$PIDF" ] || fail "SIGTERM left the pid file"
note "file, precedence, errors, SIGHUP, --daemon and syslog checked"
