/*
 * driver-util.h - what the integration test drivers share: status lines a
 * test can follow while the driver runs, a monotonic clock, sleeping,
 * connecting with a message that says why not, and taking a batch of
 * messages to hold.
 */
#ifndef TESTS_INTEGRATION_DRIVER_UTIL_H
#define TESTS_INTEGRATION_DRIVER_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "mbox.h"

/* The most one RECV may ask for (doc/protocol.md, RECV). */
#define DRIVER_RECV_MAX 1024u

/*
 * Print one line on stdout and flush it at once: the tests wait for these
 * lines while the driver is still running.
 */
void driver_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Milliseconds of CLOCK_MONOTONIC, for deadlines and elapsed times. */
int64_t driver_now_ms(void);

/* Sleep ms milliseconds, across signals; nothing when ms <= 0. */
void driver_sleep_ms(int64_t ms);

/*
 * mbox_connect to sock (NULL: the library's default); on failure print
 * "PROG: connect SOCK: REASON" on stderr. Returns mbox_connect's result,
 * so each driver picks its own exit status.
 */
int driver_connect(mbox **m, const char *prog, const char *sock);

/*
 * Receive up to want (at most DRIVER_RECV_MAX) messages of mailbox, leased
 * for lease_ms (0: the mailbox's lease), waiting at most wait_ms in all.
 * Each id is printed on its own line (flushed) as it comes and stored in
 * ids[] unless ids is NULL; the messages are freed, which does not ack
 * them. *got says how many came, also on failure. Returns 0, or
 * mbox_recv's negative errno.
 */
int driver_recv_ids(mbox *m, const char *mailbox, size_t want, int64_t wait_ms,
		    uint64_t lease_ms, uint64_t *ids, size_t *got);

#endif
