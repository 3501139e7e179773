/*
 * mbox.h - libmbox, the C client of the mboxd message broker.
 *
 * Conventions:
 * - Every call that can fail returns 0 (or a count) on success and a
 *   negative errno value on failure; mbox_strerror() turns it into text,
 *   mbox_last_error() gives the broker's own explanation of the last
 *   failed request on that connection.
 * - Handles are opaque. Whatever a call hands out (mbox_msg, info lists)
 *   belongs to the caller and is released with the matching _free call.
 * - No global state. One mbox handle must not be used by two threads at
 *   once; use one connection per thread, or lock around every call.
 *
 * Errors a broker reply maps to:
 *   -ENOENT no such mailbox          -EACCES permission denied
 *   -EEXIST mailbox exists           -EDQUOT a configured limit was hit
 *   -ENOSPC mailbox full             -EMSGSIZE payload too large
 *   -EINVAL invalid argument         -ESTALE message not leased by you
 *   -EIO    store failure            -ESHUTDOWN broker stopping
 *   -ENOTEMPTY mailbox not empty     -EBUSY too many requests in flight,
 *                                    or an exclusive subscription conflicts
 *   -EBADMSG broker found our frame malformed
 *   -EOPNOTSUPP operation unknown to the broker
 *   -EPROTONOSUPPORT no common protocol version
 * and connection-level errors: -ECONNREFUSED / -ENOENT (connect: no broker
 * at that path), -ECONNRESET (broker went away), -EPROTO (broker sent
 * something this library cannot parse). -ETIMEDOUT comes only from the
 * calls with a timeout of their own (mbox_next, mbox_call); every other
 * call waits for the broker's answer as long as it takes, so a broker
 * that hangs (or is stopped with SIGSTOP) holds it.
 *
 * Durations sent to the broker (delay_ms, ttl_ms, lease_ms) are at most
 * a year (31536000000 ms), a hand-off's wait_ms at most an hour
 * (3600000 ms), else -EINVAL; the waits of mbox_recv, mbox_next and
 * mbox_call may be as long as you like.
 */
#ifndef MBOX_H
#define MBOX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mbox mbox;
typedef struct mbox_msg mbox_msg;

/*
 * mbox_default_socket_path - the socket path a client uses when given
 * none: $MBOX_SOCKET, else /run/mbox/mbox.sock for uid 0, else
 * $XDG_RUNTIME_DIR/mbox/mbox.sock, else /tmp/mbox-$UID/mbox.sock.
 * Returns 0, or -ENAMETOOLONG when it does not fit in size bytes.
 */
int mbox_default_socket_path(char *buf, size_t size);

/*
 * mbox_connect - connect to the broker at path (NULL: the default path)
 * and complete the handshake. On success *out is a new handle. -EPERM
 * when path is NULL and the default is /tmp/mbox-$UID/mbox.sock, whose
 * directory exists but is not the caller's alone (someone else could
 * listen there, posing as the caller's broker).
 */
int mbox_connect(mbox **out, const char *path);
/* Close the connection and free the handle; leased messages go back to
 * the broker's queue. mbox_close(NULL) is fine. */
void mbox_close(mbox *m);
/* The connection's file descriptor (for poll; do not read or write it). */
int mbox_fd(const mbox *m);
/* Largest payload the broker accepts, from the handshake. */
size_t mbox_max_msg_size(const mbox *m);

const char *mbox_strerror(int err);
/* The broker's message for the last failed request, or "" (owned by m). */
const char *mbox_last_error(const mbox *m);

int mbox_ping(mbox *m);

/* 1 when name is a valid mailbox name (1 to 200 bytes of A-Z a-z 0-9
 * . _ -), else 0: for checking a name before any request carries it. */
int mbox_name_valid(const char *name);

/*
 * mbox_create - create a mailbox. settings is NULL or a NULL-terminated
 * array of "key=value" strings: lease (seconds, or with a unit suffix
 * ms/s/m/h), max_deliveries, max_msgs, max_bytes, ttl, mode (octal),
 * group (gid), temp (0 or 1: deleted with its messages when this
 * connection closes). -EEXIST when it exists.
 */
int mbox_create(mbox *m, const char *mailbox, const char *const *settings);

/* Options of a post; a zeroed struct (or NULL) means the defaults. */
typedef struct mbox_post_opts {
	unsigned priority;	    /* 0..9, higher first; 9 = urgent */
	uint64_t delay_ms;	    /* not deliverable before now + delay */
	uint64_t ttl_ms;	    /* dead as expired after now + ttl */
	const char *dedup;	    /* dedup key, NULL = none */
	const char *const *headers; /* NULL or {key, value, ..., NULL} */
} mbox_post_opts;

/*
 * mbox_post - store one message in mailbox (created if the broker's
 * autocreate allows). Returns 0 once the broker has made it durable, and
 * its id in *id (id may be NULL).
 */
int mbox_post(mbox *m, const char *mailbox, const void *data, size_t len,
	      const mbox_post_opts *opts, uint64_t *id);

typedef struct mbox_post_item {
	const void *data;
	size_t len;
	const mbox_post_opts *opts; /* NULL = defaults */
} mbox_post_item;

/*
 * mbox_post_batch - post n messages in one request: all are stored or
 * none. ids (n entries, may be NULL) receives their ids in order.
 */
int mbox_post_batch(mbox *m, const char *mailbox, const mbox_post_item *items,
		    size_t n, uint64_t *ids);

/*
 * mbox_recv - lease up to max (1..1024) ready messages of mailbox,
 * waiting up to wait_ms (0 = do not wait, < 0 = forever) for the first.
 * lease_ms 0 uses the mailbox's lease. msgs must hold max pointers; *n
 * receives how many were filled (0 when the wait ran out). Each message
 * must be acked, nacked or left to the broker, and freed. -EBUSY: the
 * mailbox has exclusive subscribers and this connection is not the
 * active one's.
 */
int mbox_recv(mbox *m, const char *mailbox, size_t max, int64_t wait_ms,
	      uint64_t lease_ms, mbox_msg **msgs, size_t *n);

/* Acknowledge: remove for good. All ids or none (-ESTALE). */
int mbox_ack(mbox *m, const uint64_t *ids, size_t n);
/* Give back: ready again after delay_ms, delivery count kept. */
int mbox_nack(mbox *m, const uint64_t *ids, size_t n, uint64_t delay_ms);

#define MBOX_PEEK_DEAD_ONLY 0x1u
#define MBOX_PEEK_BY_ID	    0x2u
/*
 * Browse without leasing: up to max messages with id >= from_id. The
 * queue (ready, delayed and leased messages) comes in delivery order
 * (priority descending, then id); with MBOX_PEEK_BY_ID in id order, so
 * from_id = last id + 1 pages through all of it. MBOX_PEEK_DEAD_ONLY:
 * the dead list, in id order. A reply may hold fewer than max messages
 * (the broker caps its size) even when more follow.
 */
int mbox_peek(mbox *m, const char *mailbox, size_t max, uint64_t from_id,
	      unsigned flags, mbox_msg **msgs, size_t *n);

/*
 * mbox_touch - extend the leases of ids to now + lease_ms (0: the lease
 * length each was delivered with). All ids or none (-ESTALE). The new
 * deadline (ns since the epoch) goes to *deadline_ns (may be NULL).
 */
int mbox_touch(mbox *m, const uint64_t *ids, size_t n, uint64_t lease_ms,
	       int64_t *deadline_ns);
/* Move leased messages to the dead list at once (reason "rejected"). */
int mbox_reject(mbox *m, const uint64_t *ids, size_t n);

/* ---- Mailbox administration ---- */

/* Change settings (the keys of mbox_create; temp only with the value the
 * mailbox has, as mbox_stat shows it). Owner only. */
int mbox_set(mbox *m, const char *mailbox, const char *const *settings);
#define MBOX_DELETE_FORCE_FLAG 0x1u
/* Delete a mailbox; -ENOTEMPTY if it holds messages, unless
 * MBOX_DELETE_FORCE_FLAG. Owner only. */
int mbox_delete(mbox *m, const char *mailbox, unsigned flags);
#define MBOX_PURGE_DEAD_ONLY 0x1u
/* Delete the ready (and delayed) messages, or with MBOX_PURGE_DEAD_ONLY
 * the dead ones; leased ones are never touched. Owner only. *count (may
 * be NULL) receives how many went. */
int mbox_purge(mbox *m, const char *mailbox, unsigned flags, uint64_t *count);
/* Put up to max (0 = all) dead messages back to ready, oldest first,
 * delivery counts reset. Owner or admin only. */
int mbox_kick(mbox *m, const char *mailbox, uint64_t max, uint64_t *count);
/* Stop / restart deliveries of a mailbox (posts are still accepted). */
int mbox_pause(mbox *m, const char *mailbox);
int mbox_resume(mbox *m, const char *mailbox);

/* Change the permission bits (0..0777) of a mailbox. Owner or admin. */
int mbox_chmod(mbox *m, const char *mailbox, unsigned mode);
/*
 * mbox_chown - change owner and/or group; (uid_t)-1 / (gid_t)-1 leaves
 * one as it is (both -1 changes nothing, and is -EINVAL). A new owner
 * needs an admin; the owner may pick any group it belongs to.
 */
int mbox_chown(mbox *m, const char *mailbox, uid_t owner, gid_t group);

/* ---- Fan-out ---- */

/* Bind mailbox to a topic pattern: words separated by '.', '*' matches
 * one word, '>' (last word only) one or more words. Owner only. */
int mbox_bind(mbox *m, const char *mailbox, const char *pattern);
int mbox_unbind(mbox *m, const char *mailbox, const char *pattern);
/*
 * mbox_publish - store one copy of the message in every mailbox bound to
 * a pattern matching topic that the caller may write, all in one
 * transaction. *copies (may be NULL) receives how many were stored (0
 * when nothing matched). opts->dedup must be NULL. A full mailbox the
 * caller owns refuses it all (-ENOSPC); a full one of another owner is
 * left out, and mbox_publish_skipped says how many were.
 */
int mbox_publish(mbox *m, const char *topic, const void *data, size_t len,
		 const mbox_post_opts *opts, size_t *copies);
/* Full mailboxes of other owners the last mbox_publish left out. */
size_t mbox_publish_skipped(const mbox *m);

/* ---- Push subscriptions ---- */

#define MBOX_SUB_EXCLUSIVE_FLAG 0x1u
/*
 * mbox_subscribe - have the broker push messages of mailbox to this
 * connection, at most window (1..1024) unacked at a time; lease_ms 0 =
 * the mailbox's lease. With MBOX_SUB_EXCLUSIVE_FLAG only one exclusive
 * subscriber of the mailbox is active, later ones wait as standbys in
 * arrival order; *standby (may be NULL) says whether this one waits.
 * Pushed messages are leased like mbox_recv's: ack, nack or reject them.
 * -EDQUOT: the connection has the broker's max_subscriptions already.
 */
int mbox_subscribe(mbox *m, const char *mailbox, unsigned window,
		   uint64_t lease_ms, unsigned flags, int *standby);
/* Stop pushes from mailbox; messages already pushed stay leased. */
int mbox_unsubscribe(mbox *m, const char *mailbox);
/*
 * mbox_next - the next pushed message (blocking use): waits up to wait_ms
 * (0 = do not wait, < 0 = forever). Returns 0 with *msg set, or
 * -ETIMEDOUT with *msg NULL when none came in time, or -ENOENT when the
 * broker ended a subscription (its mailbox was deleted) after the
 * messages it pushed before: mbox_ended_mailbox says which,
 * mbox_last_error why. The connection and its other subscriptions go on.
 */
int mbox_next(mbox *m, int64_t wait_ms, mbox_msg **msg);
/* The mailbox of the subscription that the last -ENOENT of mbox_next or
 * mbox_dispatch reported ended, or NULL if none has ended. */
const char *mbox_ended_mailbox(const mbox *m);
/* Pushed messages already read from the socket and not yet handed out.
 * An external loop must call mbox_dispatch when this is not 0 even if
 * the fd is not readable (a blocking call may have read them). */
size_t mbox_pending(const mbox *m);
/*
 * For an external event loop: watch mbox_fd() for readability and call
 * mbox_dispatch, which reads whatever is there without blocking and calls
 * fn for every pushed message (fn owns msg and must free it). Returns how
 * many messages were dispatched, or a negative error (-ECONNRESET: the
 * broker went away; -ENOENT: a subscription ended, as for mbox_next, and
 * the messages queued after that are for the next call). fn may call any
 * mbox function on m (ack, post...) except mbox_close. Messages that
 * arrive while fn runs stay queued: check mbox_pending again afterwards.
 */
typedef void (*mbox_deliver_fn)(void *ctx, mbox_msg *msg);
int mbox_dispatch(mbox *m, mbox_deliver_fn fn, void *ctx);

/* ---- Hand-off to a successor ---- */

#define MBOX_TOKEN_SIZE 33 /* 32 hex digits and a NUL */
/*
 * mbox_handoff - park every lease and subscription of this connection
 * under a new token, valid for wait_ms (0 = 30 s; at most an hour, else
 * -EINVAL). The broker stops
 * pushing to this connection; pushed messages not yet handed out by
 * mbox_next are dropped locally (they are parked too). Messages the
 * caller still holds must not be acked after this: they belong to the
 * successor. Writes the token and its deadline (ns since the epoch).
 * -EDQUOT: too many hand-offs wait already (64 per uid, 4096 in all).
 */
int mbox_handoff(mbox *m, uint64_t wait_ms, char token[MBOX_TOKEN_SIZE],
		 int64_t *deadline_ns);
/*
 * mbox_claim - take over the leases and subscriptions parked under token
 * (same uid as the one who parked them, or an admin, and read permission
 * on their mailboxes, else -EACCES with the record kept). The leased
 * messages, unchanged (no delivery counted), arrive as pushes before this
 * returns: read them with mbox_next or mbox_dispatch. *count (may be
 * NULL) receives how many. A parked subscription whose mailbox was
 * deleted meanwhile is not taken over: its end comes first (-ENOENT
 * from mbox_next, mbox_ended_mailbox). -ENOENT: no such token, or its deadline
 * passed. -EDQUOT: the caller would hold more than the broker's max_unacked
 * leases or max_subscriptions subscriptions; settle or unsubscribe some,
 * or claim on another connection (the token stays valid).
 */
int mbox_claim(mbox *m, const char *token, size_t *count);

/* ---- Request / reply ---- */

/*
 * mbox_call - post a request to mailbox with headers reply-to (a
 * temporary mailbox of this connection, created on first use, mode 0622)
 * and correlation-id (random), then wait up to timeout_ms (< 0 = forever)
 * for the reply with that correlation id. Returns 0 and *reply (free it),
 * or -ETIMEDOUT. opts may add headers; reply-to and correlation-id are
 * set by the call.
 */
int mbox_call(mbox *m, const char *mailbox, const void *data, size_t len,
	      const mbox_post_opts *opts, int64_t timeout_ms, mbox_msg **reply);
/*
 * mbox_reply - answer request (a message that has a reply-to header):
 * post data to its reply-to mailbox with its correlation-id, plus headers
 * (NULL or {key, value, ..., NULL}). -EINVAL if request has no reply-to.
 * The answer goes only into an existing mailbox owned by the request's
 * sender uid: -ENOENT if it is gone (the caller gave up), -EACCES if
 * another uid owns it (anyone may name any reply-to; we must not post
 * there with our permissions) or we may not write it. The request itself still
 * has to be acked.
 */
int mbox_reply(mbox *m, const mbox_msg *request, const void *data, size_t len,
	       const char *const *headers);

/* Message accessors; the strings are owned by the message. */
uint64_t mbox_msg_id(const mbox_msg *msg);
const char *mbox_msg_mailbox(const mbox_msg *msg);
const void *mbox_msg_data(const mbox_msg *msg, size_t *len);
unsigned mbox_msg_priority(const mbox_msg *msg);
uint32_t mbox_msg_deliveries(const mbox_msg *msg);
int64_t mbox_msg_time_ns(const mbox_msg *msg);
pid_t mbox_msg_sender_pid(const mbox_msg *msg);
uid_t mbox_msg_sender_uid(const mbox_msg *msg);
gid_t mbox_msg_sender_gid(const mbox_msg *msg);
const char *mbox_msg_sender_name(const mbox_msg *msg);
/* Value of header key, or NULL. */
const char *mbox_msg_header(const mbox_msg *msg, const char *key);
size_t mbox_msg_header_count(const mbox_msg *msg);
/* The i-th header; 0, or -ERANGE. */
int mbox_msg_header_at(const mbox_msg *msg, size_t i, const char **key,
		       const char **value);
/* When the message expires (ttl), ns since the epoch; 0 = never. */
int64_t mbox_msg_expires_ns(const mbox_msg *msg);
/* Lease deadline of a received or pushed message, 0 for peeked ones. */
int64_t mbox_msg_deadline_ns(const mbox_msg *msg);
/* "rejected", "max-deliveries", "expired" for dead messages, else NULL. */
const char *mbox_msg_dead_reason(const mbox_msg *msg);
void mbox_msg_free(mbox_msg *msg);

/* One mailbox as listed. */
typedef struct mbox_mailbox_info {
	char *name;
	uint64_t ready;	  /* deliverable now */
	uint64_t leased;  /* held by consumers */
	uint64_t delayed; /* waiting for their delay */
	uint64_t dead;
	uint64_t bytes;	   /* payload bytes stored */
	int64_t oldest_ns; /* enqueue time of the oldest message, 0 if none */
	uint64_t consumers;
	uint32_t owner_uid;
	uint32_t gid;
	uint32_t mode;
} mbox_mailbox_info;

/* Every mailbox the caller may see, in name order; free with
 * mbox_list_free. Asked for in pages (protocol.md 5.8): a mailbox created
 * or deleted meanwhile may or may not be listed, none twice. */
int mbox_list(mbox *m, mbox_mailbox_info **list, size_t *n);
void mbox_list_free(mbox_mailbox_info *list, size_t n);

/* ---- Inspection (STAT, CLIENTS, STATS) ---- */
/*
 * One event counter: its name ("posted", "delivered", "redelivered",
 * "acked", "nacked", "dead_rejected", "dead_max_deliveries",
 * "dead_expired", "bytes_in", "bytes_out", and for the broker
 * "connections" and "commits"), its total since the broker started, and its
 * rate per second times 1000 over the last interval_ms of the enclosing struct.
 */
typedef struct mbox_counter {
	char *name;
	uint64_t total;
	uint64_t rate_milli; /* events per second x 1000 */
} mbox_counter;
/* The counter called name in list, or NULL. */
const mbox_counter *mbox_counter_find(const mbox_counter *list, size_t n,
				      const char *name);

#define MBOX_SUB_STANDBY_FLAG 0x2u /* a standby exclusive subscriber */
/* One push subscription of a connection. */
typedef struct mbox_subscription_info {
	char *mailbox;
	uint32_t window;   /* most unacked pushes at a time */
	uint64_t unacked;  /* pushed and not settled yet */
	uint64_t lease_ms; /* lease of its pushes */
	unsigned flags;	   /* MBOX_SUB_EXCLUSIVE_FLAG, MBOX_SUB_STANDBY_FLAG */
} mbox_subscription_info;

#define MBOX_CLIENT_SELF_FLAG 0x1u /* the connection that asked */
/* On the last one: the list was cut short after it (its subscriptions
 * may be too), more than one reply of the broker holds. */
#define MBOX_CLIENT_CUT_FLAG 0x2u
/* One connection to the broker. */
typedef struct mbox_client_info {
	uint64_t conn_id; /* connection number, as in the broker's log */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	char comm[17];	      /* process name */
	int64_t connected_ns; /* since when, ns since the epoch */
	uint64_t leased;      /* messages it holds leased */
	uint64_t waiting;     /* its RECVs waiting for messages */
	unsigned flags;	      /* MBOX_CLIENT_SELF_FLAG */
	mbox_subscription_info *subs;
	size_t n_subs;
} mbox_client_info;
/*
 * mbox_clients - the broker's connections, oldest first: all of them for
 * an admin, else those of the caller's uid. Free with mbox_clients_free.
 */
int mbox_clients(mbox *m, mbox_client_info **list, size_t *n);
void mbox_clients_free(mbox_client_info *list, size_t n);

#define MBOX_STAT_PAUSED 0x1u /* deliveries paused */
#define MBOX_STAT_TEMP	 0x2u /* temporary mailbox */
/* One mailbox in detail (mbox_stat). */
typedef struct mbox_mailbox_stat {
	mbox_mailbox_info info; /* as mbox_list gives it */
	unsigned flags;		/* MBOX_STAT_PAUSED, MBOX_STAT_TEMP */
	uint64_t waiting;	/* RECVs waiting on it */
	int64_t created_ns;
	char **settings; /* "key=value", as mbox_create takes them */
	size_t n_settings;
	mbox_counter *counters; /* its events, without the broker's own */
	size_t n_counters;
	uint64_t interval_ms; /* span of the rates */
	/* Connections subscribed to or waiting on it; only their
	 * subscriptions and leases of this mailbox are counted. */
	mbox_client_info *consumers;
	size_t n_consumers;
	int truncated; /* more consumers than one reply holds */
} mbox_mailbox_stat;
/*
 * mbox_stat - one mailbox: counters, settings, state, event counters and
 * rates, consumers. Needs read or write permission. Free with
 * mbox_stat_free.
 */
int mbox_stat(mbox *m, const char *mailbox, mbox_mailbox_stat **out);
void mbox_stat_free(mbox_mailbox_stat *st);

/* The broker as a whole (mbox_stats); anyone may ask. */
typedef struct mbox_broker_stats {
	char *server;	    /* name and version */
	int64_t started_ns; /* ns since the epoch */
	uint64_t connections, mailboxes;
	/* Messages of every mailbox, as in mbox_mailbox_info. */
	uint64_t ready, leased, delayed, dead, bytes;
	uint64_t store_bytes; /* database file and WAL */
	mbox_counter *counters;
	size_t n_counters;
	uint64_t interval_ms; /* span of the rates */
	/* Disk space the broker keeps aside for a full disk, now (0 when
	 * none is configured, or it was given back); and whether it found
	 * the disk of its store full and holds the store at its size, posts
	 * going only where acks freed room (1) or not (0). disk_known is 0
	 * (and both are 0) when the broker does not say: an older one. */
	uint64_t reserve_bytes;
	int disk_full;
	int disk_known;
} mbox_broker_stats;
int mbox_stats(mbox *m, mbox_broker_stats **out);
void mbox_stats_free(mbox_broker_stats *st);

#ifdef __cplusplus
}
#endif

#endif
