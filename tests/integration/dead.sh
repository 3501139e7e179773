#!/bin/bash
# dead.sh - the dead list (SPEC 3.4, doc/protocol.md 5.9, 5.19, 5.20, 6):
# max_deliveries counted through nacks, lease expiry and reader death;
# peek --dead with the reasons; kick puts dead messages back with their
# delivery count reset; purge removes ready or dead messages, never leased
# ones.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

CLIENT=$(driver client-driver)

# counts MAILBOX: "ready=R leased=L delayed=D dead=X" from ls --json.
counts()
{
	local line
	line=$(mbctl ls --json | grep -F "\"name\":\"$1\"")
	printf 'ready=%s leased=%s delayed=%s dead=%s\n' \
		"$(json_num ready <<<"$line")" "$(json_num leased <<<"$line")" \
		"$(json_num delayed <<<"$line")" "$(json_num dead <<<"$line")"
}

# dead_reasons MAILBOX: "ID:REASON ..." of its dead list, in id order.
dead_reasons()
{
	local line
	mbctl peek "$1" --dead -n 100 --json >"$T_DIR/dead.json"
	check_json_lines "$T_DIR/dead.json"
	while read -r line; do
		printf '%s:%s\n' "$(json_num id <<<"$line")" \
			"$(json_str dead_reason <<<"$line")"
	done <"$T_DIR/dead.json" | words
}

start_broker

# --- max_deliveries through nacks ---
mbctl create md --max-deliveries 2
id=$(mbctl post md flaky)
client recv-nack md 2
assert_eq "$id 1 $id 2" "$(words <"$T_DIR/client.out")" "deliveries of the nacked message"
assert_eq "ready=0 leased=0 delayed=0 dead=1" "$(counts md)" \
	"counters after max_deliveries nacks"
expect_rc 3 "recv of a message dead after max deliveries" mbctl recv md --wait 0.3
assert_eq "$id:max-deliveries" "$(dead_reasons md)" "dead list after nacks"
# Below the limit a message is given back as usual.
mbctl post md once >/dev/null
client recv-nack md 1
assert_eq "ready=1 leased=0 delayed=0 dead=1" "$(counts md)" \
	"counters after one nack of two allowed"

# --- max_deliveries through lease expiry (the holder stays alive) ---
mbctl create mx --max-deliveries 1
idx=$(mbctl post mx hung)
hold mx 1 300
assert_eq "$idx" "$(cat "$T_DIR/held")" "message held with a 300 ms lease"
wait_num mx dead 1 30 ||
	fail "message not dead 3 s after its only lease ran out: $(counts mx)"
alive "$holder" || fail "the holder died: $(cat "$T_DIR/holder.err")"
kill9_pid "$holder"
assert_eq "ready=0 leased=0 delayed=0 dead=1" "$(counts mx)" "counters after lease expiry"
assert_eq "$idx:max-deliveries" "$(dead_reasons mx)" "dead list after lease expiry"

# --- max_deliveries through reader death ---
mbctl create mk --max-deliveries 1 --lease 600
idk=$(mbctl post mk crashy)
mbctl post mk next >/dev/null
hold mk 1 0
kill9_pid "$holder"
wait_num mk dead 1 50 || fail "message not dead after its reader died: $(counts mk)"
assert_eq "ready=1 leased=0 delayed=0 dead=1" "$(counts mk)" "counters after reader death"
assert_eq "$idk:max-deliveries" "$(dead_reasons mk)" "dead list after reader death"
assert_eq next "$(mbctl recv mk)" "the next message is delivered"

# --- the reasons side by side: rejected, expired, max-deliveries ---
mbctl create reasons --max-deliveries 1
ida=$(mbctl post reasons poison)
client reject reasons
idb=$(mbctl post reasons stale --ttl 0.2)
idc=$(mbctl post reasons retried)
wait_num reasons dead 2 30 || fail "ttl 0.2 s: not dead after 3 s: $(counts reasons)"
client recv-nack reasons 1
assert_eq "$ida:rejected $idb:expired $idc:max-deliveries" "$(dead_reasons reasons)" \
	"dead reasons"
# peek --dead shows only dead messages; plain peek only the queue.
mbctl post reasons alive >/dev/null
mbctl peek reasons -n 10 --json >"$T_DIR/queue.json"
assert_eq 1 "$(wc -l <"$T_DIR/queue.json")" "peek of the queue beside 3 dead"
assert_eq alive "$(json_str data <"$T_DIR/queue.json")" "the queue beside 3 dead"
grep -q dead_reason "$T_DIR/queue.json" && fail "live message shown with a dead_reason"

# --- kick ---
expect_rc 0 "kick reasons 1" mbctl kick reasons 1
grep -q 'kicked 1 message' "$T_DIR/rc.out" || fail "kick 1 printed: $(cat "$T_DIR/rc.out")"
assert_eq "ready=2 leased=0 delayed=0 dead=2" "$(counts reasons)" "counters after kick 1"
assert_eq "$idb:expired $idc:max-deliveries" "$(dead_reasons reasons)" \
	"dead list after kicking the oldest"
# The kicked one is deliverable again, in its place, deliveries reset.
mbctl recv reasons -n 2 --json --no-ack >"$T_DIR/kicked.json"
assert_eq "$ida" "$(sed -n 1p "$T_DIR/kicked.json" | json_num id)" "kicked message first (lowest id)"
assert_eq 1 "$(sed -n 1p "$T_DIR/kicked.json" | json_num deliveries)" \
	"deliveries of the kicked message (reset, then delivered once)"
# --no-ack gave both back; with max_deliveries 1 that made them dead again.
assert_eq "ready=0 leased=0 delayed=0 dead=4" "$(counts reasons)" \
	"counters after the kicked message used its one delivery"
mbctl kick reasons --json >"$T_DIR/kick.json"
check_json_lines "$T_DIR/kick.json"
assert_eq 4 "$(json_num kicked <"$T_DIR/kick.json")" "kick all"
assert_eq "ready=4 leased=0 delayed=0 dead=0" "$(counts reasons)" "counters after kick all"
assert_eq 4 "$(mbctl recv reasons -n 10 | wc -l)" "kicked messages delivered"
mbctl kick reasons --json >"$T_DIR/kick.json"
assert_eq 0 "$(json_num kicked <"$T_DIR/kick.json")" "kick of an empty dead list"

# --- purge ---
mbctl create pg
printf 'r1\nr2\nheld\n' | mbctl post pg --lines >/dev/null
mbctl post pg later --delay 60 >/dev/null
mbctl post pg bad >/dev/null
# Order: r1 r2 held bad. Take r1..bad and reject "bad"; hold "held".
mbctl recv pg -n 2 >/dev/null   # r1, r2 acked
hold pg 1 0 "$T_DIR/go"
client reject pg
printf 'r3\nr4\n' | mbctl post pg --lines >/dev/null
assert_eq "ready=2 leased=1 delayed=1 dead=1" "$(counts pg)" "counters before purge"
mbctl purge pg --dead --json >"$T_DIR/purge.json"
assert_eq 1 "$(json_num purged <"$T_DIR/purge.json")" "purge --dead count"
assert_eq "ready=2 leased=1 delayed=1 dead=0" "$(counts pg)" "counters after purge --dead"
mbctl purge pg --json >"$T_DIR/purge.json"
assert_eq 3 "$(json_num purged <"$T_DIR/purge.json")" "purge count (ready and delayed)"
assert_eq "ready=0 leased=1 delayed=0 dead=0" "$(counts pg)" "counters after purge"
# The held message survived and its holder can still ack it.
touch "$T_DIR/go"
rc=0
wait_dead "$holder" 150 || fail "the holder did not ack within 15 s: $(cat "$T_DIR/holder.err")"
wait "$holder" || rc=$?
untrack_pid "$holder"
assert_eq 0 "$rc" "holder's ack after the purge ($(cat "$T_DIR/holder.err"))"
grep -q '^acked 1$' "$T_DIR/held" || fail "holder did not ack: $(cat "$T_DIR/held")"
assert_eq "ready=0 leased=0 delayed=0 dead=0" "$(counts pg)" "counters at the end"
# Plain output: the count.
mbctl post pg x >/dev/null
assert_eq 1 "$(mbctl purge pg | grep -o '[0-9][0-9]*' | head -n 1)" "purge text output"

stop_broker
