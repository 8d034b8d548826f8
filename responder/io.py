"""The I/O layer: raw sockets, the one event loop, the clock, randomness, counters, signals.

This is the only module that touches the outside world.  It

* opens an ``AF_INET, SOCK_RAW, IPPROTO_TCP`` socket: the kernel hands it a copy of every TCP
  packet for this host (full IP header included), and lets us send TCP segments without an IP
  header (``IP_HDRINCL`` off: the kernel writes the IP header, the TCP checksum is ours).  For
  ``--classic`` an ``IPPROTO_RAW`` socket sends whole IP packets, because the lecture's program
  copies and edits the IP header itself;
* or, with ``--rx packet``, receives on an ``AF_PACKET`` socket with a BPF filter instead
  (:mod:`responder.packet`: before netfilter, so a lab can keep the kernel from seeing the
  port's segments at all) and only sends on the raw socket;
* attaches a BPF filter to the receive socket (:func:`responder.packet.tcp_filter`): the
  kernel then queues only segments to the listen address and port, instead of every TCP
  segment to this host (the lab's SSH too) for a Python check to throw away;
* marks everything it sends with ``SO_MARK`` (``--mark``, default 0x5e): the lab's iptables rule
  drops the *kernel's* RSTs (the kernel knows no socket on port 80 and would reset every SYN)
  and lets only marked packets through;
* runs one ``selectors`` loop for all connections: wait for a packet or for the stack's next
  deadline (``Stack.next_deadline()``), feed the stack, send what it returns;
* passes in ``time.monotonic()`` as ``now`` and ``os.urandom(32)`` as the RFC 6528 ISN key, so
  :mod:`responder.tcp` never reads a clock or a random source;
* counts: segments in/out, drops by reason (``WireError.reason`` names and the state machine's
  reasons), connections, retransmissions, challenge ACKs; SIGUSR1 prints them as one JSON line on
  stderr, and so does exit; SIGTERM exits 0;
* after the sockets are open (and ``--http-file`` read), gives up every privilege for good
  (:mod:`responder.privileges`: an unprivileged uid/gid, no groups, no capabilities,
  no_new_privs), or refuses to go on: an open raw socket keeps working, so a bug in the parser
  can no longer be used to open more, or to read or write anyone else's files.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback

from . import wire
from .apps import make_app
from .contract import CLASSIC_ISN
from .faults import Faults
from .privileges import PrivilegeError, drop_privileges
from .tcp import Config, Stack

SO_MARK = getattr(socket, "SO_MARK", 36)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
RCVBUF = 8 << 20            # the kernel drops at ~110k packets/s if the buffer is small


class NoPermission(Exception):
    """Raw sockets need CAP_NET_RAW."""


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def open_socket(proto: int, mark: int, rcvbuf: bool = False) -> socket.socket:
    """A raw socket with SO_MARK set; PermissionError becomes :class:`NoPermission`."""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
    except PermissionError as e:
        raise NoPermission(str(e)) from None
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    except PermissionError as e:        # SO_MARK needs CAP_NET_ADMIN
        s.close()
        raise NoPermission(f"SO_MARK: {e}") from None
    if rcvbuf:
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    s.setblocking(False)
    return s


class Responder:
    """The event loop around one :class:`Stack` (or the classic program)."""

    def __init__(self, opts, clock=time.monotonic, random=os.urandom):
        self.opts = opts
        self.clock = clock
        self.addr_str, port = opts.listen.rsplit(":", 1)
        self.addr = wire.ip_bytes(self.addr_str)
        self.port = int(port)
        self.faults = Faults(opts.fault)
        self.wire_faults = self.faults.on_the_wire      # bad-checksum, wrong-seq, tarpit-window
        self.counters = {"packets_ignored": 0, "send_errors": 0, "internal_errors": 0}
        # The stack's per-transition lines ("... SYN-RECEIVED => ESTABLISHED") are collected
        # here and written with one write + flush per loop iteration (flush_log), before the
        # loop waits again: a print with flush per line was a syscall per state change.
        self.log_lines: list = []
        self._dst_addr: dict = {}           # sendto address per destination (4 bytes)
        self.wire_drops: dict = {}
        self.stop = False
        self.dump = False
        self.classic = None
        self.stack = None
        self.app = None
        page = None
        if opts.http_file:
            with open(opts.http_file, "rb") as f:
                page = f.read()
        if opts.classic:
            from .classic import ClassicResponder
            isn = CLASSIC_ISN if opts.isn is None else opts.isn
            self.classic = ClassicResponder(self.port, isn, addr=self.addr)
        else:
            cfg = Config(fixed_isn=opts.isn, nodelay=opts.nodelay, msl2=opts.msl2)
            self.faults.configure(cfg)
            self.stack = Stack(cfg, isn_key=random(32), log=self.log_lines.append)
            self.app = make_app(opts.app, page, cfg.mss)
            self.stack.listen(self.addr, self.port, self.app)
        self.encode_hook = getattr(self.app, "encode", None)
        #: Whether the kernel already keeps other addresses' and ports' segments from the
        #: receive socket (a BPF filter, :meth:`open`): then :meth:`is_ours` is not needed.
        self.filtered = False

    # --- sockets --------------------------------------------------------------------------
    def open(self) -> None:
        mark = self.opts.mark
        self.rx = open_socket(socket.IPPROTO_TCP, mark, rcvbuf=True)
        try:
            self.rx.bind((self.addr_str, 0))    # the kernel then gives us only packets to it
        except OSError as e:
            if e.errno != errno.EADDRNOTAVAIL:
                raise
            log(f"warning: {self.addr_str} is not an address of this host; not binding")
        self.tx_raw = open_socket(socket.IPPROTO_RAW, mark) if self.classic else None
        self.tx = self.rx
        self.rbuf = bytearray(65536)
        self.rview = memoryview(self.rbuf)
        if self.classic:
            return                              # the lecture's program filters by itself
        from .packet import DROP_ALL, attach_filter, discard_queued, open_packet_rx, tcp_filter
        if getattr(self.opts, "rx", "socket") == "packet":
            self.rx = open_packet_rx(self.addr, self.port, RCVBUF)
            attach_filter(self.tx, DROP_ALL)    # the raw socket only sends now
            self.filtered = True
            return
        try:                                    # the kernel drops other ports' segments
            attach_filter(self.rx, tcp_filter(self.addr, self.port))
        except OSError as e:
            log(f"warning: no socket filter ({e}); filtering in Python")
            return
        discard_queued(self.rx)                 # what arrived before the filter was in place
        self.filtered = True

    def flush_log(self) -> None:
        """Write the transition lines collected since the last call, in order, at once."""
        lines = self.log_lines
        if lines:
            sys.stderr.write("\n".join(lines) + "\n")
            sys.stderr.flush()
            lines.clear()

    def send_segment(self, seg: wire.Segment) -> None:
        faulty = self.wire_faults
        if faulty:
            seg = self.faults.before(seg)
        data = None
        if self.encode_hook is not None:
            data = self.encode_hook(seg)
        if data is None:
            data = wire.build_tcp(seg)
        if faulty:
            data = self.faults.after(seg, data)
        addr = self._dst_addr.get(seg.dst)
        if addr is None:
            if len(self._dst_addr) >= 4096:
                self._dst_addr.clear()
            addr = self._dst_addr[seg.dst] = (wire.ip_str(seg.dst), 0)
        try:
            self.tx.sendto(data, addr)
        except OSError as e:
            self._send_error(e)

    def send_packet(self, pkt) -> None:
        try:
            self.tx_raw.sendto(pkt, (socket.inet_ntoa(bytes(pkt[16:20])), 0))
            self.counters["classic_out"] = self.counters.get("classic_out", 0) + 1
        except OSError as e:
            self._send_error(e)

    def _send_error(self, e: OSError) -> None:
        """A send failed (e.g. EPERM from a firewall rule, ENOBUFS): the stack treats the
        segment as lost and retransmits.  Logged the first 10 times, then every 1000th."""
        n = self.counters["send_errors"] = self.counters["send_errors"] + 1
        if n <= 10 or n % 1000 == 0:
            self.flush_log()
            log(f"send error #{n}: {e}")

    # --- the loop -------------------------------------------------------------------------
    def is_ours(self, view, n: int) -> bool:
        """Early filter before a full parse: destination address and port (a SYN flood to
        another port costs two slices and a compare).  Only where the kernel does not filter
        for us (:attr:`filtered`): the classic program, or a kernel without socket filters."""
        ihl = (view[0] & 0x0F) * 4 if n else 0
        if n < 20 or view[0] >> 4 != 4 or n < ihl + 4:
            return True         # too broken to tell: let the wire layer name the fault
        return view[16:20] == self.addr and (view[ihl + 2] << 8 | view[ihl + 3]) == self.port

    def handle_packet(self, n: int) -> None:
        view = self.rview[:n]
        if not self.filtered and not self.is_ours(view, n):
            self.counters["packets_ignored"] += 1
            return
        if self.classic is not None:
            self.counters["classic_in"] = self.counters.get("classic_in", 0) + 1
            for pkt in self.classic.on_packet(bytes(view)):
                self.send_packet(pkt)
            return
        try:
            seg = wire.parse(view)
        except wire.WireError as e:
            self.wire_drops[e.reason] = self.wire_drops.get(e.reason, 0) + 1
            return
        for out in self.stack.on_segment(seg, self.clock()):
            self.send_segment(out)

    def stats(self) -> dict:
        if self.stack is not None:
            c = self.stack.stats()
        else:
            c = {"segments_in": 0, "segments_out": 0, "drops": {}}
        drops = dict(c.get("drops", {}))
        extra = dict(self.classic.drops) if self.classic is not None else {}
        for k, v in list(self.wire_drops.items()) + list(extra.items()):
            drops[k] = drops.get(k, 0) + v
        c["drops"] = drops
        c.update(self.counters)
        if self.classic is not None:
            c["segments_in"] = self.counters.get("classic_in", 0)
            c["segments_out"] = self.counters.get("classic_out", 0)
        app_counters = getattr(self.app, "counters", None)
        if app_counters is not None:
            c.update(app_counters())        # e.g. tarpit_held, http_packets_patched
        return c

    def print_stats(self) -> None:
        self.flush_log()
        print(json.dumps(self.stats(), sort_keys=True), file=sys.stderr, flush=True)

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        sel = selectors.DefaultSelector()
        sel.register(self.rx, selectors.EVENT_READ, "rx")
        sel.register(wake_r, selectors.EVENT_READ, "wake")
        log(f"listening on {self.addr_str}:{self.port} app={self.opts.app}"
            + (" classic" if self.classic else ""))
        if self.opts.connect and self.stack is not None:
            host, port = self.opts.connect.rsplit(":", 1)
            self.stack.connect((self.addr, self.port), (wire.ip_bytes(host), int(port)),
                               self.app, self.clock())
            for out in self.stack.take_output():
                self.send_segment(out)
        try:
            while not self.stop:
                for key, _ in sel.select(self.before_wait()):
                    if key.data == "wake":
                        try:
                            wake_r.recv(512)
                        except BlockingIOError:
                            pass
                    else:
                        self._drain()
                if self.dump:
                    self.dump = False
                    self.print_stats()
                self.run_timers()
        finally:
            self.flush_log()
            signal.set_wakeup_fd(old_fd)
            sel.close()
            self.print_stats()
        return 0

    def before_wait(self) -> float | None:
        """What the loop does before it waits: write the log lines collected, and say how
        long it may wait (until the stack's next deadline; None: no timer running)."""
        self.flush_log()
        if self.stack is None:
            return None
        deadline = self.stack.next_deadline()
        return None if deadline is None else max(0.0, deadline - self.clock())

    def run_timers(self) -> None:
        """What the loop does after each wait: fire the stack's due timers, send their output."""
        if self.stack is not None:
            self._guard(lambda: [self.send_segment(s)
                                 for s in self.stack.on_timer(self.clock())])

    def _drain(self) -> None:
        for _ in range(256):
            try:
                n = self.rx.recv_into(self.rbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:                # e.g. ENOBUFS: count it, keep serving
                n = self.counters["recv_errors"] = self.counters.get("recv_errors", 0) + 1
                if n <= 10:
                    log(f"receive error #{n}: {e}")
                return
            try:                                # _guard, without a lambda per packet
                self.handle_packet(n)
            except Exception:   # noqa: BLE001 -- deliberately broad, see _guard
                self._internal_error()

    def _guard(self, fn) -> None:
        """Nothing a peer sends may kill the loop: a bug is logged and counted, not fatal."""
        try:
            fn()
        except Exception:       # noqa: BLE001 -- deliberately broad, see docstring
            self._internal_error()

    def _internal_error(self) -> None:
        n = self.counters["internal_errors"] = self.counters["internal_errors"] + 1
        if n <= 10 or n % 1000 == 0:
            self.flush_log()
            log(f"internal error #{n} (packet dropped):\n" + traceback.format_exc().rstrip())

    def _on_term(self, signum, frame) -> None:
        self.stop = True

    def _on_usr1(self, signum, frame) -> None:
        self.dump = True


def main(opts) -> int:
    try:
        responder = Responder(opts)
    except (OSError, ValueError, ImportError) as e:
        log(f"responder: {e}")
        return 2
    try:
        responder.open()
    except NoPermission as e:
        log(f"responder: cannot open raw sockets: need root or CAP_NET_RAW/CAP_NET_ADMIN ({e})")
        return 2
    except OSError as e:
        log(f"responder: cannot open raw sockets: {e}")
        return 2
    try:
        log(drop_privileges(opts.user))
    except PrivilegeError as e:
        log(f"responder: refusing to serve with privileges it cannot drop: {e}")
        return 2
    return responder.run()
