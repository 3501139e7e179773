/*
 * mbox-bench.c - throughput and latency of mboxd, measured through libmbox.
 *
 * Three workloads, run one after the other against one broker:
 *   post      P producer threads, each with its own connection and one post
 *             in flight, post --messages messages of --size bytes in all
 *             (durable: answered after the store committed them).
 *   recv+ack  one consumer drains them, recv in batches of 64, then acks
 *             each batch in one request.
 *   rtt       a receiver waits in recv; a sender posts one message at a
 *             time (the next only after the previous was received and
 *             acked); each round trip is the time from the post call to the
 *             receiver holding the message, --count times; median and p99.
 *
 * By default it starts its own mboxd (--mboxd PATH, else $MBOXD, else
 * ./mboxd) on a fresh temporary directory with --sync full (--sync MODE),
 * and stops it at the end; --socket PATH uses a running broker instead
 * (mailboxes named bench.PID.*, left behind empty).
 *
 * It prints a table, or with --json one JSON object. It asserts nothing
 * about timings: it is a measuring tool, not a test.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
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

typedef struct Options {
	const char *mboxd;  /* broker binary to start, unless socket */
	const char *socket; /* existing broker, or NULL */
	const char *sync;   /* --sync of the broker we start */
	size_t size;	    /* payload bytes of the throughput messages */
	unsigned producers; /* posting threads, one connection each */
	size_t messages;    /* messages of the post and recv+ack workloads */
	size_t count;	    /* round trips measured */
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
	size_t total;	 /* messages the receiver expects (warm-up too) */
	double *samples; /* seconds, one per measured round trip */
	sem_t ready;	 /* receiver connected and about to wait */
	sem_t got;	 /* receiver has taken (and acked) one message */
	int err;
	char what[WHAT_MAX];
} Rtt;

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
		"Measure mboxd: durable posts/s, recv+ack/s, post->recv round "
		"trip.\n\n"
		"  --mboxd PATH      broker to start (default $MBOXD, else "
		"./mboxd)\n"
		"  --socket PATH     use a running broker instead of starting "
		"one\n"
		"  --sync MODE       full|normal|off for the started broker "
		"(default full)\n"
		"  --size BYTES      payload size of post and recv+ack "
		"(default 1024)\n"
		"  --producers N     posting clients (default 4)\n"
		"  --messages N      messages posted, then drained (default "
		"10000)\n"
		"  --count N         round trips measured (default 2000)\n"
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
		OPT_CNT
	};
	static const struct option longopts[] = {
		{"mboxd", required_argument, NULL, OPT_MBOXD},
		{"socket", required_argument, NULL, OPT_SOCKET},
		{"sync", required_argument, NULL, OPT_SYNC},
		{"size", required_argument, NULL, OPT_SIZE},
		{"producers", required_argument, NULL, OPT_PROD},
		{"messages", required_argument, NULL, OPT_MSGS},
		{"count", required_argument, NULL, OPT_CNT},
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

/* Workload a: *secs for o->messages durable posts by o->producers. */
static int
bench_post(const Options *o, const char *sock, const char *mailbox,
	   double *secs)
{
	Producer *p;
	pthread_barrier_t start;
	double t0;
	unsigned i;
	int err = 0;

	p = calloc(o->producers, sizeof(*p));
	if (!p)
		return -ENOMEM;
	pthread_barrier_init(&start, NULL, o->producers + 1);
	for (i = 0; i < o->producers; i++) {
		p[i].sock = sock;
		p[i].mailbox = mailbox;
		p[i].n = o->messages / o->producers +
			 (i < o->messages % o->producers);
		p[i].size = o->size;
		p[i].start = &start;
		if (pthread_create(&p[i].thread, NULL, producer_run, &p[i])) {
			fprintf(stderr, "mbox-bench: pthread_create failed\n");
			exit(1);
		}
	}
	pthread_barrier_wait(&start);
	t0 = now_s();
	for (i = 0; i < o->producers; i++)
		pthread_join(p[i].thread, NULL);
	*secs = now_s() - t0;
	for (i = 0; i < o->producers; i++) {
		if (p[i].err && !err) {
			fprintf(stderr, "mbox-bench: producer %u: %s\n", i,
				p[i].what);
			err = p[i].err;
		}
	}
	pthread_barrier_destroy(&start);
	free(p);
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
	sem_post(&t->ready);
	for (i = 0; t->err == 0 && i < t->total; i++) {
		r = mbox_recv(m, t->mailbox, 1, 10000, 0, &msg, &n);
		if (r < 0 || n == 0) {
			t->err = r < 0 ? r : -ETIMEDOUT;
			snprintf(t->what, sizeof(t->what), "recv: %s",
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

/* Workload c: round trips; fills *median and *p99 (seconds). */
static int
bench_rtt(const Options *o, const char *sock, const char *mailbox,
	  double *median, double *p99)
{
	Rtt t = {.sock = sock, .mailbox = mailbox};
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

int
main(int argc, char **argv)
{
	Options o;
	Broker b = {.pid = 0};
	char tput[64], rtt[64];
	const char *sock;
	double post_s = 0, drain_s = 0, med = 0, p99 = 0;
	double fs_rate = 0, fs_p50 = 0, sp_p50 = 0;
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
	snprintf(tput, sizeof(tput), "bench.%ld.tput", (long)getpid());
	snprintf(rtt, sizeof(rtt), "bench.%ld.rtt", (long)getpid());

	if (!err)
		err = check_size(sock, o.size);
	if (!err)
		err = make_mailbox(sock, tput);
	if (!err)
		err = make_mailbox(sock, rtt);
	if (!err)
		err = bench_post(&o, sock, tput, &post_s);
	if (!err)
		err = bench_drain(&o, sock, tput, &drain_s);
	if (!err)
		err = bench_rtt(&o, sock, rtt, &med, &p99);
	if (!err)
		err = baseline_fsync(
			o.socket
				? (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp")
				: b.dir,
			2000, &fs_rate, &fs_p50);
	if (!err)
		err = baseline_seqpacket(20000, &sp_p50);
	broker_stop(&b, err != 0);
	if (err) {
		fprintf(stderr, "mbox-bench: failed\n");
		return 1;
	}

	if (o.json) {
		printf("{\"sync\":\"%s\",\"size\":%zu,\"producers\":%u,"
		       "\"messages\":%zu,\"post_seconds\":%.6f,"
		       "\"post_msgs_per_sec\":%.1f,\"recv_ack_seconds\":%.6f,"
		       "\"recv_ack_msgs_per_sec\":%.1f,\"recv_batch\":%u,"
		       "\"rtt_count\":%zu,\"rtt_median_us\":%.1f,"
		       "\"rtt_p99_us\":%.1f,\"fsync_per_sec\":%.1f,"
		       "\"fsync_p50_us\":%.1f,\"seqpacket_rtt_p50_us\":%.1f}\n",
		       o.socket ? "external" : o.sync, o.size, o.producers,
		       o.messages, post_s, o.messages / post_s, drain_s,
		       o.messages / drain_s, BATCH, o.count, med * 1e6,
		       p99 * 1e6, fs_rate, fs_p50 * 1e6, sp_p50 * 1e6);
	} else {
		char label[64];

		printf("mbox-bench: broker %s, sync %s, %zu-byte messages\n\n",
		       o.socket ? o.socket : o.mboxd,
		       o.socket ? "(as configured)" : o.sync, o.size);
		printf("%-36s %10s %10s %12s\n", "workload", "messages",
		       "seconds", "msgs/s");
		snprintf(label, sizeof(label), "post, durable, %u producer%s",
			 o.producers, o.producers == 1 ? "" : "s");
		printf("%-36s %10zu %10.3f %12.0f\n", label, o.messages, post_s,
		       o.messages / post_s);
		snprintf(label, sizeof(label), "recv+ack, batches of %u",
			 BATCH);
		printf("%-36s %10zu %10.3f %12.0f\n", label, o.messages,
		       drain_s, o.messages / drain_s);
		printf("\n%-36s %10s %10s %12s\n", "round trip", "count",
		       "median", "p99");
		printf("%-36s %10zu %8.0f us %9.0f us\n",
		       "post -> recv, one at a time", o.count, med * 1e6,
		       p99 * 1e6);
		printf("\nbaselines, same run                     per sec      "
		       "p50\n");
		printf("%-36s %12.0f %7.0f us\n", "fsync of a 1 KiB append",
		       fs_rate, fs_p50 * 1e6);
		printf("%-36s %12s %7.1f us\n", "SOCK_SEQPACKET ping-pong", "",
		       sp_p50 * 1e6);
		printf("\nratios: post rate / fsync rate = %.2f; post->recv "
		       "p50 / (fsync p50 + 3 x seqpacket p50) = %.2f\n",
		       o.messages / post_s / fs_rate,
		       med / (fs_p50 + 3 * sp_p50));
	}
	return 0;
}
