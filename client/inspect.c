/*
 * inspect.c - what operators look at: STAT (one mailbox in detail),
 * CLIENTS (the connections) and STATS (the broker's counters).
 *
 * Each call decodes the whole reply into structs the caller owns, or
 * nothing: on failure every partial result is freed and *out is NULL.
 * Unknown fields inside the nests are tolerated (a newer broker may add
 * some); missing optional ones read as 0.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/libmbox-int.h"
#include "client/msg.h"
#include "client/proto.h"

#define ANY_TAG (~UINT64_C(0))

static char *
slice_dup(ProtoSlice s)
{
	return strndup(s.ptr ? (const char *)s.ptr : "", s.len);
}

/* -------------------------------------------------------------------- */
/* Counters */

const mbox_counter *
mbox_counter_find(const mbox_counter *list, size_t n, const char *name)
{
	for (size_t i = 0; list && name && i < n; i++)
		if (list[i].name && strcmp(list[i].name, name) == 0)
			return &list[i];
	return NULL;
}

static void
counters_free(mbox_counter *c, size_t n)
{
	for (size_t i = 0; c && i < n; i++)
		free(c[i].name);
	free(c);
}

/* Every COUNTER of a field sequence (p, len) into *out / *n. */
static int
counters_decode(const uint8_t *p, size_t len, size_t count, mbox_counter **out,
		size_t *n, char why[128])
{
	mbox_counter *c = count ? calloc(count, sizeof(*c)) : NULL;
	ProtoReader rd;
	ProtoField fl;
	size_t got = 0;
	int r;

	*out = NULL;
	*n = 0;
	if (count && !c)
		return -ENOMEM;
	proto_reader_init(&rd, p, len);
	while (got < count && (r = proto_reader_next(&rd, &fl)) > 0) {
		ProtoFields f;

		if (fl.tag != MBOX_TAG_COUNTER)
			continue;
		r = msg_parse_fields(&f, fl.val, fl.len, ANY_TAG,
				     PROTO_BIT(MBOX_TAG_KEY), why);
		if (r < 0)
			goto fail;
		c[got].name = slice_dup(f.first[MBOX_TAG_KEY]);
		if (!c[got].name) {
			r = -ENOMEM;
			goto fail;
		}
		c[got].total = proto_u64(&f, MBOX_TAG_COUNT, 0);
		c[got].rate_milli = proto_u64(&f, MBOX_TAG_RATE_MILLI, 0);
		got++;
	}
	*out = c;
	*n = got;
	return 0;
fail:
	counters_free(c, got);
	return r;
}

/* -------------------------------------------------------------------- */
/* Clients */

static void
client_release(mbox_client_info *ci)
{
	for (size_t i = 0; i < ci->n_subs; i++)
		free(ci->subs[i].mailbox);
	free(ci->subs);
}

void
mbox_clients_free(mbox_client_info *list, size_t n)
{
	for (size_t i = 0; list && i < n; i++)
		client_release(&list[i]);
	free(list);
}

static int
sub_decode(const ProtoField *fl, mbox_subscription_info *si, char why[128])
{
	ProtoFields f;
	int r;

	r = msg_parse_fields(&f, fl->val, fl->len, ANY_TAG,
			     PROTO_BIT(MBOX_TAG_MAILBOX), why);
	if (r < 0)
		return r;
	si->mailbox = slice_dup(f.first[MBOX_TAG_MAILBOX]);
	if (!si->mailbox)
		return -ENOMEM;
	si->window = (uint32_t)proto_u64(&f, MBOX_TAG_COUNT, 0);
	si->unacked = proto_u64(&f, MBOX_TAG_LEASED, 0);
	si->lease_ms = proto_u64(&f, MBOX_TAG_LEASE_MS, 0);
	si->flags = (unsigned)proto_u64(&f, MBOX_TAG_FLAGS, 0);
	return 0;
}

/* One CLIENT; on failure whatever was decoded of it is freed. */
static int
client_decode(const ProtoField *fl, mbox_client_info *ci, char why[128])
{
	ProtoFields f;
	ProtoReader rd;
	ProtoField sf;
	ProtoSlice comm;
	size_t count;
	int r;

	memset(ci, 0, sizeof(*ci));
	r = msg_parse_fields(&f, fl->val, fl->len, ANY_TAG, 0, why);
	if (r < 0)
		return r;
	ci->conn_id = proto_u64(&f, MBOX_TAG_CONN_ID, 0);
	ci->pid = (pid_t)proto_u64(&f, MBOX_TAG_SENDER_PID, 0);
	ci->uid = (uid_t)proto_u64(&f, MBOX_TAG_SENDER_UID, 0);
	ci->gid = (gid_t)proto_u64(&f, MBOX_TAG_SENDER_GID, 0);
	comm = f.first[MBOX_TAG_SENDER_COMM];
	if (comm.len >= sizeof(ci->comm))
		comm.len = sizeof(ci->comm) - 1;
	if (comm.len)
		memcpy(ci->comm, comm.ptr, comm.len);
	ci->connected_ns = (int64_t)proto_u64(&f, MBOX_TAG_TIME_NS, 0);
	ci->leased = proto_u64(&f, MBOX_TAG_LEASED, 0);
	ci->waiting = proto_u64(&f, MBOX_TAG_WAITING, 0);
	ci->flags = (unsigned)proto_u64(&f, MBOX_TAG_FLAGS, 0);
	count = f.count[MBOX_TAG_SUBSCRIPTION];
	if (!count)
		return 0;
	ci->subs = calloc(count, sizeof(*ci->subs));
	if (!ci->subs)
		return -ENOMEM;
	proto_reader_init(&rd, fl->val, fl->len);
	while (ci->n_subs < count && proto_reader_next(&rd, &sf) > 0) {
		if (sf.tag != MBOX_TAG_SUBSCRIPTION)
			continue;
		r = sub_decode(&sf, &ci->subs[ci->n_subs], why);
		if (r < 0) {
			client_release(ci);
			return r;
		}
		ci->n_subs++;
	}
	return 0;
}

/* Every CLIENT of the field sequence (p, len). */
static int
clients_decode(const uint8_t *p, size_t len, size_t count,
	       mbox_client_info **out, size_t *n, char why[128])
{
	mbox_client_info *list = count ? calloc(count, sizeof(*list)) : NULL;
	ProtoReader rd;
	ProtoField fl;
	size_t got = 0;
	int r;

	*out = NULL;
	*n = 0;
	if (count && !list)
		return -ENOMEM;
	proto_reader_init(&rd, p, len);
	while (got < count && proto_reader_next(&rd, &fl) > 0) {
		if (fl.tag != MBOX_TAG_CLIENT)
			continue;
		r = client_decode(&fl, &list[got], why);
		if (r < 0) {
			mbox_clients_free(list, got);
			return r;
		}
		got++;
	}
	*out = list;
	*n = got;
	return 0;
}

/* Map a decoding failure to the caller's error; frees nothing. */
static int
decode_error(mbox *m, int r, const char *what, const char *why)
{
	if (r == -ENOMEM) {
		error_set(m, "out of memory");
		return r;
	}
	error_set(m, "undecodable reply to %s: %s", what, why);
	return -EPROTO;
}

int
mbox_clients(mbox *m, mbox_client_info **list, size_t *n)
{
	char why[128] = "";
	ProtoFields f;
	Frame *fr;
	uint32_t id;
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
	id = core_begin(m, MBOX_OP_CLIENTS);
	r = core_call(m, id, MBOX_OP_CLIENTS, &fr, &f, 0);
	if (r < 0)
		return r;
	r = clients_decode(f.body, f.len, f.count[MBOX_TAG_CLIENT], list, n,
			   why);
	if (r == 0 && *n &&
	    (proto_u64(&f, MBOX_TAG_FLAGS, 0) & MBOX_REPLY_TRUNCATED))
		(*list)[*n - 1].flags |= MBOX_CLIENT_CUT_FLAG;
	core_frame_free(fr);
	return r < 0 ? decode_error(m, r, "CLIENTS", why) : 0;
}

/* -------------------------------------------------------------------- */
/* STAT */

void
mbox_stat_free(mbox_mailbox_stat *st)
{
	if (!st)
		return;
	free(st->info.name);
	for (size_t i = 0; i < st->n_settings; i++)
		free(st->settings[i]);
	free(st->settings);
	counters_free(st->counters, st->n_counters);
	mbox_clients_free(st->consumers, st->n_consumers);
	free(st);
}

/* The INFO of a STAT reply: LIST's summary, state and settings. */
static int
stat_info_decode(const ProtoSlice *v, mbox_mailbox_stat *st, char why[128])
{
	mbox_mailbox_info *in = &st->info;
	ProtoFields f;
	ProtoReader rd;
	ProtoField fl;
	size_t count;
	int r;

	r = msg_parse_fields(&f, v->ptr, v->len, ANY_TAG,
			     PROTO_BIT(MBOX_TAG_MAILBOX), why);
	if (r < 0)
		return r;
	r = info_fields_decode(&f, in);
	if (r < 0)
		return r;
	st->flags = (unsigned)proto_u64(&f, MBOX_TAG_FLAGS, 0);
	st->waiting = proto_u64(&f, MBOX_TAG_WAITING, 0);
	st->created_ns = (int64_t)proto_u64(&f, MBOX_TAG_TIME_NS, 0);
	count = f.count[MBOX_TAG_SETTING];
	if (!count)
		return 0;
	st->settings = calloc(count, sizeof(*st->settings));
	if (!st->settings)
		return -ENOMEM;
	proto_reader_init(&rd, v->ptr, v->len);
	while (st->n_settings < count && proto_reader_next(&rd, &fl) > 0) {
		if (fl.tag != MBOX_TAG_SETTING)
			continue;
		st->settings[st->n_settings] =
			strndup((const char *)fl.val, fl.len);
		if (!st->settings[st->n_settings])
			return -ENOMEM;
		st->n_settings++;
	}
	return 0;
}

int
mbox_stat(mbox *m, const char *mailbox, mbox_mailbox_stat **out)
{
	mbox_mailbox_stat *st;
	char why[128] = "";
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	if (out)
		*out = NULL;
	r = core_enter_mailbox(m, mailbox);
	if (r < 0)
		return r;
	if (!out) {
		error_set(m, "no place for the result given");
		return -EINVAL;
	}
	id = core_begin(m, MBOX_OP_STAT);
	proto_put_str(&m->tx, MBOX_TAG_MAILBOX, mailbox);
	r = core_call(m, id, MBOX_OP_STAT, &fr, &f, PROTO_BIT(MBOX_TAG_INFO));
	if (r < 0)
		return r;
	st = calloc(1, sizeof(*st));
	if (!st) {
		core_frame_free(fr);
		error_set(m, "out of memory");
		return -ENOMEM;
	}
	r = stat_info_decode(&f.first[MBOX_TAG_INFO], st, why);
	if (r == 0)
		r = counters_decode(f.body, f.len, f.count[MBOX_TAG_COUNTER],
				    &st->counters, &st->n_counters, why);
	if (r == 0)
		r = clients_decode(f.body, f.len, f.count[MBOX_TAG_CLIENT],
				   &st->consumers, &st->n_consumers, why);
	st->interval_ms = proto_u64(&f, MBOX_TAG_INTERVAL_MS, 0);
	st->truncated =
		(proto_u64(&f, MBOX_TAG_FLAGS, 0) & MBOX_REPLY_TRUNCATED) != 0;
	core_frame_free(fr);
	if (r < 0) {
		mbox_stat_free(st);
		return decode_error(m, r, "STAT", why);
	}
	*out = st;
	return 0;
}

/* -------------------------------------------------------------------- */
/* STATS */

void
mbox_stats_free(mbox_broker_stats *st)
{
	if (!st)
		return;
	free(st->server);
	counters_free(st->counters, st->n_counters);
	free(st);
}

int
mbox_stats(mbox *m, mbox_broker_stats **out)
{
	mbox_broker_stats *st;
	char why[128] = "";
	ProtoFields f;
	Frame *fr;
	uint32_t id;
	int r;

	if (out)
		*out = NULL;
	r = core_enter(m);
	if (r < 0)
		return r;
	if (!out) {
		error_set(m, "no place for the result given");
		return -EINVAL;
	}
	id = core_begin(m, MBOX_OP_STATS);
	r = core_call(m, id, MBOX_OP_STATS, &fr, &f, 0);
	if (r < 0)
		return r;
	st = calloc(1, sizeof(*st));
	if (!st) {
		core_frame_free(fr);
		error_set(m, "out of memory");
		return -ENOMEM;
	}
	st->server = slice_dup(f.first[MBOX_TAG_SERVER]);
	st->started_ns = (int64_t)proto_u64(&f, MBOX_TAG_TIME_NS, 0);
	st->connections = proto_u64(&f, MBOX_TAG_CONNECTIONS, 0);
	st->mailboxes = proto_u64(&f, MBOX_TAG_MAILBOXES, 0);
	st->ready = proto_u64(&f, MBOX_TAG_READY, 0);
	st->leased = proto_u64(&f, MBOX_TAG_LEASED, 0);
	st->delayed = proto_u64(&f, MBOX_TAG_DELAYED, 0);
	st->dead = proto_u64(&f, MBOX_TAG_DEAD, 0);
	st->bytes = proto_u64(&f, MBOX_TAG_BYTES, 0);
	st->store_bytes = proto_u64(&f, MBOX_TAG_STORE_BYTES, 0);
	st->interval_ms = proto_u64(&f, MBOX_TAG_INTERVAL_MS, 0);
	st->reserve_bytes = proto_u64(&f, MBOX_TAG_RESERVE_BYTES, 0);
	st->disk_full = proto_u64(&f, MBOX_TAG_DISK_FULL, 0) != 0;
	st->disk_known = proto_has(&f, MBOX_TAG_DISK_FULL);
	r = st->server ? 0 : -ENOMEM;
	if (r == 0)
		r = counters_decode(f.body, f.len, f.count[MBOX_TAG_COUNTER],
				    &st->counters, &st->n_counters, why);
	core_frame_free(fr);
	if (r < 0) {
		mbox_stats_free(st);
		return decode_error(m, r, "STATS", why);
	}
	*out = st;
	return 0;
}
