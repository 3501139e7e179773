/*
 * manage.h - mboxctl verbs: kick, purge, pause, resume, rm, bind,
 * unbind, chmod and chown, acting on a mailbox as a whole.
 *
 * Each verb gets argv[0] = its name and the rest of the command line,
 * parses it with getopt_long (unknown options are usage errors), and
 * returns the process exit code (util.h, enum ctl_exit).
 */
#ifndef MBOXCTL_MANAGE_H
#define MBOXCTL_MANAGE_H

#include "client/mboxctl/util.h"

int cmd_kick(Ctl *c, int argc, char **argv);
int cmd_purge(Ctl *c, int argc, char **argv);
int cmd_pause(Ctl *c, int argc, char **argv);
int cmd_resume(Ctl *c, int argc, char **argv);
int cmd_rm(Ctl *c, int argc, char **argv);
int cmd_bind(Ctl *c, int argc, char **argv);
int cmd_unbind(Ctl *c, int argc, char **argv);
int cmd_chmod(Ctl *c, int argc, char **argv);
int cmd_chown(Ctl *c, int argc, char **argv);

#endif
