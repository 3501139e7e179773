/*
 * child.h - one command run for one message, as `mboxctl work` and
 * `mboxctl serve` do it: fork/exec without a shell, the payload written
 * to its stdin through a non-blocking pipe, the message's metadata in
 * MBOX_* environment variables, its stdout and stderr passed through or
 * captured (bounded), its end noticed without blocking.
 *
 * The caller owns the event loop: it polls the fds child_poll_add
 * lists, hands the results to child_poll_handle, calls child_reap when
 * SIGCHLD came, and settles the message once child_done says so. The
 * caller must ignore SIGPIPE (a command that does not read its stdin
 * must not kill us) and may block signals: the child gets SIGPIPE's
 * default and an empty signal mask back before it execs.
 */
#ifndef MBOXCTL_CHILD_H
#define MBOXCTL_CHILD_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mbox.h"

/* Captured output: at most max bytes kept, the rest read and dropped. */
typedef struct ChildBuf {
	uint8_t *data;
	size_t len, cap;
	size_t max;    /* bytes kept at most */
	bool overflow; /* more than max bytes came */
} ChildBuf;

typedef struct Child {
	mbox_msg *msg; /* the message it runs for, owned; NULL: slot free */
	pid_t pid;     /* 0 once reaped */
	int status;    /* wait status, once reaped */
	int in_fd;     /* write end of its stdin, -1 once all written */
	size_t in_off; /* payload bytes written so far */
	int out_fd;    /* read ends when capturing, else -1 */
	int err_fd;
	ChildBuf out, err;
	int pfd_in, pfd_out, pfd_err; /* indices in the poll array, or -1 */
	int64_t touch_at_ns;	      /* CLOCK_REALTIME: next lease touch */
	bool lease_lost;	      /* a touch was refused: stop touching */
} Child;

/* Where the child's output goes: capture (out_max/err_max bytes kept)
 * or, when capture is false, our own stdout and stderr. */
typedef struct ChildIo {
	bool capture;
	size_t out_max, err_max;
	const char *socket; /* exported as MBOX_SOCKET when not NULL */
} ChildIo;

/*
 * child_start - run argv (argv[0] looked up in PATH) for msg, which the
 * Child takes (freed by child_clear, also when this fails). The command
 * gets the payload on stdin and MBOX_ID, MBOX_MAILBOX, MBOX_DELIVERIES,
 * MBOX_PRIORITY, MBOX_SENDER_{PID,UID,GID,NAME} and MBOX_HEADER_<KEY>
 * (KEY upper-cased, other than A-Z 0-9 turned into '_') in its
 * environment. Returns 0, or a negative errno (fork or pipe failed).
 * A command that cannot be executed exits 127 after saying why.
 */
int child_start(Child *ch, char *const *argv, mbox_msg *msg, const ChildIo *io);

/* Append the fds to poll (at most 3) to pfds at *n, and remember where. */
void child_poll_add(Child *ch, struct pollfd *pfds, size_t *n);
/* Write more of the payload, read output: what the poll said. */
void child_poll_handle(Child *ch, const struct pollfd *pfds);
/* Reap it if it ended (never blocks). Returns true when it just did. */
bool child_reap(Child *ch);
/* Ended and its captured output read to the end. */
bool child_done(const Child *ch);
/* Its exit status, or 128 + N when signal N killed it. */
int child_exit_code(const Child *ch);
/* Kill-free cleanup of a done (or never started) child: close fds, free
 * the message and the buffers; the slot is free again. */
void child_clear(Child *ch);

/*
 * child_find_cmd - whether cmd can be executed as execvp would find it.
 * Returns 0, or -ENOENT / -EACCES.
 */
int child_find_cmd(const char *cmd);

#endif
