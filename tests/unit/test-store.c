/*
 * test-store.c - unit tests of the SQLite store (store/store.c, schema.c).
 *
 * Each test gets its own mkdtemp directory, removed in teardown. The
 * tests look at the database behind the store's back through a second,
 * plain SQLite connection (WAL lets it read while the store is open).
 *
 * A shim VFS, registered as the default before any test runs, counts
 * xSync calls on WAL files: that is how the tests see that a non-durable
 * commit costs no fsync and a durable one in FULL mode costs one.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store/store.h"
#include "store/walbuf.h"

#define NOW  1700000000000000000LL /* a fixed "now", ns since the epoch */
#define PAGE 8192 /* the page size of a new store (STORE_PAGE_SIZE) */

/* ------------------------------------------------------------------ */
/* A VFS shim that counts fsyncs of WAL files. Test-only global state. */

typedef struct CountFile {
	sqlite3_file base;
	sqlite3_file *real; /* right after this struct */
	int is_wal;
} CountFile;

static sqlite3_vfs *real_vfs;
static sqlite3_vfs count_vfs;
static int wal_syncs;
static bool fail_wal_sync; /* make WAL fsyncs fail */
/* WAL writes that reached the file (under store/walbuf.c). */
static int wal_writes;
static int64_t wal_bytes;
static int wal_write_max;
static bool fail_wal_write; /* make them fail */
/* Make a commit frame's header fail when it is written alone, as SQLite
 * does when it rewrites checksums after the commit frame. */
static bool fail_wal_commit_header;
/* Make a page written alone fail (a run that is just one page). */
static bool fail_wal_lone_page;
/* Make the next write of more than one frame fail, and say where it
 * would have ended (0 before). */
static bool fail_wal_run_once;
static int64_t fail_wal_run_end;
/* Make WAL writes from this offset on fail (-1: none). */
static int64_t fail_wal_from = -1;
/* The page size of the plain databases walbuf_open makes: SQLite's
 * default, and the store's (PAGE) in the tests run a second time at it
 * (fx_setup_store_pages). Row sizes scale with it (wal_bytes_at). */
static int walbuf_page = 4096;

#define REAL(f) (((CountFile *)(f))->real)

static int
cf_close(sqlite3_file *f)
{
	return REAL(f)->pMethods->xClose(REAL(f));
}

static int
cf_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
	return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}

static int
cf_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
	if (((CountFile *)f)->is_wal) {
		const unsigned char *h = buf;

		if (fail_wal_write)
			return SQLITE_IOERR_WRITE;
		if (fail_wal_commit_header && n == 24 &&
		    (h[4] | h[5] | h[6] | h[7]))
			return SQLITE_IOERR_WRITE;
		if (fail_wal_lone_page && n == walbuf_page)
			return SQLITE_IOERR_WRITE;
		if (fail_wal_run_once && n > 24 + walbuf_page) {
			fail_wal_run_once = false;
			fail_wal_run_end = off + n;
			return SQLITE_IOERR_WRITE;
		}
		if (fail_wal_from >= 0 && off >= fail_wal_from)
			return SQLITE_IOERR_WRITE;
		wal_writes++;
		wal_bytes += n;
		wal_write_max = n > wal_write_max ? n : wal_write_max;
	}
	return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}

static int
cf_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int
cf_sync(sqlite3_file *f, int flags)
{
	if (((CountFile *)f)->is_wal) {
		wal_syncs++;
		if (fail_wal_sync)
			return SQLITE_IOERR_FSYNC;
	}
	return REAL(f)->pMethods->xSync(REAL(f), flags);
}

static int
cf_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int
cf_lock(sqlite3_file *f, int lock)
{
	return REAL(f)->pMethods->xLock(REAL(f), lock);
}

static int
cf_unlock(sqlite3_file *f, int lock)
{
	return REAL(f)->pMethods->xUnlock(REAL(f), lock);
}

static int
cf_check_reserved(sqlite3_file *f, int *out)
{
	return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int
cf_file_control(sqlite3_file *f, int op, void *arg)
{
	return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int
cf_sector_size(sqlite3_file *f)
{
	return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int
cf_device_characteristics(sqlite3_file *f)
{
	return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int
cf_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **p)
{
	return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, p);
}

static int
cf_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
	return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}

static void
cf_shm_barrier(sqlite3_file *f)
{
	REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int
cf_shm_unmap(sqlite3_file *f, int delete_flag)
{
	return REAL(f)->pMethods->xShmUnmap(REAL(f), delete_flag);
}

static int
cf_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
	return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}

static int
cf_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
	return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods cf_methods = {
	3,
	cf_close,
	cf_read,
	cf_write,
	cf_truncate,
	cf_sync,
	cf_file_size,
	cf_lock,
	cf_unlock,
	cf_check_reserved,
	cf_file_control,
	cf_sector_size,
	cf_device_characteristics,
	cf_shm_map,
	cf_shm_lock,
	cf_shm_barrier,
	cf_shm_unmap,
	cf_fetch,
	cf_unfetch,
};

static int
cf_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
	int *out_flags)
{
	CountFile *c = (CountFile *)f;
	int rc;

	(void)vfs;
	c->real = (sqlite3_file *)(c + 1);
	c->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
	rc = real_vfs->xOpen(real_vfs, name, c->real, flags, out_flags);
	c->base.pMethods = c->real->pMethods ? &cf_methods : NULL;
	return rc;
}

static void
count_vfs_register(void)
{
	real_vfs = sqlite3_vfs_find(NULL);
	assert_non_null(real_vfs);
	assert_true(real_vfs->iVersion >= 3);
	count_vfs = *real_vfs;
	count_vfs.zName = "count";
	count_vfs.szOsFile = (int)sizeof(CountFile) + real_vfs->szOsFile;
	count_vfs.xOpen = cf_open;
	assert_int_equal(sqlite3_vfs_register(&count_vfs, 1), SQLITE_OK);
}

/* ------------------------------------------------------------------ */
/* Fixture */

typedef struct Fx {
	char dir[PATH_MAX - 64];
	char path[PATH_MAX];
	Store *s;
	struct rlimit fsize; /* restored in teardown */
} Fx;

static int
fx_setup(void **state)
{
	Fx *fx = calloc(1, sizeof(*fx));
	const char *tmp = getenv("TMPDIR");

	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "%s/test-store-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->path, sizeof(fx->path), "%s/mbox.db", fx->dir);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &fx->fsize), 0);
	*state = fx;
	return 0;
}

/* The same, for a walbuf test run again with the store's page size. */
static int
fx_setup_store_pages(void **state)
{
	int r = fx_setup(state);

	/* Only now: a failed setup skips the teardown that resets it. */
	walbuf_page = PAGE;
	return r;
}

static int
fx_teardown(void **state)
{
	Fx *fx = *state;
	DIR *d;
	struct dirent *de;

	walbuf_page = 4096;
	fail_wal_sync = false;
	fail_wal_write = false;
	fail_wal_commit_header = false;
	fail_wal_lone_page = false;
	fail_wal_run_once = false;
	fail_wal_from = -1;
	setrlimit(RLIMIT_FSIZE, &fx->fsize);
	signal(SIGXFSZ, SIG_DFL);
	fx->s = store_free(fx->s);
	d = opendir(fx->dir);
	if (d) {
		while ((de = readdir(d))) {
			char p[PATH_MAX + 256];

			if (de->d_name[0] == '.')
				continue;
			snprintf(p, sizeof(p), "%s/%s", fx->dir, de->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static void
fx_open(Fx *fx, StoreSync sync)
{
	char err[256] = "";
	int r = store_open(&fx->s, fx->path, sync, err, sizeof(err));

	if (r != 0)
		fail_msg("store_open: %d %s", r, err);
}

static void
fx_reopen(Fx *fx)
{
	fx->s = store_free(fx->s);
	fx_open(fx, STORE_SYNC_FULL);
}

/* Remove the database and its WAL and shared-memory files: the next open
 * makes a new one. */
static void
fx_remove_db(const Fx *fx)
{
	static const char *const ext[] = {"", "-wal", "-shm"};

	for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
		char path[PATH_MAX + 8];

		snprintf(path, sizeof(path), "%s%s", fx->path, ext[i]);
		unlink(path);
	}
}

/* A plain connection to the database, for looking behind the store. */
static sqlite3 *
raw_open(const Fx *fx)
{
	sqlite3 *db = NULL;

	assert_int_equal(
		sqlite3_open_v2(fx->path, &db,
				SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
				NULL),
		SQLITE_OK);
	return db;
}

static int64_t
raw_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int64_t v;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void
raw_exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err);
}

static StoreMailbox *
mk_mailbox(Store *s, const char *name)
{
	StoreMailbox tmpl = {0}, *mb = NULL;

	snprintf(tmpl.name, sizeof(tmpl.name), "%s", name);
	tmpl.owner_uid = 1000;
	tmpl.gid = 100;
	tmpl.mode = 0640;
	tmpl.lease_ms = MBOX_DEFAULT_LEASE_MS;
	assert_int_equal(store_begin(s), 0);
	assert_int_equal(store_mailbox_create(s, &tmpl, &mb), 0);
	assert_int_equal(store_commit(s, true), 0);
	assert_non_null(mb);
	return mb;
}

/* Insert into the open transaction; returns the id. */
static uint64_t
put(Store *s, StoreMailbox *mb, uint32_t prio, int64_t ready_ns,
    const char *text)
{
	StoreMsg m = {0};

	m.priority = prio;
	m.time_ns = NOW;
	m.ready_ns = ready_ns;
	m.pid = 42;
	m.uid = 1000;
	m.gid = 100;
	snprintf(m.comm, sizeof(m.comm), "tester");
	m.data = text;
	m.len = strlen(text);
	assert_int_equal(store_msg_insert(s, mb, &m), 0);
	assert_int_not_equal(m.id, 0);
	return m.id;
}

/* put() in a transaction of its own. */
static uint64_t
post(Store *s, StoreMailbox *mb, uint32_t prio, const char *text)
{
	uint64_t id;

	assert_int_equal(store_begin(s), 0);
	id = put(s, mb, prio, 0, text);
	assert_int_equal(store_commit(s, true), 0);
	return id;
}

/* What callbacks saw. */
typedef struct Seen {
	size_t n;
	uint64_t id[64];
	uint32_t state[64], deliveries[64], priority[64];
	char data[64][32];
	int stop_after; /* > 0: return 7 on that call */
} Seen;

static int
seen_cb(void *ctx, const StoreMsg *m)
{
	Seen *sn = ctx;

	if (sn->n < 64) {
		size_t len = m->len < 31 ? m->len : 31;

		sn->id[sn->n] = m->id;
		sn->state[sn->n] = m->state;
		sn->deliveries[sn->n] = m->deliveries;
		sn->priority[sn->n] = m->priority;
		memcpy(sn->data[sn->n], m->data, len);
		sn->data[sn->n][len] = '\0';
	}
	sn->n++;
	if (sn->stop_after > 0 && (int)sn->n == sn->stop_after)
		return 7;
	return 0;
}

static int
lease(Store *s, StoreMailbox *mb, int64_t now, size_t max, Seen *sn)
{
	int r;

	memset(sn, 0, sizeof(*sn));
	assert_int_equal(store_begin(s), 0);
	r = store_msg_lease(s, mb, now, max, seen_cb, sn);
	assert_true(r >= 0);
	assert_int_equal(store_commit(s, false), 0);
	return r;
}

static int
sum_leased_cb(void *ctx, StoreMailbox *mb)
{
	*(uint64_t *)ctx += mb->n_leased;
	return 0;
}

/* The n_leased of every mailbox, added up one by one. */
static uint64_t
sum_leased(Store *s)
{
	uint64_t n = 0;

	assert_int_equal(store_mailbox_foreach(s, sum_leased_cb, &n), 0);
	return n;
}

/* The counters of mb must equal what the database holds, and so must
 * the store's count of the leases of every mailbox. */
static void
check_counters(const Fx *fx, const StoreMailbox *mb)
{
	sqlite3 *db = raw_open(fx);
	char sql[256];
	int64_t v[4], all;
	/* A leased message keeps state 0 and has a row in lease. */
	const char *what[4] = {
		"state = 0 AND id NOT IN (SELECT msg_id FROM lease)",
		"state = 0 AND id IN (SELECT msg_id FROM lease)", "state = 2",
		"1"};

	for (int i = 0; i < 4; i++) {
		snprintf(sql, sizeof(sql),
			 "SELECT %s FROM message WHERE mailbox_id = %lld"
			 " AND %s",
			 i < 3 ? "count(*)" : "ifnull(sum(length(data)), 0)",
			 (long long)mb->id, what[i]);
		v[i] = raw_int(db, sql);
	}
	/* Leased messages of every mailbox: the store keeps their sum. */
	all = raw_int(db, "SELECT count(*) FROM message WHERE state = 0"
			  " AND id IN (SELECT msg_id FROM lease)");
	sqlite3_close(db);
	assert_int_equal(store_leases_held(fx->s), all);
	assert_int_equal(sum_leased(fx->s), all);
	assert_int_equal(mb->n_ready, v[0]);
	assert_int_equal(mb->n_leased, v[1]);
	assert_int_equal(mb->n_dead, v[2]);
	assert_int_equal(mb->bytes, v[3]);
}

/* ------------------------------------------------------------------ */
/* Open, schema */

/* Once SQLite is in use, its process-wide settings are fixed: the call
 * says so and changes nothing. */
static void
test_store_setup_process_after_use(void **state)
{
	Fx *fx = *state;

	fx_open(fx, STORE_SYNC_FULL);
	assert_int_equal(store_setup_process(), -EBUSY);
}

static void
test_store_open_close_reopen(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	assert_int_equal(store_mailbox_count(fx->s), 0);
	assert_false(store_in_txn(fx->s));
	mb = mk_mailbox(fx->s, "jobs");
	post(fx->s, mb, 0, "one");
	post(fx->s, mb, 0, "two");
	fx_reopen(fx);
	assert_int_equal(store_mailbox_count(fx->s), 1);
	mb = store_mailbox_get(fx->s, "jobs");
	assert_non_null(mb);
	assert_int_equal(mb->n_ready, 2);
	assert_int_equal(mb->bytes, 6);
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 2);
	assert_string_equal(sn.data[0], "one");
	assert_string_equal(sn.data[1], "two");
}

/* An open with nothing to recover writes nothing: on a full disk the
 * broker must still start and serve reads and drains. */
static void
test_store_reopen_writes_nothing(void **state)
{
	Fx *fx = *state;
	char wal[PATH_MAX + 8];
	StoreMailbox *mb;
	struct stat st;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "jobs");
	post(fx->s, mb, 0, "one");
	post(fx->s, mb, 0, "two");
	assert_int_equal(lease(fx->s, mb, NOW, 1, &sn), 1);
	/* Closing checkpoints the WAL into the database and removes it. */
	fx->s = store_free(fx->s);
	snprintf(wal, sizeof(wal), "%s-wal", fx->path);
	/* The first open voids the lease: a write. */
	fx_open(fx, STORE_SYNC_FULL);
	assert_int_equal(stat(wal, &st), 0);
	assert_true(st.st_size > 0);
	fx->s = store_free(fx->s);
	/* The second has nothing to do, and writes nothing. */
	fx_open(fx, STORE_SYNC_FULL);
	assert_true(stat(wal, &st) < 0 || st.st_size == 0);
	mb = store_mailbox_get(fx->s, "jobs");
	assert_non_null(mb);
	assert_int_equal(mb->n_ready, 2);
	assert_int_equal(mb->n_leased, 0);
}

static int put_batch(Fx *fx, StoreMailbox *mb, int n, size_t size,
		     bool durable);

/* A new database gets the store's page size; one made with another
 * keeps it (SQLite cannot change it in WAL mode) and works as before,
 * across a reopen. */
static void
test_store_page_size(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	sqlite3 *db;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mk_mailbox(fx->s, "new");
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "PRAGMA page_size"), PAGE);
	sqlite3_close(db);
	fx->s = store_free(fx->s);
	fx_remove_db(fx);

	/* An empty database of 4 KiB pages: no tables, so a new one. */
	db = raw_open(fx);
	raw_exec(db, "PRAGMA page_size = 4096; CREATE TABLE x (a);"
		     "DROP TABLE x;");
	assert_int_equal(raw_int(db, "PRAGMA page_size"), 4096);
	sqlite3_close(db);
	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "old");
	for (int i = 0; i < 50; i++)
		assert_int_equal(put_batch(fx, mb, 20, 1000, false), 0);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "old");
	assert_non_null(mb);
	assert_int_equal(mb->n_ready, 1000);
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 10);
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "PRAGMA page_size"), 4096);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM message"), 1000);
	sqlite3_close(db);
}

static void
test_store_schema_version(void **state)
{
	Fx *fx = *state;
	sqlite3 *db;
	struct stat st;

	fx_open(fx, STORE_SYNC_FULL);
	/* One mboxd per database: a second open is refused. */
	{
		Store *other = NULL;
		char err[256] = "";

		assert_int_equal(store_open(&other, fx->path, STORE_SYNC_FULL,
					    err, sizeof(err)),
				 -EBUSY);
		assert_null(other);
		assert_non_null(strstr(err, "in use"));
	}
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "PRAGMA user_version"), 4);
	assert_int_equal(raw_int(db, "PRAGMA application_id"), 0x6d626f78);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master"
				     " WHERE name IN ('mailbox', 'message',"
				     " 'message_queue', 'message_delayed',"
				     " 'message_expiry', 'dedup', 'dedup_time',"
				     " 'binding', 'id_reserve', 'lease')"),
			 10);
	/* Version 3: message ids without AUTOINCREMENT. */
	assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master"
				     " WHERE name = 'message' AND sql LIKE"
				     " '%AUTOINCREMENT%'"),
			 0);
	/* Replaced by the dedup table in version 2. */
	assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master"
				     " WHERE name = 'message_dedup'"),
			 0);
	assert_int_equal(raw_int(db, "SELECT journal_mode = 'wal'"
				     " FROM pragma_journal_mode"),
			 1);
	sqlite3_close(db);
}

static void
test_store_newer_version_refused(void **state)
{
	Fx *fx = *state;
	char err[256] = "";
	sqlite3 *db;

	fx_open(fx, STORE_SYNC_FULL);
	fx->s = store_free(fx->s);
	db = raw_open(fx);
	raw_exec(db, "PRAGMA user_version = 5");
	sqlite3_close(db);
	assert_int_equal(
		store_open(&fx->s, fx->path, STORE_SYNC_FULL, err, sizeof(err)),
		-ENOTSUP);
	assert_null(fx->s);
	assert_non_null(strstr(err, "database schema version 5 is newer than "
				    "this mboxd supports (4); upgrade mboxd"));
}

static void
test_store_not_a_database_refused(void **state)
{
	Fx *fx = *state;
	char err[256] = "";
	sqlite3 *db;
	FILE *f;

	f = fopen(fx->path, "w");
	assert_non_null(f);
	for (int i = 0; i < 100; i++)
		fputs("this is a text file, not an SQLite database\n", f);
	fclose(f);
	assert_int_equal(
		store_open(&fx->s, fx->path, STORE_SYNC_FULL, err, sizeof(err)),
		-EINVAL);
	assert_null(fx->s);
	assert_non_null(strstr(err, "not an SQLite database"));
	unlink(fx->path);

	/* Another program's database: refused and left as it was. */
	db = raw_open(fx);
	raw_exec(db, "CREATE TABLE notes (t TEXT)");
	sqlite3_close(db);
	assert_int_equal(
		store_open(&fx->s, fx->path, STORE_SYNC_FULL, err, sizeof(err)),
		-EINVAL);
	assert_non_null(strstr(err, "not an mboxd database"));
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "SELECT journal_mode = 'delete'"
				     " FROM pragma_journal_mode"),
			 1);
	assert_int_equal(raw_int(db, "PRAGMA user_version"), 0);
	sqlite3_close(db);

	/* A directory that does not exist. */
	err[0] = '\0';
	{
		char p[PATH_MAX + 16];

		snprintf(p, sizeof(p), "%s/nope/mbox.db", fx->dir);
		assert_int_equal(store_open(&fx->s, p, STORE_SYNC_FULL, err,
					    sizeof(err)),
				 -ENOENT);
		assert_non_null(strstr(err, "No such file"));
	}
}

/* ------------------------------------------------------------------ */
/* Mailboxes */

static void
test_store_mailbox_create_get(void **state)
{
	Fx *fx = *state;
	StoreMailbox tmpl = {0}, *mb, *out = NULL;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "orders.eu");
	assert_true(mb->id > 0);
	assert_string_equal(mb->name, "orders.eu");
	assert_int_equal(mb->owner_uid, 1000);
	assert_int_equal(mb->gid, 100);
	assert_int_equal(mb->mode, 0640);
	assert_int_equal(mb->lease_ms, MBOX_DEFAULT_LEASE_MS);
	assert_true(mb->created_ns > 0);
	assert_null(mb->user);
	assert_ptr_equal(store_mailbox_get(fx->s, "orders.eu"), mb);
	assert_ptr_equal(store_mailbox_by_id(fx->s, mb->id), mb);
	assert_null(store_mailbox_get(fx->s, "orders"));
	assert_null(store_mailbox_by_id(fx->s, mb->id + 1000));

	snprintf(tmpl.name, sizeof(tmpl.name), "orders.eu");
	tmpl.lease_ms = 1000;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_create(fx->s, &tmpl, &out), -EEXIST);
	assert_null(out);
	snprintf(tmpl.name, sizeof(tmpl.name), "bad name");
	assert_int_equal(store_mailbox_create(fx->s, &tmpl, &out), -EINVAL);
	snprintf(tmpl.name, sizeof(tmpl.name), "%s", "");
	assert_int_equal(store_mailbox_create(fx->s, &tmpl, &out), -EINVAL);
	snprintf(tmpl.name, sizeof(tmpl.name), "ok");
	tmpl.lease_ms = 0;
	assert_int_equal(store_mailbox_create(fx->s, &tmpl, &out), -EINVAL);
	tmpl.lease_ms = 1;
	tmpl.mode = 01777;
	assert_int_equal(store_mailbox_create(fx->s, &tmpl, &out), -EINVAL);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_mailbox_count(fx->s), 1);

	/* Names of the longest length work; the settings survive a reopen. */
	memset(tmpl.name, 'x', MBOX_NAME_MAX);
	tmpl.name[MBOX_NAME_MAX] = '\0';
	tmpl.mode = 0600;
	tmpl.max_bytes = UINT64_MAX;
	tmpl.flags = STORE_MB_PAUSED;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_create(fx->s, &tmpl, &out), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, tmpl.name);
	assert_non_null(mb);
	assert_int_equal(mb->max_bytes, UINT64_MAX);
	assert_int_equal(mb->flags, STORE_MB_PAUSED);
	assert_int_equal(mb->lease_ms, 1);
	assert_non_null(store_mailbox_get(fx->s, "orders.eu"));
}

typedef struct Walk {
	Store *s;
	char names[16][MBOX_NAME_MAX + 1];
	int n;
	bool delete_current;
} Walk;

static int
walk_cb(void *ctx, StoreMailbox *mb)
{
	Walk *w = ctx;

	snprintf(w->names[w->n++], sizeof(w->names[0]), "%s", mb->name);
	if (w->delete_current)
		assert_int_equal(store_mailbox_delete(w->s, mb), 0);
	return 0;
}

static int
stop_cb(void *ctx, StoreMailbox *mb)
{
	(void)mb;
	return ++*(int *)ctx == 2 ? 5 : 0;
}

static void
test_store_mailbox_foreach_order(void **state)
{
	Fx *fx = *state;
	const char *names[] = {"b", "a.x", "C", "a", "b-2", "_z"};
	const char *sorted[] = {"C", "_z", "a", "a.x", "b", "b-2"};
	Walk w = {0};
	int calls = 0;

	fx_open(fx, STORE_SYNC_FULL);
	for (size_t i = 0; i < 6; i++)
		mk_mailbox(fx->s, names[i]);
	w.s = fx->s;
	assert_int_equal(store_mailbox_foreach(fx->s, walk_cb, &w), 0);
	assert_int_equal(w.n, 6);
	for (int i = 0; i < 6; i++)
		assert_string_equal(w.names[i], sorted[i]);
	assert_int_equal(store_mailbox_foreach(fx->s, stop_cb, &calls), 5);
	assert_int_equal(calls, 2);

	/* The same order after a reopen (loaded by id, sorted by name). */
	fx_reopen(fx);
	memset(&w, 0, sizeof(w));
	w.s = fx->s;
	assert_int_equal(store_mailbox_foreach(fx->s, walk_cb, &w), 0);
	for (int i = 0; i < 6; i++)
		assert_string_equal(w.names[i], sorted[i]);

	/* Deleting the current mailbox from the callback skips nothing. */
	memset(&w, 0, sizeof(w));
	w.s = fx->s;
	w.delete_current = true;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_foreach(fx->s, walk_cb, &w), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(w.n, 6);
	for (int i = 0; i < 6; i++)
		assert_string_equal(w.names[i], sorted[i]);
	assert_int_equal(store_mailbox_count(fx->s), 0);
}

/* Mailboxes owned by one uid: what max_mailboxes_per_uid counts. */
static void
test_store_mailbox_count_owned(void **state)
{
	Fx *fx = *state;
	StoreMailbox tmpl = {0}, *mb = NULL, *a, *b;

	fx_open(fx, STORE_SYNC_FULL);
	assert_int_equal(store_mailbox_count_owned(fx->s, 1000), 0);
	a = mk_mailbox(fx->s, "a");
	b = mk_mailbox(fx->s, "b");
	mk_mailbox(fx->s, "c");
	assert_int_equal(store_mailbox_count_owned(fx->s, 1000), 3);
	assert_int_equal(store_mailbox_count_owned(fx->s, 7), 0);

	/* Given away (CHOWN): counted for the new owner. */
	a->owner_uid = 7;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_update(fx->s, a), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_mailbox_count_owned(fx->s, 1000), 2);
	assert_int_equal(store_mailbox_count_owned(fx->s, 7), 1);

	/* A mailbox of the open transaction counts at once, and no longer
	 * once it is rolled back; so does a deletion. */
	snprintf(tmpl.name, sizeof(tmpl.name), "d");
	tmpl.owner_uid = 7;
	tmpl.mode = 0600;
	tmpl.lease_ms = MBOX_DEFAULT_LEASE_MS;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_create(fx->s, &tmpl, &mb), 0);
	assert_int_equal(store_mailbox_count_owned(fx->s, 7), 2);
	assert_int_equal(store_mailbox_delete(fx->s, b), 0);
	assert_int_equal(store_mailbox_count_owned(fx->s, 1000), 1);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_int_equal(store_mailbox_count_owned(fx->s, 7), 1);
	assert_int_equal(store_mailbox_count_owned(fx->s, 1000), 2);

	/* A CHOWN rolled back, and one that fails, put the count back. */
	a->owner_uid = 1000;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_update(fx->s, a), 0);
	assert_int_equal(store_mailbox_count_owned(fx->s, 7), 0);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_int_equal(store_mailbox_count_owned(fx->s, 7), 1);
	a->owner_uid = 1000;
	a->mode = 01000; /* invalid: the update fails */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_update(fx->s, a), -EINVAL);
	assert_int_equal(a->owner_uid, 7);
	assert_int_equal(store_mailbox_count_owned(fx->s, 7), 1);
	assert_int_equal(store_rollback(fx->s), 0);

	/* The same after a reopen (loaded from the database). */
	fx_reopen(fx);
	assert_int_equal(store_mailbox_count_owned(fx->s, 1000), 2);
	assert_int_equal(store_mailbox_count_owned(fx->s, 7), 1);
}

static int
owner_tally(void *ctx, StoreMailbox *mb)
{
	size_t *n = ctx;

	n[mb->owner_uid]++;
	return 0;
}

/* The counts per owner agree with a walk of the mailboxes, whatever
 * mix of creations, deletions, CHOWNs, commits and rollbacks led there. */
static void
test_store_mailbox_count_owned_mix(void **state)
{
	Fx *fx = *state;
	unsigned seed = 7;

	fx_open(fx, STORE_SYNC_FULL);
	for (int round = 0; round < 60; round++) {
		size_t walk[6] = {0};
		bool commit = rand_r(&seed) % 3 != 0;

		assert_int_equal(store_begin(fx->s), 0);
		for (int op = 0; op < 8; op++) {
			char name[16];
			StoreMailbox tmpl = {0}, *mb;

			snprintf(name, sizeof(name), "m%u",
				 (unsigned)(rand_r(&seed) % 24));
			mb = store_mailbox_get(fx->s, name);
			if (!mb) {
				snprintf(tmpl.name, sizeof(tmpl.name), "%s",
					 name);
				tmpl.owner_uid = (uint32_t)(rand_r(&seed) % 6);
				tmpl.mode = 0600;
				tmpl.lease_ms = MBOX_DEFAULT_LEASE_MS;
				assert_int_equal(
					store_mailbox_create(fx->s, &tmpl, &mb),
					0);
			} else if (rand_r(&seed) % 2) {
				assert_int_equal(
					store_mailbox_delete(fx->s, mb), 0);
			} else {
				mb->owner_uid = (uint32_t)(rand_r(&seed) % 6);
				assert_int_equal(
					store_mailbox_update(fx->s, mb), 0);
			}
		}
		if (commit)
			assert_int_equal(store_commit(fx->s, true), 0);
		else
			assert_int_equal(store_rollback(fx->s), 0);
		assert_int_equal(
			store_mailbox_foreach(fx->s, owner_tally, walk), 0);
		for (uint32_t uid = 0; uid < 6; uid++)
			assert_int_equal(store_mailbox_count_owned(fx->s, uid),
					 walk[uid]);
	}
}

static void
test_store_mailbox_update(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "jobs");
	mb->mode = 0666;
	mb->owner_uid = 7;
	mb->gid = 8;
	mb->lease_ms = 5000;
	mb->max_deliveries = 3;
	mb->max_msgs = 100;
	mb->max_bytes = 1 << 20;
	mb->ttl_ms = 60000;
	mb->flags = STORE_MB_PAUSED;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_update(fx->s, mb), 0);
	assert_int_equal(store_commit(fx->s, true), 0);

	/* A failed update puts the stored settings back. */
	mb->mode = 01000;
	mb->ttl_ms = 1;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_update(fx->s, mb), -EINVAL);
	assert_int_equal(mb->mode, 0666);
	assert_int_equal(mb->ttl_ms, 60000);
	/* A rolled-back update too. */
	mb->owner_uid = 99;
	assert_int_equal(store_mailbox_update(fx->s, mb), 0);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_int_equal(mb->owner_uid, 7);

	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "jobs");
	assert_non_null(mb);
	assert_int_equal(mb->mode, 0666);
	assert_int_equal(mb->owner_uid, 7);
	assert_int_equal(mb->gid, 8);
	assert_int_equal(mb->lease_ms, 5000);
	assert_int_equal(mb->max_deliveries, 3);
	assert_int_equal(mb->max_msgs, 100);
	assert_int_equal(mb->max_bytes, 1 << 20);
	assert_int_equal(mb->ttl_ms, 60000);
	assert_int_equal(mb->flags, STORE_MB_PAUSED);
}

static void
test_store_mailbox_delete(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb, *other;
	int64_t id;
	uint64_t mid;
	sqlite3 *db;
	char sql[128];

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "doomed");
	other = mk_mailbox(fx->s, "kept");
	id = mb->id;
	post(fx->s, mb, 0, "a");
	mid = post(fx->s, mb, 3, "b");
	post(fx->s, other, 0, "c");
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_delete(fx->s, mb), 0);
	assert_null(store_mailbox_get(fx->s, "doomed"));
	assert_null(store_mailbox_by_id(fx->s, id));
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_mailbox_count(fx->s), 1);

	db = raw_open(fx);
	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM message WHERE mailbox_id = %lld",
		 (long long)id);
	assert_int_equal(raw_int(db, sql), 0);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM message"), 1);
	sqlite3_close(db);

	fx_reopen(fx);
	assert_null(store_mailbox_get(fx->s, "doomed"));
	other = store_mailbox_get(fx->s, "kept");
	assert_non_null(other);
	assert_int_equal(other->n_ready, 1);

	/* A new mailbox of the same name is a new mailbox: new id, empty. */
	mb = mk_mailbox(fx->s, "doomed");
	assert_true(mb->id > id);
	assert_int_equal(mb->n_ready, 0);
	assert_int_equal(store_msg_get(fx->s, mb, mid, NULL, NULL), -ENOENT);
}

/* store_on_txn_end: told of each end, committed or not. */
typedef struct TxnEnds {
	int committed, rolled_back;
} TxnEnds;

static void
txn_end_note(void *ctx, bool committed)
{
	TxnEnds *e = ctx;

	if (committed)
		e->committed++;
	else
		e->rolled_back++;
}

static void
test_store_txn_end_hook(void **state)
{
	Fx *fx = *state;
	TxnEnds e = {0};
	StoreMailbox *mb;
	StoreMsg m = {.time_ns = NOW, .data = "x", .len = 1};

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "q");
	store_on_txn_end(fx->s, txn_end_note, &e);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_insert(fx->s, mb, &m), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(e.committed, 1);
	assert_int_equal(e.rolled_back, 0);
	assert_int_equal(store_commit(fx->s, true), 0); /* none open */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_insert(fx->s, mb, &m), 0);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_int_equal(e.committed, 1);
	assert_int_equal(e.rolled_back, 1);
	assert_int_equal(store_rollback(fx->s), 0); /* none open */
	/* A commit that fails is rolled back. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_insert(fx->s, mb, &m), 0);
	fail_wal_write = true;
	assert_true(store_commit(fx->s, true) < 0);
	fail_wal_write = false;
	assert_int_equal(e.committed, 1);
	assert_int_equal(e.rolled_back, 2);
	assert_int_equal(mb->n_ready, 1);
	store_on_txn_end(fx->s, NULL, NULL);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(e.committed, 1);
}

static void
test_store_rollback_mailboxes(void **state)
{
	Fx *fx = *state;
	StoreMailbox *keep, *made = NULL, tmpl = {0};
	int marker;

	fx_open(fx, STORE_SYNC_FULL);
	keep = mk_mailbox(fx->s, "keep");
	post(fx->s, keep, 0, "12345");
	keep->user = &marker;

	assert_int_equal(store_begin(fx->s), 0);
	snprintf(tmpl.name, sizeof(tmpl.name), "made");
	tmpl.lease_ms = 1;
	assert_int_equal(store_mailbox_create(fx->s, &tmpl, &made), 0);
	put(fx->s, made, 0, 0, "x");
	put(fx->s, keep, 0, 0, "y");
	assert_int_equal(store_mailbox_delete(fx->s, keep), 0);
	assert_null(store_mailbox_get(fx->s, "keep"));
	assert_int_equal(store_mailbox_count(fx->s), 1);
	/* Deleted in this transaction: unusable until rolled back. */
	assert_int_equal(store_mailbox_delete(fx->s, keep), -ENOENT);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_false(store_in_txn(fx->s));

	assert_null(store_mailbox_get(fx->s, "made"));
	assert_ptr_equal(store_mailbox_get(fx->s, "keep"), keep);
	assert_ptr_equal(store_mailbox_by_id(fx->s, keep->id), keep);
	assert_ptr_equal(keep->user, &marker);
	assert_int_equal(keep->n_ready, 1);
	assert_int_equal(keep->bytes, 5);
	assert_int_equal(store_mailbox_count(fx->s), 1);
	check_counters(fx, keep);

	/* Created and deleted in one rolled-back transaction. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_create(fx->s, &tmpl, &made), 0);
	assert_int_equal(store_mailbox_delete(fx->s, made), 0);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_null(store_mailbox_get(fx->s, "made"));
	keep->user = NULL;
}

/* ------------------------------------------------------------------ */
/* Messages */

typedef struct Copy {
	StoreMsg m;
	char data[64], headers[64], dedup[32];
} Copy;

static int
copy_cb(void *ctx, const StoreMsg *m)
{
	Copy *c = ctx;

	c->m = *m;
	assert_true(m->len <= sizeof(c->data));
	memcpy(c->data, m->data, m->len);
	assert_true(m->headers_len <= sizeof(c->headers));
	if (m->headers_len)
		memcpy(c->headers, m->headers, m->headers_len);
	if (m->dedup)
		snprintf(c->dedup, sizeof(c->dedup), "%s", m->dedup);
	assert_null(m->dead_reason);
	return 0;
}

static void
test_store_msg_round_trip(void **state)
{
	Fx *fx = *state;
	static const char data[] = {'b', 'i', 0, 'n', '\n', (char)0xff, 0};
	static const char hdr[] = "\x0c\x00\x03\x00\x00\x00key";
	StoreMailbox *mb;
	StoreMsg m = {0};
	Copy c;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "rt");
	m.priority = 4;
	m.time_ns = NOW - 5;
	m.ready_ns = 0;
	m.expires_ns = NOW + 1000;
	m.pid = 4242;
	m.uid = 1001;
	m.gid = 1002;
	memcpy(m.comm, "0123456789abcdef", MBOX_COMM_MAX); /* unterminated */
	m.data = data;
	m.len = sizeof(data);
	m.headers = hdr;
	m.headers_len = sizeof(hdr) - 1;
	m.dedup = "order-17";
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_insert(fx->s, mb, &m), 0);
	assert_int_equal(m.state, STORE_READY);
	assert_int_equal(m.mailbox_id, mb->id);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(mb->n_ready, 1);
	assert_int_equal(mb->bytes, sizeof(data));

	memset(&c, 0, sizeof(c));
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_lease(fx->s, mb, NOW, 10, copy_cb, &c), 1);
	assert_int_equal(store_commit(fx->s, false), 0);
	assert_int_equal(c.m.id, m.id);
	assert_int_equal(c.m.mailbox_id, mb->id);
	assert_int_equal(c.m.state, STORE_LEASED);
	assert_int_equal(c.m.deliveries, 1);
	assert_int_equal(c.m.priority, 4);
	assert_int_equal(c.m.time_ns, NOW - 5);
	assert_int_equal(c.m.expires_ns, NOW + 1000);
	assert_int_equal(c.m.pid, 4242);
	assert_int_equal(c.m.uid, 1001);
	assert_int_equal(c.m.gid, 1002);
	assert_string_equal(c.m.comm, "0123456789abcdef");
	assert_int_equal(c.m.len, sizeof(data));
	assert_memory_equal(c.data, data, sizeof(data));
	assert_int_equal(c.m.headers_len, sizeof(hdr) - 1);
	assert_memory_equal(c.headers, hdr, sizeof(hdr) - 1);
	assert_string_equal(c.dedup, "order-17");
	assert_int_equal(mb->n_ready, 0);
	assert_int_equal(mb->n_leased, 1);
	check_counters(fx, mb);

	/* get sees the same row. */
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_msg_get(fx->s, mb, m.id, copy_cb, &c), 0);
	assert_int_equal(c.m.state, STORE_LEASED);
	assert_int_equal(c.m.deliveries, 1);

	/* Ack. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_delete(fx->s, mb, m.id), 0);
	assert_int_equal(store_msg_delete(fx->s, mb, m.id), -ENOENT);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_msg_get(fx->s, mb, m.id, copy_cb, &c), -ENOENT);
	assert_int_equal(mb->n_leased, 0);
	assert_int_equal(mb->bytes, 0);
	check_counters(fx, mb);

	/* An empty payload and no headers. */
	memset(&m, 0, sizeof(m));
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_insert(fx->s, mb, &m), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_msg_get(fx->s, mb, m.id, copy_cb, &c), 0);
	assert_int_equal(c.m.len, 0);
	assert_non_null(c.m.data);
	assert_null(c.m.headers);
	assert_int_equal(c.m.headers_len, 0);
	assert_null(c.m.dedup);

	/* Bad input. */
	assert_int_equal(store_begin(fx->s), 0);
	m.priority = 10;
	assert_int_equal(store_msg_insert(fx->s, mb, &m), -EINVAL);
	m.priority = 0;
	m.len = 3;
	m.data = NULL;
	assert_int_equal(store_msg_insert(fx->s, mb, &m), -EINVAL);
	assert_int_equal(store_commit(fx->s, true), 0);
	check_counters(fx, mb);
}

typedef struct Reenter {
	Store *s;
	StoreMailbox *mb;
	int r;
} Reenter;

static int
reenter_cb(void *ctx, const StoreMsg *m)
{
	Reenter *re = ctx;

	re->r = store_msg_get(re->s, re->mb, m->id, NULL, NULL);
	return 0;
}

static void
test_store_callback_reentry_refused(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	Reenter re;
	uint64_t id;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "re");
	id = post(fx->s, mb, 0, "x");
	re = (Reenter){fx->s, mb, 0};
	assert_int_equal(store_msg_get(fx->s, mb, id, reenter_cb, &re), 0);
	assert_int_equal(re.r, -EBUSY);
	/* Afterwards the store works as before. */
	assert_int_equal(store_msg_get(fx->s, mb, id, NULL, NULL), 0);
}

static void
test_store_lease_order(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t a, b, c, d, e;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "q");
	assert_int_equal(store_begin(fx->s), 0);
	a = put(fx->s, mb, 0, 0, "a");
	b = put(fx->s, mb, 5, 0, "b");
	c = put(fx->s, mb, 0, 0, "c");
	d = put(fx->s, mb, 9, 0, "d");
	e = put(fx->s, mb, 5, 0, "e");
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_true(a < b && b < c && c < d && d < e);

	assert_int_equal(lease(fx->s, mb, NOW, 2, &sn), 2);
	assert_int_equal(sn.id[0], d);
	assert_int_equal(sn.id[1], b);
	assert_int_equal(sn.state[0], STORE_LEASED);
	assert_int_equal(sn.deliveries[0], 1);
	assert_int_equal(sn.priority[0], 9);
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 3);
	assert_int_equal(sn.id[0], e);
	assert_int_equal(sn.id[1], a);
	assert_int_equal(sn.id[2], c);
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 0);
	assert_int_equal(mb->n_ready, 0);
	assert_int_equal(mb->n_leased, 5);
	check_counters(fx, mb);

	/* fn stops the walk: its value comes back, that message is leased. */
	assert_int_equal(store_begin(fx->s), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(
			store_msg_release(fx->s, mb, a + (uint64_t)i, 0), 0);
	memset(&sn, 0, sizeof(sn));
	sn.stop_after = 2;
	assert_int_equal(store_msg_lease(fx->s, mb, NOW, 10, seen_cb, &sn), 7);
	assert_int_equal(sn.n, 2);
	assert_int_equal(store_commit(fx->s, false), 0);
	assert_int_equal(mb->n_leased, 2);
	assert_int_equal(mb->n_ready, 3);
	check_counters(fx, mb);
	assert_int_equal(lease(fx->s, mb, NOW, 0, &sn), 0);
}

static void
test_store_lease_respects_ready_ns(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t later, now_id;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "delayed");
	assert_int_equal(store_begin(fx->s), 0);
	/* The delayed one is older and more urgent: it still waits. */
	later = put(fx->s, mb, 9, NOW + 1000, "later");
	now_id = put(fx->s, mb, 0, 0, "now");
	assert_int_equal(store_commit(fx->s, true), 0);

	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 1);
	assert_int_equal(sn.id[0], now_id);
	assert_int_equal(lease(fx->s, mb, NOW + 999, 10, &sn), 0);
	assert_int_equal(mb->n_ready, 1); /* delayed ones count as ready */
	assert_int_equal(lease(fx->s, mb, NOW + 1000, 10, &sn), 1);
	assert_int_equal(sn.id[0], later);
	check_counters(fx, mb);
}

/* The state and delivery count of message id, from the database. */
static void
raw_state(const Fx *fx, uint64_t id, int64_t *state, int64_t *deliveries)
{
	sqlite3 *db = raw_open(fx);
	char sql[128];

	/* Schema version 4: a leased message is a row of lease, its
	 * delivery count the row's plus that lease. */
	snprintf(sql, sizeof(sql),
		 "SELECT CASE WHEN id IN (SELECT msg_id FROM lease) THEN 1"
		 " ELSE state END FROM message WHERE id = %llu",
		 (unsigned long long)id);
	*state = raw_int(db, sql);
	snprintf(sql, sizeof(sql),
		 "SELECT deliveries + (id IN (SELECT msg_id FROM lease))"
		 " FROM message WHERE id = %llu",
		 (unsigned long long)id);
	*deliveries = raw_int(db, sql);
	sqlite3_close(db);
}

/*
 * A lease marks the rows it took by ranges of ids, one per priority: the
 * delayed and expired rows between them stay READY and uncounted, and so
 * do those after the row where the walk stopped.
 */
static void
test_store_lease_marks_only_taken(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t id[9];
	int64_t st, dl;
	Seen sn;
	/* priority, ready_ns, expires_ns; and whether the lease takes it */
	static const struct {
		uint32_t prio;
		int64_t ready_ns, expires_ns;
		bool taken;
	} row[9] = {
		{5, 0, 0, true},	   {5, NOW + 1000, 0, false},
		{5, 0, 0, true},	   {5, 0, NOW - 1, false},
		{5, 0, NOW + 1000, true},  {3, 0, 0, true},
		{3, NOW + 1000, 0, false}, {3, 0, 0, true},
		{3, 0, 0, false}, /* after the stop */
	};

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "ranges");
	assert_int_equal(store_begin(fx->s), 0);
	for (int i = 0; i < 9; i++) {
		StoreMsg m = {.priority = row[i].prio,
			      .time_ns = NOW,
			      .ready_ns = row[i].ready_ns,
			      .expires_ns = row[i].expires_ns,
			      .data = "x",
			      .len = 1};
		assert_int_equal(store_msg_insert(fx->s, mb, &m), 0);
		id[i] = m.id;
	}
	assert_int_equal(store_commit(fx->s, true), 0);

	memset(&sn, 0, sizeof(sn));
	sn.stop_after = 5;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_lease(fx->s, mb, NOW, 10, seen_cb, &sn), 7);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(sn.n, 5);
	for (int i = 0, k = 0; i < 9; i++) {
		raw_state(fx, id[i], &st, &dl);
		assert_int_equal(st, row[i].taken ? STORE_LEASED : STORE_READY);
		assert_int_equal(dl, row[i].taken ? 1 : 0);
		if (row[i].taken)
			assert_int_equal(sn.id[k++], id[i]);
	}
	assert_int_equal(mb->n_leased, 5);
	check_counters(fx, mb);

	/* The next lease takes the one after the stop, and none twice. */
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 1);
	assert_int_equal(sn.id[0], id[8]);
	check_counters(fx, mb);
}

/* What a callback saw of one message's storage. */
typedef struct TextSeen {
	size_t n;
	uint64_t id[8];
	bool text[8];
	uint32_t priority[8];
} TextSeen;

static int
text_cb(void *ctx, const StoreMsg *m)
{
	TextSeen *ts = ctx;

	if (ts->n < 8) {
		ts->id[ts->n] = m->id;
		ts->text[ts->n] = m->data_text;
		ts->priority[ts->n] = m->priority;
	}
	ts->n++;
	return 0;
}

/*
 * Rows another program wrote: a REAL priority (5.5 passes the CHECK) is a
 * line of its own, above 5; TEXT data is counted in characters. A lease
 * takes them in order and marks exactly those, and the counters stay
 * those of the database.
 */
static void
test_store_lease_foreign_rows(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t a, c, b;
	int64_t st, dl;
	TextSeen ts = {0};
	sqlite3 *db;
	char sql[512];

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "foreign");
	a = post(fx->s, mb, 5, "aaa");
	c = post(fx->s, mb, 5, "ccc");
	b = c + 1000;
	db = raw_open(fx);
	snprintf(sql, sizeof(sql),
		 "INSERT INTO message (id, mailbox_id, state, priority,"
		 " time_ns, pid, uid, gid, data) VALUES (%llu, %lld, 0, 5.5,"
		 " 1, 1, 1, 1, 'h\xc3\xa9llo')",
		 (unsigned long long)b, (long long)mb->id);
	/* The escape above is C's: the SQL holds "héllo", 6 bytes. */
	raw_exec(db, sql);
	assert_int_equal(raw_int(db, "SELECT typeof(priority) = 'real'"
				     " AND typeof(data) = 'text'"
				     " FROM message WHERE priority > 5"),
			 1);
	sqlite3_close(db);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "foreign");
	assert_non_null(mb);
	assert_int_equal(mb->bytes, 3 + 3 + 5);

	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_lease(fx->s, mb, NOW, 10, text_cb, &ts), 3);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(ts.n, 3);
	assert_int_equal(ts.id[0], b);
	assert_true(ts.text[0]);
	assert_int_equal(ts.id[1], a);
	assert_false(ts.text[1]);
	assert_int_equal(ts.id[2], c);
	for (int i = 0; i < 3; i++) {
		raw_state(fx, ts.id[i], &st, &dl);
		assert_int_equal(st, STORE_LEASED);
		assert_int_equal(dl, 1);
	}
	check_counters(fx, mb);

	/* The TEXT one is acked the long way (its lease has no length):
	 * the counters lose what they counted. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_delete(fx->s, mb, b), 0);
	assert_int_equal(store_msg_ack(fx->s, mb, a, 3), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(mb->bytes, 3);
	check_counters(fx, mb);
}

/*
 * Statements are prepared on first use. One that cannot be (here: its
 * table was dropped behind the store's back) fails its call with the
 * reason, and the store goes on: its transaction rolls back, the
 * statements already prepared still work.
 */
static void
test_store_unprepared_statement_fails_cleanly(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	sqlite3 *db;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "lazy");
	post(fx->s, mb, 0, "before");
	db = raw_open(fx);
	raw_exec(db, "DROP TABLE binding");
	sqlite3_close(db);
	/* A write reads the changed schema: the next prepare knows. */
	post(fx->s, mb, 0, "after");

	assert_int_equal(store_begin(fx->s), 0);
	assert_true(store_binding_add(fx->s, mb, "lazy.*") < 0);
	assert_non_null(strstr(store_errmsg(fx->s),
			       "cannot prepare a statement: no such table"));
	assert_int_equal(store_rollback(fx->s), 0);

	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 2);
	assert_string_equal(sn.data[0], "before");
	assert_string_equal(sn.data[1], "after");
	check_counters(fx, mb);
}

/* A callback that fails on the second message. */
static int
fail_second_cb(void *ctx, const StoreMsg *m)
{
	size_t *n = ctx;

	(void)m;
	return ++*n == 2 ? -EIO : 0;
}

/*
 * A lease that fails after its callback saw messages has not marked them
 * all: its transaction refuses to commit, and the rollback leaves rows
 * and counters as they were.
 */
static void
test_store_lease_failure_refuses_commit(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t id[3];
	int64_t st, dl;
	size_t n = 0;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "fails");
	for (int i = 0; i < 3; i++)
		id[i] = post(fx->s, mb, 0, "x");
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(
		store_msg_lease(fx->s, mb, NOW, 10, fail_second_cb, &n), -EIO);
	assert_int_equal(n, 2);
	assert_int_equal(store_commit(fx->s, true), -EIO);
	assert_non_null(strstr(store_errmsg(fx->s), "commit refused"));
	assert_false(store_commit_unsure(fx->s)); /* rolled back: sure */
	assert_int_equal(mb->n_ready, 3);
	assert_int_equal(mb->n_leased, 0);
	for (int i = 0; i < 3; i++) {
		raw_state(fx, id[i], &st, &dl);
		assert_int_equal(st, STORE_READY);
		assert_int_equal(dl, 0);
	}
	check_counters(fx, mb);
	/* And the next lease takes them all, in order. */
	n = 0;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_lease(fx->s, mb, NOW, 10, NULL, NULL), 3);
	assert_int_equal(store_commit(fx->s, true), 0);
	check_counters(fx, mb);
}

/*
 * store_msg_ack deletes only a leased message of its mailbox, and counts
 * the length it is given; anything else is -ENOENT with nothing done.
 */
static void
test_store_ack_leased_only(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb, *other;
	uint64_t a, b, c;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "acks");
	other = mk_mailbox(fx->s, "other");
	a = post(fx->s, mb, 0, "aaaa");
	b = post(fx->s, mb, 0, "bbbbbbbb");
	c = post(fx->s, other, 0, "cc");
	assert_int_equal(lease(fx->s, mb, NOW, 1, &sn), 1);
	assert_int_equal(lease(fx->s, other, NOW, 1, &sn), 1);

	assert_int_equal(store_begin(fx->s), 0);
	/* b is READY, c is another mailbox's, 999 is nowhere. */
	assert_int_equal(store_msg_ack(fx->s, mb, b, 8), -ENOENT);
	assert_non_null(strstr(store_errmsg(fx->s), "no leased message"));
	assert_int_equal(store_msg_ack(fx->s, mb, c, 2), -ENOENT);
	assert_int_equal(store_msg_ack(fx->s, mb, 999, 1), -ENOENT);
	assert_int_equal(mb->n_ready, 1);
	assert_int_equal(mb->n_leased, 1);
	assert_int_equal(mb->bytes, 12);
	assert_int_equal(store_msg_ack(fx->s, mb, a, 4), 0);
	assert_int_equal(store_msg_ack(fx->s, mb, a, 4), -ENOENT);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(mb->n_leased, 0);
	assert_int_equal(mb->n_ready, 1);
	assert_int_equal(mb->bytes, 8);
	check_counters(fx, mb);
	check_counters(fx, other);

	/* Rolled back, the ack and its counting are undone. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_ack(fx->s, other, c, 2), 0);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_int_equal(other->n_leased, 1);
	assert_int_equal(other->bytes, 2);
	check_counters(fx, other);
}

/*
 * A lease walk starts where the last one stopped (schema version 4 keeps
 * leases out of the message rows, so the leased head of a line is still
 * in its index). Every write that puts a deliverable message before that
 * point must move it back: a post of a higher priority, a release, the
 * time of a delayed message coming, a kick, a rolled-back lease.
 */
static void
test_store_lease_walk_start(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t id[6], u, w, x, y, z;
	int64_t st, dl;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "walk");
	assert_int_equal(store_begin(fx->s), 0);
	for (int i = 0; i < 6; i++)
		id[i] = put(fx->s, mb, 2, 0, "m");
	assert_int_equal(store_commit(fx->s, true), 0);

	assert_int_equal(lease(fx->s, mb, NOW, 2, &sn), 2);
	assert_int_equal(sn.id[1], id[1]);
	assert_int_equal(lease(fx->s, mb, NOW, 2, &sn), 2);
	assert_int_equal(sn.id[0], id[2]);
	assert_int_equal(sn.id[1], id[3]);

	/* Urgent, and lower than where the walk stopped. */
	u = post(fx->s, mb, 9, "u");
	y = post(fx->s, mb, 0, "y");
	assert_int_equal(lease(fx->s, mb, NOW, 1, &sn), 1);
	assert_int_equal(sn.id[0], u);

	/* A release puts its message back before the rest of its line. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_release(fx->s, mb, id[1], 0), 0);
	assert_int_equal(store_commit(fx->s, false), 0);
	assert_int_equal(lease(fx->s, mb, NOW, 2, &sn), 2);
	assert_int_equal(sn.id[0], id[1]);
	assert_int_equal(sn.deliveries[0], 2);
	assert_int_equal(sn.id[1], id[4]);

	/* A delayed post is stepped over, and taken once its time comes,
	 * before what was posted after it. */
	assert_int_equal(store_begin(fx->s), 0);
	x = put(fx->s, mb, 2, NOW + 500, "x");
	z = put(fx->s, mb, 2, 0, "z");
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(lease(fx->s, mb, NOW, 2, &sn), 2);
	assert_int_equal(sn.id[0], id[5]);
	assert_int_equal(sn.id[1], z);
	assert_int_equal(lease(fx->s, mb, NOW + 499, 10, &sn), 1);
	assert_int_equal(sn.id[0], y);
	assert_int_equal(lease(fx->s, mb, NOW + 500, 10, &sn), 1);
	assert_int_equal(sn.id[0], x);
	assert_int_equal(lease(fx->s, mb, NOW + 500, 10, &sn), 0);

	/* A lease rolled back leaves its messages to the next one. */
	w = post(fx->s, mb, 2, "w");
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_lease(fx->s, mb, NOW, 10, NULL, NULL), 1);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 1);
	assert_int_equal(sn.id[0], w);

	/* A kicked message is back in its place. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_kill(fx->s, mb, w, "rejected"), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	raw_state(fx, w, &st, &dl);
	assert_int_equal(st, STORE_DEAD);
	assert_int_equal(dl, 1);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_kick(fx->s, mb, 0), 1);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 1);
	assert_int_equal(sn.id[0], w);
	check_counters(fx, mb);
}

/*
 * A lease is a row of its own, not a change of its message's row: the
 * message's row stays as posted, and after a crash the lease counts as a
 * delivery (leases are void after a restart, delivery counts kept).
 */
static void
test_store_lease_row_void_at_restart(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t a, b;
	sqlite3 *db;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "crash");
	a = post(fx->s, mb, 0, "a");
	b = post(fx->s, mb, 0, "b");
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 2);
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM message"
				     " WHERE state = 0 AND deliveries = 0"),
			 2);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM lease"), 2);
	sqlite3_close(db);
	/* b acked: its lease goes with it. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_ack(fx->s, mb, b, 1), 0);
	assert_int_equal(store_msg_ack(fx->s, mb, b, 1), -ENOENT);
	assert_int_equal(store_commit(fx->s, true), 0);

	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "crash");
	assert_non_null(mb);
	assert_int_equal(mb->n_ready, 1);
	assert_int_equal(mb->n_leased, 0);
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM lease"), 0);
	sqlite3_close(db);
	check_counters(fx, mb);
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 1);
	assert_int_equal(sn.id[0], a);
	assert_int_equal(sn.deliveries[0], 2);
}

/*
 * The wall clock stepped back: a walk at the earlier time may step over
 * a row delayed at that time, or not yet expired. A later walk must
 * still find it.
 */
static void
test_store_lease_walk_clock_back(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t x, a, b, c;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "clock");
	assert_int_equal(store_begin(fx->s), 0);
	x = put(fx->s, mb, 3, 0, "x");
	a = put(fx->s, mb, 2, NOW + 150, "a");
	b = put(fx->s, mb, 2, 0, "b");
	c = put(fx->s, mb, 2, 0, "c");
	assert_int_equal(store_commit(fx->s, true), 0);

	assert_int_equal(lease(fx->s, mb, NOW + 200, 1, &sn), 1);
	assert_int_equal(sn.id[0], x);
	/* Back before a's time: a is delayed again, b comes first. */
	assert_int_equal(lease(fx->s, mb, NOW + 100, 1, &sn), 1);
	assert_int_equal(sn.id[0], b);
	assert_int_equal(lease(fx->s, mb, NOW + 300, 10, &sn), 2);
	assert_int_equal(sn.id[0], a);
	assert_int_equal(sn.id[1], c);
	assert_int_equal(mb->n_ready, 0);
}

/* An ack or a release of a message another program deleted ends its
 * lease, says so, and keeps the counters those of the database. */
static void
test_store_lease_of_deleted_message(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t a, b;
	sqlite3 *db;
	char sql[128];
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "gone");
	a = post(fx->s, mb, 0, "a");
	b = post(fx->s, mb, 0, "b");
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 2);
	db = raw_open(fx);
	snprintf(sql, sizeof(sql),
		 "DELETE FROM message WHERE id IN (%llu, %llu)",
		 (unsigned long long)a, (unsigned long long)b);
	raw_exec(db, sql);
	sqlite3_close(db);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_ack(fx->s, mb, a, 1), -ENOENT);
	assert_non_null(strstr(store_errmsg(fx->s), "gone"));
	assert_int_equal(store_commit(fx->s, true), 0);
	/* The ack knows the length its lease delivered: a's byte is off
	 * the counters, b's still on. */
	assert_int_equal(mb->n_leased, 1);
	assert_int_equal(mb->bytes, 1);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_release(fx->s, mb, b, 0), -ENOENT);
	assert_non_null(strstr(store_errmsg(fx->s), "gone"));
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(mb->n_leased, 0);
	assert_int_equal(store_leases_held(fx->s), 0);
	assert_int_equal(mb->n_ready, 0);
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM lease"), 0);
	sqlite3_close(db);

	/* The paths that read the row first: a release under
	 * max_deliveries, a reject. */
	mb->max_deliveries = 3;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_update(fx->s, mb), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	a = post(fx->s, mb, 0, "a");
	b = post(fx->s, mb, 0, "b");
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 2);
	db = raw_open(fx);
	raw_exec(db, "DELETE FROM message");
	sqlite3_close(db);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_release(fx->s, mb, a, 0), -ENOENT);
	assert_non_null(strstr(store_errmsg(fx->s), "gone"));
	assert_int_equal(store_msg_kill(fx->s, mb, b, "rejected"), -ENOENT);
	assert_non_null(strstr(store_errmsg(fx->s), "gone"));
	/* Nothing left to end: the usual answer. */
	assert_int_equal(store_msg_kill(fx->s, mb, b, "rejected"), -ENOENT);
	assert_non_null(strstr(store_errmsg(fx->s), "no message"));
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(mb->n_leased, 0);
	assert_int_equal(store_leases_held(fx->s), 0);
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM lease"), 0);
	sqlite3_close(db);
}

static void
test_store_release_keeps_place(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t a, b, c, d;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "line");
	assert_int_equal(store_begin(fx->s), 0);
	a = put(fx->s, mb, 0, 0, "a");
	b = put(fx->s, mb, 0, 0, "b");
	c = put(fx->s, mb, 0, 0, "c");
	assert_int_equal(store_commit(fx->s, true), 0);

	assert_int_equal(lease(fx->s, mb, NOW, 1, &sn), 1);
	assert_int_equal(sn.id[0], a);
	d = post(fx->s, mb, 0, "d");
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_release(fx->s, mb, a, 0), 0);
	/* Only LEASED messages can be released. */
	assert_int_equal(store_msg_release(fx->s, mb, a, 0), -ENOENT);
	assert_int_equal(store_msg_release(fx->s, mb, b, 0), -ENOENT);
	assert_int_equal(store_msg_release(fx->s, mb, 999999, 0), -ENOENT);
	assert_int_equal(store_commit(fx->s, false), 0);
	check_counters(fx, mb);

	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 4);
	assert_int_equal(sn.id[0], a);
	assert_int_equal(sn.deliveries[0], 2);
	assert_int_equal(sn.id[1], b);
	assert_int_equal(sn.deliveries[1], 1);
	assert_int_equal(sn.id[2], c);
	assert_int_equal(sn.id[3], d);

	/* Released with a delay (nack 1 s): not offered before it passes,
	 * then first in line again. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_release(fx->s, mb, a, NOW + 1000), 0);
	assert_int_equal(store_msg_release(fx->s, mb, d, 0), 0);
	assert_int_equal(store_commit(fx->s, false), 0);
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 1);
	assert_int_equal(sn.id[0], d);
	assert_int_equal(lease(fx->s, mb, NOW + 1000, 10, &sn), 1);
	assert_int_equal(sn.id[0], a);
	assert_int_equal(sn.deliveries[0], 3);
	check_counters(fx, mb);
}

static void
test_store_counters_exact(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t a, b, c;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "cnt");
	check_counters(fx, mb);
	a = post(fx->s, mb, 0, "aaaa");
	check_counters(fx, mb);
	b = post(fx->s, mb, 0, "bbbbbbbb");
	c = post(fx->s, mb, 1, "c");
	check_counters(fx, mb);
	assert_int_equal(mb->n_ready, 3);
	assert_int_equal(mb->bytes, 13);
	assert_int_equal(lease(fx->s, mb, NOW, 2, &sn), 2); /* c, a */
	check_counters(fx, mb);
	assert_int_equal(mb->n_leased, 2);

	/* A transaction that does everything, rolled back. */
	assert_int_equal(store_begin(fx->s), 0);
	put(fx->s, mb, 0, 0, "xxxxxxxxxxxxxxxx");
	assert_int_equal(store_msg_delete(fx->s, mb, a), 0);
	assert_int_equal(store_msg_release(fx->s, mb, c, 0), 0);
	assert_int_equal(store_msg_lease(fx->s, mb, NOW, 10, NULL, NULL), 3);
	assert_int_equal(store_msg_delete(fx->s, mb, b), 0);
	assert_int_equal(mb->n_ready, 0);
	assert_int_equal(mb->n_leased, 2);
	assert_int_equal(mb->bytes, 17);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_int_equal(mb->n_ready, 1);
	assert_int_equal(mb->n_leased, 2);
	assert_int_equal(mb->bytes, 13);
	check_counters(fx, mb);

	/* Deletes in each state. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_delete(fx->s, mb, a), 0); /* leased */
	assert_int_equal(store_msg_delete(fx->s, mb, b), 0); /* ready */
	assert_int_equal(store_commit(fx->s, true), 0);
	check_counters(fx, mb);
	assert_int_equal(mb->n_ready + mb->n_leased, 1);
	assert_int_equal(mb->bytes, 1);

	/* And they match what a fresh open computes. */
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "cnt");
	assert_int_equal(mb->n_ready, 1); /* c's lease is void */
	assert_int_equal(mb->bytes, 1);
	check_counters(fx, mb);
}

static void
test_store_peek(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t id[6];
	sqlite3 *db;
	char sql[128];
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "peek");
	assert_int_equal(store_begin(fx->s), 0);
	for (int i = 0; i < 6; i++)
		id[i] = put(fx->s, mb, i % 2 ? 5 : 0, 0, "m");
	assert_int_equal(store_commit(fx->s, true), 0);
	/* id[4] and id[5] go to the dead list behind the store's back. */
	fx->s = store_free(fx->s);
	db = raw_open(fx);
	snprintf(sql, sizeof(sql),
		 "UPDATE message SET state = 2, dead_reason = 'rejected'"
		 " WHERE id >= %llu",
		 (unsigned long long)id[4]);
	raw_exec(db, sql);
	sqlite3_close(db);
	fx_open(fx, STORE_SYNC_FULL);
	mb = store_mailbox_get(fx->s, "peek");
	assert_int_equal(mb->n_dead, 2);
	assert_int_equal(mb->n_ready, 4);
	/* Lease one (id[1], priority 5): peek shows LEASED ones too. */
	assert_int_equal(lease(fx->s, mb, NOW, 1, &sn), 1);
	assert_int_equal(sn.id[0], id[1]);

	memset(&sn, 0, sizeof(sn));
	assert_int_equal(store_msg_peek(fx->s, mb, 0, 10, false, seen_cb, &sn),
			 4);
	assert_int_equal(sn.id[0], id[1]);
	assert_int_equal(sn.state[0], STORE_LEASED);
	assert_int_equal(sn.id[1], id[3]);
	assert_int_equal(sn.state[1], STORE_READY);
	assert_int_equal(sn.id[2], id[0]);
	assert_int_equal(sn.id[3], id[2]);
	/* from_id and max. */
	memset(&sn, 0, sizeof(sn));
	assert_int_equal(
		store_msg_peek(fx->s, mb, id[2], 2, false, seen_cb, &sn), 2);
	assert_int_equal(sn.id[0], id[3]);
	assert_int_equal(sn.id[1], id[2]);
	/* The queue in id order (leased included, dead not): pages by
	 * from_id = last + 1 whatever the priorities. */
	memset(&sn, 0, sizeof(sn));
	assert_int_equal(
		store_msg_peek(fx->s, mb, 0, 3, STORE_PEEK_BY_ID, seen_cb, &sn),
		3);
	assert_int_equal(sn.id[0], id[0]);
	assert_int_equal(sn.id[1], id[1]);
	assert_int_equal(sn.state[1], STORE_LEASED);
	assert_int_equal(sn.id[2], id[2]);
	memset(&sn, 0, sizeof(sn));
	assert_int_equal(store_msg_peek(fx->s, mb, id[2] + 1, 3,
					STORE_PEEK_BY_ID, seen_cb, &sn),
			 1);
	assert_int_equal(sn.id[0], id[3]);
	/* Dead list, in id order. */
	memset(&sn, 0, sizeof(sn));
	assert_int_equal(store_msg_peek(fx->s, mb, 0, 10, true, seen_cb, &sn),
			 2);
	assert_int_equal(sn.id[0], id[4]);
	assert_int_equal(sn.id[1], id[5]);
	assert_int_equal(sn.state[0], STORE_DEAD);
	memset(&sn, 0, sizeof(sn));
	assert_int_equal(
		store_msg_peek(fx->s, mb, id[5], 10, true, seen_cb, &sn), 1);
	assert_int_equal(sn.id[0], id[5]);
	memset(&sn, 0, sizeof(sn));
	sn.stop_after = 1;
	assert_int_equal(store_msg_peek(fx->s, mb, 0, 10, true, seen_cb, &sn),
			 7);

	/* Nothing changed: same counters, and the next lease is id[3]
	 * with its first delivery. */
	assert_int_equal(mb->n_ready, 3);
	assert_int_equal(mb->n_leased, 1);
	assert_int_equal(mb->n_dead, 2);
	check_counters(fx, mb);
	assert_int_equal(lease(fx->s, mb, NOW, 1, &sn), 1);
	assert_int_equal(sn.id[0], id[3]);
	assert_int_equal(sn.deliveries[0], 1);
	/* Dead messages are never leased, and delete works on them. */
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 2);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_delete(fx->s, mb, id[4]), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(mb->n_dead, 1);
	check_counters(fx, mb);
}

static void
test_store_restart_voids_leases(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb, tmpl = {0};
	uint64_t a, b;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "work");
	assert_int_equal(store_begin(fx->s), 0);
	a = put(fx->s, mb, 0, 0, "a");
	b = put(fx->s, mb, 0, 0, "b");
	/* A temporary mailbox does not outlive its creator's connection. */
	snprintf(tmpl.name, sizeof(tmpl.name), "reply.1");
	tmpl.lease_ms = 1;
	tmpl.flags = STORE_MB_TEMP;
	assert_int_equal(store_mailbox_create(fx->s, &tmpl, NULL), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_begin(fx->s), 0);
	put(fx->s, store_mailbox_get(fx->s, "reply.1"), 0, 0, "r");
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 2);
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 0);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_release(fx->s, mb, a, 0), 0);
	assert_int_equal(store_commit(fx->s, false), 0);
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 1); /* a: 2nd */
	assert_int_equal(mb->n_leased, 2);

	fx_reopen(fx);
	assert_null(store_mailbox_get(fx->s, "reply.1"));
	mb = store_mailbox_get(fx->s, "work");
	assert_int_equal(mb->n_ready, 2);
	assert_int_equal(mb->n_leased, 0);
	check_counters(fx, mb);
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 2);
	assert_int_equal(sn.id[0], a);
	assert_int_equal(sn.deliveries[0], 3);
	assert_int_equal(sn.id[1], b);
	assert_int_equal(sn.deliveries[1], 2);
}

static void
test_store_ids_never_reused(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t a, b, c;
	int64_t mb_id;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "ids");
	mb_id = mb->id;
	a = post(fx->s, mb, 0, "a");
	b = post(fx->s, mb, 9, "b");
	assert_true(b > a);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_delete(fx->s, mb, b), 0);
	assert_int_equal(store_mailbox_delete(fx->s, mb), 0);
	assert_int_equal(store_commit(fx->s, true), 0);

	fx_reopen(fx);
	mb = mk_mailbox(fx->s, "ids");
	assert_true(mb->id > mb_id);
	c = post(fx->s, mb, 0, "c");
	assert_true(c > b);

	/* Ids taken by a rolled-back insert: still strictly increasing. */
	assert_int_equal(store_begin(fx->s), 0);
	put(fx->s, mb, 0, 0, "gone");
	assert_int_equal(store_rollback(fx->s), 0);
	assert_true(post(fx->s, mb, 0, "d") > c);
}

/*
 * Ids come from blocks reserved in id_reserve: one write per block, in
 * the transaction that first goes past it, and never an id stored above
 * what id_reserve holds.
 */
static void
test_store_ids_reserved_in_blocks(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t a, b, id = 0;
	int64_t last;
	sqlite3 *db;
	int i;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "ids");
	a = post(fx->s, mb, 0, "a");
	db = raw_open(fx);
	last = raw_int(db, "SELECT last FROM id_reserve");
	assert_true(last >= (int64_t)a);
	assert_true(last - (int64_t)a < 4096);
	/* Within the block: no write to id_reserve. */
	for (i = 0; i < 10; i++)
		b = post(fx->s, mb, 0, "b");
	assert_true(b <= (uint64_t)last);
	assert_int_equal(raw_int(db, "SELECT last FROM id_reserve"), last);

	/* Use the block up, in one transaction. */
	assert_int_equal(store_begin(fx->s), 0);
	for (i = 0; i < 8192 && id < (uint64_t)last; i++)
		id = put(fx->s, mb, 0, 0, "c");
	assert_int_equal(id, last);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(raw_int(db, "SELECT last FROM id_reserve"), last);

	/* The next block, reserved by a transaction that is rolled back:
	 * the one after it must reserve again. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_true(put(fx->s, mb, 0, 0, "gone") > (uint64_t)last);
	assert_int_equal(store_rollback(fx->s), 0);
	id = post(fx->s, mb, 0, "d");
	assert_true(id > (uint64_t)last + 1);
	assert_true(raw_int(db, "SELECT last FROM id_reserve") >= (int64_t)id);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM message WHERE id >"
				     " (SELECT last FROM id_reserve)"),
			 0);
	last = raw_int(db, "SELECT last FROM id_reserve");
	sqlite3_close(db);

	/* After a restart ids go on above the reservation, even with the
	 * highest ids gone. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_delete(fx->s, mb, id), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "ids");
	id = post(fx->s, mb, 0, "e");
	assert_true(id > (uint64_t)last);

	/* id_reserve's row deleted behind the store's back: the next open
	 * puts it back, covering every id stored. */
	fx->s = store_free(fx->s);
	db = raw_open(fx);
	raw_exec(db, "DELETE FROM id_reserve");
	sqlite3_close(db);
	fx_open(fx, STORE_SYNC_FULL);
	db = raw_open(fx);
	assert_true(raw_int(db, "SELECT last FROM id_reserve") >= (int64_t)id);
	sqlite3_close(db);
	mb = store_mailbox_get(fx->s, "ids");
	assert_true(post(fx->s, mb, 0, "f") > id);
}

static void
test_store_write_without_txn(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb, tmpl = {0};
	StoreMsg m = {0};
	uint64_t id;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "strict");
	id = post(fx->s, mb, 0, "x");
	snprintf(tmpl.name, sizeof(tmpl.name), "other");
	tmpl.lease_ms = 1;
	assert_false(store_in_txn(fx->s));
	assert_int_equal(store_mailbox_create(fx->s, &tmpl, NULL), -EINVAL);
	assert_int_equal(store_mailbox_update(fx->s, mb), -EINVAL);
	assert_int_equal(store_mailbox_delete(fx->s, mb), -EINVAL);
	assert_int_equal(store_msg_insert(fx->s, mb, &m), -EINVAL);
	assert_int_equal(store_msg_lease(fx->s, mb, NOW, 1, NULL, NULL),
			 -EINVAL);
	assert_int_equal(store_msg_delete(fx->s, mb, id), -EINVAL);
	assert_int_equal(store_msg_release(fx->s, mb, id, 0), -EINVAL);
	assert_int_equal(store_msg_kill(fx->s, mb, id, "rejected"), -EINVAL);
	assert_int_equal(store_msg_kick(fx->s, mb, 0), -EINVAL);
	assert_int_equal(store_msg_purge(fx->s, mb, false), -EINVAL);
	assert_int_equal(store_msg_purge(fx->s, mb, true), -EINVAL);
	assert_int_equal(store_expire(fx->s, NOW, NULL, NULL), -EINVAL);
	assert_int_equal(store_dedup_prune(fx->s, NOW), -EINVAL);
	assert_int_equal(store_binding_add(fx->s, mb, "a.*"), -EINVAL);
	assert_int_equal(store_binding_remove(fx->s, mb, "a.*"), -EINVAL);
	assert_non_null(strstr(store_errmsg(fx->s), "transaction"));
	/* Nothing happened. */
	assert_int_equal(mb->n_ready, 1);
	assert_null(store_mailbox_get(fx->s, "other"));
	check_counters(fx, mb);
	/* commit and rollback without a transaction are no-ops. */
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_rollback(fx->s), 0);
	/* begin twice is one transaction. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_begin(fx->s), 0);
	assert_true(store_in_txn(fx->s));
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_false(store_in_txn(fx->s));
}

static void
test_store_commit_durability(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	int before;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "dur");

	/* Non-durable: no fsync. */
	before = wal_syncs;
	assert_int_equal(store_begin(fx->s), 0);
	put(fx->s, mb, 0, 0, "lazy");
	assert_int_equal(store_commit(fx->s, false), 0);
	assert_int_equal(wal_syncs - before, 0);
	/* Durable: one fsync of the WAL, covering the one before. */
	before = wal_syncs;
	assert_int_equal(store_begin(fx->s), 0);
	put(fx->s, mb, 0, 0, "sure");
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(wal_syncs - before, 1);
	/* Nothing new to make durable: no fsync. */
	before = wal_syncs;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(wal_syncs - before, 0);
	/* A lone non-durable commit is covered by the next durable one
	 * even if that one writes nothing. */
	assert_int_equal(store_begin(fx->s), 0);
	put(fx->s, mb, 0, 0, "lazy2");
	assert_int_equal(store_commit(fx->s, false), 0);
	before = wal_syncs;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(wal_syncs - before, 1);
	/* Both kinds persist across a reopen. */
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "dur");
	assert_int_equal(mb->n_ready, 3);

	/* NORMAL: durable commits do not fsync either. (The first write to
	 * a new WAL syncs its header, once per checkpoint cycle: SQLite
	 * needs that for consistency, so warm up before counting.) */
	fx->s = store_free(fx->s);
	fx_open(fx, STORE_SYNC_NORMAL);
	mb = store_mailbox_get(fx->s, "dur");
	assert_int_equal(store_begin(fx->s), 0);
	put(fx->s, mb, 0, 0, "warm-up");
	assert_int_equal(store_commit(fx->s, true), 0);
	before = wal_syncs;
	assert_int_equal(store_begin(fx->s), 0);
	put(fx->s, mb, 0, 0, "normal");
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(wal_syncs - before, 0);
	fx->s = store_free(fx->s);
	fx_open(fx, STORE_SYNC_OFF);
	mb = store_mailbox_get(fx->s, "dur");
	assert_int_equal(mb->n_ready, 5);
	before = wal_syncs;
	assert_int_equal(store_begin(fx->s), 0);
	put(fx->s, mb, 0, 0, "off");
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(wal_syncs - before, 0);
	fx_reopen(fx);
	assert_int_equal(store_mailbox_get(fx->s, "dur")->n_ready, 6);
}

static void
test_store_delayed_oldest_next_ready(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	StoreMsg m = {0};
	uint64_t delayed = 9, ids[3];
	int64_t t = -1, at = -1;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "time");
	assert_int_equal(store_mailbox_oldest(fx->s, mb, &t), 0);
	assert_int_equal(t, 0);
	assert_int_equal(store_mailbox_next_ready(fx->s, mb, NOW, &at), 0);
	assert_int_equal(at, 0);
	assert_int_equal(store_mailbox_count_delayed(fx->s, mb, NOW, &delayed),
			 0);
	assert_int_equal(delayed, 0);

	assert_int_equal(store_begin(fx->s), 0);
	for (int i = 0; i < 3; i++) {
		m = (StoreMsg){0};
		m.priority = (uint32_t)(3 * i); /* 0, 3, 6 */
		m.time_ns = NOW - 1000 + i;
		m.ready_ns = i == 0 ? 0 : NOW + 100 * i; /* 0, +100, +200 */
		m.data = "x";
		m.len = 1;
		assert_int_equal(store_msg_insert(fx->s, mb, &m), 0);
		ids[i] = m.id;
	}
	assert_int_equal(store_commit(fx->s, true), 0);

	assert_int_equal(store_mailbox_count_delayed(fx->s, mb, NOW, &delayed),
			 0);
	assert_int_equal(delayed, 2);
	assert_int_equal(
		store_mailbox_count_delayed(fx->s, mb, NOW + 150, &delayed), 0);
	assert_int_equal(delayed, 1);
	assert_int_equal(
		store_mailbox_count_delayed(fx->s, mb, NOW + 200, &delayed), 0);
	assert_int_equal(delayed, 0);
	assert_int_equal(store_mailbox_next_ready(fx->s, mb, NOW, &at), 0);
	assert_int_equal(at, NOW + 100);
	assert_int_equal(store_mailbox_next_ready(fx->s, mb, NOW + 100, &at),
			 0);
	assert_int_equal(at, NOW + 200);
	assert_int_equal(store_mailbox_next_ready(fx->s, mb, NOW + 200, &at),
			 0);
	assert_int_equal(at, 0);
	assert_int_equal(store_mailbox_oldest(fx->s, mb, &t), 0);
	assert_int_equal(t, NOW - 1000);

	/* Leased messages are not delayed; oldest looks at every state. */
	assert_int_equal(lease(fx->s, mb, NOW + 100, 10, &sn), 2);
	assert_int_equal(store_mailbox_count_delayed(fx->s, mb, NOW, &delayed),
			 0);
	assert_int_equal(delayed, 1);
	assert_int_equal(store_mailbox_next_ready(fx->s, mb, NOW, &at), 0);
	assert_int_equal(at, NOW + 200);
	assert_int_equal(store_mailbox_oldest(fx->s, mb, &t), 0);
	assert_int_equal(t, NOW - 1000);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_delete(fx->s, mb, ids[0]), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_mailbox_oldest(fx->s, mb, &t), 0);
	assert_int_equal(t, NOW - 999);
}

static void
test_store_fsync_failure_refuses_writes(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t id;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "sick");
	id = post(fx->s, mb, 0, "safe");
	fail_wal_sync = true;
	assert_int_equal(store_begin(fx->s), 0);
	put(fx->s, mb, 0, 0, "unsure");
	assert_int_equal(store_commit(fx->s, true), -EIO);
	fail_wal_sync = false;
	/* The COMMIT was done: the caller must not say "nothing". */
	assert_true(store_commit_unsure(fx->s));
	assert_false(store_in_txn(fx->s));
	assert_non_null(strstr(store_errmsg(fx->s), "fsync"));
	/* No more writes: the kernel may have dropped what it could not
	 * write, a later fsync would lie. Reads go on. */
	assert_int_equal(store_begin(fx->s), -EIO);
	assert_false(store_in_txn(fx->s));
	assert_int_equal(store_msg_get(fx->s, mb, id, NULL, NULL), 0);
	assert_ptr_equal(store_mailbox_get(fx->s, "sick"), mb);
	/* The commit itself happened; the counters say what the file has. */
	check_counters(fx, mb);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "sick");
	assert_int_equal(mb->n_ready, 2);
	post(fx->s, mb, 0, "again");
}

/* ------------------------------------------------------------------ */
/* Disk full */

static off_t
file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : 0;
}

/*
 * Make every file of the process stop growing a little past the store's
 * current files: RLIMIT_FSIZE needs no privilege, and SQLite sees a
 * failing write(2) just as on a full disk (EFBIG instead of ENOSPC).
 */
static void
limit_file_size(Fx *fx, off_t headroom)
{
	char wal[PATH_MAX + 8];
	struct rlimit rl = fx->fsize;
	off_t max = file_size(fx->path);

	snprintf(wal, sizeof(wal), "%s-wal", fx->path);
	if (file_size(wal) > max)
		max = file_size(wal);
	signal(SIGXFSZ, SIG_IGN);
	rl.rlim_cur = (rlim_t)(max + headroom);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

static void
unlimit_file_size(Fx *fx)
{
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &fx->fsize), 0);
}

/* Insert size bytes in a transaction, expecting -ENOSPC at insert or at
 * commit; returns which one failed (0 insert, 1 commit). */
static int
insert_full(Fx *fx, StoreMailbox *mb, size_t size)
{
	StoreMsg m = {0};
	char *big = malloc(size);
	int r, where;

	assert_non_null(big);
	memset(big, 'z', size);
	m.data = big;
	m.len = size;
	assert_int_equal(store_begin(fx->s), 0);
	r = store_msg_insert(fx->s, mb, &m);
	if (r == 0) {
		where = 1;
		r = store_commit(fx->s, true);
	} else {
		where = 0;
		/* Later writes of the batch refuse, commit reports it. */
		if (store_msg_insert(fx->s, mb, &m) == 0)
			assert_int_equal(store_rollback(fx->s), 0);
		else
			assert_int_equal(store_commit(fx->s, true), -ENOSPC);
		assert_false(store_commit_unsure(fx->s));
	}
	free(big);
	if (r != -ENOSPC)
		fail_msg("%d: %s", r, store_errmsg(fx->s));
	assert_false(store_in_txn(fx->s));
	return where;
}

static void
check_after_full(Fx *fx, StoreMailbox *mb, uint64_t n)
{
	Seen sn;

	assert_int_equal(mb->n_ready, n);
	assert_int_equal(mb->bytes, n);
	check_counters(fx, mb);
	/* Space again: the store works on. */
	post(fx->s, mb, 0, "y");
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "full");
	assert_int_equal(mb->n_ready, n + 1);
	assert_int_equal(lease(fx->s, mb, NOW, 100, &sn), (int)n + 1);
	check_counters(fx, mb);
}

/* ------------------------------------------------------------------ */
/* WAL writes gathered (store/walbuf.c) */

/* Insert n messages of size bytes in one transaction; commit. */
static int
put_batch(Fx *fx, StoreMailbox *mb, int n, size_t size, bool durable)
{
	StoreMsg m = {0};
	char *data = malloc(size);
	int r = 0;

	assert_non_null(data);
	memset(data, 'w', size);
	m.data = data;
	m.len = size;
	assert_int_equal(store_begin(fx->s), 0);
	for (int i = 0; i < n && r == 0; i++)
		r = store_msg_insert(fx->s, mb, &m);
	if (r == 0)
		r = store_commit(fx->s, durable);
	else
		store_rollback(fx->s);
	free(data);
	return r;
}

/* A commit's frames reach the WAL in one write, before COMMIT returns
 * and without a sync: another connection reads them at once. */
static void
test_store_wal_commit_one_write(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	int writes;
	int64_t bytes;
	sqlite3 *db;

	fx_open(fx, STORE_SYNC_NORMAL);
	mb = mk_mailbox(fx->s, "wal");
	writes = wal_writes;
	bytes = wal_bytes;
	assert_int_equal(put_batch(fx, mb, 20, 1000, false), 0);
	/* 20 KB is at least 3 pages, 6 writes the way SQLite makes them. */
	assert_true(wal_bytes - bytes >= 3 * (24 + PAGE));
	assert_int_equal(wal_writes - writes, 1);
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM message"), 20);
	/* The idle broker's trim frees the run buffer; the next commit
	 * makes another. */
	store_release_memory(fx->s);
	writes = wal_writes;
	assert_int_equal(put_batch(fx, mb, 20, 1000, false), 0);
	assert_int_equal(wal_writes - writes, 1);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM message"), 40);
	sqlite3_close(db);
}

/* The WAL is checkpointed every 16 MiB, whatever the page size: it grows
 * to that (and one transaction more), and no further. */
static void
test_store_wal_checkpoint_interval(void **state)
{
	Fx *fx = *state;
	const off_t frame = 24 + PAGE, interval = (16 << 20) / PAGE;
	char wal[PATH_MAX + 8];
	StoreMailbox *mb;
	struct stat st;
	off_t most = 0;

	fx_open(fx, STORE_SYNC_NORMAL);
	mb = mk_mailbox(fx->s, "wal");
	snprintf(wal, sizeof(wal), "%s-wal", fx->path);
	/* 64 KB a transaction, 25 MB in all: past one interval. */
	for (int i = 0; i < 400; i++) {
		assert_int_equal(put_batch(fx, mb, 64, 1000, false), 0);
		assert_int_equal(stat(wal, &st), 0);
		most = st.st_size > most ? st.st_size : most;
	}
	print_message("WAL file at most %lld bytes, %lld frames\n",
		      (long long)most, (long long)((most - 32) / frame));
	assert_true(most >= 32 + interval * frame);
	assert_true(most <= 32 + (interval + 64) * frame);
}

/* Up to 256 ids of leased messages. */
typedef struct Ids {
	size_t n;
	uint64_t id[256];
} Ids;

static int
ids_cb(void *ctx, const StoreMsg *m)
{
	Ids *ids = ctx;

	if (ids->n < sizeof(ids->id) / sizeof(ids->id[0]))
		ids->id[ids->n] = m->id;
	ids->n++;
	return 0;
}

/* The frames in the WAL file (which no checkpoint has cut back). */
static off_t
wal_frames(const Fx *fx)
{
	char wal[PATH_MAX + 8];
	struct stat st;

	snprintf(wal, sizeof(wal), "%s-wal", fx->path);
	assert_int_equal(stat(wal, &st), 0);
	return st.st_size > 32 ? (st.st_size - 32) / (24 + PAGE) : 0;
}

/* Acks that empty pages put them on the free list without writing them:
 * with secure_delete on, each emptied page is zeroed and goes to the WAL,
 * to be checkpointed and synced. On is the default of Debian's SQLite
 * (built with SQLITE_SECURE_DELETE), where this test tells the store's
 * setting apart; elsewhere off is SQLite's default anyway. */
static void
test_store_ack_frees_pages_unwritten(void **state)
{
	Fx *fx = *state;
	const size_t size = PAGE / 2 - 200; /* two messages a page */
	StoreMailbox *mb;
	Ids ids = {0};
	off_t before, written;
	int64_t free_before;
	sqlite3 *db;

	fx_open(fx, STORE_SYNC_NORMAL);
	mb = mk_mailbox(fx->s, "q");
	assert_int_equal(put_batch(fx, mb, 200, size, false), 0);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_lease(fx->s, mb, NOW, 200, ids_cb, &ids),
			 200);
	assert_int_equal(store_commit(fx->s, false), 0);
	assert_int_equal(ids.n, 200);

	db = raw_open(fx);
	free_before = raw_int(db, "PRAGMA freelist_count");
	before = wal_frames(fx);
	assert_int_equal(store_begin(fx->s), 0);
	for (size_t i = 0; i < ids.n; i++)
		assert_int_equal(store_msg_ack(fx->s, mb, ids.id[i], size), 0);
	assert_int_equal(store_commit(fx->s, false), 0);
	written = wal_frames(fx) - before;
	/* The acks did empty the pages: else few frames would prove
	 * nothing. */
	assert_true(raw_int(db, "PRAGMA freelist_count") - free_before >= 95);
	sqlite3_close(db);
	print_message("acking 200 messages on 100 pages wrote %lld frames\n",
		      (long long)written);
	/* The free list's trunk, the table's and indexes' other pages, the
	 * lease table: a handful, not the 100 pages emptied. */
	assert_true(written > 0);
	assert_true(written < 20);
	assert_int_equal(mb->n_ready + mb->n_leased, 0);
	check_counters(fx, mb);
}

/* A failed write of the gathered frames fails the commit, and nothing of
 * it is in the store afterwards. */
static void
test_store_wal_write_error_fails_commit(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "wal");
	assert_int_equal(put_batch(fx, mb, 2, 100, true), 0);
	fail_wal_write = true;
	assert_true(put_batch(fx, mb, 20, 1000, true) < 0);
	assert_false(store_in_txn(fx->s));
	fail_wal_write = false;
	assert_int_equal(mb->n_ready, 2);
	assert_int_equal(put_batch(fx, mb, 1, 100, true), 0);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "wal");
	assert_int_equal(mb->n_ready, 3);
	check_counters(fx, mb);
}

/* More than the page cache in one transaction: SQLite spills frames and
 * reads them back before COMMIT; every write stays within one run. */
static void
test_store_wal_large_transaction(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	int writes;
	sqlite3 *db;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "wal");
	wal_write_max = 0;
	writes = wal_writes;
	assert_int_equal(put_batch(fx, mb, 1024, 4000, true), 0);
	assert_true(wal_write_max <= WALBUF_RUN_MAX);
	assert_true(wal_writes - writes >= (1024 * 4000) / WALBUF_RUN_MAX);
	/* Gathered: SQLite alone makes two writes for each of the 1000 or
	 * more frames. */
	assert_true(wal_writes - writes < 250);
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "SELECT sum(length(data)) FROM message"),
			 1024 * 4000);
	sqlite3_close(db);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "wal");
	assert_int_equal(mb->n_ready, 1024);
	check_counters(fx, mb);
}

/* Pages SQLite spilled to the WAL and reads back in the same transaction,
 * some of them still gathered in memory: they come back as written. */
/* A connection to fx->path through a WalBuf VFS of its own. */
static sqlite3 *
walbuf_open(const Fx *fx, WalBuf **wb)
{
	sqlite3 *db = NULL;
	char sql[64];

	assert_int_equal(walbuf_new(wb, NULL), 0);
	assert_int_equal(
		sqlite3_open_v2(fx->path, &db,
				SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
				walbuf_name(*wb)),
		SQLITE_OK);
	/* Two pages of cache: SQLite spills to the WAL mid-transaction.
	 * synchronous=NORMAL as in the store: a commit does not sync. */
	snprintf(sql, sizeof(sql), "PRAGMA page_size = %d;", walbuf_page);
	raw_exec(db, sql);
	raw_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
		     "PRAGMA cache_size = 2;"
		     "CREATE TABLE IF NOT EXISTS t (n INTEGER, x BLOB);");
	assert_int_equal(raw_int(db, "PRAGMA page_size"), walbuf_page);
	return db;
}

/* A row size of the walbuf tests, given for 4 KiB pages: the same share
 * of a page at walbuf_page. */
static int
wal_bytes_at(int bytes_4k)
{
	return bytes_4k * walbuf_page / 4096;
}

static void
walbuf_close(sqlite3 *db, WalBuf *wb)
{
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
	walbuf_free(wb);
}

/* BEGIN, insert n rows of 3000 bytes (at 4 KiB pages) into t, then
 * rewrite them all, 1 byte shorter or not: frames spilled and written
 * again in one transaction. Then the SQL of after. */
static void
spill_and_rewrite(sqlite3 *db, int n, const char *after)
{
	int64_t before = wal_bytes;
	char sql[512];

	snprintf(sql, sizeof(sql),
		 "BEGIN; WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL"
		 " SELECT n + 1 FROM c WHERE n < %d)"
		 " INSERT INTO t SELECT n, randomblob(%d) FROM c;"
		 " UPDATE t SET x = zeroblob(%d + n %% 2);",
		 n, wal_bytes_at(3000), wal_bytes_at(3000) - 1);
	raw_exec(db, sql);
	/* Spilled: pages of the open transaction reached the WAL. */
	assert_true(wal_bytes > before);
	raw_exec(db, after);
}

/* The database and WAL as a kill -9 would leave them, copied aside and
 * opened without walbuf: rows of t (and of the table of sql). */
static int64_t
crash_copy_int(const Fx *fx, const char *sql)
{
	static const char *const ext[] = {"", "-wal"};
	char src[PATH_MAX + 8], dst[PATH_MAX + 16], buf[8192];
	sqlite3 *db = NULL;
	int64_t v;

	for (size_t i = 0; i < 2; i++) {
		FILE *in, *out;
		size_t k;

		snprintf(src, sizeof(src), "%s%s", fx->path, ext[i]);
		snprintf(dst, sizeof(dst), "%s.copy%s", fx->path, ext[i]);
		in = fopen(src, "rb");
		if (!in && i == 1)
			break; /* closed: checkpointed, no WAL left */
		out = fopen(dst, "wb");
		assert_non_null(in);
		assert_non_null(out);
		while ((k = fread(buf, 1, sizeof(buf), in)) > 0)
			assert_int_equal(fwrite(buf, 1, k, out), k);
		fclose(in);
		assert_int_equal(fclose(out), 0);
	}
	snprintf(dst, sizeof(dst), "%s.copy", fx->path);
	assert_int_equal(sqlite3_open(dst, &db), SQLITE_OK);
	assert_int_equal(raw_int(db, "SELECT integrity_check = 'ok'"
				     " FROM pragma_integrity_check"),
			 1);
	v = raw_int(db, sql);
	sqlite3_close(db);
	for (size_t i = 0; i < 3; i++) {
		snprintf(dst, sizeof(dst), "%s.copy%s", fx->path,
			 i < 2 ? ext[i] : "-shm");
		unlink(dst);
	}
	return v;
}

/* Pages SQLite spilled to the WAL and reads back in the same transaction,
 * some of them still gathered in memory: they come back as written. */
static void
test_store_wal_reads_back_spilled(void **state)
{
	Fx *fx = *state;
	WalBuf *wb = NULL;
	sqlite3 *db = walbuf_open(fx, &wb);
	int64_t bytes = 60 * (wal_bytes_at(3000) - 1) + 30;

	spill_and_rewrite(db, 60, "");
	assert_int_equal(raw_int(db, "SELECT sum(length(x)) FROM t"), bytes);
	assert_int_equal(raw_int(db, "SELECT sum(n) FROM t"), 60 * 61 / 2);
	raw_exec(db, "COMMIT");
	/* Committed means in the file: a crash now keeps it. */
	assert_int_equal(crash_copy_int(fx, "SELECT sum(length(x)) FROM t"),
			 bytes);
	walbuf_close(db, wb);
}

/* SQLite rewrites the checksums of spilled frames after writing the
 * commit frame: if that write fails, so must the COMMIT, and nothing of
 * it may come back after a crash. */
static void
test_store_wal_rewrite_error_fails_commit(void **state)
{
	Fx *fx = *state;
	WalBuf *wb = NULL;
	sqlite3 *db = walbuf_open(fx, &wb);

	spill_and_rewrite(db, 60, "");
	fail_wal_commit_header = true;
	assert_int_not_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL),
			     SQLITE_OK);
	fail_wal_commit_header = false;
	if (!sqlite3_get_autocommit(db))
		raw_exec(db, "ROLLBACK");
	assert_int_equal(raw_int(db, "SELECT count(*) FROM t"), 0);
	assert_int_equal(crash_copy_int(fx, "SELECT count(*) FROM t"), 0);
	/* And the connection works on. */
	raw_exec(db, "INSERT INTO t VALUES (1, 'a')");
	assert_int_equal(crash_copy_int(fx, "SELECT count(*) FROM t"), 1);
	walbuf_close(db, wb);
}

/*
 * Commits of 1 to 70 pages (then half pages): some of them has its commit
 * frame's header end a full run, so that its page starts a run of its own. That
 * page still ends the commit: its failed write fails the COMMIT. Whatever each
 * COMMIT says, a crash copy agrees with it.
 */
static void
test_store_wal_commit_page_after_full_run(void **state)
{
	Fx *fx = *state;
	WalBuf *wb = NULL;
	sqlite3 *db = walbuf_open(fx, &wb);
	int64_t rows = 0;
	int failed = 0;
	char sql[256];

	raw_exec(db, "PRAGMA cache_size = 1000");
	fail_wal_lone_page = true;
	/* Rows of about one page, then of about half a page: the failed
	 * commits leave the WAL at many different offsets. */
	for (int i = 1; i <= 140; i++) {
		snprintf(sql, sizeof(sql),
			 "BEGIN; WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL"
			 " SELECT n + 1 FROM c WHERE n < %d)"
			 " INSERT INTO t SELECT n, zeroblob(%d) FROM c;"
			 " COMMIT;",
			 i <= 70 ? i : i - 70,
			 wal_bytes_at(i <= 70 ? 3900 : 1900));
		if (sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK) {
			rows += i <= 70 ? i : i - 70;
		} else {
			failed++;
			if (!sqlite3_get_autocommit(db))
				raw_exec(db, "ROLLBACK");
		}
		assert_int_equal(crash_copy_int(fx, "SELECT count(*) FROM t"),
				 rows);
	}
	fail_wal_lone_page = false;
	assert_true(failed > 0);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM t"), rows);
	walbuf_close(db, wb);
}

/*
 * A spill whose write failed, rolled back, leaves the WAL file ending in
 * the middle of a frame. The next transactions write there again: those
 * writes past what reached the file fail, and each transaction either
 * fails or is whole in the file when it commits (another connection
 * checks). Updates of 25 to 34 rows put the commit frame at different
 * places around the failed end.
 */
static void
test_store_wal_after_failed_spill(void **state)
{
	Fx *fx = *state;
	char sql[256];
	int failed = 0;

	for (int k = 25; k <= 34; k++) {
		WalBuf *wb = NULL;
		sqlite3 *db, *other;
		int rc;

		fx_remove_db(fx);
		db = walbuf_open(fx, &wb);
		snprintf(sql, sizeof(sql),
			 "PRAGMA wal_autocheckpoint = 0;"
			 "PRAGMA cache_size = 1000;"
			 "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL"
			 " SELECT n + 1 FROM c WHERE n < 80)"
			 " INSERT INTO t SELECT n, randomblob(%d) FROM c;"
			 "PRAGMA cache_size = 2;",
			 wal_bytes_at(3000));
		raw_exec(db, sql);
		fail_wal_run_end = 0;
		fail_wal_run_once = true;
		snprintf(sql, sizeof(sql),
			 "BEGIN; UPDATE t SET x = randomblob(%d) WHERE n <= 60",
			 wal_bytes_at(3000));
		sqlite3_exec(db, sql, NULL, NULL, NULL);
		fail_wal_run_once = false;
		if (!sqlite3_get_autocommit(db))
			raw_exec(db, "ROLLBACK");
		assert_true(fail_wal_run_end > 0);
		fail_wal_from = fail_wal_run_end;
		snprintf(sql, sizeof(sql),
			 "UPDATE t SET x = zeroblob(%d) WHERE n <= %d",
			 wal_bytes_at(2000), k);
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
		fail_wal_from = -1;
		failed += rc != SQLITE_OK;
		other = raw_open(fx);
		assert_int_equal(raw_int(other, "SELECT quick_check = 'ok'"
						" FROM pragma_quick_check"),
				 1);
		snprintf(sql, sizeof(sql),
			 "SELECT count(*) FROM t WHERE length(x) = %d",
			 wal_bytes_at(2000));
		assert_int_equal(raw_int(other, sql), rc == SQLITE_OK ? k : 0);
		sqlite3_close(other);
		walbuf_close(db, wb);
	}
	assert_true(failed > 0);
}

/* Frames of a transaction that spilled and rolled back must not be
 * written later over what another writer appended in their place. */
static void
test_store_wal_rollback_drops_spill(void **state)
{
	Fx *fx = *state;
	WalBuf *wb = NULL;
	sqlite3 *db = walbuf_open(fx, &wb), *other;
	char sql[256];

	raw_exec(db, "CREATE TABLE t2 (n INTEGER, x BLOB)");
	spill_and_rewrite(db, 12, "ROLLBACK;");
	other = raw_open(fx);
	snprintf(sql, sizeof(sql),
		 "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL"
		 " SELECT n + 1 FROM c WHERE n < 12)"
		 " INSERT INTO t2 SELECT n, randomblob(%d) FROM c",
		 wal_bytes_at(3000));
	raw_exec(other, sql);
	sqlite3_close(other);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM t2"), 12);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM t"), 0);
	assert_int_equal(crash_copy_int(fx, "SELECT count(*) FROM t2"), 12);
	walbuf_close(db, wb);
	assert_int_equal(crash_copy_int(fx, "SELECT count(*) FROM t2"), 12);
}

static void
test_store_disk_full_at_commit(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "full");
	for (int i = 0; i < 3; i++)
		post(fx->s, mb, 0, "x");
	limit_file_size(fx, 64 * 1024);
	/* 1 MiB fits the page cache (2 MiB): the WAL write at COMMIT
	 * fails. */
	assert_int_equal(insert_full(fx, mb, 1u << 20), 1);
	assert_non_null(strstr(store_errmsg(fx->s), "commit"));
	unlimit_file_size(fx);
	check_after_full(fx, mb, 3);
}

static void
test_store_disk_full_at_insert(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "full");
	for (int i = 0; i < 3; i++)
		post(fx->s, mb, 0, "x");
	limit_file_size(fx, 64 * 1024);
	/* Larger than the page cache: SQLite spills to the WAL during the
	 * INSERT itself, which fails. */
	assert_int_equal(insert_full(fx, mb, 24u << 20), 0);
	unlimit_file_size(fx);
	check_after_full(fx, mb, 3);
}

/* ------------------------------------------------------------------ */
/* A size cap (store_set_max_bytes) */

#define CAP_BYTES    (64u * PAGE) /* 64 pages */
#define CAP_MSG	     1000	  /* payload bytes of each message */
#define CAP_MAX_MSGS 2000	  /* far more than fit: the fill loop's bound */

/* Which message was committed under which id: payload k is a pattern
 * seeded by k, so every byte read back can be checked. */
typedef struct CapLog {
	size_t n;
	uint64_t id[CAP_MAX_MSGS];
	uint32_t seed[CAP_MAX_MSGS];
	bool gone[CAP_MAX_MSGS]; /* deleted (acked) on purpose */
	uint32_t next_seed;
	off_t max_wal; /* the largest WAL file seen */
} CapLog;

static void
cap_payload(uint32_t seed, unsigned char *buf)
{
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < CAP_MSG; i++) {
		x = x * 1103515245u + 12345u;
		buf[i] = (unsigned char)(x >> 16);
	}
}

static void
cap_note_wal(Fx *fx, CapLog *lg)
{
	char wal[PATH_MAX + 8];
	off_t n;

	snprintf(wal, sizeof(wal), "%s-wal", fx->path);
	n = file_size(wal);
	if (n > lg->max_wal)
		lg->max_wal = n;
}

/* Post one message in a transaction of its own. Returns 0 (committed and
 * logged) or -ENOSPC (nothing stored, the transaction is over). */
static int
cap_post(Fx *fx, StoreMailbox *mb, CapLog *lg)
{
	unsigned char buf[CAP_MSG];
	uint64_t before = mb->n_ready, bytes = mb->bytes;
	StoreMsg m = {0};
	int r;

	cap_payload(lg->next_seed, buf);
	m.time_ns = NOW;
	m.data = buf;
	m.len = sizeof(buf);
	assert_int_equal(store_begin(fx->s), 0);
	r = store_msg_insert(fx->s, mb, &m);
	if (r == 0) {
		r = store_commit(fx->s, true);
	} else {
		assert_int_equal(r, -ENOSPC);
		assert_non_null(strstr(store_errmsg(fx->s), "full"));
		/* SQLite rolled back the transaction or only the
		 * statement: either way nothing of the insert is left. */
		r = store_commit(fx->s, true);
		assert_true(r == 0 || r == -ENOSPC);
		r = -ENOSPC;
	}
	assert_false(store_in_txn(fx->s));
	cap_note_wal(fx, lg);
	if (r < 0) {
		assert_int_equal(r, -ENOSPC);
		assert_int_equal(mb->n_ready, before);
		assert_int_equal(mb->bytes, bytes);
		return r;
	}
	assert_true(lg->n < CAP_MAX_MSGS);
	lg->id[lg->n] = m.id;
	lg->seed[lg->n] = lg->next_seed++;
	lg->n++;
	return 0;
}

/* Post until the cap refuses; returns how many went in. */
static size_t
cap_fill(Fx *fx, StoreMailbox *mb, CapLog *lg)
{
	size_t n = 0;

	while (cap_post(fx, mb, lg) == 0) {
		n++;
		if (n >= CAP_MAX_MSGS)
			fail_msg("the cap of %u bytes never refused a post",
				 CAP_BYTES);
	}
	return n;
}

typedef struct CapCheck {
	const CapLog *lg;
	size_t seen;
} CapCheck;

static int
cap_check_cb(void *ctx, const StoreMsg *m)
{
	CapCheck *cc = ctx;
	unsigned char want[CAP_MSG];

	for (size_t i = 0; i < cc->lg->n; i++) {
		if (cc->lg->id[i] != m->id)
			continue;
		if (cc->lg->gone[i])
			fail_msg("message %llu was deleted, yet it is there",
				 (unsigned long long)m->id);
		cap_payload(cc->lg->seed[i], want);
		assert_int_equal(m->len, CAP_MSG);
		assert_memory_equal(m->data, want, CAP_MSG);
		cc->seen++;
		return 0;
	}
	fail_msg("message %llu was never committed", (unsigned long long)m->id);
	return 1;
}

/* Every committed message not deleted is there, byte for byte, and
 * nothing else is; the counters equal the database. */
static void
cap_check_all(Fx *fx, StoreMailbox *mb, const CapLog *lg)
{
	CapCheck cc = {lg, 0};
	size_t live = 0;
	int n;

	for (size_t i = 0; i < lg->n; i++)
		live += !lg->gone[i];
	n = store_msg_peek(fx->s, mb, 0, CAP_MAX_MSGS, false, cap_check_cb,
			   &cc);
	assert_int_equal(n, (int)live);
	assert_int_equal(cc.seen, live);
	assert_int_equal(mb->n_ready, live);
	assert_int_equal(mb->bytes, (uint64_t)live * CAP_MSG);
	check_counters(fx, mb);
}

/* Pages of the database image as another connection sees it. */
static int64_t
raw_pages(const Fx *fx)
{
	sqlite3 *db = raw_open(fx);
	int64_t n = raw_int(db, "PRAGMA page_count");

	sqlite3_close(db);
	return n;
}

static void
cap_delete(Fx *fx, StoreMailbox *mb, CapLog *lg, size_t from, size_t to)
{
	assert_int_equal(store_begin(fx->s), 0);
	for (size_t i = from; i < to && i < lg->n; i++) {
		if (lg->gone[i])
			continue;
		assert_int_equal(store_msg_delete(fx->s, mb, lg->id[i]), 0);
		lg->gone[i] = true;
	}
	assert_int_equal(store_commit(fx->s, true), 0);
}

typedef struct CapIds {
	size_t n;
	uint64_t id[CAP_MAX_MSGS];
} CapIds;

static int
cap_ids_cb(void *ctx, const StoreMsg *m)
{
	CapIds *ci = ctx;

	assert_true(ci->n < CAP_MAX_MSGS);
	ci->id[ci->n++] = m->id;
	return 0;
}

/* Lease up to max messages of mb in a transaction of its own, their ids
 * added to ci; what says what failed. Returns how many. */
static int
cap_lease_txn(Fx *fx, StoreMailbox *mb, int max, CapIds *ci, const char *what)
{
	int n;

	assert_int_equal(store_begin(fx->s), 0);
	n = store_msg_lease(fx->s, mb, NOW, max, cap_ids_cb, ci);
	if (n < 0)
		fail_msg("%s: %d %s", what, n, store_errmsg(fx->s));
	assert_int_equal(store_commit(fx->s, false), 0);
	return n;
}

/* Lease every message of a full store, give them all back, lease them
 * again: all of it must fit in the reserve the cap keeps for draining. */
static void
cap_drain_check(Fx *fx, StoreMailbox *mb, const CapLog *lg)
{
	CapIds *ci = calloc(1, sizeof(*ci));
	uint64_t live = mb->n_ready;
	int n;

	assert_non_null(ci);
	for (int pass = 0; pass < 2; pass++) {
		ci->n = 0;
		do
			n = cap_lease_txn(fx, mb, 50, ci, "lease at full");
		while (n > 0);
		assert_int_equal(ci->n, live);
		assert_int_equal(mb->n_leased, live);
		assert_int_equal(store_begin(fx->s), 0);
		for (size_t i = 0; i < ci->n; i++)
			assert_int_equal(
				store_msg_release(fx->s, mb, ci->id[i], 0), 0);
		assert_int_equal(store_commit(fx->s, true), 0);
	}
	assert_true(raw_pages(fx) <= CAP_BYTES / PAGE);
	cap_check_all(fx, mb, lg);
	free(ci);
}

static void
test_store_cap_refuses(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	CapLog *lg = calloc(1, sizeof(*lg));
	int64_t pages;
	int i;

	assert_non_null(lg);
	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "full");
	pages = raw_pages(fx);
	/* Smaller than what is there already; 1 byte is less than a page. */
	assert_int_equal(
		store_set_max_bytes(fx->s, (uint64_t)(pages - 1) * PAGE),
		-EINVAL);
	assert_non_null(strstr(store_errmsg(fx->s), "holds"));
	assert_int_equal(store_set_max_bytes(fx->s, 1), -EINVAL);
	/* Exactly what is there: allowed, and full at the next page (a
	 * message or two may still fit in the room left in the last). */
	assert_int_equal(
		store_set_max_bytes(fx->s, (uint64_t)pages * PAGE + (PAGE - 1)),
		0);
	for (i = 0; i < 8 && cap_post(fx, mb, lg) == 0; i++)
		;
	assert_true(i < 8);
	assert_int_equal(raw_pages(fx), pages);
	/* 0 lifts the cap. */
	assert_int_equal(store_set_max_bytes(fx->s, 0), 0);
	for (i = 0; i < 10; i++)
		assert_int_equal(cap_post(fx, mb, lg), 0);
	assert_true(raw_pages(fx) > pages);
	cap_check_all(fx, mb, lg);
	free(lg);
}

/*
 * Fill under the cap until it refuses, delete the oldest half, fill
 * again: freed pages are reused (WAL, autocheckpoint and all), the cap
 * holds, and every committed message reads back intact, also after a
 * reopen.
 */
static void
test_store_cap_fill_ack_reopen(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	CapLog *lg = calloc(1, sizeof(*lg));
	size_t first, again;
	int i;

	assert_non_null(lg);
	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "full");
	assert_int_equal(store_set_max_bytes(fx->s, CAP_BYTES), 0);
	first = cap_fill(fx, mb, lg);
	/* 1000-byte rows: seven a page. Posts leave the reserve (1/16 of
	 * the cap, at least 8 pages) free. */
	assert_true(first > 100);
	assert_true(raw_pages(fx) <= CAP_BYTES / PAGE - 8);
	cap_check_all(fx, mb, lg);
	cap_drain_check(fx, mb, lg);

	for (int round = 0; round < 5; round++) {
		size_t live = 0, start = 0;

		for (size_t k = 0; k < lg->n; k++)
			live += !lg->gone[k];
		while (lg->gone[start])
			start++;
		cap_delete(fx, mb, lg, start, start + live / 2);
		again = cap_fill(fx, mb, lg);
		/* Room made by acks is found again, round after round. */
		if (again < live / 2 - live / 8)
			fail_msg("round %d: %zu deleted, only %zu fit again",
				 round, live / 2, again);
		assert_true(raw_pages(fx) <= CAP_BYTES / PAGE);
		cap_check_all(fx, mb, lg);
	}
	/* The WAL is not under the cap, but checkpoints keep it small. */
	print_message("cap %u: %zu messages of %u bytes fit; WAL file at "
		      "most %lld bytes\n",
		      CAP_BYTES, first, CAP_MSG, (long long)lg->max_wal);
	/* At most: the frames before a checkpoint (a quarter of the cap)
	 * plus one transaction, which can rewrite every page. */
	assert_true(lg->max_wal <=
		    32 + (off_t)(CAP_BYTES / PAGE * 5 / 4) * (PAGE + 24));

	/* A new connection has no cap until it is set again; the database
	 * is as full as the cap, which is allowed. */
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "full");
	assert_non_null(mb);
	cap_check_all(fx, mb, lg);
	assert_int_equal(store_set_max_bytes(fx->s, CAP_BYTES / 2), -EINVAL);
	assert_int_equal(store_set_max_bytes(fx->s, CAP_BYTES), 0);
	for (i = 0; i < 8 && cap_post(fx, mb, lg) == 0; i++)
		;
	assert_true(i < 8);
	cap_delete(fx, mb, lg, 0, lg->n);
	assert_true(cap_fill(fx, mb, lg) >= first - first / 8);
	cap_check_all(fx, mb, lg);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "full");
	cap_check_all(fx, mb, lg);
	free(lg);
}

/*
 * A store held at its size for a full disk (store_hold_size): posts go
 * only into the pages acks freed, the file grows by grow at most, and
 * everything can still be leased and acked. The WAL is checkpointed
 * every WAL pages (store_set_wal_max) all along, held or not.
 */
static void
test_store_hold_size(void **state)
{
	enum { GROW = 4, WAL = 16, POSTS = 1200 };
	Fx *fx = *state;
	StoreMailbox *mb;
	CapLog *lg = calloc(1, sizeof(*lg));
	CapIds *ci = calloc(1, sizeof(*ci));
	size_t again, live = 0;
	int64_t pages;
	int n;

	assert_non_null(lg);
	assert_non_null(ci);
	fx_open(fx, STORE_SYNC_FULL);
	assert_int_equal(store_set_wal_max(fx->s, WAL * PAGE), 0);
	mb = mk_mailbox(fx->s, "held");
	for (int i = 0; i < POSTS; i++)
		assert_int_equal(cap_post(fx, mb, lg), 0);
	/* Without a cap the WAL would reach 16 MiB (2048 pages) first. */
	assert_true(lg->max_wal <= 32 + (off_t)(WAL + 24) * (PAGE + 24));
	/* One transaction of 600 deletes: a WAL file that large, which the
	 * next frames reuse. Emptied, to measure what follows alone. */
	cap_delete(fx, mb, lg, 0, POSTS / 2);
	assert_int_equal(store_wal_empty(fx->s), 0);
	lg->max_wal = 0;
	pages = raw_pages(fx);
	/* Far more pages than a WAL of WAL pages: a cap alone would
	 * checkpoint every quarter of them. */
	assert_true(pages / 4 > 2 * WAL);
	assert_int_equal(store_hold_size(fx->s, GROW * PAGE, 0), 0);

	again = cap_fill(fx, mb, lg);
	print_message("held at %lld pages: %zu of %d freed messages posted "
		      "again, file %lld pages, WAL at most %lld bytes\n",
		      (long long)pages, again, POSTS / 2,
		      (long long)raw_pages(fx), (long long)lg->max_wal);
	/* Posts found the room of the acks, and did not grow the file. */
	assert_true(again >= POSTS / 4);
	assert_true(raw_pages(fx) <= pages);
	cap_check_all(fx, mb, lg);

	/* Everything can be leased (the lease rows may take the GROW
	 * pages) and acked, as a consumer does: lease 100, ack them. */
	for (size_t k = 0; k < lg->n; k++)
		live += !lg->gone[k];
	do {
		size_t from = ci->n;

		n = cap_lease_txn(fx, mb, 100, ci, "lease while held");
		assert_int_equal(store_begin(fx->s), 0);
		for (size_t k = from; k < ci->n; k++)
			assert_int_equal(store_msg_delete(fx->s, mb, ci->id[k]),
					 0);
		assert_int_equal(store_commit(fx->s, true), 0);
		cap_note_wal(fx, lg);
	} while (n > 0);
	assert_int_equal(ci->n, live);
	for (size_t k = 0; k < lg->n; k++)
		lg->gone[k] = true;
	assert_int_equal(mb->n_ready + mb->n_leased, 0);
	assert_true(raw_pages(fx) <= pages + GROW);
	/* Checkpoints every WAL pages: the WAL file is at most those
	 * frames plus the transaction that passed the mark. */
	assert_true(lg->max_wal <= 32 + (off_t)(WAL + 24) * (PAGE + 24));

	/* Lifted: posts may grow the file again. */
	assert_int_equal(store_set_max_bytes(fx->s, 0), 0);
	for (int i = 0; i < 200 && lg->n < CAP_MAX_MSGS; i++)
		assert_int_equal(cap_post(fx, mb, lg), 0);
	free(ci);
	free(lg);
}

/*
 * Held again (the operator's cap changed while the disk is full): the
 * hold keeps the size it allowed, though the file grew into its margin
 * meanwhile, so the margin is not granted twice; lifted and held anew,
 * it is measured again.
 */
static void
test_store_hold_again(void **state)
{
	enum { GROW = 8 };
	Fx *fx = *state;
	StoreMailbox *mb;
	CapLog *lg = calloc(1, sizeof(*lg));
	sqlite3 *db;
	int64_t pages;
	uint64_t held;

	assert_non_null(lg);
	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "held");
	for (int i = 0; i < 300; i++)
		assert_int_equal(cap_post(fx, mb, lg), 0);
	assert_int_equal(store_cap_bytes(fx->s), 0);
	pages = raw_pages(fx);
	assert_int_equal(store_hold_size(fx->s, GROW * PAGE, 0), 0);
	held = store_cap_bytes(fx->s);
	assert_int_equal(held, (uint64_t)(pages + GROW) * PAGE);

	/* The file grows into the margin (another writer, as a drain's
	 * lease rows would), then the hold is applied again. */
	db = raw_open(fx);
	raw_exec(db, "CREATE TABLE pad (b); "
		     "INSERT INTO pad VALUES (zeroblob(3 * 8192))");
	sqlite3_close(db);
	assert_true(raw_pages(fx) > pages);
	assert_true(raw_pages(fx) < pages + GROW);
	assert_int_equal(store_hold_size(fx->s, GROW * PAGE, 0), 0);
	assert_int_equal(store_cap_bytes(fx->s), held);
	/* An operator's cap below it still wins. */
	assert_int_equal(store_hold_size(fx->s, GROW * PAGE, held - PAGE), 0);
	assert_int_equal(store_cap_bytes(fx->s), held - PAGE);
	assert_int_equal(store_hold_size(fx->s, GROW * PAGE, 0), 0);
	assert_int_equal(store_cap_bytes(fx->s), held);

	/* Lifted, then a new full disk: measured from the file's size. */
	assert_int_equal(store_set_max_bytes(fx->s, 0), 0);
	assert_int_equal(store_cap_bytes(fx->s), 0);
	pages = raw_pages(fx);
	assert_int_equal(store_hold_size(fx->s, GROW * PAGE, 0), 0);
	assert_int_equal(store_cap_bytes(fx->s),
			 (uint64_t)(pages + GROW) * PAGE);
	assert_true(store_cap_bytes(fx->s) > held);
	free(lg);
}

/* The pages an add could still take without touching the reserve, plus
 * the reserve: free-list pages and the pages the file may still grow by,
 * as another connection sees the committed database. */
static int64_t
cap_headroom(const Fx *fx, int64_t cap_pages)
{
	sqlite3 *db = raw_open(fx);
	int64_t n = raw_int(db, "PRAGMA freelist_count") + cap_pages -
		    raw_int(db, "PRAGMA page_count");

	sqlite3_close(db);
	return n;
}

/* Post messages of mixed sizes and priorities, one a transaction, until
 * the cap refuses one; returns how many went in. */
static size_t
cap_fill_mixed(Fx *fx, StoreMailbox *mb, uint32_t *seed)
{
	static unsigned char buf[3000];
	StoreMsg m;
	size_t n;
	int r = 0;

	for (n = 0; n < 100000; n++) {
		*seed = *seed * 1103515245u + 12345u;
		memset(&m, 0, sizeof(m));
		m.time_ns = NOW;
		m.priority = (*seed >> 8) % 10;
		m.expires_ns = (*seed & 1) ? NOW + 1000000000000 : 0;
		m.data = buf;
		m.len = 10 + (*seed >> 12) % (n % 4 ? 200 : sizeof(buf) - 10);
		assert_int_equal(store_begin(fx->s), 0);
		r = store_msg_insert(fx->s, mb, &m);
		if (r < 0) {
			assert_int_equal(r, -ENOSPC);
			store_rollback(fx->s);
			return n;
		}
		assert_int_equal(store_commit(fx->s, true), 0);
	}
	fail_msg("the cap never refused a post");
	return n;
}

/* Lease up to max messages in batches of batch, each transaction on its
 * own (the store stays full meanwhile), then ack them: both must fit in
 * the reserve. Leases take room (schema version 4): when the cap has no
 * more for them, the ones held are acked first, then leasing goes on. */
static void
cap_lease_ack(Fx *fx, StoreMailbox *mb, size_t max, size_t batch)
{
	CapIds *ci = calloc(1, sizeof(*ci));
	size_t taken = 0;
	int n, r;

	assert_non_null(ci);
	do {
		ci->n = 0;
		do {
			assert_int_equal(store_begin(fx->s), 0);
			n = store_msg_lease(fx->s, mb, NOW, batch, cap_ids_cb,
					    ci);
			if (n < 0 && (n != -ENOBUFS || ci->n == 0))
				fail_msg("lease at full: %d %s", n,
					 store_errmsg(fx->s));
			assert_int_equal(store_commit(fx->s, false), 0);
		} while (n > 0 && taken + ci->n + batch <= max);
		taken += ci->n;
		for (size_t i = 0; i < ci->n; i += batch) {
			assert_int_equal(store_begin(fx->s), 0);
			for (size_t k = i; k < i + batch && k < ci->n; k++) {
				r = store_msg_delete(fx->s, mb, ci->id[k]);
				if (r < 0)
					fail_msg("ack at full: %d %s", r,
						 store_errmsg(fx->s));
			}
			assert_int_equal(store_commit(fx->s, true), 0);
		}
	} while (n == -ENOBUFS && taken + batch <= max);
	free(ci);
}

/*
 * Fill, drain some, round after round. Drains may grow the file into the
 * reserve; SQLite raises the add limit (max_page_count) to the file's
 * size, so if adds were bounded by that alone they would take the pages
 * the drain freed, and the reserve would shrink each round until a full
 * store could no longer be leased. The room adds leave must not shrink.
 */
static void
test_store_cap_reserve_holds(void **state)
{
	Fx *fx = *state;
	const int64_t cap_pages = 128, reserve = 8; /* 1/16 */
	StoreMailbox *mb;
	int64_t room, min_room = INT64_MAX;
	uint32_t seed = 1;
	size_t n, most = 0;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "full");
	assert_int_equal(store_set_max_bytes(fx->s, cap_pages * PAGE), 0);
	for (int round = 0; round < 20; round++) {
		n = cap_fill_mixed(fx, mb, &seed);
		room = cap_headroom(fx, cap_pages);
		if (room < reserve)
			fail_msg("round %d: %lld pages of room after a fill, "
				 "the reserve is %lld",
				 round, (long long)room, (long long)reserve);
		min_room = room < min_room ? room : min_room;
		most = n > most ? n : most;
		/* Room made by acks is found again. */
		if (round > 0 && n == 0)
			fail_msg("round %d: nothing fits after acks", round);
		assert_true(raw_pages(fx) <= cap_pages);
		check_counters(fx, mb);
		/* Every other round drains all of it, else a part, in
		 * batches of various sizes. */
		cap_lease_ack(fx, mb,
			      round % 2 ? CAP_MAX_MSGS : mb->n_ready / 3,
			      (size_t)1 + (size_t)round * 7 % 40);
	}
	print_message("reserve %lld pages; after every fill at least %lld "
		      "free; at most %zu posts a fill\n",
		      (long long)reserve, (long long)min_room, most);
	/* And the last fill can still be consumed to the end. */
	cap_lease_ack(fx, mb, CAP_MAX_MSGS, 1000);
	assert_int_equal(mb->n_ready + mb->n_leased, 0);
}

/* Fill mb with one-byte messages, 256 a transaction, until the cap
 * refuses one; returns how many are stored. */
static size_t
cap_fill_small(Fx *fx, StoreMailbox *mb)
{
	int r = 0;

	while (r == 0) {
		assert_int_equal(store_begin(fx->s), 0);
		for (int i = 0; i < 256 && r == 0; i++) {
			StoreMsg m = {.time_ns = NOW, .data = "s", .len = 1};

			r = store_msg_insert(fx->s, mb, &m);
		}
		if (r < 0)
			assert_int_equal(store_rollback(fx->s), 0);
		else
			assert_int_equal(store_commit(fx->s, false), 0);
	}
	assert_int_equal(r, -ENOSPC);
	return mb->n_ready;
}

/* The ids a lease took, appended to a ring the test acks from. */
typedef struct HeldIds {
	uint64_t *id;
	size_t head, tail, cap;
} HeldIds;

static int
held_cb(void *ctx, const StoreMsg *m)
{
	HeldIds *h = ctx;

	assert_true(h->tail < h->cap);
	h->id[h->tail++] = m->id;
	return 0;
}

/*
 * A lease is a row of its own (schema version 4): leases take room. A
 * store filled to its cap with small messages, consumers holding as many
 * leases as they can get and acking 64 at a time, as the broker batches
 * them (acks and leases in one transaction): every transaction commits,
 * a lease that finds no room says so without writing, and the store
 * drains to the end.
 */
static void
test_store_cap_leases_drain(void **state)
{
	Fx *fx = *state;
	const size_t window = 20000; /* more than the cap leaves room for */
	StoreMailbox *mb;
	HeldIds h = {0};
	size_t posted = 0, acked = 0, refused = 0, limited = 0;
	int rounds = 0, r;
	bool ack_now = false;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "small");
	assert_int_equal(store_set_max_bytes(fx->s, 512u * 1024), 0);
	cap_fill_small(fx, mb);
	posted = mb->n_ready;
	assert_true(posted > 5000);
	h.cap = posted + 1;
	h.id = calloc(h.cap, sizeof(*h.id));
	assert_non_null(h.id);

	while (acked < posted) {
		size_t held, want;

		if (++rounds > 2000)
			fail_msg("%zu of %zu acked after 2000 rounds", acked,
				 posted);
		assert_int_equal(store_begin(fx->s), 0);
		/* The consumers take all they can get before they ack. */
		for (int i = 0; ack_now && i < 64 && h.head < h.tail;
		     i++, acked++)
			assert_int_equal(
				store_msg_ack(fx->s, mb, h.id[h.head++], 1), 0);
		held = h.tail - h.head;
		want = held < window ? window - held : 0;
		if (want > 512)
			want = 512;
		r = store_msg_lease(fx->s, mb, NOW, want, held_cb, &h);
		ack_now = r < 0 || (size_t)r < want;
		if (r == -ENOBUFS) {
			refused++;
			assert_non_null(strstr(store_errmsg(fx->s), "full"));
		} else {
			assert_true(r >= 0);
			if ((size_t)r < want && mb->n_ready > 0) {
				assert_true(store_lease_clipped(fx->s));
				limited++;
			}
		}
		assert_int_equal(store_commit(fx->s, true), 0);
	}
	print_message("%zu posted, drained in %d rounds; the room for leases "
		      "cut %zu of them short, refused %zu\n",
		      posted, rounds, limited, refused);
	/* The room, not the messages, bounded the leases. */
	assert_true(limited + refused > 0);
	assert_int_equal(mb->n_ready + mb->n_leased, 0);
	check_counters(fx, mb);
	free(h.id);
}

/* In one transaction, ack the first 64 messages held and give all the
 * others back with a delay, as consumers may at any time: it commits. */
static void
give_back_held(Fx *fx, StoreMailbox *mb, const HeldIds *h)
{
	int r;

	assert_int_equal(store_begin(fx->s), 0);
	for (size_t i = 0; i < h->tail; i++) {
		r = i < 64 ? store_msg_ack(fx->s, mb, h->id[i], 1)
			   : store_msg_release(fx->s, mb, h->id[i],
					       NOW + 1000 + (int64_t)i);
		if (r < 0)
			fail_msg("message %zu of %zu held: %s", i, h->tail,
				 store_errmsg(fx->s));
	}
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(mb->n_leased, 0);
	check_counters(fx, mb);
}

/*
 * Posts of one transaction under a cap: after the first, each is
 * admitted on the room counted down from the last measure (at most its
 * need a post), but only a fresh measure refuses one. So every post is
 * admitted or refused exactly as a measure just before it says, the
 * releases' share of the leases held deducted.
 */
static void
test_store_cap_adds_in_one_txn(void **state)
{
	Fx *fx = *state;
	const int64_t cap_pages = 512, reserve = cap_pages / 16;
	/* A 1 KiB post's need (cap_add_room): its bytes and a row's, in
	 * pages, and 4 pages of splits. */
	const int64_t need = 1 + 4;
	/* Leases held, and what their releases may need: 96 bytes each
	 * (STORE_CAP_RELEASE_BYTES), in pages. */
	const int64_t held = 2000;
	const int64_t release =
		(held * 96 + STORE_PAGE_SIZE - 1) / STORE_PAGE_SIZE;
	char data[1024] = {0};
	StoreMailbox *mb;
	sqlite3 *db;
	int n = 0, r = 0;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "one");
	assert_int_equal(store_begin(fx->s), 0);
	for (int64_t i = 0; i < held; i++) {
		StoreMsg m = {.time_ns = NOW, .data = "s", .len = 1};

		assert_int_equal(store_msg_insert(fx->s, mb, &m), 0);
	}
	assert_int_equal(
		store_msg_lease(fx->s, mb, NOW, (size_t)held, NULL, NULL),
		held);
	assert_int_equal(store_commit(fx->s, true), 0);
	/* Nothing freed yet: the room is the cap less the pages used. */
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "PRAGMA freelist_count"), 0);
	sqlite3_close(db);
	assert_int_equal(store_set_max_bytes(fx->s, (uint64_t)cap_pages *
							    STORE_PAGE_SIZE),
			 0);
	assert_int_equal(store_begin(fx->s), 0);
	while (r == 0 && n < 10000) {
		StoreMsg m = {
			.time_ns = NOW, .data = data, .len = sizeof(data)};
		uint64_t bytes = 0;
		int64_t room;

		assert_int_equal(store_image_bytes(fx->s, &bytes), 0);
		room = cap_pages - (int64_t)(bytes / STORE_PAGE_SIZE) - release;
		r = store_msg_insert(fx->s, mb, &m);
		if (r != 0 && r != -ENOSPC)
			fail_msg("post %d: %d %s", n, r, store_errmsg(fx->s));
		if ((r == 0) != (room - need >= reserve))
			fail_msg("post %d %s with %lld pages of room, the "
				 "reserve %lld",
				 n, r == 0 ? "admitted" : "refused",
				 (long long)room, (long long)reserve);
		n += r == 0;
	}
	assert_int_equal(r, -ENOSPC);
	assert_int_equal(store_commit(fx->s, true), 0);
	print_message("%d posts of 1 KiB in one transaction, %lld leases "
		      "held: each admitted or refused as a measure before "
		      "it says\n",
		      n, (long long)held);
	assert_true(n > 1000);
	check_counters(fx, mb);
}

/*
 * A size cap counts the room the releases of every lease held need, on
 * each post and lease: the store keeps that count as leases come and go
 * (store_leases_held) instead of walking every mailbox, which made each
 * post under a cap cost a loop over all of them (doc/performance.md).
 * Every way a lease ends, and every rollback, must keep it exact.
 */
static void
test_store_leases_held(void **state)
{
	Fx *fx = *state;
	StoreMailbox *a, *b;
	Seen sn;
	uint64_t ids[4];

	fx_open(fx, STORE_SYNC_FULL);
	a = mk_mailbox(fx->s, "a");
	b = mk_mailbox(fx->s, "b");
	for (int i = 0; i < 6; i++) {
		post(fx->s, a, 0, "x");
		post(fx->s, b, 0, "y");
	}
	assert_int_equal(lease(fx->s, a, NOW, 4, &sn), 4);
	memcpy(ids, sn.id, sizeof(ids));
	assert_int_equal(lease(fx->s, b, NOW, 3, &sn), 3);
	assert_int_equal(store_leases_held(fx->s), 7);
	check_counters(fx, a);

	/* Leases and a deletion rolled back count as before, b's lease
	 * taken before its deletion too. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_lease(fx->s, a, NOW, 2, NULL, NULL), 2);
	assert_int_equal(store_msg_ack(fx->s, a, ids[0], 1), 0);
	assert_int_equal(store_msg_lease(fx->s, b, NOW, 1, NULL, NULL), 1);
	assert_int_equal(store_mailbox_delete(fx->s, b), 0);
	/* a's 4, 2 more, 1 acked; b's 4 went with b. */
	assert_int_equal(store_leases_held(fx->s), 4 + 2 - 1);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_int_equal(store_leases_held(fx->s), 7);
	check_counters(fx, a);
	check_counters(fx, b);

	/* An ack, a release, a release to the dead list, a delete, a kill. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_ack(fx->s, a, ids[0], 1), 0);
	assert_int_equal(store_msg_release(fx->s, a, ids[1], 0), 0);
	assert_int_equal(store_msg_delete(fx->s, a, ids[2]), 0);
	assert_int_equal(store_msg_kill(fx->s, a, ids[3], "rejected"), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_leases_held(fx->s), 3);
	check_counters(fx, a);
	a->max_deliveries = 1;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_update(fx->s, a), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(lease(fx->s, a, NOW, 1, &sn), 1);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_release(fx->s, a, sn.id[0], 0), 1);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_leases_held(fx->s), 3);
	check_counters(fx, a);

	/* A mailbox deleted with its leases takes them along. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_delete(fx->s, b), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_leases_held(fx->s), 0);
	check_counters(fx, a);

	/* A restart voids every lease. (The load and recovery paths that
	 * count leases of state-1 rows, written before schema version 4,
	 * are covered by test_store_migrate_from_v1.) */
	assert_int_equal(lease(fx->s, a, NOW, 2, &sn), 2);
	assert_int_equal(store_leases_held(fx->s), 2);
	fx_reopen(fx);
	a = store_mailbox_get(fx->s, "a");
	assert_non_null(a);
	assert_int_equal(store_leases_held(fx->s), 0);
	check_counters(fx, a);
	/* (Those two were delivered max_deliveries times: dead now.) */
	for (int i = 0; i < 3; i++)
		post(fx->s, a, 0, "z");
	assert_int_equal(lease(fx->s, a, NOW, 5, &sn), 3);
	assert_int_equal(store_leases_held(fx->s), 3);
	check_counters(fx, a);
}

/*
 * Leases taken until the cap has no room for more leave enough for what
 * their holders may do next: one transaction acking some and giving all
 * the others back with a delay (a row and its index entry grow, and each
 * enters message_delayed) commits.
 */
static void
test_store_cap_leases_leave_room_for_releases(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	HeldIds h = {0};
	int r;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "nacks");
	assert_int_equal(store_set_max_bytes(fx->s, 512u * 1024), 0);
	cap_fill_small(fx, mb);
	h.cap = mb->n_ready + 1;
	h.id = calloc(h.cap, sizeof(*h.id));
	assert_non_null(h.id);
	do {
		assert_int_equal(store_begin(fx->s), 0);
		r = store_msg_lease(fx->s, mb, NOW, 512, held_cb, &h);
		assert_int_equal(store_commit(fx->s, false), 0);
	} while (r > 0 && mb->n_ready > 0);
	assert_int_equal(r, -ENOBUFS); /* the room, not the messages, ran out */
	assert_true(h.tail > 64);

	give_back_held(fx, mb, &h);
	print_message("%zu leases held at the cap, all given back at once\n",
		      h.tail);
	free(h.id);
}

/* Leases taken first, posts up to the cap after them: the posts leave
 * what the releases of those leases may need. */
static void
test_store_cap_posts_leave_room_for_releases(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	HeldIds h = {0};
	int r;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "late");
	assert_int_equal(store_set_max_bytes(fx->s, 1024u * 1024), 0);
	assert_int_equal(store_begin(fx->s), 0);
	for (int i = 0; i < 8000; i++) {
		StoreMsg m = {.time_ns = NOW, .data = "s", .len = 1};

		assert_int_equal(store_msg_insert(fx->s, mb, &m), 0);
	}
	assert_int_equal(store_commit(fx->s, false), 0);
	h.cap = 8001;
	h.id = calloc(h.cap, sizeof(*h.id));
	assert_non_null(h.id);
	do {
		assert_int_equal(store_begin(fx->s), 0);
		r = store_msg_lease(fx->s, mb, NOW, 512, held_cb, &h);
		assert_int_equal(store_commit(fx->s, false), 0);
	} while (r > 0 && !store_lease_clipped(fx->s));
	cap_fill_small(fx, mb);
	print_message("%zu leases taken, then posts up to the cap\n", h.tail);

	give_back_held(fx, mb, &h);
	free(h.id);
}

/* One binding, for store_binding_foreach. */
static int
cap_binding_cb(void *ctx, StoreMailbox *mb, const char *pattern)
{
	int *n = ctx;

	(void)mb;
	assert_string_equal(pattern, "full.*");
	(*n)++;
	return 0;
}

/*
 * A transaction that changed mailboxes, settings, bindings and messages
 * before the cap refused a write: after the rollback, memory equals the
 * database, which equals what was committed before.
 */
static void
test_store_cap_rollback_memory(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb, *extra = NULL, tmpl = {0};
	CapLog *lg = calloc(1, sizeof(*lg));
	StoreMsg m = {0};
	char *big = calloc(1, 64 * 1024);
	sqlite3 *db;
	uint64_t lease_ms;
	int n = 0, r;

	assert_non_null(lg);
	assert_non_null(big);
	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "full");
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_binding_add(fx->s, mb, "full.*"), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_set_max_bytes(fx->s, CAP_BYTES), 0);
	cap_fill(fx, mb, lg);
	lease_ms = mb->lease_ms;

	assert_int_equal(store_begin(fx->s), 0);
	snprintf(tmpl.name, sizeof(tmpl.name), "extra");
	tmpl.lease_ms = 1000;
	tmpl.mode = 0600;
	r = store_mailbox_create(fx->s, &tmpl, &extra);
	if (r == 0) {
		assert_int_equal(store_binding_add(fx->s, extra, "x.*"), 0);
		assert_int_equal(store_binding_add(fx->s, mb, "more.*"), 0);
		mb->lease_ms = 12345;
		assert_int_equal(store_mailbox_update(fx->s, mb), 0);
		assert_int_equal(store_msg_delete(fx->s, mb, lg->id[0]), 0);
		assert_int_equal(mb->n_ready, lg->n - 1);
		m.data = big;
		m.len = 64 * 1024;
		r = store_msg_insert(fx->s, mb, &m);
	}
	assert_int_equal(r, -ENOSPC);
	/* Whether SQLite ended the transaction or only the statement, the
	 * caller rolls back; memory comes back with the database. */
	assert_int_equal(store_rollback(fx->s), 0);
	assert_false(store_in_txn(fx->s));
	assert_null(store_mailbox_get(fx->s, "extra"));
	assert_int_equal(store_mailbox_count(fx->s), 1);
	assert_int_equal(mb->lease_ms, lease_ms);
	assert_int_equal(store_binding_count(fx->s, mb), 1);
	assert_int_equal(store_binding_foreach(fx->s, cap_binding_cb, &n), 0);
	assert_int_equal(n, 1);
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM mailbox"), 1);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM binding"), 1);
	assert_int_equal(raw_int(db, "SELECT lease_ms FROM mailbox"),
			 (int64_t)lease_ms);
	sqlite3_close(db);
	cap_check_all(fx, mb, lg);

	/* The store goes on: acks make room, and a post fits. A post needs
	 * room for its row and the page splits on its way (4 pages); 40
	 * messages of CAP_MSG bytes free more than 5 pages. */
	cap_delete(fx, mb, lg, 0, 40);
	assert_int_equal(cap_post(fx, mb, lg), 0);
	cap_check_all(fx, mb, lg);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "full");
	assert_int_equal(store_binding_count(fx->s, mb), 1);
	cap_check_all(fx, mb, lg);
	free(big);
	free(lg);
}

/* ------------------------------------------------------------------ */
/* Dead list, expiry, max_deliveries */

/* Insert into the open transaction with everything settable. */
static uint64_t
put_ex(Store *s, StoreMailbox *mb, int64_t time_ns, int64_t ready_ns,
       int64_t expires_ns, const char *dedup, const char *text)
{
	StoreMsg m = {0};

	m.time_ns = time_ns;
	m.ready_ns = ready_ns;
	m.expires_ns = expires_ns;
	m.dedup = dedup;
	m.data = text;
	m.len = strlen(text);
	assert_int_equal(store_msg_insert(s, mb, &m), 0);
	return m.id;
}

/* One message as a callback saw it, dead fields included. */
typedef struct DeadSeen {
	size_t n;
	uint64_t id[200];
	int64_t mailbox_id[200], expires_ns[200], ready_ns[200];
	uint32_t state[200], deliveries[200];
	char reason[200][24];
	int stop_after; /* > 0: return 7 on that call */
} DeadSeen;

static int
dead_cb(void *ctx, const StoreMsg *m)
{
	DeadSeen *d = ctx;

	if (d->n < 200) {
		d->id[d->n] = m->id;
		d->mailbox_id[d->n] = m->mailbox_id;
		d->expires_ns[d->n] = m->expires_ns;
		d->ready_ns[d->n] = m->ready_ns;
		d->state[d->n] = m->state;
		d->deliveries[d->n] = m->deliveries;
		snprintf(d->reason[d->n], sizeof(d->reason[0]), "%s",
			 m->dead_reason ? m->dead_reason : "(null)");
	}
	d->n++;
	if (d->stop_after > 0 && (int)d->n == d->stop_after)
		return 7;
	return 0;
}

/* Read message id of mb into d (reset first). */
static void
get_one(Store *s, StoreMailbox *mb, uint64_t id, DeadSeen *d)
{
	memset(d, 0, sizeof(*d));
	assert_int_equal(store_msg_get(s, mb, id, dead_cb, d), 0);
	assert_int_equal(d->n, 1);
}

static void
test_store_kill_kick(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb, *other;
	uint64_t a, b, c, d, o;
	DeadSeen ds;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "dl");
	other = mk_mailbox(fx->s, "other");
	a = post(fx->s, mb, 0, "aa");
	b = post(fx->s, mb, 0, "bbb");
	c = post(fx->s, mb, 0, "c");
	assert_int_equal(store_begin(fx->s), 0);
	d = put_ex(fx->s, mb, NOW, 0, NOW + 5, NULL, "dddd");
	o = put(fx->s, other, 0, 0, "o");
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(lease(fx->s, mb, NOW, 1, &sn), 1);
	assert_int_equal(sn.id[0], a);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_kill(fx->s, other, o, "rejected"), 0);
	assert_int_equal(store_commit(fx->s, true), 0);

	/* A rolled-back kill changes nothing. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_kill(fx->s, mb, b, "rejected"), 0);
	assert_int_equal(mb->n_dead, 1);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_int_equal(mb->n_dead, 0);
	assert_int_equal(mb->n_ready, 3);
	check_counters(fx, mb);

	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_kill(fx->s, mb, a, "rejected"), 0); /* L */
	assert_int_equal(store_msg_kill(fx->s, mb, b, "expired"), 0);  /* R */
	assert_int_equal(store_msg_kill(fx->s, mb, d, "expired"), 0);
	assert_int_equal(store_msg_kill(fx->s, mb, a, "rejected"), -ENOENT);
	assert_int_equal(store_msg_kill(fx->s, mb, 999999, "rejected"),
			 -ENOENT);
	assert_int_equal(store_msg_kill(fx->s, mb, o, "rejected"), -ENOENT);
	assert_int_equal(store_msg_kill(fx->s, mb, c, NULL), -EINVAL);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(mb->n_ready, 1);
	assert_int_equal(mb->n_leased, 0);
	assert_int_equal(mb->n_dead, 3);
	assert_int_equal(mb->bytes, 10);
	check_counters(fx, mb);

	memset(&ds, 0, sizeof(ds));
	assert_int_equal(store_msg_peek(fx->s, mb, 0, 10, true, dead_cb, &ds),
			 3);
	assert_int_equal(ds.id[0], a);
	assert_string_equal(ds.reason[0], "rejected");
	assert_int_equal(ds.deliveries[0], 1); /* kept while dead */
	assert_int_equal(ds.id[1], b);
	assert_string_equal(ds.reason[1], "expired");
	assert_int_equal(ds.id[2], d);

	/* Kick one: the lowest id, fresh. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_kick(fx->s, mb, 1), 1);
	assert_int_equal(store_commit(fx->s, true), 0);
	get_one(fx->s, mb, a, &ds);
	assert_int_equal(ds.state[0], STORE_READY);
	assert_int_equal(ds.deliveries[0], 0);
	assert_string_equal(ds.reason[0], "(null)");
	assert_int_equal(ds.ready_ns[0], 0);
	assert_int_equal(mb->n_dead, 2);
	assert_int_equal(mb->n_ready, 2);
	check_counters(fx, mb);

	/* Kick all; a rolled-back kick first. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_kick(fx->s, mb, 0), 2);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_int_equal(mb->n_dead, 2);
	check_counters(fx, mb);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_kick(fx->s, mb, 0), 2);
	assert_int_equal(store_msg_kick(fx->s, mb, 0), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(mb->n_dead, 0);
	assert_int_equal(mb->n_ready, 4);
	check_counters(fx, mb);
	/* The expired one lost its ttl: it can be taken again. */
	get_one(fx->s, mb, d, &ds);
	assert_int_equal(ds.expires_ns[0], 0);
	/* The other mailbox's dead message stayed. */
	assert_int_equal(other->n_dead, 1);
	check_counters(fx, other);

	/* Back in their places in line, each delivered once again. */
	assert_int_equal(lease(fx->s, mb, NOW + 100, 10, &sn), 4);
	assert_int_equal(sn.id[0], a);
	assert_int_equal(sn.id[1], b);
	assert_int_equal(sn.id[2], c);
	assert_int_equal(sn.id[3], d);
	for (int i = 0; i < 4; i++)
		assert_int_equal(sn.deliveries[i], 1);

	/* And it all survives a reopen. */
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "dl");
	assert_int_equal(mb->n_ready, 4);
	assert_int_equal(mb->n_dead, 0);
	other = store_mailbox_get(fx->s, "other");
	assert_int_equal(other->n_dead, 1);
}

static void
test_store_purge(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb, *other;
	uint64_t l, dd;
	DeadSeen ds;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "pg");
	other = mk_mailbox(fx->s, "other");
	l = post(fx->s, mb, 0, "333");
	assert_int_equal(lease(fx->s, mb, NOW, 1, &sn), 1);
	assert_int_equal(store_begin(fx->s), 0);
	put(fx->s, mb, 0, 0, "1");
	put(fx->s, mb, 0, NOW + 1000, "22"); /* delayed */
	dd = put(fx->s, mb, 0, 0, "4444");
	put(fx->s, other, 0, 0, "xyz");
	assert_int_equal(store_msg_kill(fx->s, mb, dd, "rejected"), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(mb->bytes, 10);

	/* Rolled back: nothing changes. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_purge(fx->s, mb, false), 2);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_int_equal(mb->n_ready, 2);
	assert_int_equal(mb->bytes, 10);
	check_counters(fx, mb);

	/* READY ones, delayed included; never the leased one. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_purge(fx->s, mb, false), 2);
	assert_int_equal(store_msg_purge(fx->s, mb, false), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(mb->n_ready, 0);
	assert_int_equal(mb->n_leased, 1);
	assert_int_equal(mb->n_dead, 1);
	assert_int_equal(mb->bytes, 7);
	check_counters(fx, mb);
	get_one(fx->s, mb, l, &ds);
	assert_int_equal(ds.state[0], STORE_LEASED);

	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_purge(fx->s, mb, true), 1);
	assert_int_equal(store_msg_purge(fx->s, mb, true), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(mb->n_dead, 0);
	assert_int_equal(mb->n_leased, 1);
	assert_int_equal(mb->bytes, 3);
	check_counters(fx, mb);
	/* The other mailbox is untouched. */
	assert_int_equal(other->n_ready, 1);
	check_counters(fx, other);
}

static void
test_store_expire(void **state)
{
	Fx *fx = *state;
	StoreMailbox *m1, *m2, *m3;
	uint64_t x, e1, n, e2, f, g;
	int64_t next = -1;
	DeadSeen ds;
	Seen sn;

	fx_open(fx, STORE_SYNC_FULL);
	m1 = mk_mailbox(fx->s, "m1");
	m2 = mk_mailbox(fx->s, "m2");
	m3 = mk_mailbox(fx->s, "m3");
	assert_int_equal(store_next_expiry(fx->s, &next), 0);
	assert_int_equal(next, 0);
	assert_int_equal(store_begin(fx->s), 0);
	x = put_ex(fx->s, m1, NOW, 0, NOW + 50, NULL, "x");
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(lease(fx->s, m1, NOW, 1, &sn), 1);
	assert_int_equal(sn.id[0], x);
	assert_int_equal(store_begin(fx->s), 0);
	e1 = put_ex(fx->s, m1, NOW, 0, NOW + 100, NULL, "e1");
	n = put_ex(fx->s, m1, NOW, 0, 0, NULL, "n");
	e2 = put_ex(fx->s, m1, NOW, 0, NOW + 200, NULL, "e2");
	f = put_ex(fx->s, m2, NOW, 0, NOW + 150, NULL, "f");
	g = put_ex(fx->s, m2, NOW, NOW + 1000, NOW + 120, NULL, "g");
	assert_int_equal(store_commit(fx->s, true), 0);

	/* Leased messages do not count: x is held. */
	assert_int_equal(store_next_expiry(fx->s, &next), 0);
	assert_int_equal(next, NOW + 100);

	/* The lease skips the expired one, even before expiry runs. */
	memset(&sn, 0, sizeof(sn));
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(
		store_msg_lease(fx->s, m1, NOW + 150, 10, seen_cb, &sn), 2);
	assert_int_equal(sn.id[0], n);
	assert_int_equal(sn.id[1], e2);
	assert_int_equal(store_rollback(fx->s), 0);
	/* Expiring at exactly now counts as expired. */
	assert_int_equal(lease(fx->s, m2, NOW + 150, 10, &sn), 0);

	/* A rolled-back run changes nothing. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_expire(fx->s, NOW + 150, NULL, NULL), 3);
	assert_int_equal(store_rollback(fx->s), 0);
	assert_int_equal(m2->n_ready, 2);
	assert_int_equal(m2->n_dead, 0);
	check_counters(fx, m2);

	memset(&ds, 0, sizeof(ds));
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_expire(fx->s, NOW + 150, dead_cb, &ds), 3);
	assert_int_equal(store_expire(fx->s, NOW + 150, dead_cb, &ds), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(ds.n, 3);
	assert_int_equal(ds.id[0], e1);
	assert_int_equal(ds.mailbox_id[0], m1->id);
	assert_int_equal(ds.expires_ns[0], NOW + 100);
	assert_int_equal(ds.id[1], g); /* delayed, still expires */
	assert_int_equal(ds.mailbox_id[1], m2->id);
	assert_int_equal(ds.id[2], f);
	assert_int_equal(ds.mailbox_id[2], m2->id);
	assert_int_equal(m1->n_ready, 2);
	assert_int_equal(m1->n_leased, 1);
	assert_int_equal(m1->n_dead, 1);
	assert_int_equal(m2->n_ready, 0);
	assert_int_equal(m2->n_dead, 2);
	check_counters(fx, m1);
	check_counters(fx, m2);
	get_one(fx->s, m1, e1, &ds);
	assert_int_equal(ds.state[0], STORE_DEAD);
	assert_string_equal(ds.reason[0], "expired");
	assert_int_equal(store_next_expiry(fx->s, &next), 0);
	assert_int_equal(next, NOW + 200);

	/* The leased one given back after its expiry: due at once. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_release(fx->s, m1, x, 0), 0);
	assert_int_equal(store_commit(fx->s, false), 0);
	assert_int_equal(store_next_expiry(fx->s, &next), 0);
	assert_int_equal(next, NOW + 50);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_expire(fx->s, NOW + 150, NULL, NULL), 1);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(m1->n_dead, 2);
	check_counters(fx, m1);

	/* More than one batch, and fn stopping the run. */
	assert_int_equal(store_begin(fx->s), 0);
	for (int i = 0; i < 150; i++)
		put_ex(fx->s, m3, NOW, 0, NOW + 300 + i, NULL, "b");
	assert_int_equal(store_commit(fx->s, true), 0);
	memset(&ds, 0, sizeof(ds));
	ds.stop_after = 2;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_expire(fx->s, NOW + 1000, dead_cb, &ds), 7);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(ds.n, 2);
	assert_int_equal(ds.id[0], e2); /* earliest expiry first */
	assert_int_equal(m3->n_dead, 1);
	memset(&ds, 0, sizeof(ds));
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_expire(fx->s, NOW + 1000, dead_cb, &ds), 149);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(ds.n, 149);
	assert_int_equal(m3->n_ready, 0);
	assert_int_equal(m3->n_dead, 150);
	check_counters(fx, m1);
	check_counters(fx, m3);
	assert_int_equal(store_next_expiry(fx->s, &next), 0);
	assert_int_equal(next, 0);

	/* One index lookup, not a scan. */
	{
		sqlite3 *db = raw_open(fx);
		sqlite3_stmt *st = NULL;
		bool uses = false;

		assert_int_equal(
			sqlite3_prepare_v2(
				db,
				"EXPLAIN QUERY PLAN SELECT expires_ns"
				" FROM message WHERE state = 0 AND"
				" expires_ns > 0 ORDER BY expires_ns LIMIT 1",
				-1, &st, NULL),
			SQLITE_OK);
		while (sqlite3_step(st) == SQLITE_ROW)
			if (strstr((const char *)sqlite3_column_text(st, 3),
				   "message_expiry"))
				uses = true;
		sqlite3_finalize(st);
		sqlite3_close(db);
		assert_true(uses);
	}
}

/* A new store with mailboxes "md" (max_deliveries 2) and "unlimited". */
static void
open_max_deliveries(Fx *fx, StoreMailbox **md, StoreMailbox **unlimited)
{
	fx_open(fx, STORE_SYNC_FULL);
	*md = mk_mailbox(fx->s, "md");
	*unlimited = mk_mailbox(fx->s, "unlimited");
	(*md)->max_deliveries = 2;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_update(fx->s, *md), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
}

/* A restart voids leases as give-backs: a message whose voided lease was
 * its max_deliveries-th delivery goes dead, as a release would send it
 * (SPEC 3.4), instead of being delivered again and again by restarts. */
static void
test_store_restart_max_deliveries(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb, *free_mb;
	uint64_t a, b, c;
	DeadSeen ds;
	Seen sn;

	open_max_deliveries(fx, &mb, &free_mb);
	a = post(fx->s, mb, 0, "a");
	c = post(fx->s, mb, 0, "c");
	b = post(fx->s, free_mb, 0, "b");

	/* Delivery 1 of a, then a crash: ready again, counted. */
	assert_int_equal(lease(fx->s, mb, NOW, 1, &sn), 1);
	assert_int_equal(sn.id[0], a);
	assert_int_equal(lease(fx->s, free_mb, NOW, 1, &sn), 1);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "md");
	free_mb = store_mailbox_get(fx->s, "unlimited");
	assert_int_equal(mb->n_ready, 2);
	assert_int_equal(mb->n_dead, 0);
	check_counters(fx, mb);

	/* Delivery 2 of a (its last) and 1 of c, then a crash: a dead. */
	assert_int_equal(lease(fx->s, mb, NOW, 2, &sn), 2);
	assert_int_equal(sn.id[0], a);
	assert_int_equal(sn.deliveries[0], 2);
	assert_int_equal(lease(fx->s, free_mb, NOW, 1, &sn), 1);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "md");
	free_mb = store_mailbox_get(fx->s, "unlimited");
	assert_int_equal(mb->n_ready, 1);
	assert_int_equal(mb->n_leased, 0);
	assert_int_equal(mb->n_dead, 1);
	check_counters(fx, mb);
	get_one(fx->s, mb, a, &ds);
	assert_int_equal(ds.state[0], STORE_DEAD);
	assert_string_equal(ds.reason[0], "max-deliveries");
	assert_int_equal(ds.deliveries[0], 2);
	assert_int_equal(lease(fx->s, mb, NOW, 10, &sn), 1);
	assert_int_equal(sn.id[0], c);
	assert_int_equal(sn.deliveries[0], 2);

	/* max_deliveries 0: restarts count, never kill. */
	assert_int_equal(free_mb->n_ready, 1);
	assert_int_equal(free_mb->n_dead, 0);
	check_counters(fx, free_mb);
	assert_int_equal(lease(fx->s, free_mb, NOW, 1, &sn), 1);
	assert_int_equal(sn.id[0], b);
	assert_int_equal(sn.deliveries[0], 3);
}

static void
test_store_release_max_deliveries(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb, *free_mb;
	uint64_t a, b;
	DeadSeen ds;
	Seen sn;

	open_max_deliveries(fx, &mb, &free_mb);
	a = post(fx->s, mb, 0, "a");

	assert_int_equal(lease(fx->s, mb, NOW, 1, &sn), 1);
	assert_int_equal(sn.deliveries[0], 1);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_release(fx->s, mb, a, 0), 0);
	assert_int_equal(store_commit(fx->s, false), 0);
	assert_int_equal(lease(fx->s, mb, NOW, 1, &sn), 1);
	assert_int_equal(sn.deliveries[0], 2);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_release(fx->s, mb, a, 0), 1);
	assert_int_equal(store_msg_release(fx->s, mb, a, 0), -ENOENT);
	assert_int_equal(store_msg_release(fx->s, mb, 999999, 0), -ENOENT);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(mb->n_leased, 0);
	assert_int_equal(mb->n_ready, 0);
	assert_int_equal(mb->n_dead, 1);
	check_counters(fx, mb);
	get_one(fx->s, mb, a, &ds);
	assert_int_equal(ds.state[0], STORE_DEAD);
	assert_string_equal(ds.reason[0], "max-deliveries");
	assert_int_equal(ds.deliveries[0], 2);

	/* A kicked message starts counting again. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_kick(fx->s, mb, 0), 1);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(lease(fx->s, mb, NOW, 1, &sn), 1);
	assert_int_equal(sn.deliveries[0], 1);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_release(fx->s, mb, a, 0), 0);
	assert_int_equal(store_commit(fx->s, false), 0);
	check_counters(fx, mb);

	/* max_deliveries 0: given back forever. */
	b = post(fx->s, free_mb, 0, "b");
	for (int i = 0; i < 5; i++) {
		assert_int_equal(lease(fx->s, free_mb, NOW, 1, &sn), 1);
		assert_int_equal(store_begin(fx->s), 0);
		assert_int_equal(store_msg_release(fx->s, free_mb, b, 0), 0);
		assert_int_equal(store_commit(fx->s, false), 0);
	}
	assert_int_equal(free_mb->n_ready, 1);
	check_counters(fx, free_mb);
}

/* ------------------------------------------------------------------ */
/* Dedup keys */

static void
test_store_dedup(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb, *other;
	uint64_t id = 0, a, b, k4;
	int64_t mb_id;
	sqlite3 *db;
	char sql[128];

	fx_open(fx, STORE_SYNC_FULL);
	mb = mk_mailbox(fx->s, "dd");
	other = mk_mailbox(fx->s, "other");
	assert_int_equal(store_dedup_find(fx->s, mb, "k1", 0, &id), -ENOENT);
	assert_int_equal(store_begin(fx->s), 0);
	a = put_ex(fx->s, mb, NOW, 0, 0, "k1", "a");
	/* The open transaction sees its own keys. */
	assert_int_equal(store_dedup_find(fx->s, mb, "k1", NOW, &id), 0);
	assert_int_equal(id, a);
	assert_int_equal(store_commit(fx->s, true), 0);

	id = 0;
	assert_int_equal(store_dedup_find(fx->s, mb, "k1", NOW - 1, &id), 0);
	assert_int_equal(id, a);
	/* Not before since_ns; per mailbox; per key. */
	assert_int_equal(store_dedup_find(fx->s, mb, "k1", NOW + 1, &id),
			 -ENOENT);
	assert_int_equal(store_dedup_find(fx->s, other, "k1", 0, &id), -ENOENT);
	assert_int_equal(store_dedup_find(fx->s, mb, "k2", 0, &id), -ENOENT);
	assert_int_equal(store_dedup_find(fx->s, mb, NULL, 0, &id), -EINVAL);

	/* A rolled-back insert leaves no key. */
	assert_int_equal(store_begin(fx->s), 0);
	put_ex(fx->s, mb, NOW, 0, 0, "k3", "gone");
	assert_int_equal(store_rollback(fx->s), 0);
	assert_int_equal(store_dedup_find(fx->s, mb, "k3", 0, &id), -ENOENT);

	/* The key outlives its message (acked), and a restart. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_delete(fx->s, mb, a), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	id = 0;
	assert_int_equal(store_dedup_find(fx->s, mb, "k1", NOW, &id), 0);
	assert_int_equal(id, a);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "dd");
	other = store_mailbox_get(fx->s, "other");
	id = 0;
	assert_int_equal(store_dedup_find(fx->s, mb, "k1", NOW, &id), 0);
	assert_int_equal(id, a);

	/* Posted again after the window: the new post replaces the key. */
	assert_int_equal(store_begin(fx->s), 0);
	b = put_ex(fx->s, mb, NOW + 10, 0, 0, "k1", "b");
	k4 = put_ex(fx->s, mb, NOW, 0, 0, "k4", "c");
	put_ex(fx->s, other, NOW, 0, 0, "k1", "o");
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_dedup_find(fx->s, mb, "k1", NOW + 5, &id), 0);
	assert_int_equal(id, b);
	assert_int_equal(store_dedup_find(fx->s, mb, "k4", 0, &id), 0);
	assert_int_equal(id, k4);

	/* Prune forgets keys recorded before the cut. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_dedup_prune(fx->s, NOW + 5), 2); /* k4, o */
	assert_int_equal(store_dedup_prune(fx->s, NOW + 5), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_dedup_find(fx->s, mb, "k4", 0, &id), -ENOENT);
	assert_int_equal(store_dedup_find(fx->s, other, "k1", 0, &id), -ENOENT);
	assert_int_equal(store_dedup_find(fx->s, mb, "k1", 0, &id), 0);
	assert_int_equal(id, b);
	/* The messages themselves stay. */
	assert_int_equal(mb->n_ready, 2);

	/* A deleted mailbox takes its keys along. */
	mb_id = mb->id;
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_delete(fx->s, mb), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	db = raw_open(fx);
	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM dedup WHERE mailbox_id = %lld",
		 (long long)mb_id);
	assert_int_equal(raw_int(db, sql), 0);
	sqlite3_close(db);
	mb = mk_mailbox(fx->s, "dd");
	assert_int_equal(store_dedup_find(fx->s, mb, "k1", 0, &id), -ENOENT);
}

/* ------------------------------------------------------------------ */
/* Bindings */

typedef struct BindSeen {
	size_t n;
	char what[16][64];
	int stop_after;		/* > 0: return 9 on that call */
	const char *remove_mb;	/* non-NULL: remove this binding when seen */
	const char *remove_pat; /* (inside the caller's transaction) */
	Store *s;
} BindSeen;

static int
bind_cb(void *ctx, StoreMailbox *mb, const char *pattern)
{
	BindSeen *b = ctx;

	if (b->n < 16)
		snprintf(b->what[b->n], sizeof(b->what[0]), "%.30s %.30s",
			 mb->name, pattern);
	b->n++;
	if (b->remove_mb && strcmp(mb->name, b->remove_mb) == 0 &&
	    strcmp(pattern, b->remove_pat) == 0)
		assert_int_equal(store_binding_remove(b->s, mb, pattern), 0);
	if (b->stop_after > 0 && (int)b->n == b->stop_after)
		return 9;
	return 0;
}

/* Walk the bindings; expect exactly the n strings "mailbox pattern". */
static void
check_bindings(Store *s, size_t n, ...)
{
	BindSeen b = {0};
	va_list ap;

	assert_int_equal(store_binding_foreach(s, bind_cb, &b), 0);
	assert_int_equal(b.n, n);
	va_start(ap, n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(b.what[i], va_arg(ap, const char *));
	va_end(ap);
}

static int64_t
raw_bindings(const Fx *fx)
{
	sqlite3 *db = raw_open(fx);
	int64_t n = raw_int(db, "SELECT count(*) FROM binding");

	sqlite3_close(db);
	return n;
}

static void
test_store_bindings(void **state)
{
	Fx *fx = *state;
	StoreMailbox *a, *b, *g = NULL, tmpl = {0};
	char long_pat[MBOX_TOPIC_MAX + 2];
	BindSeen bs;

	fx_open(fx, STORE_SYNC_FULL);
	b = mk_mailbox(fx->s, "beta");
	a = mk_mailbox(fx->s, "alpha");
	check_bindings(fx->s, 0);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_binding_add(fx->s, b, "x.>"), 0);
	assert_int_equal(store_binding_add(fx->s, a, "z.*"), 0);
	assert_int_equal(store_binding_add(fx->s, a, "a.b"), 0);
	assert_int_equal(store_binding_add(fx->s, a, "a.b"), -EEXIST);
	assert_int_equal(store_binding_add(fx->s, a, ""), -EINVAL);
	assert_int_equal(store_binding_add(fx->s, a, NULL), -EINVAL);
	memset(long_pat, 'p', sizeof(long_pat) - 1);
	long_pat[sizeof(long_pat) - 1] = '\0';
	assert_int_equal(store_binding_add(fx->s, a, long_pat), -EINVAL);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_binding_count(fx->s, a), 2);
	assert_int_equal(store_binding_count(fx->s, b), 1);
	check_bindings(fx->s, 3, "alpha a.b", "alpha z.*", "beta x.>");
	assert_int_equal(raw_bindings(fx), 3);

	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_binding_remove(fx->s, a, "nope"), -ENOENT);
	assert_int_equal(store_binding_remove(fx->s, b, "a.b"), -ENOENT);
	assert_int_equal(store_binding_remove(fx->s, a, "a.b"), 0);
	assert_int_equal(store_binding_remove(fx->s, a, "a.b"), -ENOENT);
	assert_int_equal(store_commit(fx->s, true), 0);
	assert_int_equal(store_binding_count(fx->s, a), 1);
	check_bindings(fx->s, 2, "alpha z.*", "beta x.>");

	/* They survive a reopen. */
	fx_reopen(fx);
	a = store_mailbox_get(fx->s, "alpha");
	b = store_mailbox_get(fx->s, "beta");
	assert_int_equal(store_binding_count(fx->s, a), 1);
	assert_int_equal(store_binding_count(fx->s, b), 1);
	check_bindings(fx->s, 2, "alpha z.*", "beta x.>");

	/* A rollback puts the memory copy back as the database has it. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_binding_add(fx->s, a, "new.one"), 0);
	assert_int_equal(store_binding_remove(fx->s, b, "x.>"), 0);
	assert_int_equal(store_binding_remove(fx->s, a, "z.*"), 0);
	assert_int_equal(store_binding_add(fx->s, a, "z.*"), 0);
	check_bindings(fx->s, 2, "alpha new.one", "alpha z.*");
	assert_int_equal(store_mailbox_delete(fx->s, a), 0);
	check_bindings(fx->s, 0);
	snprintf(tmpl.name, sizeof(tmpl.name), "gamma");
	tmpl.lease_ms = 1;
	assert_int_equal(store_mailbox_create(fx->s, &tmpl, &g), 0);
	assert_int_equal(store_binding_add(fx->s, g, "g.#"), 0);
	check_bindings(fx->s, 1, "gamma g.#");
	assert_int_equal(store_rollback(fx->s), 0);
	assert_ptr_equal(store_mailbox_get(fx->s, "alpha"), a);
	assert_null(store_mailbox_get(fx->s, "gamma"));
	assert_int_equal(store_binding_count(fx->s, a), 1);
	assert_int_equal(store_binding_count(fx->s, b), 1);
	check_bindings(fx->s, 2, "alpha z.*", "beta x.>");
	assert_int_equal(raw_bindings(fx), 2);

	/* fn stops the walk; fn changes the bindings under the walk. */
	memset(&bs, 0, sizeof(bs));
	bs.stop_after = 1;
	assert_int_equal(store_binding_foreach(fx->s, bind_cb, &bs), 9);
	assert_int_equal(bs.n, 1);
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_binding_add(fx->s, a, "a.a"), 0);
	assert_int_equal(store_binding_add(fx->s, a, "a.c"), 0);
	memset(&bs, 0, sizeof(bs));
	bs.s = fx->s;
	bs.remove_mb = "alpha";
	bs.remove_pat = "a.a";
	assert_int_equal(store_binding_foreach(fx->s, bind_cb, &bs), 0);
	assert_int_equal(bs.n, 4);
	assert_string_equal(bs.what[0], "alpha a.a");
	assert_string_equal(bs.what[1], "alpha a.c");
	assert_string_equal(bs.what[2], "alpha z.*");
	assert_string_equal(bs.what[3], "beta x.>");
	assert_int_equal(store_commit(fx->s, true), 0);
	check_bindings(fx->s, 3, "alpha a.c", "alpha z.*", "beta x.>");

	/* Deleting a mailbox deletes its bindings, in memory and on disk. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_mailbox_delete(fx->s, a), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	check_bindings(fx->s, 1, "beta x.>");
	assert_int_equal(raw_bindings(fx), 1);
	a = mk_mailbox(fx->s, "alpha");
	assert_int_equal(store_binding_count(fx->s, a), 0);
	fx_reopen(fx);
	check_bindings(fx->s, 1, "beta x.>");
}

/* ------------------------------------------------------------------ */
/* Migration */

/* Version 1's DDL, as released: the migration starts from it. */
static const char v1_ddl[] =
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
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" mailbox_id INTEGER NOT NULL REFERENCES mailbox(id),"
	" state INTEGER NOT NULL CHECK (state IN (0, 1, 2)),"
	" priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 9),"
	" deliveries INTEGER NOT NULL DEFAULT 0,"
	" time_ns INTEGER NOT NULL,"
	" ready_ns INTEGER NOT NULL DEFAULT 0,"
	" expires_ns INTEGER NOT NULL DEFAULT 0,"
	" pid INTEGER NOT NULL,"
	" uid INTEGER NOT NULL,"
	" gid INTEGER NOT NULL,"
	" comm TEXT NOT NULL DEFAULT '',"
	" headers BLOB,"
	" dedup TEXT,"
	" dead_reason TEXT,"
	" data BLOB NOT NULL"
	");"
	"CREATE INDEX message_queue ON message"
	" (mailbox_id, state, priority DESC, id, ready_ns);"
	"CREATE INDEX message_delayed ON message (mailbox_id, ready_ns)"
	" WHERE state = 0 AND ready_ns > 0;"
	"CREATE INDEX message_dedup ON message (mailbox_id, dedup)"
	" WHERE dedup IS NOT NULL;"
	"PRAGMA user_version = 1;"
	"PRAGMA application_id = 1835167608;" /* "mbox" */;

/* A version 1 database holding mailbox 7, "old". */
static sqlite3 *
raw_open_v1(const Fx *fx)
{
	sqlite3 *db = raw_open(fx);

	raw_exec(db, v1_ddl);
	raw_exec(db, "INSERT INTO mailbox (id, name, owner_uid, gid, mode,"
		     " lease_ms, created_ns) VALUES (7, 'old', 0, 0, 384,"
		     " 1000, 1)");
	return db;
}

static void
test_store_migrate_from_v1(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	uint64_t id = 0;
	int64_t next = 0;
	sqlite3 *db;
	Seen sn;

	db = raw_open_v1(fx);
	/* 10: ready with a dedup key; 11: leased; 12: dead; 13: expiring. */
	raw_exec(db, "INSERT INTO message (id, mailbox_id, state, priority,"
		     " time_ns, expires_ns, pid, uid, gid, dedup, dead_reason,"
		     " data) VALUES"
		     " (10, 7, 0, 0, 5, 0, 1, 0, 0, 'key', NULL, 'aa'),"
		     " (11, 7, 1, 0, 6, 0, 1, 0, 0, NULL, NULL, 'b'),"
		     " (12, 7, 2, 0, 7, 0, 1, 0, 0, NULL, 'rejected', 'c'),"
		     " (13, 7, 0, 0, 8, 99, 1, 0, 0, NULL, NULL, 'd')");
	/* Messages up to 50 were posted and acked: AUTOINCREMENT's
	 * sequence remembers it, and version 3 must too. */
	raw_exec(db, "UPDATE sqlite_sequence SET seq = 50"
		     " WHERE name = 'message'");
	sqlite3_close(db);

	fx_open(fx, STORE_SYNC_FULL);
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "PRAGMA user_version"), 4);
	/* message_queue was rebuilt with expires_ns. */
	assert_int_equal(raw_int(db, "SELECT count(*) FROM"
				     " pragma_index_info('message_queue')"),
			 6);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM dedup"), 1);
	assert_int_equal(raw_int(db, "SELECT last FROM id_reserve"), 50);
	assert_int_equal(raw_int(db, "SELECT sum(id * length(data))"
				     " FROM message"),
			 10 * 2 + 11 + 12 + 13);
	sqlite3_close(db);
	mb = store_mailbox_get(fx->s, "old");
	assert_non_null(mb);
	assert_int_equal(mb->n_ready, 3); /* the lease is void */
	assert_int_equal(mb->n_dead, 1);
	assert_int_equal(mb->bytes, 5);
	check_counters(fx, mb);
	/* The key of a message posted before the upgrade still counts. */
	assert_int_equal(store_dedup_find(fx->s, mb, "key", 5, &id), 0);
	assert_int_equal(id, 10);
	assert_int_equal(store_binding_count(fx->s, mb), 0);
	assert_int_equal(store_next_expiry(fx->s, &next), 0);
	assert_int_equal(next, 99);
	assert_int_equal(lease(fx->s, mb, 100, 10, &sn), 2);
	assert_int_equal(sn.id[0], 10);
	assert_int_equal(sn.id[1], 11);

	/* And the new tables work in it. */
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_binding_add(fx->s, mb, "old.*"), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "old");
	assert_int_equal(store_binding_count(fx->s, mb), 1);
	/* Ids go on after the old sequence, not after the last row. */
	assert_true(post(fx->s, mb, 0, "new") > 50);
}

/* A version 1 database without AUTOINCREMENT's sequence row: ids go on
 * above the highest one stored, even once it is deleted. */
static void
test_store_migrate_without_sequence(void **state)
{
	Fx *fx = *state;
	StoreMailbox *mb;
	sqlite3 *db;

	db = raw_open_v1(fx);
	raw_exec(db, "INSERT INTO message (id, mailbox_id, state, priority,"
		     " time_ns, pid, uid, gid, data) VALUES"
		     " (10, 7, 0, 0, 5, 1, 0, 0, 'a'),"
		     " (13, 7, 0, 0, 6, 1, 0, 0, 'b')");
	raw_exec(db, "DELETE FROM sqlite_sequence WHERE name = 'message'");
	sqlite3_close(db);

	fx_open(fx, STORE_SYNC_FULL);
	db = raw_open(fx);
	assert_int_equal(raw_int(db, "SELECT last FROM id_reserve"), 13);
	sqlite3_close(db);
	mb = store_mailbox_get(fx->s, "old");
	assert_int_equal(store_begin(fx->s), 0);
	assert_int_equal(store_msg_delete(fx->s, mb, 13), 0);
	assert_int_equal(store_commit(fx->s, true), 0);
	fx_reopen(fx);
	mb = store_mailbox_get(fx->s, "old");
	assert_true(post(fx->s, mb, 0, "c") > 13);
}

int
main(void)
{
	/* As mboxd does, before any SQLite use: every test below runs the
	 * store the way the broker runs it. */
	if (store_setup_process() != 0) {
		fprintf(stderr, "store_setup_process failed before any use "
				"of SQLite\n");
		return 1;
	}
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, fx_setup, fx_teardown)
/* A walbuf test again, at the store's page size. */
#define T_STORE_PAGES(name)                                                    \
	{#name " (store's pages)", name, fx_setup_store_pages, fx_teardown,    \
	 NULL}
		T(test_store_open_close_reopen),
		T(test_store_page_size),
		T(test_store_wal_checkpoint_interval),
		T(test_store_ack_frees_pages_unwritten),
		T(test_store_reopen_writes_nothing),
		T(test_store_setup_process_after_use),
		T(test_store_schema_version),
		T(test_store_newer_version_refused),
		T(test_store_not_a_database_refused),
		T(test_store_mailbox_create_get),
		T(test_store_mailbox_foreach_order),
		T(test_store_mailbox_count_owned),
		T(test_store_mailbox_count_owned_mix),
		T(test_store_mailbox_update),
		T(test_store_mailbox_delete),
		T(test_store_rollback_mailboxes),
		T(test_store_txn_end_hook),
		T(test_store_msg_round_trip),
		T(test_store_callback_reentry_refused),
		T(test_store_lease_order),
		T(test_store_lease_respects_ready_ns),
		T(test_store_lease_marks_only_taken),
		T(test_store_ack_leased_only),
		T(test_store_lease_foreign_rows),
		T(test_store_lease_failure_refuses_commit),
		T(test_store_unprepared_statement_fails_cleanly),
		T(test_store_lease_walk_start),
		T(test_store_lease_row_void_at_restart),
		T(test_store_restart_max_deliveries),
		T(test_store_lease_walk_clock_back),
		T(test_store_lease_of_deleted_message),
		T(test_store_release_keeps_place),
		T(test_store_counters_exact),
		T(test_store_peek),
		T(test_store_restart_voids_leases),
		T(test_store_ids_never_reused),
		T(test_store_ids_reserved_in_blocks),
		T(test_store_migrate_without_sequence),
		T(test_store_write_without_txn),
		T(test_store_commit_durability),
		T(test_store_delayed_oldest_next_ready),
		T(test_store_fsync_failure_refuses_writes),
		T(test_store_wal_commit_one_write),
		T(test_store_wal_write_error_fails_commit),
		T(test_store_wal_large_transaction),
		T(test_store_wal_reads_back_spilled),
		T(test_store_wal_rewrite_error_fails_commit),
		T(test_store_wal_rollback_drops_spill),
		T(test_store_wal_commit_page_after_full_run),
		T(test_store_wal_after_failed_spill),
		T_STORE_PAGES(test_store_wal_reads_back_spilled),
		T_STORE_PAGES(test_store_wal_rewrite_error_fails_commit),
		T_STORE_PAGES(test_store_wal_rollback_drops_spill),
		T_STORE_PAGES(test_store_wal_commit_page_after_full_run),
		T_STORE_PAGES(test_store_wal_after_failed_spill),
		T(test_store_disk_full_at_commit),
		T(test_store_disk_full_at_insert),
		T(test_store_cap_refuses),
		T(test_store_cap_fill_ack_reopen),
		T(test_store_hold_size),
		T(test_store_hold_again),
		T(test_store_cap_reserve_holds),
		T(test_store_cap_leases_drain),
		T(test_store_cap_adds_in_one_txn),
		T(test_store_leases_held),
		T(test_store_cap_leases_leave_room_for_releases),
		T(test_store_cap_posts_leave_room_for_releases),
		T(test_store_cap_rollback_memory),
		T(test_store_kill_kick),
		T(test_store_purge),
		T(test_store_expire),
		T(test_store_release_max_deliveries),
		T(test_store_dedup),
		T(test_store_bindings),
		T(test_store_migrate_from_v1),
#undef T
	};

	count_vfs_register();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
