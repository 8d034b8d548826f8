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

The inputs come from :mod:`harness.stress.inputs`; the long runs on a real lab are
:mod:`harness.stress.soak` and :mod:`harness.stress.flood`.  Engines: the unit tests draw
sessions with Hypothesis (:class:`HypothesisSource`); ``invoke fuzz`` runs atheris
(coverage-guided libFuzzer, :class:`AtherisSource`) seeded with the lecture's packets, or
Hypothesis with a large budget when atheris is not installed.

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
from responder.wire import ACK, SYN

from harness.stress.inputs import (CLIENT, PORT, SERVER, AtherisSource,  # noqa: F401
                                   HypothesisSource, craft, gen_session, lecture_packets)
from harness.util import PROJECT_ROOT

#: TABLE actions that reject a segment: each must be counted under a named drop reason.
REJECTING = ("drop", "ack_drop", "challenge_ack", "reset")
#: The wire layer's reasons, one per WireError subclass.
WIRE_REASONS = frozenset(c.reason for c in wire.WireError.__subclasses__())
UNNAMED = ("dropped", wire.WireError.reason)


class Escape(AssertionError):
    """An input broke a guarantee; the message says which, and the step."""


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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m harness.stress.fuzz",
                                description=__doc__.split("\n")[0])
    p.add_argument("--inputs", type=int, default=1_000_000)
    p.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    p.add_argument("--workdir", type=Path)
    p.add_argument("--seconds", type=int, default=0, help="stop after this long (atheris)")
    a = p.parse_args(argv)
    res = fuzz(a.inputs, a.engine, a.workdir, seconds=a.seconds)
    print(json.dumps(res, indent=2))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
