"""``--fault NAME``: deliberate, documented mistakes for testing the harness's checks.

Each fault breaks exactly the behaviour one lesson checks, so that the lesson's scenario must
then fail naming the field.  The names are in :data:`responder.contract.FAULTS` (the harness
validates ``--fault`` with them).  Two kinds:

* faults of the state machine are *settings* (:meth:`Faults.configure` writes them into the
  :class:`responder.tcp.Config` the stack reads): ``no-delayed-ack`` (``delayed_ack = 0``),
  ``no-challenge-ack`` (``challenge_ack_limit = 0``), ``no-backoff`` (``rto_backoff = False``),
  ``no-time-wait`` (``time_wait = False``);
* faults of the bytes on the wire are applied by the I/O layer to each segment it sends
  (:meth:`Faults.before` on the record, :meth:`Faults.after` on the encoded bytes):
  ``bad-checksum``, ``wrong-seq``, ``tarpit-window``.

What each does:

* ``bad-checksum``: every data segment leaves with its TCP checksum corrupted (one byte of the
  checksum field inverted), so the peer drops it and the capture shows "incorrect".
* ``wrong-seq``: the second data segment of each connection leaves with its sequence number one
  too high (the stack's own state is untouched, so the peer sees a hole of one byte).
* ``no-delayed-ack``: every segment is ACKed at once.
* ``no-backoff``: the retransmission timeout is not doubled after a timeout (RFC 6298 5.5
  ignored): retransmissions come every RTO.
* ``no-challenge-ack``: RFC 5961's challenge ACKs are never sent.
* ``tarpit-window``: a SYN,ACK that advertises a zero window advertises 1024 instead.
* ``no-time-wait``: where TIME-WAIT would begin, the TCB is deleted at once (CLOSED; the last
  ACK is not even sent).
"""

from __future__ import annotations

from . import wire
from .contract import FAULTS

#: The faults that are settings of the state machine: ``Config`` field -> value.
CONFIG_FAULTS = {
    "no-delayed-ack": ("delayed_ack", 0),
    "no-challenge-ack": ("challenge_ack_limit", 0),
    "no-backoff": ("rto_backoff", False),
    "no-time-wait": ("time_wait", False),
}


class Faults:
    """The fault chosen with ``--fault`` (or none)."""

    def __init__(self, name: str | None):
        if name is not None and name not in FAULTS:
            raise ValueError(f"unknown fault {name!r} (choose from {', '.join(FAULTS)})")
        self.name = name
        self.data_segments: dict = {}

    def configure(self, cfg) -> None:
        """Write a state-machine fault into ``cfg`` (a ``responder.tcp.Config``)."""
        setting = CONFIG_FAULTS.get(self.name)
        if setting is not None:
            setattr(cfg, *setting)

    @property
    def on_the_wire(self) -> bool:
        """Whether the I/O layer must pass each segment through :meth:`before`/:meth:`after`."""
        return self.name is not None and self.name not in CONFIG_FAULTS

    def before(self, seg: wire.Segment) -> wire.Segment:
        """``tarpit-window`` and ``wrong-seq``: the segment record as it will be encoded."""
        if self.name == "tarpit-window" and seg.flags & wire.SYN and seg.flags & wire.ACK \
                and seg.window == 0:
            return wire.Segment(seg.src, seg.dst, seg.sport, seg.dport, seg.seq, seg.ack,
                                seg.flags, 1024, seg.urgent, seg.options, seg.payload)
        if self.name != "wrong-seq" or not len(seg.payload):
            return seg
        key = (bytes(seg.dst), seg.dport)
        n = self.data_segments[key] = self.data_segments.get(key, 0) + 1
        if n != 2:
            return seg
        return wire.Segment(seg.src, seg.dst, seg.sport, seg.dport, seg.seq + 1, seg.ack,
                            seg.flags, seg.window, seg.urgent, seg.options, seg.payload)

    def after(self, seg: wire.Segment, tcp_bytes):
        """``bad-checksum``: the encoded bytes with the checksum's first byte inverted."""
        if self.name != "bad-checksum" or not len(seg.payload):
            return tcp_bytes
        out = bytearray(tcp_bytes)
        out[wire.TCP_CHECKSUM] ^= 0xFF
        return out
