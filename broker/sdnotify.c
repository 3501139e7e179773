/*
 * sdnotify.c - sd_notify, sd_listen_fds and the watchdog, without
 * libsystemd (see sdnotify.h for why).
 *
 * Invariants: nothing here allocates except the optional fd names; no
 * function keeps state between calls; every fd opened is closed before
 * returning.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "broker/sdnotify.h"

/* Strict decimal: digits only, no sign or blanks, no overflow. */
static int
parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!s || !*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

/* A variable naming a pid is ours if it parses and equals getpid(). */
static int
env_pid_is_ours(const char *value)
{
	uint64_t pid;

	if (parse_u64(value, &pid) < 0 || pid == 0 || pid > INT_MAX)
		return -EINVAL;
	return (pid_t)pid == getpid();
}

static int
notify_address(const char *addr, struct sockaddr_un *sa, socklen_t *len)
{
	size_t n = strlen(addr);

	*sa = (struct sockaddr_un){.sun_family = AF_UNIX};
	if (addr[0] != '/' && addr[0] != '@')
		/* "vsock:CID:PORT" exists for VMs; mboxd never runs there. */
		return strchr(addr, ':') ? -EAFNOSUPPORT : -EINVAL;
	if (n < 2 || n > sizeof(sa->sun_path) - (addr[0] == '/'))
		return -EINVAL;
	memcpy(sa->sun_path, addr, n);
	if (addr[0] == '@') {
		/* Abstract: a leading NUL, and the length counts exactly the
		 * name (no terminator), or the kernel sees another name. */
		sa->sun_path[0] = '\0';
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else {
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
				   1);
	}
	return 0;
}

int
sdnotify_send_to(const char *addr, const char *state)
{
	struct sockaddr_un sa;
	socklen_t salen;
	ssize_t n;
	int fd, r;

	if (!addr || !*addr)
		return 0;
	if (!state || !*state)
		return -EINVAL;
	r = notify_address(addr, &sa, &salen);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	n = sendto(fd, state, strlen(state), MSG_NOSIGNAL,
		   (struct sockaddr *)&sa, salen);
	r = n < 0 ? -errno : (size_t)n != strlen(state) ? -EMSGSIZE : 0;
	close(fd);
	return r;
}

int
sdnotify_send(const char *state)
{
	return sdnotify_send_to(getenv("NOTIFY_SOCKET"), state);
}

int
sdnotify_sendf(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -EMSGSIZE;
	return sdnotify_send(buf);
}

void
sdnotify_names_free(char **names)
{
	if (!names)
		return;
	for (char **p = names; *p; p++)
		free(*p);
	free(names);
}

/*
 * Split LISTEN_FDNAMES (may be NULL) into n names. systemd sets exactly
 * one name per fd; a different count means the variables do not belong
 * together, which sd_listen_fds_with_names also refuses.
 */
static int
split_names(const char *value, int n, char ***namesp)
{
	char **names = calloc((size_t)n + 1, sizeof(*names));
	const char *p = value;
	int i;

	if (!names)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		size_t len = p ? strcspn(p, ":") : 0;

		names[i] = p ? strndup(p, len) : strdup("unknown");
		if (!names[i])
			goto nomem;
		if (p)
			p = p[len] == ':' ? p + len + 1 : NULL;
	}
	if (p) {
		sdnotify_names_free(names);
		return -EINVAL;
	}
	*namesp = names;
	return 0;
nomem:
	sdnotify_names_free(names);
	return -ENOMEM;
}

static int
listen_fds_parse(char ***namesp)
{
	const char *pid = getenv("LISTEN_PID");
	const char *fds = getenv("LISTEN_FDS");
	uint64_t n;
	int r;

	if (!pid || !fds)
		return 0;
	r = env_pid_is_ours(pid);
	if (r <= 0)
		return r;
	if (parse_u64(fds, &n) < 0 ||
	    n > (uint64_t)(INT_MAX - SDNOTIFY_LISTEN_FDS_START))
		return -EINVAL;
	for (int fd = SDNOTIFY_LISTEN_FDS_START;
	     fd < SDNOTIFY_LISTEN_FDS_START + (int)n; fd++) {
		int flags = fcntl(fd, F_GETFD);

		if (flags < 0)
			return -errno; /* EBADF: the fd was not passed */
		if (!(flags & FD_CLOEXEC) &&
		    fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
			return -errno;
	}
	if (namesp && n > 0) {
		r = split_names(getenv("LISTEN_FDNAMES"), (int)n, namesp);
		if (r < 0)
			return r;
	}
	return (int)n;
}

int
sdnotify_listen_fds(char ***namesp)
{
	int r;

	if (namesp)
		*namesp = NULL;
	r = listen_fds_parse(namesp);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return r;
}

static void say(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
say(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (!why || whylen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

static int
sockopt_int(int fd, int opt, int *v)
{
	socklen_t len = sizeof(*v);

	return getsockopt(fd, SOL_SOCKET, opt, v, &len) < 0 ? -errno : 0;
}

static const char *
type_name(int type)
{
	switch (type) {
	case SOCK_STREAM:
		return "a stream socket";
	case SOCK_DGRAM:
		return "a datagram socket";
	case SOCK_SEQPACKET:
		return "a seqpacket socket";
	default:
		return "a socket of another type";
	}
}

int
sdnotify_check_listener(int fd, char *why, size_t whylen)
{
	struct stat st;
	int domain, type, listening, r;

	if (fstat(fd, &st) < 0) {
		r = -errno;
		say(why, whylen, "fd %d: %s", fd, strerror(errno));
		return r;
	}
	if (!S_ISSOCK(st.st_mode)) {
		say(why, whylen, "fd %d is not a socket", fd);
		return -ENOTSOCK;
	}
	r = sockopt_int(fd, SO_DOMAIN, &domain);
	if (r == 0)
		r = sockopt_int(fd, SO_TYPE, &type);
	if (r == 0)
		r = sockopt_int(fd, SO_ACCEPTCONN, &listening);
	if (r < 0) {
		say(why, whylen, "fd %d: getsockopt: %s", fd, strerror(-r));
		return r;
	}
	if (domain != AF_UNIX) {
		say(why, whylen,
		    "fd %d is not an AF_UNIX socket (family %d): the .socket "
		    "unit must listen on a file system path",
		    fd, domain);
		return -EAFNOSUPPORT;
	}
	if (type != SOCK_SEQPACKET) {
		say(why, whylen,
		    "fd %d is %s, not a seqpacket one: use "
		    "ListenSequentialPacket= in the .socket unit",
		    fd, type_name(type));
		return -ESOCKTNOSUPPORT;
	}
	if (!listening) {
		say(why, whylen,
		    "fd %d is a seqpacket socket that is not listening "
		    "(Accept=no is needed in the .socket unit)",
		    fd);
		return -EINVAL;
	}
	return 0;
}

int
sdnotify_take_listener(int fd, char *why, size_t whylen)
{
	int r = sdnotify_check_listener(fd, why, whylen);
	int fl;

	if (r < 0)
		return r;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		r = -errno;
		say(why, whylen, "fd %d: fcntl: %s", fd, strerror(errno));
		return r;
	}
	return 0;
}

int
sdnotify_socket_path(int fd, char *buf, size_t size)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);
	size_t n;

	memset(&sa, 0, sizeof(sa));
	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return -errno;
	if (sa.sun_family != AF_UNIX)
		return -EAFNOSUPPORT;
	if (len <= offsetof(struct sockaddr_un, sun_path))
		return -ENOENT;
	n = len - offsetof(struct sockaddr_un, sun_path);
	if (sa.sun_path[0] == '\0') {
		if (n < 2 || n + 1 > size)
			return n < 2 ? -ENOENT : -ENAMETOOLONG;
		buf[0] = '@';
		memcpy(buf + 1, sa.sun_path + 1, n - 1);
		buf[n] = '\0';
		return 0;
	}
	n = strnlen(sa.sun_path, n);
	if (n + 1 > size)
		return -ENAMETOOLONG;
	memcpy(buf, sa.sun_path, n);
	buf[n] = '\0';
	return 0;
}

int
sdnotify_watchdog_usec(uint64_t *usec)
{
	const char *s = getenv("WATCHDOG_USEC");
	const char *pid = getenv("WATCHDOG_PID");
	uint64_t v;
	int r;

	if (!s || !*s)
		return 0;
	if (pid && *pid) {
		r = env_pid_is_ours(pid);
		if (r <= 0)
			return r;
	}
	if (parse_u64(s, &v) < 0 || v == 0)
		return -EINVAL;
	*usec = v;
	return 1;
}

int
sdnotify_journal_stderr(void)
{
	const char *s = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int end = 0;

	if (!s || sscanf(s, "%llu:%llu%n", &dev, &ino, &end) != 2 ||
	    s[end] != '\0')
		return 0;
	if (fstat(STDERR_FILENO, &st) < 0)
		return 0;
	return (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}
