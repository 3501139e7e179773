/*
 * libmbox-int.h - what the files of libmbox share and nobody else sees:
 * the connection handle (struct mbox) and the helpers every call is built
 * from.
 *
 * The library is split by job:
 *   core.c      requests in flight, frame I/O, reply matching, push queue
 *   error.c     status -> errno, mbox_strerror, the handle's error text
 *   check.c     argument checks shared by several calls
 *   connect.c   connect, handshake, close, ping
 *   admin.c     mailbox administration, bindings, LIST
 *   post.c      POST (single and batch), PUBLISH
 *   consume.c   RECV, PEEK, ACK / NACK / TOUCH / REJECT
 *   subscribe.c push subscriptions, mbox_next / mbox_dispatch, hand-off
 *   rpc.c       mbox_call / mbox_reply over a temporary reply mailbox
 *   msg.c       the message object (msg.h)
 *
 * Every name declared here is library-private: none starts with mbox_,
 * because libmbox.so exports exactly the symbols matching '^mbox_'.
 *
 * Invariants of a handle (kept by core.c):
 * - A request id is non-zero and unique among the requests in flight
 *   (inflight). Replies are matched by id, never by order; a reply to
 *   another request in flight that arrives while one call waits is parked
 *   for its own caller.
 * - Pushes (flags PUSH, id 0) never answer a request. Whoever reads one
 *   decodes every MSG of a DELIVER push into the push queue, in arrival
 *   order, so a blocking call made while subscribed loses nothing.
 * - A frame goes out whole or the connection is marked broken. Once
 *   broken, every call returns m->broken (-ECONNRESET, -EPROTO, ...)
 *   without touching the socket again.
 * - error holds the explanation of the last failure (mbox_last_error):
 *   the broker's TEXT, or the library's own words.
 */
#ifndef MBOX_CLIENT_LIBMBOX_INT_H
#define MBOX_CLIENT_LIBMBOX_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mbox.h"
#include "client/proto.h"

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
	/* The mailbox of the last subscription the broker ended, handed
	 * out by mbox_next or mbox_dispatch ("" if none). */
	char ended[MBOX_NAME_MAX + 1];
	size_t publish_skipped; /* of the last mbox_publish */
	char error[512];
};

/*
 * A RECV that should wait forever, or longer than the broker's year,
 * asks the broker for this long and asks again when the answer is empty
 * (core_wait_slice): WAIT_MS is finite on the wire, and a day is long
 * enough that the loop costs nothing.
 */
#define RECV_FOREVER_SLICE_MS (24u * 3600u * 1000u)

/* One readable byte, for empty bodies and payloads: never pass NULL on. */
extern const uint8_t core_empty[1];

/* -------------------------------------------------------------------- */
/* error.c */

/* Write the explanation mbox_last_error will return. */
void error_set(mbox *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The negative errno a reply STATUS stands for; -EPROTO if unknown. */
int error_from_status(uint32_t status);

/* -------------------------------------------------------------------- */
/* core.c */

/*
 * Every public call on a handle starts here: returns -EINVAL for a NULL
 * handle, m->broken for a broken one, else clears the error text and
 * returns 0. core_enter_mailbox also checks the mailbox name.
 */
int core_enter(mbox *m);
int core_enter_mailbox(mbox *m, const char *mailbox);
/* admin.c: LIST's mailbox summary fields (also the start of STAT's INFO)
 * into info; info->name is allocated. 0 or -ENOMEM. */
int info_fields_decode(const ProtoFields *f, mbox_mailbox_info *info);
/* post.c: POST items to mailbox with POST FLAGS (MBOX_POST_NO_CREATE);
 * owner_uid >= 0: only into a mailbox that uid owns (OWNER_UID). */
int post_batch(mbox *m, const char *mailbox, const mbox_post_item *items,
	       size_t n, uint64_t *ids, unsigned flags, int64_t owner_uid);

/* Start a request frame in m->tx; returns its id. Fields follow with
 * proto_put_*(&m->tx, ...). */
uint32_t core_begin(mbox *m, uint16_t opcode);

/*
 * Send the request built in m->tx and wait for its reply. On success
 * returns 0, *out is the reply frame (free with core_frame_free) and *f
 * its fields, pointing into *out. An error status becomes its negative
 * errno with the broker's TEXT in m->error; so does a reply without
 * every tag in required. On failure *out is NULL.
 */
int core_call(mbox *m, uint32_t id, uint16_t opcode, Frame **out,
	      ProtoFields *f, uint64_t required);

/* Free a frame; NULL is fine. */
void core_frame_free(Frame *f);

/* A reader over the fields of fr's body. */
void core_frame_reader(ProtoReader *rd, const Frame *fr);

/*
 * Read one frame without blocking and route it: a push is queued, a
 * reply parked for its caller. Returns 1 when a frame was read, 0 when
 * the socket had no whole frame, or a negative errno.
 */
int core_poll(mbox *m);

/* The oldest queued pushed message (the caller owns it), or NULL. */
mbox_msg *core_push_pop(mbox *m);
/* The oldest queued pushed message, left in the queue, or NULL. */
const mbox_msg *core_push_peek(const mbox *m);

/* Free every queued pushed message. */
void core_push_drop_all(mbox *m);

/* Free everything the handle owns except the handle and its fd. */
void core_release(mbox *m);

/* Monotonic clock in ms; now + ms (ms >= 0), saturating at INT64_MAX. */
int64_t core_now_ms(void);
int64_t core_deadline_after(int64_t ms);
/*
 * core_wait_slice - what to ask the broker to wait in the next request of
 * a wait that ends at deadline (core_deadline_after), or never when
 * forever: the time left, but at most a day, since the broker waits at
 * most a year a request and a longer wait goes in slices.
 */
uint64_t core_wait_slice(int64_t deadline, bool forever);

/* -------------------------------------------------------------------- */
/* check.c: each returns 0, or -EINVAL with an explanation in m->error. */

int check_name(mbox *m, const char *name);
/* A topic, or with pattern a topic pattern (BIND). */
int check_topic(mbox *m, const char *topic, bool pattern);
/* flags has no bit outside known; what names the call. */
int check_flags(mbox *m, const char *what, unsigned flags, unsigned known);
/* Is s valid UTF-8? (No error text: the caller knows what s was.) */
bool check_utf8(const char *s);

/* -------------------------------------------------------------------- */
/* Requests shared between files. */

/*
 * admin.c: a request that names one mailbox: MAILBOX, at most one
 * optional u64 (tag 0 or value 0 = none), and a reply that is empty or,
 * when count is not NULL, carries COUNT.
 */
int admin_mailbox_req(mbox *m, uint16_t op, const char *mailbox, uint16_t tag,
		      uint64_t val, uint64_t *count);

/*
 * consume.c: one RECV of up to max messages, waiting up to wait_ms
 * (0: not at all). The caller has checked its arguments. On success the
 * *n messages in msgs are the caller's.
 */
int consume_recv(mbox *m, const char *mailbox, size_t max, uint64_t wait_ms,
		 uint64_t lease_ms, mbox_msg **msgs, size_t *n);

/*
 * consume.c: ACK, NACK, TOUCH and REJECT: a list of ids, at most one
 * optional u64 (NACK's DELAY_MS, TOUCH's LEASE_MS: tag 0 or value 0 =
 * none), and for TOUCH the DEADLINE_NS of the reply (deadline_ns may be
 * NULL).
 */
int consume_settle(mbox *m, uint16_t op, const uint64_t *ids, size_t n,
		   uint16_t tag, uint64_t val, int64_t *deadline_ns);

#endif
