/*
 * transfer.h - `mboxctl export` and `mboxctl import`: a mailbox's messages
 * to and from JSON Lines, losslessly (binary payloads included).
 */
#ifndef MBOXCTL_TRANSFER_H
#define MBOXCTL_TRANSFER_H

#include "client/mboxctl/util.h"

/* export MAILBOX [--dead] [-o FILE]: the exit code. */
int cmd_export(Ctl *c, int argc, char **argv);
/* import MAILBOX [-i FILE] [--no-meta]: the exit code. */
int cmd_import(Ctl *c, int argc, char **argv);

#endif
