"""In-process micro-benchmarks of the responder's checksum code (item 3), on the interpreter
the responder runs on (the venv's python is the system ``python3``).

* full checksum of a 1460-byte segment: ``responder.wire.internet_checksum`` vs
  ``scapy.utils.checksum`` (the reference), in MB/s;
* RFC 1624: change one 32-bit field of a precomputed 1480-byte TCP segment (a new sequence
  number) and fix its checksum incrementally (``wire.patch_u32``) vs writing the field and
  recomputing the checksum over pseudo-header + segment (the reference);
* miniweb's whole per-packet patch (``Miniweb.encode``: addresses, ports, seq, ack, window,
  timestamps, each by RFC 1624) vs building the same segment from scratch (``wire.build_tcp``,
  which sums it all).

Every round first checks that both sides compute the same checksum, then times each side for
a fixed number of calls, the two sides interleaved.  Times are this process's CPU time
(``time.process_time``), so other engineers' load inflates them far less than wall time.
"""

from __future__ import annotations

import random
import time

from responder import wire
from responder.apps import Miniweb
from responder.wire import ACK, PSH, Segment, TcpOptions

SEGMENT = 1460
# CPU time of this process, not wall time: on a shared machine (load average well above the
# core count) wall time also counts the time other processes had the CPU.
_clock = time.process_time
SRC, DST = bytes([192, 168, 56, 100]), bytes([192, 168, 56, 1])


def _rate(fn, arg, iters: int) -> float:
    """Calls per second of ``fn(arg)`` over ``iters`` calls."""
    t0 = _clock()
    for _ in range(iters):
        fn(arg)
    return iters / (_clock() - t0)


def _rate_seq(fn, args, iters: int) -> float:
    """Calls per second of ``fn(a)`` cycling through ``args``."""
    n = len(args)
    t0 = _clock()
    for i in range(iters):
        fn(args[i % n])
    return iters / (_clock() - t0)


def full_checksum_round(iters: int, rng: random.Random) -> dict:
    from scapy.utils import checksum as scapy_checksum
    buf = rng.randbytes(SEGMENT)
    ours = wire.internet_checksum(buf)
    theirs = scapy_checksum(buf)
    if ours != theirs:
        raise AssertionError(f"checksums differ: ours 0x{ours:04x}, scapy 0x{theirs:04x}")
    mb = SEGMENT / 1e6
    return {"ours_mb_s": _rate(wire.internet_checksum, buf, iters) * mb,
            "scapy_mb_s": _rate(scapy_checksum, buf, iters) * mb}


def _segment(rng: random.Random, payload_len: int = 1448) -> bytearray:
    seg = Segment(SRC, DST, 80, 40000, rng.getrandbits(32), rng.getrandbits(32), ACK | PSH,
                  502, options=TcpOptions(timestamps=(1, 2)), payload=rng.randbytes(payload_len))
    return wire.build_tcp(seg)


def _full_recompute(pkt: bytearray, seq: int, pseudo: int) -> None:
    """Write the field, then the checksum from scratch: the reference for RFC 1624."""
    wire.U32.pack_into(pkt, wire.TCP_SEQ, seq)
    pkt[wire.TCP_CHECKSUM:wire.TCP_CHECKSUM + 2] = b"\0\0"
    wire.U16.pack_into(pkt, wire.TCP_CHECKSUM, wire.internet_checksum(pkt, pseudo))


def incremental_round(iters: int, rng: random.Random) -> dict:
    pkt = _segment(rng)
    pseudo = wire.pseudo_header_sum(SRC, DST, wire.PROTO_TCP, len(pkt))
    seqs = [rng.getrandbits(32) for _ in range(256)]    # 256: indexed with i & 255
    # Agreement: the incremental result equals the recomputed one for every new value.
    a, b = bytearray(pkt), bytearray(pkt)
    for s in seqs[:32]:
        wire.patch_u32(a, wire.TCP_SEQ, s, wire.TCP_CHECKSUM)
        _full_recompute(b, s, pseudo)
        if a != b:
            raise AssertionError(f"RFC 1624 update disagrees with recomputation for seq {s}")
    # Loops written out (no wrapper call): each side pays only for its own work.
    patch, off, csum = wire.patch_u32, wire.TCP_SEQ, wire.TCP_CHECKSUM
    t0 = _clock()
    for i in range(iters):
        patch(a, off, seqs[i & 255], csum)
    t1 = _clock()
    for i in range(iters):
        _full_recompute(b, seqs[i & 255], pseudo)
    t2 = _clock()
    return {"incremental_per_s": iters / (t1 - t0), "full_per_s": iters / (t2 - t1)}


def miniweb_round(iters: int, rng: random.Random) -> dict:
    app = Miniweb(rng.randbytes(1400), mss=1448)
    payload = app.payloads[0]
    segs = [Segment(SRC, bytes([192, 168, 56, rng.randrange(1, 255)]), 80,
                    rng.randrange(32768, 61000), rng.getrandbits(32), rng.getrandbits(32),
                    ACK | PSH, rng.randrange(1, 65535),
                    options=TcpOptions(timestamps=(rng.getrandbits(32), rng.getrandbits(32))),
                    payload=payload) for _ in range(64)]
    for seg in segs[:16]:
        patched = app.encode(seg)
        built = wire.build_tcp(seg)
        if patched is None or bytes(patched) != bytes(built):
            raise AssertionError("miniweb's patched segment differs from a fresh build")
    return {"patched_per_s": _rate_seq(app.encode, segs, iters),
            "built_per_s": _rate_seq(wire.build_tcp, segs, iters)}


def run(rounds: int, iters: int, seed: int = 7) -> dict:
    """All three micro-benchmarks, ``rounds`` times each; lists of per-round figures."""
    rng = random.Random(seed)
    out: dict = {"rounds": rounds, "iters": iters, "segment_bytes": SEGMENT,
                 "full": [], "incremental": [], "miniweb": []}
    for _ in range(rounds):
        out["full"].append(full_checksum_round(iters, rng))
        out["incremental"].append(incremental_round(iters, rng))
        out["miniweb"].append(miniweb_round(max(1, iters // 4), rng))
    return out


# --- the responder's per-segment path, in process --------------------------------------------
# The hello exchange driven through the real layers (wire.parse -> tcp.Stack.on_segment with
# the hello app -> wire.build_tcp, as io.Responder does) with no socket and no clock: what one
# segment costs in Python alone, against what Scapy needs to dissect and build the same packets
# (the Scapy responder's per-packet work).

HOST = bytes([192, 168, 56, 1])
ISN = 1000


def client_packets(conns: int, first_port: int = 20000) -> list:
    """Per connection, the client's four packets of a hello exchange: SYN, the handshake's
    ACK, the ACK of the 97 bytes and the FIN, then its own FIN (the server's ISN is fixed)."""
    from responder.apps import HELLO_LINES
    end = ISN + 1 + sum(len(x) for x in HELLO_LINES) + 1
    out = []
    for i in range(conns):
        port, c = first_port + i, 5000 + 7 * i
        syn_opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True)
        out.append([bytes(wire.build_packet(Segment(HOST, SRC, port, 80, c, 0, wire.SYN, 64240,
                                                    options=syn_opts))),
                    bytes(wire.build_packet(Segment(HOST, SRC, port, 80, c + 1, ISN + 1, ACK,
                                                    502))),
                    bytes(wire.build_packet(Segment(HOST, SRC, port, 80, c + 1, end, ACK, 502))),
                    bytes(wire.build_packet(Segment(HOST, SRC, port, 80, c + 1, end,
                                                    ACK | wire.FIN, 502)))])
    return out


def _new_stack():
    from responder.apps import make_app
    from responder.tcp import Config, Stack
    stack = Stack(Config(fixed_isn=ISN), isn_key=b"\x07" * 32)
    stack.listen(SRC, 80, make_app("hello"))
    return stack


def stack_round(conns: int) -> dict:
    """One round: tcplab's path and Scapy's for ``conns`` hello exchanges; us per segment."""
    from scapy.compat import raw
    from scapy.layers.inet import IP, TCP
    pkts = client_packets(conns)
    # tcplab: parse, state machine, build -- exactly io.Responder.handle_packet's work
    stack, parse, build = _new_stack(), wire.parse, wire.build_tcp
    outs = []
    n_out = 0
    t0 = _clock()
    for i, conn in enumerate(pkts):
        now = i * 1e-4
        for p in conn:
            for seg in stack.on_segment(parse(p), now):
                build(seg)
                n_out += 1
    t_ours = _clock() - t0
    n_in = 4 * conns
    # what the same exchange sends, for Scapy to build (taken from a fresh stack, untimed)
    stack2 = _new_stack()
    for i, conn in enumerate(pkts):
        for p in conn:
            for s in stack2.on_segment(wire.parse(p), i * 1e-4):
                outs.append((wire.ip_str(s.src), wire.ip_str(s.dst), s.sport, s.dport, s.seq,
                             s.ack, int(s.flags), s.window, bytes(s.payload)))
    flat = [p for conn in pkts for p in conn]
    t0 = _clock()
    for p in flat:
        IP(p)
    for src, dst, sport, dport, seq, ack, flags, window, payload in outs:
        raw(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags,
                                       window=window) / payload)
    t_scapy = _clock() - t0
    segs = n_in + n_out
    return {"conns": conns, "segments_in": n_in, "segments_out": n_out,
            "out_per_conn": n_out / conns, "ours_us_per_segment": t_ours / segs * 1e6,
            "ours_us_per_conn": t_ours / conns * 1e6,
            "scapy_us_per_segment": t_scapy / (len(flat) + len(outs)) * 1e6}
