#!/bin/bash
# perms.sh - mailbox permissions and sender identity (SPEC 5.1, 5.2;
# doc/protocol.md 5.25, 5.26, 8.1, 8.2), against a broker run as root with
# clients run as other uids through setpriv(1):
#   - every r and w bit for owner, group (through a supplementary group
#     and through the primary gid) and other, over a set of modes, for
#     recv/peek/subscribe (r) and post/publish (w);
#   - the owner-only operations (set, rm, purge, kick, pause, resume,
#     bind, unbind, chmod, chown) for every class;
#   - ls shows only what the caller may read or write; a denial is exit
#     code 4, "permission denied" and nothing else, and is logged by mboxd
#     with uid, pid and operation;
#   - chown: only an admin gives a mailbox away, the owner picks only its
#     own groups; the broker's own uid is an admin too (a second broker);
#   - every message carries the sender's uid, gid and pid as the kernel
#     gave them, and a client cannot forge them (wire.py under setpriv);
#   - mboxctl serve answers only into a mailbox of the requester's uid,
#     and stat shows a mailbox's consumers to its owner, not to others.
# The ids (4001..4005, 4100..4300) need no passwd or group entry.
#
# Needs root and setpriv, and a build tree the other uids can run from
# (CI's is); otherwise SKIP (exit 77). Ends with a table of what it tested.

if [ "$(id -u)" != 0 ]; then
	echo "SKIP: perms.sh runs only as root (it runs clients as other uids with setpriv)"
	exit 77
fi
if ! command -v setpriv >/dev/null 2>&1; then
	echo "SKIP: perms.sh needs setpriv (util-linux)"
	exit 77
fi

. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"
SRC=${TOP_SRCDIR:-$(dirname "$0")/../..}

# ---- Who runs a command ----

# The callers: the mailboxes under test belong to 4001:4100.
CLASSES=(owner gsup gpri other admin)
declare -A CLASS_NAME=([owner]=owner [gsup]="group(supp)"
	[gpri]="group(gid)" [other]=other [admin]=admin)
declare -A CLASS_UID=([owner]=4001 [gsup]=4002 [gpri]=4004 [other]=4003
	[admin]=0 [owner2]=4001 [bself]=4005)

# who_prefix WHO: the command prefix that runs as WHO, in the array WHO.
who_prefix()
{
	case $1 in
	owner) WHO=(setpriv --reuid=4001 --regid=4001 --clear-groups) ;;
	owner2) WHO=(setpriv --reuid=4001 --regid=4001 --groups=4200) ;;
	gsup) WHO=(setpriv --reuid=4002 --regid=4002 --groups=4100) ;;
	gpri) WHO=(setpriv --reuid=4004 --regid=4100 --clear-groups) ;;
	other) WHO=(setpriv --reuid=4003 --regid=4003 --clear-groups) ;;
	bself) WHO=(setpriv --reuid=4005 --regid=4005 --clear-groups) ;;
	admin) WHO=() ;;
	*) fail "who_prefix: unknown caller $1" ;;
	esac
}

# run WHO ARGS...: mboxctl ARGS on SOCK as WHO. Sets RC, and PID (the
# pid mboxctl ran with: setpriv and the libtool wrapper exec it);
# output in T_DIR/out and T_DIR/err.
run()
{
	local who=$1
	shift
	who_prefix "$who"
	RC=0
	# shellcheck disable=SC2016 # $$ and $@ are the inner shell's
	timeout "$T_CMD_TIMEOUT" bash -c 'echo $$ >"$0"; exec "$@"' \
		"$T_DIR/pid" "${WHO[@]}" "$MBOXCTL" -S "${RUN_SOCK:-$SOCK}" "$@" \
		>"$T_DIR/out" 2>"$T_DIR/err" || RC=$?
	PID=$(cat "$T_DIR/pid")
}

# The run stops the test: show what it printed.
run_fail()
{
	echo "# stdout:" >&2
	head -c 2000 "$T_DIR/out" >&2
	echo "# stderr:" >&2
	head -c 2000 "$T_DIR/err" >&2
	fail "$*"
}

# ---- Expectations and the tally behind the closing table ----

declare -A TALLY
N_CHECKS=0

tally()
{
	local key="$1|$2"
	TALLY[$key]="${TALLY[$key]:-}$3"
	N_CHECKS=$((N_CHECKS + 1))
}

# op_name VERB: the operation name mboxd logs for a verb.
op_name()
{
	case $1 in
	rm) echo DELETE ;;
	*) tr '[:lower:]' '[:upper:]' <<<"$1" ;;
	esac
}

# expect_denied WHO VERB MAILBOX: the last run was refused the mboxctl
# way (exit 4, one line ending in "permission denied", nothing on stdout,
# nothing of the mailbox revealed) and mboxd logged it with the caller's
# uid, pid and operation.
expect_denied()
{
	local who=$1 verb=$2 mb=$3 uid=${CLASS_UID[$1]} re
	[ "$RC" -eq 4 ] || run_fail "$verb $mb as $who: exit $RC, expected 4 (denied)"
	if [ "$(wc -l <"$T_DIR/err")" -ne 1 ] ||
		! grep -qE ': permission denied$' "$T_DIR/err"; then
		run_fail "$verb $mb as $who: the denial is not one 'permission denied' line"
	fi
	[ ! -s "$T_DIR/out" ] || run_fail "$verb $mb as $who: denied, yet printed on stdout"
	if grep -qiE 'secret|ready|leased|dead|bytes|[0-9]+ message' "$T_DIR/err"; then
		run_fail "$verb $mb as $who: the denial reveals something"
	fi
	re="permission denied: uid $uid pid $PID \([^)]*\) $(op_name "$verb") on mailbox $mb\$"
	wait_grep "${RUN_LOG:-$T_DIR/mboxd.log}" "$re" 30 ||
		fail "$verb $mb as $who: no log line matching '$re'"
}

# expect WHO VERB WANT MAILBOX ARGS...: run 'mboxctl VERB MAILBOX ARGS' as
# WHO; WANT is ok or no. recv and subscribe may come back empty (exit 3)
# when allowed. Tallied under WHO and TALLY_AS, else VERB.
expect()
{
	local who=$1 verb=$2 want=$3 mb=$4
	shift 4
	run "$who" "$verb" "$mb" "$@"
	if [ "$want" = ok ]; then
		case $RC in
		0) ;;
		3) [ "$verb" = recv ] || [ "$verb" = subscribe ] ||
			run_fail "$verb $mb as $who: exit 3" ;;
		*) run_fail "$verb $mb as $who: exit $RC, expected success" ;;
		esac
		tally "${TALLY_AS:-$verb}" "$who" a
	else
		expect_denied "$who" "$verb" "$mb"
		tally "${TALLY_AS:-$verb}" "$who" d
	fi
}

# bits MODE WHO: the r/w bits (0-7) that apply to WHO on a mailbox of
# 4001:4100 with MODE; an admin has them all.
bits()
{
	local m=$((8#$1))
	case $2 in
	admin) echo 7 ;;
	owner | owner2) echo $(((m >> 6) & 7)) ;;
	gsup | gpri) echo $(((m >> 3) & 7)) ;;
	*) echo $((m & 7)) ;;
	esac
}

# as_admin ARGS...: mboxctl as root; must succeed.
as_admin()
{
	run admin "$@"
	[ "$RC" -eq 0 ] || run_fail "as admin: mboxctl $* exited $RC"
}

# new_mailbox NAME MODE: created by root, given to 4001:4100, MODE set.
new_mailbox()
{
	as_admin create "$1"
	as_admin chown "$1" 4001:4100
	as_admin chmod "$1" "$2"
}

# ---- Set-up: a broker as root that other uids can reach ----

chmod 755 "$T_DIR"
who_prefix other
if ! "${WHO[@]}" "$MBOXCTL" --version >/dev/null 2>&1; then
	echo "SKIP: uid 4003 cannot run $MBOXCTL (a directory of the build"
	echo "      tree is not traversable by others: build under a path"
	echo "      with mode 755 all the way, as CI's /tmp/ci-try)"
	exit 77
fi

start_broker
run other ping
[ "$RC" -eq 0 ] || run_fail "uid 4003 cannot reach the broker's socket (default mode 0666)"
sock_mode=$(stat -c %a "$SOCK")
assert_eq 666 "$sock_mode" "default mode of the socket"

# ---- The r and w bits, per mode and class ----

MODES=(0600 0640 0620 0604 0602 0660 0606 0666 0000 0460 0066)
for mode in "${MODES[@]}"; do
	mb=m$mode
	new_mailbox "$mb" "$mode"
	as_admin bind "$mb" "perm.$mb"
	as_admin post "$mb" "secret-of-$mb"
done

# ls: exactly the mailboxes with r or w for the caller.
for who in "${CLASSES[@]}"; do
	want=$(for mode in "${MODES[@]}"; do
		if [ $(($(bits "$mode" "$who") & 6)) -ne 0 ]; then
			echo "m$mode"
		fi
	done | sort | words)
	run "$who" ls --json
	[ "$RC" -eq 0 ] || run_fail "ls as $who: exit $RC"
	got=$(while IFS= read -r line; do json_str name <<<"$line"; done \
		<"$T_DIR/out" | sort | words)
	assert_eq "$want" "$got" "mailboxes ls shows to $who"
	tally ls "$who" a
done

note "r and w bits over modes ${MODES[*]}"
for mode in "${MODES[@]}"; do
	mb=m$mode
	for who in "${CLASSES[@]}"; do
		b=$(bits "$mode" "$who")
		r=no w=no
		[ $((b & 4)) -ne 0 ] && r=ok
		[ $((b & 2)) -ne 0 ] && w=ok
		expect "$who" peek "$r" "$mb"
		expect "$who" post "$w" "$mb" "posted-by-$who"
		expect "$who" recv "$r" "$mb"
		expect "$who" subscribe "$r" "$mb" -n 1 --wait 0.2
		# publish skips a mailbox it may not write, silently.
		run "$who" publish "perm.$mb" "published-by-$who" --json
		[ "$RC" -eq 0 ] || run_fail "publish to perm.$mb as $who: exit $RC"
		copies=$(json_num copies <"$T_DIR/out")
		if [ "$w" = ok ]; then
			assert_eq 1 "$copies" "copies published into $mb ($mode) by $who"
			tally publish "$who" a
		else
			assert_eq 0 "$copies" "copies published into $mb ($mode) by $who"
			tally publish "$who" d
		fi
	done
done

# ---- Owner-only operations, whatever the mode ----

note "owner-only operations"
for mode in 0000 0600 0666; do
	mb=m$mode
	for who in "${CLASSES[@]}"; do
		want=no
		case $who in owner | admin) want=ok ;; esac
		expect "$who" set "$want" "$mb" lease=30s
		expect "$who" purge "$want" "$mb"
		expect "$who" kick "$want" "$mb"
		expect "$who" pause "$want" "$mb"
		expect "$who" resume "$want" "$mb"
		expect "$who" bind "$want" "$mb" "own.$who"
		expect "$who" unbind "$want" "$mb" "own.$who"
		expect "$who" chmod "$want" "$mb" "$mode"
		expect "$who" chown "$want" "$mb" :4100
		victim=rm-$who-$mode
		new_mailbox "$victim" "$mode"
		as_admin post "$victim" "secret-of-$victim"
		expect "$who" rm "$want" "$victim" --force
		[ "$want" = ok ] || as_admin rm "$victim" --force
	done
done
# The refused chmods changed nothing.
run admin ls --json
grep -F '"name":"m0666"' "$T_DIR/out" | grep -qF '"mode":"0666"' ||
	run_fail "m0666 changed"

# ---- chown and chmod rules ----

note "chown and chmod rules"
TALLY_AS="chown/chmod rules"
new_mailbox c1 0600
# owner2 is 4001 with the supplementary group 4200.
expect owner2 chown ok c1 :4200
run admin ls --json
grep -F '"name":"c1"' "$T_DIR/out" | grep -qF '"owner_uid":4001,"gid":4200' ||
	run_fail "chown c1 :4200 by its owner did not take"
expect owner2 chown ok c1 :4001 # its primary group
expect owner2 chown no c1 :4300 # not one of its groups
expect owner2 chown no c1 4003  # giving it away: admin only
expect owner2 chown no c1 4003:4001
expect owner2 chown ok c1 4001:4200 # naming itself changes nothing
# The group setting of set and create follows chown's rule: denied.
run owner2 set c1 group=4300
{ [ "$RC" -eq 4 ] &&
	grep -q 'a group you are in (gid 4300); no setting was changed' "$T_DIR/err"; } ||
	run_fail "set c1 group=4300 as owner2: exit $RC, expected 4 (denied)"
run owner2 create c4300 --group 4300
{ [ "$RC" -eq 4 ] && grep -q 'a group you are in (gid 4300)' "$T_DIR/err"; } ||
	run_fail "create --group 4300 as owner2: exit $RC, expected 4 (denied)"
# The group it has is no change, as for chown: after an admin gave c1
# to a group its owner is not in, the owner can still set what stat
# shows, that group included; another such group stays denied.
expect admin chown ok c1 :4300
run owner2 set c1 group=4300 lease=31
[ "$RC" -eq 0 ] ||
	run_fail "set c1 group=4300 lease=31 (its group already) as owner2: exit $RC, expected 0: $(cat "$T_DIR/err")"
run admin ls --json
grep -F '"name":"c1"' "$T_DIR/out" | grep -qF '"gid":4300' ||
	run_fail "c1 is no longer in group 4300: $(grep -F c1 "$T_DIR/out")"
run owner2 stat c1
grep -q 'lease=31000ms' "$T_DIR/out" ||
	run_fail "set c1 lease=31 did not take: $(cat "$T_DIR/out")"
run owner2 set c1 group=4301
{ [ "$RC" -eq 4 ] &&
	grep -q 'a group you are in (gid 4301); no setting was changed' "$T_DIR/err"; } ||
	run_fail "set c1 group=4301 as owner2: exit $RC, expected 4 (denied)"
expect admin chown ok c1 4001:4200
expect gsup chown no c1 :4100
expect gsup chmod no c1 0666
expect other chmod no c1 0666
expect owner chmod ok c1 0640
# Only root gives it away; then the new owner rules it, the old one not.
expect admin chown ok c1 4003:4003
expect owner chmod no c1 0666
expect owner chown no c1 4001
expect other chmod ok c1 0604
expect other chown no c1 4001
run admin ls --json
grep -F '"name":"c1"' "$T_DIR/out" |
	grep -qF '"owner_uid":4003,"gid":4003,"mode":"0604"' ||
	run_fail "c1 after chown 4003:4003 and chmod 0604: $(grep -F c1 "$T_DIR/out")"
# Names are looked up; unknown ones are refused before anything is sent.
as_admin chown c1 root:root
run admin ls --json
grep -F '"name":"c1"' "$T_DIR/out" | grep -qF '"owner_uid":0,"gid":0' ||
	run_fail "chown c1 root:root did not give it to 0:0"
run admin chown c1 no-such-user-perms
if [ "$RC" -ne 2 ] || ! grep -q "no such user 'no-such-user-perms'" "$T_DIR/err"; then
	run_fail "chown to an unknown user"
fi
run admin chown c1 :no-such-group-perms
if [ "$RC" -ne 2 ] || ! grep -q "no such group 'no-such-group-perms'" "$T_DIR/err"; then
	run_fail "chown to an unknown group"
fi
run admin chmod c1 0800
[ "$RC" -eq 2 ] || run_fail "chmod c1 0800: exit $RC, expected 2"
run admin chmod no-such-mailbox 0600
[ "$RC" -eq 5 ] || run_fail "chmod of a missing mailbox: exit $RC, expected 5"
run admin chown no-such-mailbox 4001
[ "$RC" -eq 5 ] || run_fail "chown of a missing mailbox: exit $RC, expected 5"
unset TALLY_AS

# ---- Sender identity as the kernel gave it ----

note "sender identity"
new_mailbox ident 0666
for who in other gsup gpri; do
	run "$who" post ident "from-$who"
	[ "$RC" -eq 0 ] || run_fail "post to ident as $who"
	poster=$PID
	as_admin recv ident --json
	got=$(json_str data <"$T_DIR/out")
	assert_eq "from-$who" "$got" "payload posted by $who"
	sender=$(sed 's/^.*"sender":{\([^}]*\)}.*$/\1/' "$T_DIR/out")
	assert_eq "${CLASS_UID[$who]}" "$(json_num uid <<<"$sender")" "sender uid of $who's post"
	assert_eq "$poster" "$(json_num pid <<<"$sender")" "sender pid of $who's post"
	# The primary gid the kernel reports; never a supplementary group.
	case $who in
	gpri) gid=4100 ;;
	*) gid=${CLASS_UID[$who]} ;;
	esac
	assert_eq "$gid" "$(json_num gid <<<"$sender")" "sender gid of $who's post"
	tally "sender identity" "$who" a
done

# A client that lies: SENDER_* fields in a request are MALFORMED, denials
# carry nothing but their text, and the stamp is the kernel's.
PY=
for p in "$(command -v python3 || true)" /usr/bin/python3 /usr/local/bin/python3; do
	if [ -z "$p" ] || [ ! -x "$p" ]; then
		continue
	fi
	who_prefix other
	if "${WHO[@]}" "$p" -c 'import socket' >/dev/null 2>&1; then
		PY=$p
		break
	fi
done
if [ -z "$PY" ]; then
	note "no python3 that uid 4003 can run: the forging client is NOT tested"
else
	mkdir "$T_DIR/py"
	cp "$SRC/tests/integration/wire.py" "$T_DIR/py/"
	cat >"$T_DIR/py/forge.py" <<'EOF'
"""Run as uid 4003: try to forge the sender; look at denials raw."""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402
from wire import Client, check, field, fields, msgs_of, u64  # noqa: E402

wire.OP.update(SET=18, PURGE=19, KICK=20, PAUSE=21, RESUME=22, CHMOD=28,
               CHOWN=29)
wire.TAG.update(SENDER_UID=18, SENDER_GID=19, SENDER_COMM=20, OWNER_UID=41,
                GROUP_GID=42, MODE=43)
T = wire.TAG
S = wire.S
path, open_mb, secret_mb = sys.argv[1:4]
print("pid %d" % os.getpid(), flush=True)
with open("/proc/self/comm") as f:
    comm = f.read().strip()

c = Client(path)
info = c.hello()
check(u64(info[T["SENDER_PID"]]) == os.getpid() and
      u64(info[T["SENDER_UID"]]) == os.getuid() == 4003 and
      u64(info[T["SENDER_GID"]]) == os.getgid() == 4003,
      "HELLO names the kernel's pid, uid and gid")

lies = [("SENDER_UID", 0), ("SENDER_GID", 0), ("SENDER_PID", 1),
        ("SENDER_COMM", "systemd")]
for tag, val in lies:
    st, f = c.call("POST", field("MAILBOX", open_mb) +
                   field("MSG", field("DATA", "forged") + field(tag, val)))
    check(st == S["MALFORMED"], "%s inside a MSG is MALFORMED" % tag)
    st, f = c.call("POST", field("MAILBOX", open_mb) + field(tag, val) +
                   field("MSG", field("DATA", "forged")))
    check(st == S["MALFORMED"], "%s beside the MSG is MALFORMED" % tag)

st, f = c.call("POST", field("MAILBOX", open_mb) +
               field("MSG", field("DATA", "honest")))
check(st == 0, "an honest POST is stored")
st, f = c.call("RECV", field("MAILBOX", open_mb) + field("COUNT", 10))
msgs = msgs_of(f)
check(st == 0 and len(msgs) == 1 and msgs[0][T["DATA"]] == b"honest",
      "only the honest message was stored")
m = msgs[0]
check(u64(m[T["SENDER_UID"]]) == 4003 and u64(m[T["SENDER_GID"]]) == 4003
      and u64(m[T["SENDER_PID"]]) == os.getpid(),
      "the message carries the kernel's uid, gid and pid")
check(m[T["SENDER_COMM"]].decode() == comm,
      "the message carries the process name (%s)" % comm)
st, f = c.call("ACK", field("ID", u64(m[T["ID"]])))
check(st == 0, "ACK")

# Denials say "permission denied" and nothing else.
mb = field("MAILBOX", secret_mb)
denied = [
    ("RECV", mb), ("PEEK", mb), ("SUBSCRIBE", mb),
    ("POST", mb + field("MSG", field("DATA", "x"))),
    ("KICK", mb), ("PURGE", mb), ("PAUSE", mb), ("RESUME", mb),
    ("SET", mb + field("SETTING", "lease=1s")), ("DELETE", mb),
    ("BIND", mb + field("TOPIC", "x")), ("UNBIND", mb + field("TOPIC", "x")),
    ("CHMOD", mb + field("MODE", 0o666)),
    ("CHOWN", mb + field("OWNER_UID", 4003)),
    ("CHOWN", mb + field("GROUP_GID", 4003)),
]
for op, body in denied:
    st, f = c.call(op, body)
    check(st == S["DENIED"] and f == [(T["TEXT"], b"permission denied")],
          "%s of another's 0600 mailbox: DENIED, text only" % op)
st, f = c.call("CHOWN", mb)
check(st == S["MALFORMED"], "CHOWN without OWNER_UID or GROUP_GID: MALFORMED")
st, f = c.call("CHOWN", mb + field("OWNER_UID", 2**32 - 1))
check(st == S["INVALID"], "CHOWN to uid 2^32-1: INVALID")
st, f = c.call("CHMOD", mb + field("MODE", 0o1000))
check(st == S["INVALID"], "CHMOD to 01000: INVALID")
st, f = c.call("LIST")
names = [v for t, v in fields(b"".join(v for t, v in f))
         if t == T["MAILBOX"]]
check(secret_mb.encode() not in names, "LIST hides the 0600 mailbox")
EOF
	chmod -R a+rX "$T_DIR/py"
	new_mailbox forge-open 0666
	new_mailbox forge-secret 0600
	as_admin post forge-secret secret-payload
	who_prefix other
	rc=0
	timeout 60 "${WHO[@]}" "$PY" "$T_DIR/py/forge.py" "$SOCK" forge-open \
		forge-secret >"$T_DIR/forge.out" 2>&1 || rc=$?
	[ "$rc" -eq 0 ] || { cat "$T_DIR/forge.out" >&2; fail "forge.py exited $rc"; }
	pypid=$(sed -n 's/^pid \([0-9]*\)$/\1/p' "$T_DIR/forge.out")
	grep -qE "permission denied: uid 4003 pid $pypid \(.*\) PURGE on mailbox forge-secret\$" \
		"$T_DIR/mboxd.log" || fail "the raw client's denied PURGE is not logged with its pid"
	run admin peek forge-secret
	grep -q secret-payload "$T_DIR/out" || fail "forge-secret lost its message"
	# forge.py's refusals: 8 forged SENDER_* fields, 15 bare denials.
	for ((i = 0; i < 8; i++)); do tally "forged sender (wire)" other d; done
	for ((i = 0; i < 15; i++)); do tally "denial body (wire)" other d; done
fi

# ---- Request/reply and STAT across uids ----

# A server answers only into a mailbox of the requester's uid: anyone who
# may post a request chooses its reply-to, and the answer goes out with
# the server's permissions. stat shows the server's connection to the
# mailbox's owner (and admins), not to the other users who may write it.
note "serve answers only into the requester's mailbox; stat's consumers"
new_mailbox rpc-svc 0666
new_mailbox rpc-victim 0666
who_prefix owner
"${WHO[@]}" "$MBOXCTL" -S "$SOCK" serve rpc-svc -- cat \
	>"$T_DIR/serve.out" 2>"$T_DIR/serve.err" </dev/null &
SERVE_PID=$!
track_pid "$SERVE_PID"
for ((i = 0; i < 100; i++)); do
	run admin stat rpc-svc --json
	grep -q '"consumers":1' "$T_DIR/out" && break
	sleep 0.1
done
grep -q '"consumers":1' "$T_DIR/out" || fail "serve never subscribed to rpc-svc"
run other post rpc-svc injected -H reply-to=rpc-victim -H correlation-id=x
[ "$RC" -eq 0 ] || run_fail "other's request to rpc-svc"
wait_grep "$T_DIR/serve.err" 'rpc-victim is owned by uid 4001, not by uid 4003' 100 ||
	fail "serve did not refuse to answer into rpc-victim: $(cat "$T_DIR/serve.err")"
run admin peek rpc-victim --count 10
[ ! -s "$T_DIR/out" ] || run_fail "the answer went into rpc-victim, owned by 4001"
tally "reply-to (serve)" other d
run other call rpc-svc hello --timeout 10
[ "$RC" -eq 0 ] && [ "$(cat "$T_DIR/out")" = hello ] ||
	run_fail "other's call to rpc-svc got no answer"
tally "reply-to (serve)" other a
for who in owner admin other; do
	run "$who" stat rpc-svc
	[ "$RC" -eq 0 ] || run_fail "stat rpc-svc as $who"
	if grep -qE "^ *[0-9]+ +$SERVE_PID +4001 " "$T_DIR/out"; then
		[ "$who" != other ] || run_fail "stat as other shows uid 4001's connection"
		tally "stat consumers" "$who" a
	else
		[ "$who" = other ] || run_fail "stat as $who misses serve's connection"
		tally "stat consumers" "$who" d
	fi
done
kill -TERM "$SERVE_PID"
wait_dead "$SERVE_PID" 150 || fail "serve did not stop on SIGTERM"
wait "$SERVE_PID" || fail "serve exited non-zero: $(cat "$T_DIR/serve.err")"
untrack_pid "$SERVE_PID"

# ---- The broker's own uid is an admin too ----

note "a broker run as uid 4005"
B2=$T_DIR/b2
mkdir "$B2"
chown 4005:4005 "$B2"
chmod 755 "$B2"
who_prefix bself
# Its own HOME: a user's mboxd reads ~/.config/mbox/mboxd.conf, and
# setpriv leaves root's HOME, which uid 4005 may not read.
HOME=$B2 "${WHO[@]}" "$MBOXD" --foreground --socket "$B2/mbox.sock" \
	--db "$B2/mbox.db" </dev/null >>"$B2/mboxd.log" 2>&1 &
B2_PID=$!
track_pid "$B2_PID"
RUN_SOCK=$B2/mbox.sock
RUN_LOG=$B2/mboxd.log
TALLY_AS="broker's uid is admin"
for ((i = 0; i < 100; i++)); do
	run owner ping
	[ "$RC" -eq 0 ] && break
	alive "$B2_PID" || fail "mboxd as uid 4005 exited: $(cat "$B2/mboxd.log")"
	sleep 0.1
done
[ "$RC" -eq 0 ] || fail "mboxd as uid 4005 does not answer"
run owner create own-by-4001 --mode 0600
[ "$RC" -eq 0 ] || run_fail "create as 4001 on the second broker"
run owner post own-by-4001 private
[ "$RC" -eq 0 ] || run_fail "post as 4001 on the second broker"
expect bself peek ok own-by-4001
expect bself chown ok own-by-4001 4003
expect other chmod ok own-by-4001 0600
expect owner peek no own-by-4001
expect admin peek ok own-by-4001
run bself ls --json
grep -qF '"name":"own-by-4001"' "$T_DIR/out" || run_fail "ls as the broker's uid"
kill -TERM "$B2_PID"
wait_dead "$B2_PID" 100 || fail "mboxd as uid 4005 did not stop"
wait "$B2_PID" || fail "mboxd as uid 4005 exited non-zero"
untrack_pid "$B2_PID"
unset RUN_SOCK RUN_LOG TALLY_AS

# ---- A hand-off's claimer needs r on its mailboxes, not just the uid ----

# gsup reads hq through its supplementary group, takes 3 and hands 2 off;
# the same uid without that group may not claim them, gsup itself may.
SUBDRV=$(driver subscriber-driver)
new_mailbox hq 0640
for i in 1 2 3; do as_admin post hq "hq-$i"; done
who_prefix gsup
"${WHO[@]}" "$SUBDRV" -S "$SOCK" sub hq --window 4 --handoff-after 1 \
	--handoff-wait-ms 10000 --timeout-s 15 >"$T_DIR/hq.out" 2>"$T_DIR/hq.err" &
HQ_PID=$!
track_pid "$HQ_PID"
wait_grep "$T_DIR/hq.out" '^handoff [0-9a-f]{32}$' 100 ||
	fail "gsup did not hand off hq: $(cat "$T_DIR/hq.err")"
hq_token=$(sed -n 's/^handoff \([0-9a-f]*\)$/\1/p' "$T_DIR/hq.out")
rc=0
timeout "$T_CMD_TIMEOUT" setpriv --reuid=4002 --regid=4002 --clear-groups \
	"$SUBDRV" -S "$SOCK" claim "$hq_token" >"$T_DIR/claim.out" \
	2>"$T_DIR/claim.err" || rc=$?
assert_eq 4 "$rc" "claim by gsup's uid without group 4100 (exit 4: EACCES)"
grep -q 'permission denied' "$T_DIR/claim.err" ||
	fail "claim without the group said: $(cat "$T_DIR/claim.err")"
rc=0
timeout "$T_CMD_TIMEOUT" "${WHO[@]}" "$SUBDRV" -S "$SOCK" claim "$hq_token" \
	>"$T_DIR/claim.out" 2>"$T_DIR/claim.err" || rc=$?
assert_eq 0 "$rc" "claim by gsup with its group ($(cat "$T_DIR/claim.err"))"
assert_eq "claimed 2" "$(head -n 1 "$T_DIR/claim.out")" "what gsup claimed"
stop "$HQ_PID"
note "CLAIM needs read permission on the hand-off's mailboxes"

# ---- The default socket under /tmp, for a user without XDG_RUNTIME_DIR ----

# Whoever makes /tmp/mbox-$UID first could listen there posing as that
# user's broker: mboxd will not listen in it and mboxctl will not connect
# through it unless it is the user's alone. A uid no other run uses.
for ((i = 0; i < 20; i++)); do
	TU=$((420000 + RANDOM % 20000))
	[ ! -e "/tmp/mbox-$TU" ] && break
done
TD=/tmp/mbox-$TU
[ ! -e "$TD" ] || fail "no free /tmp/mbox-UID to test with"
T_EXTRA_PATHS+=("$TD")
# as_tu CMD...: CMD as uid TU, with none of our defaults' variables but
# those in TU_ENV (NAME=VALUE...).
TU_ENV=()
as_tu()
{
	timeout "$T_CMD_TIMEOUT" env -u MBOX_SOCKET -u XDG_RUNTIME_DIR \
		-u XDG_CONFIG_HOME -u MBOXD_CONFIG "${TU_ENV[@]}" \
		setpriv --reuid="$TU" --regid="$TU" --clear-groups "$@"
}
mkdir -m 0777 "$TD" # root's, writable by all: someone else's
rc=0
as_tu "$MBOXCTL" ping >/dev/null 2>"$T_DIR/tu.err" || rc=$?
assert_eq 6 "$rc" "ping through someone else's $TD"
grep -q "cannot connect to the broker at $TD/mbox.sock: Operation not permitted" "$T_DIR/tu.err" &&
	grep -q "its directory is not yours alone" "$T_DIR/tu.err" ||
	fail "ping through someone else's $TD said: $(cat "$T_DIR/tu.err")"
chown "$TU:$TU" "$TD"
rc=0
as_tu "$MBOXCTL" ping >/dev/null 2>"$T_DIR/tu.err" || rc=$?
assert_eq 6 "$rc" "ping through $TD, writable by others"
grep -q "not yours alone" "$T_DIR/tu.err" || fail "ping through a 0777 $TD said: $(cat "$T_DIR/tu.err")"
chmod 0700 "$TD"
mkdir "$T_DIR/tu"
chown "$TU:$TU" "$T_DIR/tu"
# With a HOME it may not read (root's, as su without - leaves it): the
# default file is skipped with a warning, not fatal. A relative
# XDG_RUNTIME_DIR is ignored (the XDG spec), by mboxd as by libmbox.
mkdir -m 0700 "$T_DIR/tu-roots-home"
TU_ENV=("HOME=$T_DIR/tu-roots-home" "XDG_RUNTIME_DIR=relative-run")
as_tu "$MBOXD" --foreground --db "$T_DIR/tu/mbox.db" </dev/null \
	>>"$T_DIR/tu/mboxd.log" 2>&1 &
TU_ENV=()
TU_PID=$!
track_pid "$TU_PID"
for ((i = 0; i < 100; i++)); do
	rc=0
	as_tu "$MBOXCTL" ping >"$T_DIR/tu.out" 2>"$T_DIR/tu.err" || rc=$?
	[ "$rc" -eq 0 ] && break
	alive "$TU_PID" || fail "mboxd as uid $TU exited: $(cat "$T_DIR/tu/mboxd.log")"
	sleep 0.1
done
assert_eq 0 "$rc" "ping through $TD, the user's own: $(cat "$T_DIR/tu.err")"
grep -q "pong from $TD/mbox.sock" "$T_DIR/tu.out" || fail "ping through $TD: $(cat "$T_DIR/tu.out")"
grep -qF "warning: cannot read $T_DIR/tu-roots-home/.config/mbox/mboxd.conf: Permission denied; going on without it" "$T_DIR/tu/mboxd.log" ||
	fail "mboxd as uid $TU with an unreadable HOME: $(cat "$T_DIR/tu/mboxd.log")"
kill -TERM "$TU_PID"
wait_dead "$TU_PID" 100 || fail "mboxd as uid $TU did not stop"
wait "$TU_PID" || true # the timeout wrapper's status
untrack_pid "$TU_PID"
note "mboxctl connects through /tmp/mbox-UID only when it is the user's alone"

# A user's broker reads the user's configuration file, not the system's:
# $XDG_CONFIG_HOME/mbox/mboxd.conf, else ~/.config/mbox/mboxd.conf. A bad
# line in it shows which file was read.
mkdir -p "$T_DIR/tu/home/.config/mbox" "$T_DIR/tu/xdg/mbox"
echo "log-level = home-file" >"$T_DIR/tu/home/.config/mbox/mboxd.conf"
echo "log-level = xdg-file" >"$T_DIR/tu/xdg/mbox/mboxd.conf"
chown -R "$TU:$TU" "$T_DIR/tu"
# reads_conf FILE WHAT ENV...: mboxd as uid TU with ENV exits 2 on the bad
# line of FILE, which shows FILE was the one read.
reads_conf()
{
	local file=$1 what=$2 rc=0
	shift 2
	TU_ENV=("$@")
	as_tu "$MBOXD" -s "$T_DIR/tu/c.sock" -d "$T_DIR/tu/c.db" 2>"$T_DIR/tu.err" || rc=$?
	TU_ENV=()
	assert_eq 2 "$rc" "mboxd as uid $TU with a bad $what"
	grep -qF "$file:1: log-level must be" "$T_DIR/tu.err" ||
		fail "mboxd as uid $TU did not read $what: $(cat "$T_DIR/tu.err")"
}
reads_conf "$T_DIR/tu/home/.config/mbox/mboxd.conf" "~/.config/mbox/mboxd.conf" \
	"HOME=$T_DIR/tu/home"
reads_conf "$T_DIR/tu/xdg/mbox/mboxd.conf" "\$XDG_CONFIG_HOME/mbox/mboxd.conf" \
	"HOME=$T_DIR/tu/home" "XDG_CONFIG_HOME=$T_DIR/tu/xdg"
# $MBOXD_CONFIG names the file for any uid (the system unit's way).
reads_conf "$T_DIR/tu/xdg/mbox/mboxd.conf" "\$MBOXD_CONFIG" \
	"HOME=$T_DIR/tu/home" "MBOXD_CONFIG=$T_DIR/tu/xdg/mbox/mboxd.conf"
note "a user's mboxd reads ~/.config/mbox/mboxd.conf (or \$XDG_CONFIG_HOME's, or \$MBOXD_CONFIG)"

alive "$BROKER_PID" || fail "mboxd died"
stop_broker

# ---- What was tested ----

# cell OP WHO: "a:N d:M" (allowed / denied as expected), or "-".
cell()
{
	local s=${TALLY["$1|$2"]:-} a d
	[ -n "$s" ] || {
		echo -
		return
	}
	a=${s//d/}
	d=${s//a/}
	echo "a:${#a} d:${#d}"
}

echo "# perms.sh: $N_CHECKS checks passed. a:N d:M = N runs allowed and M"
echo "# denied, each as expected. r/w rows: one run per mode of"
echo "# ${MODES[*]}; owner-only rows: modes 0000 0600 0666."
echo "# Mailboxes are 4001:4100. owner = uid 4001; group(supp) = uid 4002"
echo "# in supplementary group 4100; group(gid) = uid 4004, gid 4100;"
echo "# other = uid 4003; admin = root; owner2 = uid 4001 in group 4200;"
echo "# bself = uid 4005 running its own mboxd. Denials: exit 4, one line"
echo "# 'permission denied', nothing on stdout, logged with uid, pid, op."
printf '# %-22s' operation
for who in "${CLASSES[@]}" owner2 bself; do printf ' %-12s' "${CLASS_NAME[$who]:-$who}"; done
echo
for op in ls peek recv subscribe post publish kick set purge pause resume \
	bind unbind chmod chown rm "chown/chmod rules" "broker's uid is admin" \
	"sender identity" "forged sender (wire)" "denial body (wire)" \
	"reply-to (serve)" "stat consumers"; do
	printf '# %-22s' "$op"
	for who in "${CLASSES[@]}" owner2 bself; do
		printf ' %-12s' "$(cell "$op" "$who")"
	done
	echo
done
