/*
 * lease-holder.c - integration test driver: take messages and hold them.
 *
 *   lease-holder-driver SOCKET MAILBOX N [WAIT_SECONDS]
 *
 * Connects to the broker at SOCKET, receives N messages of MAILBOX without
 * acknowledging them (waiting up to WAIT_SECONDS, default 10, in all), prints
 * each id on its own line (flushed, so a test can read them at once), then
 * sleeps holding the leases until it is killed. The test kills it with
 * SIGKILL to play a reader that dies mid-work (SPEC 3.3, reader death).
 *
 * It never outlives a forgotten test: alarm() ends it after 300 s.
 * Exit status: 1 when fewer than N messages came, 2 on bad usage.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mbox.h"

/* The most one RECV may ask for (doc/protocol.md, RECV). */
#define HOLD_MAX 1024u

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
main(int argc, char **argv)
{
	mbox *m = NULL;
	mbox_msg *msgs[HOLD_MAX];
	size_t want, got = 0, n, i;
	int64_t deadline;
	int r;

	if (argc < 4 || argc > 5) {
		fprintf(stderr, "usage: %s SOCKET MAILBOX N [WAIT_SECONDS]\n",
			argv[0]);
		return 2;
	}
	want = strtoul(argv[3], NULL, 10);
	if (want < 1 || want > HOLD_MAX) {
		fprintf(stderr, "%s: N must be 1..%u\n", argv[0], HOLD_MAX);
		return 2;
	}
	deadline = now_ms() + 1000 * (argc == 5 ? atoi(argv[4]) : 10);
	alarm(300);

	r = mbox_connect(&m, argv[1]);
	if (r < 0) {
		fprintf(stderr, "%s: connect %s: %s\n", argv[0], argv[1],
			mbox_strerror(r));
		return 1;
	}
	while (got < want) {
		int64_t left = deadline - now_ms();

		if (left <= 0)
			break;
		r = mbox_recv(m, argv[2], want - got, left, 0, msgs, &n);
		if (r < 0) {
			fprintf(stderr, "%s: recv: %s (%s)\n", argv[0],
				mbox_strerror(r), mbox_last_error(m));
			mbox_close(m);
			return 1;
		}
		for (i = 0; i < n; i++) {
			printf("%" PRIu64 "\n", mbox_msg_id(msgs[i]));
			/* Freeing the message object does not ack it. */
			mbox_msg_free(msgs[i]);
		}
		fflush(stdout);
		got += n;
	}
	if (got < want) {
		fprintf(stderr, "%s: only %zu of %zu messages came\n", argv[0],
			got, want);
		mbox_close(m);
		return 1;
	}
	/* Hold the leases until killed; the connection stays open. */
	for (;;)
		pause();
}
