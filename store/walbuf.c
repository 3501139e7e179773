/*
 * walbuf.c - a SQLite VFS that writes the write-ahead log in runs (see
 * walbuf.h).
 *
 * Invariants of a WAL file:
 * - run holds run_len bytes that belong at run_off, at the end of what
 *   was written (wal_end), and are not in the file yet; nothing else is
 *   withheld.
 * - Only appends are gathered. A write below wal_end (SQLite rewriting
 *   a frame it spilled, or the checksums after one, which it does after
 *   writing the commit frame) goes straight through, so its failure is
 *   the failure of the call that made it.
 * - After a write that ends a commit frame, run_len is 0: the commit's
 *   frames are in the file before SQLite can publish them, and a failed
 *   write fails the COMMIT.
 * - So when the writer releases the WAL write lock, what is left in run
 *   belongs to a transaction that did not commit. It is dropped: written
 *   later, it would land on frames the next writer (another process)
 *   appended at the same offsets.
 * - A failed flush leaves err set until then: the frames SQLite thinks
 *   it wrote are lost, so nothing of that transaction may commit.
 *
 * A commit frame is the one whose 24-byte header holds the database size
 * after the commit (bytes 4-7, big-endian, non-zero); SQLite writes that
 * header, then the page, as two consecutive writes (walWriteOneFrame).
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/walbuf.h"

#define WAL_FRAME_HDR 24 /* bytes of a frame header (SQLite's wal.c) */

struct WalBuf {
	sqlite3_vfs vfs; /* first: SQLite hands it back to us */
	sqlite3_vfs *under;
	char name[48];
	WalBufFullFn full_fn; /* see walbuf_on_full */
	void *full_ctx;
};

typedef struct WalBufFile {
	sqlite3_file base; /* first: SQLite's handle */
	sqlite3_file *under;
	WalBuf *wb;
	bool wal;
	bool end_commit; /* the next write ends a commit frame */
	int err;	 /* a failed flush's error (see above), SQLITE_OK */
	sqlite3_int64 wal_end; /* end of the furthest write, run included */
	unsigned char *run;
	size_t run_len;
	sqlite3_int64 run_off;
	struct WalBufFile *next_wal; /* the WAL files of wb, for xShmBarrier */
} WalBufFile;

#define FILE_OF(p) ((WalBufFile *)(p))
#define UNDER(p)   (FILE_OF(p)->under)

/* Write through to the file below; a write that finds the disk full is
 * tried once more if the hook made room (walbuf_on_full). */
static int
under_write(WalBufFile *f, const void *buf, int n, sqlite3_int64 off)
{
	int rc = f->under->pMethods->xWrite(f->under, buf, n, off);
	int sys = 0;

	if (rc == SQLITE_IOERR_WRITE &&
	    f->under->pMethods->xFileControl(f->under, SQLITE_FCNTL_LAST_ERRNO,
					     &sys) == SQLITE_OK &&
	    sys == EDQUOT)
		rc = SQLITE_FULL; /* the user's quota: full all the same */
	if (rc == SQLITE_FULL && f->wb->full_fn &&
	    f->wb->full_fn(f->wb->full_ctx, f->wal))
		rc = f->under->pMethods->xWrite(f->under, buf, n, off);
	return rc;
}

/* Write the run out; SQLITE_OK or the error of the write, which is kept
 * in err too (see above). */
static int
run_flush(WalBufFile *f)
{
	int rc;

	f->end_commit = false;
	if (f->run_len == 0)
		return SQLITE_OK;
	rc = under_write(f, f->run, (int)f->run_len, f->run_off);
	f->run_len = 0;
	if (rc != SQLITE_OK) {
		/* Not written: the file ends where the run began, maybe in
		 * the middle of a frame, which must not pass for a rewrite. */
		f->wal_end = f->run_off;
		if (f->err == SQLITE_OK)
			f->err = rc;
	}
	return rc;
}

/* The writer let go of the WAL (see above). */
static void
run_drop(WalBufFile *f)
{
	if (f->run_len)
		f->wal_end = f->run_off; /* the next writer appends there */
	f->run_len = 0;
	f->end_commit = false;
	f->err = SQLITE_OK;
}

/* run_flush, and an earlier failed flush's error. */
static int
flush_or_err(WalBufFile *f)
{
	int rc = run_flush(f);

	return rc != SQLITE_OK ? rc : f->err;
}

static bool
is_commit_header(const void *buf, int n)
{
	const unsigned char *h = buf;

	return n == WAL_FRAME_HDR && (h[4] | h[5] | h[6] | h[7]) != 0;
}

static int
wal_write(WalBufFile *f, const void *buf, int n, sqlite3_int64 off)
{
	/* Taken before a flush (which clears it): the page of a commit
	 * frame whose header ended a full run still ends the commit. */
	bool ends_commit = f->end_commit;
	bool rewrite;
	int rc;

	if (f->err != SQLITE_OK)
		return f->err;
	if (off == 0)
		f->wal_end = 0; /* a new WAL header: the log starts over */
	if (f->run_len && (off != f->run_off + (sqlite3_int64)f->run_len ||
			   f->run_len + (size_t)n > WALBUF_RUN_MAX)) {
		rc = run_flush(f);
		if (rc != SQLITE_OK)
			return rc;
	}
	f->end_commit = false;
	rewrite = f->run_len == 0 && off < f->wal_end;
	if (!f->run && !rewrite)
		f->run = malloc(WALBUF_RUN_MAX);
	/* A rewrite, or too long to gather (or no memory for it). */
	if (rewrite || (size_t)n > WALBUF_RUN_MAX || !f->run) {
		rc = under_write(f, buf, n, off);
		if (rc == SQLITE_OK) {
			if (off + n > f->wal_end)
				f->wal_end = off + n;
			/* A commit frame's header rewritten in place, or
			 * written where a failed transaction's frames were:
			 * its page still ends the commit. */
			f->end_commit = is_commit_header(buf, n);
		}
		return rc;
	}
	if (off + n > f->wal_end)
		f->wal_end = off + n;
	if (f->run_len == 0)
		f->run_off = off;
	memcpy(f->run + f->run_len, buf, (size_t)n);
	f->run_len += (size_t)n;
	if (ends_commit)
		return run_flush(f);
	f->end_commit = is_commit_header(buf, n);
	return SQLITE_OK;
}

static int
wb_write(sqlite3_file *p, const void *buf, int n, sqlite3_int64 off)
{
	WalBufFile *f = FILE_OF(p);

	if (f->wal)
		return wal_write(f, buf, n, off);
	return under_write(f, buf, n, off);
}

static int
wb_read(sqlite3_file *p, void *buf, int n, sqlite3_int64 off)
{
	WalBufFile *f = FILE_OF(p);
	int rc;

	if (f->run_len && off < f->run_off + (sqlite3_int64)f->run_len &&
	    off + n > f->run_off) {
		rc = flush_or_err(f);
		if (rc != SQLITE_OK)
			return rc;
	}
	return f->under->pMethods->xRead(f->under, buf, n, off);
}

static int
wb_close(sqlite3_file *p)
{
	WalBufFile *f = FILE_OF(p);
	int rc = flush_or_err(f), rc_close = SQLITE_OK;

	if (f->wal) {
		WalBufFile **pp = (WalBufFile **)&f->wb->vfs.pAppData;

		while (*pp && *pp != f)
			pp = &(*pp)->next_wal;
		if (*pp)
			*pp = f->next_wal;
	}
	free(f->run);
	if (f->under->pMethods)
		rc_close = f->under->pMethods->xClose(f->under);
	return rc != SQLITE_OK ? rc : rc_close;
}

static int
wb_truncate(sqlite3_file *p, sqlite3_int64 size)
{
	WalBufFile *f = FILE_OF(p);
	int rc = flush_or_err(f);

	if (rc == SQLITE_OK)
		rc = f->under->pMethods->xTruncate(f->under, size);
	if (rc == SQLITE_OK && size < f->wal_end)
		f->wal_end = size;
	return rc;
}

static int
wb_sync(sqlite3_file *p, int flags)
{
	int rc = flush_or_err(FILE_OF(p));

	return rc != SQLITE_OK ? rc
			       : UNDER(p)->pMethods->xSync(UNDER(p), flags);
}

static int
wb_file_size(sqlite3_file *p, sqlite3_int64 *size)
{
	int rc = flush_or_err(FILE_OF(p));

	return rc != SQLITE_OK ? rc
			       : UNDER(p)->pMethods->xFileSize(UNDER(p), size);
}

static int
wb_lock(sqlite3_file *p, int level)
{
	return UNDER(p)->pMethods->xLock(UNDER(p), level);
}

static int
wb_unlock(sqlite3_file *p, int level)
{
	return UNDER(p)->pMethods->xUnlock(UNDER(p), level);
}

static int
wb_check_reserved(sqlite3_file *p, int *out)
{
	return UNDER(p)->pMethods->xCheckReservedLock(UNDER(p), out);
}

/* Size hints and the like act on the file itself: the run goes first. */
static int
wb_file_control(sqlite3_file *p, int op, void *arg)
{
	WalBufFile *f = FILE_OF(p);

	if (f->wal && op != SQLITE_FCNTL_LAST_ERRNO) {
		int rc = run_flush(f);

		if (rc != SQLITE_OK)
			return rc;
	}
	return f->under->pMethods->xFileControl(f->under, op, arg);
}

static int
wb_sector_size(sqlite3_file *p)
{
	return UNDER(p)->pMethods->xSectorSize(UNDER(p));
}

static int
wb_device_characteristics(sqlite3_file *p)
{
	return UNDER(p)->pMethods->xDeviceCharacteristics(UNDER(p));
}

static int
wb_shm_map(sqlite3_file *p, int region, int size, int extend,
	   void volatile **out)
{
	return UNDER(p)->pMethods->xShmMap(UNDER(p), region, size, extend, out);
}

/* Lock 0 of the WAL index is SQLite's WAL_WRITE_LOCK. */
static int
wb_shm_lock(sqlite3_file *p, int offset, int n, int flags)
{
	WalBufFile *f = FILE_OF(p);

	if ((flags & SQLITE_SHM_UNLOCK) && offset == 0) {
		for (WalBufFile *w = f->wb->vfs.pAppData; w; w = w->next_wal)
			run_drop(w);
	}
	return f->under->pMethods->xShmLock(f->under, offset, n, flags);
}

/* SQLite is about to publish frames in the WAL index (the database
 * file's shared memory): other readers must find them in the WAL. */
static void
wb_shm_barrier(sqlite3_file *p)
{
	WalBufFile *f = FILE_OF(p);

	/* Empty after a commit (see above); a failure is kept in err. */
	for (WalBufFile *w = f->wb->vfs.pAppData; w; w = w->next_wal)
		run_flush(w);
	f->under->pMethods->xShmBarrier(f->under);
}

static int
wb_shm_unmap(sqlite3_file *p, int delete_flag)
{
	return UNDER(p)->pMethods->xShmUnmap(UNDER(p), delete_flag);
}

static int
wb_fetch(sqlite3_file *p, sqlite3_int64 off, int n, void **out)
{
	return UNDER(p)->pMethods->xFetch(UNDER(p), off, n, out);
}

static int
wb_unfetch(sqlite3_file *p, sqlite3_int64 off, void *page)
{
	return UNDER(p)->pMethods->xUnfetch(UNDER(p), off, page);
}

static const sqlite3_io_methods walbuf_io = {
	.iVersion = 3,
	.xClose = wb_close,
	.xRead = wb_read,
	.xWrite = wb_write,
	.xTruncate = wb_truncate,
	.xSync = wb_sync,
	.xFileSize = wb_file_size,
	.xLock = wb_lock,
	.xUnlock = wb_unlock,
	.xCheckReservedLock = wb_check_reserved,
	.xFileControl = wb_file_control,
	.xSectorSize = wb_sector_size,
	.xDeviceCharacteristics = wb_device_characteristics,
	.xShmMap = wb_shm_map,
	.xShmLock = wb_shm_lock,
	.xShmBarrier = wb_shm_barrier,
	.xShmUnmap = wb_shm_unmap,
	.xFetch = wb_fetch,
	.xUnfetch = wb_unfetch,
};

static int
wb_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *p, int flags,
	int *out_flags)
{
	WalBuf *wb = (WalBuf *)vfs;
	WalBufFile *f = FILE_OF(p);
	int rc;

	memset(f, 0, sizeof(*f));
	f->under = (sqlite3_file *)(f + 1);
	f->wb = wb;
	rc = wb->under->xOpen(wb->under, name, f->under, flags, out_flags);
	if (rc != SQLITE_OK) {
		/* A VFS may leave a failed file to be closed; SQLite will not
		 * close ours (pMethods stays NULL). */
		if (f->under->pMethods)
			f->under->pMethods->xClose(f->under);
		return rc;
	}
	if (f->under->pMethods->iVersion < 3) {
		f->under->pMethods->xClose(f->under);
		return SQLITE_CANTOPEN;
	}
	if (flags & SQLITE_OPEN_WAL) {
		f->wal = true;
		f->next_wal = vfs->pAppData;
		vfs->pAppData = f;
	}
	p->pMethods = &walbuf_io;
	return SQLITE_OK;
}

#define UNDER_VFS(v) (((WalBuf *)(v))->under)

static int
wb_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
	return UNDER_VFS(v)->xDelete(UNDER_VFS(v), name, sync_dir);
}

static int
wb_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
	return UNDER_VFS(v)->xAccess(UNDER_VFS(v), name, flags, out);
}

static int
wb_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
	return UNDER_VFS(v)->xFullPathname(UNDER_VFS(v), name, n, out);
}

static void *
wb_dl_open(sqlite3_vfs *v, const char *name)
{
	return UNDER_VFS(v)->xDlOpen(UNDER_VFS(v), name);
}

static void
wb_dl_error(sqlite3_vfs *v, int n, char *out)
{
	UNDER_VFS(v)->xDlError(UNDER_VFS(v), n, out);
}

static void (*wb_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
	return UNDER_VFS(v)->xDlSym(UNDER_VFS(v), h, sym);
}

static void
wb_dl_close(sqlite3_vfs *v, void *h)
{
	UNDER_VFS(v)->xDlClose(UNDER_VFS(v), h);
}

static int
wb_randomness(sqlite3_vfs *v, int n, char *out)
{
	return UNDER_VFS(v)->xRandomness(UNDER_VFS(v), n, out);
}

static int
wb_sleep(sqlite3_vfs *v, int us)
{
	return UNDER_VFS(v)->xSleep(UNDER_VFS(v), us);
}

static int
wb_current_time(sqlite3_vfs *v, double *out)
{
	return UNDER_VFS(v)->xCurrentTime(UNDER_VFS(v), out);
}

static int
wb_last_error(sqlite3_vfs *v, int n, char *out)
{
	return UNDER_VFS(v)->xGetLastError(UNDER_VFS(v), n, out);
}

static int
wb_current_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
	return UNDER_VFS(v)->xCurrentTimeInt64(UNDER_VFS(v), out);
}

int
walbuf_new(WalBuf **out, const char *under)
{
	WalBuf *wb;
	sqlite3_vfs *u;

	*out = NULL;
	if (sqlite3_initialize() != SQLITE_OK)
		return -EIO;
	u = sqlite3_vfs_find(under);
	if (!u)
		return -ENOENT;
	if (u->iVersion < 2)
		return -EIO; /* no xCurrentTimeInt64 to hand down */
	wb = calloc(1, sizeof(*wb));
	if (!wb)
		return -ENOMEM;
	/* One VFS per store: the name must be unique in the process. */
	snprintf(wb->name, sizeof(wb->name), "mboxd-walbuf-%p", (void *)wb);
	wb->under = u;
	wb->vfs = (sqlite3_vfs){
		.iVersion = 2,
		.szOsFile = (int)sizeof(WalBufFile) + u->szOsFile,
		.mxPathname = u->mxPathname,
		.zName = wb->name,
		.pAppData = NULL, /* its open WAL files */
		.xOpen = wb_open,
		.xDelete = wb_delete,
		.xAccess = wb_access,
		.xFullPathname = wb_full_pathname,
		.xDlOpen = wb_dl_open,
		.xDlError = wb_dl_error,
		.xDlSym = wb_dl_sym,
		.xDlClose = wb_dl_close,
		.xRandomness = wb_randomness,
		.xSleep = wb_sleep,
		.xCurrentTime = wb_current_time,
		.xGetLastError = wb_last_error,
		.xCurrentTimeInt64 = wb_current_time64,
	};
	if (sqlite3_vfs_register(&wb->vfs, 0) != SQLITE_OK) {
		free(wb);
		return -EIO;
	}
	*out = wb;
	return 0;
}

const char *
walbuf_name(const WalBuf *wb)
{
	return wb->name;
}

void
walbuf_on_full(WalBuf *wb, WalBufFullFn fn, void *ctx)
{
	wb->full_fn = fn;
	wb->full_ctx = ctx;
}

void
walbuf_release_memory(WalBuf *wb)
{
	for (WalBufFile *f = wb->vfs.pAppData; f; f = f->next_wal) {
		if (f->run_len == 0) {
			free(f->run);
			f->run = NULL;
		}
	}
}

void
walbuf_free(WalBuf *wb)
{
	if (!wb)
		return;
	sqlite3_vfs_unregister(&wb->vfs);
	free(wb);
}
