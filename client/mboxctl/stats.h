/*
 * stats.h - mboxctl verbs (being written).
 */
#ifndef MBOXCTL_STATS_H
#define MBOXCTL_STATS_H

#include "client/mboxctl/util.h"

int cmd_stat(Ctl *c, int argc, char **argv);
int cmd_clients(Ctl *c, int argc, char **argv);
int cmd_stats(Ctl *c, int argc, char **argv);
int cmd_watch(Ctl *c, int argc, char **argv);

#endif
