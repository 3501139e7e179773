/*
 * transfer.h - mboxctl verbs (being written).
 */
#ifndef MBOXCTL_TRANSFER_H
#define MBOXCTL_TRANSFER_H

#include "client/mboxctl/util.h"

int cmd_export(Ctl *c, int argc, char **argv);
int cmd_import(Ctl *c, int argc, char **argv);

#endif
