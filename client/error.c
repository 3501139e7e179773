/*
 * error.c - how libmbox reports failures: the errno a broker status maps
 * to, the text of an errno (mbox_strerror), and the per-handle
 * explanation of the last failure (mbox_last_error).
 *
 * The mapping is part of the public contract (the table atop mbox.h):
 * change both together.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>

#include "client/libmbox-int.h"

void
error_set(mbox *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->error, sizeof(m->error), fmt, ap);
	va_end(ap);
}

int
error_from_status(uint32_t status)
{
	switch (status) {
	case MBOX_S_MALFORMED:
		return -EBADMSG;
	case MBOX_S_UNKNOWN_OP:
		return -EOPNOTSUPP;
	case MBOX_S_VERSION:
		return -EPROTONOSUPPORT;
	case MBOX_S_NOT_FOUND:
		return -ENOENT;
	case MBOX_S_DENIED:
		return -EACCES;
	case MBOX_S_EXISTS:
		return -EEXIST;
	case MBOX_S_LIMIT:
		return -EDQUOT;
	case MBOX_S_FULL:
		return -ENOSPC;
	case MBOX_S_TOO_LARGE:
		return -EMSGSIZE;
	case MBOX_S_INVALID:
		return -EINVAL;
	case MBOX_S_NOT_LEASED:
		return -ESTALE;
	case MBOX_S_STORE:
		return -EIO;
	case MBOX_S_SHUTDOWN:
		return -ESHUTDOWN;
	case MBOX_S_NOT_EMPTY:
		return -ENOTEMPTY;
	case MBOX_S_BUSY:
		return -EBUSY;
	default:
		return -EPROTO;
	}
}

const char *
mbox_strerror(int err)
{
	/* -INT_MIN does not exist: it is no errno either. */
	switch (err < 0 && err != INT_MIN ? -err : err) {
	case 0:
		return "success";
	case ENOENT:
		return "no such mailbox or broker socket";
	case EACCES:
	case EPERM:
		return "permission denied";
	case EEXIST:
		return "mailbox exists";
	case EDQUOT:
		return "a configured limit was hit";
	case ENOSPC:
		return "mailbox full";
	case EMSGSIZE:
		return "message too large";
	case EINVAL:
		return "invalid argument";
	case ESTALE:
		return "message not leased by this connection";
	case EIO:
		return "the broker's store failed";
	case ESHUTDOWN:
		return "broker stopping";
	case ENOTEMPTY:
		return "mailbox not empty";
	case EBUSY:
		return "busy: too many requests in flight, or an exclusive "
		       "subscription conflicts";
	case EBADMSG:
		return "the broker found our request malformed";
	case EOPNOTSUPP:
		return "operation not supported by the broker";
	case EPROTONOSUPPORT:
		return "no common protocol version";
	case ECONNREFUSED:
		return "connection refused (no broker listening)";
	case ECONNRESET:
		return "connection to the broker lost";
	case EPROTO:
		return "protocol error (unexpected reply from the broker)";
	case ETIMEDOUT:
		return "timed out";
	case ENOMEM:
		return "out of memory";
	case ENAMETOOLONG:
		return "socket path too long";
	case ENOTSOCK:
		return "not a socket";
	case EPROTOTYPE:
		return "socket is not a SOCK_SEQPACKET socket";
	case EINTR:
		return "interrupted";
	case EAGAIN:
		return "resource temporarily unavailable";
	case EMFILE:
	case ENFILE:
		return "too many open files";
	case ERANGE:
		return "out of range";
	default:
		return "unknown error";
	}
}

const char *
mbox_last_error(const mbox *m)
{
	return m ? m->error : "";
}
