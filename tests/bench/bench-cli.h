/*
 * bench-cli.h - mboxctl against libmbox doing the same work: posting
 * lines (seq N | mboxctl post --lines) and taking them out (mboxctl recv
 * -n N), each timed beside the library's own loop in the same run.
 */
#ifndef BENCH_CLI_H
#define BENCH_CLI_H

#include <stddef.h>

typedef struct CliResult {
	double cli_post, lib_post; /* seconds to post the lines */
	double cli_recv, lib_recv; /* seconds to take and ack them */
} CliResult;

/*
 * bench_cli - with mboxctl at path mboxctl and the broker at sock: post
 * the numbers 1..lines as one message a line to mailbox and take them
 * out again, first with mboxctl (fork/exec, MBOX_SOCKET set), then with
 * libmbox (batches of 512 posted, 1024 received and acked). Leaves the
 * mailbox empty. 0, or a negative errno after saying why.
 */
int bench_cli(const char *mboxctl, const char *sock, const char *mailbox,
	      size_t lines, CliResult *out);

#endif
