/*
 * admin.c - `mboxctl ping`, `mboxctl create` and `mboxctl set`.
 *
 * create and set turn their options (and set its KEY=VALUE arguments, in
 * the same friendly forms) into the broker's "key=value" SETTINGs after
 * checking them here, so a typo is a usage error (exit 2) that names the
 * option, not a broker error about a setting the user never typed.
 * Durations go out in milliseconds ("lease=1500ms") so that the CLI can
 * accept decimals ("--lease 1.5") although the broker takes integers.
 * One function (setting_make) does this for both verbs.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "client/mboxctl/admin.h"

static const char ping_help[] =
	"Usage: mboxctl ping [OPTIONS]\n"
	"\n"
	"Connect to the broker, send one PING and print the round-trip "
	"time.\n"
	"\n"
	"Options:\n" CTL_COMMON_HELP;

int
cmd_ping(Ctl *c, int argc, char **argv)
{
	int64_t t0, t1;
	int r;

	r = ctl_parse_simple(c, argc, argv, ping_help, NULL);
	if (r >= 0)
		return r;
	if (optind < argc)
		return ctl_usage(c, "unexpected argument '%s'", argv[optind]);

	r = ctl_connect(c);
	if (r)
		return r;
	t0 = ctl_monotonic_ns();
	r = mbox_ping(c->m);
	t1 = ctl_monotonic_ns();
	if (r < 0)
		return ctl_fail(c, r, NULL);
	printf("pong from %s: time=%.3f ms\n", c->path,
	       (double)(t1 - t0) / 1e6);
	return CTL_EXIT_OK;
}

/* clang-format off */
#define SETTINGS_HELP \
	"      --lease SECS          how long a received message stays leased\n" \
	"                            before it is delivered again (default 60s)\n" \
	"      --max-deliveries N    deliveries before a message goes dead\n" \
	"                            (0 = unlimited, the default)\n" \
	"      --ttl SECS            messages go dead as expired SECS after they\n" \
	"                            were posted (0 = never, the default)\n" \
	"      --mode MODE           octal permissions, r = receive/peek, w = post\n" \
	"                            (default 0600)\n" \
	"      --group GROUP         group name or gid (default: yours)\n" \
	"      --max-msgs N          refuse posts beyond N messages (0 = only the\n" \
	"                            broker-wide limit)\n" \
	"      --max-bytes N         refuse posts beyond N payload bytes; K, M, G\n" \
	"                            suffixes (0 = only the broker-wide limit)\n"
/* clang-format on */

static const char create_help[] =
	"Usage: mboxctl create MAILBOX [OPTIONS]\n"
	"\n"
	"Create MAILBOX (1-200 bytes of A-Z a-z 0-9 . _ -), owned by you.\n"
	"Options not given take the broker's defaults.\n"
	"\n"
	"Options:\n" SETTINGS_HELP
	"      --temp                a temporary mailbox: deleted with its\n"
	"                            messages when this command ends; it runs\n"
	"                            until SIGINT, SIGTERM or the end of its\n"
	"                            standard input\n" CTL_COMMON_HELP "\n"
	"SECS is a decimal number with an optional unit: ms, s, m, h "
	"(default s).\n";

static const char set_help[] =
	"Usage: mboxctl set MAILBOX [KEY=VALUE...] [OPTIONS]\n"
	"\n"
	"Change settings of MAILBOX (owner or admin only); the others stay.\n"
	"A new lease applies to later deliveries, a new ttl to later posts.\n"
	"KEY is one of lease, max_deliveries, max_msgs, max_bytes, ttl, mode,\n"
	"group ('-' for '_' is fine), VALUE as for the option of that name:\n"
	"  mboxctl set jobs lease=1.5 max-deliveries=5\n"
	"  mboxctl set jobs --ttl 10m --mode 0660\n"
	"\n"
	"Options:\n" SETTINGS_HELP CTL_COMMON_HELP "\n"
	"SECS is a decimal number with an optional unit: ms, s, m, h "
	"(default s).\n";

enum {
	OPT_LEASE = 256,
	OPT_MAX_DELIVERIES,
	OPT_TTL,
	OPT_MODE,
	OPT_GROUP,
	OPT_MAX_MSGS,
	OPT_MAX_BYTES,
	OPT_TEMP, /* create only, not a slot of SettingSlots */
};

/* The settings options, by long name and by setting key. */
static const struct SettingName {
	const char *option; /* "max-deliveries" */
	const char *key;    /* "max_deliveries" */
	int opt;
} setting_names[] = {
	{"lease", "lease", OPT_LEASE},
	{"max-deliveries", "max_deliveries", OPT_MAX_DELIVERIES},
	{"ttl", "ttl", OPT_TTL},
	{"mode", "mode", OPT_MODE},
	{"group", "group", OPT_GROUP},
	{"max-msgs", "max_msgs", OPT_MAX_MSGS},
	{"max-bytes", "max_bytes", OPT_MAX_BYTES},
};

#define N_SETTING_NAMES (sizeof(setting_names) / sizeof(setting_names[0]))

/* clang-format off */
#define SETTINGS_OPTIONS \
	{"lease", required_argument, NULL, OPT_LEASE}, \
	{"max-deliveries", required_argument, NULL, OPT_MAX_DELIVERIES}, \
	{"ttl", required_argument, NULL, OPT_TTL}, \
	{"mode", required_argument, NULL, OPT_MODE}, \
	{"group", required_argument, NULL, OPT_GROUP}, \
	{"max-msgs", required_argument, NULL, OPT_MAX_MSGS}, \
	{"max-bytes", required_argument, NULL, OPT_MAX_BYTES}
/* clang-format on */

#define SETTING_LEN 64

static const char *
setting_key(int opt)
{
	size_t i;

	for (i = 0; i < N_SETTING_NAMES; i++)
		if (setting_names[i].opt == opt)
			return setting_names[i].key;
	return "?";
}

/*
 * setting_make - the broker's "key=value" for option opt given arg, in
 * out (SETTING_LEN bytes). Returns 0, or reports a usage error and
 * returns its exit code.
 */
static int
setting_make(Ctl *c, int opt, const char *arg, char *out)
{
	const char *key = setting_key(opt);
	uint64_t v;

	switch (opt) {
	case OPT_LEASE:
	case OPT_TTL:
		if (ctl_parse_duration_ms(arg, &v) < 0)
			return ctl_usage(c, "bad duration '%s' for %s", arg,
					 key);
		if (opt == OPT_LEASE && v == 0)
			return ctl_usage(c, "a lease must be longer than 0");
		/* The broker takes ttl 0 (none) only without a unit. */
		if (v == 0)
			snprintf(out, SETTING_LEN, "%s=0", key);
		else
			snprintf(out, SETTING_LEN, "%s=%llums", key,
				 (unsigned long long)v);
		return 0;
	case OPT_MAX_DELIVERIES:
	case OPT_MAX_MSGS:
		if (ctl_parse_u64(arg, &v) < 0 ||
		    (opt == OPT_MAX_DELIVERIES && v > UINT32_MAX))
			return ctl_usage(c, "bad number '%s' for %s", arg, key);
		snprintf(out, SETTING_LEN, "%s=%llu", key,
			 (unsigned long long)v);
		return 0;
	case OPT_MAX_BYTES:
		if (ctl_parse_size(arg, &v) < 0)
			return ctl_usage(c, "bad size '%s' for %s", arg, key);
		snprintf(out, SETTING_LEN, "%s=%llu", key,
			 (unsigned long long)v);
		return 0;
	case OPT_MODE: {
		char *end;
		unsigned long mode = strtoul(arg, &end, 8);

		if (*arg < '0' || *arg > '7' || *end || mode > 0777)
			return ctl_usage(
				c, "bad mode '%s' (octal, at most 0777)", arg);
		snprintf(out, SETTING_LEN, "mode=%04lo", mode);
		return 0;
	}
	case OPT_GROUP: {
		struct group *g;

		if (ctl_parse_u64(arg, &v) == 0 && v <= UINT32_MAX) {
			snprintf(out, SETTING_LEN, "group=%llu",
				 (unsigned long long)v);
			return 0;
		}
		g = getgrnam(arg);
		if (!g)
			return ctl_usage(c, "no such group '%s'", arg);
		snprintf(out, SETTING_LEN, "group=%lu",
			 (unsigned long)g->gr_gid);
		return 0;
	}
	default:
		return ctl_usage(c, "unknown setting");
	}
}

/*
 * setting_from_arg - a KEY=VALUE argument of set, KEY as a setting key or
 * option name. Unknown keys go to the broker as they are, which names
 * the keys it knows.
 */
static int
setting_from_arg(Ctl *c, const char *kv, char *out)
{
	const char *eq = strchr(kv, '=');
	size_t klen, i;

	if (!eq || eq == kv)
		return ctl_usage(c, "bad setting '%s' (KEY=VALUE)", kv);
	klen = (size_t)(eq - kv);
	for (i = 0; i < N_SETTING_NAMES; i++) {
		const struct SettingName *n = &setting_names[i];

		if ((strlen(n->key) == klen && !memcmp(n->key, kv, klen)) ||
		    (strlen(n->option) == klen && !memcmp(n->option, kv, klen)))
			return setting_make(c, n->opt, eq + 1, out);
	}
	if (strlen(kv) >= SETTING_LEN)
		return ctl_usage(c, "setting '%.20s...' is too long", kv);
	snprintf(out, SETTING_LEN, "%s", kv);
	return 0;
}

/* One slot per setting key, so that a repeated option replaces. */
typedef char SettingSlots[OPT_MAX_BYTES - OPT_LEASE + 1][SETTING_LEN];

/* The filled slots as a NULL-terminated list (at most N_SETTING_NAMES
 * entries plus extra). */
static size_t
settings_list(SettingSlots slots, const char **list)
{
	size_t i, n = 0;

	for (i = 0; i < N_SETTING_NAMES; i++)
		if (slots[i][0])
			list[n++] = slots[i];
	list[n] = NULL;
	return n;
}

/*
 * settings_option - what the getopt loops of create and set do with an
 * option their own cases did not take: a setting goes into its slot,
 * anything else is a bad option. Returns 0, or the exit code.
 */
static int
settings_option(Ctl *c, int opt, char **argv, SettingSlots set)
{
	if (opt < OPT_LEASE || opt > OPT_MAX_BYTES)
		return ctl_bad_option(c, opt, argv);
	return setting_make(c, opt, optarg, set[opt - OPT_LEASE]);
}

/*
 * A temporary mailbox lives as long as its connection: hold it open
 * until SIGINT, SIGTERM, the end of standard input or the broker's going
 * away. Returns the exit code.
 */
static int
create_hold(Ctl *c)
{
	struct pollfd pfd[3];
	sigset_t set;
	int sigfd, r = CTL_EXIT_OK;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0 ||
	    (sigfd = signalfd(-1, &set, SFD_CLOEXEC)) < 0)
		return ctl_error(c, "cannot set up signal handling: %s",
				 strerror(errno));
	fprintf(stderr,
		"mboxctl: create %s: temporary mailbox: it lasts as long as "
		"this command runs (until SIGINT, SIGTERM or the end of "
		"standard input)\n",
		c->target);
	pfd[0] = (struct pollfd){.fd = sigfd, .events = POLLIN};
	pfd[1] = (struct pollfd){.fd = mbox_fd(c->m), .events = POLLIN};
	pfd[2] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
	for (;;) {
		char buf[4096];

		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			r = ctl_error(c, "poll: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[1].revents) {
			/* Nothing is pushed to us: this is the end. */
			r = ctl_error(c, "lost the connection to the broker; "
					 "the mailbox is gone");
			break;
		}
		if (pfd[2].revents) {
			ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));

			if (n == 0 ||
			    (n < 0 && errno != EINTR && errno != EAGAIN))
				break;
		}
	}
	close(sigfd);
	return r;
}

int
cmd_create(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		SETTINGS_OPTIONS,
		{"temp", no_argument, NULL, OPT_TEMP},
		CTL_COMMON_OPTIONS,
		{0},
	};
	SettingSlots set = {{0}};
	const char *settings[N_SETTING_NAMES + 2];
	bool temp = false;
	size_t n;
	int opt, r;

	while ((opt = getopt_long(argc, argv, ":S:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(create_help, stdout);
			return CTL_EXIT_OK;
		case OPT_TEMP:
			temp = true;
			break;
		default:
			r = settings_option(c, opt, argv, set);
			if (r)
				return r;
			break;
		}
	}
	if ((r = ctl_take_mailbox(c, argc, argv, "MAILBOX")) >= 0 ||
	    (r = ctl_no_more(c, argc, argv)) >= 0)
		return r;
	n = settings_list(set, settings);
	if (temp) {
		settings[n++] = "temp=1";
		settings[n] = NULL;
	}

	r = ctl_connect(c);
	if (r)
		return r;
	r = mbox_create(c->m, c->target, settings);
	if (r < 0)
		return r == -EEXIST ? ctl_fail(c, r, NULL)
				    : ctl_fail(c, r, "cannot create");
	return temp ? create_hold(c) : CTL_EXIT_OK;
}

int
cmd_set(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		SETTINGS_OPTIONS,
		CTL_COMMON_OPTIONS,
		{0},
	};
	SettingSlots set = {{0}};
	const char **settings = NULL;
	char(*extra)[SETTING_LEN] = NULL;
	size_t n, n_extra = 0;
	int i, opt, r;

	while ((opt = getopt_long(argc, argv, ":S:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(set_help, stdout);
			return CTL_EXIT_OK;
		default:
			r = settings_option(c, opt, argv, set);
			if (r)
				return r;
			break;
		}
	}
	r = ctl_take_mailbox(c, argc, argv, "MAILBOX KEY=VALUE...");
	if (r >= 0)
		return r;

	/* KEY=VALUE arguments go after the options' settings, so that they
	 * win if both name a key (the broker applies them in order). */
	settings =
		calloc(N_SETTING_NAMES + (size_t)argc + 1, sizeof(*settings));
	extra = calloc((size_t)argc, sizeof(*extra));
	if (!settings || !extra) {
		r = ctl_error(c, "out of memory");
		goto out;
	}
	n = settings_list(set, settings);
	for (i = optind; i < argc; i++) {
		r = setting_from_arg(c, argv[i], extra[n_extra]);
		if (r)
			goto out;
		settings[n++] = extra[n_extra++];
	}
	settings[n] = NULL;
	if (n == 0) {
		r = ctl_usage(c, "nothing to set (give KEY=VALUE or options)");
		goto out;
	}

	r = ctl_connect(c);
	if (r)
		goto out;
	r = mbox_set(c->m, c->target, settings);
	r = r < 0 ? ctl_fail(c, r, "not changed") : CTL_EXIT_OK;
out:
	free(settings);
	free(extra);
	return r;
}
