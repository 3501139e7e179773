/*
 * mbox-bench.c - throughput, latency, memory and store size of mboxd,
 * measured through libmbox, with the baselines that say what the machine
 * allows (issue 7 names the targets).
 *
 * Workloads, run one after the other (--workload picks some of them; all
 * by default):
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
 *   pipeline  (target 1) P producers post batches of --depth with
 *             mbox_post_batch while --consumers C subscribe with
 *             --consumer-window W and ack what has come in one request,
 *             --messages in all; against SQLite's own insert+delete rate
 *             at 1, 64 and 1024 rows a transaction (WAL,
 *             synchronous=FULL) and mboxd's store module alone. Then the
 *             same with consumers that recv 64 and ack each batch.
 *   scale     (targets 2, 3) one post in flight per producer, for each
 *             producer count of --scale (default 1,16).
 *   latency   (target 4) post -> push round trips at sync=full and at
 *             sync=normal (a second broker of ours).
 *   memory    (target 5) the broker's VmRSS idle, with --backlog messages
 *             queued, and drained.
 *   backlog   (target 6) the pipeline on a mailbox holding --backlog
 *             messages against an empty one; the start-up time (fork to
 *             READY=1 on NOTIFY_SOCKET) with the backlog in the store;
 *             then SQLite alone (64 a transaction, at the store's page
 *             size) and mboxd's store module alone, each empty and with
 *             the backlog queued.
 *   conns     (target 7) the RSS of --idle-conns idle connections; the
 *             post rate of 16 and of --active clients, one post in flight
 *             each.
 *   churn     (target 8) --churn messages posted and acked with at most
 *             --live queued; the database and WAL size against the peak
 *             of live data.
 *   cli       (target 9) seq N | mboxctl post --lines and mboxctl recv -n
 *             N against libmbox doing the same (--cli-lines N).
 *
 * Two baselines are measured in every run (an fsync'd 1 KiB append, a
 * SOCK_SEQPACKET ping-pong), and the broker's figures are also given as
 * ratios to them, which say more than absolute figures on a noisy machine.
 *
 * By default it starts its own mboxd (--mboxd PATH, else $MBOXD, else
 * ./mboxd) on a fresh temporary directory with --sync full (--sync MODE),
 * and stops it at the end; memory, backlog, conns and churn get a fresh
 * broker each, so that what they measure is theirs alone. --socket PATH
 * uses a running broker instead (mailboxes named bench.PID.*, left behind
 * empty); figures that need the broker's pid or files are then null.
 *
 * It prints a table, or with --json one JSON object (figures of workloads
 * not run are null). It asserts nothing about timings: it is a measuring
 * tool, not a test.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench-base.h"
#include "bench-cli.h"
#include "bench-flow.h"
#include "bench-push.h"
#include "bench-report.h"
#include "bench-util.h"
#include "store/store.h"

#define FILL_BATCH  256u   /* post batch of the backlog's fill */
#define DRAIN_BATCH 1024u  /* recv batch of a drain */
#define CHURN_DEPTH 64u	   /* post batch of the churn producers */
#define FSYNC_N	    2000u  /* fsyncs of the baseline */
#define SEQPKT_N    20000u /* ping-pongs of the baseline */
#define WATCHDOG_S  120	   /* no CPU used for this long: stalled */

static void
usage(FILE *f, const char *argv0)
{
	fprintf(f,
		"usage: %s [OPTIONS]\n"
		"Measure mboxd against issue 7's targets: durable posts/s, "
		"pipelines,\nscaling, latency, memory, backlog, connections, "
		"store size, mboxctl.\n\n"
		"  --mboxd PATH      broker to start (default $MBOXD, else "
		"./mboxd)\n"
		"  --socket PATH     use a running broker instead of starting "
		"one\n"
		"  --sync MODE       full|normal|off for the started broker "
		"(default full)\n"
		"  --size BYTES      payload size of the messages (default "
		"1024)\n"
		"  --producers N     posting clients (default 4)\n"
		"  --messages N      messages of each post, push, pipeline, "
		"scale and\n"
		"                    conns run (default 30000: runs of 10000\n"
		"                    lasted a fraction of a second)\n"
		"  --count N         round trips measured (default 2000)\n"
		"  --workload LIST   some of post,rtt,push,pipeline,scale,"
		"latency,memory,\n"
		"                    backlog,conns,churn,cli (default all)\n"
		"  --subscribers LIST  subscriber counts of the push runs "
		"(default 1,4)\n"
		"  --windows LIST    subscription windows of the push runs "
		"(default 1,64)\n"
		"  --ack-batch N     ids per ack of a push subscriber, taken "
		"as they come\n"
		"                    (default 1: one ack per message)\n"
		"  --consumers N     consumers of pipeline, backlog, churn "
		"(default 2)\n"
		"  --consumer-window N  pipeline and backlog consumers "
		"subscribe with this\n"
		"                    window and ack what has come in one "
		"request (default\n"
		"                    512); 0: they recv 64 and ack each "
		"batch. The pipeline\n"
		"                    also runs with recv consumers, for "
		"reference\n"
		"  --depth N         post batch of a pipeline producer "
		"(default 64)\n"
		"  --scale LIST      producer counts of scale (default 1,16)\n"
		"  --backlog N       messages queued by memory and backlog "
		"(default 1000000);\n"
		"                    backlog's two pipelines move the larger "
		"of --messages\n"
		"                    and N/10 each\n"
		"  --idle-conns N    idle connections of conns (default "
		"1000)\n"
		"  --active N        most clients of conns (default 256)\n"
		"  --churn N         messages through churn (default "
		"10000000)\n"
		"  --live N          most messages queued at once in churn "
		"(default 10000)\n"
		"  --mboxctl PATH    mboxctl of cli (default: beside --mboxd, "
		"else $MBOXCTL,\n"
		"                    else ./mboxctl)\n"
		"  --cli-lines N     lines of cli (default 1000000)\n"
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
	unsigned bits = 0, bit;
	size_t len;

	for (;;) {
		len = strcspn(s, ",");
		bit = len == 3 && !strncmp(s, "all", 3) ? WL_ALL
							: workload_bit(s, len);
		if (!bit)
			return -1;
		bits |= bit;
		if (!s[len])
			break;
		s += len + 1;
	}
	*out = bits;
	return 0;
}

enum {
	OPT_MBOXD = 256,
	OPT_SOCKET,
	OPT_SYNC,
	OPT_WORK,
	OPT_SUBS,
	OPT_WIN,
	OPT_SCALE,
	OPT_MBOXCTL,
	OPT_NUMBER, /* from here on: the numbers of number_opts */
};

/* The options that take one number, in the order of number_opts. */
static const struct {
	const char *name;
	size_t min, max;
} number_opts[] = {
	{"size", 8, 64u << 20},	     {"producers", 1, 256},
	{"messages", 1, 100000000},  {"count", 1, 10000000},
	{"ack-batch", 1, 1024},	     {"consumers", 1, 256},
	{"depth", 1, 1024},	     {"backlog", 1, 100000000},
	{"idle-conns", 0, 100000},   {"active", 1, 4096},
	{"churn", 1, 1000000000},    {"live", 1, 100000000},
	{"cli-lines", 1, 100000000}, {"consumer-window", 0, 1024},
};

/* Where the value of number_opts[i] goes. */
static void
set_number(Options *o, size_t i, size_t v)
{
	size_t *const sizes[] = {&o->size,	NULL,	     &o->messages,
				 &o->count,	NULL,	     NULL,
				 NULL,		&o->backlog, &o->idle_conns,
				 NULL,		&o->churn,   &o->live,
				 &o->cli_lines, NULL};
	unsigned *const units[] = {
		NULL,	       &o->producers,	   NULL,      NULL,
		&o->ack_batch, &o->consumers,	   &o->depth, NULL,
		NULL,	       &o->active,	   NULL,      NULL,
		NULL,	       &o->consumer_window};

	if (sizes[i])
		*sizes[i] = v;
	else
		*units[i] = (unsigned)v;
}

static int
parse_list_opt(const char *name, const char *arg, unsigned max, List *out)
{
	if (parse_list(arg, 1, max, out) == 0)
		return 0;
	fprintf(stderr,
		"--%s: up to %u numbers, 1 to %u, separated by commas\n", name,
		LIST_MAX, max);
	return -1;
}

/* The mboxctl of cli: beside the broker, else $MBOXCTL, else ./mboxctl. */
static void
find_mboxctl(Options *o)
{
	const char *env = getenv("MBOXCTL"), *slash;

	if (o->mboxctl[0])
		return;
	slash = strrchr(o->mboxd, '/');
	if (slash) {
		snprintf(o->mboxctl, sizeof(o->mboxctl), "%.*s/mboxctl",
			 (int)(slash - o->mboxd), o->mboxd);
		if (access(o->mboxctl, X_OK) == 0)
			return;
	}
	snprintf(o->mboxctl, sizeof(o->mboxctl), "%s",
		 env && *env ? env : "./mboxctl");
}

static void
options_default(Options *o)
{
	const char *env = getenv("MBOXD");

	*o = (Options){
		.mboxd = env && *env ? env : "./mboxd",
		.sync = "full",
		.size = 1024,
		.producers = 4,
		.messages = 30000,
		.count = 2000,
		.workloads = WL_ALL,
		.subscribers = {.v = {1, 4}, .n = 2},
		.windows = {.v = {1, 64}, .n = 2},
		.ack_batch = 1,
		.consumers = 2,
		.consumer_window = 512,
		.depth = 64,
		.scale = {.v = {1, 16}, .n = 2},
		.backlog = 1000000,
		.idle_conns = 1000,
		.active = 256,
		.churn = 10000000,
		.live = 10000,
		.cli_lines = 1000000,
	};
}

/* One option other than the numbers; -1 after saying what is wrong. */
static int
parse_option(Options *o, int c, char *arg)
{
	switch (c) {
	case OPT_MBOXD:
		o->mboxd = arg;
		return 0;
	case OPT_SOCKET:
		o->socket = arg;
		return 0;
	case OPT_SYNC:
		if (strcmp(arg, "full") && strcmp(arg, "normal") &&
		    strcmp(arg, "off")) {
			fprintf(stderr, "--sync: full, normal or off\n");
			return -1;
		}
		o->sync = arg;
		return 0;
	case OPT_WORK:
		if (parse_workloads(arg, &o->workloads) == 0)
			return 0;
		fprintf(stderr, "--workload: a list of post, rtt, push, "
				"pipeline, scale, latency, memory, backlog, "
				"conns, churn, cli or all\n");
		return -1;
	case OPT_SUBS:
		return parse_list_opt("subscribers", arg, 256, &o->subscribers);
	case OPT_WIN:
		return parse_list_opt("windows", arg, 1024, &o->windows);
	case OPT_SCALE:
		return parse_list_opt("scale", arg, 1024, &o->scale);
	case OPT_MBOXCTL:
		snprintf(o->mboxctl, sizeof(o->mboxctl), "%s", arg);
		return 0;
	default:
		usage(stderr, "mbox-bench");
		return -1;
	}
}

static int
parse_options(int argc, char **argv, Options *o)
{
	enum { N_NUM = sizeof(number_opts) / sizeof(number_opts[0]) };
	struct option longopts[N_NUM + 11] = {
		{"mboxd", required_argument, NULL, OPT_MBOXD},
		{"socket", required_argument, NULL, OPT_SOCKET},
		{"sync", required_argument, NULL, OPT_SYNC},
		{"workload", required_argument, NULL, OPT_WORK},
		{"subscribers", required_argument, NULL, OPT_SUBS},
		{"windows", required_argument, NULL, OPT_WIN},
		{"scale", required_argument, NULL, OPT_SCALE},
		{"mboxctl", required_argument, NULL, OPT_MBOXCTL},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
	};
	size_t i, v;
	int c;

	for (i = 0; i < N_NUM; i++)
		longopts[10 + i] =
			(struct option){number_opts[i].name, required_argument,
					NULL, OPT_NUMBER + (int)i};
	options_default(o);
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'j') {
			o->json = true;
		} else if (c == 'h') {
			usage(stdout, "mbox-bench");
			exit(0);
		} else if (c >= OPT_NUMBER && c < OPT_NUMBER + N_NUM) {
			i = (size_t)(c - OPT_NUMBER);
			if (parse_size(optarg, number_opts[i].min,
				       number_opts[i].max, &v) < 0) {
				fprintf(stderr, "--%s: %zu to %zu\n",
					number_opts[i].name, number_opts[i].min,
					number_opts[i].max);
				return -1;
			}
			set_number(o, i, v);
		} else if (parse_option(o, c, optarg) < 0) {
			return -1;
		}
	}
	if (optind != argc) {
		usage(stderr, "mbox-bench");
		return -1;
	}
	find_mboxctl(o);
	return 0;
}

/* Take and ack n messages of mailbox with consumers threads. */
static int
drain(const Options *o, const char *sock, const char *mailbox, size_t n,
      const char *progress)
{
	FlowSpec s = {
		.sock = sock,
		.mailbox = mailbox,
		.consumers = o->consumers,
		.recv_batch = DRAIN_BATCH,
		.acks = n,
		.progress = o->json ? NULL : progress,
	};
	FlowResult fr;

	return flow_run(&s, &fr);
}

/* The pipeline: o->messages posted in batches and taken at once, by
 * subscribers with window, or by recv (window 0). */
static int
pipeline(const Options *o, const char *sock, const char *mailbox, size_t n,
	 unsigned window, double *secs)
{
	FlowSpec s = {
		.sock = sock,
		.mailbox = mailbox,
		.size = o->size,
		.producers = o->producers,
		.depth = o->depth,
		.posts = n,
		.consumers = o->consumers,
		.recv_batch = BATCH,
		.acks = n,
		.window = window,
	};
	FlowResult fr;
	int err = flow_run(&s, &fr);

	*secs = fr.secs;
	return err;
}

/* Mailbox names of this run: bench.PID.what. */
static const char *
mailbox_name(char *buf, size_t size, const char *what)
{
	snprintf(buf, size, "bench.%ld.%s", (long)getpid(), what);
	return buf;
}

static int
wl_pipeline(const Options *o, const char *sock, const char *sql_dir,
	    Results *res)
{
	char mb[64];
	int err = make_mailbox(sock, mailbox_name(mb, sizeof(mb), "pipe"));

	if (!err)
		err = pipeline(o, sock, mb, o->messages, o->consumer_window,
			       &res->pipe_s);
	if (!err && o->consumer_window)
		err = pipeline(o, sock, mb, o->messages, 0, &res->pipe_pull_s);
	/* The ceiling is SQLite's best: larger pages and transactions
	 * write fewer frames and checkpoint less often per row (SQLite's
	 * default interval is 1000 pages, whatever their size). One row a
	 * transaction is an fsync each: at the store's page size only. */
	for (unsigned p = 0; !err && p < SQL_PAGES; p++)
		for (unsigned i = 0; !err && i < SQL_BATCHES; i++)
			if (sql_batches[i] > 1 || p == sql_store_page())
				err = baseline_sqlite(sql_dir, sql_pages[p],
						      sql_batches[i],
						      o->messages, o->size, 0,
						      &res->sql_rate[p][i]);
	if (!err)
		err = baseline_store(sql_dir, 64, o->messages, o->size, 0,
				     &res->store_rate);
	if (!err)
		err = baseline_store_capped(sql_dir, 64, o->messages, o->size,
					    STORE_CAP_OTHERS, STORE_CAP_BYTES,
					    &res->store_cap_rate);
	return err;
}

static int
wl_scale(const Options *o, const char *sock, Results *res)
{
	char mb[64];
	int err = make_mailbox(sock, mailbox_name(mb, sizeof(mb), "scale"));

	for (unsigned i = 0; !err && i < o->scale.n; i++) {
		err = post_clients(sock, mb, o->scale.v[i], o->messages,
				   o->size, &res->scale_s[i]);
		if (!err)
			err = drain(o, sock, mb, o->messages, NULL);
	}
	return err;
}

/* Push round trips on a broker of ours started with sync. */
static int
latency_on(const Options *o, const char *sync, double *med, double *p99)
{
	Broker b;
	char mb[64];
	int err = broker_start(&b, o->mboxd, sync);

	mailbox_name(mb, sizeof(mb), "latency");
	if (!err)
		err = make_mailbox(b.sock, mb);
	if (!err)
		err = bench_rtt(o, b.sock, mb, PUSH_RTT_WINDOW, med, p99);
	broker_stop(&b, err != 0);
	return err;
}

static int
wl_latency(const Options *o, const char *sock, Results *res)
{
	char mb[64];
	int err = 0;

	res->lat_full_own = !o->socket;
	if (o->socket || !strcmp(o->sync, "full")) {
		err = make_mailbox(sock,
				   mailbox_name(mb, sizeof(mb), "latency"));
		if (!err)
			err = bench_rtt(o, sock, mb, PUSH_RTT_WINDOW,
					&res->lat_full_med, &res->lat_full_p99);
	} else {
		err = latency_on(o, "full", &res->lat_full_med,
				 &res->lat_full_p99);
	}
	if (!err && !o->socket)
		err = latency_on(o, "normal", &res->lat_norm_med,
				 &res->lat_norm_p99);
	res->lat_norm = !err && !o->socket;
	return err;
}

static int
wl_cli(const Options *o, const char *sock, Results *res)
{
	char mb[64];
	int err = make_mailbox(sock, mailbox_name(mb, sizeof(mb), "cli"));

	if (!err)
		err = bench_cli(o->mboxctl, sock, mb, o->cli_lines, &res->cli);
	return err;
}

/* A fresh broker of ours for a workload (b->pid 0 with --socket). */
static int
fresh_broker(const Options *o, Broker *b, const char **sock)
{
	*b = (Broker){.pid = 0};
	if (o->socket) {
		*sock = o->socket;
		return 0;
	}
	if (broker_start(b, o->mboxd, o->sync) < 0) {
		broker_stop(b, true);
		return -1;
	}
	*sock = b->sock;
	return 0;
}

/* Queue o->backlog messages with batching producers, no consumer. */
static int
fill(const Options *o, const char *sock, const char *mailbox)
{
	FlowSpec s = {
		.sock = sock,
		.mailbox = mailbox,
		.size = o->size,
		.producers = o->producers,
		.depth = FILL_BATCH,
		.posts = o->backlog,
		.progress = o->json ? NULL : "fill",
	};
	FlowResult fr;

	return flow_run(&s, &fr);
}

/*
 * memory and backlog on one fresh broker, sharing the fill: RSS idle,
 * the pipeline on an empty mailbox, the fill, RSS, the pipeline on the
 * full mailbox, the restart to READY=1, the drain, 1 s idle, RSS.
 */
static int
wl_store(const Options *o, Results *res)
{
	bool memory = o->workloads & WL_MEMORY;
	bool backlog = o->workloads & WL_BACKLOG;
	char full[64], empty[64];
	const char *sock;
	Broker b;
	int err;

	if (o->socket && !backlog)
		return 0; /* memory needs the broker's pid */
	err = fresh_broker(o, &b, &sock);
	res->rss_idle = broker_status_kib(&b, "VmRSS");
	mailbox_name(full, sizeof(full), "backlog");
	mailbox_name(empty, sizeof(empty), "empty");
	if (!err)
		err = make_mailbox(sock, full);
	if (!err && backlog)
		err = make_mailbox(sock, empty);
	/* Runs of a fraction of a second made the ratio noise (0.75-0.90
	 * for the same build): at least a tenth of the backlog. */
	res->backlog_msgs =
		o->messages > o->backlog / 10 ? o->messages : o->backlog / 10;
	/* Each with the pipeline's consumers, then (for reference, as in
	 * the pipeline) with recv consumers. A run posts as many as it
	 * takes: the backlog stays whole. */
	if (!err && backlog)
		err = pipeline(o, sock, empty, res->backlog_msgs,
			       o->consumer_window, &res->empty_s);
	if (!err && backlog && o->consumer_window)
		err = pipeline(o, sock, empty, res->backlog_msgs, 0,
			       &res->empty_pull_s);
	if (!err)
		err = fill(o, sock, full);
	res->filled = !err;
	res->rss_backlog = broker_status_kib(&b, "VmRSS");
	res->rss_anon = broker_status_kib(&b, "RssAnon");
	if (!err && backlog)
		err = pipeline(o, sock, full, res->backlog_msgs,
			       o->consumer_window, &res->backlog_s);
	if (!err && backlog && o->consumer_window)
		err = pipeline(o, sock, full, res->backlog_msgs, 0,
			       &res->backlog_pull_s);
	if (!err && backlog && b.pid)
		err = broker_restart_ready(&b, &res->ready_s);
	if (!err)
		err = drain(o, sock, full, o->backlog, "drain");
	if (!err && memory && b.pid) {
		/* mboxd gives memory back after a quiet tick of 1 s: wait for
		 * two. */
		sleep_ms(2500);
		res->rss_drained = broker_status_kib(&b, "VmRSS");
	}
	broker_stop(&b, err != 0);
	return err;
}

/* Open n idle connections; the broker's VmRSS grew by *kib (-1: none). */
static int
idle_conns(const Options *o, const char *sock, const Broker *b, long *kib)
{
	mbox **c = calloc(o->idle_conns ? o->idle_conns : 1, sizeof(*c));
	long before = broker_status_kib(b, "VmRSS"), after;
	size_t i;
	int r = 0;

	if (!c)
		return -ENOMEM;
	for (i = 0; i < o->idle_conns && !r; i++) {
		r = mbox_connect(&c[i], sock);
		if (r < 0)
			fprintf(stderr,
				"mbox-bench: conns: connection %zu of %zu: "
				"%s\n",
				i + 1, o->idle_conns, mbox_strerror(r));
	}
	sleep_ms(100); /* let the broker settle what it allocated */
	after = broker_status_kib(b, "VmRSS");
	*kib = before < 0 || after < 0 ? -1 : after - before;
	for (i = 0; i < o->idle_conns; i++)
		mbox_close(c[i]);
	free(c);
	return r;
}

static int
wl_conns(const Options *o, Results *res)
{
	const char *sock;
	char mb[64];
	Broker b;
	int err = fresh_broker(o, &b, &sock);

	mailbox_name(mb, sizeof(mb), "conns");
	if (!err)
		err = idle_conns(o, sock, &b, &res->conns_rss);
	if (!err)
		err = make_mailbox(sock, mb);
	if (!err)
		err = post_clients(sock, mb, 16, o->messages, o->size,
				   &res->active16_s);
	if (!err)
		err = drain(o, sock, mb, o->messages, NULL);
	if (!err)
		err = post_clients(sock, mb, o->active, o->messages, o->size,
				   &res->active_s);
	if (!err)
		err = drain(o, sock, mb, o->messages, NULL);
	broker_stop(&b, err != 0);
	return err;
}

static int
wl_churn(const Options *o, Results *res)
{
	FlowSpec s = {
		.size = o->size,
		.producers = o->producers,
		.depth = CHURN_DEPTH,
		.posts = o->churn,
		.consumers = o->consumers,
		.recv_batch = BATCH,
		.acks = o->churn,
		.live = o->live,
		.progress = o->json ? NULL : "churn",
	};
	FlowResult fr = {.secs = 0};
	char mb[64];
	Broker b;
	int err = fresh_broker(o, &b, &s.sock);

	s.mailbox = mailbox_name(mb, sizeof(mb), "churn");
	if (!err)
		err = make_mailbox(s.sock, mb);
	if (!err)
		err = flow_run(&s, &fr);
	res->churn_s = fr.secs;
	res->churn_peak = fr.peak_live;
	if (!err && b.pid) {
		/* The WAL under load, then once the broker, quiet, has
		 * checkpointed it and given it back (target 8 asks for the
		 * files with the WAL checkpointed): at most 10 s. */
		res->churn_wal_busy = broker_file_bytes(&b, "-wal");
		for (int i = 0; i < 100; i++) {
			res->churn_wal = broker_file_bytes(&b, "-wal");
			if (res->churn_wal <= 0)
				break;
			sleep_ms(100);
		}
		res->churn_db = broker_file_bytes(&b, "");
	}
	broker_stop(&b, err != 0);
	return err;
}

/* The workloads on the main broker at sock, in order. */
static int
run_main(const Options *o, const char *sock, const char *dir, Results *res)
{
	unsigned w = o->workloads;
	char tput[64], rtt[64], push[64], prtt[64];
	int err = check_size(sock, o->size);

	mailbox_name(tput, sizeof(tput), "tput");
	mailbox_name(rtt, sizeof(rtt), "rtt");
	mailbox_name(push, sizeof(push), "push");
	mailbox_name(prtt, sizeof(prtt), "push-rtt");
	if (!err && (w & WL_POST))
		err = make_mailbox(sock, tput);
	if (!err && (w & WL_RTT))
		err = make_mailbox(sock, rtt);
	if (!err && (w & WL_PUSH))
		err = make_mailbox(sock, push);
	if (!err && (w & WL_PUSH))
		err = make_mailbox(sock, prtt);
	if (!err && (w & WL_POST))
		err = post_clients(sock, tput, o->producers, o->messages,
				   o->size, &res->post_s);
	if (!err && (w & WL_POST))
		err = bench_drain(o, sock, tput, &res->drain_s);
	if (!err && (w & WL_RTT))
		err = bench_rtt(o, sock, rtt, 0, &res->rtt_med, &res->rtt_p99);
	if (!err && (w & WL_PUSH))
		err = bench_push_all(o, sock, push, prtt, res);
	if (!err && (w & WL_PIPELINE))
		err = wl_pipeline(o, sock, dir, res);
	if (!err && (w & WL_SCALE))
		err = wl_scale(o, sock, res);
	if (!err && (w & WL_LATENCY))
		err = wl_latency(o, sock, res);
	if (!err && (w & WL_CLI))
		err = wl_cli(o, sock, res);
	return err;
}

/* The workloads with a broker of their own, then the baselines. */
static int
run_rest(const Options *o, const char *dir, Results *res)
{
	unsigned w = o->workloads;
	int err = 0;

	if (w & WL_CONNS)
		err = wl_conns(o, res);
	if (!err && (w & (WL_MEMORY | WL_BACKLOG)))
		err = wl_store(o, res);
	/* What the backlog costs SQLite itself, the same way: the ceiling's
	 * table, empty and then holding the backlog, moving as many rows
	 * as each pipeline of the backlog workload. */
	if (!err && (w & WL_BACKLOG))
		err = baseline_sqlite(dir, STORE_PAGE_SIZE, 64,
				      res->backlog_msgs, o->size, 0,
				      &res->sql_empty_rate);
	if (!err && (w & WL_BACKLOG))
		err = baseline_sqlite(dir, STORE_PAGE_SIZE, 64,
				      res->backlog_msgs, o->size, o->backlog,
				      &res->sql_backlog_rate);
	/* And the store module alone, as the pipeline's "store alone":
	 * what its indexes and lease rows add to SQLite's own cost. */
	if (!err && (w & WL_BACKLOG))
		err = baseline_store(dir, 64, res->backlog_msgs, o->size, 0,
				     &res->store_empty_rate);
	if (!err && (w & WL_BACKLOG))
		err = baseline_store(dir, 64, res->backlog_msgs, o->size,
				     o->backlog, &res->store_backlog_rate);
	if (!err && (w & WL_CHURN))
		err = wl_churn(o, res);
	if (!err)
		err = baseline_fsync(dir, FSYNC_N, &res->fs_rate, &res->fs_p50);
	if (!err)
		err = baseline_seqpacket(SEQPKT_N, &res->sp_p50,
					 &res->sp_across);
	return err;
}

/* CPU time this process used so far, in seconds. */
static double
cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/*
 * The last bound on every wait: libmbox calls block until the broker
 * answers, and every workload uses some CPU all the time while it moves
 * messages (the slowest, an fsync per post, thousands of syscalls a
 * second). A process that used next to none for WATCHDOG_S is stuck on a
 * broker that stopped answering: say so and end (our brokers and
 * children follow through PR_SET_PDEATHSIG).
 */
static void *
watchdog(void *arg)
{
	double cpu = cpu_s(), since = now_s();

	(void)arg;
	for (;;) {
		sleep_ms(5000);
		if (cpu_s() - cpu > 0.005) {
			cpu = cpu_s();
			since = now_s();
		} else if (now_s() - since > WATCHDOG_S) {
			fprintf(stderr,
				"mbox-bench: stalled: nothing done for %d s "
				"(a broker stopped answering?); giving up, "
				"files under %s/mbox-bench.* may be left\n",
				WATCHDOG_S, bench_tmpdir());
			_exit(1);
		}
	}
	return NULL;
}

int
main(int argc, char **argv)
{
	Options o;
	/* "store alone" runs the store as mboxd does. */
	store_setup_process();
	Broker b = {.pid = 0};
	Results res = {
		.rss_idle = -1,
		.rss_backlog = -1,
		.rss_anon = -1,
		.rss_drained = -1,
		.ready_s = -1,
		.conns_rss = -1,
		.churn_db = -1,
		.churn_wal = -1,
		.churn_wal_busy = -1,
	};
	const char *sock, *dir;
	double fs_start_p50;
	pthread_t dog;
	int err = 0;

	if (parse_options(argc, argv, &o) < 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	thread_start(&dog, watchdog, NULL);
	pthread_detach(dog);
	/* Before any broker starts: ours inherit the limit. */
	if ((o.workloads & WL_CONNS) &&
	    raise_nofile(o.idle_conns + o.active + 64) < 0)
		return 1;
	if (o.socket) {
		sock = o.socket;
		dir = bench_tmpdir();
	} else {
		if (broker_start(&b, o.mboxd, o.sync) < 0) {
			broker_stop(&b, true);
			return 1;
		}
		sock = b.sock;
		dir = b.dir; /* the baselines on the store's file system */
	}
	/* The fsync baseline comes last (run_rest); once more first, so
	 * that a disk whose rate moves during the run shows. */
	err = baseline_fsync(dir, FSYNC_N, &res.fs_start_rate, &fs_start_p50);
	if (!err)
		err = run_main(&o, sock, dir, &res);
	if (!err)
		err = run_rest(&o, dir, &res);
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
