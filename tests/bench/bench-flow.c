/*
 * bench-flow.c - posting clients and the producer/consumer flow of
 * mbox-bench (see bench-flow.h).
 *
 * The flow's threads share one Flow under a mutex, taken once per batch:
 * producers reserve a batch of posts before sending it (so that no more
 * than spec->posts go out, and the live cap holds), consumers reserve the
 * messages they ask for (so that exactly spec->acks are taken, even from
 * a mailbox that holds more) and give back what recv did not fill.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench-flow.h"
#include "bench-util.h"

#define FLOW_WAIT_MS 100 /* a blocked thread looks around this often */
#define PROGRESS_S   5	 /* at most one progress line this often */

struct Producer {
	pthread_t thread;
	const char *sock;
	const char *mailbox;
	size_t n;		  /* messages this producer posts */
	size_t size;		  /* bytes each */
	pthread_barrier_t *start; /* all producers start together */
	int err;		  /* first error, 0 if none */
	char what[WHAT_MAX];
};

static unsigned char *
payload_new(size_t size)
{
	unsigned char *buf = malloc(size);

	for (size_t i = 0; buf && i < size; i++)
		buf[i] = (unsigned char)('a' + i % 26);
	return buf;
}

static void *
producer_run(void *arg)
{
	Producer *p = arg;
	mbox *m = NULL;
	unsigned char *buf = payload_new(p->size);
	size_t i;
	int r;

	if (!buf) {
		p->err = -ENOMEM;
		snprintf(p->what, sizeof(p->what), "out of memory");
	} else {
		p->err = connect_or_say(&m, p->sock, p->what, sizeof(p->what));
	}
	pthread_barrier_wait(p->start);
	for (i = 0; p->err == 0 && i < p->n; i++) {
		memcpy(buf, &i, sizeof(i) < p->size ? sizeof(i) : p->size);
		r = mbox_post(m, p->mailbox, buf, p->size, NULL, NULL);
		if (r < 0) {
			p->err = r;
			snprintf(p->what, sizeof(p->what), "post: %s (%s)",
				 mbox_strerror(r), mbox_last_error(m));
		}
	}
	mbox_close(m);
	free(buf);
	return NULL;
}

Producer *
producers_start(const char *sock, const char *mailbox, unsigned n, size_t msgs,
		size_t size, pthread_barrier_t *start)
{
	Producer *p = calloc(n, sizeof(*p));
	unsigned i;

	if (!p) {
		fprintf(stderr, "mbox-bench: out of memory\n");
		exit(1);
	}
	for (i = 0; i < n; i++) {
		p[i].sock = sock;
		p[i].mailbox = mailbox;
		p[i].n = msgs / n + (i < msgs % n);
		p[i].size = size;
		p[i].start = start;
		thread_start(&p[i].thread, producer_run, &p[i]);
	}
	return p;
}

int
producers_join(Producer *p, unsigned n)
{
	unsigned i;
	int err = 0;

	for (i = 0; i < n; i++)
		pthread_join(p[i].thread, NULL);
	for (i = 0; i < n; i++) {
		if (p[i].err && !err) {
			fprintf(stderr, "mbox-bench: producer %u: %s\n", i,
				p[i].what);
			err = p[i].err;
		}
	}
	free(p);
	return err;
}

int
post_clients(const char *sock, const char *mailbox, unsigned n, size_t msgs,
	     size_t size, double *secs)
{
	pthread_barrier_t start;
	Producer *p;
	double t0;
	int err;

	pthread_barrier_init(&start, NULL, n + 1);
	p = producers_start(sock, mailbox, n, msgs, size, &start);
	pthread_barrier_wait(&start);
	t0 = now_s();
	err = producers_join(p, n);
	*secs = now_s() - t0;
	pthread_barrier_destroy(&start);
	return err;
}

/* What the threads of one flow share; every field under mu. */
typedef struct Flow {
	const FlowSpec *spec;
	pthread_mutex_t mu;
	pthread_cond_t moved;	  /* acked grew, or someone stopped */
	pthread_cond_t done;	  /* running reached 0 */
	pthread_barrier_t start;  /* all connected */
	pthread_barrier_t go;	  /* the clock runs */
	size_t post_claimed;	  /* posts reserved by producers */
	size_t posted;		  /* posts the broker confirmed */
	size_t ack_claimed;	  /* messages asked for by consumers */
	size_t acked;		  /* messages acked */
	size_t peak_live;	  /* max of posted - acked */
	unsigned running;	  /* threads not finished yet */
	double t0, end, progress; /* now_s() of start, last move, last seen */
	bool stop;		  /* someone failed */
	int err;		  /* first error */
	char what[WHAT_MAX];	  /* and what it was */
} Flow;

/* Record the first failure (under mu) and stop everyone. */
static void
flow_fail(Flow *f, int err, const char *who, const char *what)
{
	if (!f->err) {
		f->err = err;
		snprintf(f->what, sizeof(f->what), "%s: %s", who, what);
	}
	f->stop = true;
	pthread_cond_broadcast(&f->moved);
}

/* Under mu: record progress, or fail when nothing moved for STALL_S. */
static void
flow_check_stall(Flow *f, const char *who)
{
	char what[128];

	if (now_s() - f->progress <= STALL_S)
		return;
	snprintf(what, sizeof(what),
		 "nothing moved for %.0f s (%zu of %zu posted, %zu of %zu "
		 "acked)",
		 STALL_S, f->posted, f->spec->posts, f->acked, f->spec->acks);
	flow_fail(f, -ETIMEDOUT, who, what);
}

static void
flow_moved(Flow *f)
{
	f->end = f->progress = now_s();
	pthread_cond_broadcast(&f->moved);
}

static void
flow_exit(Flow *f)
{
	pthread_mutex_lock(&f->mu);
	if (--f->running == 0)
		pthread_cond_signal(&f->done);
	pthread_mutex_unlock(&f->mu);
}

static void
abs_deadline(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Under mu: reserve the next batch of posts, waiting for room under the
 * live cap; 0 when there is nothing left (or the flow stopped). */
static size_t
flow_claim_posts(Flow *f, size_t depth)
{
	const FlowSpec *s = f->spec;
	struct timespec ts;
	size_t k;

	while (!f->stop && f->post_claimed < s->posts) {
		k = s->posts - f->post_claimed;
		k = k < depth ? k : depth;
		if (s->live && k > s->live)
			k = s->live;
		if (!s->live || f->post_claimed + k <= f->acked + s->live) {
			f->post_claimed += k;
			return k;
		}
		abs_deadline(&ts, FLOW_WAIT_MS);
		pthread_cond_timedwait(&f->moved, &f->mu, &ts);
		flow_check_stall(f, "producer");
	}
	return 0;
}

static void *
flow_producer(void *arg)
{
	Flow *f = arg;
	const FlowSpec *s = f->spec;
	unsigned char *buf = payload_new(s->size);
	mbox_post_item *items = calloc(s->depth, sizeof(*items));
	char what[WHAT_MAX] = "out of memory";
	mbox *m = NULL;
	size_t k;
	int r = buf && items ? connect_or_say(&m, s->sock, what, sizeof(what))
			     : -ENOMEM;

	for (unsigned i = 0; items && i < s->depth; i++)
		items[i] = (mbox_post_item){.data = buf, .len = s->size};
	pthread_barrier_wait(&f->start);
	pthread_barrier_wait(&f->go);
	pthread_mutex_lock(&f->mu);
	if (r < 0)
		flow_fail(f, r, "producer", what);
	while ((k = flow_claim_posts(f, s->depth)) > 0) {
		pthread_mutex_unlock(&f->mu);
		r = mbox_post_batch(m, s->mailbox, items, k, NULL);
		if (r < 0)
			snprintf(what, sizeof(what), "post of %zu: %s (%s)", k,
				 mbox_strerror(r), mbox_last_error(m));
		pthread_mutex_lock(&f->mu);
		if (r < 0) {
			flow_fail(f, r, "producer", what);
			break;
		}
		f->posted += k;
		/* Stored and not yet acked: what the broker holds (at most;
		 * acks under way still count). */
		if (f->posted > f->acked && f->posted - f->acked > f->peak_live)
			f->peak_live = f->posted - f->acked;
		flow_moved(f);
	}
	pthread_mutex_unlock(&f->mu);
	mbox_close(m);
	free(items);
	free(buf);
	flow_exit(f);
	return NULL;
}

/* Under mu: reserve up to batch messages to take; 0 when done. */
static size_t
flow_claim_acks(Flow *f, size_t batch)
{
	size_t k;

	if (f->stop || f->ack_claimed >= f->spec->acks)
		return 0;
	k = f->spec->acks - f->ack_claimed;
	k = k < batch ? k : batch;
	f->ack_claimed += k;
	return k;
}

/* recv up to k, ack what came in one request; how many, or an error. */
static int
consumer_take(mbox *m, const char *mailbox, size_t k, mbox_msg **msgs,
	      uint64_t *ids, char *what, size_t size)
{
	size_t n = 0;
	int r = mbox_recv(m, mailbox, k, FLOW_WAIT_MS, 0, msgs, &n);

	if (r < 0) {
		snprintf(what, size, "recv: %s (%s)", mbox_strerror(r),
			 mbox_last_error(m));
		return r;
	}
	for (size_t i = 0; i < n; i++) {
		ids[i] = mbox_msg_id(msgs[i]);
		mbox_msg_free(msgs[i]);
	}
	if (n) {
		r = mbox_ack(m, ids, n);
		if (r < 0) {
			snprintf(what, size, "ack of %zu: %s (%s)", n,
				 mbox_strerror(r), mbox_last_error(m));
			return r;
		}
	}
	return (int)n;
}

/* Under mu: count n more acked; whether the flow is over. */
static bool
flow_acked(Flow *f, size_t n)
{
	if (n) {
		f->acked += n;
		flow_moved(f);
	} else {
		flow_check_stall(f, "consumer");
	}
	return f->stop || f->acked >= f->spec->acks;
}

/*
 * A consumer with a push subscription: take what has come, up to the
 * window, and ack it in one request as soon as nothing more is there
 * (holding ids while the window is full would stall). Only what is left
 * of spec->acks is acked; pushes beyond it go back when the connection
 * closes, so a backlog loses exactly spec->acks messages.
 */
static int
subscriber_take(Flow *f, mbox *m, uint64_t *ids, char *what, size_t size)
{
	const FlowSpec *s = f->spec;
	size_t n = 0, k;
	mbox_msg *msg;
	bool over = false;
	int r = mbox_subscribe(m, s->mailbox, s->window, 0, 0, NULL);

	if (r < 0) {
		snprintf(what, size, "subscribe: %s (%s)", mbox_strerror(r),
			 mbox_last_error(m));
		return r;
	}
	while (!over) {
		r = mbox_next(m, n ? 0 : FLOW_WAIT_MS, &msg);
		if (r == 0) {
			ids[n++] = mbox_msg_id(msg);
			mbox_msg_free(msg);
			if (n < s->window)
				continue;
		} else if (r != -ETIMEDOUT) {
			snprintf(what, size, "next: %s (%s)", mbox_strerror(r),
				 mbox_last_error(m));
			return r;
		}
		pthread_mutex_lock(&f->mu);
		k = flow_claim_acks(f, n);
		pthread_mutex_unlock(&f->mu);
		if (k && (r = mbox_ack(m, ids, k)) < 0) {
			snprintf(what, size, "ack of %zu: %s (%s)", k,
				 mbox_strerror(r), mbox_last_error(m));
			return r;
		}
		pthread_mutex_lock(&f->mu);
		over = flow_acked(f, k) || k < n;
		pthread_mutex_unlock(&f->mu);
		n = 0;
	}
	return 0;
}

static void *
flow_consumer(void *arg)
{
	Flow *f = arg;
	const FlowSpec *s = f->spec;
	mbox_msg **msgs = calloc(s->recv_batch, sizeof(*msgs));
	uint64_t *ids =
		calloc(s->window > s->recv_batch ? s->window : s->recv_batch,
		       sizeof(*ids));
	char what[WHAT_MAX] = "out of memory";
	mbox *m = NULL;
	size_t k;
	int r = msgs && ids ? connect_or_say(&m, s->sock, what, sizeof(what))
			    : -ENOMEM;

	pthread_barrier_wait(&f->start);
	pthread_barrier_wait(&f->go);
	pthread_mutex_lock(&f->mu);
	if (r < 0)
		flow_fail(f, r, "consumer", what);
	if (r == 0 && s->window) {
		pthread_mutex_unlock(&f->mu);
		r = subscriber_take(f, m, ids, what, sizeof(what));
		pthread_mutex_lock(&f->mu);
		if (r < 0)
			flow_fail(f, r, "consumer", what);
	}
	while (!s->window && (k = flow_claim_acks(f, s->recv_batch)) > 0) {
		pthread_mutex_unlock(&f->mu);
		r = consumer_take(m, s->mailbox, k, msgs, ids, what,
				  sizeof(what));
		pthread_mutex_lock(&f->mu);
		if (r < 0) {
			flow_fail(f, r, "consumer", what);
			break;
		}
		f->ack_claimed -= k - (size_t)r;
		flow_acked(f, (size_t)r);
	}
	pthread_mutex_unlock(&f->mu);
	mbox_close(m);
	free(ids);
	free(msgs);
	flow_exit(f);
	return NULL;
}

/* Wait for the threads, saying how far they got every PROGRESS_S. */
static void
flow_wait(Flow *f)
{
	double last = now_s();
	struct timespec ts;

	pthread_mutex_lock(&f->mu);
	while (f->running) {
		abs_deadline(&ts, 1000);
		pthread_cond_timedwait(&f->done, &f->mu, &ts);
		if (!f->spec->progress || now_s() - last < PROGRESS_S ||
		    !f->running)
			continue;
		last = now_s();
		fprintf(stderr,
			"mbox-bench: %s: %zu of %zu posted, %zu of %zu acked, "
			"%.0f s\n",
			f->spec->progress, f->posted, f->spec->posts, f->acked,
			f->spec->acks, last - f->t0);
	}
	pthread_mutex_unlock(&f->mu);
}

int
flow_run(const FlowSpec *spec, FlowResult *out)
{
	unsigned n = spec->producers + spec->consumers, i;
	pthread_t *t = calloc(n ? n : 1, sizeof(*t));
	Flow f = {.spec = spec, .running = n};

	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&f.mu, NULL);
	pthread_cond_init(&f.moved, NULL);
	pthread_cond_init(&f.done, NULL);
	pthread_barrier_init(&f.start, NULL, n + 1);
	pthread_barrier_init(&f.go, NULL, n + 1);
	for (i = 0; i < n; i++)
		thread_start(&t[i],
			     i < spec->producers ? flow_producer
						 : flow_consumer,
			     &f);
	/* All connected; the clock starts before anyone moves. */
	pthread_barrier_wait(&f.start);
	f.t0 = f.end = f.progress = now_s();
	pthread_barrier_wait(&f.go);
	flow_wait(&f);
	for (i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	if (f.err)
		fprintf(stderr, "mbox-bench: %s%s%s\n",
			spec->progress ? spec->progress : "",
			spec->progress ? ": " : "", f.what);
	out->secs = f.end - f.t0;
	out->peak_live = f.peak_live;
	pthread_barrier_destroy(&f.go);
	pthread_barrier_destroy(&f.start);
	pthread_cond_destroy(&f.done);
	pthread_cond_destroy(&f.moved);
	pthread_mutex_destroy(&f.mu);
	free(t);
	return f.err;
}
