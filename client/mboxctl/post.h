/*
 * post.h - mboxctl verbs: post and publish, putting messages into
 * mailboxes.
 *
 * Each verb gets argv[0] = its name and the rest of the command line,
 * parses it with getopt_long (unknown options are usage errors), and
 * returns the process exit code (util.h, enum ctl_exit).
 */
#ifndef MBOXCTL_POST_H
#define MBOXCTL_POST_H

#include "client/mboxctl/util.h"

int cmd_post(Ctl *c, int argc, char **argv);
int cmd_publish(Ctl *c, int argc, char **argv);

#endif
