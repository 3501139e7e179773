/*
 * log.h - one line per notable event, to stderr, the journal or syslog.
 *
 * The Log struct is owned by whoever runs the broker (main) and passed
 * down; nothing here is global. Its fields may change while the broker
 * runs (SIGHUP changes level), from the loop's thread only.
 */
#ifndef MBOX_BROKER_LOG_H
#define MBOX_BROKER_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>

typedef enum LogSink {
	LOG_SINK_STDERR,  /* "mboxd[level]: text", for a terminal or a file */
	LOG_SINK_JOURNAL, /* "<prio>text": stderr is the journal */
	LOG_SINK_SYSLOG,  /* syslog(3), after log_open_syslog */
} LogSink;

typedef struct Log {
	int level;    /* highest syslog priority written: LOG_ERR..LOG_DEBUG */
	LogSink sink; /* zero: stderr */
} Log;

/* Parse "error", "warning", "notice", "info", "debug"; -EINVAL if unknown. */
int log_level_parse(const char *name);
const char *log_level_name(int level);

/*
 * log_init_stderr - log to stderr, with "<N>" priority prefixes when
 * JOURNAL_STREAM says stderr is the journal (so journalctl -p filters by
 * level), else with a "mboxd[level]: " prefix.
 */
void log_init_stderr(Log *log, int level);

/* log_open_syslog - log to syslog(3) from now on: ident "mboxd", facility
 * daemon, the pid in every line; each line is also copied to stderr (a
 * daemon points stderr at /dev/null once it is ready). */
void log_open_syslog(Log *log);

void log_write(const Log *log, int prio, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * A rate limit for lines an event could repeat without end (a client
 * denied in a loop, a write failing on a full disk): a burst of burst
 * lines, then per_s a second. Set burst and per_s, the rest zero.
 */
typedef struct LogRate {
	unsigned burst, per_s;
	int64_t refill_ns; /* tokens last refilled */
	size_t tokens;
	size_t quiet; /* events not logged since the last one */
} LogRate;

/* May the event at now_ns (a monotonic clock) be logged? If so, *quiet
 * gets how many were not logged before it (say so). */
bool log_rate_ok(LogRate *lr, int64_t now_ns, size_t *quiet);

#endif
