/* placeholder: being written (mailbox administration and fan-out) */
#include "config.h"

#include "broker/request.h"

#define STUB(fn)                                                            \
	void fn(Request *q)                                                 \
	{                                                                   \
		reply_error(q, MBOX_S_UNKNOWN_OP, NULL, "not written yet"); \
	}
STUB(op_set)
STUB(op_delete)
STUB(op_purge)
STUB(op_kick)
STUB(op_pause_resume)
STUB(op_bind_unbind)
STUB(op_publish)
