"""What the responder says: the applications on top of :mod:`responder.tcp`.

Each app is a :class:`responder.tcp.App`: the stack calls it (``on_open``, ``on_data``, ...) and it
answers through the connection (``conn.send``, ``conn.close``).  No app touches a socket or a
clock; the I/O layer picks one with :func:`make_app`.

* :class:`Hello` -- the lecture's three lines, then FIN.
* :class:`Echo` -- echoes what it receives, with flow control.
* :class:`Tarpit` -- completes the handshake with a zero window, then forgets the connection and
  keeps the peer stuck by answering its window probes statelessly (LaBrea).
* :class:`Miniweb` -- answers a GET with packets built once at start-up (Adam Dunkels' miniweb):
  per connection only addresses, ports, seq/ack, window, timestamps and checksums are patched.
"""

from __future__ import annotations

from . import wire
from .tcp import App, Connection, Stack, seq_add
from .wire import ACK, FIN, PSH, RST, SYN, Segment, TcpOptions

#: The lecture's three strings, with their NUL bytes (11, 20 and 66 bytes).
HELLO_LINES = (
    b"Hello TCP\n\0",
    b"Great to meet you!\n\0",
    b"Nice weather we are having, but they say it will rain on Monday.\n\0",
)


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


DEFAULT_PAGE = (b"<!DOCTYPE html>\n<html><head><title>tcplab miniweb</title></head>\n"
                b"<body><h1>Hello TCP</h1>\n<p>This page was sent as precomputed packets: "
                b"only addresses, ports, sequence numbers, timestamps and checksums were "
                b"patched for your connection.</p></body></html>\n")

# Offsets in a precomputed TCP segment (no IP header: the IPPROTO_TCP socket adds it).
_TS_OFF = wire.TCP_HEADER_LEN + 4       # after NOP,NOP,kind,len: TSval, then TSecr


class _Template:
    """One precomputed TCP segment and the field values its checksum currently covers."""

    __slots__ = ("buf", "payload", "ts", "fields")

    def __init__(self, payload: bytes, ts: bool):
        self.payload = payload
        self.ts = ts
        opts = TcpOptions(timestamps=(0, 0)) if ts else wire.NO_OPTIONS
        seg = Segment(b"\0\0\0\0", b"\0\0\0\0", 0, 0, 0, 0, ACK | PSH, 0, options=opts,
                      payload=payload)
        self.buf = wire.build_tcp(seg)
        # what the checksum was computed over, for RFC 1624 updates: src, dst, the rest
        self.fields = {"src": 0, "dst": 0}


class Miniweb(App):
    """An HTTP server of precomputed packets (the lecture's miniweb remark).

    At start-up the response (header + page) is cut into segments of ``mss`` bytes and each is
    built once as TCP bytes with its checksum (two sets: with and without the timestamp option,
    since that depends on the peer).  For each connection the app ``send``s those very payload
    objects, one write per segment, with Nagle off, so the stack transmits each as one segment
    carrying exactly that object; the I/O layer asks :meth:`encode` for the bytes, and we patch
    the template in place -- addresses (they are in the TCP checksum through the pseudo-header),
    ports, seq, ack, window, TSval/TSecr -- updating the checksum field by field (RFC 1624,
    ``wire.checksum_update16/32``) instead of summing the segment again.  Anything else (the
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
        c = wire.TCP_CHECKSUM
        _patch_addr(buf, tpl, "src", seg.src)
        _patch_addr(buf, tpl, "dst", seg.dst)
        wire.patch_u16(buf, wire.TCP_SPORT, seg.sport, c)
        wire.patch_u16(buf, wire.TCP_DPORT, seg.dport, c)
        wire.patch_u32(buf, wire.TCP_SEQ, seg.seq, c)
        wire.patch_u32(buf, wire.TCP_ACK, seg.ack, c)
        wire.patch_u16(buf, wire.TCP_WINDOW, seg.window, c)
        if ts is not None:
            wire.patch_u32(buf, _TS_OFF, ts[0], c)
            wire.patch_u32(buf, _TS_OFF + 4, ts[1], c)
        self.patched += 1
        return buf


def _patch_addr(buf: bytearray, tpl: _Template, which: str, addr: bytes) -> None:
    """An address is not in the TCP bytes, only in the pseudo-header: update the checksum for
    it without a field to write (RFC 1624)."""
    new = int.from_bytes(addr, "big")
    old = tpl.fields[which]
    if new != old:
        c = wire.TCP_CHECKSUM
        csum = int.from_bytes(buf[c:c + 2], "big")
        buf[c:c + 2] = wire.checksum_update32(csum, old, new).to_bytes(2, "big")
        tpl.fields[which] = new


APPS = ("hello", "http", "tarpit", "echo")


def make_app(name: str, http_page: bytes | None = None, mss: int = 1460) -> App:
    """The app for ``--app NAME``."""
    if name == "hello":
        return Hello()
    if name == "echo":
        return Echo()
    if name == "tarpit":
        return Tarpit()
    if name == "http":
        return Miniweb(http_page, mss=mss - 12)
    raise ValueError(f"unknown app {name!r} (choose from {', '.join(APPS)})")
