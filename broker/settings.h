/*
 * settings.h - mailbox settings given as "key=value" (CREATE, SET).
 */
#ifndef MBOX_BROKER_SETTINGS_H
#define MBOX_BROKER_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/acl.h"
#include "store/store.h"

/* The longest lease or ttl a mailbox may have, as LEASE_MS and TTL_MS. */
#define SETTINGS_YEAR_MS UINT64_C(31536000000)

/*
 * settings_apply - parse one "key=value" of len bytes and set it in mb.
 * creating: whether this is a CREATE (temp may only change then). Returns
 * 0, -EINVAL (a bad key or value) or -EPERM (a group peer is not in),
 * with the reason in why.
 */
int settings_apply(StoreMailbox *mb, const AclPeer *peer, const char *kv,
		   size_t len, bool creating, char *why, size_t whylen);

/*
 * settings_apply_all - settings_apply for each SETTING field of a request
 * body (already validated), in order, stopping at the first that fails.
 * Returns 0, or its -EINVAL or -EPERM with the reason in why.
 */
int settings_apply_all(StoreMailbox *mb, const AclPeer *peer,
		       const uint8_t *body, size_t len, bool creating,
		       char *why, size_t whylen);

/*
 * settings_duration_ms - "90", "90s", "1500ms", "2m", "1h" -> ms (a bare
 * number is seconds). Returns 0 or -EINVAL.
 */
int settings_duration_ms(const char *s, uint64_t *ms);

#endif
