/*
 * msg.h - libmbox's message object (struct mbox_msg), private to the
 * library. Nothing here starts with mbox_: libmbox exports exactly the
 * symbols matching '^mbox_'.
 *
 * A message is decoded from one MSG field of a RECV or PEEK reply, or of
 * a DELIVER push, into a single allocation that owns copies of everything:
 * the payload and every string. It never points into the frame it came
 * from, so the frame can be freed as soon as decoding is done.
 */
#ifndef MBOX_CLIENT_MSG_H
#define MBOX_CLIENT_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mbox.h"
#include "client/proto.h"

/*
 * msg_parse_fields - parse the field sequence (p, len) of a nested field
 * (MSG, HEADER, INFO) or a reply body into *f, which points into p, and
 * check it with proto_fields_check(allowed, required). p may be NULL when
 * len is 0. Returns 0, or -EBADMSG with the reason in why (128 bytes).
 */
int msg_parse_fields(ProtoFields *f, const uint8_t *p, size_t len,
		     uint64_t allowed, uint64_t required, char why[128]);

/*
 * msg_decode - decode the value of one MSG field (p, len: a field
 * sequence) into a new message. dflt_mailbox (may be NULL) is used when
 * the MSG carries no MAILBOX field. Requires an ID field; every other
 * field is optional and defaults to 0 / "".
 *
 * Returns 0 and *out (free with mbox_msg_free), -ENOMEM, or -EBADMSG
 * with a reason written into why (128 bytes).
 */
int msg_decode(const uint8_t *p, size_t len, const char *dflt_mailbox,
	       mbox_msg **out, char why[128]);

/*
 * msg_new_end - a marker for the push queue, in its place among the
 * messages: the broker ended the subscription to mailbox (an ENDED push),
 * why says why. Returns 0 and *out (free with mbox_msg_free) or -ENOMEM.
 */
int msg_new_end(ProtoSlice mailbox, ProtoSlice why, mbox_msg **out);
/* Is msg such a marker rather than a message? */
bool msg_is_end(const mbox_msg *msg);

#endif
