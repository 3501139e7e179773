/*
 * bench-report.h - what a run of mbox-bench was asked for (Options) and
 * what it measured (Results), printed as a table or one JSON object.
 */
#ifndef BENCH_REPORT_H
#define BENCH_REPORT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "bench-cli.h"

#define BATCH	 64u /* recv+ack batch */
#define LIST_MAX 8u  /* entries of --subscribers, --windows, --scale */
#define PUSH_RTT_WINDOW                                                        \
	1u /* window of the push round trip's subscriber: one at a time */
#define SQL_BATCHES 3u /* rows per transaction of the SQLite baseline */
#define SQL_PAGES   5u /* page sizes of the SQLite baseline */
/* Idle mailboxes beside the one of the store alone under a size cap, and
 * the cap: far above what the run stores, so that it never refuses. */
#define STORE_CAP_OTHERS 10000u
#define STORE_CAP_BYTES	 (1ull << 30)

/* Workloads (--workload); the baselines always run. */
enum {
	WL_POST = 0x1,	   /* post, then recv+ack */
	WL_RTT = 0x2,	   /* post -> recv round trip */
	WL_PUSH = 0x4,	   /* push throughput grid, post -> push round trip */
	WL_PIPELINE = 0x8, /* batching producers and consumers at once */
	WL_SCALE = 0x10,   /* one post in flight, 1..n producers */
	WL_LATENCY = 0x20, /* post -> push at sync full and normal */
	WL_MEMORY = 0x40,  /* the broker's RSS, idle, with a backlog */
	WL_BACKLOG = 0x80, /* pipeline on a full mailbox, start-up time */
	WL_CONNS = 0x100,  /* idle connections, many active clients */
	WL_CHURN = 0x200,  /* the store's size after many messages */
	WL_CLI = 0x400,	   /* mboxctl against libmbox */
	WL_ALL = 0x7ff,
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
	size_t messages;    /* messages of the post, push, pipeline runs */
	size_t count;	    /* round trips measured */
	unsigned workloads; /* WL_* bits */
	List subscribers;   /* subscriber counts of the push grid, 1..256 */
	List windows;	    /* windows of the push grid, 1..1024 */
	unsigned ack_batch; /* ids per ack of a push subscriber, 1..1024 */
	unsigned consumers; /* consumer threads of pipeline and churn */
	unsigned consumer_window; /* their subscriptions' window, 0: recv */
	unsigned depth;		  /* post batch of a pipeline producer */
	List scale;		  /* producer counts of the scale workload */
	size_t backlog;		  /* messages queued for memory and backlog */
	size_t idle_conns;	  /* idle connections of conns */
	unsigned active;	  /* most active clients of conns */
	size_t churn;		  /* messages through the churn workload */
	size_t live;		  /* most queued at once during churn */
	size_t cli_lines;	  /* lines of the cli workload */
	char mboxctl[PATH_MAX];
	bool json;
} Options;

/* What one run measured; a figure of a workload not run stays 0 (or -1
 * where 0 could be a measurement). */
typedef struct Results {
	double post_s, drain_s;		   /* seconds, WL_POST */
	double rtt_med, rtt_p99;	   /* seconds, WL_RTT */
	double push_s[LIST_MAX][LIST_MAX]; /* [subscribers][window], WL_PUSH */
	double push_med, push_p99;	   /* seconds, WL_PUSH */
	double fs_rate, fs_p50, sp_p50;	   /* baselines: /s, s, s */
	/* The fsync baseline measured again before the workloads (fs_rate
	 * is after them): a disk whose rate moves between the two makes
	 * every ratio to it a guess (fsync_unsteady). */
	double fs_start_rate;
	bool sp_across;	    /* the ping-pong ran pinned on two CPUs */
	double pipe_s;	    /* WL_PIPELINE */
	double pipe_pull_s; /* the same with recv consumers, or 0 */
	double empty_pull_s, backlog_pull_s; /* WL_BACKLOG so, or 0 */
	/* rows/s for each page size and 1, 64, 1024 a txn; 0: not run (one
	 * a txn runs at the store's page size only) */
	double sql_rate[SQL_PAGES][SQL_BATCHES];
	double store_rate; /* the store module alone, 64 a txn */
	/* The same under a size cap with STORE_CAP_OTHERS idle mailboxes */
	double store_cap_rate;
	/* SQLite, 64 a txn at the store's page size, and the store module
	 * alone, 64 a txn, each empty and with the backlog queued, for
	 * WL_BACKLOG, or 0. */
	double sql_empty_rate, sql_backlog_rate;
	double store_empty_rate, store_backlog_rate;
	double scale_s[LIST_MAX];	   /* WL_SCALE, per --scale entry */
	double lat_full_med, lat_full_p99; /* WL_LATENCY, seconds */
	double lat_norm_med, lat_norm_p99; /* only with a broker of ours */
	bool lat_full_own;		   /* full: a broker we started */
	bool lat_norm;			   /* normal measured */
	long rss_idle, rss_backlog, rss_anon, rss_drained; /* KiB, or -1 */
	bool filled;		       /* the backlog was queued */
	double empty_s, backlog_s;     /* WL_BACKLOG pipeline runs */
	size_t backlog_msgs;	       /* messages of each of them */
	double ready_s;		       /* start-up to READY=1, < 0 if none */
	long conns_rss;		       /* KiB of the idle conns, or -1 */
	double active16_s, active_s;   /* WL_CONNS */
	size_t churn_peak;	       /* most messages queued at once */
	double churn_s;		       /* WL_CHURN */
	long long churn_db, churn_wal; /* bytes when quiet, or -1 */
	long long churn_wal_busy;      /* bytes right after the run, or -1 */
	CliResult cli;		       /* WL_CLI */
} Results;

extern const size_t sql_batches[SQL_BATCHES];
extern const unsigned sql_pages[SQL_PAGES];
/* The index of STORE_PAGE_SIZE in sql_pages. */
unsigned sql_store_page(void);

/* The WL_* bit of the workload named by s[0..len), or 0. */
unsigned workload_bit(const char *s, size_t len);
/* Comma-separated names of the workloads in bits. */
void workload_names(unsigned bits, char *buf, size_t size);
void print_json(const Options *o, const Results *r);
void print_table(const Options *o, const Results *r);

#endif
