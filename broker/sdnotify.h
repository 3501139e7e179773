/*
 * sdnotify.h - the systemd protocols mboxd speaks, implemented here.
 *
 * DECISION: mboxd implements the systemd protocols itself and never links
 * libsystemd. They are small, documented as stable interfaces
 * (sd_notify(3), sd_listen_fds(3), sd_watchdog_enabled(3)) and consist of
 * environment variables plus one datagram:
 *
 *   - notify: a datagram of "KEY=VALUE\n..." sent to the AF_UNIX socket in
 *     $NOTIFY_SOCKET (a path, or an abstract name written with a leading
 *     '@');
 *   - socket activation: $LISTEN_PID (must be our pid), $LISTEN_FDS (how
 *     many fds, starting at 3) and $LISTEN_FDNAMES (':'-separated names);
 *   - watchdog: $WATCHDOG_USEC (the interval) and $WATCHDOG_PID (if set,
 *     must be our pid).
 *
 * So socket activation, Type=notify and the watchdog work on every build,
 * with or without libsystemd installed, and outside systemd they are
 * no-ops. The configure switch --with-systemd=auto|yes|no only decides
 * whether the unit files in contrib/systemd/ are installed.
 *
 * Nothing here keeps state: every call reads the environment afresh, so
 * there is no global to initialise and nothing to free.
 */
#ifndef MBOX_BROKER_SDNOTIFY_H
#define MBOX_BROKER_SDNOTIFY_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* The first fd systemd passes (SD_LISTEN_FDS_START). */
#define SDNOTIFY_LISTEN_FDS_START 3

/*
 * sdnotify_send - send state (e.g. "READY=1", "STATUS=...", "STOPPING=1",
 * "WATCHDOG=1"; several may be joined with '\n') to $NOTIFY_SOCKET.
 *
 * Returns 0 when sent or when NOTIFY_SOCKET is unset or empty (not started
 * by systemd: nothing to do), -EINVAL when NOTIFY_SOCKET is neither an
 * absolute path nor an '@' abstract name or is too long, -EAFNOSUPPORT for
 * other address families (vsock), or the -errno of socket/sendto. Never
 * raises SIGPIPE; never blocks (the datagram is sent non-blocking: a full
 * queue at the manager gives -EAGAIN rather than stalling the loop).
 */
int sdnotify_send(const char *state);

/* sdnotify_sendf - sdnotify_send of a formatted state (at most 1 KiB). */
int sdnotify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * sdnotify_send_to - as sdnotify_send, to the socket addr written as
 * NOTIFY_SOCKET would be ("/path" or "@abstract"). addr NULL or "" is a
 * no-op returning 0.
 */
int sdnotify_send_to(const char *addr, const char *state);

/*
 * sdnotify_listen_fds - the sockets systemd passed at fd 3 onwards.
 *
 * Returns their count n >= 0: 0 when LISTEN_PID or LISTEN_FDS is unset or
 * LISTEN_PID is another process's pid (the variables were inherited, not
 * meant for us); -EINVAL when a variable is malformed. Fds 3..3+n-1 get
 * FD_CLOEXEC. LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are always removed
 * from the environment, so children never take them for theirs.
 *
 * namesp, if not NULL, receives a malloc'd NULL-terminated array of n
 * malloc'd names from LISTEN_FDNAMES ("unknown" where none was given), to
 * be freed with sdnotify_names_free; *namesp is NULL when n is 0 or < 0.
 * Returns -ENOMEM when it cannot be built.
 */
int sdnotify_listen_fds(char ***namesp);

/* sdnotify_names_free - free what sdnotify_listen_fds gave; NULL is fine. */
void sdnotify_names_free(char **names);

/*
 * sdnotify_check_listener - whether fd is an AF_UNIX SOCK_SEQPACKET socket
 * in the listening state (what mboxd serves on).
 *
 * Returns 0 if so; otherwise -ENOTSOCK, -EAFNOSUPPORT, -ESOCKTNOSUPPORT or
 * -EINVAL (not listening), or the -errno of getsockopt, with a sentence for
 * the operator in why (e.g. "fd 3 is a stream socket, not a seqpacket one:
 * use ListenSequentialPacket= in the .socket unit").
 */
int sdnotify_check_listener(int fd, char *why, size_t whylen);

/*
 * sdnotify_take_listener - sdnotify_check_listener, then make fd
 * O_NONBLOCK and FD_CLOEXEC (systemd passes blocking sockets unless the
 * unit says NonBlocking=yes; the broker's accept loop needs non-blocking).
 * Returns 0 or a negative errno with why filled in.
 */
int sdnotify_take_listener(int fd, char *why, size_t whylen);

/*
 * sdnotify_socket_path - the path fd is bound to, for the log line. Returns
 * 0, -ENOTSOCK/-errno from getsockname, -EAFNOSUPPORT if not AF_UNIX,
 * -ENOENT if unnamed, -ENAMETOOLONG if buf is too small. An abstract name
 * is written with a leading '@'.
 */
int sdnotify_socket_path(int fd, char *buf, size_t size);

/*
 * sdnotify_watchdog_usec - the watchdog interval systemd expects pings in.
 *
 * Returns 1 with *usec set when WATCHDOG_USEC is set to a positive number
 * and WATCHDOG_PID is unset or our pid; 0 when the watchdog is off (unset,
 * or meant for another pid); -EINVAL when malformed. The caller should
 * send "WATCHDOG=1" every *usec / 2 (sd_watchdog_enabled(3)).
 */
int sdnotify_watchdog_usec(uint64_t *usec);

/*
 * sdnotify_journal_stderr - 1 if stderr is connected to the journal
 * ($JOURNAL_STREAM names stderr's device:inode), so log lines may carry a
 * "<N>" syslog priority prefix that the journal turns into the level; 0
 * otherwise.
 */
int sdnotify_journal_stderr(void);

#endif
