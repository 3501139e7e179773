#!/bin/bash
# cli.sh - mboxctl's documented exit codes and output formats:
# 0 ok, 1 error, 2 usage, 3 nothing received before the wait ran out,
# 5 no such mailbox, 6 broker unreachable; --json output is JSON Lines;
# peek does not consume.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

# --help documents the exit codes.
expect_rc 0 "mboxctl --help" "$MBOXCTL" --help
grep -qi 'exit' "$T_DIR/rc.out" "$T_DIR/rc.err" ||
	fail "mboxctl --help does not document the exit codes"

# 2: usage errors, found before any connection is tried.
nosock=$T_DIR/none/mbox.sock
expect_rc 2 "unknown option" "$MBOXCTL" -S "$nosock" --no-such-option ping
expect_rc 2 "unknown verb option" "$MBOXCTL" -S "$nosock" recv q --no-such-option
expect_rc 2 "unknown verb" "$MBOXCTL" -S "$nosock" no-such-verb
expect_rc 2 "missing mailbox" "$MBOXCTL" -S "$nosock" recv
expect_rc 2 "no verb" "$MBOXCTL" -S "$nosock"

# 6: nobody listens on that socket.
expect_rc 6 "ping, no broker" "$MBOXCTL" -S "$nosock" ping
expect_rc 6 "post, no broker" "$MBOXCTL" -S "$nosock" post q data
expect_rc 6 "recv, no broker" "$MBOXCTL" -S "$nosock" recv q --wait 0.1
expect_rc 6 "ls, no broker" "$MBOXCTL" -S "$nosock" ls
expect_rc 6 "peek, no broker" "$MBOXCTL" -S "$nosock" peek q
expect_rc 6 "create, no broker" "$MBOXCTL" -S "$nosock" create q
# A socket file with no broker behind it (a broker that died) is the same.
start_broker
kill9_broker
[ -S "$SOCK" ] || note "the killed broker left no socket file behind"
expect_rc 6 "ping, dead broker" "$MBOXCTL" -S "$SOCK" ping
start_broker

expect_rc 0 "ping" mbctl ping

# 5: no such mailbox.
expect_rc 5 "recv, no such mailbox" mbctl recv missing --wait 0.1
expect_rc 5 "peek, no such mailbox" mbctl peek missing

# 3: an empty mailbox, and the wait is honoured (0.2 s, not 0, not forever).
mbctl create empty
start=$(date +%s%N)
expect_rc 3 "recv on an empty mailbox" mbctl recv empty --wait 0.2
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$ms" -ge 150 ] || fail "recv --wait 0.2 returned after ${ms} ms"
note "recv --wait 0.2 on an empty mailbox took ${ms} ms"
expect_rc 3 "recv --wait 0 on an empty mailbox" mbctl recv empty --wait 0

# 1: other errors, with a message on stderr.
expect_rc 1 "create of an existing mailbox" mbctl create empty
[ -s "$T_DIR/rc.err" ] || fail "create of an existing mailbox said nothing"

# 2: a bad mailbox name is a bad argument, found before any request (the
# broker would answer 1, INVALID); an empty -S is one too, not "no broker".
for verb in post recv peek stat create rm purge bind unbind kick pause resume \
	chmod chown set call serve work subscribe export import; do
	expect_rc 2 "$verb of an invalid mailbox name" mbctl $verb 'bad name!' x
	grep -q 'invalid mailbox name "bad name!": it must be 1-200 bytes' "$T_DIR/rc.err" ||
		fail "$verb 'bad name!' said: $(cat "$T_DIR/rc.err")"
done
expect_rc 2 "an empty -S" "$MBOXCTL" -S '' ping
grep -q 'needs a path' "$T_DIR/rc.err" || fail "-S '': $(cat "$T_DIR/rc.err")"
# A path that is no socket is named for what it is; one too long for a
# socket is a bad argument.
expect_rc 6 "-S at a directory" "$MBOXCTL" -S "$T_DIR" ping
grep -q "$T_DIR is a directory, not a socket" "$T_DIR/rc.err" || fail "-S DIR: $(cat "$T_DIR/rc.err")"
: >"$T_DIR/plain"
expect_rc 6 "-S at a file" "$MBOXCTL" -S "$T_DIR/plain" ping
grep -q "$T_DIR/plain is a file, not a socket" "$T_DIR/rc.err" || fail "-S FILE: $(cat "$T_DIR/rc.err")"
expect_rc 2 "-S too long for a socket" "$MBOXCTL" -S "$T_DIR/$(printf 'x%.0s' $(seq 120))" ping
grep -q 'a socket path is at most 107 bytes' "$T_DIR/rc.err" || fail "-S too long: $(cat "$T_DIR/rc.err")"

# 1: output that cannot be written is an error, and a post that was done
# says so with its id, so that a script does not post it again.
rc=0
mbctl ping >/dev/full 2>"$T_DIR/full.err" || rc=$?
assert_eq 1 "$rc" "ping >/dev/full"
grep -q 'cannot write to standard output' "$T_DIR/full.err" || fail "ping >/dev/full said: $(cat "$T_DIR/full.err")"
for args in --help -V "help recv" "recv --help"; do
	rc=0
	# shellcheck disable=SC2086 # the words of args
	"$MBOXCTL" $args >/dev/full 2>"$T_DIR/full.err" || rc=$?
	assert_eq 1 "$rc" "mboxctl $args >/dev/full"
	grep -q 'cannot write to standard output' "$T_DIR/full.err" ||
		fail "mboxctl $args >/dev/full said: $(cat "$T_DIR/full.err")"
done
rc=0
mbctl post full one >/dev/full 2>"$T_DIR/full.err" || rc=$?
assert_eq 1 "$rc" "post >/dev/full"
id=$(sed -n 's/.*message \([0-9]*\) posted, but its id could not be written.*/\1/p' "$T_DIR/full.err")
[ -n "$id" ] || fail "post >/dev/full said: $(cat "$T_DIR/full.err")"
mbctl peek full --json >"$T_DIR/full.json"
assert_eq "$id one" "$(json_num id <"$T_DIR/full.json") $(json_str data <"$T_DIR/full.json")" "the post that could not print its id"
rc=0
printf 'a\nb\n' | mbctl post full --lines >/dev/full 2>"$T_DIR/full.err" || rc=$?
assert_eq 1 "$rc" "post --lines >/dev/full"
grep -qE "lines 1-2 posted as messages $((id + 1)) to $((id + 2)), but their ids" "$T_DIR/full.err" ||
	fail "post --lines >/dev/full said: $(cat "$T_DIR/full.err")"

# 3 on a paused mailbox says why nothing came.
mbctl create held
mbctl pause held
for verb in recv subscribe; do
	expect_rc 3 "$verb on a paused mailbox" mbctl $verb held --wait 0.1
	grep -q 'the mailbox is paused; resume deliveries with: mboxctl resume held' "$T_DIR/rc.err" ||
		fail "$verb on a paused mailbox said: $(cat "$T_DIR/rc.err")"
done
mbctl resume held
expect_rc 3 "recv on an empty mailbox, resumed" mbctl recv held --wait 0
[ ! -s "$T_DIR/rc.err" ] || fail "recv on an empty, active mailbox said: $(cat "$T_DIR/rc.err")"

# recv --wait returns as soon as a message comes.
mbctl create late
( sleep 0.3; mbctl post late 'late one' >/dev/null ) &
late=$!
track_pid "$late"
start=$(date +%s%N)
got=$(mbctl recv late --wait 20)
ms=$(( ($(date +%s%N) - start) / 1000000 ))
assert_eq 'late one' "$got" "recv --wait of a message posted later"
[ "$ms" -lt 15000 ] || fail "recv --wait 20 took ${ms} ms for a message posted after 0.3 s"
wait "$late" || fail "the late post failed"
untrack_pid "$late"

# peek does not consume; its --json is JSON Lines.
printf 'p1\np2\np3\n' | mbctl post peeked --lines >"$T_DIR/pids"
for round in 1 2; do
	mbctl peek peeked -n 10 --json >"$T_DIR/peek.$round"
	check_json_lines "$T_DIR/peek.$round"
	assert_eq 3 "$(wc -l <"$T_DIR/peek.$round")" "peek --json lines (round $round)"
	while read -r line; do json_num id <<<"$line"; done <"$T_DIR/peek.$round" >"$T_DIR/peek.ids"
	cmp -s "$T_DIR/pids" "$T_DIR/peek.ids" || fail "peek ids differ from posted ids"
	while read -r line; do
		assert_eq 0 "$(json_num deliveries <<<"$line")" "deliveries shown by peek"
	done <"$T_DIR/peek.$round"
done
mbctl peek peeked -n 2 --json >"$T_DIR/peek.2only"
assert_eq 2 "$(wc -l <"$T_DIR/peek.2only")" "peek -n 2 lines"
expect_rc 0 "text peek" mbctl peek peeked -n 10
[ -s "$T_DIR/rc.out" ] || fail "peek without --json printed nothing"
assert_eq "p1 p2 p3" "$(mbctl recv peeked -n 3 | words)" "recv after peeks"
expect_rc 3 "recv after the peeked messages were taken" mbctl recv peeked --wait 0

# ls and ls --json.
expect_rc 0 "ls" mbctl ls
for name in empty late peeked; do
	grep -q "$name" "$T_DIR/rc.out" || fail "ls does not show mailbox $name"
done
mbctl ls --json >"$T_DIR/ls.json"
check_json_lines "$T_DIR/ls.json"
for name in empty late peeked; do
	grep -q "\"$name\"" "$T_DIR/ls.json" || fail "ls --json does not show mailbox $name"
done
n=$(grep -c . "$T_DIR/ls.json")
[ "$n" -ge 3 ] || fail "ls --json printed $n lines for at least 3 mailboxes"

# recv -n N --json prints one object per message.
printf 'j1\nj2\n' | mbctl post js --lines >/dev/null
mbctl recv js -n 2 --json >"$T_DIR/js"
check_json_lines "$T_DIR/js"
assert_eq 2 "$(wc -l <"$T_DIR/js")" "recv -n 2 --json lines"
# Every time in JSON is *_ns, as in export and stat.
mbctl post js j3 >/dev/null
mbctl peek js --json >"$T_DIR/js.peek"
mbctl recv js --json >"$T_DIR/js.recv"
for f in js.peek js.recv; do
	t=$(json_num time_ns <"$T_DIR/$f")
	[ "${t:-0}" -gt 1000000000000000000 ] || fail "$f: no time_ns: $(cat "$T_DIR/$f")"
	! grep -q '"time":' "$T_DIR/$f" || fail "$f: a time without _ns: $(cat "$T_DIR/$f")"
done

# A standard output closed when mboxctl starts is no place to print
# messages to: recv, subscribe and call take nothing, and say so (it used
# to be /dev/null, and the messages were acked unseen). A closed standard
# input is no payload: post and import send nothing.
printf 'c1\nc2\n' | mbctl post closed --lines >/dev/null
for verb in recv subscribe; do
	rc=0
	mbctl $verb closed -n 1 --wait 1 >&- 2>"$T_DIR/closed.err" || rc=$?
	assert_eq 1 "$rc" "$verb with standard output closed"
	grep -q 'standard output is closed: what is received would be acknowledged unseen, so nothing was done' "$T_DIR/closed.err" ||
		fail "$verb >&- said: $(cat "$T_DIR/closed.err")"
done
rc=0
mbctl call closed x --timeout 1 >&- 2>"$T_DIR/closed.err" || rc=$?
assert_eq 1 "$rc" "call with standard output closed"
grep -q 'standard output is closed' "$T_DIR/closed.err" || fail "call >&- said: $(cat "$T_DIR/closed.err")"
for args in "post closed" "post closed --lines" "publish closed.t" "call closed" "import closed"; do
	rc=0
	# shellcheck disable=SC2086 # the words of args
	mbctl $args <&- >"$T_DIR/closed.out" 2>"$T_DIR/closed.err" || rc=$?
	assert_eq 1 "$rc" "$args with standard input closed"
	grep -q 'standard input is closed: there is nothing to read, so nothing was sent' "$T_DIR/closed.err" ||
		fail "$args <&- said: $(cat "$T_DIR/closed.err")"
done
assert_eq "2 0" "$(ls_num closed ready) $(ls_num closed leased)" "closed: nothing taken, nothing added"
mbctl peek closed -n 5 --json >"$T_DIR/closed.peek"
assert_eq "0 0" "$(grep -o '"deliveries":[0-9]*' "$T_DIR/closed.peek" | cut -d: -f2 | xargs)" "closed: never delivered"

# recv --no-ack keeps what it printed leased until it exits, however
# long it waits: a lease of 1 s, a wait of 3.5 s, one message printed
# once (it used to run out and come back to the same recv, printed
# again), and nobody else gets it meanwhile.
mbctl create keep --lease 1
mbctl post keep only >/dev/null
mbctl recv keep -n 3 --no-ack --wait 3.5 --json >"$T_DIR/keep.out" 2>"$T_DIR/keep.err" &
keep=$!
track_pid "$keep"
sleep 2
expect_rc 3 "recv of a message held by a recv --no-ack, 2 s into its 1 s lease" mbctl recv keep --wait 0
rc=0
wait "$keep" || rc=$?
untrack_pid "$keep"
assert_eq 0 "$rc" "recv --no-ack -n 3 that got one message"
assert_eq 1 "$(grep -c . "$T_DIR/keep.out")" "recv --no-ack printed the message once: $(cat "$T_DIR/keep.out")"
assert_eq 1 "$(json_num deliveries <"$T_DIR/keep.out")" "its delivery count"

# Without a wait too: taking what is ready may last longer than a lease.
# 60,000 messages go to a reader that takes 32 KiB every 10 ms, so the
# run lasts seconds on any machine, against a lease of 1 s; recv never
# blocks in a write for long (the pipe drains every 10 ms), and none of
# its leases runs out and comes back to be printed twice.
seq -w 60000 | mbctl post many --lines >/dev/null
mbctl recv many -n 70000 --no-ack --lease 1 --json |
	python3 -c '
import sys, time
out = open(sys.argv[1], "wb")
while True:
    b = sys.stdin.buffer.read1(32768)
    if not b:
        break
    out.write(b)
    time.sleep(0.01)
' "$T_DIR/many.out"
assert_eq "60000 60000" "$(grep -c . "$T_DIR/many.out") $(grep -o '"id":[0-9]*' "$T_DIR/many.out" | sort -u | wc -l)" \
	"recv --no-ack of 60,000 messages read slowly, with a 1 s lease: lines and distinct ids"

# A line over the limit in post --lines: the lines before it are posted
# (their ids printed), and the error says so.
python3 -c "import sys; sys.stdout.write('a\nb\n' + 'x' * 1048577 + '\nc\n')" >"$T_DIR/long.in"
rc=0
mbctl post longline --lines <"$T_DIR/long.in" >"$T_DIR/long.out" 2>"$T_DIR/long.err" || rc=$?
assert_eq 1 "$rc" "post --lines with a line over the limit"
assert_eq 2 "$(grep -c . "$T_DIR/long.out")" "ids printed before the long line"
grep -Eq 'line 3 holds (1048577 bytes|[0-9]+ bytes and more), the broker takes at most 1048576; the lines before it were posted' "$T_DIR/long.err" ||
	fail "post --lines, long line, said: $(cat "$T_DIR/long.err")"
assert_eq "a b" "$(mbctl recv longline -n 5 | xargs)" "the lines before the long one"

# A reader of post's ids that goes away: exit 1, and the error says
# which lines were posted (not a silent death by SIGPIPE, status 141).
{
	rc=0
	seq 100000 | mbctl post gone --lines 2>"$T_DIR/gone.err" || rc=$?
	echo "$rc" >"$T_DIR/gone.rc"
} | head -n 1 >/dev/null
assert_eq 1 "$(cat "$T_DIR/gone.rc")" "post --lines | head -n 1"
grep -Eq 'lines [0-9]+-[0-9]+ posted as messages [0-9]+ to [0-9]+, but their ids could not be written to standard output: Broken pipe' "$T_DIR/gone.err" ||
	fail "post --lines | head -n 1 said: $(cat "$T_DIR/gone.err")"

# A value the broker finds invalid is a bad argument, 2, as one mboxctl
# finds itself; a mailbox to delete that is not there is not to create.
mbctl create badargs
for args in "set badargs foo=1" "call badargs hi -H reply-to=x --timeout 1"; do
	# shellcheck disable=SC2086 # the words of args
	expect_rc 2 "$args" mbctl $args
	grep -q 'invalid argument' "$T_DIR/rc.err" || fail "$args: $(cat "$T_DIR/rc.err")"
done
expect_rc 5 "rm of a missing mailbox" mbctl rm no-such-mailbox
! grep -q 'create' "$T_DIR/rc.err" || fail "rm of a missing mailbox advises: $(cat "$T_DIR/rc.err")"

# A long option without its argument is named as it was typed.
for args in "post q --delay" "recv q --lease" "peek q --from"; do
	# shellcheck disable=SC2086 # the words of args
	expect_rc 2 "$args without its argument" mbctl $args
	grep -q "option '${args##* }' needs an argument" "$T_DIR/rc.err" ||
		fail "$args: $(cat "$T_DIR/rc.err")"
done

stop_broker
