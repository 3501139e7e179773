/*
 * handoff.c - graceful hand-off of a consumer's work to a successor.
 *
 * HANDOFF moves a connection's leases and subscriptions into a record
 * under a random token; CLAIM gives them to another connection. While
 * parked, each lease's deadline is the record's, so the one lease timer
 * gives unclaimed messages back at the deadline exactly as reader death
 * does; the record's own timer then ends its subscriptions. Parked
 * subscriptions keep their place in the mailbox's list: an exclusive
 * one stays active, so standbys cannot overtake the parked work.
 *
 * A CLAIM pushes the parked messages only as fast as the claimer's output
 * takes them (max_out_bytes): the rest waits in a Claim record that the
 * delivery phase serves first, and the CLAIM reply follows the last push,
 * so the claimer still sees every parked message before the reply and
 * before anything new (libmbox's mbox_claim relies on that).
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "broker/broker.h"

static void
handoff_on_timer(EV_P_ ev_timer *t, int revents)
{
	Handoff *h = t->data;

	/* The lease timer may have given the messages back already (their
	 * deadline is the hand-off's): then only the subscriptions end. */
	log_write(h->broker->log, LOG_INFO,
		  "hand-off %llu was not claimed in time: its "
		  "subscriptions end and its messages go back to their "
		  "mailboxes",
		  (unsigned long long)h->serial);
	handoff_expire(h->broker, h);
}

/* Move every subscription of the list *from to *to, now owned by conn
 * (NULL while parked) or parked in h. */
static void
handoff_move_subs(Sub **from, Sub **to, Conn *conn, Handoff *h)
{
	Sub *s;

	while ((s = *from)) {
		*from = s->owner_next;
		s->conn = conn;
		s->parked = h;
		s->owner_prev = NULL;
		s->owner_next = *to;
		if (*to)
			(*to)->owner_prev = s;
		*to = s;
	}
}

static int
handoff_token(char out[MBOX_TOKEN_HEX + 1])
{
	uint8_t raw[MBOX_TOKEN_HEX / 2];
	size_t got = 0;

	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -EIO;
		}
		got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(out + 2 * i, 3, "%02x", raw[i]);
	return 0;
}

size_t
handoff_limit(const Broker *b, const Conn *c)
{
	size_t mine = 0;

	if (b->n_handoffs >= HANDOFF_MAX)
		return HANDOFF_MAX;
	for (const Handoff *h = b->handoffs; h; h = h->next)
		if (h->uid == c->uid && ++mine >= HANDOFF_MAX_PER_UID)
			return HANDOFF_MAX_PER_UID;
	return 0;
}

int
handoff_park(Broker *b, Conn *c, uint64_t wait_ms, Handoff **out)
{
	Handoff *h = calloc(1, sizeof(*h));
	Lease *l;

	if (!h)
		return -ENOMEM;
	if (handoff_token(h->token) < 0) {
		free(h);
		return -EIO;
	}
	h->broker = b;
	h->serial = ++b->next_handoff_serial;
	h->uid = c->uid;
	h->deadline_ns = broker_now_ns() + (int64_t)wait_ms * 1000000;
	while ((l = c->leases.head)) {
		lease_move(l, &h->leases, NULL);
		lease_set_deadline(&b->leases, l, h->deadline_ns);
	}
	handoff_move_subs(&c->subs, &h->subs, NULL, h);
	ev_timer_init(&h->timer, handoff_on_timer, (double)wait_ms / 1e3, 0.);
	h->timer.data = h;
	ev_timer_start(b->loop, &h->timer);
	h->next = b->handoffs;
	if (b->handoffs)
		b->handoffs->prev = h;
	b->handoffs = h;
	b->n_handoffs++;
	*out = h;
	return 0;
}

Handoff *
handoff_find(Broker *b, const char *token)
{
	for (Handoff *h = b->handoffs; h; h = h->next)
		if (strcmp(h->token, token) == 0)
			return h;
	return NULL;
}

const StoreMailbox *
handoff_unreadable(Broker *b, const Handoff *h, const AclPeer *p)
{
	StoreMailbox *mb;

	for (const Lease *l = h->leases.head; l; l = l->next) {
		mb = store_mailbox_by_id(b->store, l->mailbox_id);
		if (mb && !acl_may(p, mb, ACL_READ))
			return mb;
	}
	for (const Sub *s = h->subs; s; s = s->owner_next) {
		mb = store_mailbox_by_id(b->store, s->rt->mailbox_id);
		if (mb && !acl_may(p, mb, ACL_READ))
			return mb;
	}
	return NULL;
}

bool
handoff_note_ended(Handoff *h, const MailboxRt *rt, const char *why)
{
	HandoffEnded *e = calloc(1, sizeof(*e));

	if (!e || !(e->name = strdup(rt->name)) || !(e->why = strdup(why))) {
		if (e)
			free(e->name);
		free(e);
		return false;
	}
	e->created_ns = rt->created_ns;
	e->next = h->ended;
	h->ended = e;
	return true;
}

static void
handoff_ended_free(HandoffEnded *e)
{
	while (e) {
		HandoffEnded *next = e->next;
		free(e->name);
		free(e->why);
		free(e);
		e = next;
	}
}

static void
handoff_unlink(Broker *b, Handoff *h)
{
	handoff_ended_free(h->ended);
	ev_timer_stop(b->loop, &h->timer);
	if (h->prev)
		h->prev->next = h->next;
	else
		b->handoffs = h->next;
	if (h->next)
		h->next->prev = h->prev;
	b->n_handoffs--;
	free(h);
}

void
handoff_expire(Broker *b, Handoff *h)
{
	Lease *l;

	while ((l = h->leases.head))
		broker_lease_drop(b, l, true);
	while (h->subs)
		sub_remove(b, h->subs);
	handoff_unlink(b, h);
}

/* Encode the claimed message into the DELIVER frame being built. */
typedef struct ClaimCtx {
	Broker *b;
	StoreMailbox *mb;
	int64_t deadline_ns;
} ClaimCtx;

static int
handoff_put_cb(void *ctx, const StoreMsg *m)
{
	ClaimCtx *cc = ctx;

	broker_put_msg(&cc->b->w, cc->mb, m, cc->deadline_ns);
	return 0;
}

/* Push the message of l to c as one DELIVER; 0 or negative errno. */
static int
handoff_push(Broker *b, Conn *c, Lease *l)
{
	StoreMailbox *mb = store_mailbox_by_id(b->store, l->mailbox_id);
	ClaimCtx cc = {b, mb, l->deadline_ns};
	int r;

	if (!mb)
		return -ENOENT;
	proto_writer_begin(&b->w, MBOX_OP_DELIVER, MBOX_FLAG_PUSH, 0,
			   MBOX_S_OK);
	r = store_msg_get(b->store, mb, l->msg_id, handoff_put_cb, &cc);
	if (r < 0)
		return r;
	conn_send_writer(c, &b->w);
	return 0;
}

/*
 * Subscriptions of a claimed record that ended while it was parked: c
 * took the record over, so c is told, oldest first, before any parked
 * message (handoff_claim_run). Frees the list.
 */
static void
handoff_send_ended(Broker *b, Conn *c, HandoffEnded *ended)
{
	HandoffEnded *e, *oldest_first = NULL;

	while ((e = ended)) {
		ended = e->next;
		e->next = oldest_first;
		oldest_first = e;
	}
	for (e = oldest_first; e; e = e->next)
		if (!c->closing)
			broker_send_ended(b, c, e->name, e->created_ns, e->why);
	handoff_ended_free(oldest_first);
}

static void
handoff_claim_unlink(Broker *b, Claim *cl)
{
	if (cl->prev)
		cl->prev->link = cl->link;
	else
		b->claims = cl->link;
	if (cl->link)
		cl->link->prev = cl->prev;
	handoff_ended_free(cl->ended);
	free(cl->ids);
	free(cl);
}

bool
handoff_claiming(const Broker *b, const Conn *c)
{
	for (const Claim *cl = b->claims; cl; cl = cl->link)
		if (cl->conn == c)
			return true;
	return false;
}

void
handoff_claims_refuse(Broker *b, unsigned status, const char *text)
{
	Claim *cl;

	while ((cl = b->claims)) {
		Conn *c = cl->conn;
		uint32_t req_id = cl->req_id;

		handoff_claim_unlink(b, cl);
		c->in_flight--;
		conn_reply_error(c, MBOX_OP_CLAIM, req_id, status, NULL, "%s",
				 text);
	}
}

void
handoff_claim_drop(Broker *b, Conn *c)
{
	for (Claim *cl = b->claims, *next; cl; cl = next) {
		next = cl->link;
		if (cl->conn == c)
			handoff_claim_unlink(b, cl);
	}
}

/*
 * Push the claimed messages while c's output has room; after the last
 * one, answer the CLAIM and let deliveries to c go on. Returns whether cl
 * still exists (false: finished, or c closed and dropped it).
 */
static bool
handoff_claim_run(Broker *b, Claim *cl)
{
	Conn *c = cl->conn;
	ProtoWriter *w = &b->w;

	/* Behind an earlier CLAIM of c (handoff_pump runs every claim):
	 * nothing of this one goes out before that one's reply. */
	for (const Claim *p = cl->prev; p; p = p->prev)
		if (p->conn == c)
			return true;
	if (cl->ended) {
		HandoffEnded *ended = cl->ended;

		cl->ended = NULL;
		handoff_send_ended(b, c, ended);
		/* A send that fails closes c, which drops cl. */
		if (c->closing)
			return false;
	}
	while (cl->next < cl->n) {
		Lease *l;

		if (broker_conn_output_full(b, c, 0))
			return true; /* woken when it drains */
		l = lease_find(&b->leases, cl->ids[cl->next++]);
		/* Settled, expired or voided (DELETE) before it left. */
		if (!l || l->holder != c)
			continue;
		/* Its lease runs from when it is sent. */
		lease_set_deadline(&b->leases, l,
				   broker_now_ns() +
					   (int64_t)l->lease_ms * 1000000);
		if (handoff_push(b, c, l) < 0) {
			log_write(b->log, LOG_ERR,
				  "cannot hand message %llu over: %s; it "
				  "goes back to its mailbox",
				  (unsigned long long)l->msg_id,
				  store_errmsg(b->store));
			broker_lease_drop(b, l, true);
			continue;
		}
		/* A send that fails closes c, which drops cl. */
		if (c->closing)
			return false;
		cl->pushed++;
	}
	proto_writer_begin(w, MBOX_OP_CLAIM, MBOX_FLAG_REPLY, cl->req_id,
			   MBOX_S_OK);
	proto_put_u64(w, MBOX_TAG_COUNT, cl->pushed);
	handoff_claim_unlink(b, cl);
	c->in_flight--;
	conn_send_writer(c, w);
	/* The parked subscriptions go on, and RECVs held meanwhile. */
	broker_conn_wake(b, c);
	return false;
}

void
handoff_pump(Broker *b)
{
	Claim *cl = b->claims;

	/* A finished claim, or a close, may free any other record of the
	 * list: look again from the head then. The stalled ones left are
	 * only checked again, so this ends. */
	while (cl) {
		if (handoff_claim_run(b, cl))
			cl = cl->link;
		else
			cl = b->claims;
	}
}

int
handoff_claim(Broker *b, Handoff *h, Conn *c, uint32_t req_id)
{
	int64_t now = broker_now_ns();
	Claim *cl = calloc(1, sizeof(*cl)), **tail;
	HandoffEnded *ended;
	bool behind;
	Lease *l;
	Sub *s;

	if (!cl)
		return -ENOMEM;
	cl->ids =
		calloc(h->leases.count ? h->leases.count : 1, sizeof(*cl->ids));
	if (!cl->ids) {
		free(cl);
		return -ENOMEM;
	}
	for (s = h->subs; s; s = s->owner_next)
		if (sub_find(c, s->rt)) {
			free(cl->ids);
			free(cl);
			return -EEXIST;
		}
	/* Everything becomes c's before anything is sent: a send that
	 * fails closes c, and closing gives back whatever c holds then. */
	while ((l = h->leases.head)) {
		cl->ids[cl->n++] = l->msg_id;
		lease_move(l, &c->leases, c);
		lease_set_deadline(&b->leases, l,
				   now + (int64_t)l->lease_ms * 1000000);
	}
	handoff_move_subs(&h->subs, &c->subs, c, NULL);
	ended = h->ended;
	h->ended = NULL;
	handoff_unlink(b, h);
	cl->conn = c;
	cl->req_id = req_id;
	c->in_flight++;
	/* In arrival order: a second CLAIM of c pushes after the first. */
	behind = handoff_claiming(b, c);
	for (tail = &b->claims; *tail; tail = &(*tail)->link)
		cl->prev = *tail;
	*tail = cl;
	cl->ended = ended;
	if (!behind)
		handoff_claim_run(b, cl);
	return 0;
}
