/*
 * broker.c - owns the loop, the listener, the connections and the store;
 * runs group commit and the delivery phase.
 *
 * One loop iteration: readable connections are drained and their frames
 * dispatched; writes go into one store transaction, replies that need
 * durability become PendingOps. Then, in ev_prepare (just before the loop
 * blocks), broker_flush():
 *   1. leases ready messages to waiting RECVs and subscriptions in that
 *      same transaction (after the give-backs of the iteration),
 *   2. commits it once, fsync'd when it holds posts or acks (leases
 *      alone need no durability: they are void after a restart),
 *   3. sends the deliveries, then answers every PendingOp; when the
 *      commit failed, drops this flush's leases, answers the RECVs with
 *      nothing, fails every PendingOp (failed ACKs keep their leases)
 *      and serves the same mailboxes again on the next iteration
 *      (a batch already marked failed is rolled back and answered
 *      before step 1, so nothing is leased into it),
 *   4. runs timer-driven maintenance (expiry, dedup prune) in a
 *      transaction of its own, and frees connections closed meanwhile.
 * Deliveries thus only ever carry committed messages.
 */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"

static void broker_on_prepare(EV_P_ ev_prepare *w, int revents);
static void broker_on_commit_wait(EV_P_ ev_io *w, int revents);
static void broker_on_accept(EV_P_ ev_io *w, int revents);
static void broker_on_lease_timer(EV_P_ ev_timer *w, int revents);
static void broker_on_expiry_timer(EV_P_ ev_timer *w, int revents);
static void broker_on_dedup_timer(EV_P_ ev_timer *w, int revents);
static void broker_answer_waiter(Broker *b, Waiter *w, unsigned st,
				 const char *text);

static int64_t
broker_clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t
broker_now_ns(void)
{
	return broker_clock_ns(CLOCK_REALTIME);
}

int64_t
broker_mono_ns(void)
{
	return broker_clock_ns(CLOCK_MONOTONIC);
}

/* Nothing to do here: waking the loop runs the next flush. */
static void
broker_on_again(EV_P_ ev_timer *w, int revents)
{
}

/* Broker memory seen after a burst (1M messages queued and drained)
 * is mostly SQLite's page cache and heap pages freed but kept by malloc:
 * both go back to the system after a quiet tick. */
#define BROKER_TRIM_S 1.0
/* A mailbox whose lease found no room under the store's cap is served
 * again after this long: acks make room, but do not wake it. */
#define LEASE_ROOM_RETRY_NS 100000000
#define NO_ROOM_LOG_NS	    10000000000 /* and says so once in this long */

/* Whether some READY message of mb is due now (not all delayed). */
static bool
broker_has_due(Broker *b, StoreMailbox *mb, int64_t now)
{
	uint64_t delayed = 0;

	return store_mailbox_count_delayed(b->store, mb, now, &delayed) < 0 ||
	       mb->n_ready > delayed;
}

/* Give back the WAL's disk space, the page cache and the heap's free
 * pages; sleep until a request (broker_note_request). */
static void
broker_trim(Broker *b)
{
	int r;

	ev_timer_stop(b->loop, &b->trim_timer);
	/* On a full disk the WAL's file is the room the drains write in:
	 * given back, it could be gone when they need it. */
	r = b->disk_low ? 0 : store_wal_empty(b->store);
	if (r < 0)
		log_write(b->log, r == -EBUSY ? LOG_DEBUG : LOG_WARNING,
			  "cannot empty the WAL while idle: %s (it is "
			  "checkpointed again as it grows)",
			  store_errmsg(b->store));
	store_release_memory(b->store);
	malloc_trim(0);
}

static void
broker_on_trim_timer(EV_P_ ev_timer *w, int revents)
{
	Broker *b = w->data;

	if (b->busy) {
		b->busy = false;
		return;
	}
	broker_trim(b); /* quiet since the last tick */
}

void
broker_unawait(Broker *b, Conn *c)
{
	if (c->awaited_gen == b->commit_gen && c->awaited_gen) {
		c->awaited_gen = 0;
		b->n_awaited--;
	}
}

void
broker_note_request(Broker *b, Conn *c)
{
	broker_unawait(b, c);
	b->busy = true;
	if (!ev_is_active(&b->trim_timer) && !b->stopping) {
		ev_timer_set(&b->trim_timer, BROKER_TRIM_S, BROKER_TRIM_S);
		ev_timer_start(b->loop, &b->trim_timer);
	}
}

static void
broker_on_accept_retry(EV_P_ ev_timer *w, int revents)
{
	Broker *b = w->data;

	ev_io_start(b->loop, &b->listen_io);
}

/* Apply the operator's cap (0: none), under the hold of a full disk. */
static int
broker_store_cap(Broker *b, uint64_t cap)
{
	/* A lease row may need a new page: a quarter of the reserve. Half
	 * of it is the WAL's (store_set_wal_max, broker_new), the last
	 * quarter for the transaction that runs past a checkpoint's mark. */
	if (b->disk_low)
		return store_hold_size(b->store,
				       reserve_file_size(b->reserve) / 4, cap);
	return store_set_max_bytes(b->store, cap);
}

/*
 * Give the reserve back to the file system: the disk is full. Leases,
 * acks and checkpoints then have room, and the store is held at its size
 * (broker_disk_check, after the commit: hold_due) so that posts go only
 * where acks free pages inside it, and cannot take what the drains need.
 * Half of it first: the commit that found the disk full may be one of
 * large posts, which must not take it all before the hold applies
 * (broker_on_disk_full); the rest for the next write that finds the disk
 * full, or all at once if all. Returns whether space was freed.
 */
static bool
broker_reserve_release(Broker *b, bool all)
{
	uint64_t size, kept, keep;

	if (!b->reserve || !(kept = reserve_file_kept(b->reserve)))
		return false;
	size = reserve_file_size(b->reserve);
	keep = all || !reserve_file_held(b->reserve) ? 0 : size / 2;
	if (reserve_file_release_part(b->reserve, keep) < 0) {
		log_write(b->log, LOG_ERR,
			  "the disk of the store is full, and the reserve "
			  "cannot be given back: %s",
			  reserve_file_errmsg(b->reserve));
		return false;
	}
	if (!b->disk_low) {
		b->disk_low = true;
		b->hold_due = true;
		b->reserve_try_ns = broker_mono_ns();
		log_write(b->log, LOG_WARNING,
			  "the disk of the store is full: gave back %llu of "
			  "the %llu bytes kept in %s so that messages can "
			  "still be received and acked; posts now go only "
			  "where acks free room inside the store, until the "
			  "disk has room for the reserve twice over (%llu "
			  "bytes, what the file still holds included)",
			  (unsigned long long)(kept - keep),
			  (unsigned long long)size,
			  reserve_file_path(b->reserve),
			  (unsigned long long)(size * 2));
	} else {
		log_write(b->log, LOG_WARNING,
			  "the disk of the store is full still: gave back the "
			  "last %llu bytes kept in %s",
			  (unsigned long long)(kept - keep),
			  reserve_file_path(b->reserve));
	}
	return true;
}

/*
 * The store's hook (store_on_disk_full): a write found the disk full;
 * SQLite writes again if this made room, and its commit goes through.
 * Once half the reserve is given back, a batch that adds data (posts)
 * and finds the disk full again before the hold applies gets no more: it
 * fails (its requests are answered STORE), and the rest stays for the
 * drains.
 */
static bool
broker_on_disk_full(void *ctx, bool wal)
{
	Broker *b = ctx;

	/* The frames of such a batch, not a checkpoint run in its commit
	 * (which writes the database file and makes no new data). */
	if (wal && b->disk_low && b->hold_due && store_txn_adds(b->store))
		return false;
	return broker_reserve_release(b, false);
}

/* A write failed for want of space and no hook made room (a cap refused
 * it, or the disk filled some other way): if the disk is what is full,
 * give the reserve back for the next writes. */
static void
broker_disk_full(Broker *b)
{
	uint64_t free_bytes = 0;

	if (!b->reserve || !reserve_file_held(b->reserve))
		return;
	/* Room for the reserve again: a size cap refused the write. */
	if (reserve_file_disk_free(b->reserve, &free_bytes) == 0 &&
	    free_bytes >= reserve_file_size(b->reserve))
		return;
	broker_reserve_release(b, false);
}

/*
 * Take the reserve if it is not held and the disk has room for it twice
 * over (at most once a second, outside a transaction); a store held at
 * its size for a full disk gets the operator's cap back.
 */
static void
broker_disk_check(Broker *b)
{
	int64_t now = broker_mono_ns();
	int r;

	if (!b->reserve || store_in_txn(b->store))
		return;
	if (b->hold_due) {
		b->hold_due = false;
		if (broker_store_cap(b, b->cfg.max_store_bytes) < 0)
			log_write(b->log, LOG_ERR,
				  "cannot hold the store at its size: %s",
				  store_errmsg(b->store));
	}
	if (reserve_file_held(b->reserve) ||
	    now - b->reserve_try_ns < 1000000000)
		return;
	b->reserve_try_ns = now;
	if (reserve_file_take(b->reserve) < 0)
		return;
	if (!b->disk_low) {
		log_write(b->log, LOG_NOTICE,
			  "the disk has room: %llu bytes are now kept aside "
			  "for a full disk in %s",
			  (unsigned long long)reserve_file_size(b->reserve),
			  reserve_file_path(b->reserve));
		return;
	}
	b->disk_low = false;
	r = broker_store_cap(b, b->cfg.max_store_bytes);
	if (r < 0) {
		/* Held at its size still; tried again with the reserve. */
		b->disk_low = true;
		log_write(b->log, LOG_ERR,
			  "cannot lift the hold on the store's size: %s",
			  store_errmsg(b->store));
		reserve_file_release(b->reserve);
		return;
	}
	b->store_full = false;
	log_write(b->log, LOG_NOTICE,
		  "the disk of the store has room again: %llu bytes are kept "
		  "aside in %s, and posts may grow the store again",
		  (unsigned long long)reserve_file_size(b->reserve),
		  reserve_file_path(b->reserve));
}

/* The reserve's file, beside the database (not taken yet). */
static int
broker_reserve_new(Broker *b)
{
	char path[PATH_MAX];
	int r;

	if (!b->cfg.disk_reserve_bytes)
		return 0;
	if ((size_t)snprintf(path, sizeof(path), "%s-reserve",
			     b->cfg.db_path) >= sizeof(path)) {
		log_write(b->log, LOG_ERR,
			  "the database path %s is too long to keep a "
			  "reserve beside it; give a shorter --db, or "
			  "--disk-reserve 0",
			  b->cfg.db_path);
		return -ENAMETOOLONG;
	}
	r = reserve_file_new(&b->reserve, path, b->cfg.disk_reserve_bytes);
	if (r < 0)
		log_write(b->log, LOG_ERR, "cannot keep a reserve in %s: %s",
			  path, strerror(-r));
	return r;
}

/*
 * Opening the store writes (the recovery voids leases, deletes temporary
 * mailboxes): on a full disk, a reserve the last run left held is given
 * back and the store opened again.
 */
static int
broker_store_open(Broker *b, char *err, size_t errlen)
{
	int r = store_open(&b->store, b->cfg.db_path, b->cfg.sync, err, errlen);

	if (r != -ENOSPC || !b->reserve)
		return r;
	if (b->store) {
		store_free(b->store);
		b->store = NULL;
	}
	b->reserve_try_ns = broker_mono_ns();
	/* Taken over as it is (it may hold half, given back in part by
	 * the last run), only to be given back at once. */
	(void)reserve_file_take(b->reserve);
	if (!broker_reserve_release(b, true))
		return r;
	err[0] = '\0';
	return store_open(&b->store, b->cfg.db_path, b->cfg.sync, err, errlen);
}

/*
 * Keep cfg.disk_reserve_bytes aside for a full disk. A disk without room
 * for it (twice over) is no reason not to start: it is taken once there
 * is room (broker_disk_check).
 */
static void
broker_reserve_start(Broker *b)
{
	int r;

	if (!b->reserve)
		return;
	store_on_disk_full(b->store, broker_on_disk_full, b);
	if (b->disk_low) {
		/* Given back to open the store. */
		broker_disk_check(b);
		return;
	}
	b->reserve_try_ns = broker_mono_ns();
	r = reserve_file_take(b->reserve);
	if (r == -ENOSPC && reserve_file_was_short(b->reserve)) {
		/* Given back for a full disk by an earlier run (killed
		 * before it could take it again): the disk is full still. */
		b->disk_low = true;
		b->hold_due = true;
		broker_disk_check(b);
		log_write(b->log, LOG_WARNING,
			  "the disk of the store was full when mboxd last "
			  "ran, and has less than %llu bytes free still: "
			  "posts go only where acks free room inside the "
			  "store until it has (%s)",
			  (unsigned long long)(b->cfg.disk_reserve_bytes * 2),
			  reserve_file_errmsg(b->reserve));
		return;
	}
	if (r < 0)
		log_write(b->log, LOG_WARNING,
			  "cannot keep %llu bytes aside for a full disk (%s); "
			  "should the disk fill up, messages could not be "
			  "received and acked until space is freed. It is "
			  "taken as soon as the disk has room (free some, or "
			  "give a smaller --disk-reserve)",
			  (unsigned long long)b->cfg.disk_reserve_bytes,
			  reserve_file_errmsg(b->reserve));
}

int
broker_new(Broker **out, struct ev_loop *loop, const Log *log,
	   const BrokerConfig *cfg, int listen_fd, bool own_socket)
{
	Broker *b = calloc(1, sizeof(*b));
	char err[256] = "";
	int r;

	if (!b)
		return -ENOMEM;
	b->loop = loop;
	b->log = log;
	b->cfg = *cfg;
	b->self_uid = geteuid();
	b->started_ns = broker_now_ns();
	b->listen_fd = listen_fd;
	b->own_socket = own_socket;
	b->commit_wait_fd = -1;
	b->flush_gen = 1; /* restored leases have 0: committed */
	b->deny_log.burst = DENY_LOG_BURST;
	b->deny_log.per_s = DENY_LOG_PER_S;
	b->store_err_log.burst = STORE_ERR_LOG_BURST;
	b->store_err_log.per_s = STORE_ERR_LOG_PER_S;
	b->skip_log.burst = STORE_ERR_LOG_BURST;
	b->skip_log.per_s = STORE_ERR_LOG_PER_S;
	lease_table_init(&b->leases);
	proto_writer_init(&b->w);
	r = broker_reserve_new(b);
	if (r < 0) {
		broker_free(b);
		return r;
	}
	r = broker_store_open(b, err, sizeof(err));
	if (r < 0) {
		log_write(log, LOG_ERR, "cannot open the store %s: %s",
			  cfg->db_path, err[0] ? err : strerror(-r));
		broker_free(b);
		return r;
	}
	/* A full disk may have to take a whole WAL into the database: at
	 * most half the reserve (16 MiB, the WAL's own bound, with the
	 * default 32M). */
	r = store_set_wal_max(b->store, cfg->disk_reserve_bytes / 2);
	if (r < 0) {
		log_write(log, LOG_ERR, "cannot bound the WAL of %s: %s",
			  cfg->db_path, store_errmsg(b->store));
		broker_free(b);
		return r;
	}
	r = store_set_max_bytes(b->store, cfg->max_store_bytes);
	if (r < 0) {
		log_write(log, LOG_ERR,
			  "cannot cap the store %s at %llu bytes (--max-store-"
			  "size): %s; raise the cap, or give 0 for none",
			  cfg->db_path,
			  (unsigned long long)cfg->max_store_bytes,
			  r == -EINVAL ? "the database is already larger"
				       : strerror(-r));
		broker_free(b);
		return r;
	}
	store_on_txn_end(b->store, broker_counts_settle, b);
	broker_reserve_start(b);
	ev_io_init(&b->listen_io, broker_on_accept, listen_fd, EV_READ);
	b->listen_io.data = b;
	ev_io_start(loop, &b->listen_io);
	/* The first tick comes at once: what opening the store took (a
	 * migration, the recovery) is of no further use, and an idle broker
	 * starts small. */
	ev_timer_init(&b->trim_timer, broker_on_trim_timer, 0., BROKER_TRIM_S);
	b->trim_timer.data = b;
	ev_timer_start(loop, &b->trim_timer);
	ev_timer_init(&b->accept_retry, broker_on_accept_retry, 0.1, 0.);
	b->accept_retry.data = b;
	ev_timer_init(&b->lease_timer, broker_on_lease_timer, 0., 0.);
	b->lease_timer.data = b;
	ev_timer_init(&b->again, broker_on_again, 0., 0.);
	b->again.data = b;
	ev_timer_init(&b->expiry_timer, broker_on_expiry_timer, 0., 0.);
	b->expiry_timer.data = b;
	b->expiry_dirty = true; /* messages may be stored with a ttl */
	{
		/* Forget old dedup keys twice per window (at least every
		 * minute, at most every second). */
		double every = (double)cfg->dedup_window_ms / 2e3;
		every = every < 1. ? 1. : every > 60. ? 60. : every;
		ev_timer_init(&b->dedup_timer, broker_on_dedup_timer, every,
			      every);
		b->dedup_timer.data = b;
		ev_timer_start(loop, &b->dedup_timer);
	}
	ev_prepare_init(&b->prepare, broker_on_prepare);
	b->prepare.data = b;
	ev_prepare_start(loop, &b->prepare);
	/* libev's timers have a resolution of a millisecond (epoll_wait's
	 * timeout): the commit delay is a few dozen microseconds. */
	b->commit_wait_fd =
		timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (b->commit_wait_fd < 0) {
		r = -errno;
		log_write(log, LOG_ERR, "cannot create the commit timer: %s",
			  strerror(-r));
		broker_free(b);
		return r;
	}
	ev_io_init(&b->commit_wait, broker_on_commit_wait, b->commit_wait_fd,
		   EV_READ);
	b->commit_wait.data = b;
	ev_io_start(loop, &b->commit_wait);
	*out = b;
	return 0;
}

static void
broker_rt_free(Broker *b, MailboxRt *rt)
{
	broker_counts_forget(b, rt);
	ev_timer_stop(b->loop, &rt->ready_timer);
	free(rt->name);
	free(rt);
}

static int
broker_free_rt_cb(void *ctx, StoreMailbox *mb)
{
	Broker *b = ctx;
	MailboxRt *rt = mb->user;

	if (rt) {
		broker_rt_free(b, rt);
		mb->user = NULL;
	}
	return 0;
}

Broker *
broker_free(Broker *b)
{
	Conn *c;

	if (!b)
		return NULL;
	while (b->handoffs)
		handoff_expire(b, b->handoffs);
	while ((c = b->conns)) {
		conn_close(c, "broker stopping");
	}
	while ((c = b->dead)) {
		b->dead = c->next;
		conn_free(c);
	}
	/* Deletions not settled: those rolled back are freed with their
	 * mailbox below, the others here. */
	while (b->dropped) {
		MailboxRt *rt = b->dropped;
		StoreMailbox *mb =
			b->store ? store_mailbox_by_id(b->store, rt->mailbox_id)
				 : NULL;

		b->dropped = rt->dropped_next;
		if (!mb || mb->user != rt)
			broker_rt_free(b, rt);
	}
	while (b->pending_head) {
		PendingOp *p = b->pending_head;
		b->pending_head = p->next;
		free(p->ids);
		free(p->leases);
		free(p->body);
		free(p);
	}
	if (b->store) {
		store_on_txn_end(b->store, NULL, NULL);
		store_mailbox_foreach(b->store, broker_free_rt_cb, b);
		/* Its close checkpoints, which may still need the reserve
		 * (the hook): the reserve goes after it. */
		store_free(b->store);
	}
	reserve_file_free(b->reserve);
	ev_io_stop(b->loop, &b->listen_io);
	ev_timer_stop(b->loop, &b->accept_retry);
	ev_timer_stop(b->loop, &b->trim_timer);
	ev_timer_stop(b->loop, &b->lease_timer);
	ev_timer_stop(b->loop, &b->expiry_timer);
	ev_timer_stop(b->loop, &b->dedup_timer);
	ev_timer_stop(b->loop, &b->again);
	ev_prepare_stop(b->loop, &b->prepare);
	if (b->commit_wait_fd >= 0) {
		ev_io_stop(b->loop, &b->commit_wait);
		close(b->commit_wait_fd);
	}
	if (b->listen_fd >= 0)
		close(b->listen_fd);
	if (b->own_socket && b->cfg.socket_path)
		unlink(b->cfg.socket_path);
	lease_table_release(&b->leases);
	free(b->releases);
	free(b->temps_owed);
	free(b->served);
	free(b->uid_counts);
	proto_writer_release(&b->w);
	free(b);
	return NULL;
}

/*
 * Connections over max_connections or max_connections_per_uid are kept
 * just long enough to answer their first request (HELLO) with LIMIT, so
 * the client learns why; at most BROKER_REFUSED_MAX of them at a time,
 * each for at most BROKER_REFUSE_S seconds. Beyond that margin a
 * connection is closed at accept without a word: a flood of them costs
 * nothing but the accept.
 */
#define BROKER_REFUSE_S 2.0

/* Admins (uid 0, the broker's uid) are not counted per uid. */
static bool
broker_uid_limited(const Broker *b, uid_t uid)
{
	return uid != 0 && uid != b->self_uid;
}

static struct UidCount *
broker_uid_find(Broker *b, uid_t uid)
{
	for (size_t i = 0; i < b->n_uid_counts; i++)
		if (b->uid_counts[i].uid == uid)
			return &b->uid_counts[i];
	return NULL;
}

static int
broker_uid_add(Broker *b, uid_t uid)
{
	struct UidCount *u = broker_uid_find(b, uid);

	if (u) {
		u->n++;
		return 0;
	}
	if (b->n_uid_counts == b->cap_uid_counts) {
		size_t cap = b->cap_uid_counts ? 2 * b->cap_uid_counts : 16;
		void *n = realloc(b->uid_counts, cap * sizeof(*b->uid_counts));
		if (!n)
			return -ENOMEM;
		b->uid_counts = n;
		b->cap_uid_counts = cap;
	}
	b->uid_counts[b->n_uid_counts++] = (struct UidCount){uid, 1};
	return 0;
}

static void
broker_uid_del(Broker *b, uid_t uid)
{
	struct UidCount *u = broker_uid_find(b, uid);

	if (u && --u->n == 0)
		*u = b->uid_counts[--b->n_uid_counts];
}

/* The connection limit c is over, or NULL. */
static const char *
broker_conn_limit(Broker *b, const Conn *c)
{
	struct UidCount *u;

	if (b->n_conns >= b->cfg.max_connections)
		return "max_connections";
	if (broker_uid_limited(b, c->uid) && (u = broker_uid_find(b, c->uid)) &&
	    u->n >= b->cfg.max_connections_per_uid)
		return "max_connections_per_uid";
	return NULL;
}

static void
broker_on_refuse_timeout(EV_P_ ev_timer *t, int revents)
{
	conn_close(t->data, "over a connection limit, sent no request");
}

/* A flood of connections must not flood the log: one line a second. */
static void
broker_log_refusal(Broker *b, const Conn *c, const char *limit)
{
	int64_t now = broker_now_ns();

	if (now - b->refuse_log_ns < 1000000000) {
		b->refuse_quiet++;
		return;
	}
	log_write(b->log, LOG_WARNING,
		  "refusing client %llu (pid %d uid %u %s): %s reached "
		  "(%zu more refused since the last such message)",
		  (unsigned long long)c->serial, (int)c->pid, (unsigned)c->uid,
		  c->comm, limit, b->refuse_quiet);
	b->refuse_log_ns = now;
	b->refuse_quiet = 0;
}

/* Count a new connection in, or mark it refused. */
static void
broker_admit(Broker *b, Conn *c)
{
	const char *limit = broker_conn_limit(b, c);

	c->next = b->conns;
	if (b->conns)
		b->conns->prev = c;
	b->conns = c;
	if (!limit) {
		b->n_conns++;
		broker_count(b, NULL, BC_CONNECTIONS, 1);
		if (broker_uid_limited(b, c->uid)) {
			if (broker_uid_add(b, c->uid) < 0) {
				conn_close(c, "out of memory");
				return;
			}
			c->uid_counted = true;
		}
		log_write(b->log, LOG_DEBUG,
			  "client %llu connected: pid %d uid %u gid %u %s",
			  (unsigned long long)c->serial, (int)c->pid,
			  (unsigned)c->uid, (unsigned)c->gid, c->comm);
		return;
	}
	c->refuse_limit = limit;
	b->n_refused++;
	broker_log_refusal(b, c, limit);
	if (b->n_refused > BROKER_REFUSED_MAX) {
		conn_close(c, "too many refused connections at once");
		return;
	}
	ev_timer_init(&c->refuse_timer, broker_on_refuse_timeout,
		      BROKER_REFUSE_S, 0.);
	c->refuse_timer.data = c;
	ev_timer_start(b->loop, &c->refuse_timer);
}

static void
broker_on_accept(EV_P_ ev_io *w, int revents)
{
	Broker *b = w->data;

	for (int i = 0; i < 64; i++) {
		int fd = accept4(b->listen_fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		Conn *c;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM) {
				/* Out of descriptors: stop listening a moment
				 * instead of spinning on a readable socket. */
				log_write(b->log, LOG_WARNING,
					  "accept: %s; pausing new connections "
					  "for 100 ms",
					  strerror(errno));
				ev_io_stop(b->loop, &b->listen_io);
				ev_timer_start(b->loop, &b->accept_retry);
			}
			return;
		}
		if (b->n_conns >= b->cfg.max_connections &&
		    b->n_refused >= BROKER_REFUSED_MAX) {
			/* Past the hard margin: not even an answer. */
			b->refuse_quiet++;
			close(fd);
			continue;
		}
		if (conn_new(&c, b, fd) < 0)
			continue;
		broker_admit(b, c);
	}
}

void
broker_reap(Broker *b, Conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		b->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->refuse_limit)
		b->n_refused--;
	else
		b->n_conns--;
	if (c->uid_counted)
		broker_uid_del(b, c->uid);
	c->uid_counted = false;
	c->prev = NULL;
	c->next = b->dead;
	b->dead = c;
}

int
broker_txn(Broker *b)
{
	int r = store_begin(b->store);

	if (r < 0)
		log_write(b->log, LOG_ERR, "store: cannot begin: %s",
			  store_errmsg(b->store));
	return r;
}

void
broker_batch_fail(Broker *b, int err)
{
	b->batch_failed = true;
	if (!b->batch_err)
		b->batch_err = err < 0 ? err : -EIO;
}

static void broker_reply_store_failed(Broker *b, Conn *c, uint16_t op,
				      uint32_t req_id, int r);

bool
broker_refuse_add(Broker *b, Conn *c, uint16_t op, uint32_t req_id)
{
	if (!b->store_full)
		return false;
	/* Now and then one is let through: space may have been freed
	 * outside the broker (disk), or a raised cap. */
	if (broker_now_ns() - b->store_full_ns >= 1000000000) {
		b->store_full = false;
		return false;
	}
	broker_reply_store_failed(b, c, op, req_id, -ENOSPC);
	return true;
}

void
broker_batch_frees(Broker *b)
{
	b->batch_frees = true;
}

bool
broker_deny_log_ok(Broker *b, size_t *quiet)
{
	return log_rate_ok(&b->deny_log, broker_mono_ns(), quiet);
}

/* Queue p, for c, to be answered after the batch's commit. */
static void
broker_pending_add(Broker *b, Conn *c, PendingOp *p)
{
	p->conn = c;
	if (b->pending_tail)
		b->pending_tail->next = p;
	else
		b->pending_head = p;
	b->pending_tail = p;
	c->in_flight++;
}

int
broker_defer(Broker *b, enum pending_kind kind, Conn *c, uint16_t op,
	     uint32_t req_id, uint64_t *ids, PendingLease *leases, size_t n)
{
	PendingOp *p = calloc(1, sizeof(*p));

	if (!p) {
		free(ids);
		free(leases);
		return -ENOMEM;
	}
	p->kind = kind;
	p->op = op;
	p->req_id = req_id;
	p->ids = ids;
	p->leases = leases;
	p->n = n;
	broker_pending_add(b, c, p);
	if (kind != PENDING_NACK)
		b->batch_durable = true;
	if ((kind == PENDING_POST || kind == PENDING_PUBLISH) && n)
		b->batch_posts = true;
	return 0;
}

int
broker_defer_read(Broker *b, Conn *c, const ProtoHeader *h, const uint8_t *body,
		  size_t len)
{
	PendingOp *p = calloc(1, sizeof(*p));

	if (!p || !(p->body = malloc(len ? len : 1))) {
		free(p);
		return -ENOMEM;
	}
	if (len) /* an empty body may come as NULL */
		memcpy(p->body, body, len);
	p->body_len = len;
	p->kind = PENDING_READ;
	p->op = h->opcode;
	p->req_id = h->id;
	broker_pending_add(b, c, p);
	conn_hold(c, true);
	return 0;
}

MailboxRt *
broker_mailbox_rt(Broker *b, StoreMailbox *mb)
{
	MailboxRt *rt = mb->user;

	if (rt)
		return rt;
	rt = calloc(1, sizeof(*rt));
	if (rt)
		rt->name = strdup(mb->name);
	if (!rt || !rt->name) {
		free(rt);
		return NULL;
	}
	rt->broker = b;
	rt->mailbox_id = mb->id;
	rt->created_ns = mb->created_ns;
	mb->user = rt;
	return rt;
}

static void
broker_rt_news(Broker *b, MailboxRt *rt)
{
	/* No runtime state means nobody waits: nothing to deliver. A
	 * mailbox being deleted delivers nothing either; if the deletion is
	 * rolled back, broker_settle_dropped puts it here again. */
	if (!rt || rt->news || rt->dropped || (!rt->wait_head && !rt->sub_head))
		return;
	rt->news = true;
	rt->news_next = b->news;
	b->news = rt;
}

void
broker_mailbox_news(Broker *b, StoreMailbox *mb)
{
	broker_rt_news(b, mb->user);
}

bool
broker_conn_output_full(const Broker *b, Conn *c, size_t len)
{
	if (!conn_congested(c) &&
	    c->out_bytes + c->deliver_bytes + len < b->cfg.max_out_bytes)
		return false;
	c->held_back = true;
	return true;
}

uint64_t
broker_visit_begin(Broker *b)
{
	return ++b->visit_stamp;
}

bool
broker_conn_first_visit(Conn *c, uint64_t stamp)
{
	if (c->visited == stamp)
		return false;
	c->visited = stamp;
	return true;
}

size_t
broker_rt_consumers(Broker *b, const MailboxRt *rt)
{
	uint64_t stamp = broker_visit_begin(b);
	size_t n = 0;

	for (const Sub *s = rt->sub_head; s; s = s->mb_next)
		if (s->conn && broker_conn_first_visit(s->conn, stamp))
			n++;
	for (const Waiter *w = rt->wait_head; w; w = w->mb_next)
		if (broker_conn_first_visit(w->conn, stamp))
			n++;
	return n;
}

size_t
broker_conn_room(const Broker *b, Conn *c)
{
	/* A CLAIM still pushing goes first; its end wakes c. */
	if (c->closing || c->leases.count >= b->cfg.max_unacked ||
	    (b->claims && handoff_claiming(b, c)) ||
	    broker_conn_output_full(b, c, 0))
		return 0;
	return b->cfg.max_unacked - c->leases.count;
}

void
broker_conn_wake(Broker *b, Conn *c)
{
	c->held_back = false;
	if (c->closing)
		return;
	for (Waiter *w = c->waiters; w; w = w->conn_next)
		broker_rt_news(b, w->rt);
	for (Sub *s = c->subs; s; s = s->owner_next)
		broker_rt_news(b, s->rt);
}

static void
broker_on_wait_timeout(EV_P_ ev_timer *t, int revents)
{
	Waiter *w = t->data;
	Conn *c = w->conn;
	ProtoWriter *pw = &w->broker->w;
	uint32_t id = w->req_id;

	broker_waiter_free(w);
	proto_writer_begin(pw, MBOX_OP_RECV, MBOX_FLAG_REPLY, id, MBOX_S_OK);
	c->in_flight--;
	conn_send_writer(c, pw);
}

void
broker_waiter_add(Broker *b, Waiter *w)
{
	MailboxRt *rt = w->rt;
	Conn *c = w->conn;

	w->broker = b;
	w->mb_prev = rt->wait_tail;
	if (rt->wait_tail)
		rt->wait_tail->mb_next = w;
	else
		rt->wait_head = w;
	rt->wait_tail = w;
	rt->n_waiters++;
	w->conn_next = c->waiters;
	if (c->waiters)
		c->waiters->conn_prev = w;
	c->waiters = w;
	w->timer.data = w;
	c->in_flight++;
	if (!rt->news) {
		rt->news = true;
		rt->news_next = b->news;
		b->news = rt;
	}
}

void
broker_waiter_arm(Waiter *w, uint64_t wait_ms)
{
	ev_timer_init(&w->timer, broker_on_wait_timeout, (double)wait_ms / 1e3,
		      0.);
	w->timer.data = w;
	ev_timer_start(w->broker->loop, &w->timer);
}

void
broker_waiter_free(Waiter *w)
{
	Broker *b = w->broker;
	MailboxRt *rt = w->rt;
	Conn *c = w->conn;

	ev_timer_stop(b->loop, &w->timer);
	if (rt) {
		if (w->mb_prev)
			w->mb_prev->mb_next = w->mb_next;
		else
			rt->wait_head = w->mb_next;
		if (w->mb_next)
			w->mb_next->mb_prev = w->mb_prev;
		else
			rt->wait_tail = w->mb_prev;
		rt->n_waiters--;
	}
	if (w->conn_prev)
		w->conn_prev->conn_next = w->conn_next;
	else
		c->waiters = w->conn_next;
	if (w->conn_next)
		w->conn_next->conn_prev = w->conn_prev;
	free(w);
}

/*
 * Queue a leased message to be made ready again. If memory runs out the
 * row stays LEASED until a restart voids it: nothing is lost, only late.
 */
/* Room for need elements of size in *array (capacity *cap), doubling:
 * 0 or -ENOMEM (then *array is as it was). */
static int
broker_grow(void **array, size_t *cap, size_t need, size_t size)
{
	size_t n = *cap ? *cap : 64;
	void *p;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	p = realloc(*array, n * size);
	if (!p)
		return -ENOMEM;
	*array = p;
	*cap = n;
	return 0;
}

void
broker_queue_release(Broker *b, uint64_t msg_id, int64_t mailbox_id,
		     bool uncommitted)
{
	if (broker_grow((void **)&b->releases, &b->cap_releases,
			b->n_releases + 1, sizeof(*b->releases)) < 0) {
		log_write(b->log, LOG_ERR,
			  "out of memory giving back message %llu",
			  (unsigned long long)msg_id);
		return;
	}
	b->releases[b->n_releases].msg_id = msg_id;
	b->releases[b->n_releases].mailbox_id = mailbox_id;
	b->releases[b->n_releases].uncommitted = uncommitted;
	b->n_releases++;
}

void
broker_lease_drop(Broker *b, Lease *l, bool give_back)
{
	Sub *s = l->sub;
	Conn *holder = l->holder;
	/* At max_unacked it was held back from RECVs and pushes (or over
	 * it, after a reload lowered the limit). */
	bool was_full = holder && holder->leases.count >= b->cfg.max_unacked;

	if (give_back)
		broker_queue_release(b, l->msg_id, l->mailbox_id,
				     l->flush_gen == b->flush_gen);
	if (s) {
		s->unacked--;
		/* The window opened: more may be pushed. */
		if (s->conn && s->rt) {
			StoreMailbox *mb = store_mailbox_by_id(
				b->store, s->rt->mailbox_id);
			if (mb)
				broker_mailbox_news(b, mb);
		}
	}
	lease_remove(&b->leases, l);
	if (was_full)
		broker_conn_wake(b, holder);
}

void
broker_release_conn(Broker *b, Conn *c)
{
	Lease *l;

	/* Its unfinished CLAIM: the leases go back with the others. */
	handoff_claim_drop(b, c);
	/* Leases first: they point at the subscriptions. */
	while ((l = c->leases.head))
		broker_lease_drop(b, l, true);
	while (c->subs)
		sub_remove(b, c->subs);
}

/* Leases past their deadline: the message goes back as at reader death,
 * and a later ACK of it is refused (its lease is gone). */
static void
broker_on_lease_timer(EV_P_ ev_timer *w, int revents)
{
	Broker *b = w->data;
	int64_t now = broker_now_ns();
	Lease *l;

	while ((l = lease_first_deadline(&b->leases)) &&
	       l->deadline_ns <= now) {
		Conn *c = l->holder;
		if (c)
			log_write(b->log, LOG_INFO,
				  "lease of message %llu by client %llu (pid "
				  "%d) ran out; it is ready again",
				  (unsigned long long)l->msg_id,
				  (unsigned long long)c->serial, (int)c->pid);
		else
			log_write(b->log, LOG_INFO,
				  "hand-off of message %llu was not claimed in "
				  "time; it is ready again",
				  (unsigned long long)l->msg_id);
		broker_lease_drop(b, l, true);
	}
}

static void
broker_arm_lease_timer(Broker *b)
{
	Lease *l = lease_first_deadline(&b->leases);
	double after;

	ev_timer_stop(b->loop, &b->lease_timer);
	if (!l)
		return;
	after = (double)(l->deadline_ns - broker_now_ns()) / 1e9;
	ev_timer_set(&b->lease_timer, after > 0 ? after + 0.001 : 0., 0.);
	ev_timer_start(b->loop, &b->lease_timer);
}

/* Write the give-backs queued from index from on into the (delivery)
 * transaction. */
static void
broker_apply_releases(Broker *b, size_t from)
{
	for (size_t i = from; i < b->n_releases; i++) {
		StoreMailbox *mb = store_mailbox_by_id(
			b->store, b->releases[i].mailbox_id);
		int r;

		if (!mb)
			continue;
		r = store_msg_release(b->store, mb, b->releases[i].msg_id, 0);
		if (r < 0 && r != -ENOENT)
			log_write(b->log, LOG_ERR,
				  "cannot give back message %llu: %s",
				  (unsigned long long)b->releases[i].msg_id,
				  store_errmsg(b->store));
		else if (r == 1)
			log_write(b->log, LOG_INFO,
				  "message %llu of %s reached max_deliveries "
				  "(%llu): moved to the dead list",
				  (unsigned long long)b->releases[i].msg_id,
				  mb->name,
				  (unsigned long long)mb->max_deliveries);
		if (r == 1)
			broker_count(b, mb, BC_DEAD_MAX_DELIVERIES, 1);
		broker_mailbox_news(b, mb);
	}
}

/* A settled lease whose batch failed: c holds the message again, with a
 * fresh deadline of its length, in its subscription's window. */
static void
broker_restore_lease(Broker *b, Conn *c, uint64_t id, const PendingLease *pl)
{
	StoreMailbox *mb = store_mailbox_by_id(b->store, pl->mailbox_id);
	Lease *l;

	if (lease_add(&b->leases, &c->leases, id, pl->mailbox_id, c,
		      broker_now_ns() + (int64_t)pl->lease_ms * 1000000,
		      &l) < 0)
		return;
	l->lease_ms = pl->lease_ms;
	l->msg_len = pl->msg_len;
	/* Looked up again: the subscription may have ended meanwhile. */
	if (pl->sub && mb && mb->user) {
		Sub *s = sub_find(c, mb->user);
		if (s) {
			l->sub = s;
			s->unacked++;
		}
	}
}

/* Answer a request of a transaction that failed with r and was rolled
 * back. */
static void
broker_reply_store_failed(Broker *b, Conn *c, uint16_t op, uint32_t req_id,
			  int r)
{
	conn_reply_error(
		c, op, req_id, MBOX_S_STORE, NULL,
		"the store failed, nothing was changed: %s",
		r != -ENOSPC ? store_errmsg(b->store)
		: b->disk_low
			? "disk or database full (the disk is full: posts "
			  "go only where acks free room in the store until "
			  "it has room again; consume or purge messages, or "
			  "free disk space)"
			: "disk or database full (free disk space, consume "
			  "or purge messages, or raise mboxd "
			  "--max-store-size)");
}

/* Answer one PendingOp after the commit (r = its outcome). */
static void
broker_answer(Broker *b, PendingOp *p, int r)
{
	Conn *c = p->conn;
	ProtoWriter *w = &b->w;

	if (r < 0 && (p->kind == PENDING_ACK || p->kind == PENDING_NACK ||
		      p->kind == PENDING_REJECT)) {
		/* Nothing was done: the caller still holds the messages. */
		for (size_t i = 0; i < p->n; i++)
			broker_restore_lease(b, c, p->ids[i], &p->leases[i]);
		if (c->closing)
			broker_release_conn(b, c);
	}
	if (c->closing)
		return;
	c->in_flight--;
	if (p->kind == PENDING_READ) {
		/* Committed or rolled back: it reads what is stored. */
		broker_dispatch_read(c, p->op, p->req_id, p->body, p->body_len);
		if (!c->closing)
			conn_hold(c, false);
		return;
	}
	if (r < 0 && store_commit_unsure(b->store)) {
		/* COMMIT was done, its fsync failed: not "nothing". */
		conn_reply_error(
			c, p->op, p->req_id, MBOX_S_STORE, NULL,
			"the store failed after this was committed, so it may "
			"or may not have been done: %s; check the disk and "
			"mboxd's log, restart mboxd, then look (mboxctl peek, "
			"ls) before repeating it, or repeat it with a dedup "
			"key",
			store_errmsg(b->store));
		return;
	}
	if (r < 0) {
		broker_reply_store_failed(b, c, p->op, p->req_id, r);
		return;
	}
	/*
	 * A poster with something else under way (a RECV waiting, a
	 * subscription) may be waiting for a message rather than about to
	 * post: request/reply over mailboxes would pay the whole delay.
	 */
	if ((p->kind == PENDING_POST || p->kind == PENDING_PUBLISH) && p->n &&
	    !c->in_flight && !c->subs && c->awaited_gen != b->commit_gen) {
		c->awaited_gen = b->commit_gen;
		b->n_awaited++;
	}
	proto_writer_begin(w, p->op, MBOX_FLAG_REPLY, p->req_id, MBOX_S_OK);
	if (p->kind == PENDING_PUBLISH || p->kind == PENDING_COUNT)
		proto_put_u64(w, MBOX_TAG_COUNT, p->n);
	if (p->skipped)
		proto_put_u64(w, MBOX_TAG_SKIPPED, p->skipped);
	if (p->kind == PENDING_POST || p->kind == PENDING_PUBLISH)
		for (size_t i = 0; i < p->n; i++)
			proto_put_u64(w, MBOX_TAG_ID, p->ids[i]);
	conn_send_writer(c, w);
}

/* Log a failed write of the store: a full disk fails every batch, and
 * the retries of the give-backs come ten times a second. */
static void
broker_log_store_error(Broker *b, const char *what)
{
	size_t quiet = 0;

	if (!log_rate_ok(&b->store_err_log, broker_mono_ns(), &quiet))
		return;
	if (quiet)
		log_write(b->log, LOG_ERR,
			  "%s: %s (and %zu more not logged: at most %d a "
			  "second)",
			  what, store_errmsg(b->store), quiet,
			  STORE_ERR_LOG_PER_S);
	else
		log_write(b->log, LOG_ERR, "%s: %s", what,
			  store_errmsg(b->store));
}

/*
 * Commit the batch. Returns the PendingOps that waited for it, for
 * broker_answer_batch, with the outcome in *out.
 */
static PendingOp *
broker_commit_batch(Broker *b, int *out)
{
	PendingOp *p = b->pending_head;
	int r = 0;

	if (store_in_txn(b->store)) {
		if (b->batch_failed) {
			store_rollback(b->store);
			r = b->batch_err < 0 ? b->batch_err : -EIO;
		} else {
			r = store_commit(b->store, b->batch_durable);
			if (r == 0 && b->batch_durable)
				broker_count(b, NULL, BC_COMMITS, 1);
		}
		if (r < 0)
			broker_log_store_error(b, "store commit failed, "
						  "answering the batch with an "
						  "error");
		if (r == -ENOSPC)
			broker_disk_full(b);
		if (r == -ENOSPC) {
			if (!b->store_full)
				log_write(b->log, LOG_WARNING,
					  "the store is full: refusing posts, "
					  "creations and bindings until "
					  "messages are consumed or purged");
			b->store_full = true;
			b->store_full_ns = broker_now_ns();
		} else if (r == 0 && b->batch_frees && b->store_full) {
			log_write(b->log, LOG_NOTICE,
				  "messages were removed from the full "
				  "store: accepting posts again");
			b->store_full = false;
		}
	}
	if (b->batch_posts) {
		/* Its posters, answered next, are the ones the next commit
		 * of posts waits for (broker_commit_waits). */
		b->commit_gen++;
		b->n_awaited = 0;
	}
	b->batch_frees = false;
	b->batch_durable = false;
	b->batch_posts = false;
	b->batch_failed = false;
	b->batch_err = 0;
	b->pending_head = b->pending_tail = NULL;
	broker_disk_check(b);
	*out = r;
	return p;
}

/* Answer (r: their outcome) and free what broker_commit_batch returned. */
static void
broker_answer_batch(Broker *b, PendingOp *p, int r)
{
	while (p) {
		PendingOp *next = p->next;
		broker_answer(b, p, r);
		free(p->ids);
		free(p->leases);
		free(p->body);
		free(p);
		p = next;
	}
}

typedef struct Delivery {
	Broker *b;
	Conn *conn;
	StoreMailbox *mb;
	int64_t deadline_ns;
	uint64_t lease_ms;
	uint64_t *ids; /* leased so far, COUNT entries */
	size_t n;
	int err;
} Delivery;

void
broker_put_msg(ProtoWriter *w, const StoreMailbox *mb, const StoreMsg *m,
	       int64_t deadline_ns)
{
	proto_nest_begin(w, MBOX_TAG_MSG);
	proto_put_u64(w, MBOX_TAG_ID, m->id);
	proto_put_str(w, MBOX_TAG_MAILBOX, mb->name);
	proto_put_bytes(w, MBOX_TAG_DATA, m->data, m->len);
	proto_put_u64(w, MBOX_TAG_PRIORITY, m->priority);
	proto_put_u64(w, MBOX_TAG_DELIVERIES, m->deliveries);
	proto_put_u64(w, MBOX_TAG_TIME_NS, (uint64_t)m->time_ns);
	proto_put_u64(w, MBOX_TAG_SENDER_PID, m->pid);
	proto_put_u64(w, MBOX_TAG_SENDER_UID, m->uid);
	proto_put_u64(w, MBOX_TAG_SENDER_GID, m->gid);
	if (proto_utf8_valid((const uint8_t *)m->comm, strlen(m->comm))) {
		proto_put_str(w, MBOX_TAG_SENDER_COMM, m->comm);
	} else {
		/* Stored by a broker that did not scrub process names yet:
		 * sent as such, no client could decode the message. */
		char comm[sizeof(m->comm)];

		memcpy(comm, m->comm, sizeof(comm));
		proto_utf8_scrub(comm);
		proto_put_str(w, MBOX_TAG_SENDER_COMM, comm);
	}
	if (deadline_ns)
		proto_put_u64(w, MBOX_TAG_DEADLINE_NS, (uint64_t)deadline_ns);
	if (m->expires_ns)
		proto_put_u64(w, MBOX_TAG_EXPIRES_NS, (uint64_t)m->expires_ns);
	if (m->dead_reason)
		proto_put_str(w, MBOX_TAG_DEAD_REASON, m->dead_reason);
	/* Headers are stored as their encoded HEADER fields. */
	proto_put_raw(w, m->headers, m->headers_len);
	proto_nest_end(w);
}

static int
broker_deliver_cb(void *ctx, const StoreMsg *m)
{
	Delivery *d = ctx;
	Broker *b = d->b;
	Lease *l;
	int r;

	/* Recorded first: the store counts it LEASED (and marks it so
	 * before store_msg_lease returns), so an error below must give it
	 * back too. */
	d->ids[d->n++] = m->id;
	r = lease_add(&b->leases, &d->conn->leases, m->id, d->mb->id, d->conn,
		      d->deadline_ns, &l);
	if (r == 0) {
		l->lease_ms = d->lease_ms;
		l->msg_len = m->data_text ? LEASE_LEN_UNKNOWN : m->len;
		l->flush_gen = b->flush_gen;
	}
	if (r < 0) {
		d->err = r;
		return 1;
	}
	broker_put_msg(&b->w, d->mb, m, d->deadline_ns);
	broker_count_delivery(b, d->mb, m);
	/* Keep the reply under MAX_FRAME (2 * max_msg_size + slack): stop
	 * once it holds max_msg_size bytes. */
	if (b->w.len >= b->cfg.max_msg_size)
		return 1;
	return 0;
}

/* Undo the leases of ids (their rows go back with a rollback or here). */
void
broker_unlease(Broker *b, Conn *c, StoreMailbox *mb, const uint64_t *ids,
	       size_t n, bool release_rows)
{
	for (size_t i = 0; i < n; i++) {
		Lease *l = lease_find(&b->leases, ids[i]);
		if (l && l->holder == c)
			broker_lease_drop(b, l, false);
		if (release_rows && mb)
			store_msg_release(b->store, mb, ids[i], 0);
	}
}

static void
broker_on_ready_timer(EV_P_ ev_timer *t, int revents)
{
	MailboxRt *rt = t->data;
	Broker *b = rt->broker;
	StoreMailbox *mb = store_mailbox_by_id(b->store, rt->mailbox_id);

	if (mb)
		broker_mailbox_news(b, mb);
}

/* Answer a RECV with nothing (or with status st). */
static void
broker_answer_waiter(Broker *b, Waiter *w, unsigned st, const char *text)
{
	Conn *c = w->conn;
	uint32_t id = w->req_id;

	broker_waiter_free(w);
	c->in_flight--;
	if (st) {
		conn_reply_error(c, MBOX_OP_RECV, id, st, NULL, "%s", text);
		return;
	}
	proto_writer_begin(&b->w, MBOX_OP_RECV, MBOX_FLAG_REPLY, id, MBOX_S_OK);
	conn_send_writer(c, &b->w);
}

/*
 * Serve the waiters of one mailbox, first come first served, queueing
 * the answers on *out (sent once the leases are committed). Returns
 * false when rt was freed (its mailbox is gone).
 */
static bool
broker_deliver_mailbox(Broker *b, MailboxRt *rt, int64_t now, Outgoing **out)
{
	StoreMailbox *mb = store_mailbox_by_id(b->store, rt->mailbox_id);
	Waiter *w, *next;

	if (rt->dropped)
		return false; /* broker_settle_dropped's, once committed */
	if (!mb || mb->user != rt) {
		/* Its creation was rolled back. */
		broker_rt_end(b, rt,
			      "no such mailbox (its creation failed: the "
			      "store refused it)");
		return false;
	}
	for (w = rt->wait_head;
	     w && mb->n_ready > 0 && !(mb->flags & STORE_MB_PAUSED); w = next) {
		uint64_t lease_ms = w->lease_ms ? w->lease_ms : mb->lease_ms;
		Delivery d = {b, w->conn, mb, 0, lease_ms, NULL, 0, 0};
		size_t count = broker_conn_room(b, w->conn);
		Outgoing *o;
		bool failed;
		int r;

		/* A connection at max_unacked, or congested, is skipped: its
		 * RECV waits for broker_conn_wake(), the next one is served. */
		next = w->mb_next;
		if (count == 0)
			continue;
		if (count > w->count)
			count = w->count;
		d.deadline_ns = now + (int64_t)lease_ms * 1000000;
		d.ids = calloc(count, sizeof(*d.ids));
		o = calloc(1, sizeof(*o));
		if (!d.ids || !o || broker_txn(b) < 0) {
			free(d.ids);
			free(o);
			break;
		}
		proto_writer_begin(&b->w, MBOX_OP_RECV, MBOX_FLAG_REPLY,
				   w->req_id, MBOX_S_OK);
		r = store_msg_lease(b->store, mb, now, count, broker_deliver_cb,
				    &d);
		failed = broker_lease_done(b, rt, mb, r);
		if (failed || d.err < 0 || b->w.err) {
			if (!failed)
				log_write(b->log, LOG_ERR,
					  "cannot lease messages of %s: %s",
					  mb->name,
					  strerror(d.err < 0 ? -d.err
							     : -b->w.err));
			broker_unlease(b, w->conn, mb, d.ids, d.n, true);
			free(d.ids);
			free(o);
			break;
		}
		if (d.n == 0) {
			free(d.ids);
			free(o);
			break; /* only delayed ones left */
		}
		o->conn = w->conn;
		o->ids = d.ids;
		o->n = d.n;
		{
			const uint8_t *frame;
			proto_writer_finish(&b->w, &frame, &o->len);
			o->frame = proto_writer_steal(&b->w, &o->len);
		}
		w->conn->deliver_bytes += o->len;
		o->next = *out;
		*out = o;
		broker_waiter_free(w);
	}
	if (!(mb->flags & STORE_MB_PAUSED))
		sub_push_mailbox(b, rt, mb, now, out);
	/* RECVs that would not wait get their empty answer now. Answering
	 * may close a connection and free its other waiters: restart from
	 * the head each time instead of keeping a next pointer. */
	for (;;) {
		for (w = rt->wait_head; w && !w->immediate; w = w->mb_next)
			;
		if (!w)
			break;
		broker_answer_waiter(b, w, 0, NULL);
	}
	ev_timer_stop(b->loop, &rt->ready_timer);
	if ((rt->wait_head || sub_wants(rt)) && mb->n_ready > 0 &&
	    !(mb->flags & STORE_MB_PAUSED)) {
		int64_t at = 0;
		if (store_mailbox_next_ready(b->store, mb, now, &at) < 0)
			at = 0;
		if (rt->no_room && broker_has_due(b, mb, now) &&
		    (at <= now || at > now + LEASE_ROOM_RETRY_NS))
			at = now + LEASE_ROOM_RETRY_NS;
		if (at > now) {
			ev_timer_init(&rt->ready_timer, broker_on_ready_timer,
				      (double)(at - now) / 1e9 + 0.001, 0.);
			rt->ready_timer.data = rt;
			ev_timer_start(b->loop, &rt->ready_timer);
		}
	}
	rt->no_room = false;
	return true;
}

bool
broker_lease_done(Broker *b, MailboxRt *rt, StoreMailbox *mb, int r)
{
	int64_t now;

	if (r >= 0) {
		if (store_lease_clipped(b->store))
			rt->no_room = true;
		return false;
	}
	if (r != -ENOBUFS) {
		log_write(b->log, LOG_ERR, "cannot lease messages of %s: %s",
			  mb->name, store_errmsg(b->store));
		return true;
	}
	rt->no_room = true;
	now = broker_mono_ns();
	if (!rt->no_room_log_ns || now - rt->no_room_log_ns >= NO_ROOM_LOG_NS) {
		log_write(b->log, LOG_WARNING,
			  "cannot lease messages of %s: %s; trying again "
			  "every %d ms",
			  mb->name, store_errmsg(b->store),
			  (int)(LEASE_ROOM_RETRY_NS / 1000000));
		rt->no_room_log_ns = now;
	}
	return true;
}

/*
 * The delivery phase, first half: give-backs, then lease what waiting
 * RECVs and subscriptions can take, in the open batch's transaction.
 * Returns the deliveries in the order they were made, to be sent by
 * broker_deliver_send once that transaction is committed; *applied is
 * the number of give-backs applied.
 */
/* Remember rt, served in this flush, in case its commit fails. Without
 * memory for it, a failed commit leaves rt to its next event. */
static void
broker_note_served(Broker *b, MailboxRt *rt)
{
	if (b->n_served == b->cap_served) {
		size_t cap = b->cap_served ? 2 * b->cap_served : 16;
		MailboxRt **n = realloc(b->served, cap * sizeof(*n));
		if (!n)
			return;
		b->served = n;
		b->cap_served = cap;
	}
	b->served[b->n_served++] = rt;
}

/*
 * The commit of the mailboxes served in this flush failed: serve them
 * again. One whose creation was rolled back is then found gone and its
 * waiters are told so; a PAUSE that did not last is seen undone.
 */
static void
broker_renew_served(Broker *b)
{
	for (size_t i = 0; i < b->n_served; i++)
		broker_rt_news(b, b->served[i]);
	b->n_served = 0;
}

static Outgoing *
broker_deliver_lease(Broker *b, size_t *applied_out)
{
	int64_t now = broker_now_ns();
	Outgoing *out = NULL, *o;
	MailboxRt *rt;
	size_t applied = 0;

	/* Claimed messages left over go out before anything new. */
	if (b->claims)
		handoff_pump(b);
	/* Give-backs first, at their places in line, before anything is
	 * delivered; delivering may queue more (a client that hung up),
	 * which are applied before the next mailbox is served. */
	for (;;) {
		if (applied < b->n_releases && broker_txn(b) == 0) {
			broker_apply_releases(b, applied);
			applied = b->n_releases;
			/* One may have passed its ttl meanwhile. */
			b->expiry_dirty = true;
		}
		if (!(rt = b->news))
			break;
		b->news = rt->news_next;
		rt->news = false;
		if (broker_deliver_mailbox(b, rt, now, &out))
			broker_note_served(b, rt);
	}
	*applied_out = applied;
	/* Built newest first: send in the order they were made, so that a
	 * subscriber sees its pushes in delivery order. */
	for (Outgoing *rev = NULL;; rev = o) {
		if (!out)
			return rev;
		o = out;
		out = o->next;
		o->next = rev;
	}
}

/* The batch was rolled back: give-backs of leases it made are void (the
 * rollback undid those leases; the messages may be leased to someone
 * else again, as before the batch). The others are tried again. */
static void
broker_drop_uncommitted_releases(Broker *b)
{
	size_t kept = 0;

	for (size_t i = 0; i < b->n_releases; i++)
		if (!b->releases[i].uncommitted)
			b->releases[kept++] = b->releases[i];
	b->n_releases = kept;
}

/*
 * Second half, after the commit (r: its outcome): send the deliveries,
 * or on failure give their messages back and answer their RECVs with
 * the error (the commit's failure is logged already).
 */
static void
broker_deliver_send(Broker *b, Outgoing *out, size_t applied, int r)
{
	Outgoing *o;

	b->deliver_failed = r < 0;
	if (r < 0) {
		broker_drop_uncommitted_releases(b);
	} else if (applied) {
		/* Those queued since (while sending) stay queued. */
		b->n_releases -= applied;
		if (b->n_releases)
			memmove(b->releases, b->releases + applied,
				b->n_releases * sizeof(*b->releases));
	}
	/* What is still queued after a commit is of committed leases. */
	for (size_t i = 0; r == 0 && i < b->n_releases; i++)
		b->releases[i].uncommitted = false;
	/* Deliveries leave only now that their leases are committed. */
	while ((o = out)) {
		out = o->next;
		if (!o->conn->closing && o->push) {
			if (r < 0)
				broker_unlease(b, o->conn, NULL, o->ids, o->n,
					       false);
			else if (conn_send(o->conn, o->frame, o->len) < 0)
				conn_close(o->conn, "out of memory");
		} else if (!o->conn->closing) {
			o->conn->in_flight--;
			if (r < 0) {
				uint32_t id;
				memcpy(&id, o->frame + MBOX_HDR_OFF_ID, 4);
				broker_unlease(b, o->conn, NULL, o->ids, o->n,
					       false);
				broker_reply_store_failed(b, o->conn,
							  MBOX_OP_RECV,
							  le32toh(id), r);
			} else if (conn_send(o->conn, o->frame, o->len) < 0) {
				conn_close(o->conn, "out of memory");
			}
		}
		o->conn->deliver_bytes -= o->len;
		/* Its last frame of the phase is out: if more was held back
		 * for the bytes and it is not congested, serve it again. */
		if (o->conn->held_back && !o->conn->deliver_bytes &&
		    !conn_congested(o->conn))
			broker_conn_wake(b, o->conn);
		free(o->frame);
		free(o->ids);
		free(o);
	}
}

/* Delete the temporary mailboxes of connections that closed. Returns
 * whether anything was written. */
static bool
broker_drop_temps(Broker *b)
{
	bool wrote = false;
	int64_t now = broker_now_ns();
	Conn *c;

	for (;;) {
		bool dropped = false;

		/* The broker owes their deletion from now on: the dead
		 * connections are freed at the end of this flush. */
		for (c = b->dead; c; c = c->next) {
			if (!c->n_temps)
				continue;
			if (broker_grow((void **)&b->temps_owed,
					&b->cap_temps_owed,
					b->n_temps_owed + c->n_temps,
					sizeof(*b->temps_owed)) < 0) {
				log_write(b->log, LOG_ERR,
					  "out of memory: %zu temporary "
					  "mailbox(es) of a closed connection "
					  "stay until the next start",
					  c->n_temps);
			} else {
				memcpy(b->temps_owed + b->n_temps_owed,
				       c->temps,
				       c->n_temps * sizeof(*c->temps));
				b->n_temps_owed += c->n_temps;
			}
			c->n_temps = 0;
		}
		for (size_t i = 0; i < b->n_temps_owed; i++) {
			TempRef *t = &b->temps_owed[i];
			StoreMailbox *mb = store_mailbox_by_id(b->store, t->id);
			int r;

			/* Gone already (by this transaction or an earlier
			 * one: broker_settle_temps forgets it), or its
			 * deletion failed: not again in this flush, nor in
			 * the next second. */
			if (!mb || !(mb->flags & STORE_MB_TEMP) ||
			    mb->created_ns != t->created_ns ||
			    t->tried == b->flush_count ||
			    (t->tried && now < b->temps_retry_ns) ||
			    broker_txn(b) < 0)
				continue;
			t->tried = b->flush_count;
			r = broker_mailbox_drop(b, mb);
			if (r < 0) {
				broker_batch_fail(b, r);
				log_write(b->log, LOG_ERR,
					  "cannot delete a temporary mailbox: "
					  "%s",
					  store_errmsg(b->store));
			}
			wrote = dropped = true;
		}
		/* Dropping may close connections (their replies fail): they
		 * join b->dead, so look again. */
		if (!dropped)
			return wrote;
	}
}

/* After the flush's last commit or rollback: forget the deletions that
 * were committed; those rolled back are owed still. */
static void
broker_settle_temps(Broker *b)
{
	size_t kept = 0;
	bool failed = false;

	for (size_t i = 0; i < b->n_temps_owed; i++) {
		TempRef *t = &b->temps_owed[i];
		StoreMailbox *mb = store_mailbox_by_id(b->store, t->id);

		if (mb && (mb->flags & STORE_MB_TEMP) &&
		    mb->created_ns == t->created_ns) {
			b->temps_owed[kept++] = *t;
			failed |= t->tried == b->flush_count;
		}
	}
	b->n_temps_owed = kept;
	if (failed)
		b->temps_retry_ns = broker_now_ns() + 1000000000;
}

/* Maintenance is done by broker_maintain(), after the batch commit. */
static void
broker_on_expiry_timer(EV_P_ ev_timer *w, int revents)
{
	Broker *b = w->data;

	b->expire_due = true;
}

/* Expire messages in a transaction of their own: a failure (a full
 * store) is retried a second later instead of at once, forever. */
static void
broker_maintain_expiry(Broker *b)
{
	int64_t now = broker_now_ns(), n = -EIO;
	int r = -EIO;

	b->expire_due = false;
	if (broker_txn(b) == 0) {
		n = store_expire(b->store, now, broker_count_expired, b);
		if (n < 0)
			store_rollback(b->store);
		else
			r = store_commit(b->store, n > 0);
	}
	if (n < 0 || r < 0) {
		log_write(b->log, LOG_ERR,
			  "cannot expire messages: %s; trying again in 1 s",
			  store_errmsg(b->store));
		b->expiry_backoff_ns = now + 1000000000;
	} else {
		b->expiry_backoff_ns = 0;
		if (n > 0)
			log_write(b->log, LOG_INFO,
				  "%lld message(s) expired: moved to the dead "
				  "list",
				  (long long)n);
	}
	b->next_expiry_ns = 0;
	b->expiry_dirty = true;
}

/* Forget old dedup keys, in a transaction of its own. */
static void
broker_maintain_dedup(Broker *b)
{
	int64_t cut =
		broker_now_ns() - (int64_t)b->cfg.dedup_window_ms * 1000000;
	int64_t n;

	b->prune_due = false;
	if (broker_txn(b) < 0)
		return;
	n = store_dedup_prune(b->store, cut);
	if (n < 0) {
		store_rollback(b->store);
	} else if (store_commit(b->store, false) < 0) {
		n = -EIO;
	} else if (n > 0 && b->store_full) {
		/* Their pages are free for posts again. */
		b->store_full = false;
	}
	if (n < 0)
		log_write(b->log, LOG_WARNING,
			  "cannot forget old dedup keys: %s",
			  store_errmsg(b->store));
}

/*
 * Timer-driven writes (expiry, dedup prune) never join the clients'
 * batch: one that fails (a full store) would roll back every request in
 * it. They run here, after the batch commit and its deliveries.
 */
static void
broker_maintain(Broker *b)
{
	if (store_in_txn(b->store))
		return; /* the batch could not be closed: next time */
	if (b->expire_due)
		broker_maintain_expiry(b);
	if (b->prune_due)
		broker_maintain_dedup(b);
}

void
broker_expiry_changed(Broker *b, int64_t expires_ns)
{
	/* After a failed run, not again before the back-off. */
	if (expires_ns < b->expiry_backoff_ns)
		expires_ns = b->expiry_backoff_ns;
	if (b->next_expiry_ns && b->next_expiry_ns <= expires_ns)
		return;
	b->next_expiry_ns = expires_ns;
	ev_timer_stop(b->loop, &b->expiry_timer);
	ev_timer_set(&b->expiry_timer,
		     expires_ns > broker_now_ns()
			     ? (double)(expires_ns - broker_now_ns()) / 1e9 +
				       0.001
			     : 0.,
		     0.);
	ev_timer_start(b->loop, &b->expiry_timer);
}

/* The first expiry is asked of the store only when something may have
 * moved it (messages given back, an expiry run): one index lookup. */
static void
broker_arm_expiry_timer(Broker *b)
{
	int64_t at = 0;

	if (!b->expiry_dirty)
		return;
	b->expiry_dirty = false;
	if (store_next_expiry(b->store, &at) < 0 || !at) {
		b->next_expiry_ns = 0;
		ev_timer_stop(b->loop, &b->expiry_timer);
		return;
	}
	b->next_expiry_ns = 0;
	broker_expiry_changed(b, at);
}

static void
broker_on_dedup_timer(EV_P_ ev_timer *w, int revents)
{
	Broker *b = w->data;

	b->prune_due = true;
}

int
broker_mailbox_drop(Broker *b, StoreMailbox *mb)
{
	MailboxRt *rt = mb->user;
	Lease *l;

	if (mb->n_ready + mb->n_leased + mb->n_dead)
		broker_batch_frees(b);
	/* Leases of its messages are void. Their give-backs find no
	 * mailbox once the deletion is committed; if it is rolled back,
	 * they make the rows ready again. */
	while ((l = lease_first_of_mailbox(&b->leases, mb->id)))
		broker_lease_drop(b, l, true);
	/* Its waiters and subscribers stay until the transaction ends: a
	 * rollback brings mb back with rt (mb->user) as it was. Without
	 * runtime state nobody waits or subscribes: nothing to settle. */
	if (rt) {
		rt->dropped = true;
		rt->dropped_next = b->dropped;
		b->dropped = rt;
	}
	return store_mailbox_delete(b->store, mb);
}

void
broker_send_ended(Broker *b, Conn *c, const char *name, int64_t created_ns,
		  const char *why)
{
	proto_writer_begin(&b->w, MBOX_OP_ENDED, MBOX_FLAG_PUSH, 0, MBOX_S_OK);
	proto_put_str(&b->w, MBOX_TAG_MAILBOX, name);
	proto_put_u64(&b->w, MBOX_TAG_TIME_NS, (uint64_t)created_ns);
	proto_put_str(&b->w, MBOX_TAG_TEXT, why);
	conn_send_writer(c, &b->w);
}

void
broker_rt_end(Broker *b, MailboxRt *rt, const char *why)
{
	Waiter *w;

	while ((w = rt->wait_head))
		broker_answer_waiter(b, w, MBOX_S_NOT_FOUND, why);
	while (rt->sub_head) {
		Conn *c = rt->sub_head->conn;

		/* Parked in a hand-off: its claimer hears of it at the
		 * CLAIM. */
		if (rt->sub_head->parked &&
		    !handoff_note_ended(rt->sub_head->parked, rt, why))
			log_write(b->log, LOG_ERR,
				  "out of memory: the claimer of hand-off "
				  "%.8s... will not be told that %s ended",
				  rt->sub_head->parked->token, rt->name);
		/* Removed before the send: a send that fails closes c, and
		 * closing ends c's subscriptions. */
		sub_remove(b, rt->sub_head);
		if (c && !c->closing)
			broker_send_ended(b, c, rt->name, rt->created_ns, why);
	}
	if (rt->news) {
		/* Rare (a deletion): the walk costs nothing that matters. */
		for (MailboxRt **p = &b->news; *p; p = &(*p)->news_next)
			if (*p == rt) {
				*p = rt->news_next;
				break;
			}
	}
	broker_rt_free(b, rt);
}

/*
 * The transaction of the deletions on b->dropped has ended. Committed,
 * a mailbox is gone (not found, or found anew under another runtime
 * state): its RECVs are answered and its subscribers told. Rolled back,
 * it is back with rt, and deliveries go on.
 */
static void
broker_settle_dropped(Broker *b)
{
	MailboxRt *rt;

	if (store_in_txn(b->store))
		return;
	while ((rt = b->dropped)) {
		StoreMailbox *mb =
			store_mailbox_by_id(b->store, rt->mailbox_id);

		b->dropped = rt->dropped_next;
		rt->dropped_next = NULL;
		rt->dropped = false;
		if (mb && mb->user == rt)
			broker_rt_news(b, rt);
		else
			broker_rt_end(b, rt, "the mailbox was deleted");
	}
}

/* The commit_wait timer woke the loop: the flush that follows commits. */
static void
broker_on_commit_wait(EV_P_ ev_io *w, int revents)
{
	uint64_t expirations;

	if (read(w->fd, &expirations, sizeof(expirations)) < 0) {
		/* EAGAIN: disarmed meanwhile; nothing else can fail. */
	}
}

/*
 * Group commit that waits a little (--commit-delay-us): when the batch
 * holds posts and the posters answered by the last commit are not all
 * back yet, hold the commit until they are, or until commit_delay_us
 * after those answers, so that one fsync serves them all instead of
 * about half of them (doc/performance.md). A lone producer is back
 * before its next commit is due and never waits. Only with sync=full:
 * without the fsync a commit costs less than the wait.
 */
static bool
broker_commit_waits(Broker *b)
{
	struct itimerspec its = {{0, 0}, {0, 0}};
	int64_t deadline;

	if (!b->batch_posts || b->batch_failed || !b->n_awaited ||
	    b->stopping || b->cfg.sync != STORE_SYNC_FULL ||
	    !b->cfg.commit_delay_us)
		return false;
	deadline = b->answered_ns + (int64_t)b->cfg.commit_delay_us * 1000;
	if (broker_mono_ns() >= deadline)
		return false;
	its.it_value.tv_sec = deadline / 1000000000;
	its.it_value.tv_nsec = deadline % 1000000000;
	return timerfd_settime(b->commit_wait_fd, TFD_TIMER_ABSTIME, &its,
			       NULL) == 0;
}

static void
broker_flush(Broker *b)
{
	Conn *c;
	PendingOp *answers;
	Outgoing *out;
	size_t applied;
	uint64_t gen;
	int r;

	if (broker_commit_waits(b))
		return;
	b->flush_count++;

	if (b->batch_failed) {
		/* Nothing is leased into a batch that is rolled back, and
		 * no temporary mailbox is deleted in one. */
		answers = broker_commit_batch(b, &r);
		broker_answer_batch(b, answers, r);
	}
	broker_drop_temps(b);
	/*
	 * The leases join the batch: one commit (and one fsync) for both,
	 * instead of a second transaction that writes the same pages to the
	 * WAL again. Deliveries are sent only after it, so they still carry
	 * only committed messages, including those posted in this batch.
	 */
	b->n_served = 0;
	out = broker_deliver_lease(b, &applied);
	gen = b->commit_gen;
	answers = broker_commit_batch(b, &r);
	/* Leases made from here on come after this commit. */
	b->flush_gen++;
	if (r < 0)
		broker_renew_served(b);
	b->n_served = 0;
	/*
	 * The messages go to their consumers first, then the posters hear
	 * back: each answer wakes a process, which would cost the delivery
	 * its time (post -> subscriber latency). After a failed commit the
	 * order is the same for another reason: this flush's leases are
	 * dropped before failed ACKs and NACKs restore theirs, which may be
	 * of the same messages (a NACK redelivered at once).
	 */
	broker_deliver_send(b, out, applied, r);
	broker_answer_batch(b, answers, r);
	if (gen != b->commit_gen)
		b->answered_ns = broker_mono_ns();
	broker_maintain(b);
	/*
	 * Connections closed while delivering, or while the deletions were
	 * settled (an ENDED push or a RECV's answer that could not be
	 * sent): their temporary mailboxes go, and those deletions are
	 * settled in turn. Each round empties the temporary mailboxes of
	 * the connections closed before it, so the loop ends.
	 */
	for (;;) {
		broker_settle_dropped(b);
		if (!broker_drop_temps(b))
			break;
		if (b->batch_failed) {
			/* A half-done deletion is not committed; the next
			 * batch must not inherit its failure either. */
			store_rollback(b->store);
			b->batch_failed = false;
			b->batch_err = 0;
		} else if (store_commit(b->store, false) < 0) {
			log_write(b->log, LOG_ERR,
				  "cannot commit the deletion of temporary "
				  "mailboxes: %s; trying again in 1 s",
				  store_errmsg(b->store));
		}
	}
	if (!store_in_txn(b->store))
		broker_settle_temps(b);
	while ((c = b->dead)) {
		b->dead = c->next;
		conn_free(c);
	}
	broker_arm_lease_timer(b);
	broker_arm_expiry_timer(b);
	/* Leases given back or windows opened during this flush (a client
	 * that hung up while we wrote to it) must not wait for an
	 * unrelated event; failed give-backs are retried, but not in a
	 * busy loop. */
	if (!ev_is_active(&b->again) && (b->news || b->n_releases)) {
		ev_timer_set(&b->again, b->deliver_failed ? 0.1 : 0., 0.);
		ev_timer_start(b->loop, &b->again);
	} else if (!ev_is_active(&b->again) && b->n_temps_owed) {
		/* Deletions of temporary mailboxes rolled back. */
		ev_timer_set(&b->again, 1.0, 0.);
		ev_timer_start(b->loop, &b->again);
	}
}

static void
broker_on_prepare(EV_P_ ev_prepare *w, int revents)
{
	broker_flush(w->data);
}

void
broker_stop(Broker *b)
{
	Conn *c;

	if (b->stopping)
		return;
	b->stopping = true;
	ev_io_stop(b->loop, &b->listen_io);
	ev_timer_stop(b->loop, &b->accept_retry);
	if (b->own_socket && b->cfg.socket_path)
		unlink(b->cfg.socket_path);
	/* Finish what was begun: commit and answer, then hang up. */
	broker_flush(b);
	/* Every request gets its one reply (doc/protocol.md 3.2): RECVs
	 * still waiting, and CLAIMs still pushing, are told why they end
	 * before the connections close. */
	for (c = b->conns; c;) {
		/* A send that fails closes c, which moves it off the list. */
		Conn *next = c->next;

		while (c->waiters && !c->closing)
			broker_answer_waiter(b, c->waiters, MBOX_S_SHUTDOWN,
					     BROKER_STOPPING_TEXT);
		c = next;
	}
	handoff_claims_refuse(b, MBOX_S_SHUTDOWN,
			      "the broker is stopping before the CLAIM was "
			      "done; its messages go back to their "
			      "mailboxes, to be taken again once it is back");
	for (c = b->conns; c;) {
		Conn *next = c->next;
		/* Best effort: one more non-blocking push. */
		if (c->out_head)
			ev_invoke(b->loop, &c->write_io, EV_WRITE);
		c = next;
	}
	while ((c = b->conns))
		conn_close(c, "broker stopping");
	{
		int r;
		PendingOp *answers = broker_commit_batch(b, &r);
		broker_answer_batch(b, answers, r);
	}
	broker_settle_dropped(b);
	while ((c = b->dead)) {
		b->dead = c->next;
		conn_free(c);
	}
}

static int
broker_count_msgs(void *ctx, StoreMailbox *mb)
{
	*(uint64_t *)ctx += mb->n_ready + mb->n_leased + mb->n_dead;
	return 0;
}

int
broker_status_line(Broker *b, char *buf, size_t size)
{
	uint64_t msgs = 0;
	int n;

	/* In memory: the counters are kept per mailbox, no store query. */
	store_mailbox_foreach(b->store, broker_count_msgs, &msgs);
	n = snprintf(buf, size, "%zu connections, %zu mailboxes, %llu messages",
		     b->n_conns, store_mailbox_count(b->store),
		     (unsigned long long)msgs);
	return n < 0 || (size_t)n >= size ? -ENOSPC : 0;
}

/* The limits SIGHUP may change, by their option names. */
#define LIMIT_SZ(n, f)                                                         \
	{                                                                      \
		n, offsetof(BrokerConfig, f), sizeof(size_t)                   \
	}
#define LIMIT_U64(n, f)                                                        \
	{                                                                      \
		n, offsetof(BrokerConfig, f), sizeof(uint64_t)                 \
	}
static const struct {
	const char *name;
	size_t offset, size;
} broker_limits[] = {
	LIMIT_SZ("max-header-bytes", max_header_bytes),
	LIMIT_SZ("max-mailboxes", max_mailboxes),
	LIMIT_U64("max-mailbox-msgs", max_mailbox_msgs),
	LIMIT_U64("max-mailbox-bytes", max_mailbox_bytes),
	LIMIT_SZ("max-connections", max_connections),
	LIMIT_SZ("max-connections-per-uid", max_connections_per_uid),
	LIMIT_SZ("max-unacked", max_unacked),
	LIMIT_SZ("max-in-flight", max_in_flight),
	LIMIT_U64("max-store-size", max_store_bytes),
	LIMIT_U64("commit-delay-us", commit_delay_us),
	LIMIT_SZ("max-subscriptions", max_subscriptions),
	LIMIT_SZ("max-mailboxes-per-uid", max_mailboxes_per_uid),
};

static uint64_t
broker_limit_get(const BrokerConfig *cfg, size_t i)
{
	const char *p = (const char *)cfg + broker_limits[i].offset;
	size_t zv;
	uint64_t uv;

	if (broker_limits[i].size == sizeof(uint64_t)) {
		memcpy(&uv, p, sizeof(uv));
		return uv;
	}
	memcpy(&zv, p, sizeof(zv));
	return zv;
}

static void
broker_limit_set(BrokerConfig *cfg, size_t i, uint64_t v)
{
	char *p = (char *)cfg + broker_limits[i].offset;
	size_t zv = (size_t)v;

	if (broker_limits[i].size == sizeof(uint64_t))
		memcpy(p, &v, sizeof(v));
	else
		memcpy(p, &zv, sizeof(zv));
}

int
broker_reload_limits(Broker *b, const BrokerConfig *cfg)
{
	int changed = 0;

	for (size_t i = 0; i < sizeof(broker_limits) / sizeof(broker_limits[0]);
	     i++) {
		uint64_t old = broker_limit_get(&b->cfg, i);
		uint64_t v = broker_limit_get(cfg, i);
		int r;

		if (v == old)
			continue;
		if (broker_limits[i].offset ==
		    offsetof(BrokerConfig, max_store_bytes)) {
			/* The cap lives in the store's connection too. */
			r = broker_store_cap(b, v);
			if (r < 0) {
				log_write(b->log, LOG_WARNING,
					  "reload: max-store-size %llu refused "
					  "(%s); keeping %llu",
					  (unsigned long long)v,
					  r == -EINVAL ? "the database is "
							 "already larger"
						       : strerror(-r),
					  (unsigned long long)old);
				(void)broker_store_cap(b, old);
				continue;
			}
		}
		log_write(b->log, LOG_NOTICE, "reload: %s %llu -> %llu",
			  broker_limits[i].name, (unsigned long long)old,
			  (unsigned long long)v);
		broker_limit_set(&b->cfg, i, v);
		changed++;
		if (broker_limits[i].offset ==
		    offsetof(BrokerConfig, max_store_bytes))
			b->store_full = false; /* try the new cap at once */
		if (broker_limits[i].offset ==
		    offsetof(BrokerConfig, max_unacked)) {
			/* Connections held back at the old limit. */
			for (Conn *c = b->conns; c; c = c->next)
				broker_conn_wake(b, c);
		}
	}
	return changed;
}
