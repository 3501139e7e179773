/*
 * hello-mbox.c - the smallest libmbox program: post a message, take it
 * back, print it, acknowledge it.
 *
 * Build against an installed libmbox:
 *     cc hello-mbox.c $(pkg-config --cflags --libs libmbox) -o hello-mbox
 * Run with a broker listening on the default socket (or set MBOX_SOCKET).
 */
#include <stdio.h>
#include <string.h>

#include <mbox.h>

int
main(int argc, char **argv)
{
	const char *mailbox = argc > 1 ? argv[1] : "hello";
	const char *text = "hello, mailbox";
	mbox *m = NULL;
	mbox_msg *msg = NULL;
	size_t n = 0, len;
	uint64_t id;
	int r;

	r = mbox_connect(&m, NULL);
	if (r < 0) {
		fprintf(stderr, "connect: %s\n", mbox_strerror(r));
		return 1;
	}
	r = mbox_post(m, mailbox, text, strlen(text), NULL, &id);
	if (r < 0)
		goto fail;
	printf("posted message %llu\n", (unsigned long long)id);
	/* Wait up to 5 s for one message, with the mailbox's lease. */
	r = mbox_recv(m, mailbox, 1, 5000, 0, &msg, &n);
	if (r < 0)
		goto fail;
	if (n == 1) {
		const char *data = mbox_msg_data(msg, &len);
		uint64_t got = mbox_msg_id(msg);
		printf("received %llu from pid %d (%s): %.*s\n",
		       (unsigned long long)got, (int)mbox_msg_sender_pid(msg),
		       mbox_msg_sender_name(msg), (int)len, data);
		r = mbox_ack(m, &got, 1);
		mbox_msg_free(msg);
		if (r < 0)
			goto fail;
	}
	mbox_close(m);
	return 0;
fail:
	fprintf(stderr, "%s: %s\n", mbox_strerror(r), mbox_last_error(m));
	mbox_close(m);
	return 1;
}
