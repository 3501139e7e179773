/*
 * acl.h - who may do what to which mailbox (SPEC 5.2).
 *
 * A mailbox has an owner uid, a group gid and a mode whose r and w bits
 * for owner, group and other work like a file's. An admin (uid 0 or the
 * broker's own uid) may do anything.
 */
#ifndef MBOX_BROKER_ACL_H
#define MBOX_BROKER_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "store/store.h"

typedef struct AclPeer {
	uid_t uid;
	gid_t gid;
	const gid_t *groups; /* supplementary groups, from SO_PEERGROUPS */
	size_t n_groups;
	uid_t broker_uid;
} AclPeer;

enum acl_want {
	ACL_READ = 04,	/* recv, peek, ack */
	ACL_WRITE = 02, /* post, publish into */
};

bool acl_is_admin(const AclPeer *p);
/* Is gid p's primary group or one of its supplementary groups? */
bool acl_in_group(const AclPeer *p, gid_t gid);
/* May p do want (ACL_READ and/or ACL_WRITE) on mb? */
bool acl_may(const AclPeer *p, const StoreMailbox *mb, unsigned want);
/* Owner-only operations: chmod, chown, purge, delete, bind. Giving a
 * mailbox to another owner is the admin's alone (acl_is_admin). */
bool acl_may_own(const AclPeer *p, const StoreMailbox *mb);

#endif
