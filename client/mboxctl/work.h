/*
 * work.h - `mboxctl work`: run a command for each message of a mailbox,
 * and the worker loop that `mboxctl serve` (rpc.c) shares.
 */
#ifndef MBOXCTL_WORK_H
#define MBOXCTL_WORK_H

#include <stdbool.h>
#include <stdint.h>

#include "client/mboxctl/child.h"
#include "client/mboxctl/util.h"

/* What becomes of a message once its command ended. */
typedef enum WorkSettle {
	WORK_ACK,
	WORK_NACK, /* with back-off */
	WORK_REJECT,
} WorkSettle;

/* The loop's settings; a verb fills them from its options. */
typedef struct WorkOpts {
	unsigned jobs;		 /* commands at once, 1..MBOX_WINDOW_MAX */
	uint64_t lease_ms;	 /* 0: the mailbox's */
	uint32_t max_deliveries; /* a failure after this many rejects; 0 = no */
	int reject_exit;	 /* exit code that rejects; -1 = none */
	bool once;		 /* one message, then exit with its outcome */
	int64_t wait_ms;	 /* --once: how long to wait; -1 = forever */
	const char *handoff_exec; /* program to exec on SIGUSR2, or NULL */
	char **reexec_argv;	  /* its arguments (argv[0] replaced) */
	char *const *cmd;	  /* the command, NULL-terminated */
	ChildIo io;
	/* Decide on a done command; NULL: by its exit code as work does.
	 * May use c->m (to reply). */
	WorkSettle (*finish)(Ctl *c, Child *ch);
	/* Run the command for msg? NULL: always. If not, msg goes to the
	 * dead list unrun (the hook says why). */
	bool (*accept)(Ctl *c, const mbox_msg *msg);
} WorkOpts;

/*
 * work_loop - subscribe to c->target (connected) and run o->cmd for
 * each message until SIGINT or SIGTERM (running commands finish and
 * are settled first). Returns the process exit code.
 */
int work_loop(Ctl *c, const WorkOpts *o);

/* The nack back-off of a message delivered n times: 2^(n-1) s, at most
 * 60 s. */
uint64_t work_backoff_ms(uint32_t deliveries);

int cmd_work(Ctl *c, int argc, char **argv);

#endif
