/*
 * admin.c - mailbox administration: CREATE, SET, DELETE, PURGE, KICK,
 * PAUSE, RESUME, CHMOD, CHOWN, the fan-out bindings BIND and UNBIND, and
 * LIST.
 *
 * Each call checks its arguments before sending anything and answers with
 * the broker's verdict; none keeps state in the handle.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "client/libmbox-int.h"
#include "client/msg.h"
#include "client/proto.h"

/* -------------------------------------------------------------------- */
/* CREATE and SET */

/* CREATE and SET: each setting "key=value" with a non-empty key. */
static int
settings_check(mbox *m, const char *const *settings)
{
	size_t i;

	for (i = 0; settings && settings[i]; i++) {
		if (!strchr(settings[i], '=') || settings[i][0] == '=' ||
		    !check_utf8(settings[i])) {
			error_set(m, "setting \"%.64s\" is not key=value",
				  settings[i]);
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * CREATE, SET, BIND and UNBIND: MAILBOX, then each string of vals (NULL
 * or NULL-terminated) as a field tag; empty reply. The caller entered
 * and checked its arguments.
 */
static int
mailbox_strings_req(mbox *m, uint16_t op, const char *mailbox, uint16_t tag,
		    const char *const *vals)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	size_t i;
	int r;

	id = core_begin(m, op);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	for (i = 0; vals && vals[i]; i++)
		proto_put_str(&m->tx, tag, vals[i]);
	r = core_call(m, id, op, &fr, &f, 0);
	core_frame_free(fr);
	return r;
}

static int
settings_req(mbox *m, uint16_t op, const char *mailbox,
	     const char *const *settings)
{
	int r;

	r = core_enter_mailbox(m, mailbox);
	if (r < 0)
		return r;
	r = settings_check(m, settings);
	if (r < 0)
		return r;
	return mailbox_strings_req(m, op, mailbox, MBOX_TAG_SETTING, settings);
}

int
mbox_create(mbox *m, const char *mailbox, const char *const *settings)
{
	return settings_req(m, MBOX_OP_CREATE, mailbox, settings);
}

int
mbox_set(mbox *m, const char *mailbox, const char *const *settings)
{
	if (m && (!settings || !settings[0])) {
		error_set(m, "no setting to change given");
		return -EINVAL;
	}
	return settings_req(m, MBOX_OP_SET, mailbox, settings);
}

/* -------------------------------------------------------------------- */
/* LIST */

int
info_fields_decode(const ProtoFields *fp, mbox_mailbox_info *info)
{
	ProtoSlice name = fp->first[MBOX_TAG_MAILBOX];

	info->name = strndup((const char *)name.ptr, name.len);
	if (!info->name)
		return -ENOMEM;
	info->ready = proto_u64(fp, MBOX_TAG_READY, 0);
	info->leased = proto_u64(fp, MBOX_TAG_LEASED, 0);
	info->delayed = proto_u64(fp, MBOX_TAG_DELAYED, 0);
	info->dead = proto_u64(fp, MBOX_TAG_DEAD, 0);
	info->bytes = proto_u64(fp, MBOX_TAG_BYTES, 0);
	info->oldest_ns = (int64_t)proto_u64(fp, MBOX_TAG_OLDEST_NS, 0);
	info->consumers = proto_u64(fp, MBOX_TAG_CONSUMERS, 0);
	info->owner_uid = (uint32_t)proto_u64(fp, MBOX_TAG_OWNER_UID, 0);
	info->gid = (uint32_t)proto_u64(fp, MBOX_TAG_GROUP_GID, 0);
	info->mode = (uint32_t)proto_u64(fp, MBOX_TAG_MODE, 0);
	return 0;
}

static int
info_decode(const ProtoField *fl, mbox_mailbox_info *info, char why[128])
{
	ProtoFields f;
	int r;

	r = msg_parse_fields(&f, fl->val, fl->len, ~UINT64_C(0),
			     PROTO_BIT(MBOX_TAG_MAILBOX), why);
	if (r < 0)
		return r;
	return info_fields_decode(&f, info);
}

int
mbox_list(mbox *m, mbox_mailbox_info **list, size_t *n)
{
	mbox_mailbox_info *infos = NULL;
	char after[MBOX_NAME_MAX + 1] = "";
	char why[128] = "";
	size_t got = 0;
	int r;

	if (list)
		*list = NULL;
	if (n)
		*n = 0;
	r = core_enter(m);
	if (r < 0)
		return r;
	if (!list || !n) {
		error_set(m, "no place for the list given");
		return -EINVAL;
	}
	/* The broker answers in pages of at most MAX_MSG_SIZE bytes; each
	 * page starts after the last name of the one before, so names
	 * strictly increase and the loop ends. */
	for (;;) {
		ProtoFields f;
		ProtoReader rd;
		ProtoField fl;
		Frame *fr = NULL;
		size_t count, first = got;
		uint32_t id;
		bool more;

		id = core_begin(m, MBOX_OP_LIST);
		if (after[0])
			proto_put_str(&m->tx, MBOX_TAG_MAILBOX, after);
		r = core_call(m, id, MBOX_OP_LIST, &fr, &f, 0);
		if (r < 0)
			goto fail;
		count = f.count[MBOX_TAG_INFO];
		if (count) {
			mbox_mailbox_info *bigger =
				realloc(infos, (got + count) * sizeof(*infos));
			if (!bigger) {
				core_frame_free(fr);
				error_set(m, "out of memory");
				r = -ENOMEM;
				goto fail;
			}
			infos = bigger;
			memset(infos + got, 0, count * sizeof(*infos));
		}
		core_frame_reader(&rd, fr);
		while (got - first < count &&
		       (r = proto_reader_next(&rd, &fl)) > 0) {
			if (fl.tag != MBOX_TAG_INFO)
				continue;
			r = info_decode(&fl, &infos[got], why);
			if (r == -ENOMEM) {
				core_frame_free(fr);
				error_set(m, "out of memory");
				goto fail;
			}
			if (r < 0) {
				core_frame_free(fr);
				error_set(m, "undecodable mailbox summary: %s",
					  why);
				r = -EPROTO;
				goto fail;
			}
			got++;
		}
		more = proto_u64(&f, MBOX_TAG_FLAGS, 0) & MBOX_LIST_MORE;
		core_frame_free(fr);
		if (got - first != count) {
			error_set(m, "undecodable reply to LIST");
			r = -EPROTO;
			goto fail;
		}
		if (!more)
			break;
		/* A page that says "more" must move forward. */
		if (count == 0 || strcmp(infos[got - 1].name, after) <= 0) {
			error_set(m, "the broker's LIST pages do not advance");
			r = -EPROTO;
			goto fail;
		}
		snprintf(after, sizeof(after), "%s", infos[got - 1].name);
	}
	*list = infos;
	*n = got;
	return 0;

fail:
	mbox_list_free(infos, got);
	return r;
}

void
mbox_list_free(mbox_mailbox_info *list, size_t n)
{
	size_t i;

	if (!list)
		return;
	for (i = 0; i < n; i++)
		free(list[i].name);
	free(list);
}

/* -------------------------------------------------------------------- */
/* Requests on one mailbox */

/* Also serves UNSUBSCRIBE: the same shape. */
int
admin_mailbox_req(mbox *m, uint16_t op, const char *mailbox, uint16_t tag,
		  uint64_t val, uint64_t *count)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	r = core_enter_mailbox(m, mailbox);
	if (r < 0)
		return r;
	id = core_begin(m, op);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	if (tag && val)
		proto_put_u64(&m->tx, tag, val);
	r = core_call(m, id, op, &fr, &f,
		      count ? PROTO_BIT(MBOX_TAG_COUNT) : 0);
	if (r == 0 && count)
		*count = proto_u64(&f, MBOX_TAG_COUNT, 0);
	core_frame_free(fr);
	return r;
}

int
mbox_delete(mbox *m, const char *mailbox, unsigned flags)
{
	if (m && check_flags(m, "delete", flags, MBOX_DELETE_FORCE_FLAG))
		return -EINVAL;
	return admin_mailbox_req(
		m, MBOX_OP_DELETE, mailbox, MBOX_TAG_FLAGS,
		flags & MBOX_DELETE_FORCE_FLAG ? MBOX_DELETE_FORCE : 0, NULL);
}

int
mbox_purge(mbox *m, const char *mailbox, unsigned flags, uint64_t *count)
{
	uint64_t tmp;

	if (m && check_flags(m, "purge", flags, MBOX_PURGE_DEAD_ONLY))
		return -EINVAL;
	return admin_mailbox_req(m, MBOX_OP_PURGE, mailbox, MBOX_TAG_FLAGS,
				 flags & MBOX_PURGE_DEAD_ONLY ? MBOX_PURGE_DEAD
							      : 0,
				 count ? count : &tmp);
}

int
mbox_kick(mbox *m, const char *mailbox, uint64_t max, uint64_t *count)
{
	uint64_t tmp;

	return admin_mailbox_req(m, MBOX_OP_KICK, mailbox, MBOX_TAG_COUNT, max,
				 count ? count : &tmp);
}

int
mbox_pause(mbox *m, const char *mailbox)
{
	return admin_mailbox_req(m, MBOX_OP_PAUSE, mailbox, 0, 0, NULL);
}

int
mbox_resume(mbox *m, const char *mailbox)
{
	return admin_mailbox_req(m, MBOX_OP_RESUME, mailbox, 0, 0, NULL);
}

/* -------------------------------------------------------------------- */
/* Fan-out bindings */

static int
binding_req(mbox *m, uint16_t op, const char *mailbox, const char *pattern)
{
	const char *const vals[] = {pattern, NULL};
	int r;

	r = core_enter_mailbox(m, mailbox);
	if (r < 0)
		return r;
	r = check_topic(m, pattern, true);
	if (r < 0)
		return r;
	return mailbox_strings_req(m, op, mailbox, MBOX_TAG_TOPIC, vals);
}

int
mbox_bind(mbox *m, const char *mailbox, const char *pattern)
{
	return binding_req(m, MBOX_OP_BIND, mailbox, pattern);
}

int
mbox_unbind(mbox *m, const char *mailbox, const char *pattern)
{
	return binding_req(m, MBOX_OP_UNBIND, mailbox, pattern);
}

/* -------------------------------------------------------------------- */
/* Permissions */

/*
 * CHMOD and CHOWN: MAILBOX and up to two u64 fields (tag 0: left out).
 * Unlike admin_mailbox_req, a value of 0 is sent: mode 0, uid 0 (root)
 * and gid 0 are real values here.
 */
static int
chown_chmod_req(mbox *m, uint16_t op, const char *mailbox, uint16_t tag1,
		uint64_t val1, uint16_t tag2, uint64_t val2)
{
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	r = core_enter_mailbox(m, mailbox);
	if (r < 0)
		return r;
	id = core_begin(m, op);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	if (tag1)
		proto_put_u64(&m->tx, tag1, val1);
	if (tag2)
		proto_put_u64(&m->tx, tag2, val2);
	r = core_call(m, id, op, &fr, &f, 0);
	core_frame_free(fr);
	return r;
}

int
mbox_chmod(mbox *m, const char *mailbox, unsigned mode)
{
	if (m && mode > 0777) {
		error_set(m, "mode %o is not in 0 to 0777", mode);
		return -EINVAL;
	}
	return chown_chmod_req(m, MBOX_OP_CHMOD, mailbox, MBOX_TAG_MODE, mode,
			       0, 0);
}

int
mbox_chown(mbox *m, const char *mailbox, uid_t owner, gid_t group)
{
	bool set_owner = owner != (uid_t)-1, set_group = group != (gid_t)-1;

	if (m && !set_owner && !set_group) {
		error_set(m, "chown: give an owner, a group or both");
		return -EINVAL;
	}
	return chown_chmod_req(m, MBOX_OP_CHOWN, mailbox,
			       set_owner ? MBOX_TAG_OWNER_UID : 0, owner,
			       set_group ? MBOX_TAG_GROUP_GID : 0, group);
}
