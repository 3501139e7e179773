/*
 * mbox-bench.c - throughput and latency of mboxd, measured through libmbox.
 *
 * Workloads, run one after the other against one broker (--workload picks
 * some of them; all by default):
 *   post      P producer threads, each with its own connection and one post
 *             in flight, post --messages messages of --size bytes in all
 *             (durable: answered after the store committed them).
 *             recv+ack: one consumer then drains them, recv in batches of
 *             64, and acks each batch in one request.
 *   rtt       a receiver waits in recv; a sender posts one message at a
 *             time (the next only after the previous was received and
 *             acked); each round trip is the time from the post call to the
 *             receiver holding the message, --count times; median and p99.
 *   push      throughput of push subscriptions: for each number of
 *             subscribers S (--subscribers, default 1,4) and window W
 *             (--windows, default 1,64), S threads subscribe to a mailbox
 *             (mbox_subscribe, window W) and take messages with mbox_next,
 *             acking each one (--ack-batch N: up to N ids per ack), while P
 *             producers post --messages messages; timed from the start of
 *             the posts to the last ack. Then the push round trip: as rtt,
 *             but the receiver is a subscriber (window 1) in mbox_next.
 *
 * Two baselines are measured in every run (an fsync'd 1 KiB append, a
 * SOCK_SEQPACKET ping-pong), and the broker's figures are also given as
 * ratios to them, which say more than absolute figures on a noisy machine.
 *
 * By default it starts its own mboxd (--mboxd PATH, else $MBOXD, else
 * ./mboxd) on a fresh temporary directory with --sync full (--sync MODE),
 * and stops it at the end; --socket PATH uses a running broker instead
 * (mailboxes named bench.PID.*, left behind empty).
 *
 * It prints a table, or with --json one JSON object (figures of workloads
 * not run are null). It asserts nothing about timings: it is a measuring
 * tool, not a test.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mbox.h"

#define BATCH	   64u		    /* recv+ack batch */
#define RTT_WARMUP 20u		    /* round trips before measuring */
#define WHAT_MAX   (PATH_MAX + 256) /* an error description */
#define LIST_MAX   8u		    /* entries of --subscribers, --windows */
#define PUSH_RTT_WINDOW                                                        \
	1u /* window of the push round trip's subscriber: one at a time */
#define STALL_S 10.0 /* a push run with no ack for this long failed */

/* Workloads (--workload); the baselines always run. */
enum {
	WL_POST = 0x1, /* post, then recv+ack */
	WL_RTT = 0x2,  /* post -> recv round trip */
	WL_PUSH = 0x4, /* push throughput grid, post -> push round trip */
	WL_ALL = WL_POST | WL_RTT | WL_PUSH,
};

/* A list of small numbers given as "1,4". */
typedef struct List {
	unsigned v[LIST_MAX];
	unsigned n; /* 1..LIST_MAX */
} List;

typedef struct Options {
	const char *mboxd;  /* broker binary to start, unless socket */
	const char *socket; /* existing broker, or NULL */
	const char *sync;   /* --sync of the broker we start */
	size_t size;	    /* payload bytes of the throughput messages */
	unsigned producers; /* posting threads, one connection each */
	size_t messages;    /* messages of the post and recv+ack workloads */
	size_t count;	    /* round trips measured */
	unsigned workloads; /* WL_* bits */
	List subscribers;   /* subscriber counts of the push grid, 1..256 */
	List windows;	    /* windows of the push grid, 1..1024 */
	unsigned ack_batch; /* ids per ack of a push subscriber, 1..1024 */
	bool json;
} Options;

typedef struct Broker {
	char dir[128]; /* TMPDIR (at most 60 bytes) + a template */
	char sock[PATH_MAX];
	pid_t pid; /* 0 when we did not start one */
} Broker;

typedef struct Producer {
	pthread_t thread;
	const char *sock;
	const char *mailbox;
	size_t n;		  /* messages this producer posts */
	size_t size;		  /* bytes each */
	pthread_barrier_t *start; /* all producers start together */
	int err;		  /* first error, 0 if none */
	char what[WHAT_MAX];
} Producer;

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

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void
usage(FILE *f, const char *argv0)
{
	fprintf(f,
		"usage: %s [OPTIONS]\n"
		"Measure mboxd: durable posts/s, recv+ack/s, push "
		"subscription msgs/s,\npost->recv and post->push round "
		"trips.\n\n"
		"  --mboxd PATH      broker to start (default $MBOXD, else "
		"./mboxd)\n"
		"  --socket PATH     use a running broker instead of starting "
		"one\n"
		"  --sync MODE       full|normal|off for the started broker "
		"(default full)\n"
		"  --size BYTES      payload size of post, recv+ack, push "
		"(default 1024)\n"
		"  --producers N     posting clients (default 4)\n"
		"  --messages N      messages of each post and push run "
		"(default 10000)\n"
		"  --count N         round trips measured (default 2000)\n"
		"  --workload LIST   some of post,rtt,push (default all)\n"
		"  --subscribers LIST  subscriber counts of the push runs "
		"(default 1,4)\n"
		"  --windows LIST    subscription windows of the push runs "
		"(default 1,64)\n"
		"  --ack-batch N     ids per ack of a push subscriber, taken "
		"as they come\n"
		"                    (default 1: one ack per message)\n"
		"  --json            print one JSON object instead of a table\n"
		"  -h, --help        this text\n",
		argv0);
}

static int
parse_size(const char *s, size_t min, size_t max, size_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = (size_t)v;
	return 0;
}

/* "1,4" -> {1, 4}: at most LIST_MAX numbers, each in min..max. */
static int
parse_list(const char *s, unsigned min, unsigned max, List *out)
{
	List l = {.n = 0};
	char *end;
	unsigned long v;

	for (;;) {
		if (l.n == LIST_MAX || *s < '0' || *s > '9')
			return -1;
		errno = 0;
		v = strtoul(s, &end, 10);
		if (errno || end == s || v < min || v > max)
			return -1;
		l.v[l.n++] = (unsigned)v;
		if (!*end)
			break;
		if (*end != ',')
			return -1;
		s = end + 1;
	}
	*out = l;
	return 0;
}

/* "post,push" -> WL_POST | WL_PUSH; "all" is every workload. */
static int
parse_workloads(const char *s, unsigned *out)
{
	static const struct {
		const char *name;
		unsigned bit;
	} names[] = {{"post", WL_POST},
		     {"rtt", WL_RTT},
		     {"push", WL_PUSH},
		     {"all", WL_ALL}};
	unsigned bits = 0, i;
	size_t len;

	for (;;) {
		len = strcspn(s, ",");
		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (strlen(names[i].name) == len &&
			    !strncmp(s, names[i].name, len))
				break;
		if (i == sizeof(names) / sizeof(names[0]))
			return -1;
		bits |= names[i].bit;
		if (!s[len])
			break;
		s += len + 1;
	}
	*out = bits;
	return 0;
}

static int
parse_options(int argc, char **argv, Options *o)
{
	enum {
		OPT_MBOXD = 256,
		OPT_SOCKET,
		OPT_SYNC,
		OPT_SIZE,
		OPT_PROD,
		OPT_MSGS,
		OPT_CNT,
		OPT_WORK,
		OPT_SUBS,
		OPT_WIN,
		OPT_ACKB
	};
	static const struct option longopts[] = {
		{"mboxd", required_argument, NULL, OPT_MBOXD},
		{"socket", required_argument, NULL, OPT_SOCKET},
		{"sync", required_argument, NULL, OPT_SYNC},
		{"size", required_argument, NULL, OPT_SIZE},
		{"producers", required_argument, NULL, OPT_PROD},
		{"messages", required_argument, NULL, OPT_MSGS},
		{"count", required_argument, NULL, OPT_CNT},
		{"workload", required_argument, NULL, OPT_WORK},
		{"subscribers", required_argument, NULL, OPT_SUBS},
		{"windows", required_argument, NULL, OPT_WIN},
		{"ack-batch", required_argument, NULL, OPT_ACKB},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *env = getenv("MBOXD");
	size_t v;
	int c;

	*o = (Options){
		.mboxd = env && *env ? env : "./mboxd",
		.sync = "full",
		.size = 1024,
		.producers = 4,
		.messages = 10000,
		.count = 2000,
		.workloads = WL_ALL,
		.subscribers = {.v = {1, 4}, .n = 2},
		.windows = {.v = {1, 64}, .n = 2},
		.ack_batch = 1,
	};
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_MBOXD:
			o->mboxd = optarg;
			break;
		case OPT_SOCKET:
			o->socket = optarg;
			break;
		case OPT_SYNC:
			if (strcmp(optarg, "full") &&
			    strcmp(optarg, "normal") && strcmp(optarg, "off")) {
				fprintf(stderr,
					"--sync: full, normal or off\n");
				return -1;
			}
			o->sync = optarg;
			break;
		case OPT_SIZE:
			if (parse_size(optarg, 8, 64u << 20, &o->size) < 0) {
				fprintf(stderr, "--size: 8 to 64 MiB\n");
				return -1;
			}
			break;
		case OPT_PROD:
			if (parse_size(optarg, 1, 256, &v) < 0) {
				fprintf(stderr, "--producers: 1 to 256\n");
				return -1;
			}
			o->producers = (unsigned)v;
			break;
		case OPT_MSGS:
			if (parse_size(optarg, 1, 100000000, &o->messages) <
			    0) {
				fprintf(stderr, "--messages: 1 to 10^8\n");
				return -1;
			}
			break;
		case OPT_CNT:
			if (parse_size(optarg, 1, 10000000, &o->count) < 0) {
				fprintf(stderr, "--count: 1 to 10^7\n");
				return -1;
			}
			break;
		case OPT_WORK:
			if (parse_workloads(optarg, &o->workloads) < 0) {
				fprintf(stderr, "--workload: a list of post, "
						"rtt, push or all\n");
				return -1;
			}
			break;
		case OPT_SUBS:
			if (parse_list(optarg, 1, 256, &o->subscribers) < 0) {
				fprintf(stderr,
					"--subscribers: up to %u numbers, "
					"1 to 256, separated by commas\n",
					LIST_MAX);
				return -1;
			}
			break;
		case OPT_WIN:
			if (parse_list(optarg, 1, 1024, &o->windows) < 0) {
				fprintf(stderr,
					"--windows: up to %u numbers, 1 to "
					"1024, separated by commas\n",
					LIST_MAX);
				return -1;
			}
			break;
		case OPT_ACKB:
			if (parse_size(optarg, 1, 1024, &v) < 0) {
				fprintf(stderr, "--ack-batch: 1 to 1024\n");
				return -1;
			}
			o->ack_batch = (unsigned)v;
			break;
		case 'j':
			o->json = true;
			break;
		case 'h':
			usage(stdout, "mbox-bench");
			exit(0);
		default:
			usage(stderr, "mbox-bench");
			return -1;
		}
	}
	if (optind != argc) {
		usage(stderr, "mbox-bench");
		return -1;
	}
	return 0;
}

/* Start mboxd on a fresh temporary directory; wait until it answers. */
static int
broker_start(Broker *b, const Options *o)
{
	const char *tmp = getenv("TMPDIR");
	char db[PATH_MAX + 16], log[PATH_MAX + 16];
	unsigned i;

	if (access(o->mboxd, X_OK) < 0) {
		fprintf(stderr,
			"mbox-bench: cannot run %s: %s (use --mboxd PATH, "
			"$MBOXD or --socket PATH)\n",
			o->mboxd, strerror(errno));
		return -1;
	}
	if (!tmp || !*tmp || strlen(tmp) > 60)
		tmp = "/tmp"; /* the socket path must fit in sun_path */
	snprintf(b->dir, sizeof(b->dir), "%s/mbox-bench.XXXXXX", tmp);
	if (!mkdtemp(b->dir)) {
		fprintf(stderr, "mbox-bench: mkdtemp %s: %s\n", b->dir,
			strerror(errno));
		return -1;
	}
	snprintf(b->sock, sizeof(b->sock), "%s/mbox.sock", b->dir);
	snprintf(db, sizeof(db), "%s/mbox.db", b->dir);
	snprintf(log, sizeof(log), "%s/mboxd.log", b->dir);

	b->pid = fork();
	if (b->pid < 0) {
		fprintf(stderr, "mbox-bench: fork: %s\n", strerror(errno));
		b->pid = 0;
		return -1;
	}
	if (b->pid == 0) {
		int in = open("/dev/null", O_RDONLY);
		int out = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (in >= 0)
			dup2(in, 0);
		if (out >= 0) {
			dup2(out, 1);
			dup2(out, 2);
		}
		execl(o->mboxd, o->mboxd, "--foreground", "--socket", b->sock,
		      "--db", db, "--sync", o->sync, (char *)NULL);
		fprintf(stderr, "mbox-bench: exec %s: %s\n", o->mboxd,
			strerror(errno));
		_exit(127);
	}
	/* At most 10 s for the broker to come up. */
	for (i = 0; i < 400; i++) {
		mbox *m = NULL;
		int status;

		if (mbox_connect(&m, b->sock) == 0) {
			int r = mbox_ping(m);

			mbox_close(m);
			if (r == 0)
				return 0;
		}
		if (waitpid(b->pid, &status, WNOHANG) == b->pid) {
			fprintf(stderr,
				"mbox-bench: %s exited during start-up "
				"(%s %d); see %s\n",
				o->mboxd,
				WIFEXITED(status) ? "status" : "signal",
				WIFEXITED(status) ? WEXITSTATUS(status)
						  : WTERMSIG(status),
				log);
			b->pid = 0;
			return -1;
		}
		sleep_ms(25);
	}
	fprintf(stderr, "mbox-bench: %s did not answer on %s within 10 s\n",
		o->mboxd, b->sock);
	return -1;
}

/* Stop the broker we started (SIGTERM, then SIGKILL after 10 s), clean up. */
static void
broker_stop(Broker *b, bool keep_log)
{
	static const char *const files[] = {"mbox.sock", "mbox.db",
					    "mbox.db-wal", "mbox.db-shm",
					    "mboxd.log"};
	char path[PATH_MAX + 16];
	unsigned i;
	int status;

	if (!b->pid)
		return;
	kill(b->pid, SIGTERM);
	for (i = 0; i < 400; i++) {
		if (waitpid(b->pid, &status, WNOHANG) == b->pid)
			break;
		sleep_ms(25);
	}
	if (i == 400) {
		fprintf(stderr, "mbox-bench: mboxd ignored SIGTERM, killing\n");
		kill(b->pid, SIGKILL);
		waitpid(b->pid, &status, 0);
	} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "mbox-bench: mboxd ended with status %d\n",
			status);
		keep_log = true;
	}
	b->pid = 0;
	if (keep_log) {
		fprintf(stderr, "mbox-bench: broker files kept in %s\n",
			b->dir);
		return;
	}
	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", b->dir, files[i]);
		unlink(path);
	}
	if (rmdir(b->dir) < 0)
		fprintf(stderr, "mbox-bench: rmdir %s: %s\n", b->dir,
			strerror(errno));
}

static int
connect_or_say(mbox **m, const char *sock, char *what, size_t size)
{
	int r = mbox_connect(m, sock);

	if (r < 0)
		snprintf(what, size, "connect %s: %s", sock, mbox_strerror(r));
	return r;
}

static void *
producer_run(void *arg)
{
	Producer *p = arg;
	mbox *m = NULL;
	unsigned char *buf;
	size_t i;
	int r;

	buf = malloc(p->size);
	if (!buf) {
		p->err = -ENOMEM;
		snprintf(p->what, sizeof(p->what), "out of memory");
		pthread_barrier_wait(p->start);
		return NULL;
	}
	for (i = 0; i < p->size; i++)
		buf[i] = (unsigned char)('a' + i % 26);
	p->err = connect_or_say(&m, p->sock, p->what, sizeof(p->what));
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

/*
 * Start o->producers threads posting o->messages to mailbox in all; each
 * connects, then waits on start (which must count them). Returns the
 * array for producers_join; exits on a thread that cannot be created.
 */
static Producer *
producers_start(const Options *o, const char *sock, const char *mailbox,
		pthread_barrier_t *start)
{
	Producer *p = calloc(o->producers, sizeof(*p));
	unsigned i;

	if (!p) {
		fprintf(stderr, "mbox-bench: out of memory\n");
		exit(1);
	}
	for (i = 0; i < o->producers; i++) {
		p[i].sock = sock;
		p[i].mailbox = mailbox;
		p[i].n = o->messages / o->producers +
			 (i < o->messages % o->producers);
		p[i].size = o->size;
		p[i].start = start;
		if (pthread_create(&p[i].thread, NULL, producer_run, &p[i])) {
			fprintf(stderr, "mbox-bench: pthread_create failed\n");
			exit(1);
		}
	}
	return p;
}

/* Wait for the producers, free them; their first error, or 0. */
static int
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

/* Workload a: *secs for o->messages durable posts by o->producers. */
static int
bench_post(const Options *o, const char *sock, const char *mailbox,
	   double *secs)
{
	pthread_barrier_t start;
	Producer *p;
	double t0;
	int err;

	pthread_barrier_init(&start, NULL, o->producers + 1);
	p = producers_start(o, sock, mailbox, &start);
	pthread_barrier_wait(&start);
	t0 = now_s();
	err = producers_join(p, o->producers);
	*secs = now_s() - t0;
	pthread_barrier_destroy(&start);
	return err;
}

/* Workload b: drain o->messages, BATCH at a time, acking each batch. */
static int
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
static int
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
		if (pthread_create(&subs[i].thread, NULL, subscriber_run,
				   &subs[i])) {
			fprintf(stderr, "mbox-bench: pthread_create failed\n");
			exit(1);
		}
	}
	p = producers_start(o, sock, mailbox, &start);
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

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * Workload c: round trips; fills *median and *p99 (seconds). The receiver
 * waits in recv, or with window > 0 is a subscriber waiting in mbox_next.
 */
static int
bench_rtt(const Options *o, const char *sock, const char *mailbox,
	  unsigned window, double *median, double *p99)
{
	Rtt t = {.sock = sock, .mailbox = mailbox, .window = window};
	pthread_t thread;
	mbox *m = NULL;
	char what[WHAT_MAX];
	size_t i, k;
	int r, err = 0;

	t.total = o->count + RTT_WARMUP;
	t.samples = calloc(o->count, sizeof(double));
	if (!t.samples)
		return -ENOMEM;
	sem_init(&t.ready, 0, 0);
	sem_init(&t.got, 0, 0);
	if (connect_or_say(&m, sock, what, sizeof(what)) < 0) {
		fprintf(stderr, "mbox-bench: %s\n", what);
		free(t.samples);
		return -1;
	}
	if (pthread_create(&thread, NULL, rtt_receiver, &t)) {
		fprintf(stderr, "mbox-bench: pthread_create failed\n");
		exit(1);
	}
	sem_wait(&t.ready);
	/* Give the receiver a moment to be waiting in recv the first time. */
	sleep_ms(20);
	for (i = 0; i < t.total && !t.err; i++) {
		uint64_t sent = now_ns();

		r = mbox_post(m, mailbox, &sent, sizeof(sent), NULL, NULL);
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
	return err;
}

static int
make_mailbox(const char *sock, const char *name)
{
	mbox *m = NULL;
	int r;

	r = mbox_connect(&m, sock);
	if (r < 0) {
		fprintf(stderr, "mbox-bench: connect %s: %s\n", sock,
			mbox_strerror(r));
		return r;
	}
	r = mbox_create(m, name, NULL);
	if (r < 0 && r != -EEXIST)
		fprintf(stderr, "mbox-bench: create %s: %s (%s)\n", name,
			mbox_strerror(r), mbox_last_error(m));
	else
		r = 0;
	mbox_close(m);
	return r;
}

static int
check_size(const char *sock, size_t size)
{
	mbox *m = NULL;
	size_t max;
	int r = mbox_connect(&m, sock);

	if (r < 0)
		return r;
	max = mbox_max_msg_size(m);
	mbox_close(m);
	if (max && size > max) {
		fprintf(stderr,
			"mbox-bench: --size %zu is over the broker's "
			"maximum of %zu bytes\n",
			size, max);
		return -EMSGSIZE;
	}
	return 0;
}

/*
 * Baselines measured in the same run, so the broker's figures can be read
 * as ratios on a noisy machine: what one fsync'd 1 KiB append costs on the
 * filesystem of the store, and what a SOCK_SEQPACKET ping-pong costs.
 */
static int
baseline_fsync(const char *dir, size_t n, double *rate, double *p50)
{
	char path[PATH_MAX], buf[1024];
	double *t = calloc(n, sizeof(*t)), start;
	int fd, err = 0;

	if (!t)
		return -ENOMEM;
	memset(buf, 'x', sizeof(buf));
	snprintf(path, sizeof(path), "%s/fsync-baseline", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		free(t);
		return -errno;
	}
	start = now_s();
	for (size_t i = 0; i < n && !err; i++) {
		double t0 = now_s();
		if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf) ||
		    fdatasync(fd) < 0)
			err = -errno;
		t[i] = now_s() - t0;
	}
	*rate = n / (now_s() - start);
	qsort(t, n, sizeof(*t), cmp_double);
	*p50 = t[n / 2];
	close(fd);
	unlink(path);
	free(t);
	return err;
}

static void *
pingpong_echo(void *arg)
{
	int fd = *(int *)arg;
	char buf[64];
	ssize_t k;

	while ((k = recv(fd, buf, sizeof(buf), 0)) > 0)
		if (send(fd, buf, (size_t)k, MSG_NOSIGNAL) != k)
			break;
	return NULL;
}

static int
baseline_seqpacket(size_t n, double *p50)
{
	int sv[2];
	pthread_t th;
	double *t = calloc(n, sizeof(*t));
	char buf[16] = "ping";

	if (!t ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		free(t);
		return -errno;
	}
	pthread_create(&th, NULL, pingpong_echo, &sv[1]);
	for (size_t i = 0; i < n; i++) {
		double t0 = now_s();
		if (send(sv[0], buf, sizeof(buf), MSG_NOSIGNAL) < 0 ||
		    recv(sv[0], buf, sizeof(buf), 0) <= 0)
			break;
		t[i] = now_s() - t0;
	}
	shutdown(sv[0], SHUT_RDWR);
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);
	qsort(t, n, sizeof(*t), cmp_double);
	*p50 = t[n / 2];
	free(t);
	return 0;
}

/* What one run measured; a figure of a workload not run stays 0. */
typedef struct Results {
	double post_s, drain_s;		   /* seconds, WL_POST */
	double rtt_med, rtt_p99;	   /* seconds, WL_RTT */
	double push_s[LIST_MAX][LIST_MAX]; /* [subscribers][window], WL_PUSH */
	double push_med, push_p99;	   /* seconds, WL_PUSH */
	double fs_rate, fs_p50, sp_p50;	   /* baselines: /s, s, s */
} Results;

/* What the post -> recv round trip should cost at best: the post's
 * request, its fsync, its reply and the delivery, each a socket hop. */
static double
rtt_model(const Results *r)
{
	return r->fs_p50 + 3 * r->sp_p50;
}

/* ,"key":value with prec decimals, or ,"key":null when the figure was
 * not measured. */
static void
json_num(const char *key, bool have, int prec, double v)
{
	printf(",\"%s\":", key);
	if (have)
		printf("%.*f", prec, v);
	else
		fputs("null", stdout);
}

static void
print_json(const Options *o, const Results *r)
{
	bool post = o->workloads & WL_POST, rtt = o->workloads & WL_RTT;
	bool push = o->workloads & WL_PUSH;
	unsigned i, j;

	printf("{\"sync\":\"%s\",\"size\":%zu,\"producers\":%u,"
	       "\"messages\":%zu",
	       o->socket ? "external" : o->sync, o->size, o->producers,
	       o->messages);
	printf(",\"workloads\":\"%s%s%s%s%s\"", post ? "post" : "",
	       post && (rtt || push) ? "," : "", rtt ? "rtt" : "",
	       rtt && push ? "," : "", push ? "push" : "");
	json_num("post_seconds", post, 6, r->post_s);
	json_num("post_msgs_per_sec", post, 1, o->messages / r->post_s);
	json_num("recv_ack_seconds", post, 6, r->drain_s);
	json_num("recv_ack_msgs_per_sec", post, 1, o->messages / r->drain_s);
	printf(",\"recv_batch\":%u,\"rtt_count\":%zu", BATCH, o->count);
	json_num("rtt_median_us", rtt, 1, r->rtt_med * 1e6);
	json_num("rtt_p99_us", rtt, 1, r->rtt_p99 * 1e6);
	printf(",\"push_ack_batch\":%u,\"push\":[", o->ack_batch);
	for (i = 0; push && i < o->subscribers.n; i++) {
		for (j = 0; j < o->windows.n; j++) {
			double rate = o->messages / r->push_s[i][j];

			printf("%s{\"subscribers\":%u,\"window\":%u,"
			       "\"seconds\":%.6f,\"msgs_per_sec\":%.1f,"
			       "\"per_fsync\":%.3f",
			       i || j ? "," : "", o->subscribers.v[i],
			       o->windows.v[j], r->push_s[i][j], rate,
			       rate / r->fs_rate);
			json_num("per_post", post, 3,
				 rate * r->post_s / o->messages);
			putchar('}');
		}
	}
	printf("],\"push_rtt_window\":%u", PUSH_RTT_WINDOW);
	json_num("push_rtt_median_us", push, 1, r->push_med * 1e6);
	json_num("push_rtt_p99_us", push, 1, r->push_p99 * 1e6);
	printf(",\"fsync_per_sec\":%.1f,\"fsync_p50_us\":%.1f,"
	       "\"seqpacket_rtt_p50_us\":%.1f",
	       r->fs_rate, r->fs_p50 * 1e6, r->sp_p50 * 1e6);
	printf(",\"ratios\":{\"model_us\":%.1f", rtt_model(r) * 1e6);
	json_num("post_per_fsync", post, 3,
		 o->messages / r->post_s / r->fs_rate);
	json_num("recv_ack_per_fsync", post, 3,
		 o->messages / r->drain_s / r->fs_rate);
	json_num("rtt_p50_per_model", rtt, 3, r->rtt_med / rtt_model(r));
	json_num("rtt_p50_per_seqpacket", rtt, 1, r->rtt_med / r->sp_p50);
	json_num("push_rtt_p50_per_model", push, 3, r->push_med / rtt_model(r));
	json_num("push_rtt_p50_per_seqpacket", push, 1,
		 r->push_med / r->sp_p50);
	json_num("push_rtt_p50_per_rtt_p50", push && rtt, 3,
		 r->push_med / r->rtt_med);
	printf("}}\n");
}

static void
print_rate(const char *label, size_t n, double secs, double fs_rate)
{
	printf("%-36s %10zu %10.3f %12.0f %8.2f\n", label, n, secs, n / secs,
	       n / secs / fs_rate);
}

static void
print_table(const Options *o, const Results *r)
{
	bool post = o->workloads & WL_POST, rtt = o->workloads & WL_RTT;
	bool push = o->workloads & WL_PUSH;
	char label[64];
	unsigned i, j;

	printf("mbox-bench: broker %s, sync %s, %zu-byte messages\n\n",
	       o->socket ? o->socket : o->mboxd,
	       o->socket ? "(as configured)" : o->sync, o->size);
	if (post || push)
		printf("%-36s %10s %10s %12s %8s\n", "workload", "messages",
		       "seconds", "msgs/s", "/ fsync");
	if (post) {
		snprintf(label, sizeof(label), "post, durable, %u producer%s",
			 o->producers, o->producers == 1 ? "" : "s");
		print_rate(label, o->messages, r->post_s, r->fs_rate);
		snprintf(label, sizeof(label), "recv+ack, batches of %u",
			 BATCH);
		print_rate(label, o->messages, r->drain_s, r->fs_rate);
	}
	for (i = 0; push && i < o->subscribers.n; i++) {
		for (j = 0; j < o->windows.n; j++) {
			snprintf(label, sizeof(label),
				 "push, %u subscriber%s, window %u",
				 o->subscribers.v[i],
				 o->subscribers.v[i] == 1 ? "" : "s",
				 o->windows.v[j]);
			print_rate(label, o->messages, r->push_s[i][j],
				   r->fs_rate);
		}
	}
	if (push && o->ack_batch == 1)
		printf("  (push: subscribers take with mbox_next and ack each "
		       "message while %u producer%s post)\n",
		       o->producers, o->producers == 1 ? "" : "s");
	else if (push)
		printf("  (push: subscribers take with mbox_next and ack up to "
		       "%u ids at once while %u producer%s post)\n",
		       o->ack_batch, o->producers,
		       o->producers == 1 ? "" : "s");
	if (rtt || push)
		printf("\n%-36s %10s %10s %12s\n", "round trip", "count",
		       "median", "p99");
	if (rtt)
		printf("%-36s %10zu %8.0f us %9.0f us\n",
		       "post -> recv, one at a time", o->count,
		       r->rtt_med * 1e6, r->rtt_p99 * 1e6);
	if (push)
		printf("%-36s %10zu %8.0f us %9.0f us\n",
		       "post -> push, one at a time", o->count,
		       r->push_med * 1e6, r->push_p99 * 1e6);
	printf("\nbaselines, same run                     per sec      "
	       "p50\n");
	printf("%-36s %12.0f %7.0f us\n", "fsync of a 1 KiB append", r->fs_rate,
	       r->fs_p50 * 1e6);
	printf("%-36s %12s %7.1f us\n", "SOCK_SEQPACKET ping-pong", "",
	       r->sp_p50 * 1e6);
	printf("\nratios (round trips against fsync p50 + 3 x seqpacket p50 "
	       "= %.0f us):\n",
	       rtt_model(r) * 1e6);
	if (post)
		printf("  post rate / fsync rate = %.2f\n",
		       o->messages / r->post_s / r->fs_rate);
	if (rtt)
		printf("  post->recv p50 / model = %.2f, / seqpacket p50 = "
		       "%.1f\n",
		       r->rtt_med / rtt_model(r), r->rtt_med / r->sp_p50);
	if (push)
		printf("  post->push p50 / model = %.2f, / seqpacket p50 = "
		       "%.1f\n",
		       r->push_med / rtt_model(r), r->push_med / r->sp_p50);
	if (push && rtt)
		printf("  post->push p50 / post->recv p50 = %.2f\n",
		       r->push_med / r->rtt_med);
}

/* Workload push: the throughput grid, then the round trip. */
static int
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

int
main(int argc, char **argv)
{
	Options o;
	Broker b = {.pid = 0};
	Results res = {.post_s = 0};
	char tput[64], rtt[64], push[64], prtt[64];
	const char *sock;
	long pid = (long)getpid();
	int err = 0;

	if (parse_options(argc, argv, &o) < 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	if (o.socket) {
		sock = o.socket;
	} else {
		if (broker_start(&b, &o) < 0) {
			broker_stop(&b, true);
			return 1;
		}
		sock = b.sock;
	}
	snprintf(tput, sizeof(tput), "bench.%ld.tput", pid);
	snprintf(rtt, sizeof(rtt), "bench.%ld.rtt", pid);
	snprintf(push, sizeof(push), "bench.%ld.push", pid);
	snprintf(prtt, sizeof(prtt), "bench.%ld.push-rtt", pid);

	err = check_size(sock, o.size);
	if (!err && (o.workloads & WL_POST))
		err = make_mailbox(sock, tput);
	if (!err && (o.workloads & WL_RTT))
		err = make_mailbox(sock, rtt);
	if (!err && (o.workloads & WL_PUSH))
		err = make_mailbox(sock, push);
	if (!err && (o.workloads & WL_PUSH))
		err = make_mailbox(sock, prtt);
	if (!err && (o.workloads & WL_POST))
		err = bench_post(&o, sock, tput, &res.post_s);
	if (!err && (o.workloads & WL_POST))
		err = bench_drain(&o, sock, tput, &res.drain_s);
	if (!err && (o.workloads & WL_RTT))
		err = bench_rtt(&o, sock, rtt, 0, &res.rtt_med, &res.rtt_p99);
	if (!err && (o.workloads & WL_PUSH))
		err = bench_push_all(&o, sock, push, prtt, &res);
	if (!err)
		err = baseline_fsync(
			o.socket
				? (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp")
				: b.dir,
			2000, &res.fs_rate, &res.fs_p50);
	if (!err)
		err = baseline_seqpacket(20000, &res.sp_p50);
	broker_stop(&b, err != 0);
	if (err) {
		fprintf(stderr, "mbox-bench: failed\n");
		return 1;
	}
	if (o.json)
		print_json(&o, &res);
	else
		print_table(&o, &res);
	return 0;
}
