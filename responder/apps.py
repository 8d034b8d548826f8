"""What the responder says: the applications on top of :mod:`responder.tcp`, and their registry.

Each app is a :class:`responder.tcp.App`: the stack calls it (``on_open``, ``on_data``, ...) and it
answers through the connection (``conn.send``, ``conn.close``).  No app touches a socket or a
clock; the I/O layer picks one with :func:`make_app`.

Each class is registered with ``@register(name, help)``: that one line is the app's name for
``--app`` (``responder.contract.APPS`` is read from :data:`REGISTRY`), its text in ``--help``,
and how the I/O layer builds it.  Adding an app is adding a class here (docs/apps.md).

* :class:`Hello` -- the lecture's three lines, then FIN.
* :class:`Miniweb` -- answers a GET with packets built once at start-up (Adam Dunkels' miniweb):
  per connection only addresses, ports, seq/ack, window, timestamps and checksums are patched.
* :class:`Tarpit` -- completes the handshake with a zero window, then forgets the connection and
  keeps the peer stuck by answering its window probes statelessly (LaBrea).
* :class:`Echo` -- echoes what it receives, with flow control.
* :class:`Discard` -- RFC 863: takes everything, says nothing.

An app may also define ``counters() -> dict``: the I/O layer adds them to its JSON line.
"""

from __future__ import annotations

import struct
from typing import Callable, NamedTuple

from . import wire
from .tcp import App, Connection, Stack, seq_add
from .wire import ACK, FIN, PSH, RST, SYN, Segment, TcpOptions


class AppInfo(NamedTuple):
    """One registered app: ``--app NAME``, the class, its ``--help`` text, and how to build it
    from the command line's settings (``make(http_page, mss)``)."""

    name: str
    cls: type
    help: str
    make: Callable


#: ``--app`` name -> :class:`AppInfo`, in the order ``--help`` lists them.
REGISTRY: dict = {}


def register(name: str, help: str, make: Callable | None = None):
    """Class decorator: make ``cls`` the app ``--app name``.  ``make(http_page, mss)`` builds
    it (default: ``cls()``)."""
    def add(cls):
        if name in REGISTRY:
            raise ValueError(f"app {name!r} registered twice")
        REGISTRY[name] = AppInfo(name, cls, help, make or (lambda http_page, mss: cls()))
        return cls
    return add

#: The lecture's three strings, with their NUL bytes (11, 20 and 66 bytes).
HELLO_LINES = (
    b"Hello TCP\n\0",
    b"Great to meet you!\n\0",
    b"Nice weather we are having, but they say it will rain on Monday.\n\0",
)


@register("hello", "the lecture's three lines as three segments (11, 20, 66 bytes, PSH|ACK "
                  "each), then FIN; client data is ACKed and discarded, the client's FIN is ACKed")
class Hello(App):
    """After the handshake: three segments back to back, then FIN (RFC 9293 3.10.4 CLOSE).

    How the three writes stay three segments: this app switches Nagle off on its connection
    (``conn.nodelay = True``, what ``setsockopt(TCP_NODELAY)`` does) whatever ``--nodelay``
    says, because the lecture's exchange *is* three back-to-back segments.  With Nagle on, the
    second and third writes would wait for the ACK of the first and go out together (RFC 896) --
    correct TCP, but not the lecture's exchange.  Each ``send`` is transmitted at once as its own
    segment with PSH (it empties the buffer).  Client data is ACKed (by the stack) and
    discarded; the client's FIN is ACKed by the stack.
    """

    def on_open(self, conn: Connection) -> None:
        conn.nodelay = True
        for line in HELLO_LINES:
            conn.send(line)
        conn.close()


DEFAULT_PAGE = (b"<!DOCTYPE html>\n<html><head><title>tcplab miniweb</title></head>\n"
                b"<body><h1>Hello TCP</h1>\n<p>This page was sent as precomputed packets: "
                b"only addresses, ports, sequence numbers, timestamps and checksums were "
                b"patched for your connection.</p></body></html>\n")

# Offsets in a precomputed TCP segment (no IP header: the IPPROTO_TCP socket adds it).
_TS_OFF = wire.TCP_HEADER_LEN + 4       # after NOP,NOP,kind,len: TSval, then TSecr
_PORTS_SEQ_ACK = struct.Struct("!HHII")  # the first 12 bytes of a TCP header
_WORDS = struct.Struct("!H")
_TS_VALUES = struct.Struct("!II")


class _Template:
    """One precomputed TCP segment and the field values its checksum currently covers."""

    __slots__ = ("buf", "payload", "ts", "addr_sum")

    def __init__(self, payload: bytes, ts: bool):
        self.payload = payload
        self.ts = ts
        opts = TcpOptions(timestamps=(0, 0)) if ts else wire.NO_OPTIONS
        seg = Segment(b"\0\0\0\0", b"\0\0\0\0", 0, 0, 0, 0, ACK | PSH, 0, options=opts,
                      payload=payload)
        self.buf = wire.build_tcp(seg)
        # the pseudo-header addresses the checksum now covers (src + dst as 32-bit numbers);
        # every other patched field is read back from ``buf`` itself
        self.addr_sum = 0


@register("http", "miniweb: a GET is answered with packets precomputed at start-up "
                 "(--http-file or a built-in page); per connection only addresses, ports, "
                 "seq/ack, window, timestamps and checksums are patched (RFC 1624) (counter: "
                 "http_packets_patched)",
          make=lambda http_page, mss: Miniweb(http_page, mss=mss - 12))
class Miniweb(App):
    """An HTTP server of precomputed packets (the lecture's miniweb remark).

    At start-up the response (header + page) is cut into segments of ``mss`` bytes and each is
    built once as TCP bytes with its checksum (two sets: with and without the timestamp option,
    since that depends on the peer).  For each connection the app ``send``s those very payload
    objects, one write per segment, with Nagle off, so the stack transmits each as one segment
    carrying exactly that object; the I/O layer asks :meth:`encode` for the bytes, and we patch
    the template in place -- addresses (they are in the TCP checksum through the pseudo-header),
    ports, seq, ack, window, TSval/TSecr -- and update the checksum once for all of them
    (RFC 1624: ``HC' = ~(~HC + ~m + m')`` with ``m`` the sum of every old field and ``m'`` of
    every new one; ``wire.checksum_update16/32`` do the same for one field) instead of summing
    the segment again.  Anything else (the
    SYN,ACK, ACKs, the FIN, a retransmission cut differently) is built normally.
    """

    def __init__(self, page: bytes | None = None, mss: int = 1448,
                 content_type: str = "text/html"):
        body = DEFAULT_PAGE if page is None else page
        head = (f"HTTP/1.0 200 OK\r\nServer: tcplab-miniweb\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        response = head + body
        # 1448 = 1460 - 12 bytes of timestamps: the largest that fits a 1500-byte MTU either way
        self.payloads = [response[i:i + mss] for i in range(0, len(response), mss)]
        self.templates = {}
        for p in self.payloads:
            self.templates[id(p), True] = _Template(p, True)
            self.templates[id(p), False] = _Template(p, False)
        self.patched = 0

    def on_open(self, conn: Connection) -> None:
        conn.nodelay = True
        conn.app_state = b""

    def on_data(self, conn: Connection, data: bytes) -> None:
        if conn.app_state is None:
            return                              # already answered
        req = conn.app_state + data
        if b"\r\n\r\n" not in req and b"\n\n" not in req:
            conn.app_state = req[-8192:]
            return
        conn.app_state = None
        if req.startswith(b"GET ") or req.startswith(b"HEAD "):
            for p in self.payloads:
                conn.send(p)
        else:
            conn.send(b"HTTP/1.0 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    def on_peer_close(self, conn: Connection) -> None:
        if conn.app_state is not None:
            conn.app_state = None
            conn.close()

    def encode(self, seg: Segment):
        """TCP bytes for ``seg`` patched from a template, or None if it is not one of ours."""
        ts = seg.options.timestamps
        if seg.flags != ACK | PSH or seg.options.mss is not None or seg.options.sack \
                or seg.options.wscale is not None:
            return None
        tpl = self.templates.get((id(seg.payload), ts is not None))
        if tpl is None or tpl.payload is not seg.payload:
            return None
        buf = tpl.buf
        # One RFC 1624 update for every field at once.  In one's-complement arithmetic ~m is
        # -m and a sum is taken mod 0xFFFF, where a 32- or 96-bit number equals the sum of its
        # 16-bit words; so HC' = HC + old - new (mod 0xFFFF).  That is the value a full
        # recomputation gives (a checksum is never 0xFFFF: the segment's sum is never zero),
        # so the bytes equal wire.build_tcp(seg)'s.
        addr_sum = int.from_bytes(seg.src, "big") + int.from_bytes(seg.dst, "big")
        old = int.from_bytes(buf[0:12], "big") + (buf[14] << 8 | buf[15]) + tpl.addr_sum
        _PORTS_SEQ_ACK.pack_into(buf, 0, seg.sport, seg.dport, seg.seq & 0xFFFFFFFF,
                                 seg.ack & 0xFFFFFFFF)
        _WORDS.pack_into(buf, wire.TCP_WINDOW, seg.window)
        new = int.from_bytes(buf[0:12], "big") + seg.window + addr_sum
        if ts is not None:
            old += int.from_bytes(buf[_TS_OFF:_TS_OFF + 8], "big")
            _TS_VALUES.pack_into(buf, _TS_OFF, ts[0], ts[1])
            new += ts[0] + ts[1]
        tpl.addr_sum = addr_sum
        c = wire.TCP_CHECKSUM
        _WORDS.pack_into(buf, c, ((buf[c] << 8 | buf[c + 1]) + old - new) % 0xFFFF)
        self.patched += 1
        return buf

    def counters(self) -> dict:
        return {"http_packets_patched": self.patched}


@register("tarpit", "handshake with a zero window, then the connection is forgotten and the "
                   "peer's window probes are answered statelessly with window 0 (LaBrea): held "
                   "peers cost no memory (counter: tarpit_held)")
class Tarpit(App):
    """Hold connections at no memory cost (LaBrea, 2001).

    The SYN,ACK advertises a zero window (``rcv_buf = 0``), so the peer may not send data.  Once
    the handshake completes the TCB is deleted without a word to the peer (``conn.forget()``);
    the peer believes the connection is up and, having data to send, probes the zero window
    forever.  Its segments now reach :meth:`on_stray` (no TCB), which answers each from the
    segment itself: ``<SEQ=SEG.ACK><ACK=...><CTL=ACK>`` with window 0 and, if the probe has a
    timestamp, TSecr = its TSval.  The ACK number:

    * a probe without data is Linux's (SEG.SEQ = SND.UNA - 1, RFC 9293 3.8.6.1 allows any
      unacceptable segment): we ACK SEG.SEQ + 1, which is exactly SND.UNA -- a current ACK
      that resets the peer's probe counter, so it never gives up (RFC 1122 4.2.2.17);
    * a probe with data (BSD style: one byte at SND.UNA) or a FIN: we ACK SEG.SEQ, taking
      nothing, so the peer keeps the byte and probes again.

    Caveat: a pure ACK at SND.UNA (which a peer sends only if provoked) would be answered with an
    ACK of one byte more than it sent; the peer answers that with an ACK (RFC 9293 3.10.7.4), so
    such an exchange is rate-limited only by the peer.  RSTs are never answered.
    """

    rcv_buf = 0

    def __init__(self):
        self.held = 0

    def on_open(self, conn: Connection) -> None:
        self.held += 1
        conn.forget()

    def counters(self) -> dict:
        return {"tarpit_held": self.held}

    def on_stray(self, stack: Stack, seg: Segment, now: float):
        if seg.flags & (RST | SYN) or not seg.flags & ACK:
            return []
        probe_only = not seg.payload and not seg.flags & FIN
        ack = seq_add(seg.seq, 1) if probe_only else seg.seq
        opts = wire.NO_OPTIONS
        if seg.options.timestamps is not None:
            local, remote = (bytes(seg.dst), seg.dport), (bytes(seg.src), seg.sport)
            opts = TcpOptions(timestamps=(stack.tsval_for(local, remote, now),
                                          seg.options.timestamps[0]))
        return [Segment(seg.dst, seg.src, seg.dport, seg.sport, seg.ack, ack, ACK, 0,
                        options=opts)]


@register("echo", "data is ACKed and echoed back, with flow control (window = free buffer "
                 "space)")
class Echo(App):
    """Echo what arrives, with flow control: the receive window we grant is the buffer space not
    taken by echoed bytes still unacknowledged, so a peer that does not read cannot make us
    buffer without bound (RFC 9293 3.8.6).  When the peer closes, we close after the echo."""

    def __init__(self, buffer: int = 65536):
        self.rcv_buf = buffer
        self.buffer = buffer

    def on_data(self, conn: Connection, data: bytes) -> None:
        if conn.fin_queued:
            return
        conn.send(data)
        self._update_window(conn)

    def on_send_space(self, conn: Connection) -> None:
        self._update_window(conn)

    def on_peer_close(self, conn: Connection) -> None:
        conn.close()

    def _update_window(self, conn: Connection) -> None:
        conn.set_receive_window(max(0, self.buffer - conn.send_buffered))


@register("discard", "RFC 863: data is ACKed and thrown away, nothing is sent back; when the "
                     "peer closes, we close (counter: discard_bytes)")
class Discard(App):
    """The Discard Protocol (RFC 863): "simply throw away any data received".

    The stack ACKs every byte as it arrives (delayed ACK: every second segment at once), and
    since nothing is kept, the window we advertise never shrinks: the peer can send as fast as
    the network lets it.  Nothing is ever sent back but ACKs.  When the peer's FIN arrives
    (CLOSE-WAIT), we close too (LAST-ACK), as RFC 863's TCP service ends "until the calling
    user terminates it".
    """

    def __init__(self):
        self.discarded = 0

    def on_data(self, conn: Connection, data: bytes) -> None:
        self.discarded += len(data)

    def on_peer_close(self, conn: Connection) -> None:
        conn.close()

    def counters(self) -> dict:
        return {"discard_bytes": self.discarded}


def make_app(name: str, http_page: bytes | None = None, mss: int = 1460) -> App:
    """The app for ``--app NAME`` (``http_page``: ``--http-file``'s bytes; ``mss``: ours)."""
    info = REGISTRY.get(name)
    if info is None:
        raise ValueError(f"unknown app {name!r} (choose from {', '.join(REGISTRY)})")
    return info.make(http_page, mss)
