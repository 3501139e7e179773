/*
 * topic.c - topics and topic patterns of fan-out (doc/protocol.md 5.15,
 * 5.16).
 *
 * Both are checked and matched one word at a time, in place: no copies,
 * no allocation, no recursion, so a hostile 200-byte pattern costs at
 * most one pass over each string. Matching needs no backtracking because
 * "*" takes exactly one word and ">" may only end a pattern.
 */
#include "config.h"

#include <string.h>

#include "client/topic.h"
#include "mbox-proto.h"

static bool
topic_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '-';
}

/* Length of the word at s (up to the next dot or end of the len bytes). */
static size_t
topic_word_len(const char *s, size_t len)
{
	const char *dot = memchr(s, '.', len);

	return dot ? (size_t)(dot - s) : len;
}

static bool
topic_word_plain(const char *w, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!topic_char(w[i]))
			return false;
	return true;
}

/*
 * Walk the words of s; with wildcards, "*" is a word anywhere and ">"
 * only as the last one. An empty word (leading, trailing or double dot)
 * is never valid.
 */
static bool
topic_check(const char *s, size_t len, bool wildcards)
{
	size_t off = 0;

	if (!s || len == 0 || len > MBOX_TOPIC_MAX)
		return false;
	for (;;) {
		size_t n = topic_word_len(s + off, len - off);
		bool last = off + n == len;

		if (wildcards && n == 1 &&
		    (s[off] == '*' || (s[off] == '>' && last)))
			; /* a wildcard word */
		else if (!topic_word_plain(s + off, n))
			return false;
		if (last)
			return true;
		off += n + 1; /* past the dot; a trailing dot leaves "" */
	}
}

bool
topic_valid(const char *s, size_t len)
{
	return topic_check(s, len, false);
}

bool
topic_pattern_valid(const char *s, size_t len)
{
	return topic_check(s, len, true);
}

bool
topic_match(const char *pattern, const char *topic, size_t len)
{
	size_t plen = strlen(pattern), po = 0, to = 0;

	if (len == 0 || plen == 0)
		return false;
	for (;;) {
		size_t pn = topic_word_len(pattern + po, plen - po);
		size_t tn = topic_word_len(topic + to, len - to);
		bool plast = po + pn == plen, tlast = to + tn == len;

		/* ">" swallows this word and every one after it. */
		if (pn == 1 && pattern[po] == '>')
			return plast;
		if (!(pn == 1 && pattern[po] == '*') &&
		    (pn != tn || memcmp(pattern + po, topic + to, pn) != 0))
			return false;
		if (plast || tlast)
			return plast && tlast;
		po += pn + 1;
		to += tn + 1;
	}
}
