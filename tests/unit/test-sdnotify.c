/*
 * test-sdnotify.c - unit tests of the systemd protocols (broker/sdnotify.c).
 *
 * The manager's side is played by the test: a datagram socket (on a path
 * in a temporary directory, or an abstract name unique to this process)
 * stands in for NOTIFY_SOCKET, and sockets dup2'ed onto fd 3 and 4 stand in
 * for what systemd passes. Whatever was on fds 3 and 4 (make's jobserver
 * pipes, say) is saved and put back.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker/sdnotify.h"

static void
unset_all(void)
{
	static const char *const vars[] = {
		"NOTIFY_SOCKET",  "LISTEN_PID",	   "LISTEN_FDS",
		"LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID",
		"JOURNAL_STREAM",
	};

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
}

static int
setup(void **state)
{
	(void)state;
	unset_all();
	return 0;
}

/* A bound datagram socket playing systemd's notify socket. */
typedef struct Manager {
	char dir[64];
	char addr[128]; /* as NOTIFY_SOCKET spells it */
	int fd;
} Manager;

static void
manager_open(Manager *m, int abstract)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	socklen_t len;

	memset(m, 0, sizeof(*m));
	m->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(m->fd >= 0);
	if (abstract) {
		snprintf(m->addr, sizeof(m->addr), "@mboxd-test-sdnotify-%ld",
			 (long)getpid());
		memcpy(sa.sun_path, m->addr, strlen(m->addr));
		sa.sun_path[0] = '\0';
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
				  strlen(m->addr));
	} else {
		snprintf(m->dir, sizeof(m->dir), "/tmp/test-sdnotify-XXXXXX");
		assert_non_null(mkdtemp(m->dir));
		snprintf(m->addr, sizeof(m->addr), "%s/notify", m->dir);
		memcpy(sa.sun_path, m->addr, strlen(m->addr) + 1);
		len = sizeof(sa);
	}
	assert_int_equal(bind(m->fd, (struct sockaddr *)&sa, len), 0);
}

static void
manager_close(Manager *m)
{
	close(m->fd);
	if (m->dir[0]) {
		assert_int_equal(unlink(m->addr), 0);
		assert_int_equal(rmdir(m->dir), 0);
	}
}

/* The next datagram must be exactly want (it is already queued: AF_UNIX
 * datagrams are delivered by sendto itself). */
static void
expect_datagram(const Manager *m, const char *want)
{
	char buf[2048];
	ssize_t n = recv(m->fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

	assert_true(n >= 0);
	buf[n] = '\0';
	assert_int_equal((size_t)n, strlen(want));
	assert_string_equal(buf, want);
}

static void
expect_nothing(const Manager *m)
{
	char buf[16];

	assert_int_equal(recv(m->fd, buf, sizeof(buf), MSG_DONTWAIT), -1);
	assert_int_equal(errno, EAGAIN);
}

static void
send_the_four(const Manager *m)
{
	assert_int_equal(sdnotify_send("READY=1"), 0);
	expect_datagram(m, "READY=1");
	assert_int_equal(
		sdnotify_sendf("STATUS=%d connections, %d messages", 3, 1200),
		0);
	expect_datagram(m, "STATUS=3 connections, 1200 messages");
	assert_int_equal(sdnotify_send("WATCHDOG=1"), 0);
	expect_datagram(m, "WATCHDOG=1");
	assert_int_equal(sdnotify_send("STOPPING=1\nSTATUS=draining"), 0);
	expect_datagram(m, "STOPPING=1\nSTATUS=draining");
	expect_nothing(m);
}

static void
test_sdnotify_unset_is_noop(void **state)
{
	(void)state;
	assert_int_equal(sdnotify_send("READY=1"), 0);
	setenv("NOTIFY_SOCKET", "", 1);
	assert_int_equal(sdnotify_send("READY=1"), 0);
	assert_int_equal(sdnotify_send_to(NULL, "READY=1"), 0);
}

static void
test_sdnotify_path_socket(void **state)
{
	Manager m;

	(void)state;
	manager_open(&m, 0);
	setenv("NOTIFY_SOCKET", m.addr, 1);
	send_the_four(&m);
	/* send_to does not need the environment. */
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(sdnotify_send_to(m.addr, "READY=1"), 0);
	expect_datagram(&m, "READY=1");
	manager_close(&m);
}

static void
test_sdnotify_abstract_socket(void **state)
{
	Manager m;

	(void)state;
	manager_open(&m, 1);
	setenv("NOTIFY_SOCKET", m.addr, 1);
	send_the_four(&m);
	manager_close(&m);
}

static void
test_sdnotify_bad_addresses(void **state)
{
	char dir[] = "/tmp/test-sdnotify-XXXXXX";
	char path[64], longer[200];

	(void)state;
	assert_int_equal(sdnotify_send_to("relative/path", "READY=1"), -EINVAL);
	assert_int_equal(sdnotify_send_to("vsock:2:1234", "READY=1"),
			 -EAFNOSUPPORT);
	assert_int_equal(sdnotify_send_to("@", "READY=1"), -EINVAL);
	memset(longer, 'x', sizeof(longer) - 1);
	longer[0] = '/';
	longer[sizeof(longer) - 1] = '\0';
	assert_int_equal(sdnotify_send_to(longer, "READY=1"), -EINVAL);
	assert_int_equal(sdnotify_send_to("/x", ""), -EINVAL);

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/none", dir);
	assert_int_equal(sdnotify_send_to(path, "READY=1"), -ENOENT);
	setenv("NOTIFY_SOCKET", path, 1);
	assert_int_equal(sdnotify_send("READY=1"), -ENOENT);
	assert_int_equal(rmdir(dir), 0);
}

/* Fds 3 and 4 as they were before the test, to be put back. */
typedef struct SavedFds {
	int copy[2];
} SavedFds;

static void
fds_save(SavedFds *s)
{
	for (int i = 0; i < 2; i++)
		s->copy[i] = fcntl(3 + i, F_DUPFD_CLOEXEC, 10);
}

static void
fds_restore(SavedFds *s)
{
	for (int i = 0; i < 2; i++) {
		if (s->copy[i] >= 0) {
			assert_int_equal(dup2(s->copy[i], 3 + i), 3 + i);
			close(s->copy[i]);
		} else {
			close(3 + i);
		}
	}
}

static int
unix_socket(int type, const char *dir, const char *name, int listening)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	if (name) {
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, name);
		assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)),
				 0);
	}
	if (listening)
		assert_int_equal(listen(fd, 8), 0);
	return fd;
}

/* Put fd on target without FD_CLOEXEC, as systemd hands it over. */
static void
pass_fd(int fd, int target)
{
	if (fd == target) {
		/* The socket landed on target itself (it was free). */
		assert_int_equal(fcntl(fd, F_SETFD, 0), 0);
		return;
	}
	assert_int_equal(dup2(fd, target), target);
	close(fd);
	assert_int_equal(fcntl(target, F_GETFD) & FD_CLOEXEC, 0);
}

static void
set_listen_env(long pid, const char *fds, const char *names)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%ld", pid);
	setenv("LISTEN_PID", buf, 1);
	setenv("LISTEN_FDS", fds, 1);
	if (names)
		setenv("LISTEN_FDNAMES", names, 1);
}

static void
assert_listen_env_gone(void)
{
	assert_null(getenv("LISTEN_PID"));
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_FDNAMES"));
}

static void
test_sdnotify_listen_fds_none(void **state)
{
	char **names = (char **)1;

	(void)state;
	assert_int_equal(sdnotify_listen_fds(NULL), 0);
	assert_int_equal(sdnotify_listen_fds(&names), 0);
	assert_null(names);
	/* Inherited from a parent that was activated: not ours. */
	set_listen_env((long)getpid() + 1, "1", "mbox");
	assert_int_equal(sdnotify_listen_fds(&names), 0);
	assert_null(names);
	assert_listen_env_gone();
	/* Malformed values are errors, and are removed all the same. */
	set_listen_env((long)getpid(), "one", NULL);
	assert_int_equal(sdnotify_listen_fds(NULL), -EINVAL);
	assert_listen_env_gone();
	setenv("LISTEN_PID", "12x", 1);
	setenv("LISTEN_FDS", "1", 1);
	assert_int_equal(sdnotify_listen_fds(NULL), -EINVAL);
	assert_listen_env_gone();
	set_listen_env((long)getpid(), "-1", NULL);
	assert_int_equal(sdnotify_listen_fds(NULL), -EINVAL);
	assert_listen_env_gone();
}

static void
test_sdnotify_listen_fds_seqpacket(void **state)
{
	char dir[] = "/tmp/test-sdnotify-XXXXXX";
	char path[64], why[256];
	char **names;
	SavedFds saved;

	(void)state;
	assert_non_null(mkdtemp(dir));
	fds_save(&saved);
	pass_fd(unix_socket(SOCK_SEQPACKET, dir, "mbox.sock", 1), 3);

	set_listen_env((long)getpid(), "1", NULL);
	assert_int_equal(sdnotify_listen_fds(&names), 1);
	assert_listen_env_gone();
	assert_non_null(names);
	assert_string_equal(names[0], "unknown");
	assert_null(names[1]);
	sdnotify_names_free(names);
	assert_true(fcntl(3, F_GETFD) & FD_CLOEXEC);

	assert_int_equal(sdnotify_check_listener(3, why, sizeof(why)), 0);
	assert_int_equal(fcntl(3, F_GETFL) & O_NONBLOCK, 0);
	assert_int_equal(sdnotify_take_listener(3, why, sizeof(why)), 0);
	assert_true(fcntl(3, F_GETFL) & O_NONBLOCK);
	assert_int_equal(sdnotify_socket_path(3, path, sizeof(path)), 0);
	assert_true(strlen(path) > strlen(dir));
	assert_memory_equal(path, dir, strlen(dir));
	assert_string_equal(path + strlen(dir), "/mbox.sock");
	assert_int_equal(sdnotify_socket_path(3, path, 8), -ENAMETOOLONG);

	/* With a name, as FileDescriptorName= sets it. */
	set_listen_env((long)getpid(), "1", "mbox");
	assert_int_equal(sdnotify_listen_fds(&names), 1);
	assert_string_equal(names[0], "mbox");
	sdnotify_names_free(names);
	/* One name too many: the variables do not belong together. */
	set_listen_env((long)getpid(), "1", "mbox:extra");
	assert_int_equal(sdnotify_listen_fds(&names), -EINVAL);
	assert_null(names);
	assert_listen_env_gone();

	fds_restore(&saved);
	snprintf(path, sizeof(path), "%s/mbox.sock", dir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

static void
test_sdnotify_listen_fds_stream_refused(void **state)
{
	char dir[] = "/tmp/test-sdnotify-XXXXXX";
	char path[64], why[256];
	char **names;
	SavedFds saved;

	(void)state;
	assert_non_null(mkdtemp(dir));
	fds_save(&saved);
	pass_fd(unix_socket(SOCK_SEQPACKET, dir, "a", 1), 3);
	pass_fd(unix_socket(SOCK_STREAM, dir, "b", 1), 4);
	set_listen_env((long)getpid(), "2", "a:b");
	assert_int_equal(sdnotify_listen_fds(&names), 2);
	assert_string_equal(names[0], "a");
	assert_string_equal(names[1], "b");
	assert_null(names[2]);
	sdnotify_names_free(names);
	assert_true(fcntl(4, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(sdnotify_check_listener(3, why, sizeof(why)), 0);
	assert_int_equal(sdnotify_check_listener(4, why, sizeof(why)),
			 -ESOCKTNOSUPPORT);
	assert_string_equal(why, "fd 4 is a stream socket, not a seqpacket "
				 "one: use ListenSequentialPacket= in the "
				 ".socket unit");
	assert_int_equal(sdnotify_take_listener(4, why, sizeof(why)),
			 -ESOCKTNOSUPPORT);
	assert_int_equal(fcntl(4, F_GETFL) & O_NONBLOCK, 0);

	/* LISTEN_FDS counting an fd that is not open. */
	close(4);
	set_listen_env((long)getpid(), "2", NULL);
	assert_int_equal(sdnotify_listen_fds(NULL), -EBADF);
	assert_listen_env_gone();

	fds_restore(&saved);
	snprintf(path, sizeof(path), "%s/a", dir);
	assert_int_equal(unlink(path), 0);
	snprintf(path, sizeof(path), "%s/b", dir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

static void
test_sdnotify_check_listener_kinds(void **state)
{
	char why[256];
	int p[2], fd;

	(void)state;
	assert_int_equal(pipe(p), 0);
	assert_int_equal(sdnotify_check_listener(p[0], why, sizeof(why)),
			 -ENOTSOCK);
	assert_non_null(strstr(why, " is not a socket"));
	close(p[0]);
	close(p[1]);
	assert_int_equal(sdnotify_check_listener(p[0], why, sizeof(why)),
			 -EBADF);

	fd = unix_socket(SOCK_SEQPACKET, NULL, NULL, 0);
	assert_int_equal(sdnotify_check_listener(fd, why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "not listening"));
	close(fd);

	fd = unix_socket(SOCK_DGRAM, NULL, NULL, 0);
	assert_int_equal(sdnotify_check_listener(fd, NULL, 0),
			 -ESOCKTNOSUPPORT);
	close(fd);

	/* An inet socket (creating one may be forbidden in a sandbox). */
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		assert_int_equal(sdnotify_check_listener(fd, why, sizeof(why)),
				 -EAFNOSUPPORT);
		assert_non_null(strstr(why, "not an AF_UNIX socket"));
		close(fd);
	}
}

static void
test_sdnotify_socket_path_abstract(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char name[64], buf[64];
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	(void)state;
	assert_true(fd >= 0);
	/* Unbound. */
	assert_int_equal(sdnotify_socket_path(fd, buf, sizeof(buf)), -ENOENT);
	snprintf(name, sizeof(name), "@mboxd-test-path-%ld", (long)getpid());
	memcpy(sa.sun_path + 1, name + 1, strlen(name) - 1);
	assert_int_equal(
		bind(fd, (struct sockaddr *)&sa,
		     (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
				 strlen(name))),
		0);
	assert_int_equal(sdnotify_socket_path(fd, buf, sizeof(buf)), 0);
	assert_string_equal(buf, name);
	close(fd);
}

static void
test_sdnotify_watchdog(void **state)
{
	char pid[32];
	uint64_t usec = 0;

	(void)state;
	assert_int_equal(sdnotify_watchdog_usec(&usec), 0);
	setenv("WATCHDOG_USEC", "30000000", 1);
	assert_int_equal(sdnotify_watchdog_usec(&usec), 1);
	assert_int_equal(usec, 30000000);

	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	usec = 0;
	assert_int_equal(sdnotify_watchdog_usec(&usec), 1);
	assert_int_equal(usec, 30000000);
	/* For another process (we are its child): off. */
	snprintf(pid, sizeof(pid), "%ld", (long)getpid() + 1);
	setenv("WATCHDOG_PID", pid, 1);
	assert_int_equal(sdnotify_watchdog_usec(&usec), 0);
	setenv("WATCHDOG_PID", "pid", 1);
	assert_int_equal(sdnotify_watchdog_usec(&usec), -EINVAL);
	unsetenv("WATCHDOG_PID");

	setenv("WATCHDOG_USEC", "0", 1);
	assert_int_equal(sdnotify_watchdog_usec(&usec), -EINVAL);
	setenv("WATCHDOG_USEC", "30s", 1);
	assert_int_equal(sdnotify_watchdog_usec(&usec), -EINVAL);
	setenv("WATCHDOG_USEC", "99999999999999999999999", 1);
	assert_int_equal(sdnotify_watchdog_usec(&usec), -EINVAL);
	setenv("WATCHDOG_USEC", "", 1);
	assert_int_equal(sdnotify_watchdog_usec(&usec), 0);
}

static void
test_sdnotify_journal_stderr(void **state)
{
	struct stat st;
	char buf[64];

	(void)state;
	assert_int_equal(sdnotify_journal_stderr(), 0);
	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(buf, sizeof(buf), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", buf, 1);
	assert_int_equal(sdnotify_journal_stderr(), 1);
	snprintf(buf, sizeof(buf), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino + 1);
	setenv("JOURNAL_STREAM", buf, 1);
	assert_int_equal(sdnotify_journal_stderr(), 0);
	setenv("JOURNAL_STREAM", "garbage", 1);
	assert_int_equal(sdnotify_journal_stderr(), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_sdnotify_unset_is_noop, setup),
		cmocka_unit_test_setup(test_sdnotify_path_socket, setup),
		cmocka_unit_test_setup(test_sdnotify_abstract_socket, setup),
		cmocka_unit_test_setup(test_sdnotify_bad_addresses, setup),
		cmocka_unit_test_setup(test_sdnotify_listen_fds_none, setup),
		cmocka_unit_test_setup(test_sdnotify_listen_fds_seqpacket,
				       setup),
		cmocka_unit_test_setup(test_sdnotify_listen_fds_stream_refused,
				       setup),
		cmocka_unit_test_setup(test_sdnotify_check_listener_kinds,
				       setup),
		cmocka_unit_test_setup(test_sdnotify_socket_path_abstract,
				       setup),
		cmocka_unit_test_setup(test_sdnotify_watchdog, setup),
		cmocka_unit_test_setup(test_sdnotify_journal_stderr, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
