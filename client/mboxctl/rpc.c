/*
 * rpc.c - `mboxctl call` and `mboxctl serve`: synchronous request /
 * reply between shells (doc/protocol.md 5.24).
 *
 * The convention both sides keep: a reply carries the header `status`,
 * the server's exit code in decimal ("0": success, the payload is the
 * answer); when it is not "0" the payload is the error text (the
 * command's stderr). A reply without `status` counts as success, so
 * `call` also works against servers written with mbox_reply alone.
 *
 * serve is the worker loop of work.c with the commands' output captured
 * and a finish step that replies before the request is acked.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mbox-proto.h"

#include "client/mboxctl/rpc.h"
#include "client/mboxctl/work.h"

#define RPC_STATUS	"status"
#define RPC_TIMEOUT_MS	30000
#define RPC_ERR_MAX	65536u /* stderr bytes kept for an error reply */
#define RPC_HEADERS_MAX 64
#define RPC_READ_CHUNK	65536

static const char call_help[] =
	"Usage: mboxctl call MAILBOX [DATA] [OPTIONS]\n"
	"\n"
	"Send DATA (else all of standard input) to MAILBOX as a request, wait "
	"for\n"
	"the reply, and write its payload to standard output exactly as it "
	"is\n"
	"(nothing added). The request carries the headers reply-to (a "
	"temporary\n"
	"mailbox of this call) and correlation-id; a server (mboxctl serve, "
	"or\n"
	"mbox_reply) answers there. The request expires (goes to the dead "
	"list\n"
	"as expired) if no server took it before the timeout.\n"
	"\n"
	"Exit codes: 0 the reply came; 1 an error reply came (header status\n"
	"not \"0\": its payload, the server's error text, is written to "
	"standard\n"
	"error) or the call failed; 2 a bad argument; 3 no reply before the\n"
	"timeout; 4, 5, 6 as for every verb.\n"
	"\n"
	"Options:\n"
	"  -t, --timeout SECS    how long to wait for the reply (default 30s;\n"
	"                        'forever' or -1: no limit)\n"
	"  -H, --header K=V      add header K (repeatable; not reply-to or\n"
	"                        correlation-id)\n" CTL_COMMON_HELP "\n"
	"SECS is a decimal number with an optional unit: ms, s, m, h "
	"(default s).\n";

static const char serve_help[] =
	"Usage: mboxctl serve MAILBOX [OPTIONS] -- CMD [ARG...]\n"
	"\n"
	"Answer the requests (from mboxctl call) that come to MAILBOX: run "
	"CMD\n"
	"(no shell) for each, with the request's payload on its standard "
	"input\n"
	"and its metadata in MBOX_* variables as for 'mboxctl work'. Then "
	"reply:\n"
	"  CMD exits 0           its standard output is the reply, header "
	"status=0\n"
	"  CMD exits N (not 0)   an error reply: header status=N, payload "
	"CMD's\n"
	"                        standard error (at most 64 KiB); killed by "
	"signal\n"
	"                        S: status=128+S\n"
	"  output too large      (beyond the broker's max message size): an "
	"error\n"
	"                        reply with status=1\n"
	"and acknowledge the request. A message without a reply-to header is "
	"not\n"
	"a request: it goes to the dead list. SIGINT or SIGTERM: take no more\n"
	"requests, answer the running ones, exit 0.\n"
	"\n"
	"Options:\n"
	"  -j, --jobs N          answer up to N requests at once (1-1024, "
	"default 1)\n"
	"      --lease SECS      lease length (default: the "
	"mailbox's)\n" CTL_COMMON_HELP "\n"
	"SECS is a decimal number with an optional unit: ms, s, m, h "
	"(default s).\n";

enum {
	OPT_LEASE = 256,
};

/* ---- call ---- */

static int
call_read_stdin(Ctl *c, uint8_t **out, size_t *len)
{
	size_t max = mbox_max_msg_size(c->m), cap = 0;
	uint8_t *buf = NULL;

	*len = 0;
	for (;;) {
		ssize_t n;

		if (cap - *len < RPC_READ_CHUNK) {
			uint8_t *p = realloc(buf, cap + 4 * RPC_READ_CHUNK);

			if (!p) {
				free(buf);
				return ctl_error(c, "out of memory");
			}
			buf = p;
			cap += 4 * RPC_READ_CHUNK;
		}
		n = read(STDIN_FILENO, buf + *len, cap - *len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(buf);
			return ctl_error(c, "cannot read standard input: %s",
					 strerror(errno));
		}
		if (n == 0)
			break;
		*len += (size_t)n;
		if (*len > max) {
			free(buf);
			return ctl_error(c,
					 "request too large: standard input "
					 "holds more than the broker's limit "
					 "of %zu bytes",
					 max);
		}
	}
	*out = buf;
	return 0;
}

static int
call_parse_header(Ctl *c, const char **h, size_t *n, char *arg)
{
	char *eq = strchr(arg, '=');

	if (!eq || eq == arg)
		return ctl_usage(c, "bad header '%s' (K=V, K not empty)", arg);
	if (*n + 2 >= RPC_HEADERS_MAX)
		return ctl_usage(c, "too many headers");
	*eq = '\0';
	h[(*n)++] = arg;
	h[(*n)++] = eq + 1;
	h[*n] = NULL;
	return 0;
}

/* Print the reply, or its error text; the exit code. */
static int
call_output(Ctl *c, mbox_msg *reply)
{
	const char *status = mbox_msg_header(reply, RPC_STATUS);
	size_t len;
	const void *data = mbox_msg_data(reply, &len);

	if (status && strcmp(status, "0") != 0) {
		fflush(stdout);
		fwrite(data, 1, len, stderr);
		if (len == 0 || ((const char *)data)[len - 1] != '\n')
			fputc('\n', stderr);
		fprintf(stderr,
			"mboxctl: call %s: the server answered with "
			"status %s\n",
			c->target, status);
		return CTL_EXIT_ERROR;
	}
	if (fwrite(data, 1, len, stdout) != len || fflush(stdout) != 0)
		return ctl_error(c, "cannot write to standard output: %s",
				 strerror(errno));
	return CTL_EXIT_OK;
}

int
cmd_call(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"timeout", required_argument, NULL, 't'},
		{"header", required_argument, NULL, 'H'},
		CTL_COMMON_OPTIONS,
		{0},
	};
	const char *headers[RPC_HEADERS_MAX] = {NULL};
	mbox_post_opts po = {.headers = headers};
	int64_t timeout_ms = RPC_TIMEOUT_MS;
	uint8_t *data = NULL;
	const char *arg = NULL;
	mbox_msg *reply = NULL;
	size_t n_headers = 0, len = 0;
	uint64_t v;
	int opt, r;

	while ((opt = getopt_long(argc, argv, ":S:ht:H:", opts, NULL)) != -1) {
		switch (opt) {
		case 't':
			if (strcmp(optarg, "forever") == 0 ||
			    strcmp(optarg, "-1") == 0) {
				timeout_ms = -1;
				break;
			}
			/* 0 would post a request without a ttl and leave
			 * at once: it would be served for nobody. */
			if (ctl_parse_duration_ms(optarg, &v) < 0 || v == 0 ||
			    v > INT64_MAX / 1000000)
				return ctl_usage(c, "bad timeout '%s'", optarg);
			timeout_ms = (int64_t)v;
			break;
		case 'H':
			r = call_parse_header(c, headers, &n_headers, optarg);
			if (r)
				return r;
			break;
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(call_help, stdout);
			return CTL_EXIT_OK;
		default:
			return ctl_bad_option(c, opt, argv);
		}
	}
	r = ctl_take_mailbox(c, argc, argv, "MAILBOX [DATA]");
	if (r >= 0)
		return r;
	if (optind < argc)
		arg = argv[optind++];
	if (optind < argc)
		return ctl_usage(c, "unexpected argument '%s'", argv[optind]);

	/* A request nobody took in time must not be done later for a
	 * caller who gave up: it expires (to the dead list) instead. */
	if (timeout_ms > 0)
		po.ttl_ms = (uint64_t)timeout_ms;
	/* The reply is taken from its mailbox once printed. */
	if ((!arg && (r = ctl_need_stdin(c)) != 0) ||
	    (r = ctl_need_stdout(c)) != 0)
		return r;
	r = ctl_connect(c);
	if (r)
		return r;
	if (!arg) {
		r = call_read_stdin(c, &data, &len);
		if (r)
			return r;
	}
	r = mbox_call(c->m, c->target, arg ? (const void *)arg : data,
		      arg ? strlen(arg) : len, &po, timeout_ms, &reply);
	free(data);
	if (r == -ETIMEDOUT) {
		fprintf(stderr,
			"mboxctl: call %s: no reply within %.3f s; is a server "
			"running (mboxctl serve %s -- CMD)?\n",
			c->target, (double)timeout_ms / 1000.0, c->target);
		return ctl_empty(c); /* and says so if it is paused */
	}
	if (r == -ESHUTDOWN || r == -ECONNRESET) {
		/* Not "repeat it": the request may be stored already. */
		fprintf(stderr,
			"mboxctl: call %s: the broker %s while the call was "
			"under way; the request may have been stored and may "
			"still be served until its timeout runs out: repeat "
			"the call only if doing it twice is harmless\n",
			c->target, r == -ESHUTDOWN ? "stopped" : "went away");
		return CTL_EXIT_ERROR;
	}
	if (r < 0)
		return ctl_fail(c, r, NULL);
	r = call_output(c, reply);
	mbox_msg_free(reply);
	return r;
}

/* ---- serve ---- */

static int
serve_reply(Ctl *c, const mbox_msg *req, const void *data, size_t len,
	    int status)
{
	char sbuf[16];
	const char *h[] = {RPC_STATUS, sbuf, NULL};

	snprintf(sbuf, sizeof(sbuf), "%d", status);
	return mbox_reply(c->m, req, data, len, h);
}

/* The error reply's text: the command's stderr, or a word of ours. */
static int
serve_error(Ctl *c, Child *ch, int code)
{
	char text[256];

	if (ch->out.overflow) {
		snprintf(text, sizeof(text),
			 "mboxctl serve: the reply is larger than the broker's "
			 "max message size (%zu bytes)\n",
			 mbox_max_msg_size(c->m));
		return serve_reply(c, ch->msg, text, strlen(text),
				   code ? code : 1);
	}
	if (ch->err.len)
		return serve_reply(c, ch->msg, ch->err.data, ch->err.len, code);
	if (code > 128)
		snprintf(text, sizeof(text),
			 "mboxctl serve: the command was killed by signal "
			 "%d\n",
			 code - 128);
	else
		snprintf(text, sizeof(text),
			 "mboxctl serve: the command exited with status %d\n",
			 code);
	return serve_reply(c, ch->msg, text, strlen(text), code);
}

/* A message without reply-to is not a request: not run, dead-listed. */
static bool
serve_accept(Ctl *c, const mbox_msg *msg)
{
	if (mbox_msg_header(msg, "reply-to"))
		return true;
	fprintf(stderr,
		"mboxctl: serve %s: message %" PRIu64 " is not a request (no "
		"reply-to header): moving it to the dead list unrun\n",
		c->target, mbox_msg_id(msg));
	return false;
}

static WorkSettle
serve_finish(Ctl *c, Child *ch)
{
	int code = child_exit_code(ch), r;
	uint64_t id = mbox_msg_id(ch->msg);

	/* The command's diagnostics are the operator's too (work's go
	 * straight to its stderr); on failure the caller also gets them. */
	if (ch->err.len) {
		fflush(stdout);
		fwrite(ch->err.data, 1, ch->err.len, stderr);
		if (ch->err.data[ch->err.len - 1] != '\n')
			fputc('\n', stderr);
	}
	if (code != 0)
		fprintf(stderr,
			"mboxctl: serve %s: request %" PRIu64 ": the command "
			"%s %d; the caller gets an error reply\n",
			c->target, id,
			code > 128 ? "was killed by signal"
				   : "exited with status",
			code > 128 ? code - 128 : code);
	if (code == 0 && !ch->out.overflow)
		r = serve_reply(c, ch->msg, ch->out.data, ch->out.len, 0);
	else
		r = serve_error(c, ch, code);
	if (r == 0)
		return WORK_ACK;
	if (r == -ENOENT) {
		/* Not our mailbox that is missing: ctl_fail's "create it"
		 * hint would name the wrong one. */
		fprintf(stderr,
			"mboxctl: serve %s: request %" PRIu64 ": the caller "
			"is gone (its reply mailbox no longer exists); the "
			"answer is dropped\n",
			c->target, id);
		return WORK_ACK;
	}
	ctl_fail(c, r, "cannot reply");
	/* The caller is gone or refuses us, or the broker does not take
	 * the reply (-EBADMSG: one older than this mboxctl, without POST's
	 * OWNER_UID): retrying cannot help. */
	if (r == -ENOENT || r == -EACCES || r == -EINVAL || r == -EMSGSIZE ||
	    r == -EBADMSG)
		return WORK_ACK;
	return WORK_NACK;
}

int
cmd_serve(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"jobs", required_argument, NULL, 'j'},
		{"lease", required_argument, NULL, OPT_LEASE},
		CTL_COMMON_OPTIONS,
		{0},
	};
	WorkOpts o = {.jobs = 1,
		      .reject_exit = -1,
		      .wait_ms = -1,
		      .finish = serve_finish,
		      .accept = serve_accept};
	uint64_t v;
	int opt, r;

	while ((opt = getopt_long(argc, argv, ":S:hj:", opts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			if (ctl_parse_u64(optarg, &v) < 0 || v == 0 ||
			    v > MBOX_WINDOW_MAX)
				return ctl_usage(c, "bad job count '%s' (1-%u)",
						 optarg, MBOX_WINDOW_MAX);
			o.jobs = (unsigned)v;
			break;
		case OPT_LEASE:
			if (ctl_parse_duration_ms(optarg, &o.lease_ms) < 0 ||
			    o.lease_ms == 0)
				return ctl_usage(c, "bad lease '%s'", optarg);
			break;
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(serve_help, stdout);
			return CTL_EXIT_OK;
		default:
			return ctl_bad_option(c, opt, argv);
		}
	}
	r = ctl_take_mailbox(c, argc, argv, "MAILBOX -- CMD");
	if (r >= 0)
		return r;
	if (optind < argc && strcmp(argv[optind], "--") == 0)
		optind++;
	if (optind >= argc)
		return ctl_usage(c,
				 "which command? (mboxctl serve %s -- CMD "
				 "[ARG...])",
				 c->target);
	o.cmd = argv + optind;
	r = child_find_cmd(o.cmd[0]);
	if (r < 0)
		return ctl_usage(c, "cannot run '%s': %s", o.cmd[0],
				 strerror(-r));
	r = ctl_connect(c);
	if (r)
		return r;
	o.io = (ChildIo){
		.capture = true,
		.out_max = mbox_max_msg_size(c->m),
		.err_max = RPC_ERR_MAX < mbox_max_msg_size(c->m)
				   ? RPC_ERR_MAX
				   : mbox_max_msg_size(c->m),
		.socket = c->socket,
	};
	return work_loop(c, &o);
}
