/*
 * subscriber.c - integration test driver: push subscriptions, hand-off,
 * request/reply and temporary mailboxes through libmbox.
 *
 *   subscriber-driver -S SOCKET MODE ARGS...
 *
 * Modes (every one bounded in time: --timeout-s, default 20 s, and an
 * alarm() as a last resort):
 *
 *   sub MAILBOX [--window W] [--exclusive] [--count N] [--ack-delay-ms D]
 *       [--no-ack-after K] [--log FILE] [--lease-ms L]
 *       [--handoff-after K [--exec] [--handoff-wait-ms T]]
 *	Subscribe and take pushed messages with mbox_next. Each one is acked
 *	(after D ms), then "ID PAYLOAD DELIVERIES" is appended to FILE (or
 *	stdout): the log holds exactly the acked messages. Stops after N
 *	acks ("done N"). Status lines on stdout: "subscribed standby=S",
 *	"claimed N", "handoff TOKEN", "hold ID PAYLOAD DELIVERIES" (a message
 *	kept unacked), "late ID ..." (a push after the hand-off: a bug).
 *	--no-ack-after K: after K acks, hold every further message and idle
 *	until killed or timed out (exit 0 then).
 *	--handoff-after K: after K acks call mbox_handoff (token valid T ms).
 *	With --exec the process re-execs itself with the token in
 *	MBOX_HANDOFF, the acks so far in MBOX_SUB_DONE and "--successor"
 *	appended; the successor claims and goes on up to N acks in all.
 *	Without --exec it idles holding nothing (the hand-off record holds
 *	its messages) until killed or timed out.
 *
 *   window MAILBOX W
 *	Subscribe with window W, never ack; print "window N", the number of
 *	messages pushed within 1 s; then ack one and print "more M", the
 *	number pushed within the next second.
 *
 *   serve MAILBOX [--count N] [--delay-ms D]
 *	RPC server: mbox_recv, print "req ID PAYLOAD DELIVERIES", wait D ms,
 *	mbox_reply "re:PAYLOAD", ack, print "replied ID". Stops after N.
 *
 *   call MAILBOX DATA [--timeout-ms T]
 *	mbox_call; print the reply payload. Exit 3 on -ETIMEDOUT.
 *
 *   claim TOKEN
 *	mbox_claim; print "claimed N" and "msg ID PAYLOAD DELIVERIES" for
 *	each claimed message, then close (the messages go back). Exit 5 on
 *	-ENOENT, 4 on -EACCES.
 *
 *   temp NAME
 *	Create NAME with temp=1, print "ready", wait for EOF on stdin.
 *
 *   ends MAILBOX OTHER [--count N]
 *	Subscribe to both, print "subscribed MAILBOX OTHER", then take
 *	pushes with mbox_next, acking each: "msg MAILBOX PAYLOAD" for a
 *	message, "ended NAME" (mbox_ended_mailbox) when the broker ends a
 *	subscription and mbox_last_error names NAME. Stops after N messages
 *	("done N").
 *
 * Exit status: 0 ok, 1 error, 2 usage, 3 timeout (call), 4 denied,
 * 5 not found, 6 cannot connect.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mbox.h"
#include "driver-util.h"

#define WINDOW_MAX    1024u
#define PAYLOAD_SHOWN 200u
#define LINE_MAX_LEN  512u

static const char prog[] = "subscriber-driver";

typedef struct Opts {
	const char *sock;
	const char *mode;
	const char *arg1; /* mailbox, token or name */
	const char *arg2; /* call: data */
	unsigned window;
	int exclusive;
	long count; /* 0: no limit */
	long ack_delay_ms;
	long no_ack_after; /* < 0: ack everything */
	const char *log;
	long handoff_after; /* < 0: never */
	int exec;
	int successor;
	uint64_t handoff_wait_ms;
	uint64_t lease_ms;
	long delay_ms;
	int64_t timeout_ms;
	int timeout_s;
} Opts;

typedef struct Sub {
	const Opts *o;
	mbox *m;
	int log_fd;
	long acked;
	int64_t deadline;
} Sub;

/* Report a failed call and close the connection: every caller returns
 * its exit code at once. */
static int
complain(const char *what, mbox *m, int r)
{
	/* The errno number too, so a test can tell EBUSY from a timeout. */
	fprintf(stderr, "%s: %s: %s [err=%d] (%s)\n", prog, what,
		mbox_strerror(r), r, m ? mbox_last_error(m) : "");
	mbox_close(m);
	return r == -ETIMEDOUT ? 3 : r == -EACCES ? 4 : r == -ENOENT ? 5 : 1;
}

/* The payload as one word: whitespace and control bytes become '_'. */
static void
payload_word(const mbox_msg *msg, char *buf, size_t size)
{
	size_t len, i;
	const unsigned char *p = mbox_msg_data(msg, &len);

	if (len == 0) {
		snprintf(buf, size, "-");
		return;
	}
	if (len > size - 1)
		len = size - 1;
	for (i = 0; i < len; i++)
		buf[i] = (p[i] > ' ' && p[i] < 0x7f) ? (char)p[i] : '_';
	buf[len] = '\0';
}

/* "ID PAYLOAD DELIVERIES" of msg into buf. */
static void
msg_line(const mbox_msg *msg, char *buf, size_t size)
{
	char word[PAYLOAD_SHOWN + 1];

	payload_word(msg, word, sizeof(word));
	snprintf(buf, size, "%" PRIu64 " %s %" PRIu32, mbox_msg_id(msg), word,
		 mbox_msg_deliveries(msg));
}

static int
parse_long(const char *s, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(s, &end, 10);
	return (errno || end == s || *end || *out < 0) ? -1 : 0;
}

static int
parse_opt(Opts *o, int argc, char **argv, int *i)
{
	const char *a = argv[*i];
	long v;

	if (!strcmp(a, "--exclusive"))
		return o->exclusive = 1, 0;
	if (!strcmp(a, "--exec"))
		return o->exec = 1, 0;
	if (!strcmp(a, "--successor"))
		return o->successor = 1, 0;
	if (*i + 1 >= argc)
		return -1;
	(*i)++;
	if (!strcmp(a, "--log")) {
		o->log = argv[*i];
		return 0;
	}
	if (parse_long(argv[*i], &v) < 0)
		return -1;
	if (!strcmp(a, "--window"))
		o->window = (unsigned)v;
	else if (!strcmp(a, "--count"))
		o->count = v;
	else if (!strcmp(a, "--ack-delay-ms"))
		o->ack_delay_ms = v;
	else if (!strcmp(a, "--no-ack-after"))
		o->no_ack_after = v;
	else if (!strcmp(a, "--handoff-after"))
		o->handoff_after = v;
	else if (!strcmp(a, "--handoff-wait-ms"))
		o->handoff_wait_ms = (uint64_t)v;
	else if (!strcmp(a, "--lease-ms"))
		o->lease_ms = (uint64_t)v;
	else if (!strcmp(a, "--delay-ms"))
		o->delay_ms = v;
	else if (!strcmp(a, "--timeout-ms"))
		o->timeout_ms = v;
	else if (!strcmp(a, "--timeout-s"))
		o->timeout_s = (int)v;
	else
		return -1;
	return 0;
}

static int
parse_args(Opts *o, int argc, char **argv)
{
	int i = 1, pos = 0;

	if (argc > 2 && !strcmp(argv[1], "-S")) {
		o->sock = argv[2];
		i = 3;
	}
	for (; i < argc; i++) {
		if (!strncmp(argv[i], "--", 2)) {
			if (parse_opt(o, argc, argv, &i) < 0)
				return -1;
		} else if (pos == 0) {
			o->mode = argv[i], pos++;
		} else if (pos == 1) {
			o->arg1 = argv[i], pos++;
		} else if (pos == 2) {
			o->arg2 = argv[i], pos++;
		} else {
			return -1;
		}
	}
	return o->mode && o->arg1 ? 0 : -1;
}

static void
log_acked(Sub *s, const mbox_msg *msg)
{
	char line[LINE_MAX_LEN];
	size_t len;

	msg_line(msg, line, sizeof(line) - 1);
	len = strlen(line);
	line[len++] = '\n';
	fflush(stdout);
	/* One write with O_APPEND: whole lines even from two processes. */
	if (write(s->log_fd, line, len) != (ssize_t)len) {
		perror("subscriber-driver: log");
		exit(1);
	}
}

/* Re-exec with the token in the environment (SPEC 3.5 typical use). */
static void
reexec(Sub *s, char **argv, int argc, const char *token)
{
	char done[32];
	char **nargv = calloc((size_t)argc + 2, sizeof(*nargv));

	if (!nargv)
		exit(1);
	memcpy(nargv, argv, (size_t)argc * sizeof(*nargv));
	nargv[argc] = "--successor";
	snprintf(done, sizeof(done), "%ld", s->acked);
	setenv("MBOX_HANDOFF", token, 1);
	setenv("MBOX_SUB_DONE", done, 1);
	/* Closing does not requeue: the leases belong to the token now. */
	mbox_close(s->m);
	if (s->log_fd != STDOUT_FILENO)
		close(s->log_fd);
	fflush(stdout);
	execv("/proc/self/exe", nargv);
	perror("subscriber-driver: execv");
	exit(1);
}

/* After a hand-off without exec: idle, reporting any push as a bug. */
static int
idle_after_handoff(Sub *s)
{
	mbox_msg *msg;
	char line[LINE_MAX_LEN];
	int64_t left;
	int r;

	while ((left = s->deadline - driver_now_ms()) > 0) {
		r = mbox_next(s->m, left, &msg);
		if (r == -ETIMEDOUT)
			continue;
		if (r < 0)
			return complain("next after handoff", s->m, r);
		msg_line(msg, line, sizeof(line));
		driver_say("late %s", line);
		mbox_msg_free(msg);
	}
	return 0;
}

static int
do_handoff(Sub *s, char **argv, int argc)
{
	char token[MBOX_TOKEN_SIZE];
	int64_t deadline_ns;
	int r = mbox_handoff(s->m, s->o->handoff_wait_ms, token, &deadline_ns);

	if (r < 0)
		return complain("handoff", s->m, r);
	driver_say("handoff %s", token);
	if (s->o->exec)
		reexec(s, argv, argc, token);
	return idle_after_handoff(s);
}

static int
sub_start(Sub *s)
{
	const Opts *o = s->o;
	const char *token = getenv("MBOX_HANDOFF");
	const char *done = getenv("MBOX_SUB_DONE");
	size_t claimed = 0;
	int standby = 0, r;

	if (o->successor && token) {
		s->acked = done ? atol(done) : 0;
		r = mbox_claim(s->m, token, &claimed);
		if (r < 0)
			return complain("claim", s->m, r);
		driver_say("claimed %zu", claimed);
		return 0;
	}
	r = mbox_subscribe(s->m, o->arg1, o->window, o->lease_ms,
			   o->exclusive ? MBOX_SUB_EXCLUSIVE_FLAG : 0,
			   &standby);
	if (r < 0)
		return complain("subscribe", s->m, r);
	driver_say("subscribed standby=%d", standby);
	return 0;
}

/* One pushed message: hold it, or ack and log it. */
static int
sub_take(Sub *s, mbox_msg *msg)
{
	const Opts *o = s->o;
	char line[LINE_MAX_LEN];
	uint64_t id = mbox_msg_id(msg);
	int r;

	if (o->no_ack_after >= 0 && s->acked >= o->no_ack_after) {
		msg_line(msg, line, sizeof(line));
		driver_say("hold %s", line);
		return 0;
	}
	if (o->ack_delay_ms > 0)
		driver_sleep_ms(o->ack_delay_ms);
	r = mbox_ack(s->m, &id, 1);
	if (r < 0)
		return complain("ack", s->m, r);
	log_acked(s, msg);
	s->acked++;
	return 0;
}

static int
mode_sub(const Opts *o, int argc, char **argv)
{
	Sub s = {.o = o, .log_fd = STDOUT_FILENO};
	mbox_msg *msg;
	int64_t left;
	int r;

	s.deadline = driver_now_ms() + 1000LL * o->timeout_s;
	if (o->log) {
		s.log_fd = open(o->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (s.log_fd < 0) {
			perror(o->log);
			return 1;
		}
	}
	if (driver_connect(&s.m, prog, o->sock) < 0)
		return 6;
	if ((r = sub_start(&s)) != 0)
		return r;
	while (o->count == 0 || s.acked < o->count) {
		if (o->handoff_after >= 0 && !o->successor &&
		    s.acked == o->handoff_after)
			return do_handoff(&s, argv, argc);
		left = s.deadline - driver_now_ms();
		if (left <= 0)
			break;
		r = mbox_next(s.m, left, &msg);
		if (r == -ETIMEDOUT)
			continue;
		if (r < 0)
			return complain("next", s.m, r);
		r = sub_take(&s, msg);
		mbox_msg_free(msg);
		if (r)
			return r;
	}
	if (o->count && s.acked < o->count) {
		/* Holding on purpose until killed is not a failure. */
		if (o->no_ack_after >= 0)
			return 0;
		fprintf(stderr, "%s: only %ld of %ld acked\n", prog, s.acked,
			o->count);
		mbox_close(s.m);
		return 1;
	}
	driver_say("done %ld", s.acked);
	mbox_close(s.m);
	return 0;
}

/* Messages pushed within ms; they are kept (never acked) in msgs. */
static int
collect(mbox *m, int64_t ms, mbox_msg **msgs, size_t *n, size_t max)
{
	int64_t end = driver_now_ms() + ms, left;
	size_t got = 0;
	int r;

	while (got < max && (left = end - driver_now_ms()) > 0) {
		r = mbox_next(m, left, &msgs[*n + got]);
		if (r == -ETIMEDOUT)
			break;
		if (r < 0)
			return r;
		got++;
	}
	*n += got;
	return (int)got;
}

static int
mode_window(const Opts *o)
{
	static mbox_msg *msgs[2 * WINDOW_MAX + 2];
	size_t n = 0, i;
	long w;
	uint64_t id;
	mbox *m;
	int r, more;

	if (!o->arg2 || parse_long(o->arg2, &w) < 0 || w < 1 || w > WINDOW_MAX)
		return 2;
	if (driver_connect(&m, prog, o->sock) < 0)
		return 6;
	r = mbox_subscribe(m, o->arg1, (unsigned)w, o->lease_ms, 0, NULL);
	if (r < 0)
		return complain("subscribe", m, r);
	r = collect(m, 1000, msgs, &n, WINDOW_MAX + 1);
	if (r < 0)
		return complain("next", m, r);
	driver_say("window %zu", n);
	if (n > 0) {
		id = mbox_msg_id(msgs[0]);
		r = mbox_ack(m, &id, 1);
		if (r < 0)
			return complain("ack", m, r);
		more = collect(m, 1000, msgs, &n, WINDOW_MAX + 1);
		if (more < 0)
			return complain("next", m, more);
		driver_say("more %d", more);
	}
	for (i = 0; i < n; i++)
		mbox_msg_free(msgs[i]);
	mbox_close(m);
	return 0;
}

static int
serve_one(mbox *m, const Opts *o, mbox_msg *req)
{
	char line[LINE_MAX_LEN], *reply;
	size_t len;
	const void *data = mbox_msg_data(req, &len);
	uint64_t id = mbox_msg_id(req);
	int r;

	msg_line(req, line, sizeof(line));
	driver_say("req %s", line);
	if (o->delay_ms > 0)
		driver_sleep_ms(o->delay_ms);
	reply = malloc(len + 3);
	if (!reply)
		return 1;
	memcpy(reply, "re:", 3);
	memcpy(reply + 3, data, len);
	r = mbox_reply(m, req, reply, len + 3, NULL);
	free(reply);
	if (r < 0)
		return complain("reply", m, r);
	r = mbox_ack(m, &id, 1);
	if (r < 0)
		return complain("ack", m, r);
	driver_say("replied %" PRIu64, id);
	return 0;
}

static int
mode_serve(const Opts *o)
{
	int64_t deadline = driver_now_ms() + 1000LL * o->timeout_s, left;
	mbox_msg *req;
	long served = 0;
	size_t n;
	mbox *m;
	int r;

	if (driver_connect(&m, prog, o->sock) < 0)
		return 6;
	driver_say("serving");
	while ((o->count == 0 || served < o->count) &&
	       (left = deadline - driver_now_ms()) > 0) {
		r = mbox_recv(m, o->arg1, 1, left < 500 ? left : 500, 0, &req,
			      &n);
		if (r < 0)
			return complain("recv", m, r);
		if (n == 0)
			continue;
		r = serve_one(m, o, req);
		mbox_msg_free(req);
		if (r)
			return r;
		served++;
	}
	mbox_close(m);
	return o->count && served < o->count ? 1 : 0;
}

static int
mode_call(const Opts *o)
{
	mbox_msg *reply;
	char word[PAYLOAD_SHOWN + 1];
	mbox *m;
	int r;

	if (!o->arg2)
		return 2;
	if (driver_connect(&m, prog, o->sock) < 0)
		return 6;
	r = mbox_call(m, o->arg1, o->arg2, strlen(o->arg2), NULL, o->timeout_ms,
		      &reply);
	if (r < 0)
		return complain("call", m, r);
	payload_word(reply, word, sizeof(word));
	driver_say("%s", word);
	mbox_msg_free(reply);
	mbox_close(m);
	return 0;
}

static int
mode_claim(const Opts *o)
{
	char line[LINE_MAX_LEN];
	mbox_msg *msg;
	size_t count = 0, i;
	mbox *m;
	int r;

	if (driver_connect(&m, prog, o->sock) < 0)
		return 6;
	r = mbox_claim(m, o->arg1, &count);
	if (r < 0)
		return complain("claim", m, r);
	driver_say("claimed %zu", count);
	/* The claimed messages were pushed before the claim's reply. */
	for (i = 0; i < count; i++) {
		r = mbox_next(m, 0, &msg);
		if (r < 0)
			return complain("next after claim", m, r);
		msg_line(msg, line, sizeof(line));
		driver_say("msg %s", line);
		mbox_msg_free(msg);
	}
	mbox_close(m);
	return 0;
}

static int
mode_temp(const Opts *o)
{
	const char *const settings[] = {"temp=1", NULL};
	char buf[256];
	mbox *m;
	int r;

	if (driver_connect(&m, prog, o->sock) < 0)
		return 6;
	r = mbox_create(m, o->arg1, settings);
	if (r < 0)
		return complain("create temp", m, r);
	driver_say("ready");
	while ((r = (int)read(STDIN_FILENO, buf, sizeof(buf))) != 0)
		if (r < 0 && errno != EINTR)
			break;
	mbox_close(m);
	return 0;
}

static int
mode_ends(const Opts *o)
{
	int64_t deadline = driver_now_ms() + 1000LL * o->timeout_s, left;
	char word[PAYLOAD_SHOWN + 1];
	const char *name;
	mbox_msg *msg;
	long got = 0;
	uint64_t id;
	mbox *m;
	int r;

	if (!o->arg2)
		return 2;
	if (driver_connect(&m, prog, o->sock) < 0)
		return 6;
	r = mbox_subscribe(m, o->arg1, 1, 0, 0, NULL);
	if (r == 0)
		r = mbox_subscribe(m, o->arg2, 1, 0, 0, NULL);
	if (r < 0)
		return complain("subscribe", m, r);
	driver_say("subscribed %s %s", o->arg1, o->arg2);
	while (got < o->count && (left = deadline - driver_now_ms()) > 0) {
		r = mbox_next(m, left, &msg);
		if (r == -ETIMEDOUT)
			continue;
		if (r == -ENOENT) {
			name = mbox_ended_mailbox(m);
			if (!name || !strstr(mbox_last_error(m), name))
				return complain("ended, but not said which", m,
						r);
			driver_say("ended %s", name);
			continue;
		}
		if (r < 0)
			return complain("next", m, r);
		payload_word(msg, word, sizeof(word));
		driver_say("msg %s %s", mbox_msg_mailbox(msg), word);
		id = mbox_msg_id(msg);
		mbox_msg_free(msg);
		r = mbox_ack(m, &id, 1);
		if (r < 0)
			return complain("ack", m, r);
		got++;
	}
	if (got < o->count)
		return complain("next", m, -ETIMEDOUT);
	driver_say("done %ld", got);
	mbox_close(m);
	return 0;
}

int
main(int argc, char **argv)
{
	Opts o = {
		.window = 1,
		.no_ack_after = -1,
		.handoff_after = -1,
		.handoff_wait_ms = 0,
		.timeout_ms = 5000,
		.timeout_s = 20,
	};

	if (parse_args(&o, argc, argv) < 0) {
		fprintf(stderr,
			"usage: %s [-S SOCKET] "
			"sub|window|serve|call|claim|temp|ends "
			"ARGS... (see subscriber.c)\n",
			argv[0]);
		return 2;
	}
	/* Never outlive a forgotten test. */
	alarm((unsigned)o.timeout_s + 60);
	if (!strcmp(o.mode, "sub"))
		return mode_sub(&o, argc, argv);
	if (!strcmp(o.mode, "window"))
		return mode_window(&o);
	if (!strcmp(o.mode, "serve"))
		return mode_serve(&o);
	if (!strcmp(o.mode, "call"))
		return mode_call(&o);
	if (!strcmp(o.mode, "claim"))
		return mode_claim(&o);
	if (!strcmp(o.mode, "temp"))
		return mode_temp(&o);
	if (!strcmp(o.mode, "ends"))
		return mode_ends(&o);
	fprintf(stderr, "%s: unknown mode %s\n", argv[0], o.mode);
	return 2;
}
