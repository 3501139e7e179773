/*
 * inspect.c - `mboxctl ls` and `mboxctl peek`: read-only views.
 *
 * Tables are laid out after everything is fetched, so columns fit the
 * widest value; --json prints one object per line with raw numbers for
 * scripts instead.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mbox-proto.h"

#include "client/mboxctl/inspect.h"
#include "client/mboxctl/json.h"

#define NUM_LEN 24 /* a u64 in decimal, NUL included */

static const char ls_help[] =
	"Usage: mboxctl ls [OPTIONS]\n"
	"\n"
	"List every mailbox you may see, with its counters:\n"
	"  READY      messages deliverable now\n"
	"  LEASED     messages received and not acked yet\n"
	"  DELAYED    messages waiting for their delay\n"
	"  DEAD       dead messages (see mboxctl peek --dead)\n"
	"  BYTES      payload bytes stored\n"
	"  OLDEST     age of the oldest message\n"
	"  CONSUMERS  connections waiting on or subscribed to it\n"
	"\n"
	"Options:\n"
	"  -j, --json            one JSON object per mailbox and line, raw "
	"numbers\n" CTL_COMMON_HELP;

static void
ls_json(const mbox_mailbox_info *in)
{
	fputs("{\"name\":", stdout);
	json_cstring(stdout, in->name);
	printf(",\"ready\":%" PRIu64 ",\"leased\":%" PRIu64
	       ",\"delayed\":%" PRIu64 ",\"dead\":%" PRIu64
	       ",\"bytes\":%" PRIu64 ",\"oldest_ns\":%" PRId64
	       ",\"consumers\":%" PRIu64 ",\"owner_uid\":%" PRIu32
	       ",\"gid\":%" PRIu32 ",\"mode\":\"%04" PRIo32 "\"}\n",
	       in->ready, in->leased, in->delayed, in->dead, in->bytes,
	       in->oldest_ns, in->consumers, in->owner_uid, in->gid, in->mode);
}

enum { LS_COLS = 8 };

static size_t
max_size(size_t a, size_t b)
{
	return a > b ? a : b;
}

int
cmd_ls(Ctl *c, int argc, char **argv)
{
	static const char *const head[LS_COLS] = {
		"NAME", "READY", "LEASED", "DELAYED",
		"DEAD", "BYTES", "OLDEST", "CONSUMERS",
	};
	mbox_mailbox_info *list = NULL;
	char(*cells)[LS_COLS][NUM_LEN] = NULL;
	size_t width[LS_COLS], n, i, k;
	bool json = false;
	int64_t now;
	int r;

	r = ctl_parse_simple(c, argc, argv, ls_help, &json);
	if (r >= 0)
		return r;
	if (optind < argc)
		return ctl_usage(c, "unexpected argument '%s'", argv[optind]);

	r = ctl_connect(c);
	if (r)
		return r;
	r = mbox_list(c->m, &list, &n);
	if (r < 0)
		return ctl_fail(c, r, NULL);
	if (json) {
		for (i = 0; i < n; i++)
			ls_json(&list[i]);
		goto out;
	}

	cells = calloc(n ? n : 1, sizeof(*cells));
	if (!cells) {
		r = ctl_error(c, "out of memory");
		goto out;
	}
	now = ctl_realtime_ns();
	for (k = 0; k < LS_COLS; k++)
		width[k] = strlen(head[k]);
	for (i = 0; i < n; i++) {
		const mbox_mailbox_info *in = &list[i];

		snprintf(cells[i][1], NUM_LEN, "%" PRIu64, in->ready);
		snprintf(cells[i][2], NUM_LEN, "%" PRIu64, in->leased);
		snprintf(cells[i][3], NUM_LEN, "%" PRIu64, in->delayed);
		snprintf(cells[i][4], NUM_LEN, "%" PRIu64, in->dead);
		ctl_fmt_size(cells[i][5], NUM_LEN, in->bytes);
		ctl_fmt_age(cells[i][6], NUM_LEN, in->oldest_ns, now);
		snprintf(cells[i][7], NUM_LEN, "%" PRIu64, in->consumers);
		width[0] = max_size(width[0], strlen(in->name));
		for (k = 1; k < LS_COLS; k++)
			width[k] = max_size(width[k], strlen(cells[i][k]));
	}
	printf("%-*s", (int)width[0], head[0]);
	for (k = 1; k < LS_COLS; k++)
		printf("  %*s", (int)width[k], head[k]);
	putchar('\n');
	for (i = 0; i < n; i++) {
		printf("%-*s", (int)width[0], list[i].name);
		for (k = 1; k < LS_COLS; k++)
			printf("  %*s", (int)width[k], cells[i][k]);
		putchar('\n');
	}
out:
	free(cells);
	mbox_list_free(list, n);
	if (r == 0 && fflush(stdout) != 0)
		r = ctl_error(c, "cannot write to standard output: %s",
			      strerror(errno));
	return r;
}

static const char peek_help[] =
	"Usage: mboxctl peek MAILBOX [OPTIONS]\n"
	"\n"
	"Show messages of MAILBOX without taking them: id, age,\n"
	"priority, deliveries so far, sender (uid/pid/name), size and the "
	"first\n"
	"bytes of the payload.\n"
	"\n"
	"Options:\n"
	"  -n, --count N         how many messages (default 10)\n"
	"      --dead            the dead messages instead, with the reason\n"
	"      --from ID         start at message id ID\n"
	"  -j, --json            one JSON object per line per message (as "
	"recv\n"
	"                        --json, plus dead_reason for dead "
	"messages)\n" CTL_COMMON_HELP;

enum {
	OPT_DEAD = 256,
	OPT_FROM,
};

#define PEEK_DEFAULT	10
#define PREVIEW_BYTES	32
#define PREVIEW_LEN	(PREVIEW_BYTES * 4 + 8)
#define PEEK_COLS	8
#define PEEK_COL_REASON 4
#define PEEK_COL_SENDER 5
#define PEEK_COL_DATA	7

/* The first bytes of a payload, quoted and escaped C-style. */
static void
peek_preview(char *out, const uint8_t *p, size_t len)
{
	size_t i, o = 0;

	out[o++] = '"';
	for (i = 0; i < len && i < PREVIEW_BYTES; i++) {
		uint8_t ch = p[i];

		switch (ch) {
		case '\n':
			o += (size_t)sprintf(out + o, "\\n");
			break;
		case '\t':
			o += (size_t)sprintf(out + o, "\\t");
			break;
		case '\r':
			o += (size_t)sprintf(out + o, "\\r");
			break;
		case '"':
		case '\\':
			out[o++] = '\\';
			out[o++] = (char)ch;
			break;
		default:
			if (ch >= 0x20 && ch < 0x7f)
				out[o++] = (char)ch;
			else
				o += (size_t)sprintf(out + o, "\\x%02x", ch);
			break;
		}
	}
	out[o++] = '"';
	if (len > PREVIEW_BYTES)
		o += (size_t)sprintf(out + o, "...");
	out[o] = '\0';
}

/* Print one row; column 4 (REASON) only for dead messages. */
static void
peek_row(char cell[PEEK_COLS][PREVIEW_LEN], const size_t *width, bool dead)
{
	size_t k;

	for (k = 0; k < PEEK_COLS; k++) {
		if (k == PEEK_COL_REASON && !dead)
			continue;
		if (k == PEEK_COL_DATA)
			printf("  %s", cell[k]);
		else if (k == 0)
			printf("%-*s", (int)width[k], cell[k]);
		else if (k == PEEK_COL_REASON || k == PEEK_COL_SENDER)
			printf("  %-*s", (int)width[k], cell[k]);
		else
			printf("  %*s", (int)width[k], cell[k]);
	}
	putchar('\n');
}

static void
peek_cells(char cell[PEEK_COLS][PREVIEW_LEN], const mbox_msg *m, int64_t now)
{
	const char *reason = mbox_msg_dead_reason(m);
	const void *data;
	size_t len;

	data = mbox_msg_data(m, &len);
	snprintf(cell[0], PREVIEW_LEN, "%" PRIu64, mbox_msg_id(m));
	ctl_fmt_age(cell[1], PREVIEW_LEN, mbox_msg_time_ns(m), now);
	snprintf(cell[2], PREVIEW_LEN, "%u", mbox_msg_priority(m));
	snprintf(cell[3], PREVIEW_LEN, "%" PRIu32, mbox_msg_deliveries(m));
	snprintf(cell[PEEK_COL_REASON], PREVIEW_LEN, "%s",
		 reason ? reason : "-");
	snprintf(cell[PEEK_COL_SENDER], PREVIEW_LEN, "%lu/%ld/%.32s",
		 (unsigned long)mbox_msg_sender_uid(m),
		 (long)mbox_msg_sender_pid(m), mbox_msg_sender_name(m));
	ctl_fmt_size(cell[6], PREVIEW_LEN, len);
	peek_preview(cell[PEEK_COL_DATA], data, len);
}

/* Cells are built twice (measure, then print) rather than stored. */
static void
peek_table(mbox_msg **msgs, size_t n, bool dead)
{
	static const char *const head[PEEK_COLS] = {
		"ID",	  "AGE",	  "PRI",  "DELIV",
		"REASON", "UID/PID/NAME", "SIZE", "DATA",
	};
	char cell[PEEK_COLS][PREVIEW_LEN];
	size_t width[PEEK_COLS], i, k;
	int64_t now = ctl_realtime_ns();

	for (k = 0; k < PEEK_COLS; k++) {
		snprintf(cell[k], PREVIEW_LEN, "%s", head[k]);
		width[k] = strlen(head[k]);
	}
	for (i = 0; i < n; i++) {
		peek_cells(cell, msgs[i], now);
		for (k = 0; k < PEEK_COLS; k++)
			width[k] = max_size(width[k], strlen(cell[k]));
	}
	for (k = 0; k < PEEK_COLS; k++)
		snprintf(cell[k], PREVIEW_LEN, "%s", head[k]);
	peek_row(cell, width, dead);
	for (i = 0; i < n; i++) {
		peek_cells(cell, msgs[i], now);
		peek_row(cell, width, dead);
	}
}

int
cmd_peek(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"count", required_argument, NULL, 'n'},
		{"dead", no_argument, NULL, OPT_DEAD},
		{"from", required_argument, NULL, OPT_FROM},
		{"json", no_argument, NULL, 'j'},
		CTL_COMMON_OPTIONS,
		{0},
	};
	mbox_msg **msgs = NULL;
	uint64_t count = PEEK_DEFAULT, from = 0, prev;
	size_t got = 0, n, i;
	unsigned flags = 0;
	bool json = false;
	int opt, r = CTL_EXIT_OK;

	while ((opt = getopt_long(argc, argv, ":S:hn:j", opts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (ctl_parse_u64(optarg, &count) < 0 || count == 0 ||
			    count > SIZE_MAX / sizeof(*msgs))
				return ctl_usage(c, "bad count '%s'", optarg);
			break;
		case OPT_DEAD:
			flags |= MBOX_PEEK_DEAD_ONLY;
			break;
		case OPT_FROM:
			if (ctl_parse_u64(optarg, &from) < 0)
				return ctl_usage(c, "bad id '%s'", optarg);
			break;
		case 'j':
			json = true;
			break;
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(peek_help, stdout);
			return CTL_EXIT_OK;
		default:
			return ctl_bad_option(c, opt, argv);
		}
	}
	if ((r = ctl_take_mailbox(c, argc, argv, "MAILBOX")) >= 0 ||
	    (r = ctl_no_more(c, argc, argv)) >= 0)
		return r;

	r = ctl_connect(c);
	if (r)
		return r;
	/* Fetch all first: the table's columns depend on every row. */
	while (got < count) {
		size_t want = count - got > MBOX_RECV_MAX
				      ? MBOX_RECV_MAX
				      : (size_t)(count - got);
		mbox_msg **p = realloc(msgs, (got + want) * sizeof(*msgs));

		if (!p) {
			r = ctl_error(c, "out of memory");
			goto out;
		}
		msgs = p;
		r = mbox_peek(c->m, c->target, want, from, flags, msgs + got,
			      &n);
		if (r < 0) {
			r = ctl_fail(c, r, NULL);
			goto out;
		}
		if (n == 0)
			break;
		/* A short batch is not the end (replies stop before
		 * MAX_FRAME): go on after the highest id seen. */
		prev = from;
		for (i = got; i < got + n; i++)
			if (mbox_msg_id(msgs[i]) >= from)
				from = mbox_msg_id(msgs[i]) + 1;
		got += n;
		if (from == prev)
			break;
	}
	if (json) {
		for (i = 0; i < got; i++)
			json_msg(stdout, msgs[i]);
	} else if (got) {
		peek_table(msgs, got, flags & MBOX_PEEK_DEAD_ONLY);
	}
	if (fflush(stdout) != 0)
		r = ctl_error(c, "cannot write to standard output: %s",
			      strerror(errno));
out:
	for (i = 0; i < got; i++)
		mbox_msg_free(msgs[i]);
	free(msgs);
	return r;
}
