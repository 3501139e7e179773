/*
 * proto.h - the one codec of the mboxd wire format (see doc/protocol.md).
 *
 * Linked into both libmbox and mboxd. Pure code: no I/O, no globals. The
 * decoder never trusts a length before checking it against what is left of
 * the buffer, and never allocates on behalf of the peer except through the
 * assembler, which checks the announced size against its limit first.
 */
#ifndef MBOX_CLIENT_PROTO_H
#define MBOX_CLIENT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mbox-proto.h"

/* Tags are small integers; ProtoFields indexes arrays by tag. */
#define PROTO_TAG_LIMIT 64

typedef struct ProtoSlice {
	const uint8_t *ptr; /* into the frame; not NUL-terminated */
	size_t len;
} ProtoSlice;

typedef struct ProtoHeader {
	uint16_t opcode;
	uint8_t flags;	 /* MBOX_FLAG_* */
	uint8_t version; /* MBOX_PROTO_VERSION */
	uint32_t id;	 /* request id, 0 for pushes */
	uint32_t body_len;
	uint32_t status; /* enum mbox_status */
} ProtoHeader;

/*
 * proto_header_encode - write h into out[0..15]; version is forced to
 * MBOX_PROTO_VERSION.
 */
void proto_header_encode(uint8_t out[MBOX_PROTO_HEADER_SIZE],
			 const ProtoHeader *h);

/*
 * proto_header_decode - parse the first 16 bytes of buf.
 * Returns 0, or -EBADMSG when len < 16, the version is not
 * MBOX_PROTO_VERSION or flags has unknown bits.
 */
int proto_header_decode(const uint8_t *buf, size_t len, ProtoHeader *h);

/*
 * ProtoWriter builds one frame (header + body) in a growing buffer. Put
 * functions never fail: the first error (-ENOMEM, or -E2BIG when the body
 * would exceed 4 GiB or nesting exceeds PROTO_NEST_MAX) is sticky and
 * reported by proto_writer_finish().
 */
#define PROTO_NEST_MAX 4
typedef struct ProtoWriter {
	uint8_t *buf;
	size_t len, cap;
	size_t nest[PROTO_NEST_MAX]; /* offsets of open nested field headers */
	unsigned depth;
	int err;
} ProtoWriter;

void proto_writer_init(ProtoWriter *w);
/* Start a new frame, discarding any previous content; keeps the buffer. */
void proto_writer_begin(ProtoWriter *w, uint16_t opcode, uint8_t flags,
			uint32_t id, uint32_t status);
void proto_put_u64(ProtoWriter *w, uint16_t tag, uint64_t v);
void proto_put_bytes(ProtoWriter *w, uint16_t tag, const void *p, size_t n);
void proto_put_str(ProtoWriter *w, uint16_t tag, const char *s);
/* Append bytes that already are encoded fields (e.g. stored headers). */
void proto_put_raw(ProtoWriter *w, const void *p, size_t n);
void proto_nest_begin(ProtoWriter *w, uint16_t tag);
void proto_nest_end(ProtoWriter *w);
/*
 * proto_writer_finish - patch body_len into the header. Returns 0 and
 * points *frame and *len at the whole frame (owned by w, valid until the next
 * begin or release), or the sticky negative error.
 */
int proto_writer_finish(ProtoWriter *w, const uint8_t **frame, size_t *len);
/* Hand the buffer to the caller (free() it); w is left empty. */
uint8_t *proto_writer_steal(ProtoWriter *w, size_t *len);
void proto_writer_release(ProtoWriter *w);

/* Sequential access to a field sequence. */
typedef struct ProtoReader {
	const uint8_t *p;
	size_t len, off;
} ProtoReader;

typedef struct ProtoField {
	uint16_t tag;
	const uint8_t *val;
	uint32_t len;
} ProtoField;

void proto_reader_init(ProtoReader *r, const void *p, size_t len);
/* Returns 1 and fills f, 0 at the end, -EBADMSG when truncated. */
int proto_reader_next(ProtoReader *r, ProtoField *f);
/* Little-endian u64 of an 8-byte value (caller checked len == 8). */
uint64_t proto_get_u64(const uint8_t *p);

/*
 * ProtoFields: one field sequence parsed and validated against the tag
 * table: every tag known, value lengths right for the tag's type (u64 = 8
 * bytes, str = valid UTF-8 without NUL, nest = a well-formed field
 * sequence itself), non-repeatable tags at most once. Nested sequences
 * are validated the same way, recursively, up to PROTO_NEST_MAX levels.
 */
typedef struct ProtoFields {
	uint64_t present;		   /* bit t: tag t appeared */
	uint32_t count[PROTO_TAG_LIMIT];   /* occurrences of each tag */
	ProtoSlice first[PROTO_TAG_LIMIT]; /* value of its first occurrence */
	const uint8_t *body;
	size_t len;
} ProtoFields;

/*
 * proto_fields_parse - parse and validate. Returns 0, or -EBADMSG with
 * *why (if not NULL) pointing at a static human-readable reason such as
 * "field ID has length 3, expected 8" (written into why_buf, which must
 * hold 128 bytes; why_buf may be NULL, then *why gets a generic text).
 */
int proto_fields_parse(ProtoFields *f, const void *body, size_t len,
		       char *why_buf, const char **why);
/* Step over fields of unknown tags (at any depth) instead of failing: a
 * client reading replies and pushes, which a later broker may extend
 * (doc/protocol.md 4.2). The broker never passes it for requests. */
#define PROTO_PARSE_SKIP_UNKNOWN 0x1u
int proto_fields_parse_flags(ProtoFields *f, const void *body, size_t len,
			     char *why_buf, const char **why, unsigned flags);

static inline bool
proto_has(const ProtoFields *f, unsigned tag)
{
	return tag < PROTO_TAG_LIMIT && (f->present >> tag) & 1u;
}

/* Value of a u64 tag, or dflt when absent. */
uint64_t proto_u64(const ProtoFields *f, unsigned tag, uint64_t dflt);

/*
 * proto_fields_check - every tag in f must be in allowed (bit mask by
 * tag) and every tag in required must be present. Returns 0 or -EBADMSG
 * with a reason in why_buf (128 bytes) naming the field.
 */
int proto_fields_check(const ProtoFields *f, uint64_t allowed,
		       uint64_t required, char *why_buf);

#define PROTO_BIT(tag) (UINT64_C(1) << (tag))

/* Names for messages and logs: "POST", "MAILBOX"; "?" when unknown. */
const char *proto_op_name(unsigned opcode);
const char *proto_tag_name(unsigned tag);
/* Short text for a status code: "no such mailbox". */
const char *proto_status_text(unsigned status);

/* 1..MBOX_NAME_MAX bytes of [A-Za-z0-9._-]. */
bool proto_name_valid(const uint8_t *p, size_t len);
/* Well-formed UTF-8 without NUL. */
bool proto_utf8_valid(const uint8_t *p, size_t len);
/* Make s well-formed UTF-8: a character cut short at its end is dropped,
 * any other invalid byte becomes '?'. */
void proto_utf8_scrub(char *s);

/*
 * ProtoAssembler turns datagrams back into frames. max_body is the largest
 * body_len accepted; a larger frame is skipped without buffering.
 */
enum proto_asm_result {
	PROTO_ASM_MORE = 0,	 /* datagram consumed, frame not complete */
	PROTO_ASM_FRAME = 1,	 /* a frame is complete: see proto_asm_frame */
	PROTO_ASM_TOO_LARGE = 2, /* a too-large frame was skipped whole;
				    its header is in a->hdr */
};

typedef struct ProtoAssembler {
	ProtoHeader hdr;
	uint8_t *buf; /* body being collected (malloc'd) */
	size_t have;  /* body bytes received so far */
	size_t max_body;
	bool active;   /* inside a frame */
	bool skipping; /* inside a too-large frame */
} ProtoAssembler;

void proto_asm_init(ProtoAssembler *a, size_t max_body);
/*
 * proto_asm_feed - feed one datagram. Returns a proto_asm_result, or
 * -EBADMSG when framing is broken (bad header, continuation longer than
 * the rest of the frame, datagram > MBOX_PROTO_DGRAM_MAX), -ENOMEM.
 * After PROTO_ASM_FRAME, take the body with proto_asm_take() before the
 * next feed.
 */
int proto_asm_feed(ProtoAssembler *a, const uint8_t *dgram, size_t n);
/* Hand over the completed body (caller frees; may be NULL if empty). */
uint8_t *proto_asm_take(ProtoAssembler *a, ProtoHeader *hdr, size_t *len);
void proto_asm_release(ProtoAssembler *a);

/*
 * proto_dgram_next - size of the datagram that carries frame bytes from
 * offset off (of a frame of total length len): min(len - off, DGRAM_MAX).
 */
size_t proto_dgram_next(size_t len, size_t off);

#endif
