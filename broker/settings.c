/*
 * settings.c - parse and apply mailbox settings ("key=value").
 *
 * The broker parses them, not the clients, so that every client (and the
 * protocol document) has one set of names, units and limits.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/settings.h"
#include "client/proto.h"

static int
settings_uint(const char *s, int base, uint64_t *out)
{
	char *end;
	unsigned long long v;

	/* strtoull would also skip leading white space and take a sign. */
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

int
settings_duration_ms(const char *s, uint64_t *ms)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = {{"ms", 1},
		     {"s", 1000},
		     {"m", 60000},
		     {"h", 3600000},
		     {"", 1000}};
	char num[32];
	size_t n = strspn(s, "0123456789");
	uint64_t v;

	if (n == 0 || n >= sizeof(num))
		return -EINVAL;
	memcpy(num, s, n);
	num[n] = '\0';
	if (settings_uint(num, 10, &v) < 0)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(s + n, units[i].unit) == 0) {
			/* Cap at ten years: beyond that it is a typo. */
			if (v > UINT64_C(315360000000) / units[i].ms)
				return -EINVAL;
			*ms = v * units[i].ms;
			return 0;
		}
	return -EINVAL;
}

int
settings_apply(StoreMailbox *mb, const AclPeer *peer, const char *kv,
	       size_t len, bool creating, char *why, size_t whylen)
{
	char buf[256], *key, *val;
	uint64_t v;

	if (len >= sizeof(buf) || !memchr(kv, '=', len)) {
		snprintf(why, whylen,
			 "a setting must be key=value (at most 255 bytes)");
		return -EINVAL;
	}
	memcpy(buf, kv, len);
	buf[len] = '\0';
	key = buf;
	val = strchr(buf, '=');
	*val++ = '\0';

	if (strcmp(key, "lease") == 0) {
		if (settings_duration_ms(val, &v) < 0 || v == 0 ||
		    v > SETTINGS_YEAR_MS)
			goto bad_duration;
		mb->lease_ms = v;
	} else if (strcmp(key, "ttl") == 0) {
		/* 0 (no unit needed) switches the default ttl off. */
		if (strcmp(val, "0") == 0)
			v = 0;
		else if (settings_duration_ms(val, &v) < 0 || v == 0 ||
			 v > SETTINGS_YEAR_MS)
			goto bad_duration;
		mb->ttl_ms = v;
	} else if (strcmp(key, "max_deliveries") == 0) {
		if (settings_uint(val, 10, &v) < 0 || v > UINT32_MAX) {
			snprintf(why, whylen,
				 "max_deliveries must be an integer from 0 "
				 "(unlimited) to 4294967295, not '%s'",
				 val);
			return -EINVAL;
		}
		mb->max_deliveries = v;
	} else if (strcmp(key, "max_msgs") == 0 ||
		   strcmp(key, "max_bytes") == 0) {
		if (settings_uint(val, 10, &v) < 0) {
			snprintf(why, whylen,
				 "%s must be a non-negative integer, not '%s'",
				 key, val);
			return -EINVAL;
		}
		if (key[4] == 'm')
			mb->max_msgs = v;
		else
			mb->max_bytes = v;
	} else if (strcmp(key, "mode") == 0) {
		if (settings_uint(val, 8, &v) < 0 || v > 0777) {
			snprintf(why, whylen,
				 "mode must be octal 0 to 0777, not '%s'", val);
			return -EINVAL;
		}
		mb->mode = (uint32_t)v;
	} else if (strcmp(key, "group") == 0) {
		/* (gid_t)-1 is no group: chown(2) reads it as "unchanged". */
		if (settings_uint(val, 10, &v) < 0 || v >= UINT32_MAX) {
			snprintf(why, whylen,
				 "group must be a numeric gid from 0 to "
				 "4294967294, not '%s'",
				 val);
			return -EINVAL;
		}
		/* The group it has is accepted, as CHOWN accepts it, so that
		 * what STAT shows can be given back to SET whole even after
		 * an admin gave the mailbox to a group its owner is not in. */
		if ((creating || (uint32_t)v != mb->gid) &&
		    !acl_in_group(peer, (gid_t)v) && !acl_is_admin(peer)) {
			snprintf(why, whylen,
				 "you may only give a mailbox to a group you "
				 "are in (gid %s)",
				 val);
			return -EPERM;
		}
		mb->gid = (uint32_t)v;
	} else if (strcmp(key, "temp") == 0) {
		bool temp = (mb->flags & STORE_MB_TEMP) != 0;

		if (strcmp(val, "0") != 0 && strcmp(val, "1") != 0) {
			snprintf(why, whylen, "temp must be 0 or 1, not '%s'",
				 val);
			return -EINVAL;
		}
		/* The value it has is accepted, so that what STAT shows
		 * can be given back to SET whole. */
		if (!creating && (val[0] == '1') != temp) {
			snprintf(why, whylen,
				 "temp can only be chosen when the mailbox is "
				 "created (this one has temp=%d)",
				 temp ? 1 : 0);
			return -EINVAL;
		}
		if (val[0] == '1')
			mb->flags |= STORE_MB_TEMP;
		else
			mb->flags &= ~STORE_MB_TEMP;
	} else {
		snprintf(why, whylen,
			 "unknown setting '%s' (known: lease, ttl, "
			 "max_deliveries, max_msgs, max_bytes, mode, group, "
			 "temp)",
			 key);
		return -EINVAL;
	}
	return 0;
bad_duration:
	snprintf(why, whylen,
		 "%s must be a duration like 30, 30s, 500ms, 5m or 1h%s, at "
		 "most a year (8760h), not '%s'",
		 key, strcmp(key, "lease") == 0 ? ", more than 0" : ", or 0",
		 val);
	return -EINVAL;
}

int
settings_apply_all(StoreMailbox *mb, const AclPeer *peer, const uint8_t *body,
		   size_t len, bool creating, char *why, size_t whylen)
{
	ProtoReader r;
	ProtoField f;
	int k, sr;

	proto_reader_init(&r, body, len);
	while ((k = proto_reader_next(&r, &f)) > 0) {
		if (f.tag != MBOX_TAG_SETTING)
			continue;
		sr = settings_apply(mb, peer, (const char *)f.val, f.len,
				    creating, why, whylen);
		if (sr < 0)
			return sr;
	}
	return 0;
}
