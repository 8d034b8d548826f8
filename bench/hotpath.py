"""The responder's hot path in process, no sockets: what one segment costs in Python alone.

Three measurements of the same hello exchange (the one ``bench.loadgen`` drives against
``--app hello``: a Linux client with MSS, SACK-permitted, timestamps and window scaling in its
SYN and a timestamp on every later segment; 6 segments in, 6 out per connection):

* ``stack``: ``wire.parse`` -> ``tcp.Stack.on_segment`` (the hello app) -> ``wire.build_tcp``,
  the layers only, with a state-transition log that drops its lines;
* ``responder``: ``io.Responder.handle_packet`` as the loop calls it -- parse (the early
  filter is the kernel's socket filter now, as in the real process), stack, app, build, ``sendto`` on a socket stand-in that discards, and the per-transition log
  lines written to ``/dev/null`` through ``sys.stderr`` (as the real process writes them);
  one connection after the other, on a fresh responder each round, with a clock that hardly
  moves (no timer ever fires);
* ``loop``: the same responder as its loop drives it under the bench's load, without sockets:
  ``LOOP_AT_ONCE`` connections in flight with their segments interleaved, a clock advancing
  at ``LOOP_RATE`` connections per second, and every ``LOOP_PER_WAIT`` packets what the loop
  does around a wait (``Responder.before_wait``: the log written, the next deadline;
  ``Responder.run_timers``).  It runs ``rate x 2 MSL x 1.2`` connections first, untimed, so
  that the timed ones meet the steady state of a real load: ~10,000 connections in TIME-WAIT
  whose timers fire, a heap and a GC with that many live TCBs.  What it adds to
  ``responder`` is the cost of the loop's shape; what the real process adds to ``loop`` is
  its system calls and the kernel's work.

Every round first checks that the bytes sent equal a reference run's (so an optimisation that
changes a byte on the wire fails here, not only in the tests).  Times are this process's CPU
time (``time.process_time``): on a shared machine wall time also counts other processes.

    /usr/bin/python3 -m bench.hotpath [--conns 2000] [--rounds 5] [--profile]

Prints one JSON line per round and a summary (median over rounds) of us per segment and
us per connection, per path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
import types

from responder import wire
from responder.wire import ACK, FIN, SYN, Segment, TcpOptions

SERVER = bytes([192, 168, 56, 100])
CLIENT = bytes([192, 168, 56, 1])
PORT = 80
ISN = 1000
_clock = time.process_time
# What the two paths send for the first 200 connections, taken before any optimisation
# (commit "bench/hotpath.py"): every later version must send exactly these bytes.
EXPECTED = {"stack": "9f0fce6df11a864b9249247f4947ead681f0946ab33f9ecb03772e2c57b99d6b",
            "responder": "f76985c45869ccd1c1ee1707feb47896f2700db16e00d5b027f019c2a7407201",
            # added later, from the code whose other two paths sent the bytes above
            "loop": "640679a707d53251785ca8194f459ab381df4d76300007609d37eba47db14b9b"}
#: The loop path's load: the bench's (``bench.loadgen -c 50``, ~5,000 conn/s), and how many
#: packets the real loop takes per wait (``epoll_wait`` ~0.06 times per connection under it).
LOOP_RATE = 5000.0
LOOP_AT_ONCE = 50
LOOP_PER_WAIT = 100


def client_packets(conns: int, first_port: int = 20000) -> list:
    """Per connection, the client's six packets: SYN; the handshake's ACK; ACKs of the first
    line and of all three; the ACK of our FIN with the client's own FIN; the last ACK."""
    from responder.apps import HELLO_LINES
    data_end = ISN + 1 + sum(len(x) for x in HELLO_LINES)
    out = []
    for i in range(conns):
        port, c = first_port + (i % 40000), (5000 + 7919 * i) & 0xFFFFFFFF
        ts = 100000 + i

        def pkt(seq, ack, flags, tsval, opts=None, window=502):
            o = opts or TcpOptions(timestamps=(tsval, 0))
            return bytes(wire.build_packet(Segment(CLIENT, SERVER, port, PORT, seq, ack, flags,
                                                   window, options=o)))
        syn = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamps=(ts, 0))
        out.append([
            pkt(c, 0, SYN, ts, syn, 64240),
            pkt(c + 1, ISN + 1, ACK, ts + 1),
            pkt(c + 1, ISN + 1 + len(HELLO_LINES[0]), ACK, ts + 1),
            pkt(c + 1, data_end, ACK, ts + 2),
            pkt(c + 1, data_end + 1, ACK | FIN, ts + 2),
            pkt(c + 2, data_end + 1, ACK, ts + 3),     # stray: arrives in TIME-WAIT (dropped)
        ])
    return out


def _opts(**kw):
    base = dict(listen=f"{wire.ip_str(SERVER)}:{PORT}", app="hello", classic=False, isn=ISN,
                mark=0x5E, nodelay=False, connect=None, msl2=2.0, http_file=None, fault=None)
    base.update(kw)
    return types.SimpleNamespace(**base)


class _Sink:
    """A socket stand-in: ``sendto`` keeps a running hash of what would be sent."""

    def __init__(self):
        self.h = hashlib.sha256()
        self.n = 0

    def sendto(self, data, addr):
        self.n += 1
        return len(data)


class _HashSink(_Sink):
    def sendto(self, data, addr):
        self.n += 1
        self.h.update(bytes(data))
        self.h.update(repr(addr).encode())
        return len(data)


def _new_stack():
    from responder.apps import make_app
    from responder.tcp import Config, Stack
    stack = Stack(Config(fixed_isn=ISN), isn_key=b"\x07" * 32, log=lambda line: None)
    stack.listen(SERVER, PORT, make_app("hello"))
    return stack


def stack_path(pkts, check: bool = False):
    """parse -> on_segment -> build_tcp; returns (cpu seconds, segments in, segments out,
    digest of the bytes built when ``check``)."""
    stack, parse, build = _new_stack(), wire.parse, wire.build_tcp
    h = hashlib.sha256()
    n_in = n_out = 0
    t0 = _clock()
    for i, conn in enumerate(pkts):
        now = i * 1e-4
        for p in conn:
            n_in += 1
            for seg in stack.on_segment(parse(p), now):
                b = build(seg)
                n_out += 1
                if check:
                    h.update(bytes(b))
    t = _clock() - t0
    return t, n_in, n_out, h.hexdigest()


def responder_path(pkts, check: bool = False):
    """``io.Responder.handle_packet`` for every packet (log lines to /dev/null)."""
    from responder import io as rio
    r = rio.Responder(_opts(), clock=_FakeClock(), random=lambda n: b"\x07" * n)
    r.rbuf = bytearray(65536)
    r.rview = memoryview(r.rbuf)
    r.rx = r.tx = _HashSink() if check else _Sink()
    r.filtered = True           # as open() leaves it: the kernel's socket filter did is_ours's work
    rbuf, handle = r.rbuf, r.handle_packet
    devnull = open(os.devnull, "w")
    old, sys.stderr = sys.stderr, devnull
    n_in = 0
    try:
        t0 = _clock()
        for conn in pkts:
            r.clock.t += 1e-4
            for p in conn:
                n = len(p)
                rbuf[:n] = p
                handle(n)
                n_in += 1
            flush = getattr(r, "flush_log", None)
            if flush is not None:
                flush()
        t = _clock() - t0
    finally:
        sys.stderr = old
        devnull.close()
    return t, n_in, r.tx.n, r.tx.h.hexdigest()


def loop_path(pkts, check: bool = False, warm: int = 0):
    """The ``loop`` path (module docstring): the first ``warm`` connections of ``pkts`` untimed,
    then the rest timed."""
    from responder import io as rio
    r = rio.Responder(_opts(), clock=_FakeClock(), random=lambda n: b"\x07" * n)
    r.rbuf = bytearray(65536)
    r.rview = memoryview(r.rbuf)
    r.rx = r.tx = _HashSink() if check else _Sink()
    r.filtered = True
    rbuf, handle, clock = r.rbuf, r.handle_packet, r.clock
    dt = 1.0 / LOOP_RATE / len(pkts[0])             # clock step per packet
    devnull = open(os.devnull, "w")
    old, sys.stderr = sys.stderr, devnull
    n_in = n_out = 0
    t0 = _clock()
    try:
        for first in range(0, len(pkts), LOOP_AT_ONCE):
            if first == warm:
                n_in, n_out, t0 = 0, r.tx.n, _clock()
            batch = pkts[first:first + LOOP_AT_ONCE]
            for k in range(len(batch[0])):          # segment k of every connection in flight
                for conn in batch:
                    if n_in % LOOP_PER_WAIT == 0:
                        r.run_timers()
                        r.before_wait()
                    clock.t += dt
                    p = conn[k]
                    n = len(p)
                    rbuf[:n] = p
                    handle(n)
                    n_in += 1
        r.before_wait()
        t = _clock() - t0
    finally:
        sys.stderr = old
        devnull.close()
    return t, n_in, r.tx.n - n_out, r.tx.h.hexdigest()


class _FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def loop_warm() -> int:
    """Untimed connections before the loop path's timed ones: 1.2 x TIME-WAIT's population."""
    n = int(LOOP_RATE * _opts().msl2 * 1.2)
    return n - n % LOOP_AT_ONCE


def run(conns: int, rounds: int) -> dict:
    pkts = client_packets(conns)
    warm = loop_warm()
    conns -= conns % LOOP_AT_ONCE
    loop_pkts = client_packets(warm + conns)
    ref = {"stack": stack_path(pkts[:200], check=True)[3],
           "responder": responder_path(pkts[:200], check=True)[3],
           "loop": loop_path(loop_pkts[:200], check=True)[3]}
    out = {"conns": conns, "loop_warm": warm, "rounds": [],
           "bytes_unchanged": {k: ref[k] == EXPECTED[k] for k in ref}}
    paths = (("stack", stack_path), ("responder", responder_path),
             ("loop", lambda p: loop_path(loop_pkts, warm=warm)))
    for _ in range(rounds):
        row = {}
        for name, fn in paths:
            t, n_in, n_out, _ = fn(pkts)
            row[name] = {"us_per_segment": t / (n_in + n_out) * 1e6,
                         "us_per_conn": t / conns * 1e6, "in": n_in, "out": n_out}
        out["rounds"].append(row)
        print(json.dumps(row), file=sys.stderr)
    for name, _ in paths:
        out[name] = {k: statistics.median(r[name][k] for r in out["rounds"])
                     for k in ("us_per_segment", "us_per_conn")}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--profile", metavar="FILE", help="cProfile the responder path into FILE")
    a = p.parse_args(argv)
    if a.profile:
        import cProfile
        pkts = client_packets(a.conns)
        cProfile.runctx("responder_path(pkts)", globals(), {"pkts": pkts}, a.profile)
        import pstats
        pstats.Stats(a.profile).sort_stats("tottime").print_stats(25)
        return 0
    res = run(a.conns, a.rounds)
    print(json.dumps({k: v for k, v in res.items() if k != "rounds"}, indent=1))
    return 0 if all(res["bytes_unchanged"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
