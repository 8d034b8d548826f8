"""Wire layer: bytes <-> validated IPv4/TCP records, and the Internet checksum in parts.

This module knows nothing of connections (that is :mod:`responder.tcp`).  Parsing works over a
``memoryview`` of the received buffer: the payload of a parsed :class:`Segment` is a slice of that
view, never a copy.  Every malformed input raises a subclass of :class:`WireError` whose
``reason`` is a short, stable name; the I/O loop counts drops under that name.

Addresses are 4-byte ``bytes`` objects (packed, hashable, cheap); use :func:`ip_str` to print one.

The pieces, in the order a packet meets them:

- the checksum in parts (RFC 1071, RFC 1624): :func:`checksum_partial`, :func:`fold`,
  :func:`internet_checksum`, :func:`pseudo_header_sum`, :func:`checksum_update16` and
  :func:`checksum_update32`;
- reading: :func:`peek_ports` (a cheap first filter), :func:`parse` (validated
  :class:`Segment`), :func:`parse_options`;
- writing: :func:`emit_options` (Linux's layout), :func:`build_tcp` (for an ``IPPROTO_TCP`` raw
  socket), :func:`build_ipv4` and :func:`build_packet` (whole packets, for ``IPPROTO_RAW``);
- editing stored packets in place (miniweb): :func:`patch_u16`, :func:`patch_u32`;
- the layouts, for code that crafts packets field by field: :data:`IPV4_HEADER`,
  :data:`TCP_HEADER` (``struct.Struct``), :data:`U16`, :data:`U32`, and the field offsets
  (``IP_CHECKSUM``, ``TCP_SEQ``, ``TCP_CHECKSUM`` ...).

Size: ~610 lines, half of them docstrings; :func:`parse` (~70, a third docstring) keeps its
checks in one function, in the order a packet is read, which is the order its docstring states.
"""

from __future__ import annotations

import socket
import struct

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


# ---------------------------------------------------------------------------------------------
# The Internet checksum, in parts (RFC 1071, RFC 1624; Linux include/net/checksum.h).
#
# The checksum is the one's complement of the one's-complement sum of the data taken as 16-bit
# big-endian words.  One's-complement addition is ordinary addition with the carries out of bit
# 15 added back in ("end-around carry"), so it is commutative and associative: a sum can be taken
# in parts (pseudo-header, then header, then payload) and the parts added later, and a single
# field can be taken out of a finished sum and a new value put in (RFC 1624).  That is why a
# TCP/IP stack never needs to copy the pseudo-header and the segment into one buffer.
# ---------------------------------------------------------------------------------------------

def checksum_partial(buf, initial: int = 0) -> int:
    """One's-complement sum of ``buf`` as 16-bit big-endian words, plus ``initial``; not folded.

    ``buf`` is any bytes-like object (``bytes``, ``bytearray``, a ``memoryview`` slice); it is
    read in place, never copied.  An odd length is summed as if padded with one zero byte
    (RFC 1071 section 4.1), so when a checksum is taken in several calls only the last part may
    have an odd length.  Feed the result to :func:`fold` (16 bits) or back in as ``initial``.

    How it is fast in pure Python: the whole buffer is read as one big integer,
    ``N = sum(w[k] * 65536**k)`` over its words ``w[k]`` counted from the end.  Since
    ``65536 = 1 (mod 65535)``, ``N = sum(w[k]) (mod 65535)``: the buffer *is* the sum of its
    words, up to multiples of 65535.  And a one's-complement sum is exactly "the sum mod 65535",
    written as a value in 1..0xFFFF (0 only when every word is 0): each end-around carry
    subtracts 65536 and adds 1.  This is RFC 1071's "parallel summation" and "deferred carries"
    (section 2(C), 2(D)) taken to the limit: one C-level division instead of a Python loop over
    730 words of a full-sized segment.  Hence the one special case: a non-zero sum that is a
    multiple of 65535 is 0xFFFF (the "negative zero"), not 0.
    """
    n = int.from_bytes(buf, "big")
    if len(buf) & 1:
        n <<= 8
    r = n % 0xFFFF
    if r == 0 and n:
        r = 0xFFFF
    return r + initial


def fold(s: int) -> int:
    """Fold a one's-complement sum to 16 bits by adding the carries back in (end-around carry)."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def internet_checksum(buf, initial: int = 0) -> int:
    """The 16-bit Internet checksum of ``buf`` (RFC 1071): ``~fold(sum)``.

    ``initial`` is an unfolded partial sum to include, usually :func:`pseudo_header_sum`.  To
    verify a received header, sum it *with* its checksum field: a correct one folds to 0xFFFF,
    i.e. ``internet_checksum(header) == 0``.
    """
    return ~fold(checksum_partial(buf, initial)) & 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Unfolded sum of the TCP/UDP pseudo-header (RFC 9293 section 3.1): source address,
    destination address, zero, protocol, TCP length (header + options + data).

    The pseudo-header is never sent; it makes the checksum cover the addresses so that a
    segment delivered to the wrong host fails the check.  Summed word by word, no buffer built.
    """
    s = int.from_bytes(src, "big")
    d = int.from_bytes(dst, "big")
    return (s >> 16) + (s & 0xFFFF) + (d >> 16) + (d & 0xFFFF) + proto + length


def checksum_update16(csum: int, old: int, new: int) -> int:
    """New checksum after a 16-bit field changed from ``old`` to ``new`` (RFC 1624, eqn. 3).

    ``HC' = ~(~HC + ~m + m')``: take the old word out of the sum (adding its one's complement
    subtracts it) and put the new one in, without reading the rest of the packet.  Eqn. 3, not
    RFC 1141's eqn. 2 (``HC - ~m - m'``), because eqn. 2 can give 0xFFFF where a full
    recomputation gives 0x0000 (RFC 1624 section 4).  This is Linux's ``csum_replace2``.
    """
    return ~fold((~csum & 0xFFFF) + (~old & 0xFFFF) + (new & 0xFFFF)) & 0xFFFF


def checksum_update32(csum: int, old: int, new: int) -> int:
    """:func:`checksum_update16` for a 32-bit field (sequence/acknowledgment numbers,
    addresses): both 16-bit halves are taken out and put back in one step (Linux
    ``csum_replace4``)."""
    return ~fold((~csum & 0xFFFF) + (~old >> 16 & 0xFFFF) + (~old & 0xFFFF)
                 + (new >> 16 & 0xFFFF) + (new & 0xFFFF)) & 0xFFFF


# ---------------------------------------------------------------------------------------------
# Parsing: bytes -> validated Segment.
# ---------------------------------------------------------------------------------------------

IPV4_HEADER_LEN = 20
TCP_HEADER_LEN = 20
MAX_TCP_OPTIONS_LEN = 40        # data offset is 4 bits of 32-bit words: at most 60 bytes

# Field offsets in an IPv4 header (RFC 791 section 3.1) ...
IP_TOTAL_LENGTH = 2
IP_IDENT = 4
IP_CHECKSUM = 10
IP_SRC = 12
IP_DST = 16
# ... and in a TCP header, counted from its first byte (RFC 9293 section 3.1).
TCP_SPORT = 0
TCP_DPORT = 2
TCP_SEQ = 4
TCP_ACK = 8
TCP_FLAGS = 13
TCP_WINDOW = 14
TCP_CHECKSUM = 16

IP_DF = 0x4000                  # don't fragment
IP_MF = 0x2000                  # more fragments
IP_OFFSET_MASK = 0x1FFF

#: IPv4 header without options: version/IHL, TOS, total length, id, flags/fragment offset, TTL,
#: protocol, checksum, src, dst.
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
#: TCP header without options: ports, seq, ack, data offset/reserved, flags, window, checksum,
#: urgent pointer.
TCP_HEADER = struct.Struct("!HHIIBBHHH")
#: A big-endian 16-bit / 32-bit field (``U16.pack_into(buf, TCP_CHECKSUM, csum)``).
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
_PORTS = struct.Struct("!HH")
_MSS = struct.Struct("!BBH")
_TS = struct.Struct("!BBII")
_TS_VALUES = struct.Struct("!II")

# Options whose length is fixed by their RFC; any other length is BadOption.
_FIXED_OPTION_LEN = {OPT_MSS: 4, OPT_WSCALE: 3, OPT_SACK_PERMITTED: 2, OPT_TIMESTAMPS: 10}


def parse(buf, *, verify_checksum: bool = True) -> Segment:
    """Parse and validate one IPv4 packet carrying TCP; return a :class:`Segment`.

    ``buf`` is ``bytes``, ``bytearray`` or a ``memoryview``; it is not copied: the returned
    ``payload`` is a ``memoryview`` slice of it (so do not modify a ``bytearray`` you still read
    segments from).  Bytes past the IP total length (Ethernet's minimum-frame padding) are
    ignored.  Checks happen in the order a packet is read, and the first failure raises the
    matching :class:`WireError` subclass:

    ``Truncated`` (fewer than 20 bytes of IP, or of TCP header), ``BadVersion``, ``BadIHL``
    (< 5 words, or past the buffer), ``BadLength`` (total length past the buffer or shorter
    than the IP header), ``BadIPChecksum``, ``Fragment`` (this responder does not reassemble),
    ``NotTCP``, ``BadDataOffset`` (< 5 words or past the end of the IP payload), ``BadChecksum``
    (TCP, with the pseudo-header), then ``OptionOverrun`` / ``BadOption`` from the options.

    The TCP checksum is verified before the options are read: a corrupted segment is counted as
    ``bad_checksum`` rather than as whatever its corruption looks like.  ``verify_checksum=False``
    skips both checksums (for tests, or a capture from a NIC with checksum offload).  A TCP
    checksum field of 0 is *not* special: that "no checksum" convention is UDP's, not TCP's.

    Both checks are :func:`checksum_partial` + :func:`fold` written out: a sum that folds to
    0xFFFF is, for a non-zero sum, exactly a sum that is 0 mod 0xFFFF (see
    :func:`checksum_partial`), and both sums here are non-zero (the version nibble is 4; the
    pseudo-header holds the protocol, 6).  The pseudo-header's addresses are read as one 64-bit
    number, which is their four words' sum mod 0xFFFF.
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    if view.format != "B":
        view = view.cast("B")
    n = len(view)
    if n < IPV4_HEADER_LEN:
        raise Truncated(f"{n} bytes, an IPv4 header needs 20")
    (ver_ihl, _tos, total, ident, frag, ttl, proto, _ipsum, src, dst) = IPV4_HEADER.unpack_from(view)
    if ver_ihl >> 4 != 4:
        raise BadVersion(f"IP version {ver_ihl >> 4}")
    ihl = (ver_ihl & 0x0F) * 4
    if ihl < IPV4_HEADER_LEN or ihl > n:
        raise BadIHL(f"IP header length {ihl} bytes, buffer {n}")
    if total > n or total < ihl:
        raise BadLength(f"IP total length {total}, header {ihl}, buffer {n}")
    if verify_checksum and int.from_bytes(view[:ihl], "big") % 0xFFFF:
        raise BadIPChecksum(f"IP header checksum 0x{_ipsum:04x} does not verify")
    if frag & (IP_MF | IP_OFFSET_MASK):
        raise Fragment(f"fragment: MF={bool(frag & IP_MF)} offset={(frag & IP_OFFSET_MASK) * 8}")
    if proto != PROTO_TCP:
        raise NotTCP(f"IP protocol {proto}")
    tcp_len = total - ihl
    if tcp_len < TCP_HEADER_LEN:
        raise Truncated(f"{tcp_len} bytes of TCP, a TCP header needs 20")
    (sport, dport, seq, ack, off, flags, window, tcpsum, urgent) = TCP_HEADER.unpack_from(view, ihl)
    doff = (off >> 4) * 4
    if doff < TCP_HEADER_LEN or doff > tcp_len:
        raise BadDataOffset(f"TCP data offset {doff} bytes, {tcp_len} bytes of TCP")
    if verify_checksum:
        s = int.from_bytes(view[ihl:total], "big")
        if tcp_len & 1:
            s <<= 8                     # an odd length is summed as if padded with a zero
        if (s + int.from_bytes(view[IP_SRC:IP_DST + 4], "big") + PROTO_TCP + tcp_len) % 0xFFFF:
            raise BadChecksum(f"TCP checksum 0x{tcpsum:04x} does not verify")
    start = ihl + doff
    if doff == TCP_HEADER_LEN:
        options = NO_OPTIONS
    elif doff == 32 and view[ihl + 20:ihl + 24] == _NOP_NOP_TS_HEAD:
        # the layout of every segment after the handshake with timestamps on (Linux's):
        # what parse_options returns for it, without the loop
        options = TcpOptions(timestamps=_TS_VALUES.unpack_from(view, ihl + 24))
    else:
        options = parse_options(view, ihl + TCP_HEADER_LEN, start)
    return Segment(src, dst, sport, dport, seq, ack, flags, window, urgent, options,
                   view[start:total], ttl, ident)


def peek_ports(buf) -> tuple | None:
    """``(sport, dport)`` of an IPv4 packet carrying TCP, or ``None``; nothing is validated.

    A raw TCP socket receives every TCP segment the host gets.  This reads two bytes of IP
    header and four of TCP to let the loop skip other ports' traffic before paying for
    :func:`parse` (checksums included, a few microseconds).  Never act on these numbers alone.
    """
    if len(buf) < IPV4_HEADER_LEN:
        return None
    ihl = (buf[0] & 0x0F) * 4
    if buf[0] >> 4 != 4 or ihl < IPV4_HEADER_LEN or buf[9] != PROTO_TCP or len(buf) < ihl + 4:
        return None
    return _PORTS.unpack_from(buf, ihl)


def parse_options(view, i: int, end: int) -> TcpOptions:
    """Parse the TCP options in ``view[i:end]`` (RFC 9293 section 3.2).

    EOL ends the list (what follows is padding); NOP is one byte of alignment; every other kind
    has a length byte that counts the kind and length bytes too, so it is at least 2.  A length
    that runs past the header is ``OptionOverrun``; a known option with the wrong length is
    ``BadOption`` (MSS 4, window scale 3 (RFC 7323), SACK-permitted 2 (RFC 2018), SACK 2 + 8n
    with n >= 1 (RFC 2018), timestamps 10 (RFC 7323)).  Values are kept as sent: a window
    scale above 14 is the state machine's to clamp (RFC 7323 section 2.3).  When a kind repeats,
    the last one wins, as in Linux.  Unknown kinds are kept as ``(kind, data)``.
    """
    mss = wscale = timestamps = None
    sack_permitted = False
    sack = ()
    unknown = []
    while i < end:
        kind = view[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise OptionOverrun(f"option kind {kind} at the end of the header has no length")
        length = view[i + 1]
        if length < 2 or i + length > end:
            raise OptionOverrun(f"option kind {kind} length {length} with {end - i} bytes left")
        want = _FIXED_OPTION_LEN.get(kind)
        if want is not None and length != want:
            raise BadOption(f"option kind {kind} has length {length}, must be {want}")
        if kind == OPT_TIMESTAMPS:
            timestamps = _TS_VALUES.unpack_from(view, i + 2)
        elif kind == OPT_MSS:
            mss = U16.unpack_from(view, i + 2)[0]
        elif kind == OPT_WSCALE:
            wscale = view[i + 2]
        elif kind == OPT_SACK_PERMITTED:
            sack_permitted = True
        elif kind == OPT_SACK:
            if length < 10 or (length - 2) % 8:
                raise BadOption(f"SACK option length {length}, must be 2 + 8n")
            edges = struct.unpack_from(f"!{(length - 2) // 4}I", view, i + 2)
            sack = tuple(zip(edges[0::2], edges[1::2]))
        else:
            unknown.append((kind, bytes(view[i + 2:i + length])))
        i += length
    return TcpOptions(mss, wscale, sack_permitted, sack, timestamps, unknown)


# ---------------------------------------------------------------------------------------------
# Emitting: Segment -> bytes.
# ---------------------------------------------------------------------------------------------

_NOP_NOP_SACKOK = bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2))
_SACKOK = bytes((OPT_SACK_PERMITTED, 2))
_NOP_NOP = bytes((OPT_NOP, OPT_NOP))
_NOP_NOP_TS_HEAD = bytes((OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10))
_NOP_NOP_TS = struct.Struct("!BBBBII")


def emit_options(opts: TcpOptions) -> bytes:
    """Encode ``opts`` in Linux's layout (``tcp_options_write``), padded to 32 bits.

    Every option that is set is written, in this order, so that 4-byte fields stay aligned:
    ``mss N``; ``sackOK,TS`` when both SACK-permitted and timestamps are set, else ``nop,nop,TS``
    or ``nop,nop,sackOK``; ``nop,wscale N``; ``nop,nop,sack ...``; then unknown options as given.
    A SYN therefore comes out as Linux sends it (``mss 1460,sackOK,TS val .. ecr ..,nop,wscale
    7``) and a later segment as ``nop,nop,TS ..`` (+ SACK blocks).  Deciding *which* options a
    segment carries (MSS, window scale and SACK-permitted only on SYNs, RFC 9293/7323/2018) is
    the state machine's job.  Raises ``ValueError`` past 40 bytes (e.g. more than 3 SACK blocks
    together with timestamps).
    """
    ts = opts.timestamps
    if ts is not None and opts.mss is None and not opts.sack_permitted and opts.wscale is None \
            and not opts.sack and not opts.unknown:
        # timestamps alone (every segment after the handshake): nop,nop,TS in one pack
        return _NOP_NOP_TS.pack(OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10, *ts)
    out = bytearray()
    if opts.mss is not None:
        out += _MSS.pack(OPT_MSS, 4, opts.mss)
    if opts.timestamps is not None:
        out += _SACKOK if opts.sack_permitted else _NOP_NOP
        out += _TS.pack(OPT_TIMESTAMPS, 10, *opts.timestamps)
    elif opts.sack_permitted:
        out += _NOP_NOP_SACKOK
    if opts.wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, opts.wscale))
    if opts.sack:
        out += _NOP_NOP
        out += bytes((OPT_SACK, 2 + 8 * len(opts.sack)))
        for left, right in opts.sack:
            out += _TS_VALUES.pack(left, right)
    for kind, data in opts.unknown:
        out += bytes((kind, 2 + len(data)))
        out += data
    if len(out) & 3:
        out += bytes(4 - (len(out) & 3))        # EOL padding (RFC 9293: "filled with zeros")
    if len(out) > MAX_TCP_OPTIONS_LEN:
        raise ValueError(f"{len(out)} bytes of TCP options, at most 40 fit: {opts!r}")
    return bytes(out)


def _options_bytes(seg: Segment) -> bytes:
    return b"" if seg.options is NO_OPTIONS else emit_options(seg.options)


def _emit_tcp_into(buf, off: int, seg: Segment, opts: bytes) -> None:
    """Write ``seg``'s TCP header, ``opts`` and payload at ``buf[off:]`` (``buf`` sized exactly),
    then its checksum over the pseudo-header and the bytes in place.

    The checksum is ``internet_checksum(tcp, pseudo_header_sum(...))`` written out: with ``m``
    the segment's and the pseudo-header's sum mod 0xFFFF (the sum is never 0: protocol 6 is in
    it), the folded sum is ``m`` or, for ``m == 0``, 0xFFFF, so its complement is
    ``-m mod 0xFFFF``.  The addresses are added as two 32-bit numbers (each is its two words'
    sum mod 0xFFFF)."""
    hlen = TCP_HEADER_LEN + len(opts)
    TCP_HEADER.pack_into(buf, off, seg.sport, seg.dport, seg.seq & 0xFFFFFFFF, seg.ack & 0xFFFFFFFF,
                   (hlen // 4) << 4, seg.flags & 0xFF, seg.window, 0, seg.urgent)
    buf[off + TCP_HEADER_LEN:off + hlen] = opts
    buf[off + hlen:] = seg.payload
    tcp_len = len(buf) - off
    s = int.from_bytes(memoryview(buf)[off:] if off else buf, "big")
    if tcp_len & 1:
        s <<= 8                         # an odd length is summed as if padded with a zero
    s += int.from_bytes(seg.src, "big") + int.from_bytes(seg.dst, "big") + PROTO_TCP + tcp_len
    U16.pack_into(buf, off + TCP_CHECKSUM, -s % 0xFFFF)


def _emit_ipv4_into(buf, seg: Segment, df: bool, tos: int) -> None:
    """Write a 20-byte IPv4 header for ``len(buf)`` bytes at ``buf[0:20]``, checksum included."""
    IPV4_HEADER.pack_into(buf, 0, 0x45, tos, len(buf), seg.ident & 0xFFFF, IP_DF if df else 0,
                    seg.ttl, PROTO_TCP, 0, seg.src, seg.dst)
    U16.pack_into(buf, IP_CHECKSUM, internet_checksum(memoryview(buf)[:IPV4_HEADER_LEN]))


def build_tcp(seg: Segment) -> bytearray:
    """TCP header + options (:func:`emit_options`) + payload, checksum filled in.

    This is what an ``IPPROTO_TCP`` raw socket sends: the kernel writes the IP header, but the
    TCP checksum is ours, and it covers the pseudo-header, so ``seg.src``/``seg.dst`` must be
    the addresses the packet will really carry.  ``seq`` and ``ack`` are taken mod 2**32
    (sequence space wraps, RFC 9293 section 3.4).
    """
    opts = _options_bytes(seg)
    buf = bytearray(TCP_HEADER_LEN + len(opts) + len(seg.payload))
    _emit_tcp_into(buf, 0, seg, opts)
    return buf


def build_ipv4(seg: Segment, tcp_bytes, *, df: bool = True, tos: int = 0) -> bytearray:
    """A 20-byte IPv4 header (no options; id ``seg.ident``, TTL ``seg.ttl``, DF by default, as
    Linux sends TCP with path-MTU discovery) followed by ``tcp_bytes``: a whole packet for an
    ``IPPROTO_RAW`` socket (``IP_HDRINCL``).  Linux fills in a zero IP id and always recomputes
    the IP checksum on such sockets, but we write a correct one anyway so the bytes are right
    wherever they go."""
    buf = bytearray(IPV4_HEADER_LEN + len(tcp_bytes))
    buf[IPV4_HEADER_LEN:] = tcp_bytes
    _emit_ipv4_into(buf, seg, df, tos)
    return buf


def build_packet(seg: Segment, *, df: bool = True, tos: int = 0) -> bytearray:
    """``build_ipv4(seg, build_tcp(seg))`` in one buffer, without the intermediate copy."""
    opts = _options_bytes(seg)
    buf = bytearray(IPV4_HEADER_LEN + TCP_HEADER_LEN + len(opts) + len(seg.payload))
    _emit_tcp_into(buf, IPV4_HEADER_LEN, seg, opts)
    _emit_ipv4_into(buf, seg, df, tos)
    return buf


# ---------------------------------------------------------------------------------------------
# Patching precomputed packets in place (miniweb style): change a field, fix the checksums
# incrementally (RFC 1624) instead of summing the whole packet again.
# ---------------------------------------------------------------------------------------------

def patch_u16(pkt: bytearray, offset: int, new: int, *csum_offsets: int) -> None:
    """Set the 16-bit big-endian field at ``pkt[offset]`` to ``new`` and update, incrementally,
    each 16-bit checksum at ``csum_offsets`` whose sum covers that field.

    E.g. a TCP port: ``patch_u16(pkt, ihl + TCP_DPORT, port, ihl + TCP_CHECKSUM)``; the IP total
    length: ``patch_u16(pkt, IP_TOTAL_LENGTH, n, IP_CHECKSUM)`` (the TCP length in the
    pseudo-header is not a field of the packet: fix the TCP checksum for it with
    :func:`checksum_update16` yourself).
    """
    old = U16.unpack_from(pkt, offset)[0]
    U16.pack_into(pkt, offset, new)
    for c in csum_offsets:
        U16.pack_into(pkt, c, checksum_update16(U16.unpack_from(pkt, c)[0], old, new))


def patch_u32(pkt: bytearray, offset: int, new, *csum_offsets: int) -> None:
    """:func:`patch_u16` for a 32-bit field; ``new`` is an ``int`` or 4 bytes (an address).

    An address is covered by two checksums: the IP header's, and the TCP checksum through the
    pseudo-header, so ``patch_u32(pkt, IP_DST, addr, IP_CHECKSUM, ihl + TCP_CHECKSUM)``.
    Sequence numbers: ``patch_u32(pkt, ihl + TCP_SEQ, seq, ihl + TCP_CHECKSUM)``.
    """
    if not isinstance(new, int):
        new = int.from_bytes(new, "big")
    new &= 0xFFFFFFFF
    old = U32.unpack_from(pkt, offset)[0]
    U32.pack_into(pkt, offset, new)
    for c in csum_offsets:
        U16.pack_into(pkt, c, checksum_update32(U16.unpack_from(pkt, c)[0], old, new))
