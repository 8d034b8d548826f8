"""Fuzzing the responder: one input generator, two engines, one oracle.

What is fuzzed is the responder's whole receive path without sockets: ``wire.parse(buffer)``,
then ``Stack.on_segment(segment, now)`` / ``Stack.on_timer(now)`` of :mod:`responder.tcp` with
real apps listening on 192.168.56.100:80.  What must hold for every input (:class:`Session`
checks it after every step and raises :class:`Escape` otherwise):

* no exception leaves the responder except a named ``wire.WireError`` subclass from ``parse``;
* every rejected input is counted under a named reason: a ``WireError``'s ``reason`` is its own
  class's (never the base "malformed"), and when the state machine's table says a segment is
  dropped, reset, or challenged, ``Stack.drops`` grows, never under the catch-all "dropped";
* every segment the responder answers with can be built by the wire layer and parses back
  (so the I/O loop can never fail on its own output), with a window that fits 16 bits;
* the half-open table stays within ``Config.max_half_open``.

Inputs are *sessions* (a few steps each) drawn from a :class:`Source`: a structure-aware
packet crafted by hand (odd option lengths, zero-length options, data offset past the end,
overlapping/wrapped SACK blocks, every flag combination, sequence numbers relative to the live
connection, including wrapped ones), a lecture packet with a few bytes changed, a Scapy-built
packet (tests only: Scapy is slow), random bytes, or time passing.  Most sessions first complete
a handshake, so the synchronized states (and RFC 5961) are reached, not just LISTEN.

Engines: the unit tests draw sessions with Hypothesis (:class:`HypothesisSource`);
``invoke fuzz`` runs atheris (coverage-guided libFuzzer, :class:`AtherisSource`) seeded with the
lecture's packets, or Hypothesis with a large budget when atheris is not installed.

    python -m harness.stress.fuzz --inputs 1000000 [--engine atheris|hypothesis]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from responder import tcp, wire
from responder.contract import APPS
from responder.wire import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG

from harness.util import PROJECT_ROOT

CLIENT = bytes((192, 168, 56, 1))
SERVER = bytes((192, 168, 56, 100))
PORT = 80
#: TABLE actions that reject a segment: each must be counted under a named drop reason.
REJECTING = ("drop", "ack_drop", "challenge_ack", "reset")
#: The wire layer's reasons, one per WireError subclass.
WIRE_REASONS = frozenset(c.reason for c in wire.WireError.__subclasses__())
UNNAMED = ("dropped", wire.WireError.reason)
BOUNDARY = (0, 1, 2, 0x7FFFFFFF, 0x80000000, 0x80000001, 0xFFFFFFFE, 0xFFFFFFFF)
FLAG_BITS = (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR)


class Escape(AssertionError):
    """An input broke a guarantee; the message says which, and the step."""


def lecture_packets() -> dict[str, bytes]:
    """The lecture's packets (responder/lecture.py): the seeds."""
    from responder import lecture
    return {k: v for k, v in vars(lecture).items() if isinstance(v, bytes) and len(v) >= 40}


# ---------------------------------------------------------------------------------------------
# Building packets by hand: every field settable, checksums right unless asked otherwise, so a
# structural defect reaches the check that should catch it instead of being masked by
# bad_checksum.
# ---------------------------------------------------------------------------------------------

def craft(*, src=CLIENT, dst=SERVER, sport=40000, dport=PORT, seq=0, ack=0, flags=SYN,
          window=65535, urgent=0, options=b"", payload=b"", doff=None, version=4, ihl=5,
          ip_options=b"", total=None, frag=0x4000, ttl=64, proto=6, tcp_csum_ok=True,
          ip_csum_ok=True, trailer=b"") -> bytes:
    """An IPv4+TCP packet with any field set to anything (``doff`` in 32-bit words, ``total``
    the IP total length; ``None`` means "what the contents need")."""
    opt = bytes(options)
    if doff is None:
        doff = min(15, (20 + len(opt) + 3) // 4)
    tcp_hdr = _tcp_header(sport, dport, seq, ack, doff, flags, window, urgent)
    body = tcp_hdr + opt + bytes(-len(opt) % 4) + bytes(payload)
    hl = 20 + len(ip_options)
    buf = bytearray(20) + ip_options + body
    if total is None:
        total = len(buf)
    buf += trailer
    wire.IPV4_HEADER.pack_into(buf, 0, (version & 15) << 4 | (ihl & 15), 0, total & 0xFFFF,
                               0x1234, frag & 0xFFFF, ttl & 0xFF, proto & 0xFF, 0, src, dst)
    if ip_csum_ok:
        s = wire.internet_checksum(buf[:min(len(buf), max(20, (ihl & 15) * 4))])
        wire.U16.pack_into(buf, wire.IP_CHECKSUM, s)
    end = min(total & 0xFFFF, len(buf))
    if hl + 18 <= end:
        s = wire.internet_checksum(buf[hl:end],
                                   wire.pseudo_header_sum(src, dst, proto & 0xFF, end - hl))
        wire.U16.pack_into(buf, hl + wire.TCP_CHECKSUM, s if tcp_csum_ok else s ^ 0x0101)
    return bytes(buf)


def _tcp_header(sport, dport, seq, ack, doff, flags, window, urgent) -> bytes:
    m = 0xFFFFFFFF
    return wire.TCP_HEADER.pack(sport & 0xFFFF, dport & 0xFFFF, seq & m, ack & m,
                                (doff & 15) << 4, flags & 0xFF, window & 0xFFFF, 0,
                                urgent & 0xFFFF)


# ---------------------------------------------------------------------------------------------
# Sources of choices: the same generator runs on Hypothesis (tests) and atheris (invoke fuzz).
# ---------------------------------------------------------------------------------------------

class Source:
    def int(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def blob(self, max_size: int) -> bytes:
        raise NotImplementedError

    def pick(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def flag(self) -> bool:
        return bool(self.int(0, 1))

    def u32(self) -> int:
        return self.pick(BOUNDARY) if self.flag() else self.int(0, 0xFFFFFFFF)


class HypothesisSource(Source):
    """Choices from a Hypothesis ``draw`` (inside ``st.composite`` or ``st.data()``)."""

    def __init__(self, draw):
        from hypothesis import strategies as st
        self.draw, self.st = draw, st

    def int(self, lo, hi):
        return self.draw(self.st.integers(lo, hi))

    def blob(self, max_size):
        return self.draw(self.st.binary(max_size=max_size))


class AtherisSource(Source):
    """Choices from libFuzzer's bytes (atheris.FuzzedDataProvider); exhausted input gives the
    lowest choice, so every input is a complete session."""

    def __init__(self, fdp):
        self.fdp = fdp

    def int(self, lo, hi):
        return self.fdp.ConsumeIntInRange(lo, hi)

    def blob(self, max_size):
        return self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, max_size))


def gen_options(src: Source) -> bytes:
    """Option bytes, mostly almost right: each item a valid option, a known kind with an odd
    length, a zero- or one-byte length, SACK blocks that overlap, wrap or run backwards, NOP/EOL,
    or random bytes; sometimes left unpadded."""
    out = bytearray()
    for _ in range(src.int(0, 5)):
        k = src.int(0, 9)
        if k == 0:
            out += bytes((2, 4)) + src.int(0, 0xFFFF).to_bytes(2, "big")          # MSS
        elif k == 1:
            out += bytes((3, 3, src.pick((0, 7, 14, 15, 255))))                    # WS
        elif k == 2:
            out += bytes((4, 2))                                                   # SACKOK
        elif k == 3:
            out += bytes((8, 10)) + src.u32().to_bytes(4, "big") + src.u32().to_bytes(4, "big")
        elif k == 4:                                                               # SACK
            n = src.int(1, 4)
            left = src.u32()
            out += bytes((5, 2 + 8 * n))
            for _ in range(n):
                a = (left + src.int(-3000, 3000)) & 0xFFFFFFFF
                b = (a + src.pick((0, 1, 1000, -1000, 0x80000000))) & 0xFFFFFFFF
                out += a.to_bytes(4, "big") + b.to_bytes(4, "big")
        elif k == 5:                                # a known kind with any length byte
            out += bytes((src.pick((2, 3, 4, 5, 8)), src.int(0, 40)))
        elif k == 6:                                # zero- or one-byte length, any kind
            out += bytes((src.int(2, 255), src.int(0, 1)))
        elif k == 7:
            out += bytes((src.pick((0, 1)),))
        elif k == 8:
            out += bytes((src.int(9, 255), src.int(2, 12))) + src.blob(10)        # unknown
        else:
            out += src.blob(12)
    if src.flag():
        out += bytes(-len(out) % 4)
    return bytes(out[:44])


def gen_flags(src: Source) -> int:
    """Every combination of the eight flags can come out; the usual ones come out often."""
    if not src.int(0, 3):
        return src.int(0, 255)
    return src.pick((SYN, ACK, ACK, ACK | PSH, ACK | PSH, ACK | FIN, RST, RST | ACK, SYN | ACK,
                     ACK | URG, SYN | FIN, SYN | RST, 0))


def gen_step(src: Source) -> tuple:
    """One step of a session: ("seg", spec) | ("lecture", name, edits) | ("raw", bytes) |
    ("time", seconds) | ("scapy", bytes) is added by the tests."""
    k = src.int(0, 9)
    if k <= 5:
        seq_base = src.pick(("rcv_nxt", "rcv_nxt", "irs", "any"))
        seq_delta = src.pick((0, 0, 0, 1, -1, 100, -100, 65535, 1 << 31, -(1 << 30)))
        ack_base = src.pick(("snd_nxt", "snd_nxt", "snd_una", "any"))
        ack_delta = src.pick((0, 0, 0, 1, -1, 97, 98, 1 << 30, -(1 << 30)))
        spec = dict(flags=gen_flags(src), options=b"" if src.int(0, 3) else gen_options(src),
                    payload=src.pick((b"", b"", b"GET / HTTP/1.0\r\n\r\n", src.blob(40))),
                    seq=(seq_base, seq_delta), ack=(ack_base, ack_delta),
                    window=src.pick((0, 1, 512, 65535)), sport=src.pick((40000, 40000, 40001)),
                    any_seq=src.u32())
        m = src.int(0, 11)                         # now and then, one structural defect
        if m == 1:
            spec["doff"] = src.int(0, 15)
        elif m == 2:
            spec["total"] = src.int(0, 120)
        elif m == 3:
            spec["tcp_csum_ok"] = False
        elif m == 4:
            spec["ihl"] = src.int(0, 15)
        elif m == 5:
            spec["frag"] = src.pick((0x2000, 0x0001, 0x3FFF))
        elif m == 6:
            spec["proto"] = src.pick((1, 17, 255))
        elif m == 7:
            spec["ip_options"] = bytes((1, 1, 1, 0))
            spec["ihl"] = 6
        return ("seg", spec)
    if k == 6:
        return ("lecture", src.int(0, 7), [(src.int(0, 99), src.int(0, 255))
                                           for _ in range(src.int(0, 3))])
    if k == 7:
        return ("raw", src.blob(80))
    return ("time", src.pick((0.0, 0.2, 1.0, 3.0, 65.0, 130.0, 600.0)))


def gen_session(src: Source, max_steps: int = 8) -> dict:
    return {"app": src.pick(APPS), "handshake": src.int(0, 3), "pressure": src.int(0, 2),
            "steps": [gen_step(src) for _ in range(src.int(1, max_steps))]}


# ---------------------------------------------------------------------------------------------
# Running a session against the real responder code, checking every step.
# ---------------------------------------------------------------------------------------------



class _Tx:
    """Stands in for the raw socket: keeps what the responder sends."""

    def __init__(self):
        self.sent: list = []

    def sendto(self, data, addr) -> int:
        self.sent.append((bytes(data), addr[0]))
        return len(data)


def make_responder(app: str, clock) -> "io.Responder":
    """The responder's own I/O object (CLI options, app, stack, counters) with no socket:
    ``handle_packet(n)`` handles one received buffer from ``rbuf``; sends go to a :class:`_Tx`."""
    from responder import io
    from responder.cli import build_parser
    opts = build_parser().parse_args(["--listen", f"{wire.ip_str(SERVER)}:{PORT}", "--app", app])
    r = io.Responder(opts, clock=clock, random=lambda n: bytes(range(n)))
    r.stack.log = lambda line: None
    r.rx = r.tx = _Tx()
    r.rbuf = bytearray(65536)
    r.rview = memoryview(r.rbuf)
    return r


FED = {"buffers": 0}       # buffers fed to the responder in this process, all sessions


class Session:
    """One responder (the I/O layer's Responder, no socket) and a peer that remembers what it
    saw of it."""

    def __init__(self, app: str = "echo", now: float = 1000.0):
        self.now = now
        self.io = make_responder(app, lambda: self.now)
        self.stack = self.io.stack
        self.app = self.io.app
        self.irs = 0           # the responder's ISN, as the peer saw it in a SYN,ACK
        self.cseq = 1_000_000  # the peer's next sequence number
        self._rule_text = ""

    @property
    def wire_drops(self) -> dict:
        return self.io.wire_drops

    def conn(self, sport=40000):
        return self.stack.conns.get((SERVER, PORT, CLIENT, sport))

    # --- feeding ------------------------------------------------------------------------
    def feed(self, buf: bytes, what: str = "") -> list:
        """One received buffer through the responder's ``handle_packet``; every guarantee
        checked.  Returns the segments it sent, parsed."""
        FED["buffers"] += 1
        r, st = self.io, self.stack
        n = len(buf)
        r.rbuf[:n] = buf
        ours = r.is_ours(r.rview[:n], n)
        reason, rule = None, None
        if ours:
            try:
                seg = wire.parse(buf)
            except wire.WireError as e:
                if type(e) is wire.WireError or e.reason not in WIRE_REASONS:
                    raise Escape(f"{what}: rejected without a named reason: {e!r}")
                reason = e.reason
            except Exception as e:
                raise Escape(f"{what}: wire.parse raised {type(e).__name__}: {e} on "
                             f"{bytes(buf)!r}") from e
            else:
                rule = self._rule(seg)
        before = (dict(st.drops), dict(r.wire_drops), r.counters["packets_ignored"])
        sent = len(r.tx.sent)
        try:
            r.handle_packet(n)
        except Exception as e:
            raise Escape(f"{what}: handle_packet raised {type(e).__name__}: {e} on "
                         f"{bytes(buf)!r} ({self._rule_text})") from e
        if not ours:
            if r.counters["packets_ignored"] != before[2] + 1:
                raise Escape(f"{what}: a packet for another address/port was not counted")
        elif reason is not None:
            if r.wire_drops.get(reason, 0) != before[1].get(reason, 0) + 1:
                raise Escape(f"{what}: {reason} not counted by the I/O layer")
        else:
            grew = {k: v - before[0].get(k, 0) for k, v in st.drops.items()
                    if v != before[0].get(k, 0)}
            if rule is not None and rule.action in REJECTING and not grew:
                raise Escape(f"{what}: {seg!r} was rejected ({self._rule_text}) but no drop "
                             f"reason was counted")
            unnamed = set(grew) & set(UNNAMED)
            if unnamed:
                raise Escape(f"{what}: {seg!r} counted under the catch-all {unnamed} "
                             f"({self._rule_text}), not a named reason")
        return self.check_output(r.tx.sent[sent:], what)

    def _rule(self, seg):
        """What the table says will happen to ``seg`` (None: the app answers statelessly)."""
        st = self.stack
        conn = st.conns.get((bytes(seg.dst), seg.dport, bytes(seg.src), seg.sport))
        if conn is not None:
            state = conn.state
        else:
            lst = st.listeners.get((bytes(seg.dst), seg.dport))
            if lst is not None and not seg.flags & SYN \
                    and type(lst.app).on_stray is not tcp.App.on_stray:
                self._rule_text = "no TCB: the app's on_stray answers"
                return None
            state = tcp.State.LISTEN if lst is not None else tcp.State.CLOSED
        ev = tcp.classify(conn, state, seg, self.now)
        rule = tcp.TABLE[state, ev]
        self._rule_text = f"{state} + {ev.value} -> {rule.action}, RFC {rule.cite}"
        return rule

    def tick(self, dt: float, what: str = "") -> list:
        """Time passes: every timer due runs, as the I/O loop runs them."""
        self.now += dt
        r = self.io
        sent = len(r.tx.sent)
        try:
            for _ in range(1000):
                d = self.stack.next_deadline()
                if d is None or d > self.now:
                    break
                for seg in self.stack.on_timer(self.now):
                    r.send_segment(seg)
        except Exception as e:
            raise Escape(f"{what}: the timers raised {type(e).__name__}: {e}") from e
        return self.check_output(r.tx.sent[sent:], what)

    def check_output(self, sent: list, what: str) -> list:
        """What went out must be a TCP segment with a correct checksum (apps may patch
        precomputed packets: the checksum is checked, not trusted)."""
        st = self.stack
        out = []
        for data, dst in sent:
            head = wire.Segment(SERVER, wire.ip_bytes(dst), 0, 0)
            try:
                seg = wire.parse(wire.build_ipv4(head, data))
            except wire.WireError as e:
                raise Escape(f"{what}: the responder sent a segment that does not verify: "
                             f"{e!r}: {data.hex()}") from e
            if seg.flags & SYN and seg.flags & ACK and seg.sport == PORT:
                self.irs = seg.seq
            out.append(seg)
        if len(st.half_open) > st.config.max_half_open:
            raise Escape(f"{what}: {len(st.half_open)} half-open TCBs, bound "
                         f"{st.config.max_half_open}")
        return out

    # --- the peer ---------------------------------------------------------------------------
    def handshake(self, kind: int, pressure: int = 0) -> None:
        """kind 0: none; 1: SYN, SYN+ACK, ACK without options; 2 and 3: with Linux's options.
        ``pressure`` 1 or 2 shrinks the half-open table to 4 and fills it half with other
        peers' SYNs first, so the SYN,ACK carries a SYN cookie; with 2, four more SYNs push our
        TCB out before the ACK, which must then rebuild it from the cookie (RFC 4987 3.6)."""
        if not kind:
            return
        if pressure:
            self.stack.config.max_half_open = 4
            for i in range(2):
                self.feed(craft(sport=41000 + i, seq=i * 7919, flags=SYN), "pressure SYN")
        opts = b"" if kind == 1 else bytes.fromhex("020405b40402080a0000000100000000"
                                                   "01030307")
        out = self.feed(craft(seq=self.cseq - 1, flags=SYN, options=opts), "handshake SYN")
        if pressure > 1:
            for i in range(4):
                self.feed(craft(sport=42000 + i, seq=i * 104729, flags=SYN), "evicting SYN")
        ts = b""
        synack = [o for o in out if o.flags == SYN | ACK]
        if kind > 1 and synack and synack[0].options.timestamps:
            ts = bytes.fromhex("0101080a00000002") + \
                synack[0].options.timestamps[0].to_bytes(4, "big")
        if synack:
            self.irs = synack[0].seq
        self.feed(craft(seq=self.cseq, ack=self.irs + 1, flags=ACK, options=ts),
                  "handshake ACK")

    def resolve(self, spec: dict) -> bytes:
        conn = self.conn(spec["sport"])
        base, delta = spec["seq"]
        seq = {"rcv_nxt": conn.rcv_nxt if conn else self.cseq, "irs": conn.irs if conn else 0,
               "any": spec["any_seq"]}[base] + delta
        base, delta = spec["ack"]
        ack = {"snd_nxt": conn.snd_nxt if conn else self.irs + 1,
               "snd_una": conn.snd_una if conn else self.irs,
               "any": spec["any_seq"] ^ 0x5A5A5A5A}[base] + delta
        opts = spec["options"]
        if conn is not None and conn.ts_ok and not opts:
            opts = bytes.fromhex("0101080a") + (conn.ts_recent + 1 & 0xFFFFFFFF).to_bytes(
                4, "big") + conn.tsval(self.now).to_bytes(4, "big")
        kw = {k: v for k, v in spec.items() if k not in ("seq", "ack", "any_seq", "options")}
        return craft(seq=seq, ack=ack, options=opts, **kw)

    def run(self, session: dict) -> "Session":
        self.handshake(session["handshake"], session.get("pressure", 0))
        lect = list(lecture_packets().values())
        for i, step in enumerate(session["steps"]):
            what = f"step {i} {step[0]}"
            if step[0] == "seg":
                self.feed(self.resolve(step[1]), what)
            elif step[0] == "lecture":
                buf = bytearray(lect[step[1] % len(lect)])
                for pos, val in step[2]:
                    buf[pos % len(buf)] = val
                self.feed(bytes(buf), what)
            elif step[0] in ("raw", "scapy"):
                self.feed(step[1], what)
            elif step[0] == "time":
                self.tick(step[1], what)
            else:
                raise ValueError(step)
        self.tick(0.0, "end")
        return self


def run_session(session: dict) -> Session:
    """Run one generated session on a fresh responder; raises :class:`Escape` on a violation."""
    return Session(session["app"]).run(session)


# ---------------------------------------------------------------------------------------------
# The engines.
# ---------------------------------------------------------------------------------------------

def _atheris_one_input(data: bytes) -> None:
    import atheris
    fdp = atheris.FuzzedDataProvider(data)
    src = AtherisSource(fdp)
    if src.int(0, 3) == 0:                       # the raw-buffer path, where the seeds live
        s = Session("echo")
        s.handshake(src.int(0, 2))
        s.feed(fdp.ConsumeBytes(fdp.remaining_bytes()), "raw input")
        return
    run_session(gen_session(src))


def _atheris_counting_input(data: bytes) -> None:
    """:func:`_atheris_one_input`, and the running totals written to $TCPLAB_FUZZ_COUNT now and
    then (libFuzzer ends the process with _exit: no atexit, no final print of ours)."""
    FED["runs"] = FED.get("runs", 0) + 1
    _atheris_one_input(data)
    if FED["runs"] % 1000 == 0 or FED["runs"] == FED.get("last"):
        Path(os.environ["TCPLAB_FUZZ_COUNT"]).write_text(json.dumps(FED))


def write_seed_corpus(directory: Path) -> int:
    """The lecture's packets as seeds: first byte 0 selects the raw path, second the handshake
    (none), then the packet; plus each with a completed handshake."""
    directory.mkdir(parents=True, exist_ok=True)
    n = 0
    for name, pkt in lecture_packets().items():
        for hs in (0, 2):
            (directory / f"lecture-{name}-{hs}").write_bytes(bytes((0, hs)) + pkt)
            n += 1
    return n


def run_atheris(inputs: int, workdir: Path, max_len: int = 512, seconds: int = 0) -> dict:
    """Run atheris for ``inputs`` inputs in a child process (libFuzzer exits the process);
    parse its final "Done N runs" line."""
    corpus = workdir / "corpus"
    write_seed_corpus(corpus)
    t0 = time.monotonic()
    count_file = workdir / "count.json"
    env = dict(os.environ, TCPLAB_FUZZ_COUNT=str(count_file), PYTHONPATH=str(PROJECT_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", _ATHERIS_CHILD, f"-runs={inputs}",
         f"-max_len={max_len}", "-print_final_stats=1", f"-artifact_prefix={workdir}/",
         *([f"-max_total_time={seconds}"] if seconds else []),
         str(corpus)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, env=env)
    elapsed = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    (workdir / "atheris.log").write_text(log)
    done = [l for l in log.splitlines() if l.startswith("Done ")]
    runs = int(done[-1].split()[1]) if done else None
    cov = [l for l in log.splitlines() if "cov:" in l]
    crash = [str(p) for p in workdir.glob("crash-*")]
    try:
        fed = json.loads(count_file.read_text())
    except (OSError, ValueError):
        fed = {}
    return {"engine": "atheris", "inputs": runs, "requested": inputs,
            "buffers": fed.get("buffers"), "seconds": round(elapsed, 1),
            "escapes": len(crash), "crash_files": crash, "exit_status": proc.returncode,
            "last_status": cov[-1].strip() if cov else "", "log": str(workdir / "atheris.log"),
            "ok": proc.returncode == 0 and runs is not None and not crash
            and (runs >= inputs or bool(seconds))}


def run_hypothesis(inputs: int) -> dict:
    """The fallback engine: Hypothesis with ``inputs`` examples, seeded with the lecture."""
    from hypothesis import HealthCheck, example, given, settings, strategies as st

    counted = {"n": 0}

    @st.composite
    def sessions(draw):
        return gen_session(HypothesisSource(draw))

    seeds = [{"app": "echo", "handshake": 0, "steps": [("raw", p)]}
             for p in lecture_packets().values()]

    @settings(max_examples=inputs, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(sessions())
    def prop(session):
        counted["n"] += 1
        run_session(session)

    for seed in seeds:
        prop = example(seed)(prop)
    t0 = time.monotonic()
    escape = None
    try:
        prop()
    except Exception as e:          # the shrunk counterexample
        escape = f"{type(e).__name__}: {e}"
    return {"engine": "hypothesis", "inputs": counted["n"], "requested": inputs,
            "seconds": round(time.monotonic() - t0, 1), "escapes": int(escape is not None),
            "escape": escape, "ok": escape is None and counted["n"] >= inputs}


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
        return True
    except ImportError:
        return False


def fuzz(inputs: int = 1_000_000, engine: str = "auto", workdir: Path | None = None,
         seconds: int = 0) -> dict:
    """The long fuzz (``invoke fuzz``): returns a result dict (inputs run, escapes, time).
    ``seconds`` (atheris only) ends the run early; the inputs done are still reported."""
    if engine == "auto":
        engine = "atheris" if have_atheris() else "hypothesis"
    from harness.lab import responder_tree_hash
    fuzzed = responder_tree_hash()           # what the child imports now, not at the end
    if engine == "atheris":
        workdir = workdir or Path(tempfile.mkdtemp(prefix="tcplab-fuzz-"))
        res = run_atheris(inputs, workdir, seconds=seconds)
    else:
        res = run_hypothesis(inputs)
    res["responder_sha256"] = fuzzed
    return res


# The child imports the responder (and this module) under atheris' instrumentation, so
# libFuzzer sees the responder's branches; the standard library and Hypothesis stay plain.
_ATHERIS_CHILD = """
import sys, atheris
with atheris.instrument_imports(include=["responder", "harness.stress.fuzz"]):
    import harness.stress.fuzz as F
F.FED["last"] = int([a for a in sys.argv if a.startswith("-runs=")][0][6:])
atheris.Setup([sys.argv[0]] + sys.argv[1:], F._atheris_counting_input)
atheris.Fuzz()
"""


# ---------------------------------------------------------------------------------------------
# Long runs on a real lab: the full flood, and many demos in a row.
# ---------------------------------------------------------------------------------------------

def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def lab_processes(backend, names=("tshark", "dumpcap")) -> list[str]:
    """Processes called ``names`` that belong to the lab: in its namespaces, children of this
    process, or mentioning its state directory."""
    from harness.util import pids_mentioning
    pids = set(pids_mentioning(str(backend.state_dir) + "/"))
    for ns in (getattr(backend, "host_ns", None), getattr(backend, "vm_ns", None)):
        if ns:
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            pids |= {int(p) for p in out.stdout.split() if p.isdigit()}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    if f"PPid:\t{os.getpid()}\n" in f.read():
                        pids.add(int(entry))
            except OSError:
                pass
    found = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm in names:
            found.append(f"{comm}[{pid}]")
    return found


def soak(count: int, prefix: str = "relsoak", scenario: str = "hello",
         runs_dir: Path | None = None) -> dict:
    """``count`` demos in a row in this process on one lab (made here, removed at the end):
    each must match; after each, no tshark/dumpcap of the lab may be left and the number of
    open file descriptors (after a garbage collection) must not grow."""
    import gc
    from harness.run.demo import run_demo
    from harness.lab import get_backend
    from harness.lab.provision import bring_up
    backend = get_backend("netns", prefix)
    runs_dir = runs_dir or Path(tempfile.mkdtemp(prefix="tcplab-soak-"))
    fds, failures, leftovers, seconds = [], [], [], []
    bring_up(backend)
    try:
        for i in range(count):
            t0 = time.monotonic()
            res = run_demo(backend, scenario, runs_dir=runs_dir)
            seconds.append(time.monotonic() - t0)
            if not res.ok:
                failures.append(f"demo {i}: {res.reason}")
            left = lab_processes(backend)
            if left:
                leftovers.append(f"after demo {i}: {', '.join(left)}")
            gc.collect()
            fds.append(open_fds())
    finally:
        backend.down()
    return {"demos": count, "failures": failures, "leftover_captures": leftovers,
            "open_fds": fds, "fd_growth": fds[-1] - fds[0] if fds else 0,
            "demo_s_p50": round(sorted(seconds)[len(seconds) // 2], 2) if seconds else None,
            "ok": not failures and not leftovers and bool(fds) and fds[-1] <= fds[0]}


def flood_run(count: int = 100_000, prefix: str = "relflood", clients: int = 1000) -> dict:
    """The full SYN flood on a lab of its own: hello responder, ``count`` spoofed-port SYNs,
    hello clients during it; the responder's memory and counters."""
    from harness.stress import attack
    from harness.lab import get_backend
    from harness.lab.provision import bring_up
    backend = get_backend("netns", prefix)
    bring_up(backend)
    try:
        with attack.Target(backend, "hello") as t:
            idle, _ = t.memory_kb()
            res = attack.syn_flood(backend, count, clients=clients, watch_pid=t.proc.pid)
            rss, peak = t.memory_kb()
            counters = t.counters()
    finally:
        backend.down()
    res.update(idle_rss_kb=idle, rss_kb=rss, peak_rss_kb=peak, counters=counters,
               completion=round(res["clients_ok"] / res["clients"], 3) if res["clients"] else None)
    res["ok"] = bool(res["clients"]) and res["completion"] >= 0.9
    return res


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m harness.stress.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--inputs", type=int, default=1_000_000)
    p.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    p.add_argument("--workdir", type=Path)
    p.add_argument("--seconds", type=int, default=0, help="stop after this long (atheris)")
    p.add_argument("--flood", type=int, default=0, help="run the SYN flood of this size instead")
    p.add_argument("--soak", type=int, default=0, help="run this many demos in a row instead")
    p.add_argument("--prefix", default="relfuzz", help="lab name for --flood / --soak")
    a = p.parse_args(argv)
    if a.flood:
        res = flood_run(a.flood, a.prefix)
    elif a.soak:
        res = soak(a.soak, a.prefix)
    else:
        res = fuzz(a.inputs, a.engine, a.workdir, seconds=a.seconds)
    print(json.dumps(res, indent=2))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
