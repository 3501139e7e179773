/* stats.c - being written */
#include "config.h"

#include <stdio.h>

#include "client/mboxctl/stats.h"

int
cmd_stat(Ctl *c, int argc, char **argv)
{
	(void)c, (void)argc, (void)argv;
	fputs("mboxctl: not written yet\n", stderr);
	return CTL_EXIT_ERROR;
}

int
cmd_clients(Ctl *c, int argc, char **argv)
{
	(void)c, (void)argc, (void)argv;
	fputs("mboxctl: not written yet\n", stderr);
	return CTL_EXIT_ERROR;
}

int
cmd_stats(Ctl *c, int argc, char **argv)
{
	(void)c, (void)argc, (void)argv;
	fputs("mboxctl: not written yet\n", stderr);
	return CTL_EXIT_ERROR;
}

int
cmd_watch(Ctl *c, int argc, char **argv)
{
	(void)c, (void)argc, (void)argv;
	fputs("mboxctl: not written yet\n", stderr);
	return CTL_EXIT_ERROR;
}
