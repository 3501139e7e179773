/*
 * walbuf.h - a SQLite VFS that writes the write-ahead log in runs.
 *
 * SQLite writes each WAL frame with two pwrite calls (its 24-byte header,
 * then the page), so a commit of n pages costs 2n system calls. A WalBuf
 * VFS sits over another VFS and gathers consecutive appends to a WAL
 * file in memory, then writes them with one call:
 * - at the end of a commit frame, inside SQLite's write of it, so that a
 *   failure fails the commit exactly as an unbuffered write would;
 * - before anything reads, syncs, truncates or sizes the file, before a
 *   write elsewhere in it, when the run reaches WALBUF_RUN_MAX, and in
 *   xShmBarrier (where it is empty unless something went wrong).
 * Rewrites of frames already written go straight through. What is still
 * gathered when SQLite releases the WAL write lock belongs to a rolled
 * back transaction, and is dropped. Other files go straight through.
 *
 * Not followed: the padding frames SQLite adds around an fsync inside a
 * commit when PRAGMA synchronous is FULL and the file system lacks
 * powersafe overwrite (the unix VFS assumes it has it). The store runs
 * NORMAL or OFF and syncs the WAL itself.
 */
#ifndef MBOX_STORE_WALBUF_H
#define MBOX_STORE_WALBUF_H

#include <sqlite3.h>
#include <stdbool.h>

/* The longest run written in one call: SQLite's unix VFS writes at most
 * 0x1ffff bytes a call and reports a shorter write as a full disk. */
#define WALBUF_RUN_MAX (120 * 1024)

typedef struct WalBuf WalBuf;

/*
 * walbuf_new - register a WalBuf VFS over the VFS named under (NULL: the
 * default one), under a name of its own (walbuf_name), not as the
 * default. Returns 0 or -ENOMEM, -ENOENT (no such VFS), -EIO.
 */
int walbuf_new(WalBuf **out, const char *under);
/* The name to give sqlite3_open_v2. */
const char *walbuf_name(const WalBuf *wb);
/*
 * walbuf_on_full - call fn(ctx, wal) when a write of any file opened
 * through wb finds the disk full (SQLite's SQLITE_FULL); wal says whether
 * it was a WAL file (a transaction's frames) or not (the database: a
 * checkpoint). If fn returns true (it freed space), the write is tried
 * once more. fn runs inside SQLite's call: it must not use the
 * connection. NULL: no hook.
 */
typedef bool (*WalBufFullFn)(void *ctx, bool wal);
void walbuf_on_full(WalBuf *wb, WalBufFullFn fn, void *ctx);
/* Free the run buffers of its WAL files that hold nothing (an idle
 * broker's memory); the next write allocates again. */
void walbuf_release_memory(WalBuf *wb);
/* Unregister and free; every connection opened through it must be closed.
 * Accepts NULL. */
void walbuf_free(WalBuf *wb);

#endif
