/*
 * bench-base.c - the baselines of mbox-bench (see bench-base.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench-base.h"
#include "store/store.h"
#include "bench-util.h"

int
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

/*
 * The round trip the targets speak of is across the two cores: left to
 * the scheduler it is bimodal (about 7 us on one CPU, 50 us across).
 * Pin the echo thread and ours to two different CPUs we may run on;
 * *mine keeps our own affinity to restore. Returns whether it pinned.
 */
static bool
pin_apart(pthread_t echo, cpu_set_t *mine)
{
	cpu_set_t one;
	int cpu[2], k = 0;

	if (pthread_getaffinity_np(pthread_self(), sizeof(*mine), mine))
		return false;
	for (int i = 0; i < CPU_SETSIZE && k < 2; i++)
		if (CPU_ISSET(i, mine))
			cpu[k++] = i;
	if (k < 2)
		return false;
	CPU_ZERO(&one);
	CPU_SET(cpu[1], &one);
	if (pthread_setaffinity_np(echo, sizeof(one), &one))
		return false;
	CPU_ZERO(&one);
	CPU_SET(cpu[0], &one);
	if (pthread_setaffinity_np(pthread_self(), sizeof(one), &one))
		return false;
	return true;
}

int
baseline_seqpacket(size_t n, double *p50, bool *across)
{
	int sv[2];
	pthread_t th;
	cpu_set_t mine;
	size_t done;
	bool pinned;
	double *t = calloc(n, sizeof(*t));
	char buf[16] = "ping";

	if (!t ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		free(t);
		return -errno;
	}
	thread_start(&th, pingpong_echo, &sv[1]);
	pinned = pin_apart(th, &mine);
	for (done = 0; done < n; done++) {
		double t0 = now_s();
		if (send(sv[0], buf, sizeof(buf), MSG_NOSIGNAL) < 0 ||
		    recv(sv[0], buf, sizeof(buf), 0) <= 0)
			break;
		t[done] = now_s() - t0;
	}
	shutdown(sv[0], SHUT_RDWR);
	pthread_join(th, NULL);
	if (pinned)
		pthread_setaffinity_np(pthread_self(), sizeof(mine), &mine);
	close(sv[0]);
	close(sv[1]);
	if (done < n) {
		fprintf(stderr,
			"mbox-bench: SOCK_SEQPACKET ping-pong failed "
			"after %zu round trips\n",
			done);
		free(t);
		return -EIO;
	}
	qsort(t, n, sizeof(*t), cmp_double);
	*p50 = t[n / 2];
	*across = pinned;
	free(t);
	return 0;
}

/* The statements of the SQLite baseline. */
typedef struct SqlQueue {
	sqlite3 *db;
	sqlite3_stmt *begin, *commit, *insert, *delete;
	sqlite3_int64 head; /* oldest id still in the table */
	sqlite3_int64 tail; /* next id to insert */
} SqlQueue;

static int
sql_say(SqlQueue *q, const char *what)
{
	fprintf(stderr, "mbox-bench: sqlite baseline: %s: %s\n", what,
		q->db ? sqlite3_errmsg(q->db) : "out of memory");
	return -EIO;
}

static int
sql_step(SqlQueue *q, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sql_say(q, "step");
}

static int
sql_open(SqlQueue *q, const char *path, unsigned page_size)
{
	char setup[224];

	/* secure_delete off, as the store runs it (Debian's SQLite turns it
	 * on by default), and as SQLite is faster. */
	snprintf(setup, sizeof(setup),
		 "PRAGMA page_size = %u; PRAGMA secure_delete = OFF;"
		 "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
		 "CREATE TABLE q (id INTEGER PRIMARY KEY, data BLOB);",
		 page_size);
	if (sqlite3_open_v2(path, &q->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
			    NULL) != SQLITE_OK)
		return sql_say(q, "open");
	if (sqlite3_exec(q->db, setup, NULL, NULL, NULL) != SQLITE_OK)
		return sql_say(q, "setup");
	if (sqlite3_prepare_v2(q->db, "BEGIN", -1, &q->begin, NULL) ||
	    sqlite3_prepare_v2(q->db, "COMMIT", -1, &q->commit, NULL) ||
	    sqlite3_prepare_v2(q->db, "INSERT INTO q (id, data) VALUES (?, ?)",
			       -1, &q->insert, NULL) ||
	    sqlite3_prepare_v2(q->db, "DELETE FROM q WHERE id = ?", -1,
			       &q->delete, NULL))
		return sql_say(q, "prepare");
	return 0;
}

static void
sql_close(SqlQueue *q)
{
	sqlite3_finalize(q->begin);
	sqlite3_finalize(q->commit);
	sqlite3_finalize(q->insert);
	sqlite3_finalize(q->delete);
	sqlite3_close(q->db);
}

/* One transaction: k inserts at the tail, and k deletes at the head
 * unless fill (the first batch, which gives the deletes something). */
static int
sql_batch(SqlQueue *q, size_t k, const void *data, size_t size, bool fill)
{
	int r = sql_step(q, q->begin);

	for (size_t i = 0; !r && i < k; i++) {
		sqlite3_bind_int64(q->insert, 1, q->tail++);
		sqlite3_bind_blob(q->insert, 2, data, (int)size, SQLITE_STATIC);
		r = sql_step(q, q->insert);
	}
	for (size_t i = 0; !r && !fill && i < k; i++) {
		sqlite3_bind_int64(q->delete, 1, q->head++);
		r = sql_step(q, q->delete);
	}
	return r ? r : sql_step(q, q->commit);
}

/* SQLite's default checkpoint interval, in pages, which the baseline
 * keeps whatever the page size. */
#define SQL_CKPT_PAGES 1000
/* Checkpoints a timed run spans at least: with large pages an interval is
 * tens of megabytes, and a run inside one would leave its cost out. */
#define SQL_CKPT_SPAN 4

/* Rows of a backlog written per transaction, before the timed part. */
#define SQL_FILL_BATCH 4096

/* Put queued rows in the table, then empty the WAL into the database. */
static int
sql_fill(SqlQueue *q, size_t queued, const void *data, size_t size)
{
	int r = 0;

	for (size_t done = 0; !r && done < queued; done += SQL_FILL_BATCH) {
		size_t n = queued - done < SQL_FILL_BATCH ? queued - done
							  : SQL_FILL_BATCH;

		r = sql_batch(q, n, data, size, true);
	}
	if (!r && sqlite3_exec(q->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL,
			       NULL, NULL) != SQLITE_OK)
		r = sql_say(q, "checkpoint");
	return r;
}

int
baseline_sqlite(const char *dir, unsigned page_size, size_t k, size_t msgs,
		size_t size, size_t queued, double *rate)
{
	static const char *const files[] = {"q.db", "q.db-wal", "q.db-shm"};
	char tmp[PATH_MAX], path[PATH_MAX + 16];
	size_t txns = (msgs + k - 1) / k, i;
	/* At most the pages a transaction adds to the WAL, counting only
	 * its rows (so that span errs long): one at least. */
	size_t frames = (k * size + page_size - 1) / page_size;
	size_t span =
		SQL_CKPT_SPAN * SQL_CKPT_PAGES / (frames ? frames : 1) + 1;
	SqlQueue q = {.head = 1, .tail = 1};
	void *data = calloc(1, size);
	double t0;
	int r;

	if (!data)
		return -ENOMEM;
	/* At least 32 transactions: a figure from a handful of them is
	 * one checkpoint more or less, not a rate. */
	txns = txns < 32 ? 32 : txns;
	txns = txns < span ? span : txns;
	snprintf(tmp, sizeof(tmp), "%s/sqlite.XXXXXX", dir);
	if (!mkdtemp(tmp)) {
		fprintf(stderr, "mbox-bench: mkdtemp %s: %s\n", tmp,
			strerror(errno));
		free(data);
		return -errno;
	}
	snprintf(path, sizeof(path), "%s/q.db", tmp);
	r = sql_open(&q, path, page_size);
	if (!r)
		r = sql_fill(&q, queued, data, size);
	if (!r)
		r = sql_batch(&q, k, data, size, true);
	t0 = now_s();
	for (i = 0; !r && i < txns; i++)
		r = sql_batch(&q, k, data, size, false);
	*rate = (double)(txns * k) / (now_s() - t0);
	sql_close(&q);
	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", tmp, files[i]);
		unlink(path);
	}
	rmdir(tmp);
	free(data);
	return r;
}

/* The ids leased by one transaction of baseline_store. */
typedef struct StoreIds {
	uint64_t *id;
	size_t n;
} StoreIds;

static int
store_note_leased(void *ctx, const StoreMsg *m)
{
	StoreIds *ids = ctx;

	ids->id[ids->n++] = m->id;
	return 0;
}

/* One transaction of baseline_store: k posts, their lease, and the acks
 * of the k leased before (acked, which it empties). With leased NULL, the
 * posts alone, not made durable (a backlog being filled); acked is then
 * ignored and may be NULL. */
static int
store_batch(Store *s, StoreMailbox *mb, size_t k, const void *data, size_t size,
	    StoreIds *leased, StoreIds *acked)
{
	StoreMsg m = {.mailbox_id = mb->id,
		      .priority = 4,
		      .data = data,
		      .len = size,
		      .pid = 1,
		      .uid = 1,
		      .gid = 1,
		      .comm = "mbox-bench"};
	int r = store_begin(s);

	for (size_t i = 0; r >= 0 && i < k; i++) {
		m.time_ns = (int64_t)(now_s() * 1e9);
		r = store_msg_insert(s, mb, &m);
	}
	if (leased) {
		leased->n = 0;
		if (r >= 0)
			r = store_msg_lease(s, mb, INT64_MAX, k,
					    store_note_leased, leased);
		for (size_t i = 0; r >= 0 && i < acked->n; i++)
			r = store_msg_ack(s, mb, acked->id[i], size);
		acked->n = 0;
	}
	if (r >= 0)
		r = store_commit(s, leased != NULL);
	if (r < 0) {
		fprintf(stderr, "mbox-bench: store baseline: %s\n",
			store_errmsg(s));
		store_rollback(s);
	}
	return r < 0 ? r : 0;
}

/* What one run of the store alone is made of (baseline_store). */
typedef struct StoreRun {
	size_t k, msgs, size, queued;
	size_t others;	    /* idle mailboxes beside the one measured */
	uint64_t cap_bytes; /* store_set_max_bytes, 0: none */
} StoreRun;

/* The idle mailboxes of a run, made in one transaction. */
static int
store_others(Store *s, const StoreMailbox *tmpl, size_t n)
{
	StoreMailbox o = *tmpl;
	int r = store_begin(s);

	for (size_t i = 0; r >= 0 && i < n; i++) {
		snprintf(o.name, sizeof(o.name), "idle-%zu", i);
		r = store_mailbox_create(s, &o, NULL);
	}
	if (r < 0) {
		store_rollback(s);
		return r;
	}
	return store_commit(s, true);
}

static int
store_run(const char *dir, const StoreRun *run, double *rate)
{
	static const char *const files[] = {"q.db", "q.db-wal", "q.db-shm"};
	size_t k = run->k, msgs = run->msgs, size = run->size;
	size_t queued = run->queued;
	char tmp[PATH_MAX], path[PATH_MAX + 16], err[256] = "";
	size_t txns = (msgs + k - 1) / k, i;
	StoreMailbox tmpl = {.name = "q", .mode = 0600, .lease_ms = 60000};
	StoreMailbox *mb = NULL;
	StoreIds a = {calloc(k, sizeof(uint64_t)), 0};
	StoreIds b = {calloc(k, sizeof(uint64_t)), 0};
	void *data = calloc(1, size);
	Store *s = NULL;
	double t0;
	int r;

	if (!a.id || !b.id || !data) {
		r = -ENOMEM;
		goto out;
	}
	txns = txns < 32 ? 32 : txns;
	snprintf(tmp, sizeof(tmp), "%s/store.XXXXXX", dir);
	if (!mkdtemp(tmp)) {
		r = -errno;
		fprintf(stderr, "mbox-bench: mkdtemp %s: %s\n", tmp,
			strerror(-r));
		goto out;
	}
	snprintf(path, sizeof(path), "%s/q.db", tmp);
	tmpl.owner_uid = getuid();
	tmpl.gid = getgid();
	r = store_open(&s, path, STORE_SYNC_FULL, err, sizeof(err));
	if (r < 0)
		fprintf(stderr, "mbox-bench: store baseline: %s\n", err);
	if (r >= 0 && (r = store_begin(s)) >= 0 &&
	    (r = store_mailbox_create(s, &tmpl, &mb)) >= 0)
		r = store_commit(s, true);
	if (r >= 0 && run->others)
		r = store_others(s, &tmpl, run->others);
	if (r >= 0 && run->cap_bytes)
		r = store_set_max_bytes(s, run->cap_bytes);
	if (r < 0 && s)
		fprintf(stderr, "mbox-bench: store baseline: %s\n",
			store_errmsg(s));
	/* The backlog, as baseline_sqlite's: then the WAL emptied. */
	for (size_t done = 0; r >= 0 && done < queued; done += SQL_FILL_BATCH) {
		size_t n = queued - done < SQL_FILL_BATCH ? queued - done
							  : SQL_FILL_BATCH;

		r = store_batch(s, mb, n, data, size, NULL, NULL);
	}
	if (r >= 0 && queued && (r = store_wal_empty(s)) < 0)
		fprintf(stderr,
			"mbox-bench: store baseline: after queueing %zu: %s\n",
			queued, store_errmsg(s));
	/* The first batch gives the acks of the second something. */
	if (r >= 0)
		r = store_batch(s, mb, k, data, size, &a, &b);
	t0 = now_s();
	for (i = 0; r >= 0 && i < txns; i++) {
		/* a holds what the last transaction leased: ack it now. */
		StoreIds t = a;

		a = b;
		b = t;
		r = store_batch(s, mb, k, data, size, &a, &b);
	}
	*rate = (double)(txns * k) / (now_s() - t0);
	store_free(s);
	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", tmp, files[i]);
		unlink(path);
	}
	rmdir(tmp);
out:
	free(a.id);
	free(b.id);
	free(data);
	return r < 0 ? r : 0;
}

int
baseline_store(const char *dir, size_t k, size_t msgs, size_t size,
	       size_t queued, double *rate)
{
	StoreRun run = {.k = k, .msgs = msgs, .size = size, .queued = queued};

	return store_run(dir, &run, rate);
}

int
baseline_store_capped(const char *dir, size_t k, size_t msgs, size_t size,
		      size_t others, uint64_t cap_bytes, double *rate)
{
	StoreRun run = {.k = k,
			.msgs = msgs,
			.size = size,
			.others = others,
			.cap_bytes = cap_bytes};

	return store_run(dir, &run, rate);
}
