/*
 * request.h - one request being dispatched, and the helpers every
 * operation handler uses to validate it and to answer.
 *
 * Handlers live in dispatch.c (messages, leases, subscriptions, hand-off),
 * ops-admin.c (mailbox administration and fan-out) and ops-inspect.c
 * (STAT, CLIENTS, STATS and the event counters). Each validates
 * its whole request before it changes anything; an error reply is sent by
 * the helper that found the problem, which then returns an error so the
 * handler just returns.
 */
#ifndef MBOX_BROKER_REQUEST_H
#define MBOX_BROKER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/broker.h"

#define BIT PROTO_BIT
/* Longest delay, lease, ttl or wait a request may ask for: one year.
 * Also keeps now + duration far from int64 overflow. */
#define MAX_DURATION_MS (UINT64_C(365) * 24 * 3600 * 1000)

typedef struct Request {
	Conn *c;
	Broker *b;
	const ProtoHeader *h;
	ProtoFields f;
} Request;

/* Answer the request with status and text (limit: NULL or its name). */
void reply_error(Request *q, unsigned status, const char *limit,
		 const char *text);
void reply_errorf(Request *q, unsigned status, const char *limit,
		  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Answer success with an empty body. */
void reply_empty(Request *q);
/* Start a success reply in the broker's scratch writer (add fields, then
 * conn_send_writer(q->c, &q->b->w)). */
ProtoWriter *reply_begin(Request *q);

/* Check the request's fields; on failure answer MALFORMED. */
int request_check(Request *q, uint64_t allowed, uint64_t required);
/* Copy the MAILBOX field into name; answer INVALID when it is bad. */
int request_name(Request *q, char name[MBOX_NAME_MAX + 1]);
/*
 * Find the mailbox named by MAILBOX that the caller may use with want
 * (ACL_READ and/or ACL_WRITE; 0 = owner or admin only). Answers INVALID,
 * NOT_FOUND or DENIED itself (denials are logged) and returns NULL then.
 */
StoreMailbox *request_mailbox(Request *q, unsigned want);
#define REQUEST_OWNER 0u
void log_denial(Request *q, const char *name);
/* Open the batch transaction; answers STORE on failure. */
int request_txn(Request *q);
/* Owe a reply after the commit (see broker_defer); closes the connection
 * when memory runs out. ids/mailbox_ids are taken over. */
void request_defer(Request *q, enum pending_kind kind, uint64_t *ids,
		   PendingLease *leases, size_t n);

/* A new mailbox's settings before any SETTING: owner = the caller. */
void mailbox_defaults(StoreMailbox *mb, const Conn *c, const char *name);

/* One validated message of a POST or PUBLISH. */
typedef struct PostItem {
	ProtoSlice data;
	uint32_t priority;
	uint64_t delay_ms;
	uint64_t ttl_ms;  /* 0 = none given (the mailbox's ttl applies) */
	ProtoSlice dedup; /* len 0 = none */
	uint8_t *headers; /* concatenated HEADER fields */
	size_t headers_len;
} PostItem;

/*
 * Parse and check every MSG of the request before anything is stored;
 * answers the error itself. *out is freed with post_items_free.
 */
int post_parse(Request *q, PostItem **out, size_t *n_out);
void post_items_free(PostItem *items, size_t n);
/* Would storing items overflow mb's max_msgs / max_bytes? Answers FULL.
 * Items with dup[i] set store nothing and are not counted (dup may be
 * NULL: all are stored). */
bool post_would_overflow(Request *q, const StoreMailbox *mb,
			 const PostItem *items, size_t n, const bool *dup);
/* The same question, answered quietly: do all items fit in mb? */
bool post_fits(const Broker *b, const StoreMailbox *mb, const PostItem *items,
	       size_t n);
/*
 * Fill a StoreMsg for item (stamped with the caller's identity, enqueue
 * time now, ready and expiry times from the item and mb's ttl). The
 * pointers in *m point into item and q; dedup_buf holds the key.
 */
void post_fill_msg(Request *q, const StoreMailbox *mb, const PostItem *item,
		   int64_t now, StoreMsg *m, char dedup_buf[MBOX_NAME_MAX + 1]);

/*
 * The fields of a mailbox's LIST entry (doc/protocol.md 5.8), MAILBOX to
 * MODE, into the open INFO nest of q's reply; STAT's INFO adds its own
 * after them. now: what counts as delayed.
 */
void put_list_fields(Request *q, StoreMailbox *mb, int64_t now);

/* Handlers of ops-admin.c. */
void op_set(Request *q);
void op_delete(Request *q);
void op_purge(Request *q);
void op_kick(Request *q);
void op_pause_resume(Request *q); /* PAUSE and RESUME */
void op_bind_unbind(Request *q);  /* BIND and UNBIND */
void op_publish(Request *q);
void op_chmod(Request *q);
void op_chown(Request *q);

/* Handlers of ops-inspect.c (read only: STAT and STATS wait for an open
 * batch to end, see broker_defer_read). */
void op_stat(Request *q);
void op_clients(Request *q);
void op_stats(Request *q);

#endif
