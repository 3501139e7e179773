/*
 * ops-inspect.c - what operators look at: STAT (one mailbox with its
 * settings, counters and consumers), CLIENTS (the connections) and STATS
 * (broker-wide counters), and the event counters behind them.
 *
 * Counters: every event is counted twice, into the broker's Counters and
 * into its mailbox's (MailboxRt.counters). Rates need no timer: each
 * Counters keeps the count of the current fixed window of
 * COUNTERS_WINDOW_MS and of the one before, and a rate is estimated as
 * the current window's count plus the part of the previous window that
 * still lies within the last COUNTERS_WINDOW_MS, divided by that span
 * (the usual sliding-window approximation). An idle broker does nothing
 * for its counters.
 *
 * These handlers only read: they answer at once and never touch the
 * batch transaction.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "broker/broker.h"
#include "broker/request.h"

/* Names of the counters on the wire (COUNTER's KEY), by enum index. */
static const char *const counter_names[BC__COUNT] = {
	[BC_POSTED] = "posted",
	[BC_DELIVERED] = "delivered",
	[BC_REDELIVERED] = "redelivered",
	[BC_ACKED] = "acked",
	[BC_NACKED] = "nacked",
	[BC_DEAD_REJECTED] = "dead_rejected",
	[BC_DEAD_MAX_DELIVERIES] = "dead_max_deliveries",
	[BC_DEAD_EXPIRED] = "dead_expired",
	[BC_BYTES_IN] = "bytes_in",
	[BC_BYTES_OUT] = "bytes_out",
	[BC_CONNECTIONS] = "connections",
	[BC_COMMITS] = "commits",
};

/* The loop's clock in ms since the epoch: cached per iteration, cheap. */
static int64_t
counters_now_ms(Broker *b)
{
	return (int64_t)(ev_now(b->loop) * 1000.0);
}

/* Start a new window once the current one is over. */
static void
counters_roll(Counters *c, int64_t now_ms)
{
	const int64_t win = COUNTERS_WINDOW_MS;

	if (now_ms < c->win_start_ms + win)
		return;
	if (now_ms < c->win_start_ms + 2 * win)
		memcpy(c->prev, c->cur, sizeof(c->prev));
	else
		memset(c->prev, 0, sizeof(c->prev));
	memset(c->cur, 0, sizeof(c->cur));
	c->win_start_ms = now_ms - now_ms % win;
}

static void
counters_add(Counters *c, enum broker_counter k, uint64_t n, int64_t now_ms)
{
	counters_roll(c, now_ms);
	c->total[k] += n;
	c->cur[k] += n;
}

/*
 * The span a rate is taken over: the window, or the broker's uptime while
 * that is shorter (nothing happened before the start), at least 1 s so
 * that the first events do not make absurd rates.
 */
static int64_t
counters_span_ms(Broker *b, int64_t now_ms)
{
	int64_t up = now_ms - b->started_ns / 1000000;

	if (up >= COUNTERS_WINDOW_MS)
		return COUNTERS_WINDOW_MS;
	return up < 1000 ? 1000 : up;
}

/* Events of kind k per second over the last span, times 1000. */
static uint64_t
counters_rate_milli(Counters *c, enum broker_counter k, int64_t now_ms,
		    int64_t span_ms)
{
	const double win = COUNTERS_WINDOW_MS;
	double elapsed, est;

	counters_roll(c, now_ms);
	elapsed = (double)(now_ms - c->win_start_ms);
	if (elapsed < 0)
		elapsed = 0; /* the clock went back */
	if (elapsed > win)
		elapsed = win;
	est = (double)c->cur[k] + (double)c->prev[k] * (win - elapsed) / win;
	return (uint64_t)(est * 1e6 / (double)span_ms + 0.5);
}

/*
 * The runtime state that holds mb's counters, made on first use. A new
 * one goes on the news list: if the batch that created mb is rolled back,
 * the delivery phase finds the mailbox gone and frees it.
 */
static MailboxRt *
counters_rt(Broker *b, StoreMailbox *mb)
{
	MailboxRt *rt = mb->user;

	if (rt)
		return rt;
	rt = broker_mailbox_rt(b, mb);
	if (rt && !rt->news) {
		rt->news = true;
		rt->news_next = b->news;
		b->news = rt;
	}
	return rt;
}

void
broker_count(Broker *b, StoreMailbox *mb, enum broker_counter k, uint64_t n)
{
	int64_t now;
	MailboxRt *rt = mb ? counters_rt(b, mb) : NULL;

	/* Done in a transaction: it counts once that commits. Accepted
	 * connections and commits are no part of one. */
	if (store_in_txn(b->store) && k != BC_CONNECTIONS && k != BC_COMMITS) {
		b->staged[k] += n;
		if (rt) {
			rt->staged[k] += n;
			if (!rt->on_staged) {
				rt->on_staged = true;
				rt->staged_next = b->staged_head;
				b->staged_head = rt;
			}
		}
		return;
	}
	now = counters_now_ms(b);
	counters_add(&b->counters, k, n, now);
	if (rt)
		counters_add(&rt->counters, k, n, now);
}

/* Add what staged holds to c (if add), and empty it. */
static void
counters_unstage(Counters *c, uint64_t *staged, bool add, int64_t now)
{
	for (int k = 0; k < BC__COUNT; k++) {
		if (staged[k] && add)
			counters_add(c, k, staged[k], now);
		staged[k] = 0;
	}
}

void
broker_counts_settle(void *ctx, bool committed)
{
	Broker *b = ctx;
	int64_t now = counters_now_ms(b);
	MailboxRt *rt;

	counters_unstage(&b->counters, b->staged, committed, now);
	while ((rt = b->staged_head)) {
		b->staged_head = rt->staged_next;
		rt->on_staged = false;
		rt->staged_next = NULL;
		counters_unstage(&rt->counters, rt->staged, committed, now);
	}
}

void
broker_counts_forget(Broker *b, MailboxRt *rt)
{
	if (!rt->on_staged)
		return;
	for (MailboxRt **p = &b->staged_head; *p; p = &(*p)->staged_next)
		if (*p == rt) {
			*p = rt->staged_next;
			break;
		}
	rt->on_staged = false;
}

void
broker_count_post(Broker *b, StoreMailbox *mb, const StoreMsg *m)
{
	broker_count(b, mb, BC_POSTED, 1);
	broker_count(b, mb, BC_BYTES_IN, m->len);
}

void
broker_count_delivery(Broker *b, StoreMailbox *mb, const StoreMsg *m)
{
	broker_count(b, mb, BC_DELIVERED, 1);
	if (m->deliveries > 1)
		broker_count(b, mb, BC_REDELIVERED, 1);
	broker_count(b, mb, BC_BYTES_OUT, m->len);
}

void
broker_count_settle(Broker *b, StoreMailbox *mb, uint16_t op, int r)
{
	if (r < 0)
		return;
	switch (op) {
	case MBOX_OP_ACK:
		broker_count(b, mb, BC_ACKED, 1);
		break;
	case MBOX_OP_NACK:
		broker_count(b, mb, BC_NACKED, 1);
		if (r == 1)
			broker_count(b, mb, BC_DEAD_MAX_DELIVERIES, 1);
		break;
	case MBOX_OP_REJECT:
		broker_count(b, mb, BC_DEAD_REJECTED, 1);
		break;
	default:
		break;
	}
}

int
broker_count_expired(void *ctx, const StoreMsg *m)
{
	Broker *b = ctx;

	broker_count(b, store_mailbox_by_id(b->store, m->mailbox_id),
		     BC_DEAD_EXPIRED, 1);
	return 0;
}

/* COUNTER* and INTERVAL_MS of c; connections and commits if broker_wide. */
static void
put_counters(Broker *b, ProtoWriter *w, Counters *c, bool broker_wide)
{
	int64_t now = counters_now_ms(b), span = counters_span_ms(b, now);

	for (int k = 0; k < BC__COUNT; k++) {
		if ((k == BC_CONNECTIONS || k == BC_COMMITS) && !broker_wide)
			continue;
		proto_nest_begin(w, MBOX_TAG_COUNTER);
		proto_put_str(w, MBOX_TAG_KEY, counter_names[k]);
		proto_put_u64(w, MBOX_TAG_COUNT, c->total[k]);
		proto_put_u64(w, MBOX_TAG_RATE_MILLI,
			      counters_rate_milli(c, k, now, span));
		proto_nest_end(w);
	}
	proto_put_u64(w, MBOX_TAG_INTERVAL_MS, (uint64_t)span);
}

/* ------------------------------------------------------------------ */
/* STAT */

static size_t
rt_waiting(const MailboxRt *rt, const Conn *c)
{
	size_t n = 0;

	for (const Waiter *w = rt ? rt->wait_head : NULL; w; w = w->mb_next)
		n += !c || w->conn == c;
	return n;
}

static void
put_settings(ProtoWriter *w, const StoreMailbox *mb)
{
	char s[64];

	snprintf(s, sizeof(s), "lease=%llums",
		 (unsigned long long)mb->lease_ms);
	proto_put_str(w, MBOX_TAG_SETTING, s);
	if (mb->ttl_ms)
		snprintf(s, sizeof(s), "ttl=%llums",
			 (unsigned long long)mb->ttl_ms);
	else
		snprintf(s, sizeof(s), "ttl=0");
	proto_put_str(w, MBOX_TAG_SETTING, s);
	snprintf(s, sizeof(s), "max_deliveries=%llu",
		 (unsigned long long)mb->max_deliveries);
	proto_put_str(w, MBOX_TAG_SETTING, s);
	snprintf(s, sizeof(s), "max_msgs=%llu",
		 (unsigned long long)mb->max_msgs);
	proto_put_str(w, MBOX_TAG_SETTING, s);
	snprintf(s, sizeof(s), "max_bytes=%llu",
		 (unsigned long long)mb->max_bytes);
	proto_put_str(w, MBOX_TAG_SETTING, s);
	snprintf(s, sizeof(s), "mode=%04o", (unsigned)mb->mode);
	proto_put_str(w, MBOX_TAG_SETTING, s);
	snprintf(s, sizeof(s), "group=%u", (unsigned)mb->gid);
	proto_put_str(w, MBOX_TAG_SETTING, s);
	snprintf(s, sizeof(s), "temp=%d", (mb->flags & STORE_MB_TEMP) ? 1 : 0);
	proto_put_str(w, MBOX_TAG_SETTING, s);
}

/* The INFO of a STAT reply: LIST's fields and the mailbox's state. */
static void
put_stat_info(Request *q, StoreMailbox *mb)
{
	ProtoWriter *w = &q->b->w;
	MailboxRt *rt = mb->user;
	uint64_t flags = 0;

	if (mb->flags & STORE_MB_PAUSED)
		flags |= MBOX_INFO_PAUSED;
	if (mb->flags & STORE_MB_TEMP)
		flags |= MBOX_INFO_TEMP;
	proto_nest_begin(w, MBOX_TAG_INFO);
	put_list_fields(q, mb, broker_now_ns());
	proto_put_u64(w, MBOX_TAG_FLAGS, flags);
	proto_put_u64(w, MBOX_TAG_WAITING, rt_waiting(rt, NULL));
	proto_put_u64(w, MBOX_TAG_TIME_NS, (uint64_t)mb->created_ns);
	put_settings(w, mb);
	proto_nest_end(w);
}

static void
put_subscription(ProtoWriter *w, const Broker *b, const Sub *s)
{
	StoreMailbox *mb = store_mailbox_by_id(b->store, s->rt->mailbox_id);
	uint64_t flags = 0;

	if (!mb)
		return;
	if (s->exclusive)
		flags |= MBOX_SUB_EXCLUSIVE;
	if (!sub_is_active(s))
		flags |= MBOX_SUB_STANDBY;
	proto_nest_begin(w, MBOX_TAG_SUBSCRIPTION);
	proto_put_str(w, MBOX_TAG_MAILBOX, mb->name);
	proto_put_u64(w, MBOX_TAG_COUNT, s->window);
	proto_put_u64(w, MBOX_TAG_LEASED, s->unacked);
	proto_put_u64(w, MBOX_TAG_LEASE_MS,
		      s->lease_ms ? s->lease_ms : mb->lease_ms);
	proto_put_u64(w, MBOX_TAG_FLAGS, flags);
	proto_nest_end(w);
}

static bool reply_full(const Request *q);

/*
 * One CLIENT: c's identity and what it holds. With only (a mailbox's
 * runtime state) its leases, waiting RECVs and subscriptions of that
 * mailbox only, else all of them. Returns true when the reply filled up
 * before all its subscriptions were listed.
 */
static bool
put_client(Request *q, const Conn *c, const MailboxRt *only)
{
	bool cut = false;
	ProtoWriter *w = &q->b->w;
	size_t leased = 0, waiting = 0;

	if (only) {
		for (const Lease *l = c->leases.head; l; l = l->next)
			leased += l->mailbox_id == only->mailbox_id;
		waiting = rt_waiting(only, c);
	} else {
		leased = c->leases.count;
		for (const Waiter *wt = c->waiters; wt; wt = wt->conn_next)
			waiting++;
	}
	proto_nest_begin(w, MBOX_TAG_CLIENT);
	proto_put_u64(w, MBOX_TAG_CONN_ID, c->serial);
	proto_put_u64(w, MBOX_TAG_SENDER_PID, (uint64_t)c->pid);
	proto_put_u64(w, MBOX_TAG_SENDER_UID, c->uid);
	proto_put_u64(w, MBOX_TAG_SENDER_GID, c->gid);
	proto_put_str(w, MBOX_TAG_SENDER_COMM, c->comm);
	proto_put_u64(w, MBOX_TAG_TIME_NS, (uint64_t)c->connected_ns);
	proto_put_u64(w, MBOX_TAG_LEASED, leased);
	proto_put_u64(w, MBOX_TAG_WAITING, waiting);
	proto_put_u64(w, MBOX_TAG_FLAGS, c == q->c ? MBOX_CLIENT_SELF : 0);
	for (const Sub *s = c->subs; s; s = s->owner_next) {
		if (only && s->rt != only)
			continue;
		/* One connection may have many (max_subscriptions). */
		if (reply_full(q)) {
			cut = true;
			break;
		}
		put_subscription(w, q->b, s);
	}
	proto_nest_end(w);
	return cut;
}

/* Past this many body bytes no more CLIENTs are added: the reply stays
 * under MAX_FRAME as RECV's does, and says it was cut (FLAGS). */
static bool
reply_full(const Request *q)
{
	return q->b->w.len >= q->b->cfg.max_msg_size;
}

/*
 * Every connection subscribed to or waiting on rt's mailbox (mb). Its
 * owner and admins see them all; anyone else, as in CLIENTS, only those
 * of its own uid: who else consumes, with pids and process names, is not
 * theirs to learn (doc/security.md).
 */
static bool
put_consumers(Request *q, const MailboxRt *rt, const StoreMailbox *mb)
{
	bool all = acl_is_admin(&q->c->peer) || q->c->uid == mb->owner_uid;
	uint64_t stamp = broker_visit_begin(q->b);

	for (const Sub *s = rt->sub_head; s; s = s->mb_next) {
		if (!s->conn || !broker_conn_first_visit(s->conn, stamp) ||
		    (!all && s->conn->uid != q->c->uid))
			continue; /* parked in a hand-off, or not shown */
		if (reply_full(q) || put_client(q, s->conn, rt))
			return true;
	}
	for (const Waiter *w = rt->wait_head; w; w = w->mb_next) {
		if (!broker_conn_first_visit(w->conn, stamp) ||
		    (!all && w->conn->uid != q->c->uid))
			continue;
		if (reply_full(q) || put_client(q, w->conn, rt))
			return true;
	}
	return false;
}

void
op_stat(Request *q)
{
	char name[MBOX_NAME_MAX + 1];
	StoreMailbox *mb;
	MailboxRt *rt;
	ProtoWriter *w;
	bool cut = false;

	if (request_check(q, BIT(MBOX_TAG_MAILBOX), BIT(MBOX_TAG_MAILBOX)) <
		    0 ||
	    request_name(q, name) < 0)
		return;
	mb = store_mailbox_get(q->b->store, name);
	if (!mb) {
		reply_errorf(q, MBOX_S_NOT_FOUND, NULL,
			     "no such mailbox: %s (see 'mboxctl ls')", name);
		return;
	}
	/* Like LIST: whoever may read or write it may look at it. */
	if (!acl_may(&q->c->peer, mb, ACL_READ) &&
	    !acl_may(&q->c->peer, mb, ACL_WRITE)) {
		log_denial(q, name);
		reply_error(q, MBOX_S_DENIED, NULL, "permission denied");
		return;
	}
	rt = counters_rt(q->b, mb);
	w = reply_begin(q);
	put_stat_info(q, mb);
	if (rt) {
		put_counters(q->b, w, &rt->counters, false);
		cut = put_consumers(q, rt, mb);
	}
	proto_put_u64(w, MBOX_TAG_FLAGS, cut ? MBOX_REPLY_TRUNCATED : 0);
	conn_send_writer(q->c, w);
}

/* ------------------------------------------------------------------ */
/* CLIENTS */

static int
conn_cmp(const void *a, const void *b)
{
	const Conn *x = *(Conn *const *)a, *y = *(Conn *const *)b;

	return (x->serial > y->serial) - (x->serial < y->serial);
}

void
op_clients(Request *q)
{
	Broker *b = q->b;
	bool admin = acl_is_admin(&q->c->peer), cut = false;
	Conn **v;
	ProtoWriter *w;
	size_t n = 0;

	if (request_check(q, 0, 0) < 0)
		return;
	v = calloc(b->n_conns + b->n_refused + 1, sizeof(*v));
	if (!v) {
		reply_error(q, MBOX_S_LIMIT, "memory", "out of memory");
		return;
	}
	/* Others see their own uid's connections only: who else talks to
	 * the broker is not theirs to know. */
	for (Conn *c = b->conns; c; c = c->next)
		if (!c->closing && !c->refuse_limit &&
		    n < b->n_conns + b->n_refused + 1 &&
		    (admin || c->uid == q->c->uid))
			v[n++] = c;
	qsort(v, n, sizeof(*v), conn_cmp);
	w = reply_begin(q);
	for (size_t i = 0; i < n; i++) {
		if (reply_full(q) || put_client(q, v[i], NULL)) {
			cut = true;
			break;
		}
	}
	proto_put_u64(w, MBOX_TAG_FLAGS, cut ? MBOX_REPLY_TRUNCATED : 0);
	free(v);
	conn_send_writer(q->c, w);
}

/* ------------------------------------------------------------------ */
/* STATS */

typedef struct Totals {
	Store *store;
	int64_t now;
	uint64_t ready, leased, delayed, dead, bytes;
} Totals;

static int
totals_add(void *ctx, StoreMailbox *mb)
{
	Totals *t = ctx;
	uint64_t delayed = 0;

	if (mb->n_ready)
		store_mailbox_count_delayed(t->store, mb, t->now, &delayed);
	t->ready += mb->n_ready - delayed;
	t->delayed += delayed;
	t->leased += mb->n_leased;
	t->dead += mb->n_dead;
	t->bytes += mb->bytes;
	return 0;
}

/* The database file and its WAL, as the disk sees them. */
static uint64_t
store_file_bytes(const char *db)
{
	char wal[4096];
	struct stat st;
	uint64_t n = 0;

	if (!db)
		return 0;
	if (stat(db, &st) == 0)
		n += (uint64_t)st.st_size;
	if (snprintf(wal, sizeof(wal), "%s-wal", db) < (int)sizeof(wal) &&
	    stat(wal, &st) == 0)
		n += (uint64_t)st.st_size;
	return n;
}

void
op_stats(Request *q)
{
	Broker *b = q->b;
	Totals t = {.store = b->store, .now = broker_now_ns()};
	ProtoWriter *w;

	if (request_check(q, 0, 0) < 0)
		return;
	store_mailbox_foreach(b->store, totals_add, &t);
	w = reply_begin(q);
	proto_put_str(w, MBOX_TAG_SERVER, PACKAGE_NAME " " PACKAGE_VERSION);
	proto_put_u64(w, MBOX_TAG_TIME_NS, (uint64_t)b->started_ns);
	proto_put_u64(w, MBOX_TAG_CONNECTIONS, b->n_conns);
	proto_put_u64(w, MBOX_TAG_MAILBOXES, store_mailbox_count(b->store));
	proto_put_u64(w, MBOX_TAG_READY, t.ready);
	proto_put_u64(w, MBOX_TAG_LEASED, t.leased);
	proto_put_u64(w, MBOX_TAG_DELAYED, t.delayed);
	proto_put_u64(w, MBOX_TAG_DEAD, t.dead);
	proto_put_u64(w, MBOX_TAG_BYTES, t.bytes);
	proto_put_u64(w, MBOX_TAG_STORE_BYTES,
		      store_file_bytes(b->cfg.db_path));
	proto_put_u64(w, MBOX_TAG_RESERVE_BYTES,
		      b->reserve ? reserve_file_kept(b->reserve) : 0);
	proto_put_u64(w, MBOX_TAG_DISK_FULL, b->disk_low);
	put_counters(b, w, &b->counters, true);
	conn_send_writer(q->c, w);
}
