/*
 * bench-flow.h - the two ways mbox-bench moves messages through a broker:
 * clients with one post in flight each (mbox_post), and the flow of
 * batching producers and consumers at once on one mailbox.
 */
#ifndef BENCH_FLOW_H
#define BENCH_FLOW_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct Producer Producer;

/*
 * producers_start - n threads, each with its own connection and one post
 * in flight, post msgs messages of size bytes to mailbox in all; each
 * connects, then waits on start (which must count them). Exits when a
 * thread cannot be created.
 */
Producer *producers_start(const char *sock, const char *mailbox, unsigned n,
			  size_t msgs, size_t size, pthread_barrier_t *start);
/* Wait for the producers, free them; their first error (said), or 0. */
int producers_join(Producer *p, unsigned n);
/* *secs for msgs posts by n such producers, from the start line on. */
int post_clients(const char *sock, const char *mailbox, unsigned n, size_t msgs,
		 size_t size, double *secs);

/* One run of producers and consumers at once on one mailbox. */
typedef struct FlowSpec {
	const char *sock;
	const char *mailbox;
	size_t size;	      /* payload bytes */
	unsigned producers;   /* threads posting with mbox_post_batch */
	unsigned depth;	      /* messages per batch, 1..1024 */
	size_t posts;	      /* messages posted in all */
	unsigned consumers;   /* threads taking with mbox_recv */
	unsigned recv_batch;  /* most messages per recv (1..1024), one ack */
	unsigned window;      /* 0: consumers recv; else they subscribe with
				 this window and ack recv_batch at a time */
	size_t acks;	      /* messages taken and acked in all */
	size_t live;	      /* most posted and not acked at once, 0 = any */
	const char *progress; /* label of progress lines on stderr, or NULL */
} FlowSpec;

typedef struct FlowResult {
	double secs;	  /* from the start line to the last post or ack */
	size_t peak_live; /* most messages posted (or being) and not acked */
} FlowResult;

/*
 * flow_run - run spec; consumers take exactly spec->acks messages (from
 * whatever the mailbox holds: a backlog is taken from its head). A run
 * in which nothing moved for STALL_S fails. 0, or a negative errno after
 * saying what failed.
 */
int flow_run(const FlowSpec *spec, FlowResult *out);

#endif
