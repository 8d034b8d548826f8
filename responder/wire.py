"""Wire layer: bytes <-> validated IPv4/TCP records, and the Internet checksum in parts.

This module knows nothing of connections (that is :mod:`responder.tcp`).  Parsing works over a
``memoryview`` of the received buffer: the payload of a parsed :class:`Segment` is a slice of that
view, never a copy.  Every malformed input raises a subclass of :class:`WireError` whose
``reason`` is a short, stable name; the I/O loop counts drops under that name.

Addresses are 4-byte ``bytes`` objects (packed, hashable, cheap); use :func:`ip_str` to print one.
"""

from __future__ import annotations

import socket

# TCP header flags (RFC 9293 section 3.1).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

PROTO_TCP = 6

# TCP option kinds (IANA registry).
OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMPS = 8


class WireError(ValueError):
    """A segment that cannot be accepted; ``reason`` names why (used as a counter key)."""

    reason = "malformed"


class Truncated(WireError):
    reason = "truncated"


class BadVersion(WireError):
    reason = "bad_version"


class BadIHL(WireError):
    reason = "bad_ihl"


class BadLength(WireError):
    reason = "bad_length"


class Fragment(WireError):
    reason = "fragment"


class NotTCP(WireError):
    reason = "not_tcp"


class BadDataOffset(WireError):
    reason = "bad_data_offset"


class OptionOverrun(WireError):
    reason = "option_overrun"


class BadOption(WireError):
    reason = "bad_option"


class BadIPChecksum(WireError):
    reason = "bad_ip_checksum"


class BadChecksum(WireError):
    reason = "bad_checksum"


class TcpOptions:
    """TCP options as parsed or to be emitted.

    ``timestamps`` is ``(TSval, TSecr)`` or ``None``; ``sack`` is a tuple of ``(left, right)``
    blocks; ``unknown`` keeps options this layer does not interpret as ``(kind, data)`` pairs.
    """

    __slots__ = ("mss", "wscale", "sack_permitted", "sack", "timestamps", "unknown")

    def __init__(self, mss=None, wscale=None, sack_permitted=False, sack=(), timestamps=None,
                 unknown=()):
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack = tuple(sack)
        self.timestamps = timestamps
        self.unknown = tuple(unknown)

    def __eq__(self, other):
        if not isinstance(other, TcpOptions):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self):
        parts = [f"{n}={getattr(self, n)!r}" for n in self.__slots__
                 if getattr(self, n) not in (None, False, ())]
        return f"TcpOptions({', '.join(parts)})"


NO_OPTIONS = TcpOptions()


class Segment:
    """One IPv4+TCP segment: addressing, TCP header fields, options and payload.

    ``payload`` is a ``memoryview`` slice of the received buffer after :func:`parse`, or any
    bytes-like object for a segment about to be emitted.
    """

    __slots__ = ("src", "dst", "sport", "dport", "seq", "ack", "flags", "window", "urgent",
                 "options", "payload", "ttl", "ident")

    def __init__(self, src, dst, sport, dport, seq=0, ack=0, flags=0, window=0, urgent=0,
                 options=NO_OPTIONS, payload=b"", ttl=64, ident=0):
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.urgent = urgent
        self.options = options
        self.payload = payload
        self.ttl = ttl
        self.ident = ident

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: payload plus one each for SYN and FIN."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    def __repr__(self):
        return (f"Segment({ip_str(self.src)}:{self.sport} > {ip_str(self.dst)}:{self.dport} "
                f"[{flags_str(self.flags)}] seq={self.seq} ack={self.ack} win={self.window} "
                f"len={len(self.payload)} {self.options!r})")


def ip_str(addr: bytes) -> str:
    return socket.inet_ntoa(bytes(addr))


def ip_bytes(addr: str) -> bytes:
    return socket.inet_aton(addr)


def flags_str(flags: int) -> str:
    """tcpdump's notation: ``S``, ``S.``, ``P.``, ``F.``, ``R``, ``.`` ..."""
    out = ""
    for bit, ch in ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (URG, "U"), (ECE, "E"),
                    (CWR, "W")):
        if flags & bit:
            out += ch
    if flags & ACK:
        out += "."
    return out or "none"
