#!/bin/bash
# limits.sh - the limits of doc/protocol.md 8.3 and backpressure.
#
# Each limit is hit on purpose, at the protocol level (a client written
# from the document, tests/integration/wire.py) and through mboxctl: the
# request is refused whole with the documented status and a LIMIT field
# naming the limit, nothing is stored by a refused request, and a full
# mailbox keeps every message it holds. Then connections: max_connections
# (the HELLO of one too many answered LIMIT, silent hang-ups closed, a hard
# cap on how many wait), max_connections_per_uid and max_mailboxes_per_uid
# under another uid (root only, through setpriv), and backpressure: a
# client that sends requests and never reads, and a subscriber that never
# reads, cost the broker a bounded amount of memory while another client
# is answered at once.
. "${TOP_SRCDIR:-$(dirname "$0")/../..}/tests/integration/lib.sh"

command -v python3 >/dev/null || fail "python3 is needed (apt-get install python3)"
SRC=${TOP_SRCDIR:-$(dirname "$0")/../..}
export PYTHONPATH="$SRC/tests/integration${PYTHONPATH:+:$PYTHONPATH}"
PY=$T_DIR/limits.py

cat >"$PY" <<'EOF'
"""Scenarios of limits.sh: limits.py SOCKET MODE [ARGS...]."""
import os
import socket
import struct
import subprocess
import sys
import time

from wire import (Client, OP, TAG, check, field, fields, msgs_of, text_of,
                  u64, value)

S_LIMIT, S_FULL, S_TOO_LARGE, S_BUSY = 7, 8, 9, 15
OP.setdefault("SET", 18)
TAG_LIMIT = 40


def limit_of(f):
    return b"".join(v for t, v in f if t == TAG_LIMIT).decode()


def refused(st, f, status, limit, what):
    check(st == status and limit_of(f) == limit,
          "%s: status %d LIMIT %r (got %d %r): %s" %
          (what, status, limit, st, limit_of(f), text_of(f)))
    check(len(text_of(f)) > 20, "%s: the text says what to do" % what)


def client(path):
    c = Client(path)
    c.hello()
    return c


def msg(data, headers=(), dedup=None):
    body = field("DATA", data)
    for k, v in headers:
        body += field("HEADER", field("KEY", k) + field("VALUE", v))
    if dedup is not None:
        body += field("DEDUP", dedup)
    return field("MSG", body)


def ids_of(f):
    return [u64(v) for t, v in f if t == TAG["ID"]]


def post(c, mb, *msgs):
    return c.call("POST", field("MAILBOX", mb) + b"".join(msgs))


def peek(c, mb, n=100, dead=False):
    st, f = c.call("PEEK", field("MAILBOX", mb) + field("COUNT", n) +
                   (field("FLAGS", 1) if dead else b""))
    check(st == 0, "PEEK %s" % mb)
    return [m[TAG["DATA"]] for m in msgs_of(f)]


def names(c):
    st, f = c.call("LIST")
    return sorted(dict(fields(v))[TAG["MAILBOX"]].decode()
                  for t, v in f if t == 28)


def requests(path):
    """max_header_bytes 100, max_msg_size 4096, max_mailboxes 6,
    max_mailbox_msgs 3, max_mailbox_bytes 1000, max_in_flight 8."""
    c = client(path)
    # max_msg_size and max_header_bytes: TOO_LARGE, nothing stored.
    check(post(c, "h", msg("x"))[0] == 0, "POST creates h")
    refused(*post(c, "h", msg(b"y" * 4097)), S_TOO_LARGE, "max_msg_size",
            "a payload over max_msg_size")
    refused(*post(c, "h", msg("ok"), msg("z", [("k", "v" * 100)])),
            S_TOO_LARGE, "max_header_bytes", "101 bytes of headers")
    st, f = post(c, "h", msg("fits", [("k", "v" * 49), ("k2", "w" * 48)]))
    check(st == 0, "exactly 100 bytes of headers fit: " + text_of(f))
    check(peek(c, "h") == [b"x", b"fits"],
          "refused POSTs stored nothing, not even their good messages")

    # An autocreating POST obeys the mailbox limits as if the mailbox
    # were there, empty (it used to skip them).
    st, f = post(c, "fresh", *[msg("f%d" % i) for i in range(4)])
    refused(st, f, S_FULL, "max_mailbox_msgs",
            "an autocreating POST of 4 (of 3)")
    # A batch over the limit on its own says how many it would add.
    check("mailbox fresh has room for 3 more messages and this post would "
          "add 4 (it holds 0, dead ones included; max_mailbox_msgs is 3); "
          "post fewer at once" in text_of(f),
          "the text of a batch too large for an empty mailbox: " +
          text_of(f))
    refused(*post(c, "fresh", msg(b"f" * 600), msg(b"g" * 401)), S_FULL,
            "max_mailbox_bytes", "an autocreating POST of 1001 bytes")
    check("fresh" not in names(c), "the refused POSTs created nothing")

    # max_mailboxes: CREATE and an autocreating POST.
    for i in range(5):
        st, f = c.call("CREATE", field("MAILBOX", "m%d" % i))
        check(st == 0, "CREATE m%d: %s" % (i, text_of(f)))
    refused(*c.call("CREATE", field("MAILBOX", "one-too-many")), S_LIMIT,
            "max_mailboxes", "CREATE of mailbox 7")
    refused(*post(c, "autocreated", msg("lost?")), S_LIMIT, "max_mailboxes",
            "an autocreating POST over max_mailboxes")
    check("autocreated" not in names(c) and "one-too-many" not in names(c),
          "refused creations created nothing")
    st, f = c.call("DELETE", field("MAILBOX", "m4"))
    check(st == 0, "DELETE makes room")
    check(post(c, "autocreated", msg("now"))[0] == 0,
          "autocreate works again below the limit")

    # max_mailbox_msgs 3 (dead ones count), all or nothing, and the
    # per-mailbox max_msgs when it is lower.
    for d in (b"a", b"b"):
        check(post(c, "m0", msg(d))[0] == 0, "POST %s to m0" % d)
    refused(*post(c, "m0", msg("c"), msg("d")), S_FULL, "max_mailbox_msgs",
            "a POST of 2 into a mailbox holding 2 of 3")
    check(post(c, "m0", msg("c"))[0] == 0, "the third fits")
    st, f = c.call("RECV", field("MAILBOX", "m0"))
    mid = u64(dict(fields([v for t, v in f if t == TAG["MSG"]][0]))
              [TAG["ID"]])
    check(c.call("REJECT", field("ID", mid))[0] == 0, "REJECT one: dead")
    refused(*post(c, "m0", msg("e")), S_FULL, "max_mailbox_msgs",
            "dead messages count against max_mailbox_msgs")
    check(peek(c, "m0") == [b"b", b"c"] and peek(c, "m0", dead=True) ==
          [b"a"], "the full mailbox lost nothing")
    st, f = c.call("SET", field("MAILBOX", "m1") +
                   field("SETTING", "max_msgs=1"))
    check(st == 0, "SET max_msgs=1: " + text_of(f))
    check(post(c, "m1", msg("one"))[0] == 0, "POST to m1")
    refused(*post(c, "m1", msg("two")), S_FULL, "max_msgs",
            "the mailbox's own lower max_msgs")

    # A dedup retry stores nothing, so a full mailbox answers it with the
    # first id (SPEC 3.2: the retry after a lost answer), and so does a
    # POST whose second MSG repeats the first's key at the limit. The
    # broker's mailboxes are all taken: "autocreated" (holding "now")
    # gets room for one more.
    st, f = c.call("SET", field("MAILBOX", "autocreated") +
                   field("SETTING", "max_msgs=2"))
    check(st == 0, "SET autocreated max_msgs=2: " + text_of(f))
    st, f = post(c, "autocreated", msg("k", dedup="job-1"),
                 msg("k2", dedup="job-1"))
    check(st == 0 and len(ids_of(f)) == 2 and len(set(ids_of(f))) == 1,
          "two MSGs with one key into room for one: %d %r %s" %
          (st, ids_of(f), text_of(f)))
    first = ids_of(f)[0]
    st, f = post(c, "autocreated", msg("retry", dedup="job-1"))
    check(st == 0 and ids_of(f) == [first],
          "a dedup retry into a full mailbox answers the first id: %d %r %s"
          % (st, ids_of(f), text_of(f)))
    refused(*post(c, "autocreated", msg("retry", dedup="job-1"),
                  msg("new")), S_FULL, "max_msgs",
            "a retry with a new message: the new one counts")
    check(peek(c, "autocreated") == [b"now", b"k"],
          "the full mailbox kept its two messages")

    # max_mailbox_bytes 1000, and a lower max_bytes.
    check(post(c, "m2", msg(b"p" * 600))[0] == 0, "600 bytes into m2")
    refused(*post(c, "m2", msg(b"q" * 401)), S_FULL, "max_mailbox_bytes",
            "601 + 401 bytes")
    check(post(c, "m2", msg(b"q" * 400))[0] == 0, "exactly 1000 bytes fit")
    check(peek(c, "m2") == [b"p" * 600, b"q" * 400], "m2 intact")
    c.call("SET", field("MAILBOX", "m3") + field("SETTING", "max_bytes=10"))
    refused(*post(c, "m3", msg(b"r" * 11)), S_FULL, "max_bytes",
            "the mailbox's own lower max_bytes")

    # PUBLISH into a full mailbox: FULL, no copy anywhere.
    c.call("BIND", field("MAILBOX", "m0") + field("TOPIC", "t.x"))
    c.call("BIND", field("MAILBOX", "m3") + field("TOPIC", "t.x"))
    st, f = c.call("PUBLISH", field("TOPIC", "t.x") + msg("pub"))
    check(st == S_FULL and limit_of(f) == "max_mailbox_msgs",
          "PUBLISH into a full mailbox: FULL %r: %s" % (limit_of(f),
                                                       text_of(f)))
    check(peek(c, "m3") == [], "no copy of the refused PUBLISH")

    # max_in_flight 8: waiting RECVs count; the ninth request is BUSY.
    ids = [c.send_frame(OP["RECV"], field("MAILBOX", "m3") +
                        field("WAIT_MS", 300)) for _ in range(8)]
    rid = c.send_frame(OP["PING"], b"")
    got = {}
    while len(got) < 9:
        op, flags, r, st, body = c.read_frame()
        got[r] = (st, fields(body))
    refused(*got[rid], S_BUSY, "max_in_flight", "the ninth request")
    check(all(got[i][0] == 0 for i in ids), "the eight RECVs were answered")


def unacked(path):
    """max_unacked 4, for RECV and for subscriptions."""
    c = client(path)
    for i in range(12):
        post(c, "u", msg("u%d" % i))
    st, f = c.call("RECV", field("MAILBOX", "u") + field("COUNT", 10))
    held = [u64(m[TAG["ID"]]) for m in msgs_of(f)]
    check(st == 0 and len(held) == 4, "RECV of 10 leases only 4 (got %d)" %
          len(held))
    refused(*c.call("RECV", field("MAILBOX", "u") + field("COUNT", 1)),
            S_LIMIT, "max_unacked", "a RECV while holding max_unacked")
    check(c.call("ACK", field("ID", held[0]))[0] == 0, "ACK one")
    st, f = c.call("RECV", field("MAILBOX", "u") + field("COUNT", 10))
    check(len(msgs_of(f)) == 1, "then a RECV leases just the one free slot")
    held = held[1:] + [u64(m[TAG["ID"]]) for m in msgs_of(f)]
    # A RECV that waits is given only the rest when messages come.
    check(c.call("ACK", field("ID", held[0]))[0] == 0, "ACK another")
    c.call("CREATE", field("MAILBOX", "u2"))
    rid = c.send_frame(OP["RECV"], field("MAILBOX", "u2") +
                       field("COUNT", 5) + field("WAIT_MS", 5000))
    p = client(path)
    time.sleep(0.2)
    for i in range(5):
        post(p, "u2", msg("v%d" % i))
    op, flags, r, st, body = c.read_frame()
    check(r == rid and st == 0 and len(msgs_of(fields(body))) == 1,
          "a waiting RECV of 5 gets the 1 left of max_unacked")
    c.s.close()

    # Subscriptions: no pushes beyond max_unacked, whatever the window;
    # a settle (of a pushed or of a RECVed message) resumes them.
    s = client(path)
    st, f = s.call("RECV", field("MAILBOX", "u") + field("COUNT", 3))
    recvd = [u64(m[TAG["ID"]]) for m in msgs_of(f)]
    check(len(recvd) == 3, "subscriber first holds 3 by RECV")
    st, f = s.call("SUBSCRIBE", field("MAILBOX", "u") + field("COUNT", 100))
    check(st == 0, "SUBSCRIBE with a window of 100")
    got = s.pushed(1)
    check(len(got) == 1 and s.pushed(1, 0.5) == [],
          "only 1 pushed: 3 + 1 = max_unacked")
    check(s.call("ACK", field("ID", recvd[0]))[0] == 0, "ACK a RECVed one")
    more = s.pushed(1)
    check(len(more) == 1 and s.pushed(1, 0.5) == [],
          "settling a RECVed message resumes pushes, one at a time")
    check(s.call("ACK", field("ID", u64(got[0][TAG["ID"]])))[0] == 0,
          "ACK a pushed one")
    check(len(s.pushed(1)) == 1, "settling a pushed one resumes them too")
    st, f = s.call("LIST")
    info = [dict(fields(v)) for t, v in f if t == 28]
    u = [i for i in info if i[TAG["MAILBOX"]] == b"u"][0]
    check(u64(u[30]) == 4, "4 leased, the rest ready: nothing lost")


def claim(path):
    """max_unacked 40; a CLAIM is pushed only as fast as the claimer reads
    (max_out_bytes, 8 MiB), its reply follows the pushes, and new work
    comes after the parked work."""
    a = client(path)
    big = 512 * 1024
    ids = [u64(value(post(a, "cl", msg(bytes([i]) * big))[1], "ID"))
           for i in range(24)]
    st, f = a.call("SUBSCRIBE", field("MAILBOX", "cl") + field("COUNT", 30))
    check(st == 0, "SUBSCRIBE cl, window 30")
    got = a.pushed(24, 20)
    check([u64(m[TAG["ID"]]) for m in got] == ids, "a is pushed 12 MiB")
    st, f = a.call("HANDOFF", field("WAIT_MS", 60000))
    check(st == 0 and u64(value(f, "COUNT")) == 24, "a hands 24 off")
    token = value(f, "TOKEN")

    # Over max_unacked: refused whole, the hand-off kept.
    b = client(path)
    for i in range(20):
        post(a, "other", msg("o%d" % i))
    st, f = b.call("RECV", field("MAILBOX", "other") + field("COUNT", 20))
    held = [u64(m[TAG["ID"]]) for m in msgs_of(f)]
    check(len(held) == 20, "b holds 20")
    refused(*b.call("CLAIM", field("TOKEN", token)), S_LIMIT, "max_unacked",
            "CLAIM of 24 by a holder of 20 (max_unacked 40)")
    check(b.pushes == [], "the refused CLAIM pushed nothing")
    check(b.call("ACK", b"".join(field("ID", i) for i in held))[0] == 0,
          "b acks its 20")

    # 12 MiB do not fit in b's 8 MiB of output: b does not read for a
    # while, and a new message is posted meanwhile.
    rid = b.send_frame(OP["CLAIM"], field("TOKEN", token))
    time.sleep(1.0)
    new = u64(value(post(a, "cl", msg("new"))[1], "ID"))
    pushes, reply = [], None
    b.s.settimeout(20)
    while reply is None:
        op, flags, r, st, body = b.read_frame()
        if flags & 2:
            pushes += msgs_of(fields(body))
        else:
            check(op == OP["CLAIM"] and r == rid, "the CLAIM reply")
            reply = (st, fields(body))
    check(reply[0] == 0 and u64(value(reply[1], "COUNT")) == 24,
          "CLAIM answered COUNT 24: %r" % (reply,))
    check([u64(m[TAG["ID"]]) for m in pushes] == ids,
          "all 24 parked messages were pushed, in order, before the reply")
    dl = [u64(m[TAG["DEADLINE_NS"]]) for m in pushes]
    check(dl[-1] - dl[0] > 500 * 1000000,
          "the last ones were pushed only when b read (their leases start "
          "%.2f s after the first ones'): not all queued at once" %
          ((dl[-1] - dl[0]) / 1e9))
    later = b.pushed(1, 5)
    check([u64(m[TAG["ID"]]) for m in later] == [new],
          "the message posted meanwhile comes after the parked ones")


def handoffs(path):
    """At most 64 hand-offs of one uid wait to be claimed."""
    c = client(path)
    tokens = []
    for i in range(64):
        st, f = c.call("HANDOFF", field("WAIT_MS", 60000))
        if st != 0:
            break
        tokens.append(value(f, "TOKEN"))
    check(len(tokens) == 64, "64 HANDOFFs are taken (%d)" % len(tokens))
    refused(*c.call("HANDOFF", field("WAIT_MS", 60000)), S_LIMIT,
            "max_handoffs", "the 65th HANDOFF of one uid")
    st, f = c.call("CLAIM", field("TOKEN", tokens[0]))
    check(st == 0, "CLAIM one")
    st, f = c.call("HANDOFF", field("WAIT_MS", 10))
    check(st == 0, "then one more HANDOFF is taken")


def store_full(path):
    """A full store refuses posts at once, so acks still commit (a POST
    failing for space used to fail every request of its batch)."""
    p, c = client(path), client(path)
    data = os.urandom(16 * 1024)

    def fill():
        for i in range(400):
            st, f = post(p, "sf", msg(data))
            if st != 0:
                return st, f
        return st, f

    st, f = fill()
    check(st == 12 and "disk or database full" in text_of(f),
          "the store filled up: STORE %d: %s" % (st, text_of(f)))
    st, f = c.call("RECV", field("MAILBOX", "sf") + field("COUNT", 20))
    held = [u64(m[TAG["ID"]]) for m in msgs_of(f)]
    check(st == 0 and len(held) > 5, "a consumer leases %d" % len(held))
    for k in range(3):
        # A producer retries while a consumer acks, in one batch. (The
        # last ack made room: fill that up first.)
        check(fill()[0] == 12, "the store is full again")
        p.send_frame(OP["POST"], field("MAILBOX", "sf") + msg(data))
        c.send_frame(OP["ACK"], field("ID", held[k]))
        op, flags, r, st, f = p.read_frame()
        check(st == 12, "the retried POST is refused: %s" %
              text_of(fields(f)))
        op, flags, r, st, f = c.read_frame()
        check(st == 0, "the ACK beside it commits: %d %s" %
              (st, text_of(fields(f))))
    check(c.call("ACK", b"".join(field("ID", i) for i in held[3:]))[0] == 0,
          "the other acks commit")
    st, f = post(p, "sf", msg("small"))
    check(st == 0, "the acks made room: a POST is taken again: " +
          text_of(f))


def list_pages(path, n):
    """max_msg_size 4096: LIST answers in pages (FLAGS 1 = more), each
    under MAX_FRAME, continued after MAILBOX."""
    c = client(path)
    want = sorted("page-%03d-%s" % (i, "x" * 100) for i in range(n))
    made = sum(c.call("CREATE", field("MAILBOX", name))[0] == 0
               for name in want)
    check(made == n, "%d mailboxes created" % made)
    got, after, pages, biggest = [], None, 0, 0
    while pages < n:
        st, f = c.call("LIST", field("MAILBOX", after) if after else b"")
        page = [dict(fields(v))[TAG["MAILBOX"]].decode()
                for t, v in f if t == 28]
        biggest = max(biggest, sum(len(v) + 6 for t, v in f))
        pages += 1
        got += page
        flags = [u64(v) for t, v in f if t == TAG["FLAGS"]]
        if st != 0 or not page or not (flags and flags[0] & 1):
            break
        after = page[-1]
    check(st == 0 and biggest < 2 * 4096, "every page is under MAX_FRAME "
          "(the biggest body: %d bytes)" % biggest)
    check(got == want, "%d pages list all %d mailboxes once, in order "
          "(got %d)" % (pages, n, len(got)))
    check(pages > 2, "it took %d pages" % pages)


def subscriptions(path, n, mboxctl):
    """max_subscriptions n, max_msg_size 4096: the SUBSCRIBE of one
    mailbox too many is LIMIT; so is a CLAIM that would pass it, and the
    hand-off is kept; one that fits exactly is taken. A connection with n
    subscriptions of long names fills more than MAX_FRAME: CLIENTS stops
    short of it and says TRUNCATED, and mboxctl clients says so."""
    c, h = client(path), client(path)
    max_frame = u64(Client(path).hello()[TAG["MAX_FRAME"]])
    boxes = ["sub-%03d-%s" % (i, "y" * 190) for i in range(n + 3)]
    bad = [b for b in boxes if c.call("CREATE", field("MAILBOX", b))[0]]
    check(not bad, "CREATE %d mailboxes (%d failed)" % (n + 3, len(bad)))
    bad = [b for b in boxes[:n]
           if c.call("SUBSCRIBE", field("MAILBOX", b))[0]]
    check(not bad, "SUBSCRIBE to %d (%d failed)" % (n, len(bad)))
    refused(*c.call("SUBSCRIBE", field("MAILBOX", boxes[n])), S_LIMIT,
            "max_subscriptions", "SUBSCRIBE number %d" % (n + 1))
    check(c.call("UNSUBSCRIBE", field("MAILBOX", boxes[0]))[0] == 0 and
          c.call("SUBSCRIBE", field("MAILBOX", boxes[n]))[0] == 0,
          "after an UNSUBSCRIBE there is room for one more")

    rid = c.send_frame(OP["CLIENTS"], b"")
    rop, flags, got, st, rbody = c.read_frame()
    fl = [u64(v) for t, v in fields(rbody) if t == TAG["FLAGS"]]
    check(got == rid and st == 0, "CLIENTS answered")
    check(len(rbody) <= max_frame, "CLIENTS: the reply is %d bytes, "
          "MAX_FRAME %d" % (len(rbody), max_frame))
    check(fl and fl[-1] == 1, "CLIENTS says TRUNCATED")
    run = subprocess.run([mboxctl, "-S", path, "clients", "--json"],
                         capture_output=True, text=True, timeout=20)
    check(run.returncode == 0 and "cut short" in run.stderr,
          "mboxctl clients says the list was cut short: %r" % run.stderr)

    # c holds boxes[1..n]; h parks 3 others.
    for b in [boxes[0]] + boxes[n + 1:]:
        check(h.call("SUBSCRIBE", field("MAILBOX", b))[0] == 0,
              "h subscribes")
    st, f = h.call("HANDOFF")
    check(st == 0, "HANDOFF of 3 subscriptions")
    token = value(f, "TOKEN")
    refused(*c.call("CLAIM", field("TOKEN", token)), S_LIMIT,
            "max_subscriptions", "a CLAIM of 3 more subscriptions")
    for b in boxes[1:4]:
        check(c.call("UNSUBSCRIBE", field("MAILBOX", b))[0] == 0,
              "c unsubscribes")
    st, f = c.call("CLAIM", field("TOKEN", token))
    check(st == 0, "the hand-off was kept, and a CLAIM that makes exactly "
          "max_subscriptions is taken: " + text_of(f))
    st, f = c.call("SUBSCRIBE", field("MAILBOX", boxes[0]))
    check(st == 6, "the claimer has the subscriptions (EXISTS %d)" % st)
    refused(*c.call("SUBSCRIBE", field("MAILBOX", boxes[1])), S_LIMIT,
            "max_subscriptions", "and no room for one more")


def connections(path, n_ok):
    """max_connections: n_ok connections work, the next HELLO is LIMIT."""
    cs = [client(path) for _ in range(n_ok)]
    d = Client(path)
    st, f = d.call("HELLO", field("VERSION_MIN", 1) + field("VERSION_MAX", 1))
    refused(st, f, S_LIMIT, "max_connections", "HELLO of one too many")
    try:
        eof = d.s.recv(65536) == b""
    except ConnectionResetError:
        eof = True
    check(eof, "then the broker closes it")
    # A first frame over MAX_FRAME is LIMIT there too, not TOO_LARGE
    # (protocol.md 4.4, "Which status wins").
    d = Client(path)
    rid = d.send_frame(1, b"z" * (2 * 1048576 + 65536 + 1))
    op, flags, got, st, body = d.read_frame()
    refused(st, fields(body), S_LIMIT, "max_connections",
            "a frame over MAX_FRAME of one too many")
    try:
        eof = d.s.recv(65536) == b""
    except ConnectionResetError:
        eof = True
    check(eof, "then the broker closes it too")
    # One that never says anything is closed after a short while.
    e = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    e.connect(path)
    e.settimeout(6)
    t = time.time()
    try:
        eof = e.recv(65536) == b""
    except (ConnectionResetError, socket.timeout):
        eof = False
    check(eof and time.time() - t < 5,
          "a silent connection over the limit is closed within 5 s")
    # A flood of them: the broker keeps at most a bounded number.
    flood = []
    for _ in range(300):
        x = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        x.setblocking(False)
        try:
            x.connect(path)
        except (BlockingIOError, ConnectionRefusedError, OSError):
            pass
        flood.append(x)
    time.sleep(0.5)
    pid = int(sys.argv[3])
    fds = len(os.listdir("/proc/%d/fd" % pid))
    check(fds < n_ok + 64 + 40, "the broker holds %d fds with 300 pending "
          "over-limit connections (bounded)" % fds)
    for x in flood:
        x.close()
    st, _ = cs[0].call("PING")
    check(st == 0, "the admitted connections are still served")
    cs.pop().s.close()
    time.sleep(0.2)
    client(path).call("PING")
    check(True, "a connection closed: the next one is admitted")


def per_uid(path, n_ok, limit):
    """As a non-admin uid: n_ok connections work, the next is refused."""
    cs = [client(path) for _ in range(n_ok)]
    d = Client(path)
    st, f = d.call("HELLO", field("VERSION_MIN", 1) + field("VERSION_MAX", 1))
    refused(st, f, S_LIMIT, limit, "HELLO of connection %d of this uid" %
            (n_ok + 1))
    print("holding", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    st, _ = cs[0].call("PING")
    check(st == 0, "our admitted connections still work")


def mailboxes_per_uid(path, n):
    """As a non-admin uid, under max_mailboxes_per_uid n: its mailboxes,
    temporary ones included, count; another uid's do not."""
    c = client(path)
    mine = ["u%d" % i for i in range(n - 1)]
    for name in mine:
        st, f = c.call("CREATE", field("MAILBOX", name))
        check(st == 0, "CREATE %s: %s" % (name, text_of(f)))
    st, f = c.call("CREATE", field("MAILBOX", "u.temp") +
                   field("SETTING", "temp=1"))
    check(st == 0, "a temporary mailbox is mailbox %d: %s" % (n, text_of(f)))
    refused(*c.call("CREATE", field("MAILBOX", "u.more")), S_LIMIT,
            "max_mailboxes_per_uid", "CREATE of mailbox %d of this uid" %
            (n + 1))
    st, f = c.call("CREATE", field("MAILBOX", "u.more"))
    check("uid %d owns %d mailboxes" % (os.getuid(), n) in text_of(f),
          "the text says whose and how many: " + text_of(f))
    refused(*post(c, "u.auto", msg("lost?")), S_LIMIT,
            "max_mailboxes_per_uid", "an autocreating POST over it")
    # The root's mailbox is writable by all (mode 0666): posting to it
    # creates nothing, so the limit does not apply.
    check(post(c, "root.open", msg("to root's"))[0] == 0,
          "a POST to another's mailbox is not refused")
    check("u.auto" not in names(c) and "u.more" not in names(c),
          "refused creations created nothing")
    # A temporary mailbox goes with its connection, and frees its place.
    c.s.close()
    c = client(path)
    deadline = time.time() + 10
    while "u.temp" in names(c) and time.time() < deadline:
        time.sleep(0.05)
    check("u.temp" not in names(c), "the temporary mailbox went with its "
          "connection")
    st, f = c.call("CREATE", field("MAILBOX", "u.again"))
    check(st == 0, "the closed connection's temporary mailbox made room: " +
          text_of(f))
    st, f = c.call("DELETE", field("MAILBOX", "u0"))
    check(st == 0, "DELETE u0")
    check(post(c, "u.auto", msg("now"))[0] == 0,
          "autocreate works again below the limit")


def admins(path, n):
    """Admins (root, the broker's uid) are not counted per uid."""
    cs = [client(path) for _ in range(n)]
    for c in cs:
        check(c.call("PING")[0] == 0, "admin connection works")


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def ping_ms(c):
    t = time.time()
    st, _ = c.call("PING")
    check(st == 0, "PING")
    return (time.time() - t) * 1000


def slow(path, pid):
    """A client that sends and never reads; a subscriber that never reads."""
    c = client(path)
    big = os.urandom(1 << 20)
    check(post(c, "big", msg(big))[0] == 0, "a 1 MiB message")
    for i in range(300):
        st, _ = post(c, "flood", msg(bytes([i % 256]) * 65536))
    other = client(path)
    ping_ms(other)
    before = rss_kb(pid)

    # 1. PEEKs of the 1 MiB message, replies never read.
    r = client(path)
    r.s.setblocking(False)
    sent, worst, blocked = 0, 0.0, None
    t_end = time.time() + 8
    while sent < 3000 and time.time() < t_end:
        try:
            r.send_frame(OP["PEEK"], field("MAILBOX", "big"))
            sent += 1
            blocked = None
        except BlockingIOError:
            # The broker stopped reading us. Others are still served.
            blocked = blocked or time.time()
            worst = max(worst, ping_ms(other))
            if time.time() - blocked > 1.5:
                break
            time.sleep(0.05)
    for _ in range(5):
        worst = max(worst, ping_ms(other))
    grown = (rss_kb(pid) - before) / 1024
    check(sent >= 16, "sent %d PEEKs of 1 MiB without reading" % sent)
    check(grown < 64, "broker RSS grew %.1f MiB (< 64) holding replies to "
          "a client that does not read" % grown)
    check(worst < 1000, "another client's PING took at most %.0f ms" % worst)

    # 2. A subscriber with a window of 1024 that does not read.
    s = client(path)
    st, _ = s.call("SUBSCRIBE", field("MAILBOX", "flood") +
                   field("COUNT", 1024))
    check(st == 0, "SUBSCRIBE, window 1024")
    time.sleep(1)
    st, f = other.call("LIST")
    info = [dict(fields(v)) for t, v in f if t == 28]
    leased = u64([i for i in info if i[TAG["MAILBOX"]] == b"flood"][0][30])
    check(leased < 250, "pushes stop once 8 MiB wait for the subscriber: "
          "%d of 300 leased" % leased)
    grown = (rss_kb(pid) - before) / 1024
    check(grown < 64, "broker RSS grew %.1f MiB (< 64) with both" % grown)
    check(ping_ms(other) < 1000, "PING still prompt")

    # Now both read: everything arrives, nothing was dropped.
    r.s.setblocking(True)
    r.s.settimeout(10)
    ok = 0
    for _ in range(sent):
        op, flags, rid, st, body = r.read_frame()
        ok += st == 0 and msgs_of(fields(body))[0][TAG["DATA"]] == big
    check(ok == sent, "all %d PEEK replies arrive, intact" % sent)
    got = s.pushed(300, 20)
    check(len(got) == 300, "the subscriber gets all 300 once it reads "
          "(got %d)" % len(got))
    check(sorted(m[TAG["DATA"]][0] for m in got) ==
          sorted(i % 256 for i in range(300)), "each message once")


if __name__ == "__main__":
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "requests":
        requests(path)
    elif mode == "unacked":
        unacked(path)
    elif mode == "connections":
        connections(path, int(sys.argv[4]))
    elif mode == "per-uid":
        per_uid(path, int(sys.argv[3]), sys.argv[4])
    elif mode == "mailboxes-per-uid":
        mailboxes_per_uid(path, int(sys.argv[3]))
    elif mode == "admins":
        admins(path, int(sys.argv[3]))
    elif mode == "slow":
        slow(path, int(sys.argv[3]))
    elif mode == "claim":
        claim(path)
    elif mode == "handoffs":
        handoffs(path)
    elif mode == "store-full":
        store_full(path)
    elif mode == "list-pages":
        list_pages(path, int(sys.argv[3]))
    elif mode == "subscriptions":
        subscriptions(path, int(sys.argv[3]), sys.argv[4])
EOF

py()
{
	timeout 60 python3 "$PY" "$SOCK" "$@" >"$T_DIR/py.out" 2>&1 || {
		cat "$T_DIR/py.out" >&2
		fail "limits.py $1 failed"
	}
	# The checks that say something (not each reply's id, not each PING).
	grep -v -e 'reply matches' -e '^ok: PING$' -e 'HELLO accepted' \
		-e 'unsolicited frame' "$T_DIR/py.out" |
		sed "s/^/# $1: /"
}

# ---- Options: validated, with clear messages ----
note "options"
for bad in "--max-unacked 0" "--max-connections -1" "--max-header-bytes 4097" \
	"--max-mailbox-bytes 12X" "--max-store-size 100" "--max-in-flight x" \
	"--max-mailboxes 99999999999"; do
	# shellcheck disable=SC2086
	expect_rc 2 "mboxd $bad" "$MBOXD" --socket "$SOCK" --db "$DB" $bad
	grep -q -- "${bad%% *} must be" "$T_DIR/rc.err" ||
		fail "mboxd $bad: no clear message: $(cat "$T_DIR/rc.err")"
done
"$MBOXD" --help | grep -q -- '--max-connections-per-uid N' ||
	fail "--help does not list the limits"

# ---- Requests over a limit ----
note "message, header, mailbox and in-flight limits"
start_broker --max-msg-size 4096 --max-header-bytes 100 --max-mailboxes 6 \
	--max-mailbox-msgs 3 --max-mailbox-bytes 1000 --max-in-flight 8
py requests
# Through mboxctl: the limit is named, the exit status is 1.
expect_rc 1 "mboxctl post to a full mailbox" mbctl post m0 more
grep -q 'max_mailbox_msgs' "$T_DIR/rc.err" ||
	fail "mboxctl does not name the limit: $(cat "$T_DIR/rc.err")"
expect_rc 1 "mboxctl create over max_mailboxes" mbctl create another
grep -q 'max_mailboxes' "$T_DIR/rc.err" ||
	fail "mboxctl does not name the limit: $(cat "$T_DIR/rc.err")"
stop_broker

note "max_unacked"
rm -f "$DB" "$DB"-*
start_broker --max-unacked 4
py unacked
stop_broker

note "CLAIM under max_unacked and max_out_bytes; max_handoffs"
rm -f "$DB" "$DB"-*
BROKER_SYNC=off start_broker --max-unacked 40
py claim
py handoffs
stop_broker

note "a full store still takes acks"
rm -f "$DB" "$DB"-*
BROKER_SYNC=off start_broker --max-store-size 1M
py store-full
stop_broker

note "LIST in pages"
rm -f "$DB" "$DB"-*
BROKER_SYNC=off start_broker --max-msg-size 4096
py list-pages 150
# libmbox follows the pages: mboxctl ls lists every one, each once.
assert_eq 150 "$(mbctl ls --json | sort -u | wc -l)" "mailboxes listed by mboxctl ls over pages"
stop_broker

note "max_subscriptions; CLIENTS of a connection with many"
rm -f "$DB" "$DB"-*
BROKER_SYNC=off start_broker --max-msg-size 4096 --max-subscriptions 400
py subscriptions 400 "$MBOXCTL"
expect_rc 2 "mboxd --max-subscriptions 0" "$MBOXD" --socket "$SOCK" --db "$DB" \
	--max-subscriptions 0
stop_broker

# ---- Connections ----
note "max_connections"
rm -f "$DB" "$DB"-*
start_broker --max-connections 4
py connections "$BROKER_PID" 4
# mboxctl is refused too while four are held, and says why.
mkfifo "$T_DIR/hold"
timeout 60 python3 -c '
import sys
from wire import Client
cs = [Client(sys.argv[1]) for _ in range(4)]
for c in cs: c.hello()
print("holding", flush=True)
sys.stdin.read()' "$SOCK" <"$T_DIR/hold" >"$T_DIR/hold.out" 2>&1 &
hold_pid=$!
track_pid "$hold_pid"
exec 7>"$T_DIR/hold"
wait_grep "$T_DIR/hold.out" '^holding' 100 ||
	fail "the connection holder did not start: $(cat "$T_DIR/hold.out")"
expect_rc 6 "mboxctl ping with max_connections reached" mbctl ping
# The broker's text names the limit (checked above, on the wire); mboxctl
# loses it when the connection fails, so only note what it printed.
grep -q 'max_connections' "$T_DIR/rc.err" ||
	note "mboxctl's message does not name the limit: $(cat "$T_DIR/rc.err")"
exec 7>&-
wait "$hold_pid" || fail "the connection holder failed: $(cat "$T_DIR/hold.out")"
untrack_pid "$hold_pid"
mbctl ping >/dev/null || fail "no connection once the holder left"
stop_broker

# An open-files limit below what max-connections (4096 by default) needs:
# the broker accepts as many as fit (150 less its 96 spare descriptors)
# and refuses the next with LIMIT, rather than leaving everyone's
# connections waiting in the listen backlog once accept fails.
if command -v prlimit >/dev/null 2>&1; then
	note "max_connections fitted to a hard open-files limit of 150"
	rm -f "$DB" "$DB"-*
	wrapper=$MBOXD_WRAPPER
	MBOXD_WRAPPER="prlimit --nofile=150:150 $wrapper"
	start_broker
	MBOXD_WRAPPER=$wrapper
	grep -q 'max-connections 4096 needs 4192 open files, but the limit is 150 (hard limit 150): accepting at most 54 connections' \
		"$T_DIR/mboxd.log" || fail "no warning about the open-files limit"
	py connections "$BROKER_PID" 54
	stop_broker
else
	note "SKIP the open-files limit: no prlimit"
fi

if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null 2>&1; then
	note "max_connections_per_uid (as uid 4011 through setpriv)"
	rm -f "$DB" "$DB"-*
	chmod 755 "$T_DIR"
	chmod 644 "$PY"
	start_broker --max-connections 6 --max-connections-per-uid 2
	mkfifo "$T_DIR/go"
	setpriv --reuid=4011 --regid=4011 --clear-groups \
		timeout 60 python3 "$PY" "$SOCK" per-uid 2 max_connections_per_uid \
		<"$T_DIR/go" >"$T_DIR/uid.out" 2>&1 &
	uid_pid=$!
	track_pid "$uid_pid"
	exec 8>"$T_DIR/go"
	wait_grep "$T_DIR/uid.out" '^holding' 100 ||
		fail "per-uid client: $(cat "$T_DIR/uid.out")"
	# Root is an admin: not counted per uid, only in max_connections
	# (6 - the 2 of uid 4011).
	py admins 4
	exec 8>&-
	wait "$uid_pid" || fail "per-uid client failed: $(cat "$T_DIR/uid.out")"
	untrack_pid "$uid_pid"
	grep -v -e 'reply matches' "$T_DIR/uid.out" | sed "s/^/# per-uid: /"
	stop_broker

	note "max_mailboxes_per_uid (as uid 4012 through setpriv)"
	rm -f "$DB" "$DB"-*
	start_broker --max-mailboxes-per-uid 3 --max-mailboxes 20
	# Root is an admin: its mailboxes are not counted per uid.
	for i in 1 2 3 4; do
		mbctl create "root.$i" || fail "root's mailbox $i refused"
	done
	mbctl create root.open --mode 0666 || fail "root.open refused"
	as_4012()
	{
		setpriv --reuid=4012 --regid=4012 --clear-groups "$@"
	}
	as_4012 timeout 60 python3 "$PY" "$SOCK" mailboxes-per-uid 3 \
		>"$T_DIR/uid.out" 2>&1 ||
		fail "mailboxes-per-uid: $(cat "$T_DIR/uid.out")"
	grep -v -e 'reply matches' -e 'HELLO accepted' "$T_DIR/uid.out" |
		sed "s/^/# mailboxes-per-uid: /"
	# u1, u.again and u.auto are the uid's three now; mboxctl says which
	# limit refused the fourth.
	rc=0
	as_4012 "$MBOXCTL" --socket "$SOCK" create u.cli >"$T_DIR/rc.out" \
		2>"$T_DIR/rc.err" || rc=$?
	assert_eq 1 "$rc" "exit status of mboxctl create over max_mailboxes_per_uid"
	grep -q 'max_mailboxes_per_uid' "$T_DIR/rc.err" ||
		fail "mboxctl does not name the limit: $(cat "$T_DIR/rc.err")"
	# An admin may give the uid more than that (CHOWN is not refused).
	mbctl chown root.1 4012 || fail "root cannot give a mailbox to uid 4012"
	# A higher limit lets the uid create again (restarted here; SIGHUP
	# is config.sh's).
	stop_broker
	start_broker --max-mailboxes-per-uid 5 --max-mailboxes 20
	as_4012 "$MBOXCTL" --socket "$SOCK" create u.cli ||
		fail "a higher max_mailboxes_per_uid did not apply"
	stop_broker
else
	note "SKIP max_connections_per_uid, max_mailboxes_per_uid: need root and setpriv to run a client as another uid"
fi

# ---- Backpressure ----
note "clients that do not read"
rm -f "$DB" "$DB"-*
BROKER_SYNC=off start_broker
py slow "$BROKER_PID"
mbctl ping >/dev/null || fail "mboxd does not answer after the slow readers"
stop_broker
