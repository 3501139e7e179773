/*
 * rpc.h - mboxctl verbs (being written).
 */
#ifndef MBOXCTL_RPC_H
#define MBOXCTL_RPC_H

#include "client/mboxctl/util.h"

int cmd_call(Ctl *c, int argc, char **argv);
int cmd_serve(Ctl *c, int argc, char **argv);

#endif
