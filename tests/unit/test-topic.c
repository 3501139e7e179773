/*
 * test-topic.c - unit tests of topics and topic patterns (client/topic.c).
 *
 * Topics and patterns come from untrusted peers, so most cases are bad
 * ones. Strings are passed with explicit lengths, and some are not
 * NUL-terminated where the length ends, to catch a read past it.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client/topic.h"
#include "mbox-proto.h"

static bool
valid(const char *s)
{
	return topic_valid(s, strlen(s));
}

static bool
pvalid(const char *s)
{
	return topic_pattern_valid(s, strlen(s));
}

static bool
match(const char *pattern, const char *topic)
{
	/* The library never matches what it would not accept. */
	assert_true(topic_pattern_valid(pattern, strlen(pattern)));
	assert_true(topic_valid(topic, strlen(topic)));
	return topic_match(pattern, topic, strlen(topic));
}

/* A valid topic of n bytes (n >= 1, n % 5 != 3): "ab.deab.deab...". */
static char *
long_topic(size_t n)
{
	char *s = malloc(n + 1);

	assert_non_null(s);
	for (size_t i = 0; i < n; i++)
		s[i] = i % 5 == 2 ? '.' : (char)('a' + i % 5);
	s[n] = '\0';
	return s;
}

static void
test_topic_valid_good(void **state)
{
	(void)state;
	assert_true(valid("a"));
	assert_true(valid("jobs"));
	assert_true(valid("jobs.eu.created"));
	assert_true(valid("A-Z_a-z.0-9"));
	assert_true(valid("-._"));
	assert_true(valid("1.2.3.4.5.6.7.8.9"));
}

static void
test_topic_valid_bad(void **state)
{
	(void)state;
	assert_false(topic_valid("", 0));
	assert_false(topic_valid(NULL, 0));
	assert_false(valid("."));
	assert_false(valid(".a"));
	assert_false(valid("a."));
	assert_false(valid("a..b"));
	assert_false(valid("a.b."));
	assert_false(valid(".."));
	assert_false(valid("a b"));
	assert_false(valid("a/b"));
	assert_false(valid("a:b"));
	assert_false(valid("caf\xc3\xa9"));
	assert_false(valid("a\tb"));
	/* Wildcards are not words of a topic. */
	assert_false(valid("*"));
	assert_false(valid(">"));
	assert_false(valid("a.*"));
	assert_false(valid("a.>"));
	assert_false(valid("a*"));
	/* A NUL inside the length is a bad character, not an end. */
	assert_false(topic_valid("a\0b", 3));
}

static void
test_topic_valid_length(void **state)
{
	char *s = long_topic(MBOX_TOPIC_MAX + 1);

	(void)state;
	assert_true(topic_valid(s, MBOX_TOPIC_MAX));
	assert_true(topic_pattern_valid(s, MBOX_TOPIC_MAX));
	assert_false(topic_valid(s, MBOX_TOPIC_MAX + 1));
	assert_false(topic_pattern_valid(s, MBOX_TOPIC_MAX + 1));
	free(s);
}

/* The length bounds the string: the bytes after it are not read. */
static void
test_topic_valid_not_terminated(void **state)
{
	const char buf[] = {'a', '.', 'b', '.', '.'};

	(void)state;
	assert_true(topic_valid(buf, 3));
	assert_false(topic_valid(buf, 4));
	assert_true(topic_valid(buf, 1));
	assert_true(topic_pattern_valid(buf, 3));
	assert_false(topic_pattern_valid(buf, 5));
	assert_true(topic_match("a.b", buf, 3));
	assert_false(topic_match("a", buf, 3));
	assert_true(topic_match("a", buf, 1));
}

static void
test_topic_pattern_good(void **state)
{
	(void)state;
	assert_true(pvalid("a"));
	assert_true(pvalid("jobs.eu.created"));
	assert_true(pvalid("*"));
	assert_true(pvalid(">"));
	assert_true(pvalid("*.*"));
	assert_true(pvalid("jobs.*.created"));
	assert_true(pvalid("jobs.>"));
	assert_true(pvalid("*.>"));
	assert_true(pvalid("a.*.b.*.>"));
}

static void
test_topic_pattern_bad(void **state)
{
	(void)state;
	assert_false(topic_pattern_valid("", 0));
	assert_false(pvalid("."));
	assert_false(pvalid(".a"));
	assert_false(pvalid("a."));
	assert_false(pvalid("a..b"));
	assert_false(pvalid("*."));
	assert_false(pvalid(".*"));
	assert_false(pvalid("a b"));
	assert_false(pvalid("a/b"));
	/* Wildcards are whole words. */
	assert_false(pvalid("a*"));
	assert_false(pvalid("*a"));
	assert_false(pvalid("a.b*.c"));
	assert_false(pvalid("**"));
	assert_false(pvalid("a>"));
	assert_false(pvalid(">a"));
	assert_false(pvalid(">>"));
	assert_false(pvalid("a.>b"));
	/* ">" only as the last word. */
	assert_false(pvalid(">.a"));
	assert_false(pvalid("a.>.b"));
	assert_false(pvalid(">.>"));
	assert_false(pvalid(">.*"));
	assert_false(pvalid("a.>."));
	assert_false(topic_pattern_valid("a.>\0", 4));
}

static void
test_topic_match_exact(void **state)
{
	(void)state;
	assert_true(match("a", "a"));
	assert_true(match("jobs.eu.created", "jobs.eu.created"));
	assert_false(match("jobs.eu.created", "jobs.eu.deleted"));
	assert_false(match("jobs.eu", "jobs.eu.created"));
	assert_false(match("jobs.eu.created", "jobs.eu"));
	/* Words compare whole, not as prefixes. */
	assert_false(match("job", "jobs"));
	assert_false(match("jobs", "job"));
	assert_false(match("a.bc", "a.b"));
	assert_false(match("a.b", "a.bc"));
	assert_false(match("ab.c", "a.bc"));
	/* Case matters. */
	assert_false(match("Jobs", "jobs"));
}

static void
test_topic_match_star(void **state)
{
	(void)state;
	assert_true(match("*", "a"));
	assert_true(match("*", "jobs"));
	assert_false(match("*", "a.b"));
	assert_true(match("*.*", "a.b"));
	assert_false(match("*.*", "a"));
	assert_false(match("*.*", "a.b.c"));
	assert_true(match("jobs.*.created", "jobs.eu.created"));
	assert_true(match("jobs.*.created", "jobs.us.created"));
	assert_false(match("jobs.*.created", "jobs.created"));
	assert_false(match("jobs.*.created", "jobs.eu.west.created"));
	assert_false(match("jobs.*.created", "jobs.eu.deleted"));
	assert_true(match("*.eu", "jobs.eu"));
	assert_false(match("*.eu", "eu"));
	assert_true(match("jobs.*", "jobs.x"));
	assert_false(match("jobs.*", "jobs"));
	assert_false(match("jobs.*", "jobs.x.y"));
}

static void
test_topic_match_rest(void **state)
{
	(void)state;
	/* ">" alone matches every topic: each has at least one word. */
	assert_true(match(">", "a"));
	assert_true(match(">", "a.b"));
	assert_true(match(">", "a.b.c.d.e"));
	/* ">" needs at least one word to swallow. */
	assert_false(match("a.>", "a"));
	assert_true(match("a.>", "a.b"));
	assert_true(match("a.>", "a.b.c"));
	assert_true(match("a.>", "a.b.c.d"));
	assert_false(match("a.>", "b.a"));
	assert_false(match("a.>", "ab.c"));
	assert_true(match("a.b.>", "a.b.c"));
	assert_false(match("a.b.>", "a.b"));
	assert_false(match("a.b.>", "a.c.d"));
	assert_true(match("*.>", "a.b"));
	assert_true(match("*.>", "a.b.c"));
	assert_false(match("*.>", "a"));
	assert_true(match("a.*.c.>", "a.x.c.d"));
	assert_true(match("a.*.c.>", "a.x.c.d.e"));
	assert_false(match("a.*.c.>", "a.x.c"));
	assert_false(match("a.*.c.>", "a.x.d.e"));
}

/* Limits: the longest topic, a topic of 100 one-letter words. */
static void
test_topic_match_long(void **state)
{
	char *s = long_topic(MBOX_TOPIC_MAX);
	char words[MBOX_TOPIC_MAX], pat[MBOX_TOPIC_MAX];
	size_t n = 0;

	(void)state;
	assert_true(topic_match(">", s, strlen(s)));
	assert_true(topic_match("ab.>", s, strlen(s)));
	assert_false(topic_match("ab.*", s, strlen(s)));
	free(s);

	for (size_t i = 0; i < 100; i++) {
		words[n] = 'w';
		pat[n++] = '*';
		if (i < 99) {
			words[n] = '.';
			pat[n++] = '.';
		}
	}
	assert_int_equal(n, 199);
	pat[n] = '\0';
	assert_true(topic_valid(words, n));
	assert_true(topic_pattern_valid(pat, n));
	assert_true(topic_match(pat, words, n));
	assert_false(topic_match(pat, words, n - 2));
	pat[n - 1] = '>';
	assert_true(topic_match(pat, words, n));
	assert_false(topic_match(pat, words, n - 2));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_topic_valid_good),
		cmocka_unit_test(test_topic_valid_bad),
		cmocka_unit_test(test_topic_valid_length),
		cmocka_unit_test(test_topic_valid_not_terminated),
		cmocka_unit_test(test_topic_pattern_good),
		cmocka_unit_test(test_topic_pattern_bad),
		cmocka_unit_test(test_topic_match_exact),
		cmocka_unit_test(test_topic_match_star),
		cmocka_unit_test(test_topic_match_rest),
		cmocka_unit_test(test_topic_match_long),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
