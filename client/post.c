/*
 * post.c - putting messages in: POST of one message or a batch, and
 * PUBLISH to a topic for fan-out.
 *
 * A message is checked against the broker's limits (HELLO's MAX_MSG_SIZE,
 * the protocol's header limits) before anything is sent, and encoded as
 * one MSG field by the same code for POST and PUBLISH. A batch is one
 * frame: the broker stores it all or nothing.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "client/libmbox-int.h"
#include "client/proto.h"

/* The headers of one message: {key, value, ..., NULL}, may be NULL. */
static int
post_headers_check(mbox *m, const char *what, const char *const *h)
{
	size_t i, j, total = 0;

	for (i = 0; h && h[i]; i += 2) {
		size_t klen = strlen(h[i]);

		if (!h[i + 1]) {
			error_set(m, "%sheader \"%.64s\" has no value", what,
				  h[i]);
			return -EINVAL;
		}
		if (klen == 0 || klen > MBOX_NAME_MAX || !check_utf8(h[i]) ||
		    !check_utf8(h[i + 1])) {
			error_set(m,
				  "%sheader keys are 1-%u bytes and values "
				  "UTF-8",
				  what, MBOX_NAME_MAX);
			return -EINVAL;
		}
		for (j = 0; j < i; j += 2) {
			if (strcmp(h[i], h[j]) == 0) {
				error_set(m, "%sheader \"%.64s\" given twice",
					  what, h[i]);
				return -EINVAL;
			}
		}
		total += klen + strlen(h[i + 1]);
	}
	if (total > MBOX_HEADERS_MAX) {
		/* Too large, as the broker says (-EMSGSIZE) of headers
		 * beyond its own max_header_bytes. */
		error_set(m, "%sheaders take %zu bytes, more than %u", what,
			  total, MBOX_HEADERS_MAX);
		return -EMSGSIZE;
	}
	return 0;
}

/*
 * Client-side checks of message idx of n to post: cheap, and clearer
 * errors than the broker's.
 */
static int
post_item_check(mbox *m, size_t idx, size_t n, const void *data, size_t len,
		const mbox_post_opts *o)
{
	char what[32] = ""; /* "message 3: " in a batch */

	if (n > 1)
		snprintf(what, sizeof(what), "message %zu: ", idx);
	if (!data && len) {
		error_set(m, "%sno data", what);
		return -EINVAL;
	}
	if (len > m->max_msg_size) {
		error_set(m,
			  "%s%zu bytes exceed the broker's limit of %zu bytes",
			  what, len, m->max_msg_size);
		return -EMSGSIZE;
	}
	if (!o)
		return 0;
	if (o->priority > MBOX_PRIORITY_MAX) {
		error_set(m, "%spriority %u is not 0-%u", what, o->priority,
			  MBOX_PRIORITY_MAX);
		return -EINVAL;
	}
	if (o->dedup && (!o->dedup[0] || strlen(o->dedup) > MBOX_NAME_MAX ||
			 !check_utf8(o->dedup))) {
		error_set(m, "%sa dedup key is 1-%u bytes of UTF-8", what,
			  MBOX_NAME_MAX);
		return -EINVAL;
	}
	return post_headers_check(m, what, o->headers);
}

static void
post_item_put(ProtoWriter *w, const void *data, size_t len,
	      const mbox_post_opts *o)
{
	const char *const *h;
	size_t i;

	proto_nest_begin(w, MBOX_TAG_MSG);
	proto_put_bytes(w, MBOX_TAG_DATA, data ? data : core_empty, len);
	if (o) {
		if (o->priority)
			proto_put_u64(w, MBOX_TAG_PRIORITY, o->priority);
		if (o->delay_ms)
			proto_put_u64(w, MBOX_TAG_DELAY_MS, o->delay_ms);
		if (o->ttl_ms)
			proto_put_u64(w, MBOX_TAG_TTL_MS, o->ttl_ms);
		if (o->dedup)
			proto_put_str(w, MBOX_TAG_DEDUP, o->dedup);
		h = o->headers;
		for (i = 0; h && h[i]; i += 2) {
			proto_nest_begin(w, MBOX_TAG_HEADER);
			proto_put_str(w, MBOX_TAG_KEY, h[i]);
			proto_put_str(w, MBOX_TAG_VALUE, h[i + 1]);
			proto_nest_end(w);
		}
	}
	proto_nest_end(w);
}

/* Collect the reply's ID fields, in order; exactly n of them. */
static int
post_reply_ids(mbox *m, const Frame *fr, size_t n, uint64_t *ids)
{
	ProtoReader rd;
	ProtoField fl;
	size_t got = 0;
	int r;

	core_frame_reader(&rd, fr);
	while ((r = proto_reader_next(&rd, &fl)) > 0) {
		if (fl.tag != MBOX_TAG_ID)
			continue;
		if (got < n && ids)
			ids[got] = proto_get_u64(fl.val);
		got++;
	}
	if (r < 0 || got != n) {
		error_set(m, "the broker answered %zu posts with %zu ids", n,
			  got);
		return -EPROTO;
	}
	return 0;
}

int
post_batch(mbox *m, const char *mailbox, const mbox_post_item *items, size_t n,
	   uint64_t *ids, unsigned flags, int64_t owner_uid)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	size_t i;
	int r;

	r = core_enter_mailbox(m, mailbox);
	if (r < 0)
		return r;
	if (!items || n == 0 || n > MBOX_RECV_MAX) {
		error_set(m, "a batch holds 1-%u messages", MBOX_RECV_MAX);
		return -EINVAL;
	}
	for (i = 0; i < n; i++) {
		r = post_item_check(m, i, n, items[i].data, items[i].len,
				    items[i].opts);
		if (r < 0)
			return r;
	}
	id = core_begin(m, MBOX_OP_POST);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	if (flags)
		proto_put_u64(&m->tx, MBOX_TAG_FLAGS, flags);
	if (owner_uid >= 0)
		proto_put_u64(&m->tx, MBOX_TAG_OWNER_UID, (uint64_t)owner_uid);
	for (i = 0; i < n; i++)
		post_item_put(&m->tx, items[i].data, items[i].len,
			      items[i].opts);
	r = core_call(m, id, MBOX_OP_POST, &fr, &f, PROTO_BIT(MBOX_TAG_ID));
	if (r < 0)
		return r;
	r = post_reply_ids(m, fr, n, ids);
	core_frame_free(fr);
	return r;
}

int
mbox_post_batch(mbox *m, const char *mailbox, const mbox_post_item *items,
		size_t n, uint64_t *ids)
{
	return post_batch(m, mailbox, items, n, ids, 0, -1);
}

int
mbox_post(mbox *m, const char *mailbox, const void *data, size_t len,
	  const mbox_post_opts *opts, uint64_t *id)
{
	mbox_post_item item = {.data = data, .len = len, .opts = opts};
	uint64_t tmp;
	int r;

	r = mbox_post_batch(m, mailbox, &item, 1, &tmp);
	if (r == 0 && id)
		*id = tmp;
	return r;
}

/* -------------------------------------------------------------------- */
/* Fan-out */

int
mbox_publish(mbox *m, const char *topic, const void *data, size_t len,
	     const mbox_post_opts *opts, size_t *copies)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	if (copies)
		*copies = 0;
	if (m)
		m->publish_skipped = 0;
	r = core_enter(m);
	if (r < 0)
		return r;
	r = check_topic(m, topic, false);
	if (r < 0)
		return r;
	if (opts && opts->dedup) {
		error_set(m, "a published message takes no dedup key");
		return -EINVAL;
	}
	r = post_item_check(m, 0, 1, data, len, opts);
	if (r < 0)
		return r;
	id = core_begin(m, MBOX_OP_PUBLISH);
	proto_put_str(&m->tx, MBOX_TAG_TOPIC, topic);
	post_item_put(&m->tx, data, len, opts);
	r = core_call(m, id, MBOX_OP_PUBLISH, &fr, &f,
		      PROTO_BIT(MBOX_TAG_COUNT));
	if (r == 0 && copies)
		*copies = (size_t)proto_u64(&f, MBOX_TAG_COUNT, 0);
	if (r == 0)
		m->publish_skipped = (size_t)proto_u64(&f, MBOX_TAG_SKIPPED, 0);
	core_frame_free(fr);
	return r;
}

size_t
mbox_publish_skipped(const mbox *m)
{
	return m ? m->publish_skipped : 0;
}
