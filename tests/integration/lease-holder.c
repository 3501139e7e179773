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
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "mbox.h"
#include "driver-util.h"

int
main(int argc, char **argv)
{
	mbox *m = NULL;
	size_t want, got;
	int64_t wait_ms;
	int r;

	if (argc < 4 || argc > 5) {
		fprintf(stderr, "usage: %s SOCKET MAILBOX N [WAIT_SECONDS]\n",
			argv[0]);
		return 2;
	}
	want = strtoul(argv[3], NULL, 10);
	if (want < 1 || want > DRIVER_RECV_MAX) {
		fprintf(stderr, "%s: N must be 1..%u\n", argv[0],
			DRIVER_RECV_MAX);
		return 2;
	}
	wait_ms = 1000 * (int64_t)(argc == 5 ? atoi(argv[4]) : 10);
	alarm(300);

	if (driver_connect(&m, argv[0], argv[1]) < 0)
		return 1;
	r = driver_recv_ids(m, argv[2], want, wait_ms, 0, NULL, &got);
	if (r < 0) {
		fprintf(stderr, "%s: recv: %s (%s)\n", argv[0],
			mbox_strerror(r), mbox_last_error(m));
		mbox_close(m);
		return 1;
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
