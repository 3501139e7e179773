/*
 * conn.h - one client connection: credentials, datagram I/O, frames.
 *
 * A Conn reads datagrams, reassembles frames and hands them to dispatch;
 * it sends frames split into datagrams, queueing what the socket does not
 * take at once. It is never freed inside its own callbacks: conn_close()
 * marks it closing and the broker reaps it after the current iteration.
 */
#ifndef MBOX_BROKER_CONN_H
#define MBOX_BROKER_CONN_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker/acl.h"
#include "broker/lease.h"
#include "client/proto.h"

typedef struct Broker Broker;
typedef struct Waiter Waiter;
typedef struct OutFrame OutFrame;
typedef struct Conn Conn;

/* A temporary mailbox: its id, and its creation time, which tells it
 * from a later mailbox given the same id after a rollback. */
typedef struct TempRef {
	int64_t id, created_ns;
	uint64_t tried; /* the flush that last tried to delete it, or 0 */
} TempRef;

struct Conn {
	Broker *broker;
	uint64_t serial;  /* connection number, for logs */
	uint64_t visited; /* the last broker_visit_begin walk that saw it */
	int fd;
	ev_io read_io;
	ev_io write_io;
	/* Identity from the kernel at accept time. */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	size_t n_groups;
	char comm[MBOX_COMM_MAX + 1];
	AclPeer peer;
	int64_t connected_ns;

	ProtoAssembler assembler;
	OutFrame *out_head, *out_tail;
	size_t out_bytes; /* queued, not yet sent */
	bool hello_done;
	bool closing;	      /* closed; waiting to be reaped */
	bool read_paused;     /* backpressure: peer is not reading */
	bool read_held;	      /* a read waits for the batch: see conn_hold */
	unsigned in_flight;   /* requests not yet answered */
	uint64_t awaited_gen; /* see Broker.commit_gen */
	/*
	 * Over a connection limit at accept: the first request is answered
	 * LIMIT naming this limit, then the connection is closed; so is one
	 * that sends nothing before refuse_timer fires.
	 */
	const char *refuse_limit;
	/* Bytes of deliveries built for it in this delivery phase, not yet
	 * queued: with out_bytes they are held under max_out_bytes. */
	size_t deliver_bytes;
	bool held_back; /* a delivery was held back for that: wake it */
	ev_timer refuse_timer;
	bool uid_counted; /* counts against max_connections_per_uid */

	LeaseList leases;
	Waiter *waiters;  /* RECVs waiting, linked by conn_next */
	struct Sub *subs; /* subscriptions, linked by owner_next */
	TempRef *temps;	  /* temporary mailboxes it created */
	size_t n_temps;
	Conn *prev, *next;
};

/* Takes ownership of fd (closed on failure). */
int conn_new(Conn **out, Broker *b, int fd);
void conn_free(Conn *c);
/* Stop I/O, give leases back, drop waiters; reaped later by the broker. */
void conn_close(Conn *c, const char *why);

/*
 * conn_send - queue a whole frame (copied) and try to send it now.
 * Returns 0 or -ENOMEM; a broken socket closes the connection instead.
 */
int conn_send(Conn *c, const uint8_t *frame, size_t len);
/* Encode and send an error reply for request (op, id). */
void conn_reply_error(Conn *c, uint16_t op, uint32_t id, unsigned status,
		      const char *limit, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
/*
 * conn_hold - stop (held true) or resume reading c's requests whatever its
 * output. A read request answered after the batch's commit holds its
 * connection until then, so that it shows none of the requests the same
 * connection sent after it.
 */
void conn_hold(Conn *c, bool held);
/* Send the frame in the broker's scratch writer. */
void conn_send_writer(Conn *c, ProtoWriter *w);
/*
 * conn_congested - c has so much output queued (max_out_bytes) that it is
 * not read from, and nothing more is delivered to it (RECV answers, pushes)
 * until it drains; then broker_conn_wake() serves it again.
 */
static inline bool
conn_congested(const Conn *c)
{
	return c->read_paused;
}

#endif
