/*
 * post.c - `mboxctl post MAILBOX [DATA]`.
 *
 * Three sources of messages: DATA from the command line, all of standard
 * input as one binary-safe message, or (--lines) one message per input
 * line. In --lines mode input is streamed: lines are gathered into a
 * batch that is posted (one POST, all or nothing) when it reaches
 * POST_BATCH_MSGS messages or about POST_BATCH_BYTES, or as soon as no
 * more input is ready — so a slow producer's lines go out at once and a
 * fast one's in big batches. An id is printed only after the broker has
 * confirmed its batch: every printed id is a stored message.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mbox-proto.h"

#include "client/mboxctl/post.h"

#define POST_BATCH_MSGS	 512u
#define POST_BATCH_BYTES (256u * 1024u)
/* Header headroom per message in a batch: the MSG, DATA and option
 * fields around its payload (a generous estimate). */
#define POST_MSG_OVERHEAD 96u
#define READ_CHUNK	  65536u

static const char post_help[] =
	"Usage: mboxctl post MAILBOX [DATA] [OPTIONS]\n"
	"\n"
	"Post a message to MAILBOX and print its id once it is stored. The "
	"message\n"
	"is DATA, or all of standard input (binary-safe) when DATA is "
	"absent.\n"
	"\n"
	"Options:\n"
	"      --lines           one message per line of input (without the\n"
	"                        newline), posted in batches; prints one id "
	"per\n"
	"                        line, in input order, as batches are "
	"stored\n"
	"  -p, --priority N      0-9, higher is delivered first; 9 is urgent\n"
	"                        (default 0)\n"
	"      --delay SECS      not deliverable before SECS from now\n"
	"      --ttl SECS        goes dead as expired if not done within "
	"SECS\n"
	"  -H, --header K=V      set header K to V (repeatable)\n"
	"      --dedup KEY       if KEY was posted to MAILBOX recently, store\n"
	"                        nothing and print the first message's id\n"
	"                        (not with --lines)\n" CTL_COMMON_HELP "\n"
	"SECS is a decimal number with an optional unit: ms, s, m, h "
	"(default s).\n"
	"Put -- before DATA that starts with '-'.\n";

enum {
	OPT_LINES = 256,
	OPT_DELAY,
	OPT_TTL,
	OPT_DEDUP,
};

/* The pending batch of --lines mode: offsets into the input buffer. */
typedef struct LineBatch {
	size_t off[POST_BATCH_MSGS];
	size_t len[POST_BATCH_MSGS];
	size_t n;
	size_t bytes; /* payload + estimated overhead */
} LineBatch;

typedef struct PostRun {
	Ctl *c;
	mbox_post_opts opts;
	size_t opts_bytes; /* header bytes each message carries */
	size_t budget;	   /* batch bytes, at most POST_BATCH_BYTES */
	uint8_t *in;	   /* input not yet posted */
	size_t in_len, in_cap;
	LineBatch batch;
	uint64_t line_no; /* lines read so far */
} PostRun;

/* Read all of fd 0; more than max bytes is -EMSGSIZE. */
static int
read_all(uint8_t **out, size_t *out_len, size_t max)
{
	uint8_t *buf = NULL, *p;
	size_t len = 0, cap = 0;
	ssize_t n;

	for (;;) {
		if (cap - len < READ_CHUNK) {
			cap = cap ? 2 * cap : 4 * READ_CHUNK;
			p = realloc(buf, cap);
			if (!p) {
				free(buf);
				return -ENOMEM;
			}
			buf = p;
		}
		n = read(STDIN_FILENO, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = -errno;

			free(buf);
			return e;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			free(buf);
			return -EMSGSIZE;
		}
	}
	*out = buf;
	*out_len = len;
	return 0;
}

/* Post the pending batch and print its ids. */
static int
batch_flush(PostRun *p)
{
	mbox_post_item items[POST_BATCH_MSGS];
	uint64_t ids[POST_BATCH_MSGS];
	LineBatch *b = &p->batch;
	size_t i;
	int r;

	if (b->n == 0)
		return 0;
	for (i = 0; i < b->n; i++) {
		items[i].data = p->in + b->off[i];
		items[i].len = b->len[i];
		items[i].opts = &p->opts;
	}
	r = mbox_post_batch(p->c->m, p->c->target, items, b->n, ids);
	if (r < 0) {
		char what[96];

		snprintf(what, sizeof(what),
			 "lines %" PRIu64 "-%" PRIu64 " not posted",
			 p->line_no - (p->line_no >= b->n ? b->n : 0) + 1,
			 p->line_no);
		return ctl_fail(p->c, r, what);
	}
	for (i = 0; i < b->n; i++)
		printf("%" PRIu64 "\n", ids[i]);
	if (fflush(stdout) != 0)
		return ctl_error(p->c, "cannot write to standard output: %s",
				 strerror(errno));
	b->n = 0;
	b->bytes = 0;
	return 0;
}

/* Add line [off, off+len) of p->in to the batch, posting first if full. */
static int
batch_add(PostRun *p, size_t off, size_t len)
{
	LineBatch *b = &p->batch;
	size_t cost = len + POST_MSG_OVERHEAD + p->opts_bytes;
	int r;

	if (len > mbox_max_msg_size(p->c->m))
		return ctl_error(p->c,
				 "message too large: line %" PRIu64
				 " holds %zu bytes, the broker takes at most "
				 "%zu",
				 p->line_no + 1, len,
				 mbox_max_msg_size(p->c->m));
	if (b->n == POST_BATCH_MSGS || (b->n && b->bytes + cost > p->budget)) {
		r = batch_flush(p);
		if (r)
			return r;
	}
	b->off[b->n] = off;
	b->len[b->n] = len;
	b->n++;
	b->bytes += cost;
	p->line_no++;
	return 0;
}

/* Is more input ready right now (data or EOF)? */
static int
input_ready(void)
{
	struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};

	return poll(&pfd, 1, 0) > 0;
}

static int
post_lines(PostRun *p)
{
	size_t start = 0, scan = 0;
	bool eof = false;
	int r;

	while (!eof) {
		size_t keep;
		ssize_t n;
		uint8_t *nl;

		/* Drop what has been posted; keep the pending lines. */
		keep = p->batch.n ? p->batch.off[0] : start;
		if (keep) {
			size_t i;

			memmove(p->in, p->in + keep, p->in_len - keep);
			p->in_len -= keep;
			for (i = 0; i < p->batch.n; i++)
				p->batch.off[i] -= keep;
			start -= keep;
			scan -= keep;
		}
		if (p->in_cap - p->in_len < READ_CHUNK) {
			size_t cap = p->in_cap ? 2 * p->in_cap : 4 * READ_CHUNK;
			uint8_t *q = realloc(p->in, cap);

			if (!q)
				return ctl_error(p->c, "out of memory");
			p->in = q;
			p->in_cap = cap;
		}
		n = read(STDIN_FILENO, p->in + p->in_len,
			 p->in_cap - p->in_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ctl_error(p->c, "cannot read standard input: %s",
					 strerror(errno));
		eof = n == 0;
		p->in_len += (size_t)n;

		while ((nl = memchr(p->in + scan, '\n', p->in_len - scan))) {
			size_t end = (size_t)(nl - p->in);

			r = batch_add(p, start, end - start);
			if (r)
				return r;
			start = scan = end + 1;
		}
		scan = p->in_len;
		if (eof && start < p->in_len) {
			/* A last line without its newline is still a line. */
			r = batch_add(p, start, p->in_len - start);
			if (r)
				return r;
			start = p->in_len;
		}
		if (p->in_len - start > mbox_max_msg_size(p->c->m))
			return ctl_error(p->c,
					 "message too large: line %" PRIu64
					 " is longer than the broker's limit "
					 "of %zu bytes",
					 p->line_no + 1,
					 mbox_max_msg_size(p->c->m));
		if (eof || !input_ready()) {
			r = batch_flush(p);
			if (r)
				return r;
		}
	}
	return CTL_EXIT_OK;
}

int
cmd_post(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"lines", no_argument, NULL, OPT_LINES},
		{"priority", required_argument, NULL, 'p'},
		{"delay", required_argument, NULL, OPT_DELAY},
		{"ttl", required_argument, NULL, OPT_TTL},
		{"header", required_argument, NULL, 'H'},
		{"dedup", required_argument, NULL, OPT_DEDUP},
		CTL_COMMON_OPTIONS,
		{0},
	};
	PostRun p = {.c = c};
	const char **headers = NULL;
	size_t nh = 0;
	bool lines = false;
	uint8_t *data = NULL;
	size_t len = 0;
	uint64_t v, id;
	int opt, r;

	/* Each --header adds two entries; argc bounds how many there are. */
	headers = calloc((size_t)argc * 2 + 1, sizeof(*headers));
	if (!headers)
		return ctl_error(c, "out of memory");
	while ((opt = getopt_long(argc, argv, ":S:hp:H:", opts, NULL)) != -1) {
		switch (opt) {
		case OPT_LINES:
			lines = true;
			break;
		case 'p':
			if (ctl_parse_u64(optarg, &v) < 0 ||
			    v > MBOX_PRIORITY_MAX) {
				r = ctl_usage(c, "bad priority '%s' (0-9)",
					      optarg);
				goto out;
			}
			p.opts.priority = (unsigned)v;
			break;
		case OPT_DELAY:
		case OPT_TTL:
			if (ctl_parse_duration_ms(optarg, &v) < 0) {
				r = ctl_usage(c, "bad duration '%s'", optarg);
				goto out;
			}
			if (opt == OPT_DELAY)
				p.opts.delay_ms = v;
			else
				p.opts.ttl_ms = v;
			break;
		case 'H': {
			char *eq = strchr(optarg, '=');

			if (!eq || eq == optarg) {
				r = ctl_usage(c, "bad header '%s' (K=V)",
					      optarg);
				goto out;
			}
			/* Split in place: argv strings are ours to edit. */
			*eq = '\0';
			headers[2 * nh] = optarg;
			headers[2 * nh + 1] = eq + 1;
			nh++;
			p.opts_bytes += strlen(optarg) + strlen(eq + 1) + 24;
			break;
		}
		case OPT_DEDUP:
			p.opts.dedup = optarg;
			break;
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(post_help, stdout);
			r = CTL_EXIT_OK;
			goto out;
		default:
			r = ctl_bad_option(c, opt, argv);
			goto out;
		}
	}
	if (optind >= argc) {
		r = ctl_usage(c,
			      "which mailbox? (mboxctl post MAILBOX [DATA])");
		goto out;
	}
	c->target = argv[optind++];
	if (argc - optind > 1) {
		r = ctl_usage(c,
			      "unexpected argument '%s' (quote DATA that "
			      "has spaces)",
			      argv[optind + 1]);
		goto out;
	}
	if (lines && optind < argc) {
		r = ctl_usage(c, "--lines reads standard input: give no DATA");
		goto out;
	}
	if (lines && p.opts.dedup) {
		r = ctl_usage(c, "--dedup takes one message: not with --lines");
		goto out;
	}
	if (nh)
		p.opts.headers = headers;

	r = ctl_connect(c);
	if (r)
		goto out;

	if (lines) {
		p.budget = POST_BATCH_BYTES;
		if (mbox_max_msg_size(c->m) < p.budget)
			p.budget = mbox_max_msg_size(c->m);
		r = post_lines(&p);
		goto out;
	}

	if (optind < argc) {
		data = (uint8_t *)argv[optind];
		len = strlen(argv[optind]);
	} else {
		r = read_all(&data, &len, mbox_max_msg_size(c->m));
		if (r == -EMSGSIZE) {
			r = ctl_error(c,
				      "message too large: standard input "
				      "holds more than the broker's limit of "
				      "%zu bytes",
				      mbox_max_msg_size(c->m));
			goto out;
		}
		if (r < 0) {
			r = ctl_error(c, "cannot read standard input: %s",
				      strerror(-r));
			goto out;
		}
	}
	r = mbox_post(c->m, c->target, data, len, &p.opts, &id);
	if (optind >= argc)
		free(data);
	if (r < 0) {
		r = ctl_fail(c, r, "not posted");
		goto out;
	}
	printf("%" PRIu64 "\n", id);
	r = fflush(stdout) ? ctl_error(c, "cannot write to standard output: %s",
				       strerror(errno))
			   : CTL_EXIT_OK;
out:
	free(p.in);
	free(headers);
	return r;
}
