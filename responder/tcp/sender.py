"""The sending half of the stack: output, owed ACKs, retransmission and the other timers.

What goes out and when: data as the peer's window, Nagle (RFC 896) and sender SWS avoidance
(RFC 1122 4.2.3.4) allow, then our FIN; ACKs at once or after the delayed-ACK timer (RFC 1122
4.2.3.2); retransmission with RFC 6298's timer (Karn, backoff, give up after ``max_retries``);
zero-window probes (RFC 9293 3.8.6.1); the TIME-WAIT and FIN-WAIT-2 timers.

:class:`Sender` is not used on its own: :class:`responder.tcp.stack.Stack` inherits it (the two
were one class; they are split here so that each file reads as one subject).  It uses the
stack's ``config``, ``now``, ``conns``, ``counters`` and output list, and calls back into
``Stack._user_event`` when a timer gives up or expires (the table decides what that means).
"""

from __future__ import annotations

import heapq

from ..wire import ACK, FIN, PSH, SYN, Segment
from .conn import ACK_DELAYED, ACK_NONE, ACK_NOW, Connection
from .seq import seq_add, seq_diff, seq_gt
from .table import SENDING, Ev, State

S = State


class Sender:
    """Output and timers of :class:`~responder.tcp.stack.Stack` (see the module docstring)."""

    # --- output -------------------------------------------------------------------------
    def _emit(self, seg: Segment) -> None:
        self._out.append(seg)

    def _send_synack(self, conn: Connection) -> None:
        conn.snd_nxt = seq_add(conn.iss, 1)
        self._emit(conn.segment(conn.iss, conn.rcv_nxt, SYN | ACK,
                                options=conn.syn_options(True)))
        self._arm_rto(conn)

    def output(self, conn: Connection) -> None:
        """Send what the window, Nagle and sender SWS avoidance allow (RFC 9293 3.8.6.2.1,
        RFC 1122 4.2.3.4, RFC 896), then our FIN once all data is out."""
        if conn.state not in SENDING:
            return
        mss = conn.snd_mss
        while True:
            snd_nxt = conn.snd_nxt
            unsent = seq_diff(conn.buf_seq + conn.buffered, snd_nxt)
            usable = seq_diff(conn.snd_una + conn.snd_wnd, snd_nxt)
            in_flight = snd_nxt != conn.snd_una
            if unsent > 0:
                n = min(unsent, mss, usable)
                if n <= 0:
                    break
                if n < mss and in_flight:
                    # Nagle: a small segment waits while data is unacknowledged; sender SWS
                    # avoidance: so does one cut short by the window.
                    if (not conn.nodelay and n == unsent) or n < unsent:
                        break
                seq = snd_nxt
                last = n == unsent
                flags = ACK | (PSH if last else 0)
                if last and conn.fin_queued:
                    flags |= FIN
                self._send_data(conn, seq, n, flags)
                conn.snd_nxt = seq_add(seq, n + (1 if flags & FIN else 0))
            elif unsent == 0 and conn.fin_queued:
                self._emit(conn.segment(conn.snd_nxt, conn.rcv_nxt, FIN | ACK))
                conn.snd_nxt = seq_add(conn.snd_nxt, 1)
            else:
                break
            if conn.rtt_seq is None:         # time one segment per RTT (RFC 6298 3)
                conn.rtt_seq, conn.rtt_time = seq_add(conn.snd_nxt, -1), self.now
            self._arm_rto(conn)
        # Zero window with data waiting and nothing in flight: probe (RFC 9293 3.8.6.1).
        if conn.snd_wnd == 0 and seq_gt(conn.buf_seq + conn.buffered, conn.snd_nxt) \
                and conn.snd_nxt == conn.snd_una and "persist" not in conn.timers:
            self._set_timer(conn, "persist", conn.persist_interval())

    def _send_data(self, conn: Connection, seq: int, n: int, flags: int) -> None:
        self._emit(conn.segment(seq, conn.rcv_nxt, flags, payload=conn.payload(seq, n)))

    def _flush_ack(self, conn: Connection) -> None:
        """Send an owed ACK now, or arm the delayed-ACK timer."""
        if conn.ack_owed == ACK_NOW and conn.state is not S.CLOSED:
            self._emit(conn.segment(conn.snd_nxt, conn.rcv_nxt, ACK))
        elif conn.ack_owed == ACK_DELAYED and "delack" not in conn.timers:
            self._set_timer(conn, "delack", self.config.delayed_ack)

    # --- timers -------------------------------------------------------------------------
    # A connection's timers are ``conn.timers`` ({kind: deadline}): setting, restarting and
    # cancelling one is a dict operation.  The stack's heap holds one entry per connection,
    # (deadline, tick, 4-tuple), at or before the connection's earliest timer, and is touched
    # only when a timer is set *earlier* than that entry.  When an entry comes to the top of
    # the heap (:meth:`_next_entry`) and the connection's earliest timer is later (it was
    # restarted, or cancelled), the entry moves there; an entry whose TCB is gone, or that a
    # newer entry of its connection replaced (``conn.timer_tick``), is dropped.  So a hello
    # connection costs two heap entries (its first RTO, then TIME-WAIT) however often its
    # RTO is restarted, and thousands of connections in TIME-WAIT cost nothing per segment.
    # Entries name the 4-tuple, not the TCB, so a deleted TCB is freed at once.

    def _set_timer(self, conn: Connection, kind: str, delay: float) -> None:
        deadline = self.now + delay
        conn.timers[kind] = deadline
        if conn.timer_at is None or deadline < conn.timer_at:
            self._queue(conn, deadline)

    def _queue(self, conn: Connection, deadline: float) -> None:
        """Put the connection's entry in the heap at ``deadline`` (any older one is stale).
        When stale entries outnumber the live ones (a SYN flood deletes TCBs faster than
        their timers expire) the heap is rebuilt, so it stays O(live)."""
        tick = next(self._tick)
        conn.timer_at, conn.timer_tick = deadline, tick
        heap = self._heap
        heapq.heappush(heap, (deadline, tick, conn.key))
        if len(heap) > 64 + 2 * len(self.conns):
            self._heap = [e for e in heap if (c := self.conns.get(e[2])) is not None
                          and c.timer_tick == e[1]]
            heapq.heapify(self._heap)

    def _next_entry(self) -> tuple | None:
        """``(deadline, conn)`` of the heap's first entry once it is current and at the
        connection's earliest timer (stale entries dropped, early ones moved), or None."""
        heap = self._heap
        while heap:
            deadline, tick, key = heap[0]
            conn = self.conns.get(key)
            if conn is None or conn.timer_tick != tick:
                heapq.heappop(heap)             # the TCB is gone, or a newer entry replaced it
                continue
            first = min(conn.timers.values()) if conn.timers else None
            if first == deadline:
                return deadline, conn
            if first is None:                   # cancelled: drop the entry
                heapq.heappop(heap)
                conn.timer_at = conn.timer_tick = None
                continue
            tick = next(self._tick)             # restarted later: move the entry there
            conn.timer_at, conn.timer_tick = first, tick
            heapq.heapreplace(heap, (first, tick, key))
        return None

    def _fire_timers(self, conn: Connection, now: float) -> None:
        """Run the connection's timers that are due at ``now``, earliest first, then queue
        its entry at the next one.  While they run the entry is out of the heap, and
        ``timer_at`` = ``now`` keeps a timer set meanwhile (never before ``now``) from
        queueing another."""
        conn.timer_at, conn.timer_tick = now, None
        timers = conn.timers
        while timers and self.conns.get(conn.key) is conn:
            kind = min(timers, key=timers.__getitem__)
            if timers[kind] > now:
                break
            del timers[kind]
            self.timer_handlers[kind](conn)
            self._deliver(conn)
        conn.timer_at = None
        if timers and self.conns.get(conn.key) is conn:
            self._queue(conn, min(timers.values()))

    def _arm_rto(self, conn: Connection) -> None:
        if "rto" not in conn.timers:
            self._set_timer(conn, "rto", conn.rto)

    def _timer_delack(self, conn: Connection) -> None:
        if conn.ack_owed != ACK_NONE:
            conn.ack_owed = ACK_NOW
            self._flush_ack(conn)

    def _timer_rto(self, conn: Connection) -> None:
        """RFC 6298 5.4-5.7: retransmit the earliest unacknowledged segment, double the RTO
        (up to the maximum; not with the ``no-backoff`` fault), restart the timer; give up after
        ``max_retries`` tries."""
        cfg = self.config
        if conn.snd_una == conn.snd_nxt:
            return
        conn.retries += 1
        if conn.retries > cfg.max_retries:
            self._user_event(conn, Ev.TIMEOUT)
            return
        self.counters["retransmissions"] += 1
        conn.rtt_seq = None                                 # Karn's algorithm
        if cfg.rto_backoff:                                 # RFC 6298 5.5
            conn.rto = min(conn.rto * 2, cfg.rto_max)
        st = conn.state
        if st is S.SYN_SENT:
            self._emit(conn.segment(conn.iss, 0, SYN, options=conn.syn_options(False)))
        elif st is S.SYN_RECEIVED:
            self._emit(conn.segment(conn.iss, conn.rcv_nxt, SYN | ACK,
                                    options=conn.syn_options(True)))
        else:
            conn.recover = conn.snd_nxt
            self._retransmit_head(conn)
        self._set_timer(conn, "rto", conn.rto)

    def _retransmit_head(self, conn: Connection) -> None:
        """Send again the first unacknowledged segment (up to one MSS from SND.UNA, with our
        FIN if it fits).  After a timeout, each ACK that advances but stays below the point
        where the timeout happened (``conn.recover``) means the next segment was lost too:
        it is resent at once instead of after another, doubled, RTO (the partial-ACK rule of
        RFC 6582 section 3.2, without the rest of NewReno)."""
        una = conn.snd_una
        data_left = max(0, seq_diff(seq_add(conn.buf_seq, conn.buffered), una))
        n = min(data_left, conn.snd_mss)
        flags = ACK | (PSH if n and n == data_left else 0)
        if n == data_left and conn.fin_sent:
            flags |= FIN
        if n:
            self._send_data(conn, una, n, flags)
        else:
            self._emit(conn.segment(una, conn.rcv_nxt, flags))

    def _timer_persist(self, conn: Connection) -> None:
        """Zero-window probe (RFC 9293 3.8.6.1, RFC 1122 4.2.2.17), Linux style: a segment with
        SEG.SEQ = SND.UNA - 1 and no data is never acceptable, so the peer must answer with an
        ACK carrying its current window.  Backs off like the RTO; the connection stays open as
        long as the peer answers (RFC 1122 4.2.2.17) and is given up (RST) only after
        ``max_retries`` probes in a row with no answer at all."""
        if conn.snd_wnd or conn.state not in SENDING:
            return
        conn.persist_backoff += 1
        conn.probes_out += 1
        if conn.probes_out > self.config.max_retries:
            self._user_event(conn, Ev.TIMEOUT)
            return
        self._emit(conn.segment(seq_add(conn.snd_una, -1), conn.rcv_nxt, ACK))
        self._set_timer(conn, "persist", conn.persist_interval())

    def _timer_timewait(self, conn: Connection) -> None:
        self._user_event(conn, Ev.TIMEOUT)

    def _timer_finwait2(self, conn: Connection) -> None:
        if conn.state is S.FIN_WAIT_2:
            self._user_event(conn, Ev.TIMEOUT)
