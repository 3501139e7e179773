/*
 * connect.c - a libmbox handle's life: find the socket, connect, agree on
 * the protocol version and limits (HELLO), and close. Also PING, the one
 * request that only asks whether the connection still works.
 *
 * A handle is only handed out after HELLO succeeded: every other call may
 * rely on max_frame and max_msg_size being the broker's.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "client/libmbox-int.h"
#include "client/proto.h"

/* Before HELLO tells us MAX_FRAME, accept what one datagram holds. */
#define HELLO_MAX_BODY (MBOX_PROTO_DGRAM_MAX - MBOX_PROTO_HEADER_SIZE)

/* *shared: the path is the fallback under the shared /tmp. */
static int
default_socket_path(char *buf, size_t size, bool *shared)
{
	const char *env = getenv("MBOX_SOCKET");
	int n;

	*shared = false;
	if (!buf)
		return -EINVAL;
	if (env && *env)
		n = snprintf(buf, size, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(buf, size, "/run/mbox/mbox.sock");
	else if ((env = getenv("XDG_RUNTIME_DIR")) && *env == '/')
		n = snprintf(buf, size, "%s/mbox/mbox.sock", env);
	else {
		n = snprintf(buf, size, "/tmp/mbox-%lu/mbox.sock",
			     (unsigned long)geteuid());
		*shared = true;
	}
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return 0;
}

int
mbox_default_socket_path(char *buf, size_t size)
{
	bool shared;

	return default_socket_path(buf, size, &shared);
}

/*
 * Anyone may make /tmp/mbox-$UID before us and listen in it, posing as
 * our broker to read what we post. mboxd refuses to listen there unless
 * the directory is ours alone; we refuse to connect on the same terms.
 * A missing directory is left to connect() (no broker: ENOENT).
 */
static int
check_shared_dir(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct stat st;
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	if (lstat(dir, &st) < 0)
		return 0;
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & (S_IWGRP | S_IWOTH)))
		return -EPERM;
	return 0;
}

/*
 * connect() on a blocking AF_UNIX socket sleeps while the listener's
 * backlog is full, and a signal can interrupt it. Linux leaves the socket
 * unconnected then, so trying again is right; EISCONN / EALREADY cover
 * kernels that kept the attempt going.
 */
static int
sock_connect(int fd, const struct sockaddr_un *sa, socklen_t salen)
{
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		int err = 0;
		socklen_t elen = sizeof(err);

		if (connect(fd, (const struct sockaddr *)sa, salen) == 0)
			return 0;
		if (errno == EISCONN)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EALREADY && errno != EINPROGRESS)
			return -errno;
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			return -errno;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
			return -errno;
		if (err)
			return -err;
	}
}

static int
connect_hello(mbox *m)
{
	ProtoFields f;
	Frame *fr = NULL;
	uint64_t version, max_msg, max_frame;
	uint32_t id;
	int r;

	id = core_begin(m, MBOX_OP_HELLO);
	proto_put_u64(&m->tx, MBOX_TAG_VERSION_MIN, MBOX_PROTO_VERSION);
	proto_put_u64(&m->tx, MBOX_TAG_VERSION_MAX, MBOX_PROTO_VERSION);
	r = core_call(m, id, MBOX_OP_HELLO, &fr, &f,
		      PROTO_BIT(MBOX_TAG_VERSION) |
			      PROTO_BIT(MBOX_TAG_MAX_MSG_SIZE) |
			      PROTO_BIT(MBOX_TAG_MAX_FRAME));
	if (r < 0)
		return r;
	version = proto_u64(&f, MBOX_TAG_VERSION, 0);
	max_msg = proto_u64(&f, MBOX_TAG_MAX_MSG_SIZE, 0);
	max_frame = proto_u64(&f, MBOX_TAG_MAX_FRAME, 0);
	core_frame_free(fr);
	if (version != MBOX_PROTO_VERSION) {
		error_set(m, "the broker chose protocol version %llu",
			  (unsigned long long)version);
		return -EPROTONOSUPPORT;
	}
	if (max_frame == 0) {
		error_set(m, "the broker announced MAX_FRAME 0");
		return -EPROTO;
	}
	/* body_len is a u32: nothing larger can ever arrive. */
	if (max_frame > UINT32_MAX)
		max_frame = UINT32_MAX;
	if (max_msg > max_frame)
		max_msg = max_frame;
	m->max_msg_size = (size_t)max_msg;
	m->max_frame = (size_t)max_frame;
	/* Between frames now: the assembler can take its real limit. */
	proto_asm_release(&m->rx);
	proto_asm_init(&m->rx, m->max_frame);
	return 0;
}

int
mbox_connect(mbox **out, const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char dflt[sizeof(sa.sun_path)];
	size_t len;
	mbox *m = NULL;
	int r;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!path) {
		bool shared;

		r = default_socket_path(dflt, sizeof(dflt), &shared);
		if (r < 0)
			return r;
		if (shared && (r = check_shared_dir(dflt)) < 0)
			return r;
		path = dflt;
	}
	len = strlen(path);
	if (len == 0)
		return -EINVAL;
	if (len >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, len + 1);

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->fd = -1;
	proto_writer_init(&m->tx);
	proto_asm_init(&m->rx, HELLO_MAX_BODY);
	/* Until HELLO says otherwise, send nothing the broker might drop. */
	m->max_frame = HELLO_MAX_BODY;
	m->dgram = malloc(MBOX_PROTO_DGRAM_MAX);
	if (!m->dgram) {
		r = -ENOMEM;
		goto fail;
	}
	m->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (m->fd < 0) {
		r = -errno;
		goto fail;
	}
	r = sock_connect(
		m->fd, &sa,
		(socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1));
	if (r < 0)
		goto fail;
	r = connect_hello(m);
	if (r < 0)
		goto fail;
	m->error[0] = '\0';
	*out = m;
	return 0;

fail:
	mbox_close(m);
	return r;
}

void
mbox_close(mbox *m)
{
	if (!m)
		return;
	if (m->fd >= 0)
		close(m->fd);
	core_release(m);
	free(m->reply_box);
	free(m);
}

int
mbox_fd(const mbox *m)
{
	return m ? m->fd : -EINVAL;
}

size_t
mbox_max_msg_size(const mbox *m)
{
	return m ? m->max_msg_size : 0;
}

int
mbox_ping(mbox *m)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	r = core_enter(m);
	if (r < 0)
		return r;
	id = core_begin(m, MBOX_OP_PING);
	r = core_call(m, id, MBOX_OP_PING, &fr, &f, 0);
	core_frame_free(fr);
	return r;
}
