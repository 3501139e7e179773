/* work.c - being written */
#include "config.h"

#include <stdio.h>

#include "client/mboxctl/work.h"

int
cmd_work(Ctl *c, int argc, char **argv)
{
	(void)c, (void)argc, (void)argv;
	fputs("mboxctl: not written yet\n", stderr);
	return CTL_EXIT_ERROR;
}
