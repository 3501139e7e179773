/* transfer.c - being written */
#include "config.h"

#include <stdio.h>

#include "client/mboxctl/transfer.h"

int
cmd_export(Ctl *c, int argc, char **argv)
{
	(void)c, (void)argc, (void)argv;
	fputs("mboxctl: not written yet\n", stderr);
	return CTL_EXIT_ERROR;
}

int
cmd_import(Ctl *c, int argc, char **argv)
{
	(void)c, (void)argc, (void)argv;
	fputs("mboxctl: not written yet\n", stderr);
	return CTL_EXIT_ERROR;
}
