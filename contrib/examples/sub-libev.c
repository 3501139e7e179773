/*
 * sub-libev.c - a libmbox push subscription driven by an external libev
 * loop: print COUNT messages of MAILBOX, one per line, acking each, then
 * exit 0.
 *
 *     sub-libev [-S SOCKET] MAILBOX COUNT
 *
 * Build against an installed libmbox:
 *     cc sub-libev.c $(pkg-config --cflags --libs libmbox) -lev -o sub-libev
 *
 * The pattern, for any event loop (libev, libuv, glib, a poll() of your
 * own): subscribe once, watch mbox_fd() for readability, call
 * mbox_dispatch() when it is readable, and call it again, without waiting
 * for the fd, while mbox_pending() says libmbox holds pushes it has
 * already read (see sub_dispatch below for why that happens).
 */
/* getopt's optarg and optind, also under a strict -std=c11. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <ev.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mbox.h>

/* At most this many pushed messages unacked at a time: the broker stops
 * pushing to us when we hold 16 and resumes with each ack. */
#define WINDOW 16u

#define container_of(ptr, type, member)                                        \
	((type *)(void *)((char *)(ptr)-offsetof(type, member)))

typedef struct Sub {
	mbox *m;
	struct ev_loop *loop;
	ev_io io;		 /* mbox_fd(m) is readable */
	ev_idle idle;		 /* pushes already read are waiting in m */
	unsigned long long want; /* messages to print before we stop, >= 1 */
	unsigned long long got;	 /* printed and acked so far */
	int err;		 /* first error, 0 if none */
} Sub;

/* End the loop; the first error (if any) decides the exit status. */
static void
sub_stop(Sub *s, int err)
{
	if (err && !s->err)
		s->err = err;
	ev_break(s->loop, EVBREAK_ALL);
}

/*
 * Called by mbox_dispatch for every pushed message; we own msg. Ack only
 * once the line is flushed: if we die in between, the broker gives the
 * message to someone else (at-least-once delivery).
 */
static void
sub_on_message(void *ctx, mbox_msg *msg)
{
	Sub *s = ctx;
	uint64_t id = mbox_msg_id(msg);
	const void *data;
	size_t len;
	int r;

	if (s->err || s->got >= s->want) {
		/* The window let the broker push more than we asked for.
		 * We do not ack it: the lease ends when mbox_close() closes
		 * the connection, and the broker puts it back at its place
		 * in line for the next consumer. */
		mbox_msg_free(msg);
		return;
	}
	data = mbox_msg_data(msg, &len);
	if (fwrite(data, 1, len, stdout) != len || putchar('\n') == EOF ||
	    fflush(stdout) == EOF) {
		r = -errno;
		fprintf(stderr, "sub-libev: writing message %llu: %s\n",
			(unsigned long long)id, strerror(errno));
		mbox_msg_free(msg);
		sub_stop(s, r ? r : -EIO);
		return;
	}
	/* A blocking call in a callback is allowed; while it waits for its
	 * reply, libmbox may read further pushes into its queue. */
	r = mbox_ack(s->m, &id, 1);
	mbox_msg_free(msg);
	if (r < 0) {
		fprintf(stderr, "sub-libev: ack of message %llu: %s (%s)\n",
			(unsigned long long)id, mbox_strerror(r),
			mbox_last_error(s->m));
		sub_stop(s, r);
		return;
	}
	if (++s->got == s->want)
		sub_stop(s, 0);
}

/*
 * Hand out what the socket holds, then decide whether to come back
 * without waiting for the fd.
 *
 * Why the idle watcher: a blocking call (the mbox_ack in our callback,
 * or mbox_subscribe itself) reads frames from the socket until its reply
 * comes, and keeps any pushes it meets in libmbox's queue. Those bytes
 * have left the socket, so the fd may never become readable for them
 * again, and a loop that only watches the fd would sit on them forever.
 * An ev_idle watcher runs on the next loop iteration in which nothing
 * else is pending, so the queue is drained without starving other
 * watchers (an inline `while (mbox_pending(m))` would also work, but
 * holds the loop for as long as the broker keeps pushing).
 */
static void
sub_dispatch(Sub *s)
{
	int r = mbox_dispatch(s->m, sub_on_message, s);

	if (r == -ENOENT) {
		/* The broker ended the subscription: the mailbox was deleted.
		 * mbox_last_error says which and why. */
		fprintf(stderr, "sub-libev: %s\n", mbox_last_error(s->m));
		sub_stop(s, r);
		return;
	}
	if (r < 0) {
		fprintf(stderr, "sub-libev: receiving pushes: %s\n",
			mbox_strerror(r));
		sub_stop(s, r);
		return;
	}
	if (!s->err && s->got < s->want && mbox_pending(s->m) > 0)
		ev_idle_start(s->loop, &s->idle);
	else
		ev_idle_stop(s->loop, &s->idle);
}

static void
sub_on_readable(EV_P_ ev_io *w, int revents)
{
	(void)EV_A;
	(void)revents;
	sub_dispatch(container_of(w, Sub, io));
}

static void
sub_on_idle(EV_P_ ev_idle *w, int revents)
{
	(void)EV_A;
	(void)revents;
	sub_dispatch(container_of(w, Sub, idle));
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: sub-libev [-S SOCKET] MAILBOX COUNT\n"
		   "Print COUNT pushed messages of MAILBOX, one per line, "
		   "acking each.\n");
}

int
main(int argc, char **argv)
{
	const char *sock = NULL, *mailbox;
	Sub s = {.err = 0};
	char *end;
	int c, r;

	while ((c = getopt(argc, argv, "S:h")) != -1) {
		switch (c) {
		case 'S':
			sock = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 2) {
		usage(stderr);
		return 2;
	}
	mailbox = argv[optind];
	errno = 0;
	s.want = strtoull(argv[optind + 1], &end, 10);
	if (errno || end == argv[optind + 1] || *end || s.want == 0 ||
	    argv[optind + 1][0] == '-') {
		fprintf(stderr,
			"sub-libev: COUNT must be a positive number, "
			"not '%s'\n",
			argv[optind + 1]);
		return 2;
	}

	r = mbox_connect(&s.m, sock);
	if (r < 0) {
		fprintf(stderr, "sub-libev: connecting to %s: %s\n",
			sock ? sock : "the default socket", mbox_strerror(r));
		return 1;
	}
	/* Window 16, the mailbox's own lease, shared (not exclusive). */
	r = mbox_subscribe(s.m, mailbox, WINDOW, 0, 0, NULL);
	if (r < 0) {
		fprintf(stderr, "sub-libev: subscribing to %s: %s (%s)\n",
			mailbox, mbox_strerror(r), mbox_last_error(s.m));
		mbox_close(s.m);
		return 1;
	}

	s.loop = ev_default_loop(0);
	if (!s.loop) {
		fprintf(stderr, "sub-libev: cannot initialise libev\n");
		mbox_close(s.m);
		return 1;
	}
	ev_io_init(&s.io, sub_on_readable, mbox_fd(s.m), EV_READ);
	ev_io_start(s.loop, &s.io);
	ev_idle_init(&s.idle, sub_on_idle);
	/* mbox_subscribe may have read the first pushes with its reply. */
	if (mbox_pending(s.m) > 0)
		ev_idle_start(s.loop, &s.idle);

	ev_run(s.loop, 0);

	/* Stop every watcher before the handle they point at goes away. */
	ev_idle_stop(s.loop, &s.idle);
	ev_io_stop(s.loop, &s.io);
	mbox_close(s.m);
	return s.err ? 1 : 0;
}
