/*
 * msg.c - the message object handed out by mbox_recv, mbox_peek, and
 * for pushes by mbox_next and mbox_dispatch.
 *
 * One malloc per message: the struct, then the header pointer array, then
 * the payload (followed by a NUL that is not part of it), then every string
 * NUL-terminated. So mbox_msg_free is a single free(), a message owns all
 * its data, and mbox_msg_data returns a valid pointer even for an empty
 * payload. Strings come from `str` fields, which the codec has checked to
 * be UTF-8 without NUL, so NUL-terminating them loses nothing.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/msg.h"
#include "client/proto.h"

struct mbox_msg {
	uint64_t id;
	int64_t time_ns;      /* enqueue time, ns since the epoch */
	uint64_t deadline_ns; /* lease deadline (RECV, DELIVER), 0 if none */
	uint64_t expires_ns;  /* ttl runs out, ns since the epoch; 0 = never */
	uint32_t deliveries;  /* this delivery included */
	unsigned priority;    /* 0..9 */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	const char *mailbox;	 /* points into this allocation, as all below */
	const char *comm;	 /* "" when the broker sent none */
	const char *dead_reason; /* NULL unless the message is dead */
	const uint8_t *data;	 /* len bytes, then a NUL */
	size_t len;
	size_t n_headers;
	const char **headers; /* key, value, key, value... (2 * n_headers) */
	bool ended; /* not a message: the subscription to mailbox ended */
};

/* Copy a slice as a NUL-terminated string at *pos; advance *pos. */
static const char *
msg_put_str(char **pos, const void *p, size_t len)
{
	char *s = *pos;

	if (len)
		memcpy(s, p, len);
	s[len] = '\0';
	*pos += len + 1;
	return s;
}

int
msg_parse_fields(ProtoFields *f, const uint8_t *p, size_t len, uint64_t allowed,
		 uint64_t required, char why[128])
{
	static const uint8_t empty[1];
	const char *reason = NULL;
	int r;

	/* Replies and pushes: a later broker may add fields. */
	r = proto_fields_parse_flags(f, p ? p : empty, len, why, &reason,
				     PROTO_PARSE_SKIP_UNKNOWN);
	if (r < 0) {
		/* The codec may name a static reason instead of filling why. */
		if (reason && reason != why)
			snprintf(why, 128, "%s", reason);
		return r;
	}
	return proto_fields_check(f, allowed, required, why);
}

/*
 * Parse the HEADER at value (vp, vn) into key and value slices. The codec
 * only checked that a nested field is well framed; the KEY/VALUE types are
 * checked here by parsing it as a field sequence of its own.
 */
static int
msg_header_parse(const uint8_t *vp, size_t vn, ProtoSlice *key,
		 ProtoSlice *value, char why[128])
{
	const uint64_t kv = PROTO_BIT(MBOX_TAG_KEY) | PROTO_BIT(MBOX_TAG_VALUE);
	ProtoFields hf;
	int r;

	r = msg_parse_fields(&hf, vp, vn, kv, kv, why);
	if (r < 0)
		return r;
	*key = hf.first[MBOX_TAG_KEY];
	*value = hf.first[MBOX_TAG_VALUE];
	return 0;
}

int
msg_decode(const uint8_t *p, size_t len, const char *dflt_mailbox,
	   mbox_msg **out, char why[128])
{
	static const uint8_t empty[1];
	ProtoFields f;
	ProtoReader rd;
	ProtoField fl;
	ProtoSlice mailbox, comm, reason, data;
	ProtoSlice key = {0}, value = {0}; /* set by msg_header_parse */
	size_t n_headers, size, i;
	mbox_msg *msg;
	char *pos;
	int r;

	*out = NULL;
	r = msg_parse_fields(&f, p, len, ~UINT64_C(0), PROTO_BIT(MBOX_TAG_ID),
			     why);
	if (r < 0)
		return r;

	if (proto_has(&f, MBOX_TAG_MAILBOX)) {
		mailbox = f.first[MBOX_TAG_MAILBOX];
	} else {
		mailbox.ptr =
			(const uint8_t *)(dflt_mailbox ? dflt_mailbox : "");
		mailbox.len = strlen((const char *)mailbox.ptr);
	}
	comm = f.first[MBOX_TAG_SENDER_COMM];
	reason = f.first[MBOX_TAG_DEAD_REASON];
	data = f.first[MBOX_TAG_DATA];
	if (!proto_has(&f, MBOX_TAG_SENDER_COMM))
		comm.len = 0;
	if (!proto_has(&f, MBOX_TAG_DATA))
		data.len = 0;

	/* First pass: validate the headers and add up their sizes. */
	size = sizeof(*msg) + data.len + 1 + mailbox.len + 1 + comm.len + 1;
	if (proto_has(&f, MBOX_TAG_DEAD_REASON))
		size += reason.len + 1;
	n_headers = 0;
	proto_reader_init(&rd, p ? p : empty, len);
	while ((r = proto_reader_next(&rd, &fl)) > 0) {
		if (fl.tag != MBOX_TAG_HEADER)
			continue;
		r = msg_header_parse(fl.val, fl.len, &key, &value, why);
		if (r < 0)
			return r;
		size += key.len + 1 + value.len + 1;
		n_headers++;
	}
	if (r < 0) {
		snprintf(why, 128, "MSG is truncated");
		return r;
	}
	size += 2 * n_headers * sizeof(char *);

	msg = calloc(1, size);
	if (!msg)
		return -ENOMEM;
	msg->id = proto_u64(&f, MBOX_TAG_ID, 0);
	msg->time_ns = (int64_t)proto_u64(&f, MBOX_TAG_TIME_NS, 0);
	msg->deadline_ns = proto_u64(&f, MBOX_TAG_DEADLINE_NS, 0);
	msg->expires_ns = proto_u64(&f, MBOX_TAG_EXPIRES_NS, 0);
	msg->deliveries = (uint32_t)proto_u64(&f, MBOX_TAG_DELIVERIES, 0);
	msg->priority = (unsigned)proto_u64(&f, MBOX_TAG_PRIORITY, 0);
	msg->pid = (pid_t)proto_u64(&f, MBOX_TAG_SENDER_PID, 0);
	msg->uid = (uid_t)proto_u64(&f, MBOX_TAG_SENDER_UID, 0);
	msg->gid = (gid_t)proto_u64(&f, MBOX_TAG_SENDER_GID, 0);
	msg->n_headers = n_headers;
	/* The pointer array sits right after the struct: sizeof(*msg) is a
	 * multiple of the struct's alignment, which covers a pointer's. */
	msg->headers = (const char **)(void *)(msg + 1);
	pos = (char *)(msg->headers + 2 * n_headers);

	msg->len = data.len;
	msg->data = (const uint8_t *)msg_put_str(&pos, data.ptr, data.len);
	msg->mailbox = msg_put_str(&pos, mailbox.ptr, mailbox.len);
	msg->comm = msg_put_str(&pos, comm.ptr, comm.len);
	if (proto_has(&f, MBOX_TAG_DEAD_REASON))
		msg->dead_reason = msg_put_str(&pos, reason.ptr, reason.len);

	/* Second pass: copy the headers, in wire order. */
	i = 0;
	proto_reader_init(&rd, p ? p : empty, len);
	while (proto_reader_next(&rd, &fl) > 0 && i < n_headers) {
		if (fl.tag != MBOX_TAG_HEADER)
			continue;
		/* Cannot fail: the same bytes parsed in the first pass. */
		(void)msg_header_parse(fl.val, fl.len, &key, &value, why);
		msg->headers[2 * i] = msg_put_str(&pos, key.ptr, key.len);
		msg->headers[2 * i + 1] =
			msg_put_str(&pos, value.ptr, value.len);
		i++;
	}
	*out = msg;
	return 0;
}

int
msg_new_end(ProtoSlice mailbox, ProtoSlice why, mbox_msg **out)
{
	mbox_msg *msg;
	char *pos;

	msg = calloc(1, sizeof(*msg) + mailbox.len + 1 + why.len + 1);
	if (!msg)
		return -ENOMEM;
	pos = (char *)(msg + 1);
	msg->ended = true;
	msg->mailbox = msg_put_str(&pos, mailbox.ptr, mailbox.len);
	msg->len = why.len;
	msg->data = (const uint8_t *)msg_put_str(&pos, why.ptr, why.len);
	msg->comm = "";
	*out = msg;
	return 0;
}

bool
msg_is_end(const mbox_msg *msg)
{
	return msg->ended;
}

uint64_t
mbox_msg_id(const mbox_msg *msg)
{
	return msg->id;
}

const char *
mbox_msg_mailbox(const mbox_msg *msg)
{
	return msg->mailbox;
}

const void *
mbox_msg_data(const mbox_msg *msg, size_t *len)
{
	if (len)
		*len = msg->len;
	return msg->data;
}

unsigned
mbox_msg_priority(const mbox_msg *msg)
{
	return msg->priority;
}

uint32_t
mbox_msg_deliveries(const mbox_msg *msg)
{
	return msg->deliveries;
}

int64_t
mbox_msg_time_ns(const mbox_msg *msg)
{
	return msg->time_ns;
}

pid_t
mbox_msg_sender_pid(const mbox_msg *msg)
{
	return msg->pid;
}

uid_t
mbox_msg_sender_uid(const mbox_msg *msg)
{
	return msg->uid;
}

gid_t
mbox_msg_sender_gid(const mbox_msg *msg)
{
	return msg->gid;
}

const char *
mbox_msg_sender_name(const mbox_msg *msg)
{
	return msg->comm;
}

const char *
mbox_msg_header(const mbox_msg *msg, const char *key)
{
	size_t i;

	if (!key)
		return NULL;
	for (i = 0; i < msg->n_headers; i++)
		if (strcmp(msg->headers[2 * i], key) == 0)
			return msg->headers[2 * i + 1];
	return NULL;
}

size_t
mbox_msg_header_count(const mbox_msg *msg)
{
	return msg->n_headers;
}

int
mbox_msg_header_at(const mbox_msg *msg, size_t i, const char **key,
		   const char **value)
{
	if (i >= msg->n_headers)
		return -ERANGE;
	if (key)
		*key = msg->headers[2 * i];
	if (value)
		*value = msg->headers[2 * i + 1];
	return 0;
}

int64_t
mbox_msg_expires_ns(const mbox_msg *msg)
{
	return (int64_t)msg->expires_ns;
}

int64_t
mbox_msg_deadline_ns(const mbox_msg *msg)
{
	return (int64_t)msg->deadline_ns;
}

const char *
mbox_msg_dead_reason(const mbox_msg *msg)
{
	return msg->dead_reason;
}

void
mbox_msg_free(mbox_msg *msg)
{
	free(msg);
}
