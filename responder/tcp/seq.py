"""Sequence-number arithmetic (RFC 9293 section 3.4) and initial sequence numbers (RFC 6528).

Sequence numbers are 32 bits and wrap: they live on a circle of 2**32 numbers, where "a < b"
means "b is less than 2**31 ahead of a", which is what ``(a - b) mod 2**32 >= 2**31`` tests.
Compare them with :func:`seq_lt` and friends, never with ``<``.

The ISN and timestamp-offset functions take the secret key and the time as arguments: this
package has no randomness and no clock of its own (the I/O layer passes them in).
"""

from __future__ import annotations

import hashlib

#: 2**32 - 1: ``x & MASK`` is ``x mod 2**32``.
MASK = 0xFFFFFFFF
#: 2**31: half the circle.  A distance of HALF or more "ahead" is really behind.
HALF = 0x80000000


def seq_add(a: int, n: int) -> int:
    """``a + n`` on the sequence circle."""
    return (a + n) & MASK


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` on the circle, in ``[-2**31, 2**31)``."""
    d = (a - b) & MASK
    return d - (1 << 32) if d >= HALF else d


def seq_lt(a: int, b: int) -> bool:
    """``a`` before ``b``: ``seq_diff(a, b) < 0``."""
    return (a - b) & MASK >= HALF


def seq_le(a: int, b: int) -> bool:
    """``seq_diff(a, b) <= 0``."""
    return (b - a) & MASK <= HALF


def seq_gt(a: int, b: int) -> bool:
    """``a`` after ``b``: ``seq_diff(a, b) > 0``."""
    return 0 < (a - b) & MASK < HALF


def seq_ge(a: int, b: int) -> bool:
    """``seq_diff(a, b) >= 0``."""
    return (a - b) & MASK < HALF


def seq_in_window(x: int, lo: int, size: int) -> bool:
    """``lo <= x < lo + size`` on the circle (``size`` >= 0): ``0 <= seq_diff(x, lo) < size``."""
    d = (x - lo) & MASK
    return d < size and d < HALF


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
    return (int(now * 250_000) + keyed_hash(key, b"isn", local, remote)) & MASK


def keyed_hash(key: bytes, label: bytes, local: tuple, remote: tuple) -> int:
    """32 bits of SHA-256 over the key, a label (``isn``, ``ts``, ``cookie``...) and the 4-tuple:
    the per-connection secret numbers (ISN, timestamp offset, SYN cookie)."""
    h = hashlib.sha256(key + label + bytes(local[0]) + local[1].to_bytes(2, "big")
                       + bytes(remote[0]) + remote[1].to_bytes(2, "big"))
    return int.from_bytes(h.digest()[:4], "big")

