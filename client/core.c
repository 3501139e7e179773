/*
 * core.c - the engine of libmbox: requests in flight, frame I/O, reply
 * matching and the push queue.
 *
 * Every call is built on the same steps: core_begin() starts a frame with
 * a fresh request id, core_call() puts it on the wire and reads frames
 * until the reply with that id arrives. All encoding, decoding and
 * reassembly goes through the shared codec (client/proto.h).
 *
 * Invariants (see also libmbox-int.h):
 * - Replies are matched by id, never by order: the broker may answer a
 *   later PING before an earlier RECV that waits. A reply to another
 *   in-flight request that arrives while we wait for one is parked until
 *   its own caller asks for it, so several requests can be outstanding on
 *   one connection (pipelining), even though the blocking calls only ever
 *   have one.
 * - Whoever reads a push from the socket (a blocking call waiting for its
 *   reply, mbox_next, mbox_dispatch) decodes every MSG of a DELIVER push
 *   into the push queue, in arrival order. Other push opcodes are
 *   dropped: a newer broker may add some.
 * - A frame goes out whole or the connection is marked broken: half a
 *   frame on the wire would desynchronise the broker's reassembly. After
 *   a failed send, a closed socket or a framing error on receive, every
 *   call returns m->broken without touching the socket again.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "client/libmbox-int.h"
#include "client/msg.h"
#include "client/proto.h"

const uint8_t core_empty[1];

/* Mark the connection unusable; returns err for tail calls. */
static int
core_break(mbox *m, int err)
{
	if (!m->broken)
		m->broken = err;
	return err;
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

void
core_frame_free(Frame *f)
{
	if (f) {
		free(f->body);
		free(f);
	}
}

void
core_frame_reader(ProtoReader *rd, const Frame *fr)
{
	proto_reader_init(rd, fr->body ? fr->body : core_empty, fr->len);
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
			error_set(m, "send: %s", strerror(e));
			if (errno_is_disconnect(e))
				return core_break(m, -ECONNRESET);
			if (off == 0)
				return -e;
			return core_break(m, -e);
		}
		if ((size_t)r != n) {
			/* Cannot happen on SOCK_SEQPACKET: sends are atomic. */
			error_set(m, "send: short datagram");
			return core_break(m, -EPROTO);
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
			error_set(m, "receive: %s", strerror(e));
			if (errno_is_disconnect(e))
				return core_break(m, -ECONNRESET);
			/* We may have lost part of a frame: stop here. */
			return core_break(m, -e);
		}
		if (n == 0) {
			error_set(m, "the broker closed the connection");
			return core_break(m, -ECONNRESET);
		}
		if (mh.msg_flags & MSG_TRUNC) {
			error_set(m, "the broker sent a datagram larger "
				     "than 64 KiB");
			return core_break(m, -EPROTO);
		}
		r = proto_asm_feed(&m->rx, m->dgram, (size_t)n);
		if (r == -ENOMEM) {
			error_set(m, "out of memory reassembling a reply");
			return core_break(m, -ENOMEM);
		}
		if (r < 0) {
			error_set(m, "the broker broke the framing");
			return core_break(m, -EPROTO);
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
			error_set(m, "out of memory");
			/* The reply is lost; so is its waiter. */
			return core_break(m, -ENOMEM);
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

/* Append msg, which the queue owns from now on (freed if it cannot be
 * kept: -ENOMEM). */
static int
push_queue(mbox *m, mbox_msg *msg)
{
	if (m->push_n == m->push_cap) {
		size_t cap = m->push_cap ? 2 * m->push_cap : 16, i;
		mbox_msg **v = malloc(cap * sizeof(*v));

		if (!v) {
			mbox_msg_free(msg);
			return -ENOMEM;
		}
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

const mbox_msg *
core_push_peek(const mbox *m)
{
	return m->push_n ? m->pushq[m->push_head] : NULL;
}

mbox_msg *
core_push_pop(mbox *m)
{
	mbox_msg *msg;

	if (m->push_n == 0)
		return NULL;
	msg = m->pushq[m->push_head];
	m->push_head = (m->push_head + 1) % m->push_cap;
	m->push_n--;
	return msg;
}

void
core_push_drop_all(mbox *m)
{
	mbox_msg *msg;

	while ((msg = core_push_pop(m)))
		mbox_msg_free(msg);
}

/* A push that could not be queued (r: -ENOMEM, or undecodable): break
 * the connection, saying what (a noun) and why. */
static int
push_fail(mbox *m, int r, const char *what, const char *why)
{
	if (r == -ENOMEM) {
		error_set(m, "out of memory queueing %s", what);
		return core_break(m, -ENOMEM);
	}
	error_set(m, "cannot decode %s pushed by the broker%s%s", what,
		  why[0] ? ": " : "", why);
	return core_break(m, -EPROTO);
}

/*
 * Queue the end of a subscription (an ENDED push) after the messages
 * pushed before it; frees f. As with a DELIVER, one that cannot be read
 * or kept breaks the connection rather than leave the caller waiting for
 * pushes that will never come.
 */
static int
push_take_end(mbox *m, Frame *f)
{
	ProtoFields fields;
	ProtoSlice text;
	mbox_msg *end;
	char why[128] = "";
	int r;

	r = msg_parse_fields(&fields, f->body ? f->body : core_empty, f->len,
			     ~UINT64_C(0), PROTO_BIT(MBOX_TAG_MAILBOX), why);
	if (r == 0) {
		text = fields.first[MBOX_TAG_TEXT];
		if (!proto_has(&fields, MBOX_TAG_TEXT))
			text.len = 0;
		r = msg_new_end(fields.first[MBOX_TAG_MAILBOX], text, &end);
		if (r == 0)
			r = push_queue(m, end);
	}
	core_frame_free(f);
	return r < 0 ? push_fail(m, r, "the end of a subscription", why) : 0;
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

	if (f->hdr.opcode == MBOX_OP_ENDED && !f->too_large)
		return push_take_end(m, f);
	if (f->hdr.opcode != MBOX_OP_DELIVER) {
		/* A push of a later protocol revision: not for us. */
		core_frame_free(f);
		return 0;
	}
	if (f->too_large) {
		core_frame_free(f);
		error_set(m, "the broker pushed a frame over MAX_FRAME");
		return core_break(m, -EPROTO);
	}
	core_frame_reader(&rd, f);
	while ((r = proto_reader_next(&rd, &fl)) > 0) {
		if (fl.tag != MBOX_TAG_MSG)
			continue;
		r = msg_decode(fl.val, fl.len, NULL, &msg, why);
		if (r == 0)
			r = push_queue(m, msg);
		if (r < 0)
			break;
	}
	core_frame_free(f);
	return r < 0 ? push_fail(m, r, "a pushed message", why) : 0;
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
		core_frame_free(f);
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

int
core_poll(mbox *m)
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

/* -------------------------------------------------------------------- */
/* Requests */

uint32_t
core_begin(mbox *m, uint16_t opcode)
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
		error_set(m, "request too large to encode");
		return -EMSGSIZE;
	}
	if (r < 0) {
		error_set(m, "out of memory encoding the request");
		return r;
	}
	if (len - MBOX_PROTO_HEADER_SIZE > m->max_frame) {
		/* The broker would read and discard it: spare us both. */
		error_set(m,
			  "request of %zu bytes exceeds the broker's "
			  "limit of %zu bytes (MAX_FRAME)",
			  len - MBOX_PROTO_HEADER_SIZE, m->max_frame);
		return -EMSGSIZE;
	}
	r = inflight_add(m, id);
	if (r < 0) {
		error_set(m, "out of memory");
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
	int r;

	if (fr->too_large) {
		error_set(m,
			  "the broker's reply to %s (%u bytes) exceeds "
			  "its own MAX_FRAME",
			  proto_op_name(opcode), fr->hdr.body_len);
		return -EPROTO;
	}
	if (fr->hdr.opcode != opcode) {
		error_set(m, "the broker answered %s with opcode %u",
			  proto_op_name(opcode), fr->hdr.opcode);
		return -EPROTO;
	}
	r = msg_parse_fields(f, fr->body, fr->len, ~UINT64_C(0), 0, why);
	if (fr->hdr.status != MBOX_S_OK) {
		const char *text = proto_status_text(fr->hdr.status);
		int tlen = (int)strlen(text);

		if (r == 0 && proto_has(f, MBOX_TAG_TEXT)) {
			text = (const char *)f->first[MBOX_TAG_TEXT].ptr;
			tlen = (int)f->first[MBOX_TAG_TEXT].len;
		}
		if (r == 0 && proto_has(f, MBOX_TAG_LIMIT))
			error_set(m, "%.*s (limit: %.*s)", tlen, text,
				  (int)f->first[MBOX_TAG_LIMIT].len,
				  (const char *)f->first[MBOX_TAG_LIMIT].ptr);
		else
			error_set(m, "%.*s", tlen, text);
		return error_from_status(fr->hdr.status);
	}
	if (r < 0) {
		error_set(m, "undecodable reply to %s: %s",
			  proto_op_name(opcode), why);
		return -EPROTO;
	}
	if (required && proto_fields_check(f, ~UINT64_C(0), required, why)) {
		error_set(m, "reply to %s: %s", proto_op_name(opcode), why);
		return -EPROTO;
	}
	return 0;
}

/*
 * Send the request built in m->tx and wait for its reply. On success *out
 * is the reply frame (caller frees with core_frame_free) and *f its fields.
 */
int
core_call(mbox *m, uint32_t id, uint16_t opcode, Frame **out, ProtoFields *f,
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
		core_frame_free(fr);
		return r;
	}
	*out = fr;
	return 0;
}

/* -------------------------------------------------------------------- */
/* Entry */

int
core_enter(mbox *m)
{
	if (!m)
		return -EINVAL;
	m->error[0] = '\0';
	if (m->broken) {
		error_set(m, "the connection to the broker is broken");
		return m->broken;
	}
	return 0;
}

int
core_enter_mailbox(mbox *m, const char *mailbox)
{
	int r = core_enter(m);

	return r < 0 ? r : check_name(m, mailbox);
}

void
core_release(mbox *m)
{
	Frame *f;

	while ((f = m->parked)) {
		m->parked = f->next;
		core_frame_free(f);
	}
	core_push_drop_all(m);
	free(m->pushq);
	proto_asm_release(&m->rx);
	proto_writer_release(&m->tx);
	free(m->inflight);
	free(m->dgram);
}

/* -------------------------------------------------------------------- */
/* Time */

int64_t
core_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Saturating: a huge timeout must not overflow. */
int64_t
core_deadline_after(int64_t ms)
{
	int64_t now = core_now_ms();

	return ms > INT64_MAX - now ? INT64_MAX : now + ms;
}

uint64_t
core_wait_slice(int64_t deadline, bool forever)
{
	int64_t left = deadline - core_now_ms();

	if (forever || left > (int64_t)RECV_FOREVER_SLICE_MS)
		return RECV_FOREVER_SLICE_MS;
	return left > 0 ? (uint64_t)left : 0;
}
