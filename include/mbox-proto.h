/*
 * mbox-proto.h - the mboxd wire format, shared by the broker and libmbox.
 *
 * doc/protocol.md is the normative description; this header is its
 * transcription into constants. Everything on the wire is little-endian.
 *
 * A frame is a 16-byte header followed by body_len bytes of body. A frame
 * travels in one SOCK_SEQPACKET datagram when 16 + body_len <=
 * MBOX_PROTO_DGRAM_MAX; otherwise the first datagram holds the header and
 * the first MBOX_PROTO_DGRAM_MAX - 16 body bytes and continuation datagrams
 * (raw body bytes, no header, each at most MBOX_PROTO_DGRAM_MAX bytes)
 * follow back to back until body_len bytes have been sent. A sender never
 * interleaves datagrams of two frames.
 *
 * The body is a sequence of fields: u16 tag, u32 length, length bytes of
 * value. Integers are always u64 (length 8). Strings are UTF-8 without a
 * terminating NUL. Nested fields (MSG, HEADER, INFO) hold a field sequence.
 */
#ifndef MBOX_PROTO_H
#define MBOX_PROTO_H

#include <stdint.h>

#define MBOX_PROTO_VERSION     1u
#define MBOX_PROTO_HEADER_SIZE 16u
/* Largest datagram either side sends or must accept (header included). */
#define MBOX_PROTO_DGRAM_MAX 65536u
/* Size of one field's tag + length prefix. */
#define MBOX_PROTO_FIELD_HDR 6u
/* Body bytes allowed beyond max_msg_size for the fields around a payload. */
#define MBOX_PROTO_FRAME_SLACK 65536u

#define MBOX_NAME_MAX	      200u /* mailbox name, bytes */
#define MBOX_COMM_MAX	      16u  /* process name, bytes (TASK_COMM_LEN) */
#define MBOX_PRIORITY_MAX     9u
#define MBOX_HEADERS_MAX      4096u /* all header keys + values, bytes */
#define MBOX_DEFAULT_MSG_SIZE (1024u * 1024u)
#define MBOX_DEFAULT_LEASE_MS 60000u
#define MBOX_RECV_MAX	      1024u /* most messages one RECV may ask for */

/* Header layout (byte offsets). */
#define MBOX_HDR_OFF_OPCODE  0	/* u16 */
#define MBOX_HDR_OFF_FLAGS   2	/* u8 */
#define MBOX_HDR_OFF_VERSION 3	/* u8, always MBOX_PROTO_VERSION */
#define MBOX_HDR_OFF_ID	     4	/* u32 request id, echoed in the reply */
#define MBOX_HDR_OFF_LEN     8	/* u32 body length */
#define MBOX_HDR_OFF_STATUS  12 /* u32 status, 0 in requests and pushes */

/* Header flags. */
#define MBOX_FLAG_REPLY	 0x01u /* broker -> client answer to request id */
#define MBOX_FLAG_PUSH	 0x02u /* broker -> client unsolicited (id 0) */
#define MBOX_FLAGS_KNOWN (MBOX_FLAG_REPLY | MBOX_FLAG_PUSH)

enum mbox_op {
	MBOX_OP_HELLO = 1,
	MBOX_OP_PING = 2,
	MBOX_OP_CREATE = 3,
	MBOX_OP_DELETE = 4,
	MBOX_OP_POST = 5,
	MBOX_OP_RECV = 6,
	MBOX_OP_ACK = 7,
	MBOX_OP_NACK = 8,
	MBOX_OP_TOUCH = 9,
	MBOX_OP_REJECT = 10,
	MBOX_OP_LIST = 11,
	MBOX_OP_PEEK = 12,
	MBOX_OP_SUBSCRIBE = 13,
	MBOX_OP_UNSUBSCRIBE = 14,
	MBOX_OP_PUBLISH = 15,
	MBOX_OP_BIND = 16,
	MBOX_OP_UNBIND = 17,
	MBOX_OP_SET = 18,
	MBOX_OP_PURGE = 19,
	MBOX_OP_KICK = 20,
	MBOX_OP_PAUSE = 21,
	MBOX_OP_RESUME = 22,
	MBOX_OP_HANDOFF = 23,
	MBOX_OP_CLAIM = 24,
	MBOX_OP_STAT = 25,
	MBOX_OP_CLIENTS = 26,
	MBOX_OP_STATS = 27,
	MBOX_OP_CHMOD = 28,
	MBOX_OP_CHOWN = 29,
	MBOX_OP_DELIVER = 64, /* push only */
	MBOX_OP_ENDED = 65,   /* push only: a subscription ended */
};

/* Field tags. Type: u64 = 8-byte integer, str = UTF-8, bytes, nest. */
enum mbox_tag {
	MBOX_TAG_MAILBOX = 1,	   /* str, 1..MBOX_NAME_MAX of [A-Za-z0-9._-] */
	MBOX_TAG_DATA = 2,	   /* bytes, the payload */
	MBOX_TAG_ID = 3,	   /* u64 message id */
	MBOX_TAG_COUNT = 4,	   /* u64 */
	MBOX_TAG_WAIT_MS = 5,	   /* u64 */
	MBOX_TAG_PRIORITY = 6,	   /* u64 0..9 */
	MBOX_TAG_DELAY_MS = 7,	   /* u64 */
	MBOX_TAG_TTL_MS = 8,	   /* u64 */
	MBOX_TAG_LEASE_MS = 9,	   /* u64 */
	MBOX_TAG_DEDUP = 10,	   /* str */
	MBOX_TAG_HEADER = 11,	   /* nest: KEY, VALUE */
	MBOX_TAG_KEY = 12,	   /* str */
	MBOX_TAG_VALUE = 13,	   /* str */
	MBOX_TAG_MSG = 14,	   /* nest: a message */
	MBOX_TAG_TIME_NS = 15,	   /* u64 ns since the epoch */
	MBOX_TAG_DELIVERIES = 16,  /* u64 */
	MBOX_TAG_SENDER_PID = 17,  /* u64 */
	MBOX_TAG_SENDER_UID = 18,  /* u64 */
	MBOX_TAG_SENDER_GID = 19,  /* u64 */
	MBOX_TAG_SENDER_COMM = 20, /* str, at most MBOX_COMM_MAX */
	MBOX_TAG_TEXT = 21,	   /* str, human-readable error text */
	MBOX_TAG_VERSION_MIN = 22, /* u64 */
	MBOX_TAG_VERSION_MAX = 23, /* u64 */
	MBOX_TAG_VERSION = 24,	   /* u64 */
	MBOX_TAG_MAX_MSG_SIZE = 25, /* u64 */
	MBOX_TAG_MAX_FRAME = 26,    /* u64 largest body_len accepted */
	MBOX_TAG_SETTING = 27,	    /* str "key=value" */
	MBOX_TAG_INFO = 28,	    /* nest: a mailbox summary */
	MBOX_TAG_READY = 29,	    /* u64 */
	MBOX_TAG_LEASED = 30,	    /* u64 */
	MBOX_TAG_DELAYED = 31,	    /* u64 */
	MBOX_TAG_DEAD = 32,	    /* u64 */
	MBOX_TAG_BYTES = 33,	    /* u64 */
	MBOX_TAG_OLDEST_NS = 34,    /* u64 enqueue time of the oldest message */
	MBOX_TAG_CONSUMERS = 35,    /* u64 */
	MBOX_TAG_FLAGS = 36,	    /* u64 per-operation flags */
	MBOX_TAG_FROM_ID = 37,	    /* u64 */
	MBOX_TAG_DEAD_REASON = 38,  /* str: rejected, max-deliveries, expired */
	MBOX_TAG_SERVER = 39,	    /* str, broker name and version */
	MBOX_TAG_LIMIT = 40,	    /* str, name of the limit that was hit */
	MBOX_TAG_OWNER_UID = 41,    /* u64 */
	MBOX_TAG_GROUP_GID = 42,    /* u64 */
	MBOX_TAG_MODE = 43,	    /* u64, permission bits 0..0777 */
	MBOX_TAG_DEADLINE_NS = 44,  /* u64 lease deadline, ns since the epoch */
	MBOX_TAG_TOPIC = 45,	    /* str, a topic or a topic pattern */
	MBOX_TAG_TOKEN = 46,	    /* str, hand-off token, 32 hex digits */
	MBOX_TAG_EXPIRES_NS = 47,   /* u64 the message expires (ttl) */
	MBOX_TAG_CLIENT = 48,	    /* nest: one connection (CLIENTS, STAT) */
	MBOX_TAG_SUBSCRIPTION = 49, /* nest: one subscription of a CLIENT */
	MBOX_TAG_COUNTER = 50,	    /* nest: KEY, COUNT, RATE_MILLI */
	MBOX_TAG_RATE_MILLI = 51,   /* u64 events per 1000 s (per s x 1000) */
	MBOX_TAG_INTERVAL_MS = 52,  /* u64 window the rates were taken over */
	MBOX_TAG_STORE_BYTES = 53,  /* u64 database file size, WAL included */
	MBOX_TAG_CONNECTIONS = 54,  /* u64 connections open */
	MBOX_TAG_MAILBOXES = 55,    /* u64 mailboxes */
	MBOX_TAG_WAITING = 56,	    /* u64 RECVs waiting */
	MBOX_TAG_CONN_ID = 57,	    /* u64 connection number (broker's log) */
	MBOX_TAG_RESERVE_BYTES = 58, /* u64 disk space kept for a full disk */
	MBOX_TAG_DISK_FULL = 59,     /* u64 1: the store is held at its size */
	MBOX_TAG_SKIPPED = 60,	     /* u64 PUBLISH: others' full mailboxes */
};

/* FLAGS values of PEEK. */
#define MBOX_PEEK_DEAD	   0x1u /* the dead list instead of the queue */
#define MBOX_PEEK_ID_ORDER 0x2u /* the queue in id order */
/* FLAGS values of POST. */
#define MBOX_POST_NO_CREATE 0x1u /* never autocreate the mailbox */
/* FLAGS of a LIST reply. */
#define MBOX_LIST_MORE 0x1u /* more follow: LIST again after the last name */
/* FLAGS values of PURGE. */
#define MBOX_PURGE_DEAD 0x1u
/* FLAGS values of DELETE. */
#define MBOX_DELETE_FORCE 0x1u
/* FLAGS values of SUBSCRIBE (request) and of its reply. */
#define MBOX_SUB_EXCLUSIVE 0x1u /* request: one active subscriber */
#define MBOX_SUB_STANDBY   0x2u /* reply: waiting as a standby */
/* FLAGS of an INFO in a STAT reply. */
#define MBOX_INFO_PAUSED 0x1u /* deliveries paused (PAUSE) */
#define MBOX_INFO_TEMP	 0x2u /* temporary mailbox */
/* FLAGS of a CLIENT. */
#define MBOX_CLIENT_SELF 0x1u /* the connection that asked */
/* FLAGS of a CLIENTS or STAT reply. */
#define MBOX_REPLY_TRUNCATED 0x1u /* more CLIENTs than fit in one reply */

#define MBOX_TOPIC_MAX		200u  /* topic or pattern, bytes */
#define MBOX_TOKEN_HEX		32u   /* hand-off token: 128 bits as hex */
#define MBOX_WINDOW_MAX		1024u /* largest subscription window */
#define MBOX_DEFAULT_HANDOFF_MS 30000u
#define MBOX_DEFAULT_DEDUP_MS	120000u

/* Reply status codes (header field status). */
enum mbox_status {
	MBOX_S_OK = 0,
	MBOX_S_MALFORMED = 1,	/* body unparsable, field missing/duplicate */
	MBOX_S_UNKNOWN_OP = 2,	/* opcode not known to this broker */
	MBOX_S_VERSION = 3,	/* no common version, or HELLO missing */
	MBOX_S_NOT_FOUND = 4,	/* no such mailbox */
	MBOX_S_DENIED = 5,	/* permission denied */
	MBOX_S_EXISTS = 6,	/* mailbox already exists */
	MBOX_S_LIMIT = 7,	/* a configured limit; LIMIT names it */
	MBOX_S_FULL = 8,	/* mailbox full (max_msgs / max_bytes) */
	MBOX_S_TOO_LARGE = 9,	/* payload or frame over the size limit */
	MBOX_S_INVALID = 10,	/* a value out of range or badly formed */
	MBOX_S_NOT_LEASED = 11, /* id not leased by this connection */
	MBOX_S_STORE = 12,	/* the store failed (disk full, I/O) */
	MBOX_S_SHUTDOWN = 13,	/* broker is stopping */
	MBOX_S_NOT_EMPTY = 14,	/* mailbox not empty */
	MBOX_S_BUSY = 15,	/* requests in flight; consumers conflict */
};

#endif
