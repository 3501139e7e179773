/*
 * broker.h - the broker: loop, listener, connections, store, delivery.
 *
 * Group commit: handlers write into one open store transaction and park
 * their replies as PendingOps; before the loop blocks again (ev_prepare)
 * the delivery phase leases ready messages to the waiting RECVs and
 * subscriptions in that same transaction, the broker commits it once
 * (fsync'd when it holds posts or acks), sends the deliveries and then
 * answers every PendingOp (success or the store error).
 */
#ifndef MBOX_BROKER_BROKER_H
#define MBOX_BROKER_BROKER_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/conn.h"
#include "broker/lease.h"
#include "broker/log.h"
#include "store/reserve.h"
#include "store/store.h"

typedef struct BrokerConfig {
	const char *socket_path;
	const char *db_path;
	StoreSync sync;
	unsigned socket_mode; /* permission bits of the socket file */
	size_t max_msg_size;  /* bytes */
	bool autocreate;      /* POST creates missing mailboxes */
	size_t max_connections;
	size_t max_in_flight;	  /* requests per connection */
	size_t max_out_bytes;	  /* queued output before reading pauses */
	uint64_t dedup_window_ms; /* a DEDUP key is remembered this long */
	/* Limits (doc/protocol.md 8.3). */
	size_t max_header_bytes;	/* header keys + values of a message */
	size_t max_mailboxes;		/* mailboxes in all */
	size_t max_mailboxes_per_uid;	/* owned by one uid; admins free */
	uint64_t max_mailbox_msgs;	/* messages of one mailbox, any state */
	uint64_t max_mailbox_bytes;	/* payload bytes of one mailbox */
	size_t max_connections_per_uid; /* admins are not counted */
	size_t max_unacked;		/* leases one connection may hold */
	size_t max_subscriptions;	/* subscriptions of one connection */
	uint64_t max_store_bytes;	/* database size cap, 0 = none */
	uint64_t disk_reserve_bytes;	/* kept aside for a full disk */
	uint64_t commit_delay_us;	/* group commit's wait for posters */
} BrokerConfig;

/*
 * Event counters (ops-inspect.c), of the broker and of each mailbox, for
 * STATS and STAT. total counts since the broker started; cur and prev
 * count in the current and the previous COUNTERS_WINDOW_MS window, from
 * which ops-inspect.c estimates a per-second rate over the last window
 * without a timer (a sliding window approximated by two fixed ones).
 * Events done in a store transaction are staged, and counted only once it
 * commits: a batch that fails with STORE counts nothing.
 */
enum broker_counter {
	BC_POSTED,		/* messages stored by POST and PUBLISH */
	BC_DELIVERED,		/* messages leased by RECV or pushed */
	BC_REDELIVERED,		/* of those, delivered before */
	BC_ACKED,		/* messages acked */
	BC_NACKED,		/* messages given back by NACK */
	BC_DEAD_REJECTED,	/* REJECT */
	BC_DEAD_MAX_DELIVERIES, /* given back once too often */
	BC_DEAD_EXPIRED,	/* ttl ran out */
	BC_BYTES_IN,		/* payload bytes of posted messages */
	BC_BYTES_OUT,		/* payload bytes of delivered messages */
	BC_CONNECTIONS,		/* connections accepted (broker only) */
	BC_COMMITS,		/* batches committed durably (broker only) */
	BC__COUNT
};
#define COUNTERS_WINDOW_MS 10000
typedef struct Counters {
	uint64_t total[BC__COUNT];
	uint64_t cur[BC__COUNT];
	uint64_t prev[BC__COUNT];
	int64_t win_start_ms; /* start of cur's window, ms since the epoch */
} Counters;

/* A RECV waiting for messages. */
struct Waiter {
	Broker *broker;
	Conn *conn;
	uint32_t req_id;
	struct MailboxRt *rt; /* the mailbox waited on */
	size_t count;
	uint64_t lease_ms;
	bool immediate; /* WAIT_MS 0: answer in this iteration */
	ev_timer timer;
	Waiter *mb_prev, *mb_next;     /* on the mailbox's queue */
	Waiter *conn_prev, *conn_next; /* on the connection's list */
};

/*
 * A push subscription of a connection to a mailbox. While its connection
 * hands off, it is parked in a Handoff (conn NULL) and keeps its place in
 * the mailbox's list, so an exclusive subscription stays the active one.
 */
typedef struct Sub Sub;
struct Sub {
	Conn *conn; /* NULL while parked */
	struct Handoff *parked;
	struct MailboxRt *rt;
	uint32_t window;
	uint32_t unacked;  /* leases counting against the window */
	uint64_t lease_ms; /* 0 = the mailbox's lease */
	bool exclusive;
	Sub *mb_prev, *mb_next;	      /* on the mailbox's list, arrival order */
	Sub *owner_prev, *owner_next; /* on the connection's or hand-off's */
};

/* Leases and subscriptions parked under a token (HANDOFF). */
/* A parked subscription whose mailbox went: its ENDED push, owed to the
 * claimer. */
typedef struct HandoffEnded {
	char *name;
	char *why;
	int64_t created_ns;
	struct HandoffEnded *next;
} HandoffEnded;

typedef struct Handoff {
	Broker *broker;
	char token[MBOX_TOKEN_HEX + 1];
	uint64_t serial; /* names it in the log, which never shows the token */
	uid_t uid;	 /* of the connection that parked them */
	int64_t deadline_ns;
	LeaseList leases;
	Sub *subs;
	HandoffEnded *ended; /* pushed to the claimer first */
	ev_timer timer;
	struct Handoff *prev, *next;
} Handoff;

/*
 * Live hand-off records are capped per uid and in all, so a client that
 * hands off in a loop cannot pile up records (each with a timer of up to
 * an hour); the caps also keep handoff_find's linear search short.
 * doc/protocol.md 5.22 and 8.3 (LIMIT "max_handoffs").
 */
/* The TEXT of a SHUTDOWN answer. */
#define BROKER_STOPPING_TEXT                                                   \
	"the broker is stopping; nothing was taken for this request: "         \
	"connect again once it is back, and repeat it"

#define HANDOFF_MAX_PER_UID 64
#define HANDOFF_MAX	    4096

/*
 * A CLAIM whose messages do not all fit in the claimer's output at once
 * (max_out_bytes): the lease ids still to push, in order. The delivery
 * phase pushes them first, as the output drains, and sends the CLAIM
 * reply after the last one; until then nothing else is leased to the
 * claimer, so the parked work reaches it before anything new.
 */
typedef struct Claim {
	Conn *conn;
	uint32_t req_id;
	uint64_t *ids;
	size_t n, next;	     /* ids[next..n) are still to push */
	HandoffEnded *ended; /* ENDED pushes owed first, newest first */
	size_t pushed;	     /* the reply's COUNT */
	struct Claim *prev, *link;
} Claim;

/* The broker's runtime state of one mailbox (StoreMailbox.user). */
typedef struct MailboxRt {
	Broker *broker;
	int64_t mailbox_id;
	/* The mailbox's name and creation time, for the ENDED pushes once
	 * it is gone. */
	char *name;
	int64_t created_ns;
	/* Deleted in a transaction not settled yet (broker_settle_dropped):
	 * its waiters and subscribers are told only once it is committed. */
	bool dropped;
	struct MailboxRt *dropped_next;
	Waiter *wait_head, *wait_tail;
	size_t n_waiters;
	Sub *sub_head, *sub_tail;
	size_t n_subs;
	uint64_t rr; /* round-robin turn among subscribers */
	bool news;   /* on the broker's news list */
	struct MailboxRt *news_next;
	ev_timer ready_timer; /* a delayed message becomes ready */
	Counters counters;    /* this mailbox's events (STAT) */
	/* Events of the open transaction, added to counters once it commits
	 * (broker_counts_settle); on the broker's staged list if any. */
	uint64_t staged[BC__COUNT];
	bool on_staged;
	struct MailboxRt *staged_next;
	/* A lease of this pass found no room, or too little, under the
	 * store's cap: ready_timer tries again shortly. The lack of room is
	 * logged at most every NO_ROOM_LOG_NS (no_room_log_ns: last time). */
	bool no_room;
	int64_t no_room_log_ns;
} MailboxRt;

enum pending_kind {
	PENDING_POST,
	PENDING_ACK,
	PENDING_NACK,
	PENDING_PLAIN,	 /* empty success reply */
	PENDING_REJECT,	 /* like ACK: leases restored on failure */
	PENDING_PUBLISH, /* COUNT = n and one ID per copy */
	PENDING_COUNT,	 /* COUNT = n, no ids */
	PENDING_READ,	 /* LIST, PEEK, STAT, STATS: run once the batch ends */
};

/* What a settled lease was, to restore it if the batch fails. */
typedef struct PendingLease {
	int64_t mailbox_id;
	uint64_t lease_ms;
	uint64_t msg_len; /* as its Lease had it */
	bool sub; /* it counted against c's subscription of the mailbox */
} PendingLease;

/* A reply owed after the next commit. */
typedef struct PendingOp {
	enum pending_kind kind;
	Conn *conn;
	uint16_t op;
	uint32_t req_id;
	size_t n;
	uint64_t skipped;     /* PUBLISH: full mailboxes of others left out */
	uint64_t *ids;	      /* POST: new ids; ACK/NACK: message ids */
	PendingLease *leases; /* ACK/NACK/REJECT: restored on failure */
	uint8_t *body;	      /* READ: the request's body */
	size_t body_len;
	struct PendingOp *next;
} PendingOp;

struct Broker {
	struct ev_loop *loop;
	const Log *log;
	BrokerConfig cfg;
	Store *store;
	uid_t self_uid;
	int64_t started_ns;

	int listen_fd;
	bool own_socket; /* we bound it, so we unlink it */
	ev_io listen_io;
	ev_prepare prepare;
	/*
	 * Commit delay: the posters answered by the last commit that have
	 * not sent anything since (a Conn is one when its awaited_gen is
	 * commit_gen). While some are missing, the next commit of posts
	 * waits for them until answered_ns (CLOCK_MONOTONIC) plus
	 * cfg.commit_delay_us (commit_wait, a timerfd), so that their
	 * posts share its fsync.
	 */
	uint64_t commit_gen;
	size_t n_awaited;
	int64_t answered_ns;
	int commit_wait_fd;
	ev_io commit_wait;
	ev_timer accept_retry; /* after EMFILE */
	/* Memory a burst took is given back once requests stop: busy is set
	 * by every request, and trim_timer releases the page cache and the
	 * heap's free pages after one quiet tick. */
	ev_timer trim_timer;
	bool busy;
	ev_timer lease_timer; /* the first lease deadline */

	Conn *conns;
	size_t n_conns;	  /* accepted within the limits */
	size_t n_refused; /* over a limit, waiting for their LIMIT answer */
	/* Connections per non-admin uid (max_connections_per_uid). */
	struct UidCount {
		uid_t uid;
		size_t n;
	} * uid_counts;
	size_t n_uid_counts, cap_uid_counts;
	int64_t refuse_log_ns; /* last refusal logged: at most one a second */
	size_t refuse_quiet;   /* refusals not logged since */
	uint64_t next_serial;
	uint64_t next_handoff_serial;
	uint64_t visit_stamp; /* broker_visit_begin */
	Conn *dead;	      /* closed, reaped after the iteration */

	LeaseTable leases;
	PendingOp *pending_head, *pending_tail;
	bool batch_durable; /* the open transaction needs a durable commit */
	bool batch_posts;   /* it stores posts (POST, PUBLISH) */
	bool batch_failed;  /* a write failed: roll the batch back */
	int batch_err;	    /* its error (-ENOSPC: disk or database full) */
	MailboxRt *news;    /* mailboxes whose queue may have changed */
	MailboxRt *dropped; /* deleted, deletion not settled yet */
	/* Mailboxes served by this flush's delivery phase (still alive). */
	MailboxRt **served;
	size_t n_served, cap_served;
	/* Leases of closed connections, given back in the delivery phase
	 * and dropped from here only once its commit succeeded, so that a
	 * rolled-back batch cannot strand them as LEASED. */
	struct {
		uint64_t msg_id;
		int64_t mailbox_id;
		/* Its lease was made in this flush's transaction: when
		 * that fails to commit, the rollback has undone the lease
		 * already, and this give-back must go too. */
		bool uncommitted;
	} * releases;
	/* Goes up at every commit of a delivery phase: a lease whose
	 * flush_gen equals it is not committed yet. */
	uint64_t flush_gen;
	size_t n_releases, cap_releases;
	bool stopping;

	Handoff *handoffs;
	size_t n_handoffs;
	Claim *claims;		/* CLAIMs still pushing (usually none) */
	ev_timer expiry_timer;	/* the first message ttl runs out */
	int64_t next_expiry_ns; /* 0 = none known */
	bool expiry_dirty;	/* recompute next_expiry_ns from the store */
	bool deliver_failed;	/* the commit of the last flush failed */
	ev_timer dedup_timer;	/* forget old dedup keys */
	/* Maintenance runs in its own transaction after the batch commit,
	 * so that its failure cannot fail the clients' requests. */
	bool expire_due, prune_due;
	int64_t expiry_backoff_ns; /* a failed expiry run: not before then */
	/*
	 * A batch failed with -ENOSPC: requests that add data are refused at
	 * once, without writing, so that batches of acks, purges and deletes
	 * can commit and drain the store. Cleared when a batch that removed
	 * messages commits, or store_full_ns + 1 s later (retry).
	 */
	bool store_full;
	int64_t store_full_ns;
	/*
	 * Disk space kept aside for a full disk (NULL: none). When a write
	 * finds the disk full, it is given back to the file system and the
	 * store is held at its size (disk_low) so that
	 * consumers can drain it while posts use only the pages acks free;
	 * both end once the reserve can be taken again (broker_disk_check,
	 * at most once a second: reserve_try_ns).
	 */
	ReserveFile *reserve;
	bool disk_low;
	bool hold_due; /* disk_low, the hold not applied yet */
	int64_t reserve_try_ns;
	LogRate store_err_log; /* failed commits (a full disk repeats them) */
	/* Temporary mailboxes of closed connections whose deletion is not
	 * committed yet: a deletion rolled back with its batch is tried
	 * again (broker_drop_temps), at most once a second. */
	TempRef *temps_owed;
	size_t n_temps_owed, cap_temps_owed;
	int64_t temps_retry_ns;
	uint64_t flush_count; /* broker_flush calls, for TempRef.tried */
	bool batch_frees;     /* the open batch removes messages */
	/* Denials logged: a token bucket (broker_deny_log_ok). */
	LogRate deny_log;
	/* Full mailboxes a PUBLISH left out: as store_err_log. */
	LogRate skip_log;
	ev_timer again; /* work that arose during a flush: run another */

	ProtoWriter w;	   /* scratch for replies */
	Counters counters; /* broker-wide events (STATS) */
	/* Events of the open store transaction: counted once it commits,
	 * dropped if it is rolled back (broker_counts_settle). */
	uint64_t staged[BC__COUNT];
	MailboxRt *staged_head;
};

int broker_new(Broker **out, struct ev_loop *loop, const Log *log,
	       const BrokerConfig *cfg, int listen_fd, bool own_socket);
Broker *broker_free(Broker *b);
/* Stop accepting, commit, answer, close every connection. */
void broker_stop(Broker *b);

/*
 * broker_status_line - "N connections, M mailboxes, K messages" (stored
 * messages in any state) into buf, for systemd's STATUS=. Cheap: counted
 * from the mailboxes held in memory. Returns 0, or -ENOSPC if truncated.
 */
int broker_status_line(Broker *b, char *buf, size_t size);

/*
 * broker_reload_limits - take the limits of cfg (max_header_bytes,
 * max_mailboxes, max_mailbox_msgs, max_mailbox_bytes, max_connections,
 * max_connections_per_uid, max_unacked, max_in_flight, max_store_bytes,
 * max_subscriptions, max_mailboxes_per_uid)
 * and log each change at notice as "reload: NAME OLD -> NEW". The other
 * fields of cfg are ignored: they need a restart. A lower limit applies to
 * later requests; nothing stored or connected is removed. A max_store_bytes
 * the database already exceeds is refused with a warning and the old cap
 * kept. Returns how many limits changed.
 */
int broker_reload_limits(Broker *b, const BrokerConfig *cfg);

/* Connections refused over a limit that are kept to be answered (each a
 * file descriptor), at most. */
#define BROKER_REFUSED_MAX 64

int64_t broker_now_ns(void);
/* CLOCK_MONOTONIC, for what must not move with the wall clock (the
 * commit delay, log rate limits). */
int64_t broker_mono_ns(void);

/* Used by dispatch: */
int broker_txn(Broker *b);
/*
 * broker_refuse_add - while the store is full (a batch failed with
 * -ENOSPC in the last second and nothing was removed since), answer
 * request (op, req_id) of c STORE "disk or database full" and return
 * true: the request must not write. Used by every request that adds data
 * (POST, PUBLISH, CREATE, BIND).
 */
bool broker_refuse_add(Broker *b, Conn *c, uint16_t op, uint32_t req_id);
/* The open batch removes messages (ACK, PURGE, DELETE ...): its commit
 * ends the store-full state. */
void broker_batch_frees(Broker *b);
/*
 * broker_deny_log_ok - may a permission denial be logged now? A burst of
 * DENY_LOG_BURST lines, then DENY_LOG_PER_S a second: a client denied in
 * a loop cannot flood the log, while occasional denials are all logged.
 * *quiet gets how many were not logged since the last one (say so).
 */
#define STORE_ERR_LOG_BURST 5
#define STORE_ERR_LOG_PER_S 1
#define DENY_LOG_BURST	    128
#define DENY_LOG_PER_S	    50
bool broker_deny_log_ok(Broker *b, size_t *quiet);
/* A lease for rt's mailbox mb returned r (store_msg_lease): an error is
 * logged; with no room, or too little, under the store's cap (-ENOBUFS,
 * or fewer taken: store_lease_clipped) rt is tried again shortly, as acks
 * free room without waking this mailbox. Returns whether r < 0. */
bool broker_lease_done(Broker *b, MailboxRt *rt, StoreMailbox *mb, int r);
/* A write of the batch failed with err (a store error, -ENOMEM): it is
 * rolled back and every request in it answered STORE, naming a full disk
 * or database (-ENOSPC, e.g. --max-store-size) as such. */
void broker_batch_fail(Broker *b, int err);
int broker_defer(Broker *b, enum pending_kind kind, Conn *c, uint16_t op,
		 uint32_t req_id, uint64_t *ids, PendingLease *leases,
		 size_t n);
/*
 * Owe the answer to a request that only reads (LIST, PEEK, STAT, STATS)
 * and came while the batch holds changes not yet committed: it is run
 * after the commit, so that it never shows what a failed commit takes
 * back. Copies body.
 */
int broker_defer_read(Broker *b, Conn *c, const ProtoHeader *h,
		      const uint8_t *body, size_t len);
MailboxRt *broker_mailbox_rt(Broker *b, StoreMailbox *mb);
void broker_mailbox_news(Broker *b, StoreMailbox *mb);
/* A request came: memory is trimmed only once they stop for a while. */
void broker_note_request(Broker *b, Conn *c);
/* c is not awaited by the next commit any more (see commit_gen). */
void broker_unawait(Broker *b, Conn *c);
void broker_waiter_add(Broker *b, Waiter *w);
/* Answer w empty after wait_ms unless messages come first. */
void broker_waiter_arm(Waiter *w, uint64_t wait_ms);
void broker_waiter_free(Waiter *w);
/* Encode m as a MSG field (deadline_ns 0: none). */
void broker_put_msg(ProtoWriter *w, const StoreMailbox *mb, const StoreMsg *m,
		    int64_t deadline_ns);
/* A message that expires at expires_ns was stored or made ready again:
 * the expiry timer fires by then. */
void broker_expiry_changed(Broker *b, int64_t expires_ns);
/*
 * broker_mailbox_drop - delete mb and its messages in the open batch
 * transaction: leases of its messages become void. Once the deletion is
 * committed, RECVs waiting on it are answered NOT_FOUND and its
 * subscriptions end with an ENDED push; if it is rolled back, they go on.
 * Returns 0 or an error (then the batch must fail).
 */
int broker_mailbox_drop(Broker *b, StoreMailbox *mb);
/* Answer rt's RECVs with NOT_FOUND and why, end its subscriptions with an
 * ENDED push saying why, and free rt: its mailbox is gone. */
void broker_rt_end(Broker *b, MailboxRt *rt, const char *why);
/* Push ENDED (doc/protocol.md 5.13) for a mailbox to c. */
void broker_send_ended(Broker *b, Conn *c, const char *name, int64_t created_ns,
		       const char *why);
/* Return every lease of c (connection closing), end its subscriptions. */
void broker_release_conn(Broker *b, Conn *c);
/*
 * broker_conn_wake - c may take deliveries again (its output drained, or
 * it settled a lease at max_unacked): the mailboxes it waits on or
 * subscribes to get a delivery turn.
 */
void broker_conn_wake(Broker *b, Conn *c);
/*
 * broker_visit_begin - start a walk that takes each connection once:
 * broker_conn_first_visit(c, stamp) is true the first time it meets c in
 * the walk of stamp. For lists where a connection may appear several
 * times (a mailbox's subscriptions and waiting RECVs), in linear time.
 */
uint64_t broker_visit_begin(Broker *b);
bool broker_conn_first_visit(Conn *c, uint64_t stamp);

/*
 * broker_rt_consumers - the connections subscribed to rt's mailbox or
 * waiting on it, each counted once (CONSUMERS of LIST and STAT).
 * Subscriptions parked in a hand-off have no connection: not counted.
 */
size_t broker_rt_consumers(Broker *b, const MailboxRt *rt);

/*
 * broker_conn_room - how many more messages c may lease now: none while it
 * holds max_unacked, nor while its output (queued and being built) has
 * reached max_out_bytes — then it is marked held_back and woken once that
 * drains.
 */
size_t broker_conn_room(const Broker *b, Conn *c);
/* Would a frame of len more bytes for c pass max_out_bytes? Marks it
 * held_back if so. */
bool broker_conn_output_full(const Broker *b, Conn *c, size_t len);
/*
 * broker_lease_drop - forget lease l (settled, expired, voided): opens
 * its subscription's window again. With give_back, the message is queued
 * to become ready again after the batch commit.
 */
void broker_lease_drop(Broker *b, Lease *l, bool give_back);
/* Undo the leases of ids held by c (a delivery that could not be made);
 * with release_rows the rows go back to READY in the store too. */
void broker_unlease(Broker *b, Conn *c, StoreMailbox *mb, const uint64_t *ids,
		    size_t n, bool release_rows);
/* Queue message msg_id of mailbox_id to be made ready again. */
void broker_queue_release(Broker *b, uint64_t msg_id, int64_t mailbox_id,
			  bool uncommitted);

/* sub.c: subscriptions and pushes. */
/* c's subscription to the mailbox of rt, or NULL. */
Sub *sub_find(Conn *c, MailboxRt *rt);
/* Subscriptions on the owner list that starts at head. */
size_t sub_count(const Sub *head);
/* Subscribe c (at the end of rt's list). -ENOMEM. */
int sub_add(Broker *b, Conn *c, MailboxRt *rt, uint32_t window,
	    uint64_t lease_ms, bool exclusive, Sub **out);
/* End s: its leases stay held but no longer count against a window. */
void sub_remove(Broker *b, Sub *s);
/* Is s the active subscriber (it may receive pushes)? */
bool sub_is_active(const Sub *s);
/*
 * sub_push_mailbox - lease ready messages of mb to its subscribers with
 * room in their window, in turns, queueing DELIVER frames on *out.
 */
struct Outgoing;
void sub_push_mailbox(Broker *b, MailboxRt *rt, StoreMailbox *mb, int64_t now,
		      struct Outgoing **out);
/* Has some subscriber of rt room for a message now? */
bool sub_wants(const MailboxRt *rt);

/* A delivery built in the delivery phase, sent after its commit. */
typedef struct Outgoing {
	Conn *conn;
	uint8_t *frame;
	size_t len;
	uint64_t *ids; /* leased to conn by this frame */
	size_t n;
	bool push; /* DELIVER (else a RECV reply) */
	struct Outgoing *next;
} Outgoing;

/* ops-inspect.c: count n events of kind k, broker-wide and (mb not NULL)
 * for mb; never fails (a mailbox's own count is skipped without memory). */
void broker_count(Broker *b, StoreMailbox *mb, enum broker_counter k,
		  uint64_t n);
/* m was stored in mb (posted, bytes in). */
void broker_count_post(Broker *b, StoreMailbox *mb, const StoreMsg *m);
/* m of mb was leased to a consumer (delivered, redelivered, bytes out). */
void broker_count_delivery(Broker *b, StoreMailbox *mb, const StoreMsg *m);
/* An ACK, NACK or REJECT (op) of one message of mb was done; r is the
 * store's answer (1: a NACK sent it to the dead list). */
void broker_count_settle(Broker *b, StoreMailbox *mb, uint16_t op, int r);
/* StoreMsgFn of store_expire (ctx: the Broker): one message expired. */
int broker_count_expired(void *ctx, const StoreMsg *m);
/* The store transaction ended: count what it staged if committed, else
 * drop it (the store's store_on_txn_end hook, ctx: the Broker). */
void broker_counts_settle(void *ctx, bool committed);
/* rt is freed: take it off the staged list. */
void broker_counts_forget(Broker *b, MailboxRt *rt);

/* handoff.c */
/* The hand-off limit c's uid is at (HANDOFF_MAX_PER_UID, HANDOFF_MAX),
 * or 0 if it may park another. */
size_t handoff_limit(const Broker *b, const Conn *c);
/* Park c's leases and subscriptions; -ENOMEM, -EIO (no randomness). */
int handoff_park(Broker *b, Conn *c, uint64_t wait_ms, Handoff **out);
Handoff *handoff_find(Broker *b, const char *token);
/* A mailbox of h's leases or subscriptions that p may not read, or NULL:
 * a claimer of the same uid may have lost a group since the hand-off. */
const StoreMailbox *handoff_unreadable(Broker *b, const Handoff *h,
				       const AclPeer *p);
/*
 * handoff_claim - give h's leases and subscriptions to c (CLAIM req_id)
 * and push the messages to it, then answer the CLAIM with COUNT. What
 * does not fit in c's output now is pushed by the delivery phase as it
 * drains (handoff_pump), and the reply waits for the last push. Returns
 * 0, -EEXIST (c subscribes to one of them: nothing done), -ENOMEM.
 */
int handoff_claim(Broker *b, Handoff *h, Conn *c, uint32_t req_id);
/* Push what fits of every unfinished CLAIM (start of a delivery phase). */
void handoff_pump(Broker *b);
/* Does c have a CLAIM still pushing? Then nothing else is leased to it. */
bool handoff_claiming(const Broker *b, const Conn *c);
/* Answer every unfinished CLAIM with status and text (the broker is
 * stopping); the messages stay leased to their claimers until those
 * close. */
void handoff_claims_refuse(Broker *b, unsigned status, const char *text);
/* c is closing: forget its unfinished CLAIM (its leases go back). */
void handoff_claim_drop(Broker *b, Conn *c);
/* The mailbox of s, parked in a hand-off, is gone: its claimer will be
 * told (false: out of memory, it will not). */
bool handoff_note_ended(Handoff *h, const MailboxRt *rt, const char *why);
/* Deadline passed or broker stopping: leases go back, subs end. */
void handoff_expire(Broker *b, Handoff *h);
void broker_reap(Broker *b, Conn *c);
/* A frame from c is complete. */
void broker_dispatch(Conn *c, const ProtoHeader *h, const uint8_t *body,
		     size_t len);
/* A frame from c was over max_body, and skipped: answer it. */
void broker_dispatch_too_large(Conn *c, const ProtoHeader *h, size_t max_body);
/* Run a request broker_defer_read kept, now that its batch has ended. */
void broker_dispatch_read(Conn *c, uint16_t opcode, uint32_t id,
			  const uint8_t *body, size_t len);

#endif
