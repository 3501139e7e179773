/*
 * sub.c - push subscriptions: who may receive, in which turn, and the
 * DELIVER frames of one delivery phase.
 *
 * A subscription lives on two lists: its mailbox's (arrival order, which
 * decides the active exclusive subscriber and the round-robin order) and
 * its owner's (a connection, or a hand-off record while parked). Every
 * lease pushed to it points back at it, so settling a lease opens the
 * window again (broker_lease_drop).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"

Sub *
sub_find(Conn *c, MailboxRt *rt)
{
	for (Sub *s = c->subs; s; s = s->owner_next)
		if (s->rt == rt)
			return s;
	return NULL;
}

size_t
sub_count(const Sub *head)
{
	size_t n = 0;

	for (const Sub *s = head; s; s = s->owner_next)
		n++;
	return n;
}

int
sub_add(Broker *b, Conn *c, MailboxRt *rt, uint32_t window, uint64_t lease_ms,
	bool exclusive, Sub **out)
{
	Sub *s = calloc(1, sizeof(*s));

	(void)b;
	if (!s)
		return -ENOMEM;
	s->conn = c;
	s->rt = rt;
	s->window = window;
	s->lease_ms = lease_ms;
	s->exclusive = exclusive;
	s->mb_prev = rt->sub_tail;
	if (rt->sub_tail)
		rt->sub_tail->mb_next = s;
	else
		rt->sub_head = s;
	rt->sub_tail = s;
	rt->n_subs++;
	s->owner_next = c->subs;
	if (c->subs)
		c->subs->owner_prev = s;
	c->subs = s;
	*out = s;
	return 0;
}

void
sub_remove(Broker *b, Sub *s)
{
	MailboxRt *rt = s->rt;
	LeaseList *owned = NULL;
	Sub **head;

	/* Leases pushed to it stay with their holder but stop counting. */
	if (s->conn)
		owned = &s->conn->leases;
	else if (s->parked)
		owned = &s->parked->leases;
	for (Lease *l = owned ? owned->head : NULL; l && s->unacked;
	     l = l->next)
		if (l->sub == s) {
			l->sub = NULL;
			s->unacked--;
		}
	if (s->mb_prev)
		s->mb_prev->mb_next = s->mb_next;
	else
		rt->sub_head = s->mb_next;
	if (s->mb_next)
		s->mb_next->mb_prev = s->mb_prev;
	else
		rt->sub_tail = s->mb_prev;
	rt->n_subs--;
	head = s->conn ? &s->conn->subs : s->parked ? &s->parked->subs : NULL;
	if (s->owner_prev)
		s->owner_prev->owner_next = s->owner_next;
	else if (head)
		*head = s->owner_next;
	if (s->owner_next)
		s->owner_next->owner_prev = s->owner_prev;
	/* A standby may have become active. */
	{
		StoreMailbox *mb =
			store_mailbox_by_id(b->store, rt->mailbox_id);
		if (mb && mb->user == rt)
			broker_mailbox_news(b, mb);
	}
	free(s);
}

bool
sub_is_active(const Sub *s)
{
	/* Exclusive ones never share a mailbox with the others, so only
	 * the first of the list may receive. */
	return !s->exclusive || s->rt->sub_head == s;
}

/*
 * Room in the window, and in its connection: none while that holds
 * max_unacked leases or is congested (not reading its pushes); settling
 * or draining wakes the mailbox again (broker_conn_wake).
 */
static size_t
sub_room(const Sub *s)
{
	size_t room, conn_room;

	if (!s->conn || s->unacked >= s->window || !sub_is_active(s))
		return 0;
	room = s->window - s->unacked;
	conn_room = broker_conn_room(s->conn->broker, s->conn);
	return room < conn_room ? room : conn_room;
}

static bool
sub_has_room(const Sub *s)
{
	return sub_room(s) > 0;
}

bool
sub_wants(const MailboxRt *rt)
{
	for (const Sub *s = rt->sub_head; s; s = s->mb_next)
		if (sub_has_room(s))
			return true;
	return false;
}

/* One subscriber's DELIVER frame being filled in this phase. */
typedef struct PushSlot {
	Sub *sub;
	ProtoWriter w;
	uint64_t *ids; /* leased into the frame */
	size_t n, cap;
	uint64_t lease_ms;
	bool started;
	bool full; /* its connection's output reached max_out_bytes */
} PushSlot;

typedef struct PushCtx {
	Broker *b;
	StoreMailbox *mb;
	int64_t now;
	PushSlot *slots;
	size_t n_slots;
	Outgoing **out;
	int err;
	uint64_t orphan; /* leased by the store, no lease of ours: give back */
	bool stopped;	 /* every subscriber's connection is full */
} PushCtx;

/* Queue the slot's frame (if it holds anything) and start afresh. */
static void
push_flush_slot(PushCtx *pc, PushSlot *ps)
{
	const uint8_t *frame;
	Outgoing *o;

	if (!ps->started)
		return;
	ps->started = false;
	o = calloc(1, sizeof(*o));
	if (!o || proto_writer_finish(&ps->w, &frame, &o->len) < 0) {
		/* Called from a store callback: the rows cannot be written
		 * now, so they go back with the next batch. */
		for (size_t i = 0; i < ps->n; i++)
			broker_queue_release(pc->b, ps->ids[i], pc->mb->id,
					     true);
		broker_unlease(pc->b, ps->sub->conn, NULL, ps->ids, ps->n,
			       false);
		free(ps->ids);
		free(o);
		proto_writer_release(&ps->w);
		goto reset;
	}
	o->frame = proto_writer_steal(&ps->w, &o->len);
	o->conn = ps->sub->conn;
	o->conn->deliver_bytes += o->len;
	o->ids = ps->ids;
	o->n = ps->n;
	o->push = true;
	o->next = *pc->out;
	*pc->out = o;
reset:
	ps->ids = NULL;
	ps->n = ps->cap = 0;
}

/* The next subscriber in turn with room, or NULL; with advance, its turn
 * is taken. */
static PushSlot *
push_next_slot(PushCtx *pc, MailboxRt *rt, bool advance)
{
	for (size_t k = 0; k < pc->n_slots; k++) {
		PushSlot *ps = &pc->slots[(rt->rr + k) % pc->n_slots];
		if (!ps->full && sub_has_room(ps->sub)) {
			if (advance)
				rt->rr += k + 1;
			return ps;
		}
	}
	return NULL;
}

static int
push_one_cb(void *ctx, const StoreMsg *m)
{
	PushCtx *pc = ctx;
	Broker *b = pc->b;
	MailboxRt *rt = pc->mb->user;
	PushSlot *ps = push_next_slot(pc, rt, true);
	int64_t deadline;
	Lease *l;
	int r;

	if (!ps) {
		/* Cannot happen: no more are leased than there is room. */
		pc->err = -ENOSPC;
		pc->orphan = m->id;
		return 1;
	}
	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? 2 * ps->cap : 16;
		uint64_t *ids = realloc(ps->ids, cap * sizeof(*ids));
		if (!ids) {
			pc->err = -ENOMEM;
			pc->orphan = m->id;
			return 1;
		}
		ps->ids = ids;
		ps->cap = cap;
	}
	deadline = pc->now + (int64_t)ps->lease_ms * 1000000;
	r = lease_add(&b->leases, &ps->sub->conn->leases, m->id, pc->mb->id,
		      ps->sub->conn, deadline, &l);
	if (r < 0) {
		pc->err = r;
		pc->orphan = m->id;
		return 1;
	}
	l->lease_ms = ps->lease_ms;
	l->msg_len = m->data_text ? LEASE_LEN_UNKNOWN : m->len;
	l->flush_gen = b->flush_gen;
	l->sub = ps->sub;
	ps->sub->unacked++;
	ps->ids[ps->n++] = m->id;
	if (!ps->started) {
		proto_writer_begin(&ps->w, MBOX_OP_DELIVER, MBOX_FLAG_PUSH, 0,
				   MBOX_S_OK);
		ps->started = true;
	}
	broker_put_msg(&ps->w, pc->mb, m, deadline);
	broker_count_delivery(b, pc->mb, m);
	/* A subscriber that does not read gets no more than max_out_bytes
	 * queued (conn.c), whatever its window. */
	if (broker_conn_output_full(b, ps->sub->conn, ps->w.len))
		ps->full = true;
	/* Keep each frame under MAX_FRAME, as a RECV reply. */
	if (ps->w.len >= b->cfg.max_msg_size || ps->full)
		push_flush_slot(pc, ps);
	/* Stop leasing once nobody can take more. */
	pc->stopped = !push_next_slot(pc, rt, false);
	return pc->stopped;
}

void
sub_push_mailbox(Broker *b, MailboxRt *rt, StoreMailbox *mb, int64_t now,
		 Outgoing **out)
{
	PushCtx pc = {.b = b, .mb = mb, .now = now, .out = out};
	size_t room = 0, i = 0;
	int64_t r;

	if (!rt->sub_head || mb->n_ready == 0)
		return;
	for (Sub *s = rt->sub_head; s; s = s->mb_next)
		if (sub_has_room(s)) {
			room += sub_room(s);
			pc.n_slots++;
		}
	if (!room)
		return;
	pc.slots = calloc(pc.n_slots, sizeof(*pc.slots));
	if (!pc.slots || broker_txn(b) < 0) {
		free(pc.slots);
		return;
	}
	for (Sub *s = rt->sub_head; s; s = s->mb_next)
		if (sub_has_room(s)) {
			PushSlot *ps = &pc.slots[i++];
			ps->sub = s;
			ps->lease_ms = s->lease_ms ? s->lease_ms : mb->lease_ms;
			proto_writer_init(&ps->w);
		}
	/* Lease as many as there is room for, in as few store calls as
	 * possible; each message goes to the next subscriber in turn. */
	while (room > 0 && pc.err == 0 && !pc.stopped) {
		size_t want = room < MBOX_RECV_MAX ? room : MBOX_RECV_MAX;
		r = store_msg_lease(b->store, mb, now, want, push_one_cb, &pc);
		if (broker_lease_done(b, rt, mb, r))
			break;
		if ((size_t)r < want)
			break; /* nothing more is ready */
		room -= (size_t)r;
	}
	if (pc.orphan)
		store_msg_release(b->store, mb, pc.orphan, 0);
	if (pc.err < 0)
		log_write(b->log, LOG_ERR, "cannot push messages of %s: %s",
			  mb->name, strerror(-pc.err));
	for (i = 0; i < pc.n_slots; i++) {
		push_flush_slot(&pc, &pc.slots[i]);
		free(pc.slots[i].ids);
		proto_writer_release(&pc.slots[i].w);
	}
	free(pc.slots);
}
