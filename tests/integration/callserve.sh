#!/bin/bash
# callserve.sh - `mboxctl call` and `mboxctl serve` (SPEC 3.7 and 6,
# doc/protocol.md 5.24): round trips with the payload exact, a binary
# payload larger than one datagram both ways, an error reply (call exits 1
# and prints CMD's stderr), a reply too large for the broker, a timeout
# (exit 3), -j concurrency, headers passed to CMD, a message without
# reply-to, and SIGTERM answering the running request before exiting 0.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

# start_serve NAME ARGS...: mboxctl serve in the background (start_ctl),
# pid in SERVE_PID.
start_serve()
{
	start_ctl "$1" serve "${@:2}"
	SERVE_PID=$CTL_PID
}

# end_serve PID NAME: SIGTERM, require exit 0 within 15 s.
end_serve()
{
	end_ctl "$@"
}

# The reply mailbox lives no longer than its call: only these are left.
mailboxes()
{
	mbctl ls --json | sed -n 's/^.*"name":"\([^"]*\)".*$/\1/p' | sort | words
}

# A small max message size so that "too large" is cheap to reach.
start_broker --max-msg-size 512K

# --- round trip, exact payload, headers in the environment ---
mbctl create svc
start_serve s svc -- sh -c 'printf "re:%s/%s" "$(cat)" "$MBOX_HEADER_LANG"'
s=$SERVE_PID
expect_rc 0 "call" mbctl call svc hello -H lang=fr --timeout 10
assert_eq "re:hello/fr" "$(cat "$T_DIR/rc.out")" "reply"
assert_eq 11 "$(wc -c <"$T_DIR/rc.out")" "reply bytes (nothing added)"
printf 'from stdin' | mbctl call svc --timeout 10 >"$T_DIR/c.out" || fail "call from stdin"
assert_eq "re:from stdin/" "$(cat "$T_DIR/c.out")" "reply to stdin request"
end_serve "$s" s
assert_eq svc "$(mailboxes)" "mailboxes after the calls"
note "round trip: exact payload, -H header seen by the server"

# --- binary payload larger than a datagram, both ways ---
head -c 300000 /dev/urandom >"$T_DIR/bin"
start_serve b svc -- cat
b=$SERVE_PID
mbctl call svc --timeout 20 <"$T_DIR/bin" >"$T_DIR/bin.out" || fail "binary call"
cmp -s "$T_DIR/bin" "$T_DIR/bin.out" || fail "binary payload changed on the round trip"
# A request beyond the broker's max message size is refused at once.
expect_rc 1 "call with a request over max_msg_size" mbctl call svc --timeout 20 \
	< <(head -c 600000 /dev/zero)
grep -q 'too large' "$T_DIR/rc.err" || fail "request too large: $(cat "$T_DIR/rc.err")"
note "a 300 kB binary payload came back exact"
end_serve "$b" b

start_serve big svc -- sh -c 'head -c 600000 /dev/zero'
big=$SERVE_PID
expect_rc 1 "call whose reply is too large" mbctl call svc x --timeout 20
grep -q 'larger than the broker' "$T_DIR/rc.err" || fail "too large: $(cat "$T_DIR/rc.err")"
[ ! -s "$T_DIR/rc.out" ] || fail "too large: something on stdout"
end_serve "$big" big
note "a reply beyond max_msg_size is an error reply"

# --- error reply: exit 1 with CMD's stderr ---
start_serve e svc -- sh -c 'cat >/dev/null; echo "no such user: bob" >&2; exit 4'
e=$SERVE_PID
expect_rc 1 "call to a failing server" mbctl call svc bob --timeout 10
grep -q '^no such user: bob$' "$T_DIR/rc.err" || fail "error text: $(cat "$T_DIR/rc.err")"
grep -q 'status 4' "$T_DIR/rc.err" || fail "status: $(cat "$T_DIR/rc.err")"
# The server's operator sees the command's stderr too.
wait_grep "$T_DIR/e.err" 'request [0-9]*: the command exited with status 4' 50 ||
	fail "serve did not report the failed request: $(cat "$T_DIR/e.err")"
grep -q '^no such user: bob$' "$T_DIR/e.err" || fail "serve's stderr: $(cat "$T_DIR/e.err")"
[ ! -s "$T_DIR/rc.out" ] || fail "error reply: something on stdout: $(cat "$T_DIR/rc.out")"
# The request itself was answered: acked, not back in line.
assert_eq 0 "$(ls_num svc ready)" "requests left after the error reply"
end_serve "$e" e
note "a failing server: call exits 1 with its stderr"

# --- no server: timeout, exit 3 ---
mbctl create idle
t0=$(now_ms)
expect_rc 3 "call with no server" mbctl call idle ping --timeout 0.7
dt=$(($(now_ms) - t0))
[ "$dt" -ge 650 ] && [ "$dt" -lt 5000 ] || fail "timeout 0.7 s took $dt ms"
grep -q 'no reply' "$T_DIR/rc.err" || fail "timeout message: $(cat "$T_DIR/rc.err")"
# The request was not taken in time: it expires instead of being done
# later for a caller who gave up.
wait_num idle dead 1 30 || fail "the timed-out request did not expire: $(mbctl ls)"
assert_eq 0 "$(ls_num idle ready)" "requests left after the timeout"
expect_rc 2 "call with a bad timeout" mbctl call svc x --timeout soon
expect_rc 2 "serve without a command" mbctl serve svc
note "no server: exit 3 after $dt ms (timeout 0.7 s)"

# --- -j 3: three requests at once ---
start_serve j svc -j 3 -- sh -c 'echo "s $(date +%s%N)" >>"$0"; sleep 1
	echo "e $(date +%s%N)" >>"$0"; cat' "$T_DIR/j.log"
j=$SERVE_PID
pids=()
for i in 1 2 3; do
	timeout 40 "$MBOXCTL" -S "$SOCK" call svc "c$i" --timeout 20 >"$T_DIR/j$i.out" 2>&1 &
	pids+=($!)
	track_pid "$!"
done
for i in 1 2 3; do
	wait "${pids[$((i - 1))]}" || fail "concurrent call $i: $(cat "$T_DIR/j$i.out")"
	untrack_pid "${pids[$((i - 1))]}"
	assert_eq "c$i" "$(cat "$T_DIR/j$i.out")" "concurrent reply $i"
done
last_start=$(sed -n 's/^s //p' "$T_DIR/j.log" | sort -n | tail -n 1)
first_end=$(sed -n 's/^e //p' "$T_DIR/j.log" | sort -n | head -n 1)
[ "$last_start" -lt "$first_end" ] || fail "-j 3: the requests did not run at once"
end_serve "$j" j
note "-j 3: three 1 s requests answered at once"

# --- a message without reply-to is not a request: not run ---
mbctl post svc stray >/dev/null
start_serve st svc -- sh -c 'd=$(cat); echo "ran on $d" >>"$0"; printf %s "$d"' \
	"$T_DIR/st.log"
st=$SERVE_PID
wait_num svc dead 1 50 || fail "a message without reply-to was not moved to the dead list"
grep -q 'not a request' "$T_DIR/st.err" || fail "no word about it: $(cat "$T_DIR/st.err")"
# A real request after it is run, so the command had its chance.
assert_eq ok "$(mbctl call svc ok --timeout 10 2>&1)" "a request after the stray message"
end_serve "$st" st
assert_eq "ran on ok" "$(cat "$T_DIR/st.log")" "what the command ran on"
note "a message without reply-to goes to the dead list, the command not run"

# --- a command's stderr reaches serve's stderr when it succeeds too ---
start_serve lg svc -- sh -c 'echo "server log line" >&2; cat'
lg=$SERVE_PID
assert_eq hi "$(mbctl call svc hi --timeout 10)" "reply of a server that logs"
end_serve "$lg" lg
grep -q '^server log line$' "$T_DIR/lg.err" || fail "serve dropped its command's stderr: $(cat "$T_DIR/lg.err")"

# --- SIGTERM: the running request is answered, then exit 0 ---
start_serve t svc -- sh -c 'echo started >>"$0"; sleep 1; echo -n "late:$(cat)"' "$T_DIR/t.log"
t=$SERVE_PID
"$MBOXCTL" -S "$SOCK" call svc q --timeout 20 >"$T_DIR/tc.out" 2>"$T_DIR/tc.err" &
tc=$!
track_pid "$tc"
wait_lines "$T_DIR/t.log" 1 50 || fail "SIGTERM: the request did not start"
end_serve "$t" t
wait "$tc" || fail "call during SIGTERM: $(cat "$T_DIR/tc.err")"
untrack_pid "$tc"
assert_eq "late:q" "$(cat "$T_DIR/tc.out")" "reply of the request running at SIGTERM"
assert_eq 0 "$(ls_num svc ready)" "requests left after SIGTERM"
assert_eq 0 "$(ls_num svc leased)" "leased after SIGTERM"
note "SIGTERM: the running request was answered, exit 0"

# --- create --temp: the mailbox lasts as long as the command ---
mkfifo "$T_DIR/tin"
"$MBOXCTL" -S "$SOCK" create --temp tmpbox <"$T_DIR/tin" 2>"$T_DIR/tmp.err" &
tp=$!
track_pid "$tp"
exec 3>"$T_DIR/tin"
for ((i = 0; i < 50; i++)); do
	[[ " $(mailboxes) " == *" tmpbox "* ]] && break
	sleep 0.1
done
[[ " $(mailboxes) " == *" tmpbox "* ]] || fail "create --temp: no mailbox: $(cat "$T_DIR/tmp.err")"
grep -q 'lasts as long as' "$T_DIR/tmp.err" || fail "create --temp said: $(cat "$T_DIR/tmp.err")"
mbctl post tmpbox x >/dev/null
exec 3>&- # end of its standard input: it exits, the mailbox goes
wait_dead "$tp" 50 || fail "create --temp still running after EOF"
rc=0
wait "$tp" || rc=$?
untrack_pid "$tp"
assert_eq 0 "$rc" "create --temp exit status after EOF"
assert_eq "idle svc" "$(mailboxes)" "mailboxes after create --temp ended"
"$MBOXCTL" -S "$SOCK" create --temp tmp2 <"$T_DIR/tin" 2>/dev/null &
tp=$!
track_pid "$tp"
exec 3>"$T_DIR/tin"
for ((i = 0; i < 50; i++)); do
	[[ " $(mailboxes) " == *" tmp2 "* ]] && break
	sleep 0.1
done
kill -TERM "$tp"
wait_dead "$tp" 50 || fail "create --temp still running after SIGTERM"
rc=0
wait "$tp" || rc=$?
untrack_pid "$tp"
exec 3>&-
assert_eq 0 "$rc" "create --temp exit status after SIGTERM"
assert_eq "idle svc" "$(mailboxes)" "mailboxes after create --temp got SIGTERM"
note "create --temp: the mailbox lives until EOF or SIGTERM"

# --- the broker stops during a call: the request may still be served ---
mbctl purge svc >/dev/null
"$MBOXCTL" -S "$SOCK" call svc pending --timeout 30 >"$T_DIR/sc.out" 2>"$T_DIR/sc.err" &
sc=$!
track_pid "$sc"
wait_num svc ready 1 50 || fail "the call's request was not stored"
stop_broker
wait_dead "$sc" 100 || fail "call still runs after the broker stopped"
rc=0
wait "$sc" || rc=$?
untrack_pid "$sc"
assert_eq 1 "$rc" "call's exit status when the broker stopped"
grep -q 'the request may have been stored and may still be served' "$T_DIR/sc.err" ||
	fail "call's message when the broker stopped: $(cat "$T_DIR/sc.err")"
start_broker --max-msg-size 512K
assert_eq 1 "$(ls_num svc ready)" "the request after the restart"
stop_broker
note "a call cut by the broker's stop says the request may still be served"
