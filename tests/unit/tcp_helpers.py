"""Helpers for packet-level tests of responder.tcp, in smoltcp's style.

A test scripts the *peer*: :class:`Peer` builds segments from a template (change only the fields
the test is about), feeds them to the stack with an injected clock, and checks what comes back
with :meth:`Peer.recv` / :meth:`Peer.recv_nothing`.  Named starting states (``conn_established()``,
``conn_time_wait()`` ...) put a connection in each RFC 9293 state by a real exchange.
"""

from __future__ import annotations

from responder.tcp import App, Config, Stack, State, seq_add
from responder.wire import ACK, FIN, RST, SYN, Segment, TcpOptions, ip_bytes

LOCAL = ip_bytes("192.168.56.100")
REMOTE = ip_bytes("192.168.56.1")
LPORT = 80
RPORT = 62438
LOCAL_ISS = 0xAAAABBBB          # the lecture's ISN, via Config.fixed_isn
REMOTE_ISS = 255257674          # the lecture's client ISN
T0 = 1000.0
PEER_TS0 = 387824164


class Recorder(App):
    """An app that records its callbacks and does nothing else."""

    def __init__(self, rcv_buf=None):
        self.rcv_buf = rcv_buf
        self.events = []

    def on_open(self, conn):
        self.events.append("open")

    def on_data(self, conn, data):
        self.events.append(("data", data))

    def on_peer_close(self, conn):
        self.events.append("peer_close")

    def on_closed(self, conn, reason):
        self.events.append(("closed", reason))

    @property
    def data(self) -> bytes:
        return b"".join(e[1] for e in self.events if isinstance(e, tuple) and e[0] == "data")


def config(**kw) -> Config:
    kw.setdefault("fixed_isn", LOCAL_ISS)
    kw.setdefault("delayed_ack", 0.0)
    return Config(**kw)


class Peer:
    """The remote TCP, scripted by a test; ``stack`` is the stack under test."""

    def __init__(self, app: App | None = None, timestamps: bool = True, wscale: int | None = 5,
                 **cfg):
        self.log = []
        self.stack = Stack(config(**cfg), isn_key=b"test-key", log=self.log.append)
        self.app = app if app is not None else Recorder()
        self.stack.listen(LOCAL, LPORT, self.app)
        self.now = T0
        self.timestamps = timestamps
        self.wscale = wscale
        self.tsval = PEER_TS0
        self.snd_nxt = REMOTE_ISS          # the peer's next sequence number
        self.rcv_nxt = seq_add(LOCAL_ISS, 1)   # what the peer ACKs by default
        self.last_tsval_seen = 0
        self.port = RPORT

    # --- segments -------------------------------------------------------------------
    def seg(self, flags=ACK, seq=None, ack=None, payload=b"", window=1024, options=None,
            **kw) -> Segment:
        """A segment from the peer; unspecified fields come from the peer's state."""
        if options is None:
            options = (TcpOptions(timestamps=(self.tsval, self.last_tsval_seen))
                       if self.timestamps else TcpOptions())
        return Segment(REMOTE, LOCAL, kw.get("sport", self.port), kw.get("dport", LPORT),
                       self.snd_nxt if seq is None else seq,
                       (self.rcv_nxt if ack is None else ack) if flags & ACK else
                       (ack or 0), flags, window, options=options, payload=payload)

    def syn(self, seq=REMOTE_ISS, **kw) -> Segment:
        opts = TcpOptions(mss=1460, wscale=self.wscale, sack_permitted=True,
                          timestamps=(self.tsval, 0) if self.timestamps else None)
        return self.seg(SYN, seq=seq, window=65535, options=opts, **kw)

    def send(self, seg: Segment, advance: bool = True) -> list:
        """Deliver ``seg`` to the stack; return what it sends.  By default the peer's own
        sequence number advances past the segment (as a real sender's would)."""
        out = self.stack.on_segment(seg, self.now)
        if advance and not seg.flags & RST:
            self.snd_nxt = seq_add(seg.seq, seg.seg_len)
        self._saw(out)
        return out

    def tick(self, dt: float) -> list:
        """Advance the clock by ``dt`` and fire due timers."""
        self.now += dt
        self.tsval += int(dt * 1000)
        out = self.stack.on_timer(self.now)
        self._saw(out)
        return out

    def _saw(self, out) -> None:
        for s in out:
            if s.options.timestamps:
                self.last_tsval_seen = s.options.timestamps[0]

    # --- checks ---------------------------------------------------------------------
    @staticmethod
    def recv(out: list, flags=None, seq=None, ack=None, payload=None, window=None, n=1):
        """Assert ``out`` holds ``n`` segments; check the first against the given fields."""
        assert len(out) == n, f"expected {n} segment(s), got {out}"
        s = out[0]
        if flags is not None:
            assert s.flags == flags, f"flags {s.flags:#x} != {flags:#x}: {s}"
        if seq is not None:
            assert s.seq == seq & 0xFFFFFFFF, f"seq {s.seq} != {seq}: {s}"
        if ack is not None:
            assert s.ack == ack & 0xFFFFFFFF, f"ack {s.ack} != {ack}: {s}"
        if payload is not None:
            assert bytes(s.payload) == payload, f"payload {bytes(s.payload)!r}"
        if window is not None:
            assert s.window == window, f"window {s.window} != {window}"
        return s

    @staticmethod
    def recv_nothing(out: list) -> None:
        assert out == [], f"expected nothing, got {out}"

    @property
    def conn(self):
        return self.stack.conns.get((LOCAL, LPORT, REMOTE, self.port))

    @property
    def state(self) -> State:
        c = self.conn
        return State.CLOSED if c is None else c.state


# --- named starting states ------------------------------------------------------------

def conn_listen(**kw) -> Peer:
    return Peer(**kw)


def conn_syn_received(**kw) -> Peer:
    p = Peer(**kw)
    out = p.send(p.syn())
    p.recv(out, flags=SYN | ACK, seq=LOCAL_ISS, ack=REMOTE_ISS + 1)
    assert p.state is State.SYN_RECEIVED
    return p


def conn_established(**kw) -> Peer:
    p = conn_syn_received(**kw)
    p.recv_nothing(p.send(p.seg(ACK)))
    assert p.state is State.ESTABLISHED
    return p


def _step(p: Peer, action, state: State, **expect) -> Peer:
    """Run one scripted step (the peer sends, or our app closes), check the single segment
    that answers it (if ``expect`` is given) and the state it leads to."""
    out = action(p)
    if expect:
        p.recv(out, **expect)
    else:
        p.recv_nothing(out)
    assert p.state is state, p.state
    return p


def _we_close(p: Peer) -> list:
    p.conn.close()
    return p.stack.take_output()


def _peer_fin(p: Peer) -> list:
    return p.send(p.seg(FIN | ACK))


def _peer_acks_our_fin(p: Peer) -> list:
    p.rcv_nxt = seq_add(LOCAL_ISS, 2)
    return p.send(p.seg(ACK))


def conn_fin_wait_1(**kw) -> Peer:
    return _step(conn_established(**kw), _we_close, State.FIN_WAIT_1, flags=FIN | ACK,
                 seq=LOCAL_ISS + 1)


def conn_fin_wait_2(**kw) -> Peer:
    return _step(conn_fin_wait_1(**kw), _peer_acks_our_fin, State.FIN_WAIT_2)


def conn_close_wait(**kw) -> Peer:
    return _step(conn_established(**kw), _peer_fin, State.CLOSE_WAIT, flags=ACK,
                 ack=REMOTE_ISS + 2)


def conn_last_ack(**kw) -> Peer:
    return _step(conn_close_wait(**kw), _we_close, State.LAST_ACK, flags=FIN | ACK,
                 seq=LOCAL_ISS + 1)


def conn_closing(**kw) -> Peer:
    """Simultaneous close (RFC 9293 figure 13): our FIN crosses the peer's (whose ACK field
    has not seen our FIN yet)."""
    return _step(conn_fin_wait_1(**kw), _peer_fin, State.CLOSING, flags=ACK, ack=REMOTE_ISS + 2)


def conn_time_wait(**kw) -> Peer:
    return _step(conn_fin_wait_2(**kw), _peer_fin, State.TIME_WAIT, flags=ACK,
                 ack=REMOTE_ISS + 2)


def conn_syn_sent(**kw) -> Peer:
    """Active open from LOCAL:LPORT to REMOTE:RPORT."""
    p = Peer(**kw)
    p.stack.connect((LOCAL, LPORT), (REMOTE, RPORT), p.app, p.now)
    out = p.stack.take_output()
    s = p.recv(out, flags=SYN, seq=LOCAL_ISS)
    assert s.options.mss == 1460
    assert p.state is State.SYN_SENT
    return p


STARTS = {
    State.LISTEN: conn_listen,
    State.SYN_SENT: conn_syn_sent,
    State.SYN_RECEIVED: conn_syn_received,
    State.ESTABLISHED: conn_established,
    State.FIN_WAIT_1: conn_fin_wait_1,
    State.FIN_WAIT_2: conn_fin_wait_2,
    State.CLOSE_WAIT: conn_close_wait,
    State.CLOSING: conn_closing,
    State.LAST_ACK: conn_last_ack,
    State.TIME_WAIT: conn_time_wait,
}
