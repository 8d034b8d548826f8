"""Fuzz inputs: sessions of packets for the responder's receive path, from any source of
choices.

One generator (:func:`gen_session`) draws on a :class:`Source`: Hypothesis in the unit tests
(:class:`HypothesisSource`), libFuzzer's bytes under atheris in ``invoke fuzz``
(:class:`AtherisSource`).  A session is a handshake (or none), sometimes under SYN-flood
pressure, then up to eight steps: a packet crafted by hand (:func:`craft`: every field settable,
checksums right unless asked otherwise, so a structural defect reaches the check meant for it)
with sequence numbers relative to the live connection, a lecture packet with a few bytes
changed, random bytes, or time passing.  :mod:`harness.stress.fuzz` runs sessions against the
real responder code and checks its guarantees.
"""

from __future__ import annotations

from responder import wire
from responder.contract import APPS
from responder.wire import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG

CLIENT = bytes((192, 168, 56, 1))
SERVER = bytes((192, 168, 56, 100))
PORT = 80
BOUNDARY = (0, 1, 2, 0x7FFFFFFF, 0x80000000, 0x80000001, 0xFFFFFFFE, 0xFFFFFFFF)
FLAG_BITS = (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR)


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
