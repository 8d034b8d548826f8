"""SYN cookies (RFC 4987 section 3.6, as Linux makes them).

Under a SYN flood the half-open table is bounded and its oldest TCBs are pushed out.  Once the
table is half full, the stack gives each new SYN,ACK a *cookie* as its initial sequence number:
a number only we can make, which the peer's ACK returns (as SEG.ACK - 1).  If the TCB was pushed
out meanwhile, that ACK alone proves the handshake, and the TCB is rebuilt from it.

A cookie is 32 bits: 24 bits of keyed hash (4-tuple, the peer's ISN, the time slot, the MSS
index) | 5 bits of the 64-second time slot | 3 bits of the MSS index (:data:`COOKIE_MSS`).  It
is valid in its own slot and the next one (64-128 s).  The options the SYN negotiated must be
recoverable too: with timestamps they ride in the low 6 bits of our SYN,ACK's TSval, which the
peer echoes as TSecr (Linux's trick); without timestamps we offer neither window scaling nor
SACK.

Functions only; the stack calls :func:`make_cookie_tcb` from its passive open and
:func:`check_cookie` / :func:`rebuild_tcb` for an ACK that finds no TCB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire import Segment
from .seq import keyed_hash, seq_add

if TYPE_CHECKING:
    from .conn import Config, Connection

#: MSS values a SYN cookie can remember (3 bits), as in Linux's msstab.
COOKIE_MSS = (536, 1200, 1360, 1440, 1452, 1460)
#: Length of a cookie's time slot, in seconds.
SLOT = 64


def cookie(key: bytes, local: tuple, remote: tuple, peer_isn: int, count: int,
           mss_idx: int) -> int:
    """The cookie for this 4-tuple, the peer's ISN, time slot ``count`` and MSS index."""
    h = keyed_hash(key, b"cookie" + count.to_bytes(8, "big", signed=True)
                   + peer_isn.to_bytes(4, "big") + bytes((mss_idx,)), local, remote)
    return (h & 0xFFFFFF00) | ((count & 0x1F) << 3) | mss_idx


def make_cookie_tcb(conn: "Connection", seg: Segment, key: bytes, now: float) -> None:
    """Give ``conn`` (just made from the peer's SYN ``seg``) a cookie as its ISS, and put the
    negotiated options where the ACK will bring them back.  The TSval is rounded down so ours
    never goes backwards."""
    idx = max(i for i, m in enumerate(COOKIE_MSS) if m <= max(seg.options.mss or 536, 536))
    count = int(now // SLOT)
    conn.iss = conn.snd_una = conn.snd_nxt = cookie(key, conn.local, conn.remote, seg.seq,
                                                    count, idx)
    conn.buf_seq = seq_add(conn.iss, 1)
    if conn.ts_ok:
        bits = (conn.snd_wscale if conn.ws_ok else 0xF) | (0x10 if conn.sack_ok else 0)
        conn.synack_tsval = (seq_add(conn.tsval(now), -64) & ~0x3F) | bits
    else:
        conn.ws_ok = conn.sack_ok = False
        conn.snd_wscale = conn.rcv_wscale = 0


def check_cookie(key: bytes, seg: Segment, now: float) -> "int | None":
    """The cookie ``seg`` (an ACK that found no TCB) carries, if we made it for this 4-tuple in
    the current or the previous time slot; else None."""
    local, remote = (bytes(seg.dst), seg.dport), (bytes(seg.src), seg.sport)
    value, peer_isn = seq_add(seg.ack, -1), seq_add(seg.seq, -1)
    idx, slot = value & 7, (value >> 3) & 0x1F
    if idx >= len(COOKIE_MSS):
        return None
    now_count = int(now // SLOT)
    for count in (now_count, now_count - 1):
        if (count & 0x1F) == slot and cookie(key, local, remote, peer_isn, count, idx) == value:
            return value
    return None


def rebuild_tcb(conn: "Connection", seg: Segment, value: int, cfg: "Config",
                now: float) -> None:
    """Fill a new TCB from the cookie ``value`` the ACK ``seg`` carries: the sequence
    variables as the SYN,ACK left them, the options from the cookie's MSS index and the echoed
    TSval's low bits."""
    peer_isn = seq_add(seg.seq, -1)
    conn.iss = conn.snd_una = value
    conn.snd_nxt = conn.buf_seq = seg.ack
    conn.irs, conn.rcv_nxt = peer_isn, seg.seq
    conn.rcv_adv = seq_add(seg.seq, min(conn.rcv_buf, 65535))     # what the SYN,ACK said
    conn.last_ack_sent = seg.seq
    conn.snd_wl1, conn.snd_wl2 = peer_isn, seg.ack
    ts = seg.options.timestamps
    conn.ts_ok = cfg.timestamps and ts is not None
    bits = ts[1] & 0x3F if conn.ts_ok else 0xF
    if conn.ts_ok:
        conn.ts_recent, conn.ts_recent_age = ts[0], now
    conn.ws_ok = (bits & 0xF) != 0xF and cfg.wscale is not None
    conn.snd_wscale = bits & 0xF if conn.ws_ok else 0
    conn.rcv_wscale = min(cfg.wscale, 14) if conn.ws_ok else 0
    conn.sack_ok = bool(bits & 0x10) and cfg.sack_permitted
    conn.snd_mss = min(COOKIE_MSS[value & 7], cfg.mss) - (12 if conn.ts_ok else 0)
