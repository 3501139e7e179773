/*
 * recv.h - mboxctl verbs: recv and subscribe, taking messages out of a
 * mailbox.
 *
 * Each verb gets argv[0] = its name and the rest of the command line,
 * parses it with getopt_long (unknown options are usage errors), and
 * returns the process exit code (util.h, enum ctl_exit).
 */
#ifndef MBOXCTL_RECV_H
#define MBOXCTL_RECV_H

#include "client/mboxctl/util.h"

int cmd_recv(Ctl *c, int argc, char **argv);
int cmd_subscribe(Ctl *c, int argc, char **argv);

#endif
