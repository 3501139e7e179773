/*
 * main.c - mboxctl: the command-line client of mboxd.
 *
 * `mboxctl [GLOBAL OPTIONS] VERB [ARGS]`. Global options (-S) may come
 * before the verb; every verb also accepts them among its own options, so
 * `mboxctl -S x ls` and `mboxctl ls -S x` are the same. Each verb parses
 * its own arguments (one file per group of verbs), connects only after
 * its arguments are known to be good, and returns the exit code.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "client/mboxctl/admin.h"
#include "client/mboxctl/inspect.h"
#include "client/mboxctl/manage.h"
#include "client/mboxctl/post.h"
#include "client/mboxctl/recv.h"
#include "client/mboxctl/rpc.h"
#include "client/mboxctl/stats.h"
#include "client/mboxctl/transfer.h"
#include "client/mboxctl/util.h"
#include "client/mboxctl/work.h"
#include "client/stdfds.h"

typedef struct Verb {
	const char *name;
	int (*run)(Ctl *c, int argc, char **argv);
	const char *synopsis;
	const char *summary;
} Verb;

static const Verb verbs[] = {
	{"ping", cmd_ping, "ping", "check that the broker answers"},
	{"create", cmd_create, "create MAILBOX [OPTIONS]", "create a mailbox"},
	{"set", cmd_set, "set MAILBOX KEY=VALUE...",
	 "change a mailbox's settings"},
	{"rm", cmd_rm, "rm MAILBOX [--force]", "delete a mailbox"},
	{"post", cmd_post, "post MAILBOX [DATA] [OPTIONS]",
	 "post a message (DATA, else stdin)"},
	{"publish", cmd_publish, "publish TOPIC [DATA] [OPTIONS]",
	 "post to every mailbox bound to TOPIC"},
	{"recv", cmd_recv, "recv MAILBOX [-n N] [--wait SECS]",
	 "receive, print and acknowledge messages"},
	{"subscribe", cmd_subscribe, "subscribe MAILBOX [OPTIONS]",
	 "print and acknowledge pushed messages"},
	{"peek", cmd_peek, "peek MAILBOX [-n N] [--dead]",
	 "show messages without taking them"},
	{"work", cmd_work, "work MAILBOX [-j N] -- CMD [ARG...]",
	 "run CMD for each message (payload on stdin)"},
	{"call", cmd_call, "call MAILBOX [DATA] [--timeout SECS]",
	 "send a request and print the reply"},
	{"serve", cmd_serve, "serve MAILBOX [-j N] -- CMD [ARG...]",
	 "answer requests with CMD's output"},
	{"ls", cmd_ls, "ls [--json]", "list mailboxes and their counters"},
	{"stat", cmd_stat, "stat MAILBOX [--json]",
	 "a mailbox's counters and settings"},
	{"clients", cmd_clients, "clients [--json]",
	 "connections: pid, uid, name, leases"},
	{"stats", cmd_stats, "stats [--json]", "broker counters and rates"},
	{"watch", cmd_watch, "watch [--interval SECS]",
	 "a live view of the mailboxes"},
	{"export", cmd_export, "export MAILBOX [--dead] [-o FILE]",
	 "write messages as JSON lines"},
	{"import", cmd_import, "import MAILBOX [-i FILE] [--no-meta]",
	 "post JSON lines from export"},
	{"kick", cmd_kick, "kick MAILBOX [N]",
	 "put dead messages back in line"},
	{"purge", cmd_purge, "purge MAILBOX [--dead]",
	 "delete the ready (or dead) messages"},
	{"pause", cmd_pause, "pause MAILBOX", "stop deliveries"},
	{"resume", cmd_resume, "resume MAILBOX", "restart deliveries"},
	{"bind", cmd_bind, "bind MAILBOX PATTERN",
	 "get what is published to PATTERN"},
	{"unbind", cmd_unbind, "unbind MAILBOX PATTERN", "remove a binding"},
	{"chmod", cmd_chmod, "chmod MAILBOX MODE",
	 "set the permission bits (octal)"},
	{"chown", cmd_chown, "chown MAILBOX OWNER[:GROUP]",
	 "change the owner and/or group"},
};

#define N_VERBS (sizeof(verbs) / sizeof(verbs[0]))

static void
usage(FILE *f)
{
	char path[256];
	size_t i;

	if (mbox_default_socket_path(path, sizeof(path)) < 0)
		snprintf(path, sizeof(path), "(too long)");
	fputs("Usage: mboxctl [-S PATH] VERB [ARGS...]\n"
	      "\n"
	      "The command-line client of the mboxd message broker.\n"
	      "\n"
	      "Verbs:\n",
	      f);
	/* A synopsis too long for the column gets its summary on the next
	 * line, so the summaries stay aligned. */
	for (i = 0; i < N_VERBS; i++)
		if (strlen(verbs[i].synopsis) > 33)
			fprintf(f, "  %s\n  %-33s %s\n", verbs[i].synopsis, "",
				verbs[i].summary);
		else
			fprintf(f, "  %-33s %s\n", verbs[i].synopsis,
				verbs[i].summary);
	fprintf(f,
		"\n"
		"'mboxctl VERB --help' (or 'mboxctl help VERB') describes "
		"a verb.\n"
		"\n"
		"Options (before or after the verb):\n"
		"  -S, --socket PATH   the broker's socket; default "
		"$MBOX_SOCKET, else\n"
		"                      /run/mbox/mbox.sock for root, else\n"
		"                      $XDG_RUNTIME_DIR/mbox/mbox.sock, else\n"
		"                      /tmp/mbox-$UID/mbox.sock (here: %s)\n"
		"  -h, --help          show this help\n"
		"  -V, --version       show the version\n"
		"\n"
		"Exit codes:\n"
		"  0  success\n"
		"  1  error\n"
		"  2  usage error\n"
		"  3  nothing received before the wait ran out (recv, "
		"subscribe,\n"
		"     work --once --wait), or no reply in time (call)\n"
		"  4  permission denied\n"
		"  5  no such mailbox\n"
		"  6  broker unreachable (could not connect)\n",
		path);
}

static const Verb *
verb_find(const char *name)
{
	size_t i;

	for (i = 0; i < N_VERBS; i++)
		if (strcmp(verbs[i].name, name) == 0)
			return &verbs[i];
	return NULL;
}

static int
verb_unknown(const char *name)
{
	fprintf(stderr,
		"mboxctl: unknown verb '%s'\n"
		"Try 'mboxctl --help'.\n",
		name);
	return CTL_EXIT_USAGE;
}

/* A verb that succeeded but whose output did not all reach stdout
 * (a full disk, a closed pipe with SIGPIPE ignored) has failed: say so
 * rather than exit 0 with the output lost. */
static int
finish_stdout(Ctl *c, int r)
{
	bool failed = ferror(stdout);
	int err = fflush(stdout) != 0 ? errno : 0;

	if (r != CTL_EXIT_OK || (!failed && !err))
		return r;
	return ctl_error(c, "cannot write to standard output: %s",
			 err ? strerror(err) : "write error");
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"socket", required_argument, NULL, 'S'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{0},
	};
	Ctl c = {.verb = ""};
	const Verb *v;
	int opt, r;

	c.closed_std = std_fds_open();
	opterr = 0; /* we word the messages ourselves */
	/* '+': stop at the verb, whose options are its own business. */
	while ((opt = getopt_long(argc, argv, "+:S:hV", opts, NULL)) != -1) {
		switch (opt) {
		case 'S':
			c.socket = optarg;
			break;
		case 'h':
			usage(stdout);
			return finish_stdout(&c, CTL_EXIT_OK);
		case 'V':
			printf("mboxctl (%s) %s\n", PACKAGE_NAME,
			       PACKAGE_VERSION);
			return finish_stdout(&c, CTL_EXIT_OK);
		case ':':
			fprintf(stderr,
				"mboxctl: option '%s' needs an argument\n"
				"Try 'mboxctl --help'.\n",
				argv[optind - 1]);
			return CTL_EXIT_USAGE;
		default:
			if (optopt)
				fprintf(stderr,
					"mboxctl: unknown option '-%c'\n",
					optopt);
			else
				fprintf(stderr,
					"mboxctl: unknown option '%s'\n",
					argv[optind - 1]);
			fputs("Try 'mboxctl --help'.\n", stderr);
			return CTL_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return CTL_EXIT_USAGE;
	}
	argc -= optind;
	argv += optind;

	if (strcmp(argv[0], "help") == 0) {
		static char help_opt[] = "--help";
		char *hargv[3] = {NULL, help_opt, NULL};

		if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
		    strcmp(argv[1], "-h") == 0) {
			usage(stdout);
			return finish_stdout(&c, CTL_EXIT_OK);
		}
		v = verb_find(argv[1]);
		if (!v)
			return verb_unknown(argv[1]);
		hargv[0] = argv[1];
		c.verb = v->name;
		optind = 0;
		return finish_stdout(&c, v->run(&c, 2, hargv));
	}
	v = verb_find(argv[0]);
	if (!v)
		return verb_unknown(argv[0]);
	c.verb = v->name;
	/* 0, not 1: makes glibc's getopt start over on the new argv. */
	optind = 0;
	r = v->run(&c, argc, argv);
	ctl_close(&c);
	return finish_stdout(&c, r);
}
