/*
 * topic.h - topics and topic patterns of fan-out (PUBLISH, BIND).
 *
 * A topic is 1..MBOX_TOPIC_MAX bytes of words of [A-Za-z0-9_-]+
 * separated by single dots. A pattern is the same, except that a word
 * may be "*" (exactly one word) or, as the last word only, ">" (one or
 * more words). Pure functions, no allocation.
 */
#ifndef MBOX_CLIENT_TOPIC_H
#define MBOX_CLIENT_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

/* Is s (len bytes, need not be NUL-terminated) a valid topic? */
bool topic_valid(const char *s, size_t len);
/* Is s (len bytes) a valid pattern? */
bool topic_pattern_valid(const char *s, size_t len);
/* Does the valid pattern (NUL-terminated) match the valid topic (len
 * bytes)? */
bool topic_match(const char *pattern, const char *topic, size_t len);

#endif
