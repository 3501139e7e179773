/*
 * libmbox.c - the client library: connection, handshake, requests.
 *
 * Every call is built on the same three steps: req_begin() starts a frame
 * with a fresh request id, req_send() puts it on the wire, reply_wait()
 * reads frames until the reply with that id arrives. All encoding,
 * decoding and reassembly goes through the shared codec (client/proto.h).
 *
 * Invariants:
 * - A request id is non-zero and unique among the requests in flight
 *   (m->inflight). Replies are matched by id, never by order: the broker
 *   may answer a later PING before an earlier RECV that waits. A reply to
 *   another in-flight request that arrives while we wait for one is parked
 *   until its own caller asks for it, so several requests can be
 *   outstanding on one connection (pipelining), even though the blocking
 *   calls below only ever have one.
 * - Pushes (flags PUSH, id 0) never answer a request. Whoever reads one
 *   from the socket (a blocking call waiting for its reply, mbox_next,
 *   mbox_dispatch) decodes every MSG of a DELIVER push into the push
 *   queue (m->pushq), in arrival order, so a blocking call made while
 *   subscribed loses nothing; mbox_next and mbox_dispatch hand them out.
 *   Other push opcodes are dropped: a newer broker may add some.
 * - A frame goes out whole or the connection is marked broken: half a
 *   frame on the wire would desynchronise the broker's reassembly. After
 *   a failed send, a closed socket or a framing error on receive, every
 *   call returns m->broken (-ECONNRESET or -EPROTO) without touching the
 *   socket again.
 * - An error reply leaves the broker's TEXT in m->error (mbox_last_error).
 *   Failures found by the library itself leave an explanation there too.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "mbox.h"
#include "client/msg.h"
#include "client/proto.h"
#include "client/topic.h"

/* A received frame: header and reassembled body. */
typedef struct Frame {
	struct Frame *next;
	ProtoHeader hdr;
	uint8_t *body; /* malloc'd, NULL when empty */
	size_t len;
	bool too_large; /* over our MAX_FRAME: skipped, body not kept */
} Frame;

struct mbox {
	int fd;
	int broken;	    /* 0, or the negative errno every call returns */
	uint32_t last_id;   /* last request id handed out */
	uint32_t *inflight; /* ids sent and not answered yet */
	size_t n_inflight, cap_inflight;
	Frame *parked;	     /* replies nobody has asked for yet, FIFO */
	size_t max_msg_size; /* bytes of payload, from HELLO */
	size_t max_frame;    /* bytes of body, from HELLO */
	ProtoAssembler rx;
	ProtoWriter tx;
	uint8_t *dgram;	  /* receive buffer, MBOX_PROTO_DGRAM_MAX bytes */
	mbox_msg **pushq; /* pushed messages not handed out yet: a ring */
	size_t push_head, push_n, push_cap;
	char *reply_box; /* mbox_call's temporary mailbox, NULL until used */
	char error[512];
};

/*
 * A RECV that should wait forever asks the broker for this long and asks
 * again when the answer is empty: WAIT_MS is finite on the wire, and a
 * day is long enough that the loop costs nothing.
 */
#define RECV_FOREVER_SLICE_MS (24u * 3600u * 1000u)

/* Before HELLO tells us MAX_FRAME, accept what one datagram holds. */
#define HELLO_MAX_BODY (MBOX_PROTO_DGRAM_MAX - MBOX_PROTO_HEADER_SIZE)

static const uint8_t empty_body[1];

/* -------------------------------------------------------------------- */
/* Errors */

static void mbox_set_error(mbox *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
mbox_set_error(mbox *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->error, sizeof(m->error), fmt, ap);
	va_end(ap);
}

/* Mark the connection unusable; returns err for tail calls. */
static int
mbox_break(mbox *m, int err)
{
	if (!m->broken)
		m->broken = err;
	return err;
}

static int
status_to_errno(uint32_t status)
{
	switch (status) {
	case MBOX_S_MALFORMED:
		return -EBADMSG;
	case MBOX_S_UNKNOWN_OP:
		return -EOPNOTSUPP;
	case MBOX_S_VERSION:
		return -EPROTONOSUPPORT;
	case MBOX_S_NOT_FOUND:
		return -ENOENT;
	case MBOX_S_DENIED:
		return -EACCES;
	case MBOX_S_EXISTS:
		return -EEXIST;
	case MBOX_S_LIMIT:
		return -EDQUOT;
	case MBOX_S_FULL:
		return -ENOSPC;
	case MBOX_S_TOO_LARGE:
		return -EMSGSIZE;
	case MBOX_S_INVALID:
		return -EINVAL;
	case MBOX_S_NOT_LEASED:
		return -ESTALE;
	case MBOX_S_STORE:
		return -EIO;
	case MBOX_S_SHUTDOWN:
		return -ESHUTDOWN;
	case MBOX_S_NOT_EMPTY:
		return -ENOTEMPTY;
	case MBOX_S_BUSY:
		return -EBUSY;
	default:
		return -EPROTO;
	}
}

const char *
mbox_strerror(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return "success";
	case ENOENT:
		return "no such mailbox or broker socket";
	case EACCES:
	case EPERM:
		return "permission denied";
	case EEXIST:
		return "mailbox exists";
	case EDQUOT:
		return "a configured limit was hit";
	case ENOSPC:
		return "mailbox full";
	case EMSGSIZE:
		return "message too large";
	case EINVAL:
		return "invalid argument";
	case ESTALE:
		return "message not leased by this connection";
	case EIO:
		return "the broker's store failed";
	case ESHUTDOWN:
		return "broker stopping";
	case ENOTEMPTY:
		return "mailbox not empty";
	case EBUSY:
		return "too many requests in flight";
	case EBADMSG:
		return "the broker found our request malformed";
	case EOPNOTSUPP:
		return "operation not supported by the broker";
	case EPROTONOSUPPORT:
		return "no common protocol version";
	case ECONNREFUSED:
		return "connection refused (no broker listening)";
	case ECONNRESET:
		return "connection to the broker lost";
	case EPROTO:
		return "protocol error (unexpected reply from the broker)";
	case ETIMEDOUT:
		return "timed out";
	case ENOMEM:
		return "out of memory";
	case ENAMETOOLONG:
		return "socket path too long";
	case ENOTSOCK:
		return "not a socket";
	case EPROTOTYPE:
		return "socket is not a SOCK_SEQPACKET socket";
	case EINTR:
		return "interrupted";
	case EAGAIN:
		return "resource temporarily unavailable";
	case EMFILE:
	case ENFILE:
		return "too many open files";
	case ERANGE:
		return "out of range";
	default:
		return "unknown error";
	}
}

const char *
mbox_last_error(const mbox *m)
{
	return m ? m->error : "";
}

/* -------------------------------------------------------------------- */
/* Requests in flight */

static bool
inflight_has(const mbox *m, uint32_t id)
{
	size_t i;

	for (i = 0; i < m->n_inflight; i++)
		if (m->inflight[i] == id)
			return true;
	return false;
}

static int
inflight_add(mbox *m, uint32_t id)
{
	if (m->n_inflight == m->cap_inflight) {
		size_t cap = m->cap_inflight ? 2 * m->cap_inflight : 4;
		uint32_t *p = realloc(m->inflight, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		m->inflight = p;
		m->cap_inflight = cap;
	}
	m->inflight[m->n_inflight++] = id;
	return 0;
}

static void
inflight_remove(mbox *m, uint32_t id)
{
	size_t i;

	for (i = 0; i < m->n_inflight; i++) {
		if (m->inflight[i] == id) {
			m->inflight[i] = m->inflight[--m->n_inflight];
			return;
		}
	}
}

/* A fresh id: non-zero, not used by a request still in flight. */
static uint32_t
req_next_id(mbox *m)
{
	do
		m->last_id++;
	while (m->last_id == 0 || inflight_has(m, m->last_id));
	return m->last_id;
}

static void
frame_free(Frame *f)
{
	if (f) {
		free(f->body);
		free(f);
	}
}

/* -------------------------------------------------------------------- */
/* Transport */

static int
errno_is_disconnect(int e)
{
	return e == EPIPE || e == ECONNRESET || e == ENOTCONN ||
	       e == ECONNABORTED;
}

/*
 * Send one frame, split into datagrams as the protocol says. Either the
 * whole frame is sent, or nothing was sent and the connection is still
 * usable, or the connection is marked broken.
 */
static int
tx_frame(mbox *m, const uint8_t *frame, size_t len)
{
	size_t off = 0;

	while (off < len) {
		size_t n = proto_dgram_next(len, off);
		ssize_t r = send(m->fd, frame + off, n, MSG_NOSIGNAL);

		if (r < 0) {
			int e = errno;

			if (e == EINTR)
				continue;
			mbox_set_error(m, "send: %s", strerror(e));
			if (errno_is_disconnect(e))
				return mbox_break(m, -ECONNRESET);
			if (off == 0)
				return -e;
			return mbox_break(m, -e);
		}
		if ((size_t)r != n) {
			/* Cannot happen on SOCK_SEQPACKET: sends are atomic. */
			mbox_set_error(m, "send: short datagram");
			return mbox_break(m, -EPROTO);
		}
		off += n;
	}
	return 0;
}

/*
 * Read datagrams until one whole frame is assembled. With nonblock, return
 * -EAGAIN as soon as the socket has nothing more (the connection stays
 * usable): a frame begun stays in the assembler, and the next call, of
 * either kind, goes on with it.
 */
static int
rx_frame(mbox *m, Frame **out, bool nonblock)
{
	Frame *f;
	int r;

	*out = NULL;
	for (;;) {
		struct iovec iov = {m->dgram, MBOX_PROTO_DGRAM_MAX};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n = recvmsg(m->fd, &mh,
				    MSG_CMSG_CLOEXEC |
					    (nonblock ? MSG_DONTWAIT : 0));

		if (n < 0) {
			int e = errno;

			if (e == EINTR)
				continue;
			if (nonblock && (e == EAGAIN || e == EWOULDBLOCK))
				return -EAGAIN;
			mbox_set_error(m, "receive: %s", strerror(e));
			if (errno_is_disconnect(e))
				return mbox_break(m, -ECONNRESET);
			/* We may have lost part of a frame: stop here. */
			return mbox_break(m, -e);
		}
		if (n == 0) {
			mbox_set_error(m, "the broker closed the connection");
			return mbox_break(m, -ECONNRESET);
		}
		if (mh.msg_flags & MSG_TRUNC) {
			mbox_set_error(m, "the broker sent a datagram larger "
					  "than 64 KiB");
			return mbox_break(m, -EPROTO);
		}
		r = proto_asm_feed(&m->rx, m->dgram, (size_t)n);
		if (r == -ENOMEM) {
			mbox_set_error(m, "out of memory reassembling a reply");
			return mbox_break(m, -ENOMEM);
		}
		if (r < 0) {
			mbox_set_error(m, "the broker broke the framing");
			return mbox_break(m, -EPROTO);
		}
		if (r == PROTO_ASM_MORE)
			continue;

		f = calloc(1, sizeof(*f));
		if (!f) {
			if (r == PROTO_ASM_FRAME) {
				ProtoHeader h;
				size_t len;

				free(proto_asm_take(&m->rx, &h, &len));
			}
			mbox_set_error(m, "out of memory");
			/* The reply is lost; so is its waiter. */
			return mbox_break(m, -ENOMEM);
		}
		if (r == PROTO_ASM_TOO_LARGE) {
			f->hdr = m->rx.hdr;
			f->too_large = true;
		} else {
			f->body = proto_asm_take(&m->rx, &f->hdr, &f->len);
		}
		*out = f;
		return 0;
	}
}

/* -------------------------------------------------------------------- */
/* Push queue */

static int
push_queue(mbox *m, mbox_msg *msg)
{
	if (m->push_n == m->push_cap) {
		size_t cap = m->push_cap ? 2 * m->push_cap : 16, i;
		mbox_msg **v = malloc(cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		/* Unroll the ring so that it starts at 0 again. */
		for (i = 0; i < m->push_n; i++)
			v[i] = m->pushq[(m->push_head + i) % m->push_cap];
		free(m->pushq);
		m->pushq = v;
		m->push_cap = cap;
		m->push_head = 0;
	}
	m->pushq[(m->push_head + m->push_n) % m->push_cap] = msg;
	m->push_n++;
	return 0;
}

/* The oldest queued push, or NULL. */
static mbox_msg *
push_pop(mbox *m)
{
	mbox_msg *msg;

	if (m->push_n == 0)
		return NULL;
	msg = m->pushq[m->push_head];
	m->push_head = (m->push_head + 1) % m->push_cap;
	m->push_n--;
	return msg;
}

static void
push_drop_all(mbox *m)
{
	mbox_msg *msg;

	while ((msg = push_pop(m)))
		mbox_msg_free(msg);
}

/*
 * Queue every MSG of a DELIVER push; frees f. The broker has leased these
 * messages to us, so one we cannot keep would stay leased to nobody who
 * knows it: the connection is marked broken instead, and closing it gives
 * them back.
 */
static int
push_take(mbox *m, Frame *f)
{
	ProtoReader rd;
	ProtoField fl;
	mbox_msg *msg;
	char why[128] = "";
	int r;

	if (f->hdr.opcode != MBOX_OP_DELIVER) {
		/* A push of a later protocol revision: not for us. */
		frame_free(f);
		return 0;
	}
	if (f->too_large) {
		frame_free(f);
		mbox_set_error(m, "the broker pushed a frame over MAX_FRAME");
		return mbox_break(m, -EPROTO);
	}
	proto_reader_init(&rd, f->body ? f->body : empty_body, f->len);
	while ((r = proto_reader_next(&rd, &fl)) > 0) {
		if (fl.tag != MBOX_TAG_MSG)
			continue;
		r = mbox__msg_decode(fl.val, fl.len, NULL, &msg, why);
		if (r == 0) {
			r = push_queue(m, msg);
			if (r < 0)
				mbox_msg_free(msg);
		}
		if (r < 0)
			break;
	}
	frame_free(f);
	if (r == -ENOMEM) {
		mbox_set_error(m, "out of memory queueing a pushed message");
		return mbox_break(m, -ENOMEM);
	}
	if (r < 0) {
		mbox_set_error(m, "undecodable pushed message%s%s",
			       why[0] ? ": " : "", why);
		return mbox_break(m, -EPROTO);
	}
	return 0;
}

/*
 * A frame nobody in particular waits for: queue a push, park a reply to
 * a request in flight for its own caller, drop anything else. Frees or
 * keeps f.
 */
static int
rx_route(mbox *m, Frame *f)
{
	Frame **tail;

	if (f->hdr.flags & MBOX_FLAG_PUSH)
		return push_take(m, f);
	if (!(f->hdr.flags & MBOX_FLAG_REPLY) || !inflight_has(m, f->hdr.id)) {
		frame_free(f);
		return 0;
	}
	for (tail = &m->parked; *tail; tail = &(*tail)->next)
		;
	*tail = f;
	return 0;
}

/*
 * Wait for the reply to request id. Replies to other requests in flight
 * are parked for their own callers, pushes are queued, replies to ids
 * nobody waits for are dropped.
 */
static int
reply_wait(mbox *m, uint32_t id, Frame **out)
{
	Frame **pp, *f;
	int r;

	*out = NULL;
	for (pp = &m->parked; *pp; pp = &(*pp)->next) {
		if ((*pp)->hdr.id == id) {
			f = *pp;
			*pp = f->next;
			f->next = NULL;
			inflight_remove(m, id);
			*out = f;
			return 0;
		}
	}
	if (m->broken)
		return m->broken;
	for (;;) {
		r = rx_frame(m, &f, false);
		if (r < 0)
			return r;
		if ((f->hdr.flags & MBOX_FLAG_REPLY) &&
		    !(f->hdr.flags & MBOX_FLAG_PUSH) && f->hdr.id == id) {
			inflight_remove(m, id);
			*out = f;
			return 0;
		}
		r = rx_route(m, f);
		if (r < 0)
			return r;
	}
}

/* -------------------------------------------------------------------- */
/* Requests */

/* Start a request frame in m->tx; returns its id. */
static uint32_t
req_begin(mbox *m, uint16_t opcode)
{
	uint32_t id = req_next_id(m);

	proto_writer_begin(&m->tx, opcode, 0, id, 0);
	return id;
}

/* Finish the frame in m->tx and send it. */
static int
req_send(mbox *m, uint32_t id)
{
	const uint8_t *frame;
	size_t len;
	int r;

	if (m->broken)
		return m->broken;
	r = proto_writer_finish(&m->tx, &frame, &len);
	if (r == -E2BIG) {
		mbox_set_error(m, "request too large to encode");
		return -EMSGSIZE;
	}
	if (r < 0) {
		mbox_set_error(m, "out of memory encoding the request");
		return r;
	}
	if (len - MBOX_PROTO_HEADER_SIZE > m->max_frame) {
		/* The broker would read and discard it: spare us both. */
		mbox_set_error(m,
			       "request of %zu bytes exceeds the broker's "
			       "limit of %zu bytes (MAX_FRAME)",
			       len - MBOX_PROTO_HEADER_SIZE, m->max_frame);
		return -EMSGSIZE;
	}
	r = inflight_add(m, id);
	if (r < 0) {
		mbox_set_error(m, "out of memory");
		return r;
	}
	r = tx_frame(m, frame, len);
	if (r < 0 && !m->broken)
		inflight_remove(m, id); /* nothing went out */
	return r;
}

/*
 * Check a reply frame and parse its body into *f (which points into
 * fr->body: keep fr until done with f). An error status becomes its
 * negative errno, with the broker's TEXT in m->error. required: tags a
 * successful reply must carry.
 */
static int
reply_parse(mbox *m, const Frame *fr, uint16_t opcode, ProtoFields *f,
	    uint64_t required)
{
	char why[128] = "";
	const char *reason = NULL;
	int r;

	if (fr->too_large) {
		mbox_set_error(m,
			       "the broker's reply to %s (%u bytes) exceeds "
			       "its own MAX_FRAME",
			       proto_op_name(opcode), fr->hdr.body_len);
		return -EPROTO;
	}
	if (fr->hdr.opcode != opcode) {
		mbox_set_error(m, "the broker answered %s with opcode %u",
			       proto_op_name(opcode), fr->hdr.opcode);
		return -EPROTO;
	}
	r = proto_fields_parse(f, fr->body ? fr->body : empty_body, fr->len,
			       why, &reason);
	if (fr->hdr.status != MBOX_S_OK) {
		const char *text = proto_status_text(fr->hdr.status);
		int tlen = (int)strlen(text);

		if (r == 0 && proto_has(f, MBOX_TAG_TEXT)) {
			text = (const char *)f->first[MBOX_TAG_TEXT].ptr;
			tlen = (int)f->first[MBOX_TAG_TEXT].len;
		}
		if (r == 0 && proto_has(f, MBOX_TAG_LIMIT))
			mbox_set_error(
				m, "%.*s (limit: %.*s)", tlen, text,
				(int)f->first[MBOX_TAG_LIMIT].len,
				(const char *)f->first[MBOX_TAG_LIMIT].ptr);
		else
			mbox_set_error(m, "%.*s", tlen, text);
		return status_to_errno(fr->hdr.status);
	}
	if (r < 0) {
		mbox_set_error(m, "undecodable reply to %s: %s",
			       proto_op_name(opcode), reason ? reason : why);
		return -EPROTO;
	}
	if (required && proto_fields_check(f, ~UINT64_C(0), required, why)) {
		mbox_set_error(m, "reply to %s: %s", proto_op_name(opcode),
			       why);
		return -EPROTO;
	}
	return 0;
}

/*
 * Send the request built in m->tx and wait for its reply. On success *out
 * is the reply frame (caller frees with frame_free) and *f its fields.
 */
static int
req_call(mbox *m, uint32_t id, uint16_t opcode, Frame **out, ProtoFields *f,
	 uint64_t required)
{
	Frame *fr = NULL;
	int r;

	*out = NULL;
	r = req_send(m, id);
	if (r < 0)
		return r;
	r = reply_wait(m, id, &fr);
	if (r < 0)
		return r;
	r = reply_parse(m, fr, opcode, f, required);
	if (r < 0) {
		frame_free(fr);
		return r;
	}
	*out = fr;
	return 0;
}

/* Every public call starts here: a usable handle, a clean error text. */
static int
mbox_enter(mbox *m)
{
	if (!m)
		return -EINVAL;
	m->error[0] = '\0';
	if (m->broken) {
		mbox_set_error(m, "the connection to the broker is broken");
		return m->broken;
	}
	return 0;
}

static int
check_name(mbox *m, const char *name)
{
	size_t len;

	if (!name) {
		mbox_set_error(m, "no mailbox name given");
		return -EINVAL;
	}
	len = strlen(name);
	if (!proto_name_valid((const uint8_t *)name, len)) {
		mbox_set_error(m,
			       "invalid mailbox name \"%.64s\"%s: it must be "
			       "1-%u bytes of A-Z a-z 0-9 . _ -",
			       name, len > 64 ? "..." : "", MBOX_NAME_MAX);
		return -EINVAL;
	}
	return 0;
}

static bool
str_valid(const char *s)
{
	return proto_utf8_valid((const uint8_t *)s, strlen(s));
}

/* -------------------------------------------------------------------- */
/* Connection */

int
mbox_default_socket_path(char *buf, size_t size)
{
	const char *env = getenv("MBOX_SOCKET");
	int n;

	if (!buf)
		return -EINVAL;
	if (env && *env)
		n = snprintf(buf, size, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(buf, size, "/run/mbox/mbox.sock");
	else if ((env = getenv("XDG_RUNTIME_DIR")) && *env == '/')
		n = snprintf(buf, size, "%s/mbox/mbox.sock", env);
	else
		n = snprintf(buf, size, "/tmp/mbox-%lu/mbox.sock",
			     (unsigned long)geteuid());
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
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
mbox_hello(mbox *m)
{
	ProtoFields f;
	Frame *fr = NULL;
	uint64_t version, max_msg, max_frame;
	uint32_t id;
	int r;

	id = req_begin(m, MBOX_OP_HELLO);
	proto_put_u64(&m->tx, MBOX_TAG_VERSION_MIN, MBOX_PROTO_VERSION);
	proto_put_u64(&m->tx, MBOX_TAG_VERSION_MAX, MBOX_PROTO_VERSION);
	r = req_call(m, id, MBOX_OP_HELLO, &fr, &f,
		     PROTO_BIT(MBOX_TAG_VERSION) |
			     PROTO_BIT(MBOX_TAG_MAX_MSG_SIZE) |
			     PROTO_BIT(MBOX_TAG_MAX_FRAME));
	if (r < 0)
		return r;
	version = proto_u64(&f, MBOX_TAG_VERSION, 0);
	max_msg = proto_u64(&f, MBOX_TAG_MAX_MSG_SIZE, 0);
	max_frame = proto_u64(&f, MBOX_TAG_MAX_FRAME, 0);
	frame_free(fr);
	if (version != MBOX_PROTO_VERSION) {
		mbox_set_error(m, "the broker chose protocol version %llu",
			       (unsigned long long)version);
		return -EPROTONOSUPPORT;
	}
	if (max_frame == 0) {
		mbox_set_error(m, "the broker announced MAX_FRAME 0");
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
		r = mbox_default_socket_path(dflt, sizeof(dflt));
		if (r < 0)
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
	r = mbox_hello(m);
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
	Frame *f;

	if (!m)
		return;
	if (m->fd >= 0)
		close(m->fd);
	while ((f = m->parked)) {
		m->parked = f->next;
		frame_free(f);
	}
	push_drop_all(m);
	free(m->pushq);
	free(m->reply_box);
	proto_asm_release(&m->rx);
	proto_writer_release(&m->tx);
	free(m->inflight);
	free(m->dgram);
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

/* -------------------------------------------------------------------- */
/* Operations */

int
mbox_ping(mbox *m)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	r = mbox_enter(m);
	if (r < 0)
		return r;
	id = req_begin(m, MBOX_OP_PING);
	r = req_call(m, id, MBOX_OP_PING, &fr, &f, 0);
	frame_free(fr);
	return r;
}

/* CREATE and SET: each setting "key=value" with a non-empty key. */
static int
settings_check(mbox *m, const char *const *settings)
{
	size_t i;

	for (i = 0; settings && settings[i]; i++) {
		if (!strchr(settings[i], '=') || settings[i][0] == '=' ||
		    !str_valid(settings[i])) {
			mbox_set_error(m, "setting \"%.64s\" is not key=value",
				       settings[i]);
			return -EINVAL;
		}
	}
	return 0;
}

/* CREATE and SET: MAILBOX and the settings, empty reply. */
static int
settings_req(mbox *m, uint16_t op, const char *mailbox,
	     const char *const *settings)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	size_t i;
	int r;

	r = mbox_enter(m);
	if (r < 0)
		return r;
	r = check_name(m, mailbox);
	if (r < 0)
		return r;
	r = settings_check(m, settings);
	if (r < 0)
		return r;
	id = req_begin(m, op);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	for (i = 0; settings && settings[i]; i++)
		proto_put_str(&m->tx, MBOX_TAG_SETTING, settings[i]);
	r = req_call(m, id, op, &fr, &f, 0);
	frame_free(fr);
	return r;
}

int
mbox_create(mbox *m, const char *mailbox, const char *const *settings)
{
	return settings_req(m, MBOX_OP_CREATE, mailbox, settings);
}

int
mbox_set(mbox *m, const char *mailbox, const char *const *settings)
{
	size_t i;

	if (m && (!settings || !settings[0])) {
		mbox_set_error(m, "no setting to change given");
		return -EINVAL;
	}
	for (i = 0; m && settings[i]; i++) {
		if (strncmp(settings[i], "temp=", 5) == 0) {
			mbox_set_error(m, "temp can only be set at creation");
			return -EINVAL;
		}
	}
	return settings_req(m, MBOX_OP_SET, mailbox, settings);
}

/* Client-side checks of one message to post: cheap, and clearer errors. */
static int
post_item_check(mbox *m, size_t idx, size_t n, const void *data, size_t len,
		const mbox_post_opts *o)
{
	const char *const *h;
	size_t i, j, total = 0;
	char what[32] = ""; /* "message 3: " in a batch */

	if (n > 1)
		snprintf(what, sizeof(what), "message %zu: ", idx);

	if (!data && len) {
		mbox_set_error(m, "%sno data", what);
		return -EINVAL;
	}
	if (len > m->max_msg_size) {
		mbox_set_error(m,
			       "%s%zu bytes exceed the broker's "
			       "limit of %zu bytes",
			       what, len, m->max_msg_size);
		return -EMSGSIZE;
	}
	if (!o)
		return 0;
	if (o->priority > MBOX_PRIORITY_MAX) {
		mbox_set_error(m, "%spriority %u is not 0-%u", what,
			       o->priority, MBOX_PRIORITY_MAX);
		return -EINVAL;
	}
	if (o->dedup && (!o->dedup[0] || strlen(o->dedup) > MBOX_NAME_MAX ||
			 !str_valid(o->dedup))) {
		mbox_set_error(m,
			       "%sa dedup key is 1-%u bytes of "
			       "UTF-8",
			       what, MBOX_NAME_MAX);
		return -EINVAL;
	}
	h = o->headers;
	for (i = 0; h && h[i]; i += 2) {
		size_t klen = strlen(h[i]);

		if (!h[i + 1]) {
			mbox_set_error(m,
				       "%sheader \"%.64s\" has "
				       "no value",
				       what, h[i]);
			return -EINVAL;
		}
		if (klen == 0 || klen > MBOX_NAME_MAX || !str_valid(h[i]) ||
		    !str_valid(h[i + 1])) {
			mbox_set_error(m,
				       "%sheader keys are 1-%u "
				       "bytes and values UTF-8",
				       what, MBOX_NAME_MAX);
			return -EINVAL;
		}
		for (j = 0; j < i; j += 2) {
			if (strcmp(h[i], h[j]) == 0) {
				mbox_set_error(m,
					       "%sheader \"%.64s\" "
					       "given twice",
					       what, h[i]);
				return -EINVAL;
			}
		}
		total += klen + strlen(h[i + 1]);
	}
	if (total > MBOX_HEADERS_MAX) {
		mbox_set_error(m,
			       "%sheaders take %zu bytes, more than "
			       "%u",
			       what, total, MBOX_HEADERS_MAX);
		return -EINVAL;
	}
	return 0;
}

static void
post_item_put(ProtoWriter *w, const void *data, size_t len,
	      const mbox_post_opts *o)
{
	const char *const *h;
	size_t i;

	proto_nest_begin(w, MBOX_TAG_MSG);
	proto_put_bytes(w, MBOX_TAG_DATA, data ? data : empty_body, len);
	if (o) {
		if (o->priority)
			proto_put_u64(w, MBOX_TAG_PRIORITY, o->priority);
		if (o->delay_ms)
			proto_put_u64(w, MBOX_TAG_DELAY_MS, o->delay_ms);
		if (o->ttl_ms)
			proto_put_u64(w, MBOX_TAG_TTL_MS, o->ttl_ms);
		if (o->dedup)
			proto_put_str(w, MBOX_TAG_DEDUP, o->dedup);
		h = o->headers;
		for (i = 0; h && h[i]; i += 2) {
			proto_nest_begin(w, MBOX_TAG_HEADER);
			proto_put_str(w, MBOX_TAG_KEY, h[i]);
			proto_put_str(w, MBOX_TAG_VALUE, h[i + 1]);
			proto_nest_end(w);
		}
	}
	proto_nest_end(w);
}

/* Collect the reply's ID fields, in order; exactly n of them. */
static int
post_reply_ids(mbox *m, const Frame *fr, size_t n, uint64_t *ids)
{
	ProtoReader rd;
	ProtoField fl;
	size_t got = 0;
	int r;

	proto_reader_init(&rd, fr->body ? fr->body : empty_body, fr->len);
	while ((r = proto_reader_next(&rd, &fl)) > 0) {
		if (fl.tag != MBOX_TAG_ID)
			continue;
		if (got < n && ids)
			ids[got] = proto_get_u64(fl.val);
		got++;
	}
	if (r < 0 || got != n) {
		mbox_set_error(m, "the broker answered %zu posts with %zu ids",
			       n, got);
		return -EPROTO;
	}
	return 0;
}

int
mbox_post_batch(mbox *m, const char *mailbox, const mbox_post_item *items,
		size_t n, uint64_t *ids)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	size_t i;
	int r;

	r = mbox_enter(m);
	if (r < 0)
		return r;
	r = check_name(m, mailbox);
	if (r < 0)
		return r;
	if (!items || n == 0 || n > MBOX_RECV_MAX) {
		mbox_set_error(m, "a batch holds 1-%u messages", MBOX_RECV_MAX);
		return -EINVAL;
	}
	for (i = 0; i < n; i++) {
		r = post_item_check(m, i, n, items[i].data, items[i].len,
				    items[i].opts);
		if (r < 0)
			return r;
	}
	id = req_begin(m, MBOX_OP_POST);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	for (i = 0; i < n; i++)
		post_item_put(&m->tx, items[i].data, items[i].len,
			      items[i].opts);
	r = req_call(m, id, MBOX_OP_POST, &fr, &f, PROTO_BIT(MBOX_TAG_ID));
	if (r < 0)
		return r;
	r = post_reply_ids(m, fr, n, ids);
	frame_free(fr);
	return r;
}

int
mbox_post(mbox *m, const char *mailbox, const void *data, size_t len,
	  const mbox_post_opts *opts, uint64_t *id)
{
	mbox_post_item item = {.data = data, .len = len, .opts = opts};
	uint64_t tmp;
	int r;

	r = mbox_post_batch(m, mailbox, &item, 1, &tmp);
	if (r == 0 && id)
		*id = tmp;
	return r;
}

/*
 * Decode the MSG fields of a RECV or PEEK reply into msgs[0..max-1].
 * All or nothing: on failure every message decoded so far is freed.
 */
static int
msgs_decode(mbox *m, const Frame *fr, const char *mailbox, size_t max,
	    mbox_msg **msgs, size_t *n)
{
	ProtoReader rd;
	ProtoField fl;
	char why[128] = "";
	size_t got = 0;
	int r;

	proto_reader_init(&rd, fr->body ? fr->body : empty_body, fr->len);
	while ((r = proto_reader_next(&rd, &fl)) > 0) {
		if (fl.tag != MBOX_TAG_MSG)
			continue;
		if (got == max) {
			mbox_set_error(m,
				       "the broker sent more than the %zu "
				       "messages asked for",
				       max);
			r = -EPROTO;
			goto fail;
		}
		r = mbox__msg_decode(fl.val, fl.len, mailbox, &msgs[got], why);
		if (r == -ENOMEM) {
			mbox_set_error(m, "out of memory");
			goto fail;
		}
		if (r < 0) {
			mbox_set_error(m, "undecodable message: %s", why);
			r = -EPROTO;
			goto fail;
		}
		got++;
	}
	if (r < 0) {
		mbox_set_error(m, "undecodable reply");
		r = -EPROTO;
		goto fail;
	}
	*n = got;
	return 0;

fail:
	while (got > 0)
		mbox_msg_free(msgs[--got]);
	return r;
}

static int
recv_once(mbox *m, const char *mailbox, size_t max, uint64_t wait_ms,
	  uint64_t lease_ms, mbox_msg **msgs, size_t *n)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	id = req_begin(m, MBOX_OP_RECV);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	proto_put_u64(&m->tx, MBOX_TAG_COUNT, max);
	if (wait_ms)
		proto_put_u64(&m->tx, MBOX_TAG_WAIT_MS, wait_ms);
	if (lease_ms)
		proto_put_u64(&m->tx, MBOX_TAG_LEASE_MS, lease_ms);
	r = req_call(m, id, MBOX_OP_RECV, &fr, &f, 0);
	if (r < 0)
		return r;
	r = msgs_decode(m, fr, mailbox, max, msgs, n);
	frame_free(fr);
	return r;
}

int
mbox_recv(mbox *m, const char *mailbox, size_t max, int64_t wait_ms,
	  uint64_t lease_ms, mbox_msg **msgs, size_t *n)
{
	int r;

	if (n)
		*n = 0;
	r = mbox_enter(m);
	if (r < 0)
		return r;
	r = check_name(m, mailbox);
	if (r < 0)
		return r;
	if (!msgs || !n || max == 0 || max > MBOX_RECV_MAX) {
		mbox_set_error(m, "recv takes 1-%u messages at a time",
			       MBOX_RECV_MAX);
		return -EINVAL;
	}
	for (;;) {
		uint64_t w =
			wait_ms < 0 ? RECV_FOREVER_SLICE_MS : (uint64_t)wait_ms;

		r = recv_once(m, mailbox, max, w, lease_ms, msgs, n);
		if (r < 0 || *n > 0 || wait_ms >= 0)
			return r;
	}
}

static int
ids_check(mbox *m, const uint64_t *ids, size_t n)
{
	if (!ids || n == 0) {
		mbox_set_error(m, "no message ids given");
		return -EINVAL;
	}
	return 0;
}

/*
 * ACK, NACK, TOUCH and REJECT: a list of ids, at most one optional u64
 * (NACK's DELAY_MS, TOUCH's LEASE_MS: tag 0 or value 0 = none), and for
 * TOUCH the DEADLINE_NS of the reply (deadline_ns may be NULL).
 */
static int
settle(mbox *m, uint16_t op, const uint64_t *ids, size_t n, uint16_t tag,
       uint64_t val, int64_t *deadline_ns)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	size_t i;
	int r;

	r = mbox_enter(m);
	if (r < 0)
		return r;
	r = ids_check(m, ids, n);
	if (r < 0)
		return r;
	id = req_begin(m, op);
	for (i = 0; i < n; i++)
		proto_put_u64(&m->tx, MBOX_TAG_ID, ids[i]);
	if (tag && val)
		proto_put_u64(&m->tx, tag, val);
	r = req_call(m, id, op, &fr, &f,
		     deadline_ns ? PROTO_BIT(MBOX_TAG_DEADLINE_NS) : 0);
	if (r == 0 && deadline_ns)
		*deadline_ns = (int64_t)proto_u64(&f, MBOX_TAG_DEADLINE_NS, 0);
	frame_free(fr);
	return r;
}

int
mbox_ack(mbox *m, const uint64_t *ids, size_t n)
{
	return settle(m, MBOX_OP_ACK, ids, n, 0, 0, NULL);
}

int
mbox_nack(mbox *m, const uint64_t *ids, size_t n, uint64_t delay_ms)
{
	return settle(m, MBOX_OP_NACK, ids, n, MBOX_TAG_DELAY_MS, delay_ms,
		      NULL);
}

int
mbox_touch(mbox *m, const uint64_t *ids, size_t n, uint64_t lease_ms,
	   int64_t *deadline_ns)
{
	int64_t tmp;

	return settle(m, MBOX_OP_TOUCH, ids, n, MBOX_TAG_LEASE_MS, lease_ms,
		      deadline_ns ? deadline_ns : &tmp);
}

int
mbox_reject(mbox *m, const uint64_t *ids, size_t n)
{
	return settle(m, MBOX_OP_REJECT, ids, n, 0, 0, NULL);
}

int
mbox_peek(mbox *m, const char *mailbox, size_t max, uint64_t from_id,
	  unsigned flags, mbox_msg **msgs, size_t *n)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	if (n)
		*n = 0;
	r = mbox_enter(m);
	if (r < 0)
		return r;
	r = check_name(m, mailbox);
	if (r < 0)
		return r;
	if (!msgs || !n || max == 0 || max > MBOX_RECV_MAX) {
		mbox_set_error(m, "peek takes 1-%u messages at a time",
			       MBOX_RECV_MAX);
		return -EINVAL;
	}
	if (flags & ~MBOX_PEEK_DEAD_ONLY) {
		mbox_set_error(m, "unknown peek flags 0x%x", flags);
		return -EINVAL;
	}
	id = req_begin(m, MBOX_OP_PEEK);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	proto_put_u64(&m->tx, MBOX_TAG_COUNT, max);
	if (from_id)
		proto_put_u64(&m->tx, MBOX_TAG_FROM_ID, from_id);
	if (flags & MBOX_PEEK_DEAD_ONLY)
		proto_put_u64(&m->tx, MBOX_TAG_FLAGS, MBOX_PEEK_DEAD);
	r = req_call(m, id, MBOX_OP_PEEK, &fr, &f, 0);
	if (r < 0)
		return r;
	r = msgs_decode(m, fr, mailbox, max, msgs, n);
	frame_free(fr);
	return r;
}

static int
info_decode(const ProtoField *fl, mbox_mailbox_info *info, char why[128])
{
	ProtoFields f;
	const char *reason = NULL;
	ProtoSlice name;
	int r;

	r = proto_fields_parse(&f, fl->val ? fl->val : empty_body, fl->len, why,
			       &reason);
	if (r < 0) {
		if (reason && reason != why)
			snprintf(why, 128, "%s", reason);
		return r;
	}
	r = proto_fields_check(&f, ~UINT64_C(0), PROTO_BIT(MBOX_TAG_MAILBOX),
			       why);
	if (r < 0)
		return r;
	name = f.first[MBOX_TAG_MAILBOX];
	info->name = strndup((const char *)name.ptr, name.len);
	if (!info->name)
		return -ENOMEM;
	info->ready = proto_u64(&f, MBOX_TAG_READY, 0);
	info->leased = proto_u64(&f, MBOX_TAG_LEASED, 0);
	info->delayed = proto_u64(&f, MBOX_TAG_DELAYED, 0);
	info->dead = proto_u64(&f, MBOX_TAG_DEAD, 0);
	info->bytes = proto_u64(&f, MBOX_TAG_BYTES, 0);
	info->oldest_ns = (int64_t)proto_u64(&f, MBOX_TAG_OLDEST_NS, 0);
	info->consumers = proto_u64(&f, MBOX_TAG_CONSUMERS, 0);
	info->owner_uid = (uint32_t)proto_u64(&f, MBOX_TAG_OWNER_UID, 0);
	info->gid = (uint32_t)proto_u64(&f, MBOX_TAG_GROUP_GID, 0);
	info->mode = (uint32_t)proto_u64(&f, MBOX_TAG_MODE, 0);
	return 0;
}

int
mbox_list(mbox *m, mbox_mailbox_info **list, size_t *n)
{
	ProtoFields f;
	ProtoReader rd;
	ProtoField fl;
	Frame *fr = NULL;
	mbox_mailbox_info *infos = NULL;
	char why[128] = "";
	size_t count, got = 0;
	uint32_t id;
	int r;

	if (list)
		*list = NULL;
	if (n)
		*n = 0;
	r = mbox_enter(m);
	if (r < 0)
		return r;
	if (!list || !n) {
		mbox_set_error(m, "no place for the list given");
		return -EINVAL;
	}
	id = req_begin(m, MBOX_OP_LIST);
	r = req_call(m, id, MBOX_OP_LIST, &fr, &f, 0);
	if (r < 0)
		return r;
	count = f.count[MBOX_TAG_INFO];
	if (count) {
		infos = calloc(count, sizeof(*infos));
		if (!infos) {
			mbox_set_error(m, "out of memory");
			r = -ENOMEM;
			goto fail;
		}
	}
	proto_reader_init(&rd, fr->body ? fr->body : empty_body, fr->len);
	while (got < count && (r = proto_reader_next(&rd, &fl)) > 0) {
		if (fl.tag != MBOX_TAG_INFO)
			continue;
		r = info_decode(&fl, &infos[got], why);
		if (r == -ENOMEM) {
			mbox_set_error(m, "out of memory");
			goto fail;
		}
		if (r < 0) {
			mbox_set_error(m, "undecodable mailbox summary: %s",
				       why);
			r = -EPROTO;
			goto fail;
		}
		got++;
	}
	if (got != count) {
		mbox_set_error(m, "undecodable reply to LIST");
		r = -EPROTO;
		goto fail;
	}
	frame_free(fr);
	*list = infos;
	*n = count;
	return 0;

fail:
	mbox_list_free(infos, got);
	frame_free(fr);
	return r;
}

void
mbox_list_free(mbox_mailbox_info *list, size_t n)
{
	size_t i;

	if (!list)
		return;
	for (i = 0; i < n; i++)
		free(list[i].name);
	free(list);
}

/* -------------------------------------------------------------------- */
/* Mailbox administration */

/*
 * The requests that name one mailbox: MAILBOX, at most one optional u64
 * (tag 0 or value 0 = none), and a reply that is empty or, when count is
 * not NULL, carries COUNT.
 */
static int
mailbox_req(mbox *m, uint16_t op, const char *mailbox, uint16_t tag,
	    uint64_t val, uint64_t *count)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	r = mbox_enter(m);
	if (r < 0)
		return r;
	r = check_name(m, mailbox);
	if (r < 0)
		return r;
	id = req_begin(m, op);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	if (tag && val)
		proto_put_u64(&m->tx, tag, val);
	r = req_call(m, id, op, &fr, &f, count ? PROTO_BIT(MBOX_TAG_COUNT) : 0);
	if (r == 0 && count)
		*count = proto_u64(&f, MBOX_TAG_COUNT, 0);
	frame_free(fr);
	return r;
}

static int
flags_check(mbox *m, const char *what, unsigned flags, unsigned known)
{
	if (flags & ~known) {
		mbox_set_error(m, "unknown %s flags 0x%x", what,
			       flags & ~known);
		return -EINVAL;
	}
	return 0;
}

int
mbox_delete(mbox *m, const char *mailbox, unsigned flags)
{
	if (m && flags_check(m, "delete", flags, MBOX_DELETE_FORCE_FLAG))
		return -EINVAL;
	return mailbox_req(
		m, MBOX_OP_DELETE, mailbox, MBOX_TAG_FLAGS,
		flags & MBOX_DELETE_FORCE_FLAG ? MBOX_DELETE_FORCE : 0, NULL);
}

int
mbox_purge(mbox *m, const char *mailbox, unsigned flags, uint64_t *count)
{
	uint64_t tmp;

	if (m && flags_check(m, "purge", flags, MBOX_PURGE_DEAD_ONLY))
		return -EINVAL;
	return mailbox_req(m, MBOX_OP_PURGE, mailbox, MBOX_TAG_FLAGS,
			   flags & MBOX_PURGE_DEAD_ONLY ? MBOX_PURGE_DEAD : 0,
			   count ? count : &tmp);
}

int
mbox_kick(mbox *m, const char *mailbox, uint64_t max, uint64_t *count)
{
	uint64_t tmp;

	return mailbox_req(m, MBOX_OP_KICK, mailbox, MBOX_TAG_COUNT, max,
			   count ? count : &tmp);
}

int
mbox_pause(mbox *m, const char *mailbox)
{
	return mailbox_req(m, MBOX_OP_PAUSE, mailbox, 0, 0, NULL);
}

int
mbox_resume(mbox *m, const char *mailbox)
{
	return mailbox_req(m, MBOX_OP_RESUME, mailbox, 0, 0, NULL);
}

/* -------------------------------------------------------------------- */
/* Fan-out */

static int
check_topic(mbox *m, const char *topic, bool pattern)
{
	size_t len = topic ? strlen(topic) : 0;

	if (topic && (pattern ? topic_pattern_valid(topic, len)
			      : topic_valid(topic, len)))
		return 0;
	mbox_set_error(m,
		       "invalid topic%s \"%.64s\"%s: words of A-Z a-z 0-9 _ - "
		       "separated by dots, 1-%u bytes%s",
		       pattern ? " pattern" : "", topic ? topic : "",
		       len > 64 ? "..." : "", MBOX_TOPIC_MAX,
		       pattern ? "; a word may be *, the last one >" : "");
	return -EINVAL;
}

/* BIND and UNBIND: MAILBOX, TOPIC (a pattern), empty reply. */
static int
binding_req(mbox *m, uint16_t op, const char *mailbox, const char *pattern)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	r = mbox_enter(m);
	if (r < 0)
		return r;
	r = check_name(m, mailbox);
	if (r < 0)
		return r;
	r = check_topic(m, pattern, true);
	if (r < 0)
		return r;
	id = req_begin(m, op);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	proto_put_str(&m->tx, MBOX_TAG_TOPIC, pattern);
	r = req_call(m, id, op, &fr, &f, 0);
	frame_free(fr);
	return r;
}

int
mbox_bind(mbox *m, const char *mailbox, const char *pattern)
{
	return binding_req(m, MBOX_OP_BIND, mailbox, pattern);
}

int
mbox_unbind(mbox *m, const char *mailbox, const char *pattern)
{
	return binding_req(m, MBOX_OP_UNBIND, mailbox, pattern);
}

int
mbox_publish(mbox *m, const char *topic, const void *data, size_t len,
	     const mbox_post_opts *opts, size_t *copies)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	if (copies)
		*copies = 0;
	r = mbox_enter(m);
	if (r < 0)
		return r;
	r = check_topic(m, topic, false);
	if (r < 0)
		return r;
	if (opts && opts->dedup) {
		mbox_set_error(m, "a published message takes no dedup key");
		return -EINVAL;
	}
	r = post_item_check(m, 0, 1, data, len, opts);
	if (r < 0)
		return r;
	id = req_begin(m, MBOX_OP_PUBLISH);
	proto_put_str(&m->tx, MBOX_TAG_TOPIC, topic);
	post_item_put(&m->tx, data, len, opts);
	r = req_call(m, id, MBOX_OP_PUBLISH, &fr, &f,
		     PROTO_BIT(MBOX_TAG_COUNT));
	if (r == 0 && copies)
		*copies = (size_t)proto_u64(&f, MBOX_TAG_COUNT, 0);
	frame_free(fr);
	return r;
}

/* -------------------------------------------------------------------- */
/* Push subscriptions */

int
mbox_subscribe(mbox *m, const char *mailbox, unsigned window, uint64_t lease_ms,
	       unsigned flags, int *standby)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	if (standby)
		*standby = 0;
	r = mbox_enter(m);
	if (r < 0)
		return r;
	r = check_name(m, mailbox);
	if (r < 0)
		return r;
	if (window == 0 || window > MBOX_WINDOW_MAX) {
		mbox_set_error(m, "the window is 1-%u messages",
			       MBOX_WINDOW_MAX);
		return -EINVAL;
	}
	r = flags_check(m, "subscribe", flags, MBOX_SUB_EXCLUSIVE_FLAG);
	if (r < 0)
		return r;
	id = req_begin(m, MBOX_OP_SUBSCRIBE);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	proto_put_u64(&m->tx, MBOX_TAG_COUNT, window);
	if (lease_ms)
		proto_put_u64(&m->tx, MBOX_TAG_LEASE_MS, lease_ms);
	if (flags & MBOX_SUB_EXCLUSIVE_FLAG)
		proto_put_u64(&m->tx, MBOX_TAG_FLAGS, MBOX_SUB_EXCLUSIVE);
	r = req_call(m, id, MBOX_OP_SUBSCRIBE, &fr, &f, 0);
	if (r == 0 && standby)
		*standby =
			!!(proto_u64(&f, MBOX_TAG_FLAGS, 0) & MBOX_SUB_STANDBY);
	frame_free(fr);
	return r;
}

int
mbox_unsubscribe(mbox *m, const char *mailbox)
{
	return mailbox_req(m, MBOX_OP_UNSUBSCRIBE, mailbox, 0, 0, NULL);
}

size_t
mbox_pending(const mbox *m)
{
	return m ? m->push_n : 0;
}

/* Monotonic clock in ms, for timeouts. */
static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* now + ms (ms >= 0), saturating: a huge timeout must not overflow. */
static int64_t
deadline_after(int64_t ms)
{
	int64_t now = now_ms();

	return ms > INT64_MAX - now ? INT64_MAX : now + ms;
}

/*
 * Read one frame without blocking and route it (rx_route). Returns 1 when
 * a frame was read, 0 when the socket had no whole frame, or an error.
 */
static int
rx_poll_once(mbox *m)
{
	Frame *f;
	int r;

	if (m->broken)
		return m->broken;
	r = rx_frame(m, &f, true);
	if (r == -EAGAIN)
		return 0;
	if (r < 0)
		return r;
	r = rx_route(m, f);
	return r < 0 ? r : 1;
}

int
mbox_next(mbox *m, int64_t wait_ms, mbox_msg **msg)
{
	int64_t deadline;
	int r;

	if (msg)
		*msg = NULL;
	if (!m || !msg)
		return -EINVAL;
	m->error[0] = '\0';
	deadline = deadline_after(wait_ms < 0 ? 0 : wait_ms);
	for (;;) {
		struct pollfd pfd = {.fd = m->fd, .events = POLLIN};
		int64_t left;

		/* Queued ones first, even from a connection that broke
		 * since: they were read whole. */
		*msg = push_pop(m);
		if (*msg)
			return 0;
		r = rx_poll_once(m);
		if (r < 0)
			return r;
		if (r > 0)
			continue;
		left = wait_ms < 0 ? -1 : deadline - now_ms();
		if (wait_ms >= 0 && left <= 0)
			break;
		r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r < 0 && errno != EINTR) {
			r = -errno;
			mbox_set_error(m, "poll: %s", strerror(-r));
			return r;
		}
	}
	mbox_set_error(m, "no message pushed within %lld ms",
		       (long long)wait_ms);
	return -ETIMEDOUT;
}

/*
 * Frames read per mbox_dispatch at most: the windows bound what the
 * broker may push, this bounds the loop even against a broker that
 * ignores them. What is left keeps the fd readable.
 */
#define DISPATCH_READ_MAX 4096

int
mbox_dispatch(mbox *m, mbox_deliver_fn fn, void *ctx)
{
	size_t budget, done = 0;
	int r = 0, i;
	mbox_msg *msg;

	if (!m || !fn)
		return -EINVAL;
	m->error[0] = '\0';
	for (i = 0; i < DISPATCH_READ_MAX; i++) {
		r = rx_poll_once(m);
		if (r <= 0)
			break;
	}
	/*
	 * Only what is queued now: fn's own calls (an ack that opens the
	 * window) read more pushes, and under steady traffic handing those
	 * out too would never return to the caller's loop. They stay
	 * queued; mbox_pending tells the loop.
	 */
	budget = m->push_n;
	while (done < budget && (msg = push_pop(m))) {
		fn(ctx, msg);
		done++;
	}
	if (done == 0 && r < 0)
		return r;
	return done > INT_MAX ? INT_MAX : (int)done;
}

/* -------------------------------------------------------------------- */
/* Hand-off */

static bool
token_valid(const char *s, size_t len)
{
	size_t i;

	if (len != MBOX_TOKEN_HEX)
		return false;
	for (i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

int
mbox_handoff(mbox *m, uint64_t wait_ms, char token[MBOX_TOKEN_SIZE],
	     int64_t *deadline_ns)
{
	ProtoFields f;
	ProtoSlice t;
	Frame *fr;
	uint32_t id;
	int r;

	if (token)
		token[0] = '\0';
	r = mbox_enter(m);
	if (r < 0)
		return r;
	if (!token) {
		mbox_set_error(m, "no place for the token given");
		return -EINVAL;
	}
	id = req_begin(m, MBOX_OP_HANDOFF);
	if (wait_ms)
		proto_put_u64(&m->tx, MBOX_TAG_WAIT_MS, wait_ms);
	r = req_call(m, id, MBOX_OP_HANDOFF, &fr, &f,
		     PROTO_BIT(MBOX_TAG_TOKEN) |
			     PROTO_BIT(MBOX_TAG_DEADLINE_NS));
	if (r < 0)
		return r;
	/*
	 * Every push sent before the reply has been read by now (one stream,
	 * in order), and the broker parked those messages with the rest: they
	 * are the successor's, not ours to hand out.
	 */
	push_drop_all(m);
	t = f.first[MBOX_TAG_TOKEN];
	if (!token_valid((const char *)t.ptr, t.len)) {
		frame_free(fr);
		mbox_set_error(m, "the broker sent a malformed hand-off token");
		return -EPROTO;
	}
	memcpy(token, t.ptr, t.len);
	token[t.len] = '\0';
	if (deadline_ns)
		*deadline_ns = (int64_t)proto_u64(&f, MBOX_TAG_DEADLINE_NS, 0);
	frame_free(fr);
	return 0;
}

int
mbox_claim(mbox *m, const char *token, size_t *count)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	if (count)
		*count = 0;
	r = mbox_enter(m);
	if (r < 0)
		return r;
	if (!token || !token_valid(token, strlen(token))) {
		mbox_set_error(m, "a hand-off token is %u lowercase hex digits",
			       MBOX_TOKEN_HEX);
		return -EINVAL;
	}
	id = req_begin(m, MBOX_OP_CLAIM);
	proto_put_str(&m->tx, MBOX_TAG_TOKEN, token);
	/* The broker pushes the messages before it answers: reply_wait has
	 * queued them all by the time it returns. */
	r = req_call(m, id, MBOX_OP_CLAIM, &fr, &f, PROTO_BIT(MBOX_TAG_COUNT));
	if (r == 0 && count)
		*count = (size_t)proto_u64(&f, MBOX_TAG_COUNT, 0);
	frame_free(fr);
	return r;
}

/* -------------------------------------------------------------------- */
/* Request / reply */

#define HDR_REPLY_TO	   "reply-to"
#define HDR_CORRELATION_ID "correlation-id"

/* n random bytes as 2n lowercase hex digits and a NUL into out. */
static int
random_hex(char *out, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t buf[32];
	size_t got = 0, i;

	if (n > sizeof(buf))
		return -EINVAL;
	while (got < n) {
		ssize_t r = getrandom(buf + got, n - got, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)r;
	}
	for (i = 0; i < n; i++) {
		out[2 * i] = hex[buf[i] >> 4];
		out[2 * i + 1] = hex[buf[i] & 15];
	}
	out[2 * n] = '\0';
	return 0;
}

/*
 * A new {key, value, ..., NULL} array: headers (may be NULL) followed by
 * the pairs k1=v1 and, if k2 is not NULL, k2=v2. Only the array is
 * allocated; the strings stay the callers'.
 */
static const char **
headers_join(const char *const *headers, const char *k1, const char *v1,
	     const char *k2, const char *v2)
{
	const char **h;
	size_t n = 0, i;

	while (headers && headers[n])
		n++;
	h = malloc((n + 5) * sizeof(*h));
	if (!h)
		return NULL;
	for (i = 0; i < n; i++)
		h[i] = headers[i];
	if (n % 2) {
		/* A key without value: leave it last, for post_item_check
		 * to name it. */
		h[n] = NULL;
		return h;
	}
	h[n++] = k1;
	h[n++] = v1;
	if (k2) {
		h[n++] = k2;
		h[n++] = v2;
	}
	h[n] = NULL;
	return h;
}

/* The call's temporary reply mailbox, created on first use. */
static int
call_reply_box(mbox *m)
{
	static const char *const settings[] = {"temp=1", "mode=0622", NULL};
	char name[64], rnd[17];
	int r;

	if (m->reply_box)
		return 0;
	r = random_hex(rnd, 8);
	if (r < 0) {
		mbox_set_error(m, "getrandom: %s", strerror(-r));
		return r;
	}
	snprintf(name, sizeof(name), "reply.%ld.%s", (long)getpid(), rnd);
	r = mbox_create(m, name, settings);
	if (r < 0)
		return r;
	m->reply_box = strdup(name);
	if (!m->reply_box) {
		/* The mailbox stays until the connection closes; harmless. */
		mbox_set_error(m, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/*
 * Take what is in the reply mailbox, waiting up to wait_ms for the first
 * one; ack all of it. The one with correlation id cid, if there, goes to
 * *reply; earlier calls' late replies are dropped.
 */
static int
call_take(mbox *m, const char *cid, uint64_t wait_ms, mbox_msg **reply)
{
	mbox_msg *msgs[16];
	uint64_t ids[16];
	size_t n = 0, i;
	int r;

	r = recv_once(m, m->reply_box, 16, wait_ms, 0, msgs, &n);
	if (r < 0)
		return r;
	for (i = 0; i < n; i++) {
		const char *c = mbox_msg_header(msgs[i], HDR_CORRELATION_ID);

		ids[i] = mbox_msg_id(msgs[i]);
		if (!*reply && c && strcmp(c, cid) == 0)
			*reply = msgs[i];
		else
			mbox_msg_free(msgs[i]);
	}
	if (n == 0)
		return 0;
	r = settle(m, MBOX_OP_ACK, ids, n, 0, 0, NULL);
	/*
	 * With the reply in hand a failed ack costs nothing: the mailbox is
	 * ours, and a later call drops what comes back.
	 */
	return *reply ? 0 : r;
}

static int
call_check(mbox *m, const mbox_post_opts *opts)
{
	const char *const *h = opts ? opts->headers : NULL;
	size_t i;

	for (i = 0; h && h[i] && h[i + 1]; i += 2) {
		if (strcmp(h[i], HDR_REPLY_TO) == 0 ||
		    strcmp(h[i], HDR_CORRELATION_ID) == 0) {
			mbox_set_error(m, "header \"%s\" is set by the call",
				       h[i]);
			return -EINVAL;
		}
	}
	return 0;
}

int
mbox_call(mbox *m, const char *mailbox, const void *data, size_t len,
	  const mbox_post_opts *opts, int64_t timeout_ms, mbox_msg **reply)
{
	mbox_post_opts o = {0};
	const char **headers;
	char cid[2 * 16 + 1];
	int64_t deadline;
	int r;

	if (reply)
		*reply = NULL;
	r = mbox_enter(m);
	if (r < 0)
		return r;
	if (!reply) {
		mbox_set_error(m, "no place for the reply given");
		return -EINVAL;
	}
	r = check_name(m, mailbox);
	if (r < 0)
		return r;
	r = call_check(m, opts);
	if (r < 0)
		return r;
	deadline = deadline_after(timeout_ms < 0 ? 0 : timeout_ms);
	r = random_hex(cid, 16);
	if (r < 0) {
		mbox_set_error(m, "getrandom: %s", strerror(-r));
		return r;
	}
	r = call_reply_box(m);
	if (r < 0)
		return r;
	if (opts)
		o = *opts;
	headers = headers_join(o.headers, HDR_REPLY_TO, m->reply_box,
			       HDR_CORRELATION_ID, cid);
	if (!headers) {
		mbox_set_error(m, "out of memory");
		return -ENOMEM;
	}
	o.headers = headers;
	r = mbox_post(m, mailbox, data, len, &o, NULL);
	free(headers);
	if (r < 0)
		return r;
	for (;;) {
		int64_t left = deadline - now_ms();
		uint64_t w = timeout_ms < 0 ? RECV_FOREVER_SLICE_MS
			     : left > 0	    ? (uint64_t)left
					    : 0;

		r = call_take(m, cid, w, reply);
		if (r < 0 || *reply)
			return r;
		if (timeout_ms >= 0 && deadline - now_ms() <= 0)
			break;
	}
	mbox_set_error(m, "no reply from %.64s within %lld ms", mailbox,
		       (long long)timeout_ms);
	return -ETIMEDOUT;
}

int
mbox_reply(mbox *m, const mbox_msg *request, const void *data, size_t len,
	   const char *const *headers)
{
	mbox_post_opts o = {0};
	const char *to, *cid;
	const char **h;
	int r;

	r = mbox_enter(m);
	if (r < 0)
		return r;
	to = request ? mbox_msg_header(request, HDR_REPLY_TO) : NULL;
	if (!to) {
		mbox_set_error(m, "the request has no reply-to header");
		return -EINVAL;
	}
	cid = mbox_msg_header(request, HDR_CORRELATION_ID);
	h = cid ? headers_join(headers, HDR_CORRELATION_ID, cid, NULL, NULL)
		: NULL;
	if (cid && !h) {
		mbox_set_error(m, "out of memory");
		return -ENOMEM;
	}
	o.headers = h ? h : headers;
	r = mbox_post(m, to, data, len, &o, NULL);
	free(h);
	return r;
}
