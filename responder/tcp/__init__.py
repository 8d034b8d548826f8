"""TCP connection state machine (RFC 9293) with no I/O at all.

Why no I/O: everything here is a pure function of (segments received, the time ``now`` passed in,
a secret key passed in).  It never reads a clock, a socket or a random source, so every state can
be reached and checked in a unit test in microseconds, with time advanced by hand.  This is the
shape of h11 and aioquic ("sans-I/O"): the I/O loop (:mod:`responder.io`) feeds

* ``Stack.on_segment(seg, now) -> list[Segment]``  -- a parsed segment arrived,
* ``Stack.on_timer(now) -> list[Segment]``         -- call when ``now >= Stack.next_deadline()``,

and sends whatever comes back.  Segments are :class:`responder.wire.Segment` records; turning them
into bytes is the wire layer's job.

The application sits *above* this package (imports go one way: wire <- tcp <- apps <- io) and is
injected as an :class:`App` object whose callbacks the stack calls (``on_open``, ``on_data``,
``on_peer_close``, ``on_closed``, ``on_send_space``); it talks back through the
:class:`Connection` (``send``, ``close``, ``abort``, ``forget``, ``set_receive_window``).

How to read it, for a student (one module per subject):

1. :mod:`~responder.tcp.table` -- the whole state machine on one page: for every state and every
   kind of event (:class:`Ev`) :data:`TABLE` says what happens -- accept, reset, drop, challenge
   ACK... -- and cites RFC 9293 (or RFC 5961/7323) for it.  :func:`classify` turns a segment into
   an :class:`Ev` in the order RFC 9293 section 3.10.7.4 checks things.  ``python3 -m responder
   --table`` prints it.
2. :mod:`~responder.tcp.stack` -- :class:`Stack` looks the (state, event) pair up and runs the
   action the row names (``Stack.actions``).  There is no other path: pairs are never
   "unexpected".  Every state change goes through ``Stack._set_state``, which logs
   ``SYN-RECEIVED => ESTABLISHED`` with the 4-tuple.
3. :mod:`~responder.tcp.conn` -- the TCB (:class:`Connection`, the RFC's variable names), the
   :class:`Config` knobs and the :class:`App` interface.
4. :mod:`~responder.tcp.sender` -- what goes out and when: output, owed ACKs, timers.
5. :mod:`~responder.tcp.seq` -- sequence numbers are 32-bit and wrap: always compare them with
   :func:`seq_lt` and friends (RFC 9293 section 3.4), never with ``<``.  The per-segment path
   uses the helpers too: the comparisons were once written out by hand for speed, but
   ``bench/hotpath.py`` showed PyPy's JIT runs the helpers as fast (and CPython ~9 % slower
   per segment: the price of the readable form, stated in docs/bench.md).
6. :mod:`~responder.tcp.cookies` -- SYN cookies.

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

from .conn import ACK_DELAYED, ACK_NONE, ACK_NOW, App, Config, Connection, Listener, TcpError
from .cookies import COOKIE_MSS
from .seq import (HALF, MASK, isn_rfc6528, keyed_hash, seq_add, seq_diff, seq_ge, seq_gt,
                  seq_in_window, seq_le, seq_lt)
from .stack import COUNTER_NAMES, DROP_REASONS, Stack, drop_reason
from .table import (NOT_CLASSIFIED, RECEIVING, SENDING, SYNCHRONIZED, TABLE, Ev, Rule, State,
                    classify, describe_table)

__all__ = [
    "ACK_DELAYED", "ACK_NONE", "ACK_NOW", "App", "Config", "Connection", "Listener", "TcpError",
    "COOKIE_MSS", "HALF", "MASK", "isn_rfc6528", "keyed_hash", "seq_add", "seq_diff", "seq_ge",
    "seq_gt", "seq_in_window", "seq_le", "seq_lt", "COUNTER_NAMES", "DROP_REASONS", "Stack",
    "drop_reason", "NOT_CLASSIFIED", "RECEIVING", "SENDING", "SYNCHRONIZED", "TABLE", "Ev",
    "Rule", "State", "classify", "describe_table",
]
