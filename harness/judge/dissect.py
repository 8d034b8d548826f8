"""Dissection of a capture file into plain :class:`Pkt` records.

This is the ONLY module of tcplab that imports pyshark (style card item 8).  Nothing pyshark
returns escapes it: callers get :class:`Pkt` dataclasses made of ints, strings and bytes.

Two sources of truth are combined on purpose:

* tshark (through pyshark, JSON mode) gives what only a stateful dissector knows: relative
  sequence numbers, the calculated (scaled) window, its checksum verdicts and the TCP analysis
  flags (``tcp.analysis.retransmission`` ...).
* the raw bytes of each frame are decoded here, independently, for everything that is on the
  wire: addresses, ports, flags, raw seq/ack, window, options *in wire order*, payload, IP id,
  TTL, and both checksums, which are recomputed here (tshark's verdict is kept beside ours; the
  matcher trusts ours).

pyshark pitfalls handled here: every capture gets its own fresh event loop (no "event loop is
closed/already running"), the capture is closed in ``finally`` and the tshark child is checked
and killed if it survived the close.

Unprivileged dissection (issue 15, finding 9): the packets come from programs the harness does
not trust (a student's responder), and Wireshark's dissectors have had their share of memory
bugs.  When the harness runs as root, tshark reads a root-owned, world-readable *copy* of the
capture in a fresh private directory, and runs as nobody:nogroup with no capabilities and
no_new_privs (``harness/judge/unprivileged/tshark``, a wrapper around ``setpriv``, given to
pyshark as its tshark).  Not root and no ``setpriv``: tshark runs as the caller, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import struct
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

# Wireshark's TCP analysis flags that tcplab reports, by their short name
# (``tcp.analysis.<name>`` in Wireshark's field names).
ANALYSIS_FLAGS = frozenset({
    "retransmission", "fast_retransmission", "spurious_retransmission", "out_of_order",
    "duplicate_ack", "zero_window", "zero_window_probe", "zero_window_probe_ack",
    "window_update", "window_full", "keep_alive", "keep_alive_ack", "lost_segment",
    "ack_lost_segment", "reused_ports",
})

# tshark preferences every read uses; checksums are verified, sequence numbers relative.
TSHARK_PREFS = {
    "tcp.check_checksum": "TRUE",
    "ip.check_checksum": "TRUE",
    "tcp.relative_sequence_numbers": "TRUE",
    "tcp.analyze_sequence_numbers": "TRUE",
    # One frame is one record: no reassembly into application PDUs.
    "tcp.desegment_tcp_streams": "FALSE",
}

# Wireshark's checksum status values (proto_checksum_enum_e).
_CHECKSUM_STATUS = {"0": "bad", "1": "good", "2": "unverified", "3": "not_present"}


class DissectError(RuntimeError):
    """A capture file that cannot be read, or a frame that is not IPv4+TCP as claimed."""


@dataclass
class Pkt:
    """One captured TCP segment, as plain values.

    ``time`` is seconds since the first packet returned by the read (the canary and other
    filtered-out frames do not count); ``number`` is the frame number in the file, the one
    Wireshark shows.  ``seq``/``ack`` are tshark's relative numbers, ``seq_raw``/``ack_raw`` the
    wire values.  ``options`` lists the TCP options in wire order as ``(name, value)`` pairs in
    tcpdump's vocabulary: ``("mss", 1460)``, ``("sackOK", None)``, ``("TS", (val, ecr))``,
    ``("nop", None)``, ``("wscale", 7)``, ``("eol", None)``, ``("sack", ((left, right), ...))``
    (raw sequence numbers), ``("unknown-K", b"data")`` and, for a malformed option list,
    ``("bad", b"rest")``.
    """

    number: int
    time: float
    epoch: float
    src: str
    dst: str
    sport: int
    dport: int
    flags: int
    flags_str: str
    seq: int
    ack: int
    seq_raw: int
    ack_raw: int
    length: int
    window: int
    window_calc: int | None
    payload: bytes
    options: list
    ip_id: int
    ttl: int
    ip_checksum: str          # tshark's verdict: good / bad / unverified
    tcp_checksum: str
    ip_checksum_ok: bool      # our own verification from the raw bytes
    tcp_checksum_ok: bool
    analysis: frozenset = field(default_factory=frozenset)
    frame: bytes = b""

    @property
    def seq_end(self) -> int:
        """Relative sequence number after this segment (payload, plus one each for SYN, FIN)."""
        return self.seq + self.length + bool(self.flags & SYN) + bool(self.flags & FIN)

    @property
    def is_pure_ack(self) -> bool:
        """ACK set, nothing else that occupies sequence space or resets."""
        return (self.flags & ACK and not self.flags & (SYN | FIN | RST) and self.length == 0)

    def option(self, name: str):
        """The value of the first option called ``name``, or ``None``."""
        for n, v in self.options:
            if n == name:
                return v
        return None

    def tcpdump_line(self) -> str:
        """The packet in tcpdump's one-line style (relative seq/ack, like ``tcpdump -n``)."""
        parts = [f"Flags [{self.flags_str}]"]
        if self.length or self.flags & (SYN | FIN):
            parts.append(f"seq {self.seq}:{self.seq + self.length}" if self.length
                         else f"seq {self.seq}")
        if self.flags & ACK:
            parts.append(f"ack {self.ack}")
        parts.append(f"win {self.window}")
        if self.options:
            parts.append(f"options [{format_options(self.options)}]")
        parts.append(f"length {self.length}")
        return f"{self.src}.{self.sport} > {self.dst}.{self.dport}: " + ", ".join(parts)


def flags_str(flags: int) -> str:
    """tcpdump's flag notation: ``S``, ``S.``, ``P.``, ``F.``, ``R.``, ``.``, ``none``."""
    out = "".join(ch for bit, ch in ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"),
                                     (URG, "U"), (ECE, "E"), (CWR, "W")) if flags & bit)
    if flags & ACK:
        out += "."
    return out or "none"


def format_options(options) -> str:
    """Options as tcpdump prints them inside ``options [...]``."""
    out = []
    for name, value in options:
        if name == "TS":
            out.append(f"TS val {value[0]} ecr {value[1]}")
        elif name == "sack":
            out.append(f"sack {len(value)} " + "".join(f"{{{a}:{b}}}" for a, b in value))
        elif value is None:
            out.append(name)
        elif isinstance(value, bytes):
            out.append(f"{name} 0x{value.hex()}")
        else:
            out.append(f"{name} {value}")
    return ",".join(out)


# ---------------------------------------------------------------- raw bytes, no tshark

def inet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement sum of ``data``, folded and complemented."""
    if len(data) % 2:
        data += b"\0"
    total = int.from_bytes(data, "big")
    # Fold the big integer 16 bits at a time, then the carries.
    s = 0
    while total:
        s += total & 0xFFFF
        total >>= 16
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def parse_options(data: bytes) -> list:
    """TCP options in wire order; see :class:`Pkt` for the vocabulary."""
    out, i = [], 0
    while i < len(data):
        kind = data[i]
        if kind == 0:
            out.append(("eol", None))  # what follows is padding; tcpdump stops here too
            break
        if kind == 1:
            out.append(("nop", None))
            i += 1
            continue
        if i + 1 >= len(data) or data[i + 1] < 2 or i + data[i + 1] > len(data):
            out.append(("bad", bytes(data[i:])))
            break
        ln = data[i + 1]
        body = bytes(data[i + 2:i + ln])
        if kind == 2 and ln == 4:
            out.append(("mss", struct.unpack("!H", body)[0]))
        elif kind == 3 and ln == 3:
            out.append(("wscale", body[0]))
        elif kind == 4 and ln == 2:
            out.append(("sackOK", None))
        elif kind == 8 and ln == 10:
            out.append(("TS", struct.unpack("!II", body)))
        elif kind == 5 and (ln - 2) % 8 == 0:
            out.append(("sack", tuple(struct.unpack_from("!II", body, k)
                                      for k in range(0, len(body), 8))))
        else:
            out.append((f"unknown-{kind}", body))
        i += ln
    return out


def decode_ip_tcp(ip: bytes) -> dict:
    """Wire fields of an IPv4+TCP packet starting at ``ip``, with our own checksum checks."""
    if len(ip) < 20 or ip[0] >> 4 != 4:
        raise DissectError("not an IPv4 header")
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from("!H", ip, 2)[0]
    if ihl < 20 or total < ihl + 20 or total > len(ip) or ip[9] != 6:
        raise DissectError(f"bad IPv4 header (ihl {ihl}, total length {total}, proto {ip[9]})")
    ip = ip[:total]
    tcp = ip[ihl:]
    doff = (tcp[12] >> 4) * 4
    if doff < 20 or doff > len(tcp):
        raise DissectError(f"bad TCP data offset {doff}")
    sport, dport, seq, ack, _, flags, window, _, _ = struct.unpack_from("!HHIIBBHHH", tcp, 0)
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
    return {
        "src": str(ipaddress.IPv4Address(ip[12:16])),
        "dst": str(ipaddress.IPv4Address(ip[16:20])),
        "sport": sport, "dport": dport, "seq_raw": seq, "ack_raw": ack,
        "flags": flags, "window": window,
        "options": parse_options(tcp[20:doff]),
        "payload": bytes(tcp[doff:]),
        "ip_id": struct.unpack_from("!H", ip, 4)[0], "ttl": ip[8],
        "ip_checksum_ok": inet_checksum(ip[:ihl]) == 0,
        "tcp_checksum_ok": inet_checksum(pseudo + tcp) == 0,
    }


# ---------------------------------------------------------------- tshark through pyshark

def _analysis_names(tree) -> set[str]:
    """Short names of the ``tcp.analysis.<flag>`` keys anywhere in a tshark JSON subtree."""
    found = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key.startswith("tcp.analysis."):
                    name = key[len("tcp.analysis."):]
                    if name in ANALYSIS_FLAGS:
                        found.add(name)
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _field(layer, name, default=None):
    """A field of a pyshark JSON layer, by its Wireshark name."""
    return layer._all_fields.get(name, default)


def _ip_offset(pkt) -> int:
    """Where the IPv4 header starts in the frame, as tshark located it."""
    raw = _field(pkt.ip, "ip.version_raw")
    if not raw:
        raise DissectError(f"frame {pkt.number}: tshark gave no IP offset")
    return int(raw[1])


def _plain_ipv4_tcp(pkt) -> bool:
    """IPv4 carrying TCP directly: not IPv6, not an ICMP error quoting a TCP header, not a
    fragment (those pass a ``tcp`` display filter too)."""
    if not hasattr(pkt, "tcp") or not hasattr(pkt, "ip"):
        return False
    layers = pkt.frame_info._all_fields.get("frame.protocols", "").split(":")
    if layers.count("ip") != 1 or "ipv6" in layers:
        return False
    at = layers.index("ip")
    return at + 1 < len(layers) and layers[at + 1] == "tcp" and \
        _field(pkt.ip, "ip.frag_offset", "0") == "0" and \
        _field(pkt.ip, "ip.flags_tree", {}).get("ip.flags.mf", "0") == "0"


def _to_pkt(pkt, t0: Decimal | None) -> Pkt:
    frame = bytes(pkt.get_raw_packet())
    number = int(pkt.number)
    try:
        wire = decode_ip_tcp(frame[_ip_offset(pkt):])
    except DissectError as exc:
        raise DissectError(f"frame {number}: {exc}") from None
    tcp, ipl = pkt.tcp, pkt.ip
    epoch = Decimal(pkt.frame_info._all_fields["frame.time_epoch"])  # ns, exactly
    calc = _field(tcp, "tcp.window_size")
    return Pkt(
        number=number,
        time=0.0 if t0 is None else float(epoch - t0),
        epoch=float(epoch),
        flags_str=flags_str(wire["flags"]),
        seq=int(_field(tcp, "tcp.seq", wire["seq_raw"])),
        ack=int(_field(tcp, "tcp.ack", wire["ack_raw"])),
        length=len(wire["payload"]),
        window_calc=int(calc) if calc is not None else None,
        ip_checksum=_CHECKSUM_STATUS.get(_field(ipl, "ip.checksum.status"), "unverified"),
        tcp_checksum=_CHECKSUM_STATUS.get(_field(tcp, "tcp.checksum.status"), "unverified"),
        analysis=frozenset(_analysis_names(_field(tcp, "tcp.analysis", {}))),
        frame=frame,
        **wire,
    )


def _kill_leftovers(cap) -> None:
    """Kill tshark children pyshark failed to reap (a known pyshark failure)."""
    for proc in list(getattr(cap, "_running_processes", ())):
        pid = getattr(proc, "pid", None)
        if pid and getattr(proc, "returncode", 0) is None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


_VERSION: dict = {}


def tshark_version():
    """tshark's version (a ``packaging`` Version), asked once per process."""
    if "v" not in _VERSION:
        from pyshark.tshark.tshark import get_tshark_version
        _VERSION["v"] = get_tshark_version()
    return _VERSION["v"]


class _QuietReaperRace(logging.Filter):
    """Drops asyncio's "Unknown child process pid" warning (see :func:`_close`)."""

    def filter(self, record):
        return not str(record.msg).startswith("Unknown child process pid")


logging.getLogger("asyncio").addFilter(_QuietReaperRace())


#: The tshark wrapper that drops to nobody (pyshark runs ``<dir of tshark_path>/tshark``).
UNPRIVILEGED_TSHARK = Path(__file__).resolve().with_name("unprivileged") / "tshark"


def unprivileged() -> bool:
    """Will dissection drop privileges (we are root and setpriv exists)?"""
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


@contextlib.contextmanager
def _dissectable(path: Path):
    """(file, tshark_path) for pyshark: as root, a copy that only root can change and anyone
    may read, in a fresh directory, with the unprivileged tshark; else ``path`` and pyshark's
    own search for tshark."""
    if not unprivileged():
        yield path, None
        return
    d = Path(tempfile.mkdtemp(prefix="tcplab-dissect-"))
    try:
        copy = d / ("capture" + path.suffix)
        shutil.copyfile(path, copy)
        os.chmod(copy, 0o444)
        os.chmod(d, 0o711)              # nobody may open the file by name, not list or write
        yield copy, str(UNPRIVILEGED_TSHARK)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _read(path: Path, display_filter: str) -> list[Pkt]:
    with _dissectable(path) as (source, tshark_path):
        return _read_file(source, display_filter, tshark_path, shown=path)


def _read_file(path: Path, display_filter: str, tshark_path: str | None,
               shown: Path) -> list[Pkt]:
    import pyshark  # the only pyshark import in tcplab

    loop = asyncio.new_event_loop()
    cap = None
    completed = False
    try:
        cap = pyshark.FileCapture(str(path), display_filter=display_filter, use_json=True,
                                  include_raw=True, keep_packets=False, eventloop=loop,
                                  override_prefs=dict(TSHARK_PREFS), tshark_path=tshark_path)
        # pyshark runs `tshark -v` (~0.17 s) twice per capture; the answer does not change.
        cap._Capture__tshark_version = tshark_version()
        out: list[Pkt] = []
        t0 = None
        try:
            for raw in cap:
                if not _plain_ipv4_tcp(raw):
                    continue
                p = _to_pkt(raw, t0)
                if t0 is None:
                    t0 = Decimal(raw.frame_info._all_fields["frame.time_epoch"])
                out.append(p)
        except pyshark.capture.capture.TSharkCrashException as exc:
            raise DissectError(f"tshark failed reading {shown}: {exc}") from None
        completed = True
        return out
    finally:
        if cap is not None:
            _close(cap, completed)
        loop.close()


def _close(cap, completed: bool) -> None:
    """Close a pyshark capture for good.

    pyshark 0.6 on Python 3.11 races with asyncio's child watcher: its cleanup signals a tshark
    that has just exited, ``Popen.send_signal`` reaps it first, the watcher then reports "Unknown
    child process pid N, will report returncode 255", and ``close()`` raises a
    TSharkCrashException for a tshark that ran fine.  After a complete read, that one error is
    spurious and ignored; any other error propagates.  Either way no tshark is left running and
    pyshark's ``__del__`` finds nothing to close on the (then closed) loop.
    """
    from pyshark.capture.capture import TSharkCrashException

    try:
        cap.close()
    except TSharkCrashException as exc:
        if not (completed and "retcode: 255" in str(exc)):
            raise DissectError(f"tshark failed: {exc}") from None
    finally:
        _kill_leftovers(cap)
        cap._running_processes.clear()


def read_pcap(path, *, display_filter: str = "tcp") -> list[Pkt]:
    """All TCP packets of the pcap/pcapng at ``path`` that pass ``display_filter``.

    Safe to call from code that runs an asyncio loop: the read then happens in a worker thread
    with its own loop.  Raises :class:`DissectError` for a missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise DissectError(f"no capture file at {path}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _read(path, display_filter)
    result: dict = {}

    def work():
        try:
            result["ok"] = _read(path, display_filter)
        except BaseException as exc:  # re-raised in the caller's thread
            result["err"] = exc

    t = threading.Thread(target=work, name="tcplab-read-pcap")
    t.start()
    t.join()
    if "err" in result:
        raise result["err"]
    return result["ok"]


def read_many(paths, *, display_filter: str = "tcp", workers: int = 4) -> list[list[Pkt]]:
    """:func:`read_pcap` for several files at once, in ``workers`` threads (one tshark each);
    results in the order of ``paths``.  tshark's start-up (~0.3 s) dominates small files."""
    paths = list(paths)
    with ThreadPoolExecutor(max(1, min(workers, len(paths) or 1))) as pool:
        return list(pool.map(lambda p: read_pcap(p, display_filter=display_filter), paths))
