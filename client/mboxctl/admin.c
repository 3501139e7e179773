/*
 * admin.c - `mboxctl ping` and `mboxctl create`.
 *
 * create turns its options into the broker's "key=value" SETTINGs after
 * checking them here, so a typo is a usage error (exit 2) that names the
 * option, not a broker error about a setting the user never typed.
 * Durations go out in milliseconds ("lease=1500ms") so that the CLI can
 * accept decimals ("--lease 1.5") although the broker takes integers.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	static const struct option opts[] = {CTL_COMMON_OPTIONS, {0}};
	int64_t t0, t1;
	int opt, r;

	while ((opt = getopt_long(argc, argv, ":S:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(ping_help, stdout);
			return CTL_EXIT_OK;
		default:
			return ctl_bad_option(c, opt, argv);
		}
	}
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

static const char create_help[] =
	"Usage: mboxctl create MAILBOX [OPTIONS]\n"
	"\n"
	"Create MAILBOX (1-200 bytes of A-Z a-z 0-9 . _ -), owned by you.\n"
	"Options not given take the broker's defaults.\n"
	"\n"
	"Options:\n"
	"      --lease SECS          how long a received message stays "
	"leased\n"
	"                            before it is delivered again (default "
	"60s)\n"
	"      --max-deliveries N    deliveries before a message goes dead\n"
	"                            (0 = unlimited, the default)\n"
	"      --ttl SECS            messages go dead as expired after SECS\n"
	"                            (0 = never, the default)\n"
	"      --mode MODE           octal permissions, r = receive/peek, w "
	"= post\n"
	"                            (default 0600)\n"
	"      --group GROUP         group name or gid (default: yours)\n"
	"      --max-msgs N          refuse posts beyond N messages (0 = "
	"only the\n"
	"                            broker-wide limit)\n"
	"      --max-bytes N         refuse posts beyond N payload bytes; "
	"K, M, G\n"
	"                            suffixes (0 = only the broker-wide "
	"limit)\n" CTL_COMMON_HELP "\n"
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
};

#define CREATE_SETTINGS_MAX 8
#define SETTING_LEN	    64

int
cmd_create(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"lease", required_argument, NULL, OPT_LEASE},
		{"max-deliveries", required_argument, NULL, OPT_MAX_DELIVERIES},
		{"ttl", required_argument, NULL, OPT_TTL},
		{"mode", required_argument, NULL, OPT_MODE},
		{"group", required_argument, NULL, OPT_GROUP},
		{"max-msgs", required_argument, NULL, OPT_MAX_MSGS},
		{"max-bytes", required_argument, NULL, OPT_MAX_BYTES},
		CTL_COMMON_OPTIONS,
		{0},
	};
	/* Indexed by option - OPT_LEASE; "" when not given. */
	char set[OPT_MAX_BYTES - OPT_LEASE + 1][SETTING_LEN] = {{0}};
	const char *settings[CREATE_SETTINGS_MAX + 1];
	size_t n = 0, i;
	uint64_t v;
	int opt, r;

	while ((opt = getopt_long(argc, argv, ":S:h", opts, NULL)) != -1) {
		char *s = opt >= OPT_LEASE && opt <= OPT_MAX_BYTES
				  ? set[opt - OPT_LEASE]
				  : NULL;

		switch (opt) {
		case OPT_LEASE:
		case OPT_TTL:
			if (ctl_parse_duration_ms(optarg, &v) < 0)
				return ctl_usage(c, "bad duration '%s'",
						 optarg);
			if (opt == OPT_LEASE && v == 0)
				return ctl_usage(c, "a lease must be longer "
						    "than 0");
			snprintf(s, SETTING_LEN, "%s=%llums",
				 opt == OPT_LEASE ? "lease" : "ttl",
				 (unsigned long long)v);
			break;
		case OPT_MAX_DELIVERIES:
		case OPT_MAX_MSGS:
			if (ctl_parse_u64(optarg, &v) < 0)
				return ctl_usage(c, "bad number '%s'", optarg);
			snprintf(s, SETTING_LEN, "%s=%llu",
				 opt == OPT_MAX_MSGS ? "max_msgs"
						     : "max_deliveries",
				 (unsigned long long)v);
			break;
		case OPT_MAX_BYTES:
			if (ctl_parse_size(optarg, &v) < 0)
				return ctl_usage(c, "bad size '%s'", optarg);
			snprintf(s, SETTING_LEN, "max_bytes=%llu",
				 (unsigned long long)v);
			break;
		case OPT_MODE: {
			char *end;
			unsigned long mode = strtoul(optarg, &end, 8);

			if (*optarg < '0' || *optarg > '7' || *end ||
			    mode > 0777)
				return ctl_usage(c,
						 "bad mode '%s' (octal, at "
						 "most 0777)",
						 optarg);
			snprintf(s, SETTING_LEN, "mode=%04lo", mode);
			break;
		}
		case OPT_GROUP: {
			struct group *g;

			if (ctl_parse_u64(optarg, &v) == 0 && v <= UINT32_MAX) {
				snprintf(s, SETTING_LEN, "group=%llu",
					 (unsigned long long)v);
				break;
			}
			g = getgrnam(optarg);
			if (!g)
				return ctl_usage(c, "no such group '%s'",
						 optarg);
			snprintf(s, SETTING_LEN, "group=%lu",
				 (unsigned long)g->gr_gid);
			break;
		}
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(create_help, stdout);
			return CTL_EXIT_OK;
		default:
			return ctl_bad_option(c, opt, argv);
		}
	}
	if (optind >= argc)
		return ctl_usage(c, "which mailbox? (mboxctl create MAILBOX)");
	if (argc - optind > 1)
		return ctl_usage(c, "unexpected argument '%s'",
				 argv[optind + 1]);
	c->target = argv[optind];

	for (i = 0; i < sizeof(set) / sizeof(set[0]); i++)
		if (set[i][0] && n < CREATE_SETTINGS_MAX)
			settings[n++] = set[i];
	settings[n] = NULL;

	r = ctl_connect(c);
	if (r)
		return r;
	r = mbox_create(c->m, c->target, settings);
	if (r < 0)
		return r == -EEXIST ? ctl_fail(c, r, NULL)
				    : ctl_fail(c, r, "cannot create");
	return CTL_EXIT_OK;
}
