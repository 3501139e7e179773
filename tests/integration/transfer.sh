#!/bin/bash
# transfer.sh - mboxctl export / import: lossless round trips between two
# brokers (binary payloads, headers, priorities, ttl), export that only
# peeks (ready, delayed and leased messages; the dead list), complete
# paging through > 1024 messages of mixed priorities, bad input lines,
# and the progress line (only on a terminal).
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

CLIENT=$(driver client-driver)
ME_UID=$(id -u)

# Two brokers: A (the test's SOCK/DB) and B; mbctl talks to $SOCK, so
# the helpers below switch it.
SOCK_A=$SOCK
SOCK_B=$T_DIR/b.sock
start_broker
PID_A=$BROKER_PID
BROKER_PID=
SOCK=$SOCK_B DB=$T_DIR/b.db start_broker
PID_B=$BROKER_PID
BROKER_PID=
on_a() { SOCK=$SOCK_A "$@"; }
on_b() { SOCK=$SOCK_B "$@"; }

# ---- usage and failures ----
expect_rc 2 "export without a mailbox" mbctl export
expect_rc 2 "import without a mailbox" mbctl import
expect_rc 2 "export with a stray argument" mbctl export q extra
expect_rc 2 "import with an unknown option" mbctl import q --bogus
expect_rc 0 "export --help" mbctl export --help
grep -q -- '--dead' "$T_DIR/rc.out" || fail "export --help does not mention --dead"
expect_rc 0 "import --help" mbctl import --help
grep -q 'x-mbox-from-id' "$T_DIR/rc.out" || fail "import --help does not name the metadata headers"
expect_rc 5 "export of a missing mailbox" mbctl export nosuch
expect_rc 1 "import of a missing file" mbctl import q -i "$T_DIR/nosuch.jsonl"
grep -q 'nosuch.jsonl' "$T_DIR/rc.err" || fail "import names the missing file: $(cat "$T_DIR/rc.err")"
expect_rc 6 "export with no broker" "$MBOXCTL" -S "$T_DIR/none.sock" export q

# ---- payloads that must survive: every byte value, empty, 1 MiB, text ----
P=$T_DIR/payloads
mkdir "$P"
python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)))' >"$P/1" 2>/dev/null ||
	printf "$(for i in $(seq 0 255); do printf '\\%03o' "$i"; done)" >"$P/1"
[ "$(wc -c <"$P/1")" -eq 256 ] || fail "could not make the 256-byte payload"
: >"$P/2"
head -c 1048576 /dev/urandom >"$P/3"
printf 'line one\nline "two"\t\\ back\r\n' >"$P/4"
printf 'h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 ok' >"$P/5"
printf 'nul\000inside' >"$P/6"
printf '\xff\xfe not utf-8' >"$P/7"

# The max-size payload has the highest priority: export pages in id
# order (PEEK ID_ORDER), so it does not hide the others.
BIG_PRIO=9 RECV_ORDER="3 6 4 1 7 5 2"

# jfield FIELD: FIELD of each JSON line on stdin, one a line (strings
# raw, anything else as JSON); jfield -c F1 F2: [F1, F2] as compact JSON.
jfield()
{
	python3 -c '
import json, sys
compact = sys.argv[1] == "-c"
keys = sys.argv[2:] if compact else sys.argv[1:]
for line in sys.stdin:
    o = json.loads(line)
    if compact:
        print(json.dumps([o.get(k) for k in keys], separators=(",", ":")))
    else:
        v = o.get(keys[0])
        print(v if isinstance(v, str) else json.dumps(v))
' "$@"
}
on_a mbctl post rt -p 3 -H 'content-type=application/octet-stream' -H 'k=v "q"' <"$P/1" >/dev/null
on_a mbctl post rt -p 0 <"$P/2" >/dev/null
on_a mbctl post rt -p "$BIG_PRIO" -H 'big=yes' <"$P/3" >/dev/null
on_a mbctl post rt -p 5 -H 'emoji=😀' -H 'empty=' <"$P/4" >/dev/null
on_a mbctl post rt -p 1 --ttl 1h <"$P/5" >/dev/null
on_a mbctl post rt -p 7 <"$P/6" >/dev/null
on_a mbctl post rt -p 2 <"$P/7" >/dev/null

expect_rc 0 "export rt" on_a mbctl export rt -o "$T_DIR/e1.jsonl"
[ ! -s "$T_DIR/rc.out" ] || fail "export -o wrote to stdout"
[ ! -s "$T_DIR/rc.err" ] || fail "export printed on stderr (not a tty): $(cat "$T_DIR/rc.err")"
assert_eq 7 "$(wc -l <"$T_DIR/e1.jsonl")" "lines exported"
check_json_lines "$T_DIR/e1.jsonl"
ls "$T_DIR"/e1.jsonl.* >/dev/null 2>&1 && fail "export -o left a temporary file"
# -o writes as a shell's > would: a new file gets 0666 less the umask, a
# replaced one keeps its mode, a symbolic link (dangling too) and a FIFO
# are written through, not replaced.
(umask 022 && on_a mbctl export rt -o "$T_DIR/mode.jsonl")
assert_eq 644 "$(stat -c %a "$T_DIR/mode.jsonl")" "mode of a new export -o file, umask 022"
chmod 640 "$T_DIR/mode.jsonl"
(umask 077 && on_a mbctl export rt -o "$T_DIR/mode.jsonl")
assert_eq 640 "$(stat -c %a "$T_DIR/mode.jsonl")" "mode of a replaced export -o file"
ln -s mode.jsonl "$T_DIR/link.jsonl"
: >"$T_DIR/mode.jsonl"
on_a mbctl export rt -o "$T_DIR/link.jsonl"
[ -L "$T_DIR/link.jsonl" ] || fail "export -o replaced a symbolic link with a file"
assert_eq 7 "$(wc -l <"$T_DIR/mode.jsonl")" "lines exported through a symbolic link"
ln -s made.jsonl "$T_DIR/dangling.jsonl"
on_a mbctl export rt -o "$T_DIR/dangling.jsonl"
assert_eq 7 "$(wc -l <"$T_DIR/made.jsonl")" "lines exported through a dangling symbolic link"
mkfifo "$T_DIR/fifo"
cat "$T_DIR/fifo" >"$T_DIR/fifo.out" &
cat_pid=$!
track_pid "$cat_pid"
on_a mbctl export rt -o "$T_DIR/fifo"
wait "$cat_pid" || fail "the FIFO's reader failed"
untrack_pid "$cat_pid"
[ -p "$T_DIR/fifo" ] || fail "export -o replaced a FIFO with a file"
assert_eq 7 "$(wc -l <"$T_DIR/fifo.out")" "lines exported into a FIFO"
grep -q '"data":""' "$T_DIR/e1.jsonl" || fail "empty payload not written as \"data\":\"\""
grep -q '"data_base64":' "$T_DIR/e1.jsonl" || fail "binary payload not in base64"
grep -q '"expires_ns":' "$T_DIR/e1.jsonl" || fail "ttl not exported"
grep -q "\"uid\":$ME_UID" "$T_DIR/e1.jsonl" || fail "sender uid not exported"
# Peeking took nothing.
assert_eq 7 "$(on_a ls_num rt ready)" "ready after export"
assert_eq 0 "$(on_a ls_num rt leased)" "leased after export"

expect_rc 0 "import into broker B" on_b mbctl import rt2 -i "$T_DIR/e1.jsonl"
[ ! -s "$T_DIR/rc.err" ] || fail "import printed on stderr (not a tty): $(cat "$T_DIR/rc.err")"
expect_rc 0 "export from broker B" on_b mbctl export rt2
cp "$T_DIR/rc.out" "$T_DIR/e2.jsonl"
assert_eq 7 "$(wc -l <"$T_DIR/e2.jsonl")" "lines exported again"

# Same payloads, priorities and headers (without x-mbox-from-*), same
# order; the metadata names the original message.
python3 - "$T_DIR/e1.jsonl" "$T_DIR/e2.jsonl" "$ME_UID" <<'EOF' || fail "round trip changed messages (see above)"
import base64, json, sys
def load(p):
    with open(p, encoding="utf-8") as f:
        return [json.loads(l) for l in f]
def payload(m):
    if "data" in m:
        return m["data"].encode("utf-8")
    return base64.b64decode(m["data_base64"], validate=True)
a, b, uid = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
assert len(a) == len(b), (len(a), len(b))
for x, y in zip(a, b):
    assert payload(x) == payload(y), ("payload", x["id"])
    assert x["priority"] == y["priority"], ("priority", x["id"])
    meta = {k: v for k, v in y["headers"].items() if k.startswith("x-mbox-from-")}
    rest = {k: v for k, v in y["headers"].items() if not k.startswith("x-mbox-from-")}
    assert rest == x["headers"], ("headers", x["headers"], rest)
    assert meta["x-mbox-from-id"] == str(x["id"]), meta
    assert meta["x-mbox-from-time"] == str(x["time_ns"]), meta
    assert meta["x-mbox-from-uid"] == uid, meta
    assert meta["x-mbox-from-pid"] == str(x["sender"]["pid"]), meta
    assert meta["x-mbox-from-comm"] == x["sender"]["comm"], meta
    assert ("expires_ns" in x) == ("expires_ns" in y), ("ttl", x["id"])
    if "expires_ns" in x:
        # The remaining ttl is re-applied: the deadline moves by at most
        # the time between export and import (plus rounding to 1 ms).
        assert abs(y["expires_ns"] - x["expires_ns"]) < 60 * 10**9, (x, y)
sizes = sorted(len(payload(m)) for m in a)
assert sizes[0] == 0 and sizes[-1] == 1048576, sizes
EOF

# And byte for byte, through recv (in priority order).
for f in $RECV_ORDER; do
	on_b mbctl recv rt2 --raw >"$T_DIR/got" || fail "recv from rt2 failed"
	cmp -s "$P/$f" "$T_DIR/got" || fail "payload $f changed in the round trip"
done

# A second import replaces the metadata instead of adding to it.
expect_rc 0 "import of an import" on_a mbctl import rt3 -i "$T_DIR/e2.jsonl"
on_a mbctl export rt3 >"$T_DIR/e3.jsonl"
assert_eq 7 "$(grep -o '"x-mbox-from-id"' "$T_DIR/e3.jsonl" | wc -l)" "x-mbox-from-id headers after a double import"
on_a mbctl import rt4 --no-meta <"$T_DIR/e1.jsonl"
on_a mbctl export rt4 | grep -q 'x-mbox-from' && fail "--no-meta added metadata"

# ---- export sees delayed and leased messages, leaves them as they are ----
on_a mbctl post held one >/dev/null
on_a mbctl post held two >/dev/null
on_a mbctl post held later --delay 1h >/dev/null
SOCK=$SOCK_A hold held 2 60000
expect_rc 0 "export with leased and delayed messages" on_a mbctl export held
assert_eq 3 "$(wc -l <"$T_DIR/rc.out")" "held messages exported"
assert_eq "one two later" "$(jfield data <"$T_DIR/rc.out" | words)" "held payloads"
assert_eq 2 "$(on_a ls_num held leased)" "leased after export"
assert_eq 1 "$(on_a ls_num held delayed)" "delayed after export"
stop "$holder"

# ---- the dead list ----
on_a mbctl post dying gone --ttl 1ms >/dev/null
on_a mbctl post dying alive >/dev/null
on_a wait_num dying dead 1 100 || fail "message with ttl 1ms did not go dead"
expect_rc 0 "export --dead" on_a mbctl export dying --dead
assert_eq 1 "$(wc -l <"$T_DIR/rc.out")" "dead messages exported"
grep -q '"dead_reason":"expired"' "$T_DIR/rc.out" || fail "dead reason missing: $(cat "$T_DIR/rc.out")"
grep -q '"data":"gone"' "$T_DIR/rc.out" || fail "dead payload missing"
cp "$T_DIR/rc.out" "$T_DIR/dead.jsonl"
# Imported, it comes back ready (its ttl long past: 1 ms, so dead again
# as expired) with the reason kept in a header.
sed 's/,"expires_ns":[0-9]*//' "$T_DIR/dead.jsonl" | on_b mbctl import revived
on_b mbctl export revived | grep -q '"x-mbox-from-dead-reason":"expired"' ||
	fail "dead reason not kept as x-mbox-from-dead-reason"
on_b mbctl import expired <"$T_DIR/dead.jsonl"
on_b wait_num expired dead 1 100 || fail "an import of an expired message did not go dead"

# ---- > 1024 messages of mixed priorities: complete, each exactly once ----
# Low priorities first, so that in delivery order the high ones (newer)
# hide them from FROM_ID paging.
seq 1 1300 | on_a mbctl post mixed --lines -p 0 >"$T_DIR/mixed.ids"
seq 1301 2600 | on_a mbctl post mixed --lines -p 9 >>"$T_DIR/mixed.ids"
seq 2601 3000 | on_a mbctl post mixed --lines -p 4 >>"$T_DIR/mixed.ids"
seq 3001 3100 | on_a mbctl post mixed --lines -p 7 >>"$T_DIR/mixed.ids"
assert_eq 3100 "$(wc -l <"$T_DIR/mixed.ids")" "mixed ids"
rc=0
on_a mbctl export mixed >"$T_DIR/mixed.jsonl" 2>"$T_DIR/mixed.err" || rc=$?
assert_eq 0 "$rc" "export of mixed priorities: $(cat "$T_DIR/mixed.err")"
jfield id <"$T_DIR/mixed.jsonl" >"$T_DIR/mixed.got"
cmp -s "$T_DIR/mixed.ids" "$T_DIR/mixed.got" ||
	fail "export of mixed priorities is not every id once, in id order"
assert_eq "$(seq 1 3100 | words)" "$(jfield data <"$T_DIR/mixed.jsonl" | words)" "mixed payloads"
expect_rc 0 "import of 3100 messages" on_b mbctl import mixed -i "$T_DIR/mixed.jsonl"
assert_eq 3100 "$(on_b ls_num mixed ready)" "imported mixed messages"
on_b mbctl export mixed | jfield -c priority data >"$T_DIR/mixed.b"
jfield -c priority data <"$T_DIR/mixed.jsonl" >"$T_DIR/mixed.a"
cmp -s "$T_DIR/mixed.a" "$T_DIR/mixed.b" || fail "mixed round trip differs"
[ "$(wc -l <"$T_DIR/mixed.a")" -eq 3100 ] || fail "mixed round trip: $(wc -l <"$T_DIR/mixed.a") lines"
# One priority pages completely too.
seq 1 2500 | on_a mbctl post flat --lines >/dev/null
assert_eq 2500 "$(on_a mbctl export flat | wc -l)" "single-priority export"

# ---- bad lines ----
head -n 3 "$T_DIR/e1.jsonl" >"$T_DIR/bad.jsonl"
echo '{"priority":3,"data":"x",' >>"$T_DIR/bad.jsonl"
tail -n 1 "$T_DIR/e1.jsonl" >>"$T_DIR/bad.jsonl"
expect_rc 1 "import of a file with a bad line 4" on_b mbctl import badin -i "$T_DIR/bad.jsonl"
grep -q "bad.jsonl:4:" "$T_DIR/rc.err" || fail "bad line not named FILE:4: $(cat "$T_DIR/rc.err")"
grep -q "3 messages imported" "$T_DIR/rc.err" || fail "count before the bad line not told: $(cat "$T_DIR/rc.err")"
assert_eq 3 "$(on_b ls_num badin ready)" "messages imported before the bad line"

bad_line()
{
	local want=$2
	printf '%s\n' "$1" >"$T_DIR/one.jsonl"
	expect_rc 1 "import of bad line $1" on_b mbctl import badone -i "$T_DIR/one.jsonl"
	grep -q -- "one.jsonl:1: .*$want" "$T_DIR/rc.err" ||
		fail "bad line $1: expected '$want' in: $(cat "$T_DIR/rc.err")"
}
bad_line 'not json' "'{' expected"
bad_line '{"priority":1}' 'no "data" or "data_base64"'
bad_line '{"priority":10,"data":"x"}' '"priority": 10 is out of range'
bad_line '{"priority":-1,"data":"x"}' 'integer expected'
bad_line '{"data":"x","data_base64":"eA=="}' 'both'
bad_line '{"data_base64":"@@@@"}' 'bad character'
bad_line '{"data":"x","headers":{"a":1}}' 'header "a"'
bad_line '{"data":"x","headers":{"":"v"}}' 'key must be 1-200 bytes'
bad_line '{"data":"\ud800"}' 'surrogate'
bad_line '{"data":"x"} trailing' 'more after the object'
assert_eq "" "$(on_b ls_num badone ready)" "nothing posted from bad lines"

# Escapes and unknown fields are fine; blank lines are skipped.
printf '%s\n\n%s\n' '{"data":"\u00e9\ud83d\ude00\n\/","future":[1,{"a":null}],"priority":2}' \
	'{"data_base64":"AAE"}' | on_b mbctl import esc --no-meta
{
	on_b mbctl recv esc --raw
	on_b mbctl recv esc --raw
} | od -An -v -tx1 | xargs echo >"$T_DIR/esc.hex"
assert_eq "c3 a9 f0 9f 98 80 0a 2f 00 01" "$(cat "$T_DIR/esc.hex")" "decoded escapes"

# A payload over the broker's limit is named with its line.
printf '{"data_base64":"%s"}\n' "$(head -c 1048577 /dev/zero | base64 -w0)" >"$T_DIR/huge.jsonl"
expect_rc 1 "import of a too large payload" on_b mbctl import huge -i "$T_DIR/huge.jsonl"
grep -q "huge.jsonl:1: payload of 1048577 bytes" "$T_DIR/rc.err" || fail "too large: $(cat "$T_DIR/rc.err")"

# ---- progress on a terminal only (faked with script(1) if present) ----
if command -v script >/dev/null 2>&1; then
	script -qec "$MBOXCTL -S $SOCK_A export flat -o $T_DIR/tty.jsonl" /dev/null >"$T_DIR/tty.out" 2>&1 ||
		fail "export under script failed: $(cat "$T_DIR/tty.out")"
	grep -q 'exported [0-9]* messages, [0-9.]* MiB' "$T_DIR/tty.out" ||
		fail "no progress line on a terminal: $(od -c "$T_DIR/tty.out" | head)"
	grep -q $'\033\[K' "$T_DIR/tty.out" || fail "progress line not cleared"
	assert_eq 2500 "$(wc -l <"$T_DIR/tty.jsonl")" "export under script"
	script -qec "$MBOXCTL -S $SOCK_B import flat2 -i $T_DIR/tty.jsonl" /dev/null >"$T_DIR/tty.out" 2>&1 ||
		fail "import under script failed: $(cat "$T_DIR/tty.out")"
	grep -q 'imported [0-9]* messages' "$T_DIR/tty.out" || fail "no import progress on a terminal"
	assert_eq 2500 "$(on_b ls_num flat2 ready)" "import under script"
else
	note "script(1) missing: terminal progress not checked"
fi

SOCK=$SOCK_A BROKER_PID=$PID_A stop_broker
SOCK=$SOCK_B BROKER_PID=$PID_B stop_broker
note "ok"
