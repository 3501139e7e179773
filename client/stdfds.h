/*
 * stdfds.h - make sure descriptors 0, 1 and 2 are open, for the mains of
 * mboxd and mboxctl.
 *
 * Started with stdin, stdout or stderr closed, a program's first open
 * takes that number: mboxctl's socket would become its input or output
 * (post reading its own connection, recv writing messages into it), and
 * mboxd's --daemon, which dup2s onto 0-2, would replace the event loop's
 * own descriptor. /dev/null fills the gaps before anything else opens.
 */
#ifndef MBOX_CLIENT_STDFDS_H
#define MBOX_CLIENT_STDFDS_H

#include <fcntl.h>
#include <unistd.h>

/* Returns which were closed: bit n for descriptor n. */
static inline unsigned
std_fds_open(void)
{
	unsigned closed = 0;
	int fd;

	while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2)
		closed |= 1u << fd;
	if (fd > 2)
		close(fd);
	return closed;
}

#endif
