/*
 * log.h - one line per notable event, to stderr or syslog.
 *
 * The Log struct is owned by whoever runs the broker (main) and passed
 * down; nothing here is global.
 */
#ifndef MBOX_BROKER_LOG_H
#define MBOX_BROKER_LOG_H

#include <stdbool.h>
#include <syslog.h>

typedef struct Log {
	int level; /* highest syslog priority printed: LOG_ERR..LOG_DEBUG */
	bool use_syslog; /* else stderr with a level prefix */
} Log;

/* Parse "error", "warning", "notice", "info", "debug"; -EINVAL if unknown. */
int log_level_parse(const char *name);
const char *log_level_name(int level);

void log_write(const Log *log, int prio, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
