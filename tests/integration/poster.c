/*
 * poster.c - integration test driver: a stream of checkable posts.
 *
 *   poster-driver post SOCKET MAILBOX SEED COUNT
 *	Post messages 1..COUNT to MAILBOX, one at a time. After each post the
 *	broker confirmed (and only then) print "SEQ ID LEN HASH" on its own
 *	line and flush. Stops at the first error (exit 1): that is how it
 *	ends when the test kills the broker under it.
 *
 *   poster-driver emit SEED SEQ
 *	Write the payload of message SEQ to stdout, so a test can compare
 *	what mboxctl receives byte for byte.
 *
 *   poster-driver verify SOCKET MAILBOX < CONFIRMED
 *	Read "SEQ ID LEN HASH" lines and check, with peek (nothing is
 *	consumed), that every one of those messages is stored with exactly
 *	that payload, and that ids grow with SEQ. Exit 1 on any difference.
 *
 *   poster-driver size SOCKET MAILBOX BYTES
 *	Post one message of BYTES bytes through libmbox and print its id.
 *	Exit 3 when it is refused as too large (-EMSGSIZE), 1 on any other
 *	error, or when the connection is unusable after the post.
 *
 * Payloads are a pure function of (SEED, SEQ): sizes are mostly under
 * 4 KiB, every 16th is up to 300 KiB (several datagrams on the wire), every
 * 50th is empty; the bytes come from xorshift64*. HASH is FNV-1a 64.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mbox.h"
#include "driver-util.h"

/* The most one PEEK may ask for (doc/protocol.md, PEEK). */
#define PEEK_MAX 1024u

typedef struct Stored {
	uint64_t id;
	size_t len;
	uint64_t hash;
} Stored;

static uint64_t
rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t
rng_seed(uint64_t seed, uint64_t seq)
{
	/* Never 0: xorshift would stay at 0. */
	return (seed * 0x9E3779B97F4A7C15ULL) ^ (seq * 0xD1B54A32D192ED03ULL) ^
	       0x5851F42D4C957F2DULL;
}

/* Fill *out (malloc'd, caller frees) with the payload of seq. */
static size_t
payload_make(uint64_t seed, uint64_t seq, unsigned char **out)
{
	uint64_t s = rng_seed(seed, seq);
	size_t len, i;
	unsigned char *p;

	if (seq % 50 == 0)
		len = 0;
	else if (seq % 16 == 0)
		len = rng_next(&s) % (300 * 1024);
	else
		len = rng_next(&s) % 4096;
	p = malloc(len ? len : 1);
	if (!p) {
		perror("malloc");
		exit(1);
	}
	for (i = 0; i < len; i++)
		p[i] = (unsigned char)(rng_next(&s) >> 56);
	*out = p;
	return len;
}

static uint64_t
fnv1a(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static int
do_post(const char *sock, const char *mailbox, uint64_t seed, uint64_t count)
{
	mbox *m = NULL;
	uint64_t seq, id;
	int r;

	if (driver_connect(&m, "poster", sock) < 0)
		return 1;
	for (seq = 1; seq <= count; seq++) {
		unsigned char *p;
		size_t len = payload_make(seed, seq, &p);

		r = mbox_post(m, mailbox, p, len, NULL, &id);
		if (r < 0) {
			fprintf(stderr, "poster: post seq %" PRIu64 ": %s\n",
				seq, mbox_strerror(r));
			free(p);
			mbox_close(m);
			return 1;
		}
		printf("%" PRIu64 " %" PRIu64 " %zu %016" PRIx64 "\n", seq, id,
		       len, fnv1a(p, len));
		fflush(stdout);
		free(p);
	}
	mbox_close(m);
	return 0;
}

static int
do_emit(uint64_t seed, uint64_t seq)
{
	unsigned char *p;
	size_t len = payload_make(seed, seq, &p);
	int ok = fwrite(p, 1, len, stdout) == len && fflush(stdout) == 0;

	free(p);
	return ok ? 0 : 1;
}

static int
do_size(const char *sock, const char *mailbox, size_t len)
{
	mbox *m = NULL;
	unsigned char *p;
	uint64_t id;
	int r, rc = 0;

	if (driver_connect(&m, "poster", sock) < 0)
		return 1;
	p = malloc(len ? len : 1);
	if (!p) {
		perror("malloc");
		exit(1);
	}
	memset(p, 'x', len);
	r = mbox_post(m, mailbox, p, len, NULL, &id);
	if (r < 0) {
		fprintf(stderr, "poster: post of %zu bytes: %s (%s)\n", len,
			mbox_strerror(r), mbox_last_error(m));
		rc = r == -EMSGSIZE ? 3 : 1;
	} else {
		printf("%" PRIu64 "\n", id);
	}
	r = mbox_ping(m);
	if (r < 0) {
		fprintf(stderr, "poster: ping after the post: %s\n",
			mbox_strerror(r));
		rc = 1;
	}
	free(p);
	mbox_close(m);
	return rc;
}

static int
stored_cmp(const void *a, const void *b)
{
	uint64_t x = ((const Stored *)a)->id, y = ((const Stored *)b)->id;

	return x < y ? -1 : x > y;
}

/* Everything in mailbox, by peek, into *out (sorted by id). */
static int
load_all(mbox *m, const char *mailbox, Stored **out, size_t *nout)
{
	static mbox_msg *msgs[PEEK_MAX];
	Stored *all = NULL;
	size_t n_all = 0, cap = 0, n, i;
	uint64_t from = 0;
	int r;

	for (;;) {
		r = mbox_peek(m, mailbox, PEEK_MAX, from, 0, msgs, &n);
		if (r < 0) {
			fprintf(stderr, "poster: peek %s: %s (%s)\n", mailbox,
				mbox_strerror(r), mbox_last_error(m));
			free(all);
			return -1;
		}
		if (n == 0)
			break;
		for (i = 0; i < n; i++) {
			size_t len;
			const void *d = mbox_msg_data(msgs[i], &len);

			if (n_all == cap) {
				cap = cap ? 2 * cap : 1024;
				all = realloc(all, cap * sizeof(*all));
				if (!all) {
					perror("realloc");
					exit(1);
				}
			}
			all[n_all].id = mbox_msg_id(msgs[i]);
			all[n_all].len = len;
			all[n_all].hash = fnv1a(d, len);
			if (all[n_all].id < from) {
				fprintf(stderr,
					"poster: peek from %" PRIu64
					" returned id %" PRIu64 "\n",
					from, all[n_all].id);
				exit(1);
			}
			from = all[n_all].id + 1;
			n_all++;
			mbox_msg_free(msgs[i]);
		}
	}
	qsort(all, n_all, sizeof(*all), stored_cmp);
	*out = all;
	*nout = n_all;
	return 0;
}

static int
do_verify(const char *sock, const char *mailbox)
{
	mbox *m = NULL;
	Stored *all = NULL;
	size_t n_all = 0, checked = 0, bad = 0, line = 0;
	uint64_t seq, id, hash, prev_seq = 0, prev_id = 0;
	size_t len;
	int r;

	if (driver_connect(&m, "poster", sock) < 0)
		return 1;
	if (load_all(m, mailbox, &all, &n_all) < 0) {
		mbox_close(m);
		return 1;
	}
	for (;;) {
		Stored key, *s;

		r = scanf("%" SCNu64 " %" SCNu64 " %zu %" SCNx64, &seq, &id,
			  &len, &hash);
		if (r == EOF)
			break;
		line++;
		if (r != 4) {
			fprintf(stderr, "poster: bad input line %zu\n", line);
			bad++;
			break;
		}
		if (seq != prev_seq + 1 || (prev_id && id <= prev_id)) {
			fprintf(stderr,
				"poster: seq %" PRIu64 " id %" PRIu64
				" out of order after seq %" PRIu64
				" id %" PRIu64 "\n",
				seq, id, prev_seq, prev_id);
			bad++;
		}
		prev_seq = seq;
		prev_id = id;
		key.id = id;
		s = bsearch(&key, all, n_all, sizeof(*all), stored_cmp);
		if (!s) {
			fprintf(stderr,
				"poster: %s: confirmed seq %" PRIu64
				" id %" PRIu64 " is MISSING\n",
				mailbox, seq, id);
			bad++;
		} else if (s->len != len || s->hash != hash) {
			fprintf(stderr,
				"poster: %s: seq %" PRIu64 " id %" PRIu64
				": stored %zu bytes hash %016" PRIx64
				", confirmed %zu bytes hash %016" PRIx64 "\n",
				mailbox, seq, id, s->len, s->hash, len, hash);
			bad++;
		}
		checked++;
	}
	printf("%s: %zu confirmed posts checked, %zu stored, %zu bad\n",
	       mailbox, checked, n_all, bad);
	free(all);
	mbox_close(m);
	return bad ? 1 : 0;
}

static void
usage(void)
{
	fprintf(stderr,
		"usage: poster-driver post SOCKET MAILBOX SEED COUNT\n"
		"       poster-driver emit SEED SEQ\n"
		"       poster-driver size SOCKET MAILBOX BYTES\n"
		"       poster-driver verify SOCKET MAILBOX < CONFIRMED\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	alarm(600); /* never outlive a forgotten test */
	if (argc == 6 && strcmp(argv[1], "post") == 0)
		return do_post(argv[2], argv[3], strtoull(argv[4], NULL, 10),
			       strtoull(argv[5], NULL, 10));
	if (argc == 4 && strcmp(argv[1], "emit") == 0)
		return do_emit(strtoull(argv[2], NULL, 10),
			       strtoull(argv[3], NULL, 10));
	if (argc == 5 && strcmp(argv[1], "size") == 0)
		return do_size(argv[2], argv[3], strtoull(argv[4], NULL, 10));
	if (argc == 4 && strcmp(argv[1], "verify") == 0)
		return do_verify(argv[2], argv[3]);
	usage();
	return 2;
}
