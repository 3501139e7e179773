/*
 * main.c - mboxd: options, default paths, the listening socket, signals,
 * start-up order.
 *
 * Start-up order: the socket is bound and listening before the store is
 * opened, so a client that connects during a long open waits in the
 * backlog instead of being refused; it is served once the loop runs. If
 * the store cannot be opened the socket is removed again.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/log.h"
#include "broker/settings.h"

typedef struct Options {
	char socket_path[PATH_MAX];
	char db_path[PATH_MAX];
	StoreSync sync;
	bool foreground;
	int log_level;
	unsigned socket_mode;
	size_t max_msg_size;
	bool autocreate;
	uint64_t dedup_window_ms;
	/* Limits of doc/protocol.md 8.3. */
	uint64_t max_header_bytes;
	uint64_t max_mailboxes;
	uint64_t max_mailbox_msgs;
	uint64_t max_mailbox_bytes;
	uint64_t max_connections;
	uint64_t max_connections_per_uid;
	uint64_t max_unacked;
	uint64_t max_in_flight;
	uint64_t max_store_bytes;
} Options;

/*
 * The numeric limit options: name, bounds, whether a K/M/G/T suffix
 * (powers of 1024) is taken, and where the value goes.
 */
typedef struct LimitOpt {
	const char *name;
	uint64_t min, max;
	bool bytes;
	bool zero_ok;  /* 0 (none) is allowed besides min..max */
	size_t offset; /* of the uint64_t in Options */
} LimitOpt;

#define LIMIT_OPT(n, lo, hi, by, field)                                        \
	{                                                                      \
		n, lo, hi, by, false, offsetof(Options, field)                 \
	}
static const LimitOpt limit_opts[] = {
	LIMIT_OPT("max-header-bytes", 0, MBOX_HEADERS_MAX, true,
		  max_header_bytes),
	LIMIT_OPT("max-mailboxes", 1, UINT32_MAX, false, max_mailboxes),
	LIMIT_OPT("max-mailbox-msgs", 1, INT64_MAX, false, max_mailbox_msgs),
	LIMIT_OPT("max-mailbox-bytes", 1, INT64_MAX, true, max_mailbox_bytes),
	LIMIT_OPT("max-connections", 1, 1u << 20, false, max_connections),
	LIMIT_OPT("max-connections-per-uid", 1, 1u << 20, false,
		  max_connections_per_uid),
	LIMIT_OPT("max-unacked", 1, UINT32_MAX, false, max_unacked),
	LIMIT_OPT("max-in-flight", 1, 1u << 20, false, max_in_flight),
	/* 0 = none; below one page nothing could be stored at all. */
	{"max-store-size", 4096, INT64_MAX, true, true,
	 offsetof(Options, max_store_bytes)},
};
#define N_LIMIT_OPTS (sizeof(limit_opts) / sizeof(limit_opts[0]))
/* getopt_long values of the limit options: OPT_LIMIT0 + index. */
#define OPT_LIMIT0 512

/* A whole number, with K, M, G or T (times 1024^n) when bytes is set. */
static int
parse_limit(const LimitOpt *lo, const char *arg, uint64_t *out)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	if (!*arg || *arg == '-' || *arg == '+')
		return -EINVAL;
	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno || end == arg)
		return -EINVAL;
	if (lo->bytes && *end) {
		const char *units = "KMGT", *u = strchr(units, end[0] & ~0x20);
		if (!u || !end[0])
			return -EINVAL;
		shift = 10 * (unsigned)(u - units + 1);
		end++;
		/* 4K, 4KB, 4KiB are the same */
		if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0)
			end += strlen(end);
	}
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	v <<= shift;
	if ((v < lo->min && !(v == 0 && lo->zero_ok)) || v > lo->max)
		return -ERANGE;
	*out = v;
	return 0;
}

static int
parse_limit_opt(Options *o, int ch, const char *arg)
{
	const LimitOpt *lo = &limit_opts[ch - OPT_LIMIT0];
	uint64_t v;

	if (parse_limit(lo, arg, &v) < 0) {
		fprintf(stderr, "mboxd: --%s must be a whole number", lo->name);
		if (lo->bytes)
			fprintf(stderr, " of bytes (K, M, G or T multiply by "
					"1024^n)");
		fprintf(stderr, "%s from %llu to %llu",
			lo->zero_ok ? ", 0 (none) or" : "",
			(unsigned long long)lo->min,
			(unsigned long long)lo->max);
		fprintf(stderr, ", not '%s'\n", arg);
		return -EINVAL;
	}
	memcpy((char *)o + lo->offset, &v, sizeof(v));
	return 0;
}

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: mboxd [OPTION]...\n"
		"A local message broker with mailbox semantics.\n"
		"\n"
		"  -s, --socket PATH    listen on PATH (default: $MBOX_SOCKET, "
		"else\n"
		"                       /run/mbox/mbox.sock for root, else\n"
		"                       $XDG_RUNTIME_DIR/mbox/mbox.sock, else\n"
		"                       /tmp/mbox-$UID/mbox.sock)\n"
		"  -d, --db PATH        the store (default: "
		"/var/lib/mbox/mbox.db for\n"
		"                       root, else "
		"$XDG_STATE_HOME/mbox/mbox.db, else\n"
		"                       ~/.local/state/mbox/mbox.db)\n"
		"      --sync MODE      full (default: answer after fsync), "
		"normal\n"
		"                       (survives a crash of mboxd, not of "
		"the host),\n"
		"                       off (tests only)\n"
		"  -f, --foreground     stay in the foreground, log to stderr "
		"(the\n"
		"                       default; kept for systemd units and "
		"scripts)\n"
		"      --log-level L    error, warning, notice, info "
		"(default), debug\n"
		"      --socket-mode M  permission bits of the socket (octal, "
		"default 0666;\n"
		"                       access is decided per mailbox)\n"
		"      --max-msg-size N largest payload in bytes (default "
		"1048576,\n"
		"                       at most 67108864)\n"
		"      --no-autocreate  POST to a missing mailbox fails "
		"instead of\n"
		"                       creating it\n"
		"      --dedup-window D how long a DEDUP key is remembered "
		"(default 120s;\n"
		"                       a number of seconds, or with ms, s, "
		"m or h)\n"
		"\n"
		"Limits (a request over one is refused and told which; "
		"sizes take K, M,\n"
		"G or T, powers of 1024):\n"
		"      --max-header-bytes N     header keys and values of "
		"one message\n"
		"                               (default 4096, at most "
		"4096)\n"
		"      --max-mailboxes N        mailboxes in all (default "
		"65536)\n"
		"      --max-mailbox-msgs N     messages one mailbox holds, "
		"dead ones\n"
		"                               included (default "
		"10000000)\n"
		"      --max-mailbox-bytes N    payload bytes one mailbox "
		"holds\n"
		"                               (default 16G)\n"
		"      --max-connections N      client connections (default "
		"4096)\n"
		"      --max-connections-per-uid N\n"
		"                               connections of one uid; "
		"root and mboxd's\n"
		"                               own uid are not counted "
		"(default 1024)\n"
		"      --max-unacked N          messages one connection "
		"holds leased\n"
		"                               (default 65536)\n"
		"      --max-in-flight N        requests of one connection "
		"not yet\n"
		"                               answered (default 1024)\n"
		"      --max-store-size N       database file size, 0 = no "
		"cap (default 0)\n"
		"\n"
		"  -h, --help           show this help\n"
		"  -V, --version        show the version\n");
}

/* mkdir -p of path's parent directory, mode for the created ones. */
static int
make_parent_dirs(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	char *slash;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	slash = strrchr(buf, '/');
	if (!slash || slash == buf)
		return 0;
	*slash = '\0';
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int
default_socket_path(char *buf, size_t size)
{
	const char *env = getenv("MBOX_SOCKET");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (env && *env)
		n = snprintf(buf, size, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(buf, size, "/run/mbox/mbox.sock");
	else if (xdg && *xdg)
		n = snprintf(buf, size, "%s/mbox/mbox.sock", xdg);
	else
		n = snprintf(buf, size, "/tmp/mbox-%u/mbox.sock",
			     (unsigned)geteuid());
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int
default_db_path(char *buf, size_t size)
{
	const char *state = getenv("STATE_DIRECTORY");
	const char *xdg = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	int n;

	if (geteuid() == 0 && state && *state)
		/* systemd's StateDirectory= may list several: use the first */
		n = snprintf(buf, size, "%.*s/mbox.db",
			     (int)strcspn(state, ":"), state);
	else if (geteuid() == 0)
		n = snprintf(buf, size, "/var/lib/mbox/mbox.db");
	else if (xdg && *xdg)
		n = snprintf(buf, size, "%s/mbox/mbox.db", xdg);
	else if (home && *home)
		n = snprintf(buf, size, "%s/.local/state/mbox/mbox.db", home);
	else
		return -ENOENT;
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int
parse_options(Options *o, int argc, char **argv)
{
	enum {
		OPT_SYNC = 256,
		OPT_LOG_LEVEL,
		OPT_SOCKET_MODE,
		OPT_MAX_MSG_SIZE,
		OPT_NO_AUTOCREATE,
		OPT_DEDUP_WINDOW,
	};
	static const struct option longopts[] = {
		{"socket", required_argument, NULL, 's'},
		{"db", required_argument, NULL, 'd'},
		{"sync", required_argument, NULL, OPT_SYNC},
		{"foreground", no_argument, NULL, 'f'},
		{"log-level", required_argument, NULL, OPT_LOG_LEVEL},
		{"socket-mode", required_argument, NULL, OPT_SOCKET_MODE},
		{"max-msg-size", required_argument, NULL, OPT_MAX_MSG_SIZE},
		{"no-autocreate", no_argument, NULL, OPT_NO_AUTOCREATE},
		{"dedup-window", required_argument, NULL, OPT_DEDUP_WINDOW},
		{"max-header-bytes", required_argument, NULL, OPT_LIMIT0 + 0},
		{"max-mailboxes", required_argument, NULL, OPT_LIMIT0 + 1},
		{"max-mailbox-msgs", required_argument, NULL, OPT_LIMIT0 + 2},
		{"max-mailbox-bytes", required_argument, NULL, OPT_LIMIT0 + 3},
		{"max-connections", required_argument, NULL, OPT_LIMIT0 + 4},
		{"max-connections-per-uid", required_argument, NULL,
		 OPT_LIMIT0 + 5},
		{"max-unacked", required_argument, NULL, OPT_LIMIT0 + 6},
		{"max-in-flight", required_argument, NULL, OPT_LIMIT0 + 7},
		{"max-store-size", required_argument, NULL, OPT_LIMIT0 + 8},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int ch;
	char *end;
	unsigned long long v;

	while ((ch = getopt_long(argc, argv, "s:d:fhV", longopts, NULL)) !=
	       -1) {
		switch (ch) {
		case 's':
			snprintf(o->socket_path, sizeof(o->socket_path), "%s",
				 optarg);
			break;
		case 'd':
			snprintf(o->db_path, sizeof(o->db_path), "%s", optarg);
			break;
		case OPT_SYNC:
			if (strcmp(optarg, "full") == 0)
				o->sync = STORE_SYNC_FULL;
			else if (strcmp(optarg, "normal") == 0)
				o->sync = STORE_SYNC_NORMAL;
			else if (strcmp(optarg, "off") == 0)
				o->sync = STORE_SYNC_OFF;
			else {
				fprintf(stderr,
					"mboxd: --sync must be full, normal or "
					"off, not '%s'\n",
					optarg);
				return -EINVAL;
			}
			break;
		case 'f':
			o->foreground = true;
			break;
		case OPT_LOG_LEVEL:
			o->log_level = log_level_parse(optarg);
			if (o->log_level < 0) {
				fprintf(stderr,
					"mboxd: --log-level must be error, "
					"warning, notice, info or debug, not "
					"'%s'\n",
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_SOCKET_MODE:
			errno = 0;
			v = strtoull(optarg, &end, 8);
			if (errno || *end || !*optarg || v > 0777) {
				fprintf(stderr,
					"mboxd: --socket-mode must be octal "
					"0 to 0777, not '%s'\n",
					optarg);
				return -EINVAL;
			}
			o->socket_mode = (unsigned)v;
			break;
		case OPT_MAX_MSG_SIZE:
			errno = 0;
			v = strtoull(optarg, &end, 10);
			if (errno || *end || !*optarg ||
			    v > 64u * 1024 * 1024) {
				fprintf(stderr,
					"mboxd: --max-msg-size must be a "
					"number of bytes up to 67108864, not "
					"'%s'\n",
					optarg);
				return -EINVAL;
			}
			o->max_msg_size = (size_t)v;
			break;
		case OPT_NO_AUTOCREATE:
			o->autocreate = false;
			break;
		case OPT_DEDUP_WINDOW:
			if (settings_duration_ms(optarg, &o->dedup_window_ms) <
				    0 ||
			    o->dedup_window_ms == 0) {
				fprintf(stderr,
					"mboxd: --dedup-window must be a "
					"duration like 120, 90s or 5m, not "
					"'%s'\n",
					optarg);
				return -EINVAL;
			}
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("mboxd %s\n", PACKAGE_VERSION);
			exit(0);
		default:
			if (ch >= OPT_LIMIT0 &&
			    ch < OPT_LIMIT0 + (int)N_LIMIT_OPTS) {
				if (parse_limit_opt(o, ch, optarg) < 0)
					return -EINVAL;
				break;
			}
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mboxd: unexpected argument '%s'\n",
			argv[optind]);
		usage(stderr);
		return -EINVAL;
	}
	if (!o->socket_path[0] &&
	    default_socket_path(o->socket_path, sizeof(o->socket_path)) < 0) {
		fprintf(stderr, "mboxd: socket path too long; use --socket\n");
		return -EINVAL;
	}
	if (!o->db_path[0] &&
	    default_db_path(o->db_path, sizeof(o->db_path)) < 0) {
		fprintf(stderr, "mboxd: cannot choose a database path (HOME "
				"is not set); use --db PATH\n");
		return -EINVAL;
	}
	return 0;
}

/*
 * Bind the listening socket. A socket file left by a dead broker is
 * replaced; one that a live broker answers on is not.
 */
static int
listen_socket(const Log *log, const char *path, unsigned mode)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_write(log, LOG_ERR,
			  "socket path %s is too long (at most %zu bytes)",
			  path, sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	/* Others must be able to traverse to the socket: 0755. */
	r = make_parent_dirs(path, 0755);
	if (r < 0) {
		log_write(log, LOG_ERR, "cannot create the directory of %s: %s",
			  path, strerror(-r));
		return r;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		log_write(log, LOG_ERR,
			  "another mboxd is already listening on %s; stop it "
			  "or use --socket",
			  path);
		close(fd);
		return -EADDRINUSE;
	}
	close(fd);
	unlink(path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, mode) < 0 || listen(fd, SOMAXCONN) < 0) {
		r = -errno;
		log_write(log, LOG_ERR, "cannot listen on %s: %s", path,
			  strerror(errno));
		close(fd);
		return r;
	}
	return fd;
}

typedef struct SignalCtx {
	Broker *broker;
	const Log *log;
} SignalCtx;

static void
on_stop_signal(EV_P_ ev_signal *w, int revents)
{
	SignalCtx *s = w->data;

	log_write(s->log, LOG_NOTICE, "signal %d: stopping", w->signum);
	broker_stop(s->broker);
	ev_break(EV_A_ EVBREAK_ALL);
}

int
main(int argc, char **argv)
{
	Options o = {
		.sync = STORE_SYNC_FULL,
		.log_level = LOG_INFO,
		.socket_mode = 0666,
		.max_msg_size = MBOX_DEFAULT_MSG_SIZE,
		.autocreate = true,
		.dedup_window_ms = MBOX_DEFAULT_DEDUP_MS,
		.max_header_bytes = MBOX_HEADERS_MAX,
		.max_mailboxes = 65536,
		.max_mailbox_msgs = 10000000,
		.max_mailbox_bytes = UINT64_C(16) << 30,
		.max_connections = 4096,
		.max_connections_per_uid = 1024,
		.max_unacked = 65536,
		.max_in_flight = 1024,
		.max_store_bytes = 0,
	};
	Log log = {.level = LOG_INFO};
	BrokerConfig cfg;
	struct ev_loop *loop;
	Broker *broker = NULL;
	ev_signal sigterm, sigint;
	SignalCtx sctx;
	int fd, r;

	if (parse_options(&o, argc, argv) < 0)
		return 2;
	log.level = o.log_level;
	signal(SIGPIPE, SIG_IGN);
	loop = ev_default_loop(EVFLAG_AUTO);
	if (!loop) {
		log_write(&log, LOG_ERR, "cannot start the event loop");
		return 1;
	}
	r = make_parent_dirs(o.db_path, 0700);
	if (r < 0) {
		log_write(&log, LOG_ERR,
			  "cannot create the directory of %s: %s", o.db_path,
			  strerror(-r));
		return 1;
	}
	cfg = (BrokerConfig){
		.socket_path = o.socket_path,
		.db_path = o.db_path,
		.sync = o.sync,
		.socket_mode = o.socket_mode,
		.max_msg_size = o.max_msg_size,
		.autocreate = o.autocreate,
		.max_connections = (size_t)o.max_connections,
		.max_in_flight = (size_t)o.max_in_flight,
		.max_out_bytes = 8u * 1024 * 1024,
		.dedup_window_ms = o.dedup_window_ms,
		.max_header_bytes = (size_t)o.max_header_bytes,
		.max_mailboxes = (size_t)o.max_mailboxes,
		.max_mailbox_msgs = o.max_mailbox_msgs,
		.max_mailbox_bytes = o.max_mailbox_bytes,
		.max_connections_per_uid = (size_t)o.max_connections_per_uid,
		.max_unacked = (size_t)o.max_unacked,
		.max_store_bytes = o.max_store_bytes,
	};
	fd = listen_socket(&log, o.socket_path, o.socket_mode);
	if (fd < 0)
		return 1;
	r = broker_new(&broker, loop, &log, &cfg, fd, true);
	if (r < 0) {
		unlink(o.socket_path);
		return 1;
	}
	sctx = (SignalCtx){broker, &log};
	ev_signal_init(&sigterm, on_stop_signal, SIGTERM);
	ev_signal_init(&sigint, on_stop_signal, SIGINT);
	sigterm.data = sigint.data = &sctx;
	ev_signal_start(loop, &sigterm);
	ev_signal_start(loop, &sigint);
	log_write(&log, LOG_NOTICE,
		  "mboxd %s listening on %s, store %s (sync=%s)",
		  PACKAGE_VERSION, o.socket_path, o.db_path,
		  o.sync == STORE_SYNC_FULL	? "full"
		  : o.sync == STORE_SYNC_NORMAL ? "normal"
						: "off");
	ev_run(loop, 0);
	ev_signal_stop(loop, &sigterm);
	ev_signal_stop(loop, &sigint);
	broker_free(broker);
	log_write(&log, LOG_NOTICE, "stopped");
	return 0;
}
