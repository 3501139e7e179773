/*
 * conn.c - one client connection: identity, datagram I/O, frame queue.
 *
 * Invariants: a frame is queued whole and its datagrams leave back to
 * back (the protocol forbids interleaving); out_bytes counts what is
 * queued; when it reaches max_out_bytes we stop reading the peer until the
 * queue drains, so a client that does not read cannot make us buffer
 * without bound by sending more requests. While paused (congested) it is
 * also sent nothing new that it did not ask for on the same iteration:
 * the delivery phase skips it (RECV answers wait, pushes stop) until the
 * queue drains to half, when broker_conn_wake() serves it again. So what
 * one connection costs us is bounded by max_out_bytes plus one reply or
 * one delivery frame, and a send never blocks: the socket is
 * non-blocking and what it does not take waits for EV_WRITE.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/conn.h"

struct OutFrame {
	OutFrame *next;
	size_t len, off;
	uint8_t data[];
};

/* Datagrams read per wakeup before giving other clients a turn. */
#define CONN_READ_BATCH 64

static void conn_on_readable(EV_P_ ev_io *w, int revents);
static void conn_on_writable(EV_P_ ev_io *w, int revents);

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

/*
 * The process name, read through a pidfd when the kernel has SO_PEERPIDFD
 * so that a reused pid cannot lend us a stranger's name: the name is read
 * from /proc/PID/comm and trusted only if the pidfd still refers to a live
 * process afterwards (a dead one's pid could have been reused meanwhile).
 */
static void
conn_read_comm(Conn *c)
{
	char path[64];
	int pidfd = -1;
	socklen_t len = sizeof(pidfd);
	FILE *f;

	snprintf(c->comm, sizeof(c->comm), "?");
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0)
		pidfd = -1;
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)c->pid);
	f = fopen(path, "re");
	if (f) {
		/* The kernel ends the name with one newline of its own; a
		 * newline inside it is the process's, and stays (as '?'). */
		char name[64];
		size_t n = fread(name, 1, sizeof(name), f);

		if (n > 0 && name[n - 1] == '\n')
			n--;
		if (n > MBOX_COMM_MAX)
			n = MBOX_COMM_MAX;
		/* An empty name is a name (PR_SET_NAME ""); a failed read
		 * leaves "?". */
		if (!ferror(f)) {
			memcpy(c->comm, name, n);
			c->comm[n] = '\0';
		}
		fclose(f);
	}
	if (pidfd >= 0) {
		/* pidfd_send_signal(pidfd, 0) would be the strict check; a
		 * readable fdinfo Pid line != -1 tells the same without
		 * needing the syscall number. */
		char fdinfo[64], line[128];
		snprintf(fdinfo, sizeof(fdinfo), "/proc/self/fdinfo/%d", pidfd);
		f = fopen(fdinfo, "re");
		if (f) {
			while (fgets(line, sizeof(line), f))
				if (strncmp(line, "Pid:", 4) == 0 &&
				    atoi(line + 4) <= 0)
					snprintf(c->comm, sizeof(c->comm), "?");
			fclose(f);
		}
		close(pidfd);
	}
	/* Any process may name itself with any bytes (PR_SET_NAME), and the
	 * kernel cuts names at 15 bytes, in the middle of a character if it
	 * must: SENDER_COMM is a str, and what a client cannot decode it
	 * cannot read (nor the message that carries it). Controls would
	 * garble the tables mboxctl prints. */
	proto_utf8_scrub(c->comm);
	for (char *p = c->comm; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

static int
conn_read_groups(Conn *c)
{
	socklen_t len = 0;
	gid_t *g;

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERGROUPS, NULL, &len) < 0 &&
	    errno != ERANGE)
		return 0; /* kernel without it: primary group only */
	if (len == 0)
		return 0;
	g = malloc(len);
	if (!g)
		return -ENOMEM;
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) < 0) {
		free(g);
		return 0;
	}
	c->groups = g;
	c->n_groups = len / sizeof(gid_t);
	return 0;
}

int
conn_new(Conn **out, Broker *b, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	Conn *c;
	int r;

	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	c->broker = b;
	c->fd = fd;
	c->serial = ++b->next_serial;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		r = -errno;
		goto fail;
	}
	c->pid = cred.pid;
	c->uid = cred.uid;
	c->gid = cred.gid;
	r = conn_read_groups(c);
	if (r < 0)
		goto fail;
	conn_read_comm(c);
	c->peer =
		(AclPeer){c->uid, c->gid, c->groups, c->n_groups, b->self_uid};
	c->connected_ns = broker_now_ns();
	/* Until HELLO tells us nothing, the biggest legal request is one
	 * MAX_FRAME; the assembler refuses anything above before buffering. */
	proto_asm_init(&c->assembler,
		       2 * b->cfg.max_msg_size + MBOX_PROTO_FRAME_SLACK);
	ev_io_init(&c->read_io, conn_on_readable, fd, EV_READ);
	ev_io_init(&c->write_io, conn_on_writable, fd, EV_WRITE);
	c->read_io.data = c;
	c->write_io.data = c;
	ev_io_start(b->loop, &c->read_io);
	*out = c;
	return 0;
fail:
	free(c->groups);
	close(fd);
	free(c);
	return r;
}

void
conn_free(Conn *c)
{
	OutFrame *f;

	if (!c)
		return;
	while ((f = c->out_head)) {
		c->out_head = f->next;
		free(f);
	}
	proto_asm_release(&c->assembler);
	if (c->fd >= 0)
		close(c->fd);
	free(c->groups);
	free(c->temps);
	free(c);
}

void
conn_close(Conn *c, const char *why)
{
	Broker *b = c->broker;

	if (c->closing)
		return;
	c->closing = true;
	broker_unawait(b, c);
	log_write(b->log, LOG_DEBUG,
		  "client %llu (pid %d uid %u %s) disconnected: %s",
		  (unsigned long long)c->serial, (int)c->pid, (unsigned)c->uid,
		  c->comm, why);
	ev_io_stop(b->loop, &c->read_io);
	ev_io_stop(b->loop, &c->write_io);
	ev_timer_stop(b->loop, &c->refuse_timer);
	while (c->waiters)
		broker_waiter_free(c->waiters);
	broker_release_conn(b, c);
	/* Closing the socket now tells the peer at once; the struct lives
	 * on until pending replies that name it have been dropped. */
	close(c->fd);
	c->fd = -1;
	broker_reap(b, c);
}

/* Read c's requests unless it is closing, congested or held. */
static void
conn_update_reading(Conn *c)
{
	struct ev_loop *loop = c->broker->loop;

	if (c->closing || c->read_paused || c->read_held)
		ev_io_stop(loop, &c->read_io);
	else
		ev_io_start(loop, &c->read_io);
}

void
conn_hold(Conn *c, bool held)
{
	c->read_held = held;
	conn_update_reading(c);
}

static void
conn_update_backpressure(Conn *c)
{
	Broker *b = c->broker;

	if (c->closing)
		return;
	if (!c->read_paused && c->out_bytes >= b->cfg.max_out_bytes) {
		c->read_paused = true;
		conn_update_reading(c);
	} else if (c->read_paused && c->out_bytes <= b->cfg.max_out_bytes / 2) {
		c->read_paused = false;
		conn_update_reading(c);
		/* Deliveries held back while it was congested. */
		broker_conn_wake(b, c);
	} else if (c->held_back && !c->read_paused &&
		   c->out_bytes <= b->cfg.max_out_bytes / 2) {
		/* Held back near the limit without passing it. */
		broker_conn_wake(b, c);
	}
}

/* Send the datagrams of frame from *off on while the socket takes them:
 * 0 when all went, -EAGAIN when it is full, or -errno of a broken
 * socket. */
static int
conn_send_dgrams(Conn *c, const uint8_t *frame, size_t len, size_t *off)
{
	while (*off < len) {
		size_t n = proto_dgram_next(len, *off);
		ssize_t k = send(c->fd, frame + *off, n,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		}
		*off += (size_t)k;
	}
	return 0;
}

/* Send what the socket takes. Returns 0, or -errno of a broken socket. */
static int
conn_flush(Conn *c)
{
	OutFrame *f;

	while ((f = c->out_head)) {
		size_t sent = f->off;
		int r = conn_send_dgrams(c, f->data, f->len, &f->off);

		c->out_bytes -= f->off - sent;
		if (r == -EAGAIN) {
			ev_io_start(c->broker->loop, &c->write_io);
			conn_update_backpressure(c);
			return 0;
		}
		if (r < 0)
			return r;
		c->out_head = f->next;
		if (!c->out_head)
			c->out_tail = NULL;
		free(f);
	}
	ev_io_stop(c->broker->loop, &c->write_io);
	conn_update_backpressure(c);
	return 0;
}

int
conn_send(Conn *c, const uint8_t *frame, size_t len)
{
	OutFrame *f;
	size_t off = 0;
	int r;

	if (c->closing)
		return 0;
	/*
	 * Nothing older waits: send straight from the caller's buffer, and
	 * copy only what the socket does not take. A delivery of 64 KiB
	 * copied into a fresh allocation every time cost the broker page
	 * faults as well as the copy (perf, doc/performance.md).
	 */
	if (!c->out_head) {
		r = conn_send_dgrams(c, frame, len, &off);
		if (r == 0) {
			conn_update_backpressure(c);
			return 0;
		}
		if (r != -EAGAIN) {
			conn_close(c, strerror(-r));
			return 0;
		}
	}
	f = malloc(sizeof(*f) + len);
	if (!f)
		return -ENOMEM;
	f->next = NULL;
	f->len = len;
	f->off = off;
	memcpy(f->data, frame, len);
	if (c->out_tail)
		c->out_tail->next = f;
	else
		c->out_head = f;
	c->out_tail = f;
	c->out_bytes += len - off;
	if (c->out_head == f)
		ev_io_start(c->broker->loop, &c->write_io);
	/* The queue grew: reading may have to pause. */
	conn_update_backpressure(c);
	return 0;
}

void
conn_send_writer(Conn *c, ProtoWriter *w)
{
	const uint8_t *frame;
	size_t len;

	if (proto_writer_finish(w, &frame, &len) < 0 ||
	    conn_send(c, frame, len) < 0)
		conn_close(c, "out of memory building a reply");
}

void
conn_reply_error(Conn *c, uint16_t op, uint32_t id, unsigned status,
		 const char *limit, const char *fmt, ...)
{
	ProtoWriter *w = &c->broker->w;
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	/* A text cut to fit a buffer may end, or hold, a character cut in
	 * two; TEXT is a str, which a client must be able to decode. */
	proto_utf8_scrub(text);
	proto_writer_begin(w, op, MBOX_FLAG_REPLY, id, status);
	proto_put_str(w, MBOX_TAG_TEXT, text);
	if (limit)
		proto_put_str(w, MBOX_TAG_LIMIT, limit);
	conn_send_writer(c, w);
}

static void
conn_on_writable(EV_P_ ev_io *w, int revents)
{
	Conn *c = w->data;
	int r = conn_flush(c);

	if (r < 0)
		conn_close(c, strerror(-r));
}

static void
conn_handle_dgram(Conn *c, const uint8_t *buf, size_t n)
{
	ProtoHeader h;
	uint8_t *body;
	size_t len;
	int r = proto_asm_feed(&c->assembler, buf, n);

	if (r < 0) {
		log_write(c->broker->log, LOG_INFO,
			  "client %llu (pid %d uid %u): framing error, "
			  "closing the connection",
			  (unsigned long long)c->serial, (int)c->pid,
			  (unsigned)c->uid);
		conn_close(c, "framing error");
		return;
	}
	if (r == PROTO_ASM_TOO_LARGE) {
		h = c->assembler.hdr;
		broker_dispatch_too_large(c, &h, c->assembler.max_body);
		return;
	}
	if (r != PROTO_ASM_FRAME)
		return;
	body = proto_asm_take(&c->assembler, &h, &len);
	broker_dispatch(c, &h, body, len);
	free(body);
}

static void
conn_on_readable(EV_P_ ev_io *w, int revents)
{
	Conn *c = w->data;
	uint8_t buf[MBOX_PROTO_DGRAM_MAX];

	for (int i = 0; i < CONN_READ_BATCH && !c->closing && !c->read_paused &&
			!c->read_held;
	     i++) {
		struct iovec iov = {buf, sizeof(buf)};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n =
			recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			conn_close(c, strerror(errno));
			return;
		}
		if (n == 0) {
			conn_close(c, "end of stream");
			return;
		}
		if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
			conn_close(c, "datagram over 65536 bytes");
			return;
		}
		conn_handle_dgram(c, buf, (size_t)n);
	}
}
