/*
 * check.c - argument checks shared by several libmbox calls. They run
 * before anything is sent: the broker would refuse the same arguments,
 * but a check here costs no round trip and can say exactly what is wrong.
 * Each returns 0, or -EINVAL with an explanation in m->error.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "client/libmbox-int.h"
#include "client/proto.h"
#include "client/topic.h"

int
check_name(mbox *m, const char *name)
{
	size_t len;

	if (!name) {
		error_set(m, "no mailbox name given");
		return -EINVAL;
	}
	len = strlen(name);
	if (!proto_name_valid((const uint8_t *)name, len)) {
		error_set(m,
			  "invalid mailbox name \"%.64s\"%s: it must be "
			  "1-%u bytes of A-Z a-z 0-9 . _ -",
			  name, len > 64 ? "..." : "", MBOX_NAME_MAX);
		return -EINVAL;
	}
	return 0;
}

int
mbox_name_valid(const char *name)
{
	return name && proto_name_valid((const uint8_t *)name, strlen(name));
}

bool
check_utf8(const char *s)
{
	return proto_utf8_valid((const uint8_t *)s, strlen(s));
}

int
check_flags(mbox *m, const char *what, unsigned flags, unsigned known)
{
	if (flags & ~known) {
		error_set(m, "unknown %s flags 0x%x", what, flags & ~known);
		return -EINVAL;
	}
	return 0;
}

int
check_topic(mbox *m, const char *topic, bool pattern)
{
	size_t len = topic ? strlen(topic) : 0;

	if (topic && (pattern ? topic_pattern_valid(topic, len)
			      : topic_valid(topic, len)))
		return 0;
	error_set(m,
		  "invalid topic%s \"%.64s\"%s: words of A-Z a-z 0-9 _ - "
		  "separated by dots, 1-%u bytes%s",
		  pattern ? " pattern" : "", topic ? topic : "",
		  len > 64 ? "..." : "", MBOX_TOPIC_MAX,
		  pattern ? "; a word may be *, the last one >" : "");
	return -EINVAL;
}
