#!/bin/bash
# inspect.sh - the operators' verbs: ls, peek, stat, clients, stats, watch.
#
# Each verb through its success and its main failure paths (usage, not
# found, broker unreachable, and permission denied when run as root with
# setpriv), JSON Lines validity of every --json output, the broker's and a
# mailbox's counters after posts, acks, nacks, rejects, expiry and
# max-deliveries, a subscriber's subscription, leases and pid in clients
# and stat, and watch's plain snapshots (and, where script(1) gives us a
# terminal, its screen handling and 'q').

. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

if ! command -v python3 >/dev/null 2>&1; then
	echo "SKIP: inspect.sh reads JSON with python3"
	exit 77
fi
SUB=$(driver subscriber-driver)
CLIENT=$(driver client-driver)

# jget EXPR < JSON-LINE: evaluate EXPR on the object d (python3).
jget()
{
	python3 -c 'import json, sys
d = json.loads(sys.stdin.readline())
v = eval(sys.argv[1], {"d": d})
print(str(v).lower() if isinstance(v, bool) else v)' "$1"
}

# jlines EXPR < JSON-LINES: EXPR over the list L of every line's object.
jlines()
{
	python3 -c 'import json, sys
L = [json.loads(l) for l in sys.stdin if l.strip()]
v = eval(sys.argv[1], {"L": L})
print(str(v).lower() if isinstance(v, bool) else v)' "$1"
}

# counter NAME [MAILBOX]: a counter's total, broker-wide or of MAILBOX.
counter()
{
	if [ $# -gt 1 ]; then
		mbctl stat "$2" --json | jget "d['counters']['$1']['total']"
	else
		mbctl stats --json | jget "d['counters']['$1']['total']"
	fi
}

# wait_counter NAME VALUE: the broker's counter reaches VALUE within 5 s.
wait_counter()
{
	local i
	for ((i = 0; i < 50; i++)); do
		[ "$(counter "$1")" = "$2" ] && return 0
		sleep 0.1
	done
	fail "counter $1 is $(counter "$1"), expected $2"
}

# json_ok FILE LINES: FILE is JSON Lines of exactly LINES lines.
json_ok()
{
	check_json_lines "$1"
	assert_eq "$2" "$(wc -l <"$1")" "lines of $1"
}

BROKER_SYNC=normal start_broker

# ---- Usage errors, help, an unreachable broker ----

expect_rc 2 "stat without a mailbox" mbctl stat
expect_rc 2 "stat with two mailboxes" mbctl stat a b
expect_rc 2 "stat with a bad option" mbctl stat --bogus q
grep -q "unknown option '--bogus'" "$T_DIR/rc.err" || fail "stat --bogus: $(cat "$T_DIR/rc.err")"
expect_rc 2 "clients with an argument" mbctl clients extra
expect_rc 2 "stats with a bad option" mbctl stats -x
expect_rc 2 "watch with interval 0" mbctl watch --interval 0
expect_rc 2 "watch with a bad interval" mbctl watch -i soon
expect_rc 2 "watch with count 0" mbctl watch --count 0
expect_rc 2 "watch with an argument" mbctl watch q
expect_rc 2 "ls with an argument" mbctl ls q
expect_rc 2 "peek without a mailbox" mbctl peek
expect_rc 2 "peek with count 0" mbctl peek q -n 0
for verb in ls peek stat clients stats watch; do
	expect_rc 0 "$verb --help" mbctl "$verb" --help
	grep -q "^Usage: mboxctl $verb" "$T_DIR/rc.out" || fail "$verb --help: $(head -n 2 "$T_DIR/rc.out")"
done
for verb in stats clients ls; do
	expect_rc 6 "$verb without a broker" "$MBOXCTL" -S "$T_DIR/none.sock" "$verb"
done
expect_rc 6 "stat without a broker" "$MBOXCTL" -S "$T_DIR/none.sock" stat q

# ---- Not found ----

expect_rc 5 "stat of a missing mailbox" mbctl stat nosuch
grep -q "no such mailbox" "$T_DIR/rc.err" || fail "stat nosuch: $(cat "$T_DIR/rc.err")"
[ ! -s "$T_DIR/rc.out" ] || fail "stat nosuch printed on stdout"
expect_rc 5 "peek of a missing mailbox" mbctl peek nosuch
expect_rc 2 "stat of a bad name" mbctl stat "bad/name"
[ "$(cat "$T_DIR/rc.out")" = "" ] || fail "stat of a bad name printed on stdout"

# ---- Counters: posts, acks, nacks, rejects, expiry, max-deliveries ----

mbctl create q
mbctl create e
mbctl create m --max-deliveries 1
mbctl stats --json >"$T_DIR/stats0.json"
json_ok "$T_DIR/stats0.json" 1
for k in posted delivered redelivered acked nacked dead_rejected \
	dead_max_deliveries dead_expired bytes_in bytes_out commits; do
	eval "B_$k=\$(jget \"d['counters']['$k']['total']\" <\"$T_DIR/stats0.json\")"
done

seq 1 5 | mbctl post q --lines >/dev/null
mbctl recv q -n 2 >"$T_DIR/recv.out"
assert_eq "1 2" "$(words <"$T_DIR/recv.out")" "payloads received"
client recv-nack q 1
client reject q
mbctl post e --ttl 200ms expiring >/dev/null
mbctl post m once >/dev/null
# Leased, then given back by the reader's exit: over max_deliveries.
mbctl recv m --no-ack >/dev/null
wait_counter dead_expired $((B_dead_expired + 1))
wait_counter dead_max_deliveries $((B_dead_max_deliveries + 1))

mbctl stats --json >"$T_DIR/stats1.json"
json_ok "$T_DIR/stats1.json" 1
delta()
{
	echo $(($(jget "d['counters']['$1']['total']" <"$T_DIR/stats1.json") - $2))
}
assert_eq 7 "$(delta posted "$B_posted")" "posted (5 + e + m)"
assert_eq 2 "$(delta acked "$B_acked")" "acked"
assert_eq 1 "$(delta nacked "$B_nacked")" "nacked"
assert_eq 1 "$(delta dead_rejected "$B_dead_rejected")" "dead_rejected"
assert_eq 1 "$(delta dead_expired "$B_dead_expired")" "dead_expired"
assert_eq 1 "$(delta dead_max_deliveries "$B_dead_max_deliveries")" "dead_max_deliveries"
# recv 2, recv-nack 1, reject 1 (the nacked one again), m 1
assert_eq 5 "$(delta delivered "$B_delivered")" "delivered"
assert_eq 1 "$(delta redelivered "$B_redelivered")" "redelivered"
assert_eq $((5 + 8 + 4)) "$(delta bytes_in "$B_bytes_in")" "bytes_in"
assert_eq $((2 + 1 + 1 + 4)) "$(delta bytes_out "$B_bytes_out")" "bytes_out"
# Three posts that each waited for their answer: three durable commits at
# least (the acks commit too; a commit may hold several requests).
n=$(delta commits "$B_commits")
[ "$n" -ge 3 ] || fail "commits grew by $n, not by 3 or more"
assert_eq true "$(jget "d['counters']['posted']['rate'] > 0" <"$T_DIR/stats1.json")" "posted rate"
assert_eq true "$(jget "0 < d['interval_ms'] <= 10000" <"$T_DIR/stats1.json")" "interval_ms"
assert_eq true "$(jget "d['connections'] >= 1 and d['mailboxes'] == 3" <"$T_DIR/stats1.json")" "connections, mailboxes"
assert_eq true "$(jget "d['dead'] == 3 and d['ready'] == 2 and d['leased'] == 0" <"$T_DIR/stats1.json")" "message totals"
assert_eq true "$(jget "d['store_bytes'] > 0 and d['uptime_s'] >= 0 and d['server'].startswith('mboxd')" <"$T_DIR/stats1.json")" "server, store"

# The mailbox's own counters.
mbctl stat q --json >"$T_DIR/stat-q.json"
json_ok "$T_DIR/stat-q.json" 1
for kv in posted=5 acked=2 nacked=1 dead_rejected=1 delivered=4 redelivered=1 dead_expired=0; do
	assert_eq "${kv#*=}" "$(jget "d['counters']['${kv%%=*}']['total']" <"$T_DIR/stat-q.json")" "q's ${kv%%=*}"
done
assert_eq false "$(jget "'connections' in d['counters']" <"$T_DIR/stat-q.json")" "q has no connections counter"
assert_eq false "$(jget "'commits' in d['counters']" <"$T_DIR/stat-q.json")" "q has no commits counter"
assert_eq "2 0 1 60000ms 0600" "$(jget "'%d %d %d %s %s' % (d['ready'], d['leased'], d['dead'], d['settings']['lease'], d['mode'])" <"$T_DIR/stat-q.json")" "stat q: ready leased dead lease mode"
assert_eq 1 "$(counter dead_max_deliveries m)" "m's dead_max_deliveries"
assert_eq 1 "$(counter dead_expired e)" "e's dead_expired"

mbctl stats >"$T_DIR/stats.txt"
grep -qE '^uptime +[0-9]+[smhd]$' "$T_DIR/stats.txt" || fail "stats: no uptime: $(cat "$T_DIR/stats.txt")"
grep -qE '^posted +[0-9]+ +[0-9.]+$' "$T_DIR/stats.txt" || fail "stats: no posted row"
grep -qE '^connections +[0-9]+ +[0-9.]+$' "$T_DIR/stats.txt" || fail "stats: no connections row"

mbctl stat q >"$T_DIR/stat.txt"
grep -qE '^mailbox +q$' "$T_DIR/stat.txt" || fail "stat q: $(cat "$T_DIR/stat.txt")"
grep -qE '^state +active$' "$T_DIR/stat.txt" || fail "stat q: not active"
grep -qE '^settings .*lease=60000ms' "$T_DIR/stat.txt" || fail "stat q: no settings"
grep -qE '^posted +5 ' "$T_DIR/stat.txt" || fail "stat q: no posted 5"
# What stat shows as settings, set takes back whole (temp included, as it
# is); changing temp after creation is refused and says so.
read -r -a shown <<<"$(sed -n 's/^settings *//p' "$T_DIR/stat.txt")"
[ "${#shown[@]}" -ge 8 ] || fail "stat q: settings: ${shown[*]}"
expect_rc 0 "set q with the settings stat shows" mbctl set q "${shown[@]}"
expect_rc 2 "set q temp=1" mbctl set q temp=1
grep -q 'only be chosen when the mailbox is created (this one has temp=0)' "$T_DIR/rc.err" ||
	fail "set q temp=1: $(cat "$T_DIR/rc.err")"
mbctl pause q
assert_eq true "$(mbctl stat q --json | jget "d['paused']")" "paused flag"
mbctl stat q | grep -qE '^state +paused$' || fail "stat q: not paused"
mbctl resume q
assert_eq false "$(mbctl stat q --json | jget "d['paused']")" "paused flag after resume"

# ---- clients and stat: a subscriber's subscription, leases and pid ----

mbctl create s
post_n s 4
start_sub holder sub s --window 3 --no-ack-after 0 --timeout-s 60
holder=$SUB_PID
wait_subscribed holder
wait_holds holder 3
mbctl clients --json >"$T_DIR/clients.json"
check_json_lines "$T_DIR/clients.json"
assert_eq 1 "$(jlines "sum(1 for c in L if c['self'])" <"$T_DIR/clients.json")" "clients: one self line"
assert_eq "1 3 3 3 s false false" "$(jlines "' '.join(str(x).lower() for c in L if c['pid'] == $holder for x in (len(c['subscriptions']), c['leased'], c['subscriptions'][0]['window'], c['subscriptions'][0]['unacked'], c['subscriptions'][0]['mailbox'], c['subscriptions'][0]['exclusive'], c['self']))" <"$T_DIR/clients.json")" "the subscriber in clients"
assert_eq true "$(jlines "[c['conn_id'] for c in L] == sorted(c['conn_id'] for c in L)" <"$T_DIR/clients.json")" "clients oldest first"
mbctl clients >"$T_DIR/clients.txt"
grep -qE "^ *[0-9]+ +$holder +[0-9]+ +[^ ]+ +[0-9]+[smhd] +3 +0 +s\[3/3\]$" "$T_DIR/clients.txt" ||
	fail "clients: no row for the subscriber: $(cat "$T_DIR/clients.txt")"
head -n 1 "$T_DIR/clients.txt" | grep -q '^CONN  *PID  *UID  *NAME' || fail "clients: heading"

mbctl stat s --json >"$T_DIR/stat-s.json"
json_ok "$T_DIR/stat-s.json" 1
assert_eq "1 1 $holder 3 3 1 0" "$(jget "'%d %d %d %d %d %d %d' % (d['consumers'], len(d['clients']), d['clients'][0]['pid'], d['clients'][0]['leased'], d['leased'], d['ready'], d['waiting'])" <"$T_DIR/stat-s.json")" "stat s: consumers, its client, leases"
mbctl stat s | grep -qE "^ *[0-9]+ +$holder .* s\[3/3\]$" || fail "stat s: no consumer row"
stop "$holder"

# A RECV waiting: WAITING in stat and clients.
mbctl create w
"$MBOXCTL" -S "$SOCK" recv w --wait 30 >/dev/null 2>&1 &
waiter=$!
track_pid "$waiter"
for ((i = 0; i < 50; i++)); do
	[ "$(mbctl stat w --json | jget "d['waiting']")" = 1 ] && break
	sleep 0.1
done
assert_eq "1 1" "$(mbctl stat w --json | jget "'%d %d' % (d['waiting'], d['clients'][0]['waiting'])")" "stat w: a RECV waits"
assert_eq 1 "$(mbctl clients --json | jlines "sum(c['waiting'] for c in L)")" "clients: a RECV waits"
stop "$waiter"

# ---- ls: columns, human sizes and ages ----

head -c 2000 /dev/zero | tr '\0' x | mbctl post big >/dev/null
mbctl ls >"$T_DIR/ls.txt"
head -n 1 "$T_DIR/ls.txt" | grep -qE '^NAME +READY +LEASED +DELAYED +DEAD +BYTES +OLDEST +CONSUMERS$' || fail "ls heading: $(head -n 1 "$T_DIR/ls.txt")"
grep -qE '^big +1 +0 +0 +0 +2\.0K +[0-9]+s +0$' "$T_DIR/ls.txt" || fail "ls: big: $(cat "$T_DIR/ls.txt")"
assert_eq 1 "$(awk '{ print length($0) }' "$T_DIR/ls.txt" | sort -u | wc -l)" "ls lines of one width"
mbctl ls --json >"$T_DIR/ls.json"
json_ok "$T_DIR/ls.json" 6
assert_eq "2000 1" "$(grep '"name":"big"' "$T_DIR/ls.json" | jget "'%d %d' % (d['bytes'], d['ready'])")" "ls --json of big"

# ---- peek: rows, escaping, dead reasons, JSON ----

printf 'a\tb\n\001"z' | mbctl post pk >/dev/null
mbctl post pk second >/dev/null
mbctl peek pk >"$T_DIR/peek.txt"
assert_eq 3 "$(wc -l <"$T_DIR/peek.txt")" "peek rows (heading + 2)"
head -n 1 "$T_DIR/peek.txt" | grep -qE '^ID +AGE +PRI +DELIV +UID/PID/NAME +SIZE +DATA$' || fail "peek heading: $(head -n 1 "$T_DIR/peek.txt")"
grep -qF '"a\tb\n\x01\"z"' "$T_DIR/peek.txt" || fail "peek escaping: $(cat "$T_DIR/peek.txt")"
grep -qE "^ *[0-9]+ +[0-9]+s +0 +0 +$(id -u)/[0-9]+/[^ ]+ +7 " "$T_DIR/peek.txt" || fail "peek row: $(cat "$T_DIR/peek.txt")"
assert_eq 2 "$(mbctl peek pk -n 1 | wc -l)" "peek -n 1"
mbctl peek pk --json >"$T_DIR/peek.json"
json_ok "$T_DIR/peek.json" 2
mbctl peek q --dead >"$T_DIR/peek-dead.txt"
grep -q 'REASON' "$T_DIR/peek-dead.txt" || fail "peek --dead: no REASON column"
grep -q ' rejected ' "$T_DIR/peek-dead.txt" || fail "peek --dead: $(cat "$T_DIR/peek-dead.txt")"
mbctl peek q --dead --json >"$T_DIR/peek-dead.json"
json_ok "$T_DIR/peek-dead.json" 1
assert_eq rejected "$(jget "d['dead_reason']" <"$T_DIR/peek-dead.json")" "peek --dead --json reason"
first=$(sed -n 2p "$T_DIR/peek.txt" | awk '{ print $1 }')
assert_eq 1 "$(mbctl peek pk --from $((first + 1)) --json | wc -l)" "peek --from"

# ---- watch: plain snapshots when not on a terminal ----

mbctl watch >"$T_DIR/watch1.txt"
assert_eq 1 "$(grep -c '^NAME ' "$T_DIR/watch1.txt")" "watch: one snapshot"
grep -qE '^per sec: posted ' "$T_DIR/watch1.txt" || fail "watch: no rates: $(cat "$T_DIR/watch1.txt")"
grep -qE '^big +1 ' "$T_DIR/watch1.txt" || fail "watch: no mailbox rows"
if grep -q $'\033' "$T_DIR/watch1.txt"; then fail "watch: escape sequences when piped"; fi
start=$(now_ms)
mbctl watch -n 2 --interval 0.3 >"$T_DIR/watch2.txt"
[ $(($(now_ms) - start)) -ge 250 ] || fail "watch --count 2 did not wait the interval"
assert_eq 2 "$(grep -c '^NAME ' "$T_DIR/watch2.txt")" "watch --count 2: two snapshots"

# Many mailboxes and a long name: 80x24 still holds it.
for i in $(seq -w 1 30); do mbctl create "box$i"; done
long=$(printf 'L%.0s' $(seq 1 150))
mbctl create "$long"
mbctl watch >"$T_DIR/watch3.txt"
[ "$(wc -l <"$T_DIR/watch3.txt")" -le 24 ] || fail "watch: more than 24 lines: $(wc -l <"$T_DIR/watch3.txt")"
grep -qE '^\.\.\. [0-9]+ more$' "$T_DIR/watch3.txt" || fail "watch: no '... N more': $(cat "$T_DIR/watch3.txt")"
assert_eq 0 "$(awk 'length($0) > 80' "$T_DIR/watch3.txt" | wc -l)" "watch lines over 80 columns"
grep -q '^LLLL*~ ' "$T_DIR/watch3.txt" || fail "watch: the long name is not cut with ~"

# On a terminal (script(1) gives one): the alternate screen is entered and
# left, and 'q' quits.
if script -qfec true /dev/null >/dev/null 2>&1; then
	COLUMNS=80 LINES=24 timeout 20 script -qfec \
		"stty cols 80 rows 24; $MBOXCTL -S $SOCK watch --count 2 --interval 0.2" \
		/dev/null </dev/null >"$T_DIR/watch-tty.txt" 2>&1 || fail "watch on a tty failed: $(cat -v "$T_DIR/watch-tty.txt" | head -c 600)"
	grep -q $'\033\\[?1049h' "$T_DIR/watch-tty.txt" || fail "watch on a tty: no alternate screen"
	grep -q $'\033\\[?1049l' "$T_DIR/watch-tty.txt" || fail "watch on a tty: screen not restored"
	grep -q $'\033\\[?25h' "$T_DIR/watch-tty.txt" || fail "watch on a tty: cursor not shown again"
	rc=0
	(sleep 1; printf q) | timeout 20 script -qfec "$MBOXCTL -S $SOCK watch --interval 0.2" \
		/dev/null >"$T_DIR/watch-q.txt" 2>&1 || rc=$?
	assert_eq 0 "$rc" "watch quit by q"
	grep -q $'\033\\[?1049l' "$T_DIR/watch-q.txt" || fail "watch quit by q: screen not restored"
else
	note "script(1) cannot make a terminal here: watch's tty mode not tested"
fi

# ---- Permissions (root with setpriv only) ----

OTHER=(setpriv --reuid=4003 --regid=4003 --clear-groups)
chmod 755 "$T_DIR"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1 &&
	"${OTHER[@]}" "$MBOXCTL" --version >/dev/null 2>&1; then
	mbctl create priv
	mbctl post priv secret >/dev/null
	expect_rc 4 "stat of a 0600 mailbox by another uid" timeout 20 "${OTHER[@]}" "$MBOXCTL" -S "$SOCK" stat priv
	grep -q 'permission denied' "$T_DIR/rc.err" || fail "stat denied: $(cat "$T_DIR/rc.err")"
	[ ! -s "$T_DIR/rc.out" ] || fail "stat denied printed on stdout"
	expect_rc 4 "peek of a 0600 mailbox by another uid" timeout 20 "${OTHER[@]}" "$MBOXCTL" -S "$SOCK" peek priv
	expect_rc 0 "clients as another uid" timeout 20 "${OTHER[@]}" "$MBOXCTL" -S "$SOCK" clients --json
	check_json_lines "$T_DIR/rc.out"
	assert_eq "1 true" "$(jlines "'%d %s' % (len(L), str(all(c['uid'] == 4003 for c in L)).lower())" <"$T_DIR/rc.out")" "clients as another uid: only its own"
	expect_rc 0 "stats as another uid" timeout 20 "${OTHER[@]}" "$MBOXCTL" -S "$SOCK" stats --json
	json_ok "$T_DIR/rc.out" 1
	expect_rc 0 "ls as another uid" timeout 20 "${OTHER[@]}" "$MBOXCTL" -S "$SOCK" ls --json
	if grep -q '"name":"priv"' "$T_DIR/rc.out"; then fail "ls shows priv to another uid"; fi
	mbctl chmod priv 0604
	expect_rc 0 "stat with read permission" timeout 20 "${OTHER[@]}" "$MBOXCTL" -S "$SOCK" stat priv --json
	json_ok "$T_DIR/rc.out" 1
	grep -q "uid 4003 .*STAT on mailbox priv" "$T_DIR/mboxd.log" || fail "the STAT denial is not logged"
else
	note "not root or no setpriv: permission checks skipped"
fi

stop_broker
note "ok"
