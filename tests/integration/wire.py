#!/usr/bin/env python3
"""A client written from doc/protocol.md alone, driving a real mboxd.

It checks what the C code cannot check about itself: that the document is
enough to talk to the broker, and how the broker treats frames libmbox
would never send (one byte over the limit, malformed bodies, broken
framing). Usage: wire.py SOCKET_PATH. Exits non-zero on the first failure.
"""
import os
import socket
import struct
import sys

DGRAM_MAX = 65536
MAX_MSG = 1048576

OP = dict(HELLO=1, PING=2, CREATE=3, POST=5, RECV=6, ACK=7, NACK=8,
          LIST=11, PEEK=12)
TAG = dict(MAILBOX=1, DATA=2, ID=3, COUNT=4, WAIT_MS=5, PRIORITY=6,
           LEASE_MS=9,
           HEADER=11, KEY=12, VALUE=13, MSG=14, DELIVERIES=16, TEXT=21,
           VERSION_MIN=22, VERSION_MAX=23, VERSION=24, MAX_MSG_SIZE=25,
           MAX_FRAME=26, SENDER_PID=17)
S = dict(OK=0, MALFORMED=1, UNKNOWN_OP=2, VERSION=3, NOT_FOUND=4,
         TOO_LARGE=9, INVALID=10, NOT_LEASED=11)


def field(tag, value):
    if isinstance(value, int):
        value = struct.pack("<Q", value)
    elif isinstance(value, str):
        value = value.encode()
    return struct.pack("<HI", TAG[tag] if isinstance(tag, str) else tag,
                       len(value)) + value


def fields(body):
    out, off = [], 0
    while off < len(body):
        tag, n = struct.unpack_from("<HI", body, off)
        out.append((tag, body[off + 6:off + 6 + n]))
        off += 6 + n
    return out


class Client:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.s.settimeout(10)
        self.s.connect(path)
        self.next_id = 1

    def send_frame(self, op, body, rid=None, flags=0, status=0):
        if rid is None:
            rid, self.next_id = self.next_id, self.next_id + 1
        frame = struct.pack("<HBBIII", op, flags, 1, rid, len(body),
                            status) + body
        for off in range(0, len(frame), DGRAM_MAX):
            self.s.send(frame[off:off + DGRAM_MAX])
        return rid

    def read_frame(self):
        d = self.s.recv(DGRAM_MAX)
        if not d:
            raise EOFError("broker closed the connection")
        op, flags, ver, rid, blen, status = struct.unpack_from("<HBBIII", d)
        body = d[16:]
        while len(body) < blen:
            body += self.s.recv(DGRAM_MAX)
        assert ver == 1 and len(body) == blen, "bad frame from broker"
        return op, flags, rid, status, body

    def call(self, op, body=b""):
        rid = self.send_frame(OP[op], body)
        while True:
            rop, flags, got, status, rbody = self.read_frame()
            if flags & 2:
                continue
            check(got == rid and rop == OP[op] and flags == 1,
                  "reply matches request %d" % rid)
            return status, fields(rbody)

    def hello(self):
        st, f = self.call("HELLO", field("VERSION_MIN", 1) +
                          field("VERSION_MAX", 1))
        check(st == 0, "HELLO accepted")
        return dict((t, v) for t, v in f)


def check(cond, what):
    if not cond:
        print("FAIL: " + what, file=sys.stderr)
        sys.exit(1)
    print("ok: " + what)


def text_of(f):
    return b"".join(v for t, v in f if t == TAG["TEXT"]).decode()


def main(path):
    c = Client(path)
    info = c.hello()
    check(struct.unpack("<Q", info[TAG["VERSION"]])[0] == 1, "version 1")
    max_msg = struct.unpack("<Q", info[TAG["MAX_MSG_SIZE"]])[0]
    check(max_msg == MAX_MSG, "MAX_MSG_SIZE is 1 MiB")
    check(struct.unpack("<Q", info[TAG["SENDER_PID"]])[0] == os.getpid(),
          "HELLO reports our pid as the kernel sees it")

    # The byte-exact example session of section 7.
    st, f = c.call("POST", field("MAILBOX", "q") +
                   field("MSG", field("DATA", "hi")))
    check(st == 0 and f[0][0] == TAG["ID"], "POST of the example")

    # At the limit, and one byte over: the broker itself must refuse.
    big = os.urandom(max_msg)
    st, f = c.call("POST", field("MAILBOX", "wire") +
                   field("MSG", field("DATA", big)))
    check(st == 0, "POST of exactly MAX_MSG_SIZE bytes")
    st, f = c.call("POST", field("MAILBOX", "wire") +
                   field("MSG", field("DATA", big + b"x")))
    check(st == S["TOO_LARGE"], "POST of MAX_MSG_SIZE + 1 is TOO_LARGE: " +
          text_of(f))
    st, f = c.call("RECV", field("MAILBOX", "wire") + field("COUNT", 10))
    msgs = [fields(v) for t, v in f if t == TAG["MSG"]]
    check(len(msgs) == 1, "only the message at the limit was stored")
    data = [v for t, v in msgs[0] if t == TAG["DATA"]][0]
    check(data == big, "the 1 MiB payload came back byte for byte")

    # A frame over MAX_FRAME is skipped whole; the connection lives on.
    max_frame = struct.unpack("<Q", info[TAG["MAX_FRAME"]])[0]
    st, f = c.call("POST", field("MAILBOX", "wire") +
                   field("MSG", field("DATA", b"y" * max_frame)))
    check(st == S["TOO_LARGE"], "frame over MAX_FRAME is TOO_LARGE")
    st, _ = c.call("PING")
    check(st == 0, "connection still serves after a skipped frame")

    # Malformed bodies get MALFORMED and the connection stays.
    bad = [
        (field("MAILBOX", "q")[:-1], "truncated field"),
        (field("MAILBOX", "q") + field("MAILBOX", "q"), "duplicate field"),
        (struct.pack("<HI", 99, 0), "unknown tag"),
        (field("MAILBOX", "q") + struct.pack("<HI", TAG["COUNT"], 3) +
         b"abc", "u64 of length 3"),
        (field("MAILBOX", b"\xff\xfe".decode("latin1")), "bad UTF-8"),
    ]
    for body, what in bad:
        if what == "bad UTF-8":
            body = struct.pack("<HI", 1, 2) + b"\xff\xfe"
        st, f = c.call("RECV", body)
        check(st == S["MALFORMED"], "%s is MALFORMED: %s" % (what,
                                                            text_of(f)))
    st, f = c.call("RECV", b"")
    check(st == S["MALFORMED"], "missing MAILBOX is MALFORMED: " + text_of(f))
    st, f = c.call("POST", field("MAILBOX", "q") + field("MSG", b""))
    check(st == S["MALFORMED"], "MSG without DATA is MALFORMED")
    st, f = c.call("POST", field("MAILBOX", "bad name!") +
                   field("MSG", field("DATA", "x")))
    check(st == S["INVALID"], "bad mailbox name is INVALID")
    st, f = c.call("POST", field("MAILBOX", "q") +
                   field("MSG", field("DATA", "x") + field("PRIORITY", 10)))
    check(st == S["INVALID"], "priority 10 is INVALID")
    st, f = c.call("RECV", field("MAILBOX", "q") + field("COUNT", 0))
    check(st == S["INVALID"], "COUNT 0 is INVALID")
    st, f = c.call("ACK", field("ID", 123456))
    check(st == S["NOT_LEASED"], "ACK of a message we never got: " +
          text_of(f))
    st, f = c.call("RECV", field("MAILBOX", "nosuch"))
    check(st == S["NOT_FOUND"], "RECV of a missing mailbox is NOT_FOUND")
    rid = c.send_frame(200, b"")
    op, flags, got, st, body = c.read_frame()
    check(got == rid and st == S["UNKNOWN_OP"], "unknown opcode")

    # Pipelining: three requests out, replies matched by id.
    ids = [c.send_frame(OP["PING"], b"") for _ in range(3)]
    got = sorted(c.read_frame()[2] for _ in range(3))
    check(got == sorted(ids), "pipelined replies carry their ids")

    # No HELLO first: VERSION error, then the broker hangs up.
    d = Client(path)
    st, f = d.call("PING")
    check(st == S["VERSION"], "request before HELLO is refused")
    try:
        d.read_frame()
        check(False, "connection closed after a missing HELLO")
    except (EOFError, ConnectionResetError):
        check(True, "connection closed after a missing HELLO")

    # Broken framing: a continuation longer than the frame closes it.
    e = Client(path)
    e.hello()
    e.s.send(struct.pack("<HBBIII", OP["PING"], 0, 1, 9, 1, 0) + b"xy")
    try:
        e.read_frame()
        check(False, "framing error closes the connection")
    except (EOFError, ConnectionResetError):
        check(True, "framing error closes the connection")

    # Everyone else is still served.
    st, _ = c.call("PING")
    check(st == 0, "the first connection is unaffected")

    # A lease that runs out: the message goes to the next reader with its
    # delivery count raised, and the late ACK is refused.
    st, f = c.call("POST", field("MAILBOX", "lease") +
                   field("MSG", field("DATA", "slow")))
    st, f = c.call("RECV", field("MAILBOX", "lease") +
                   field("LEASE_MS", 200))
    msg = dict(fields([v for t, v in f if t == TAG["MSG"]][0]))
    mid = struct.unpack("<Q", msg[TAG["ID"]])[0]
    g = Client(path)
    g.hello()
    st, f = g.call("RECV", field("MAILBOX", "lease") +
                   field("WAIT_MS", 5000))
    got = [dict(fields(v)) for t, v in f if t == TAG["MSG"]]
    check(len(got) == 1 and
          struct.unpack("<Q", got[0][TAG["ID"]])[0] == mid and
          struct.unpack("<Q", got[0][TAG["DELIVERIES"]])[0] == 2,
          "expired lease: redelivered to the next reader, deliveries 2")
    st, f = c.call("ACK", field("ID", mid))
    check(st == S["NOT_LEASED"], "late ACK after expiry is refused: " +
          text_of(f))
    st, f = g.call("ACK", field("ID", mid))
    check(st == 0, "the new holder acks it")


if __name__ == "__main__":
    main(sys.argv[1])
