#!/usr/bin/env python3
"""A client written from doc/protocol.md alone, driving a real mboxd.

It checks what the C code cannot check about itself: that the document is
enough to talk to the broker, and how the broker treats frames libmbox
would never send (one byte over the limit, malformed bodies, broken
framing). Usage: wire.py SOCKET_PATH. Exits non-zero on the first failure.
"""
import ctypes
import os
import resource
import signal
import socket
import struct
import sys
import time

DGRAM_MAX = 65536
MAX_MSG = 1048576

OP = dict(HELLO=1, PING=2, CREATE=3, DELETE=4, POST=5, RECV=6, ACK=7,
          NACK=8, TOUCH=9, REJECT=10, LIST=11, PEEK=12, SUBSCRIBE=13,
          UNSUBSCRIBE=14, PUBLISH=15, BIND=16, UNBIND=17, HANDOFF=23,
          PURGE=19, CLAIM=24, STAT=25, CLIENTS=26, STATS=27, SET=18,
          DELIVER=64, ENDED=65)
TAG = dict(MAILBOX=1, DATA=2, ID=3, COUNT=4, WAIT_MS=5, PRIORITY=6,
           DELAY_MS=7, TTL_MS=8, LEASE_MS=9, DEDUP=10,
           HEADER=11, KEY=12, VALUE=13, MSG=14, DELIVERIES=16, TEXT=21,
           VERSION_MIN=22, VERSION_MAX=23, VERSION=24, MAX_MSG_SIZE=25,
           MAX_FRAME=26, SENDER_PID=17, SETTING=27, DEAD=32, FLAGS=36,
           FROM_ID=37,
           DEAD_REASON=38, DEADLINE_NS=44, TOPIC=45, TOKEN=46,
           EXPIRES_NS=47, TIME_NS=15, INFO=28, READY=29, BYTES=33,
           LIMIT=40, SENDER_COMM=20, CLIENT=48,
           CONSUMERS=35, WAITING=56)
S = dict(OK=0, MALFORMED=1, UNKNOWN_OP=2, VERSION=3, NOT_FOUND=4,
         DENIED=5, EXISTS=6, LIMIT=7, TOO_LARGE=9, INVALID=10,
         NOT_LEASED=11, STORE=12, SHUTDOWN=13, NOT_EMPTY=14, BUSY=15)


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
        self.pushes = []
        # (MAILBOX, TEXT, messages pushed before it, TIME_NS) of each
        # ENDED push.
        self.ends = []
        self.n_pushed = 0

    def take_push(self, op, flags, rid, status, body):
        """Keep a push (sections 5.13 and 5.14) for pushed() or ended()."""
        check(flags == 2 and rid == 0 and status == 0 and
              op in (OP["DELIVER"], OP["ENDED"]),
              "an unsolicited frame is a DELIVER or ENDED push, id 0, "
              "status 0")
        if op == OP["DELIVER"]:
            got = msgs_of(fields(body))
            self.pushes += got
            self.n_pushed += len(got)
            return
        d = dict(fields(body))
        check(TAG["MAILBOX"] in d and TAG["TIME_NS"] in d,
              "ENDED names its MAILBOX and its TIME_NS")
        self.ends.append((d[TAG["MAILBOX"]].decode(),
                          d.get(TAG["TEXT"], b"").decode(), self.n_pushed,
                          u64(d[TAG["TIME_NS"]])))

    def wait_push(self, done, timeout):
        self.s.settimeout(timeout)
        try:
            while not done():
                self.take_push(*self.read_frame())
        except socket.timeout:
            pass
        finally:
            self.s.settimeout(10)

    def pushed(self, n, timeout=5.0):
        """Wait for n pushed messages (fewer if the time runs out)."""
        self.wait_push(lambda: len(self.pushes) >= n, timeout)
        got, self.pushes = self.pushes[:n], self.pushes[n:]
        return got

    def ended(self, n=1, timeout=5.0):
        """Wait for n ENDED pushes (fewer if the time runs out); each is
        (mailbox, text, messages pushed to this client before it,
        the mailbox's creation time)."""
        self.wait_push(lambda: len(self.ends) >= n, timeout)
        got, self.ends = self.ends[:n], self.ends[n:]
        return got

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
                # A push: keep it for pushed() or ended().
                self.take_push(rop, flags, got, status, rbody)
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


def u64(b):
    return struct.unpack("<Q", b)[0]


def msgs_of(f):
    """The MSG fields of a body as dicts tag -> value (first of each)."""
    out = []
    for t, v in f:
        if t == TAG["MSG"]:
            d = {}
            for tag, val in fields(v):
                d.setdefault(tag, val)
            out.append(d)
    return out


def value(f, tag):
    return [v for t, v in f if t == TAG[tag]][0]


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
    # Unless its header breaks the framing rules (section 2): then it
    # closes the connection, unanswered, whatever its size.
    for fl, sv in ((1, 0), (0, 5)):
        e = Client(path)
        e.hello()
        try:
            e.send_frame(OP["PING"], b"z" * (max_frame + 1), flags=fl,
                         status=sv)
            op, flags, got, st, body = e.read_frame()
            check(False, "a request over MAX_FRAME with flags %d status %d "
                  "closes the connection, but was answered %d: %s"
                  % (fl, sv, st, body))
        except (EOFError, ConnectionResetError, BrokenPipeError):
            check(True, "a request over MAX_FRAME with flags %d status %d "
                  "closes the connection, unanswered" % (fl, sv))

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
    # An operation of a newer protocol is UNKNOWN_OP whatever its body:
    # its fields may be as new to this broker as it is (section 4.4).
    for opcode, body in ((30, struct.pack("<HI", 60, 3) + b"abc"),
                         (31, field("MAILBOX", "q")[:-1]),
                         (OP["DELIVER"], field("MAILBOX", "q"))):
        rid = c.send_frame(opcode, body)
        op, flags, got, st, rbody = c.read_frame()
        check(got == rid and st == S["UNKNOWN_OP"],
              "unknown opcode %d with the body %r is UNKNOWN_OP, not %d: %r"
              % (opcode, body, st, rbody))

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

    mailbox_semantics(path)
    names(path)
    consumers(path)
    settings_limits(path)
    exclusive_unsubscribe(path)


def settings_limits(path):
    """The ranges of CREATE's and SET's settings (5.3, 5.17)."""
    c = Client(path)
    c.hello()

    def settings_of(mailbox):
        st, f = c.call("STAT", field("MAILBOX", mailbox))
        info = [v for t, v in f if t == TAG["INFO"]][0]
        return [v.decode() for t, v in fields(info) if t == TAG["SETTING"]]

    def create(mailbox, *kv):
        return c.call("CREATE", field("MAILBOX", mailbox) +
                      b"".join(field("SETTING", x) for x in kv))

    def set_(mailbox, *kv):
        return c.call("SET", field("MAILBOX", mailbox) +
                      b"".join(field("SETTING", x) for x in kv))

    st, f = create("lim1", "lease=8760h", "ttl=31536000000ms",
                   "max_deliveries=4294967295", "group=4294967294")
    check(st == 0, "a lease and ttl of a year, the largest max_deliveries "
          "and gid: %s" % text_of(f))
    got = settings_of("lim1")
    check("lease=31536000000ms" in got and "ttl=31536000000ms" in got and
          "max_deliveries=4294967295" in got, "STAT shows them: %r" % got)
    # An integer is its digits alone: no sign, no white space before it.
    for kv in ("lease=31536000001ms", "ttl=8761h",
               "max_deliveries=4294967296", "group=4294967295",
               "lease=" + "1" * 300, "max_msgs=\t5", "group=\n5",
               "max_bytes= 5", "max_deliveries=+5", "mode=\t600",
               "max_msgs=-1"):
        st, f = create("lim2", kv)
        check(st == S["INVALID"], "CREATE with %.40s is INVALID: %d %s"
              % (kv, st, text_of(f)))
        st, f = set_("lim1", kv)
        check(st == S["INVALID"] and "no setting was changed" in text_of(f),
              "SET of %.40s is INVALID: %d %s" % (kv, st, text_of(f)))
    st, f = create("lim2", "lease=31536000001ms")
    check("at most a year" in text_of(f), "the error says the bound: " +
          text_of(f))
    st, f = create("lim3", "lease=5", "lease=6")
    check(st == 0 and "lease=6000ms" in settings_of("lim3"),
          "a key given twice: the last value holds: %r" %
          settings_of("lim3"))


def consumers(path):
    """CONSUMERS (4.3) counts connections, each once, whether it waits
    in several RECVs, subscribes, or both."""
    def count(c, what, want):
        for st, f in ((c.call("STAT", field("MAILBOX", "cons"))),
                      (c.call("LIST"))):
            infos = [dict(fields(v)) for t, v in f if t == TAG["INFO"]]
            got = [u64(i[TAG["CONSUMERS"]]) for i in infos
                   if i[TAG["MAILBOX"]] == b"cons"]
            check(st == 0 and got == [want],
                  "%s: CONSUMERS %d: %r" % (what, want, got))

    a, b, o = Client(path), Client(path), Client(path)
    for c in (a, b, o):
        c.hello()
    st, f = o.call("CREATE", field("MAILBOX", "cons"))
    check(st == 0, "CREATE cons")
    count(o, "nobody waits", 0)
    for _ in range(3):
        a.send_frame(OP["RECV"], field("MAILBOX", "cons") +
                     field("WAIT_MS", 5000))
    st, f = b.call("SUBSCRIBE", field("MAILBOX", "cons"))
    check(st == 0, "SUBSCRIBE cons")
    b.send_frame(OP["RECV"], field("MAILBOX", "cons") +
                 field("WAIT_MS", 5000))
    deadline = time.time() + 5
    while time.time() < deadline:
        st, f = o.call("STAT", field("MAILBOX", "cons"))
        info = dict(fields([v for t, v in f if t == TAG["INFO"]][0]))
        if u64(info[TAG["WAITING"]]) == 4:
            break
        time.sleep(0.01)
    check(u64(info[TAG["WAITING"]]) == 4, "4 RECVs wait on cons")
    count(o, "3 RECVs of one connection, a subscriber also waiting", 2)
    for c in (a, b):
        c.s.close()


def exclusive_unsubscribe(path):
    """5.5, 5.12, 5.14: the active exclusive subscriber may RECV; when it
    unsubscribes, what its RECVs hold goes back and its waiting RECV
    ends, so the standby takes over in strict order."""
    c = Client(path)
    c.hello()
    st, f = c.call("CREATE", field("MAILBOX", "xu"))
    check(st == 0, "CREATE xu: " + text_of(f))
    a, b = Client(path), Client(path)
    a.hello()
    b.hello()
    st, f = a.call("SUBSCRIBE", field("MAILBOX", "xu") + field("FLAGS", 1))
    check(st == 0 and u64(value(f, "FLAGS")) == 0, "a: active exclusive")
    st, f = b.call("SUBSCRIBE", field("MAILBOX", "xu") + field("FLAGS", 1) +
                   field("COUNT", 4))
    check(st == 0 and u64(value(f, "FLAGS")) == 2, "b: standby")
    st, f = c.call("RECV", field("MAILBOX", "xu"))
    check(st == S["BUSY"], "RECV beside an exclusive subscriber is BUSY")
    ids = [post(c, "xu", "x%d" % i) for i in range(2)]
    got = a.pushed(1)
    check([u64(m[TAG["ID"]]) for m in got] == ids[:1],
          "a is pushed the first")
    st, f = a.call("RECV", field("MAILBOX", "xu"))
    check(st == 0 and [u64(m[TAG["ID"]]) for m in msgs_of(f)] == ids[1:],
          "the active subscriber's own RECV takes the second")
    recv_rid = a.send_frame(OP["RECV"], field("MAILBOX", "xu") +
                            field("WAIT_MS", 30000))
    unsub_rid = a.send_frame(OP["UNSUBSCRIBE"], field("MAILBOX", "xu"))
    replies = {}
    while len(replies) < 2:
        op, flags, rid, st, body = a.read_frame()
        if not flags & 2:
            replies[rid] = (st, fields(body))
    st, f = replies[recv_rid]
    check(st == 0 and msgs_of(f) == [],
          "UNSUBSCRIBE of the active one answers its waiting RECV empty")
    check(replies[unsub_rid][0] == 0, "UNSUBSCRIBE")
    got = b.pushed(2)
    check([u64(m[TAG["ID"]]) for m in got] == ids,
          "the standby takes over both, in order, the RECV's one too")
    later = post(c, "xu", "x2")
    got = b.pushed(1)
    check([u64(m[TAG["ID"]]) for m in got] == [later],
          "and what comes next")


def set_comm(name):
    """Name this process (prctl PR_SET_NAME, 15): any bytes will do."""
    libc = ctypes.CDLL(None, use_errno=True)
    check(libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0) == 0,
          "prctl(PR_SET_NAME)")


def names(path):
    """Strings the broker sends in str fields are UTF-8 (section 4.1)
    even when they come from elsewhere: a process name may be any bytes,
    and the kernel cuts it at 15 bytes, inside a character if it must;
    an error TEXT that quotes a long value is cut to fit, but never in
    the middle of a character."""
    with open("/proc/self/comm", "rb") as f:
        own = f.read().rstrip(b"\n")
    # The kernel's own newline at the end of /proc/PID/comm is not part
    # of the name; one in the name is a control character like any other.
    cases = [(b"\xff\xfe\x01bad", "???bad"),
             (b"abcdefghijklmn\xc3\xa9", "abcdefghijklmn"),
             (b"ab\ncd\x7fe", "ab?cd?e"),
             (b"abcdefghijklmn\n", "abcdefghijklmn?"),
             (b"", "")]
    r = Client(path)
    r.hello()
    for name, want in cases:
        set_comm(name)
        try:
            w = Client(path)
            w.hello()
        finally:
            set_comm(own)
        post(w, "names", b"from " + name)
        st, f = r.call("RECV", field("MAILBOX", "names"))
        m = msgs_of(f)
        check(st == 0 and len(m) == 1, "RECV of a post by %r" % name)
        try:
            comm = m[0][TAG["SENDER_COMM"]].decode()
        except UnicodeDecodeError:
            comm = m[0][TAG["SENDER_COMM"]]
        check(comm == want, "process name %r is sent as %r: %r"
              % (name, want, comm))
        st, f = r.call("ACK", field("ID", u64(m[0][TAG["ID"]])))
        check(st == 0, "ACK of it")
        st, f = r.call("CLIENTS")
        got = []
        for t, v in f:
            if t == TAG["CLIENT"]:
                got += [x.decode(errors="replace")
                        for tt, x in fields(v) if tt == TAG["SENDER_COMM"]]
        check(want in got, "CLIENTS shows it as %r: %r" % (want, got))
    st, f = r.call("CREATE", field("MAILBOX", "names2") +
                   field("SETTING", "max_msgs=" + "\u00e9" * 120))
    raw = b"".join(v for t, v in f if t == TAG["TEXT"])
    try:
        raw.decode()
        ok = True
    except UnicodeDecodeError:
        ok = False
    check(st == S["INVALID"] and ok and len(raw) > 200,
          "an error TEXT cut to fit is still UTF-8: %d %r" % (st, raw[-8:]))


def post(c, mailbox, data, extra=b""):
    st, f = c.call("POST", field("MAILBOX", mailbox) +
                   field("MSG", field("DATA", data) + extra))
    check(st == 0, "POST to %s: %s" % (mailbox, text_of(f)))
    return u64(value(f, "ID"))


def mailbox_semantics(path):
    """Sections 5.10 to 5.23, spoken from the document."""
    c = Client(path)
    c.hello()
    st, f = c.call("CREATE", field("MAILBOX", "sub") +
                   field("SETTING", "max_deliveries=2") +
                   field("SETTING", "ttl=0"))
    check(st == 0, "CREATE with max_deliveries and ttl: " + text_of(f))
    ids = [post(c, "sub", "m%d" % i) for i in range(4)]

    # SUBSCRIBE with a window of 2: two pushes, then nothing until an ACK.
    s = Client(path)
    s.hello()
    st, f = s.call("SUBSCRIBE", field("MAILBOX", "sub") + field("COUNT", 2))
    check(st == 0 and u64(value(f, "FLAGS")) == 0,
          "SUBSCRIBE answers FLAGS 0 (active)")
    got = s.pushed(2)
    check([u64(m[TAG["ID"]]) for m in got] == ids[:2],
          "DELIVER pushes the first two in order")
    check(all(TAG["DEADLINE_NS"] in m for m in got),
          "pushed messages carry DEADLINE_NS")
    check(s.pushed(1, 0.3) == [], "the window holds back the third")
    st, f = s.call("TOUCH", field("ID", ids[0]) + field("LEASE_MS", 60000))
    check(st == 0 and u64(value(f, "DEADLINE_NS")) > u64(
        got[0][TAG["DEADLINE_NS"]]), "TOUCH moves the deadline later")
    st, f = s.call("REJECT", field("ID", ids[0]))
    check(st == 0, "REJECT of a pushed message")
    check([u64(m[TAG["ID"]]) for m in s.pushed(1)] == [ids[2]],
          "REJECT opened the window: the third is pushed")
    st, f = c.call("PEEK", field("MAILBOX", "sub") + field("FLAGS", 1))
    dead = msgs_of(f)
    check(len(dead) == 1 and dead[0][TAG["DEAD_REASON"]] == b"rejected",
          "PEEK of the dead list shows it with DEAD_REASON rejected")
    st, f = s.call("ACK", field("ID", ids[0]))
    check(st == S["NOT_LEASED"], "ACK after REJECT is NOT_LEASED")

    # HANDOFF parks ids[1] and ids[2]; CLAIM pushes them before answering.
    st, f = s.call("HANDOFF", field("WAIT_MS", 10000))
    token = value(f, "TOKEN").decode()
    check(st == 0 and len(token) == 32 and u64(value(f, "COUNT")) == 2,
          "HANDOFF answers a 32-hex TOKEN and COUNT 2")
    st, f = s.call("ACK", field("ID", ids[1]))
    check(st == S["NOT_LEASED"], "ACK of a parked message is NOT_LEASED")
    t = Client(path)
    t.hello()
    st, f = t.call("CLAIM", field("TOKEN", "0" * 32))
    check(st == S["NOT_FOUND"], "CLAIM of an unknown token is NOT_FOUND")
    st, f = t.call("CLAIM", field("TOKEN", token))
    check(st == 0 and u64(value(f, "COUNT")) == 2, "CLAIM takes over 2")
    got = t.pushed(2)
    check([u64(m[TAG["ID"]]) for m in got] == ids[1:3] and
          all(u64(m[TAG["DELIVERIES"]]) == 1 for m in got),
          "claimed messages arrive unchanged, no redelivery counted")
    st, f = t.call("ACK", field("ID", ids[1]) + field("ID", ids[2]))
    check(st == 0, "the successor acks them")
    got = t.pushed(1)
    check([u64(m[TAG["ID"]]) for m in got] == [ids[3]],
          "the claimed subscription goes on pushing")
    # NACK twice with max_deliveries=2: dead with reason max-deliveries.
    st, f = t.call("NACK", field("ID", ids[3]))
    got = t.pushed(1)
    check(len(got) == 1 and u64(got[0][TAG["DELIVERIES"]]) == 2,
          "a NACKed message is pushed again, deliveries 2")
    st, f = t.call("NACK", field("ID", ids[3]))
    check(t.pushed(1, 0.3) == [], "after max_deliveries it is not pushed")
    st, f = c.call("PEEK", field("MAILBOX", "sub") + field("FLAGS", 1) +
                   field("COUNT", 10))
    check([m[TAG["DEAD_REASON"]] for m in msgs_of(f)] ==
          [b"rejected", b"max-deliveries"], "dead reasons in id order")
    # A parked subscription whose mailbox is deleted: the claimer gets
    # its ENDED at the CLAIM, before the reply (section 5.23).
    st, f = c.call("CREATE", field("MAILBOX", "ho-gone"))
    st2, f = s.call("SUBSCRIBE", field("MAILBOX", "ho-gone"))
    check(st == 0 and st2 == 0, "CREATE and SUBSCRIBE ho-gone")
    st, f = s.call("HANDOFF", field("WAIT_MS", 10000))
    token = value(f, "TOKEN").decode()
    check(st == 0 and u64(value(f, "COUNT")) == 0, "HANDOFF of ho-gone")
    st, f = c.call("DELETE", field("MAILBOX", "ho-gone"))
    check(st == 0, "DELETE ho-gone while its subscription is parked")
    u = Client(path)
    u.hello()
    st, f = u.call("CLAIM", field("TOKEN", token))
    check(st == 0 and u64(value(f, "COUNT")) == 0 and
          [(e[0], "deleted" in e[1]) for e in u.ends] == [("ho-gone", True)],
          "the claimer gets ho-gone's ENDED (the mailbox was deleted) "
          "before the CLAIM reply: %r" % u.ends)
    st, f = t.call("SUBSCRIBE", field("MAILBOX", "sub"))
    check(st == S["EXISTS"], "a second SUBSCRIBE is EXISTS")
    st, f = t.call("UNSUBSCRIBE", field("MAILBOX", "sub"))
    check(st == 0, "UNSUBSCRIBE")

    # After UNSUBSCRIBE the messages pushed stay leased but count against
    # no window: SUBSCRIBE again starts with its whole window (5.14).
    st, f = c.call("CREATE", field("MAILBOX", "rewin"))
    check(st == 0, "CREATE rewin")
    ids = [post(c, "rewin", "r%d" % i) for i in range(6)]
    st, f = t.call("SUBSCRIBE", field("MAILBOX", "rewin") + field("COUNT", 2))
    first = [u64(m[TAG["ID"]]) for m in t.pushed(2)]
    check(st == 0 and first == ids[:2] and t.pushed(1, 0.3) == [],
          "a window of 2 takes two of rewin: %r" % first)
    st, f = t.call("UNSUBSCRIBE", field("MAILBOX", "rewin"))
    check(st == 0, "UNSUBSCRIBE rewin")
    st, f = t.call("SUBSCRIBE", field("MAILBOX", "rewin") + field("COUNT", 2))
    second = [u64(m[TAG["ID"]]) for m in t.pushed(2)]
    check(st == 0 and second == ids[2:4] and t.pushed(1, 0.3) == [],
          "SUBSCRIBE again: a whole window of 2 more, with 2 still "
          "held: %r" % second)
    st, f = t.call("ACK", field("ID", first[0]) + field("ID", first[1]))
    check(st == 0 and t.pushed(1, 0.3) == [],
          "the first two are still leased, and their ACK opens no window")
    st, f = t.call("ACK", field("ID", second[0]))
    check(st == 0 and [u64(m[TAG["ID"]]) for m in t.pushed(1)] == [ids[4]],
          "an ACK of the new subscription's opens its window")
    st, f = t.call("UNSUBSCRIBE", field("MAILBOX", "rewin"))
    check(st == 0, "UNSUBSCRIBE rewin again")

    # NO_CREATE: a POST that must not create its mailbox.
    st, f = c.call("POST", field("MAILBOX", "reply.gone") +
                   field("FLAGS", 1) + field("MSG", field("DATA", "x")))
    check(st == S["NOT_FOUND"], "POST with NO_CREATE to a missing mailbox "
          "is NOT_FOUND: " + text_of(f))
    st, f = c.call("LIST")
    check(b"reply.gone" not in b"".join(v for t, v in f),
          "and the mailbox was not created")

    # OWNER_UID: only into a mailbox that uid owns (a server's reply).
    me = os.geteuid()
    st, f = c.call("CREATE", field("MAILBOX", "mine"))
    check(st == 0, "CREATE mine")
    st, f = c.call("POST", field("MAILBOX", "mine") +
                   field(41, me + 1) + field("MSG", field("DATA", "x")))
    check(st == S["DENIED"] and ("owned by uid %d" % me) in text_of(f),
          "POST with another OWNER_UID is DENIED, naming the owner: " +
          text_of(f))
    st, f = c.call("POST", field("MAILBOX", "reply.gone2") + field(41, me) +
                   field("MSG", field("DATA", "x")))
    check(st == S["NOT_FOUND"], "POST with OWNER_UID never creates: " +
          text_of(f))
    st, f = c.call("POST", field("MAILBOX", "mine") + field(41, me) +
                   field("MSG", field("DATA", "owned")))
    check(st == 0, "POST with the owner's OWNER_UID: " + text_of(f))
    st, f = c.call("PEEK", field("MAILBOX", "mine") + field("COUNT", 10))
    check([m[TAG["DATA"]] for m in msgs_of(f)] == [b"owned"],
          "only the POST with the owner's uid stored its message")

    # TTL and DEDUP on POST.
    a = post(c, "opts", "once", field("DEDUP", "key-1"))
    b = post(c, "opts", "twice", field("DEDUP", "key-1"))
    check(a == b, "a repeated DEDUP key answers the first id")
    post(c, "opts", "short", field("TTL_MS", 50))
    time.sleep(0.2)
    st, f = c.call("RECV", field("MAILBOX", "opts") + field("COUNT", 10) +
                   field("WAIT_MS", 100))
    got = [m[TAG["DATA"]] for m in msgs_of(f)]
    check(got == [b"once"], "an expired message is never delivered; the "
          "dedup repeat stored nothing: %r" % got)

    # Fan-out.
    for mb, pat in (("fan-a", "orders.*"), ("fan-b", "orders.>")):
        c.call("CREATE", field("MAILBOX", mb))
        st, f = c.call("BIND", field("MAILBOX", mb) + field("TOPIC", pat))
        check(st == 0, "BIND %s %s: %s" % (mb, pat, text_of(f)))
    st, f = c.call("PUBLISH", field("TOPIC", "orders.eu") +
                   field("MSG", field("DATA", "x")))
    check(st == 0 and u64(value(f, "COUNT")) == 2 and
          len([1 for t, v in f if t == TAG["ID"]]) == 2,
          "PUBLISH stores one copy per matching mailbox, with their ids")
    st, f = c.call("BIND", field("MAILBOX", "fan-a") +
                   field("TOPIC", "a.>.b"))
    check(st == S["INVALID"], "'>' not last is INVALID: " + text_of(f))
    st, f = c.call("DELETE", field("MAILBOX", "fan-a"))
    check(st == S["NOT_EMPTY"], "DELETE of a non-empty mailbox: " +
          text_of(f))
    st, f = c.call("DELETE", field("MAILBOX", "fan-a") + field("FLAGS", 1))
    check(st == 0, "DELETE with FORCE")


def shutdown(path):
    """Run against a broker that the caller stops (SIGTERM) once this
    prints "waiting": a RECV still waiting then gets its one reply,
    SHUTDOWN (section 3.2), before the connection closes."""
    c = Client(path)
    c.hello()
    c.call("CREATE", field("MAILBOX", "idle"))
    rid = c.send_frame(OP["RECV"], field("MAILBOX", "idle") +
                       field("WAIT_MS", 60000))
    print("waiting", flush=True)
    c.s.settimeout(30)
    op, flags, got, st, body = c.read_frame()
    check(op == OP["RECV"] and got == rid and flags == 1 and
          st == S["SHUTDOWN"],
          "a waiting RECV is answered SHUTDOWN when the broker stops: "
          "status %d" % st)
    check("stopping" in text_of(fields(body)),
          "its TEXT says why: " + text_of(fields(body)))
    try:
        d = c.s.recv(DGRAM_MAX)
    except OSError:
        d = b""
    check(d == b"", "then the broker closes the connection")


def small_frames(path):
    """Run against a broker started with --max-msg-size 0, so that
    MAX_FRAME is the slack alone (section 2)."""
    c = Client(path)
    info = c.hello()
    check(u64(info[TAG["MAX_MSG_SIZE"]]) == 0, "MAX_MSG_SIZE 0")
    frame = u64(info[TAG["MAX_FRAME"]])
    # LIST pages end at MAX_MSG_SIZE bytes, but never before one INFO:
    # paging on gets every mailbox, one a page here.
    names = ["page-%d" % i for i in range(3)]
    for n in names:
        st, f = c.call("CREATE", field("MAILBOX", n))
        check(st == 0, "CREATE " + n)
    seen, after = [], None
    for _ in range(100):
        st, f = c.call("LIST", field("MAILBOX", after) if after else b"")
        infos = [dict(fields(v)) for t, v in f if t == TAG["INFO"]]
        flags = [u64(v) for t, v in f if t == TAG["FLAGS"]]
        check(st == 0 and infos, "each LIST page holds an INFO")
        seen += [i[TAG["MAILBOX"]].decode() for i in infos]
        after = seen[-1]
        if not (flags and flags[0] & 1):
            break
    check(not (flags and flags[0] & 1) and seen == sorted(set(seen)) and
          set(names) <= set(seen),
          "paging LIST gets every mailbox once, in order: %r" % seen)
    # A PUBLISH whose reply (an ID of 14 bytes per copy) would not fit
    # in MAX_FRAME is refused, and stores nothing.
    fan = frame // 14
    for i in range(fan):
        mb = "fan-%05d" % i
        st, f = c.call("CREATE", field("MAILBOX", mb))
        st2, f2 = c.call("BIND", field("MAILBOX", mb) +
                         field("TOPIC", "wide.t"))
        if st or st2:
            check(False, "CREATE and BIND %s: %s %s" %
                  (mb, text_of(f), text_of(f2)))
    st, f = c.call("PUBLISH", field("TOPIC", "wide.t") +
                   field("MSG", field("DATA", "")))
    check(st == S["LIMIT"] and value(f, "LIMIT") == b"max_frame",
          "PUBLISH to %d mailboxes, a reply over MAX_FRAME %d, is LIMIT "
          "max_frame: %s" % (fan, frame, text_of(f)))
    st, f = c.call("RECV", field("MAILBOX", "fan-00000"))
    check(st == 0 and not msgs_of(f), "and no copy was stored")
    for i in range(fan - 8, fan):
        st, f = c.call("UNBIND", field("MAILBOX", "fan-%05d" % i) +
                       field("TOPIC", "wide.t"))
        check(st == 0, "UNBIND")
    st, f = c.call("PUBLISH", field("TOPIC", "wide.t") +
                   field("MSG", field("DATA", "")))
    check(st == 0 and u64(value(f, "COUNT")) == fan - 8,
          "a PUBLISH whose reply fits goes through: %s" % text_of(f))


def rolled_back(path, pid):
    """Run against a broker (pid) whose files may not grow past 512 KiB
    (a soft RLIMIT_FSIZE, SIGXFSZ ignored): its WAL fills, and a commit fails
    at its write. What a failed commit takes back must never be shown:
    a PEEK, STAT or LIST that comes in the same batch as the failed
    POST is answered after the rollback. Then, with room again, such a
    read shows nothing its own connection sent after it."""
    pid = int(pid)
    c = Client(path)
    c.hello()
    st, f = c.call("CREATE", field("MAILBOX", "rb"))
    check(st == 0, "CREATE rb: " + text_of(f))
    # A temporary mailbox whose creator hangs up in the batch that fails
    # (below): its deletion is rolled back too, and must be tried again.
    t = Client(path)
    t.hello()
    st, f = t.call("CREATE", field("MAILBOX", "rb-temp") +
                   field("SETTING", "temp=1"))
    check(st == 0, "CREATE rb-temp, temporary: " + text_of(f))
    # Fill: 8 posts of 1 KiB a POST (a few WAL pages a commit) until one
    # fails; at most 4000 POSTs.
    kept, failed = [], None
    for i in range(4000):
        body = field("MAILBOX", "rb")
        datas = [b"%06d-%06d-" % (i, k) + b"k" * 1010 for k in range(8)]
        for d in datas:
            body += field("MSG", field("DATA", d))
        st, f = c.call("POST", body)
        if st:
            failed = (st, text_of(f))
            break
        ids = [u64(v) for t, v in f if t == TAG["ID"]]
        kept += list(zip(ids, datas))
    check(failed and failed[0] == S["STORE"] and "full" in failed[1],
          "a POST past the file size limit fails STORE, disk full: %r"
          % (failed,))
    check(len(kept) >= 8, "%d messages were stored first" % len(kept))
    # The broker refuses posts for a second after a full store, without
    # trying them; this one must reach the store.
    time.sleep(1.2)
    # Five overflow pages at least, more than the last POST failed to
    # write; small enough that the four requests fit in the socket's
    # send buffer while the broker does not read.
    ghost = b"ghost-" + b"g" * 40000
    os.kill(pid, signal.SIGSTOP)
    try:
        # Queued while the broker is stopped: all four are read in one
        # loop iteration, so they fall into one batch.
        rpost = c.send_frame(OP["POST"], field("MAILBOX", "rb") +
                             field("MSG", field("DATA", ghost)))
        rpeek = c.send_frame(OP["PEEK"], field("MAILBOX", "rb") +
                             field("COUNT", 1024) + field("FLAGS", 2) +
                             field("FROM_ID", kept[-1][0]))
        rstat = c.send_frame(OP["STAT"], field("MAILBOX", "rb"))
        rlist = c.send_frame(OP["LIST"], b"")
        t.s.close()
    finally:
        os.kill(pid, signal.SIGCONT)
    replies = {}
    for _ in range(4):
        op, flags, rid, st, body = c.read_frame()
        replies[rid] = (st, fields(body))
    st, f = replies[rpost]
    check(st == S["STORE"], "the 40 KB POST fails at its commit: %d %s"
          % (st, text_of(f)))
    st, f = replies[rpeek]
    datas = [m[TAG["DATA"]] for m in msgs_of(f)]
    check(st == 0 and datas == [kept[-1][1]],
          "PEEK in the same batch shows the last stored message and not "
          "the post that was rolled back: %r" % [d[:12] for d in datas])

    def ready_of(f, what, mailbox=b"rb"):
        infos = [dict(fields(v)) for t, v in f if t == TAG["INFO"]]
        rb = [i for i in infos if i[TAG["MAILBOX"]] == mailbox]
        check(len(rb) == 1, "%s has %s's INFO" % (what, mailbox.decode()))
        return u64(rb[0][TAG["READY"]]), u64(rb[0][TAG["BYTES"]])

    want = (len(kept), sum(len(d) for _, d in kept))
    for name, rid in (("STAT", rstat), ("LIST", rlist)):
        st, f = replies[rid]
        got = ready_of(f, name) if st == 0 else (st, text_of(f))
        check(got == want, "%s in the same batch counts %d ready, %d "
              "bytes: %r" % (name, want[0], want[1], got))
    # Room again (the soft limit raised to the hard one, as a disk
    # freed): posts succeed, and every message stored before is there,
    # once, in order.
    hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
    time.sleep(1.2)
    after = post(c, "rb", "after")
    got = []
    for _ in range(len(kept) // 1024 + 2):
        st, f = c.call("RECV", field("MAILBOX", "rb") + field("COUNT", 1024))
        check(st == 0, "RECV rb: " + text_of(f))
        ms = msgs_of(f)
        if not ms:
            break
        got += [(u64(m[TAG["ID"]]), m[TAG["DATA"]]) for m in ms]
        st, f = c.call("ACK", b"".join(field("ID", i) for i, _ in
                                       got[-len(ms):]))
        check(st == 0, "ACK: " + text_of(f))
    check(got == kept + [(after, b"after")],
          "every stored message is received once, in order, then the "
          "post made after room came back; the failed ones never "
          "(%d received, %d expected)" % (len(got), len(kept) + 1))
    # The temporary mailbox goes once its deletion can be committed.
    names = None
    for _ in range(50):
        st, f = c.call("LIST", b"")
        names = [dict(fields(v))[TAG["MAILBOX"]] for t, v in f
                 if t == TAG["INFO"]]
        if b"rb-temp" not in names:
            break
        time.sleep(0.1)
    check(b"rb-temp" not in names, "the temporary mailbox of a connection "
          "closed in a failed batch is deleted once there is room: %r"
          % names)
    # A read waiting for the batch holds its connection: it shows
    # nothing that connection sent after it (section 3.2). POST opens
    # the batch, so PEEK and STAT wait; DELETE comes after them.
    kids = [post(c, "keep", "k%d" % i) for i in range(3)]
    os.kill(pid, signal.SIGSTOP)
    try:
        rids = [c.send_frame(OP["POST"], field("MAILBOX", "other") +
                             field("MSG", field("DATA", "o"))),
                c.send_frame(OP["PEEK"], field("MAILBOX", "keep") +
                             field("COUNT", 10)),
                c.send_frame(OP["STAT"], field("MAILBOX", "keep")),
                c.send_frame(OP["DELETE"], field("MAILBOX", "keep") +
                             field("FLAGS", 1))]
    finally:
        os.kill(pid, signal.SIGCONT)
    replies = {}
    for _ in rids:
        op, flags, rid, st, body = c.read_frame()
        replies[rid] = (st, fields(body))
    st, f = replies[rids[1]]
    check(st == 0 and [u64(m[TAG["ID"]]) for m in msgs_of(f)] == kids,
          "a PEEK sent before a DELETE on its connection shows the "
          "messages: %d %s" % (st, text_of(f)))
    st, f = replies[rids[2]]
    check(st == 0 and ready_of(f, "STAT", b"keep")[0] == 3,
          "so does a STAT: %d %s" % (st, text_of(f)))
    check(replies[rids[0]][0] == 0 and replies[rids[3]][0] == 0,
          "the POST and the DELETE succeed")


if __name__ == "__main__":
    {"main": main, "shutdown": shutdown, "small_frames": small_frames,
     "rolled_back": rolled_back}[
        sys.argv[2] if len(sys.argv) > 2 else "main"](sys.argv[1],
                                                      *sys.argv[3:])
