"""The state machine on one page: states, events, the table, and :func:`classify`.

For a student, this is the file to read first.  :data:`TABLE` says, for every state of RFC 9293
and every kind of event (:class:`Ev`), what happens -- accept, reset, drop, challenge ACK... --
which states may follow, and where the RFC (9293, or 5961/7323/4987 where they amend it) says
so.  :func:`classify` turns an arriving segment into an :class:`Ev` in the order RFC 9293
section 3.10.7 checks things.  The stack (:mod:`responder.tcp.stack`) looks the pair up and runs
the action the row names; there is no other path, so no pair is ever "unexpected".  Print the
table with ``python3 -m responder --table``.

The state names are written once, in :mod:`responder.contract` (the harness's scenarios use the
same spelling); :class:`State` is built from them.

Sequence numbers are compared with :mod:`responder.tcp.seq`'s helpers (``seq_lt`` and friends:
the numbers wrap at 2**32).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, NamedTuple

from ..contract import STATE_NAMES
from ..wire import ACK, FIN, RST, SYN, Segment
from .seq import seq_add, seq_gt, seq_le, seq_lt

if TYPE_CHECKING:                    # only for the annotations: conn.py imports this module
    from .conn import Connection

# --------------------------------------------------------------------------------------------
# States and events.
# --------------------------------------------------------------------------------------------

class _StateBase(enum.Enum):
    def __str__(self) -> str:
        return self.value

    # Members are singletons compared by identity, so identity hashing is consistent with
    # equality; Enum's own __hash__ is a Python-level call (hash of the name) on every TABLE
    # lookup.  (Enum hashes were never stable across runs anyway: str hashing is salted.)
    __hash__ = object.__hash__


#: The eleven states of RFC 9293 section 3.3.2: ``State.SYN_RECEIVED`` has the value
#: ``"SYN-RECEIVED"`` (the RFC's spelling, from ``contract.STATE_NAMES``), which is also what
#: ``str()`` gives and what the transition log prints.
State = _StateBase("State", [(name.replace("-", "_"), name) for name in STATE_NAMES],
                   module=__name__)
State.__doc__ = "The eleven states of RFC 9293 section 3.3.2 (values are the RFC's spelling)."

S = State
#: States after the handshake, where RFC 5961's rules apply (RFC 9293 section 3.10.7.4).
SYNCHRONIZED = (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK,
                S.TIME_WAIT)
#: States whose receive side still accepts data (RFC 9293 3.10.7.4, "seventh").
RECEIVING = (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2)
#: States that may still transmit queued data (our FIN may be queued behind it).
SENDING = (S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK)


class Ev(enum.Enum):
    """What happened, as :func:`classify` sees it (segment kinds) or as the user/timers say."""

    # segments
    SYN = "SYN"                      # SYN without ACK
    SYN_ACK = "SYN+ACK"
    DUP_SYN = "duplicate SYN"        # SYN-RECEIVED: the peer's SYN again (seq == IRS)
    ACK = "ACK"                      # acceptable ACK, no data, no FIN
    DATA = "data"                    # acceptable ACK with payload
    FIN = "FIN"                      # acceptable ACK with FIN (and maybe data)
    RST = "RST"                      # RST that is acceptable (exact sequence number)
    RST_INWIN = "RST in window"      # RST in the window but not exact (RFC 5961 3.2)
    RST_BAD = "RST unacceptable"     # RST outside the window / with a bad ACK
    NO_ACK = "no ACK"                # neither SYN, RST nor ACK
    OUT_OF_WINDOW = "out of window"  # sequence number unacceptable (or PAWS, RFC 7323 5)
    NO_TIMESTAMP = "no timestamp"    # timestamps negotiated but missing (RFC 7323 3.2)
    BAD_ACK = "bad ACK"              # ACK field unacceptable for the state
    # the user and the timers
    CLOSE = "user CLOSE"
    TIMEOUT = "timer"                # TIME-WAIT 2MSL, FIN-WAIT-2 timeout, give-up

    __hash__ = object.__hash__       # see State


class Rule(NamedTuple):
    """One table entry: what to do, which states may follow, and where the RFC says so."""

    action: str          # an action of the stack: Stack.actions maps it to its method
    next: tuple          # states the connection may be in afterwards (CLOSED = TCB deleted)
    cite: str


def _r(action, nxt, cite):
    return Rule(action, tuple(nxt) if isinstance(nxt, (tuple, list)) else (nxt,), cite)


#: The kinds of segment :func:`classify` tells apart (the rest of :class:`Ev` are the user's
#: calls and the timers).
_SEGMENT_EVENTS = tuple(e for e in Ev if e not in (Ev.CLOSE, Ev.TIMEOUT))


def _build_table() -> dict:
    """Build :data:`TABLE`: one function per group of states, each stating its own rows, so
    every (state, event) pair gets an entry (the tests check that none is missing)."""
    t = {}
    _rows_closed_and_listen(t)
    _rows_syn_sent(t)
    _rows_syn_received_and_synchronized(t)
    _rows_open(t)
    _rows_time_wait(t)
    return t


def _rows_closed_and_listen(t: dict) -> None:
    """No TCB: CLOSED (nobody listens) and LISTEN (RFC 9293 3.10.7.1-2)."""
    seg_events = _SEGMENT_EVENTS
    # CLOSED: no TCB.  RFC 9293 3.10.7.1: "all data in the incoming segment is discarded.  An
    # incoming segment containing a RST is discarded.  An incoming segment not containing a RST
    # causes a RST to be sent in response."
    for e in seg_events:
        t[S.CLOSED, e] = (_r("drop", S.CLOSED, "9293 3.10.7.1: RST to a closed port is discarded")
                          if e in (Ev.RST, Ev.RST_INWIN, Ev.RST_BAD) else
                          _r("reset", S.CLOSED, "9293 3.10.7.1: non-RST to CLOSED -> RST"))
    t[S.CLOSED, Ev.CLOSE] = _r("drop", S.CLOSED, "9293 3.10.4: CLOSE on CLOSED is an error")
    t[S.CLOSED, Ev.TIMEOUT] = _r("drop", S.CLOSED, "no timers without a TCB")

    # LISTEN (RFC 9293 3.10.7.2): first check RST (ignore), second ACK (reset), third SYN.
    for e in seg_events:
        t[S.LISTEN, e] = _r("reset", S.LISTEN, "9293 3.10.7.2 second: any ACK in LISTEN -> "
                            "<SEQ=SEG.ACK><CTL=RST>")
    for e in (Ev.RST, Ev.RST_INWIN, Ev.RST_BAD):
        t[S.LISTEN, e] = _r("drop", S.LISTEN, "9293 3.10.7.2 first: an incoming RST is ignored")
    for e in (Ev.ACK, Ev.DATA, Ev.FIN):
        t[S.LISTEN, e] = _r("cookie_or_reset", (S.LISTEN, S.ESTABLISHED, S.CLOSE_WAIT),
                            "9293 3.10.7.2 second: ACK in LISTEN -> <SEQ=SEG.ACK><CTL=RST>; "
                            "unless it carries our SYN cookie (4987 3.6): the TCB a flood "
                            "pushed out is rebuilt and the segment processed (-> ESTABLISHED)")
    t[S.LISTEN, Ev.SYN] = _r("passive_open", (S.LISTEN, S.SYN_RECEIVED),
                             "9293 3.10.7.2 third: SYN -> send SYN,ACK, SYN-RECEIVED (half-open "
                             "table bounded, oldest dropped; data in the SYN is not kept or "
                             "ACKed, so the peer sends it again)")
    t[S.LISTEN, Ev.NO_ACK] = _r("drop", S.LISTEN, "9293 3.10.7.2 fourth: no SYN/RST/ACK: drop")
    t[S.LISTEN, Ev.CLOSE] = _r("drop", S.CLOSED, "9293 3.10.4: CLOSE in LISTEN deletes the TCB")
    t[S.LISTEN, Ev.TIMEOUT] = _r("drop", S.LISTEN, "no timers in LISTEN")


def _rows_syn_sent(t: dict) -> None:
    """Our SYN is out, nothing from the peer yet (active open)."""
    seg_events = _SEGMENT_EVENTS
    # SYN-SENT (RFC 9293 3.10.7.3).
    for e in seg_events:
        t[S.SYN_SENT, e] = _r("drop", S.SYN_SENT, "9293 3.10.7.3 fifth: neither SYN nor RST: drop")
    t[S.SYN_SENT, Ev.BAD_ACK] = _r("reset", S.SYN_SENT, "9293 3.10.7.3 first: unacceptable ACK "
                                   "-> <SEQ=SEG.ACK><CTL=RST>, drop")
    t[S.SYN_SENT, Ev.RST_BAD] = _r("drop", S.SYN_SENT, "9293 3.10.7.3 second: RST without an "
                                   "acceptable ACK is dropped (RFC 5961 3.2)")
    t[S.SYN_SENT, Ev.RST] = _r("peer_reset", S.CLOSED, "9293 3.10.7.3 second: RST with an "
                               "acceptable ACK: connection reset, CLOSED")
    t[S.SYN_SENT, Ev.SYN_ACK] = _r("synack", (S.ESTABLISHED, S.CLOSE_WAIT), "9293 3.10.7.3 "
                                   "fourth: our SYN is ACKed -> ESTABLISHED, send ACK; text and "
                                   "FIN in it are processed (FIN -> CLOSE-WAIT)")
    t[S.SYN_SENT, Ev.SYN] = _r("simultaneous_open", S.SYN_RECEIVED, "9293 3.10.7.3 fourth: SYN "
                               "without ACK (simultaneous open) -> SYN-RECEIVED, send SYN,ACK")
    t[S.SYN_SENT, Ev.CLOSE] = _r("delete", S.CLOSED, "9293 3.10.4: CLOSE in SYN-SENT deletes TCB")
    t[S.SYN_SENT, Ev.TIMEOUT] = _r("give_up", S.CLOSED, "RFC 6298 / 1122 4.2.3.5: too many SYN "
                                   "retransmissions, give up")


def _rows_syn_received_and_synchronized(t: dict) -> None:
    """The rows SYN-RECEIVED shares with every synchronized state, then SYN-RECEIVED's own."""
    # SYN-RECEIVED and the synchronized states (RFC 9293 3.10.7.4), common rows first.
    for st in (S.SYN_RECEIVED,) + SYNCHRONIZED:
        t[st, Ev.OUT_OF_WINDOW] = _r("ack_drop", st, "9293 3.10.7.4 first: unacceptable segment "
                                    "-> <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, drop (PAWS: 7323 5.3)")
        t[st, Ev.NO_TIMESTAMP] = _r("drop", st, "7323 3.2: timestamps negotiated, non-RST segment "
                                    "without TSopt is silently dropped")
        t[st, Ev.RST_BAD] = _r("drop", st, "9293 3.10.7.4 second; 5961 3.2: RST out of window "
                               "is silently dropped")
        t[st, Ev.RST_INWIN] = _r("challenge_ack", st, "5961 3.2 (9293 3.10.7.4 second): RST in "
                                 "window but not exact -> challenge ACK")
        t[st, Ev.RST] = _r("peer_reset", S.CLOSED, "9293 3.10.7.4 second: exact RST -> CLOSED "
                           "(connection reset)")
        t[st, Ev.SYN] = _r("challenge_ack", st, "5961 4.2 (9293 3.10.7.4 fourth): SYN in a "
                           "synchronized state -> challenge ACK")
        t[st, Ev.SYN_ACK] = t[st, Ev.SYN]
        t[st, Ev.DUP_SYN] = t[st, Ev.SYN]
        t[st, Ev.NO_ACK] = _r("drop", st, "9293 3.10.7.4 fifth: ACK bit off -> drop")
        t[st, Ev.BAD_ACK] = _r("challenge_ack", st, "5961 5.2 (9293 3.10.7.4 fifth): ACK outside "
                               "[SND.UNA - MAX.SND.WND, SND.NXT] -> ACK, drop")
        t[st, Ev.TIMEOUT] = _r("give_up", S.CLOSED, "6298 / 1122 4.2.3.5: retransmission gave up "
                               "-> RST, CLOSED")

    sr = S.SYN_RECEIVED
    t[sr, Ev.RST] = _r("peer_reset", S.CLOSED, "9293 3.10.7.4 second: RST in SYN-RECEIVED: a "
                       "passive TCB returns to LISTEN (deleted), an active one is refused")
    t[sr, Ev.SYN] = _r("delete", S.CLOSED, "9293 3.10.7.4 fourth: in-window SYN in SYN-RECEIVED, "
                       "passive open -> back to LISTEN (TCB deleted); out of window it is "
                       "'out of window' (first check)")
    t[sr, Ev.SYN_ACK] = _r("challenge_ack", sr, "in-window SYN,ACK in SYN-RECEIVED (not a "
                           "simultaneous open's) -> ACK, drop, as 5961 4.2 does")
    t[sr, Ev.DUP_SYN] = _r("resend_synack", sr, "9293 3.8.1: the peer did not get our SYN,ACK "
                           "(its SYN again, seq = IRS) -> send SYN,ACK again")
    t[sr, Ev.BAD_ACK] = _r("reset", sr, "9293 3.10.7.4 fifth: SYN-RECEIVED, unacceptable ACK -> "
                           "<SEQ=SEG.ACK><CTL=RST>")
    for e in (Ev.ACK, Ev.DATA, Ev.FIN):
        t[sr, e] = _r("accept", (S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1),
                      "9293 3.10.7.4 fifth: SND.UNA < SEG.ACK =< SND.NXT -> ESTABLISHED, go on "
                      "with the segment (FIN -> CLOSE-WAIT)")
    t[sr, Ev.CLOSE] = _r("close", sr, "9293 3.10.4: CLOSE in SYN-RECEIVED -> FIN queued until "
                         "ESTABLISHED, then FIN-WAIT-1")


def _rows_open(t: dict) -> None:
    """Acceptable segments and CLOSE from ESTABLISHED to LAST-ACK: data and FIN processing."""
    acc = "9293 3.10.7.4 fifth (ACK), seventh (text), eighth (FIN)"
    t[S.ESTABLISHED, Ev.ACK] = _r("accept", S.ESTABLISHED, acc)
    t[S.ESTABLISHED, Ev.DATA] = _r("accept", S.ESTABLISHED, acc + ": data delivered, ACKed "
                                   "(delayed ACK, RFC 1122 4.2.3.2)")
    ooo = " (a FIN beyond RCV.NXT is out of order: not processed, state kept)"
    t[S.ESTABLISHED, Ev.FIN] = _r("accept", (S.CLOSE_WAIT, S.ESTABLISHED),
                                  acc + ": FIN -> CLOSE-WAIT" + ooo)
    t[S.ESTABLISHED, Ev.CLOSE] = _r("close", S.FIN_WAIT_1, "9293 3.10.4: queue FIN, FIN-WAIT-1")

    fw1 = (S.FIN_WAIT_1, S.FIN_WAIT_2)
    t[S.FIN_WAIT_1, Ev.ACK] = _r("accept", fw1, acc + ": our FIN ACKed -> FIN-WAIT-2")
    t[S.FIN_WAIT_1, Ev.DATA] = _r("accept", fw1, acc + ": data still accepted")
    t[S.FIN_WAIT_1, Ev.FIN] = _r("accept", (S.CLOSING, S.TIME_WAIT) + fw1, acc + ": FIN -> "
                                 "CLOSING, or TIME-WAIT if it also ACKs our FIN" + ooo)
    t[S.FIN_WAIT_1, Ev.CLOSE] = _r("drop", S.FIN_WAIT_1, "9293 3.10.4: already closing")

    t[S.FIN_WAIT_2, Ev.ACK] = _r("accept", S.FIN_WAIT_2, acc)
    t[S.FIN_WAIT_2, Ev.DATA] = _r("accept", S.FIN_WAIT_2, acc + ": data still accepted")
    t[S.FIN_WAIT_2, Ev.FIN] = _r("accept", (S.TIME_WAIT, S.FIN_WAIT_2),
                                 acc + ": FIN -> TIME-WAIT" + ooo)
    t[S.FIN_WAIT_2, Ev.CLOSE] = _r("drop", S.FIN_WAIT_2, "9293 3.10.4: already closing")
    t[S.FIN_WAIT_2, Ev.TIMEOUT] = _r("delete", S.CLOSED, "not in RFC 9293: Linux-style "
                                     "FIN-WAIT-2 timeout so a silent peer cannot hold memory")

    ign = "; 9293 3.10.7.4 seventh: text after the peer's FIN is ignored"
    t[S.CLOSE_WAIT, Ev.ACK] = _r("accept", S.CLOSE_WAIT, acc)
    t[S.CLOSE_WAIT, Ev.DATA] = _r("accept", S.CLOSE_WAIT, acc + ign)
    t[S.CLOSE_WAIT, Ev.FIN] = _r("accept", S.CLOSE_WAIT, acc + ": stay in CLOSE-WAIT")
    t[S.CLOSE_WAIT, Ev.CLOSE] = _r("close", S.LAST_ACK, "9293 3.10.4: queue FIN, LAST-ACK")

    t[S.CLOSING, Ev.ACK] = _r("accept", (S.CLOSING, S.TIME_WAIT), acc + ": our FIN ACKed -> "
                              "TIME-WAIT")
    t[S.CLOSING, Ev.DATA] = _r("accept", (S.CLOSING, S.TIME_WAIT), acc + ign)
    t[S.CLOSING, Ev.FIN] = _r("accept", (S.CLOSING, S.TIME_WAIT), acc + ": stay in CLOSING")
    t[S.CLOSING, Ev.CLOSE] = _r("drop", S.CLOSING, "9293 3.10.4: already closing")

    t[S.LAST_ACK, Ev.ACK] = _r("accept", (S.LAST_ACK, S.CLOSED), acc + ": our FIN ACKed -> "
                               "CLOSED")
    t[S.LAST_ACK, Ev.DATA] = _r("accept", (S.LAST_ACK, S.CLOSED), acc + ign)
    t[S.LAST_ACK, Ev.FIN] = _r("accept", (S.LAST_ACK, S.CLOSED), acc + ": stay in LAST-ACK")
    t[S.LAST_ACK, Ev.CLOSE] = _r("drop", S.LAST_ACK, "9293 3.10.4: already closing")


def _rows_time_wait(t: dict) -> None:
    """TIME-WAIT: only a retransmitted FIN (or a new incarnation's SYN) is expected."""
    tw = S.TIME_WAIT
    t[tw, Ev.ACK] = _r("drop", tw, "9293 3.10.7.4 fifth: TIME-WAIT, only a FIN retransmission "
                       "can arrive; an ACK is dropped")
    t[tw, Ev.DATA] = _r("ack_drop", tw, "9293 3.10.7.4 seventh: text ignored, ACK it")
    t[tw, Ev.FIN] = _r("timewait_fin", tw, "9293 3.10.7.4 eighth: FIN again in TIME-WAIT -> ACK "
                       "it, restart the 2 MSL timeout")
    t[tw, Ev.SYN] = _r("timewait_syn", (tw, S.CLOSED, S.SYN_RECEIVED),
                       "1122 4.2.2.13 / 6191: SYN with a higher sequence number (and newer "
                       "timestamp) reopens; otherwise 5961 4.2 challenge ACK")
    t[tw, Ev.CLOSE] = _r("drop", tw, "9293 3.10.4: already closing")
    t[tw, Ev.TIMEOUT] = _r("delete", S.CLOSED, "9293 3.10.7.4: 2 MSL expired -> CLOSED")


#: The state machine: ``TABLE[state, event] -> Rule``.  Print it with ``python3 -m responder
#: --table``.
TABLE = _build_table()

_NO_TCB_NEVER = (Ev.DUP_SYN, Ev.RST_INWIN, Ev.RST_BAD, Ev.OUT_OF_WINDOW, Ev.NO_TIMESTAMP,
                 Ev.BAD_ACK)
#: Pairs :func:`classify` never yields, because in that state the distinction does not exist
#: (no TCB has no window to be outside of; SYN-SENT has no window yet, and treats any segment
#: without SYN or RST alike).  TABLE still gives them an outcome, so a future classify that
#: yields one cannot fall through; the tests check that these, and only these, never occur.
NOT_CLASSIFIED = frozenset(
    {(S.LISTEN, e) for e in _NO_TCB_NEVER} | {(S.CLOSED, e) for e in _NO_TCB_NEVER}
    | {(S.SYN_SENT, e) for e in (Ev.DUP_SYN, Ev.RST_INWIN, Ev.OUT_OF_WINDOW, Ev.NO_TIMESTAMP,
                                 Ev.DATA, Ev.FIN)}
    | {(st, Ev.DUP_SYN) for st in SYNCHRONIZED} | {(S.TIME_WAIT, Ev.SYN_ACK)})


def classify(conn: "Connection | None", state: State, seg: Segment, now: float = 0.0) -> Ev:
    """Decide what kind of event ``seg`` is for a connection in ``state``.

    The order follows RFC 9293 section 3.10.7 (and RFC 5961 / 7323 where they amend it):
    RST first, then SYN, then sequence acceptability (PAWS first), then the ACK field, then FIN
    and text.  ``conn`` is None for CLOSED and LISTEN.
    """
    f = seg.flags
    if state in (S.CLOSED, S.LISTEN):
        return _classify_no_tcb(f, seg)
    c = conn
    if state is S.SYN_SENT:
        return _classify_syn_sent(c, f, seg)
    # SYN-RECEIVED and synchronized states: RFC 9293 3.10.7.4.
    if f & RST:
        if seg.seq == c.rcv_nxt:
            return Ev.RST
        return Ev.RST_INWIN if c.acceptable(seg.seq, 0) else Ev.RST_BAD
    if f & SYN:
        return _classify_syn(c, state, f, seg)
    if c.ts_ok:
        ts = seg.options.timestamps
        if ts is None:
            return Ev.NO_TIMESTAMP
        # PAWS (RFC 7323 5.3 R1): older than TS.Recent, and TS.Recent not older than 24 days.
        if seq_lt(ts[0], c.ts_recent) and now - c.ts_recent_age < 24 * 86400:
            return Ev.OUT_OF_WINDOW
    if state is S.TIME_WAIT and f & FIN and seq_add(seg.seq, seg.seg_len) == c.rcv_nxt:
        return Ev.FIN if f & ACK else Ev.NO_ACK
    if not c.acceptable(seg.seq, seg.seg_len):
        return Ev.OUT_OF_WINDOW
    if not f & ACK:
        return Ev.NO_ACK
    ack = seg.ack
    if state is S.SYN_RECEIVED:
        if not (seq_lt(c.snd_una, ack) and seq_le(ack, c.snd_nxt)):
            return Ev.BAD_ACK
    elif seq_gt(ack, c.snd_nxt) or seq_lt(ack, c.snd_una - c.max_snd_wnd):
        return Ev.BAD_ACK
    if f & FIN:
        return Ev.FIN
    return Ev.DATA if len(seg.payload) else Ev.ACK


def _classify_no_tcb(f: int, seg: Segment) -> Ev:
    """CLOSED and LISTEN: only the flags matter (there is no window to be outside of)."""
    if f & RST:
        return Ev.RST
    if f & ACK:
        return Ev.SYN_ACK if f & SYN else (Ev.FIN if f & FIN else
                                           Ev.DATA if len(seg.payload) else Ev.ACK)
    return Ev.SYN if f & SYN else Ev.NO_ACK


def _classify_syn_sent(c: "Connection", f: int, seg: Segment) -> Ev:
    """SYN-SENT (RFC 9293 3.10.7.3): the ACK field first, then RST, then SYN."""
    ack_ok = seq_lt(c.iss, seg.ack) and seq_le(seg.ack, c.snd_nxt)
    if f & ACK and not ack_ok:
        return Ev.RST_BAD if f & RST else Ev.BAD_ACK
    if f & RST:
        return Ev.RST if f & ACK else Ev.RST_BAD
    if f & SYN:
        return Ev.SYN_ACK if f & ACK else Ev.SYN
    return Ev.NO_ACK if not f & ACK else Ev.ACK


def _classify_syn(c: "Connection", state: State, f: int, seg: Segment) -> Ev:
    """A SYN in SYN-RECEIVED or a synchronized state (RFC 9293 3.10.7.4 fourth, RFC 5961 4)."""
    if state is S.SYN_RECEIVED:
        if seg.seq == c.irs and not f & ACK:
            return Ev.DUP_SYN
        if (not c.passive and f & ACK and seg.seq == c.irs and seg.ack == c.snd_nxt
                and not seg.payload and not f & FIN):
            # Simultaneous open (RFC 9293 figure 8): the peer's SYN,ACK answers our SYN; its
            # SYN is old (we ACKed it), its ACK is new: "only the new parts are processed"
            # (RFC 9293 3.10.7.4).  Linux makes the same exception.
            return Ev.ACK
        # RFC 5961 4.2 covers the synchronized states only; here RFC 9293's order holds:
        # the sequence check comes first, so a stray SYN with some other sequence number
        # (a SYN flood that hits this 4-tuple) gets an ACK and the TCB survives (Linux's
        # tcp_check_req does the same); only an in-window SYN resets it.
        if not c.acceptable(seg.seq, seg.seg_len):
            return Ev.OUT_OF_WINDOW
        return Ev.SYN_ACK if f & ACK else Ev.SYN
    if state is S.TIME_WAIT:
        return Ev.SYN
    return Ev.SYN_ACK if f & ACK else Ev.SYN


def describe_table() -> str:
    """The table as text, one line per (state, event), for students and ``--table``."""
    lines = []
    for st in State:
        for ev in Ev:
            rule = TABLE[st, ev]
            nxt = "/".join(str(s) for s in rule.next)
            note = " [classify never yields this pair]" if (st, ev) in NOT_CLASSIFIED else ""
            lines.append(f"{st!s:13} {ev.value:17} {rule.action:18} -> {nxt:28} "
                         f"RFC {rule.cite}{note}")
    return "\n".join(lines)
