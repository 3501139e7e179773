/*
 * test-proto.c - unit tests of the wire codec (client/proto.c).
 *
 * The codec faces untrusted peers, so most tests feed it broken input:
 * every prefix of a valid body, every kind of bad value, every framing
 * error of the assembler. Buffers handed to the decoder are malloc'd to
 * their exact size so that valgrind flags any read past the end.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client/proto.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* Append one raw field (tag, len, value) to out; returns bytes written. */
static size_t
raw_field(uint8_t *out, uint16_t tag, const void *val, uint32_t len)
{
	out[0] = (uint8_t)tag;
	out[1] = (uint8_t)(tag >> 8);
	out[2] = (uint8_t)len;
	out[3] = (uint8_t)(len >> 8);
	out[4] = (uint8_t)(len >> 16);
	out[5] = (uint8_t)(len >> 24);
	if (len)
		memcpy(out + 6, val, len);
	return 6 + (size_t)len;
}

static size_t
raw_u64(uint8_t *out, uint16_t tag, uint64_t v)
{
	uint8_t b[8];

	for (unsigned i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	return raw_field(out, tag, b, 8);
}

/*
 * Type of a tag per doc/protocol.md 4.3, written out again here rather
 * than taken from the code under test: 'u' u64, 's' str, 'b' bytes,
 * 'n' nest.
 */
static char
tag_type(unsigned tag)
{
	switch (tag) {
	case MBOX_TAG_MAILBOX:
	case MBOX_TAG_DEDUP:
	case MBOX_TAG_KEY:
	case MBOX_TAG_VALUE:
	case MBOX_TAG_SENDER_COMM:
	case MBOX_TAG_TEXT:
	case MBOX_TAG_SETTING:
	case MBOX_TAG_DEAD_REASON:
	case MBOX_TAG_SERVER:
	case MBOX_TAG_LIMIT:
		return 's';
	case MBOX_TAG_DATA:
		return 'b';
	case MBOX_TAG_HEADER:
	case MBOX_TAG_MSG:
	case MBOX_TAG_INFO:
		return 'n';
	default:
		return 'u';
	}
}

/*
 * Parse a copy of body[0..len) in a buffer of exactly len bytes, so that
 * an over-read is a valgrind error rather than silently reading our
 * stack.
 */
static int
parse_copy(const uint8_t *body, size_t len, char *why)
{
	ProtoFields f;
	uint8_t *copy = malloc(len ? len : 1);
	const char *w = NULL;
	int r;

	assert_non_null(copy);
	if (len)
		memcpy(copy, body, len);
	r = proto_fields_parse(&f, copy, len, why, &w);
	if (r == 0)
		assert_null(w);
	else
		assert_ptr_equal(w, why);
	free(copy);
	return r;
}

/* Finish w and return a pointer to the body and its length. */
static const uint8_t *
finish_body(ProtoWriter *w, size_t *body_len)
{
	const uint8_t *frame;
	size_t len;

	assert_int_equal(proto_writer_finish(w, &frame, &len), 0);
	assert_true(len >= MBOX_PROTO_HEADER_SIZE);
	*body_len = len - MBOX_PROTO_HEADER_SIZE;
	return frame + MBOX_PROTO_HEADER_SIZE;
}

/* ------------------------------------------------------------------ */
/* Header                                                              */

static void
test_proto_header_round_trip(void **state)
{
	const ProtoHeader cases[] = {
		{MBOX_OP_HELLO, 0, 1, 1, 0, 0},
		{MBOX_OP_POST, MBOX_FLAG_REPLY, 1, 0xdeadbeef, 12345,
		 MBOX_S_TOO_LARGE},
		{MBOX_OP_DELIVER, MBOX_FLAG_PUSH, 1, 0, UINT32_MAX, 0},
		{0xffff, MBOX_FLAG_REPLY | MBOX_FLAG_PUSH, 1, UINT32_MAX,
		 UINT32_MAX, UINT32_MAX},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t buf[MBOX_PROTO_HEADER_SIZE];
		ProtoHeader h;

		proto_header_encode(buf, &cases[i]);
		assert_int_equal(proto_header_decode(buf, sizeof(buf), &h), 0);
		assert_int_equal(h.opcode, cases[i].opcode);
		assert_int_equal(h.flags, cases[i].flags);
		assert_int_equal(h.version, MBOX_PROTO_VERSION);
		assert_int_equal(h.id, cases[i].id);
		assert_int_equal(h.body_len, cases[i].body_len);
		assert_int_equal(h.status, cases[i].status);
	}
}

static void
test_proto_header_layout(void **state)
{
	/* doc/protocol.md section 7, the HELLO header. */
	static const uint8_t want[] = {0x01, 0x00, 0x00, 0x01, 0x01, 0x00,
				       0x00, 0x00, 0x1c, 0x00, 0x00, 0x00,
				       0x00, 0x00, 0x00, 0x00};
	/* Multi-byte fields must be little-endian at the right offsets. */
	static const uint8_t want2[] = {0x34, 0x12, 0x03, 0x01, 0x78, 0x56,
					0x34, 0x12, 0xdd, 0xcc, 0xbb, 0xaa,
					0x0f, 0x00, 0x00, 0x00};
	ProtoHeader h = {.opcode = 1, .id = 1, .body_len = 28};
	ProtoHeader h2 = {.opcode = 0x1234,
			  .flags = 3,
			  .version = 7, /* must be forced to 1 */
			  .id = 0x12345678,
			  .body_len = 0xaabbccdd,
			  .status = 15};
	uint8_t buf[MBOX_PROTO_HEADER_SIZE];

	proto_header_encode(buf, &h);
	assert_memory_equal(buf, want, sizeof(want));
	proto_header_encode(buf, &h2);
	assert_memory_equal(buf, want2, sizeof(want2));
}

static void
test_proto_header_bad(void **state)
{
	static const uint8_t good[MBOX_PROTO_HEADER_SIZE] = {
		0x02, 0x00, 0x00, 0x01, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	ProtoHeader h, untouched;
	uint8_t buf[MBOX_PROTO_HEADER_SIZE + 4];

	/* Short: every length below 16 fails, 16 and more succeed. */
	for (size_t n = 0; n < MBOX_PROTO_HEADER_SIZE; n++) {
		uint8_t *exact = malloc(n ? n : 1);

		assert_non_null(exact);
		memcpy(exact, good, n);
		assert_int_equal(proto_header_decode(exact, n, &h), -EBADMSG);
		free(exact);
	}
	memset(buf, 0xee, sizeof(buf));
	memcpy(buf, good, sizeof(good));
	assert_int_equal(proto_header_decode(buf, sizeof(buf), &h), 0);
	assert_int_equal(h.opcode, MBOX_OP_PING);
	assert_int_equal(h.id, 5);

	/* Bad version. */
	const uint8_t versions[] = {0, 2, 0x81, 0xff};
	for (size_t i = 0; i < sizeof(versions); i++) {
		memcpy(buf, good, sizeof(good));
		buf[MBOX_HDR_OFF_VERSION] = versions[i];
		memset(&h, 0x5a, sizeof(h));
		untouched = h;
		assert_int_equal(proto_header_decode(buf, 16, &h), -EBADMSG);
		assert_memory_equal(&h, &untouched, sizeof(h));
	}

	/* Every unknown flag bit, alone and with known ones. */
	for (unsigned bit = 2; bit < 8; bit++) {
		memcpy(buf, good, sizeof(good));
		buf[MBOX_HDR_OFF_FLAGS] = (uint8_t)(1u << bit);
		assert_int_equal(proto_header_decode(buf, 16, &h), -EBADMSG);
		buf[MBOX_HDR_OFF_FLAGS] =
			(uint8_t)(1u << bit) | MBOX_FLAG_REPLY;
		assert_int_equal(proto_header_decode(buf, 16, &h), -EBADMSG);
	}
	/* Known flags are fine. */
	for (unsigned fl = 0; fl <= MBOX_FLAGS_KNOWN; fl++) {
		memcpy(buf, good, sizeof(good));
		buf[MBOX_HDR_OFF_FLAGS] = (uint8_t)fl;
		assert_int_equal(proto_header_decode(buf, 16, &h), 0);
		assert_int_equal(h.flags, fl);
	}
}

/* ------------------------------------------------------------------ */
/* Writer and reader                                                   */

static void
test_proto_writer_doc_example(void **state)
{
	/* doc/protocol.md section 7, byte by byte. */
	static const uint8_t hello[] = {
		0x01, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x1c,
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x16, 0x00,
		0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x17, 0x00, 0x08, 0x00, 0x00, 0x00,
		0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
	static const uint8_t post[] = {
		0x05, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x15, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00,
		0x00, 0x00, 0x71, 0x0e, 0x00, 0x08, 0x00, 0x00, 0x00, 0x02,
		0x00, 0x02, 0x00, 0x00, 0x00, 0x68, 0x69};
	ProtoWriter w;
	const uint8_t *frame;
	size_t len;

	proto_writer_init(&w);
	proto_writer_begin(&w, MBOX_OP_HELLO, 0, 1, 0);
	proto_put_u64(&w, MBOX_TAG_VERSION_MIN, 1);
	proto_put_u64(&w, MBOX_TAG_VERSION_MAX, 1);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), 0);
	assert_int_equal(len, sizeof(hello));
	assert_memory_equal(frame, hello, sizeof(hello));

	proto_writer_begin(&w, MBOX_OP_POST, 0, 2, 0);
	proto_put_str(&w, MBOX_TAG_MAILBOX, "q");
	proto_nest_begin(&w, MBOX_TAG_MSG);
	proto_put_bytes(&w, MBOX_TAG_DATA, "hi", 2);
	proto_nest_end(&w);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), 0);
	assert_int_equal(len, sizeof(post));
	assert_memory_equal(frame, post, sizeof(post));
	proto_writer_release(&w);
}

static void
test_proto_writer_round_trip(void **state)
{
	static const uint8_t bin[] = {0, 1, 2, 0xff, 0, 0x80};
	const char *utf8 = "gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9d\x84\x9e";
	ProtoWriter w;
	ProtoReader r, rn, rnn;
	ProtoField fld, in, inn;
	ProtoFields f, fm;
	const uint8_t *frame, *body;
	size_t len, blen;
	ProtoHeader h;
	char why[128];

	proto_writer_init(&w);
	proto_writer_begin(&w, MBOX_OP_RECV, MBOX_FLAG_REPLY, 77, 0);
	proto_put_u64(&w, MBOX_TAG_ID, 0);
	proto_put_u64(&w, MBOX_TAG_ID, UINT64_MAX);
	proto_put_u64(&w, MBOX_TAG_ID, UINT64_C(0x0102030405060708));
	proto_put_str(&w, MBOX_TAG_MAILBOX, "jobs.high_prio-1");
	proto_put_str(&w, MBOX_TAG_TEXT, utf8);
	proto_put_str(&w, MBOX_TAG_SERVER, NULL); /* empty */
	proto_put_str(&w, MBOX_TAG_LIMIT, "");	  /* empty */
	proto_put_bytes(&w, MBOX_TAG_DATA, bin, sizeof(bin));
	proto_nest_begin(&w, MBOX_TAG_INFO); /* empty nest */
	proto_nest_end(&w);
	proto_nest_begin(&w, MBOX_TAG_MSG);
	proto_put_bytes(&w, MBOX_TAG_DATA, NULL, 0); /* empty bytes */
	proto_put_u64(&w, MBOX_TAG_PRIORITY, 9);
	proto_nest_begin(&w, MBOX_TAG_HEADER);
	proto_put_str(&w, MBOX_TAG_KEY, "k");
	proto_put_str(&w, MBOX_TAG_VALUE, "v\xc3\xa9");
	proto_nest_end(&w);
	proto_nest_end(&w);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), 0);

	assert_int_equal(proto_header_decode(frame, len, &h), 0);
	assert_int_equal(h.opcode, MBOX_OP_RECV);
	assert_int_equal(h.flags, MBOX_FLAG_REPLY);
	assert_int_equal(h.id, 77);
	assert_int_equal(h.body_len, len - MBOX_PROTO_HEADER_SIZE);
	body = frame + MBOX_PROTO_HEADER_SIZE;
	blen = h.body_len;

	/* The reader sees every field, in order, with its exact value. */
	proto_reader_init(&r, body, blen);
	assert_int_equal(proto_reader_next(&r, &fld), 1);
	assert_int_equal(fld.tag, MBOX_TAG_ID);
	assert_int_equal(fld.len, 8);
	assert_int_equal(proto_get_u64(fld.val), 0);
	assert_int_equal(proto_reader_next(&r, &fld), 1);
	assert_true(proto_get_u64(fld.val) == UINT64_MAX);
	assert_int_equal(proto_reader_next(&r, &fld), 1);
	assert_true(proto_get_u64(fld.val) == UINT64_C(0x0102030405060708));
	assert_int_equal(fld.val[0], 0x08); /* little-endian on the wire */
	assert_int_equal(proto_reader_next(&r, &fld), 1);
	assert_int_equal(fld.tag, MBOX_TAG_MAILBOX);
	assert_int_equal(fld.len, strlen("jobs.high_prio-1"));
	assert_memory_equal(fld.val, "jobs.high_prio-1", fld.len);
	assert_int_equal(proto_reader_next(&r, &fld), 1);
	assert_int_equal(fld.tag, MBOX_TAG_TEXT);
	assert_int_equal(fld.len, strlen(utf8));
	assert_memory_equal(fld.val, utf8, fld.len);
	assert_int_equal(proto_reader_next(&r, &fld), 1);
	assert_int_equal(fld.tag, MBOX_TAG_SERVER);
	assert_int_equal(fld.len, 0);
	assert_int_equal(proto_reader_next(&r, &fld), 1);
	assert_int_equal(fld.tag, MBOX_TAG_LIMIT);
	assert_int_equal(fld.len, 0);
	assert_int_equal(proto_reader_next(&r, &fld), 1);
	assert_int_equal(fld.tag, MBOX_TAG_DATA);
	assert_int_equal(fld.len, sizeof(bin));
	assert_memory_equal(fld.val, bin, sizeof(bin));
	assert_int_equal(proto_reader_next(&r, &fld), 1);
	assert_int_equal(fld.tag, MBOX_TAG_INFO);
	assert_int_equal(fld.len, 0);
	assert_int_equal(proto_reader_next(&r, &fld), 1);
	assert_int_equal(fld.tag, MBOX_TAG_MSG);
	/* DATA(6) + PRIORITY(14) + HEADER(6 + KEY 7 + VALUE 9) */
	assert_int_equal(fld.len, 6 + 14 + 6 + 7 + 9);
	assert_int_equal(proto_reader_next(&r, &in), 0); /* end */
	assert_int_equal(proto_reader_next(&r, &in), 0); /* stays at end */

	proto_reader_init(&rn, fld.val, fld.len);
	assert_int_equal(proto_reader_next(&rn, &in), 1);
	assert_int_equal(in.tag, MBOX_TAG_DATA);
	assert_int_equal(in.len, 0);
	assert_int_equal(proto_reader_next(&rn, &in), 1);
	assert_int_equal(in.tag, MBOX_TAG_PRIORITY);
	assert_int_equal(proto_get_u64(in.val), 9);
	assert_int_equal(proto_reader_next(&rn, &in), 1);
	assert_int_equal(in.tag, MBOX_TAG_HEADER);
	assert_int_equal(in.len, 7 + 9);
	assert_int_equal(proto_reader_next(&rn, &inn), 0);

	proto_reader_init(&rnn, in.val, in.len);
	assert_int_equal(proto_reader_next(&rnn, &inn), 1);
	assert_int_equal(inn.tag, MBOX_TAG_KEY);
	assert_memory_equal(inn.val, "k", 1);
	assert_int_equal(proto_reader_next(&rnn, &inn), 1);
	assert_int_equal(inn.tag, MBOX_TAG_VALUE);
	assert_int_equal(inn.len, 3);
	assert_int_equal(proto_reader_next(&rnn, &inn), 0);

	/* The fields parser agrees. */
	assert_int_equal(proto_fields_parse(&f, body, blen, why, NULL), 0);
	assert_ptr_equal(f.body, body);
	assert_int_equal(f.len, blen);
	assert_int_equal(f.count[MBOX_TAG_ID], 3);
	assert_int_equal(proto_u64(&f, MBOX_TAG_ID, 42), 0); /* first one */
	assert_true(proto_has(&f, MBOX_TAG_SERVER));
	assert_int_equal(f.first[MBOX_TAG_SERVER].len, 0);
	assert_int_equal(f.first[MBOX_TAG_DATA].len, sizeof(bin));
	assert_memory_equal(f.first[MBOX_TAG_DATA].ptr, bin, sizeof(bin));
	assert_true(f.present ==
		    (PROTO_BIT(MBOX_TAG_ID) | PROTO_BIT(MBOX_TAG_MAILBOX) |
		     PROTO_BIT(MBOX_TAG_TEXT) | PROTO_BIT(MBOX_TAG_SERVER) |
		     PROTO_BIT(MBOX_TAG_LIMIT) | PROTO_BIT(MBOX_TAG_DATA) |
		     PROTO_BIT(MBOX_TAG_INFO) | PROTO_BIT(MBOX_TAG_MSG)));
	/* Nested fields are not lifted to the top level. */
	assert_false(proto_has(&f, MBOX_TAG_PRIORITY));
	assert_false(proto_has(&f, MBOX_TAG_KEY));

	assert_int_equal(proto_fields_parse(&fm, f.first[MBOX_TAG_MSG].ptr,
					    f.first[MBOX_TAG_MSG].len, why,
					    NULL),
			 0);
	assert_int_equal(proto_u64(&fm, MBOX_TAG_PRIORITY, 0), 9);
	assert_int_equal(fm.count[MBOX_TAG_HEADER], 1);
	assert_true(proto_has(&fm, MBOX_TAG_DATA));
	assert_int_equal(fm.first[MBOX_TAG_DATA].len, 0);

	proto_writer_release(&w);
	assert_null(w.buf);
	assert_int_equal(w.len, 0);
}

static void
test_proto_writer_empty_body(void **state)
{
	ProtoWriter w;
	const uint8_t *frame;
	size_t len;
	ProtoHeader h;
	ProtoFields f;

	proto_writer_init(&w);
	proto_writer_begin(&w, MBOX_OP_PING, 0, 9, 0);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), 0);
	assert_int_equal(len, MBOX_PROTO_HEADER_SIZE);
	assert_int_equal(proto_header_decode(frame, len, &h), 0);
	assert_int_equal(h.body_len, 0);
	assert_int_equal(proto_fields_parse(&f, frame + len, 0, NULL, NULL), 0);
	assert_true(f.present == 0);
	/* A NULL body of length 0 is fine too. */
	assert_int_equal(proto_fields_parse(&f, NULL, 0, NULL, NULL), 0);
	proto_writer_release(&w);
}

static void
test_proto_writer_begin_discards(void **state)
{
	ProtoWriter w;
	const uint8_t *frame;
	size_t len;
	ProtoHeader h;
	uint8_t *keep;

	proto_writer_init(&w);
	proto_writer_begin(&w, MBOX_OP_POST, 0, 1, 0);
	proto_put_str(&w, MBOX_TAG_MAILBOX, "first");
	proto_nest_begin(&w, MBOX_TAG_MSG); /* left open on purpose */
	keep = w.buf;

	proto_writer_begin(&w, MBOX_OP_ACK, 0, 2, 0);
	assert_ptr_equal(w.buf, keep); /* buffer kept */
	proto_put_u64(&w, MBOX_TAG_ID, 5);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), 0);
	assert_int_equal(len, MBOX_PROTO_HEADER_SIZE + 14);
	assert_int_equal(proto_header_decode(frame, len, &h), 0);
	assert_int_equal(h.opcode, MBOX_OP_ACK);
	assert_int_equal(h.id, 2);
	assert_int_equal(h.body_len, 14);
	proto_writer_release(&w);
}

static void
test_proto_writer_growth(void **state)
{
	enum { N = 3000, BIG = 300000 };
	ProtoWriter w;
	const uint8_t *body;
	size_t blen;
	uint8_t *big = malloc(BIG);
	ProtoReader r;
	ProtoField fld;
	size_t prev_cap = 0;
	unsigned grows = 0;

	assert_non_null(big);
	for (size_t i = 0; i < BIG; i++)
		big[i] = (uint8_t)(i * 7 + 3);

	proto_writer_init(&w);
	proto_writer_begin(&w, MBOX_OP_ACK, 0, 1, 0);
	for (unsigned i = 0; i < N; i++) {
		proto_put_u64(&w, MBOX_TAG_ID, i);
		if (w.cap != prev_cap) {
			/* Capacity doubles: amortised O(1) appends. */
			if (prev_cap)
				assert_int_equal(w.cap, prev_cap * 2);
			prev_cap = w.cap;
			grows++;
		}
		assert_true(w.cap >= w.len);
	}
	assert_true(grows > 3);
	proto_put_bytes(&w, MBOX_TAG_DATA, big, BIG);
	body = finish_body(&w, &blen);
	assert_int_equal(blen, N * 14 + 6 + BIG);

	proto_reader_init(&r, body, blen);
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal(proto_reader_next(&r, &fld), 1);
		assert_int_equal(fld.tag, MBOX_TAG_ID);
		assert_int_equal(proto_get_u64(fld.val), i);
	}
	assert_int_equal(proto_reader_next(&r, &fld), 1);
	assert_int_equal(fld.tag, MBOX_TAG_DATA);
	assert_int_equal(fld.len, BIG);
	assert_memory_equal(fld.val, big, BIG);
	assert_int_equal(proto_reader_next(&r, &fld), 0);

	proto_writer_release(&w);
	free(big);
}

static void
test_proto_writer_nest_depth(void **state)
{
	ProtoWriter w;
	const uint8_t *body, *frame;
	size_t blen, len;
	ProtoFields f;
	char why[128];

	/* PROTO_NEST_MAX levels: written and accepted by the parser. */
	proto_writer_init(&w);
	proto_writer_begin(&w, MBOX_OP_POST, 0, 1, 0);
	for (unsigned i = 0; i < PROTO_NEST_MAX; i++)
		proto_nest_begin(&w, MBOX_TAG_MSG);
	proto_put_u64(&w, MBOX_TAG_PRIORITY, 1);
	for (unsigned i = 0; i < PROTO_NEST_MAX; i++)
		proto_nest_end(&w);
	body = finish_body(&w, &blen);
	assert_int_equal(blen, PROTO_NEST_MAX * 6 + 14);
	assert_int_equal(proto_fields_parse(&f, body, blen, why, NULL), 0);
	/* Lengths were patched innermost first. */
	assert_int_equal(f.first[MBOX_TAG_MSG].len,
			 (PROTO_NEST_MAX - 1) * 6 + 14);

	/* One more is -E2BIG, and the error is sticky. */
	proto_writer_begin(&w, MBOX_OP_POST, 0, 1, 0);
	for (unsigned i = 0; i <= PROTO_NEST_MAX; i++)
		proto_nest_begin(&w, MBOX_TAG_MSG);
	proto_put_u64(&w, MBOX_TAG_PRIORITY, 1);
	for (unsigned i = 0; i <= PROTO_NEST_MAX; i++)
		proto_nest_end(&w);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), -E2BIG);

	/* A nest still open at finish. */
	proto_writer_begin(&w, MBOX_OP_POST, 0, 1, 0);
	proto_nest_begin(&w, MBOX_TAG_MSG);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), -EINVAL);
	proto_nest_end(&w);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), 0);

	/* An end without a begin. */
	proto_writer_begin(&w, MBOX_OP_POST, 0, 1, 0);
	proto_nest_end(&w);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), -EINVAL);
	proto_writer_release(&w);
}

static void
test_proto_writer_e2big(void **state)
{
	static const uint8_t small[16];
	ProtoWriter w;
	const uint8_t *frame;
	size_t len, before;

	proto_writer_init(&w);

	/* A body that would pass 4 GiB fails before p is read at all. */
	proto_writer_begin(&w, MBOX_OP_POST, 0, 1, 0);
	proto_put_u64(&w, MBOX_TAG_ID, 1); /* body 14 */
	before = w.len;
	proto_put_bytes(&w, MBOX_TAG_DATA, small,
			(size_t)UINT32_MAX - 6 - 14 + 1);
	assert_int_equal(w.len, before);
	assert_int_equal(w.err, -E2BIG);
	/* Sticky: later puts do nothing, finish reports it. */
	proto_put_u64(&w, MBOX_TAG_COUNT, 1);
	assert_int_equal(w.len, before);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), -E2BIG);

#if SIZE_MAX > UINT32_MAX
	/* A value longer than a u32 length can say. */
	proto_writer_begin(&w, MBOX_OP_POST, 0, 1, 0);
	proto_put_bytes(&w, MBOX_TAG_DATA, small, (size_t)UINT32_MAX + 1);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), -E2BIG);
	proto_writer_begin(&w, MBOX_OP_POST, 0, 1, 0);
	proto_put_bytes(&w, MBOX_TAG_DATA, small, SIZE_MAX);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), -E2BIG);
#endif

	/* begin clears the error. */
	proto_writer_begin(&w, MBOX_OP_PING, 0, 3, 0);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), 0);
	assert_int_equal(len, MBOX_PROTO_HEADER_SIZE);
	proto_writer_release(&w);
}

static void
test_proto_writer_without_begin(void **state)
{
	ProtoWriter w;
	const uint8_t *frame;
	size_t len;

	proto_writer_init(&w);
	proto_put_u64(&w, MBOX_TAG_ID, 1);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), -EINVAL);
	proto_writer_release(&w);

	proto_writer_init(&w);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), -EINVAL);
	proto_writer_release(&w);
}

static void
test_proto_writer_steal(void **state)
{
	ProtoWriter w;
	const uint8_t *frame;
	size_t len, slen;
	uint8_t *owned;
	ProtoHeader h;

	proto_writer_init(&w);
	proto_writer_begin(&w, MBOX_OP_CREATE, 0, 4, 0);
	proto_put_str(&w, MBOX_TAG_MAILBOX, "m");
	assert_int_equal(proto_writer_finish(&w, &frame, &len), 0);
	owned = proto_writer_steal(&w, &slen);
	assert_ptr_equal(owned, frame);
	assert_int_equal(slen, len);
	assert_null(w.buf);
	assert_int_equal(w.len, 0);
	assert_int_equal(w.cap, 0);
	assert_int_equal(proto_header_decode(owned, slen, &h), 0);
	assert_int_equal(h.body_len, 7);
	free(owned);

	/* The writer is usable again. */
	proto_writer_begin(&w, MBOX_OP_PING, 0, 5, 0);
	assert_int_equal(proto_writer_finish(&w, &frame, &len), 0);
	proto_writer_release(&w);

	/* Stealing from an empty writer gives NULL. */
	proto_writer_init(&w);
	assert_null(proto_writer_steal(&w, &slen));
	assert_int_equal(slen, 0);
}

/* Build the body used by the truncation tests; returns its length. */
static size_t
sample_body(uint8_t *out)
{
	uint8_t msg[256], hdr[64];
	size_t n = 0, m = 0, k = 0;

	k += raw_field(hdr + k, MBOX_TAG_KEY, "key", 3);
	k += raw_field(hdr + k, MBOX_TAG_VALUE, "v\xc3\xa9", 3);

	m += raw_field(msg + m, MBOX_TAG_DATA, "payload", 7);
	m += raw_u64(msg + m, MBOX_TAG_PRIORITY, 3);
	m += raw_field(msg + m, MBOX_TAG_HEADER, hdr, (uint32_t)k);
	m += raw_field(msg + m, MBOX_TAG_DEDUP, "d", 1);

	n += raw_field(out + n, MBOX_TAG_MAILBOX, "queue", 5);
	n += raw_field(out + n, MBOX_TAG_MSG, msg, (uint32_t)m);
	n += raw_u64(out + n, MBOX_TAG_ID, 7);
	n += raw_field(out + n, MBOX_TAG_MSG, msg, (uint32_t)m);
	n += raw_field(out + n, MBOX_TAG_TEXT, "", 0);
	return n;
}

static void
test_proto_reader_every_cut(void **state)
{
	uint8_t body[1024];
	size_t len = sample_body(body);
	size_t bounds[16], nb = 0, off = 0;
	ProtoReader r;
	ProtoField fld;
	int rc;

	/* Field boundaries of the full body. */
	bounds[nb++] = 0;
	proto_reader_init(&r, body, len);
	while ((rc = proto_reader_next(&r, &fld)) == 1) {
		off = (size_t)(fld.val - body) + fld.len;
		bounds[nb++] = off;
	}
	assert_int_equal(rc, 0);
	assert_int_equal(off, len);
	assert_int_equal(nb, 6);

	for (size_t cut = 0; cut <= len; cut++) {
		uint8_t *copy = malloc(cut ? cut : 1);
		size_t fields = 0, want = 0;
		bool boundary = false;

		assert_non_null(copy);
		memcpy(copy, body, cut);
		for (size_t i = 0; i < nb; i++) {
			if (bounds[i] <= cut)
				want = i;
			if (bounds[i] == cut)
				boundary = true;
		}
		proto_reader_init(&r, copy, cut);
		while ((rc = proto_reader_next(&r, &fld)) == 1) {
			assert_true(fld.val + fld.len <= copy + cut);
			fields++;
		}
		assert_int_equal(fields, want);
		assert_int_equal(rc, boundary ? 0 : -EBADMSG);
		/* A failed reader stays failed. */
		if (!boundary)
			assert_int_equal(proto_reader_next(&r, &fld), -EBADMSG);
		free(copy);
	}
}

/* ------------------------------------------------------------------ */
/* Fields parser                                                       */

static void
test_proto_fields_parse_every_cut(void **state)
{
	uint8_t body[1024];
	size_t len = sample_body(body);
	ProtoReader r;
	ProtoField fld;
	size_t bounds[16], nb = 0;
	char why[128];
	unsigned ok = 0, bad = 0;

	bounds[nb++] = 0;
	proto_reader_init(&r, body, len);
	while (proto_reader_next(&r, &fld) == 1)
		bounds[nb++] = (size_t)(fld.val - body) + fld.len;

	assert_int_equal(parse_copy(body, len, why), 0);

	for (size_t cut = 0; cut < len; cut++) {
		bool boundary = false;
		int rc;

		for (size_t i = 0; i < nb; i++)
			if (bounds[i] == cut)
				boundary = true;
		memset(why, 'X', sizeof(why));
		rc = parse_copy(body, cut, why);
		if (boundary) {
			/* A prefix ending between fields is a shorter body. */
			assert_int_equal(rc, 0);
			ok++;
		} else {
			assert_int_equal(rc, -EBADMSG);
			assert_non_null(memchr(why, '\0', sizeof(why)));
			assert_non_null(strstr(why, "body truncated at byte"));
			bad++;
		}
	}
	assert_int_equal(ok, nb - 1);
	assert_int_equal(bad, len - (nb - 1));

	/* And the shorter body really has fewer fields. */
	{
		ProtoFields f;

		assert_int_equal(
			proto_fields_parse(&f, body, bounds[2], why, NULL), 0);
		assert_int_equal(f.count[MBOX_TAG_MSG], 1);
		assert_false(proto_has(&f, MBOX_TAG_ID));
		assert_int_equal(proto_fields_parse(&f, body, len, why, NULL),
				 0);
		assert_int_equal(f.count[MBOX_TAG_MSG], 2);
		assert_true(proto_has(&f, MBOX_TAG_ID));
	}
}

static void
test_proto_fields_parse_truncation_reason(void **state)
{
	uint8_t body[64];
	size_t n = 0;
	char why[128];

	/* 17 valid bytes, then 3 bytes of a field header. */
	n += raw_field(body, MBOX_TAG_MAILBOX, "abcdefghijk", 11);
	assert_int_equal(n, 17);
	body[n++] = 0x03;
	body[n++] = 0x00;
	body[n++] = 0x08;
	assert_int_equal(parse_copy(body, n, why), -EBADMSG);
	assert_string_equal(
		why, "body truncated at byte 17: field header needs 6 bytes, "
		     "3 left");

	/* A value longer than what is left. */
	n = raw_field(body, MBOX_TAG_MAILBOX, "abcdefghij", 10);
	assert_int_equal(parse_copy(body, n - 7, why), -EBADMSG);
	assert_string_equal(why, "body truncated at byte 6: field MAILBOX "
				 "needs 10 value bytes, 3 left");

	/* A length of 4 GiB - 1 must not wrap anything. */
	n = raw_field(body, MBOX_TAG_DATA, "", 0);
	body[2] = body[3] = body[4] = body[5] = 0xff;
	assert_int_equal(parse_copy(body, n, why), -EBADMSG);
	assert_string_equal(why, "body truncated at byte 6: field DATA needs "
				 "4294967295 value bytes, 0 left");
}

static void
test_proto_fields_parse_u64_length(void **state)
{
	static const uint8_t zeros[16];
	const uint32_t lens[] = {0, 1, 3, 7, 9, 16};
	char why[128], want[128];
	uint8_t body[64];

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		size_t n = raw_field(body, MBOX_TAG_ID, zeros, lens[i]);

		assert_int_equal(parse_copy(body, n, why), -EBADMSG);
		snprintf(want, sizeof(want),
			 "field ID has length %u, expected 8", lens[i]);
		assert_string_equal(why, want);
	}

	/* Every u64 tag is checked, not just ID. */
	for (unsigned tag = 1; tag <= 44; tag++) {
		size_t n;

		if (tag_type(tag) != 'u')
			continue;
		n = raw_field(body, (uint16_t)tag, zeros, 4);
		assert_int_equal(parse_copy(body, n, why), -EBADMSG);
		snprintf(want, sizeof(want),
			 "field %s has length 4, expected 8",
			 proto_tag_name(tag));
		assert_string_equal(why, want);
		n = raw_field(body, (uint16_t)tag, zeros, 8);
		assert_int_equal(parse_copy(body, n, why), 0);
	}
}

static void
test_proto_fields_parse_types(void **state)
{
	/* str and bytes take any length; nest takes a field sequence. */
	static const uint16_t str_tags[] = {
		MBOX_TAG_MAILBOX, MBOX_TAG_DEDUP,	MBOX_TAG_KEY,
		MBOX_TAG_VALUE,	  MBOX_TAG_SENDER_COMM, MBOX_TAG_TEXT,
		MBOX_TAG_SETTING, MBOX_TAG_DEAD_REASON, MBOX_TAG_SERVER,
		MBOX_TAG_LIMIT};
	static const uint16_t nest_tags[] = {MBOX_TAG_HEADER, MBOX_TAG_MSG,
					     MBOX_TAG_INFO};
	char why[128];
	uint8_t body[64];
	size_t n;

	for (size_t i = 0; i < sizeof(str_tags) / sizeof(str_tags[0]); i++) {
		n = raw_field(body, str_tags[i], "abc", 3);
		assert_int_equal(parse_copy(body, n, why), 0);
		n = raw_field(body, str_tags[i], "", 0);
		assert_int_equal(parse_copy(body, n, why), 0);
		/* A str is checked as UTF-8: a lone 0xff is refused. */
		n = raw_field(body, str_tags[i], "\xff", 1);
		assert_int_equal(parse_copy(body, n, why), -EBADMSG);
		n = raw_field(body, str_tags[i], "12345678", 8);
		assert_int_equal(parse_copy(body, n, why), 0);
	}
	/* DATA is bytes: anything, NULs and invalid UTF-8 included. */
	n = raw_field(body, MBOX_TAG_DATA, "\x00\xff\xc0\x80", 4);
	assert_int_equal(parse_copy(body, n, why), 0);

	for (size_t i = 0; i < sizeof(nest_tags) / sizeof(nest_tags[0]); i++) {
		/* Empty nest is a valid (empty) sequence. */
		n = raw_field(body, nest_tags[i], "", 0);
		assert_int_equal(parse_copy(body, n, why), 0);
		/* 8 bytes that are not a field sequence. */
		n = raw_field(body, nest_tags[i], "abcdefgh", 8);
		assert_int_equal(parse_copy(body, n, why), -EBADMSG);
	}
}

static void
test_proto_fields_parse_bad_utf8(void **state)
{
	static const struct {
		const char *s;
		size_t len;
		size_t at; /* offset of the bad byte */
	} bad[] = {
		{"\x80", 1, 0},		    /* lone continuation */
		{"ab\xbf", 3, 2},	    /* lone continuation */
		{"\xc0\x80", 2, 0},	    /* overlong NUL */
		{"\xc1\xbf", 2, 0},	    /* overlong */
		{"\xe0\x80\x80", 3, 0},	    /* overlong 3-byte */
		{"\xe0\x9f\xbf", 3, 0},	    /* overlong U+07FF */
		{"\xf0\x80\x80\x80", 4, 0}, /* overlong 4-byte */
		{"\xf0\x8f\xbf\xbf", 4, 0}, /* overlong U+FFFF */
		{"\xed\xa0\x80", 3, 0},	    /* surrogate U+D800 */
		{"x\xed\xbf\xbf", 4, 1},    /* surrogate U+DFFF */
		{"\xf4\x90\x80\x80", 4, 0}, /* U+110000 */
		{"\xf5\x80\x80\x80", 4, 0}, /* lead f5 */
		{"\xff", 1, 0},		    /* never valid */
		{"\xfe", 1, 0},		    /* never valid */
		{"\xe2\x82", 2, 0},	    /* truncated */
		{"ok\xf0\x9f\x98", 5, 2},   /* truncated at the end */
		{"\xe2\x28\xa1", 3, 0},	    /* bad 2nd byte */
		{"\xe2\x82\x28", 3, 0},	    /* bad 3rd byte */
		{"\xf0\x9f\x98\x28", 4, 0}, /* bad 4th byte */
		{"\xc3", 1, 0},		    /* truncated 2-byte */
		{"\xc3\xc3", 2, 0},	    /* lead as continuation */
	};
	static const struct {
		const char *s;
		size_t len;
	} good[] = {
		{"", 0},
		{"plain ascii ~", 13},
		{"\x7f", 1},
		{"\xc2\x80", 2},	 /* U+0080 */
		{"\xdf\xbf", 2},	 /* U+07FF */
		{"\xe0\xa0\x80", 3},	 /* U+0800 */
		{"\xed\x9f\xbf", 3},	 /* U+D7FF */
		{"\xee\x80\x80", 3},	 /* U+E000 */
		{"\xef\xbf\xbf", 3},	 /* U+FFFF */
		{"\xf0\x90\x80\x80", 4}, /* U+10000 */
		{"\xf4\x8f\xbf\xbf", 4}, /* U+10FFFF */
		{"\xe2\x82\xac\xf0\x9d\x84\x9e", 7},
	};
	char why[128], want[128];
	uint8_t body[64];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = raw_field(body, MBOX_TAG_TEXT, bad[i].s,
				     (uint32_t)bad[i].len);

		assert_false(proto_utf8_valid((const uint8_t *)bad[i].s,
					      bad[i].len));
		assert_int_equal(parse_copy(body, n, why), -EBADMSG);
		snprintf(want, sizeof(want),
			 "field TEXT is not valid UTF-8 at offset %zu",
			 bad[i].at);
		assert_string_equal(why, want);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		size_t n = raw_field(body, MBOX_TAG_TEXT, good[i].s,
				     (uint32_t)good[i].len);

		assert_true(proto_utf8_valid((const uint8_t *)good[i].s,
					     good[i].len));
		assert_int_equal(parse_copy(body, n, why), 0);
	}
}

static void
test_proto_fields_parse_nul(void **state)
{
	char why[128];
	uint8_t body[64];
	size_t n;

	n = raw_field(body, MBOX_TAG_MAILBOX, "ab\0c", 4);
	assert_int_equal(parse_copy(body, n, why), -EBADMSG);
	assert_string_equal(why,
			    "field MAILBOX contains a NUL byte at offset 2");
	n = raw_field(body, MBOX_TAG_KEY, "\0", 1);
	assert_int_equal(parse_copy(body, n, why), -EBADMSG);
	assert_non_null(strstr(why, "NUL"));
	n = raw_field(body, MBOX_TAG_SETTING, "a=b\0", 4);
	assert_int_equal(parse_copy(body, n, why), -EBADMSG);
	assert_false(proto_utf8_valid((const uint8_t *)"a\0", 2));
	/* DATA may hold NULs. */
	n = raw_field(body, MBOX_TAG_DATA, "\0\0", 2);
	assert_int_equal(parse_copy(body, n, why), 0);
}

static void
test_proto_fields_parse_unknown_tag(void **state)
{
	const uint16_t tags[] = {0, 61, 62, 63, 64, 99, 1000, 0xffff};
	char why[128], want[128];
	uint8_t body[64];

	for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
		size_t n = raw_u64(body, MBOX_TAG_ID, 1);

		n += raw_u64(body + n, tags[i], 1);
		assert_int_equal(parse_copy(body, n, why), -EBADMSG);
		snprintf(want, sizeof(want), "field %u is unknown", tags[i]);
		assert_string_equal(why, want);
	}
	/* Every tag of the table is known. */
	for (unsigned t = 1; t <= 44; t++)
		assert_string_not_equal(proto_tag_name(t), "?");
}

/* Replies may carry fields of a later broker: with
 * PROTO_PARSE_SKIP_UNKNOWN they are stepped over, at the top and inside
 * nests, and the known fields around them still parse; the rest of the
 * rules hold. */
static void
test_proto_fields_parse_skip_unknown(void **state)
{
	uint8_t body[128], inner[64];
	ProtoFields f;
	const char *why = NULL;
	char buf[128];
	size_t n = 0, k = 0;

	(void)state;
	n += raw_u64(body + n, MBOX_TAG_ID, 7);
	n += raw_field(body + n, 61, "\xff\x00", 2); /* unknown: any bytes */
	k += raw_u64(inner + k, MBOX_TAG_COUNT, 1);
	k += raw_u64(inner + k, 62, 2);
	n += raw_field(body + n, MBOX_TAG_MSG, (const char *)inner, k);
	n += raw_u64(body + n, MBOX_TAG_COUNT, 3);
	assert_int_equal(proto_fields_parse(&f, body, n, buf, &why), -EBADMSG);
	assert_int_equal(proto_fields_parse_flags(&f, body, n, buf, &why,
						  PROTO_PARSE_SKIP_UNKNOWN),
			 0);
	assert_null(why);
	assert_int_equal(proto_u64(&f, MBOX_TAG_ID, 0), 7);
	assert_int_equal(proto_u64(&f, MBOX_TAG_COUNT, 0), 3);
	assert_int_equal(f.count[MBOX_TAG_MSG], 1);
	/* A known tag still must be right, and a field still framed. */
	n = raw_u64(body, 62, 1);
	n += raw_field(body + n, MBOX_TAG_ID, "abc", 3);
	assert_int_equal(proto_fields_parse_flags(&f, body, n, buf, &why,
						  PROTO_PARSE_SKIP_UNKNOWN),
			 -EBADMSG);
	n = raw_field(body, 63, "abcd", 4);
	assert_int_equal(proto_fields_parse_flags(&f, body, n - 1, buf, &why,
						  PROTO_PARSE_SKIP_UNKNOWN),
			 -EBADMSG);
}

static void
test_proto_fields_parse_duplicate(void **state)
{
	static const uint8_t zero8[8];
	char why[128], want[128];
	uint8_t body[64];

	for (unsigned tag = 1; tag <= 44; tag++) {
		char type = tag_type(tag);
		bool repeat = tag == MBOX_TAG_ID || tag == MBOX_TAG_HEADER ||
			      tag == MBOX_TAG_MSG || tag == MBOX_TAG_SETTING ||
			      tag == MBOX_TAG_INFO;
		/* A valid value for each type: 8 bytes for u64 and bytes,
		 * empty for str and nest. */
		uint32_t vlen = type == 'u' || type == 'b' ? 8 : 0;
		ProtoFields f;
		size_t n;

		n = raw_field(body, (uint16_t)tag, zero8, vlen);
		n += raw_u64(body + n, MBOX_TAG_COUNT, 1);
		n += raw_field(body + n, (uint16_t)tag, zero8, vlen);
		if (tag == MBOX_TAG_COUNT)
			n -= 14; /* COUNT is the tag under test already */

		if (repeat) {
			assert_int_equal(
				proto_fields_parse(&f, body, n, why, NULL), 0);
			assert_int_equal(f.count[tag], 2);
			assert_ptr_equal(f.first[tag].ptr, body + 6);
		} else {
			assert_int_equal(parse_copy(body, n, why), -EBADMSG);
			snprintf(want, sizeof(want), "field %s appears twice",
				 proto_tag_name(tag));
			assert_string_equal(why, want);
		}
	}
}

static void
test_proto_fields_parse_repeat_counts(void **state)
{
	uint8_t body[512], hdr[64];
	size_t n = 0, k = 0;
	ProtoFields f;
	char why[128];

	k += raw_field(hdr + k, MBOX_TAG_KEY, "a", 1);
	k += raw_field(hdr + k, MBOX_TAG_VALUE, "b", 1);

	n += raw_u64(body + n, MBOX_TAG_ID, 11);
	n += raw_field(body + n, MBOX_TAG_SETTING, "lease=5s", 8);
	n += raw_u64(body + n, MBOX_TAG_ID, 22);
	n += raw_field(body + n, MBOX_TAG_HEADER, hdr, (uint32_t)k);
	n += raw_u64(body + n, MBOX_TAG_ID, 33);
	n += raw_field(body + n, MBOX_TAG_SETTING, "ttl=0", 5);
	n += raw_field(body + n, MBOX_TAG_HEADER, hdr, (uint32_t)k);
	n += raw_field(body + n, MBOX_TAG_INFO, "", 0);
	n += raw_field(body + n, MBOX_TAG_INFO, "", 0);
	n += raw_field(body + n, MBOX_TAG_INFO, "", 0);
	n += raw_field(body + n, MBOX_TAG_INFO, "", 0);

	assert_int_equal(proto_fields_parse(&f, body, n, why, NULL), 0);
	assert_int_equal(f.count[MBOX_TAG_ID], 3);
	assert_int_equal(f.count[MBOX_TAG_SETTING], 2);
	assert_int_equal(f.count[MBOX_TAG_HEADER], 2);
	assert_int_equal(f.count[MBOX_TAG_INFO], 4);
	assert_int_equal(f.count[MBOX_TAG_MSG], 0);
	assert_int_equal(proto_u64(&f, MBOX_TAG_ID, 0), 11);
	assert_int_equal(f.first[MBOX_TAG_SETTING].len, 8);
	assert_memory_equal(f.first[MBOX_TAG_SETTING].ptr, "lease=5s", 8);
	assert_true(f.present ==
		    (PROTO_BIT(MBOX_TAG_ID) | PROTO_BIT(MBOX_TAG_SETTING) |
		     PROTO_BIT(MBOX_TAG_HEADER) | PROTO_BIT(MBOX_TAG_INFO)));
}

static void
test_proto_fields_parse_nested_malformed(void **state)
{
	uint8_t body[512], msg[256], hdr[128], tmp[256];
	size_t n, m, k;
	char why[128];

	/* Wrong u64 length inside MSG. */
	m = raw_field(msg, MBOX_TAG_DATA, "x", 1);
	m += raw_field(msg + m, MBOX_TAG_PRIORITY, "abc", 3);
	n = raw_field(body, MBOX_TAG_MAILBOX, "q", 1);
	n += raw_field(body + n, MBOX_TAG_MSG, msg, (uint32_t)m);
	assert_int_equal(parse_copy(body, n, why), -EBADMSG);
	assert_string_equal(why,
			    "in MSG: field PRIORITY has length 3, expected 8");

	/* Truncated inner field: MSG's own length is right, its content
	 * is not. Offsets count from the start of the top-level body. */
	m = raw_field(msg, MBOX_TAG_DATA, "x", 1);
	m += raw_field(msg + m, MBOX_TAG_DATA, "yyyy", 4) - 2; /* cut */
	n = raw_field(body, MBOX_TAG_MAILBOX, "q", 1);
	n += raw_field(body + n, MBOX_TAG_MSG, msg, (uint32_t)m);
	assert_int_equal(parse_copy(body, n, why), -EBADMSG);
	assert_string_equal(why, "in MSG: body truncated at byte 26: field "
				 "DATA needs 4 value bytes, 2 left");

	/* Unknown tag inside. */
	m = raw_u64(msg, 200, 1);
	n = raw_field(body, MBOX_TAG_MSG, msg, (uint32_t)m);
	assert_int_equal(parse_copy(body, n, why), -EBADMSG);
	assert_string_equal(why, "in MSG: field 200 is unknown");

	/* Non-repeatable tag twice inside. */
	m = raw_field(msg, MBOX_TAG_DATA, "a", 1);
	m += raw_field(msg + m, MBOX_TAG_DATA, "b", 1);
	n = raw_field(body, MBOX_TAG_MSG, msg, (uint32_t)m);
	assert_int_equal(parse_copy(body, n, why), -EBADMSG);
	assert_string_equal(why, "in MSG: field DATA appears twice");

	/* ...but the same DATA once in each of two MSGs is fine. */
	m = raw_field(msg, MBOX_TAG_DATA, "a", 1);
	n = raw_field(body, MBOX_TAG_MSG, msg, (uint32_t)m);
	n += raw_field(body + n, MBOX_TAG_MSG, msg, (uint32_t)m);
	assert_int_equal(parse_copy(body, n, why), 0);

	/* Bad UTF-8 two levels down. */
	k = raw_field(hdr, MBOX_TAG_KEY, "k", 1);
	k += raw_field(hdr + k, MBOX_TAG_VALUE, "\xed\xa0\x80", 3);
	m = raw_field(msg, MBOX_TAG_DATA, "a", 1);
	m += raw_field(msg + m, MBOX_TAG_HEADER, hdr, (uint32_t)k);
	n = raw_field(body, MBOX_TAG_MSG, msg, (uint32_t)m);
	assert_int_equal(parse_copy(body, n, why), -EBADMSG);
	assert_string_equal(
		why,
		"in MSG/HEADER: field VALUE is not valid UTF-8 at offset 0");

	/* PROTO_NEST_MAX levels are fine, one more is not. */
	m = raw_u64(msg, MBOX_TAG_PRIORITY, 1);
	for (unsigned d = 1; d <= PROTO_NEST_MAX + 1; d++) {
		n = raw_field(tmp, MBOX_TAG_MSG, msg, (uint32_t)m);
		memcpy(msg, tmp, n);
		m = n;
		assert_int_equal(parse_copy(msg, m, why),
				 d <= PROTO_NEST_MAX ? 0 : -EBADMSG);
	}
	assert_string_equal(why, "in MSG/MSG/MSG/MSG: field MSG nests deeper "
				 "than 4 levels");

	/* A nested value whose own length runs past the outer one. */
	m = raw_field(msg, MBOX_TAG_DATA, "abc", 3);
	n = raw_field(body, MBOX_TAG_MSG, msg, (uint32_t)m);
	body[2] = (uint8_t)(m - 1); /* outer is 1 short */
	assert_int_equal(parse_copy(body, n - 1, why), -EBADMSG);
	assert_non_null(strstr(why, "in MSG: body truncated"));
}

static void
test_proto_fields_parse_why(void **state)
{
	uint8_t body[32];
	size_t n = raw_field(body, 99, "", 0);
	ProtoFields f;
	const char *why = (const char *)1;

	/* Without why_buf, a generic static text. */
	assert_int_equal(proto_fields_parse(&f, body, n, NULL, &why), -EBADMSG);
	assert_non_null(why);
	assert_true(strlen(why) > 0);
	/* why itself may be NULL. */
	assert_int_equal(proto_fields_parse(&f, body, n, NULL, NULL), -EBADMSG);
	/* Success clears *why. */
	n = raw_u64(body, MBOX_TAG_ID, 1);
	assert_int_equal(proto_fields_parse(&f, body, n, NULL, &why), 0);
	assert_null(why);
}

static void
test_proto_fields_parse_long_reason(void **state)
{
	/* The reason never overflows its 128 bytes, whatever the nesting. */
	uint8_t msg[256], tmp[256];
	char why[129];
	size_t m;

	memset(why, 'Z', sizeof(why));
	m = raw_field(msg, MBOX_TAG_DEAD_REASON, "\xff", 1);
	for (unsigned d = 0; d < PROTO_NEST_MAX; d++) {
		size_t n = raw_field(tmp, MBOX_TAG_INFO, msg, (uint32_t)m);

		memcpy(msg, tmp, n);
		m = n;
	}
	assert_int_equal(parse_copy(msg, m, why), -EBADMSG);
	assert_int_equal(why[128], 'Z');
	assert_true(strlen(why) < 128);
	assert_string_equal(why, "in INFO/INFO/INFO/INFO: field DEAD_REASON "
				 "is not valid UTF-8 at offset 0");
}

static void
test_proto_fields_check(void **state)
{
	uint8_t body[64];
	size_t n = 0;
	ProtoFields f;
	char why[128];
	uint64_t recv_allowed =
		PROTO_BIT(MBOX_TAG_MAILBOX) | PROTO_BIT(MBOX_TAG_COUNT) |
		PROTO_BIT(MBOX_TAG_WAIT_MS) | PROTO_BIT(MBOX_TAG_LEASE_MS);

	n += raw_field(body + n, MBOX_TAG_MAILBOX, "q", 1);
	n += raw_u64(body + n, MBOX_TAG_COUNT, 5);
	assert_int_equal(proto_fields_parse(&f, body, n, why, NULL), 0);

	assert_int_equal(proto_fields_check(&f, recv_allowed,
					    PROTO_BIT(MBOX_TAG_MAILBOX), why),
			 0);
	assert_int_equal(proto_u64(&f, MBOX_TAG_COUNT, 1), 5);
	assert_int_equal(proto_u64(&f, MBOX_TAG_WAIT_MS, 1234), 1234);

	/* COUNT not allowed. */
	assert_int_equal(proto_fields_check(&f, PROTO_BIT(MBOX_TAG_MAILBOX),
					    PROTO_BIT(MBOX_TAG_MAILBOX), why),
			 -EBADMSG);
	assert_string_equal(why, "field COUNT is not allowed in this request");

	/* Required missing. */
	assert_int_equal(
		proto_fields_check(&f, recv_allowed | PROTO_BIT(MBOX_TAG_ID),
				   PROTO_BIT(MBOX_TAG_MAILBOX) |
					   PROTO_BIT(MBOX_TAG_ID),
				   why),
		-EBADMSG);
	assert_string_equal(why, "required field ID is missing");

	/* Empty body: nothing allowed, nothing required is fine; a PING. */
	assert_int_equal(proto_fields_parse(&f, body, 0, why, NULL), 0);
	assert_int_equal(proto_fields_check(&f, 0, 0, why), 0);
	assert_int_equal(proto_fields_check(&f, recv_allowed,
					    PROTO_BIT(MBOX_TAG_MAILBOX), why),
			 -EBADMSG);
	assert_string_equal(why, "required field MAILBOX is missing");
	/* why_buf may be NULL. */
	assert_int_equal(
		proto_fields_check(&f, 0, PROTO_BIT(MBOX_TAG_ID), NULL),
		-EBADMSG);
}

static void
test_proto_u64_default(void **state)
{
	uint8_t body[64];
	size_t n = 0;
	ProtoFields f;

	n += raw_u64(body + n, MBOX_TAG_LEASE_MS, UINT64_C(1) << 40);
	n += raw_field(body + n, MBOX_TAG_DATA, "12345678", 8);
	assert_int_equal(proto_fields_parse(&f, body, n, NULL, NULL), 0);
	assert_true(proto_u64(&f, MBOX_TAG_LEASE_MS, 0) == UINT64_C(1) << 40);
	assert_int_equal(proto_u64(&f, MBOX_TAG_TTL_MS, 77), 77);
	/* Not a u64 tag, even when 8 bytes long. */
	assert_int_equal(proto_u64(&f, MBOX_TAG_DATA, 5), 5);
	assert_int_equal(proto_u64(&f, 63, 6), 6);
	assert_int_equal(proto_u64(&f, 1000, 6), 6);
	assert_false(proto_has(&f, 1000));
}

/* ------------------------------------------------------------------ */
/* Assembler                                                           */

/* A frame (header + body of body_len bytes of a pattern). */
static uint8_t *
make_frame(uint16_t op, uint32_t id, uint32_t body_len, size_t *len)
{
	ProtoHeader h = {.opcode = op, .id = id, .body_len = body_len};
	uint8_t *f = malloc(MBOX_PROTO_HEADER_SIZE + (size_t)body_len);

	assert_non_null(f);
	proto_header_encode(f, &h);
	for (size_t i = 0; i < body_len; i++)
		f[MBOX_PROTO_HEADER_SIZE + i] = (uint8_t)(i * 31 + id);
	*len = MBOX_PROTO_HEADER_SIZE + (size_t)body_len;
	return f;
}

/*
 * Feed a frame split the way senders split it, each datagram in a buffer
 * of its exact size. Returns the result of the last feed and checks that
 * every earlier one was PROTO_ASM_MORE.
 */
static int
feed_frame(ProtoAssembler *a, const uint8_t *frame, size_t len,
	   unsigned *ndgrams)
{
	size_t off = 0, n;
	unsigned count = 0;
	int r = -1;

	while ((n = proto_dgram_next(len, off)) > 0) {
		uint8_t *d = malloc(n);

		assert_non_null(d);
		memcpy(d, frame + off, n);
		r = proto_asm_feed(a, d, n);
		free(d);
		off += n;
		count++;
		if (off < len)
			assert_int_equal(r, PROTO_ASM_MORE);
	}
	if (ndgrams)
		*ndgrams = count;
	return r;
}

static void
test_proto_asm_single(void **state)
{
	ProtoAssembler a;
	ProtoHeader h;
	ProtoWriter w;
	const uint8_t *frame;
	size_t len, blen;
	uint8_t *body;
	ProtoFields f;

	proto_writer_init(&w);
	proto_writer_begin(&w, MBOX_OP_CREATE, 0, 42, 0);
	proto_put_str(&w, MBOX_TAG_MAILBOX, "inbox");
	proto_put_str(&w, MBOX_TAG_SETTING, "lease=30s");
	assert_int_equal(proto_writer_finish(&w, &frame, &len), 0);

	proto_asm_init(&a, 1024);
	assert_int_equal(proto_asm_feed(&a, frame, len), PROTO_ASM_FRAME);
	body = proto_asm_take(&a, &h, &blen);
	assert_non_null(body);
	assert_int_equal(h.opcode, MBOX_OP_CREATE);
	assert_int_equal(h.id, 42);
	assert_int_equal(blen, len - MBOX_PROTO_HEADER_SIZE);
	assert_memory_equal(body, frame + MBOX_PROTO_HEADER_SIZE, blen);
	assert_int_equal(proto_fields_parse(&f, body, blen, NULL, NULL), 0);
	assert_true(proto_has(&f, MBOX_TAG_SETTING));
	free(body);

	/* Idle again: a second frame in a row. */
	assert_false(a.active);
	assert_null(a.buf);
	assert_int_equal(proto_asm_feed(&a, frame, len), PROTO_ASM_FRAME);
	body = proto_asm_take(&a, &h, &blen);
	assert_non_null(body);
	free(body);

	proto_asm_release(&a);
	proto_writer_release(&w);
}

static void
test_proto_asm_one_mib(void **state)
{
	const uint32_t body_len = 1024 * 1024;
	ProtoAssembler a;
	ProtoHeader h;
	uint8_t *frame, *body;
	size_t len, blen;
	unsigned nd;

	frame = make_frame(MBOX_OP_POST, 7, body_len, &len);
	proto_asm_init(&a, MBOX_DEFAULT_MSG_SIZE + MBOX_PROTO_FRAME_SLACK);
	assert_int_equal(feed_frame(&a, frame, len, &nd), PROTO_ASM_FRAME);
	/* 16 + 1 MiB bytes: 16 full datagrams and a 16-byte tail. */
	assert_int_equal(nd, 17);
	body = proto_asm_take(&a, &h, &blen);
	assert_non_null(body);
	assert_int_equal(h.id, 7);
	assert_int_equal(h.body_len, body_len);
	assert_int_equal(blen, body_len);
	assert_memory_equal(body, frame + MBOX_PROTO_HEADER_SIZE, body_len);
	free(body);

	/* Exactly max_body is accepted too. */
	proto_asm_release(&a);
	proto_asm_init(&a, body_len);
	assert_int_equal(feed_frame(&a, frame, len, NULL), PROTO_ASM_FRAME);
	body = proto_asm_take(&a, &h, &blen);
	assert_int_equal(blen, body_len);
	assert_memory_equal(body, frame + MBOX_PROTO_HEADER_SIZE, body_len);
	free(body);

	proto_asm_release(&a);
	free(frame);
}

static void
test_proto_asm_empty_body(void **state)
{
	ProtoAssembler a;
	ProtoHeader h;
	uint8_t *frame, *body;
	size_t len, blen = 99;

	frame = make_frame(MBOX_OP_PING, 3, 0, &len);
	proto_asm_init(&a, 0); /* even with max_body 0 */
	assert_int_equal(proto_asm_feed(&a, frame, len), PROTO_ASM_FRAME);
	body = proto_asm_take(&a, &h, &blen);
	assert_null(body);
	assert_int_equal(blen, 0);
	assert_int_equal(h.opcode, MBOX_OP_PING);
	assert_int_equal(h.id, 3);
	proto_asm_release(&a);
	free(frame);
}

static void
test_proto_asm_too_large_skipped(void **state)
{
	const size_t max_body = 1000;
	const uint32_t big_len = 200000; /* 4 datagrams */
	ProtoAssembler a;
	ProtoHeader h;
	uint8_t *big, *small, *body;
	size_t big_total, small_total, blen, off = 0, n;
	unsigned nd = 0;
	int r = -1;

	big = make_frame(MBOX_OP_POST, 11, big_len, &big_total);
	small = make_frame(MBOX_OP_POST, 12, 500, &small_total);
	proto_asm_init(&a, max_body);

	while ((n = proto_dgram_next(big_total, off)) > 0) {
		r = proto_asm_feed(&a, big + off, n);
		off += n;
		nd++;
		/* Nothing is buffered while skipping. */
		assert_null(a.buf);
		if (off < big_total) {
			assert_int_equal(r, PROTO_ASM_MORE);
			assert_true(a.skipping);
		}
	}
	assert_int_equal(nd, 4);
	assert_int_equal(r, PROTO_ASM_TOO_LARGE);
	assert_int_equal(a.hdr.id, 11);
	assert_int_equal(a.hdr.body_len, big_len);
	assert_false(a.active);
	assert_false(a.skipping);

	/* The stream is in step: the next frame comes out whole. */
	assert_int_equal(proto_asm_feed(&a, small, small_total),
			 PROTO_ASM_FRAME);
	body = proto_asm_take(&a, &h, &blen);
	assert_int_equal(h.id, 12);
	assert_int_equal(blen, 500);
	assert_memory_equal(body, small + MBOX_PROTO_HEADER_SIZE, 500);
	free(body);

	/* Too large in a single datagram: skipped at once. */
	free(big);
	big = make_frame(MBOX_OP_POST, 13, (uint32_t)max_body + 1, &big_total);
	assert_int_equal(proto_asm_feed(&a, big, big_total),
			 PROTO_ASM_TOO_LARGE);
	assert_int_equal(a.hdr.id, 13);
	assert_null(a.buf);
	assert_int_equal(proto_asm_feed(&a, small, small_total),
			 PROTO_ASM_FRAME);
	body = proto_asm_take(&a, &h, &blen);
	assert_int_equal(h.id, 12);
	free(body);

	/* A huge announced size with a header-only first datagram. */
	{
		ProtoHeader hh = {.opcode = MBOX_OP_POST,
				  .id = 14,
				  .body_len = UINT32_MAX};
		uint8_t hdr[MBOX_PROTO_HEADER_SIZE];

		proto_header_encode(hdr, &hh);
		assert_int_equal(proto_asm_feed(&a, hdr, sizeof(hdr)),
				 PROTO_ASM_MORE);
		assert_null(a.buf);
		assert_true(a.skipping);
	}

	proto_asm_release(&a);
	free(big);
	free(small);
}

static void
test_proto_asm_continuation_overshoot(void **state)
{
	ProtoAssembler a;
	uint8_t *frame, *extra;
	size_t len;
	const uint32_t body_len = 70000; /* 65520 + 4480 */

	frame = make_frame(MBOX_OP_POST, 1, body_len, &len);
	extra = calloc(1, 4481);
	assert_non_null(extra);

	/* Collecting: one byte too many in the continuation. */
	proto_asm_init(&a, 1 << 20);
	assert_int_equal(proto_asm_feed(&a, frame, MBOX_PROTO_DGRAM_MAX),
			 PROTO_ASM_MORE);
	assert_int_equal(proto_asm_feed(&a, extra, 4481), -EBADMSG);
	assert_false(a.active);
	assert_null(a.buf); /* partial body freed */
	/* Exactly the rest works after a fresh start. */
	assert_int_equal(proto_asm_feed(&a, frame, MBOX_PROTO_DGRAM_MAX),
			 PROTO_ASM_MORE);
	assert_int_equal(proto_asm_feed(&a, frame + MBOX_PROTO_DGRAM_MAX,
					len - MBOX_PROTO_DGRAM_MAX),
			 PROTO_ASM_FRAME);
	free(proto_asm_take(&a, NULL, NULL));

	/* Skipping: the same check applies. */
	proto_asm_release(&a);
	proto_asm_init(&a, 100);
	assert_int_equal(proto_asm_feed(&a, frame, MBOX_PROTO_DGRAM_MAX),
			 PROTO_ASM_MORE);
	assert_int_equal(proto_asm_feed(&a, extra, 4481), -EBADMSG);
	assert_false(a.active);
	assert_false(a.skipping);

	/* A first datagram holding more than body_len. */
	proto_asm_release(&a);
	free(frame);
	frame = make_frame(MBOX_OP_POST, 1, 10, &len);
	frame[MBOX_HDR_OFF_LEN] = 9;
	proto_asm_init(&a, 100);
	assert_int_equal(proto_asm_feed(&a, frame, len), -EBADMSG);
	assert_null(a.buf);

	proto_asm_release(&a);
	free(frame);
	free(extra);
}

static void
test_proto_asm_oversize_dgram(void **state)
{
	ProtoAssembler a;
	uint8_t *frame;
	size_t len;

	frame = make_frame(MBOX_OP_POST, 1, 200000, &len);
	proto_asm_init(&a, 1 << 20);
	/* A first datagram one byte over the limit. */
	assert_int_equal(proto_asm_feed(&a, frame, MBOX_PROTO_DGRAM_MAX + 1),
			 -EBADMSG);
	assert_null(a.buf);
	assert_false(a.active);
	/* A continuation one byte over the limit. */
	assert_int_equal(proto_asm_feed(&a, frame, MBOX_PROTO_DGRAM_MAX),
			 PROTO_ASM_MORE);
	assert_int_equal(proto_asm_feed(&a, frame + MBOX_PROTO_DGRAM_MAX,
					MBOX_PROTO_DGRAM_MAX + 1),
			 -EBADMSG);
	assert_null(a.buf);
	assert_false(a.active);
	proto_asm_release(&a);
	free(frame);
}

static void
test_proto_asm_short_and_bad_first(void **state)
{
	ProtoAssembler a;
	uint8_t *frame;
	size_t len;

	frame = make_frame(MBOX_OP_PING, 1, 0, &len);
	proto_asm_init(&a, 1024);
	for (size_t n = 0; n < MBOX_PROTO_HEADER_SIZE; n++) {
		uint8_t *d = malloc(n ? n : 1);

		assert_non_null(d);
		memcpy(d, frame, n);
		assert_int_equal(proto_asm_feed(&a, d, n), -EBADMSG);
		free(d);
	}
	frame[MBOX_HDR_OFF_VERSION] = 2;
	assert_int_equal(proto_asm_feed(&a, frame, len), -EBADMSG);
	frame[MBOX_HDR_OFF_VERSION] = 1;
	frame[MBOX_HDR_OFF_FLAGS] = 0x40;
	assert_int_equal(proto_asm_feed(&a, frame, len), -EBADMSG);
	frame[MBOX_HDR_OFF_FLAGS] = 0;
	assert_int_equal(proto_asm_feed(&a, frame, len), PROTO_ASM_FRAME);
	assert_null(proto_asm_take(&a, NULL, NULL));
	proto_asm_release(&a);
	free(frame);
}

static void
test_proto_asm_untaken_and_release(void **state)
{
	ProtoAssembler a;
	uint8_t *f1, *f2, *body;
	size_t l1, l2, blen;
	ProtoHeader h;

	f1 = make_frame(MBOX_OP_POST, 1, 100, &l1);
	f2 = make_frame(MBOX_OP_POST, 2, 200000, &l2);
	proto_asm_init(&a, 1 << 20);

	/* take before anything: nothing. */
	blen = 5;
	assert_null(proto_asm_take(&a, &h, &blen));
	assert_int_equal(blen, 0);

	/* A completed body not taken is dropped by the next feed (valgrind
	 * proves it is freed). */
	assert_int_equal(proto_asm_feed(&a, f1, l1), PROTO_ASM_FRAME);
	assert_int_equal(proto_asm_feed(&a, f1, l1), PROTO_ASM_FRAME);
	body = proto_asm_take(&a, &h, &blen);
	assert_int_equal(blen, 100);
	free(body);

	/* take in the middle of a frame gives nothing and changes nothing. */
	assert_int_equal(proto_asm_feed(&a, f2, MBOX_PROTO_DGRAM_MAX),
			 PROTO_ASM_MORE);
	assert_null(proto_asm_take(&a, &h, &blen));
	assert_int_equal(blen, 0);
	assert_true(a.active);
	assert_int_equal(a.have, MBOX_PROTO_DGRAM_MAX - MBOX_PROTO_HEADER_SIZE);

	/* An empty continuation is harmless. */
	assert_int_equal(proto_asm_feed(&a, f2, 0), PROTO_ASM_MORE);

	/* Release in the middle of a frame frees the partial body. */
	proto_asm_release(&a);
	assert_null(a.buf);
	assert_false(a.active);
	free(f1);
	free(f2);
}

static void
test_proto_dgram_next(void **state)
{
	const size_t M = MBOX_PROTO_DGRAM_MAX;

	assert_int_equal(proto_dgram_next(0, 0), 0);
	assert_int_equal(proto_dgram_next(16, 0), 16);
	assert_int_equal(proto_dgram_next(16, 16), 0);
	assert_int_equal(proto_dgram_next(16, 20), 0);
	assert_int_equal(proto_dgram_next(M, 0), M);
	assert_int_equal(proto_dgram_next(M + 1, 0), M);
	assert_int_equal(proto_dgram_next(M + 1, M), 1);
	assert_int_equal(proto_dgram_next(3 * M + 5, M), M);
	assert_int_equal(proto_dgram_next(3 * M + 5, 3 * M), 5);
}

/* ------------------------------------------------------------------ */
/* Names and validity                                                  */

static void
test_proto_names(void **state)
{
	assert_string_equal(proto_op_name(MBOX_OP_HELLO), "HELLO");
	assert_string_equal(proto_op_name(MBOX_OP_POST), "POST");
	assert_string_equal(proto_op_name(MBOX_OP_CHOWN), "CHOWN");
	assert_string_equal(proto_op_name(MBOX_OP_DELIVER), "DELIVER");
	assert_string_equal(proto_op_name(0), "?");
	assert_string_equal(proto_op_name(30), "?");
	assert_string_equal(proto_op_name(63), "?");
	assert_string_equal(proto_op_name(65), "?");
	assert_string_equal(proto_op_name(0xffffffffu), "?");
	for (unsigned op = MBOX_OP_HELLO; op <= MBOX_OP_CHOWN; op++)
		assert_string_not_equal(proto_op_name(op), "?");

	assert_string_equal(proto_tag_name(MBOX_TAG_MAILBOX), "MAILBOX");
	assert_string_equal(proto_tag_name(MBOX_TAG_MAX_MSG_SIZE),
			    "MAX_MSG_SIZE");
	assert_string_equal(proto_tag_name(MBOX_TAG_DEADLINE_NS),
			    "DEADLINE_NS");
	assert_string_equal(proto_tag_name(0), "?");
	assert_string_equal(proto_tag_name(MBOX_TAG_DISK_FULL), "DISK_FULL");
	assert_string_equal(proto_tag_name(MBOX_TAG_SKIPPED), "SKIPPED");
	assert_string_equal(proto_tag_name(61), "?");
	assert_string_equal(proto_tag_name(64), "?");
	assert_string_equal(proto_tag_name(0xffffffffu), "?");

	assert_string_equal(proto_status_text(MBOX_S_MALFORMED),
			    "malformed request");
	assert_string_equal(proto_status_text(MBOX_S_UNKNOWN_OP),
			    "unknown operation");
	assert_string_equal(proto_status_text(MBOX_S_VERSION),
			    "protocol version mismatch");
	assert_string_equal(proto_status_text(MBOX_S_NOT_FOUND),
			    "no such mailbox");
	assert_string_equal(proto_status_text(MBOX_S_DENIED),
			    "permission denied");
	assert_string_equal(proto_status_text(MBOX_S_EXISTS), "mailbox exists");
	assert_string_equal(proto_status_text(MBOX_S_LIMIT), "limit reached");
	assert_string_equal(proto_status_text(MBOX_S_FULL), "mailbox full");
	assert_string_equal(proto_status_text(MBOX_S_TOO_LARGE), "too large");
	assert_string_equal(proto_status_text(MBOX_S_INVALID),
			    "invalid argument");
	assert_string_equal(proto_status_text(MBOX_S_NOT_LEASED),
			    "message not leased by this connection");
	assert_string_equal(proto_status_text(MBOX_S_STORE), "store failure");
	assert_string_equal(proto_status_text(MBOX_S_SHUTDOWN),
			    "broker shutting down");
	assert_string_equal(proto_status_text(MBOX_S_NOT_EMPTY),
			    "mailbox not empty");
	assert_string_equal(proto_status_text(MBOX_S_BUSY),
			    "busy: too many requests, or consumers conflict");
	assert_non_null(proto_status_text(MBOX_S_OK));
	assert_non_null(proto_status_text(16));
	assert_non_null(proto_status_text(0xffffffffu));
}

static void
test_proto_name_valid(void **state)
{
	uint8_t name[MBOX_NAME_MAX + 2];
	const char *bad[] = {"a b", "a/b", "a@b", "\xc3\xa9", "a\tb",
			     "a:b", "*",   "a+b", "~"};

	memset(name, 'a', sizeof(name));
	assert_false(proto_name_valid(name, 0));
	assert_true(proto_name_valid(name, 1));
	assert_true(proto_name_valid(name, MBOX_NAME_MAX));
	assert_false(proto_name_valid(name, MBOX_NAME_MAX + 1));

	assert_true(
		proto_name_valid((const uint8_t *)"ABCXYZabcxyz0189._-", 19));
	assert_true(proto_name_valid((const uint8_t *)".", 1));
	assert_true(proto_name_valid((const uint8_t *)"-", 1));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(proto_name_valid((const uint8_t *)bad[i],
					      strlen(bad[i])));
	assert_false(proto_name_valid((const uint8_t *)"a\0b", 3));

	/* Every byte value: exactly the 65 allowed ones pass. */
	{
		unsigned ok = 0;

		for (unsigned c = 0; c < 256; c++) {
			uint8_t b = (uint8_t)c;

			if (proto_name_valid(&b, 1))
				ok++;
		}
		assert_int_equal(ok, 26 + 26 + 10 + 3);
	}
}

static void
test_proto_utf8_valid(void **state)
{
	/* Exhaustive over 2-byte sequences: the valid ones are exactly
	 * C2..DF followed by 80..BF. */
	unsigned ok = 0;

	for (unsigned a = 0x80; a < 0x100; a++) {
		for (unsigned b = 0; b < 0x100; b++) {
			uint8_t s[2] = {(uint8_t)a, (uint8_t)b};

			if (proto_utf8_valid(s, 2))
				ok++;
		}
	}
	assert_int_equal(ok, (0xdf - 0xc2 + 1) * 0x40);

	/* Exhaustive over 3-byte sequences starting with E0..EF. */
	ok = 0;
	for (unsigned a = 0xe0; a <= 0xef; a++)
		for (unsigned b = 0x80; b < 0xc0; b++)
			for (unsigned c = 0; c < 0x100; c++) {
				uint8_t s[3] = {(uint8_t)a, (uint8_t)b,
						(uint8_t)c};

				if (proto_utf8_valid(s, 3))
					ok++;
			}
	/* U+0800..U+FFFF minus the 2048 surrogates. */
	assert_int_equal(ok, 0x10000 - 0x800 - 0x800);

	assert_true(proto_utf8_valid((const uint8_t *)"", 0));
	assert_true(proto_utf8_valid(NULL, 0));
	assert_false(proto_utf8_valid((const uint8_t *)"\0", 1));
	assert_false(proto_utf8_valid((const uint8_t *)"abc\0", 4));
	assert_true(proto_utf8_valid((const uint8_t *)"abc\0", 3));
}

static void
test_proto_utf8_scrub(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"", ""},
		{"worker", "worker"},
		{"caf\xc3\xa9", "caf\xc3\xa9"}, /* whole: kept */
		{"caf\xc3", "caf"},		/* cut short: dropped */
		{"\xe2\x82", ""},		/* cut after 2 of 3 */
		{"a\xf0\x9f\x98", "a"},		/* cut after 3 of 4 */
		{"\xff\xfe\x01"
		 "bad",
		 "??\x01"
		 "bad"},			       /* never valid */
		{"a\xc3(b", "a?(b"},		       /* bad 2nd byte */
		{"\xc0\xafx", "??x"},		       /* overlong */
		{"\xed\xa0\x80", "???"},	       /* surrogate */
		{"\xf4\x90\x80\x80", "????"},	       /* above U+10FFFF */
		{"\x80\xe2\x82\xac", "?\xe2\x82\xac"}, /* stray, then euro */
		{"\xe2\x82x\xe2\x82", "??x"}, /* inside and at the end */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[32];

		snprintf(buf, sizeof(buf), "%s", cases[i].in);
		proto_utf8_scrub(buf);
		assert_string_equal(buf, cases[i].out);
		assert_true(
			proto_utf8_valid((const uint8_t *)buf, strlen(buf)));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_proto_header_round_trip),
		cmocka_unit_test(test_proto_header_layout),
		cmocka_unit_test(test_proto_header_bad),
		cmocka_unit_test(test_proto_writer_doc_example),
		cmocka_unit_test(test_proto_writer_round_trip),
		cmocka_unit_test(test_proto_writer_empty_body),
		cmocka_unit_test(test_proto_writer_begin_discards),
		cmocka_unit_test(test_proto_writer_growth),
		cmocka_unit_test(test_proto_writer_nest_depth),
		cmocka_unit_test(test_proto_writer_e2big),
		cmocka_unit_test(test_proto_writer_without_begin),
		cmocka_unit_test(test_proto_writer_steal),
		cmocka_unit_test(test_proto_reader_every_cut),
		cmocka_unit_test(test_proto_fields_parse_every_cut),
		cmocka_unit_test(test_proto_fields_parse_truncation_reason),
		cmocka_unit_test(test_proto_fields_parse_u64_length),
		cmocka_unit_test(test_proto_fields_parse_types),
		cmocka_unit_test(test_proto_fields_parse_bad_utf8),
		cmocka_unit_test(test_proto_fields_parse_nul),
		cmocka_unit_test(test_proto_fields_parse_unknown_tag),
		cmocka_unit_test(test_proto_fields_parse_skip_unknown),
		cmocka_unit_test(test_proto_fields_parse_duplicate),
		cmocka_unit_test(test_proto_fields_parse_repeat_counts),
		cmocka_unit_test(test_proto_fields_parse_nested_malformed),
		cmocka_unit_test(test_proto_fields_parse_why),
		cmocka_unit_test(test_proto_fields_parse_long_reason),
		cmocka_unit_test(test_proto_fields_check),
		cmocka_unit_test(test_proto_u64_default),
		cmocka_unit_test(test_proto_asm_single),
		cmocka_unit_test(test_proto_asm_one_mib),
		cmocka_unit_test(test_proto_asm_empty_body),
		cmocka_unit_test(test_proto_asm_too_large_skipped),
		cmocka_unit_test(test_proto_asm_continuation_overshoot),
		cmocka_unit_test(test_proto_asm_oversize_dgram),
		cmocka_unit_test(test_proto_asm_short_and_bad_first),
		cmocka_unit_test(test_proto_asm_untaken_and_release),
		cmocka_unit_test(test_proto_dgram_next),
		cmocka_unit_test(test_proto_names),
		cmocka_unit_test(test_proto_name_valid),
		cmocka_unit_test(test_proto_utf8_valid),
		cmocka_unit_test(test_proto_utf8_scrub),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
