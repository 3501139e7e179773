/*
 * subscribe.c - push delivery: SUBSCRIBE / UNSUBSCRIBE, handing pushed
 * messages out (mbox_next, mbox_dispatch, mbox_pending), and the hand-off
 * of an exclusive subscription to a successor (HANDOFF, CLAIM).
 *
 * Pushes are read and queued by core.c whoever reads the socket; this
 * file only decides when to read and whom to hand the queue to.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "client/libmbox-int.h"
#include "client/msg.h"
#include "client/proto.h"

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
	r = core_enter_mailbox(m, mailbox);
	if (r < 0)
		return r;
	if (window == 0 || window > MBOX_WINDOW_MAX) {
		error_set(m, "the window is 1-%u messages", MBOX_WINDOW_MAX);
		return -EINVAL;
	}
	r = check_flags(m, "subscribe", flags, MBOX_SUB_EXCLUSIVE_FLAG);
	if (r < 0)
		return r;
	id = core_begin(m, MBOX_OP_SUBSCRIBE);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	proto_put_u64(&m->tx, MBOX_TAG_COUNT, window);
	if (lease_ms)
		proto_put_u64(&m->tx, MBOX_TAG_LEASE_MS, lease_ms);
	if (flags & MBOX_SUB_EXCLUSIVE_FLAG)
		proto_put_u64(&m->tx, MBOX_TAG_FLAGS, MBOX_SUB_EXCLUSIVE);
	r = core_call(m, id, MBOX_OP_SUBSCRIBE, &fr, &f, 0);
	if (r == 0 && standby)
		*standby =
			!!(proto_u64(&f, MBOX_TAG_FLAGS, 0) & MBOX_SUB_STANDBY);
	core_frame_free(fr);
	return r;
}

int
mbox_unsubscribe(mbox *m, const char *mailbox)
{
	return admin_mailbox_req(m, MBOX_OP_UNSUBSCRIBE, mailbox, 0, 0, NULL);
}

size_t
mbox_pending(const mbox *m)
{
	return m ? m->push_n : 0;
}

const char *
mbox_ended_mailbox(const mbox *m)
{
	return m && m->ended[0] ? m->ended : NULL;
}

/* Take the end of a subscription off the queue: -ENOENT, saying which. */
static int
take_end(mbox *m)
{
	mbox_msg *end = core_push_pop(m);
	const char *why = (const char *)mbox_msg_data(end, NULL);

	snprintf(m->ended, sizeof(m->ended), "%s", mbox_msg_mailbox(end));
	error_set(m, "the broker ended the subscription to %s: %s", m->ended,
		  why[0] ? why : "no reason given");
	mbox_msg_free(end);
	return -ENOENT;
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
	deadline = core_deadline_after(wait_ms < 0 ? 0 : wait_ms);
	for (;;) {
		struct pollfd pfd = {.fd = m->fd, .events = POLLIN};
		int64_t left;

		/* Queued ones first, even from a connection that broke
		 * since: they were read whole. */
		if (core_push_peek(m) && msg_is_end(core_push_peek(m)))
			return take_end(m);
		*msg = core_push_pop(m);
		if (*msg)
			return 0;
		r = core_poll(m);
		if (r < 0)
			return r;
		if (r > 0)
			continue;
		left = wait_ms < 0 ? -1 : deadline - core_now_ms();
		if (wait_ms >= 0 && left <= 0)
			break;
		r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r < 0 && errno != EINTR) {
			r = -errno;
			error_set(m, "poll: %s", strerror(-r));
			return r;
		}
	}
	error_set(m, "no message pushed within %lld ms", (long long)wait_ms);
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
		r = core_poll(m);
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
	while (done < budget && core_push_peek(m)) {
		/* The messages before an end are handed out first; the end
		 * is the answer of the next call. */
		if (msg_is_end(core_push_peek(m))) {
			if (done)
				break;
			return take_end(m);
		}
		msg = core_push_pop(m);
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
	r = core_enter(m);
	if (r < 0)
		return r;
	if (!token) {
		error_set(m, "no place for the token given");
		return -EINVAL;
	}
	id = core_begin(m, MBOX_OP_HANDOFF);
	if (wait_ms)
		proto_put_u64(&m->tx, MBOX_TAG_WAIT_MS, wait_ms);
	r = core_call(m, id, MBOX_OP_HANDOFF, &fr, &f,
		      PROTO_BIT(MBOX_TAG_TOKEN) |
			      PROTO_BIT(MBOX_TAG_DEADLINE_NS));
	if (r < 0)
		return r;
	/*
	 * Every push sent before the reply has been read by now (one stream,
	 * in order), and the broker parked those messages with the rest: they
	 * are the successor's, not ours to hand out.
	 */
	core_push_drop_all(m);
	t = f.first[MBOX_TAG_TOKEN];
	if (!token_valid((const char *)t.ptr, t.len)) {
		core_frame_free(fr);
		error_set(m, "the broker sent a malformed hand-off token");
		return -EPROTO;
	}
	memcpy(token, t.ptr, t.len);
	token[t.len] = '\0';
	if (deadline_ns)
		*deadline_ns = (int64_t)proto_u64(&f, MBOX_TAG_DEADLINE_NS, 0);
	core_frame_free(fr);
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
	r = core_enter(m);
	if (r < 0)
		return r;
	if (!token || !token_valid(token, strlen(token))) {
		error_set(m, "a hand-off token is %u lowercase hex digits",
			  MBOX_TOKEN_HEX);
		return -EINVAL;
	}
	id = core_begin(m, MBOX_OP_CLAIM);
	proto_put_str(&m->tx, MBOX_TAG_TOKEN, token);
	/* The broker pushes the messages before it answers: reply_wait has
	 * queued them all by the time it returns. */
	r = core_call(m, id, MBOX_OP_CLAIM, &fr, &f, PROTO_BIT(MBOX_TAG_COUNT));
	if (r == 0 && count)
		*count = (size_t)proto_u64(&f, MBOX_TAG_COUNT, 0);
	core_frame_free(fr);
	return r;
}
