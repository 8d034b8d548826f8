"""The connection (a TCB, RFC 9293 3.3.1), its configuration, and the application interface.

* :class:`Config` -- the stack's knobs, RFC defaults unless a lab needs shorter waits; the
  ``--fault`` switches that change the state machine are settings here too
  (``rto_backoff``, ``time_wait``, ``delayed_ack``, ``challenge_ack_limit``).
* :class:`App` -- what the stack tells the application (``on_open``, ``on_data``, ...).
* :class:`Connection` -- the TCB: the RFC's variables under the RFC's names, the application's
  calls (``send``, ``close``, ``abort``, ``forget``, ``set_receive_window``), and building the
  segments of this connection.  It calls the stack only through its public methods
  (``output``, ``close``, ``abort``, ``forget``, ``update_window``) and reads ``stack.now`` and
  ``stack.config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from ..wire import ACK, NO_OPTIONS, RST, SYN, Segment, TcpOptions, ip_str
from .seq import MASK, seq_add, seq_diff, seq_ge, seq_gt, seq_in_window, seq_le
from .table import RECEIVING, State

if TYPE_CHECKING:                    # only for the annotations: stack.py imports this module
    from .stack import Stack

S = State

#: ``Connection.ack_owed``: what ACK we owe the peer.
ACK_NONE = 0        # nothing owed
ACK_DELAYED = 1     # owed, may wait for the delayed-ACK timer (RFC 1122 4.2.3.2)
ACK_NOW = 2         # owed now: sent at the end of this event unless data carries it


@dataclass
class Config:
    """Knobs; defaults are the RFCs' unless a lab needs shorter waits (then it says so)."""

    mss: int = 1460                 # our MSS option: 1500-byte Ethernet MTU - 40 (RFC 9293 3.7.1)
    wscale: int = 7                 # our window scale shift, offered only if the peer offers one
    rcv_buf: int = 65535 * 4        # receive buffer; window = buffer space (RFC 7323 2)
    sack_permitted: bool = True     # answer SACK-permitted with SACK-permitted (RFC 2018)
    timestamps: bool = True         # answer TSopt with TSopt (RFC 7323 3.2)
    fixed_isn: int | None = None    # --isn N: use N instead of RFC 6528
    nodelay: bool = False           # True disables Nagle (RFC 896; RFC 1122 4.2.3.4)
    delayed_ack: float = 0.2        # RFC 1122 4.2.3.2: < 0.5 s; 0 = ACK at once
    rto_initial: float = 1.0        # RFC 6298 2.1
    rto_min: float = 1.0            # RFC 6298 2.4
    rto_max: float = 60.0           # RFC 6298 2.5
    max_retries: int = 6            # give up (RST) after this many timeouts (RFC 1122 4.2.3.5 R2)
    msl2: float = 2.0               # TIME-WAIT length; 2 MSL is 4 minutes in RFC 9293, 2 s in a lab
    fin_wait_2_timeout: float = 60.0  # Linux tcp_fin_timeout; not in the RFC
    max_half_open: int = 1024       # bound on SYN-RECEIVED TCBs (oldest dropped)
    syn_cookies: bool = True        # under pressure, make SYN,ACKs rebuildable (RFC 4987 3.6)
    challenge_ack_limit: int = 10   # per connection per second (RFC 5961 7)
    # Switches for the --fault lessons (``responder.faults``); the defaults are correct TCP.
    rto_backoff: bool = True        # double the RTO after a timeout (RFC 6298 5.5); False: no-backoff
    time_wait: bool = True          # enter TIME-WAIT (RFC 9293); False: no-time-wait deletes the TCB


class App:
    """What the stack tells the application.  Subclass and override what you need.

    Callbacks run after the stack has fully processed the event that caused them, so the
    application may call ``conn.send``/``conn.close`` from any of them.  One App object serves
    every connection of a listener; per-connection state goes in ``conn.app_state``.
    """

    #: receive buffer for connections of this listener (None: ``Config.rcv_buf``).
    rcv_buf: int | None = None

    def on_open(self, conn: "Connection") -> None:
        """The handshake completed (ESTABLISHED)."""

    def on_data(self, conn: "Connection", data: bytes) -> None:
        """In-order bytes from the peer (a copy; keep it if you like)."""

    def on_peer_close(self, conn: "Connection") -> None:
        """The peer's FIN arrived: it will send nothing more."""

    def on_send_space(self, conn: "Connection") -> None:
        """The peer ACKed some of our data: the send buffer shrank."""

    def on_closed(self, conn: "Connection", reason: str) -> None:
        """The TCB is gone: ``closed`` | ``reset`` | ``timeout`` | ``aborted`` | ``refused`` |
        ``dropped`` (half-open table full) | ``forgotten``."""

    def on_stray(self, stack: "Stack", seg: Segment, now: float) -> "list[Segment] | None":
        """A non-SYN segment to the listening port with no TCB.  Return segments to answer
        statelessly (tarpit), or None for the RFC's answer (a RST)."""
        return None


class TcpError(Exception):
    """The application asked for something the state does not allow (RFC 9293 3.10)."""


class Listener(NamedTuple):
    addr: bytes
    port: int
    app: App


class Connection:
    """A TCB (RFC 9293 section 3.3.1): the variables keep the RFC's names.

    ``__slots__`` lists them (the same groups as ``__init__``): thousands of TCBs sit in
    TIME-WAIT under load, and a TCB without a per-instance dict is ~40 % smaller on CPython
    (less for the GC to track and free) and a little faster to read."""

    __slots__ = ("stack", "local", "remote", "key", "_name", "app", "app_state", "passive",
                 "state", "nodelay",
                 "iss", "snd_una", "snd_nxt", "snd_wnd", "snd_wl1", "snd_wl2", "max_snd_wnd",
                 "irs", "rcv_nxt", "rcv_buf", "rcv_adv", "last_ack_sent",
                 "snd_wscale", "rcv_wscale", "snd_mss", "sack_ok", "ws_ok", "ts_ok",
                 "ts_recent", "ts_recent_age", "ts_offset", "synack_tsval",
                 "chunks", "buffered", "buf_seq", "fin_queued",
                 "rto", "srtt", "rttvar", "rtt_seq", "rtt_time", "retries", "recover",
                 "persist_backoff", "probes_out",
                 "ack_owed", "unacked_segs", "chal_start", "chal_count",
                 "timers", "timer_at", "timer_tick", "events")

    def __init__(self, stack: "Stack", local: tuple, remote: tuple, app: App, iss: int,
                 passive: bool, rcv_buf: int):
        """Every variable of the TCB, group by group as in ``__slots__``: one assignment each
        (~60 lines; split up, they would be harder to check against ``__slots__``)."""
        self.stack = stack
        self.local = local                  # (addr bytes, port)
        self.remote = remote
        self.key = (local[0], local[1], remote[0], remote[1])
        self._name = None
        self.app = app
        self.app_state = None
        self.passive = passive
        self.state = S.CLOSED
        self.nodelay = stack.config.nodelay
        # send sequence variables
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        # receive sequence variables
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_buf = rcv_buf              # the space the app grants us
        self.rcv_adv = 0                    # right edge of the window we advertised
        self.last_ack_sent = 0
        # options
        self.snd_wscale = 0
        self.rcv_wscale = 0
        self.snd_mss = 536                  # RFC 9293 3.7.1 default when no MSS option
        self.sack_ok = False
        self.ws_ok = False
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_recent_age = 0.0
        self.ts_offset = 0
        self.synack_tsval = None            # a SYN cookie's TSval with options in its low bits
        # send buffer: chunks as the app wrote them, first byte at sequence buf_seq (a list,
        # not a deque: a deque allocates a 64-slot block even empty, ~0.7 kB per TCB)
        self.chunks: list = []
        self.buffered = 0
        self.buf_seq = seq_add(iss, 1)
        self.fin_queued = False
        # retransmission (RFC 6298)
        self.rto = stack.config.rto_initial
        self.srtt = None
        self.rttvar = 0.0
        self.rtt_seq = None                 # sequence number being timed (Karn)
        self.rtt_time = 0.0
        self.retries = 0
        self.recover = None                 # SND.NXT when the last timeout happened
        self.persist_backoff = 0
        self.probes_out = 0                 # zero-window probes not answered yet
        # delayed ACK (RFC 1122 4.2.3.2)
        self.ack_owed = ACK_NONE
        self.unacked_segs = 0
        # challenge ACK throttle (RFC 5961 7), per connection
        self.chal_start = -1.0
        self.chal_count = 0
        self.timers: dict = {}              # kind -> deadline (the stack runs them)
        self.timer_at = None                # where the stack's heap holds this TCB's entry
        self.timer_tick = None              # ... and that entry's tiebreak, which names it
        self.events: list = []

    # --- helpers used by classify ------------------------------------------------------
    @property
    def rcv_wnd(self) -> int:
        """RCV.WND: what we advertised (RCV.ADV) beyond RCV.NXT, never negative."""
        return max(0, seq_diff(self.rcv_adv, self.rcv_nxt))

    def acceptable(self, seq: int, seg_len: int) -> bool:
        """RFC 9293 3.10.7.4 first check: the four cases of segment length and window."""
        nxt = self.rcv_nxt
        wnd = self.rcv_wnd
        if seg_len == 0:
            return seq == nxt if wnd == 0 else seq_in_window(seq, nxt, wnd)
        if wnd == 0:
            return False
        return seq_in_window(seq, nxt, wnd) or seq_in_window(seq + seg_len - 1, nxt, wnd)

    @property
    def fin_seq(self) -> int:
        """Sequence number our FIN has (or will have): right after the last data byte."""
        return seq_add(self.buf_seq, self.buffered)

    @property
    def fin_sent(self) -> bool:
        return self.fin_queued and seq_gt(self.snd_nxt, self.fin_seq)

    @property
    def fin_acked(self) -> bool:
        return self.fin_queued and seq_gt(self.snd_una, self.buf_seq + self.buffered)

    @property
    def send_buffered(self) -> int:
        """Bytes written by the app and not yet acknowledged by the peer."""
        return self.buffered

    def __repr__(self) -> str:
        return f"<Connection {self.name} {self.state}>"

    @property
    def name(self) -> str:
        """``local <> remote`` as text; the 4-tuple never changes, so it is made once."""
        name = self._name
        if name is None:
            name = self._name = (f"{ip_str(self.local[0])}:{self.local[1]} <> "
                                 f"{ip_str(self.remote[0])}:{self.remote[1]}")
        return name

    # --- the application's calls (RFC 9293 3.10 user interface) ------------------------
    def send(self, data, push: bool = True) -> int:
        """SEND (RFC 9293 3.10.2): queue ``data``; returns its length.  Segments go out at once
        if the window and Nagle allow (``push`` is kept for the RFC's interface: every segment
        that empties the buffer carries PSH, as Linux does).  Each call's bytes stay one chunk,
        so a write that fits one segment is sent as that very object (the http app relies on
        it to recognise its precomputed packets)."""
        if self.state not in (S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSE_WAIT) \
                or self.fin_queued:
            raise TcpError(f"connection closing ({self.state})")
        if data:
            self.chunks.append(data)
            self.buffered += len(data)
            self.stack.output(self)
        return len(data)

    def close(self) -> None:
        """CLOSE (RFC 9293 3.10.4): our FIN follows the queued data."""
        self.stack.close(self)

    def abort(self) -> None:
        """ABORT (RFC 9293 3.10.5): send RST, delete the TCB."""
        self.stack.abort(self)

    def forget(self) -> None:
        """Delete the TCB without telling the peer (the tarpit's way to hold a connection at
        no memory cost; further segments from the peer reach ``App.on_stray``)."""
        self.stack.forget(self)

    def set_receive_window(self, space: int) -> None:
        """Set the buffer space we grant the peer (flow control).  The right edge we advertised
        never moves left (RFC 9293 3.8.6.2.2); a window update is sent when the window grows by
        at least min(buffer/2, MSS) (receiver SWS avoidance, RFC 1122 4.2.3.3)."""
        old = self.rcv_wnd
        self.rcv_buf = max(0, space)
        threshold = max(1, min(self.rcv_buf // 2, self.stack.config.mss))
        if self.state in RECEIVING and self.window_to_advertise() - old >= threshold:
            self.stack.update_window(self)

    # --- segment construction -------------------------------------------------------
    def tsval(self, now: float) -> int:
        """Our TSval clock: 1 ms ticks (RFC 7323 5.4) plus a per-connection offset (7323 7.1)."""
        return (int(now * 1000) + self.ts_offset) & MASK

    def window_to_advertise(self) -> int:
        wnd = min(self.rcv_buf, 65535 << self.rcv_wscale)
        return max(wnd, self.rcv_wnd)       # never shrink (RFC 9293 3.8.6.2.2)

    def segment(self, seq: int, ack: int, flags: int, payload=b"", options=None,
                window: bool = True) -> Segment:
        """A segment of this connection; fills the window field and our timestamps.
        Every segment carrying ACK updates Last.ACK.sent and RCV.ADV, and pays off owed ACKs."""
        now = self.stack.now
        win = 0
        if window:
            rcv_wnd = self.rcv_wnd
            ws = self.rcv_wscale
            space = min(self.rcv_buf, 65535 << ws)
            if space < rcv_wnd:
                space = rcv_wnd             # never shrink (RFC 9293 3.8.6.2.2)
            if flags & SYN:
                win = min(space, 65535)      # never scaled in a SYN (RFC 7323 2.2)
                space = win
            else:
                win = min(space >> ws, 65535)
                space = win << ws
            if flags & ACK:
                self.rcv_adv = seq_add(self.rcv_nxt, max(space, rcv_wnd))
        if flags & ACK:
            self.last_ack_sent = ack
            self.ack_owed = ACK_NONE
            self.unacked_segs = 0
            self.timers.pop("delack", None)
        if options is None:
            options = (TcpOptions(timestamps=(self.tsval(now), self.ts_recent))
                       if self.ts_ok and not flags & RST else NO_OPTIONS)
        return Segment(self.local[0], self.remote[0], self.local[1], self.remote[1], seq,
                       ack if flags & ACK else 0, flags, win, options=options, payload=payload)

    def syn_options(self, synack: bool) -> TcpOptions:
        """Options for our SYN or SYN,ACK.  A SYN offers everything configured; a SYN,ACK
        offers each option only if the peer's SYN did (RFC 7323 2.2/3.2, RFC 2018 2)."""
        cfg = self.stack.config
        now = self.stack.now
        if not synack:
            ts = (self.tsval(now), 0) if cfg.timestamps else None
            return TcpOptions(mss=cfg.mss, wscale=cfg.wscale if cfg.wscale is not None else None,
                              sack_permitted=cfg.sack_permitted, timestamps=ts)
        tsval = self.synack_tsval if self.synack_tsval is not None else self.tsval(now)
        return TcpOptions(mss=cfg.mss,
                          wscale=self.rcv_wscale if self.ws_ok else None,
                          sack_permitted=self.sack_ok,
                          timestamps=(tsval, self.ts_recent) if self.ts_ok else None)

    def take_peer_syn_options(self, seg: Segment) -> None:
        """Negotiate from the peer's SYN (or SYN,ACK): RFC 9293 3.7.1 (MSS), RFC 7323 2.2-2.3
        (window scale, both sides or neither, shift at most 14), 3.2 (timestamps), RFC 2018."""
        cfg = self.stack.config
        o = seg.options
        peer_mss = o.mss if o.mss else 536
        self.ts_ok = cfg.timestamps and o.timestamps is not None
        if self.ts_ok:
            self.ts_recent = o.timestamps[0]
            self.ts_recent_age = self.stack.now
        self.snd_mss = max(1, min(peer_mss, cfg.mss) - (12 if self.ts_ok else 0))
        self.ws_ok = o.wscale is not None and cfg.wscale is not None
        if self.ws_ok:
            self.snd_wscale = min(o.wscale, 14)
            self.rcv_wscale = min(cfg.wscale, 14)
        else:
            self.snd_wscale = self.rcv_wscale = 0
        self.sack_ok = cfg.sack_permitted and o.sack_permitted
        self.irs = seg.seq
        self.rcv_nxt = seq_add(seg.seq, 1)
        self.rcv_adv = self.rcv_nxt         # nothing advertised yet
        self.last_ack_sent = self.rcv_nxt
        # The window in a SYN is never scaled (RFC 7323 2.2).
        self.snd_wnd = seg.window
        self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack

    # --- the TCB's own bookkeeping, used by the stack ------------------------------------
    def update_ts_recent(self, seg: Segment) -> None:
        """RFC 7323 4.3: TS.Recent = SEG.TSval if SEG.TSval >= TS.Recent and SEG.SEQ =<
        Last.ACK.sent (the segment covers the left edge of the window we last ACKed)."""
        ts = seg.options.timestamps
        if self.ts_ok and ts is not None and seq_ge(ts[0], self.ts_recent) \
                and seq_le(seg.seq, self.last_ack_sent):
            self.ts_recent = ts[0]
            self.ts_recent_age = self.stack.now

    def rtt_sample(self, r: float) -> None:
        """RFC 6298 2.2-2.3 (alpha 1/8, beta 1/4, K 4), clamped to [rto_min, rto_max]."""
        cfg = self.stack.config
        if self.srtt is None:
            self.srtt, self.rttvar = r, r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self.rto = min(max(self.srtt + max(0.001, 4 * self.rttvar), cfg.rto_min), cfg.rto_max)

    def payload(self, seq: int, n: int):
        """Bytes [seq, seq+n) of the send buffer; the app's own object when it is one chunk."""
        off = seq_diff(seq, self.buf_seq)
        parts = []
        for chunk in self.chunks:
            if off >= len(chunk):
                off -= len(chunk)
                continue
            if off == 0 and n == len(chunk) and not parts:
                return chunk
            piece = chunk[off:off + n]
            parts.append(piece)
            n -= len(piece)
            off = 0
            if n == 0:
                break
        return b"".join(bytes(p) for p in parts)

    def persist_interval(self) -> float:
        """The zero-window probe interval: the RTO, backed off like it (RFC 9293 3.8.6.1)."""
        return min(self.rto * (2 ** self.persist_backoff), self.stack.config.rto_max)
