/*
 * bench-util.h - what every part of mbox-bench uses: clocks, the brokers it
 * starts (by pid, on temporary directories), their memory, and small
 * helpers around libmbox.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mbox.h"

#define WHAT_MAX (PATH_MAX + 256) /* an error description */
#define STALL_S	 10.0		  /* a run with no progress this long failed */
/* Stack of every worker thread: libmbox needs little, and hundreds of
 * clients with the default 8 MiB would reserve gigabytes. */
#define BENCH_STACK (256u * 1024u)

/* A broker started by mbox-bench on a fresh temporary directory. */
typedef struct Broker {
	char dir[128]; /* TMPDIR (at most 60 bytes) + a template */
	char sock[PATH_MAX];
	char db[PATH_MAX];
	char log[PATH_MAX];
	const char *mboxd;
	const char *sync;
	pid_t pid; /* 0 when not running */
} Broker;

double now_s(void);
uint64_t now_ns(void);
void sleep_ms(unsigned ms);
int cmp_double(const void *a, const void *b);
/* Sort v[0..n) and return the nearest-rank percentile pct (0..100). */
double percentile(double *v, size_t n, unsigned pct);

/* The temporary directory for our files: $TMPDIR if short, else /tmp. */
const char *bench_tmpdir(void);

int connect_or_say(mbox **m, const char *sock, char *what, size_t size);
int make_mailbox(const char *sock, const char *name);
/* -EMSGSIZE (after saying so) when size is over the broker's maximum. */
int check_size(const char *sock, size_t size);
/* Create a thread with a BENCH_STACK stack; exits when it cannot. */
void thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

/*
 * broker_start - mboxd (path mboxd) with --sync sync on a fresh temporary
 * directory; returns once it answers a ping (at most 10 s), or -1 after
 * saying why.
 */
int broker_start(Broker *b, const char *mboxd, const char *sync);
/*
 * broker_restart_ready - stop the broker (SIGTERM, wait by pid), start it
 * again on the same store with NOTIFY_SOCKET pointing at a datagram
 * socket of ours, and set *secs to the time from fork to READY=1.
 */
int broker_restart_ready(Broker *b, double *secs);
/* Stop the broker (SIGTERM, SIGKILL after 10 s), remove its directory
 * unless keep (or it ended badly). Nothing when it was not started. */
void broker_stop(Broker *b, bool keep);
/* A "Field:  N kB" line of /proc/PID/status in KiB, or -1. */
long broker_status_kib(const Broker *b, const char *field);
/* Size of the broker's db file plus suffix ("" or "-wal"), or -1. */
long long broker_file_bytes(const Broker *b, const char *suffix);

/*
 * bench_env - our environment without the variables starting with drop
 * ("NAME="), plus extra ("NAME=value") when not NULL; for an execve in a
 * child, built before the fork. Free only the array.
 */
char **bench_env(const char *drop, const char *extra);

/* Raise RLIMIT_NOFILE to at least n (as far as the hard limit allows). */
int raise_nofile(size_t n);

#endif
