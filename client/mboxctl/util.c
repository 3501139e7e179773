/*
 * util.c - mboxctl's shared helpers: connecting, reporting errors in one
 * format ("mboxctl: VERB TARGET: what went wrong: broker text"), mapping
 * errors to the documented exit codes, parsing numbers and durations,
 * human-readable sizes and ages.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "client/mboxctl/util.h"
#include "mbox-proto.h"

static void
ctl_prefix(const Ctl *c)
{
	if (!c->verb || !c->verb[0]) {
		fputs("mboxctl: ", stderr); /* before the verb */
		return;
	}
	fprintf(stderr, "mboxctl: %s%s%s: ", c->verb, c->target ? " " : "",
		c->target ? c->target : "");
}

int
ctl_connect(Ctl *c)
{
	struct stat st;
	int r;

	/* The library would say EINVAL, which reads like a broker's
	 * answer; an empty -S is a usage error (a script's unset var). */
	if (c->socket && !c->socket[0])
		return ctl_usage(c, "-S/--socket needs a path, not an empty "
				    "string");
	if (c->socket)
		snprintf(c->path, sizeof(c->path), "%s", c->socket);
	else if (mbox_default_socket_path(c->path, sizeof(c->path)) < 0)
		snprintf(c->path, sizeof(c->path), "(default path too long)");
	r = mbox_connect(&c->m, c->socket);
	if (r == 0)
		return 0;
	if (r == -ENAMETOOLONG && c->socket)
		return ctl_usage(c,
				 "-S/--socket: a socket path is at most %zu "
				 "bytes, not %zu",
				 sizeof(((struct sockaddr_un *)0)->sun_path) -
					 1,
				 strlen(c->socket));
	ctl_prefix(c);
	switch (-r) {
	case EPROTO:
	case EPROTONOSUPPORT:
	case ECONNRESET:
	case EBADMSG:
		fprintf(stderr, "cannot talk to the broker at %s: %s\n",
			c->path, mbox_strerror(r));
		break;
	case EDQUOT:
		fprintf(stderr,
			"the broker at %s refused the connection: too many "
			"connections (max_connections or "
			"max_connections_per_uid); close some, or raise the "
			"limit\n",
			c->path);
		break;
	default:
		fprintf(stderr, "cannot connect to the broker at %s: %s\n",
			c->path, strerror(-r));
		break;
	}
	if (r == -ECONNREFUSED && stat(c->path, &st) == 0 &&
	    !S_ISSOCK(st.st_mode))
		fprintf(stderr,
			"mboxctl: %s is a %s, not a socket; point "
			"-S/--socket or MBOX_SOCKET at mboxd's socket\n",
			c->path, S_ISDIR(st.st_mode) ? "directory" : "file");
	else if (r == -ENOENT || r == -ECONNREFUSED)
		fprintf(stderr, "mboxctl: is mboxd running? start it with: "
				"mboxd (or point -S/--socket or MBOX_SOCKET at "
				"its socket)\n");
	else if (r == -EACCES)
		fprintf(stderr,
			"mboxctl: the socket's permissions do not let "
			"you in; ask its owner, or run your own mboxd\n");
	else if (r == -EPERM && !c->socket)
		fprintf(stderr, "mboxctl: its directory is not yours alone, so "
				"someone else may have made it to pose as your "
				"broker; remove it, or set $XDG_RUNTIME_DIR or "
				"$MBOX_SOCKET\n");
	return CTL_EXIT_UNREACHABLE;
}

void
ctl_close(Ctl *c)
{
	mbox_close(c->m);
	c->m = NULL;
}

int
ctl_exit_code(int err)
{
	switch (-err) {
	case 0:
		return CTL_EXIT_OK;
	case EACCES:
	case EPERM:
		return CTL_EXIT_DENIED;
	case ENOENT:
		return CTL_EXIT_NOT_FOUND;
	case EINVAL:
		/* The broker's INVALID: a value the user gave (a topic, a
		 * setting, a header) is out of range or badly formed. */
		return CTL_EXIT_USAGE;
	default:
		return CTL_EXIT_ERROR;
	}
}

/* What went wrong, in the words of a mailbox user. */
static const char *
ctl_errtext(const Ctl *c, int err)
{
	if (err == -ENOENT)
		return c->enoent ? c->enoent : "no such mailbox";
	/* The library's words fit a full request queue; the broker also
	 * answers BUSY to a subscription that conflicts. */
	if (err == -EBUSY)
		return "busy";
	return mbox_strerror(err);
}

int
ctl_fail(Ctl *c, int err, const char *what)
{
	const char *desc = ctl_errtext(c, err);
	const char *text = mbox_last_error(c->m);

	ctl_prefix(c);
	if (what)
		fprintf(stderr, "%s: ", what);
	/* Skip our words when the broker's text repeats them, or says
	 * more exactly what ENOENT meant for this verb. */
	if (text[0] && (strncmp(text, desc, strlen(desc)) == 0 ||
			(err == -ENOENT && c->enoent)))
		fprintf(stderr, "%s\n", text);
	else if (text[0])
		fprintf(stderr, "%s: %s\n", desc, text);
	else
		fprintf(stderr, "%s\n", desc);

	switch (-err) {
	case ENOENT:
		/* mboxd's own text may carry this hint already. */
		if (c->target && !c->enoent && !strstr(text, "mboxctl create"))
			fprintf(stderr,
				"mboxctl: create it with: mboxctl create %s\n",
				c->target);
		break;
	case ECONNRESET:
		fprintf(stderr,
			"mboxctl: lost the connection to the broker at "
			"%s; is mboxd still running?\n",
			c->path);
		break;
	case ESHUTDOWN:
		fprintf(stderr, "mboxctl: the broker is stopping; try again "
				"once it is back\n");
		break;
	case ENOTEMPTY: {
		/* Only DELETE answers it. */
		const char *t = c->target ? c->target : "MAILBOX";

		if (strstr(text, "mboxctl rm"))
			break;
		fprintf(stderr,
			"mboxctl: delete it with its messages: mboxctl rm %s "
			"--force; or empty it first: mboxctl purge %s, "
			"mboxctl purge %s --dead\n",
			t, t, t);
		break;
	}
	case EOPNOTSUPP:
		fprintf(stderr,
			"mboxctl: the broker at %s does not know this "
			"operation; is it older than this mboxctl?\n",
			c->path);
		break;
	default:
		break;
	}
	return ctl_exit_code(err);
}

int
ctl_error(Ctl *c, const char *fmt, ...)
{
	va_list ap;

	ctl_prefix(c);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return CTL_EXIT_ERROR;
}

/* A descriptor of 0-2 that was closed when mboxctl started, and is
 * /dev/null since (main, std_fds_open): what the verb reads or writes
 * there would be nothing, or lost. */
static int
ctl_closed_std(Ctl *c, int fd, const char *consequence)
{
	return ctl_error(c, "standard %s is closed: %s",
			 fd == 0 ? "input" : "output", consequence);
}

int
ctl_need_stdin(Ctl *c)
{
	if (!(c->closed_std & 1u << 0))
		return 0;
	return ctl_closed_std(c, 0,
			      "there is nothing to read, so nothing was sent "
			      "(redirect it from a file, or from /dev/null "
			      "for an empty input)");
}

int
ctl_need_stdout(Ctl *c)
{
	if (!(c->closed_std & 1u << 1))
		return 0;
	return ctl_closed_std(c, 1,
			      "what is received would be acknowledged unseen, "
			      "so nothing was done (redirect it to /dev/null "
			      "to discard it)");
}

void
ctl_ignore_sigpipe(void)
{
	signal(SIGPIPE, SIG_IGN);
}

int
ctl_usage(Ctl *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "mboxctl: %s: ", c->verb);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'mboxctl %s --help'.\n", c->verb);
	return CTL_EXIT_USAGE;
}

int
ctl_bad_option(Ctl *c, int opt, char **argv)
{
	const char *arg = optind > 0 ? argv[optind - 1] : "?";

	if (opt == ':') {
		/* For a long option, optopt is its value: a verb's own
		 * (OPT_DELAY, past 255) or a letter ('S' of --socket), never
		 * what was typed. The word itself was. */
		if (optopt > 0 && optopt < 128 && strncmp(arg, "--", 2) != 0)
			return ctl_usage(c, "option '-%c' needs an argument",
					 optopt);
		return ctl_usage(c, "option '%s' needs an argument", arg);
	}
	if (optopt)
		return ctl_usage(c, "unknown option '-%c'", optopt);
	return ctl_usage(c, "unknown option '%s'", arg);
}

int
ctl_parse_simple(Ctl *c, int argc, char **argv, const char *help, bool *json)
{
	static const struct option with_json[] = {
		{"json", no_argument, NULL, 'j'},
		CTL_COMMON_OPTIONS,
		{0},
	};
	static const struct option plain[] = {CTL_COMMON_OPTIONS, {0}};
	int opt;

	while ((opt = getopt_long(argc, argv, json ? ":S:hj" : ":S:h",
				  json ? with_json : plain, NULL)) != -1) {
		switch (opt) {
		case 'j':
			*json = true;
			break;
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(help, stdout);
			return CTL_EXIT_OK;
		default:
			return ctl_bad_option(c, opt, argv);
		}
	}
	return -1;
}

int
ctl_take_mailbox(Ctl *c, int argc, char **argv, const char *synopsis)
{
	const char *name;

	if (optind >= argc)
		return ctl_usage(c, "which mailbox? (mboxctl %s %s)", c->verb,
				 synopsis);
	name = argv[optind];
	if (!mbox_name_valid(name))
		return ctl_usage(c,
				 "invalid mailbox name \"%.64s\"%s: it must be "
				 "1-%u bytes of A-Z a-z 0-9 . _ -",
				 name, strlen(name) > 64 ? "..." : "",
				 MBOX_NAME_MAX);
	c->target = name;
	optind++;
	return -1;
}

int
ctl_no_more(Ctl *c, int argc, char **argv)
{
	if (optind < argc)
		return ctl_usage(c, "unexpected argument '%s'", argv[optind]);
	return -1;
}

int
ctl_empty(Ctl *c)
{
	mbox_mailbox_stat *st = NULL;

	if (c->m && c->target && mbox_stat(c->m, c->target, &st) == 0 &&
	    (st->flags & MBOX_STAT_PAUSED))
		fprintf(stderr,
			"mboxctl: %s %s: nothing received: the mailbox is "
			"paused; resume deliveries with: mboxctl resume %s\n",
			c->verb, c->target, c->target);
	mbox_stat_free(st);
	return CTL_EXIT_EMPTY;
}

int
ctl_parse_u64(const char *s, uint64_t *v)
{
	unsigned long long x;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	x = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*v = x;
	return 0;
}

int
ctl_parse_size(const char *s, uint64_t *v)
{
	static const char units[] = "KMGT";
	unsigned long long x;
	const char *u;
	char *end;
	int shift;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	x = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	if (*end == '\0') {
		*v = x;
		return 0;
	}
	u = strchr(units, end[0] == 'k' ? 'K' : end[0]);
	if (!u || !*u)
		return -EINVAL;
	/* Allow K, KB, KiB. */
	if (end[1] && strcmp(end + 1, "B") != 0 && strcmp(end + 1, "iB") != 0)
		return -EINVAL;
	shift = 10 * (int)(u - units + 1);
	if (x > (UINT64_MAX >> shift))
		return -EINVAL;
	*v = (uint64_t)x << shift;
	return 0;
}

int
ctl_parse_duration_ms(const char *s, uint64_t *ms)
{
	double x, scale;
	const char *p = s;
	char num[64];
	size_t n;
	bool dot = false;

	if (!s || !*s)
		return -EINVAL;
	/* Plain decimal digits only: strtod alone takes hex, inf, nan. */
	while ((*p >= '0' && *p <= '9') || (*p == '.' && !dot)) {
		if (*p == '.')
			dot = true;
		p++;
	}
	n = (size_t)(p - s);
	if (n == 0 || n >= sizeof(num) || (n == 1 && dot))
		return -EINVAL;
	memcpy(num, s, n);
	num[n] = '\0';
	if (*p == '\0' || strcmp(p, "s") == 0)
		scale = 1000.0;
	else if (strcmp(p, "ms") == 0)
		scale = 1.0;
	else if (strcmp(p, "m") == 0)
		scale = 60000.0;
	else if (strcmp(p, "h") == 0)
		scale = 3600000.0;
	else
		return -EINVAL;
	x = strtod(num, NULL) * scale;
	/* A thousand years is "forever" enough; beyond it is a typo. */
	if (!(x >= 0.0) || x > 3.2e13)
		return -EINVAL;
	*ms = (uint64_t)(x + 0.5); /* no libm for llround */
	return 0;
}

static int64_t
ctl_clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t
ctl_realtime_ns(void)
{
	return ctl_clock_ns(CLOCK_REALTIME);
}

int64_t
ctl_monotonic_ns(void)
{
	return ctl_clock_ns(CLOCK_MONOTONIC);
}

void
ctl_fmt_size(char *buf, size_t size, uint64_t bytes)
{
	static const char units[] = "KMGTPE";
	double v = (double)bytes;
	int i = -1;

	if (bytes < 1024) {
		snprintf(buf, size, "%llu", (unsigned long long)bytes);
		return;
	}
	while (v >= 1024.0 && i < 5) {
		v /= 1024.0;
		i++;
	}
	if (v < 9.95)
		snprintf(buf, size, "%.1f%c", v, units[i]);
	else
		snprintf(buf, size, "%.0f%c", v, units[i]);
}

void
ctl_fmt_age(char *buf, size_t size, int64_t time_ns, int64_t now_ns)
{
	int64_t s;

	if (time_ns <= 0) {
		snprintf(buf, size, "-");
		return;
	}
	s = now_ns > time_ns ? (now_ns - time_ns) / 1000000000 : 0;
	if (s < 60)
		snprintf(buf, size, "%llds", (long long)s);
	else if (s < 3600)
		snprintf(buf, size, "%lldm", (long long)(s / 60));
	else if (s < 86400)
		snprintf(buf, size, "%lldh", (long long)(s / 3600));
	else
		snprintf(buf, size, "%lldd", (long long)(s / 86400));
}

bool
ctl_utf8_valid(const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = p[i];
		uint32_t cp;
		size_t k, len;

		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		/* Overlong forms, UTF-16 surrogates, beyond U+10FFFF. */
		if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return false;
		i += len;
	}
	return true;
}
