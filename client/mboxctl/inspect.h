/*
 * inspect.h - mboxctl verbs: ls and peek, looking at mailboxes without changing
 * them.
 *
 * Each verb gets argv[0] = its name and the rest of the command line,
 * parses it with getopt_long (unknown options are usage errors), and
 * returns the process exit code (util.h, enum ctl_exit).
 */
#ifndef MBOXCTL_INSPECT_H
#define MBOXCTL_INSPECT_H

#include "client/mboxctl/util.h"

int cmd_ls(Ctl *c, int argc, char **argv);
int cmd_peek(Ctl *c, int argc, char **argv);

#endif
