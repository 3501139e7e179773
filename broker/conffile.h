/*
 * conffile.h - the mboxd configuration file (/etc/mboxd.conf).
 *
 * (Named conffile, not config: a broker/config.h would shadow the
 * autoconf config.h that every broker .c file includes as "config.h", since
 * quoted includes look in the including file's directory first.)
 *
 * The file holds the daemon's command-line options, one per line:
 *
 *     # comment
 *     key = value
 *     socket = /run/mbox/mbox.sock     # a comment after blanks
 *     db = "/srv/with # hash/mbox.db"  # quotes keep blanks and '#'
 *     foreground = yes
 *     autocreate = no                  # the same as no-autocreate = yes
 *
 * A key is a long option name of `mboxd --help` without its dashes; the
 * set of keys is exactly the getopt option table the caller passes, so a
 * new option is a new key with no change here. Options taking no argument
 * are booleans (yes/no, true/false, on/off, 1/0) and reach the caller as
 * "yes" or "no"; a flag named "no-X" may also be written "X" with the
 * opposite value. "help", "version" and "config" are command-line only.
 *
 * Layering (options win over the file): the caller loads the file into
 * its option struct first, through the same code that handles getopt's
 * results, then parses the command line on top. Values are validated by
 * that caller code, not here, so a value is checked one way whether it
 * came from argv or from the file; the apply callback is told the file and
 * line so that its error reads "FILE:LINE: reason" like the parser's own.
 *
 * Errors stop the load at the first bad line: a line that is not
 * "key = value", an unknown key (with the closest known key, or the list),
 * a key given twice, a missing value, or a value the caller rejects.
 */
#ifndef MBOX_BROKER_CONFFILE_H
#define MBOX_BROKER_CONFFILE_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>

/* The file read when --config is not given. */
#ifdef SYSCONFDIR
#define CONFFILE_DEFAULT_PATH SYSCONFDIR "/mboxd.conf"
#else
#define CONFFILE_DEFAULT_PATH "/etc/mboxd.conf"
#endif

/* Longest line accepted, in bytes without the newline. */
#define CONFFILE_MAX_LINE 4096

/* One "key = value" line, valid only during the apply callback. */
typedef struct ConfEntry {
	const char *file;	  /* the name given to conffile_load* */
	unsigned line;		  /* 1-based */
	const char *key;	  /* as written, e.g. "autocreate" */
	const struct option *opt; /* the option it sets, e.g. "no-autocreate" */
	const char *value; /* unquoted; "yes"/"no" for no_argument options */
	char where[64];	   /* "FILE:LINE" for messages, truncated if long */
} ConfEntry;

/*
 * Apply one entry. Return 0, or a negative errno with a reason (without
 * the file and line, which the loader adds) written into why.
 */
typedef int (*ConfApplyFn)(void *ctx, const ConfEntry *e, char *why,
			   size_t whylen);

/*
 * conffile_load - read path and call apply for each entry, in file order.
 *
 * opts is the getopt_long table (terminated by a zeroed entry); it is only
 * read. Returns 0 when every line was applied; -ENOENT (or another -errno
 * of fopen/read) with "cannot read PATH: reason" in err when the file
 * cannot be read, so the caller can ignore a missing default file but
 * not a missing --config; -EINVAL with "PATH:LINE: reason" for a bad line;
 * or the negative value apply returned, with "PATH:LINE: why". err may be
 * NULL. Entries before the bad line have been applied.
 */
int conffile_load(const char *path, const struct option *opts,
		  ConfApplyFn apply, void *ctx, char *err, size_t errlen);

/* conffile_load_stream - the same from an open stream; name is for
 * messages. The stream is read to the end or the first error, not closed. */
int conffile_load_stream(FILE *f, const char *name, const struct option *opts,
			 ConfApplyFn apply, void *ctx, char *err,
			 size_t errlen);

/*
 * conffile_parse_bool - "yes", "true", "on", "1" -> 1; "no", "false",
 * "off", "0" -> 0 (any case); anything else -EINVAL.
 */
int conffile_parse_bool(const char *s);

#endif
