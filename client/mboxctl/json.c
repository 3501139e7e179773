/*
 * json.c - JSON output for mboxctl (see json.h).
 *
 * Every object is written compact and on one line, so a stream of them
 * is JSON Lines that `jq -c`, `while read` and line-based tools consume.
 */
#include "config.h"

#include <inttypes.h>
#include <string.h>

#include "client/mboxctl/json.h"
#include "client/mboxctl/util.h"

void
json_string(FILE *f, const char *s, size_t n)
{
	size_t i;

	putc('"', f);
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\') {
			putc('\\', f);
			putc(ch, f);
		} else if (ch < 0x20 || ch == 0x7f) {
			fprintf(f, "\\u%04x", ch);
		} else {
			putc(ch, f);
		}
	}
	putc('"', f);
}

void
json_cstring(FILE *f, const char *s)
{
	json_string(f, s ? s : "", s ? strlen(s) : 0);
}

void
json_base64(FILE *f, const uint8_t *p, size_t n)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				  "abcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;

	putc('"', f);
	for (i = 0; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 |
			     p[i + 2];

		putc(b64[v >> 18], f);
		putc(b64[(v >> 12) & 63], f);
		putc(b64[(v >> 6) & 63], f);
		putc(b64[v & 63], f);
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;

		putc(b64[v >> 18], f);
		putc(b64[(v >> 12) & 63], f);
		fputs("==", f);
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;

		putc(b64[v >> 18], f);
		putc(b64[(v >> 12) & 63], f);
		putc(b64[(v >> 6) & 63], f);
		putc('=', f);
	}
	putc('"', f);
}

void
json_msg_origin(FILE *f, const mbox_msg *msg)
{
	const char *reason = mbox_msg_dead_reason(msg);

	if (reason) {
		fputs(",\"dead_reason\":", f);
		json_cstring(f, reason);
	}
	fprintf(f, ",\"sender\":{\"pid\":%ld,\"uid\":%lu,\"gid\":%lu,\"comm\":",
		(long)mbox_msg_sender_pid(msg),
		(unsigned long)mbox_msg_sender_uid(msg),
		(unsigned long)mbox_msg_sender_gid(msg));
	json_cstring(f, mbox_msg_sender_name(msg));
	putc('}', f);
}

void
json_msg_content(FILE *f, const mbox_msg *msg)
{
	const uint8_t *data;
	size_t len, i, nh;

	/* Always there, so that scripts can index it without a test. */
	fputs(",\"headers\":{", f);
	nh = mbox_msg_header_count(msg);
	for (i = 0; i < nh; i++) {
		const char *k, *v;

		if (mbox_msg_header_at(msg, i, &k, &v) < 0)
			break;
		if (i)
			putc(',', f);
		json_cstring(f, k);
		putc(':', f);
		json_cstring(f, v);
	}
	putc('}', f);

	data = mbox_msg_data(msg, &len);
	if (ctl_utf8_valid(data, len)) {
		fputs(",\"data\":", f);
		json_string(f, (const char *)data, len);
	} else {
		fputs(",\"data_base64\":", f);
		json_base64(f, data, len);
	}
}

void
json_msg(FILE *f, const mbox_msg *msg)
{
	fprintf(f, "{\"id\":%" PRIu64 ",\"mailbox\":", mbox_msg_id(msg));
	json_cstring(f, mbox_msg_mailbox(msg));
	fprintf(f, ",\"priority\":%u,\"deliveries\":%" PRIu32,
		mbox_msg_priority(msg), mbox_msg_deliveries(msg));
	json_msg_origin(f, msg);
	fprintf(f, ",\"time_ns\":%" PRId64, mbox_msg_time_ns(msg));
	if (mbox_msg_expires_ns(msg))
		fprintf(f, ",\"expires_ns\":%" PRId64,
			mbox_msg_expires_ns(msg));
	if (mbox_msg_deadline_ns(msg))
		fprintf(f, ",\"deadline_ns\":%" PRId64,
			mbox_msg_deadline_ns(msg));
	json_msg_content(f, msg);
	fputs("}\n", f);
}
