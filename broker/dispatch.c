/*
 * dispatch.c - opcode -> handler: validation, permission checks, error
 * replies, and the store calls of each operation.
 *
 * Every handler validates its whole request before it changes anything,
 * so a bad request costs nothing but its error reply. Writes go into the
 * broker's open transaction and are answered after the commit (PendingOp);
 * reads are answered at once.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/request.h"
#include "broker/settings.h"

void
reply_error(Request *q, unsigned status, const char *limit, const char *text)
{
	conn_reply_error(q->c, q->h->opcode, q->h->id, status, limit, "%s",
			 text);
}

void
reply_errorf(Request *q, unsigned status, const char *limit, const char *fmt,
	     ...)
{
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	reply_error(q, status, limit, text);
}

ProtoWriter *
reply_begin(Request *q)
{
	ProtoWriter *w = &q->b->w;

	proto_writer_begin(w, q->h->opcode, MBOX_FLAG_REPLY, q->h->id,
			   MBOX_S_OK);
	return w;
}

void
reply_empty(Request *q)
{
	conn_send_writer(q->c, reply_begin(q));
}

int
request_txn(Request *q)
{
	if (broker_txn(q->b) < 0) {
		reply_error(q, MBOX_S_STORE, NULL,
			    "the store failed: cannot begin a transaction");
		return -EIO;
	}
	return 0;
}

void
request_defer(Request *q, enum pending_kind kind, uint64_t *ids,
	      PendingLease *leases, size_t n)
{
	if (broker_defer(q->b, kind, q->c, q->h->opcode, q->h->id, ids, leases,
			 n) < 0)
		conn_close(q->c, "out of memory");
}

int
request_check(Request *q, uint64_t allowed, uint64_t required)
{
	char why[128];

	if (proto_fields_check(&q->f, allowed, required, why) < 0) {
		reply_error(q, MBOX_S_MALFORMED, NULL, why);
		return -EBADMSG;
	}
	return 0;
}

int
request_name(Request *q, char name[MBOX_NAME_MAX + 1])
{
	ProtoSlice s = q->f.first[MBOX_TAG_MAILBOX];

	if (!proto_name_valid(s.ptr, s.len)) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "invalid mailbox name: use 1-200 characters of "
			    "A-Z a-z 0-9 . _ -");
		return -EINVAL;
	}
	memcpy(name, s.ptr, s.len);
	name[s.len] = '\0';
	return 0;
}

/* Say how many denials the rate limit left out, before the next. */
static void
log_denials_quiet(Broker *b, size_t quiet)
{
	if (quiet)
		log_write(b->log, LOG_NOTICE,
			  "%zu permission denials were not logged (at most "
			  "%d lines a second)",
			  quiet, DENY_LOG_PER_S);
}

/* A client that asks in a loop must not flood the log (rate limit). */
void
log_denial(Request *q, const char *name)
{
	size_t quiet;

	if (!broker_deny_log_ok(q->b, &quiet))
		return;
	log_denials_quiet(q->b, quiet);
	log_write(q->b->log, LOG_NOTICE,
		  "permission denied: uid %u pid %d (%s) %s on mailbox %s",
		  (unsigned)q->c->uid, (int)q->c->pid, q->c->comm,
		  proto_op_name(q->h->opcode), name);
}

/*
 * A mailbox the caller may not touch at all answers DENIED too:
 * existence is all it reveals.
 */
StoreMailbox *
request_mailbox(Request *q, unsigned want)
{
	char name[MBOX_NAME_MAX + 1];
	StoreMailbox *mb;

	if (request_name(q, name) < 0)
		return NULL;
	mb = store_mailbox_get(q->b->store, name);
	if (!mb) {
		/* Creating it is no advice to one who would delete it. */
		if (q->h->opcode == MBOX_OP_DELETE)
			reply_errorf(q, MBOX_S_NOT_FOUND, NULL,
				     "no such mailbox: %s", name);
		else
			reply_errorf(q, MBOX_S_NOT_FOUND, NULL,
				     "no such mailbox: %s (create it with "
				     "'mboxctl create %s')",
				     name, name);
		return NULL;
	}
	if (want == REQUEST_OWNER ? !acl_may_own(&q->c->peer, mb)
				  : !acl_may(&q->c->peer, mb, want)) {
		log_denial(q, name);
		reply_error(q, MBOX_S_DENIED, NULL, "permission denied");
		return NULL;
	}
	return mb;
}

static void
op_hello(Request *q)
{
	ProtoWriter *w = &q->b->w;
	uint64_t lo, hi;

	if (request_check(
		    q, BIT(MBOX_TAG_VERSION_MIN) | BIT(MBOX_TAG_VERSION_MAX),
		    BIT(MBOX_TAG_VERSION_MIN) | BIT(MBOX_TAG_VERSION_MAX)) < 0)
		return;
	if (q->c->hello_done) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "HELLO was already done on this connection");
		return;
	}
	lo = proto_u64(&q->f, MBOX_TAG_VERSION_MIN, 0);
	hi = proto_u64(&q->f, MBOX_TAG_VERSION_MAX, 0);
	if (lo > MBOX_PROTO_VERSION || hi < MBOX_PROTO_VERSION || lo > hi) {
		conn_reply_error(q->c, q->h->opcode, q->h->id, MBOX_S_VERSION,
				 NULL,
				 "this broker speaks protocol version %u only, "
				 "the client offered %llu..%llu",
				 MBOX_PROTO_VERSION, (unsigned long long)lo,
				 (unsigned long long)hi);
		conn_close(q->c, "no common protocol version");
		return;
	}
	q->c->hello_done = true;
	proto_writer_begin(w, q->h->opcode, MBOX_FLAG_REPLY, q->h->id,
			   MBOX_S_OK);
	proto_put_u64(w, MBOX_TAG_VERSION, MBOX_PROTO_VERSION);
	proto_put_u64(w, MBOX_TAG_MAX_MSG_SIZE, q->b->cfg.max_msg_size);
	proto_put_u64(w, MBOX_TAG_MAX_FRAME, q->c->assembler.max_body);
	proto_put_str(w, MBOX_TAG_SERVER, PACKAGE_NAME " " PACKAGE_VERSION);
	proto_put_u64(w, MBOX_TAG_SENDER_PID, (uint64_t)q->c->pid);
	proto_put_u64(w, MBOX_TAG_SENDER_UID, q->c->uid);
	proto_put_u64(w, MBOX_TAG_SENDER_GID, q->c->gid);
	conn_send_writer(q->c, w);
}

static void
op_ping(Request *q)
{
	if (request_check(q, 0, 0) < 0)
		return;
	reply_empty(q);
}

void
mailbox_defaults(StoreMailbox *mb, const Conn *c, const char *name)
{
	memset(mb, 0, sizeof(*mb));
	snprintf(mb->name, sizeof(mb->name), "%s", name);
	mb->owner_uid = c->uid;
	mb->gid = c->gid;
	mb->mode = 0600;
	mb->lease_ms = MBOX_DEFAULT_LEASE_MS;
}

/*
 * Answer LIMIT if creating mailbox name, owned by the caller, would pass
 * max_mailboxes or the caller's max_mailboxes_per_uid (admins are not
 * counted per uid, as for connections).
 */
static bool
mailbox_limit_hit(Request *q, const char *name)
{
	const BrokerConfig *cfg = &q->b->cfg;
	size_t n = store_mailbox_count(q->b->store);

	if (n >= cfg->max_mailboxes) {
		reply_errorf(q, MBOX_S_LIMIT, "max_mailboxes",
			     "cannot create mailbox %s: the broker holds %zu "
			     "mailboxes (max_mailboxes is %zu); delete unused "
			     "ones ('mboxctl rm') or raise mboxd "
			     "--max-mailboxes",
			     name, n, cfg->max_mailboxes);
		return true;
	}
	if (acl_is_admin(&q->c->peer))
		return false;
	n = store_mailbox_count_owned(q->b->store, q->c->uid);
	if (n < cfg->max_mailboxes_per_uid)
		return false;
	reply_errorf(q, MBOX_S_LIMIT, "max_mailboxes_per_uid",
		     "cannot create mailbox %s: uid %lu owns %zu mailboxes "
		     "(max_mailboxes_per_uid is %zu); delete unused ones "
		     "('mboxctl rm') or ask the operator to raise mboxd "
		     "--max-mailboxes-per-uid",
		     name, (unsigned long)q->c->uid, n,
		     cfg->max_mailboxes_per_uid);
	return true;
}

static void
op_create(Request *q)
{
	char name[MBOX_NAME_MAX + 1], why[256];
	StoreMailbox tmpl, *mb;
	int k;

	if (request_check(q, BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_SETTING),
			  BIT(MBOX_TAG_MAILBOX)) < 0 ||
	    request_name(q, name) < 0)
		return;
	if (store_mailbox_get(q->b->store, name)) {
		conn_reply_error(q->c, q->h->opcode, q->h->id, MBOX_S_EXISTS,
				 NULL, "mailbox %s already exists", name);
		return;
	}
	if (mailbox_limit_hit(q, name))
		return;
	mailbox_defaults(&tmpl, q->c, name);
	k = settings_apply_all(&tmpl, &q->c->peer, q->f.body, q->f.len, true,
			       why, sizeof(why));
	if (k < 0) {
		reply_error(q, k == -EPERM ? MBOX_S_DENIED : MBOX_S_INVALID,
			    NULL, why);
		return;
	}
	if (broker_refuse_add(q->b, q->c, q->h->opcode, q->h->id))
		return;
	if (broker_txn(q->b) < 0) {
		reply_error(q, MBOX_S_STORE, NULL,
			    "the store failed: cannot begin a transaction");
		return;
	}
	k = store_mailbox_create(q->b->store, &tmpl, &mb);
	if (k < 0) {
		broker_batch_fail(q->b, k);
		log_write(q->b->log, LOG_ERR, "cannot create mailbox %s: %s",
			  name, store_errmsg(q->b->store));
	} else if (mb->flags & STORE_MB_TEMP) {
		/* Deleted when this connection closes. */
		void *t = realloc(q->c->temps,
				  (q->c->n_temps + 1) * sizeof(*q->c->temps));
		if (!t) {
			broker_batch_fail(q->b, -ENOMEM);
		} else {
			q->c->temps = t;
			q->c->temps[q->c->n_temps++] =
				(TempRef){mb->id, mb->created_ns, 0};
		}
	}
	request_defer(q, PENDING_PLAIN, NULL, NULL, 0);
}

void
post_items_free(PostItem *items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(items[i].headers);
	free(items);
}

/*
 * Validate the HEADER fields of one MSG and copy them out whole.
 * Returns 0, or an mbox_status with the reason in why.
 */
static unsigned
post_headers(const ProtoFields *m, PostItem *it, size_t max_bytes, char *why,
	     size_t whylen)
{
	ProtoReader r;
	ProtoField f;
	size_t total = 0, n = 0, off = 0;
	ProtoSlice keys[64];
	int k;

	if (!proto_has(m, MBOX_TAG_HEADER))
		return 0;
	it->headers = malloc(m->len);
	if (!it->headers) {
		snprintf(why, whylen, "out of memory");
		return MBOX_S_LIMIT;
	}
	proto_reader_init(&r, m->body, m->len);
	while ((k = proto_reader_next(&r, &f)) > 0) {
		ProtoFields hf;
		char hwhy[128];
		ProtoSlice key, val;

		if (f.tag != MBOX_TAG_HEADER)
			continue;
		if (proto_fields_parse(&hf, f.val, f.len, hwhy, NULL) < 0 ||
		    proto_fields_check(&hf,
				       BIT(MBOX_TAG_KEY) | BIT(MBOX_TAG_VALUE),
				       BIT(MBOX_TAG_KEY) | BIT(MBOX_TAG_VALUE),
				       hwhy) < 0) {
			snprintf(why, whylen, "HEADER: %s", hwhy);
			return MBOX_S_MALFORMED;
		}
		key = hf.first[MBOX_TAG_KEY];
		val = hf.first[MBOX_TAG_VALUE];
		if (key.len == 0 || key.len > MBOX_NAME_MAX) {
			snprintf(why, whylen,
				 "header keys must be 1-200 bytes long");
			return MBOX_S_INVALID;
		}
		total += key.len + val.len;
		if (total > max_bytes) {
			snprintf(why, whylen,
				 "headers of one message are limited to %zu "
				 "bytes of keys and values (max_header_bytes); "
				 "send less in headers, or raise mboxd "
				 "--max-header-bytes (at most %u)",
				 max_bytes, MBOX_HEADERS_MAX);
			return MBOX_S_TOO_LARGE;
		}
		for (size_t i = 0; i < n; i++)
			if (keys[i].len == key.len &&
			    memcmp(keys[i].ptr, key.ptr, key.len) == 0) {
				snprintf(why, whylen,
					 "header key '%.*s' appears twice",
					 (int)key.len, key.ptr);
				return MBOX_S_INVALID;
			}
		if (n == sizeof(keys) / sizeof(keys[0])) {
			snprintf(why, whylen, "at most 64 headers a message");
			return MBOX_S_INVALID;
		}
		keys[n++] = key;
		memcpy(it->headers + off, f.val - MBOX_PROTO_FIELD_HDR,
		       f.len + MBOX_PROTO_FIELD_HDR);
		off += f.len + MBOX_PROTO_FIELD_HDR;
	}
	it->headers_len = off;
	return 0;
}

int
post_parse(Request *q, PostItem **out, size_t *n_out)
{
	size_t n = q->f.count[MBOX_TAG_MSG], i = 0;
	PostItem *items;
	ProtoReader r;
	ProtoField f;
	char why[384];
	const char *limit = NULL;
	unsigned st = 0;
	int k;

	if (n > MBOX_RECV_MAX) {
		conn_reply_error(q->c, q->h->opcode, q->h->id, MBOX_S_INVALID,
				 NULL, "a POST carries at most %u messages",
				 MBOX_RECV_MAX);
		return -EINVAL;
	}
	items = calloc(n, sizeof(*items));
	if (!items) {
		reply_error(q, MBOX_S_LIMIT, "memory", "out of memory");
		return -ENOMEM;
	}
	proto_reader_init(&r, q->f.body, q->f.len);
	while (!st && (k = proto_reader_next(&r, &f)) > 0) {
		ProtoFields m;
		PostItem *it;

		if (f.tag != MBOX_TAG_MSG)
			continue;
		it = &items[i++];
		if (proto_fields_parse(&m, f.val, f.len, why, NULL) < 0 ||
		    proto_fields_check(
			    &m,
			    BIT(MBOX_TAG_DATA) | BIT(MBOX_TAG_PRIORITY) |
				    BIT(MBOX_TAG_DELAY_MS) |
				    BIT(MBOX_TAG_TTL_MS) | BIT(MBOX_TAG_DEDUP) |
				    BIT(MBOX_TAG_HEADER),
			    BIT(MBOX_TAG_DATA), why) < 0) {
			st = MBOX_S_MALFORMED;
			break;
		}
		it->data = m.first[MBOX_TAG_DATA];
		it->priority = (uint32_t)proto_u64(&m, MBOX_TAG_PRIORITY, 0);
		it->delay_ms = proto_u64(&m, MBOX_TAG_DELAY_MS, 0);
		it->ttl_ms = proto_u64(&m, MBOX_TAG_TTL_MS, 0);
		it->dedup = m.first[MBOX_TAG_DEDUP];
		if (it->data.len > q->b->cfg.max_msg_size) {
			snprintf(why, sizeof(why),
				 "message %zu is %zu bytes, over max_msg_size "
				 "(%zu bytes); send it in smaller parts, or "
				 "raise mboxd --max-msg-size",
				 i, it->data.len, q->b->cfg.max_msg_size);
			st = MBOX_S_TOO_LARGE;
			limit = "max_msg_size";
		} else if (proto_u64(&m, MBOX_TAG_PRIORITY, 0) >
			   MBOX_PRIORITY_MAX) {
			snprintf(why, sizeof(why), "priority must be 0 to %u",
				 MBOX_PRIORITY_MAX);
			st = MBOX_S_INVALID;
		} else if (it->delay_ms > MAX_DURATION_MS) {
			snprintf(why, sizeof(why),
				 "delay must be at most one year");
			st = MBOX_S_INVALID;
		} else if (proto_has(&m, MBOX_TAG_TTL_MS) &&
			   (it->ttl_ms == 0 || it->ttl_ms > MAX_DURATION_MS)) {
			snprintf(why, sizeof(why),
				 "TTL_MS must be 1 ms to one year");
			st = MBOX_S_INVALID;
		} else if (proto_has(&m, MBOX_TAG_DEDUP) &&
			   (it->dedup.len == 0 ||
			    it->dedup.len > MBOX_NAME_MAX ||
			    memchr(it->dedup.ptr, 0, it->dedup.len))) {
			snprintf(why, sizeof(why),
				 "DEDUP keys must be 1-200 bytes without NUL");
			st = MBOX_S_INVALID;
		} else {
			st = post_headers(&m, it, q->b->cfg.max_header_bytes,
					  why, sizeof(why));
			if (st == MBOX_S_TOO_LARGE)
				limit = "max_header_bytes";
		}
	}
	if (st) {
		reply_error(q, st, limit, why);
		post_items_free(items, n);
		return -EINVAL;
	}
	*out = items;
	*n_out = n;
	return 0;
}

/*
 * The lower of a mailbox's own limit and the broker's applies; lim gets
 * the value and name gets the limit's name for the reply.
 */
static void
post_limit(uint64_t own, const char *own_name, uint64_t broker,
	   const char *broker_name, uint64_t *lim, const char **name)
{
	if (own && (!broker || own <= broker)) {
		*lim = own;
		*name = own_name;
	} else {
		*lim = broker;
		*name = broker_name;
	}
}

/* A full mailbox refuses posts; it never drops what it holds. With q
 * NULL, only say whether the items fit (cfg must then be given). */
static bool
post_overflows(Request *q, const BrokerConfig *cfg, const StoreMailbox *mb,
	       const PostItem *items, size_t n, const bool *dup)
{
	uint64_t held = mb->n_ready + mb->n_leased + mb->n_dead;
	uint64_t bytes = mb->bytes, lim, adds = 0;
	const char *name;

	for (size_t i = 0; i < n; i++) {
		if (dup && dup[i])
			continue;
		bytes += items[i].data.len;
		adds++;
	}
	if (!adds)
		return false;
	post_limit(mb->max_msgs, "max_msgs", cfg->max_mailbox_msgs,
		   "max_mailbox_msgs", &lim, &name);
	if (lim && held + adds > lim) {
		const char *raise = strcmp(name, "max_msgs") == 0
					    ? "it with 'mboxctl set'"
					    : "mboxd --max-mailbox-msgs";

		if (!q)
			return true;
		/* A batch may be over the limit on its own: "full" and
		 * "holds 0" would read like a broker bug. */
		if (held < lim)
			reply_errorf(q, MBOX_S_FULL, name,
				     "mailbox %s has room for %llu more "
				     "messages and this post would add %llu "
				     "(it holds %llu, dead ones included; %s "
				     "is %llu); post fewer at once, consume, "
				     "purge or kick messages, or raise %s",
				     mb->name, (unsigned long long)(lim - held),
				     (unsigned long long)adds,
				     (unsigned long long)held, name,
				     (unsigned long long)lim, raise);
		else
			reply_errorf(q, MBOX_S_FULL, name,
				     "mailbox %s is full: it holds %llu "
				     "messages (dead ones included) and %s is "
				     "%llu; consume, purge or kick messages, "
				     "or raise %s",
				     mb->name, (unsigned long long)held, name,
				     (unsigned long long)lim, raise);
		return true;
	}
	post_limit(mb->max_bytes, "max_bytes", cfg->max_mailbox_bytes,
		   "max_mailbox_bytes", &lim, &name);
	if (lim && bytes > lim) {
		if (!q)
			return true;
		reply_errorf(q, MBOX_S_FULL, name,
			     "mailbox %s is full: it holds %llu payload bytes "
			     "and this post needs %llu more, over %s (%llu); "
			     "consume or purge messages, or raise %s",
			     mb->name, (unsigned long long)mb->bytes,
			     (unsigned long long)(bytes - mb->bytes), name,
			     (unsigned long long)lim,
			     strcmp(name, "max_bytes") == 0
				     ? "it with 'mboxctl set'"
				     : "mboxd --max-mailbox-bytes");
		return true;
	}
	return false;
}

bool
post_would_overflow(Request *q, const StoreMailbox *mb, const PostItem *items,
		    size_t n, const bool *dup)
{
	return post_overflows(q, &q->b->cfg, mb, items, n, dup);
}

bool
post_fits(const Broker *b, const StoreMailbox *mb, const PostItem *items,
	  size_t n)
{
	return !post_overflows(NULL, &b->cfg, mb, items, n, NULL);
}

void
post_fill_msg(Request *q, const StoreMailbox *mb, const PostItem *item,
	      int64_t now, StoreMsg *m, char dedup_buf[MBOX_NAME_MAX + 1])
{
	uint64_t ttl_ms = item->ttl_ms ? item->ttl_ms : mb->ttl_ms;

	memset(m, 0, sizeof(*m));
	m->priority = item->priority;
	m->time_ns = now;
	m->ready_ns =
		item->delay_ms ? now + (int64_t)item->delay_ms * 1000000 : 0;
	/* A delayed message's ttl counts from its post, not from when it
	 * becomes ready: the sender's deadline is wall-clock. */
	m->expires_ns = ttl_ms ? now + (int64_t)ttl_ms * 1000000 : 0;
	m->pid = (uint32_t)q->c->pid;
	m->uid = q->c->uid;
	m->gid = q->c->gid;
	memcpy(m->comm, q->c->comm, sizeof(m->comm));
	m->data = item->data.ptr;
	m->len = item->data.len;
	m->headers = item->headers;
	m->headers_len = item->headers_len;
	if (item->dedup.len) {
		memcpy(dedup_buf, item->dedup.ptr, item->dedup.len);
		dedup_buf[item->dedup.len] = '\0';
		m->dedup = dedup_buf;
	}
}

/* Whether a dedup key of items[i] answers with an earlier id instead of
 * being stored (SPEC 3.2): the key is in mb within the window (ids[i] is
 * then that id), or an earlier item of the same POST that is stored has
 * it (ids[i] stays 0: that item's id, once it has one). Sets dup[i] for
 * each and returns how many items would be stored. mb NULL: a mailbox
 * this POST creates. Done before the limits are checked, so that a
 * retry is not refused by limits it would not touch. */
static size_t
post_find_dups(Request *q, StoreMailbox *mb, const PostItem *items, size_t n,
	       int64_t since, bool *dup, uint64_t *ids)
{
	char key[MBOX_NAME_MAX + 1];
	size_t adds = 0;

	for (size_t i = 0; i < n; i++) {
		const ProtoSlice *k = &items[i].dedup;

		dup[i] = false;
		if (k->len && mb) {
			memcpy(key, k->ptr, k->len);
			key[k->len] = '\0';
			dup[i] = store_dedup_find(q->b->store, mb, key, since,
						  &ids[i]) == 0;
		}
		for (size_t j = 0; k->len && !dup[i] && j < i; j++)
			dup[i] =
				!dup[j] && items[j].dedup.len == k->len &&
				memcmp(items[j].dedup.ptr, k->ptr, k->len) == 0;
		adds += !dup[i];
	}
	return adds;
}

static void
op_post(Request *q)
{
	Broker *b = q->b;
	char name[MBOX_NAME_MAX + 1], key[MBOX_NAME_MAX + 1];
	StoreMailbox *mb, tmpl;
	PostItem *items = NULL;
	uint64_t *ids = NULL;
	bool *dup = NULL;
	size_t n = 0, adds;
	int64_t now = broker_now_ns();
	int64_t since = now - (int64_t)b->cfg.dedup_window_ms * 1000000;
	bool stored = false;
	int r = 0;

	if (request_check(q,
			  BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_MSG) |
				  BIT(MBOX_TAG_FLAGS) | BIT(MBOX_TAG_OWNER_UID),
			  BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_MSG)) < 0 ||
	    request_name(q, name) < 0)
		return;
	if (proto_u64(&q->f, MBOX_TAG_FLAGS, 0) &
	    ~(uint64_t)MBOX_POST_NO_CREATE) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "unknown FLAGS bits for POST (only 0x1, no "
			    "autocreate)");
		return;
	}
	mb = store_mailbox_get(b->store, name);
	if (!mb &&
	    ((proto_u64(&q->f, MBOX_TAG_FLAGS, 0) & MBOX_POST_NO_CREATE) ||
	     proto_has(&q->f, MBOX_TAG_OWNER_UID))) {
		/* A reply to a caller that gave up must not leave a new,
		 * permanent mailbox behind. */
		reply_errorf(q, MBOX_S_NOT_FOUND, NULL,
			     "no such mailbox: %s (this post asked not to "
			     "create it)",
			     name);
		return;
	}
	if (!mb && !b->cfg.autocreate) {
		reply_errorf(q, MBOX_S_NOT_FOUND, NULL,
			     "no such mailbox: %s (autocreate is off; "
			     "create it with 'mboxctl create %s')",
			     name, name);
		return;
	}
	if (mb && !acl_may(&q->c->peer, mb, ACL_WRITE)) {
		log_denial(q, name);
		reply_error(q, MBOX_S_DENIED, NULL, "permission denied");
		return;
	}
	/* A server answering a request posts where the request's reply-to
	 * says, with its own permissions: only into the requester's own
	 * mailbox, or anyone could have it write anywhere it may. */
	if (mb && proto_has(&q->f, MBOX_TAG_OWNER_UID) &&
	    proto_u64(&q->f, MBOX_TAG_OWNER_UID, 0) != mb->owner_uid) {
		reply_errorf(q, MBOX_S_DENIED, NULL,
			     "%s is owned by uid %u, not by uid %llu as "
			     "OWNER_UID asks: nothing was posted (a reply "
			     "goes only to a mailbox of the requester)",
			     name, (unsigned)mb->owner_uid,
			     (unsigned long long)proto_u64(
				     &q->f, MBOX_TAG_OWNER_UID, 0));
		return;
	}
	if (post_parse(q, &items, &n) < 0)
		return;
	ids = calloc(n, sizeof(*ids));
	dup = calloc(n, sizeof(*dup));
	if (!ids || !dup) {
		reply_error(q, MBOX_S_LIMIT, "memory", "out of memory");
		goto out;
	}
	/* A retry whose keys were all posted stores nothing: no limit
	 * refuses it, full mailbox or full store. */
	adds = post_find_dups(q, mb, items, n, since, dup, ids);
	if (!mb) {
		/* A new mailbox holds nothing yet, but the broker's limits
		 * apply to its first POST all the same. */
		mailbox_defaults(&tmpl, q->c, name);
		if (mailbox_limit_hit(q, name) ||
		    post_would_overflow(q, &tmpl, items, n, dup))
			goto out;
	} else if (post_would_overflow(q, mb, items, n, dup)) {
		goto out;
	}
	if ((adds || !mb) && broker_refuse_add(b, q->c, q->h->opcode, q->h->id))
		goto out;
	if (request_txn(q) < 0)
		goto out;
	if (!mb)
		r = store_mailbox_create(b->store, &tmpl, &mb);
	for (size_t i = 0; r == 0 && i < n; i++) {
		StoreMsg m;

		post_fill_msg(q, mb, &items[i], now, &m, key);
		/* A key seen within the window: answer the first id, store
		 * nothing (a producer retrying after a lost answer). A key
		 * of an earlier item of this POST: that item is stored now,
		 * under its key. */
		if (dup[i]) {
			if (!ids[i])
				r = store_dedup_find(b->store, mb, m.dedup,
						     since, &ids[i]);
			continue;
		}
		r = store_msg_insert(b->store, mb, &m);
		ids[i] = m.id;
		stored = true;
		if (r == 0)
			broker_count_post(b, mb, &m);
		if (m.expires_ns)
			broker_expiry_changed(b, m.expires_ns);
	}
	if (r < 0) {
		/* The batch cannot commit with a half-done POST in it. */
		broker_batch_fail(b, r);
		log_write(b->log, LOG_ERR, "cannot store a message in %s: %s",
			  name, store_errmsg(b->store));
	} else if (stored) {
		broker_mailbox_news(b, mb);
	}
	request_defer(q, PENDING_POST, ids, NULL, n);
	ids = NULL;
out:
	free(ids);
	free(dup);
	post_items_free(items, n);
}

static void
op_recv(Request *q)
{
	StoreMailbox *mb;
	MailboxRt *rt;
	Waiter *w;
	uint64_t count, wait_ms;

	if (request_check(q,
			  BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_COUNT) |
				  BIT(MBOX_TAG_WAIT_MS) |
				  BIT(MBOX_TAG_LEASE_MS),
			  BIT(MBOX_TAG_MAILBOX)) < 0)
		return;
	count = proto_u64(&q->f, MBOX_TAG_COUNT, 1);
	wait_ms = proto_u64(&q->f, MBOX_TAG_WAIT_MS, 0);
	if (count < 1 || count > MBOX_RECV_MAX) {
		conn_reply_error(q->c, q->h->opcode, q->h->id, MBOX_S_INVALID,
				 NULL, "COUNT must be 1 to %u", MBOX_RECV_MAX);
		return;
	}
	if (proto_has(&q->f, MBOX_TAG_LEASE_MS) &&
	    (proto_u64(&q->f, MBOX_TAG_LEASE_MS, 0) == 0 ||
	     proto_u64(&q->f, MBOX_TAG_LEASE_MS, 0) > MAX_DURATION_MS)) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "LEASE_MS must be 1 ms to one year");
		return;
	}
	if (wait_ms > MAX_DURATION_MS) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "WAIT_MS must be at most one year");
		return;
	}
	mb = request_mailbox(q, ACL_READ);
	if (!mb)
		return;
	if (q->c->leases.count >= q->b->cfg.max_unacked) {
		reply_errorf(q, MBOX_S_LIMIT, "max_unacked",
			     "this connection holds %zu unacked messages "
			     "(max_unacked is %zu); ack, nack or reject some "
			     "before receiving more, or raise mboxd "
			     "--max-unacked",
			     q->c->leases.count, q->b->cfg.max_unacked);
		return;
	}
	rt = broker_mailbox_rt(q->b, mb);
	if (!rt) {
		reply_error(q, MBOX_S_LIMIT, "memory", "out of memory");
		return;
	}
	/* Strict order: while a mailbox has exclusive subscribers, only
	 * the active one's connection takes its messages. */
	if (rt->sub_head && rt->sub_head->exclusive &&
	    rt->sub_head->conn != q->c) {
		reply_errorf(q, MBOX_S_BUSY, NULL,
			     "%s has an exclusive subscriber, which alone "
			     "receives its messages; RECV is refused until "
			     "every exclusive subscription has ended",
			     mb->name);
		return;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		reply_error(q, MBOX_S_LIMIT, "memory", "out of memory");
		return;
	}
	w->conn = q->c;
	w->req_id = q->h->id;
	w->rt = mb->user;
	w->count = count;
	w->lease_ms = proto_u64(&q->f, MBOX_TAG_LEASE_MS, 0);
	w->immediate = wait_ms == 0;
	broker_waiter_add(q->b, w);
	if (!w->immediate)
		broker_waiter_arm(w, wait_ms);
}

/* Delete an acked message: without reading its row first when the lease
 * knows its length, as one delivered by this broker does. */
static int
settle_ack(Broker *b, StoreMailbox *mb, const Lease *l)
{
	int r = -ENOENT;

	if (l->msg_len != LEASE_LEN_UNKNOWN)
		r = store_msg_ack(b->store, mb, l->msg_id, l->msg_len);
	if (r == -ENOENT)
		r = store_msg_delete(b->store, mb, l->msg_id);
	return r;
}

/*
 * Collect the ID fields of an ACK, NACK, REJECT or TOUCH; all must be
 * leased by this connection, else NOT_LEASED and nothing is done.
 */
static int
settle_ids(Request *q, const char *verb, uint64_t **ids_out,
	   PendingLease **mbids_out, size_t *n_out)
{
	size_t n = q->f.count[MBOX_TAG_ID], i = 0;
	uint64_t *ids = calloc(n, sizeof(*ids));
	PendingLease *mbids = calloc(n, sizeof(*mbids));
	ProtoReader r;
	ProtoField f;

	if (!ids || !mbids) {
		reply_error(q, MBOX_S_LIMIT, "memory", "out of memory");
		goto fail;
	}
	proto_reader_init(&r, q->f.body, q->f.len);
	while (proto_reader_next(&r, &f) > 0) {
		Lease *l;

		if (f.tag != MBOX_TAG_ID)
			continue;
		ids[i] = proto_get_u64(f.val);
		l = lease_find(&q->b->leases, ids[i]);
		if (!l || l->holder != q->c) {
			reply_errorf(q, MBOX_S_NOT_LEASED, NULL,
				     "message %llu is not leased by this "
				     "connection (never delivered to it, "
				     "already settled, handed off, or its "
				     "lease ran out); nothing was %s",
				     (unsigned long long)ids[i], verb);
			goto fail;
		}
		mbids[i].mailbox_id = l->mailbox_id;
		mbids[i].lease_ms = l->lease_ms;
		mbids[i].msg_len = l->msg_len;
		mbids[i++].sub = l->sub != NULL;
	}
	*ids_out = ids;
	*mbids_out = mbids;
	*n_out = n;
	return 0;
fail:
	free(ids);
	free(mbids);
	return -EINVAL;
}

/* ACK, NACK and REJECT: all ids must be leased by this connection. */
static void
op_settle(Request *q)
{
	static const struct {
		uint16_t op;
		const char *verb;
		enum pending_kind kind;
	} kinds[] = {
		{MBOX_OP_ACK, "acked", PENDING_ACK},
		{MBOX_OP_NACK, "given back", PENDING_NACK},
		{MBOX_OP_REJECT, "rejected", PENDING_REJECT},
	};
	Broker *b = q->b;
	uint16_t op = q->h->opcode;
	size_t n, k = 0;
	uint64_t *ids, delay_ms = 0;
	PendingLease *mbids;
	int64_t ready_ns = 0;

	while (kinds[k].op != op)
		k++;
	if (request_check(
		    q,
		    BIT(MBOX_TAG_ID) |
			    (op == MBOX_OP_NACK ? BIT(MBOX_TAG_DELAY_MS) : 0),
		    BIT(MBOX_TAG_ID)) < 0)
		return;
	delay_ms = proto_u64(&q->f, MBOX_TAG_DELAY_MS, 0);
	if (delay_ms > MAX_DURATION_MS) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "DELAY_MS must be at most one year");
		return;
	}
	if (delay_ms)
		ready_ns = broker_now_ns() + (int64_t)delay_ms * 1000000;
	if (settle_ids(q, kinds[k].verb, &ids, &mbids, &n) < 0)
		return;
	if (request_txn(q) < 0) {
		free(ids);
		free(mbids);
		return;
	}
	if (op == MBOX_OP_ACK)
		broker_batch_frees(b);
	for (size_t i = 0; i < n; i++) {
		Lease *l = lease_find(&b->leases, ids[i]);
		StoreMailbox *mb =
			store_mailbox_by_id(b->store, mbids[i].mailbox_id);
		int r = 0;

		if (!l)
			continue; /* the same id twice in one request */
		if (mb) {
			if (op == MBOX_OP_ACK)
				r = settle_ack(b, mb, l);
			else if (op == MBOX_OP_NACK)
				r = store_msg_release(b->store, mb, ids[i],
						      ready_ns);
			else
				r = store_msg_kill(b->store, mb, ids[i],
						   "rejected");
			broker_count_settle(b, mb, op, r);
			if (r < 0 && r != -ENOENT) {
				broker_batch_fail(b, r);
				log_write(b->log, LOG_ERR,
					  "cannot %s message %llu: %s",
					  proto_op_name(op),
					  (unsigned long long)ids[i],
					  store_errmsg(b->store));
			}
			if (op == MBOX_OP_NACK) {
				broker_mailbox_news(b, mb);
				b->expiry_dirty = true;
			}
		}
		broker_lease_drop(b, l, false);
	}
	request_defer(q, kinds[k].kind, ids, mbids, n);
}

static void
op_touch(Request *q)
{
	Broker *b = q->b;
	uint64_t *ids, lease_ms;
	PendingLease *mbids;
	int64_t now = broker_now_ns(), deadline = 0;
	ProtoWriter *w;
	size_t n;

	if (request_check(q, BIT(MBOX_TAG_ID) | BIT(MBOX_TAG_LEASE_MS),
			  BIT(MBOX_TAG_ID)) < 0)
		return;
	lease_ms = proto_u64(&q->f, MBOX_TAG_LEASE_MS, 0);
	if (proto_has(&q->f, MBOX_TAG_LEASE_MS) &&
	    (lease_ms == 0 || lease_ms > MAX_DURATION_MS)) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "LEASE_MS must be 1 ms to one year");
		return;
	}
	if (settle_ids(q, "extended", &ids, &mbids, &n) < 0)
		return;
	/* Leases live in memory only: nothing to commit. */
	for (size_t i = 0; i < n; i++) {
		Lease *l = lease_find(&b->leases, ids[i]);
		uint64_t ms = lease_ms ? lease_ms : l->lease_ms;

		deadline = now + (int64_t)ms * 1000000;
		lease_set_deadline(&b->leases, l, deadline);
	}
	free(ids);
	free(mbids);
	w = reply_begin(q);
	proto_put_u64(w, MBOX_TAG_DEADLINE_NS, (uint64_t)deadline);
	conn_send_writer(q->c, w);
}

static void
op_subscribe(Request *q)
{
	uint64_t window, lease_ms, flags;
	StoreMailbox *mb;
	MailboxRt *rt;
	ProtoWriter *w;
	Sub *s;
	bool excl;

	if (request_check(q,
			  BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_COUNT) |
				  BIT(MBOX_TAG_LEASE_MS) | BIT(MBOX_TAG_FLAGS),
			  BIT(MBOX_TAG_MAILBOX)) < 0)
		return;
	window = proto_u64(&q->f, MBOX_TAG_COUNT, 1);
	lease_ms = proto_u64(&q->f, MBOX_TAG_LEASE_MS, 0);
	flags = proto_u64(&q->f, MBOX_TAG_FLAGS, 0);
	if (window < 1 || window > MBOX_WINDOW_MAX) {
		reply_errorf(q, MBOX_S_INVALID, NULL,
			     "the window (COUNT) must be 1 to %u",
			     MBOX_WINDOW_MAX);
		return;
	}
	if (proto_has(&q->f, MBOX_TAG_LEASE_MS) &&
	    (lease_ms == 0 || lease_ms > MAX_DURATION_MS)) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "LEASE_MS must be 1 ms to one year");
		return;
	}
	if (flags & ~(uint64_t)MBOX_SUB_EXCLUSIVE) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "unknown FLAGS bits for SUBSCRIBE (only 0x1, "
			    "exclusive)");
		return;
	}
	excl = flags & MBOX_SUB_EXCLUSIVE;
	mb = request_mailbox(q, ACL_READ);
	if (!mb)
		return;
	rt = broker_mailbox_rt(q->b, mb);
	if (!rt) {
		reply_error(q, MBOX_S_LIMIT, "memory", "out of memory");
		return;
	}
	if (sub_find(q->c, rt)) {
		reply_errorf(q, MBOX_S_EXISTS, NULL,
			     "this connection already subscribes to %s",
			     mb->name);
		return;
	}
	if (sub_count(q->c->subs) >= q->b->cfg.max_subscriptions) {
		reply_errorf(q, MBOX_S_LIMIT, "max_subscriptions",
			     "this connection has %zu subscriptions "
			     "(max_subscriptions is %zu); unsubscribe from "
			     "one, subscribe on another connection, or raise "
			     "mboxd --max-subscriptions",
			     sub_count(q->c->subs),
			     q->b->cfg.max_subscriptions);
		return;
	}
	if (rt->sub_head && rt->sub_head->exclusive != excl) {
		reply_errorf(q, MBOX_S_BUSY, NULL,
			     "%s has %s subscribers; exclusive and shared "
			     "subscriptions do not mix on one mailbox",
			     mb->name, excl ? "shared" : "exclusive");
		return;
	}
	if (excl && rt->wait_head) {
		reply_errorf(q, MBOX_S_BUSY, NULL,
			     "a RECV is waiting on %s; an exclusive "
			     "subscriber must take all of a mailbox's "
			     "messages, so subscribe once no RECV waits",
			     mb->name);
		return;
	}
	if (sub_add(q->b, q->c, rt, (uint32_t)window, lease_ms, excl, &s) < 0) {
		reply_error(q, MBOX_S_LIMIT, "memory", "out of memory");
		return;
	}
	broker_mailbox_news(q->b, mb);
	w = reply_begin(q);
	proto_put_u64(w, MBOX_TAG_FLAGS,
		      sub_is_active(s) ? 0 : MBOX_SUB_STANDBY);
	/* Which mailbox of that name: an ENDED push says it too. */
	proto_put_u64(w, MBOX_TAG_TIME_NS, (uint64_t)mb->created_ns);
	conn_send_writer(q->c, w);
}

/* Answer q's connection's waiting RECVs (on rt only, unless NULL) with
 * nothing: they are to take no more messages. */
static void
answer_waiters_empty(Request *q, const MailboxRt *rt)
{
	for (Waiter *wt = q->c->waiters, *next; wt; wt = next) {
		uint32_t id = wt->req_id;

		next = wt->conn_next;
		if (rt && wt->rt != rt)
			continue;
		broker_waiter_free(wt);
		q->c->in_flight--;
		proto_writer_begin(&q->b->w, MBOX_OP_RECV, MBOX_FLAG_REPLY, id,
				   MBOX_S_OK);
		conn_send_writer(q->c, &q->b->w);
	}
}

static void
op_unsubscribe(Request *q)
{
	char name[MBOX_NAME_MAX + 1];
	StoreMailbox *mb;
	Sub *s = NULL;

	if (request_check(q, BIT(MBOX_TAG_MAILBOX), BIT(MBOX_TAG_MAILBOX)) <
		    0 ||
	    request_name(q, name) < 0)
		return;
	mb = store_mailbox_get(q->b->store, name);
	if (mb && mb->user)
		s = sub_find(q->c, mb->user);
	if (!s) {
		reply_errorf(q, MBOX_S_NOT_FOUND, NULL,
			     "this connection does not subscribe to %s", name);
		return;
	}
	/* The active exclusive subscriber's messages of the mailbox (its
	 * RECVs' too) go back to their places at once, and its waiting
	 * RECVs end, so the next one takes over in strict order. */
	if (s->exclusive && sub_is_active(s)) {
		answer_waiters_empty(q, s->rt);
		for (Lease *l = q->c->leases.head, *next; l; l = next) {
			next = l->next;
			if (l->sub == s || l->mailbox_id == s->rt->mailbox_id)
				broker_lease_drop(q->b, l, true);
		}
	}
	sub_remove(q->b, s);
	reply_empty(q);
}

static void
op_handoff(Request *q)
{
	uint64_t wait_ms;
	Handoff *h;
	ProtoWriter *w;
	size_t n;

	if (request_check(q, BIT(MBOX_TAG_WAIT_MS), 0) < 0)
		return;
	wait_ms = proto_u64(&q->f, MBOX_TAG_WAIT_MS, MBOX_DEFAULT_HANDOFF_MS);
	if (wait_ms == 0 || wait_ms > 3600000) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "WAIT_MS must be 1 ms to one hour");
		return;
	}
	n = handoff_limit(q->b, q->c);
	if (n) {
		reply_errorf(q, MBOX_S_LIMIT, "max_handoffs",
			     "%zu hand-offs are waiting to be claimed%s "
			     "(max_handoffs); claim them, or let their "
			     "deadlines pass, before handing off again",
			     n,
			     n == HANDOFF_MAX_PER_UID ? " for this uid"
						      : " in all");
		return;
	}
	/* Waiting RECVs are answered first: nothing more comes to them. */
	answer_waiters_empty(q, NULL);
	n = q->c->leases.count;
	if (handoff_park(q->b, q->c, wait_ms, &h) < 0) {
		reply_error(q, MBOX_S_LIMIT, "memory",
			    "cannot make a hand-off token (out of memory or "
			    "no randomness)");
		return;
	}
	log_write(q->b->log, LOG_INFO,
		  "client %llu (pid %d) handed off %zu message(s) as "
		  "hand-off %llu",
		  (unsigned long long)q->c->serial, (int)q->c->pid, n,
		  (unsigned long long)h->serial);
	w = reply_begin(q);
	proto_put_str(w, MBOX_TAG_TOKEN, h->token);
	proto_put_u64(w, MBOX_TAG_DEADLINE_NS, (uint64_t)h->deadline_ns);
	proto_put_u64(w, MBOX_TAG_COUNT, n);
	conn_send_writer(q->c, w);
}

static bool
token_valid(ProtoSlice t)
{
	if (t.len != MBOX_TOKEN_HEX)
		return false;
	for (size_t i = 0; i < t.len; i++)
		if (!strchr("0123456789abcdef", t.ptr[i]) || !t.ptr[i])
			return false;
	return true;
}

static void
op_claim(Request *q)
{
	char token[MBOX_TOKEN_HEX + 1];
	const StoreMailbox *unreadable;
	ProtoSlice t;
	Handoff *h;
	int n;

	if (request_check(q, BIT(MBOX_TAG_TOKEN), BIT(MBOX_TAG_TOKEN)) < 0)
		return;
	t = q->f.first[MBOX_TAG_TOKEN];
	if (!token_valid(t)) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "a hand-off token is 32 lowercase hex digits");
		return;
	}
	memcpy(token, t.ptr, t.len);
	token[t.len] = '\0';
	h = handoff_find(q->b, token);
	if (!h) {
		reply_error(q, MBOX_S_NOT_FOUND, NULL,
			    "no such hand-off: the token is wrong, was "
			    "claimed already, or its deadline passed");
		return;
	}
	if (h->uid != q->c->uid && !acl_is_admin(&q->c->peer)) {
		size_t quiet;
		if (broker_deny_log_ok(q->b, &quiet)) {
			log_denials_quiet(q->b, quiet);
			log_write(q->b->log, LOG_NOTICE,
				  "permission denied: uid %u pid %d (%s) CLAIM "
				  "of a hand-off of uid %u",
				  (unsigned)q->c->uid, (int)q->c->pid,
				  q->c->comm, (unsigned)h->uid);
		}
		reply_error(q, MBOX_S_DENIED, NULL, "permission denied");
		return;
	}
	unreadable = handoff_unreadable(q->b, h, &q->c->peer);
	if (unreadable) {
		log_denial(q, unreadable->name);
		reply_error(q, MBOX_S_DENIED, NULL, "permission denied");
		return;
	}
	if (q->c->leases.count + h->leases.count > q->b->cfg.max_unacked) {
		reply_errorf(q, MBOX_S_LIMIT, "max_unacked",
			     "the hand-off holds %zu messages and this "
			     "connection %zu, over max_unacked (%zu); settle "
			     "some first, claim on another connection, or "
			     "raise mboxd --max-unacked (the hand-off is "
			     "kept)",
			     h->leases.count, q->c->leases.count,
			     q->b->cfg.max_unacked);
		return;
	}
	if (sub_count(q->c->subs) + sub_count(h->subs) >
	    q->b->cfg.max_subscriptions) {
		reply_errorf(q, MBOX_S_LIMIT, "max_subscriptions",
			     "the hand-off holds %zu subscriptions and this "
			     "connection %zu, over max_subscriptions (%zu); "
			     "unsubscribe from some first, claim on another "
			     "connection, or raise mboxd --max-subscriptions "
			     "(the hand-off is kept)",
			     sub_count(h->subs), sub_count(q->c->subs),
			     q->b->cfg.max_subscriptions);
		return;
	}
	/* The reply follows the pushes of the messages (handoff.c). */
	n = handoff_claim(q->b, h, q->c, q->h->id);
	if (n == -EEXIST)
		reply_error(q, MBOX_S_EXISTS, NULL,
			    "this connection already subscribes to a mailbox "
			    "of the hand-off; unsubscribe first");
	else if (n < 0)
		reply_error(q, MBOX_S_LIMIT, "memory", "out of memory");
}

/* A page of LIST (doc/protocol.md 5.8). */
typedef struct ListCtx {
	Request *q;
	int64_t now;
	const char *after; /* start after this name, or NULL */
	bool more;	   /* the page is full and another mailbox follows */
	size_t n;	   /* INFOs in the page */
} ListCtx;

void
put_list_fields(Request *q, StoreMailbox *mb, int64_t now)
{
	ProtoWriter *w = &q->b->w;
	MailboxRt *rt = mb->user;
	uint64_t delayed = 0;
	int64_t oldest = 0;

	if (mb->n_ready)
		store_mailbox_count_delayed(q->b->store, mb, now, &delayed);
	if (mb->n_ready + mb->n_leased + mb->n_dead)
		store_mailbox_oldest(q->b->store, mb, &oldest);
	proto_put_str(w, MBOX_TAG_MAILBOX, mb->name);
	proto_put_u64(w, MBOX_TAG_READY, mb->n_ready - delayed);
	proto_put_u64(w, MBOX_TAG_LEASED, mb->n_leased);
	proto_put_u64(w, MBOX_TAG_DELAYED, delayed);
	proto_put_u64(w, MBOX_TAG_DEAD, mb->n_dead);
	proto_put_u64(w, MBOX_TAG_BYTES, mb->bytes);
	proto_put_u64(w, MBOX_TAG_OLDEST_NS, (uint64_t)oldest);
	proto_put_u64(w, MBOX_TAG_CONSUMERS,
		      rt ? broker_rt_consumers(q->b, rt) : 0);
	proto_put_u64(w, MBOX_TAG_OWNER_UID, mb->owner_uid);
	proto_put_u64(w, MBOX_TAG_GROUP_GID, mb->gid);
	proto_put_u64(w, MBOX_TAG_MODE, mb->mode);
}

static int
list_one(void *ctx, StoreMailbox *mb)
{
	ListCtx *lc = ctx;
	Request *q = lc->q;
	ProtoWriter *w = &q->b->w;

	if ((lc->after && strcmp(mb->name, lc->after) <= 0) ||
	    (!acl_may(&q->c->peer, mb, ACL_READ) &&
	     !acl_may(&q->c->peer, mb, ACL_WRITE)))
		return 0;
	/* Keep the reply under MAX_FRAME, as a RECV reply: a page ends
	 * once it holds max_msg_size bytes. Never before its first INFO,
	 * which fits in MAX_FRAME's slack: a client that pages on gets
	 * somewhere whatever the size. */
	if (lc->n && w->len >= q->b->cfg.max_msg_size) {
		lc->more = true;
		return 1;
	}
	proto_nest_begin(w, MBOX_TAG_INFO);
	put_list_fields(q, mb, lc->now);
	proto_nest_end(w);
	lc->n++;
	return 0;
}

/* MAILBOX in the request: the page starts after that name. */
static void
op_list(Request *q)
{
	char after[MBOX_NAME_MAX + 1];
	ListCtx lc = {q, broker_now_ns(), NULL, false, 0};

	if (request_check(q, BIT(MBOX_TAG_MAILBOX), 0) < 0)
		return;
	if (proto_has(&q->f, MBOX_TAG_MAILBOX)) {
		if (request_name(q, after) < 0)
			return;
		lc.after = after;
	}
	proto_writer_begin(&q->b->w, q->h->opcode, MBOX_FLAG_REPLY, q->h->id,
			   MBOX_S_OK);
	store_mailbox_foreach(q->b->store, list_one, &lc);
	if (lc.more)
		proto_put_u64(&q->b->w, MBOX_TAG_FLAGS, MBOX_LIST_MORE);
	conn_send_writer(q->c, &q->b->w);
}

typedef struct PeekCtx {
	Broker *b;
	StoreMailbox *mb;
} PeekCtx;

static int
peek_one(void *ctx, const StoreMsg *m)
{
	PeekCtx *pc = ctx;

	broker_put_msg(&pc->b->w, pc->mb, m, 0);
	return pc->b->w.len >= pc->b->cfg.max_msg_size;
}

static void
op_peek(Request *q)
{
	StoreMailbox *mb;
	uint64_t count, flags;
	PeekCtx pc;
	int r;

	if (request_check(q,
			  BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_COUNT) |
				  BIT(MBOX_TAG_FROM_ID) | BIT(MBOX_TAG_FLAGS),
			  BIT(MBOX_TAG_MAILBOX)) < 0)
		return;
	count = proto_u64(&q->f, MBOX_TAG_COUNT, 1);
	flags = proto_u64(&q->f, MBOX_TAG_FLAGS, 0);
	if (count < 1 || count > MBOX_RECV_MAX) {
		conn_reply_error(q->c, q->h->opcode, q->h->id, MBOX_S_INVALID,
				 NULL, "COUNT must be 1 to %u", MBOX_RECV_MAX);
		return;
	}
	if (flags & ~(uint64_t)(MBOX_PEEK_DEAD | MBOX_PEEK_ID_ORDER)) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "unknown FLAGS bits for PEEK");
		return;
	}
	mb = request_mailbox(q, ACL_READ);
	if (!mb)
		return;
	pc.b = q->b;
	pc.mb = mb;
	proto_writer_begin(&q->b->w, q->h->opcode, MBOX_FLAG_REPLY, q->h->id,
			   MBOX_S_OK);
	r = store_msg_peek(q->b->store, mb,
			   proto_u64(&q->f, MBOX_TAG_FROM_ID, 0), count,
			   (flags & MBOX_PEEK_DEAD	 ? STORE_PEEK_DEAD
			    : flags & MBOX_PEEK_ID_ORDER ? STORE_PEEK_BY_ID
							 : STORE_PEEK_QUEUE),
			   peek_one, &pc);
	if (r < 0) {
		reply_error(q, MBOX_S_STORE, NULL,
			    "the store failed reading the mailbox");
		return;
	}
	conn_send_writer(q->c, &q->b->w);
}

/* The requests that read the store and change nothing: what they show
 * must be committed (see broker_defer_read). */
static void
dispatch_read(Request *q)
{
	switch (q->h->opcode) {
	case MBOX_OP_LIST:
		op_list(q);
		break;
	case MBOX_OP_PEEK:
		op_peek(q);
		break;
	case MBOX_OP_STAT:
		op_stat(q);
		break;
	case MBOX_OP_STATS:
		op_stats(q);
		break;
	}
}

void
broker_dispatch_read(Conn *c, uint16_t opcode, uint32_t id, const uint8_t *body,
		     size_t len)
{
	ProtoHeader h = {.opcode = opcode, .id = id, .body_len = (uint32_t)len};
	Request q = {.c = c, .b = c->broker, .h = &h};
	char why[128];
	const char *whyp = NULL;

	/* It parsed when it came; the copy parses the same. */
	if (proto_fields_parse(&q.f, body, len, why, &whyp) < 0) {
		conn_reply_error(c, opcode, id, MBOX_S_MALFORMED, NULL, "%s",
				 whyp ? whyp : why);
		return;
	}
	dispatch_read(&q);
}

/* Whether opcode names an operation of this broker (a request): they
 * are numbered from HELLO to CHOWN without a gap (doc/protocol.md 5);
 * pushes, from 64, are not requests. */
static bool
dispatch_op_known(uint16_t opcode)
{
	return opcode >= MBOX_OP_HELLO && opcode <= MBOX_OP_CHOWN;
}

/*
 * The checks of a request that need its header alone, in the order
 * doc/protocol.md (4.4, "Which status wins") gives: false when the
 * request was answered, or the connection closed, here.
 */
static bool
dispatch_header_ok(Conn *c, const ProtoHeader *h)
{
	if (h->flags != 0 || h->status != 0) {
		conn_close(c, "a request must have flags 0 and status 0");
		return false;
	}
	if (c->refuse_limit) {
		bool per_uid =
			strcmp(c->refuse_limit, "max_connections_per_uid") == 0;
		conn_reply_error(
			c, h->opcode, h->id, MBOX_S_LIMIT, c->refuse_limit,
			"too many connections%s: %s is %zu; close some, or "
			"raise mboxd --%s",
			per_uid ? " of this uid" : "", c->refuse_limit,
			per_uid ? c->broker->cfg.max_connections_per_uid
				: c->broker->cfg.max_connections,
			per_uid ? "max-connections-per-uid"
				: "max-connections");
		conn_close(c, c->refuse_limit);
		return false;
	}
	return true;
}

void
broker_dispatch_too_large(Conn *c, const ProtoHeader *h, size_t max_body)
{
	broker_note_request(c->broker, c);
	if (!dispatch_header_ok(c, h))
		return;
	conn_reply_error(c, h->opcode, h->id, MBOX_S_TOO_LARGE, "max_frame",
			 "frame body of %u bytes is over the limit of %zu "
			 "bytes (max_msg_size is %zu)",
			 h->body_len, max_body, c->broker->cfg.max_msg_size);
}

void
broker_dispatch(Conn *c, const ProtoHeader *h, const uint8_t *body, size_t len)
{
	Request q = {.c = c, .b = c->broker, .h = h};
	char why[128];
	const char *whyp = NULL;

	broker_note_request(c->broker, c);
	if (!dispatch_header_ok(c, h))
		return;
	if (!c->hello_done && h->opcode != MBOX_OP_HELLO) {
		conn_reply_error(c, h->opcode, h->id, MBOX_S_VERSION, NULL,
				 "HELLO must be the first request");
		conn_close(c, "no HELLO");
		return;
	}
	if (c->in_flight >= c->broker->cfg.max_in_flight) {
		conn_reply_error(c, h->opcode, h->id, MBOX_S_BUSY,
				 "max_in_flight",
				 "too many requests in flight on this "
				 "connection (max_in_flight is %zu); wait for "
				 "replies before sending more, or raise mboxd "
				 "--max-in-flight",
				 c->broker->cfg.max_in_flight);
		return;
	}
	if (c->broker->stopping) {
		conn_reply_error(c, h->opcode, h->id, MBOX_S_SHUTDOWN, NULL,
				 "%s", BROKER_STOPPING_TEXT);
		return;
	}
	/* Before the body: a newer client's operation is unknown here
	 * whatever its fields, which this broker may not know either. */
	if (!dispatch_op_known(h->opcode)) {
		conn_reply_error(c, h->opcode, h->id, MBOX_S_UNKNOWN_OP, NULL,
				 "operation %u is not known to this broker",
				 h->opcode);
		return;
	}
	if (proto_fields_parse(&q.f, body, len, why, &whyp) < 0) {
		conn_reply_error(c, h->opcode, h->id, MBOX_S_MALFORMED, NULL,
				 "%s", whyp ? whyp : why);
		return;
	}
	switch (h->opcode) {
	case MBOX_OP_HELLO:
		op_hello(&q);
		break;
	case MBOX_OP_PING:
		op_ping(&q);
		break;
	case MBOX_OP_CREATE:
		op_create(&q);
		break;
	case MBOX_OP_POST:
		op_post(&q);
		break;
	case MBOX_OP_RECV:
		op_recv(&q);
		break;
	case MBOX_OP_ACK:
	case MBOX_OP_NACK:
	case MBOX_OP_REJECT:
		op_settle(&q);
		break;
	case MBOX_OP_TOUCH:
		op_touch(&q);
		break;
	case MBOX_OP_SUBSCRIBE:
		op_subscribe(&q);
		break;
	case MBOX_OP_UNSUBSCRIBE:
		op_unsubscribe(&q);
		break;
	case MBOX_OP_HANDOFF:
		op_handoff(&q);
		break;
	case MBOX_OP_CLAIM:
		op_claim(&q);
		break;
	case MBOX_OP_LIST:
	case MBOX_OP_PEEK:
	case MBOX_OP_STAT:
	case MBOX_OP_STATS:
		if (!store_in_txn(q.b->store))
			dispatch_read(&q);
		else if (broker_defer_read(q.b, c, h, body, len) < 0)
			conn_close(c, "out of memory");
		break;
	case MBOX_OP_SET:
		op_set(&q);
		break;
	case MBOX_OP_DELETE:
		op_delete(&q);
		break;
	case MBOX_OP_PURGE:
		op_purge(&q);
		break;
	case MBOX_OP_KICK:
		op_kick(&q);
		break;
	case MBOX_OP_PAUSE:
	case MBOX_OP_RESUME:
		op_pause_resume(&q);
		break;
	case MBOX_OP_BIND:
	case MBOX_OP_UNBIND:
		op_bind_unbind(&q);
		break;
	case MBOX_OP_PUBLISH:
		op_publish(&q);
		break;
	case MBOX_OP_CHMOD:
		op_chmod(&q);
		break;
	case MBOX_OP_CHOWN:
		op_chown(&q);
		break;
	case MBOX_OP_CLIENTS:
		op_clients(&q);
		break;
	default:
		conn_reply_error(c, h->opcode, h->id, MBOX_S_UNKNOWN_OP, NULL,
				 "operation %u is not known to this broker",
				 h->opcode);
		break;
	}
}
