/*
 * bench-cli.c - mboxctl against libmbox (see bench-cli.h).
 *
 * The children are found by pid and waited for with a deadline; one that
 * overruns it is killed by pid, and the run fails.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-cli.h"
#include "bench-util.h"

#define LIB_POST_BATCH 512u  /* what mboxctl post --lines sends at once */
#define LIB_RECV_BATCH 1024u /* what mboxctl recv asks for at once */

/* fork, stdin from in (or /dev/null), stdout to out (or /dev/null),
 * exec argv (PATH searched) with env. The pid, or -1. */
static pid_t
spawn(char *const argv[], char **env, int in, int out)
{
	pid_t parent = getpid(), pid = fork();

	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the bench */
		if (getppid() != parent)
			_exit(1);

		dup2(in >= 0 ? in : null, 0);
		dup2(out >= 0 ? out : null, 1);
		environ = env;
		execvp(argv[0], argv);
		fprintf(stderr, "mbox-bench: exec %s: %s\n", argv[0],
			strerror(errno));
		_exit(127);
	}
	if (pid < 0)
		fprintf(stderr, "mbox-bench: fork: %s\n", strerror(errno));
	return pid;
}

/* Wait for pids[0..n) until deadline (now_s()); kill the rest after it.
 * 0 when all exited 0. */
static int
wait_children(pid_t *pids, size_t n, double deadline, const char *what)
{
	size_t left = n;
	int err = 0, status;

	while (left && now_s() < deadline) {
		for (size_t i = 0; i < n; i++) {
			if (pids[i] <= 0 ||
			    waitpid(pids[i], &status, WNOHANG) != pids[i])
				continue;
			pids[i] = 0;
			left--;
			if (!WIFEXITED(status) || WEXITSTATUS(status)) {
				fprintf(stderr,
					"mbox-bench: %s: a child ended with "
					"status %d\n",
					what, status);
				err = -ECHILD;
			}
		}
		if (left)
			sleep_ms(2);
	}
	if (!left)
		return err;
	fprintf(stderr, "mbox-bench: %s: still running after its deadline\n",
		what);
	for (size_t i = 0; i < n; i++) {
		if (pids[i] > 0) {
			kill(pids[i], SIGKILL);
			waitpid(pids[i], &status, 0);
		}
	}
	return -ETIMEDOUT;
}

/* seq lines | mboxctl post --lines mailbox > /dev/null */
static int
cli_post(const char *mboxctl, char **env, const char *mailbox, size_t lines,
	 double deadline)
{
	char count[32];
	char *seq[] = {"seq", count, NULL};
	char *post[] = {(char *)mboxctl, "post", "--lines", (char *)mailbox,
			NULL};
	pid_t pids[2] = {-1, -1};
	int fd[2];

	snprintf(count, sizeof(count), "%zu", lines);
	if (pipe2(fd, O_CLOEXEC) < 0)
		return -errno;
	pids[0] = spawn(seq, env, -1, fd[1]);
	if (pids[0] > 0)
		pids[1] = spawn(post, env, fd[0], -1);
	close(fd[0]);
	close(fd[1]);
	return wait_children(pids, 2, deadline, "seq | mboxctl post --lines");
}

/* mboxctl recv mailbox -n lines > /dev/null */
static int
cli_recv(const char *mboxctl, char **env, const char *mailbox, size_t lines,
	 double deadline)
{
	char count[32];
	char *recv[] = {(char *)mboxctl, "recv", (char *)mailbox, "-n",
			count,		 NULL};
	pid_t pid;

	snprintf(count, sizeof(count), "%zu", lines);
	pid = spawn(recv, env, -1, -1);
	return wait_children(&pid, 1, deadline, "mboxctl recv");
}

/* The numbers 1..lines as text, posted LIB_POST_BATCH at a time. */
static int
lib_post(mbox *m, const char *mailbox, size_t lines)
{
	mbox_post_item items[LIB_POST_BATCH];
	char text[LIB_POST_BATCH][24];
	size_t next = 1, k;
	int r = 0;

	while (!r && next <= lines) {
		for (k = 0; k < LIB_POST_BATCH && next <= lines; k++, next++) {
			items[k].data = text[k];
			items[k].len = (size_t)snprintf(
				text[k], sizeof(text[k]), "%zu", next);
			items[k].opts = NULL;
		}
		r = mbox_post_batch(m, mailbox, items, k, NULL);
	}
	if (r < 0)
		fprintf(stderr, "mbox-bench: cli: library post: %s (%s)\n",
			mbox_strerror(r), mbox_last_error(m));
	return r;
}

/* Take and ack lines messages, LIB_RECV_BATCH at a time. */
static int
lib_recv(mbox *m, const char *mailbox, size_t lines)
{
	mbox_msg *msgs[LIB_RECV_BATCH];
	uint64_t ids[LIB_RECV_BATCH];
	size_t done = 0, n, i, want;
	int r = 0;

	while (!r && done < lines) {
		want = lines - done < LIB_RECV_BATCH ? lines - done
						     : LIB_RECV_BATCH;
		r = mbox_recv(m, mailbox, want, 5000, 0, msgs, &n);
		if (!r && n == 0)
			r = -ETIMEDOUT;
		for (i = 0; !r && i < n; i++) {
			ids[i] = mbox_msg_id(msgs[i]);
			mbox_msg_free(msgs[i]);
		}
		if (!r)
			r = mbox_ack(m, ids, n);
		done += r ? 0 : n;
	}
	if (r < 0)
		fprintf(stderr,
			"mbox-bench: cli: library recv after %zu of %zu: %s "
			"(%s)\n",
			done, lines, mbox_strerror(r), mbox_last_error(m));
	return r;
}

/* mboxctl recv must have left nothing behind for the library's run. */
static int
check_empty(mbox *m, const char *mailbox)
{
	mbox_msg *msg;
	size_t n = 0;
	int r = mbox_recv(m, mailbox, 1, 0, 0, &msg, &n);

	if (r < 0 || n == 0)
		return r;
	mbox_msg_free(msg);
	fprintf(stderr, "mbox-bench: cli: mboxctl recv left messages behind\n");
	return -EAGAIN;
}

int
bench_cli(const char *mboxctl, const char *sock, const char *mailbox,
	  size_t lines, CliResult *out)
{
	char var[PATH_MAX + 16], what[WHAT_MAX];
	/* Generous: a slow machine under a sanitizer still ends. */
	double limit = 60 + (double)lines / 2000, t0;
	char **env;
	mbox *m = NULL;
	int r;

	if (access(mboxctl, X_OK) < 0) {
		fprintf(stderr,
			"mbox-bench: cannot run %s: %s (use --mboxctl PATH or "
			"$MBOXCTL)\n",
			mboxctl, strerror(errno));
		return -ENOENT;
	}
	snprintf(var, sizeof(var), "MBOX_SOCKET=%s", sock);
	env = bench_env("MBOX_SOCKET=", var);
	if (!env)
		return -ENOMEM;
	r = connect_or_say(&m, sock, what, sizeof(what));
	if (r < 0)
		fprintf(stderr, "mbox-bench: %s\n", what);
	t0 = now_s();
	if (!r)
		r = cli_post(mboxctl, env, mailbox, lines, t0 + limit);
	out->cli_post = now_s() - t0;
	t0 = now_s();
	if (!r)
		r = cli_recv(mboxctl, env, mailbox, lines, t0 + limit);
	out->cli_recv = now_s() - t0;
	if (!r)
		r = check_empty(m, mailbox);
	t0 = now_s();
	if (!r)
		r = lib_post(m, mailbox, lines);
	out->lib_post = now_s() - t0;
	t0 = now_s();
	if (!r)
		r = lib_recv(m, mailbox, lines);
	out->lib_recv = now_s() - t0;
	mbox_close(m);
	free(env);
	return r;
}
