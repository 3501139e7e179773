#!/usr/bin/env python3
"""gen-corpus.py - write the seed corpus of the fuzz targets.

    python3 tests/fuzz/gen-corpus.py [OUTDIR]

writes OUTDIR/corpus-frame/* and OUTDIR/corpus-dispatch/* (OUTDIR defaults
to this script's directory), replacing the seeds it owns (names starting
with "seed-") and leaving any other file (crash reproducers added by hand)
alone. The frames are written from doc/protocol.md: a valid request of
every operation, replies and pushes, and the edge cases of sections 2 and
4.2. Output is deterministic.

Input formats (see fuzz-frame.c and fuzz-dispatch.c):
  frame:    u8 max_body/256, then datagrams as u16 LE length + bytes
  dispatch: records of u8 ctl, u8 opcode, u16 LE length, payload
"""
import os
import struct
import sys

# doc/protocol.md section 5 opcodes
OP = dict(HELLO=1, PING=2, CREATE=3, DELETE=4, POST=5, RECV=6, ACK=7,
          NACK=8, TOUCH=9, REJECT=10, LIST=11, PEEK=12, SUBSCRIBE=13,
          UNSUBSCRIBE=14, PUBLISH=15, BIND=16, UNBIND=17, SET=18, PURGE=19,
          KICK=20, PAUSE=21, RESUME=22, HANDOFF=23, CLAIM=24, STAT=25,
          CLIENTS=26, STATS=27, CHMOD=28, CHOWN=29, DELIVER=64)
# section 4.3 tags
T = dict(MAILBOX=1, DATA=2, ID=3, COUNT=4, WAIT_MS=5, PRIORITY=6,
         DELAY_MS=7, TTL_MS=8, LEASE_MS=9, DEDUP=10, HEADER=11, KEY=12,
         VALUE=13, MSG=14, TIME_NS=15, DELIVERIES=16, SENDER_PID=17,
         SENDER_UID=18, SENDER_GID=19, SENDER_COMM=20, TEXT=21,
         VERSION_MIN=22, VERSION_MAX=23, VERSION=24, MAX_MSG_SIZE=25,
         MAX_FRAME=26, SETTING=27, INFO=28, READY=29, LEASED=30,
         DELAYED=31, DEAD=32, BYTES=33, OLDEST_NS=34, CONSUMERS=35,
         FLAGS=36, FROM_ID=37, DEAD_REASON=38, SERVER=39, LIMIT=40,
         OWNER_UID=41, GROUP_GID=42, MODE=43, DEADLINE_NS=44, TOPIC=45,
         TOKEN=46, EXPIRES_NS=47)
FLAG_REPLY, FLAG_PUSH = 0x01, 0x02
DGRAM_MAX = 65536
HDR = 16


def field(tag, value):
    if isinstance(tag, str):
        tag = T[tag]
    if isinstance(value, str):
        value = value.encode()
    return struct.pack('<HI', tag, len(value)) + value


def u64(tag, v):
    return field(tag, struct.pack('<Q', v))


def nest(tag, *fields):
    return field(tag, b''.join(fields))


def header(op, body_len, ident=1, flags=0, status=0, version=1):
    if isinstance(op, str):
        op = OP[op]
    return struct.pack('<HBBIII', op, flags, version, ident, body_len,
                       status)


def frame(op, body=b'', ident=1, flags=0, status=0):
    return header(op, len(body), ident, flags, status) + body


def msg(data, *extra):
    return nest('MSG', field('DATA', data), *extra)


def hdr_kv(k, v):
    return nest('HEADER', field('KEY', k), field('VALUE', v))


def deep_nest(levels):
    inner = field('DATA', 'x')
    for i in range(levels):
        inner = nest('MSG' if i % 2 == 0 else 'HEADER', inner)
    return inner


# A valid request body of every operation (section 5).
TOKEN = '0123456789abcdef0123456789abcdef'
REQUESTS = {
    'hello': ('HELLO', u64('VERSION_MIN', 1) + u64('VERSION_MAX', 1)),
    'ping': ('PING', b''),
    'create': ('CREATE', field('MAILBOX', 'q') +
               field('SETTING', 'lease=5s') +
               field('SETTING', 'max_msgs=10') +
               field('SETTING', 'mode=0666') +
               field('SETTING', 'ttl=1h') +
               field('SETTING', 'max_deliveries=2')),
    'create-temp': ('CREATE', field('MAILBOX', 'tmp.1') +
                    field('SETTING', 'temp=1')),
    'post': ('POST', field('MAILBOX', 'q') + msg('hi')),
    'post-full': ('POST', field('MAILBOX', 'q') +
                  msg('hello', u64('PRIORITY', 9), u64('TTL_MS', 60000),
                      field('DEDUP', 'k1'),
                      hdr_kv('reply-to', 'r'),
                      hdr_kv('correlation-id', 'c1'),
                      hdr_kv('content-type', 'text/plain')) +
                  msg('later', u64('DELAY_MS', 1)) +
                  msg('dup', field('DEDUP', 'k1'))),
    'recv': ('RECV', field('MAILBOX', 'q') + u64('COUNT', 10) +
             u64('WAIT_MS', 0) + u64('LEASE_MS', 30000)),
    'ack': ('ACK', u64('ID', 1)),
    'nack': ('NACK', u64('ID', 1) + u64('ID', 2) + u64('DELAY_MS', 0)),
    'touch': ('TOUCH', u64('ID', 1) + u64('LEASE_MS', 1000)),
    'reject': ('REJECT', u64('ID', 1)),
    'list': ('LIST', b''),
    'peek': ('PEEK', field('MAILBOX', 'q') + u64('COUNT', 5) +
             u64('FROM_ID', 0) + u64('FLAGS', 0)),
    'peek-dead': ('PEEK', field('MAILBOX', 'q') + u64('FLAGS', 1)),
    'subscribe': ('SUBSCRIBE', field('MAILBOX', 'q') + u64('COUNT', 2) +
                  u64('LEASE_MS', 10000)),
    'subscribe-excl': ('SUBSCRIBE', field('MAILBOX', 'q') +
                       u64('FLAGS', 1)),
    'unsubscribe': ('UNSUBSCRIBE', field('MAILBOX', 'q')),
    'publish': ('PUBLISH', field('TOPIC', 'jobs.eu.created') +
                msg('evt', hdr_kv('k', 'v'))),
    'bind': ('BIND', field('MAILBOX', 'q') + field('TOPIC', 'jobs.*.created')),
    'bind-tail': ('BIND', field('MAILBOX', 'q') + field('TOPIC', 'jobs.>')),
    'unbind': ('UNBIND', field('MAILBOX', 'q') +
               field('TOPIC', 'jobs.*.created')),
    'set': ('SET', field('MAILBOX', 'q') + field('SETTING', 'lease=100ms') +
            field('SETTING', 'max_bytes=100000')),
    'purge': ('PURGE', field('MAILBOX', 'q')),
    'purge-dead': ('PURGE', field('MAILBOX', 'q') + u64('FLAGS', 1)),
    'kick': ('KICK', field('MAILBOX', 'q') + u64('COUNT', 1)),
    'pause': ('PAUSE', field('MAILBOX', 'q')),
    'resume': ('RESUME', field('MAILBOX', 'q')),
    'handoff': ('HANDOFF', u64('WAIT_MS', 1000)),
    'claim': ('CLAIM', field('TOKEN', TOKEN)),
    'chmod': ('CHMOD', field('MAILBOX', 'q') + u64('MODE', 0o666)),
    'chown': ('CHOWN', field('MAILBOX', 'q') + u64('OWNER_UID', 65534) +
              u64('GROUP_GID', 65534)),
    'delete': ('DELETE', field('MAILBOX', 'q')),
    'delete-force': ('DELETE', field('MAILBOX', 'q') + u64('FLAGS', 1)),
    'stat': ('STAT', field('MAILBOX', 'q')),
}

# Bodies that section 4.2 calls malformed.
MALFORMED = {
    'truncated-header': field('MAILBOX', 'q')[:4],
    'truncated-value': field('MAILBOX', 'qqqq')[:-2],
    'unknown-tag': field(99, 'x'),
    'tag-zero': field(0, ''),
    'u64-short': field('COUNT', b'\x01\x00\x00'),
    'bad-utf8': field('MAILBOX', b'\xc3\x28'),
    'overlong-utf8': field('TEXT', b'\xc0\xaf'),
    'surrogate-utf8': field('TEXT', b'\xed\xa0\x80'),
    'nul-in-str': field('MAILBOX', b'q\x00'),
    'duplicate': field('MAILBOX', 'q') + field('MAILBOX', 'r'),
    'nest-bad': field('MAILBOX', 'q') + nest('MSG', field('DATA', 'x')[:3]),
    'nest-deep': field('MAILBOX', 'q') + deep_nest(5),
    'sender-forged': field('MAILBOX', 'q') + msg('x') +
    u64('SENDER_UID', 0),
    'huge-len': struct.pack('<HI', T['DATA'], 0xffffffff),
}


def frame_seed(max_body_units, dgrams):
    out = bytes([max_body_units])
    for d in dgrams:
        assert len(d) <= 0xffff
        out += struct.pack('<H', len(d)) + d
    return out


def split(fr, first, rest):
    """Split a frame into a first datagram of `first` bytes and
    continuations of `rest` bytes (the assembler takes any sizes)."""
    out = [fr[:first]]
    off = first
    while off < len(fr):
        out.append(fr[off:off + rest])
        off += rest
    return out


def frame_seeds():
    s = {}
    for name, (op, body) in REQUESTS.items():
        s['req-' + name] = frame_seed(255, [frame(op, body, 7)])
    for name, body in MALFORMED.items():
        s['malformed-' + name] = frame_seed(255, [frame('POST', body)])
    # Replies and pushes, with the nests a client decodes.
    full_msg = msg('payload', u64('ID', 42), field('MAILBOX', 'q'),
                   u64('PRIORITY', 3), u64('DELIVERIES', 1),
                   u64('TIME_NS', 1700000000000000000),
                   u64('SENDER_PID', 1234), u64('SENDER_UID', 1000),
                   u64('SENDER_GID', 1000), field('SENDER_COMM', 'poster'),
                   u64('DEADLINE_NS', 1700000060000000000),
                   u64('EXPIRES_NS', 1700000600000000000),
                   hdr_kv('reply-to', 'r'), hdr_kv('k2', 'v\u00e9'))
    s['reply-hello'] = frame_seed(255, [frame(
        'HELLO', u64('VERSION', 1) + u64('MAX_MSG_SIZE', 1048576) +
        u64('MAX_FRAME', 2162688) + field('SERVER', 'mboxd 0.1.0') +
        u64('SENDER_PID', 1) + u64('SENDER_UID', 0) + u64('SENDER_GID', 0),
        1, FLAG_REPLY)])
    s['reply-recv'] = frame_seed(255, [frame('RECV', full_msg, 3,
                                             FLAG_REPLY)])
    s['push-deliver'] = frame_seed(255, [frame('DELIVER', full_msg + full_msg,
                                               0, FLAG_PUSH)])
    s['reply-peek-dead'] = frame_seed(255, [frame(
        'PEEK', msg('x', u64('ID', 5), field('DEAD_REASON', 'expired')),
        4, FLAG_REPLY)])
    info = nest('INFO', field('MAILBOX', 'q'), u64('READY', 1),
                u64('LEASED', 0), u64('DELAYED', 0), u64('DEAD', 0),
                u64('BYTES', 2), u64('OLDEST_NS', 1), u64('CONSUMERS', 0),
                u64('OWNER_UID', 0), u64('GROUP_GID', 0), u64('MODE', 0o600))
    s['reply-list'] = frame_seed(255, [frame('LIST', info + info, 5,
                                             FLAG_REPLY)])
    s['reply-error'] = frame_seed(255, [frame(
        'POST', field('TEXT', 'mailbox full') + field('LIMIT', 'max_msgs'),
        6, FLAG_REPLY, 8)])
    s['reply-handoff'] = frame_seed(255, [frame(
        'HANDOFF', field('TOKEN', TOKEN) + u64('DEADLINE_NS', 1) +
        u64('COUNT', 2), 8, FLAG_REPLY)])
    s['reply-publish'] = frame_seed(255, [frame(
        'PUBLISH', u64('COUNT', 2) + u64('ID', 1) + u64('ID', 2), 9,
        FLAG_REPLY)])
    # Section 7, byte by byte.
    s['session-section7'] = frame_seed(255, [
        frame('HELLO', REQUESTS['hello'][1], 1),
        frame('POST', field('MAILBOX', 'q') + msg('hi'), 2),
        frame('POST', u64('ID', 1), 2, FLAG_REPLY)])
    # Continuations: a body over several datagrams, of uneven sizes.
    big = frame('POST', field('MAILBOX', 'q') + msg('x' * 600 + 'y' * 300,
                                                   hdr_kv('a', 'b')), 11)
    s['cont-uneven'] = frame_seed(255, split(big, 40, 97))
    s['cont-header-only'] = frame_seed(255, split(big, HDR, 512))
    s['cont-empty-dgram'] = frame_seed(255, [big[:100], b'', big[100:]])
    s['cont-two-frames'] = frame_seed(255, split(big, 30, 200) +
                                      [frame('PING', b'', 12)])
    # Too large: skipped without buffering, then the next frame is fine.
    s['too-large-one'] = frame_seed(1, [big])
    s['too-large-split'] = frame_seed(1, split(big, 100, 300) +
                                      [frame('PING', b'', 13)])
    s['max-body-zero'] = frame_seed(0, [frame('PING'), big])
    # Framing errors (section 2), each followed by a good frame.
    ping = frame('PING', b'', 14)
    s['err-short'] = frame_seed(255, [ping[:10], ping])
    s['err-version'] = frame_seed(255, [header('PING', 0, version=2), ping])
    s['err-flags'] = frame_seed(255, [header('PING', 0, flags=0x80), ping])
    s['err-extra-bytes'] = frame_seed(255, [ping + b'xx', ping])
    s['err-cont-too-long'] = frame_seed(255, [big[:50], big[50:] + b'z',
                                              ping])
    s['err-empty'] = frame_seed(255, [b'', ping])
    s['unknown-op'] = frame_seed(255, [frame(0xbeef, field('MAILBOX', 'q'))])
    # topics and patterns for topic.c
    s['topics'] = frame_seed(255, [frame(
        'PUBLISH', field('TOPIC', 'a.b-c.d_e') +
        msg('x', hdr_kv('a.*.d_e', 'a.b-c.d_e'), hdr_kv('a.>', 'a.b'),
            hdr_kv('>', 'x'), hdr_kv('*.*', 'a..b'), hdr_kv('a.>.b', 'a.c.b')),
        15)])
    return s


# dispatch records
A, B = 0x00, 0x01
WAIT, PUMP, RAW = 0x20, 0x40, 0x80


def rec(op, body=b'', ctl=PUMP):
    if isinstance(op, str):
        op = OP[op]
    assert len(body) <= 0xffff
    return struct.pack('<BBH', ctl, op & 0xff, len(body)) + body


def raw(dgram, ctl=PUMP):
    return struct.pack('<BBH', ctl | RAW, 0, len(dgram)) + dgram


def req(name, ctl=PUMP):
    op, body = REQUESTS[name]
    return rec(op, body, ctl)


def create(name, *settings, ctl=PUMP):
    return rec('CREATE', field('MAILBOX', name) +
               b''.join(field('SETTING', x) for x in settings), ctl)


def post(name, *msgs, ctl=PUMP):
    return rec('POST', field('MAILBOX', name) + b''.join(msgs), ctl)


def recv(name, count=1, lease=None, ctl=PUMP):
    b = field('MAILBOX', name) + u64('COUNT', count)
    if lease is not None:
        b += u64('LEASE_MS', lease)
    return rec('RECV', b, ctl)


def ids(op, *xs, ctl=PUMP, extra=b''):
    return rec(op, b''.join(u64('ID', x) for x in xs) + extra, ctl)


def dispatch_seeds():
    s = {}
    setup = create('q', 'mode=0666') + post('q', msg('one'), msg('two'))
    # Every operation alone after a small setup, from A and from B.
    for name, (op, body) in REQUESTS.items():
        if name == 'hello':
            continue
        s['op-' + name] = setup + rec(op, body)
        s['op-' + name + '-other'] = setup + rec(op, body, PUMP | B)
    for name, body in MALFORMED.items():
        s['malformed-' + name] = setup + rec('POST', body)
    # Lease life cycle on ids 1 and 2.
    s['lease-cycle'] = (setup + recv('q', 2) + ids('TOUCH', 1, 2) +
                        ids('NACK', 1) + recv('q', 1) + ids('ACK', 1) +
                        ids('REJECT', 2) + req('peek-dead') +
                        req('kick') + recv('q', 5) + ids('ACK', 2) +
                        ids('ACK', 2))
    s['max-deliveries'] = (create('m', 'max_deliveries=1') +
                           post('m', msg('p')) + recv('m') + ids('NACK', 1) +
                           rec('PEEK', field('MAILBOX', 'm') +
                               u64('FLAGS', 1)) +
                           rec('KICK', field('MAILBOX', 'm')))
    s['group-commit'] = (create('g', ctl=0) +
                         b''.join(post('g', msg(str(i)), ctl=0)
                                  for i in range(20)) +
                         recv('g', 20, ctl=0) + req('list'))
    s['subscribe-push'] = (setup + req('subscribe') +
                           post('q', msg('3'), msg('4'), msg('5')) +
                           ids('ACK', 1, 2) + req('unsubscribe') +
                           ids('ACK', 3))
    s['exclusive'] = (setup + req('subscribe-excl') +
                      rec('SUBSCRIBE', field('MAILBOX', 'q') +
                          u64('FLAGS', 1), PUMP | B) +
                      req('unsubscribe') + req('subscribe'))
    # TOKEN is replaced by the token of the last HANDOFF reply.
    s['handoff'] = (setup + req('subscribe') + req('handoff') +
                    req('claim', PUMP | B) + req('claim') + req('claim') +
                    ids('ACK', 1))
    s['handoff-recv'] = (setup + recv('q', 2) +
                         rec('RECV', field('MAILBOX', 'q') +
                             u64('WAIT_MS', 60000)) +
                         rec('HANDOFF', u64('WAIT_MS', 1)) +
                         rec('PING', b'', PUMP | WAIT) + req('claim') +
                         recv('q', 2, ctl=PUMP | B))
    # Real time passes (2 ms per WAIT): leases, delays, ttls, RECV waits.
    s['timers'] = (create('t', 'lease=1ms', 'max_deliveries=2') +
                   post('t', msg('a'), msg('b', u64('DELAY_MS', 1)),
                        msg('c', u64('TTL_MS', 1))) +
                   recv('t', 1, lease=1) +
                   rec('RECV', field('MAILBOX', 't') + u64('WAIT_MS', 1)) +
                   rec('PING', b'', PUMP | WAIT) + ids('ACK', 1) +
                   recv('t', 3) + rec('PING', b'', PUMP | WAIT) +
                   recv('t', 3) + rec('PING', b'', PUMP | WAIT) +
                   rec('PEEK', field('MAILBOX', 't') + u64('FLAGS', 1)) +
                   rec('SUBSCRIBE', field('MAILBOX', 't') +
                       u64('LEASE_MS', 1)) +
                   rec('PING', b'', PUMP | WAIT))
    s['fanout'] = (create('a') + create('b', 'mode=0600') + req('bind') +
                   rec('BIND', field('MAILBOX', 'a') +
                       field('TOPIC', 'jobs.>')) +
                   rec('BIND', field('MAILBOX', 'b') + field('TOPIC', '>')) +
                   req('publish') + req('publish', PUMP | B) +
                   req('unbind') + req('list'))
    s['admin'] = (setup + req('set') + req('pause') + recv('q') +
                  req('resume') + req('chmod') + req('chown') +
                  req('purge') + req('purge-dead') + req('delete') +
                  req('delete-force') + req('list'))
    s['perms-other'] = (create('priv', 'mode=0600') +
                        post('priv', msg('secret')) +
                        b''.join(rec(op, body, PUMP | B) for op, body in [
                            ('RECV', field('MAILBOX', 'priv')),
                            ('PEEK', field('MAILBOX', 'priv')),
                            ('POST', field('MAILBOX', 'priv') + msg('x')),
                            ('SUBSCRIBE', field('MAILBOX', 'priv')),
                            ('DELETE', field('MAILBOX', 'priv')),
                            ('CHMOD', field('MAILBOX', 'priv') +
                             u64('MODE', 0o666)),
                            ('LIST', b'')]) +
                        create('mine', 'mode=0640', ctl=PUMP | B) +
                        rec('POST', field('MAILBOX', 'mine') + msg('y')) +
                        rec('DELETE', field('MAILBOX', 'mine') +
                            u64('FLAGS', 1)))
    s['temp-mailbox'] = (req('create-temp') +
                         post('tmp.1', msg('r', hdr_kv('reply-to', 'tmp.1'))) +
                         recv('tmp.1') + raw(b''))
    s['limits'] = (create('l', 'max_msgs=2', 'max_bytes=10') +
                   post('l', msg('12345'), msg('67890'), msg('x')) +
                   post('l', msg('x' * 5000)) +
                   b''.join(create('m%d' % i, ctl=0) for i in range(10)) +
                   recv('q', 1024) + rec('PING', b'', PUMP))
    s['delay-ttl'] = (create('d', 'ttl=1ms') +
                      post('d', msg('a', u64('DELAY_MS', 1)),
                           msg('b', u64('TTL_MS', 1))) +
                      rec('RECV', field('MAILBOX', 'd') + u64('WAIT_MS', 1)))
    s['bad-settings'] = (create('x', 'lease=0') + create('x', 'nope=1') +
                         create('x', 'mode=0999') + create('x', 'temp=2') +
                         create('bad name!') + create('x' * 201) +
                         req('set') +
                         rec('SET', field('MAILBOX', 'q') +
                             field('SETTING', 'temp=1')))
    # A frame in a header datagram and continuations, sent raw.
    big = frame('POST', field('MAILBOX', 'big') + msg('z' * 300), 99)
    s['raw-continuation'] = (raw(big[:HDR + 10]) + raw(big[HDR + 10:200]) +
                             raw(big[200:]) + req('list'))
    # Over MAX_FRAME: announced, then the connection ends mid-frame.
    s['raw-too-large'] = raw(header('POST', 200000, 98) + b'a' * 100)
    s['raw-interleaved'] = (raw(big[:100]) + raw(big[100:150], PUMP | B) +
                            raw(big[150:]) + req('ping'))
    s['raw-framing-error'] = (setup + recv('q') +
                              raw(header('PING', 0, version=9)) +
                              req('ping'))
    s['raw-reply-flag'] = raw(header('PING', 0, flags=FLAG_REPLY))
    s['second-hello'] = req('hello') + req('ping')
    s['in-flight'] = (create('w') + b''.join(
        rec('RECV', field('MAILBOX', 'w') + u64('WAIT_MS', 60000), 0)
        for _ in range(40)) + rec('PING'))
    return s


def write(dirpath, seeds):
    os.makedirs(dirpath, exist_ok=True)
    for f in os.listdir(dirpath):
        if f.startswith('seed-'):
            os.unlink(os.path.join(dirpath, f))
    for name, data in sorted(seeds.items()):
        with open(os.path.join(dirpath, 'seed-' + name), 'wb') as fh:
            fh.write(data)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(
        os.path.abspath(__file__))
    write(os.path.join(out, 'corpus-frame'), frame_seeds())
    write(os.path.join(out, 'corpus-dispatch'), dispatch_seeds())


if __name__ == '__main__':
    main()
