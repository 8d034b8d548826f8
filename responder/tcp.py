"""TCP connection state machine (RFC 9293) with no I/O at all.

Why no I/O: everything here is a pure function of (segments received, the time ``now`` passed in,
a secret key passed in).  It never reads a clock, a socket or a random source, so every state can
be reached and checked in a unit test in microseconds, with time advanced by hand.  This is the
shape of h11 and aioquic ("sans-I/O"): the I/O loop (:mod:`responder.io`) feeds

* ``Stack.on_segment(seg, now) -> list[Segment]``  -- a parsed segment arrived,
* ``Stack.on_timer(now) -> list[Segment]``         -- call when ``now >= Stack.next_deadline()``,

and sends whatever comes back.  Segments are :class:`responder.wire.Segment` records; turning them
into bytes is the wire layer's job.

The application sits *above* this module (imports go one way: wire <- tcp <- apps <- io) and is
injected as an :class:`App` object whose callbacks the stack calls (``on_open``, ``on_data``,
``on_peer_close``, ``on_closed``, ``on_send_space``); it talks back through the
:class:`Connection` (``send``, ``close``, ``abort``, ``forget``, ``set_receive_window``).

How to read it, for a student:

1. :data:`TABLE` is the whole state machine on one page: for every state and every kind of event
   (:class:`Ev`) it says what happens -- accept, reset, drop, challenge ACK... -- and cites RFC
   9293 (or RFC 5961/7323) for it.  :func:`classify` turns a segment into an :class:`Ev` in the
   order RFC 9293 section 3.10.7.4 checks things.  ``Stack._dispatch`` looks the pair up and runs
   the named action.  There is no other path: pairs are never "unexpected".
2. Every state change goes through ``Stack._set_state``, which logs ``SYN-RECEIVED =>
   ESTABLISHED`` with the 4-tuple.
3. Sequence numbers are 32-bit and wrap: always compare them with :func:`seq_lt` and friends
   (RFC 9293 section 3.4), never with ``<``.  On the per-segment path the comparisons are
   written out (a function call costs more than the comparison); each such line names the
   helper it stands for, with ``d = (a - b) & MASK``: ``seq_lt(a, b)`` is ``d >= HALF``,
   ``seq_le(a, b)`` is ``(b - a) & MASK <= HALF``, ``seq_gt(a, b)`` is ``0 < d < HALF``,
   ``seq_ge(a, b)`` is ``d < HALF`` (tests/unit/test_tcp.py checks these against the helpers).

Timers (all driven by ``now``): retransmission (RFC 6298: RTO 1 s initially, SRTT/RTTVAR,
Karn, doubling up to 60 s, RST after ``max_retries`` timeouts), delayed ACK (RFC 1122 4.2.3.2:
0.2 s, every second segment at once), Nagle (RFC 896, per connection, ``nodelay``), zero-window
probes (RFC 9293 3.8.6.1), TIME-WAIT (``msl2``, 2 s by default for a lab) and a Linux-style
FIN-WAIT-2 timeout.

SYN floods (RFC 4987): at most ``max_half_open`` SYN-RECEIVED TCBs, the oldest dropped when full
(memory stays bounded); once the table is half full, SYN,ACKs carry SYN cookies so that a
legitimate TCB pushed out by the flood is rebuilt from its ACK.

What this implementation deliberately leaves out (and what a real stack adds): congestion control
(RFC 5681: no cwnd, no slow start, no fast retransmit -- a timeout retransmits the first
unacknowledged segment only); keeping out-of-order data (it is dropped and a duplicate ACK is sent
at once, which RFC 9293 permits -- so we never have SACK blocks to report, and we accept but do
not use the peer's SACK blocks, which RFC 2018 permits); urgent data (URG is ignored); IP options.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import heapq
import itertools
from dataclasses import dataclass
from typing import Callable, NamedTuple

from .wire import ACK, FIN, NO_OPTIONS, PSH, RST, SYN, Segment, TcpOptions, ip_str

MASK = 0xFFFFFFFF
HALF = 0x80000000
#: MSS values a SYN cookie can remember (3 bits), as in Linux's msstab.
COOKIE_MSS = (536, 1200, 1360, 1440, 1452, 1460)

# --------------------------------------------------------------------------------------------
# Sequence-number arithmetic (RFC 9293 section 3.4): a circle of 2**32 numbers.  "a < b" means
# "b is less than 2**31 ahead of a", which is what (a - b) mod 2**32 >= 2**31 tests.
# --------------------------------------------------------------------------------------------


def seq_add(a: int, n: int) -> int:
    """``a + n`` on the sequence circle."""
    return (a + n) & MASK


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` on the circle, in ``[-2**31, 2**31)``."""
    d = (a - b) & MASK
    return d - (1 << 32) if d >= HALF else d


def seq_lt(a: int, b: int) -> bool:
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    return seq_diff(a, b) <= 0


def seq_gt(a: int, b: int) -> bool:
    return seq_diff(a, b) > 0


def seq_ge(a: int, b: int) -> bool:
    return seq_diff(a, b) >= 0


def seq_in_window(x: int, lo: int, size: int) -> bool:
    """``lo <= x < lo + size`` on the circle (``size`` >= 0)."""
    return 0 <= seq_diff(x, lo) < size


# --------------------------------------------------------------------------------------------
# RFC 6528 initial sequence numbers and RFC 7323 timestamp offsets.
# --------------------------------------------------------------------------------------------

def isn_rfc6528(key: bytes, local: tuple, remote: tuple, now: float) -> int:
    """ISN = M + F(localip, localport, remoteip, remoteport, secretkey) (RFC 6528 section 3).

    M is a timer ticking every 4 microseconds (so ISNs of successive incarnations of one 4-tuple
    advance, RFC 9293 section 3.4.1), F a keyed hash (SHA-256 here) so that an off-path attacker
    cannot predict the ISN of a connection it is not part of.  ``key`` and ``now`` come from the
    I/O layer: this module has no randomness and no clock of its own.
    """
    return (int(now * 250_000) + _keyed_hash(key, b"isn", local, remote)) & MASK


def _keyed_hash(key: bytes, label: bytes, local: tuple, remote: tuple) -> int:
    h = hashlib.sha256(key + label + bytes(local[0]) + local[1].to_bytes(2, "big")
                       + bytes(remote[0]) + remote[1].to_bytes(2, "big"))
    return int.from_bytes(h.digest()[:4], "big")


# --------------------------------------------------------------------------------------------
# States, events and the table.
# --------------------------------------------------------------------------------------------

class State(enum.Enum):
    """The eleven states of RFC 9293 section 3.3.2 (values are the RFC's spelling)."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    def __str__(self) -> str:
        return self.value

    # Members are singletons compared by identity, so identity hashing is consistent with
    # equality; Enum's own __hash__ is a Python-level call (hash of the name) on every TABLE
    # lookup.  (Enum hashes were never stable across runs anyway: str hashing is salted.)
    __hash__ = object.__hash__


S = State
#: States after the handshake, where RFC 5961's rules apply (RFC 9293 section 3.10.7.4).
SYNCHRONIZED = (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK,
                S.TIME_WAIT)
#: States whose receive side still accepts data (RFC 9293 3.10.7.4, "seventh").
_RECEIVING = (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2)
#: States that may still transmit queued data (our FIN may be queued behind it).
_SENDING = (S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK)


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

    action: str          # name of a Stack._act_<action> method
    next: tuple          # states the connection may be in afterwards (CLOSED = TCB deleted)
    cite: str


def _r(action, nxt, cite):
    return Rule(action, tuple(nxt) if isinstance(nxt, (tuple, list)) else (nxt,), cite)


def _build_table() -> dict:
    """Build :data:`TABLE`.  Written per state; synchronized states share their common rows,
    then each states its own differences, so every (state, event) pair gets an entry."""
    t = {}
    seg_events = [e for e in Ev if e not in (Ev.CLOSE, Ev.TIMEOUT)]
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
    return t


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
        if f & RST:
            return Ev.RST
        if f & ACK:
            return Ev.SYN_ACK if f & SYN else (Ev.FIN if f & FIN else
                                               Ev.DATA if len(seg.payload) else Ev.ACK)
        return Ev.SYN if f & SYN else Ev.NO_ACK
    c = conn
    if state is S.SYN_SENT:
        ack_ok = seq_lt(c.iss, seg.ack) and seq_le(seg.ack, c.snd_nxt)
        if f & ACK and not ack_ok:
            return Ev.RST_BAD if f & RST else Ev.BAD_ACK
        if f & RST:
            return Ev.RST if f & ACK else Ev.RST_BAD
        if f & SYN:
            return Ev.SYN_ACK if f & ACK else Ev.SYN
        return Ev.NO_ACK if not f & ACK else Ev.ACK
    # SYN-RECEIVED and synchronized states: RFC 9293 3.10.7.4.
    if f & RST:
        if seg.seq == c.rcv_nxt:
            return Ev.RST
        return Ev.RST_INWIN if c.acceptable(seg.seq, 0) else Ev.RST_BAD
    if f & SYN:
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
    if c.ts_ok:
        ts = seg.options.timestamps
        if ts is None:
            return Ev.NO_TIMESTAMP
        # PAWS (RFC 7323 5.3 R1): older than TS.Recent, and TS.Recent not older than 24 days.
        if (ts[0] - c.ts_recent) & MASK >= HALF and now - c.ts_recent_age < 24 * 86400:
            # ^ seq_lt(ts[0], c.ts_recent)
            return Ev.OUT_OF_WINDOW
    if state is S.TIME_WAIT and f & FIN and seq_add(seg.seq, seg.seg_len) == c.rcv_nxt:
        return Ev.FIN if f & ACK else Ev.NO_ACK
    if not c.acceptable(seg.seq, seg.seg_len):
        return Ev.OUT_OF_WINDOW
    if not f & ACK:
        return Ev.NO_ACK
    ack = seg.ack
    if state is S.SYN_RECEIVED:
        # not (seq_lt(c.snd_una, ack) and seq_le(ack, c.snd_nxt))
        if not ((c.snd_una - ack) & MASK >= HALF and (c.snd_nxt - ack) & MASK <= HALF):
            return Ev.BAD_ACK
    # seq_gt(ack, c.snd_nxt) or seq_lt(ack, c.snd_una - c.max_snd_wnd)
    elif 0 < (ack - c.snd_nxt) & MASK < HALF \
            or (ack - c.snd_una + c.max_snd_wnd) & MASK >= HALF:
        return Ev.BAD_ACK
    if f & FIN:
        return Ev.FIN
    return Ev.DATA if len(seg.payload) else Ev.ACK


# --------------------------------------------------------------------------------------------
# Configuration, the app interface, the connection.
# --------------------------------------------------------------------------------------------

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
    """A TCB (RFC 9293 section 3.3.1): the variables keep the RFC's names."""

    def __init__(self, stack: "Stack", local: tuple, remote: tuple, app: App, iss: int,
                 passive: bool, rcv_buf: int):
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
        # send buffer: chunks as the app wrote them, first byte at sequence buf_seq
        self.chunks: collections.deque = collections.deque()
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
        # delayed ACK: 0 nothing owed, 1 owed (timer), 2 owed now
        self.ack_owed = 0
        self.unacked_segs = 0
        # challenge ACK throttle (RFC 5961 7), per connection
        self.chal_start = -1.0
        self.chal_count = 0
        self.timers: dict = {}
        self.events: list = []

    # --- helpers used by classify ------------------------------------------------------
    @property
    def rcv_wnd(self) -> int:
        """max(0, seq_diff(RCV.ADV, RCV.NXT)), written out."""
        d = (self.rcv_adv - self.rcv_nxt) & MASK
        return d if d < HALF else 0

    def acceptable(self, seq: int, seg_len: int) -> bool:
        """RFC 9293 3.10.7.4 first check: the four cases of segment length and window.
        ``seq_in_window(x, RCV.NXT, wnd)`` is written ``(x - RCV.NXT) & MASK < wnd``: the
        window is below 2**31 (:attr:`rcv_wnd`), so that also says ``seq_diff >= 0``."""
        nxt = self.rcv_nxt
        wnd = (self.rcv_adv - nxt) & MASK
        if wnd >= HALF:
            wnd = 0
        if seg_len == 0:
            return seq == nxt if wnd == 0 else (seq - nxt) & MASK < wnd
        if wnd == 0:
            return False
        return (seq - nxt) & MASK < wnd or (seq + seg_len - 1 - nxt) & MASK < wnd

    @property
    def fin_seq(self) -> int:
        """Sequence number our FIN has (or will have): right after the last data byte."""
        return seq_add(self.buf_seq, self.buffered)

    @property
    def fin_sent(self) -> bool:
        return self.fin_queued and seq_gt(self.snd_nxt, self.fin_seq)

    @property
    def fin_acked(self) -> bool:
        # seq_gt(SND.UNA, fin_seq)
        return self.fin_queued and \
            0 < (self.snd_una - self.buf_seq - self.buffered) & MASK < HALF

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
            self.stack._output(self)
        return len(data)

    def close(self) -> None:
        """CLOSE (RFC 9293 3.10.4): our FIN follows the queued data."""
        self.stack._user_event(self, Ev.CLOSE)

    def abort(self) -> None:
        """ABORT (RFC 9293 3.10.5): send RST, delete the TCB."""
        if self.state in (S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2,
                          S.CLOSE_WAIT):
            self.stack.counters["resets_sent"] += 1
            self.stack._emit(self._seg(self.snd_nxt, 0, RST, window=False))
        self.stack._delete(self, "aborted")
        self.stack._deliver(self)           # on_closed, also when called outside a callback

    def forget(self) -> None:
        """Delete the TCB without telling the peer (the tarpit's way to hold a connection at
        no memory cost; further segments from the peer reach ``App.on_stray``)."""
        self.stack._delete(self, "forgotten", log=False)
        self.stack._deliver(self)

    def set_receive_window(self, space: int) -> None:
        """Set the buffer space we grant the peer (flow control).  The right edge we advertised
        never moves left (RFC 9293 3.8.6.2.2); a window update is sent when the window grows by
        at least min(buffer/2, MSS) (receiver SWS avoidance, RFC 1122 4.2.3.3)."""
        old = self.rcv_wnd
        self.rcv_buf = max(0, space)
        threshold = max(1, min(self.rcv_buf // 2, self.stack.config.mss))
        if self.state in _RECEIVING and self._window_to_advertise() - old >= threshold:
            self.ack_owed = 2
            self.stack._output(self)        # data going out anyway carries the update
            self.stack._flush_ack(self)

    # --- segment construction -------------------------------------------------------
    def tsval(self, now: float) -> int:
        """Our TSval clock: 1 ms ticks (RFC 7323 5.4) plus a per-connection offset (7323 7.1)."""
        return (int(now * 1000) + self.ts_offset) & MASK

    def _window_to_advertise(self) -> int:
        wnd = min(self.rcv_buf, 65535 << self.rcv_wscale)
        return max(wnd, self.rcv_wnd)       # never shrink (RFC 9293 3.8.6.2.2)

    def _seg(self, seq: int, ack: int, flags: int, payload=b"", options=None,
             window: bool = True) -> Segment:
        """A segment of this connection; fills the window field and our timestamps.
        Every segment carrying ACK updates Last.ACK.sent and RCV.ADV, and pays off owed ACKs."""
        now = self.stack._now
        win = 0
        if window:
            # _window_to_advertise() and rcv_wnd, written out
            rcv_wnd = (self.rcv_adv - self.rcv_nxt) & MASK
            if rcv_wnd >= HALF:
                rcv_wnd = 0
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
                self.rcv_adv = (self.rcv_nxt + (space if space > rcv_wnd else rcv_wnd)) & MASK
        if flags & ACK:
            self.last_ack_sent = ack
            self.ack_owed = 0
            self.unacked_segs = 0
            self.timers.pop("delack", None)
        if options is None:
            options = (TcpOptions(timestamps=((int(now * 1000) + self.ts_offset) & MASK,
                                              self.ts_recent))     # self.tsval(now)
                       if self.ts_ok and not flags & RST else NO_OPTIONS)
        return Segment(self.local[0], self.remote[0], self.local[1], self.remote[1], seq,
                       ack if flags & ACK else 0, flags, win, options=options, payload=payload)

    def _syn_options(self, synack: bool) -> TcpOptions:
        """Options for our SYN or SYN,ACK.  A SYN offers everything configured; a SYN,ACK
        offers each option only if the peer's SYN did (RFC 7323 2.2/3.2, RFC 2018 2)."""
        cfg = self.stack.config
        now = self.stack._now
        if not synack:
            ts = (self.tsval(now), 0) if cfg.timestamps else None
            return TcpOptions(mss=cfg.mss, wscale=cfg.wscale if cfg.wscale is not None else None,
                              sack_permitted=cfg.sack_permitted, timestamps=ts)
        tsval = self.synack_tsval if self.synack_tsval is not None else self.tsval(now)
        return TcpOptions(mss=cfg.mss,
                          wscale=self.rcv_wscale if self.ws_ok else None,
                          sack_permitted=self.sack_ok,
                          timestamps=(tsval, self.ts_recent) if self.ts_ok else None)

    def _take_peer_syn_options(self, seg: Segment) -> None:
        """Negotiate from the peer's SYN (or SYN,ACK): RFC 9293 3.7.1 (MSS), RFC 7323 2.2-2.3
        (window scale, both sides or neither, shift at most 14), 3.2 (timestamps), RFC 2018."""
        cfg = self.stack.config
        o = seg.options
        peer_mss = o.mss if o.mss else 536
        self.ts_ok = cfg.timestamps and o.timestamps is not None
        if self.ts_ok:
            self.ts_recent = o.timestamps[0]
            self.ts_recent_age = self.stack._now
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


# --------------------------------------------------------------------------------------------
# The stack: demultiplexing, the actions named in the table, output, timers.
# --------------------------------------------------------------------------------------------

COUNTER_NAMES = ("segments_in", "segments_out", "connections_open", "connections_total",
                 "established_total", "retransmissions", "challenge_acks", "resets_sent",
                 "resets_received", "stateless_replies", "syn_cookies_accepted")


class Stack:
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
        self._now = 0.0
        self._heap: list = []
        self._tick = itertools.count()

    # --- the public interface -----------------------------------------------------------
    def listen(self, addr: bytes, port: int, app: App) -> Listener:
        """Passive OPEN (RFC 9293 3.10.1): accept connections to addr:port for ``app``."""
        lst = Listener(bytes(addr), port, app)
        self.listeners[lst.addr, port] = lst
        return lst

    def connect(self, local: tuple, remote: tuple, app: App, now: float) -> Connection:
        """Active OPEN (RFC 9293 3.10.1): send a SYN, enter SYN-SENT.  The SYN is returned by
        the next :meth:`take_output` (or with the next event's output)."""
        self._now = now
        local, remote = (bytes(local[0]), local[1]), (bytes(remote[0]), remote[1])
        conn = self._new_conn(local, remote, app, passive=False,
                              rcv_buf=app.rcv_buf if app.rcv_buf is not None else None)
        conn.rcv_wscale = self.config.wscale or 0
        self._set_state(conn, S.SYN_SENT)
        conn.snd_nxt = seq_add(conn.iss, 1)
        self._emit(conn._seg(conn.iss, 0, SYN, options=conn._syn_options(False)))
        self._arm_rto(conn)
        return conn

    def on_segment(self, seg: Segment, now: float) -> list:
        """A segment arrived (already parsed and checksum-verified by the wire layer)."""
        self._now = now
        self.counters["segments_in"] += 1
        conn = self.conns.get((bytes(seg.dst), seg.dport, bytes(seg.src), seg.sport))
        if conn is not None:
            self._dispatch(conn, conn.state, seg)
        else:
            lst = self.listeners.get((bytes(seg.dst), seg.dport))
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
        self._now = now
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, key, kind = heapq.heappop(heap)
            conn = self.conns.get(key)
            if conn is not None and conn.timers.get(kind) == deadline:
                del conn.timers[kind]
                getattr(self, "_timer_" + kind)(conn)
                self._deliver(conn)
        return self.take_output()

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` must next be called (None: no timer running)."""
        heap = self._heap
        while heap:
            deadline, _, key, kind = heap[0]
            conn = self.conns.get(key)
            if conn is not None and conn.timers.get(kind) == deadline:
                return deadline
            heapq.heappop(heap)
        return None

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
        return (int(now * 1000) + _keyed_hash(self.isn_key, b"ts", local, remote)) & MASK

    # --- dispatch -----------------------------------------------------------------------
    def _dispatch(self, conn, state, seg, lst=None) -> None:
        ev = classify(conn, state, seg, self._now)
        rule = TABLE[state, ev]
        getattr(self, "_act_" + rule.action)(conn, seg, ev, lst)
        if conn is not None:
            self._deliver(conn)

    def _user_event(self, conn: Connection, ev: Ev) -> None:
        rule = TABLE[conn.state, ev]
        if rule.action == "drop":
            return
        getattr(self, "_act_" + rule.action)(conn, None, ev, None)

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
            self._output(conn)
            self._flush_ack(conn)

    # --- actions named in TABLE ---------------------------------------------------------
    def _act_drop(self, conn, seg, ev, lst=None) -> None:
        if seg is not None:
            self.drops[_drop_reason(conn, seg, ev)] += 1

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
        ISS (see :meth:`_cookie`) instead of the RFC 6528 ISN, so if their TCB is then pushed
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
        conn._take_peer_syn_options(seg)
        if cfg.syn_cookies and cfg.fixed_isn is None \
                and len(self.half_open) >= max(1, cfg.max_half_open // 2):
            self._make_cookie_tcb(conn, seg)
        conn.state = S.LISTEN           # the TCB is born from the listener (RFC 9293 3.10.7.2)
        self._set_state(conn, S.SYN_RECEIVED)
        self.half_open[conn.key] = conn
        conn.rtt_seq, conn.rtt_time = conn.iss, self._now
        self._send_synack(conn)

    # --- SYN cookies (RFC 4987 3.6, as Linux does them) ---------------------------------
    def _cookie(self, local, remote, peer_isn: int, count: int, mss_idx: int) -> int:
        """ISS = 24 bits of keyed hash (4-tuple, peer's ISN, time slot, MSS index) | 5 bits of
        the 64-second time slot | 3 bits of MSS index.  Only we can make one; it is valid for
        two slots (64-128 s); it tells us, from the ACK alone, that we sent that SYN,ACK."""
        h = _keyed_hash(self.isn_key, b"cookie" + count.to_bytes(8, "big", signed=True)
                        + peer_isn.to_bytes(4, "big") + bytes((mss_idx,)), local, remote)
        return (h & 0xFFFFFF00) | ((count & 0x1F) << 3) | mss_idx

    def _make_cookie_tcb(self, conn: Connection, seg: Segment) -> None:
        """Give ``conn`` a cookie ISS.  The options it negotiated must also be recoverable
        from the ACK: with timestamps they ride in the low 6 bits of our SYN,ACK's TSval, which
        the peer echoes as TSecr (Linux's trick; the TSval is rounded down so ours never goes
        backwards); without timestamps we offer neither window scaling nor SACK."""
        idx = max(i for i, m in enumerate(COOKIE_MSS) if m <= max(seg.options.mss or 536, 536))
        count = int(self._now // 64)
        conn.iss = conn.snd_una = conn.snd_nxt = self._cookie(conn.local, conn.remote, seg.seq,
                                                              count, idx)
        conn.buf_seq = seq_add(conn.iss, 1)
        if conn.ts_ok:
            bits = (conn.snd_wscale if conn.ws_ok else 0xF) | (0x10 if conn.sack_ok else 0)
            conn.synack_tsval = (seq_add(conn.tsval(self._now), -64) & ~0x3F) | bits
        else:
            conn.ws_ok = conn.sack_ok = False
            conn.snd_wscale = conn.rcv_wscale = 0

    def _act_cookie_or_reset(self, _conn, seg, ev, lst=None) -> None:
        """LISTEN + ACK: a RST (RFC 9293 3.10.7.2 second) -- unless SEG.ACK - 1 is a SYN
        cookie we made for this 4-tuple and SEG.SEQ - 1 in the last two time slots: then the
        SYN-RECEIVED TCB that the flood pushed out is rebuilt from it and the segment processed
        as in SYN-RECEIVED."""
        local, remote = (bytes(seg.dst), seg.dport), (bytes(seg.src), seg.sport)
        cookie, peer_isn = seq_add(seg.ack, -1), seq_add(seg.seq, -1)
        idx, slot = cookie & 7, (cookie >> 3) & 0x1F
        now_count = int(self._now // 64)
        valid = self.config.syn_cookies and idx < len(COOKIE_MSS) and any(
            (c & 0x1F) == slot and self._cookie(local, remote, peer_isn, c, idx) == cookie
            for c in (now_count, now_count - 1))
        if not valid:
            self._act_reset(None, seg, ev, lst)
            return
        cfg = self.config
        self.counters["syn_cookies_accepted"] += 1
        conn = self._new_conn(local, remote, lst.app, passive=True, rcv_buf=lst.app.rcv_buf)
        conn.iss = conn.snd_una = cookie
        conn.snd_nxt = conn.buf_seq = seg.ack
        conn.irs, conn.rcv_nxt = peer_isn, seg.seq
        conn.rcv_adv = seq_add(seg.seq, min(conn.rcv_buf, 65535))     # what the SYN,ACK said
        conn.last_ack_sent = seg.seq
        conn.snd_wl1, conn.snd_wl2 = peer_isn, seg.ack
        ts = seg.options.timestamps
        conn.ts_ok = cfg.timestamps and ts is not None
        bits = ts[1] & 0x3F if conn.ts_ok else 0xF
        if conn.ts_ok:
            conn.ts_recent, conn.ts_recent_age = ts[0], self._now
        conn.ws_ok = (bits & 0xF) != 0xF and cfg.wscale is not None
        conn.snd_wscale = bits & 0xF if conn.ws_ok else 0
        conn.rcv_wscale = min(cfg.wscale, 14) if conn.ws_ok else 0
        conn.sack_ok = bool(bits & 0x10) and cfg.sack_permitted
        conn.snd_mss = min(COOKIE_MSS[idx], cfg.mss) - (12 if conn.ts_ok else 0)
        conn.state = S.LISTEN
        self._set_state(conn, S.SYN_RECEIVED)
        self._dispatch(conn, conn.state, seg)

    def _act_simultaneous_open(self, conn, seg, ev, lst=None) -> None:
        """SYN-SENT + SYN (RFC 9293 3.10.7.3 fourth, figure 7): both sides opened at once."""
        conn._take_peer_syn_options(seg)
        self._set_state(conn, S.SYN_RECEIVED)
        self._send_synack(conn)

    def _act_synack(self, conn, seg, ev, lst=None) -> None:
        """SYN-SENT + SYN,ACK acknowledging our SYN (RFC 9293 3.10.7.3 fourth)."""
        conn._take_peer_syn_options(seg)
        self._ack_advance(conn, seg.ack)
        self._set_state(conn, S.ESTABLISHED)
        conn.events.append(("on_open",))
        conn.ack_owed = 2
        self._process_text(conn, seg)

    def _act_resend_synack(self, conn, seg, ev, lst=None) -> None:
        self.counters["retransmissions"] += 1
        self._send_synack(conn)

    def _act_ack_drop(self, conn, seg, ev, lst=None) -> None:
        """RFC 9293 3.10.7.4 first check: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, drop."""
        self.drops[_drop_reason(conn, seg, ev)] += 1
        if self._throttle(conn):
            self._emit(conn._seg(conn.snd_nxt, conn.rcv_nxt, ACK))

    def _act_challenge_ack(self, conn, seg, ev, lst=None) -> None:
        """RFC 5961 3.2/4.2/5.2: answer with an ACK of what we expect, so a genuine peer that
        lost sync resets with the exact sequence number; a blind attacker learns nothing."""
        self.drops[_drop_reason(conn, seg, ev)] += 1
        if self._throttle(conn):
            self.counters["challenge_acks"] += 1
            self._emit(conn._seg(conn.snd_nxt, conn.rcv_nxt, ACK))

    def _act_peer_reset(self, conn, seg, ev, lst=None) -> None:
        self.counters["resets_received"] += 1
        reason = "refused" if conn.state is S.SYN_SENT or (
            conn.state is S.SYN_RECEIVED and not conn.passive) else "reset"
        self._delete(conn, reason)

    def _act_delete(self, conn, seg, ev, lst=None) -> None:
        if seg is not None:
            self.drops[_drop_reason(conn, seg, ev)] += 1
        self._delete(conn, "closed")

    def _act_give_up(self, conn, seg, ev, lst=None) -> None:
        if conn.state is not S.SYN_SENT:
            self.counters["resets_sent"] += 1
            self._emit(conn._seg(conn.snd_nxt, 0, RST, window=False))
        self._delete(conn, "timeout")

    def _act_close(self, conn, seg, ev, lst=None) -> None:
        """CLOSE (RFC 9293 3.10.4): queue our FIN after the data; SYN-RECEIVED and ESTABLISHED
        -> FIN-WAIT-1, CLOSE-WAIT -> LAST-ACK.  The FIN goes out from :meth:`_output`."""
        conn.fin_queued = True
        if conn.state is S.SYN_RECEIVED:
            return          # "queue for processing after entering ESTABLISHED state"
        self._set_state(conn, S.LAST_ACK if conn.state is S.CLOSE_WAIT else S.FIN_WAIT_1)
        self._output(conn)

    def _act_timewait_fin(self, conn, seg, ev, lst=None) -> None:
        conn.ack_owed = 2
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
        self._update_ts_recent(conn, seg)
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
    def _update_ts_recent(self, conn: Connection, seg: Segment) -> None:
        """RFC 7323 4.3: TS.Recent = SEG.TSval if SEG.TSval >= TS.Recent and SEG.SEQ =<
        Last.ACK.sent (the segment covers the left edge of the window we last ACKed)."""
        ts = seg.options.timestamps
        # seq_ge(ts[0], TS.Recent) and seq_le(SEG.SEQ, Last.ACK.sent)
        if conn.ts_ok and ts is not None and (ts[0] - conn.ts_recent) & MASK < HALF \
                and (conn.last_ack_sent - seg.seq) & MASK <= HALF:
            conn.ts_recent = ts[0]
            conn.ts_recent_age = self._now

    def _process_ack(self, conn: Connection, seg: Segment) -> None:
        """RFC 9293 3.10.7.4 fifth check for synchronized states."""
        ack = seg.ack
        conn.probes_out = 0                 # the peer is alive (RFC 1122 4.2.2.17)
        # seq_lt(SND.UNA, ack) and seq_le(ack, SND.NXT)
        if (conn.snd_una - ack) & MASK >= HALF and (conn.snd_nxt - ack) & MASK <= HALF:
            self._ack_advance(conn, ack)
        # Window update (SND.WL1/WL2 keep old segments from setting it, RFC 9293 3.10.7.4):
        # seq_le(SND.UNA, ack) and (seq_lt(SND.WL1, SEG.SEQ) or (SND.WL1 == SEG.SEQ and
        # seq_le(SND.WL2, ack)))
        if (ack - conn.snd_una) & MASK <= HALF and ((conn.snd_wl1 - seg.seq) & MASK >= HALF or (
                conn.snd_wl1 == seg.seq and (ack - conn.snd_wl2) & MASK <= HALF)):
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
        d = (ack - conn.buf_seq) & MASK     # max(0, min(seq_diff(ack, buf_seq), buffered))
        acked_data = 0 if d >= HALF else min(d, conn.buffered)
        conn.snd_una = ack
        n = acked_data
        while n:
            head = conn.chunks[0]
            if len(head) <= n:
                conn.chunks.popleft()
                n -= len(head)
            else:
                conn.chunks[0] = head[n:]
                n = 0
        conn.buffered -= acked_data
        conn.buf_seq = (conn.buf_seq + acked_data) & MASK
        # seq_gt(ack, rtt_seq)
        if conn.rtt_seq is not None and 0 < (ack - conn.rtt_seq) & MASK < HALF:
            self._rtt_sample(conn, self._now - conn.rtt_time)
            conn.rtt_seq = None
        conn.retries = 0
        conn.timers.pop("rto", None)
        if conn.snd_una != conn.snd_nxt:
            self._arm_rto(conn)
        if conn.recover is not None:
            if (ack - conn.recover) & MASK >= HALF:         # seq_lt(ack, recover)
                self.counters["retransmissions"] += 1
                self._retransmit_head(conn)
            else:
                conn.recover = None
        if acked_data:
            conn.events.append(("on_send_space",))

    def _rtt_sample(self, conn: Connection, r: float) -> None:
        """RFC 6298 2.2-2.3 (alpha 1/8, beta 1/4, K 4), clamped to [rto_min, rto_max]."""
        cfg = self.config
        if conn.srtt is None:
            conn.srtt, conn.rttvar = r, r / 2
        else:
            conn.rttvar = 0.75 * conn.rttvar + 0.25 * abs(conn.srtt - r)
            conn.srtt = 0.875 * conn.srtt + 0.125 * r
        conn.rto = min(max(conn.srtt + max(0.001, 4 * conn.rttvar), cfg.rto_min), cfg.rto_max)

    def _process_text(self, conn: Connection, seg: Segment) -> None:
        """RFC 9293 3.10.7.4 seventh (text) and eighth (FIN) checks."""
        payload = seg.payload
        seq = seq_add(seg.seq, 1) if seg.flags & SYN else seg.seq    # text follows the SYN
        fin = bool(seg.flags & FIN)
        if conn.state not in _RECEIVING:
            if payload or fin:
                conn.ack_owed = 2       # retransmission of something we have: re-ACK
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
                conn.ack_owed = 2
            return
        room = conn.rcv_wnd
        if len(payload) > room:
            payload = payload[:room]
            fin = False
            conn.ack_owed = 2
        if payload:
            conn.rcv_nxt = seq_add(conn.rcv_nxt, len(payload))
            conn.events.append(("on_data", bytes(payload)))
            # Delayed ACK (RFC 1122 4.2.3.2): every second segment at once, else within 0.5 s.
            conn.unacked_segs += 1
            if conn.unacked_segs >= 2 or not self.config.delayed_ack:
                conn.ack_owed = 2
            elif conn.ack_owed == 0:
                conn.ack_owed = 1
        if fin:
            conn.rcv_nxt = seq_add(conn.rcv_nxt, 1)
            conn.ack_owed = 2
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
        self._set_state(conn, S.TIME_WAIT)
        for k in ("rto", "persist", "finwait2"):
            conn.timers.pop(k, None)
        self._set_timer(conn, "timewait", self.config.msl2)

    # --- output -------------------------------------------------------------------------
    def _emit(self, seg: Segment) -> None:
        self._out.append(seg)

    def _send_synack(self, conn: Connection) -> None:
        conn.snd_nxt = seq_add(conn.iss, 1)
        self._emit(conn._seg(conn.iss, conn.rcv_nxt, SYN | ACK,
                             options=conn._syn_options(True)))
        self._arm_rto(conn)

    def _output(self, conn: Connection) -> None:
        """Send what the window, Nagle and sender SWS avoidance allow (RFC 9293 3.8.6.2.1,
        RFC 1122 4.2.3.4, RFC 896), then our FIN once all data is out."""
        if conn.state not in _SENDING:
            return
        mss = conn.snd_mss
        while True:
            # unsent = seq_diff(buf_seq + buffered, SND.NXT);
            # usable = seq_diff(SND.UNA + SND.WND, SND.NXT)
            snd_nxt = conn.snd_nxt
            unsent = (conn.buf_seq + conn.buffered - snd_nxt) & MASK
            if unsent >= HALF:
                unsent -= 0x100000000
            usable = (conn.snd_una + conn.snd_wnd - snd_nxt) & MASK
            if usable >= HALF:
                usable -= 0x100000000
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
                conn.snd_nxt = (seq + n + (1 if flags & FIN else 0)) & MASK
            elif unsent == 0 and conn.fin_queued:
                self._emit(conn._seg(conn.snd_nxt, conn.rcv_nxt, FIN | ACK))
                conn.snd_nxt = seq_add(conn.snd_nxt, 1)
            else:
                break
            if conn.rtt_seq is None:         # time one segment per RTT (RFC 6298 3)
                conn.rtt_seq, conn.rtt_time = (conn.snd_nxt - 1) & MASK, self._now
            self._arm_rto(conn)
        # Zero window with data waiting and nothing in flight: probe (RFC 9293 3.8.6.1).
        # (seq_diff(buf_seq + buffered, SND.NXT) > 0)
        if conn.snd_wnd == 0 and 0 < (conn.buf_seq + conn.buffered - conn.snd_nxt) & MASK < HALF \
                and conn.snd_nxt == conn.snd_una and "persist" not in conn.timers:
            self._set_timer(conn, "persist", self._persist_interval(conn))

    def _payload(self, conn: Connection, seq: int, n: int):
        """Bytes [seq, seq+n) of the send buffer; the app's own object when it is one chunk."""
        off = seq_diff(seq, conn.buf_seq)
        parts = []
        for chunk in conn.chunks:
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

    def _send_data(self, conn: Connection, seq: int, n: int, flags: int) -> None:
        self._emit(conn._seg(seq, conn.rcv_nxt, flags, payload=self._payload(conn, seq, n)))

    def _flush_ack(self, conn: Connection) -> None:
        """Send an owed ACK now, or arm the delayed-ACK timer."""
        if conn.ack_owed == 2 and conn.state is not S.CLOSED:
            self._emit(conn._seg(conn.snd_nxt, conn.rcv_nxt, ACK))
        elif conn.ack_owed == 1 and "delack" not in conn.timers:
            self._set_timer(conn, "delack", self.config.delayed_ack)

    # --- timers -------------------------------------------------------------------------
    def _set_timer(self, conn: Connection, kind: str, delay: float) -> None:
        """Timers live in one heap of (deadline, tiebreak, 4-tuple, kind).  Cancelling is lazy:
        ``conn.timers[kind]`` holds the one valid deadline, and entries that no longer match
        are skipped when they surface.  Entries name the 4-tuple, not the TCB, so a deleted
        TCB is freed at once; when stale entries outnumber the live ones (a SYN flood deletes
        TCBs faster than their timers expire) the heap is rebuilt, so it stays O(live)."""
        deadline = self._now + delay
        conn.timers[kind] = deadline
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._tick), conn.key, kind))
        if len(heap) > 64 + 8 * len(self.conns):
            self._heap = [e for e in heap if (c := self.conns.get(e[2])) is not None
                          and c.timers.get(e[3]) == e[0]]
            heapq.heapify(self._heap)

    def _arm_rto(self, conn: Connection) -> None:
        if "rto" not in conn.timers:
            self._set_timer(conn, "rto", conn.rto)

    def _persist_interval(self, conn: Connection) -> float:
        return min(conn.rto * (2 ** conn.persist_backoff), self.config.rto_max)

    def _timer_delack(self, conn: Connection) -> None:
        if conn.ack_owed:
            conn.ack_owed = 2
            self._flush_ack(conn)

    def _timer_rto(self, conn: Connection) -> None:
        """RFC 6298 5.4-5.7: retransmit the earliest unacknowledged segment, double the RTO
        (up to the maximum), restart the timer; give up after ``max_retries`` tries."""
        cfg = self.config
        if conn.snd_una == conn.snd_nxt:
            return
        conn.retries += 1
        if conn.retries > cfg.max_retries:
            self._user_event(conn, Ev.TIMEOUT)
            return
        self.counters["retransmissions"] += 1
        conn.rtt_seq = None                                 # Karn's algorithm
        conn.rto = min(conn.rto * 2, cfg.rto_max)
        st = conn.state
        if st is S.SYN_SENT:
            self._emit(conn._seg(conn.iss, 0, SYN, options=conn._syn_options(False)))
        elif st is S.SYN_RECEIVED:
            self._emit(conn._seg(conn.iss, conn.rcv_nxt, SYN | ACK,
                                 options=conn._syn_options(True)))
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
            self._emit(conn._seg(una, conn.rcv_nxt, flags))

    def _timer_persist(self, conn: Connection) -> None:
        """Zero-window probe (RFC 9293 3.8.6.1, RFC 1122 4.2.2.17), Linux style: a segment with
        SEG.SEQ = SND.UNA - 1 and no data is never acceptable, so the peer must answer with an
        ACK carrying its current window.  Backs off like the RTO; the connection stays open as
        long as the peer answers (RFC 1122 4.2.2.17) and is given up (RST) only after
        ``max_retries`` probes in a row with no answer at all."""
        if conn.snd_wnd or conn.state not in _SENDING:
            return
        conn.persist_backoff += 1
        conn.probes_out += 1
        if conn.probes_out > self.config.max_retries:
            self._user_event(conn, Ev.TIMEOUT)
            return
        self._emit(conn._seg(seq_add(conn.snd_una, -1), conn.rcv_nxt, ACK))
        self._set_timer(conn, "persist", self._persist_interval(conn))

    def _timer_timewait(self, conn: Connection) -> None:
        self._user_event(conn, Ev.TIMEOUT)

    def _timer_finwait2(self, conn: Connection) -> None:
        if conn.state is S.FIN_WAIT_2:
            self._user_event(conn, Ev.TIMEOUT)

    # --- TCB life -------------------------------------------------------------------------
    def _new_conn(self, local, remote, app, passive, rcv_buf) -> Connection:
        cfg = self.config
        if cfg.fixed_isn is not None:
            iss = cfg.fixed_isn & MASK
        else:
            iss = isn_rfc6528(self.isn_key, local, remote, self._now)
        conn = Connection(self, local, remote, app, iss, passive,
                          cfg.rcv_buf if rcv_buf is None else rcv_buf)
        conn.ts_offset = _keyed_hash(self.isn_key, b"ts", local, remote)
        old = self.conns.get(conn.key)
        if old is not None:
            self._delete(old, "closed")
        self.conns[conn.key] = conn
        self.counters["connections_total"] += 1
        return conn

    def _throttle(self, conn: Connection) -> bool:
        """RFC 5961 7: at most ``challenge_ack_limit`` ACKs of this kind per second, per
        connection (a global limit is a side channel: CVE-2016-5696)."""
        if self._now - conn.chal_start >= 1.0:
            conn.chal_start, conn.chal_count = self._now, 0
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


def _drop_reason(conn, seg, ev) -> str:
    if ev is None or not isinstance(ev, Ev):
        return "dropped"
    if ev is Ev.OUT_OF_WINDOW and conn is not None and conn.ts_ok and not seg.flags & RST \
            and seg.options.timestamps and seq_lt(seg.options.timestamps[0], conn.ts_recent):
        return "paws"                                   # RFC 7323 5.3
    return _DROP_REASONS.get(ev, "dropped")


_DROP_REASONS = {Ev.OUT_OF_WINDOW: "out_of_window", Ev.NO_TIMESTAMP: "missing_timestamp",
                 Ev.RST_BAD: "rst_out_of_window", Ev.RST_INWIN: "rst_in_window",
                 Ev.NO_ACK: "no_ack", Ev.BAD_ACK: "bad_ack", Ev.SYN: "syn_in_synchronized",
                 Ev.SYN_ACK: "syn_in_synchronized", Ev.DUP_SYN: "syn_in_synchronized",
                 Ev.RST: "rst", Ev.ACK: "ack_in_state", Ev.DATA: "data_in_state",
                 Ev.FIN: "fin_in_state"}


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
