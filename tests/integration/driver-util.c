/*
 * driver-util.c - what the integration test drivers share (driver-util.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "driver-util.h"

void
driver_say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

int64_t
driver_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
driver_sleep_ms(int64_t ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int
driver_connect(mbox **m, const char *prog, const char *sock)
{
	int r = mbox_connect(m, sock);

	if (r < 0)
		fprintf(stderr, "%s: connect %s: %s\n", prog,
			sock ? sock : "(default)", mbox_strerror(r));
	return r;
}

int
driver_recv_ids(mbox *m, const char *mailbox, size_t want, int64_t wait_ms,
		uint64_t lease_ms, uint64_t *ids, size_t *got)
{
	mbox_msg *msgs[DRIVER_RECV_MAX];
	int64_t until = driver_now_ms() + wait_ms;
	size_t n, i;
	int r;

	*got = 0;
	if (want > DRIVER_RECV_MAX)
		return -EINVAL;
	while (*got < want) {
		int64_t left = until - driver_now_ms();

		/* A wait < 0 would be forever. */
		if (left <= 0)
			break;
		r = mbox_recv(m, mailbox, want - *got, left, lease_ms, msgs,
			      &n);
		if (r < 0)
			return r;
		for (i = 0; i < n; i++) {
			if (ids)
				ids[*got + i] = mbox_msg_id(msgs[i]);
			driver_say("%" PRIu64, mbox_msg_id(msgs[i]));
			mbox_msg_free(msgs[i]);
		}
		*got += n;
	}
	return 0;
}
