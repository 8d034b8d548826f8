"""Live capture on the lab's host-side interface, proven live before the client starts.

``dumpcap`` (Wireshark's capture engine: it captures and writes, it dissects nothing) runs as
root in the lab's host namespace and streams pcapng to its stdout (``-w -``, flushed packet by
packet).  A reader thread here writes the stream to ``out_path`` and follows its blocks
(:class:`PcapngStream`) to spot the caller's canary: one UDP datagram to port 9 of the lab VM,
sent again and again by :meth:`start` until it shows up.  Only then is it safe to start the
client, or the first SYN may be lost (~0.3 s to "Capturing on" and ~0.5 s to the first packet
in a namespace).  No packet a lab program sends is ever dissected by a root process here: the
only parsing is this module's few lines for the canary (Ethernet, IPv4, UDP port), and the
dissection proper (:mod:`harness.judge.dissect`) runs tshark unprivileged on a copy.

The capture runs in its own process group and every stop signals the whole group: SIGINT
(dumpcap finishes the stream), then SIGKILL after a grace period.  A watchdog timer does the
same to a capture that runs past ``watchdog_s``, and an ``atexit`` hook to any capture still
running when the interpreter exits.
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import struct
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

START_TIMEOUT_S = 10.0
CANARY_INTERVAL_S = 0.2
STOP_GRACE_S = 5.0

_live: set["Capture"] = set()
_live_lock = threading.Lock()


class CaptureError(RuntimeError):
    """The capture could not be started, or did not end cleanly."""


class PcapngStream:
    """Follows a pcapng byte stream block by block: counts the packets and finds the frame
    numbers of IPv4 UDP datagrams to ``port`` (Ethernet, Linux cooked or raw IP links)."""

    SHB, IDB, EPB, SPB = 0x0A0D0D0A, 1, 6, 3
    HEADERS = {1: (12, 14), 113: (14, 16), 101: (None, 0), 228: (None, 0)}  # link: (type, ip)

    def __init__(self, port: int):
        self.port = port
        self.buf = bytearray()
        self.order = "<"
        self.links: list[int] = []
        self.frames = 0
        self.broken = False

    def feed(self, data: bytes) -> list[int]:
        """Take more of the stream; the frame numbers of the datagrams to ``port`` in it."""
        self.buf += data
        found = []
        while len(self.buf) >= 12 and not self.broken:
            if self.buf[:4] == b"\n\r\r\n":             # a section header: its byte order
                self.order = "<" if self.buf[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
                self.links = []
            kind, length = struct.unpack_from(self.order + "II", self.buf, 0)
            if length < 12 or length % 4:
                self.broken = True                   # not pcapng: nothing more is parsed
                break
            if len(self.buf) < length:
                break
            block = bytes(self.buf[:length])
            del self.buf[:length]
            if kind == self.IDB:
                self.links.append(struct.unpack_from(self.order + "H", block, 8)[0])
            elif kind in (self.EPB, self.SPB):
                self.frames += 1
                if kind == self.EPB and self._to_port(block):
                    found.append(self.frames)
        return found

    def _to_port(self, block: bytes) -> bool:
        iface, _, _, caplen = struct.unpack_from(self.order + "IIII", block, 8)
        data = block[28:28 + caplen]
        link = self.links[iface] if iface < len(self.links) else 1
        if link not in self.HEADERS:
            return False
        etype, start = self.HEADERS[link]
        if etype is not None and data[etype:etype + 2] != b"\x08\x00":
            return False
        ip = data[start:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            return False
        ihl = (ip[0] & 0x0F) * 4
        return len(ip) >= ihl + 4 and struct.unpack_from("!H", ip, ihl + 2)[0] == self.port


class Capture:
    """A dumpcap capture, as a context manager::

        with Capture(["ip", "netns", "exec", "tcplab-host"], "vboxnet0", run / "capture.pcapng",
                     "tcp port 80 or udp port 9", canary=send_udp_to_port_9) as cap:
            run_the_client()
        # cap.out_path now holds the finished pcapng

    ``exec_prefix`` runs a command in the host-side namespace (empty: this namespace), or is a
    function ``argv -> argv`` that wraps dumpcap's command line (a backend's ``host_argv``: on a
    lab host, over SSH, where stopping the local ``ssh`` ends the remote dumpcap).  The
    canary is called until one of its packets is captured; it must send something the filter
    passes, to UDP port ``canary_port``.  Without a canary, :meth:`start` returns once dumpcap
    says "Capturing on" plus ``settle_s`` (not proven live; avoid).  ``dumpcap`` is the
    program run (anything that streams pcapng to stdout with dumpcap's options).
    """

    def __init__(self, exec_prefix: list[str] | Callable[[list], list], interface: str,
                 out_path: Path, bpf_filter: str,
                 canary: Callable[[], None] | None, watchdog_s: float = 120, *,
                 canary_port: int = 9, start_timeout_s: float = START_TIMEOUT_S,
                 settle_s: float = 0.5, stop_grace_s: float = STOP_GRACE_S,
                 dumpcap: str = "dumpcap"):
        self.wrap = exec_prefix if callable(exec_prefix) else None
        self.exec_prefix = [] if callable(exec_prefix) else list(exec_prefix)
        self.interface = interface
        self.out_path = Path(out_path)
        self.bpf_filter = bpf_filter
        self.canary = canary
        self.watchdog_s = watchdog_s
        self.canary_port = canary_port
        self.start_timeout_s = start_timeout_s
        self.settle_s = settle_s
        self.dumpcap = dumpcap
        self.stream = PcapngStream(canary_port)
        self.stop_grace_s = stop_grace_s
        self.proc: subprocess.Popen | None = None
        self.canary_frames: list[int] = []     # frame numbers of captured canary packets
        self.watchdog_fired = False
        self.started_after_s: float | None = None
        self._stderr: deque[str] = deque(maxlen=40)
        self._capturing = threading.Event()
        self._canary_seen = threading.Event()
        self._readers: list[threading.Thread] = []
        self._watchdog: threading.Timer | None = None
        self._stop_lock = threading.Lock()
        self._terminated = False

    # ---------------------------------------------------------------- command and output

    def command(self) -> list[str]:
        """The full command line (prefix + dumpcap ...): pcapng on stdout."""
        argv = [self.dumpcap, "-i", self.interface, "-f", self.bpf_filter, "-w", "-", "-n", "-q"]
        return self.wrap(argv) if self.wrap else self.exec_prefix + argv

    @property
    def packets_seen(self) -> int:
        return self.stream.frames

    def stderr_tail(self, lines: int = 5) -> str:
        tail = [ln for ln in self._stderr if "dangerous" not in ln and ln.strip()]
        return " | ".join(tail[-lines:]) or "(no output)"

    def _read_stdout(self, stream):
        """Write the stream to ``out_path`` as it comes; note the canary's frames."""
        with open(self.out_path, "wb") as out:
            while True:
                chunk = stream.read1(65536)
                if not chunk:
                    return
                out.write(chunk)
                seen = self.stream.feed(chunk)
                if seen:
                    out.flush()
                    self.canary_frames.extend(seen)
                    self._canary_seen.set()

    def _read_stderr(self, stream):
        for raw in stream:
            line = raw.decode(errors="replace")
            self._stderr.append(line.rstrip("\n"))
            if line.startswith("Capturing on"):
                self._capturing.set()

    # ---------------------------------------------------------------- life cycle

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "Capture":
        if self.proc is not None:
            raise CaptureError("capture already started")
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.out_path.unlink()
        except FileNotFoundError:
            pass
        t0 = time.monotonic()
        try:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         start_new_session=True)
        except OSError as exc:
            raise CaptureError(f"cannot run {shlex.join(self.command()[:len(self.exec_prefix) + 1])}"
                               f": {exc.strerror}") from None
        with _live_lock:
            _live.add(self)
        for target, stream in ((self._read_stdout, self.proc.stdout),
                               (self._read_stderr, self.proc.stderr)):
            t = threading.Thread(target=target, args=(stream,), daemon=True,
                                 name=f"tcplab-capture-{target.__name__}")
            t.start()
            self._readers.append(t)
        try:
            self._wait_live(t0)
        except BaseException:
            self._terminate()
            raise
        self.started_after_s = time.monotonic() - t0
        if self.watchdog_s:
            self._watchdog = threading.Timer(self.watchdog_s, self._on_watchdog)
            self._watchdog.daemon = True
            self._watchdog.start()
        return self

    def _wait_live(self, t0: float) -> None:
        deadline = t0 + self.start_timeout_s
        last_canary_error = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._join_readers(1.0)
                raise CaptureError(f"dumpcap did not start capturing on {self.interface} "
                                   f"within {self.start_timeout_s:g} s (it exited with status "
                                   f"{self.proc.returncode}): {self.stderr_tail()}")
            if self.canary is None:
                if self._capturing.wait(CANARY_INTERVAL_S):
                    time.sleep(self.settle_s)
                    return
                continue
            if self._capturing.is_set():
                try:
                    self.canary()
                    last_canary_error = None
                except Exception as exc:  # a canary that cannot be sent yet: try again
                    last_canary_error = exc
            if self._canary_seen.wait(CANARY_INTERVAL_S):
                return
        extra = f"; last canary error: {last_canary_error}" if last_canary_error else ""
        proof = "a canary packet was never seen" if self.canary else "no 'Capturing on'"
        raise CaptureError(f"dumpcap did not start capturing on {self.interface} within "
                           f"{self.start_timeout_s:g} s ({proof}{extra}): {self.stderr_tail()}")

    def _drain(self, timeout: float = 2.0) -> bool:
        """Send one more canary and wait until the stream has brought it.  Packets reach the
        capture in order, so once this end marker is seen, everything the client exchanged
        before it is in the file too; a SIGINT sent earlier may end dumpcap before its last
        packets are written (the tail of a fast exchange would be lost)."""
        if self.canary is None or not self.running or not self._canary_seen.is_set():
            return False
        before = len(self.canary_frames)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running:
            try:
                self.canary()
            except Exception:       # cannot send now: fall back to the grace period
                return False
            end = time.monotonic() + CANARY_INTERVAL_S
            while time.monotonic() < end:
                if len(self.canary_frames) > before:
                    return True
                time.sleep(0.005)
        return False

    def _signal_group(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _terminate(self) -> None:
        """SIGINT the group, wait, SIGKILL; then reap and forget.  Idempotent."""
        with self._stop_lock:
            if self.proc is None or self._terminated:
                return
            self._terminated = True     # never signal the group id again: it may be reused
            if self.proc.poll() is None:
                self._signal_group(signal.SIGINT)
                try:
                    self.proc.wait(self.stop_grace_s)
                except subprocess.TimeoutExpired:
                    pass
            # anything else of the group (an exec prefix's children) may still be around
            self._signal_group(signal.SIGKILL)
            try:
                self.proc.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                pass
            self._join_readers(5.0)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()
            if self._watchdog:
                self._watchdog.cancel()
            with _live_lock:
                _live.discard(self)

    def _join_readers(self, timeout: float) -> None:
        for t in self._readers:
            t.join(timeout)

    def leftovers(self) -> list[int]:
        """PIDs still alive (not zombies) in the capture's process group; [] after a stop."""
        if self.proc is None:
            return []
        return [p.pid for p in processes() if p.pgid == self.proc.pid and p.state != "Z"]

    def _on_watchdog(self) -> None:
        self.watchdog_fired = True
        self._terminate()

    def stop(self) -> Path:
        """End the capture and return the pcapng path.  Raises :class:`CaptureError` if the
        watchdog had to end it or no file was written."""
        if self.proc is None:
            raise CaptureError("capture was never started")
        if not self._drain():
            time.sleep(self.settle_s)
        self._terminate()
        if self.watchdog_fired:
            raise CaptureError(f"capture on {self.interface} ran past its {self.watchdog_s:g} s "
                               "watchdog and was killed")
        if not self.out_path.is_file():
            raise CaptureError(f"dumpcap wrote no {self.out_path}: {self.stderr_tail()}")
        return self.out_path

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.stop()
        else:
            self._terminate()   # the body's exception is the one to report


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    comm: str
    state: str
    ppid: int
    pgid: int


def processes() -> list[ProcInfo]:
    """Every process this namespace's /proc shows (Linux), for leftover checks."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        state, ppid, pgid = stat[stat.rindex(")") + 2:].split()[:3]
        out.append(ProcInfo(int(entry), comm, state, int(ppid), int(pgid)))
    return out


@atexit.register
def _kill_all() -> None:
    with _live_lock:
        live = list(_live)
    for cap in live:
        cap._terminate()
