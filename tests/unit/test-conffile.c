/*
 * test-conffile.c - unit tests of the configuration file parser
 * (broker/conffile.c).
 *
 * The option table mirrors mboxd's (main.c plus the limits of
 * doc/protocol.md 8.3), so the cases read like real files. The apply
 * callback records what it is given and rejects the value "bad", standing
 * in for main.c's validation.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker/conffile.h"

enum { OPT_SYNC = 256, OPT_LOG_LEVEL, OPT_NO_AUTOCREATE, OPT_MAX_CONN };

static const struct option opts[] = {
	{"socket", required_argument, NULL, 's'},
	{"db", required_argument, NULL, 'd'},
	{"sync", required_argument, NULL, OPT_SYNC},
	{"foreground", no_argument, NULL, 'f'},
	{"log-level", required_argument, NULL, OPT_LOG_LEVEL},
	{"max-msg-size", required_argument, NULL, 1},
	{"max-header-bytes", required_argument, NULL, 2},
	{"max-mailbox-msgs", required_argument, NULL, 3},
	{"max-connections", required_argument, NULL, OPT_MAX_CONN},
	{"max-connections-per-uid", required_argument, NULL, 4},
	{"no-autocreate", no_argument, NULL, OPT_NO_AUTOCREATE},
	{"config", required_argument, NULL, 'c'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0},
};

#define MAX_SEEN 16

typedef struct Seen {
	int n;
	struct {
		char key[64];
		char value[256];
		char where[64];
		int val; /* opt->val */
		unsigned line;
	} e[MAX_SEEN];
} Seen;

static int
record(void *ctx, const ConfEntry *e, char *why, size_t whylen)
{
	Seen *s = ctx;

	assert_true(s->n < MAX_SEEN);
	if (strcmp(e->value, "bad") == 0) {
		snprintf(why, whylen, "--%s must be good, not '%s'",
			 e->opt->name, e->value);
		return -EINVAL;
	}
	snprintf(s->e[s->n].key, sizeof(s->e[0].key), "%s", e->key);
	snprintf(s->e[s->n].value, sizeof(s->e[0].value), "%s", e->value);
	snprintf(s->e[s->n].where, sizeof(s->e[0].where), "%s", e->where);
	s->e[s->n].val = e->opt->val;
	s->e[s->n].line = e->line;
	s->n++;
	return 0;
}

/* Load text as the file "t.conf"; err gets the message. */
static int
load(const char *text, Seen *s, char *err, size_t errlen)
{
	FILE *f = fmemopen((void *)text, strlen(text), "r");
	int r;

	assert_non_null(f);
	memset(s, 0, sizeof(*s));
	err[0] = '\0';
	r = conffile_load_stream(f, "t.conf", opts, record, s, err, errlen);
	fclose(f);
	return r;
}

static void
expect_error(const char *text, const char *message)
{
	Seen s;
	char err[512];

	assert_int_equal(load(text, &s, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, message);
}

static void
test_conffile_entries(void **state)
{
	Seen s;
	char err[512];

	(void)state;
	assert_int_equal(load("# mboxd.conf\n"
			      "\n"
			      "   \t\n"
			      "  # indented comment\n"
			      "socket = /run/mbox/mbox.sock\n"
			      "db=/var/lib/mbox/mbox.db\n"
			      "\tsync\t=\tnormal\t\n"
			      "max-connections = 100   # trailing comment\n"
			      "log-level = debug\r\n",
			      &s, err, sizeof(err)),
			 0);
	assert_int_equal(s.n, 5);
	assert_string_equal(s.e[0].key, "socket");
	assert_string_equal(s.e[0].value, "/run/mbox/mbox.sock");
	assert_int_equal(s.e[0].val, 's');
	assert_int_equal(s.e[0].line, 5);
	assert_string_equal(s.e[0].where, "t.conf:5");
	assert_string_equal(s.e[1].value, "/var/lib/mbox/mbox.db");
	assert_int_equal(s.e[1].val, 'd');
	assert_string_equal(s.e[2].value, "normal");
	assert_string_equal(s.e[3].value, "100");
	assert_int_equal(s.e[3].val, OPT_MAX_CONN);
	assert_int_equal(s.e[3].line, 8);
	assert_string_equal(s.e[4].value, "debug");
	assert_string_equal(err, "");
}

static void
test_conffile_empty_file(void **state)
{
	Seen s;
	char err[64];

	(void)state;
	assert_int_equal(load("", &s, err, sizeof(err)), 0);
	assert_int_equal(s.n, 0);
	/* No newline at the end of the last line. */
	assert_int_equal(load("db = x", &s, err, sizeof(err)), 0);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.e[0].value, "x");
}

static void
test_conffile_hash_and_quotes(void **state)
{
	Seen s;
	char err[512];

	(void)state;
	assert_int_equal(load("socket = /tmp/a#b\n"
			      "db = \"/srv/with # hash/ x \"  # comment\n"
			      "sync = \"q\\\"uote\\\\\"\n",
			      &s, err, sizeof(err)),
			 0);
	assert_int_equal(s.n, 3);
	/* A '#' not after a blank is part of the value. */
	assert_string_equal(s.e[0].value, "/tmp/a#b");
	assert_string_equal(s.e[1].value, "/srv/with # hash/ x ");
	assert_string_equal(s.e[2].value, "q\"uote\\");
	/* An explicitly empty value reaches the caller. */
	assert_int_equal(load("db = \"\"\n", &s, err, sizeof(err)), 0);
	assert_string_equal(s.e[0].value, "");
}

static void
test_conffile_flags(void **state)
{
	Seen s;
	char err[512];

	(void)state;
	assert_int_equal(load("foreground = yes\n"
			      "autocreate = no\n",
			      &s, err, sizeof(err)),
			 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.e[0].val, 'f');
	assert_string_equal(s.e[0].value, "yes");
	/* "autocreate = no" is --no-autocreate. */
	assert_string_equal(s.e[1].key, "autocreate");
	assert_int_equal(s.e[1].val, OPT_NO_AUTOCREATE);
	assert_string_equal(s.e[1].value, "yes");

	assert_int_equal(load("foreground = Off\n"
			      "no-autocreate = TRUE\n",
			      &s, err, sizeof(err)),
			 0);
	assert_string_equal(s.e[0].value, "no");
	assert_string_equal(s.e[1].value, "yes");
	assert_int_equal(load("autocreate = 1\n", &s, err, sizeof(err)), 0);
	assert_string_equal(s.e[0].value, "no");

	expect_error("\nforeground = maybe\n",
		     "t.conf:2: 'foreground' takes yes or no, not 'maybe'");
	expect_error("foreground =\n",
		     "t.conf:1: 'foreground' takes yes or no, not ''");
}

static void
test_conffile_parse_bool(void **state)
{
	(void)state;
	assert_int_equal(conffile_parse_bool("yes"), 1);
	assert_int_equal(conffile_parse_bool("ON"), 1);
	assert_int_equal(conffile_parse_bool("1"), 1);
	assert_int_equal(conffile_parse_bool("false"), 0);
	assert_int_equal(conffile_parse_bool("0"), 0);
	assert_int_equal(conffile_parse_bool(""), -EINVAL);
	assert_int_equal(conffile_parse_bool("y"), -EINVAL);
	assert_int_equal(conffile_parse_bool("yes "), -EINVAL);
}

static void
test_conffile_syntax_errors(void **state)
{
	(void)state;
	expect_error("db = x\n[section]\n",
		     "t.conf:2: expected 'key = value', not '[section]'");
	expect_error("\n\nsocket /tmp/x\n",
		     "t.conf:3: expected '=' after 'socket', not '/tmp/x'");
	expect_error("socket\n",
		     "t.conf:1: expected 'key = value', not a bare 'socket'");
	expect_error("socket: /x\n",
		     "t.conf:1: expected '=' after 'socket', not ': /x'");
	expect_error("= x\n", "t.conf:1: expected 'key = value', not '= x'");
	expect_error("db = \"/x\n", "t.conf:1: unterminated quoted value");
	expect_error("db = \"/x\" y\n",
		     "t.conf:1: text after the closing quote: 'y'");
	expect_error("db = \"a\\nb\"\n",
		     "t.conf:1: unknown escape '\\n' in a quoted value (only "
		     "\\\" and \\\\)");
	expect_error("db =\n", "t.conf:1: 'db' needs a value");
	expect_error("db =   # only a comment\n",
		     "t.conf:1: 'db' needs a value");
}

static void
test_conffile_unknown_keys(void **state)
{
	(void)state;
	/* The spelling of doc/protocol.md's limit names. */
	expect_error("max_msg_size = 10\n",
		     "t.conf:1: unknown key 'max_msg_size' (did you mean "
		     "'max-msg-size'?)");
	expect_error("max-conections = 10\n",
		     "t.conf:1: unknown key 'max-conections' (did you mean "
		     "'max-connections'?)");
	expect_error("autocreat = yes\n",
		     "t.conf:1: unknown key 'autocreat' (did you mean "
		     "'autocreate'?)");
	expect_error("colour = blue\n",
		     "t.conf:1: unknown key 'colour'; the keys are: socket, "
		     "db, sync, foreground, log-level, max-msg-size, "
		     "max-header-bytes, max-mailbox-msgs, max-connections, "
		     "max-connections-per-uid, no-autocreate");
	/* Only on the command line. */
	expect_error(
		"config = /etc/other.conf\n",
		"t.conf:1: 'config' can only be given on the command line");
	expect_error("help = yes\n",
		     "t.conf:1: 'help' can only be given on the command line");
	/* Prefixes and dashes are not accepted: keys are exact. */
	expect_error("--db = x\n",
		     "t.conf:1: unknown key '--db' (did you mean 'db'?)");
}

static void
test_conffile_duplicates(void **state)
{
	Seen s;
	char err[512];

	(void)state;
	assert_int_equal(
		load("db = a\nsync = full\ndb = b\n", &s, err, sizeof(err)),
		-EINVAL);
	assert_string_equal(err, "t.conf:3: 'db' is already set on line 1; "
				 "give each key once");
	/* Entries before the bad line were applied, none after. */
	assert_int_equal(s.n, 2);
	/* Both spellings of one flag count as the same key. */
	expect_error("no-autocreate = yes\nautocreate = yes\n",
		     "t.conf:2: 'autocreate' is already set on line 1; give "
		     "each key once");
}

static void
test_conffile_apply_rejects(void **state)
{
	Seen s;
	char err[512];

	(void)state;
	assert_int_equal(load("db = x\n\n# c\nsync = bad\nsocket = y\n", &s,
			      err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "t.conf:4: --sync must be good, not 'bad'");
	assert_int_equal(s.n, 1);
}

static void
test_conffile_line_limits(void **state)
{
	char *text = malloc(CONFFILE_MAX_LINE + 16);
	static const char nul[] = "db = a\0b\n";
	Seen s;
	char err[512];
	FILE *f;

	(void)state;
	assert_non_null(text);
	memcpy(text, "db = ", 5);
	memset(text + 5, 'x', CONFFILE_MAX_LINE);
	strcpy(text + 5 + CONFFILE_MAX_LINE, "\n");
	expect_error(text, "t.conf:1: line longer than 4096 bytes");
	free(text);

	f = fmemopen((void *)nul, sizeof(nul) - 1, "r");
	assert_non_null(f);
	memset(&s, 0, sizeof(s));
	assert_int_equal(conffile_load_stream(f, "t.conf", opts, record, &s,
					      err, sizeof(err)),
			 -EINVAL);
	fclose(f);
	assert_string_equal(err, "t.conf:1: NUL byte in the line");
}

static void
test_conffile_load_path(void **state)
{
	char dir[] = "/tmp/test-conffile-XXXXXX";
	char path[64], err[512], want[128];
	Seen s = {0};
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/mboxd.conf", dir);

	/* A missing file is -ENOENT, so main.c may ignore the default. */
	assert_int_equal(
		conffile_load(path, opts, record, &s, err, sizeof(err)),
		-ENOENT);
	snprintf(want, sizeof(want),
		 "cannot read %s: No such file or directory", path);
	assert_string_equal(err, want);

	/* A directory opens, but reads fail: the reason is getline's. */
	assert_int_equal(conffile_load(dir, opts, record, &s, err, sizeof(err)),
			 -EISDIR);
	snprintf(want, sizeof(want), "cannot read %s: Is a directory", dir);
	assert_string_equal(err, want);

	f = fopen(path, "w");
	assert_non_null(f);
	fputs("db = /x\nmax-connections = bad\n", f);
	fclose(f);
	assert_int_equal(
		conffile_load(path, opts, record, &s, err, sizeof(err)),
		-EINVAL);
	snprintf(want, sizeof(want),
		 "%s:2: --max-connections must be good, not 'bad'", path);
	assert_string_equal(err, want);
	assert_int_equal(s.n, 1);
	snprintf(want, sizeof(want), "%s:1", path);
	assert_string_equal(s.e[0].where, want);

	/* err may be NULL. */
	assert_int_equal(conffile_load(path, opts, record, &s, NULL, 0),
			 -EINVAL);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conffile_entries),
		cmocka_unit_test(test_conffile_empty_file),
		cmocka_unit_test(test_conffile_hash_and_quotes),
		cmocka_unit_test(test_conffile_flags),
		cmocka_unit_test(test_conffile_parse_bool),
		cmocka_unit_test(test_conffile_syntax_errors),
		cmocka_unit_test(test_conffile_unknown_keys),
		cmocka_unit_test(test_conffile_duplicates),
		cmocka_unit_test(test_conffile_apply_rejects),
		cmocka_unit_test(test_conffile_line_limits),
		cmocka_unit_test(test_conffile_load_path),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
