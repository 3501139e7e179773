/*
 * bench-push.h - the first workloads of mbox-bench: draining a mailbox
 * with recv+ack, push subscriptions (throughput grid) and the post ->
 * recv / post -> push round trips.
 */
#ifndef BENCH_PUSH_H
#define BENCH_PUSH_H

#include "bench-report.h"

/* *secs to drain o->messages from mailbox, BATCH at a time, acked. */
int bench_drain(const Options *o, const char *sock, const char *mailbox,
		double *secs);
/*
 * bench_push - one point of the push grid: nsubs subscribers with window
 * consume o->messages while o->producers post them; *secs from the start
 * of the posts to the last ack.
 */
int bench_push(const Options *o, const char *sock, const char *mailbox,
	       unsigned nsubs, unsigned window, double *secs);
/*
 * bench_rtt - o->count round trips (after a warm-up): the time from a
 * post to the receiver holding the message. The receiver waits in recv,
 * or with window > 0 is a subscriber waiting in mbox_next. *median and
 * *p99 in seconds.
 */
int bench_rtt(const Options *o, const char *sock, const char *mailbox,
	      unsigned window, double *median, double *p99);
/* The push grid, then the push round trip (on rtt_mailbox). */
int bench_push_all(const Options *o, const char *sock, const char *mailbox,
		   const char *rtt_mailbox, Results *res);

#endif
