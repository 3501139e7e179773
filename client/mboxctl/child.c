/*
 * child.c - run one command for one message (see child.h).
 *
 * Every pipe is O_CLOEXEC so that a command never inherits another
 * command's pipe ends (which would keep that command's stdin or stdout
 * from ever reaching EOF). Our ends are non-blocking: a payload of many
 * MiB that the command reads slowly, or not at all, must not stall the
 * loop that touches the leases of the other commands.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/mboxctl/child.h"

extern char **environ;

#define CHILD_READ_CHUNK 65536

static void
fd_close(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void
env_u64(const char *name, uint64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	setenv(name, buf, 1);
}

/* In the child: drop inherited MBOX_HEADER_* (a worker run by a worker
 * must not see its parent's headers as its own), then set ours. */
static void
env_set_msg(const mbox_msg *msg, const ChildIo *io)
{
	char name[256];
	size_t i, n, k;

	for (;;) {
		char **e, *var;

		for (e = environ; *e; e++)
			if (strncmp(*e, "MBOX_HEADER_", 12) == 0)
				break;
		if (!*e)
			break;
		/* The whole name, however long: a cut one would not match
		 * and this loop would find the same variable forever. */
		var = strndup(*e, strcspn(*e, "="));
		if (!var || unsetenv(var) < 0) {
			free(var);
			break;
		}
		free(var);
	}
	unsetenv("MBOX_HANDOFF");
	if (io->socket)
		setenv("MBOX_SOCKET", io->socket, 1);
	env_u64("MBOX_ID", mbox_msg_id(msg));
	setenv("MBOX_MAILBOX", mbox_msg_mailbox(msg), 1);
	env_u64("MBOX_DELIVERIES", mbox_msg_deliveries(msg));
	env_u64("MBOX_PRIORITY", mbox_msg_priority(msg));
	env_u64("MBOX_SENDER_PID", (uint64_t)mbox_msg_sender_pid(msg));
	env_u64("MBOX_SENDER_UID", (uint64_t)mbox_msg_sender_uid(msg));
	env_u64("MBOX_SENDER_GID", (uint64_t)mbox_msg_sender_gid(msg));
	setenv("MBOX_SENDER_NAME", mbox_msg_sender_name(msg), 1);
	n = mbox_msg_header_count(msg);
	for (i = 0; i < n; i++) {
		const char *key, *value;
		size_t len;

		if (mbox_msg_header_at(msg, i, &key, &value) < 0)
			continue;
		len = strlen(key);
		if (len > sizeof(name) - 13)
			len = sizeof(name) - 13;
		memcpy(name, "MBOX_HEADER_", 12);
		for (k = 0; k < len; k++) {
			unsigned char ch = (unsigned char)key[k];

			name[12 + k] = isalnum(ch) && ch < 0x80
					       ? (char)toupper(ch)
					       : '_';
		}
		name[12 + len] = '\0';
		setenv(name, value, 1);
	}
}

/*
 * In the child, after fork: wire the fds, restore signals, exec. The
 * command dies with the mboxctl that runs it (kill -9 included): its
 * message goes to the next worker at once, and must not be worked on
 * twice at the same time.
 */
static void __attribute__((noreturn))
child_exec(char *const *argv, const mbox_msg *msg, const ChildIo *io, int in_rd,
	   int out_wr, int err_wr, pid_t parent)
{
	sigset_t none;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(127);
	if (dup2(in_rd, STDIN_FILENO) < 0 ||
	    (out_wr >= 0 && dup2(out_wr, STDOUT_FILENO) < 0) ||
	    (err_wr >= 0 && dup2(err_wr, STDERR_FILENO) < 0))
		_exit(127);
	signal(SIGPIPE, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	env_set_msg(msg, io);
	execvp(argv[0], argv);
	fprintf(stderr, "mboxctl: cannot run %s: %s\n", argv[0],
		strerror(errno));
	_exit(errno == ENOENT ? 127 : 126);
}

static int
pipe_nb(int p[2], int our_end)
{
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	if (fcntl(p[our_end], F_SETFL, O_NONBLOCK) < 0) {
		int e = -errno;

		close(p[0]);
		close(p[1]);
		return e;
	}
	return 0;
}

int
child_start(Child *ch, char *const *argv, mbox_msg *msg, const ChildIo *io)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
	size_t len;
	pid_t pid, parent;
	int r;

	*ch = (Child){.msg = msg, .in_fd = -1, .out_fd = -1, .err_fd = -1};
	ch->out.max = io->out_max;
	ch->err.max = io->err_max;
	r = pipe_nb(in, 1);
	if (r == 0 && io->capture)
		r = pipe_nb(out, 0);
	if (r == 0 && io->capture)
		r = pipe_nb(err, 0);
	if (r < 0)
		goto fail;
	fflush(NULL); /* nothing buffered may be written twice */
	parent = getpid();
	pid = fork();
	if (pid < 0) {
		r = -errno;
		goto fail;
	}
	if (pid == 0)
		child_exec(argv, msg, io, in[0], out[1], err[1], parent);
	ch->pid = pid;
	close(in[0]);
	ch->in_fd = in[1];
	if (io->capture) {
		close(out[1]);
		close(err[1]);
		ch->out_fd = out[0];
		ch->err_fd = err[0];
	}
	/* An empty payload: EOF at once. */
	mbox_msg_data(msg, &len);
	if (len == 0)
		fd_close(&ch->in_fd);
	return 0;
fail:
	fd_close(&in[0]);
	fd_close(&in[1]);
	fd_close(&out[0]);
	fd_close(&out[1]);
	fd_close(&err[0]);
	fd_close(&err[1]);
	return r;
}

static void
poll_add(int fd, short events, int *idx, struct pollfd *pfds, size_t *n)
{
	*idx = -1;
	if (fd < 0)
		return;
	pfds[*n] = (struct pollfd){.fd = fd, .events = events};
	*idx = (int)(*n)++;
}

void
child_poll_add(Child *ch, struct pollfd *pfds, size_t *n)
{
	poll_add(ch->in_fd, POLLOUT, &ch->pfd_in, pfds, n);
	poll_add(ch->out_fd, POLLIN, &ch->pfd_out, pfds, n);
	poll_add(ch->err_fd, POLLIN, &ch->pfd_err, pfds, n);
}

static void
child_write_in(Child *ch)
{
	size_t len;
	const uint8_t *data = mbox_msg_data(ch->msg, &len);

	while (ch->in_off < len) {
		ssize_t w =
			write(ch->in_fd, data + ch->in_off, len - ch->in_off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			return;
		if (w < 0) /* EPIPE: it does not want the rest */
			break;
		ch->in_off += (size_t)w;
	}
	fd_close(&ch->in_fd);
}

static void
child_read(int *fd, ChildBuf *b)
{
	uint8_t tmp[CHILD_READ_CHUNK];

	for (;;) {
		ssize_t n = read(*fd, tmp, sizeof(tmp));
		size_t keep;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0)
			break;
		keep = (size_t)n;
		if (b->len + keep > b->max) {
			keep = b->max - b->len;
			b->overflow = true;
		}
		if (b->len + keep > b->cap) {
			size_t cap = b->cap ? b->cap : CHILD_READ_CHUNK;
			uint8_t *p;

			while (cap < b->len + keep)
				cap *= 2;
			p = realloc(b->data, cap);
			if (!p) {
				b->overflow = true;
				continue; /* drop it, keep draining */
			}
			b->data = p;
			b->cap = cap;
		}
		memcpy(b->data + b->len, tmp, keep);
		b->len += keep;
	}
	fd_close(fd);
}

void
child_poll_handle(Child *ch, const struct pollfd *pfds)
{
	if (ch->pfd_in >= 0 && ch->in_fd >= 0 && pfds[ch->pfd_in].revents)
		child_write_in(ch);
	if (ch->pfd_out >= 0 && ch->out_fd >= 0 && pfds[ch->pfd_out].revents)
		child_read(&ch->out_fd, &ch->out);
	if (ch->pfd_err >= 0 && ch->err_fd >= 0 && pfds[ch->pfd_err].revents)
		child_read(&ch->err_fd, &ch->err);
	ch->pfd_in = ch->pfd_out = ch->pfd_err = -1;
}

bool
child_reap(Child *ch)
{
	pid_t r;

	if (ch->pid <= 0)
		return false;
	do
		r = waitpid(ch->pid, &ch->status, WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		return false;
	if (r < 0) /* ECHILD: someone else reaped it; call it failed */
		ch->status = 127 << 8;
	ch->pid = 0;
	/* What it did not read, it never will. */
	fd_close(&ch->in_fd);
	return true;
}

bool
child_done(const Child *ch)
{
	return ch->msg && ch->pid == 0 && ch->out_fd < 0 && ch->err_fd < 0;
}

int
child_exit_code(const Child *ch)
{
	if (WIFEXITED(ch->status))
		return WEXITSTATUS(ch->status);
	if (WIFSIGNALED(ch->status))
		return 128 + WTERMSIG(ch->status);
	return 1;
}

void
child_clear(Child *ch)
{
	fd_close(&ch->in_fd);
	fd_close(&ch->out_fd);
	fd_close(&ch->err_fd);
	free(ch->out.data);
	free(ch->err.data);
	mbox_msg_free(ch->msg);
	*ch = (Child){.in_fd = -1, .out_fd = -1, .err_fd = -1};
}

static int
can_exec(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -ENOENT;
	if (S_ISDIR(st.st_mode) || access(path, X_OK) < 0)
		return -EACCES;
	return 0;
}

int
child_find_cmd(const char *cmd)
{
	const char *path = getenv("PATH"), *p;
	char buf[4096];
	int r = -ENOENT;

	if (strchr(cmd, '/'))
		return can_exec(cmd);
	if (!path)
		path = "/bin:/usr/bin";
	for (p = path;; p++) {
		size_t n = strcspn(p, ":");
		int x;

		if (n == 0)
			snprintf(buf, sizeof(buf), "./%s", cmd);
		else
			snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, p, cmd);
		x = can_exec(buf);
		if (x == 0)
			return 0;
		if (x == -EACCES)
			r = x;
		p += n;
		if (!*p)
			break;
	}
	return r;
}
