/*
 * manage.c - `mboxctl kick`, `purge`, `pause`, `resume`, `rm`, `bind`,
 * `unbind`, `chmod` and `chown`: acting on a mailbox as a whole.
 *
 * These verbs share one shape: MAILBOX, maybe one more word, a flag or
 * two, one library call. manage_args parses that shape once; each verb
 * supplies its extra options through a small table. Verbs that count
 * (kick, purge) print "VERBED N message(s)" or, with --json, {"KEY":N}.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/mboxctl/manage.h"

enum {
	OPT_DEAD = 256,
};

/* What one run of a verb was given. */
typedef struct ManageArgs {
	const char *mailbox;
	const char *word; /* the optional or required second argument */
	bool json;
	bool dead;  /* purge --dead */
	bool force; /* rm --force */
} ManageArgs;

/* The shape of a verb's command line. */
typedef struct ManageVerb {
	const char *help;
	const char *usage; /* "MAILBOX [N]", for "which mailbox?" */
	const struct option *opts;
	const char *optstring;
	bool word;	    /* takes a second argument */
	bool word_required; /* ... and needs it */
} ManageVerb;

/*
 * manage_args - parse argv as v describes into a. Returns 0, or an exit
 * code: CTL_EXIT_OK after --help (*done set), CTL_EXIT_USAGE.
 */
static int
manage_args(Ctl *c, const ManageVerb *v, int argc, char **argv, ManageArgs *a,
	    bool *done)
{
	int opt, r;

	*done = false;
	while ((opt = getopt_long(argc, argv, v->optstring, v->opts, NULL)) !=
	       -1) {
		switch (opt) {
		case 'j':
			a->json = true;
			break;
		case OPT_DEAD:
			a->dead = true;
			break;
		case 'f':
			a->force = true;
			break;
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(v->help, stdout);
			*done = true;
			return CTL_EXIT_OK;
		default:
			return ctl_bad_option(c, opt, argv);
		}
	}
	r = ctl_take_mailbox(c, argc, argv, v->usage);
	if (r >= 0)
		return r;
	a->mailbox = c->target;
	if (v->word && optind < argc)
		a->word = argv[optind++];
	if (v->word_required && !a->word)
		return ctl_usage(c, "missing argument (mboxctl %s %s)", c->verb,
				 v->usage);
	if (optind < argc)
		return ctl_usage(c, "unexpected argument '%s'", argv[optind]);
	return 0;
}

/* Parse, then connect: true when the verb should go on, else false with
 * the exit code in *exit. */
static bool
manage_start(Ctl *c, const ManageVerb *v, int argc, char **argv, ManageArgs *a,
	     int *exit)
{
	bool done;

	*exit = manage_args(c, v, argc, argv, a, &done);
	if (*exit || done)
		return false;
	*exit = ctl_connect(c);
	return *exit == 0;
}

/* "kicked 3 messages" or {"kicked":3}. */
static int
manage_print_count(Ctl *c, bool json, const char *what, uint64_t n)
{
	if (json)
		printf("{\"%s\":%" PRIu64 "}\n", what, n);
	else
		printf("%s %" PRIu64 " message%s\n", what, n,
		       n == 1 ? "" : "s");
	if (fflush(stdout) != 0)
		return ctl_error(c, "cannot write to standard output: %s",
				 strerror(errno));
	return CTL_EXIT_OK;
}

static const char kick_help[] =
	"Usage: mboxctl kick MAILBOX [N] [OPTIONS]\n"
	"\n"
	"Put up to N dead messages of MAILBOX (default: all) back in line, "
	"oldest\n"
	"first, ready at once, their delivery counts reset. Prints how many\n"
	"moved: 'kicked N messages'. Owner or admin only.\n"
	"\n"
	"Options:\n"
	"  -j, --json            print {\"kicked\":N} "
	"instead\n" CTL_COMMON_HELP;

int
cmd_kick(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		CTL_COMMON_OPTIONS,
		{0},
	};
	static const ManageVerb v = {kick_help, "MAILBOX [N]", opts,
				     ":S:hj",	true,	       false};
	ManageArgs a = {0};
	uint64_t max = 0, n = 0;
	int r;

	if (!manage_start(c, &v, argc, argv, &a, &r))
		return r;
	if (a.word && (ctl_parse_u64(a.word, &max) < 0 || max == 0))
		return ctl_usage(c,
				 "bad count '%s' (1 or more; leave it out "
				 "for all)",
				 a.word);
	r = mbox_kick(c->m, a.mailbox, max, &n);
	if (r < 0)
		return ctl_fail(c, r, "nothing kicked");
	return manage_print_count(c, a.json, "kicked", n);
}

static const char purge_help[] =
	"Usage: mboxctl purge MAILBOX [OPTIONS]\n"
	"\n"
	"Delete every ready message of MAILBOX (delayed ones too), or with "
	"--dead\n"
	"every dead one. Leased messages are never purged. Prints how many "
	"went:\n"
	"'purged N messages'. Owner or admin only.\n"
	"\n"
	"Options:\n"
	"      --dead            purge the dead messages instead\n"
	"  -j, --json            print {\"purged\":N} "
	"instead\n" CTL_COMMON_HELP;

int
cmd_purge(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"dead", no_argument, NULL, OPT_DEAD},
		{"json", no_argument, NULL, 'j'},
		CTL_COMMON_OPTIONS,
		{0},
	};
	static const ManageVerb v = {purge_help, "MAILBOX", opts,
				     ":S:hj",	 false,	    false};
	ManageArgs a = {0};
	uint64_t n = 0;
	int r;

	if (!manage_start(c, &v, argc, argv, &a, &r))
		return r;
	r = mbox_purge(c->m, a.mailbox, a.dead ? MBOX_PURGE_DEAD_ONLY : 0, &n);
	if (r < 0)
		return ctl_fail(c, r, "nothing purged");
	return manage_print_count(c, a.json, "purged", n);
}

static const char pause_help[] =
	"Usage: mboxctl pause MAILBOX [OPTIONS]\n"
	"\n"
	"Stop deliveries from MAILBOX, to recv and to subscribers, until\n"
	"'mboxctl resume'. Posts are still stored and leases run on. It "
	"lasts\n"
	"across broker restarts. Owner or admin only.\n"
	"\n"
	"Options:\n" CTL_COMMON_HELP;

static const char resume_help[] =
	"Usage: mboxctl resume MAILBOX [OPTIONS]\n"
	"\n"
	"Start deliveries from MAILBOX again after 'mboxctl pause'. Owner or\n"
	"admin only.\n"
	"\n"
	"Options:\n" CTL_COMMON_HELP;

static const struct option plain_opts[] = {CTL_COMMON_OPTIONS, {0}};

int
cmd_pause(Ctl *c, int argc, char **argv)
{
	static const ManageVerb v = {pause_help, "MAILBOX", plain_opts,
				     ":S:h",	 false,	    false};
	ManageArgs a = {0};
	int r;

	if (!manage_start(c, &v, argc, argv, &a, &r))
		return r;
	r = mbox_pause(c->m, a.mailbox);
	return r < 0 ? ctl_fail(c, r, "not paused") : CTL_EXIT_OK;
}

int
cmd_resume(Ctl *c, int argc, char **argv)
{
	static const ManageVerb v = {resume_help, "MAILBOX", plain_opts,
				     ":S:h",	  false,     false};
	ManageArgs a = {0};
	int r;

	if (!manage_start(c, &v, argc, argv, &a, &r))
		return r;
	r = mbox_resume(c->m, a.mailbox);
	return r < 0 ? ctl_fail(c, r, "not resumed") : CTL_EXIT_OK;
}

static const char rm_help[] =
	"Usage: mboxctl rm MAILBOX [OPTIONS]\n"
	"\n"
	"Delete MAILBOX and its bindings. A mailbox that holds messages "
	"(ready,\n"
	"leased, delayed or dead) is refused unless --force: then they go "
	"too,\n"
	"leases of them are void and its subscribers are cut off. Owner or "
	"admin\n"
	"only.\n"
	"\n"
	"Options:\n"
	"  -f, --force           delete it with its messages\n" CTL_COMMON_HELP;

int
cmd_rm(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"force", no_argument, NULL, 'f'},
		CTL_COMMON_OPTIONS,
		{0},
	};
	static const ManageVerb v = {rm_help, "MAILBOX", opts,
				     ":S:hf", false,	 false};
	ManageArgs a = {0};
	int r;

	/* Deleting what is not there needs no "create it" hint. */
	c->enoent = "no such mailbox";
	if (!manage_start(c, &v, argc, argv, &a, &r))
		return r;
	r = mbox_delete(c->m, a.mailbox, a.force ? MBOX_DELETE_FORCE_FLAG : 0);
	return r < 0 ? ctl_fail(c, r, "not deleted") : CTL_EXIT_OK;
}

static const char bind_help[] =
	"Usage: mboxctl bind MAILBOX PATTERN [OPTIONS]\n"
	"\n"
	"Have MAILBOX receive a copy of every message published (mboxctl\n"
	"publish) to a topic matching PATTERN. PATTERN is words separated by\n"
	"dots; a word '*' matches exactly one word, a last word '>' one or "
	"more:\n"
	"  mboxctl bind audit 'jobs.*.created'\n"
	"  mboxctl bind audit 'jobs.>'\n"
	"Owner or admin only.\n"
	"\n"
	"Options:\n" CTL_COMMON_HELP;

static const char unbind_help[] =
	"Usage: mboxctl unbind MAILBOX PATTERN [OPTIONS]\n"
	"\n"
	"Remove the binding of MAILBOX to PATTERN (see mboxctl bind). Owner "
	"or\n"
	"admin only.\n"
	"\n"
	"Options:\n" CTL_COMMON_HELP;

int
cmd_bind(Ctl *c, int argc, char **argv)
{
	static const ManageVerb v = {
		bind_help, "MAILBOX PATTERN", plain_opts, ":S:h", true, true};
	ManageArgs a = {0};
	int r;

	if (!manage_start(c, &v, argc, argv, &a, &r))
		return r;
	r = mbox_bind(c->m, a.mailbox, a.word);
	if (r == -EEXIST) {
		/* "mailbox exists" would mislead: the binding does. */
		ctl_error(c, "already bound to '%s'", a.word);
		return CTL_EXIT_ERROR;
	}
	return r < 0 ? ctl_fail(c, r, "not bound") : CTL_EXIT_OK;
}

int
cmd_unbind(Ctl *c, int argc, char **argv)
{
	static const ManageVerb v = {
		unbind_help, "MAILBOX PATTERN", plain_opts, ":S:h", true, true};
	ManageArgs a = {0};
	int r;

	/* NOT_FOUND is the mailbox or the binding; the broker's text says
	 * which. */
	c->enoent = "no such mailbox or binding";
	if (!manage_start(c, &v, argc, argv, &a, &r))
		return r;
	r = mbox_unbind(c->m, a.mailbox, a.word);
	return r < 0 ? ctl_fail(c, r, NULL) : CTL_EXIT_OK;
}

static const char chmod_help[] =
	"Usage: mboxctl chmod MAILBOX MODE [OPTIONS]\n"
	"\n"
	"Set the permission bits of MAILBOX to MODE, octal as for chmod(1):\n"
	"r (4) lets a class recv, peek and subscribe, w (2) post and "
	"publish\n"
	"into; the digits are owner, group, other (0640: the owner reads "
	"and\n"
	"writes, the group reads, others nothing). Owner or admin only.\n"
	"\n"
	"Options:\n" CTL_COMMON_HELP;

/* MODE of chmod: octal digits only, at most 0777, as create --mode. */
static int
parse_mode(const char *s, unsigned *mode)
{
	unsigned long v;
	char *end;

	if (*s < '0' || *s > '7')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 8);
	if (errno || *end || v > 0777)
		return -EINVAL;
	*mode = (unsigned)v;
	return 0;
}

int
cmd_chmod(Ctl *c, int argc, char **argv)
{
	static const ManageVerb v = {chmod_help, "MAILBOX MODE", plain_opts,
				     ":S:h",	 true,		 true};
	ManageArgs a = {0};
	unsigned mode;
	bool done;
	int r;

	r = manage_args(c, &v, argc, argv, &a, &done);
	if (r || done)
		return r;
	if (parse_mode(a.word, &mode) < 0)
		return ctl_usage(c,
				 "bad mode '%s' (octal, 0 to 0777, e.g. 0640)",
				 a.word);
	r = ctl_connect(c);
	if (r)
		return r;
	r = mbox_chmod(c->m, a.mailbox, mode);
	return r < 0 ? ctl_fail(c, r, "mode not changed") : CTL_EXIT_OK;
}

static const char chown_help[] =
	"Usage: mboxctl chown MAILBOX OWNER[:GROUP] [OPTIONS]\n"
	"       mboxctl chown MAILBOX :GROUP [OPTIONS]\n"
	"\n"
	"Give MAILBOX a new owner and/or group, as chown(1) does for files.\n"
	"OWNER and GROUP are user and group names or numeric ids (a number "
	"is\n"
	"taken as an id). 'OWNER:' also sets the group to OWNER's login "
	"group.\n"
	"Only an admin (root or the broker's own user) may change the owner;\n"
	"the owner may change the group to any group it belongs to.\n"
	"\n"
	"Options:\n" CTL_COMMON_HELP;

/* A uid or gid that can go on the wire: (uid_t)-1 means "unchanged". */
static bool
id_number(const char *s, uint64_t *v)
{
	return ctl_parse_u64(s, v) == 0 && *v < UINT32_MAX;
}

/*
 * parse_owner - "OWNER", "OWNER:GROUP", "OWNER:" or ":GROUP" into *uid and
 * *gid ((uid_t)-1 / (gid_t)-1 for the part not given). Names are looked
 * up in the local user and group databases. Returns 0 or an exit code.
 */
static int
parse_owner(Ctl *c, const char *spec, uid_t *uid, gid_t *gid)
{
	const char *colon = strchr(spec, ':');
	const char *group = colon ? colon + 1 : NULL;
	size_t ulen = colon ? (size_t)(colon - spec) : strlen(spec);
	struct passwd *pw = NULL;
	struct group *gr;
	char user[256];
	uint64_t v;

	*uid = (uid_t)-1;
	*gid = (gid_t)-1;
	if (ulen >= sizeof(user))
		return ctl_usage(c, "user name too long");
	memcpy(user, spec, ulen);
	user[ulen] = '\0';
	if (!user[0] && (!group || !group[0]))
		return ctl_usage(c, "give an owner, a group or both "
				    "(OWNER, OWNER:GROUP or :GROUP)");
	if (user[0]) {
		if (id_number(user, &v)) {
			*uid = (uid_t)v;
		} else if ((pw = getpwnam(user))) {
			*uid = pw->pw_uid;
		} else {
			ctl_error(c,
				  "no such user '%s' (give a user name or "
				  "a numeric uid)",
				  user);
			return CTL_EXIT_USAGE;
		}
	}
	if (group && group[0]) {
		if (id_number(group, &v)) {
			*gid = (gid_t)v;
		} else if ((gr = getgrnam(group))) {
			*gid = gr->gr_gid;
		} else {
			ctl_error(c,
				  "no such group '%s' (give a group name "
				  "or a numeric gid)",
				  group);
			return CTL_EXIT_USAGE;
		}
	} else if (group) {
		/* "OWNER:": chown(1)'s login group of OWNER. */
		if (!pw)
			pw = getpwuid(*uid);
		if (!pw) {
			ctl_error(c,
				  "uid %lu has no login group to take: "
				  "name the group (OWNER:GROUP)",
				  (unsigned long)*uid);
			return CTL_EXIT_USAGE;
		}
		*gid = pw->pw_gid;
	}
	return 0;
}

int
cmd_chown(Ctl *c, int argc, char **argv)
{
	static const ManageVerb v = {chown_help, "MAILBOX OWNER[:GROUP]",
				     plain_opts, ":S:h",
				     true,	 true};
	ManageArgs a = {0};
	uid_t uid;
	gid_t gid;
	bool done;
	int r;

	r = manage_args(c, &v, argc, argv, &a, &done);
	if (r || done)
		return r;
	r = parse_owner(c, a.word, &uid, &gid);
	if (r)
		return r;
	r = ctl_connect(c);
	if (r)
		return r;
	r = mbox_chown(c->m, a.mailbox, uid, gid);
	return r < 0 ? ctl_fail(c, r, "owner not changed") : CTL_EXIT_OK;
}
