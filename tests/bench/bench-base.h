/*
 * bench-base.h - the baselines mbox-bench measures in the same run, so
 * that the broker's figures can be read as ratios on a noisy machine:
 * what an fsync'd append costs on the store's file system, what a
 * SOCK_SEQPACKET ping-pong costs, and what SQLite itself allows.
 */
#ifndef BENCH_BASE_H
#define BENCH_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* n fsync'd 1 KiB appends to a file in dir: *rate per second, *p50 s. */
int baseline_fsync(const char *dir, size_t n, double *rate, double *p50);
/* n SOCK_SEQPACKET ping-pongs between two threads: *p50 seconds;
 * *across says whether they were pinned to two different CPUs. */
int baseline_seqpacket(size_t n, double *p50, bool *across);
/*
 * baseline_sqlite - the store's ceiling: a WAL database of page_size
 * bytes a page with synchronous=FULL in a fresh directory under dir, a
 * table (id INTEGER PRIMARY KEY, data BLOB); each transaction inserts k
 * rows of size bytes and deletes the k oldest (a queue's post + ack). At
 * least msgs rows, 32 transactions and about four of SQLite's
 * checkpoints (every 1000 pages, its default); *rate is rows through per
 * second.
 * With queued > 0, that many rows are in the table first (not timed, WAL
 * checkpointed): the deletes take the oldest of them, as consumers of a
 * backlog do.
 */
int baseline_sqlite(const char *dir, unsigned page_size, size_t k, size_t msgs,
		    size_t size, size_t queued, double *rate);
/*
 * baseline_store - what the store's design allows: mboxd's store module
 * alone (sync=full, no broker, no sockets, no clients) on a fresh
 * database under dir. Each transaction inserts k messages of size bytes
 * into one mailbox, leases them as a waiting consumer would, and deletes
 * the k leased in the transaction before (their acks). At least msgs
 * messages and 32 transactions; *rate is messages through per second.
 * With queued > 0, the mailbox holds that many messages first (not
 * timed, WAL checkpointed): the leases take the oldest of them, as
 * consumers of a backlog do.
 */
int baseline_store(const char *dir, size_t k, size_t msgs, size_t size,
		   size_t queued, double *rate);
/*
 * baseline_store_capped - the same with no backlog, under a size cap of
 * cap_bytes (store_set_max_bytes: posts and leases then count the room
 * left) and with `others` idle mailboxes beside the one measured, as a
 * broker with many mailboxes and max-store-size has.
 */
int baseline_store_capped(const char *dir, size_t k, size_t msgs, size_t size,
			  size_t others, uint64_t cap_bytes, double *rate);

#endif
