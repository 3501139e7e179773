/*
 * transfer.c - `mboxctl export MAILBOX` and `mboxctl import MAILBOX`.
 *
 * The format (one compact JSON object per line, one line per message):
 *
 *   {"id":N,"priority":P,"deliveries":D,["dead_reason":"..",]
 *    "sender":{"pid":N,"uid":N,"gid":N,"comm":".."},"time_ns":N,
 *    ["expires_ns":N,]"headers":{"k":"v",..},
 *    "data":".." | "data_base64":".."}
 *
 * The payload is lossless either way: "data" when the bytes are UTF-8
 * without NUL (JSON-escaped exactly: '"', '\' and control characters,
 * nothing else changed), else "data_base64" (standard alphabet, padded).
 * Import takes either, plus any JSON escape (\uXXXX, surrogate pairs).
 *
 * Export only peeks: nothing is leased, acked or changed, so it can run
 * against a live mailbox. The queue is read in id order (PEEK flag
 * MBOX_PEEK_BY_ID) when the library and broker know it; an older broker
 * only offers delivery order (priority, then id), which FROM_ID cannot
 * page through when priorities are mixed, so then export de-duplicates by
 * id and checks the total against the mailbox's counters: it fails rather
 * than silently writing an incomplete file.
 *
 * Import posts in batches (one POST of up to 1024 messages, all stored or
 * none) with each message's payload, priority and headers; a future
 * expires_ns becomes the remaining ttl, a past one a ttl of 1 ms (the
 * message goes dead as expired, as it would have at the source). The
 * broker stamps the importer as sender, so the original sender, id, time
 * and dead reason are kept as x-mbox-from-* headers (--no-meta: not). A
 * bad line stops the import after the lines before it are posted, so
 * `tail -n +LINE` resumes it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mbox-proto.h"

#include "client/mboxctl/json.h"
#include "client/mboxctl/transfer.h"

#define PEEK_PAGE	    MBOX_RECV_MAX
#define IMPORT_BATCH	    1024u
#define PROGRESS_PERIOD_NS  100000000 /* at most 10 updates a second */
#define TTL_MAX_MS	    (365ull * 24 * 3600 * 1000)
#define HEADERS_COUNT_MAX   64u
#define IMPORT_MSG_OVERHEAD 96u /* MSG, DATA, PRIORITY, TTL field headers */
#define META_PREFIX	    "x-mbox-from-"
#define META_MAX	    7u /* id time pid uid gid comm dead-reason */

static const char export_help[] =
	"Usage: mboxctl export MAILBOX [OPTIONS]\n"
	"\n"
	"Write every message of MAILBOX - ready, delayed and leased - as JSON\n"
	"Lines, one object per message, without taking or changing any.\n"
	"\n"
	"Options:\n"
	"      --dead            the dead list instead\n"
	"  -o, --output FILE     write to FILE (replaced once complete)\n"
	"                        instead of standard output\n" CTL_COMMON_HELP
	"\n"
	"Each line: {\"id\":N,\"priority\":P,\"deliveries\":D,"
	"[\"dead_reason\":R,]\n"
	"\"sender\":{\"pid\":N,\"uid\":N,\"gid\":N,\"comm\":S},"
	"\"time_ns\":N,[\"expires_ns\":N,]\n"
	"\"headers\":{K:V,...},\"data\":S or \"data_base64\":S}.\n"
	"\"data\" holds payloads that are UTF-8 without NUL, \"data_base64\" "
	"all others:\n"
	"lossless either way. time_ns and expires_ns are ns since the epoch.\n"
	"A delay is not kept: delayed messages are written like ready ones.\n"
	"Shows progress on a terminal.\n";

static const char import_help[] =
	"Usage: mboxctl import MAILBOX [OPTIONS]\n"
	"\n"
	"Post the messages of an export (JSON Lines) to MAILBOX, in batches "
	"that\n"
	"are stored all or nothing: payload, priority and headers as they "
	"were.\n"
	"\n"
	"Options:\n"
	"  -i, --input FILE      read FILE instead of standard input\n"
	"      --no-meta         do not add the x-mbox-from-* headers\n"
	"" CTL_COMMON_HELP "\n"
	"The broker stamps you as the sender, so the original is kept in "
	"headers:\n"
	"x-mbox-from-id, -time (ns), -pid, -uid, -gid, -comm and "
	"-dead-reason\n"
	"(replacing any such headers the message had). A message with "
	"expires_ns\n"
	"gets the ttl it had left (1 ms if it has passed: it goes dead as "
	"expired);\n"
	"dead messages come back ready. Empty lines are skipped; a bad line "
	"stops\n"
	"the import after every line before it is posted: resume with\n"
	"tail -n +LINE FILE | mboxctl import MAILBOX.\n"
	"Shows progress on a terminal.\n";

/* ------------------------------------------------------------------ */
/* Progress line */

/* A "exported 12345 messages, 12.3 MiB" line on stderr, on a terminal. */
typedef struct Progress {
	const char *what; /* "exported" */
	bool on;	  /* stderr is a terminal */
	bool shown;	  /* a line is on the screen */
	uint64_t msgs;
	uint64_t bytes;	 /* payload bytes */
	int64_t next_ns; /* monotonic: no update before */
} Progress;

static void
progress_init(Progress *pg, const char *what)
{
	/* next_ns 0: the first batch shows at once, so a terminal always
	 * sees what is going on. */
	*pg = (Progress){.what = what, .on = isatty(STDERR_FILENO) == 1};
}

static void
progress_add(Progress *pg, uint64_t msgs, uint64_t bytes)
{
	int64_t now;

	pg->msgs += msgs;
	pg->bytes += bytes;
	if (!pg->on)
		return;
	now = ctl_monotonic_ns();
	if (now < pg->next_ns)
		return;
	pg->next_ns = now + PROGRESS_PERIOD_NS;
	fprintf(stderr, "\r\033[K%s %" PRIu64 " messages, %.1f MiB", pg->what,
		pg->msgs, (double)pg->bytes / (1024.0 * 1024.0));
	fflush(stderr);
	pg->shown = true;
}

/* Clear the line, so that what follows starts on a clean one. */
static void
progress_end(Progress *pg)
{
	if (pg->shown) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
	pg->shown = false;
}

/* ------------------------------------------------------------------ */
/* Export */

/* Ids written so far, for delivery-order paging, which repeats them. An
 * open-addressing table; 0 marks an empty slot (ids start at 1). */
typedef struct IdSet {
	uint64_t *slot;
	size_t cap; /* a power of two, or 0 */
	size_t n;
} IdSet;

static size_t
idset_hash(uint64_t id, size_t cap)
{
	return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 17) & (cap - 1);
}

static int
idset_grow(IdSet *s)
{
	size_t cap = s->cap ? 2 * s->cap : 4096, i, j;
	uint64_t *slot = calloc(cap, sizeof(*slot));

	if (!slot)
		return -ENOMEM;
	for (i = 0; i < s->cap; i++) {
		if (!s->slot[i])
			continue;
		for (j = idset_hash(s->slot[i], cap); slot[j];
		     j = (j + 1) & (cap - 1))
			;
		slot[j] = s->slot[i];
	}
	free(s->slot);
	s->slot = slot;
	s->cap = cap;
	return 0;
}

/* Add id: 1 if it is new, 0 if it was there, -ENOMEM. */
static int
idset_add(IdSet *s, uint64_t id)
{
	size_t j;

	if (2 * (s->n + 1) > s->cap && idset_grow(s) < 0)
		return -ENOMEM;
	for (j = idset_hash(id, s->cap); s->slot[j]; j = (j + 1) & (s->cap - 1))
		if (s->slot[j] == id)
			return 0;
	s->slot[j] = id;
	s->n++;
	return 1;
}

typedef struct Export {
	Ctl *c;
	FILE *out;
	const char *out_name; /* for messages */
	bool dead;
	Progress pg;
	IdSet seen; /* only in delivery-order mode */
	uint64_t n; /* messages written */
} Export;

/* One message as one line of the export format (see the banner). */
static void
export_msg(FILE *f, const mbox_msg *msg)
{
	fprintf(f,
		"{\"id\":%" PRIu64 ",\"priority\":%u,\"deliveries\":%" PRIu32,
		mbox_msg_id(msg), mbox_msg_priority(msg),
		mbox_msg_deliveries(msg));
	json_msg_origin(f, msg);
	fprintf(f, ",\"time_ns\":%" PRId64, mbox_msg_time_ns(msg));
	if (mbox_msg_expires_ns(msg))
		fprintf(f, ",\"expires_ns\":%" PRId64,
			mbox_msg_expires_ns(msg));
	json_msg_content(f, msg);
	fputs("}\n", f);
}

static int
export_write(Export *e, const mbox_msg *msg)
{
	size_t len;

	export_msg(e->out, msg);
	if (ferror(e->out))
		return ctl_error(e->c, "cannot write to %s: %s", e->out_name,
				 strerror(errno));
	mbox_msg_data(msg, &len);
	e->n++;
	progress_add(&e->pg, 1, len);
	return 0;
}

static void
msgs_free(mbox_msg **msgs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		mbox_msg_free(msgs[i]);
}

/*
 * Page through in id order: the dead list, or (by_id) the queue with
 * MBOX_PEEK_BY_ID. Returns 0, an exit code it reported, or -EINVAL
 * unreported when the first page was refused (the flag is unknown).
 */
static int
export_by_id(Export *e, unsigned flags)
{
	mbox_msg *msgs[PEEK_PAGE];
	uint64_t from = 0;
	size_t n, i;
	bool first = true;
	int r;

	for (;;) {
		r = mbox_peek(e->c->m, e->c->target, PEEK_PAGE, from, flags,
			      msgs, &n);
		if (r == -EINVAL && first && flags != MBOX_PEEK_DEAD_ONLY)
			return -EINVAL;
		if (r < 0)
			return ctl_fail(e->c, r, "cannot read the messages");
		first = false;
		if (n == 0)
			return 0;
		for (i = 0, r = 0; i < n && !r; i++)
			r = export_write(e, msgs[i]);
		from = mbox_msg_id(msgs[n - 1]) + 1;
		msgs_free(msgs, n);
		if (r)
			return r;
	}
}

/*
 * Peek the queue in delivery order from id `from` and write the messages
 * not written yet. *last gets the id of the page's last message, 0 when
 * the page was empty.
 */
static int
export_page_prio(Export *e, uint64_t from, uint64_t *last)
{
	mbox_msg *msgs[PEEK_PAGE];
	size_t n, i;
	int r;

	r = mbox_peek(e->c->m, e->c->target, PEEK_PAGE, from, 0, msgs, &n);
	if (r < 0)
		return ctl_fail(e->c, r, "cannot read the messages");
	*last = n ? mbox_msg_id(msgs[n - 1]) : 0;
	for (i = 0, r = 0; i < n && !r; i++) {
		int fresh = idset_add(&e->seen, mbox_msg_id(msgs[i]));

		if (fresh < 0)
			r = ctl_error(e->c, "out of memory");
		else if (fresh)
			r = export_write(e, msgs[i]);
	}
	msgs_free(msgs, n);
	return r;
}

/* Ready + leased + delayed of the mailbox, from LIST. */
static int
export_total(Export *e, uint64_t *total)
{
	mbox_mailbox_info *list = NULL;
	size_t n = 0, i;
	int r;

	r = mbox_list(e->c->m, &list, &n);
	if (r < 0)
		return ctl_fail(e->c, r, "cannot count the messages");
	*total = 0;
	for (i = 0; i < n; i++)
		if (strcmp(list[i].name, e->c->target) == 0)
			*total = list[i].ready + list[i].leased +
				 list[i].delayed;
	mbox_list_free(list, n);
	return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * The search behind the sweep: a message is in the page from its own id
 * unless a full page of higher priority comes first, and from the id
 * after its predecessor's the page is the same; so peeking from 0 and
 * from every known id + 1, in id order, finds every message that can be
 * found at all. At most EXPORT_SEARCH_MAX pages: this is the slow path.
 */
#define EXPORT_SEARCH_MAX 256u
static int
export_search(Export *e, uint64_t total)
{
	IdSet tried = {0};
	uint64_t *ids = NULL, last;
	unsigned pages = 0;
	bool grew = true;
	size_t n, i, k;
	int r = 0;

	while (grew && e->seen.n < total && pages < EXPORT_SEARCH_MAX && !r) {
		grew = false;
		n = e->seen.n;
		free(ids);
		ids = malloc((n + 1) * sizeof(*ids));
		if (!ids) {
			r = ctl_error(e->c, "out of memory");
			break;
		}
		for (i = 0, k = 1; i < e->seen.cap; i++)
			if (e->seen.slot[i])
				ids[k++] = e->seen.slot[i] + 1;
		ids[0] = 0;
		qsort(ids, n + 1, sizeof(*ids), cmp_u64);
		for (i = 0; i <= n && e->seen.n < total && !r; i++) {
			uint64_t before = e->seen.n;
			int fresh = idset_add(&tried, ids[i] + 1);

			if (fresh <= 0) {
				r = fresh < 0 ? ctl_error(e->c, "out of memory")
					      : 0;
				continue;
			}
			if (pages++ == EXPORT_SEARCH_MAX)
				break;
			r = export_page_prio(e, ids[i], &last);
			grew = grew || e->seen.n > before;
		}
	}
	free(ids);
	free(tried.slot);
	return r;
}

/*
 * Without MBOX_PEEK_BY_ID the queue comes in delivery order (priority
 * descending, then id). Sweep it from the id after each page's last
 * message: that finds every message of one priority; higher-priority ones
 * come again (skipped by id) and lower-priority ones with smaller ids can
 * be missed, so compare with the mailbox's total and search for the rest.
 * Fail rather than write an incomplete export.
 */
static int
export_by_priority(Export *e)
{
	uint64_t from = 0, last, total = 0;
	int r;

	do {
		r = export_page_prio(e, from, &last);
		from = last + 1;
	} while (!r && last);
	if (r == 0)
		r = export_total(e, &total);
	if (r == 0 && e->n < total)
		r = export_search(e, total);
	if (r || e->n == total)
		return r;
	return ctl_error(e->c,
			 "export incomplete: wrote %" PRIu64
			 " messages, the mailbox holds %" PRIu64
			 "; this broker lists the queue only in priority "
			 "order, which cannot always be paged through when "
			 "priorities are mixed (or the mailbox changed "
			 "meanwhile); upgrade mboxd (PEEK in id order)",
			 e->n, total);
}

static int
export_run(Export *e)
{
	if (e->dead)
		return export_by_id(e, MBOX_PEEK_DEAD_ONLY);
#ifdef MBOX_PEEK_BY_ID
	{
		int r = export_by_id(e, MBOX_PEEK_BY_ID);

		if (r != -EINVAL)
			return r;
	}
#endif
	return export_by_priority(e);
}

/*
 * The mode a replaced or new -o file gets, as if written in place: the
 * old file's with its owner and group, else 0666 less the umask.
 * mkstemp's 0600 would hide an export the user meant to share. Where
 * the old group cannot be kept, its bits must not pass to ours.
 */
static void
export_file_mode(int fd, const struct stat *old)
{
	mode_t mask, mode;

	if (!old) {
		mask = umask(0);
		umask(mask);
		(void)fchmod(fd, 0666 & ~mask);
		return;
	}
	mode = old->st_mode & 07777;
	if (fchown(fd, old->st_uid, old->st_gid) < 0 &&
	    fchown(fd, (uid_t)-1, old->st_gid) < 0)
		mode &= ~(mode_t)077;
	(void)fchmod(fd, mode);
}

/*
 * -o FILE: a new or regular FILE is written to a temporary file beside
 * it, renamed over it at the end, so that FILE never holds a partial
 * export. Anything else - a symbolic link, a device, a FIFO - and a FILE
 * in a directory we may not create files in is written in place, as a
 * shell's > would: the kernel follows the link, with its protections.
 * *tmp is NULL then.
 */
static int
export_open(Export *e, const char *path, char **tmp)
{
	struct stat st;
	bool exists = lstat(path, &st) == 0;
	size_t n;
	int fd = -1;

	*tmp = NULL;
	if (!exists || S_ISREG(st.st_mode)) {
		n = strlen(path) + sizeof(".XXXXXX");
		*tmp = malloc(n);
		if (!*tmp)
			return ctl_error(e->c, "out of memory");
		snprintf(*tmp, n, "%s.XXXXXX", path);
		fd = mkstemp(*tmp);
		if (fd < 0) {
			int err = errno;

			free(*tmp);
			*tmp = NULL;
			if (err != EACCES)
				return ctl_error(e->c,
						 "cannot create a temporary "
						 "file beside %s: %s",
						 path, strerror(err));
		} else {
			export_file_mode(fd, exists ? &st : NULL);
		}
	}
	if (fd < 0) {
		fd = open(path,
			  O_WRONLY | O_CREAT | O_TRUNC | O_NOCTTY | O_CLOEXEC,
			  0666);
		if (fd < 0)
			return ctl_error(e->c, "cannot open %s: %s", path,
					 strerror(errno));
	}
	e->out = fdopen(fd, "w");
	if (!e->out) {
		close(fd);
		if (*tmp)
			unlink(*tmp);
		free(*tmp);
		*tmp = NULL;
		return ctl_error(e->c, "cannot open %s: %s", path,
				 strerror(errno));
	}
	return 0;
}

/* Flush and close the output; on success put a -o file in place. */
static int
export_close(Export *e, const char *path, char *tmp, int r)
{
	if (fflush(e->out) != 0 && !r)
		r = ctl_error(e->c, "cannot write to %s: %s", e->out_name,
			      strerror(errno));
	if (!path)
		return r;
	/* fsync fails with EINVAL on a FIFO or a device: nothing to sync. */
	if (!r && fsync(fileno(e->out)) < 0 && errno != EINVAL)
		r = ctl_error(e->c, "cannot write to %s: %s", path,
			      strerror(errno));
	if (fclose(e->out) != 0 && !r)
		r = ctl_error(e->c, "cannot write to %s: %s", path,
			      strerror(errno));
	e->out = NULL;
	if (!tmp)
		return r;
	if (!r && rename(tmp, path) < 0)
		r = ctl_error(e->c, "cannot rename %s to %s: %s", tmp, path,
			      strerror(errno));
	if (r)
		unlink(tmp);
	free(tmp);
	return r;
}

int
cmd_export(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"dead", no_argument, NULL, 'd'},
		{"output", required_argument, NULL, 'o'},
		CTL_COMMON_OPTIONS,
		{0},
	};
	Export e = {.c = c, .out = stdout, .out_name = "standard output"};
	const char *path = NULL;
	char *tmp = NULL;
	int opt, r;

	while ((opt = getopt_long(argc, argv, ":S:ho:", opts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			e.dead = true;
			break;
		case 'o':
			path = strcmp(optarg, "-") == 0 ? NULL : optarg;
			break;
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(export_help, stdout);
			return CTL_EXIT_OK;
		default:
			return ctl_bad_option(c, opt, argv);
		}
	}
	if ((r = ctl_take_mailbox(c, argc, argv, "MAILBOX")) >= 0 ||
	    (r = ctl_no_more(c, argc, argv)) >= 0)
		return r;

	r = ctl_connect(c);
	if (r)
		return r;
	if (path) {
		r = export_open(&e, path, &tmp);
		if (r)
			return r;
		e.out_name = path;
	}
	progress_init(&e.pg, "exported");
	/* Exporting to the terminal itself: a progress line would land in
	 * the middle of the exported lines. */
	if (!path && isatty(STDOUT_FILENO) == 1)
		e.pg.on = false;
	r = export_run(&e);
	progress_end(&e.pg);
	r = export_close(&e, path, tmp, r);
	free(e.seen.slot);
	return r;
}

/* ------------------------------------------------------------------ */
/* A JSON reader: just what an export line needs */

typedef struct Jp {
	const char *p, *end;
	char why[160]; /* what is wrong, when a call failed */
} Jp;

static int jp_fail(Jp *j, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int
jp_fail(Jp *j, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->why, sizeof(j->why), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static void
jp_ws(Jp *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' ||
				 *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

/* Skip whitespace and take ch, or fail. */
static int
jp_expect(Jp *j, char ch, const char *where)
{
	jp_ws(j);
	if (j->p < j->end && *j->p == ch) {
		j->p++;
		return 0;
	}
	if (j->p >= j->end)
		return jp_fail(j, "line ends where '%c' should be %s", ch,
			       where);
	return jp_fail(j, "'%c' expected %s, found '%c'", ch, where, *j->p);
}

/* Is the next non-blank character ch? Takes it if so. */
static bool
jp_take(Jp *j, char ch)
{
	jp_ws(j);
	if (j->p < j->end && *j->p == ch) {
		j->p++;
		return true;
	}
	return false;
}

static int
jp_hex4(Jp *j, uint32_t *v)
{
	int i;

	*v = 0;
	if (j->end - j->p < 4)
		return jp_fail(j, "short \\u escape");
	for (i = 0; i < 4; i++) {
		char ch = *j->p++;

		*v <<= 4;
		if (ch >= '0' && ch <= '9')
			*v |= (uint32_t)(ch - '0');
		else if (ch >= 'a' && ch <= 'f')
			*v |= (uint32_t)(ch - 'a' + 10);
		else if (ch >= 'A' && ch <= 'F')
			*v |= (uint32_t)(ch - 'A' + 10);
		else
			return jp_fail(j, "bad \\u escape");
	}
	return 0;
}

static size_t
utf8_put(uint8_t *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (uint8_t)(0xc0 | cp >> 6);
		o[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (uint8_t)(0xe0 | cp >> 12);
		o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (uint8_t)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (uint8_t)(0xf0 | cp >> 18);
	o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (uint8_t)(0x80 | (cp & 0x3f));
	return 4;
}

/* A \uXXXX escape (after the 'u'), with its low surrogate if any. */
static int
jp_unicode(Jp *j, uint8_t *o, size_t *n)
{
	uint32_t cp, lo;

	if (jp_hex4(j, &cp) < 0)
		return -EINVAL;
	if (cp >= 0xdc00 && cp <= 0xdfff)
		return jp_fail(j, "lone low surrogate \\u%04x", cp);
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
			return jp_fail(j, "high surrogate without its pair");
		j->p += 2;
		if (jp_hex4(j, &lo) < 0)
			return -EINVAL;
		if (lo < 0xdc00 || lo > 0xdfff)
			return jp_fail(j, "bad surrogate pair");
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	}
	*n = utf8_put(o, cp);
	return 0;
}

/*
 * A string: *out is its decoded bytes (malloc'd, NUL-terminated beyond
 * *len; may hold NUL itself from \u0000). Decoding never makes it longer
 * than its text, so one allocation of that size is enough.
 */
static int
jp_string(Jp *j, char **out, size_t *len)
{
	uint8_t *buf, *o;
	size_t k = 0;

	if (jp_expect(j, '"', "to start a string") < 0)
		return -EINVAL;
	buf = malloc((size_t)(j->end - j->p) + 1);
	if (!buf)
		return jp_fail(j, "out of memory");
	o = buf;
	for (;;) {
		unsigned char ch;

		if (j->p >= j->end) {
			free(buf);
			return jp_fail(j, "unterminated string");
		}
		ch = (unsigned char)*j->p++;
		if (ch == '"')
			break;
		if (ch < 0x20) {
			free(buf);
			return jp_fail(j,
				       "raw control character 0x%02x in a "
				       "string",
				       ch);
		}
		if (ch != '\\') {
			*o++ = ch;
			continue;
		}
		if (j->p >= j->end) {
			free(buf);
			return jp_fail(j, "unterminated string");
		}
		ch = (unsigned char)*j->p++;
		switch (ch) {
		case '"':
		case '\\':
		case '/':
			*o++ = ch;
			break;
		case 'b':
			*o++ = '\b';
			break;
		case 'f':
			*o++ = '\f';
			break;
		case 'n':
			*o++ = '\n';
			break;
		case 'r':
			*o++ = '\r';
			break;
		case 't':
			*o++ = '\t';
			break;
		case 'u':
			if (jp_unicode(j, o, &k) < 0) {
				free(buf);
				return -EINVAL;
			}
			o += k;
			break;
		default:
			free(buf);
			return jp_fail(j, "bad escape '\\%c' in a string", ch);
		}
	}
	*o = '\0';
	*len = (size_t)(o - buf);
	/* Sized for the rest of the line: a line's many header strings
	 * before a large "data" must not each keep that much. */
	o = realloc(buf, *len + 1);
	*out = (char *)(o ? o : buf);
	return 0;
}

/* A non-negative integer (no sign, fraction or exponent) up to max. */
static int
jp_uint(Jp *j, const char *name, uint64_t max, uint64_t *v)
{
	const char *start;
	uint64_t x = 0;

	jp_ws(j);
	start = j->p;
	while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
		unsigned d = (unsigned)(*j->p++ - '0');

		if (x > (UINT64_MAX - d) / 10)
			return jp_fail(j, "\"%s\": number too large", name);
		x = x * 10 + d;
	}
	if (j->p == start || (j->p < j->end && strchr(".eE", *j->p) && *j->p))
		return jp_fail(j, "\"%s\": a non-negative integer expected",
			       name);
	if (x > max)
		return jp_fail(j,
			       "\"%s\": %" PRIu64 " is out of range (0-%" PRIu64
			       ")",
			       name, x, max);
	*v = x;
	return 0;
}

/* jp_uint into an int64_t, up to INT64_MAX. */
static int
jp_int(Jp *j, const char *name, int64_t *v)
{
	uint64_t x;

	if (jp_uint(j, name, INT64_MAX, &x) < 0)
		return -EINVAL;
	*v = (int64_t)x;
	return 0;
}

/* Skip any value (fields import does not use), nested up to depth. */
static int
jp_skip(Jp *j, int depth)
{
	char *s;
	size_t n;

	if (depth > 32)
		return jp_fail(j, "nested too deep");
	jp_ws(j);
	if (j->p >= j->end)
		return jp_fail(j, "value expected");
	if (*j->p == '"') {
		if (jp_string(j, &s, &n) < 0)
			return -EINVAL;
		free(s);
		return 0;
	}
	if (*j->p == '{' || *j->p == '[') {
		char close = *j->p == '{' ? '}' : ']';
		bool obj = close == '}';

		j->p++;
		if (jp_take(j, close))
			return 0;
		do {
			if (obj && (jp_skip(j, depth + 1) < 0 ||
				    jp_expect(j, ':', "after a key") < 0))
				return -EINVAL;
			if (jp_skip(j, depth + 1) < 0)
				return -EINVAL;
		} while (jp_take(j, ','));
		return jp_expect(j, close, "to close a value");
	}
	{
		const char *start = j->p;

		while (j->p < j->end && *j->p &&
		       strchr("-+.0123456789eEtruefalsn", *j->p))
			j->p++;
		if (j->p == start)
			return jp_fail(j, "value expected, found '%c'", *j->p);
	}
	return 0;
}

static int
b64_val(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

/* Decode standard base64 (padding optional) in place; *len in and out. */
static int
b64_decode(Jp *j, uint8_t *s, size_t *len)
{
	size_t n = *len, i, o = 0;
	uint32_t acc = 0;
	int bits = 0;

	while (n && s[n - 1] == '=' && *len - n < 2)
		n--;
	for (i = 0; i < n; i++) {
		int v = b64_val(s[i]);

		if (v < 0)
			return jp_fail(j,
				       "\"data_base64\": bad character "
				       "at offset %zu",
				       i);
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			s[o++] = (uint8_t)(acc >> bits);
		}
	}
	if (bits >= 6 || (acc & ((1u << bits) - 1)))
		return jp_fail(j, "\"data_base64\": bad length or padding");
	*len = o;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Import */

/* One line, parsed: what is posted, and the metadata kept. */
typedef struct ImportMsg {
	char *data; /* payload, malloc'd */
	size_t len;
	unsigned priority;
	int64_t expires_ns; /* 0 = no ttl */
	const char **hv;    /* {key, value, ..., NULL}, malloc'd strings */
	size_t n_headers;
	size_t header_bytes;
	bool has_data;
	/* Metadata; has_* when the line held it. */
	bool has_id, has_time, has_pid, has_uid, has_gid;
	uint64_t id;
	int64_t time_ns, pid, uid, gid;
	char *comm, *dead_reason;
	mbox_post_opts opts;
} ImportMsg;

static void
import_msg_clear(ImportMsg *m)
{
	size_t i;

	free(m->data);
	for (i = 0; m->hv && i < 2 * m->n_headers; i++)
		free((char *)m->hv[i]);
	free(m->hv);
	free(m->comm);
	free(m->dead_reason);
	*m = (ImportMsg){0};
}

/* Append header key=value (taking both strings, even on failure). */
static int
import_header_take(Jp *j, ImportMsg *m, char *k, char *v)
{
	const char **hv;
	size_t i;

	for (i = 0; i < m->n_headers; i++)
		if (strcmp(m->hv[2 * i], k) == 0) {
			jp_fail(j, "header \"%.60s\" given twice", k);
			goto fail;
		}
	hv = realloc(m->hv, (2 * m->n_headers + 3) * sizeof(*hv));
	if (!hv) {
		jp_fail(j, "out of memory");
		goto fail;
	}
	m->hv = hv;
	hv[2 * m->n_headers] = k;
	hv[2 * m->n_headers + 1] = v;
	hv[2 * m->n_headers + 2] = NULL;
	m->n_headers++;
	m->header_bytes += strlen(k) + strlen(v);
	return 0;
fail:
	free(k);
	free(v);
	return -EINVAL;
}

static int
import_headers(Jp *j, ImportMsg *m)
{
	char *k, *v;
	size_t kl, vl;

	if (jp_expect(j, '{', "for \"headers\"") < 0)
		return -EINVAL;
	if (jp_take(j, '}'))
		return 0;
	do {
		if (jp_string(j, &k, &kl) < 0)
			return -EINVAL;
		if (jp_expect(j, ':', "after a header key") < 0 ||
		    jp_string(j, &v, &vl) < 0) {
			char why[sizeof(j->why)];

			snprintf(why, sizeof(why), "%s", j->why);
			jp_fail(j, "header \"%.60s\": %s", k, why);
			free(k);
			return -EINVAL;
		}
		if (kl == 0 || kl > MBOX_NAME_MAX ||
		    !ctl_utf8_valid((uint8_t *)k, kl) ||
		    !ctl_utf8_valid((uint8_t *)v, vl)) {
			jp_fail(j,
				"header \"%.60s\": key must be 1-200 bytes, "
				"key and value UTF-8 without NUL",
				k);
			free(k);
			free(v);
			return -EINVAL;
		}
		if (import_header_take(j, m, k, v) < 0)
			return -EINVAL;
	} while (jp_take(j, ','));
	return jp_expect(j, '}', "to close \"headers\"");
}

static int
import_sender(Jp *j, ImportMsg *m)
{
	char *key;
	size_t kl;
	int r;

	if (jp_expect(j, '{', "for \"sender\"") < 0)
		return -EINVAL;
	if (jp_take(j, '}'))
		return 0;
	do {
		if (jp_string(j, &key, &kl) < 0)
			return -EINVAL;
		r = jp_expect(j, ':', "after a key");
		if (r == 0 && strcmp(key, "pid") == 0) {
			r = jp_int(j, "pid", &m->pid);
			m->has_pid = true;
		} else if (r == 0 && strcmp(key, "uid") == 0) {
			r = jp_int(j, "uid", &m->uid);
			m->has_uid = true;
		} else if (r == 0 && strcmp(key, "gid") == 0) {
			r = jp_int(j, "gid", &m->gid);
			m->has_gid = true;
		} else if (r == 0 && strcmp(key, "comm") == 0 && !m->comm) {
			r = jp_string(j, &m->comm, &kl);
			if (r == 0 && !ctl_utf8_valid((uint8_t *)m->comm, kl))
				r = jp_fail(j, "\"comm\" is not UTF-8");
		} else if (r == 0) {
			r = jp_skip(j, 1);
		}
		free(key);
		if (r < 0)
			return r;
	} while (jp_take(j, ','));
	return jp_expect(j, '}', "to close \"sender\"");
}

static int
import_data(Jp *j, ImportMsg *m, bool base64)
{
	if (m->has_data)
		return jp_fail(j, "both \"data\" and \"data_base64\", or one "
				  "twice");
	if (jp_string(j, &m->data, &m->len) < 0)
		return -EINVAL;
	m->has_data = true;
	if (base64)
		return b64_decode(j, (uint8_t *)m->data, &m->len);
	return 0;
}

/* One "key": value of a message object. */
static int
import_field(Jp *j, ImportMsg *m, const char *key)
{
	uint64_t v;
	size_t n;

	if (strcmp(key, "data") == 0)
		return import_data(j, m, false);
	if (strcmp(key, "data_base64") == 0)
		return import_data(j, m, true);
	if (strcmp(key, "priority") == 0) {
		if (jp_uint(j, "priority", MBOX_PRIORITY_MAX, &v) < 0)
			return -EINVAL;
		m->priority = (unsigned)v;
		return 0;
	}
	if (strcmp(key, "headers") == 0 && !m->hv)
		return import_headers(j, m);
	if (strcmp(key, "expires_ns") == 0)
		return jp_int(j, "expires_ns", &m->expires_ns);
	if (strcmp(key, "id") == 0) {
		m->has_id = true;
		return jp_uint(j, "id", UINT64_MAX, &m->id);
	}
	if (strcmp(key, "time_ns") == 0) {
		m->has_time = true;
		return jp_int(j, "time_ns", &m->time_ns);
	}
	if (strcmp(key, "sender") == 0)
		return import_sender(j, m);
	if (strcmp(key, "dead_reason") == 0 && !m->dead_reason) {
		if (jp_string(j, &m->dead_reason, &n) < 0)
			return -EINVAL;
		if (!ctl_utf8_valid((uint8_t *)m->dead_reason, n))
			return jp_fail(j, "\"dead_reason\" is not UTF-8");
		return 0;
	}
	/* Anything else (deliveries, mailbox, deadline_ns, later
	 * additions) is not posted. */
	return jp_skip(j, 1);
}

static int
import_parse(Jp *j, ImportMsg *m)
{
	char *key;
	size_t kl;
	int r;

	if (jp_expect(j, '{', "at the start of the line") < 0)
		return -EINVAL;
	if (!jp_take(j, '}')) {
		do {
			if (jp_string(j, &key, &kl) < 0)
				return -EINVAL;
			r = jp_expect(j, ':', "after a key");
			if (r == 0)
				r = import_field(j, m, key);
			free(key);
			if (r < 0)
				return r;
		} while (jp_take(j, ','));
		if (jp_expect(j, '}', "to close the object") < 0)
			return -EINVAL;
	}
	jp_ws(j);
	if (j->p != j->end)
		return jp_fail(j, "more after the object");
	if (!m->has_data)
		return jp_fail(j, "no \"data\" or \"data_base64\"");
	return 0;
}

/* Remove the headers of an earlier import's metadata. */
static void
import_drop_meta(ImportMsg *m)
{
	size_t i, o = 0;

	for (i = 0; i < m->n_headers; i++) {
		const char *k = m->hv[2 * i], *v = m->hv[2 * i + 1];

		if (strncmp(k, META_PREFIX, strlen(META_PREFIX)) == 0) {
			m->header_bytes -= strlen(k) + strlen(v);
			free((char *)k);
			free((char *)v);
			continue;
		}
		m->hv[2 * o] = k;
		m->hv[2 * o + 1] = v;
		o++;
	}
	m->n_headers = o;
	if (m->hv)
		m->hv[2 * o] = NULL;
}

static int
import_meta_add(Jp *j, ImportMsg *m, const char *name, const char *value)
{
	size_t n = strlen(META_PREFIX) + strlen(name) + 1;
	char *k = malloc(n), *v = strdup(value);

	if (!k || !v) {
		free(k);
		free(v);
		return jp_fail(j, "out of memory");
	}
	snprintf(k, n, "%s%s", META_PREFIX, name);
	return import_header_take(j, m, k, v);
}

/* The x-mbox-from-* headers: what the broker will not keep for us. */
static int
import_meta(Jp *j, ImportMsg *m)
{
	char num[32];
	int r = 0;

	import_drop_meta(m);
	if (m->has_id) {
		snprintf(num, sizeof(num), "%" PRIu64, m->id);
		r = import_meta_add(j, m, "id", num);
	}
	if (!r && m->has_time) {
		snprintf(num, sizeof(num), "%" PRId64, m->time_ns);
		r = import_meta_add(j, m, "time", num);
	}
	if (!r && m->has_pid) {
		snprintf(num, sizeof(num), "%" PRId64, m->pid);
		r = import_meta_add(j, m, "pid", num);
	}
	if (!r && m->has_uid) {
		snprintf(num, sizeof(num), "%" PRId64, m->uid);
		r = import_meta_add(j, m, "uid", num);
	}
	if (!r && m->has_gid) {
		snprintf(num, sizeof(num), "%" PRId64, m->gid);
		r = import_meta_add(j, m, "gid", num);
	}
	if (!r && m->comm)
		r = import_meta_add(j, m, "comm", m->comm);
	if (!r && m->dead_reason)
		r = import_meta_add(j, m, "dead-reason", m->dead_reason);
	return r;
}

/* Limits the broker would refuse the whole batch for: say which line. */
static int
import_check(Jp *j, ImportMsg *m, size_t max_size, bool meta)
{
	const char *hint = meta ? " (with the x-mbox-from-* headers; try "
				  "--no-meta)"
				: "";

	if (m->len > max_size)
		return jp_fail(j,
			       "payload of %zu bytes is over the broker's "
			       "limit of %zu",
			       m->len, max_size);
	if (m->n_headers > HEADERS_COUNT_MAX)
		return jp_fail(j, "%zu headers, the broker takes at most %u%s",
			       m->n_headers, HEADERS_COUNT_MAX, hint);
	if (m->header_bytes > MBOX_HEADERS_MAX)
		return jp_fail(j,
			       "headers of %zu bytes, the broker takes at "
			       "most %u%s",
			       m->header_bytes, MBOX_HEADERS_MAX, hint);
	return 0;
}

/* The post options: the ttl left now, the priority, the headers. */
static void
import_opts(ImportMsg *m, int64_t now_ns)
{
	m->opts = (mbox_post_opts){.priority = m->priority, .headers = m->hv};
	if (m->expires_ns) {
		int64_t left = m->expires_ns - now_ns;
		uint64_t ms =
			left <= 0 ? 1 : ((uint64_t)left + 999999) / 1000000;

		m->opts.ttl_ms = ms > TTL_MAX_MS ? TTL_MAX_MS : ms;
	}
}

typedef struct Import {
	Ctl *c;
	FILE *in;
	const char *in_name; /* for messages: the file, or "stdin" */
	bool meta;
	Progress pg;
	ImportMsg *batch; /* IMPORT_BATCH */
	mbox_post_item *items;
	size_t n;
	size_t bytes;	/* estimated size of the batch's POST */
	size_t budget;	/* most bytes a batch may take */
	uint64_t line;	/* lines read */
	uint64_t first; /* line of batch[0] */
	uint64_t last;	/* line of batch[n - 1] */
	uint64_t done;	/* messages imported */
} Import;

static int
import_flush(Import *im)
{
	uint64_t last = im->last;
	size_t i, bytes = 0;
	int r;

	if (im->n == 0)
		return 0;
	for (i = 0; i < im->n; i++) {
		im->items[i] = (mbox_post_item){.data = im->batch[i].data,
						.len = im->batch[i].len,
						.opts = &im->batch[i].opts};
		bytes += im->batch[i].len;
	}
	r = mbox_post_batch(im->c->m, im->c->target, im->items, im->n, NULL);
	if (r < 0) {
		char what[200];

		progress_end(&im->pg);
		snprintf(what, sizeof(what),
			 "%s: lines %" PRIu64 "-%" PRIu64
			 " not imported (%" PRIu64
			 " messages imported before them)",
			 im->in_name, im->first, last, im->done);
		r = ctl_fail(im->c, r, what);
		/* The broker's INVALID is about the file's lines here, not
		 * about an argument: an error, not a usage error. */
		return r == CTL_EXIT_USAGE ? CTL_EXIT_ERROR : r;
	}
	im->done += im->n;
	progress_add(&im->pg, im->n, bytes);
	for (i = 0; i < im->n; i++)
		import_msg_clear(&im->batch[i]);
	im->n = 0;
	im->bytes = 0;
	return 0;
}

/* Report a bad line once the lines before it are in. */
static int
import_bad_line(Import *im, const char *why)
{
	int r = import_flush(im);

	if (r)
		return r;
	progress_end(&im->pg);
	fprintf(stderr,
		"mboxctl: import %s: %s:%" PRIu64 ": %s\n"
		"mboxctl: %" PRIu64 " messages imported (the lines before "
		"%" PRIu64 "), nothing from this line on\n",
		im->c->target, im->in_name, im->line, why, im->done, im->line);
	return CTL_EXIT_ERROR;
}

/* Parse one non-empty line into the batch, posting it first if full. */
static int
import_line(Import *im, const char *s, size_t n)
{
	Jp j = {.p = s, .end = s + n};
	ImportMsg *m;
	size_t cost;
	int r;

	if (im->n == IMPORT_BATCH && (r = import_flush(im)))
		return r;
	m = &im->batch[im->n];
	r = import_parse(&j, m);
	if (r == 0 && im->meta)
		r = import_meta(&j, m);
	if (r == 0)
		r = import_check(&j, m, mbox_max_msg_size(im->c->m), im->meta);
	if (r < 0) {
		import_msg_clear(m);
		return import_bad_line(im, j.why);
	}
	import_opts(m, ctl_realtime_ns());
	cost = m->len + m->header_bytes + 24 * m->n_headers +
	       IMPORT_MSG_OVERHEAD;
	if (im->n && im->bytes + cost > im->budget) {
		ImportMsg keep = *m;

		/* Post the others first; this one opens the next batch. */
		*m = (ImportMsg){0};
		r = import_flush(im);
		im->batch[0] = keep;
		if (r) {
			import_msg_clear(&im->batch[0]);
			return r;
		}
		m = &im->batch[0];
	}
	if (im->n == 0)
		im->first = im->line;
	im->last = im->line;
	im->n++;
	im->bytes += cost;
	return 0;
}

static int
import_run(Import *im)
{
	char *buf = NULL;
	size_t cap = 0;
	ssize_t n;
	int r = 0;

	while ((n = getline(&buf, &cap, im->in)) >= 0) {
		size_t len = (size_t)n;

		im->line++;
		while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
			len--;
		if (len == 0)
			continue;
		r = import_line(im, buf, len);
		if (r)
			break;
	}
	free(buf);
	if (!r && ferror(im->in))
		r = ctl_error(im->c, "cannot read %s: %s", im->in_name,
			      strerror(errno));
	if (!r)
		r = import_flush(im);
	return r;
}

int
cmd_import(Ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"input", required_argument, NULL, 'i'},
		{"no-meta", no_argument, NULL, 'M'},
		CTL_COMMON_OPTIONS,
		{0},
	};
	Import im = {.c = c, .in = stdin, .in_name = "stdin", .meta = true};
	const char *path = NULL;
	size_t i;
	int opt, r;

	ctl_ignore_sigpipe();
	while ((opt = getopt_long(argc, argv, ":S:hi:", opts, NULL)) != -1) {
		switch (opt) {
		case 'i':
			path = strcmp(optarg, "-") == 0 ? NULL : optarg;
			break;
		case 'M':
			im.meta = false;
			break;
		case 'S':
			c->socket = optarg;
			break;
		case 'h':
			fputs(import_help, stdout);
			return CTL_EXIT_OK;
		default:
			return ctl_bad_option(c, opt, argv);
		}
	}
	if ((r = ctl_take_mailbox(c, argc, argv, "MAILBOX")) >= 0 ||
	    (r = ctl_no_more(c, argc, argv)) >= 0)
		return r;
	if (path) {
		im.in = fopen(path, "re");
		if (!im.in)
			return ctl_error(c, "cannot open %s: %s", path,
					 strerror(errno));
		im.in_name = path;
	} else if ((r = ctl_need_stdin(c)) != 0) {
		return r;
	}
	r = ctl_connect(c);
	if (r)
		goto out;
	im.batch = calloc(IMPORT_BATCH, sizeof(*im.batch));
	im.items = calloc(IMPORT_BATCH, sizeof(*im.items));
	if (!im.batch || !im.items) {
		r = ctl_error(c, "out of memory");
		goto out;
	}
	/* One POST stays within the frame the broker takes
	 * (2 * max_msg_size + slack): a payload of max_msg_size alone
	 * still fits. */
	im.budget = mbox_max_msg_size(c->m);
	progress_init(&im.pg, "imported");
	r = import_run(&im);
	progress_end(&im.pg);
out:
	for (i = 0; im.batch && i < IMPORT_BATCH; i++)
		import_msg_clear(&im.batch[i]);
	free(im.batch);
	free(im.items);
	if (path && im.in)
		fclose(im.in);
	return r;
}
