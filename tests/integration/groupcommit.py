#!/usr/bin/env python3
"""Group commit's wait for posters (mboxd --commit-delay-us), at the wire.

The broker runs with sync=full and --commit-delay-us 1000000 (one second,
the most), so that every wait below is long next to what the test does
in between: the checks hold on a slow machine too. They use the broker's
`commits` counter (STATS), which counts durable batch commits.

Scenarios (usage: groupcommit.py SOCKET SCENARIO...):
  lone      one poster alone never waits for itself
  grouped   a post waits for the poster answered last; both share one
            commit, and a poster that hangs up is not waited for
  deadline  a poster that stays silent is waited for one delay, no more
  busy      a poster with a subscription or a RECV under way is not
            waited for (it may be waiting for the other side's post)
  nowait    (run against a broker with sync=normal) nothing waits
Exits non-zero on the first failure. Every wait is bounded.
"""
import os
import select
import sys
import time

# No __pycache__ in the source tree (it may be read-only, as in distcheck).
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402
from wire import OP, S, check, field, fields, text_of, u64  # noqa: E402

T_COUNTER, T_KEY, T_COUNT = 50, 12, 4
DELAY = 1.0  # --commit-delay-us of the broker, in seconds
PATH = None
OPEN = []  # every client of the scenario under way, closed at its end


def client():
    c = wire.Client(PATH)
    c.hello()
    OPEN.append(c)
    return c


def commits(c):
    """The broker's `commits` counter."""
    st, f = c.call("STATS")
    check(st == S["OK"], "STATS answered")
    for t, v in f:
        if t != T_COUNTER:
            continue
        d = dict(fields(v))
        if d[T_KEY] == b"commits":
            return u64(d[T_COUNT])
    check(False, "STATS has a commits counter")


def send_post(c, data):
    return c.send_frame(OP["POST"], field("MAILBOX", "gc") +
                        field("MSG", field("DATA", data)))


def answered(c, rid):
    op, flags, got, st, body = c.read_frame()
    check(op == OP["POST"] and got == rid and flags == 1,
          "the answer is the post's")
    check(st == S["OK"], "post stored: %s" % text_of(fields(body)))


def quiet(c, secs):
    """True when nothing arrives on c for secs."""
    r, _, _ = select.select([c.s], [], [], secs)
    return not r


def post(c, data):
    wire.post(c, "gc", data)


def lone():
    a, stats = client(), client()
    post(a, b"first")
    n0 = commits(stats)
    t0 = time.monotonic()
    for i in range(5):
        post(a, b"again %d" % i)
    took = time.monotonic() - t0
    check(took < 3 * DELAY,
          "5 posts of a lone poster took %.2f s: it never waits for "
          "itself (each wait would be %.1f s)" % (took, DELAY))
    check(commits(stats) - n0 == 5, "one commit per post")


def grouped():
    a, b, c, stats = client(), client(), client(), client()
    post(a, b"a1")  # a is now awaited
    n0 = commits(stats)
    rb = send_post(b, b"b1")
    check(quiet(b, 0.3 * DELAY),
          "b's post waits while a, answered last, is not back")
    ra = send_post(a, b"a2")
    answered(a, ra)
    answered(b, rb)
    check(commits(stats) - n0 == 1,
          "a's and b's posts shared one commit")
    # a and b are awaited now. c waits for both; a comes back, b hangs up.
    n0 = commits(stats)
    rc = send_post(c, b"c1")
    ra = send_post(a, b"a3")
    check(quiet(c, 0.2 * DELAY) and quiet(a, 0.01),
          "c's and a's posts wait while b is not back")
    t0 = time.monotonic()
    b.s.close()
    answered(c, rc)
    answered(a, ra)
    took = time.monotonic() - t0
    check(took < 0.5 * DELAY,
          "a poster that hung up is not waited for (answers %.2f s after "
          "it closed)" % took)
    check(commits(stats) - n0 == 1, "c's and a's posts shared one commit")


def deadline():
    a, b, stats = client(), client(), client()
    post(a, b"a1")  # a is awaited and stays silent
    n0 = commits(stats)
    t0 = time.monotonic()
    b.s.settimeout(10 * DELAY + 10)
    post(b, b"b1")
    took = time.monotonic() - t0
    check(took >= 0.5 * DELAY,
          "b's post waited for a (%.2f s, the delay is %.1f s)" %
          (took, DELAY))
    check(commits(stats) - n0 == 1, "b's post committed after the delay")
    # The wait is over: the next post of b does not wait for a again.
    t0 = time.monotonic()
    post(b, b"b2")
    check(time.monotonic() - t0 < 0.5 * DELAY,
          "the next commit does not wait for a again")


def busy():
    a, b, stats = client(), client(), client()
    st, f = a.call("SUBSCRIBE", field("MAILBOX", "gc-reply") +
                   field("COUNT", 1))
    check(st == S["OK"], "a subscribes to gc-reply: %s" % text_of(f))
    post(a, b"request")  # a has a subscription: not awaited
    n0 = commits(stats)
    t0 = time.monotonic()
    st, f = b.call("POST", field("MAILBOX", "gc-reply") +
                   field("MSG", field("DATA", b"reply")))
    check(st == S["OK"], "b posts the reply: %s" % text_of(f))
    check(time.monotonic() - t0 < 0.5 * DELAY,
          "the reply does not wait for a subscriber that posted")
    check(len(a.pushed(1, 5.0)) == 1, "a gets the reply pushed")
    check(commits(stats) - n0 == 1, "one commit for the reply")
    # A RECV waiting on the poster's connection: not awaited either.
    c = client()
    rr = c.send_frame(OP["RECV"], field("MAILBOX", "gc-empty") +
                      field("COUNT", 1) + field("WAIT_MS", 5000))
    rp = send_post(c, b"with a recv waiting")
    answered(c, rp)
    t0 = time.monotonic()
    post(b, b"after it")
    check(time.monotonic() - t0 < 0.5 * DELAY,
          "a post does not wait for a poster whose RECV waits")
    c.send_frame(OP["POST"], field("MAILBOX", "gc-empty") +
                 field("MSG", field("DATA", b"for the recv")))
    got = []
    for _ in range(2):
        op, flags, rid, st, body = c.read_frame()
        check(st == S["OK"], "c's RECV and post answered")
        got.append(rid)
    check(rr in got, "c's RECV got its message")


def nowait():
    a, b = client(), client()
    post(a, b"a1")
    t0 = time.monotonic()
    post(b, b"b1")
    took = time.monotonic() - t0
    check(took < 0.5 * DELAY,
          "with sync=normal a post never waits (%.2f s)" % took)


SCENARIOS = [lone, grouped, deadline, busy, nowait]

if __name__ == "__main__":
    PATH = sys.argv[1]
    for name in sys.argv[2:]:
        fn = dict((f.__name__, f) for f in SCENARIOS)[name]
        print("# " + name)
        try:
            fn()
        except (EOFError, OSError) as e:
            check(False, "%s: lost the broker (did mboxd die?): %r" %
                  (name, e))
        finally:
            # No poster of this scenario may be awaited by the next.
            while OPEN:
                OPEN.pop().s.close()
