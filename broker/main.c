/*
 * main.c - mboxd: options and the configuration file, default paths, the
 * listening socket (bound here or passed by systemd), daemonising, signals
 * (stop, reload), systemd notifications, start-up order.
 *
 * Settings are layered: built-in defaults, then the configuration file,
 * then the command line, each through apply_option, so a value is checked
 * the same way wherever it came from. SIGHUP rebuilds the three layers
 * into a scratch Options and applies only what may change at run time
 * (the log level and the limits but max-msg-size); the command line is
 * re-applied on top, so it keeps winning after a reload.
 *
 * Start-up order: the socket is bound and listening (or taken from
 * systemd) before the store is opened, so a client that connects during a
 * long open waits in the backlog instead of being refused; it is served
 * once the loop runs. If the store cannot be opened a socket we bound is
 * removed again. Only then is the broker ready: the pid file is written,
 * systemd gets READY=1, and with --daemon the waiting parent exits 0.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/conffile.h"
#include "broker/log.h"
#include "broker/sdnotify.h"
#include "broker/settings.h"
#include "client/stdfds.h"

/* malloc: below this, allocations come from the heap (glibc's default is
 * 128 KiB, raised on the fly unless set); above this, free heap at its
 * top goes back to the system (see main). */
#define MBOXD_MALLOC_MMAP (4 * 1024 * 1024)
#define MBOXD_MALLOC_TRIM (8 * 1024 * 1024)

typedef struct Options {
	char socket_path[PATH_MAX]; /* "" until a default is chosen */
	bool socket_set;	    /* by --socket or the file */
	bool socket_tmp;	    /* the default under /tmp: shared */
	char db_path[PATH_MAX];
	StoreSync sync;
	bool daemon;		 /* --daemon; --foreground clears it */
	char pid_file[PATH_MAX]; /* "" = none */
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
	uint64_t commit_delay_us;
	uint64_t max_subscriptions;
	uint64_t max_mailboxes_per_uid;
	uint64_t disk_reserve_bytes;
} Options;

static const Options options_default = {
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
	.commit_delay_us = 100,
	.max_subscriptions = 1024,
	.max_mailboxes_per_uid = 4096,
	.disk_reserve_bytes = UINT64_C(32) << 20,
};

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
	/* 0 = none; less could not hold a database at all (and the store
	 * refuses a cap below what the database already holds). */
	{"max-store-size", 4096, INT64_MAX, true, true,
	 offsetof(Options, max_store_bytes)},
	/* Not a limit, but a number SIGHUP applies the same way. */
	LIMIT_OPT("commit-delay-us", 0, 1000000, false, commit_delay_us),
	LIMIT_OPT("max-subscriptions", 1, UINT32_MAX, false, max_subscriptions),
	LIMIT_OPT("max-mailboxes-per-uid", 1, UINT32_MAX, false,
		  max_mailboxes_per_uid),
	/* Not a limit either, and applied at start only; 0 = none. */
	{"disk-reserve", 1 << 20, INT64_MAX, true, true,
	 offsetof(Options, disk_reserve_bytes)},
};
#define N_LIMIT_OPTS (sizeof(limit_opts) / sizeof(limit_opts[0]))

enum {
	OPT_SYNC = 256,
	OPT_LOG_LEVEL,
	OPT_SOCKET_MODE,
	OPT_MAX_MSG_SIZE,
	OPT_NO_AUTOCREATE,
	OPT_DEDUP_WINDOW,
	OPT_DAEMON,
	OPT_PID_FILE,
	/* getopt_long values of the limit options: OPT_LIMIT0 + index. */
	OPT_LIMIT0 = 512,
};

/* Also the keys of the configuration file (conffile.h). */
static const struct option longopts[] = {
	{"config", required_argument, NULL, 'c'},
	{"socket", required_argument, NULL, 's'},
	{"db", required_argument, NULL, 'd'},
	{"sync", required_argument, NULL, OPT_SYNC},
	{"foreground", no_argument, NULL, 'f'},
	{"daemon", no_argument, NULL, OPT_DAEMON},
	{"pid-file", required_argument, NULL, OPT_PID_FILE},
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
	{"max-connections-per-uid", required_argument, NULL, OPT_LIMIT0 + 5},
	{"max-unacked", required_argument, NULL, OPT_LIMIT0 + 6},
	{"max-in-flight", required_argument, NULL, OPT_LIMIT0 + 7},
	{"max-store-size", required_argument, NULL, OPT_LIMIT0 + 8},
	{"commit-delay-us", required_argument, NULL, OPT_LIMIT0 + 9},
	{"max-subscriptions", required_argument, NULL, OPT_LIMIT0 + 10},
	{"max-mailboxes-per-uid", required_argument, NULL, OPT_LIMIT0 + 11},
	{"disk-reserve", required_argument, NULL, OPT_LIMIT0 + 12},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0},
};
static const char shortopts[] = "c:s:d:fhV";

/* A whole number, with K, M, G or T (times 1024^n) when bytes is set. */
static int
parse_limit(const LimitOpt *lo, const char *arg, uint64_t *out)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	/* strtoull would take a sign and leading blanks */
	if (!isdigit((unsigned char)*arg))
		return -EINVAL;
	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno || end == arg)
		return -EINVAL;
	if (lo->bytes && *end) {
		/* end[0] is not NUL, so strchr cannot match the terminator. */
		const char *units = "KMGT",
			   *u = strchr(units, toupper((unsigned char)end[0]));

		if (!u)
			return -EINVAL;
		shift = 10 * (unsigned)(u - units + 1);
		end++;
		/* 4K, 4KB, 4KiB are the same; nothing may follow */
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

/*
 * parse_limit with the reason in why when arg is refused. pfx is "--" for
 * the command line, "" for the file (messages only).
 */
static int
parse_limit_why(const LimitOpt *lo, const char *arg, const char *pfx,
		uint64_t *out, char *why, size_t whylen)
{
	if (parse_limit(lo, arg, out) == 0)
		return 0;
	snprintf(why, whylen,
		 "%s%s must be a whole number%s%s from %llu to %llu, not '%s'",
		 pfx, lo->name,
		 lo->bytes ? " of bytes (K, M, G or T multiply by 1024^n)" : "",
		 lo->zero_ok ? ", 0 (none) or" : "",
		 (unsigned long long)lo->min, (unsigned long long)lo->max, arg);
	return -EINVAL;
}

static int
parse_limit_opt(Options *o, int ch, const char *arg, const char *pfx, char *why,
		size_t whylen)
{
	const LimitOpt *lo = &limit_opts[ch - OPT_LIMIT0];
	uint64_t v;

	if (parse_limit_why(lo, arg, pfx, &v, why, whylen) < 0)
		return -EINVAL;
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
		"  -c, --config PATH    read settings from PATH (default: "
		"$MBOXD_CONFIG,\n"
		"                       else " CONFFILE_DEFAULT_PATH
		" for root, else\n"
		"                       $XDG_CONFIG_HOME/mbox/mboxd.conf, "
		"else\n"
		"                       ~/.config/mbox/mboxd.conf; may be "
		"missing);\n"
		"                       options given here win over the "
		"file\n"
		"  -s, --socket PATH    listen on PATH (default: $MBOX_SOCKET, "
		"else\n"
		"                       /run/mbox/mbox.sock for root, else\n"
		"                       $XDG_RUNTIME_DIR/mbox/mbox.sock, else\n"
		"                       /tmp/mbox-$UID/mbox.sock)\n"
		"  -d, --db PATH        the store (default: "
		"$STATE_DIRECTORY/mbox.db,\n"
		"                       else /var/lib/mbox/mbox.db for root, "
		"else\n"
		"                       $XDG_STATE_HOME/mbox/mbox.db, else\n"
		"                       ~/.local/state/mbox/mbox.db)\n"
		"      --sync MODE      full (default: answer after fsync), "
		"normal\n"
		"                       (survives a crash of mboxd, not of "
		"the host),\n"
		"                       off (tests only)\n"
		"      --commit-delay-us N  with sync=full, wait up to N "
		"microseconds\n"
		"                       for the posters answered last before a "
		"commit,\n"
		"                       so that they share its fsync "
		"(default 100,\n"
		"                       0 = no wait, at most 1000000)\n"
		"  -f, --foreground     stay in the foreground, log to stderr "
		"(the\n"
		"                       default; kept for systemd units and "
		"scripts)\n"
		"      --daemon         detach, log to syslog; exits once the "
		"broker is ready\n"
		"      --pid-file PATH  write the broker's pid to PATH while "
		"it "
		"runs\n"
		"      --log-level L    error, warning, notice, info "
		"(default), debug\n"
		"      --socket-mode M  permission bits of the socket (octal, "
		"default 0666;\n"
		"                       access is decided per mailbox)\n"
		"      --max-msg-size N largest payload in bytes (default "
		"1048576 or 1M,\n"
		"                       at most 64M; K, M as below)\n"
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
		"      --max-mailboxes-per-uid N\n"
		"                               mailboxes one uid owns; "
		"root and mboxd's\n"
		"                               own uid are not counted "
		"(default 4096)\n"
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
		"      --max-subscriptions N    subscriptions of one "
		"connection (default\n"
		"                               1024)\n"
		"      --max-store-size N       database file size, 0 = no "
		"cap (default 0)\n"
		"      --disk-reserve N         disk space kept aside so that "
		"a full disk\n"
		"                               can still be drained, 0 = "
		"none (default 32M)\n"
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

/* *tmp: the path is the fallback under the shared /tmp. */
static int
default_socket_path(char *buf, size_t size, bool *tmp)
{
	const char *env = getenv("MBOX_SOCKET");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	*tmp = false;
	if (env && *env)
		n = snprintf(buf, size, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(buf, size, "/run/mbox/mbox.sock");
	else if (xdg && *xdg == '/') /* relative: invalid, as for libmbox */
		n = snprintf(buf, size, "%s/mbox/mbox.sock", xdg);
	else {
		n = snprintf(buf, size, "/tmp/mbox-%u/mbox.sock",
			     (unsigned)geteuid());
		*tmp = true;
	}
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/*
 * The configuration file read without --config; it may be missing. A
 * user's broker must not take the system broker's paths, so users other
 * than root read their own file. The system unit runs as a DynamicUser=,
 * not as root: it names the system file in $MBOXD_CONFIG.
 */
/* How a configuration file that cannot be read is taken. */
enum conf_need {
	CONF_OPTIONAL, /* a missing file is fine */
	CONF_REQUIRED, /* named by --config: it must be read */
	/* A user's default, under a HOME that su or sudo may have left
	 * pointing at root's: unreadable is as good as missing. */
	CONF_USER,
};

static int
default_config_path(char *buf, size_t size, enum conf_need *need)
{
	const char *env = getenv("MBOXD_CONFIG");
	const char *xdg = getenv("XDG_CONFIG_HOME");
	const char *home = getenv("HOME");
	int n;

	*need = CONF_OPTIONAL;
	if (env && *env) {
		n = snprintf(buf, size, "%s", env);
	} else if (geteuid() != 0 &&
		   ((xdg && *xdg == '/') || (home && *home == '/'))) {
		*need = CONF_USER;
		if (xdg && *xdg == '/')
			n = snprintf(buf, size, "%s/mbox/mboxd.conf", xdg);
		else
			n = snprintf(buf, size, "%s/.config/mbox/mboxd.conf",
				     home);
	} else if (geteuid() != 0) {
		buf[0] = '\0'; /* no file of ours to read */
		n = 0;
	} else {
		n = snprintf(buf, size, "%s", CONFFILE_DEFAULT_PATH);
	}
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int
default_db_path(char *buf, size_t size)
{
	const char *state = getenv("STATE_DIRECTORY");
	const char *xdg = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	int n;

	/* Any uid: the system unit runs as a DynamicUser=, not as root.
	 * StateDirectory= may list several: use the first. */
	if (state && *state)
		n = snprintf(buf, size, "%.*s/mbox.db",
			     (int)strcspn(state, ":"), state);
	else if (geteuid() == 0)
		n = snprintf(buf, size, "/var/lib/mbox/mbox.db");
	else if (xdg && *xdg == '/') /* the XDG spec: ignore a relative one */
		n = snprintf(buf, size, "%s/mbox/mbox.db", xdg);
	else if (home && *home == '/')
		n = snprintf(buf, size, "%s/.local/state/mbox/mbox.db", home);
	else
		return -ENOENT;
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/*
 * apply_option - set the option getopt_long calls ch to arg in o.
 *
 * arg is NULL for a flag given on the command line, "yes" or "no" for a
 * flag from the file (conffile.h). pfx is put before option names in
 * messages: "--" on the command line, "" in the file. Returns 0, or
 * -EINVAL with the reason in why and o unchanged. -h, -V and -c are not
 * options of this kind: the first pass of main handles them.
 */
static int
apply_option(Options *o, int ch, const char *arg, const char *pfx, char *why,
	     size_t whylen)
{
	bool yes = !arg || strcmp(arg, "yes") == 0;
	char *end;
	unsigned long long v;
	uint64_t ms;
	int lvl;

	switch (ch) {
	case 's':
		snprintf(o->socket_path, sizeof(o->socket_path), "%s", arg);
		o->socket_set = true;
		return 0;
	case 'd':
		snprintf(o->db_path, sizeof(o->db_path), "%s", arg);
		return 0;
	case OPT_SYNC:
		if (strcmp(arg, "full") == 0)
			o->sync = STORE_SYNC_FULL;
		else if (strcmp(arg, "normal") == 0)
			o->sync = STORE_SYNC_NORMAL;
		else if (strcmp(arg, "off") == 0)
			o->sync = STORE_SYNC_OFF;
		else
			goto bad_sync;
		return 0;
	case 'f':
		/* "foreground = no" in the file means daemon. */
		o->daemon = !yes;
		return 0;
	case OPT_DAEMON:
		o->daemon = yes;
		return 0;
	case OPT_PID_FILE:
		snprintf(o->pid_file, sizeof(o->pid_file), "%s", arg);
		return 0;
	case OPT_LOG_LEVEL:
		lvl = log_level_parse(arg);
		if (lvl < 0)
			goto bad_level;
		o->log_level = lvl;
		return 0;
	case OPT_SOCKET_MODE:
		errno = 0;
		v = strtoull(arg, &end, 8);
		if (errno || *end || !*arg || v > 0777)
			goto bad_mode;
		o->socket_mode = (unsigned)v;
		return 0;
	case OPT_MAX_MSG_SIZE: {
		/* A size like the limits, but not reloadable: not in
		 * limit_opts, so no offset. */
		static const LimitOpt lo = {
			"max-msg-size", 0, UINT64_C(64) << 20, true, false, 0};
		uint64_t size;

		if (parse_limit_why(&lo, arg, pfx, &size, why, whylen) < 0)
			return -EINVAL;
		o->max_msg_size = (size_t)size;
		return 0;
	}
	case OPT_NO_AUTOCREATE:
		o->autocreate = !yes;
		return 0;
	case OPT_DEDUP_WINDOW:
		if (settings_duration_ms(arg, &ms) < 0 || ms == 0)
			goto bad_window;
		o->dedup_window_ms = ms;
		return 0;
	default:
		if (ch >= OPT_LIMIT0 && ch < OPT_LIMIT0 + (int)N_LIMIT_OPTS)
			return parse_limit_opt(o, ch, arg, pfx, why, whylen);
		snprintf(why, whylen, "unknown option");
		return -EINVAL;
	}
bad_sync:
	snprintf(why, whylen, "%ssync must be full, normal or off, not '%s'",
		 pfx, arg);
	return -EINVAL;
bad_level:
	snprintf(why, whylen,
		 "%slog-level must be error, warning, notice, info or debug, "
		 "not '%s'",
		 pfx, arg);
	return -EINVAL;
bad_mode:
	snprintf(why, whylen, "%ssocket-mode must be octal 0 to 0777, not '%s'",
		 pfx, arg);
	return -EINVAL;
bad_window:
	snprintf(why, whylen,
		 "%sdedup-window must be a duration like 120, 90s or 5m, not "
		 "'%s'",
		 pfx, arg);
	return -EINVAL;
}

/* conffile_load's callback: a line of the file is an option. */
static int
apply_conf(void *ctx, const ConfEntry *e, char *why, size_t whylen)
{
	return apply_option(ctx, e->opt->val, e->value, "", why, whylen);
}

/*
 * The command line on top of o. With quiet, errors are not printed (a
 * reload re-applies a command line that was accepted at start-up).
 * Returns 0 or -EINVAL.
 */
static int
apply_args(Options *o, int argc, char **argv, bool quiet)
{
	char why[400];
	int ch;

	optind = 0; /* GNU: start again from argv[1] */
	opterr = !quiet;
	while ((ch = getopt_long(argc, argv, shortopts, longopts, NULL)) !=
	       -1) {
		if (ch == 'c' || ch == 'h' || ch == 'V')
			continue; /* the first pass did these */
		if (ch == '?' || ch == ':') {
			if (!quiet)
				usage(stderr);
			return -EINVAL;
		}
		if (apply_option(o, ch, optarg, "--", why, sizeof(why)) < 0) {
			if (!quiet)
				fprintf(stderr, "mboxd: %s\n", why);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		if (!quiet) {
			fprintf(stderr, "mboxd: unexpected argument '%s'\n",
				argv[optind]);
			usage(stderr);
		}
		return -EINVAL;
	}
	return 0;
}

/* Make a relative path absolute against cwd: a daemon runs in "/". */
static int
absolute_path(char *path, size_t size, const char *cwd)
{
	char buf[PATH_MAX];
	int n;

	if (!path[0] || path[0] == '/')
		return 0;
	n = snprintf(buf, sizeof(buf), "%s/%s", cwd, path);
	if (n < 0 || (size_t)n >= sizeof(buf) || (size_t)n >= size)
		return -ENAMETOOLONG;
	memcpy(path, buf, (size_t)n + 1);
	return 0;
}

/*
 * load_options - defaults, then the file config (if any; missing is fine
 * unless required), then the command line; then default and absolute
 * paths. Returns 0, or -EINVAL with the message (without "mboxd: ") in
 * err; command-line errors are printed by apply_args unless quiet.
 */
static int
load_options(Options *o, const char *config, enum conf_need need, int argc,
	     char **argv, const char *cwd, bool quiet, char *err, size_t errlen)
{
	int r;

	*o = options_default;
	err[0] = '\0';
	if (config && config[0]) {
		r = conffile_load(config, longopts, apply_conf, o, err, errlen);
		if (need == CONF_USER && (r == -EACCES || r == -ENOTDIR)) {
			if (!quiet)
				fprintf(stderr,
					"mboxd: warning: %s; going on without "
					"it (is HOME right?)\n",
					err);
			r = -ENOENT;
		}
		if ((r == -ENOENT || r == -ENOTDIR) && need != CONF_REQUIRED) {
			/* The default file may be missing: not an error, and
			 * its "cannot read" must not trail a later one. */
			err[0] = '\0';
			r = 0;
		}
		if (r < 0)
			return -EINVAL;
	}
	if (apply_args(o, argc, argv, quiet) < 0)
		return -EINVAL;
	if (!o->socket_path[0] &&
	    default_socket_path(o->socket_path, sizeof(o->socket_path),
				&o->socket_tmp) < 0) {
		snprintf(err, errlen, "socket path too long; use --socket");
		return -EINVAL;
	}
	if (!o->db_path[0] &&
	    default_db_path(o->db_path, sizeof(o->db_path)) < 0) {
		snprintf(err, errlen,
			 "cannot choose a database path (HOME "
			 "is not set); use --db PATH");
		return -EINVAL;
	}
	/* A daemon runs in "/"; in the foreground relative paths stay
	 * relative (an absolute socket path might not fit sun_path). */
	if (o->daemon) {
		struct {
			char *path;
			size_t size;
			const char *opt;
		} paths[] = {
			{o->socket_path, sizeof(o->socket_path), "--socket"},
			{o->db_path, sizeof(o->db_path), "--db"},
			{o->pid_file, sizeof(o->pid_file), "--pid-file"},
		};

		for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
			if (absolute_path(paths[i].path, paths[i].size, cwd) ==
			    0)
				continue;
			/* The path last: it may be what gets cut. */
			snprintf(err, errlen,
				 "%s is too long once made absolute against "
				 "the current directory (--daemon runs in /); "
				 "give a shorter or absolute %s: %s/%s",
				 paths[i].opt, paths[i].opt, cwd,
				 paths[i].path);
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * The directory the socket goes in, made by make_parent_dirs. A name
 * under a shared directory like /tmp may have been made first by someone
 * else, who could then replace our socket with theirs: with strict (the
 * /tmp fallback) the directory must be a real directory of ours that
 * nobody else may write to; otherwise (a path the user chose) such a
 * directory is only worth a warning.
 */
static int
check_socket_dir(const Log *log, const char *path, bool strict)
{
	char dir[PATH_MAX];
	struct stat st;
	char *slash;
	bool ours;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if (lstat(dir, &st) < 0) {
		int e = errno;

		log_write(log, LOG_ERR, "cannot check the directory %s: %s",
			  dir, strerror(e));
		return -e;
	}
	ours = S_ISDIR(st.st_mode) && st.st_uid == geteuid() &&
	       !(st.st_mode & (S_IWGRP | S_IWOTH));
	if (ours)
		return 0;
	if (strict) {
		log_write(log, LOG_ERR,
			  "the socket directory %s is not a directory of uid "
			  "%u that only it may write to (uid %u, mode %04o%s);"
			  " someone else may have made it. Remove it, or use "
			  "--socket or $XDG_RUNTIME_DIR",
			  dir, (unsigned)geteuid(), (unsigned)st.st_uid,
			  (unsigned)(st.st_mode & 07777),
			  S_ISLNK(st.st_mode) ? ", a symbolic link" : "");
		return -EPERM;
	}
	/* Writable by others without the sticky bit: they may replace the
	 * socket. A root-owned sticky /tmp is fine. */
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
		log_write(log, LOG_WARNING,
			  "the socket directory %s may be written by others "
			  "(mode %04o): they could replace the socket",
			  dir, (unsigned)(st.st_mode & 07777));
	else if (st.st_uid != geteuid() && st.st_uid != 0)
		log_write(log, LOG_WARNING,
			  "the socket directory %s belongs to uid %u: it "
			  "could replace the socket",
			  dir, (unsigned)st.st_uid);
	return 0;
}

/*
 * What is at the socket's path now: nothing, or a socket nobody answers
 * on (left by a broker that died), which is removed, is fine. A live
 * listener, or anything not a socket, is left alone and refused.
 */
static int
clear_socket_path(const Log *log, const char *path,
		  const struct sockaddr_un *sa)
{
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0) {
		r = errno;
		if (r == ENOENT)
			return 0;
		log_write(log, LOG_ERR, "cannot check %s: %s", path,
			  strerror(r));
		return -r;
	}
	if (!S_ISSOCK(st.st_mode)) {
		log_write(log, LOG_ERR,
			  "%s exists and is not a socket; remove it or use "
			  "another --socket",
			  path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ? 0
								       : errno;
	close(fd);
	if (r == ECONNREFUSED || r == ENOENT) {
		/* Nobody listens: a dead broker's. */
		if (unlink(path) < 0 && errno != ENOENT) {
			r = errno;
			log_write(log, LOG_ERR,
				  "cannot remove the stale socket %s: %s", path,
				  strerror(r));
			return -r;
		}
		return 0;
	}
	if (r == 0 || r == EAGAIN) /* EAGAIN: a live one, backlog full */
		log_write(log, LOG_ERR,
			  "another mboxd is already listening on %s; stop it "
			  "or use another --socket",
			  path);
	else
		log_write(log, LOG_ERR,
			  "%s is a socket in use (connecting says: %s); "
			  "stop what listens on it or use another --socket",
			  path, strerror(r));
	return -EADDRINUSE;
}

/*
 * Bind the listening socket. A socket file left by a dead broker is
 * replaced; one that a live broker answers on is not. strict_dir: the
 * path is our fallback under /tmp (see check_socket_dir).
 */
static int
listen_socket(const Log *log, const char *path, unsigned mode, bool strict_dir)
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
	r = check_socket_dir(log, path, strict_dir);
	if (r == 0)
		r = clear_socket_path(log, path, &sa);
	if (r < 0)
		return r;
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

/*
 * The listening socket: the one systemd passed (LISTEN_FDS), checked to be
 * a seqpacket listener, else our own bound to o->socket_path; *path is the
 * one in use, for the log. *activated tells the caller not to unlink a
 * socket systemd owns.
 */
static int
take_or_listen(const Log *log, const Options *o, char *path, size_t size,
	       bool *activated)
{
	char why[256], fds[32], pid[32];
	const char *e;
	int n;

	/* Copies for the message: sdnotify_listen_fds unsets them. */
	e = getenv("LISTEN_FDS");
	snprintf(fds, sizeof(fds), "%s", e ? e : "");
	e = getenv("LISTEN_PID");
	snprintf(pid, sizeof(pid), "%s", e ? e : "");
	n = sdnotify_listen_fds(NULL);
	*activated = false;
	snprintf(path, size, "%s", o->socket_path);
	if (n < 0) {
		log_write(log, LOG_ERR,
			  "socket activation: cannot use LISTEN_FDS=%s "
			  "LISTEN_PID=%s (%s); they must name fds passed from "
			  "3 on to this pid. Start mboxd from its .socket "
			  "unit, or unset both to have it bind --socket "
			  "itself",
			  fds, pid, strerror(-n));
		return n;
	}
	if (n == 0)
		return listen_socket(log, o->socket_path, o->socket_mode,
				     o->socket_tmp);
	if (n > 1) {
		log_write(log, LOG_ERR,
			  "systemd passed %d sockets; mboxd serves exactly one "
			  "(one ListenSequentialPacket= in the .socket unit)",
			  n);
		return -EINVAL;
	}
	if (sdnotify_take_listener(SDNOTIFY_LISTEN_FDS_START, why,
				   sizeof(why)) < 0) {
		log_write(log, LOG_ERR, "socket activation: %s", why);
		return -EINVAL;
	}
	if (sdnotify_socket_path(SDNOTIFY_LISTEN_FDS_START, path, size) < 0)
		snprintf(path, size, "fd %d", SDNOTIFY_LISTEN_FDS_START);
	if (o->socket_set && strcmp(path, o->socket_path) != 0)
		log_write(log, LOG_INFO,
			  "systemd passed the socket %s: socket %s is not "
			  "used",
			  path, o->socket_path);
	*activated = true;
	return SDNOTIFY_LISTEN_FDS_START;
}

/*
 * daemonize - fork; the parent waits for the child to say it is ready
 * (a byte on a pipe) and exits 0, or with the child's exit status if the
 * child ends first. The child starts a new session, moves to "/" and
 * points stdin and stdout at /dev/null; stderr stays until it is ready,
 * so start-up errors still reach the terminal. Returns, in the child
 * only, the pipe's write end for daemon_ready, or a negative errno.
 */
static int
daemonize(void)
{
	int p[2], fd;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		char c;
		ssize_t n;
		int st;

		close(p[1]);
		do
			n = read(p[0], &c, 1);
		while (n < 0 && errno == EINTR);
		if (n == 1)
			_exit(0);
		/* The child closed the pipe without a word: it failed. */
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
			_exit(WEXITSTATUS(st));
		fprintf(stderr, "mboxd: the daemon ended during start-up\n");
		_exit(1);
	}
	close(p[0]);
	if (setsid() < 0 || chdir("/") < 0)
		return -errno;
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (dup2(fd, STDIN_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0) {
		close(fd);
		return -errno;
	}
	close(fd);
	return p[1];
}

/* The daemon is ready: release the parent, let go of the terminal. */
static void
daemon_ready(int fd)
{
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

	if (null >= 0) {
		dup2(null, STDERR_FILENO);
		close(null);
	}
	(void)!write(fd, "", 1);
	close(fd);
}

/*
 * Take the pid file: open it and hold flock(LOCK_EX) on it while the
 * broker runs, so a second mboxd naming the same file is refused rather
 * than overwriting it and removing it at its exit. The lock is on the
 * inode: if the holder removed the file between our open and our lock,
 * the lock is on a dead name, so open again. Returns the fd or -errno;
 * -EWOULDBLOCK when another process holds it, its pid in *holder (0 if
 * unreadable).
 */
static int
pid_file_lock(const char *path, long *holder)
{
	struct stat fst, pst;
	char buf[32];
	ssize_t n;
	int fd;

	*holder = 0;
	for (int tries = 0; tries < 5; tries++) {
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
			  0644);
		if (fd < 0)
			return -errno;
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			int e = errno;

			n = pread(fd, buf, sizeof(buf) - 1, 0);
			if (n > 0) {
				buf[n] = '\0';
				*holder = strtol(buf, NULL, 10);
			}
			close(fd);
			return e == EWOULDBLOCK ? -EWOULDBLOCK : -e;
		}
		if (fstat(fd, &fst) == 0 && stat(path, &pst) == 0 &&
		    fst.st_dev == pst.st_dev && fst.st_ino == pst.st_ino)
			return fd;
		close(fd);
	}
	return -EBUSY; /* removed under us again and again */
}

/* Write "PID\n" into the locked pid file (replacing what was there). */
static int
pid_file_write(int fd)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());

	if (ftruncate(fd, 0) < 0)
		return -errno;
	if (pwrite(fd, buf, (size_t)n, 0) != n)
		return errno ? -errno : -EIO;
	return 0;
}

/* Remove the pid file we hold the lock of; before the lock goes, so a
 * new broker never sees the name with our pid in it unlocked. */
static int
pid_file_release(const char *path, int fd)
{
	if (fd >= 0) {
		unlink(path);
		close(fd);
	}
	return -1;
}

/* What the signal and timer callbacks need: main's state. */
typedef struct App {
	int argc;
	char **argv;
	char config[PATH_MAX]; /* the file read, "" = none */
	enum conf_need config_need;
	char cwd[PATH_MAX]; /* at start-up, for relative paths */
	Options opt;	    /* the settings in force */
	Log log;
	Broker *broker;
	BrokerConfig cfg; /* what the broker was started with */
	int pid_fd;	  /* the locked pid file, -1 = none */
	ev_signal sigterm, sigint, sighup;
	ev_timer watchdog; /* every WATCHDOG_USEC / 2 */
	ev_timer status;   /* polls the STATUS= line; sent when it changed */
	char last_status[160];
} App;

static void
app_on_stop(EV_P_ ev_signal *w, int revents)
{
	App *a = w->data;

	log_write(&a->log, LOG_NOTICE, "signal %d: stopping", w->signum);
	/* Before the drain, so systemd shows "deactivating" while it runs. */
	(void)sdnotify_send("STOPPING=1");
	broker_stop(a->broker);
	ev_break(EV_A_ EVBREAK_ALL);
}

static const char *
sync_name(StoreSync s)
{
	return s == STORE_SYNC_FULL	? "full"
	       : s == STORE_SYNC_NORMAL ? "normal"
					: "off";
}

/* Warn that key changed from old to new, which takes a restart. */
static int
restart_needed(const App *a, const char *key, const char *old, const char *new)
{
	if (strcmp(old, new) == 0)
		return 0;
	log_write(&a->log, LOG_WARNING,
		  "reload: %s changed ('%s' -> '%s'): needs a restart; "
		  "keeping '%s'",
		  key, old, new, old);
	return 1;
}

/* As restart_needed for numbers; octal for a mode. */
/* unit: printed after the numbers ("ms"), or "" */
static int
restart_needed_num(const App *a, const char *key, unsigned long long old,
		   unsigned long long new, bool octal, const char *unit)
{
	char o[40], n[40];

	snprintf(o, sizeof(o), octal ? "%04llo%s" : "%llu%s", old, unit);
	snprintf(n, sizeof(n), octal ? "%04llo%s" : "%llu%s", new, unit);
	return restart_needed(a, key, o, n);
}

/* The settings of n that only a restart applies: warn about each change. */
static int
warn_restart_only(const App *a, const Options *n)
{
	const Options *o = &a->opt;
	int k = 0;

	k += restart_needed(a, "socket", o->socket_path, n->socket_path);
	k += restart_needed(a, "db", o->db_path, n->db_path);
	k += restart_needed(a, "sync", sync_name(o->sync), sync_name(n->sync));
	k += restart_needed_num(a, "socket-mode", o->socket_mode,
				n->socket_mode, true, "");
	k += restart_needed_num(a, "max-msg-size", o->max_msg_size,
				n->max_msg_size, false, "");
	k += restart_needed(a, "no-autocreate", o->autocreate ? "no" : "yes",
			    n->autocreate ? "no" : "yes");
	k += restart_needed_num(a, "dedup-window", o->dedup_window_ms,
				n->dedup_window_ms, false, "ms");
	k += restart_needed(a, "daemon", o->daemon ? "yes" : "no",
			    n->daemon ? "yes" : "no");
	k += restart_needed(a, "pid-file", o->pid_file, n->pid_file);
	k += restart_needed_num(a, "disk-reserve", o->disk_reserve_bytes,
				n->disk_reserve_bytes, false, "");
	return k;
}

/*
 * Descriptors besides the connections: the refused ones still to be
 * answered, and a margin for the store's files, the listening socket,
 * the loop's, the timers' and the log's.
 */
#define FD_SPARE (BROKER_REFUSED_MAX + 32)

/*
 * Raise the soft limit on open files to what max-connections needs, as
 * far as the hard limit allows; if that is not enough, accept only as
 * many connections as fit. Else a uid under its own limit could take
 * every descriptor, and everyone's connections would wait in the
 * listening socket's backlog instead of being refused with LIMIT.
 */
static void
fit_fd_limit(const Log *log, BrokerConfig *cfg)
{
	rlim_t want = (rlim_t)cfg->max_connections + FD_SPARE;
	struct rlimit rl;
	size_t fit;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < want) {
		struct rlimit up = rl;

		up.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
		if (up.rlim_cur > rl.rlim_cur &&
		    setrlimit(RLIMIT_NOFILE, &up) == 0)
			rl = up;
	}
	if (rl.rlim_cur >= want)
		return;
	fit = rl.rlim_cur > FD_SPARE + 1 ? (size_t)(rl.rlim_cur - FD_SPARE) : 1;
	log_write(log, LOG_WARNING,
		  "max-connections %zu needs %llu open files, but the limit "
		  "is %llu (hard limit %llu): accepting at most %zu "
		  "connections; raise the limit (ulimit -n, or LimitNOFILE= "
		  "in the unit) or lower max-connections",
		  cfg->max_connections, (unsigned long long)want,
		  (unsigned long long)rl.rlim_cur,
		  (unsigned long long)rl.rlim_max, fit);
	cfg->max_connections = fit;
	if (cfg->max_connections_per_uid > fit)
		cfg->max_connections_per_uid = fit;
}

static BrokerConfig
broker_config(const Options *o, const char *socket_path)
{
	return (BrokerConfig){
		.socket_path = socket_path,
		.db_path = o->db_path,
		.sync = o->sync,
		.socket_mode = o->socket_mode,
		.max_msg_size = o->max_msg_size,
		.autocreate = o->autocreate,
		.max_connections = (size_t)o->max_connections,
		.max_in_flight = (size_t)o->max_in_flight,
		.max_out_bytes = 8u * 1024 * 1024,
		.dedup_window_ms = o->dedup_window_ms,
		.max_header_bytes = (size_t)o->max_header_bytes,
		.max_mailboxes = (size_t)o->max_mailboxes,
		.max_mailbox_msgs = o->max_mailbox_msgs,
		.max_mailbox_bytes = o->max_mailbox_bytes,
		.max_connections_per_uid = (size_t)o->max_connections_per_uid,
		.max_unacked = (size_t)o->max_unacked,
		.max_subscriptions = (size_t)o->max_subscriptions,
		.max_mailboxes_per_uid = (size_t)o->max_mailboxes_per_uid,
		.max_store_bytes = o->max_store_bytes,
		.commit_delay_us = o->commit_delay_us,
		.disk_reserve_bytes = o->disk_reserve_bytes,
	};
}

/*
 * SIGHUP: read the file again (the command line on top), apply the log
 * level and the limits, warn about the rest. A bad file changes nothing.
 */
static void
app_reload(App *a)
{
	Options n;
	BrokerConfig cfg;
	char err[512], file[PATH_MAX + 32];
	int changed = 0;

	/* A default path with no file there is read as no settings. */
	if (!a->config[0])
		snprintf(file, sizeof(file), "(no file)");
	else if (access(a->config, F_OK) != 0)
		snprintf(file, sizeof(file), "(no file at %s)", a->config);
	else
		snprintf(file, sizeof(file), "%s", a->config);

	if (load_options(&n, a->config, a->config_need, a->argc, a->argv,
			 a->cwd, true, err, sizeof(err)) < 0) {
		log_write(&a->log, LOG_ERR,
			  "reload: %s; keeping the running settings",
			  err[0] ? err : "bad command line");
		return;
	}
	if (n.log_level != a->opt.log_level) {
		/* Until the reload is logged, the more verbose of the two
		 * levels: its lines show whichever way the level went. */
		if (n.log_level > a->log.level)
			a->log.level = n.log_level;
		log_write(&a->log, LOG_NOTICE, "reload: log-level %s -> %s",
			  log_level_name(a->opt.log_level),
			  log_level_name(n.log_level));
		a->opt.log_level = n.log_level;
		changed++;
	}
	cfg = broker_config(&n, a->cfg.socket_path);
	fit_fd_limit(&a->log, &cfg);
	changed += broker_reload_limits(a->broker, &cfg);
	for (size_t i = 0; i < N_LIMIT_OPTS; i++) {
		/* max-store-size may have been refused: keep what runs. */
		if (limit_opts[i].offset ==
			    offsetof(Options, max_store_bytes) ||
		    limit_opts[i].offset ==
			    offsetof(Options, disk_reserve_bytes))
			continue;
		memcpy((char *)&a->opt + limit_opts[i].offset,
		       (char *)&n + limit_opts[i].offset, sizeof(uint64_t));
	}
	a->opt.max_store_bytes = a->broker->cfg.max_store_bytes;
	warn_restart_only(a, &n);
	log_write(&a->log, LOG_NOTICE, "reloaded %s: %d setting%s changed",
		  file, changed, changed == 1 ? "" : "s");
	a->log.level = a->opt.log_level;
}

static void
app_on_hup(EV_P_ ev_signal *w, int revents)
{
	App *a = w->data;

	log_write(&a->log, LOG_NOTICE, "signal %d: reloading %s", w->signum,
		  a->config[0] ? a->config : "(no configuration file)");
	(void)sdnotify_send("RELOADING=1");
	app_reload(a);
	(void)sdnotify_send("READY=1");
}

static void
app_on_watchdog(EV_P_ ev_timer *w, int revents)
{
	(void)sdnotify_send("WATCHDOG=1");
}

/* Send STATUS= if the summary changed since the last one sent. */
static void
app_send_status(App *a)
{
	char line[sizeof(a->last_status)];

	memcpy(line, "STATUS=", 7);
	if (broker_status_line(a->broker, line + 7, sizeof(line) - 7) < 0)
		return;
	if (strcmp(line, a->last_status) == 0)
		return;
	if (sdnotify_send(line) == 0)
		memcpy(a->last_status, line, sizeof(line));
}

static void
app_on_status(EV_P_ ev_timer *w, int revents)
{
	app_send_status(w->data);
}

/*
 * Tell systemd (when it listens) that the broker is ready, and start the
 * status line and the watchdog. The watchdog is fed from the loop, so a
 * loop blocked for WatchdogSec gets the broker restarted: the point.
 */
static void
app_notify_ready(App *a)
{
	struct ev_loop *loop = a->broker->loop;
	uint64_t usec;
	const char *ns = getenv("NOTIFY_SOCKET");

	if (ns && *ns) {
		app_send_status(a);
		(void)sdnotify_send("READY=1");
		/* Polled: counting the mailboxes is cheap but not free. */
		ev_timer_init(&a->status, app_on_status, 2., 2.);
		a->status.data = a;
		ev_timer_start(loop, &a->status);
	}
	if (sdnotify_watchdog_usec(&usec) > 0) {
		ev_timer_init(&a->watchdog, app_on_watchdog, 0.,
			      (double)usec / 2e6);
		a->watchdog.data = a;
		ev_timer_again(loop, &a->watchdog);
		(void)sdnotify_send("WATCHDOG=1");
	}
}

/*
 * The first pass over the command line: --help, --version and --config,
 * which decide what else is read. Everything else waits for the second
 * pass, on top of the file. Returns 0, or -EINVAL after printing why.
 */
static int
first_pass(App *a)
{
	const char *config = NULL;
	int ch;

	optind = 0;
	opterr = 0; /* the second pass reports bad options */
	while ((ch = getopt_long(a->argc, a->argv, shortopts, longopts,
				 NULL)) != -1) {
		if (ch == 'h') {
			usage(stdout);
			exit(0);
		}
		if (ch == 'V') {
			printf("mboxd %s\n", PACKAGE_VERSION);
			exit(0);
		}
		if (ch == 'c')
			config = optarg;
	}
	if (!getcwd(a->cwd, sizeof(a->cwd)))
		snprintf(a->cwd, sizeof(a->cwd), "/");
	a->config_need = CONF_REQUIRED;
	if (config)
		snprintf(a->config, sizeof(a->config), "%s", config);
	else if (default_config_path(a->config, sizeof(a->config),
				     &a->config_need) < 0) {
		fprintf(stderr, "mboxd: the default configuration path is "
				"too long ($MBOXD_CONFIG, $XDG_CONFIG_HOME or "
				"$HOME); use --config\n");
		return -EINVAL;
	}
	if (absolute_path(a->config, sizeof(a->config), a->cwd) < 0) {
		fprintf(stderr, "mboxd: --config path too long\n");
		return -EINVAL;
	}
	return 0;
}

static void
app_signals_start(App *a, struct ev_loop *loop)
{
	sigset_t hup;

	ev_signal_init(&a->sigterm, app_on_stop, SIGTERM);
	ev_signal_init(&a->sigint, app_on_stop, SIGINT);
	ev_signal_init(&a->sighup, app_on_hup, SIGHUP);
	a->sigterm.data = a->sigint.data = a->sighup.data = a;
	ev_signal_start(loop, &a->sigterm);
	ev_signal_start(loop, &a->sigint);
	ev_signal_start(loop, &a->sighup);
	/* main blocked SIGHUP until now; libev unblocks a signal only with
	 * EVFLAG_NOSIGMASK. One that came meanwhile is delivered here. */
	sigemptyset(&hup);
	sigaddset(&hup, SIGHUP);
	sigprocmask(SIG_UNBLOCK, &hup, NULL);
}

static void
app_watchers_stop(App *a, struct ev_loop *loop)
{
	/* Fine on the zeroed watchers that never started. */
	ev_timer_stop(loop, &a->watchdog);
	ev_timer_stop(loop, &a->status);
	ev_signal_stop(loop, &a->sigterm);
	ev_signal_stop(loop, &a->sigint);
	ev_signal_stop(loop, &a->sighup);
}

/* Lock the pid file, if any: before the socket and the store, so a
 * second broker naming it changes nothing. */
static int
app_pid_lock(App *a)
{
	long holder = 0;

	a->pid_fd = -1;
	if (!a->opt.pid_file[0])
		return 0;
	a->pid_fd = pid_file_lock(a->opt.pid_file, &holder);
	if (a->pid_fd >= 0)
		return 0;
	if (a->pid_fd == -EWOULDBLOCK)
		log_write(&a->log, LOG_ERR,
			  "the pid file %s is held by another mboxd (pid %ld); "
			  "stop it, or give this one another --pid-file",
			  a->opt.pid_file, holder);
	else
		log_write(&a->log, LOG_ERR, "cannot write the pid file %s: %s",
			  a->opt.pid_file, strerror(-a->pid_fd));
	return a->pid_fd;
}

/* Open the store behind the listening socket; on failure nothing of
 * ours is left (a socket we bound is removed). The socket comes first:
 * a socket another broker holds must not leave a new, empty directory
 * for the store behind. */
static int
app_broker_start(App *a, struct ev_loop *loop, char *listen_path, size_t size,
		 bool *activated)
{
	int fd, r;

	fd = take_or_listen(&a->log, &a->opt, listen_path, size, activated);
	if (fd < 0)
		return fd;
	r = make_parent_dirs(a->opt.db_path, 0700);
	if (r < 0) {
		log_write(&a->log, LOG_ERR,
			  "cannot create the directory of %s: %s",
			  a->opt.db_path, strerror(-r));
		close(fd);
		if (!*activated)
			unlink(listen_path);
		return r;
	}
	a->cfg = broker_config(&a->opt, listen_path);
	fit_fd_limit(&a->log, &a->cfg);
	r = broker_new(&a->broker, loop, &a->log, &a->cfg, fd, !*activated);
	if (r < 0 && !*activated)
		unlink(listen_path);
	return r;
}

int
main(int argc, char **argv)
{
	App app = {.pid_fd = -1};
	App *a = &app;
	char err[512], listen_path[PATH_MAX];
	struct ev_loop *loop;
	sigset_t hup;
	bool activated;
	int r, ready_fd = -1;

	/* A SIGHUP before the loop's watcher exists (a long store open)
	 * would kill us: hold it pending until the watcher runs (see
	 * app_signals_start), then reload. */
	std_fds_open();
	sigemptyset(&hup);
	sigaddset(&hup, SIGHUP);
	sigprocmask(SIG_BLOCK, &hup, NULL);
	/* Before anything opens SQLite; failing, it only costs speed. */
	store_setup_process();
	/*
	 * A subscriber whose socket is full gets a copy of the rest of its
	 * delivery queued (conn_send), up to about 600 KiB, freed once sent.
	 * glibc gave that top of the heap back every time and the kernel
	 * zeroed it again for the next one: a brk down and up per copy,
	 * about 5 % of the pipeline's rate (doc/performance.md). Keep up to
	 * TRIM of free heap while busy; broker_trim gives it all back once
	 * the broker is quiet. Setting one threshold turns glibc's dynamic
	 * ones off, so both are set.
	 */
	mallopt(M_MMAP_THRESHOLD, MBOXD_MALLOC_MMAP);
	mallopt(M_TRIM_THRESHOLD, MBOXD_MALLOC_TRIM);
	a->argc = argc;
	a->argv = argv;
	if (first_pass(a) < 0)
		return 2;
	if (load_options(&a->opt, a->config, a->config_need, argc, argv, a->cwd,
			 false, err, sizeof(err)) < 0) {
		if (err[0])
			fprintf(stderr, "mboxd: %s\n", err);
		return 2;
	}
	log_init_stderr(&a->log, a->opt.log_level);
	if (a->opt.daemon) {
		ready_fd = daemonize();
		if (ready_fd < 0) {
			fprintf(stderr, "mboxd: cannot daemonise: %s\n",
				strerror(-ready_fd));
			return 1;
		}
		log_open_syslog(&a->log);
	}
	signal(SIGPIPE, SIG_IGN);
	loop = ev_default_loop(EVFLAG_AUTO);
	if (!loop) {
		log_write(&a->log, LOG_ERR, "cannot start the event loop");
		return 1;
	}
	if (app_pid_lock(a) < 0)
		return 1;
	if (app_broker_start(a, loop, listen_path, sizeof(listen_path),
			     &activated) < 0) {
		pid_file_release(a->opt.pid_file, a->pid_fd);
		return 1;
	}
	app_signals_start(a, loop);
	if (a->pid_fd >= 0) {
		r = pid_file_write(a->pid_fd);
		if (r < 0) {
			log_write(&a->log, LOG_ERR,
				  "cannot write the pid file %s: %s",
				  a->opt.pid_file, strerror(-r));
			app_watchers_stop(a, loop);
			broker_free(a->broker); /* removes our socket */
			pid_file_release(a->opt.pid_file, a->pid_fd);
			return 1;
		}
	}
	/* The store is open and the socket listens: ready. */
	app_notify_ready(a);
	if (ready_fd >= 0)
		daemon_ready(ready_fd); /* from here on, syslog only */
	log_write(&a->log, LOG_NOTICE,
		  "mboxd %s listening on %s%s, store %s (sync=%s)",
		  PACKAGE_VERSION, listen_path,
		  activated ? " (from systemd)" : "", a->opt.db_path,
		  sync_name(a->opt.sync));
	ev_run(loop, 0);
	app_watchers_stop(a, loop);
	broker_free(a->broker);
	a->pid_fd = pid_file_release(a->opt.pid_file, a->pid_fd);
	log_write(&a->log, LOG_NOTICE, "stopped");
	return 0;
}
