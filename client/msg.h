/*
 * msg.h - libmbox's message object (struct mbox_msg), private to the
 * library.
 *
 * A message is decoded from one MSG field of a RECV or PEEK reply, or of
 * a DELIVER push, into a single allocation that owns copies of everything:
 * the payload and every string. It never points into the frame it came
 * from, so the frame can be freed as soon as decoding is done.
 */
#ifndef MBOX_CLIENT_MSG_H
#define MBOX_CLIENT_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "mbox.h"

/*
 * mbox__msg_decode - decode the value of one MSG field (p, len: a field
 * sequence) into a new message. dflt_mailbox (may be NULL) is used when
 * the MSG carries no MAILBOX field. Requires an ID field; every other
 * field is optional and defaults to 0 / "".
 *
 * Returns 0 and *out (free with mbox_msg_free), -ENOMEM, or -EBADMSG
 * with a reason written into why (128 bytes). Hidden: the export regex
 * '^mbox_' of libmbox would otherwise publish it.
 */
__attribute__((visibility("hidden"))) int
mbox__msg_decode(const uint8_t *p, size_t len, const char *dflt_mailbox,
		 mbox_msg **out, char why[128]);

#endif
