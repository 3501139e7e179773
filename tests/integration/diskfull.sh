#!/bin/bash
# diskfull.sh - a post that cannot be made durable gets an error, never an
# id; every id that was printed is delivered later, byte for byte, exactly
# once; nothing whose post failed is ever delivered; once room is made
# (acks, a larger cap, disk space freed) posts succeed again, round after
# round; a SIGKILL while full loses nothing confirmed.
#
# Part 1 fills a database capped with --max-store-size (SQLite's
# max_page_count: the insert itself fails). Part 2, when run as root where
# tmpfs can be mounted, fills a real 3 MiB file system: there SQLite's own
# write of the WAL fails with ENOSPC at COMMIT (the broker answers the
# same), and "the condition clears" is the disk growing or a file that
# filled it going away. Part 3 fills a 48 MiB file system and drains it
# while it is full, through the reserve mboxd keeps for that; part 4
# restarts a broker killed with its reserve held on a disk filled since.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"


# What the broker answers when the store is full (protocol.md: STORE,
# "disk or database full"); SQLite's own text is accepted too (see note).
FULL_RE='disk or database full|database or disk is full'

# Payloads are 1 KiB: TAG-NNNNNN- then x's. Every tag names one phase, so
# every payload is unique and says where it came from.
PAD=$(printf 'x%.0s' $(seq 1 1024))

# gen TAG FROM TO: payload lines FROM..TO of TAG.
gen()
{
	local i
	for ((i = $2; i <= $3; i++)); do
		printf '%s-%06d-%s\n' "$1" "$i" "${PAD:0:$((1024 - ${#1} - 8))}"
	done
}

# Confirmed "ID PAYLOAD" pairs, unconfirmed payloads, received pairs.
CONF=$T_DIR/confirmed
UNCONF=$T_DIR/unconfirmed
RECV=$T_DIR/received
: >"$CONF"
: >"$UNCONF"
: >"$RECV"

# check_full_error FILE WHAT: the error text in FILE says the store is full.
check_full_error()
{
	grep -qE "$FULL_RE" "$1" ||
		fail "$2: no 'disk or database full' error: $(head -c 500 "$1")"
	grep -q 'disk or database full' "$1" ||
		note "$2: the broker answered SQLite's text, not protocol.md's" \
			"\"disk or database full\": $(head -c 300 "$1")"
}

# post_chunk TAG FROM TO: post lines FROM..TO of TAG with --lines. The ids
# printed go to CONF with their payloads (in input order), the rest to
# UNCONF. Returns post's exit status; a failure must say the store is full.
post_chunk()
{
	local rc=0 n
	gen "$1" "$2" "$3" >"$T_DIR/chunk.in"
	mbctl post q --lines <"$T_DIR/chunk.in" >"$T_DIR/chunk.ids" \
		2>"$T_DIR/chunk.err" || rc=$?
	n=$(wc -l <"$T_DIR/chunk.ids")
	grep -qvE '^[0-9]+$' "$T_DIR/chunk.ids" &&
		fail "post --lines printed something that is not an id"
	paste -d ' ' "$T_DIR/chunk.ids" <(head -n "$n" "$T_DIR/chunk.in") \
		>>"$CONF"
	tail -n "+$((n + 1))" "$T_DIR/chunk.in" >>"$UNCONF"
	if [ "$rc" -ne 0 ]; then
		[ "$n" -lt "$(($3 - $2 + 1))" ] ||
			fail "post --lines failed, yet printed an id for every line"
		check_full_error "$T_DIR/chunk.err" "post --lines"
	fi
	return "$rc"
}

# fill TAG CHUNK: post chunks of CHUNK lines until one fails (at most 40).
fill()
{
	local k
	for ((k = 0; k < 40; k++)); do
		post_chunk "$1" $((k * $2 + 1)) $(((k + 1) * $2)) || return 0
	done
	fail "40 chunks of $2 messages never filled the store"
}

# fill_singles TAG: single posts until one fails (at most 300). The failing
# one must exit non-zero, print no id and say why.
fill_singles()
{
	local k rc p
	for ((k = 1; k <= 300; k++)); do
		p=$(gen "$1" "$k" "$k")
		rc=0
		mbctl post q "$p" >"$T_DIR/one.out" 2>"$T_DIR/one.err" || rc=$?
		if [ "$rc" -eq 0 ]; then
			grep -qxE '[0-9]+' "$T_DIR/one.out" ||
				fail "post succeeded without printing an id"
			echo "$(cat "$T_DIR/one.out") $p" >>"$CONF"
			continue
		fi
		[ -s "$T_DIR/one.out" ] &&
			fail "a failed post printed: $(cat "$T_DIR/one.out")"
		check_full_error "$T_DIR/one.err" "single post"
		echo "$p" >>"$UNCONF"
		return 0
	done
	fail "300 single posts never filled the store"
}

# recv_n N [AT_ONCE]: receive and ack N messages, at most AT_ONCE (default
# 1000) per recv, appended to RECV as "ID PAYLOAD".
recv_n()
{
	local got=0 k before want
	for ((k = 0; k < 200 && got < $1; k++)); do
		before=$(wc -l <"$RECV")
		want=$(($1 - got))
		[ "$want" -le "${2:-1000}" ] || want=${2:-1000}
		mbctl recv q -n "$want" --json >"$T_DIR/recv.json" \
			2>"$T_DIR/recv.err" ||
			fail "recv failed (exit $?): $(cat "$T_DIR/recv.err")"
		sed -n 's/^{"id":\([0-9]*\),.*"data":"\([^"]*\)"}$/\1 \2/p' \
			"$T_DIR/recv.json" >>"$RECV"
		assert_eq "$(wc -l <"$T_DIR/recv.json")" \
			"$(($(wc -l <"$RECV") - before))" "parsed recv lines"
		got=$((got + $(wc -l <"$T_DIR/recv.json")))
	done
	assert_eq "$1" "$got" "messages received"
}

# recv_all [AT_ONCE]: receive until the mailbox is empty, at most AT_ONCE
# (default 200) per recv.
recv_all()
{
	local n
	n=$(ls_num q ready)
	[ -n "$n" ] || fail "no ready count for q"
	[ "$n" -eq 0 ] || recv_n "$n" "${1:-200}"
	assert_eq 0 "$(ls_num q ready)" "ready messages left"
}

# check_exact: what was received is what was confirmed, each once, with
# the payload it was posted with; no unconfirmed payload came.
check_exact()
{
	local dup
	dup=$(cut -d ' ' -f 1 "$RECV" | sort | uniq -d | head -n 3 | words)
	[ -z "$dup" ] || fail "ids received twice: $dup"
	if ! cmp -s <(sort "$CONF") <(sort "$RECV"); then
		diff <(sort "$CONF" | cut -c 1-40) <(sort "$RECV" | cut -c 1-40) |
			head -n 20 >&2
		fail "received messages differ from confirmed ones (above)"
	fi
	if cut -d ' ' -f 2 "$RECV" | grep -qxFf "$UNCONF"; then
		fail "a message whose post failed was delivered"
	fi
	note "$1: $(wc -l <"$CONF") confirmed, all received intact;" \
		"$(wc -l <"$UNCONF") refused, none delivered"
}

# log_has TEXT WHAT: the broker's log says TEXT.
# disk_state RESERVE FULL WHAT: what `mboxctl stats` says of the disk
# (reserve_bytes and disk_full of --json) must be RESERVE (or one of
# "A|B|...") and FULL; a full disk also shows in its table and in watch.
disk_state()
{
	local got
	got=$(mbctl stats --json |
		sed -n 's/.*"reserve_bytes":\([0-9]*\),"disk_full":\([a-z]*\).*/\1 \2/p')
	[[ "|$1|" == *"|${got% *}|"* && "${got#* }" = "$2" ]] ||
		fail "$3: mboxctl stats says reserve, full = '$got', not '$1 $2'"
	if [ "$2" = true ]; then
		mbctl stats | grep -q '^disk  *FULL: posts go only where acks free room' ||
			fail "$3: mboxctl stats does not say the disk is full: $(mbctl stats | grep '^disk')"
		mbctl watch -n 1 | head -n 1 | grep -q '  DISK FULL$' ||
			fail "$3: mboxctl watch does not say the disk is full: $(mbctl watch -n 1 | head -n 1)"
	fi
}

log_has()
{
	grep -qF -- "$1" "$T_DIR/mboxd.log" ||
		fail "$2: the log does not say \"$1\": $(tail -n 5 "$T_DIR/mboxd.log")"
}

# ---- Part 1: --max-store-size ----

start_broker --max-store-size 2M
mbctl create q
mbctl create dk
dk_id=$(mbctl post dk keyed --dedup job-1)
fill A 250
[ -s "$UNCONF" ] || fail "no post was refused"
fill_singles S
# A store full to its cap is not a full disk: the reserve stays held.
disk_state 33554432 false "full to the cap"
# Right after a refusal: a retry of a post already stored adds nothing,
# so the full store answers it with the first id (SPEC 3.2).
assert_eq "$dk_id" "$(mbctl post dk again --dedup job-1)" \
	"a dedup retry while the store is full"
expect_rc 1 "a new post to dk while the store is full" mbctl post dk new
n_full=$(wc -l <"$CONF")
[ "$n_full" -gt 1000 ] || fail "only $n_full messages fit under 2 MiB"
db_pages=$(($(stat -c %s "$DB") / 4096))
[ "$db_pages" -le 512 ] || fail "database file of $db_pages pages over the cap"
note "cap 2 MiB: $n_full messages of 1 KiB fit; files:" \
	"db $(stat -c %s "$DB"), wal $(stat -c %s "$DB-wal" 2>/dev/null || echo 0)"

# Drain all, fill again, round after round: the pages kept for draining
# must not wear away (drains growing the file, posts taking what acks
# free), or a full store could one day not be received from.
for ((r = 1; r <= 8; r++)); do
	recv_all
	before=$(wc -l <"$CONF")
	fill "R$r" 250
	got=$(($(wc -l <"$CONF") - before))
	[ "$got" -ge $((n_full * 7 / 8)) ] ||
		fail "round $r: $got messages fit after a full drain, $n_full at first"
	db_pages=$(($(stat -c %s "$DB") / 4096))
	[ "$db_pages" -le 512 ] || fail "round $r: database file of $db_pages pages over the cap"
done

# Acks make room under the cap: posts succeed again.
recv_n 600
post_chunk B 1 300 || fail "posting after 600 acks failed: $(cat "$T_DIR/chunk.err")"
# Full again, then a crash.
fill C 250
kill9_broker

# A cap below what the database holds is refused at start, clearly.
rc=0
timeout 20 "$MBOXD" --foreground --socket "$T_DIR/small.sock" --db "$DB" \
	--max-store-size 64K </dev/null >"$T_DIR/small.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "mboxd started with a cap below the database size"
grep -q 'already larger' "$T_DIR/small.log" ||
	fail "no clear error for a cap below the database: $(cat "$T_DIR/small.log")"

start_broker --max-store-size 8M
post_chunk D 1 200 || fail "posting under a larger cap failed: $(cat "$T_DIR/chunk.err")"
recv_all
check_exact "cap"
stop_broker

# ---- Part 2: a real, tiny file system ----

FS=$T_DIR/fs
if [ "$(id -u)" -ne 0 ]; then
	note "not root: the tmpfs part is skipped"
	exit 0
fi
mkdir "$FS"
if ! mount -t tmpfs -o size=3m,mode=0700 tmpfs "$FS" 2>"$T_DIR/mount.err"; then
	note "cannot mount a tmpfs here ($(cat "$T_DIR/mount.err")):" \
		"the tmpfs part is skipped"
	exit 0
fi
# Unmounted before lib.sh removes T_DIR, with the broker on it stopped.
df_cleanup()
{
	local rc=$?
	set +e
	if [ -n "$BROKER_PID" ]; then
		kill -KILL "$BROKER_PID" 2>/dev/null
		wait "$BROKER_PID" 2>/dev/null
		untrack_pid "$BROKER_PID"
		BROKER_PID=
	fi
	umount "$FS" 2>/dev/null || umount -l "$FS" 2>/dev/null
	(exit "$rc")
	t_cleanup
}
trap df_cleanup EXIT

# avail_kib: free space on the tmpfs.
avail_kib()
{
	df -k --output=avail "$FS" | tail -n 1 | tr -d ' '
}

DB=$FS/mbox.db
: >"$CONF"
: >"$UNCONF"
: >"$RECV"
start_broker
mbctl create q
fill E 250
fill_singles T
# No room to keep a reserve, so none to give back: not held either.
disk_state 0 false "full disk without a reserve"
# The counters count what was stored, not the work of the batches that
# failed on the full disk.
counter_total()
{
	mbctl stats --json | sed -n 's/.*"'"$1"'":{"total":\([0-9]*\).*/\1/p'
}
assert_eq "$(wc -l <"$CONF")" "$(counter_total posted)" "posted counter on a full disk"
assert_eq "$(($(wc -l <"$CONF") * 1024))" "$(counter_total bytes_in)" "bytes_in counter on a full disk"
note "tmpfs 3 MiB: $(wc -l <"$CONF") messages fit; files:" \
	"db $(stat -c %s "$DB"), wal $(stat -c %s "$DB-wal" 2>/dev/null || echo 0)," \
	"$(avail_kib) KiB free"
# Reads work on a full disk.
mbctl peek q -n 5 --json >"$T_DIR/peek.out" 2>&1 ||
	fail "peek on a full disk failed: $(cat "$T_DIR/peek.out")"
assert_eq 5 "$(wc -l <"$T_DIR/peek.out")" "messages peeked on a full disk"
# Receives on a full disk with no reserve (3 MiB cannot hold one): each
# either gets messages or says the disk is full, never "nothing there"
# (exit 3), which the second one said when the leases' commit failed.
for ((k = 1; k <= 2; k++)); do
	rc=0
	mbctl recv q -n 5 --json >"$T_DIR/full.json" 2>"$T_DIR/full.err" || rc=$?
	if [ "$rc" -eq 0 ]; then
		sed -n 's/^{"id":\([0-9]*\),.*"data":"\([^"]*\)"}$/\1 \2/p' \
			"$T_DIR/full.json" >>"$RECV"
	else
		assert_eq 1 "$rc" "exit status of recv $k on a full disk"
		check_full_error "$T_DIR/full.err" "recv $k on a full disk"
	fi
done

# The condition clears: the disk grows. Generously: a disk this small
# never sees the 1000 WAL frames of an autocheckpoint, so the whole store
# is in the WAL and a checkpoint needs as much again in the database file;
# and a lease rewrites the pages holding the payloads it takes, so the WAL
# grows by about the bytes leased.
mount -o remount,size=16m "$FS" || fail "cannot grow the tmpfs"
recv_n 300 50
post_chunk F 1 200 || fail "posting once the disk grew failed: $(cat "$T_DIR/chunk.err")"

# Something else fills the disk: full again, and a crash.
head -c $(($(avail_kib) * 1024)) /dev/zero >"$FS/ballast" 2>/dev/null || true
fill G 100
kill9_broker
# It goes away; the broker starts again on what it left.
rm -f "$FS/ballast"
start_broker
post_chunk H 1 100 || fail "posting after the restart failed: $(cat "$T_DIR/chunk.err")"
recv_all
check_exact "tmpfs"
stop_broker

# fresh_tmpfs SIZE: the tmpfs again, empty, of SIZE; no message posted
# or received yet (the broker on it must be stopped).
fresh_tmpfs()
{
	if mountpoint -q "$FS"; then
		umount "$FS" || fail "cannot unmount the tmpfs"
	fi
	mount -t tmpfs -o size="$1",mode=0700 tmpfs "$FS" ||
		fail "cannot mount the tmpfs again"
	: >"$CONF"
	: >"$UNCONF"
	: >"$RECV"
}

# ---- Part 3: the reserve kept for a full disk (--disk-reserve) ----
#
# On a disk filled to the last block, receiving and acking need room too
# (lease rows, WAL frames, checkpoints). mboxd keeps a file of
# --disk-reserve bytes beside the database, gives it back when a write
# finds the disk full, and holds the store at its size: messages can then
# be received and acked with the disk still full, and posts go where acks
# freed room inside the store. Without the reserve, the drain below fails
# (the recv is answered "disk or database full").
fresh_tmpfs 48m
RES=$DB-reserve
start_broker --disk-reserve 16M
[ "$(($(stat -c %b "$RES") * $(stat -c %B "$RES")))" -ge 16777216 ] ||
	fail "the reserve $RES does not hold 16 MiB: $(ls -ls "$RES")"
disk_state 16777216 false "at start"
mbctl create q
fill K 1000
log_has "the disk of the store is full: gave back 8388608 of the 16777216 bytes" 	"full disk"
[ "$(($(stat -c %b "$RES") * 512))" -le 8388608 ] ||
	fail "half the reserve was not given back: $(ls -ls "$RES")"
disk_state "0|8388608" true "full disk"
n_k=$(wc -l <"$CONF")
note "tmpfs 48 MiB, reserve 16 MiB: $n_k messages fit, $(avail_kib) KiB free"

# The disk is left as it is: every message can be received and acked.
recv_all 1000
# Posts go where the acks made room, never to the last block of the disk
# (the released reserve also took the checkpoint of what the WAL held when
# the disk filled), and the drains keep their room, round after round.
for ((r = 1; r <= 2; r++)); do
	before=$(wc -l <"$CONF")
	fill "L$r" 1000
	got=$(($(wc -l <"$CONF") - before))
	[ "$got" -ge $((n_k / 2)) ] ||
		fail "round $r: only $got messages fit after a full drain, $n_k at first"
	[ "$(avail_kib)" -ge 1024 ] ||
		fail "round $r: posts took the room of the drains: $(avail_kib) KiB free"
	note "round $r: after the drain, $got more fit; $(avail_kib) KiB still free"
	[ "$r" -eq 2 ] || recv_all 1000
done

# A crash while the disk is full: the next start knows, and holds the
# store at its size at once.
kill9_broker
start_broker --disk-reserve 16M
log_has "the disk of the store was full when mboxd last ran" "restart"
disk_state "0|8388608" true "restart"
# Single posts fill what the last batch left, then are refused: without
# the hold they would take the disk's last few MiB.
fill_singles M
[ "$(avail_kib)" -ge 1024 ] ||
	fail "posts after the restart took the room of the drains: $(avail_kib) KiB free"
recv_n 3000 1000
post_chunk N 1 500 ||
	fail "posting where acks made room failed: $(cat "$T_DIR/chunk.err")"

# The disk grows: the reserve is taken again and the store may grow.
mount -o remount,size=160m "$FS" || fail "cannot grow the tmpfs"
sleep 1.1 # the reserve is tried at most once a second
mbctl ping >/dev/null
post_chunk P 1 1000 || fail "posting once the disk grew failed: $(cat "$T_DIR/chunk.err")"
post_chunk P 1001 2000 || fail "posting once the disk grew failed: $(cat "$T_DIR/chunk.err")"
log_has "the disk of the store has room again" "disk grown"
[ "$(($(stat -c %b "$RES") * $(stat -c %B "$RES")))" -ge 16777216 ] ||
	fail "the reserve was not taken again: $(ls -ls "$RES")"
disk_state 16777216 false "disk grown"

# Something else fills the disk while the reserve is held: the write that
# finds it full gives the reserve back and is made again, so every
# receive and ack succeeds.
seen=$(wc -l <"$T_DIR/mboxd.log")
head -c $(($(avail_kib) * 1024)) /dev/zero >"$FS/ballast" 2>/dev/null || true
[ "$(avail_kib)" -lt 64 ] || fail "the ballast left $(avail_kib) KiB free"
recv_all 1000
tail -n "+$((seen + 1))" "$T_DIR/mboxd.log" >"$T_DIR/ballast.log"
grep -q 'gave back 8388608 of the 16777216 bytes' "$T_DIR/ballast.log" ||
	fail "the reserve was not given back for the ballast"
disk_state "0|8388608" true "ballast"
if grep -q 'store commit failed' "$T_DIR/ballast.log"; then
	fail "a commit failed on the full disk although the reserve was there:" \
		"$(grep 'store commit failed' "$T_DIR/ballast.log" | head -n 2)"
fi
stop_broker
check_exact "reserve"

# ---- Part 4: killed with the reserve held, the disk full since ----
# Opening the store writes (leases held at the crash are voided): the
# broker gives the reserve back to do it, rather than failing to start.
fresh_tmpfs 48m
start_broker --disk-reserve 16M
mbctl create q
post_chunk W 1 3 || fail "posting failed: $(cat "$T_DIR/chunk.err")"
# The worker's command holds its message's lease; it says its pid so that
# it can be stopped too.
mbctl work q -- sh -c "echo \$\$ >'$T_DIR/sleeper.pid'; exec sleep 60" \
	>/dev/null 2>&1 &
WORKER=$!
track_pid "$WORKER"
for ((i = 0; i < 100; i++)); do
	[ "$(ls_num q leased)" = 1 ] && [ -s "$T_DIR/sleeper.pid" ] && break
	sleep 0.1
done
[ -s "$T_DIR/sleeper.pid" ] && track_pid "$(cat "$T_DIR/sleeper.pid")"
assert_eq 1 "$(ls_num q leased)" "messages leased by the worker"
head -c $(($(avail_kib) * 1024)) /dev/zero >"$FS/ballast" 2>/dev/null || true
kill9_broker
kill9_pid "$WORKER"
untrack_pid "$WORKER"
kill -KILL "$(cat "$T_DIR/sleeper.pid")" 2>/dev/null || true
untrack_pid "$(cat "$T_DIR/sleeper.pid")"
start_broker --disk-reserve 16M
log_has "gave back 16777216 of the 16777216 bytes" "restart on a full disk"
recv_all 10
stop_broker
check_exact "restart on a full disk"

# ---- Part 5: a large post finds the disk full ----
# The write that finds the disk full gets half the reserve. A batch that
# posts and needs more before the store is held at its size is refused,
# and the other half stays for the drains.
fresh_tmpfs 48m
start_broker --disk-reserve 16M --max-msg-size 16M
mbctl create q
post_chunk X 1 20 || fail "posting failed: $(cat "$T_DIR/chunk.err")"
# 1 MiB free besides the reserve, then a post of 12 MiB.
head -c $((($(avail_kib) - 1024) * 1024)) /dev/zero >"$FS/ballast" 2>/dev/null || true
rc=0
head -c 12582912 /dev/urandom | mbctl post q >"$T_DIR/big.out" 2>"$T_DIR/big.err" || rc=$?
[ "$rc" -eq 1 ] ||
	fail "a post of 12 MiB on a disk with 1 MiB free and a reserve of 16 MiB: exit $rc, not 1 (full): $(cat "$T_DIR/big.out" "$T_DIR/big.err")"
[ -s "$T_DIR/big.out" ] && fail "the refused post printed an id: $(cat "$T_DIR/big.out")"
check_full_error "$T_DIR/big.err" "a post of 12 MiB"
log_has "gave back 8388608 of the 16777216 bytes" "a large post"
[ "$(($(stat -c %b "$RES") * 512))" -ge 8388608 ] ||
	fail "the large post took the half of the reserve kept for the drains: $(ls -ls "$RES")"
disk_state 8388608 true "a large post"
# The drains have their half.
recv_all 20
stop_broker
check_exact "a large post"

# ---- Part 6: a small reserve ----
# The WAL is checkpointed every half of the reserve, not every 16 MiB, so
# that a full disk can take it into the database with what the reserve
# gives back: with 4M, a WAL of 16 MiB could not be drained.
fresh_tmpfs 48m
start_broker --disk-reserve 4M
mbctl create q
fill S 1000
log_has "the disk of the store is full: gave back 2097152 of the 4194304 bytes" "a small reserve"
wal=$(stat -c %s "$DB-wal" 2>/dev/null || echo 0)
[ "$wal" -le 4194304 ] || fail "the WAL is $wal bytes, more than a reserve of 4 MiB can take"
note "small reserve: $(wc -l <"$CONF") messages fit, WAL $wal bytes"
recv_all 1000
stop_broker
check_exact "a small reserve"
