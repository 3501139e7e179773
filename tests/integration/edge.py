#!/usr/bin/env python3
"""Edge cases of the broker found in review, spoken at the protocol level.

Each scenario drives a real mboxd into a corner that used to go wrong:
a client that hangs up while it claims a hand-off (the broker crashed),
a client that hangs up while the broker delivers to it (its messages
were lost, or its exclusive successor skipped one), an exclusive
subscriber that unsubscribes (its successor skipped its messages); and
the corners of DELETE, temporary mailboxes and exclusive fail-over.

Usage: edge.py SOCKET_PATH [SCENARIO...] (default: all, in order).
Exits non-zero on the first failure. Every wait is bounded.
"""
import os
import signal
import socket
import sys
import time

# No __pycache__ in the source tree (it may be read-only, as in distcheck).
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402
from wire import OP, S, TAG, check, field, msgs_of, u64, value  # noqa: E402

T_INFO, T_READY, T_LEASED, T_DELAYED, T_DEAD = 28, 29, 30, 31, 32
EXCLUSIVE, STANDBY, FORCE = 1, 2, 1


def client(path):
    c = wire.Client(path)
    c.hello()
    return c


def post(c, mailbox, data, extra=b""):
    return wire.post(c, mailbox, data, extra)


def create(c, mailbox, *settings):
    st, f = c.call("CREATE", field("MAILBOX", mailbox) +
                   b"".join(field("SETTING", s) for s in settings))
    check(st == 0, "CREATE %s: %s" % (mailbox, wire.text_of(f)))


def ids_of(msgs):
    return [u64(m[TAG["ID"]]) for m in msgs]


def counts(c, mailbox):
    """(ready, leased, delayed, dead) of mailbox from LIST, None if absent."""
    st, f = c.call("LIST")
    check(st == 0, "LIST")
    for t, v in f:
        if t != T_INFO:
            continue
        d = dict(wire.fields(v))
        if d[TAG["MAILBOX"]].decode() == mailbox:
            return tuple(u64(d[k]) for k in (T_READY, T_LEASED, T_DELAYED,
                                               T_DEAD))
    return None


def wait_counts(c, mailbox, want, secs):
    """Poll LIST until mailbox shows want (a prefix of the counts)."""
    end = time.monotonic() + secs
    while True:
        got = counts(c, mailbox)
        if got is not None and got[:len(want)] == want:
            return got
        if time.monotonic() > end:
            return got
        time.sleep(0.02)


def subscribe(c, mailbox, count=1, lease_ms=None, flags=0):
    body = field("MAILBOX", mailbox) + field("COUNT", count)
    if lease_ms:
        body += field("LEASE_MS", lease_ms)
    if flags:
        body += field("FLAGS", flags)
    st, f = c.call("SUBSCRIBE", body)
    check(st == 0, "SUBSCRIBE %s: %s" % (mailbox, wire.text_of(f)))
    return u64(value(f, "FLAGS"))


def deaf(c):
    """Every later send of the broker to c fails: the broker closes c while
    it answers, from whatever phase it answers in."""
    c.s.shutdown(socket.SHUT_RD)


def claim_close():
    """A claimer that hangs up at once gives the messages back (this used
    to leave them leased to a freed connection, and crash the broker on
    the next post or lease expiry)."""
    a = client(PATH)
    lease_end = time.monotonic() + 2.0
    for mb, hang_up in (("cc-close", "close"), ("cc-deaf", "deaf")):
        create(a, mb)
        ids = [post(a, mb, "m%d" % i) for i in range(4)]
        subscribe(a, mb, count=4, lease_ms=2000)
        check(ids_of(a.pushed(4)) == ids, "%s: 4 pushed" % mb)
        st, f = a.call("HANDOFF", field("WAIT_MS", 10000))
        check(st == 0 and u64(value(f, "COUNT")) == 4, "%s: HANDOFF" % mb)
        token = value(f, "TOKEN").decode()
        b = client(PATH)
        if hang_up == "deaf":
            deaf(b)
        b.send_frame(OP["CLAIM"], field("TOKEN", token))
        if hang_up == "close":
            b.s.close()
        # Give the CLAIM time to be served (no wait once they are back),
        # then post: news for the mailbox the claimer subscribed to.
        wait_counts(a, mb, (4, 0), 0.7)
        ids.append(post(a, mb, "new"))
        # Still well before the 2 s lease: the close gave them back.
        got = counts(a, mb)
        check(got[:2] == (5, 0), "%s: claimer hung up (%s): its 4 "
              "messages are ready at once, not leased: %r" %
              (mb, hang_up, got))
        r = client(PATH)
        st, f = r.call("RECV", field("MAILBOX", mb) + field("COUNT", 10))
        check(st == 0 and ids_of(msgs_of(f)) == ids,
              "%s: all 5 are received in order" % mb)
        st, f = r.call("ACK", b"".join(field("ID", i) for i in ids))
        check(st == 0, "%s: and acked" % mb)
        st, f = a.call("CLAIM", field("TOKEN", token))
        check(st == S["NOT_FOUND"], "%s: the token was used up" % mb)
    # Past the lease: a timer that touched the dead claimer would fire.
    time.sleep(max(0.0, lease_end - time.monotonic()) + 0.2)
    st, _ = a.call("PING")
    check(st == 0, "claim_close: the broker still answers")


def release_lost():
    """A client closed while the broker delivers to it gives its leases
    back (the give-back queued during delivery used to be dropped)."""
    a = client(PATH)
    create(a, "rl-a")
    create(a, "rl-b")
    mid = post(a, "rl-a", "m1")
    post(a, "rl-b", "later", field("DELAY_MS", 60000))
    x = client(PATH)
    st, f = x.call("RECV", field("MAILBOX", "rl-a"))
    check(st == 0 and ids_of(msgs_of(f)) == [mid], "x leases the message")
    deaf(x)
    # Answered (empty) in the delivery phase: that send fails, x closes.
    x.send_frame(OP["RECV"], field("MAILBOX", "rl-b"))
    got = wait_counts(a, "rl-a", (1, 0), 2.0)
    check(got[:2] == (1, 0), "x hung up while being answered: its "
          "message is ready again: %r" % (got,))
    st, f = a.call("RECV", field("MAILBOX", "rl-a") + field("WAIT_MS", 1000))
    check(st == 0 and ids_of(msgs_of(f)) == [mid],
          "the next reader receives it")
    check(counts(a, "rl-b")[:3] == (0, 0, 1), "the delayed one stays")


def excl_phase():
    """The active exclusive subscriber closed while the broker delivers to
    it: the standby receives everything, in order, its message first (the
    successor used to skip it)."""
    a = client(PATH)
    create(a, "ep-e")
    create(a, "ep-b")
    post(a, "ep-b", "later", field("DELAY_MS", 60000))
    ids = [post(a, "ep-e", "m%d" % i) for i in range(3)]
    x = client(PATH)
    y = client(PATH)
    subscribe(x, "ep-e", flags=EXCLUSIVE)
    check(ids_of(x.pushed(1)) == ids[:1], "x (active) is pushed m0")
    check(subscribe(y, "ep-e", count=10, flags=EXCLUSIVE) & STANDBY,
          "y waits as a standby")
    deaf(x)
    x.send_frame(OP["RECV"], field("MAILBOX", "ep-b"))
    got = ids_of(y.pushed(3, 3.0))
    check(got == ids, "y took over m0, m1, m2 in order: %r, want %r" %
          (got, ids))
    check(counts(a, "ep-e")[:2] == (0, 3), "all three leased, to y")


def excl_unsub():
    """UNSUBSCRIBE of the active exclusive subscriber: its leased messages
    go back at once and the standby receives them first (5.14)."""
    a = client(PATH)
    b = client(PATH)
    create(a, "eu")
    ids = [post(a, "eu", "m%d" % i) for i in range(3)]
    subscribe(a, "eu", flags=EXCLUSIVE)
    check(ids_of(a.pushed(1)) == ids[:1], "a (active) is pushed m0")
    check(subscribe(b, "eu", flags=EXCLUSIVE) & STANDBY, "b is a standby")
    st, f = a.call("UNSUBSCRIBE", field("MAILBOX", "eu"))
    check(st == 0, "a unsubscribes")
    got = ids_of(b.pushed(1, 3.0))
    check(got == ids[:1], "b is pushed m0 first: %r, want %r" %
          (got, ids[:1]))
    st, f = a.call("ACK", field("ID", ids[0]))
    check(st == S["NOT_LEASED"], "a's late ACK of m0 is NOT_LEASED")
    st, f = b.call("ACK", field("ID", ids[0]))
    check(st == 0, "b acks m0")
    check(ids_of(b.pushed(1, 3.0)) == ids[1:2], "then b is pushed m1")


def delete_mix():
    """DELETE with FORCE amid subscribers, a parked hand-off, a waiting
    RECV and a POST in the same batch: every lease is void, the hand-off
    claims nothing, the waiter is answered, and a mailbox of the same name
    starts empty."""
    a, w, s, h = (client(PATH) for _ in range(4))
    create(a, "dm", "mode=0666")
    ids = [post(a, "dm", "m%d" % i) for i in range(4)]
    subscribe(s, "dm", count=2)
    check(ids_of(s.pushed(2)) == ids[:2], "s is pushed 2")
    subscribe(h, "dm", count=2)
    check(ids_of(h.pushed(2)) == ids[2:], "h is pushed 2")
    st, f = h.call("HANDOFF", field("WAIT_MS", 10000))
    check(st == 0 and u64(value(f, "COUNT")) == 2, "h hands 2 off")
    token = value(f, "TOKEN").decode()
    wid = w.send_frame(OP["RECV"], field("MAILBOX", "dm") +
                       field("WAIT_MS", 5000))
    time.sleep(0.1)
    a.send_frame(OP["POST"], field("MAILBOX", "dm") +
                 field("MSG", field("DATA", "x")))
    a.send_frame(OP["DELETE"], field("MAILBOX", "dm") + field("FLAGS", FORCE))
    replies = sorted(a.read_frame()[0:4:3] for _ in range(2))
    check(replies == [(OP["DELETE"], 0), (OP["POST"], 0)],
          "pipelined POST and DELETE FORCE both succeed")
    op, flags, rid, st, body = w.read_frame()
    got = ids_of(msgs_of(wire.fields(body)))
    check(rid == wid and (st == S["NOT_FOUND"] or
                          (st == 0 and len(got) == 1)),
          "the waiting RECV is answered (NOT_FOUND, or the new message "
          "before the DELETE): status %d" % st)
    if got:
        st, f = w.call("ACK", field("ID", got[0]))
        check(st == S["NOT_LEASED"], "its lease is void")
    st, f = s.call("ACK", b"".join(field("ID", i) for i in ids[:2]))
    check(st == S["NOT_LEASED"], "leases of the deleted mailbox are void")
    ends = s.ended(1)
    check([e[:2] for e in ends] == [("dm", "the mailbox was deleted")],
          "the subscriber is told its subscription ended: %r" % ends)
    check(s.pushed(1, 0.2) == [] and s.ended(1, 0.2) == [],
          "and nothing is pushed after that")
    c = client(PATH)
    st, f = c.call("CLAIM", field("TOKEN", token))
    check(st == 0 and u64(value(f, "COUNT")) == 0 and c.pushed(1, 0.2) == [],
          "CLAIM of its hand-off takes over nothing")
    st, f = c.call("SUBSCRIBE", field("MAILBOX", "dm"))
    check(st == S["NOT_FOUND"], "SUBSCRIBE of the deleted mailbox")
    st, f = w.call("RECV", field("MAILBOX", "dm") + field("WAIT_MS", 100))
    check(st == S["NOT_FOUND"], "RECV of the deleted mailbox")
    check(counts(a, "dm") is None, "LIST no longer shows it")
    create(a, "dm")
    check(counts(a, "dm") == (0, 0, 0, 0), "a new dm starts empty")
    nid = post(a, "dm", "fresh")
    st, f = w.call("RECV", field("MAILBOX", "dm") + field("COUNT", 10))
    check(st == 0 and ids_of(msgs_of(f)) == [nid], "and holds only its own")


def temp_drop():
    """A temporary mailbox goes with its creator's connection: its waiter
    is answered NOT_FOUND, leases of it are void, subscriptions end."""
    a, s, w = (client(PATH) for _ in range(3))
    create(a, "td", "temp=1", "mode=0666")
    ids = [post(a, "td", "m%d" % i) for i in range(3)]
    subscribe(s, "td", count=2)
    check(ids_of(s.pushed(2)) == ids[:2], "s is pushed 2")
    st, f = w.call("RECV", field("MAILBOX", "td"))
    check(st == 0 and ids_of(msgs_of(f)) == ids[2:], "w leases the third")
    wid = w.send_frame(OP["RECV"], field("MAILBOX", "td") +
                       field("WAIT_MS", 3000))
    time.sleep(0.1)
    a.s.close()
    op, flags, rid, st, body = w.read_frame()
    check(rid == wid and st == S["NOT_FOUND"],
          "the creator hung up: the waiting RECV is NOT_FOUND")
    st, f = s.call("ACK", field("ID", ids[0]))
    check(st == S["NOT_LEASED"], "a pushed message's lease is void")
    st, f = w.call("ACK", field("ID", ids[2]))
    check(st == S["NOT_LEASED"], "a received message's lease is void")
    check(counts(w, "td") is None, "LIST no longer shows it")
    st, f = s.call("UNSUBSCRIBE", field("MAILBOX", "td"))
    check(st == S["NOT_FOUND"], "the subscription ended with it")
    ends = s.ended(1)
    check([e[:2] for e in ends] == [("td", "the mailbox was deleted")] and
          ends[0][2] == 2, "an ENDED push, after the 2 pushes, says so: %r"
          % ends)
    b = client(PATH)
    create(b, "td", "mode=0666")
    nid = post(b, "td", "fresh")
    subscribe(s, "td")
    check(ids_of(s.pushed(1)) == [nid], "a new td of the same name works")


def excl_failover():
    """Strict order across an unclaimed hand-off and a standby's death."""
    a, b, c = (client(PATH) for _ in range(3))
    create(a, "ef")
    ids = [post(a, "ef", "m%d" % i) for i in range(5)]
    subscribe(a, "ef", count=2, flags=EXCLUSIVE)
    check(ids_of(a.pushed(2)) == ids[:2], "a (active) is pushed 2")
    check(subscribe(b, "ef", count=5, flags=EXCLUSIVE) & STANDBY,
          "b is the first standby")
    check(subscribe(c, "ef", count=5, flags=EXCLUSIVE) & STANDBY,
          "c is the second standby")
    st, f = a.call("HANDOFF", field("WAIT_MS", 1000))
    check(st == 0 and u64(value(f, "COUNT")) == 2, "a hands 2 off")
    check(b.pushed(1, 0.3) == [], "b gets nothing while the hand-off runs")
    got = ids_of(b.pushed(5, 5.0))
    check(got == ids, "unclaimed: b takes over all 5 in order: %r" % got)
    b.s.close()
    got = ids_of(c.pushed(5, 5.0))
    check(got == ids, "b closed: c takes over all 5 in order: %r" % got)


def delete_ends():
    """DELETE with FORCE ends every subscription of the mailbox with an
    ENDED push after the messages pushed before it, the standby's too;
    other subscriptions of the same connections go on."""
    a, x, y = (client(PATH) for _ in range(3))
    create(a, "de", "mode=0666")
    create(a, "de.other", "mode=0666")
    ids = [post(a, "de", "m%d" % i) for i in range(3)]
    subscribe(x, "de", count=2, flags=EXCLUSIVE)
    check(ids_of(x.pushed(2)) == ids[:2], "x (active) is pushed 2")
    check(subscribe(y, "de", count=2, flags=EXCLUSIVE) & STANDBY,
          "y is a standby")
    subscribe(x, "de.other")
    st, f = a.call("DELETE", field("MAILBOX", "de") + field("FLAGS", FORCE))
    check(st == 0, "DELETE FORCE")
    for who, c, before in (("x", x, 2), ("y", y, 0)):
        ends = c.ended(1)
        check([e[:2] for e in ends] == [("de", "the mailbox was deleted")]
              and ends[0][2] == before,
              "%s hears that its subscription ended, after its %d pushes: "
              "%r" % (who, before, ends))
    check(y.pushed(1, 0.2) == [], "the standby is not made active")
    nid = post(a, "de.other", "o")
    check(ids_of(x.pushed(1)) == [nid], "x's other subscription goes on")


def delete_hangup():
    """Subscribers and waiters of a deleted mailbox that cannot be told
    any more (they shut their reading side: the ENDED push and the
    RECV's answer fail with EPIPE) are closed cleanly: the broker goes
    on (it used to free the subscription twice), and a temporary
    mailbox of such a connection goes with it."""
    a, s, w, t = (client(PATH) for _ in range(4))
    create(a, "dh", "mode=0666")
    create(s, "dh.temp", "temp=1")
    check(counts(a, "dh.temp") is not None, "s's temporary mailbox")
    st, f = s.call("SUBSCRIBE", field("MAILBOX", "dh"))
    check(st == 0, "s subscribes")
    created = u64(value(f, "TIME_NS"))
    check(created > 0, "the SUBSCRIBE reply says when dh was created")
    subscribe(t, "dh")
    w.send_frame(OP["RECV"], field("MAILBOX", "dh") +
                 field("WAIT_MS", 10000))
    time.sleep(0.1)
    s.s.shutdown(socket.SHUT_RD)
    w.s.shutdown(socket.SHUT_RD)
    st, f = a.call("DELETE", field("MAILBOX", "dh"))
    check(st == 0, "DELETE")
    ends = t.ended(1)
    check([e[:2] for e in ends] == [("dh", "the mailbox was deleted")] and
          ends[0][3] == created,
          "the subscriber that still reads is told, with dh's creation "
          "time: %r" % ends)
    end = time.monotonic() + 5
    while counts(a, "dh.temp") is not None and time.monotonic() < end:
        time.sleep(0.02)
    check(counts(a, "dh.temp") is None,
          "the temporary mailbox of the closed subscriber is gone")
    st, f = a.call("PING")
    check(st == 0, "the broker goes on")


def delete_rollback():
    """A DELETE rolled back with its group commit (the store is full):
    the subscribers and the waiting RECV of the mailbox are neither told
    nor dropped, and go on once there is room. Needs a broker with
    --max-store-size of about 1 MiB and an empty database, and its pid in
    MBOXD_PID: it is stopped while the two requests are sent, so that it
    reads them in one batch."""
    pid = int(os.environ["MBOXD_PID"])
    a, s, w = (client(PATH) for _ in range(3))
    create(a, "rb", "mode=0666")
    create(a, "rb.fill", "mode=0666")
    subscribe(s, "rb")
    wid = w.send_frame(OP["RECV"], field("MAILBOX", "rb") +
                       field("WAIT_MS", 20000))
    pad = "x" * 1024
    for i in range(4000):
        st, f = a.call("POST", field("MAILBOX", "rb.fill") +
                       field("MSG", field("DATA", pad)))
        if st == S["STORE"]:
            break
        check(st == 0, "POST to fill the store: %s" % wire.text_of(f))
    check(st == S["STORE"], "the store fills up")
    # Past the second the broker waits before it tries an add again.
    time.sleep(1.2)
    os.kill(pid, signal.SIGSTOP)
    try:
        a.send_frame(OP["DELETE"], field("MAILBOX", "rb"))
        a.send_frame(OP["POST"], field("MAILBOX", "rb.fill") +
                     field("MSG", field("DATA", pad * 60)))
    finally:
        os.kill(pid, signal.SIGCONT)
    replies = sorted(a.read_frame()[0:4:3] for _ in range(2))
    check(replies == [(OP["DELETE"], S["STORE"]), (OP["POST"], S["STORE"])],
          "DELETE and the POST that fills the store fail together: %r"
          % replies)
    check(s.ended(1, 0.5) == [], "no ENDED push for a rolled-back DELETE")
    st, f = a.call("PURGE", field("MAILBOX", "rb.fill"))
    check(st == 0, "PURGE makes room")
    nid = post(a, "rb", "after")
    op, flags, rid, st, body = w.read_frame()
    check(rid == wid and st == 0 and
          ids_of(msgs_of(wire.fields(body))) == [nid],
          "the waiting RECV is still there and takes the post (%d)" % st)
    nid = post(a, "rb", "after2")
    check(ids_of(s.pushed(1)) == [nid], "the subscription still pushes")


SCENARIOS = [claim_close, release_lost, excl_phase, excl_unsub, delete_mix,
             delete_ends, delete_hangup, temp_drop, excl_failover]
# Run only when named: they need a broker started for them.
NAMED_ONLY = [delete_rollback]

if __name__ == "__main__":
    PATH = sys.argv[1]
    names = sys.argv[2:] or [f.__name__ for f in SCENARIOS]
    for name in names:
        fn = dict((f.__name__, f) for f in SCENARIOS + NAMED_ONLY)[name]
        print("# " + name)
        t0 = time.monotonic()
        try:
            fn()
        except (EOFError, OSError) as e:
            check(False, "%s: lost the broker (did mboxd die?): %r" %
                  (name, e))
        print("# %s done in %.2f s" % (name, time.monotonic() - t0))
