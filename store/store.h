/*
 * store.h - durable mailboxes and messages in one SQLite database (WAL).
 *
 * The store knows nothing of sockets or connections. It keeps every
 * mailbox row in memory with live counters; messages stay on disk.
 * Transactions are driven by the caller so that everything that arrives
 * in one loop iteration shares one commit (group commit):
 *
 *     store_begin(); store_msg_insert(); store_msg_ack(); ...
 *     store_commit(durable)   -> only now answer the clients
 *
 * Every write function requires an open transaction (store_begin was
 * called) and returns -EINVAL otherwise. Errors are negative errno:
 * -ENOSPC disk or database full, -EIO other SQLite failures (the SQLite
 * text is in store_errmsg), -ENOENT, -EEXIST, -ENOMEM, -EINVAL.
 *
 * Message states: READY (deliverable once ready_ns has passed), LEASED
 * (held by a consumer: a row of the lease table, its holder known only to
 * the broker's memory, so store_open voids every lease, counting its
 * delivery, and the message is READY again), DEAD.
 */
#ifndef MBOX_STORE_H
#define MBOX_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mbox-proto.h"

typedef struct Store Store;

/* The page size of a database the store creates (SQLite's default is
 * 4096; a database keeps the size it was made with). 1 KiB messages fill
 * 8 KiB pages to 96 %, 4 KiB ones to 82 %; with a backlog, every page of
 * messages is read back and checkpointed, so larger pages cost fewer
 * reads and writes per message (doc/performance.md). Larger still, a
 * commit of one small post would write and fsync more. */
#define STORE_PAGE_SIZE 8192

typedef enum StoreSync {
	STORE_SYNC_OFF,	   /* no fsync at all: tests only */
	STORE_SYNC_NORMAL, /* survives a crash of mboxd, not of the machine */
	STORE_SYNC_FULL,   /* every durable commit is fsync'd */
} StoreSync;

enum store_msg_state {
	STORE_READY = 0,
	STORE_LEASED = 1,
	STORE_DEAD = 2,
};

/* StoreMailbox.flags */
#define STORE_MB_TEMP	0x1u /* deleted when its creator disconnects */
#define STORE_MB_PAUSED 0x2u /* no deliveries; posts still accepted */

typedef struct StoreMailbox {
	int64_t id; /* rowid, stable for the mailbox's life */
	char name[MBOX_NAME_MAX + 1];
	uint32_t owner_uid;
	uint32_t gid;
	uint32_t mode;		 /* 0..0777, r/w bits used */
	uint64_t lease_ms;	 /* default lease, > 0 */
	uint64_t max_deliveries; /* 0 = unlimited */
	uint64_t max_msgs;	 /* 0 = broker-wide limit only */
	uint64_t max_bytes;	 /* 0 = broker-wide limit only */
	uint64_t ttl_ms;	 /* default message ttl, 0 = none */
	uint32_t flags;		 /* STORE_MB_* */
	int64_t created_ns;
	/* Live counters, kept exact by the store (rebuilt on rollback). */
	uint64_t n_ready;  /* READY rows, delayed ones included */
	uint64_t n_leased; /* LEASED rows */
	uint64_t n_dead;   /* DEAD rows */
	uint64_t bytes;	   /* payload bytes of all rows */
	void *user;	   /* owned by the caller; the store never reads it */
} StoreMailbox;

/*
 * A message as stored. On insert the caller fills everything but id
 * (assigned) and state (READY). In callbacks every pointer points into
 * SQLite's memory and is valid only until the callback returns.
 */
typedef struct StoreMsg {
	uint64_t id; /* strictly increasing, never reused */
	int64_t mailbox_id;
	uint32_t state;	   /* enum store_msg_state */
	uint32_t priority; /* 0..9, higher first */
	uint32_t deliveries;
	int64_t time_ns;    /* enqueue time, ns since the epoch */
	int64_t ready_ns;   /* not deliverable before; 0 = at once */
	int64_t expires_ns; /* dead as expired after; 0 = never */
	uint32_t pid, uid, gid;
	char comm[MBOX_COMM_MAX + 1];
	const void *data;
	size_t len;
	/* data is TEXT, written by another program: the store's counters
	 * count it in characters (SQLite's length()), not len bytes */
	bool data_text;
	const void *headers; /* encoded HEADER fields, opaque to the store */
	size_t headers_len;
	const char *dedup;	 /* NULL = none */
	const char *dead_reason; /* NULL unless DEAD */
} StoreMsg;

/* Return 0 to go on, non-zero to stop (that value is returned). */
typedef int (*StoreMsgFn)(void *ctx, const StoreMsg *msg);
typedef int (*StoreMailboxFn)(void *ctx, StoreMailbox *mb);

/*
 * store_setup_process - call once at the start of a process that uses
 * the store, before any store_open: it turns off SQLite's process-wide
 * memory statistics, which take a global mutex on every allocation
 * (6.5 % of the store's instructions, doc/performance.md); nothing here
 * reads them. Returns 0, or -EBUSY when SQLite is already in use in the
 * process, which then keeps its defaults (slower, not wrong).
 */
int store_setup_process(void);

/* Whether the last store_msg_lease took fewer messages than asked for
 * because the room under the cap was short (not because fewer were
 * ready). */
bool store_lease_clipped(const Store *s);

/*
 * store_open - open or create the database at path (its directory must
 * exist), set WAL mode, migrate the schema forward, load the mailboxes,
 * turn LEASED messages back into READY. Returns 0 and *out, or negative
 * errno with a reason in errbuf (errlen bytes).
 */
int store_open(Store **out, const char *path, StoreSync sync, char *errbuf,
	       size_t errlen);
/* Close; rolls back an open transaction. store_free(NULL) is fine. */
Store *store_free(Store *s);
/*
 * store_set_max_bytes - cap the database at bytes (rounded down to whole
 * pages; 0 = no cap beyond the disk). A write that would grow it further
 * fails with -ENOSPC like a full disk: the transaction must then be rolled
 * back (SQLite has usually done so already), and what was committed
 * before stays intact.
 *
 * Writes that add data (store_msg_insert, store_mailbox_create,
 * store_binding_add) keep 1/16 of the cap (at least 8 pages) free: one
 * that would leave fewer free pages (free-list pages plus what the file
 * may still grow by) fails with -ENOSPC before it changes anything, and
 * the transaction stays open. The rest is kept for the writes that drain
 * the store (lease, release, kill, delete ...), which may need a page or
 * two to move index entries, so a store full of posts can always be
 * consumed. Pages freed by deletes are reused, so acks make room for
 * posts again.
 *
 * The cap bounds the database file (and what it holds after a
 * checkpoint), not the WAL beside it: under a cap the WAL is checkpointed
 * every quarter of the cap (16 pages to 16 MiB), so on disk the
 * files take up to about 1.25 times the cap plus the largest transaction,
 * and more while another connection holds a read snapshot open. The cap
 * is per connection: set it again after every store_open.
 * Returns 0, or -EINVAL if the database is already larger.
 */
int store_set_max_bytes(Store *s, uint64_t bytes);
/*
 * store_hold_size - a cap at the database's present size plus grow_bytes
 * (at most limit_bytes, unless 0), for a disk that is full: the writes
 * that drain may grow the file by grow_bytes (a lease's row may need a
 * new page), while adds must fit in the pages that are free inside it
 * and keep grow_bytes plus 1/16 of them free. Acks free pages, so posts
 * go on as consumers make room, without the file growing. Held again
 * (the limit changed), it keeps the size it allowed the first time.
 * Undone by store_set_max_bytes. Returns 0 or a negative errno.
 */
int store_hold_size(Store *s, uint64_t grow_bytes, uint64_t limit_bytes);
/*
 * store_set_wal_max - checkpoint the WAL every bytes at most (at least 16
 * pages; 0: no bound but the store's own, 16 MiB, or a quarter of a cap),
 * under a cap or none: what a checkpoint copies into the database then
 * fits in disk space kept for it (the broker's disk reserve).
 * Per connection, like the cap. Returns 0 or a negative errno.
 */
int store_set_wal_max(Store *s, uint64_t bytes);
/* The cap in force, in bytes (0: none): the operator's
 * (store_set_max_bytes) or a hold's (store_hold_size). */
uint64_t store_cap_bytes(const Store *s);
/*
 * store_on_disk_full - call fn(ctx, wal) when a write to the database or
 * its WAL finds the disk full (wal: a transaction's frames; else the
 * database file, written by checkpoints); if fn returns true (it freed
 * space), the write is tried once more, so the commit or checkpoint goes
 * through. fn runs inside SQLite: it must not call the store.
 */
void store_on_disk_full(Store *s, bool (*fn)(void *ctx, bool wal), void *ctx);
/* The bytes of the database as the open transaction sees it, frames in
 * the WAL included: what its file holds after a checkpoint. */
int store_image_bytes(Store *s, uint64_t *out);
/* Give SQLite's unused cache memory back (the broker is idle). */
void store_release_memory(Store *s);
/*
 * store_wal_empty - copy the WAL into the database and cut its file to
 * nothing (the broker is idle; under load the WAL holds up to 16 MiB).
 * Outside a transaction. 0; -EBUSY when another connection (an
 * operator's sqlite3) still reads frames of it, after the busy timeout;
 * another negative errno if the checkpoint failed.
 */
int store_wal_empty(Store *s);
/* Last SQLite error text, for logs. */
const char *store_errmsg(const Store *s);

/*
 * store_on_txn_end - call fn(ctx, committed) whenever a transaction ends:
 * committed true once its COMMIT went through (also when the fsync after
 * it then failed: store_commit_unsure), false when it was rolled back for
 * any reason. fn must not call the store.
 */
void store_on_txn_end(Store *s, void (*fn)(void *ctx, bool committed),
		      void *ctx);

/* Open a transaction (BEGIN IMMEDIATE) unless one is open already. */
int store_begin(Store *s);
bool store_in_txn(const Store *s);
/* Whether the open transaction adds data: it inserted a message, or made
 * a mailbox or a binding. Only reads a flag, so a store_on_disk_full hook
 * may ask. */
bool store_txn_adds(const Store *s);
/*
 * store_commit - commit the open transaction (no-op without one). With
 * durable, the commit is as durable as the sync mode says; without it
 * (only lease bookkeeping changed) it is never fsync'd on its own — the
 * next durable commit covers it. On failure the transaction is rolled
 * back and the counters rebuilt; the caller must treat every change of
 * the transaction as not done. The one exception: the fsync after the
 * COMMIT failed (store_commit_unsure), when the changes are in the
 * database but may not be on disk, and the store refuses writes from
 * then on.
 */
int store_commit(Store *s, bool durable);
/* Did the last store_commit fail after the COMMIT, in its fsync? Then
 * nobody can tell whether its changes survive a crash. */
bool store_commit_unsure(const Store *s);
int store_rollback(Store *s);

/* Mailboxes. Pointers stay valid until the mailbox is deleted. */
StoreMailbox *store_mailbox_get(Store *s, const char *name);
StoreMailbox *store_mailbox_by_id(Store *s, int64_t id);
size_t store_mailbox_count(const Store *s);
/* Mailboxes owned by uid, those of the open transaction included (a
 * look-up: the store keeps a count per owner). */
size_t store_mailbox_count_owned(const Store *s, uint32_t uid);
/* The n_leased of every mailbox, summed (kept as leases come and go,
 * not counted: a size cap needs it on every post and lease). */
uint64_t store_leases_held(const Store *s);
/* Visit every mailbox in name order. */
int store_mailbox_foreach(Store *s, StoreMailboxFn fn, void *ctx);
/*
 * store_mailbox_create - insert a mailbox with the settings in tmpl
 * (name, owner_uid, gid, mode, lease_ms, ..., flags; id and counters are
 * ignored). Returns 0 and *out, -EEXIST, or another error.
 */
int store_mailbox_create(Store *s, const StoreMailbox *tmpl,
			 StoreMailbox **out);
/* Write back the settings fields of mb (owner, gid, mode, lease_ms ...). */
int store_mailbox_update(Store *s, StoreMailbox *mb);
/* Delete the mailbox and all its messages; mb is freed. */
int store_mailbox_delete(Store *s, StoreMailbox *mb);
/* READY messages of mb whose ready_ns is later than now_ns. */
int store_mailbox_count_delayed(Store *s, StoreMailbox *mb, int64_t now_ns,
				uint64_t *out);
/* Enqueue time of the oldest message of mb (0 when empty). */
int store_mailbox_oldest(Store *s, StoreMailbox *mb, int64_t *time_ns);
/* Earliest ready_ns > now_ns among READY messages of mb (0 if none). */
int store_mailbox_next_ready(Store *s, StoreMailbox *mb, int64_t now_ns,
			     int64_t *ready_ns);

/* Messages. */
/* Insert msg (state READY) into mb; sets msg->id. Stores expires_ns
 * and records msg->dedup (see store_dedup_find). */
int store_msg_insert(Store *s, StoreMailbox *mb, StoreMsg *msg);
/*
 * store_msg_lease - take up to max READY messages of mb with ready_ns <=
 * now_ns and not expired (expires_ns 0 or > now_ns), in order (priority
 * descending, then id ascending), mark them LEASED with deliveries + 1, and
 * call fn for each (msg shows the new state and count). Returns the number
 * leased or negative errno. Under a size cap (store_set_max_bytes) a lease
 * takes room: it takes fewer than it could when the room is short
 * (store_lease_clipped says so), and returns -ENOBUFS, writing nothing,
 * when there is none; acks of leased messages make room again.
 */
int store_msg_lease(Store *s, StoreMailbox *mb, int64_t now_ns, size_t max,
		    StoreMsgFn fn, void *ctx);
/* Delete message id of mb (any state). -ENOENT if it is not there. */
int store_msg_delete(Store *s, StoreMailbox *mb, uint64_t id);
/*
 * store_msg_ack - delete message id of mb that the caller knows to be
 * LEASED, with len bytes of data (what its lease delivered; not for
 * data_text messages), without reading the row first. -ENOENT, and nothing
 * done, when mb holds no leased message id: store_msg_delete then says what is
 * there.
 */
int store_msg_ack(Store *s, StoreMailbox *mb, uint64_t id, uint64_t len);
/*
 * store_msg_release - LEASED -> READY, deliverable from ready_ns (0 = at
 * once); the message keeps its id and so its place in line. When
 * mb->max_deliveries is not 0 and the message has been delivered that
 * many times or more, it goes to the dead list with reason
 * "max-deliveries" instead. Returns 0 (READY), 1 (DEAD), -ENOENT if it
 * is not a LEASED message of mb, or another negative errno.
 */
int store_msg_release(Store *s, StoreMailbox *mb, uint64_t id,
		      int64_t ready_ns);
/* Read one message by id (any state) and call fn. -ENOENT if absent. */
int store_msg_get(Store *s, StoreMailbox *mb, uint64_t id, StoreMsgFn fn,
		  void *ctx);
/*
 * store_msg_kill - move message id of mb (READY or LEASED) to the dead
 * list with reason ("rejected", "max-deliveries", "expired"; not NULL,
 * copied). Its delivery count is kept. -ENOENT if it is not there or
 * already dead.
 */
int store_msg_kill(Store *s, StoreMailbox *mb, uint64_t id, const char *reason);
/*
 * store_msg_kick - move up to max (0 = all) DEAD messages of mb back to
 * READY in id order, deliverable at once, with their delivery count reset
 * to 0, no dead reason and no expiry (expires_ns 0: an expired message
 * would otherwise die again at once). Returns how many moved, or
 * negative errno.
 */
int64_t store_msg_kick(Store *s, StoreMailbox *mb, uint64_t max);
/*
 * store_msg_purge - delete every DEAD message of mb (dead) or every
 * READY one, delayed ones included (!dead); LEASED ones are never
 * touched. Returns how many were deleted, or negative errno.
 */
int64_t store_msg_purge(Store *s, StoreMailbox *mb, bool dead);
/*
 * store_expire - move every READY message (any mailbox) whose expires_ns
 * is not 0 and <= now_ns to the dead list with reason "expired", earliest
 * expiry first, calling fn (may be NULL) for each after its move, with
 * its mailbox id in msg->mailbox_id (only id, mailbox_id, state,
 * expires_ns and dead_reason are filled). Returns the number moved; a
 * non-zero return of fn stops the run and is returned instead (what was
 * moved stays moved). LEASED messages are left to their holders.
 */
int64_t store_expire(Store *s, int64_t now_ns, StoreMsgFn fn, void *ctx);
/* Earliest expires_ns (not 0) among READY messages of any mailbox, or 0
 * when none will expire; it may lie in the past (a message given back
 * after its expiry). One index lookup; a read, no transaction needed. */
int store_next_expiry(Store *s, int64_t *expires_ns);

/*
 * Dedup keys outlive their messages: a key stays known for the dedup
 * window even after its message was acked, so a retried post of work
 * already done still stores nothing. store_msg_insert records the key
 * (mailbox, key) -> (id, time_ns) when msg->dedup is not NULL, replacing
 * an older record of the same key.
 *
 * store_dedup_find - the id first posted with key to mb at or after
 * since_ns: 0 and *id, or -ENOENT. A read, no transaction needed.
 * Deleting a mailbox forgets its keys.
 */
int store_dedup_find(Store *s, StoreMailbox *mb, const char *key,
		     int64_t since_ns, uint64_t *id);
/* Forget keys recorded before before_ns. Returns how many, or errno. */
int64_t store_dedup_prune(Store *s, int64_t before_ns);

/*
 * Bindings of mailboxes to topic patterns (fan-out). They are kept in
 * memory too, so matching a topic never reads the database; deleting a
 * mailbox deletes its bindings. Patterns are stored as given (the caller
 * validates them).
 */
/* -EEXIST if mb already has exactly this pattern; -EINVAL unless it has
 * 1..MBOX_TOPIC_MAX bytes. A rollback undoes it, in memory too. */
int store_binding_add(Store *s, StoreMailbox *mb, const char *pattern);
/* -ENOENT if mb has no such pattern. */
int store_binding_remove(Store *s, StoreMailbox *mb, const char *pattern);
typedef int (*StoreBindingFn)(void *ctx, StoreMailbox *mb, const char *pattern);
/* Visit every binding (all mailboxes), ordered by mailbox name then
 * pattern (strcmp); a non-zero return of fn stops and is returned. fn
 * may call the store, even change bindings: the walk goes on after the
 * current (name, pattern). Never reads the database. */
int store_binding_foreach(Store *s, StoreBindingFn fn, void *ctx);
/* Number of bindings of mb. */
size_t store_binding_count(Store *s, const StoreMailbox *mb);

/*
 * store_msg_peek - call fn for up to max messages of mb with id >=
 * from_id, without changing them: STORE_PEEK_DEAD (or true) the DEAD
 * ones in id order; STORE_PEEK_QUEUE (or false) READY and LEASED ones in
 * delivery order (priority descending, id ascending); STORE_PEEK_BY_ID
 * those in id order.
 */
enum {
	STORE_PEEK_QUEUE = 0,
	STORE_PEEK_DEAD = 1,
	STORE_PEEK_BY_ID = 2,
};
int store_msg_peek(Store *s, StoreMailbox *mb, uint64_t from_id, size_t max,
		   int what, StoreMsgFn fn, void *ctx);

#endif
