/*
 * recv.c - `mboxctl recv MAILBOX [-n N] [--wait SECS]`.
 *
 * Returns as soon as N messages came or SECS passed, whichever is first:
 * it loops on mbox_recv with the remaining count (at most MBOX_RECV_MAX a
 * time) and the remaining time; the broker waits only for the first
 * message of each batch, so ready messages come at once.
 *
 * At-least-once to the reader: a batch is printed and flushed first and
 * acked after; if writing fails nothing is acked, and closing the
 * connection hands the messages back to the broker. --no-ack never acks,
 * so the messages stay leased until mboxctl exits.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mbox-proto.h"

#include "client/mboxctl/json.h"
#include "client/mboxctl/recv.h"

static const char recv_help[] =
	"Usage: mboxctl recv MAILBOX [OPTIONS]\n"
	"\n"
	"Receive up to N messages from MAILBOX, print them and acknowledge "
	"them\n"
	"(remove them for good). Returns as soon as N messages came or the "
	"wait\n"
	"ran out, whichever is first; exit code 3 if none came.\n"
	"\n"
	"Options:\n"
	"  -n, --count N         how many messages (default 1)\n"
	"  -w, --wait SECS       how long to wait for messages (default 0: "
	"take\n"
	"                        only what is ready); 'forever' or -1 waits "
	"for\n"
	"                        as long as it takes\n"
	"      --lease SECS      lease length (default: the mailbox's)\n"
	"      --no-ack          do not acknowledge: the messages stay leased\n"
	"                        until mboxctl exits, then are delivered "
	"again\n"
	"  -j, --json            one JSON object per line per message, with "
	"its\n"
	"                        id, sender, time, headers and data (or "
	"data_base64\n"
	"                        when not UTF-8)\n"
	"      --raw             write exactly one message's payload, nothing\n"
	"                        added (implies -n 1)\n" CTL_COMMON_HELP "\n"
	"Without --json or --raw each payload is printed followed by a "
	"newline.\n"
	"SECS is a decimal number with an optional unit: ms, s, m, h "
	"(default s).\n";

enum {
	OPT_LEASE = 256,
	OPT_NO_ACK,
	OPT_RAW,
};

enum recv_format {
	FORMAT_LINES,
	FORMAT_JSON,
	FORMAT_RAW,
};

static int
recv_print(const mbox_msg *msg, enum recv_format format)
{
	const void *data;
	size_t len;

	switch (format) {
	case FORMAT_JSON:
		json_msg(stdout, msg);
		break;
	case FORMAT_RAW:
		data = mbox_msg_data(msg, &len);
		fwrite(data, 1, len, stdout);
		break;
	case FORMAT_LINES:
		data = mbox_msg_data(msg, &len);
		fwrite(data, 1, len, stdout);
		putchar('\n');
		break;
	}
	return ferror(stdout) ? -EIO : 0;
}

int
cmd_recv(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"count", required_argument, NULL, 'n'},
		{"wait", required_argument, NULL, 'w'},
		{"lease", required_argument, NULL, OPT_LEASE},
		{"no-ack", no_argument, NULL, OPT_NO_ACK},
		{"json", no_argument, NULL, 'j'},
		{"raw", no_argument, NULL, OPT_RAW},
		CTL_COMMON_OPTIONS,
		{0},
	};
	enum recv_format format = FORMAT_LINES;
	mbox_msg *msgs[MBOX_RECV_MAX];
	uint64_t ids[MBOX_RECV_MAX];
	uint64_t count = 1, got = 0, lease_ms = 0, v;
	int64_t wait_ms = 0, deadline = 0;
	bool count_given = false, no_ack = false, json = false, raw = false;
	size_t n, i;
	int opt, r = CTL_EXIT_OK;

	while ((opt = getopt_long(argc, argv, ":S:hn:w:j", opts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (ctl_parse_u64(optarg, &count) < 0 || count == 0)
				return ctl_usage(c, "bad count '%s'", optarg);
			count_given = true;
			break;
		case 'w':
			if (strcmp(optarg, "forever") == 0 ||
			    strcmp(optarg, "inf") == 0 ||
			    strcmp(optarg, "-1") == 0) {
				wait_ms = -1;
				break;
			}
			if (ctl_parse_duration_ms(optarg, &v) < 0 ||
			    v > INT64_MAX / 1000000)
				return ctl_usage(c, "bad duration '%s'",
						 optarg);
			wait_ms = (int64_t)v;
			break;
		case OPT_LEASE:
			if (ctl_parse_duration_ms(optarg, &lease_ms) < 0 ||
			    lease_ms == 0)
				return ctl_usage(c, "bad lease '%s'", optarg);
			break;
		case OPT_NO_ACK:
			no_ack = true;
			break;
		case 'j':
			json = true;
			break;
		case OPT_RAW:
			raw = true;
			break;
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(recv_help, stdout);
			return CTL_EXIT_OK;
		default:
			return ctl_bad_option(c, opt, argv);
		}
	}
	if (optind >= argc)
		return ctl_usage(c, "which mailbox? (mboxctl recv MAILBOX)");
	if (argc - optind > 1)
		return ctl_usage(c, "unexpected argument '%s'",
				 argv[optind + 1]);
	c->target = argv[optind];
	if (raw && json)
		return ctl_usage(c, "--raw and --json exclude each other");
	if (raw && count_given && count != 1)
		return ctl_usage(c, "--raw writes exactly one message (-n 1)");
	if (raw) {
		format = FORMAT_RAW;
		count = 1;
	} else if (json) {
		format = FORMAT_JSON;
	}

	r = ctl_connect(c);
	if (r)
		return r;
	if (wait_ms > 0)
		deadline = ctl_monotonic_ns() + wait_ms * 1000000;

	while (got < count) {
		size_t want = count - got > MBOX_RECV_MAX
				      ? MBOX_RECV_MAX
				      : (size_t)(count - got);
		int64_t rem = wait_ms;

		if (wait_ms > 0) {
			/* Round up: never ask for 0 while time is left. */
			rem = (deadline - ctl_monotonic_ns() + 999999) /
			      1000000;
			if (rem < 0)
				rem = 0;
		}
		r = mbox_recv(c->m, c->target, want, rem, lease_ms, msgs, &n);
		if (r < 0)
			return ctl_fail(c, r, got ? "receive failed" : NULL);
		if (n == 0)
			break;

		r = 0;
		for (i = 0; i < n; i++) {
			if (r == 0)
				r = recv_print(msgs[i], format);
			ids[i] = mbox_msg_id(msgs[i]);
			mbox_msg_free(msgs[i]);
		}
		if (r == 0 && fflush(stdout) != 0)
			r = -EIO;
		if (r < 0)
			/* Not acked: the broker delivers them again. */
			return ctl_error(c,
					 "cannot write to standard output: "
					 "%s (messages not acked)",
					 strerror(errno));
		got += n;
		if (!no_ack) {
			r = mbox_ack(c->m, ids, n);
			if (r < 0)
				return ctl_fail(c, r,
						"printed but not acked (they "
						"will be delivered again)");
		}
	}
	return got ? CTL_EXIT_OK : CTL_EXIT_EMPTY;
}
