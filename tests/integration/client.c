/*
 * client.c - integration test driver: what mboxctl cannot do in one
 * process (a lease held across several requests, a touch, a late ack).
 *
 *   client-driver SOCKET touch MAILBOX LEASE_MS
 *	Receive one message leased for LEASE_MS, touch it every LEASE_MS/3
 *	until three times LEASE_MS have passed, checking from a second
 *	connection that it is never offered again meanwhile, touch it once
 *	with an explicit length, then ack it: the ack must succeed.
 *
 *   client-driver SOCKET late-ack MAILBOX LEASE_MS
 *	Receive one message (LEASE_MS 0: the mailbox's lease), print
 *	"received ID lease_ms MS" (MS: its deadline minus now), sleep until
 *	300 ms past its deadline, print the mailbox's counters as "after
 *	ready=R leased=L", then TOUCH, NACK, REJECT and ACK it: each must be
 *	refused with -ESTALE and a text from the broker ("refused OP: TEXT").
 *
 *   client-driver SOCKET nack-delay MAILBOX DELAY_MS
 *	Receive one message, nack it with DELAY_MS, print "early N" (what an
 *	immediate recv got), "during ready=R delayed=D", then wait for it
 *	and print "redelivered ID after MS ms deliveries D" (MS counted from
 *	the nack), and ack it.
 *
 *   client-driver SOCKET reject MAILBOX
 *	Receive one message and reject it; print "rejected ID".
 *
 *   client-driver SOCKET recv-nack MAILBOX N
 *	N times: receive one message, print "ID DELIVERIES", nack it.
 *
 *   client-driver SOCKET hold MAILBOX N LEASE_MS [GOFILE]
 *	Receive N messages leased for LEASE_MS (0: the mailbox's lease) and
 *	print their ids. Without GOFILE, hold them until killed. With it,
 *	wait for GOFILE to exist, then ack them all and print "acked N".
 *
 *   client-driver SOCKET temp MAILBOX PATTERN
 *	Create MAILBOX as a temporary mailbox (temp=1), bind it to PATTERN,
 *	print "ready" and keep the connection open until killed.
 *
 *   client-driver SOCKET long-waits MAILBOX
 *	What libmbox promises of its edges: a recv and a call may wait longer
 *	than the broker's year (the wait is asked for in slices); headers over
 *	MBOX_HEADERS_MAX are -EMSGSIZE, as the broker says; mbox_strerror
 *	takes any int. The call is answered by a child process serving
 *	MAILBOX. Prints "long waits ok".
 *
 * Every receive waits at most 10 s. Output lines are flushed at once so a
 * test can follow them while the driver runs. alarm() ends a forgotten
 * driver after 120 s.
 *
 * Exit status: 0 as described, 1 on any failure (explained on stderr),
 * 2 on bad usage, 3 when no message came.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mbox-proto.h"
#include "mbox.h"
#include "driver-util.h"

/* How long any receive of the driver waits for a message, ms. */
#define RECV_WAIT_MS 10000
/* Margin past a lease deadline before acting on the expiry, ms. */
#define EXPIRY_MARGIN_MS 300

static const char prog[] = "client-driver";

/* Bad arguments: explained on stderr, exit status 2. */
static int
bad_args(const char *what, const char *arg)
{
	fprintf(stderr, "%s: bad %s '%s'\n", prog, what, arg);
	return 2;
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* Report a failed libmbox call with the broker's own words. */
static int
fail_call(mbox *m, const char *what, int r)
{
	return fail("%s: %s (%s)", what, mbox_strerror(r), mbox_last_error(m));
}

/* Wall clock, the clock of DEADLINE_NS. */
static int64_t
real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
parse_u64(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	return (errno || end == s || *end || s[0] == '-') ? -EINVAL : 0;
}

/* Receive exactly one message into *msg; 3 when none came in time. */
static int
recv_one(mbox *m, const char *mailbox, uint64_t lease_ms, mbox_msg **msg)
{
	size_t n = 0;
	int r;

	r = mbox_recv(m, mailbox, 1, RECV_WAIT_MS, lease_ms, msg, &n);
	if (r < 0)
		return fail_call(m, "recv", r);
	if (n == 0) {
		fprintf(stderr, "%s: no message came in %d ms\n", prog,
			RECV_WAIT_MS);
		return 3;
	}
	return 0;
}

/* The counters of mailbox, from LIST. */
static int
counters(mbox *m, const char *mailbox, mbox_mailbox_info *out)
{
	mbox_mailbox_info *list = NULL;
	size_t n = 0, i;
	int r;

	r = mbox_list(m, &list, &n);
	if (r < 0)
		return fail_call(m, "list", r);
	for (i = 0; i < n; i++) {
		if (strcmp(list[i].name, mailbox) == 0)
			break;
	}
	if (i < n) {
		*out = list[i];
		out->name = NULL;
	}
	mbox_list_free(list, n);
	return i < n ? 0 : fail("mailbox %s is not listed", mailbox);
}

/* Refused as a lost lease must be: -ESTALE with the broker's reason. */
static int
expect_stale(mbox *m, const char *op, int r)
{
	if (r == 0)
		return fail("late %s of an expired lease was accepted", op);
	if (r != -ESTALE)
		return fail_call(m, op, r);
	if (!*mbox_last_error(m))
		return fail("late %s refused without a reason from the broker",
			    op);
	driver_say("refused %s: %s", op, mbox_last_error(m));
	return 0;
}

/*
 * The message must stay leased to us while we touch it: nobody else may
 * receive it, the counters show it leased.
 */
static int
check_still_leased(mbox *other, const char *mailbox)
{
	mbox_mailbox_info info;
	mbox_msg *msg = NULL;
	size_t n = 0;
	int r;

	r = mbox_recv(other, mailbox, 1, 0, 0, &msg, &n);
	if (r < 0)
		return fail_call(other, "recv on the second connection", r);
	if (n) {
		r = fail("touched message %" PRIu64
			 " was delivered to another connection",
			 mbox_msg_id(msg));
		mbox_msg_free(msg);
		return r;
	}
	r = counters(other, mailbox, &info);
	if (r)
		return r;
	if (info.leased != 1 || info.ready != 0)
		return fail("touched message not leased: ready=%" PRIu64
			    " leased=%" PRIu64,
			    info.ready, info.leased);
	return 0;
}

static int
touch_rounds(mbox *m, mbox *other, const char *mailbox, uint64_t id,
	     uint64_t lease_ms)
{
	int64_t start = driver_now_ms(), deadline;
	unsigned rounds = 0;
	int r;

	while (driver_now_ms() - start < 3 * (int64_t)lease_ms) {
		driver_sleep_ms((int64_t)lease_ms / 3);
		r = mbox_touch(m, &id, 1, 0, &deadline);
		if (r < 0)
			return fail_call(m, "touch", r);
		if (deadline < real_ns() + (int64_t)lease_ms * 1000000 / 2)
			return fail("touch moved the deadline only %" PRId64
				    " ms ahead, lease %" PRIu64 " ms",
				    (deadline - real_ns()) / 1000000, lease_ms);
		rounds++;
		r = check_still_leased(other, mailbox);
		if (r)
			return r;
	}
	/* An explicit length replaces the delivered one. */
	r = mbox_touch(m, &id, 1, 20 * lease_ms, &deadline);
	if (r < 0)
		return fail_call(m, "touch with a length", r);
	if (deadline < real_ns() + 19 * (int64_t)lease_ms * 1000000)
		return fail("touch for %" PRIu64 " ms set a deadline %" PRId64
			    " ms ahead",
			    20 * lease_ms, (deadline - real_ns()) / 1000000);
	driver_say("touched %u times over %" PRId64 " ms", rounds + 1,
		   driver_now_ms() - start);
	return 0;
}

static int
do_touch(mbox *m, const char *sock, char **argv)
{
	mbox *other = NULL;
	mbox_msg *msg = NULL;
	uint64_t lease_ms, id;
	int r;

	/* Shorter leases leave no room for the touch rounds. */
	if (parse_u64(argv[1], &lease_ms) || lease_ms < 30)
		return bad_args("LEASE_MS (at least 30)", argv[1]);
	if (driver_connect(&other, prog, sock) < 0)
		return 1;
	r = recv_one(m, argv[0], lease_ms, &msg);
	if (r)
		goto out;
	id = mbox_msg_id(msg);
	r = touch_rounds(m, other, argv[0], id, lease_ms);
	if (r)
		goto out;
	r = mbox_ack(m, &id, 1);
	if (r < 0) {
		r = fail_call(m, "ack after touches", r);
		goto out;
	}
	driver_say("acked %" PRIu64, id);
out:
	mbox_msg_free(msg);
	mbox_close(other);
	return r;
}

static int
do_late_ack(mbox *m, char **argv)
{
	mbox_mailbox_info info;
	mbox_msg *msg = NULL;
	uint64_t lease_ms, id;
	int64_t left_ms;
	int r;

	if (parse_u64(argv[1], &lease_ms))
		return bad_args("LEASE_MS", argv[1]);
	r = recv_one(m, argv[0], lease_ms, &msg);
	if (r)
		return r;
	id = mbox_msg_id(msg);
	left_ms = (mbox_msg_deadline_ns(msg) - real_ns() + 500000) / 1000000;
	mbox_msg_free(msg);
	driver_say("received %" PRIu64 " lease_ms %" PRId64, id, left_ms);
	if (left_ms > 60000)
		return fail("lease of %" PRId64 " ms is too long to wait for",
			    left_ms);
	driver_sleep_ms(left_ms + EXPIRY_MARGIN_MS);
	r = counters(m, argv[0], &info);
	if (r)
		return r;
	driver_say("after ready=%" PRIu64 " leased=%" PRIu64, info.ready,
		   info.leased);
	r = expect_stale(m, "touch", mbox_touch(m, &id, 1, 0, NULL));
	if (!r)
		r = expect_stale(m, "nack", mbox_nack(m, &id, 1, 0));
	if (!r)
		r = expect_stale(m, "reject", mbox_reject(m, &id, 1));
	if (!r)
		r = expect_stale(m, "ack", mbox_ack(m, &id, 1));
	return r;
}

static int
do_nack_delay(mbox *m, char **argv)
{
	mbox_mailbox_info info;
	mbox_msg *msg = NULL;
	uint64_t delay_ms, id;
	size_t n = 0;
	int64_t t0;
	int r;

	if (parse_u64(argv[1], &delay_ms))
		return bad_args("DELAY_MS", argv[1]);
	r = recv_one(m, argv[0], 0, &msg);
	if (r)
		return r;
	id = mbox_msg_id(msg);
	mbox_msg_free(msg);
	msg = NULL;
	t0 = driver_now_ms();
	r = mbox_nack(m, &id, 1, delay_ms);
	if (r < 0)
		return fail_call(m, "nack", r);
	r = mbox_recv(m, argv[0], 1, 0, 0, &msg, &n);
	if (r < 0)
		return fail_call(m, "immediate recv", r);
	driver_say("early %zu", n);
	if (n) {
		mbox_msg_free(msg);
		return 0;
	}
	r = counters(m, argv[0], &info);
	if (r)
		return r;
	driver_say("during ready=%" PRIu64 " delayed=%" PRIu64, info.ready,
		   info.delayed);
	r = recv_one(m, argv[0], 0, &msg);
	if (r)
		return r;
	driver_say("redelivered %" PRIu64 " after %" PRId64
		   " ms deliveries %" PRIu32,
		   mbox_msg_id(msg), driver_now_ms() - t0,
		   mbox_msg_deliveries(msg));
	id = mbox_msg_id(msg);
	mbox_msg_free(msg);
	r = mbox_ack(m, &id, 1);
	return r < 0 ? fail_call(m, "ack", r) : 0;
}

static int
do_reject(mbox *m, char **argv)
{
	mbox_msg *msg = NULL;
	uint64_t id;
	int r;

	r = recv_one(m, argv[0], 0, &msg);
	if (r)
		return r;
	id = mbox_msg_id(msg);
	mbox_msg_free(msg);
	r = mbox_reject(m, &id, 1);
	if (r < 0)
		return fail_call(m, "reject", r);
	driver_say("rejected %" PRIu64, id);
	return 0;
}

static int
do_recv_nack(mbox *m, char **argv)
{
	mbox_msg *msg = NULL;
	uint64_t rounds, i, id;
	int r;

	if (parse_u64(argv[1], &rounds) || rounds < 1)
		return bad_args("N", argv[1]);
	for (i = 0; i < rounds; i++) {
		r = recv_one(m, argv[0], 0, &msg);
		if (r)
			return r;
		id = mbox_msg_id(msg);
		driver_say("%" PRIu64 " %" PRIu32, id,
			   mbox_msg_deliveries(msg));
		mbox_msg_free(msg);
		r = mbox_nack(m, &id, 1, 0);
		if (r < 0)
			return fail_call(m, "nack", r);
	}
	return 0;
}

/* Wait (at most 60 s) for path to exist. */
static int
wait_file(const char *path)
{
	int i;

	for (i = 0; i < 600; i++) {
		if (access(path, F_OK) == 0)
			return 0;
		driver_sleep_ms(100);
	}
	return fail("%s did not appear within 60 s", path);
}

static int
do_hold(mbox *m, int argc, char **argv)
{
	uint64_t ids[DRIVER_RECV_MAX], want, lease_ms;
	size_t got;
	int r;

	if (parse_u64(argv[1], &want) || want < 1 || want > DRIVER_RECV_MAX)
		return bad_args("N", argv[1]);
	if (parse_u64(argv[2], &lease_ms))
		return bad_args("LEASE_MS", argv[2]);
	r = driver_recv_ids(m, argv[0], want, RECV_WAIT_MS, lease_ms, ids,
			    &got);
	if (r < 0)
		return fail_call(m, "recv", r);
	if (got < want)
		return fail("only %zu of %" PRIu64 " messages came", got, want);
	if (argc < 4) {
		for (;;)
			pause();
	}
	r = wait_file(argv[3]);
	if (r)
		return r;
	r = mbox_ack(m, ids, got);
	if (r < 0)
		return fail_call(m, "ack of the held messages", r);
	driver_say("acked %zu", got);
	return 0;
}

static int
do_temp(mbox *m, char **argv)
{
	const char *settings[] = {"temp=1", NULL};
	int r;

	r = mbox_create(m, argv[0], settings);
	if (r < 0)
		return fail_call(m, "create temp=1", r);
	r = mbox_bind(m, argv[0], argv[1]);
	if (r < 0)
		return fail_call(m, "bind", r);
	driver_say("ready");
	for (;;)
		pause();
}

/* The child of do_long_waits: answer one request of mailbox. */
static int
serve_one(const char *sock, const char *mailbox)
{
	mbox *s = NULL;
	mbox_msg *req[1];
	size_t n = 0;
	int r;

	if (driver_connect(&s, prog, sock) < 0)
		return 1;
	r = mbox_recv(s, mailbox, 1, RECV_WAIT_MS, 0, req, &n);
	if (r < 0 || n != 1) {
		mbox_close(s);
		return fail("server: no request came (%d)", r);
	}
	r = mbox_reply(s, req[0], "pong", 4, NULL);
	if (r == 0)
		r = mbox_ack(s, (uint64_t[]){mbox_msg_id(req[0])}, 1);
	mbox_msg_free(req[0]);
	mbox_close(s);
	return r < 0 ? fail("server: reply: %d", r) : 0;
}

static int
do_long_waits(mbox *m, const char *sock, char **argv)
{
	/* A year and a day: more than the broker waits in one request. */
	const int64_t long_ms = (365LL + 1) * 24 * 3600 * 1000;
	static char big[MBOX_HEADERS_MAX + 1];
	const char *headers[] = {"k", big, NULL};
	mbox_post_opts opts = {.headers = headers};
	mbox_msg *msgs[1], *reply = NULL;
	const void *data;
	size_t n = 0, len = 0;
	pid_t child;
	int r, status;

	if (mbox_strerror(INT_MIN) == NULL || mbox_strerror(INT_MAX) == NULL)
		return fail("mbox_strerror gave NULL");
	memset(big, 'v', sizeof(big) - 1);
	r = mbox_post(m, argv[0], "x", 1, &opts, NULL);
	if (r != -EMSGSIZE)
		return fail("post with %zu bytes of headers: %d (%s), not "
			    "-EMSGSIZE",
			    sizeof(big), r, mbox_last_error(m));
	r = mbox_post(m, argv[0], "here", 4, NULL, NULL);
	if (r < 0)
		return fail_call(m, "post", r);
	r = mbox_recv(m, argv[0], 1, long_ms, 0, msgs, &n);
	if (r < 0 || n != 1)
		return fail("recv waiting up to a year and a day: %d (%s), %zu "
			    "messages",
			    r, r < 0 ? mbox_last_error(m) : "", n);
	r = mbox_ack(m, (uint64_t[]){mbox_msg_id(msgs[0])}, 1);
	mbox_msg_free(msgs[0]);
	if (r < 0)
		return fail_call(m, "ack", r);
	child = fork();
	if (child < 0)
		return fail("fork: %s", strerror(errno));
	if (child == 0)
		_exit(serve_one(sock, argv[0]));
	r = mbox_call(m, argv[0], "ping", 4, NULL, long_ms, &reply);
	if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0)
		return fail("the serving child failed");
	if (r < 0)
		return fail_call(m, "call with a timeout of a year and a day",
				 r);
	data = mbox_msg_data(reply, &len);
	r = len == 4 && memcmp(data, "pong", 4) == 0
		    ? 0
		    : fail("the reply is not the server's");
	mbox_msg_free(reply);
	if (r == 0)
		driver_say("long waits ok");
	return r;
}

typedef struct Mode {
	const char *name;
	int min_args; /* after MODE */
	int max_args;
} Mode;

static const Mode modes[] = {
	{"touch", 2, 2},  {"late-ack", 2, 2},	{"nack-delay", 2, 2},
	{"reject", 1, 1}, {"recv-nack", 2, 2},	{"hold", 3, 4},
	{"temp", 2, 2},	  {"long-waits", 1, 1},
};

static int
run(mbox *m, const char *sock, const char *mode, int argc, char **argv)
{
	if (strcmp(mode, "touch") == 0)
		return do_touch(m, sock, argv);
	if (strcmp(mode, "late-ack") == 0)
		return do_late_ack(m, argv);
	if (strcmp(mode, "nack-delay") == 0)
		return do_nack_delay(m, argv);
	if (strcmp(mode, "reject") == 0)
		return do_reject(m, argv);
	if (strcmp(mode, "recv-nack") == 0)
		return do_recv_nack(m, argv);
	if (strcmp(mode, "hold") == 0)
		return do_hold(m, argc, argv);
	if (strcmp(mode, "long-waits") == 0)
		return do_long_waits(m, sock, argv);
	return do_temp(m, argv);
}

static int
usage(void)
{
	fprintf(stderr,
		"usage: %s SOCKET MODE ARGS...\n"
		"  touch MAILBOX LEASE_MS | late-ack MAILBOX LEASE_MS\n"
		"  nack-delay MAILBOX DELAY_MS | reject MAILBOX\n"
		"  recv-nack MAILBOX N | hold MAILBOX N LEASE_MS [GOFILE]\n"
		"  temp MAILBOX PATTERN | long-waits MAILBOX\n",
		prog);
	return 2;
}

int
main(int argc, char **argv)
{
	mbox *m = NULL;
	size_t i;
	int nargs, r;

	if (argc < 3)
		return usage();
	nargs = argc - 3;
	for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		if (strcmp(modes[i].name, argv[2]) == 0)
			break;
	}
	if (i == sizeof(modes) / sizeof(modes[0]) ||
	    nargs < modes[i].min_args || nargs > modes[i].max_args)
		return usage();
	alarm(120);

	if (driver_connect(&m, prog, argv[1]) < 0)
		return 1;
	r = run(m, argv[1], argv[2], nargs, argv + 3);
	mbox_close(m);
	return r;
}
