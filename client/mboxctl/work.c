/*
 * work.c - `mboxctl work MAILBOX [-j N] -- CMD [ARG...]`: a worker loop.
 *
 * One subscription with a window of N, N commands at most. Everything
 * happens in one poll loop: a signalfd (SIGINT, SIGTERM, SIGUSR2,
 * SIGCHLD), the connection, the commands' pipes, and a timeout for the
 * next lease touch. So a command that runs for an hour keeps its lease
 * (touched every third of its lease), and a payload of many MiB is fed
 * to a command without stalling the others.
 *
 * Messages pushed while all N slots are busy (a claimed subscription may
 * have a larger window than ours) wait in a FIFO, still leased to us.
 *
 * Stopping (SIGINT/SIGTERM): unsubscribe, give back (nack, no delay)
 * what has not started, let the running commands end and settle them,
 * exit 0. Hand-off (SIGUSR2 with --handoff-exec): the same, except that
 * what has not started stays leased and the subscription stays: both go
 * into the hand-off record that the exec'd successor claims.
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

#include "client/mboxctl/work.h"

#define WORK_BACKOFF_MAX_MS 60000u
#define WORK_REJECT_EXIT    100
#define WORK_HANDOFF_MS	    30000u

static const char work_help[] =
	"Usage: mboxctl work MAILBOX [OPTIONS] -- CMD [ARG...]\n"
	"\n"
	"Run CMD (no shell) once for each message of MAILBOX: the payload on "
	"its\n"
	"standard input, the message's metadata in its environment:\n"
	"  MBOX_ID MBOX_MAILBOX MBOX_DELIVERIES MBOX_PRIORITY MBOX_SENDER_PID\n"
	"  MBOX_SENDER_UID MBOX_SENDER_GID MBOX_SENDER_NAME, and each header "
	"as\n"
	"  MBOX_HEADER_<KEY> (KEY upper-cased, other characters than A-Z 0-9\n"
	"  turned into _: reply-to is MBOX_HEADER_REPLY_TO); MBOX_SOCKET when\n"
	"  -S was given.\n"
	"CMD's standard output and error are mboxctl's. When CMD exits:\n"
	"  0                     the message is acknowledged (removed)\n"
	"  the reject code (100) the message goes to the dead list at once\n"
	"  anything else, or killed by a signal: the message is given back "
	"(nack)\n"
	"                        with a back-off of 2^(deliveries-1) s, at "
	"most 60 s\n"
	"While CMD runs its lease is touched every third of the lease.\n"
	"SIGINT or SIGTERM: take no more messages, let the running commands\n"
	"finish, settle them, exit 0.\n"
	"\n"
	"Options:\n"
	"  -j, --jobs N          run up to N commands at once (1-1024, "
	"default 1)\n"
	"      --max-deliveries N  when CMD fails on a message delivered N "
	"times,\n"
	"                        reject it instead of giving it back\n"
	"      --reject-exit CODE  the exit code that rejects (default 100)\n"
	"      --lease SECS      lease length (default: the mailbox's)\n"
	"      --once            handle one message, then exit: 0 if CMD "
	"succeeded,\n"
	"                        else CMD's exit status (128+N: killed by "
	"signal N)\n"
	"  -w, --wait SECS       with --once: wait at most SECS for a message "
	"(exit 3\n"
	"                        if none came; default: forever)\n"
	"      --handoff-exec PROG  on SIGUSR2: let the running commands "
	"finish,\n"
	"                        hand the leases and the subscription off "
	"and\n"
	"                        exec PROG with these same arguments and "
	"the\n"
	"                        token in MBOX_HANDOFF (e.g. a new "
	"mboxctl)\n" CTL_COMMON_HELP "\n"
	"With MBOX_HANDOFF set, work first claims that hand-off: it goes on "
	"where\n"
	"its predecessor stopped, nothing lost or done twice.\n"
	"SECS is a decimal number with an optional unit: ms, s, m, h "
	"(default s).\n";

enum {
	OPT_MAX_DELIVERIES = 256,
	OPT_REJECT_EXIT,
	OPT_LEASE,
	OPT_ONCE,
	OPT_HANDOFF_EXEC,
};

/* One run of the loop. */
typedef struct WorkRun {
	Ctl *c;
	const WorkOpts *o;
	Child *slots; /* o->jobs of them */
	size_t running;
	mbox_msg **queue; /* pushed, not started: FIFO */
	size_t q_head, q_len, q_cap;
	int64_t q_touch_at_ns; /* next touch of the queued leases, 0 = none */
	int sigfd;
	sigset_t sigs, oldmask; /* what sigfd reads; the mask before */
	bool stopping;		/* SIGINT/SIGTERM: no new commands */
	bool handoff;		/* SIGUSR2: no new commands, then hand off */
	bool broken;		/* the connection is gone */
	bool ended;		/* the broker ended the subscription */
	bool out_closed;	/* our stdout's reader went away */
	uint64_t started;	/* commands started */
	int once_rc;		/* --once: the outcome */
	int64_t wait_end;	/* --once: CLOCK_MONOTONIC ns; 0 = none */
	bool unsubscribed;	/* --once: after its message came */
} WorkRun;

uint64_t
work_backoff_ms(uint32_t deliveries)
{
	if (deliveries <= 1)
		return 1000;
	if (deliveries > 7)
		return WORK_BACKOFF_MAX_MS;
	return (1000u << (deliveries - 1)) > WORK_BACKOFF_MAX_MS
		       ? WORK_BACKOFF_MAX_MS
		       : 1000u << (deliveries - 1);
}

/* ---- The queue of pushed messages not started yet ---- */

static int
queue_push(WorkRun *w, mbox_msg *msg)
{
	if (w->q_head + w->q_len == w->q_cap) {
		mbox_msg **q;
		size_t cap;

		if (w->q_head > 0) {
			memmove(w->queue, w->queue + w->q_head,
				w->q_len * sizeof(*w->queue));
			w->q_head = 0;
		}
		cap = w->q_cap ? 2 * w->q_cap : 16;
		if (w->q_len < w->q_cap)
			cap = w->q_cap;
		q = realloc(w->queue, cap * sizeof(*q));
		if (!q) {
			mbox_msg_free(msg); /* leased: comes back at exit */
			return -ENOMEM;
		}
		w->queue = q;
		w->q_cap = cap;
	}
	w->queue[w->q_head + w->q_len++] = msg;
	/* Queued leases run out too (a claim's window can be larger than
	 * -j): they are touched like running ones, all in one request. */
	if (!w->q_touch_at_ns) {
		int64_t now = ctl_realtime_ns(), dl = mbox_msg_deadline_ns(msg);
		w->q_touch_at_ns = dl > now ? now + (dl - now) / 3 : now;
	}
	return 0;
}

static mbox_msg *
queue_pop(WorkRun *w)
{
	mbox_msg *msg;

	if (w->q_len == 0)
		return NULL;
	msg = w->queue[w->q_head++];
	if (--w->q_len == 0) {
		w->q_head = 0;
		w->q_touch_at_ns = 0;
	}
	return msg;
}

/* Give back what has not started, at once and uncounted beyond the
 * delivery it already had, so that other workers take it. */
static void
queue_release(WorkRun *w)
{
	mbox_msg *msg;

	while ((msg = queue_pop(w))) {
		uint64_t id = mbox_msg_id(msg);

		mbox_msg_free(msg);
		if (!w->broken)
			(void)mbox_nack(w->c->m, &id, 1, 0); /* else: at exit */
	}
}

/* Drop what has not started: it was parked by the hand-off. */
static void
queue_drop(WorkRun *w)
{
	mbox_msg *msg;

	while ((msg = queue_pop(w)))
		mbox_msg_free(msg);
}

/* ---- Settling ---- */

static WorkSettle
work_decide(const WorkRun *w, Child *ch)
{
	int code = child_exit_code(ch);

	if (w->o->finish)
		return w->o->finish(w->c, ch);
	if (code == 0)
		return WORK_ACK;
	if (w->o->reject_exit >= 0 && code == w->o->reject_exit)
		return WORK_REJECT;
	return WORK_NACK;
}

static void work_stop(WorkRun *w);

/* Is our stdout a pipe or socket whose reader has gone? */
static bool
stdout_reader_gone(void)
{
	struct pollfd p = {.fd = STDOUT_FILENO, .events = 0};

	return poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP));
}

/*
 * A command killed by SIGPIPE whose output was ours, with our reader
 * gone: every command would fail the same way, so stop.
 */
static void
work_check_reader(WorkRun *w, const Child *ch, uint64_t id)
{
	if (child_exit_code(ch) != 128 + SIGPIPE || w->o->io.capture ||
	    w->out_closed || !stdout_reader_gone())
		return;
	w->out_closed = true;
	work_stop(w);
	fprintf(stderr,
		"mboxctl: %s %s: standard output is closed (its reader went "
		"away): stopping; message %" PRIu64 " goes back to the "
		"mailbox\n",
		w->c->verb, w->c->target, id);
}

/* Say why a message is given back: a failing command would otherwise
 * retry unseen. */
static void
work_say_failed(WorkRun *w, const Child *ch, uint64_t id, uint32_t deliveries)
{
	int code = child_exit_code(ch);
	char how[64];

	if (w->out_closed)
		return;
	if (code > 128)
		snprintf(how, sizeof(how), "was killed by signal %d",
			 code - 128);
	else
		snprintf(how, sizeof(how), "exited with status %d", code);
	fprintf(stderr,
		"mboxctl: %s %s: message %" PRIu64 ": the command %s "
		"(delivery %" PRIu32 "); given back, retried after %.3g s\n",
		w->c->verb, w->c->target, id, how, deliveries,
		(double)work_backoff_ms(deliveries) / 1000);
}

static void
work_settle(WorkRun *w, Child *ch)
{
	uint32_t deliveries = mbox_msg_deliveries(ch->msg);
	uint64_t id = mbox_msg_id(ch->msg);
	WorkSettle s = work_decide(w, ch);
	const char *what = "ack";
	int r;

	/* First: a reader gone stops us, whatever the count says. */
	if (s == WORK_NACK && !w->o->finish)
		work_check_reader(w, ch, id);
	if (s == WORK_NACK && w->o->max_deliveries && !w->out_closed &&
	    deliveries >= w->o->max_deliveries) {
		fprintf(stderr,
			"mboxctl: %s %s: message %" PRIu64 " failed on "
			"delivery %" PRIu32 " of %" PRIu32
			": moving it to the dead list\n",
			w->c->verb, w->c->target, id, deliveries,
			w->o->max_deliveries);
		s = WORK_REJECT;
	}
	if (s == WORK_NACK && !w->o->finish)
		work_say_failed(w, ch, id, deliveries);
	if (w->o->once)
		w->once_rc = s == WORK_ACK ? 0 : child_exit_code(ch);
	if (w->broken) {
		/* The broker gives it back by itself: not acknowledged. */
		if (w->o->once && s == WORK_ACK)
			w->once_rc = CTL_EXIT_ERROR;
		return;
	}
	switch (s) {
	case WORK_ACK:
		r = mbox_ack(w->c->m, &id, 1);
		break;
	case WORK_REJECT:
		what = "reject";
		r = mbox_reject(w->c->m, &id, 1);
		break;
	default:
		what = "nack";
		/* A command killed because our reader left did not fail
		 * on the message: back at once, for another worker. */
		r = mbox_nack(w->c->m, &id, 1,
			      w->out_closed ? 0 : work_backoff_ms(deliveries));
		break;
	}
	if (w->o->once && s == WORK_ACK && r < 0)
		w->once_rc = CTL_EXIT_ERROR; /* --once: 0 means acknowledged */
	if (r == -ESTALE)
		fprintf(stderr,
			"mboxctl: %s %s: cannot %s message %" PRIu64
			": its lease was lost (it is or was delivered "
			"again)\n",
			w->c->verb, w->c->target, what, id);
	else if (r < 0)
		ctl_fail(w->c, r, what);
	if (r == -ECONNRESET || r == -EPIPE)
		w->broken = true;
}

/* ---- Starting commands and touching their leases ---- */

static void
work_touch_plan(Child *ch, int64_t deadline_ns)
{
	int64_t now = ctl_realtime_ns();

	/* A third of what is left: two more tries before it runs out. */
	ch->touch_at_ns =
		deadline_ns > now ? now + (deadline_ns - now) / 3 : now;
}

static void
work_touch_due(WorkRun *w)
{
	int64_t now = ctl_realtime_ns();
	size_t i;

	for (i = 0; i < w->o->jobs && !w->broken; i++) {
		Child *ch = &w->slots[i];
		uint64_t id;
		int64_t deadline;
		int r;

		if (!ch->msg || ch->lease_lost || ch->touch_at_ns > now)
			continue;
		id = mbox_msg_id(ch->msg);
		r = mbox_touch(w->c->m, &id, 1, w->o->lease_ms, &deadline);
		if (r == 0) {
			work_touch_plan(ch, deadline);
			continue;
		}
		ch->lease_lost = true;
		if (r == -ESTALE)
			fprintf(stderr,
				"mboxctl: %s %s: the lease of message "
				"%" PRIu64 " ran out while its command runs; "
				"it may be delivered again\n",
				w->c->verb, w->c->target, id);
		else
			ctl_fail(w->c, r, "touch");
		if (r == -ECONNRESET || r == -EPIPE)
			w->broken = true;
	}
}

/* Touch every queued lease at once; a failure only means some may be
 * delivered again (never lost), as for a running command. */
static void
work_touch_queue(WorkRun *w)
{
	int64_t now = ctl_realtime_ns(), deadline = 0;
	uint64_t *ids;
	int r;

	if (!w->q_len || w->broken || w->q_touch_at_ns > now)
		return;
	ids = calloc(w->q_len, sizeof(*ids));
	if (!ids)
		return;
	for (size_t i = 0; i < w->q_len; i++)
		ids[i] = mbox_msg_id(w->queue[w->q_head + i]);
	r = mbox_touch(w->c->m, ids, w->q_len, w->o->lease_ms, &deadline);
	free(ids);
	if (r == 0) {
		w->q_touch_at_ns =
			deadline > now ? now + (deadline - now) / 3 : now;
		return;
	}
	/* Not again for this queue: it would fail the same way. */
	w->q_touch_at_ns = INT64_MAX;
	if (r == -ECONNRESET || r == -EPIPE)
		w->broken = true;
	else
		ctl_fail(w->c, r, "touch of the messages not started yet");
}

static bool
work_may_start(const WorkRun *w)
{
	if (w->stopping || w->handoff || w->broken)
		return false;
	return !(w->o->once && w->started > 0);
}

static void
work_start_ready(WorkRun *w)
{
	size_t i;

	for (i = 0; i < w->o->jobs && w->q_len && work_may_start(w); i++) {
		Child *ch = &w->slots[i];
		mbox_msg *msg;
		uint64_t id;
		int r;

		if (ch->msg)
			continue;
		msg = queue_pop(w);
		id = mbox_msg_id(msg);
		if (w->o->accept && !w->o->accept(w->c, msg)) {
			mbox_msg_free(msg);
			r = mbox_reject(w->c->m, &id, 1);
			if (r < 0)
				ctl_fail(w->c, r, "reject");
			i--; /* this slot is still free */
			continue;
		}
		r = child_start(ch, w->o->cmd, msg, &w->o->io);
		if (r < 0) {
			child_clear(ch);
			ctl_error(w->c, "cannot run %s: %s", w->o->cmd[0],
				  strerror(-r));
			(void)mbox_nack(w->c->m, &id, 1, 1000);
			continue;
		}
		work_touch_plan(ch, mbox_msg_deadline_ns(ch->msg));
		w->running++;
		w->started++;
	}
	/* --once: one message is all we take; later pushes would only
	 * come back counted as delivered. */
	if (w->o->once && w->started && !w->unsubscribed && !w->broken) {
		(void)mbox_unsubscribe(w->c->m, w->c->target);
		w->unsubscribed = true;
	}
}

/* Reap, read and settle every command that is done. */
static void
work_collect(WorkRun *w)
{
	size_t i;

	for (i = 0; i < w->o->jobs; i++) {
		Child *ch = &w->slots[i];

		if (!ch->msg)
			continue;
		child_reap(ch);
		if (!child_done(ch))
			continue;
		work_settle(w, ch);
		child_clear(ch);
		w->running--;
	}
}

/* ---- Signals ---- */

static int
work_signals(WorkRun *w)
{
	sigemptyset(&w->sigs);
	sigaddset(&w->sigs, SIGINT);
	sigaddset(&w->sigs, SIGTERM);
	sigaddset(&w->sigs, SIGUSR2);
	sigaddset(&w->sigs, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &w->sigs, &w->oldmask) < 0)
		return -errno;
	/* A command that does not read all its input must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	w->sigfd = signalfd(-1, &w->sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	return w->sigfd < 0 ? -errno : 0;
}

static void
work_stop(WorkRun *w)
{
	if (w->stopping)
		return;
	w->stopping = true;
	w->handoff = false; /* stopping wins: nothing left to hand off */
	if (!w->broken && !w->unsubscribed)
		(void)mbox_unsubscribe(w->c->m, w->c->target);
	w->unsubscribed = true;
}

static void
work_read_signals(WorkRun *w)
{
	struct signalfd_siginfo si;

	while (read(w->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGINT:
		case SIGTERM:
			work_stop(w);
			break;
		case SIGUSR2:
			if (!w->o->handoff_exec) {
				fprintf(stderr,
					"mboxctl: %s %s: SIGUSR2 ignored: no "
					"--handoff-exec given\n",
					w->c->verb, w->c->target);
				break;
			}
			if (!w->stopping)
				w->handoff = true;
			break;
		default: /* SIGCHLD: work_collect reaps */
			break;
		}
	}
}

/* ---- Hand-off ---- */

/*
 * All commands have ended and are settled: park the rest under a token
 * and exec the successor. Returns only when that failed; the hand-off
 * is then claimed back and the loop goes on.
 */
static void
work_handoff_exec(WorkRun *w)
{
	char token[MBOX_TOKEN_SIZE];
	int r;

	w->handoff = false;
	r = mbox_handoff(w->c->m, WORK_HANDOFF_MS, token, NULL);
	if (r < 0) {
		ctl_fail(w->c, r, "hand-off failed, going on");
		return;
	}
	queue_drop(w);
	fprintf(stderr, "mboxctl: %s %s: handing off to %s\n", w->c->verb,
		w->c->target, w->o->handoff_exec);
	fflush(NULL);
	setenv("MBOX_HANDOFF", token, 1);
	signal(SIGPIPE, SIG_DFL);
	sigprocmask(SIG_SETMASK, &w->oldmask, NULL);
	w->o->reexec_argv[0] = (char *)w->o->handoff_exec;
	execvp(w->o->handoff_exec, w->o->reexec_argv);
	r = -errno;
	sigprocmask(SIG_BLOCK, &w->sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	unsetenv("MBOX_HANDOFF");
	ctl_error(w->c, "cannot exec %s: %s; taking the work back",
		  w->o->handoff_exec, strerror(-r));
	r = mbox_claim(w->c->m, token, NULL);
	if (r < 0)
		ctl_fail(w->c, r, "cannot claim the hand-off back");
}

/* ---- The loop ---- */

static void
work_take_pushed(WorkRun *w)
{
	mbox_msg *msg;
	int r;

	for (;;) {
		r = mbox_next(w->c->m, 0, &msg);
		if (r == -ETIMEDOUT)
			return;
		if (r < 0) {
			/* -ENOENT: the mailbox was deleted; the text says so.
			 */
			if (r == -ENOENT)
				w->c->enoent = "subscription ended";
			ctl_fail(w->c, r,
				 r == -ENOENT ? NULL : "subscription ended");
			w->broken = true;
			w->ended = r == -ENOENT;
			return;
		}
		if (w->stopping && !w->broken) {
			uint64_t id = mbox_msg_id(msg);

			mbox_msg_free(msg);
			(void)mbox_nack(w->c->m, &id, 1, 0);
			continue;
		}
		if (queue_push(w, msg) < 0)
			ctl_error(w->c, "out of memory");
	}
}

static int
work_timeout(const WorkRun *w)
{
	int64_t next = INT64_MAX, now = ctl_realtime_ns(), ms;
	size_t i;

	if (!w->broken && mbox_pending(w->c->m))
		return 0;
	/* Broken: no more touches (work_touch_due skips them), so a past
	 * touch_at must not make poll spin until the commands end. */
	for (i = 0; i < w->o->jobs && !w->broken; i++) {
		const Child *ch = &w->slots[i];

		if (ch->msg && !ch->lease_lost && ch->touch_at_ns < next)
			next = ch->touch_at_ns;
	}
	if (!w->broken && w->q_len && w->q_touch_at_ns < next)
		next = w->q_touch_at_ns;
	ms = -1; /* nothing to wake for but the fds */
	if (next != INT64_MAX)
		ms = next > now ? (next - now + 999999) / 1000000 : 0;
	if (w->wait_end && !w->started) {
		int64_t left =
			(w->wait_end - ctl_monotonic_ns() + 999999) / 1000000;

		if (left < 0)
			left = 0;
		if (ms < 0 || left < ms)
			ms = left;
	}
	return ms > 60000 ? 60000 : (int)ms;
}

/* One round: poll everything, act on what it said. */
static int
work_round(WorkRun *w, struct pollfd *pfds)
{
	size_t n = 0, i;
	int timeout = work_timeout(w), mfd = -1, r;

	pfds[n++] = (struct pollfd){.fd = w->sigfd, .events = POLLIN};
	if (!w->broken) {
		mfd = (int)n;
		pfds[n++] = (struct pollfd){.fd = mbox_fd(w->c->m),
					    .events = POLLIN};
	}
	for (i = 0; i < w->o->jobs; i++)
		if (w->slots[i].msg)
			child_poll_add(&w->slots[i], pfds, &n);
	r = poll(pfds, n, timeout);
	if (r < 0 && errno != EINTR)
		return ctl_error(w->c, "poll: %s", strerror(errno));
	if (r < 0)
		return 0;
	if (pfds[0].revents)
		work_read_signals(w);
	for (i = 0; i < w->o->jobs; i++)
		if (w->slots[i].msg)
			child_poll_handle(&w->slots[i], pfds);
	work_collect(w);
	work_touch_due(w);
	work_touch_queue(w);
	if (!w->broken &&
	    ((mfd >= 0 && pfds[mfd].revents) || mbox_pending(w->c->m)))
		work_take_pushed(w);
	if (w->stopping)
		queue_release(w);
	work_start_ready(w);
	return 0;
}

static bool
work_finished(const WorkRun *w)
{
	if (w->running)
		return false;
	if (w->stopping || w->broken)
		return true;
	if (w->o->once && w->started)
		return true;
	return w->wait_end && !w->started && ctl_monotonic_ns() >= w->wait_end;
}

/* MBOX_HANDOFF: take over the predecessor's leases and subscription. */
static int
work_claim(WorkRun *w)
{
	const char *token = getenv("MBOX_HANDOFF");
	size_t count = 0;
	int r;

	if (!token || !*token)
		return 0;
	r = mbox_claim(w->c->m, token, &count);
	unsetenv("MBOX_HANDOFF");
	if (r == -ENOENT) {
		fprintf(stderr,
			"mboxctl: %s %s: the hand-off in MBOX_HANDOFF is "
			"unknown or expired; its messages went back to their "
			"mailbox\n",
			w->c->verb, w->c->target);
		return 0;
	}
	if (r < 0) {
		w->c->enoent = "no such hand-off";
		return ctl_fail(w->c, r, "cannot claim the hand-off");
	}
	fprintf(stderr, "mboxctl: %s %s: claimed a hand-off of %zu messages\n",
		w->c->verb, w->c->target, count);
	return 0;
}

static int
work_subscribe(WorkRun *w)
{
	unsigned window = w->o->once ? 1 : w->o->jobs;
	int r;

	r = work_claim(w);
	if (r)
		return r;
	r = mbox_subscribe(w->c->m, w->c->target, window, w->o->lease_ms, 0,
			   NULL);
	if (r == -EEXIST)
		return 0; /* the claim brought the subscription */
	if (r < 0)
		return ctl_fail(w->c, r, "cannot subscribe");
	return 0;
}

int
work_loop(Ctl *c, const WorkOpts *o)
{
	WorkRun w = {.c = c, .o = o, .sigfd = -1};
	struct pollfd *pfds = NULL;
	int r;

	w.slots = calloc(o->jobs, sizeof(*w.slots));
	pfds = calloc(2 + 3 * (size_t)o->jobs, sizeof(*pfds));
	if (!w.slots || !pfds) {
		r = ctl_error(c, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < o->jobs; i++)
		w.slots[i] = (Child){.in_fd = -1, .out_fd = -1, .err_fd = -1};
	r = work_signals(&w);
	if (r < 0) {
		r = ctl_error(c, "cannot set up signal handling: %s",
			      strerror(-r));
		goto out;
	}
	r = work_subscribe(&w);
	if (r)
		goto out;
	if (o->once && o->wait_ms >= 0)
		w.wait_end = ctl_monotonic_ns() + o->wait_ms * 1000000;
	for (;;) {
		if (w.handoff && !w.running)
			work_handoff_exec(&w);
		if (work_finished(&w))
			break;
		r = work_round(&w, pfds);
		if (r)
			goto out;
	}
	queue_release(&w);
	if (w.ended) /* as subscribe: the mailbox is gone */
		r = CTL_EXIT_NOT_FOUND;
	else if (w.broken || w.out_closed)
		r = CTL_EXIT_ERROR;
	else if (o->once && w.started)
		r = w.once_rc;
	else if (o->once && !w.stopping)
		r = ctl_empty(c);
	else
		r = CTL_EXIT_OK;
out:
	free(pfds);
	free(w.slots);
	queue_drop(&w);
	free(w.queue);
	if (w.sigfd >= 0)
		close(w.sigfd);
	return r;
}

/* ---- The verb ---- */

/* The arguments a successor gets: [PROG] [-S SOCKET] work ARGS... */
static char **
work_reexec_argv(const Ctl *c, int argc, char **argv)
{
	char **a = calloc((size_t)argc + 4, sizeof(*a));
	int i, n = 1;

	if (!a)
		return NULL;
	a[0] = argv[0];
	if (c->socket) {
		a[n++] = (char *)"-S";
		a[n++] = (char *)c->socket;
	}
	for (i = 0; i < argc; i++)
		a[n++] = argv[i];
	return a;
}

static int
work_parse_wait(const char *s, int64_t *ms)
{
	uint64_t v;

	if (strcmp(s, "forever") == 0 || strcmp(s, "-1") == 0) {
		*ms = -1;
		return 0;
	}
	if (ctl_parse_duration_ms(s, &v) < 0 || v > INT64_MAX / 1000000)
		return -EINVAL;
	*ms = (int64_t)v;
	return 0;
}

/* Options every loop verb shares; returns 1 when opt was not one. */
static int
work_parse_opt(Ctl *c, WorkOpts *o, int opt, const char *arg)
{
	uint64_t v;

	switch (opt) {
	case 'j':
		if (ctl_parse_u64(arg, &v) < 0 || v == 0 || v > MBOX_WINDOW_MAX)
			return ctl_usage(c, "bad job count '%s' (1-%u)", arg,
					 MBOX_WINDOW_MAX);
		o->jobs = (unsigned)v;
		return 0;
	case OPT_LEASE:
		if (ctl_parse_duration_ms(arg, &o->lease_ms) < 0 ||
		    o->lease_ms == 0)
			return ctl_usage(c, "bad lease '%s'", arg);
		return 0;
	case 'S':
		c->socket = arg;
		return 0;
	default:
		return 1;
	}
}

int
cmd_work(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"jobs", required_argument, NULL, 'j'},
		{"max-deliveries", required_argument, NULL, OPT_MAX_DELIVERIES},
		{"reject-exit", required_argument, NULL, OPT_REJECT_EXIT},
		{"lease", required_argument, NULL, OPT_LEASE},
		{"once", no_argument, NULL, OPT_ONCE},
		{"wait", required_argument, NULL, 'w'},
		{"handoff-exec", required_argument, NULL, OPT_HANDOFF_EXEC},
		CTL_COMMON_OPTIONS,
		{0},
	};
	WorkOpts o = {
		.jobs = 1, .reject_exit = WORK_REJECT_EXIT, .wait_ms = -1};
	char **saved = NULL;
	bool wait_given = false;
	uint64_t v;
	int opt, r;

	/* getopt permutes argv; a successor gets it as the user wrote it. */
	saved = calloc((size_t)argc + 1, sizeof(*saved));
	if (!saved)
		return ctl_error(c, "out of memory");
	memcpy(saved, argv, (size_t)argc * sizeof(*saved));
	while ((opt = getopt_long(argc, argv, ":S:hj:w:", opts, NULL)) != -1) {
		r = work_parse_opt(c, &o, opt, optarg);
		if (r == 0)
			continue;
		if (r != 1)
			goto out;
		switch (opt) {
		case OPT_MAX_DELIVERIES:
			if (ctl_parse_u64(optarg, &v) < 0 || v > UINT32_MAX) {
				r = ctl_usage(c, "bad count '%s'", optarg);
				goto out;
			}
			o.max_deliveries = (uint32_t)v;
			break;
		case OPT_REJECT_EXIT:
			if (ctl_parse_u64(optarg, &v) < 0 || v == 0 ||
			    v > 255) {
				r = ctl_usage(c, "bad exit code '%s' (1-255)",
					      optarg);
				goto out;
			}
			o.reject_exit = (int)v;
			break;
		case OPT_ONCE:
			o.once = true;
			break;
		case 'w':
			if (work_parse_wait(optarg, &o.wait_ms) < 0) {
				r = ctl_usage(c, "bad duration '%s'", optarg);
				goto out;
			}
			wait_given = true;
			break;
		case OPT_HANDOFF_EXEC:
			o.handoff_exec = optarg;
			break;
		case 'h':
			fputs(work_help, stdout);
			r = CTL_EXIT_OK;
			goto out;
		default:
			r = ctl_bad_option(c, opt, argv);
			goto out;
		}
	}
	r = ctl_take_mailbox(c, argc, argv, "MAILBOX -- CMD");
	if (r >= 0)
		goto out;
	r = CTL_EXIT_USAGE;
	if (optind < argc && strcmp(argv[optind], "--") == 0)
		optind++;
	if (optind >= argc) {
		r = ctl_usage(c,
			      "which command? (mboxctl work %s -- CMD "
			      "[ARG...])",
			      c->target);
		goto out;
	}
	if (wait_given && !o.once) {
		r = ctl_usage(c, "--wait goes with --once");
		goto out;
	}
	o.cmd = argv + optind;
	if (child_find_cmd(o.cmd[0]) < 0) {
		r = ctl_usage(c, "cannot run '%s': %s", o.cmd[0],
			      strerror(-child_find_cmd(o.cmd[0])));
		goto out;
	}
	o.io.socket = c->socket;
	o.reexec_argv = work_reexec_argv(c, argc, saved);
	if (!o.reexec_argv) {
		r = ctl_error(c, "out of memory");
		goto out;
	}
	r = ctl_connect(c);
	if (r == 0)
		r = work_loop(c, &o);
out:
	free(o.reexec_argv);
	free(saved);
	return r;
}
