/*
 * admin.h - mboxctl verbs: ping, create and set: talking to the broker,
 * making mailboxes and changing their settings.
 *
 * Each verb gets argv[0] = its name and the rest of the command line,
 * parses it with getopt_long (unknown options are usage errors), and
 * returns the process exit code (util.h, enum ctl_exit).
 */
#ifndef MBOXCTL_ADMIN_H
#define MBOXCTL_ADMIN_H

#include "client/mboxctl/util.h"

int cmd_ping(Ctl *c, int argc, char **argv);
int cmd_create(Ctl *c, int argc, char **argv);
int cmd_set(Ctl *c, int argc, char **argv);

#endif
