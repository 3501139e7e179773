#!/usr/bin/env python3
"""ready-time.py DB MBOXD [RUNS]: start-up time of mboxd under systemd.

Starts MBOXD --db DB through systemd-socket-activate --seqpacket with a
NOTIFY_SOCKET of its own, connects (which makes systemd-socket-activate
exec mboxd) and measures the time until READY=1 arrives, RUNS times
(default 3). Prints each time in ms and the median. Fill DB first (e.g.
with mboxctl post --lines) to measure a large store.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def one_run(db, mboxd):
    d = tempfile.mkdtemp(prefix="mbox-ready.")
    ns, path = d + "/notify", d + "/mbox.sock"
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.bind(ns)
    n.settimeout(120)
    p = subprocess.Popen(["systemd-socket-activate", "--seqpacket", "-l", path,
                          "-E", "NOTIFY_SOCKET=" + ns, mboxd, "--foreground",
                          "--config", "/dev/null", "--db", db,
                          "--sync", "full", "--log-level", "warning"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.exists(path):
                break
            time.sleep(0.01)
        time.sleep(0.2)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        t0 = time.monotonic_ns()
        c.connect(path)  # systemd-socket-activate execs mboxd now
        while "READY=1" not in n.recv(4096).decode().split("\n"):
            pass
        ms = (time.monotonic_ns() - t0) / 1e6
        c.close()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(60)
        n.close()
        os.unlink(ns)
        if not os.listdir(d):
            os.rmdir(d)
    return ms


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    db, mboxd = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    out = sorted(one_run(db, mboxd) for _ in range(runs))
    print(" ".join("%.1f" % x for x in out),
          "ms; median %.1f ms" % out[len(out) // 2])


if __name__ == "__main__":
    main()
