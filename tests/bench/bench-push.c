/*
 * bench-push.c - the first workloads of mbox-bench (see bench-push.h):
 * draining with recv+ack, the push subscription grid and the round trips.
 */
#include "config.h"

#include <errno.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench-flow.h"
#include "bench-push.h"
#include "bench-util.h"

#define RTT_WARMUP 20u /* round trips before measuring */

typedef struct Rtt {
	const char *sock;
	const char *mailbox;
	unsigned window; /* 0: the receiver recvs; else it subscribes */
	size_t total;	 /* messages the receiver expects (warm-up too) */
	double *samples; /* seconds, one per measured round trip */
	sem_t ready;	 /* receiver connected and about to wait */
	sem_t got;	 /* receiver has taken (and acked) one message */
	int err;
	char what[WHAT_MAX];
} Rtt;

/* One run of the push grid, shared by its subscriber threads. */
typedef struct PushRun {
	const char *sock;
	const char *mailbox;
	unsigned window;	  /* of each subscription */
	unsigned ack_batch;	  /* ids per ack at most */
	size_t total;		  /* messages posted, to be acked */
	atomic_size_t acked;	  /* by all subscribers so far */
	atomic_bool stop;	  /* all acked, or someone failed */
	double end;		  /* now_s() of the last ack */
	pthread_barrier_t *start; /* subscribed, producers connected */
} PushRun;

typedef struct Subscriber {
	pthread_t thread;
	PushRun *run;
	size_t got; /* messages this one acked */
	int err;    /* first error, 0 if none */
	char what[WHAT_MAX];
} Subscriber;

/* Workload b: drain o->messages, BATCH at a time, acking each batch. */
int
bench_drain(const Options *o, const char *sock, const char *mailbox,
	    double *secs)
{
	mbox_msg *msgs[BATCH];
	uint64_t ids[BATCH];
	mbox *m = NULL;
	size_t done = 0, n, i;
	char what[WHAT_MAX];
	double t0;
	int r;

	if (connect_or_say(&m, sock, what, sizeof(what)) < 0) {
		fprintf(stderr, "mbox-bench: %s\n", what);
		return -1;
	}
	t0 = now_s();
	while (done < o->messages) {
		r = mbox_recv(m, mailbox, BATCH, 5000, 0, msgs, &n);
		if (r < 0 || n == 0) {
			fprintf(stderr,
				"mbox-bench: recv after %zu of %zu: %s\n", done,
				o->messages,
				r < 0 ? mbox_strerror(r) : "nothing in 5 s");
			mbox_close(m);
			return -1;
		}
		for (i = 0; i < n; i++) {
			ids[i] = mbox_msg_id(msgs[i]);
			mbox_msg_free(msgs[i]);
		}
		r = mbox_ack(m, ids, n);
		if (r < 0) {
			fprintf(stderr, "mbox-bench: ack: %s (%s)\n",
				mbox_strerror(r), mbox_last_error(m));
			mbox_close(m);
			return -1;
		}
		done += n;
	}
	*secs = now_s() - t0;
	mbox_close(m);
	return 0;
}

/* Ack ids[0..*n) and count them in run; *n becomes 0. */
static int
subscriber_ack(Subscriber *sub, mbox *m, uint64_t *ids, size_t *n)
{
	PushRun *run = sub->run;
	size_t prev;
	int r = mbox_ack(m, ids, *n);

	if (r < 0) {
		snprintf(sub->what, sizeof(sub->what), "ack: %s (%s)",
			 mbox_strerror(r), mbox_last_error(m));
		return r;
	}
	sub->got += *n;
	prev = atomic_fetch_add(&run->acked, *n);
	if (prev < run->total && prev + *n >= run->total) {
		/* Only one thread makes the count reach total. */
		run->end = now_s();
		atomic_store(&run->stop, true);
	}
	*n = 0;
	return 0;
}

/*
 * A push subscriber: subscribe, wait at the start line, then take pushed
 * messages with mbox_next and ack them, until all subscribers together
 * have acked run->total. Waits are short (50 ms) so that it notices when
 * the others finished the run; a run in which no subscriber acked
 * anything for STALL_S fails.
 */
static void *
subscriber_run(void *arg)
{
	Subscriber *sub = arg;
	PushRun *run = sub->run;
	uint64_t ids[1024];
	size_t n = 0, seen = 0, acked;
	mbox *m = NULL;
	mbox_msg *msg;
	double last;
	int r;

	sub->err = connect_or_say(&m, run->sock, sub->what, sizeof(sub->what));
	if (!sub->err) {
		r = mbox_subscribe(m, run->mailbox, run->window, 0, 0, NULL);
		if (r < 0) {
			sub->err = r;
			snprintf(sub->what, sizeof(sub->what),
				 "subscribe: %s (%s)", mbox_strerror(r),
				 mbox_last_error(m));
		}
	}
	pthread_barrier_wait(run->start);
	last = now_s();
	while (!sub->err && !atomic_load(&run->stop)) {
		/* Ack a partial batch as soon as nothing more is there:
		 * holding ids while the window is full would stall. */
		r = mbox_next(m, n ? 0 : 50, &msg);
		if (r == -ETIMEDOUT) {
			acked = atomic_load(&run->acked);
			if (n) {
				sub->err = subscriber_ack(sub, m, ids, &n);
			} else if (acked != seen) {
				seen = acked; /* the others make progress */
				last = now_s();
			} else if (now_s() - last > STALL_S) {
				sub->err = -ETIMEDOUT;
				snprintf(sub->what, sizeof(sub->what),
					 "no ack for %.0f s, %zu of %zu acked",
					 STALL_S, acked, run->total);
			}
			continue;
		}
		if (r < 0) {
			sub->err = r;
			snprintf(sub->what, sizeof(sub->what), "next: %s (%s)",
				 mbox_strerror(r), mbox_last_error(m));
			break;
		}
		ids[n++] = mbox_msg_id(msg);
		mbox_msg_free(msg);
		if (n >= run->ack_batch)
			sub->err = subscriber_ack(sub, m, ids, &n);
	}
	if (sub->err)
		atomic_store(&run->stop, true); /* the others need not wait */
	mbox_close(m);
	return NULL;
}

/*
 * Workload d, one point of the grid: nsubs subscribers with window
 * consume o->messages while o->producers post them; *secs from the start
 * of the posts to the last ack.
 */
int
bench_push(const Options *o, const char *sock, const char *mailbox,
	   unsigned nsubs, unsigned window, double *secs)
{
	PushRun run = {
		.sock = sock,
		.mailbox = mailbox,
		.window = window,
		.ack_batch = o->ack_batch < window ? o->ack_batch : window,
		.total = o->messages,
	};
	pthread_barrier_t start;
	Subscriber *subs;
	Producer *p;
	double t0;
	unsigned i;
	int err;

	subs = calloc(nsubs, sizeof(*subs));
	if (!subs)
		return -ENOMEM;
	atomic_init(&run.acked, 0);
	atomic_init(&run.stop, false);
	run.start = &start;
	pthread_barrier_init(&start, NULL, nsubs + o->producers + 1);
	for (i = 0; i < nsubs; i++) {
		subs[i].run = &run;
		thread_start(&subs[i].thread, subscriber_run, &subs[i]);
	}
	p = producers_start(sock, mailbox, o->producers, o->messages, o->size,
			    &start);
	pthread_barrier_wait(&start);
	t0 = now_s();
	err = producers_join(p, o->producers);
	if (err)
		atomic_store(&run.stop, true);
	for (i = 0; i < nsubs; i++)
		pthread_join(subs[i].thread, NULL);
	for (i = 0; i < nsubs; i++) {
		if (subs[i].err && !err) {
			fprintf(stderr,
				"mbox-bench: push, %u subscriber%s, window "
				"%u: subscriber %u: %s\n",
				nsubs, nsubs == 1 ? "" : "s", window, i,
				subs[i].what);
			err = subs[i].err;
		}
	}
	*secs = run.end - t0;
	pthread_barrier_destroy(&start);
	free(subs);
	return err;
}

static void *
rtt_receiver(void *arg)
{
	Rtt *t = arg;
	mbox *m = NULL;
	mbox_msg *msg;
	size_t i, n, len;
	uint64_t sent, id;
	const void *d;
	int r;

	t->err = connect_or_say(&m, t->sock, t->what, sizeof(t->what));
	if (!t->err && t->window) {
		r = mbox_subscribe(m, t->mailbox, t->window, 0, 0, NULL);
		if (r < 0) {
			t->err = r;
			snprintf(t->what, sizeof(t->what), "subscribe: %s (%s)",
				 mbox_strerror(r), mbox_last_error(m));
		}
	}
	sem_post(&t->ready);
	for (i = 0; t->err == 0 && i < t->total; i++) {
		if (t->window) {
			r = mbox_next(m, 10000, &msg);
			n = r == 0;
		} else {
			r = mbox_recv(m, t->mailbox, 1, 10000, 0, &msg, &n);
		}
		if (r < 0 || n == 0) {
			t->err = r < 0 ? r : -ETIMEDOUT;
			snprintf(t->what, sizeof(t->what), "%s: %s",
				 t->window ? "next" : "recv",
				 mbox_strerror(t->err));
			break;
		}
		/* The payload is the sender's CLOCK_MONOTONIC at post time. */
		sent = 0;
		d = mbox_msg_data(msg, &len);
		if (len >= sizeof(sent))
			memcpy(&sent, d, sizeof(sent));
		if (i >= RTT_WARMUP)
			t->samples[i - RTT_WARMUP] = (now_ns() - sent) / 1e9;
		id = mbox_msg_id(msg);
		mbox_msg_free(msg);
		r = mbox_ack(m, &id, 1);
		if (r < 0) {
			t->err = r;
			snprintf(t->what, sizeof(t->what), "ack: %s",
				 mbox_strerror(r));
		}
		sem_post(&t->got);
	}
	sem_post(&t->got); /* never leave the sender waiting on an error */
	mbox_close(m);
	return NULL;
}

/*
 * Workload c: round trips; fills *median and *p99 (seconds). The receiver
 * waits in recv, or with window > 0 is a subscriber waiting in mbox_next.
 */
int
bench_rtt(const Options *o, const char *sock, const char *mailbox,
	  unsigned window, double *median, double *p99)
{
	Rtt t = {.sock = sock, .mailbox = mailbox, .window = window};
	pthread_t thread;
	mbox *m = NULL;
	char what[WHAT_MAX];
	/* --size bytes like every other workload, the send time in front. */
	size_t len = o->size < sizeof(uint64_t) ? sizeof(uint64_t) : o->size;
	uint8_t *payload;
	size_t i, k;
	int r, err = 0;

	t.total = o->count + RTT_WARMUP;
	t.samples = calloc(o->count, sizeof(double));
	payload = calloc(1, len);
	if (!t.samples || !payload) {
		free(t.samples);
		free(payload);
		return -ENOMEM;
	}
	sem_init(&t.ready, 0, 0);
	sem_init(&t.got, 0, 0);
	if (connect_or_say(&m, sock, what, sizeof(what)) < 0) {
		fprintf(stderr, "mbox-bench: %s\n", what);
		free(t.samples);
		free(payload);
		return -1;
	}
	thread_start(&thread, rtt_receiver, &t);
	sem_wait(&t.ready);
	/* Give the receiver a moment to be waiting in recv the first time. */
	sleep_ms(20);
	for (i = 0; i < t.total && !t.err; i++) {
		uint64_t sent = now_ns();

		memcpy(payload, &sent, sizeof(sent));
		r = mbox_post(m, mailbox, payload, len, NULL, NULL);
		if (r < 0) {
			fprintf(stderr, "mbox-bench: rtt post: %s (%s)\n",
				mbox_strerror(r), mbox_last_error(m));
			err = r;
			break;
		}
		sem_wait(&t.got);
	}
	if (err) {
		/* The receiver waits at most 10 s per message, then stops. */
		fprintf(stderr, "mbox-bench: waiting for the receiver\n");
	}
	pthread_join(thread, NULL);
	mbox_close(m);
	if (!err && t.err) {
		fprintf(stderr, "mbox-bench: rtt receiver: %s\n", t.what);
		err = t.err;
	}
	if (!err) {
		qsort(t.samples, o->count, sizeof(double), cmp_double);
		k = o->count / 2;
		*median = o->count % 2 ? t.samples[k]
				       : (t.samples[k - 1] + t.samples[k]) / 2;
		/* Nearest rank: the smallest sample >= 99 % of them. */
		k = (o->count * 99 + 99) / 100;
		*p99 = t.samples[k ? k - 1 : 0];
	}
	sem_destroy(&t.ready);
	sem_destroy(&t.got);
	free(t.samples);
	free(payload);
	return err;
}

/* Workload push: the throughput grid, then the round trip. */
int
bench_push_all(const Options *o, const char *sock, const char *mailbox,
	       const char *rtt_mailbox, Results *res)
{
	unsigned i, j;
	int err = 0;

	for (i = 0; !err && i < o->subscribers.n; i++)
		for (j = 0; !err && j < o->windows.n; j++)
			err = bench_push(o, sock, mailbox, o->subscribers.v[i],
					 o->windows.v[j], &res->push_s[i][j]);
	if (!err)
		err = bench_rtt(o, sock, rtt_mailbox, PUSH_RTT_WINDOW,
				&res->push_med, &res->push_p99);
	return err;
}
