/* rpc.c - being written */
#include "config.h"

#include <stdio.h>

#include "client/mboxctl/rpc.h"

int
cmd_call(Ctl *c, int argc, char **argv)
{
	(void)c, (void)argc, (void)argv;
	fputs("mboxctl: not written yet\n", stderr);
	return CTL_EXIT_ERROR;
}

int
cmd_serve(Ctl *c, int argc, char **argv)
{
	(void)c, (void)argc, (void)argv;
	fputs("mboxctl: not written yet\n", stderr);
	return CTL_EXIT_ERROR;
}
