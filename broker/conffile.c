/*
 * conffile.c - parse "key = value" lines into getopt-style options.
 *
 * The parser knows the syntax and the set of keys (the caller's getopt
 * table); it knows no option's meaning. Each line is parsed, matched and
 * applied before the next is read, so an error names the first bad line
 * and nothing after it has been applied.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "broker/conffile.h"

/* Options that make no sense in the file that --config names. */
static const char *const cmdline_only[] = {"help", "version", "config"};

typedef struct Loader {
	const char *name;
	const struct option *opts;
	size_t nopts;
	unsigned *first_line; /* per option: the line that set it, 0 if none */
	ConfApplyFn apply;
	void *ctx;
	char *err;
	size_t errlen;
	unsigned line;
} Loader;

static int fail(Loader *l, int r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Write "NAME:LINE: reason" into the loader's err; returns r. */
static int
fail(Loader *l, int r, const char *fmt, ...)
{
	char reason[512];
	va_list ap;

	if (!l->err || l->errlen == 0)
		return r;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	snprintf(l->err, l->errlen, "%s:%u: %s", l->name, l->line, reason);
	return r;
}

int
conffile_parse_bool(const char *s)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0)
			return 1;
		if (strcasecmp(s, no[i]) == 0)
			return 0;
	}
	return -EINVAL;
}

static bool
is_cmdline_only(const char *name)
{
	for (size_t i = 0; i < sizeof(cmdline_only) / sizeof(cmdline_only[0]);
	     i++)
		if (strcmp(name, cmdline_only[i]) == 0)
			return true;
	return false;
}

/* Levenshtein distance, capped: anything over 9 counts as far. */
static size_t
distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[64];

	if (la >= 63 || lb >= 63)
		return 99;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/*
 * The option key names, or -1. A key "X" also names a flag "no-X", with
 * *invert set. Matching is exact: the suggestion code deals with typos.
 */
static long
find_option(const Loader *l, const char *key, bool *invert)
{
	*invert = false;
	for (size_t i = 0; i < l->nopts; i++)
		if (strcmp(l->opts[i].name, key) == 0)
			return (long)i;
	for (size_t i = 0; i < l->nopts; i++) {
		const char *n = l->opts[i].name;

		if (l->opts[i].has_arg == no_argument &&
		    strncmp(n, "no-", 3) == 0 && strcmp(n + 3, key) == 0) {
			*invert = true;
			return (long)i;
		}
	}
	return -1;
}

/* The known key closest to key (after '_' -> '-' and lower-casing). */
static const char *
suggest(const Loader *l, const char *key)
{
	char norm[64];
	const char *best = NULL;
	size_t best_d = 99, i;

	for (i = 0; key[i] && i + 1 < sizeof(norm); i++)
		norm[i] = key[i] == '_' ? '-'
					: (char)tolower((unsigned char)key[i]);
	norm[i] = '\0';
	for (i = 0; i < l->nopts; i++) {
		const char *n = l->opts[i].name;
		size_t d;

		if (is_cmdline_only(n))
			continue;
		d = distance(norm, n);
		if (d < best_d) {
			best_d = d;
			best = n;
		}
		if (l->opts[i].has_arg == no_argument &&
		    strncmp(n, "no-", 3) == 0 &&
		    (d = distance(norm, n + 3)) < best_d) {
			best_d = d;
			best = n + 3;
		}
	}
	/* Close enough to be a typo: at most 2 edits, or the normalised
	 * spelling matched exactly (max_msg_size). */
	return best && (best_d <= 2 || best_d * 3 <= strlen(norm)) ? best
								   : NULL;
}

static int
fail_unknown(Loader *l, const char *key)
{
	const char *s = suggest(l, key);
	char list[400];
	size_t used = 0;

	if (s)
		return fail(l, -EINVAL, "unknown key '%s' (did you mean '%s'?)",
			    key, s);
	list[0] = '\0';
	for (size_t i = 0; i < l->nopts && used < sizeof(list); i++) {
		int n;

		if (is_cmdline_only(l->opts[i].name))
			continue;
		n = snprintf(list + used, sizeof(list) - used, "%s%s",
			     used ? ", " : "", l->opts[i].name);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	return fail(l, -EINVAL, "unknown key '%s'; the keys are: %s", key,
		    list);
}

static bool
is_key_char(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '_';
}

static char *
skip_blanks(char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/*
 * Unquote a "..." value in place (\" and \\ are the only escapes); what
 * follows the closing quote may only be blanks and a comment.
 */
static int
parse_quoted(Loader *l, char *p, char **value)
{
	char *out = p, *in = p + 1;

	for (;; in++) {
		if (*in == '\0')
			return fail(l, -EINVAL, "unterminated quoted value");
		if (*in == '"')
			break;
		if (*in == '\\') {
			if (in[1] != '"' && in[1] != '\\')
				return fail(l, -EINVAL,
					    "unknown escape '\\%c' in a quoted "
					    "value (only \\\" and \\\\)",
					    in[1] ? in[1] : ' ');
			in++;
		}
		*out++ = *in;
	}
	in = skip_blanks(in + 1);
	if (*in != '\0' && *in != '#')
		return fail(l, -EINVAL, "text after the closing quote: '%s'",
			    in);
	*out = '\0';
	*value = p;
	return 0;
}

/* A bare value runs to a '#' that follows a blank, then loses its blanks. */
static void
parse_bare(char *p, char **value)
{
	char *end;

	for (end = p; *end; end++)
		if (*end == '#' &&
		    (end == p || end[-1] == ' ' || end[-1] == '\t'))
			break;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*end = '\0';
	*value = p;
}

/* Split a non-blank, non-comment line into key and value, in place. */
static int
split_line(Loader *l, char *p, char **key, char **value, bool *quoted)
{
	char *k = p, *eq;

	while (is_key_char(*p))
		p++;
	if (p == k)
		return fail(l, -EINVAL, "expected 'key = value', not '%s'", k);
	eq = skip_blanks(p);
	if (*eq != '=') {
		if (*eq == '\0')
			return fail(l, -EINVAL,
				    "expected 'key = value', not a bare '%.*s'",
				    (int)(p - k), k);
		return fail(l, -EINVAL, "expected '=' after '%.*s', not '%s'",
			    (int)(p - k), k, eq);
	}
	*p = '\0'; /* p <= eq: the '=' has been seen, so it may go */
	*key = k;
	p = skip_blanks(eq + 1);
	*quoted = *p == '"';
	if (*quoted)
		return parse_quoted(l, p, value);
	parse_bare(p, value);
	return 0;
}

static int
apply_entry(Loader *l, const char *key, const char *value, bool quoted)
{
	const struct option *opt;
	bool invert;
	long i = find_option(l, key, &invert);
	ConfEntry e;
	char why[400] = "";
	int r;

	if (is_cmdline_only(key))
		return fail(l, -EINVAL,
			    "'%s' can only be given on the command "
			    "line",
			    key);
	if (i < 0 || is_cmdline_only(l->opts[i].name))
		return fail_unknown(l, key); /* "no-help" and the like */
	opt = &l->opts[i];
	if (l->first_line[i])
		return fail(l, -EINVAL,
			    "'%s' is already set on line %u; give each key "
			    "once",
			    key, l->first_line[i]);
	if (opt->has_arg == no_argument) {
		int b = conffile_parse_bool(value);

		if (b < 0)
			return fail(l, -EINVAL,
				    "'%s' takes yes or no, not '%s'", key,
				    value);
		value = (b ^ invert) ? "yes" : "no";
	} else if (!*value && !quoted) {
		return fail(l, -EINVAL, "'%s' needs a value", key);
	}
	l->first_line[i] = l->line;
	e = (ConfEntry){
		.file = l->name,
		.line = l->line,
		.key = key,
		.opt = opt,
		.value = value,
	};
	snprintf(e.where, sizeof(e.where), "%s:%u", l->name, l->line);
	r = l->apply(l->ctx, &e, why, sizeof(why));
	if (r < 0)
		return fail(l, r, "%s", why[0] ? why : "invalid value");
	return 0;
}

static int
load_line(Loader *l, char *buf, size_t len)
{
	char *p, *key = NULL, *value = NULL;
	bool quoted = false;
	int r;

	if (strlen(buf) != len)
		return fail(l, -EINVAL, "NUL byte in the line");
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		buf[--len] = '\0';
	if (len > CONFFILE_MAX_LINE)
		return fail(l, -EINVAL, "line longer than %d bytes",
			    CONFFILE_MAX_LINE);
	p = skip_blanks(buf);
	if (*p == '\0' || *p == '#')
		return 0;
	r = split_line(l, p, &key, &value, &quoted);
	if (r < 0)
		return r;
	return apply_entry(l, key, value, quoted);
}

int
conffile_load_stream(FILE *f, const char *name, const struct option *opts,
		     ConfApplyFn apply, void *ctx, char *err, size_t errlen)
{
	Loader l = {
		.name = name,
		.opts = opts,
		.apply = apply,
		.ctx = ctx,
		.err = err,
		.errlen = errlen,
	};
	char *buf = NULL;
	size_t cap = 0;
	ssize_t n;
	int r = 0, read_errno;

	while (opts[l.nopts].name)
		l.nopts++;
	l.first_line = calloc(l.nopts + 1, sizeof(*l.first_line));
	if (!l.first_line)
		return -ENOMEM;
	errno = 0;
	while ((n = getline(&buf, &cap, f)) >= 0) {
		l.line++;
		r = load_line(&l, buf, (size_t)n);
		if (r < 0)
			goto out;
		errno = 0;
	}
	/* getline's own errno says why (a directory: EISDIR). */
	read_errno = errno;
	if (ferror(f)) {
		r = read_errno ? -read_errno : -EIO;
		if (err && errlen)
			snprintf(err, errlen, "cannot read %s: %s", name,
				 strerror(-r));
	}
out:
	free(buf);
	free(l.first_line);
	return r;
}

int
conffile_load(const char *path, const struct option *opts, ConfApplyFn apply,
	      void *ctx, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	int r;

	if (!f) {
		r = -errno;
		if (err && errlen)
			snprintf(err, errlen, "cannot read %s: %s", path,
				 strerror(errno));
		return r;
	}
	r = conffile_load_stream(f, path, opts, apply, ctx, err, errlen);
	fclose(f);
	return r;
}
