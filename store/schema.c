/*
 * schema.c - DDL of the store and its forward migrations.
 *
 * Invariants:
 * - PRAGMA user_version is the number of the last step applied; steps
 *   run in order, all of them in one transaction with the version bump,
 *   so a crash mid-migration leaves the old version intact.
 * - PRAGMA application_id marks the file as ours from the first step on;
 *   a file with another owner is never written to.
 * - Steps are append-only: once released, a step's SQL never changes;
 *   a new version is one more entry in schema_steps[].
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>

#include "store/schema.h"

typedef struct SchemaStep {
	int version; /* user_version after this step */
	const char *sql;
} SchemaStep;

/* The message table's columns after its id, as version 1 made them and
 * version 3 rebuilt them. Released: never edit, add a step instead. */
#define MESSAGE_COLUMNS                                                        \
	" mailbox_id INTEGER NOT NULL REFERENCES mailbox(id),"                 \
	" state INTEGER NOT NULL CHECK (state IN (0, 1, 2)),"                  \
	" priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 9),"         \
	" deliveries INTEGER NOT NULL DEFAULT 0,"                              \
	" time_ns INTEGER NOT NULL,"                                           \
	" ready_ns INTEGER NOT NULL DEFAULT 0,"                                \
	" expires_ns INTEGER NOT NULL DEFAULT 0,"                              \
	" pid INTEGER NOT NULL,"                                               \
	" uid INTEGER NOT NULL,"                                               \
	" gid INTEGER NOT NULL,"                                               \
	" comm TEXT NOT NULL DEFAULT '',"                                      \
	" headers BLOB,"                                                       \
	" dedup TEXT,"                                                         \
	" dead_reason TEXT,"                                                   \
	" data BLOB NOT NULL"

/*
 * Version 1.
 *
 * AUTOINCREMENT makes ids strictly increasing and never reused, even
 * after the row with the highest id is deleted (sqlite_sequence keeps
 * the high-water mark); message ids are a promise to clients. Version 3
 * keeps the promise without it.
 *
 * data is the last column so that every other column sits on the row's
 * first page: reading metadata (lease, peek, counters via length(data))
 * never touches the payload's overflow pages.
 *
 * message_queue serves the lease and peek queries: equality on
 * (mailbox_id, state), then rows come out in delivery order (priority
 * descending, id ascending) with no sort, and ready_ns is in the index
 * so delayed messages at the head of the line are skipped without
 * reading their rows. It also serves "WHERE mailbox_id = ?" (mailbox
 * deletion, the foreign key check).
 *
 * message_delayed holds only READY rows with a delay (most rows have
 * ready_ns 0 and never enter it), so count_delayed and next_ready cost
 * one range scan, not a scan of the whole mailbox.
 */
static const char schema_v1[] =
	"CREATE TABLE mailbox ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" name TEXT NOT NULL UNIQUE,"
	" owner_uid INTEGER NOT NULL,"
	" gid INTEGER NOT NULL,"
	" mode INTEGER NOT NULL,"
	" lease_ms INTEGER NOT NULL,"
	" max_deliveries INTEGER NOT NULL DEFAULT 0,"
	" max_msgs INTEGER NOT NULL DEFAULT 0,"
	" max_bytes INTEGER NOT NULL DEFAULT 0,"
	" ttl_ms INTEGER NOT NULL DEFAULT 0,"
	" flags INTEGER NOT NULL DEFAULT 0,"
	" created_ns INTEGER NOT NULL"
	");"
	"CREATE TABLE message ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT," MESSAGE_COLUMNS ");"
	"CREATE INDEX message_queue ON message"
	" (mailbox_id, state, priority DESC, id, ready_ns);"
	"CREATE INDEX message_delayed ON message (mailbox_id, ready_ns)"
	" WHERE state = 0 AND ready_ns > 0;"
	"CREATE INDEX message_dedup ON message (mailbox_id, dedup)"
	" WHERE dedup IS NOT NULL;";

/*
 * Version 2: dead lists, expiry, dedup window, topic bindings.
 *
 * message_queue gains expires_ns so that the lease query skips expired
 * messages inside the index, as it skips delayed ones, without reading
 * their rows. SQLite cannot add a column to an index: it is rebuilt
 * under the same name (INDEXED BY clauses keep working).
 *
 * message_expiry holds only READY rows with a ttl: the next expiry is
 * its first entry, and the expired ones are a prefix of it.
 *
 * Dedup keys live in their own table because they must outlive their
 * messages (a key of acked work still answers a retried post for the
 * dedup window); message.dedup stays as the message's own field, and
 * message_dedup, which nothing reads any more, goes. Keys of messages
 * already stored are carried over, the latest post of a key winning as
 * INSERT OR REPLACE does at insert. dedup_time serves the prune.
 *
 * binding: one row per (mailbox, pattern); the store keeps a copy in
 * memory, loaded at open.
 */
static const char schema_v2[] =
	"DROP INDEX message_queue;"
	"CREATE INDEX message_queue ON message"
	" (mailbox_id, state, priority DESC, id, ready_ns, expires_ns);"
	"CREATE INDEX message_expiry ON message (expires_ns, mailbox_id)"
	" WHERE state = 0 AND expires_ns > 0;"
	"CREATE TABLE dedup ("
	" mailbox_id INTEGER NOT NULL REFERENCES mailbox(id),"
	" key TEXT NOT NULL,"
	" msg_id INTEGER NOT NULL,"
	" time_ns INTEGER NOT NULL,"
	" PRIMARY KEY (mailbox_id, key)"
	") WITHOUT ROWID;"
	"CREATE INDEX dedup_time ON dedup (time_ns);"
	"INSERT OR REPLACE INTO dedup (mailbox_id, key, msg_id, time_ns)"
	" SELECT mailbox_id, dedup, id, time_ns FROM message"
	" WHERE dedup IS NOT NULL ORDER BY id;"
	"DROP INDEX message_dedup;"
	"CREATE TABLE binding ("
	" mailbox_id INTEGER NOT NULL REFERENCES mailbox(id),"
	" pattern TEXT NOT NULL,"
	" PRIMARY KEY (mailbox_id, pattern)"
	") WITHOUT ROWID;";

/*
 * Version 3: message ids without AUTOINCREMENT.
 *
 * AUTOINCREMENT rewrites sqlite_sequence in every transaction that
 * posts: one more page in the WAL and its fsync for every commit, a
 * sixth of what a small commit writes (doc/performance.md). The store
 * now hands ids out itself, in blocks: id_reserve.last is the highest
 * id that may have been given out, raised by a block in the
 * transaction that first goes past it. At open, ids continue after
 * max(last, the highest id stored), so they stay strictly increasing
 * and are never reused, whatever was deleted; a restart skips what is
 * left of the block.
 *
 * SQLite cannot drop AUTOINCREMENT from a table: message is rebuilt
 * with the same columns, rows and ids, and its indexes with it. The
 * reservation starts from the sequence AUTOINCREMENT kept, or the
 * highest id stored if that is higher (a database whose sequence row
 * is missing). id_reserve has one row, id 1.
 */
static const char schema_v3[] =
	"CREATE TABLE id_reserve ("
	" id INTEGER PRIMARY KEY CHECK (id = 1),"
	" last INTEGER NOT NULL"
	");"
	"INSERT INTO id_reserve (id, last) SELECT 1, max("
	" coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'message'),"
	" 0), coalesce((SELECT max(id) FROM message), 0));"
	"CREATE TABLE message_v3 ("
	" id INTEGER PRIMARY KEY," MESSAGE_COLUMNS ");"
	"INSERT INTO message_v3 SELECT id, mailbox_id, state, priority,"
	" deliveries, time_ns, ready_ns, expires_ns, pid, uid, gid, comm,"
	" headers, dedup, dead_reason, data FROM message ORDER BY id;"
	"DROP TABLE message;"
	"ALTER TABLE message_v3 RENAME TO message;"
	"CREATE INDEX message_queue ON message"
	" (mailbox_id, state, priority DESC, id, ready_ns, expires_ns);"
	"CREATE INDEX message_delayed ON message (mailbox_id, ready_ns)"
	" WHERE state = 0 AND ready_ns > 0;"
	"CREATE INDEX message_expiry ON message (expires_ns, mailbox_id)"
	" WHERE state = 0 AND expires_ns > 0;";

/*
 * Version 4: leases in a table of their own.
 *
 * A lease used to rewrite its message's row (state 1, deliveries + 1) and
 * move its message_queue entry: with a backlog, the page of every message
 * taken went to the WAL twice, once for the lease and once for the ack,
 * and the index entry was deleted and inserted again
 * (doc/performance.md). A leased message now keeps its row as posted,
 * state 0; its lease is a row here, a few bytes on pages every lease
 * shares. The message's delivery count is its row's plus one while it is
 * leased: a release writes the sum to the row, a restart does the same
 * for every lease left (leases are void after a restart, delivery counts
 * kept). mailbox_id lets an ack check the mailbox before it deletes.
 * State 1 stays allowed: a database from before this step has such rows
 * until the next open turns them back to 0.
 */
static const char schema_v4[] = "CREATE TABLE lease ("
				" msg_id INTEGER PRIMARY KEY,"
				" mailbox_id INTEGER NOT NULL"
				");";

static const SchemaStep schema_steps[] = {
	{1, schema_v1},
	{2, schema_v2},
	{3, schema_v3},
	{4, schema_v4},
};

/* Map a failed SQLite call to an errno and describe it in errbuf. */
static int
schema_fail(sqlite3 *db, int rc, const char *what, char *errbuf, size_t errlen)
{
	snprintf(errbuf, errlen, "%s: %s", what, sqlite3_errmsg(db));
	switch (rc & 0xff) {
	case SQLITE_NOTADB:
		snprintf(errbuf, errlen, "not an SQLite database (%s)",
			 sqlite3_errmsg(db));
		return -EINVAL;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_NOMEM:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

/* Run a query that yields one integer. */
static int
schema_int(sqlite3 *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			*out = sqlite3_column_int64(st, 0);
			rc = SQLITE_OK;
		}
	}
	/* finalize keeps the error message of a failed step. */
	sqlite3_finalize(st);
	return rc;
}

int
schema_check(sqlite3 *db, int *version, char *errbuf, size_t errlen)
{
	int64_t user_version, app_id, n_objects;
	int rc;

	rc = schema_int(db, "PRAGMA user_version", &user_version);
	if (rc != SQLITE_OK)
		return schema_fail(db, rc, "cannot read the schema version",
				   errbuf, errlen);
	rc = schema_int(db, "PRAGMA application_id", &app_id);
	if (rc != SQLITE_OK)
		return schema_fail(db, rc, "cannot read the application id",
				   errbuf, errlen);
	rc = schema_int(db, "SELECT count(*) FROM sqlite_master", &n_objects);
	if (rc != SQLITE_OK)
		return schema_fail(db, rc, "cannot read the schema", errbuf,
				   errlen);

	if (app_id != 0 && app_id != SCHEMA_APPLICATION_ID) {
		snprintf(errbuf, errlen,
			 "not an mboxd database (application_id 0x%llx)",
			 (unsigned long long)(uint32_t)app_id);
		return -EINVAL;
	}
	if (user_version > SCHEMA_VERSION) {
		snprintf(errbuf, errlen,
			 "database schema version %lld is newer than this "
			 "mboxd supports (%d); upgrade mboxd",
			 (long long)user_version, SCHEMA_VERSION);
		return -ENOTSUP;
	}
	if (user_version < 0 || (user_version > 0 && app_id == 0) ||
	    (user_version == 0 && n_objects > 0)) {
		/* Another program's tables: migrating would mix ours in. */
		snprintf(errbuf, errlen,
			 "not an mboxd database (it holds tables of another "
			 "program, user_version %lld)",
			 (long long)user_version);
		return -EINVAL;
	}
	*version = (int)user_version;
	return 0;
}

int
schema_migrate(sqlite3 *db, int *from, char *errbuf, size_t errlen)
{
	char sql[64];
	int version = 0, r, rc;

	rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return schema_fail(db, rc, "cannot begin the migration", errbuf,
				   errlen);
	/* Again inside the transaction: nobody can change it under us now. */
	r = schema_check(db, &version, errbuf, errlen);
	if (r < 0)
		goto fail;
	if (from)
		*from = version;
	if (version == SCHEMA_VERSION) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return 0;
	}

	for (size_t i = 0; i < sizeof(schema_steps) / sizeof(schema_steps[0]);
	     i++) {
		const SchemaStep *step = &schema_steps[i];

		if (step->version <= version)
			continue;
		rc = sqlite3_exec(db, step->sql, NULL, NULL, NULL);
		if (rc == SQLITE_OK) {
			/* PRAGMA takes no parameters: format the number. */
			snprintf(sql, sizeof(sql), "PRAGMA user_version = %d",
				 step->version);
			rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
		}
		if (rc != SQLITE_OK) {
			char what[64];

			snprintf(what, sizeof(what),
				 "migration to schema version %d failed",
				 step->version);
			r = schema_fail(db, rc, what, errbuf, errlen);
			goto fail;
		}
	}
	snprintf(sql, sizeof(sql), "PRAGMA application_id = %d",
		 SCHEMA_APPLICATION_ID);
	rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		r = schema_fail(db, rc, "cannot commit the migration", errbuf,
				errlen);
		goto fail;
	}
	return 0;

fail:
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return r;
}
