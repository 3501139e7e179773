/*
 * log.c - leveled logging to stderr (foreground) or syslog (daemon).
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "broker/log.h"

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
log_write(const Log *log, int prio, const char *fmt, ...)
{
	va_list ap;

	if (prio > log->level)
		return;
	va_start(ap, fmt);
	if (log->use_syslog) {
		vsyslog(prio, fmt, ap);
	} else {
		/* One fprintf per line so concurrent writers do not interleave
		 * within a line. */
		char line[1024];
		vsnprintf(line, sizeof(line), fmt, ap);
		fprintf(stderr, "mboxd[%s]: %s\n", log_level_name(prio), line);
	}
	va_end(ap);
}
