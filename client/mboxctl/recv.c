/*
 * recv.c - `mboxctl recv MAILBOX [-n N] [--wait SECS]` and
 * `mboxctl subscribe MAILBOX`: taking messages out, pulled or pushed,
 * printed the same way (recv_print).
 *
 * Returns as soon as N messages came or SECS passed, whichever is first:
 * it loops on mbox_recv with the remaining count (at most MBOX_RECV_MAX a
 * time) and the remaining time; the broker waits only for the first
 * message of each batch, so ready messages come at once.
 *
 * At-least-once to the reader: a batch is printed and flushed first and
 * acked after; if writing fails nothing is acked, and closing the
 * connection hands the messages back to the broker. --no-ack never acks,
 * so the messages stay leased until mboxctl exits (Held touches them).
 *
 * subscribe prints, flushes and acks one message at a time, so at most
 * the window's worth goes back to the broker (redelivered) if it dies.
 * SIGINT and SIGTERM are blocked and read from a signalfd polled beside
 * the connection: a signal ends the run between two messages, never in
 * the middle of one, and the exit code is 0.
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
#include <sys/signalfd.h>
#include <unistd.h>

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
	"                        (touched as they run out) until mboxctl "
	"exits,\n"
	"                        then are delivered again\n"
	"  -j, --json            one JSON object per line per message, with "
	"its\n"
	"                        id, priority, deliveries, sender, time,\n"
	"                        expires_ns (ttl), lease deadline_ns, "
	"headers\n"
	"                        and data (data_base64 when not UTF-8)\n"
	"      --raw             write exactly one message's payload, nothing\n"
	"                        added (implies -n 1)\n" CTL_COMMON_HELP "\n"
	"Without --json or --raw each payload is printed followed by a "
	"newline.\n"
	"SECS is a decimal number with an optional unit: ms, s, m, h "
	"(default s).\n";

static const char subscribe_help[] =
	"Usage: mboxctl subscribe MAILBOX [OPTIONS]\n"
	"\n"
	"Have the broker push the messages of MAILBOX as they arrive; print "
	"each\n"
	"one as recv does and acknowledge it once printed. Runs until N "
	"messages\n"
	"came (-n), or until SIGINT or SIGTERM, which end it after the "
	"current\n"
	"message with exit code 0. Several subscribers of a mailbox share "
	"its\n"
	"messages, each message going to one of them.\n"
	"\n"
	"Options:\n"
	"  -n, --count N         stop after N messages (default: run until "
	"a\n"
	"                        signal)\n"
	"  -w, --wait SECS       stop after SECS; exit code 3 if nothing came\n"
	"      --window W        at most W messages pushed and not acked yet\n"
	"                        (1-1024, default 1)\n"
	"      --exclusive       only one exclusive subscriber of MAILBOX "
	"gets\n"
	"                        messages; later ones wait as standbys, in "
	"order,\n"
	"                        and take over when it goes (says 'standby' "
	"on\n"
	"                        standard error while waiting)\n"
	"      --lease SECS      lease length (default: the mailbox's)\n"
	"  -j, --json            one JSON object per line per message, as "
	"recv\n"
	"      --raw             write exactly one message's payload, nothing\n"
	"                        added (implies -n 1)\n" CTL_COMMON_HELP "\n"
	"SECS is a decimal number with an optional unit: ms, s, m, h "
	"(default s).\n";

enum {
	OPT_LEASE = 256,
	OPT_NO_ACK,
	OPT_RAW,
	OPT_WINDOW,
	OPT_EXCLUSIVE,
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

/* -w SECS: "forever", "inf" or -1 are -1 (no limit). */
static int
recv_parse_wait(const char *s, int64_t *wait_ms)
{
	uint64_t v;

	if (strcmp(s, "forever") == 0 || strcmp(s, "inf") == 0 ||
	    strcmp(s, "-1") == 0) {
		*wait_ms = -1;
		return 0;
	}
	if (ctl_parse_duration_ms(s, &v) < 0 || v > INT64_MAX / 1000000)
		return -EINVAL;
	*wait_ms = (int64_t)v;
	return 0;
}

/* The options and the operand that recv and subscribe share. */
typedef struct RecvArgs {
	uint64_t count;	   /* -n: recv's default 1, subscribe's 0 (no end) */
	int64_t wait_ms;   /* -w: -1 = no limit */
	uint64_t lease_ms; /* --lease: 0 = the mailbox's */
	bool count_given, json, raw;
	enum recv_format format; /* from -j / --raw, by recv_args_finish */
} RecvArgs;

/*
 * recv_args_option - take opt when it is one of the shared options (-n,
 * -w, --lease, -j, --raw, -S). Returns 0 when taken, -1 when it is not
 * one of them, else the exit code for a bad value.
 */
static int
recv_args_option(Ctl *c, int opt, RecvArgs *a)
{
	switch (opt) {
	case 'n':
		if (ctl_parse_u64(optarg, &a->count) < 0 || a->count == 0)
			return ctl_usage(c, "bad count '%s'", optarg);
		a->count_given = true;
		return 0;
	case 'w':
		if (recv_parse_wait(optarg, &a->wait_ms) < 0)
			return ctl_usage(c, "bad duration '%s'", optarg);
		return 0;
	case OPT_LEASE:
		if (ctl_parse_duration_ms(optarg, &a->lease_ms) < 0 ||
		    a->lease_ms == 0)
			return ctl_usage(c, "bad lease '%s'", optarg);
		return 0;
	case 'j':
		a->json = true;
		return 0;
	case OPT_RAW:
		a->raw = true;
		return 0;
	case 'S':
		c->socket = optarg;
		return 0;
	}
	return -1;
}

/*
 * recv_args_finish - after the options: the one MAILBOX operand (into
 * c->target), and --json / --raw into a format; --raw means exactly one
 * message. Then whether there is a standard output to print them to.
 */
static int
recv_args_finish(Ctl *c, int argc, char **argv, RecvArgs *a)
{
	int r;

	if ((r = ctl_take_mailbox(c, argc, argv, "MAILBOX")) >= 0 ||
	    (r = ctl_no_more(c, argc, argv)) >= 0)
		return r;
	a->format = FORMAT_LINES;
	if (a->raw && a->json)
		return ctl_usage(c, "--raw and --json exclude each other");
	if (a->raw && a->count_given && a->count != 1)
		return ctl_usage(c, "--raw writes exactly one message (-n 1)");
	if (a->raw) {
		a->format = FORMAT_RAW;
		a->count = 1;
	} else if (a->json) {
		a->format = FORMAT_JSON;
	}
	return ctl_need_stdout(c);
}

/*
 * The leases recv --no-ack holds. They must last until mboxctl exits,
 * whatever the wait: a lease that ran out would give its message to
 * another reader, or back to this one, printed twice. So each is
 * touched again when a third of its lease has gone: the rest is room
 * for a slow round of receiving and for the touches themselves.
 */
typedef struct Held {
	uint64_t *ids;
	size_t n, cap;
	int64_t renew_ns; /* CLOCK_MONOTONIC: touch them all by then */
	int64_t third_ns; /* a third of the shortest lease seen */
} Held;

/* Note that msg is held, and when its lease wants touching. */
static int
held_add(Held *h, const mbox_msg *msg)
{
	int64_t left = mbox_msg_deadline_ns(msg) - ctl_realtime_ns();
	int64_t third = left > 0 ? left / 3 : 0;
	int64_t renew = ctl_monotonic_ns() + third;

	if (h->n == h->cap) {
		size_t cap = h->cap ? 2 * h->cap : 256;
		uint64_t *ids = realloc(h->ids, cap * sizeof(*ids));

		if (!ids)
			return -ENOMEM;
		h->ids = ids;
		h->cap = cap;
	}
	h->ids[h->n++] = mbox_msg_id(msg);
	if (h->n == 1 || renew < h->renew_ns)
		h->renew_ns = renew;
	if (h->n == 1 || third < h->third_ns)
		h->third_ns = third;
	return 0;
}

/* Touch every held lease (lease_ms as recv asked, 0: each as it was
 * delivered, so each lasts as long again as the shortest seen). */
static int
held_touch(Ctl *c, Held *h, uint64_t lease_ms)
{
	for (size_t i = 0; i < h->n; i += MBOX_RECV_MAX) {
		size_t k = h->n - i < MBOX_RECV_MAX ? h->n - i : MBOX_RECV_MAX;
		int r = mbox_touch(c->m, h->ids + i, k, lease_ms, NULL);

		if (r < 0)
			return ctl_fail(c, r,
					"cannot keep the messages leased");
	}
	h->renew_ns = ctl_monotonic_ns() + h->third_ns;
	return 0;
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
	RecvArgs a = {.count = 1};
	mbox_msg *msgs[MBOX_RECV_MAX];
	uint64_t ids[MBOX_RECV_MAX];
	uint64_t got = 0;
	int64_t deadline = 0;
	Held held = {0};
	bool no_ack = false, capped;
	size_t n, i;
	int opt, r = CTL_EXIT_OK;

	while ((opt = getopt_long(argc, argv, ":S:hn:w:j", opts, NULL)) != -1) {
		r = recv_args_option(c, opt, &a);
		if (r > 0)
			return r;
		if (r == 0)
			continue;
		switch (opt) {
		case OPT_NO_ACK:
			no_ack = true;
			break;
		case 'h':
			fputs(recv_help, stdout);
			return CTL_EXIT_OK;
		default:
			return ctl_bad_option(c, opt, argv);
		}
	}
	r = recv_args_finish(c, argc, argv, &a);
	if (r)
		return r;

	r = ctl_connect(c);
	if (r)
		return r;
	if (a.wait_ms > 0)
		deadline = ctl_monotonic_ns() + a.wait_ms * 1000000;

	while (got < a.count) {
		size_t want = a.count - got > MBOX_RECV_MAX
				      ? MBOX_RECV_MAX
				      : (size_t)(a.count - got);
		int64_t rem = a.wait_ms, now = ctl_monotonic_ns();

		if (a.wait_ms > 0) {
			/* Round up: never ask for 0 while time is left. */
			rem = (deadline - now + 999999) / 1000000;
			if (rem < 0)
				rem = 0;
		}
		capped = false;
		/* Also without a wait: taking what is ready may take
		 * longer than a lease when much is. */
		if (held.n && now >= held.renew_ns) {
			r = held_touch(c, &held, a.lease_ms);
			if (r)
				goto out;
		}
		if (held.n && rem != 0) {
			int64_t until;

			/* Wake up in time for the next touch. */
			until = (held.renew_ns - ctl_monotonic_ns() + 999999) /
				1000000;
			if (until < 1)
				until = 1;
			if (rem < 0 || until < rem) {
				rem = until;
				capped = true;
			}
		}
		r = mbox_recv(c->m, c->target, want, rem, a.lease_ms, msgs, &n);
		if (r < 0) {
			r = ctl_fail(c, r, got ? "receive failed" : NULL);
			goto out;
		}
		if (n == 0) {
			if (capped)
				continue;
			break;
		}

		r = 0;
		for (i = 0; i < n; i++) {
			if (r == 0)
				r = recv_print(msgs[i], a.format);
			if (r == 0 && no_ack)
				r = held_add(&held, msgs[i]);
			ids[i] = mbox_msg_id(msgs[i]);
			mbox_msg_free(msgs[i]);
		}
		if (r == -ENOMEM) {
			r = ctl_error(c, "out of memory");
			goto out;
		}
		if (r == 0 && fflush(stdout) != 0)
			r = -EIO;
		if (r < 0) {
			/* Not acked: the broker delivers them again. */
			r = ctl_error(c,
				      "cannot write to standard output: "
				      "%s (messages not acked)",
				      strerror(errno));
			goto out;
		}
		got += n;
		if (!no_ack) {
			r = mbox_ack(c->m, ids, n);
			if (r < 0) {
				r = ctl_fail(c, r,
					     "printed but not acked (they "
					     "will be delivered again)");
				goto out;
			}
		}
	}
	r = got ? CTL_EXIT_OK : ctl_empty(c);
out:
	free(held.ids);
	return r;
}

/* One subscribe run: what to print, how many, until when. */
typedef struct SubRun {
	Ctl *c;
	enum recv_format format;
	uint64_t count;	  /* stop after this many; 0 = until a signal */
	uint64_t got;	  /* printed and acked so far */
	int64_t deadline; /* CLOCK_MONOTONIC ns to stop at; 0 = none */
	int sigfd;	  /* SIGINT, SIGTERM; -1 until sub_signals */
} SubRun;

/* Block SIGINT and SIGTERM and read them from a signalfd instead, so
 * that they are seen between messages only. */
static int
sub_signals(SubRun *s)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	s->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return s->sigfd < 0 ? -errno : 0;
}

/*
 * Wait until a pushed message can be read. Returns 1 when one can, 0
 * when a signal came or the wait ran out (*signalled says which).
 */
static int
sub_wait(SubRun *s, bool *signalled)
{
	struct pollfd pfd[2] = {
		{.fd = mbox_fd(s->c->m), .events = POLLIN},
		{.fd = s->sigfd, .events = POLLIN},
	};
	int timeout = -1, n;

	*signalled = false;
	/* The library may hold pushes it read while waiting for a reply. */
	if (mbox_pending(s->c->m))
		return 1;
	if (s->deadline) {
		int64_t rem = s->deadline - ctl_monotonic_ns();

		if (rem <= 0)
			return 0;
		/* Round up: never wake early and spin. */
		rem = (rem + 999999) / 1000000;
		timeout = rem > 86400000 ? 86400000 : (int)rem;
	}
	n = poll(pfd, 2, timeout);
	if (n < 0)
		return errno == EINTR ? 1 : -errno;
	if (pfd[1].revents) {
		*signalled = true;
		return 0;
	}
	/* A timeout ends the run only once the deadline has passed. */
	return n > 0 || !s->deadline || ctl_monotonic_ns() < s->deadline;
}

/* Print, flush, then ack one pushed message; frees it. */
static int
sub_handle(SubRun *s, mbox_msg *msg)
{
	uint64_t id = mbox_msg_id(msg);
	int r;

	/* Before the last one is acked, which would open the window: what
	 * the broker pushed then would go back redelivered, counted. */
	if (s->count && s->got + 1 == s->count)
		(void)mbox_unsubscribe(s->c->m, s->c->target); /* best effort */
	r = recv_print(msg, s->format);
	mbox_msg_free(msg);
	if (r == 0 && fflush(stdout) != 0)
		r = -EIO;
	if (r < 0)
		return ctl_error(s->c,
				 "cannot write to standard output: %s "
				 "(message %" PRIu64 " not acked)",
				 strerror(errno), id);
	s->got++;
	r = mbox_ack(s->c->m, &id, 1);
	if (r < 0)
		return ctl_fail(s->c, r,
				"printed but not acked (it will be delivered "
				"again)");
	return 0;
}

static int
sub_loop(SubRun *s)
{
	bool signalled = false;
	mbox_msg *msg;
	int r;

	while (!s->count || s->got < s->count) {
		r = sub_wait(s, &signalled);
		if (r < 0)
			return ctl_error(s->c, "poll: %s", strerror(-r));
		if (r == 0)
			break;
		r = mbox_next(s->c->m, 0, &msg);
		if (r == -ETIMEDOUT)
			continue; /* woken, but no whole message yet */
		if (r == -ENOENT) {
			/* The mailbox was deleted: the text says so. */
			s->c->enoent = "subscription ended";
			return ctl_fail(s->c, r, NULL);
		}
		if (r < 0)
			return ctl_fail(s->c, r, "subscription ended");
		r = sub_handle(s, msg);
		if (r)
			return r;
	}
	if (signalled || s->got || !s->deadline)
		return CTL_EXIT_OK;
	return ctl_empty(s->c);
}

int
cmd_subscribe(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"count", required_argument, NULL, 'n'},
		{"wait", required_argument, NULL, 'w'},
		{"window", required_argument, NULL, OPT_WINDOW},
		{"exclusive", no_argument, NULL, OPT_EXCLUSIVE},
		{"lease", required_argument, NULL, OPT_LEASE},
		{"json", no_argument, NULL, 'j'},
		{"raw", no_argument, NULL, OPT_RAW},
		CTL_COMMON_OPTIONS,
		{0},
	};
	SubRun s = {.c = c, .sigfd = -1};
	RecvArgs a = {.wait_ms = -1};
	uint64_t window = 1;
	unsigned flags = 0;
	int standby = 0, opt, r;

	while ((opt = getopt_long(argc, argv, ":S:hn:w:j", opts, NULL)) != -1) {
		r = recv_args_option(c, opt, &a);
		if (r > 0)
			return r;
		if (r == 0)
			continue;
		switch (opt) {
		case OPT_WINDOW:
			if (ctl_parse_u64(optarg, &window) < 0 || window == 0 ||
			    window > MBOX_WINDOW_MAX)
				return ctl_usage(c, "bad window '%s' (1-%u)",
						 optarg, MBOX_WINDOW_MAX);
			break;
		case OPT_EXCLUSIVE:
			flags |= MBOX_SUB_EXCLUSIVE_FLAG;
			break;
		case 'h':
			fputs(subscribe_help, stdout);
			return CTL_EXIT_OK;
		default:
			return ctl_bad_option(c, opt, argv);
		}
	}
	r = recv_args_finish(c, argc, argv, &a);
	if (r)
		return r;
	s.count = a.count;
	s.format = a.format;

	r = sub_signals(&s);
	if (r < 0) {
		r = ctl_error(c, "cannot set up signal handling: %s",
			      strerror(-r));
		goto out;
	}
	r = ctl_connect(c);
	if (r)
		goto out;
	/* More than N in flight would only come back redelivered. */
	if (s.count && window > s.count)
		window = s.count;
	r = mbox_subscribe(c->m, c->target, (unsigned)window, a.lease_ms, flags,
			   &standby);
	if (r < 0) {
		r = ctl_fail(c, r, "cannot subscribe");
		goto out;
	}
	if (standby)
		fprintf(stderr,
			"mboxctl: subscribe %s: standby: waiting to become "
			"active\n",
			c->target);
	/* The wait counts from the subscription: connecting is not part of
	 * the time the user gives the broker to deliver. */
	if (a.wait_ms >= 0)
		s.deadline = ctl_monotonic_ns() + a.wait_ms * 1000000;
	r = sub_loop(&s);
out:
	if (s.sigfd >= 0)
		close(s.sigfd);
	return r;
}
