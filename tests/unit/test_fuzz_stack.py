"""The whole receive path, ``parse(buffer) -> Stack.on_segment(segment, now) -> segments``, and
``on_timer(now)``, under generated sessions (harness/fuzz.py: a handshake, then crafted,
mutated, random or Scapy-built packets and time passing).  :class:`harness.stress.fuzz.Session` checks
the guarantees after every step: no exception but a named WireError, every rejection counted
under a named reason, every answer sendable, the half-open table bounded.  The last tests show
that this oracle fails when the responder breaks a guarantee."""

from __future__ import annotations

import random
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from harness.stress import fuzz, inputs
from harness.stress.fuzz import Escape, Session
from harness.stress.inputs import CLIENT, SERVER, HypothesisSource, craft, gen_session
from responder import tcp, wire

SLOW = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def sessions(draw, max_steps=8):
    return gen_session(HypothesisSource(draw), max_steps)


@settings(max_examples=1000, **SLOW)
@given(sessions())
def test_generated_sessions_keep_every_guarantee(session):
    fuzz.run_session(session)


@st.composite
def scapy_steps(draw):
    """A segment of the live connection's 4-tuple built by Scapy with raw option tuples and
    explicit (often wrong) header fields."""
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw
    opts = draw(st.lists(st.tuples(st.sampled_from([0, 1, 2, 3, 4, 5, 8, 30, 254]),
                                   st.binary(max_size=10)), max_size=4))
    pkt = IP(src="192.168.56.1", dst="192.168.56.100") / TCP(
        sport=40000, dport=80, seq=draw(st.sampled_from([1_000_000, 999_999, 0, 2**32 - 1])),
        ack=draw(st.integers(0, 2**32 - 1)), flags=draw(st.integers(0, 255)),
        dataofs=draw(st.one_of(st.none(), st.integers(0, 15))), options=opts,
        window=draw(st.integers(0, 65535))) / Raw(draw(st.binary(max_size=30)))
    try:
        return ("scapy", bytes(pkt))
    except Exception:
        return ("raw", b"")


@settings(max_examples=100, **SLOW)
@given(st.sampled_from(inputs.APPS), st.integers(1, 3),
       st.lists(scapy_steps(), min_size=1, max_size=6))
def test_scapy_built_segments_on_a_live_connection(app, handshake, steps):
    fuzz.run_session({"app": app, "handshake": handshake, "steps": steps})


@pytest.mark.parametrize("seed", range(3))
def test_the_lecture_exchange_replayed_with_one_byte_changed(seed):
    """Each lecture packet of the client, one byte at a time set to a random value, into a
    responder that has seen the rest of the exchange."""
    rnd = random.Random(seed)
    client = [p for p in inputs.lecture_packets().values() if p[12:16] == CLIENT]
    for pkt in client:
        for pos in range(len(pkt)):
            s = Session("hello")
            for p in client:
                s.feed(p, "lecture as is")
            buf = bytearray(pkt)
            buf[pos] = rnd.randrange(256)
            s.feed(bytes(buf), f"byte {pos} of {pkt[:4].hex()}")
            s.tick(130.0, "every timer")


def test_syn_flood_is_bounded_and_a_legitimate_handshake_still_completes():
    """5,000 SYNs from one address, each from another port (the unit twin of the e2e flood),
    0.5 s of lab time with timers run every 100 SYNs: the half-open table never exceeds its
    bound (1024), the stack's memory stays under 6 MB (1024 half-open TCBs are ~4 MB here, ~4 KB
    each), and each of 20 clients that answers its SYN,ACK promptly reaches ESTABLISHED.

    The legitimate hello connections keep their retransmission timers running (this test never
    ACKs their data), so a live timer sits at the top of the timer heap while the flood goes on.
    Evicted TCBs must not pile up behind it: with lazy deletion alone, every flood SYN leaves its
    deleted TCB (~3 KB) in the heap until that live timer fires, and a peer that stops ACKing
    makes that timer back off to 60 s (RFC 6298) -- at 100,000 SYN/s, gigabytes.  Found by this
    test: ``Stack._delete`` leaves the TCB's heap entries; compact the heap when stale entries
    outnumber live ones (or key entries by a generation number, not the TCB)."""
    s = Session("hello")
    bound = s.stack.config.max_half_open
    rnd = random.Random(1)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        peak = 0
        established = 0
        for i, port in enumerate(rnd.sample(range(1024, 32768), 5_000)):
            s.feed(craft(sport=port, seq=rnd.getrandbits(32), flags=wire.SYN,
                         options=bytes.fromhex("020405b4")), "flood SYN")
            if i % 250 == 100:                      # a legitimate client, mid-flood
                sport = 40000 + i
                out = s.feed(craft(sport=sport, seq=7, flags=wire.SYN), "legit SYN")
                synack = [o for o in out if o.flags == wire.SYN | wire.ACK]
                assert synack, out
                s.feed(craft(sport=sport, seq=8, ack=synack[0].seq + 1, flags=wire.ACK),
                       "legit ACK")
                conn = s.stack.conns.get((SERVER, 80, CLIENT, sport))
                established += conn is not None and conn.state is not tcp.State.SYN_RECEIVED
            if i % 100 == 0:
                s.tick(0.01)
                peak = max(peak, tracemalloc.get_traced_memory()[0] - base)
                assert len(s.stack.half_open) <= bound
        assert established == 20
        assert s.stack.drops["syn_queue_overflow"] == 5_000 - bound
        assert peak < 6 * 1024 * 1024, \
            f"{peak} bytes for {bound} half-open TCBs: deleted TCBs are kept (timer heap?)"
    finally:
        tracemalloc.stop()


# --- the oracle can fail --------------------------------------------------------------------

def _established(app="echo") -> Session:
    s = Session(app)
    s.handshake(1)
    assert s.conn().state is tcp.State.ESTABLISHED
    return s


def test_oracle_fails_on_an_uncounted_drop(monkeypatch):
    s = _established()
    monkeypatch.setitem(s.stack.actions, "drop", lambda *args, **kw: None)
    with pytest.raises(Escape, match="no drop reason"):
        s.feed(craft(seq=s.conn().rcv_nxt - (1 << 30), flags=wire.RST), "RST out of window")


def test_oracle_fails_on_a_catch_all_reason(monkeypatch):
    s = _established()
    monkeypatch.setattr(tcp.stack, "drop_reason", lambda *args, **kw: "dropped")
    with pytest.raises(Escape, match="catch-all"):
        s.feed(craft(seq=s.conn().rcv_nxt - (1 << 30), flags=wire.RST), "RST out of window")


def test_oracle_fails_on_an_escaping_exception(monkeypatch):
    s = _established()

    def boom(*args, **kw):
        raise KeyError("oops")
    monkeypatch.setitem(s.stack.actions, "challenge_ack", boom)
    with pytest.raises(Escape, match="KeyError"):
        s.feed(craft(seq=s.conn().rcv_nxt + 1, flags=wire.RST), "RST in window")


def test_oracle_fails_on_an_unsendable_answer(monkeypatch):
    s = _established()
    real = tcp.Connection.segment

    def wide(self, *a, **kw):
        seg = real(self, *a, **kw)
        seg.window = 70_000
        return seg
    monkeypatch.setattr(tcp.Connection, "segment", wide)
    with pytest.raises(Escape, match="handle_packet raised error"):
        s.feed(craft(seq=s.conn().rcv_nxt, ack=s.conn().snd_nxt, flags=wire.SYN), "SYN")
