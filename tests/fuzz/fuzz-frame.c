/*
 * fuzz-frame.c - libFuzzer target of the frame decoder (client/proto.c,
 * client/topic.c): the code every byte from a peer goes through first.
 *
 * Input: byte 0 chooses the assembler's max_body (byte0 * 256 bytes, so
 * both the buffered and the skipped "too large" paths are reachable), then
 * datagrams, each a u16 little-endian length and that many bytes (the last
 * one cut short by the end of the input). Length prefixes rather than a
 * fixed split let continuation datagrams of any size, and bodies spread
 * over several datagrams, come out of small inputs.
 *
 * Every frame the assembler completes is parsed like dispatch does it, and
 * checked against invariants (abort() on violation, so libFuzzer reports
 * it): the reader and the parser agree on the fields; every nested MSG,
 * HEADER or INFO that passed the parse parses again alone; re-encoding
 * the fields with ProtoWriter gives back the very same bytes, and those
 * bytes split into datagrams reassemble to the same frame; a valid topic
 * is a valid pattern that matches itself.
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/proto.h"
#include "client/topic.h"
#include "tests/fuzz/fuzz.h"

#define WHY_SIZE 128

/* abort() with a reason: an invariant of the codec is broken. */
#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			abort();                                               \
		}                                                              \
	} while (0)

static bool
is_nest(uint16_t tag)
{
	return tag == MBOX_TAG_MSG || tag == MBOX_TAG_HEADER ||
	       tag == MBOX_TAG_INFO;
}

/* The why text of a failed parse is a non-empty C string in its buffer. */
static void
check_why(const char *why_buf, const char *why)
{
	CHECK(why != NULL);
	CHECK(why == why_buf);
	CHECK(memchr(why_buf, '\0', WHY_SIZE) != NULL);
	CHECK(why_buf[0] != '\0');
}

static void
check_topic(const uint8_t *p, size_t len)
{
	char pat[MBOX_TOPIC_MAX + 1];

	if (!topic_valid((const char *)p, len)) {
		topic_pattern_valid((const char *)p, len);
		return;
	}
	CHECK(len <= MBOX_TOPIC_MAX);
	CHECK(topic_pattern_valid((const char *)p, len));
	memcpy(pat, p, len);
	pat[len] = '\0';
	CHECK(topic_match(pat, (const char *)p, len));
	/* Every topic of one word or more matches the catch-all pattern. */
	CHECK(topic_match(">", (const char *)p, len));
}

/* HEADER: KEY as a pattern against VALUE as a topic, when both valid. */
static void
check_pattern_pair(const ProtoFields *f)
{
	char pat[MBOX_TOPIC_MAX + 1];
	ProtoSlice k = f->first[MBOX_TAG_KEY], v = f->first[MBOX_TAG_VALUE];

	if (!proto_has(f, MBOX_TAG_KEY) || !proto_has(f, MBOX_TAG_VALUE) ||
	    k.len > MBOX_TOPIC_MAX ||
	    !topic_pattern_valid((const char *)k.ptr, k.len) ||
	    !topic_valid((const char *)v.ptr, v.len))
		return;
	memcpy(pat, k.ptr, k.len);
	pat[k.len] = '\0';
	topic_match(pat, (const char *)v.ptr, v.len);
}

/*
 * Checks on one field sequence that passed proto_fields_parse: walk it
 * with the reader and compare; recurse into nests (depth bounded by the
 * parser's own limit, which the parse already enforced).
 */
static void
check_fields(const ProtoFields *f, unsigned depth)
{
	ProtoReader r;
	ProtoField fld;
	uint32_t count[PROTO_TAG_LIMIT] = {0};
	char why_buf[WHY_SIZE];
	int k;

	CHECK(depth <= PROTO_NEST_MAX);
	proto_reader_init(&r, f->body, f->len);
	while ((k = proto_reader_next(&r, &fld)) == 1) {
		CHECK(fld.tag < PROTO_TAG_LIMIT);
		CHECK(fld.val >= f->body &&
		      fld.val + fld.len <= f->body + f->len);
		CHECK(proto_has(f, fld.tag));
		if (count[fld.tag]++ == 0) {
			CHECK(f->first[fld.tag].ptr == fld.val);
			CHECK(f->first[fld.tag].len == fld.len);
		}
		if (is_nest(fld.tag)) {
			ProtoFields sub;
			const char *why = NULL;

			CHECK(proto_fields_parse(&sub, fld.val, fld.len,
						 why_buf, &why) == 0);
			CHECK(why == NULL);
			check_fields(&sub, depth + 1);
			if (fld.tag == MBOX_TAG_HEADER)
				check_pattern_pair(&sub);
		}
	}
	CHECK(k == 0);
	for (unsigned t = 0; t < PROTO_TAG_LIMIT; t++) {
		CHECK(count[t] == f->count[t]);
		CHECK(proto_has(f, t) == (count[t] > 0));
		/* Defaults come back for absent or non-u64 tags. */
		if (!proto_has(f, t))
			CHECK(proto_u64(f, t, 77) == 77);
		else
			proto_u64(f, t, 0);
		proto_tag_name(t);
	}
	if (proto_has(f, MBOX_TAG_MAILBOX))
		proto_name_valid(f->first[MBOX_TAG_MAILBOX].ptr,
				 f->first[MBOX_TAG_MAILBOX].len);
	if (proto_has(f, MBOX_TAG_TOPIC))
		check_topic(f->first[MBOX_TAG_TOPIC].ptr,
			    f->first[MBOX_TAG_TOPIC].len);
	/* Everything allowed, nothing required: always fine. */
	CHECK(proto_fields_check(f, ~UINT64_C(0), 0, why_buf) == 0);
	/* Nothing allowed: fine exactly when the sequence is empty. */
	CHECK((proto_fields_check(f, 0, 0, why_buf) == 0) == (f->present == 0));
	/* All present required: fine. One absent required: never. */
	CHECK(proto_fields_check(f, f->present, f->present, NULL) == 0);
	if (f->present != ~UINT64_C(0)) {
		/* The lowest bit that is not present. */
		uint64_t absent = ~f->present & (f->present + 1);

		CHECK(proto_fields_check(f, ~UINT64_C(0), absent, why_buf) < 0);
		CHECK(why_buf[0] != '\0');
	}
}

/*
 * Re-encode (h, body) field by field and compare with the original bytes;
 * then split the result into datagrams the way a sender does and
 * reassemble it.
 */
static void
check_roundtrip(const ProtoHeader *h, const uint8_t *body, size_t len)
{
	uint8_t hdr[MBOX_PROTO_HEADER_SIZE];
	ProtoWriter w;
	ProtoReader r;
	ProtoField fld;
	ProtoAssembler a;
	ProtoHeader h2;
	const uint8_t *frame;
	size_t flen, off = 0;
	uint8_t *got;
	int k = 0;

	proto_writer_init(&w);
	proto_writer_begin(&w, h->opcode, h->flags, h->id, h->status);
	proto_reader_init(&r, body, len);
	while (proto_reader_next(&r, &fld) == 1)
		proto_put_bytes(&w, fld.tag, fld.val, fld.len);
	CHECK(proto_writer_finish(&w, &frame, &flen) == 0);
	CHECK(flen == MBOX_PROTO_HEADER_SIZE + len);
	proto_header_encode(hdr, h);
	CHECK(memcmp(frame, hdr, sizeof(hdr)) == 0);
	CHECK(len == 0 || memcmp(frame + sizeof(hdr), body, len) == 0);
	CHECK(proto_header_decode(frame, flen, &h2) == 0);
	CHECK(memcmp(&h2, h, sizeof(h2)) == 0);

	proto_asm_init(&a, len);
	while (off < flen) {
		size_t n = proto_dgram_next(flen, off);

		CHECK(n > 0 && n <= MBOX_PROTO_DGRAM_MAX);
		k = proto_asm_feed(&a, frame + off, n);
		off += n;
		CHECK(k == (off < flen ? PROTO_ASM_MORE : PROTO_ASM_FRAME));
	}
	got = proto_asm_take(&a, &h2, &flen);
	CHECK(flen == len);
	CHECK(memcmp(&h2, h, sizeof(h2)) == 0);
	CHECK(len == 0 || memcmp(got, body, len) == 0);
	free(got);
	proto_asm_release(&a);
	proto_writer_release(&w);
}

/* One complete frame, as dispatch would take it. */
/*
 * A client's parse (PROTO_PARSE_SKIP_UNKNOWN) never reads outside the
 * body, and accepts whatever the strict one does, to the same fields:
 * skipping only ever concerns tags the strict parse refuses.
 */
static void
check_lenient(const uint8_t *body, size_t len)
{
	ProtoFields strict, lenient;
	char why_buf[WHY_SIZE];
	const char *why = NULL;
	int r = proto_fields_parse_flags(&lenient, body, len, why_buf, &why,
					 PROTO_PARSE_SKIP_UNKNOWN);

	if (r < 0) {
		check_why(why_buf, why);
		CHECK(proto_fields_parse(&strict, body, len, NULL, NULL) < 0);
		return;
	}
	CHECK(why == NULL);
	if (proto_fields_parse(&strict, body, len, NULL, NULL) < 0)
		return;
	CHECK(strict.present == lenient.present);
	CHECK(memcmp(strict.count, lenient.count, sizeof(strict.count)) == 0);
	for (unsigned t = 0; t < PROTO_TAG_LIMIT; t++)
		CHECK(strict.first[t].ptr == lenient.first[t].ptr &&
		      strict.first[t].len == lenient.first[t].len);
}

static void
check_frame(const ProtoHeader *h, const uint8_t *body, size_t len)
{
	ProtoFields f;
	char why_buf[WHY_SIZE];
	const char *why = NULL;

	CHECK(len == h->body_len);
	CHECK(h->version == MBOX_PROTO_VERSION);
	CHECK((h->flags & ~MBOX_FLAGS_KNOWN) == 0);
	proto_op_name(h->opcode);
	proto_status_text(h->status);
	check_lenient(body, len);
	if (proto_fields_parse(&f, body, len, why_buf, &why) < 0) {
		check_why(why_buf, why);
		/* Without a buffer the parser still refuses, with a text. */
		CHECK(proto_fields_parse(&f, body, len, NULL, &why) < 0);
		CHECK(why != NULL);
		return;
	}
	CHECK(why == NULL);
	CHECK(f.body == body && f.len == len);
	check_fields(&f, 0);
	check_roundtrip(h, body, len);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ProtoAssembler a;
	size_t off = 1;

	if (size < 1)
		return 0;
	proto_asm_init(&a, (size_t)data[0] * 256);
	while (off + 2 <= size) {
		size_t n = (size_t)data[off] | (size_t)data[off + 1] << 8;
		uint8_t *dgram, *body;
		ProtoHeader h;
		size_t len;
		int r;

		off += 2;
		if (n > size - off)
			n = size - off;
		/* A copy of exactly n bytes: ASan sees any read past it. */
		dgram = malloc(n ? n : 1);
		CHECK(dgram != NULL);
		memcpy(dgram, data + off, n);
		off += n;
		r = proto_asm_feed(&a, dgram, n);
		free(dgram);
		if (r == PROTO_ASM_FRAME) {
			body = proto_asm_take(&a, &h, &len);
			check_frame(&h, body, len);
			free(body);
		} else if (r == PROTO_ASM_TOO_LARGE) {
			CHECK(a.hdr.body_len > a.max_body);
			CHECK(!a.active);
		} else if (r < 0) {
			/* Framing error: the assembler is idle again. */
			CHECK(!a.active && a.buf == NULL);
		} else {
			CHECK(r == PROTO_ASM_MORE);
			CHECK(a.active);
		}
	}
	proto_asm_release(&a);
	return 0;
}
