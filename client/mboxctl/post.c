/*
 * post.c - `mboxctl post MAILBOX [DATA]` and `mboxctl publish TOPIC [DATA]`.
 *
 * Both take the same message options (-p, --delay, --ttl, -H), checked
 * here (msgopts_*) so that a mistake is a usage error naming the option,
 * not a broker error about a field the user never saw.
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

/* clang-format off */
#define MSG_OPTIONS_HELP \
	"  -p, --priority N      0-9, higher is delivered first; 9 is urgent\n" \
	"                        (default 0)\n" \
	"      --delay SECS      not deliverable before SECS from now\n" \
	"      --ttl SECS        goes dead as expired if not done within SECS\n" \
	"                        (default: the mailbox's ttl)\n" \
	"  -H, --header K=V      set header K to V (repeatable; K 1-200 bytes,\n" \
	"                        each K once)\n"
#define MSG_OPTIONS_NOTE \
	"SECS is a decimal number with an optional unit: ms, s, m, h " \
	"(default s).\n" \
	"Put -- before DATA that starts with '-'.\n"
/* clang-format on */

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
	"stored\n" MSG_OPTIONS_HELP
	"      --dedup KEY       if KEY was posted to MAILBOX recently, store\n"
	"                        nothing and print the first message's id\n"
	"                        (not with --lines)\n" CTL_COMMON_HELP "\n"
	"The options apply to every message (with --lines "
	"too).\n" MSG_OPTIONS_NOTE;

static const char publish_help[] =
	"Usage: mboxctl publish TOPIC [DATA] [OPTIONS]\n"
	"\n"
	"Store one copy of a message in every mailbox bound to a pattern that\n"
	"matches TOPIC (see mboxctl bind) and that you may post to, and print\n"
	"how many copies were stored (0 when nothing matched). A full mailbox\n"
	"you own refuses the message; a full one of another owner is left\n"
	"out, and a note on standard error says how many were. The message is\n"
	"DATA, or all of standard input (binary-safe) when DATA is absent.\n"
	"TOPIC is words of A-Z a-z 0-9 _ - separated by dots: jobs.eu.created\n"
	"\n"
	"Options:\n" MSG_OPTIONS_HELP "  -j, --json            print "
	"{\"copies\":N,\"skipped\":N}\n" CTL_COMMON_HELP "\n" MSG_OPTIONS_NOTE;

enum {
	OPT_LINES = 256,
	OPT_DELAY,
	OPT_TTL,
	OPT_DEDUP,
};

/* The getopt_long entries of the message options, and their letters. */
/* clang-format off */
#define MSG_OPTIONS \
	{"priority", required_argument, NULL, 'p'}, \
	{"delay", required_argument, NULL, OPT_DELAY}, \
	{"ttl", required_argument, NULL, OPT_TTL}, \
	{"header", required_argument, NULL, 'H'}
/* clang-format on */
#define MSG_OPTSTRING "p:H:"

/* Limits of a message's options the broker enforces (protocol.md 5.4);
 * checked here too so that the error names the option. */
#define MSG_HEADERS_COUNT_MAX 64u
#define MSG_KEY_MAX	      200u
#define MSG_DURATION_MAX_MS   (365ull * 24 * 3600 * 1000)

/* Message options as parsed; opts.headers points into headers. */
typedef struct MsgOpts {
	mbox_post_opts opts;
	const char **headers; /* {key, value, ..., NULL}, owned */
	size_t n_headers;
	size_t header_bytes; /* keys + values */
} MsgOpts;

/* The pending batch of --lines mode: offsets into the input buffer. */
typedef struct LineBatch {
	size_t off[POST_BATCH_MSGS];
	size_t len[POST_BATCH_MSGS];
	size_t n;
	size_t bytes; /* payload + estimated overhead */
} LineBatch;

typedef struct PostRun {
	Ctl *c;
	const MsgOpts *mo;
	size_t opts_bytes; /* option bytes each message carries, estimated */
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
	uint64_t first_line;
	size_t i;
	int r;

	if (b->n == 0)
		return 0;
	first_line = p->line_no - (p->line_no >= b->n ? b->n : 0) + 1;
	for (i = 0; i < b->n; i++) {
		items[i].data = p->in + b->off[i];
		items[i].len = b->len[i];
		items[i].opts = &p->mo->opts;
	}
	r = mbox_post_batch(p->c->m, p->c->target, items, b->n, ids);
	if (r < 0) {
		char what[96];

		snprintf(what, sizeof(what),
			 "lines %" PRIu64 "-%" PRIu64 " not posted", first_line,
			 p->line_no);
		return ctl_fail(p->c, r, what);
	}
	for (i = 0; i < b->n; i++)
		printf("%" PRIu64 "\n", ids[i]);
	if (fflush(stdout) != 0)
		return ctl_error(p->c,
				 "lines %" PRIu64 "-%" PRIu64 " posted as "
				 "messages %" PRIu64 " to %" PRIu64 ", but "
				 "their ids could not be written to standard "
				 "output: %s",
				 first_line, p->line_no, ids[0], ids[b->n - 1],
				 strerror(errno));
	b->n = 0;
	b->bytes = 0;
	return 0;
}

/* The next line is over the broker's limit (holds, e.g. "holds 2000000
 * bytes"): post the lines before it, as far as they go, then stop. */
static int
line_too_large(PostRun *p, const char *holds)
{
	int r = batch_flush(p);

	if (r)
		return r;
	return ctl_error(p->c,
			 "message too large: line %" PRIu64 " %s, the broker "
			 "takes at most %zu; %s",
			 p->line_no + 1, holds, mbox_max_msg_size(p->c->m),
			 p->line_no ? "the lines before it were posted (their "
				      "ids are printed), none after"
				    : "nothing was posted");
}

/* Add line [off, off+len) of p->in to the batch, posting first if full. */
static int
batch_add(PostRun *p, size_t off, size_t len)
{
	LineBatch *b = &p->batch;
	size_t cost = len + POST_MSG_OVERHEAD + p->opts_bytes;
	char holds[64];
	int r;

	if (len > mbox_max_msg_size(p->c->m)) {
		snprintf(holds, sizeof(holds), "holds %zu bytes", len);
		return line_too_large(p, holds);
	}
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
		if (p->in_len - start > mbox_max_msg_size(p->c->m)) {
			char holds[64];

			snprintf(holds, sizeof(holds),
				 "holds %zu bytes and more", p->in_len - start);
			return line_too_large(p, holds);
		}
		if (eof || !input_ready()) {
			r = batch_flush(p);
			if (r)
				return r;
		}
	}
	return CTL_EXIT_OK;
}

static int
msgopts_init(MsgOpts *mo, int argc)
{
	*mo = (MsgOpts){0};
	/* Each --header adds two entries; argc bounds how many there are. */
	mo->headers = calloc((size_t)argc * 2 + 1, sizeof(*mo->headers));
	return mo->headers ? 0 : -ENOMEM;
}

static void
msgopts_free(MsgOpts *mo)
{
	free(mo->headers);
	mo->headers = NULL;
}

/* --delay or --ttl: a duration of at most a year; a ttl of at least 1 ms
 * (0 would silently mean "the mailbox's ttl"). */
static int
msgopts_duration(Ctl *c, const char *name, const char *arg, bool nonzero,
		 uint64_t *ms)
{
	if (ctl_parse_duration_ms(arg, ms) < 0)
		return ctl_usage(c, "bad duration '%s' for --%s", arg, name);
	if (*ms > MSG_DURATION_MAX_MS)
		return ctl_usage(c, "--%s %s is more than a year", name, arg);
	if (nonzero && *ms == 0)
		return ctl_usage(c, "--%s must be at least 1ms", name);
	return 0;
}

/* -H K=V: split in place (argv strings are ours to edit) and check it. */
/*
 * -H K=V: split in place (argv strings are ours to edit) and check it.
 * A malformed or repeated header is a usage error (2); one beyond the
 * broker's limits is refused like a too large payload (1).
 */
static int
msgopts_header(Ctl *c, MsgOpts *mo, char *arg)
{
	char *eq = strchr(arg, '=');
	size_t klen, vlen, i;

	if (!eq || eq == arg)
		return ctl_usage(c, "bad header '%s' (K=V, K not empty)", arg);
	klen = (size_t)(eq - arg);
	vlen = strlen(eq + 1);
	if (!ctl_utf8_valid((const uint8_t *)arg, klen + 1 + vlen))
		return ctl_usage(c, "header '%s' is not valid UTF-8", arg);
	for (i = 0; i < mo->n_headers; i++)
		if (strlen(mo->headers[2 * i]) == klen &&
		    memcmp(mo->headers[2 * i], arg, klen) == 0)
			return ctl_usage(c, "header '%.*s' given twice",
					 (int)klen, arg);
	if (klen > MSG_KEY_MAX)
		return ctl_error(c,
				 "header key too long: %zu bytes, the broker "
				 "takes at most %u",
				 klen, MSG_KEY_MAX);
	if (mo->n_headers == MSG_HEADERS_COUNT_MAX)
		return ctl_error(c, "too many headers: at most %u",
				 MSG_HEADERS_COUNT_MAX);
	if (mo->header_bytes + klen + vlen > MBOX_HEADERS_MAX)
		return ctl_error(c,
				 "headers too large: %zu bytes of keys and "
				 "values, the broker takes at most %u",
				 mo->header_bytes + klen + vlen,
				 MBOX_HEADERS_MAX);
	*eq = '\0';
	mo->headers[2 * mo->n_headers] = arg;
	mo->headers[2 * mo->n_headers + 1] = eq + 1;
	mo->n_headers++;
	mo->header_bytes += klen + vlen;
	mo->opts.headers = mo->headers;
	return 0;
}

/*
 * msgopts_parse - handle one of the MSG_OPTIONS. Returns 0, or the exit
 * code of an error it has reported; -1 if opt is not one of them.
 */
static int
msgopts_parse(Ctl *c, MsgOpts *mo, int opt, char *arg)
{
	uint64_t v;

	switch (opt) {
	case 'p':
		if (ctl_parse_u64(arg, &v) < 0 || v > MBOX_PRIORITY_MAX)
			return ctl_usage(c, "bad priority '%s' (0-9)", arg);
		mo->opts.priority = (unsigned)v;
		return 0;
	case OPT_DELAY:
		return msgopts_duration(c, "delay", arg, false,
					&mo->opts.delay_ms);
	case OPT_TTL:
		return msgopts_duration(c, "ttl", arg, true, &mo->opts.ttl_ms);
	case 'H':
		return msgopts_header(c, mo, arg);
	default:
		return -1;
	}
}

/*
 * Get the one message: DATA from the command line (borrowed, *owned
 * false) or all of standard input (*owned true: free it).
 */
static int
msg_payload(Ctl *c, const char *arg, uint8_t **data, size_t *len, bool *owned)
{
	int r;

	*owned = false;
	if (arg) {
		*data = (uint8_t *)arg;
		*len = strlen(arg);
		return 0;
	}
	r = ctl_need_stdin(c);
	if (r)
		return r;
	r = read_all(data, len, mbox_max_msg_size(c->m));
	if (r == -EMSGSIZE)
		return ctl_error(c,
				 "message too large: standard input holds "
				 "more than the broker's limit of %zu bytes",
				 mbox_max_msg_size(c->m));
	if (r < 0)
		return ctl_error(c, "cannot read standard input: %s",
				 strerror(-r));
	*owned = true;
	return 0;
}

/* After the broker took the request: a failed write must not read as
 * "not done", or a script retries and posts twice. done says what was
 * done ("message 7 posted"), what what could not be written. */
static int
flush_stdout(Ctl *c, const char *done, const char *what)
{
	if (fflush(stdout) != 0)
		return ctl_error(c,
				 "%s, but %s could not be written to standard "
				 "output: %s",
				 done, what, strerror(errno));
	return CTL_EXIT_OK;
}

int
cmd_post(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"lines", no_argument, NULL, OPT_LINES},
		MSG_OPTIONS,
		{"dedup", required_argument, NULL, OPT_DEDUP},
		CTL_COMMON_OPTIONS,
		{0},
	};
	PostRun p = {.c = c};
	MsgOpts mo;
	char done[64];
	bool lines = false, owned = false;
	uint8_t *data = NULL;
	size_t len = 0;
	uint64_t id;
	int opt, r;

	ctl_ignore_sigpipe();
	if (msgopts_init(&mo, argc) < 0)
		return ctl_error(c, "out of memory");
	while ((opt = getopt_long(argc, argv, ":S:h" MSG_OPTSTRING, opts,
				  NULL)) != -1) {
		r = msgopts_parse(c, &mo, opt, optarg);
		if (r > 0)
			goto out;
		if (r == 0)
			continue;
		switch (opt) {
		case OPT_LINES:
			lines = true;
			break;
		case OPT_DEDUP:
			if (!*optarg || strlen(optarg) > MSG_KEY_MAX ||
			    !ctl_utf8_valid((const uint8_t *)optarg,
					    strlen(optarg))) {
				r = ctl_usage(c,
					      "bad dedup key '%s' (1-%u bytes "
					      "of UTF-8)",
					      optarg, MSG_KEY_MAX);
				goto out;
			}
			mo.opts.dedup = optarg;
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
	r = ctl_take_mailbox(c, argc, argv, "MAILBOX [DATA]");
	if (r >= 0)
		goto out;
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
	if (lines && mo.opts.dedup) {
		r = ctl_usage(c, "--dedup takes one message: not with --lines");
		goto out;
	}
	if (lines && (r = ctl_need_stdin(c)) != 0)
		goto out;

	r = ctl_connect(c);
	if (r)
		goto out;

	if (lines) {
		p.mo = &mo;
		/* Keys, values and their field headers, per message. */
		p.opts_bytes = mo.header_bytes + 24 * mo.n_headers;
		p.budget = POST_BATCH_BYTES;
		if (mbox_max_msg_size(c->m) < p.budget)
			p.budget = mbox_max_msg_size(c->m);
		r = post_lines(&p);
		goto out;
	}

	r = msg_payload(c, optind < argc ? argv[optind] : NULL, &data, &len,
			&owned);
	if (r)
		goto out;
	r = mbox_post(c->m, c->target, data, len, &mo.opts, &id);
	if (r < 0) {
		r = ctl_fail(c, r, "not posted");
		goto out;
	}
	printf("%" PRIu64 "\n", id);
	snprintf(done, sizeof(done), "message %" PRIu64 " posted", id);
	r = flush_stdout(c, done, "its id");
out:
	if (owned)
		free(data);
	free(p.in);
	msgopts_free(&mo);
	return r;
}

int
cmd_publish(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		MSG_OPTIONS,
		{"json", no_argument, NULL, 'j'},
		CTL_COMMON_OPTIONS,
		{0},
	};
	MsgOpts mo;
	char done[64];
	bool json = false, owned = false;
	uint8_t *data = NULL;
	size_t len = 0, copies = 0, skipped;
	int opt, r;

	ctl_ignore_sigpipe();
	if (msgopts_init(&mo, argc) < 0)
		return ctl_error(c, "out of memory");
	while ((opt = getopt_long(argc, argv, ":S:hj" MSG_OPTSTRING, opts,
				  NULL)) != -1) {
		r = msgopts_parse(c, &mo, opt, optarg);
		if (r > 0)
			goto out;
		if (r == 0)
			continue;
		switch (opt) {
		case 'j':
			json = true;
			break;
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(publish_help, stdout);
			r = CTL_EXIT_OK;
			goto out;
		default:
			r = ctl_bad_option(c, opt, argv);
			goto out;
		}
	}
	if (optind >= argc) {
		r = ctl_usage(c, "which topic? (mboxctl publish TOPIC [DATA])");
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
	/* A topic names no mailbox: no "create it" hint. */
	c->enoent = "not found";

	r = ctl_connect(c);
	if (r)
		goto out;
	r = msg_payload(c, optind < argc ? argv[optind] : NULL, &data, &len,
			&owned);
	if (r)
		goto out;
	r = mbox_publish(c->m, c->target, data, len, &mo.opts, &copies);
	if (r < 0) {
		r = ctl_fail(c, r, "not published");
		goto out;
	}
	skipped = mbox_publish_skipped(c->m);
	if (skipped) {
		fprintf(stderr,
			"mboxctl: publish %s: %zu full mailbox%s of other "
			"owners left out (no copy stored there); the broker's "
			"log names them\n",
			c->target, skipped, skipped == 1 ? "" : "es");
	}
	if (json)
		printf("{\"copies\":%zu,\"skipped\":%zu}\n", copies, skipped);
	else
		printf("%zu\n", copies);
	snprintf(done, sizeof(done), "published as %zu copies", copies);
	r = flush_stdout(c, done, "the count");
out:
	if (owned)
		free(data);
	msgopts_free(&mo);
	return r;
}
