/*
 * util.h - what every mboxctl verb shares: the command context, exit
 * codes, error reporting, argument parsing, clocks and human formats.
 */
#ifndef MBOXCTL_UTIL_H
#define MBOXCTL_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>

#include "mbox.h"

/* Exit codes, as documented in `mboxctl --help`. */
enum ctl_exit {
	CTL_EXIT_OK = 0,
	CTL_EXIT_ERROR = 1,
	CTL_EXIT_USAGE = 2,
	CTL_EXIT_EMPTY = 3,	  /* nothing received before the wait ran out */
	CTL_EXIT_DENIED = 4,	  /* permission denied */
	CTL_EXIT_NOT_FOUND = 5,	  /* no such mailbox */
	CTL_EXIT_UNREACHABLE = 6, /* could not connect to the broker */
};

/* One run of mboxctl: which verb, on what, through which connection. */
typedef struct Ctl {
	const char *verb;   /* "post" */
	const char *target; /* the mailbox, named in messages; NULL if none */
	const char *socket; /* -S PATH, or NULL for the library's default */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 64];
	/* ^ the socket path actually tried, for messages */
	mbox *m; /* NULL until ctl_connect */
	/* What ENOENT means to this verb when it is not "no such mailbox"
	 * (unbind: the binding may be what is missing); NULL: the mailbox,
	 * and the hint to create it. */
	const char *enoent;
	/* Bit n: descriptor n (0-2) was closed when mboxctl started. */
	unsigned closed_std;
} Ctl;

/* The getopt_long entries every verb accepts (-S, -h). */
/* clang-format off */
#define CTL_COMMON_OPTIONS \
	{"socket", required_argument, NULL, 'S'}, \
	{"help", no_argument, NULL, 'h'}
/* clang-format on */
/* clang-format off */
#define CTL_COMMON_HELP \
	"  -S, --socket PATH     the broker's socket (default: $MBOX_SOCKET,\n" \
	"                        else as 'mboxctl --help' says)\n" \
	"  -h, --help            show this help\n"
/* clang-format on */

/*
 * ctl_connect - connect to the broker. Returns 0, or prints why it could
 * not (with a hint) and returns CTL_EXIT_UNREACHABLE (CTL_EXIT_USAGE for
 * an empty -S).
 */
int ctl_connect(Ctl *c);
void ctl_close(Ctl *c);

/*
 * ctl_fail - report a failed library call on stderr as
 * "mboxctl: VERB TARGET: [WHAT: ]ERROR[: BROKER TEXT]" plus a hint where
 * one helps, and return the exit code for err.
 */
int ctl_fail(Ctl *c, int err, const char *what);
/* Report a failure that is not a library error; returns CTL_EXIT_ERROR. */
int ctl_error(Ctl *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/*
 * ctl_need_stdin, ctl_need_stdout - 0, or say that the descriptor was
 * closed when mboxctl started and return CTL_EXIT_ERROR: for verbs that
 * read their payload from standard input, and for those that take
 * messages (acknowledging them) to print them.
 */
int ctl_need_stdin(Ctl *c);
int ctl_need_stdout(Ctl *c);
/*
 * ctl_ignore_sigpipe - for verbs that print what they did (the ids of a
 * post) and run no command (which would inherit it): a reader that went
 * away is then a failed write, reported with what was done, instead of
 * a silent death by SIGPIPE after the broker took the work.
 */
void ctl_ignore_sigpipe(void);
/* Report a usage error and how to get help; returns CTL_EXIT_USAGE. */
int ctl_usage(Ctl *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/*
 * ctl_bad_option - report what getopt_long returned ('?' or ':', with an
 * optstring starting with ':'); returns CTL_EXIT_USAGE.
 */
int ctl_bad_option(Ctl *c, int opt, char **argv);
/*
 * ctl_parse_simple - the options of a verb that takes only -S, -h and,
 * when json is not NULL, -j/--json (which sets *json). Returns -1 to go
 * on with the operands at argv[optind], else the exit code to return:
 * CTL_EXIT_OK after printing help, CTL_EXIT_USAGE after a bad option.
 */
int ctl_parse_simple(Ctl *c, int argc, char **argv, const char *help,
		     bool *json);
/*
 * ctl_take_mailbox - the MAILBOX operand at argv[optind]: checks the name,
 * makes it the target named in messages and steps past it. synopsis
 * ("MAILBOX [DATA]") completes "which mailbox? (mboxctl VERB SYNOPSIS)".
 * Returns -1 to go on, else CTL_EXIT_USAGE after saying what is wrong.
 */
int ctl_take_mailbox(Ctl *c, int argc, char **argv, const char *synopsis);
/* CTL_EXIT_USAGE after naming argv[optind] when operands are left over,
 * else -1 to go on. */
int ctl_no_more(Ctl *c, int argc, char **argv);
/*
 * ctl_empty - what a verb that waited for messages and got none returns
 * (CTL_EXIT_EMPTY). When the target mailbox is paused, which is why
 * nothing came, it says so and how to resume it.
 */
int ctl_empty(Ctl *c);
/* The exit code a library error maps to (request errors, not connect). */
int ctl_exit_code(int err);

/* Parsers: 0, or -EINVAL when s is not exactly what they take. */
int ctl_parse_u64(const char *s, uint64_t *v);
/* An integer with an optional K, M, G or T (powers of 1024). */
int ctl_parse_size(const char *s, uint64_t *v);
/* A decimal number with an optional unit ms, s, m, h (default s). */
int ctl_parse_duration_ms(const char *s, uint64_t *ms);

int64_t ctl_realtime_ns(void);
int64_t ctl_monotonic_ns(void);

/* "512", "1.2K", "15M": like ls -h. buf holds at least 16 bytes. */
void ctl_fmt_size(char *buf, size_t size, uint64_t bytes);
/* "3s", "5m", "2h", "4d": how long ago time_ns was; "-" when 0. */
void ctl_fmt_age(char *buf, size_t size, int64_t time_ns, int64_t now_ns);

/* Well-formed UTF-8 without NUL. */
bool ctl_utf8_valid(const uint8_t *p, size_t n);

#endif
