#!/bin/bash
# options.sh - the options of a message and of a mailbox's delivery
# (SPEC 3.2, doc/protocol.md 5.4, 5.21, 6): priority, delay, ttl, headers,
# dedup and pause/resume, against a real broker through mboxctl.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

start_broker

# --- priority: higher first, FIFO within a priority ---
mbctl create prio
mbctl post prio a0 --priority 0 >/dev/null
mbctl post prio b5 --priority 5 >/dev/null
mbctl post prio c9 --priority 9 >/dev/null
mbctl post prio d0 --priority 0 >/dev/null
assert_eq "c9 b5 a0 d0" "$(mbctl recv prio -n 4 | words)" "recv order by priority"
expect_rc 3 "recv of the drained mailbox" mbctl recv prio --wait 0

# An urgent message jumps a line of 100.
seq 1 100 | sed 's/^/q/' | mbctl post prio --lines >/dev/null
mbctl post prio urgent --priority 9 >/dev/null
mbctl post prio p5 -p 5 >/dev/null
assert_eq "urgent p5 q1 q2" "$(mbctl recv prio -n 4 | words)" \
	"urgent behind 100 queued"
mbctl recv prio --json >"$T_DIR/prio.json"
assert_eq 0 "$(json_num priority <"$T_DIR/prio.json")" "priority shown by recv --json"
mbctl post prio shown -p 7 >/dev/null
mbctl recv prio --json >"$T_DIR/prio.json"
assert_eq shown "$(json_str data <"$T_DIR/prio.json")" "p7 before the p0 rest"
assert_eq 7 "$(json_num priority <"$T_DIR/prio.json")" "priority 7 in recv --json"
# Refused by mboxctl (usage, 2) or by the broker (1), never stored.
rc=0
mbctl post prio bad --priority 10 >/dev/null 2>"$T_DIR/p10.err" || rc=$?
case $rc in
1 | 2) ;;
*) fail "post --priority 10 exited $rc, expected 1 (or 2)" ;;
esac
[ -s "$T_DIR/p10.err" ] || fail "priority 10 refused without a message"

# --- delay: not before it is due; a waiting recv gets it when it is ---
mbctl create later
t0=$(now_ms)
mbctl post later soon --delay 1 >/dev/null
expect_rc 3 "recv of a delayed message" mbctl recv later --wait 0
assert_eq 1 "$(ls_num later delayed)" "delayed count"
assert_eq 0 "$(ls_num later ready)" "ready count while delayed"
# Nothing else happens on the broker while this recv waits: only a timer
# of the broker can make the message due.
got=$(mbctl recv later --wait 10)
ms=$(($(now_ms) - t0))
assert_eq soon "$got" "delayed message to a waiting recv"
[ "$ms" -ge 900 ] || fail "delay 1 s: delivered after ${ms} ms"
[ "$ms" -lt 3000 ] || fail "delay 1 s: delivered only after ${ms} ms"
note "delayed message (1 s) delivered after ${ms} ms"
# Delays order nothing: a due message comes by priority and id as usual.
mbctl post later d1 --delay 1 >/dev/null
mbctl post later n2 >/dev/null
assert_eq n2 "$(mbctl recv later)" "the undelayed message first"
assert_eq d1 "$(mbctl recv later --wait 5)" "the delayed one when due"

# --- ttl: expired messages go dead by themselves, never delivered ---
mbctl create short
mbctl post short gone --ttl 1 >/dev/null
mbctl post short kept >/dev/null
mbctl peek short -n 10 --json >"$T_DIR/ttl.peek"
grep -q '"expires_ns":[1-9]' "$T_DIR/ttl.peek" ||
	fail "peek --json shows no expires_ns for a message with a ttl: $(cat "$T_DIR/ttl.peek")"
# No client looks at the mailbox until well after the expiry.
sleep 1.7
assert_eq 1 "$(ls_num short dead)" "dead count after the ttl ran out"
assert_eq 1 "$(ls_num short ready)" "ready count after the ttl ran out"
mbctl peek short --dead --json >"$T_DIR/ttl.dead"
check_json_lines "$T_DIR/ttl.dead"
assert_eq gone "$(json_str data <"$T_DIR/ttl.dead")" "expired message"
assert_eq expired "$(json_str dead_reason <"$T_DIR/ttl.dead")" "dead reason"
assert_eq kept "$(mbctl recv short)" "the message without a ttl"
expect_rc 3 "recv after expiry" mbctl recv short --wait 0.3
# A delayed message that expires before it is due is never delivered.
mbctl post short never --delay 1 --ttl 0.3 >/dev/null
expect_rc 3 "recv of a message that expired while delayed" \
	mbctl recv short --wait 1.5
assert_eq 2 "$(ls_num short dead)" "dead count after the delayed expiry"

# The mailbox's ttl applies to posts without their own.
mbctl create mttl --ttl 2
mbctl post mttl default-ttl >/dev/null
mbctl post mttl own-ttl --ttl 60 >/dev/null
mbctl peek mttl -n 2 --json >"$T_DIR/mttl.peek"
now_ns=$(date +%s%N)
exp1=$(sed -n 1p "$T_DIR/mttl.peek" | json_num expires_ns)
exp2=$(sed -n 2p "$T_DIR/mttl.peek" | json_num expires_ns)
if [ -z "$exp1" ] || [ "$exp1" -le "$now_ns" ] ||
	[ "$exp1" -ge $((now_ns + 2000000000)) ]; then
	fail "mailbox ttl 2 s: expires_ns '$exp1', now $now_ns"
fi
if [ -z "$exp2" ] || [ "$exp2" -le $((now_ns + 50000000000)) ]; then
	fail "post --ttl 60 in a mailbox with ttl 2: expires_ns '$exp2', now $now_ns"
fi
wait_num mttl dead 1 40 || fail "mailbox ttl: dead count $(ls_num mttl dead) after 4 s"
assert_eq own-ttl "$(mbctl recv mttl)" "message with its own longer ttl"
mbctl peek mttl --dead --json >"$T_DIR/mttl.dead"
assert_eq default-ttl "$(json_str data <"$T_DIR/mttl.dead")" "expired by the mailbox ttl"
assert_eq expired "$(json_str dead_reason <"$T_DIR/mttl.dead")" "dead reason (mailbox ttl)"

# --- headers ---
mbctl create hdr
mbctl post hdr with-headers --header a=1 --header b=2 -H 'c=x=y' >/dev/null
mbctl recv hdr --json >"$T_DIR/hdr.json"
check_json_lines "$T_DIR/hdr.json"
if command -v python3 >/dev/null 2>&1; then
	python3 - "$T_DIR/hdr.json" <<'EOF' || fail "headers in recv --json: $(cat "$T_DIR/hdr.json")"
import json, sys
m = json.load(open(sys.argv[1]))
want = {"a": "1", "b": "2", "c": "x=y"}
if m.get("headers") != want:
    sys.exit("headers %r, expected %r" % (m.get("headers"), want))
for k in ("priority", "deliveries", "sender"):
    if k not in m:
        sys.exit("no %s in %r" % (k, m))
EOF
else
	grep -q '"headers":{"a":"1","b":"2","c":"x=y"}' "$T_DIR/hdr.json" ||
		fail "headers in recv --json: $(cat "$T_DIR/hdr.json")"
fi
# Over 4 KiB of headers: refused, nothing stored.
big=$(head -c 4200 /dev/zero | tr '\0' v)
expect_rc 1 "post with 4200 bytes of headers" mbctl post hdr too-big --header "k=$big"
grep -qi 'header' "$T_DIR/rc.err" ||
	fail "too large headers refused without saying so: $(cat "$T_DIR/rc.err")"
half=$(head -c 2100 /dev/zero | tr '\0' w)
expect_rc 1 "post with two headers of 2100 bytes" \
	mbctl post hdr too-big --header "k1=$half" --header "k2=$half"
assert_eq 0 "$(ls_num hdr ready)" "messages stored by refused posts"
# Just under the limit is fine.
fits=$(head -c 4000 /dev/zero | tr '\0' f)
expect_rc 0 "post with 4 KB of headers" mbctl post hdr fits --header "k=$fits"
assert_eq 1 "$(ls_num hdr ready)" "the message with 4 KB of headers"

# --- dedup ---
mbctl create dd
id1=$(mbctl post dd first --dedup job-1)
id2=$(mbctl post dd second --dedup job-1)
assert_eq "$id1" "$id2" "id of a duplicate post"
id3=$(mbctl post dd other --dedup job-2)
[ "$id3" != "$id1" ] || fail "another dedup key got the same id $id1"
assert_eq 2 "$(ls_num dd ready)" "messages stored by three posts, two keys"
assert_eq "first other" "$(mbctl recv dd -n 5 | words)" "dedup kept the first payload"
# Still a duplicate after the message was acked.
assert_eq "$id1" "$(mbctl post dd third --dedup job-1)" "id after the ack"
expect_rc 3 "recv after a duplicate of an acked message" mbctl recv dd --wait 0
# And after a broker restart.
stop_broker
start_broker
assert_eq "$id1" "$(mbctl post dd fourth --dedup job-1)" "id after a restart"
assert_eq "$id3" "$(mbctl post dd fifth --dedup job-2)" "id of key 2 after a restart"
expect_rc 3 "recv after duplicates across a restart" mbctl recv dd --wait 0
# The key is per mailbox.
mbctl create dd2
id4=$(mbctl post dd2 elsewhere --dedup job-1)
[ "$id4" != "$id1" ] || fail "dedup key shared across mailboxes"
assert_eq elsewhere "$(mbctl recv dd2)" "same key in another mailbox"

# --- pause / resume ---
mbctl create pz
mbctl post pz m1 >/dev/null
mbctl pause pz
expect_rc 3 "recv on a paused mailbox" mbctl recv pz --wait 1
assert_eq 1 "$(ls_num pz ready)" "ready count while paused"
expect_rc 0 "post to a paused mailbox" mbctl post pz m2
assert_eq 2 "$(ls_num pz ready)" "ready count after a post while paused"
mbctl recv pz --wait 5 >"$T_DIR/pz.out" 2>"$T_DIR/pz.err" &
waiter=$!
track_pid "$waiter"
sleep 0.5
alive "$waiter" || fail "recv --wait 5 on a paused mailbox returned at once: $(cat "$T_DIR/pz.out" "$T_DIR/pz.err")"
t0=$(now_ms)
mbctl resume pz
rc=0
wait "$waiter" || rc=$?
untrack_pid "$waiter"
ms=$(($(now_ms) - t0))
assert_eq 0 "$rc" "exit status of the recv waiting across the resume"
assert_eq m1 "$(cat "$T_DIR/pz.out")" "message to the recv waiting across the resume"
[ "$ms" -lt 2000 ] || fail "waiting recv got its message ${ms} ms after resume"
assert_eq m2 "$(mbctl recv pz)" "second message after resume"
# Paused state is durable.
mbctl post pz m3 >/dev/null
mbctl pause pz
stop_broker
start_broker
expect_rc 3 "recv on a paused mailbox after a restart" mbctl recv pz --wait 0.3
mbctl resume pz
assert_eq m3 "$(mbctl recv pz --wait 2)" "message after resume (restart)"

stop_broker
