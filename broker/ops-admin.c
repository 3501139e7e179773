/*
 * ops-admin.c - mailbox administration (SET, DELETE, PURGE, KICK, PAUSE,
 * RESUME, CHMOD, CHOWN) and fan-out (BIND, UNBIND, PUBLISH):
 * doc/protocol.md 5.15-5.21, 5.25 and 5.26.
 *
 * Same shape as the handlers of dispatch.c: every check that can refuse
 * the request runs before the first write, so a refused request changes
 * nothing and never fails the batch it would have joined. The writes go
 * into the open batch transaction and the reply waits for its commit
 * (admin_done). Expected refusals (EXISTS of a BIND, NOT_FOUND of an
 * UNBIND) are found by looking, not by a write that fails, because a
 * failed write would roll back every other request of the batch.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/request.h"
#include "broker/settings.h"
#include "client/topic.h"

/*
 * The writes of one request are done (r: the first failure, or >= 0): a
 * failure fails the whole batch, so everything in it is answered STORE
 * after the rollback. Then owe the reply (kind, n: see PendingOp).
 */
static void
admin_done(Request *q, int64_t r, const char *name, enum pending_kind kind,
	   uint64_t *ids, size_t n)
{
	if (r < 0) {
		broker_batch_fail(q->b, (int)r);
		log_write(q->b->log, LOG_ERR, "%s of mailbox %s failed: %s",
			  proto_op_name(q->h->opcode), name,
			  store_errmsg(q->b->store));
	}
	request_defer(q, kind, ids, NULL, n);
}

/* FLAGS of the request (0 when absent); answers INVALID for bits outside
 * known. */
static int
admin_flags(Request *q, uint64_t known, const char *names, uint64_t *out)
{
	uint64_t flags = proto_u64(&q->f, MBOX_TAG_FLAGS, 0);

	if (flags & ~known) {
		reply_errorf(q, MBOX_S_INVALID, NULL,
			     "unknown FLAGS bits 0x%llx for %s; it knows %s",
			     (unsigned long long)(flags & ~known),
			     proto_op_name(q->h->opcode), names);
		return -EINVAL;
	}
	*out = flags;
	return 0;
}

/* The settings fields of a StoreMailbox, which SET may change. */
static void
admin_copy_settings(StoreMailbox *to, const StoreMailbox *from)
{
	to->owner_uid = from->owner_uid;
	to->gid = from->gid;
	to->mode = from->mode;
	to->lease_ms = from->lease_ms;
	to->max_deliveries = from->max_deliveries;
	to->max_msgs = from->max_msgs;
	to->max_bytes = from->max_bytes;
	to->ttl_ms = from->ttl_ms;
	to->flags = from->flags;
}

/* All or none: every SETTING is applied to a copy first, and mb changes
 * only when all of them were good. */
void
op_set(Request *q)
{
	StoreMailbox *mb, tmpl;
	char why[256];
	int sr;

	if (request_check(q, BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_SETTING),
			  BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_SETTING)) < 0)
		return;
	mb = request_mailbox(q, REQUEST_OWNER);
	if (!mb)
		return;
	tmpl = *mb;
	sr = settings_apply_all(&tmpl, &q->c->peer, q->f.body, q->f.len, false,
				why, sizeof(why));
	if (sr < 0) {
		reply_errorf(q, sr == -EPERM ? MBOX_S_DENIED : MBOX_S_INVALID,
			     NULL, "%s; no setting was changed", why);
		return;
	}
	if (request_txn(q) < 0)
		return;
	admin_copy_settings(mb, &tmpl);
	/* On failure the store puts mb's settings back itself. */
	admin_done(q, store_mailbox_update(q->b->store, mb), mb->name,
		   PENDING_PLAIN, NULL, 0);
	/* A shorter lease or a lifted limit may matter to waiting RECVs. */
	broker_mailbox_news(q->b, mb);
}

void
op_delete(Request *q)
{
	char name[MBOX_NAME_MAX + 1];
	StoreMailbox *mb;
	uint64_t flags, held;

	if (request_check(q, BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_FLAGS),
			  BIT(MBOX_TAG_MAILBOX)) < 0 ||
	    admin_flags(q, MBOX_DELETE_FORCE, "1 = FORCE", &flags) < 0)
		return;
	mb = request_mailbox(q, REQUEST_OWNER);
	if (!mb)
		return;
	held = mb->n_ready + mb->n_leased + mb->n_dead;
	if (held && !(flags & MBOX_DELETE_FORCE)) {
		reply_errorf(q, MBOX_S_NOT_EMPTY, NULL,
			     "mailbox %s holds %llu messages (%llu ready, "
			     "%llu leased, %llu dead); purge them first "
			     "('mboxctl purge', 'mboxctl purge --dead'), or "
			     "delete with FORCE ('mboxctl rm MAILBOX --force')",
			     mb->name, (unsigned long long)held,
			     (unsigned long long)mb->n_ready,
			     (unsigned long long)mb->n_leased,
			     (unsigned long long)mb->n_dead);
		return;
	}
	if (request_txn(q) < 0)
		return;
	/* mb is gone after the drop: keep its name for the log. */
	memcpy(name, mb->name, sizeof(name));
	admin_done(q, broker_mailbox_drop(q->b, mb), name, PENDING_PLAIN, NULL,
		   0);
}

void
op_purge(Request *q)
{
	StoreMailbox *mb;
	uint64_t flags;
	int64_t n;

	if (request_check(q, BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_FLAGS),
			  BIT(MBOX_TAG_MAILBOX)) < 0 ||
	    admin_flags(q, MBOX_PURGE_DEAD, "1 = DEAD", &flags) < 0)
		return;
	mb = request_mailbox(q, REQUEST_OWNER);
	if (!mb || request_txn(q) < 0)
		return;
	n = store_msg_purge(q->b->store, mb, flags & MBOX_PURGE_DEAD);
	if (n > 0)
		broker_batch_frees(q->b);
	admin_done(q, n, mb->name, PENDING_COUNT, NULL, n > 0 ? (size_t)n : 0);
}

/*
 * COUNT absent or 0: every dead message (libmbox's max 0 = all). The
 * owner's, like PURGE: a kicked message loses its ttl, so a mere writer
 * could bring back other senders' expired requests and rejected poison.
 */
void
op_kick(Request *q)
{
	StoreMailbox *mb;
	int64_t n;

	if (request_check(q, BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_COUNT),
			  BIT(MBOX_TAG_MAILBOX)) < 0)
		return;
	mb = request_mailbox(q, REQUEST_OWNER);
	if (!mb || request_txn(q) < 0)
		return;
	n = store_msg_kick(q->b->store, mb,
			   proto_u64(&q->f, MBOX_TAG_COUNT, 0));
	admin_done(q, n, mb->name, PENDING_COUNT, NULL, n > 0 ? (size_t)n : 0);
	if (n > 0)
		broker_mailbox_news(q->b, mb);
}

/*
 * PAUSE and RESUME. A rolled-back batch is safe: the store restores
 * mb->flags from its transaction journal, deliveries leased under the
 * state that did not last are dropped with the batch and never sent, and
 * the mailbox is served again (broker_renew_served).
 */
void
op_pause_resume(Request *q)
{
	bool pause = q->h->opcode == MBOX_OP_PAUSE;
	StoreMailbox *mb;

	if (request_check(q, BIT(MBOX_TAG_MAILBOX), BIT(MBOX_TAG_MAILBOX)) < 0)
		return;
	mb = request_mailbox(q, REQUEST_OWNER);
	if (!mb || request_txn(q) < 0)
		return;
	if (pause)
		mb->flags |= STORE_MB_PAUSED;
	else
		mb->flags &= ~STORE_MB_PAUSED;
	admin_done(q, store_mailbox_update(q->b->store, mb), mb->name,
		   PENDING_PLAIN, NULL, 0);
	if (!pause)
		broker_mailbox_news(q->b, mb);
}

/* Copy the TOPIC field into buf (NUL-terminated) if it is a valid topic
 * (pattern: a valid pattern); answers INVALID otherwise. */
static int
admin_topic(Request *q, bool pattern, char buf[MBOX_TOPIC_MAX + 1])
{
	ProtoSlice s = q->f.first[MBOX_TAG_TOPIC];
	const char *p = (const char *)s.ptr;

	if (pattern ? topic_pattern_valid(p, s.len) : topic_valid(p, s.len)) {
		memcpy(buf, p, s.len);
		buf[s.len] = '\0';
		return 0;
	}
	if (!pattern && topic_pattern_valid(p, s.len))
		reply_error(q, MBOX_S_INVALID, NULL,
			    "a published topic names one subject: the "
			    "wildcards * and > belong in BIND patterns");
	else if (pattern)
		reply_error(q, MBOX_S_INVALID, NULL,
			    "invalid topic pattern: use 1-200 bytes of words "
			    "of A-Z a-z 0-9 _ - separated by single dots; a "
			    "word may also be * (one word) or, last only, > "
			    "(one or more words)");
	else
		reply_error(q, MBOX_S_INVALID, NULL,
			    "invalid topic: use 1-200 bytes of words of A-Z "
			    "a-z 0-9 _ - separated by single dots");
	return -EINVAL;
}

typedef struct BindingFind {
	const StoreMailbox *mb;
	const char *pattern;
} BindingFind;

static int
binding_find_one(void *ctx, StoreMailbox *mb, const char *pattern)
{
	const BindingFind *bf = ctx;

	return mb == bf->mb && strcmp(pattern, bf->pattern) == 0;
}

void
op_bind_unbind(Request *q)
{
	bool bind = q->h->opcode == MBOX_OP_BIND;
	char pattern[MBOX_TOPIC_MAX + 1];
	StoreMailbox *mb;
	BindingFind bf;
	bool have;

	if (request_check(q, BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_TOPIC),
			  BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_TOPIC)) < 0 ||
	    admin_topic(q, true, pattern) < 0)
		return;
	mb = request_mailbox(q, REQUEST_OWNER);
	if (!mb)
		return;
	bf = (BindingFind){mb, pattern};
	have = store_binding_count(q->b->store, mb) > 0 &&
	       store_binding_foreach(q->b->store, binding_find_one, &bf) > 0;
	if (bind && have) {
		reply_errorf(q, MBOX_S_EXISTS, NULL,
			     "mailbox %s is already bound to %s", mb->name,
			     pattern);
		return;
	}
	if (!bind && !have) {
		reply_errorf(q, MBOX_S_NOT_FOUND, NULL,
			     "mailbox %s is not bound to %s, so there is "
			     "nothing to unbind (patterns compare as "
			     "written)",
			     mb->name, pattern);
		return;
	}
	if (bind && broker_refuse_add(q->b, q->c, q->h->opcode, q->h->id))
		return;
	if (request_txn(q) < 0)
		return;
	admin_done(q,
		   bind ? store_binding_add(q->b->store, mb, pattern)
			: store_binding_remove(q->b->store, mb, pattern),
		   mb->name, PENDING_PLAIN, NULL, 0);
}

/* The mailboxes a PUBLISH stores into, each once. */
typedef struct Targets {
	Request *q;
	const char *topic;
	size_t len;
	StoreMailbox **mb;
	size_t n, cap;
} Targets;

/*
 * Bindings come ordered by mailbox name, so those of one mailbox are
 * adjacent: comparing with the last target is enough to store one copy
 * per mailbox however many of its patterns match.
 */
static int
targets_add(void *ctx, StoreMailbox *mb, const char *pattern)
{
	Targets *t = ctx;

	if (t->n && t->mb[t->n - 1] == mb)
		return 0;
	if (!topic_match(pattern, t->topic, t->len) ||
	    !acl_may(&t->q->c->peer, mb, ACL_WRITE))
		return 0;
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 8;
		StoreMailbox **a = realloc(t->mb, cap * sizeof(*a));

		if (!a)
			return -ENOMEM;
		t->mb = a;
		t->cap = cap;
	}
	t->mb[t->n++] = mb;
	return 0;
}

/* Check the PUBLISH request; on success *item holds its one message. */
static int
publish_parse(Request *q, char topic[MBOX_TOPIC_MAX + 1], PostItem **item)
{
	size_t n;

	if (request_check(q, BIT(MBOX_TAG_TOPIC) | BIT(MBOX_TAG_MSG),
			  BIT(MBOX_TAG_TOPIC) | BIT(MBOX_TAG_MSG)) < 0)
		return -EBADMSG;
	if (q->f.count[MBOX_TAG_MSG] != 1) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "PUBLISH carries exactly one MSG; publish each "
			    "message on its own");
		return -EINVAL;
	}
	if (admin_topic(q, false, topic) < 0 || post_parse(q, item, &n) < 0)
		return -EINVAL;
	if ((*item)->dedup.len) {
		reply_error(q, MBOX_S_INVALID, NULL,
			    "DEDUP is not supported by PUBLISH; post to each "
			    "mailbox with POST to deduplicate");
		post_items_free(*item, n);
		*item = NULL;
		return -EINVAL;
	}
	return 0;
}

/* Store one copy of item in each target; all or none (the batch). */
static void
publish_store(Request *q, const Targets *t, const PostItem *item, uint64_t *ids)
{
	Broker *b = q->b;
	int64_t now = broker_now_ns();
	char key[MBOX_NAME_MAX + 1];

	for (size_t i = 0; i < t->n; i++) {
		StoreMsg m;
		int r;

		post_fill_msg(q, t->mb[i], item, now, &m, key);
		r = store_msg_insert(b->store, t->mb[i], &m);
		if (r < 0) {
			/* The batch cannot commit half a PUBLISH. */
			broker_batch_fail(b, r);
			log_write(b->log, LOG_ERR,
				  "cannot store a published message in %s: %s",
				  t->mb[i]->name, store_errmsg(b->store));
			return;
		}
		ids[i] = m.id;
		broker_count_post(b, t->mb[i], &m);
		if (m.expires_ns)
			broker_expiry_changed(b, m.expires_ns);
		broker_mailbox_news(b, t->mb[i]);
	}
}

void
op_publish(Request *q)
{
	char topic[MBOX_TOPIC_MAX + 1];
	PostItem *item = NULL;
	Targets t = {.q = q, .topic = topic};
	uint64_t *ids = NULL, skipped = 0;
	size_t kept = 0, quiet;

	if (publish_parse(q, topic, &item) < 0)
		return;
	t.len = strlen(topic);
	if (store_binding_foreach(q->b->store, targets_add, &t) < 0 ||
	    (t.n && !(ids = calloc(t.n, sizeof(*ids))))) {
		reply_error(q, MBOX_S_LIMIT, "memory", "out of memory");
		goto out;
	}
	/* The reply names every copy (COUNT, then an ID each): it must fit
	 * in the MAX_FRAME this connection was given. */
	if ((t.n + 1) * (MBOX_PROTO_FIELD_HDR + 8) > q->c->assembler.max_body) {
		reply_errorf(q, MBOX_S_LIMIT, "max_frame",
			     "topic %s matches %zu mailboxes, more than one "
			     "reply can name (MAX_FRAME is %zu bytes); nothing "
			     "was published: unbind some of them, or raise "
			     "mboxd --max-msg-size, which sets MAX_FRAME",
			     topic, t.n, (size_t)q->c->assembler.max_body);
		goto out;
	}
	/*
	 * A full mailbox of the publisher's own refuses the whole PUBLISH
	 * (backpressure). One of another owner is left out and counted:
	 * anyone may bind a mailbox to any topic, and a full one must not
	 * stop everybody's publishing.
	 */
	for (size_t i = 0; i < t.n; i++)
		if (t.mb[i]->owner_uid == q->c->peer.uid &&
		    post_would_overflow(q, t.mb[i], item, 1, NULL))
			goto out;
	for (size_t i = 0; i < t.n; i++) {
		if (post_fits(q->b, t.mb[i], item, 1)) {
			t.mb[kept++] = t.mb[i];
			continue;
		}
		if (log_rate_ok(&q->b->skip_log, broker_mono_ns(), &quiet))
			log_write(q->b->log, LOG_NOTICE,
				  "a publish to %s by uid %u left out mailbox "
				  "%s (owner uid %u): it is full%s",
				  topic, (unsigned)q->c->peer.uid,
				  t.mb[i]->name, (unsigned)t.mb[i]->owner_uid,
				  quiet ? " (and more not logged)" : "");
		skipped++;
	}
	t.n = kept;
	if (t.n && broker_refuse_add(q->b, q->c, q->h->opcode, q->h->id))
		goto out;
	/* No copy: nothing to write, but the reply still goes through the
	 * batch so that it keeps its place among this connection's. */
	if (t.n && request_txn(q) < 0)
		goto out;
	publish_store(q, &t, item, ids);
	request_defer(q, PENDING_PUBLISH, ids, NULL, t.n);
	ids = NULL;
	/* request_defer queued the reply last, unless it closed q->c. */
	if (skipped && q->b->pending_tail && q->b->pending_tail->conn == q->c)
		q->b->pending_tail->skipped = skipped;
out:
	free(ids);
	free(t.mb);
	post_items_free(item, 1);
}

/* CHMOD: like chmod(2), the mode is the owner's (or an admin's) to set. */
void
op_chmod(Request *q)
{
	StoreMailbox *mb;
	uint64_t mode;

	if (request_check(q, BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_MODE),
			  BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_MODE)) < 0)
		return;
	mode = proto_u64(&q->f, MBOX_TAG_MODE, 0);
	if (mode > 0777) {
		reply_errorf(q, MBOX_S_INVALID, NULL,
			     "mode %llo is not in 0 to 0777 (octal)",
			     (unsigned long long)mode);
		return;
	}
	mb = request_mailbox(q, REQUEST_OWNER);
	if (!mb || request_txn(q) < 0)
		return;
	mb->mode = (uint32_t)mode;
	/* On failure the store puts mb's settings back itself. */
	admin_done(q, store_mailbox_update(q->b->store, mb), mb->name,
		   PENDING_PLAIN, NULL, 0);
}

/* A uid or gid on the wire: (uid_t)-1 means "unchanged" to chown(2), so
 * it is refused as a value, like anything wider than 32 bits. */
static int
chown_id(Request *q, unsigned tag, const char *what, uint64_t *out)
{
	uint64_t v = proto_u64(&q->f, tag, 0);

	if (v > UINT32_MAX - 1) {
		reply_errorf(q, MBOX_S_INVALID, NULL,
			     "%s %llu is out of range (0 to %lu)", what,
			     (unsigned long long)v,
			     (unsigned long)(UINT32_MAX - 1));
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/*
 * The rules of chown(2): only an admin gives a mailbox away; the owner
 * may move it to any group it is in. Naming the current owner or group
 * again is no change and so needs nothing more than ownership.
 */
static bool
chown_allowed(const AclPeer *p, const StoreMailbox *mb, bool set_owner,
	      uint64_t owner, bool set_group, uint64_t group)
{
	if (acl_is_admin(p))
		return true;
	if (set_owner && owner != mb->owner_uid)
		return false;
	if (set_group && group != mb->gid && !acl_in_group(p, (gid_t)group))
		return false;
	return true;
}

void
op_chown(Request *q)
{
	bool set_owner, set_group;
	uint64_t owner = 0, group = 0;
	StoreMailbox *mb;

	if (request_check(q,
			  BIT(MBOX_TAG_MAILBOX) | BIT(MBOX_TAG_OWNER_UID) |
				  BIT(MBOX_TAG_GROUP_GID),
			  BIT(MBOX_TAG_MAILBOX)) < 0)
		return;
	set_owner = proto_has(&q->f, MBOX_TAG_OWNER_UID);
	set_group = proto_has(&q->f, MBOX_TAG_GROUP_GID);
	if (!set_owner && !set_group) {
		reply_error(q, MBOX_S_MALFORMED, NULL,
			    "CHOWN needs OWNER_UID, GROUP_GID or both");
		return;
	}
	if ((set_owner && chown_id(q, MBOX_TAG_OWNER_UID, "uid", &owner) < 0) ||
	    (set_group && chown_id(q, MBOX_TAG_GROUP_GID, "gid", &group) < 0))
		return;
	mb = request_mailbox(q, REQUEST_OWNER);
	if (!mb)
		return;
	if (!chown_allowed(&q->c->peer, mb, set_owner, owner, set_group,
			   group)) {
		log_denial(q, mb->name);
		reply_error(q, MBOX_S_DENIED, NULL, "permission denied");
		return;
	}
	if (request_txn(q) < 0)
		return;
	if (set_owner)
		mb->owner_uid = (uint32_t)owner;
	if (set_group)
		mb->gid = (uint32_t)group;
	admin_done(q, store_mailbox_update(q->b->store, mb), mb->name,
		   PENDING_PLAIN, NULL, 0);
}
