#!/bin/bash
# compare.sh - mboxd against the brokers a user would pick instead, on this
# machine in one run: beanstalkd (-f0), Redis Streams (appendfsync always)
# and NATS JetStream (file store), each started here on a unix socket or
# 127.0.0.1 with its durability setting stated, measured with the same
# workloads (tests/bench/peer-bench for the peers, tests/bench/mbox-bench
# for mboxd), and printed as one table with the ratios issue 7 asks for.
#
# usage: contrib/bench/compare.sh [--quick] [--no-install] [--builddir DIR]
#            [--messages N] [--fill N] [--count N] [--peers LIST] [--json]
#
#   --builddir DIR  the build tree holding mboxd and tests/bench/ (default .)
#   --messages N    messages of the pipeline and of each scale run (20000)
#   --fill N        messages queued when the RSS is read (100000)
#   --count N       latency round trips (2000)
#   --peers LIST    some of beanstalkd,redis,nats (default all three)
#   --no-install    skip peers that are not installed instead of installing
#                   them with apt-get (which needs root)
#   --quick         tiny counts: checks that everything runs, nothing more
#   --json          print the merged figures as one JSON object instead
#
# Each server runs in a temporary directory and is stopped by pid (SIGTERM,
# then SIGKILL after 10 s) when its runs are done and, whatever happens, by
# the EXIT trap; "started NAME pid N" lines on stderr name them. Every wait
# is bounded. The peers run twice: a fresh server for the RSS idle and with
# --fill messages queued, another for the timed workloads.
set -eu -o pipefail

ME=compare.sh
BUILDDIR=.
MESSAGES=20000
FILL=100000
COUNT=2000
PEERS=beanstalkd,redis,nats
INSTALL=1
QUICK=0
JSON=0
RUN_TIMEOUT=300 # seconds, any one benchmark run
# The pipeline's shape, passed to both benchmark programs.
PRODUCERS=4
CONSUMERS=2
DEPTH=64
# Most messages a consumer holds: mboxd's consumers subscribe with this
# window, the peers' take up to this many at once.
BATCH=512

die()
{
	echo "$ME: $*" >&2
	exit 1
}

say()
{
	echo "$ME: $*" >&2
}

usage()
{
	sed -n '/^# usage:/,/^# Each server/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1 ;;
	--no-install) INSTALL=0 ;;
	--json) JSON=1 ;;
	--builddir) BUILDDIR=${2:?--builddir DIR} && shift ;;
	--messages) MESSAGES=${2:?--messages N} && shift ;;
	--fill) FILL=${2:?--fill N} && shift ;;
	--count) COUNT=${2:?--count N} && shift ;;
	--peers) PEERS=${2:?--peers LIST} && shift ;;
	-h | --help)
		usage
		exit 0
		;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
	shift
done
if [ "$QUICK" = 1 ]; then
	MESSAGES=200 FILL=500 COUNT=20 RUN_TIMEOUT=60
fi
for n in "$MESSAGES" "$FILL" "$COUNT"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "counts must be positive numbers, not '$n'"
done

PEER_BENCH=$BUILDDIR/tests/bench/peer-bench
MBOX_BENCH=$BUILDDIR/tests/bench/mbox-bench
MBOXD=$BUILDDIR/mboxd
for f in "$PEER_BENCH" "$MBOX_BENCH" "$MBOXD"; do
	[ -x "$f" ] || die "$f is not built (run make, or give --builddir)"
done
command -v python3 >/dev/null || die "python3 is needed to print the table"

# ---- Temporary files, started servers, and the trap that cleans up ----

tmp_root=${TMPDIR:-/tmp}
# Unix socket paths must fit in 108 bytes.
[ "${#tmp_root}" -le 60 ] || tmp_root=/tmp
WORK=$(mktemp -d "$tmp_root/mbox-compare.XXXXXXXX")
STARTED=()      # pids of the servers still running
POLICY_ADDED=0  # we created /usr/sbin/policy-rc.d

alive()
{
	local state
	[ -r "/proc/$1/stat" ] || return 1
	state=$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$1/stat" 2>/dev/null) ||
		return 1
	[ -n "$state" ] && [ "$state" != Z ]
}

# stop_pid PID NAME: SIGTERM, up to 10 s, then SIGKILL; reap it.
stop_pid()
{
	local i
	kill -TERM "$1" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		alive "$1" || break
		sleep 0.1
	done
	if alive "$1"; then
		say "$2 (pid $1) ignored SIGTERM for 10 s, killing it"
		kill -KILL "$1" 2>/dev/null || true
	fi
	wait "$1" 2>/dev/null || true
	local keep=() p
	for p in "${STARTED[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	STARTED=("${keep[@]}")
}

cleanup()
{
	local rc=$? p
	set +e
	for p in "${STARTED[@]}"; do
		stop_pid "$p" server
	done
	if [ "$POLICY_ADDED" = 1 ]; then
		rm -f /usr/sbin/policy-rc.d
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- Finding and installing the peers ----

declare -A BIN PKG
PKG[beanstalkd]=beanstalkd
PKG[redis]=redis-server
PKG[nats]=nats-server

# find_bin NAME: the peer's server binary, also in sbin dirs a user's PATH
# may lack.
find_bin()
{
	local prog=${PKG[$1]} d
	if command -v "$prog" >/dev/null 2>&1; then
		command -v "$prog"
		return 0
	fi
	for d in /usr/sbin /usr/local/bin /usr/local/sbin /sbin; do
		[ -x "$d/$prog" ] && echo "$d/$prog" && return 0
	done
	return 1
}

# install_missing PKG...: apt-get install, with a policy-rc.d that keeps
# Debian's postinst from starting system-wide services (ours run here).
install_missing()
{
	[ "$(id -u)" = 0 ] || {
		say "not root: cannot install $*; skipping them"
		return 0
	}
	command -v apt-get >/dev/null || {
		say "no apt-get: cannot install $*; skipping them"
		return 0
	}
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\n# added by mboxd compare.sh\nexit 101\n' \
			>/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		POLICY_ADDED=1
	fi
	say "installing $*"
	# Bounded like every other wait: 10 minutes for each apt-get.
	if ! DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q \
		--no-install-recommends "$@" >"$WORK/apt.log" 2>&1; then
		DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update -q \
			>>"$WORK/apt.log" 2>&1 || true
		DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y \
			-q --no-install-recommends "$@" >>"$WORK/apt.log" 2>&1 ||
			say "apt-get install $* failed: $(tail -n 3 "$WORK/apt.log")"
	fi
	if [ "$POLICY_ADDED" = 1 ]; then
		rm -f /usr/sbin/policy-rc.d
		POLICY_ADDED=0
	fi
}

RUN_PEERS=()
missing=()
IFS=, read -r -a want <<<"$PEERS"
for p in "${want[@]}"; do
	[ -n "${PKG[$p]:-}" ] || die "unknown peer '$p' (beanstalkd, redis, nats)"
	find_bin "$p" >/dev/null || missing+=("${PKG[$p]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
	if [ "$INSTALL" = 1 ]; then
		install_missing "${missing[@]}"
	else
		say "not installed, skipped (--no-install): ${missing[*]}"
	fi
fi
for p in "${want[@]}"; do
	if BIN[$p]=$(find_bin "$p"); then
		RUN_PEERS+=("$p")
	else
		say "${PKG[$p]} is not installed: no $p column"
	fi
done

# ---- Starting, probing and stopping the peers ----

free_port()
{
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ADDR, PID and DIR of the server start_peer started last.
ADDR='' PID='' DIR=''

# ready NAME: the server answers on ADDR (a socket file, or a TCP connect
# to 127.0.0.1), within 10 s.
ready()
{
	local i port
	for ((i = 0; i < 200; i++)); do
		alive "$PID" || die "$1 (pid $PID) exited during start-up: $(tail -n 5 "$DIR/log")"
		case $ADDR in
		unix:*) [ -S "${ADDR#unix:}" ] && return 0 ;;
		*)
			port=${ADDR##*:}
			(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
			;;
		esac
		sleep 0.05
	done
	die "$1 (pid $PID) not ready on $ADDR within 10 s: $(tail -n 5 "$DIR/log")"
}

# start_peer NAME: a fresh server in a directory of its own.
start_peer()
{
	local bin=${BIN[$1]} port
	DIR=$(mktemp -d "$WORK/$1.XXXX")
	case $1 in
	beanstalkd)
		# -f0: fsync the binlog after every write.
		ADDR=unix:$DIR/sock
		"$bin" -f0 -b "$DIR" -l "$ADDR" >"$DIR/log" 2>&1 </dev/null &
		;;
	redis)
		ADDR=unix:$DIR/sock
		"$bin" --port 0 --unixsocket "$DIR/sock" --appendonly yes \
			--appendfsync always --save '' --dir "$DIR" \
			--daemonize no >"$DIR/log" 2>&1 </dev/null &
		;;
	nats)
		port=$(free_port)
		ADDR=127.0.0.1:$port
		"$bin" -js -sd "$DIR/js" -a 127.0.0.1 -p "$port" \
			>"$DIR/log" 2>&1 </dev/null &
		;;
	esac
	PID=$!
	STARTED+=("$PID")
	say "started $1 pid $PID on $ADDR"
	ready "$1"
}

# rss_kib PID: VmRSS from /proc.
rss_kib()
{
	sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB$/\1/p' "/proc/$1/status"
}

# bench NAME OUT ARGS...: peer-bench on the last started server.
bench()
{
	local name=$1 out=$2
	shift 2
	if ! timeout "$RUN_TIMEOUT" "$PEER_BENCH" --peer "$name" \
		--address "$ADDR" --json --timeout "$RUN_TIMEOUT" "$@" \
		>"$out" 2>"$out.err"; then
		say "peer-bench on $name failed: $(cat "$out.err")"
		return 1
	fi
}

FAILED=0

# measure NAME: RSS idle and with FILL queued on one server, then the
# timed workloads on a fresh one. Writes $WORK/NAME.json.
measure()
{
	local name=$1 idle full
	start_peer "$name"
	sleep 0.2 # past start-up's transient allocations
	idle=$(rss_kib "$PID")
	if bench "$name" "$WORK/$name.fill" --workload fill \
		--messages "$FILL"; then
		full=$(rss_kib "$PID")
	else
		full=null FAILED=1
		echo '{}' >"$WORK/$name.fill"
	fi
	stop_pid "$PID" "$name"

	start_peer "$name"
	if ! bench "$name" "$WORK/$name.runs" \
		--workload pipeline,scale,latency --messages "$MESSAGES" \
		--count "$COUNT" --scale 1,16 --producers "$PRODUCERS" \
		--consumers "$CONSUMERS" --depth "$DEPTH" --batch "$BATCH"; then
		FAILED=1
		echo '{}' >"$WORK/$name.runs"
	fi
	stop_pid "$PID" "$name"
	python3 - "$WORK/$name" "$idle" "$full" "$FILL" <<'EOF'
import json, sys
base, idle, full, fill = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
with open(base + ".runs") as f:
    runs = json.load(f)
with open(base + ".fill") as f:
    filled = json.load(f)
runs["rss_idle_kib"] = int(idle) if idle.isdigit() else None
runs["rss_backlog_kib"] = int(full) if full.isdigit() else None
runs["backlog_messages"] = int(fill)
runs["fill_seconds"] = filled.get("fill_seconds")
with open(base + ".json", "w") as f:
    json.dump(runs, f)
EOF
}

start_time=$(date +%s)
for p in "${RUN_PEERS[@]}"; do
	[ "$JSON" = 1 ] || say "measuring $p"
	measure "$p"
done

[ "$JSON" = 1 ] || say "measuring mboxd"
# Its temporary directories go under WORK: removed even if it is killed.
if ! TMPDIR=$WORK timeout "$((RUN_TIMEOUT * 2))" "$MBOX_BENCH" \
	--mboxd "$MBOXD" --json \
	--workload pipeline,scale,latency,memory --messages "$MESSAGES" \
	--count "$COUNT" --scale 1,16 --backlog "$FILL" \
	--producers "$PRODUCERS" --consumers "$CONSUMERS" --depth "$DEPTH" \
	--consumer-window "$BATCH" \
	>"$WORK/mboxd.json" 2>"$WORK/mboxd.err"; then
	say "mbox-bench failed: $(tail -n 5 "$WORK/mboxd.err")"
	echo '{}' >"$WORK/mboxd.json"
	FAILED=1
fi

# ---- The table ----

{
	echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "nproc=$(nproc)"
	echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
	echo "kernel=$(uname -sr)"
	echo "seconds=$(($(date +%s) - start_time))"
	for p in "${RUN_PEERS[@]}"; do
		case $p in
		beanstalkd) v=$("${BIN[$p]}" -v 2>&1 | head -n 1) ;;
		redis) v=$("${BIN[$p]}" --version 2>&1 | sed 's/ sha=.*//') ;;
		nats) v=$("${BIN[$p]}" --version 2>&1 | head -n 1) ;;
		esac
		echo "version_$p=$v"
	done
} >"$WORK/machine"

python3 - "$WORK" "$JSON" "$MESSAGES" "$FILL" "$COUNT" "$BATCH" \
	"${RUN_PEERS[@]}" <<'EOF'
import json, sys

work, as_json, messages, fill, count, batch = sys.argv[1:7]
peers = sys.argv[7:]
machine = dict(l.rstrip("\n").split("=", 1) for l in open(work + "/machine"))
data = {"mboxd": json.load(open(work + "/mboxd.json"))}
for p in peers:
    data[p] = json.load(open(work + "/" + p + ".json"))
systems = ["mboxd"] + peers


def scale(d, n):
    for s in d.get("scale") or []:
        if s.get("producers") == n:
            return s.get("msgs_per_sec")
    return None


def get(system, row):
    d = data[system]
    if row == "pipe":
        return d.get("pipeline_msgs_per_sec")
    if row == "one":
        return scale(d, 1)
    if row == "sixteen":
        return scale(d, 16)
    if row == "p50":
        return d.get("latency_full_p50_us" if system == "mboxd" else "latency_p50_us")
    if row == "p99":
        return d.get("latency_full_p99_us" if system == "mboxd" else "latency_p99_us")
    if row in ("rss_idle", "rss_full"):
        v = d.get("rss_idle_kib" if row == "rss_idle" else "rss_backlog_kib")
        return None if v is None else v / 1024.0
    return None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


ratios = [
    ("mboxd pipeline / redis pipeline", ratio(get("mboxd", "pipe"), get("redis", "pipe") if "redis" in data else None), 2.0),
    ("mboxd 16 producers / beanstalkd 16 producers", ratio(get("mboxd", "sixteen"), get("beanstalkd", "sixteen") if "beanstalkd" in data else None), 3.0),
    ("mboxd pipeline / nats pipeline", ratio(get("mboxd", "pipe"), get("nats", "pipe") if "nats" in data else None), None),
    ("mboxd pipeline / beanstalkd pipeline", ratio(get("mboxd", "pipe"), get("beanstalkd", "pipe") if "beanstalkd" in data else None), None),
]

durability = {
    "mboxd": "mboxd --sync %s: a post is answered after its SQLite transaction "
    "(WAL) committed and mboxd fsync'd the WAL itself; concurrent posts "
    "share a commit." % data["mboxd"].get("sync", "full"),
    "beanstalkd": "beanstalkd -f0: the binlog is fsync'd after every write "
    "(put, delete) before the reply.",
    "redis": "redis-server appendonly yes, appendfsync always: the AOF is "
    "written and fsync'd before replies go out, once per event-loop "
    "iteration (pipelined commands share it); XACK+XDEL remove taken entries.",
    "nats": "nats-server 2.9 JetStream, file store: a message is written to "
    "its block file (the page cache) before the PubAck, with no fsync per "
    "message and no setting for one in 2.9 (sync_interval came in 2.10); "
    "files are fsync'd later in the background. An OS crash can lose acked "
    "messages. Acks are plain +ACK (not confirmed).",
}

if as_json == "1":
    out = {"date": machine["date"], "machine": {k: machine[k] for k in ("nproc", "cpu", "kernel")},
           "seconds": int(machine["seconds"]),
           "messages": int(messages), "fill": int(fill), "count": int(count),
           "systems": data, "durability": {s: durability[s] for s in systems},
           "ratios": {name: r for name, r, _ in ratios}}
    print(json.dumps(out, separators=(",", ":")))
    sys.exit(0)


def fmt(v, prec=0):
    if v is None:
        return "-"
    return "{:,.{}f}".format(v, prec)


rows = [
    ("pipeline msgs/s (4 prod. x 64, 2 cons.)", "pipe", 0),
    ("1 producer msgs/s (1 in flight)", "one", 0),
    ("16 producers msgs/s (1 in flight each)", "sixteen", 0),
    ("latency p50 us (put -> consumer)", "p50", 0),
    ("latency p99 us", "p99", 0),
    ("idle RSS MiB", "rss_idle", 1),
    ("RSS MiB with %s queued" % "{:,}".format(int(fill)), "rss_full", 1),
]
w0 = 42
print("mboxd against its peers, %s-byte messages, %s messages a run, same machine, one run"
      % (data["mboxd"].get("size", 1024), "{:,}".format(int(messages))))
print()
print("%-*s" % (w0, "") + "".join("%12s" % s for s in systems))
for label, key, prec in rows:
    print("%-*s" % (w0, label) + "".join("%12s" % fmt(get(s, key), prec) for s in systems))
print()
print("ratios (issue 7):")
for name, r, target in ratios:
    if target is None and r is None:
        continue
    t = "" if target is None else ("   target >= %g: %s" % (target, "-" if r is None else ("met" if r >= target else "NOT met")))
    print("  %-46s %6s%s" % (name, fmt(r, 2), t))
m = data["mboxd"]
print()
ceiling_page = m.get("sqlite_ceiling_page_size")
print("baselines (mbox-bench): fsync of 1 KiB %s/s (p50 %s us), SOCK_SEQPACKET "
      "ping-pong p50 %s us, SQLite insert+delete at its best %s/s (%s KiB pages, "
      "%s a transaction)"
      % (fmt(m.get("fsync_per_sec")), fmt(m.get("fsync_p50_us")),
         fmt(m.get("seqpacket_rtt_p50_us"), 1), fmt(m.get("sqlite_ceiling_per_sec")),
         ceiling_page // 1024 if ceiling_page else "-", fmt(m.get("sqlite_ceiling_batch"))))
print("pipeline consumers: mboxd subscribes (window %s) and acks what has come in one "
      "request; peers take what is there, up to %s (reserve one at a time / XREADGROUP "
      "COUNT / pull batch), then ack." % (batch, batch))
print("mboxd latency: post -> push subscriber (sync=full); peers: put -> a consumer "
      "waiting in reserve / XREADGROUP BLOCK / pull of 1. %s round trips." % count)
print()
print("durability:")
for s in systems:
    print("  " + durability[s])
print()
print("date: %s; machine: %s cores, %s, %s; run took %s s"
      % (machine["date"], machine["nproc"], machine["cpu"], machine["kernel"], machine["seconds"]))
vers = [machine[k] for k in sorted(machine) if k.startswith("version_")]
if vers:
    print("peers: " + "; ".join(vers))
EOF
[ "$FAILED" = 0 ] || die "some runs failed (see above); their figures are '-'"
