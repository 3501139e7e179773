/*
 * acl.c - mailbox permission checks, the file-mode way.
 *
 * Like a file: the owner class applies if uid matches (even when its bits
 * deny and group's would allow), else the group class if the peer is in
 * the group (primary or supplementary), else other.
 */
#include "config.h"

#include "broker/acl.h"

bool
acl_is_admin(const AclPeer *p)
{
	return p->uid == 0 || p->uid == p->broker_uid;
}

bool
acl_in_group(const AclPeer *p, gid_t gid)
{
	if (p->gid == gid)
		return true;
	for (size_t i = 0; i < p->n_groups; i++)
		if (p->groups[i] == gid)
			return true;
	return false;
}

bool
acl_may(const AclPeer *p, const StoreMailbox *mb, unsigned want)
{
	unsigned bits;

	if (acl_is_admin(p))
		return true;
	if (p->uid == mb->owner_uid)
		bits = (mb->mode >> 6) & 07;
	else if (acl_in_group(p, mb->gid))
		bits = (mb->mode >> 3) & 07;
	else
		bits = mb->mode & 07;
	return (bits & want) == want;
}

bool
acl_may_own(const AclPeer *p, const StoreMailbox *mb)
{
	return acl_is_admin(p) || p->uid == mb->owner_uid;
}
