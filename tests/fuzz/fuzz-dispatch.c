/*
 * fuzz-dispatch.c - libFuzzer target of the request dispatcher: a real
 * Broker on a real store in a temporary directory, driven through its real
 * listener, read path, dispatch, group commit and delivery, by two clients
 * on SOCK_SEQPACKET sockets.
 *
 * Each input gets a fresh broker and store, so an input does the same
 * thing every time it runs (message ids start at 1, so an ACK of id 1 is
 * meaningful) and nothing grows across runs. Client A is whoever runs the
 * fuzzer (root or the broker's own uid: an admin); client B is made to
 * look like uid/gid 65534 with no groups, so permission checks and denials
 * are reached too. Both say HELLO first; then the input is a sequence of
 * records:
 *
 *   u8  ctl     bit 0: client B (else A)
 *               bit 5: let 2 ms of real time pass first (at most
 *                      MAX_WAITS times per input), so that short leases,
 *                      delays, ttls and RECV waits run out
 *               bit 6: run the loop and read the replies after this record
 *                      (else the next records join the same batch)
 *               bit 7: raw: the payload is sent as one datagram as it is
 *                      (framing errors, continuations, forged headers)
 *   u8  opcode  (not raw) the request's opcode
 *   u16 len     little-endian, then len payload bytes: the body (or the
 *               raw datagram), cut short by the end of the input
 *
 * Not raw, the target writes the header (flags 0, version 1, a fresh id,
 * body_len = len) and splits frames over 65536 bytes into continuation
 * datagrams as a client does. Replies and pushes are read and dropped,
 * except that the TOKEN of a successful HANDOFF reply is remembered: from
 * then on, TOKEN_PLACEHOLDER in a body is replaced by it, so that CLAIM of
 * a real hand-off is reachable although tokens are random.
 * The limits are small so that inputs can reach them.
 *
 * Environment: FUZZ_LOG=debug (or info, ...) shows the broker's log.
 */
#include "config.h"

#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/log.h"
#include "tests/fuzz/fuzz.h"

#define CTL_CLIENT_B 0x01u
#define CTL_WAIT     0x20u
#define CTL_PUMP     0x40u
#define CTL_RAW	     0x80u

/* Loop iterations per pump: reading a request and flushing its reply
 * take one each; more catch work a flush queued (the "again" timer). */
#define PUMP_ROUNDS 4
/* Retries of a send the socket refused for lack of room. */
#define SEND_RETRIES 64
/* Datagrams read per drain of a client: bounded, the broker is finite. */
#define DRAIN_MAX 4096
#define NOBODY	  65534u
/* Real-time waits per input (each 2 ms): bounded, fuzzing stays fast. */
#define MAX_WAITS	  4
#define TOKEN_PLACEHOLDER "0123456789abcdef0123456789abcdef"
_Static_assert(sizeof(TOKEN_PLACEHOLDER) - 1 == MBOX_TOKEN_HEX,
	       "the placeholder is a token's size");

/* The one directory of this process, made by LLVMFuzzerInitialize. */
static char
	tmp_dir[96]; /* TMPDIR (at most 64) + "/mbox-fuzz-dispatch.XXXXXX" */

typedef struct Client {
	int fd; /* -1 once the broker hung up */
	uint32_t next_id;
	char name;    /* 'A' or 'B', for FUZZ_LOG=debug */
	bool verbose; /* print what the broker answers */
} Client;

typedef struct Run {
	struct ev_loop *loop;
	Log log;
	Broker *broker;
	char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char db_path[300];
	Client cl[2];
	uint8_t *frame; /* scratch, MBOX_PROTO_HEADER_SIZE + 65535 */
	char token[MBOX_TOKEN_HEX]; /* of the last HANDOFF, if has_token */
	bool has_token;
	unsigned waits; /* CTL_WAIT records honoured so far */
} Run;

static void
fatal(const char *what)
{
	fprintf(stderr, "fuzz-dispatch: %s: %s\n", what, strerror(errno));
	abort();
}

/* A successful HANDOFF reply (one datagram: it is small): keep its token. */
static void
note_token(Run *r, const ProtoHeader *h, const uint8_t *dgram, size_t n)
{
	ProtoFields f;

	if (h->opcode != MBOX_OP_HANDOFF || h->flags != MBOX_FLAG_REPLY ||
	    h->status != MBOX_S_OK ||
	    n != MBOX_PROTO_HEADER_SIZE + (size_t)h->body_len ||
	    proto_fields_parse(&f, dgram + MBOX_PROTO_HEADER_SIZE, h->body_len,
			       NULL, NULL) < 0 ||
	    f.first[MBOX_TAG_TOKEN].len != MBOX_TOKEN_HEX)
		return;
	memcpy(r->token, f.first[MBOX_TAG_TOKEN].ptr, MBOX_TOKEN_HEX);
	r->has_token = true;
}

/* Read and drop whatever the broker sent to c. */
static void
client_drain(Run *r, Client *c)
{
	uint8_t sink[MBOX_PROTO_DGRAM_MAX];

	for (int i = 0; i < DRAIN_MAX && c->fd >= 0; i++) {
		ssize_t n = recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT);
		ProtoHeader h;

		if (n > 0 && proto_header_decode(sink, (size_t)n, &h) == 0) {
			note_token(r, &h, sink, (size_t)n);
			if (c->verbose)
				fprintf(stderr,
					"%c <- %s id %u status %u (%s), %zd "
					"bytes\n",
					c->name, proto_op_name(h.opcode), h.id,
					h.status, proto_status_text(h.status),
					n);
		}
		if (n > 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		/* End of stream or a broken socket: the broker closed. */
		close(c->fd);
		c->fd = -1;
	}
}

static void
run_pump(Run *r)
{
	for (int i = 0; i < PUMP_ROUNDS; i++) {
		ev_run(r->loop, EVRUN_NOWAIT);
		client_drain(r, &r->cl[0]);
		client_drain(r, &r->cl[1]);
	}
}

/* Send one datagram; when the socket is full, let the broker read. */
static void
client_send(Run *r, Client *c, const uint8_t *p, size_t n)
{
	for (int i = 0; i < SEND_RETRIES && c->fd >= 0; i++) {
		if (send(c->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
			return;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			close(c->fd);
			c->fd = -1;
			return;
		}
		run_pump(r);
	}
}

/* Replace each TOKEN_PLACEHOLDER in p[0..len) by the last real token. */
static void
put_token(const Run *r, uint8_t *p, size_t len)
{
	const size_t k = sizeof(TOKEN_PLACEHOLDER) - 1;
	uint8_t *end = p + len, *hit;

	while ((size_t)(end - p) >= k &&
	       (hit = memmem(p, (size_t)(end - p), TOKEN_PLACEHOLDER, k))) {
		memcpy(hit, r->token, k);
		p = hit + k;
	}
}

/* A request frame with a fresh id, split into datagrams like a client. */
static void
client_request(Run *r, Client *c, uint8_t opcode, const uint8_t *body,
	       size_t len)
{
	ProtoHeader h = {.opcode = opcode, .body_len = (uint32_t)len};
	size_t total = MBOX_PROTO_HEADER_SIZE + len, off = 0;

	if (++c->next_id == 0) /* 0 is not a request id */
		c->next_id = 1;
	h.id = c->next_id;

	proto_header_encode(r->frame, &h);
	if (len)
		memcpy(r->frame + MBOX_PROTO_HEADER_SIZE, body, len);
	if (r->has_token)
		put_token(r, r->frame + MBOX_PROTO_HEADER_SIZE, len);
	while (off < total) {
		size_t n = proto_dgram_next(total, off);

		client_send(r, c, r->frame + off, n);
		off += n;
	}
}

static void
client_hello(Run *r, Client *c)
{
	uint8_t body[2 * (MBOX_PROTO_FIELD_HDR + 8)];
	ProtoWriter w;
	const uint8_t *frame;
	size_t len;

	proto_writer_init(&w);
	proto_writer_begin(&w, MBOX_OP_HELLO, 0, 0, 0);
	proto_put_u64(&w, MBOX_TAG_VERSION_MIN, MBOX_PROTO_VERSION);
	proto_put_u64(&w, MBOX_TAG_VERSION_MAX, MBOX_PROTO_VERSION);
	if (proto_writer_finish(&w, &frame, &len) < 0 ||
	    len != MBOX_PROTO_HEADER_SIZE + sizeof(body))
		abort();
	memcpy(body, frame + MBOX_PROTO_HEADER_SIZE, sizeof(body));
	proto_writer_release(&w);
	client_request(r, c, MBOX_OP_HELLO, body, sizeof(body));
}

/* Connect a client through the broker's listener; returns its Conn. */
static Conn *
client_connect(Run *r, Client *c)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	Conn *before = r->broker->conns;

	memcpy(sa.sun_path, r->sock_path, strlen(r->sock_path) + 1);
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		fatal("socket");
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		fatal("connect");
	c->next_id = 0;
	for (int i = 0; i < PUMP_ROUNDS && r->broker->conns == before; i++)
		ev_run(r->loop, EVRUN_NOWAIT);
	if (r->broker->conns == before) {
		fprintf(stderr, "fuzz-dispatch: the broker did not accept\n");
		abort();
	}
	return r->broker->conns; /* accepted connections go to the front */
}

static int
listen_on(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	memcpy(sa.sun_path, path, strlen(path) + 1);
	unlink(path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fatal("socket");
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, 8) < 0)
		fatal("bind/listen");
	return fd;
}

static void
remove_store(const Run *r)
{
	static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
	char path[sizeof(r->db_path) + 16];

	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		snprintf(path, sizeof(path), "%s%s", r->db_path, suffixes[i]);
		unlink(path);
	}
}

static void
run_start(Run *r)
{
	const char *lvl = getenv("FUZZ_LOG");
	BrokerConfig cfg;
	Conn *b;
	int fd;

	memset(r, 0, sizeof(*r));
	r->log.level = lvl && *lvl ? log_level_parse(lvl) : -1;
	snprintf(r->sock_path, sizeof(r->sock_path), "%s/s", tmp_dir);
	snprintf(r->db_path, sizeof(r->db_path), "%s/fuzz.db", tmp_dir);
	remove_store(r);
	r->frame = malloc(MBOX_PROTO_HEADER_SIZE + UINT16_MAX);
	r->loop = ev_loop_new(EVFLAG_AUTO);
	if (!r->frame || !r->loop)
		fatal("setup");
	/* main.c's defaults where they do not matter, small limits where
	 * an input should be able to reach them. */
	cfg = (BrokerConfig){
		.socket_path = r->sock_path,
		.db_path = r->db_path,
		.sync = STORE_SYNC_OFF,
		.socket_mode = 0666,
		.max_msg_size = 4096,
		.autocreate = true,
		.max_connections = 8,
		.max_in_flight = 32,
		.max_out_bytes = 256u * 1024,
		.dedup_window_ms = MBOX_DEFAULT_DEDUP_MS,
		.max_header_bytes = 1024,
		.max_mailboxes = 8,
		.max_mailbox_msgs = 64,
		.max_mailbox_bytes = 65536,
		.max_connections_per_uid = 4,
		.max_unacked = 16,
		.max_subscriptions = 4,
		.max_mailboxes_per_uid = 4,
		.max_store_bytes = 0,
	};
	fd = listen_on(r->sock_path);
	if (broker_new(&r->broker, r->loop, &r->log, &cfg, fd, true) < 0) {
		fprintf(stderr, "fuzz-dispatch: cannot start the broker\n");
		abort();
	}
	for (int i = 0; i < 2; i++) {
		r->cl[i].name = (char)('A' + i);
		r->cl[i].verbose = r->log.level >= LOG_DEBUG;
	}
	client_connect(r, &r->cl[0]);
	b = client_connect(r, &r->cl[1]);
	/* B is someone else: no admin, no group shared with anything. */
	b->uid = NOBODY;
	b->gid = NOBODY;
	b->n_groups = 0;
	b->peer.uid = NOBODY;
	b->peer.gid = NOBODY;
	b->peer.n_groups = 0;
	client_hello(r, &r->cl[0]);
	client_hello(r, &r->cl[1]);
	run_pump(r);
}

static void
run_finish(Run *r)
{
	/* Hang up first, so that closing connections give leases back
	 * through the ordinary path; then stop as on SIGTERM. */
	for (int i = 0; i < 2; i++) {
		if (r->cl[i].fd >= 0)
			close(r->cl[i].fd);
		r->cl[i].fd = -1;
	}
	run_pump(r);
	broker_stop(r->broker);
	r->broker = broker_free(r->broker);
	ev_loop_destroy(r->loop);
	free(r->frame);
	remove_store(r);
}

static void
cleanup_dir(void)
{
	char path[sizeof(tmp_dir) + 16];

	if (!tmp_dir[0])
		return;
	snprintf(path, sizeof(path), "%s/s", tmp_dir);
	unlink(path);
	rmdir(tmp_dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *t = getenv("TMPDIR");

	/* The store is created and removed for every input: on tmpfs that
	 * costs no disk I/O (SQLite still syncs some of it). The socket
	 * path must fit in sun_path: a deep TMPDIR is not used. */
	if (!t || !*t || strlen(t) > 64)
		t = access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(tmp_dir, sizeof(tmp_dir), "%s/mbox-fuzz-dispatch.XXXXXX", t);
	if (!mkdtemp(tmp_dir))
		fatal("mkdtemp");
	atexit(cleanup_dir);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Run run;
	size_t off = 0;

	run_start(&run);
	while (off + 4 <= size) {
		uint8_t ctl = data[off], opcode = data[off + 1];
		size_t len = (size_t)data[off + 2] | (size_t)data[off + 3] << 8;
		Client *c = &run.cl[ctl & CTL_CLIENT_B ? 1 : 0];

		off += 4;
		if (len > size - off)
			len = size - off;
		if ((ctl & CTL_WAIT) && run.waits < MAX_WAITS) {
			const struct timespec ts = {0, 2 * 1000 * 1000};

			run.waits++;
			nanosleep(&ts, NULL);
			run_pump(&run);
		}
		if (ctl & CTL_RAW)
			client_send(&run, c, data + off, len);
		else
			client_request(&run, c, opcode, data + off, len);
		off += len;
		if (ctl & CTL_PUMP)
			run_pump(&run);
	}
	run_finish(&run);
	return 0;
}
