/*
 * proto.c - the one encoder/decoder of the mboxd wire format.
 *
 * doc/protocol.md sections 2 and 4 are the specification; this file is
 * their only implementation, linked into both libmbox and mboxd so the two
 * sides cannot drift apart.
 *
 * Invariants:
 * - The decoder (reader, fields parser, header decoder) never reads past
 *   the buffer it was given: every length from the wire is compared with
 *   what is left before it is used, and comparisons are written as
 *   "need > left" on size_t so that no sum can wrap.
 * - The decoder never allocates. The assembler is the only place that
 *   allocates for the peer, and it does so once per frame, after the
 *   announced body_len has been checked against its max_body.
 * - A ProtoWriter's buffer always starts with a 16-byte header once
 *   proto_writer_begin succeeded; w->len - 16 (the body so far) never
 *   exceeds UINT32_MAX, so a nested length patched in later always fits
 *   its u32.
 * - Pure code: no I/O, no globals other than constant tables.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/proto.h"

/* why_buf size promised by proto.h. */
#define WHY_SIZE 128

enum tag_type {
	TYPE_NONE = 0, /* not a tag: unknown */
	TYPE_U64,
	TYPE_STR,
	TYPE_BYTES,
	TYPE_NEST,
};

typedef struct TagInfo {
	const char *name;
	uint8_t type; /* enum tag_type */
	bool repeat;  /* may appear more than once in one sequence */
} TagInfo;

/* doc/protocol.md section 4.3, transcribed. Holes are TYPE_NONE. */
static const TagInfo tag_table[] = {
	[MBOX_TAG_MAILBOX] = {"MAILBOX", TYPE_STR, false},
	[MBOX_TAG_DATA] = {"DATA", TYPE_BYTES, false},
	[MBOX_TAG_ID] = {"ID", TYPE_U64, true},
	[MBOX_TAG_COUNT] = {"COUNT", TYPE_U64, false},
	[MBOX_TAG_WAIT_MS] = {"WAIT_MS", TYPE_U64, false},
	[MBOX_TAG_PRIORITY] = {"PRIORITY", TYPE_U64, false},
	[MBOX_TAG_DELAY_MS] = {"DELAY_MS", TYPE_U64, false},
	[MBOX_TAG_TTL_MS] = {"TTL_MS", TYPE_U64, false},
	[MBOX_TAG_LEASE_MS] = {"LEASE_MS", TYPE_U64, false},
	[MBOX_TAG_DEDUP] = {"DEDUP", TYPE_STR, false},
	[MBOX_TAG_HEADER] = {"HEADER", TYPE_NEST, true},
	[MBOX_TAG_KEY] = {"KEY", TYPE_STR, false},
	[MBOX_TAG_VALUE] = {"VALUE", TYPE_STR, false},
	[MBOX_TAG_MSG] = {"MSG", TYPE_NEST, true},
	[MBOX_TAG_TIME_NS] = {"TIME_NS", TYPE_U64, false},
	[MBOX_TAG_DELIVERIES] = {"DELIVERIES", TYPE_U64, false},
	[MBOX_TAG_SENDER_PID] = {"SENDER_PID", TYPE_U64, false},
	[MBOX_TAG_SENDER_UID] = {"SENDER_UID", TYPE_U64, false},
	[MBOX_TAG_SENDER_GID] = {"SENDER_GID", TYPE_U64, false},
	[MBOX_TAG_SENDER_COMM] = {"SENDER_COMM", TYPE_STR, false},
	[MBOX_TAG_TEXT] = {"TEXT", TYPE_STR, false},
	[MBOX_TAG_VERSION_MIN] = {"VERSION_MIN", TYPE_U64, false},
	[MBOX_TAG_VERSION_MAX] = {"VERSION_MAX", TYPE_U64, false},
	[MBOX_TAG_VERSION] = {"VERSION", TYPE_U64, false},
	[MBOX_TAG_MAX_MSG_SIZE] = {"MAX_MSG_SIZE", TYPE_U64, false},
	[MBOX_TAG_MAX_FRAME] = {"MAX_FRAME", TYPE_U64, false},
	[MBOX_TAG_SETTING] = {"SETTING", TYPE_STR, true},
	[MBOX_TAG_INFO] = {"INFO", TYPE_NEST, true},
	[MBOX_TAG_READY] = {"READY", TYPE_U64, false},
	[MBOX_TAG_LEASED] = {"LEASED", TYPE_U64, false},
	[MBOX_TAG_DELAYED] = {"DELAYED", TYPE_U64, false},
	[MBOX_TAG_DEAD] = {"DEAD", TYPE_U64, false},
	[MBOX_TAG_BYTES] = {"BYTES", TYPE_U64, false},
	[MBOX_TAG_OLDEST_NS] = {"OLDEST_NS", TYPE_U64, false},
	[MBOX_TAG_CONSUMERS] = {"CONSUMERS", TYPE_U64, false},
	[MBOX_TAG_FLAGS] = {"FLAGS", TYPE_U64, false},
	[MBOX_TAG_FROM_ID] = {"FROM_ID", TYPE_U64, false},
	[MBOX_TAG_DEAD_REASON] = {"DEAD_REASON", TYPE_STR, false},
	[MBOX_TAG_SERVER] = {"SERVER", TYPE_STR, false},
	[MBOX_TAG_LIMIT] = {"LIMIT", TYPE_STR, false},
	[MBOX_TAG_OWNER_UID] = {"OWNER_UID", TYPE_U64, false},
	[MBOX_TAG_GROUP_GID] = {"GROUP_GID", TYPE_U64, false},
	[MBOX_TAG_MODE] = {"MODE", TYPE_U64, false},
	[MBOX_TAG_DEADLINE_NS] = {"DEADLINE_NS", TYPE_U64, false},
	[MBOX_TAG_TOPIC] = {"TOPIC", TYPE_STR, false},
	[MBOX_TAG_TOKEN] = {"TOKEN", TYPE_STR, false},
	[MBOX_TAG_EXPIRES_NS] = {"EXPIRES_NS", TYPE_U64, false},
	[MBOX_TAG_CLIENT] = {"CLIENT", TYPE_NEST, true},
	[MBOX_TAG_SUBSCRIPTION] = {"SUBSCRIPTION", TYPE_NEST, true},
	[MBOX_TAG_COUNTER] = {"COUNTER", TYPE_NEST, true},
	[MBOX_TAG_RATE_MILLI] = {"RATE_MILLI", TYPE_U64, false},
	[MBOX_TAG_INTERVAL_MS] = {"INTERVAL_MS", TYPE_U64, false},
	[MBOX_TAG_STORE_BYTES] = {"STORE_BYTES", TYPE_U64, false},
	[MBOX_TAG_CONNECTIONS] = {"CONNECTIONS", TYPE_U64, false},
	[MBOX_TAG_MAILBOXES] = {"MAILBOXES", TYPE_U64, false},
	[MBOX_TAG_WAITING] = {"WAITING", TYPE_U64, false},
	[MBOX_TAG_CONN_ID] = {"CONN_ID", TYPE_U64, false},
	[MBOX_TAG_RESERVE_BYTES] = {"RESERVE_BYTES", TYPE_U64, false},
	[MBOX_TAG_DISK_FULL] = {"DISK_FULL", TYPE_U64, false},
	[MBOX_TAG_SKIPPED] = {"SKIPPED", TYPE_U64, false},
};

#define N_TAGS (sizeof(tag_table) / sizeof(tag_table[0]))

/* Every known tag must have a bit in ProtoFields.present. */
_Static_assert(N_TAGS <= PROTO_TAG_LIMIT, "tag table exceeds PROTO_TAG_LIMIT");
_Static_assert(PROTO_TAG_LIMIT <= 64, "ProtoFields.present is 64 bits");

static const char *const op_names[] = {
	[MBOX_OP_HELLO] = "HELLO",
	[MBOX_OP_PING] = "PING",
	[MBOX_OP_CREATE] = "CREATE",
	[MBOX_OP_DELETE] = "DELETE",
	[MBOX_OP_POST] = "POST",
	[MBOX_OP_RECV] = "RECV",
	[MBOX_OP_ACK] = "ACK",
	[MBOX_OP_NACK] = "NACK",
	[MBOX_OP_TOUCH] = "TOUCH",
	[MBOX_OP_REJECT] = "REJECT",
	[MBOX_OP_LIST] = "LIST",
	[MBOX_OP_PEEK] = "PEEK",
	[MBOX_OP_SUBSCRIBE] = "SUBSCRIBE",
	[MBOX_OP_UNSUBSCRIBE] = "UNSUBSCRIBE",
	[MBOX_OP_PUBLISH] = "PUBLISH",
	[MBOX_OP_BIND] = "BIND",
	[MBOX_OP_UNBIND] = "UNBIND",
	[MBOX_OP_SET] = "SET",
	[MBOX_OP_PURGE] = "PURGE",
	[MBOX_OP_KICK] = "KICK",
	[MBOX_OP_PAUSE] = "PAUSE",
	[MBOX_OP_RESUME] = "RESUME",
	[MBOX_OP_HANDOFF] = "HANDOFF",
	[MBOX_OP_CLAIM] = "CLAIM",
	[MBOX_OP_STAT] = "STAT",
	[MBOX_OP_CLIENTS] = "CLIENTS",
	[MBOX_OP_STATS] = "STATS",
	[MBOX_OP_CHMOD] = "CHMOD",
	[MBOX_OP_CHOWN] = "CHOWN",
	[MBOX_OP_DELIVER] = "DELIVER",
};

static const char *const status_texts[] = {
	[MBOX_S_OK] = "success",
	[MBOX_S_MALFORMED] = "malformed request",
	[MBOX_S_UNKNOWN_OP] = "unknown operation",
	[MBOX_S_VERSION] = "protocol version mismatch",
	[MBOX_S_NOT_FOUND] = "no such mailbox",
	[MBOX_S_DENIED] = "permission denied",
	[MBOX_S_EXISTS] = "mailbox exists",
	[MBOX_S_LIMIT] = "limit reached",
	[MBOX_S_FULL] = "mailbox full",
	[MBOX_S_TOO_LARGE] = "too large",
	[MBOX_S_INVALID] = "invalid argument",
	[MBOX_S_NOT_LEASED] = "message not leased by this connection",
	[MBOX_S_STORE] = "store failure",
	[MBOX_S_SHUTDOWN] = "broker shutting down",
	[MBOX_S_NOT_EMPTY] = "mailbox not empty",
	[MBOX_S_BUSY] = "busy: too many requests, or consumers conflict",
};

/* ------------------------------------------------------------------ */
/* Little-endian helpers: byte by byte, so alignment and host order    */
/* never matter.                                                       */

static uint16_t
get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static uint32_t
get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void
set_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void
set_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void
set_u64(uint8_t *p, uint64_t v)
{
	for (unsigned i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/*
** proto_get_u64 - the little-endian u64 at p. The caller guarantees 8
** readable bytes (a field whose length was checked to be 8).
*/
uint64_t
proto_get_u64(const uint8_t *p)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* ------------------------------------------------------------------ */
/* Header                                                              */

/*
** proto_header_encode - write h into out[0..15] in wire order. The
** version byte is always MBOX_PROTO_VERSION whatever h->version says, so
** a caller cannot emit a frame this codec would refuse.
*/
void
proto_header_encode(uint8_t out[MBOX_PROTO_HEADER_SIZE], const ProtoHeader *h)
{
	set_u16(out + MBOX_HDR_OFF_OPCODE, h->opcode);
	out[MBOX_HDR_OFF_FLAGS] = h->flags;
	out[MBOX_HDR_OFF_VERSION] = (uint8_t)MBOX_PROTO_VERSION;
	set_u32(out + MBOX_HDR_OFF_ID, h->id);
	set_u32(out + MBOX_HDR_OFF_LEN, h->body_len);
	set_u32(out + MBOX_HDR_OFF_STATUS, h->status);
}

/*
** proto_header_decode - parse the header at buf. Returns 0 with *h
** filled, or -EBADMSG (h untouched) when len < 16, the version is not
** ours or flags carries bits we do not know. Opcode and status are not
** judged here: an unknown opcode is answered, not a framing error.
*/
int
proto_header_decode(const uint8_t *buf, size_t len, ProtoHeader *h)
{
	if (len < MBOX_PROTO_HEADER_SIZE)
		return -EBADMSG;
	if (buf[MBOX_HDR_OFF_VERSION] != MBOX_PROTO_VERSION)
		return -EBADMSG;
	if (buf[MBOX_HDR_OFF_FLAGS] & ~MBOX_FLAGS_KNOWN)
		return -EBADMSG;

	h->opcode = get_u16(buf + MBOX_HDR_OFF_OPCODE);
	h->flags = buf[MBOX_HDR_OFF_FLAGS];
	h->version = buf[MBOX_HDR_OFF_VERSION];
	h->id = get_u32(buf + MBOX_HDR_OFF_ID);
	h->body_len = get_u32(buf + MBOX_HDR_OFF_LEN);
	h->status = get_u32(buf + MBOX_HDR_OFF_STATUS);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Writer                                                              */

/* First allocation; most frames (requests, small replies) fit. */
#define WRITER_MIN_CAP 256u

static void
writer_fail(ProtoWriter *w, int err)
{
	/* Sticky: the first error is the one worth reporting. */
	if (!w->err)
		w->err = err;
}

/* Make room for n more bytes; capacity doubles so appends are O(1). */
static bool
writer_reserve(ProtoWriter *w, size_t n)
{
	size_t need, cap;
	uint8_t *buf;

	if (w->err)
		return false;
	if (n > SIZE_MAX - w->len) {
		writer_fail(w, -ENOMEM);
		return false;
	}
	need = w->len + n;
	if (need <= w->cap)
		return true;

	cap = w->cap ? w->cap : WRITER_MIN_CAP;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;

	buf = realloc(w->buf, cap);
	if (!buf) {
		writer_fail(w, -ENOMEM);
		return false;
	}
	w->buf = buf;
	w->cap = cap;
	return true;
}

/*
 * Append a field header announcing vlen value bytes, after checking that
 * the header plus vlen value bytes still fit a u32 body_len. Returns the
 * offset of the value, or 0 on error (0 is inside the frame header, so it
 * is never a valid value offset).
 */
static size_t
writer_field(ProtoWriter *w, uint16_t tag, size_t vlen)
{
	size_t body, off;

	if (w->err)
		return 0;
	if (w->len < MBOX_PROTO_HEADER_SIZE) {
		/* put before proto_writer_begin: our bug, reported sticky. */
		writer_fail(w, -EINVAL);
		return 0;
	}
	body = w->len - MBOX_PROTO_HEADER_SIZE;
	if (vlen > UINT32_MAX || body > UINT32_MAX - MBOX_PROTO_FIELD_HDR ||
	    vlen > UINT32_MAX - MBOX_PROTO_FIELD_HDR - body) {
		writer_fail(w, -E2BIG);
		return 0;
	}
	if (!writer_reserve(w, MBOX_PROTO_FIELD_HDR + vlen))
		return 0;

	off = w->len;
	set_u16(w->buf + off, tag);
	set_u32(w->buf + off + 2, (uint32_t)vlen);
	w->len += MBOX_PROTO_FIELD_HDR;
	return off + MBOX_PROTO_FIELD_HDR;
}

/*
** proto_writer_init - an empty writer owning no memory. Call
** proto_writer_begin before any put.
*/
void
proto_writer_init(ProtoWriter *w)
{
	memset(w, 0, sizeof(*w));
}

/*
** proto_writer_begin - start a new frame, discarding any previous one and
** its sticky error but keeping the allocation. The header is written now
** with body_len 0; proto_writer_finish patches it.
*/
void
proto_writer_begin(ProtoWriter *w, uint16_t opcode, uint8_t flags, uint32_t id,
		   uint32_t status)
{
	ProtoHeader h = {
		.opcode = opcode,
		.flags = flags,
		.version = MBOX_PROTO_VERSION,
		.id = id,
		.body_len = 0,
		.status = status,
	};

	w->len = 0;
	w->depth = 0;
	w->err = 0;
	if (!writer_reserve(w, MBOX_PROTO_HEADER_SIZE))
		return;
	proto_header_encode(w->buf, &h);
	w->len = MBOX_PROTO_HEADER_SIZE;
}

/* proto_put_u64 - append a u64 field (8 bytes, little-endian). */
void
proto_put_u64(ProtoWriter *w, uint16_t tag, uint64_t v)
{
	size_t off = writer_field(w, tag, 8);

	if (!off)
		return;
	set_u64(w->buf + off, v);
	w->len += 8;
}

/*
** proto_put_bytes - append a field holding n bytes copied from p. p may
** be NULL when n is 0. Sizes are checked before p is read, so an
** impossible n fails with -E2BIG without touching memory.
*/
void
proto_put_bytes(ProtoWriter *w, uint16_t tag, const void *p, size_t n)
{
	size_t off = writer_field(w, tag, n);

	if (!off)
		return;
	if (n)
		memcpy(w->buf + off, p, n);
	w->len += n;
}

/*
** proto_put_raw - append n bytes that are already encoded fields (stored
** HEADER fields, say). The caller vouches for their encoding.
*/
void
proto_put_raw(ProtoWriter *w, const void *p, size_t n)
{
	if (w->err)
		return;
	if (w->len < MBOX_PROTO_HEADER_SIZE) {
		writer_fail(w, -EINVAL);
		return;
	}
	if (n > UINT32_MAX - (w->len - MBOX_PROTO_HEADER_SIZE)) {
		writer_fail(w, -E2BIG);
		return;
	}
	if (!n || !writer_reserve(w, n))
		return;
	memcpy(w->buf + w->len, p, n);
	w->len += n;
}

/*
** proto_put_str - append a str field holding strlen(s) bytes, without the
** NUL. s == NULL writes an empty string. The text is not checked for
** UTF-8: the receiver does that, and the caller knows its strings.
*/
void
proto_put_str(ProtoWriter *w, uint16_t tag, const char *s)
{
	if (!s)
		s = "";
	proto_put_bytes(w, tag, s, strlen(s));
}

/*
** proto_nest_begin - open a nested field: its header is written with
** length 0 and patched by the matching proto_nest_end. At most
** PROTO_NEST_MAX may be open at once; one more is -E2BIG.
*/
void
proto_nest_begin(ProtoWriter *w, uint16_t tag)
{
	size_t off;

	if (w->err)
		return;
	if (w->depth >= PROTO_NEST_MAX) {
		writer_fail(w, -E2BIG);
		return;
	}
	off = writer_field(w, tag, 0);
	if (!off)
		return;
	w->nest[w->depth++] = off - MBOX_PROTO_FIELD_HDR;
}

/*
** proto_nest_end - close the innermost open nested field, patching its
** length. Without an open nest this is a sticky -EINVAL.
*/
void
proto_nest_end(ProtoWriter *w)
{
	size_t off;

	if (w->err)
		return;
	if (w->depth == 0) {
		writer_fail(w, -EINVAL);
		return;
	}
	off = w->nest[--w->depth];
	/* Fits: the whole body is <= UINT32_MAX (writer_field checks). */
	set_u32(w->buf + off + 2,
		(uint32_t)(w->len - off - MBOX_PROTO_FIELD_HDR));
}

/*
** proto_writer_finish - patch body_len into the header. Returns 0 and
** points *frame and *len at the frame (owned by w, valid until the next begin,
** steal or release); else the sticky error (-ENOMEM, -E2BIG), or -EINVAL
** when a nest is still open or begin was never called.
*/
int
proto_writer_finish(ProtoWriter *w, const uint8_t **frame, size_t *len)
{
	size_t body;

	if (w->err)
		return w->err;
	if (w->depth != 0 || w->len < MBOX_PROTO_HEADER_SIZE)
		return -EINVAL;
	body = w->len - MBOX_PROTO_HEADER_SIZE;
	if (body > UINT32_MAX)
		return -E2BIG;
	set_u32(w->buf + MBOX_HDR_OFF_LEN, (uint32_t)body);
	*frame = w->buf;
	*len = w->len;
	return 0;
}

/*
** proto_writer_steal - hand the buffer (normally a finished frame) to the
** caller, who free()s it; *len gets its length. w is left empty, as after
** proto_writer_init. Returns NULL if w holds nothing.
*/
uint8_t *
proto_writer_steal(ProtoWriter *w, size_t *len)
{
	uint8_t *buf = w->buf;

	if (len)
		*len = w->len;
	memset(w, 0, sizeof(*w));
	return buf;
}

/* proto_writer_release - free the buffer; w is left as after init. */
void
proto_writer_release(ProtoWriter *w)
{
	free(w->buf);
	memset(w, 0, sizeof(*w));
}

/* ------------------------------------------------------------------ */
/* Reader                                                              */

/*
** proto_reader_init - iterate over the field sequence p[0..len). The
** reader keeps pointers into p; p must outlive it.
*/
void
proto_reader_init(ProtoReader *r, const void *p, size_t len)
{
	r->p = p;
	r->len = len;
	r->off = 0;
}

/*
** proto_reader_next - the next field. Returns 1 with *f pointing into the
** buffer, 0 at the end, -EBADMSG when a field header or value runs past
** the end (the reader then stays put, so later calls fail the same way).
** Only framing is checked; tags and value types are proto_fields_parse's.
*/
int
proto_reader_next(ProtoReader *r, ProtoField *f)
{
	size_t left = r->len - r->off;
	uint32_t vlen;

	if (left == 0)
		return 0;
	if (left < MBOX_PROTO_FIELD_HDR)
		return -EBADMSG;
	vlen = get_u32(r->p + r->off + 2);
	if (vlen > left - MBOX_PROTO_FIELD_HDR)
		return -EBADMSG;

	f->tag = get_u16(r->p + r->off);
	f->len = vlen;
	f->val = r->p + r->off + MBOX_PROTO_FIELD_HDR;
	r->off += MBOX_PROTO_FIELD_HDR + vlen;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Validation                                                          */

/*
 * The UTF-8 sequence at p[0..len), len >= 1: its length when it is
 * well-formed (RFC 3629: no overlongs, no surrogates, nothing above
 * U+10FFFF), 0 when p holds only the beginning of one (a character cut
 * short by the end), -1 when it is invalid. NUL is valid UTF-8; callers
 * check it apart so they can say which was wrong.
 */
static int
utf8_seq(const uint8_t *p, size_t len)
{
	uint8_t c = p[0];
	uint8_t lo = 0x80, hi = 0xbf; /* range of the 2nd byte */
	size_t n;

	if (c < 0x80) {
		return 1;
	} else if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0; /* below: overlong */
		else if (c == 0xed)
			hi = 0x9f; /* above: UTF-16 surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90; /* below: overlong */
		else if (c == 0xf4)
			hi = 0x8f; /* above: beyond U+10FFFF */
	} else {
		/* 80..c1: stray continuation or overlong lead; f5..ff: never
		 * valid. */
		return -1;
	}
	for (size_t k = 1; k < n; k++) {
		if (k == len)
			return 0;
		if (p[k] < (k == 1 ? lo : 0x80) || p[k] > (k == 1 ? hi : 0xbf))
			return -1;
	}
	return (int)n;
}

/* Offset of the first byte of p[0..len) that is not part of well-formed
 * UTF-8, or len when all of it is. */
static size_t
utf8_scan(const uint8_t *p, size_t len)
{
	size_t i = 0;
	int n;

	while (i < len && (n = utf8_seq(p + i, len - i)) > 0)
		i += (size_t)n;
	return i;
}

/*
** proto_utf8_valid - true when p[0..len) is well-formed UTF-8 (RFC 3629)
** and holds no NUL byte. The empty string is valid.
*/
bool
proto_utf8_valid(const uint8_t *p, size_t len)
{
	if (len == 0)
		return true;
	if (memchr(p, 0, len))
		return false;
	return utf8_scan(p, len) == len;
}

/*
** proto_utf8_scrub - make the NUL-terminated s well-formed UTF-8 in place,
** for text from outside the protocol (a process name, a message cut to
** fit a buffer) that goes out in a str field: a character cut short at
** the end is dropped, every other byte that is not part of a well-formed
** sequence becomes '?'.
*/
void
proto_utf8_scrub(char *s)
{
	uint8_t *p = (uint8_t *)s;
	size_t len = strlen(s), i = 0;

	while (i < len) {
		int n = utf8_seq(p + i, len - i);

		if (n > 0) {
			i += (size_t)n;
		} else if (n == 0) {
			p[i] = '\0';
			break;
		} else {
			p[i++] = '?';
		}
	}
}

/*
** proto_name_valid - true when p[0..len) is a mailbox name: 1 to
** MBOX_NAME_MAX bytes of [A-Za-z0-9._-]. Written without <ctype.h> so
** the locale cannot widen the set.
*/
bool
proto_name_valid(const uint8_t *p, size_t len)
{
	if (len == 0 || len > MBOX_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = p[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')
			continue;
		return false;
	}
	return true;
}

static const TagInfo *
tag_info(unsigned tag)
{
	if (tag >= N_TAGS || tag_table[tag].type == TYPE_NONE)
		return NULL;
	return &tag_table[tag];
}

/* Parser state shared across nesting levels, for the error text. */
typedef struct ParseCtx {
	char *why_buf;		       /* WHY_SIZE bytes, or NULL */
	bool skip_unknown;	       /* PROTO_PARSE_SKIP_UNKNOWN */
	uint16_t path[PROTO_NEST_MAX]; /* tags of the nests we are inside */
	unsigned depth;		       /* entries of path in use */
} ParseCtx;

/*
 * Write the reason, prefixed with the nests it happened in ("in MSG/HEADER:
 * ...") so that a client can find the culprit in a big POST.
 */
static int parse_fail(ParseCtx *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int
parse_fail(ParseCtx *c, const char *fmt, ...)
{
	size_t n = 0;
	va_list ap;

	if (!c->why_buf)
		return -EBADMSG;
	c->why_buf[0] = '\0';
	for (unsigned i = 0; i < c->depth && n < WHY_SIZE; i++) {
		int r = snprintf(c->why_buf + n, WHY_SIZE - n, "%s%s",
				 i ? "/" : "in ", proto_tag_name(c->path[i]));
		if (r < 0)
			break;
		n += (size_t)r;
	}
	if (c->depth && n < WHY_SIZE) {
		int r = snprintf(c->why_buf + n, WHY_SIZE - n, ": ");
		if (r > 0)
			n += (size_t)r;
	}
	if (n < WHY_SIZE) {
		va_start(ap, fmt);
		vsnprintf(c->why_buf + n, WHY_SIZE - n, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

/* "MAILBOX" for a known tag, "99" for an unknown one. */
static const char *
tag_label(unsigned tag, char buf[8])
{
	const TagInfo *t = tag_info(tag);

	if (t)
		return t->name;
	snprintf(buf, 8, "%u", tag & 0xffffu);
	return buf;
}

/*
 * Validate the field sequence p[0..len), which starts at byte base of the
 * top-level body, at nesting level depth (0 = the body itself). When f is
 * not NULL (top level only) record presence, counts and first values.
 * Recursion is bounded by PROTO_NEST_MAX, so the stack use is too.
 */
static int
fields_scan(ParseCtx *c, const uint8_t *p, size_t len, size_t base,
	    unsigned depth, ProtoFields *f)
{
	uint64_t seen = 0;
	size_t off = 0;

	while (off < len) {
		size_t left = len - off;
		const TagInfo *t;
		uint16_t tag;
		uint32_t vlen;
		const uint8_t *val, *nul;
		char lbl[8];
		size_t bad;
		int r;

		if (left < MBOX_PROTO_FIELD_HDR)
			return parse_fail(c,
					  "body truncated at byte %zu: field "
					  "header needs %u bytes, %zu left",
					  base + off, MBOX_PROTO_FIELD_HDR,
					  left);
		tag = get_u16(p + off);
		vlen = get_u32(p + off + 2);
		left -= MBOX_PROTO_FIELD_HDR;
		if (vlen > left)
			return parse_fail(c,
					  "body truncated at byte %zu: field "
					  "%s needs %" PRIu32
					  " value bytes, %zu left",
					  base + off + MBOX_PROTO_FIELD_HDR,
					  tag_label(tag, lbl), vlen, left);
		val = p + off + MBOX_PROTO_FIELD_HDR;

		t = tag_info(tag);
		if (!t && c->skip_unknown) {
			/* A later broker's field: framed, so it can be
			 * stepped over; its value is not ours to judge. */
			off += MBOX_PROTO_FIELD_HDR + vlen;
			continue;
		}
		if (!t)
			return parse_fail(c, "field %u is unknown",
					  (unsigned)tag);

		switch (t->type) {
		case TYPE_U64:
			if (vlen != 8)
				return parse_fail(c,
						  "field %s has length %" PRIu32
						  ", expected 8",
						  t->name, vlen);
			break;
		case TYPE_STR:
			nul = vlen ? memchr(val, 0, vlen) : NULL;
			if (nul)
				return parse_fail(c,
						  "field %s contains a NUL "
						  "byte at offset %zu",
						  t->name, (size_t)(nul - val));
			bad = utf8_scan(val, vlen);
			if (bad != vlen)
				return parse_fail(c,
						  "field %s is not valid "
						  "UTF-8 at offset %zu",
						  t->name, bad);
			break;
		case TYPE_NEST:
			if (depth + 1 > PROTO_NEST_MAX)
				return parse_fail(c,
						  "field %s nests deeper "
						  "than %u levels",
						  t->name,
						  (unsigned)PROTO_NEST_MAX);
			c->path[c->depth++] = tag;
			r = fields_scan(c, val, vlen,
					base + off + MBOX_PROTO_FIELD_HDR,
					depth + 1, NULL);
			c->depth--;
			if (r < 0)
				return r;
			break;
		default: /* TYPE_BYTES: anything goes */
			break;
		}

		if (!t->repeat && (seen >> tag) & 1u)
			return parse_fail(c, "field %s appears twice", t->name);
		seen |= UINT64_C(1) << tag;

		if (f) {
			if (f->count[tag]++ == 0) {
				f->first[tag].ptr = val;
				f->first[tag].len = vlen;
			}
		}
		off += MBOX_PROTO_FIELD_HDR + vlen;
	}
	if (f)
		f->present = seen;
	return 0;
}

/*
** proto_fields_parse - parse and validate the body[0..len) against the
** tag table (doc/protocol.md 4.2, 4.3), nested sequences included.
** Returns 0 with *f filled (slices point into body, which must outlive
** f), or -EBADMSG with a reason in why_buf (128 bytes) or, when why_buf is
** NULL, a generic static text; *why (if why is not NULL) points at it, and
** is NULL on success. Never reads outside body[0..len), never allocates.
** f's contents are unspecified after a failure.
*/
int
proto_fields_parse(ProtoFields *f, const void *body, size_t len, char *why_buf,
		   const char **why)
{
	return proto_fields_parse_flags(f, body, len, why_buf, why, 0);
}

int
proto_fields_parse_flags(ProtoFields *f, const void *body, size_t len,
			 char *why_buf, const char **why, unsigned flags)
{
	ParseCtx c = {.why_buf = why_buf,
		      .skip_unknown = (flags & PROTO_PARSE_SKIP_UNKNOWN) != 0};
	int r;

	memset(f, 0, sizeof(*f));
	f->body = body;
	f->len = len;
	if (why_buf)
		why_buf[0] = '\0';

	r = fields_scan(&c, body, len, 0, 0, f);
	if (why)
		*why = r < 0 ? (why_buf ? why_buf : "malformed body") : NULL;
	return r;
}

/*
** proto_u64 - the value of u64 tag in f, or dflt when the tag is absent
** or is not a u64 tag.
*/
uint64_t
proto_u64(const ProtoFields *f, unsigned tag, uint64_t dflt)
{
	const TagInfo *t = tag_info(tag);

	if (!t || t->type != TYPE_U64 || !proto_has(f, tag) ||
	    f->first[tag].len != 8)
		return dflt;
	return proto_get_u64(f->first[tag].ptr);
}

/*
** proto_fields_check - every present tag must be in allowed and every tag
** in required present (masks built with PROTO_BIT). Returns 0, or
** -EBADMSG with the first offending field named in why_buf (128 bytes, may
** be NULL). Unwanted fields are reported before missing ones.
*/
int
proto_fields_check(const ProtoFields *f, uint64_t allowed, uint64_t required,
		   char *why_buf)
{
	uint64_t extra = f->present & ~allowed;
	uint64_t missing = required & ~f->present;
	char lbl[8];

	for (unsigned t = 0; t < PROTO_TAG_LIMIT; t++) {
		if ((extra >> t) & 1u) {
			if (why_buf)
				snprintf(why_buf, WHY_SIZE,
					 "field %s is not allowed in this "
					 "request",
					 tag_label(t, lbl));
			return -EBADMSG;
		}
	}
	for (unsigned t = 0; t < PROTO_TAG_LIMIT; t++) {
		if ((missing >> t) & 1u) {
			if (why_buf)
				snprintf(why_buf, WHY_SIZE,
					 "required field %s is missing",
					 tag_label(t, lbl));
			return -EBADMSG;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Names                                                               */

/* proto_op_name - "POST" for MBOX_OP_POST; "?" when unknown. */
const char *
proto_op_name(unsigned opcode)
{
	if (opcode >= sizeof(op_names) / sizeof(op_names[0]) ||
	    !op_names[opcode])
		return "?";
	return op_names[opcode];
}

/* proto_tag_name - "MAILBOX" for MBOX_TAG_MAILBOX; "?" when unknown. */
const char *
proto_tag_name(unsigned tag)
{
	const TagInfo *t = tag_info(tag);

	return t ? t->name : "?";
}

/*
** proto_status_text - short lower-case text for a status code ("no such
** mailbox"); "unknown status" for codes this version does not know.
*/
const char *
proto_status_text(unsigned status)
{
	if (status >= sizeof(status_texts) / sizeof(status_texts[0]) ||
	    !status_texts[status])
		return "unknown status";
	return status_texts[status];
}

/* ------------------------------------------------------------------ */
/* Datagrams and reassembly                                            */

/*
** proto_dgram_next - size of the datagram carrying a frame of len bytes
** from offset off: min(len - off, MBOX_PROTO_DGRAM_MAX); 0 when off >= len.
*/
size_t
proto_dgram_next(size_t len, size_t off)
{
	if (off >= len)
		return 0;
	return len - off < MBOX_PROTO_DGRAM_MAX ? len - off
						: MBOX_PROTO_DGRAM_MAX;
}

/* Back to "between frames", dropping any body not taken. */
static void
asm_reset(ProtoAssembler *a)
{
	free(a->buf);
	a->buf = NULL;
	a->have = 0;
	a->active = false;
	a->skipping = false;
}

/*
** proto_asm_init - an idle assembler accepting bodies up to max_body
** bytes. Owns no memory until a frame arrives.
*/
void
proto_asm_init(ProtoAssembler *a, size_t max_body)
{
	memset(a, 0, sizeof(*a));
	a->max_body = max_body;
}

/* First datagram of a frame: header, then possibly body bytes. */
static int
asm_first(ProtoAssembler *a, const uint8_t *dgram, size_t n)
{
	ProtoHeader h;
	size_t body_in;

	if (n < MBOX_PROTO_HEADER_SIZE || proto_header_decode(dgram, n, &h) < 0)
		return -EBADMSG;
	body_in = n - MBOX_PROTO_HEADER_SIZE;
	/* Bytes beyond the frame can only be a broken or hostile sender. */
	if (body_in > h.body_len)
		return -EBADMSG;
	a->hdr = h;

	if (h.body_len > a->max_body) {
		/*
		 * Too large: count the bytes to find where the frame ends,
		 * but never hold them, so a peer cannot make us allocate more
		 * than we announced.
		 */
		if (body_in == h.body_len)
			return PROTO_ASM_TOO_LARGE;
		a->have = body_in;
		a->active = true;
		a->skipping = true;
		return PROTO_ASM_MORE;
	}

	if (h.body_len == 0)
		return PROTO_ASM_FRAME; /* buf stays NULL */

	/* body_len was checked against max_body: now it may be trusted. */
	a->buf = malloc(h.body_len);
	if (!a->buf)
		return -ENOMEM;
	memcpy(a->buf, dgram + MBOX_PROTO_HEADER_SIZE, body_in);
	a->have = body_in;
	if (body_in == h.body_len)
		return PROTO_ASM_FRAME;
	a->active = true;
	return PROTO_ASM_MORE;
}

/*
** proto_asm_feed - feed one datagram (doc/protocol.md section 2).
** Returns PROTO_ASM_MORE, PROTO_ASM_FRAME (take it with proto_asm_take
** before the next feed; a body not taken is dropped), PROTO_ASM_TOO_LARGE
** (a frame over max_body was skipped whole; its header is in a->hdr), or
** -EBADMSG on a framing error / -ENOMEM. After an error the assembler is
** idle again but the stream is out of step: the caller closes it.
*/
int
proto_asm_feed(ProtoAssembler *a, const uint8_t *dgram, size_t n)
{
	size_t rest;
	int r;

	if (!a->active)
		asm_reset(a); /* drop a completed body nobody took */

	if (n > MBOX_PROTO_DGRAM_MAX) {
		r = -EBADMSG;
		goto fail;
	}

	if (!a->active) {
		r = asm_first(a, dgram, n);
		if (r < 0)
			goto fail;
		return r;
	}

	/* Continuation: raw body bytes, never more than the frame lacks. */
	rest = a->hdr.body_len - a->have;
	if (n > rest) {
		r = -EBADMSG;
		goto fail;
	}
	if (!a->skipping && n)
		memcpy(a->buf + a->have, dgram, n);
	a->have += n;
	if (a->have < a->hdr.body_len)
		return PROTO_ASM_MORE;

	a->active = false;
	if (a->skipping) {
		a->skipping = false;
		a->have = 0;
		return PROTO_ASM_TOO_LARGE;
	}
	return PROTO_ASM_FRAME;

fail:
	asm_reset(a);
	return r;
}

/*
** proto_asm_take - after PROTO_ASM_FRAME, hand the body to the caller
** (free() it; NULL when body_len is 0) with its header in *hdr and length
** in *len (either may be NULL). The assembler is then ready for the next
** frame. Without a completed frame, returns NULL and *len = 0.
*/
uint8_t *
proto_asm_take(ProtoAssembler *a, ProtoHeader *hdr, size_t *len)
{
	uint8_t *buf;

	if (hdr)
		*hdr = a->hdr;
	if (a->active) {
		if (len)
			*len = 0;
		return NULL;
	}
	buf = a->buf;
	if (len)
		*len = buf ? a->have : 0;
	a->buf = NULL;
	a->have = 0;
	return buf;
}

/* proto_asm_release - free any partial or untaken body; a is left idle. */
void
proto_asm_release(ProtoAssembler *a)
{
	asm_reset(a);
}
