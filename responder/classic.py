"""The lecture's naive copy-and-swap responder, byte for byte, bugs included (``--classic``).

This is the program of the lecture notes ("Naive TCP handshake responder", tcp-raw-responder.c)
redone in Python so that its packets can be compared with the notes' tcpdump hex to the byte.
It does not implement TCP; it *imitates* a TCP peer by taking each packet the client sent,
swapping the addresses, the ports and the sequence/acknowledgment numbers, and sending it back.
Everything else is copied: the IP identification, the TTL, the DF flag, the window, even the
client's timestamp option (so our "TSval" is the client's clock and our "TSecr" echoes what we
never sent).  Read it next to :mod:`responder.tcp` to see what a state machine adds.

What it does, read off the capture in the notes:

================================  ==========================================================
client sends                      classic answers
================================  ==========================================================
SYN to our port                   the SYN copied and swapped: SYN+ACK, seq = ISN,
                                  ack = client's seq + 1, options verbatim
the ACK completing the handshake  three segments, each that ACK copied and swapped (seq =
(no data, acks ISN + 1)           client's ack, advancing by each line; ack = client's seq),
                                  with one line appended
data                              the data echoed back, copied and swapped, never ACKed: nc
                                  prints it, and retransmits its own data until it gives up
FIN                               a copied-and-swapped ACK of it (ack = seq + data + 1); no
                                  FIN of its own ever, so the connection is left half-open
anything else (RST, SYN+ACK,      nothing
later pure ACKs, other ports)
================================  ==========================================================

The only state is which connections have had their three lines, so that the client's later
pure ACKs (ack 32, ack 98 in the notes) do not trigger them again.  Because every answer is a
copy, the ISN is the one thing the program chooses.  Checksums are recomputed in full after
each edit (the naive program did the same, copying the pseudo-header into a buffer; here the
pseudo-header is summed in place, :func:`responder.wire.pseudo_header_sum`).  Note that a pure
swap never changes a checksum: one's-complement addition does not care about order (RFC 1071),
which is why the notes' SYN+ACK carries the SYN's IP checksum, 0xedd1, unchanged.
"""

from __future__ import annotations

import struct
from collections import Counter, OrderedDict

from . import wire
from .contract import CLASSIC_ISN

LINES = (b"Hello TCP\n\0", b"Great to meet you!\n\0",
         b"Nice weather we are having, but they say it will rain on Monday.\n\0")

_SEQ_ACK = struct.Struct("!II")
_U16 = struct.Struct("!H")

# How many connections to remember as "lines sent"; the oldest is forgotten first.  Forgetting
# one costs little: its lines go out again only if it sends another ACK of ISN + 1.
MAX_REMEMBERED = 4096


class ClassicResponder:
    """The naive responder as a function of packets: ``on_packet(bytes) -> [packets to send]``.

    Packets in and out are whole IPv4 packets: the answers carry a copy of the client's IP
    header, so they go out on an ``IPPROTO_RAW`` socket (``IP_HDRINCL``).  No clock, no socket:
    the I/O loop does the sending.  Malformed input is dropped and counted in ``drops`` by the
    wire layer's reason names.  ``port`` (and ``addr``, 4 packed bytes, if given) select the
    packets it answers; ``isn`` is the sequence number of its SYN; ``lines`` are sent in order.
    """

    def __init__(self, port: int = 80, isn: int = CLASSIC_ISN, lines=LINES, *,
                 addr: bytes | None = None):
        self.port = port
        self.addr = addr            # answer only packets to this address; None: any address
        self.isn = isn & 0xFFFFFFFF
        self.lines = tuple(bytes(line) for line in lines)
        self.drops: Counter = Counter()
        self._served: OrderedDict = OrderedDict()   # (client addr, client port) -> True

    def on_packet(self, ip_packet) -> list:
        """Answer one received IPv4 packet; returns the IPv4 packets to send (maybe none)."""
        try:
            seg = wire.parse(ip_packet)
        except wire.WireError as err:
            self.drops[err.reason] += 1
            return []
        if seg.dport != self.port or seg.flags & wire.RST or \
                (self.addr is not None and seg.dst != self.addr):
            return []
        pkt = memoryview(ip_packet).cast("B")
        key = (seg.src, seg.sport)
        flags = seg.flags
        if flags & wire.SYN:
            if flags & wire.ACK:
                return []
            # A new connection: echo the SYN back with our ISN and the SYN's seq + 1 acked.
            self._served.pop(key, None)
            return [_copy_swapped(pkt, seg, self.isn, seg.seq + 1, wire.SYN | wire.ACK)]
        if not flags & wire.ACK:
            return []
        if flags & wire.FIN:
            # ACK the FIN (it occupies one sequence number); drop any data it carried.
            self._served.pop(key, None)
            return [_copy_swapped(pkt, seg, seg.ack, seg.seq + len(seg.payload) + 1, wire.ACK)]
        if len(seg.payload):
            # The bug the notes point out: the data is swapped back, not acknowledged.
            return [_copy_swapped(pkt, seg, seg.ack, seg.seq, flags, seg.payload)]
        if seg.ack != (self.isn + 1) & 0xFFFFFFFF or key in self._served:
            return []
        # The handshake is complete: send the lines, each on a copy of this very ACK.
        self._served[key] = True
        if len(self._served) > MAX_REMEMBERED:
            self._served.popitem(last=False)
        out, seq = [], seg.ack
        for line in self.lines:
            out.append(_copy_swapped(pkt, seg, seq, seg.seq, flags, line))
            seq += len(line)
        return out


def _copy_swapped(pkt: memoryview, seg: wire.Segment, seq: int, ack: int, flags: int,
                  payload=b"") -> bytes:
    """The client's IP header and TCP header (options included) copied verbatim, with the
    addresses and ports swapped, ``seq``/``ack``/``flags`` written in, ``payload`` appended,
    and the total length and both checksums made right for the result."""
    ihl = (pkt[0] & 0x0F) * 4
    end = ihl + (pkt[ihl + 12] >> 4) * 4        # end of the TCP header: data offset
    out = bytearray(pkt[:end])
    out += payload
    out[12:16], out[16:20] = pkt[16:20], pkt[12:16]
    out[ihl:ihl + 2], out[ihl + 2:ihl + 4] = pkt[ihl + 2:ihl + 4], pkt[ihl:ihl + 2]
    _SEQ_ACK.pack_into(out, ihl + wire.TCP_SEQ, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF)
    out[ihl + wire.TCP_FLAGS] = flags
    _U16.pack_into(out, wire.IP_TOTAL_LENGTH, len(out))
    _U16.pack_into(out, wire.IP_CHECKSUM, 0)
    _U16.pack_into(out, wire.IP_CHECKSUM, wire.internet_checksum(memoryview(out)[:ihl]))
    tcp = memoryview(out)[ihl:]
    _U16.pack_into(out, ihl + wire.TCP_CHECKSUM, 0)
    pseudo = wire.pseudo_header_sum(seg.dst, seg.src, wire.PROTO_TCP, len(tcp))
    _U16.pack_into(out, ihl + wire.TCP_CHECKSUM, wire.internet_checksum(tcp, pseudo))
    tcp.release()
    return bytes(out)
