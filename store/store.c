/*
 * store.c - durable mailboxes and messages in one SQLite database (WAL).
 *
 * One connection, used by one thread. Mailboxes live in memory (Entry,
 * two sorted arrays: by name for lookups and name-ordered walks, by id)
 * with live counters; messages stay on disk and are only touched through
 * statements prepared once in store_open.
 *
 * Invariants:
 * - No statement stays busy between calls: every use ends in stmt_done
 *   (reset + clear bindings), so a callback sees a consistent store.
 * - Outside a transaction the counters of every mailbox equal what the
 *   database holds; inside one, what the transaction sees.
 * - Every Entry that the open transaction touched is in the journal, with
 *   a snapshot of its counters and stored settings taken at first touch.
 *   Rollback restores those snapshots, frees the mailboxes the
 *   transaction created and re-links the ones it deleted (deleted entries
 *   are freed only at commit). Rollback therefore costs O(touched
 *   mailboxes), not a scan of the message table, which matters when the
 *   disk is full and every batch is rolled back.
 * - s->txn_err is set when SQLite rolled the transaction back on its own
 *   (SQLITE_FULL, IOERR, NOMEM may do that): from then on writes refuse
 *   to run, since they would run in autocommit mode, each one committed
 *   on its own, and store_commit reports the failure.
 *
 * Durability. In WAL mode the only fsync a commit costs is the one of the
 * WAL at COMMIT, done by SQLite when PRAGMA synchronous is FULL. That
 * pragma cannot be changed inside a transaction ("Safety level may not be
 * changed inside a transaction"), and store_commit learns whether a
 * transaction is durable only at its end. So the connection always runs
 * with synchronous=NORMAL (consistent after power loss, commits do not
 * fsync; checkpoints still sync the WAL before copying it and the
 * database after), and in STORE_SYNC_FULL a durable commit fsyncs the WAL
 * itself, through SQLITE_FCNTL_JOURNAL_POINTER, right after COMMIT. That
 * is exactly the sync SQLite would have done, and it covers every frame
 * of earlier non-durable commits too.
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/schema.h"
#include "store/store.h"
#include "store/walbuf.h"

/* Only the broker's own SQLite peers (an operator's sqlite3 shell) can
 * hold a lock: wait briefly, then fail the request instead of stalling
 * the event loop. */
#define STORE_BUSY_TIMEOUT_MS 100
/* Page cache: -KiB. The hot parts of the queue index (its head, where
 * leases are taken, and its tail, where posts go) and the tail of the
 * table fit; payloads go through it only once. Measured with 1M messages
 * queued: 2 MiB is as fast as 16 MiB, and the broker stays under 7 MiB. */
#define STORE_CACHE_SIZE "-2048"
/* Checkpoint when the WAL reaches this size (16 MiB; SQLite's default is
 * 1000 pages). A queue rewrites the same few pages over and over,
 * and a checkpoint copies each page once however often it was written
 * since the last: the longer the WAL, the fewer copies, reads and fsyncs
 * of the database per message (doc/performance.md). store_wal_empty
 * gives the file back when the broker is quiet; cut the WAL file back to
 * this size after a checkpoint, so that a burst of large payloads does
 * not pin disk space until then. */
#define STORE_WAL_CHECKPOINT_BYTES (16 * 1024 * 1024)
#define STORE_JOURNAL_SIZE_LIMIT   67108864
/* Under a small cap: never checkpoint more often than every this many
 * pages, each checkpoint costing fsyncs. */
#define STORE_WAL_AUTOCHECKPOINT_MIN 16
/* Under a size cap, the part kept for draining: 1/16, at least 8 pages
 * (see store_set_max_bytes). */
#define STORE_CAP_RESERVE_DIV 16
#define STORE_CAP_RESERVE_MIN 8
/* What an add is counted at beside its bytes (see cap_add_room): a row's
 * header and the index entries, and the pages that splitting the table
 * leaf and its indexes on the way may take. */
#define STORE_CAP_ROW_BYTES   256
#define STORE_CAP_SPLIT_PAGES 4
/* A row of the lease table, counted generously (its cell is about 20
 * bytes), and what the release of a held lease may add later (a delay:
 * 8 bytes more in its row and its index entry, an entry in
 * message_delayed, and the splits of pages posts left full): leases take
 * the cap's reserve, see cap_lease_room. */
#define STORE_CAP_LEASE_BYTES	32
#define STORE_CAP_RELEASE_BYTES 96
/* Message ids reserved by one write to id_reserve (see schema.c, v3):
 * one small page in the WAL per this many posts, and at most this many
 * ids skipped by a restart. */
#define STORE_ID_BLOCK 1024

#define STR_(x) #x
#define STR(x)	STR_(x)

/* Entry.txn bits: what the open transaction did to the mailbox. */
#define ENTRY_TOUCHED 0x1u /* in the journal, snapshot taken */
#define ENTRY_CREATED 0x2u /* created by it: freed on rollback */
#define ENTRY_DELETED 0x4u /* deleted by it: unlinked, freed on commit */

/* The settings fields of a StoreMailbox, as stored in its row. */
typedef struct MbSettings {
	uint32_t owner_uid, gid, mode;
	uint64_t lease_ms, max_deliveries, max_msgs, max_bytes, ttl_ms;
	uint32_t flags;
} MbSettings;

typedef struct MbCounters {
	uint64_t n_ready, n_leased, n_dead, bytes;
} MbCounters;

/*
 * Where the mailbox's next lease walk starts: the position after
 * (priority prio, id id) in delivery order. Every READY row before it is
 * leased, expired, or delayed until `until` or later, so a walk need not
 * step over the leased head of a busy line again and again. A write that
 * puts a deliverable row before it moves it back (lease_from_lower);
 * known false sends the next walk from the top (a rollback, a kick, the
 * time of a delayed row come).
 */
typedef struct LeaseFrom {
	bool known;
	double prio;
	int64_t id;
	int64_t until;
	/* The latest time a walk from it was made at: a walk at an earlier
	 * time (the wall clock stepped back) starts from the top, as rows
	 * it stepped over may be delayed or unexpired again. */
	int64_t seen;
} LeaseFrom;

typedef struct Entry {
	StoreMailbox mb;       /* what callers see */
	LeaseFrom from;	       /* see LeaseFrom; not journaled */
	MbSettings disk;       /* settings as in the database right now */
	MbSettings saved;      /* settings at first touch in the open txn */
	MbCounters saved_cnt;  /* counters at first touch in the open txn */
	unsigned txn;	       /* ENTRY_* */
	char **pat;	       /* bindings: n_pat patterns, strcmp order */
	size_t n_pat, cap_pat; /* cap_pat never shrinks (see BindUndo) */
	uint32_t counted_uid;  /* the owner Store.owners counts it for */
} Entry;

/*
 * Linked mailboxes per owner uid (store_mailbox_count_owned), in uid
 * order and without zero counts: never more entries than mailboxes, so
 * the room index_reserve makes for the index does for these too, and
 * counting never fails. A refused CREATE asks for the count, so it must
 * not cost a walk of every mailbox.
 */
typedef struct OwnerCount {
	uint32_t uid;
	uint32_t n;
} OwnerCount;

/*
 * One binding change of the open transaction, undone in reverse order on
 * rollback. A removed pattern stays allocated here until commit, so undo
 * re-inserts the same string; since Entry.pat never shrinks and undo
 * walks back through counts the array already held, undo never
 * allocates and cannot fail.
 */
typedef struct BindUndo {
	Entry *e;
	char *pattern;
	bool added; /* true: add_binding made it; false: remove took it */
} BindUndo;

#define entry_of(p) ((Entry *)((char *)(p)-offsetof(Entry, mb)))

enum {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_MB_LOAD,
	ST_MB_COUNTERS,
	ST_MB_RESET_LEASED,
	ST_LEASE_VOID_KILL,
	ST_LEASE_VOID_COUNT,
	ST_LEASE_VOID,
	ST_MB_DELETE_LEASES,
	ST_MB_INSERT,
	ST_MB_UPDATE,
	ST_MB_DELETE_MSGS,
	ST_MB_DELETE,
	ST_MB_DELAYED,
	ST_MB_OLDEST,
	ST_MB_NEXT_READY,
	ST_MSG_INSERT,
	ST_MSG_LEASE,
	ST_MSG_LEASE_BELOW,
	ST_LEASE_ADD,
	ST_LEASE_END,
	ST_MSG_STAT,
	ST_MSG_DELETE,
	ST_MSG_DELETE_LEASE,
	ST_MSG_RELEASE,
	ST_MSG_GET,
	ST_MSG_PEEK,
	ST_MSG_PEEK_DEAD,
	ST_MSG_PEEK_BY_ID,
	ST_MB_DELETE_DEDUP,
	ST_MB_DELETE_BINDINGS,
	ST_MSG_KILL,
	ST_MSG_KICK,
	ST_MSG_PURGE_STAT,
	ST_MSG_PURGE,
	ST_EXPIRE_SCAN,
	ST_NEXT_EXPIRY,
	ST_DEDUP_PUT,
	ST_DEDUP_FIND,
	ST_DEDUP_PRUNE,
	ST_BIND_LOAD,
	ST_BIND_ADD,
	ST_BIND_REMOVE,
	ST_ID_LOAD,
	ST_ID_RESERVE,
	ST_COUNT
};

/* The columns msg_from_row reads, in its order. */
#define MSG_COLS_AFTER_DELIVERIES                                              \
	" time_ns, ready_ns, expires_ns, pid, uid, gid, comm, headers,"        \
	" dedup, dead_reason, data"
#define MSG_COLS                                                               \
	"id, mailbox_id, state, priority, "                                    \
	"deliveries," MSG_COLS_AFTER_DELIVERIES

/* Whether the message row of the statement is leased (schema.c, v4). */
#define IS_LEASED  "EXISTS (SELECT 1 FROM lease WHERE msg_id = message.id)"
#define NOT_LEASED "NOT " IS_LEASED
/* MSG_COLS as callers see them: a leased row is LEASED, and its lease is
 * one more delivery. */
#define MSG_COLS_SEEN                                                          \
	"id, mailbox_id, CASE WHEN " IS_LEASED " THEN 1 ELSE state END,"       \
	" priority, deliveries + " IS_LEASED "," MSG_COLS_AFTER_DELIVERIES

/*
 * States are literals, not parameters: the planner can then match
 * "state = 0 AND ready_ns > 0" against the partial index message_delayed.
 */
static const char *const store_sql[ST_COUNT] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_MB_LOAD] = "SELECT id, name, owner_uid, gid, mode, lease_ms,"
		       " max_deliveries, max_msgs, max_bytes, ttl_ms, flags,"
		       " created_ns FROM mailbox ORDER BY id",
	[ST_MB_COUNTERS] = "SELECT mailbox_id, state, count(*),"
			   " sum(length(data)) FROM message"
			   " GROUP BY mailbox_id, state",
	/* State 1: written by builds before schema version 4. */
	[ST_MB_RESET_LEASED] = "UPDATE message SET state = 0"
			       " WHERE mailbox_id = ?1 AND state = 1",
	/* A lease voided by a restart is given back, and counted: as in
	 * store_msg_release, the message goes dead if that reaches its
	 * mailbox's max_deliveries (0: no limit). */
	[ST_LEASE_VOID_KILL] =
		"UPDATE message SET state = 2, dead_reason = 'max-deliveries',"
		" deliveries = deliveries + 1"
		" WHERE id IN (SELECT msg_id FROM lease) AND state = 0"
		" AND EXISTS (SELECT 1 FROM mailbox AS b"
		" WHERE b.id = message.mailbox_id AND b.max_deliveries > 0"
		" AND message.deliveries + 1 >= b.max_deliveries)"
		" RETURNING mailbox_id",
	[ST_LEASE_VOID_COUNT] = "UPDATE message"
				" SET deliveries = deliveries + 1"
				" WHERE id IN (SELECT msg_id FROM lease)"
				" AND state = 0",
	/* The WHERE keeps SQLite from its truncate optimisation, which
	 * writes the table's root page even when it is empty: an open with
	 * no lease to void then writes nothing, so that mboxd starts, and
	 * serves reads and drains, on a disk with no room left. */
	[ST_LEASE_VOID] = "DELETE FROM lease WHERE msg_id IS NOT NULL",
	[ST_MB_DELETE_LEASES] = "DELETE FROM lease WHERE mailbox_id = ?1",
	[ST_MB_INSERT] =
		"INSERT INTO mailbox (name, owner_uid, gid, mode,"
		" lease_ms, max_deliveries, max_msgs, max_bytes,"
		" ttl_ms, flags, created_ns)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
	[ST_MB_UPDATE] = "UPDATE mailbox SET owner_uid = ?2, gid = ?3,"
			 " mode = ?4, lease_ms = ?5, max_deliveries = ?6,"
			 " max_msgs = ?7, max_bytes = ?8, ttl_ms = ?9,"
			 " flags = ?10 WHERE id = ?1",
	[ST_MB_DELETE_MSGS] = "DELETE FROM message WHERE mailbox_id = ?1",
	[ST_MB_DELETE] = "DELETE FROM mailbox WHERE id = ?1",
	[ST_MB_DELAYED] = "SELECT count(*) FROM message WHERE mailbox_id = ?1"
			  " AND state = 0 AND ready_ns > 0 AND ready_ns > ?2"
			  " AND " NOT_LEASED,
	/* The head (lowest id) of each state/priority line is one index
	 * seek; the oldest message is among those 30 heads. */
	[ST_MB_OLDEST] = "SELECT min((SELECT m.time_ns FROM message AS m"
			 " WHERE m.mailbox_id = ?1 AND m.state = s.column1"
			 " AND m.priority = p.column1 ORDER BY m.id LIMIT 1))"
			 " FROM (VALUES (0), (1), (2)) AS s,"
			 " (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8),"
			 " (9)) AS p",
	[ST_MB_NEXT_READY] = "SELECT min(ready_ns) FROM message"
			     " WHERE mailbox_id = ?1 AND state = 0"
			     " AND ready_ns > 0 AND ready_ns > ?2"
			     " AND " NOT_LEASED,
	[ST_MSG_INSERT] = "INSERT INTO message (mailbox_id, state, priority,"
			  " deliveries, time_ns, ready_ns, expires_ns, pid,"
			  " uid, gid, comm, headers, dedup, data, id)"
			  " VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
			  " ?10, ?11, ?12, ?13, ?14)",
	/*
	 * The walk of a lease, from where the last one stopped (LeaseFrom):
	 * the rest of priority ?4 after id ?5, then the lower priorities.
	 * ready_ns and expires_ns are in message_queue: delayed and expired
	 * messages are skipped without reading their rows, and so are the
	 * leased ones, by a look-up in the small lease table.
	 */
	[ST_MSG_LEASE] = "SELECT " MSG_COLS " FROM message"
			 " WHERE mailbox_id = ?1 AND state = 0"
			 " AND priority = ?4 AND id > ?5"
			 " AND ready_ns <= ?2"
			 " AND (expires_ns = 0 OR expires_ns > ?2)"
			 " AND " NOT_LEASED " ORDER BY id LIMIT ?3",
	[ST_MSG_LEASE_BELOW] =
		"SELECT " MSG_COLS " FROM message"
		" WHERE mailbox_id = ?1 AND state = 0"
		" AND priority < ?4 AND ready_ns <= ?2"
		" AND (expires_ns = 0 OR expires_ns > ?2)"
		" AND " NOT_LEASED " ORDER BY priority DESC, id LIMIT ?3",
	[ST_LEASE_ADD] = "INSERT INTO lease (msg_id, mailbox_id)"
			 " VALUES (?1, ?2)",
	/* Ends the lease of message ?1 of mailbox ?2, if it has one. */
	[ST_LEASE_END] = "DELETE FROM lease"
			 " WHERE msg_id = ?1 AND mailbox_id = ?2",
	[ST_MSG_STAT] = "SELECT CASE WHEN " IS_LEASED " THEN 1 ELSE state END,"
			" length(data), deliveries + " IS_LEASED
			" FROM message WHERE id = ?1 AND mailbox_id = ?2",
	/* Its lease, if any, is the caller's: ST_MSG_DELETE_LEASE. */
	[ST_MSG_DELETE] = "DELETE FROM message WHERE id = ?1",
	[ST_MSG_DELETE_LEASE] = "DELETE FROM lease WHERE msg_id = ?1",
	/* After ST_LEASE_END: the lease it ended is one more delivery. */
	[ST_MSG_RELEASE] = "UPDATE message SET ready_ns = ?3,"
			   " deliveries = deliveries + 1"
			   " WHERE id = ?1 AND mailbox_id = ?2 AND state = 0"
			   " RETURNING priority",
	[ST_MSG_GET] = "SELECT " MSG_COLS_SEEN " FROM message"
		       " WHERE id = ?1 AND mailbox_id = ?2",
	/* Ready and leased messages are one line of the index, already in
	 * delivery order: no sort of the whole mailbox. */
	[ST_MSG_PEEK] = "SELECT " MSG_COLS_SEEN " FROM message"
			" WHERE mailbox_id = ?1 AND state = 0 AND id >= ?2"
			" ORDER BY priority DESC, id LIMIT ?3",
	[ST_MSG_PEEK_BY_ID] = "SELECT " MSG_COLS_SEEN " FROM message"
			      " WHERE mailbox_id = ?1 AND state = 0"
			      " AND id >= ?2 ORDER BY id LIMIT ?3",
	[ST_MSG_PEEK_DEAD] = "SELECT " MSG_COLS " FROM message"
			     " INDEXED BY message_queue"
			     " WHERE mailbox_id = ?1 AND state = 2"
			     " AND id >= ?2 ORDER BY id LIMIT ?3",
	[ST_MB_DELETE_DEDUP] = "DELETE FROM dedup WHERE mailbox_id = ?1",
	[ST_MB_DELETE_BINDINGS] = "DELETE FROM binding WHERE mailbox_id = ?1",
	/* A lease it ends (ST_MSG_DELETE_LEASE, after) was a delivery. */
	[ST_MSG_KILL] =
		"UPDATE message SET state = 2, dead_reason = ?2,"
		" deliveries = deliveries + " IS_LEASED " WHERE id = ?1",
	/* The dead line of the mailbox is in priority order in the index;
	 * only its ids are sorted, never the rows. */
	[ST_MSG_KICK] = "UPDATE message SET state = 0, deliveries = 0,"
			" ready_ns = 0, expires_ns = 0, dead_reason = NULL"
			" WHERE id IN (SELECT id FROM message"
			" INDEXED BY message_queue"
			" WHERE mailbox_id = ?1 AND state = 2"
			" ORDER BY id LIMIT ?2)",
	/* length(data) reads the size from the row header, never the
	 * payload's overflow pages. */
	[ST_MSG_PURGE_STAT] = "SELECT count(*), ifnull(sum(length(data)), 0)"
			      " FROM message INDEXED BY message_queue"
			      " WHERE mailbox_id = ?1 AND state = ?2"
			      " AND " NOT_LEASED,
	[ST_MSG_PURGE] = "DELETE FROM message INDEXED BY message_queue"
			 " WHERE mailbox_id = ?1 AND state = ?2"
			 " AND " NOT_LEASED,
	/* A prefix of message_expiry. */
	[ST_EXPIRE_SCAN] = "SELECT id, mailbox_id, expires_ns FROM message"
			   " WHERE state = 0 AND expires_ns > 0"
			   " AND expires_ns <= ?1 AND " NOT_LEASED
			   " ORDER BY expires_ns LIMIT ?2",
	/* The first entry of message_expiry that is not leased. */
	[ST_NEXT_EXPIRY] = "SELECT expires_ns FROM message"
			   " WHERE state = 0 AND expires_ns > 0"
			   " AND " NOT_LEASED " ORDER BY expires_ns LIMIT 1",
	[ST_DEDUP_PUT] = "INSERT OR REPLACE INTO dedup"
			 " (mailbox_id, key, msg_id, time_ns)"
			 " VALUES (?1, ?2, ?3, ?4)",
	[ST_DEDUP_FIND] = "SELECT msg_id FROM dedup"
			  " WHERE mailbox_id = ?1 AND key = ?2"
			  " AND time_ns >= ?3",
	[ST_DEDUP_PRUNE] = "DELETE FROM dedup WHERE time_ns < ?1",
	/* The last id given out or reserved (see store_next_id). */
	[ST_ID_LOAD] = "SELECT coalesce((SELECT last FROM id_reserve"
		       " WHERE id = 1), 0),"
		       " coalesce((SELECT max(id) FROM message), 0)",
	/* REPLACE: a row deleted behind our back comes back. */
	[ST_ID_RESERVE] = "INSERT OR REPLACE INTO id_reserve (id, last)"
			  " VALUES (1, ?1)",
	[ST_BIND_LOAD] = "SELECT mailbox_id, pattern FROM binding",
	[ST_BIND_ADD] = "INSERT INTO binding (mailbox_id, pattern)"
			" VALUES (?1, ?2)",
	[ST_BIND_REMOVE] = "DELETE FROM binding"
			   " WHERE mailbox_id = ?1 AND pattern = ?2",
};

struct Store {
	sqlite3 *db;
	WalBuf *walbuf; /* the VFS db writes its WAL through */
	/* Prepared on first use: a broker that never peeks, purges or binds
	 * does not hold those programs (idle RSS, doc/performance.md). */
	sqlite3_stmt *stmt[ST_COUNT];
	/* What stmt_get hands out for one that cannot be prepared: it fails
	 * when stepped, with unprepared_why, down the usual error paths. */
	sqlite3_stmt *unprepared;
	char unprepared_why[256];
	StoreSync sync;
	int lock_fd; /* flock'd: one mboxd per database */

	bool in_txn;	/* store_begin succeeded, no commit/rollback yet */
	bool txn_wrote; /* the open transaction changed rows */
	bool txn_adds;	/* it posted, or made a mailbox or a binding */
	void (*txn_end_fn)(void *ctx, bool committed); /* store_on_txn_end */
	void *txn_end_ctx;
	bool unsynced;	    /* committed frames not yet fsync'd (FULL mode) */
	int txn_err;	    /* < 0: SQLite rolled the open transaction back */
	int failed;	    /* < 0: a WAL fsync failed, writes are refused */
	bool commit_unsure; /* the last store_commit failed in its fsync */
	int64_t max_pages_default; /* SQLite's max_page_count: no cap */
	/* Message ids (see store_next_id): the next one to give out, the
	 * last one id_reserve holds as committed, and the one the open
	 * transaction wrote there (0: none). */
	int64_t next_msg_id;
	int64_t ids_reserved;
	int64_t ids_reserved_txn;
	/* Under a cap (store_set_max_bytes): PRAGMA max_page_count for the
	 * writes that add data [CAP_ADD] and for the rest [CAP_ALL], and the
	 * two PRAGMAs that tell an add how much room is left; cap_in is the
	 * max_page_count in force, -1 when none was set yet. */
	sqlite3_stmt *cap_stmt[4];
	int cap_in;
	int64_t cap_pages;   /* the cap in pages, 0 = none */
	int64_t cap_reserve; /* pages adds leave free for draining */
	int64_t cap_page_size;
	/* While cap_known: at least this many pages may still be taken, the
	 * releases' share not deducted (cap_room). Set by a measure, lowered
	 * by each add after it, forgotten by any other write. */
	bool cap_known;
	int64_t cap_known_pages;
	/* The size a hold (store_hold_size) allows, 0 when not held: held
	 * again, the store keeps it rather than growing by the same margin
	 * once more. */
	int64_t hold_pages;
	/* The WAL's own bound in pages (store_set_wal_max), 0 = none. */
	int64_t wal_max_pages;
	unsigned in_callback; /* depth of StoreMsgFn calls */
	bool lease_clipped;   /* see store_lease_clipped */

	Entry **by_name; /* n_mb entries, strcmp order */
	Entry **by_id;	 /* n_mb entries, id order */
	size_t n_mb, cap_mb;
	/* The n_leased of every linked entry, summed: a cap counts the
	 * room the releases of all leases need on every post and lease
	 * call, which must not walk every mailbox (store_leases_held). */
	uint64_t n_leased_all;
	OwnerCount *owners; /* n_owners, cap_mb of room */
	size_t n_owners;
	Entry **journal; /* entries touched by the open transaction */
	size_t n_journal, cap_journal;
	BindUndo *bundo; /* binding changes of the open transaction */
	size_t n_bundo, cap_bundo;

	char errmsg[512];
	char txn_errmsg[512]; /* errmsg when txn_err was set */
	char failmsg[512];    /* errmsg when failed was set */
};

static const char store_empty[1];

bool
store_lease_clipped(const Store *s)
{
	return s->lease_clipped;
}

int
store_setup_process(void)
{
	return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK ? 0
								       : -EBUSY;
}

/* ------------------------------------------------------------------ */
/* Errors */

__attribute__((format(printf, 3, 4))) static int
store_error(Store *s, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
	va_end(ap);
	return err;
}

/*
 * The errno behind an SQLITE_IOERR. SQLite records it for the connection
 * only on some paths (not when COMMIT's WAL write fails); for a failed
 * write, fall back on the last errno of the WAL file, then of the
 * database file.
 */
static int
store_sys_errno(Store *s, int rc)
{
	sqlite3_file *wal = NULL;
	int sys = sqlite3_system_errno(s->db);

	if (sys != 0 ||
	    (rc != SQLITE_IOERR_WRITE && rc != SQLITE_IOERR_FSYNC &&
	     rc != SQLITE_IOERR_TRUNCATE && rc != SQLITE_IOERR_SHMSIZE))
		return sys;
	if (sqlite3_file_control(s->db, "main", SQLITE_FCNTL_JOURNAL_POINTER,
				 &wal) == SQLITE_OK &&
	    wal && wal->pMethods &&
	    wal->pMethods->xFileControl(wal, SQLITE_FCNTL_LAST_ERRNO, &sys) ==
		    SQLITE_OK &&
	    sys != 0)
		return sys;
	if (sqlite3_file_control(s->db, "main", SQLITE_FCNTL_LAST_ERRNO,
				 &sys) != SQLITE_OK)
		sys = 0;
	return sys;
}

/*
 * Map a failed SQLite call to a negative errno and keep SQLite's text.
 * A write that failed for want of space is -ENOSPC whether SQLite says
 * SQLITE_FULL (ENOSPC from write(2)) or an I/O error whose errno means
 * the same (EDQUOT, EFBIG from RLIMIT_FSIZE).
 */
static int
store_sql_error(Store *s, int rc, const char *what)
{
	int sys = 0;
	int err;

	if ((rc & 0xff) == SQLITE_IOERR)
		sys = store_sys_errno(s, rc);

	switch (rc & 0xff) {
	case SQLITE_FULL:
		err = -ENOSPC;
		break;
	case SQLITE_IOERR:
		err = (sys == ENOSPC || sys == EDQUOT || sys == EFBIG) ? -ENOSPC
								       : -EIO;
		break;
	case SQLITE_NOMEM:
		err = -ENOMEM;
		break;
	default:
		err = -EIO;
		break;
	}
	if ((rc & 0xff) == SQLITE_IOERR && sys != 0)
		store_error(s, err, "%s: %s (%s)", what, sqlite3_errmsg(s->db),
			    strerror(sys));
	else
		store_error(s, err, "%s: %s", what, sqlite3_errmsg(s->db));
	if (s->in_txn && !s->txn_err && sqlite3_get_autocommit(s->db)) {
		s->txn_err = err;
		memcpy(s->txn_errmsg, s->errmsg, sizeof(s->txn_errmsg));
	}
	return err;
}

/* ------------------------------------------------------------------ */
/* Statements */

/* Statement id, prepared now if this is its first use. Never NULL: one
 * that cannot be prepared is s->unprepared, which takes the binds of
 * any of them and fails when stepped, saying why. */
static sqlite3_stmt *
stmt_get(Store *s, int id)
{
	int rc;

	if (s->stmt[id])
		return s->stmt[id];
	rc = sqlite3_prepare_v3(s->db, store_sql[id], -1,
				SQLITE_PREPARE_PERSISTENT, &s->stmt[id], NULL);
	if (rc == SQLITE_OK)
		return s->stmt[id];
	snprintf(s->unprepared_why, sizeof(s->unprepared_why),
		 "cannot prepare a statement: %s", sqlite3_errmsg(s->db));
	return s->unprepared;
}

/* SQL function mboxd_unprepared(...): fails with what stmt_get saw. */
static void
unprepared_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	const Store *s = sqlite3_user_data(ctx);

	(void)argc;
	(void)argv;
	sqlite3_result_error(ctx, s->unprepared_why, -1);
}

static void
stmt_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* Run a statement that yields no row; 0 or negative errno. */
static int
stmt_run(Store *s, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	int r = 0;

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = store_sql_error(s, rc, what);
	stmt_done(st);
	return r;
}

/* Bind a value kept as uint64 in memory; SQLite stores the bit pattern. */
static int
bind_u64(sqlite3_stmt *st, int i, uint64_t v)
{
	return sqlite3_bind_int64(st, i, (sqlite3_int64)v);
}

static int64_t
clamp_i64(uint64_t v)
{
	return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

/* ------------------------------------------------------------------ */
/* Mailbox index: two sorted arrays of the same entries. */

static size_t
index_pos_name(const Store *s, const char *name, bool *found)
{
	size_t lo = 0, hi = s->n_mb;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(s->by_name[mid]->mb.name, name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < s->n_mb && strcmp(s->by_name[lo]->mb.name, name) == 0;
	return lo;
}

static size_t
index_pos_id(const Store *s, int64_t id, bool *found)
{
	size_t lo = 0, hi = s->n_mb;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->by_id[mid]->mb.id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < s->n_mb && s->by_id[lo]->mb.id == id;
	return lo;
}

/* Make room for n entries. The arrays never shrink, so re-linking the
 * entries a rolled-back transaction deleted can never fail. */
static int
index_reserve(Store *s, size_t n)
{
	OwnerCount *o;
	Entry **a;
	size_t cap;

	if (n <= s->cap_mb)
		return 0;
	cap = s->cap_mb ? s->cap_mb * 2 : 64;
	while (cap < n)
		cap *= 2;
	a = realloc(s->by_name, cap * sizeof(*a));
	if (!a)
		return store_error(s, -ENOMEM, "out of memory");
	s->by_name = a;
	a = realloc(s->by_id, cap * sizeof(*a));
	if (!a)
		return store_error(s, -ENOMEM, "out of memory");
	s->by_id = a;
	o = realloc(s->owners, cap * sizeof(*o));
	if (!o)
		return store_error(s, -ENOMEM, "out of memory");
	s->owners = o;
	s->cap_mb = cap;
	return 0;
}

static size_t
owner_pos(const Store *s, uint32_t uid, bool *found)
{
	size_t lo = 0, hi = s->n_owners;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->owners[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < s->n_owners && s->owners[lo].uid == uid;
	return lo;
}

/* Count linked entry e for its owner; room was reserved. */
static void
owner_add(Store *s, Entry *e)
{
	bool found;
	size_t i = owner_pos(s, e->mb.owner_uid, &found);

	e->counted_uid = e->mb.owner_uid;
	if (found) {
		s->owners[i].n++;
		return;
	}
	assert(s->n_owners < s->cap_mb);
	memmove(&s->owners[i + 1], &s->owners[i],
		(s->n_owners - i) * sizeof(OwnerCount));
	s->owners[i] = (OwnerCount){e->mb.owner_uid, 1};
	s->n_owners++;
}

/* Stop counting e, which owner_add counted. */
static void
owner_sub(Store *s, const Entry *e)
{
	bool found;
	size_t i = owner_pos(s, e->counted_uid, &found);

	assert(found && s->owners[i].n > 0);
	if (--s->owners[i].n)
		return;
	memmove(&s->owners[i], &s->owners[i + 1],
		(s->n_owners - i - 1) * sizeof(OwnerCount));
	s->n_owners--;
}

/* Linked e's owner_uid may have changed (CHOWN, or put back): recount.
 * The old count goes first, so the table never outgrows its room. */
static void
owner_sync(Store *s, Entry *e)
{
	if (e->counted_uid == e->mb.owner_uid)
		return;
	owner_sub(s, e);
	owner_add(s, e);
}

/* Link e; room was reserved and its name and id are not linked yet. */
static void
index_insert(Store *s, Entry *e)
{
	bool found;
	size_t i;

	assert(s->n_mb < s->cap_mb);
	i = index_pos_name(s, e->mb.name, &found);
	memmove(&s->by_name[i + 1], &s->by_name[i],
		(s->n_mb - i) * sizeof(Entry *));
	s->by_name[i] = e;
	i = index_pos_id(s, e->mb.id, &found);
	memmove(&s->by_id[i + 1], &s->by_id[i],
		(s->n_mb - i) * sizeof(Entry *));
	s->by_id[i] = e;
	s->n_mb++;
	s->n_leased_all += e->mb.n_leased;
	owner_add(s, e);
}

/* Unlink e, which is linked. */
static void
index_remove(Store *s, Entry *e)
{
	bool in_name, in_id;
	size_t i = index_pos_name(s, e->mb.name, &in_name);
	size_t j = index_pos_id(s, e->mb.id, &in_id);

	assert(in_name && s->by_name[i] == e && in_id && s->by_id[j] == e);
	memmove(&s->by_name[i], &s->by_name[i + 1],
		(s->n_mb - i - 1) * sizeof(Entry *));
	memmove(&s->by_id[j], &s->by_id[j + 1],
		(s->n_mb - j - 1) * sizeof(Entry *));
	s->n_mb--;
	s->n_leased_all -= e->mb.n_leased;
	owner_sub(s, e);
}

/* ------------------------------------------------------------------ */
/* Settings, counters, the transaction journal */

static MbSettings
mbset_from(const StoreMailbox *mb)
{
	MbSettings v = {
		.owner_uid = mb->owner_uid,
		.gid = mb->gid,
		.mode = mb->mode,
		.lease_ms = mb->lease_ms,
		.max_deliveries = mb->max_deliveries,
		.max_msgs = mb->max_msgs,
		.max_bytes = mb->max_bytes,
		.ttl_ms = mb->ttl_ms,
		.flags = mb->flags,
	};
	return v;
}

static void
mbset_apply(StoreMailbox *mb, const MbSettings *v)
{
	mb->owner_uid = v->owner_uid;
	mb->gid = v->gid;
	mb->mode = v->mode;
	mb->lease_ms = v->lease_ms;
	mb->max_deliveries = v->max_deliveries;
	mb->max_msgs = v->max_msgs;
	mb->max_bytes = v->max_bytes;
	mb->ttl_ms = v->ttl_ms;
	mb->flags = v->flags;
}

static int
mbset_check(Store *s, const StoreMailbox *mb)
{
	if (mb->mode > 0777)
		return store_error(s, -EINVAL, "mode %o is not in 0..0777",
				   mb->mode);
	if (mb->lease_ms == 0)
		return store_error(s, -EINVAL, "lease must be > 0");
	return 0;
}

static bool
name_valid(const char *name, size_t size)
{
	size_t n = strnlen(name, size);

	if (n == 0 || n > MBOX_NAME_MAX || n == size)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return false;
	}
	return true;
}

static Entry *
entry_free(Entry *e)
{
	if (!e)
		return NULL;
	for (size_t i = 0; i < e->n_pat; i++)
		free(e->pat[i]);
	free(e->pat);
	free(e);
	return NULL;
}

/* Position of pattern in e->pat (where it would go if absent). */
static size_t
pat_pos(const Entry *e, const char *pattern, bool *found)
{
	size_t lo = 0, hi = e->n_pat;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(e->pat[mid], pattern) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < e->n_pat && strcmp(e->pat[lo], pattern) == 0;
	return lo;
}

static int
pat_reserve(Store *s, Entry *e, size_t n)
{
	char **a;
	size_t cap;

	if (n <= e->cap_pat)
		return 0;
	cap = e->cap_pat ? e->cap_pat * 2 : 4;
	while (cap < n)
		cap *= 2;
	a = realloc(e->pat, cap * sizeof(*a));
	if (!a)
		return store_error(s, -ENOMEM, "out of memory");
	e->pat = a;
	e->cap_pat = cap;
	return 0;
}

/* Insert pattern (owned by e from now on) at i; room was reserved. */
static void
pat_insert(Entry *e, size_t i, char *pattern)
{
	assert(e->n_pat < e->cap_pat);
	memmove(&e->pat[i + 1], &e->pat[i], (e->n_pat - i) * sizeof(char *));
	e->pat[i] = pattern;
	e->n_pat++;
}

/* Unlink the pattern at i and hand it back; the caller owns it. */
static char *
pat_take(Entry *e, size_t i)
{
	char *p = e->pat[i];

	memmove(&e->pat[i], &e->pat[i + 1],
		(e->n_pat - i - 1) * sizeof(char *));
	e->n_pat--;
	return p;
}

static int
bundo_reserve(Store *s)
{
	BindUndo *a;
	size_t cap;

	if (s->n_bundo < s->cap_bundo)
		return 0;
	cap = s->cap_bundo ? s->cap_bundo * 2 : 16;
	a = realloc(s->bundo, cap * sizeof(*a));
	if (!a)
		return store_error(s, -ENOMEM, "out of memory");
	s->bundo = a;
	s->cap_bundo = cap;
	return 0;
}

/* The transaction committed: patterns it removed can go. */
static void
bundo_commit(Store *s)
{
	for (size_t i = 0; i < s->n_bundo; i++)
		if (!s->bundo[i].added)
			free(s->bundo[i].pattern);
	s->n_bundo = 0;
}

/* The transaction was rolled back: replay its binding changes backwards.
 * Runs before journal_undo, while the entries it created still exist. */
static void
bundo_undo(Store *s)
{
	for (size_t i = s->n_bundo; i-- > 0;) {
		BindUndo *u = &s->bundo[i];
		bool found;
		size_t j = pat_pos(u->e, u->pattern, &found);

		if (u->added) {
			assert(found && u->e->pat[j] == u->pattern);
			free(pat_take(u->e, j));
		} else {
			assert(!found);
			pat_insert(u->e, j, u->pattern);
		}
	}
	s->n_bundo = 0;
}

static int
journal_reserve(Store *s, size_t more)
{
	Entry **a;
	size_t cap;

	if (s->n_journal + more <= s->cap_journal)
		return 0;
	cap = s->cap_journal ? s->cap_journal * 2 : 16;
	while (cap < s->n_journal + more)
		cap *= 2;
	a = realloc(s->journal, cap * sizeof(*a));
	if (!a)
		return store_error(s, -ENOMEM, "out of memory");
	s->journal = a;
	s->cap_journal = cap;
	return 0;
}

/* Snapshot e before the open transaction first changes it. Done before
 * any SQL runs, so that running out of memory here changes nothing. */
static int
journal_touch(Store *s, Entry *e)
{
	int r;

	if (e->txn & ENTRY_TOUCHED)
		return 0;
	r = journal_reserve(s, 1);
	if (r < 0)
		return r;
	e->saved = e->disk;
	e->saved_cnt = (MbCounters){e->mb.n_ready, e->mb.n_leased, e->mb.n_dead,
				    e->mb.bytes};
	e->txn = ENTRY_TOUCHED;
	s->journal[s->n_journal++] = e;
	return 0;
}

/* The transaction committed: forget the snapshots, free what it deleted. */
static void
journal_commit(Store *s)
{
	for (size_t i = 0; i < s->n_journal; i++) {
		Entry *e = s->journal[i];

		if (e->txn & ENTRY_DELETED)
			entry_free(e);
		else
			e->txn = 0;
	}
	s->n_journal = 0;
}

/* The transaction was rolled back: put memory back as it was at BEGIN. */
static void
journal_undo(Store *s)
{
	bundo_undo(s);
	/* Unlink creations first, so that re-linking deletions stays within
	 * the number of entries at BEGIN, which the arrays had room for. */
	for (size_t i = 0; i < s->n_journal; i++) {
		Entry *e = s->journal[i];

		if (!(e->txn & ENTRY_CREATED))
			continue;
		if (!(e->txn & ENTRY_DELETED))
			index_remove(s, e);
		entry_free(e);
		s->journal[i] = NULL;
	}
	for (size_t i = 0; i < s->n_journal; i++) {
		Entry *e = s->journal[i];

		if (!e)
			continue;
		e->disk = e->saved;
		mbset_apply(&e->mb, &e->saved);
		e->mb.n_ready = e->saved_cnt.n_ready;
		/* A deleted entry's count left the sum with index_remove;
		 * index_insert below brings the saved one back. */
		if (!(e->txn & ENTRY_DELETED))
			s->n_leased_all -= e->mb.n_leased;
		e->mb.n_leased = e->saved_cnt.n_leased;
		if (!(e->txn & ENTRY_DELETED))
			s->n_leased_all += e->mb.n_leased;
		e->mb.n_dead = e->saved_cnt.n_dead;
		e->mb.bytes = e->saved_cnt.bytes;
		/* A walk of the rolled-back transaction may have moved it past
		 * rows that are not leased after all. */
		e->from.known = false;
		if (e->txn & ENTRY_DELETED)
			index_insert(s, e);
		else
			owner_sync(s, e);
		e->txn = 0;
	}
	s->n_journal = 0;
}

/* Row (prio, id) of e became deliverable, or will at ready_ns (0: now):
 * the next walk must not start after it. */
static void
lease_from_lower(Entry *e, double prio, int64_t id, int64_t ready_ns)
{
	LeaseFrom *f = &e->from;

	if (!f->known)
		return;
	if (prio > f->prio || (prio == f->prio && id <= f->id)) {
		f->prio = prio;
		f->id = id - 1;
	}
	if (ready_ns > 0 && ready_ns < f->until)
		f->until = ready_ns;
}

static void
counter_sub(uint64_t *c, uint64_t n)
{
	*c = *c > n ? *c - n : 0;
}

/* n more, or fewer, leases held in mb, which is linked: the two change
 * n_leased and Store.n_leased_all together. */
static void
leased_add(Store *s, StoreMailbox *mb, uint64_t n)
{
	mb->n_leased += n;
	s->n_leased_all += n;
}

/* Takes off the sum only what counter_sub took off mb. */
static void
leased_sub(Store *s, StoreMailbox *mb, uint64_t n)
{
	uint64_t before = mb->n_leased;

	counter_sub(&mb->n_leased, n);
	s->n_leased_all -= before - mb->n_leased;
}

static void
counters_remove(Store *s, StoreMailbox *mb, int state, uint64_t len)
{
	switch (state) {
	case STORE_READY:
		counter_sub(&mb->n_ready, 1);
		break;
	case STORE_LEASED:
		leased_sub(s, mb, 1);
		break;
	default:
		counter_sub(&mb->n_dead, 1);
		break;
	}
	counter_sub(&mb->bytes, len);
}

/* ------------------------------------------------------------------ */
/* Transactions */

static int
store_check_read(Store *s, const StoreMailbox *mb)
{
	if (s->in_callback)
		return store_error(
			s, -EBUSY,
			"the store was called from its own callback");
	if (mb && (entry_of(mb)->txn & ENTRY_DELETED))
		return store_error(s, -ENOENT, "mailbox %s was deleted",
				   mb->name);
	return 0;
}

/* Which size limit a write runs under (see store_set_max_bytes), and
 * the statements that measure the room left. */
enum { CAP_ADD, CAP_ALL, CAP_PAGE_COUNT, CAP_FREELIST, CAP_N };
_Static_assert(CAP_N == sizeof(((Store *)0)->cap_stmt) / sizeof(sqlite3_stmt *),
	       "Store.cap_stmt holds one statement per CAP_*");

static int
store_cap_use(Store *s, int which)
{
	sqlite3_stmt *st = s->cap_stmt[which];
	int rc;

	if (!st || s->cap_in == which)
		return 0;
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW)
		return store_sql_error(s, rc, "set the size cap");
	s->cap_in = which;
	return 0;
}

static int
store_check_write_cap(Store *s, const StoreMailbox *mb, int cap)
{
	int r = store_check_read(s, mb);

	if (r < 0)
		return r;
	/* Any write but an add may take pages no need counted. */
	if (cap != CAP_ADD)
		s->cap_known = false;
	if (!s->in_txn)
		return store_error(s, -EINVAL,
				   "no transaction is open (store_begin)");
	if (s->txn_err) {
		store_error(s, s->txn_err,
			    "the transaction was rolled back by an earlier "
			    "error: %s",
			    s->txn_errmsg);
		return s->txn_err;
	}
	return store_cap_use(s, cap);
}

/* A write that drains or rearranges: it may use the cap's reserve. */
static int
store_check_write(Store *s, const StoreMailbox *mb)
{
	return store_check_write_cap(s, mb, CAP_ALL);
}

/* Before a draining write to mb's messages: the check above, then mb's
 * counters snapshotted for a rollback. */
static int
mb_write_begin(Store *s, StoreMailbox *mb)
{
	int r = store_check_write(s, mb);

	return r < 0 ? r : journal_touch(s, entry_of(mb));
}

static int
cap_count(Store *s, int which, int64_t *out)
{
	sqlite3_stmt *st = s->cap_stmt[which];
	int rc = sqlite3_step(st);

	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? 0
				: store_sql_error(s, rc, "measure the store");
}

/* What the releases of the leases held may need, in pages. */
static int64_t
cap_release_pages(const Store *s)
{
	int64_t release =
		(int64_t)store_leases_held(s) * STORE_CAP_RELEASE_BYTES;

	return (release + s->cap_page_size - 1) / s->cap_page_size;
}

/* The pages writes may still take under the cap, its reserve included:
 * free-list pages plus those the file may still grow by, less what the
 * releases of the leases held may need. No write takes that but a
 * release: a batch giving leases back must never find the store full
 * (cap_lease_room). Measured, and remembered for the adds that follow
 * (cap_add_room). */
static int
cap_room(Store *s, int64_t *room)
{
	int64_t pages = 0, free_pages = 0;
	int r;

	r = cap_count(s, CAP_PAGE_COUNT, &pages);
	if (r == 0)
		r = cap_count(s, CAP_FREELIST, &free_pages);
	if (r < 0)
		return r;
	s->cap_known = true;
	s->cap_known_pages = free_pages + s->cap_pages - pages;
	*room = s->cap_known_pages - cap_release_pages(s);
	return 0;
}

/*
 * Whether an add of about bytes leaves the cap's reserve free. The
 * max_page_count of CAP_ADD bounds only the growth of the file, and
 * SQLite raises it to the file's size: once the drains have grown the
 * file into the reserve, adds could take every page the acks free, and
 * the reserve would wear away round after round. So the room is counted
 * as free-list pages plus the pages the file may still grow by, and an
 * add that would leave less than the reserve is refused before it
 * touches anything.
 */
static int
cap_add_room(Store *s, uint64_t bytes)
{
	int64_t room = 0, need;
	uint64_t per_page = (uint64_t)s->cap_page_size - 4; /* overflow */
	int r;

	if (!s->cap_pages)
		return 0;
	bytes += STORE_CAP_ROW_BYTES;
	need = (int64_t)((bytes + per_page - 1) / per_page) +
	       STORE_CAP_SPLIT_PAGES;
	/* Measuring before every post (two PRAGMAs) made a post under a
	 * cap cost 17 % more than one without (doc/performance.md). Since
	 * the last measure only adds ran, each taking at most its need,
	 * which is what admitting one assumes anyway: the room counted down
	 * from that measure is a bound good enough to admit the next. Only
	 * a fresh measure refuses. */
	if (s->cap_known && s->cap_known_pages - cap_release_pages(s) - need >=
				    s->cap_reserve) {
		s->cap_known_pages -= need;
		return 0;
	}
	r = cap_room(s, &room);
	if (r < 0)
		return r;
	if (room - need >= s->cap_reserve) {
		s->cap_known_pages -= need;
		return 0;
	}
	return store_error(s, -ENOSPC,
			   "the store is full (at max-store-size, or held at "
			   "its size on a full disk): it keeps the last "
			   "%lld pages for draining (%lld pages free, this "
			   "needs about %lld)",
			   (long long)s->cap_reserve, (long long)room,
			   (long long)need);
}

/* A write that adds about bytes: it must leave the cap's reserve free. */
static int
store_check_add(Store *s, const StoreMailbox *mb, uint64_t bytes)
{
	int r = store_check_write_cap(s, mb, CAP_ADD);

	if (r == 0)
		s->txn_adds = true;
	return r < 0 ? r : cap_add_room(s, bytes);
}

/*
 * Under a cap, lower *max to the leases whose rows fit in the room left,
 * the reserve included: adds leave it free, and acks give it back. Were
 * a lease's INSERT to fail for want of room, SQLite would roll back the
 * whole transaction, the acks of the same batch with it, and a full
 * store would never drain. What every lease held, the new ones included,
 * may need for its release stays free too: a batch of nacks with a delay
 * must commit as well. -ENOBUFS when not one fits (the holders of the
 * leases that took the room must ack first).
 */
static int
cap_lease_room(Store *s, size_t *max)
{
	int64_t room = 0, bytes, fit;
	int r;

	if (!s->cap_pages)
		return 0;
	r = cap_room(s, &room);
	s->cap_known = false; /* the leases' rows take pages of it */
	if (r < 0)
		return r;
	room -= STORE_CAP_SPLIT_PAGES;
	bytes = room * s->cap_page_size;
	fit = bytes > 0 ? bytes / (STORE_CAP_LEASE_BYTES +
				   STORE_CAP_RELEASE_BYTES)
			: 0;
	if (fit <= 0)
		return store_error(s, -ENOBUFS,
				   "the store is full: no room left for "
				   "leases (%lld pages free); acks of leased "
				   "messages make room",
				   (long long)(room + STORE_CAP_SPLIT_PAGES));
	if ((int64_t)*max > fit) {
		*max = (size_t)fit;
		s->lease_clipped = true;
	}
	return 0;
}

/*
 * End the open transaction without committing: ROLLBACK unless SQLite
 * already did it, then restore memory. Returns 0 or the ROLLBACK error.
 */
static int
txn_abort(Store *s)
{
	int r = 0;

	if (!sqlite3_get_autocommit(s->db)) {
		r = stmt_run(s, stmt_get(s, ST_ROLLBACK), "rollback");
		if (r < 0 && !sqlite3_get_autocommit(s->db)) {
			/* A transaction SQLite cannot end: later writes would
			 * join it. Refuse them; memory is restored anyway. */
			s->failed = r;
			memcpy(s->failmsg, s->errmsg, sizeof(s->failmsg));
		}
	}
	journal_undo(s);
	/* Ids given out stay given out (a gap); the reservation the
	 * transaction wrote is gone, so the next insert makes it again. */
	s->ids_reserved_txn = 0;
	s->in_txn = false;
	s->txn_err = 0;
	s->txn_wrote = false;
	s->txn_adds = false;
	if (s->txn_end_fn)
		s->txn_end_fn(s->txn_end_ctx, false);
	return r;
}

/* The open transaction holds a write the store could not finish (or undo)
 * and must not commit: store_commit refuses it with err and the current
 * error text, and rolls it back. */
static void
txn_refuse(Store *s, int err)
{
	if (s->in_txn && !s->txn_err) {
		s->txn_err = err;
		memcpy(s->txn_errmsg, s->errmsg, sizeof(s->txn_errmsg));
	}
}

/* fsync the WAL: makes every committed frame durable. */
static int
store_sync_wal(Store *s)
{
	sqlite3_file *f = NULL;
	int rc;

	rc = sqlite3_file_control(s->db, "main", SQLITE_FCNTL_JOURNAL_POINTER,
				  &f);
	if (rc != SQLITE_OK)
		return store_sql_error(s, rc, "cannot reach the WAL file");
	if (!f || !f->pMethods)
		return 0; /* no WAL open: nothing was written */
	rc = f->pMethods->xSync(f, SQLITE_SYNC_NORMAL);
	if (rc != SQLITE_OK) {
		int sys = 0;

		if (f->pMethods->xFileControl(f, SQLITE_FCNTL_LAST_ERRNO,
					      &sys) != SQLITE_OK)
			sys = 0;

		/* After a failed fsync the kernel may have dropped the dirty
		 * pages: retrying would "succeed" without the data. What was
		 * committed may not be on disk; stop writing. */
		s->failed = (sys == ENOSPC || sys == EDQUOT) ? -ENOSPC : -EIO;
		store_error(s, s->failed,
			    "fsync of the write-ahead log failed (%s); the "
			    "store refuses writes until mboxd restarts",
			    sys ? strerror(sys) : "I/O error");
		memcpy(s->failmsg, s->errmsg, sizeof(s->failmsg));
		s->commit_unsure = true;
		return s->failed;
	}
	s->unsynced = false;
	return 0;
}

int
store_begin(Store *s)
{
	int r;

	if (s->in_callback)
		return store_error(
			s, -EBUSY,
			"the store was called from its own callback");
	if (s->in_txn)
		return 0;
	if (s->failed)
		return store_error(s, s->failed,
				   "the store failed earlier and refuses "
				   "writes: %s",
				   s->failmsg);
	r = stmt_run(s, stmt_get(s, ST_BEGIN), "begin");
	if (r < 0)
		return r;
	s->in_txn = true;
	s->txn_err = 0;
	s->txn_wrote = false;
	s->txn_adds = false;
	s->cap_known = false; /* other programs may have written since */
	return 0;
}

bool
store_in_txn(const Store *s)
{
	return s->in_txn;
}

void
store_on_txn_end(Store *s, void (*fn)(void *ctx, bool committed), void *ctx)
{
	s->txn_end_fn = fn;
	s->txn_end_ctx = ctx;
}

bool
store_txn_adds(const Store *s)
{
	return s->in_txn && s->txn_adds;
}

/*
 * Non-durable commits leave s->unsynced set; the next durable commit
 * fsyncs the WAL, which covers them. A failed fsync happens after COMMIT:
 * the changes are in the database (and the counters say so), yet the
 * caller is told -EIO and must answer as if they were not done; the
 * store then refuses writes (see store_sync_wal).
 */
int
store_commit(Store *s, bool durable)
{
	int r, rc;

	s->commit_unsure = false;
	if (s->in_callback)
		return store_error(
			s, -EBUSY,
			"the store was called from its own callback");
	if (!s->in_txn)
		return 0;
	if (s->txn_err) {
		r = s->txn_err;
		txn_abort(s);
		return store_error(s, r, "commit refused: %s", s->txn_errmsg);
	}
	rc = sqlite3_step(stmt_get(s, ST_COMMIT));
	if (rc != SQLITE_DONE) {
		r = store_sql_error(s, rc, "commit");
		stmt_done(stmt_get(s, ST_COMMIT));
		txn_abort(s);
		return r;
	}
	stmt_done(stmt_get(s, ST_COMMIT));
	s->in_txn = false;
	if (s->txn_wrote)
		s->unsynced = true;
	s->txn_wrote = false;
	s->txn_adds = false;
	bundo_commit(s);
	journal_commit(s);
	if (s->ids_reserved_txn)
		s->ids_reserved = s->ids_reserved_txn;
	s->ids_reserved_txn = 0;
	if (s->txn_end_fn)
		s->txn_end_fn(s->txn_end_ctx, true);
	if (durable && s->sync == STORE_SYNC_FULL && s->unsynced)
		return store_sync_wal(s);
	return 0;
}

bool
store_commit_unsure(const Store *s)
{
	return s->commit_unsure;
}

int
store_rollback(Store *s)
{
	if (s->in_callback)
		return store_error(
			s, -EBUSY,
			"the store was called from its own callback");
	if (!s->in_txn)
		return 0;
	return txn_abort(s);
}

void
store_release_memory(Store *s)
{
	if (!s->in_txn) {
		sqlite3_db_release_memory(s->db);
		walbuf_release_memory(s->walbuf);
	}
}

int
store_wal_empty(Store *s)
{
	int rc;

	if (s->in_txn)
		return store_error(s, -EBUSY, "a transaction is open");
	/* After a failed fsync, frames of unknown durability stay where
	 * recovery checks them. */
	if (s->failed)
		return store_error(s, s->failed, "%s", s->failmsg);
	rc = sqlite3_wal_checkpoint_v2(s->db, "main",
				       SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	if (rc == SQLITE_BUSY)
		return store_error(s, -EBUSY,
				   "another connection reads the database");
	return rc == SQLITE_OK ? 0 : store_sql_error(s, rc, "checkpoint");
}

const char *
store_errmsg(const Store *s)
{
	return s->errmsg;
}

/* ------------------------------------------------------------------ */
/* Mailboxes */

StoreMailbox *
store_mailbox_get(Store *s, const char *name)
{
	bool found;
	size_t i = index_pos_name(s, name, &found);

	return found ? &s->by_name[i]->mb : NULL;
}

StoreMailbox *
store_mailbox_by_id(Store *s, int64_t id)
{
	bool found;
	size_t i = index_pos_id(s, id, &found);

	return found ? &s->by_id[i]->mb : NULL;
}

size_t
store_mailbox_count(const Store *s)
{
	return s->n_mb;
}

size_t
store_mailbox_count_owned(const Store *s, uint32_t uid)
{
	bool found;
	size_t i = owner_pos(s, uid, &found);

	return found ? s->owners[i].n : 0;
}

uint64_t
store_leases_held(const Store *s)
{
	return s->n_leased_all;
}

/*
 * fn may create and delete mailboxes (the current one included): the walk
 * goes on from the first name after the current one.
 */
int
store_mailbox_foreach(Store *s, StoreMailboxFn fn, void *ctx)
{
	char name[MBOX_NAME_MAX + 1];
	size_t i = 0;
	bool found;

	while (i < s->n_mb) {
		Entry *e = s->by_name[i];
		int r;

		memcpy(name, e->mb.name, sizeof(name));
		r = fn(ctx, &e->mb);
		if (r)
			return r;
		i = index_pos_name(s, name, &found);
		if (found)
			i++;
	}
	return 0;
}

static int
mb_bind_settings(sqlite3_stmt *st, const StoreMailbox *mb)
{
	int rc = SQLITE_OK;

	rc |= sqlite3_bind_int64(st, 2, mb->owner_uid);
	rc |= sqlite3_bind_int64(st, 3, mb->gid);
	rc |= sqlite3_bind_int64(st, 4, mb->mode);
	rc |= bind_u64(st, 5, mb->lease_ms);
	rc |= bind_u64(st, 6, mb->max_deliveries);
	rc |= bind_u64(st, 7, mb->max_msgs);
	rc |= bind_u64(st, 8, mb->max_bytes);
	rc |= bind_u64(st, 9, mb->ttl_ms);
	rc |= sqlite3_bind_int64(st, 10, mb->flags);
	return rc;
}

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * The new mailbox's user is NULL. If the transaction is rolled back, the
 * mailbox is freed: the caller must drop *out then (and whatever it hung
 * on user).
 */
int
store_mailbox_create(Store *s, const StoreMailbox *tmpl, StoreMailbox **out)
{
	sqlite3_stmt *st = stmt_get(s, ST_MB_INSERT);
	Entry *e = NULL;
	bool found;
	int r, rc;

	r = store_check_add(s, NULL, 0);
	if (r < 0)
		return r;
	if (!name_valid(tmpl->name, sizeof(tmpl->name)))
		return store_error(s, -EINVAL, "invalid mailbox name");
	r = mbset_check(s, tmpl);
	if (r < 0)
		return r;
	index_pos_name(s, tmpl->name, &found);
	if (found)
		return store_error(s, -EEXIST, "mailbox %s exists", tmpl->name);
	r = index_reserve(s, s->n_mb + 1);
	if (r == 0)
		r = journal_reserve(s, 1);
	if (r < 0)
		return r;
	e = calloc(1, sizeof(*e));
	if (!e)
		return store_error(s, -ENOMEM, "out of memory");
	memcpy(e->mb.name, tmpl->name, sizeof(e->mb.name));
	e->disk = mbset_from(tmpl);
	mbset_apply(&e->mb, &e->disk);
	e->mb.created_ns = tmpl->created_ns ? tmpl->created_ns : now_ns();

	rc = sqlite3_bind_text(st, 1, e->mb.name, -1, SQLITE_STATIC);
	rc |= mb_bind_settings(st, &e->mb);
	rc |= sqlite3_bind_int64(st, 11, e->mb.created_ns);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_CONSTRAINT_UNIQUE) {
		r = store_error(s, -EEXIST, "mailbox %s exists", e->mb.name);
		goto fail;
	}
	if (rc != SQLITE_DONE) {
		r = store_sql_error(s, rc, "create mailbox");
		goto fail;
	}
	e->mb.id = sqlite3_last_insert_rowid(s->db);
	index_insert(s, e);
	e->txn = ENTRY_TOUCHED | ENTRY_CREATED;
	s->journal[s->n_journal++] = e;
	s->txn_wrote = true;
	if (out)
		*out = &e->mb;
	e = NULL;
	r = 0;
fail:
	stmt_done(st);
	free(e);
	return r;
}

/* On any failure the settings fields of mb are put back to the stored
 * ones, so memory never claims what the database does not hold. */
int
store_mailbox_update(Store *s, StoreMailbox *mb)
{
	sqlite3_stmt *st = stmt_get(s, ST_MB_UPDATE);
	Entry *e = entry_of(mb);
	int r, rc;

	r = store_check_write(s, mb);
	if (r == 0)
		r = mbset_check(s, mb);
	if (r == 0)
		r = journal_touch(s, e);
	if (r < 0)
		goto fail;
	rc = sqlite3_bind_int64(st, 1, mb->id);
	rc |= mb_bind_settings(st, mb);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		r = store_sql_error(s, rc, "update mailbox");
		goto fail;
	}
	e->disk = mbset_from(mb);
	s->txn_wrote = true;
	stmt_done(st);
	owner_sync(s, e); /* CHOWN sets mb->owner_uid before the update */
	return 0;
fail:
	stmt_done(st);
	mbset_apply(mb, &e->disk);
	owner_sync(s, e);
	return r;
}

/*
 * mb is unlinked at once (get/by_id/foreach no longer find it) but freed
 * only when the transaction commits; a rollback brings it back, same
 * pointer, user intact. Its bindings go with it the same way: they stay
 * in the unlinked entry, out of reach of store_binding_foreach, until
 * the commit frees them or a rollback re-links them. Its dedup keys go
 * too: a new mailbox of the same name starts with none.
 */
int
store_mailbox_delete(Store *s, StoreMailbox *mb)
{
	static const struct {
		int st;
		const char *what;
	} steps[] = {
		{ST_MB_DELETE_LEASES, "delete the leases of a mailbox"},
		{ST_MB_DELETE_MSGS, "delete the messages of a mailbox"},
		{ST_MB_DELETE_DEDUP, "delete the dedup keys of a mailbox"},
		{ST_MB_DELETE_BINDINGS, "delete the bindings of a mailbox"},
	};
	sqlite3_stmt *st;
	Entry *e = entry_of(mb);
	int r;

	r = mb_write_begin(s, mb);
	if (r < 0)
		return r;
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		/* The lease table has no index by mailbox: no scan of it for
		 * a mailbox without leases (every temporary one at a
		 * disconnect). */
		if (steps[i].st == ST_MB_DELETE_LEASES && mb->n_leased == 0)
			continue;
		st = stmt_get(s, steps[i].st);
		sqlite3_bind_int64(st, 1, mb->id);
		r = stmt_run(s, st, steps[i].what);
		if (r < 0)
			return r;
	}
	st = stmt_get(s, ST_MB_DELETE);
	sqlite3_bind_int64(st, 1, mb->id);
	r = stmt_run(s, st, "delete mailbox");
	if (r < 0)
		return r;
	index_remove(s, e);
	e->txn |= ENTRY_DELETED;
	s->txn_wrote = true;
	return 0;
}

/* Run a query on mb that yields one integer (NULL reads as 0). */
static int
mb_query_int(Store *s, int id, StoreMailbox *mb, bool with_now, int64_t now,
	     int64_t *out, const char *what)
{
	sqlite3_stmt *st = stmt_get(s, id);
	int r, rc;

	r = store_check_read(s, mb);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, mb->id);
	if (with_now)
		sqlite3_bind_int64(st, 2, now);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0);
		r = 0;
	} else {
		r = store_sql_error(s, rc, what);
	}
	stmt_done(st);
	return r;
}

int
store_mailbox_count_delayed(Store *s, StoreMailbox *mb, int64_t now_ns_,
			    uint64_t *out)
{
	int64_t v = 0;
	int r;

	r = mb_query_int(s, ST_MB_DELAYED, mb, true, now_ns_, &v,
			 "count delayed messages");
	if (r == 0)
		*out = (uint64_t)v;
	return r;
}

/*
 * The oldest of the first message (lowest id) of each state and priority:
 * exact as long as enqueue times grow with ids, which they do unless the
 * clock steps back. Costs 30 index seeks, not a scan of the mailbox.
 */
int
store_mailbox_oldest(Store *s, StoreMailbox *mb, int64_t *time_ns)
{
	int64_t v = 0;
	int r;

	if (mb->n_ready + mb->n_leased + mb->n_dead == 0) {
		r = store_check_read(s, mb);
		if (r == 0)
			*time_ns = 0;
		return r;
	}
	r = mb_query_int(s, ST_MB_OLDEST, mb, false, 0, &v,
			 "find the oldest message");
	if (r == 0)
		*time_ns = v;
	return r;
}

int
store_mailbox_next_ready(Store *s, StoreMailbox *mb, int64_t now_ns_,
			 int64_t *ready_ns)
{
	int64_t v = 0;
	int r;

	r = mb_query_int(s, ST_MB_NEXT_READY, mb, true, now_ns_, &v,
			 "find the next delayed message");
	if (r == 0)
		*ready_ns = v;
	return r;
}

/* ------------------------------------------------------------------ */
/* Messages */

/* Fill m from a row of MSG_COLS; pointers valid until the next step. */
static void
msg_from_row(sqlite3_stmt *st, StoreMsg *m)
{
	const unsigned char *comm;
	size_t n;

	memset(m, 0, sizeof(*m));
	m->id = (uint64_t)sqlite3_column_int64(st, 0);
	m->mailbox_id = sqlite3_column_int64(st, 1);
	m->state = (uint32_t)sqlite3_column_int64(st, 2);
	m->priority = (uint32_t)sqlite3_column_int64(st, 3);
	m->deliveries = (uint32_t)sqlite3_column_int64(st, 4);
	m->time_ns = sqlite3_column_int64(st, 5);
	m->ready_ns = sqlite3_column_int64(st, 6);
	m->expires_ns = sqlite3_column_int64(st, 7);
	m->pid = (uint32_t)sqlite3_column_int64(st, 8);
	m->uid = (uint32_t)sqlite3_column_int64(st, 9);
	m->gid = (uint32_t)sqlite3_column_int64(st, 10);
	comm = sqlite3_column_text(st, 11);
	n = (size_t)sqlite3_column_bytes(st, 11);
	if (comm)
		memcpy(m->comm, comm, n < MBOX_COMM_MAX ? n : MBOX_COMM_MAX);
	m->headers = sqlite3_column_blob(st, 12);
	m->headers_len = (size_t)sqlite3_column_bytes(st, 12);
	if (!m->headers)
		m->headers_len = 0;
	m->dedup = (const char *)sqlite3_column_text(st, 13);
	m->dead_reason = (const char *)sqlite3_column_text(st, 14);
	/* Asked first: reading the value as a blob converts it. */
	m->data_text = sqlite3_column_type(st, 15) == SQLITE_TEXT;
	m->data = sqlite3_column_blob(st, 15);
	m->len = (size_t)sqlite3_column_bytes(st, 15);
	/* SQLite hands out NULL for a zero-length blob. */
	if (!m->data) {
		m->data = store_empty;
		m->len = 0;
	}
}

static int
msg_call(Store *s, StoreMsgFn fn, void *ctx, const StoreMsg *m)
{
	int r;

	if (!fn)
		return 0;
	s->in_callback++;
	r = fn(ctx, m);
	s->in_callback--;
	return r;
}

/*
 * Record msg->dedup for msg, just inserted. Should that fail, the message
 * row is taken out again, so that a failed insert leaves nothing behind
 * (the caller may go on with the rest of its batch and commit).
 */
static int
dedup_put(Store *s, StoreMailbox *mb, const StoreMsg *msg)
{
	sqlite3_stmt *st = stmt_get(s, ST_DEDUP_PUT);
	int r, rc;

	rc = sqlite3_bind_int64(st, 1, mb->id);
	rc |= sqlite3_bind_text(st, 2, msg->dedup, -1, SQLITE_STATIC);
	rc |= sqlite3_bind_int64(st, 3, (int64_t)msg->id);
	rc |= sqlite3_bind_int64(st, 4, msg->time_ns);
	if (rc != SQLITE_OK) {
		stmt_done(st);
		r = store_error(s, -EINVAL, "dedup key too large");
	} else {
		r = stmt_run(s, st, "record the dedup key");
	}
	if (r < 0 && !s->txn_err) {
		char why[sizeof(s->errmsg)];

		memcpy(why, s->errmsg, sizeof(why));
		st = stmt_get(s, ST_MSG_DELETE);
		sqlite3_bind_int64(st, 1, (int64_t)msg->id);
		/* A row the counters do not know of: the transaction must not
		 * commit. */
		if (stmt_run(s, st, "take back the message") < 0) {
			memcpy(s->errmsg, why, sizeof(why));
			txn_refuse(s, r);
		}
		memcpy(s->errmsg, why, sizeof(why));
	}
	return r;
}

/* Write last to id_reserve in the open transaction: ids up to it may be
 * handed out once it commits. */
static int
store_reserve_ids(Store *s, int64_t last)
{
	sqlite3_stmt *st = stmt_get(s, ST_ID_RESERVE);
	int r;

	sqlite3_bind_int64(st, 1, last);
	r = stmt_run(s, st, "reserve message ids");
	if (r == 0) {
		s->ids_reserved_txn = last;
		s->txn_wrote = true;
	}
	return r;
}

/*
 * The id of the next message, inside the open transaction. Past the
 * reservation, reserve the next block first, in this transaction: an id
 * is never stored above what id_reserve holds, so after a crash the ids
 * go on above every id ever stored (see schema.c, version 3). It is
 * taken (next_msg_id moves) only once the row is in.
 */
static int
store_next_id(Store *s, int64_t *out)
{
	int64_t id = s->next_msg_id;
	int64_t held =
		s->ids_reserved_txn ? s->ids_reserved_txn : s->ids_reserved;
	int r;

	if (id > held) {
		r = store_reserve_ids(s, id + STORE_ID_BLOCK - 1);
		if (r < 0)
			return r;
	}
	*out = id;
	return 0;
}

/*
 * Binds data and headers without copying (SQLITE_STATIC): they need only
 * live for the call. deliveries, time_ns, ready_ns, expires_ns, sender
 * and dedup are stored as given; dead_reason is ignored. With dedup, the
 * key is recorded with time_ns (see store_dedup_find).
 */
int
store_msg_insert(Store *s, StoreMailbox *mb, StoreMsg *msg)
{
	sqlite3_stmt *st = stmt_get(s, ST_MSG_INSERT);
	Entry *e = entry_of(mb);
	int64_t id;
	int r, rc;

	/* The dedup key goes in twice: the row and its own table. */
	r = store_check_add(s, mb,
			    (uint64_t)msg->len + msg->headers_len +
				    (msg->dedup ? 2 * strlen(msg->dedup) : 0));
	if (r < 0)
		return r;
	if (msg->priority > MBOX_PRIORITY_MAX)
		return store_error(s, -EINVAL, "priority %u is not in 0..%u",
				   msg->priority, MBOX_PRIORITY_MAX);
	if ((msg->len && !msg->data) || (msg->headers_len && !msg->headers))
		return store_error(s, -EINVAL, "message without its data");
	r = journal_touch(s, e);
	if (r < 0)
		return r;
	r = store_next_id(s, &id);
	if (r < 0)
		return r;

	rc = sqlite3_bind_int64(st, 1, mb->id);
	rc |= sqlite3_bind_int64(st, 2, msg->priority);
	rc |= sqlite3_bind_int64(st, 3, msg->deliveries);
	rc |= sqlite3_bind_int64(st, 4, msg->time_ns);
	rc |= sqlite3_bind_int64(st, 5, msg->ready_ns);
	rc |= sqlite3_bind_int64(st, 6, msg->expires_ns);
	rc |= sqlite3_bind_int64(st, 7, msg->pid);
	rc |= sqlite3_bind_int64(st, 8, msg->uid);
	rc |= sqlite3_bind_int64(st, 9, msg->gid);
	rc |= sqlite3_bind_text(st, 10, msg->comm,
				(int)strnlen(msg->comm, sizeof(msg->comm)),
				SQLITE_STATIC);
	if (msg->headers_len)
		rc |= sqlite3_bind_blob64(st, 11, msg->headers,
					  msg->headers_len, SQLITE_STATIC);
	if (msg->dedup)
		rc |= sqlite3_bind_text(st, 12, msg->dedup, -1, SQLITE_STATIC);
	/* A NULL pointer would bind NULL, and data is NOT NULL. */
	rc |= sqlite3_bind_blob64(st, 13, msg->len ? msg->data : store_empty,
				  msg->len, SQLITE_STATIC);
	rc |= sqlite3_bind_int64(st, 14, id);
	if (rc != SQLITE_OK) {
		r = store_error(s, -EINVAL, "message too large for the store");
		goto out;
	}
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		r = store_sql_error(s, rc, "insert message");
		goto out;
	}
	msg->id = (uint64_t)id;
	s->next_msg_id = id + 1;
	stmt_done(st);
	lease_from_lower(e, msg->priority, id, msg->ready_ns);
	if (msg->dedup) {
		r = dedup_put(s, mb, msg);
		if (r < 0)
			return r;
	}
	msg->mailbox_id = mb->id;
	msg->state = STORE_READY;
	mb->n_ready++;
	mb->bytes += msg->len;
	s->txn_wrote = true;
	return 0;
out:
	stmt_done(st);
	return r;
}

/* Start the walks of e from the top of its line, until the first delayed
 * row's time comes. */
static int
lease_from_top(Store *s, Entry *e, int64_t now_ns_)
{
	int64_t next = 0;
	int r;

	r = mb_query_int(s, ST_MB_NEXT_READY, &e->mb, true, now_ns_, &next,
			 "find the next delayed message");
	if (r < 0)
		return r;
	e->from = (LeaseFrom){true, INFINITY, 0, next ? next : INT64_MAX,
			      now_ns_};
	return 0;
}

/*
 * One statement of a lease walk (ST_MSG_LEASE or ST_MSG_LEASE_BELOW): each
 * row it yields gets its lease row, then goes to fn. Returns the number
 * leased, or what fn returned if it stopped the walk (*n still counts),
 * or a negative errno. *last is the position of the last row leased.
 */
static int
lease_walk(Store *s, Entry *e, int which, int64_t now_ns_, size_t max,
	   StoreMsgFn fn, void *ctx, int *n, LeaseFrom *last)
{
	sqlite3_stmt *sel = stmt_get(s, which);
	sqlite3_stmt *add = stmt_get(s, ST_LEASE_ADD);
	StoreMailbox *mb = &e->mb;
	int r = 0, rc;

	sqlite3_bind_int64(sel, 1, mb->id);
	sqlite3_bind_int64(sel, 2, now_ns_);
	sqlite3_bind_int64(sel, 3, (int64_t)max);
	sqlite3_bind_double(sel, 4, e->from.prio);
	if (which == ST_MSG_LEASE)
		sqlite3_bind_int64(sel, 5, e->from.id);
	while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
		StoreMsg m;

		msg_from_row(sel, &m);
		/* The lease table is read by sel's look-up, one row at a
		 * time: a row added behind it changes nothing it walks. */
		sqlite3_bind_int64(add, 1, (int64_t)m.id);
		sqlite3_bind_int64(add, 2, mb->id);
		r = stmt_run(s, add, "lease messages");
		if (r < 0)
			goto out;
		last->prio = sqlite3_column_double(sel, 3);
		last->id = (int64_t)m.id;
		m.state = STORE_LEASED;
		m.deliveries++;
		counter_sub(&mb->n_ready, 1);
		leased_add(s, mb, 1);
		s->txn_wrote = true;
		(*n)++;
		r = msg_call(s, fn, ctx, &m);
		if (r)
			goto out;
	}
	if (rc != SQLITE_DONE)
		r = store_sql_error(s, rc, "lease messages");
out:
	stmt_done(sel);
	return r;
}

/*
 * Every message fn was called for is leased, the one for which fn
 * stopped the walk included: its row in the lease table is written
 * before fn sees it. fn must not call the store (it gets -EBUSY). An
 * error after fn saw rows leaves the transaction unable to commit
 * (txn_refuse): the caller must roll back.
 */
int
store_msg_lease(Store *s, StoreMailbox *mb, int64_t now_ns_, size_t max,
		StoreMsgFn fn, void *ctx)
{
	Entry *e = entry_of(mb);
	LeaseFrom last = {0};
	int n = 0, r;

	s->lease_clipped = false;
	r = store_check_write(s, mb);
	if (r < 0)
		return r;
	if (max == 0)
		return 0;
	if (max > INT32_MAX)
		max = INT32_MAX; /* the count is returned as an int */
	r = cap_lease_room(s, &max);
	if (r == 0)
		r = journal_touch(s, e);
	if (r == 0 && (!e->from.known || now_ns_ >= e->from.until ||
		       now_ns_ < e->from.seen))
		r = lease_from_top(s, e, now_ns_);
	if (r < 0)
		return r;
	e->from.seen = now_ns_;
	/* The rest of the line at the priority where the last walk stopped
	 * (none at first: INFINITY), then the lines below it. */
	r = lease_walk(s, e, ST_MSG_LEASE, now_ns_, max, fn, ctx, &n, &last);
	if (r == 0 && (size_t)n < max)
		r = lease_walk(s, e, ST_MSG_LEASE_BELOW, now_ns_,
			       max - (size_t)n, fn, ctx, &n, &last);
	if (n && r >= 0) {
		e->from.prio = last.prio;
		e->from.id = last.id;
	}
	if (r < 0 && n)
		txn_refuse(s, r);
	return r ? r : n;
}

/* What the counters need to know of message id of mb. */
typedef struct MsgStat {
	int state;
	uint64_t len;
	uint64_t deliveries;
} MsgStat;

/* 0 and *out, -ENOENT (message not in mb), or another error. */
static int
msg_stat(Store *s, StoreMailbox *mb, uint64_t id, MsgStat *out)
{
	sqlite3_stmt *st = stmt_get(s, ST_MSG_STAT);
	int r = 0, rc;

	sqlite3_bind_int64(st, 1, clamp_i64(id));
	sqlite3_bind_int64(st, 2, mb->id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		out->state = (int)sqlite3_column_int64(st, 0);
		out->len = (uint64_t)sqlite3_column_int64(st, 1);
		out->deliveries = (uint64_t)sqlite3_column_int64(st, 2);
	} else if (rc == SQLITE_DONE) {
		r = store_error(s, -ENOENT, "no message %llu in %s",
				(unsigned long long)id, mb->name);
	} else {
		r = store_sql_error(s, rc, "find message");
	}
	stmt_done(st);
	return r;
}

/* Message id of mb had a lease row but no row of its own (another
 * program deleted it): the lease was ended, and this says so. */
static int
lease_gone(Store *s, StoreMailbox *mb, uint64_t id)
{
	return store_error(s, -ENOENT,
			   "message %llu of %s was leased but is gone; its "
			   "lease is ended",
			   (unsigned long long)id, mb->name);
}

/* msg_stat found no message id in mb (r, -ENOENT): end the lease it may
 * have left behind (another program deleted it), and say so. */
static int
msg_stat_gone(Store *s, StoreMailbox *mb, uint64_t id, int r)
{
	sqlite3_stmt *st = stmt_get(s, ST_LEASE_END);
	char why[sizeof(s->errmsg)];
	int e;

	memcpy(why, s->errmsg, sizeof(why));
	sqlite3_bind_int64(st, 1, clamp_i64(id));
	sqlite3_bind_int64(st, 2, mb->id);
	e = stmt_run(s, st, "end a lease");
	if (e < 0)
		return e;
	if (sqlite3_changes(s->db) == 0) {
		memcpy(s->errmsg, why, sizeof(why));
		return r;
	}
	leased_sub(s, mb, 1);
	s->txn_wrote = true;
	return lease_gone(s, mb, id);
}

/* Move one counted message from state `from` to the dead list. */
static void
counters_kill(Store *s, StoreMailbox *mb, int from)
{
	if (from == STORE_LEASED)
		leased_sub(s, mb, 1);
	else
		counter_sub(&mb->n_ready, 1);
	mb->n_dead++;
}

/* Mark message id DEAD with reason; the caller knows it is READY or
 * LEASED (then its lease ends) and has journaled its mailbox. */
static int
msg_kill(Store *s, uint64_t id, const char *reason, bool leased)
{
	sqlite3_stmt *st = stmt_get(s, ST_MSG_KILL);
	int r;

	sqlite3_bind_int64(st, 1, clamp_i64(id));
	sqlite3_bind_text(st, 2, reason, -1, SQLITE_STATIC);
	r = stmt_run(s, st, "move a message to the dead list");
	if (r < 0 || !leased)
		return r;
	st = stmt_get(s, ST_MSG_DELETE_LEASE);
	sqlite3_bind_int64(st, 1, clamp_i64(id));
	r = stmt_run(s, st, "end the lease of a dead message");
	if (r < 0)
		txn_refuse(s, r); /* dead, and leased too */
	return r;
}

int
store_msg_delete(Store *s, StoreMailbox *mb, uint64_t id)
{
	sqlite3_stmt *st;
	MsgStat ms;
	int r;

	r = mb_write_begin(s, mb);
	if (r == 0 && (r = msg_stat(s, mb, id, &ms)) == -ENOENT)
		r = msg_stat_gone(s, mb, id, r);
	if (r < 0)
		return r;

	st = stmt_get(s, ST_MSG_DELETE);
	sqlite3_bind_int64(st, 1, (int64_t)id);
	r = stmt_run(s, st, "delete message");
	if (r == 0 && ms.state == STORE_LEASED) {
		st = stmt_get(s, ST_MSG_DELETE_LEASE);
		sqlite3_bind_int64(st, 1, (int64_t)id);
		r = stmt_run(s, st, "end the lease of a deleted message");
		if (r < 0)
			txn_refuse(s, r); /* gone, and leased still */
	}
	if (r < 0)
		return r;
	counters_remove(s, mb, ms.state, ms.len);
	s->txn_wrote = true;
	return 0;
}

/* Run st, a write of leased message id of mb (bound already): -ENOENT
 * when it found no such row. */
static int
run_on_leased(Store *s, sqlite3_stmt *st, StoreMailbox *mb, uint64_t id,
	      const char *what)
{
	int r = stmt_run(s, st, what);

	if (r == 0 && sqlite3_changes(s->db) == 0)
		r = store_error(s, -ENOENT, "no leased message %llu in %s",
				(unsigned long long)id, mb->name);
	return r;
}

/* End the lease of message id of mb: -ENOENT if it has none. */
static int
lease_end(Store *s, StoreMailbox *mb, uint64_t id)
{
	sqlite3_stmt *st = stmt_get(s, ST_LEASE_END);

	sqlite3_bind_int64(st, 1, clamp_i64(id));
	sqlite3_bind_int64(st, 2, mb->id);
	return run_on_leased(s, st, mb, id, "end a lease");
}

/*
 * An ack is the hot path of every consumer: two DELETEs by primary key,
 * the lease (which says the message is leased, and in mb) and the
 * message, instead of store_msg_delete's SELECT of it first (8 % of the
 * broker's CPU in the pipeline, doc/performance.md). The length cannot
 * be checked without that read; it is what the lease delivered.
 */
int
store_msg_ack(Store *s, StoreMailbox *mb, uint64_t id, uint64_t len)
{
	sqlite3_stmt *st;
	int r;

	r = mb_write_begin(s, mb);
	if (r == 0)
		r = lease_end(s, mb, id);
	if (r < 0)
		return r;
	st = stmt_get(s, ST_MSG_DELETE);
	sqlite3_bind_int64(st, 1, clamp_i64(id));
	r = stmt_run(s, st, "delete message");
	if (r < 0) {
		txn_refuse(s, r); /* its lease ended, the message still there */
		return r;
	}
	if (sqlite3_changes(s->db) != 1) {
		/* Deleted behind the store's back: the lease was all left. */
		counters_remove(s, mb, STORE_LEASED, len);
		s->txn_wrote = true;
		return lease_gone(s, mb, id);
	}
	counters_remove(s, mb, STORE_LEASED, len);
	s->txn_wrote = true;
	return 0;
}

/* The delivery count is read from the row, never taken from the caller:
 * the row is the one record of it that survives a restart. */
int
store_msg_release(Store *s, StoreMailbox *mb, uint64_t id, int64_t ready_ns)
{
	sqlite3_stmt *st = stmt_get(s, ST_MSG_RELEASE);
	MsgStat ms;
	int r, rc;

	r = mb_write_begin(s, mb);
	if (r < 0)
		return r;
	if (mb->max_deliveries) {
		r = msg_stat(s, mb, id, &ms);
		if (r == -ENOENT)
			r = msg_stat_gone(s, mb, id, r);
		if (r == 0 && ms.state != STORE_LEASED)
			r = store_error(s, -ENOENT,
					"no leased message %llu in %s",
					(unsigned long long)id, mb->name);
		if (r < 0)
			return r;
		if (ms.deliveries >= mb->max_deliveries) {
			r = msg_kill(s, id, "max-deliveries", true);
			if (r < 0)
				return r;
			counters_kill(s, mb, STORE_LEASED);
			s->txn_wrote = true;
			return 1;
		}
	}
	r = lease_end(s, mb, id);
	if (r < 0)
		return r;
	st = stmt_get(s, ST_MSG_RELEASE);
	sqlite3_bind_int64(st, 1, clamp_i64(id));
	sqlite3_bind_int64(st, 2, mb->id);
	sqlite3_bind_int64(st, 3, ready_ns);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		/* Back in line at its place: the next walk starts there. */
		lease_from_lower(entry_of(mb), sqlite3_column_double(st, 0),
				 clamp_i64(id), ready_ns);
	} else if (rc == SQLITE_DONE) {
		leased_sub(s, mb, 1);
		s->txn_wrote = true;
		r = lease_gone(s, mb, id);
	} else {
		r = store_sql_error(s, rc, "release message");
		txn_refuse(s, r); /* its lease ended, its count not written */
	}
	stmt_done(st);
	if (r < 0)
		return r;
	leased_sub(s, mb, 1);
	mb->n_ready++;
	s->txn_wrote = true;
	return 0;
}

/* Returns what fn returned (0 without fn), or -ENOENT. */
int
store_msg_get(Store *s, StoreMailbox *mb, uint64_t id, StoreMsgFn fn, void *ctx)
{
	sqlite3_stmt *st = stmt_get(s, ST_MSG_GET);
	StoreMsg m;
	int r, rc;

	r = store_check_read(s, mb);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, clamp_i64(id));
	sqlite3_bind_int64(st, 2, mb->id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		msg_from_row(st, &m);
		r = msg_call(s, fn, ctx, &m);
	} else if (rc == SQLITE_DONE) {
		r = store_error(s, -ENOENT, "no message %llu in %s",
				(unsigned long long)id, mb->name);
	} else {
		r = store_sql_error(s, rc, "read message");
	}
	stmt_done(st);
	return r;
}

/* Returns the number of messages fn saw, what fn returned if it stopped
 * the walk, or a negative errno. Reads only: no transaction needed. */
int
store_msg_peek(Store *s, StoreMailbox *mb, uint64_t from_id, size_t max,
	       int what, StoreMsgFn fn, void *ctx)
{
	sqlite3_stmt *st =
		stmt_get(s, what == STORE_PEEK_DEAD    ? ST_MSG_PEEK_DEAD
			    : what == STORE_PEEK_BY_ID ? ST_MSG_PEEK_BY_ID
						       : ST_MSG_PEEK);
	int n = 0, r, rc;

	r = store_check_read(s, mb);
	if (r < 0 || max == 0)
		return r;
	if (max > INT32_MAX)
		max = INT32_MAX;
	sqlite3_bind_int64(st, 1, mb->id);
	sqlite3_bind_int64(st, 2, clamp_i64(from_id));
	sqlite3_bind_int64(st, 3, (int64_t)max);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		StoreMsg m;

		msg_from_row(st, &m);
		n++;
		r = msg_call(s, fn, ctx, &m);
		if (r)
			goto out;
	}
	if (rc != SQLITE_DONE) {
		r = store_sql_error(s, rc, "peek messages");
		goto out;
	}
	r = n;
out:
	stmt_done(st);
	return r;
}

/* ------------------------------------------------------------------ */
/* Dead list, expiry */

int
store_msg_kill(Store *s, StoreMailbox *mb, uint64_t id, const char *reason)
{
	MsgStat ms;
	int r;

	r = store_check_write(s, mb);
	if (r == 0 && !reason)
		r = store_error(s, -EINVAL, "a dead message needs a reason");
	if (r == 0)
		r = journal_touch(s, entry_of(mb));
	if (r == 0 && (r = msg_stat(s, mb, id, &ms)) == -ENOENT)
		r = msg_stat_gone(s, mb, id, r);
	if (r == 0 && ms.state == STORE_DEAD)
		r = store_error(s, -ENOENT,
				"message %llu of %s is dead already",
				(unsigned long long)id, mb->name);
	if (r == 0)
		r = msg_kill(s, id, reason, ms.state == STORE_LEASED);
	if (r < 0)
		return r;
	counters_kill(s, mb, ms.state);
	s->txn_wrote = true;
	return 0;
}

/*
 * The ttl goes too (expires_ns 0): a kicked message is a decision of the
 * mailbox's operator, and one that died of old age would otherwise die
 * again at the next expiry run, before anyone could take it.
 */
int64_t
store_msg_kick(Store *s, StoreMailbox *mb, uint64_t max)
{
	sqlite3_stmt *st = stmt_get(s, ST_MSG_KICK);
	int64_t n;
	int r;

	r = mb_write_begin(s, mb);
	if (r < 0)
		return r;
	if (mb->n_dead == 0)
		return 0;
	sqlite3_bind_int64(st, 1, mb->id);
	/* A negative LIMIT is no limit. */
	sqlite3_bind_int64(st, 2, max ? clamp_i64(max) : -1);
	r = stmt_run(s, st, "kick dead messages");
	if (r < 0)
		return r;
	n = sqlite3_changes(s->db);
	counter_sub(&mb->n_dead, (uint64_t)n);
	mb->n_ready += (uint64_t)n;
	/* Back in line anywhere, under the walks' start. */
	if (n)
		entry_of(mb)->from.known = false;
	if (n)
		s->txn_wrote = true;
	return n;
}

int64_t
store_msg_purge(Store *s, StoreMailbox *mb, bool dead)
{
	sqlite3_stmt *st = stmt_get(s, ST_MSG_PURGE_STAT);
	int state = dead ? STORE_DEAD : STORE_READY;
	int64_t n = 0, bytes = 0;
	int r, rc;

	r = mb_write_begin(s, mb);
	if (r < 0)
		return r;
	if ((dead ? mb->n_dead : mb->n_ready) == 0)
		return 0;
	sqlite3_bind_int64(st, 1, mb->id);
	sqlite3_bind_int64(st, 2, state);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		n = sqlite3_column_int64(st, 0);
		bytes = sqlite3_column_int64(st, 1);
	} else {
		r = store_sql_error(s, rc, "count the messages to purge");
	}
	stmt_done(st);
	if (r < 0)
		return r;

	st = stmt_get(s, ST_MSG_PURGE);
	sqlite3_bind_int64(st, 1, mb->id);
	sqlite3_bind_int64(st, 2, state);
	r = stmt_run(s, st, "purge messages");
	if (r < 0)
		return r;
	counter_sub(dead ? &mb->n_dead : &mb->n_ready, (uint64_t)n);
	counter_sub(&mb->bytes, (uint64_t)bytes);
	if (n)
		s->txn_wrote = true;
	return n;
}

/* Rows read per expiry batch: the scan is finished (reset) before any row
 * changes, so no statement walks an index that is being rewritten. */
#define EXPIRE_BATCH 64

typedef struct ExpiredRow {
	uint64_t id;
	int64_t mailbox_id, expires_ns;
} ExpiredRow;

/* Read up to EXPIRE_BATCH expired rows; returns how many, or errno. */
static int
expire_scan(Store *s, int64_t now_ns_, ExpiredRow *rows)
{
	sqlite3_stmt *st = stmt_get(s, ST_EXPIRE_SCAN);
	int n = 0, rc;

	sqlite3_bind_int64(st, 1, now_ns_);
	sqlite3_bind_int64(st, 2, EXPIRE_BATCH);
	while (n < EXPIRE_BATCH && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		rows[n].id = (uint64_t)sqlite3_column_int64(st, 0);
		rows[n].mailbox_id = sqlite3_column_int64(st, 1);
		rows[n].expires_ns = sqlite3_column_int64(st, 2);
		n++;
	}
	if (n < EXPIRE_BATCH && rc != SQLITE_DONE)
		n = store_sql_error(s, rc, "find expired messages");
	stmt_done(st);
	return n;
}

/*
 * A non-zero return of fn stops the run and is returned; the messages
 * moved so far (that one included) stay moved. On a negative errno after
 * some moves the caller must roll back. Every batch makes progress (its
 * rows leave message_expiry), so the loop ends.
 */
int64_t
store_expire(Store *s, int64_t now_ns_, StoreMsgFn fn, void *ctx)
{
	ExpiredRow rows[EXPIRE_BATCH];
	int64_t total = 0;
	int n, r;

	r = store_check_write(s, NULL);
	if (r < 0)
		return r;
	do {
		n = expire_scan(s, now_ns_, rows);
		if (n < 0)
			return n;
		for (int i = 0; i < n; i++) {
			StoreMailbox *mb =
				store_mailbox_by_id(s, rows[i].mailbox_id);
			StoreMsg m = {0};

			/* Snapshot before the row changes. No mailbox (the
			 * foreign key rules it out): no counters to keep. */
			if (mb) {
				r = journal_touch(s, entry_of(mb));
				if (r < 0)
					return r;
			}
			r = msg_kill(s, rows[i].id, "expired", false);
			if (r < 0)
				return r;
			if (mb)
				counters_kill(s, mb, STORE_READY);
			s->txn_wrote = true;
			total++;
			m.id = rows[i].id;
			m.mailbox_id = rows[i].mailbox_id;
			m.state = STORE_DEAD;
			m.expires_ns = rows[i].expires_ns;
			m.dead_reason = "expired";
			r = msg_call(s, fn, ctx, &m);
			if (r)
				return r;
		}
	} while (n == EXPIRE_BATCH);
	return total;
}

int
store_next_expiry(Store *s, int64_t *expires_ns)
{
	sqlite3_stmt *st = stmt_get(s, ST_NEXT_EXPIRY);
	int r, rc;

	r = store_check_read(s, NULL);
	if (r < 0)
		return r;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*expires_ns = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		*expires_ns = 0;
	else
		r = store_sql_error(s, rc, "find the next expiry");
	stmt_done(st);
	return r;
}

/* ------------------------------------------------------------------ */
/* Dedup keys */

/* A read: no transaction needed. Inside one, it sees the keys recorded
 * by the transaction's own inserts. */
int
store_dedup_find(Store *s, StoreMailbox *mb, const char *key, int64_t since_ns,
		 uint64_t *id)
{
	sqlite3_stmt *st = stmt_get(s, ST_DEDUP_FIND);
	int r, rc;

	r = store_check_read(s, mb);
	if (r == 0 && !key)
		r = store_error(s, -EINVAL, "no dedup key");
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, mb->id);
	sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, since_ns);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*id = (uint64_t)sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		r = -ENOENT; /* the common case: no message, no error text */
	else
		r = store_sql_error(s, rc, "look up a dedup key");
	stmt_done(st);
	return r;
}

int64_t
store_dedup_prune(Store *s, int64_t before_ns)
{
	sqlite3_stmt *st = stmt_get(s, ST_DEDUP_PRUNE);
	int64_t n;
	int r;

	r = store_check_write(s, NULL);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, before_ns);
	r = stmt_run(s, st, "prune dedup keys");
	if (r < 0)
		return r;
	n = sqlite3_changes(s->db);
	if (n)
		s->txn_wrote = true;
	return n;
}

/* ------------------------------------------------------------------ */
/* Bindings */

static int
pattern_check(Store *s, const char *pattern)
{
	size_t n = pattern ? strnlen(pattern, MBOX_TOPIC_MAX + 1) : 0;

	if (n == 0 || n > MBOX_TOPIC_MAX)
		return store_error(s, -EINVAL, "a pattern has 1 to %u bytes",
				   MBOX_TOPIC_MAX);
	return 0;
}

/* Memory changes only once the row is in: a failure changes nothing. */
int
store_binding_add(Store *s, StoreMailbox *mb, const char *pattern)
{
	sqlite3_stmt *st = stmt_get(s, ST_BIND_ADD);
	Entry *e = entry_of(mb);
	char *p = NULL;
	size_t i;
	bool found;
	int r, rc;

	r = pattern_check(s, pattern);
	if (r == 0)
		r = store_check_add(s, mb, strlen(pattern));
	if (r < 0)
		return r;
	i = pat_pos(e, pattern, &found);
	if (found)
		return store_error(s, -EEXIST, "%s is bound to %s already",
				   mb->name, pattern);
	r = pat_reserve(s, e, e->n_pat + 1);
	if (r == 0)
		r = bundo_reserve(s);
	if (r < 0)
		return r;
	p = strdup(pattern);
	if (!p)
		return store_error(s, -ENOMEM, "out of memory");
	rc = sqlite3_bind_int64(st, 1, mb->id);
	rc |= sqlite3_bind_text(st, 2, p, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		r = rc == SQLITE_CONSTRAINT_PRIMARYKEY
			    ? store_error(s, -EEXIST,
					  "%s is bound to %s already", mb->name,
					  pattern)
			    : store_sql_error(s, rc, "add binding");
		stmt_done(st);
		free(p);
		return r;
	}
	stmt_done(st);
	pat_insert(e, i, p);
	s->bundo[s->n_bundo++] = (BindUndo){e, p, true};
	s->txn_wrote = true;
	return 0;
}

int
store_binding_remove(Store *s, StoreMailbox *mb, const char *pattern)
{
	sqlite3_stmt *st = stmt_get(s, ST_BIND_REMOVE);
	Entry *e = entry_of(mb);
	size_t i;
	bool found;
	int r;

	r = store_check_write(s, mb);
	if (r == 0 && !pattern)
		r = store_error(s, -EINVAL, "no pattern");
	if (r < 0)
		return r;
	i = pat_pos(e, pattern, &found);
	if (!found)
		return store_error(s, -ENOENT, "%s is not bound to %s",
				   mb->name, pattern);
	r = bundo_reserve(s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, mb->id);
	sqlite3_bind_text(st, 2, e->pat[i], -1, SQLITE_STATIC);
	r = stmt_run(s, st, "remove binding");
	if (r < 0)
		return r;
	s->bundo[s->n_bundo++] = (BindUndo){e, pat_take(e, i), false};
	s->txn_wrote = true;
	return 0;
}

/*
 * Never reads the database. fn may call the store, post messages, even
 * add or remove bindings and delete mailboxes: the walk goes on from the
 * first (mailbox name, pattern) after the current one.
 */
int
store_binding_foreach(Store *s, StoreBindingFn fn, void *ctx)
{
	char name[MBOX_NAME_MAX + 1];
	char pattern[MBOX_TOPIC_MAX + 1];
	size_t i = 0, j = 0;
	bool found;

	while (i < s->n_mb) {
		Entry *e = s->by_name[i];
		int r;

		if (j >= e->n_pat) {
			i++;
			j = 0;
			continue;
		}
		memcpy(name, e->mb.name, sizeof(name));
		snprintf(pattern, sizeof(pattern), "%s", e->pat[j]);
		r = fn(ctx, &e->mb, e->pat[j]);
		if (r)
			return r;
		i = index_pos_name(s, name, &found);
		if (!found) {
			j = 0; /* i is the next mailbox already */
			continue;
		}
		j = pat_pos(s->by_name[i], pattern, &found);
		if (found)
			j++;
	}
	return 0;
}

size_t
store_binding_count(Store *s, const StoreMailbox *mb)
{
	const Entry *e =
		(const Entry *)((const char *)mb - offsetof(Entry, mb));

	(void)s;
	/* A mailbox deleted by the open transaction keeps its patterns
	 * only for a rollback. */
	return (e->txn & ENTRY_DELETED) ? 0 : e->n_pat;
}

/* ------------------------------------------------------------------ */
/* Open and close */

/*
 * One mboxd per database: leases live in the broker's memory, and
 * store_open voids every lease it finds, which is only right if no other
 * broker holds them. flock(2) locks are separate from the POSIX locks
 * SQLite takes, so an operator's sqlite3 shell can still read the file.
 * The fd stays open until after sqlite3_close: closing any fd of the file
 * would drop SQLite's POSIX locks.
 */
static int
store_lock(Store *s, const char *path, char *errbuf, size_t errlen)
{
	/* 0600: messages are private to their mailboxes' owners; SQLite
	 * gives the -wal and -shm files the mode of the database. */
	s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (s->lock_fd < 0) {
		int err = errno;

		snprintf(errbuf, errlen, "cannot open %s: %s", path,
			 strerror(err));
		return -err;
	}
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int err = errno;

		if (err == EWOULDBLOCK) {
			snprintf(errbuf, errlen,
				 "%s is in use by another process "
				 "(another mboxd?)",
				 path);
			return -EBUSY;
		}
		snprintf(errbuf, errlen, "cannot lock %s: %s", path,
			 strerror(err));
		return -err;
	}
	return 0;
}

/* Run SQL that needs no result; on failure describe it in errbuf. */
static int
open_exec(Store *s, const char *sql, char *errbuf, size_t errlen)
{
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
	int r;

	if (rc == SQLITE_OK)
		return 0;
	r = store_sql_error(s, rc, sql);
	snprintf(errbuf, errlen, "%s", s->errmsg);
	return r;
}

static int cap_wal(Store *s, int64_t cap_pages, int64_t page_size);

/* Run a PRAGMA that yields one integer. */
static int
pragma_int(Store *s, const char *sql, int64_t *out)
{
	sqlite3_stmt *st = NULL;
	int rc, r = 0;

	rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	else
		r = store_sql_error(s, rc, sql);
	sqlite3_finalize(st);
	return r;
}

static int
open_wal(Store *s, const char *path, char *errbuf, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	char mode[16] = "";
	int rc, r = 0;

	rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st,
				NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(st, 0);

		snprintf(mode, sizeof(mode), "%s", t ? (const char *)t : "");
	} else {
		r = store_sql_error(s, rc, "cannot enable WAL mode");
		snprintf(errbuf, errlen, "%s: %s", path, s->errmsg);
	}
	sqlite3_finalize(st);
	if (r == 0 && strcmp(mode, "wal") != 0) {
		snprintf(errbuf, errlen,
			 "%s: cannot enable WAL mode (journal_mode is %s)",
			 path, mode);
		r = -EIO;
	}
	return r;
}

static int
store_open_db(Store *s, const char *path, char *errbuf, size_t errlen)
{
	char sql[64];
	int64_t page_size = 0;
	int version = 0, rc, r;

	/* SQLite writes a WAL frame in two pwrites; walbuf makes a commit
	 * one (or a few): 19 % more pipeline throughput, 12 % more with 16
	 * producers (doc/performance.md). */
	r = walbuf_new(&s->walbuf, NULL);
	if (r < 0) {
		snprintf(errbuf, errlen,
			 "cannot set up SQLite's file layer: %s", strerror(-r));
		return r;
	}
	rc = sqlite3_open_v2(path, &s->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				     SQLITE_OPEN_NOMUTEX,
			     walbuf_name(s->walbuf));
	if (rc != SQLITE_OK) {
		snprintf(errbuf, errlen, "cannot open %s: %s", path,
			 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
		return rc == SQLITE_NOMEM ? -ENOMEM : -EIO;
	}
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
	/* Hardening: a crafted file cannot make us run its SQL functions or
	 * let SQL corrupt the file format. */
	sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	sqlite3_db_config(s->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);

	/* Before anything writes: a foreign or newer file stays untouched
	 * (even its journal mode). The first read also detects a file that
	 * is not a database at all. */
	r = schema_check(s->db, &version, errbuf, errlen);
	if (r < 0) {
		char why[256];

		snprintf(why, sizeof(why), "%s", errbuf);
		snprintf(errbuf, errlen, "%s: %s", path, why);
		return r;
	}
	/* Before the file is written: a no-op on an existing database. */
	r = open_exec(s, "PRAGMA page_size = " STR(STORE_PAGE_SIZE), errbuf,
		      errlen);
	if (r == 0)
		r = open_wal(s, path, errbuf, errlen);
	if (r < 0)
		return r;
	snprintf(sql, sizeof(sql), "PRAGMA synchronous = %s",
		 s->sync == STORE_SYNC_OFF ? "OFF" : "NORMAL");
	r = open_exec(s, sql, errbuf, errlen);
	if (r == 0)
		r = open_exec(s, "PRAGMA foreign_keys = ON", errbuf, errlen);
	if (r == 0)
		r = open_exec(s, "PRAGMA temp_store = MEMORY", errbuf, errlen);
	/* Debian builds SQLite with secure_delete on by default: every page
	 * a delete empties is zeroed and written to the WAL, checkpointed
	 * and synced, although it only goes on the free list, and every
	 * deleted row is zeroed in its page. A queue empties pages all the
	 * time: off, the backlog moves 4-12 % faster and the store runs 12 %
	 * fewer instructions a message (doc/performance.md). SQLite's own
	 * default. Deleted messages may then stay in the database and WAL
	 * files until overwritten (doc/security.md): the files are mode 0600,
	 * readable only by whoever can read every queued message anyway. */
	if (r == 0)
		r = open_exec(s, "PRAGMA secure_delete = OFF", errbuf, errlen);
	/* The CHECKs of the message table are for other writers (an
	 * operator's sqlite3 shell): this code checks priority itself and
	 * writes states from its own constants. SQLite evaluates
	 * "state IN (0, 1, 2)" by building a temporary index for every row
	 * inserted or updated: a quarter of the broker's instructions per
	 * message (callgrind), and one malloc'd B-tree each time. */
	if (r == 0)
		r = open_exec(s, "PRAGMA ignore_check_constraints = ON", errbuf,
			      errlen);
	if (r == 0)
		r = open_exec(s, "PRAGMA cache_size = " STORE_CACHE_SIZE,
			      errbuf, errlen);
	if (r == 0) {
		r = pragma_int(s, "PRAGMA page_size", &page_size);
		if (r == 0)
			r = cap_wal(s, 0, page_size);
		if (r < 0)
			snprintf(errbuf, errlen, "%s: %s", path, s->errmsg);
	}
	/* What "no cap" is to this SQLite (store_set_max_bytes(s, 0)). */
	if (r == 0) {
		r = pragma_int(s, "PRAGMA max_page_count",
			       &s->max_pages_default);
		if (r < 0)
			snprintf(errbuf, errlen, "%s", s->errmsg);
	}
	if (r < 0)
		return r;
	r = schema_migrate(s->db, &version, errbuf, errlen);
	if (r < 0) {
		char why[256];

		snprintf(why, sizeof(why), "%s", errbuf);
		snprintf(errbuf, errlen, "%s: %s", path, why);
		return r;
	}
	if (version != SCHEMA_VERSION)
		s->unsynced = true; /* the migration is made durable below */
	return 0;
}

/* The statements themselves are prepared on first use (stmt_get); what
 * stands in for one that cannot be is prepared now. */
static int
store_prepare(Store *s, char *errbuf, size_t errlen)
{
	int rc = sqlite3_create_function_v2(s->db, "mboxd_unprepared", -1,
					    SQLITE_UTF8 | SQLITE_DIRECTONLY, s,
					    unprepared_fn, NULL, NULL, NULL);

	if (rc == SQLITE_OK)
		/* ?64: more parameters than any statement binds. */
		rc = sqlite3_prepare_v3(s->db, "SELECT mboxd_unprepared(?64)",
					-1, SQLITE_PREPARE_PERSISTENT,
					&s->unprepared, NULL);
	if (rc != SQLITE_OK) {
		snprintf(errbuf, errlen, "cannot prepare statements: %s",
			 sqlite3_errmsg(s->db));
		return rc == SQLITE_NOMEM ? -ENOMEM : -EIO;
	}
	return 0;
}

static int
cmp_entry_name(const void *a, const void *b)
{
	const Entry *const *x = a, *const *y = b;

	return strcmp((*x)->mb.name, (*y)->mb.name);
}

/* Load every mailbox, then its counters with one GROUP BY. */
static int
store_load(Store *s, char *errbuf, size_t errlen)
{
	sqlite3_stmt *st = stmt_get(s, ST_MB_LOAD);
	int r = 0, rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 1);
		Entry *e;

		if (!name || !name_valid(name, MBOX_NAME_MAX + 1)) {
			r = store_error(s, -EINVAL,
					"mailbox %lld has an invalid name",
					(long long)sqlite3_column_int64(st, 0));
			goto out;
		}
		r = index_reserve(s, s->n_mb + 1);
		if (r < 0)
			goto out;
		e = calloc(1, sizeof(*e));
		if (!e) {
			r = store_error(s, -ENOMEM, "out of memory");
			goto out;
		}
		e->mb.id = sqlite3_column_int64(st, 0);
		snprintf(e->mb.name, sizeof(e->mb.name), "%s", name);
		e->mb.owner_uid = (uint32_t)sqlite3_column_int64(st, 2);
		e->mb.gid = (uint32_t)sqlite3_column_int64(st, 3);
		e->mb.mode = (uint32_t)sqlite3_column_int64(st, 4);
		e->mb.lease_ms = (uint64_t)sqlite3_column_int64(st, 5);
		e->mb.max_deliveries = (uint64_t)sqlite3_column_int64(st, 6);
		e->mb.max_msgs = (uint64_t)sqlite3_column_int64(st, 7);
		e->mb.max_bytes = (uint64_t)sqlite3_column_int64(st, 8);
		e->mb.ttl_ms = (uint64_t)sqlite3_column_int64(st, 9);
		e->mb.flags = (uint32_t)sqlite3_column_int64(st, 10);
		e->mb.created_ns = sqlite3_column_int64(st, 11);
		e->disk = mbset_from(&e->mb);
		/* Rows come in id order: both arrays get appended to, and
		 * by_name is sorted once at the end. */
		s->by_id[s->n_mb] = e;
		s->by_name[s->n_mb] = e;
		owner_add(s, e);
		s->n_mb++;
	}
	if (rc != SQLITE_DONE) {
		r = store_sql_error(s, rc, "cannot load the mailboxes");
		goto out;
	}
	stmt_done(st);
	if (s->n_mb)
		qsort(s->by_name, s->n_mb, sizeof(Entry *), cmp_entry_name);

	st = stmt_get(s, ST_MB_COUNTERS);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		StoreMailbox *mb =
			store_mailbox_by_id(s, sqlite3_column_int64(st, 0));
		uint64_t n = (uint64_t)sqlite3_column_int64(st, 2);

		if (!mb)
			continue; /* the foreign key makes this impossible */
		switch (sqlite3_column_int64(st, 1)) {
		case STORE_READY:
			mb->n_ready += n;
			break;
		case STORE_LEASED:
			leased_add(s, mb, n);
			break;
		default:
			mb->n_dead += n;
			break;
		}
		mb->bytes += (uint64_t)sqlite3_column_int64(st, 3);
	}
	if (rc != SQLITE_DONE)
		r = store_sql_error(s, rc, "cannot count the messages");
out:
	stmt_done(st);
	if (r < 0)
		snprintf(errbuf, errlen, "%s", s->errmsg);
	return r;
}

/* Load every binding into its mailbox's entry. */
static int
store_load_bindings(Store *s, char *errbuf, size_t errlen)
{
	sqlite3_stmt *st = stmt_get(s, ST_BIND_LOAD);
	int r = 0, rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		StoreMailbox *mb =
			store_mailbox_by_id(s, sqlite3_column_int64(st, 0));
		const char *pattern = (const char *)sqlite3_column_text(st, 1);
		Entry *e;
		size_t i;
		bool found;
		char *p;

		if (!mb)
			continue; /* the foreign key makes this impossible */
		e = entry_of(mb);
		if (pattern_check(s, pattern) < 0) {
			r = store_error(s, -EINVAL,
					"mailbox %s has an invalid binding",
					mb->name);
			break;
		}
		i = pat_pos(e, pattern, &found);
		if (found)
			continue; /* the primary key makes this impossible */
		r = pat_reserve(s, e, e->n_pat + 1);
		if (r < 0)
			break;
		p = strdup(pattern);
		if (!p) {
			r = store_error(s, -ENOMEM, "out of memory");
			break;
		}
		pat_insert(e, i, p);
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = store_sql_error(s, rc, "cannot load the bindings");
	stmt_done(st);
	if (r < 0)
		snprintf(errbuf, errlen, "%s", s->errmsg);
	return r;
}

/* The void leases that spend their message's last delivery: to the dead
 * list. store_load counted them READY (state 0). */
static int
recover_kill_spent(Store *s)
{
	sqlite3_stmt *st = stmt_get(s, ST_LEASE_VOID_KILL);
	int r = 0, rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		StoreMailbox *mb =
			store_mailbox_by_id(s, sqlite3_column_int64(st, 0));

		if (!mb)
			continue; /* the foreign key makes this impossible */
		r = journal_touch(s, entry_of(mb));
		if (r < 0)
			break;
		counter_sub(&mb->n_ready, 1);
		mb->n_dead++;
		s->txn_wrote = true;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = store_sql_error(s, rc,
				    "move spent messages to the dead list");
	stmt_done(st);
	return r;
}

/*
 * After a restart nobody holds a lease and no connection owns a temporary
 * mailbox: every leased message becomes READY (same id, so same place in
 * line), its lease counted as a delivery (DEAD if that was its mailbox's
 * max_deliveries-th, as at a release), and temporary mailboxes go, in
 * one durable transaction. The counters already count a message of the
 * lease table as READY (its row says 0); rows of state 1 come from builds
 * before schema version 4.
 */
static int
store_recover(Store *s, char *errbuf, size_t errlen)
{
	size_t i = 0;
	int r;

	r = store_begin(s);
	/* A row above the reservation (written by another program, or a
	 * lost id_reserve row): cover it before anything can delete it,
	 * or its id could be handed out again after the next restart. */
	if (r == 0 && s->next_msg_id - 1 > s->ids_reserved)
		r = store_reserve_ids(s, s->next_msg_id - 1);
	if (r == 0)
		r = recover_kill_spent(s);
	if (r == 0)
		r = stmt_run(s, stmt_get(s, ST_LEASE_VOID_COUNT),
			     "count the void leases");
	if (r == 0 && sqlite3_changes(s->db) > 0)
		s->txn_wrote = true;
	/* Leases of messages gone too (another program deleted them). */
	if (r == 0)
		r = stmt_run(s, stmt_get(s, ST_LEASE_VOID), "void the leases");
	if (r == 0 && sqlite3_changes(s->db) > 0)
		s->txn_wrote = true;
	while (r == 0 && i < s->n_mb) {
		Entry *e = s->by_id[i];
		sqlite3_stmt *st;

		if (e->mb.flags & STORE_MB_TEMP) {
			r = store_mailbox_delete(s, &e->mb);
			continue; /* by_id[i] is the next one now */
		}
		i++;
		if (e->mb.n_leased == 0)
			continue;
		r = journal_touch(s, e);
		if (r < 0)
			break;
		st = stmt_get(s, ST_MB_RESET_LEASED);
		sqlite3_bind_int64(st, 1, e->mb.id);
		r = stmt_run(s, st, "void the leases");
		if (r < 0)
			break;
		e->mb.n_ready += e->mb.n_leased;
		leased_sub(s, &e->mb, e->mb.n_leased);
		s->txn_wrote = true;
	}
	if (r == 0)
		r = store_commit(s, true);
	else
		store_rollback(s);
	if (r < 0)
		snprintf(errbuf, errlen, "cannot recover the store: %s",
			 s->errmsg);
	return r;
}

/* Where message ids go on (see store_next_id). */
static int
store_load_ids(Store *s, char *errbuf, size_t errlen)
{
	sqlite3_stmt *st = stmt_get(s, ST_ID_LOAD);
	int rc = sqlite3_step(st);
	int r = 0;

	if (rc == SQLITE_ROW) {
		int64_t last = sqlite3_column_int64(st, 0);
		int64_t max_id = sqlite3_column_int64(st, 1);

		/* What is committed; store_recover raises it to max_id. */
		s->ids_reserved = last;
		s->next_msg_id = (max_id > last ? max_id : last) + 1;
	} else {
		r = store_sql_error(s, rc, "cannot read the last message id");
		snprintf(errbuf, errlen, "%s", s->errmsg);
	}
	stmt_done(st);
	return r;
}

int
store_open(Store **out, const char *path, StoreSync sync, char *errbuf,
	   size_t errlen)
{
	char dummy[1];
	Store *s;
	int r;

	*out = NULL;
	if (!errbuf || errlen == 0) {
		errbuf = dummy;
		errlen = sizeof(dummy);
	}
	errbuf[0] = '\0';
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	s->lock_fd = -1;
	s->sync = sync;
	s->cap_in = -1;
	r = store_lock(s, path, errbuf, errlen);
	if (r == 0)
		r = store_open_db(s, path, errbuf, errlen);
	if (r == 0)
		r = store_prepare(s, errbuf, errlen);
	if (r == 0)
		r = store_load(s, errbuf, errlen);
	if (r == 0)
		r = store_load_ids(s, errbuf, errlen);
	if (r == 0)
		r = store_load_bindings(s, errbuf, errlen);
	if (r == 0)
		r = store_recover(s, errbuf, errlen);
	if (r < 0) {
		store_free(s);
		return r;
	}
	*out = s;
	return 0;
}

Store *
store_free(Store *s)
{
	if (!s)
		return NULL;
	if (s->in_txn)
		txn_abort(s);
	for (size_t i = 0; i < s->n_mb; i++)
		entry_free(s->by_id[i]);
	free(s->by_id);
	free(s->by_name);
	free(s->owners);
	free(s->journal);
	free(s->bundo);
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(s->stmt[i]);
	sqlite3_finalize(s->unprepared);
	for (int i = 0; i < CAP_N; i++)
		sqlite3_finalize(s->cap_stmt[i]);
	/* Last connection: SQLite checkpoints and removes the WAL. A
	 * connection that cannot close still uses the VFS: keep it. */
	if (sqlite3_close(s->db) == SQLITE_OK)
		walbuf_free(s->walbuf);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	free(s);
	return NULL;
}

/* Prepare sql into *out (replacing it). */
static int
cap_prepare_sql(Store *s, const char *sql, sqlite3_stmt **out)
{
	int rc;

	sqlite3_finalize(*out);
	*out = NULL;
	rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out,
				NULL);
	return rc == SQLITE_OK ? 0 : store_sql_error(s, rc, sql);
}

/* Prepare "PRAGMA max_page_count = pages" into *out (replacing it). */
static int
cap_prepare(Store *s, int64_t pages, sqlite3_stmt **out)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld",
		 (long long)pages);
	return cap_prepare_sql(s, sql, out);
}

/* Under a small cap, checkpoint often enough that the WAL stays a
 * fraction of the database, and cut it back to the cap after one; and
 * every wal_max_pages at most (store_set_wal_max), under a cap or not. */
static int
cap_wal(Store *s, int64_t cap_pages, int64_t page_size)
{
	int64_t wal_pages = s->wal_max_pages;
	int64_t most, ckpt, limit = STORE_JOURNAL_SIZE_LIMIT, v;
	char sql[96];
	int r;

	if (page_size <= 0)
		return store_error(s, -EIO, "the page size is %lld",
				   (long long)page_size);
	most = STORE_WAL_CHECKPOINT_BYTES / page_size;
	ckpt = cap_pages ? cap_pages / 4 : most;

	if (ckpt < STORE_WAL_AUTOCHECKPOINT_MIN)
		ckpt = STORE_WAL_AUTOCHECKPOINT_MIN;
	if (ckpt > most)
		ckpt = most;
	if (wal_pages && ckpt > wal_pages)
		ckpt = wal_pages < STORE_WAL_AUTOCHECKPOINT_MIN
			       ? STORE_WAL_AUTOCHECKPOINT_MIN
			       : wal_pages;
	/* Not cut back to wal_pages: what a large transaction made the file
	 * is reused by the next frames (no new disk space), and a file cut
	 * at every checkpoint would grow again, each growth a slower fsync. */
	if (cap_pages && cap_pages * page_size < limit)
		limit = cap_pages * page_size;
	snprintf(sql, sizeof(sql), "PRAGMA wal_autocheckpoint = %lld",
		 (long long)ckpt);
	r = pragma_int(s, sql, &v);
	if (r < 0)
		return r;
	snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit = %lld",
		 (long long)limit);
	return pragma_int(s, sql, &v);
}

/* No cap: SQLite's own limit, and no switching before writes. */
static int
cap_drop(Store *s, int64_t page_size)
{
	char sql[64];
	int64_t v;
	int r;

	for (int i = 0; i < CAP_N; i++) {
		sqlite3_finalize(s->cap_stmt[i]);
		s->cap_stmt[i] = NULL;
	}
	s->cap_in = -1;
	s->cap_pages = 0;
	s->cap_reserve = 0;
	s->cap_known = false;
	snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld",
		 (long long)s->max_pages_default);
	r = pragma_int(s, sql, &v);
	if (r == 0)
		r = cap_wal(s, 0, page_size);
	return r;
}

/* The pages a cap of all pages keeps for the writes that drain. */
static int64_t
cap_reserve_pages(int64_t all)
{
	int64_t reserve = all / STORE_CAP_RESERVE_DIV;

	return reserve < STORE_CAP_RESERVE_MIN ? STORE_CAP_RESERVE_MIN
					       : reserve;
}

/*
 * What the cap bounds. max_page_count limits the pages of the database
 * image: in WAL mode the database as the open transaction sees it, frames
 * in the WAL included, which is what the file holds after a checkpoint.
 * SQLite checks it whenever a write needs a page past the end, so the
 * statement fails with SQLITE_FULL before anything reaches a file (and
 * SQLite rolls back the whole transaction). The WAL file is outside it:
 * it holds the frames since the last checkpoint, so under a cap
 * checkpoints come every quarter of the cap's pages (at most 16 MiB, at
 * least 16) and the file is cut back to the cap's size after one.
 *
 * Draining needs room too: a lease adds a row to the lease table, a
 * release or a kill rewrites a row, any of which can split a page. So
 * writes that add data (posts, mailboxes, bindings) stop
 * STORE_CAP_RESERVE_DIV-th of the cap (at least STORE_CAP_RESERVE_MIN
 * pages) short of it, and every other write (lease, ack, release, kill,
 * purge, delete) may use that reserve: a store full of posts can still be
 * consumed, and its freed pages are reused (no auto-vacuum), so acks make
 * room for posts again. Leases alone could fill the reserve (thousands of
 * them held at once): a lease takes only what fits (cap_lease_room), so
 * that the acks of its batch still commit and give the room back.
 */
/*
 * Cap the store at all pages, adds keeping reserve pages of them free
 * (at least cap_reserve_pages(all)).
 */
static int
cap_set(Store *s, int64_t all, int64_t reserve, int64_t page_size)
{
	int r;

	if (reserve < cap_reserve_pages(all))
		reserve = cap_reserve_pages(all);
	/* SQLite raises a max_page_count below the file's size to that
	 * size, which is why cap_add_room counts free pages as well. */
	r = cap_prepare(s, all > reserve ? all - reserve : 1,
			&s->cap_stmt[CAP_ADD]);
	if (r == 0)
		r = cap_prepare(s, all, &s->cap_stmt[CAP_ALL]);
	if (r == 0)
		r = cap_prepare_sql(s, "PRAGMA page_count",
				    &s->cap_stmt[CAP_PAGE_COUNT]);
	if (r == 0)
		r = cap_prepare_sql(s, "PRAGMA freelist_count",
				    &s->cap_stmt[CAP_FREELIST]);
	s->cap_pages = all;
	s->cap_reserve = reserve;
	s->cap_page_size = page_size;
	s->cap_known = false;
	/* In force from the next write on; the general limit until then. */
	s->cap_in = -1;
	if (r == 0)
		r = store_cap_use(s, CAP_ALL);
	if (r == 0)
		r = cap_wal(s, all, page_size);
	if (r < 0) {
		char why[sizeof(s->errmsg)];

		memcpy(why, s->errmsg, sizeof(why));
		cap_drop(s, page_size);
		memcpy(s->errmsg, why, sizeof(why));
	}
	return r;
}

/* The page size and the pages of the database image, for a cap. */
static int
cap_measure(Store *s, int64_t *page_size, int64_t *pages)
{
	int r;

	if (s->in_callback)
		return store_error(
			s, -EBUSY,
			"the store was called from its own callback");
	r = pragma_int(s, "PRAGMA page_size", page_size);
	if (r == 0)
		r = pragma_int(s, "PRAGMA page_count", pages);
	if (r < 0)
		return r;
	if (*page_size <= 0)
		return store_error(s, -EIO, "the page size is %lld",
				   (long long)*page_size);
	return 0;
}

int
store_set_max_bytes(Store *s, uint64_t bytes)
{
	int64_t page_size = 0, pages = 0, all;
	uint64_t n;
	int r;

	r = cap_measure(s, &page_size, &pages);
	if (r < 0)
		return r;
	if (bytes == 0) {
		r = cap_drop(s, page_size);
		if (r == 0)
			s->hold_pages = 0;
		return r;
	}
	n = bytes / (uint64_t)page_size;
	all = n > (uint64_t)s->max_pages_default ? s->max_pages_default
						 : (int64_t)n;
	if (all < pages)
		return store_error(s, -EINVAL,
				   "the database holds %lld bytes already, "
				   "more than the cap of %llu",
				   (long long)(pages * page_size),
				   (unsigned long long)bytes);
	r = cap_set(s, all, 0, page_size);
	if (r == 0)
		s->hold_pages = 0;
	return r;
}

int
store_hold_size(Store *s, uint64_t grow_bytes, uint64_t limit_bytes)
{
	int64_t page_size = 0, pages = 0, grow, all, hold;
	int r;

	r = cap_measure(s, &page_size, &pages);
	if (r < 0)
		return r;
	grow = (int64_t)(grow_bytes / (uint64_t)page_size);
	if (grow > s->max_pages_default - pages)
		grow = s->max_pages_default - pages;
	all = pages + grow;
	/* Held already (the operator's cap changed): the file may have
	 * grown into the margin since, which must not be granted again. */
	if (s->hold_pages >= pages && s->hold_pages < all) {
		all = s->hold_pages;
		grow = all - pages;
	}
	hold = all;
	if (limit_bytes && (uint64_t)all * (uint64_t)page_size > limit_bytes) {
		/* The operator's cap is nearer: it bounds the growth. */
		all = (int64_t)(limit_bytes / (uint64_t)page_size);
		if (all < pages)
			return store_set_max_bytes(s, limit_bytes);
		grow = all - pages;
	}
	r = cap_set(s, all, grow + pages / STORE_CAP_RESERVE_DIV, page_size);
	if (r == 0)
		s->hold_pages = hold;
	return r;
}

int
store_set_wal_max(Store *s, uint64_t bytes)
{
	int64_t page_size = 0, pages = 0;
	int r = cap_measure(s, &page_size, &pages);

	if (r < 0)
		return r;
	s->wal_max_pages = (int64_t)(bytes / (uint64_t)page_size);
	if (bytes && s->wal_max_pages == 0)
		s->wal_max_pages = 1; /* cap_wal makes it its least */
	return cap_wal(s, s->cap_pages, page_size);
}

uint64_t
store_cap_bytes(const Store *s)
{
	return (uint64_t)s->cap_pages * (uint64_t)s->cap_page_size;
}

void
store_on_disk_full(Store *s, bool (*fn)(void *ctx, bool wal), void *ctx)
{
	walbuf_on_full(s->walbuf, fn, ctx);
}

int
store_image_bytes(Store *s, uint64_t *out)
{
	int64_t page_size = 0, pages = 0;
	int r = cap_measure(s, &page_size, &pages);

	if (r == 0)
		*out = (uint64_t)page_size * (uint64_t)pages;
	return r;
}
