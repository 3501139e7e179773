/*
 * stats.c - `mboxctl stat`, `clients`, `stats` and `watch`: what an
 * operator looks at.
 *
 * Human output is laid out after everything is fetched, in aligned
 * columns with human sizes ("1.2K") and ages ("5m"); --json prints JSON
 * Lines instead (one compact object per line, raw numbers, rates as
 * decimal numbers per second), documented in mboxctl(1) and kept stable.
 *
 * watch redraws with plain ANSI sequences (no curses): the alternate
 * screen, cursor home, clear to the end of each line. It puts the
 * terminal in non-canonical mode to see 'q' at once and restores it on
 * every way out (q, Ctrl-C, SIGTERM, SIGHUP, an error). When stdout is
 * not a terminal it prints plain snapshots (one, or --count N) instead.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "client/mboxctl/json.h"
#include "client/mboxctl/stats.h"

#define CELL_LEN 64

/* ------------------------------------------------------------------ */
/* Tables: cells fetched first, then printed in columns that fit. */

typedef struct Table {
	size_t cols, rows, cap;
	const char *align; /* per column: 'l' or 'r' */
	char (*cell)[CELL_LEN];
} Table;

static int
table_init(Table *t, const char *align, const char *const *head)
{
	memset(t, 0, sizeof(*t));
	t->cols = strlen(align);
	t->align = align;
	t->cap = 16;
	t->cell = calloc(t->cap * t->cols, CELL_LEN);
	if (!t->cell)
		return -ENOMEM;
	for (size_t k = 0; k < t->cols; k++)
		snprintf(t->cell[k], CELL_LEN, "%s", head[k]);
	t->rows = 1;
	return 0;
}

/* A new row; its cells (table_cell) start empty. NULL without memory. */
static char (*table_row(Table *t))[CELL_LEN]
{
	if (t->rows == t->cap) {
		void *p = realloc(t->cell, 2 * t->cap * t->cols * CELL_LEN);
		if (!p)
			return NULL;
		t->cell = p;
		t->cap *= 2;
	}
	memset(t->cell[t->rows * t->cols], 0, t->cols * CELL_LEN);
	return &t->cell[t->rows++ * t->cols];
}

/*
 * Print rows [0, rows) (row 0 is the heading). Column 0 is cut to fit
 * max_width when it is not 0 (a long name ends in '~'); the last column
 * is not padded. Each line ends with eol.
 */
static void
table_print(FILE *f, const Table *t, size_t rows, size_t max_width,
	    const char *eol)
{
	size_t w[16] = {0}, total = 0;

	for (size_t r = 0; r < rows; r++)
		for (size_t k = 0; k < t->cols && k < 16; k++) {
			size_t n = strlen(t->cell[r * t->cols + k]);
			if (n > w[k])
				w[k] = n;
		}
	for (size_t k = 0; k < t->cols; k++)
		total += w[k] + (k ? 2 : 0);
	if (max_width && total > max_width) {
		size_t cut = total - max_width;
		w[0] = w[0] > cut + 6 ? w[0] - cut : 6;
	}
	for (size_t r = 0; r < rows; r++) {
		for (size_t k = 0; k < t->cols; k++) {
			const char *s = t->cell[r * t->cols + k];
			bool last = k + 1 == t->cols;
			int width = last && t->align[k] == 'l' ? 0 : (int)w[k];

			if (k)
				fputs("  ", f);
			if (k == 0 && strlen(s) > w[0])
				fprintf(f, "%.*s~", (int)w[0] - 1, s);
			else if (t->align[k] == 'l')
				fprintf(f, "%-*s", width, s);
			else
				fprintf(f, "%*s", width, s);
		}
		fputs(eol, f);
	}
}

static void
table_free(Table *t)
{
	free(t->cell);
	t->cell = NULL;
}

/* ------------------------------------------------------------------ */
/* Shared formats */

/* "12", "1.5", "0.25": a rate in thousandths, without trailing zeros. */
static void
fmt_rate(char *buf, size_t size, uint64_t milli)
{
	if (milli % 1000 == 0)
		snprintf(buf, size, "%" PRIu64, milli / 1000);
	else if (milli >= 100000)
		snprintf(buf, size, "%" PRIu64, (milli + 500) / 1000);
	else if (milli >= 10000)
		snprintf(buf, size, "%.1f", (double)milli / 1000.0);
	else
		snprintf(buf, size, "%.2f", (double)milli / 1000.0);
}

/* Counters named bytes_* are shown as sizes. */
static bool
is_bytes(const char *name)
{
	return strncmp(name, "bytes_", 6) == 0;
}

static void
json_rate(FILE *f, uint64_t milli)
{
	fprintf(f, "%" PRIu64 ".%03" PRIu64, milli / 1000, milli % 1000);
}

/* "counters":{"posted":{"total":N,"rate":R},...} */
static void
json_counters(FILE *f, const mbox_counter *c, size_t n)
{
	fputs("\"counters\":{", f);
	for (size_t i = 0; i < n; i++) {
		if (i)
			putc(',', f);
		json_cstring(f, c[i].name);
		fprintf(f, ":{\"total\":%" PRIu64 ",\"rate\":", c[i].total);
		json_rate(f, c[i].rate_milli);
		putc('}', f);
	}
	putc('}', f);
}

static int
counters_table(const mbox_counter *c, size_t n, uint64_t interval_ms)
{
	static const char *const head[] = {"COUNTER", "TOTAL", "PER SEC"};
	Table t;

	if (table_init(&t, "lrr", head) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		char(*row)[CELL_LEN] = table_row(&t);

		if (!row) {
			table_free(&t);
			return -ENOMEM;
		}
		snprintf(row[0], CELL_LEN, "%s", c[i].name);
		if (is_bytes(c[i].name)) {
			ctl_fmt_size(row[1], CELL_LEN, c[i].total);
			ctl_fmt_size(row[2], CELL_LEN,
				     (c[i].rate_milli + 500) / 1000);
		} else {
			snprintf(row[1], CELL_LEN, "%" PRIu64, c[i].total);
			fmt_rate(row[2], CELL_LEN, c[i].rate_milli);
		}
	}
	table_print(stdout, &t, t.rows, 0, "\n");
	printf("(rates per second over the last %.0f s)\n",
	       (double)interval_ms / 1000.0);
	table_free(&t);
	return 0;
}

/* "q[2/4]": unacked/window, ",excl" / ",standby" as they apply. */
static void
fmt_subs(char *buf, size_t size, const mbox_client_info *ci)
{
	size_t o = 0;

	buf[0] = '\0';
	if (ci->n_subs == 0) {
		snprintf(buf, size, "-");
		return;
	}
	for (size_t i = 0; i < ci->n_subs && o < size; i++) {
		const mbox_subscription_info *s = &ci->subs[i];
		int k = snprintf(
			buf + o, size - o, "%s%s[%" PRIu64 "/%" PRIu32 "%s%s]",
			i ? " " : "", s->mailbox, s->unacked, s->window,
			(s->flags & MBOX_SUB_EXCLUSIVE_FLAG) ? ",excl" : "",
			(s->flags & MBOX_SUB_STANDBY_FLAG) ? ",standby" : "");
		if (k < 0)
			break;
		o += (size_t)k;
	}
	if (o >= size && size > 4)
		memcpy(buf + size - 4, "...", 4);
}

static void
json_client(FILE *f, const mbox_client_info *ci)
{
	fprintf(f,
		"{\"conn_id\":%" PRIu64 ",\"pid\":%ld,\"uid\":%lu,"
		"\"gid\":%lu,\"comm\":",
		ci->conn_id, (long)ci->pid, (unsigned long)ci->uid,
		(unsigned long)ci->gid);
	json_cstring(f, ci->comm);
	fprintf(f,
		",\"connected_ns\":%" PRId64 ",\"leased\":%" PRIu64
		",\"waiting\":%" PRIu64 ",\"self\":%s,\"subscriptions\":[",
		ci->connected_ns, ci->leased, ci->waiting,
		(ci->flags & MBOX_CLIENT_SELF_FLAG) ? "true" : "false");
	for (size_t i = 0; i < ci->n_subs; i++) {
		const mbox_subscription_info *s = &ci->subs[i];

		fputs(i ? ",{\"mailbox\":" : "{\"mailbox\":", f);
		json_cstring(f, s->mailbox);
		fprintf(f,
			",\"window\":%" PRIu32 ",\"unacked\":%" PRIu64
			",\"lease_ms\":%" PRIu64
			",\"exclusive\":%s,\"standby\":%s}",
			s->window, s->unacked, s->lease_ms,
			(s->flags & MBOX_SUB_EXCLUSIVE_FLAG) ? "true" : "false",
			(s->flags & MBOX_SUB_STANDBY_FLAG) ? "true" : "false");
	}
	fputs("]}", f);
}

static int
clients_table(const mbox_client_info *list, size_t n, int64_t now)
{
	static const char *const head[] = {
		"CONN", "PID",	  "UID",     "NAME",
		"AGE",	"LEASED", "WAITING", "SUBSCRIPTIONS (unacked/window)",
	};
	Table t;

	if (table_init(&t, "rrrlrrrl", head) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const mbox_client_info *ci = &list[i];
		char(*row)[CELL_LEN] = table_row(&t);

		if (!row) {
			table_free(&t);
			return -ENOMEM;
		}
		snprintf(row[0], CELL_LEN, "%" PRIu64 "%s", ci->conn_id,
			 (ci->flags & MBOX_CLIENT_SELF_FLAG) ? "*" : "");
		snprintf(row[1], CELL_LEN, "%ld", (long)ci->pid);
		snprintf(row[2], CELL_LEN, "%lu", (unsigned long)ci->uid);
		snprintf(row[3], CELL_LEN, "%s", ci->comm[0] ? ci->comm : "?");
		ctl_fmt_age(row[4], CELL_LEN, ci->connected_ns, now);
		snprintf(row[5], CELL_LEN, "%" PRIu64, ci->leased);
		snprintf(row[6], CELL_LEN, "%" PRIu64, ci->waiting);
		fmt_subs(row[7], CELL_LEN, ci);
	}
	table_print(stdout, &t, t.rows, 0, "\n");
	table_free(&t);
	return 0;
}

static int
flush_stdout(Ctl *c, int r)
{
	if (fflush(stdout) != 0 && r == CTL_EXIT_OK)
		return ctl_error(c, "cannot write to standard output: %s",
				 strerror(errno));
	return r;
}

/* ------------------------------------------------------------------ */
/* stat */

static const char stat_help[] =
	"Usage: mboxctl stat MAILBOX [OPTIONS]\n"
	"\n"
	"Show one mailbox in detail: its counters (as ls), state, settings,\n"
	"event counters since the broker started with their rates per "
	"second\n"
	"over the last 10 s, and the connections subscribed to it or "
	"waiting\n"
	"on it. Needs read or write permission on MAILBOX.\n"
	"\n"
	"Options:\n"
	"  -j, --json            one JSON object on one line\n" CTL_COMMON_HELP;

static void
stat_json(const mbox_mailbox_stat *st)
{
	const mbox_mailbox_info *in = &st->info;

	fputs("{\"name\":", stdout);
	json_cstring(stdout, in->name);
	printf(",\"ready\":%" PRIu64 ",\"leased\":%" PRIu64
	       ",\"delayed\":%" PRIu64 ",\"dead\":%" PRIu64
	       ",\"bytes\":%" PRIu64 ",\"oldest_ns\":%" PRId64
	       ",\"consumers\":%" PRIu64 ",\"owner_uid\":%" PRIu32
	       ",\"gid\":%" PRIu32 ",\"mode\":\"%04" PRIo32 "\"",
	       in->ready, in->leased, in->delayed, in->dead, in->bytes,
	       in->oldest_ns, in->consumers, in->owner_uid, in->gid, in->mode);
	printf(",\"paused\":%s,\"temp\":%s,\"waiting\":%" PRIu64
	       ",\"created_ns\":%" PRId64 ",\"settings\":{",
	       (st->flags & MBOX_STAT_PAUSED) ? "true" : "false",
	       (st->flags & MBOX_STAT_TEMP) ? "true" : "false", st->waiting,
	       st->created_ns);
	for (size_t i = 0; i < st->n_settings; i++) {
		const char *s = st->settings[i], *eq = strchr(s, '=');

		if (i)
			putchar(',');
		if (!eq)
			eq = s + strlen(s);
		json_string(stdout, s, (size_t)(eq - s));
		putchar(':');
		json_cstring(stdout, *eq ? eq + 1 : "");
	}
	fputs("},", stdout);
	json_counters(stdout, st->counters, st->n_counters);
	printf(",\"interval_ms\":%" PRIu64 ",\"clients\":[", st->interval_ms);
	for (size_t i = 0; i < st->n_consumers; i++) {
		if (i)
			putchar(',');
		json_client(stdout, &st->consumers[i]);
	}
	printf("],\"truncated\":%s}\n", st->truncated ? "true" : "false");
}

static void
stat_human(const mbox_mailbox_stat *st)
{
	const mbox_mailbox_info *in = &st->info;
	int64_t now = ctl_realtime_ns();
	char a[CELL_LEN], b[CELL_LEN];

	printf("%-12s %s\n", "mailbox", in->name);
	printf("%-12s %s%s\n", "state",
	       (st->flags & MBOX_STAT_PAUSED) ? "paused" : "active",
	       (st->flags & MBOX_STAT_TEMP) ? ", temporary" : "");
	printf("%-12s uid %" PRIu32 ", group %" PRIu32 ", mode %04" PRIo32 "\n",
	       "owner", in->owner_uid, in->gid, in->mode);
	ctl_fmt_age(a, sizeof(a), st->created_ns, now);
	printf("%-12s %s ago\n", "created", a);
	printf("%-12s %" PRIu64 "\n", "ready", in->ready);
	printf("%-12s %" PRIu64 "\n", "leased", in->leased);
	printf("%-12s %" PRIu64 "\n", "delayed", in->delayed);
	printf("%-12s %" PRIu64 "\n", "dead", in->dead);
	ctl_fmt_size(a, sizeof(a), in->bytes);
	printf("%-12s %s\n", "bytes", a);
	ctl_fmt_age(b, sizeof(b), in->oldest_ns, now);
	printf("%-12s %s\n", "oldest", b);
	printf("%-12s %" PRIu64 " (%" PRIu64 " waiting in recv)\n", "consumers",
	       in->consumers, st->waiting);
	fputs("settings    ", stdout);
	for (size_t i = 0; i < st->n_settings; i++)
		printf(" %s", st->settings[i]);
	fputs("\n\n", stdout);
	counters_table(st->counters, st->n_counters, st->interval_ms);
	if (st->n_consumers) {
		putchar('\n');
		clients_table(st->consumers, st->n_consumers, now);
	}
	if (st->truncated)
		puts("... (more consumers than one reply holds)");
}

int
cmd_stat(Ctl *c, int argc, char **argv)
{
	mbox_mailbox_stat *st = NULL;
	bool json = false;
	int r;

	r = ctl_parse_simple(c, argc, argv, stat_help, &json);
	if (r >= 0)
		return r;
	if ((r = ctl_take_mailbox(c, argc, argv, "MAILBOX")) >= 0 ||
	    (r = ctl_no_more(c, argc, argv)) >= 0)
		return r;
	r = ctl_connect(c);
	if (r)
		return r;
	r = mbox_stat(c->m, c->target, &st);
	if (r < 0)
		return ctl_fail(c, r, NULL);
	if (json)
		stat_json(st);
	else
		stat_human(st);
	mbox_stat_free(st);
	return flush_stdout(c, CTL_EXIT_OK);
}

/* ------------------------------------------------------------------ */
/* clients */

static const char clients_help[] =
	"Usage: mboxctl clients [OPTIONS]\n"
	"\n"
	"List the connections to the broker, oldest first: connection "
	"number\n"
	"(* marks this one), pid, uid, process name, how long it has been\n"
	"connected, messages it holds leased, its RECVs waiting, and its\n"
	"subscriptions as MAILBOX[unacked/window]. An admin sees every\n"
	"connection, anyone else only those of their own uid.\n"
	"\n"
	"Options:\n"
	"  -j, --json            one JSON object per connection and "
	"line\n" CTL_COMMON_HELP;

int
cmd_clients(Ctl *c, int argc, char **argv)
{
	mbox_client_info *list = NULL;
	bool json = false;
	size_t n = 0;
	int r;

	r = ctl_parse_simple(c, argc, argv, clients_help, &json);
	if (r >= 0)
		return r;
	if (optind < argc)
		return ctl_usage(c, "unexpected argument '%s'", argv[optind]);
	r = ctl_connect(c);
	if (r)
		return r;
	r = mbox_clients(c->m, &list, &n);
	if (r < 0)
		return ctl_fail(c, r, NULL);
	r = CTL_EXIT_OK;
	if (json) {
		for (size_t i = 0; i < n; i++) {
			json_client(stdout, &list[i]);
			putchar('\n');
		}
	} else if (clients_table(list, n, ctl_realtime_ns()) < 0) {
		r = ctl_error(c, "out of memory");
	}
	if (n && (list[n - 1].flags & MBOX_CLIENT_CUT_FLAG))
		fprintf(stderr,
			"mboxctl: the list was cut short after connection "
			"%" PRIu64 ": more connections or subscriptions than "
			"one reply of the broker holds (mboxd "
			"--max-msg-size)\n",
			list[n - 1].conn_id);
	mbox_clients_free(list, n);
	return flush_stdout(c, r);
}

/* ------------------------------------------------------------------ */
/* stats */

static const char stats_help[] =
	"Usage: mboxctl stats [OPTIONS]\n"
	"\n"
	"Show the broker's figures: version, uptime, connections, "
	"mailboxes,\n"
	"messages of all mailboxes by state, store size, the space kept aside\n"
	"for a full disk (or that the disk is full), and its event\n"
	"counters since it started (posted, delivered, redelivered, acked,\n"
	"nacked, dead by reason, bytes in and out, connections, durable\n"
	"commits) with their rates per second over the last 10 s. Anyone may\n"
	"ask.\n"
	"\n"
	"Options:\n"
	"  -j, --json            one JSON object on one line\n" CTL_COMMON_HELP;

static void
stats_json(const mbox_broker_stats *st, int64_t now)
{
	char disk[80];

	/* null: the broker does not say (an older one). */
	if (!st->disk_known)
		snprintf(disk, sizeof(disk), "null,\"disk_full\":null");
	else
		snprintf(disk, sizeof(disk), "%" PRIu64 ",\"disk_full\":%s",
			 st->reserve_bytes, st->disk_full ? "true" : "false");
	fputs("{\"server\":", stdout);
	json_cstring(stdout, st->server);
	printf(",\"started_ns\":%" PRId64 ",\"uptime_s\":%" PRId64
	       ",\"connections\":%" PRIu64 ",\"mailboxes\":%" PRIu64
	       ",\"ready\":%" PRIu64 ",\"leased\":%" PRIu64
	       ",\"delayed\":%" PRIu64 ",\"dead\":%" PRIu64
	       ",\"bytes\":%" PRIu64 ",\"store_bytes\":%" PRIu64
	       ",\"reserve_bytes\":%s,\"interval_ms\":%" PRIu64 ",",
	       st->started_ns,
	       now > st->started_ns ? (now - st->started_ns) / 1000000000 : 0,
	       st->connections, st->mailboxes, st->ready, st->leased,
	       st->delayed, st->dead, st->bytes, st->store_bytes, disk,
	       st->interval_ms);
	json_counters(stdout, st->counters, st->n_counters);
	fputs("}\n", stdout);
}

static int
stats_human(const mbox_broker_stats *st, int64_t now)
{
	char a[CELL_LEN], b[CELL_LEN];

	printf("%-12s %s\n", "server", st->server);
	ctl_fmt_age(a, sizeof(a), st->started_ns, now);
	printf("%-12s %s\n", "uptime", a);
	printf("%-12s %" PRIu64 "\n", "connections", st->connections);
	printf("%-12s %" PRIu64 "\n", "mailboxes", st->mailboxes);
	printf("%-12s ready %" PRIu64 ", leased %" PRIu64 ", delayed %" PRIu64
	       ", dead %" PRIu64 "\n",
	       "messages", st->ready, st->leased, st->delayed, st->dead);
	ctl_fmt_size(a, sizeof(a), st->bytes);
	ctl_fmt_size(b, sizeof(b), st->store_bytes);
	printf("%-12s %s of payload, store %s on disk\n", "bytes", a, b);
	ctl_fmt_size(a, sizeof(a), st->reserve_bytes);
	if (!st->disk_known)
		printf("\n"); /* an older broker does not say */
	else if (st->disk_full)
		printf("%-12s FULL: posts go only where acks free room in the "
		       "store, until the disk has room again (see the broker's "
		       "log)\n\n",
		       "disk");
	else if (st->reserve_bytes)
		printf("%-12s %s kept aside for a full disk\n\n", "disk", a);
	else
		printf("%-12s nothing kept aside for a full disk\n\n", "disk");
	return counters_table(st->counters, st->n_counters, st->interval_ms);
}

int
cmd_stats(Ctl *c, int argc, char **argv)
{
	mbox_broker_stats *st = NULL;
	bool json = false;
	int r;

	r = ctl_parse_simple(c, argc, argv, stats_help, &json);
	if (r >= 0)
		return r;
	if (optind < argc)
		return ctl_usage(c, "unexpected argument '%s'", argv[optind]);
	r = ctl_connect(c);
	if (r)
		return r;
	r = mbox_stats(c->m, &st);
	if (r < 0)
		return ctl_fail(c, r, NULL);
	r = CTL_EXIT_OK;
	if (json)
		stats_json(st, ctl_realtime_ns());
	else if (stats_human(st, ctl_realtime_ns()) < 0)
		r = ctl_error(c, "out of memory");
	mbox_stats_free(st);
	return flush_stdout(c, r);
}

/* ------------------------------------------------------------------ */
/* watch */

static const char watch_help[] =
	"Usage: mboxctl watch [OPTIONS]\n"
	"\n"
	"A live view of the broker, like top: its figures and rates on top,\n"
	"then every mailbox you may see (as ls), redrawn every interval.\n"
	"Press q (or Ctrl-C) to quit. When standard output is not a "
	"terminal,\n"
	"print one plain snapshot (or --count N of them, an interval "
	"apart)\n"
	"and exit.\n"
	"\n"
	"Options:\n"
	"  -i, --interval SECS   time between refreshes (default 1; "
	"units\n"
	"                        ms, s, m also work)\n"
	"  -n, --count N         stop after N refreshes\n" CTL_COMMON_HELP;

/* Set by the signal handlers: stop, or redraw for a new size. */
static volatile sig_atomic_t watch_stop, watch_resized;

static void
watch_on_signal(int sig)
{
	if (sig == SIGWINCH)
		watch_resized = 1;
	else
		watch_stop = sig;
}

typedef struct Screen {
	bool tty;	      /* stdout is a terminal: redraw in place */
	bool raw;	      /* stdin was put in non-canonical mode */
	struct termios saved; /* stdin's mode before */
	size_t width, height; /* of the terminal, or 80x24 */
	struct sigaction old[4];
} Screen;

static const int watch_signals[4] = {SIGINT, SIGTERM, SIGHUP, SIGWINCH};

static void
screen_size(Screen *s)
{
	struct winsize ws;

	s->width = 80;
	s->height = 24;
	if (s->tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 &&
	    ws.ws_col >= 20 && ws.ws_row >= 6) {
		s->width = ws.ws_col;
		s->height = ws.ws_row;
	}
}

static void
screen_open(Screen *s)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = watch_on_signal;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: poll() returns at once with EINTR. */
	for (size_t i = 0; i < 4; i++)
		sigaction(watch_signals[i], &sa, &s->old[i]);
	s->tty = isatty(STDOUT_FILENO);
	screen_size(s);
	if (!s->tty)
		return;
	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &s->saved) == 0) {
		struct termios t = s->saved;

		t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		t.c_cc[VMIN] = 0;
		t.c_cc[VTIME] = 0;
		s->raw = tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0;
	}
	/* Alternate screen, cursor hidden: the shell's screen comes back
	 * untouched at the end. */
	fputs("\033[?1049h\033[?25l", stdout);
	fflush(stdout);
}

static void
screen_close(Screen *s)
{
	if (s->tty) {
		fputs("\033[?25h\033[?1049l", stdout);
		fflush(stdout);
	}
	if (s->raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &s->saved);
	for (size_t i = 0; i < 4; i++)
		sigaction(watch_signals[i], &s->old[i], NULL);
}

/*
 * Wait up to ms for a key: returns 1 when q was pressed, 0 when the time
 * is up or a signal came (watch_stop / watch_resized say which).
 */
static int
screen_wait(const Screen *s, int64_t ms)
{
	int64_t end = ctl_monotonic_ns() + ms * 1000000;

	while (!watch_stop && !watch_resized) {
		int64_t left = (end - ctl_monotonic_ns()) / 1000000;
		struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
		char ch;
		int n;

		if (left <= 0)
			return 0;
		n = poll(&p, s->raw ? 1 : 0, left > 60000 ? 60000 : (int)left);
		if (n <= 0)
			continue; /* time up (checked above) or EINTR */
		if (read(STDIN_FILENO, &ch, 1) == 1 && (ch == 'q' || ch == 'Q'))
			return 1;
		if (p.revents & (POLLHUP | POLLERR))
			return 1;
	}
	return 0;
}

/* One line of the screen: cut to the width, rest of the line cleared. */
static void
screen_line(const Screen *s, const char *text)
{
	fprintf(stdout, "%.*s%s\n", (int)s->width, text,
		s->tty ? "\033[K" : "");
}

static uint64_t
counter_rate(const mbox_broker_stats *st, const char *name)
{
	const mbox_counter *c =
		mbox_counter_find(st->counters, st->n_counters, name);
	return c ? c->rate_milli : 0;
}

/* The three heading lines: the broker, its rates, its messages. */
static void
watch_head(const Screen *s, const mbox_broker_stats *st, int64_t now)
{
	char line[512], up[CELL_LEN], sz[CELL_LEN], r[6][CELL_LEN], clock[16];
	time_t t = (time_t)(now / 1000000000);
	struct tm tm;

	ctl_fmt_age(up, sizeof(up), st->started_ns, now);
	ctl_fmt_size(sz, sizeof(sz), st->store_bytes);
	if (localtime_r(&t, &tm))
		strftime(clock, sizeof(clock), "%H:%M:%S", &tm);
	else
		snprintf(clock, sizeof(clock), "?");
	snprintf(line, sizeof(line),
		 "%s  up %s  %" PRIu64 " conns  %" PRIu64 " mailboxes  %s%s",
		 st->server, up, st->connections, st->mailboxes, clock,
		 st->disk_full ? "  DISK FULL" : "");
	screen_line(s, line);
	fmt_rate(r[0], CELL_LEN, counter_rate(st, "posted"));
	fmt_rate(r[1], CELL_LEN, counter_rate(st, "delivered"));
	fmt_rate(r[2], CELL_LEN, counter_rate(st, "acked"));
	fmt_rate(r[3], CELL_LEN, counter_rate(st, "nacked"));
	fmt_rate(r[4], CELL_LEN, counter_rate(st, "redelivered"));
	fmt_rate(r[5], CELL_LEN,
		 counter_rate(st, "dead_rejected") +
			 counter_rate(st, "dead_max_deliveries") +
			 counter_rate(st, "dead_expired"));
	snprintf(line, sizeof(line),
		 "per sec: posted %s  delivered %s  acked %s  nacked %s  "
		 "redeliv %s  dead %s",
		 r[0], r[1], r[2], r[3], r[4], r[5]);
	screen_line(s, line);
	ctl_fmt_size(r[0], CELL_LEN, st->bytes);
	snprintf(line, sizeof(line),
		 "messages: ready %" PRIu64 "  leased %" PRIu64
		 "  delayed %" PRIu64 "  dead %" PRIu64 "  bytes %s  store %s",
		 st->ready, st->leased, st->delayed, st->dead, r[0], sz);
	screen_line(s, line);
}

/* The mailboxes, as many as fit in rows lines (heading included). */
static int
watch_table(const Screen *s, const mbox_mailbox_info *list, size_t n,
	    size_t rows, int64_t now)
{
	static const char *const head[] = {
		"NAME", "READY", "LEASED", "DELAYED",
		"DEAD", "BYTES", "OLDEST", "CONSUMERS",
	};
	size_t shown = n, i;
	Table t;

	if (rows < 2)
		rows = 2;
	/* Keep a line for "... N more" when not all fit. */
	if (n + 1 > rows)
		shown = rows - 2;
	if (table_init(&t, "lrrrrrrr", head) < 0)
		return -ENOMEM;
	for (i = 0; i < shown; i++) {
		char(*row)[CELL_LEN] = table_row(&t);

		if (!row) {
			table_free(&t);
			return -ENOMEM;
		}
		snprintf(row[0], CELL_LEN, "%s", list[i].name);
		snprintf(row[1], CELL_LEN, "%" PRIu64, list[i].ready);
		snprintf(row[2], CELL_LEN, "%" PRIu64, list[i].leased);
		snprintf(row[3], CELL_LEN, "%" PRIu64, list[i].delayed);
		snprintf(row[4], CELL_LEN, "%" PRIu64, list[i].dead);
		ctl_fmt_size(row[5], CELL_LEN, list[i].bytes);
		ctl_fmt_age(row[6], CELL_LEN, list[i].oldest_ns, now);
		snprintf(row[7], CELL_LEN, "%" PRIu64, list[i].consumers);
	}
	/* Names too long for the screen are cut in the table itself, so
	 * the number columns stay in view. */
	table_print(stdout, &t, t.rows, s->width, s->tty ? "\033[K\n" : "\n");
	if (shown < n) {
		char more[64];
		snprintf(more, sizeof(more), "... %zu more", n - shown);
		screen_line(s, more);
	}
	table_free(&t);
	return 0;
}

/* Fetch and draw one frame. Returns 0 or a negative error (reported). */
static int
watch_draw(Ctl *c, const Screen *s, uint64_t interval_ms)
{
	mbox_broker_stats *st = NULL;
	mbox_mailbox_info *list = NULL;
	size_t n = 0, rows;
	int64_t now;
	int r;

	r = mbox_stats(c->m, &st);
	if (r == 0)
		r = mbox_list(c->m, &list, &n);
	if (r < 0) {
		mbox_stats_free(st);
		return r;
	}
	now = ctl_realtime_ns();
	if (s->tty)
		fputs("\033[H", stdout);
	watch_head(s, st, now);
	screen_line(s, "");
	/* 4 heading lines and the footer (tty only) stay; the rest is
	 * the table. */
	rows = s->height > 6 ? s->height - 4 - (s->tty ? 1 : 0) : 2;
	r = watch_table(s, list, n, rows, now);
	if (s->tty) {
		char foot[96];
		snprintf(foot, sizeof(foot),
			 "q: quit   refresh every %.1f s   mboxctl watch",
			 (double)interval_ms / 1000.0);
		fputs("\033[J", stdout); /* clear what the last frame left */
		fprintf(stdout, "\033[%zu;1H\033[7m%.*s\033[0m\033[K",
			s->height, (int)s->width, foot);
	}
	fflush(stdout);
	mbox_list_free(list, n);
	mbox_stats_free(st);
	return r;
}

int
cmd_watch(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"interval", required_argument, NULL, 'i'},
		{"count", required_argument, NULL, 'n'},
		CTL_COMMON_OPTIONS,
		{0},
	};
	uint64_t interval_ms = 1000, count = 0, done = 0;
	Screen s;
	int opt, r = 0;

	while ((opt = getopt_long(argc, argv, ":S:hi:n:", opts, NULL)) != -1) {
		switch (opt) {
		case 'i':
			if (ctl_parse_duration_ms(optarg, &interval_ms) < 0 ||
			    interval_ms < 100 || interval_ms > 86400000)
				return ctl_usage(c,
						 "bad interval '%s' (0.1 s to "
						 "one day)",
						 optarg);
			break;
		case 'n':
			if (ctl_parse_u64(optarg, &count) < 0 || count == 0)
				return ctl_usage(c, "bad count '%s'", optarg);
			break;
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(watch_help, stdout);
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
	memset(&s, 0, sizeof(s));
	watch_stop = watch_resized = 0;
	screen_open(&s);
	/* Piped: one snapshot unless --count asks for more. */
	if (!s.tty && count == 0)
		count = 1;
	for (;;) {
		if (!s.tty && done)
			putchar('\n');
		r = watch_draw(c, &s, interval_ms);
		if (r < 0 || ++done == count || watch_stop)
			break;
		if (screen_wait(&s, (int64_t)interval_ms) == 1 || watch_stop)
			break;
		if (watch_resized) {
			watch_resized = 0;
			screen_size(&s);
			if (s.tty)
				fputs("\033[2J", stdout);
		}
	}
	screen_close(&s);
	if (r < 0)
		return ctl_fail(c, r, NULL);
	/* Ctrl-C is the expected way out of a live view. */
	return flush_stdout(c, CTL_EXIT_OK);
}
