"""The load generator: many short TCP connections from one asyncio process, bounded in count
and time.  Standard library only; the runner starts it in the lab's host namespace::

    python -m bench.loadgen --connect 192.168.56.100:80 --mode hello -n 5000 -c 50

Modes:

* ``hello``: connect, read to EOF, check the bytes are the lecture's 97, close.
* ``http``: connect, send one ``GET / HTTP/1.0``, read to EOF, check for ``200``, close.
* ``hold``: open ``-n`` connections (``-c`` at a time) and keep them; print a ``holding`` line,
  then wait for ``release`` on stdin (or ``--hold-seconds``) and close them all with RST
  (SO_LINGER 0), so neither side keeps anything afterwards.

Each connection uses a ``Protocol`` (no streams: the generator is the bottleneck against a fast
server, so it must be lean).  Connect latency is from ``create_connection`` to
``connection_made`` (the SYN,ACK arrived and the kernel ACKed it); completion latency is from
``create_connection`` to EOF.  Output: JSON lines on stdout, the last one ``"event": "done"``.
Stops by itself: no connection is started after ``--budget`` seconds, each has ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import struct
import sys
import time

from .stats import latency_summary

LINGER_RST = struct.pack("ii", 1, 0)


class Client(asyncio.Protocol):
    __slots__ = ("t0", "t_conn", "t_end", "request", "got", "head", "transport", "done", "hold")

    def __init__(self, t0: float, request: bytes | None, done: asyncio.Future, hold: bool):
        self.t0 = t0
        self.t_conn = self.t_end = None
        self.request = request
        self.got = 0
        self.head = b""
        self.transport = None
        self.done = done
        self.hold = hold

    def connection_made(self, transport):
        self.t_conn = time.perf_counter()
        self.transport = transport
        if self.request:
            transport.write(self.request)

    def data_received(self, data):
        if len(self.head) < 128:
            self.head += data[:128 - len(self.head)]
        self.got += len(data)

    def eof_received(self):
        self.t_end = time.perf_counter()
        return False                        # close our side too

    def connection_lost(self, exc):
        if self.t_end is None:
            self.t_end = time.perf_counter()
        if not self.done.done():
            self.done.set_result(exc)


def _check(mode: str, c: Client, expect: bytes | None) -> str | None:
    """None if the connection did what it should, else the reason it did not."""
    if mode == "hello":
        if c.got != len(expect):
            return f"got {c.got} bytes, expected {len(expect)}"
        if not expect.startswith(c.head):
            return "wrong bytes"
    elif mode == "http":
        if not c.head.startswith(b"HTTP/1.") or c.head[9:12] != b"200":
            return "not HTTP 200"
    return None


async def run(args, expect: bytes | None, request: bytes | None) -> dict:
    """The load: ``args.c`` workers start connections until ``args.n`` are started or the
    budget is spent; the figures as a dict (hold mode: after holding them and releasing them,
    :func:`_hold`).  ``one`` and ``worker`` stay closures over the run's settings and counters
    (~70 lines, over the ~60): apart, they would take a dozen of them as arguments or need a
    class of their own, which reads worse."""
    loop = asyncio.get_running_loop()
    host, port = args.host, args.port
    n, budget, timeout = args.n, args.budget, args.timeout
    hold = args.mode == "hold"
    started = 0
    connect_s, complete_s = [], []
    errors: dict = {}
    ok = 0
    held = []
    t_start = time.perf_counter()
    deadline = t_start + budget

    def err(reason: str):
        errors[reason] = errors.get(reason, 0) + 1

    async def one():
        t0 = time.perf_counter()
        done = loop.create_future()
        try:
            transport, proto = await asyncio.wait_for(
                loop.create_connection(lambda: Client(t0, request, done, hold), host, port),
                timeout)
        except asyncio.TimeoutError:
            err("connect timeout")
            return
        except OSError as e:
            err(f"connect: {e.strerror or e}")
            return
        connect_s.append(proto.t_conn - t0)
        if hold:
            held.append(transport)
            return True
        try:
            exc = await asyncio.wait_for(done, max(0.01, t0 + timeout - time.perf_counter()))
        except asyncio.TimeoutError:
            transport.abort()
            err("no EOF within timeout")
            return
        if exc is not None:
            err(f"connection lost: {exc}")
            return
        bad = _check(args.mode, proto, expect)
        if bad:
            err(bad)
            return
        complete_s.append(proto.t_end - t0)
        return True

    async def worker():
        nonlocal started, ok
        while started < n and time.perf_counter() < deadline:
            started += 1
            if await one():
                ok += 1

    await asyncio.gather(*(worker() for _ in range(min(args.c, n))))
    elapsed = time.perf_counter() - t_start
    result = {"mode": args.mode, "target": f"{host}:{port}", "n": n, "c": args.c,
              "started": started, "ok": ok, "errors": errors, "elapsed_s": round(elapsed, 4),
              "conn_per_s": round(ok / elapsed, 1) if elapsed > 0 else None,
              "connect_ms": latency_summary(connect_s),
              "complete_ms": latency_summary(complete_s),
              "budget_exhausted": started < n}
    if hold:
        await _hold(held, result, args.hold_seconds)
    return result


async def _hold(held: list, result: dict, hold_seconds: float) -> None:
    """Hold mode's end: say ``holding``, wait for ``release`` on stdin (or ``hold_seconds``),
    then close every held connection with RST (SO_LINGER 0); into ``result``: how long that
    took, how many were held, and ``released_by`` if the time ran out."""
    loop = asyncio.get_running_loop()
    print(json.dumps({"event": "holding", "held": len(held), **result}), flush=True)
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), hold_seconds)
    except asyncio.TimeoutError:
        result["released_by"] = "hold timeout"
    t_rel = time.perf_counter()
    for tr in held:
        sock = tr.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            except OSError:
                pass
        tr.abort()
    await asyncio.sleep(0)
    result["release_s"] = round(time.perf_counter() - t_rel, 4)
    result["held"] = len(held)


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(hard, max(soft, want))
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    p.add_argument("--connect", required=True, metavar="HOST:PORT")
    p.add_argument("--mode", choices=("hello", "http", "hold"), default="hello")
    p.add_argument("-n", type=int, default=1000, help="connections (upper bound)")
    p.add_argument("-c", type=int, default=50, help="at most this many at once")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per connection")
    p.add_argument("--budget", type=float, default=30.0,
                   help="seconds after which no new connection is started")
    p.add_argument("--hold-seconds", type=float, default=60.0,
                   help="hold mode: release after this long if not told to on stdin")
    args = p.parse_args(argv)
    host, _, port = args.connect.rpartition(":")
    args.host, args.port = host, int(port)
    if args.n < 1 or args.c < 1:
        p.error("-n and -c must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    raise_nofile(min(args.n, args.c if args.mode != "hold" else args.n) + 256)
    expect = request = None
    if args.mode in ("hello", "http"):
        from .payloads import HELLO, HTTP_REQUEST
        expect = HELLO if args.mode == "hello" else None
        request = HTTP_REQUEST if args.mode == "http" else None
    result = asyncio.run(run(args, expect, request))
    print(json.dumps({"event": "done", **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
