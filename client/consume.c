/*
 * consume.c - taking messages out: RECV (with leases), PEEK (look without
 * taking), and settling what was leased: ACK, NACK, TOUCH, REJECT.
 *
 * Messages are decoded all or nothing: a call that fails hands out none,
 * and frees what it had decoded.
 */
#include "config.h"

#include <errno.h>

#include "client/libmbox-int.h"
#include "client/msg.h"
#include "client/proto.h"

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

	core_frame_reader(&rd, fr);
	while ((r = proto_reader_next(&rd, &fl)) > 0) {
		if (fl.tag != MBOX_TAG_MSG)
			continue;
		if (got == max) {
			error_set(m,
				  "the broker sent more than the %zu "
				  "messages asked for",
				  max);
			r = -EPROTO;
			goto fail;
		}
		r = msg_decode(fl.val, fl.len, mailbox, &msgs[got], why);
		if (r == -ENOMEM) {
			error_set(m, "out of memory");
			goto fail;
		}
		if (r < 0) {
			error_set(m, "undecodable message: %s", why);
			r = -EPROTO;
			goto fail;
		}
		got++;
	}
	if (r < 0) {
		error_set(m, "undecodable reply");
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

/*
 * Send the RECV or PEEK built in m->tx and decode the messages of its
 * reply into msgs (at most max of them).
 */
static int
msgs_call(mbox *m, uint32_t id, uint16_t op, const char *mailbox, size_t max,
	  mbox_msg **msgs, size_t *n)
{
	ProtoFields f;
	Frame *fr;
	int r;

	r = core_call(m, id, op, &fr, &f, 0);
	if (r < 0)
		return r;
	r = msgs_decode(m, fr, mailbox, max, msgs, n);
	core_frame_free(fr);
	return r;
}

/*
 * RECV and PEEK start here: no message handed out yet, a usable handle,
 * a valid mailbox name and a place for 1..MBOX_RECV_MAX messages.
 */
static int
msgs_enter(mbox *m, const char *what, const char *mailbox, size_t max,
	   mbox_msg **msgs, size_t *n)
{
	int r;

	if (n)
		*n = 0;
	r = core_enter_mailbox(m, mailbox);
	if (r < 0)
		return r;
	if (!msgs || !n || max == 0 || max > MBOX_RECV_MAX) {
		error_set(m, "%s takes 1-%u messages at a time", what,
			  MBOX_RECV_MAX);
		return -EINVAL;
	}
	return 0;
}

int
consume_recv(mbox *m, const char *mailbox, size_t max, uint64_t wait_ms,
	     uint64_t lease_ms, mbox_msg **msgs, size_t *n)
{
	uint32_t id;

	id = core_begin(m, MBOX_OP_RECV);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	proto_put_u64(&m->tx, MBOX_TAG_COUNT, max);
	if (wait_ms)
		proto_put_u64(&m->tx, MBOX_TAG_WAIT_MS, wait_ms);
	if (lease_ms)
		proto_put_u64(&m->tx, MBOX_TAG_LEASE_MS, lease_ms);
	return msgs_call(m, id, MBOX_OP_RECV, mailbox, max, msgs, n);
}

/* -------------------------------------------------------------------- */
/* RECV */

int
mbox_recv(mbox *m, const char *mailbox, size_t max, int64_t wait_ms,
	  uint64_t lease_ms, mbox_msg **msgs, size_t *n)
{
	int r;

	int64_t deadline = core_deadline_after(wait_ms < 0 ? 0 : wait_ms);

	r = msgs_enter(m, "recv", mailbox, max, msgs, n);
	if (r < 0)
		return r;
	for (;;) {
		uint64_t w = core_wait_slice(deadline, wait_ms < 0);

		r = consume_recv(m, mailbox, max, w, lease_ms, msgs, n);
		if (r < 0 || *n > 0 ||
		    (wait_ms >= 0 && deadline - core_now_ms() <= 0))
			return r;
	}
}

/* -------------------------------------------------------------------- */
/* Settling leased messages */

static int
ids_check(mbox *m, const uint64_t *ids, size_t n)
{
	if (!ids || n == 0) {
		error_set(m, "no message ids given");
		return -EINVAL;
	}
	return 0;
}

/* Also serves mbox_call, which acks what it takes from its reply box. */
int
consume_settle(mbox *m, uint16_t op, const uint64_t *ids, size_t n,
	       uint16_t tag, uint64_t val, int64_t *deadline_ns)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	size_t i;
	int r;

	r = core_enter(m);
	if (r < 0)
		return r;
	r = ids_check(m, ids, n);
	if (r < 0)
		return r;
	id = core_begin(m, op);
	for (i = 0; i < n; i++)
		proto_put_u64(&m->tx, MBOX_TAG_ID, ids[i]);
	if (tag && val)
		proto_put_u64(&m->tx, tag, val);
	r = core_call(m, id, op, &fr, &f,
		      deadline_ns ? PROTO_BIT(MBOX_TAG_DEADLINE_NS) : 0);
	if (r == 0 && deadline_ns)
		*deadline_ns = (int64_t)proto_u64(&f, MBOX_TAG_DEADLINE_NS, 0);
	core_frame_free(fr);
	return r;
}

int
mbox_ack(mbox *m, const uint64_t *ids, size_t n)
{
	return consume_settle(m, MBOX_OP_ACK, ids, n, 0, 0, NULL);
}

int
mbox_nack(mbox *m, const uint64_t *ids, size_t n, uint64_t delay_ms)
{
	return consume_settle(m, MBOX_OP_NACK, ids, n, MBOX_TAG_DELAY_MS,
			      delay_ms, NULL);
}

int
mbox_touch(mbox *m, const uint64_t *ids, size_t n, uint64_t lease_ms,
	   int64_t *deadline_ns)
{
	int64_t tmp;

	return consume_settle(m, MBOX_OP_TOUCH, ids, n, MBOX_TAG_LEASE_MS,
			      lease_ms, deadline_ns ? deadline_ns : &tmp);
}

int
mbox_reject(mbox *m, const uint64_t *ids, size_t n)
{
	return consume_settle(m, MBOX_OP_REJECT, ids, n, 0, 0, NULL);
}

/* -------------------------------------------------------------------- */
/* PEEK */

int
mbox_peek(mbox *m, const char *mailbox, size_t max, uint64_t from_id,
	  unsigned flags, mbox_msg **msgs, size_t *n)
{
	uint32_t id;
	int r;

	r = msgs_enter(m, "peek", mailbox, max, msgs, n);
	if (r < 0)
		return r;
	r = check_flags(m, "peek", flags,
			MBOX_PEEK_DEAD_ONLY | MBOX_PEEK_BY_ID);
	if (r < 0)
		return r;
	id = core_begin(m, MBOX_OP_PEEK);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	proto_put_u64(&m->tx, MBOX_TAG_COUNT, max);
	if (from_id)
		proto_put_u64(&m->tx, MBOX_TAG_FROM_ID, from_id);
	if (flags)
		proto_put_u64(
			&m->tx, MBOX_TAG_FLAGS,
			(flags & MBOX_PEEK_DEAD_ONLY ? MBOX_PEEK_DEAD : 0) |
				(flags & MBOX_PEEK_BY_ID ? MBOX_PEEK_ID_ORDER
							 : 0));
	return msgs_call(m, id, MBOX_OP_PEEK, mailbox, max, msgs, n);
}
