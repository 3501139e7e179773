#!/bin/bash
# fanout.sh - publish / subscribe fan-out (SPEC 3.6, doc/protocol.md 5.15,
# 5.16, 5.18, 5.3 temp): topic patterns with '*' and '>', one copy per
# bound mailbox, all copies or none, bindings durable and deleted with
# their mailbox, temporary mailboxes gone with their connection.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

CLIENT=$(driver client-driver)

# readies MAILBOX...: their ready counts, space-separated.
readies()
{
	local mb
	for mb in "$@"; do ls_num "$mb" ready; done | words
}

# publish TOPIC [ARGS...]: publish and print the number of copies made.
publish()
{
	local out
	out=$(mbctl publish "$@") || fail "publish $* failed"
	grep -o '[0-9][0-9]*' <<<"$out" | head -n 1
}

start_broker

mbctl create a
mbctl create b
mbctl create c
mbctl bind a 'orders.*'
mbctl bind b 'orders.>'
mbctl bind c 'orders.eu.created'

assert_eq 2 "$(publish orders.eu e1)" "copies of orders.eu"
assert_eq "1 1 0" "$(readies a b c)" "ready counts after orders.eu"
assert_eq 2 "$(publish orders.eu.created e2)" "copies of orders.eu.created"
assert_eq "1 2 1" "$(readies a b c)" "ready counts after orders.eu.created"
assert_eq 0 "$(publish orders e3)" "copies of orders ('>' needs a word)"
assert_eq 0 "$(publish x.y e4)" "copies of x.y"
assert_eq 1 "$(publish orders.us.created.late e5)" "copies of a four-word topic"
assert_eq "1 3 1" "$(readies a b c)" "ready counts after the unmatched topics"

# Each copy is an ordinary message: its own id, the payload, the options.
assert_eq e1 "$(mbctl recv a)" "copy in a"
assert_eq "e1 e2 e5" "$(mbctl recv b -n 5 | words)" "copies in b"
publish orders.eu.created urgent --priority 9 --ttl 60 --header k=v >/dev/null
mbctl recv c -n 2 --json >"$T_DIR/c.json"
check_json_lines "$T_DIR/c.json"
assert_eq urgent "$(sed -n 1p "$T_DIR/c.json" | json_str data)" "priority of a published copy"
assert_eq 9 "$(sed -n 1p "$T_DIR/c.json" | json_num priority)" "priority field of the copy"
grep -q '"headers":{"k":"v"}' "$T_DIR/c.json" || fail "headers of a published copy: $(cat "$T_DIR/c.json")"
grep -q '"expires_ns":[1-9]' "$T_DIR/c.json" || fail "ttl of a published copy: $(cat "$T_DIR/c.json")"
mbctl recv b --json >"$T_DIR/b.json"
id_b=$(json_num id <"$T_DIR/b.json")
id_c=$(sed -n 1p "$T_DIR/c.json" | json_num id)
if [ -z "$id_b" ] || [ "$id_b" = "$id_c" ]; then
	fail "copies share id '$id_b'"
fi

# Two matching patterns of one mailbox still make one copy.
mbctl bind a 'orders.>'
assert_eq 3 "$(publish orders.eu.created e6)" "copies with a bound twice"
assert_eq "1 1 1" "$(readies a b c)" "ready counts (a bound twice)"
assert_eq 2 "$(publish orders.eu e7)" "copies of orders.eu with a bound twice"
assert_eq "2 2 1" "$(readies a b c)" "ready counts after orders.eu"
expect_rc 1 "binding a pattern twice" mbctl bind a 'orders.>'

# unbind
mbctl unbind a 'orders.>'
assert_eq 2 "$(publish orders.eu.created e8)" "copies after unbinding a's second pattern"
mbctl unbind a 'orders.*'
assert_eq 1 "$(publish orders.eu e9)" "copies after unbinding a entirely"
# Not bound: NOT_FOUND, which mboxctl may report as 1 or as 5.
rc=0
mbctl unbind a 'orders.*' 2>"$T_DIR/unbind.err" || rc=$?
case $rc in
1 | 5) ;;
*) fail "unbind of a pattern not bound exited $rc, expected 1 or 5" ;;
esac
[ -s "$T_DIR/unbind.err" ] || fail "unbind of a pattern not bound said nothing"
mbctl bind a 'orders.*'

# Bad patterns and topics are refused, clearly.
for pat in 'a.>.b' 'a..b' '.a' 'a.' 'a.b*' '>.a'; do
	expect_rc 2 "bind to '$pat'" mbctl bind a "$pat"
	[ -s "$T_DIR/rc.err" ] || fail "bad pattern '$pat' refused without a message"
done
note "bad pattern: $(head -n 1 "$T_DIR/rc.err")"
for topic in 'orders.*' 'orders.>' 'a..b' '.a'; do
	expect_rc 2 "publish to '$topic'" mbctl publish "$topic" x
	[ -s "$T_DIR/rc.err" ] || fail "bad topic '$topic' refused without a message"
done
expect_rc 5 "bind of a missing mailbox" mbctl bind missing 'orders.*'

# All or nothing: one full mailbox stops every copy.
mbctl purge a >/dev/null
mbctl purge b >/dev/null
mbctl purge c >/dev/null
mbctl create full --max-msgs 1
mbctl bind full 'orders.eu'
mbctl post full filler >/dev/null
expect_rc 1 "publish to a full mailbox" mbctl publish orders.eu x
grep -qi 'full' "$T_DIR/rc.err" || fail "publish to a full mailbox: $(cat "$T_DIR/rc.err")"
assert_eq "0 0 0 1" "$(readies a b c full)" "ready counts after the refused publish"
mbctl recv full >/dev/null
assert_eq 3 "$(publish orders.eu x)" "copies once full has room"
assert_eq "1 1 0 1" "$(readies a b c full)" "ready counts after the publish"
mbctl rm full --force

# A full mailbox of another owner (anyone may bind to any topic) is left
# out and counted; it does not stop the publish.
mbctl purge a >/dev/null
mbctl purge b >/dev/null
mbctl create theirs --max-msgs 1
mbctl bind theirs 'orders.>'
mbctl post theirs filler >/dev/null
mbctl chown theirs 4001 # we are an admin: the broker's own uid
expect_rc 0 "publish beside another owner's full mailbox" \
	mbctl publish orders.eu y --json
assert_eq '{"copies":2,"skipped":1}' "$(cat "$T_DIR/rc.out")" "publish's answer"
grep -q '1 full mailbox of other owners left out' "$T_DIR/rc.err" ||
	fail "publish did not say it left a mailbox out: $(cat "$T_DIR/rc.err")"
assert_eq "1 1 0 1" "$(readies a b c theirs)" "ready counts after the publish"
grep -q 'left out mailbox theirs (owner uid 4001): it is full' "$T_DIR/mboxd.log" ||
	fail "the broker did not log the mailbox left out"
mbctl rm theirs --force

# Bindings survive a restart.
stop_broker
start_broker
assert_eq 2 "$(publish orders.eu after-restart)" "copies of orders.eu after a restart"
assert_eq 2 "$(publish orders.eu.created after-restart)" "copies of orders.eu.created after a restart"

# Deleting a mailbox deletes its bindings.
expect_rc 1 "rm of a bound mailbox holding messages" mbctl rm b
mbctl rm b --force
assert_eq 1 "$(publish orders.eu.created after-rm)" "copies after rm --force of b"
assert_eq 1 "$(publish orders.eu after-rm)" "copies of orders.eu after rm --force of b"
# A new mailbox of the same name starts without bindings.
mbctl create b
assert_eq 1 "$(publish orders.eu.created fresh-b)" "copies with a new, unbound b"
assert_eq 0 "$(ls_num b ready)" "messages in the new b"

# A temporary mailbox lives and dies with its connection.
"$CLIENT" "$SOCK" temp live.1 'orders.>' >"$T_DIR/temp.out" 2>"$T_DIR/temp.err" &
tmp=$!
track_pid "$tmp"
wait_lines "$T_DIR/temp.out" 1 100 || fail "temp driver: $(cat "$T_DIR/temp.err")"
assert_eq ready "$(cat "$T_DIR/temp.out")" "temp driver's start"
assert_eq 2 "$(publish orders.eu.created live)" "copies with the temporary mailbox"
assert_eq 1 "$(ls_num live.1 ready)" "copies in the temporary mailbox"
assert_eq live "$(mbctl peek live.1 --json | json_str data)" "copy in the temporary mailbox"
kill9_pid "$tmp"
for ((i = 0; i < 50; i++)); do
	mbctl ls --json | grep -qF '"name":"live.1"' || break
	sleep 0.1
done
mbctl ls --json | grep -qF '"name":"live.1"' &&
	fail "temporary mailbox still listed 5 s after its connection died"
assert_eq 1 "$(publish orders.eu.created gone)" "copies after the temporary mailbox went"
expect_rc 5 "peek of the dead temporary mailbox" mbctl peek live.1

stop_broker
