/*
 * rpc.c - request / reply on top of POST and RECV: mbox_call posts a
 * request carrying reply-to and correlation-id headers and waits for the
 * answer in a temporary mailbox of its own; mbox_reply posts the answer
 * where the request says.
 *
 * The reply mailbox is created on the first call and lives as long as
 * the connection (it is temp=1): one per handle, reused by every call.
 * Replies that arrive after their call gave up are acked and dropped by
 * the next call.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "client/libmbox-int.h"

#define HDR_REPLY_TO	   "reply-to"
#define HDR_CORRELATION_ID "correlation-id"

/* n random bytes as 2n lowercase hex digits and a NUL into out. */
static int
random_hex(mbox *m, char *out, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t buf[32];
	size_t got = 0, i;

	if (n > sizeof(buf))
		return -EINVAL;
	while (got < n) {
		ssize_t r = getrandom(buf + got, n - got, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			error_set(m, "getrandom: %s", strerror(errno));
			return -errno;
		}
		got += (size_t)r;
	}
	for (i = 0; i < n; i++) {
		out[2 * i] = hex[buf[i] >> 4];
		out[2 * i + 1] = hex[buf[i] & 15];
	}
	out[2 * n] = '\0';
	return 0;
}

/*
 * A new {key, value, ..., NULL} array: headers (may be NULL) followed by
 * the pairs k1=v1 and, if k2 is not NULL, k2=v2. Only the array is
 * allocated; the strings stay the callers'.
 */
static const char **
headers_join(const char *const *headers, const char *k1, const char *v1,
	     const char *k2, const char *v2)
{
	const char **h;
	size_t n = 0, i;

	while (headers && headers[n])
		n++;
	h = malloc((n + 5) * sizeof(*h));
	if (!h)
		return NULL;
	for (i = 0; i < n; i++)
		h[i] = headers[i];
	if (n % 2) {
		/* A key without value: leave it last, for post_item_check
		 * to name it. */
		h[n] = NULL;
		return h;
	}
	h[n++] = k1;
	h[n++] = v1;
	if (k2) {
		h[n++] = k2;
		h[n++] = v2;
	}
	h[n] = NULL;
	return h;
}

/* The call's temporary reply mailbox, created on first use. */
static int
call_reply_box(mbox *m)
{
	static const char *const settings[] = {"temp=1", "mode=0622", NULL};
	char name[64], rnd[17];
	int r;

	if (m->reply_box)
		return 0;
	r = random_hex(m, rnd, 8);
	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "reply.%ld.%s", (long)getpid(), rnd);
	r = mbox_create(m, name, settings);
	if (r < 0)
		return r;
	m->reply_box = strdup(name);
	if (!m->reply_box) {
		/* The mailbox stays until the connection closes; harmless. */
		error_set(m, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/*
 * Take what is in the reply mailbox, waiting up to wait_ms for the first
 * one; ack all of it. The one with correlation id cid, if there, goes to
 * *reply; earlier calls' late replies are dropped.
 */
static int
call_take(mbox *m, const char *cid, uint64_t wait_ms, mbox_msg **reply)
{
	mbox_msg *msgs[16];
	uint64_t ids[16];
	size_t n = 0, i;
	int r;

	r = consume_recv(m, m->reply_box, 16, wait_ms, 0, msgs, &n);
	if (r < 0)
		return r;
	for (i = 0; i < n; i++) {
		const char *c = mbox_msg_header(msgs[i], HDR_CORRELATION_ID);

		ids[i] = mbox_msg_id(msgs[i]);
		if (!*reply && c && strcmp(c, cid) == 0)
			*reply = msgs[i];
		else
			mbox_msg_free(msgs[i]);
	}
	if (n == 0)
		return 0;
	r = consume_settle(m, MBOX_OP_ACK, ids, n, 0, 0, NULL);
	/*
	 * With the reply in hand a failed ack costs nothing: the mailbox is
	 * ours, and a later call drops what comes back.
	 */
	return *reply ? 0 : r;
}

static int
call_check(mbox *m, const mbox_post_opts *opts)
{
	const char *const *h = opts ? opts->headers : NULL;
	size_t i;

	for (i = 0; h && h[i] && h[i + 1]; i += 2) {
		if (strcmp(h[i], HDR_REPLY_TO) == 0 ||
		    strcmp(h[i], HDR_CORRELATION_ID) == 0) {
			error_set(m, "header \"%s\" is set by the call", h[i]);
			return -EINVAL;
		}
	}
	return 0;
}

int
mbox_call(mbox *m, const char *mailbox, const void *data, size_t len,
	  const mbox_post_opts *opts, int64_t timeout_ms, mbox_msg **reply)
{
	mbox_post_opts o = {0};
	const char **headers;
	char cid[2 * 16 + 1];
	int64_t deadline;
	int r;

	if (reply)
		*reply = NULL;
	r = core_enter(m);
	if (r < 0)
		return r;
	if (!reply) {
		error_set(m, "no place for the reply given");
		return -EINVAL;
	}
	r = check_name(m, mailbox);
	if (r < 0)
		return r;
	r = call_check(m, opts);
	if (r < 0)
		return r;
	deadline = core_deadline_after(timeout_ms < 0 ? 0 : timeout_ms);
	r = random_hex(m, cid, 16);
	if (r < 0)
		return r;
	r = call_reply_box(m);
	if (r < 0)
		return r;
	if (opts)
		o = *opts;
	headers = headers_join(o.headers, HDR_REPLY_TO, m->reply_box,
			       HDR_CORRELATION_ID, cid);
	if (!headers) {
		error_set(m, "out of memory");
		return -ENOMEM;
	}
	o.headers = headers;
	r = mbox_post(m, mailbox, data, len, &o, NULL);
	free(headers);
	if (r < 0)
		return r;
	for (;;) {
		uint64_t w = core_wait_slice(deadline, timeout_ms < 0);

		r = call_take(m, cid, w, reply);
		if (r < 0 || *reply)
			return r;
		if (timeout_ms >= 0 && deadline - core_now_ms() <= 0)
			break;
	}
	error_set(m, "no reply from %.64s within %lld ms", mailbox,
		  (long long)timeout_ms);
	return -ETIMEDOUT;
}

int
mbox_reply(mbox *m, const mbox_msg *request, const void *data, size_t len,
	   const char *const *headers)
{
	mbox_post_opts o = {0};
	const char *to, *cid;
	const char **h;
	int r;

	r = core_enter(m);
	if (r < 0)
		return r;
	to = request ? mbox_msg_header(request, HDR_REPLY_TO) : NULL;
	if (!to) {
		error_set(m, "the request has no reply-to header");
		return -EINVAL;
	}
	cid = mbox_msg_header(request, HDR_CORRELATION_ID);
	h = cid ? headers_join(headers, HDR_CORRELATION_ID, cid, NULL, NULL)
		: NULL;
	if (cid && !h) {
		error_set(m, "out of memory");
		return -ENOMEM;
	}
	o.headers = h ? h : headers;
	{
		/* Never create the caller's mailbox: if it gave up and its
		 * temporary mailbox is gone, the answer has nowhere to go.
		 * Only into a mailbox of the caller's uid: anyone who may
		 * post a request names reply-to, and the answer goes out
		 * with our identity and our permissions. */
		mbox_post_item item = {.data = data, .len = len, .opts = &o};
		r = post_batch(m, to, &item, 1, NULL, MBOX_POST_NO_CREATE,
			       (int64_t)mbox_msg_sender_uid(request));
	}
	free(h);
	return r;
}
