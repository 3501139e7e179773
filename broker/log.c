/*
 * log.c - leveled logging to stderr (foreground), the journal (stderr
 * under systemd) or syslog (daemon).
 *
 * The level is applied here for every sink, so --log-level means the same
 * on a terminal, in the journal and in syslog.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "broker/log.h"
#include "broker/sdnotify.h"

static const struct {
	const char *name;
	int level;
} log_levels[] = {
	{"error", LOG_ERR}, {"warning", LOG_WARNING}, {"notice", LOG_NOTICE},
	{"info", LOG_INFO}, {"debug", LOG_DEBUG},
};

int
log_level_parse(const char *name)
{
	for (size_t i = 0; i < sizeof(log_levels) / sizeof(log_levels[0]); i++)
		if (strcmp(name, log_levels[i].name) == 0)
			return log_levels[i].level;
	return -EINVAL;
}

const char *
log_level_name(int level)
{
	for (size_t i = 0; i < sizeof(log_levels) / sizeof(log_levels[0]); i++)
		if (log_levels[i].level == level)
			return log_levels[i].name;
	return "?";
}

void
log_init_stderr(Log *log, int level)
{
	log->level = level;
	/* Decided once: JOURNAL_STREAM does not change while we run. */
	log->sink = sdnotify_journal_stderr() == 1 ? LOG_SINK_JOURNAL
						   : LOG_SINK_STDERR;
}

void
log_open_syslog(Log *log)
{
	/* LOG_PERROR: a copy to stderr, which a daemon keeps on the terminal
	 * until it is ready and then points at /dev/null, so start-up errors
	 * are seen by whoever started it, later ones only in syslog. */
	openlog("mboxd", LOG_PID | LOG_NDELAY | LOG_PERROR, LOG_DAEMON);
	log->sink = LOG_SINK_SYSLOG;
}

void
log_write(const Log *log, int prio, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (prio > log->level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One write per line so concurrent writers do not interleave within
	 * a line. */
	switch (log->sink) {
	case LOG_SINK_SYSLOG:
		syslog(prio, "%s", line);
		break;
	case LOG_SINK_JOURNAL:
		fprintf(stderr, "<%d>%s\n", prio, line);
		break;
	case LOG_SINK_STDERR:
		fprintf(stderr, "mboxd[%s]: %s\n", log_level_name(prio), line);
		break;
	}
}

bool
log_rate_ok(LogRate *lr, int64_t now_ns, size_t *quiet)
{
	const int64_t every = 1000000000 / (lr->per_s ? lr->per_s : 1);

	if (!lr->refill_ns ||
	    now_ns - lr->refill_ns >= every * (int64_t)lr->burst) {
		lr->tokens = lr->burst;
		lr->refill_ns = now_ns;
	} else if (now_ns - lr->refill_ns >= every) {
		int64_t k = (now_ns - lr->refill_ns) / every;

		lr->tokens += (size_t)k;
		if (lr->tokens > lr->burst)
			lr->tokens = lr->burst;
		lr->refill_ns += k * every;
	}
	if (!lr->tokens) {
		lr->quiet++;
		return false;
	}
	lr->tokens--;
	*quiet = lr->quiet;
	lr->quiet = 0;
	return true;
}
