"""Small host-side helpers shared by every backend: one error type for the user, commands that
fail loudly (:func:`run`) or stream their output as they go (:func:`stream`), root and tool
checks, progress lines, and processes by PID.

Every failure a user can meet ends as one :class:`LabError` whose message says what went wrong
and how to fix it; ``tasks.py`` turns it into a one-line exit.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class LabError(RuntimeError):
    """A failure the user can act on; the message is one line: what, and how to fix it."""


_progress_tag = threading.local()


def progress(msg: str) -> None:
    """One progress line on stderr (long steps say what they are doing), written in one piece
    (threads do not cut each other's lines), tagged ``[NAME]`` inside :func:`progress_tag`."""
    tag = getattr(_progress_tag, "name", None)
    sys.stderr.write(f"tcplab: {'[' + tag + '] ' if tag else ''}{msg}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def progress_tag(name: str | None):
    """Tag this thread's progress lines with ``[name]`` (a lab, when many run at once)."""
    old = getattr(_progress_tag, "name", None)
    _progress_tag.name = name
    try:
        yield
    finally:
        _progress_tag.name = old


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise LabError(f"{what} needs root (network namespaces, raw sockets, iptables): "
                       f"run it with sudo")


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise LabError(f"missing system tool(s): {', '.join(missing)}; install them with "
                       f"`sudo ./bootstrap` (Debian/Ubuntu packages listed in packages/apt.txt)")


def run(cmd: list[str], *, check: bool = True, timeout: float = 60, input: bytes | None = None,
        what: str | None = None) -> subprocess.CompletedProcess:
    """Run a command, capture its output; on failure raise LabError naming it and its stderr."""
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired:
        raise LabError(f"{what or cmd[0]} did not finish within {timeout:g} s: {' '.join(cmd)}")
    except FileNotFoundError:
        raise LabError(f"{cmd[0]} is not installed; run `sudo ./bootstrap`")
    if check and res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip().splitlines()
        tail = err[-1] if err else f"exit {res.returncode}"
        raise LabError(f"{what or ' '.join(cmd)} failed: {tail}")
    return res


def stream(cmd: list[str], *, log=None, show=None, timeout: float = 600, env=None, cwd=None,
           what: str | None = None, check: bool = True, stdout=None) -> subprocess.CompletedProcess:
    """Run ``cmd`` and read its output line by line as it comes: each line is appended to the
    open text file ``log`` (if given; the command line goes first) and passed to ``show(line)``
    (if given, without its newline).  Returns a CompletedProcess whose ``stdout`` is the text
    read.

    With ``stdout=None`` the command's stderr is read together with its stdout; otherwise its
    stdout goes to ``stdout`` (a file, or ``subprocess.DEVNULL``) and the lines read are its
    stderr's.  A watchdog kills the command after ``timeout`` seconds, also when it prints
    nothing.  With ``check``, a non-zero exit raises LabError with the last lines (and the
    log's name)."""
    what = what or cmd[0]
    where = f"; full log: {log.name}" if log is not None and hasattr(log, "name") else ""
    if log is not None:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
    merged = stdout is None
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env, cwd=cwd, text=True,
                                errors="replace", stdout=subprocess.PIPE if merged else stdout,
                                stderr=subprocess.STDOUT if merged else subprocess.PIPE)
    except FileNotFoundError:
        raise LabError(f"{cmd[0]} is not installed; run `sudo ./bootstrap`") from None
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()
    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    lines: list[str] = []
    try:
        for line in proc.stdout if merged else proc.stderr:
            lines.append(line)
            if log is not None:
                log.write(line)
            if show is not None:
                show(line.rstrip("\n"))
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if log is not None:
            log.flush()
    if expired.is_set():
        raise LabError(f"{what} did not finish within {timeout:g} s{where}")
    if check and proc.returncode != 0:
        tail = [l.strip() for l in lines if l.strip()][-3:]
        raise LabError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}{where}")
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(lines), None)


def wait_until(pred, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``pred()`` until it is true or ``timeout`` seconds pass; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """Is ``pid`` a running process?  A zombie (exited, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def cmdline(pid: int) -> str:
    """The command line of ``pid`` with its arguments joined by spaces ("" when gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_mentioning(text: str) -> list[int]:
    """PIDs of processes whose command line contains ``text`` (e.g. a lab's state directory:
    SSH ControlPersist masters, ProxyCommands, captures)."""
    me = os.getpid()
    return [int(e) for e in os.listdir("/proc")
            if e.isdigit() and int(e) != me and text in cmdline(int(e))]


def kill_pids(pids, sig: int = 9, wait: float = 0.0) -> list[int]:
    """Signal every PID; with ``wait``, wait up to that long for them to be gone.  Returns the
    PIDs still running."""
    pids = list(pids)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    if wait:
        wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=wait, interval=0.02)
    return [p for p in pids if pid_alive(p)]
