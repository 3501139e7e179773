/*
 * peer-bench.c - the workloads of mbox-bench against the brokers a user
 * would pick instead of mboxd: beanstalkd, Redis Streams and NATS
 * JetStream, spoken to over plain sockets (no client libraries), so that
 * contrib/bench/compare.sh can put every figure in one table.
 *
 * Workloads (--workload picks some; pipeline,scale,latency by default):
 *   pipeline  P producers (own connection each) keep D puts in flight
 *             (send D, read D replies) while C consumers take what is
 *             there, up to --batch B (default 64), and ack/delete each
 *             batch, all at once; msgs/s from
 *             the first put to the last confirmed ack/delete.
 *   scale     for each producer count of --scale, that many producers
 *             with one put in flight each; msgs/s of the puts alone, then
 *             the queue is drained, untimed.
 *   latency   a consumer waits (reserve / XREADGROUP BLOCK / pull of 1);
 *             a producer puts one message once the previous one was
 *             received and acked; p50 and p99 of put -> received.
 *   fill      P producers put --messages without consuming (the caller
 *             reads the server's RSS); drained, untimed, with --drain.
 *
 * What "put", "take" and "ack" are for each peer:
 *   beanstalkd  put / reserve-with-timeout, one job at a time (no batch
 *               in the protocol) / delete, pipelined per batch.
 *   redis       XADD (no MAXLEN: nothing trimmed) / XREADGROUP COUNT B
 *               BLOCK / XACK then XDEL of the batch (a queue forgets what
 *               was acked, as beanstalkd's delete and mboxd's ack do).
 *   nats        PUB with a reply inbox, answered by JetStream's PubAck /
 *               a durable pull consumer's MSG.NEXT {"batch":B,
 *               "no_wait":true}, and when nothing was there one pull of 1
 *               that waits ("expires") followed by a no_wait pull of the
 *               rest / an empty PUB to each message's ack subject (no
 *               reply: JetStream does not confirm plain acks), then
 *               PING/PONG so the last acks were read by the server when
 *               the clock stops. The stream has work-queue retention:
 *               acked messages go.
 *
 * Durability is whatever the server was started with; compare.sh starts
 * them and says which settings it used. Every wait is bounded: a read
 * that gets nothing for STALL_MS fails, and each workload fails after
 * --timeout seconds.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX    1024u  /* most messages a consumer takes at once */
#define WARMUP	     20u    /* latency round trips not measured */
#define STALL_MS     10000  /* a read that gets nothing this long fails */
#define WAIT_MS	     500u   /* a consumer's blocking take, then it looks */
#define LIST_MAX     8u	    /* entries of --scale */
#define WHAT_MAX     512    /* an error description */
#define NAME_MAX_LEN 96	    /* queue, subject and inbox names */
#define SIZE_MAX_ARG 65535u /* beanstalkd's default job size limit */

enum {
	WL_PIPELINE = 0x1,
	WL_SCALE = 0x2,
	WL_LATENCY = 0x4,
	WL_FILL = 0x8,
};

typedef struct List {
	unsigned v[LIST_MAX];
	unsigned n;
} List;

typedef struct Options {
	const char *peer_name;
	const char *address; /* unix:PATH or HOST:PORT */
	size_t size;	     /* payload bytes, 1..SIZE_MAX_ARG */
	size_t messages;     /* per pipeline, scale run and fill */
	unsigned producers;  /* of pipeline and fill */
	unsigned consumers;  /* of pipeline and the drains */
	unsigned depth;	     /* puts in flight per producer, pipeline/fill */
	unsigned batch;	     /* most messages a consumer takes at once */
	List scale;	     /* producer counts of the scale runs */
	size_t count;	     /* latency round trips measured */
	unsigned workloads;  /* WL_* bits */
	unsigned timeout_s;  /* per workload */
	bool drain;	     /* drain after fill */
	bool json;
} Options;

/* One connection to the peer, used by one thread. Reads go through an
 * input buffer; writes are gathered in an output buffer and sent by
 * conn_flush, which is what makes pipelining one write. */
typedef struct Conn {
	int fd;
	const char *peer; /* for messages: "redis" */
	const char *addr; /* for messages: "unix:/x" */
	unsigned id;	  /* distinct per connection of a run */
	char *in;
	size_t in_cap, in_start, in_end;
	char *out;
	size_t out_len, out_cap;
	unsigned long seq;	  /* NATS: requests sent, for inboxes */
	char inbox[NAME_MAX_LEN]; /* NATS: this connection's inbox prefix */
	char what[WHAT_MAX];	  /* the first error */
} Conn;

/* A peer's operations. Each returns 0 or a negative errno with c->what
 * set. q is the queue (tube, stream) of the workload. */
typedef struct Peer {
	const char *name;
	const char *server; /* its program, for "is it running?" */
	const char *ack;    /* how taken messages are disposed of */
	int (*hello)(Conn *c);
	int (*setup)(Conn *c, const char *q);
	int (*producer_init)(Conn *c, const char *q);
	/* put n messages of size bytes, pipelined, and read n replies */
	int (*put)(Conn *c, const char *q, const char *payload, size_t size,
		   unsigned n);
	int (*consumer_init)(Conn *c, const char *q);
	/* take up to max messages, waiting up to wait_ms for the first, and
	 * ack or delete them; *got says how many, *t_got when the first
	 * arrived (before its ack) */
	int (*take)(Conn *c, const char *q, unsigned max, unsigned wait_ms,
		    size_t *got, double *t_got);
	/* a consumer is done: its acks have reached the server */
	int (*finish)(Conn *c);
} Peer;

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- Connections ---- */

__attribute__((format(printf, 3, 4))) static int
conn_fail(Conn *c, int err, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (c->what[0])
		return err;
	n = snprintf(c->what, sizeof(c->what), "%s at %s: ", c->peer, c->addr);
	if (n < 0 || (size_t)n >= sizeof(c->what))
		return err;
	va_start(ap, fmt);
	vsnprintf(c->what + n, sizeof(c->what) - (size_t)n, fmt, ap);
	va_end(ap);
	return err;
}

static int
conn_connect_unix(Conn *c, const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	if (strlen(path) >= sizeof(sun.sun_path))
		return conn_fail(c, -ENAMETOOLONG, "socket path too long");
	strcpy(sun.sun_path, path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return conn_fail(c, -errno, "socket: %s", strerror(errno));
	if (connect(c->fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		return -errno;
	return 0;
}

static int
conn_connect_tcp(Conn *c, const char *addr)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai = NULL;
	int one = 1, rc, err;

	if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof(host))
		return conn_fail(c, -EINVAL,
				 "address is neither unix:PATH nor HOST:PORT");
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	rc = getaddrinfo(host, colon + 1, &hints, &ai);
	if (rc)
		return conn_fail(c, -EINVAL, "%s", gai_strerror(rc));
	c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		       ai->ai_protocol);
	if (c->fd < 0) {
		err = -errno;
		freeaddrinfo(ai);
		return conn_fail(c, err, "socket: %s", strerror(-err));
	}
	/* Small requests and replies: Nagle would add its delay to each. */
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	err = connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0 ? -errno : 0;
	freeaddrinfo(ai);
	return err;
}

static void
conn_close(Conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->in);
	free(c->out);
	c->in = c->out = NULL;
}

static int
conn_open(Conn *c, const Peer *p, const char *addr, unsigned id)
{
	int err;

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->peer = p->name;
	c->addr = addr;
	c->id = id;
	c->in_cap = 1u << 16;
	c->out_cap = 1u << 16;
	c->in = malloc(c->in_cap);
	c->out = malloc(c->out_cap);
	if (!c->in || !c->out)
		return conn_fail(c, -ENOMEM, "out of memory");
	if (strncmp(addr, "unix:", 5) == 0)
		err = conn_connect_unix(c, addr + 5);
	else
		err = conn_connect_tcp(c, addr);
	if (err < 0 && !c->what[0])
		return conn_fail(c, err, "%s; is %s running?", strerror(-err),
				 p->server);
	if (err < 0)
		return err;
	return p->hello ? p->hello(c) : 0;
}

static int
conn_reserve(Conn *c, size_t more)
{
	char *n;
	size_t cap = c->out_cap;

	if (c->out_len + more <= cap)
		return 0;
	while (cap < c->out_len + more)
		cap *= 2;
	n = realloc(c->out, cap);
	if (!n)
		return conn_fail(c, -ENOMEM, "out of memory");
	c->out = n;
	c->out_cap = cap;
	return 0;
}

static int
conn_append(Conn *c, const void *data, size_t len)
{
	int err = conn_reserve(c, len);

	if (err < 0)
		return err;
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	return 0;
}

__attribute__((format(printf, 2, 3))) static int
conn_printf(Conn *c, const char *fmt, ...)
{
	va_list ap;
	int n, err;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return conn_fail(c, -EINVAL, "bad format");
	err = conn_reserve(c, (size_t)n + 1);
	if (err < 0)
		return err;
	va_start(ap, fmt);
	vsnprintf(c->out + c->out_len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	c->out_len += (size_t)n;
	return 0;
}

/* conn_wait: wait until fd is ready for events, at most STALL_MS. */
static int
conn_wait(Conn *c, short events, const char *doing)
{
	struct pollfd pfd = {.fd = c->fd, .events = events};
	double end = now_s() + STALL_MS / 1000.0;
	int rc;

	for (;;) {
		int left = (int)((end - now_s()) * 1000.0);

		if (left < 0)
			left = 0;
		rc = poll(&pfd, 1, left);
		if (rc > 0)
			return 0;
		if (rc < 0 && errno != EINTR)
			return conn_fail(c, -errno, "poll: %s",
					 strerror(errno));
		if (rc == 0)
			return conn_fail(c, -ETIMEDOUT,
					 "no progress %s for %d s", doing,
					 STALL_MS / 1000);
	}
}

static int
conn_flush(Conn *c)
{
	size_t off = 0;
	int err;

	while (off < c->out_len) {
		ssize_t n = send(c->fd, c->out + off, c->out_len - off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			off += (size_t)n;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			err = conn_wait(c, POLLOUT, "sending");
			if (err < 0)
				return err;
		} else {
			return conn_fail(c, -errno, "send: %s",
					 strerror(errno));
		}
	}
	c->out_len = 0;
	return 0;
}

/* conn_fill: read more input, making room first (moving or growing). */
static int
conn_fill(Conn *c)
{
	ssize_t n;
	int err;

	if (c->in_start > 0) {
		memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
		c->in_end -= c->in_start;
		c->in_start = 0;
	}
	if (c->in_end == c->in_cap) {
		char *b = realloc(c->in, c->in_cap * 2);

		if (!b)
			return conn_fail(c, -ENOMEM, "out of memory");
		c->in = b;
		c->in_cap *= 2;
	}
	for (;;) {
		n = recv(c->fd, c->in + c->in_end, c->in_cap - c->in_end,
			 MSG_DONTWAIT);
		if (n > 0) {
			c->in_end += (size_t)n;
			return 0;
		}
		if (n == 0)
			return conn_fail(c, -ECONNRESET,
					 "connection closed by the server");
		if (errno != EAGAIN && errno != EINTR)
			return conn_fail(c, -errno, "recv: %s",
					 strerror(errno));
		err = conn_wait(c, POLLIN, "waiting for a reply");
		if (err < 0)
			return err;
	}
}

/* conn_line: the next line, without its CRLF, NUL-terminated in place;
 * valid until the next read on c. */
static int
conn_line(Conn *c, char **line, size_t *len)
{
	size_t scanned = c->in_start;
	int err;

	for (;;) {
		char *p = c->in + scanned, *end = c->in + c->in_end;
		char *nl = memchr(p, '\n', (size_t)(end - p));

		if (nl && nl > c->in + c->in_start && nl[-1] == '\r') {
			*line = c->in + c->in_start;
			*len = (size_t)(nl - 1 - *line);
			nl[-1] = '\0';
			c->in_start = (size_t)(nl + 1 - c->in);
			return 0;
		}
		if (nl) { /* a bare LF inside the line */
			scanned = (size_t)(nl + 1 - c->in);
			continue;
		}
		if (c->in_end - c->in_start > (64u << 20))
			return conn_fail(c, -EPROTO, "reply line too long");
		scanned = c->in_end - c->in_start;
		err = conn_fill(c);
		if (err < 0)
			return err;
		scanned += c->in_start; /* conn_fill moved the start to 0 */
	}
}

/* conn_bytes: the next n bytes followed by CRLF; valid until the next
 * read on c. */
static int
conn_bytes(Conn *c, size_t n, char **data)
{
	int err;

	while (c->in_end - c->in_start < n + 2) {
		err = conn_fill(c);
		if (err < 0)
			return err;
	}
	*data = c->in + c->in_start;
	if (memcmp(*data + n, "\r\n", 2) != 0)
		return conn_fail(c, -EPROTO, "data not followed by CRLF");
	c->in_start += n + 2;
	return 0;
}

/* ---- beanstalkd: text protocol, doc/protocol.txt ---- */

/* bs_expect: read a line that must start with want. */
static int
bs_expect(Conn *c, const char *want, const char *doing)
{
	char *line;
	size_t len;
	int err = conn_line(c, &line, &len);

	if (err < 0)
		return err;
	if (strncmp(line, want, strlen(want)) != 0)
		return conn_fail(c, -EPROTO, "%s: expected %s, got \"%.100s\"",
				 doing, want, line);
	return 0;
}

static int
bs_command(Conn *c, const char *cmd, const char *q, const char *want)
{
	int err = conn_printf(c, "%s %s\r\n", cmd, q);

	if (!err)
		err = conn_flush(c);
	if (!err)
		err = bs_expect(c, want, cmd);
	return err;
}

static int
bs_producer_init(Conn *c, const char *q)
{
	return bs_command(c, "use", q, "USING ");
}

static int
bs_put(Conn *c, const char *q, const char *payload, size_t size, unsigned n)
{
	unsigned i;
	int err = 0;

	(void)q;
	for (i = 0; !err && i < n; i++) {
		/* priority 0, no delay, 120 s to run */
		err = conn_printf(c, "put 0 0 120 %zu\r\n", size);
		if (!err)
			err = conn_append(c, payload, size);
		if (!err)
			err = conn_append(c, "\r\n", 2);
	}
	if (!err)
		err = conn_flush(c);
	for (i = 0; !err && i < n; i++)
		err = bs_expect(c, "INSERTED ", "put");
	return err;
}

static int
bs_consumer_init(Conn *c, const char *q)
{
	int err = bs_command(c, "watch", q, "WATCHING ");

	if (!err)
		err = bs_command(c, "ignore", "default", "WATCHING 1");
	return err;
}

/* bs_reserve: one job, or *id = 0 when none came within timeout_s. */
static int
bs_reserve(Conn *c, unsigned timeout_s, unsigned long long *id)
{
	char *line, *data;
	size_t len, bytes;
	int err;

	*id = 0;
	err = conn_printf(c, "reserve-with-timeout %u\r\n", timeout_s);
	if (!err)
		err = conn_flush(c);
	if (!err)
		err = conn_line(c, &line, &len);
	if (err < 0)
		return err;
	if (strcmp(line, "TIMED_OUT") == 0 ||
	    strcmp(line, "DEADLINE_SOON") == 0)
		return 0;
	if (sscanf(line, "RESERVED %llu %zu", id, &bytes) != 2)
		return conn_fail(c, -EPROTO, "reserve: got \"%.100s\"", line);
	return conn_bytes(c, bytes, &data);
}

/* beanstalkd has no batch: reserve one job at a time (the first waits,
 * the others do not), then delete them in one pipelined write. */
static int
bs_take(Conn *c, const char *q, unsigned max, unsigned wait_ms, size_t *got,
	double *t_got)
{
	unsigned long long ids[BATCH_MAX], id;
	unsigned n = 0, i;
	int err = 0;

	(void)q;
	if (max > BATCH_MAX)
		max = BATCH_MAX;
	while (n < max) {
		err = bs_reserve(c, n ? 0 : (wait_ms + 999) / 1000, &id);
		if (err < 0 || id == 0)
			break;
		if (n == 0)
			*t_got = now_s();
		ids[n++] = id;
	}
	for (i = 0; !err && i < n; i++)
		err = conn_printf(c, "delete %llu\r\n", ids[i]);
	if (!err && n)
		err = conn_flush(c);
	for (i = 0; !err && i < n; i++)
		err = bs_expect(c, "DELETED", "delete");
	*got = err < 0 ? 0 : n;
	return err;
}

static const Peer peer_beanstalkd = {
	.name = "beanstalkd",
	.server = "beanstalkd",
	.ack = "delete (pipelined per batch)",
	.producer_init = bs_producer_init,
	.put = bs_put,
	.consumer_init = bs_consumer_init,
	.take = bs_take,
};

/* ---- Redis: RESP2 ---- */

/* One parsed reply. Bulk and simple strings and errors have str/len,
 * integers n, arrays elems[n]; nil is type '_'. */
typedef struct Resp {
	char type;
	long long n;
	char *str;
	size_t len;
	struct Resp *elems;
} Resp;

static void
resp_clear(Resp *r)
{
	long long i;

	if (r->type == '*')
		for (i = 0; i < r->n; i++)
			resp_clear(&r->elems[i]);
	free(r->elems);
	free(r->str);
	memset(r, 0, sizeof(*r));
}

static int
resp_read_depth(Conn *c, Resp *r, unsigned depth)
{
	char *line, *data;
	size_t len;
	long long i;
	int err;

	memset(r, 0, sizeof(*r));
	if (depth > 8)
		return conn_fail(c, -EPROTO, "reply nested too deep");
	err = conn_line(c, &line, &len);
	if (err < 0)
		return err;
	if (len == 0)
		return conn_fail(c, -EPROTO, "empty reply line");
	r->type = line[0];
	switch (line[0]) {
	case '+':
	case '-':
		r->str = strndup(line + 1, len - 1);
		r->len = len - 1;
		return r->str ? 0 : conn_fail(c, -ENOMEM, "out of memory");
	case ':':
		r->n = strtoll(line + 1, NULL, 10);
		return 0;
	case '$':
		r->n = strtoll(line + 1, NULL, 10);
		if (r->n < 0) {
			r->type = '_';
			return 0;
		}
		err = conn_bytes(c, (size_t)r->n, &data);
		if (err < 0)
			return err;
		r->len = (size_t)r->n;
		r->str = strndup(data, r->len);
		return r->str ? 0 : conn_fail(c, -ENOMEM, "out of memory");
	case '*':
		r->n = strtoll(line + 1, NULL, 10);
		if (r->n < 0) {
			r->type = '_';
			r->n = 0;
			return 0;
		}
		if (r->n > 1000000)
			return conn_fail(c, -EPROTO, "array of %lld", r->n);
		r->elems = calloc((size_t)r->n + 1, sizeof(*r->elems));
		if (!r->elems)
			return conn_fail(c, -ENOMEM, "out of memory");
		for (i = 0; i < r->n; i++) {
			err = resp_read_depth(c, &r->elems[i], depth + 1);
			if (err < 0) {
				r->n = i + 1;
				return err;
			}
		}
		return 0;
	default:
		return conn_fail(c, -EPROTO, "unknown reply \"%.100s\"", line);
	}
}

/* redis_reply: read one reply; an error reply is a failure of doing. */
static int
redis_reply(Conn *c, Resp *r, const char *doing)
{
	int err = resp_read_depth(c, r, 0);

	if (err < 0) {
		resp_clear(r);
		return err;
	}
	if (r->type == '-') {
		err = conn_fail(c, -EPROTO, "%s: %s", doing, r->str);
		resp_clear(r);
	}
	return err;
}

/* redis_cmd: append one command; argv entries with lens[i] == 0 are
 * NUL-terminated strings. */
static int
redis_cmd(Conn *c, unsigned argc, const char *const *argv, const size_t *lens)
{
	unsigned i;
	int err = conn_printf(c, "*%u\r\n", argc);

	for (i = 0; !err && i < argc; i++) {
		size_t len = lens && lens[i] ? lens[i] : strlen(argv[i]);

		err = conn_printf(c, "$%zu\r\n", len);
		if (!err)
			err = conn_append(c, argv[i], len);
		if (!err)
			err = conn_append(c, "\r\n", 2);
	}
	return err;
}

static int
redis_simple(Conn *c, unsigned argc, const char *const *argv, const char *doing)
{
	Resp r;
	int err = redis_cmd(c, argc, argv, NULL);

	if (!err)
		err = conn_flush(c);
	if (!err)
		err = redis_reply(c, &r, doing);
	if (!err)
		resp_clear(&r);
	return err;
}

static int
redis_setup(Conn *c, const char *q)
{
	const char *del[] = {"DEL", q};
	const char *create[] = {"XGROUP", "CREATE", q, "g", "0", "MKSTREAM"};
	int err = redis_simple(c, 2, del, "DEL");

	if (!err)
		err = redis_simple(c, 6, create, "XGROUP CREATE");
	return err;
}

static int
redis_put(Conn *c, const char *q, const char *payload, size_t size, unsigned n)
{
	const char *argv[] = {"XADD", q, "*", "d", payload};
	const size_t lens[] = {0, 0, 0, 0, size};
	unsigned i;
	Resp r;
	int err = 0;

	for (i = 0; !err && i < n; i++)
		err = redis_cmd(c, 5, argv, lens);
	if (!err)
		err = conn_flush(c);
	for (i = 0; !err && i < n; i++) {
		err = redis_reply(c, &r, "XADD");
		if (!err && r.type != '$')
			err = conn_fail(c, -EPROTO, "XADD: reply type %c",
					r.type);
		resp_clear(&r);
	}
	return err;
}

/* redis_entries: the entries array of an XREADGROUP reply on one stream:
 * [[stream, [[id, [field, value]], ...]]]. */
static const Resp *
redis_entries(const Resp *r)
{
	if (r->type != '*' || r->n != 1 || r->elems[0].type != '*' ||
	    r->elems[0].n != 2 || r->elems[0].elems[1].type != '*')
		return NULL;
	return &r->elems[0].elems[1];
}

static int
redis_ack(Conn *c, const char *q, const Resp *entries)
{
	const char **argv;
	long long i, n = entries->n;
	Resp r;
	int err = 0;

	argv = calloc((size_t)n + 3, sizeof(*argv));
	if (!argv)
		return conn_fail(c, -ENOMEM, "out of memory");
	for (i = 0; !err && i < n; i++) {
		const Resp *e = &entries->elems[i];

		if (e->type != '*' || e->n < 1 || e->elems[0].type != '$')
			err = conn_fail(c, -EPROTO, "XREADGROUP: bad entry");
		else
			argv[i + 3] = e->elems[0].str;
	}
	argv[0] = "XACK", argv[1] = q, argv[2] = "g";
	if (!err)
		err = redis_cmd(c, (unsigned)n + 3, argv, NULL);
	argv[1] = "XDEL", argv[2] = q;
	if (!err)
		err = redis_cmd(c, (unsigned)n + 2, argv + 1, NULL);
	free(argv);
	if (!err)
		err = conn_flush(c);
	for (i = 0; !err && i < 2; i++) {
		err = redis_reply(c, &r, i ? "XDEL" : "XACK");
		if (!err && (r.type != ':' || r.n != n))
			err = conn_fail(c, -EPROTO,
					"%s: %lld of %lld entries removed",
					i ? "XDEL" : "XACK", r.n, n);
		resp_clear(&r);
	}
	return err;
}

static int
redis_take(Conn *c, const char *q, unsigned max, unsigned wait_ms, size_t *got,
	   double *t_got)
{
	char consumer[32], count[16], block[16];
	const char *argv[] = {"XREADGROUP", "GROUP", "g",     consumer,
			      "COUNT",	    count,   "BLOCK", block,
			      "STREAMS",    q,	     ">"};
	const Resp *entries;
	Resp r;
	int err;

	*got = 0;
	snprintf(consumer, sizeof(consumer), "c%u", c->id);
	snprintf(count, sizeof(count), "%u", max);
	snprintf(block, sizeof(block), "%u", wait_ms);
	err = redis_cmd(c, 11, argv, NULL);
	if (!err)
		err = conn_flush(c);
	if (!err)
		err = redis_reply(c, &r, "XREADGROUP");
	if (err < 0)
		return err;
	if (r.type == '_') {
		resp_clear(&r);
		return 0;
	}
	*t_got = now_s();
	entries = redis_entries(&r);
	if (!entries)
		err = conn_fail(c, -EPROTO, "XREADGROUP: unexpected reply");
	else if (entries->n > 0)
		err = redis_ack(c, q, entries);
	if (!err)
		*got = (size_t)entries->n;
	resp_clear(&r);
	return err;
}

static const Peer peer_redis = {
	.name = "redis",
	.server = "redis-server",
	.ack = "XACK then XDEL of each batch (pipelined)",
	.setup = redis_setup,
	.put = redis_put,
	.take = redis_take,
};

/* ---- NATS and JetStream ---- */

/* One message from the server: MSG or HMSG (status 0 unless the headers
 * carry one, like 408 Request Timeout), or a PONG (pong true). */
typedef struct NatsMsg {
	bool pong;
	char subject[NAME_MAX_LEN * 2];
	char reply[NAME_MAX_LEN * 2];
	int status;
	char *data; /* payload, valid until the next read */
	size_t len;
} NatsMsg;

static int
nats_copy(Conn *c, char *dst, size_t cap, const char *src)
{
	if (strlen(src) >= cap)
		return conn_fail(c, -EPROTO, "subject too long: %.100s", src);
	strcpy(dst, src);
	return 0;
}

/* nats_msg_head: parse "SUBJECT SID [REPLY] [HDRLEN] LEN" (hmsg has the
 * header length). */
static int
nats_msg_head(Conn *c, char *args, bool hmsg, NatsMsg *m, size_t *hlen,
	      size_t *total)
{
	char *tok[5], *save = NULL, *t;
	unsigned n = 0, want = hmsg ? 4 : 3;
	int err;

	for (t = strtok_r(args, " \t", &save); t && n < 5;
	     t = strtok_r(NULL, " \t", &save))
		tok[n++] = t;
	if (n != want && n != want + 1)
		return conn_fail(c, -EPROTO, "bad MSG line");
	err = nats_copy(c, m->subject, sizeof(m->subject), tok[0]);
	if (!err)
		err = nats_copy(c, m->reply, sizeof(m->reply),
				n == want + 1 ? tok[2] : "");
	*total = strtoul(tok[n - 1], NULL, 10);
	*hlen = hmsg ? strtoul(tok[n - 2], NULL, 10) : 0;
	if (!err && *hlen > *total)
		err = conn_fail(c, -EPROTO, "header longer than message");
	return err;
}

/* nats_read: the next MSG, HMSG or PONG; answers the server's PINGs,
 * skips INFO and +OK, fails on -ERR. */
static int
nats_read(Conn *c, NatsMsg *m)
{
	char *line, *data = NULL;
	size_t len, hlen = 0, total = 0;
	int err;

	memset(m, 0, sizeof(*m));
	for (;;) {
		err = conn_line(c, &line, &len);
		if (err < 0)
			return err;
		if (strcmp(line, "PING") == 0) {
			err = conn_append(c, "PONG\r\n", 6);
			if (!err)
				err = conn_flush(c);
			if (err < 0)
				return err;
			continue;
		}
		if (strcmp(line, "PONG") == 0) {
			m->pong = true;
			return 0;
		}
		if (strncmp(line, "-ERR", 4) == 0)
			return conn_fail(c, -EPROTO, "%.200s", line);
		if (strncmp(line, "MSG ", 4) == 0 ||
		    strncmp(line, "HMSG ", 5) == 0)
			break;
		/* INFO (cluster updates) and +OK (verbose) need nothing */
	}
	err = nats_msg_head(c, line + (line[0] == 'H' ? 5 : 4), line[0] == 'H',
			    m, &hlen, &total);
	if (!err)
		err = conn_bytes(c, total, &data);
	if (err < 0)
		return err;
	/* Status headers start "NATS/1.0 408 Request Timeout". */
	if (hlen >= 12 && strncmp(data, "NATS/1.0 ", 9) == 0)
		m->status = atoi(data + 9);
	m->data = data + hlen;
	m->len = total - hlen;
	return 0;
}

static int
nats_ping(Conn *c)
{
	NatsMsg m;
	int err = conn_append(c, "PING\r\n", 6);

	if (!err)
		err = conn_flush(c);
	while (!err) {
		err = nats_read(c, &m);
		if (!err && m.pong)
			return 0;
	}
	return err;
}

/* INFO, then CONNECT; the PONG to our PING says CONNECT was accepted.
 * Every connection subscribes to its own inbox prefix once. */
static int
nats_hello(Conn *c)
{
	char *line;
	size_t len;
	int err = conn_line(c, &line, &len);

	if (err < 0)
		return err;
	if (strncmp(line, "INFO ", 5) != 0)
		return conn_fail(c, -EPROTO, "expected INFO, got \"%.100s\"",
				 line);
	snprintf(c->inbox, sizeof(c->inbox), "_INBOX.pb%ld.%u", (long)getpid(),
		 c->id);
	err = conn_printf(c,
			  "CONNECT {\"verbose\":false,\"pedantic\":false,"
			  "\"headers\":true,\"no_responders\":true,"
			  "\"protocol\":1,\"name\":\"peer-bench\","
			  "\"lang\":\"C\",\"version\":\"1\"}\r\n"
			  "SUB %s.* 1\r\n",
			  c->inbox);
	if (!err)
		err = nats_ping(c);
	return err;
}

/* A message is ours (a reply to a request) when its subject starts with
 * this connection's inbox. */
static bool
nats_is_reply(const Conn *c, const NatsMsg *m)
{
	size_t n = strlen(c->inbox);

	return strncmp(m->subject, c->inbox, n) == 0 && m->subject[n] == '.';
}

/* nats_json_error: JetStream API and PubAck replies carry "error" on
 * failure; status headers (503 no responders) say it otherwise. */
static int
nats_json_error(Conn *c, const NatsMsg *m, const char *doing)
{
	if (m->status >= 400 || (m->status == 0 && m->len == 0))
		return conn_fail(c, -EPROTO, "%s: status %d (no JetStream?)",
				 doing, m->status);
	if (memmem(m->data, m->len, "\"error\"", 7))
		return conn_fail(c, -EPROTO, "%s: %.*s", doing,
				 (int)(m->len > 300 ? 300 : m->len), m->data);
	return 0;
}

/* nats_request: one JetStream API request and its JSON answer. */
static int
nats_request(Conn *c, const char *subject, const char *json)
{
	char want[NAME_MAX_LEN * 2];
	NatsMsg m;
	int err;

	snprintf(want, sizeof(want), "%s.r%lu", c->inbox, ++c->seq);
	err = conn_printf(c, "PUB %s %s %zu\r\n%s\r\n", subject, want,
			  strlen(json), json);
	if (!err)
		err = conn_flush(c);
	while (!err) {
		err = nats_read(c, &m);
		if (!err && !m.pong && strcmp(m.subject, want) == 0)
			return nats_json_error(c, &m, subject);
	}
	return err;
}

/* A stream with work-queue retention (acked messages are removed), on
 * the subject Q.in, in files; one durable pull consumer "c" with
 * explicit acks, shared by every consumer connection. */
static int
nats_setup(Conn *c, const char *q)
{
	char subject[NAME_MAX_LEN * 2], json[512];
	int err;

	snprintf(subject, sizeof(subject), "$JS.API.STREAM.CREATE.%s", q);
	snprintf(json, sizeof(json),
		 "{\"name\":\"%s\",\"subjects\":[\"%s.in\"],"
		 "\"retention\":\"workqueue\",\"storage\":\"file\","
		 "\"num_replicas\":1,\"discard\":\"old\"}",
		 q, q);
	err = nats_request(c, subject, json);
	if (err < 0)
		return err;
	snprintf(subject, sizeof(subject),
		 "$JS.API.CONSUMER.DURABLE.CREATE.%s.c", q);
	snprintf(json, sizeof(json),
		 "{\"stream_name\":\"%s\",\"config\":{\"durable_name\":\"c\","
		 "\"ack_policy\":\"explicit\",\"deliver_policy\":\"all\","
		 "\"ack_wait\":60000000000,\"max_ack_pending\":100000,"
		 "\"max_waiting\":512}}",
		 q);
	return nats_request(c, subject, json);
}

/* Each publish names its own reply subject; the PubAck comes there. */
static int
nats_put(Conn *c, const char *q, const char *payload, size_t size, unsigned n)
{
	unsigned i, acked = 0;
	NatsMsg m;
	int err = 0;

	for (i = 0; !err && i < n; i++) {
		err = conn_printf(c, "PUB %s.in %s.p%lu %zu\r\n", q, c->inbox,
				  ++c->seq, size);
		if (!err)
			err = conn_append(c, payload, size);
		if (!err)
			err = conn_append(c, "\r\n", 2);
	}
	if (!err)
		err = conn_flush(c);
	while (!err && acked < n) {
		err = nats_read(c, &m);
		if (err < 0 || m.pong || !nats_is_reply(c, &m))
			continue;
		err = nats_json_error(c, &m, "publish");
		acked++;
	}
	return err;
}

/* nats_pull: one pull request for up to max messages, with no_wait
 * (only what is there) or waiting up to wait_ms; it ends with max
 * messages or with a status on its inbox (404 nothing there, 408
 * expired, 409 and the like), so no earlier request can still deliver.
 * Messages come with their stream subject, not the inbox; their $JS.ACK
 * reply subject marks them. Their acks are queued in c's output, to go
 * with the next write. *n counts the messages. */
static int
nats_pull(Conn *c, const char *q, unsigned max, bool no_wait, unsigned wait_ms,
	  size_t *n, double *t_got)
{
	char req[NAME_MAX_LEN * 2], json[96];
	size_t got = 0;
	NatsMsg m;
	int err, len;

	snprintf(req, sizeof(req), "%s.f%lu", c->inbox, ++c->seq);
	if (no_wait)
		len = snprintf(json, sizeof(json),
			       "{\"batch\":%u,\"no_wait\":true}", max);
	else
		len = snprintf(json, sizeof(json),
			       "{\"batch\":%u,\"expires\":%llu}", max,
			       (unsigned long long)wait_ms * 1000000ull);
	err = conn_printf(c,
			  "PUB $JS.API.CONSUMER.MSG.NEXT.%s.c %s %d\r\n%s\r\n",
			  q, req, len, json);
	if (!err)
		err = conn_flush(c);
	while (!err && got < max) {
		err = nats_read(c, &m);
		if (err < 0 || m.pong)
			continue;
		if (strncmp(m.reply, "$JS.ACK.", 8) == 0) {
			if (*n + got++ == 0)
				*t_got = now_s();
			err = conn_printf(c, "PUB %s 0\r\n\r\n", m.reply);
		} else if (strcmp(m.subject, req) == 0) {
			if (m.status == 404 || m.status == 408 ||
			    m.status == 409)
				break;
			err = conn_fail(c, -EPROTO, "pull request: status %d",
					m.status);
		}
	}
	*n += got;
	return err;
}

/* Take what is there (up to max) at once, as XREADGROUP does; when
 * nothing is, wait for one and then take what came with it. A single
 * request for max that waits would hold until max arrived or it
 * expired. */
static int
nats_take(Conn *c, const char *q, unsigned max, unsigned wait_ms, size_t *got,
	  double *t_got)
{
	size_t n = 0;
	int err = nats_pull(c, q, max, true, 0, &n, t_got);

	if (!err && n == 0)
		err = nats_pull(c, q, 1, false, wait_ms, &n, t_got);
	if (!err && n == 1 && max > 1)
		err = nats_pull(c, q, max - 1, true, 0, &n, t_got);
	if (!err && c->out_len)
		err = conn_flush(c);
	*got = err < 0 ? 0 : n;
	return err;
}

static const Peer peer_nats = {
	.name = "nats",
	.server = "nats-server (with -js)",
	.ack = "ack per message to its reply subject (plain +ACK, not "
	       "confirmed; PING/PONG at the end)",
	.hello = nats_hello,
	.setup = nats_setup,
	.put = nats_put,
	.take = nats_take,
	.finish = nats_ping,
};

/* ---- Runs: producers and consumers in threads ---- */

/* Where the threads of a run wait, connected, until main lets them all
 * go at once. A barrier would need its count up front, and would hang
 * if a thread could not be created. */
typedef struct Gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned ready; /* threads waiting */
	bool open;
} Gate;

static void
gate_arrive(Gate *g)
{
	pthread_mutex_lock(&g->mu);
	g->ready++;
	pthread_cond_broadcast(&g->cv);
	while (!g->open)
		pthread_cond_wait(&g->cv, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

/* gate_open: once n threads arrived, or after a bound (every thread's
 * connect is bounded by STALL_MS, so that is only a safety net). */
static void
gate_open(Gate *g, unsigned n)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += STALL_MS / 1000 * 3;
	pthread_mutex_lock(&g->mu);
	while (g->ready < n)
		if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) == ETIMEDOUT)
			break;
	g->open = true;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

typedef struct Run {
	const Options *o;
	const Peer *peer;
	const char *q;
	const char *payload;
	size_t total;	     /* messages put in all */
	unsigned depth;	     /* puts in flight per producer */
	double deadline;     /* now_s() after which the run failed */
	atomic_size_t taken; /* by all consumers so far */
	atomic_bool stop;    /* someone failed */
	atomic_uint next_id; /* connection ids */
	Gate gate;	     /* every thread connected */
} Run;

typedef struct Worker {
	pthread_t thread;
	Run *run;
	size_t n;    /* producer: messages to put */
	double last; /* consumer: now_s() when its last ack was done */
	int err;
	char what[WHAT_MAX];
} Worker;

static void
worker_fail(Worker *w, Conn *c, int err, const char *fallback)
{
	w->err = err;
	snprintf(w->what, sizeof(w->what), "%s",
		 c->what[0] ? c->what : fallback);
	atomic_store(&w->run->stop, true);
}

static int
worker_connect(Worker *w, Conn *c, bool producer)
{
	Run *r = w->run;
	unsigned id = atomic_fetch_add(&r->next_id, 1);
	int err = conn_open(c, r->peer, r->o->address, id);
	int (*init)(Conn *, const char *) =
		producer ? r->peer->producer_init : r->peer->consumer_init;

	if (!err && init)
		err = init(c, r->q);
	return err;
}

static void *
producer_main(void *arg)
{
	Worker *w = arg;
	Run *r = w->run;
	size_t left = w->n;
	Conn c;
	int err = worker_connect(w, &c, true);

	gate_arrive(&r->gate);
	while (!err && left > 0 && !atomic_load(&r->stop)) {
		unsigned n = left < r->depth ? (unsigned)left : r->depth;

		if (now_s() > r->deadline)
			err = conn_fail(&c, -ETIMEDOUT,
					"put not done within --timeout %u s",
					r->o->timeout_s);
		else
			err = r->peer->put(&c, r->q, r->payload, r->o->size, n);
		left -= n;
	}
	if (err < 0)
		worker_fail(w, &c, err, "put failed");
	conn_close(&c);
	return NULL;
}

static void *
consumer_main(void *arg)
{
	Worker *w = arg;
	Run *r = w->run;
	size_t got = 0, mine = 0;
	double t;
	Conn c;
	int err = worker_connect(w, &c, false);

	gate_arrive(&r->gate);
	while (!err && atomic_load(&r->taken) < r->total &&
	       !atomic_load(&r->stop)) {
		if (now_s() > r->deadline) {
			err = conn_fail(&c, -ETIMEDOUT,
					"%zu of %zu messages taken within "
					"--timeout %u s",
					atomic_load(&r->taken), r->total,
					r->o->timeout_s);
			break;
		}
		err = r->peer->take(&c, r->q, r->o->batch, WAIT_MS, &got, &t);
		if (err < 0 || got == 0)
			continue;
		mine += got;
		/* The consumer that took the last message stops the clock,
		 * once its acks are known to have reached the server; the
		 * others may still be in a blocking take, which is not
		 * counted. */
		if (atomic_fetch_add(&r->taken, got) + got >= r->total &&
		    r->peer->finish)
			err = r->peer->finish(&c);
		w->last = now_s();
	}
	if (!err && mine && r->peer->finish)
		err = r->peer->finish(&c);
	if (err < 0)
		worker_fail(w, &c, err, "take failed");
	conn_close(&c);
	return NULL;
}

/* run_workers: P producers putting total messages (split evenly) and C
 * consumers taking as many, started together. *secs: from the start to
 * the last producer's last reply (no consumers) or the last consumer's
 * last ack. */
static int
run_workers(Run *r, unsigned np, unsigned nc, double *secs, char *what,
	    size_t what_size)
{
	unsigned n = np + nc, i, started = 0;
	Worker *w = calloc(n, sizeof(*w));
	double t0, end = 0;
	int err = 0;

	if (!w) {
		snprintf(what, what_size, "out of memory");
		return -ENOMEM;
	}
	atomic_store(&r->taken, 0);
	atomic_store(&r->stop, false);
	r->deadline = now_s() + r->o->timeout_s;
	pthread_mutex_init(&r->gate.mu, NULL);
	pthread_cond_init(&r->gate.cv, NULL);
	r->gate.ready = 0;
	r->gate.open = false;
	for (i = 0; i < n; i++) {
		w[i].run = r;
		w[i].n = i < np ? r->total / np + (i < r->total % np) : 0;
		if (pthread_create(&w[i].thread, NULL,
				   i < np ? producer_main : consumer_main,
				   &w[i]) != 0)
			break;
		started++;
	}
	if (started < n)
		atomic_store(&r->stop, true);
	gate_open(&r->gate, started);
	t0 = now_s();
	for (i = 0; i < started; i++)
		pthread_join(w[i].thread, NULL);
	end = now_s();
	if (nc) /* consumers: when the last one's last ack was done */
		for (end = t0, i = np; i < started; i++)
			end = w[i].last > end ? w[i].last : end;
	for (i = 0; i < started && !err; i++) {
		if (w[i].err) {
			err = w[i].err;
			snprintf(what, what_size, "%s", w[i].what);
		}
	}
	if (!err && started < n) {
		err = -EAGAIN;
		snprintf(what, what_size, "cannot start %u threads", n);
	}
	pthread_cond_destroy(&r->gate.cv);
	pthread_mutex_destroy(&r->gate.mu);
	free(w);
	*secs = end - t0;
	return err;
}

/* run_setup: create the queue q on a connection of its own. */
static int
run_setup(const Options *o, const Peer *p, const char *q, char *what,
	  size_t what_size)
{
	Conn c;
	int err = conn_open(&c, p, o->address, 0);

	if (!err && p->setup)
		err = p->setup(&c, q);
	if (err < 0)
		snprintf(what, what_size, "%s",
			 c.what[0] ? c.what : "setup failed");
	conn_close(&c);
	return err;
}

/* ---- Latency: one message at a time ---- */

typedef struct Latency {
	Run *run;
	size_t total;	 /* round trips, warm-up included */
	double *t_got;	 /* when the consumer got message i */
	sem_t got;	 /* the consumer took (and acked) one */
	atomic_bool go;	 /* consumer connected */
	atomic_bool end; /* the producer gave up */
	int err;
	char what[WHAT_MAX];
} Latency;

static void *
latency_consumer(void *arg)
{
	Latency *l = arg;
	Run *r = l->run;
	size_t i = 0, got;
	double t;
	Conn c;
	int err = conn_open(&c, r->peer, r->o->address, 1);

	if (!err && r->peer->consumer_init)
		err = r->peer->consumer_init(&c, r->q);
	atomic_store(&l->go, true);
	while (!err && i < l->total && !atomic_load(&l->end)) {
		if (now_s() > r->deadline) {
			err = conn_fail(&c, -ETIMEDOUT,
					"latency: %zu of %zu round trips "
					"within --timeout %u s",
					i, l->total, r->o->timeout_s);
			break;
		}
		err = r->peer->take(&c, r->q, 1, WAIT_MS, &got, &t);
		if (!err && got) {
			l->t_got[i++] = t;
			sem_post(&l->got);
		}
	}
	if (err < 0) {
		l->err = err;
		snprintf(l->what, sizeof(l->what), "%s",
			 c.what[0] ? c.what : "take failed");
		sem_post(&l->got);
	}
	conn_close(&c);
	return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* latency_produce: put one message after another, each once the
 * previous one arrived; samples[i] = t0 of put i. */
static int
latency_produce(Latency *l, Conn *c, double *t_put)
{
	Run *r = l->run;
	struct timespec ts;
	size_t i;
	int err = 0;

	for (i = 0; !err && i < l->total; i++) {
		t_put[i] = now_s();
		err = r->peer->put(c, r->q, r->payload, r->o->size, 1);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += STALL_MS / 1000;
		while (!err && sem_timedwait(&l->got, &ts) < 0)
			if (errno != EINTR)
				err = conn_fail(c, -ETIMEDOUT,
						"latency: message %zu not "
						"received within %d s",
						i, STALL_MS / 1000);
		if (!err && l->err)
			err = l->err;
	}
	return err;
}

static int
bench_latency(Run *r, double *p50, double *p99, char *what, size_t what_size)
{
	Latency l = {.run = r, .total = r->o->count + WARMUP};
	double *t_put = calloc(l.total, sizeof(double)), *s;
	pthread_t th;
	size_t i, n = r->o->count;
	Conn c;
	int err;

	l.t_got = calloc(l.total, sizeof(double));
	if (!t_put || !l.t_got) {
		free(t_put);
		free(l.t_got);
		snprintf(what, what_size, "out of memory");
		return -ENOMEM;
	}
	sem_init(&l.got, 0, 0);
	r->deadline = now_s() + r->o->timeout_s;
	err = conn_open(&c, r->peer, r->o->address, 0);
	if (!err && r->peer->producer_init)
		err = r->peer->producer_init(&c, r->q);
	if (!err && pthread_create(&th, NULL, latency_consumer, &l) != 0)
		err = conn_fail(&c, -EAGAIN, "cannot start a thread");
	if (err < 0) {
		snprintf(what, what_size, "%s", c.what);
		conn_close(&c);
		return err;
	}
	/* Bounded: the consumer sets go right after connecting (or failing). */
	for (i = 0; i < 1000 && !atomic_load(&l.go); i++)
		usleep(10000);
	usleep(50000); /* let it reach its blocking take */
	err = latency_produce(&l, &c, t_put);
	atomic_store(&l.end, true);
	pthread_join(th, NULL);
	if (err < 0)
		snprintf(what, what_size, "%s", l.what[0] ? l.what : c.what);
	conn_close(&c);
	s = t_put; /* the samples replace the put times */
	for (i = 0; !err && i < n; i++)
		s[i] = l.t_got[i + WARMUP] - t_put[i + WARMUP];
	if (!err) {
		qsort(s, n, sizeof(*s), cmp_double);
		*p50 = s[n / 2];
		*p99 = s[n * 99 / 100 < n ? n * 99 / 100 : n - 1];
	}
	sem_destroy(&l.got);
	free(t_put);
	free(l.t_got);
	return err;
}

/* ---- Options and output ---- */

typedef struct Results {
	double pipeline_s;
	double scale_s[LIST_MAX];
	double lat_p50, lat_p99; /* seconds */
	double fill_s;
} Results;

static void
usage(FILE *f, const char *argv0)
{
	fprintf(f,
		"usage: %s --peer beanstalkd|redis|nats --address ADDR "
		"[OPTIONS]\n"
		"The workloads of mbox-bench against another broker.\n\n"
		"  --address ADDR    unix:PATH or HOST:PORT\n"
		"  --workload LIST   some of pipeline,scale,latency,fill "
		"(default the first three)\n"
		"  --size BYTES      payload size (default 1024)\n"
		"  --messages N      per pipeline, scale run and fill (default "
		"10000)\n"
		"  --producers N     pipeline and fill producers (default 4)\n"
		"  --consumers N     pipeline and drain consumers (default 2)\n"
		"  --depth N         puts in flight per producer (default 64)\n"
		"  --batch N         most messages a consumer takes at once "
		"(default 64)\n"
		"  --scale LIST      producer counts of the scale runs "
		"(default 1,16)\n"
		"  --count N         latency round trips (default 2000)\n"
		"  --timeout S       a workload fails after S s (default 120)\n"
		"  --drain           drain the queue after fill\n"
		"  --json            one JSON object instead of a table\n"
		"  -h, --help        this text\n",
		argv0);
}

static int
parse_num(const char *s, size_t min, size_t max, size_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
		return -EINVAL;
	*out = (size_t)v;
	return 0;
}

static int
parse_list(const char *s, List *out)
{
	char buf[128], *t, *save = NULL;
	size_t v;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	out->n = 0;
	for (t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (out->n == LIST_MAX || parse_num(t, 1, 1024, &v) < 0)
			return -EINVAL;
		out->v[out->n++] = (unsigned)v;
	}
	return out->n ? 0 : -EINVAL;
}

static int
parse_workloads(const char *s, unsigned *out)
{
	static const char *const names[] = {"pipeline", "scale", "latency",
					    "fill"};
	char buf[128], *t, *save = NULL;
	unsigned i;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	*out = 0;
	for (t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		for (i = 0; i < 4 && strcmp(t, names[i]) != 0; i++)
			;
		if (i == 4)
			return -EINVAL;
		*out |= 1u << i;
	}
	return *out ? 0 : -EINVAL;
}

static const Peer *
peer_find(const char *name)
{
	if (strcmp(name, "beanstalkd") == 0)
		return &peer_beanstalkd;
	if (strcmp(name, "redis") == 0)
		return &peer_redis;
	if (strcmp(name, "nats") == 0)
		return &peer_nats;
	return NULL;
}

/* parse_value: one numeric option; -1 with a message when it is bad. */
static int
parse_value(const char *opt, const char *arg, size_t min, size_t max,
	    size_t *out)
{
	if (parse_num(arg, min, max, out) == 0)
		return 0;
	fprintf(stderr, "peer-bench: --%s wants a number in %zu..%zu\n", opt,
		min, max);
	return -1;
}

static int
parse_options(int argc, char **argv, Options *o)
{
	static const struct option longopts[] = {
		{"peer", required_argument, NULL, 'P'},
		{"address", required_argument, NULL, 'a'},
		{"workload", required_argument, NULL, 'w'},
		{"size", required_argument, NULL, 's'},
		{"messages", required_argument, NULL, 'm'},
		{"producers", required_argument, NULL, 'p'},
		{"consumers", required_argument, NULL, 'c'},
		{"depth", required_argument, NULL, 'd'},
		{"batch", required_argument, NULL, 'b'},
		{"scale", required_argument, NULL, 'S'},
		{"count", required_argument, NULL, 'n'},
		{"timeout", required_argument, NULL, 't'},
		{"drain", no_argument, NULL, 'D'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	size_t v;
	int ch, rc = 0;

	*o = (Options){.size = 1024,
		       .messages = 10000,
		       .producers = 4,
		       .consumers = 2,
		       .depth = 64,
		       .batch = 64,
		       .scale = {.v = {1, 16}, .n = 2},
		       .count = 2000,
		       .workloads = WL_PIPELINE | WL_SCALE | WL_LATENCY,
		       .timeout_s = 120};
	while (rc == 0 &&
	       (ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'P':
			o->peer_name = optarg;
			break;
		case 'a':
			o->address = optarg;
			break;
		case 'w':
			if (parse_workloads(optarg, &o->workloads) < 0) {
				fprintf(stderr,
					"peer-bench: --workload wants "
					"pipeline,scale,latency,fill\n");
				rc = -1;
			}
			break;
		case 's':
			rc = parse_value("size", optarg, 1, SIZE_MAX_ARG,
					 &o->size);
			break;
		case 'm':
			rc = parse_value("messages", optarg, 1, 100000000,
					 &o->messages);
			break;
		case 'p':
			rc = parse_value("producers", optarg, 1, 1024, &v);
			o->producers = (unsigned)v;
			break;
		case 'c':
			rc = parse_value("consumers", optarg, 1, 1024, &v);
			o->consumers = (unsigned)v;
			break;
		case 'd':
			rc = parse_value("depth", optarg, 1, 4096, &v);
			o->depth = (unsigned)v;
			break;
		case 'b':
			rc = parse_value("batch", optarg, 1, BATCH_MAX, &v);
			o->batch = (unsigned)v;
			break;
		case 'S':
			if (parse_list(optarg, &o->scale) < 0) {
				fprintf(stderr, "peer-bench: --scale wants up "
						"to 8 counts like 1,16\n");
				rc = -1;
			}
			break;
		case 'n':
			rc = parse_value("count", optarg, 1, 10000000,
					 &o->count);
			break;
		case 't':
			rc = parse_value("timeout", optarg, 1, 86400, &v);
			o->timeout_s = (unsigned)v;
			break;
		case 'D':
			o->drain = true;
			break;
		case 'j':
			o->json = true;
			break;
		case 'h':
			usage(stdout, argv[0]);
			exit(0);
		default:
			usage(stderr, argv[0]);
			return -1;
		}
	}
	if (rc == 0 && optind < argc) {
		fprintf(stderr, "peer-bench: unexpected argument %s\n",
			argv[optind]);
		rc = -1;
	}
	if (rc == 0 && (!o->peer_name || !peer_find(o->peer_name))) {
		fprintf(stderr,
			"peer-bench: --peer beanstalkd|redis|nats is needed\n");
		rc = -1;
	}
	if (rc == 0 && !o->address) {
		fprintf(stderr, "peer-bench: --address unix:PATH or HOST:PORT "
				"is needed\n");
		rc = -1;
	}
	return rc;
}

static void
json_num(const char *key, bool have, int prec, double v)
{
	printf(",\"%s\":", key);
	if (have)
		printf("%.*f", prec, v);
	else
		fputs("null", stdout);
}

static void
print_json(const Options *o, const Peer *p, const Results *r)
{
	bool pipe = o->workloads & WL_PIPELINE, scale = o->workloads & WL_SCALE;
	bool lat = o->workloads & WL_LATENCY, fill = o->workloads & WL_FILL;
	unsigned i;

	printf("{\"peer\":\"%s\",\"address\":\"%s\",\"size\":%zu,"
	       "\"messages\":%zu,\"producers\":%u,\"consumers\":%u,"
	       "\"depth\":%u,\"batch\":%u,\"ack\":\"%s\"",
	       p->name, o->address, o->size, o->messages, o->producers,
	       o->consumers, o->depth, o->batch, p->ack);
	json_num("pipeline_seconds", pipe, 6, r->pipeline_s);
	json_num("pipeline_msgs_per_sec", pipe, 1, o->messages / r->pipeline_s);
	fputs(",\"scale\":", stdout);
	if (!scale)
		fputs("null", stdout);
	for (i = 0; scale && i < o->scale.n; i++)
		printf("%s{\"producers\":%u,\"seconds\":%.6f,"
		       "\"msgs_per_sec\":%.1f}",
		       i ? "," : "[", o->scale.v[i], r->scale_s[i],
		       o->messages / r->scale_s[i]);
	if (scale)
		putchar(']');
	printf(",\"latency_count\":%zu", o->count);
	json_num("latency_p50_us", lat, 1, r->lat_p50 * 1e6);
	json_num("latency_p99_us", lat, 1, r->lat_p99 * 1e6);
	json_num("fill_seconds", fill, 6, r->fill_s);
	json_num("fill_msgs_per_sec", fill, 1, o->messages / r->fill_s);
	printf("}\n");
}

static void
print_table(const Options *o, const Peer *p, const Results *r)
{
	char label[96];
	unsigned i;

	printf("peer-bench: %s at %s, %zu-byte messages; taken messages: "
	       "%s\n\n",
	       p->name, o->address, o->size, p->ack);
	printf("%-48s %10s %10s %12s\n", "workload", "messages", "seconds",
	       "msgs/s");
	if (o->workloads & WL_PIPELINE) {
		snprintf(label, sizeof(label),
			 "pipeline, %u prod. x %u in flight, %u cons.",
			 o->producers, o->depth, o->consumers);
		printf("%-48s %10zu %10.3f %12.0f\n", label, o->messages,
		       r->pipeline_s, o->messages / r->pipeline_s);
	}
	for (i = 0; (o->workloads & WL_SCALE) && i < o->scale.n; i++) {
		snprintf(label, sizeof(label),
			 "puts, %u producer%s, 1 in flight each", o->scale.v[i],
			 o->scale.v[i] == 1 ? "" : "s");
		printf("%-48s %10zu %10.3f %12.0f\n", label, o->messages,
		       r->scale_s[i], o->messages / r->scale_s[i]);
	}
	if (o->workloads & WL_FILL) {
		snprintf(label, sizeof(label), "fill, %u prod. x %u in flight",
			 o->producers, o->depth);
		printf("%-48s %10zu %10.3f %12.0f\n", label, o->messages,
		       r->fill_s, o->messages / r->fill_s);
	}
	if (o->workloads & WL_LATENCY)
		printf("\n%-48s %10s %10s %12s\n%-48s %10zu %7.0f us %9.0f "
		       "us\n",
		       "round trip", "count", "p50", "p99",
		       "put -> taken, one at a time", o->count,
		       r->lat_p50 * 1e6, r->lat_p99 * 1e6);
}

/* ---- Workloads ---- */

static int
bench_pipeline(Run *r, Results *res, char *what, size_t what_size)
{
	r->total = r->o->messages;
	r->depth = r->o->depth;
	return run_workers(r, r->o->producers, r->o->consumers,
			   &res->pipeline_s, what, what_size);
}

static int
bench_drain(Run *r, char *what, size_t what_size)
{
	double secs;

	return run_workers(r, 0, r->o->consumers, &secs, what, what_size);
}

static int
bench_scale(Run *r, unsigned i, Results *res, char *what, size_t what_size)
{
	int err;

	r->total = r->o->messages;
	r->depth = 1;
	err = run_workers(r, r->o->scale.v[i], 0, &res->scale_s[i], what,
			  what_size);
	if (!err)
		err = bench_drain(r, what, what_size);
	return err;
}

static int
bench_fill(Run *r, Results *res, char *what, size_t what_size)
{
	int err;

	r->total = r->o->messages;
	r->depth = r->o->depth;
	err = run_workers(r, r->o->producers, 0, &res->fill_s, what, what_size);
	if (!err && r->o->drain)
		err = bench_drain(r, what, what_size);
	return err;
}

/* bench_one: workload wl (scale run i) on a fresh queue of its own. */
static int
bench_one(const Options *o, const Peer *p, const char *payload, unsigned wl,
	  unsigned i, Results *res, char *what, size_t what_size)
{
	static const char *const names[] = {"pipeline", "scale", "latency",
					    "fill"};
	char q[NAME_MAX_LEN];
	unsigned bit = 0;
	Run r = {.o = o, .peer = p, .payload = payload, .next_id = 1};
	int err;

	while ((1u << bit) != wl)
		bit++;
	/* Letters, digits and _ only: valid as a tube, stream and subject. */
	snprintf(q, sizeof(q), "pb_%ld_%s%u", (long)getpid(), names[bit], i);
	r.q = q;
	err = run_setup(o, p, q, what, what_size);
	if (err < 0)
		return err;
	if (wl == WL_PIPELINE)
		return bench_pipeline(&r, res, what, what_size);
	if (wl == WL_SCALE)
		return bench_scale(&r, i, res, what, what_size);
	if (wl == WL_LATENCY)
		return bench_latency(&r, &res->lat_p50, &res->lat_p99, what,
				     what_size);
	return bench_fill(&r, res, what, what_size);
}

int
main(int argc, char **argv)
{
	Options o;
	Results res = {.pipeline_s = 0};
	const Peer *p;
	char what[WHAT_MAX] = "", *payload;
	unsigned i;
	int err = 0;

	if (parse_options(argc, argv, &o) < 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	p = peer_find(o.peer_name);
	payload = malloc(o.size);
	if (!payload) {
		fprintf(stderr, "peer-bench: out of memory\n");
		return 1;
	}
	memset(payload, 'x', o.size);
	if (o.workloads & WL_PIPELINE)
		err = bench_one(&o, p, payload, WL_PIPELINE, 0, &res, what,
				sizeof(what));
	for (i = 0; !err && (o.workloads & WL_SCALE) && i < o.scale.n; i++)
		err = bench_one(&o, p, payload, WL_SCALE, i, &res, what,
				sizeof(what));
	if (!err && (o.workloads & WL_LATENCY))
		err = bench_one(&o, p, payload, WL_LATENCY, 0, &res, what,
				sizeof(what));
	if (!err && (o.workloads & WL_FILL))
		err = bench_one(&o, p, payload, WL_FILL, 0, &res, what,
				sizeof(what));
	free(payload);
	if (err < 0) {
		fprintf(stderr, "peer-bench: %s\n", what[0] ? what : "failed");
		return 1;
	}
	if (o.json)
		print_json(&o, p, &res);
	else
		print_table(&o, p, &res);
	return 0;
}
