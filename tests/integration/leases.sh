#!/bin/bash
# leases.sh - leases and what a consumer does with them (SPEC 3.3,
# doc/protocol.md 5.5-5.7, 5.10, 5.11, 6): a lease that runs out brings the
# message back and makes a late ack fail; per-recv lease lengths; touch
# extends a lease; nack with a delay; a given-back message keeps its place
# in line; reject sends it to the dead list at once. Then libmbox's
# edges (client-driver long-waits): a recv and a call that may wait more
# than a year, headers too large (-EMSGSIZE), mbox_strerror of any int.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

CLIENT=$(driver client-driver)

# line_field PREFIX N: word N of the driver's line starting with PREFIX.
line_field()
{
	awk -v p="$1" -v n="$2" '$1 == p { print $n; exit }' "$T_DIR/client.out"
}

# in_range WHAT VALUE LOW HIGH
in_range()
{
	if [ -z "$2" ] || [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then
		fail "$1: '$2' is not in $3..$4"
	fi
}

# check_late_ack MAILBOX: the driver's late-ack output: the message was
# ready again after its lease, and every late settle was refused.
check_late_ack()
{
	assert_eq "after ready=1 leased=0" "$(grep '^after ' "$T_DIR/client.out")" \
		"$1: counters after the lease ran out"
	for op in touch nack reject ack; do
		grep -q "^refused $op: ." "$T_DIR/client.out" ||
			fail "$1: late $op not refused: $(cat "$T_DIR/client.out")"
	done
}

start_broker

# --- the mailbox's lease runs out: the message is back, a late ack fails ---
mbctl create l1 --lease 1
id=$(mbctl post l1 slow-job)
client late-ack l1 0
assert_eq "$id" "$(line_field received 2)" "message taken by the driver"
# What is left of the lease when the driver sees it: under 1 s, and not
# much under unless the machine is very slow.
in_range "lease of a mailbox with --lease 1 (ms)" "$(line_field received 4)" 500 1010
check_late_ack l1
note "late ack: $(grep '^refused ack' "$T_DIR/client.out")"
mbctl recv l1 --json >"$T_DIR/l1.json"
assert_eq "$id" "$(json_num id <"$T_DIR/l1.json")" "id of the message after its lease ran out"
assert_eq 2 "$(json_num deliveries <"$T_DIR/l1.json")" "deliveries after the lease ran out"

# --- a recv's own lease length overrides the mailbox's (60 s) ---
mbctl create l2
id=$(mbctl post l2 quick)
client late-ack l2 300
assert_eq "$id" "$(line_field received 2)" "message taken with a 300 ms lease"
in_range "lease of a recv with 300 ms (ms)" "$(line_field received 4)" 50 310
check_late_ack l2
# mboxctl recv --lease shows the deadline it got: 0.5 s after the broker
# took the recv, which was between before_ns and after_ns.
before_ns=$(date +%s%N)
mbctl recv l2 --lease 0.5 --json >"$T_DIR/l2.json"
after_ns=$(date +%s%N)
dl=$(json_num deadline_ns <"$T_DIR/l2.json")
in_range "deadline_ns of recv --lease 0.5 (ns)" "${dl:-0}" \
	$((before_ns + 500000000)) $((after_ns + 500000000))

# --- touch extends a lease, again and again ---
mbctl create l3
id=$(mbctl post l3 long-job)
client touch l3 600
assert_eq "acked $id" "$(grep '^acked' "$T_DIR/client.out")" "ack after the touches"
note "$(grep '^touched' "$T_DIR/client.out")"
expect_rc 3 "recv after the touched message was acked" mbctl recv l3 --wait 0
assert_eq 0 "$(ls_num l3 leased)" "leased count after the ack"

# --- nack with a delay ---
mbctl create l4
id=$(mbctl post l4 retry-me)
client nack-delay l4 600
assert_eq "early 0" "$(grep '^early' "$T_DIR/client.out")" \
	"a recv right after the nack with delay"
assert_eq "during ready=0 delayed=1" "$(grep '^during' "$T_DIR/client.out")" \
	"counters during the nack delay"
assert_eq "$id" "$(line_field redelivered 2)" "message redelivered after the delay"
in_range "ms from the nack to the redelivery (delay 600)" \
	"$(line_field redelivered 4)" 550 3000
assert_eq 2 "$(line_field redelivered 7)" "deliveries after nack and redelivery"
# Without a delay, it is ready at once.
mbctl post l4 again >/dev/null
client recv-nack l4 1
assert_eq again "$(mbctl recv l4)" "message nacked without a delay"

# --- a message given back keeps its place in line ---
mbctl create l5
printf 'one\ntwo\nthree\n' | mbctl post l5 --lines >"$T_DIR/l5.ids"
client recv-nack l5 1
assert_eq "$(sed -n 1p "$T_DIR/l5.ids") 1" "$(cat "$T_DIR/client.out")" "nacked message and its deliveries"
mbctl recv l5 -n 3 --json >"$T_DIR/l5.json"
check_json_lines "$T_DIR/l5.json"
assert_eq "one two three" "$(while read -r l; do json_str data <<<"$l"; done <"$T_DIR/l5.json" | words)" \
	"order after a nack"
assert_eq "2 1 1" "$(while read -r l; do json_num deliveries <<<"$l"; done <"$T_DIR/l5.json" | words)" \
	"deliveries after a nack"
# The same after a lease ran out.
printf 'four\nfive\n' | mbctl post l5 --lines >/dev/null
client late-ack l5 200
assert_eq "four five" "$(mbctl recv l5 -n 2 | words)" "order after a lease ran out"
# A newer message of a higher priority still comes first.
printf 'six\nseven\n' | mbctl post l5 --lines >/dev/null
client recv-nack l5 1
mbctl post l5 eight --priority 1 >/dev/null
assert_eq "eight six seven" "$(mbctl recv l5 -n 3 | words)" "priority before a given-back message"

# --- reject: dead at once, reason rejected ---
mbctl create l6
printf 'poison\nfine\n' | mbctl post l6 --lines >"$T_DIR/l6.ids"
client reject l6
assert_eq "rejected $(sed -n 1p "$T_DIR/l6.ids")" "$(cat "$T_DIR/client.out")" "driver's reject"
assert_eq 1 "$(ls_num l6 dead)" "dead count right after the reject"
assert_eq 1 "$(ls_num l6 ready)" "ready count after the reject"
assert_eq 0 "$(ls_num l6 leased)" "leased count after the reject"
mbctl peek l6 --dead --json >"$T_DIR/l6.dead"
check_json_lines "$T_DIR/l6.dead"
assert_eq "$(sed -n 1p "$T_DIR/l6.ids")" "$(json_num id <"$T_DIR/l6.dead")" "id of the rejected message"
assert_eq rejected "$(json_str dead_reason <"$T_DIR/l6.dead")" "dead reason of a rejected message"
assert_eq poison "$(json_str data <"$T_DIR/l6.dead")" "payload of the rejected message"
assert_eq fine "$(mbctl recv l6)" "the message after the rejected one"
expect_rc 3 "recv: the rejected message is not delivered" mbctl recv l6 --wait 0.3

# --- libmbox's edges: waits longer than the broker's year, headers too
# large, any int to mbox_strerror ---
mbctl create l7
client long-waits l7
assert_eq "long waits ok" "$(cat "$T_DIR/client.out")" "client-driver long-waits"

stop_broker
