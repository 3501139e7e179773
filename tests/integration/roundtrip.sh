#!/bin/bash
# roundtrip.sh - post and receive text and binary payloads through mboxctl:
# 0 B, 1 B, 64 KiB and exactly the maximum size (1 MiB) arrive byte for
# byte; one byte over the maximum is refused (exit 1, a clear error) and
# nothing is stored.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

MAX=1048576

start_broker

# Text, given as an argument.
id=$(mbctl post text 'hello, world')
[[ $id =~ ^[0-9]+$ ]] || fail "post printed '$id', expected a message id"
got=$(mbctl recv text)
assert_eq 'hello, world' "$got" "text payload"

# Text with UTF-8, given on stdin.
printf 'h\xc3\xa9llo \xe2\x9c\x93' | mbctl post text >/dev/null
got=$(mbctl recv text)
assert_eq "$(printf 'h\xc3\xa9llo \xe2\x9c\x93')" "$got" "UTF-8 payload"

# Ids grow.
id2=$(mbctl post text again)
[ "$id2" -gt "$id" ] || fail "second id $id2 is not greater than first $id"
mbctl recv text >/dev/null

# Random binary payloads, on stdin, received with --raw.
for size in 0 1 65536 $MAX; do
	head -c "$size" /dev/urandom >"$T_DIR/in.$size"
	[ "$(wc -c <"$T_DIR/in.$size")" -eq "$size" ] ||
		fail "could not make a $size-byte file"
	id=$(mbctl post bin <"$T_DIR/in.$size") ||
		fail "post of $size random bytes failed"
	[[ $id =~ ^[0-9]+$ ]] || fail "post of $size bytes printed '$id'"
	mbctl recv bin --raw >"$T_DIR/out.$size" ||
		fail "recv --raw of the $size-byte message failed"
	cmp "$T_DIR/in.$size" "$T_DIR/out.$size" ||
		fail "$size-byte payload differs after the round trip"
	note "$size random bytes: ok"
done

# A payload with a NUL and invalid UTF-8 comes back as data_base64 in JSON.
printf 'a\000b\377' >"$T_DIR/nul.in"
mbctl post bin <"$T_DIR/nul.in" >/dev/null
mbctl recv bin --json >"$T_DIR/nul.json"
check_json_lines "$T_DIR/nul.json"
b64=$(json_str data_base64 <"$T_DIR/nul.json")
[ -n "$b64" ] || fail "no data_base64 for a binary payload: $(cat "$T_DIR/nul.json")"
printf '%s' "$b64" | base64 -d >"$T_DIR/nul.out" ||
	fail "data_base64 '$b64' is not valid base64"
cmp "$T_DIR/nul.in" "$T_DIR/nul.out" || fail "data_base64 does not decode to the payload"

# recv --json of a text message carries the metadata the kernel gave.
mbctl post meta 'meta data' >"$T_DIR/meta.id"
mbctl recv meta --json >"$T_DIR/meta.json"
check_json_lines "$T_DIR/meta.json"
assert_eq 1 "$(wc -l <"$T_DIR/meta.json")" "recv --json lines for one message"
line=$(cat "$T_DIR/meta.json")
assert_eq "$(cat "$T_DIR/meta.id")" "$(json_num id <<<"$line")" "json id"
assert_eq meta "$(json_str mailbox <<<"$line")" "json mailbox"
assert_eq 'meta data' "$(json_str data <<<"$line")" "json data"
assert_eq 0 "$(json_num priority <<<"$line")" "json priority"
assert_eq 1 "$(json_num deliveries <<<"$line")" "json deliveries"
assert_eq "$(id -u)" "$(json_num uid <<<"$line")" "json sender uid"
assert_eq "$(id -g)" "$(json_num gid <<<"$line")" "json sender gid"
[[ $(json_num pid <<<"$line") =~ ^[1-9][0-9]*$ ]] || fail "json sender pid: $line"
[[ $(json_num time_ns <<<"$line") =~ ^[1-9][0-9]*$ ]] || fail "json time_ns: $line"
case $(json_str comm <<<"$line") in
mboxctl | lt-mboxctl) ;;
*) fail "json sender comm is not mboxctl: $line" ;;
esac

# One byte over the limit: refused with exit 1 and a message, nothing stored.
head -c $((MAX + 1)) /dev/urandom >"$T_DIR/big"
mbctl create big
expect_rc 1 "post of $((MAX + 1)) bytes" mbctl post big <"$T_DIR/big"
[ -s "$T_DIR/rc.err" ] || fail "oversized post failed without an error message"
note "oversized post said: $(head -n 3 "$T_DIR/rc.err")"
[ ! -s "$T_DIR/rc.out" ] || fail "oversized post printed an id: $(cat "$T_DIR/rc.out")"
mbctl peek big -n 10 --json >"$T_DIR/big.peek"
[ ! -s "$T_DIR/big.peek" ] || fail "oversized post was stored: $(head -c 300 "$T_DIR/big.peek")"
expect_rc 3 "recv after the oversized post" mbctl recv big --wait 0.1

# The same limits through libmbox directly: the maximum is accepted, one
# byte more is refused (-EMSGSIZE) and the connection stays usable.
POSTER=$(driver poster-driver)
expect_rc 0 "libmbox post of $MAX bytes" "$POSTER" size "$SOCK" lim $MAX
expect_rc 3 "libmbox post of $((MAX + 1)) bytes" "$POSTER" size "$SOCK" lim $((MAX + 1))
note "libmbox said: $(cat "$T_DIR/rc.err")"
mbctl peek lim -n 10 --json >"$T_DIR/lim.peek"
assert_eq 1 "$(wc -l <"$T_DIR/lim.peek")" "messages stored by the libmbox limit posts"
mbctl recv lim --raw | cmp -s - <(head -c $MAX /dev/zero | tr '\0' x) ||
	fail "the $MAX-byte libmbox post did not come back whole"

# The refused posts did not disturb the broker.
id=$(mbctl post big small)
assert_eq small "$(mbctl recv big)" "post after the oversized one"

stop_broker
