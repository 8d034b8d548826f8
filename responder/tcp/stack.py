"""The stack: every connection of one endpoint, and the actions the table names.

``Stack.on_segment(seg, now)`` finds the TCB by 4-tuple (or the listener), asks
:func:`~responder.tcp.table.classify` what kind of event the segment is, looks up
``TABLE[state, event]`` and runs the action the row names (:attr:`Stack.actions` maps each
name to its method, written out).  Then the application's callbacks run, and whatever the
window, Nagle and the owed ACKs allow goes out.  ``Stack.on_timer(now)`` fires due timers the
same way (:attr:`Stack.timer_handlers`).

Sections, in order: the public interface (for the I/O layer, the apps' connections and tests);
dispatch; the actions named in the table; the pieces of "accept" (ACK, window, text, FIN);
output; timers; TCB life.  SYN cookies are in :mod:`responder.tcp.cookies`.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from typing import Callable

from ..wire import ACK, FIN, RST, SYN, Segment
from . import cookies
from .conn import ACK_DELAYED, ACK_NONE, ACK_NOW, App, Config, Connection, Listener
from .sender import Sender
from .seq import MASK, isn_rfc6528, keyed_hash, seq_add, seq_diff, seq_gt, seq_le, seq_lt
from .table import RECEIVING, TABLE, Ev, State, classify

S = State

COUNTER_NAMES = ("segments_in", "segments_out", "connections_open", "connections_total",
                 "established_total", "retransmissions", "challenge_acks", "resets_sent",
                 "resets_received", "stateless_replies", "syn_cookies_accepted")


class Stack(Sender):
    """All connections of one endpoint, keyed by 4-tuple (local addr, local port, remote addr,
    remote port).

    ``isn_key`` is the RFC 6528 secret (from ``os.urandom`` in the I/O layer); ``log`` receives
    one line per state transition.
    """

    def __init__(self, config: Config | None = None, *, isn_key: bytes = b"",
                 log: Callable[[str], None] | None = None):
        self.config = config or Config()
        self.isn_key = isn_key
        self.log = log or (lambda line: None)
        self.conns: dict = {}
        self.listeners: dict = {}
        self.half_open: collections.OrderedDict = collections.OrderedDict()
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self.drops: collections.Counter = collections.Counter()
        self._out: list = []
        #: The time of the event being processed (the ``now`` the I/O layer passed in).
        self.now = 0.0
        self._heap: list = []
        self._tick = itertools.count()
        #: What each action a TABLE row names does (``TABLE[state, ev].action``).
        self.actions = {
            "drop": self._act_drop, "reset": self._act_reset,
            "passive_open": self._act_passive_open,
            "cookie_or_reset": self._act_cookie_or_reset,
            "simultaneous_open": self._act_simultaneous_open, "synack": self._act_synack,
            "resend_synack": self._act_resend_synack, "ack_drop": self._act_ack_drop,
            "challenge_ack": self._act_challenge_ack, "peer_reset": self._act_peer_reset,
            "delete": self._act_delete, "give_up": self._act_give_up, "close": self._act_close,
            "timewait_fin": self._act_timewait_fin, "timewait_syn": self._act_timewait_syn,
            "accept": self._act_accept,
        }
        #: What each timer kind does when it fires (keys of ``Connection.timers``).
        self.timer_handlers = {
            "rto": self._timer_rto, "persist": self._timer_persist,
            "delack": self._timer_delack, "timewait": self._timer_timewait,
            "finwait2": self._timer_finwait2,
        }

    # --- the public interface -----------------------------------------------------------
    def listen(self, addr: bytes, port: int, app: App) -> Listener:
        """Passive OPEN (RFC 9293 3.10.1): accept connections to addr:port for ``app``."""
        lst = Listener(bytes(addr), port, app)
        self.listeners[lst.addr, port] = lst
        return lst

    def connect(self, local: tuple, remote: tuple, app: App, now: float) -> Connection:
        """Active OPEN (RFC 9293 3.10.1): send a SYN, enter SYN-SENT.  The SYN is returned by
        the next :meth:`take_output` (or with the next event's output)."""
        self.now = now
        local, remote = (bytes(local[0]), local[1]), (bytes(remote[0]), remote[1])
        conn = self._new_conn(local, remote, app, passive=False,
                              rcv_buf=app.rcv_buf if app.rcv_buf is not None else None)
        conn.rcv_wscale = self.config.wscale or 0
        self._set_state(conn, S.SYN_SENT)
        conn.snd_nxt = seq_add(conn.iss, 1)
        self._emit(conn.segment(conn.iss, 0, SYN, options=conn.syn_options(False)))
        self._arm_rto(conn)
        return conn

    def on_segment(self, seg: Segment, now: float) -> list:
        """A segment arrived (already parsed and checksum-verified by the wire layer)."""
        self.now = now
        self.counters["segments_in"] += 1
        conn = self.conns.get((seg.dst, seg.dport, seg.src, seg.sport))    # addresses: bytes
        if conn is not None:
            self._dispatch(conn, conn.state, seg)
        else:
            lst = self.listeners.get((seg.dst, seg.dport))
            if lst is not None and not seg.flags & SYN:
                stray = lst.app.on_stray(self, seg, now)
                if stray is not None:
                    self.counters["stateless_replies"] += len(stray)
                    self._out.extend(stray)
                    return self.take_output()
            self._dispatch(None, S.LISTEN if lst else S.CLOSED, seg, lst)
        return self.take_output()

    def on_timer(self, now: float) -> list:
        """Fire every timer due at ``now``."""
        self.now = now
        while True:
            entry = self._next_entry()
            if entry is None or entry[0] > now:
                break
            heapq.heappop(self._heap)
            self._fire_timers(entry[1], now)
        return self.take_output()

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` must next be called (None: no timer running)."""
        entry = self._next_entry()
        return None if entry is None else entry[0]

    def take_output(self) -> list:
        """Segments produced since the last call (by events, or by the app calling in)."""
        out, self._out = self._out, []
        self.counters["segments_out"] += len(out)
        return out

    def stats(self) -> dict:
        """Counters for the I/O layer's JSON line."""
        c = dict(self.counters)
        c["connections_open"] = len(self.conns)
        c["half_open"] = len(self.half_open)
        c["drops"] = dict(self.drops)
        return c

    def tsval_for(self, local: tuple, remote: tuple, now: float) -> int:
        """The TSval a connection on this 4-tuple would send at ``now`` (for stateless replies:
        the per-connection offset is a keyed hash, so it can be recomputed without a TCB)."""
        return (int(now * 1000) + keyed_hash(self.isn_key, b"ts", local, remote)) & MASK

    # --- what a Connection calls (the application's requests, RFC 9293 3.10) --------------
    def close(self, conn: Connection) -> None:
        """CLOSE (RFC 9293 3.10.4) as the table says for the connection's state."""
        self._user_event(conn, Ev.CLOSE)

    def abort(self, conn: Connection) -> None:
        """ABORT (RFC 9293 3.10.5): send RST where the peer may have a TCB, delete ours."""
        if conn.state in (S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2,
                          S.CLOSE_WAIT):
            self.counters["resets_sent"] += 1
            self._emit(conn.segment(conn.snd_nxt, 0, RST, window=False))
        self._delete(conn, "aborted")
        self._deliver(conn)             # on_closed, also when called outside a callback

    def forget(self, conn: Connection) -> None:
        """Delete the TCB without a word to the peer (the tarpit)."""
        self._delete(conn, "forgotten", log=False)
        self._deliver(conn)

    def update_window(self, conn: Connection) -> None:
        """The application opened the receive window enough to tell the peer now."""
        conn.ack_owed = ACK_NOW
        self.output(conn)               # data going out anyway carries the update
        self._flush_ack(conn)

    # --- dispatch -----------------------------------------------------------------------
    def _dispatch(self, conn, state, seg, lst=None) -> None:
        ev = classify(conn, state, seg, self.now)
        rule = TABLE[state, ev]
        self.actions[rule.action](conn, seg, ev, lst)
        if conn is not None:
            self._deliver(conn)

    def _user_event(self, conn: Connection, ev: Ev) -> None:
        rule = TABLE[conn.state, ev]
        if rule.action == "drop":
            return
        self.actions[rule.action](conn, None, ev, None)

    def _set_state(self, conn: Connection, new: State, log: bool = True) -> None:
        """The one place a state changes; logs ``OLD => NEW`` with the 4-tuple."""
        old = conn.state
        if old is new:
            return
        conn.state = new
        if new is S.ESTABLISHED:
            self.counters["established_total"] += 1
        if old is S.SYN_RECEIVED:
            self.half_open.pop(conn.key, None)
        if log:
            self.log(f"{conn.name} {old._value_} => {new._value_}")   # str(state) is its value

    def _deliver(self, conn: Connection) -> None:
        """Run the app callbacks queued while processing; they may send and close."""
        while conn.events:
            name, *args = conn.events.pop(0)
            getattr(conn.app, name)(conn, *args)
        if self.conns.get(conn.key) is conn:
            self.output(conn)
            self._flush_ack(conn)

    # --- actions named in TABLE ---------------------------------------------------------
    def _act_drop(self, conn, seg, ev, lst=None) -> None:
        if seg is not None:
            self.drops[drop_reason(conn, seg, ev)] += 1

    def _act_reset(self, conn, seg, ev, lst=None) -> None:
        """RFC 9293 3.10.7.1: if ACK: <SEQ=SEG.ACK><CTL=RST>, else
        <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>."""
        self.drops["bad_ack" if conn else ("listen_ack" if lst else "closed_port")] += 1
        self.counters["resets_sent"] += 1
        if seg.flags & ACK:
            rst = Segment(seg.dst, seg.src, seg.dport, seg.sport, seg.ack, 0, RST, 0)
        else:
            rst = Segment(seg.dst, seg.src, seg.dport, seg.sport, 0,
                          seq_add(seg.seq, seg.seg_len), RST | ACK, 0)
        self._out.append(rst)

    def _act_passive_open(self, _conn, seg, ev, lst=None) -> None:
        """LISTEN + SYN (RFC 9293 3.10.7.2 third): new TCB in SYN-RECEIVED, send SYN,ACK.

        SYN floods (RFC 4987).  Memory: the half-open table is bounded; when full, the oldest
        SYN-RECEIVED TCB is dropped silently (no RST: answering a flood with RSTs only doubles
        it).  Service: once the table is half full, new SYN,ACKs carry a SYN cookie as their
        ISS (:mod:`responder.tcp.cookies`) instead of the RFC 6528 ISN, so if their TCB is then pushed
        out by the flood before the peer's ACK is processed, that ACK still proves the
        handshake and the TCB is rebuilt (:meth:`_act_cookie_or_reset`)."""
        cfg = self.config
        while len(self.half_open) >= cfg.max_half_open:
            _, old = self.half_open.popitem(last=False)
            self.drops["syn_queue_overflow"] += 1
            self._delete(old, "dropped")
            self._deliver(old)
        local, remote = (bytes(seg.dst), seg.dport), (bytes(seg.src), seg.sport)
        conn = self._new_conn(local, remote, lst.app, passive=True, rcv_buf=lst.app.rcv_buf)
        conn.take_peer_syn_options(seg)
        if cfg.syn_cookies and cfg.fixed_isn is None \
                and len(self.half_open) >= max(1, cfg.max_half_open // 2):
            cookies.make_cookie_tcb(conn, seg, self.isn_key, self.now)
        conn.state = S.LISTEN           # the TCB is born from the listener (RFC 9293 3.10.7.2)
        self._set_state(conn, S.SYN_RECEIVED)
        self.half_open[conn.key] = conn
        conn.rtt_seq, conn.rtt_time = conn.iss, self.now
        self._send_synack(conn)

    def _act_cookie_or_reset(self, _conn, seg, ev, lst=None) -> None:
        """LISTEN + ACK: a RST (RFC 9293 3.10.7.2 second) -- unless SEG.ACK - 1 is a SYN
        cookie we made for this 4-tuple in the last two time slots: then the SYN-RECEIVED TCB
        that the flood pushed out is rebuilt from it and the segment processed as in
        SYN-RECEIVED (:mod:`responder.tcp.cookies`)."""
        value = cookies.check_cookie(self.isn_key, seg, self.now) \
            if self.config.syn_cookies else None
        if value is None:
            self._act_reset(None, seg, ev, lst)
            return
        self.counters["syn_cookies_accepted"] += 1
        local, remote = (bytes(seg.dst), seg.dport), (bytes(seg.src), seg.sport)
        conn = self._new_conn(local, remote, lst.app, passive=True, rcv_buf=lst.app.rcv_buf)
        cookies.rebuild_tcb(conn, seg, value, self.config, self.now)
        conn.state = S.LISTEN
        self._set_state(conn, S.SYN_RECEIVED)
        self._dispatch(conn, conn.state, seg)

    def _act_simultaneous_open(self, conn, seg, ev, lst=None) -> None:
        """SYN-SENT + SYN (RFC 9293 3.10.7.3 fourth, figure 7): both sides opened at once."""
        conn.take_peer_syn_options(seg)
        self._set_state(conn, S.SYN_RECEIVED)
        self._send_synack(conn)

    def _act_synack(self, conn, seg, ev, lst=None) -> None:
        """SYN-SENT + SYN,ACK acknowledging our SYN (RFC 9293 3.10.7.3 fourth)."""
        conn.take_peer_syn_options(seg)
        self._ack_advance(conn, seg.ack)
        self._set_state(conn, S.ESTABLISHED)
        conn.events.append(("on_open",))
        conn.ack_owed = ACK_NOW
        self._process_text(conn, seg)

    def _act_resend_synack(self, conn, seg, ev, lst=None) -> None:
        self.counters["retransmissions"] += 1
        self._send_synack(conn)

    def _act_ack_drop(self, conn, seg, ev, lst=None) -> None:
        """RFC 9293 3.10.7.4 first check: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, drop."""
        self.drops[drop_reason(conn, seg, ev)] += 1
        if self._throttle(conn):
            self._emit(conn.segment(conn.snd_nxt, conn.rcv_nxt, ACK))

    def _act_challenge_ack(self, conn, seg, ev, lst=None) -> None:
        """RFC 5961 3.2/4.2/5.2: answer with an ACK of what we expect, so a genuine peer that
        lost sync resets with the exact sequence number; a blind attacker learns nothing."""
        self.drops[drop_reason(conn, seg, ev)] += 1
        if self._throttle(conn):
            self.counters["challenge_acks"] += 1
            self._emit(conn.segment(conn.snd_nxt, conn.rcv_nxt, ACK))

    def _act_peer_reset(self, conn, seg, ev, lst=None) -> None:
        self.counters["resets_received"] += 1
        reason = "refused" if conn.state is S.SYN_SENT or (
            conn.state is S.SYN_RECEIVED and not conn.passive) else "reset"
        self._delete(conn, reason)

    def _act_delete(self, conn, seg, ev, lst=None) -> None:
        if seg is not None:
            self.drops[drop_reason(conn, seg, ev)] += 1
        self._delete(conn, "closed")

    def _act_give_up(self, conn, seg, ev, lst=None) -> None:
        if conn.state is not S.SYN_SENT:
            self.counters["resets_sent"] += 1
            self._emit(conn.segment(conn.snd_nxt, 0, RST, window=False))
        self._delete(conn, "timeout")

    def _act_close(self, conn, seg, ev, lst=None) -> None:
        """CLOSE (RFC 9293 3.10.4): queue our FIN after the data; SYN-RECEIVED and ESTABLISHED
        -> FIN-WAIT-1, CLOSE-WAIT -> LAST-ACK.  The FIN goes out from :meth:`_output`."""
        conn.fin_queued = True
        if conn.state is S.SYN_RECEIVED:
            return          # "queue for processing after entering ESTABLISHED state"
        self._set_state(conn, S.LAST_ACK if conn.state is S.CLOSE_WAIT else S.FIN_WAIT_1)
        self.output(conn)

    def _act_timewait_fin(self, conn, seg, ev, lst=None) -> None:
        conn.ack_owed = ACK_NOW
        self._set_timer(conn, "timewait", self.config.msl2)

    def _act_timewait_syn(self, conn, seg, ev, lst=None) -> None:
        """A new SYN for a 4-tuple in TIME-WAIT (RFC 1122 4.2.2.13, RFC 6191): reopen if its
        sequence number is beyond the old connection's (and its timestamp newer); otherwise
        it could be an old duplicate or an attack: challenge ACK (RFC 5961 4.2)."""
        ts = seg.options.timestamps
        newer = seq_gt(seg.seq, conn.rcv_nxt) and (
            not conn.ts_ok or (ts is not None and seq_gt(ts[0], conn.ts_recent)))
        lst = self.listeners.get((conn.local[0], conn.local[1]))
        if newer and lst is not None and not seg.flags & ACK:
            self._delete(conn, "closed")
            self._deliver(conn)
            self._act_passive_open(None, seg, ev, lst)
        else:
            self._act_challenge_ack(conn, seg, ev)

    def _act_accept(self, conn, seg, ev, lst=None) -> None:
        """An acceptable segment in SYN-RECEIVED or a synchronized state (RFC 9293 3.10.7.4,
        fifth to eighth checks): ACK field, timestamps, text, FIN."""
        conn.update_ts_recent(seg)
        if conn.state is S.SYN_RECEIVED:
            # fifth check, SYN-RECEIVED: the ACK is acceptable (classify checked) -> ESTABLISHED
            conn.snd_wnd = seg.window << conn.snd_wscale
            conn.max_snd_wnd = max(conn.max_snd_wnd, conn.snd_wnd)
            conn.snd_wl1, conn.snd_wl2 = seg.seq, seg.ack
            self._ack_advance(conn, seg.ack)
            self._set_state(conn, S.ESTABLISHED)
            if conn.fin_queued:           # CLOSE was called in SYN-RECEIVED
                self._set_state(conn, S.FIN_WAIT_1)
            conn.events.append(("on_open",))
        else:
            self._process_ack(conn, seg)
        if self.conns.get(conn.key) is not conn:
            return                          # LAST-ACK completed
        self._process_text(conn, seg)

    # --- the pieces of "accept" -----------------------------------------------------------
    def _process_ack(self, conn: Connection, seg: Segment) -> None:
        """RFC 9293 3.10.7.4 fifth check for synchronized states."""
        ack = seg.ack
        conn.probes_out = 0                 # the peer is alive (RFC 1122 4.2.2.17)
        if seq_lt(conn.snd_una, ack) and seq_le(ack, conn.snd_nxt):
            self._ack_advance(conn, ack)
        # Window update (SND.WL1/WL2 keep old segments from setting it, RFC 9293 3.10.7.4).
        if seq_le(conn.snd_una, ack) and (seq_lt(conn.snd_wl1, seg.seq) or (
                conn.snd_wl1 == seg.seq and seq_le(conn.snd_wl2, ack))):
            conn.snd_wnd = seg.window << conn.snd_wscale
            conn.max_snd_wnd = max(conn.max_snd_wnd, conn.snd_wnd)
            conn.snd_wl1, conn.snd_wl2 = seg.seq, ack
            if conn.snd_wnd:
                conn.timers.pop("persist", None)
                conn.persist_backoff = 0
        if conn.fin_acked:
            st = conn.state
            if st is S.FIN_WAIT_1:
                self._set_state(conn, S.FIN_WAIT_2)
                self._set_timer(conn, "finwait2", self.config.fin_wait_2_timeout)
            elif st is S.CLOSING:
                self._enter_time_wait(conn)
            elif st is S.LAST_ACK:
                self._delete(conn, "closed")

    def _ack_advance(self, conn: Connection, ack: int) -> None:
        """SND.UNA advances: free acknowledged data, take an RTT sample (Karn: only if it was
        never retransmitted, RFC 6298 3), restart or stop the retransmission timer (5.2-5.3)."""
        acked_data = max(0, min(seq_diff(ack, conn.buf_seq), conn.buffered))
        conn.snd_una = ack
        chunks, n, whole = conn.chunks, acked_data, 0
        while n and len(chunks[whole]) <= n:    # chunks acknowledged entirely ...
            n -= len(chunks[whole])
            whole += 1
        del chunks[:whole]
        if n:                                   # ... and the front of the next one
            chunks[0] = chunks[0][n:]
        conn.buffered -= acked_data
        conn.buf_seq = seq_add(conn.buf_seq, acked_data)
        if conn.rtt_seq is not None and seq_gt(ack, conn.rtt_seq):
            conn.rtt_sample(self.now - conn.rtt_time)
            conn.rtt_seq = None
        conn.retries = 0
        conn.timers.pop("rto", None)
        if conn.snd_una != conn.snd_nxt:
            self._arm_rto(conn)
        if conn.recover is not None:
            if seq_lt(ack, conn.recover):
                self.counters["retransmissions"] += 1
                self._retransmit_head(conn)
            else:
                conn.recover = None
        if acked_data:
            conn.events.append(("on_send_space",))

    def _process_text(self, conn: Connection, seg: Segment) -> None:
        """RFC 9293 3.10.7.4 seventh (text) and eighth (FIN) checks."""
        payload = seg.payload
        seq = seq_add(seg.seq, 1) if seg.flags & SYN else seg.seq    # text follows the SYN
        fin = bool(seg.flags & FIN)
        if conn.state not in RECEIVING:
            if payload or fin:
                conn.ack_owed = ACK_NOW       # retransmission of something we have: re-ACK
            return
        # Trim what we already have (front) and what is beyond the window (tail).
        skip = seq_diff(conn.rcv_nxt, seq)
        if skip > 0:
            payload = payload[skip:]
            seq = conn.rcv_nxt
            if skip > len(seg.payload):   # even the FIN is old
                fin = False
        if seq != conn.rcv_nxt:
            if payload or fin:
                # Out of order: not kept (see module docstring); a duplicate ACK at once tells
                # the sender what we miss (RFC 5681 4.2).
                self.drops["out_of_order"] += 1
                conn.ack_owed = ACK_NOW
            return
        room = conn.rcv_wnd
        if len(payload) > room:
            payload = payload[:room]
            fin = False
            conn.ack_owed = ACK_NOW
        if payload:
            conn.rcv_nxt = seq_add(conn.rcv_nxt, len(payload))
            conn.events.append(("on_data", bytes(payload)))
            # Delayed ACK (RFC 1122 4.2.3.2): every second segment at once, else within 0.5 s.
            conn.unacked_segs += 1
            if conn.unacked_segs >= 2 or not self.config.delayed_ack:
                conn.ack_owed = ACK_NOW
            elif conn.ack_owed == ACK_NONE:
                conn.ack_owed = ACK_DELAYED
        if fin:
            conn.rcv_nxt = seq_add(conn.rcv_nxt, 1)
            conn.ack_owed = ACK_NOW
            conn.events.append(("on_peer_close",))
            st = conn.state
            if st is S.ESTABLISHED:
                self._set_state(conn, S.CLOSE_WAIT)
            elif st is S.FIN_WAIT_1:
                if conn.fin_acked:
                    self._enter_time_wait(conn)
                else:
                    self._set_state(conn, S.CLOSING)
            elif st is S.FIN_WAIT_2:
                self._enter_time_wait(conn)

    def _enter_time_wait(self, conn: Connection) -> None:
        if not self.config.time_wait:       # the no-time-wait fault: no last ACK either
            self._delete(conn, "no TIME-WAIT (fault)")
            return
        self._set_state(conn, S.TIME_WAIT)
        for k in ("rto", "persist", "finwait2"):
            conn.timers.pop(k, None)
        self._set_timer(conn, "timewait", self.config.msl2)

    # --- TCB life -------------------------------------------------------------------------
    def _new_conn(self, local, remote, app, passive, rcv_buf) -> Connection:
        cfg = self.config
        if cfg.fixed_isn is not None:
            iss = cfg.fixed_isn & MASK
        else:
            iss = isn_rfc6528(self.isn_key, local, remote, self.now)
        conn = Connection(self, local, remote, app, iss, passive,
                          cfg.rcv_buf if rcv_buf is None else rcv_buf)
        conn.ts_offset = keyed_hash(self.isn_key, b"ts", local, remote)
        old = self.conns.get(conn.key)
        if old is not None:
            self._delete(old, "closed")
        self.conns[conn.key] = conn
        self.counters["connections_total"] += 1
        return conn

    def _throttle(self, conn: Connection) -> bool:
        """RFC 5961 7: at most ``challenge_ack_limit`` ACKs of this kind per second, per
        connection (a global limit is a side channel: CVE-2016-5696)."""
        if self.now - conn.chal_start >= 1.0:
            conn.chal_start, conn.chal_count = self.now, 0
        if conn.chal_count >= self.config.challenge_ack_limit:
            self.drops["challenge_ack_limited"] += 1
            return False
        conn.chal_count += 1
        return True

    def _delete(self, conn: Connection, reason: str, log: bool = True) -> None:
        """Delete the TCB (state CLOSED); the app hears ``on_closed(reason)``."""
        if self.conns.get(conn.key) is conn:
            del self.conns[conn.key]
        self.half_open.pop(conn.key, None)
        conn.timers.clear()
        if conn.state is not S.CLOSED:
            self._set_state(conn, S.CLOSED, log=log)
            conn.events.append(("on_closed", reason))


def drop_reason(conn, seg, ev) -> str:
    if ev is None or not isinstance(ev, Ev):
        return "dropped"
    if ev is Ev.OUT_OF_WINDOW and conn is not None and conn.ts_ok and not seg.flags & RST \
            and seg.options.timestamps and seq_lt(seg.options.timestamps[0], conn.ts_recent):
        return "paws"                                   # RFC 7323 5.3
    return DROP_REASONS.get(ev, "dropped")


DROP_REASONS = {Ev.OUT_OF_WINDOW: "out_of_window", Ev.NO_TIMESTAMP: "missing_timestamp",
                 Ev.RST_BAD: "rst_out_of_window", Ev.RST_INWIN: "rst_in_window",
                 Ev.NO_ACK: "no_ack", Ev.BAD_ACK: "bad_ack", Ev.SYN: "syn_in_synchronized",
                 Ev.SYN_ACK: "syn_in_synchronized", Ev.DUP_SYN: "syn_in_synchronized",
                 Ev.RST: "rst", Ev.ACK: "ack_in_state", Ev.DATA: "data_in_state",
                 Ev.FIN: "fin_in_state"}
